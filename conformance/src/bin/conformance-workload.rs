//! Runs and shrinks one generated workload program (issue 14) in processes of its own. A run on a
//! real kernel that stays blocked past every notify cannot end (the home thread is in the kernel's
//! wait), so the watchdog writes the program to a file and aborts the process
//! (`aioctx_conformance::workload::hang_path`); this tool reruns and shrinks it, one child process
//! per candidate, as the generated tests shrink every other failure in-process.
//!
//! Usage:
//!   conformance-workload run FILE [--watchdog-secs N] [--chart OUT]
//!       run once where FILE's first line says; exit 0 if the oracle accepts the run, 1 if it
//!       rejects it (the report and a regression test on stdout; with --chart, rerun with the
//!       protocol steps recorded and written to OUT, a counterexample chart's input); a hang aborts
//!       the process.
//!   conformance-workload shrink FILE [--budget N] [--watchdog-secs N]
//!       shrink FILE's program greedily (`Program::shrink`, at most N candidates, default 400): a
//!       candidate fails if its child run does not exit 0 (a rejection or a hang); writes the
//!       minimal program to FILE.min, its chart to FILE.trace unless it hangs, and prints the last
//!       child's report. Exit 0 when FILE fails
//!       (shrunk), 1 when it does not fail at all, 2 on a bad argument or file.
//! `AIOCTX_BUG` (a planted bug, this crate's `planted-bugs` feature) passes to the children.
//! The watchdog's limit (after the remote threads finished) is N seconds, default 5 (a run takes
//! milliseconds; the generated tests use 20).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use aioctx_conformance::workload::{decode_where, env, how, write_chart, Where};
use aioctx_model::workload::run::{run, Watchdog};
use aioctx_model::workload::Program;

struct Args {
    cmd: String,
    file: PathBuf,
    budget: usize,
    watchdog_secs: u64,
    chart: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let cmd = a.next().ok_or("no command (run or shrink)")?;
    let file = PathBuf::from(a.next().ok_or("no FILE")?);
    let (mut budget, mut watchdog_secs, mut chart) = (400, 5, None);
    while let Some(flag) = a.next() {
        let v = a.next().ok_or(format!("{flag} needs a value"))?;
        let n = || v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--budget" => budget = n()? as usize,
            "--watchdog-secs" => watchdog_secs = n()?,
            "--chart" => chart = Some(PathBuf::from(&v)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Args { cmd, file, budget, watchdog_secs, chart })
}

/// FILE: where to run (first line), then the program.
fn read(file: &Path) -> Result<(String, Where, Program), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let w = decode_where(head).map_err(|e| format!("{}: {e}", file.display()))?;
    let p = Program::decode(body).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((head.to_string(), w, p))
}

/// Run `p` here; true if the oracle accepted the run. A rejected run is rerun recorded for
/// `chart`, if given.
fn run_here(p: &Program, w: Where, secs: u64, chart: Option<&Path>) -> Result<bool, String> {
    let mut e = env(w);
    if !matches!(w, Where::Model(_)) {
        e.watchdog = Watchdog::Seconds(secs);
    }
    e.hang_file = None; // the parent has the program
    let out = run(p, &e);
    match &out.result {
        Ok(_) => println!("accepted: {} operations", p.len()),
        Err(_) => println!(
            "{}\nregression test (paste into conformance/tests/workloads.rs):\n{}",
            out.report(p),
            p.regression_test("regression", &how(w))
        ),
    }
    if let (Err(_), Some(path)) = (&out.result, chart) {
        let _g = aioctx_conformance::serial();
        match write_chart(p, w, path) {
            Ok(true) => println!("chart: {}", path.display()),
            Ok(false) => println!("no chart: the recorded rerun passed"),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(out.result.is_ok())
}

/// Run `p` in a child process; its output, and true if it failed (rejected, or hung and aborted).
fn run_child(
    head: &str,
    p: &Program,
    file: &Path,
    secs: u64,
    chart: Option<&Path>,
) -> Result<(bool, String), String> {
    std::fs::write(file, format!("{head}\n{}", p.encode()))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(me);
    cmd.arg("run").arg(file).args(["--watchdog-secs", &secs.to_string()]);
    if let Some(c) = chart {
        cmd.arg("--chart").arg(c);
    }
    let out = cmd.output().map_err(|e| format!("running a child: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((!out.status.success(), format!("{}\n{text}", out.status)))
}

fn shrink(a: &Args) -> Result<bool, String> {
    let (head, w, p) = read(&a.file)?;
    let cand = a.file.with_extension("candidate");
    let (fails, _) = run_child(&head, &p, &cand, a.watchdog_secs, None)?;
    if !fails {
        println!(
            "{}: the program does not fail here (run it again, or on a busier machine)",
            a.file.display()
        );
        return Ok(false);
    }
    let mut error = None;
    let min = p.shrink(a.budget, |q| match run_child(&head, q, &cand, a.watchdog_secs, None) {
        Ok((f, _)) => f,
        Err(e) => {
            error.get_or_insert(e);
            false
        }
    });
    if let Some(e) = error {
        return Err(e);
    }
    let chart = a.file.with_extension("trace");
    let (_, report) = run_child(&head, &min, &cand, a.watchdog_secs, Some(&chart))?;
    let _ = std::fs::remove_file(&cand);
    let out = a.file.with_extension("min");
    std::fs::write(&out, format!("{head}\n{}", min.encode()))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "shrunk from {} to {} operations ({} to {} remote threads): {}\nits last run: {report}\n\
         regression test (paste into conformance/tests/workloads.rs):\n{}",
        p.len(),
        min.len(),
        p.remotes.len(),
        min.remotes.len(),
        out.display(),
        min.regression_test("regression", &how(w))
    );
    Ok(true)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("conformance-workload: {e}\nusage: conformance-workload run|shrink FILE [--budget N] [--watchdog-secs N]");
            return ExitCode::from(2);
        }
    };
    let r = match a.cmd.as_str() {
        "run" => {
            read(&a.file).and_then(|(_, w, p)| run_here(&p, w, a.watchdog_secs, a.chart.as_deref()))
        }
        "shrink" => shrink(&a),
        c => Err(format!("unknown command {c} (run or shrink)")),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("conformance-workload: {e}");
            ExitCode::from(2)
        }
    }
}
