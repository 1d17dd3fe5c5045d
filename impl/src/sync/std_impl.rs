//! std backend of the facade (production builds).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub use std::sync::Arc;

/// Atomics and fences.
pub mod atomic {
    pub use std::sync::atomic::{
        fence, AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
}

/// Threads.
pub mod thread {
    pub use std::thread::{current, park, spawn, yield_now, Builder, JoinHandle, ThreadId};
}

/// Spin hints.
pub mod hint {
    pub use std::hint::spin_loop;
}

pub use std::thread_local;

lock_wrappers!(
    std::sync::Mutex<T>,
    std::sync::MutexGuard<'a, T>,
    std::sync::Condvar,
    |cv, g, d| {
        let (g, r) = cv.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner());
        (g, r.timed_out())
    }
);

pub use super::cell::UnsafeCell;
