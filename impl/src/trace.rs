//! Protocol steps: the shared vocabulary of the implementation, the Promela models and the Rust model.
//!
//! Each [`Step`] is a Promela label (`promela/*.pml`) and a step of the abstract model
//! (`model/src/`); its snake_case name is the label, character for character. A test in
//! `conformance/` checks that the three sets agree. Without the `trace` feature the recording hook
//! compiles to nothing; with it, each step is recorded with the values it read or wrote
//! (`start`, `stop`). Under `--cfg aioctx_loom` / `aioctx_shuttle` the facade's runner records
//! every execution and writes the failing one as a `*.trace` file (`crate::sync::model`).
//!
//! Labels of environment processes in the Promela models (devices, the guest) start with `env_`, and
//! the TSO store-buffer machinery with `tso_`; they are not implementation steps.

/// Record a protocol step that does no shared access of its own (a fence, a callback call), with
/// values. Without the `trace` feature this expands to nothing but a type check of the step (the
/// values are not evaluated; the step is a constant, so no code results, and the caller's
/// `use crate::trace::Step` stays used in every build). With it, the step first passes the replay
/// gate ([`gate`]).
#[doc(hidden)]
#[macro_export]
macro_rules! trace_step {
    ($step:expr $(, $k:ident = $v:expr)* $(,)?) => {
        #[cfg(not(feature = "trace"))]
        let _: $crate::trace::Step = $step;
        #[cfg(feature = "trace")]
        {
            $crate::trace::gate($step);
            let mut g = $crate::trace::lock();
            $crate::trace::record(&mut g, $step, &[$((stringify!($k), ($v) as i64)),*]);
        }
    };
}

/// A protocol access and its record as ONE atomic unit: with the `trace` feature, the global trace
/// lock is held across the access and the append, so the log is a linearization in which every read
/// sees the latest write before it (a sequence number taken after the access would not be: thread A
/// stores then takes #5, thread B loads A's value and takes #4). Weak memory stays loom's job.
/// Under loom and shuttle nothing is held across the access (a std lock would deadlock their
/// single-OS-thread schedulers) and the record right after it is exact (the recorder's module docs).
/// With the feature the step first passes the replay gate ([`gate`], before the lock).
/// Without the feature it is just the access (and the type check of the step, as in [`trace_step!`]).
///
/// `traced!(Step::X, let v = access; name = value, ...)` binds `v` for the rest of the block;
/// `traced!(Step::X, access; name = value, ...)` for an access whose result is not needed.
#[doc(hidden)]
#[macro_export]
macro_rules! traced {
    ($step:expr, let $bind:pat = $access:expr $(; $($k:ident = $v:expr),* )? ) => {
        #[cfg(not(feature = "trace"))]
        let _: $crate::trace::Step = $step;
        #[cfg(feature = "trace")]
        $crate::trace::gate($step);
        #[cfg(feature = "trace")]
        let mut __trace_guard = $crate::trace::lock();
        let $bind = $access;
        #[cfg(feature = "trace")]
        {
            $crate::trace::record(&mut __trace_guard, $step, &[$($((stringify!($k), ($v) as i64)),*)?]);
            #[allow(clippy::drop_non_drop)] // under loom / shuttle the "guard" holds nothing
            drop(__trace_guard);
        }
    };
    ($step:expr, $access:expr $(; $($k:ident = $v:expr),* )? ) => {
        #[cfg(not(feature = "trace"))]
        let _: $crate::trace::Step = $step;
        #[cfg(feature = "trace")]
        $crate::trace::gate($step);
        #[cfg(feature = "trace")]
        let mut __trace_guard = $crate::trace::lock();
        $access;
        #[cfg(feature = "trace")]
        {
            $crate::trace::record(&mut __trace_guard, $step, &[$($((stringify!($k), ($v) as i64)),*)?]);
            #[allow(clippy::drop_non_drop)] // under loom / shuttle the "guard" holds nothing
            drop(__trace_guard);
        }
    };
}

#[cfg(feature = "trace")]
mod recorder {
    //! Two variants of the lock discipline over one log:
    //!
    //! - std builds: the trace lock is held across the access and the append ([`traced!`]), so the
    //!   log is a linearization of real threads.
    //! - loom / shuttle builds (`--cfg aioctx_loom` / `aioctx_shuttle`): both run every model thread
    //!   of an execution on ONE OS thread (the caller's) and switch threads only at facade
    //!   operations, so a std lock held across a facade access would be taken again by the next
    //!   model thread (a deadlock). There [`lock`] takes nothing and [`record`] appends right after
    //!   the access: no facade operation runs in between, so the log is the execution order exactly.
    //!   The log is that OS thread's own (a std `thread_local!`), so tests that run models in
    //!   parallel do not mix their steps. Threads are told apart by the facade's thread ids (std's
    //!   are all equal there), and the facade's runner (`crate::sync::model`) calls [`start`] at the
    //!   start of every execution, so after a failure the log holds the failing execution only.
    use super::Step;
    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    #[allow(clippy::disallowed_types)]
    use std::sync::{Mutex, MutexGuard};

    /// A thread's identity in the log: std's, or the model checker's (facade) thread id.
    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    type Tid = std::thread::ThreadId;
    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    type Tid = crate::sync::thread::ThreadId;

    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    fn current_tid() -> Tid {
        std::thread::current().id()
    }
    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    fn current_tid() -> Tid {
        // Not a scheduling point in either checker (no branch, no yield).
        crate::sync::thread::current().id()
    }

    /// One recorded step: the recording thread's index (in order of first record), the step, the
    /// values it read or wrote.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TraceEvent {
        /// Thread index, 0-based, in the order threads first recorded since `start`.
        pub thread: u32,
        /// The step.
        pub step: Step,
        /// (name, value) pairs: `notify_me`, `notified`, `notifier`, `bh_flags`, ...
        pub values: Vec<(&'static str, i64)>,
    }

    impl std::fmt::Display for TraceEvent {
        /// `<thread> <label> k=v ...`: the line format the model's parser and the Promela
        /// simulations (`@@@ <pid> <label> k=v ...`) share.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} {}", self.thread, self.step.as_str())?;
            for (k, v) in &self.values {
                write!(f, " {k}={v}")?;
            }
            Ok(())
        }
    }

    /// The log and who is in it.
    #[derive(Debug, Default)]
    pub struct Log {
        on: bool,
        events: Vec<TraceEvent>,
        threads: Vec<Tid>,
    }

    impl Log {
        /// `me`'s index, given on its first appearance.
        fn index_of(&mut self, me: Tid) -> u32 {
            match self.threads.iter().position(|t| *t == me) {
                Some(i) => i as u32,
                None => {
                    self.threads.push(me);
                    self.threads.len() as u32 - 1
                }
            }
        }

        /// Append one step of thread `me` (see [`record`] for where a `ctx_poll_wait` goes).
        fn append(&mut self, me: Tid, step: Step, values: &[(&'static str, i64)]) {
            let thread = self.index_of(me);
            let ev = TraceEvent { thread, step, values: values.to_vec() };
            let not_ready =
                step == Step::CtxPollWait && values.iter().any(|&(k, v)| k == "notifier" && v == 0);
            if not_ready {
                let since =
                    self.events.iter().rposition(|e| e.thread == thread).map_or(0, |i| i + 1);
                if let Some(off) =
                    self.events[since..].iter().position(|e| e.step == Step::CtxNotifyEventSet)
                {
                    self.events.insert(since + off, ev);
                    return;
                }
            }
            self.events.push(ev);
        }
    }

    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    #[allow(clippy::disallowed_types)]
    static LOG: Mutex<Log> = Mutex::new(Log { on: false, events: Vec::new(), threads: Vec::new() });

    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    #[allow(clippy::disallowed_types)]
    fn log() -> MutexGuard<'static, Log> {
        LOG.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    fn with_log<R>(f: impl FnOnce(&mut Log) -> R) -> R {
        f(&mut log())
    }

    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    std::thread_local! {
        /// The log of the model run on this OS thread (see the module docs).
        static HERE: std::cell::RefCell<Log> = const {
            std::cell::RefCell::new(Log { on: false, events: Vec::new(), threads: Vec::new() })
        };
    }

    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    fn with_log<R>(f: impl FnOnce(&mut Log) -> R) -> R {
        HERE.with(|l| f(&mut l.borrow_mut()))
    }

    /// Tell an installed replay gate that `step` is done.
    fn gate_done(step: Step, values: &[(&'static str, i64)]) {
        if super::GATE_ON.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(g) = super::current_gate() {
                g.done(step, values);
            }
        }
    }

    /// The trace lock (held across a protocol access and its record).
    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    #[allow(clippy::disallowed_types)]
    pub fn lock() -> MutexGuard<'static, Log> {
        log()
    }

    /// Append one step under the trace lock (and tell an installed replay gate it is done).
    ///
    /// An fd-monitor wait is an interval, not a point: it is recorded when it returns (the trace lock
    /// is never held across a wait), but it read the notifier's readiness somewhere between the
    /// thread's previous step and its return. A `ctx_poll_wait` that reports the notifier NOT
    /// readable (`notifier=0`) is therefore placed right before the first `ctx_notify_event_set`
    /// recorded since this thread's previous step (appended if there is none). That is where its
    /// read happened: the eventfd is cleared only by the polling thread itself, so it was clear from
    /// that thread's previous step until the wait looked at it, which was before the first write.
    /// A wait that reports it readable is appended: nothing but this thread clears it meanwhile.
    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    #[allow(clippy::disallowed_types)]
    pub fn record(log: &mut MutexGuard<'static, Log>, step: Step, values: &[(&'static str, i64)]) {
        gate_done(step, values);
        if !log.on {
            return;
        }
        log.append(current_tid(), step, values);
    }

    /// Under loom / shuttle, what [`lock`] returns: nothing is held across the access (see the
    /// module docs).
    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    #[derive(Debug)]
    pub struct NotHeld;

    /// Under loom / shuttle: takes nothing (see the module docs).
    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    pub fn lock() -> NotHeld {
        NotHeld
    }

    /// Under loom / shuttle: append one step right after its access (the placement of a
    /// `ctx_poll_wait` is the std variant's). Nothing is recorded while the thread unwinds: after
    /// loom's deadlock panic there is no active model thread to ask for its id.
    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    pub fn record(_: &mut NotHeld, step: Step, values: &[(&'static str, i64)]) {
        gate_done(step, values);
        if std::thread::panicking() {
            return;
        }
        with_log(|l| {
            if l.on {
                l.append(current_tid(), step, values);
            }
        });
    }

    /// Start recording (clears the log). The thread that calls it is thread 0.
    pub fn start() {
        let me = current_tid();
        with_log(|l| *l = Log { on: true, events: Vec::new(), threads: vec![me] });
    }

    /// Give `thread` the next thread index now (instead of at its first record), so that a harness
    /// can number its threads in its own order (e.g. a scenario's: pollers, then remotes). Returns
    /// the index (the existing one if the thread is already known).
    pub fn register_thread(thread: Tid) -> u32 {
        with_log(|l| l.index_of(thread))
    }

    /// Stop recording and return the log.
    pub fn stop() -> Vec<TraceEvent> {
        with_log(|l| {
            l.on = false;
            std::mem::take(&mut l.events)
        })
    }
}

/// The replay gate (trace builds): a step scheduler for model → implementation replay.
///
/// Every `traced!` / `trace_step!` first calls [`gate`] with its step, before the protocol access
/// and without holding any lock; when a [`Gate`] is installed the calling thread blocks there until
/// the gate releases it. Right after the access the recorder calls [`Gate::done`] under the trace
/// lock, with the values the step recorded. Without an installed gate, `gate` is one atomic load.
/// A `ctx_poll_wait` is recorded (and so gated) when the wait returns: the wait itself runs
/// ungated (a wait that must block, blocks in the fd monitor with no gate pending).
#[cfg(feature = "trace")]
pub trait Gate: Send + Sync {
    /// The calling thread is about to take `step`: block until it may.
    fn arrive(&self, step: Step);
    /// The calling thread took `step` (called under the trace lock: do not take it from here).
    fn done(&self, step: Step, values: &[(&'static str, i64)]);
}

#[cfg(feature = "trace")]
#[allow(clippy::disallowed_types)]
static GATE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[cfg(feature = "trace")]
#[allow(clippy::disallowed_types)]
static GATE: std::sync::Mutex<Option<std::sync::Arc<dyn Gate>>> = std::sync::Mutex::new(None);

#[cfg(feature = "trace")]
#[allow(clippy::disallowed_types)]
fn current_gate() -> Option<std::sync::Arc<dyn Gate>> {
    GATE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Install (`Some`) or remove (`None`) the replay gate, for every thread of the process.
#[cfg(feature = "trace")]
#[allow(clippy::disallowed_types)]
pub fn set_gate(g: Option<std::sync::Arc<dyn Gate>>) {
    let on = g.is_some();
    *GATE.lock().unwrap_or_else(|e| e.into_inner()) = g;
    GATE_ON.store(on, std::sync::atomic::Ordering::Release);
}

/// The hook every traced step calls first (see [`Gate`]).
#[cfg(feature = "trace")]
#[inline]
#[allow(clippy::disallowed_types)]
pub fn gate(step: Step) {
    if GATE_ON.load(std::sync::atomic::Ordering::Acquire) {
        if let Some(g) = current_gate() {
            g.arrive(step);
        }
    }
}

/// What a replay controller compares with the model after each step (test-only accessor).
#[cfg(feature = "trace")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugState {
    /// `notify_me`.
    pub notify_me: u32,
    /// `notified`.
    pub notified: bool,
    /// The event notifier's fd (its readiness is the kernel's: with the model kernel,
    /// `ModelKernel::is_readable(fd)`).
    pub notifier_fd: std::os::fd::RawFd,
    /// `bh_list` is non-empty.
    pub bh_list: bool,
}

#[cfg(all(feature = "trace", any(aioctx_loom, aioctx_shuttle)))]
pub use recorder::NotHeld;
#[cfg(feature = "trace")]
pub use recorder::{lock, record, register_thread, start, stop, Log, TraceEvent};

macro_rules! steps {
    ($( $(#[$m:meta])* $v:ident = $s:literal, )*) => {
        /// One protocol step. `as_str()` is the Promela label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Step { $( $(#[$m])* $v, )* }
        impl Step {
            /// Every step, in declaration order.
            pub const ALL: &'static [Step] = &[ $( Step::$v, )* ];
            /// The Promela label / model step name.
            pub const fn as_str(self) -> &'static str {
                match self { $( Step::$v => $s, )* }
            }
            /// Look a step up by its label.
            pub fn from_label(s: &str) -> Option<Step> {
                match s { $( $s => Some(Step::$v), )* _ => None }
            }
        }
    };
}

steps! {
    // ---- notify (any thread): notify.pml ----
    /// `fence(Release)`: publish the work before `notified`.
    CtxNotifyReleaseFence = "ctx_notify_release_fence",
    /// `notified = true` (always).
    CtxNotifySetNotified = "ctx_notify_set_notified",
    /// `fence(SeqCst)` between the store to `notified` and the load of `notify_me`.
    CtxNotifyFence = "ctx_notify_fence",
    /// `notify_me` loaded (value recorded).
    CtxNotifyReadNotifyMe = "ctx_notify_read_notify_me",
    /// The event notifier (eventfd) is written: only when `notify_me != 0`.
    CtxNotifyEventSet = "ctx_notify_event_set",
    // ---- notify_accept (home thread) ----
    /// `notified = false`.
    CtxNotifyAccept = "ctx_notify_accept",
    /// `fence(SeqCst)` after clearing `notified`, before the work scan.
    CtxNotifyAcceptFence = "ctx_notify_accept_fence",
    // ---- poll (home thread) ----
    /// The timeout is computed (reads the BH list and timers; 0 if work is pending).
    CtxPollComputeTimeout = "ctx_poll_compute_timeout",
    /// One round of userspace polling with `notify_me == 0` (reads `notified` and each io_poll).
    CtxPollUserspace = "ctx_poll_userspace",
    /// `notify_me += 2` (plain load + store).
    CtxPollNotifyMeAdd = "ctx_poll_notify_me_add",
    /// `fence(SeqCst)` after arming `notify_me`.
    CtxPollFence = "ctx_poll_fence",
    /// `notified` re-checked after arming (value recorded; true zeroes the timeout).
    CtxPollRecheckNotified = "ctx_poll_recheck_notified",
    /// The fd monitor wait (blocking when the timeout is not 0).
    CtxPollWait = "ctx_poll_wait",
    /// `notify_me -= 2` (store Release).
    CtxPollNotifyMeSub = "ctx_poll_notify_me_sub",
    /// The notifier's read handler drains the eventfd (`test_and_clear`; never progress).
    CtxPollEventDrain = "ctx_poll_event_drain",
    /// A user fd handler's read or write callback runs.
    CtxPollDispatch = "ctx_poll_dispatch",
    // ---- userspace poll mode (home thread): poll_mode.pml, poll_idle.pml ----
    /// io_poll_begin on the poll handlers (`poll_started = true`).
    CtxPollBegin = "ctx_poll_begin",
    /// One handler's io_poll check (value: ready).
    HandlerIoPoll = "handler_io_poll",
    /// io_poll_end on the poll handlers (`poll_started = false`), right before a blocking wait.
    CtxPollEnd = "ctx_poll_end",
    /// The poll of each handler after io_poll_end (an event that raced the end is not lost).
    CtxPollFinalPoll = "ctx_poll_final_poll",
    /// io_poll_ready runs for a handler whose io_poll succeeded.
    HandlerPollReady = "handler_poll_ready",
    /// An idle handler leaves the poll list (io_poll_end, then a final poll).
    CtxPollIdleRemove = "ctx_poll_idle_remove",
    /// A handler joins the poll list on its first fd event (io_poll_begin at once if poll mode is on).
    CtxPollAdd = "ctx_poll_add",
    // ---- external-loop integration (home thread): external.pml ----
    /// prepare: `notify_me |= 1`.
    CtxPrepareNotifyMeOr = "ctx_prepare_notify_me_or",
    /// prepare: `fence(SeqCst)`.
    CtxPrepareFence = "ctx_prepare_fence",
    /// check: `notify_me &= !1` (store Release).
    CtxCheckNotifyMeClear = "ctx_check_notify_me_clear",
    // ---- bottom halves: bh.pml ----
    /// schedule: `old = flags.fetch_or(PENDING | new)`.
    BhScheduleFlags = "bh_schedule_flags",
    /// schedule: push on `bh_list` (only if PENDING was clear).
    BhSchedulePush = "bh_schedule_push",
    /// cancel: `flags.fetch_and(!SCHEDULED)`.
    BhCancel = "bh_cancel",
    /// delete (the owner drops its handle) = enqueue(DELETED): `old = flags.fetch_or(PENDING |
    /// DELETED)`, then `bh_schedule_push` if PENDING was clear, then notify.
    BhDelete = "bh_delete",
    /// poll: swap the whole `bh_list` out (snapshot).
    BhPollTake = "bh_poll_take",
    /// poll: `f = flags.fetch_and(!(PENDING | SCHEDULED | IDLE))` for one BH (recorded so; the code
    /// swaps in 0, which leaves the same flags on every BH that outlives the dequeue: `bh.rs`).
    BhPollDequeue = "bh_poll_dequeue",
    /// poll: the callback runs (SCHEDULED and not DELETED).
    BhPollCall = "bh_poll_call",
    // ---- timers ----
    /// A timer's deadline is changed (then notify if it became the earliest).
    TimerMod = "timer_mod",
    /// An expired timer's callback runs.
    TimerRun = "timer_run",
}

/// The BH flag bits (defined with the BHs, `impl/src/bh.rs`), also at this path for the trace's
/// readers.
pub use crate::bh::bh_flags;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in Step::ALL {
            assert_eq!(Step::from_label(s.as_str()), Some(*s));
            assert!(seen.insert(s.as_str()), "duplicate label {}", s.as_str());
            for bad in ["end", "progress", "accept"] {
                assert!(!s.as_str().starts_with(bad), "label {} has a Promela meaning", s.as_str());
            }
        }
    }
}
