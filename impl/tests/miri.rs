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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use aioctx::kernel::EventNotifier;
use aioctx::sync::Mutex;
use aioctx::sys::EventFd;
use aioctx::{AioContext, Backend, Bh};

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
        let bh = Arc::new(ctx.bh_new(move || {
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
        let slot: Arc<Mutex<Option<Bh>>> = Arc::new(Mutex::new(None));
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move || {
            r2.fetch_add(1, Ordering::Relaxed);
            let me = s2.lock().take();
            drop(me); // qemu_bh_delete from inside the callback
        });
        bh.schedule();
        *slot.lock() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(slot.lock().is_none(), "{name}: the callback did not drop its handle");
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
        let slot: Arc<Mutex<Option<Bh>>> = Arc::new(Mutex::new(None));
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move || {
            if r2.fetch_add(1, Ordering::Relaxed) == 0 {
                s2.lock().as_ref().unwrap().schedule();
                let nested = AioContext::with_current(|c| c.poll(false)).unwrap();
                assert!(!nested, "the nested poll reported progress for the running BH");
            } else {
                drop(s2.lock().take());
            }
        });
        bh.schedule();
        *slot.lock() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(ctx.poll(false), "{name}: the deferred BH did not run again");
        assert!(slot.lock().is_none(), "{name}: the second call did not drop its handle");
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
        let slot: Arc<Mutex<Option<Bh>>> = Arc::new(Mutex::new(None));
        let runs = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (slot.clone(), runs.clone());
        let bh = ctx.bh_new(move || {
            r2.fetch_add(1, Ordering::Relaxed);
            s2.lock().as_ref().unwrap().schedule();
            let nested = AioContext::with_current(|c| c.poll(false)).unwrap();
            assert!(!nested, "the nested poll reported progress for the running BH");
            drop(s2.lock().take());
        });
        bh.schedule();
        *slot.lock() = Some(bh);
        assert!(ctx.poll(false), "{name}: the BH did not run");
        assert!(slot.lock().is_none(), "{name}: the callback did not drop its handle");
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
        let bh = ctx.bh_new(move || {
            r2.fetch_add(1, Ordering::Relaxed);
        });
        bh.schedule();
        thread::spawn(move || drop(bh)).join().unwrap();
        ctx.poll(false);
        assert_eq!(runs.load(Ordering::Relaxed), 0, "{name}: a deleted BH ran");
        assert_eq!(Arc::strong_count(&runs), 1, "{name}: the deleted BH was not freed");
    }
}
