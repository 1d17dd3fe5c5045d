//! The wake-up handshake: `notify`, `notify_accept`, and the poller's arm / re-check / disarm.
//!
//! # Protocol
//!
//! | field | written by | read by | meaning |
//! |---|---|---|---|
//! | `notify_me: AtomicU32` | home thread only, plain load + store (no RMW) | any notifier | bit 0: an external loop is between prepare and check; bits 1..: `2 ×` pollers between arm and disarm. 0: everything will be re-examined before the next blocking wait, so a notifier may skip the eventfd. |
//! | `notified: AtomicBool` | any thread sets; home thread clears (accept) | home thread (re-check, userspace polling) | a notify happened since the last accept (false positives allowed) |
//! | `notifier` (eventfd) | any notifier sets (only if `notify_me != 0`); drained by its read handler | the fd monitor | wakes a blocked wait |
//!
//! It is a Dekker (store-buffering) pattern on both sides:
//!
//! ```text
//!   notifier:  publish work; fence(Release); notified = true;  fence(SeqCst); read notify_me
//!   poller:    notify_me += 2;                                  fence(SeqCst); read notified
//! ```
//!
//! The two full fences guarantee that at least one side sees the other's store: either the notifier
//! sees `notify_me != 0` and writes the eventfd, or the poller sees `notified` and does not block. The
//! fences are explicit on purpose: a SeqCst RMW followed by a Relaxed load does not order them on ARM
//! (QEMU's 2020 aarch64 hang, bug-history B8), and loom models `fence(SeqCst)` exactly.
//!
//! # Model
//!
//! `promela/notify.pml` (sequentially consistent), `promela/notify_tso.pml` (store buffers: each
//! fence is needed), `promela/external.pml` (two pollers); loom scenarios in `model/tests/loom_*.rs`.
//! Planted bugs (`--cfg aioctx_bug="..."`): `notify_no_seqcst_fence`, `poll_no_fence_after_arm`,
//! `notify_me_rmw_instead_of_fence`, `poll_no_recheck_notified`, `skip_event_when_notified`,
//! `accept_after_scan` (in `ctx.rs`).
//!
//! # Upstream
//!
//! QEMU util/async.c `aio_notify`, `aio_notify_accept`, `aio_ctx_prepare`/`aio_ctx_check`;
//! util/aio-posix.c `aio_poll` (the `use_notify_me` block).

use crate::kernel::EventNotifier;
use crate::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use crate::trace::Step;
use crate::traced;

/// The handshake state of one context (part of its shared half).
#[derive(Debug)]
pub(crate) struct NotifyState {
    pub(crate) notify_me: AtomicU32,
    pub(crate) notified: AtomicBool,
    pub(crate) notifier: Box<dyn EventNotifier>,
}

impl NotifyState {
    pub(crate) fn new(notifier: Box<dyn EventNotifier>) -> Self {
        NotifyState { notify_me: AtomicU32::new(0), notified: AtomicBool::new(false), notifier }
    }

    /// `aio_notify`: make the home thread re-examine its work. Any thread. No syscall unless a poller
    /// is (about to be) blocked.
    #[inline]
    pub(crate) fn notify(&self) {
        // ORDERING: Release fence: work published before this call (a BH pushed, a handler added, a
        // timer moved) is visible to a poller that reads `notified == true` and then runs the
        // SeqCst fence in notify_accept. Pairs with the fence in `accept`. Without it, a timer
        // moved with a Relaxed `earliest` hint is lost to the home thread's timeout: the axiomatic
        // checker shows it (`c11::timer_mod_racing_bh` kills `notify::notify::fence#1:remove`,
        // mutants/CLAIMS); loom does not. Model: notify.pml#ctx_notify_release_fence
        traced!(Step::CtxNotifyReleaseFence, fence(Ordering::Release));

        // ORDERING: Relaxed; the fences on either side give it its meaning. A swap, not a store: with
        // `accept` also an RMW, every write of `notified` is an RMW, so they form one chain that loom
        // models exactly (loom orders plain stores of different threads only partially and then
        // reports the accept race below as a lost wakeup). The value read is used only by a planted
        // bug. Model: notify.pml#ctx_notify_set_notified
        traced!(Step::CtxNotifySetNotified, let already = self.notified.swap(true, Ordering::Relaxed);
            notified = 1, notified_old = already);

        // ORDERING: SeqCst fence: the store to `notified` (and the published work) precedes the load
        // of `notify_me`. Pairs with the fence after `notify_me += 2` in `arm` and after
        // `notify_me |= 1` in `prepare`. Model: notify.pml#ctx_notify_fence
        if planted!("notify_no_seqcst_fence") {
            crate::trace_step!(Step::CtxNotifyFence);
        } else {
            traced!(Step::CtxNotifyFence, fence(Ordering::SeqCst));
        }

        // ORDERING: Relaxed load, ordered by the fence above.
        // Model: notify.pml#ctx_notify_read_notify_me
        traced!(Step::CtxNotifyReadNotifyMe, let me = self.notify_me.load(Ordering::Relaxed); notify_me = me);
        // Planted bug (QEMU's aio_notify_accept.promela BUG2): skip the eventfd write when `notified`
        // was already set.
        let me = if planted!("skip_event_when_notified") && already { 0 } else { me };
        if me != 0 {
            // An eventfd write fails only if the fd is gone (a bug) or the counter is saturated,
            // which `set` treats as success (it is set). Model: notify.pml#ctx_notify_event_set
            traced!(Step::CtxNotifyEventSet, let r = self.notifier.set(); notifier = 1);
            if let Err(e) = r {
                panic!("aioctx: event notifier write failed: {e}");
            }
        }
    }

    /// `aio_notify_accept`: the home thread has seen the notification. Clears `notified`; must run
    /// before the loop looks at BHs, handlers and timers. Does not touch the eventfd (its read handler
    /// drains it). Returns whether a notification was pending (`notified` was set), which only a
    /// poll nested in its outer poll's pre-wait callbacks needs ([`AioContext::poll_full`]).
    #[inline]
    pub(crate) fn accept(&self) -> bool {
        // ORDERING: Relaxed RMW; the fence below orders it (and the loads of `notified` made while
        // polling) before the work scan, and acquires: pairs with the Release fence in `notify`.
        // An RMW, not a store: with a store, a notify's `notified = true` can be ordered before
        // this write in `notified`'s modification order (overwritten, never read) while its SeqCst
        // fence comes after ours; C11 then lets the scan and the next compute_timeout miss its
        // work, the re-check after arming read our `false`, and the notifier read the disarmed
        // `notify_me == 0`: a lost wakeup. An RMW reads the latest value: either it reads that
        // `true` (and acquires its work through the fence below), or the `true` comes later in the
        // modification order and the re-check sees it. x86 and ARMv8 (multi-copy atomic) cannot
        // show the lost wakeup; the C11 model can. loom, shuttle and Miri cannot either (they explore
        // interleavings, whose modification orders all follow one global order of the writes, and
        // this execution needs `notified`'s order to disagree with the BH list's); the axiomatic
        // RC11 checker does: `c11::bh_schedule_vs_blocking_poll` kills `notify::accept::swap#1:split`
        // (mutants/CLAIMS).
        // Model: notify.pml#ctx_notify_accept
        traced!(Step::CtxNotifyAccept, let old = self.notified.swap(false, Ordering::Relaxed);
            notified = 0, notified_old = old);
        // ORDERING: SeqCst fence, also an acquire fence: pairs with the Release fence in `notify`, so
        // a notify whose `notified = true` the swap above read has its work visible to the scan that
        // follows. Model: notify.pml#ctx_notify_accept_fence
        traced!(Step::CtxNotifyAcceptFence, fence(Ordering::SeqCst));
        old
    }

    /// Poll step 5: announce a blocking wait and re-check `notified`. Returns true if the wait must not
    /// block (a notify came in while `notify_me` was 0). Home thread only.
    #[inline]
    pub(crate) fn arm(&self) -> bool {
        if planted!("notify_me_rmw_instead_of_fence") {
            // Planted bug (QEMU before 2020, bug-history B8): a SeqCst RMW, believed to order the
            // later Relaxed load. It does not on ARM: the load can be satisfied before the RMW's
            // store is visible.
            // ORDERING: the planted bug itself: a SeqCst RMW and no fence (see above).
            traced!(Step::CtxPollNotifyMeAdd, let _v = self.notify_me.fetch_add(2, Ordering::SeqCst); notify_me = _v + 2);
        } else {
            // ORDERING: plain load + store (only the home thread writes notify_me). Relaxed: the fence
            // below orders it. Model: notify.pml#ctx_poll_notify_me_add
            let v = self.notify_me.load(Ordering::Relaxed);
            traced!(Step::CtxPollNotifyMeAdd, self.notify_me.store(v + 2, Ordering::Relaxed); notify_me = v + 2);
            // ORDERING: SeqCst fence: the store to notify_me precedes the re-check of `notified`.
            // Pairs with the SeqCst fence in `notify`. Model: notify.pml#ctx_poll_fence
            if planted!("poll_no_fence_after_arm") {
                crate::trace_step!(Step::CtxPollFence);
            } else {
                traced!(Step::CtxPollFence, fence(Ordering::SeqCst));
            }
        }
        if planted!("poll_no_recheck_notified") {
            // Planted bug: no re-check; a notify that skipped the eventfd while notify_me was 0 is
            // lost.
            return false;
        }
        // ORDERING: Relaxed load, ordered after the arm by the fence. Reading true means a notify
        // skipped (or will skip) the eventfd; do not block. Model: notify.pml#ctx_poll_recheck_notified
        traced!(Step::CtxPollRecheckNotified, let n = self.notified.load(Ordering::Relaxed); notified = n);
        n
    }

    /// Poll step 7: the wait is over. Home thread only.
    #[inline]
    pub(crate) fn disarm(&self) {
        // ORDERING: Relaxed: only the home thread writes notify_me; this reads its own last store.
        let v = self.notify_me.load(Ordering::Relaxed);
        assert!(v >= 2, "notify_me underflow: {v}");
        // ORDERING: Release store: the wait (and what it observed) is complete before a notifier can
        // see notify_me drop and skip the eventfd. Model: notify.pml#ctx_poll_notify_me_sub
        traced!(Step::CtxPollNotifyMeSub, self.notify_me.store(v - 2, Ordering::Release); notify_me = v - 2);
    }

    /// External-loop prepare: set bit 0, then fence; returns `notified` (true: do not block).
    pub(crate) fn prepare(&self) -> bool {
        let v = self.notify_me.load(Ordering::Relaxed);
        // ORDERING: Relaxed store, ordered by the fence below.
        // Model: external.pml#ctx_prepare_notify_me_or
        traced!(Step::CtxPrepareNotifyMeOr, self.notify_me.store(v | 1, Ordering::Relaxed); notify_me = v | 1);
        // ORDERING: SeqCst fence: bit 0 is visible before the timeout computation reads BHs and
        // timers. Pairs with the SeqCst fence in `notify`. Model: external.pml#ctx_prepare_fence
        traced!(Step::CtxPrepareFence, fence(Ordering::SeqCst));
        // ORDERING: Relaxed, after the fence (as the re-check in `arm`).
        traced!(Step::CtxPollRecheckNotified, let n = self.notified.load(Ordering::Relaxed); notified = n);
        n
    }

    /// External-loop check: clear bit 0.
    pub(crate) fn check(&self) {
        let v = self.notify_me.load(Ordering::Relaxed);
        // ORDERING: Release, as in `disarm`. Model: external.pml#ctx_check_notify_me_clear
        traced!(Step::CtxCheckNotifyMeClear, self.notify_me.store(v & !1, Ordering::Release); notify_me = v & !1);
    }

    /// Drain the eventfd (the notifier's read handler). Never progress.
    /// Model: notify.pml#ctx_poll_event_drain
    pub(crate) fn drain(&self) {
        traced!(Step::CtxPollEventDrain, let was = self.notifier.test_and_clear();
            notifier = 0, notifier_old = matches!(was, Ok(true)));
        if let Err(e) = was {
            panic!("aioctx: event notifier read failed: {e}");
        }
    }
}
