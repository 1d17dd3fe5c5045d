//! loom over the real code: tasks (impl/src/task), woken from another thread while the home thread
//! polls them, blocks, cancels them or drops the context. Scenarios: support/task.rs. Built only
//! with `--cfg aioctx_loom`; run by ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::task::{self, End};
use support::Size;

/// Two remote threads wake a task each while the home thread loops on blocking polls.
#[test]
#[cfg_attr(
    any(
        aioctx_bug = "task_clears_woken_after_poll",
        aioctx_bug = "notify_no_seqcst_fence",
        aioctx_bug = "poll_no_fence_after_arm",
        aioctx_bug = "poll_no_recheck_notified"
    ),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn task_wake_vs_blocking_poll() {
    model_named("task_wake_vs_blocking_poll", || task::task_wake_vs_blocking_poll(Size::LOOM));
}

/// `block_on`'s own waker (a flag and a notify) against its blocking poll.
#[test]
#[cfg_attr(
    any(aioctx_bug = "notify_no_seqcst_fence", aioctx_bug = "poll_no_fence_after_arm"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn block_on_wake_vs_blocking_poll() {
    model_named("block_on_wake_vs_blocking_poll", task::block_on_wake_vs_blocking_poll);
}

/// A remote wake racing the task's completion.
#[test]
fn task_complete_racing_wake() {
    model_named("task_complete_racing_wake", || task::task_end_racing_wake(End::Complete));
}

/// A remote wake racing the task's cancellation.
#[test]
fn task_cancel_racing_wake() {
    model_named("task_cancel_racing_wake", || task::task_end_racing_wake(End::Cancel));
}

/// A remote wake racing the context's drop.
#[test]
fn task_context_drop_racing_wake() {
    model_named("task_context_drop_racing_wake", || task::task_end_racing_wake(End::DropContext));
}

/// The task's waker as the only link: two wakes, the second coalesced, each publishing a value
/// (kills the weakenings of the `woken` flag's orderings: mutants/CLAIMS).
#[test]
#[cfg_attr(
    aioctx_bug = "task_clears_woken_after_poll",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn task_wakes_publish() {
    model_named("task_wakes_publish", task::task_wakes_publish);
}

/// `block_on`'s waker as the only link (mutants/CLAIMS).
#[test]
fn block_on_wake_publishes() {
    model_named("block_on_wake_publishes", task::block_on_wake_publishes);
}
