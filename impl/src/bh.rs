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
//! | `flags & BH_DELETED` | the owner's drop | never | free without calling |
//! | `bh_list` | push (any thread, CAS) | take-all swap (home) | lock-free LIFO |
//!
//! The list holds one strong reference per queued BH, so a BH is never freed while queued and never
//! touched after the reference taken for its call is dropped (QEMU's re-entrancy-guard use-after-free,
//! bug-history B19, cannot happen). Push-only plus take-all has no ABA problem.
//!
//! Slices: `poll_bhs` moves the whole list to the home thread's queue and processes it from the front;
//! a nested poll (from a callback) finishes what is left of the outer slice first, as QEMU does. A BH
//! scheduled from its own callback is pushed to `bh_list` again and runs in the next poll. Order within
//! a slice is LIFO today and **not** part of the API.
//!
//! # Model
//!
//! `promela/bh.pml` (schedule/cancel/delete against poll), loom scenario
//! `bh_schedule_vs_blocking_poll` in `model/tests/bh.rs`.
//!
//! # Upstream
//!
//! QEMU util/async.c: `aio_bh_enqueue`, `aio_bh_dequeue`, `aio_bh_poll`, `qemu_bh_schedule`,
//! `qemu_bh_cancel`, `qemu_bh_delete`, `aio_bh_schedule_oneshot`, `aio_compute_bh_timeout`.

use std::ptr;

use crate::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use crate::sync::{Arc, UnsafeCell};
use crate::trace::bh_flags::*;
#[allow(unused_imports)] // used by trace_step!/traced! when the `trace` feature is on
use crate::trace::Step;
use crate::Shared;

type Callback = Box<dyn FnMut() + Send + 'static>;

/// The shared part of a bottom half.
pub(crate) struct BhInner {
    flags: AtomicU32,
    /// Link in `bh_list` or in the home thread's slice queue. Written by the thread that set PENDING
    /// (before its push), read by the home thread (before it clears PENDING).
    next: AtomicPtr<BhInner>,
    /// Home thread only: the callback.
    cb: UnsafeCell<Callback>,
    /// Home thread only: the callback is running (a nested poll must not re-enter it).
    running: UnsafeCell<bool>,
}

// SAFETY:
// - the callback is `Send`, so the BH may be dropped on any thread;
// - `cb` and `running` are accessed only by the home thread (`HomeBhs::poll` / `call`); other threads
//   touch only the atomics `flags` and `next` (under the PENDING hand-off protocol above).
unsafe impl Send for BhInner {}
// SAFETY: see the Send impl above.
unsafe impl Sync for BhInner {}

impl BhInner {
    fn new(cb: Callback, flags: u32) -> Arc<Self> {
        Arc::new(BhInner {
            flags: AtomicU32::new(flags),
            next: AtomicPtr::new(ptr::null_mut()),
            cb: UnsafeCell::new(cb),
            running: UnsafeCell::new(false),
        })
    }
}

/// A bottom half: a callback that any thread can schedule to run once on the context's home thread.
///
/// Scheduling an already-scheduled BH is a no-op (it runs once). Dropping the `Bh` deletes it: a
/// pending call is cancelled and its memory freed by the loop (QEMU `qemu_bh_delete`). A drop on
/// another thread races with the loop: a call the loop has already dequeued may still run (never one
/// dequeued after the drop; `promela/bh.pml` checks exactly this). `Bh` is
/// `Send + Sync`; share it with `Arc` to schedule from several threads.
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
    inner: Arc<BhInner>,
    ctx: Arc<Shared>,
}

impl std::fmt::Debug for Bh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ORDERING: Relaxed, diagnostic only.
        f.debug_struct("Bh").field("flags", &self.inner.flags.load(Ordering::Relaxed)).finish()
    }
}

impl Bh {
    pub(crate) fn new(ctx: Arc<Shared>, cb: Callback) -> Bh {
        Bh { inner: BhInner::new(cb, 0), ctx }
    }

    /// Run the callback once in the home thread's next poll. Any thread; always notifies. (As in QEMU,
    /// scheduling a BH that is pending as idle keeps it idle until it runs.)
    #[doc(alias = "qemu_bh_schedule")]
    pub fn schedule(&self) {
        enqueue(&self.ctx, &self.inner, BH_SCHEDULED);
    }

    /// As [`Bh::schedule`], but the call is not progress, and a pending idle BH only caps the wait
    /// at 10 ms instead of making the poll non-blocking.
    #[doc(alias = "qemu_bh_schedule_idle")]
    pub fn schedule_idle(&self) {
        enqueue(&self.ctx, &self.inner, BH_SCHEDULED | BH_IDLE);
    }

    /// Cancel a pending call (no notify). Racy against the loop unless called on the home thread: the
    /// callback may already be running.
    #[doc(alias = "qemu_bh_cancel")]
    pub fn cancel(&self) {
        // ORDERING: Relaxed: cancellation publishes nothing; the loop may or may not see it.
        // Model: bh.pml#bh_cancel
        crate::traced!(Step::BhCancel, let old = self.inner.flags.fetch_and(!BH_SCHEDULED, Ordering::Relaxed);
            bh_flags = old & !BH_SCHEDULED);
        let _ = old;
    }

    /// Whether a call is scheduled and not yet dequeued.
    pub fn is_scheduled(&self) -> bool {
        // ORDERING: Relaxed, a snapshot.
        self.inner.flags.load(Ordering::Relaxed) & BH_SCHEDULED != 0
    }
}

impl Drop for Bh {
    /// `qemu_bh_delete`: the callback is never called again. If the BH is queued, the loop frees it
    /// when it dequeues it; otherwise it is freed here. Nobody else can schedule it concurrently (this
    /// was the last handle), so no push and no notify are needed.
    fn drop(&mut self) {
        // ORDERING: Release: the loop's AcqRel dequeue that sees DELETED also sees everything this
        // thread did before dropping the handle. Model: bh.pml#bh_delete
        crate::traced!(Step::BhDelete, let old = self.inner.flags.fetch_or(BH_DELETED, Ordering::Release);
            bh_flags = old | BH_DELETED);
        let _ = old;
    }
}

/// Schedule a callback to run once on the home thread, then free it.
pub(crate) fn oneshot(ctx: &Arc<Shared>, cb: impl FnOnce() + Send + 'static) {
    let mut cb = Some(cb);
    let inner = BhInner::new(
        Box::new(move || {
            if let Some(f) = cb.take() {
                f()
            }
        }),
        0,
    );
    enqueue(ctx, &inner, BH_SCHEDULED | BH_ONESHOT);
}

/// `aio_bh_enqueue`: set the flags; the thread that set PENDING pushes; always notify.
fn enqueue(ctx: &Shared, bh: &Arc<BhInner>, new: u32) {
    // ORDERING: AcqRel. Release: whatever the caller wrote before scheduling is visible to the loop's
    // AcqRel dequeue that reads this SCHEDULED bit. Acquire: if PENDING was clear, the loop's read of
    // `next` (before its dequeue cleared PENDING) happened before our write of `next` below.
    // Pairs with the fetch_and in `HomeBhs::poll`. Model: bh.pml#bh_schedule_flags
    crate::traced!(Step::BhScheduleFlags, let old = bh.flags.fetch_or(BH_PENDING | new, Ordering::AcqRel);
        bh_flags = old | BH_PENDING | new);
    if old & BH_PENDING == 0 {
        let raw = Arc::into_raw(bh.clone()) as *mut BhInner;
        crate::traced!(Step::BhSchedulePush, push(&ctx.bh_list, bh, raw); bh_list = 1);
    }
    ctx.notify.notify();
}

/// Push `raw` (which is `bh`) on the lock-free LIFO.
#[inline]
fn push(list: &AtomicPtr<BhInner>, bh: &BhInner, raw: *mut BhInner) {
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
        // - every node reachable from bh_list or the slice queue holds a strong reference owned by
        //   that list, and only the home thread (the caller) removes nodes, so `p` is alive.
        let bh = unsafe { &*p };
        // ORDERING: Relaxed: a hint for the timeout; a BH scheduled concurrently also notifies.
        let f = bh.flags.load(Ordering::Relaxed);
        if f & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED {
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
        // SAFETY: as in `classify`: the taken list owns a reference to each node.
        p = unsafe { &*p }.next.load(Ordering::Relaxed);
    }
    n
}

/// The home thread's side: the queue of taken slices.
#[derive(Debug)]
pub(crate) struct HomeBhs {
    /// Front of the queue of dequeued-to-be slices (outer slices first). Home thread only.
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
    pub(crate) fn poll(&self, ctx: &Shared) -> bool {
        // ORDERING: Acquire: pairs with the Release CAS in `enqueue`: each node's `next` and the
        // state its scheduler published are visible. Model: bh.pml#bh_poll_take
        crate::traced!(Step::BhPollTake, let taken = ctx.bh_list.swap(ptr::null_mut(), Ordering::Acquire);
            bh_list = 0, count = count(taken));
        if !taken.is_null() {
            let front = self.queue.get();
            if front.is_null() {
                self.queue.set(taken);
            } else {
                // Nested poll with an outer slice still queued: append behind it.
                let mut p = front;
                loop {
                    // SAFETY:
                    // - `p` is in the home queue, which owns a strong reference to it.
                    let next = unsafe { &*p }.next.load(Ordering::Relaxed);
                    if next.is_null() {
                        break;
                    }
                    p = next;
                }
                // SAFETY: as above; PENDING is still set on `p`, so only we write its `next`.
                unsafe { &*p }.next.store(taken, Ordering::Relaxed);
            }
        }

        let mut progress = false;
        loop {
            let p = self.queue.get();
            if p.is_null() {
                break;
            }
            // SAFETY:
            // - `p` came from `Arc::into_raw` in `enqueue`; the queue owned that reference and we take
            //   it over here (the node leaves the queue in the next statement).
            let bh = unsafe { Arc::from_raw(p as *const BhInner) };
            // Read `next` before clearing PENDING: once PENDING is clear a scheduler may rewrite it.
            self.queue.set(bh.next.load(Ordering::Relaxed));
            // ORDERING: AcqRel. Acquire: pairs with the AcqRel fetch_or in `enqueue` (the scheduler's
            // writes are visible to the callback). Release: our read of `next` happens before a
            // re-push writes it. Model: bh.pml#bh_poll_dequeue
            crate::traced!(Step::BhPollDequeue,
                let f = bh.flags.fetch_and(!(BH_PENDING | BH_SCHEDULED | BH_IDLE), Ordering::AcqRel);
                bh_flags = f);
            if f & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED {
                if f & BH_IDLE == 0 {
                    progress = true;
                }
                crate::trace_step!(Step::BhPollCall);
                call(ctx, &bh);
            }
            // Dropping `bh` releases the queue's reference: a oneshot or deleted BH is freed here.
        }
        progress
    }

    /// Drop every queued BH without calling it (the context is going away).
    pub(crate) fn drop_all(&self, ctx: &Shared) {
        let mut p = self.queue.replace(ptr::null_mut());
        // ORDERING: Acquire, as in `poll`.
        let mut l = ctx.bh_list.swap(ptr::null_mut(), Ordering::Acquire);
        for _ in 0..2 {
            while !p.is_null() {
                // SAFETY: as in `poll`: the list's reference is taken over and dropped.
                let bh = unsafe { Arc::from_raw(p as *const BhInner) };
                p = bh.next.load(Ordering::Relaxed);
                bh.flags.fetch_and(!BH_PENDING, Ordering::AcqRel);
            }
            p = std::mem::replace(&mut l, ptr::null_mut());
        }
    }
}

/// Run `bh`'s callback unless it is already running further up the stack (a nested poll from inside
/// its own callback): then it is enqueued again and runs in a poll after the outer call returned.
fn call(ctx: &Shared, bh: &Arc<BhInner>) {
    // SAFETY:
    // - `running` and `cb` are only accessed on the home thread (HomeBhs is !Sync and owned by the
    //   !Send AioContext);
    // - no reference into either is held across the callback: `running` is read and written through
    //   short raw-pointer accesses, and a nested poll never borrows `cb` while `running` is set.
    let running = bh.running.with(|r| unsafe { *r });
    if running {
        enqueue(ctx, bh, BH_SCHEDULED);
        return;
    }
    struct Reset<'a>(&'a BhInner);
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            // SAFETY: home thread, no outstanding borrow (see `call`).
            self.0.running.with_mut(|r| unsafe { *r = false });
        }
    }
    // SAFETY: see above.
    bh.running.with_mut(|r| unsafe { *r = true });
    let _reset = Reset(bh);
    // SAFETY: see above; `running` makes this the only live &mut to the callback.
    bh.cb.with_mut(|c| unsafe { (*c)() });
}
