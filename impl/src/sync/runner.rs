//! `model(f)`: run a scenario under whichever checker the build selected, and count what it explored.
//!
//! | backend | what `model` does | knobs (environment) |
//! |---|---|---|
//! | loom | `loom::model::Builder`: every interleaving up to the preemption bound | `LOOM_MAX_PREEMPTIONS` (we default it to 2), never a duration/permutation cap |
//! | shuttle | PCT (default) or random scheduler from a fixed seed | `AIOCTX_SHUTTLE_SCHED=pct\|random`, `AIOCTX_SHUTTLE_ITERS`, `AIOCTX_SHUTTLE_SEED`, `AIOCTX_SHUTTLE_DEPTH` |
//! | std | the scenario on real threads, repeatedly | `AIOCTX_STRESS_ITERS` |
//!
//! A run that explores zero executions panics: a checker that ran nothing proves nothing.
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
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let body = move || {
        f();
        c.fetch_add(1, Ordering::Relaxed);
    };
    let (checker, bound) =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(body))) {
            Ok(r) => r,
            Err(p) => name_the_property(p),
        };
    let executions = count.load(Ordering::Relaxed);
    assert!(executions > 0, "model run explored zero executions ({checker})");
    ModelReport { checker, executions, bound }
}

/// Re-raise a checker's failure naming the violated property, so every checker reports the same
/// strings as the Promela models: a deadlock (every thread blocked, some forever in a wait) is a lost
/// wakeup; running out of branches (a loop that never blocks nor finishes) is a busy loop.
fn name_the_property(p: Box<dyn std::any::Any + Send>) -> ! {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    let lower = msg.to_lowercase();
    if lower.contains("deadlock") {
        panic!("p_no_lost_wakeup violated: every thread is blocked: {msg}");
    }
    if lower.contains("maximum number of branches") || lower.contains("exceeded max_steps") {
        panic!("p_no_busy_loop violated: the execution never settles: {msg}");
    }
    std::panic::resume_unwind(p)
}

/// [`model`], printing one machine-readable line `MODEL <name> <checker> bound=<b> executions=<n>` that
/// the verification scripts collect into their tables.
pub fn model_named<F>(name: &str, f: F) -> ModelReport
where
    F: Fn() + Send + Sync + 'static,
{
    let r = model(f);
    println!("MODEL {name} {} bound={} executions={}", r.checker, r.bound, r.executions);
    r
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
