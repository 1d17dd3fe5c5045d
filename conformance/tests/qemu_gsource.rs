//! QEMU's tests/unit/test-aio.c `/aio-gsource/*` variants, written afresh for aioctx's external-loop
//! API, plus the removed `/aio-gsource/notify` (2012–2015).
//!
//! QEMU drives the AioContext as a GSource with `g_main_context_iteration(NULL, blocking)`. Here an
//! external loop iteration `it(blocking)` is: `prepare()` (the timeout the context allows), `poll(2)` on
//! the context's fd (`AsRawFd`) with that timeout (0 when not blocking), then `check()` and, if it
//! found work, `dispatch()`. Like glib's, it returns whether the source was dispatched.
//!
//! What changed from QEMU, and why:
//! - A notify alone is not progress (docs/protocol.md §2 step 11, §6.2): `check()` reports BHs,
//!   ready fds and expired timers, never the context's own eventfd. So QEMU's `/aio-gsource/notify`
//!   (`aio_notify; g_assert(it(true))`) becomes: `it(true)` after a notify returns without blocking
//!   (the notify is not lost) and returns **false**. Glib needed drain loops (`while (it(false))`)
//!   where its own wake-ups could interfere; with no glib in between, the exact values are asserted
//!   where aioctx defines them.
//! - `/aio-gsource/bh/callback-delete/one`: as QEMU since Nov 2025, one unasserted iteration after the
//!   callback deleted its BH, then `!it(false)`.
//! - `/aio-gsource/timer/schedule` uses 100 ms instead of 750 ms.
//! - Every test runs on each backend (auto, ppoll, epoll; `prepare` moves a ppoll context to epoll,
//!   whose fd covers every handler), under a watchdog that fails instead of hanging.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::sys::EventFd;
use aioctx::{AioContext, Backend, Bh, FdHandler};

fn backends() -> Vec<(&'static str, Backend)> {
    vec![("auto", Backend::Auto), ("ppoll", Backend::Ppoll), ("epoll", Backend::Epoll)]
}

/// Run `f` once per backend on a fresh context, on a thread, failing (not hanging) after `secs`.
fn each_backend(what: &'static str, secs: u64, f: fn(&AioContext, &str)) {
    for (name, b) in backends() {
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let ctx = AioContext::builder().backend(b).build().expect("context");
            // QEMU drains glib first: `while (g_main_context_iteration(NULL, false));`
            drain(&ctx);
            f(&ctx, name);
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(()) => t.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what} ({name}): hang: not finished after {secs} s")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(p) = t.join() {
                    std::panic::resume_unwind(p)
                }
            }
        }
    }
}

/// Is the context's fd readable right now?
fn fd_readable(ctx: &AioContext) -> bool {
    poll_fd(ctx.as_raw_fd(), 0)
}

fn poll_fd(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY:
        // - `pfd` is a valid, exclusively borrowed pollfd and the count is 1;
        // - `fd` is the context's fd, open for the context's lifetime (the caller holds the context).
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return r > 0;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll(2) failed: {e}");
    }
}

/// One external-loop iteration (glib's `g_main_context_iteration`): true if the context dispatched.
fn it(ctx: &AioContext, blocking: bool) -> bool {
    let timeout = ctx.prepare();
    let ms = match (blocking, timeout) {
        (false, _) => 0,
        (true, None) => -1,
        // Round up: waking before the deadline would only spin.
        (true, Some(d)) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
    };
    poll_fd(ctx.as_raw_fd(), ms);
    if ctx.check() {
        ctx.dispatch();
        true
    } else {
        false
    }
}

/// `while (it(false));`, bounded: a context that never settles is a busy loop.
fn drain(ctx: &AioContext) -> u32 {
    let mut n = 0;
    while it(ctx, false) {
        n += 1;
        assert!(n < 1000, "it(false) keeps dispatching: busy loop");
    }
    n
}

/// QEMU's bh_test_cb: reschedule itself (through its `BhRef`: no slot, no cycle) while n < max.
fn counter_bh(ctx: &AioContext, max: u32) -> (Bh, Rc<Cell<u32>>) {
    let n = Rc::new(Cell::new(0));
    let n2 = n.clone();
    let bh = ctx.bh_new(move |this| {
        n2.set(n2.get() + 1);
        if n2.get() < max {
            this.schedule();
        }
    });
    (bh, n)
}

/// QEMU's bh_delete_cb: reschedule itself while n < max, then delete itself. Returns the owner, the
/// count and whether the callback deleted it.
fn self_deleting_bh(ctx: &AioContext, max: u32) -> (Bh, Rc<Cell<u32>>, Rc<Cell<bool>>) {
    let (n, deleted) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
    let (n2, d2) = (n.clone(), deleted.clone());
    let bh = ctx.bh_new(move |this| {
        n2.set(n2.get() + 1);
        if n2.get() < max {
            this.schedule();
        } else {
            this.delete();
            d2.set(true);
        }
    });
    (bh, n, deleted)
}

// ------------------------------------------------------------------------------------------------
// notify

/// `/aio-gsource/flush`: a notify is consumed within finitely many iterations, without a busy loop.
/// Also the case glib made hard: a notify while the external loop waits writes the eventfd; `check`
/// must drain it, or the next wait returns at once forever.
#[test]
fn gsource_flush_notify_consumed_without_busy_loop() {
    each_backend("/aio-gsource/flush", 30, |ctx, name| {
        assert!(!it(ctx, false), "{name}");
        ctx.notify();
        assert!(drain(ctx) <= 1, "{name}");
        assert!(!it(ctx, false), "{name}");

        // A notify between prepare and check (the loop is "waiting"): the fd becomes readable.
        ctx.prepare();
        ctx.notify();
        assert!(fd_readable(ctx), "{name}: a notify during the external wait wakes the fd");
        assert!(!ctx.check(), "{name}: a notify alone is no work");
        ctx.prepare();
        assert!(!fd_readable(ctx), "{name}: the eventfd was drained: no busy loop");
        assert!(!ctx.check());
    });
}

/// The removed `/aio-gsource/notify`: a notify made before a blocking iteration is not lost (the
/// iteration does not block) and, being no work, dispatches nothing.
#[test]
fn gsource_notify_before_blocking_iteration_is_not_lost() {
    each_backend("/aio-gsource/notify", 30, |ctx, name| {
        ctx.notify();
        let t = Instant::now();
        assert!(!it(ctx, true), "{name}: a notify alone dispatches nothing");
        assert!(t.elapsed() < Duration::from_secs(5), "{name}: blocked");
        assert!(!it(ctx, false), "{name}");
    });
}

/// The removed `/aio/notify`, from another thread and through the external loop: a blocking
/// iteration woken only by a notify returns, and returns false.
#[test]
fn gsource_blocking_iteration_woken_by_notify_returns_false() {
    each_backend("/aio-gsource/notify (cross-thread)", 30, |ctx, name| {
        let h = ctx.handle().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            h.notify();
        });
        assert!(!it(ctx, true), "{name}: woken by a notify only");
        t.join().unwrap();
        assert!(!it(ctx, false), "{name}");
    });
}

// ------------------------------------------------------------------------------------------------
// bottom halves

/// `/aio-gsource/bh/schedule` (and `/aio-gsource/bh/flush`, identical).
#[test]
fn gsource_bh_schedule() {
    each_backend("/aio-gsource/bh/schedule", 30, |ctx, name| {
        let (bh, n) = counter_bh(ctx, 0);
        bh.schedule();
        assert_eq!(n.get(), 0, "{name}: a BH runs only in an iteration");
        assert!(it(ctx, true), "{name}");
        assert_eq!(n.get(), 1);
        assert!(!it(ctx, false), "{name}");
        assert_eq!(n.get(), 1);
        bh.delete();
    });
}

/// `/aio-gsource/bh/schedule10`: a BH rescheduled from its callback runs once per iteration.
#[test]
fn gsource_bh_schedule10() {
    each_backend("/aio-gsource/bh/schedule10", 30, |ctx, name| {
        let (bh, n) = counter_bh(ctx, 10);
        bh.schedule();
        assert!(it(ctx, false), "{name}");
        assert_eq!(n.get(), 1, "{name}: rescheduled BH ran twice in one iteration");
        assert!(it(ctx, true), "{name}");
        assert_eq!(n.get(), 2);
        assert_eq!(drain(ctx), 8, "{name}: one run per iteration");
        assert_eq!(n.get(), 10);
        assert!(!it(ctx, false), "{name}");
        bh.delete();
    });
}

/// `/aio-gsource/bh/cancel`.
#[test]
fn gsource_bh_cancel() {
    each_backend("/aio-gsource/bh/cancel", 30, |ctx, name| {
        let (bh, n) = counter_bh(ctx, 0);
        bh.schedule();
        bh.cancel();
        assert!(!it(ctx, false), "{name}: a cancelled BH is no work");
        drain(ctx);
        assert_eq!(n.get(), 0, "{name}");
        bh.delete();
    });
}

/// `/aio-gsource/bh/delete`.
#[test]
fn gsource_bh_delete() {
    each_backend("/aio-gsource/bh/delete", 30, |ctx, name| {
        let (bh, n) = counter_bh(ctx, 0);
        bh.schedule();
        bh.delete();
        assert!(!it(ctx, false), "{name}: a deleted BH is no work");
        drain(ctx);
        assert_eq!(n.get(), 0, "{name}");
    });
}

/// `/aio-gsource/bh/callback-delete/one`.
#[test]
fn gsource_bh_callback_delete_one() {
    each_backend("/aio-gsource/bh/callback-delete/one", 30, |ctx, name| {
        let (bh, n, deleted) = self_deleting_bh(ctx, 1);
        bh.schedule();
        assert!(it(ctx, true), "{name}");
        assert_eq!(n.get(), 1);
        assert!(deleted.get(), "{name}: the callback deleted its BH");
        it(ctx, false); // QEMU since Nov 2025: one unasserted iteration
        assert!(!it(ctx, false), "{name}");
        assert_eq!(n.get(), 1);
    });
}

/// `/aio-gsource/bh/callback-delete/many`: four self-deleting BHs (max 1, 3, 2, 4) all run in the
/// first iteration.
#[test]
fn gsource_bh_callback_delete_many() {
    each_backend("/aio-gsource/bh/callback-delete/many", 30, |ctx, name| {
        let maxes = [1u32, 3, 2, 4];
        let bhs: Vec<_> = maxes.iter().map(|&m| self_deleting_bh(ctx, m)).collect();
        for (bh, _, _) in &bhs {
            bh.schedule();
        }
        assert!(it(ctx, false), "{name}");
        for (_, n, _) in &bhs {
            assert_eq!(n.get(), 1, "{name}: every scheduled BH runs in one iteration");
        }
        assert!(bhs[0].2.get());
        let mut iterations = 0;
        while bhs.iter().zip(maxes).any(|((_, n, _), m)| n.get() < m) {
            it(ctx, true);
            iterations += 1;
            assert!(iterations < 100, "{name}: not converging");
        }
        for ((_, n, deleted), m) in bhs.iter().zip(maxes) {
            assert_eq!(n.get(), m, "{name}");
            assert!(deleted.get(), "{name}");
        }
        drain(ctx);
        assert!(!it(ctx, false), "{name}");
    });
}

// ------------------------------------------------------------------------------------------------
// event notifiers

struct EvData {
    e: Arc<EventFd>,
    n: Arc<AtomicU32>,
    active: Arc<AtomicI32>,
}

/// QEMU's `event_ready_cb` registered on a fresh eventfd.
fn ev(ctx: &AioContext, active: i32, auto_set: bool) -> EvData {
    let e = Arc::new(EventFd::new().unwrap());
    let n = Arc::new(AtomicU32::new(0));
    let act = Arc::new(AtomicI32::new(active));
    let (e2, n2, a2) = (e.clone(), n.clone(), act.clone());
    ctx.set_fd_handler(
        e.fd(),
        FdHandler::new().on_read(move |_| {
            assert!(e2.test_and_clear().unwrap(), "dispatched but not set");
            n2.fetch_add(1, SeqCst);
            let left = a2.load(SeqCst);
            if left > 0 {
                a2.store(left - 1, SeqCst);
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
    let mut i = 0;
    while d.active.load(SeqCst) > 0 {
        it(ctx, true);
        i += 1;
        assert!(i < 1000, "not converging");
    }
}

/// `/aio-gsource/event/add-remove`.
#[test]
fn gsource_event_add_remove() {
    each_backend("/aio-gsource/event/add-remove", 30, |ctx, name| {
        let d = ev(ctx, 0, false);
        assert!(!it(ctx, false), "{name}: registering is no work");
        drain(ctx);
        assert_eq!(d.n.load(SeqCst), 0);
        ctx.remove_fd_handler(d.e.fd()).unwrap();
        assert!(!it(ctx, false), "{name}");
        drain(ctx);
        assert_eq!(d.n.load(SeqCst), 0);
    });
}

/// `/aio-gsource/event/wait`.
#[test]
fn gsource_event_wait() {
    each_backend("/aio-gsource/event/wait", 30, |ctx, name| {
        let d = ev(ctx, 1, false);
        drain(ctx);
        assert_eq!(d.n.load(SeqCst), 0);
        d.e.set().unwrap();
        assert!(it(ctx, true), "{name}");
        assert_eq!(d.n.load(SeqCst), 1);
        assert_eq!(d.active.load(SeqCst), 0);
        assert!(!it(ctx, false), "{name}");
        ctx.remove_fd_handler(d.e.fd()).unwrap();
        d.e.set().unwrap();
        drain(ctx);
        assert_eq!(d.n.load(SeqCst), 1, "{name}: a removed handler is not called");
    });
}

/// `/aio-gsource/event/wait/no-flush-cb`.
#[test]
fn gsource_event_wait_no_flush_cb() {
    each_backend("/aio-gsource/event/wait/no-flush-cb", 30, |ctx, name| {
        let data = ev(ctx, 10, false);
        // (a) the only user fd is set: a blocking iteration must not block.
        data.e.set().unwrap();
        assert!(it(ctx, true), "{name}");
        data.n.store(0, SeqCst);
        // (b) with a second notifier registered.
        let dummy = ev(ctx, 1, false);
        data.e.set().unwrap();
        assert!(it(ctx, false), "{name}");
        assert_eq!(data.n.load(SeqCst), 1);
        assert!(!it(ctx, false), "{name}");
        data.e.set().unwrap();
        assert!(it(ctx, false), "{name}");
        assert_eq!(data.n.load(SeqCst), 2);
        assert!(!it(ctx, false), "{name}");
        // (c) the other handler is not called spuriously.
        dummy.e.set().unwrap();
        wait_until_inactive(ctx, &dummy);
        assert_eq!(dummy.n.load(SeqCst), 1, "{name}");
        assert_eq!(data.n.load(SeqCst), 2, "{name}");
        // (d)
        ctx.remove_fd_handler(data.e.fd()).unwrap();
        ctx.remove_fd_handler(dummy.e.fd()).unwrap();
        assert!(!it(ctx, false), "{name}");
    });
}

/// `/aio-gsource/event/flush`: a handler that re-arms its own eventfd is dispatched again on the next
/// iteration (level-triggered through the epoll fd too).
#[test]
fn gsource_event_flush() {
    each_backend("/aio-gsource/event/flush", 30, |ctx, name| {
        let d = ev(ctx, 10, true);
        d.e.set().unwrap();
        assert!(it(ctx, false), "{name}");
        assert_eq!(d.n.load(SeqCst), 1);
        assert_eq!(d.active.load(SeqCst), 9);
        assert!(it(ctx, false), "{name}: the handler re-armed its eventfd");
        wait_until_inactive(ctx, &d);
        assert_eq!(d.n.load(SeqCst), 10);
        assert_eq!(d.active.load(SeqCst), 0);
        assert!(!it(ctx, false), "{name}");
        ctx.remove_fd_handler(d.e.fd()).unwrap();
        assert!(!it(ctx, false), "{name}");
    });
}

// ------------------------------------------------------------------------------------------------
// timers

/// `/aio-gsource/timer/schedule`: a timer runs only inside an iteration, never early, and a blocking
/// iteration waits for it (the timeout `prepare` returns).
#[test]
fn gsource_timer_schedule_never_early() {
    each_backend("/aio-gsource/timer/schedule", 30, |ctx, name| {
        const STEP: Duration = Duration::from_millis(100);
        let step = STEP.as_nanos() as u64;
        let dummy = ev(ctx, 0, false); // QEMU's legacy dummy notifier
        let n = Arc::new(AtomicU32::new(0));
        let fired_at = Arc::new(Mutex::new(Vec::new()));
        let (n2, f2) = (n.clone(), fired_at.clone());
        let t = ctx.timer_new(move |this| {
            let now = this.context().now_ns();
            f2.lock().unwrap().push(now);
            // QEMU's timer_test_cb with max 2: re-arm once (itself, through its `TimerRef`).
            if n2.fetch_add(1, SeqCst) + 1 < 2 {
                this.mod_ns(now + step);
            }
        });
        let first = ctx.now_ns() + step;
        t.mod_ns(first);
        drain(ctx);
        assert!(!it(ctx, false), "{name}");
        assert_eq!(n.load(SeqCst), 0);
        std::thread::sleep(STEP + Duration::from_millis(50));
        assert_eq!(n.load(SeqCst), 0, "{name}: timers run only inside an iteration");
        assert!(it(ctx, true), "{name}: the expired timer is dispatched");
        assert_eq!(n.load(SeqCst), 1);
        let second = t.deadline_ns().expect("re-armed");
        let mut i = 0;
        while n.load(SeqCst) < 2 {
            it(ctx, true);
            i += 1;
            assert!(i < 10, "{name}: blocking iterations spin instead of waiting for the timer");
        }
        assert!(ctx.now_ns() >= second, "{name}: the second expiry came early");
        let f = fired_at.lock().unwrap().clone();
        assert!(f[0] >= first && f[1] >= second, "{name}: fired early: {f:?} vs {first}, {second}");
        assert!(!it(ctx, false), "{name}: no spurious work left");
        ctx.remove_fd_handler(dummy.e.fd()).unwrap();
        t.delete();
    });
}
