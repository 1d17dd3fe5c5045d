//! Shared helpers of the integration tests.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aioctx::{AioContext, Backend, Handle};

/// Every real backend; each test runs once per backend. (Under `--cfg aioctx_force_fdmon` the
/// builder maps all of them to the forced one, which is what the CI reruns want.)
pub fn backends() -> Vec<(&'static str, Backend)> {
    vec![("auto", Backend::Auto), ("ppoll", Backend::Ppoll), ("epoll", Backend::Epoll)]
}

pub fn ctx(b: &Backend) -> AioContext {
    AioContext::builder().backend(b.clone()).build().expect("context")
}

/// Run `f` on a thread and fail (instead of hanging) if it does not finish within `secs`.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hang: did not finish in {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
    }
}

// ---------------------------------------------------------------- nested polls (nested.rs, broken_stdout.rs)

/// More nested calls than this is a spin (the defect made 416,348 in 50 ms); the loops stop here so a
/// regression fails quickly instead of running forever.
pub const SPIN_CAP: u32 = 10_000;

/// A nested blocking wait for another thread's work makes at most this many `poll(true)` calls: one
/// that consumes the self-reschedule's notify, one that sleeps until the work arrives, and slack
/// for a spurious wake-up.
pub const FEW_CALLS: u32 = 4;

/// A thread that, after `delay`, runs a oneshot BH on the context setting the returned flag.
pub fn work_after(h: &Handle, delay: Duration) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let (d2, h) = (done.clone(), h.clone());
    let t = std::thread::spawn(move || {
        std::thread::sleep(delay);
        h.bh_oneshot(move || d2.store(true, Relaxed));
    });
    (done, t)
}

/// Nested `poll(true)` until `done`; returns (calls, calls that reported progress). Stops at SPIN_CAP.
pub fn nested_wait(ctx: &AioContext, done: &AtomicBool) -> (u32, u32) {
    let (mut calls, mut progress) = (0, 0);
    while !done.load(Relaxed) && calls < SPIN_CAP {
        calls += 1;
        progress += u32::from(ctx.poll(true));
    }
    (calls, progress)
}

/// What [`handler_waits_nested`] saw.
#[derive(Debug)]
pub struct NestedHandlerRun {
    /// `poll(true)` calls of the nested wait, and how many of them reported progress.
    pub nested_calls: u32,
    pub nested_progress: u32,
    /// Handler calls when the outer poll returned, and after the next `poll(false)`.
    pub calls_before: u32,
    pub calls_after: u32,
    /// What that `poll(false)` returned.
    pub runs_after: bool,
}

/// A read handler on `r` (readable and never read, or hung up: ready for good) waits nested, from
/// its first call, for another thread's work 50 ms away; then a `poll(false)` should run it again.
/// Prints nothing (broken_stdout.rs runs it with fd 1 broken).
pub fn handler_waits_nested(
    ctx: &AioContext,
    r: &std::os::unix::net::UnixStream,
) -> NestedHandlerRun {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicU32;
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(std::sync::Mutex::new((0, 0)));
    let (c2, seen2) = (calls.clone(), seen.clone());
    ctx.set_fd_handler(
        r.as_raw_fd(),
        aioctx::FdHandler::new().on_read(move |this| {
            if c2.fetch_add(1, Relaxed) == 0 {
                let ctx = this.context();
                let (done, t) = work_after(ctx.handle(), Duration::from_millis(50));
                *seen2.lock().unwrap() = nested_wait(ctx, &done);
                t.join().unwrap();
            }
        }),
    )
    .unwrap();
    while calls.load(Relaxed) == 0 {
        ctx.poll(true);
    }
    let (nested_calls, nested_progress) = *seen.lock().unwrap();
    let calls_before = calls.load(Relaxed);
    let runs_after = ctx.poll(false);
    let calls_after = calls.load(Relaxed);
    ctx.remove_fd_handler(r.as_raw_fd()).unwrap();
    NestedHandlerRun { nested_calls, nested_progress, calls_before, calls_after, runs_after }
}

impl NestedHandlerRun {
    /// The nested wait slept (a few `poll(true)` calls, the one that ran the other thread's work the
    /// only progress), the handler was not re-entered, and it ran again after the outer call.
    pub fn assert_slept_and_ran_after(&self, case: &str) {
        let (n, progress) = (self.nested_calls, self.nested_progress);
        assert!(
            n <= FEW_CALLS,
            "{case}: the nested wait spun: {n} poll(true) calls ({progress} progress)"
        );
        assert_eq!(
            progress, 1,
            "{case}: only the call that ran the other thread's work is progress"
        );
        assert_eq!(self.calls_before, 1, "{case}: the handler was re-entered");
        assert!(self.runs_after, "{case}: the handler does not run after the outer call");
        assert_eq!(self.calls_after, 2, "{case}");
    }
}
