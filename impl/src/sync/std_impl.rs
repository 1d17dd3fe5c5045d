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

/// A mutex that does not poison: a panic while holding it is a bug that is already being reported.
#[derive(Debug, Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

/// The guard of [`Mutex`].
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(v: T) -> Self {
        Mutex(std::sync::Mutex::new(v))
    }
    /// Lock it; never fails.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(std::sync::Condvar::new())
    }
    /// Block until notified (spurious wake-ups possible).
    pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(g).unwrap_or_else(|e| e.into_inner())
    }
    /// Block until notified or `d` passed. Returns the guard and whether it timed out.
    pub fn wait_timeout<'a, T>(
        &self,
        g: MutexGuard<'a, T>,
        d: std::time::Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        let (g, r) = self.0.wait_timeout(g, d).unwrap_or_else(|e| e.into_inner());
        (g, r.timed_out())
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

/// loom's `UnsafeCell` API over std's: access only through `with` / `with_mut`.
#[derive(Debug, Default)]
pub struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    /// A new cell.
    pub const fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    /// Consume the cell.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

impl<T: ?Sized> UnsafeCell<T> {
    /// Shared access through a raw pointer.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    /// Exclusive access through a raw pointer.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
