//! The REAL syscall path under Miri: a real eventfd (`aioctx::sys::EventFd`) and the epoll backend
//! (`epoll_create1`, `epoll_ctl`, a blocking `epoll_wait`), across real threads. (The ppoll backend
//! runs here only outside Miri: this nightly's Miri supports neither ppoll nor poll(2).) Miri
//! checks for undefined behaviour (use-after-free of a BH that deletes itself or of a oneshot, data
//! races on the non-atomic parts), emulates weak memory on the atomics, and reports a deadlock when
//! every thread is blocked (a lost wakeup: the poller sits in epoll_wait / poll and nobody will
//! write the eventfd).
//!
//! ```text
//! MIRIFLAGS=-Zmiri-many-seeds=0..16 cargo +nightly miri test -p aioctx --test miri
//! ```
//!
//! `ci/miri` runs it over a seed range with the correct build (every seed must pass) and with
//! planted weak-memory bugs (`--cfg aioctx_bug="notify_no_seqcst_fence"`: some seed must deadlock;
//! Miri stops the run with an error, which is not a panic, so these tests carry no `should_panic`).
//!
//! Outside Miri this is an ordinary integration test (std threads, the same assertions).

#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use aioctx::sys::EventFd;
use aioctx::{AioContext, Backend, Bh, FdHandler};

/// The backends these tests run on: epoll, and ppoll outside Miri. Under Miri only epoll: this
/// nightly's Miri has no poll(2) (nor ppoll), and its epoll is edge-triggered only, so the epoll
/// backend registers with EPOLLET under `cfg(miri)` (equivalent for the context's own eventfd,
/// which is drained whenever a wait reports it; see `fdmon/epoll.rs`).
fn backends() -> Vec<(&'static str, Backend)> {
    let mut v = vec![("epoll", Backend::Epoll)];
    if !cfg!(miri) {
        v.push(("ppoll", Backend::Ppoll));
    }
    v
}

fn ctx(b: &Backend) -> AioContext {
    AioContext::builder().backend(b.clone()).build().expect("context")
}

/// The eventfd itself: set on one thread, seen and cleared on another; a second clear finds
/// nothing.
#[test]
fn eventfd_set_on_one_thread_cleared_on_another() {
    let e = Arc::new(EventFd::new().expect("eventfd"));
    let e2 = e.clone();
    thread::spawn(move || e2.set().expect("set")).join().unwrap();
    e.set().expect("a set notifier can be set again");
    assert!(e.test_and_clear().expect("read"), "the set was lost");
    assert!(!e.test_and_clear().expect("read"), "cleared twice");
}

/// A remote notify vs the home thread's blocking poll: the poll returns, and returns false (a
/// notify is not progress). With `notify_no_seqcst_fence` some seeds deadlock here.
#[test]
fn notify_vs_blocking_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let h = ctx.handle().clone();
        let t = thread::spawn(move || h.notify());
        assert!(!ctx.poll(true), "{name}: a bare notify counted as progress");
        t.join().unwrap();
    }
}

/// A BH created on the home thread, scheduled from another thread while the home thread blocks: it
/// runs exactly once, and the poll that ran it returns true.
#[test]
fn bh_scheduled_from_another_thread_vs_blocking_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let bh = Arc::new(ctx.handle().bh_new(move |_| {
            n2.fetch_add(1, Ordering::Relaxed);
        }));
        let bh2 = bh.clone();
        let t = thread::spawn(move || bh2.schedule());
        while n.load(Ordering::Relaxed) == 0 {
            let before = n.load(Ordering::Relaxed);
            let p = ctx.poll(true);
            assert_eq!(p, n.load(Ordering::Relaxed) != before, "{name}: progress");
        }
        t.join().unwrap();
        assert!(!ctx.poll(false), "{name}: the BH ran twice");
        assert_eq!(n.load(Ordering::Relaxed), 1, "{name}: runs");
    }
}

/// A oneshot scheduled from another thread: it runs once on the home thread, and its closure (and
/// what it captured) is freed right after the call (Miri checks nothing touches it afterwards).
#[test]
fn oneshot_from_another_thread_is_freed_after_its_call() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let captured = Arc::new(AtomicUsize::new(0));
        let c2 = captured.clone();
        let h = ctx.handle().clone();
        let t = thread::spawn(move || {
            let payload: Vec<u64> = (0..64).collect(); // heap memory owned by the closure
            h.bh_oneshot(move || {
                assert_eq!(payload.iter().sum::<u64>(), 2016);
                c2.fetch_add(1, Ordering::Relaxed);
            });
        });
        while captured.load(Ordering::Relaxed) == 0 {
            ctx.poll(true);
        }
        t.join().unwrap();
        assert_eq!(Arc::strong_count(&captured), 1, "{name}: the oneshot closure was not freed");
        assert!(!ctx.poll(false), "{name}: the oneshot ran twice");
    }
}

/// A BH whose callback drops its own (last) `Bh` handle: it is deleted while its callback runs. The
/// loop must not touch it after the callback returns except through its own reference (QEMU's
/// re-entrancy-guard use-after-free, bug-history B19); Miri reports any access to freed memory.
#[test]
fn bh_deleting_itself_from_its_callback() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move |_| {
            r2.fetch_add(1, Ordering::Relaxed);
            let me = s2.borrow_mut().take();
            drop(me); // qemu_bh_delete from inside the callback
        });
        bh.schedule();
        *slot.borrow_mut() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(slot.borrow_mut().is_none(), "{name}: the callback did not drop its handle");
        assert!(!ctx.poll(false), "{name}: a deleted BH ran again");
        assert_eq!(runs.load(Ordering::Relaxed), 1, "{name}: runs");
        // Its closure (holding `slot` and `runs`) is gone too.
        assert_eq!(Arc::strong_count(&runs), 1, "{name}: the deleted BH was not freed");
    }
}

/// A BH that reschedules itself and polls nested: the nested poll defers it (PENDING again, on no
/// list) and the callback's return pushes it back, so it runs once more in the next poll, where it
/// drops its own handle. Miri checks the deferred BH's hand-back (no access after a free, no early
/// free).
#[test]
fn bh_deferred_by_a_nested_poll_runs_again_then_deletes_itself() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move |_| {
            if r2.fetch_add(1, Ordering::Relaxed) == 0 {
                s2.borrow_mut().as_ref().unwrap().schedule();
                let nested = AioContext::with_current(|c| c.poll(false)).unwrap();
                assert!(!nested, "the nested poll reported progress for the running BH");
            } else {
                drop(s2.borrow_mut().take());
            }
        });
        bh.schedule();
        *slot.borrow_mut() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(ctx.poll(false), "{name}: the deferred BH did not run again");
        assert!(slot.borrow_mut().is_none(), "{name}: the second call did not drop its handle");
        assert!(!ctx.poll(false), "{name}: a deleted BH ran again");
        assert_eq!(runs.load(Ordering::Relaxed), 2, "{name}: runs");
        assert_eq!(Arc::strong_count(&runs), 1, "{name}: the deleted BH was not freed");
    }
}

/// As above, but the callback drops its own handle right after the nested poll deferred it: the
/// owner's drop finds it PENDING (no push), the callback's return pushes it, and the next poll
/// dequeues it DELETED and frees it without calling it.
#[test]
fn bh_deleted_while_deferred_by_a_nested_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move |_| {
            r2.fetch_add(1, Ordering::Relaxed);
            s2.borrow_mut().as_ref().unwrap().schedule();
            let nested = AioContext::with_current(|c| c.poll(false)).unwrap();
            assert!(!nested, "the nested poll reported progress for the running BH");
            drop(s2.borrow_mut().take());
        });
        bh.schedule();
        *slot.borrow_mut() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(slot.borrow_mut().is_none(), "{name}: the callback did not drop its handle");
        assert!(!ctx.poll(false), "{name}: a deleted BH ran again");
        assert_eq!(runs.load(Ordering::Relaxed), 1, "{name}: runs");
        assert_eq!(Arc::strong_count(&runs), 1, "{name}: the deleted BH was not freed");
    }
}

/// A BH deleted (its handle dropped) on another thread while scheduled: it never runs and is freed
/// by the loop.
#[test]
fn bh_deleted_by_another_thread_while_scheduled() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let runs = Arc::new(AtomicUsize::new(0));
        let r2 = runs.clone();
        let bh = ctx.handle().bh_new(move |_| {
            r2.fetch_add(1, Ordering::Relaxed);
        });
        bh.schedule();
        thread::spawn(move || drop(bh)).join().unwrap();
        ctx.poll(false);
        assert_eq!(runs.load(Ordering::Relaxed), 0, "{name}: a deleted BH ran");
        assert_eq!(Arc::strong_count(&runs), 1, "{name}: the deleted BH was not freed");
    }
}

// ---------------------------------------------------------------------------------------------
// `Local` callbacks (`!Send` closures) are called and dropped only on the home thread, also when
// other threads schedule them, remove them, or hold the context's shared half longer than the
// `AioContext` (`impl/src/kind.rs`). Each closure below captures a `HomeOnly`, which holds an `Rc`
// (so the closure is `!Send`) and fails the thread that drops it if that is not the home thread.

/// Counts its drops; its drop on any thread but `home` panics there (and fails the test's join).
struct HomeOnly {
    home: thread::ThreadId,
    dropped: Rc<Cell<u32>>,
}

impl HomeOnly {
    fn new() -> (HomeOnly, Rc<Cell<u32>>) {
        let dropped = Rc::new(Cell::new(0));
        (HomeOnly { home: thread::current().id(), dropped: dropped.clone() }, dropped)
    }
}

impl Drop for HomeOnly {
    fn drop(&mut self) {
        assert_eq!(
            thread::current().id(),
            self.home,
            "a Local closure was dropped off its home thread"
        );
        self.dropped.set(self.dropped.get() + 1);
    }
}

/// A `Local` BH scheduled through its `Send` scheduler while its owner lives past the context:
/// another thread schedules it after the context is gone (it is pushed on the shared list), the home
/// thread then drops the owner, and the other thread drops the shared half last. The owner's drop
/// takes the closure out first, so the other thread frees only memory. (Planted: without
/// `drop_callback` in `Bh::drop`, the closure is dropped by the other thread's `Shared::drop`, and
/// its `HomeOnly` fails that thread.)
#[test]
fn local_bh_outliving_its_context_is_dropped_on_home() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (guard, dropped) = HomeOnly::new();
        let runs = Rc::new(Cell::new(0));
        let r2 = runs.clone();
        let bh = ctx.bh_new(move |_| {
            let _g = &guard;
            r2.set(r2.get() + 1);
        });
        let (s, h) = (bh.scheduler(), ctx.handle().clone());
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let t = thread::spawn(move || {
            assert!(s.schedule(), "the owner is alive");
            go_rx.recv().unwrap(); // the home thread dropped the context
            assert!(s.schedule(), "the owner is still alive");
            done_tx.send(()).unwrap();
            go_rx.recv().unwrap(); // the home thread dropped the owner
            assert!(!s.schedule(), "scheduled a deleted BH");
            drop((s, h)); // the last holders of the shared half
        });
        while runs.get() == 0 {
            ctx.poll(true);
        }
        drop(ctx);
        go_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        assert_eq!(dropped.get(), 0, "{name}: dropped while its owner lives");
        drop(bh);
        assert_eq!(dropped.get(), 1, "{name}: the owner's drop did not drop the closure");
        go_tx.send(()).unwrap();
        t.join().expect("the other thread failed");
        assert_eq!(runs.get(), 1, "{name}: runs");
    }
}

/// The `Send` scheduler racing the owner's delete: schedules keep coming while the home thread polls
/// and then drops the owner; the lock in `BhScheduler::schedule` keeps every schedule off the freed
/// BH (Miri checks the accesses), and once the owner is gone a schedule does nothing.
#[test]
fn local_bh_scheduler_racing_the_owners_delete() {
    const MAX_SCHEDULES: u32 = 1_000_000; // bounds the other thread's loop if the delete were lost
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (guard, dropped) = HomeOnly::new();
        let runs = Rc::new(Cell::new(0));
        let r2 = runs.clone();
        let bh = ctx.bh_new(move |_| {
            let _g = &guard;
            r2.set(r2.get() + 1);
        });
        let s = bh.scheduler();
        let t = thread::spawn(move || {
            let mut n = 0;
            while s.schedule() {
                n += 1;
                assert!(n < MAX_SCHEDULES, "the owner's delete never reached the scheduler");
                thread::yield_now();
            }
            assert!(!s.clone().schedule(), "a clone scheduled a deleted BH");
        });
        while runs.get() < 2 {
            ctx.poll(true);
        }
        drop(bh);
        assert_eq!(dropped.get(), 1, "{name}: the owner's drop did not drop the closure");
        t.join().expect("the other thread failed");
        while ctx.poll(false) {}
        let after = runs.get();
        assert!(!ctx.poll(false), "{name}: a deleted BH ran");
        assert_eq!(runs.get(), after, "{name}: a deleted BH ran");
    }
}

/// A `Local` BH deletes itself through its `BhRef` (no handle in its own closure): its closure is
/// dropped when the call returns, the owner's later schedules call nothing, and the owner's drop
/// frees the rest.
#[test]
fn local_bh_deleting_itself_through_its_ref() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (guard, dropped) = HomeOnly::new();
        let runs = Rc::new(Cell::new(0));
        let r2 = runs.clone();
        let bh = ctx.bh_new(move |this| {
            let _g = &guard;
            r2.set(r2.get() + 1);
            this.schedule(); // cancelled by the delete below
            this.delete();
            assert!(!this.is_scheduled());
        });
        bh.schedule();
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert_eq!(dropped.get(), 1, "{name}: the closure outlived its call after delete");
        bh.schedule();
        assert!(!ctx.poll(false), "{name}: a deleted BH was progress");
        assert_eq!(runs.get(), 1, "{name}: a deleted BH ran");
        bh.delete();
        assert!(!ctx.poll(false), "{name}");
    }
}

/// A `Local` timer is not armed once its context is gone (it could never run, and an arming would
/// leave its closure in the shared half, which another thread may drop last).
#[test]
fn local_timer_outliving_its_context_is_dropped_on_home() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (guard, dropped) = HomeOnly::new();
        let t = ctx.timer_new(move |_| {
            let _g = &guard;
        });
        t.mod_ns(u64::MAX - 1);
        let h = ctx.handle().clone();
        drop(ctx);
        assert!(!t.is_pending(), "{name}: the context's drop did not disarm it");
        t.mod_ns(0);
        assert!(!t.is_pending(), "{name}: armed after its context was dropped");
        let other = thread::spawn(move || drop(h));
        other.join().expect("the other thread failed");
        drop(t);
        assert_eq!(dropped.get(), 1, "{name}: the timer's drop did not drop the closure");
    }
}

/// A `Local` fd handler removed by another thread, and one still registered when the context is
/// dropped while another thread holds a `Handle`: both closures are dropped on the home thread (by
/// the finalisation of a poll, or by the context's drop), never by the other thread.
#[test]
fn local_handlers_are_dropped_on_home() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (e1, e2) = (EventFd::new().expect("eventfd"), EventFd::new().expect("eventfd"));
        let (g1, d1) = HomeOnly::new();
        let (g2, d2) = HomeOnly::new();
        ctx.set_fd_handler(
            e1.fd(),
            FdHandler::new().on_read(move |_| assert!(g1.dropped.get() == 0)),
        )
        .unwrap();
        ctx.set_fd_handler(
            e2.fd(),
            FdHandler::new().on_read(move |_| assert!(g2.dropped.get() == 0)),
        )
        .unwrap();
        let (h, fd1) = (ctx.handle().clone(), e1.fd());
        let (tx, rx) = mpsc::channel::<()>();
        let t = thread::spawn(move || {
            assert!(h.remove_fd_handler(fd1).expect("remove"));
            rx.recv().unwrap(); // the context is gone
            drop(h);
        });
        while d1.get() == 0 {
            ctx.poll(true); // the removal's notify wakes it; the finalisation drops the handler
        }
        drop(ctx);
        assert_eq!(d2.get(), 1, "{name}: the context's drop did not drop the registered handler");
        tx.send(()).unwrap();
        t.join().expect("the other thread failed");
        assert_eq!(d1.get(), 1, "{name}");
    }
}

/// A task's waker as another thread sees it: a slot the task fills on each poll.
type WakerSlot = Arc<std::sync::Mutex<Option<std::task::Waker>>>;

/// A task spawned on `ctx` and polled once: it stores its waker in the slot on each poll and
/// finishes once the value (the `AtomicUsize`) is set; its future holds a [`HomeOnly`] guard, whose
/// drop count is returned.
struct WaitingTask {
    task: aioctx::task::JoinHandle<usize>,
    slot: WakerSlot,
    go: Arc<AtomicUsize>,
    dropped: Rc<Cell<u32>>,
}

fn waiting_task(ctx: &AioContext) -> WaitingTask {
    let (guard, dropped) = HomeOnly::new();
    let (slot, go) = (WakerSlot::default(), Arc::new(AtomicUsize::new(0)));
    let (s, g) = (slot.clone(), go.clone());
    let task = ctx.spawn_local(std::future::poll_fn(move |cx| {
        let _g = &guard;
        *s.lock().unwrap() = Some(cx.waker().clone());
        match g.load(Ordering::Acquire) {
            0 => std::task::Poll::Pending,
            v => std::task::Poll::Ready(v),
        }
    }));
    assert!(ctx.poll(false), "the first poll of the task");
    WaitingTask { task, slot, go, dropped }
}

/// A task woken from another thread while the home thread blocks (the waker schedules the task's
/// BH, whose notify writes the real eventfd): it completes with the value the waker published, and
/// its future is dropped once, on the home thread, when it completes.
#[test]
fn task_woken_from_another_thread_vs_blocking_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let WaitingTask { task: t, slot, go, dropped } = waiting_task(&ctx);
        let th = thread::spawn(move || {
            go.store(5, Ordering::Release);
            let w = slot.lock().unwrap().take();
            w.expect("the task left its waker").wake();
        });
        while !t.is_finished() {
            ctx.poll(true);
        }
        th.join().expect("the other thread failed");
        assert_eq!(dropped.get(), 1, "{name}: the future was not dropped at completion");
        assert_eq!(ctx.block_on(t), Ok(5), "{name}");
    }
}

/// Another thread keeps a task's waker and wakes it while the home thread cancels the task, then
/// drops the context: the future is dropped by the cancel, on the home thread; the later wakes
/// (the BH is deleted, the context gone) touch nothing freed.
#[test]
fn task_waker_outliving_its_task_and_context() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let WaitingTask { task: t, slot, dropped, .. } = waiting_task(&ctx);
        let w = slot.lock().unwrap().take().expect("the task left its waker");
        let (tx, rx) = mpsc::channel::<()>();
        let th = thread::spawn(move || {
            w.wake_by_ref();
            rx.recv().expect("the home thread hung up");
            w.wake_by_ref();
            w.wake();
        });
        assert!(t.cancel());
        assert_eq!(dropped.get(), 1, "{name}: cancel did not drop the future");
        drop(ctx);
        tx.send(()).expect("the other thread is gone");
        th.join().expect("the other thread failed");
        assert_eq!(dropped.get(), 1, "{name}: dropped twice");
    }
}

/// The context is dropped with a task pending whose waker another thread is using: the future is
/// dropped by the context's drop, on the home thread.
#[test]
fn task_pending_when_its_context_is_dropped() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let WaitingTask { task: t, slot, dropped, .. } = waiting_task(&ctx);
        let th = thread::spawn(move || {
            if let Some(w) = slot.lock().unwrap().take() {
                w.wake();
            }
        });
        drop(ctx);
        assert_eq!(dropped.get(), 1, "{name}: the context's drop did not drop the future");
        assert!(t.is_finished());
        th.join().expect("the other thread failed");
    }
}
