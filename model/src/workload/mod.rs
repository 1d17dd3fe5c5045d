//! Generated concurrent workloads over the whole public API, and the model of what the caller sees
//! (issue 14).
//!
//! A [`Program`] is a home thread's operations and 0-3 remote threads' operations on bottom halves,
//! timers and fd handlers, each object owned by one thread (its owner is the only thread that
//! schedules, arms, registers or drops it; callbacks run on the home thread and may act on
//! themselves). Programs are drawn from a seed ([`Program::random`]; `aioctx-conformance` has the
//! proptest strategies that shrink them) and printed as a ready-to-paste regression test
//! ([`Program::regression_test`]).
//!
//! - [`oracle`]: the model of results. Every run logs what the caller sees (poll begin/end and its
//!   return, every callback's start and end, every operation); [`oracle::check`] replays the log on
//!   the model and names the first rule the run broke. The re-entrancy rule of each kind lives there,
//!   in one place.
//! - [`run`]: the runner over the REAL code (`aioctx`), on the model kernel or a real one, with std
//!   threads or the facade's (shuttle under `--cfg aioctx_shuttle`).
//!
//! Why here and not in `aioctx-conformance`: the shuttle harnesses over the real code are built by
//! `ci/shuttle` as `-p aioctx-model` with `--cfg aioctx_shuttle`, which the conformance package (real
//! kernels, the trace feature) does not build under; one runner serves shuttle, the model kernel with
//! faults and the real kernels.

pub mod oracle;
pub mod run;

use std::fmt::Write as _;

/// Who owns an object: the only thread that operates on it (its callback acts on itself, on the home
/// thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The home thread.
    Home,
    /// Remote thread `r`.
    Remote(u8),
}

/// What a nested poll inside a callback does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nested {
    /// No nested poll.
    No,
    /// `while ctx.poll(false) {}` (QEMU's drain idiom), bounded.
    Drain,
    /// One `poll(false)`.
    Once,
    /// Arm home timer `t` 1 ms ahead and `poll(true)` until it fired (AIO_WAIT_WHILE on a timer).
    WaitTimer(u8),
}

/// A bottom half's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BhSpec {
    /// Its owner.
    pub owner: Owner,
    /// Scheduled with `schedule_idle` (not progress) instead of `schedule`.
    pub idle: bool,
    /// Reschedules itself on its first `resched` calls, before its nested poll.
    pub resched: u8,
    /// Its nested poll.
    pub nested: Nested,
    /// Drops its own `Bh` on its first call, before its nested poll (owner Home only).
    pub delete_self: bool,
    /// A task instead of a BH (`spawn_local` on the home thread, at the start): its `schedule` is a
    /// wake of its waker (held by the owner), its callback a poll of its future (which completes
    /// only with `completes`), its delete a `JoinHandle::cancel` (owner Home; a remote owner drops
    /// the waker), its reschedule a wake from inside the poll. `cancel` has no task form (skipped);
    /// never idle. The oracle's BH rules apply unchanged: a task is a BH (impl/src/task), and its
    /// completion is its delete.
    pub task: bool,
    /// A task only: its future returns `Ready` from the poll after its reschedules (call
    /// `resched + 1`), after its nested poll; later wakes (its owner's) find it finished, which
    /// must be harmless: no poll, nothing left pending.
    pub completes: bool,
}

/// A timer's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerSpec {
    /// Its owner.
    pub owner: Owner,
    /// Re-arms itself for "now" on its first `rearm` calls, before its nested poll.
    pub rearm: u8,
    /// Its nested poll.
    pub nested: Nested,
}

/// An fd handler: an fd (a model fd, or one end of a Unix socket pair), its callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdSpec {
    /// Its owner (registers, removes, makes it readable).
    pub owner: Owner,
    /// io_poll / io_poll_ready / begin / end as well as on_read.
    pub poll: bool,
    /// on_read removes its own handler (after consuming).
    pub remove_self: bool,
    /// The nested poll of on_read and io_poll_ready (after consuming the readiness, or before with
    /// `consume_late`).
    pub nested: Nested,
    /// on_read and io_poll_ready poll nested with the fd still readable, then consume: a nested
    /// blocking poll must leave that fd out of its wait, or spin on it.
    pub consume_late: bool,
    /// What on_read and io_poll_ready do when the read finds the end of file ([`Op::HangUp`]), as
    /// users do: remove the handler (true), or pause it with `set_fd_interest(NONE)` (false: the
    /// hung-up fd, readable for good, must then not wake the loop). io_poll reports data only, not
    /// the end of file. Owner Home only (a hang-up is only of a home-owned fd's peer).
    pub eof_removes: bool,
    /// The handler has on_write too, and waits for writability while it has output queued, as
    /// users do: from its registration (something to send at once) and after each
    /// [`Op::Send`], until on_write flushes it and sets the write interest off again. Owner Home
    /// only (on_write changes the interest, an owner's operation).
    pub write: bool,
    /// The nested poll of io_poll_begin and io_poll_end (`poll` only), as a device that drains its
    /// queue when polling starts or stops might: never sensible, not forbidden. Mostly a blocking
    /// wait: only a poll that may block polls the poll list from inside them.
    pub bracket: Nested,
}

impl BhSpec {
    /// A BH that runs once per schedule and does nothing else: the plainest of `owner`'s BHs (what
    /// shrinking reduces a BH to).
    pub const fn plain(owner: Owner) -> BhSpec {
        BhSpec {
            owner,
            idle: false,
            resched: 0,
            nested: Nested::No,
            delete_self: false,
            task: false,
            completes: false,
        }
    }
}

impl FdSpec {
    /// A handler with on_read only, no nested poll, that pauses itself at the end of file: the
    /// plainest of `owner`'s handlers (what shrinking reduces a handler to).
    pub const fn plain(owner: Owner) -> FdSpec {
        FdSpec {
            owner,
            poll: false,
            remove_self: false,
            nested: Nested::No,
            consume_late: false,
            bracket: Nested::No,
            eof_removes: false,
            write: false,
        }
    }
}

/// One operation of a thread. An object index `i` names the `i`-th object of that kind the thread
/// owns (modulo their number); an operation on a kind the thread owns none of, or on an object it
/// dropped, is skipped (so shrinking never makes a program invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `bh.schedule()` (or `schedule_idle` for an idle BH).
    Schedule(u8),
    /// `bh.cancel()`.
    Cancel(u8),
    /// Drop the `Bh` (`qemu_bh_delete`).
    Delete(u8),
    /// `bh_oneshot`.
    Oneshot,
    /// `timer.mod_ns(now + us µs)` (0: due now).
    TimerMod(u8, u8),
    /// `timer.del()`.
    TimerDel(u8),
    /// Drop the `Timer`.
    TimerDrop(u8),
    /// `set_fd_handler` (register or replace).
    SetHandler(u8),
    /// `remove_fd_handler`.
    RemoveHandler(u8),
    /// `set_fd_interest(fd, READ or NONE)`: its handler waits for readability, or for nothing
    /// (in place; io_poll is not affected; the write side is kept).
    SetInterest(u8, bool),
    /// Queue output on a handler with on_write ([`FdSpec::write`]): its write interest goes on
    /// (`set_fd_interest`, the read side kept).
    Send(u8),
    /// Make the fd readable.
    Ready(u8),
    /// Close the peer of a home-owned fd (the index counts the home-owned fds, whoever runs it): it
    /// is readable for good, a read finds the data written before, then the end of file, and its
    /// handler reacts ([`FdSpec::eof_removes`]). Any thread may, as the peer of a socket dies
    /// whenever it does.
    HangUp(u8),
    /// A bare `notify()`.
    Notify,
    /// `set_poll_params(50 µs or 0, 0, 0)`.
    PollParams(bool),
    /// Home only: `poll(blocking)` (a blocking poll only when home work is pending or a timer is
    /// armed, so it cannot wait forever).
    Poll(bool),
    /// Home only: `while poll(false) {}`, bounded.
    Drain,
    /// Home only: one external-loop iteration: prepare, check, dispatch (no wait of its own).
    External,
    /// Remote only: interrupt the home thread (a signal: EINTR in its wait), where the runner can.
    Interrupt,
}

/// The kinds of object an operation names by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bh,
    Timer,
    Fd,
}

impl Op {
    /// The kind and index of the object it names, if any.
    fn target(self) -> Option<(Kind, u8)> {
        match self {
            Op::Schedule(i) | Op::Cancel(i) | Op::Delete(i) => Some((Kind::Bh, i)),
            Op::TimerMod(i, _) | Op::TimerDel(i) | Op::TimerDrop(i) => Some((Kind::Timer, i)),
            Op::SetHandler(i)
            | Op::RemoveHandler(i)
            | Op::SetInterest(i, _)
            | Op::Ready(i)
            | Op::Send(i)
            | Op::HangUp(i) => Some((Kind::Fd, i)),
            _ => None,
        }
    }

    /// The same operation naming index `i`.
    fn with_target(self, i: u8) -> Op {
        match self {
            Op::Schedule(_) => Op::Schedule(i),
            Op::Cancel(_) => Op::Cancel(i),
            Op::Delete(_) => Op::Delete(i),
            Op::TimerMod(_, us) => Op::TimerMod(i, us),
            Op::TimerDel(_) => Op::TimerDel(i),
            Op::TimerDrop(_) => Op::TimerDrop(i),
            Op::SetHandler(_) => Op::SetHandler(i),
            Op::RemoveHandler(_) => Op::RemoveHandler(i),
            Op::SetInterest(_, on) => Op::SetInterest(i, on),
            Op::Ready(_) => Op::Ready(i),
            Op::Send(_) => Op::Send(i),
            Op::HangUp(_) => Op::HangUp(i),
            other => other,
        }
    }
}

/// A generated workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Program {
    /// Polling on (50 µs) when the context is built.
    pub polling: bool,
    /// Bottom halves.
    pub bhs: Vec<BhSpec>,
    /// Timers.
    pub timers: Vec<TimerSpec>,
    /// fd handlers.
    pub fds: Vec<FdSpec>,
    /// The home thread's operations.
    pub home: Vec<Op>,
    /// Each remote thread's operations.
    pub remotes: Vec<Vec<Op>>,
}

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From any seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn chance(&mut self, per_cent: u64) -> bool {
        self.below(100) < per_cent
    }
}

/// Size limits of [`Program::random`].
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Remote threads, at most (0-3).
    pub remotes: usize,
    /// Operations per thread, at most.
    pub ops: usize,
}

impl Program {
    /// Whether `thread` (None: home) owns objects of kind `owner`.
    fn owns(owner: Owner, thread: Option<u8>) -> bool {
        match (owner, thread) {
            (Owner::Home, None) => true,
            (Owner::Remote(r), Some(t)) => r == t,
            _ => false,
        }
    }

    /// A program drawn from `seed` (the seeded twin of the proptest strategies, for shuttle, which
    /// runs in the model package).
    pub fn random(seed: u64, size: Size) -> Program {
        let mut g = Rng::new(seed);
        let nremotes = g.below(size.remotes as u64 + 1) as usize;
        let owner = |g: &mut Rng| {
            if nremotes == 0 || g.chance(50) {
                Owner::Home
            } else {
                Owner::Remote(g.below(nremotes as u64) as u8)
            }
        };
        let ntimers = g.below(3) as usize;
        let nested = |g: &mut Rng, home: bool| match g.below(8) {
            0 | 1 => Nested::Drain,
            2 => Nested::Once,
            3 if home && ntimers > 0 => Nested::WaitTimer(g.below(ntimers as u64) as u8),
            _ => Nested::No,
        };
        let timers = (0..ntimers)
            .map(|_| TimerSpec {
                owner: owner(&mut g),
                rearm: if g.chance(30) { 1 + g.below(2) as u8 } else { 0 },
                nested: nested(&mut g, false),
            })
            .collect();
        let bhs = (0..1 + g.below(4))
            .map(|_| {
                let owner = owner(&mut g);
                let task = g.chance(25);
                BhSpec {
                    owner,
                    idle: !task && g.chance(15),
                    resched: if g.chance(30) { 1 + g.below(3) as u8 } else { 0 },
                    nested: nested(&mut g, true),
                    delete_self: owner == Owner::Home && g.chance(10),
                    task,
                    completes: task && g.chance(40),
                }
            })
            .collect();
        let fds = (0..g.below(3))
            .map(|_| {
                let owner = owner(&mut g);
                let poll = g.chance(30);
                FdSpec {
                    owner,
                    poll,
                    remove_self: owner == Owner::Home && g.chance(15),
                    nested: nested(&mut g, true),
                    consume_late: g.chance(30),
                    eof_removes: g.chance(40),
                    write: owner == Owner::Home && g.chance(50),
                    bracket: match (poll && g.chance(30), ntimers) {
                        (false, _) => Nested::No,
                        (true, 0) => Nested::Once,
                        (true, n) => Nested::WaitTimer(g.below(n as u64) as u8),
                    },
                }
            })
            .collect();
        let mut p = Program {
            polling: g.chance(25),
            bhs,
            timers,
            fds,
            home: Vec::new(),
            remotes: Vec::new(),
        };
        p.home = p.random_ops(&mut g, None, size.ops);
        p.remotes = (0..nremotes).map(|r| p.random_ops(&mut g, Some(r as u8), size.ops)).collect();
        p
    }

    fn random_ops(&self, g: &mut Rng, thread: Option<u8>, max: usize) -> Vec<Op> {
        let pick = |g: &mut Rng, owners: Vec<Owner>| -> Option<u8> {
            let mine = owners.iter().filter(|o| Self::owns(**o, thread)).count() as u64;
            (mine > 0).then(|| g.below(mine) as u8)
        };
        let bh_owners: Vec<Owner> = self.bhs.iter().map(|b| b.owner).collect();
        let t_owners: Vec<Owner> = self.timers.iter().map(|t| t.owner).collect();
        let f_owners: Vec<Owner> = self.fds.iter().map(|f| f.owner).collect();
        // A hang-up names a home-owned fd whoever runs it: counted as the home thread's.
        let home_fds = self.fds.iter().filter(|f| f.owner == Owner::Home).count() as u64;
        let hang_up = |g: &mut Rng| (home_fds > 0).then(|| Op::HangUp(g.below(home_fds) as u8));
        let mut ops = Vec::new();
        for _ in 0..1 + g.below(max as u64) {
            let op = match g.below(20) {
                0..=4 => pick(g, bh_owners.clone()).map(Op::Schedule),
                5 => pick(g, bh_owners.clone()).map(Op::Cancel),
                6 if g.chance(30) => pick(g, bh_owners.clone()).map(Op::Delete),
                7 => Some(Op::Oneshot),
                8 => pick(g, t_owners.clone())
                    .map(|t| Op::TimerMod(t, [0, 0, 1, 50][g.below(4) as usize])),
                9 => pick(g, t_owners.clone()).map(if g.chance(20) {
                    Op::TimerDrop
                } else {
                    Op::TimerDel
                }),
                10 => pick(g, f_owners.clone()).map(Op::SetHandler),
                11 => pick(g, f_owners.clone()).map(Op::RemoveHandler),
                12 if g.chance(12) => hang_up(g),
                12 if g.chance(25) => pick(g, f_owners.clone()).map(Op::Send),
                12 => pick(g, f_owners.clone()).map(Op::Ready),
                13 => Some(Op::Notify),
                19 => {
                    let on = g.chance(50);
                    pick(g, f_owners.clone()).map(|f| Op::SetInterest(f, on))
                }
                14 if g.chance(30) => Some(Op::PollParams(g.chance(50))),
                15 if thread.is_some() && g.chance(30) => Some(Op::Interrupt),
                16 if thread.is_some() && g.chance(20) => hang_up(g),
                15..=18 if thread.is_none() => Some(match g.below(6) {
                    0 => Op::Drain,
                    1 => Op::External,
                    2 => Op::Poll(true),
                    _ => Op::Poll(false),
                }),
                _ => None,
            };
            ops.extend(op);
        }
        ops
    }

    /// Smaller programs, for shrinking a failure found where proptest cannot shrink (shuttle): each
    /// with one operation, one remote thread or one object's behaviour removed or simplified.
    pub fn shrink_candidates(&self) -> Vec<Program> {
        let mut out = Vec::new();
        for r in 0..self.remotes.len() {
            let mut q = self.clone();
            q.remotes[r].clear();
            if q != *self {
                out.push(q);
            }
        }
        for i in 0..self.home.len() {
            let mut q = self.clone();
            q.home.remove(i);
            out.push(q);
        }
        for r in 0..self.remotes.len() {
            for i in 0..self.remotes[r].len() {
                let mut q = self.clone();
                q.remotes[r].remove(i);
                out.push(q);
            }
        }
        for b in 0..self.bhs.len() {
            let mut q = self.clone();
            let x = &mut q.bhs[b];
            let plain = BhSpec::plain(x.owner);
            if *x != plain {
                *x = plain;
                out.push(q);
            }
        }
        for t in 0..self.timers.len() {
            let mut q = self.clone();
            let x = &mut q.timers[t];
            if x.nested != Nested::No || x.rearm != 0 {
                *x = TimerSpec { nested: Nested::No, rearm: 0, ..*x };
                out.push(q);
            }
        }
        for f in 0..self.fds.len() {
            let mut q = self.clone();
            let x = &mut q.fds[f];
            let plain = FdSpec::plain(x.owner);
            if *x != plain {
                *x = plain;
                out.push(q);
            }
        }
        // Whole objects (each operation still naming the object it named), and a last remote
        // thread with nothing left to do.
        if self.bhs.len() > 1 {
            out.extend((0..self.bhs.len()).map(|b| self.without(Kind::Bh, b)));
        }
        out.extend((0..self.timers.len()).map(|t| self.without(Kind::Timer, t)));
        out.extend((0..self.fds.len()).map(|f| self.without(Kind::Fd, f)));
        if self.remotes.last().is_some_and(Vec::is_empty) {
            let mut q = self.clone();
            q.remotes.pop();
            out.push(q);
        }
        if self.polling {
            out.push(Program { polling: false, ..self.clone() });
        }
        out
    }

    /// `self` without object `k` of `kind`: every operation still names the object it named (an
    /// index names the n-th object its thread owns, so the indices are rewritten), and the
    /// operations on `k` itself go, as do nested waits on it (a timer).
    fn without(&self, kind: Kind, k: usize) -> Program {
        let owners = |p: &Program| -> Vec<Owner> {
            match kind {
                Kind::Bh => p.bhs.iter().map(|b| b.owner).collect(),
                Kind::Timer => p.timers.iter().map(|t| t.owner).collect(),
                Kind::Fd => p.fds.iter().map(|f| f.owner).collect(),
            }
        };
        let mut q = self.clone();
        match kind {
            Kind::Bh => drop(q.bhs.remove(k)),
            Kind::Timer => {
                q.timers.remove(k);
                let fix = |n: &mut Nested| match *n {
                    Nested::WaitTimer(t) if t as usize == k => *n = Nested::No,
                    Nested::WaitTimer(t) if t as usize > k => *n = Nested::WaitTimer(t - 1),
                    _ => {}
                };
                q.bhs.iter_mut().for_each(|b| fix(&mut b.nested));
                q.timers.iter_mut().for_each(|t| fix(&mut t.nested));
                q.fds.iter_mut().for_each(|f| fix(&mut f.nested));
            }
            Kind::Fd => drop(q.fds.remove(k)),
        }
        let (old, new) = (owners(self), owners(&q));
        let owned = |all: &[Owner], who: Option<u8>| -> Vec<usize> {
            (0..all.len()).filter(|&j| Self::owns(all[j], who)).collect()
        };
        let remap = |op: Op, thread: Option<u8>| -> Option<Op> {
            let Some((kd, i)) = op.target() else { return Some(op) };
            // A hang-up names the n-th home-owned fd, whoever runs it.
            let who = if matches!(op, Op::HangUp(_)) { None } else { thread };
            let before = owned(&old, who);
            if kd != kind || before.is_empty() {
                return Some(op); // another kind, or skipped anyway
            }
            let target = before[i as usize % before.len()];
            if target == k {
                return None;
            }
            let target = if target > k { target - 1 } else { target };
            let pos = owned(&new, who).iter().position(|&j| j == target)?;
            Some(op.with_target(pos as u8))
        };
        q.home = self.home.iter().filter_map(|o| remap(*o, None)).collect();
        q.remotes = (0..self.remotes.len())
            .map(|r| self.remotes[r].iter().filter_map(|o| remap(*o, Some(r as u8))).collect())
            .collect();
        q
    }

    /// Shrink `self`, which `fails`, greedily to a program no candidate of which fails, trying at
    /// most `budget` candidates (each may be a whole checker run).
    pub fn shrink(&self, mut budget: usize, mut fails: impl FnMut(&Program) -> bool) -> Program {
        let mut cur = self.clone();
        'outer: while budget > 0 {
            for c in cur.shrink_candidates() {
                if budget == 0 {
                    break 'outer;
                }
                budget -= 1;
                if fails(&c) {
                    cur = c;
                    continue 'outer;
                }
            }
            break;
        }
        cur
    }

    /// Total operations of all threads.
    pub fn len(&self) -> usize {
        self.home.len() + self.remotes.iter().map(Vec::len).sum::<usize>()
    }

    /// No operation at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The program as Rust source (a `Program` literal; its BHs and fds as the fields that differ
    /// from the plain one's).
    pub fn to_rust(&self) -> String {
        fn spec(ty: &str, owner: Owner, fields: &[Option<String>]) -> String {
            let plain = format!("{ty}::plain(Owner::{owner:?})");
            let set: Vec<&str> = fields.iter().flatten().map(String::as_str).collect();
            if set.is_empty() {
                plain
            } else {
                format!("{ty} {{ {}, ..{plain} }}", set.join(", "))
            }
        }
        let mut s = String::new();
        let _ = writeln!(s, "Program {{");
        let _ = writeln!(s, "    polling: {},", self.polling);
        let _ = writeln!(s, "    bhs: vec![");
        for b in &self.bhs {
            let q = BhSpec::plain(b.owner);
            let fields = [
                (b.idle != q.idle).then(|| format!("idle: {}", b.idle)),
                (b.resched != q.resched).then(|| format!("resched: {}", b.resched)),
                (b.nested != q.nested).then(|| format!("nested: Nested::{:?}", b.nested)),
                (b.delete_self != q.delete_self).then(|| format!("delete_self: {}", b.delete_self)),
                (b.task != q.task).then(|| format!("task: {}", b.task)),
                (b.completes != q.completes).then(|| format!("completes: {}", b.completes)),
            ];
            let _ = writeln!(s, "        {},", spec("BhSpec", b.owner, &fields));
        }
        let _ = writeln!(s, "    ],\n    timers: vec![");
        for t in &self.timers {
            let _ = writeln!(
                s,
                "        TimerSpec {{ owner: Owner::{:?}, rearm: {}, nested: Nested::{:?} }},",
                t.owner, t.rearm, t.nested
            );
        }
        let _ = writeln!(s, "    ],\n    fds: vec![");
        for f in &self.fds {
            let q = FdSpec::plain(f.owner);
            let fields = [
                (f.poll != q.poll).then(|| format!("poll: {}", f.poll)),
                (f.remove_self != q.remove_self).then(|| format!("remove_self: {}", f.remove_self)),
                (f.nested != q.nested).then(|| format!("nested: Nested::{:?}", f.nested)),
                (f.consume_late != q.consume_late)
                    .then(|| format!("consume_late: {}", f.consume_late)),
                (f.eof_removes != q.eof_removes).then(|| format!("eof_removes: {}", f.eof_removes)),
                (f.write != q.write).then(|| format!("write: {}", f.write)),
                (f.bracket != q.bracket).then(|| format!("bracket: Nested::{:?}", f.bracket)),
            ];
            let _ = writeln!(s, "        {},", spec("FdSpec", f.owner, &fields));
        }
        let ops = |v: &[Op]| v.iter().map(|o| format!("Op::{o:?}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(s, "    ],\n    home: vec![{}],", ops(&self.home));
        let _ = writeln!(s, "    remotes: vec![");
        for r in &self.remotes {
            let _ = writeln!(s, "        vec![{}],", ops(r));
        }
        let _ = write!(s, "    ],\n}}");
        s
    }

    /// The program as text, one line per object or thread (`polling true`, `bh Home false 0 No
    /// false false`, `home Schedule(0) TimerMod(0,50)`, one `remote ...` line per remote thread), for
    /// a run in another process ([`Program::decode`] reads it back).
    pub fn encode(&self) -> String {
        let tok = |d: String| d.replace(' ', "");
        let mut s = format!("polling {}\n", self.polling);
        for b in &self.bhs {
            let _ = writeln!(
                s,
                "bh {} {} {} {} {} {} {}",
                tok(format!("{:?}", b.owner)),
                b.idle,
                b.resched,
                tok(format!("{:?}", b.nested)),
                b.delete_self,
                b.task,
                b.completes
            );
        }
        for t in &self.timers {
            let (o, n) = (tok(format!("{:?}", t.owner)), tok(format!("{:?}", t.nested)));
            let _ = writeln!(s, "timer {o} {} {n}", t.rearm);
        }
        for f in &self.fds {
            let _ = writeln!(
                s,
                "fd {} {} {} {} {} {} {} {}",
                tok(format!("{:?}", f.owner)),
                f.poll,
                f.remove_self,
                tok(format!("{:?}", f.nested)),
                f.consume_late,
                f.eof_removes,
                f.write,
                tok(format!("{:?}", f.bracket))
            );
        }
        let ops =
            |v: &[Op]| v.iter().map(|o| format!(" {}", tok(format!("{o:?}")))).collect::<String>();
        let _ = writeln!(s, "home{}", ops(&self.home));
        for r in &self.remotes {
            let _ = writeln!(s, "remote{}", ops(r));
        }
        s
    }

    /// Read back what [`Program::encode`] wrote; the first bad token is the error.
    pub fn decode(text: &str) -> Result<Program, String> {
        /// `Name` or `Name(a,b)`: the name and the arguments.
        fn call(t: &str) -> Result<(&str, Vec<&str>), String> {
            match t.split_once('(') {
                None => Ok((t, Vec::new())),
                Some((n, rest)) => {
                    let args = rest.strip_suffix(')').ok_or(format!("no `)` in {t}"))?;
                    Ok((n, args.split(',').collect()))
                }
            }
        }
        fn num<T: std::str::FromStr>(t: &str) -> Result<T, String> {
            t.parse().map_err(|_| format!("not a number or a bool: {t}"))
        }
        fn owner(t: &str) -> Result<Owner, String> {
            match call(t)? {
                ("Home", a) if a.is_empty() => Ok(Owner::Home),
                ("Remote", a) if a.len() == 1 => Ok(Owner::Remote(num(a[0])?)),
                _ => Err(format!("not an owner: {t}")),
            }
        }
        fn nested(t: &str) -> Result<Nested, String> {
            match call(t)? {
                ("No", _) => Ok(Nested::No),
                ("Drain", _) => Ok(Nested::Drain),
                ("Once", _) => Ok(Nested::Once),
                ("WaitTimer", a) if a.len() == 1 => Ok(Nested::WaitTimer(num(a[0])?)),
                _ => Err(format!("not a nested poll: {t}")),
            }
        }
        fn op(t: &str) -> Result<Op, String> {
            let (n, a) = call(t)?;
            let arg = |i: usize| -> Result<&str, String> {
                a.get(i).copied().ok_or(format!("{t}: argument {i} missing"))
            };
            Ok(match n {
                "Schedule" => Op::Schedule(num(arg(0)?)?),
                "Cancel" => Op::Cancel(num(arg(0)?)?),
                "Delete" => Op::Delete(num(arg(0)?)?),
                "Oneshot" => Op::Oneshot,
                "TimerMod" => Op::TimerMod(num(arg(0)?)?, num(arg(1)?)?),
                "TimerDel" => Op::TimerDel(num(arg(0)?)?),
                "TimerDrop" => Op::TimerDrop(num(arg(0)?)?),
                "SetHandler" => Op::SetHandler(num(arg(0)?)?),
                "RemoveHandler" => Op::RemoveHandler(num(arg(0)?)?),
                "SetInterest" => Op::SetInterest(num(arg(0)?)?, num(arg(1)?)?),
                "Ready" => Op::Ready(num(arg(0)?)?),
                "HangUp" => Op::HangUp(num(arg(0)?)?),
                "Send" => Op::Send(num(arg(0)?)?),
                "Notify" => Op::Notify,
                "PollParams" => Op::PollParams(num(arg(0)?)?),
                "Poll" => Op::Poll(num(arg(0)?)?),
                "Drain" => Op::Drain,
                "External" => Op::External,
                "Interrupt" => Op::Interrupt,
                _ => return Err(format!("not an operation: {t}")),
            })
        }
        let mut p = Program {
            polling: false,
            bhs: Vec::new(),
            timers: Vec::new(),
            fds: Vec::new(),
            home: Vec::new(),
            remotes: Vec::new(),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let w: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| -> Result<&str, String> {
                w.get(i).copied().ok_or(format!("too few fields: {line}"))
            };
            match w[0] {
                "polling" => p.polling = num(field(1)?)?,
                "bh" => p.bhs.push(BhSpec {
                    owner: owner(field(1)?)?,
                    idle: num(field(2)?)?,
                    resched: num(field(3)?)?,
                    nested: nested(field(4)?)?,
                    delete_self: num(field(5)?)?,
                    task: num(field(6)?)?,
                    completes: num(field(7)?)?,
                }),
                "timer" => p.timers.push(TimerSpec {
                    owner: owner(field(1)?)?,
                    rearm: num(field(2)?)?,
                    nested: nested(field(3)?)?,
                }),
                "fd" => p.fds.push(FdSpec {
                    owner: owner(field(1)?)?,
                    poll: num(field(2)?)?,
                    remove_self: num(field(3)?)?,
                    nested: nested(field(4)?)?,
                    consume_late: num(field(5)?)?,
                    eof_removes: num(field(6)?)?,
                    write: num(field(7)?)?,
                    bracket: nested(field(8)?)?,
                }),
                "home" => p.home = w[1..].iter().map(|t| op(t)).collect::<Result<_, _>>()?,
                "remote" => p.remotes.push(w[1..].iter().map(|t| op(t)).collect::<Result<_, _>>()?),
                other => return Err(format!("unknown line kind `{other}`: {line}")),
            }
        }
        Ok(p)
    }

    /// A ready-to-paste regression test for `conformance/tests/workloads.rs` that runs this program
    /// as `how` (a runner expression of that file, e.g. `model_kernel(Faults::default())`).
    pub fn regression_test(&self, name: &str, how: &str) -> String {
        let body = self.to_rust().replace('\n', "\n    ");
        format!(
            "#[test]\nfn {name}() {{\n    use aioctx_model::workload::*;\n    let p = {body};\n    check_program(&p, {how});\n}}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every drawn program survives text and back; a bad token is an error naming it.
    #[test]
    fn programs_encode_and_decode() {
        for seed in 0..500 {
            let p = Program::random(seed, Size { remotes: 3, ops: 12 });
            assert_eq!(Program::decode(&p.encode()), Ok(p.clone()), "{}", p.encode());
        }
        let e = Program::decode("polling true\nhome Schedule(0) Jump(1)\n").unwrap_err();
        assert!(e.contains("Jump(1)"), "{e}");
        assert!(Program::decode("fd Home true\n").unwrap_err().contains("too few fields"));
        assert!(Program::decode("home TimerMod(0)\n").unwrap_err().contains("argument 1"));
    }

    /// Removing an object keeps what every other operation names (its index rewritten), and drops
    /// the operations on that object.
    #[test]
    fn removing_an_object_keeps_what_each_operation_names() {
        let mut checked = 0;
        for seed in 0..300 {
            let p = Program::random(seed, Size { remotes: 3, ops: 12 });
            let kinds =
                [(Kind::Bh, p.bhs.len()), (Kind::Timer, p.timers.len()), (Kind::Fd, p.fds.len())];
            for (kind, n) in kinds {
                for k in 0..n {
                    let q = p.without(kind, k);
                    let threads = std::iter::once(None).chain((0..p.remotes.len() as u8).map(Some));
                    for t in threads {
                        let ops = |x: &Program| match t {
                            None => x.home.clone(),
                            Some(r) => x.remotes[r as usize].clone(),
                        };
                        let expect: Vec<Option<Op>> = ops(&p)
                            .iter()
                            .filter_map(|o| {
                                let r = run::resolve(&p, *o, t);
                                match r.and_then(Op::target) {
                                    Some((kd, i)) if kd == kind && i as usize == k => None,
                                    Some((kd, i)) if kd == kind && i as usize > k => {
                                        Some(r.map(|x| x.with_target(i - 1)))
                                    }
                                    _ => Some(r),
                                }
                            })
                            .collect();
                        let got: Vec<Option<Op>> =
                            ops(&q).iter().map(|o| run::resolve(&q, *o, t)).collect();
                        assert_eq!(got, expect, "seed {seed}, {kind:?} {k}, thread {t:?}");
                        checked += got.len();
                    }
                }
            }
        }
        assert!(checked > 5_000, "only {checked} operations checked");
    }

    /// The greedy shrinker reaches a program with only what the failure needs: here a failure that
    /// needs a hang-up by the home thread, an fd, and a remote thread (any), from programs drawn
    /// with every kind of object and operation.
    #[test]
    fn shrinking_keeps_only_what_the_failure_needs() {
        let fails = |p: &Program| {
            p.home.iter().any(|o| matches!(o, Op::HangUp(_)))
                && !p.fds.is_empty()
                && !p.remotes.is_empty()
        };
        let mut shrunk = 0;
        for seed in 0..2000 {
            let p = Program::random(seed, Size { remotes: 3, ops: 12 });
            if !fails(&p) || p.len() < 6 {
                continue;
            }
            let min = p.shrink(10_000, fails);
            assert!(fails(&min), "{}", min.to_rust());
            assert_eq!(min.home.len(), 1, "{}", min.to_rust());
            assert_eq!(min.remotes, vec![Vec::<Op>::new()], "{}", min.to_rust());
            let sizes = (min.timers.len(), min.fds.len(), min.bhs.len());
            assert_eq!(sizes, (0, 1, 1), "{}", min.to_rust());
            let f = min.fds[0];
            assert!(!min.polling && f.nested == Nested::No && !f.eof_removes && !f.write);
            shrunk += 1;
        }
        assert!(shrunk >= 20, "only {shrunk} programs drew a home hang-up and a remote");
    }
}
