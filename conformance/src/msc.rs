//! Counterexample pictures: a checker's failing run as a message-sequence chart in SVG.
//!
//! One lifeline per thread (a Promela process, a Rust-model thread, a recorded implementation
//! thread), one row per step, top to bottom in the order the steps happened. Each step is labelled
//! with its step name (the Promela label = [`aioctx::trace::Step`]) and the values it read or wrote;
//! to the right, the shared state after the step (`notify_me`, `notified`, `notifier`, `bh_list`,
//! the BH flags) with the values this step changed in bold. The violating step is boxed in red and
//! the failed property (`p_...`) is named in the chart's banner; a busy loop's cycle is shaded.
//! Environment steps of the Promela models (`env_*`, `tso_*`) are drawn grey.
//!
//! Sources, all through the trace types the checkers already have (no parser of its own but for
//! the spin replay's process names and its error markers):
//! - [`Chart::from_spin_trail`]: a `ci/spin` counterexample (`conformance::spin::Trail`); its
//!   `@@@` lines are the model's [`aioctx_model::TraceEvent`] text format;
//! - [`Chart::from_violation`]: a Rust-model explorer counterexample ([`aioctx_model::Violation`]);
//! - [`Chart::from_trace`]: any [`aioctx_model::Trace`], e.g. an implementation run recorded through
//!   impl's `trace` feature and converted by [`aioctx_model::TraceEvent::from_parts`];
//! - [`Chart::parse`]: the documented text input below, what a workload generator emits for a shrunk
//!   failing workload.
//!
//! # Trace input format (`*.trace`, version 1)
//!
//! The model's trace text format (`model/src/trace.rs`: one step per line, `<thread> <label>
//! <key>=<value> ...`, values integers or `true`/`false`, `#` lines are comments), plus directives,
//! lines starting with `#!` (unknown directives are an error):
//!
//! ```text
//! #! title bh_schedule racing a blocking poll (shrunk workload, seed 42)
//! #! checker workload
//! #! thread 0 home (poll)
//! #! thread 1 remote (bh_schedule)
//! #! property p_no_lost_wakeup
//! #! bug poll_no_recheck_notified
//! #! violation last          (or a 0-based step index; default: none)
//! #! cycle 7                 (a busy loop: the cycle starts at step 7)
//! #! note the panic: ...     (free text under the chart)
//! 0 ctx_poll_compute_timeout timeout=-1
//! 1 bh_schedule_flags bh=0 flags=1
//! ...
//! ```
//!
//! Threads not named by a `thread` directive are called `T<n>`.

use std::fmt::Write as _;
use std::io;

use aioctx::trace::Step;
use aioctx_model::{Scenario, Trace, Violation};

use crate::spin::Trail;

/// One step on a lifeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Lifeline index.
    pub thread: usize,
    /// The step name (a Promela label; for an environment process any label).
    pub label: String,
    /// Values read or written, in the recorded order.
    pub values: Vec<(String, i64)>,
    /// True for an environment step (`env_*`, `tso_*`: not an implementation step).
    pub env: bool,
}

/// A failing run, ready to draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// One line: what failed where.
    pub title: String,
    /// Which checker produced it (`spin`, `Rust model`, `workload`, ...).
    pub checker: String,
    /// The failed property (`p_...`, or `safety: <assertion>`).
    pub property: Option<String>,
    /// The planted bug, if the run is a planted bug's counterexample.
    pub bug: Option<String>,
    /// Lifeline names.
    pub lifelines: Vec<String>,
    /// The steps in order.
    pub events: Vec<Event>,
    /// The index of the violating step.
    pub violation: Option<usize>,
    /// A busy loop: the index where the cycle starts.
    pub cycle_start: Option<usize>,
    /// Free text under the chart (the final state, the failed assertion).
    pub note: String,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn model_event(e: &aioctx_model::TraceEvent) -> Event {
    Event {
        thread: e.thread as usize,
        label: e.step.as_str().to_string(),
        values: e.values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        env: false,
    }
}

fn lifelines_for(events: &[Event], named: &[(usize, String)]) -> Vec<String> {
    let n = events
        .iter()
        .map(|e| e.thread + 1)
        .chain(named.iter().map(|(t, _)| t + 1))
        .max()
        .unwrap_or(0);
    (0..n)
        .map(|t| {
            named
                .iter()
                .find(|(i, _)| *i == t)
                .map_or_else(|| format!("T{t}"), |(_, s)| format!("T{t} {s}"))
        })
        .collect()
}

impl Chart {
    /// A chart of a model trace (any source that yields [`Trace`]).
    pub fn from_trace(title: &str, checker: &str, trace: &Trace) -> Chart {
        let events: Vec<Event> = trace.events.iter().map(model_event).collect();
        Chart {
            title: title.into(),
            checker: checker.into(),
            property: None,
            bug: None,
            lifelines: lifelines_for(&events, &[]),
            events,
            violation: None,
            cycle_start: None,
            note: String::new(),
        }
    }

    /// Name the lifelines after `scenario`'s threads: its pollers, then its remotes.
    pub fn name_threads(&mut self, scenario: &Scenario) {
        let named = scenario_threads(scenario);
        self.lifelines = lifelines_for(&self.events, &named);
    }

    /// A Rust-model explorer counterexample of `scenario` (lifelines: its pollers, then its remotes).
    pub fn from_violation(scenario: &Scenario, v: &Violation) -> Chart {
        let named = scenario_threads(scenario);
        let events: Vec<Event> = v.trace.events.iter().map(model_event).collect();
        Chart {
            title: format!("{}: {} violated", scenario.name, v.property),
            checker: "Rust model (explorer)".into(),
            property: Some(v.property.to_string()),
            bug: scenario.bug.map(|b| b.as_str().to_string()),
            lifelines: lifelines_for(&events, &named),
            violation: (!events.is_empty()).then(|| {
                // A busy loop is violated by the cycle as a whole: mark the step that closes it.
                events.len() - 1
            }),
            events,
            cycle_start: v.cycle_start,
            note: format!("final state: {}", v.state),
        }
    }

    /// A spin counterexample kept by `ci/spin` (`target/spin/trails/*.replay.txt`).
    ///
    /// # Errors
    ///
    /// A `@@@` line that is not `<pid> <label> key=value...`.
    pub fn from_spin_trail(t: &Trail) -> io::Result<Chart> {
        let mut events = Vec::new();
        let mut named: Vec<(usize, String)> = Vec::new();
        let mut cycle_start = None;
        let mut assertion = None;
        let mut error_at = None;
        for (i, line) in t.replay.lines().enumerate() {
            let l = line.trim_start();
            if let Some(rest) = l.strip_prefix("@@@") {
                let rest = rest.trim();
                let label = rest.split_whitespace().nth(1).unwrap_or("");
                if Step::from_label(label).is_some() {
                    // The model's own parser: the step, its values, a clear error.
                    let e: aioctx_model::TraceEvent = rest
                        .parse()
                        .map_err(|e| bad(format!("{}: line {}: {e}", t.model, i + 1)))?;
                    events.push(model_event(&e));
                } else {
                    let mut w = rest.split_whitespace();
                    let pid: usize = w
                        .next()
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| bad(format!("{}: line {}: no pid: {l}", t.model, i + 1)))?;
                    let label = w.next().unwrap_or("?").to_string();
                    let values = w
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_string(), v.parse().ok()?))
                        })
                        .collect();
                    events.push(Event { thread: pid, label, values, env: true });
                }
            } else if l.contains("START OF CYCLE") {
                cycle_start = Some(events.len());
            } else if let Some(a) = l.strip_prefix("spin: text of failed assertion:") {
                assertion = Some(a.trim().to_string());
                error_at = Some(events.len());
            } else if l.contains("Error: assertion violated") || l.contains("acceptance cycle") {
                error_at.get_or_insert(events.len());
            } else if let Some(p) = proc_name(l) {
                if !named.iter().any(|(i, _)| *i == p.0) {
                    named.push(p);
                }
            }
        }
        if events.is_empty() {
            return Err(bad(format!(
                "{}__{}__{}: the replay has no @@@ step",
                t.model, t.variant, t.property
            )));
        }
        let bug =
            t.variant.split('+').find_map(|d| d.strip_prefix("BUG_")).map(str::to_ascii_lowercase);
        let property = if t.property == "safety" {
            format!("safety: {}", assertion.as_deref().unwrap_or("invalid end state"))
        } else {
            t.property.clone()
        };
        let last = events.len() - 1;
        Ok(Chart {
            title: format!("promela/{}.pml, {}: {} violated", t.model, t.variant, property),
            checker: "spin".into(),
            property: Some(property),
            bug,
            lifelines: lifelines_for(&events, &named),
            violation: Some(error_at.map_or(last, |i| i.saturating_sub(1).min(last))),
            cycle_start: cycle_start.filter(|&c| c <= last),
            note: format!(
                "replay: spin -T -t -p -k {0}.trail {0}.pml (target/spin/trails/)",
                format_args!("{}__{}__{}", t.model, t.variant, t.property)
            ),
            events,
        })
    }

    /// Parse the documented trace input (see the module docs).
    ///
    /// # Errors
    ///
    /// A malformed step line (the model parser's message, with its line number), an unknown or
    /// malformed directive, a violation or cycle index past the last step, or no step at all.
    pub fn parse(text: &str) -> io::Result<Chart> {
        let trace: Trace = text.parse().map_err(|e| bad(format!("trace input: {e}")))?;
        let events: Vec<Event> = trace.events.iter().map(model_event).collect();
        if events.is_empty() {
            return Err(bad("trace input: no step".into()));
        }
        let mut c = Chart::from_trace("workload", "workload", &trace);
        let mut named = Vec::new();
        let mut violation: Option<String> = None;
        let mut cycle: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let Some(d) = line.trim().strip_prefix("#!") else { continue };
            let d = d.trim();
            let (key, arg) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
            let arg = arg.trim();
            let line_err = |m: &str| bad(format!("trace input: line {}: {m}: `{line}`", i + 1));
            match key {
                "title" => c.title = arg.to_string(),
                "checker" => c.checker = arg.to_string(),
                "property" => c.property = Some(arg.to_string()),
                "bug" => c.bug = Some(arg.to_string()),
                "violation" => violation = Some(arg.to_string()),
                "cycle" => cycle = Some(arg.to_string()),
                "note" => c.note = arg.to_string(),
                "thread" => {
                    let (n, name) = arg.split_once(char::is_whitespace).unwrap_or((arg, ""));
                    let n: usize = n.parse().map_err(|_| line_err("bad thread number"))?;
                    named.push((n, name.trim().to_string()));
                }
                _ => return Err(line_err("unknown directive")),
            }
        }
        let index = |what: &str, s: &str| -> io::Result<usize> {
            let i = if s == "last" {
                events.len() - 1
            } else {
                s.parse().map_err(|_| bad(format!("trace input: bad {what} index `{s}`")))?
            };
            if i >= events.len() {
                return Err(bad(format!(
                    "trace input: {what} index {i} past the last step ({})",
                    events.len() - 1
                )));
            }
            Ok(i)
        };
        c.violation = violation.map(|s| index("violation", &s)).transpose()?;
        c.cycle_start = cycle.map(|s| index("cycle", &s)).transpose()?;
        c.lifelines = lifelines_for(&events, &named);
        Ok(c)
    }

    /// Keep at most `max` steps (`max` >= 20): the first 10 and the last `max - 10`, with one grey
    /// row saying how many were left out between them (a liveness trail found depth-first runs to
    /// thousands of steps; the violation and the cycle are at its end). Indexes are adjusted; a
    /// cycle that starts in the elided part starts at the elision row.
    pub fn elide(&mut self, max: usize) {
        let max = max.max(20);
        let n = self.events.len();
        if n <= max {
            return;
        }
        let head = 10;
        let tail = max - head;
        let cut = n - tail - head;
        let gap = Event {
            thread: 0,
            label: format!("... {cut} steps elided ..."),
            values: Vec::new(),
            env: true,
        };
        let mut ev: Vec<Event> = self.events[..head].to_vec();
        ev.push(gap);
        ev.extend_from_slice(&self.events[n - tail..]);
        let map = |i: usize| {
            if i < head {
                i
            } else if i < n - tail {
                head
            } else {
                i - cut + 1
            }
        };
        self.violation = self.violation.map(map);
        self.cycle_start = self.cycle_start.map(map);
        self.events = ev;
        self.note = format!("{} ({n} steps, {cut} elided)", self.note);
    }

    /// The chart as a standalone SVG document. `link` maps a step label to a URL (its code line),
    /// if any.
    pub fn svg(&self, link: &dyn Fn(&str) -> Option<String>) -> String {
        const ROW: usize = 30;
        const COL: usize = 210;
        const TOP: usize = 92;
        const LEFT: usize = 20;
        let n = self.lifelines.len().max(1);
        let state_x = LEFT + n * COL + 20;
        let keys = state_keys(&self.events);
        let key_w = 92;
        let width = state_x + keys.len() * key_w + 20;
        let height = TOP + self.events.len() * ROW + 60;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="msc" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">"#
        );
        s.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        // Banner: the title and the failed property.
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"##,
            esc(&trunc(&self.title, (width - LEFT) / 9))
        );
        let bug = self.bug.as_ref().map(|b| format!("planted bug: {}", esc(b))).unwrap_or_default();
        if let Some(p) = &self.property {
            let _ = write!(
                s,
                r##"<text class="property" x="{LEFT}" y="42" fill="#c00000" font-weight="bold">violated: {}   {bug}</text>"##,
                esc(p),
            );
        } else if !bug.is_empty() {
            let _ = write!(s, r##"<text x="{LEFT}" y="42" fill="#c00000">{bug}</text>"##);
        }
        // Cycle shading.
        if let Some(c) = self.cycle_start {
            let y0 = TOP + c * ROW - ROW / 2;
            let h = (self.events.len() - c) * ROW;
            let _ = write!(
                s,
                r##"<rect class="cycle" x="4" y="{y0}" width="{}" height="{h}" fill="#fff4d6"/><text x="8" y="{}" fill="#a06000">cycle (repeats forever)</text>"##,
                width - 8,
                y0 + 12
            );
        }
        // Lifelines.
        for (i, name) in self.lifelines.iter().enumerate() {
            let x = LEFT + i * COL + 8;
            let _ = write!(
                s,
                r##"<rect x="{}" y="54" width="{}" height="22" rx="4" fill="#e8eef8" stroke="#335"/><text x="{}" y="69" font-weight="bold">{}</text><line x1="{x}" y1="76" x2="{x}" y2="{}" stroke="#335" stroke-dasharray="4 3"/>"##,
                x - 6,
                COL - 14,
                x,
                esc(&trunc(name, 26)),
                height - 40
            );
        }
        for (k, key) in keys.iter().enumerate() {
            let _ = write!(
                s,
                r##"<text x="{}" y="69" font-weight="bold" fill="#335">{}</text>"##,
                state_x + k * key_w,
                esc(key)
            );
        }
        // Steps.
        let mut state: Vec<Option<i64>> = vec![None; keys.len()];
        for (i, e) in self.events.iter().enumerate() {
            let y = TOP + i * ROW;
            let x = LEFT + e.thread.min(n - 1) * COL + 8;
            let violating = self.violation == Some(i);
            if violating {
                let _ = write!(
                    s,
                    r##"<rect class="violation" x="4" y="{}" width="{}" height="{}" fill="none" stroke="#c00000" stroke-width="2.5"/>"##,
                    y - ROW / 2 + 1,
                    width - 8,
                    ROW - 2
                );
            }
            let color = if violating {
                "#c00000"
            } else if e.env {
                "#888888"
            } else {
                "#112244"
            };
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" fill="#999" font-size="10">{i}</text><circle cx="{x}" cy="{y}" r="4.5" fill="{color}"/>"##,
                LEFT - 14,
                y + 4
            );
            let label = esc(&e.label);
            let label = match link(&e.label) {
                Some(u) => format!(r#"<a href="{}">{label}</a>"#, esc(&u)),
                None => label,
            };
            let _ = write!(
                s,
                r##"<text class="step" x="{}" y="{}" fill="{color}"{}>{label}</text>"##,
                x + 9,
                y - 2,
                if violating { r#" font-weight="bold""# } else { "" }
            );
            if !e.values.is_empty() {
                let vals: Vec<String> = e.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{}" fill="#555" font-size="10">{}</text>"##,
                    x + 9,
                    y + 10,
                    esc(&trunc(&vals.join(" "), 30))
                );
            }
            for (k, key) in keys.iter().enumerate() {
                let now = e.values.iter().find(|(kk, _)| kk == key).map(|(_, v)| *v);
                let changed = now.is_some() && now != state[k];
                if now.is_some() {
                    state[k] = now;
                }
                if let Some(v) = state[k] {
                    let _ = write!(
                        s,
                        r##"<text x="{}" y="{}" fill="{}"{}>{v}</text>"##,
                        state_x + k * key_w,
                        y + 4,
                        if changed { "#000" } else { "#aaa" },
                        if changed { r#" font-weight="bold""# } else { "" }
                    );
                }
            }
        }
        if !self.note.is_empty() {
            let _ = write!(
                s,
                r##"<text x="{LEFT}" y="{}" fill="#333" font-size="11">{}</text>"##,
                height - 16,
                esc(&trunc(&self.note, 160))
            );
        }
        s.push_str("</svg>");
        s
    }
}

fn scenario_threads(scenario: &Scenario) -> Vec<(usize, String)> {
    let mut named = Vec::new();
    for (i, p) in scenario.pollers.iter().enumerate() {
        named.push((i, format!("{p:?}").split('(').next().unwrap_or("poller").to_lowercase()));
    }
    for (i, ops) in scenario.remotes.iter().enumerate() {
        let ops: Vec<String> = ops.iter().map(|o| format!("{o:?}").to_lowercase()).collect();
        named.push((scenario.pollers.len() + i, format!("remote: {}", ops.join(", "))));
    }
    named
}

/// `proc  2 (env_notifier:1) ...` → (2, "env_notifier").
fn proc_name(l: &str) -> Option<(usize, String)> {
    let rest = l.split_once("proc")?.1.trim_start();
    let (pid, rest) = rest.split_once(char::is_whitespace)?;
    let pid: usize = pid.parse().ok()?;
    let name = rest.trim_start().strip_prefix('(')?.split([':', ')']).next()?;
    Some((pid, name.to_string()))
}

/// The shared values to track in the state columns: the protocol's, then any BH flags, in a fixed
/// order (only those the run mentions).
fn state_keys(events: &[Event]) -> Vec<String> {
    const FIXED: [&str; 6] = ["notify_me", "notified", "notifier", "bh_list", "flags", "timeout"];
    let mut keys: Vec<String> = FIXED
        .iter()
        .filter(|k| events.iter().any(|e| e.values.iter().any(|(kk, _)| kk == *k)))
        .map(|k| k.to_string())
        .collect();
    let mut extra: Vec<String> = events
        .iter()
        .flat_map(|e| e.values.iter().map(|(k, _)| k.clone()))
        .filter(|k| k.starts_with("bh_flags") || k.starts_with("flags_"))
        .collect();
    extra.sort();
    extra.dedup();
    for k in extra {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

/// Escape text for XML / HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "#! title sample\n#! thread 0 home\n#! property p_no_lost_wakeup\n\
        #! violation last\n0 ctx_poll_compute_timeout timeout=-1\n\
        1 ctx_notify_set_notified notified=1\n1 ctx_notify_read_notify_me notify_me=0\n\
        0 ctx_poll_notify_me_add notify_me=2\n";

    #[test]
    fn parses_the_documented_format() {
        let c = Chart::parse(SAMPLE).unwrap();
        assert_eq!(c.title, "sample");
        assert_eq!(c.events.len(), 4);
        assert_eq!(c.violation, Some(3));
        assert_eq!(c.lifelines, vec!["T0 home".to_string(), "T1".to_string()]);
        assert_eq!(c.property.as_deref(), Some("p_no_lost_wakeup"));
    }

    /// What the facade's runner wrote for a loom failure (`impl/src/sync/runner.rs`, `ci/loom`'s
    /// build of the planted bug `task_clears_woken_after_poll` with the `trace` feature).
    const LOOM_TRACE: &str = include_str!(
        "../tests/data/loom.task_wake_vs_blocking_poll.task_clears_woken_after_poll.trace"
    );

    #[test]
    fn a_loom_failure_trace_becomes_a_chart_with_its_property_and_violating_step() {
        let c = Chart::parse(LOOM_TRACE).unwrap();
        assert!(c.title.starts_with("task_wake_vs_blocking_poll under loom"), "{}", c.title);
        assert!(c.checker.starts_with("loom"));
        assert_eq!(c.property.as_deref(), Some("p_no_lost_wakeup"));
        assert_eq!(c.bug.as_deref(), Some("task_clears_woken_after_poll"));
        assert_eq!(c.lifelines, vec!["T0 home".to_string(), "T1 remote 1".to_string()]);
        // The poller's last step: it re-checked `notified`, saw nothing, and blocked for good.
        let last = c.events.len() - 1;
        assert_eq!(c.violation, Some(last));
        assert_eq!(c.events[last].label, "ctx_poll_recheck_notified");
        assert!(c
            .note
            .starts_with("the panic: p_no_lost_wakeup violated: every thread is blocked"));
        let svg = c.svg(&|_| None);
        assert_eq!(svg.matches(r#"class="violation""#).count(), 1);
        assert!(svg.contains("violated: p_no_lost_wakeup"));
        assert!(svg.contains("planted bug: task_clears_woken_after_poll"));
        assert!(svg.contains("the panic: p_no_lost_wakeup violated"), "the note under the chart");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for (text, want) in [
            ("", "no step"),
            ("0 no_such_step\n", "unknown step"),
            ("#! frobnicate\n0 ctx_poll_fence\n", "unknown directive"),
            ("#! violation 5\n0 ctx_poll_fence\n", "past the last step"),
            ("#! thread x y\n0 ctx_poll_fence\n", "bad thread number"),
            ("0 ctx_poll_fence notify_me\n", "not key=value"),
        ] {
            let e = Chart::parse(text).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_svg_has_a_lifeline_per_thread_a_row_per_step_and_the_violation() {
        let c = Chart::parse(SAMPLE).unwrap();
        let svg = c.svg(&|l| (l == "ctx_poll_fence").then(|| "x".into()));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="step""#).count(), 4);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert_eq!(svg.matches(r#"class="violation""#).count(), 1);
        assert!(svg.contains("violated: p_no_lost_wakeup"));
        // The state column shows notify_me going 0 -> 2 in bold at the arming step.
        assert!(svg.contains(r#"font-weight="bold">2</text>"#));
    }

    #[test]
    fn elide_keeps_the_head_the_tail_and_the_indexes() {
        let mut text = String::from("#! violation last\n#! cycle 95\n");
        for _ in 0..100 {
            text.push_str("0 ctx_poll_fence\n");
        }
        let mut c = Chart::parse(&text).unwrap();
        c.elide(30);
        assert_eq!(c.events.len(), 31);
        assert!(c.events[10].label.contains("70 steps elided"));
        assert_eq!(c.violation, Some(30));
        assert_eq!(c.cycle_start, Some(26));
        let mut short = Chart::parse(SAMPLE).unwrap();
        short.elide(30);
        assert_eq!(short, Chart::parse(SAMPLE).unwrap());
    }

    #[test]
    fn a_spin_replay_becomes_a_chart() {
        let replay = "  1:\tproc  0 (home_thread:1) x.pml:1 (state 1)\t[(1)]\n\
            @@@ 0 ctx_poll_compute_timeout bh_list=0 stale=0 timeout=2\n\
            \x20 2:\tproc  1 (env_notifier:1) x.pml:2 (state 1)\t[(1)]\n\
            @@@ 1 bh_schedule_push bh_list=1\n\
            @@@ 2 env_watchdog_hang bh_list=1\n\
            spin: x.pml:3, Error: assertion violated\n\
            spin: text of failed assertion: assert(!(bh_list))\n";
        let t = Trail {
            model: "notify".into(),
            variant: "BUG_POLL_NO_RECHECK_NOTIFIED".into(),
            property: "safety".into(),
            replay: replay.into(),
        };
        let c = Chart::from_spin_trail(&t).unwrap();
        assert_eq!(c.events.len(), 3);
        assert!(c.events[2].env && !c.events[0].env);
        assert_eq!(c.violation, Some(2));
        assert_eq!(c.bug.as_deref(), Some("poll_no_recheck_notified"));
        assert_eq!(c.property.as_deref(), Some("safety: assert(!(bh_list))"));
        assert_eq!(c.lifelines[0], "T0 home_thread");
        assert_eq!(c.lifelines[1], "T1 env_notifier");
        let broken = Trail { replay: "@@@ 0 ctx_poll_wait notifier\n".into(), ..t };
        assert!(Chart::from_spin_trail(&broken).is_err());
    }
}
