//! Property test: random sequences of bottom-half API operations against a sequential reference.
//!
//! Provenance: no QEMU test does this; it generalises test-aio.c's `/aio/bh/*` cases (schedule,
//! schedule10, cancel, delete, callback-delete) to arbitrary interleavings of the same operations, on
//! the model kernel (`Backend::Model`: no syscalls, deterministic).
//!
//! Operations, on `N` BH slots: create a BH (with a callback effect), `schedule`, `schedule_idle`,
//! `cancel`, drop (QEMU `qemu_bh_delete`), `bh_oneshot`, `poll(false)`, and `poll(true)` only when the
//! reference says it cannot block. Callback effects: reschedule itself up to a bound, drop itself,
//! schedule / schedule-idle / cancel / drop another slot, create a oneshot.
//!
//! The reference is docs/protocol.md §4 written as a plain sequential model (flags PENDING,
//! SCHEDULED, IDLE, DELETED, a LIFO list, take-all slices). The order of the BHs within one slice is
//! unspecified (docs/protocol.md §6.4), so the reference is nondeterministic: a poll is simulated
//! under every order of its slice, and the set of reference states consistent with what the implementation showed (which
//! callbacks ran in what order, the return value, which BHs were freed, `is_scheduled`) is carried
//! forward. The test fails when that set becomes empty.
//!
//! Checked, beyond the reference: no BH callback runs after the test's drop of it returned; every BH
//! and oneshot is freed exactly once (a drop guard in each closure), none is leaked at the end.
//!
//! Cases: `AIOCTX_PROP_CASES` (default 256; the full tier uses 4096). A run of zero cases fails.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::{AioContext, Backend, Bh, Handle, ModelKernel, Remote};
use aioctx_conformance::rescuer::Rescuer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// BH slots.
const N: usize = 3;

fn cases() -> u32 {
    std::env::var("AIOCTX_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

// ------------------------------------------------------------------------------------------------
// Operations

/// What a BH's callback does each time it runs (besides counting the call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    Nothing,
    /// `if n < max { schedule self }` (QEMU's `bh_test_cb`).
    RescheduleSelfUntil(u32),
    /// Drop its own handle (QEMU's `bh_delete_cb`).
    DropSelf,
    Schedule(usize),
    ScheduleIdle(usize),
    Cancel(usize),
    Drop(usize),
    Oneshot,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Create a BH in the slot if it is empty.
    New(usize, Effect),
    Schedule(usize),
    ScheduleIdle(usize),
    Cancel(usize),
    /// Drop the slot's BH (delete).
    Drop(usize),
    Oneshot,
    Poll {
        blocking: bool,
    },
}

fn effect() -> impl Strategy<Value = Effect> {
    prop_oneof![
        2 => Just(Effect::Nothing),
        2 => (1..4u32).prop_map(Effect::RescheduleSelfUntil),
        1 => Just(Effect::DropSelf),
        2 => (0..N).prop_map(Effect::Schedule),
        1 => (0..N).prop_map(Effect::ScheduleIdle),
        1 => (0..N).prop_map(Effect::Cancel),
        1 => (0..N).prop_map(Effect::Drop),
        1 => Just(Effect::Oneshot),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => ((0..N), effect()).prop_map(|(s, e)| Op::New(s, e)),
        6 => (0..N).prop_map(Op::Schedule),
        1 => (0..N).prop_map(Op::ScheduleIdle),
        1 => (0..N).prop_map(Op::Cancel),
        1 => (0..N).prop_map(Op::Drop),
        1 => Just(Op::Oneshot),
        6 => any::<bool>().prop_map(|blocking| Op::Poll { blocking }),
    ]
}

// ------------------------------------------------------------------------------------------------
// The sequential reference (docs/protocol.md §4)

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Id {
    /// A BH created by `New`, numbered in creation order.
    Bh(usize),
    /// A oneshot, numbered in creation order.
    One(usize),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MBh {
    slot: usize,
    effect: Effect,
    n: u32,
    pending: bool,
    scheduled: bool,
    idle: bool,
    deleted: bool,
    freed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Model {
    bhs: Vec<MBh>,
    slots: [Option<usize>; N],
    /// `bh_list` (push = LIFO; the order is irrelevant since every slice order is tried).
    list: Vec<Id>,
    /// Oneshots: called?, freed?
    ones: Vec<(bool, bool)>,
    /// `notified`: set by every enqueue, cleared by accept.
    notified: bool,
}

/// What one poll showed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Obs {
    /// Named BH calls, in order.
    calls: Vec<usize>,
    /// Oneshot calls (their order is irrelevant: they have no effects).
    ones: BTreeSet<usize>,
    progress: bool,
    freed: BTreeSet<Id>,
}

const SCHEDULED: u8 = 1;
const IDLE: u8 = 2;
const DELETED: u8 = 4;

impl Model {
    fn enqueue(&mut self, id: Id, flags: u8) {
        match id {
            Id::Bh(r) => {
                let b = &mut self.bhs[r];
                let was_pending = b.pending;
                b.pending = true;
                b.scheduled |= flags & SCHEDULED != 0;
                b.idle |= flags & IDLE != 0;
                b.deleted |= flags & DELETED != 0;
                if !was_pending {
                    self.list.push(id);
                }
            }
            Id::One(_) => self.list.push(id),
        }
        self.notified = true;
    }
    fn schedule_slot(&mut self, s: usize, flags: u8) {
        if let Some(r) = self.slots[s] {
            self.enqueue(Id::Bh(r), flags);
        }
    }
    fn cancel_slot(&mut self, s: usize) {
        if let Some(r) = self.slots[s] {
            self.bhs[r].scheduled = false;
        }
    }
    fn drop_slot(&mut self, s: usize) {
        if let Some(r) = self.slots[s].take() {
            self.enqueue(Id::Bh(r), DELETED);
        }
    }
    fn oneshot(&mut self) {
        self.ones.push((false, false));
        let id = Id::One(self.ones.len() - 1);
        self.enqueue(id, SCHEDULED);
    }
    fn new_bh(&mut self, s: usize, effect: Effect) -> bool {
        if self.slots[s].is_some() {
            return false;
        }
        self.bhs.push(MBh {
            slot: s,
            effect,
            n: 0,
            pending: false,
            scheduled: false,
            idle: false,
            deleted: false,
            freed: false,
        });
        self.slots[s] = Some(self.bhs.len() - 1);
        true
    }
    fn apply(&mut self, op: Op) {
        match op {
            Op::New(s, e) => {
                self.new_bh(s, e);
            }
            Op::Schedule(s) => self.schedule_slot(s, SCHEDULED),
            Op::ScheduleIdle(s) => self.schedule_slot(s, SCHEDULED | IDLE),
            Op::Cancel(s) => self.cancel_slot(s),
            Op::Drop(s) => self.drop_slot(s),
            Op::Oneshot => self.oneshot(),
            Op::Poll { .. } => unreachable!("polls are simulated by `poll`"),
        }
    }

    /// Can `poll(true)` block? (compute_timeout: 0 with a pending non-idle BH, 10 ms — which the model
    /// kernel turns into a clock jump — with only idle ones; `notified` cancels the wait.)
    fn may_block(&self) -> bool {
        !self.notified
            && !self.list.iter().any(|id| match *id {
                Id::Bh(r) => self.bhs[r].scheduled && !self.bhs[r].deleted,
                Id::One(_) => true,
            })
    }

    /// Every outcome of one poll: accept, take the list, run the slice in each possible order.
    fn poll(&self) -> Vec<(Model, Obs)> {
        let mut base = self.clone();
        base.notified = false; // accept, before the BH scan
        let taken = std::mem::take(&mut base.list);
        let mut obs = Obs::default();
        let mut named = Vec::new();
        for id in taken {
            match id {
                Id::One(k) => {
                    // Oneshots have no effects: they commute with everything in the slice.
                    base.ones[k] = (true, true);
                    obs.ones.insert(k);
                    obs.freed.insert(id);
                    obs.progress = true;
                }
                Id::Bh(r) => named.push(r),
            }
        }
        let mut out = Vec::new();
        permutations(&named, &mut |order| {
            let mut m = base.clone();
            let mut o = obs.clone();
            for &r in order {
                m.dequeue(r, &mut o);
            }
            out.push((m, o));
        });
        out
    }

    fn dequeue(&mut self, r: usize, o: &mut Obs) {
        let b = &mut self.bhs[r];
        let (s, i, d) = (b.scheduled, b.idle, b.deleted);
        b.pending = false;
        b.scheduled = false;
        b.idle = false;
        if s && !d {
            b.n += 1;
            let (n, slot, effect) = (b.n, b.slot, b.effect);
            o.calls.push(r);
            o.progress |= !i;
            match effect {
                Effect::Nothing => {}
                Effect::RescheduleSelfUntil(max) => {
                    if n < max {
                        self.schedule_slot(slot, SCHEDULED);
                    }
                }
                Effect::DropSelf => self.drop_slot(slot),
                Effect::Schedule(j) => self.schedule_slot(j, SCHEDULED),
                Effect::ScheduleIdle(j) => self.schedule_slot(j, SCHEDULED | IDLE),
                Effect::Cancel(j) => self.cancel_slot(j),
                Effect::Drop(j) => self.drop_slot(j),
                Effect::Oneshot => self.oneshot(),
            }
        } else if d {
            b.freed = true;
            o.freed.insert(Id::Bh(r));
        }
    }
}

/// Call `f` with every permutation of `items` (a slice holds at most N named BHs).
fn permutations(items: &[usize], f: &mut dyn FnMut(&[usize])) {
    fn go(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            go(v, k + 1, f);
            v.swap(k, i);
        }
    }
    go(&mut items.to_vec(), 0, f);
}

// ------------------------------------------------------------------------------------------------
// The implementation side

/// Records the freeing of a BH's closure (its captures are dropped exactly when the BH is freed).
struct FreeMark(Id, Arc<Mutex<Vec<Id>>>);
impl Drop for FreeMark {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

struct Env {
    handle: Handle,
    slots: Vec<Mutex<Option<Bh<Remote>>>>,
    /// Calls in order (named and oneshot).
    log: Mutex<Vec<Id>>,
    freed: Arc<Mutex<Vec<Id>>>,
    /// BHs whose drop by the test has returned: their callback must never run again.
    dropped: Mutex<HashSet<usize>>,
    next_one: AtomicUsize,
}

impl Env {
    fn schedule(&self, s: usize, idle: bool) {
        if let Some(b) = self.slots[s].lock().unwrap().as_ref() {
            if idle {
                b.schedule_idle()
            } else {
                b.schedule()
            }
        }
    }
    fn cancel(&self, s: usize) {
        if let Some(b) = self.slots[s].lock().unwrap().as_ref() {
            b.cancel()
        }
    }
    /// Take the handle out under the lock, drop it outside (the drop notifies).
    fn drop_slot(&self, s: usize) -> Option<()> {
        let b = self.slots[s].lock().unwrap().take();
        b.map(drop)
    }
    fn oneshot(self: &Arc<Self>) {
        let k = self.next_one.fetch_add(1, SeqCst);
        let mark = FreeMark(Id::One(k), self.freed.clone());
        let env = self.clone();
        self.handle.bh_oneshot(move || {
            let _m = &mark;
            env.log.lock().unwrap().push(Id::One(k));
        });
    }
}

fn new_bh(env: &Arc<Env>, r: usize, slot: usize, effect: Effect) -> Bh<Remote> {
    let mark = FreeMark(Id::Bh(r), env.freed.clone());
    let e = env.clone();
    let mut n = 0u32;
    env.handle.bh_new(move |_| {
        let _m = &mark;
        assert!(!e.dropped.lock().unwrap().contains(&r), "BH {r} ran after its drop returned");
        n += 1;
        e.log.lock().unwrap().push(Id::Bh(r));
        match effect {
            Effect::Nothing => {}
            Effect::RescheduleSelfUntil(max) => {
                if n < max {
                    e.schedule(slot, false)
                }
            }
            Effect::DropSelf => {
                e.drop_slot(slot);
            }
            Effect::Schedule(j) => e.schedule(j, false),
            Effect::ScheduleIdle(j) => e.schedule(j, true),
            Effect::Cancel(j) => e.cancel(j),
            Effect::Drop(j) => {
                e.drop_slot(j);
            }
            Effect::Oneshot => e.oneshot(),
        }
    })
}

// ------------------------------------------------------------------------------------------------
// Running a sequence

/// Totals over all cases, printed at the end (so a run that exercises nothing shows it).
#[derive(Default)]
struct Stats {
    polls: AtomicUsize,
    calls: AtomicUsize,
    max_cands: AtomicUsize,
}

fn run_case(ops: &[Op], rescuer: &Rescuer, stats: &Stats) {
    let k = ModelKernel::new();
    let ctx = AioContext::builder().backend(Backend::Model(k)).build().unwrap();
    let env = Arc::new(Env {
        handle: ctx.handle().clone(),
        slots: (0..N).map(|_| Mutex::new(None)).collect(),
        log: Mutex::default(),
        freed: Arc::default(),
        dropped: Mutex::default(),
        next_one: AtomicUsize::new(0),
    });
    let mut cands: Vec<Model> = vec![Model::default()];
    let mut next_bh = 0usize;
    // Which model record each slot holds (identical in every candidate: slot contents follow from the
    // observed calls).
    let mut slot_rec: [Option<usize>; N] = [None; N];

    let do_poll = |blocking: bool, cands: &mut Vec<Model>, slot_rec: &mut [Option<usize>; N]| {
        if blocking && cands.iter().any(|m| m.may_block()) {
            return; // would block: the reference forbids it
        }
        env.log.lock().unwrap().clear();
        let freed_before = env.freed.lock().unwrap().len();
        let progress = if blocking { rescuer.poll_true(&ctx) } else { ctx.poll(false) };
        let log = std::mem::take(&mut *env.log.lock().unwrap());
        let freed: Vec<Id> = env.freed.lock().unwrap()[freed_before..].to_vec();
        let seen = Obs {
            calls: log
                .iter()
                .filter_map(|i| if let Id::Bh(r) = i { Some(*r) } else { None })
                .collect(),
            ones: log
                .iter()
                .filter_map(|i| if let Id::One(k) = i { Some(*k) } else { None })
                .collect(),
            progress,
            freed: freed.iter().copied().collect(),
        };
        assert_eq!(seen.freed.len(), freed.len(), "a BH was freed twice: {freed:?}");
        let mut next = HashSet::new();
        let mut outcomes = Vec::new();
        for m in cands.iter() {
            for (m2, o) in m.poll() {
                if o == seen {
                    next.insert(m2);
                } else {
                    outcomes.push(o);
                }
            }
        }
        assert!(
            !next.is_empty(),
            "poll({blocking}) showed {seen:?}; the reference allows only {outcomes:?}"
        );
        *cands = next.into_iter().collect();
        *slot_rec = cands[0].slots;
        stats.polls.fetch_add(1, SeqCst);
        stats.calls.fetch_add(seen.calls.len() + seen.ones.len(), SeqCst);
        stats.max_cands.fetch_max(cands.len(), SeqCst);
    };

    for &op in ops {
        match op {
            Op::Poll { blocking } => do_poll(blocking, &mut cands, &mut slot_rec),
            Op::New(s, e) => {
                let mut slot = env.slots[s].lock().unwrap();
                if slot.is_none() {
                    *slot = Some(new_bh(&env, next_bh, s, e));
                    next_bh += 1;
                }
            }
            Op::Schedule(s) => env.schedule(s, false),
            Op::ScheduleIdle(s) => env.schedule(s, true),
            Op::Cancel(s) => env.cancel(s),
            Op::Drop(s) => {
                if env.drop_slot(s).is_some() {
                    env.dropped.lock().unwrap().insert(slot_rec[s].expect("slot in the model"));
                }
            }
            Op::Oneshot => env.oneshot(),
        }
        if !matches!(op, Op::Poll { .. }) {
            for m in cands.iter_mut() {
                m.apply(op);
            }
            slot_rec = cands[0].slots;
        }
        // Observations outside poll: `is_scheduled` of each live BH; slots agree with the model.
        let sched: Vec<Option<bool>> = env
            .slots
            .iter()
            .map(|s| s.lock().unwrap().as_ref().map(|b| b.is_scheduled()))
            .collect();
        cands.retain(|m| (0..N).all(|s| sched[s] == m.slots[s].map(|r| m.bhs[r].scheduled)));
        assert!(
            !cands.is_empty(),
            "after {op:?}: is_scheduled {sched:?} matches no reference state"
        );
    }

    // Drop every BH, then one poll frees all of them (and runs whatever is still pending).
    for (s, rec) in slot_rec.into_iter().enumerate() {
        if env.drop_slot(s).is_some() {
            env.dropped.lock().unwrap().insert(rec.unwrap());
        }
        for m in cands.iter_mut() {
            m.drop_slot(s);
        }
    }
    do_poll(false, &mut cands, &mut slot_rec);
    while cands.iter().any(|m| !m.list.is_empty()) {
        // Oneshots created by the last callbacks: one more poll each time.
        do_poll(false, &mut cands, &mut slot_rec);
    }
    let m = &cands[0];
    assert!(m.bhs.iter().all(|b| b.freed) && m.ones.iter().all(|o| o.0 && o.1));
    let mut freed = env.freed.lock().unwrap().clone();
    freed.sort();
    let all: Vec<Id> = (0..m.bhs.len()).map(Id::Bh).chain((0..m.ones.len()).map(Id::One)).collect();
    assert_eq!(freed, all, "every BH and oneshot freed exactly once, none leaked");
    assert!(!ctx.poll(false), "nothing left");
}

#[test]
fn bh_api_sequences_match_sequential_reference() {
    let cases = cases();
    let rescuer = Rescuer::new();
    let runs = AtomicUsize::new(0);
    let stats = Stats::default();
    let t = Instant::now();
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let r = runner.run(&proptest::collection::vec(op(), 1..48), |ops| {
        runs.fetch_add(1, SeqCst);
        run_case(&ops, &rescuer, &stats);
        Ok(())
    });
    if let Err(e) = r {
        panic!("{e}");
    }
    let n = runs.load(SeqCst);
    assert!(cases > 0 && n >= cases as usize, "ran {n} cases, wanted {cases}");
    assert!(stats.calls.load(SeqCst) > 0, "no BH ever ran");
    println!(
        "prop_bh: {cases} cases passed ({n} executions, {} polls, {} callbacks, up to {} reference \
         states) in {:?}",
        stats.polls.load(SeqCst),
        stats.calls.load(SeqCst),
        stats.max_cands.load(SeqCst),
        t.elapsed()
    );
}

/// The reference itself: QEMU's fixed scenarios come out as test-aio.c states them.
#[test]
fn reference_reproduces_qemu_bh_scenarios() {
    // schedule10: a BH rescheduling itself runs once per poll.
    let mut m = Model::default();
    m.apply(Op::New(0, Effect::RescheduleSelfUntil(10)));
    m.apply(Op::Schedule(0));
    for i in 1..=10 {
        let outs = m.poll();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].1.calls, vec![0], "poll {i}");
        m = outs[0].0.clone();
    }
    assert!(!m.poll()[0].1.progress);
    // cancel and delete: not called, not progress.
    let mut m = Model::default();
    m.apply(Op::New(0, Effect::Nothing));
    m.apply(Op::New(1, Effect::Nothing));
    m.apply(Op::Schedule(0));
    m.apply(Op::Cancel(0));
    m.apply(Op::Schedule(1));
    m.apply(Op::Drop(1));
    let outs = m.poll();
    assert!(outs.iter().all(|(_, o)| o.calls.is_empty() && !o.progress));
    // Order matters only through effects: a BH dropping a slice-mate is order dependent.
    let mut m = Model::default();
    m.apply(Op::New(0, Effect::Drop(1)));
    m.apply(Op::New(1, Effect::Nothing));
    m.apply(Op::Schedule(0));
    m.apply(Op::Schedule(1));
    let calls: BTreeSet<Vec<usize>> = m.poll().into_iter().map(|(_, o)| o.calls).collect();
    assert_eq!(calls, BTreeSet::from([vec![0], vec![1, 0]]));
}

/// qemu-tests.md §4.5: "`aio_compute_timeout` must return 0 with a pending non-idle BH, even one
/// sitting in an outer slice during a nested poll". Two BHs are scheduled; whichever runs first
/// (the order is unspecified) polls nested with `blocking = true` while the other still sits in the
/// outer slice: that nested poll must not block, and it runs the other BH.
#[test]
fn nested_blocking_poll_with_outer_slice_pending_does_not_block() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ctx = AioContext::new().unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mut bhs = Vec::new();
        for me in 0..2usize {
            let r = ran.clone();
            bhs.push(ctx.bh_new(move |_| {
                let first = r.lock().unwrap().is_empty();
                r.lock().unwrap().push(me);
                if first {
                    let p = AioContext::with_current(|c| c.poll(true)).unwrap();
                    assert!(p, "the nested poll ran the outer slice's other BH");
                    assert_eq!(r.lock().unwrap().len(), 2);
                }
            }));
        }
        bhs.iter().for_each(Bh::schedule);
        assert!(ctx.poll(false));
        assert!(!ctx.poll(false));
        let _ = tx.send(ran.lock().unwrap().len());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(n) => assert_eq!(n, 2),
        Err(e) => panic!("nested poll(true) with the outer slice pending blocked or failed: {e}"),
    }
}
