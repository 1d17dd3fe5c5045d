//! loom over the real code: timers (timer.rs) armed from another thread vs a blocking poll.
//! Exhaustive up to the preemption bound (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3), with C11
//! weak memory for the fences; never capped by time or permutations. Scenarios and properties:
//! support/mod.rs (3 threads each). Built only with `--cfg aioctx_loom`; run by ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// Two remote threads arm a timer each while the home thread blocks: the arming wakes the wait to
/// recompute its timeout, and each timer runs once, never early (the model wait times out by moving
/// the model clock).
#[test]
#[cfg_attr(
    any(
        aioctx_bug = "notify_no_seqcst_fence",
        aioctx_bug = "poll_no_fence_after_arm",
        aioctx_bug = "notify_me_rmw_instead_of_fence",
        aioctx_bug = "poll_no_recheck_notified"
    ),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn timer_mod_from_other_thread() {
    model_named("timer_mod_from_other_thread", || support::timer_mod_from_other_thread(Size::LOOM));
}

/// A remote timer move racing a remote BH (3 threads): accept's fence publishes the timer's
/// `earliest` to the next timeout computation (kills mutant `notify::accept::fence#1:remove`, see
/// mutants/CLAIMS; notify's Release fence is not shown here, see mutants/SURVIVORS.md).
#[test]
fn timer_mod_racing_bh() {
    model_named("timer_mod_racing_bh", support::timer_mod_racing_bh);
}
