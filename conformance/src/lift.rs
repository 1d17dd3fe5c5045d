//! Lifting spin output (simulations, trails) to the Rust model's vocabulary, guided by the model.
//!
//! The Promela models abstract some of what the Rust model (and the implementation) does step by
//! step. Lifting walks the spin events in order, with the Rust model alongside, and fills in the
//! steps a Promela model elides by taking them from the Rust model itself (so their values are the
//! model's, never invented):
//!
//! | Promela | Rust model (and implementation) |
//! |---|---|
//! | `bh_schedule_push` in notify.pml / external.pml / notify_tso.pml (BH flags abstracted: "publish work") | `bh.schedule()` of one BH: `bh_schedule_flags`, then `bh_schedule_push` if the model pushes (PENDING was clear) |
//! | `bh_poll_take` there (the whole scan) | `bh_poll_take`, then at once the `bh_poll_dequeue` / `bh_poll_call` the model takes |
//! | external.pml's `ctx_prepare` (no re-check) | with the implementation's shape: `ctx_poll_recheck_notified` after `ctx_prepare_fence` |
//! | external.pml's `ctx_check` (drains on the foreign wait's readiness) | with the implementation's shape: the readiness query `ctx_poll_wait` (timeout 0) after `ctx_notify_accept_fence` |
//! | `env_loop_wait` | the external poller's `ctx_poll_wait` (done by `aioctx_model::parse_spin_output`) |
//!
//! Every other labelled step must be the Rust model's next step of that thread, with the same values
//! where both name a key; any other event is a rejection. So lifting is itself a check that the
//! Promela model and the Rust model agree, event by event ([`Shape::Promela`]); lifting to the
//! implementation's shape ([`Shape::Implementation`]) then gives the trace to replay.
//!
//! Threads: Promela pids in `active` order; environment-only processes (`env_watchdog`, the TSO
//! flushers) record no step. A bh.pml run whose callback reschedules its own BH
//! (`env_callback_resched`) has no Rust-model counterpart. Weak-memory steps (`stale=1`, a
//! `WEAK_TIMEOUT_READ` read; `buffered=1`, a TSO store buffer) have no sequentially consistent
//! counterpart: such a run is reported as [`LiftError::Weak`] with the first event the
//! sequentially consistent model cannot take.

use aioctx::trace::Step;
use aioctx_model::system::{thread_successors, State};
use aioctx_model::{parse_spin_output, Bug, Loops, Op, Poller, Scenario, Trace, TraceEvent};

/// A Promela model that can be lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// promela/notify.pml: home_thread (pid 0), env_notifier[2] (pids 1, 2).
    Notify,
    /// promela/bh.pml: home_thread (0), env_owner (1).
    Bh,
    /// promela/external.pml: ext_loop (0), blocking_poll (1), env_notifier (2).
    External,
    /// promela/notify_tso.pml: home (0), notifier (1); store buffers.
    NotifyTso,
}

impl Source {
    /// The model's file stem.
    pub fn model(self) -> &'static str {
        match self {
            Source::Notify => "notify",
            Source::Bh => "bh",
            Source::External => "external",
            Source::NotifyTso => "notify_tso",
        }
    }
    /// By file stem.
    pub fn from_model(m: &str) -> Option<Source> {
        [Source::Notify, Source::Bh, Source::External, Source::NotifyTso]
            .into_iter()
            .find(|s| s.model() == m)
    }
    fn threads(self) -> u32 {
        match self {
            Source::Notify | Source::External => 3,
            Source::Bh | Source::NotifyTso => 2,
        }
    }
}

/// Whose shape to lift to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The Promela model's own (external.pml: no re-check in prepare, drain on the foreign wait's
    /// readiness): the agreement check between the two models.
    Promela,
    /// The implementation's (prepare re-checks `notified`, check asks the fd monitor): for replay.
    Implementation,
}

/// A lifted run.
#[derive(Debug, Clone)]
pub struct Lifted {
    /// The Rust-model scenario.
    pub scenario: Scenario,
    /// The lifted trace (the model's events).
    pub trace: Trace,
    /// How many Promela step events it lifted.
    pub spin_events: usize,
}

/// Why a run cannot be lifted.
#[derive(Debug, Clone)]
pub enum LiftError {
    /// It needs weak memory: the sequentially consistent model rejects it at or after a stale read
    /// or a buffered store.
    Weak(String),
    /// It uses something the Rust model does not have.
    Unsupported(String),
    /// The Rust model rejects it (a disagreement between the two models, or with the
    /// implementation's shape).
    Rejected(String),
}

impl std::fmt::Display for LiftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiftError::Weak(s) => write!(f, "weak memory: {s}"),
            LiftError::Unsupported(s) => write!(f, "unsupported: {s}"),
            LiftError::Rejected(s) => write!(f, "rejected: {s}"),
        }
    }
}

/// The Rust-model bug of a Promela variant (`BUG_POLL_NO_RECHECK_NOTIFIED+...` →
/// `poll_no_recheck_notified`), if the Rust model has it.
pub fn bug_of(variant: &str) -> Option<Bug> {
    variant
        .split('+')
        .find_map(|d| d.strip_prefix("BUG_"))
        .and_then(|b| Bug::from_name(&b.to_ascii_lowercase()))
}

fn scenario(
    source: Source,
    shape: Shape,
    events: &[TraceEvent],
    zero_wait: bool,
    bug: Option<Bug>,
) -> Scenario {
    let pushes = |pid: u32| {
        vec![
            Op::Schedule(0);
            events.iter().filter(|e| e.thread == pid && e.step == Step::BhSchedulePush).count()
        ]
    };
    let mut sc = match source {
        Source::Notify | Source::NotifyTso => {
            let mut sc = Scenario::new(format!("{}.pml", source.model()))
                .poller(Poller::Blocking(Loops::Forever))
                .remote(&pushes(1));
            if source == Source::Notify {
                sc = sc.remote(&pushes(2));
            }
            sc
        }
        Source::Bh => {
            let ops: Vec<Op> = events
                .iter()
                .filter(|e| e.thread == 1)
                .filter_map(|e| match e.step {
                    Step::BhScheduleFlags if e.value("bh_flags").unwrap_or(0) & 16 != 0 => {
                        Some(Op::ScheduleIdle(0))
                    }
                    Step::BhScheduleFlags => Some(Op::Schedule(0)),
                    Step::BhCancel => Some(Op::Cancel(0)),
                    Step::BhDelete => Some(Op::Delete(0)),
                    _ => None,
                })
                .collect();
            Scenario::new("bh.pml").poller(Poller::Blocking(Loops::Forever)).remote(&ops)
        }
        Source::External => {
            let polls = events
                .iter()
                .filter(|e| e.thread == 1 && e.step == Step::CtxPollComputeTimeout)
                .count();
            let mut sc = Scenario::new("external.pml")
                .poller(Poller::External(Loops::Forever))
                .poller(Poller::Blocking(Loops::Times(polls.min(255) as u8)))
                .remote(&pushes(2));
            if shape == Shape::Promela {
                sc = sc.without_prepare_recheck();
                sc.check_readiness_wait = false;
            }
            sc
        }
    };
    let rounds = events.iter().any(|e| e.step == Step::CtxPollUserspace);
    sc = sc.bhs(1).polling(u32::from(rounds));
    sc.zero_timeout_wait = zero_wait;
    if zero_wait {
        sc.name += "+zero_timeout_wait";
    }
    if let Some(b) = bug {
        sc = sc.with_bug(b);
    }
    sc
}

fn values_agree(model: &TraceEvent, spin: &TraceEvent) -> bool {
    model.values.iter().all(|(k, v)| {
        spin.value(k)
            .is_none_or(|sv| if k == "timeout" { sv.signum() == v.signum() } else { sv == *v })
    })
}

/// Steps a Promela model elides that the lifting takes from the Rust model (see the module docs).
fn elidable(sc: &Scenario, thread: u32, step: Step) -> bool {
    let external = matches!(sc.pollers.get(thread as usize), Some(Poller::External(_)));
    external && matches!(step, Step::CtxPollRecheckNotified | Step::CtxPollWait)
}

struct Walk<'a> {
    sc: &'a Scenario,
    st: State,
    out: Vec<TraceEvent>,
}

impl Walk<'_> {
    fn succ(&self, t: u32) -> Vec<(TraceEvent, State)> {
        thread_successors(self.sc, &self.st, t as usize)
    }
    fn take(&mut self, t: u32, step: Step, like: Option<&TraceEvent>) -> Result<(), String> {
        let succ = self.succ(t);
        let found = succ
            .into_iter()
            .find(|(e, _)| e.step == step && like.is_none_or(|l| values_agree(e, l)));
        match found {
            Some((e, n)) => {
                self.out.push(e);
                self.st = n;
                Ok(())
            }
            None => Err(format!(
                "thread {t} cannot take `{}`{}; it can take {:?}\nmodel state: {}",
                step.as_str(),
                like.map(|l| format!(" as `{l}`")).unwrap_or_default(),
                self.succ(t).iter().map(|(e, _)| e.to_string()).collect::<Vec<_>>(),
                self.st
            )),
        }
    }
    fn next_is(&self, t: u32, step: Step) -> bool {
        self.succ(t).iter().any(|(e, _)| e.step == step)
    }
}

fn lift_with(
    source: Source,
    events: &[TraceEvent],
    sc: Scenario,
) -> Result<Lifted, (usize, String)> {
    let mut w = Walk { st: State::initial(&sc), sc: &sc, out: Vec::new() };
    let abstract_bhs = matches!(source, Source::Notify | Source::External | Source::NotifyTso);
    for (i, e) in events.iter().enumerate() {
        let t = e.thread;
        // The steps the Promela model elides before this one (see `elidable`).
        let first = match e.step {
            Step::BhSchedulePush if abstract_bhs => Step::BhScheduleFlags,
            s => s,
        };
        while !w.next_is(t, first) {
            match w.succ(t).as_slice() {
                [(only, _)] if elidable(&sc, t, only.step) => {
                    let s = only.step;
                    w.take(t, s, None).map_err(|err| (i, format!("event {i} `{e}`: {err}")))?;
                }
                _ => break,
            }
        }
        let r = if abstract_bhs && e.step == Step::BhSchedulePush {
            w.take(t, Step::BhScheduleFlags, None).and_then(|()| {
                if w.next_is(t, Step::BhSchedulePush) {
                    w.take(t, Step::BhSchedulePush, Some(e))
                } else {
                    Ok(())
                }
            })
        } else if abstract_bhs && e.step == Step::BhPollTake {
            w.take(t, Step::BhPollTake, Some(e)).and_then(|()| {
                while w.next_is(t, Step::BhPollDequeue) || w.next_is(t, Step::BhPollCall) {
                    let s = if w.next_is(t, Step::BhPollDequeue) {
                        Step::BhPollDequeue
                    } else {
                        Step::BhPollCall
                    };
                    w.take(t, s, None)?;
                }
                Ok(())
            })
        } else {
            w.take(t, e.step, Some(e))
        };
        r.map_err(|err| (i, format!("event {i} `{e}`: {err}")))?;
    }
    Ok(Lifted { scenario: sc.clone(), trace: Trace { events: w.out }, spin_events: events.len() })
}

/// Whether the blocking poll's iterations with timeout 0 (after compute_timeout, a polling round or
/// the re-check) (waited, skipped) the fd monitor.
fn zero_timeout_waits(source: Source, events: &[TraceEvent]) -> (bool, bool) {
    let poller = if source == Source::External { 1 } else { 0 };
    let (mut waited, mut skipped) = (false, false);
    let mut zero = false;
    let mut seen_wait = false;
    for e in events.iter().filter(|e| e.thread == poller) {
        match e.step {
            Step::CtxPollComputeTimeout => {
                zero = e.value("timeout") == Some(0);
                seen_wait = false;
            }
            Step::CtxPollUserspace | Step::CtxPollRecheckNotified => {
                zero = e.value("timeout") == Some(0);
            }
            Step::CtxPollWait => seen_wait = true,
            Step::CtxNotifyAccept | Step::CtxPollNotifyMeSub if zero => {
                if seen_wait {
                    waited = true;
                } else {
                    skipped = true;
                }
                zero = false;
            }
            _ => {}
        }
    }
    (waited, skipped)
}

/// Lift `spin -p` output of `source` (run with `variant`'s defines) to the Rust model, in `shape`.
///
/// # Errors
///
/// See [`LiftError`].
pub fn lift(
    source: Source,
    variant: &str,
    spin_output: &str,
    shape: Shape,
) -> Result<Lifted, LiftError> {
    let marker = |l: &&str| l.trim_start().starts_with("@@@");
    let step_lines: Vec<&str> = spin_output.lines().filter(marker).collect();
    let resched = step_lines.iter().position(|l| l.contains(" env_callback_resched"));
    let weak = step_lines.iter().position(|l| l.contains(" stale=1") || l.contains(" buffered=1"));
    if let (Some(r), Some(w)) = (resched, weak) {
        if w < r {
            return Err(LiftError::Weak(format!(
                "`{}` is a weak-memory step (before the run leaves the Rust model: a callback \
                 reschedules its BH)",
                step_lines[w].trim()
            )));
        }
    }
    if resched.is_some() {
        return Err(LiftError::Unsupported(
            "a BH callback reschedules its own BH (env_callback_resched): the Rust model has no \
             callbacks"
                .into(),
        ));
    }
    let parsed = parse_spin_output(spin_output).map_err(|e| LiftError::Rejected(e.to_string()))?;
    let n = source.threads();
    if let Some(e) = parsed.events.iter().find(|e| e.thread >= n) {
        return Err(LiftError::Rejected(format!("event `{e}` of an unexpected process")));
    }
    let events = parsed.events;
    let weak_at =
        events.iter().position(|e| e.value("stale") == Some(1) || e.value("buffered") == Some(1));
    let bug = bug_of(variant);
    let zero_wait =
        match zero_timeout_waits(source, &events) {
            (true, true) => return Err(LiftError::Unsupported(
                "the blocking poll both skips and makes zero-timeout waits in one run (Promela \
                 allows either; the implementation does one or the other: it waits iff user fd \
                 handlers are registered)"
                    .into(),
            )),
            // Polling needs a user poll handler in the implementation, and then every poll waits.
            (waited, skipped) => {
                waited || (!skipped && events.iter().any(|e| e.step == Step::CtxPollUserspace))
            }
        };
    let sc = scenario(source, shape, &events, zero_wait, bug);
    let (i, msg) = match lift_with(source, &events, sc) {
        Ok(l) => return Ok(l),
        Err(e) => e,
    };
    match weak_at {
        Some(w) if w <= i => Err(LiftError::Weak(format!(
            "event {w} `{}` is a weak-memory step; the sequentially consistent model stops at {msg}",
            events[w]
        ))),
        _ => Err(LiftError::Rejected(msg)),
    }
}
