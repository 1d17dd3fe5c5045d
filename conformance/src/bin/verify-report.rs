//! Writes the HTML report of `ci/verify` / `ci/test`: `<out>/index.html` (see
//! `aioctx_conformance::report`), with a message-sequence chart of every planted bug's
//! counterexample: spin's trails (`<summary>/trails/`), the Rust model's explorer counterexamples,
//! and every `*.trace` file (`aioctx_conformance::msc`'s input format) under the `--traces`
//! directories (default: `<summary>/traces` (loom's and shuttle's failing executions of the planted
//! bugs, which `ci/verify` copies from `target/<checker>/traces/`) and `target/workloads`, each if it
//! exists).
//!
//! Usage: `verify-report --summary DIR --out DIR [--traces DIR]...`
//! Exits 1 (after writing the report, which names them) when a chart could not be built, 2 on a
//! bad argument.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use aioctx_conformance::msc::Chart;
use aioctx_conformance::report::{self, Inputs};

/// The most steps a chart shows (longer runs keep their start and their end).
const MAX_STEPS: usize = 120;

fn main() -> ExitCode {
    let mut summary = None;
    let mut out = None;
    let mut traces = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |what: &str| {
            args.next().map(PathBuf::from).ok_or_else(|| format!("{a} needs a {what}"))
        };
        let r = match a.as_str() {
            "--summary" => val("directory").map(|v| summary = Some(v)),
            "--out" => val("directory").map(|v| out = Some(v)),
            "--traces" => val("directory").map(|v| traces.push(v)),
            _ => Err(format!("unknown argument: {a}")),
        };
        if let Err(e) = r {
            eprintln!("verify-report: {e}\nusage: verify-report --summary DIR --out DIR [--traces DIR]...");
            return ExitCode::from(2);
        }
    }
    let (Some(summary), Some(out)) = (summary, out) else {
        eprintln!("usage: verify-report --summary DIR --out DIR [--traces DIR]...");
        return ExitCode::from(2);
    };
    let root = aioctx_conformance::root();
    if traces.is_empty() {
        traces = [summary.join("traces"), root.join("target/workloads")]
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
    }
    let mut inp = Inputs { summary: summary.clone(), root, ..Inputs::default() };
    let (mut spin, mut model, mut work) = (0, 0, 0);
    // One chart per planted bug of each model: its shortest trail (spin's safety search is
    // breadth-first, so that one is a shortest counterexample when the bug is a safety violation).
    let mut best: BTreeMap<(String, String), Chart> = BTreeMap::new();
    for t in report::trails_in(&summary.join("trails")) {
        if !t.variant.contains("BUG_") {
            continue;
        }
        match Chart::from_spin_trail(&t) {
            Ok(c) => {
                let k = (t.model.clone(), t.variant.clone());
                if best.get(&k).is_none_or(|b| c.events.len() < b.events.len()) {
                    best.insert(k, c);
                }
            }
            Err(e) => inp.errors.push(e.to_string()),
        }
    }
    for (_, mut c) in best {
        c.elide(MAX_STEPS);
        inp.charts.push(c);
        spin += 1;
    }
    let trails = report::trails_in(&summary.join("trails"));
    let replayed = {
        let _g = aioctx_conformance::serial();
        report::replay_charts(&trails)
    };
    let real = replayed.len();
    inp.charts.extend(replayed);
    for c in report::model_counterexamples() {
        inp.charts.push(c);
        model += 1;
    }
    match report::workload_charts(&traces) {
        Ok(v) => {
            work = v.len();
            inp.charts.extend(v.into_iter().map(|mut c| {
                c.elide(MAX_STEPS);
                c
            }));
        }
        Err(e) => inp.errors.push(e.to_string()),
    }
    let html = report::render(&inp);
    let index = out.join("index.html");
    if let Err(e) = std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&index, html)) {
        eprintln!("verify-report: {}: {e}", index.display());
        return ExitCode::from(1);
    }
    println!(
        "report: {}: {} charts (spin {spin}, real code replaying them {real}, Rust model {model}, trace files {work})",
        index.display(),
        inp.charts.len()
    );
    if !inp.errors.is_empty() {
        for e in &inp.errors {
            eprintln!("verify-report: chart failed: {e}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
