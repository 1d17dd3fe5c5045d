//! shuttle over the real code: the external-loop integration (prepare / check / dispatch) with a
//! blocking poll inside the prepare/check window, 4 threads scheduling oneshots. Schedulers: PCT
//! and random, each from a fixed seed (`support::shuttle_model`; knobs `AIOCTX_SHUTTLE_SCHED` =
//! `pct,random` by default, `_ITERS`, `_SEED`, `_DEPTH`). shuttle has no weak memory: the fence
//! bugs are loom's; the sequentially consistent ones are caught here too, by at least one of the
//! two schedulers. A failure prints shuttle's schedule string (replay it with `shuttle::replay`).
//! Built only with `--cfg aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

mod support;

use support::{shuttle_model, Size};

#[test]
#[cfg_attr(aioctx_bug = "drain_after_scan", should_panic(expected = "p_no_lost_wakeup"))]
fn external_prepare_and_poll_two_pollers() {
    shuttle_model("external_prepare_and_poll_two_pollers", || {
        support::external_prepare_and_poll_two_pollers(Size::shuttle(4, 4))
    });
}

#[test]
#[cfg_attr(
    any(aioctx_bug = "skip_event_when_notified", aioctx_bug = "drain_after_scan"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn external_prepare_and_nonblocking_poll() {
    shuttle_model("external_prepare_and_nonblocking_poll", || {
        support::external_prepare_and_nonblocking_poll(Size::shuttle(4, 4))
    });
}

/// The plain external loop (nothing nested in the prepare/check window) vs remote oneshots.
#[test]
fn external_plain_loop() {
    shuttle_model("external_plain_loop", || support::external_plain_loop(Size::shuttle(4, 4)));
}
