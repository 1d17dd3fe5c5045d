//! The transition system: shared state, per-thread program counters, and the step function.
//!
//! Every transition is one [`Step`] of one thread, taken atomically (sequential consistency), and
//! produces the [`TraceEvent`] the implementation records for that step. Fences are steps with no
//! effect on the state, so model traces line up with implementation traces step for step.
//!
//! # Values recorded per step
//!
//! Keys follow the Promela models' rule (promela/common.pml): the globals a step read or wrote,
//! with their value *after* the step; `<global>_old` for the value a read-modify-write read; plus
//! step outcomes (`timeout`, `readable`, `idle`).
//!
//! | step | values |
//! |---|---|
//! | `ctx_notify_release_fence`, `ctx_notify_fence`, `ctx_poll_fence`, `ctx_prepare_fence`, `ctx_notify_accept_fence` | none |
//! | `ctx_notify_set_notified` | `notified=1`, `notified_old` (the implementation's swap; the bug `skip_event_when_notified` uses it) |
//! | `ctx_notify_read_notify_me` | `notify_me` |
//! | `ctx_notify_event_set` | `notifier=1` |
//! | `ctx_notify_accept` | `notified=0`, `notified_old` (a swap) |
//! | `ctx_poll_compute_timeout` | `timeout` |
//! | `ctx_poll_userspace`, `ctx_poll_recheck_notified` | `notified` (read), `timeout` (after: 0 if it was set); the external loop's re-check in prepare: `notified` only |
//! | `ctx_poll_notify_me_add`, `ctx_poll_notify_me_sub`, `ctx_prepare_notify_me_or`, `ctx_check_notify_me_clear` | `notify_me` |
//! | `ctx_poll_wait` | `notifier` (read), `timeout` (the wait's), `readable` (the wait reported the notifier) |
//! | `ctx_poll_event_drain` | `notifier=0`, `notifier_old` (what the drain consumed; 0 if another poller drained first) |
//! | `bh_schedule_flags`, `bh_cancel`, `bh_delete`, `bh_poll_dequeue` | `bh_flags`, `bh_flags_old` (`bh_delete` is enqueue(DELETED): push if PENDING was clear, then notify) |
//! | `bh_schedule_push` | `bh_list=1` (non-empty) |
//! | `bh_poll_take` | `bh_list=0`, `bh_list_old` (1 if it took something) |
//! | `bh_poll_call` | `idle` (1 for an idle BH: not progress) |
//!
//! `timeout`: -1 infinite, 0, > 0 finite (the model says 10, the idle-BH cap in ms); the oracle
//! compares it by class, so any unit works. (Promela's encoding 0/1/2 is converted by
//! [`crate::trace::parse_spin_output`].)
//!
//! No BH id is recorded: the model knows which BH each step concerns (a remote's operation names it,
//! and a slice is dequeued in LIFO order), so the flags are checked against the right BH anyway.
//! `ctx_poll_wait` is recorded when the wait *returns* (its linearization point is the read of the
//! notifier's readiness); a wait that never returns has no event.

use std::fmt;

use aioctx::bh_flags::{BH_DELETED, BH_IDLE, BH_ONESHOT, BH_PENDING, BH_SCHEDULED};
use aioctx::trace::Step;

use crate::scenario::{Bug, Loops, Op, Poller, Scenario};
use crate::trace::TraceEvent;

/// The wait timeout class (the model has no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// Do not block.
    Zero,
    /// Capped (an idle BH is pending): the wait may return by timing out.
    Finite,
    /// Block until the notifier is set.
    Infinite,
}

impl Timeout {
    /// The value recorded in traces: -1 infinite, 0, 10 (ms, the idle-BH cap).
    pub const fn value(self) -> i64 {
        match self {
            Timeout::Zero => 0,
            Timeout::Finite => 10,
            Timeout::Infinite => -1,
        }
    }
}

/// Where a poller is: the step it takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollerPc {
    /// Start of an iteration: `ctx_poll_compute_timeout` (blocking) or `ctx_prepare_notify_me_or` (external).
    Start,
    /// `ctx_prepare_fence`.
    PrepareFence,
    /// `ctx_poll_recheck_notified` in prepare (only with `Scenario::prepare_recheck_notified`).
    PrepareRecheck,
    /// `ctx_poll_compute_timeout` of the external loop's prepare.
    ExtComputeTimeout,
    /// `ctx_poll_userspace` (another round), or leave polling: then the `Arm` step.
    Userspace,
    /// `ctx_poll_notify_me_add`.
    Arm,
    /// `ctx_poll_fence`.
    Fence,
    /// `ctx_poll_recheck_notified`.
    Recheck,
    /// `ctx_poll_wait`: blocked unless the timeout is not infinite or the notifier is set.
    Wait,
    /// `ctx_poll_notify_me_sub`.
    Sub,
    /// `ctx_check_notify_me_clear`.
    CheckClear,
    /// `ctx_notify_accept`.
    Accept,
    /// `ctx_notify_accept_fence`.
    AcceptFence,
    /// `bh_poll_take`.
    Take,
    /// `bh_poll_dequeue` of the next BH of the slice.
    Dequeue,
    /// `bh_poll_call` of the BH just dequeued.
    Call,
    /// `ctx_poll_wait` with timeout 0 in the external loop's check: the readiness query that decides
    /// the drain (only with `Scenario::check_readiness_wait`).
    CheckWait,
    /// `ctx_poll_event_drain`.
    Drain,
    /// Finished its loops.
    Done,
    // Decision points, resolved by `settle` (never stored in a state):
    #[doc(hidden)]
    AfterTimeout,
    #[doc(hidden)]
    AfterPolling,
    #[doc(hidden)]
    WaitOrSkip,
    #[doc(hidden)]
    AfterWait,
    #[doc(hidden)]
    PostNext,
    #[doc(hidden)]
    NextBh,
    #[doc(hidden)]
    End,
}

/// A poller's local state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PollerState {
    /// Next step.
    pub pc: PollerPc,
    /// Iterations left (`None`: forever).
    pub loops_left: Option<u8>,
    /// This iteration's timeout.
    pub timeout: Timeout,
    /// `notify_me += 2` done in this iteration (blocking poll).
    pub armed: bool,
    /// The wait reported the notifier readable (its read handler will drain it).
    pub ready: bool,
    /// Userspace polling rounds made in this iteration (at most `Scenario::poll_rounds`).
    pub rounds: u32,
    /// How many phases of the post-wait sequence (accept, readiness query, drain, scan) are done.
    pub post: u8,
    /// BHs taken from the list and not yet dequeued; the next one is the last (LIFO).
    pub slice: Vec<u8>,
    /// The BH dequeued and about to be called, with the flags its dequeue saw.
    pub current: Option<(u8, u32)>,
}

/// Where a remote thread is in its current operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemotePc {
    /// The first step of the operation (`bh_schedule_flags`, `bh_cancel`, `bh_delete`).
    Begin,
    /// `bh_schedule_push`.
    Push,
    /// `ctx_notify_release_fence`.
    NotifyRelease,
    /// `ctx_notify_set_notified`.
    NotifySet,
    /// `ctx_notify_fence`.
    NotifyFence,
    /// `ctx_notify_read_notify_me`.
    NotifyRead,
    /// `ctx_notify_event_set`.
    EventSet,
    /// All operations done.
    Done,
}

/// A remote thread's local state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteState {
    /// Index of the current operation.
    pub op: u8,
    /// Next step within it.
    pub pc: RemotePc,
    /// `skip_event_when_notified` only: the value of `notified` its swap saw.
    pub old_notified: bool,
}

/// One thread's local state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThreadState {
    /// A poller (blocking or external, per the scenario).
    Poller(PollerState),
    /// A remote thread.
    Remote(RemoteState),
}

/// The whole model state: shared variables, ghost variables and every thread's local state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// `notify_me`: bit 0 external loop between prepare and check; `+2` per blocking poll armed.
    pub notify_me: u32,
    /// `notified`.
    pub notified: bool,
    /// The eventfd counter is non-zero.
    pub notifier: bool,
    /// Ghost: a bare notify's request that no scan (`bh_poll_take`) has seen yet.
    pub request: bool,
    /// Each BH's flags (`aioctx::bh_flags`).
    pub bh_flags: Vec<u32>,
    /// `bh_list`, bottom to top (a push appends; `bh_poll_take` takes all).
    pub bh_list: Vec<u8>,
    /// Ghost: how many times each BH's callback ran (work consumed).
    pub bh_calls: Vec<u8>,
    /// Ghost: a BH that was called although its dequeue saw DELETED (`p_deleted_bh_never_called`).
    pub bad_call: Option<u8>,
    /// Per thread: pollers first, then remotes.
    pub threads: Vec<ThreadState>,
}

/// One transition: `thread` takes `event.step`, leading to `next`.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Thread id.
    pub thread: u32,
    /// The event it records.
    pub event: TraceEvent,
    /// The state after it.
    pub next: State,
}

/// The properties the explorer checks; `as_str` is the name used by every checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Property {
    /// No state in which nothing can run, a poller is blocked in its wait, and work is pending.
    NoLostWakeup,
    /// No fair cycle of loop iterations that consumes nothing.
    NoBusyLoop,
    /// A BH whose dequeue saw DELETED is never called. The call decision and DELETED are read by the
    /// same RMW, so this holds by construction in the current protocol; it guards model variants. A
    /// delete racing with the loop may still see one call (the dequeue came first): like cancel, delete
    /// is racy unless made on the home thread.
    DeletedBhNeverCalled,
    /// A BH is never on the list (or a slice) twice.
    BhNeverOnListTwice,
}

impl Property {
    /// Every property.
    pub const ALL: &'static [Property] = &[
        Property::NoLostWakeup,
        Property::NoBusyLoop,
        Property::DeletedBhNeverCalled,
        Property::BhNeverOnListTwice,
    ];

    /// The property's name in every checker.
    pub const fn as_str(self) -> &'static str {
        match self {
            Property::NoLostWakeup => "p_no_lost_wakeup",
            Property::NoBusyLoop => "p_no_busy_loop",
            Property::DeletedBhNeverCalled => "p_deleted_bh_never_called",
            Property::BhNeverOnListTwice => "p_bh_never_on_list_twice",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl State {
    /// The initial state of a scenario: all BHs idle, every thread at its first step.
    pub fn initial(sc: &Scenario) -> State {
        sc.validate();
        let mut threads = Vec::new();
        for p in &sc.pollers {
            threads.push(ThreadState::Poller(PollerState {
                pc: PollerPc::Start,
                loops_left: match p.loops() {
                    Loops::Times(n) => Some(n),
                    Loops::Forever => None,
                },
                timeout: Timeout::Infinite,
                armed: false,
                ready: false,
                rounds: 0,
                post: 0,
                slice: Vec::new(),
                current: None,
            }));
            if p.loops() == Loops::Times(0) {
                if let Some(ThreadState::Poller(ps)) = threads.last_mut() {
                    ps.pc = PollerPc::Done;
                }
            }
        }
        for ops in &sc.remotes {
            let mut rs = RemoteState { op: 0, pc: RemotePc::Begin, old_notified: false };
            settle_remote(ops, &mut rs);
            threads.push(ThreadState::Remote(rs));
        }
        State {
            notify_me: 0,
            notified: false,
            notifier: false,
            request: false,
            bh_flags: vec![0; sc.bhs as usize],
            bh_list: Vec::new(),
            bh_calls: vec![0; sc.bhs as usize],
            bad_call: None,
            threads,
        }
    }

    fn poller(&self, t: usize) -> &PollerState {
        match &self.threads[t] {
            ThreadState::Poller(p) => p,
            ThreadState::Remote(_) => unreachable!("thread {t} is not a poller"),
        }
    }

    fn poller_mut(&mut self, t: usize) -> &mut PollerState {
        match &mut self.threads[t] {
            ThreadState::Poller(p) => p,
            ThreadState::Remote(_) => unreachable!("thread {t} is not a poller"),
        }
    }

    fn remote_mut(&mut self, t: usize) -> &mut RemoteState {
        match &mut self.threads[t] {
            ThreadState::Remote(r) => r,
            ThreadState::Poller(_) => unreachable!("thread {t} is not a remote"),
        }
    }

    /// True if thread `t` has finished (a poller its loops, a remote its operations).
    pub fn finished(&self, t: usize) -> bool {
        match &self.threads[t] {
            ThreadState::Poller(p) => p.pc == PollerPc::Done,
            ThreadState::Remote(r) => r.pc == RemotePc::Done,
        }
    }

    /// True if thread `t` is a poller sitting in a wait that cannot return now.
    pub fn blocked(&self, t: usize) -> bool {
        match &self.threads[t] {
            ThreadState::Poller(p) => p.pc == PollerPc::Wait && !self.wait_can_return(p),
            ThreadState::Remote(_) => false,
        }
    }

    fn wait_can_return(&self, p: &PollerState) -> bool {
        p.timeout != Timeout::Infinite || self.notifier
    }

    /// True if some work is pending: a bare-notify request no scan has seen, or a BH on the list or in
    /// a slice that is SCHEDULED and not DELETED.
    pub fn work_pending(&self) -> bool {
        let live =
            |b: &u8| self.bh_flags[*b as usize] & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED;
        self.request
            || self.bh_list.iter().any(live)
            || self.threads.iter().any(|t| match t {
                ThreadState::Poller(p) => p.slice.iter().any(live),
                ThreadState::Remote(_) => false,
            })
    }

    /// The safety property this state violates, if any (`p_deleted_bh_never_called`,
    /// `p_bh_never_on_list_twice`).
    pub fn safety_violation(&self) -> Option<Property> {
        if self.bad_call.is_some() {
            return Some(Property::DeletedBhNeverCalled);
        }
        let mut seen = 0u32;
        let slices = self.threads.iter().filter_map(|t| match t {
            ThreadState::Poller(p) => Some(&p.slice),
            ThreadState::Remote(_) => None,
        });
        for b in self.bh_list.iter().chain(slices.flatten()) {
            if seen & (1 << b) != 0 {
                return Some(Property::BhNeverOnListTwice);
            }
            seen |= 1 << b;
        }
        None
    }

    /// `p_no_lost_wakeup` at a state with no successor: some poller is blocked while work is pending.
    pub fn lost_wakeup(&self) -> bool {
        (0..self.threads.len()).any(|t| self.blocked(t)) && self.work_pending()
    }

    /// Threads blocked in a wait.
    pub fn blocked_threads(&self) -> Vec<u32> {
        (0..self.threads.len()).filter(|&t| self.blocked(t)).map(|t| t as u32).collect()
    }

    /// True if every remote thread has finished.
    pub fn remotes_done(&self) -> bool {
        self.threads.iter().all(|t| match t {
            ThreadState::Remote(r) => r.pc == RemotePc::Done,
            ThreadState::Poller(_) => true,
        })
    }
}

fn flags_str(f: u32) -> String {
    let names = [
        (BH_PENDING, "P"),
        (BH_SCHEDULED, "S"),
        (BH_ONESHOT, "O"),
        (BH_DELETED, "D"),
        (BH_IDLE, "I"),
    ];
    let s: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    if s.is_empty() {
        "0".into()
    } else {
        s.join("|")
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "notify_me={} notified={} notifier={} request={} bh_list={:?}",
            self.notify_me,
            self.notified as u8,
            self.notifier as u8,
            self.request as u8,
            self.bh_list
        )?;
        for (b, fl) in self.bh_flags.iter().enumerate() {
            write!(f, " bh{b}={}/calls={}", flags_str(*fl), self.bh_calls[b])?;
        }
        if let Some(b) = self.bad_call {
            write!(f, " bad_call=bh{b}")?;
        }
        for (t, th) in self.threads.iter().enumerate() {
            match th {
                ThreadState::Poller(p) => write!(
                    f,
                    "\n  thread {t} poller: pc={:?} loops_left={:?} timeout={:?} armed={} ready={} rounds={} slice={:?} current={:?}",
                    p.pc, p.loops_left, p.timeout, p.armed, p.ready, p.rounds, p.slice, p.current
                )?,
                ThreadState::Remote(r) => write!(
                    f,
                    "\n  thread {t} remote: op={} pc={:?} old_notified={}",
                    r.op, r.pc, r.old_notified
                )?,
            }
        }
        Ok(())
    }
}

/// The blocking poll's timeout: 0 if a non-idle BH is scheduled on the list, finite if only idle ones,
/// else infinite (no timers in the model). Bare-notify requests are invisible here.
fn compute_timeout(st: &State) -> Timeout {
    let mut t = Timeout::Infinite;
    for &b in &st.bh_list {
        let f = st.bh_flags[b as usize];
        if f & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED {
            if f & BH_IDLE == 0 {
                return Timeout::Zero;
            }
            t = Timeout::Finite;
        }
    }
    t
}

/// The phases after the wait (after `notify_me -= 2`, or the external loop's check clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `ctx_notify_accept`, `ctx_notify_accept_fence`.
    Accept,
    /// The external loop's check asks the fd monitor for readiness (`ctx_poll_wait`, timeout 0).
    ReadinessQuery,
    /// `ctx_poll_event_drain`, if the wait (or the query) reported the notifier.
    Drain,
    /// `bh_poll_take`, then each BH's `bh_poll_dequeue` / `bh_poll_call`.
    Scan,
}

/// The post-wait order: accept, drain, scan (the drain comes before the scan: a kick that lands
/// after the drain stays set for another armed poller; one that landed before published its work,
/// which the scan sees). The planted bugs reorder the blocking poll only.
fn post_wait_order(sc: &Scenario, kind: Poller) -> &'static [Phase] {
    use Phase::*;
    match (kind, sc.bug) {
        (Poller::External(_), _) if sc.check_readiness_wait => {
            &[Accept, ReadinessQuery, Drain, Scan]
        }
        (Poller::External(_), _) => &[Accept, Drain, Scan],
        (Poller::Blocking(_), Some(Bug::AcceptAfterScan)) => &[Drain, Scan, Accept],
        (Poller::Blocking(_), Some(Bug::DrainAfterScan)) => &[Accept, Scan, Drain],
        (Poller::Blocking(_), _) => &[Accept, Drain, Scan],
    }
}

/// Resolve the decision points after a step until the poller sits at a real step (or is done).
fn settle_poller(sc: &Scenario, kind: Poller, ps: &mut PollerState) {
    use PollerPc::*;
    loop {
        ps.pc = match ps.pc {
            AfterTimeout => {
                if sc.poll_rounds > 0 && ps.timeout != Timeout::Zero {
                    Userspace
                } else {
                    AfterPolling
                }
            }
            AfterPolling => {
                if ps.timeout != Timeout::Zero {
                    Arm
                } else {
                    WaitOrSkip
                }
            }
            WaitOrSkip => {
                if ps.timeout != Timeout::Zero || sc.zero_timeout_wait {
                    Wait
                } else {
                    AfterWait
                }
            }
            AfterWait => match kind {
                Poller::External(_) => CheckClear,
                Poller::Blocking(_) if ps.armed => Sub,
                Poller::Blocking(_) => PostNext,
            },
            PostNext => match post_wait_order(sc, kind).get(ps.post as usize) {
                None => End,
                Some(Phase::Accept) => Accept,
                Some(Phase::ReadinessQuery) => CheckWait,
                Some(Phase::Drain) if ps.ready && sc.bug != Some(Bug::NoEventDrain) => Drain,
                Some(Phase::Drain) => {
                    ps.post += 1;
                    PostNext
                }
                Some(Phase::Scan) => Take,
            },
            NextBh => {
                if ps.slice.is_empty() {
                    ps.post += 1;
                    PostNext
                } else {
                    Dequeue
                }
            }
            End => {
                // Forget this iteration's locals, so equal protocol states hash equal.
                ps.timeout = Timeout::Infinite;
                ps.armed = false;
                ps.ready = false;
                ps.rounds = 0;
                ps.post = 0;
                match ps.loops_left {
                    Some(n) if n <= 1 => {
                        ps.loops_left = Some(0);
                        Done
                    }
                    Some(n) => {
                        ps.loops_left = Some(n - 1);
                        Start
                    }
                    None => Start,
                }
            }
            _ => return,
        };
    }
}

fn settle_remote(ops: &[Op], rs: &mut RemoteState) {
    if rs.pc == RemotePc::Begin {
        match ops.get(rs.op as usize) {
            None => rs.pc = RemotePc::Done,
            Some(Op::Notify) => rs.pc = RemotePc::NotifyRelease,
            Some(_) => {}
        }
    }
}

fn next_op(ops: &[Op], rs: &mut RemoteState) {
    rs.op += 1;
    rs.pc = RemotePc::Begin;
    rs.old_notified = false;
    settle_remote(ops, rs);
}

fn op_bh(op: Op) -> u8 {
    match op {
        Op::Schedule(b) | Op::ScheduleIdle(b) | Op::Oneshot(b) | Op::Cancel(b) | Op::Delete(b) => b,
        Op::Notify => unreachable!("a bare notify has no BH"),
    }
}

/// Every step thread `t` can take from `st` (empty if it is blocked or finished). Usually one; a
/// poller in userspace polling can either poll another round or leave.
pub fn thread_successors(sc: &Scenario, st: &State, t: usize) -> Vec<(TraceEvent, State)> {
    let mut out = Vec::new();
    if t < sc.pollers.len() {
        poller_steps(sc, st, t, &mut out);
    } else {
        remote_step(sc, st, t, &mut out);
    }
    out
}

/// Every transition from `st`, thread by thread.
pub fn successors(sc: &Scenario, st: &State) -> Vec<Transition> {
    let mut v = Vec::new();
    for t in 0..st.threads.len() {
        for (event, next) in thread_successors(sc, st, t) {
            v.push(Transition { thread: t as u32, event, next });
        }
    }
    v
}

fn poller_steps(sc: &Scenario, st: &State, t: usize, out: &mut Vec<(TraceEvent, State)>) {
    use PollerPc::*;
    let kind = sc.pollers[t];
    let ps = st.poller(t);
    let mut n = st.clone();
    let ev = |step: Step| TraceEvent::new(t as u32, step);
    let event = match ps.pc {
        Done => return,
        Start => match kind {
            Poller::Blocking(_) => {
                let timeout = compute_timeout(st);
                let p = n.poller_mut(t);
                p.timeout = timeout;
                p.rounds = 0;
                p.armed = false;
                p.ready = false;
                p.pc = AfterTimeout;
                ev(Step::CtxPollComputeTimeout).with("timeout", timeout.value())
            }
            Poller::External(_) => {
                n.notify_me |= 1;
                let p = n.poller_mut(t);
                p.timeout = Timeout::Infinite;
                p.armed = false;
                p.ready = false;
                p.pc = PrepareFence;
                ev(Step::CtxPrepareNotifyMeOr).with("notify_me", n.notify_me.into())
            }
        },
        PrepareFence => {
            n.poller_mut(t).pc =
                if sc.prepare_recheck_notified { PrepareRecheck } else { ExtComputeTimeout };
            ev(Step::CtxPrepareFence)
        }
        PrepareRecheck => {
            let v = st.notified;
            let p = n.poller_mut(t);
            if v {
                p.timeout = Timeout::Zero;
            }
            p.pc = ExtComputeTimeout;
            ev(Step::CtxPollRecheckNotified).with("notified", v.into())
        }
        ExtComputeTimeout => {
            // The computed value is recorded; a re-check that saw `notified` still zeroes it.
            let timeout = compute_timeout(st);
            let p = n.poller_mut(t);
            if p.timeout != Timeout::Zero {
                p.timeout = timeout;
            }
            // The external loop always calls its wait (glib polls even with a zero timeout).
            p.pc = Wait;
            ev(Step::CtxPollComputeTimeout).with("timeout", timeout.value())
        }
        Userspace => {
            // Leaving polling (the budget is spent) is not a step: the next step is the arm.
            let mut leave = st.clone();
            leave.poller_mut(t).pc = Arm;
            poller_steps(sc, &leave, t, out);
            if ps.rounds >= sc.poll_rounds {
                return;
            }
            let v = st.notified;
            let p = n.poller_mut(t);
            p.rounds += 1;
            if v {
                // The notifier's poll ends polling (not progress); the loop will not block.
                p.timeout = Timeout::Zero;
                p.pc = AfterPolling;
            }
            let timeout = p.timeout;
            ev(Step::CtxPollUserspace).with("notified", v.into()).with("timeout", timeout.value())
        }
        Arm => {
            n.notify_me += 2;
            let p = n.poller_mut(t);
            p.armed = true;
            p.pc = Fence;
            ev(Step::CtxPollNotifyMeAdd).with("notify_me", n.notify_me.into())
        }
        Fence => {
            n.poller_mut(t).pc =
                if sc.bug == Some(Bug::PollNoRecheckNotified) { WaitOrSkip } else { Recheck };
            ev(Step::CtxPollFence)
        }
        Recheck => {
            let v = st.notified;
            let p = n.poller_mut(t);
            if v {
                p.timeout = Timeout::Zero;
            }
            p.pc = WaitOrSkip;
            let timeout = p.timeout;
            ev(Step::CtxPollRecheckNotified)
                .with("notified", v.into())
                .with("timeout", timeout.value())
        }
        Wait => {
            if !st.wait_can_return(ps) {
                return;
            }
            let ready = st.notifier;
            let p = n.poller_mut(t);
            p.ready = ready;
            p.pc = AfterWait;
            ev(Step::CtxPollWait)
                .with("notifier", ready.into())
                .with("timeout", ps.timeout.value())
                .with("readable", ready.into())
        }
        Sub => {
            assert!(n.notify_me >= 2, "notify_me underflow: {}", n.notify_me);
            n.notify_me -= 2;
            n.poller_mut(t).pc = PostNext;
            ev(Step::CtxPollNotifyMeSub).with("notify_me", n.notify_me.into())
        }
        CheckClear => {
            assert!(n.notify_me & 1 == 1, "notify_me bit 0 clear at check: {}", n.notify_me);
            n.notify_me &= !1;
            n.poller_mut(t).pc = PostNext;
            ev(Step::CtxCheckNotifyMeClear).with("notify_me", n.notify_me.into())
        }
        Accept => {
            let old = st.notified;
            n.notified = false;
            n.poller_mut(t).pc = AcceptFence;
            ev(Step::CtxNotifyAccept).with("notified", 0).with("notified_old", old.into())
        }
        AcceptFence => {
            let p = n.poller_mut(t);
            p.post += 1;
            p.pc = PostNext;
            ev(Step::CtxNotifyAcceptFence)
        }
        Take => {
            let list = std::mem::take(&mut n.bh_list);
            // The scan: everything published before this point is seen (bare-notify requests too).
            n.request = false;
            let was = !list.is_empty();
            let p = n.poller_mut(t);
            p.slice = list;
            p.pc = NextBh;
            ev(Step::BhPollTake).with("bh_list", 0).with("bh_list_old", was.into())
        }
        Dequeue => {
            let p = n.poller_mut(t);
            let b = p.slice.pop().expect("dequeue from an empty slice");
            let old = n.bh_flags[b as usize];
            n.bh_flags[b as usize] = old & !(BH_PENDING | BH_SCHEDULED | BH_IDLE);
            let p = n.poller_mut(t);
            if old & BH_SCHEDULED != 0 && old & BH_DELETED == 0 {
                p.current = Some((b, old));
                p.pc = Call;
            } else {
                p.pc = NextBh;
            }
            ev(Step::BhPollDequeue)
                .with("bh_flags", n.bh_flags[b as usize].into())
                .with("bh_flags_old", old.into())
        }
        Call => {
            let p = n.poller_mut(t);
            let (b, seen) = p.current.take().expect("call without a dequeued BH");
            p.pc = NextBh;
            if seen & BH_DELETED != 0 {
                n.bad_call = Some(b);
            }
            n.bh_calls[b as usize] = n.bh_calls[b as usize].saturating_add(1);
            ev(Step::BhPollCall).with("idle", i64::from(seen & BH_IDLE != 0))
        }
        CheckWait => {
            // A zero-timeout readiness query: it never blocks.
            let ready = st.notifier;
            let p = n.poller_mut(t);
            p.ready = ready;
            p.post += 1;
            p.pc = PostNext;
            ev(Step::CtxPollWait)
                .with("notifier", ready.into())
                .with("timeout", Timeout::Zero.value())
                .with("readable", ready.into())
        }
        Drain => {
            let old = st.notifier;
            n.notifier = false;
            let p = n.poller_mut(t);
            p.post += 1;
            p.pc = PostNext;
            ev(Step::CtxPollEventDrain).with("notifier", 0).with("notifier_old", old.into())
        }
        other => unreachable!("poller {t} stored at a decision point {other:?}"),
    };
    settle_poller(sc, kind, n.poller_mut(t));
    out.push((event, n));
}

fn remote_step(sc: &Scenario, st: &State, t: usize, out: &mut Vec<(TraceEvent, State)>) {
    let ops = &sc.remotes[t - sc.pollers.len()];
    let mut n = st.clone();
    let rs = match &st.threads[t] {
        ThreadState::Remote(r) => r.clone(),
        ThreadState::Poller(_) => unreachable!(),
    };
    let ev = TraceEvent::new(t as u32, step_of_remote(ops, &rs));
    let event = match rs.pc {
        RemotePc::Done => return,
        RemotePc::Begin => {
            let op = ops[rs.op as usize];
            let b = op_bh(op);
            let old = st.bh_flags[b as usize];
            let r = n.remote_mut(t);
            let new = match op {
                Op::Schedule(_) => old | BH_PENDING | BH_SCHEDULED,
                Op::ScheduleIdle(_) => old | BH_PENDING | BH_SCHEDULED | BH_IDLE,
                Op::Oneshot(_) => old | BH_PENDING | BH_SCHEDULED | BH_ONESHOT,
                Op::Cancel(_) => old & !BH_SCHEDULED,
                // The owner's drop is enqueue(DELETED) (docs/protocol.md §4), as in the
                // implementation.
                Op::Delete(_) => old | BH_PENDING | BH_DELETED,
                Op::Notify => unreachable!(),
            };
            match op {
                Op::Cancel(_) => next_op(ops, r),
                _ if old & BH_PENDING == 0 => r.pc = RemotePc::Push,
                _ => r.pc = RemotePc::NotifyRelease,
            }
            n.bh_flags[b as usize] = new;
            ev.with("bh_flags", new.into()).with("bh_flags_old", old.into())
        }
        RemotePc::Push => {
            let b = op_bh(ops[rs.op as usize]);
            n.bh_list.push(b);
            n.remote_mut(t).pc = RemotePc::NotifyRelease;
            ev.with("bh_list", 1)
        }
        RemotePc::NotifyRelease => {
            if ops[rs.op as usize] == Op::Notify {
                // The work a bare notify announces was published before the call.
                n.request = true;
            }
            n.remote_mut(t).pc = RemotePc::NotifySet;
            ev
        }
        RemotePc::NotifySet => {
            let old = st.notified;
            n.notified = true;
            let r = n.remote_mut(t);
            r.pc = RemotePc::NotifyFence;
            // A swap in the implementation (an RMW: it records what it read); the bug uses the
            // value it read.
            if sc.bug == Some(Bug::SkipEventWhenNotified) {
                r.old_notified = old;
            }
            ev.with("notified", 1).with("notified_old", old.into())
        }
        RemotePc::NotifyFence => {
            n.remote_mut(t).pc = RemotePc::NotifyRead;
            ev
        }
        RemotePc::NotifyRead => {
            let v = st.notify_me;
            let skip = sc.bug == Some(Bug::SkipEventWhenNotified) && rs.old_notified;
            let r = n.remote_mut(t);
            if v != 0 && !skip {
                r.pc = RemotePc::EventSet;
            } else {
                next_op(ops, r);
            }
            ev.with("notify_me", v.into())
        }
        RemotePc::EventSet => {
            n.notifier = true;
            next_op(ops, n.remote_mut(t));
            ev.with("notifier", 1)
        }
    };
    out.push((event, n));
}

fn step_of_remote(ops: &[Op], rs: &RemoteState) -> Step {
    match rs.pc {
        RemotePc::Begin => match ops[rs.op as usize] {
            Op::Cancel(_) => Step::BhCancel,
            Op::Delete(_) => Step::BhDelete,
            _ => Step::BhScheduleFlags,
        },
        RemotePc::Push => Step::BhSchedulePush,
        RemotePc::NotifyRelease => Step::CtxNotifyReleaseFence,
        RemotePc::NotifySet => Step::CtxNotifySetNotified,
        RemotePc::NotifyFence => Step::CtxNotifyFence,
        RemotePc::NotifyRead => Step::CtxNotifyReadNotifyMe,
        // Never recorded for a finished thread (remote_step returns first).
        RemotePc::EventSet | RemotePc::Done => Step::CtxNotifyEventSet,
    }
}
