//! Running spin: random simulations and counterexample trails of the BUG_* variants.
//!
//! Everything runs in a private copy of `promela/` under `target/conformance/spin/` (spin and pan
//! write files into their working directory), so this never races with `ci/spin`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{out_dir, root};

/// Whether `spin` (and gcc, for pan) can be run.
pub fn available() -> bool {
    Command::new("spin").arg("-V").output().is_ok_and(|o| o.status.success())
        && Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A private copy of promela/ in `target/conformance/spin/<name>.<pid>/`, removed when dropped.
///
/// Private to this process: the same test may run in several processes at once (the mutant runner
/// runs two mutants side by side), and a copy shared between them was rewritten under a running
/// spin, which then read a torn model ("syntax error") and failed a correct build.
#[derive(Debug)]
pub struct Workdir(PathBuf);

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// See [`Workdir`].
pub fn workdir(name: &str) -> Workdir {
    let d = out_dir().join("spin").join(format!("{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d); // a previous process with the same pid
    std::fs::create_dir_all(&d).expect("create spin workdir");
    for e in std::fs::read_dir(root().join("promela")).expect("promela/") {
        let p = e.expect("promela entry").path();
        if p.extension().is_some_and(|x| x == "pml") {
            std::fs::copy(&p, d.join(p.file_name().unwrap())).expect("copy pml");
        }
    }
    Workdir(d)
}

fn run(dir: &Path, cmd: &str, args: &[String]) -> Result<String, String> {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    if o.status.success() {
        Ok(s)
    } else {
        Err(format!("{cmd} {}: {}\n{s}", args.join(" "), o.status))
    }
}

/// `spin -T -p -n<seed> -u<max_steps> [-D...] <model>.pml` in `dir`: one random simulation.
///
/// # Errors
///
/// spin failed to run.
pub fn simulate(
    dir: &Path,
    model: &str,
    defines: &[String],
    seed: u64,
    max_steps: u32,
) -> Result<String, String> {
    let mut args = vec!["-T".into(), "-p".into(), format!("-n{seed}"), format!("-u{max_steps}")];
    args.extend(defines.iter().map(|d| format!("-D{d}")));
    args.push(format!("{model}.pml"));
    run(dir, "spin", &args)
}

/// The `@variants` of a model (e.g. `["correct", "BUG_X", "BUG_Y+WEAK_TIMEOUT_READ"]`).
pub fn variants(model: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("promela").join(format!("{model}.pml")))
        .unwrap_or_else(|e| panic!("promela/{model}.pml: {e}"));
    let line = text
        .lines()
        .find(|l| l.contains("@variants"))
        .unwrap_or_else(|| panic!("{model}.pml: no @variants"));
    line.split("@variants").nth(1).unwrap().split_whitespace().map(String::from).collect()
}

/// `-D` defines of a variant (`BUG_A+WEAK_TIMEOUT_READ` → `[BUG_A, WEAK_TIMEOUT_READ]`).
pub fn defines(variant: &str) -> Vec<String> {
    if variant == "correct" {
        Vec::new()
    } else {
        variant.split('+').map(String::from).collect()
    }
}

/// A counterexample of a BUG_ variant: the safety search's shortest trail (breadth-first), replayed.
#[derive(Debug, Clone)]
pub struct Trail {
    /// The model (file stem).
    pub model: String,
    /// The variant (`BUG_X` or `BUG_X+OPTION`).
    pub variant: String,
    /// What produced it (`safety`, or the liveness property of a `ci/spin` trail).
    pub property: String,
    /// `spin -T -t -p` output.
    pub replay: String,
}

/// The safety trail of `model` under `variant`, generated in `dir` (`spin -a`, `gcc -DSAFETY
/// -DNOCLAIM -DBFS`, `./pan`, `spin -T -t -p`), as ci/spin does. `None` if pan finds no error.
///
/// # Errors
///
/// A tool failed.
pub fn safety_trail(dir: &Path, model: &str, variant: &str) -> Result<Option<Trail>, String> {
    let defs: Vec<String> = defines(variant).iter().map(|d| format!("-D{d}")).collect();
    let mut a = vec!["-a".to_string()];
    a.extend(defs.iter().cloned());
    a.push(format!("{model}.pml"));
    run(dir, "spin", &a)?;
    let pan = format!("pan_{model}");
    run(
        dir,
        "gcc",
        &[
            "-w".into(),
            "-O0".into(),
            "-DSAFETY".into(),
            "-DNOCLAIM".into(),
            "-DBFS".into(),
            "-o".into(),
            pan.clone(),
            "pan.c".into(),
        ],
    )?;
    let trail = dir.join(format!("{model}.pml.trail"));
    let _ = std::fs::remove_file(&trail);
    let out = Command::new(dir.join(&pan))
        .arg("-w20")
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !trail.exists() {
        if text.contains("errors: 0") {
            return Ok(None);
        }
        return Err(format!("pan wrote no trail:\n{text}"));
    }
    let mut r = vec!["-T".to_string(), "-t".into(), "-p".into()];
    r.extend(defs);
    r.push(format!("{model}.pml"));
    let replay = run(dir, "spin", &r)?;
    Ok(Some(Trail {
        model: model.into(),
        variant: variant.into(),
        property: "safety".into(),
        replay,
    }))
}

/// The trails ci/spin kept (`target/spin/trails/*.replay.txt`), if it ran since the models last
/// changed; empty otherwise.
pub fn ci_trails() -> Vec<Trail> {
    let dir = root().join("target").join("spin").join("trails");
    let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
    let newest_pml = std::fs::read_dir(root().join("promela"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max();
    let mut v = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".replay.txt") else { continue };
        let fresh = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .zip(newest_pml)
            .is_some_and(|(t, m)| t >= m);
        if !fresh {
            continue;
        }
        let parts: Vec<&str> = stem.split("__").collect();
        if parts.len() != 3 {
            continue;
        }
        let replay = std::fs::read_to_string(&p).unwrap_or_default();
        v.push(Trail {
            model: parts[0].into(),
            variant: parts[1].into(),
            property: parts[2].into(),
            replay,
        });
    }
    v.sort_by(|a, b| (&a.model, &a.variant, &a.property).cmp(&(&b.model, &b.variant, &b.property)));
    v
}
