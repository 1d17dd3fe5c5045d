//! Property test: random fd-handler registration, replacement and removal, fd events and polls, also
//! from inside callbacks, against a sequential reference. Model kernel fds (`Backend::Model`).
//!
//! Provenance: generalises test-aio.c's `/aio/event/*` cases and docs/protocol.md §5's deferred
//! removal ("removal during dispatch, own or other handler, is deferred"; QEMU `aio_set_fd_handler`,
//! `aio_dispatch_handler`, `deleted_aio_handlers`) to arbitrary sequences.
//!
//! Operations on `K` model fds: register a handler (or replace the registered one), remove it, make
//! the fd readable, `poll(false)`, and `poll(true)` only when the reference says it cannot block.
//! Each handler's `on_read` counts the call, takes the fd's readability or deliberately leaves it (the
//! fd is level-triggered: it then runs again), and may then remove itself or another fd's handler,
//! replace one, register one on an empty fd, or make another fd readable.
//!
//! The reference: a poll's wait sees every registered, readable fd; the dispatch list is fixed then;
//! each listed handler runs unless it was removed or replaced earlier in the same dispatch; handlers
//! registered during the dispatch wait for the next poll; every registration change notifies (a
//! blocking poll after one does not block). The dispatch order is not promised, so every order of
//! the ready handlers is tried and the reference states consistent with the observed calls are kept.
//!
//! Checked, beyond the reference: no callback of a handler runs after `remove_fd_handler` (or the
//! replacing `set_fd_handler`) returned; `remove_fd_handler`'s result; registration (`poll_ns(fd)` is
//! `Some` iff registered) and readability after every operation; every handler's closures are dropped
//! exactly once, none leaked, once everything is removed.
//!
//! Cases: `AIOCTX_PROP_CASES` (default 256; the full tier uses 4096). A run of zero cases fails.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aioctx::{AioContext, Backend, FdHandler, Handle, ModelKernel, Remote};
use aioctx_conformance::rescuer::Rescuer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Model fds.
const K: usize = 3;

fn cases() -> u32 {
    std::env::var("AIOCTX_PROP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

// ------------------------------------------------------------------------------------------------
// Operations

/// What `on_read` does after counting the call (and taking the fd's readability, if it does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    Nothing,
    /// `remove_fd_handler(fds[j])` (j may be its own fd).
    Remove(usize),
    /// `set_fd_handler(fds[j], plain)` on a registered fd: replaces its handler (j may be its own).
    Replace(usize),
    /// `set_fd_handler(fds[j], plain)` if fd j has no handler.
    Add(usize),
    /// Make fd j readable.
    Readable(usize),
}

/// A handler: does `on_read` take the fd's readability, and its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Spec {
    take: bool,
    effect: Effect,
}

/// What a callback registers: takes its event, no effect.
const PLAIN: Spec = Spec { take: true, effect: Effect::Nothing };

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Register, or replace the registered handler.
    Set(usize, Spec),
    Remove(usize),
    Readable(usize),
    Poll {
        blocking: bool,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    let effect = prop_oneof![
        3 => Just(Effect::Nothing),
        2 => (0..K).prop_map(Effect::Remove),
        1 => (0..K).prop_map(Effect::Replace),
        1 => (0..K).prop_map(Effect::Add),
        1 => (0..K).prop_map(Effect::Readable),
    ];
    (prop::bool::weighted(0.85), effect).prop_map(|(take, effect)| Spec { take, effect })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => ((0..K), spec()).prop_map(|(i, s)| Op::Set(i, s)),
        1 => (0..K).prop_map(Op::Remove),
        4 => (0..K).prop_map(Op::Readable),
        5 => any::<bool>().prop_map(|blocking| Op::Poll { blocking }),
    ]
}

// ------------------------------------------------------------------------------------------------
// The sequential reference

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MH {
    fd: usize,
    spec: Spec,
    n: u32,
    /// Registered (not removed or replaced).
    live: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
struct Model {
    hs: Vec<MH>,
    reg: [Option<usize>; K],
    readable: [bool; K],
    notified: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Obs {
    calls: Vec<usize>,
    progress: bool,
}

impl Model {
    fn set(&mut self, i: usize, spec: Spec) {
        if let Some(old) = self.reg[i] {
            self.hs[old].live = false;
        }
        self.hs.push(MH { fd: i, spec, n: 0, live: true });
        self.reg[i] = Some(self.hs.len() - 1);
        self.notified = true;
    }
    fn remove(&mut self, i: usize) -> bool {
        let old = self.reg[i].take();
        if let Some(r) = old {
            self.hs[r].live = false;
        }
        self.notified = true; // remove_fd_handler always notifies
        old.is_some()
    }
    fn may_block(&self) -> bool {
        !self.notified && !(0..K).any(|i| self.reg[i].is_some() && self.readable[i])
    }
    /// Every outcome of one poll.
    fn poll(&self) -> Vec<(Model, Obs)> {
        let mut base = self.clone();
        let ready: Vec<usize> =
            (0..K).filter(|&i| base.readable[i]).filter_map(|i| base.reg[i]).collect();
        base.notified = false; // accept, after the wait, before the dispatch
        let mut out = Vec::new();
        permutations(&ready, &mut |order| {
            let mut m = base.clone();
            let mut o = Obs::default();
            for &r in order {
                m.dispatch(r, &mut o);
            }
            out.push((m, o));
        });
        out
    }
    fn dispatch(&mut self, r: usize, o: &mut Obs) {
        if !self.hs[r].live {
            return; // removed or replaced earlier in this dispatch
        }
        let h = &mut self.hs[r];
        h.n += 1;
        let (fd, spec) = (h.fd, h.spec);
        o.calls.push(r);
        o.progress = true;
        if spec.take {
            self.readable[fd] = false;
        }
        match spec.effect {
            Effect::Nothing => {}
            Effect::Remove(j) => {
                self.remove(j);
            }
            Effect::Replace(j) => {
                if self.reg[j].is_some() {
                    self.set(j, PLAIN)
                }
            }
            Effect::Add(j) => {
                if self.reg[j].is_none() {
                    self.set(j, PLAIN)
                }
            }
            Effect::Readable(j) => self.readable[j] = true,
        }
    }
}

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

/// Records the drop of a handler's closures.
struct FreeMark(usize, Arc<Mutex<Vec<usize>>>);
impl Drop for FreeMark {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0);
    }
}

struct Env {
    handle: Handle,
    kernel: Arc<ModelKernel>,
    fds: [RawFd; K],
    /// The handler record registered on each fd (kept in step with the calls below).
    reg: Mutex<[Option<usize>; K]>,
    next_rec: AtomicUsize,
    log: Mutex<Vec<usize>>,
    /// Handlers whose removal or replacement has returned: never called again.
    retired: Mutex<HashSet<usize>>,
    freed: Arc<Mutex<Vec<usize>>>,
}

impl Env {
    /// Register `spec` on fd i (replacing any handler); marks the old one retired once it returned.
    fn set(self: &Arc<Self>, i: usize, spec: Spec) {
        let r = self.next_rec.fetch_add(1, SeqCst);
        let old = self.reg.lock().unwrap()[i];
        self.handle.set_fd_handler(self.fds[i], self.handler(r, i, spec)).unwrap();
        self.reg.lock().unwrap()[i] = Some(r);
        if let Some(old) = old {
            self.retired.lock().unwrap().insert(old);
        }
    }
    fn remove(&self, i: usize) -> bool {
        let removed = self.handle.remove_fd_handler(self.fds[i]).unwrap();
        if let Some(old) = self.reg.lock().unwrap()[i].take() {
            self.retired.lock().unwrap().insert(old);
        }
        removed
    }
    fn registered(&self, i: usize) -> bool {
        self.reg.lock().unwrap()[i].is_some()
    }
    fn handler(self: &Arc<Self>, r: usize, i: usize, spec: Spec) -> FdHandler<Remote> {
        let env = self.clone();
        let mark = FreeMark(r, self.freed.clone());
        FdHandler::new_remote().on_read(move |_| {
            let _m = &mark;
            assert!(
                !env.retired.lock().unwrap().contains(&r),
                "handler {r} ran after its removal or replacement returned"
            );
            env.log.lock().unwrap().push(r);
            if spec.take {
                env.kernel.take_readable(env.fds[i]);
            }
            match spec.effect {
                Effect::Nothing => {}
                Effect::Remove(j) => {
                    env.remove(j);
                }
                Effect::Replace(j) => {
                    if env.registered(j) {
                        env.set(j, PLAIN)
                    }
                }
                Effect::Add(j) => {
                    if !env.registered(j) {
                        env.set(j, PLAIN)
                    }
                }
                Effect::Readable(j) => env.kernel.set_readable(env.fds[j], true),
            }
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Running a sequence

#[derive(Default)]
struct Stats {
    polls: AtomicUsize,
    calls: AtomicUsize,
    in_dispatch_changes: AtomicUsize,
}

fn run_case(ops: &[Op], rescuer: &Rescuer, stats: &Stats) {
    let k = ModelKernel::new();
    let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
    let fds = [k.open(), k.open(), k.open()];
    let env = Arc::new(Env {
        handle: ctx.handle().clone(),
        kernel: k.clone(),
        fds,
        reg: Mutex::default(),
        next_rec: AtomicUsize::new(0),
        log: Mutex::default(),
        retired: Mutex::default(),
        freed: Arc::default(),
    });
    let mut cands = vec![Model::default()];

    let check_state = |cands: &mut Vec<Model>, after: &dyn std::fmt::Debug| {
        let reg: Vec<bool> = fds.iter().map(|&fd| ctx.poll_ns(fd).is_some()).collect();
        let readable: Vec<bool> = fds.iter().map(|&fd| k.is_readable(fd)).collect();
        cands.retain(|m| {
            (0..K).all(|i| m.reg[i].is_some() == reg[i] && m.readable[i] == readable[i])
        });
        assert!(
            !cands.is_empty(),
            "after {after:?}: registered {reg:?}, readable {readable:?} match no reference state"
        );
    };

    let poll = |cands: &mut Vec<Model>, blocking: bool| {
        if blocking && cands.iter().any(|m| m.may_block()) {
            return;
        }
        env.log.lock().unwrap().clear();
        let progress = if blocking { rescuer.poll_true(&ctx) } else { ctx.poll(false) };
        let seen = Obs { calls: std::mem::take(&mut *env.log.lock().unwrap()), progress };
        let mut next = HashSet::new();
        let mut others = Vec::new();
        for m in cands.iter() {
            for (m2, o) in m.poll() {
                if o == seen {
                    next.insert(m2);
                } else {
                    others.push(o);
                }
            }
        }
        assert!(
            !next.is_empty(),
            "poll({blocking}) showed {seen:?}; the reference allows {others:?}"
        );
        *cands = next.into_iter().collect();
        stats.polls.fetch_add(1, SeqCst);
        stats.calls.fetch_add(seen.calls.len(), SeqCst);
        let m = &cands[0];
        if seen.calls.iter().any(|&r| m.hs[r].spec.effect != Effect::Nothing) {
            stats.in_dispatch_changes.fetch_add(1, SeqCst);
        }
    };

    for &op in ops {
        match op {
            Op::Set(i, spec) => {
                env.set(i, spec);
                cands.iter_mut().for_each(|m| m.set(i, spec));
            }
            Op::Remove(i) => {
                let got = env.remove(i);
                for m in cands.iter_mut() {
                    assert_eq!(m.remove(i), got, "remove_fd_handler({i})'s result");
                }
            }
            Op::Readable(i) => {
                k.set_readable(fds[i], true);
                cands.iter_mut().for_each(|m| m.readable[i] = true);
            }
            Op::Poll { blocking } => poll(&mut cands, blocking),
        }
        check_state(&mut cands, &op);
    }

    // Remove everything: no callback runs any more, and every handler is dropped exactly once.
    for (i, &fd) in fds.iter().enumerate() {
        env.remove(i);
        cands.iter_mut().for_each(|m| {
            m.remove(i);
        });
        k.set_readable(fd, true);
        cands.iter_mut().for_each(|m| m.readable[i] = true);
    }
    poll(&mut cands, false);
    assert!(!ctx.poll(false), "nothing registered");
    let mut freed = env.freed.lock().unwrap().clone();
    freed.sort_unstable();
    let n = env.next_rec.load(SeqCst);
    assert_eq!(freed, (0..n).collect::<Vec<_>>(), "every handler dropped exactly once");
}

#[test]
fn fd_handler_sequences_match_sequential_reference() {
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
    assert!(stats.calls.load(SeqCst) > 0, "no handler ever ran");
    println!(
        "prop_handlers: {cases} cases passed ({n} executions, {} polls, {} callbacks, {} polls with \
         a registration change from inside a callback) in {:?}",
        stats.polls.load(SeqCst),
        stats.calls.load(SeqCst),
        stats.in_dispatch_changes.load(SeqCst),
        t.elapsed()
    );
}

/// The reference reproduces the fixed scenario of impl/tests/aio.rs: two ready handlers that each
/// remove both; whichever runs first, the other is not called.
#[test]
fn reference_one_of_two_self_and_other_removers_runs() {
    let mut m = Model::default();
    m.set(0, Spec { take: true, effect: Effect::Remove(1) });
    m.set(1, Spec { take: true, effect: Effect::Remove(0) });
    m.readable = [true, true, false];
    let calls: HashSet<Vec<usize>> = m.poll().into_iter().map(|(_, o)| o.calls).collect();
    assert_eq!(calls, HashSet::from([vec![0], vec![1]]));
}
