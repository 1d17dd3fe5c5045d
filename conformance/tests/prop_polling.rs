//! Property tests of adaptive userspace polling (docs/protocol.md §3).
//!
//! Provenance: no QEMU unit test checks the arithmetic; QEMU's `adjust_polling_time`
//! (util/aio-posix.c) is the upstream. Two layers:
//!
//! 1. `aioctx::adjust_poll_ns` against a reference written from docs/protocol.md §3 (in u128, so the
//!    reference cannot overflow where the implementation saturates), plus invariants: the result never
//!    exceeds `max` when the window did not; a wait that fitted the window keeps it; a wait past `max`
//!    never grows it; from 0, waits between the window and `max` give 4000 · grow^k capped at `max`
//!    (quickcheck: the inputs are plain values).
//! 2. End to end, on the model kernel and `ModelClock`: a random sequence of "the event arrives X ns
//!    after the poll started" drives one poll handler; after each event the window reported by
//!    `ctx.poll_ns(fd)` equals the reference fold of `adjust` over the waits (proptest). The harness
//!    makes the loop's own `block_ns` measurement equal X exactly, whichever way the event is found:
//!    - window > 0: userspace polling runs; each `io_poll` lets model time pass (in steps of a third
//!      of the window) and reports ready once the clock reaches the arrival time; if the window is
//!      spent first, `io_poll_end` (called right before the blocking wait) lets the rest of the wait
//!      pass and the final poll after it finds the event;
//!    - window 0 with poll mode still on from an earlier iteration: no polling, `io_poll_end` and the
//!      final poll as above;
//!    - window 0, poll mode off: the fd is made readable and the clock ticks X per read; the loop
//!      reads the clock exactly twice between its start and its `block_ns` (no timers, no polling).
//!
//!    Changing the poll parameters (`set_poll_params`) resets the window to 0.
//!
//! Cases: `AIOCTX_PROP_CASES` (default 256; the full tier uses 4096) for the end-to-end property;
//! the arithmetic properties run 64 times that many (they are cheap). A run of zero cases fails.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

use aioctx::{adjust_poll_ns, AioContext, Backend, Clock, FdHandler, ModelClock, ModelKernel};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn cases() -> u32 {
    std::env::var("AIOCTX_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// docs/protocol.md §3, written independently of `poll.rs`.
fn reference(poll_ns: u64, block_ns: u64, max: u64, grow: u64, shrink: u64) -> u64 {
    if block_ns <= poll_ns {
        return poll_ns; // the wait fitted the window
    }
    if block_ns > max {
        return match shrink {
            0 => 0, // "shrink 0 means reset to 0"
            s => poll_ns / s,
        };
    }
    if poll_ns < max && block_ns < max {
        let grow = if grow == 0 { 2 } else { grow } as u128;
        let next = if poll_ns == 0 { 4000 } else { poll_ns as u128 * grow };
        return next.min(max as u128) as u64;
    }
    poll_ns
}

// ------------------------------------------------------------------------------------------------
// 1. The arithmetic (quickcheck)

/// A value from one of the interesting ranges: tiny, around QEMU's 4000 / 32768, anything.
fn value(g: &mut Gen) -> u64 {
    let class = *g.choose(&[0u8, 1, 2, 3, 4, 5]).unwrap();
    let small = u64::arbitrary(g) % 64;
    match class {
        0 => small,
        1 => 4000 - 32 + small,
        2 => 32768 - 32 + small,
        3 => u64::arbitrary(g) % 10_000_000,
        4 => u64::MAX - small,
        _ => u64::arbitrary(g),
    }
}

/// One call of `adjust_poll_ns`: the wait is often placed relative to the window and to max.
#[derive(Clone, Debug)]
struct Args {
    poll_ns: u64,
    block_ns: u64,
    max: u64,
    grow: u64,
    shrink: u64,
}

impl Arbitrary for Args {
    fn arbitrary(g: &mut Gen) -> Args {
        let max = value(g);
        let poll_ns = if bool::arbitrary(g) { value(g) % max.saturating_add(1) } else { value(g) };
        let d = u64::arbitrary(g) % 3;
        let block_ns = match u8::arbitrary(g) % 8 {
            0 => poll_ns.saturating_sub(d),
            1 => poll_ns,
            2 => poll_ns.saturating_add(1 + d),
            3 => max.saturating_sub(1 + d),
            4 => max,
            5 => max.saturating_add(1 + d),
            _ => value(g),
        };
        let grow = *g.choose(&[0u64, 0, 1, 2, 3, 4, 10, u64::MAX]).unwrap();
        let shrink = *g.choose(&[0u64, 0, 1, 2, 3, 4, u64::MAX]).unwrap();
        Args { poll_ns, block_ns, max, grow, shrink }
    }
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> TestResult {
    if ok {
        TestResult::passed()
    } else {
        TestResult::error(msg())
    }
}

fn quick<A: quickcheck::Testable>(name: &str, prop: A) {
    let n = cases() as u64 * 64;
    let t = Instant::now();
    match QuickCheck::new().tests(n).max_tests(n * 10).quicktest(prop) {
        Ok(passed) => {
            assert!(n > 0 && passed >= n, "{name}: {passed} of {n} cases passed");
            println!("{name}: {passed} cases passed in {:?}", t.elapsed());
        }
        Err(r) => panic!("{name}: failed: {r:?}"),
    }
}

#[test]
fn adjust_poll_ns_matches_protocol_reference() {
    fn prop(a: Args) -> TestResult {
        let got = adjust_poll_ns(a.poll_ns, a.block_ns, a.max, a.grow, a.shrink);
        let want = reference(a.poll_ns, a.block_ns, a.max, a.grow, a.shrink);
        check(got == want, || format!("{a:?}: adjust gave {got}, the reference {want}"))
    }
    quick("adjust == reference", prop as fn(Args) -> TestResult);
}

#[test]
fn adjust_poll_ns_invariants() {
    fn prop(a: Args) -> TestResult {
        let r = adjust_poll_ns(a.poll_ns, a.block_ns, a.max, a.grow, a.shrink);
        let ok =
        // Never above max when the window was not.
        (a.poll_ns > a.max || r <= a.max)
            // A wait that fitted the window keeps it.
            && (a.block_ns > a.poll_ns || r == a.poll_ns)
            // A wait longer than max never grows the window (shrink 0 resets it).
            && (a.block_ns <= a.max || a.block_ns <= a.poll_ns || r <= a.poll_ns)
            && (a.block_ns <= a.max || a.block_ns <= a.poll_ns || a.shrink != 0 || r == 0)
            // A wait between the window and max never shrinks it.
            && (a.block_ns > a.max || r >= a.poll_ns);
        check(ok, || format!("{a:?}: adjust gave {r}"))
    }
    quick("adjust invariants", prop as fn(Args) -> TestResult);
}

#[test]
fn adjust_poll_ns_grow_sequence() {
    fn prop(max: u64, grow: u8) -> TestResult {
        let max = 1 + max % 50_000_000;
        let grow = (grow % 6) as u64; // 0 means 2
        let g = if grow == 0 { 2 } else { grow };
        let mut w = 0u64;
        let mut want = 4000u64.min(max);
        // A wait just longer than the window and shorter than max, while there is room for one.
        for _ in 0..64 {
            if w + 1 >= max {
                break;
            }
            w = adjust_poll_ns(w, w + 1, max, grow, 0);
            if w != want {
                return TestResult::error(format!("max {max} grow {grow}: got {w}, want {want}"));
            }
            want = (want as u128 * g as u128).min(max as u128) as u64;
        }
        // With grow >= 2 the window reaches max (or max - 1, where no wait can grow it any more).
        check(g < 2 || w + 1 >= max, || format!("max {max} grow {grow}: stuck at {w}"))
    }
    quick("adjust grow sequence", prop as fn(u64, u8) -> TestResult);
}

/// docs/protocol.md §3's own example: defaults give 0 → 4000 → 8000 → 16000 → 32000 → 32768, and
/// any wait longer than max resets to 0.
#[test]
fn adjust_poll_ns_protocol_example() {
    let mut w = 0;
    let mut seen = vec![];
    for _ in 0..6 {
        let block = (w + 1).min(32767);
        let next = adjust_poll_ns(w, block, 32768, 0, 0);
        assert_eq!(next, reference(w, block, 32768, 0, 0));
        w = next;
        seen.push(w);
    }
    assert_eq!(seen, [4000, 8000, 16000, 32000, 32768, 32768]);
    assert_eq!(adjust_poll_ns(32768, 32769, 32768, 0, 0), 0);
}

// ------------------------------------------------------------------------------------------------
// 2. End to end: the loop's own block_ns drives the window

/// Where the event arrives, relative to the current window and to max (resolved at run time).
#[derive(Clone, Copy, Debug)]
enum Wait {
    Zero,
    BelowWindow(u64),
    AtWindow,
    AboveWindow(u64),
    BelowMax(u64),
    AtMax,
    AboveMax(u64),
    Any(u64),
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Event(Wait),
    /// `set_poll_params(max, grow, shrink)`: every window restarts at 0.
    SetParams(u64, u64, u64),
}

fn params() -> impl Strategy<Value = (u64, u64, u64)> {
    (
        prop_oneof![Just(32768u64), 1..100u64, 100..100_000u64, Just(4000u64)],
        prop_oneof![Just(0u64), 1..5u64],
        prop_oneof![Just(0u64), 1..5u64],
    )
}

fn wait() -> impl Strategy<Value = Wait> {
    prop_oneof![
        Just(Wait::Zero),
        (0..5u64).prop_map(Wait::BelowWindow),
        Just(Wait::AtWindow),
        (1..5000u64).prop_map(Wait::AboveWindow),
        (1..5u64).prop_map(Wait::BelowMax),
        Just(Wait::AtMax),
        (1..100_000u64).prop_map(Wait::AboveMax),
        (0..200_000u64).prop_map(Wait::Any),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => wait().prop_map(Step::Event),
        1 => params().prop_map(|(m, g, s)| Step::SetParams(m, g, s)),
    ]
}

impl Wait {
    fn resolve(self, window: u64, max: u64) -> u64 {
        match self {
            Wait::Zero => 0,
            Wait::BelowWindow(d) => window.saturating_sub(d),
            Wait::AtWindow => window,
            Wait::AboveWindow(d) => window + d,
            Wait::BelowMax(d) => max.saturating_sub(d),
            Wait::AtMax => max,
            Wait::AboveMax(d) => max + d,
            Wait::Any(x) => x,
        }
    }
}

/// The simulated device: one pending event with an absolute arrival time on the model clock.
struct Device {
    clock: Arc<ModelClock>,
    /// Arrival time of the pending event, `u64::MAX` if none.
    arrival: AtomicU64,
    /// How far one `io_poll` lets model time pass.
    step: AtomicU64,
    reads: AtomicU32,
    readies: AtomicU32,
}

impl Device {
    fn handler(self: &Arc<Self>, k: &Arc<ModelKernel>, fd: RawFd) -> FdHandler {
        let (d1, d2, d3, d4) = (self.clone(), self.clone(), self.clone(), self.clone());
        let k1 = k.clone();
        FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
                d1.arrival.store(u64::MAX, SeqCst);
                d1.reads.fetch_add(1, SeqCst);
            })
            .on_poll(
                move |_| {
                    let t = d2.arrival.load(SeqCst);
                    if t == u64::MAX {
                        return false;
                    }
                    let now = d2.clock.now_ns();
                    if now < t {
                        let step = d2.step.load(SeqCst).min(t - now);
                        d2.clock.set_ns(now + step);
                    }
                    d2.clock.now_ns() >= t
                },
                move |_| {
                    d3.arrival.store(u64::MAX, SeqCst);
                    d3.readies.fetch_add(1, SeqCst);
                },
            )
            .on_poll_end(move |_| {
                // The loop is about to block: the rest of the wait passes, the event arrives.
                let t = d4.arrival.load(SeqCst);
                if t != u64::MAX {
                    d4.clock.set_ns(t);
                }
            })
    }
}

fn run_case(initial: (u64, u64, u64), steps: &[Step], events: &AtomicUsize, polled: &AtomicUsize) {
    let k = ModelKernel::new();
    let clock = k.clock();
    clock.set_ns(1_000_000);
    let (mut max, mut grow, mut shrink) = initial;
    let ctx = AioContext::builder()
        .backend(Backend::Model(k.clone()))
        .poll_params(max, grow, shrink)
        .build()
        .unwrap();
    let fd = k.open();
    let dev = Arc::new(Device {
        clock: clock.clone(),
        arrival: AtomicU64::new(u64::MAX),
        step: AtomicU64::new(1),
        reads: AtomicU32::new(0),
        readies: AtomicU32::new(0),
    });
    ctx.set_fd_handler(fd, dev.handler(&k, fd)).unwrap();
    assert!(!ctx.poll(false), "the registration's notify is not progress");
    let mut window = 0u64; // the reference
    for (i, &s) in steps.iter().enumerate() {
        match s {
            Step::SetParams(m, g, sh) => {
                (max, grow, shrink) = (m, g, sh);
                ctx.set_poll_params(max, grow, shrink);
                assert!(!ctx.poll(false), "step {i}: a parameter change is not progress");
                window = 0;
            }
            Step::Event(w) => {
                let got = ctx.poll_ns(fd).unwrap();
                assert_eq!(got, window, "step {i}: window before the event");
                let x = w.resolve(window, max);
                let events_before = dev.reads.load(SeqCst) + dev.readies.load(SeqCst);
                if window == 0 && !ctx.poll_started() {
                    // No polling at all: the fd wakes the wait; the clock ticks x per read.
                    k.set_readable(fd, true);
                    clock.set_tick(x);
                    let p = ctx.poll(true);
                    clock.set_tick(0);
                    assert!(p, "step {i}: the fd event is progress");
                } else {
                    dev.step.store((window / 3).max(1), SeqCst);
                    dev.arrival.store(clock.now_ns() + x, SeqCst);
                    assert!(ctx.poll(true), "step {i}: the polled event is progress");
                }
                assert_eq!(
                    dev.reads.load(SeqCst) + dev.readies.load(SeqCst),
                    events_before + 1,
                    "step {i}: exactly one dispatch"
                );
                assert_eq!(dev.arrival.load(SeqCst), u64::MAX);
                window = reference(window, x, max, grow, shrink);
                assert_eq!(
                    ctx.poll_ns(fd),
                    Some(window),
                    "step {i}: event after {x} ns with max {max}, grow {grow}, shrink {shrink}"
                );
                assert!(ctx.is_polled(fd), "a poll handler joins the poll list on its first event");
                events.fetch_add(1, SeqCst);
            }
        }
    }
    polled.fetch_add(dev.readies.load(SeqCst) as usize, SeqCst);
    ctx.remove_fd_handler(fd).unwrap();
    assert!(!ctx.poll(false));
}

#[test]
fn poll_window_follows_reference_end_to_end() {
    let cases = cases();
    let runs = AtomicUsize::new(0);
    let events = AtomicUsize::new(0);
    let polled = AtomicUsize::new(0);
    let t = Instant::now();
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let r = runner.run(&(params(), proptest::collection::vec(step(), 1..40)), |(p, steps)| {
        runs.fetch_add(1, SeqCst);
        run_case(p, &steps, &events, &polled);
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    let n = runs.load(SeqCst);
    assert!(cases > 0 && n >= cases as usize, "ran {n} cases, wanted {cases}");
    let ev = events.load(SeqCst);
    assert!(ev > 0, "no event was ever checked");
    let polled = polled.load(SeqCst);
    assert!(polled > 0 && polled < ev, "both paths (userspace polling, fd wait) were exercised");
    println!(
        "prop_polling end to end: {cases} cases passed ({n} executions, {ev} events, {polled} of \
         them found by userspace polling) in {:?}",
        t.elapsed()
    );
}
