//! Every shared-memory primitive of the crate comes from the sync facade (src/sync/), so loom and
//! shuttle see every operation. clippy.toml enforces the wrapped types; this scan enforces the ones the
//! std backend re-exports (Arc, atomics, fences, thread spawning), which clippy cannot tell apart.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "std::sync::atomic",
    "core::sync::atomic",
    "std::sync::Arc",
    "std::sync::{",
    "std::sync::Mutex",
    "std::sync::Condvar",
    "std::cell::UnsafeCell",
    "std::thread::spawn",
    "thread::Builder",
];

fn scan(dir: &Path, hits: &mut Vec<String>, files: &mut usize) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "sync" {
                scan(&p, hits, files);
            }
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        *files += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        let mut in_tests = false;
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                in_tests = true; // unit tests may use std freely (they never run under a checker)
            }
            let code = line.split("//").next().unwrap();
            for f in FORBIDDEN {
                if code.contains(f) && !in_tests && !allowed(&p, code) {
                    hits.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
}

/// Places that legitimately use std directly, each with its reason.
fn allowed(p: &Path, code: &str) -> bool {
    let f = p.to_string_lossy();
    // The trace recorder and the replay gate are instrumentation outside the protocol (feature
    // `trace` only), so they may use std's primitives. Under a checker the recorder holds nothing
    // across a facade operation (its log is the model's OS thread's own) and no gate is installed.
    (f.ends_with("trace.rs") && (code.contains("std::sync") || code.contains("std::thread")))
        // IoThread names its OS thread (std builds only; under the checkers it uses the facade).
        || (f.ends_with("iothread.rs") && code.contains("thread::Builder"))
}

#[test]
fn std_sync_types_only_in_the_facade() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut hits, mut files) = (Vec::new(), 0);
    scan(&src, &mut hits, &mut files);
    assert!(files > 10, "scanned only {files} files: wrong directory?");
    assert!(
        hits.is_empty(),
        "std sync primitives outside src/sync/ (use crate::sync):\n{}",
        hits.join("\n")
    );
}
