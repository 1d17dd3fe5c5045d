//! Shared helpers of the integration tests.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use aioctx::{AioContext, Backend};

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
