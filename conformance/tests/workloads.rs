//! Generated concurrent workloads (issue 14) on the real code, checked by the model of what the
//! caller sees (`aioctx_model::workload::oracle`):
//!
//! - `model_kernel_*`: the model kernel with std threads racing, and faults injected from the seed
//!   (spurious wake-ups, ENOMEM / EMFILE on registration);
//! - `real_kernel_*`: ppoll, epoll and io_uring (when the kernel allows it), threads really racing,
//!   remote interrupts (SIGUSR1: EINTR in the wait) and a saturated eventfd (EAGAIN on notify);
//!   io_uring once more with its faults injected (`Builder::io_uring_faults`: failed enters, lost
//!   and delayed completions);
//! - `home_programs_quickcheck`: single-threaded programs (quickcheck `Arbitrary`);
//! - `oracle_*`: the oracle rejects what it must (negative tests over hand-made logs);
//! - regressions: minimal programs found by the generator, pasted as printed.
//!
//! Sizes: `AIOCTX_WORKLOAD_CASES` programs per test (default 96; `ci/conformance --full` raises it),
//! `AIOCTX_WORKLOAD_OPS` operations per thread at most (default 10),
//! `AIOCTX_WORKLOAD_SEED` fixes proptest's seed (default: fixed 0x5eed, so CI is reproducible; a
//! failure prints the minimal program as a regression test and the seed). The shuttle runs are in
//! `model/tests/shuttle_workloads.rs`.

use aioctx::Faults;
use aioctx_conformance::real::record;
use aioctx_conformance::real::Kernel;
use aioctx_conformance::replay::{replay, Outcome};
use aioctx_conformance::serial;
use aioctx_conformance::workload::{
    check_program, faults, handshake_projection, how, io_uring_faults, io_uring_rates,
    model_kernel, out_dir, program, real_kernel, run_program, write_chart, HomeProgram, Where,
};
use aioctx_model::workload::oracle::{check, Cb, Ev, Stats};
use aioctx_model::workload::*;
use aioctx_model::{check_trace, enumerate_traces, Bound};
use proptest::prelude::any;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

fn cases() -> u32 {
    std::env::var("AIOCTX_WORKLOAD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
}

/// Operations per thread, at most (`AIOCTX_WORKLOAD_OPS`, default 10).
fn max_ops() -> usize {
    std::env::var("AIOCTX_WORKLOAD_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

fn seed() -> u64 {
    std::env::var("AIOCTX_WORKLOAD_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    })
}

/// Run generated programs where `w` says (`faulty`: fault rates drawn too). Prints the
/// `WORKLOADS` line ci/conformance collects.
fn generated(name: &str, max_remotes: u8, w: impl Fn(Faults) -> Where, faulty: bool) {
    let name = &match max_ops() {
        10 => name.to_string(),
        n => format!("{name}, {n} ops"),
    };
    // The trace recorder is process-global: no run of this binary overlaps one that records.
    let _g = serial();
    let n = cases();
    let t0 = std::time::Instant::now();
    let stats = std::cell::Cell::new((0u64, Stats::default()));
    let injected = std::cell::Cell::new(aioctx::FaultCounts::default());
    let strat = (program(max_remotes, max_ops()), faults());
    let r = runner(n).run(&strat, |(p, f)| {
        let f = if faulty { f } else { Faults::default() };
        let at = w(f);
        let out = run_program(&p, at);
        if std::env::var("AIOCTX_WORKLOAD_DUMP").is_ok() {
            println!("{}\n{:?}", p.to_rust(), out.result);
        }
        match &out.result {
            Ok(s) => {
                let (n, mut sum) = stats.get();
                sum.polls += s.polls;
                sum.callbacks += s.callbacks;
                sum.obligations += s.obligations;
                sum.hang_ups += s.hang_ups;
                sum.writes += s.writes;
                stats.set((n + 1, sum));
                let (mut sum, i) = (injected.get(), out.injected);
                sum.spurious_wakes += i.spurious_wakes;
                sum.register_failures += i.register_failures;
                sum.enter_failures += i.enter_failures;
                sum.completions_lost += i.completions_lost;
                sum.harvests_delayed += i.harvests_delayed;
                injected.set(sum);
                Ok(())
            }
            Err(_) => Err(TestCaseError::fail(format!(
                "{}\nregression test (paste into conformance/tests/workloads.rs):\n{}",
                out.report(&p),
                p.regression_test("regression", &how(at))
            ))),
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let (programs, sum) = stats.get();
    println!(
        "WORKLOADS {name} | programs={programs} | polls={} | callbacks={} | obligations={} | secs={secs:.1} | seed={} | hang_ups={} writes={}",
        sum.polls, sum.callbacks, sum.obligations, seed(), sum.hang_ups, sum.writes
    );
    if let Err(e) = r {
        panic!("{name} (AIOCTX_WORKLOAD_SEED={}): {}", seed(), shrink_further(e, &w, faulty));
    }
    assert!(programs >= u64::from(n), "{name}: ran {programs} programs of {n}");
    assert!(sum.callbacks > 0, "{name}: no callback ran in any program");
    assert!(sum.hang_ups > 0 || n < 50, "{name}: no fd hung up in {programs} programs");
    assert!(sum.writes > 0 || n < 50, "{name}: no on_write ran in {programs} programs");
    let i = injected.get();
    println!(
        "INJECTED {name}: {} spurious wake-ups, {} failed registrations, {} failed io_uring \
         enters, {} lost and {} delayed io_uring completions",
        i.spurious_wakes,
        i.register_failures,
        i.enter_failures,
        i.completions_lost,
        i.harvests_delayed
    );
    if faulty {
        // Some fault of the configuration's kinds, not each kind: on a real kernel how many enters
        // and completions a run makes (so how many draws each kind gets) depends on timing, and the
        // rarest (a lost completion) can miss a short run; each kind has its own deterministic tests
        // (impl/src/fdmon/io_uring.rs: enter_faults, lost_completions, delayed_completions).
        let io_uring = i.enter_failures + i.completions_lost + i.harvests_delayed > 0;
        let model = i.spurious_wakes > 0 && i.register_failures > 0;
        assert!(model || io_uring, "{name}: faults on, but none injected: {i:?}");
    }
}

/// Proptest's shrinking of a `prop_flat_map` strategy stops early (it cannot shrink the objects
/// the operations were drawn for), so its minimal program often keeps threads, objects and
/// operations the failure does not need: shrink that program again with `Program::shrink` (one
/// operation, remote thread, object or behaviour less at a time; each candidate one run), and
/// print the smaller failure with its regression test. On a real kernel a failure may not repeat
/// on every run: a candidate that passes once is kept out, so the result only errs towards bigger.
fn shrink_further(
    e: TestError<(Program, Faults)>,
    w: &impl Fn(Faults) -> Where,
    faulty: bool,
) -> String {
    let TestError::Fail(_, (p, f)) = &e else { return e.to_string() };
    let at = w(if faulty { *f } else { Faults::default() });
    let min = p.shrink(512, |q| run_program(q, at).result.is_err());
    let out = run_program(&min, at);
    if out.result.is_ok() {
        return e.to_string(); // did not fail again: proptest's own report
    }
    // Its counterexample chart, where ci/verify's report finds it.
    let chart = out_dir().map(|d| {
        d.join(format!("workload-{}.trace", how(at).replace(['(', ')', ':', ' ', ','], "_")))
    });
    let chart = match chart.map(|c| write_chart(&min, at, &c).map(|w| (c, w))) {
        Some(Ok((c, true))) => format!("chart: {}\n", c.display()),
        Some(Ok((_, false))) => "no chart: the recorded rerun passed\n".into(),
        Some(Err(e)) => format!("no chart: {e}\n"),
        None => String::new(),
    };
    format!(
        "{}\nshrunk from {} to {} operations ({} to {} remote threads)\n{chart}regression test (paste into \
         conformance/tests/workloads.rs):\n{}",
        out.report(&min),
        p.len(),
        min.len(),
        p.remotes.len(),
        min.remotes.len(),
        min.regression_test("regression", &how(at))
    )
}

#[test]
fn model_kernel_generated() {
    generated("model kernel", 3, model_kernel, false);
}

#[test]
fn model_kernel_generated_with_faults() {
    generated("model kernel + faults", 3, model_kernel, true);
}

fn real(k: Kernel) {
    if !k.available() {
        println!("WORKLOADS real {} | skipped: the kernel refuses it", k.name());
        return;
    }
    generated(&format!("real {}", k.name()), 3, |_| real_kernel(k), false);
}

#[test]
fn real_kernel_ppoll() {
    real(Kernel::Ppoll);
}

#[test]
fn real_kernel_epoll() {
    real(Kernel::Epoll);
}

#[test]
fn real_kernel_io_uring() {
    real(Kernel::IoUring);
}

/// io_uring with its faults injected: enters failing with EINTR / EBUSY / EAGAIN / ETIME, lost
/// completions (re-issued polls), delayed harvests.
#[test]
fn real_kernel_io_uring_with_faults() {
    if !Kernel::IoUring.available() {
        println!("WORKLOADS real io_uring + faults | skipped: the kernel refuses it");
        return;
    }
    generated("real io_uring + faults", 3, |f| io_uring_faults(io_uring_rates(f)), true);
}

/// The same generated programs feed the impl→model trace check: their handshake projection
/// (remote BH operations and notifies against a blocking or an external loop) is recorded on a
/// real backend and must be accepted by the Rust model of the wake-up protocol.
#[test]
fn generated_programs_impl_to_model() {
    let _g = serial();
    let n = cases() / 4 + 1;
    let t0 = std::time::Instant::now();
    let checked = std::cell::Cell::new((0u64, 0u64));
    let r = runner(n * 4).run(&(program(3, 10), any::<u64>()), |(p, seed)| {
        let kernel = [Kernel::Epoll, Kernel::Ppoll][(seed % 2) as usize];
        let Some(spec) = handshake_projection(&p, kernel, seed) else { return Ok(()) };
        let rec = record(&spec);
        match check_trace(&rec.scenario, &rec.trace) {
            Ok(_) => {
                let (a, b) = checked.get();
                checked.set((a + 1, b + rec.trace.len() as u64));
                Ok(())
            }
            Err(rej) => Err(TestCaseError::fail(format!(
                "the model rejects the trace of {spec:?}\n{rej}\nprogram:\n{}",
                p.to_rust()
            ))),
        }
    });
    let (traces, steps) = checked.get();
    println!(
        "WORKLOADS impl->model projection | programs={traces} | polls=0 | callbacks=0 | obligations=0 | secs={:.1} | steps={steps}",
        t0.elapsed().as_secs_f64()
    );
    if let Err(e) = r {
        panic!("AIOCTX_WORKLOAD_SEED={}: {e}", seed());
    }
    assert!(traces > 0, "no program had a handshake projection");
}

/// And the model→impl replay: the interleavings the Rust model enumerates for a program's handshake
/// projection (polling off, preemption bound 1, the first 12 per program) are replayed on the real
/// code by the step scheduler, which must follow each to its end without a hang.
#[test]
fn generated_programs_model_to_impl() {
    let _g = serial();
    let t0 = std::time::Instant::now();
    let tally = std::cell::Cell::new((0u64, 0u64, 0u64, 0u64));
    let r = runner(cases() / 4 + 1).run(&(program(2, 3), any::<u64>()), |(mut p, seed)| {
        p.polling = false;
        let Some(spec) = handshake_projection(&p, Kernel::Epoll, seed) else { return Ok(()) };
        let sc = spec.scenario(0);
        for trace in enumerate_traces(&sc, Bound::preemptions(1)).take(12) {
            let (mut programs, mut followed, mut steps, mut skipped) = tally.get();
            match replay(&sc, &trace) {
                Outcome::Followed { hang: false, steps: n, .. } => {
                    followed += 1;
                    steps += n as u64;
                }
                Outcome::NotReplayable(_) => skipped += 1,
                o => {
                    return Err(TestCaseError::fail(format!(
                        "{}: replay of a model interleaving: {o:?}\ntrace:\n{trace}\nprogram:\n{}",
                        sc.name,
                        p.to_rust()
                    )))
                }
            }
            programs += 1;
            tally.set((programs, followed, steps, skipped));
        }
        Ok(())
    });
    let (traces, followed, steps, skipped) = tally.get();
    println!(
        "WORKLOADS model->impl projection | programs={followed} | polls=0 | callbacks=0 | obligations=0 | secs={:.1} | traces={traces} steps={steps} not_replayable={skipped}",
        t0.elapsed().as_secs_f64()
    );
    if let Err(e) = r {
        panic!("AIOCTX_WORKLOAD_SEED={}: {e}", seed());
    }
    assert!(followed > 0, "no interleaving of a generated program was replayed");
}

#[test]
fn home_programs_quickcheck() {
    fn prop(p: HomeProgram) -> quickcheck::TestResult {
        let out = run_program(&p.0, model_kernel(Faults::default()));
        match out.result {
            Ok(_) => quickcheck::TestResult::passed(),
            Err(_) => quickcheck::TestResult::error(out.report(&p.0)),
        }
    }
    let _g = serial();
    quickcheck::QuickCheck::new()
        .tests(u64::from(cases()))
        .quickcheck(prop as fn(HomeProgram) -> quickcheck::TestResult);
}

// ---- the oracle rejects what it must ----

fn home_program() -> Program {
    Program {
        polling: false,
        bhs: vec![BhSpec::plain(Owner::Home)],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![],
        home: vec![],
        remotes: vec![],
    }
}

fn end() -> Ev {
    Ev::End { idle_polls: 0, injected: 0 }
}

/// `set_fd_interest(NONE)` returned on the home thread: no on_read after it (an io_poll_ready is
/// fine), and the readable fd is no obligation until the interest is back.
#[test]
fn oracle_rejects_a_read_after_interest_none() {
    let mut p = home_program();
    p.timers = vec![];
    p.fds = vec![FdSpec { poll: true, ..FdSpec::plain(Owner::Home) }];
    let head = vec![
        Ev::SetBegin(0, 1),
        Ev::SetEnd(0, 1, true),
        Ev::InterestBegin(0, false),
        Ev::InterestEnd(0, false, true),
        Ev::Ready(0),
        Ev::PollBegin { blocking: false, now: 0 },
    ];
    let read = [head.clone(), vec![Ev::CbBegin(Cb::Read(0, 1))]].concat();
    assert_eq!(check(&p, &read, true).unwrap_err().property, "p_interest_obeyed");
    let tail = vec![Ev::CbEnd(Cb::PollReady(0, 1)), Ev::PollEnd { progress: true }];
    let poll_ready = [head.clone(), vec![Ev::CbBegin(Cb::PollReady(0, 1))], tail].concat();
    assert!(check(&p, &poll_ready, false).is_ok(), "{:?}", check(&p, &poll_ready, false));
    // Readable, registered, not waited for: not due, not left over.
    let idle = [head, vec![Ev::PollEnd { progress: false }, end(), Ev::Dropped]].concat();
    assert!(check(&p, &idle, true).is_ok(), "{:?}", check(&p, &idle, true));
}

/// A hung-up fd is readable for good: a read consumes its data, not its end of file, so its
/// handler is due in every poll and a handler left waiting on it at the end is a readiness never
/// handled, until the handler pauses (or removes) itself.
#[test]
fn oracle_keeps_a_hung_up_fd_readable() {
    let mut p = home_program();
    p.timers = vec![];
    p.fds = vec![FdSpec::plain(Owner::Home)];
    let poll = |then: Vec<Ev>| {
        [
            vec![Ev::PollBegin { blocking: false, now: 0 }, Ev::CbBegin(Cb::Read(0, 1))],
            then,
            vec![Ev::CbEnd(Cb::Read(0, 1)), Ev::PollEnd { progress: true }],
        ]
        .concat()
    };
    let head = [
        vec![
            Ev::SetBegin(0, 1),
            Ev::SetEnd(0, 1, true),
            Ev::Ready(0),
            Ev::ReadyDone(0),
            Ev::HangUp(0),
            Ev::HungUp(0),
        ],
        poll(vec![Ev::Consumed(0)]),
    ]
    .concat();
    let left = [head.clone(), vec![end()]].concat();
    assert_eq!(check(&p, &left, true).unwrap_err().property, "p_arming_kept");
    let skipped = [head.clone(), vec![Ev::PollBegin { blocking: false, now: 0 }]].concat();
    let skipped = [skipped, vec![Ev::PollEnd { progress: false }]].concat();
    assert_eq!(check(&p, &skipped, true).unwrap_err().property, "p_runs_what_was_due");
    let paused = [
        head,
        poll(vec![Ev::InterestBegin(0, false), Ev::InterestEnd(0, false, true)]),
        vec![Ev::PollBegin { blocking: false, now: 0 }, Ev::PollEnd { progress: false }, end()],
    ]
    .concat();
    assert!(check(&p, &paused, true).is_ok(), "{:?}", check(&p, &paused, true));
}

/// A handler with on_write waits for writability from its registration until on_write turns the
/// write side off: each poll meanwhile calls it (a model fd is always writable), the run may not
/// end with it on, and after it is off on_write is not called again.
#[test]
fn oracle_checks_the_write_side() {
    let mut p = home_program();
    p.timers = vec![];
    p.fds = vec![FdSpec { write: true, ..FdSpec::plain(Owner::Home) }];
    let begin = || Ev::PollBegin { blocking: false, now: 0 };
    let set = vec![Ev::SetBegin(0, 1), Ev::SetEnd(0, 1, true)];
    let flush = vec![
        begin(),
        Ev::CbBegin(Cb::Write(0, 1)),
        Ev::WriteBegin(0, false),
        Ev::WriteEnd(0, false, true),
        Ev::CbEnd(Cb::Write(0, 1)),
        Ev::PollEnd { progress: true },
    ];
    let ok = [set.clone(), flush.clone(), vec![begin(), Ev::PollEnd { progress: false }, end()]];
    let ok = ok.concat();
    assert!(check(&p, &ok, true).is_ok(), "{:?}", check(&p, &ok, true));
    let skipped = [set.clone(), vec![begin(), Ev::PollEnd { progress: false }]].concat();
    assert_eq!(check(&p, &skipped, true).unwrap_err().property, "p_runs_what_was_due");
    let left = [set.clone(), vec![end()]].concat();
    assert_eq!(check(&p, &left, true).unwrap_err().property, "p_arming_kept");
    let again = [set, flush, vec![begin(), Ev::CbBegin(Cb::Write(0, 1))]].concat();
    assert_eq!(check(&p, &again, true).unwrap_err().property, "p_interest_obeyed");
}

#[test]
fn oracle_rejects_progress_without_a_callback() {
    let log =
        vec![Ev::PollBegin { blocking: false, now: 0 }, Ev::PollEnd { progress: true }, end()];
    assert_eq!(check(&home_program(), &log, true).unwrap_err().property, "p_progress_exact");
}

#[test]
fn oracle_rejects_a_reentered_bh_and_a_deferred_bh_that_is_progress() {
    let p = home_program();
    let reentered = vec![
        Ev::Schedule(0),
        Ev::PollBegin { blocking: false, now: 0 },
        Ev::CbBegin(Cb::Bh(0)),
        Ev::Schedule(0),
        Ev::PollBegin { blocking: false, now: 0 },
        Ev::CbBegin(Cb::Bh(0)),
    ];
    assert_eq!(check(&p, &reentered, true).unwrap_err().property, "p_no_reentry");
    // Defect 1 of the issue: the nested poll reports progress for the BH it deferred.
    let deferred_progress = vec![
        Ev::Schedule(0),
        Ev::PollBegin { blocking: false, now: 0 },
        Ev::CbBegin(Cb::Bh(0)),
        Ev::Schedule(0),
        Ev::PollBegin { blocking: false, now: 0 },
        Ev::PollEnd { progress: true },
    ];
    assert_eq!(check(&p, &deferred_progress, true).unwrap_err().property, "p_progress_exact");
}

#[test]
fn oracle_rejects_a_dropped_arming_and_a_due_timer_not_run() {
    let p = home_program();
    // Defect 2 of the issue: a timer re-arms itself for now, then the arming is gone.
    let dropped = vec![
        Ev::TimerMod(0, 0),
        Ev::PollBegin { blocking: false, now: 5 },
        Ev::CbBegin(Cb::Timer(0, 5)),
        Ev::TimerMod(0, 5),
        Ev::CbEnd(Cb::Timer(0, 5)),
        Ev::PollEnd { progress: true },
        end(),
    ];
    assert_eq!(check(&p, &dropped, true).unwrap_err().property, "p_arming_kept");
    let not_run = vec![
        Ev::TimerMod(0, 3),
        Ev::PollBegin { blocking: false, now: 5 },
        Ev::PollEnd { progress: false },
    ];
    assert_eq!(check(&p, &not_run, true).unwrap_err().property, "p_runs_what_was_due");
    let early = vec![
        Ev::TimerMod(0, 9),
        Ev::PollBegin { blocking: true, now: 5 },
        Ev::CbBegin(Cb::Timer(0, 7)),
    ];
    assert_eq!(check(&p, &early, true).unwrap_err().property, "p_timer_not_early");
}

#[test]
fn oracle_rejects_a_busy_loop_and_an_unpaired_poll_end() {
    let p = home_program();
    let busy = vec![Ev::End { idle_polls: 100, injected: 0 }];
    assert_eq!(check(&p, &busy, true).unwrap_err().property, "p_no_busy_loop");
    let mut q = home_program();
    q.fds = vec![FdSpec { poll: true, ..FdSpec::plain(Owner::Home) }];
    let unpaired = vec![
        Ev::SetBegin(0, 1),
        Ev::SetEnd(0, 1, true),
        Ev::IoPollBegin(0, 1),
        end(),
        Ev::TimerFreed(0),
        Ev::Dropped,
    ];
    assert_eq!(check(&q, &unpaired, true).unwrap_err().property, "p_poll_end_follows_begin");
    let after_remove = vec![
        Ev::SetBegin(0, 1),
        Ev::SetEnd(0, 1, true),
        Ev::Ready(0),
        Ev::Removed(0),
        Ev::CbBegin(Cb::Read(0, 1)),
    ];
    assert_eq!(check(&q, &after_remove, true).unwrap_err().property, "p_no_call_after_remove");
}

/// Found by the generator (real io_uring beside two CPU hogs): a remote thread drops its `Timer`
/// while the home thread's poll has already taken it off the queue; the call starts after the drop
/// returned. That is the cross-thread window QEMU's timer_del has too (and `Bh`'s drop documents):
/// `Timer::del`/drop now document it, and the oracle allows it inside the poll that was running,
/// never in a later poll. The log is the failing run's, cut to the timer.
#[test]
fn oracle_remote_timer_drop_window() {
    let p = Program {
        polling: false,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Remote(0), rearm: 1, nested: Nested::No }],
        fds: vec![],
        home: vec![],
        remotes: vec![vec![Op::TimerMod(0, 1), Op::TimerDrop(0)]],
    };
    let log = vec![
        Ev::PollBegin { blocking: true, now: 19_598_157 },
        Ev::TimerMod(0, 19_613_198),
        Ev::TimerDel(0, true),
        Ev::CbBegin(Cb::Timer(0, 19_697_808)),
        Ev::CbEnd(Cb::Timer(0, 19_697_808)),
        Ev::PollEnd { progress: true },
        Ev::RemoteDone(0),
        end(),
    ];
    assert_eq!(check(&p, &log, true).map(|_| ()), Ok(()));
    // Dropped between polls, or a call in a later poll: rejected.
    let later = vec![
        Ev::TimerMod(0, 5),
        Ev::TimerDel(0, true),
        Ev::PollBegin { blocking: true, now: 10 },
        Ev::CbBegin(Cb::Timer(0, 10)),
    ];
    assert_eq!(check(&p, &later, true).unwrap_err().property, "p_no_call_after_delete");
    let in_next_poll = vec![
        Ev::PollBegin { blocking: true, now: 1 },
        Ev::TimerMod(0, 1),
        Ev::TimerDel(0, true),
        Ev::PollEnd { progress: false },
        Ev::PollBegin { blocking: false, now: 2 },
        Ev::CbBegin(Cb::Timer(0, 2)),
    ];
    assert_eq!(check(&p, &in_next_poll, true).unwrap_err().property, "p_no_call_after_delete");
    // The same window on the home thread does not exist: a home-owned timer dropped is never called.
    let mut q = p.clone();
    q.timers[0].owner = Owner::Home;
    let home = vec![
        Ev::PollBegin { blocking: true, now: 1 },
        Ev::TimerMod(0, 1),
        Ev::TimerFreed(0),
        Ev::TimerDel(0, true),
        Ev::CbBegin(Cb::Timer(0, 2)),
    ];
    assert_eq!(check(&q, &home, true).unwrap_err().property, "p_no_call_after_delete");
}

/// Defect 3 of the issue: a dropped armed `Timer` kept its closure (and its captures) alive.
#[test]
fn oracle_rejects_a_dropped_timer_whose_closure_lives_on() {
    let p = home_program();
    let kept = vec![Ev::TimerMod(0, 3_600_000_000_000), Ev::TimerDel(0, true)];
    assert_eq!(check(&p, &kept, true).unwrap_err().property, "p_timer_closure_freed");
    let freed = vec![
        Ev::TimerMod(0, 3_600_000_000_000),
        Ev::TimerFreed(0),
        Ev::TimerDel(0, true),
        end(),
        Ev::Dropped,
    ];
    assert_eq!(check(&p, &freed, true).map(|_| ()), Ok(()));
}

// ---- the issue's four defects as generated programs (fixed on main; they must stay fixed) ----

/// Defect 1: a BH reschedules itself, then drains nested (QEMU's drain idiom); and one that waits
/// for a timer in a nested poll(true).
#[test]
fn issue14_defect1_self_rescheduling_bh_with_nested_polls() {
    let p = Program {
        polling: false,
        bhs: vec![
            BhSpec { resched: 2, nested: Nested::Drain, ..BhSpec::plain(Owner::Home) },
            BhSpec { resched: 1, nested: Nested::WaitTimer(0), ..BhSpec::plain(Owner::Home) },
        ],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![],
        home: vec![Op::Schedule(0), Op::Poll(false), Op::Schedule(1), Op::Poll(false), Op::Drain],
        remotes: vec![vec![Op::Notify, Op::Notify]],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// Defect 3: an armed timer far away, dropped: its closure is freed by the drop.
#[test]
fn issue14_defect3_dropped_armed_timer_frees_its_closure() {
    let p = Program {
        polling: false,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![],
        home: vec![Op::TimerMod(0, 255), Op::Poll(false), Op::TimerDrop(0), Op::Poll(false)],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// The fix on main for a nested blocking wait: a handler's fd, still readable while its callback
/// polls nested, is left out of the nested wait (or it spins: `p_no_busy_loop`).
#[test]
fn issue14_handler_fd_left_out_of_a_nested_blocking_wait() {
    let p = Program {
        polling: false,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![FdSpec {
            nested: Nested::WaitTimer(0),
            consume_late: true,
            ..FdSpec::plain(Owner::Home)
        }],
        home: vec![Op::SetHandler(0), Op::Ready(0), Op::Poll(false)],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
    for k in [Kernel::Epoll, Kernel::Ppoll, Kernel::IoUring] {
        if k.available() {
            check_program(&p, real_kernel(k));
        }
    }
}

/// Defect 2: a timer re-arms itself for now, then polls nested.
#[test]
fn issue14_defect2_rearmed_timer_with_nested_poll() {
    let p = Program {
        polling: false,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 2, nested: Nested::Drain }],
        fds: vec![],
        home: vec![Op::TimerMod(0, 0), Op::Poll(false), Op::Poll(false), Op::Drain],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// A poll nested in io_poll_begin (`FdSpec::bracket`): the begin loop of
/// `try_poll_mode` held the poll list's borrow across the calls, and a nested blocking poll that
/// polled panicked (RefCell already borrowed). Written by hand (impl/tests/polling.rs found it),
/// then as a program once the generator drew such handlers.
#[test]
fn nested_blocking_poll_inside_io_poll_begin() {
    let p = Program {
        polling: true,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![FdSpec {
            poll: true,
            bracket: Nested::WaitTimer(0),
            ..FdSpec::plain(Owner::Home)
        }],
        home: vec![
            Op::SetHandler(0),
            Op::Ready(0),
            Op::Poll(true),
            Op::TimerMod(0, 10),
            Op::Poll(true),
            Op::Ready(0),
            Op::Poll(true),
        ],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// Found by the generator once io_poll_begin / io_poll_end polled nested (quickcheck's
/// `HomeProgram`, as drawn): a handler replaced while on the poll list stays there, deleted, until
/// the outermost poll's finalisation, and the next poll mode called its io_poll_begin: a callback
/// of a removed handler (`p_no_call_after_remove`, which the oracle now checks for begins). A
/// deleted handler is never begun now; its end, if it was begun, still comes.
#[test]
fn a_replaced_handler_left_on_the_poll_list_is_not_begun() {
    let p = Program {
        polling: true,
        bhs: vec![BhSpec::plain(Owner::Home)],
        timers: vec![],
        fds: vec![FdSpec {
            poll: true,
            eof_removes: true,
            write: true,
            bracket: Nested::Once,
            ..FdSpec::plain(Owner::Home)
        }],
        home: vec![Op::SetHandler(0), Op::Poll(true), Op::SetHandler(0)],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// Found by the generator (real io_uring with faults, shrunk; nondeterministic there, as drawn):
/// a blocking poll's io_poll_begin and io_poll_end poll nested, and those polls took the remote's
/// last notify (accepted `notified`, or drained the notifier) before the outer poll waited: the
/// outer poll then blocked for good (`p_no_lost_wakeup`). It does not block now when a poll nested
/// in its pre-wait callbacks took a notification or made progress.
#[test]
fn a_notify_taken_by_a_poll_nested_in_io_poll_begin_ends_the_outer_wait() {
    let p = Program {
        polling: true,
        bhs: vec![BhSpec { idle: true, nested: Nested::Drain, ..BhSpec::plain(Owner::Remote(0)) }],
        timers: vec![],
        fds: vec![
            FdSpec {
                remove_self: true,
                consume_late: true,
                eof_removes: true,
                ..FdSpec::plain(Owner::Home)
            },
            FdSpec {
                poll: true,
                consume_late: true,
                eof_removes: true,
                write: true,
                bracket: Nested::Once,
                ..FdSpec::plain(Owner::Home)
            },
        ],
        home: vec![
            Op::Oneshot,
            Op::Cancel(0),
            Op::SetHandler(1),
            Op::Ready(1),
            Op::Oneshot,
            Op::Cancel(0),
            Op::SetInterest(1, true),
            Op::Poll(false),
        ],
        remotes: vec![vec![Op::Cancel(0), Op::Delete(0), Op::TimerDel(0)]],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
    for k in [Kernel::Epoll, Kernel::Ppoll, Kernel::IoUring] {
        if k.available() {
            for _ in 0..20 {
                check_program(&p, real_kernel(k));
            }
        }
    }
}

// ---- tasks stand in for BHs ----

/// Found by the generator (seed 24301, once `BhSpec::task` changed the program stream; minimised by
/// hand): a handler whose read callback polls nested while poll mode is on joins the poll list from
/// that nested poll (its fd is still readable). Its io_poll_begin could not run there (a callback is
/// never re-entered), yet it was marked begun, so the io_poll_end at the end came without a begin.
/// The begin or end is now made when the callback returned (`PollState::settle`).
#[test]
fn issue14_poll_begin_due_inside_the_handlers_own_callback() {
    let p = Program {
        polling: true,
        bhs: vec![],
        timers: vec![],
        fds: vec![FdSpec {
            poll: true,
            nested: Nested::Once,
            consume_late: true,
            ..FdSpec::plain(Owner::Home)
        }],
        home: vec![
            Op::SetHandler(0),
            Op::Ready(0),
            Op::Poll(true),
            Op::SetHandler(0),
            Op::Ready(0),
        ],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// Its mirror image, once io_poll_ready polls nested too (the generator's `FdSpec::nested`): a
/// nested blocking wait inside io_poll_ready ends poll mode, and the io_poll_end owed to that
/// handler was dropped; the next poll mode then began it twice. It is made when io_poll_ready
/// returned, with the final poll after it (impl/tests/polling.rs has the device that lost a request
/// to it).
#[test]
fn issue14_poll_end_due_inside_io_poll_ready() {
    let p = Program {
        polling: true,
        bhs: vec![],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![FdSpec {
            poll: true,
            nested: Nested::WaitTimer(0),
            ..FdSpec::plain(Owner::Home)
        }],
        home: vec![
            Op::SetHandler(0),
            Op::Ready(0),
            Op::Poll(true),
            Op::Ready(0),
            Op::Poll(true),
            Op::Ready(0),
            Op::Poll(true),
        ],
        remotes: vec![],
    };
    let _g = serial();
    check_program(&p, model_kernel(Faults::default()));
}

/// The generated programs exercise tasks (a quarter of their BHs): spawned, woken from the home
/// thread, from remote threads and from inside their own poll, cancelled, nested; the oracle's BH
/// rules hold for them. Counted over fixed seeds, so the generator cannot silently stop making them.
#[test]
fn generated_programs_poll_tasks_and_wake_them_remotely() {
    use aioctx_model::workload::run::{run, Env};
    // The real code records into the global trace (this binary builds impl with `trace`): another
    // test's recording must not see these runs' steps.
    let _g = serial();
    let (mut polls, mut remote_owned, mut programs) = (0, 0, 0);
    for seed in 0..64u64 {
        let p = Program::random(seed, Size { remotes: 2, ops: 6 });
        let tasks: Vec<u8> = (0..p.bhs.len() as u8).filter(|&b| p.bhs[b as usize].task).collect();
        if tasks.is_empty() {
            continue;
        }
        programs += 1;
        let out = run(&p, &Env::model(Faults::default()));
        assert!(out.result.is_ok(), "seed {seed}: {}", out.report(&p));
        polls += out
            .log
            .iter()
            .filter(|e| matches!(e, Ev::CbBegin(Cb::Bh(b)) if tasks.contains(b)))
            .count();
        remote_owned += tasks
            .iter()
            .filter(|&&b| match p.bhs[b as usize].owner {
                Owner::Remote(r) => p
                    .remotes
                    .get(r as usize)
                    .is_some_and(|ops| ops.iter().any(|op| matches!(op, Op::Schedule(_)))),
                Owner::Home => false,
            })
            .count();
    }
    assert!(programs >= 16, "only {programs} of 64 programs have a task");
    assert!(polls >= programs, "{polls} task polls in {programs} programs");
    assert!(remote_owned > 0, "no remote thread holds a task's waker and wakes it");
}

/// A failure that takes its process with it (a hang past every notify on a real kernel) shrinks in
/// child processes: `conformance-workload shrink` reruns the program file the watchdog writes, one
/// child per candidate. Shown with a failure that needs no hang to appear, on the model kernel (its
/// watchdog is exact: no waiting out a time limit per candidate): the planted bug
/// `task_clears_woken_after_poll` loses a task's wake from inside its own poll, so the final drain
/// of a program with a task that reschedules itself blocks for good (`p_no_lost_wakeup`), on
/// every run; the noise around it goes, down to that task alone.
#[test]
fn a_program_file_shrinks_in_child_processes() {
    let bin = env!("CARGO_BIN_EXE_conformance-workload");
    let dir = std::env::temp_dir().join(format!("workload-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = Program::random(7, Size { remotes: 2, ops: 10 });
    p.bhs.push(BhSpec { resched: 1, task: true, ..BhSpec::plain(Owner::Home) });
    let file = dir.join("p.program");
    let head = aioctx_conformance::workload::encode_where(model_kernel(Faults::default()));
    std::fs::write(&file, format!("{head}\n{}", p.encode())).unwrap();
    let tool = |args: &[&str], bug: &str| {
        std::process::Command::new(bin).args(args).env("AIOCTX_BUG", bug).output().unwrap()
    };
    let f = file.to_str().unwrap();
    let ok = tool(&["run", f], "");
    assert!(ok.status.success(), "the correct code: {}", String::from_utf8_lossy(&ok.stdout));
    let out = tool(&["shrink", f, "--budget", "300"], "task_clears_woken_after_poll");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("p_no_lost_wakeup violated") && text.contains("fn regression()"),
        "{text}"
    );
    let min = std::fs::read_to_string(file.with_extension("min")).unwrap();
    let min = Program::decode(min.split_once('\n').unwrap().1).unwrap();
    assert!(p.len() > 5 && min.is_empty(), "{} operations left:\n{}", min.len(), min.to_rust());
    let tasks: Vec<_> = min.bhs.iter().filter(|b| b.task && b.resched > 0).collect();
    assert!(min.bhs.len() == 1 && tasks.len() == 1, "{}", min.to_rust());
    assert!(min.timers.is_empty() && min.fds.is_empty(), "{}", min.to_rust());
    // Its counterexample chart: the protocol steps of the minimal run, the property named.
    let chart = std::fs::read_to_string(file.with_extension("trace")).unwrap();
    let chart = aioctx_conformance::msc::Chart::parse(&chart).unwrap();
    assert_eq!(chart.property.as_deref(), Some("p_no_lost_wakeup"));
    assert!(chart.events.iter().any(|e| e.label == "ctx_poll_wait"), "{:?}", chart.events);
    let bad = tool(&["shrink"], "");
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Found by the generator with registration faults (seed 11, 40 operations per thread): a nested
/// blocking wait inside a hung-up fd's callback leaves that fd out of the wait (interest none) and
/// restores it after; the restore failed (an injected ENOMEM / EMFILE: on epoll an EPOLL_CTL_ADD,
/// which can also meet ENOSPC, the per-user watch limit) and its error was dropped, so the fd
/// stayed unwatched while its handler waited for it: the next blocking poll slept for good.
#[test]
fn issue14_a_failed_restore_after_a_nested_wait_is_retried() {
    let p = Program {
        polling: false,
        bhs: vec![BhSpec::plain(Owner::Home)],
        timers: vec![TimerSpec { owner: Owner::Home, rearm: 0, nested: Nested::No }],
        fds: vec![FdSpec { nested: Nested::WaitTimer(0), ..FdSpec::plain(Owner::Home) }],
        home: vec![Op::SetHandler(0), Op::SetInterest(0, true), Op::HangUp(0)],
        remotes: vec![],
    };
    let faults = Faults { seed: 16975802641205830401, register_fail: 120, ..Faults::default() };
    check_program(&p, model_kernel(faults));
}

/// The regression tests the generator prints (`Program::regression_test`, what a failing run's
/// panic shows), for three drawn programs on three runners: the text as printed now, compiled and run
/// as pasted (`printed/regressions.rs`, included below). Fails when the printer changed and the
/// file was not regenerated (`AIOCTX_BLESS=1` rewrites it), so a printed test always pastes.
#[test]
fn printed_regression_tests_paste_and_pass() {
    let faults = Faults { seed: 11, spurious_wake: 200, register_fail: 100, ..Faults::default() };
    let runners =
        [model_kernel(Faults::default()), model_kernel(faults), real_kernel(Kernel::Ppoll)];
    let mut text = String::from(
        "// Generated by `AIOCTX_BLESS=1 cargo test -p aioctx-conformance --test workloads\n\
         // printed_regression_tests_paste_and_pass`: the generator's printed regression tests, as pasted.\n",
    );
    for (seed, w) in [3u64, 7, 11].into_iter().zip(runners) {
        let p = Program::random(seed, Size { remotes: 2, ops: 6 });
        text.push('\n');
        text.push_str(&p.regression_test(&format!("printed_seed_{seed}"), &how(w)));
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/printed/regressions.rs");
    if std::env::var_os("AIOCTX_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == text,
        "{} differs from what the generator prints now: regenerate it with AIOCTX_BLESS=1",
        path.display()
    );
}

mod printed {
    use super::*;
    include!("printed/regressions.rs");
}
