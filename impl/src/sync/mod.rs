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

/// The non-poisoning `Mutex` and the guard-passing `Condvar` over a backend's own types. `$timeout`
/// is the body of `wait_timeout` (std waits; the model checkers have no time and report a timeout:
/// callers model a finite wait as "may time out").
macro_rules! lock_wrappers {
    ($mutex:path, $guard:path, $condvar:path, |$cv:ident, $g:ident, $d:ident| $timeout:expr) => {
        /// A mutex that does not poison: a panic while holding it is a bug that is already reported.
        #[derive(Debug, Default)]
        pub struct Mutex<T>($mutex);

        /// The guard of [`Mutex`].
        pub type MutexGuard<'a, T> = $guard;

        impl<T> Mutex<T> {
            /// A new unlocked mutex.
            pub fn new(v: T) -> Self {
                Mutex(<$mutex>::new(v))
            }
            /// Lock it; never fails.
            pub fn lock(&self) -> MutexGuard<'_, T> {
                self.0.lock().unwrap_or_else(|e| e.into_inner())
            }
        }

        /// A condition variable paired with [`Mutex`].
        #[derive(Debug, Default)]
        pub struct Condvar($condvar);

        impl Condvar {
            /// A new condition variable.
            pub fn new() -> Self {
                Condvar(<$condvar>::new())
            }
            /// Block until notified (spurious wake-ups possible).
            pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
                self.0.wait(g).unwrap_or_else(|e| e.into_inner())
            }
            /// Block until notified or `d` passed. Returns the guard and whether it timed out.
            pub fn wait_timeout<'a, T>(
                &self,
                $g: MutexGuard<'a, T>,
                $d: std::time::Duration,
            ) -> (MutexGuard<'a, T>, bool) {
                let $cv = &self.0;
                $timeout
            }
            /// Wake one waiter.
            pub fn notify_one(&self) {
                self.0.notify_one()
            }
            /// Wake every waiter.
            pub fn notify_all(&self) {
                self.0.notify_all()
            }
        }
    };
}

#[cfg(not(aioctx_loom))]
mod cell;

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
pub use runner::{model, model_named, planted_at_run_time, ModelReport, PLANTED_BUGS};

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
