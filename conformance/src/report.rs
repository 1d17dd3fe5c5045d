//! The HTML report of `ci/verify` (and `ci/test`): `target/verify/index.html`.
//!
//! Built from what the run left in its summary directory (`target/verify/summary/`, or a merge of
//! the shards' ones): the final table (ci/lib.sh columns), spin's runs (states per model and
//! property), the planted bugs and who caught them, the mutation kill rates (this run's and
//! `mutants/RESULTS.tsv`, the last full run), and a message-sequence chart ([`crate::msc`]) of every
//! planted bug's counterexample: spin's trails, the Rust model's explorer counterexamples (computed
//! here: the explorer is exhaustive and takes well under a second per scenario), and any `*.trace`
//! file of the documented input format (a shrunk generated workload) in the given directories.
//! Step names link to the code line that records them (`impl/src`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use aioctx::trace::Step;
use aioctx_model::{explore, Bug, Property, Scenario};

use crate::msc::{esc, Chart};
use crate::spin::Trail;

/// The Rust model's planted bugs and the scenario whose exploration shows each (as
/// `model/tests/explore.rs` does).
pub fn model_counterexamples() -> Vec<Chart> {
    let cases: Vec<(Scenario, Bug, Property)> = vec![
        (Scenario::notify_vs_blocking_poll(), Bug::PollNoRecheckNotified, Property::NoLostWakeup),
        (Scenario::notify_vs_blocking_poll(), Bug::AcceptAfterScan, Property::NoLostWakeup),
        (
            Scenario::bh_schedule_twice_vs_external_loop().without_prepare_recheck(),
            Bug::SkipEventWhenNotified,
            Property::NoLostWakeup,
        ),
        (Scenario::two_pollers_external_and_poll(), Bug::DrainAfterScan, Property::NoLostWakeup),
        (Scenario::bh_schedule_vs_blocking_poll(), Bug::NoEventDrain, Property::NoBusyLoop),
    ];
    let mut v = Vec::new();
    for (sc, bug, p) in cases {
        let sc = sc.with_bug(bug);
        let e = explore(&sc);
        let viol = e.violation(p).unwrap_or_else(|| {
            panic!("{}: {p} no longer violated: model/tests/explore.rs fails too", sc.name)
        });
        v.push(Chart::from_violation(&sc, viol));
    }
    v
}

/// Where each step is recorded in impl/src (its first `Step::X` outside a comment), for links.
#[derive(Debug, Default)]
pub struct CodeLinks {
    map: BTreeMap<String, (String, usize)>,
    prefix: String,
}

impl CodeLinks {
    /// Scan `root`'s impl/src; links are relative to `prefix` (from the report's
    /// directory to the repository root).
    pub fn scan(root: &Path, prefix: &str) -> CodeLinks {
        let mut map = BTreeMap::new();
        let mut files = Vec::new();
        collect(&root.join("impl/src"), "rs", &mut files);
        files.sort();
        for f in &files {
            let Ok(text) = std::fs::read_to_string(f) else { continue };
            let rel = f.strip_prefix(root).unwrap_or(f).to_string_lossy().into_owned();
            for (n, line) in text.lines().enumerate() {
                for s in Step::ALL {
                    let key = s.as_str().to_string();
                    if map.contains_key(&key) {
                        continue;
                    }
                    if line.contains(&format!("Step::{s:?}"))
                        && !line.trim_start().starts_with("//")
                    {
                        map.insert(key, (rel.clone(), n + 1));
                    }
                }
            }
        }
        CodeLinks { map, prefix: prefix.to_string() }
    }

    /// The link of a step label (`<prefix>impl/src/notify.rs#L83`), if it is recorded in impl/src.
    pub fn link(&self, label: &str) -> Option<String> {
        self.map.get(label).map(|(f, n)| format!("{}{f}#L{n}", self.prefix))
    }

    /// `file:line` of a step.
    pub fn place(&self, label: &str) -> Option<String> {
        self.map.get(label).map(|(f, n)| format!("{f}:{n}"))
    }

    /// How many steps have a link.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if no step was found.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

fn read_tsv(p: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

/// The spin trails in `dir` (`<model>__<variant>__<property>.replay.txt`).
pub fn trails_in(dir: &Path) -> Vec<Trail> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return v };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".replay.txt") else { continue };
        let parts: Vec<&str> = stem.split("__").collect();
        if parts.len() != 3 {
            continue;
        }
        v.push(Trail {
            model: parts[0].into(),
            variant: parts[1].into(),
            property: parts[2].into(),
            replay: std::fs::read_to_string(e.path()).unwrap_or_default(),
        });
    }
    v.sort_by(|a, b| (&a.model, &a.variant, &a.property).cmp(&(&b.model, &b.variant, &b.property)));
    v
}

/// The `*.trace` files (documented input format) in `dirs`, sorted by path.
///
/// # Errors
///
/// A file that cannot be read or parsed (with its path).
pub fn workload_charts(dirs: &[PathBuf]) -> io::Result<Vec<Chart>> {
    let mut files = Vec::new();
    for d in dirs {
        collect(d, "trace", &mut files);
    }
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
            Chart::parse(&text)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))
        })
        .collect()
}

/// What goes into the report.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The summary directory (ci/verify's `target/verify/summary/`).
    pub summary: PathBuf,
    /// The repository root (for mutants/RESULTS.tsv and the code links).
    pub root: PathBuf,
    /// Charts to draw, in order.
    pub charts: Vec<Chart>,
    /// Charts that could not be built, with the reason (shown, and counted as a failure by the
    /// caller).
    pub errors: Vec<String>,
}

const COLS: [&str; 6] = ["model", "checker", "explored", "properties", "planted bugs caught", "s"];

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let cls = match c.as_str() {
                "CAUGHT" | "ok" | "passed" | "killed" => " class=\"good\"",
                "FAIL" | "FAILED" | "missed" | "survived" => " class=\"bad\"",
                _ => "",
            };
            let _ = write!(out, "<td{cls}>{}</td>", esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// Render the report. Returns the HTML.
pub fn render(inp: &Inputs) -> String {
    let links = CodeLinks::scan(&inp.root, "../../");
    let mut h = String::new();
    h.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>aioctx: ci/verify report</title>\n<style>\n\
         body{font-family:sans-serif;margin:24px;color:#111;background:#fff}\n\
         table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}\n\
         td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}\n\
         th{background:#e8eef8} td.good{background:#dff3df} td.bad{background:#f8d8d8}\n\
         .chart{margin:14px 0 30px;overflow-x:auto;border:1px solid #ddd;padding:6px}\n\
         h2{border-bottom:2px solid #335;padding-bottom:3px}\n\
         </style></head><body>\n<h1>aioctx: the verification report</h1>\n",
    );
    let run = read_tsv(&inp.summary.join("run.tsv"));
    if let Some(r) = run.first() {
        let _ = writeln!(
            h,
            "<p id=\"run\">run: <b>{}</b>, shard {}, commit {}, result <b>{}</b></p>",
            esc(r.first().map_or("?", |s| s)),
            esc(r.get(1).map_or("?", |s| s)),
            esc(r.get(2).map_or("?", |s| s)),
            esc(r.get(3).map_or("?", |s| s))
        );
    }

    // 1. The final table.
    h.push_str("<h2 id=\"summary\">Summary: every checker</h2>\n");
    let mut rows = Vec::new();
    for c in ["std", "spin", "loom", "shuttle", "miri", "conformance", "mutants"] {
        rows.extend(read_tsv(&inp.summary.join(format!("{c}.tsv"))));
    }
    if rows.is_empty() {
        h.push_str("<p>(no summary table in this run)</p>\n");
    } else {
        table(&mut h, &COLS, &rows);
    }

    // 2. States per model (spin) and per scenario (the Rust model).
    h.push_str("<h2 id=\"states\">States and executions per model</h2>\n");
    let spin = read_tsv(&inp.summary.join("spin-runs.tsv"));
    if spin.len() > 1 {
        let rows: Vec<Vec<String>> =
            spin[1..].iter().map(|r| r.iter().take(8).cloned().collect()).collect();
        h.push_str("<h3>spin (promela/)</h3>\n");
        table(
            &mut h,
            &["model", "property", "defines", "states", "depth", "s", "errors", "result"],
            &rows,
        );
    }
    let mut rows = Vec::new();
    for sc in Scenario::named() {
        let e = explore(&sc);
        rows.push(vec![
            sc.name.clone(),
            e.states.to_string(),
            e.transitions.to_string(),
            if e.ok() { "passed".into() } else { "FAILED".into() },
        ]);
    }
    h.push_str("<h3>The Rust model's explorer (exhaustive)</h3>\n");
    table(&mut h, &["scenario", "states", "transitions", "result"], &rows);
    let exec: Vec<Vec<String>> = ["loom", "shuttle"]
        .iter()
        .flat_map(|c| read_tsv(&inp.summary.join(format!("{c}.tsv"))))
        .map(|r| r.into_iter().take(3).collect())
        .collect();
    if !exec.is_empty() {
        h.push_str("<h3>loom and shuttle over the real code</h3>\n");
        table(&mut h, &["scenario", "checker", "executions"], &exec);
    }

    // 3. Planted bugs.
    h.push_str("<h2 id=\"bugs\">Planted bugs and who catches them</h2>\n");
    let mut by_bug: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in ["spin", "loom", "shuttle", "miri", "conformance"] {
        for r in read_tsv(&inp.summary.join(format!("{c}.tsv"))) {
            if r.len() < 5 || r[4] == "-" {
                continue;
            }
            for b in r[4].split(',') {
                let b = b.trim();
                let b = b.split(" (").next().unwrap_or(b);
                let name = b.split('/').next().unwrap_or(b).to_string();
                by_bug.entry(name).or_default().push(format!("{} {}", r[1], r[0]));
            }
        }
    }
    let rows: Vec<Vec<String>> = by_bug
        .iter()
        .map(|(b, v)| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            vec![b.clone(), v.len().to_string(), v.join("; ")]
        })
        .collect();
    table(&mut h, &["planted bug (or spin variant)", "catches", "caught by"], &rows);

    // 4. Mutation kill rates.
    h.push_str("<h2 id=\"mutants\">Mutants: kill rates</h2>\n");
    if let Ok(s) = std::fs::read_to_string(inp.summary.join("mutants-run.txt")) {
        for l in s.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 5 {
                let _ = writeln!(
                    h,
                    "<p class=\"rate\">this run: {} killed, {} survived, {} equivalent, {} unviable: kill rate <b>{}%</b></p>",
                    f[0], f[1], f[2], f[3], f[4]
                );
            }
        }
    }
    let res = read_tsv(&inp.root.join("mutants/RESULTS.tsv"));
    let mut per: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for r in res.iter().skip(1) {
        if r.len() < 6 {
            continue;
        }
        let e = per.entry(r[2].clone()).or_default();
        match r[5].as_str() {
            "killed" | "timeout" => e[0] += 1, // a hang past the budget is a kill
            "survived" | "uncovered" => e[1] += 1,
            _ => e[2] += 1,
        }
    }
    let rows: Vec<Vec<String>> = per
        .iter()
        .map(|(f, [k, s, o])| {
            let rate = if k + s > 0 {
                format!("{:.0}%", 100.0 * *k as f64 / (k + s) as f64)
            } else {
                "-".into()
            };
            vec![f.clone(), k.to_string(), s.to_string(), o.to_string(), rate]
        })
        .collect();
    h.push_str("<h3>The last full run, ordering and logic mutants (mutants/RESULTS.tsv; survivors are argued in mutants/EQUIVALENT.md or SURVIVORS.md)</h3>\n");
    table(&mut h, &["file", "killed", "survived", "equivalent", "kill rate"], &rows);
    let rows: Vec<Vec<String>> = res
        .iter()
        .skip(1)
        .filter(|r| r.len() >= 7)
        .map(|r| {
            vec![
                r[1].clone(),
                format!("{}:{}", r[2], r[3]),
                r[4].clone(),
                r[5].clone(),
                r[6].clone(),
            ]
        })
        .collect();
    // Folded: a full run has hundreds of rows, and the charts come after it.
    let _ = writeln!(
        h,
        "<details><summary>every mutant of that run ({}): line, mutation, verdict, the test that killed it</summary>",
        rows.len()
    );
    table(&mut h, &["mutant", "line", "mutation", "verdict", "killed by"], &rows);
    h.push_str("</details>\n");

    // 5. The charts.
    let _ = writeln!(
        h,
        "<h2 id=\"charts\">Counterexamples: {} message-sequence charts</h2>\n<p>One lifeline per thread; each step is its Promela label (linked to the code line that records it) with the values it read or wrote; the columns on the right are the shared state after each step (bold: changed by that step). The violating step is boxed in red; a busy loop's cycle is shaded.</p>",
        inp.charts.len()
    );
    for e in &inp.errors {
        let _ = writeln!(h, "<p class=\"error\" style=\"color:#c00\">chart failed: {}</p>", esc(e));
    }
    let mut index = String::from("<ul id=\"chart-index\">\n");
    let mut body = String::new();
    for (i, c) in inp.charts.iter().enumerate() {
        let _ = writeln!(
            index,
            "<li><a href=\"#chart-{i}\">{}</a> ({})</li>",
            esc(&c.title),
            esc(&c.checker)
        );
        let _ = writeln!(
            body,
            "<div class=\"chart\" id=\"chart-{i}\"><p><b>{}</b> [{}]{}</p>\n{}\n</div>",
            esc(&c.title),
            esc(&c.checker),
            c.violation
                .and_then(|v| c.events.get(v))
                .and_then(|e| links
                    .place(&e.label)
                    .map(|p| format!(" (violating step recorded at <code>{}</code>)", esc(&p))))
                .unwrap_or_default(),
            c.svg(&|l| links.link(l))
        );
    }
    index.push_str("</ul>\n");
    h.push_str(&index);
    h.push_str(&body);
    h.push_str("</body></html>\n");
    h
}

/// The real code against each liftable planted bug's shortest spin counterexample (notify.pml,
/// bh.pml, external.pml; lifted to the implementation's shape by [`crate::lift`] and replayed on
/// the real code by [`crate::replay`], whose steps are gated and recorded through impl's `trace`
/// feature). Without a planted bug (as `ci/verify` runs it), the real code must leave the buggy trail:
/// the chart boxes the step where it does, which is what the fence or re-check the bug removes
/// prevents. With the bug planted it follows the trail into the hang, boxed at the end.
/// Trails the Rust model cannot take (weak memory, a Promela-only shape) are skipped. The caller
/// holds [`crate::serial`].
pub fn replay_charts(trails: &[Trail]) -> Vec<Chart> {
    use crate::lift::{lift, Shape, Source};
    use crate::replay::{replay, Outcome};
    let mut v = Vec::new();
    for t in trails.iter().filter(|t| t.property == "safety" && t.variant.contains("BUG_")) {
        let Some(src) = Source::from_model(&t.model) else { continue };
        let Ok(l) = lift(src, &t.variant, &t.replay, Shape::Implementation) else { continue };
        let o = replay(&l.scenario, &l.trace);
        let mut c = Chart::from_trace(
            &format!(
                "the real code replaying promela/{}.pml {} (safety trail, lifted)",
                t.model, t.variant
            ),
            "conformance replay (real code, trace feature)",
            &l.trace,
        );
        c.name_threads(&l.scenario);
        c.bug = crate::lift::bug_of(&t.variant).map(|b| b.as_str().to_string());
        match o {
            Outcome::Diverged { index, got, .. } => {
                c.title =
                    format!("{}: the real code leaves the buggy run at step {index}", c.title);
                if index >= c.events.len() {
                    // The buggy run ends (blocked) where the real code goes on: draw the step the
                    // real code takes, `thread N is AtGate(Step)`, as the boxed one.
                    let next = got.split_once("thread ").and_then(|(_, r)| {
                        let (n, r) = r.split_once(' ')?;
                        let step = r.split_once("AtGate(")?.1.split(')').next()?;
                        let step = Step::ALL.iter().find(|s| format!("{s:?}") == step)?;
                        Some((n.parse::<usize>().ok()?, step.as_str()))
                    });
                    let (thread, label) = next.unwrap_or((0, "(the real code goes on)"));
                    c.events.push(crate::msc::Event {
                        thread,
                        label: format!("{label}  <- the real code; the buggy run blocks before it"),
                        values: Vec::new(),
                        env: false,
                    });
                }
                c.violation = Some(index.min(c.events.len() - 1));
                c.note = format!("the real code (boxed step): {got}");
            }
            Outcome::Followed { hang: true, steps, .. } => {
                c.property = Some("p_no_lost_wakeup (hang reproduced on the real code)".into());
                c.violation = c.events.len().checked_sub(1);
                c.note =
                    format!("followed all {steps} steps; the poller is blocked with work pending");
            }
            Outcome::Followed { steps, .. } => {
                c.note = format!("followed all {steps} steps, no hang");
            }
            Outcome::NotReplayable(_) => continue,
        }
        v.push(c);
    }
    v
}
