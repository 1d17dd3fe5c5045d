//! loom over the real code: fd handler removal from another thread during dispatch (handler.rs).
//! Exhaustive up to the preemption bound (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3), with C11
//! weak memory for the fences; never capped by time or permutations. Scenarios and properties:
//! support/mod.rs (3 threads each). Built only with `--cfg aioctx_loom`; run by ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// Two remote threads remove one level-triggered handler each while the home thread dispatches
/// them: no callback starts after its removal returned (beyond one already dispatched), no crash,
/// no leak. No planted bug is about removal; the scenario checks the deferred-deletion path.
#[test]
fn handler_removal_during_dispatch() {
    model_named("handler_removal_during_dispatch", || {
        support::handler_removal_during_dispatch(Size::LOOM)
    });
}
