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
//! `PollState` (in the context's home half) owns the home-thread state and all of the poller's
//! methods; for each call the loop lends it a `PollEnv`: the polling parameters, the clock, the
//! notify state, the handler table and the context itself, which the poller only hands on to the
//! handlers' callbacks and asks for its fd monitor.
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

use crate::handler::{AioHandler, HandlerTable};
use crate::kernel::{Clock, Event};
use crate::notify::NotifyState;
use crate::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex};
use crate::trace::Step;
use crate::AioContext;

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
    /// `(max_ns, grow, shrink)`.
    pub(crate) fn get(&self) -> (u64, u64, u64) {
        // ORDERING: Relaxed, as in `enabled`.
        (
            self.max_ns.load(Ordering::Relaxed),
            self.grow.load(Ordering::Relaxed),
            self.shrink.load(Ordering::Relaxed),
        )
    }
    /// Set `(max_ns, grow, shrink)` and bump the epoch (every window restarts at 0). The caller
    /// holds the handler-table lock and notifies after (`Handle::set_poll_params`).
    pub(crate) fn set_poll_params(&self, max_ns: u64, grow: u64, shrink: u64) {
        // ORDERING: Relaxed stores; the caller's notify publishes them.
        self.max_ns.store(max_ns, Ordering::Relaxed);
        self.grow.store(grow, Ordering::Relaxed);
        self.shrink.store(shrink, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
    /// Set the idle timeout (the caller notifies after).
    pub(crate) fn set_poll_idle_timeout(&self, ns: u64) {
        // ORDERING: Relaxed, as in set_poll_params.
        self.idle_ns.store(ns, Ordering::Relaxed);
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

/// What one `try_poll_mode` did. A handler it found ready is not progress yet: its io_poll_ready
/// runs in `dispatch_poll_ready`, which says so (a handler removed in between runs nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Polled {
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

/// What the poller is lent by its context for one call: the shared parts it reads, and the context
/// itself, which it only hands on to the handlers' callbacks (their `FdRef::context`) and asks for
/// its fd monitor.
#[derive(Clone, Copy)]
pub(crate) struct PollEnv<'a> {
    pub(crate) ctx: &'a AioContext,
    pub(crate) params: &'a PollParams,
    pub(crate) clock: &'a dyn Clock,
    /// The notifier's own io_poll reads `notified`.
    pub(crate) notify: &'a NotifyState,
    /// The handler table (windows reset when the parameters change).
    pub(crate) handlers: &'a Mutex<HandlerTable>,
    /// Registered user handlers that cannot poll (QEMU's `poll_disable_cnt`).
    pub(crate) nr_no_poll: &'a AtomicUsize,
}

impl PollState {
    fn reset_windows_if_params_changed(&self, env: &PollEnv<'_>) {
        // ORDERING: Relaxed, as in `PollParams::enabled`.
        let epoch = env.params.epoch.load(Ordering::Relaxed);
        if self.epoch.replace(epoch) != epoch {
            self.notifier_ns.set(0);
            let t = env.handlers.lock();
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
    pub(crate) fn try_poll_mode(
        &self,
        env: &PollEnv<'_>,
        timeout: &mut Option<u64>,
        start: u64,
    ) -> Polled {
        let none = Polled { end_ns: None };
        if !env.params.enabled() {
            return none;
        }
        self.reset_windows_if_params_changed(env);
        if self.list.borrow().is_empty() && !self.notifier_listed.get() {
            return none;
        }
        let fdmon_polls = env.ctx.fdmon().polls_readiness();
        // On ppoll/epoll, poll only when every handler can (an fd-only handler must not starve; QEMU's
        // poll_disable_cnt).
        // ORDERING: Relaxed: a change of the count is followed by a notify, whose fences publish it.
        if !fdmon_polls && env.nr_no_poll.load(Ordering::Relaxed) != 0 {
            return none;
        }
        // The budget: the largest window over the poll list and the context's own notifier (QEMU's
        // notifier is an ordinary poll handler; without it a context with only BHs never polls).
        let listed =
            self.list.borrow().iter().map(|h| h.with_local(|l| l.poll_ns)).max().unwrap_or(0);
        let notifier = if self.notifier_listed.get() { self.notifier_ns.get() } else { 0 };
        let budget = listed.max(notifier);
        let budget = timeout.map_or(budget, |t| t.min(budget));
        if budget == 0 {
            return none;
        }

        if !self.started.get() {
            crate::trace_step!(Step::CtxPollBegin, poll_started = 1);
            self.started.set(true);
            // A copy, the borrow released before the calls: an io_poll_begin that polls nested
            // walks the list itself (the `for` would hold the borrow to its end).
            let list = self.list.borrow().clone();
            for h in &list {
                h.set_polling(env.ctx, true);
            }
        }

        tracing::trace!(target: "aioctx", max_ns = budget, timeout = ?timeout, "run_poll_handlers_begin");
        let mut found = false;
        let mut rounds = 0u32;
        // The end of polling (`block_ns`, idle deadlines, the remaining timeout): the last round's
        // clock reading. A round that finds work or a kick breaks before reading the clock, so that
        // no clock read stands between seeing a kick and running its work (mutants/CLAIMS:
        // `polling::a_kick_seen_while_polling_runs_its_bh_with_no_clock_read_between`); its end is
        // then the previous round's reading, at most one round early (a first round reads it after
        // all: a window that was polled must not look like 0 ns).
        let mut now = None;
        loop {
            rounds += 1;
            // Walk the list without cloning it (a clone costs a reference-count round trip per
            // handler per round). io_poll callbacks do not change the home poll list; a nested poll
            // from one (never sensible) would see it empty, and anything it adds is kept.
            let list = std::mem::take(&mut *self.list.borrow_mut());
            for h in &list {
                if self.poll_once(env, h, start) {
                    *timeout = Some(0);
                    found = true;
                }
            }
            let mut cur = self.list.borrow_mut();
            let added = std::mem::replace(&mut *cur, list);
            cur.extend(added);
            drop(cur);
            // The notifier's own io_poll: a notify ends polling, never progress.
            // ORDERING: Relaxed: seeing true leads to accept (SeqCst fence) before the work scan.
            crate::traced!(Step::CtxPollUserspace,
                let notified = env.notify.notified.load(Ordering::Relaxed); notified = notified);
            if notified {
                *timeout = Some(0);
                self.notifier_ready.set(self.notifier_listed.get());
            }
            if *timeout == Some(0) {
                break;
            }
            let t = env.clock.now_ns();
            now = Some(t);
            if t.saturating_sub(start) >= budget
                || (crate::sync::MODEL_CHECKER && rounds >= MODEL_POLL_ROUNDS)
            {
                break;
            }
            crate::sync::hint::spin_loop();
        }
        let now = now.unwrap_or_else(|| env.clock.now_ns());
        if fdmon_polls && self.remove_idle(env, now) {
            *timeout = Some(0);
            found = true;
        }
        if let Some(t) = timeout.as_mut() {
            *t = t.saturating_sub(now.saturating_sub(start));
        }
        tracing::trace!(target: "aioctx", found, timeout = ?timeout, "run_poll_handlers_end");
        Polled { end_ns: Some(now) }
    }

    /// One io_poll of `h`; true if it is ready (then queued for io_poll_ready).
    fn poll_once(&self, env: &PollEnv<'_>, h: &Arc<AioHandler>, now: u64) -> bool {
        let ready = h.io_poll(env.ctx) == Some(true);
        crate::trace_step!(Step::HandlerIoPoll, ready = ready as u32);
        if ready {
            // ORDERING: Relaxed: configuration, published by the notify of set_poll_idle_timeout.
            let idle = env.params.idle_ns.load(Ordering::Relaxed);
            let first = h.with_local(|l| {
                l.poll_idle_deadline = now.saturating_add(idle);
                !std::mem::replace(&mut l.poll_ready, true)
            });
            if first {
                self.push_ready(h.clone());
            }
        }
        ready
    }

    /// Idle handlers (io_poll has not succeeded for the idle interval: `now` at or past the
    /// deadline, as QEMU) leave the poll list: io_poll_end, then a final io_poll. True if that
    /// final poll found one ready.
    fn remove_idle(&self, env: &PollEnv<'_>, now: u64) -> bool {
        let idle: Vec<_> = self
            .list
            .borrow()
            .iter()
            .filter(|h| {
                h.with_local(|l| {
                    l.poll_idle_deadline != 0 && now >= l.poll_idle_deadline && !l.poll_ready
                })
            })
            .cloned()
            .collect();
        let mut progress = false;
        for h in idle {
            crate::trace_step!(Step::CtxPollIdleRemove);
            self.poll_list_remove(&h);
            h.with_local(|l| l.poll_idle_deadline = 0);
            if self.started.get() {
                h.set_polling(env.ctx, false);
                if !planted!("no_final_poll_after_poll_end") && self.poll_once(env, &h, now) {
                    progress = true;
                }
            }
        }
        progress
    }

    /// Leave poll mode before a blocking wait: io_poll_end on each handler, then one final io_poll of
    /// each (an event that raced io_poll_end is not lost). True if the final poll found one ready.
    pub(crate) fn poll_mode_end(&self, env: &PollEnv<'_>) -> bool {
        if !self.started.get() {
            return false;
        }
        self.started.set(false);
        crate::trace_step!(Step::CtxPollEnd, poll_started = 0);
        let list = self.list.borrow().clone();
        for h in &list {
            h.set_polling(env.ctx, false);
        }
        let mut progress = false;
        if !planted!("no_final_poll_after_poll_end") {
            let now = env.clock.now_ns();
            for h in &list {
                crate::trace_step!(Step::CtxPollFinalPoll);
                if self.poll_once(env, h, now) {
                    progress = true;
                }
            }
        }
        progress
    }

    fn poll_list_remove(&self, h: &Arc<AioHandler>) {
        if h.with_local(|l| std::mem::replace(&mut l.on_poll_list, false)) {
            self.list.borrow_mut().retain(|x| !Arc::ptr_eq(x, h));
            tracing::trace!(target: "aioctx", fd = h.fd, "poll_remove");
        }
    }

    fn poll_list_add(&self, env: &PollEnv<'_>, h: &Arc<AioHandler>) {
        if h.is_deleted()
            || !h.can_poll
            || h.with_local(|l| std::mem::replace(&mut l.on_poll_list, true))
        {
            return;
        }
        // ORDERING: Relaxed, as above.
        let idle = env.params.idle_ns.load(Ordering::Relaxed);
        let now = env.clock.now_ns();
        h.with_local(|l| l.poll_idle_deadline = now.saturating_add(idle));
        self.list.borrow_mut().push(h.clone());
        tracing::trace!(target: "aioctx", fd = h.fd, "poll_add");
        crate::trace_step!(Step::CtxPollAdd, poll_started = self.started.get());
        if self.started.get() {
            h.set_polling(env.ctx, true);
        }
    }

    /// A removed handler (or the context is dropped): off the poll list, and io_poll_end if begun.
    pub(crate) fn poll_list_forget(&self, ctx: &AioContext, h: &Arc<AioHandler>) {
        self.poll_list_remove(h);
        h.with_local(|l| l.poll_ready = false);
        h.set_polling(ctx, false);
    }

    /// The notifier was dispatched (its eventfd fired, or polling saw `notified`): it joins the poll
    /// list and its window is adjusted like any poll handler's. Not progress.
    pub(crate) fn notifier_dispatched(&self, params: &PollParams, fd_fired: bool, block_ns: u64) {
        let polled = self.notifier_ready.replace(false);
        let (max, grow, shrink) = params.get();
        if max == 0 || !(fd_fired || polled) {
            return;
        }
        // As for any handler: join the list, then adjust in the same dispatch (QEMU adjusts after
        // aio_dispatch_handler, which may have just added it).
        self.notifier_listed.set(true);
        let old = self.notifier_ns.get();
        self.notifier_ns.set(adjust_poll_ns(old, block_ns, max, grow, shrink));
        trace_adjust(-1, old, self.notifier_ns.get());
    }

    fn adjust(params: &PollParams, h: &AioHandler, block_ns: u64) {
        let (max, grow, shrink) = params.get();
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
    pub(crate) fn dispatch_poll_ready(&self, env: &PollEnv<'_>, block_ns: u64) -> bool {
        if !self.has_ready() {
            return false;
        }
        let ready = self.take_ready();
        let mut progress = false;
        for h in ready {
            if !h.with_local(|l| std::mem::replace(&mut l.poll_ready, false)) || h.is_deleted() {
                continue;
            }
            let was_listed = h.with_local(|l| l.on_poll_list);
            self.poll_list_remove(&h);
            crate::trace_step!(Step::HandlerPollReady);
            if h.io_poll_ready(env.ctx) {
                progress = true;
            }
            if was_listed {
                self.poll_list_add(env, &h);
            }
            progress |= self.settle(env, &h);
            Self::adjust(env.params, &h, block_ns);
        }
        progress
    }

    /// Outside its callbacks a handler is begun iff poll mode is on and it is on the poll list. A
    /// poll nested in a callback of `h` that began or ended poll mode, or took `h` off the list,
    /// could not call its io_poll_begin / io_poll_end (§5.4); now that the callback returned, the
    /// call still owed is made. After an end, one final io_poll as in `poll_mode_end` (an event
    /// that raced the end is not lost), dispatched at once: this iteration's ready list was taken
    /// already. True if io_poll_ready ran. A further round needs its callback to poll nested again.
    fn settle(&self, env: &PollEnv<'_>, h: &Arc<AioHandler>) -> bool {
        let mut progress = false;
        loop {
            let want = self.started.get() && h.with_local(|l| l.on_poll_list) && !h.is_deleted();
            if h.with_local(|l| l.in_callback || l.poll_begun == want) {
                return progress;
            }
            h.set_polling(env.ctx, want);
            if !want && h.io_poll(env.ctx) == Some(true) {
                progress |= h.io_poll_ready(env.ctx);
            }
        }
    }

    /// Dispatch fd readiness of one handler; it joins the poll list on its first event.
    pub(crate) fn dispatch_handler(
        &self,
        env: &PollEnv<'_>,
        h: &Arc<AioHandler>,
        e: &Event,
        block_ns: u64,
    ) -> bool {
        // An fd event supersedes a pending poll-ready for the same handler (one dispatch, as QEMU).
        h.with_local(|l| l.poll_ready = false);
        let mut progress = h.dispatch(env.ctx, e);
        if h.can_poll {
            self.poll_list_add(env, h);
            progress |= self.settle(env, h);
            Self::adjust(env.params, h, block_ns);
        }
        progress
    }
}
