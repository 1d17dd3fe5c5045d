//! A nested wait inside an fd callback leaves that handler's registration out (its callback is
//! running, so its readiness is no reason to wake), and what it leaves in its place must be nothing
//! the kernel reports: not the handler's own fd (epoll and io_uring report a hang-up even with no
//! events asked: until the monitors parked such a registration, a hung-up fd made the nested wait
//! spin on both), and not another fd of the process (a daemon whose standard output is a pipe whose
//! reader went away has fd 1 in an error state for good: ppoll's array with fd 1 in the place of
//! the -1 it holds there, the mutant `delete -` of `PollSet::rebuild`, spins on it). A test binary
//! of its own: it swaps the process's fd 1.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use common::*;

/// Fd 1 replaced by the write end of a pipe whose read end is closed (POLLERR for good), until
/// dropped (also on a failed assertion): then the old fd 1 is back. Nothing may print meanwhile.
struct BrokenStdout {
    saved: OwnedFd,
}

impl BrokenStdout {
    fn new() -> BrokenStdout {
        let mut p = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the array with two new fds, owned below; dup and dup2 on fds this
        // process holds.
        unsafe {
            assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
            let (r, w) = (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]));
            drop(r);
            let saved = libc::dup(1);
            assert!(saved >= 0, "dup(1)");
            assert_eq!(libc::dup2(w.as_raw_fd(), 1), 1, "dup2 over fd 1");
            BrokenStdout { saved: OwnedFd::from_raw_fd(saved) }
        }
    }
}

impl Drop for BrokenStdout {
    fn drop(&mut self) {
        // SAFETY: dup2 of an fd this guard owns over fd 1.
        let r = unsafe { libc::dup2(self.saved.as_raw_fd(), 1) };
        assert_eq!(r, 1, "restoring fd 1");
    }
}

/// With fd 1 in an error state, an fd handler whose fd is readable, or hung up, waits nested for
/// another thread's work (`handler_waits_nested`): the nested wait sleeps instead of spinning, the
/// handler is not re-entered and runs again after the outer call.
#[test]
fn a_nested_wait_ignores_the_running_handlers_fd_and_a_broken_stdout() {
    let runs = {
        let _stdout = BrokenStdout::new();
        let mut runs = Vec::new();
        for (name, b) in backends() {
            for hung_up in [false, true] {
                let ctx = ctx(&b);
                let (r, mut w) = UnixStream::pair().unwrap();
                if hung_up {
                    drop(w);
                } else {
                    w.write_all(b"x").unwrap();
                }
                runs.push((format!("{name}, hung up: {hung_up}"), handler_waits_nested(&ctx, &r)));
            }
        }
        runs
    };
    // fd 1 is back: the assertions may print.
    for (case, run) in runs {
        run.assert_slept_and_ran_after(&case);
    }
}
