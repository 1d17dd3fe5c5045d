//! `model(f)`: run a scenario under whichever checker the build selected, and count what it explored.
//!
//! | backend | what `model` does | knobs (environment) |
//! |---|---|---|
//! | loom | `loom::model::Builder`: every interleaving up to the preemption bound | `LOOM_MAX_PREEMPTIONS` (we default it to 2), never a duration/permutation cap |
//! | shuttle | PCT (default) or random scheduler from a fixed seed | `AIOCTX_SHUTTLE_SCHED=pct\|random`, `AIOCTX_SHUTTLE_ITERS`, `AIOCTX_SHUTTLE_SEED`, `AIOCTX_SHUTTLE_DEPTH` |
//! | std | the scenario on real threads, repeatedly | `AIOCTX_STRESS_ITERS` |
//!
//! A run that explores zero executions panics: a checker that ran nothing proves nothing.
//!
//! # Counterexample traces (loom and shuttle with impl's `trace` feature)
//!
//! Built with `--features aioctx/trace` under `--cfg aioctx_loom` or `--cfg aioctx_shuttle`, the
//! runner starts the step recorder (`crate::trace`) at the start of every execution, and when a run
//! fails it writes the failing execution's steps as a `*.trace` file, the input format of
//! `conformance/src/msc.rs` (a message-sequence chart in the `ci/verify` report):
//! `<dir>/<scenario>[.<bug>].trace`, where `<dir>` is `$AIOCTX_TRACE_DIR`, by default
//! `target/<loom|shuttle>/traces/` of the workspace (what `ci/loom` and `ci/shuttle` use and
//! `ci/verify` collects), `<scenario>` the [`model_named`] name up to its first `/` (else the test
//! thread's name; of several failures under one name the last one's file stays) and
//! `<bug>` `$AIOCTX_BUG` (the planted bug of the run: `planted!` in lib.rs). Its directives: the title
//! (scenario, checker, bug), the checker, the threads (`home` is the model's main thread, the
//! others `remote <n>` in the order they first recorded), the property named by the panic (see
//! `name_the_property`; else the first `p_...` in the message), the violation at the last step, and
//! the panic message as a note. An execution that recorded no step writes nothing. Without the
//! feature none of this is compiled: the same executions, no cost.
#![allow(clippy::disallowed_types)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a [`model`] run explored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelReport {
    /// "loom", "shuttle-pct", "shuttle-random" or "std".
    pub checker: &'static str,
    /// Executions (interleavings, schedules or real runs) that ran to completion.
    pub executions: usize,
    /// The preemption bound (loom), depth (shuttle PCT) or 0.
    pub bound: usize,
}

#[cfg_attr(aioctx_loom, allow(dead_code))]
fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run `f` under the selected checker; see the module docs. Panics if nothing was explored.
pub fn model<F>(f: F) -> ModelReport
where
    F: Fn() + Send + Sync + 'static,
{
    run_model(None, f)
}

fn run_model<F>(name: Option<&str>, f: F) -> ModelReport
where
    F: Fn() + Send + Sync + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let body = move || {
        // Every execution starts a fresh log: after a failure it holds the failing one only.
        #[cfg(all(feature = "trace", any(aioctx_loom, aioctx_shuttle)))]
        crate::trace::start();
        f();
        c.fetch_add(1, Ordering::Relaxed);
    };
    let (checker, bound) =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(body))) {
            Ok(r) => r,
            Err(p) => {
                let msg = panic_message(&p);
                #[cfg(all(feature = "trace", any(aioctx_loom, aioctx_shuttle)))]
                failure_trace::write(name, &msg);
                let _ = name;
                name_the_property(p, &msg)
            }
        };
    let executions = count.load(Ordering::Relaxed);
    assert!(executions > 0, "model run explored zero executions ({checker})");
    ModelReport { checker, executions, bound }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The property a checker's own failure message means (see [`name_the_property`]), if any.
fn property_of_checker_failure(msg: &str) -> Option<(&'static str, &'static str)> {
    let lower = msg.to_lowercase();
    if lower.contains("deadlock") {
        return Some(("p_no_lost_wakeup", "every thread is blocked"));
    }
    if lower.contains("maximum number of branches") || lower.contains("exceeded max_steps") {
        return Some(("p_no_busy_loop", "the execution never settles"));
    }
    None
}

/// Re-raise a checker's failure naming the violated property, so every checker reports the same
/// strings as the Promela models: a deadlock (every thread blocked, some forever in a wait) is a lost
/// wakeup; running out of branches (a loop that never blocks nor finishes) is a busy loop.
fn name_the_property(p: Box<dyn std::any::Any + Send>, msg: &str) -> ! {
    match property_of_checker_failure(msg) {
        Some((property, what)) => panic!("{property} violated: {what}: {msg}"),
        None => std::panic::resume_unwind(p),
    }
}

/// [`model`], printing one machine-readable line `MODEL <name> <checker> bound=<b> executions=<n>` that
/// the verification scripts collect into their tables.
pub fn model_named<F>(name: &str, f: F) -> ModelReport
where
    F: Fn() + Send + Sync + 'static,
{
    let r = run_model(Some(name), f);
    println!("MODEL {name} {} bound={} executions={}", r.checker, r.bound, r.executions);
    r
}

/// The planted bugs of the implementation: the `aioctx_bug` values of the workspace Cargo.toml
/// (model/tests/explore.rs checks that the lists agree).
pub const PLANTED_BUGS: &[&str] = &[
    "notify_no_seqcst_fence",
    "poll_no_fence_after_arm",
    "notify_me_rmw_instead_of_fence",
    "poll_no_recheck_notified",
    "skip_event_when_notified",
    "accept_after_scan",
    "no_final_poll_after_poll_end",
    "drain_after_scan",
    "task_clears_woken_after_poll",
];

/// Whether `AIOCTX_BUG` names the planted bug `name` (see `planted!`): read once per process, in a
/// model-checker build or with the test-only `planted-bugs` feature; panics on a name that is not
/// in [`PLANTED_BUGS`] (a typo must not run the correct code and report every bug "not caught").
/// It is a plain std read, invisible to loom and shuttle: a run-time bug explores the same
/// executions as its `--cfg` build.
#[cfg(any(aioctx_loom, aioctx_shuttle, feature = "planted-bugs"))]
pub fn planted_at_run_time(name: &str) -> bool {
    static BUG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let bug = BUG.get_or_init(|| {
        let b = std::env::var("AIOCTX_BUG").ok().filter(|b| !b.is_empty())?;
        assert!(
            PLANTED_BUGS.contains(&b.as_str()),
            "AIOCTX_BUG={b}: not a planted bug (one of {})",
            PLANTED_BUGS.join(", ")
        );
        Some(b)
    });
    bug.as_deref() == Some(name)
}

/// Elsewhere no bug is planted at run time.
#[cfg(not(any(aioctx_loom, aioctx_shuttle, feature = "planted-bugs")))]
#[inline(always)]
pub const fn planted_at_run_time(_name: &str) -> bool {
    false
}

/// The failing execution's `*.trace` file (see the module docs).
#[cfg(all(feature = "trace", any(aioctx_loom, aioctx_shuttle)))]
mod failure_trace {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    /// The checker's name as [`super::ModelReport::checker`] spells it.
    fn checker() -> &'static str {
        if cfg!(aioctx_loom) {
            "loom"
        } else if std::env::var("AIOCTX_SHUTTLE_SCHED").as_deref() == Ok("random") {
            "shuttle-random"
        } else {
            "shuttle-pct"
        }
    }

    /// `$AIOCTX_TRACE_DIR`, else the workspace's `target/<loom|shuttle>/traces`.
    pub(super) fn dir() -> PathBuf {
        match std::env::var_os("AIOCTX_TRACE_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join(if cfg!(aioctx_loom) { "loom" } else { "shuttle" })
                .join("traces"),
        }
    }

    /// The first `p_<name>` word of `msg`.
    fn property_in(msg: &str) -> Option<&str> {
        let i = msg
            .match_indices("p_")
            .map(|(i, _)| i)
            .find(|&i| i == 0 || !msg.as_bytes()[i - 1].is_ascii_alphanumeric())?;
        let len = msg[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(msg.len() - i);
        Some(&msg[i..i + len]).filter(|p| p.len() > 2)
    }

    fn clean(s: &str) -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_-".contains(c) { c } else { '_' })
            .collect()
    }

    /// The file's text: directives, then one `<thread> <label> k=v ...` line per step.
    pub(super) fn text(
        scenario: &str,
        checker: &str,
        bug: Option<&str>,
        msg: &str,
        events: &[crate::trace::TraceEvent],
    ) -> String {
        let property = super::property_of_checker_failure(msg)
            .map(|(p, _)| p)
            .or_else(|| property_in(msg))
            .unwrap_or("panic");
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut t = String::new();
        let bug_part = bug.map(|b| format!(", planted bug {b}")).unwrap_or_default();
        let _ = writeln!(t, "#! title {scenario} under {checker}{bug_part}: {property} violated");
        let _ = writeln!(t, "#! checker {checker} (real code, trace feature)");
        let threads = events.iter().map(|e| e.thread + 1).max().unwrap_or(1);
        for n in 0..threads {
            let name = if n == 0 { "home".to_string() } else { format!("remote {n}") };
            let _ = writeln!(t, "#! thread {n} {name}");
        }
        let _ = writeln!(t, "#! property {property}");
        if let Some(b) = bug {
            let _ = writeln!(t, "#! bug {b}");
        }
        let _ = writeln!(t, "#! violation last");
        let mut note = match super::property_of_checker_failure(msg) {
            Some((p, what)) => format!("{p} violated: {what}: {}", one_line(msg)),
            None => one_line(msg),
        };
        if note.len() > 300 {
            let cut = (0..=300).rev().find(|&i| note.is_char_boundary(i)).unwrap_or(0);
            note.truncate(cut);
            note.push_str(" ...");
        }
        let _ = writeln!(t, "#! note the panic: {note}");
        for e in events {
            let _ = writeln!(t, "{e}");
        }
        t
    }

    /// Write the failing execution's log (the recorder holds it: nothing restarted it since).
    pub(super) fn write(name: Option<&str>, msg: &str) {
        let events = crate::trace::stop();
        let scenario = name
            .map(str::to_string)
            .or_else(|| {
                std::thread::current()
                    .name()
                    .map(|n| n.rsplit("::").next().unwrap_or(n).to_string())
            })
            .unwrap_or_else(|| "model".into());
        let bug = std::env::var("AIOCTX_BUG").ok().filter(|b| !b.is_empty());
        let dir = dir();
        // `name/detail` (a harness's runs of one test: `generated_workloads/seed7`, `.../shrink`)
        // writes the test's file: the last failure wins, a shrinking harness's smallest program.
        let stem = clean(scenario.split('/').next().unwrap_or(&scenario));
        let file = dir.join(match &bug {
            Some(b) => format!("{stem}.{}.trace", clean(b)),
            None => format!("{stem}.trace"),
        });
        if events.is_empty() {
            eprintln!(
                "TRACE {scenario}: the failing execution recorded no step; no {}",
                file.display()
            );
            return;
        }
        let text = text(&scenario, checker(), bug.as_deref(), msg, &events);
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text)) {
            Ok(()) => eprintln!("TRACE {scenario}: {} steps in {}", events.len(), file.display()),
            // The checker's failure is what the run reports; a chart that cannot be written is
            // said, not raised over it.
            Err(e) => eprintln!("TRACE {scenario}: cannot write {}: {e}", file.display()),
        }
    }
}

#[cfg(aioctx_loom)]
fn run<F: Fn() + Send + Sync + 'static>(body: F) -> (&'static str, usize) {
    let mut b = loom::model::Builder::new();
    // Builder::new() read LOOM_MAX_PREEMPTIONS; without it loom is unbounded, which does not finish
    // for our 3-thread scenarios. Bound it (the CI tier uses 2, the full tier 3), never cap by time.
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let bound = b.preemption_bound.unwrap_or(0);
    b.check(body);
    ("loom", bound)
}

#[cfg(aioctx_shuttle)]
fn run<F: Fn() + Send + Sync + 'static>(body: F) -> (&'static str, usize) {
    use shuttle::scheduler::{PctScheduler, RandomScheduler};
    let iters = env_usize("AIOCTX_SHUTTLE_ITERS", 1000);
    let seed = env_usize("AIOCTX_SHUTTLE_SEED", 0x5eed) as u64;
    let depth = env_usize("AIOCTX_SHUTTLE_DEPTH", 3);
    let cfg = shuttle::Config::new();
    match std::env::var("AIOCTX_SHUTTLE_SCHED").as_deref() {
        Ok("random") => {
            let s = RandomScheduler::new_from_seed(seed, iters);
            shuttle::Runner::new(s, cfg).run(body);
            ("shuttle-random", 0)
        }
        _ => {
            let s = PctScheduler::new_from_seed(seed, depth, iters);
            shuttle::Runner::new(s, cfg).run(body);
            ("shuttle-pct", depth)
        }
    }
}

#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
fn run<F: Fn() + Send + Sync + 'static>(body: F) -> (&'static str, usize) {
    for _ in 0..env_usize("AIOCTX_STRESS_ITERS", 100) {
        body();
    }
    ("std", 0)
}
