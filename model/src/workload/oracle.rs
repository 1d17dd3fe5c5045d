//! The model of what the caller sees, used as the oracle of a workload run's results.
//!
//! A run logs [`Ev`]s: each poll's begin and end (with its return value), each callback's start and
//! end, and each operation (logged by the thread that does it: an operation that grants a right,
//! like `schedule` or making an fd readable, is logged just BEFORE it is made; one that withdraws a
//! right, like a delete or `remove_fd_handler`, just AFTER it returned; so the log is never stricter
//! than the code's real order). [`check`] replays the log on the model below and returns the first
//! rule broken, by its property name.
//!
//! # The model
//!
//! Per bottom half: scheduled (exact for a BH the home thread owns: the home thread is the only one
//! that schedules, cancels and runs it), schedules and runs counted, deleted, running. Per timer:
//! its arming (deadline) and whether it is running. Per fd: the live handler instances (a
//! `set_fd_handler` adds one at its start and retires the old one when it returned), readiness
//! (a hung-up fd is readable for good: a read consumes its data, never its end of file),
//! running. A stack of the polls in progress, nested ones on top.
//!
//! # Re-entrancy: one rule per kind (the code documents the same rules on `Bh`, `Timer`, `FdHandler`)
//!
//! - **BH**: a BH whose callback is running is never called again before it returns. A poll nested
//!   in it that finds it scheduled defers it: not called, not progress, no zero timeout for it; it
//!   stays scheduled and runs in a poll after the running call returned. A task (`BhSpec::task`) is a
//!   BH: a wake is a schedule, a poll of its future a call (impl/src/task), under the same rule.
//! - **Timer**: a running timer's callback is never re-entered. An arming it made (a re-arm for
//!   "now") is kept, is not progress in a nested poll and does not keep it from sleeping; the timer
//!   fires in a poll after the call returned. Never early: a call sees `now >= deadline`.
//! - **fd handler**: a handler's callbacks are never re-entered (on_read, io_poll_ready). A nested
//!   poll skips it (not progress); its fd's readiness is kept (level-triggered) for a later poll.
//!
//! # Properties checked (the names the failures carry)
//!
//! - `p_progress_exact`: a poll returns true iff a progress callback (a non-idle BH, a oneshot, a
//!   timer, on_read, io_poll_ready) started directly in it (not in a poll nested deeper).
//! - `p_no_reentry`: the rules above.
//! - `p_runs_what_was_due`: a poll runs every home-owned BH that was scheduled when it began, every
//!   home-owned timer that was due when it began and every home-owned handler whose fd was readable
//!   when it began (model kernel), unless it is running up the stack or was withdrawn meanwhile.
//! - `p_no_call_after_delete` / `p_no_call_after_remove`: no callback of a BH or timer starts after
//!   its owner dropped it, no handler callback after `remove_fd_handler` (or its replacement)
//!   returned. On the home thread that is exact. From another thread the loop may have taken the
//!   call already (dequeued the BH, taken the timer off its queue, looked the handler up) and starts
//!   it just after: allowed only inside the outermost poll that was in progress when the drop
//!   returned, never in a later one.
//! - `p_timer_only_when_armed` /
//!   `p_timer_not_early` / `p_bh_only_when_scheduled` (runs never exceed schedules).
//! - `p_oneshot_once`: every oneshot runs exactly once.
//! - `p_arming_kept` (final): nothing the model holds scheduled, armed, or readable and registered
//!   is left over when the run ended (after the final drain): a schedule, an arming, a readiness
//!   was silently dropped.
//! - `p_timer_closure_freed`: a `Timer` dropped on the home thread (its callback not running)
//!   frees its closure, and everything it captured, by the drop; every closure is gone once the
//!   timers and the context are dropped.
//! - `p_poll_end_follows_begin`: io_poll_begin / io_poll_end alternate per handler instance, begin
//!   first; after the context is dropped every begin has its end.
//! - `p_poll_list_membership`: only handlers with io_poll are ever on the poll list.
//! - `p_interest_obeyed`: a handler whose interest was set to NONE (`set_fd_interest`) gets no
//!   on_read after the call returned (from another thread: not after the outermost poll in progress
//!   then); its io_poll / io_poll_ready go on. Its fd is no obligation of `p_runs_what_was_due`
//!   or `p_arming_kept` until the interest is back or a new handler is set. The write side the
//!   same: no on_write once on_write turned it off; while it is on, every poll calls on_write
//!   (model kernel: an fd is always writable), and the run may not end with it on.
//! - `p_no_lost_wakeup`: the home thread never ends up blocked with work pending (the runner's
//!   watchdog, from counts, logs it).
//! - `p_no_busy_loop`: the polls that made no progress are bounded by the work that could wake
//!   them (operations, callbacks, injected wake-ups), and a nested drain ends.

use std::collections::{HashMap, HashSet};

use super::{Owner, Program};

/// A callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cb {
    /// BH `b`.
    Bh(u8),
    /// Oneshot number `n`.
    Oneshot(u32),
    /// Timer `t`, reading the clock at `now`.
    Timer(u8, u64),
    /// on_read of fd `f`, handler instance `i`.
    Read(u8, u32),
    /// io_poll_ready of fd `f`, instance `i`.
    PollReady(u8, u32),
    /// on_write of fd `f`, instance `i`.
    Write(u8, u32),
    /// io_poll_begin or io_poll_end of fd `f`, instance `i`, while it polls nested (not progress).
    PollBracket(u8, u32),
}

impl Cb {
    fn key(self) -> (u8, u32) {
        match self {
            Cb::Bh(b) => (0, u32::from(b)),
            Cb::Oneshot(n) => (1, n),
            Cb::Timer(t, _) => (2, u32::from(t)),
            // One re-entrancy flag per handler (per instance: a replaced handler is another one).
            Cb::Read(f, i) | Cb::PollReady(f, i) | Cb::Write(f, i) | Cb::PollBracket(f, i) => {
                (3, (u32::from(f) << 20) | i)
            }
        }
    }
}

/// What a run logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// A poll (or an external prepare/check/dispatch) begins; `now` is the clock then.
    PollBegin {
        /// `poll(true)`.
        blocking: bool,
        /// The clock.
        now: u64,
    },
    /// It returned `progress`.
    PollEnd {
        /// The return value.
        progress: bool,
    },
    /// A callback starts.
    CbBegin(Cb),
    /// It returns.
    CbEnd(Cb),
    /// `schedule` of BH b is about to be called (by `by`: None the home thread or a callback).
    Schedule(u8),
    /// `cancel` returned.
    Cancel(u8),
    /// The `Bh` was dropped.
    Delete(u8),
    /// Oneshot `n` is about to be scheduled.
    Oneshot(u32),
    /// Timer t is about to be armed for `deadline`.
    TimerMod(u8, u64),
    /// `del` returned (or the `Timer` was dropped: `dropped`).
    TimerDel(u8, bool),
    /// `set_fd_handler(f, instance i)` is about to be called.
    SetBegin(u8, u32),
    /// It returned `ok`.
    SetEnd(u8, u32, bool),
    /// `remove_fd_handler(f)` returned.
    Removed(u8),
    /// `set_fd_interest(f, READ if on, else NONE)` is about to be called.
    InterestBegin(u8, bool),
    /// It returned `ok`.
    InterestEnd(u8, bool, bool),
    /// `set_fd_interest` turning fd f's write side on (`Op::Send`) or off (on_write flushed) is
    /// about to be called.
    WriteBegin(u8, bool),
    /// It returned `ok`.
    WriteEnd(u8, bool, bool),
    /// fd f is about to be made readable.
    Ready(u8),
    /// Making fd f readable returned (a read between `Ready` and this may come before the write:
    /// it does not consume that readiness).
    ReadyDone(u8),
    /// fd f's peer is about to be closed (readable for good).
    HangUp(u8),
    /// The close of fd f's peer returned (from another thread, the kernel's hang-up came at some
    /// moment between `HangUp` and this: no poll in between owes its handler a call for it).
    HungUp(u8),
    /// The fd monitor does not watch fd f now: a registration it refused is being retried
    /// (`AioContext::is_unwatched`; logged just before a poll begins, for that poll).
    Unwatched(u8),
    /// A callback consumed fd f's readiness.
    Consumed(u8),
    /// io_poll_begin of fd f instance i.
    IoPollBegin(u8, u32),
    /// io_poll_end of fd f instance i.
    IoPollEnd(u8, u32),
    /// fd f instance i is on the poll list after an outermost poll.
    Polled(u8, u32),
    /// A wake-up source: a bare notify, a poll-parameter change, an interrupt.
    Wake,
    /// Remote thread r finished.
    RemoteDone(u8),
    /// A check a runner made itself failed (the property name leads the message).
    Violation(String),
    /// The run is over: the final drain is done, the context still alive. `idle_polls` outermost
    /// polls made no progress; `injected` wake-ups were injected by the kernel.
    End {
        /// Outermost polls of the run that returned false.
        idle_polls: u64,
        /// Spurious wake-ups injected.
        injected: u64,
    },
    /// Timer t's closure was dropped (with everything it captured).
    TimerFreed(u8),
    /// The context was dropped.
    Dropped,
}

/// What a run did, when the oracle accepted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Polls (all depths).
    pub polls: u64,
    /// Nested polls.
    pub nested_polls: u64,
    /// Callbacks.
    pub callbacks: u64,
    /// Operations logged.
    pub ops: u64,
    /// Obligations checked (`p_runs_what_was_due`).
    pub obligations: u64,
    /// fds hung up.
    pub hang_ups: u64,
    /// on_write calls.
    pub writes: u64,
}

/// A rule the run broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The property.
    pub property: &'static str,
    /// What happened.
    pub detail: String,
    /// Index of the event in the log.
    pub at: usize,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} violated at event {}: {}", self.property, self.at, self.detail)
    }
}

#[derive(Debug, Default, Clone)]
struct BhM {
    scheduled: bool,
    idle: bool,
    scheds: u64,
    runs: u64,
    deleted: bool,
    /// Where the deletion returned (see [`Withdrawn`]).
    deleted_in: Withdrawn,
    last_sched: Option<usize>,
    last_run: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct TimerM {
    armed: Option<u64>,
    mods: u64,
    fires: u64,
    dropped: bool,
    dropped_in: Withdrawn,
    freed: bool,
    last_mod: Option<usize>,
    last_fire: Option<usize>,
}

#[derive(Debug, Default, Clone)]
struct FdM {
    live: Vec<u32>,
    /// Instances removed, and where the removal returned.
    removed: HashMap<u32, Withdrawn>,
    readable: bool,
    /// Hung up: readable for good.
    hung_up: bool,
    /// A hang-up logged and not yet returned (`HungUp`).
    hanging_up: bool,
    /// Writes logged and not yet returned (`Ready` .. `ReadyDone`).
    readying: u32,
    /// Readable perhaps: a read since did not surely consume it (a write in flight may have
    /// landed after the read). A handler may be called (`p_handler_only_when_ready`), but nothing
    /// is owed (`readable` is what is owed).
    maybe_readable: bool,
    /// Not watched by the fd monitor in the poll about to begin (`Unwatched`).
    unwatched: bool,
    ready_since: HashSet<u32>,
    poll_begun: HashMap<u32, bool>,
    poll: bool,
    /// Its handler waits for readability: from its registration until `set_fd_interest(NONE)`,
    /// whose call returned where `no_interest_in` says.
    read: Side,
    no_interest_in: Withdrawn,
    /// Its handler waits for writability ([`super::FdSpec::write`]: from its registration and after
    /// each send, until on_write turned it off; a home-owned fd's, so exact).
    write: Side,
}

/// What a handler waits for on one side (read or write), across a change that may fail: turning a
/// side on counts from the change's begin (the loop may call the handler before the call returns),
/// turning it off from its end; a failed change restores the side as it was.
#[derive(Debug, Default, Clone, Copy)]
struct Side {
    on: bool,
    before: bool,
}

impl Side {
    /// A registration begins: the new handler's side is `on`.
    fn register(&mut self, on: bool) {
        self.before = std::mem::replace(&mut self.on, on);
    }

    /// A change of the side to `on` begins (`set_fd_interest`).
    fn begin(&mut self, on: bool) {
        self.before = self.on;
        self.on |= on;
    }

    /// The change ended; whether it turned the side off.
    fn end(&mut self, on: bool, ok: bool) -> bool {
        if !ok {
            self.undo();
        } else if !on {
            self.on = false;
        }
        ok && !on
    }

    /// The change failed: the side is as it was before it.
    fn undo(&mut self) {
        self.on = self.before;
    }
}

/// Where a withdrawal (a `Bh` or `Timer` dropped, a handler removed) returned: on the home thread
/// (`Home`: no call may start after it), or on another thread while the outermost poll that began
/// at this log index was in progress (`InPoll(i)`: a call the loop had already taken may still
/// start, but only inside that poll), or on another thread between polls (`Idle`: none may).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Withdrawn {
    #[default]
    Home,
    InPoll(usize),
    Idle,
}

impl Withdrawn {
    fn at(remote: bool, frames: &[Frame]) -> Withdrawn {
        match (remote, frames.first()) {
            (false, _) => Withdrawn::Home,
            (true, Some(f)) => Withdrawn::InPoll(f.begin),
            (true, None) => Withdrawn::Idle,
        }
    }
    /// Whether a call may start now (the outermost poll in progress began at `outer`).
    fn allows(self, outer: Option<usize>) -> bool {
        matches!(self, Withdrawn::InPoll(i) if outer == Some(i))
    }
}

struct Frame {
    begin: usize,
    now: u64,
    direct_progress: bool,
    /// Home-owned objects due when it began: BHs, timers, fd handler instances.
    due: Vec<Due>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Bh(u8),
    Timer(u8),
    Fd(u8, u32),
    Write(u8, u32),
}

fn fail(property: &'static str, at: usize, detail: String) -> Failure {
    Failure { property, detail, at }
}

/// Replay `log` of a run of `p` on the model. `strict_fds`: the fd monitor reports readiness at
/// once (the model kernel), so `p_runs_what_was_due` covers handlers too.
pub fn check(p: &Program, log: &[Ev], strict_fds: bool) -> Result<Stats, Failure> {
    let mut m = Model {
        p,
        log,
        strict_fds,
        st: Stats::default(),
        bhs: p.bhs.iter().map(|b| BhM { idle: b.idle, ..BhM::default() }).collect(),
        timers: vec![TimerM::default(); p.timers.len()],
        fds: p.fds.iter().map(|f| FdM { poll: f.poll, ..FdM::default() }).collect(),
        oneshots: HashMap::new(),
        running: Vec::new(),
        frames: Vec::new(),
        wakes: 0,
    };
    for (i, ev) in log.iter().enumerate() {
        m.step(i, ev)?;
    }
    Ok(m.st)
}

/// The model's state while a log is replayed: one method per kind of event.
struct Model<'a> {
    p: &'a Program,
    log: &'a [Ev],
    strict_fds: bool,
    st: Stats,
    bhs: Vec<BhM>,
    timers: Vec<TimerM>,
    fds: Vec<FdM>,
    /// Oneshot -> its runs.
    oneshots: HashMap<u32, u32>,
    /// The callbacks running, innermost last.
    running: Vec<Cb>,
    /// The polls in progress, innermost last.
    frames: Vec<Frame>,
    wakes: u64,
}

impl Model<'_> {
    fn home_bh(&self, b: u8) -> bool {
        self.p.bhs[b as usize].owner == Owner::Home
    }
    fn home_t(&self, t: u8) -> bool {
        self.p.timers[t as usize].owner == Owner::Home
    }
    fn home_f(&self, f: u8) -> bool {
        self.p.fds[f as usize].owner == Owner::Home
    }
    fn is_running(&self, cb: Cb) -> bool {
        self.running.iter().any(|c| c.key() == cb.key())
    }
    /// Where a withdrawal by the owner of an object (`remote`: not the home thread) returned.
    fn withdrawn(&self, remote: bool) -> Withdrawn {
        Withdrawn::at(remote, &self.frames)
    }
    /// The start of the outermost poll in progress.
    fn outer(&self) -> Option<usize> {
        self.frames.first().map(|f| f.begin)
    }

    fn step(&mut self, i: usize, ev: &Ev) -> Result<(), Failure> {
        // The work that may wake a poll (the budget of `p_no_busy_loop`).
        if matches!(
            ev,
            Ev::Schedule(_)
                | Ev::Cancel(_)
                | Ev::Delete(_)
                | Ev::Oneshot(_)
                | Ev::TimerMod(..)
                | Ev::TimerDel(..)
                | Ev::SetBegin(..)
                | Ev::InterestBegin(..)
                | Ev::WriteBegin(..)
                | Ev::Removed(_)
                | Ev::Ready(_)
                | Ev::HangUp(_)
                | Ev::Wake
        ) {
            self.st.ops += 1;
        }
        match ev {
            Ev::PollBegin { now, .. } => {
                self.poll_begin(i, *now);
                Ok(())
            }
            Ev::PollEnd { progress } => self.poll_end(i, *progress),
            Ev::CbBegin(cb) => self.cb_begin(i, *cb),
            Ev::CbEnd(cb) => match self.running.pop() {
                Some(c) if c.key() == cb.key() => Ok(()),
                other => Err(fail("p_log", i, format!("CbEnd({cb:?}) but running {other:?}"))),
            },
            Ev::Violation(msg) => {
                let property = ["p_no_lost_wakeup", "p_no_busy_loop"]
                    .into_iter()
                    .find(|p| msg.starts_with(p))
                    .unwrap_or("p_runner");
                Err(fail(property, i, msg.clone()))
            }
            Ev::End { idle_polls, injected } => self.end(i, *idle_polls, *injected),
            Ev::TimerFreed(t) => {
                self.timers[*t as usize].freed = true;
                Ok(())
            }
            Ev::Dropped => self.dropped(i),
            Ev::RemoteDone(_) => Ok(()),
            Ev::Schedule(_)
            | Ev::Cancel(_)
            | Ev::Delete(_)
            | Ev::Oneshot(_)
            | Ev::TimerMod(..)
            | Ev::TimerDel(..)
            | Ev::Wake => self.bh_or_timer_op(i, ev),
            _ => self.fd_event(i, ev),
        }
    }

    /// What is due when a poll begins: home-owned BHs scheduled, timers expired, handlers whose fd
    /// is readable (or writable, while they wait for it), unless running further up the stack.
    fn poll_begin(&mut self, i: usize, now: u64) {
        self.st.polls += 1;
        if !self.frames.is_empty() {
            self.st.nested_polls += 1;
        }
        let mut due = Vec::new();
        for (b, m) in self.bhs.iter().enumerate() {
            let b = b as u8;
            if self.home_bh(b) && m.scheduled && !m.deleted && !self.is_running(Cb::Bh(b)) {
                due.push(Due::Bh(b));
            }
        }
        for (t, m) in self.timers.iter().enumerate() {
            let t = t as u8;
            if self.home_t(t)
                && m.armed.is_some_and(|d| d <= now)
                && !self.is_running(Cb::Timer(t, 0))
            {
                due.push(Due::Timer(t));
            }
        }
        if self.strict_fds {
            for (f, m) in self.fds.iter().enumerate() {
                let f = f as u8;
                let [inst] = m.live[..] else { continue };
                if !self.home_f(f) || self.is_running(Cb::Read(f, inst)) || m.unwatched {
                    continue;
                }
                if m.readable && m.read.on && !m.hanging_up {
                    due.push(Due::Fd(f, inst));
                }
                // A model fd is always writable.
                if m.write.on {
                    due.push(Due::Write(f, inst));
                }
            }
        }
        self.frames.push(Frame { begin: i, now, direct_progress: false, due });
        self.fds.iter_mut().for_each(|m| m.unwatched = false);
    }

    /// `p_progress_exact` and `p_runs_what_was_due`.
    fn poll_end(&mut self, i: usize, progress: bool) -> Result<(), Failure> {
        let Some(fr) = self.frames.pop() else {
            return Err(fail("p_log", i, "PollEnd without PollBegin".into()));
        };
        if progress != fr.direct_progress {
            return Err(fail(
                "p_progress_exact",
                i,
                format!(
                    "poll returned {progress}, but a progress callback {} directly in it \
                     (events {}..{i})",
                    if fr.direct_progress { "ran" } else { "did not run" },
                    fr.begin
                ),
            ));
        }
        let during = &self.log[fr.begin..i];
        for d in fr.due {
            self.st.obligations += 1;
            let ok = during.iter().any(|e| match (d, e) {
                (Due::Bh(b), Ev::CbBegin(Cb::Bh(x))) => *x == b,
                (Due::Bh(b), Ev::Cancel(x) | Ev::Delete(x)) => *x == b,
                (Due::Timer(t), Ev::CbBegin(Cb::Timer(x, _))) => *x == t,
                (Due::Timer(t), Ev::TimerMod(x, _) | Ev::TimerDel(x, _)) => *x == t,
                (Due::Fd(f, _), Ev::CbBegin(Cb::Read(x, _) | Cb::PollReady(x, _))) => *x == f,
                (Due::Fd(f, _), Ev::SetBegin(x, _) | Ev::Removed(x) | Ev::Consumed(x)) => *x == f,
                (Due::Write(f, _), Ev::CbBegin(Cb::Write(x, _))) => *x == f,
                (Due::Write(f, _), Ev::SetBegin(x, _) | Ev::Removed(x)) => *x == f,
                (Due::Write(f, _), Ev::WriteEnd(x, false, _)) => *x == f,
                _ => false,
            });
            if !ok {
                return Err(fail(
                    "p_runs_what_was_due",
                    i,
                    format!(
                        "{d:?} was due when the poll began (event {}, now {}) and did not run in it",
                        fr.begin, fr.now
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A callback starts: `p_no_reentry`, then the rules of its kind; a progress callback marks
    /// the innermost poll.
    fn cb_begin(&mut self, i: usize, cb: Cb) -> Result<(), Failure> {
        self.st.callbacks += 1;
        if self.is_running(cb) {
            return Err(fail("p_no_reentry", i, format!("{cb:?} started while running")));
        }
        let progress = match cb {
            Cb::Bh(b) => self.bh_call(i, b)?,
            Cb::Oneshot(n) => {
                let c = self.oneshots.entry(n).or_insert(0);
                *c += 1;
                if *c > 1 {
                    return Err(fail("p_oneshot_once", i, format!("oneshot {n} ran twice")));
                }
                true
            }
            Cb::Timer(t, now) => self.timer_call(i, t, now)?,
            Cb::Read(f, inst) | Cb::PollReady(f, inst) | Cb::Write(f, inst) => {
                self.handler_call(i, cb, f, inst)?
            }
            // Checked by `p_poll_end_follows_begin` (its IoPollBegin / IoPollEnd); here only a
            // frame of the handler's, for `p_no_reentry`.
            Cb::PollBracket(..) => false,
        };
        if progress {
            if let Some(fr) = self.frames.last_mut() {
                fr.direct_progress = true;
            }
        }
        self.running.push(cb);
        Ok(())
    }

    /// BH `b` called: not after its delete, only when scheduled (home) or no more often than
    /// scheduled (remote). Progress unless idle.
    fn bh_call(&mut self, i: usize, b: u8) -> Result<bool, Failure> {
        let (outer, home) = (self.outer(), self.home_bh(b));
        let m = &mut self.bhs[b as usize];
        if m.deleted && !m.deleted_in.allows(outer) {
            return Err(fail(
                "p_no_call_after_delete",
                i,
                format!("BH {b} called after its Bh was dropped"),
            ));
        }
        if home && !m.scheduled {
            return Err(fail(
                "p_bh_only_when_scheduled",
                i,
                format!("BH {b} called while not scheduled"),
            ));
        }
        m.runs += 1;
        if m.runs > m.scheds {
            return Err(fail(
                "p_bh_only_when_scheduled",
                i,
                format!("BH {b}: run {} after {} schedules", m.runs, m.scheds),
            ));
        }
        m.scheduled = false;
        m.last_run = Some(i);
        Ok(!m.idle)
    }

    /// Timer `t` fires reading the clock at `now`: not after its drop, only armed, never early.
    fn timer_call(&mut self, i: usize, t: u8, now: u64) -> Result<bool, Failure> {
        let (outer, home) = (self.outer(), self.home_t(t));
        let m = &mut self.timers[t as usize];
        if m.dropped && !m.dropped_in.allows(outer) {
            return Err(fail(
                "p_no_call_after_delete",
                i,
                format!("timer {t} fired after its Timer was dropped"),
            ));
        }
        m.fires += 1;
        if home {
            match m.armed {
                None => {
                    return Err(fail(
                        "p_timer_only_when_armed",
                        i,
                        format!("timer {t} fired while disarmed"),
                    ))
                }
                Some(d) if now < d => {
                    return Err(fail(
                        "p_timer_not_early",
                        i,
                        format!("timer {t} fired at {now}, deadline {d}"),
                    ))
                }
                _ => {}
            }
        } else if m.fires > m.mods {
            return Err(fail(
                "p_timer_only_when_armed",
                i,
                format!("timer {t}: fire {} after {} armings", m.fires, m.mods),
            ));
        }
        m.armed = None;
        m.last_fire = Some(i);
        Ok(true)
    }

    /// A callback of fd `f`'s handler instance `inst`: registered (or inside the window of a
    /// remote removal), its fd readable since (on_read, io_poll_ready), its side waited for.
    fn handler_call(&mut self, i: usize, cb: Cb, f: u8, inst: u32) -> Result<bool, Failure> {
        let outer = self.outer();
        let m = &self.fds[f as usize];
        let window = m.removed.get(&inst).is_some_and(|w| w.allows(outer));
        if !m.live.contains(&inst) && !window {
            return Err(fail(
                "p_no_call_after_remove",
                i,
                format!("fd {f} handler instance {inst} called, not registered"),
            ));
        }
        let write = matches!(cb, Cb::Write(..));
        if !write && !m.ready_since.contains(&inst) {
            return Err(fail(
                "p_handler_only_when_ready",
                i,
                format!("fd {f} handler {inst} called; fd never readable since"),
            ));
        }
        if matches!(cb, Cb::Read(..)) && !m.read.on && !m.no_interest_in.allows(outer) {
            return Err(fail(
                "p_interest_obeyed",
                i,
                format!("fd {f} handler {inst}: on_read called, interest NONE"),
            ));
        }
        if write {
            if !m.write.on {
                return Err(fail(
                    "p_interest_obeyed",
                    i,
                    format!("fd {f} handler {inst}: on_write called, write side off"),
                ));
            }
            self.st.writes += 1;
        }
        Ok(true)
    }

    /// An operation on a BH or a timer, or a bare wake-up (a grant is logged before it is made, a
    /// withdrawal after it returned: see the module docs).
    fn bh_or_timer_op(&mut self, i: usize, ev: &Ev) -> Result<(), Failure> {
        match ev {
            Ev::Schedule(b) => {
                let m = &mut self.bhs[*b as usize];
                m.scheduled = true;
                m.scheds += 1;
                m.last_sched = Some(i);
            }
            Ev::Cancel(b) => {
                if self.home_bh(*b) {
                    self.bhs[*b as usize].scheduled = false;
                }
            }
            Ev::Delete(b) => {
                let w = self.withdrawn(!self.home_bh(*b));
                let m = &mut self.bhs[*b as usize];
                m.deleted = true;
                m.deleted_in = w;
            }
            Ev::Oneshot(n) => {
                self.oneshots.entry(*n).or_insert(0);
            }
            Ev::TimerMod(t, d) => {
                let m = &mut self.timers[*t as usize];
                m.armed = Some(*d);
                m.mods += 1;
                m.last_mod = Some(i);
            }
            Ev::TimerDel(t, dropped) => {
                let (home, running) = (self.home_t(*t), self.is_running(Cb::Timer(*t, 0)));
                let w = self.withdrawn(!home);
                let m = &mut self.timers[*t as usize];
                m.armed = None;
                // Dropped on the home thread while not running: its closure is freed by the drop.
                if *dropped && home && !running && !m.freed {
                    return Err(fail(
                        "p_timer_closure_freed",
                        i,
                        format!("timer {t}: its Timer was dropped, its closure is still alive"),
                    ));
                }
                if *dropped {
                    m.dropped = true;
                    m.dropped_in = w;
                }
            }
            Ev::Wake => self.wakes += 1,
            _ => unreachable!("not a BH or timer operation: {ev:?}"),
        }
        Ok(())
    }

    /// An fd's registration, interest, readiness or polling changed.
    fn fd_event(&mut self, i: usize, ev: &Ev) -> Result<(), Failure> {
        match ev {
            Ev::SetBegin(f, inst) => {
                let write = self.p.fds[*f as usize].write && self.home_f(*f);
                let m = &mut self.fds[*f as usize];
                m.read.register(true);
                m.write.register(write);
                m.live.push(*inst);
                if m.readable || m.maybe_readable {
                    m.ready_since.insert(*inst);
                }
            }
            Ev::SetEnd(f, inst, ok) => {
                let w = self.withdrawn(!self.home_f(*f));
                let m = &mut self.fds[*f as usize];
                if *ok {
                    for old in m.live.iter().filter(|x| *x != inst) {
                        m.removed.insert(*old, w);
                    }
                    m.live.retain(|x| x == inst);
                } else {
                    m.live.retain(|x| x != inst);
                    m.read.undo();
                    m.write.undo();
                }
            }
            Ev::InterestBegin(f, on) => self.fds[*f as usize].read.begin(*on),
            Ev::InterestEnd(f, on, ok) => {
                let w = self.withdrawn(!self.home_f(*f));
                let m = &mut self.fds[*f as usize];
                if m.read.end(*on, *ok) {
                    m.no_interest_in = w;
                }
            }
            Ev::WriteBegin(f, on) => self.fds[*f as usize].write.begin(*on),
            Ev::WriteEnd(f, on, ok) => {
                self.fds[*f as usize].write.end(*on, *ok);
            }
            Ev::Removed(f) => {
                let w = self.withdrawn(!self.home_f(*f));
                let m = &mut self.fds[*f as usize];
                for inst in m.live.drain(..) {
                    m.removed.insert(inst, w);
                }
            }
            Ev::Ready(f) | Ev::HangUp(f) => {
                let m = &mut self.fds[*f as usize];
                m.readable = true;
                m.readying += u32::from(matches!(ev, Ev::Ready(_)));
                if matches!(ev, Ev::HangUp(_)) {
                    m.hung_up = true;
                    m.hanging_up = true;
                    self.st.hang_ups += 1;
                }
                let live = m.live.clone();
                m.ready_since.extend(live);
            }
            Ev::HungUp(f) => self.fds[*f as usize].hanging_up = false,
            Ev::ReadyDone(f) => {
                let m = &mut self.fds[*f as usize];
                m.readying = m.readying.saturating_sub(1);
            }
            Ev::Unwatched(f) => self.fds[*f as usize].unwatched = true,
            Ev::Consumed(f) => {
                // A write still in flight may land after the read.
                let m = &mut self.fds[*f as usize];
                m.readable = m.hung_up;
                m.maybe_readable = m.readying > 0;
            }
            Ev::IoPollBegin(f, inst) | Ev::IoPollEnd(f, inst) => {
                let on = matches!(ev, Ev::IoPollBegin(..));
                let outer = self.outer();
                let m = &mut self.fds[*f as usize];
                // A removed handler's io_poll_end still comes (if it was begun); its begin does
                // not, as no other callback of it after the removal returned.
                let window = m.removed.get(inst).is_some_and(|w| w.allows(outer));
                if on && !m.live.contains(inst) && !window {
                    return Err(fail(
                        "p_no_call_after_remove",
                        i,
                        format!("fd {f} handler instance {inst}: io_poll_begin after its removal"),
                    ));
                }
                let was = m.poll_begun.insert(*inst, on).unwrap_or(false);
                if was == on {
                    return Err(fail(
                        "p_poll_end_follows_begin",
                        i,
                        format!(
                            "fd {f} instance {inst}: io_poll_{} twice in a row",
                            if on { "begin" } else { "end" }
                        ),
                    ));
                }
            }
            Ev::Polled(f, inst) if !self.fds[*f as usize].poll => {
                return Err(fail(
                    "p_poll_list_membership",
                    i,
                    format!("fd {f} instance {inst} has no io_poll but is on the poll list"),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The run is over (the final drain done): nothing the model holds scheduled, armed or
    /// waited for is left (`p_arming_kept`), every oneshot ran once, and the idle polls are
    /// bounded by the work that could wake them (`p_no_busy_loop`).
    fn end(&mut self, i: usize, idle_polls: u64, injected: u64) -> Result<(), Failure> {
        if !self.frames.is_empty() || !self.running.is_empty() {
            return Err(fail("p_log", i, "End inside a poll".into()));
        }
        let kept = |detail: String| Err(fail("p_arming_kept", i, detail));
        for (b, m) in self.bhs.iter().enumerate() {
            if m.deleted {
                continue;
            }
            if self.home_bh(b as u8) && m.scheduled {
                return kept(format!(
                    "BH {b} is still scheduled in the model, but the run ended (the code dropped \
                     the schedule, or never ran it)"
                ));
            }
            if let Some(s) = m.last_sched {
                if m.last_run.is_none_or(|r| r < s) && !cancelled_after(self.log, m, b as u8) {
                    return kept(format!("BH {b}: scheduled at event {s}, never ran after it"));
                }
            }
        }
        for (n, c) in &self.oneshots {
            if *c != 1 {
                return Err(fail("p_oneshot_once", i, format!("oneshot {n} ran {c} times")));
            }
        }
        for (t, m) in self.timers.iter().enumerate() {
            if m.dropped {
                continue;
            }
            if self.home_t(t as u8) && m.armed.is_some() {
                return kept(format!(
                    "timer {t} is armed in the model ({:?}), but the run ended (its arming was \
                     dropped)",
                    m.armed
                ));
            }
            if let Some(s) = m.last_mod {
                let withdrawn = self.log[s..i]
                    .iter()
                    .any(|e| matches!(e, Ev::TimerDel(x, _) if *x as usize == t));
                if m.last_fire.is_none_or(|r| r < s) && !withdrawn {
                    return kept(format!("timer {t}: armed at event {s}, never fired after it"));
                }
            }
        }
        for (f, m) in self.fds.iter().enumerate() {
            if !self.strict_fds || m.live.len() != 1 {
                continue;
            }
            if m.write.on {
                return kept(format!("fd {f} waits for writability at the end, never flushed"));
            }
            if m.readable && m.read.on {
                return kept(format!(
                    "fd {f} is readable and registered, its handler never consumed it"
                ));
            }
        }
        let st = &self.st;
        let budget = 2 * (st.ops + st.callbacks + self.wakes + injected) + 8;
        if idle_polls > budget {
            return Err(fail(
                "p_no_busy_loop",
                i,
                format!(
                    "{idle_polls} outermost polls made no progress; the work that could wake \
                     them allows {budget}"
                ),
            ));
        }
        Ok(())
    }

    /// The context was dropped: every timer closure freed, every io_poll_begin ended.
    fn dropped(&mut self, i: usize) -> Result<(), Failure> {
        if let Some(t) = self.timers.iter().position(|m| !m.freed) {
            return Err(fail(
                "p_timer_closure_freed",
                i,
                format!("timer {t}: its closure outlived its Timer and the context"),
            ));
        }
        for (f, m) in self.fds.iter().enumerate() {
            if let Some((inst, _)) = m.poll_begun.iter().find(|(_, on)| **on) {
                return Err(fail(
                    "p_poll_end_follows_begin",
                    i,
                    format!(
                        "fd {f} instance {inst}: io_poll_begin without io_poll_end after the \
                         context was dropped"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a schedule of remote-owned BH `b` was withdrawn (cancelled or deleted) after it.
fn cancelled_after(log: &[Ev], m: &BhM, b: u8) -> bool {
    let Some(s) = m.last_sched else { return false };
    log[s..].iter().any(|e| matches!(e, Ev::Cancel(x) | Ev::Delete(x) if *x == b))
}
