//! Implementation traces → the Rust model's [`Trace`].
//!
//! The recorder (`aioctx::trace`) and the model share the step vocabulary and the value keys, so an
//! implementation event is a model event ([`TraceEvent::from_parts`]); what the conversion does:
//!
//! - thread ids: the recorder numbers threads in registration order (thread 0 calls `start()`, the
//!   harness registers the others in scenario order), the model numbers pollers then remotes;
//!   [`Trace::map_threads`] maps one onto the other, and an unknown thread is an error, never dropped;
//! - projection: steps the Rust model leaves to other models ([`PROJECTED_OUT`]: userspace poll mode,
//!   fd handlers, timers; promela/poll_mode.pml and poll_idle.pml cover them) are removed. Each is a
//!   home-thread step that touches none of the model's shared state (`notify_me`, `notified`, the
//!   notifier, BH flags, `bh_list`), so removing it from a linearization leaves a linearization of
//!   the model's state. Nothing else is removed, merged or reordered: one implementation event is
//!   exactly one model step.

use aioctx::trace::Step;
use aioctx_model::{Trace, TraceEvent};

/// Steps removed before the Rust model sees a trace (see the module docs).
pub const PROJECTED_OUT: &[Step] = &[
    Step::CtxPollBegin,
    Step::HandlerIoPoll,
    Step::CtxPollEnd,
    Step::CtxPollFinalPoll,
    Step::HandlerPollReady,
    Step::CtxPollIdleRemove,
    Step::CtxPollAdd,
    Step::CtxPollDispatch,
    Step::TimerMod,
    Step::TimerRun,
];

/// Convert a recorded run with `threads` registered threads (recorder ids `0..threads`, mapped by
/// `map`) into a model trace.
///
/// # Errors
///
/// An event of a thread the harness did not register (something outside the scenario recorded).
pub fn to_model(
    events: &[aioctx::trace::TraceEvent],
    threads: u32,
    map: impl Fn(u32) -> u32,
) -> Result<Trace, String> {
    if let Some(e) = events.iter().find(|e| e.thread >= threads) {
        return Err(format!("event `{e}` from an unregistered thread (scenario has {threads})"));
    }
    let t = Trace {
        events: events
            .iter()
            .filter(|e| !PROJECTED_OUT.contains(&e.step))
            .map(|e| TraceEvent::from_parts(e.thread, e.step, &e.values))
            .collect(),
    };
    Ok(t.map_threads(|t| Some(map(t))))
}

/// The most `ctx_poll_userspace` rounds any one poll of `trace` made (the scenario's `poll_rounds`
/// must be at least this).
pub fn max_rounds(trace: &Trace) -> usize {
    let mut per_thread = std::collections::HashMap::<u32, usize>::new();
    let mut max = 0;
    for e in &trace.events {
        let n = per_thread.entry(e.thread).or_default();
        if e.step == Step::CtxPollUserspace {
            *n += 1;
            max = max.max(*n);
        } else if e.step == Step::CtxPollComputeTimeout {
            *n = 0;
        }
    }
    max
}
