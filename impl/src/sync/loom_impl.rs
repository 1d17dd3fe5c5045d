//! loom backend of the facade (`--cfg aioctx_loom`).

pub use loom::sync::Arc;

/// Atomics and fences (loom models `fence(SeqCst)`; SeqCst *accesses* are treated as AcqRel).
pub mod atomic {
    pub use loom::sync::atomic::{
        fence, AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
}

/// Threads.
pub mod thread {
    pub use loom::thread::{current, park, spawn, yield_now, JoinHandle, ThreadId};
}

/// Spin hints (a yield point for loom).
pub mod hint {
    pub use loom::hint::spin_loop;
}

pub use loom::thread_local;

/// A mutex that does not poison.
#[derive(Debug)]
pub struct Mutex<T>(loom::sync::Mutex<T>);

/// The guard of [`Mutex`].
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(v: T) -> Self {
        Mutex(loom::sync::Mutex::new(v))
    }
    /// Lock it; never fails.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(loom::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(loom::sync::Condvar::new())
    }
    /// Block until notified.
    pub fn wait<'a, T>(&self, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(g).unwrap_or_else(|e| e.into_inner())
    }
    /// There is no time under loom: callers model a finite wait as a nondeterministic timeout instead.
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

pub use loom::cell::UnsafeCell;
