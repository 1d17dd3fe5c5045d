//! Futures on the context (impl/src/task): spawn, join, cancel, wake from other threads, block_on,
//! sleep / timeout, AsyncFd — per backend where an fd is involved.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

mod common;

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aioctx::task::{self, AsyncFd, Cancelled, Elapsed};
use aioctx::AioContext;
use common::{backends, ctx, watchdog};

/// A one-shot cross-thread signal: `wait()` is a future, `set()` wakes it from any thread.
#[derive(Default)]
struct Signal {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
    polls: AtomicUsize,
}

impl Signal {
    fn set(&self) {
        self.set.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
    fn wait(self: &Arc<Self>) -> impl Future<Output = ()> {
        let s = self.clone();
        poll_fn(move |cx| {
            s.polls.fetch_add(1, Ordering::Relaxed);
            *s.waker.lock().unwrap() = Some(cx.waker().clone());
            if s.set.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// Sets its flag when dropped, and records the thread that dropped it.
struct DropProbe(Rc<Cell<bool>>, Rc<Cell<Option<std::thread::ThreadId>>>);
impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.set(true);
        self.1.set(Some(std::thread::current().id()));
    }
}

#[test]
fn spawned_task_runs_in_a_poll_and_its_output_is_joined() {
    let ctx = AioContext::new().unwrap();
    let ran = Rc::new(Cell::new(false));
    let r2 = ran.clone();
    let t = ctx.spawn_local(async move {
        r2.set(true);
        Rc::new(7) // a !Send output
    });
    assert!(!ran.get(), "spawn does not poll the future");
    assert!(!t.is_finished());
    assert!(ctx.poll(false), "the task's first poll is progress");
    assert!(ran.get());
    assert!(t.is_finished());
    assert_eq!(*ctx.block_on(t).unwrap(), 7);
    assert!(!ctx.poll(false), "a completed task leaves nothing scheduled");
}

#[test]
fn wake_from_another_thread_ends_a_blocking_poll_on_every_backend() {
    for (name, b) in backends() {
        watchdog(name, 20, move || {
            let ctx = ctx(&b);
            let sig = Arc::new(Signal::default());
            let s2 = sig.clone();
            let t = ctx.spawn_local({
                let sig = sig.clone();
                async move { sig.wait().await }
            });
            assert!(ctx.poll(false)); // first poll: pending, waker stored
            let th = std::thread::spawn(move || s2.set());
            // Blocks until the wake's schedule notifies; then the task completes.
            while !t.is_finished() {
                ctx.poll(true);
            }
            th.join().unwrap();
            assert_eq!(sig.polls.load(Ordering::Relaxed), 2, "{name}: polled once per wake");
        });
    }
}

#[test]
fn many_wakes_before_the_task_runs_poll_it_once() {
    let ctx = AioContext::new().unwrap();
    let sig = Arc::new(Signal::default());
    let polls = Rc::new(Cell::new(0));
    let (p2, s2) = (polls.clone(), sig.clone());
    let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
    let w2 = waker.clone();
    let _t = ctx.spawn_local(poll_fn(move |cx| {
        p2.set(p2.get() + 1);
        *w2.borrow_mut() = Some(cx.waker().clone());
        if s2.set.load(Ordering::Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    assert!(ctx.poll(false));
    let w = waker.borrow().clone().unwrap();
    for _ in 0..5 {
        w.wake_by_ref();
    }
    std::thread::spawn(move || w.wake()).join().unwrap();
    assert!(ctx.poll(false));
    assert_eq!(polls.get(), 2, "six wakes, one poll");
    assert!(!ctx.poll(false));
    sig.set();
}

/// `block_on` makes its context current while it polls the future, and gives the previous one back
/// after: none at the top level, the outer context inside another context's callback.
#[test]
fn block_on_restores_the_current_context() {
    let ctx = AioContext::new().unwrap();
    let is = |p: *const AioContext| move |c: &AioContext| std::ptr::eq(c, p);
    let outer: *const AioContext = &ctx;
    let inside = ctx.block_on(async { AioContext::with_current(is(outer)) });
    assert_eq!(inside, Some(true), "current while the future is polled");
    assert!(AioContext::with_current(|_| ()).is_none(), "still current after block_on returned");

    let other = Rc::new(AioContext::new().unwrap());
    let seen = Rc::new(Cell::new((None, None)));
    let (o2, s2) = (other.clone(), seen.clone());
    let bh = ctx.bh_new(move |_| {
        let inner: *const AioContext = &*o2;
        let during = o2.block_on(async { AioContext::with_current(is(inner)) });
        s2.set((during, AioContext::with_current(is(outer))));
    });
    bh.schedule();
    assert!(ctx.poll(false));
    assert_eq!(
        seen.get(),
        (Some(true), Some(true)),
        "(the inner context while polled, the outer after)"
    );
}

#[test]
fn wake_during_the_poll_schedules_the_task_again() {
    let ctx = AioContext::new().unwrap();
    let polls = Rc::new(Cell::new(0));
    let p2 = polls.clone();
    let t = ctx.spawn_local(poll_fn(move |cx| {
        p2.set(p2.get() + 1);
        if p2.get() < 3 {
            cx.waker().wake_by_ref(); // yield: run again in the next poll, not now
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }));
    assert!(ctx.poll(false));
    assert_eq!(polls.get(), 1, "a task that wakes itself is not re-entered");
    assert!(ctx.poll(false));
    assert!(ctx.poll(false));
    assert_eq!(polls.get(), 3);
    assert!(t.is_finished());
}

#[test]
fn waking_a_finished_or_cancelled_task_or_one_whose_context_is_gone_is_harmless() {
    let ctx = AioContext::new().unwrap();
    let grab = |ctx: &AioContext| {
        let slot: Rc<RefCell<Option<Waker>>> = Rc::default();
        let s2 = slot.clone();
        let t = ctx.spawn_local(poll_fn(move |cx| {
            *s2.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        }));
        assert!(ctx.poll(false));
        let w = slot.borrow_mut().take().unwrap();
        (t, w)
    };
    // Finished.
    let done_waker = {
        let slot: Rc<RefCell<Option<Waker>>> = Rc::default();
        let s2 = slot.clone();
        let t = ctx.spawn_local(poll_fn(move |cx| {
            *s2.borrow_mut() = Some(cx.waker().clone());
            Poll::Ready(1)
        }));
        assert!(ctx.poll(false));
        assert_eq!(ctx.block_on(t), Ok(1));
        let w = slot.borrow_mut().take().unwrap();
        w
    };
    done_waker.wake_by_ref();
    assert!(!ctx.poll(false), "a finished task is not polled again");
    // Cancelled.
    let (t, w) = grab(&ctx);
    assert!(t.cancel());
    assert!(!t.cancel(), "cancel twice: the second does nothing");
    w.wake_by_ref();
    std::thread::spawn(move || w.wake()).join().unwrap();
    assert!(!ctx.poll(false));
    assert_eq!(ctx.block_on(t), Err(Cancelled));
    // Context dropped, waker on another thread.
    let (t, w) = grab(&ctx);
    drop(ctx);
    assert!(t.is_finished());
    std::thread::spawn(move || {
        w.wake_by_ref();
        w.wake();
    })
    .join()
    .unwrap();
}

#[test]
fn cancel_drops_the_future_at_once_on_the_home_thread() {
    let ctx = AioContext::new().unwrap();
    let (dropped, by) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(None)));
    let probe = DropProbe(dropped.clone(), by.clone());
    let t = ctx.spawn_local(async move {
        let _p = probe;
        std::future::pending::<()>().await;
    });
    assert!(ctx.poll(false));
    assert!(!dropped.get());
    assert!(t.cancel());
    assert!(dropped.get(), "the future is dropped by cancel");
    assert_eq!(by.get(), Some(std::thread::current().id()));
    assert!(!ctx.poll(false));
}

#[test]
fn a_task_that_cancels_itself_finishes_its_poll_then_is_dropped() {
    let ctx = AioContext::new().unwrap();
    let handle: Rc<RefCell<Option<task::JoinHandle<()>>>> = Rc::default();
    let (h2, dropped, by) = (handle.clone(), Rc::new(Cell::new(false)), Rc::new(Cell::new(None)));
    let probe = DropProbe(dropped.clone(), by.clone());
    let after = Rc::new(Cell::new(false));
    let a2 = after.clone();
    let d2 = dropped.clone();
    let t = ctx.spawn_local(async move {
        let _p = probe;
        let me = h2.borrow_mut().take().unwrap();
        assert!(me.cancel());
        assert!(!d2.get(), "not dropped while it runs");
        a2.set(true);
        *h2.borrow_mut() = Some(me);
        std::future::pending::<()>().await;
    });
    *handle.borrow_mut() = Some(t);
    assert!(ctx.poll(false));
    assert!(after.get());
    assert!(dropped.get(), "dropped when its poll returned");
    let t = handle.borrow_mut().take().unwrap();
    assert_eq!(ctx.block_on(t), Err(Cancelled));
}

#[test]
fn dropping_the_context_drops_pending_tasks_there_and_their_joins_see_cancelled() {
    let (dropped, by) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(None)));
    let probe = DropProbe(dropped.clone(), by.clone());
    let ctx = AioContext::new().unwrap();
    let sig = Arc::new(Signal::default());
    let s2 = sig.clone();
    let t = ctx.spawn_local(async move {
        let _p = probe;
        s2.wait().await;
    });
    assert!(ctx.poll(false));
    // The waker lives on in `sig` (another thread could hold it).
    assert!(sig.waker.lock().unwrap().is_some());
    drop(ctx);
    assert!(dropped.get());
    assert_eq!(by.get(), Some(std::thread::current().id()));
    assert!(t.is_finished());
    // Awaiting it anywhere now gives Cancelled (polled by hand: there is no context left).
    let mut t = t;
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(Pin::new(&mut t).poll(&mut cx), Poll::Ready(Err(Cancelled)));
    sig.set(); // the wake of a dropped task: harmless
}

#[test]
fn a_detached_task_keeps_running() {
    let ctx = AioContext::new().unwrap();
    let n = Rc::new(Cell::new(0));
    let n2 = n.clone();
    drop(ctx.spawn_local(async move {
        for _ in 0..3 {
            n2.set(n2.get() + 1);
            task::sleep(Duration::from_micros(1)).await;
        }
    }));
    while n.get() < 3 {
        ctx.poll(true);
    }
    assert_eq!(n.get(), 3);
}

#[test]
fn tasks_await_each_other_and_spawn_from_inside() {
    let ctx = AioContext::new().unwrap();
    let out = ctx.block_on(async {
        let a = task::spawn_local(async { 20 });
        let b = task::spawn_local(async move { a.await.unwrap() + 1 });
        b.await.unwrap() * 2
    });
    assert_eq!(out, 42);
}

#[test]
fn block_on_nested_in_a_task_runs_others_but_not_the_caller() {
    let ctx = AioContext::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    let outer = ctx.spawn_local(async move {
        l2.borrow_mut().push("outer start");
        let l3 = l2.clone();
        let inner = task::spawn_local(async move {
            l3.borrow_mut().push("inner");
            5
        });
        // A nested poll (AIO_WAIT_WHILE): the inner task runs in it; this task is not re-entered.
        let v = AioContext::with_current(|c| c.block_on(inner)).unwrap().unwrap();
        l2.borrow_mut().push("outer end");
        v
    });
    assert_eq!(ctx.block_on(outer), Ok(5));
    assert_eq!(*log.borrow(), ["outer start", "inner", "outer end"]);
}

#[test]
fn block_on_wakes_from_another_thread_without_other_work() {
    watchdog("block_on", 20, || {
        let ctx = AioContext::new().unwrap();
        let sig = Arc::new(Signal::default());
        let s2 = sig.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            s2.set();
        });
        ctx.block_on(sig.wait());
        th.join().unwrap();
    });
}

#[test]
fn sleep_and_timeout() {
    watchdog("sleep", 20, || {
        let ctx = AioContext::new().unwrap();
        let t0 = Instant::now();
        ctx.block_on(ctx.sleep(Duration::from_millis(2)));
        assert!(t0.elapsed() >= Duration::from_millis(2), "a sleep never ends early");
        let r = ctx.block_on(ctx.timeout(Duration::from_millis(1), std::future::pending::<()>()));
        assert_eq!(r, Err(Elapsed));
        let r = ctx.block_on(ctx.timeout(Duration::from_secs(3600), async { 3 }));
        assert_eq!(r, Ok(3));
        // The free functions inside block_on find the context.
        ctx.block_on(async { task::sleep(Duration::from_micros(10)).await });
        let r = ctx.block_on(async { task::timeout(Duration::from_secs(3600), async { 4 }).await });
        assert_eq!(r, Ok(4));
    });
}

#[test]
fn sleeps_follow_the_context_clock_and_a_dropped_one_never_fires() {
    let clock = Arc::new(aioctx::ModelClock::new(0));
    let ctx = AioContext::builder().clock(clock.clone()).build().unwrap();
    let s = ctx.sleep(Duration::from_secs(1));
    assert_eq!(s.deadline_ns(), Some(1_000_000_000));
    drop(s);
    clock.advance(Duration::from_secs(2));
    assert!(!ctx.poll(false), "a dropped sleep's timer is deleted");
    // Control: the same sleep kept fires (its timer is progress) and resolves.
    let s = ctx.sleep(Duration::from_secs(1));
    let t = ctx.spawn_local(s);
    assert!(ctx.poll(false));
    assert!(!t.is_finished());
    clock.advance(Duration::from_secs(2));
    assert!(ctx.poll(false), "the timer fires");
    assert!(ctx.poll(false), "the task runs");
    assert!(t.is_finished());
}

#[test]
#[should_panic(expected = "aioctx::task::sleep outside a context")]
fn free_functions_outside_a_context_panic_with_the_reason() {
    drop(task::sleep(Duration::from_millis(1)));
}

#[test]
fn async_fd_outside_a_context_or_on_a_bad_fd_is_an_error() {
    let (a, _b) = UnixStream::pair().unwrap();
    let e = AsyncFd::new(a).unwrap_err();
    assert!(e.to_string().contains("outside a context"), "{e}");
    let ctx = AioContext::new().unwrap();
    struct Fd(i32);
    impl std::os::fd::AsRawFd for Fd {
        fn as_raw_fd(&self) -> i32 {
            self.0
        }
    }
    let e = AsyncFd::with_context(&ctx, Fd(-1)).unwrap_err();
    assert!(e.to_string().contains("fd -1"), "{e}");
    let e = AsyncFd::with_context(&ctx, Fd(ctx.notifier_fd())).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

/// Read until `WouldBlock`, waiting for readability in between.
async fn read_some(fd: &AsyncFd<UnixStream>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        fd.readable().await?;
        match fd.get_ref().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

#[test]
fn async_fd_echo_between_two_tasks_on_every_backend_polling_or_not() {
    for ((name, b), polling) in backends().into_iter().flat_map(|b| [(b.clone(), false), (b, true)])
    {
        watchdog(name, 30, move || {
            let mut builder = AioContext::builder().backend(b);
            if polling {
                builder = builder.poll_params(50_000, 0, 0); // adaptive polling: 50 µs
            }
            let ctx = builder.build().unwrap();
            let (a, b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            b.set_nonblocking(true).unwrap();
            let (a, b) =
                (AsyncFd::with_context(&ctx, a).unwrap(), AsyncFd::with_context(&ctx, b).unwrap());
            const N: usize = 200;
            let echo = ctx.spawn_local(async move {
                let mut buf = [0u8; 64];
                let mut total = 0;
                while total < N {
                    let n = read_some(&b, &mut buf).await?;
                    total += n;
                    let mut off = 0;
                    while off < n {
                        b.writable().await?;
                        match b.get_ref().write(&buf[off..n]) {
                            Ok(k) => off += k,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok::<_, io::Error>(total)
            });
            let client = ctx.spawn_local(async move {
                let mut got = Vec::new();
                for i in 0..N {
                    a.writable().await?;
                    a.get_ref().write_all(&[i as u8])?;
                    let mut buf = [0u8; 8];
                    let n = read_some(&a, &mut buf).await?;
                    got.extend_from_slice(&buf[..n]);
                }
                Ok::<_, io::Error>(got)
            });
            let got = ctx.block_on(client).unwrap().unwrap();
            assert_eq!(
                got,
                (0..N).map(|i| i as u8).collect::<Vec<_>>(),
                "{name} polling={polling}"
            );
            assert_eq!(ctx.block_on(echo).unwrap().unwrap(), N, "{name} polling={polling}");
        });
    }
}

#[test]
fn an_fd_nobody_waits_on_does_not_keep_the_loop_busy() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, mut w) = UnixStream::pair().unwrap();
        r.set_nonblocking(true).unwrap();
        let r = AsyncFd::with_context(&ctx, r).unwrap();
        w.write_all(b"x").unwrap();
        // No waiter, no interest: the readable fd is not even reported.
        assert!(!ctx.poll(false), "{name}");
        // A waiter: reported once and woken.
        let fut = ctx.spawn_local(async move {
            r.readable().await.unwrap();
            r
        });
        assert!(ctx.poll(false)); // the task: pending, interest on
        let mut polls = 0;
        while !fut.is_finished() {
            assert!(ctx.poll(true));
            polls += 1;
            assert!(polls < 10, "{name}: readiness did not reach the task");
        }
        let r = ctx.block_on(fut).unwrap();
        // Unread data and no waiter: at most one more report (it turns interest off), then quiet.
        let busy = (0..10).filter(|_| ctx.poll(false)).count();
        assert!(busy <= 1, "{name}: {busy} busy polls for an fd nobody waits on");
        drop(r);
    }
}

#[test]
fn async_fd_drop_removes_its_handler_and_into_inner_gives_the_object_back() {
    let ctx = AioContext::new().unwrap();
    let (r, _w) = UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
    let a = AsyncFd::with_context(&ctx, r).unwrap();
    assert!(ctx.handle().set_fd_interest(fd, aioctx::Interest::READ).unwrap(), "registered");
    let r = a.into_inner();
    assert!(!ctx.handle().set_fd_interest(fd, aioctx::Interest::READ).unwrap(), "removed");
    let a = AsyncFd::with_context(&ctx, r).unwrap();
    drop(a);
    assert!(!ctx.handle().set_fd_interest(fd, aioctx::Interest::READ).unwrap(), "removed by drop");
}

#[test]
fn two_tasks_waiting_for_one_fd_both_wake() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, mut w) = UnixStream::pair().unwrap();
        r.set_nonblocking(true).unwrap();
        let r = Rc::new(AsyncFd::with_context(&ctx, r).unwrap());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                ctx.spawn_local(async move { r.readable().await.unwrap() })
            })
            .collect();
        assert!(ctx.poll(false)); // both pending
        w.write_all(b"x").unwrap(); // never read: the fd stays readable
        let mut polls = 0;
        while !waiters.iter().all(|t| t.is_finished()) {
            ctx.poll(true);
            polls += 1;
            assert!(polls < 20, "{name}: a waiter was not woken");
        }
    }
}
