//! Which steps commute, and the one reordering the replayer needs.
//!
//! The implementation records (and so gates) its fd-monitor waits when they RETURN, but a wait
//! reads the notifier's readiness when it is CALLED: right after the thread's previous step, when
//! the timeout is 0 or finite (the model kernel then returns at once); an infinite wait blocks until
//! the notifier is set and is not affected. So a model trace in which another thread writes the
//! notifier (`ctx_notify_event_set`, `ctx_poll_event_drain`) between a poller's previous step `k`
//! and its non-blocking wait `w` cannot be followed as written. [`normalize_waits`] moves `k` to just
//! before `w` when `k` commutes with everything in between (it touches none of the variables those
//! steps write, and they touch none it writes): the result is the same run as a Mazurkiewicz trace
//! (every event reads the same values, the final state is the same), and the replayer re-checks it
//! against the model. When `k` does not commute (e.g. a re-check of `notified` with a notify in
//! between), the trace is not replayable through a post-wait gate and is counted as such.
//!
//! Footprints are over the model's shared variables (sequentially consistent: fences touch
//! nothing). `ctx_notify_release_fence` conservatively writes the ghost request of a bare notify.

use aioctx::trace::Step;
use aioctx_model::{Poller, Scenario, Trace, TraceEvent};

const NOTIFY_ME: u8 = 1;
const NOTIFIED: u8 = 2;
const NOTIFIER: u8 = 4;
const BH_LIST: u8 = 8;
const BH_FLAGS: u8 = 16;
const REQUEST: u8 = 32;
const ALL: u8 = 63;

/// (reads, writes) of a step, over the model's shared variables.
pub fn footprint(step: Step) -> (u8, u8) {
    use Step::*;
    match step {
        CtxNotifyFence | CtxPollFence | CtxPrepareFence | CtxNotifyAcceptFence | BhPollCall => {
            (0, 0)
        }
        CtxNotifyReleaseFence => (0, REQUEST),
        CtxNotifySetNotified | CtxNotifyAccept => (NOTIFIED, NOTIFIED),
        CtxNotifyReadNotifyMe => (NOTIFY_ME, 0),
        CtxNotifyEventSet => (0, NOTIFIER),
        CtxPollComputeTimeout => (BH_LIST | BH_FLAGS, 0),
        CtxPollUserspace | CtxPollRecheckNotified => (NOTIFIED, 0),
        CtxPollNotifyMeAdd | CtxPollNotifyMeSub | CtxPrepareNotifyMeOr | CtxCheckNotifyMeClear => {
            (NOTIFY_ME, NOTIFY_ME)
        }
        CtxPollWait => (NOTIFIER, 0),
        CtxPollEventDrain => (NOTIFIER, NOTIFIER),
        BhScheduleFlags | BhCancel | BhDelete | BhPollDequeue => (BH_FLAGS, BH_FLAGS),
        BhSchedulePush => (BH_LIST, BH_LIST),
        BhPollTake => (BH_LIST | REQUEST, BH_LIST | REQUEST),
        _ => (ALL, ALL),
    }
}

/// Whether two events of different threads can be swapped.
pub fn commute(a: &TraceEvent, b: &TraceEvent) -> bool {
    if a.thread == b.thread {
        return false;
    }
    let ((ra, wa), (rb, wb)) = (footprint(a.step), footprint(b.step));
    wa & (rb | wb) == 0 && wb & ra == 0
}

/// True for a wait that the implementation gates after it returned and that reads the notifier on
/// arrival: every `ctx_poll_wait` with a non-infinite timeout, except an external loop's own wait
/// (the harness gates that one before it waits).
fn gated_after_arrival(sc: &Scenario, events: &[TraceEvent], w: usize, k: usize) -> bool {
    let e = &events[w];
    if e.value("timeout") == Some(-1) {
        return false;
    }
    let external = matches!(sc.pollers.get(e.thread as usize), Some(Poller::External(_)));
    !(external && events[k].step == Step::CtxPollComputeTimeout)
}

/// Reorder `trace` so that no other thread writes the notifier between a poller's previous step and
/// its non-blocking wait (see the module docs). `Err(i)`: event `i` (a wait) cannot be reached so.
pub fn normalize_waits(sc: &Scenario, trace: &Trace) -> Result<Trace, usize> {
    let mut ev = trace.events.clone();
    let mut w = 0;
    while w < ev.len() {
        if ev[w].step == Step::CtxPollWait {
            let t = ev[w].thread;
            if let Some(k) = ev[..w].iter().rposition(|e| e.thread == t) {
                let writes_notifier =
                    ev[k + 1..w].iter().any(|e| footprint(e.step).1 & NOTIFIER != 0);
                if writes_notifier && gated_after_arrival(sc, &ev, w, k) {
                    if !ev[k + 1..w].iter().all(|e| commute(&ev[k], e)) {
                        return Err(w);
                    }
                    let moved = ev.remove(k);
                    ev.insert(w - 1, moved);
                }
            }
        }
        w += 1;
    }
    Ok(Trace { events: ev })
}
