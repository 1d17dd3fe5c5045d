//! loom over the real code: bottom halves (bh.rs) scheduled from other threads vs a blocking poll
//! loop. Exhaustive up to the preemption bound (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3),
//! with C11 weak memory for the fences; never capped by time or permutations. Scenarios and
//! properties: support/mod.rs (3 threads each). Built only with `--cfg aioctx_loom`; run by
//! ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// Two remote threads schedule a BH each (a `Bh` made on the home thread) while the home thread
/// loops `while !all_ran { poll(true) }`: each runs exactly once, no hang. (With a plain store in
/// `notify_accept` this scenario found a C11 lost wakeup in the correct build; see notify.rs.)
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
fn bh_schedule_vs_blocking_poll() {
    model_named("bh_schedule_vs_blocking_poll", || {
        support::bh_schedule_vs_blocking_poll(Size::LOOM)
    });
}

/// A remote schedule racing the home thread's cancel + schedule of the same BH: `cancel` clears
/// SCHEDULED with one RMW (kills mutant `bh::cancel::fetch_and#1:split`, see mutants/CLAIMS).
#[test]
fn bh_cancel_racing_schedule() {
    model_named("bh_cancel_racing_schedule", support::bh_cancel_racing_schedule);
}

/// A remote schedule of a pending BH publishes its writes through the flags alone (mutants/CLAIMS).
#[test]
fn bh_schedule_publishes() {
    model_named("bh_schedule_publishes", support::bh_schedule_publishes);
}

/// A remote drop of a pending BH racing the home thread's dequeue: freed once, its drop sees the
/// owner's writes (mutants/CLAIMS).
#[test]
fn bh_delete_racing_dequeue() {
    model_named("bh_delete_racing_dequeue", || support::bh_delete_publishes(true));
}

/// The same racing the context's drop (`drop_all`).
#[test]
fn bh_delete_racing_context_drop() {
    model_named("bh_delete_racing_context_drop", || support::bh_delete_publishes(false));
}

/// Two remote oneshots racing the context's drop: both freed once, never called (mutants/CLAIMS).
#[test]
fn oneshots_racing_context_drop() {
    model_named("oneshots_racing_context_drop", support::oneshots_racing_context_drop);
}

/// A remote schedule + drop racing a nested poll that defers the running BH.
#[test]
fn bh_reschedule_racing_nested_poll() {
    model_named("bh_reschedule_racing_nested_poll", support::bh_reschedule_racing_nested_poll);
}

/// `is_closed` synchronizes with the context's drop (mutants/CLAIMS).
#[test]
fn closed_publishes() {
    model_named("closed_publishes", support::closed_publishes);
}
