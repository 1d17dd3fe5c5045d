//! shuttle over the real code: timers (timer.rs) armed by 4 threads, 4 each, against a blocking
//! poll loop. Schedulers: PCT and random, each from a fixed seed (`support::shuttle_model`; knobs
//! `AIOCTX_SHUTTLE_SCHED` = `pct,random` by default, `_ITERS`, `_SEED`, `_DEPTH`). shuttle has no
//! weak memory: the fence bugs are loom's; the sequentially consistent ones are caught here too, by
//! at least one of the two schedulers. A failure prints shuttle's schedule string (replay it with
//! `shuttle::replay`). Built only with `--cfg aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

mod support;

use support::{shuttle_model, Size};

#[test]
#[cfg_attr(aioctx_bug = "poll_no_recheck_notified", should_panic(expected = "p_no_lost_wakeup"))]
fn timer_mod_from_other_thread() {
    shuttle_model("timer_mod_from_other_thread", || {
        support::timer_mod_from_other_thread(Size::shuttle(4, 4))
    });
}

/// A remote timer move racing a remote BH (3 threads; see support::timer_mod_racing_bh).
#[test]
fn timer_mod_racing_bh() {
    shuttle_model("timer_mod_racing_bh", support::timer_mod_racing_bh);
}
