//! `IoThread`: a thread that runs one context until stopped.
//!
//! The stop request is a oneshot BH scheduled by the joining thread, so a lost cross-thread wakeup
//! hangs `join` (the tests run it in a loop with a watchdog). Upstream: QEMU iothread.c
//! (`iothread_run`, `iothread_stop`) and test-aio-multithread.c's `ctx_run`.

use std::io;

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{thread, Arc, Condvar, Mutex};
use crate::{AioContext, Builder, Handle};

/// A thread running `poll(true)` on its own [`AioContext`] until stopped.
///
/// # Examples
///
/// ```
/// use aioctx::IoThread;
/// let t = IoThread::spawn("io0")?;
/// let answer = t.run_sync(|| 6 * 7);
/// assert_eq!(answer, 42);
/// t.join();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct IoThread {
    handle: Handle,
    thread: Option<thread::JoinHandle<()>>,
    /// The loop's stop flag, set by a oneshot BH on the thread (`request_stop`). The IoThread's own
    /// state: the context knows nothing of it.
    stop: Arc<AtomicBool>,
}

/// A one-value rendezvous over the facade (so loom and shuttle see it).
struct Slot<T> {
    v: Mutex<Option<T>>,
    cv: Condvar,
}

impl<T> Slot<T> {
    fn new() -> Arc<Self> {
        Arc::new(Slot { v: Mutex::new(None), cv: Condvar::new() })
    }
    fn put(&self, v: T) {
        *self.v.lock() = Some(v);
        self.cv.notify_all();
    }
    fn take(&self) -> T {
        let mut g = self.v.lock();
        loop {
            if let Some(v) = g.take() {
                return v;
            }
            g = self.cv.wait(g);
        }
    }
}

impl IoThread {
    /// Start a thread named `name` with a default context.
    ///
    /// # Errors
    ///
    /// The thread or the context could not be created.
    pub fn spawn(name: &str) -> io::Result<IoThread> {
        Self::spawn_with(name, AioContext::builder)
    }

    /// Start a thread whose context is built by `builder()` on the new thread.
    ///
    /// # Errors
    ///
    /// The thread or the context could not be created (the context's error is returned).
    pub fn spawn_with<F>(name: &str, builder: F) -> io::Result<IoThread>
    where
        F: FnOnce() -> Builder + Send + 'static,
    {
        let slot: Arc<Slot<io::Result<Handle>>> = Slot::new();
        let s2 = slot.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let body = move || {
            let ctx = match builder().build() {
                Ok(c) => c,
                Err(e) => return s2.put(Err(e)),
            };
            let stop = stop2;
            s2.put(Ok(ctx.handle().clone()));
            // ORDERING: Relaxed: the flag is set by a BH running on this very thread.
            while !stop.load(Ordering::Relaxed) {
                ctx.poll(true);
            }
        };
        #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
        let t = thread::Builder::new().name(name.to_string()).spawn(body)?;
        #[cfg(any(aioctx_loom, aioctx_shuttle))]
        let t = {
            let _ = name;
            thread::spawn(body)
        };
        match slot.take() {
            Ok(handle) => Ok(IoThread { handle, thread: Some(t), stop }),
            Err(e) => {
                let _ = t.join();
                Err(e)
            }
        }
    }

    /// The context's cross-thread handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run `f` on the thread and wait for its result (QEMU's `ctx_run`: a oneshot BH plus a wait).
    pub fn run_sync<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let slot = Slot::new();
        let s2 = slot.clone();
        self.handle.bh_oneshot(move || s2.put(f()));
        slot.take()
    }

    /// Stop the loop (a oneshot BH from this thread) and join the thread.
    ///
    /// # Panics
    ///
    /// If the thread panicked, its panic is resumed here.
    pub fn join(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(t) = self.thread.take() {
            self.request_stop();
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop_and_join();
        } else if let Some(t) = self.thread.take() {
            self.request_stop();
            let _ = t.join();
        }
    }
}

impl IoThread {
    /// Schedule the stop of the loop (a oneshot BH on its thread).
    fn request_stop(&self) {
        let stop = self.stop.clone();
        // ORDERING: Relaxed: read by the loop on the thread that runs this BH.
        self.handle.bh_oneshot(move || stop.store(true, Ordering::Relaxed));
    }
}
