//! [`Ppoll`]: the ppoll(2) fd monitor, QEMU's default below [`EPOLL_THRESHOLD`](super::EPOLL_THRESHOLD)
//! registrations.
//!
//! Registrations live in a `Registry` under a facade mutex, with a generation that every change bumps.
//! The pollfd array is owned by `wait` (home thread only) and rebuilt only when the generation moved,
//! so a loop iteration with an unchanged handler set makes no allocation and copies nothing.
//!
//! A registration that changes while a `wait` blocks takes effect at the next `wait`: the caller ends
//! every change with a notify (docs/protocol.md §5), whose eventfd is in the array and ends the
//! blocking wait.
//!
//! # Upstream
//!
//! QEMU `util/fdmon-poll.c`: `fdmon_poll_wait` (rebuilds `pollfds` from the handler list per call;
//! here only when the generation changed), `fdmon_poll_update` (nothing to do: here, a bump).

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{interest_bits, revents_to_event};
use crate::kernel::{Event, FdMonitor, Interest};
use crate::sync::Mutex;
use crate::sys::{cvt, fd_is_open, with_context};

/// One registration.
#[derive(Debug, Clone, Copy)]
struct Registration {
    fd: RawFd,
    token: u64,
    interest: Interest,
}

/// The registrations, changed by add / modify / delete from any thread.
#[derive(Debug, Default)]
struct Registry {
    regs: Vec<Registration>,
    /// Bumped by every change; [`PollSet::generation`] says which one the pollfd array reflects.
    generation: u64,
}

/// What one ppoll call takes: touched by `wait` only (so its mutex is never contended).
#[derive(Default)]
struct PollSet {
    /// The [`Registry::generation`] `fds` was built from (both start at 0, empty).
    generation: u64,
    fds: Vec<libc::pollfd>,
    /// `tokens[i]` is the token of `fds[i]`.
    tokens: Vec<u64>,
}

impl PollSet {
    fn rebuild(&mut self, reg: &Registry) {
        self.fds.clear();
        self.tokens.clear();
        for r in &reg.regs {
            let events = interest_bits(r.interest) as libc::c_short;
            // No interest (a nested wait leaves out a handler whose callback runs): a negative fd,
            // which ppoll ignores (with events 0 it would still report a hang-up or error).
            let fd = if r.interest.is_empty() { -1 } else { r.fd };
            self.fds.push(libc::pollfd { fd, events, revents: 0 });
            self.tokens.push(r.token);
        }
        self.generation = reg.generation;
    }
}

/// The ppoll(2) [`FdMonitor`]: a pollfd array rebuilt when the registrations change.
///
/// A registered fd that gets closed is reported (POLLNVAL, decoded as readable and writable) to its
/// handler on every wait until it is deleted, rather than skipped in silence.
///
/// # Examples
///
/// ```
/// use aioctx::fdmon::Ppoll;
/// use aioctx::kernel::{EventNotifier, FdMonitor, Interest};
/// use aioctx::sys::EventFd;
/// use std::time::Duration;
///
/// let (m, e) = (Ppoll::new(), EventFd::new()?);
/// m.add(e.fd(), 1, Interest::READ)?;
/// e.set()?;
/// let mut out = Vec::new();
/// m.wait(Some(Duration::from_secs(1)), &mut out)?;
/// assert_eq!(out[0].token, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "fdmon_poll_ops")]
#[derive(Default)]
pub struct Ppoll {
    registry: Mutex<Registry>,
    set: Mutex<PollSet>,
}

impl Ppoll {
    /// A monitor with no registrations.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for Ppoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.registry.lock();
        f.debug_struct("Ppoll")
            .field("regs", &reg.regs)
            .field("generation", &reg.generation)
            .finish()
    }
}

/// One wait over `fds`: ppoll(2), or under Miri, which has no ppoll, poll(2) (`poll_ms`).
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<libc::c_int> {
    if cfg!(miri) {
        poll_ms(fds, timeout)
    } else {
        ppoll(fds, timeout)
    }
}

/// One ppoll(2) call over `fds`. `None` blocks; a timespec carries the full nanosecond timeout.
fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<libc::c_int> {
    let ts = timeout.map(|d| libc::timespec {
        // A tv_sec past time_t is centuries: saturate (the kernel saturates the deadline too).
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY:
    // - `fds` is valid and writable for `fds.len()` pollfds (an empty slice is never dereferenced).
    // - `ts_ptr` is null or points to `ts`, which outlives the call.
    // - a null sigmask leaves the signal mask alone.
    cvt(unsafe {
        libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null())
    })
}

/// One poll(2) call over `fds`, its millisecond timeout rounded up so a deadline is never early:
/// Miri's wait. Compiled in every build, so the unit tests run it on the real kernel too.
fn poll_ms(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<libc::c_int> {
    let ms = super::timeout_ms_ceil(timeout);
    // SAFETY:
    // - `fds` is valid and writable for `fds.len()` pollfds (an empty slice is never dereferenced).
    cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) })
}

impl FdMonitor for Ppoll {
    fn name(&self) -> &'static str {
        "ppoll"
    }

    /// # Errors
    ///
    /// `fd` not open (EBADF, kind InvalidInput) or already registered (AlreadyExists); both messages
    /// name the fd.
    fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        fd_is_open(fd)?;
        let mut reg = self.registry.lock();
        if reg.regs.iter().any(|r| r.fd == fd) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("ppoll: fd {fd} is already registered"),
            ));
        }
        reg.regs.push(Registration { fd, token, interest });
        reg.generation += 1;
        Ok(())
    }

    /// # Errors
    ///
    /// `fd` not registered (NotFound, naming the fd).
    fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut reg = self.registry.lock();
        let Some(r) = reg.regs.iter_mut().find(|r| r.fd == fd) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("ppoll: fd {fd} is not registered"),
            ));
        };
        *r = Registration { fd, token, interest };
        reg.generation += 1;
        Ok(())
    }

    /// Never fails: the fd is not asked about (closed or not), and one that is not registered is
    /// already not watched (as epoll's ENOENT).
    fn delete(&self, fd: RawFd, _token: u64) -> io::Result<()> {
        let mut reg = self.registry.lock();
        if let Some(i) = reg.regs.iter().position(|r| r.fd == fd) {
            reg.regs.swap_remove(i);
            reg.generation += 1;
        }
        Ok(())
    }

    /// Home thread only. EINTR is retried with the time left until the deadline.
    ///
    /// # Errors
    ///
    /// ppoll(2) failing other than with EINTR (ENOMEM), the message saying so.
    fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let mut set = self.set.lock();
        {
            let reg = self.registry.lock();
            if set.generation != reg.generation {
                set.rebuild(&reg);
            }
        }
        // None when the deadline is past what Instant holds: then no retry ever runs out of time.
        let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
        let mut remaining = timeout;
        loop {
            match poll(&mut set.fds, remaining) {
                Ok(0) => return Ok(()),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if let Some(deadline) = deadline {
                        // Zero when it passed: one last check, then return.
                        remaining = Some(deadline.saturating_duration_since(Instant::now()));
                    }
                }
                Err(e) => {
                    let what = format!("ppoll({} fds)", set.fds.len());
                    return Err(with_context(e, io::ErrorKind::Other, what));
                }
            }
        }
        for (p, &token) in set.fds.iter().zip(&set.tokens) {
            if p.revents != 0 {
                let ev = revents_to_event(token, p.revents as u16 as u32);
                if ev.readable || ev.writable {
                    out.push(ev);
                }
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.registry.lock().regs.len()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;
    use crate::fdmon::suite::{high_dup, Pipe};

    fd_monitor_suite!(Ppoll::new());

    #[test]
    fn closed_registered_fd_reported_as_both() {
        let m = Ppoll::new();
        let p = Pipe::new();
        let fd = high_dup(p.rfd());
        let raw = fd.as_raw_fd();
        m.add(raw, 5, Interest::READ).unwrap();
        drop(fd);
        let mut out = Vec::new();
        m.wait(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert_eq!(out, [Event { token: 5, readable: true, writable: true }]);
        m.delete(raw, 5).unwrap();
        out.clear();
        m.wait(Some(Duration::ZERO), &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// Miri's wait (`poll_ms`), on the real kernel: nothing ready, it waits its timeout rounded up
    /// to whole milliseconds, never less; a readable fd is reported with its revents.
    #[test]
    fn poll_ms_waits_its_timeout_and_reports_readiness() {
        let p = Pipe::new();
        let mut fds = [libc::pollfd { fd: p.rfd(), events: libc::POLLIN, revents: 0 }];
        let t0 = Instant::now();
        assert_eq!(poll_ms(&mut fds, Some(Duration::from_micros(20_001))).unwrap(), 0);
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(21), "returned after {waited:?}");
        p.write();
        assert_eq!(poll_ms(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert_eq!(fds[0].revents, libc::POLLIN);
    }

    #[test]
    fn unchanged_registrations_keep_the_pollfd_array() {
        let m = Ppoll::new();
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        let mut out = Vec::new();
        m.wait(Some(Duration::ZERO), &mut out).unwrap();
        let ptr = m.set.lock().fds.as_ptr();
        m.wait(Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(m.set.lock().fds.as_ptr(), ptr);
        assert_eq!(m.set.lock().generation, 1);
        m.modify(p.rfd(), 2, Interest::BOTH).unwrap();
        m.wait(Some(Duration::ZERO), &mut out).unwrap();
        let set = m.set.lock();
        assert_eq!((set.generation, set.tokens.as_slice()), (2, &[2][..]));
    }
}
