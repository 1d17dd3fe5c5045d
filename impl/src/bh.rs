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

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::ctx::Shared;
use crate::kind::{Kind, Local, Remote};
use crate::notify::NotifyState;
use crate::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use crate::sync::{Arc, Mutex, UnsafeCell};
use crate::trace::Step;
use crate::AioContext;

/// BH flag bits, the same names and values as the Promela models and QEMU.
pub mod bh_flags {
    /// On a list (bh_list or a slice being processed).
    pub const BH_PENDING: u32 = 1 << 0;
    /// Call it when dequeued.
    pub const BH_SCHEDULED: u32 = 1 << 1;
    /// Free after calling (oneshot).
    pub const BH_ONESHOT: u32 = 1 << 2;
    /// Free without calling.
    pub const BH_DELETED: u32 = 1 << 3;
    /// Not progress; caps the wait at 10 ms.
    pub const BH_IDLE: u32 = 1 << 4;
}
use bh_flags::*;

/// A BH's callback. `Send` or not by its kind: a `Local` one is called and dropped only on the home
/// thread (see `Bh::drop` and `crate::kind`).
type Callback = Box<dyn FnMut(&BhRef<'_>) + 'static>;

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
    /// Home thread only: the closure, borrowed exclusively for the duration of a call; a no-op (a
    /// zero-sized box, no allocation) once `GONE`.
    cb: UnsafeCell<Callback>,
    /// Home thread only: the re-entrancy state. A cell of its own: a nested poll or a `BhRef`
    /// method inside the callback reads and writes it while the callback's borrow of `cb` is live
    /// (loom checks exactly that: one cell, borrowed by the call, read by the nested poll, is a
    /// "currently writing" failure of `loom_bh::bh_reschedule_racing_nested_poll`).
    home: UnsafeCell<Home>,
}

struct Home {
    /// `RUNNING | FREE_ON_RETURN | DEFERRED | DEAD | GONE`: one byte, so the common call (0 before,
    /// `RUNNING` after) is one compare on each side and everything rare is out of line.
    st: u8,
}

/// The callback is running (a nested poll must not re-enter it).
const RUNNING: u8 = 1;
/// Dequeued DELETED while running: free it when the callback returns.
const FREE_ON_RETURN: u8 = 2;
/// Dequeued SCHEDULED by a nested poll while running: PENDING again but on no list (see `defer`);
/// pushed on `bh_list` when the callback returns.
const DEFERRED: u8 = 4;
/// Deleted while running ([`BhRef::delete`], or a `Local` owner's drop inside the call): drop the
/// closure when the call returns.
const DEAD: u8 = 8;
/// The closure was dropped: a dequeue calls nothing.
const GONE: u8 = 16;

fn noop() -> Callback {
    Box::new(|_: &BhRef<'_>| {})
}

/// Read or write the home state of `p`. Home thread only.
///
/// # Safety
///
/// - `p` is alive (its owner or a running call holds it, or the caller just dequeued it);
/// - this is the home thread (or the thread freeing a BH nobody else holds);
/// - `f` does not call user code.
#[inline(always)]
unsafe fn home<R>(p: *mut BhInner, f: impl FnOnce(*mut Home) -> R) -> R {
    // SAFETY: the caller's obligations.
    unsafe { &*p }.home.with_mut(f)
}

/// Take `p`'s closure out, leaving the no-op. Home thread only.
///
/// # Safety
///
/// As for [`home`], and the callback is not running (no borrow of `cb` is live).
#[inline]
unsafe fn take_cb(p: *mut BhInner) -> Callback {
    // SAFETY: the caller's obligations.
    unsafe { &*p }.cb.with_mut(|cb| std::mem::replace(unsafe { &mut *cb }, noop()))
}

// SAFETY:
// - a `Remote` BH's callback is `Send`, so it may be freed on any thread (`Shared`'s drop); a `Local`
//   BH's callback is taken out and dropped on the home thread before any other thread can free the BH
//   (its owner's drop, or the return of its running call, runs first: see `Bh::drop`), and a `Local`
//   oneshot is freed by the home thread (it is created there, and the context's drop, there too,
//   takes every listed BH);
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
            home: UnsafeCell::new(Home { st: 0 }),
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
/// Scheduling an already-scheduled BH is a no-op (it runs once). [`Bh::delete`] (or dropping the
/// `Bh`) deletes it: a pending call is cancelled and its memory freed by the loop (QEMU
/// `qemu_bh_delete`). A delete on another thread (a [`Remote`] BH) races with the loop: a call the
/// loop has already dequeued may still run (never one dequeued after the delete; `promela/bh.pml`
/// checks exactly this).
///
/// The callback gets a [`BhRef`]: itself, to reschedule, cancel or delete itself, and the context
/// (a nested poll) — no `Arc<Mutex<Option<Bh>>>` filled in after creation, no cycle.
///
/// Two kinds ([`crate::kind`]): `Bh` (= `Bh<Local>`) from [`AioContext::bh_new`] takes any
/// `'static` closure and stays on the home thread; [`Bh::scheduler`] gives the `Send` handle that
/// schedules it from anywhere. `Bh<Remote>` from [`Handle::bh_new`](crate::Handle::bh_new) takes a
/// `Send` closure and is itself `Send + Sync`: share it with `Arc` to schedule from several threads.
///
/// # Re-entrancy (nested polls)
///
/// A BH's callback is never re-entered. If it polls its context nested ([`BhRef::context`]) while the
/// BH is scheduled again (by itself or another thread), that nested poll does not call it; the
/// uncalled BH is not progress and does not keep the nested poll from blocking. It stays scheduled
/// and runs in the first poll after the running call returned (a `cancel` or delete in between is
/// obeyed). Other BHs still run in the nested poll: it first finishes what is left of the outer
/// poll's slice, then takes new ones.
///
/// # Examples
///
/// ```
/// # use aioctx::AioContext;
/// # use std::{cell::Cell, rc::Rc};
/// let ctx = AioContext::new()?;
/// let n = Rc::new(Cell::new(0));
/// let n2 = n.clone();
/// let bh = ctx.bh_new(move |this| {
///     n2.set(n2.get() + 1);
///     if n2.get() < 3 {
///         this.schedule(); // runs again in the next poll
///     }
/// });
/// bh.schedule();
/// bh.schedule(); // idempotent while pending
/// while ctx.poll(false) {}
/// assert_eq!(n.get(), 3);
/// bh.delete();
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "QEMUBH")]
pub struct Bh<K: Kind = Local> {
    inner: NonNull<BhInner>,
    ctx: Arc<Shared>,
    /// The slot of the `Send` schedule handles, made by the first [`Bh::scheduler`] (`Local` only).
    sched: std::cell::OnceCell<Arc<SchedSlot>>,
    _kind: PhantomData<K>,
}

// SAFETY:
// - a `Remote` BH's callback is `Send`; `Bh<Remote>` only touches the BH's atomics (`schedule`,
//   `cancel`, `drop`), and the BH stays allocated while the `Bh` exists (only the loop frees it,
//   after the drop set DELETED); `sched` is never set on a `Remote` BH (`scheduler` is `Local`-only).
unsafe impl Send for Bh<Remote> {}
// SAFETY: see the Send impl above; every `&self` method of `Bh<Remote>` is an atomic operation.
unsafe impl Sync for Bh<Remote> {}

impl<K: Kind> std::fmt::Debug for Bh<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ORDERING: Relaxed, diagnostic only.
        f.debug_struct("Bh").field("flags", &self.inner().flags.load(Ordering::Relaxed)).finish()
    }
}

impl<K: Kind> Bh<K> {
    pub(crate) fn new(ctx: Arc<Shared>, cb: Callback) -> Bh<K> {
        Bh {
            inner: BhInner::alloc(cb, 0),
            ctx,
            sched: std::cell::OnceCell::new(),
            _kind: PhantomData,
        }
    }

    #[inline]
    fn inner(&self) -> &BhInner {
        // SAFETY: the BH is freed only after this handle's drop set DELETED (see the module docs).
        unsafe { self.inner.as_ref() }
    }

    /// Run the callback once in the home thread's next poll. Always notifies. (As in QEMU,
    /// scheduling a BH that is pending as idle keeps it idle until it runs.)
    #[doc(alias = "qemu_bh_schedule")]
    #[inline]
    pub fn schedule(&self) {
        enqueue(self.ctx.bh_list(), self.ctx.notify(), self.inner.as_ptr(), BH_SCHEDULED);
    }

    /// As [`Bh::schedule`], but the call is not progress, and a pending idle BH only caps the wait
    /// at 10 ms instead of making the poll non-blocking.
    #[doc(alias = "qemu_bh_schedule_idle")]
    pub fn schedule_idle(&self) {
        enqueue(self.ctx.bh_list(), self.ctx.notify(), self.inner.as_ptr(), BH_SCHEDULED | BH_IDLE);
    }

    /// Cancel a pending call (no notify). Racy against the loop unless called on the home thread: the
    /// callback may already be running.
    #[doc(alias = "qemu_bh_cancel")]
    pub fn cancel(&self) {
        cancel(self.inner());
    }

    /// Whether a call is scheduled and not yet dequeued.
    pub fn is_scheduled(&self) -> bool {
        // ORDERING: Relaxed, a snapshot.
        self.inner().flags.load(Ordering::Relaxed) & BH_SCHEDULED != 0
    }

    /// Delete the BH (the same as dropping it): the callback is never called again (except, for a
    /// `Remote` BH deleted on another thread, a call the loop dequeued before), and its closure is
    /// dropped (a `Local` one at once on the home thread, or when its running call returns).
    #[doc(alias = "qemu_bh_delete")]
    pub fn delete(self) {}
}

impl Bh<Local> {
    /// A `Send + Sync + Clone` handle that schedules this BH from any thread (a waker's half): the
    /// callback stays on the home thread. Once the `Bh` is deleted, [`BhScheduler::schedule`] does
    /// nothing and returns false.
    ///
    /// A schedule through it takes a per-BH lock (against the owner's delete, which may free the BH);
    /// [`Bh<Remote>`](Bh) schedules without one.
    pub fn scheduler(&self) -> BhScheduler {
        let slot = self.sched.get_or_init(|| {
            Arc::new(SchedSlot { bh: Mutex::new(Some(SendPtr(self.inner))), ctx: self.ctx.clone() })
        });
        BhScheduler { slot: slot.clone() }
    }

    /// A BH whose closure is made from its own schedule handle (a task's waker holds it).
    pub(crate) fn new_cyclic<C>(ctx: Arc<Shared>, f: impl FnOnce(BhScheduler) -> C) -> Bh
    where
        C: FnMut(&BhRef<'_>) + 'static,
    {
        let bh = Bh::new(ctx, noop());
        let cb: Callback = Box::new(f(bh.scheduler()));
        // SAFETY: home thread (a `Local` BH is created there); the BH was never scheduled, so its
        // callback is not running and no other thread reaches `cb`.
        bh.inner().cb.with_mut(|c| unsafe { *c = cb });
        bh
    }
}

impl<K: Kind> Drop for Bh<K> {
    /// `qemu_bh_delete` = `enqueue(DELETED)`: the callback is never called again (except a call the
    /// loop dequeued before), and the loop frees the BH. This handle never touches it again.
    fn drop(&mut self) {
        if let Some(slot) = self.sched.get() {
            // No schedule handle reaches the BH after this: the enqueue below may let the loop free it.
            *slot.bh.lock() = None;
        }
        if K::LOCAL {
            // A `Local` closure must not outlive this (home) thread's hold on the BH: after the
            // enqueue below, the BH may be freed wherever the context's shared half is dropped.
            drop_callback(self.inner.as_ptr());
        }
        enqueue(self.ctx.bh_list(), self.ctx.notify(), self.inner.as_ptr(), BH_DELETED);
    }
}

/// Take the callback out of `p` and drop it, or, if it is running further up the stack (deleted from
/// inside itself), mark it to be dropped when that call returns. Home thread only.
fn drop_callback(p: *mut BhInner) {
    // SAFETY:
    // - `p` is alive: its owner (the caller, or the running call of `BhRef`) holds it;
    // - home thread (the caller: a `Local` owner is `!Send`; a `BhRef` exists only inside a call);
    //   `cb` is touched only when not RUNNING.
    let take = unsafe {
        home(p, |h| {
            if (*h).st & RUNNING != 0 {
                (*h).st |= DEAD;
                false
            } else if (*h).st & GONE == 0 {
                (*h).st |= GONE;
                true
            } else {
                false
            }
        })
    };
    // SAFETY: as above; not RUNNING.
    let cb = take.then(|| unsafe { take_cb(p) });
    drop(cb); // outside the cell: the closure's drop may run user code
}

/// The raw pointer of a `Local` BH, held by its [`BhScheduler`]s.
struct SendPtr(NonNull<BhInner>);
// SAFETY: a scheduler only schedules (atomics, under `SchedSlot::bh`'s lock); it never touches the
// callback, which stays on the home thread.
unsafe impl Send for SendPtr {}

struct SchedSlot {
    /// The BH while its owner lives: the owner's drop sets it to None before deleting it.
    bh: Mutex<Option<SendPtr>>,
    ctx: Arc<Shared>,
}

/// Schedules a `Local` [`Bh`] from any thread (see [`Bh::scheduler`]): `Send + Sync + Clone`, and
/// harmless once the BH is deleted.
#[derive(Clone)]
pub struct BhScheduler {
    slot: Arc<SchedSlot>,
}

impl std::fmt::Debug for BhScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BhScheduler").field("alive", &self.slot.bh.lock().is_some()).finish()
    }
}

impl BhScheduler {
    /// [`Bh::schedule`], from any thread. Returns false (and does nothing) if the BH was deleted.
    pub fn schedule(&self) -> bool {
        let g = self.slot.bh.lock();
        match &*g {
            Some(p) => {
                // Under the lock: the owner's drop (which lets the loop free the BH) waits for it.
                let ctx = &self.slot.ctx;
                enqueue(ctx.bh_list(), ctx.notify(), p.0.as_ptr(), BH_SCHEDULED);
                true
            }
            None => false,
        }
    }
}

/// A callback's view of its own BH, valid for the duration of the call.
pub struct BhRef<'a> {
    bh: *mut BhInner,
    ctx: &'a AioContext,
}

impl std::fmt::Debug for BhRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BhRef").finish_non_exhaustive()
    }
}

impl<'a> BhRef<'a> {
    fn inner(&self) -> &BhInner {
        // SAFETY: a BH is not freed while its callback runs (`call`), and a `BhRef` lives only for it.
        unsafe { &*self.bh }
    }

    /// Schedule this BH again: it runs in a later poll (never re-entered by a nested one).
    #[doc(alias = "qemu_bh_schedule")]
    pub fn schedule(&self) {
        let s = self.ctx.shared();
        enqueue(s.bh_list(), s.notify(), self.bh, BH_SCHEDULED);
    }

    /// [`Bh::schedule_idle`] on this BH.
    pub fn schedule_idle(&self) {
        let s = self.ctx.shared();
        enqueue(s.bh_list(), s.notify(), self.bh, BH_SCHEDULED | BH_IDLE);
    }

    /// Cancel a pending call of this BH (one scheduled since this call was dequeued).
    pub fn cancel(&self) {
        cancel(self.inner());
    }

    /// Whether a further call is scheduled.
    pub fn is_scheduled(&self) -> bool {
        // ORDERING: Relaxed, a snapshot.
        self.inner().flags.load(Ordering::Relaxed) & BH_SCHEDULED != 0
    }

    /// Delete this BH from inside its callback: cancelled, never called again, its closure dropped
    /// when this call returns. The owner's [`Bh`] stays valid (its schedules then do nothing) and frees
    /// the memory when dropped.
    #[doc(alias = "qemu_bh_delete")]
    pub fn delete(&self) {
        cancel(self.inner());
        drop_callback(self.bh); // RUNNING: marks it DEAD
    }

    /// The context running the callback (for a nested poll, or to create more work on it).
    pub fn context(&self) -> &'a AioContext {
        self.ctx
    }
}

/// `qemu_bh_cancel`: clear SCHEDULED.
#[inline]
fn cancel(b: &BhInner) {
    // ORDERING: Relaxed: cancellation publishes nothing; the loop may or may not see it.
    // Model: bh.pml#bh_cancel
    crate::traced!(Step::BhCancel,
        let old = b.flags.fetch_and(!BH_SCHEDULED, Ordering::Relaxed);
        bh_flags = old & !BH_SCHEDULED, bh_flags_old = old);
    let _ = old;
}

/// Schedule a callback to run once on the home thread, then free it.
pub(crate) fn oneshot(
    list: &AtomicPtr<BhInner>,
    notify: &NotifyState,
    cb: impl FnOnce() + 'static,
) {
    let mut cb = Some(cb);
    let inner = BhInner::alloc(
        Box::new(move |_: &BhRef<'_>| {
            if let Some(f) = cb.take() {
                f()
            }
        }),
        0,
    );
    enqueue(list, notify, inner.as_ptr(), BH_SCHEDULED | BH_ONESHOT);
}

/// `aio_bh_enqueue`: set the flags; the thread that set PENDING pushes; always notify.
///
/// After the `fetch_or`, `bh` may be dequeued and (if DELETED or ONESHOT) freed by the home thread at
/// any moment, unless this thread just set PENDING: then nothing else can reach it until the push.
#[inline]
fn enqueue(list: &AtomicPtr<BhInner>, notify: &NotifyState, bh: *mut BhInner, new: u32) {
    // SAFETY: the caller holds the BH (its owner, or a fresh oneshot): it is allocated.
    let b = unsafe { &*bh };
    // ORDERING: AcqRel. Release: whatever the caller wrote before scheduling is visible to the loop's
    // AcqRel dequeue that reads this SCHEDULED bit. Acquire: if PENDING was clear, the loop's read of
    // `next` (before its dequeue cleared PENDING) happened before our write of `next` below.
    // Pairs with the fetch_and in `HomeBhs::poll`. Model: bh.pml#bh_schedule_flags
    // (The owner's drop is `enqueue(DELETED)`: recorded as the delete step.)
    // (Without the `trace` feature `step` is only type-checked: the compiler drops it.)
    let step = if new & BH_DELETED != 0 { Step::BhDelete } else { Step::BhScheduleFlags };
    crate::traced!(step, let old = b.flags.fetch_or(BH_PENDING | new, Ordering::AcqRel);
        bh_flags = old | BH_PENDING | new, bh_flags_old = old);
    if old & BH_PENDING == 0 {
        crate::traced!(Step::BhSchedulePush, push(list, b, bh); bh_list = 1);
    }
    // `b` is not touched after the push: from here the loop may free it.
    notify.notify();
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

/// Length of a taken list (trace builds only; under loom / shuttle the step records
/// [`NOT_COUNTED`] instead).
#[cfg(feature = "trace")]
fn count(mut p: *const BhInner) -> i64 {
    let mut n = 0;
    while !p.is_null() {
        n += 1;
        // SAFETY: as in `classify`.
        // ORDERING: Relaxed: home thread, after the Acquire swap that took this list.
        p = unsafe { &*p }.next.load(Ordering::Relaxed);
    }
    n
}

/// The `count` of a `bh_poll_take` step under loom / shuttle: not counted. Walking the list is one
/// facade load per BH, a scheduling point each: a trace build would explore other executions than
/// the build it explains (shuttle's PCT missed `task_clears_woken_after_poll` so). The dequeues that
/// follow show the count.
#[cfg(feature = "trace")]
const NOT_COUNTED: i64 = -1;

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

    /// Is a call pending (in `list`, the context's `bh_list`, or in an outer slice)?
    pub(crate) fn pending(&self, list: &AtomicPtr<BhInner>) -> Pending {
        let acc = classify(self.queue.get(), Pending::None);
        if acc == Pending::Busy {
            return acc;
        }
        // ORDERING: Acquire: pairs with the Release push, so the node's fields are visible.
        classify(list.load(Ordering::Acquire), acc)
    }

    /// `aio_bh_poll`: take `list` (the context's `bh_list`) as a new slice behind the outer ones,
    /// then run the queue; the callbacks get `home_ctx`. Returns true if a non-idle BH was called.
    #[inline(always)] // three callers; inlined, the common one-BH slice costs no call frame
    pub(crate) fn poll(&self, list: &AtomicPtr<BhInner>, home_ctx: &AioContext) -> bool {
        // ORDERING: Acquire: pairs with the Release CAS in `push`: each node's `next` and the state
        // its scheduler published are visible. Model: bh.pml#bh_poll_take
        crate::traced!(Step::BhPollTake,
            let taken = list.swap(ptr::null_mut(), Ordering::Acquire);
            bh_list = 0, bh_list_old = !taken.is_null(),
            count = if cfg!(any(aioctx_loom, aioctx_shuttle)) { NOT_COUNTED } else { count(taken) });
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
                if call(home_ctx, p, f) && f & BH_IDLE == 0 {
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
    pub(crate) fn drop_all(&self, list: &AtomicPtr<BhInner>) {
        let mut p = self.queue.replace(ptr::null_mut());
        // ORDERING: Acquire, as in `poll`.
        let mut l = list.swap(ptr::null_mut(), Ordering::Acquire);
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
    //   no list holds it; `cb` is not touched.
    let running = unsafe {
        home(p, |h| {
            let r = (*h).st & RUNNING != 0;
            if r {
                (*h).st |= FREE_ON_RETURN;
            }
            r
        })
    };
    if !running {
        // SAFETY: as above, and its callback is not running.
        unsafe { BhInner::free(p) };
    }
}

/// Whether `bh`'s callback is running further up the stack. Home thread only.
#[inline]
fn is_running(bh: &BhInner) -> bool {
    // SAFETY:
    // - `home` is accessed only on the home thread (the caller), through short raw-pointer accesses;
    //   `cb` is not touched.
    bh.home.with(|h| unsafe { (*h).st } & RUNNING != 0)
}

/// Run `p`'s callback (dequeued with flags `f`) unless it is already running further up the stack (a
/// nested poll from inside its own callback): then it is deferred (see `defer`) and runs in a poll
/// after the outer call returned. Frees the BH afterwards if it is a oneshot or was deleted
/// meanwhile. Returns whether the callback was called.
#[inline]
fn call(ctx: &AioContext, p: *mut BhInner, f: u32) -> bool {
    // SAFETY: (each `home` access here)
    // - `p` was just dequeued by the home thread (this thread); only this thread frees it, and not
    //   while RUNNING is set, so it is alive for this whole function;
    // - the callback is borrowed only for the duration of the call, and nothing touches `cb`
    //   while RUNNING (a nested poll defers it; a delete only marks it DEAD).
    let st = unsafe { home(p, |h| (*h).st) };
    if st != 0 {
        return call_rare(p, f, st);
    }
    /// The call: the callback's view of itself, and on return (or unwind) the end of the call.
    struct Call<'a>(BhRef<'a>, u32);
    impl Drop for Call<'_> {
        #[inline]
        fn drop(&mut self) {
            let p = self.0.bh;
            // SAFETY: as in `call`; runs on return and on unwind. The call is over: `cb` is free.
            let st = unsafe {
                home(p, |h| {
                    let st = (*h).st;
                    (*h).st = 0;
                    st
                })
            };
            if st != RUNNING {
                done_rare(self.0.ctx.shared().bh_list(), p, st, self.1 & BH_ONESHOT != 0);
            } else if self.1 & BH_ONESHOT != 0 {
                // SAFETY: dequeued with ONESHOT; the call is over.
                unsafe { BhInner::free(p) };
            }
        }
    }
    // SAFETY: as above.
    unsafe { home(p, |h| (*h).st = RUNNING) };
    let call = Call(BhRef { bh: p, ctx }, f);
    // SAFETY: as above; RUNNING makes this the only live &mut to the callback (the field `cb` only:
    // `BhRef` methods touch `st` through the raw pointer).
    unsafe { &(*p).cb }.with_mut(|cb| unsafe { (*cb)(&call.0) });
    true
}

/// `call` of a BH whose home state is not 0: running further up the stack (defer it), or its closure
/// was dropped (nothing to call, not progress; a oneshot always has its closure).
#[cold]
fn call_rare(p: *mut BhInner, f: u32, st: u8) -> bool {
    if st & RUNNING != 0 {
        defer(p, f);
    } else {
        debug_assert!(st == GONE && f & BH_ONESHOT == 0, "home state {st:#x}, flags {f:#x}");
    }
    false
}

/// The end of a call whose home state (before it was reset to 0) was not just RUNNING.
#[cold]
fn done_rare(list: &AtomicPtr<BhInner>, p: *mut BhInner, st: u8, oneshot: bool) {
    let mut keep = st & GONE;
    if st & (DEAD | GONE) == DEAD {
        // Deleted while running (by `BhRef::delete` or a `Local` owner's drop): drop the closure
        // now, on this (home) thread, outside the cell (its drop may run user code; a deferred BH is
        // PENDING, so an owner dropped by it only marks it DELETED).
        // SAFETY: as in `call`; the call is over.
        let cb = unsafe { take_cb(p) };
        keep = GONE;
        // SAFETY: as above.
        unsafe { home(p, |h| (*h).st |= keep) };
        drop(cb);
    } else {
        // SAFETY: as above.
        unsafe { home(p, |h| (*h).st |= keep) };
    }
    if st & DEFERRED != 0 {
        // A deferred BH is PENDING and on no list, so no poll dequeued it meanwhile (it cannot have
        // been freed by one) and it is neither a oneshot nor marked to free.
        debug_assert!(st & FREE_ON_RETURN == 0 && !oneshot);
        resume(list, p);
    } else if st & FREE_ON_RETURN != 0 || oneshot {
        // SAFETY: DELETED by a nested poll, or a oneshot; the call is over.
        unsafe { BhInner::free(p) };
    }
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
        // SAFETY: as in `call` (`cb` is not touched).
        unsafe { home(p, |h| (*h).st |= DEFERRED) };
    }
    // Otherwise another thread scheduled (or deleted) it after our dequeue and pushed it: it is on
    // `bh_list`, where `classify` ignores it while it runs, and a later poll dequeues it again.
}

/// The callback of a deferred BH returned: push it on `bh_list` (it is PENDING and ours), so the next
/// poll dequeues it: it is called if still SCHEDULED (a cancel in between is obeyed), freed if its
/// owner dropped it meanwhile. No notify: only the home thread (this one) dequeues, and its next
/// timeout computation sees the BH on the list.
#[cold]
fn resume(list: &AtomicPtr<BhInner>, p: *mut BhInner) {
    // SAFETY: as in `call`: `p` is alive, PENDING and on no list.
    let b = unsafe { &*p };
    crate::traced!(Step::BhSchedulePush, push(list, b, p); bh_list = 1);
}
