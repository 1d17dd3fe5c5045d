//! loom over the real code: the external-loop integration (prepare / check / dispatch, ctx.rs) with
//! a second poller nested in its window (a blocking poll, or a non-blocking one over an idle fd
//! handler). Exhaustive up to the preemption bound (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full
//! 3), with C11 weak memory for the fences; never capped by time or permutations. Scenarios and
//! properties: support/mod.rs (2-3 threads each). Built only with `--cfg aioctx_loom`; run by
//! ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// The external loop (prepare, its own wait on the context's fd, check, dispatch) with a blocking
/// poll nested in each prepare/check window, vs two remote oneshots.
#[test]
#[cfg_attr(
    any(aioctx_bug = "notify_no_seqcst_fence", aioctx_bug = "drain_after_scan"),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn external_prepare_and_poll_two_pollers() {
    model_named("external_prepare_and_poll_two_pollers", || {
        support::external_prepare_and_poll_two_pollers(Size::LOOM)
    });
}

/// The external loop with a non-blocking poll (and an idle fd handler) nested in each
/// prepare/check window, vs one remote thread scheduling two oneshots, the second after the first
/// ran (2 threads: the lost wakeup needs the second kick after the first one's BH ran): a kick
/// between the nested poll's accept and its drain leaves `notified` set over an empty eventfd, so
/// the next kick must still write it.
#[test]
#[cfg_attr(
    any(
        aioctx_bug = "skip_event_when_notified",
        aioctx_bug = "notify_no_seqcst_fence",
        aioctx_bug = "drain_after_scan"
    ),
    should_panic(expected = "p_no_lost_wakeup")
)]
fn external_prepare_and_nonblocking_poll() {
    model_named("external_prepare_and_nonblocking_poll", || {
        support::external_prepare_and_nonblocking_poll(Size { remotes: 1, per_remote: 2 })
    });
}

/// The plain external loop (prepare, its own wait, check, dispatch; nothing nested) vs one remote
/// oneshot: `prepare`'s fence alone orders its `notify_me |= 1` before its re-check of `notified`
/// (kills mutant `notify::prepare::fence#1:remove`, see mutants/CLAIMS).
#[test]
#[cfg_attr(aioctx_bug = "notify_no_seqcst_fence", should_panic(expected = "p_no_lost_wakeup"))]
fn external_plain_loop() {
    model_named("external_plain_loop", || {
        support::external_plain_loop(Size { remotes: 1, per_remote: 1 })
    });
}
