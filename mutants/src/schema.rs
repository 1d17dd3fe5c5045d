//! Writing the schema into a scratch copy of the tree: every site of every file in scope calls the
//! schema runtime (`mutants/schema/mutant.rs`, copied to `impl/src/mutant.rs`), so ONE build per
//! checker holds every ordering and fence mutant, chosen at run time by `AIOCTX_MUTANT`.
//!
//! Why schemata and not one build per mutant: about 200 mutants × 5 checker builds (std per backend,
//! conformance, loom, shuttle, miri) at 30–90 s a build is days on two cores; one build per checker is
//! minutes. Why the token stream (proc-macro2) and not syn's AST: the protocol's accesses sit inside
//! `traced!(...)`, whose body syn does not parse.

use crate::sites::{mutants_of, rewrite, scan_file, Mutant, Site};
use std::path::{Path, PathBuf};

/// Files of `impl/src` whose sites are mutated: the protocol core and the context. Not the sync
/// facade (it is the checkers' view of memory), not trace.rs (instrumentation, compiled out of
/// production builds), not kernel.rs (the model kernel: the checkers' environment) nor sys/ (no
/// atomics).
pub fn in_scope(rel: &str) -> bool {
    !(rel.starts_with("sync/")
        || rel.starts_with("sys/")
        || rel == "trace.rs"
        || rel == "kernel.rs")
}

/// The `.rs` files under `src`, relative, sorted (so site ids are deterministic).
pub fn rust_files(src: &Path) -> Vec<String> {
    fn go(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                go(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(
                    p.strip_prefix(base).expect("under base").to_string_lossy().replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(src, src, &mut out);
    out.sort();
    out
}

/// Every site and mutant of the files in scope under `src`.
pub fn scan_tree(src: &Path) -> Result<(Vec<Site>, Vec<Mutant>), String> {
    let mut sites = Vec::new();
    for rel in rust_files(src).into_iter().filter(|r| in_scope(r)) {
        let text = std::fs::read_to_string(src.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        let found = scan_file(&rel, &text, sites.len())?;
        sites.extend(found);
    }
    let mutants = sites.iter().flat_map(mutants_of).collect();
    Ok((sites, mutants))
}

const RUNTIME: &str = include_str!("../schema/mutant.rs");
/// Where the runtime goes, relative to `impl/src`.
pub const RUNTIME_PATH: &str = "sync/mutant.rs";

/// Rewrite the scratch `src` in place into the schema. Refuses a tree that is not a scratch copy
/// (a `.git` entry beside its package), so the real tree is never rewritten.
pub fn apply(src: &Path) -> Result<(Vec<Site>, Vec<Mutant>), String> {
    let pkg: PathBuf = src.join("..");
    let root = pkg.join("..");
    if root.join(".git").exists() {
        return Err(format!(
            "{}: refusing to rewrite a git checkout (give a scratch copy)",
            src.display()
        ));
    }
    let (sites, mutants) = scan_tree(src)?;
    let mut by_file: std::collections::BTreeMap<&str, Vec<Site>> = Default::default();
    for s in &sites {
        by_file.entry(s.file.as_str()).or_default().push(s.clone());
    }
    for (rel, ss) in by_file {
        let p = src.join(rel);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{rel}: {e}"))?;
        let mut out = rewrite(&text, &ss);
        out.push_str(
            "\n#[allow(unused_imports)]\nuse crate::mutant::{MutAtomic as _, MutBool as _, MutInt as _};\n",
        );
        std::fs::write(&p, out).map_err(|e| format!("{rel}: {e}"))?;
    }
    let lib = src.join("lib.rs");
    let mut text = std::fs::read_to_string(&lib).map_err(|e| format!("lib.rs: {e}"))?;
    // In sync/: like the facade, the runtime is the checkers' instrumentation (its coverage bitmap and
    // counters are std atomics, invisible to loom and shuttle on purpose).
    text.push_str("\n#[doc(hidden)]\n#[path = \"sync/mutant.rs\"]\npub mod mutant;\n");
    std::fs::write(&lib, text).map_err(|e| format!("lib.rs: {e}"))?;
    let rt = RUNTIME.replace("__SITES__", &sites.len().max(1).to_string());
    std::fs::write(src.join(RUNTIME_PATH), rt).map_err(|e| format!("{RUNTIME_PATH}: {e}"))?;
    Ok((sites, mutants))
}
