//! aioctx-conformance: the real implementation checked against the models.
//!
//! - `tests/traces_impl_to_model.rs`: implementation → model. Real multi-threaded runs (real eventfd;
//!   epoll, ppoll, io_uring; polling off, on, on with a user poll handler) are recorded ([`real`]),
//!   converted to the Rust model's vocabulary ([`convert`]) and accepted by its oracle
//!   (`aioctx_model::check_trace`); a sample is also followed by promela/notify.pml itself
//!   ([`follower`]).
//! - `tests/traces_model_to_impl.rs`: model → implementation. Interleavings enumerated by the Rust
//!   model, random spin simulations and the spin trails of the BUG_* variants (lifted to the Rust
//!   model's vocabulary by [`lift`]; [`bugs`] for the trails) are replayed on the real code by a step
//!   scheduler ([`replay`], over the gate in `aioctx::trace`; [`commute`] for the one reordering it
//!   needs; [`device`] for the poll-mode models, which have no Rust-model counterpart). The
//!   `conformance-replay` binary replays the bug trails with a bug planted (`AIOCTX_BUG`).
//! - `tests/names.rs`: the names that must agree across Promela, the Rust model and the code
//!   ([`names`]).
//! - `tests/workloads.rs`: generated workloads over the whole API ([`workload`]; the programs, the
//!   runner and the oracle are `aioctx_model::workload`) on the model kernel with injected faults
//!   and on every real backend.
//! - `tests/prop_*.rs`: property tests against sequential references.
//! - `tests/qemu_*.rs`: QEMU's documented AioContext semantics.
//!
//! `ci/conformance [--full]` runs the first three and writes `target/conformance/summary.tsv`. The
//! recorder and the gate are process-global: every test that records or replays takes [`serial`]
//! first.

#![allow(clippy::disallowed_types)] // a test harness: std sync types, never run under a checker

pub mod bugs;
pub mod commute;
pub mod convert;
pub mod device;
pub mod follower;
pub mod lift;
pub mod msc;
pub mod names;
pub mod real;
pub mod replay;
pub mod report;
pub mod spin;
pub mod workload;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// The workspace root (the parent of this package).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Where conformance outputs go: `target/conformance/` (rejected traces, follower models, trails).
pub fn out_dir() -> PathBuf {
    let d = root().join("target").join("conformance");
    std::fs::create_dir_all(&d).expect("create target/conformance");
    d
}

/// Serialises the tests of one binary that use the global recorder or gate.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `AIOCTX_CONF_FULL=1`: the full tier (larger bounds, more traces).
pub fn full() -> bool {
    std::env::var("AIOCTX_CONF_FULL").is_ok_and(|v| v == "1")
}

/// Traces per configuration: `AIOCTX_CONF_TRACES`, default 200 (CI) or 1000 (full tier).
pub fn traces_per_config() -> usize {
    match std::env::var("AIOCTX_CONF_TRACES") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("AIOCTX_CONF_TRACES={v} is not a number")),
        Err(_) if full() => 1000,
        Err(_) => 200,
    }
}

/// Print the line ci/conformance collects (and the test log shows):
/// `CONFORMANCE <direction> | <config> | traces=<n> | steps=<m> | secs=<s> | <extra>`.
pub fn report(direction: &str, config: &str, traces: usize, steps: usize, secs: f64, extra: &str) {
    println!(
        "CONFORMANCE {direction} | {config} | traces={traces} | steps={steps} | secs={secs:.1} | {extra}"
    );
}

/// A small deterministic PRNG (xorshift64*), so runs are reproducible from a printed seed: the
/// workload generator's (one implementation for both packages).
pub use aioctx_model::workload::Rng;
pub mod rescuer;
