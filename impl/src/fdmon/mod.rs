//! The fd monitors (std builds only): [`Ppoll`], [`Epoll`] and [`IoUring`], the kernel backends of
//! [`FdMonitor`](crate::kernel::FdMonitor).
//!
//! All are level-triggered and report a hang-up or error (POLLHUP, POLLERR, POLLNVAL) as readable
//! *and* writable, so whichever handlers the fd has see it ([`revents_to_event`]). A context starts on
//! ppoll and switches to epoll at [`EPOLL_THRESHOLD`] registrations.
//!
//! # Upstream
//!
//! QEMU `util/fdmon-poll.c` (ppoll), `util/fdmon-epoll.c` (epoll, `FDMON_EPOLL_THRESHOLD` = 64),
//! `util/fdmon-io_uring.c` (io_uring), `util/aio-posix.c` (`aio_dispatch_handler`: G_IO_HUP |
//! G_IO_ERR go to both handlers).

use std::os::raw::c_int;
use std::time::Duration;

use crate::kernel::{Event, Interest};

#[cfg(test)]
use crate::kernel::FdMonitor;

/// Instantiate the backend-independent monitor tests of [`suite`] for one backend: `$new` is an
/// expression that builds a fresh monitor. `maybe $new`: `$new` is an `Option` of one, and each test
/// passes without running when it is `None` (a backend this kernel may lack, e.g. io_uring; the
/// expression prints why). `transient $new`: the same but for the one test that needs a
/// zero-timeout wait to reach the kernel (a monitor with transient enter failures injected may
/// report a ready fd only at its next wait).
#[cfg(test)]
macro_rules! fd_monitor_suite {
    (maybe $new:expr) => {
        fd_monitor_suite!(@list $new);
    };
    (transient $new:expr) => {
        fd_monitor_suite!(@core $new);
    };
    ($new:expr) => {
        fd_monitor_suite!(@list Some($new));
    };
    (@list $new:expr) => {
        fd_monitor_suite!(@core $new);
        fd_monitor_suite!(@tests $new; pipe_read_end_readable_after_write_reports_token);
    };
    (@core $new:expr) => {
        fd_monitor_suite!(@tests $new;
            pipe_write_end_writable,
            timeout_zero_returns_at_once_with_nothing,
            timeout_finite_is_never_early,
            timed_wait_sleeps,
            add_closed_fd_error_names_fd,
            add_duplicate_fd_is_error,
            delete_then_wait_does_not_report,
            add_then_delete_another_reports_the_added_one,
            reregistrations_with_modifies_keep_reporting,
            reregistrations_keep_reporting,
            delete_closed_fd_is_ok,
            hangup_reported_as_readable,
            no_interest_reports_nothing_not_even_a_hang_up,
            modify_changes_interest_and_token,
            many_registrations_report_only_ready,
            more_ready_than_one_wait_returns_come_in_next_waits,
            signal_during_blocking_wait_keeps_waiting,
            signal_during_timed_wait_is_never_early,
            debug_output_shows_the_registrations
        );
    };
    (@tests $new:expr; $($name:ident),*) => {$(
        #[test]
        fn $name() {
            let monitor: Option<_> = $new;
            if let Some(m) = monitor {
                $crate::fdmon::suite::$name(m);
            }
        }
    )*};
}

pub mod epoll;
pub mod io_uring;
pub mod ppoll;

pub use self::io_uring::IoUring;
pub use epoll::Epoll;
pub use ppoll::Ppoll;

/// Registrations at which a context leaves ppoll for epoll (QEMU's `FDMON_EPOLL_THRESHOLD`): below it
/// rebuilding a pollfd array is cheaper than epoll_ctl calls, above it a ppoll scan costs more.
#[doc(alias = "FDMON_EPOLL_THRESHOLD")]
pub const EPOLL_THRESHOLD: usize = 64;

// poll(2) and epoll(7) share the bit values that matter here, so one decoder serves both.
const _: () = {
    assert!(libc::POLLIN as u32 == libc::EPOLLIN as u32);
    assert!(libc::POLLOUT as u32 == libc::EPOLLOUT as u32);
    assert!(libc::POLLERR as u32 == libc::EPOLLERR as u32);
    assert!(libc::POLLHUP as u32 == libc::EPOLLHUP as u32);
};

/// The event bits to ask the kernel for: POLLIN / EPOLLIN for read, POLLOUT / EPOLLOUT for write.
/// Hang-up and error are always reported, asked or not.
pub(crate) fn interest_bits(interest: Interest) -> u32 {
    let mut bits = 0;
    if interest.read {
        bits |= libc::POLLIN as u32;
    }
    if interest.write {
        bits |= libc::POLLOUT as u32;
    }
    bits
}

/// Decode the readiness bits the kernel returned for `token`: poll(2) `revents` (as `u16`, widened)
/// or epoll `events`, which share these values.
///
/// IN is readable, OUT is writable; HUP, ERR and NVAL (an fd closed while registered) set both, as QEMU
/// hands G_IO_HUP | G_IO_ERR to the read and the write handler, so a handler hears of a dead fd
/// instead of the loop spinning on it silently. Other bits (PRI, RDHUP) decode to neither.
///
/// # Examples
///
/// ```
/// use aioctx::fdmon::revents_to_event;
///
/// let e = revents_to_event(7, libc::POLLHUP as u32);
/// assert!(e.readable && e.writable && e.token == 7);
/// ```
pub fn revents_to_event(token: u64, revents: u32) -> Event {
    let failed = revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) as u32 != 0;
    Event {
        token,
        readable: failed || revents & libc::POLLIN as u32 != 0,
        writable: failed || revents & libc::POLLOUT as u32 != 0,
    }
}

/// A timeout for a millisecond-resolution wait (epoll_wait, poll): `None` is -1 (forever); otherwise
/// rounded UP, so a deadline is never reported early, and capped at `c_int::MAX` ms (~24 days; the
/// caller then simply waits again).
pub(crate) fn timeout_ms_ceil(timeout: Option<Duration>) -> c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            c_int::try_from(ms).unwrap_or(c_int::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revents_decode() {
        let ev = |bits: libc::c_short| {
            let e = revents_to_event(3, bits as u16 as u32);
            (e.readable, e.writable)
        };
        assert_eq!(ev(0), (false, false));
        assert_eq!(ev(libc::POLLIN), (true, false));
        assert_eq!(ev(libc::POLLOUT), (false, true));
        assert_eq!(ev(libc::POLLHUP), (true, true));
        assert_eq!(ev(libc::POLLERR), (true, true));
        assert_eq!(ev(libc::POLLNVAL), (true, true));
        assert_eq!(ev(libc::POLLPRI), (false, false));
        let e = revents_to_event(9, libc::EPOLLIN as u32 | libc::EPOLLHUP as u32);
        assert_eq!(e, Event { token: 9, readable: true, writable: true });
    }

    #[test]
    fn timeout_ms_rounds_up() {
        assert_eq!(timeout_ms_ceil(None), -1);
        assert_eq!(timeout_ms_ceil(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms_ceil(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms_ceil(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms_ceil(Some(Duration::from_millis(20))), 20);
        assert_eq!(timeout_ms_ceil(Some(Duration::MAX)), c_int::MAX);
    }
}

/// Backend-independent [`FdMonitor`] tests, written once and instantiated per backend with
/// `fd_monitor_suite!` in `ppoll.rs`, `epoll.rs` and `io_uring.rs`.
#[cfg(test)]
pub(crate) mod suite {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::thread::JoinHandleExt;
    use std::time::{Duration, Instant};

    use super::FdMonitor;
    use crate::kernel::{Event, Interest};
    use crate::sync::atomic::{AtomicUsize, Ordering};
    use crate::sync::{thread, Arc};
    use crate::sys::{cvt, os_error};

    /// Tokens use the high bits, so a backend that truncates them to 32 bits fails.
    const TOKEN: u64 = 0xA10C_0000_0000_0001;
    const LONG: Option<Duration> = Some(Duration::from_secs(5));

    /// A non-blocking pipe, closed on drop.
    pub(crate) struct Pipe {
        pub(crate) r: OwnedFd,
        pub(crate) w: OwnedFd,
    }

    impl Pipe {
        pub(crate) fn new() -> Pipe {
            let mut fds = [-1; 2];
            // SAFETY:
            // - `fds` is a writable array of two c_ints, as pipe2 requires.
            cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })
                .unwrap();
            // SAFETY:
            // - pipe2 succeeded: both fds are open and owned by nothing else.
            unsafe { Pipe { r: OwnedFd::from_raw_fd(fds[0]), w: OwnedFd::from_raw_fd(fds[1]) } }
        }
        pub(crate) fn rfd(&self) -> RawFd {
            self.r.as_raw_fd()
        }
        pub(crate) fn wfd(&self) -> RawFd {
            self.w.as_raw_fd()
        }
        pub(crate) fn write(&self) {
            // SAFETY:
            // - the buffer is readable for 1 byte; `w` is open while `self` lives.
            let n = unsafe { libc::write(self.wfd(), b"x".as_ptr().cast(), 1) };
            assert_eq!(n, 1, "{}", io::Error::last_os_error());
        }
    }

    /// Calls of [`high_dup`] so far.
    static HIGH_DUPS: AtomicUsize = AtomicUsize::new(0);

    /// A duplicate of `fd` at a number no other descriptor of this process ever gets, so a test can
    /// close it and still use the number as "a closed fd": the kernel hands out the lowest free number
    /// (a closed low fd is reused at once by other test threads), and each call asks for a higher
    /// number than the one before, so nothing else asks for this one again.
    pub(crate) fn high_dup(fd: RawFd) -> OwnedFd {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY:
        // - `lim` is a valid, writable rlimit.
        cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).unwrap();
        // ORDERING: Relaxed. Only the uniqueness of the returned value matters.
        let n = HIGH_DUPS.fetch_add(1, Ordering::Relaxed) as u64;
        assert!(n < 64, "high_dup: more than 64 calls");
        let min = (lim.rlim_cur.min(4096) - 64 + n) as libc::c_int;
        // SAFETY:
        // - F_DUPFD_CLOEXEC takes an int and touches no memory; `fd` is open (the caller owns it).
        let d = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) }).unwrap();
        assert_eq!(d, min, "high_dup: fd {min} was taken");
        // SAFETY:
        // - `d` was just created by fcntl and is owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(d) }
    }

    fn wait<M: FdMonitor>(m: &M, timeout: Option<Duration>) -> Vec<Event> {
        let mut out = Vec::new();
        m.wait(timeout, &mut out).unwrap();
        out
    }

    pub(crate) fn pipe_read_end_readable_after_write_reports_token<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        assert_eq!(m.len(), 1);
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        p.write();
        let ev = wait(&m, LONG);
        assert_eq!(ev, [Event { token: TOKEN, readable: true, writable: false }]);
        // Level-triggered: still readable until read.
        assert_eq!(wait(&m, Some(Duration::ZERO)), ev);
    }

    /// An fd registered, deleted and registered again, with and without a wait in between (io_uring
    /// reuses its slot, each time in a new generation), is reported under its latest token.
    pub(crate) fn reregistrations_keep_reporting<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        for round in 0..4u64 {
            m.add(p.rfd(), TOKEN + round, Interest::READ).unwrap();
            if round % 2 == 0 {
                assert!(wait(&m, Some(Duration::ZERO)).is_empty(), "{}", m.name());
            }
            m.delete(p.rfd(), TOKEN + round).unwrap();
            assert!(wait(&m, Some(Duration::ZERO)).is_empty(), "{}", m.name());
        }
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        p.write();
        let ev = wait(&m, LONG);
        assert_eq!(ev, [Event { token: TOKEN, readable: true, writable: false }], "{}", m.name());
    }

    /// As `reregistrations_keep_reporting`, with 0, 1, 2, ... modifies in the rounds, each
    /// registration checked: every one of the fd (io_uring: a reused slot, with the generations
    /// its modifies moved on, in every combination of a few) reports it.
    pub(crate) fn reregistrations_with_modifies_keep_reporting<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        // Reports `token` for one write, then drains the pipe.
        let reports = |token: u64, what: &str| {
            p.write();
            let ev = wait(&m, LONG);
            assert_eq!(
                ev,
                [Event { token, readable: true, writable: false }],
                "{} {what}",
                m.name()
            );
            let mut b = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a local buffer from the pipe's open read end.
            assert_eq!(unsafe { libc::read(p.rfd(), b.as_mut_ptr().cast(), 8) }, 1);
        };
        for round in 0..5u64 {
            m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
            reports(TOKEN, &format!("round {round}, added"));
            for k in 1..=round {
                m.modify(p.rfd(), TOKEN + k, Interest::READ).unwrap();
                assert!(wait(&m, Some(Duration::ZERO)).is_empty(), "{}", m.name());
            }
            reports(TOKEN + round, &format!("round {round}, modified"));
            m.delete(p.rfd(), TOKEN + round).unwrap();
            // Long enough for the removal's completions (io_uring frees the slot on the last).
            assert!(wait(&m, Some(Duration::from_millis(1))).is_empty(), "{}", m.name());
        }
    }

    pub(crate) fn pipe_write_end_writable<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        m.add(p.wfd(), TOKEN, Interest::WRITE).unwrap();
        let ev = wait(&m, LONG);
        assert_eq!(ev, [Event { token: TOKEN, readable: false, writable: true }]);
    }

    pub(crate) fn timeout_zero_returns_at_once_with_nothing<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        let t = Instant::now();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    pub(crate) fn timeout_finite_is_never_early<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        for d in [Duration::from_millis(20), Duration::from_micros(1500), Duration::from_nanos(1)] {
            let t = Instant::now();
            assert!(wait(&m, Some(d)).is_empty());
            let waited = t.elapsed();
            assert!(waited >= d, "{} woke after {waited:?} of {d:?}", m.name());
        }
    }

    /// A wait with nothing ready sleeps in the kernel: over 100 ms of waiting the thread uses at
    /// most 20 ms of CPU. A busy machine only makes a spinning wait use less, never a sleeping one
    /// more, so the bound cannot fail a correct monitor.
    pub(crate) fn timed_wait_sleeps<M: FdMonitor>(m: M) {
        let cpu = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY:
            // - `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
            cvt(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }).unwrap();
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        };
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        let (t, c) = (Instant::now(), cpu());
        assert!(wait(&m, Some(Duration::from_millis(100))).is_empty());
        let (waited, used) = (t.elapsed(), cpu() - c);
        assert!(waited >= Duration::from_millis(100), "{} woke after {waited:?}", m.name());
        assert!(
            used <= Duration::from_millis(20),
            "{} spun: {used:?} of CPU in {waited:?}",
            m.name()
        );
    }

    pub(crate) fn add_closed_fd_error_names_fd<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        let fd = high_dup(p.rfd()).as_raw_fd(); // the dup is closed at the end of this statement
        let e = m.add(fd, TOKEN, Interest::READ).unwrap_err();
        assert!(e.to_string().contains(&format!("fd {fd}")), "{}: {e}", m.name());
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert_eq!(os_error(&e), Some(libc::EBADF), "{e}");
        assert_eq!(m.len(), 0);
    }

    pub(crate) fn add_duplicate_fd_is_error<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        let e = m.add(p.rfd(), TOKEN + 1, Interest::READ).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(e.to_string().contains(&format!("fd {}", p.rfd())), "{}: {e}", m.name());
        assert_eq!(m.len(), 1);
        // The first registration is untouched.
        p.write();
        assert_eq!(wait(&m, LONG), [Event { token: TOKEN, readable: true, writable: false }]);
    }

    pub(crate) fn delete_then_wait_does_not_report<M: FdMonitor>(m: M) {
        let (a, b) = (Pipe::new(), Pipe::new());
        m.add(a.rfd(), TOKEN, Interest::READ).unwrap();
        m.add(b.rfd(), TOKEN + 1, Interest::READ).unwrap();
        a.write();
        b.write();
        assert_eq!(wait(&m, LONG).len(), 2);
        m.delete(a.rfd(), TOKEN).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(wait(&m, LONG), [Event { token: TOKEN + 1, readable: true, writable: false }]);
        m.delete(b.rfd(), TOKEN + 1).unwrap();
        assert!(m.is_empty());
        assert!(wait(&m, Some(Duration::from_millis(1))).is_empty());
    }

    /// The set waited on follows every change, also a change that undoes the count of the one
    /// before it (one add, one delete: the same number of registrations as at the last wait).
    pub(crate) fn add_then_delete_another_reports_the_added_one<M: FdMonitor>(m: M) {
        let (a, b) = (Pipe::new(), Pipe::new());
        m.add(a.rfd(), TOKEN, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty(), "{}", m.name());
        m.add(b.rfd(), TOKEN + 1, Interest::READ).unwrap();
        m.delete(a.rfd(), TOKEN).unwrap();
        b.write();
        let ev = wait(&m, LONG);
        assert_eq!(
            ev,
            [Event { token: TOKEN + 1, readable: true, writable: false }],
            "{}",
            m.name()
        );
    }

    pub(crate) fn delete_closed_fd_is_ok<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        let fd = high_dup(p.rfd());
        let raw = fd.as_raw_fd();
        m.add(raw, TOKEN, Interest::READ).unwrap();
        drop(fd);
        m.delete(raw, TOKEN).unwrap();
        assert!(m.is_empty());
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
    }

    /// A registration with no interest reports nothing, not even a hang-up (a nested wait sets it
    /// so for the handler whose callback runs: a report would end that wait at once, for a handler
    /// that cannot run, and the nested poll would spin); with its interest back it reports again.
    /// Added with no interest, modified twice to none, deleted and added again, it is a
    /// registration like any other.
    pub(crate) fn no_interest_reports_nothing_not_even_a_hang_up<M: FdMonitor>(m: M) {
        let Pipe { r, w } = Pipe::new();
        let fd = r.as_raw_fd();
        let short = Some(Duration::from_millis(20));
        m.add(fd, TOKEN, Interest::READ).unwrap();
        drop(w);
        assert_eq!(wait(&m, LONG).len(), 1, "the hang-up");
        for _ in 0..2 {
            m.modify(fd, TOKEN, Interest::NONE).unwrap();
            assert!(wait(&m, Some(Duration::ZERO)).is_empty());
            assert_eq!(wait(&m, short), [], "a hung-up fd with no interest was reported");
        }
        assert_eq!(m.len(), 1);
        m.modify(fd, TOKEN + 1, Interest::READ).unwrap();
        let ev = wait(&m, LONG);
        assert!(ev.len() == 1 && ev[0].token == TOKEN + 1 && ev[0].readable, "{ev:?}");
        m.modify(fd, TOKEN, Interest::NONE).unwrap();
        m.delete(fd, TOKEN).unwrap();
        assert_eq!(m.len(), 0);
        m.add(fd, TOKEN + 2, Interest::NONE).unwrap();
        assert_eq!(wait(&m, short), [], "added with no interest, a hung-up fd was reported");
        let e = m.add(fd, TOKEN, Interest::READ).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        m.modify(fd, TOKEN + 3, Interest::READ).unwrap();
        let ev = wait(&m, LONG);
        assert!(ev.len() == 1 && ev[0].token == TOKEN + 3 && ev[0].readable, "{ev:?}");
        m.delete(fd, TOKEN + 3).unwrap();
        assert_eq!(m.len(), 0);
    }

    pub(crate) fn hangup_reported_as_readable<M: FdMonitor>(m: M) {
        let Pipe { r, w } = Pipe::new();
        m.add(r.as_raw_fd(), TOKEN, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        drop(w);
        let ev = wait(&m, LONG);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].token == TOKEN && ev[0].readable, "{ev:?}");
    }

    pub(crate) fn modify_changes_interest_and_token<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        // A pipe's write end is always writable and never readable.
        m.add(p.wfd(), TOKEN, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        m.modify(p.wfd(), TOKEN + 7, Interest::BOTH).unwrap();
        assert_eq!(wait(&m, LONG), [Event { token: TOKEN + 7, readable: false, writable: true }]);
        m.modify(p.wfd(), TOKEN + 7, Interest::NONE).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        assert_eq!(m.len(), 1);
        let q = Pipe::new();
        let e = m.modify(q.rfd(), TOKEN, Interest::READ).unwrap_err();
        assert!(e.to_string().contains(&format!("fd {}", q.rfd())), "{e}");
    }

    pub(crate) fn many_registrations_report_only_ready<M: FdMonitor>(m: M) {
        let pipes: Vec<Pipe> = (0..super::EPOLL_THRESHOLD + 6).map(|_| Pipe::new()).collect();
        for (i, p) in pipes.iter().enumerate() {
            m.add(p.rfd(), i as u64, Interest::READ).unwrap();
        }
        assert_eq!(m.len(), pipes.len());
        pipes[3].write();
        pipes[super::EPOLL_THRESHOLD + 5].write();
        // Both writes happened before the wait started: one wait reports both.
        let ev = wait(&m, LONG);
        let mut tokens: Vec<u64> = ev.iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [3, super::EPOLL_THRESHOLD as u64 + 5]);
    }

    pub(crate) fn more_ready_than_one_wait_returns_come_in_next_waits<M: FdMonitor>(m: M) {
        // 130 descriptors of one readable pipe: more than epoll's 128-event buffer.
        let p = Pipe::new();
        p.write();
        let dups: Vec<OwnedFd> = (0..130).map(|_| p.r.try_clone().unwrap()).collect();
        for (i, d) in dups.iter().enumerate() {
            m.add(d.as_raw_fd(), i as u64, Interest::READ).unwrap();
        }
        let mut seen = vec![false; dups.len()];
        for _ in 0..dups.len() {
            let ev = wait(&m, LONG);
            // Everything is readable: a wait that ends with nothing ended at its timeout.
            assert!(
                !ev.is_empty(),
                "{}: a wait reported nothing while 130 fds were ready",
                m.name()
            );
            for e in ev {
                seen[e.token as usize] = true;
            }
            if seen.iter().all(|&s| s) {
                return;
            }
        }
        let missing: Vec<usize> = (0..seen.len()).filter(|&i| !seen[i]).collect();
        panic!("{}: never reported tokens {missing:?}", m.name());
    }

    /// A monitor's `{:?}` (in a context's or a failed test's output) says what it watches: it
    /// changes when a registration comes and goes.
    pub(crate) fn debug_output_shows_the_registrations<M: FdMonitor>(m: M) {
        let p = Pipe::new();
        let empty = format!("{m:?}");
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        let one = format!("{m:?}");
        assert!(!empty.is_empty(), "{}: empty Debug output", m.name());
        assert_ne!(empty, one, "{}: a registration does not show in {one}", m.name());
        m.delete(p.rfd(), TOKEN).unwrap();
        assert_ne!(format!("{m:?}"), one, "{}: a deletion does not show", m.name());
    }

    /// SIGUSR1 deliveries seen by [`on_sigusr1`].
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn on_sigusr1(_: libc::c_int) {
        // ORDERING: Relaxed. A counter read by the test after joining; it orders nothing.
        SIGNALS.fetch_add(1, Ordering::Relaxed);
    }

    /// A no-op SIGUSR1 handler installed WITHOUT SA_RESTART, so a blocking syscall the signal hits
    /// fails with EINTR (ppoll and epoll_wait do so even with SA_RESTART).
    fn install_sigusr1_handler() {
        // SAFETY:
        // - sigaction is plain data; all-zero is a valid value (empty flags, handler replaced below).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = 0;
        // SAFETY:
        // - `sa.sa_mask` is a valid, writable sigset_t.
        // - `sa` is a fully initialised sigaction and outlives the call; the old action is not wanted.
        // - the handler only does a relaxed atomic add: async-signal-safe.
        unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut())).unwrap();
        }
    }

    pub(crate) fn signal_during_blocking_wait_keeps_waiting<M: FdMonitor + 'static>(m: M) {
        install_sigusr1_handler();
        let m = Arc::new(m);
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        let waiter = {
            let m = m.clone();
            thread::spawn(move || {
                let mut out = Vec::new();
                let r = m.wait(None, &mut out);
                (r, out)
            })
        };
        // ORDERING: Relaxed, as in on_sigusr1.
        let before = SIGNALS.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50)); // let it block in the kernel
        for _ in 0..3 {
            // SAFETY:
            // - the thread is alive (not joined), so its pthread_t is valid.
            let r = unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
            assert_eq!(r, 0);
            std::thread::sleep(Duration::from_millis(30));
            assert!(!waiter.is_finished(), "{}: wait returned on a signal", m.name());
        }
        // ORDERING: Relaxed, as in on_sigusr1.
        assert!(SIGNALS.load(Ordering::Relaxed) >= before + 3, "signals not delivered");
        p.write();
        let (r, out) = waiter.join().unwrap();
        r.unwrap();
        assert_eq!(out, [Event { token: TOKEN, readable: true, writable: false }]);
    }

    pub(crate) fn signal_during_timed_wait_is_never_early<M: FdMonitor + 'static>(m: M) {
        install_sigusr1_handler();
        let p = Pipe::new();
        m.add(p.rfd(), TOKEN, Interest::READ).unwrap();
        const TIMEOUT: Duration = Duration::from_millis(150);
        let waiter = thread::spawn(move || {
            let t = Instant::now();
            let ev = wait(&m, Some(TIMEOUT));
            (ev, t.elapsed())
        });
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            // SAFETY:
            // - the thread is not joined yet, so its pthread_t is valid (even if it has returned).
            let r = unsafe { libc::pthread_kill(waiter.as_pthread_t(), libc::SIGUSR1) };
            assert_eq!(r, 0);
        }
        let (ev, waited) = waiter.join().unwrap();
        assert!(ev.is_empty(), "{ev:?}");
        assert!(waited >= TIMEOUT, "woke after {waited:?} of {TIMEOUT:?}");
        drop(p);
    }
}
