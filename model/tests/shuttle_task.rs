//! shuttle over the real code: tasks (impl/src/task) woken by 4 threads, 4 wakes each, against the
//! home thread's blocking polls; wakes racing the task's end. Scenarios: support/task.rs. Built only
//! with `--cfg aioctx_shuttle`; run by ci/shuttle.
#![cfg(aioctx_shuttle)]

mod support;

use support::task::{self, End};
use support::{shuttle_model, Size};

#[test]
#[cfg_attr(
    any(aioctx_bug = "task_clears_woken_after_poll", aioctx_bug = "poll_no_recheck_notified"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn task_wake_vs_blocking_poll() {
    shuttle_model("task_wake_vs_blocking_poll", || {
        task::task_wake_vs_blocking_poll(Size::shuttle(4, 4))
    });
}

#[test]
fn block_on_wake_vs_blocking_poll() {
    shuttle_model("block_on_wake_vs_blocking_poll", task::block_on_wake_vs_blocking_poll);
}

#[test]
fn task_complete_racing_wake() {
    shuttle_model("task_complete_racing_wake", || task::task_end_racing_wake(End::Complete));
}

#[test]
fn task_cancel_racing_wake() {
    shuttle_model("task_cancel_racing_wake", || task::task_end_racing_wake(End::Cancel));
}

#[test]
fn task_context_drop_racing_wake() {
    shuttle_model("task_context_drop_racing_wake", || task::task_end_racing_wake(End::DropContext));
}

#[test]
#[cfg_attr(
    aioctx_bug = "task_clears_woken_after_poll",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn task_wakes_publish() {
    shuttle_model("task_wakes_publish", task::task_wakes_publish);
}

#[test]
fn block_on_wake_publishes() {
    shuttle_model("block_on_wake_publishes", task::block_on_wake_publishes);
}
