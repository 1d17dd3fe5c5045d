//! Notify, event notifiers, timers, fd handlers and IoThread: QEMU's test-aio.c / test-aio-multithread.c
//! behaviours (written afresh), plus the decisions of docs/protocol.md §6, on every
//! real backend.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::sys::EventFd;
use aioctx::{AioContext, FdHandler, IoThread};
use common::*;

// ---------------------------------------------------------------- notify

#[test]
fn notify_wakes_blocking_poll_which_returns_false() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        assert!(!ctx.poll(false));
        let h = ctx.handle().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.notify();
        });
        assert!(!ctx.poll(true), "{name}: a notify alone is not progress");
        t.join().unwrap();
        assert!(!ctx.poll(false));
    }
}

#[test]
fn notify_before_blocking_poll_is_not_lost() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        ctx.notify();
        // Must return (false) without blocking: `notified` is re-checked after arming notify_me.
        let t = Instant::now();
        assert!(!ctx.poll(true), "{name}");
        assert!(t.elapsed() < Duration::from_secs(1), "{name}: blocked");
        assert!(!ctx.poll(false));
    }
}

/// Whether the context's eventfd holds a kick (a zero-timeout poll of it, not a read).
fn kicked(ctx: &AioContext) -> bool {
    let mut p = libc::pollfd { fd: ctx.notifier_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n == 1
}

/// The busy path stays free after a wait: once a blocking poll has returned, and once an external
/// loop's prepare/check pair is over, `notify_me` is back to 0, and a notify from another thread
/// only sets `notified` (no eventfd write). A wait that never withdrew its announcement would make
/// every later notify a syscall while nobody sleeps.
#[test]
fn notify_after_a_finished_wait_writes_no_eventfd() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let h = ctx.handle().clone();
        let notify_from_another_thread = || {
            let h = h.clone();
            std::thread::spawn(move || h.notify()).join().unwrap();
        };
        notify_from_another_thread();
        assert!(!kicked(&ctx), "{name}: a notify of a loop that is not waiting wrote the eventfd");
        assert!(!ctx.poll(true), "{name}"); // announces a wait, sees `notified`, returns at once
        notify_from_another_thread();
        assert!(!kicked(&ctx), "{name}: a notify after a finished blocking poll wrote the eventfd");
        assert!(!ctx.poll(false));

        assert_eq!(ctx.prepare(), None, "{name}: nothing pending, the external loop may sleep");
        assert!(!ctx.check(), "{name}");
        ctx.dispatch();
        notify_from_another_thread();
        assert!(!kicked(&ctx), "{name}: a notify after an external loop's check wrote the eventfd");
    }
}

#[test]
fn cross_thread_bh_wakes_blocked_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let bh = Arc::new(ctx.handle().bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        }));
        for i in 1..=200 {
            let bh2 = bh.clone();
            let t = std::thread::spawn(move || bh2.schedule());
            while n.load(Relaxed) < i {
                ctx.poll(true);
            }
            t.join().unwrap();
        }
        assert_eq!(n.load(Relaxed), 200, "{name}");
    }
}

// ---------------------------------------------------------------- event notifiers as fd handlers

struct EvData {
    e: Arc<EventFd>,
    n: Arc<AtomicU32>,
    active: Arc<AtomicI32>,
}

fn ev(ctx: &AioContext, active: i32, auto_set: bool) -> EvData {
    let e = Arc::new(EventFd::new().unwrap());
    let n = Arc::new(AtomicU32::new(0));
    let act = Arc::new(AtomicI32::new(active));
    let (e2, n2, a2) = (e.clone(), n.clone(), act.clone());
    ctx.set_fd_handler(
        e.fd(),
        FdHandler::new().on_read(move |_| {
            assert!(e2.test_and_clear().unwrap(), "dispatched but not set");
            n2.fetch_add(1, Relaxed);
            let left = a2.load(Relaxed);
            if left > 0 {
                a2.store(left - 1, Relaxed);
            }
            if auto_set && left - 1 > 0 {
                e2.set().unwrap();
            }
        }),
    )
    .unwrap();
    EvData { e, n, active: act }
}

fn wait_until_inactive(ctx: &AioContext, d: &EvData) {
    while d.active.load(Relaxed) > 0 {
        ctx.poll(true);
    }
}

#[test]
fn event_add_remove() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let d = ev(&ctx, 0, false);
        assert!(!ctx.poll(false), "{name}");
        assert_eq!(d.n.load(Relaxed), 0);
        assert!(ctx.remove_fd_handler(d.e.fd()).unwrap());
        assert!(!ctx.poll(false));
        assert!(!ctx.remove_fd_handler(d.e.fd()).unwrap(), "second removal: nothing registered");
    }
}

#[test]
fn event_wait() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let d = ev(&ctx, 1, false);
        while ctx.poll(false) {}
        assert_eq!(d.n.load(Relaxed), 0);
        d.e.set().unwrap();
        assert!(ctx.poll(false), "{name}");
        assert_eq!(d.n.load(Relaxed), 1);
        assert_eq!(d.active.load(Relaxed), 0);
        assert!(!ctx.poll(false));
        ctx.remove_fd_handler(d.e.fd()).unwrap();
        d.e.set().unwrap();
        assert!(!ctx.poll(false), "{name}: removed handler is not called");
        assert_eq!(d.n.load(Relaxed), 1);
    }
}

#[test]
fn event_wait_no_flush_cb() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let data = ev(&ctx, 10, false);
        // (a) set while it is the only user fd: poll(true) must not block.
        data.e.set().unwrap();
        assert!(ctx.poll(true), "{name}");
        data.n.store(0, Relaxed);
        // (b) with a second notifier registered.
        let dummy = ev(&ctx, 1, false);
        data.e.set().unwrap();
        assert!(ctx.poll(false));
        assert_eq!(data.n.load(Relaxed), 1);
        assert!(!ctx.poll(false));
        data.e.set().unwrap();
        assert!(ctx.poll(false));
        assert_eq!(data.n.load(Relaxed), 2);
        assert!(!ctx.poll(false));
        // (c) the other handler is not called spuriously.
        dummy.e.set().unwrap();
        wait_until_inactive(&ctx, &dummy);
        assert_eq!(dummy.n.load(Relaxed), 1);
        assert_eq!(data.n.load(Relaxed), 2, "{name}");
        // (d)
        ctx.remove_fd_handler(data.e.fd()).unwrap();
        ctx.remove_fd_handler(dummy.e.fd()).unwrap();
        assert!(!ctx.poll(false));
    }
}

#[test]
fn event_flush_level_triggered() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let d = ev(&ctx, 10, true);
        d.e.set().unwrap();
        assert!(ctx.poll(false), "{name}");
        assert_eq!(d.n.load(Relaxed), 1);
        assert_eq!(d.active.load(Relaxed), 9);
        assert!(ctx.poll(false), "{name}: the handler re-armed its eventfd");
        wait_until_inactive(&ctx, &d);
        assert_eq!(d.n.load(Relaxed), 10);
        assert_eq!(d.active.load(Relaxed), 0);
        assert!(!ctx.poll(false));
        ctx.remove_fd_handler(d.e.fd()).unwrap();
        assert!(!ctx.poll(false));
    }
}

// ---------------------------------------------------------------- timers

#[test]
fn timer_schedule_never_early_and_wakes_blocking_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Arc::new(AtomicU32::new(0));
        let fired_at = Arc::new(Mutex::new(Vec::new()));
        const STEP: Duration = Duration::from_millis(60);
        let (n2, f2) = (n.clone(), fired_at.clone());
        let t = ctx.timer_new(move |this| {
            f2.lock().unwrap().push(this.context().now_ns());
            if n2.fetch_add(1, Relaxed) + 1 < 2 {
                this.mod_in(STEP);
            }
        });
        let first_deadline = ctx.now_ns() + STEP.as_nanos() as u64;
        t.mod_ns(first_deadline);
        while ctx.poll(false) {}
        assert!(!ctx.poll(false));
        assert_eq!(n.load(Relaxed), 0);
        std::thread::sleep(STEP + Duration::from_millis(20));
        assert_eq!(n.load(Relaxed), 0, "{name}: timers only run inside poll");
        assert!(ctx.poll(false), "{name}");
        assert_eq!(n.load(Relaxed), 1);
        let second_deadline = t.deadline_ns().unwrap();
        while ctx.poll(false) {}
        assert!(!ctx.poll(false));
        assert!(ctx.poll(true), "{name}: blocking poll wakes for the timer");
        assert_eq!(n.load(Relaxed), 2);
        assert!(!ctx.poll(false), "{name}: no spurious notification left");
        let f = fired_at.lock().unwrap();
        assert!(f[0] >= first_deadline && f[1] >= second_deadline, "{name}: fired early: {f:?}");
        t.delete();
    }
}

#[test]
fn timer_mod_from_other_thread_wakes_loop() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = fired.clone();
        let t = Arc::new(ctx.handle().timer_new(move |_| f2.store(true, Relaxed)));
        let t2 = t.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t2.mod_in(Duration::from_millis(5));
        });
        // Blocks with an infinite timeout until the other thread arms the timer (it notifies).
        watchdog_local(&ctx, 10, || fired.load(Relaxed));
        th.join().unwrap();
        assert!(!t.is_pending(), "{name}");
    }
}

#[test]
fn timer_del_prevents_the_call() {
    let ctx = AioContext::new().unwrap();
    let fired = Arc::new(AtomicBool::new(false));
    let f2 = fired.clone();
    let t = ctx.timer_new(move |_| f2.store(true, Relaxed));
    t.mod_in(Duration::from_millis(1));
    t.del();
    std::thread::sleep(Duration::from_millis(5));
    assert!(!ctx.poll(false));
    assert!(!fired.load(Relaxed));
    t.mod_in(Duration::from_millis(1));
    drop(t); // dropping disarms too
    std::thread::sleep(Duration::from_millis(5));
    assert!(!ctx.poll(false));
    assert!(!fired.load(Relaxed));
}

/// Poll the (non-Send) context on this thread until `done`, failing after `secs`.
fn watchdog_local(ctx: &AioContext, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let h = ctx.handle().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // A ticker that keeps the loop from blocking forever, so a hang is reported, not hung.
    let ticker = std::thread::spawn(move || {
        while !s2.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            h.notify();
        }
    });
    while !done() {
        assert!(Instant::now() < deadline, "hang: condition not reached in {secs} s");
        ctx.poll(true);
    }
    stop.store(true, Relaxed);
    ticker.join().unwrap();
}

/// A poll that runs a BH and a due timer reports progress, on the short path (no handler, polling
/// off) and on the full one (a handler registered); so does an external loop's dispatch.
#[test]
fn poll_with_a_bh_and_a_due_timer_is_progress() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (_keep, _peer) = pipe();
        for with_handler in [false, true] {
            if with_handler {
                ctx.set_fd_handler(_keep.as_raw_fd(), FdHandler::new().on_read(|_| {})).unwrap();
            }
            let ran = Arc::new(AtomicU32::new(0));
            let (r1, r2) = (ran.clone(), ran.clone());
            let bh = ctx.bh_new(move |_| {
                r1.fetch_add(1, Relaxed);
            });
            let t = ctx.timer_new(move |_| {
                r2.fetch_add(1, Relaxed);
            });
            t.mod_ns(ctx.now_ns());
            bh.schedule();
            assert!(ctx.poll(false), "{name} (handler: {with_handler}): a BH and a timer ran");
            assert_eq!(ran.load(Relaxed), 2, "{name} (handler: {with_handler})");

            // The external loop: a BH, a due timer, or both.
            for (with_bh, with_timer) in [(true, false), (false, true), (true, true)] {
                let what =
                    format!("{name} (handler: {with_handler}, BH: {with_bh}, timer: {with_timer})");
                ran.store(0, Relaxed);
                if with_timer {
                    t.mod_ns(ctx.now_ns());
                }
                if with_bh {
                    bh.schedule();
                }
                assert_eq!(ctx.prepare(), Some(Duration::ZERO), "{what}: work is pending");
                assert!(ctx.check(), "{what}");
                assert!(
                    ctx.dispatch(),
                    "{what}: an external loop's dispatch that ran it is progress"
                );
                assert_eq!(ran.load(Relaxed), u32::from(with_bh) + u32::from(with_timer), "{what}");
            }
        }
    }
}

/// A timer of a dropped context is not pending (it can never fire), whichever thread's kind it is.
#[test]
fn timers_of_a_dropped_context_are_not_pending() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let local = ctx.timer_new(|_| {});
        let remote = ctx.handle().timer_new(|_| {});
        local.mod_in(Duration::from_secs(3600));
        remote.mod_in(Duration::from_secs(3600));
        assert!(local.is_pending() && remote.is_pending(), "{name}");
        drop(ctx);
        assert_eq!(local.deadline_ns(), None, "{name}: a local timer outlived its context armed");
        assert_eq!(remote.deadline_ns(), None, "{name}: a remote timer outlived its context armed");
    }
}

// ---------------------------------------------------------------- fd handlers

fn pipe() -> (std::os::unix::net::UnixStream, std::os::unix::net::UnixStream) {
    std::os::unix::net::UnixStream::pair().unwrap()
}

#[test]
fn handler_removes_itself_and_another_during_dispatch() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (ra, wa) = pipe();
        let (rb, wb) = pipe();
        let (fa, fb) = (ra.as_raw_fd(), rb.as_raw_fd());
        let calls = Arc::new(Mutex::new(Vec::<RawFd>::new()));
        for fd in [fa, fb] {
            let (c2, h) = (calls.clone(), ctx.handle().clone());
            ctx.set_fd_handler(
                fd,
                FdHandler::new().on_read(move |_| {
                    c2.lock().unwrap().push(fd);
                    // Whichever runs first removes both: the other must not be called.
                    h.remove_fd_handler(fa).unwrap();
                    h.remove_fd_handler(fb).unwrap();
                }),
            )
            .unwrap();
        }
        use std::io::Write;
        (&wa).write_all(b"x").unwrap();
        (&wb).write_all(b"x").unwrap();
        // Both fds are ready in the same wait; epoll and ppoll report both.
        while calls.lock().unwrap().is_empty() {
            ctx.poll(true);
        }
        assert!(!ctx.poll(false), "{name}");
        assert_eq!(calls.lock().unwrap().len(), 1, "{name}: a removed handler was called");
        drop((ra, rb));
    }
}

#[test]
fn handler_replaced_from_its_own_callback() {
    let ctx = AioContext::new().unwrap();
    let (r, w) = pipe();
    let fd = r.as_raw_fd();
    let second = Arc::new(AtomicU32::new(0));
    let (h, s2) = (ctx.handle().clone(), second.clone());
    ctx.set_fd_handler(
        fd,
        FdHandler::new().on_read(move |_| {
            let s3 = s2.clone();
            h.set_fd_handler(
                fd,
                FdHandler::new_remote().on_read(move |_| {
                    s3.fetch_add(1, Relaxed);
                }),
            )
            .unwrap();
        }),
    )
    .unwrap();
    use std::io::Write;
    (&w).write_all(b"x").unwrap();
    assert!(ctx.poll(true));
    assert_eq!(second.load(Relaxed), 0);
    assert!(ctx.poll(false), "the replacement handler sees the still-readable fd");
    assert_eq!(second.load(Relaxed), 1);
    ctx.remove_fd_handler(fd).unwrap();
}

#[test]
fn handler_added_from_other_thread_wakes_blocked_loop() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, w) = pipe();
        use std::io::Write;
        (&w).write_all(b"x").unwrap();
        let hit = Arc::new(AtomicBool::new(false));
        let (h, fd, hit2) = (ctx.handle().clone(), r.as_raw_fd(), hit.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            h.set_fd_handler(
                fd,
                FdHandler::new_remote().on_read(move |_| hit2.store(true, Relaxed)),
            )
            .unwrap();
        });
        watchdog_local(&ctx, 10, || hit.load(Relaxed));
        t.join().unwrap();
        ctx.remove_fd_handler(fd).unwrap();
        let _ = name;
    }
}

#[test]
fn handler_bad_input_gives_errors_naming_the_fd() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let e = ctx.set_fd_handler(-1, FdHandler::new().on_read(|_| {})).unwrap_err();
        assert!(e.to_string().contains("-1"), "{name}: {e}");
        // A closed fd: take a number that is certainly not open.
        let (r, _w) = pipe();
        let closed = r.as_raw_fd();
        drop(r);
        let e = ctx.set_fd_handler(closed, FdHandler::new().on_read(|_| {})).unwrap_err();
        assert!(e.to_string().contains(&closed.to_string()), "{name}: {e}");
        let (r, _w) = pipe();
        let e = ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new()).unwrap_err();
        assert!(e.to_string().contains(&r.as_raw_fd().to_string()), "{name}: {e}");
        let e = ctx.set_fd_handler(ctx.notifier_fd(), FdHandler::new().on_read(|_| {}));
        assert!(e.is_err(), "{name}: the context's own notifier is refused");
        assert!(!ctx.poll(false));
    }
}

/// Descriptor 0 is an fd like any other (QEMU's monitor on stdio registers it); only a negative number
/// is refused. The check runs in a child process of this test binary whose stdin is a pipe: no other
/// test of this process owns descriptor 0 there.
#[test]
fn handler_on_fd_zero_is_called() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if std::env::var_os("AIOCTX_TEST_STDIN_CHILD").is_some() {
        for (name, b) in backends() {
            let ctx = ctx(&b);
            let hit = Arc::new(AtomicBool::new(false));
            let h2 = hit.clone();
            ctx.set_fd_handler(0, FdHandler::new().on_read(move |_| h2.store(true, Relaxed)))
                .unwrap_or_else(|e| panic!("{name}: fd 0 refused: {e}"));
            let t = Instant::now();
            while !hit.load(Relaxed) && t.elapsed() < Duration::from_secs(10) {
                ctx.poll(true);
            }
            assert!(hit.load(Relaxed), "{name}: fd 0 readable, handler never called");
            ctx.remove_fd_handler(0).unwrap();
        }
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["handler_on_fd_zero_is_called", "--exact", "--test-threads=1"])
        .env("AIOCTX_TEST_STDIN_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x").unwrap(); // stays readable: nobody reads it
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the child failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn epoll_regular_file_is_a_clear_error() {
    let ctx = AioContext::builder().backend(aioctx::Backend::Epoll).build().unwrap();
    if ctx.backend_name() != "epoll" {
        return; // forced to another backend by cfg
    }
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    let e = ctx.set_fd_handler(f.as_raw_fd(), FdHandler::new().on_read(|_| {})).unwrap_err();
    assert!(e.to_string().contains(&f.as_raw_fd().to_string()), "{e}");
}

/// `epoll_threshold(n)` on a ppoll context switches to epoll at the n-th fd, not before.
#[test]
fn epoll_threshold_switches_at_exactly_n_fds() {
    let ctx =
        AioContext::builder().backend(aioctx::Backend::Ppoll).epoll_threshold(3).build().unwrap();
    if cfg!(any(
        aioctx_force_fdmon = "ppoll",
        aioctx_force_fdmon = "epoll",
        aioctx_force_fdmon = "io_uring"
    )) {
        return; // the build forces one backend: nothing switches
    }
    let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
    for (i, (r, _)) in pipes.iter().enumerate() {
        assert_eq!(ctx.backend_name(), "ppoll", "before fd {} of a threshold of 3", i + 1);
        ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new().on_read(|_| {})).unwrap();
    }
    assert_eq!(ctx.backend_name(), "epoll", "switched at the 3rd fd");
}

/// The ppoll → epoll switch at 64 fds does not lose a registration that races it (B17).
#[test]
fn backend_switch_at_64_fds_keeps_racing_registrations() {
    // ppoll with an explicit threshold switches (as Auto does when io_uring is unavailable); under a
    // forced epoll or io_uring build there is nothing to switch and only the registrations are checked.
    let ctx =
        AioContext::builder().backend(aioctx::Backend::Ppoll).epoll_threshold(64).build().unwrap();
    let start_backend = ctx.backend_name();
    let hits = Arc::new(AtomicU32::new(0));
    let mut pipes = Vec::new();
    for _ in 0..100 {
        pipes.push(pipe());
    }
    let h = ctx.handle().clone();
    let fds: Vec<RawFd> = pipes.iter().map(|(r, _)| r.as_raw_fd()).collect();
    let hits2 = hits.clone();
    let t = std::thread::spawn(move || {
        for fd in fds {
            let hh = hits2.clone();
            h.set_fd_handler(
                fd,
                FdHandler::new_remote().on_read(move |_| {
                    hh.fetch_add(1, Relaxed);
                }),
            )
            .unwrap();
        }
    });
    // Poll while the other thread registers across the threshold.
    for _ in 0..50 {
        ctx.poll(false);
    }
    t.join().unwrap();
    if start_backend == "ppoll" {
        assert_eq!(ctx.backend_name(), "epoll", "switched at 64 fds");
    }
    use std::io::Write;
    for (_, w) in &pipes {
        (&*w).write_all(b"x").unwrap();
    }
    // Each handler reads nothing, so its fd stays readable: one poll dispatches all 100.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits.load(Relaxed) < 100 {
        assert!(Instant::now() < deadline, "registrations lost: {} of 100", hits.load(Relaxed));
        ctx.poll(true);
    }
    for (r, _) in &pipes {
        ctx.remove_fd_handler(r.as_raw_fd()).unwrap();
    }
}

// ---------------------------------------------------------------- IoThread

#[test]
fn iothread_run_sync_and_join_in_a_loop() {
    watchdog("iothread spawn/join x200", 60, || {
        for i in 0..200u32 {
            let t = IoThread::spawn("t").unwrap();
            assert_eq!(t.run_sync(move || i * 2), i * 2);
            t.join();
        }
    });
}

/// 10^5 cross-thread BH round trips to a blocked IoThread, with a watchdog that fails instead of hanging.
#[test]
fn iothread_cross_thread_bh_1e5_round_trips() {
    watchdog("1e5 round trips", 120, || {
        let t = IoThread::spawn("rt").unwrap();
        let main = AioContext::new().unwrap();
        let back = Arc::new(AtomicU32::new(0));
        let b2 = back.clone();
        let reply = Arc::new(main.handle().bh_new(move |_| {
            b2.fetch_add(1, Relaxed);
        }));
        let r2 = reply.clone();
        let ping = t.handle().bh_new(move |_| r2.schedule());
        for i in 1..=100_000u32 {
            ping.schedule();
            while back.load(Relaxed) < i {
                main.poll(true);
            }
        }
        drop(ping);
        t.join();
        back.load(Relaxed)
    });
}

/// A wait that fails for good (not EINTR, not io_uring's EBUSY) is reported, never retried as if
/// interrupted nor taken for a wait that found nothing: here the monitor's own fd is made to name
/// /dev/null (dup2), so epoll_wait fails with EINVAL and io_uring_enter with EOPNOTSUPP, and `poll`
/// panics with the monitor's name (a failure of the monitor's own fd is a bug, see `poll`). Both a
/// blocking wait (bounded by a timer, so a mutant that retries returns instead of hanging) and a
/// zero-timeout one (a user handler makes `poll(false)` look at the fds; io_uring submits without
/// waiting there).
#[test]
fn a_monitor_whose_wait_fails_for_good_makes_poll_panic() {
    use aioctx::Backend;
    for (name, b) in [("epoll", Backend::Epoll), ("io_uring", Backend::IoUring)] {
        for blocking in [true, false] {
            let Ok(ctx) = AioContext::builder().backend(b.clone()).build() else {
                continue; // io_uring refused by this kernel
            };
            if ctx.backend_name() != name {
                continue; // a build that forces another backend
            }
            let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
            ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new().on_read(|_| {})).unwrap();
            let t = ctx.timer_new(|_| {});
            t.mod_in(std::time::Duration::from_millis(20));
            ctx.poll(false); // takes the arming's notify: a blocking poll waits
            let null = std::fs::File::open("/dev/null").unwrap();
            // SAFETY: dup2 onto the monitor's own fd, which stays open (now naming /dev/null)
            // until the context's drop would close it.
            assert!(unsafe { libc::dup2(null.as_raw_fd(), ctx.as_raw_fd()) } >= 0);
            let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.poll(blocking)));
            let msg = p.map(|p| format!("returned {p}")).expect_err("a broken monitor's wait");
            let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains(&format!("{name} wait failed")), "{name} {blocking}: {msg}");
            drop(t);
            std::mem::forget(ctx); // its monitor fd names /dev/null: do not tear it down
            std::mem::forget(r);
        }
    }
}
