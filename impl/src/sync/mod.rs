//! The sync facade: the one place that chooses between std, loom and shuttle.
//!
//! Every other module of the crate takes `Arc`, `Mutex`, `Condvar`, atomics, fences, `UnsafeCell`,
//! threads and `spin_loop` from here (clippy's `disallowed-types` forbids std's elsewhere), so the
//! model checkers see every shared-memory operation of the protocol. The backend is chosen by a
//! namespaced cfg flag, never a cargo feature (features unify across a build; RUSTFLAGS does not):
//!
//! | cfg | backend | what it checks |
//! |---|---|---|
//! | (none) | std | production |
//! | `--cfg aioctx_loom` | loom 0.7 | every interleaving up to a preemption bound, C11 weak memory |
//! | `--cfg aioctx_shuttle` | shuttle 0.9 | random / PCT schedules of larger scenarios (no weak memory) |
//!
//! The API is loom's: `UnsafeCell::with`/`with_mut`, a non-poisoning `Mutex::lock`, and a
//! `Condvar::wait` that takes and returns the guard. [`model`] runs a closure under the selected checker
//! and reports how many executions it explored.

#[cfg(all(aioctx_loom, aioctx_shuttle))]
compile_error!("aioctx: --cfg aioctx_loom and --cfg aioctx_shuttle are exclusive");

#[cfg(aioctx_loom)]
mod loom_impl;
#[cfg(aioctx_loom)]
pub use loom_impl::*;

#[cfg(aioctx_shuttle)]
mod shuttle_impl;
#[cfg(aioctx_shuttle)]
pub use shuttle_impl::*;

#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
mod std_impl;
#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
pub use std_impl::*;

mod runner;
pub use runner::{model, model_named, ModelReport};

/// Whether this thread is unwinding inside a loom model. Destructors that would touch the model (a
/// facade lock, atomic or thread-local) skip that work then: after loom's deadlock panic (a lost
/// wakeup) there is no active thread, and any model operation during the unwinding panics again, which
/// aborts the process instead of reporting `p_no_lost_wakeup` (see the loom facade's `Arc`). Always
/// false outside loom.
#[inline]
pub(crate) fn model_unwinding() -> bool {
    cfg!(aioctx_loom) && std::thread::panicking()
}

/// True when built for a model checker (loom or shuttle): there is no kernel, and the context uses the
/// model notifier, fd monitor and clock.
pub const MODEL_CHECKER: bool = cfg!(any(aioctx_loom, aioctx_shuttle));
