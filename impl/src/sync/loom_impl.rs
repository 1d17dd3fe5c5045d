//! loom backend of the facade (`--cfg aioctx_loom`).

/// loom's `Arc`, except that a drop during unwinding leaks instead of touching the model.
///
/// Why: when loom finds a deadlock (a lost wakeup: every thread blocked) it panics in the thread that
/// blocked last, after clearing the active thread. A loom operation in a destructor run by that
/// unwinding (`Arc`'s reference decrement is a loom branch) then panics again, and a panic during
/// unwinding aborts the process: the deadlock could not be reported as `p_no_lost_wakeup`, nor caught
/// by a `should_panic` test. Leaking on a failing execution is harmless: loom checks for leaks only at
/// the end of an execution that completed.
pub struct Arc<T: ?Sized>(std::mem::ManuallyDrop<loom::sync::Arc<T>>);

impl<T> Arc<T> {
    /// A new reference-counted value.
    #[track_caller]
    pub fn new(v: T) -> Self {
        Arc(std::mem::ManuallyDrop::new(loom::sync::Arc::new(v)))
    }
    /// Consume the `Arc`, returning the pointer (as `std::sync::Arc::into_raw`).
    pub fn into_raw(this: Self) -> *const T {
        let mut this = std::mem::ManuallyDrop::new(this);
        // SAFETY:
        // - `this` is wrapped in ManuallyDrop, so its Drop never runs and the inner Arc is taken once.
        let inner = unsafe { std::mem::ManuallyDrop::take(&mut this.0) };
        loom::sync::Arc::into_raw(inner)
    }
    /// Rebuild an `Arc` from [`Arc::into_raw`].
    ///
    /// # Safety
    ///
    /// As `std::sync::Arc::from_raw`: `ptr` came from `Arc::into_raw` and its reference is given back.
    #[track_caller]
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: forwarded to the caller's contract.
        Arc(std::mem::ManuallyDrop::new(unsafe { loom::sync::Arc::from_raw(ptr) }))
    }
}

impl<T: ?Sized> Arc<T> {
    /// Whether both point to the same allocation.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        loom::sync::Arc::ptr_eq(&a.0, &b.0)
    }
    /// Number of strong references.
    pub fn strong_count(this: &Self) -> usize {
        loom::sync::Arc::strong_count(&this.0)
    }
}

impl<T: ?Sized> Clone for Arc<T> {
    #[track_caller]
    fn clone(&self) -> Self {
        Arc(self.0.clone())
    }
}

impl<T: ?Sized> std::ops::Deref for Arc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> Drop for Arc<T> {
    #[track_caller]
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // leak: see the type's docs
        }
        // SAFETY: `self.0` is dropped exactly once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.0) }
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Arc<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Default> Default for Arc<T> {
    #[track_caller]
    fn default() -> Self {
        Arc::new(T::default())
    }
}

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

lock_wrappers!(
    loom::sync::Mutex<T>,
    loom::sync::MutexGuard<'a, T>,
    loom::sync::Condvar,
    |_cv, g, _d| {
        // There is no time under loom: report a timeout (callers model "may time out").
        (g, true)
    }
);

pub use loom::cell::UnsafeCell;
