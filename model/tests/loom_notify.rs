//! loom over the real code: the notify handshake (notify.rs): notify vs a blocking poll, and the
//! demonstration that SeqCst accesses are a known loom false positive.
//! Exhaustive up to the preemption bound (LOOM_MAX_PREEMPTIONS; ci/loom uses 2, --full 3), with C11
//! weak memory for the fences; never capped by time or permutations. Scenarios and properties:
//! support/mod.rs (3 threads each). Built only with `--cfg aioctx_loom`; run by ci/loom.
#![cfg(aioctx_loom)]

mod support;

use aioctx::sync::model_named;
use support::Size;

/// A remote notify vs the home thread's blocking poll: the poll returns (false), never hangs.
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
fn notify_vs_blocking_poll() {
    model_named("notify_vs_blocking_poll", || support::notify_vs_blocking_poll(Size::LOOM));
}

/// NOT a bug in aioctx: a demonstration that loom reports a false lost wakeup for a Dekker pattern
/// written with SeqCst *accesses* and no fences. In C11 the outcome `r1 == r2 == false` is
/// forbidden (all four accesses are in the single total order S), but loom 0.7 models SeqCst
/// accesses as AcqRel (tokio-rs/loom issue #180), so it finds it. aioctx writes its Dekker points
/// as Relaxed accesses plus `fence(SeqCst)`, which loom models exactly; do not "fix" a loom finding
/// by switching the protocol to SeqCst accesses: loom would then flag correct code (this test), and
/// a SeqCst RMW followed by a Relaxed load is genuinely broken on ARM
/// (`notify_me_rmw_instead_of_fence`).
#[test]
#[should_panic(expected = "both loads missed the other store")]
fn seqcst_accesses_without_fences_is_a_known_loom_false_positive() {
    use aioctx::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use aioctx::sync::{thread, Arc};
    model_named("seqcst_accesses_without_fences_is_a_known_loom_false_positive", || {
        let (x, y) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (x2, y2) = (x.clone(), y.clone());
        let t = thread::spawn(move || {
            x2.store(true, SeqCst);
            y2.load(SeqCst)
        });
        y.store(true, SeqCst);
        let r1 = x.load(SeqCst);
        let r2 = t.join().unwrap();
        assert!(r1 || r2, "both loads missed the other store (impossible under C11 SeqCst)");
    });
}
