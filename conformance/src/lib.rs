//! aioctx-conformance: the real implementation checked against the models.
//!
//! - `tests/traces_*.rs`: implementation → model (recorded traces accepted by the Rust model's
//!   oracle) and model → implementation (model and spin interleavings replayed on the real code).
//! - `tests/names.rs`: the names that must agree across Promela, the Rust model and the code.
//! - `tests/prop_*.rs`: property tests against sequential references.
//! - `tests/qemu_*.rs`: QEMU's documented AioContext semantics.
