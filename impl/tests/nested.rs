//! Nested polls (issue 14): a callback that polls its own context (`BhRef::context`,
//! `TimerRef::context`, `FdRef::context`; QEMU's `AIO_WAIT_WHILE` / drain idiom) while a BH, timer or fd handler cannot run because its callback is
//! the one running further up the stack. The rule, on every backend: such work is neither progress nor
//! a reason for a zero timeout (a nested `poll(false)` loop ends, a nested `poll(true)` sleeps until
//! something it can run arrives), and it is not lost: it runs once the outer call has returned.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::{AioContext, Backend, FdHandler, ModelKernel, Timer};
use common::*;

/// Nested `while poll(false) {}`; returns how many calls reported progress. Stops at SPIN_CAP.
fn nested_drain(ctx: &AioContext) -> u32 {
    let mut n = 0;
    while n < SPIN_CAP && ctx.poll(false) {
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- bottom halves

/// A BH that reschedules itself, then drains nested: the nested poll does not call it (it is running)
/// and must not report progress for it, so the drain loop ends at once. The reschedule is kept: the
/// BH runs again in the first poll after the outer one.
#[test]
fn bh_rescheduled_then_nested_drain_ends_and_runs_after() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let calls = Arc::new(AtomicU32::new(0));
        let nested_progress = Arc::new(AtomicU32::new(u32::MAX));
        let (c2, p2) = (calls.clone(), nested_progress.clone());
        let bh = ctx.bh_new(move |this| {
            if c2.fetch_add(1, Relaxed) == 0 {
                this.schedule();
                p2.store(nested_drain(this.context()), Relaxed);
            }
        });
        bh.schedule();
        assert!(ctx.poll(false), "{name}");
        assert_eq!(calls.load(Relaxed), 1, "{name}: the BH was re-entered");
        assert_eq!(
            nested_progress.load(Relaxed),
            0,
            "{name}: nested poll(false) reported progress for a BH it did not call"
        );
        assert!(ctx.poll(false), "{name}: the reschedule was lost");
        assert_eq!(calls.load(Relaxed), 2, "{name}");
        assert!(!ctx.poll(false), "{name}");
        bh.delete();
    }
}

/// A BH that reschedules itself, then waits nested (poll(true)) for another thread's work 50 ms away:
/// the nested wait must sleep, not spin with a zero timeout.
#[test]
fn bh_rescheduled_then_nested_blocking_wait_sleeps() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let calls = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(Mutex::new((0, 0)));
        let (c2, seen2) = (calls.clone(), seen.clone());
        let bh = ctx.bh_new(move |this| {
            if c2.fetch_add(1, Relaxed) == 0 {
                this.schedule();
                let ctx = this.context();
                let (done, t) = work_after(ctx.handle(), Duration::from_millis(50));
                *seen2.lock().unwrap() = nested_wait(ctx, &done);
                t.join().unwrap();
            }
        });
        bh.schedule();
        assert!(ctx.poll(false), "{name}");
        let (n, progress) = *seen.lock().unwrap();
        assert!(
            n <= FEW_CALLS,
            "{name}: the nested wait spun: {n} poll(true) calls ({progress} reported progress)"
        );
        assert_eq!(
            progress, 1,
            "{name}: only the call that ran the other thread's work is progress"
        );
        assert_eq!(calls.load(Relaxed), 1, "{name}: the BH was re-entered");
        assert!(ctx.poll(false), "{name}: the reschedule was lost");
        assert_eq!(calls.load(Relaxed), 2, "{name}");
        bh.delete();
    }
}

// ---------------------------------------------------------------- timers

/// A timer that re-arms itself for "now" and then polls nested: the nested poll does not call it and
/// does not report progress, and the new arming is kept: it fires again after the outer call.
#[test]
fn timer_rearmed_then_nested_poll_keeps_its_arming() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let fired = Arc::new(AtomicU32::new(0));
        let nested_progress = Arc::new(AtomicU32::new(u32::MAX));
        let (f2, p2) = (fired.clone(), nested_progress.clone());
        let t = ctx.timer_new(move |this| {
            if f2.fetch_add(1, Relaxed) == 0 {
                this.mod_ns(0);
                p2.store(nested_drain(this.context()), Relaxed);
            }
        });
        t.mod_ns(0);
        assert!(ctx.poll(false), "{name}");
        assert_eq!(fired.load(Relaxed), 1, "{name}: the timer was re-entered");
        assert!(t.is_pending(), "{name}: the re-arming made inside the callback was dropped");
        assert_eq!(
            nested_progress.load(Relaxed),
            0,
            "{name}: nested poll(false) reported progress for a timer it did not call"
        );
        assert!(ctx.poll(false), "{name}");
        assert_eq!(fired.load(Relaxed), 2, "{name}: fired once instead of twice");
        assert!(!t.is_pending(), "{name}");
        t.delete();
    }
}

/// A periodic 20 ms timer that re-arms first, then waits nested (poll(true)) 60 ms for another
/// thread's work. Its deadline passes during the nested wait: the wait must sleep (not spin on the
/// expired, uncallable timer), and the timer must keep firing, about once per 60 ms.
#[test]
fn periodic_timer_with_nested_wait_keeps_firing() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        const PERIOD: Duration = Duration::from_millis(20);
        let fired = Arc::new(AtomicU32::new(0));
        let max_calls = Arc::new(AtomicU32::new(0));
        let (f2, m2) = (fired.clone(), max_calls.clone());
        let periodic = ctx.timer_new(move |this| {
            f2.fetch_add(1, Relaxed);
            this.mod_in(PERIOD);
            let ctx = this.context();
            let (done, t) = work_after(ctx.handle(), Duration::from_millis(60));
            let (n, _) = nested_wait(ctx, &done);
            m2.fetch_max(n, Relaxed);
            t.join().unwrap();
        });
        periodic.mod_in(PERIOD);
        // The run ends at a second timer (the loop below never blocks forever, even if the periodic
        // timer stopped).
        let over = Arc::new(AtomicBool::new(false));
        let o2 = over.clone();
        let end = ctx.timer_new(move |_| o2.store(true, Relaxed));
        end.mod_in(Duration::from_millis(300));
        let t0 = Instant::now();
        while !over.load(Relaxed) {
            assert!(t0.elapsed() < Duration::from_secs(10), "{name}: hang");
            ctx.poll(true);
        }
        let n = fired.load(Relaxed);
        assert!(n >= 3, "{name}: the periodic timer fired {n} times in 300 ms");
        assert!(periodic.is_pending(), "{name}: the periodic timer was left disarmed");
        let m = max_calls.load(Relaxed);
        assert!(m <= FEW_CALLS, "{name}: a nested wait spun: {m} poll(true) calls");
        periodic.delete();
    }
}

// ---------------------------------------------------------------- timer drop

/// Dropping an armed timer releases its closure (and what it captured) at once, not when its heap
/// entry is pruned (an hour away here).
#[test]
fn timer_drop_releases_its_closure() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let token = Arc::new(());
        let t2 = token.clone();
        let t = ctx.timer_new(move |_| {
            let _keep = &t2;
        });
        t.mod_in(Duration::from_secs(3600));
        t.mod_in(Duration::from_secs(7200)); // a stale entry as well
        assert_eq!(Arc::strong_count(&token), 2);
        drop(t);
        assert_eq!(Arc::strong_count(&token), 1, "{name}: the dropped timer's closure is alive");
        assert!(!ctx.poll(false), "{name}");

        // Disarmed first, dropped on another thread.
        let t3 = token.clone();
        let t = ctx.handle().timer_new(move |_| {
            let _keep = &t3;
        });
        t.mod_in(Duration::from_secs(3600));
        t.del();
        std::thread::spawn(move || drop(t)).join().unwrap();
        assert_eq!(Arc::strong_count(&token), 1, "{name}: (other thread)");
    }
}

/// A timer callback that drops its own `Timer`: the closure stays alive until the call returns (it
/// keeps using its captures), and is released then.
#[test]
fn timer_callback_drops_its_own_timer() {
    let ctx = AioContext::new().unwrap();
    let token = Arc::new(());
    let slot: Rc<RefCell<Option<Timer>>> = Rc::default();
    let (s2, t2) = (slot.clone(), token.clone());
    let state = [1u8; 64];
    let t = ctx.timer_new(move |_| {
        drop(s2.borrow_mut().take());
        AioContext::with_current(|c| c.poll(false)).unwrap();
        assert_eq!(state.iter().map(|&b| b as u32).sum::<u32>(), 64);
        assert!(Arc::strong_count(&t2) >= 2);
    });
    t.mod_ns(0);
    *slot.borrow_mut() = Some(t);
    assert!(ctx.poll(false));
    assert!(slot.borrow_mut().is_none());
    assert_eq!(Arc::strong_count(&token), 1, "the closure was not released after its call");
}

// ---------------------------------------------------------------- fd handlers

/// A non-blocking poll nested in an fd callback whose fd is still ready leaves that fd in its zero
/// wait: a zero wait cannot spin, so taking the fd out and putting it back (two registration
/// changes, an epoll_ctl each) would be cost for nothing; the ready fd is not dispatched (its
/// callback is running) and is no progress. A blocking nested wait does take it out and put it
/// back: the two changes the counter shows.
#[test]
fn nested_non_blocking_poll_changes_no_registration() {
    let k = ModelKernel::new();
    let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
    let fd = k.open();
    k.set_readable(fd, true);
    let calls = Rc::new(Cell::new(0));
    let seen = Rc::new(Cell::new(None));
    let (c2, s2, k2) = (calls.clone(), seen.clone(), k.clone());
    ctx.set_fd_handler(
        fd,
        FdHandler::new().on_read(move |this| {
            c2.set(c2.get() + 1);
            if c2.get() > 1 {
                return;
            }
            let ctx = this.context();
            let at = |f: &dyn Fn() -> bool| {
                let before = k2.registration_changes();
                (f(), k2.registration_changes() - before)
            };
            let zero = at(&|| ctx.poll(false));
            let t = ctx.timer_new(|_| {});
            t.mod_in(Duration::from_millis(1));
            // Arming the timer notified the context: the first poll(true) takes that kick without
            // waiting, the second waits for the timer.
            let blocking = at(&|| !ctx.poll(true) && ctx.poll(true));
            s2.set(Some((zero, blocking)));
        }),
    )
    .unwrap();
    assert!(ctx.poll(false));
    let (zero, blocking) = seen.get().expect("the callback ran");
    assert_eq!(zero, (false, 0), "nested poll(false): (progress, registration changes)");
    assert_eq!(blocking, (true, 2), "nested poll(true) until a timer: (progress, changes)");
    assert_eq!(calls.get(), 1, "the running handler was re-entered");
    assert!(ctx.poll(false), "its fd, still readable, is dispatched after the outer call");
    assert_eq!(calls.get(), 2);
}

/// A read handler whose fd stays ready (readable and never read, or hung up) waits nested for
/// another thread's work: the nested wait must sleep (the handler cannot run, so its readiness must
/// not end the wait), and the handler runs again after the outer call (its fd is still ready).
#[test]
fn handler_nested_blocking_wait_sleeps_and_runs_after() {
    for (name, b) in backends() {
        for hung_up in [false, true] {
            let ctx = ctx(&b);
            let (r, mut w) = std::os::unix::net::UnixStream::pair().unwrap();
            if hung_up {
                drop(w);
            } else {
                w.write_all(b"x").unwrap();
            }
            let run = handler_waits_nested(&ctx, &r);
            run.assert_slept_and_ran_after(&format!("{name}, hung up: {hung_up}"));
            assert!(!ctx.poll(false), "{name}");
        }
    }
}
