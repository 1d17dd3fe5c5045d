//! The spin counterexamples of the BUG_* variants, replayed on the implementation as it is built.
//!
//! [`replay_bug_trails`] generates every current-protocol model's BUG_* safety trail (breadth-first:
//! shortest), adds the liveness trails `ci/spin` kept if they are fresh, lifts each to the Rust
//! model ([`crate::lift`], implementation shape) and replays it ([`crate::replay`]). The verdict
//! depends on the planted bug: with `<name>` planted (`AIOCTX_BUG=<name>` with the `planted-bugs`
//! feature this crate enables, or `--cfg aioctx_bug="<name>"`) the matching trails must end in the
//! hang ([`Verdict::Hang`]); without it they must diverge ([`Verdict::Diverged`]: the implementation
//! takes another step than the buggy one, and the replayer says which). The
//! `conformance-replay` binary prints these verdicts; `tests/traces_model_to_impl.rs` runs it once
//! per bug, with the bug planted, and checks both sides.

use crate::lift::{self, LiftError, Shape, Source};
use crate::replay::{replay, Outcome};
use crate::spin;

/// What happened to one trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Followed to its end, where the implementation is blocked with work pending: the hang.
    Hang,
    /// Followed to its end without a hang.
    Followed,
    /// The implementation cannot take the trail's step at this index (of the lifted trace).
    Diverged(usize),
    /// The trail needs weak memory: no sequentially consistent replay (any build) can follow it.
    Weak,
    /// The Rust model has no counterpart (poll mode, callbacks).
    Unsupported,
    /// Lifted, but this harness cannot replay it.
    NotReplayable,
    /// The Rust model rejects the lifted trail (a disagreement, reported as such).
    Rejected,
}

impl Verdict {
    fn name(&self) -> String {
        match self {
            Verdict::Hang => "hang".into(),
            Verdict::Followed => "followed".into(),
            Verdict::Diverged(i) => format!("diverged@{i}"),
            Verdict::Weak => "weak".into(),
            Verdict::Unsupported => "unsupported".into(),
            Verdict::NotReplayable => "not_replayable".into(),
            Verdict::Rejected => "rejected".into(),
        }
    }
}

/// One trail's result.
#[derive(Debug, Clone)]
pub struct TrailResult {
    /// `<model>__<variant>__<property>`.
    pub name: String,
    /// The Rust `aioctx_bug` value the variant plants (`BUG_X` → `x`).
    pub bug: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Steps replayed (lifted trace length when followed or diverged).
    pub steps: usize,
    /// Details (the replayer's report).
    pub detail: String,
}

impl TrailResult {
    /// `TRAIL <name> <bug> <verdict> steps=<n> | <first line of detail>` (the binary's output).
    pub fn line(&self) -> String {
        format!(
            "TRAIL {} {} {} steps={} | {}",
            self.name,
            self.bug,
            self.verdict.name(),
            self.steps,
            self.detail.lines().next().unwrap_or("")
        )
    }

    /// Parse [`TrailResult::line`] back (name, bug, verdict name, steps).
    pub fn parse(line: &str) -> Option<(String, String, String, usize)> {
        let rest = line.strip_prefix("TRAIL ")?;
        let mut w = rest.split_whitespace();
        let (n, b, v, s) = (w.next()?, w.next()?, w.next()?, w.next()?);
        Some((n.into(), b.into(), v.into(), s.strip_prefix("steps=")?.parse().ok()?))
    }
}

/// The current-protocol models (not the 2015 mirrors) with their BUG_* variants.
pub fn bug_variants() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for m in crate::names::current_models() {
        for var in spin::variants(&m) {
            if var.contains("BUG_") {
                v.push((m.clone(), var));
            }
        }
    }
    v
}

/// The `aioctx_bug` value of a variant (`BUG_X+OPT` → `x`).
pub fn bug_name(variant: &str) -> String {
    variant
        .split('+')
        .find_map(|d| d.strip_prefix("BUG_"))
        .map(|b| b.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Generate, lift and replay every BUG_* trail (see the module docs). The caller holds
/// [`crate::serial`]. `only`: restrict to the variants planting this `aioctx_bug` value.
pub fn replay_bug_trails(only: Option<&str>) -> Vec<TrailResult> {
    let dir = spin::workdir("trails");
    let mut trails = Vec::new();
    for (m, var) in bug_variants() {
        if only.is_some_and(|b| bug_name(&var) != b) {
            continue;
        }
        match spin::safety_trail(&dir, &m, &var) {
            Ok(Some(t)) => trails.push(t),
            Ok(None) => panic!("{m} {var}: the safety search finds no error (ci/spin would fail)"),
            Err(e) => panic!("{m} {var}: {e}"),
        }
    }
    for t in spin::ci_trails() {
        if t.property != "safety"
            && t.variant.contains("BUG_")
            && only.is_none_or(|b| bug_name(&t.variant) == b)
            && crate::names::current_models().contains(&t.model)
        {
            trails.push(t);
        }
    }
    trails
        .into_iter()
        .map(|t| {
            let name = format!("{}__{}__{}", t.model, t.variant, t.property);
            let bug = bug_name(&t.variant);
            let (verdict, steps, detail) = judge(&t);
            TrailResult { name, bug, verdict, steps, detail }
        })
        .collect()
}

fn judge(t: &spin::Trail) -> (Verdict, usize, String) {
    let Some(source) = Source::from_model(&t.model) else {
        if t.model == "poll_mode" || t.model == "poll_idle" {
            // No Rust-model counterpart: the device replayer.
            return match crate::device::replay_device_trail(&t.model, &t.replay) {
                o @ Outcome::Followed { hang: true, steps, .. } => {
                    (Verdict::Hang, steps, o.to_string())
                }
                o @ Outcome::Followed { steps, .. } => (Verdict::Followed, steps, o.to_string()),
                o @ Outcome::Diverged { index, .. } => {
                    (Verdict::Diverged(index), index, o.to_string())
                }
                o @ Outcome::NotReplayable(_) => (Verdict::NotReplayable, 0, o.to_string()),
            };
        }
        return (Verdict::Unsupported, 0, format!("{}.pml has no replayer", t.model));
    };
    let lifted = match lift::lift(source, &t.variant, &t.replay, Shape::Implementation) {
        Ok(l) => l,
        Err(LiftError::Weak(s)) => return (Verdict::Weak, 0, s),
        Err(LiftError::Unsupported(s)) => return (Verdict::Unsupported, 0, s),
        Err(LiftError::Rejected(s)) => {
            // Where the implementation's shape departs from the Promela model's, say so.
            let promela = lift::lift(source, &t.variant, &t.replay, Shape::Promela);
            let why = match promela {
                Ok(_) => format!(
                    "the implementation's shape cannot take it (the Promela shape can): {s}"
                ),
                Err(e) => format!("{e}"),
            };
            return (Verdict::Rejected, 0, why);
        }
    };
    match replay(&lifted.scenario, &lifted.trace) {
        o @ Outcome::Followed { hang: true, .. } => {
            (Verdict::Hang, lifted.trace.len(), o.to_string())
        }
        o @ Outcome::Followed { .. } => (Verdict::Followed, lifted.trace.len(), o.to_string()),
        o @ Outcome::Diverged { index, .. } => (Verdict::Diverged(index), index, o.to_string()),
        o @ Outcome::NotReplayable(_) => (Verdict::NotReplayable, 0, o.to_string()),
    }
}
