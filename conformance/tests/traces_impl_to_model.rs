//! Implementation → model: traces recorded from real multi-threaded runs (real eventfd; epoll, ppoll
//! and io_uring; adaptive polling off and on) must be accepted by the Rust model's oracle
//! (`aioctx_model::check_trace`), and a sample of them by promela/notify.pml itself (a generated
//! Promela follower, see `aioctx_conformance::follower`).
//!
//! Per configuration `AIOCTX_CONF_TRACES` runs (default 200, 1000 with `AIOCTX_CONF_FULL=1`), cycling
//! through: `bh_schedule_vs_blocking_poll` (`while !ran { poll(true) }`), `notify_vs_blocking_poll`,
//! `bh_schedule_twice_vs_external_loop` (prepare / poll(2) / check / dispatch), and random
//! schedule / schedule_idle / oneshot / cancel / delete / notify sequences from one or two remotes
//! against either loop. A rejected trace fails with the first step the model cannot take and the
//! model state; zero traces fail.

use std::time::Instant;

use aioctx_conformance::real::{self, Driver, Kernel, Polling, RunSpec};
use aioctx_conformance::{follower, out_dir, report, serial, traces_per_config};
use aioctx_model::check_trace;

/// Keys the implementation records that the model does not define, each documented: `count` (the
/// number of BHs `bh_poll_take` took; the model's `bh_list_old` says whether it took any).
const STEP_LOCAL_KEYS: &[&str] = &["count"];

fn spec(kernel: Kernel, polling: Polling, i: usize, seed: u64) -> RunSpec {
    match i % 5 {
        0 => RunSpec::bh_schedule_vs_blocking_poll(kernel, polling, seed),
        1 => RunSpec::notify_vs_blocking_poll(kernel, polling, seed),
        2 => RunSpec::bh_schedule_twice_vs_external_loop(kernel, polling, seed),
        3 => RunSpec::random_ops(kernel, polling, Driver::Blocking, seed),
        _ => RunSpec::random_ops(kernel, polling, Driver::External, seed),
    }
}

fn check_config(kernel: Kernel, polling: Polling) {
    let _g = serial();
    let config = format!("({}, {})", kernel.name(), polling.name());
    if !kernel.available() {
        println!("CONFORMANCE impl->model {config} skipped: the kernel refuses {}", kernel.name());
        return;
    }
    let t0 = Instant::now();
    let n = traces_per_config();
    let (mut traces, mut steps, mut rounds, mut waits) = (0, 0, 0, 0);
    // Interleaving richness: adjacent events of different threads, and waits that reported the
    // notifier clear right before another thread's eventfd write (the recorder's wait placement).
    let (mut switches, mut racy_waits, mut races) = (0, 0, 0);
    let mut mutated = false;
    let mut per_scenario = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..n {
        let seed = (i as u64) << 8 | (kernel as u64) << 2 | polling as u64;
        let s = spec(kernel, polling, i, seed);
        let rec = real::record(&s);
        match check_trace(&rec.scenario, &rec.trace) {
            Ok(r) => {
                let extra: Vec<_> = r
                    .ignored_keys
                    .iter()
                    .filter(|k| !STEP_LOCAL_KEYS.contains(&k.as_str()))
                    .collect();
                assert!(extra.is_empty(), "{config} {}: undocumented keys {extra:?}", s.name);
            }
            Err(rej) => {
                let path =
                    out_dir().join(format!("rejected-{}-{:?}-{i}.trace", kernel.name(), polling));
                let text = format!("# {:?}\n# seed {}\n{}", rec.scenario, s.seed, rec.trace);
                std::fs::write(&path, &text).unwrap();
                panic!(
                    "{config} run {i} ({}, seed {}): the model rejects the implementation's trace\n\
                     {rej}\ntrace ({} events, saved to {}):\n{}",
                    s.name,
                    s.seed,
                    rec.trace.len(),
                    path.display(),
                    rec.trace
                );
            }
        }
        // The oracle is not vacuous: the same trace with the first `notify_me` a notifier read
        // changed is rejected at that event.
        if !mutated {
            if let Some(j) = rec
                .trace
                .events
                .iter()
                .position(|e| e.step == aioctx::trace::Step::CtxNotifyReadNotifyMe)
            {
                let mut bad = rec.trace.clone();
                for (k, v) in &mut bad.events[j].values {
                    if k == "notify_me" {
                        *v = if *v == 0 { 2 } else { 0 };
                    }
                }
                let rej =
                    check_trace(&rec.scenario, &bad).expect_err("a mutated trace is accepted");
                assert_eq!(rej.index, j, "mutation at {j}, rejected at {}: {rej}", rej.index);
                mutated = true;
            }
        }
        traces += 1;
        steps += rec.trace.len();
        rounds += rec
            .trace
            .events
            .iter()
            .filter(|e| e.step == aioctx::trace::Step::CtxPollUserspace)
            .count();
        waits +=
            rec.trace.events.iter().filter(|e| e.step == aioctx::trace::Step::CtxPollWait).count();
        *per_scenario.entry(s.name.clone()).or_default() += 1;
        // A remote step inside the home thread's window between its timeout computation and its
        // wait (the race the handshake exists for).
        let mut in_window = false;
        for e in &rec.trace.events {
            match (e.thread, e.step) {
                (0, aioctx::trace::Step::CtxPollComputeTimeout) => in_window = true,
                (0, aioctx::trace::Step::CtxPollWait) => in_window = false,
                (t, _) if t != 0 && in_window => {
                    races += 1;
                    in_window = false;
                }
                _ => {}
            }
        }
        for w in rec.trace.events.windows(2) {
            switches += usize::from(w[0].thread != w[1].thread);
            racy_waits += usize::from(
                w[0].step == aioctx::trace::Step::CtxPollWait
                    && w[0].value("notifier") == Some(0)
                    && w[1].step == aioctx::trace::Step::CtxNotifyEventSet,
            );
        }
    }
    assert!(traces > 0 && steps > 0, "{config}: zero traces checked");
    assert!(mutated, "{config}: no trace had a notify to mutate");
    if polling.on() {
        assert!(rounds > 0, "{config}: polling on but no userspace polling round was recorded");
    }
    println!(
        "{config}: scenarios {per_scenario:?}; {waits} waits ({racy_waits} placed before an \
         eventfd write), {rounds} userspace rounds, {switches} thread switches, {races} remote \
         steps between a timeout computation and its wait"
    );
    report(
        "impl->model",
        &config,
        traces,
        steps,
        t0.elapsed().as_secs_f64(),
        &format!(
            "oracle accepts; {switches} thread switches, {races} remote steps inside a \
             compute_timeout..wait window, {racy_waits} waits placed before an eventfd write"
        ),
    );
}

#[test]
fn epoll_polling_off() {
    check_config(Kernel::Epoll, Polling::Off);
}

#[test]
fn epoll_polling_on() {
    check_config(Kernel::Epoll, Polling::On);
}

#[test]
fn epoll_polling_on_with_user_handler() {
    check_config(Kernel::Epoll, Polling::OnWithHandler);
}

#[test]
fn ppoll_polling_off() {
    check_config(Kernel::Ppoll, Polling::Off);
}

#[test]
fn ppoll_polling_on() {
    check_config(Kernel::Ppoll, Polling::On);
}

#[test]
fn ppoll_polling_on_with_user_handler() {
    check_config(Kernel::Ppoll, Polling::OnWithHandler);
}

#[test]
fn io_uring_polling_off() {
    check_config(Kernel::IoUring, Polling::Off);
}

#[test]
fn io_uring_polling_on() {
    check_config(Kernel::IoUring, Polling::On);
}

#[test]
fn io_uring_polling_on_with_user_handler() {
    check_config(Kernel::IoUring, Polling::OnWithHandler);
}

/// A poll of more than 255 userspace rounds is checked like any other: the oracle's bound is the
/// most rounds one recorded poll made, with no cap (it counts a time window over the cost of a
/// round; a u8 cap failed on a busy machine with "350 polling rounds in one poll"). A recorded run
/// has one of its polling rounds repeated to 300 (what a longer window, or a cheaper round, makes:
/// more `ctx_poll_userspace notified=0` reads in the same poll); the oracle accepts it with the
/// derived bound and rejects it with one round less.
#[test]
fn a_poll_of_more_than_255_rounds_is_checked() {
    use aioctx::trace::Step;
    let _g = serial();
    let found = (0..500u64).find_map(|seed| {
        let s = RunSpec::random_ops(Kernel::Epoll, Polling::On, Driver::Blocking, seed);
        let rec = real::record(&s);
        let i = rec.trace.events.iter().position(|e| {
            e.thread == 0 && e.step == Step::CtxPollUserspace && e.value("notified") == Some(0)
        })?;
        Some((s, rec, i))
    });
    let (s, rec, i) = found.expect("no recorded run made a polling round that saw no notify");
    let mut t = rec.trace.clone();
    let round = t.events[i].clone();
    t.events.splice(i + 1..i + 1, std::iter::repeat_n(round, 299));
    let rounds = u32::try_from(aioctx_conformance::convert::max_rounds(&t)).unwrap();
    assert!(rounds >= 300, "{rounds} rounds");
    check_trace(&s.scenario(rounds), &t)
        .unwrap_or_else(|rej| panic!("{rounds} rounds in one poll rejected: {rej}"));
    let rej = check_trace(&s.scenario(rounds - 1), &t).expect_err("a bound below the rounds made");
    assert!(rej.index > i, "rejected at {} (the stretched poll starts at {i})", rej.index);
}

/// The notify handshake of real runs against promela/notify.pml: each trace becomes a Promela
/// follower (see `aioctx_conformance::follower`) that spin must be able to walk to its end.
#[test]
fn notify_handshake_traces_follow_notify_pml() {
    let _g = serial();
    let t0 = Instant::now();
    let n = if aioctx_conformance::full() { traces_per_config() } else { 30 };
    let (traces, steps) = follower::check_real_runs_against_notify_pml(n);
    assert!(traces > 0, "zero traces given to spin");
    report(
        "impl->promela",
        "notify.pml follower (epoll, polling off/on)",
        traces,
        steps,
        t0.elapsed().as_secs_f64(),
        "spin follows every trace; a mutated one is rejected",
    );
}

/// `bh_poll_take` records how many BHs the take found (`count`, a trace-build-only walk of the taken
/// list that no model step reads, so nothing else checks it): three schedules, one take of three.
#[test]
fn bh_poll_take_records_the_length_of_the_taken_list() {
    let _g = serial();
    aioctx::trace::start();
    let ctx = aioctx::AioContext::new().unwrap();
    let bhs: Vec<_> = (0..3).map(|_| ctx.bh_new(|_| {})).collect();
    for b in &bhs {
        b.schedule();
    }
    assert!(ctx.poll(false));
    let log = aioctx::trace::stop();
    let counts: Vec<Option<i64>> = log
        .iter()
        .filter(|e| e.step == aioctx::trace::Step::BhPollTake)
        .map(|e| e.values.iter().find(|(k, _)| *k == "count").map(|(_, v)| *v))
        .collect();
    assert_eq!(counts.first(), Some(&Some(3)), "bh_poll_take records: {counts:?}");
}
