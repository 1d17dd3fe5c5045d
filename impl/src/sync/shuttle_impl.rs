//! shuttle backend of the facade (`--cfg aioctx_shuttle`). shuttle schedules threads but models no
//! weak memory: every atomic is SeqCst and `fence` only marks a scheduling point.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub use std::sync::Arc;

/// Atomics and fences.
pub mod atomic {
    pub use shuttle::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    /// shuttle has no weak memory, so a fence orders nothing extra: a no-op. Not a scheduling point
    /// either: the atomic accesses on both sides already are, and a `spin_loop` here would mark the
    /// thread as yielding, which makes the PCT scheduler demote it at every fence, so the notifier
    /// always lost the race to the poller's arm and PCT could never reach a lost wakeup.
    #[inline]
    pub fn fence(_o: Ordering) {}
}

/// Threads.
pub mod thread {
    pub use shuttle::thread::{current, park, spawn, yield_now, JoinHandle, ThreadId};
}

/// Spin hints (a yield point for shuttle).
pub mod hint {
    pub use shuttle::hint::spin_loop;
}

pub use shuttle::thread_local;

lock_wrappers!(
    shuttle::sync::Mutex<T>,
    shuttle::sync::MutexGuard<'a, T>,
    shuttle::sync::Condvar,
    |_cv, g, _d| {
        // shuttle turns real timeouts into deadlocks: report a timeout (callers model "may time out").
        (g, true)
    }
);

/// shuttle has no `UnsafeCell` model; its schedules are sequential, so std's cell with loom's API.
pub use super::cell::UnsafeCell;
