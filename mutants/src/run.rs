//! The runner: copy the tree, write the schema, then tier by tier, cheapest first: build the
//! tier's tests, learn which of them reach which site (coverage), and run every mutant still alive
//! against the tests that reach its site, stopping at its first kill. A tier that no live mutant
//! can be judged by (see `tier_applies`) is neither built nor covered.
//!
//! A failing test counts only if it fails again with the mutant (twice more outside loom and
//! shuttle, whose schedules are fixed) and passes on the correct build; otherwise it is flaky (a busy
//! machine) and kills nothing.
//!
//! Verdicts: `killed` (a test failed: the first one is named), `timeout` (a test ran past its budget:
//! ten times its correct-build time, at least 15 s; a hang is how a lost wake-up shows in a test
//! without a watchdog, and it counts as killed), `survived`, `equivalent` (listed in
//! mutants/EQUIVALENT.md with the argument; still run with `--check-equivalents`, where a kill makes
//! the list wrong), `uncovered` (no test of any tier reaches the site: counted as survived).

use crate::logic::Placed;
use crate::schema::{self, Applied};
use crate::sites::Mutant;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HELP: &str = "\
aioctx-mutants run [OPTIONS]
  --root DIR          the repository (default: .)
  --out DIR           work dir (default: target/mutants): tree/, build/<tier>/, logs/, results.tsv
  --tiers A,B,..      checker tiers in order (default: c11,std,ppoll,epoll,io_uring,props,loom,shuttle,conformance;
                      io_uring is dropped when the kernel refuses io_uring; add miri to run it last)
  --files F,..        only the mutants of these files (paths relative to impl/src, e.g. notify.rs)
  --logic-files F,..  list (and compile into the schema) the logic mutants of these files, whatever
                      runs (default: --files; for --claims the files its logic claims cite; else all).
                      Two runs with the same schema share their builds (ci/mutants: claims, then
                      the changed files)
  --only NAME,..      only these mutants (stable names)
  --shard I/N         only mutants whose index in the full list is I mod N
  --jobs N            mutants run in parallel (default 2)
  --loom-bound B      LOOM_MAX_PREEMPTIONS (default 2)
  --shuttle-iters N   AIOCTX_SHUTTLE_ITERS (default 200)
  --min-rate R        fail below this kill rate in percent (default 95)
  --check-equivalents run the listed equivalents too (a kill means the list is wrong)
  --logic             also cargo-mutants' logic mutants (listed by `cargo mutants --list`), in the
                      same schema builds; one that does not compile is blamed and left out (unviable)
  --no-ordering       only the logic mutants
  --claims FILE       check claims: lines `<mutant> <tier>:<target>::<test>`: that test must kill that mutant";

#[derive(Clone)]
struct Opts {
    root: PathBuf,
    out: PathBuf,
    tiers: Vec<String>,
    files: Option<Vec<String>>,
    logic_files: Option<Vec<String>>,
    only: Option<Vec<String>>,
    shard: Option<(usize, usize)>,
    jobs: usize,
    loom_bound: u32,
    shuttle_iters: u32,
    min_rate: f64,
    check_equivalents: bool,
    claims: Option<PathBuf>,
    logic: bool,
    ordering: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        root: PathBuf::from("."),
        out: PathBuf::from("target/mutants"),
        tiers: "c11,std,ppoll,epoll,io_uring,props,loom,shuttle,conformance"
            .split(',')
            .map(String::from)
            .collect(),
        files: None,
        logic_files: None,
        only: None,
        shard: None,
        jobs: 2,
        loom_bound: 2,
        shuttle_iters: 200,
        min_rate: 95.0,
        check_equivalents: false,
        claims: None,
        logic: false,
        ordering: true,
    };
    let mut it = args.iter();
    // Comma-separated; a comma followed by a space belongs to the item (logic mutants' names hold
    // tuples: `replace f -> (u64, u64) with (0, 1)`).
    let list = |v: Option<&String>| -> Result<Vec<String>, String> {
        let v = v.ok_or("missing value")?;
        let mut out = vec![String::new()];
        let mut it = v.chars().peekable();
        while let Some(c) = it.next() {
            if c == ',' && it.peek() != Some(&' ') {
                out.push(String::new());
            } else {
                out.last_mut().expect("non-empty").push(c);
            }
        }
        Ok(out.into_iter().filter(|s| !s.is_empty()).collect())
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => o.root = it.next().ok_or("--root DIR")?.into(),
            "--out" => o.out = it.next().ok_or("--out DIR")?.into(),
            "--tiers" => o.tiers = list(it.next())?,
            "--files" => o.files = Some(list(it.next())?),
            "--logic-files" => o.logic_files = Some(list(it.next())?),
            "--only" => o.only = Some(list(it.next())?),
            "--shard" => {
                let v = it.next().ok_or("--shard I/N")?;
                let (i, n) = v.split_once('/').ok_or("--shard I/N")?;
                let (i, n): (usize, usize) =
                    (i.parse().map_err(|_| "--shard I/N")?, n.parse().map_err(|_| "--shard I/N")?);
                if n == 0 || i >= n {
                    return Err(format!("--shard {v}: need 0 <= I < N"));
                }
                o.shard = Some((i, n));
            }
            "--jobs" => o.jobs = it.next().ok_or("--jobs N")?.parse().map_err(|_| "--jobs N")?,
            "--loom-bound" => {
                o.loom_bound =
                    it.next().ok_or("--loom-bound B")?.parse().map_err(|_| "--loom-bound B")?
            }
            "--shuttle-iters" => {
                o.shuttle_iters = it
                    .next()
                    .ok_or("--shuttle-iters N")?
                    .parse()
                    .map_err(|_| "--shuttle-iters N")?
            }
            "--min-rate" => {
                o.min_rate = it.next().ok_or("--min-rate R")?.parse().map_err(|_| "--min-rate R")?
            }
            "--check-equivalents" => o.check_equivalents = true,
            "--logic" => o.logic = true,
            "--no-ordering" => o.ordering = false,
            "--claims" => o.claims = Some(it.next().ok_or("--claims FILE")?.into()),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            x => return Err(format!("unknown argument {x}\n{HELP}")),
        }
    }
    o.jobs = o.jobs.max(1);
    Ok(o)
}

/// The equivalence list: `### <mutant name>` headings of mutants/EQUIVALENT.md, each followed by
/// its argument.
pub fn equivalents(root: &Path) -> Result<BTreeMap<String, String>, String> {
    argued(root, "mutants/EQUIVALENT.md")
}

/// The `### <mutant>` entries of a list with an argument each (EQUIVALENT.md, SURVIVORS.md).
pub fn argued(root: &Path, rel: &str) -> Result<BTreeMap<String, String>, String> {
    let p = root.join(rel);
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            if let Some((n, a)) = cur.take() {
                out.insert(n, a);
            }
            cur = Some((name.trim().trim_matches('`').to_string(), String::new()));
        } else if line.starts_with("## ") {
            if let Some((n, a)) = cur.take() {
                out.insert(n, a);
            }
        } else if let Some((_, a)) = cur.as_mut() {
            a.push_str(line.trim());
            a.push(' ');
        }
    }
    if let Some((n, a)) = cur {
        out.insert(n, a);
    }
    for (n, a) in &out {
        if a.split_whitespace().count() < 12 {
            return Err(format!("{}: the argument for {n} is missing or too short", p.display()));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The scratch tree

/// Copy the repository's files (tracked and untracked, not ignored) to `dst`, writing only files
/// whose content changed, so cargo's incremental builds survive between runs. Returns what it
/// overwrote (path, old text, old mtime): the schema's files get their pristine text back here
/// (cargo-mutants lists the mutants of the pristine code), and `keep_mtimes` restores the old
/// mtime of each one whose schema text turns out unchanged, so that a run with the same schema
/// rebuilds no tier and keeps its coverage cache.
fn sync_tree(root: &Path, dst: &Path) -> Result<Vec<Displaced>, String> {
    let out = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !out.status.success() {
        return Err("git ls-files failed".into());
    }
    let mut keep = BTreeSet::new();
    let mut displaced = Vec::new();
    for rel in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let rel = String::from_utf8_lossy(rel).to_string();
        let src = root.join(&rel);
        if !src.is_file() {
            continue; // deleted in the work tree
        }
        let data = std::fs::read(&src).map_err(|e| format!("{rel}: {e}"))?;
        let to = dst.join(&rel);
        let old = std::fs::read(&to).ok();
        if old.as_deref() != Some(&data[..]) {
            let mtime = std::fs::metadata(&to).and_then(|m| m.modified());
            if let (Some(old), Ok(mtime)) = (old, mtime) {
                displaced.push((to.clone(), old, mtime));
            }
            std::fs::create_dir_all(to.parent().expect("a file has a parent"))
                .map_err(|e| e.to_string())?;
            std::fs::write(&to, &data).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        keep.insert(rel);
    }
    // The schema writes its runtime (schema::RUNTIME_PATH); files deleted from the repository go.
    for rel in schema::rust_files(&dst.join("impl/src")) {
        let full = format!("impl/src/{rel}");
        if !keep.contains(&full) && rel != schema::RUNTIME_PATH {
            let _ = std::fs::remove_file(dst.join(&full));
        }
    }
    Ok(displaced)
}

type Displaced = (PathBuf, Vec<u8>, std::time::SystemTime);

/// Give back its old mtime to each file `sync_tree` overwrote whose text is now what it was.
fn keep_mtimes(displaced: &[Displaced]) {
    for (path, old, mtime) in displaced {
        if std::fs::read(path).is_ok_and(|now| now == *old) {
            if let Ok(f) = std::fs::File::options().write(true).open(path) {
                let _ = f.set_modified(*mtime);
            }
        }
    }
}

/// Write the schema into the scratch tree, touching only files whose schema text changed.
fn apply_schema(
    root: &Path,
    tree: &Path,
    logic: &[Placed],
    skip: &BTreeSet<usize>,
) -> Result<Applied, String> {
    let stage = tree.with_extension("stage");
    let _ = std::fs::remove_dir_all(&stage);
    copy_dir(&root.join("impl/src"), &stage.join("impl/src"))?;
    let r = schema::apply(&stage.join("impl/src"), logic, skip)?;
    for rel in schema::rust_files(&stage.join("impl/src")) {
        let new = std::fs::read(stage.join("impl/src").join(&rel)).map_err(|e| e.to_string())?;
        let to = tree.join("impl/src").join(&rel);
        if std::fs::read(&to).ok().as_deref() != Some(&new[..]) {
            std::fs::create_dir_all(to.parent().expect("parent")).map_err(|e| e.to_string())?;
            std::fs::write(&to, new).map_err(|e| e.to_string())?;
        }
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(r)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    for rel in schema::rust_files(from) {
        let t = to.join(&rel);
        std::fs::create_dir_all(t.parent().expect("parent")).map_err(|e| e.to_string())?;
        std::fs::copy(from.join(&rel), &t).map_err(|e| format!("{rel}: {e}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tiers

struct Tier {
    name: String,
    /// Test binaries: (cargo target name, executable).
    bins: Vec<(String, PathBuf)>,
    env: Vec<(String, String)>,
    /// test id "target::test" -> sites it reaches, and its correct-build seconds.
    cover: HashMap<String, (BTreeSet<usize>, f64)>,
}

type Env = Vec<(String, String)>;

/// A tier's build environment, cargo arguments and run environment.
fn tier_spec(name: &str, o: &Opts) -> Result<(Env, Vec<String>, Env), String> {
    let force =
        |b: &str| vec![("RUSTFLAGS".to_string(), format!("--cfg aioctx_force_fdmon=\"{b}\""))];
    let props = [
        "prop_bh",
        "prop_polling",
        "prop_timers",
        "prop_handlers",
        "qemu_multithread",
        "qemu_gsource",
        // Generated workloads over the whole API, judged by the model of what the caller sees
        // (issue 14): the checks a change was not written against.
        "workloads",
    ];
    let conf = ["traces_impl_to_model", "traces_model_to_impl"];
    let tests = |pkg: &str, ts: &[&str]| {
        let mut a = vec!["-p".to_string(), pkg.to_string()];
        for t in ts {
            a.push("--test".into());
            a.push(t.to_string());
        }
        a
    };
    let model_tests = |prefix: &str| -> Result<Vec<String>, String> {
        let mut names: Vec<String> = std::fs::read_dir(o.root.join("model/tests"))
            .map_err(|e| e.to_string())?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix) && n.ends_with(".rs"))
            .map(|n| n.trim_end_matches(".rs").to_string())
            .collect();
        names.sort();
        Ok(names)
    };
    Ok(match name {
        "std" => {
            (vec![], vec!["-p".into(), "aioctx".into(), "--lib".into(), "--tests".into()], vec![])
        }
        "ppoll" | "epoll" | "io_uring" => {
            (force(name), vec!["-p".into(), "aioctx".into(), "--tests".into()], vec![])
        }
        "props" => (vec![], tests("aioctx-conformance", &props), vec![]),
        "conformance" => (vec![], tests("aioctx-conformance", &conf), vec![]),
        "loom" => {
            let ts = model_tests("loom_")?;
            let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
            (
                vec![("RUSTFLAGS".into(), "--cfg aioctx_loom".into())],
                tests("aioctx-model", &ts),
                vec![("LOOM_MAX_PREEMPTIONS".into(), o.loom_bound.to_string())],
            )
        }
        "shuttle" => {
            let ts = model_tests("shuttle_")?;
            let ts: Vec<&str> = ts.iter().map(String::as_str).collect();
            (
                vec![("RUSTFLAGS".into(), "--cfg aioctx_shuttle".into())],
                tests("aioctx-model", &ts),
                vec![
                    ("AIOCTX_SHUTTLE_ITERS".into(), o.shuttle_iters.to_string()),
                    ("AIOCTX_SHUTTLE_SEED".into(), "24301".into()),
                    ("AIOCTX_SHUTTLE_DEPTH".into(), "3".into()),
                    ("AIOCTX_SHUTTLE_SCHED".into(), "pct,random".into()),
                ],
            )
        }
        // The axiomatic RC11 checker over the handshake's litmus programs (model/src/c11): each
        // access there is labelled with its site, and `AIOCTX_C11_MUTANT` weakens it by name.
        // Release: the enumeration takes minutes in a debug build.
        // ISO C11, not only RC11: the standard allows load buffering, and the yardstick
        // for an equivalent mutant is "no execution C11 allows tells it apart".
        "c11" => {
            let mut a = tests("aioctx-model", &["c11"]);
            a.push("--release".into());
            (vec![], a, vec![("AIOCTX_C11_ISO".into(), "1".into())])
        }
        x => return Err(format!("unknown tier {x}")),
    })
}

/// A tier's build failed: with the errors' (file, byte offset) in the scratch tree, or for another
/// reason.
enum BuildErr {
    Compile(Vec<(String, usize)>, String),
    Other(String),
}

fn build_tier(name: &str, o: &Opts, tree: &Path) -> Result<Tier, BuildErr> {
    let (benv, args, renv) = tier_spec(name, o).map_err(BuildErr::Other)?;
    let target = o.out.join("build").join(name);
    let log = o.out.join("logs").join(format!("build-{name}.log"));
    let t0 = Instant::now();
    let out = Command::new("cargo")
        .args(["test", "--no-run", "--message-format=json"])
        .args(&args)
        .envs(benv)
        .env("CARGO_TARGET_DIR", abs(&target))
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(tree)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| BuildErr::Other(format!("cargo: {e}")))?;
    std::fs::write(&log, &out.stderr).map_err(|e| BuildErr::Other(e.to_string()))?;
    let mut bins = Vec::new();
    let mut errors = Vec::new();
    let mut rendered = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        match v["reason"].as_str() {
            Some("compiler-artifact") => {
                if let (Some(exe), Some(t)) =
                    (v["executable"].as_str(), v["target"]["name"].as_str())
                {
                    bins.push((t.to_string(), PathBuf::from(exe)));
                }
            }
            Some("compiler-message") if v["message"]["level"] == "error" => {
                rendered.push_str(v["message"]["rendered"].as_str().unwrap_or(""));
                for sp in v["message"]["spans"].as_array().into_iter().flatten() {
                    if sp["is_primary"] == true {
                        if let (Some(f), Some(b)) =
                            (sp["file_name"].as_str(), sp["byte_start"].as_u64())
                        {
                            errors.push((f.to_string(), b as usize));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !out.status.success() {
        let _ =
            std::fs::write(&log, format!("{rendered}\n{}", String::from_utf8_lossy(&out.stderr)));
        let err = format!("{rendered}\n{}", String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = err.lines().rev().take(40).collect();
        let msg = format!(
            "tier {name}: the schema build failed (log {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        return Err(if errors.is_empty() {
            BuildErr::Other(msg)
        } else {
            BuildErr::Compile(errors, msg)
        });
    }
    if bins.is_empty() {
        return Err(BuildErr::Other(format!("tier {name}: no test executable built")));
    }
    // In a stable order (cargo reports artifacts as they finish): the coverage cache's key.
    bins.sort();
    eprintln!(
        "    tier {name}: {} test binaries built in {:.0} s",
        bins.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(Tier { name: name.into(), bins, env: renv, cover: HashMap::new() })
}

fn abs(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().expect("cwd").join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Running tests

/// The environment variable that selects mutant `m` in tier `t`: the schema's site id and spec,
/// or, for the axiomatic checker's litmus programs (labelled by site name), the mutant's name.
fn mutant_env(t: &Tier, m: &Mutant) -> (String, String) {
    if t.name == "c11" {
        ("AIOCTX_C11_MUTANT".into(), m.name.clone())
    } else {
        ("AIOCTX_MUTANT".into(), format!("{}:{}", m.site, m.spec))
    }
}

/// Whether a failed run in tier `t` (its log) is a verdict on the mutant: in `c11`, only a
/// violated property is; any other panic there (a mutant that does not fit its site, the work
/// cap) is the runner's error, never a kill.
fn is_verdict(t: &Tier, log: &Path) -> bool {
    t.name != "c11" || std::fs::read_to_string(log).is_ok_and(|s| s.contains(" violated in "))
}

struct Outcome {
    ok: bool,
    timed_out: bool,
    secs: f64,
}

/// Run `tests` (names in one binary) with `env`; kill the process group past `budget`.
fn run_tests(
    exe: &Path,
    tests: &[String],
    env: &[(String, String)],
    budget: Duration,
    log: &Path,
) -> Outcome {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let f = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(exe);
    cmd.args(tests).arg("--exact").arg("--test-threads=1");
    cmd.envs(env.iter().cloned()).env("RUST_BACKTRACE", "0");
    cmd.stdout(f.try_clone().expect("dup")).stderr(f).stdin(Stdio::null());
    cmd.process_group(0);
    // A test that cannot even start is the runner's failure, never a kill.
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let pid = child.id() as i32;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() > budget => {
                // SAFETY: kill(2) on the process group of our own child (it leads it).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    match status {
        Some(s) => Outcome { ok: s.success(), timed_out: false, secs },
        None => Outcome { ok: false, timed_out: true, secs },
    }
}

fn list_tests(exe: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(String::from)
        .collect())
}

/// The coverage pass: every test of the tier alone, correct build, recording the sites it reaches.
fn cover_tier(
    t: &mut Tier,
    o: &Opts,
    names: &HashMap<String, usize>,
) -> Result<Vec<String>, String> {
    // Reuse the last pass when the tier's binaries and environment are the same (a rebuilt binary
    // has a new mtime): `--changed` runs repeat it for nothing otherwise.
    let sig = {
        let mut sig = format!("{:?}", t.env);
        for (n, exe) in &t.bins {
            let md = std::fs::metadata(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
            let mt = md
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            sig.push_str(&format!(" {n}={}:{}:{mt}", exe.display(), md.len()));
        }
        sig
    };
    let cache = o.out.join("cover").join(format!("{}.tsv", t.name));
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let mut lines = text.lines();
        if lines.next() == Some(sig.as_str()) {
            let mut failed = Vec::new();
            for l in lines {
                let f: Vec<&str> = l.split('\t').collect();
                match f.as_slice() {
                    ["FAILED", id] => failed.push(id.to_string()),
                    [id, secs, sites] => {
                        let sites = sites.split(',').filter_map(|x| x.parse().ok()).collect();
                        t.cover.insert(id.to_string(), (sites, secs.parse().unwrap_or(60.0)));
                    }
                    _ => {}
                }
            }
            eprintln!(
                "    tier {}: coverage of the same binaries reused ({} tests)",
                t.name,
                t.cover.len() + failed.len()
            );
            return Ok(failed);
        }
    }
    let failed = cover_tier_run(t, o, names)?;
    let mut text = format!("{sig}\n");
    for (id, (sites, secs)) in &t.cover {
        let s: Vec<String> = sites.iter().map(|x| x.to_string()).collect();
        text.push_str(&format!("{id}\t{secs}\t{}\n", s.join(",")));
    }
    for id in &failed {
        text.push_str(&format!("FAILED\t{id}\n"));
    }
    std::fs::write(&cache, text).map_err(|e| e.to_string())?;
    Ok(failed)
}

fn cover_tier_run(
    t: &mut Tier,
    o: &Opts,
    names: &HashMap<String, usize>,
) -> Result<Vec<String>, String> {
    let mut jobs = Vec::new();
    for (tname, exe) in &t.bins {
        for test in list_tests(exe)? {
            jobs.push((tname.clone(), exe.clone(), test));
        }
    }
    let total = jobs.len();
    let jobs = Mutex::new(jobs);
    let results = Mutex::new(Vec::new());
    let dir = o.out.join("cover").join(&t.name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        for _ in 0..o.jobs {
            let (jobs, results, dir, env) = (&jobs, &results, dir.clone(), t.env.clone());
            s.spawn(move || loop {
                let Some((tname, exe, test)) = jobs.lock().unwrap().pop() else { break };
                let id = format!("{tname}::{test}");
                let file = dir.join(id.replace("::", "__"));
                let mut env = env.clone();
                env.push(("AIOCTX_MUTANT_COVER".into(), abs(&file).to_string_lossy().into()));
                let log = dir.join(format!("{}.log", id.replace("::", "__")));
                let r = run_tests(
                    &exe,
                    std::slice::from_ref(&test),
                    &env,
                    Duration::from_secs(900),
                    &log,
                );
                // Site ids (the schema runtime), or site names (the c11 tier's litmus programs).
                let sites: BTreeSet<usize> = std::fs::read_to_string(&file)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok().or_else(|| names.get(l.trim()).copied()))
                    .collect();
                results.lock().unwrap().push((id, r.ok, sites, r.secs));
            });
        }
    });
    let mut failed = Vec::new();
    for (id, ok, sites, secs) in results.into_inner().unwrap() {
        if ok {
            t.cover.insert(id, (sites, secs));
        } else {
            failed.push(id);
        }
    }
    eprintln!(
        "    tier {}: {} tests, {} reach a site, {} failed on the correct build (left out)",
        t.name,
        total,
        t.cover.values().filter(|(s, _)| !s.is_empty()).count(),
        failed.len()
    );
    Ok(failed)
}

#[derive(Clone, Debug)]
struct Verdict {
    kind: &'static str,
    by: String,
    secs: f64,
}

/// Whether tier `name` can tell mutant `m` apart at all, before any build or coverage: the
/// axiomatic checker's litmus programs carry the ordering sites only; shuttle explores
/// sequentially consistent executions only; a forced backend runs the same protocol code as the
/// default one, and differs only in the backend code itself, the handler registration that drives
/// it, and the choice of backend (`Builder::kernel`).
fn tier_applies(name: &str, m: &Mutant) -> bool {
    match name {
        "c11" => m.spec != "on",
        "shuttle" => m.visible_under_sc,
        "ppoll" | "epoll" | "io_uring" => {
            m.file.starts_with("fdmon/")
                || m.file == "handler.rs"
                || m.name.ends_with(" in Builder::kernel")
                || m.name.contains(" in Builder::kernel #")
        }
        _ => true,
    }
}

/// What one tier found for one mutant.
enum TierVerdict {
    /// A test failed (`killed`) or hung (`timeout`) with the mutant, again on a re-run, and
    /// passes without it: the test's id.
    Killed(&'static str, String),
    /// Some test of the tier reaches the site, and none failed.
    Reached,
    /// No test of the tier reaches the site.
    Unreached,
}

fn run_in_tier(m: &Mutant, t: &Tier, logs: &Path) -> TierVerdict {
    // Tests reaching the site, cheapest first.
    let mut tests: Vec<(&String, f64)> = t
        .cover
        .iter()
        .filter(|(_, (s, _))| s.contains(&m.site))
        .map(|(id, (_, secs))| (id, *secs))
        .collect();
    if tests.is_empty() {
        return TierVerdict::Unreached;
    }
    tests.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    // One test at a time, cheapest first: the first failure ends the mutant's run.
    for (id, secs) in tests {
        let (tname, test) = id.split_once("::").expect("target::test");
        let exe = &t.bins.iter().find(|b| b.0 == tname).expect("binary").1;
        let mut env = t.env.clone();
        env.push(mutant_env(t, m));
        // A hang is the common way a logic mutant dies (a BH that never runs, a wait that never
        // ends), and its cost is the budget itself, paid again by each confirmation: ten times
        // the test's own time on the correct build (a busy machine slows both alike), at least
        // 15 s (a test of milliseconds is still far from it on a loaded 2-core machine).
        let budget = Duration::from_secs_f64((secs * 10.0).max(15.0));
        let log = logs.join(format!(
            "{}.{}.{tname}.log",
            m.name.replace([':', '/', '#', '=', ' ', '<', '>', '*', '&', '|'], "_"),
            t.name
        ));
        let r = run_tests(exe, &[test.to_string()], &env, budget, &log);
        if !r.ok && !r.timed_out && !is_verdict(t, &log) {
            eprintln!(
                "    error: {}:{id} failed without a verdict on {} (log {}); not a kill",
                t.name,
                m.name,
                log.display()
            );
            continue;
        }
        if !r.ok {
            // Confirm: the test fails again with the mutant, and passes on the correct build.
            // Otherwise it is flaky (a busy machine), and its failure kills nothing.
            let clean = logs.join(format!("flake-check.{}.log", id.replace("::", "__")));
            let test = [test.to_string()];
            // loom and shuttle replay the same schedules; the other tiers race real threads on
            // a machine that may be busy, so their failure must repeat twice more.
            // A hang past the budget repeats once: a mutant that only slows a test ten times
            // over on one run and not on the next is rare, and each repeat costs the budget.
            let repeats =
                if r.timed_out || matches!(t.name.as_str(), "loom" | "shuttle") { 1 } else { 2 };
            let flaky = if (0..repeats).any(|_| run_tests(exe, &test, &env, budget, &clean).ok) {
                Some("passed on another run with the mutant")
            } else if !run_tests(exe, &test, &t.env, budget, &clean).ok {
                Some("failed on the correct build too")
            } else {
                None
            };
            if let Some(why) = flaky {
                eprintln!("    flaky: {}:{id} {why} (log {}); not a kill", t.name, clean.display());
                continue;
            }
            let by = format!("{}:{id}", t.name);
            let kind = if r.timed_out { "timeout" } else { "killed" };
            return TierVerdict::Killed(kind, by);
        }
        let _ = std::fs::remove_file(&log);
    }
    TierVerdict::Reached
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut o = parse(args)?;
    let t_start = Instant::now();
    std::fs::create_dir_all(o.out.join("logs")).map_err(|e| e.to_string())?;
    let tree = o.out.join("tree");
    std::fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    if o.tiers.iter().any(|t| t == "io_uring") && !io_uring_allowed(&o.root) {
        eprintln!("    io_uring tier dropped: this kernel refuses io_uring (ci/has-io-uring)");
        o.tiers.retain(|t| t != "io_uring");
    }
    eprintln!(
        "==> mutants: scratch tree {} (schema written there, never in the repository)",
        tree.display()
    );
    let displaced = sync_tree(&o.root, &tree)?;
    // The schema is written from this snapshot of impl/src, never from the work tree again: a
    // rebuild after unviable mutants re-applies it, and an edit made meanwhile (cargo-mutants'
    // spans are of the snapshot) would put their replacements at the wrong places.
    let pristine = o.out.join("pristine");
    let _ = std::fs::remove_dir_all(&pristine);
    // From the scratch tree just synced (cargo-mutants lists there too), less the schema's runtime.
    copy_dir(&tree.join("impl/src"), &pristine.join("impl/src"))?;
    let _ = std::fs::remove_file(pristine.join("impl/src").join(schema::RUNTIME_PATH));
    let n_sites = schema::scan_tree(&pristine.join("impl/src"))?.0.len();
    // The files whose logic mutants are listed: `--files`; for a claims check, the files its logic
    // claims cite (so its schema is the one `--changed` builds for those files, and the two share
    // their builds); else every file in scope.
    let logic_files: Option<Vec<String>> = match (&o.logic_files, &o.files, &o.claims) {
        (Some(fs), _, _) | (None, Some(fs), _) => Some(fs.clone()),
        (None, None, Some(p)) => Some(claimed_logic_files(p)?),
        (None, None, None) => None,
    };
    let logic: Vec<Placed> = if o.logic {
        list_logic(logic_files.as_deref(), &tree)?
            .into_iter()
            .enumerate()
            .map(|(i, listed)| Placed { id: n_sites + i, listed })
            .collect()
    } else {
        Vec::new()
    };
    let mut skip: BTreeSet<usize> = BTreeSet::new();
    let mut applied = apply_schema(&pristine, &tree, &logic, &skip)?;
    skip.extend(applied.unplaced.iter().copied());
    if !applied.unplaced.is_empty() {
        applied = apply_schema(&pristine, &tree, &logic, &skip)?;
    }
    keep_mtimes(&displaced);
    let equiv = equivalents(&o.root)?;
    let known = argued(&o.root, "mutants/SURVIVORS.md")?;
    // Ordering mutants are generated over every file; logic mutants only when that half runs, over
    // the files in scope (`--files`, as `--sample` and `--changed` narrow it).
    let listed = |name: &str| match name.split_once(".rs: ") {
        None => true,
        Some((file, _)) => {
            o.logic
                && logic_files
                    .as_ref()
                    .is_none_or(|fs| fs.iter().any(|f| *f == format!("{file}.rs")))
        }
    };
    for (list, names) in [("EQUIVALENT", &equiv), ("SURVIVORS", &known)] {
        for name in names.keys().filter(|n| listed(n)) {
            if !applied.mutants.iter().any(|m| &m.name == name) {
                return Err(format!(
                    "mutants/{list}.md lists {name}, which the generator no longer produces"
                ));
            }
        }
    }
    let claims = match &o.claims {
        Some(p) => read_claims(p, &applied.mutants)?,
        None => Vec::new(),
    };
    let select = |all: &[Mutant]| -> Vec<(usize, Mutant)> {
        all.iter()
            .cloned()
            .enumerate()
            .filter(|(_, m)| o.files.as_ref().is_none_or(|fs| fs.contains(&m.file)))
            .filter(|(_, m)| o.only.as_ref().is_none_or(|ns| ns.contains(&m.name)))
            .filter(|(i, _)| o.shard.is_none_or(|(k, n)| i % n == k))
            .filter(|(_, m)| claims.is_empty() || claims.iter().any(|c| c.0 == m.name))
            .filter(|(_, m)| o.ordering || m.spec == "on")
            .collect()
    };
    let chosen_all = select(&applied.mutants);
    eprintln!(
        "    {} ordering sites, {} mutants generated ({} logic, {} of them not placed by syn); {} chosen ({} in the equivalence list)",
        applied.sites.len(),
        applied.mutants.len(),
        logic.len(),
        applied.unplaced.len(),
        chosen_all.len(),
        chosen_all.iter().filter(|(_, m)| equiv.contains_key(&m.name)).count()
    );
    // Site name (`notify::accept::swap#1`) -> id, for tiers that report names (c11).
    let names: HashMap<String, usize> = applied
        .mutants
        .iter()
        .filter(|m| m.spec != "on")
        .filter_map(|m| Some((m.name.rsplit_once(':')?.0.to_string(), m.site)))
        .collect();
    let mut schema = Schema { pristine: &pristine, tree: &tree, logic: &logic, skip, applied };
    if !claims.is_empty() {
        let mut tiers = Vec::new();
        if !chosen_all.is_empty() {
            eprintln!("==> building the schema once per tier: {}", o.tiers.join(", "));
            for name in &o.tiers {
                tiers.push(schema.build(name, &o)?);
            }
        }
        return check_claims(&claims, &schema.applied.mutants, &tiers, &o);
    }
    let logs = o.out.join("logs");
    let _ = std::fs::remove_file(o.out.join("partial.tsv"));
    // Each verdict as it comes (a run stopped early keeps what it found).
    let record = |m: &Mutant, v: &Verdict| {
        if let Ok(mut f) =
            std::fs::OpenOptions::new().create(true).append(true).open(o.out.join("partial.tsv"))
        {
            let _ = writeln!(f, "{}\t{}\t{}\t{:.1}", m.name, v.kind, v.by, v.secs);
        }
    };
    let mut results: BTreeMap<usize, Verdict> = BTreeMap::new();
    let mut pending: Vec<(usize, Mutant)> = Vec::new();
    for (i, m) in &chosen_all {
        if equiv.contains_key(&m.name) && !o.check_equivalents {
            let v = Verdict { kind: "equivalent", by: "-".into(), secs: 0.0 };
            record(m, &v);
            results.insert(*i, v);
        } else {
            pending.push((*i, m.clone()));
        }
    }
    // Tier by tier, cheapest first: a tier is built, and its coverage learned, only when a mutant
    // it can judge is still alive, so a change whose mutants the std tests kill pays for no other.
    eprintln!(
        "==> running {} mutants tier by tier ({} at a time; {} equivalent, not run)",
        pending.len(),
        o.jobs,
        results.len()
    );
    let mut reached: BTreeSet<usize> = BTreeSet::new();
    let mut spent: HashMap<usize, f64> = HashMap::new();
    for name in &o.tiers {
        let unviable =
            |m: &Mutant, skip: &BTreeSet<usize>| m.spec == "on" && skip.contains(&m.site);
        if !pending.iter().any(|(_, m)| tier_applies(name, m) && !unviable(m, &schema.skip)) {
            eprintln!("    tier {name}: no mutant left that it can judge: not built");
            continue;
        }
        let mut t = schema.build(name, &o)?;
        // The build may have found more unviable logic mutants.
        pending.retain(|(_, m)| !unviable(m, &schema.skip));
        let mine: Vec<(usize, Mutant)> =
            pending.iter().filter(|(_, m)| tier_applies(name, m)).cloned().collect();
        cover_tier(&mut t, &o, &names)?;
        eprintln!("==> tier {name}: {} mutants", mine.len());
        let queue = Mutex::new(mine.into_iter().rev().collect::<Vec<_>>());
        let found: Mutex<Vec<(usize, TierVerdict, f64)>> = Mutex::new(Vec::new());
        let n = queue.lock().unwrap().len();
        let t_run = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..o.jobs {
                let (queue, found, t, logs, spent) = (&queue, &found, &t, &logs, &spent);
                s.spawn(move || loop {
                    let Some((i, m)) = queue.lock().unwrap().pop() else { break };
                    let t0 = Instant::now();
                    let v = run_in_tier(&m, t, logs);
                    let secs = spent.get(&i).copied().unwrap_or(0.0) + t0.elapsed().as_secs_f64();
                    let mut found = found.lock().unwrap();
                    let d = found.len() + 1;
                    let eta = t_run.elapsed().as_secs_f64() / d as f64 * (n - d) as f64;
                    let (kind, by) = match &v {
                        TierVerdict::Killed(kind, by) => (*kind, by.as_str()),
                        TierVerdict::Reached => ("alive", "-"),
                        TierVerdict::Unreached => ("unreached", "-"),
                    };
                    eprintln!(
                        "    [{name} {d:>3}/{n}] {kind:<11} {:<58} {by} (ETA {eta:.0} s)",
                        m.name
                    );
                    found.push((i, v, secs));
                });
            }
        });
        for (i, v, secs) in found.into_inner().unwrap() {
            spent.insert(i, secs);
            match v {
                TierVerdict::Killed(kind, by) => {
                    let v = Verdict { kind, by, secs };
                    let m = &pending.iter().find(|(j, _)| *j == i).expect("pending").1;
                    record(m, &v);
                    results.insert(i, v);
                }
                TierVerdict::Reached => {
                    reached.insert(i);
                }
                TierVerdict::Unreached => {}
            }
        }
        pending.retain(|(i, _)| !results.contains_key(i));
    }
    // Left alive by every tier that could judge it.
    for (i, m) in &pending {
        if m.spec == "on" && schema.skip.contains(&m.site) {
            continue;
        }
        let kind = if reached.contains(i) { "survived" } else { "uncovered" };
        let v = Verdict { kind, by: "-".into(), secs: spent.get(i).copied().unwrap_or(0.0) };
        record(m, &v);
        results.insert(*i, v);
    }
    // A logic mutant that does not compile in some tier is unviable, unless a tier where it does
    // compile had already killed it.
    let chosen: Vec<(usize, Mutant)> =
        chosen_all.iter().filter(|(i, _)| results.contains_key(i)).cloned().collect();
    let n_unviable = chosen_all.len() - chosen.len();
    report(&o, &chosen, n_unviable, &results, (&equiv, &known), t_start.elapsed().as_secs_f64())
}

/// The schema in the scratch tree, and the logic mutants left out of it because they do not
/// compile (a build that fails on some blames them, re-applies the schema without them, retries).
struct Schema<'a> {
    pristine: &'a Path,
    tree: &'a Path,
    logic: &'a [Placed],
    skip: BTreeSet<usize>,
    applied: Applied,
}

impl Schema<'_> {
    fn build(&mut self, name: &str, o: &Opts) -> Result<Tier, String> {
        for _round in 0..30 {
            match build_tier(name, o, self.tree) {
                Ok(t) => return Ok(t),
                Err(BuildErr::Compile(errors, msg)) if !self.logic.is_empty() => {
                    let blamed = blame(&errors, &self.applied);
                    if blamed.is_empty() {
                        return Err(format!(
                            "{msg}\n(no mutant to blame: the schema itself does not compile)"
                        ));
                    }
                    eprintln!(
                        "    tier {name}: {} logic mutant(s) do not compile: left out as unviable",
                        blamed.len()
                    );
                    self.skip.extend(blamed);
                    self.applied = apply_schema(self.pristine, self.tree, self.logic, &self.skip)?;
                }
                Err(BuildErr::Compile(_, msg) | BuildErr::Other(msg)) => return Err(msg),
            }
        }
        Err(format!("tier {name}: the schema still does not compile after 30 rounds of blame"))
    }
}

/// The files (relative to impl/src) of the logic mutants a claims file cites (`<file>.rs: replace ...`).
fn claimed_logic_files(p: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let files: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(".rs: ").map(|(f, _)| format!("{}.rs", f.trim())))
        .collect();
    Ok(files.into_iter().collect())
}

/// cargo-mutants' logic mutants of `files` (relative to impl/src; None: every file in scope).
/// Listed in `dir`, the scratch tree as synced (its impl/src is the schema's snapshot).
fn list_logic(files: Option<&[String]>, dir: &Path) -> Result<Vec<crate::logic::Listed>, String> {
    if files.is_some_and(<[String]>::is_empty) {
        return Ok(Vec::new());
    }
    let mut cmd = Command::new("cargo");
    cmd.args(["mutants", "--list", "--json", "-p", "aioctx"]).current_dir(dir);
    let files: Vec<String> = match files {
        Some(fs) => fs.iter().map(|f| format!("impl/src/{f}")).collect(),
        None => ["notify", "bh", "poll", "handler", "timer", "ctx"]
            .iter()
            .map(|f| format!("impl/src/{f}.rs"))
            .chain(["impl/src/fdmon/*.rs".to_string()])
            .collect(),
    };
    for f in &files {
        cmd.args(["-f", f]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cargo mutants: {e} (install it: cargo install cargo-mutants)"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo mutants --list failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let listed = crate::logic::parse_list(&String::from_utf8_lossy(&out.stdout))?;
    // Only files in scope of the schema (cargo-mutants' globs may reach further).
    Ok(listed
        .into_iter()
        .filter(|l| l.file.strip_prefix("impl/src/").is_some_and(schema::in_scope))
        .collect())
}

/// The logic mutants whose schema text holds a compile error (innermost owner of each error).
fn blame(errors: &[(String, usize)], applied: &Applied) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for (file, at) in errors {
        let rel = file.trim_start_matches("impl/src/");
        if let Some(owners) = applied.owners.get(rel) {
            if let Some(&(_, _, id)) =
                owners.iter().filter(|(a, b, _)| a <= at && at < b).min_by_key(|(a, b, _)| b - a)
            {
                out.insert(id);
            }
        }
    }
    out
}

fn io_uring_allowed(root: &Path) -> bool {
    Command::new(root.join("ci/has-io-uring")).status().is_ok_and(|s| s.success())
}

type Lists<'a> = (&'a BTreeMap<String, String>, &'a BTreeMap<String, String>);

fn report(
    o: &Opts,
    chosen: &[(usize, Mutant)],
    n_unviable: usize,
    results: &BTreeMap<usize, Verdict>,
    (equiv, known): Lists,
    secs: f64,
) -> Result<(), String> {
    let path = o.out.join("results.tsv");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    writeln!(f, "index\tname\tfile\tline\tmutation\tverdict\tby\tseconds")
        .map_err(|e| e.to_string())?;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_tier: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong_equiv = Vec::new();
    let mut new_survivors = Vec::new();
    println!("{:<60} {:<18} {:<11} killed by", "mutant", "site", "verdict");
    for (i, m) in chosen {
        let v = &results[i];
        let mut kind = v.kind;
        if equiv.contains_key(&m.name) {
            if matches!(kind, "killed" | "timeout") {
                wrong_equiv
                    .push(format!("{} is listed as equivalent but {} by {}", m.name, kind, v.by));
            }
            kind = "equivalent";
        } else if known.contains_key(&m.name) {
            if matches!(kind, "killed" | "timeout") {
                wrong_equiv
                    .push(format!("{} is listed in SURVIVORS.md but {} by {}", m.name, kind, v.by));
            }
        } else if matches!(kind, "survived" | "uncovered") && m.spec != "on" {
            // Ordering survivors must be killed or argued; logic survivors are gated by the rate.
            new_survivors.push(m.name.clone());
        }
        *count.entry(kind).or_default() += 1;
        if matches!(kind, "killed" | "timeout") {
            *by_tier.entry(v.by.split(':').next().unwrap_or("?").to_string()).or_default() += 1;
        }
        let shown = if kind == "survived" && known.contains_key(&m.name) {
            "(known: SURVIVORS.md)"
        } else {
            v.by.as_str()
        };
        println!("{:<60} {:<18} {:<11} {}", m.name, format!("{}:{}", m.file, m.line), kind, shown);
        writeln!(
            f,
            "{i}\t{}\t{}\t{}\t{}\t{kind}\t{}\t{:.1}",
            m.name, m.file, m.line, m.desc, v.by, v.secs
        )
        .map_err(|e| e.to_string())?;
    }
    let c = |k: &str| count.get(k).copied().unwrap_or(0);
    let (k, t, s, u, e) =
        (c("killed"), c("timeout"), c("survived"), c("uncovered"), c("equivalent"));
    let denom = chosen.len() - e;
    let rate = if denom == 0 { 100.0 } else { 100.0 * (k + t) as f64 / denom as f64 };
    println!();
    for (tier, n) in &by_tier {
        println!("  killed by {tier:<12} {n}");
    }
    println!(
        "mutants: {} killed ({} of them by a hang past the budget), {} survived ({} reached by no test), {e} equivalent, {n_unviable} unviable, rate {rate:.1}% ({secs:.0} s)",
        k + t,
        t,
        s + u,
        u
    );
    std::fs::write(
        o.out.join("summary.txt"),
        format!("{} {} {e} {n_unviable} {rate:.1} {secs:.0}\n", k + t, s + u),
    )
    .map_err(|e| e.to_string())?;
    if !wrong_equiv.is_empty() {
        return Err(format!("a list is wrong:\n  {}", wrong_equiv.join("\n  ")));
    }
    if !new_survivors.is_empty() {
        return Err(format!(
            "{} survivor(s) with neither a check that kills them nor an entry in mutants/EQUIVALENT.md or SURVIVORS.md:\n  {}",
            new_survivors.len(),
            new_survivors.join("\n  ")
        ));
    }
    if rate < o.min_rate {
        return Err(format!("kill rate {rate:.1}% is below {}%", o.min_rate));
    }
    Ok(())
}

/// `<mutant name> <tier>:<target>::<test>` per line (`#` comments); the name may have spaces.
fn read_claims(p: &Path, all: &[Mutant]) -> Result<Vec<(String, String)>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The test is the last word: a logic mutant's name has spaces (`notify.rs: replace ...`).
        let (m, t) = line.rsplit_once(char::is_whitespace).ok_or(format!("claim: {line}"))?;
        let m = m.trim_end();
        if !all.iter().any(|x| x.name == m) {
            return Err(format!("claim cites {m}, which the generator no longer produces"));
        }
        out.push((m.to_string(), t.trim().to_string()));
    }
    Ok(out)
}

fn check_claims(
    claims: &[(String, String)],
    all: &[Mutant],
    tiers: &[Tier],
    o: &Opts,
) -> Result<(), String> {
    let logs = o.out.join("logs");
    let mut bad = Vec::new();
    for (name, test) in claims {
        let m = all.iter().find(|m| &m.name == name).expect("checked");
        let (tier, id) =
            test.split_once(':').ok_or(format!("claim {test}: <tier>:<target>::<test>"))?;
        let t = tiers
            .iter()
            .find(|t| t.name == tier)
            .ok_or(format!("claim {test}: tier {tier} not built"))?;
        let (tname, tst) = id.split_once("::").ok_or(format!("claim {test}: <target>::<test>"))?;
        let exe = &t
            .bins
            .iter()
            .find(|b| b.0 == tname)
            .ok_or(format!("claim {test}: no binary {tname}"))?
            .1;
        let mut env = t.env.clone();
        env.push(mutant_env(t, m));
        let log = logs.join(format!("claim.{}.log", name.replace([':', '/', '#', '='], "_")));
        // No coverage pass for claims: a generous budget instead (a claimed kill is a fast failure).
        let r = run_tests(exe, &[tst.to_string()], &env, Duration::from_secs(600), &log);
        let ok = !r.ok && is_verdict(t, &log);
        println!("  claim {name:<56} {test}: {}", if ok { "killed" } else { "NOT KILLED" });
        if !ok {
            bad.push(format!("{test} no longer kills {name}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n"))
    }
}
