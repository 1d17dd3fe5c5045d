//! The abstract model: exhaustive exploration of the named scenarios (correct model passes, each
//! planted bug is caught), the oracle against every enumerated interleaving and against mutated
//! traces, and the trace text format.

use std::collections::HashSet;

use aioctx::trace::Step;
use aioctx_model::*;

fn explore_ok(sc: Scenario) -> Exploration {
    let e = explore(&sc);
    println!(
        "MODEL {} explorer states={} transitions={} terminal={} time={:?}",
        e.scenario, e.states, e.transitions, e.terminal_states, e.elapsed
    );
    assert!(e.states > 0, "{}: explored nothing", e.scenario);
    assert!(e.terminal_states > 0, "{}: no terminal state", e.scenario);
    if let Some(v) = e.violations.first() {
        panic!("{}: {v}", e.scenario);
    }
    e
}

/// Explore `sc` with `bug` planted; assert `p` is violated with a non-empty counterexample, and
/// cross-check the counterexample with the oracle: the buggy model accepts it (and, for a lost
/// wakeup, reports the violation at its end); the correct model rejects it or sees no violation.
fn finds(sc: Scenario, bug: Bug, p: Property) -> Violation {
    let buggy = sc.clone().with_bug(bug);
    let e = explore(&buggy);
    println!("MODEL {} explorer states={} time={:?}", e.scenario, e.states, e.elapsed);
    assert!(e.states > 0);
    let v = e
        .violation(p)
        .unwrap_or_else(|| panic!("{}: {p} not violated (found {:?})", e.scenario, e.violations));
    assert!(!v.trace.is_empty(), "{}: empty counterexample", e.scenario);
    println!("{v}");
    let report = check_trace(&buggy, &v.trace)
        .unwrap_or_else(|r| panic!("oracle rejects the counterexample: {r}"));
    if p == Property::NoLostWakeup {
        assert!(report.terminal && report.violations.contains(&p), "{report:?}");
        assert!(!report.blocked.is_empty());
    }
    if p == Property::NoBusyLoop {
        let start = v.cycle_start.expect("a busy loop has a cycle");
        assert!(start < v.trace.len());
        assert!(v.trace.events[start..].iter().all(|e| e.step != Step::BhPollCall));
    }
    if let Ok(r) = check_trace(&sc, &v.trace) {
        assert!(!r.violations.contains(&p), "the correct model shows the same violation");
    }
    v.clone()
}

// ---- the correct model passes every property ----

#[test]
fn notify_vs_blocking_poll_passes() {
    explore_ok(Scenario::notify_vs_blocking_poll());
}

#[test]
fn bh_schedule_vs_blocking_poll_passes() {
    explore_ok(Scenario::bh_schedule_vs_blocking_poll());
}

#[test]
fn bh_schedule_during_userspace_polling_passes() {
    explore_ok(Scenario::bh_schedule_during_userspace_polling());
}

#[test]
fn bh_schedule_twice_vs_external_loop_passes() {
    explore_ok(Scenario::bh_schedule_twice_vs_external_loop());
}

#[test]
fn two_pollers_external_and_poll_passes() {
    explore_ok(Scenario::two_pollers_external_and_poll());
}

#[test]
fn schedule_cancel_delete_passes() {
    let e = explore_ok(Scenario::schedule_cancel_delete());
    assert!(e.states > 1000);
}

#[test]
fn bounded_loops_and_zero_timeout_wait_pass() {
    for sc in Scenario::named() {
        for zero_timeout_wait in [false, true] {
            let mut sc = sc.clone().loops(2);
            sc.zero_timeout_wait = zero_timeout_wait;
            sc.name += &format!("+loops2+zero_timeout_wait={zero_timeout_wait}");
            explore_ok(sc);
        }
    }
}

// ---- each planted bug is caught ----

#[test]
fn bh_schedule_vs_blocking_poll_finds_poll_no_recheck_notified() {
    finds(
        Scenario::bh_schedule_vs_blocking_poll(),
        Bug::PollNoRecheckNotified,
        Property::NoLostWakeup,
    );
}

#[test]
fn notify_vs_blocking_poll_finds_poll_no_recheck_notified() {
    finds(Scenario::notify_vs_blocking_poll(), Bug::PollNoRecheckNotified, Property::NoLostWakeup);
}

#[test]
fn bh_schedule_during_userspace_polling_finds_poll_no_recheck_notified() {
    finds(
        Scenario::bh_schedule_during_userspace_polling(),
        Bug::PollNoRecheckNotified,
        Property::NoLostWakeup,
    );
}

#[test]
fn notify_vs_blocking_poll_finds_accept_after_scan() {
    finds(Scenario::notify_vs_blocking_poll(), Bug::AcceptAfterScan, Property::NoLostWakeup);
}

#[test]
fn bh_schedule_twice_vs_external_loop_finds_skip_event_when_notified() {
    finds(
        Scenario::bh_schedule_twice_vs_external_loop().without_prepare_recheck(),
        Bug::SkipEventWhenNotified,
        Property::NoLostWakeup,
    );
}

/// The temporary poller's drain, after its scan, eats the kick a schedule made for the external
/// loop's wait (promela/external.pml's finding, which put the drain before the scan).
#[test]
fn two_pollers_external_and_poll_finds_drain_after_scan() {
    let v = finds(
        Scenario::two_pollers_external_and_poll(),
        Bug::DrainAfterScan,
        Property::NoLostWakeup,
    );
    let drain = v.trace.events.iter().rposition(|e| e.step == Step::CtxPollEventDrain).unwrap();
    let take =
        v.trace.events.iter().rposition(|e| e.step == Step::BhPollTake && e.thread == 1).unwrap();
    assert!(take < drain, "the blocking poll drains after its scan");
}

#[test]
fn two_pollers_external_and_poll_finds_skip_event_when_notified() {
    finds(
        Scenario::two_pollers_external_and_poll().without_prepare_recheck(),
        Bug::SkipEventWhenNotified,
        Property::NoLostWakeup,
    );
}

#[test]
fn bh_schedule_vs_blocking_poll_finds_no_event_drain() {
    finds(Scenario::bh_schedule_vs_blocking_poll(), Bug::NoEventDrain, Property::NoBusyLoop);
}

#[test]
fn two_pollers_external_and_poll_finds_no_event_drain() {
    finds(Scenario::two_pollers_external_and_poll(), Bug::NoEventDrain, Property::NoBusyLoop);
}

// ---- findings about the protocol (docs/protocol.md §7) ----

/// An external-loop prepare with no re-check of `notified` (the protocol before docs/protocol.md
/// §7.3): a bare notify made while `notify_me` was 0 (before the first prepare, or between check and
/// the next prepare) wrote no event, compute_timeout cannot see its work, and the external wait
/// blocks. With the re-check it passes.
#[test]
fn notify_vs_external_loop_loses_bare_notify_without_prepare_recheck() {
    let sc = Scenario::new("notify_vs_external_loop")
        .poller(Poller::External(Loops::Forever))
        .remote(&[Op::Notify])
        .without_prepare_recheck();
    let e = explore(&sc);
    let v = e
        .violation(Property::NoLostWakeup)
        .expect("prepare without the re-check loses a bare notify");
    println!("{v}");
    explore_ok(sc.prepare_recheck());
}

/// In the abstract model's scenarios, with every waiter re-checking `notified` (poll, and prepare
/// with the re-check), a stale `notified` always prevents blocking, so skipping the event write when
/// `notified` was set loses no wakeup under sequential consistency: here `skip_event_when_notified`
/// is caught only through an external loop whose prepare has no re-check (the protocol before
/// docs/protocol.md §7.3). (The real code's external loop can also block with `notified` set: a
/// non-blocking poll nested in the prepare/check window drains a kick that landed after its accept;
/// the loom and shuttle scenario
/// `external_prepare_and_nonblocking_poll` catches the bug that way. These model scenarios have no
/// nested poll.)
#[test]
fn skip_event_when_notified_is_benign_with_prepare_recheck() {
    for sc in Scenario::named() {
        let e = explore(&sc.prepare_recheck().with_bug(Bug::SkipEventWhenNotified));
        assert!(e.ok(), "{}: {}", e.scenario, e.violations[0]);
    }
}

// ---- names shared with the implementation and Promela ----

#[test]
fn bug_and_property_names_match_the_workspace() {
    let cargo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    let line = cargo
        .lines()
        .find(|l| l.contains("cfg(aioctx_bug, values("))
        .expect("aioctx_bug check-cfg");
    for bug in Bug::ALL {
        assert_eq!(Bug::from_name(bug.as_str()), Some(*bug));
        let quoted = format!("\"{}\"", bug.as_str());
        assert_eq!(
            line.contains(&quoted),
            bug.in_impl(),
            "{bug} vs the workspace's aioctx_bug values"
        );
    }
    // The implementation's own list (what `AIOCTX_BUG` may name at run time) is the same list.
    let values = line.split("values(").nth(1).expect("values(...)");
    let declared: Vec<&str> =
        values.split(')').next().unwrap().split('"').skip(1).step_by(2).collect();
    assert_eq!(
        aioctx::sync::PLANTED_BUGS,
        declared,
        "aioctx::sync::PLANTED_BUGS vs the workspace's aioctx_bug values"
    );
    let names: Vec<&str> = Property::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "p_no_lost_wakeup",
            "p_no_busy_loop",
            "p_deleted_bh_never_called",
            "p_bh_never_on_list_twice"
        ]
    );
}

// ---- the oracle against the generator ----

/// Every enumerated interleaving is accepted by the oracle, ends in a terminal state, and the
/// terminal states reached are exactly the explorer's.
fn all_traces_accepted(sc: &Scenario, bound: Bound) -> usize {
    let mut n = 0;
    let mut steps = 0;
    let mut finals = HashSet::new();
    for t in enumerate_traces(sc, bound) {
        let r = check_trace(sc, &t)
            .unwrap_or_else(|r| panic!("{}: trace {n} rejected: {r}\n{t}", sc.name));
        assert!(r.terminal && r.violations.is_empty(), "{}: {r:?}", sc.name);
        assert!(r.ignored_keys.is_empty() && r.values > 0, "{}: {r:?}", sc.name);
        assert_eq!(r.events, t.len());
        steps += t.len();
        finals.insert(r.state);
        n += 1;
    }
    println!(
        "MODEL {} traces={n} steps={steps} preemptions={:?} final_states={}",
        sc.name,
        bound.preemptions,
        finals.len()
    );
    assert!(n > 0, "{}: no traces", sc.name);
    if bound.preemptions.is_none() {
        assert_eq!(finals.len(), explore(sc).terminal_states, "{}", sc.name);
    }
    n
}

#[test]
fn oracle_accepts_every_interleaving_of_bh_schedule_vs_blocking_poll() {
    all_traces_accepted(&Scenario::bh_schedule_vs_blocking_poll(), Bound::UNBOUNDED);
}

#[test]
fn oracle_accepts_preemption_bounded_interleavings_of_every_named_scenario() {
    for sc in Scenario::named() {
        let b1 = all_traces_accepted(&sc, Bound::preemptions(1));
        let b2 = all_traces_accepted(&sc, Bound::preemptions(2));
        assert!(b1 < b2, "{}: bound 1 gave {b1}, bound 2 gave {b2}", sc.name);
    }
}

#[test]
fn preemption_bound_zero_runs_threads_one_after_another() {
    let sc = Scenario::bh_schedule_vs_blocking_poll();
    let n0 = enumerate_traces(&sc, Bound::preemptions(0)).count();
    let all = enumerate_traces(&sc, Bound::UNBOUNDED).count();
    assert!(n0 > 0 && n0 < all, "{n0} vs {all}");
}

// ---- the oracle rejects mutated traces ----

fn sample_trace() -> (Scenario, Trace) {
    let sc = Scenario::bh_schedule_vs_blocking_poll();
    // The trace where the poller blocks first and the schedule's event wakes it.
    let t = enumerate_traces(&sc, Bound::UNBOUNDED)
        .find(|t| t.events.iter().any(|e| e.step == Step::CtxNotifyEventSet))
        .expect("a trace with an event write");
    (sc, t)
}

#[test]
fn oracle_rejects_a_wrong_notify_me_value() {
    let (sc, mut t) = sample_trace();
    let i = t.events.iter().position(|e| e.step == Step::CtxNotifyReadNotifyMe).unwrap();
    assert_eq!(t.events[i].value("notify_me"), Some(2));
    t.events[i].values[0].1 = 0;
    let r = check_trace(&sc, &t).unwrap_err();
    println!("{r}");
    assert_eq!(r.index, i);
    assert_eq!(r.event.step, Step::CtxNotifyReadNotifyMe);
    match &r.reason {
        RejectReason::ValueMismatch { expected, observed } => {
            assert_eq!(expected[0].1, 2);
            assert_eq!(observed[0].1, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.state.notify_me, 2);
    assert!(r.to_string().contains("model state: notify_me=2"));
}

#[test]
fn oracle_rejects_a_step_out_of_order() {
    let (sc, mut t) = sample_trace();
    // The remote's fence and its read of notify_me, swapped.
    let i = t.events.iter().position(|e| e.step == Step::CtxNotifyFence).unwrap();
    assert_eq!(t.events[i + 1].step, Step::CtxNotifyReadNotifyMe);
    t.events.swap(i, i + 1);
    let r = check_trace(&sc, &t).unwrap_err();
    println!("{r}");
    assert_eq!(r.index, i);
    assert_eq!(r.reason, RejectReason::NotEnabled { enabled: vec![Step::CtxNotifyFence] });
}

#[test]
fn oracle_rejects_a_wait_that_cannot_return() {
    let (sc, t) = sample_trace();
    // Move the poller's wait before the event write that ends it.
    let w = t.events.iter().position(|e| e.step == Step::CtxPollWait).unwrap();
    let s = t.events.iter().position(|e| e.step == Step::CtxNotifyEventSet).unwrap();
    assert!(s < w);
    let mut ev = t.events.clone();
    let wait = ev.remove(w);
    ev.insert(s, wait);
    let r = check_trace(&sc, &Trace { events: ev }).unwrap_err();
    assert_eq!(r.index, s);
    assert_eq!(r.reason, RejectReason::NotEnabled { enabled: vec![] });
    assert!(r.state.blocked(0));
}

#[test]
fn oracle_rejects_unknown_threads_and_wrong_values_and_lists_extra_keys() {
    let (sc, t) = sample_trace();
    let mut bad = t.clone();
    bad.events[3].thread = 7;
    let r = check_trace(&sc, &bad).unwrap_err();
    assert_eq!((r.index, r.reason), (3, RejectReason::UnknownThread { threads: 2 }));

    // A key both sides name must agree.
    let i = t.events.iter().position(|e| e.step == Step::CtxPollEventDrain).unwrap();
    assert_eq!(t.events[i].value("notifier_old"), Some(1));
    let mut bad = t.clone();
    bad.events[i].values.retain(|(k, _)| k != "notifier_old");
    bad.events[i] = bad.events[i].clone().with("notifier_old", 0);
    let r = check_trace(&sc, &bad).unwrap_err();
    assert_eq!(r.index, i);
    assert!(matches!(r.reason, RejectReason::ValueMismatch { .. }));

    // A recorder may record fewer keys (not checked) or extra ones (listed, not checked).
    let full = check_trace(&sc, &t).unwrap();
    let mut fewer = t.clone();
    fewer.events[i].values.clear();
    let mut extra = t.clone();
    extra.events[i] = extra.events[i].clone().with("stale", 0);
    let r = check_trace(&sc, &fewer).unwrap();
    assert_eq!(r.values, full.values - 2);
    let r = check_trace(&sc, &extra).unwrap();
    assert_eq!(r.values, full.values);
    assert_eq!(r.ignored_keys.into_iter().collect::<Vec<_>>(), ["stale"]);
}

#[test]
fn oracle_accepts_prefixes_and_compares_timeouts_by_class() {
    let (sc, t) = sample_trace();
    let half = Trace { events: t.events[..t.len() / 2].to_vec() };
    let r = check_trace(&sc, &half).unwrap();
    assert!(!r.terminal);
    assert_eq!(r.events, half.len());

    // The implementation may record its timeout in its own unit: only the class counts.
    let mut ns = t.clone();
    for e in &mut ns.events {
        for (k, v) in &mut e.values {
            if k == "timeout" && *v > 0 {
                *v = 10_000_000;
            }
        }
    }
    check_trace(&sc, &ns).unwrap();
}

// ---- the text format ----

#[test]
fn trace_text_round_trips() {
    for sc in [Scenario::schedule_cancel_delete(), Scenario::two_pollers_external_and_poll()] {
        for t in enumerate_traces(&sc, Bound::preemptions(1)).take(50) {
            let text = t.to_string();
            let back: Trace = text.parse().unwrap();
            assert_eq!(back, t);
            check_trace(&sc, &back).unwrap();
        }
    }
    let e: TraceEvent = "1 ctx_notify_read_notify_me notify_me=2".parse().unwrap();
    assert_eq!(e, TraceEvent::from_parts(1, Step::CtxNotifyReadNotifyMe, &[("notify_me", 2)]));
    assert_eq!(e.to_string(), "1 ctx_notify_read_notify_me notify_me=2");
}

#[test]
fn spin_simulation_output_is_parsed() {
    let sc = Scenario::bh_schedule_twice_vs_external_loop();
    let mut sc_spin = sc.clone();
    sc_spin.check_readiness_wait = false; // promela/external.pml drains on the foreign wait's readiness
    let t = enumerate_traces(&sc_spin, Bound::preemptions(1))
        .find(|t| t.events.iter().any(|e| e.step == Step::CtxPollEventDrain))
        .unwrap();
    // Write it as spin -T -p would: its own lines around the @@@ lines, pids offset by one, the
    // external wait named env_loop_wait, Promela's timeout encoding, environment steps in between.
    let mut out = String::from("  0:\tproc  - (:root:) creates proc  0 (ext_loop)\n");
    for (i, e) in t.events.iter().enumerate() {
        out += &format!(
            "{:4}:\tproc {} (x) external.pml:{} (state 3)\t[notified = 1]\n",
            i,
            e.thread + 1,
            i
        );
        let label = if e.step == Step::CtxPollWait { "env_loop_wait" } else { e.step.as_str() };
        let vals: String = e
            .values
            .iter()
            .map(|(k, v)| {
                let v = if k == "timeout" {
                    [(-1, 2), (10, 1)].iter().find(|p| p.0 == *v).map_or(*v, |p| p.1)
                } else {
                    *v
                };
                format!(" {k}={v}")
            })
            .collect();
        out += &format!("@@@ {} {label}{vals}\n", e.thread + 1);
        out += &format!("@@@ {} env_home_release_check home_lock=0\n", e.thread + 1);
    }
    out += "2 processes created\n";
    let parsed = parse_spin_output(&out).unwrap().map_threads(|p| p.checked_sub(1));
    assert_eq!(parsed, t);
    check_trace(&sc_spin, &parsed).unwrap();
    // The implementation's check makes its own readiness query: the spin trace lacks it.
    assert!(check_trace(&sc, &parsed).is_err());

    // true/false values, comments and blank lines.
    let t: Trace =
        "# a comment\n\n@@@ 0 ctx_poll_recheck_notified notified=false\n".parse().unwrap();
    assert_eq!(t.events[0].value("notified"), Some(0));
}

#[test]
fn malformed_lines_are_errors_with_line_numbers() {
    let err = "0 ctx_poll_fence\n0 ctx_no_such_step\n".parse::<Trace>().unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.contains("unknown step"));
    assert!("x ctx_poll_fence".parse::<TraceEvent>().is_err());
    assert!("0 ctx_poll_fence notify_me".parse::<TraceEvent>().is_err());
    assert!("0 ctx_poll_fence notify_me=two".parse::<TraceEvent>().is_err());
    assert!(parse_spin_output("@@@ 0 bogus_label\n").is_err());
}
