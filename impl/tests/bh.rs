//! Bottom halves: the behaviours of QEMU's tests/unit/test-aio.c `/aio/bh/*`, written afresh.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use aioctx::{AioContext, Bh};
use common::*;

fn counter() -> (Arc<AtomicU32>, Arc<AtomicU32>) {
    let n = Arc::new(AtomicU32::new(0));
    (n.clone(), n)
}

#[test]
fn bh_schedule_runs_only_in_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (n, n2) = counter();
        let bh = ctx.bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        });
        bh.schedule();
        assert_eq!(n.load(Relaxed), 0, "{name}: a BH never runs synchronously");
        assert!(ctx.poll(true), "{name}");
        assert_eq!(n.load(Relaxed), 1);
        assert!(!ctx.poll(false), "{name}: nothing left");
        assert_eq!(n.load(Relaxed), 1);
    }
}

#[test]
fn bh_schedule_twice_runs_once() {
    let ctx = AioContext::new().unwrap();
    let (n, n2) = counter();
    let bh = ctx.bh_new(move |_| {
        n2.fetch_add(1, Relaxed);
    });
    bh.schedule();
    bh.schedule();
    assert!(bh.is_scheduled());
    assert!(ctx.poll(false));
    assert!(!bh.is_scheduled());
    assert!(!ctx.poll(false));
    assert_eq!(n.load(Relaxed), 1);
}

/// A BH rescheduled from its own callback runs in the next poll, not in the same one (schedule10).
#[test]
fn bh_schedule10_reschedule_runs_next_poll() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (n, n2) = counter();
        let bh = ctx.bh_new(move |this| {
            if n2.fetch_add(1, Relaxed) + 1 < 10 {
                this.schedule();
            }
        });
        bh.schedule();
        assert!(ctx.poll(false), "{name}");
        assert_eq!(n.load(Relaxed), 1, "{name}: rescheduled BH ran in the same poll");
        assert!(ctx.poll(true));
        assert_eq!(n.load(Relaxed), 2);
        while n.load(Relaxed) < 10 {
            assert!(ctx.poll(true));
        }
        assert_eq!(n.load(Relaxed), 10);
        assert!(!ctx.poll(false));
    }
}

#[test]
fn bh_cancel_is_not_called_nor_progress() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (n, n2) = counter();
        let bh = ctx.bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        });
        bh.schedule();
        bh.cancel();
        assert!(!ctx.poll(false), "{name}");
        assert_eq!(n.load(Relaxed), 0);
        bh.schedule(); // still usable
        assert!(ctx.poll(false));
        assert_eq!(n.load(Relaxed), 1);
    }
}

#[test]
fn bh_delete_beats_schedule() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (n, n2) = counter();
        let bh = ctx.bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        });
        bh.schedule();
        drop(bh);
        assert!(!ctx.poll(false), "{name}: the delete-only pass is not progress");
        assert_eq!(n.load(Relaxed), 0);
    }
}

/// The callback drops its own BH; the BH is freed after the callback, never touched after.
#[test]
fn bh_callback_delete_one() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
        let (n, n2) = counter();
        let s2 = slot.clone();
        let bh = ctx.bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
            drop(s2.borrow_mut().take());
        });
        bh.schedule();
        *slot.borrow_mut() = Some(bh);
        while n.load(Relaxed) < 1 {
            ctx.poll(true);
        }
        assert!(slot.borrow_mut().is_none(), "{name}");
        assert!(!ctx.poll(false), "{name}: freeing a deleted BH is not progress");
    }
}

/// A BH deleted from inside its callback (`BhRef::delete`) stays a valid `Bh` whose schedules do
/// nothing: the next poll calls nothing, is no progress, and leaves it unscheduled (its closure is
/// gone; nothing may hold it as if a call were still owed), and dropping the owner frees it.
#[test]
fn bh_deleted_by_its_callback_then_scheduled_by_its_owner_does_nothing() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (n, n2) = counter();
        let bh = ctx.bh_new(move |this| {
            n2.fetch_add(1, Relaxed);
            this.delete();
        });
        bh.schedule();
        assert!(ctx.poll(false), "{name}");
        for _ in 0..2 {
            bh.schedule();
            assert!(!ctx.poll(false), "{name}: a deleted BH's schedule is progress");
            assert!(!bh.is_scheduled(), "{name}: a deleted BH left scheduled");
        }
        assert_eq!(n.load(Relaxed), 1, "{name}: a deleted BH was called");
        drop(bh);
        assert!(!ctx.poll(false), "{name}");
    }
}

/// Four self-deleting BHs with different maxima: all scheduled ones run in one poll.
#[test]
fn bh_callback_delete_many() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let maxes = [1u32, 3, 2, 4];
        let mut state = Vec::new();
        for &max in &maxes {
            let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
            let (n, n2) = counter();
            let s2 = slot.clone();
            let bh = ctx.bh_new(move |_| {
                let v = n2.fetch_add(1, Relaxed) + 1;
                let mut g = s2.borrow_mut();
                if v < max {
                    g.as_ref().unwrap().schedule();
                } else {
                    drop(g.take());
                }
            });
            bh.schedule();
            *slot.borrow_mut() = Some(bh);
            state.push((n, slot, max));
        }
        assert!(ctx.poll(false), "{name}");
        for (n, _, _) in &state {
            assert_eq!(n.load(Relaxed), 1, "{name}: every scheduled BH runs in one poll");
        }
        assert!(state[0].1.borrow_mut().is_none());
        while state.iter().any(|(n, _, max)| n.load(Relaxed) < *max) {
            ctx.poll(true);
        }
        for (n, slot, max) in &state {
            assert_eq!(n.load(Relaxed), *max);
            assert!(slot.borrow_mut().is_none());
        }
        assert!(!ctx.poll(false));
    }
}

#[test]
fn bh_idle_is_not_progress() {
    let ctx = AioContext::new().unwrap();
    let (n, n2) = counter();
    let bh = ctx.bh_new(move |_| {
        n2.fetch_add(1, Relaxed);
    });
    bh.schedule_idle();
    // The schedule notified, so this does not block; the idle BH runs but is not progress.
    assert!(!ctx.poll(true), "an idle BH is not progress");
    assert_eq!(n.load(Relaxed), 1);
    assert!(!ctx.poll(false));
}

#[test]
fn bh_oneshot_runs_once_and_is_freed() {
    let ctx = AioContext::new().unwrap();
    let token = Arc::new(());
    let (n, n2) = counter();
    let t2 = token.clone();
    ctx.bh_oneshot(move || {
        let _keep = &t2;
        n2.fetch_add(1, Relaxed);
    });
    assert_eq!(Arc::strong_count(&token), 2);
    assert!(ctx.poll(false));
    assert_eq!(n.load(Relaxed), 1);
    assert_eq!(Arc::strong_count(&token), 1, "the oneshot closure was freed after its call");
    assert!(!ctx.poll(false));
}

/// A nested poll from a BH callback first finishes the outer slice, and never re-enters the running BH.
#[test]
fn bh_nested_poll_finishes_outer_slice_and_does_not_reenter() {
    let ctx = AioContext::new().unwrap();
    let depth = Arc::new(AtomicU32::new(0));
    let (a, a2) = counter();
    let (b, b2) = counter();
    let d2 = depth.clone();
    let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
    let s2 = slot.clone();
    let bh_a = ctx.bh_new(move |_| {
        assert_eq!(d2.fetch_add(1, Relaxed), 0, "BH re-entered");
        a2.fetch_add(1, Relaxed);
        // Reschedule self, then poll nested: it must not re-enter us.
        s2.borrow_mut().as_ref().unwrap().schedule();
        AioContext::with_current(|ctx| ctx.poll(false)).expect("current context"); // (= this.context())
        d2.fetch_sub(1, Relaxed);
    });
    let bh_b = ctx.bh_new(move |_| {
        b2.fetch_add(1, Relaxed);
    });
    bh_a.schedule();
    bh_b.schedule();
    *slot.borrow_mut() = Some(bh_a);
    assert!(ctx.poll(false));
    assert_eq!(a.load(Relaxed), 1);
    assert_eq!(b.load(Relaxed), 1, "the nested poll ran the rest of the outer slice");
    // The self-reschedule is pending; the next poll runs it.
    assert!(ctx.poll(false));
    assert_eq!(a.load(Relaxed), 2);
    slot.borrow_mut().take();
    drop(bh_b);
}

/// Dropping the context drops scheduled BHs without calling them; later ones are dropped too.
#[test]
fn context_drop_drops_pending_bhs_without_calling() {
    let ctx = AioContext::new().unwrap();
    let h = ctx.handle().clone();
    let called = Arc::new(AtomicU32::new(0));
    let token = Arc::new(());
    let (c2, t2) = (called.clone(), token.clone());
    h.bh_oneshot(move || {
        let _k = &t2;
        c2.fetch_add(1, Relaxed);
    });
    assert!(!h.is_closed());
    drop(ctx);
    assert!(h.is_closed());
    assert_eq!(Arc::strong_count(&token), 1, "pending closure dropped with the context");
    let (c3, t3) = (called.clone(), token.clone());
    h.bh_oneshot(move || {
        let _k = &t3;
        c3.fetch_add(1, Relaxed);
    });
    drop(h);
    assert_eq!(Arc::strong_count(&token), 1, "late closure dropped with the last handle");
    assert_eq!(called.load(Relaxed), 0);
}

/// Bug-history B19: the callback drops its own handle, then polls nested. The nested poll dequeues
/// the deleted BH while its callback is still running: it must not be freed until the callback
/// returns (miri checks the memory; here the callback keeps using its captured state afterwards).
#[test]
fn bh_callback_deletes_itself_then_polls_nested() {
    let ctx = AioContext::new().unwrap();
    let slot: Rc<RefCell<Option<Bh>>> = Rc::default();
    let (n, n2) = counter();
    let s2 = slot.clone();
    let state = [1u8; 64]; // owned by the closure: freed with the BH
    let bh = ctx.bh_new(move |_| {
        // Delete = enqueue(DELETED); the nested poll then dequeues it DELETED while we still run.
        drop(s2.borrow_mut().take());
        AioContext::with_current(|c| c.poll(false)).unwrap();
        // Still inside the (deleted) BH's closure: its captures must be alive.
        assert_eq!(state.iter().map(|&b| b as u32).sum::<u32>(), 64);
        n2.fetch_add(1, Relaxed);
    });
    bh.schedule();
    *slot.borrow_mut() = Some(bh);
    assert!(ctx.poll(false));
    assert_eq!(n.load(Relaxed), 1);
    assert!(!ctx.poll(false));
}

/// Dropping a `Bh` on another thread while it is pending: never called, freed by the loop.
#[test]
fn bh_dropped_on_other_thread_while_pending_is_not_called() {
    let ctx = AioContext::new().unwrap();
    for _ in 0..1000 {
        let (n, n2) = counter();
        let bh = ctx.handle().bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        });
        bh.schedule();
        std::thread::spawn(move || drop(bh)).join().unwrap();
        assert!(!ctx.poll(false));
        assert_eq!(n.load(Relaxed), 0);
    }
}
