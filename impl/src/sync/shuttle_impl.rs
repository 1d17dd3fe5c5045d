//! shuttle backend of the facade (`--cfg aioctx_shuttle`). shuttle schedules threads but models no
//! weak memory: every atomic is SeqCst and `fence` only marks a scheduling point.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub use std::sync::Arc;

/// Atomics and fences.
pub mod atomic {
    pub use shuttle::sync::atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    /// shuttle has no weak memory, so a fence orders nothing extra; it is kept as a scheduling point.
    #[inline]
    pub fn fence(_o: Ordering) {
        shuttle::hint::spin_loop();
    }
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

/// A mutex that does not poison.
#[derive(Debug, Default)]
pub struct Mutex<T>(shuttle::sync::Mutex<T>);

/// The guard of [`Mutex`].
pub type MutexGuard<'a, T> = shuttle::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(v: T) -> Self {
        Mutex(shuttle::sync::Mutex::new(v))
    }
    /// Lock it; never fails.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(shuttle::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(shuttle::sync::Condvar::new())
    }
    /// Block until notified.
    pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(g).unwrap_or_else(|e| e.into_inner())
    }
    /// shuttle turns real timeouts into deadlocks: callers model a finite wait as a timeout instead.
    pub fn wait_timeout<'a, T>(
        &self,
        g: MutexGuard<'a, T>,
        _d: std::time::Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        (g, true)
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

/// shuttle has no `UnsafeCell` model; its schedules are sequential, so std's cell with loom's API.
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
