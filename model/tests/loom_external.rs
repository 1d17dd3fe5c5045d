//! loom over the real code: the external-loop integration (prepare / check / dispatch, ctx.rs) with
//! a second poller nested in its window. Exhaustive up to the preemption bound
//! (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3), with C11 weak memory for the fences; never
//! capped by time or permutations. Scenarios and properties: support/mod.rs (3 threads each). Built
//! only with `--cfg aioctx_loom`; run by ci/loom.
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
