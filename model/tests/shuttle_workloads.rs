//! shuttle over the real code: generated workloads (`aioctx_model::workload`), each program run under
//! many schedules (PCT and random, as `support::shuttle_model` runs them), its log checked by the model of what
//! the caller sees (`workload::oracle`). A lost wake-up is a deadlock shuttle reports
//! (`p_no_lost_wakeup`); a broken result names its property. A failure prints the program as Rust
//! and the log; `ci/shuttle` prints shuttle's schedule string to replay it.
//!
//! Knobs: `AIOCTX_WORKLOAD_PROGRAMS` (programs per test, default 12), `AIOCTX_WORKLOAD_SEED` (first
//! program seed, default 0x5eed), and the shuttle runner's (`AIOCTX_SHUTTLE_ITERS`, ...: each
//! program runs that many schedules per scheduler).
//! Built only with `--cfg aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

use aioctx::Faults;
use aioctx_model::workload::run::{run, Env};
use aioctx_model::workload::{BhSpec, Nested, Op, Owner, Program, Size};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Run `AIOCTX_WORKLOAD_PROGRAMS` programs drawn from consecutive seeds under shuttle (each under
/// the runner's iterations per scheduler), `faults` injected by the model kernel. Programs without a
/// remote thread are skipped (shuttle's PCT needs concurrency; the model-kernel runs cover them).
fn workloads(name: &str, size: Size, faults: Faults) {
    let programs = env_u64("AIOCTX_WORKLOAD_PROGRAMS", 12);
    let first = env_u64("AIOCTX_WORKLOAD_SEED", 0x5eed);
    each_scheduler(|sched| {
        let (mut seed, mut ran, mut executions) = (first, 0, 0);
        let mut last = None;
        while ran < programs {
            let p = Program::random(seed, size);
            let s = seed;
            seed += 1;
            if p.remotes.iter().all(Vec::is_empty) {
                continue;
            }
            ran += 1;
            let check = |p: &Program, label: &str| {
                let p = p.clone();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    aioctx::sync::model_named(label, move || {
                        let out = run(&p, &Env::model(Faults { seed: s, ..faults }));
                        if out.result.is_err() {
                            panic!("workload seed {s}: {}", out.report(&p));
                        }
                    })
                }))
            };
            let r = match check(&p, &format!("{name}/seed{s}")) {
                Ok(r) => r,
                Err(e) => {
                    // Shrink (at most 24 shuttle runs), then fail with the first failure's message
                    // (its property name) and the smallest program that still fails.
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|x| x.to_string()))
                        .unwrap_or_default();
                    let min = p.shrink(24, |c| check(c, &format!("{name}/shrink")).is_err());
                    panic!(
                        "{msg}\nshrunk ({} of {} operations left; scheduler {sched}, seed {s}):\n{}",
                        min.len(),
                        p.len(),
                        min.regression_test(
                            "regression",
                            &format!("model_kernel({:?})", Faults { seed: s, ..faults })
                        )
                    );
                }
            };
            executions += r.executions;
            last = Some(r);
        }
        // The line ci/shuttle reads: this test's schedules, all programs together.
        let r = last.expect("at least one program");
        println!("MODEL {name} {} bound={} executions={executions}", r.checker, r.bound);
    });
}

/// Run `f` once per scheduler of `AIOCTX_SHUTTLE_SCHED` (default `pct,random`), with the variable
/// set to that one (the runner reads the scheduler from the environment): one test of this binary
/// at a time.
fn each_scheduler(mut f: impl FnMut(&str)) {
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let list = std::env::var("AIOCTX_SHUTTLE_SCHED").unwrap_or_else(|_| "pct,random".into());
    for sched in list.split(',').map(str::trim) {
        assert!(sched == "pct" || sched == "random", "AIOCTX_SHUTTLE_SCHED: unknown {sched}");
        std::env::set_var("AIOCTX_SHUTTLE_SCHED", sched);
        f(sched);
    }
    std::env::set_var("AIOCTX_SHUTTLE_SCHED", list);
}

/// Generated programs with 1-3 remote threads, no faults. (Their BHs are tasks a quarter of the
/// time: a wake racing a task's poll is what `task_clears_woken_after_poll` loses.)
#[test]
#[cfg_attr(
    any(aioctx_bug = "poll_no_recheck_notified", aioctx_bug = "task_clears_woken_after_poll"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn generated_workloads() {
    workloads("generated_workloads", Size { remotes: 3, ops: 6 }, Faults::default());
}

/// The same with spurious wake-ups and registration failures injected.
#[test]
fn generated_workloads_with_faults() {
    let faults = Faults { seed: 0, spurious_wake: 200, register_fail: 150, ..Faults::default() };
    workloads("generated_workloads_with_faults", Size { remotes: 2, ops: 6 }, faults);
}

/// Found by the model-kernel workloads on a loaded machine (1 run in 3,000), shrunk by shuttle: a
/// task rescheduling itself from its poll while its remote owner drops the waker it holds. The
/// runner rescheduled through that shared waker, so the drop could land between the poll's store
/// and the reschedule: the wake went nowhere and the final drain waited for the task forever (a
/// lost wake-up of the harness, not of the code). A task reschedules itself through its own
/// poll's waker now. Under shuttle it fails within the default schedules without that.
#[test]
fn task_reschedules_itself_while_its_remote_owner_drops_its_waker() {
    let p = Program {
        polling: false,
        bhs: vec![BhSpec { resched: 2, task: true, ..BhSpec::plain(Owner::Remote(0)) }],
        timers: vec![],
        fds: vec![],
        home: vec![],
        remotes: vec![vec![Op::Delete(0)]],
    };
    each_scheduler(|_| {
        let p = p.clone();
        // Named as the test: ci/shuttle reads its MODEL line and its trace file by that name.
        aioctx::sync::model_named(
            "task_reschedules_itself_while_its_remote_owner_drops_its_waker",
            move || {
                let out = run(&p, &Env::model(Faults::default()));
                assert!(out.result.is_ok(), "{}", out.report(&p));
            },
        );
    });
}
