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
