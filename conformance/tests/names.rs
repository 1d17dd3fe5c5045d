//! The names that must agree across the Promela models, the Rust model and the implementation
//! (style.md, "Names that match across languages"). Each check prints a diff when it fails.
//!
//! - Labels ↔ steps: every label of a current-protocol model (not `qemu_*.pml`; `env_`, `tso_` and
//!   `end_` labels excluded) is a `trace::Step`, and every `Step` is a label of some model or is in
//!   [`IMPL_ONLY_STEPS`].
//! - Trace keys: the Promela globals printed in `@@@` lines ↔ the value keys of the implementation's
//!   `traced!` / `trace_step!` calls, modulo `_old` suffixes, [`MODEL_ONLY_GLOBALS`] and
//!   [`STEP_LOCAL_KEYS`].
//! - Planted bugs: `BUG_*` of the current-protocol models ↔ the workspace's `aioctx_bug` check-cfg
//!   values (plus [`RUST_ONLY_BUGS`]) ↔ the Rust model's `Bug::ALL`.
//! - Citations: every `<file>.pml#<label>` in a comment of `impl/src` names an existing label.
//! - Repository citations, in every file git knows: a cited repository path (`impl/`, `model/`,
//!   `conformance/`, `promela/`, `ci/`, `docs/`, in backticks or not; placeholders such as `<file>`
//!   and globs must match something) exists; no file cites the brief's spec pages, which are outside
//!   the repository; every `§N` citing docs/protocol.md names one of its headings (`## N.`,
//!   `### N.M.`).

use std::collections::BTreeSet;

use aioctx::trace::Step;
use aioctx_conformance::names::{self, current_models};
use aioctx_conformance::spin;
use aioctx_model::Bug;

/// Steps no Promela model has, with the reason.
const IMPL_ONLY_STEPS: &[(&str, &str)] = &[
    ("timer_mod", "no timer model: timers are checked by loom (model/tests/loom_timer.rs)"),
    ("timer_run", "no timer model (as timer_mod)"),
    (
        "ctx_poll_add",
        "a handler joins the poll list on its first fd event (QEMU poll_add): poll_idle.pml does \
         not model re-joining (promela/README.md, finding 7)",
    ),
];

/// Promela globals printed in trace lines that have no implementation counterpart (README "Name
/// map": model-only state).
const MODEL_ONLY_GLOBALS: &[(&str, &str)] = &[
    ("env_left", "notify.pml: how many environment notifiers still run"),
    ("env_done", "the environment has stopped (the p_no_busy_loop premise)"),
    ("home_lock", "external.pml: who holds the home role (QEMU's BQL)"),
    ("vq_pending", "poll_mode/poll_idle.pml: the virtio-like device's queue"),
    ("vq_kick_enabled", "the device's guest-notification flag (io_poll_begin/end)"),
    ("ioeventfd", "the device's handler fd"),
    (
        "on_poll_list",
        "poll_idle.pml: the handler's poll-list membership (home-thread local in Rust)",
    ),
];

/// Implementation keys that are step outcomes, not shared variables (common.pml: "step-local
/// outcomes").
const STEP_LOCAL_KEYS: &[(&str, &str)] = &[
    ("timeout", "the poll's timeout after the step"),
    ("readable", "the wait reported the notifier readable"),
    ("ready", "an io_poll found work"),
    ("idle", "the BH called is idle (not progress)"),
    ("count", "how many BHs bh_poll_take took (the model's bh_list_old says whether any)"),
];

/// `aioctx_bug` values with no Promela variant, with the reason.
const RUST_ONLY_BUGS: &[(&str, &str)] = &[
    (
        "notify_me_rmw_instead_of_fence",
        "a SeqCst RMW does not order a later Relaxed load on ARM (QEMU 2020): C11 weak memory, \
         loom's job; x86-TSO (notify_tso.pml) cannot show it",
    ),
    (
        "task_clears_woken_after_poll",
        "the task layer (impl/src/task) sits on the protocol, which the Promela models check: a \
         task is a BH, and its waker's `woken` flag is its own; loom and shuttle catch it \
         (model/tests/*_task.rs)",
    ),
];

/// Promela BUG_* variants that the Rust model has no variant for, with the reason.
const PROMELA_ONLY_BUGS: &[(&str, &str)] = &[
    (
        "no_final_poll_after_poll_end",
        "poll mode is not in the Rust model (poll_mode.pml, poll_idle.pml)",
    ),
    ("notify_no_seqcst_fence", "store buffers: notify_tso.pml and loom"),
    ("poll_no_fence_after_arm", "store buffers: notify_tso.pml and loom"),
];

fn diff(
    what: &str,
    left_name: &str,
    left: &BTreeSet<String>,
    right_name: &str,
    right: &BTreeSet<String>,
) {
    let only_l: Vec<_> = left.difference(right).collect();
    let only_r: Vec<_> = right.difference(left).collect();
    assert!(
        only_l.is_empty() && only_r.is_empty(),
        "{what} differ:\n  only in {left_name}: {only_l:?}\n  only in {right_name}: {only_r:?}"
    );
}

fn set<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    it.into_iter().map(String::from).collect()
}

/// Each current model preprocessed once per variant (labels and trace lines under #ifdef count).
fn preprocessed() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for m in current_models() {
        for var in spin::variants(&m) {
            let defs = spin::defines(&var);
            let defs: Vec<&str> = defs.iter().map(String::as_str).collect();
            v.push((m.clone(), names::preprocess(&m, &defs)));
        }
    }
    v
}

#[test]
fn promela_labels_are_steps_and_every_step_is_modelled() {
    let mut labels = BTreeSet::new();
    for (m, pre) in preprocessed() {
        for l in names::labels(&pre) {
            if ["env_", "tso_", "end_"].iter().any(|p| l.starts_with(p)) {
                continue;
            }
            assert!(Step::from_label(&l).is_some(), "{m}.pml: label `{l}` is not a trace::Step");
            labels.insert(l);
        }
    }
    let steps = set(Step::ALL.iter().map(|s| s.as_str()));
    let impl_only = set(IMPL_ONLY_STEPS.iter().map(|(s, _)| *s));
    let modelled: BTreeSet<String> = labels.union(&impl_only).cloned().collect();
    diff("labels (+ impl-only steps) and trace::Step", "Promela", &modelled, "trace.rs", &steps);
    for s in &impl_only {
        assert!(!labels.contains(s), "`{s}` is listed impl-only but a model has it");
    }
    println!(
        "NAMES labels: {} Promela step labels, {} steps, {} impl-only",
        labels.len(),
        steps.len(),
        impl_only.len()
    );
}

#[test]
fn promela_trace_globals_are_the_implementation_value_keys() {
    let mut pml_keys = BTreeSet::new();
    let mut globals = BTreeSet::new();
    for (_, pre) in preprocessed() {
        // Environment lines count too: what they print must be model-only or shared.
        for (_, keys) in names::trace_lines(&pre) {
            pml_keys.extend(keys);
        }
        globals.extend(names::globals(&pre));
    }
    let model_only = set(MODEL_ONLY_GLOBALS.iter().map(|(g, _)| *g));
    let pml: BTreeSet<String> = pml_keys
        .iter()
        .map(|k| k.trim_end_matches("_old").to_string())
        .filter(|k| globals.contains(k) && !model_only.contains(k))
        .collect();
    for g in &model_only {
        assert!(globals.contains(g), "MODEL_ONLY_GLOBALS lists `{g}`, which no model declares");
    }
    let calls = names::traced_calls();
    assert!(calls.len() > 20, "found only {} traced calls in impl/src", calls.len());
    let local = set(STEP_LOCAL_KEYS.iter().map(|(k, _)| *k));
    let implk: BTreeSet<String> = calls
        .iter()
        .flat_map(|c| c.keys.iter())
        .map(|k| k.trim_end_matches("_old").to_string())
        .filter(|k| !local.contains(k))
        .collect();
    diff(
        "Promela globals in @@@ lines (minus model-only) and impl trace keys (minus step-local, _old)",
        "Promela",
        &pml,
        "impl/src",
        &implk,
    );
    // Every RMW key the implementation records names a global it also records.
    for c in &calls {
        for k in c.keys.iter().filter(|k| k.ends_with("_old")) {
            let base = k.trim_end_matches("_old");
            assert!(c.keys.iter().any(|x| x == base), "{}: `{k}` without `{base}`", c.at);
        }
    }
    println!("NAMES keys: {} shared globals {pml:?}; {} traced calls", pml.len(), calls.len());
}

#[test]
fn bug_variants_match_the_cfg_values_and_the_rust_model() {
    let mut pml = BTreeSet::new();
    for m in current_models() {
        for var in spin::variants(&m) {
            for d in spin::defines(&var) {
                if let Some(b) = d.strip_prefix("BUG_") {
                    pml.insert(b.to_ascii_lowercase());
                }
            }
        }
        for sym in names::tested_symbols(&m) {
            if let Some(b) = sym.strip_prefix("BUG_") {
                assert!(
                    pml.contains(&b.to_ascii_lowercase())
                        || spin::variants(&m).iter().all(|v| !v.contains(&sym)),
                    "{m}.pml tests {sym}"
                );
            }
        }
    }
    let cargo = names::cargo_bug_values();
    let rust_only = set(RUST_ONLY_BUGS.iter().map(|(b, _)| *b));
    let expected: BTreeSet<String> = pml.union(&rust_only).cloned().collect();
    diff(
        "BUG_* variants (+ Rust-only bugs) and aioctx_bug check-cfg values",
        "Promela",
        &expected,
        "Cargo.toml",
        &cargo,
    );

    let model: BTreeSet<String> =
        Bug::ALL.iter().filter(|b| b.in_impl()).map(|b| b.as_str().to_string()).collect();
    for b in Bug::ALL.iter().filter(|b| !b.in_impl()) {
        assert!(!cargo.contains(b.as_str()), "model-only bug {b} is an aioctx_bug value");
    }
    let promela_only = set(PROMELA_ONLY_BUGS.iter().map(|(b, _)| *b));
    let pml_in_model: BTreeSet<String> = pml.difference(&promela_only).cloned().collect();
    diff(
        "BUG_* variants (minus Promela-only) and Bug::ALL (in_impl)",
        "Promela",
        &pml_in_model,
        "aioctx-model",
        &model,
    );
    println!("NAMES bugs: Promela {pml:?}; Rust-only {rust_only:?}; model {model:?}");
}

#[test]
fn model_citations_in_impl_comments_exist() {
    let cites = names::citations();
    assert!(!cites.is_empty(), "no `<file>.pml#<label>` citation found in impl/src");
    let mut bad = Vec::new();
    let mut labels = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for (at, file, label) in &cites {
        let stem = file.trim_end_matches(".pml").to_string();
        if !aioctx_conformance::root().join("promela").join(file).exists() {
            bad.push(format!("{at}: {file} does not exist"));
            continue;
        }
        let ls = labels.entry(stem.clone()).or_insert_with(|| {
            let mut s = BTreeSet::new();
            for var in spin::variants(&stem) {
                let defs = spin::defines(&var);
                let defs: Vec<&str> = defs.iter().map(String::as_str).collect();
                s.extend(names::labels(&names::preprocess(&stem, &defs)));
            }
            s
        });
        if !ls.contains(label) {
            bad.push(format!("{at}: {file}#{label}: no such label"));
        }
    }
    assert!(bad.is_empty(), "stale model citations:\n  {}", bad.join("\n  "));
    println!("NAMES citations: {} checked", cites.len());
}

#[test]
fn cited_repository_paths_exist() {
    let files = names::repo_text_files();
    assert!(files.len() > 50, "git ls-files found only {} text files", files.len());
    let cites = names::path_citations(&files);
    assert!(cites.len() > 100, "found only {} repository path citations", cites.len());
    let bad: Vec<String> = cites
        .iter()
        .filter(|c| !names::path_exists(&c.pattern))
        .map(|c| {
            if c.cited == c.pattern {
                format!("{}: `{}` does not exist", c.at, c.cited)
            } else {
                format!("{}: `{}` matches nothing (as `{}`)", c.at, c.cited, c.pattern)
            }
        })
        .collect();
    assert!(bad.is_empty(), "cited repository paths that do not exist:\n  {}", bad.join("\n  "));
    println!("NAMES paths: {} citations in {} files checked", cites.len(), files.len());
}

#[test]
fn nothing_cites_the_spec_outside_the_repository() {
    // Built at run time, so that this file does not cite it.
    let outside = ["shared", "spec"].join("/");
    let files = names::repo_text_files();
    let mut bad = Vec::new();
    for (f, text) in &files {
        for (n, line) in text.lines().enumerate() {
            if line.contains(&outside) {
                bad.push(format!("{f}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "citations of `{outside}` (outside the repository; cite docs/protocol.md):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn cited_protocol_sections_exist() {
    let sections = names::protocol_sections();
    for s in ["2", "3", "4", "5", "6", "6.1"] {
        assert!(sections.contains(s), "docs/protocol.md has no heading for section {s}");
    }
    let files = names::repo_text_files();
    let cites = names::section_citations(&files);
    assert!(cites.len() > 30, "found only {} section citations", cites.len());
    let bad: Vec<String> = cites
        .iter()
        .filter(|(_, s)| !sections.contains(s))
        .map(|(at, s)| format!("{at}: §{s} is not a heading of docs/protocol.md"))
        .collect();
    assert!(
        bad.is_empty(),
        "docs/protocol.md sections cited but missing (headings: {sections:?}):\n  {}",
        bad.join("\n  ")
    );
    println!("NAMES sections: {} citations of {} sections checked", cites.len(), sections.len());
}
