//! Adaptive userspace polling: poll parameters, the poll handler list, poll mode and the per-handler
//! window.
//!
//! # Protocol
//!
//! | state | written by | meaning |
//! |---|---|---|
//! | `PollParams` (atomics) | `set_poll_params`, any thread (then notify) | `max_ns` (0 = off), `grow` (0 = 2), `shrink` (0 = reset), `epoch` bumped on every change, idle timeout |
//! | `PollState::list` | home thread | handlers with io_poll + io_poll_ready that have been ready once |
//! | `PollState::started` (QEMU `poll_started`) | home thread | io_poll_begin was called on the list; io_poll_end is due before the next blocking wait |
//! | `HandlerLocal::{poll_ns, poll_idle_deadline, poll_ready}` | home thread | per-handler window, idle deadline, io_poll succeeded |
//!
//! Polling runs with `notify_me == 0`: a notify only sets `notified`, which the loop reads here (it ends
//! polling and is not progress). Poll mode is left only right before a blocking wait: io_poll_end on
//! each handler, then one more io_poll of each, so an event that raced io_poll_end is not lost
//! (planted bug `no_final_poll_after_poll_end`). On ppoll and epoll, polling happens only when every
//! handler can poll (an fd-only handler is never starved, bug-history B12); idle handlers leave the list
//! only on backends that poll readiness from userspace.
//!
//! # Model
//!
//! `promela/poll_mode.pml`, `promela/poll_idle.pml`; loom and shuttle scenarios
//! `notify_during_userspace_polling`, `poll_mode_end_racing_event`, `idle_removal_racing_event` in
//! `model/tests/loom_poll.rs` and `model/tests/shuttle_poll.rs` (shuttle also `mixed_traffic`; the
//! bodies are in `model/tests/support/mod.rs`).
//!
//! # Upstream
//!
//! QEMU util/aio-posix.c: `try_poll_mode`, `run_poll_handlers`, `run_poll_handlers_once`,
//! `poll_set_started`, `remove_idle_poll_handlers`, `adjust_polling_time`,
//! `aio_context_set_poll_params`.

use std::cell::{Cell, RefCell};

use crate::handler::AioHandler;
use crate::kernel::Event;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::Arc;
use crate::trace::Step;
use crate::{AioContext, Handle};

/// Default time after which a handler whose io_poll never succeeded leaves the poll list (QEMU: 7 s).
pub const POLL_IDLE_INTERVAL_NS: u64 = 7_000_000_000;

/// The first step of a growing window (QEMU: 4 µs).
pub const POLL_INITIAL_NS: u64 = 4000;

/// Polling rounds per poll under the model checkers, where there is no wall clock.
const MODEL_POLL_ROUNDS: u32 = 2;

/// Polling parameters, shared.
#[derive(Debug)]
pub(crate) struct PollParams {
    max_ns: AtomicU64,
    grow: AtomicU64,
    shrink: AtomicU64,
    idle_ns: AtomicU64,
    epoch: AtomicU64,
}

impl PollParams {
    pub(crate) fn new(max_ns: u64, grow: u64, shrink: u64) -> Self {
        PollParams {
            max_ns: AtomicU64::new(max_ns),
            grow: AtomicU64::new(grow),
            shrink: AtomicU64::new(shrink),
            idle_ns: AtomicU64::new(POLL_IDLE_INTERVAL_NS),
            epoch: AtomicU64::new(0),
        }
    }
    /// Polling configured (max_ns != 0).
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        // ORDERING: Relaxed: a change is followed by a notify (its fences publish it).
        self.max_ns.load(Ordering::Relaxed) != 0
    }
    fn get(&self) -> (u64, u64, u64) {
        // ORDERING: Relaxed, as in `enabled`.
        (
            self.max_ns.load(Ordering::Relaxed),
            self.grow.load(Ordering::Relaxed),
            self.shrink.load(Ordering::Relaxed),
        )
    }
}

/// The new window after a dispatch that followed `block_ns` of polling + waiting (QEMU's
/// `adjust_polling_time`, docs/protocol.md §3): keep it if the wait fitted; shrink (÷shrink, or reset
/// to 0) if the wait exceeded `max_ns`; otherwise grow (0 → 4000 → ×grow, default ×2), capped at `max_ns`.
pub fn adjust_poll_ns(poll_ns: u64, block_ns: u64, max_ns: u64, grow: u64, shrink: u64) -> u64 {
    if block_ns <= poll_ns {
        poll_ns
    } else if block_ns > max_ns {
        poll_ns.checked_div(shrink).unwrap_or(0)
    } else if poll_ns < max_ns && block_ns < max_ns {
        let grow = if grow == 0 { 2 } else { grow };
        let n = if poll_ns == 0 { POLL_INITIAL_NS } else { poll_ns.saturating_mul(grow) };
        n.min(max_ns)
    } else {
        poll_ns
    }
}

/// QEMU's poll_grow / poll_shrink trace events (`fd` -1: the context's own notifier).
#[inline]
fn trace_adjust(fd: std::os::fd::RawFd, old: u64, new: u64) {
    if new > old {
        tracing::trace!(target: "aioctx", fd, old, new, "poll_grow");
    } else if new < old {
        tracing::trace!(target: "aioctx", fd, old, new, "poll_shrink");
    }
}

/// What one `try_poll_mode` did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Polled {
    /// A user handler became ready.
    pub(crate) progress: bool,
    /// The clock when polling ended, if it polled.
    pub(crate) end_ns: Option<u64>,
}

/// Home-thread polling state.
#[derive(Debug, Default)]
pub(crate) struct PollState {
    list: RefCell<Vec<Arc<AioHandler>>>,
    started: Cell<bool>,
    /// Handlers whose io_poll succeeded: io_poll_ready is due at dispatch.
    ready: RefCell<Vec<Arc<AioHandler>>>,
    /// `ready` is not empty (read on every poll without a borrow).
    any_ready: Cell<bool>,
    /// The params epoch the windows were last reset for.
    epoch: Cell<u64>,
    /// The context's own notifier as a poll handler (QEMU `aio_context_notifier_poll`: its io_poll reads
    /// `notified`): on the list once its eventfd fired, with its own window.
    notifier_listed: Cell<bool>,
    notifier_ns: Cell<u64>,
    /// Polling saw `notified` this iteration: the notifier's window is adjusted at dispatch.
    notifier_ready: Cell<bool>,
}

impl PollState {
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        self.any_ready.get()
    }
    fn push_ready(&self, h: Arc<AioHandler>) {
        self.ready.borrow_mut().push(h);
        self.any_ready.set(true);
    }
    fn take_ready(&self) -> Vec<Arc<AioHandler>> {
        self.any_ready.set(false);
        std::mem::take(&mut *self.ready.borrow_mut())
    }
    pub(crate) fn clear(&self) {
        self.notifier_listed.set(false);
        self.list.borrow_mut().clear();
        drop(self.take_ready());
        self.started.set(false);
    }
    /// Whether poll mode is on (QEMU `poll_started`).
    pub(crate) fn started(&self) -> bool {
        self.started.get()
    }
}

impl Handle {
    /// Set the adaptive polling parameters, from any thread: `max_ns` is the longest window (0 turns
    /// polling off; QEMU IOThreads use 32768), `grow` multiplies a window that was too short (0: ×2),
    /// `shrink` divides one that was too long (0: reset to 0). Every handler's window restarts at 0.
    #[doc(alias = "aio_context_set_poll_params")]
    pub fn set_poll_params(&self, max_ns: u64, grow: u64, shrink: u64) {
        let s = &*self.shared;
        let p = &s.poll_params;
        {
            // Under the handler-table lock: concurrent calls do not mix their parameters, and
            // `quiet` (polling off and no handler) is recomputed with the table's count.
            let t = s.handlers.lock();
            // ORDERING: Relaxed stores; the notify below publishes them.
            p.max_ns.store(max_ns, Ordering::Relaxed);
            p.grow.store(grow, Ordering::Relaxed);
            p.shrink.store(shrink, Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            s.publish_counts(&t);
        }
        s.notify.notify();
    }

    /// How long a poll handler may go without a successful io_poll before it leaves the poll list
    /// (default 7 s; only on backends that poll fd readiness from userspace).
    pub fn set_poll_idle_timeout(&self, d: std::time::Duration) {
        // ORDERING: Relaxed, as in set_poll_params.
        self.shared.poll_params.idle_ns.store(d.as_nanos() as u64, Ordering::Relaxed);
        self.shared.notify.notify();
    }

    /// The current polling parameters `(max_ns, grow, shrink)`.
    pub fn poll_params(&self) -> (u64, u64, u64) {
        self.shared.poll_params.get()
    }
}

impl AioContext {
    /// The adaptive window of `fd`'s handler, if it is registered (diagnostics and tests).
    pub fn poll_ns(&self, fd: std::os::fd::RawFd) -> Option<u64> {
        let h = self.shared().handlers.lock().by_fd.get(&fd).cloned()?;
        Some(h.with_local(|l| l.poll_ns))
    }

    /// Whether `fd`'s handler is on the poll list.
    pub fn is_polled(&self, fd: std::os::fd::RawFd) -> bool {
        let h = self.shared().handlers.lock().by_fd.get(&fd).cloned();
        h.is_some_and(|h| h.with_local(|l| l.on_poll_list))
    }

    /// Whether poll mode is on (io_poll_begin was called and io_poll_end is due).
    pub fn poll_started(&self) -> bool {
        self.home_polling().started()
    }

    fn reset_windows_if_params_changed(&self) {
        let st = self.home_polling();
        // ORDERING: Relaxed, as in `PollParams::enabled`.
        let epoch = self.shared().poll_params.epoch.load(Ordering::Relaxed);
        if st.epoch.replace(epoch) != epoch {
            st.notifier_ns.set(0);
            let t = self.shared().handlers.lock();
            for h in t.by_fd.values() {
                h.with_local(|l| l.poll_ns = 0);
            }
        }
    }

    /// Protocol step 4 (`try_poll_mode`): poll the handlers in userspace for up to the largest window,
    /// clamped by `timeout`. A ready handler sets `timeout` to 0 and is queued for io_poll_ready; a
    /// notify (`notified`) ends polling without progress. The remaining timeout keeps its absolute
    /// deadline. `start` is the clock at the start of the iteration (poll_full's: polling and
    /// `block_ns` share it).
    pub(crate) fn try_poll_mode(&self, timeout: &mut Option<u64>, start: u64) -> Polled {
        let s = self.shared();
        let none = Polled { progress: false, end_ns: None };
        if !s.poll_params.enabled() {
            return none;
        }
        self.reset_windows_if_params_changed();
        let st = self.home_polling();
        if st.list.borrow().is_empty() && !st.notifier_listed.get() {
            return none;
        }
        let fdmon_polls = self.fdmon_polls_readiness();
        // On ppoll/epoll, poll only when every handler can (an fd-only handler must not starve; QEMU's
        // poll_disable_cnt).
        // ORDERING: Relaxed: a change of the count is followed by a notify, whose fences publish it.
        if !fdmon_polls && s.nr_no_poll.load(Ordering::Relaxed) != 0 {
            return none;
        }
        // The budget: the largest window over the poll list and the context's own notifier (QEMU's
        // notifier is an ordinary poll handler; without it a context with only BHs never polls).
        let listed =
            st.list.borrow().iter().map(|h| h.with_local(|l| l.poll_ns)).max().unwrap_or(0);
        let notifier = if st.notifier_listed.get() { st.notifier_ns.get() } else { 0 };
        let budget = listed.max(notifier);
        let budget = timeout.map_or(budget, |t| t.min(budget));
        if budget == 0 {
            return none;
        }

        if !st.started.get() {
            crate::trace_step!(Step::CtxPollBegin, poll_started = 1);
            st.started.set(true);
            for h in st.list.borrow().clone() {
                h.set_polling(self, true);
            }
        }

        tracing::trace!(target: "aioctx", max_ns = budget, timeout = ?timeout, "run_poll_handlers_begin");
        let mut progress = false;
        let mut rounds = 0u32;
        // The end of polling (`block_ns`, idle deadlines, the remaining timeout): the last round's
        // clock reading. A round that finds work or a kick breaks before reading the clock, so that
        // no clock read stands between seeing a kick and running its work; its end is then the
        // previous round's reading, at most one round early (a first round reads it after all: a
        // window that was polled must not look like 0 ns).
        let mut now = None;
        loop {
            rounds += 1;
            // Walk the list without cloning it (a clone costs a reference-count round trip per
            // handler per round). io_poll callbacks do not change the home poll list; a nested poll
            // from one (never sensible) would see it empty, and anything it adds is kept.
            let list = std::mem::take(&mut *st.list.borrow_mut());
            for h in &list {
                if self.poll_once(h, start) {
                    *timeout = Some(0);
                    progress = true;
                }
            }
            let mut cur = st.list.borrow_mut();
            let added = std::mem::replace(&mut *cur, list);
            cur.extend(added);
            drop(cur);
            // The notifier's own io_poll: a notify ends polling, never progress.
            // ORDERING: Relaxed: seeing true leads to accept (SeqCst fence) before the work scan.
            crate::traced!(Step::CtxPollUserspace,
                let notified = s.notify.notified.load(Ordering::Relaxed); notified = notified);
            if notified {
                *timeout = Some(0);
                st.notifier_ready.set(st.notifier_listed.get());
            }
            if *timeout == Some(0) {
                break;
            }
            let t = s.clock.now_ns();
            now = Some(t);
            if t.saturating_sub(start) >= budget
                || (crate::sync::MODEL_CHECKER && rounds >= MODEL_POLL_ROUNDS)
            {
                break;
            }
            crate::sync::hint::spin_loop();
        }
        let now = now.unwrap_or_else(|| s.clock.now_ns());
        if fdmon_polls && self.remove_idle(now) {
            *timeout = Some(0);
            progress = true;
        }
        if let Some(t) = timeout.as_mut() {
            *t = t.saturating_sub(now.saturating_sub(start));
        }
        tracing::trace!(target: "aioctx", progress, timeout = ?timeout, "run_poll_handlers_end");
        Polled { progress, end_ns: Some(now) }
    }

    /// One io_poll of `h`; true if it is ready (then queued for io_poll_ready).
    fn poll_once(&self, h: &Arc<AioHandler>, now: u64) -> bool {
        let ready = h.io_poll(self) == Some(true);
        crate::trace_step!(Step::HandlerIoPoll, ready = ready as u32);
        if ready {
            // ORDERING: Relaxed: configuration, published by the notify of set_poll_idle_timeout.
            let idle = self.shared().poll_params.idle_ns.load(Ordering::Relaxed);
            let first = h.with_local(|l| {
                l.poll_idle_deadline = now.saturating_add(idle);
                !std::mem::replace(&mut l.poll_ready, true)
            });
            if first {
                self.home_polling().push_ready(h.clone());
            }
        }
        ready
    }

    fn fdmon_polls_readiness(&self) -> bool {
        self.fdmon().polls_readiness()
    }

    /// Idle handlers leave the poll list: io_poll_end, then a final io_poll. True if that final poll
    /// found one ready.
    fn remove_idle(&self, now: u64) -> bool {
        let st = self.home_polling();
        let idle: Vec<_> = st
            .list
            .borrow()
            .iter()
            .filter(|h| {
                h.with_local(|l| {
                    l.poll_idle_deadline != 0 && now > l.poll_idle_deadline && !l.poll_ready
                })
            })
            .cloned()
            .collect();
        let mut progress = false;
        for h in idle {
            crate::trace_step!(Step::CtxPollIdleRemove);
            self.poll_list_remove(&h);
            h.with_local(|l| l.poll_idle_deadline = 0);
            if st.started.get() {
                h.set_polling(self, false);
                if !cfg!(aioctx_bug = "no_final_poll_after_poll_end") && self.poll_once(&h, now) {
                    progress = true;
                }
            }
        }
        progress
    }

    /// Leave poll mode before a blocking wait: io_poll_end on each handler, then one final io_poll of
    /// each (an event that raced io_poll_end is not lost). True if the final poll found one ready.
    pub(crate) fn poll_mode_end(&self) -> bool {
        let st = self.home_polling();
        if !st.started.get() {
            return false;
        }
        st.started.set(false);
        crate::trace_step!(Step::CtxPollEnd, poll_started = 0);
        let list = st.list.borrow().clone();
        for h in &list {
            h.set_polling(self, false);
        }
        let mut progress = false;
        if !cfg!(aioctx_bug = "no_final_poll_after_poll_end") {
            let now = self.shared().clock.now_ns();
            for h in &list {
                crate::trace_step!(Step::CtxPollFinalPoll);
                if self.poll_once(h, now) {
                    progress = true;
                }
            }
        }
        progress
    }

    fn poll_list_remove(&self, h: &Arc<AioHandler>) {
        if h.with_local(|l| std::mem::replace(&mut l.on_poll_list, false)) {
            self.home_polling().list.borrow_mut().retain(|x| !Arc::ptr_eq(x, h));
            tracing::trace!(target: "aioctx", fd = h.fd, "poll_remove");
        }
    }

    fn poll_list_add(&self, h: &Arc<AioHandler>) {
        if h.is_deleted()
            || !h.can_poll
            || h.with_local(|l| std::mem::replace(&mut l.on_poll_list, true))
        {
            return;
        }
        let st = self.home_polling();
        // ORDERING: Relaxed, as above.
        let idle = self.shared().poll_params.idle_ns.load(Ordering::Relaxed);
        let now = self.shared().clock.now_ns();
        h.with_local(|l| l.poll_idle_deadline = now.saturating_add(idle));
        st.list.borrow_mut().push(h.clone());
        tracing::trace!(target: "aioctx", fd = h.fd, "poll_add");
        crate::trace_step!(Step::CtxPollAdd, poll_started = st.started.get());
        if st.started.get() {
            h.set_polling(self, true);
        }
    }

    /// A removed handler (or the context is dropped): off the poll list, and io_poll_end if begun.
    pub(crate) fn poll_list_forget(&self, h: &Arc<AioHandler>) {
        self.poll_list_remove(h);
        h.with_local(|l| l.poll_ready = false);
        h.set_polling(self, false);
    }

    /// The notifier was dispatched (its eventfd fired, or polling saw `notified`): it joins the poll
    /// list and its window is adjusted like any poll handler's. Not progress.
    pub(crate) fn notifier_dispatched(&self, fd_fired: bool, block_ns: u64) {
        let st = self.home_polling();
        let polled = st.notifier_ready.replace(false);
        let (max, grow, shrink) = self.shared().poll_params.get();
        if max == 0 || !(fd_fired || polled) {
            return;
        }
        // As for any handler: join the list, then adjust in the same dispatch (QEMU adjusts after
        // aio_dispatch_handler, which may have just added it).
        st.notifier_listed.set(true);
        let old = st.notifier_ns.get();
        st.notifier_ns.set(adjust_poll_ns(old, block_ns, max, grow, shrink));
        trace_adjust(-1, old, st.notifier_ns.get());
    }

    fn adjust(&self, h: &AioHandler, block_ns: u64) {
        let (max, grow, shrink) = self.shared().poll_params.get();
        if max == 0 || !h.with_local(|l| l.on_poll_list) {
            return;
        }
        h.with_local(|l| {
            let old = l.poll_ns;
            l.poll_ns = adjust_poll_ns(old, block_ns, max, grow, shrink);
            trace_adjust(h.fd, old, l.poll_ns);
        });
    }

    /// Run io_poll_ready for handlers whose io_poll succeeded. The handler is off the poll list while
    /// it runs (a nested poll must not poll it, bug-history B18).
    pub(crate) fn dispatch_poll_ready(&self, block_ns: u64) -> bool {
        let st = self.home_polling();
        if !st.has_ready() {
            return false;
        }
        let ready = st.take_ready();
        let mut progress = false;
        for h in ready {
            if !h.with_local(|l| std::mem::replace(&mut l.poll_ready, false)) || h.is_deleted() {
                continue;
            }
            let was_listed = h.with_local(|l| l.on_poll_list);
            self.poll_list_remove(&h);
            crate::trace_step!(Step::HandlerPollReady);
            if h.io_poll_ready(self) {
                progress = true;
            }
            if was_listed {
                self.poll_list_add(&h);
            }
            self.adjust(&h, block_ns);
        }
        progress
    }

    /// Dispatch fd readiness of one handler; it joins the poll list on its first event.
    pub(crate) fn dispatch_handler(&self, h: &Arc<AioHandler>, e: &Event, block_ns: u64) -> bool {
        // An fd event supersedes a pending poll-ready for the same handler (one dispatch, as QEMU).
        h.with_local(|l| l.poll_ready = false);
        let progress = h.dispatch(self, e);
        if h.can_poll {
            self.poll_list_add(h);
            self.adjust(h, block_ns);
        }
        progress
    }
}
