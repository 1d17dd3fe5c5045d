//! Property test: random timer `mod` / `del` / clock-advance / poll sequences against a sequential
//! reference, on the model kernel and its `ModelClock` (time moves only when the test advances it, or
//! when a blocking poll's wait times out: the model wait jumps the clock to the deadline).
//!
//! Provenance: generalises test-aio.c's `/aio/timer/schedule` (never early, only inside poll, re-arm
//! from the callback, a blocking poll wakes for the timer) to arbitrary sequences. The reference is
//! QEMU's `timerlist_run_timers` (util/qemu-timer.c) as docs/protocol.md §5 states it: at each poll,
//! the armed timers with `deadline <= now` run, earliest deadline first (ties in arming order), each
//! disarmed just before its call; `del` prevents a call; a re-arm replaces the deadline.
//!
//! Checked: a timer fires iff it is armed and its deadline is `<= now` at a poll; never early (the clock
//! read inside the callback is `>=` its deadline); at most once per arming; `del` (also dropping the
//! `Timer`) prevents it; `is_pending` / `deadline_ns` agree with the reference after every operation; a
//! blocking poll with a timer armed never blocks for good, never jumps the clock past the earliest
//! armed deadline, and fires within at most three calls (one may only consume the notify of a `mod`,
//! one may wake at a stale deadline left by a `del`).
//!
//! Cases: `AIOCTX_PROP_CASES` (default 256; the full tier uses 4096). A run of zero cases fails.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::{AioContext, Backend, Clock, Handle, ModelClock, ModelKernel, Remote, Timer};
use aioctx_conformance::rescuer::Rescuer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Timer slots.
const N: usize = 3;

fn cases() -> u32 {
    std::env::var("AIOCTX_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

// ------------------------------------------------------------------------------------------------
// Operations

/// What a timer's callback does each time it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Nothing,
    /// `if n < times { mod(now + delta) }` (QEMU's `timer_test_cb`). `delta >= 1`: a re-arm at `now`
    /// from inside the run is left out (QEMU would run it again in the same pass, aioctx in the next
    /// poll; neither is promised).
    RearmSelf {
        delta: u64,
        times: u32,
    },
    /// Disarm another slot's timer.
    Del(usize),
    /// Re-arm another slot's timer at `now + delta` (`delta >= 1`).
    Mod(usize, u64),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Arm at `now + delta`.
    Mod(usize, u64),
    Del(usize),
    /// Drop the slot's timer (disarms it) and create a new one with this effect.
    Recreate(usize, Effect),
    Advance(u64),
    Poll {
        blocking: bool,
    },
}

fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1..200u64, 200..5000u64]
}

fn effect(cross: bool) -> BoxedStrategy<Effect> {
    let own = prop_oneof![
        2 => Just(Effect::Nothing),
        3 => ((1..3000u64), (1..4u32)).prop_map(|(delta, times)| Effect::RearmSelf { delta, times }),
    ];
    if !cross {
        return own.boxed();
    }
    prop_oneof![
        2 => own,
        1 => (0..N).prop_map(Effect::Del),
        1 => ((0..N), (1..3000u64)).prop_map(|(j, d)| Effect::Mod(j, d)),
    ]
    .boxed()
}

fn op(cross: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => ((0..N), delta()).prop_map(|(i, d)| Op::Mod(i, d)),
        2 => (0..N).prop_map(Op::Del),
        1 => ((0..N), effect(cross)).prop_map(|(i, e)| Op::Recreate(i, e)),
        3 => prop_oneof![Just(0u64), 1..500u64, 500..6000u64].prop_map(Op::Advance),
        5 => any::<bool>().prop_map(|blocking| Op::Poll { blocking }),
    ]
}

// ------------------------------------------------------------------------------------------------
// The sequential reference

#[derive(Clone, Debug)]
struct MTimer {
    effect: Effect,
    n: u32,
    /// (deadline, arming sequence number)
    armed: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    timers: Vec<MTimer>,
    slots: [usize; N],
    seq: u64,
}

impl Model {
    fn new(effects: [Effect; N]) -> Model {
        let mut m = Model::default();
        for (i, e) in effects.into_iter().enumerate() {
            m.timers.push(MTimer { effect: e, n: 0, armed: None });
            m.slots[i] = i;
        }
        m
    }
    fn arm(&mut self, slot: usize, deadline: u64) {
        self.seq += 1;
        self.timers[self.slots[slot]].armed = Some((deadline, self.seq));
    }
    fn del(&mut self, slot: usize) {
        self.timers[self.slots[slot]].armed = None;
    }
    fn earliest(&self) -> Option<u64> {
        self.timers.iter().filter_map(|t| t.armed.map(|a| a.0)).min()
    }
    /// `timerlist_run_timers` at `now`: the calls, in order (timer record).
    fn run(&mut self, now: u64) -> Vec<usize> {
        let mut calls = Vec::new();
        loop {
            let due = (0..self.timers.len())
                .filter_map(|r| self.timers[r].armed.map(|a| (a, r)))
                .filter(|((d, _), _)| *d <= now)
                .min();
            let Some((_, r)) = due else { break };
            self.timers[r].armed = None;
            self.timers[r].n += 1;
            calls.push(r);
            let slot = self.slots.iter().position(|&x| x == r);
            match self.timers[r].effect {
                Effect::Nothing => {}
                Effect::RearmSelf { delta, times } => {
                    if self.timers[r].n < times {
                        // The callback re-arms through its own slot (it is still there: only the
                        // test recreates timers, between polls).
                        self.arm(slot.expect("a running timer is in its slot"), now + delta);
                    }
                }
                Effect::Del(j) => self.del(j),
                Effect::Mod(j, d) => self.arm(j, now + d),
            }
        }
        calls
    }
}

// ------------------------------------------------------------------------------------------------
// The implementation side

struct Env {
    handle: Handle,
    clock: Arc<ModelClock>,
    slots: Vec<Mutex<Option<Timer<Remote>>>>,
    /// (timer record, clock read inside the callback)
    log: Mutex<Vec<(usize, u64)>>,
}

fn new_timer(env: &Arc<Env>, r: usize, slot: usize, effect: Effect) -> Timer<Remote> {
    let e = env.clone();
    let mut n = 0u32;
    env.handle.timer_new(move |_| {
        let now = e.handle.now_ns();
        n += 1;
        e.log.lock().unwrap().push((r, now));
        let arm = |j: usize, d: u64| {
            if let Some(t) = e.slots[j].lock().unwrap().as_ref() {
                t.mod_ns(now + d)
            }
        };
        match effect {
            Effect::Nothing => {}
            Effect::RearmSelf { delta, times } => {
                if n < times {
                    arm(slot, delta)
                }
            }
            Effect::Del(j) => {
                if let Some(t) = e.slots[j].lock().unwrap().as_ref() {
                    t.del()
                }
            }
            Effect::Mod(j, d) => arm(j, d),
        }
    })
}

// ------------------------------------------------------------------------------------------------
// Running a sequence

#[derive(Default)]
struct Stats {
    polls: AtomicUsize,
    fired: AtomicUsize,
}

fn run_case(effects: [Effect; N], ops: &[Op], rescuer: &Rescuer, stats: &Stats) {
    let k = ModelKernel::new();
    let clock = k.clock();
    clock.set_ns(1_000); // not at 0, so "deadline <= now" is not trivially about 0
    let ctx = AioContext::builder().backend(Backend::Model(k)).build().unwrap();
    let env = Arc::new(Env {
        handle: ctx.handle().clone(),
        clock: clock.clone(),
        slots: (0..N).map(|_| Mutex::new(None)).collect(),
        log: Mutex::default(),
    });
    let mut m = Model::new(effects);
    for (i, e) in effects.into_iter().enumerate() {
        *env.slots[i].lock().unwrap() = Some(new_timer(&env, i, i, e));
    }
    let now = || env.clock.now_ns();

    // One poll, checked against the reference. Returns whether a timer fired.
    let poll = |m: &mut Model, blocking: bool| -> bool {
        let before = now();
        let earliest = m.earliest();
        let progress = if blocking { rescuer.poll_true(&ctx) } else { ctx.poll(false) };
        let after = now();
        assert!(after >= before, "the clock went backwards");
        if !blocking {
            assert_eq!(after, before, "a non-blocking poll moved the model clock");
        } else if let Some(e) = earliest {
            assert!(
                after <= before.max(e),
                "poll(true) jumped the clock to {after}, past the earliest armed deadline {e}"
            );
        }
        let log = std::mem::take(&mut *env.log.lock().unwrap());
        // Never early: the clock read inside each callback is at or after its armed deadline.
        let mut expected_at = Vec::new();
        {
            let mut m2 = m.clone();
            for &(r, at) in &log {
                if let Some((d, _)) = m2.timers[r].armed {
                    assert!(at >= d, "timer {r} fired at {at}, before its deadline {d}");
                    m2.timers[r].armed = None;
                }
                expected_at.push(at);
            }
        }
        let calls = m.run(after);
        let mut seen: Vec<usize> = log.iter().map(|c| c.0).collect();
        let mut want = calls.clone();
        seen.sort_unstable();
        want.sort_unstable();
        assert_eq!(seen, want, "poll({blocking}) at {after}: fired {log:?}, reference {calls:?}");
        assert!(expected_at.iter().all(|&at| at == after), "a callback saw a different clock");
        assert_eq!(progress, !calls.is_empty(), "poll({blocking}) progress");
        stats.polls.fetch_add(1, SeqCst);
        stats.fired.fetch_add(calls.len(), SeqCst);
        !calls.is_empty()
    };

    for &op in ops {
        match op {
            Op::Mod(i, d) => {
                let t = now() + d;
                env.slots[i].lock().unwrap().as_ref().unwrap().mod_ns(t);
                m.arm(i, t);
            }
            Op::Del(i) => {
                env.slots[i].lock().unwrap().as_ref().unwrap().del();
                m.del(i);
            }
            Op::Recreate(i, e) => {
                let old = env.slots[i].lock().unwrap().take();
                drop(old); // disarms
                m.del(i);
                m.timers.push(MTimer { effect: e, n: 0, armed: None });
                let r = m.timers.len() - 1;
                m.slots[i] = r;
                *env.slots[i].lock().unwrap() = Some(new_timer(&env, r, i, e));
            }
            Op::Advance(d) => env.clock.advance(Duration::from_nanos(d)),
            Op::Poll { blocking: false } => {
                poll(&mut m, false);
            }
            Op::Poll { blocking: true } => {
                if m.earliest().is_none() {
                    continue; // nothing armed: a blocking poll would block forever
                }
                let mut tries = 0;
                while !poll(&mut m, true) {
                    tries += 1;
                    assert!(tries < 3, "three blocking polls with a timer armed and none fired");
                }
            }
        }
        // `deadline_ns` / `is_pending` agree with the reference.
        for i in 0..N {
            let g = env.slots[i].lock().unwrap();
            let t = g.as_ref().unwrap();
            let want = m.timers[m.slots[i]].armed.map(|a| a.0);
            assert_eq!(t.deadline_ns(), want, "slot {i} after {op:?}");
            assert_eq!(t.is_pending(), want.is_some());
        }
    }
    // Dropping every timer disarms it: nothing fires however far the clock goes.
    for s in &env.slots {
        let t = s.lock().unwrap().take();
        drop(t);
    }
    env.clock.advance(Duration::from_secs(1));
    assert!(!ctx.poll(false), "a dropped timer fired");
    assert!(env.log.lock().unwrap().is_empty());
}

fn run_property(name: &str, cross: bool) {
    let cases = cases();
    let rescuer = Rescuer::new();
    let runs = AtomicUsize::new(0);
    let stats = Stats::default();
    let t = Instant::now();
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let strategy = (
        [effect(cross), effect(cross), effect(cross)],
        proptest::collection::vec(op(cross), 1..48),
    );
    let r = runner.run(&strategy, |(effects, ops)| {
        runs.fetch_add(1, SeqCst);
        run_case(effects, &ops, &rescuer, &stats);
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    let n = runs.load(SeqCst);
    assert!(cases > 0 && n >= cases as usize, "ran {n} cases, wanted {cases}");
    assert!(stats.fired.load(SeqCst) > 0, "no timer ever fired");
    println!(
        "{name}: {cases} cases passed ({n} executions, {} polls, {} timer calls) in {:?}",
        stats.polls.load(SeqCst),
        stats.fired.load(SeqCst),
        t.elapsed()
    );
}

/// Callbacks that re-arm themselves (QEMU's `timer_test_cb`), plus every operation from the test.
#[test]
fn timer_sequences_match_sequential_reference() {
    run_property("prop_timers", false);
}

/// As above, with callbacks that `del` or re-arm other timers. QEMU pops one expired timer at a time
/// under the list lock, so a `del` from an earlier callback of the same pass prevents a later call.
#[test]
fn timer_sequences_with_cross_timer_callbacks_match_sequential_reference() {
    run_property("prop_timers (cross-timer callbacks)", true);
}

/// Minimal form of the bug above: A and B are both due; A's callback runs first (earlier deadline) and
/// deletes B. `Timer::del` promises "a pending expiry will not run it"; QEMU's `timerlist_run_timers`
/// agrees. aioctx runs B anyway.
#[test]
fn timer_del_from_another_timers_callback_prevents_its_call() {
    let k = ModelKernel::new();
    let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
    let b_calls = Arc::new(AtomicUsize::new(0));
    let b2 = b_calls.clone();
    let b: Arc<Mutex<Option<Timer>>> = Arc::default();
    *b.lock().unwrap() = Some(ctx.timer_new(move |_| {
        b2.fetch_add(1, SeqCst);
    }));
    b.lock().unwrap().as_ref().unwrap().mod_ns(100);
    let b3 = b.clone();
    let a = ctx.timer_new(move |_| b3.lock().unwrap().as_ref().unwrap().del());
    a.mod_ns(50);
    k.clock().set_ns(200);
    assert!(ctx.poll(false));
    assert_eq!(b_calls.load(SeqCst), 0, "B ran although A's callback deleted it first");
    b.lock().unwrap().take();
}

/// The same defect seen as an early call: A's callback moves B to the future; B still runs now, while
/// it is armed for a later deadline (and then runs again at that deadline).
#[test]
fn timer_rearmed_by_another_timers_callback_is_not_called_early() {
    let k = ModelKernel::new();
    let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
    let h = ctx.handle().clone();
    let b_at = Arc::new(Mutex::new(Vec::new()));
    let b2 = b_at.clone();
    let b: Arc<Mutex<Option<Timer>>> = Arc::default();
    *b.lock().unwrap() = Some(ctx.timer_new(move |_| b2.lock().unwrap().push(h.now_ns())));
    b.lock().unwrap().as_ref().unwrap().mod_ns(100);
    let b3 = b.clone();
    let a = ctx.timer_new(move |_| b3.lock().unwrap().as_ref().unwrap().mod_ns(10_000));
    a.mod_ns(50);
    k.clock().set_ns(200);
    assert!(ctx.poll(false));
    assert_eq!(*b_at.lock().unwrap(), Vec::<u64>::new(), "B ran at 200 while armed for 10000");
    b.lock().unwrap().take();
}
