//! Bottom halves: callbacks scheduled from any thread, run by the home thread's next poll.
//!
//! # Protocol
//!
//! | field | set by | cleared by | meaning |
//! |---|---|---|---|
//! | `flags & BH_PENDING` | `enqueue` (any thread, `fetch_or`) | `poll_bhs` dequeue (home) | on `bh_list` or a slice being processed; only the thread that sets it pushes |
//! | `flags & BH_SCHEDULED` | `schedule` | dequeue, `cancel` | call it when dequeued |
//! | `flags & BH_IDLE` | `schedule_idle` | dequeue | not progress; caps the wait at 10 ms |
//! | `flags & BH_ONESHOT` | `oneshot` | never | free after the call |
//! | `flags & BH_DELETED` | the owner's drop (`enqueue(DELETED)`) | never | free without calling |
//! | `bh_list` | push (any thread, CAS) | take-all swap (home) | lock-free LIFO |
//!
//! # Ownership (QEMU's, with no reference counting on the hot path)
//!
//! A BH is a heap cell with two possible holders: its owner (`Bh`, until dropped; none for a oneshot)
//! and the lists (while PENDING). It is freed exactly once, by the home thread, when it dequeues it
//! with DELETED or ONESHOT set. Dropping a `Bh` is `enqueue(DELETED)` (docs/protocol.md §4): it
//! pushes the BH if it was not pending and never touches it again, so the loop always gets to free it. A BH is
//! never freed while its callback runs: if a nested poll inside the callback dequeues it DELETED (the
//! callback dropped its own handle), it is only marked, and freed when the callback returns (QEMU's
//! re-entrancy-guard use-after-free, bug-history B19, cannot happen). Push-only plus take-all has no
//! ABA problem.
//!
//! Slices: `poll_bhs` moves the whole list to the home thread's queue and processes it from the front;
//! a nested poll (from a callback) finishes what is left of the outer slice first, as QEMU does. A BH
//! scheduled from its own callback is pushed to `bh_list` again and runs in the next poll. Order within
//! a slice is LIFO today and **not** part of the API.
//!
//! Re-entrancy: a nested poll that dequeues a BH whose callback is running does not call it (not
//! progress). It is deferred: PENDING and SCHEDULED again but on no list, so the nested poll neither
//! takes it again nor computes a zero timeout for it (re-pushed at once, it made `while poll(false)
//! {}` endless and a nested `poll(true)` spin); the running call's return pushes it back on `bh_list`.
//!
//! # Model
//!
//! `promela/bh.pml` (schedule/cancel/delete against poll), loom scenario
//! `bh_schedule_vs_blocking_poll` in `model/tests/loom_bh.rs`, miri in `impl/tests/miri.rs`.
//!
//! # Upstream
//!
//! QEMU util/async.c: `aio_bh_enqueue`, `aio_bh_dequeue`, `aio_bh_poll`, `qemu_bh_schedule`,
//! `qemu_bh_cancel`, `qemu_bh_delete`, `aio_bh_schedule_oneshot`, `aio_compute_bh_timeout`.

use std::ptr::{self, NonNull};

use crate::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use crate::sync::{Arc, UnsafeCell};
use crate::trace::bh_flags::*;
#[allow(unused_imports)] // used by trace_step!/traced! when the `trace` feature is on
use crate::trace::Step;
use crate::Shared;

type Callback = Box<dyn FnMut() + Send + 'static>;

/// The shared part of a bottom half.
///
/// Not cache-line aligned, on purpose: an over-aligned allocation goes through the allocator's
/// memalign path, whose address reuse varies between loom executions; a push's CAS compares
/// addresses (a freed oneshot's address may come back as a new head), so its outcome, and loom's
/// exploration, would stop being deterministic. (Aligning it also made no measurable difference to
/// the polling round trip.)
pub(crate) struct BhInner {
    flags: AtomicU32,
    /// Link in `bh_list` or in the home thread's slice queue. Written by the thread that set PENDING
    /// (before its push), read by the home thread (before it clears PENDING).
    next: AtomicPtr<BhInner>,
    /// Home thread only: the callback, borrowed exclusively for the duration of a call.
    cb: UnsafeCell<Callback>,
    /// Home thread only: the re-entrancy state, a separate cell because a nested poll inside the
    /// callback reads and writes it while the callback's borrow is live.
    home: UnsafeCell<Home>,
}

struct Home {
    /// The callback is running (a nested poll must not re-enter it).
    running: bool,
    /// Dequeued DELETED while running: free it when the callback returns.
    free_on_return: bool,
    /// Dequeued SCHEDULED by a nested poll while running: PENDING again but on no list (see
    /// `defer`); pushed on `bh_list` when the callback returns.
    deferred: bool,
}

// SAFETY:
// - the callback is `Send`, so the BH may be freed on any thread (Shared::drop);
// - `home` is accessed only by the home thread (`HomeBhs::poll` / `call`) or by the thread freeing the
//   BH when no other holder exists; other threads touch only the atomics `flags` and `next` (under the
//   PENDING hand-off protocol above).
unsafe impl Send for BhInner {}
// SAFETY: see the Send impl above.
unsafe impl Sync for BhInner {}

impl BhInner {
    fn alloc(cb: Callback, flags: u32) -> NonNull<BhInner> {
        let b = Box::new(BhInner {
            flags: AtomicU32::new(flags),
            next: AtomicPtr::new(ptr::null_mut()),
            cb: UnsafeCell::new(cb),
            home: UnsafeCell::new(Home { running: false, free_on_return: false, deferred: false }),
        });
        NonNull::from(Box::leak(b))
    }

    /// Free a BH that no owner and no list holds any more.
    ///
    /// # Safety
    ///
    /// - `p` came from `alloc` and is freed only once;
    /// - its owner is gone (DELETED or ONESHOT was set) and it is on no list;
    /// - its callback is not running.
    unsafe fn free(p: *mut BhInner) {
        // SAFETY: the caller's obligations.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// A bottom half: a callback that any thread can schedule to run once on the context's home thread.
///
/// Scheduling an already-scheduled BH is a no-op (it runs once). Dropping the `Bh` deletes it: a
/// pending call is cancelled and its memory freed by the loop (QEMU `qemu_bh_delete`). A drop on
/// another thread races with the loop: a call the loop has already dequeued may still run (never one
/// dequeued after the drop; `promela/bh.pml` checks exactly this). `Bh` is `Send + Sync`; share it
/// with `Arc` to schedule from several threads.
///
/// Re-entrancy: a BH's callback is never re-entered. If it polls its context nested
/// ([`AioContext::with_current`](crate::AioContext::with_current)) while the BH is scheduled again
/// (by itself or another thread), that nested poll does not call it; the uncalled BH is not progress
/// and does not keep the nested poll from blocking. It stays scheduled and runs in the first poll
/// after the running call returned (a `cancel` or drop in between is obeyed).
///
/// # Examples
///
/// ```
/// # use aioctx::AioContext;
/// # use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
/// let ctx = AioContext::new()?;
/// let n = Arc::new(AtomicU32::new(0));
/// let n2 = n.clone();
/// let bh = ctx.bh_new(move || { n2.fetch_add(1, Ordering::Relaxed); });
/// bh.schedule();
/// bh.schedule(); // idempotent while pending
/// assert!(ctx.poll(false));
/// assert_eq!(n.load(Ordering::Relaxed), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "QEMUBH")]
pub struct Bh {
    inner: NonNull<BhInner>,
    ctx: Arc<Shared>,
}

// SAFETY:
// - the callback is `Send`; `Bh` only touches the BH's atomics (`schedule`, `cancel`, `drop`), and
//   the BH stays allocated while the `Bh` exists (only the loop frees it, after the drop set DELETED).
unsafe impl Send for Bh {}
// SAFETY: see the Send impl above; every `&self` method is an atomic operation.
unsafe impl Sync for Bh {}

impl std::fmt::Debug for Bh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ORDERING: Relaxed, diagnostic only.
        f.debug_struct("Bh").field("flags", &self.inner().flags.load(Ordering::Relaxed)).finish()
    }
}

impl Bh {
    pub(crate) fn new(ctx: Arc<Shared>, cb: Callback) -> Bh {
        Bh { inner: BhInner::alloc(cb, 0), ctx }
    }

    #[inline]
    fn inner(&self) -> &BhInner {
        // SAFETY: the BH is freed only after this handle's drop set DELETED (see the module docs).
        unsafe { self.inner.as_ref() }
    }

    /// Run the callback once in the home thread's next poll. Any thread; always notifies. (As in QEMU,
    /// scheduling a BH that is pending as idle keeps it idle until it runs.)
    #[doc(alias = "qemu_bh_schedule")]
    #[inline]
    pub fn schedule(&self) {
        enqueue(&self.ctx, self.inner.as_ptr(), BH_SCHEDULED);
    }

    /// As [`Bh::schedule`], but the call is not progress, and a pending idle BH only caps the wait
    /// at 10 ms instead of making the poll non-blocking.
    #[doc(alias = "qemu_bh_schedule_idle")]
    pub fn schedule_idle(&self) {
        enqueue(&self.ctx, self.inner.as_ptr(), BH_SCHEDULED | BH_IDLE);
    }

    /// Cancel a pending call (no notify). Racy against the loop unless called on the home thread: the
    /// callback may already be running.
    #[doc(alias = "qemu_bh_cancel")]
    pub fn cancel(&self) {
        // ORDERING: Relaxed: cancellation publishes nothing; the loop may or may not see it.
        // Model: bh.pml#bh_cancel
        crate::traced!(Step::BhCancel,
            let old = self.inner().flags.fetch_and(!BH_SCHEDULED, Ordering::Relaxed);
            bh_flags = old & !BH_SCHEDULED, bh_flags_old = old);
        let _ = old;
    }

    /// Whether a call is scheduled and not yet dequeued.
    pub fn is_scheduled(&self) -> bool {
        // ORDERING: Relaxed, a snapshot.
        self.inner().flags.load(Ordering::Relaxed) & BH_SCHEDULED != 0
    }
}

impl Drop for Bh {
    /// `qemu_bh_delete` = `enqueue(DELETED)`: the callback is never called again (except a call the
    /// loop dequeued before), and the loop frees the BH. This handle never touches it again.
    fn drop(&mut self) {
        enqueue(&self.ctx, self.inner.as_ptr(), BH_DELETED);
    }
}

/// Schedule a callback to run once on the home thread, then free it.
pub(crate) fn oneshot(ctx: &Shared, cb: impl FnOnce() + Send + 'static) {
    let mut cb = Some(cb);
    let inner = BhInner::alloc(
        Box::new(move || {
            if let Some(f) = cb.take() {
                f()
            }
        }),
        0,
    );
    enqueue(ctx, inner.as_ptr(), BH_SCHEDULED | BH_ONESHOT);
}

/// `aio_bh_enqueue`: set the flags; the thread that set PENDING pushes; always notify.
///
/// After the `fetch_or`, `bh` may be dequeued and (if DELETED or ONESHOT) freed by the home thread at
/// any moment, unless this thread just set PENDING: then nothing else can reach it until the push.
#[inline]
fn enqueue(ctx: &Shared, bh: *mut BhInner, new: u32) {
    // SAFETY: the caller holds the BH (its owner, or a fresh oneshot): it is allocated.
    let b = unsafe { &*bh };
    // ORDERING: AcqRel. Release: whatever the caller wrote before scheduling is visible to the loop's
    // AcqRel dequeue that reads this SCHEDULED bit. Acquire: if PENDING was clear, the loop's read of
    // `next` (before its dequeue cleared PENDING) happened before our write of `next` below.
    // Pairs with the fetch_and in `HomeBhs::poll`. Model: bh.pml#bh_schedule_flags
    // (The owner's drop is `enqueue(DELETED)`: recorded as the delete step.)
    #[cfg(feature = "trace")]
    let step = if new & BH_DELETED != 0 { Step::BhDelete } else { Step::BhScheduleFlags };
    crate::traced!(step, let old = b.flags.fetch_or(BH_PENDING | new, Ordering::AcqRel);
        bh_flags = old | BH_PENDING | new, bh_flags_old = old);
    if old & BH_PENDING == 0 {
        crate::traced!(Step::BhSchedulePush, push(&ctx.bh_list, b, bh); bh_list = 1);
    }
    // `b` is not touched after the push: from here the loop may free it.
    ctx.notify.notify();
}

/// Push `raw` (which is `bh`) on the lock-free LIFO.
#[inline]
fn push(list: &AtomicPtr<BhInner>, bh: &BhInner, raw: *mut BhInner) {
    // ORDERING: Relaxed: only a guess for the CAS below, which validates it.
    let mut head = list.load(Ordering::Relaxed);
    loop {
        // ORDERING: Relaxed: published by the Release CAS below.
        bh.next.store(head, Ordering::Relaxed);
        // ORDERING: Release on success: `next` and the flags are visible to the home thread's
        // Acquire swap in `HomeBhs::poll`. Relaxed on failure: we only retry.
        // Model: bh.pml#bh_schedule_push
        match list.compare_exchange_weak(head, raw, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// What `compute_timeout` needs to know about pending BHs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    None,
    Idle,
    Busy,
}

fn classify(list: *const BhInner, mut acc: Pending) -> Pending {
    let mut p = list;
    while !p.is_null() {
        // SAFETY:
        // - every node reachable from bh_list or the slice queue is PENDING, and only the home thread
        //   (the caller) dequeues and frees, so `p` is alive.
        let bh = unsafe { &*p };
        // ORDERING: Relaxed: a hint for the timeout; a BH scheduled concurrently also notifies.
        let f = bh.flags.load(Ordering::Relaxed);
        // A BH whose callback is running cannot be called by this (nested) poll: no reason to
        // hurry (it may be here if another thread scheduled it after the nested poll's dequeue).
        if f & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED && !is_running(bh) {
            if f & BH_IDLE == 0 {
                return Pending::Busy;
            }
            acc = Pending::Idle;
        }
        // ORDERING: Acquire: pairs with the Release push that linked `p`, so its fields are visible.
        p = bh.next.load(Ordering::Acquire);
    }
    acc
}

/// Length of a taken list (trace builds only).
#[cfg(feature = "trace")]
fn count(mut p: *const BhInner) -> usize {
    let mut n = 0;
    while !p.is_null() {
        n += 1;
        // SAFETY: as in `classify`.
        // ORDERING: Relaxed: home thread, after the Acquire swap that took this list.
        p = unsafe { &*p }.next.load(Ordering::Relaxed);
    }
    n
}

/// The home thread's side: the queue of taken slices.
#[derive(Debug)]
pub(crate) struct HomeBhs {
    /// Front of the queue of taken, not yet dequeued BHs (outer slices first). Home thread only.
    queue: std::cell::Cell<*mut BhInner>,
}

impl HomeBhs {
    pub(crate) fn new() -> Self {
        HomeBhs { queue: std::cell::Cell::new(ptr::null_mut()) }
    }

    /// Is a call pending (in `bh_list` or in an outer slice)?
    pub(crate) fn pending(&self, ctx: &Shared) -> Pending {
        let acc = classify(self.queue.get(), Pending::None);
        if acc == Pending::Busy {
            return acc;
        }
        // ORDERING: Acquire: pairs with the Release push, so the node's fields are visible.
        classify(ctx.bh_list.load(Ordering::Acquire), acc)
    }

    /// `aio_bh_poll`: take `bh_list` as a new slice behind the outer ones, then run the queue.
    /// Returns true if a non-idle BH was called.
    #[inline(always)] // three callers; inlined, the common one-BH slice costs no call frame
    pub(crate) fn poll(&self, ctx: &Shared) -> bool {
        // ORDERING: Acquire: pairs with the Release CAS in `push`: each node's `next` and the state
        // its scheduler published are visible. Model: bh.pml#bh_poll_take
        crate::traced!(Step::BhPollTake,
            let taken = ctx.bh_list.swap(ptr::null_mut(), Ordering::Acquire);
            bh_list = 0, bh_list_old = !taken.is_null(), count = count(taken));
        if self.queue.get().is_null() {
            self.queue.set(taken);
        } else if !taken.is_null() {
            self.append(taken);
        }

        let mut progress = false;
        loop {
            let p = self.queue.get();
            if p.is_null() {
                break;
            }
            // SAFETY: `p` is in the queue, hence PENDING and alive (only this thread frees).
            let bh = unsafe { &*p };
            // Read `next` before clearing PENDING: once PENDING is clear a scheduler may rewrite it.
            // ORDERING: Relaxed: `next` was published by the push's Release CAS and acquired by the swap
            // that took this slice.
            self.queue.set(bh.next.load(Ordering::Relaxed));
            // Dequeue: clear PENDING, SCHEDULED and IDLE and read the flags (QEMU's
            // `fetch_and(~(PENDING | SCHEDULED | IDLE))`), as a swap to 0: one `xchg` instead of a
            // CAS loop, and the same for every BH that outlives this dequeue. Such a BH has neither
            // DELETED nor ONESHOT in `f` (those are freed below: at once, or when their running
            // callback returns, and nothing reads their flags again), and the only other bits are
            // the three cleared ones, so the fetch_and would leave 0 too. A racing enqueue or
            // cancel is ordered before or after this RMW exactly as it would be against the
            // fetch_and. The trace records the fetch_and's result, the model's value.
            // ORDERING: AcqRel. Acquire: pairs with the AcqRel fetch_or in `enqueue` (the scheduler's
            // writes are visible to the callback). Release: our read of `next` happens before a
            // re-push writes it. Model: bh.pml#bh_poll_dequeue
            crate::traced!(Step::BhPollDequeue,
                let f = bh.flags.swap(0, Ordering::AcqRel);
                bh_flags = f & !(BH_PENDING | BH_SCHEDULED | BH_IDLE), bh_flags_old = f);
            if f & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED {
                crate::trace_step!(Step::BhPollCall, idle = f & BH_IDLE != 0);
                // A oneshot is freed when its call returns. A BH whose callback is running further
                // up the stack is not called: not progress.
                if call(ctx, p, f) && f & BH_IDLE == 0 {
                    progress = true;
                }
            } else if f & (BH_DELETED | BH_ONESHOT) != 0 {
                release(p);
            }
        }
        progress
    }

    /// Nested poll with an outer slice still queued: append `taken` behind it.
    #[cold]
    fn append(&self, taken: *mut BhInner) {
        let mut p = self.queue.get();
        loop {
            // SAFETY: `p` is in the home queue (PENDING, alive).
            // ORDERING: Relaxed: the home queue; PENDING keeps every other writer of `next` away.
            let next = unsafe { &*p }.next.load(Ordering::Relaxed);
            if next.is_null() {
                break;
            }
            p = next;
        }
        // SAFETY: as above; PENDING is still set on `p`, so only this thread writes its `next`.
        // ORDERING: Relaxed, as above.
        unsafe { &*p }.next.store(taken, Ordering::Relaxed);
    }

    /// Take every queued BH off the lists without calling it (the context is going away): deleted and
    /// oneshot ones are freed; the others stay with their owners (whose drop frees them later).
    pub(crate) fn drop_all(&self, ctx: &Shared) {
        let mut p = self.queue.replace(ptr::null_mut());
        // ORDERING: Acquire, as in `poll`.
        let mut l = ctx.bh_list.swap(ptr::null_mut(), Ordering::Acquire);
        for _ in 0..2 {
            while !p.is_null() {
                // SAFETY: in a list, hence PENDING and alive.
                let bh = unsafe { &*p };
                let next = bh.next.load(Ordering::Relaxed);
                // ORDERING: AcqRel, as the dequeue in `poll`.
                let f =
                    bh.flags.fetch_and(!(BH_PENDING | BH_SCHEDULED | BH_IDLE), Ordering::AcqRel);
                if f & (BH_DELETED | BH_ONESHOT) != 0 {
                    release(p);
                }
                p = next;
            }
            p = std::mem::replace(&mut l, ptr::null_mut());
        }
    }
}

/// A dequeued BH whose owner is gone: free it, unless its callback is running further up the stack
/// (the callback dropped its own handle, then polled): then it is freed when the callback returns.
fn release(p: *mut BhInner) {
    // SAFETY:
    // - `p` was just dequeued by the home thread (this thread) with DELETED or ONESHOT set: no owner,
    //   no list holds it;
    // - `home` is home-thread state; no borrow of it is live here (a running callback's frame holds
    //   only the raw pointer, see `call`).
    let running = unsafe { &*p }.home.with(|h| unsafe { (*h).running });
    if running {
        // SAFETY: as above.
        unsafe { &*p }.home.with_mut(|h| unsafe { (*h).free_on_return = true });
    } else {
        // SAFETY: as above, and its callback is not running.
        unsafe { BhInner::free(p) };
    }
}

/// Whether `bh`'s callback is running further up the stack. Home thread only.
#[inline]
fn is_running(bh: &BhInner) -> bool {
    // SAFETY:
    // - `home` is accessed only on the home thread (the caller), through short raw-pointer accesses;
    //   no `&mut` to it is live here (a running callback's frame holds only the raw pointer).
    bh.home.with(|h| unsafe { (*h).running })
}

/// Run `p`'s callback (dequeued with flags `f`) unless it is already running further up the stack (a
/// nested poll from inside its own callback): then it is deferred (see `defer`) and runs in a poll
/// after the outer call returned. Frees the BH afterwards if it is a oneshot or was deleted
/// meanwhile. Returns whether the callback was called.
#[inline]
fn call(ctx: &Shared, p: *mut BhInner, f: u32) -> bool {
    // SAFETY:
    // - `p` was just dequeued by the home thread (this thread); only this thread frees it, and not
    //   while `running` is set, so it is alive for this whole function.
    let home = unsafe { &(*p).home };
    // SAFETY: (this and each access to `home` below) it is accessed only on the home thread,
    // through short raw-pointer accesses; the callback is borrowed only for the duration of the call,
    // and a nested poll never borrows it while `running` is set.
    if home.with(|h| unsafe { (*h).running }) {
        defer(p, f);
        return false;
    }
    struct Done<'a>(*mut BhInner, bool, &'a Shared);
    impl Drop for Done<'_> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: as in `call`; runs on return and on unwind.
            let home = unsafe { &(*self.0).home };
            // SAFETY: as in `call`.
            let (free, deferred) = home.with_mut(|h| unsafe {
                (*h).running = false;
                ((*h).free_on_return, std::mem::take(&mut (*h).deferred))
            });
            if deferred {
                // A deferred BH is PENDING and on no list, so no poll dequeued it meanwhile (it
                // cannot have been freed by one) and it is neither a oneshot nor marked to free.
                debug_assert!(!free && !self.1);
                resume(self.2, self.0);
            } else if free || self.1 {
                // SAFETY: dequeued with ONESHOT, or DELETED by a nested poll; the call is over.
                unsafe { BhInner::free(self.0) };
            }
        }
    }
    // SAFETY: as above.
    home.with_mut(|h| unsafe { (*h).running = true });
    let _done = Done(p, f & BH_ONESHOT != 0, ctx);
    // SAFETY: see above; `running` makes this the only live &mut to the callback (a nested poll
    // touches only `home`, the other cell).
    unsafe { &(*p).cb }.with_mut(|cb| unsafe { (*cb)() });
    true
}

/// A nested poll dequeued (with flags `f`) a BH whose callback is running: schedule it again, but keep
/// it off every list until the callback returns. Re-pushed at once, it would be taken by the next
/// nested poll and re-pushed again, forever: the nested loop would never block (every timeout 0),
/// and `while poll(false) {}` would never end. Deferred, it is no reason for a zero timeout, and
/// `resume` pushes it when the call returns, so it runs in a poll after that (nothing is lost).
///
/// This is `enqueue` without the push and the notify: setting PENDING makes a racing `schedule` or
/// the owner's drop find it pending (they set their flags and do not push), as on a list.
#[cold]
fn defer(p: *mut BhInner, f: u32) {
    // SAFETY: as in `call`: `p` is alive, only this thread frees it.
    let b = unsafe { &*p };
    // ORDERING: AcqRel, as the fetch_or in `enqueue` (pairs with the dequeue that will read it).
    crate::traced!(Step::BhScheduleFlags,
        let old = b.flags.fetch_or(BH_PENDING | BH_SCHEDULED | (f & BH_IDLE), Ordering::AcqRel);
        bh_flags = old | BH_PENDING | BH_SCHEDULED | (f & BH_IDLE), bh_flags_old = old);
    if old & BH_PENDING == 0 {
        // We set PENDING: the BH is ours until we push it (`resume`).
        // SAFETY: as in `call`.
        b.home.with_mut(|h| unsafe { (*h).deferred = true });
    }
    // Otherwise another thread scheduled (or deleted) it after our dequeue and pushed it: it is on
    // `bh_list`, where `classify` ignores it while it runs, and a later poll dequeues it again.
}

/// The callback of a deferred BH returned: push it on `bh_list` (it is PENDING and ours), so the next
/// poll dequeues it: it is called if still SCHEDULED (a cancel in between is obeyed), freed if its
/// owner dropped it meanwhile. No notify: only the home thread (this one) dequeues, and its next
/// timeout computation sees the BH on the list.
#[cold]
fn resume(ctx: &Shared, p: *mut BhInner) {
    // SAFETY: as in `call`: `p` is alive, PENDING and on no list.
    let b = unsafe { &*p };
    crate::traced!(Step::BhSchedulePush, push(&ctx.bh_list, b, p); bh_list = 1);
}
