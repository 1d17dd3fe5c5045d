//! Model → implementation: replay a model trace on the real code with a deterministic step scheduler.
//!
//! # How
//!
//! The implementation is built with the `trace` feature, whose every protocol step first calls
//! `aioctx::trace::gate(step)`. [`replay`] installs a [`Controller`] as that gate, runs the
//! scenario's threads on a context over the model kernel (`Backend::Model`: no syscalls, a wait the
//! model says blocks really blocks in the model fd monitor), and walks the trace:
//!
//! 1. it waits until the trace's next thread arrives at a gate, and checks that it waits for the
//!    trace's step there (otherwise: divergence at that index, "the implementation takes X");
//! 2. it releases exactly that thread for exactly that step and waits for the recorder's
//!    `Gate::done` call, then compares the values the implementation recorded with the model's
//!    event, and the implementation's state (`Handle::debug_state`: `notify_me`, `notified`,
//!    `bh_list`; the model kernel's notifier; each live BH's flags) with the model's state after
//!    the step;
//! 3. a thread that should arrive but sits in the fd monitor is "blocked where the model takes a
//!    step". Blocked is read from the model kernel, exactly: parked in the model fd monitor's wait
//!    with nothing ready ([`ModelKernel::blocked_waiters`]), or in the external loop's own wait with
//!    the notifier not readable. (Sampling the OS thread's state instead took a thread asleep on a
//!    lock, descheduled on a busy machine, for one blocked in its wait.)
//!
//! At the end it waits until every thread is at a gate, blocked, or finished, and compares with the
//! model's final state: a thread the model says is blocked in its wait must be blocked, and no
//! other. A lost wakeup of the model (terminal, a poller blocked, work pending) that the
//! implementation reproduces is reported as a hang ([`Outcome::Followed`] with `hang`).
//!
//! # The threads
//!
//! Remote threads run their [`Op`] lists on real [`Bh`]s and the [`Handle`]. All pollers run on the
//! one home thread (an [`AioContext`] is `!Send`): a blocking poller is `poll(true)` in a loop; an
//! external poller is prepare, its own wait (gated BEFORE it waits: the harness owns it), check,
//! dispatch. With two pollers (an external loop and a temporary `poll(true)`), the home thread asks
//! the controller which poller the trace runs next; a trace that needs both at once (a step of one
//! inside the other's call) is [`Outcome::NotReplayable`], never a divergence.
//!
//! Userspace polling: the context notifier (or, with `zero_timeout_wait`, a never-ready user poll
//! handler) is given a non-zero window during setup, and the context's clock is the controller's:
//! before it releases the last `ctx_poll_userspace` round of a polling phase it moves the clock past
//! the window, so the implementation makes exactly the trace's rounds. (It always makes at least one: a trace with a polling phase of zero rounds is not
//! replayable.) Steps the model does not have (poll mode, handlers: [`crate::convert::PROJECTED_OUT`])
//! pass their gates freely; they touch none of the model's state.
//!
//! Waits with a timeout of 0 or finite read the notifier on arrival, before their gate: traces are
//! first reordered by [`crate::commute::normalize_waits`] and re-checked by the model.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aioctx::kernel::ModelKernel;
use aioctx::trace::{Gate, Step};
use aioctx::{AioContext, Backend, Bh, Clock, FdHandler, Handle, Remote};
use aioctx_model::system::{thread_successors, State};
use aioctx_model::{Loops, Op, Poller, Scenario, Trace, TraceEvent};

use crate::convert::PROJECTED_OUT;

/// The result of one replay.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The implementation took every step, with the model's values and states, and ended as the
    /// model does.
    Followed {
        /// Steps replayed.
        steps: usize,
        /// Threads blocked in a wait at the end (model and implementation agree).
        blocked: Vec<u32>,
        /// The end is a lost wakeup of the model (a poller blocked, work pending) and the
        /// implementation is blocked there too: the hang is reproduced.
        hang: bool,
    },
    /// The implementation cannot follow the trace at `index`.
    Diverged {
        /// Index of the event it cannot take (the trace's length: at the end).
        index: usize,
        /// That event (None at the end).
        expected: Option<String>,
        /// What the implementation does instead.
        got: String,
        /// The model's state before the event.
        model_state: String,
    },
    /// This harness cannot replay the trace (a documented limitation, not a finding).
    NotReplayable(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Followed { steps, blocked, hang } => write!(
                f,
                "followed {steps} steps; blocked at the end: {blocked:?}{}",
                if *hang { " (hang reproduced)" } else { "" }
            ),
            Outcome::Diverged { index, expected, got, model_state } => write!(
                f,
                "diverged at event {index} (expected `{}`): {got}\nmodel state: {model_state}",
                expected.as_deref().unwrap_or("the end")
            ),
            Outcome::NotReplayable(r) => write!(f, "not replayable: {r}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model side: states along a trace.

fn values_agree(
    expected: &[(aioctx_model::Key, i64)],
    observed: &[(aioctx_model::Key, i64)],
) -> bool {
    expected.iter().all(|(k, v)| {
        observed.iter().find(|(ok, _)| ok == k).is_none_or(|(_, ov)| {
            if k == "timeout" {
                ov.signum() == v.signum()
            } else {
                ov == v
            }
        })
    })
}

/// The model's state before each event and after the last (`len + 1` states), as the oracle steps.
///
/// # Errors
///
/// The model rejects the trace (index and reason).
pub fn model_states(sc: &Scenario, trace: &Trace) -> Result<Vec<State>, String> {
    let mut st = State::initial(sc);
    let mut out = vec![st.clone()];
    for (i, ev) in trace.events.iter().enumerate() {
        if ev.thread as usize >= st.threads.len() {
            return Err(format!("event {i} `{ev}`: no such thread"));
        }
        let succ = thread_successors(sc, &st, ev.thread as usize);
        let next = succ
            .iter()
            .find(|(e, _)| e.step == ev.step && values_agree(&e.values, &ev.values))
            .map(|(_, n)| n.clone());
        match next {
            Some(n) => st = n,
            None => {
                return Err(format!(
                    "event {i} `{ev}` rejected; thread {} can take {:?}\nmodel state: {st}",
                    ev.thread,
                    succ.iter().map(|(e, _)| e.to_string()).collect::<Vec<_>>()
                ))
            }
        }
        out.push(st.clone());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The controller (the gate).

std::thread_local! {
    pub(crate) static MODEL_TID: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

pub(crate) fn set_model_tid(t: Option<u32>) {
    MODEL_TID.with(|c| c.set(t));
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Slot {
    /// At a gate, waiting: (step, it is the external loop's pre-wait gate).
    pub(crate) arrived: Option<(Step, bool)>,
    pub(crate) released: bool,
    pub(crate) finished: bool,
    /// The external loop's own wait declares itself blocked (it sleeps-polls the model kernel).
    pub(crate) parked: bool,
}

/// A step the recorder reported done: (model thread, step, values).
type Done = (u32, Step, Vec<(&'static str, i64)>);

#[derive(Debug, Default)]
pub(crate) struct St {
    pub(crate) slots: Vec<Slot>,
    pub(crate) dones: VecDeque<Done>,
    pub(crate) end: bool,
    /// At the end, the external loop's own wait is entered only by a thread the model has blocked
    /// there.
    pub(crate) end_release: Vec<bool>,
    pub(crate) aborted: bool,
    /// The trace index of the step released last (its `done` moves `pos` past it).
    pub(crate) released_index: Option<usize>,
    /// The poller whose call the home thread is in (pollers share it).
    pub(crate) current: Option<u32>,
    /// The home thread has no poller step to take (it sleeps until the trace gives it one).
    pub(crate) idle: bool,
}

/// The step scheduler installed as `aioctx::trace`'s gate.
pub struct Controller {
    pub(crate) st: Mutex<St>,
    pub(crate) cv: Condvar,
    /// Steps that pass their gates freely (not in the trace's vocabulary).
    pub(crate) hidden: Vec<Step>,
    pub(crate) trace: Vec<TraceEvent>,
    pub(crate) pos: AtomicU64,
    pub(crate) pollers: Vec<u32>,
}

impl Gate for Controller {
    fn arrive(&self, step: Step) {
        let Some(t) = MODEL_TID.with(|c| c.get()) else { return };
        if self.hidden.contains(&step) {
            return;
        }
        self.wait_released(t, step, false);
    }
    fn done(&self, step: Step, values: &[(&'static str, i64)]) {
        let Some(t) = MODEL_TID.with(|c| c.get()) else { return };
        if self.hidden.contains(&step) {
            return;
        }
        let mut g = self.lock();
        if let Some(i) = g.released_index.take() {
            self.pos.store(i as u64 + 1, SeqCst);
        }
        g.dones.push_back((t, step, values.to_vec()));
        self.cv.notify_all();
    }
}

impl Controller {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_released(&self, t: u32, step: Step, pre_wait: bool) {
        let mut g = self.lock();
        let end_pass = |g: &St| pre_wait && g.end && g.end_release[t as usize];
        if g.aborted || end_pass(&g) {
            return;
        }
        g.slots[t as usize].arrived = Some((step, pre_wait));
        self.cv.notify_all();
        while !g.aborted && !g.slots[t as usize].released && !end_pass(&g) {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        let s = &mut g.slots[t as usize];
        s.released = false;
        s.arrived = None;
    }

    /// The external loop's own wait, gated before it waits.
    fn pre_wait(&self, t: u32) {
        self.wait_released(t, Step::CtxPollWait, true);
    }

    fn set_parked(&self, t: u32, parked: bool) {
        self.lock().slots[t as usize].parked = parked;
    }

    pub(crate) fn finish(&self, t: u32) {
        let mut g = self.lock();
        g.slots[t as usize].finished = true;
        self.cv.notify_all();
    }

    fn set_current(&self, t: Option<u32>) {
        let mut g = self.lock();
        g.current = t;
        g.idle = false;
    }

    fn set_idle(&self) {
        self.lock().idle = true;
    }

    /// The next event of a poller in the rest of the trace (None: no more).
    fn next_poller_event(&self) -> Option<u32> {
        let pos = self.pos.load(SeqCst) as usize;
        self.trace[pos.min(self.trace.len())..]
            .iter()
            .find(|e| self.pollers.contains(&e.thread))
            .map(|e| e.thread)
    }
}

// ---------------------------------------------------------------------------------------------
// The clock the controller moves (userspace polling windows).

#[derive(Debug, Default)]
pub(crate) struct ReplayClock {
    pub(crate) ns: AtomicU64,
    pub(crate) tick: AtomicU64,
    /// How far the controller moves it to end a polling phase.
    pub(crate) jump: AtomicU64,
}

#[derive(Debug, Clone)]
pub(crate) struct ClockRef(pub(crate) Arc<ReplayClock>);

impl Clock for ClockRef {
    fn now_ns(&self) -> u64 {
        let t = self.0.tick.load(SeqCst);
        self.0.ns.fetch_add(t, SeqCst) + t
    }
}

/// Jump past any polling window (at most 50 µs here) but well inside the 10 ms idle-BH cap.
const POLL_JUMP_NS: u64 = 1_000_000;

/// The notifier's window, and the jump, when the notifier is the only poll handler.
const NOTIFIER_WINDOW_NS: u64 = 4000;

// ---------------------------------------------------------------------------------------------
// The harness.

/// The BHs with a handle, by id (null: none, or its owner dropped it). A remote's `Delete` swaps
/// the pointer out, then drops the `Bh`; no other thread touches a BH that some remote deletes
/// ([`static_limits`]), and the controller reads a BH's flags only between two gated steps, while
/// the deleting thread cannot free it (it frees it after its `bh_delete` gate).
/// `Bh<Remote>`: remote threads schedule, cancel and drop them (a `Local` BH's owner must stay on
/// the home thread).
type Bhs = Arc<Vec<AtomicPtr<Bh<Remote>>>>;

struct World {
    handle: Handle,
    kernel: Arc<ModelKernel>,
    /// The context's notifier (a model fd of `kernel`).
    notifier_fd: std::os::fd::RawFd,
    bhs: Bhs,
    calls: Arc<Vec<AtomicU32>>,
}

fn run_op(op: Op, h: &Handle, bhs: &Bhs, calls: &Arc<Vec<AtomicU32>>) {
    let bh = |b: u8| {
        let p = bhs[b as usize].load(SeqCst);
        assert!(!p.is_null(), "{op:?}: the BH was deleted");
        // SAFETY: non-null pointers in `bhs` came from Box::into_raw and are freed only by the
        // owner's Delete, which no other op on this BH follows (static_limits).
        unsafe { &*p }
    };
    match op {
        Op::Notify => h.notify(),
        Op::Schedule(b) => bh(b).schedule(),
        Op::ScheduleIdle(b) => bh(b).schedule_idle(),
        Op::Cancel(b) => bh(b).cancel(),
        Op::Delete(b) => {
            let p = bhs[b as usize].swap(std::ptr::null_mut(), SeqCst);
            assert!(!p.is_null(), "double delete of BH {b}");
            // SAFETY: from Box::into_raw, swapped out once.
            drop(unsafe { Box::from_raw(p) });
        }
        Op::Oneshot(b) => {
            let c = calls.clone();
            h.bh_oneshot(move || {
                c[b as usize].fetch_add(1, SeqCst);
            });
        }
    }
}

/// Parse `Bh { flags: N }` (the only way to read a BH's flags from outside the crate).
fn bh_flags(bh: &Bh<Remote>) -> Option<u32> {
    let s = format!("{bh:?}");
    s.split("flags:").nth(1)?.trim().trim_end_matches('}').trim().parse().ok()
}

/// Why a trace cannot be replayed by this harness, checked before running it.
fn static_limits(sc: &Scenario, trace: &Trace) -> Option<String> {
    if sc.pollers.len() > 2 {
        return Some("more than two pollers".into());
    }
    if sc.pollers.len() == 2
        && !matches!((sc.pollers[0], sc.pollers[1]), (Poller::External(_), Poller::Blocking(_)))
    {
        return Some("two pollers other than an external loop and a blocking poll".into());
    }
    // The API cannot touch a BH after its owner dropped it: a BH that a remote deletes is used by
    // that remote only.
    for b in 0..sc.bhs {
        let users: Vec<usize> = (0..sc.remotes.len())
            .filter(|&r| sc.remotes[r].iter().any(|op| op_bh(*op) == Some(b)))
            .collect();
        let deleted = sc.remotes.iter().flatten().any(|op| *op == Op::Delete(b));
        if deleted && users.len() > 1 {
            return Some(format!("BH {b} is deleted by one remote and used by another"));
        }
    }
    // The implementation always makes at least one polling round when it polls.
    if sc.poll_rounds > 0 {
        for (i, e) in trace.events.iter().enumerate() {
            if e.step == Step::CtxPollNotifyMeAdd {
                let prev = trace.events[..i].iter().rev().find(|p| p.thread == e.thread);
                if prev.is_some_and(|p| p.step != Step::CtxPollUserspace) {
                    return Some(format!(
                        "event {i}: a polling phase of zero rounds (the implementation always polls once)"
                    ));
                }
            }
        }
    }
    None
}

fn op_bh(op: Op) -> Option<u8> {
    match op {
        Op::Schedule(b) | Op::ScheduleIdle(b) | Op::Oneshot(b) | Op::Cancel(b) | Op::Delete(b) => {
            Some(b)
        }
        Op::Notify => None,
    }
}

/// The operations each remote starts in the trace (from the model's final state), so a remote
/// thread runs only those.
fn ops_started(sc: &Scenario, last: &State) -> Vec<usize> {
    use aioctx_model::system::{RemotePc, ThreadState};
    (0..sc.remotes.len())
        .map(|r| {
            let ops = &sc.remotes[r];
            match &last.threads[sc.pollers.len() + r] {
                ThreadState::Remote(rs) => {
                    let op = rs.op as usize;
                    match rs.pc {
                        RemotePc::Done => ops.len(),
                        RemotePc::Begin => op,
                        RemotePc::NotifyRelease if ops[op] == Op::Notify => op,
                        _ => op + 1,
                    }
                }
                ThreadState::Poller(_) => unreachable!("remote {r} is a poller"),
            }
        })
        .collect()
}

/// Knobs of a replay, for tests of the replayer itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The home thread sleeps this long before each blocking `poll`: asleep, but not in a wait, as a
    /// thread descheduled on a busy machine or asleep on a lock looks. The replay must not take it
    /// for blocked.
    pub home_pause: Option<Duration>,
}

/// Replay `trace` (a trace of `sc` the model accepts) on the implementation; see the module docs.
/// The caller holds [`crate::serial`].
pub fn replay(sc: &Scenario, trace: &Trace) -> Outcome {
    replay_with(sc, trace, &Options::default())
}

/// [`replay`] with [`Options`].
pub fn replay_with(sc: &Scenario, trace: &Trace, opts: &Options) -> Outcome {
    if let Some(r) = static_limits(sc, trace) {
        return Outcome::NotReplayable(r);
    }
    let trace = match crate::commute::normalize_waits(sc, trace) {
        Ok(t) => t,
        Err(i) => {
            return Outcome::NotReplayable(format!(
                "event {i}: a non-blocking wait after another thread's eventfd write that its \
                 thread's previous step does not commute with (waits are gated when they return)"
            ))
        }
    };
    let states = match model_states(sc, &trace) {
        Ok(s) => s,
        Err(e) => panic!("the model rejects the trace to replay (after normalize_waits): {e}"),
    };
    let nthreads = sc.threads();
    let last = states.last().expect("states");
    let pollers: Vec<u32> = (0..sc.pollers.len() as u32).collect();
    let ctl = Arc::new(Controller {
        hidden: PROJECTED_OUT.to_vec(),
        st: Mutex::new(St {
            slots: vec![Slot::default(); nthreads],
            end_release: (0..nthreads).map(|t| last.blocked(t)).collect(),
            ..St::default()
        }),
        cv: Condvar::new(),
        trace: trace.events.clone(),
        pos: AtomicU64::new(0),
        pollers: pollers.clone(),
    });
    let clock = Arc::new(ReplayClock::default());
    let stop = Arc::new(AtomicBool::new(false));

    // The home thread builds the context (it is !Send) and runs every poller.
    let (world_tx, world_rx) = std::sync::mpsc::channel::<World>();
    let start = Arc::new(std::sync::Barrier::new(sc.remotes.len() + 2));
    let home = {
        let (sc, ctl, clock, stop, start) =
            (sc.clone(), ctl.clone(), clock.clone(), stop.clone(), start.clone());
        let pause = opts.home_pause;
        std::thread::spawn(move || home_thread(&sc, &ctl, &clock, &stop, &start, world_tx, pause))
    };
    let world = world_rx.recv().expect("the home thread failed to build the context");
    let started = ops_started(sc, last);
    let mut remotes = Vec::new();
    for (r, ops) in sc.remotes.iter().enumerate() {
        let t = (sc.pollers.len() + r) as u32;
        let ops: Vec<Op> = ops[..started[r]].to_vec();
        let (h, bhs, calls, ctl, start) = (
            world.handle.clone(),
            world.bhs.clone(),
            world.calls.clone(),
            ctl.clone(),
            start.clone(),
        );
        remotes.push(std::thread::spawn(move || {
            set_model_tid(Some(t));
            start.wait();
            for op in ops {
                run_op(op, &h, &bhs, &calls);
            }
            set_model_tid(None);
            ctl.finish(t);
        }));
    }
    aioctx::trace::set_gate(Some(ctl.clone()));
    start.wait();

    let outcome = drive(sc, &trace, &states, &ctl, &clock, &world);

    // Teardown: every gate opens, the stop flag is set, a notify wakes a blocked poller.
    {
        let mut g = ctl.lock();
        g.aborted = true;
        ctl.cv.notify_all();
    }
    aioctx::trace::set_gate(None);
    // Remotes first (they never block; the home thread frees the BHs when it stops).
    for r in remotes {
        r.join().expect("remote thread panicked");
    }
    stop.store(true, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !home.is_finished() && Instant::now() < deadline {
        world.handle.notify();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(home.is_finished(), "replay teardown: the home thread does not stop");
    home.join().expect("home thread panicked");
    outcome
}

fn home_thread(
    sc: &Scenario,
    ctl: &Arc<Controller>,
    clock: &Arc<ReplayClock>,
    stop: &Arc<AtomicBool>,
    start: &std::sync::Barrier,
    world_tx: std::sync::mpsc::Sender<World>,
    pause: Option<Duration>,
) {
    let (k, ctx) = new_context(sc, clock);
    let calls: Arc<Vec<AtomicU32>> = Arc::new((0..sc.bhs).map(|_| AtomicU32::new(0)).collect());
    let bhs = new_bhs(sc, &ctx, &calls);
    prime_polling(sc, &ctx, &k, clock);
    let notifier_fd = ctx.handle().debug_state().notifier_fd;
    let handle = ctx.handle().clone();
    world_tx.send(World { handle, kernel: k.clone(), notifier_fd, bhs: bhs.clone(), calls }).ok();
    start.wait();

    let notifier_fd = ctx.handle().debug_state().notifier_fd;
    let loops_left = |p: Poller| match p.loops() {
        Loops::Times(n) => Some(n as u32),
        Loops::Forever => None,
    };
    let mut left: Vec<Option<u32>> = sc.pollers.iter().map(|p| loops_left(*p)).collect();
    for (t, l) in left.iter().enumerate() {
        if *l == Some(0) {
            ctl.finish(t as u32);
        }
    }
    // The external loop's phase: 0 prepare, 1 its wait, 2 check + dispatch.
    let mut phase = 0u8;
    let mut ext_timeout: Option<Duration> = None;
    let single = sc.pollers.len() == 1;
    loop {
        // Only the stop flag ends it (set after the remotes are joined: the BHs are freed below).
        if stop.load(SeqCst) {
            break;
        }
        let t: u32 = if single {
            0
        } else {
            match ctl.next_poller_event() {
                Some(t) => t,
                // No poller step left: an external loop between prepare and check goes into its
                // wait (the model may say it blocks there); otherwise idle until the teardown.
                None if phase == 1 => 0,
                None => {
                    ctl.set_idle();
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        };
        if left[t as usize] == Some(0) {
            ctl.finish(t);
            if single || left.iter().all(|l| *l == Some(0)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        set_model_tid(Some(t));
        ctl.set_current(Some(t));
        match sc.pollers[t as usize] {
            Poller::Blocking(_) => {
                if let Some(d) = pause {
                    std::thread::sleep(d);
                }
                ctx.poll(true);
                if let Some(n) = &mut left[t as usize] {
                    *n -= 1;
                }
            }
            Poller::External(_) => match phase {
                0 => {
                    ext_timeout = ctx.prepare();
                    phase = 1;
                }
                1 => {
                    external_wait(ctl, &k, notifier_fd, t, ext_timeout, stop);
                    phase = 2;
                }
                _ => {
                    ctx.check();
                    ctx.dispatch();
                    phase = 0;
                    if let Some(n) = &mut left[t as usize] {
                        *n -= 1;
                    }
                }
            },
        }
        if left[t as usize] == Some(0) {
            ctl.finish(t);
        }
        set_model_tid(None);
    }
    set_model_tid(None);
    for (t, l) in left.iter().enumerate() {
        if *l == Some(0) {
            ctl.finish(t as u32);
        }
    }
    free_bhs(&bhs);
    drop(ctx);
}

/// The replay's context on a model kernel and the replay clock, with the polling parameters of the
/// scenario. With a user poll handler its window (4000 ns, never adjusted: it is never ready) drives
/// polling, and the clock jumps 1 ms to end a phase. Without one the notifier's window does;
/// it is adjusted after every poll that saw a notify, so max = jump = 4000 ns keeps it there
/// (a phase's block_ns is exactly one jump: never above the window, never above max).
fn new_context(sc: &Scenario, clock: &Arc<ReplayClock>) -> (Arc<ModelKernel>, AioContext) {
    let k = ModelKernel::new();
    let mut b =
        AioContext::builder().backend(Backend::Model(k.clone())).clock(ClockRef(clock.clone()));
    let notifier_only = notifier_only(sc);
    if sc.poll_rounds > 0 {
        b = b.poll_params(if notifier_only { NOTIFIER_WINDOW_NS } else { 50_000 }, 0, 0);
    }
    clock.jump.store(if notifier_only { NOTIFIER_WINDOW_NS } else { POLL_JUMP_NS }, SeqCst);
    let ctx = b.build().expect("model context");
    (k, ctx)
}

/// Polling driven by the notifier's window alone (no user poll handler).
fn notifier_only(sc: &Scenario) -> bool {
    sc.poll_rounds > 0 && !sc.zero_timeout_wait
}

/// The scenario's BHs: those used by schedule / cancel / delete get a handle (counting its calls in
/// `calls`); the others are oneshots (a null slot).
fn new_bhs(sc: &Scenario, ctx: &AioContext, calls: &Arc<Vec<AtomicU32>>) -> Bhs {
    let handled: Vec<bool> = (0..sc.bhs)
        .map(|b| {
            sc.remotes.iter().flatten().any(|op| {
                matches!(op, Op::Schedule(x) | Op::ScheduleIdle(x) | Op::Cancel(x) | Op::Delete(x) if *x == b)
            })
        })
        .collect();
    Arc::new(
        (0..sc.bhs)
            .map(|b| {
                let c = calls.clone();
                AtomicPtr::new(if handled[b as usize] {
                    Box::into_raw(Box::new(ctx.handle().bh_new(move |_| {
                        c[b as usize].fetch_add(1, SeqCst);
                    })))
                } else {
                    std::ptr::null_mut()
                })
            })
            .collect(),
    )
}

/// Setup before the replay: the never-ready user handler of a zero-timeout-wait scenario (with its
/// poll window grown), or the notifier on the poll list; then every poll drained, so that the model
/// starts from the initial state.
fn prime_polling(sc: &Scenario, ctx: &AioContext, k: &Arc<ModelKernel>, clock: &Arc<ReplayClock>) {
    let notifier_only = notifier_only(sc);
    if sc.zero_timeout_wait {
        // A never-ready user handler: every poll calls the fd monitor, also with timeout 0; with
        // polling on it joins the poll list with a window (one fd event, a short block).
        let fd = k.open();
        let k2 = k.clone();
        let h = FdHandler::new()
            .on_read(move |_| k2.set_readable(fd, false))
            .on_poll(|_| false, |_| {});
        ctx.set_fd_handler(fd, h).expect("register the user handler");
        if sc.poll_rounds > 0 {
            clock.tick.store(100, SeqCst);
            for _ in 0..100 {
                k.set_readable(fd, true);
                while ctx.poll(false) {}
                if ctx.is_polled(fd) && ctx.poll_ns(fd).unwrap_or(0) > 0 {
                    break;
                }
            }
            clock.tick.store(0, SeqCst);
            assert!(ctx.poll_ns(fd).unwrap_or(0) > 0, "the user poll handler has no window");
        }
        while ctx.poll(false) {}
    }
    if notifier_only {
        // The notifier joins the poll list when its eventfd fires while polling is on, with a
        // window grown from a short block (0 -> 4000 ns).
        let nfd = ctx.handle().debug_state().notifier_fd;
        clock.tick.store(100, SeqCst);
        k.set_readable(nfd, true);
        ctx.poll(true);
        clock.tick.store(0, SeqCst);
        // (its window is checked by the first replayed polling phase: rounds or a divergence)
    }
    // Forget what setup did (notifies, drains): the model starts from the initial state.
    while ctx.poll(false) {}
    assert!(!k.is_readable(ctx.handle().debug_state().notifier_fd));
}

/// The external loop's own wait (phase 1): park until the notifier is readable (or a timeout was
/// set, or the replay stops), then record the wait as the fd monitor would.
fn external_wait(
    ctl: &Controller,
    k: &ModelKernel,
    notifier_fd: std::os::fd::RawFd,
    t: u32,
    ext_timeout: Option<Duration>,
    stop: &AtomicBool,
) {
    ctl.pre_wait(t);
    let readable = loop {
        if k.is_readable(notifier_fd) {
            break true;
        }
        if ext_timeout.is_some() || stop.load(SeqCst) {
            break false;
        }
        ctl.set_parked(t, true);
        std::thread::sleep(Duration::from_micros(200));
    };
    ctl.set_parked(t, false);
    let tv = ext_timeout.map_or(-1, |d| d.as_nanos() as i64);
    let mut g = aioctx::trace::lock();
    aioctx::trace::record(
        &mut g,
        Step::CtxPollWait,
        &[("notifier", readable as i64), ("timeout", tv), ("readable", readable as i64)],
    );
    drop(g);
}

/// Free the handled BHs (teardown: the replay is over).
fn free_bhs(bhs: &Bhs) {
    for slot in bhs.iter() {
        let p = slot.swap(std::ptr::null_mut(), SeqCst);
        if !p.is_null() {
            // SAFETY: from Box::into_raw; the replay is over (teardown), nobody else uses it.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// How a thread stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stand {
    AtGate(Step),
    Finished,
    Blocked,
    /// A poller whose home thread is in another poller's call.
    Suspended,
    Running,
}

/// Whether the home thread, if it is in a wait, is blocked there: parked in the model fd monitor's
/// wait with nothing ready, or (`parked`) in the external loop's own wait, which has no timeout then,
/// with the notifier not readable. Exact: nothing but a step the controller releases changes an fd.
fn home_blocked(w: &World, parked: bool) -> bool {
    if parked {
        !w.kernel.is_readable(w.notifier_fd)
    } else {
        w.kernel.blocked_waiters() > 0
    }
}

fn stand(ctl: &Controller, sc: &Scenario, w: &World, t: u32) -> Stand {
    let g = ctl.lock();
    let at_gate = |u: usize| match g.slots[u].arrived {
        Some((_, true)) if g.end && g.end_release[u] => None, // being let into its wait
        a => a.map(|(step, _)| step),
    };
    let poller = (t as usize) < sc.pollers.len();
    if !poller || sc.pollers.len() == 1 {
        let s = &g.slots[t as usize];
        if s.arrived.is_some() {
            return at_gate(t as usize).map_or(Stand::Running, Stand::AtGate);
        }
        if s.finished {
            return Stand::Finished;
        }
        let parked = s.parked;
        drop(g);
        // A remote never waits: between two gates it is running (or descheduled, or asleep on a
        // lock), never blocked.
        return if poller && home_blocked(w, parked) { Stand::Blocked } else { Stand::Running };
    }
    // Pollers share the home thread: it is at one poller's gate, in the external loop's own wait,
    // idle, or in the current poller's call (blocked in the fd monitor, or running).
    let n = sc.pollers.len();
    if let Some(step) = at_gate(t as usize) {
        return Stand::AtGate(step);
    }
    if g.slots[t as usize].finished {
        return Stand::Finished;
    }
    if g.slots[t as usize].parked {
        drop(g);
        return if home_blocked(w, true) { Stand::Blocked } else { Stand::Running };
    }
    let other_settled =
        (0..n).any(|u| u != t as usize && (at_gate(u).is_some() || g.slots[u].parked));
    if other_settled || g.idle {
        return Stand::Suspended;
    }
    if g.slots[t as usize].arrived.is_some() {
        return Stand::Running; // its pre-wait gate is opening at the end
    }
    let current = g.current;
    drop(g);
    match home_blocked(w, false) {
        true if current == Some(t) => Stand::Blocked,
        true => Stand::Suspended,
        false => Stand::Running,
    }
}

/// Follow the trace step by step (each thread reaches the step's gate, is released, and records
/// the step with the trace's values, leaving the model's state), then check the end.
fn drive(
    sc: &Scenario,
    trace: &Trace,
    states: &[State],
    ctl: &Controller,
    clock: &ReplayClock,
    world: &World,
) -> Outcome {
    let d = Driver { sc, trace, states, ctl, world };
    for (i, ev) in trace.events.iter().enumerate() {
        if let Err(o) = d.reach_gate(i, ev) {
            return o;
        }
        end_polling_phase(trace, clock, i, ev);
        if let Err(o) = d.release(i, ev) {
            return o;
        }
    }
    match d.settle_at_end() {
        Ok(stands) => d.check_end(&stands),
        Err(o) => o,
    }
}

/// What `drive`'s parts read: the scenario, the trace and its model states, the controller, and the
/// implementation's world.
struct Driver<'a> {
    sc: &'a Scenario,
    trace: &'a Trace,
    states: &'a [State],
    ctl: &'a Controller,
    world: &'a World,
}

/// Userspace polling: end the phase where the trace ends it (the clock jumps past the window).
fn end_polling_phase(trace: &Trace, clock: &ReplayClock, i: usize, ev: &TraceEvent) {
    if ev.step == Step::CtxPollUserspace && ev.value("notified") == Some(0) {
        let next = trace.events[i + 1..].iter().find(|e| e.thread == ev.thread);
        if next.is_none_or(|n| n.step != Step::CtxPollUserspace) {
            clock.ns.fetch_add(clock.jump.load(SeqCst), SeqCst);
        }
    }
}

impl Driver<'_> {
    fn diverged(&self, index: usize, got: String) -> Outcome {
        Outcome::Diverged {
            index,
            expected: self.trace.events.get(index).map(|e| e.to_string()),
            got,
            model_state: self.states[index].to_string(),
        }
    }

    fn stand(&self, t: u32) -> Stand {
        stand(self.ctl, self.sc, self.world, t)
    }

    /// Wait (3 s at most) until event `i`'s thread waits at the gate of its step.
    fn reach_gate(&self, i: usize, ev: &TraceEvent) -> Result<(), Outcome> {
        let (sc, ctl) = (self.sc, self.ctl);
        let t = ev.thread;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.stand(t) {
                Stand::AtGate(s) if s == ev.step => return Ok(()),
                Stand::AtGate(s) => {
                    return Err(
                        self.diverged(i, format!("thread {t} takes `{}` instead", s.as_str()))
                    )
                }
                Stand::Finished => return Err(self.diverged(i, format!("thread {t} has finished"))),
                Stand::Running => {}
                Stand::Suspended => {
                    // Another poller holds the home thread: fine while it runs to the end of its
                    // call, not if it waits at a gate or blocks.
                    let p = ctl.lock().current.unwrap_or(0);
                    let sp = if p != t { self.stand(p) } else { Stand::Running };
                    if matches!(sp, Stand::AtGate(_) | Stand::Blocked) {
                        return Err(Outcome::NotReplayable(format!(
                            "event {i}: poller {t} steps while poller {p} is inside its call (one \
                             home thread)"
                        )));
                    }
                }
                Stand::Blocked => {
                    if (t as usize) < sc.pollers.len() && sc.pollers.len() > 1 {
                        return Err(Outcome::NotReplayable(format!(
                            "event {i}: poller {t} must step while the home thread is blocked in \
                             another poller's wait"
                        )));
                    }
                    return Err(self.diverged(i, format!("thread {t} is blocked in a wait")));
                }
            }
            if Instant::now() > deadline {
                return Err(self.diverged(i, format!("thread {t} does not reach a gate in 3 s")));
            }
            let g = ctl.lock();
            let _ = ctl.cv.wait_timeout(g, Duration::from_micros(500));
        }
    }

    /// Release event `i`'s thread at its gate and wait (5 s at most) for the step's record: the same
    /// thread and step, the trace's values, and the model's state after it.
    fn release(&self, i: usize, ev: &TraceEvent) -> Result<(), Outcome> {
        let (ctl, t) = (self.ctl, ev.thread);
        let done = {
            let mut g = ctl.lock();
            g.released_index = Some(i);
            g.slots[t as usize].released = true;
            ctl.cv.notify_all();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(d) = g.dones.pop_front() {
                    break Some(d);
                }
                let now = Instant::now();
                if now > deadline {
                    break None;
                }
                g = ctl.cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        let Some((dt, dstep, values)) = done else {
            return Err(
                self.diverged(i, format!("thread {t} was released but did not record its step"))
            );
        };
        if dt != t || dstep != ev.step {
            return Err(self.diverged(i, format!("thread {dt} recorded `{}`", dstep.as_str())));
        }
        let observed: Vec<(aioctx_model::Key, i64)> =
            values.iter().map(|&(k, v)| (std::borrow::Cow::Borrowed(k), v)).collect();
        if !values_agree(&ev.values, &observed) {
            let o: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Err(self.diverged(i, format!("thread {t} records `{}`", o.join(" "))));
        }
        if let Err(e) = compare_state(&self.states[i + 1], self.world) {
            return Err(self.diverged(i, format!("after the step: {e}")));
        }
        Ok(())
    }

    /// The end: open the end gates and wait (5 s at most) until no thread runs; then every thread is
    /// at a gate, blocked or finished, and none took a step beyond the trace.
    fn settle_at_end(&self) -> Result<Vec<Stand>, Outcome> {
        let ctl = self.ctl;
        {
            let mut g = ctl.lock();
            g.end = true;
            ctl.cv.notify_all();
        }
        let end = self.trace.events.len();
        let deadline = Instant::now() + Duration::from_secs(5);
        let stands = loop {
            let s: Vec<Stand> = (0..self.sc.threads() as u32).map(|t| self.stand(t)).collect();
            if !s.contains(&Stand::Running) {
                break s;
            }
            if Instant::now() > deadline {
                let t = s.iter().position(|x| *x == Stand::Running).unwrap();
                return Err(self.diverged(
                    end,
                    format!("at the end thread {t} keeps running (neither blocked nor at a gate)"),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if let Some((t, s, _)) = ctl.lock().dones.front().cloned() {
            return Err(self.diverged(
                end,
                format!("thread {t} took `{}` beyond the trace's end", s.as_str()),
            ));
        }
        Ok(stands)
    }

    /// The end as the model has it: each thread blocked, finished or able to step as there, the
    /// state, and every BH called as often.
    fn check_end(&self, stands: &[Stand]) -> Outcome {
        let (sc, world) = (self.sc, self.world);
        let last = self.states.last().expect("states");
        let end = self.trace.events.len();
        let model_blocked_pollers = (0..sc.pollers.len()).filter(|&t| last.blocked(t)).count();
        if model_blocked_pollers > 1 {
            return Outcome::NotReplayable(format!(
                "event {end}: the model ends with {model_blocked_pollers} pollers blocked at once (one \
                 home thread)"
            ));
        }
        let mut blocked = Vec::new();
        for (t, &is) in stands.iter().enumerate() {
            let (mb, mf) = (last.blocked(t), last.finished(t));
            let ok = match is {
                Stand::Blocked => mb,
                Stand::Finished => mf,
                Stand::AtGate(_) | Stand::Suspended => !mb && !mf,
                Stand::Running => false,
            };
            if !ok {
                let model = if mb {
                    "blocked in its wait"
                } else if mf {
                    "finished"
                } else {
                    "able to step"
                };
                return self.diverged(
                    end,
                    format!("at the end thread {t} is {is:?}; the model has it {model}"),
                );
            }
            if mb {
                blocked.push(t as u32);
            }
        }
        if let Err(e) = compare_state(last, world) {
            return self.diverged(end, format!("at the end: {e}"));
        }
        for (b, c) in world.calls.iter().enumerate() {
            let (m, i) = (last.bh_calls[b] as u32, c.load(SeqCst));
            if m != i {
                return self
                    .diverged(end, format!("BH {b} was called {i} times, the model says {m}"));
            }
        }
        let hang = last.lost_wakeup() && aioctx_model::system::successors(sc, last).is_empty();
        Outcome::Followed { steps: self.trace.events.len(), blocked, hang }
    }
}

fn compare_state(m: &State, w: &World) -> Result<(), String> {
    let d = w.handle.debug_state();
    let notifier = w.kernel.is_readable(d.notifier_fd);
    let mut diffs = Vec::new();
    if d.notify_me != m.notify_me {
        diffs.push(format!("notify_me {} (model {})", d.notify_me, m.notify_me));
    }
    if d.notified != m.notified {
        diffs.push(format!("notified {} (model {})", d.notified, m.notified));
    }
    if notifier != m.notifier {
        diffs.push(format!("notifier {notifier} (model {})", m.notifier));
    }
    if d.bh_list == m.bh_list.is_empty() {
        diffs.push(format!("bh_list non-empty {} (model {:?})", d.bh_list, m.bh_list));
    }
    for (b, slot) in w.bhs.iter().enumerate() {
        let p = slot.load(SeqCst);
        if p.is_null() {
            continue;
        }
        // SAFETY: see `Bhs`: a BH is freed only after a gate this controller has not released yet.
        if let Some(f) = bh_flags(unsafe { &*p }) {
            if f != m.bh_flags[b] {
                diffs.push(format!("bh{b} flags {f:#x} (model {:#x})", m.bh_flags[b]));
            }
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join(", "))
    }
}
