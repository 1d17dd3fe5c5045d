//! loom over the real code: adaptive userspace polling (poll.rs): notify while polling, poll-mode
//! end and idle removal racing a device's request. Exhaustive up to the preemption bound
//! (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3), with C11 weak memory for the fences; never
//! capped by time or permutations. Scenarios and properties: support/mod.rs (3 threads each). Built
//! only with `--cfg aioctx_loom`; run by ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// Two remote oneshots while the home thread polls in userspace (a poll handler on the poll list,
/// notify_me 0): the loop must see `notified` while polling or re-check it after arming.
#[test]
#[cfg_attr(
    any(aioctx_bug = "notify_no_seqcst_fence", aioctx_bug = "poll_no_recheck_notified"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn notify_during_userspace_polling() {
    model_named("notify_during_userspace_polling", || {
        support::notify_during_userspace_polling(Size::LOOM)
    });
}

/// A virtio-like device: two producers push requests (kicking the fd only while the consumer has
/// kicks enabled) while the home thread polls; a request pushed while kicks were off must be found
/// by polling or by the final poll after io_poll_end.
#[test]
#[cfg_attr(
    aioctx_bug = "no_final_poll_after_poll_end",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn poll_mode_end_racing_event() {
    model_named("poll_mode_end_racing_event", || support::poll_mode_end_racing_event(Size::LOOM));
}

/// As poll_mode_end_racing_event on an io_uring-like backend with a 1 ns idle timeout: the handler
/// leaves the poll list while the producers push; the removal's io_poll_end + final poll must find
/// a request pushed while kicks were off.
#[test]
#[cfg_attr(
    aioctx_bug = "no_final_poll_after_poll_end",
    should_panic(expected = "p_no_lost_wakeup")
)]
fn idle_removal_racing_event() {
    model_named("idle_removal_racing_event", || support::idle_removal_racing_event(Size::LOOM));
}

/// The home thread alone polls a never-ready poll handler on a clock that stands still, then waits
/// for a timer: polling must end by the checkers' bound on rounds (`p_no_busy_loop` otherwise).
#[test]
fn polling_ends_on_a_still_clock() {
    model_named("polling_ends_on_a_still_clock", support::polling_ends_on_a_still_clock);
}
