//! Futures on the context: [`AioContext::spawn_local`], [`AioContext::block_on`], fd readiness
//! ([`AsyncFd`]) and timers ([`sleep`], [`sleep_until`], [`timeout`]) — QEMU's coroutines, as Rust
//! futures.
//!
//! # A task is a bottom half
//!
//! [`AioContext::spawn_local`] wraps a `!Send` future in a [`Local`](crate::Local) BH whose callback
//! polls it. The task's [`Waker`] schedules that BH, so a wake is exactly a BH schedule:
//!
//! - from any thread, it costs no syscall while the loop is busy, and the protocol's one eventfd
//!   write when the loop sleeps (docs/protocol.md §2: the waker takes the same notify path);
//! - a wake while the task is being polled schedules it again (it runs in the next poll, never
//!   re-entered: the BH re-entrancy rule);
//! - repeated wakes before the task runs cost one atomic swap each (a `woken` flag in front of the
//!   BH's schedule, cleared by the task *before* it polls the future, so a wake racing the poll is
//!   never absorbed: `aioctx_bug = "task_clears_woken_after_poll"` plants the opposite order, which
//!   loses wake-ups, and loom and shuttle catch it: model/tests/*_task.rs);
//! - waking a finished, cancelled or dropped task does nothing (the BH is deleted; the waker keeps
//!   only the BH's schedule slot alive, not the future).
//!
//! The future lives in the BH's closure, so it is polled and dropped only on the home thread: when it
//! completes (at once, inside its last poll), when it is cancelled ([`JoinHandle::cancel`]), or when
//! the context is dropped — wherever its wakers are.
//!
//! # Re-entrancy
//!
//! A task is never polled re-entrantly. [`AioContext::block_on`] inside a task (or inside any
//! callback) is a nested poll: it runs other BHs, handlers, timers and tasks, not the task that
//! called it (that one runs again in a poll after it returned, if it was woken).
//!
//! # Upstream
//!
//! QEMU util/qemu-coroutine.c and include/block/aio-wait.h (`AIO_WAIT_WHILE`: a loop of nested
//! `aio_poll(ctx, true)`, as `block_on` is), util/async.c `aio_co_wake` / `aio_co_schedule` (a
//! coroutine woken from another thread is scheduled through a BH of its home context).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::bh::{Bh, BhRef, BhScheduler};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;
use crate::AioContext;

mod io;
mod time;

pub use io::{AsyncFd, Readable, Writable};
pub use time::{sleep, sleep_until, timeout, Elapsed, Sleep, Timeout};

/// The waker's shared half: the task's BH schedule handle and the `woken` flag in front of it.
struct TaskWaker {
    /// A wake is pending: the BH is scheduled (or about to be) and the task has not yet been polled.
    woken: AtomicBool,
    sched: BhScheduler,
}

impl FacadeWake for TaskWaker {
    fn wake(&self) {
        // ORDERING: Release. Pairs with the swap in `clear`. A wake that finds `woken` set
        // (coalesced: it schedules nothing) publishes what the waker wrote before it only through
        // this store, to the task's clear (an Acquire RMW that reads it, or a later value of its
        // release sequence). Reading `false` needs no Acquire: the schedule that follows publishes
        // through the BH's own flags, and the waker reads nothing the task wrote. (mutants/CLAIMS: loom's task_wakes_publish kills
        // `task::wake::swap#1:ord0=Relaxed`.)
        if !self.woken.swap(true, Ordering::Release) {
            self.sched.schedule();
        }
    }
}

impl TaskWaker {
    /// Called by the task before each poll of its future: a wake from now on schedules it again.
    fn clear(&self) {
        // ORDERING: Acquire. Pairs with the swap in `wake`. So the poll that follows sees what a
        // coalesced wake published. An RMW, so it reads the latest wake in modification order: a
        // wake after it reads `false` and schedules again. (mutants/CLAIMS: loom's task_wakes_publish
        // kills `task::clear::swap#1:ord0=Relaxed`.)
        self.woken.swap(false, Ordering::Acquire);
    }
}

/// A waker over the sync facade's `Arc` (so loom sees the reference counts; std's `Wake` trait
/// needs std's `Arc`): a task's and `block_on`'s.
trait FacadeWake: Send + Sync + Sized + 'static {
    fn wake(&self);
}

/// The waker of `this` (one more reference, given to the waker).
fn facade_waker<W: FacadeWake>(this: &Arc<W>) -> Waker {
    let p = Arc::into_raw(this.clone()).cast::<()>();
    // SAFETY: `vtable::<W>`'s functions treat the pointer as an `Arc<W>` reference owned by the
    // waker, and `p` is one.
    unsafe { Waker::from_raw(RawWaker::new(p, vtable::<W>())) }
}

fn vtable<W: FacadeWake>() -> &'static RawWakerVTable {
    &RawWakerVTable::new(
        |p| {
            // SAFETY: `p` is a live `Arc<W>` reference owned by the waker being cloned; it is not
            // given back (ManuallyDrop), only cloned.
            let a = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(p.cast::<W>()) });
            RawWaker::new(Arc::into_raw(Arc::clone(&a)).cast::<()>(), vtable::<W>())
        },
        |p| {
            // SAFETY: `wake` consumes the waker's reference.
            unsafe { Arc::from_raw(p.cast::<W>()) }.wake();
        },
        |p| {
            // SAFETY: `p` is a live reference owned by the waker, borrowed for the call.
            unsafe { &*p.cast::<W>() }.wake();
        },
        |p| {
            // SAFETY: `drop` gives the waker's reference back.
            drop(unsafe { Arc::from_raw(p.cast::<W>()) });
        },
    )
}

/// The tasks of one context (home thread only): the owners of their BHs, by slot.
#[derive(Default)]
pub(crate) struct TaskSet {
    slots: RefCell<Vec<Option<Bh>>>,
    free: RefCell<Vec<usize>>,
}

impl TaskSet {
    fn insert(&self, bh: Bh) -> usize {
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(bh);
                i
            }
            None => {
                slots.push(Some(bh));
                slots.len() - 1
            }
        }
    }

    /// The BH of slot `i`, out of the set (the caller drops it outside the borrow: dropping a BH
    /// drops its future, which is user code).
    fn remove(&self, i: usize) -> Option<Bh> {
        let bh = self.slots.borrow_mut().get_mut(i).and_then(Option::take);
        if bh.is_some() {
            self.free.borrow_mut().push(i);
        }
        bh
    }

    /// The context's drop: every task's future is dropped, here on the home thread. A future's drop
    /// may cancel another task, so each BH is taken out before it is dropped.
    pub(crate) fn drop_all(&self) {
        loop {
            let next = {
                let mut slots = self.slots.borrow_mut();
                slots.iter_mut().find_map(Option::take)
            };
            match next {
                Some(bh) => drop(bh),
                None => break,
            }
        }
        self.free.borrow_mut().clear();
        self.slots.borrow_mut().clear();
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Done,
    Cancelled,
}

/// What a task and its [`JoinHandle`] share (home thread only).
struct JoinState<T> {
    status: Cell<Status>,
    /// The task's slot in its context's [`TaskSet`] while `Running`.
    slot: Cell<usize>,
    out: Cell<Option<T>>,
    joiner: Cell<Option<Waker>>,
}

impl<T> JoinState<T> {
    /// Running → `to`: the output (if any) is kept and the joiner woken. Returns false if the task
    /// had already finished (then nothing changes).
    fn finish(&self, to: Status, out: Option<T>) -> bool {
        if self.status.get() != Status::Running {
            return false;
        }
        self.status.set(to);
        self.out.set(out);
        if let Some(w) = self.joiner.take() {
            w.wake();
        }
        true
    }
}

/// The state a task's BH closure owns: the future, and its side of the join state. Dropping it (on
/// the home thread) drops the future; a task dropped before it finished counts as cancelled.
///
/// The future is pinned where it is, in the BH's boxed closure (no box of its own): `spawn_local`
/// moves the body into the closure and the closure into its box before the first poll, and a boxed
/// `dyn FnMut` is never moved out of its box; the box is freed only after the closure is dropped.
struct TaskBody<F: Future> {
    fut: F,
    join: Rc<JoinState<F::Output>>,
    set: Rc<TaskSet>,
    tw: Arc<TaskWaker>,
    waker: Waker,
}

impl<F: Future> TaskBody<F> {
    /// The task's BH callback: one poll of the future.
    fn run(&mut self) {
        if self.join.status.get() != Status::Running {
            return; // defensive: a finished task's BH is deleted and not called again
        }
        let mut cx = Context::from_waker(&self.waker);
        // SAFETY: the future does not move from here until it is dropped (see `TaskBody`).
        let fut = unsafe { Pin::new_unchecked(&mut self.fut) };
        let r = if planted!("task_clears_woken_after_poll") {
            let r = fut.poll(&mut cx);
            self.tw.clear(); // a wake during the poll found `woken` still set: lost
            r
        } else {
            self.tw.clear();
            fut.poll(&mut cx)
        };
        if let Poll::Ready(v) = r {
            if self.join.finish(Status::Done, Some(v)) {
                // Its own slot: the BH is running, so dropping its owner only deletes it; this
                // closure (the future with it) is dropped when this call returns.
                drop(self.set.remove(self.join.slot.get()));
            }
        }
    }
}

impl<F: Future> Drop for TaskBody<F> {
    fn drop(&mut self) {
        // Not finished: cancelled, or its context dropped. The joiner sees it; the future is
        // dropped right after (the fields), on this (home) thread.
        self.join.finish(Status::Cancelled, None);
    }
}

/// The error of a [`JoinHandle`] whose task did not complete: it was cancelled
/// ([`JoinHandle::cancel`]) or its context was dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("task cancelled before it completed")
    }
}

impl std::error::Error for Cancelled {}

/// The handle of a task spawned by [`AioContext::spawn_local`]: await it for the output, or cancel
/// the task. Dropping it detaches the task (it keeps running). `!Send`, like the task: it lives on
/// the home thread.
#[must_use = "dropping a JoinHandle detaches the task; use `let _ =` if that is what you want"]
pub struct JoinHandle<T> {
    join: Rc<JoinState<T>>,
    set: Rc<TaskSet>,
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").field("status", &self.join.status.get()).finish()
    }
}

impl<T> JoinHandle<T> {
    /// Cancel the task: its future is dropped now (or, if the task cancels itself from inside its
    /// own poll, when that poll returns) and never polled again; awaiting this handle then gives
    /// [`Cancelled`]. Returns false if the task had already completed or been cancelled.
    pub fn cancel(&self) -> bool {
        if self.join.status.get() != Status::Running {
            return false;
        }
        self.join.finish(Status::Cancelled, None);
        let bh = self.set.remove(self.join.slot.get());
        drop(bh); // outside the set's borrow: drops the future (user code) unless it is running
        true
    }

    /// Whether the task has completed or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.join.status.get() != Status::Running
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let j = &*self.join;
        match j.status.get() {
            Status::Running => {
                let w = j.joiner.take();
                j.joiner.set(Some(match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                }));
                Poll::Pending
            }
            Status::Done => match j.out.take() {
                Some(v) => Poll::Ready(Ok(v)),
                None => panic!("JoinHandle polled after it returned the output"),
            },
            Status::Cancelled => Poll::Ready(Err(Cancelled)),
        }
    }
}

impl<T> futures_core::FusedFuture for JoinHandle<T> {
    /// After it returned its output or [`Cancelled`].
    fn is_terminated(&self) -> bool {
        let j = &*self.join;
        let out = j.out.take();
        let done = out.is_none() && j.status.get() != Status::Running;
        j.out.set(out);
        done
    }
}

impl AioContext {
    /// Run `fut` on this (home) thread: it is first polled in the next `poll`, and again in a poll
    /// after each wake of its waker (from any thread). `fut` need not be `Send`. See the
    /// [module docs](crate::task) for the costs and the re-entrancy rule.
    ///
    /// # Examples
    ///
    /// ```
    /// # use aioctx::AioContext;
    /// let ctx = AioContext::new()?;
    /// let t = ctx.spawn_local(async {
    ///     aioctx::task::sleep(std::time::Duration::from_millis(1)).await;
    ///     6 * 7
    /// });
    /// assert_eq!(ctx.block_on(t), Ok(42));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "qemu_coroutine_create")]
    #[doc(alias = "aio_co_enter")]
    pub fn spawn_local<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let set = self.tasks().clone();
        let join = Rc::new(JoinState {
            status: Cell::new(Status::Running),
            slot: Cell::new(0),
            out: Cell::new(None),
            joiner: Cell::new(None),
        });
        let bh = self.bh_new_cyclic(|sched| {
            let tw = Arc::new(TaskWaker { woken: AtomicBool::new(true), sched });
            let waker = facade_waker(&tw);
            let mut body = TaskBody { fut, join: join.clone(), set: set.clone(), tw, waker };
            move |_: &BhRef<'_>| body.run()
        });
        bh.schedule();
        join.slot.set(set.insert(bh));
        JoinHandle { join, set }
    }

    /// Poll `fut` to completion on this (home) thread, running the context meanwhile: each round
    /// polls `fut` if it was woken, then runs one `poll(true)` (which sleeps until there is work, or a
    /// wake of `fut` from any thread). Inside a callback or a task this is a nested poll, with the
    /// re-entrancy rules of each kind (the calling callback or task is not re-entered).
    ///
    /// While `fut` is polled, [`AioContext::with_current`] is this context, so [`sleep`],
    /// [`AsyncFd::new`] and the other `task` functions find it.
    #[doc(alias = "AIO_WAIT_WHILE")]
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let flag =
            Arc::new(BlockOnWaker { woken: AtomicBool::new(true), ctx: self.handle().clone() });
        let waker = facade_waker(&flag);
        let mut cx = Context::from_waker(&waker);
        loop {
            // ORDERING: Acquire. Pairs with the swap in `BlockOnWaker::wake`. What the waker
            // published is seen by this poll of `fut` (a second wake that found the flag set did not
            // notify: this is its only publication). (mutants/CLAIMS: loom's block_on_wake_publishes kills
            // `task::block_on::swap#1:ord0=Relaxed`.)
            if flag.woken.swap(false, Ordering::Acquire) {
                let _cur = self.enter_current();
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return v;
                }
            }
            // A wake after the swap above sets `notified` (after its flag) before this poll arms, or
            // finds it armed and writes the eventfd: either way the poll does not sleep through it
            // (docs/protocol.md §2.5).
            self.poll(true);
        }
    }
}

/// `block_on`'s waker: a flag and a notify of the context.
struct BlockOnWaker {
    woken: AtomicBool,
    ctx: crate::Handle,
}

impl FacadeWake for BlockOnWaker {
    fn wake(&self) {
        // ORDERING: Release. Pairs with the swap in `block_on`. Publishes what the waker wrote. The notify's
        // own fences order the flag before its check of `notify_me`. (mutants/CLAIMS: loom's
        // block_on_wake_publishes kills `task::wake::swap#2:ord0=Relaxed`.)
        if !self.woken.swap(true, Ordering::Release) {
            self.ctx.notify();
        }
    }
}

/// [`AioContext::spawn_local`] on the context polling on this thread.
///
/// # Panics
///
/// If no context is polling on this thread (not inside a callback, a task or `block_on`); use
/// [`AioContext::spawn_local`] there.
pub fn spawn_local<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    AioContext::with_current(|c| c.spawn_local(fut)).unwrap_or_else(|| no_context("spawn_local"))
}

#[track_caller]
fn no_context(what: &str) -> ! {
    panic!(
        "aioctx::task::{what} outside a context: call it from a task, a callback or block_on, or \
         use the AioContext method"
    )
}
