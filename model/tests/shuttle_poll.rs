//! shuttle over the real code: adaptive userspace polling (poll.rs), scaled up (4 producer or
//! scheduler threads), plus everything at once (`mixed_traffic`: 8 threads of BH schedulers, device
//! producers, timer armers and handler churners against a polling context). Schedulers: PCT and
//! random, each from a fixed seed (`support::shuttle_model`; knobs `AIOCTX_SHUTTLE_SCHED` =
//! `pct,random` by default, `_ITERS`, `_SEED`, `_DEPTH`). shuttle has no weak memory: the fence
//! bugs are loom's; the sequentially consistent ones are caught here too, by at least one of the
//! two schedulers. A failure prints shuttle's schedule string (replay it with `shuttle::replay`).
//! Built only with `--cfg aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

mod support;

use support::{shuttle_model, Size};

#[test]
#[cfg_attr(aioctx_bug = "poll_no_recheck_notified", should_panic(expected = "p_no_lost_wakeup"))]
fn notify_during_userspace_polling() {
    shuttle_model("notify_during_userspace_polling", || {
        support::notify_during_userspace_polling(Size::shuttle(4, 4))
    });
}

#[test]
#[cfg_attr(
    aioctx_bug = "no_final_poll_after_poll_end",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn poll_mode_end_racing_event() {
    shuttle_model("poll_mode_end_racing_event", || {
        support::poll_mode_end_racing_event(Size::shuttle(4, 8))
    });
}

#[test]
#[cfg_attr(
    aioctx_bug = "no_final_poll_after_poll_end",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn idle_removal_racing_event() {
    shuttle_model("idle_removal_racing_event", || {
        support::idle_removal_racing_event(Size::shuttle(4, 8))
    });
}

#[test]
fn mixed_traffic() {
    shuttle_model("mixed_traffic", || support::mixed_traffic(Size::shuttle(8, 8)));
}
