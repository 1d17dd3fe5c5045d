//! Traces: the record type shared with the implementation and Promela, its text format, the
//! generator of every interleaving of a scenario ([`enumerate_traces`]) and the oracle
//! ([`check_trace`]).
//!
//! # Text format
//!
//! One event per line: `<thread> <label> <key>=<value> ...`, e.g. `1 ctx_notify_read_notify_me
//! notify_me=2`. Values are integers (`true`/`false` are read as 1/0). Blank lines and lines starting
//! with `#` are skipped. Promela simulations print the same thing after a `@@@ ` marker
//! (`@@@ <pid> <label> <var>=<val>...`); [`parse_spin_output`] keeps only those lines, so the output of
//! `spin -p -n<seed>` or of a trail replay can be fed to the oracle as is (remap pids with
//! [`Trace::map_threads`] if the Promela process numbering differs from the scenario's).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use aioctx::trace::Step;

use crate::scenario::Scenario;
use crate::system::{successors, thread_successors, Property, State};

/// A value's name: static for model-generated events, owned for parsed ones.
pub type Key = Cow<'static, str>;

/// One recorded protocol step: which thread, which step, and the values it read or wrote.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceEvent {
    /// Thread id (scenario order: pollers, then remotes).
    pub thread: u32,
    /// The step.
    pub step: Step,
    /// Values read or written (see the table in [`crate::system`]).
    pub values: Vec<(Key, i64)>,
}

impl TraceEvent {
    /// An event with no values.
    pub fn new(thread: u32, step: Step) -> TraceEvent {
        TraceEvent { thread, step, values: Vec::new() }
    }

    /// An event from the parts the implementation's recorder keeps
    /// (`aioctx::trace::TraceEvent { thread, step, values }` with the `trace` feature).
    pub fn from_parts(thread: u32, step: Step, values: &[(&'static str, i64)]) -> TraceEvent {
        let values = values.iter().map(|&(k, v)| (Cow::Borrowed(k), v)).collect();
        TraceEvent { thread, step, values }
    }

    /// Add a value.
    pub fn with(mut self, key: &'static str, value: i64) -> TraceEvent {
        self.values.push((Cow::Borrowed(key), value));
        self
    }

    /// The value recorded under `key`.
    pub fn value(&self, key: &str) -> Option<i64> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.thread, self.step.as_str())?;
        for (k, v) in &self.values {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// Why a line is not a trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The offending text.
    pub text: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: `{}`", self.line, self.message, self.text)
    }
}

impl std::error::Error for ParseError {}

fn parse_event(s: &str, line: usize) -> Result<TraceEvent, ParseError> {
    let err = |message: String| ParseError { line, text: s.to_string(), message };
    let s = s.trim();
    let s = s.strip_prefix("@@@").map(str::trim_start).unwrap_or(s);
    let mut words = s.split_whitespace();
    let thread = words.next().ok_or_else(|| err("empty event".into()))?;
    let thread: u32 = thread.parse().map_err(|_| err(format!("bad thread id `{thread}`")))?;
    let label = words.next().ok_or_else(|| err("no step label".into()))?;
    let step = Step::from_label(label).ok_or_else(|| err(format!("unknown step `{label}`")))?;
    let mut values = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| err(format!("`{w}` is not key=value")))?;
        let v = match v {
            "true" => 1,
            "false" => 0,
            _ => v.parse().map_err(|_| err(format!("bad value in `{w}`")))?,
        };
        values.push((Cow::Owned(k.to_string()), v));
    }
    Ok(TraceEvent { thread, step, values })
}

impl FromStr for TraceEvent {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<TraceEvent, ParseError> {
        parse_event(s, 1)
    }
}

/// A sequence of events: one interleaving (a model trace) or one recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Trace {
    /// The events, in the order they happened.
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// Renumber threads (e.g. Promela pids to scenario thread ids); `None` drops the event (an
    /// environment process).
    pub fn map_threads(&self, f: impl Fn(u32) -> Option<u32>) -> Trace {
        let events = self
            .events
            .iter()
            .filter_map(|e| f(e.thread).map(|thread| TraceEvent { thread, ..e.clone() }))
            .collect();
        Trace { events }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True if there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.events {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl FromStr for Trace {
    type Err = ParseError;
    /// Every non-blank line not starting with `#` is an event (an optional `@@@` marker is allowed).
    fn from_str(s: &str) -> Result<Trace, ParseError> {
        let mut events = Vec::new();
        for (i, line) in s.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            events.push(parse_event(l, i + 1)?);
        }
        Ok(Trace { events })
    }
}

/// Parse Promela simulation output: only the lines starting with `@@@` are events (the text after
/// the marker; `spin -T` does not indent printf output); everything else spin prints is ignored,
/// including the step lines of `spin -p`, which echo each printf statement with its marker. Promela conventions are converted:
///
/// - labels starting with `env_` (environment processes) or `tso_` (store-buffer machinery) are
///   dropped, except `env_loop_wait`, the external loop's own wait, which is the model's
///   `ctx_poll_wait` of the external-loop thread;
/// - `timeout` is encoded 0 zero, 1 finite, 2 infinite (promela/common.pml) and becomes 0, 10, -1.
///
/// Process ids are kept: remap them with [`Trace::map_threads`].
///
/// # Errors
///
/// A `@@@` line that is not `<pid> <label> key=value...`, or names an unknown label.
pub fn parse_spin_output(text: &str) -> Result<Trace, ParseError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // Only a line that starts with the marker: `spin -p` also echoes each printf statement,
        // marker and all, inside its step line (`[printf('@@@ %d ...')]`).
        let Some(rest) = line.trim_start().strip_prefix("@@@") else { continue };
        let rest = rest.trim();
        let label = rest.split_whitespace().nth(1).unwrap_or("");
        let rest = if label == "env_loop_wait" {
            rest.replacen("env_loop_wait", "ctx_poll_wait", 1)
        } else if label.starts_with("env_") || label.starts_with("tso_") {
            continue;
        } else {
            rest.to_string()
        };
        let mut e = parse_event(&rest, i + 1)?;
        for (k, v) in &mut e.values {
            if k == "timeout" {
                *v = match *v {
                    1 => 10,
                    2 => -1,
                    other => other,
                };
            }
        }
        events.push(e);
    }
    Ok(Trace { events })
}

// ---------------------------------------------------------------------------------------------------
// The generator.

/// How much of the interleaving space [`enumerate_traces`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// At most this many preemptions (switching away from a thread that could still step), as loom's
    /// preemption bound; `None`: every interleaving.
    pub preemptions: Option<u32>,
    /// A trace longer than this panics (the scenario loops without end: a busy loop).
    pub max_len: usize,
}

impl Bound {
    /// Every interleaving.
    pub const UNBOUNDED: Bound = Bound { preemptions: None, max_len: 10_000 };

    /// At most `n` preemptions.
    pub const fn preemptions(n: u32) -> Bound {
        Bound { preemptions: Some(n), max_len: 10_000 }
    }
}

struct Frame {
    succs: Vec<crate::system::Transition>,
    next: usize,
    preemptions: u32,
    last: Option<u32>,
}

/// The iterator returned by [`enumerate_traces`].
pub struct Traces {
    sc: Scenario,
    bound: Bound,
    stack: Vec<Frame>,
    events: Vec<TraceEvent>,
}

impl Iterator for Traces {
    type Item = Trace;

    fn next(&mut self) -> Option<Trace> {
        loop {
            let frame = self.stack.last_mut()?;
            if frame.next >= frame.succs.len() {
                self.stack.pop();
                self.events.pop();
                continue;
            }
            let i = frame.next;
            frame.next += 1;
            let tr = &frame.succs[i];
            let switched = frame.last.is_some_and(|l| l != tr.thread);
            let last_enabled = frame.succs.iter().any(|s| Some(s.thread) == frame.last);
            let preemptions = frame.preemptions + u32::from(switched && last_enabled);
            if self.bound.preemptions.is_some_and(|b| preemptions > b) {
                continue;
            }
            let (thread, event, next) = (tr.thread, tr.event.clone(), tr.next.clone());
            let succs = successors(&self.sc, &next);
            self.events.push(event);
            assert!(
                self.events.len() <= self.bound.max_len,
                "scenario {}: a trace exceeds {} steps (the model loops without end)",
                self.sc.name,
                self.bound.max_len
            );
            if succs.is_empty() {
                let t = Trace { events: self.events.clone() };
                self.events.pop();
                return Some(t);
            }
            self.stack.push(Frame { succs, next: 0, preemptions, last: Some(thread) });
        }
    }
}

/// Every maximal interleaving of `scenario` within `bound`, depth first: each trace runs until no
/// thread can step (all finished, or pollers blocked in their wait). With `Loops::Forever` pollers a
/// correct model still has finite traces (the pollers end up blocked); a busy loop trips `max_len`.
///
/// # Panics
///
/// When a trace exceeds `bound.max_len`.
pub fn enumerate_traces(scenario: &Scenario, bound: Bound) -> Traces {
    let init = State::initial(scenario);
    let succs = successors(scenario, &init);
    let stack = if succs.is_empty() {
        Vec::new()
    } else {
        vec![Frame { succs, next: 0, preemptions: 0, last: None }]
    };
    Traces { sc: scenario.clone(), bound, stack, events: Vec::new() }
}

// ---------------------------------------------------------------------------------------------------
// The oracle.

/// A trace the model accepts.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Events replayed.
    pub events: usize,
    /// Values compared (those both the trace and the model name).
    pub values: usize,
    /// Keys the trace recorded that the model does not define for that step (not compared), e.g.
    /// Promela's `stale` or a model-only ghost. A harness may assert this is empty.
    pub ignored_keys: std::collections::BTreeSet<String>,
    /// The model state after the last event.
    pub state: State,
    /// Threads blocked in a wait at the end.
    pub blocked: Vec<u32>,
    /// Threads that finished.
    pub finished: Vec<u32>,
    /// True if no thread can step at the end (the run is complete, not a prefix).
    pub terminal: bool,
    /// Properties the replayed run violates (only with a planted bug): safety properties on the way,
    /// `p_no_lost_wakeup` if the end is terminal with a blocked poller and pending work.
    pub violations: Vec<Property>,
}

/// Why the model rejects an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The thread id is not in the scenario.
    UnknownThread {
        /// Threads in the scenario.
        threads: usize,
    },
    /// The thread cannot take this step now.
    NotEnabled {
        /// The steps it could take (empty: blocked or finished).
        enabled: Vec<Step>,
    },
    /// The step is enabled but the recorded values differ from the model's.
    ValueMismatch {
        /// The model's values.
        expected: Vec<(Key, i64)>,
        /// The recorded values.
        observed: Vec<(Key, i64)>,
    },
}

/// The first event of a trace the model cannot take, with the model state before it.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// 0-based index of the event in the trace.
    pub index: usize,
    /// The event.
    pub event: TraceEvent,
    /// Why.
    pub reason: RejectReason,
    /// The full model state before the event.
    pub state: Box<State>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} `{}` rejected: ", self.index, self.event)?;
        match &self.reason {
            RejectReason::UnknownThread { threads } => {
                write!(f, "no thread {} (the scenario has {threads})", self.event.thread)?
            }
            RejectReason::NotEnabled { enabled } => {
                let e: Vec<&str> = enabled.iter().map(|s| s.as_str()).collect();
                write!(f, "not enabled for thread {}; it can take {e:?}", self.event.thread)?
            }
            RejectReason::ValueMismatch { expected, observed } => {
                let show = |v: &[(Key, i64)]| {
                    v.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                };
                write!(f, "expected `{}`, observed `{}`", show(expected), show(observed))?
            }
        }
        write!(f, "\nmodel state: {}", self.state)
    }
}

impl std::error::Error for Rejection {}

fn timeout_class(v: i64) -> i64 {
    v.signum()
}

/// Compare the values both sides name (`timeout` by class). `Some(n)`: all `n` agree.
fn values_match(expected: &[(Key, i64)], observed: &[(Key, i64)]) -> Option<usize> {
    let mut n = 0;
    for (k, v) in expected {
        if let Some((_, ov)) = observed.iter().find(|(ok, _)| ok == k) {
            let same =
                if k == "timeout" { timeout_class(*ov) == timeout_class(*v) } else { ov == v };
            if !same {
                return None;
            }
            n += 1;
        }
    }
    Some(n)
}

/// Replay `trace` on the model of `scenario`. The trace may be a prefix of a run (threads mid-way).
///
/// Values are compared where both the event and the model name them: a recorder may record fewer
/// keys than the model (they are then not checked) or extra ones (listed in
/// [`CheckReport::ignored_keys`]); a key both name must agree (`timeout` by class: infinite, 0,
/// finite).
///
/// # Errors
///
/// The first event the model cannot take: an unknown thread, a step not enabled for that thread, or
/// recorded values that differ from the model's; with the index, the expected values or enabled
/// steps, and the full model state.
pub fn check_trace(scenario: &Scenario, trace: &Trace) -> Result<CheckReport, Rejection> {
    let mut st = State::initial(scenario);
    let mut values = 0;
    let mut ignored = std::collections::BTreeSet::new();
    let mut violations = Vec::new();
    for (index, ev) in trace.events.iter().enumerate() {
        let t = ev.thread as usize;
        let reject = |reason, state: &State| Rejection {
            index,
            event: ev.clone(),
            reason,
            state: Box::new(state.clone()),
        };
        if t >= st.threads.len() {
            return Err(reject(RejectReason::UnknownThread { threads: st.threads.len() }, &st));
        }
        let succs = thread_successors(scenario, &st, t);
        let same_step: Vec<&(TraceEvent, State)> =
            succs.iter().filter(|(e, _)| e.step == ev.step).collect();
        let Some(first) = same_step.first() else {
            let enabled = succs.iter().map(|(e, _)| e.step).collect();
            return Err(reject(RejectReason::NotEnabled { enabled }, &st));
        };
        let matched = same_step
            .iter()
            .find_map(|(e, next)| values_match(&e.values, &ev.values).map(|n| (e, next, n)));
        let Some((mev, next, n)) = matched else {
            let expected = first.0.values.clone();
            return Err(reject(
                RejectReason::ValueMismatch { expected, observed: ev.values.clone() },
                &st,
            ));
        };
        values += n;
        for (k, _) in &ev.values {
            if !mev.values.iter().any(|(mk, _)| mk == k) {
                ignored.insert(k.to_string());
            }
        }
        st = next.clone();
        if let Some(p) = st.safety_violation() {
            if !violations.contains(&p) {
                violations.push(p);
            }
        }
    }
    let terminal = successors(scenario, &st).is_empty();
    if terminal && st.lost_wakeup() {
        violations.push(Property::NoLostWakeup);
    }
    let finished = (0..st.threads.len()).filter(|&t| st.finished(t)).map(|t| t as u32).collect();
    Ok(CheckReport {
        events: trace.events.len(),
        values,
        ignored_keys: ignored,
        blocked: st.blocked_threads(),
        finished,
        terminal,
        violations,
        state: st,
    })
}
