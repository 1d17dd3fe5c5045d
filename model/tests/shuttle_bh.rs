//! shuttle over the real code: bottom halves (bh.rs) scheduled by 6 threads, 8 each (`Bh`s and
//! oneshots), against a blocking poll loop. Schedulers: PCT and random, each from a fixed seed
//! (`support::shuttle_model`; knobs `AIOCTX_SHUTTLE_SCHED` = `pct,random` by default, `_ITERS`,
//! `_SEED`, `_DEPTH`). shuttle has no weak memory: the fence bugs are loom's; the sequentially
//! consistent ones are caught here too, by at least one of the two schedulers. A failure prints
//! shuttle's schedule string (replay it with `shuttle::replay`). Built only with `--cfg
//! aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

mod support;

use support::{shuttle_model, Size};

#[test]
#[cfg_attr(aioctx_bug = "poll_no_recheck_notified", should_panic(expected = "p_no_lost_wakeup"))]
fn bh_schedule_vs_blocking_poll() {
    shuttle_model("bh_schedule_vs_blocking_poll", || {
        support::bh_schedule_vs_blocking_poll(Size::shuttle(6, 8))
    });
}

/// A remote schedule racing the home thread's cancel + schedule of the same BH.
#[test]
fn bh_cancel_racing_schedule() {
    shuttle_model("bh_cancel_racing_schedule", support::bh_cancel_racing_schedule);
}

/// A remote schedule of a pending BH (shuttle: the sequentially consistent half of the property).
#[test]
fn bh_schedule_publishes() {
    shuttle_model("bh_schedule_publishes", support::bh_schedule_publishes);
}

/// A remote drop of a pending BH racing the home thread's dequeue: freed exactly once.
#[test]
fn bh_delete_racing_dequeue() {
    shuttle_model("bh_delete_racing_dequeue", || support::bh_delete_publishes(true));
}

/// The same racing the context's drop (`drop_all`).
#[test]
fn bh_delete_racing_context_drop() {
    shuttle_model("bh_delete_racing_context_drop", || support::bh_delete_publishes(false));
}

/// Two remote oneshots racing the context's drop: both freed once, never called.
#[test]
fn oneshots_racing_context_drop() {
    shuttle_model("oneshots_racing_context_drop", support::oneshots_racing_context_drop);
}

/// A remote schedule + drop racing a nested poll that defers the running BH.
#[test]
fn bh_reschedule_racing_nested_poll() {
    shuttle_model("bh_reschedule_racing_nested_poll", support::bh_reschedule_racing_nested_poll);
}
