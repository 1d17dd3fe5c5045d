//! The `trace` recorder yields linearizations: in every recorded run, each read of a protocol field
//! sees the latest write before it in the log. (The full acceptance by the model is in conformance/.)
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
#![cfg(feature = "trace")]

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use aioctx::trace::{self, Step, TraceEvent};
use aioctx::AioContext;

fn value(e: &TraceEvent, k: &str) -> Option<i64> {
    e.values.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
}

/// Replays the writes of `notify_me` and `notified` and checks every read against them.
fn check_reads_see_latest_write(log: &[TraceEvent]) -> usize {
    let (mut notify_me, mut notified) = (0i64, 0i64);
    let mut checked = 0;
    for (i, e) in log.iter().enumerate() {
        match e.step {
            Step::CtxPollNotifyMeAdd
            | Step::CtxPollNotifyMeSub
            | Step::CtxPrepareNotifyMeOr
            | Step::CtxCheckNotifyMeClear => notify_me = value(e, "notify_me").unwrap(),
            Step::CtxNotifySetNotified | Step::CtxNotifyAccept => {
                notified = value(e, "notified").unwrap()
            }
            Step::CtxNotifyReadNotifyMe => {
                assert_eq!(value(e, "notify_me"), Some(notify_me), "step {i}: {e}");
                checked += 1;
            }
            Step::CtxPollRecheckNotified | Step::CtxPollUserspace => {
                assert_eq!(value(e, "notified"), Some(notified), "step {i}: {e}");
                checked += 1;
            }
            _ => {}
        }
    }
    checked
}

#[test]
fn recorded_cross_thread_runs_are_linearizations() {
    let mut reads = 0;
    let mut steps = 0;
    for _ in 0..200 {
        trace::start();
        let ctx = AioContext::new().unwrap();
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let bh = Arc::new(ctx.handle().bh_new(move |_| {
            n2.fetch_add(1, Relaxed);
        }));
        let b2 = bh.clone();
        let t = std::thread::spawn(move || b2.schedule());
        while n.load(Relaxed) == 0 {
            ctx.poll(true);
        }
        t.join().unwrap();
        let log = trace::stop();
        assert!(
            log.iter().any(|e| e.step == Step::BhPollCall && e.thread == 0),
            "the home thread ran it"
        );
        assert!(log.iter().any(|e| e.step == Step::BhScheduleFlags && e.thread == 1));
        reads += check_reads_see_latest_write(&log);
        steps += log.len();
    }
    assert!(reads > 0 && steps > 0, "nothing recorded");
    println!("trace: 200 runs, {steps} steps, {reads} reads checked against the latest write");
}
