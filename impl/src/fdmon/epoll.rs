//! [`Epoll`]: the epoll(7) fd monitor, QEMU's backend from [`EPOLL_THRESHOLD`](super::EPOLL_THRESHOLD)
//! registrations on.
//!
//! Level-triggered; the token is the event's `data.u64`. The kernel holds the registrations, so add,
//! modify and delete are one epoll_ctl each, and a registration made while `wait` blocks is seen by that
//! very wait. A registration with no interest is kept out of the kernel's set (*parked*): epoll
//! reports a hang-up or an error of every fd in it whatever the events asked, and a registration
//! with no interest reports nothing (a nested wait parks the fd of a handler whose callback runs;
//! watched, a hung-up fd would end every such wait at once).
//!
//! epoll registers open file *descriptions*: closing a registered fd removes it only when no other
//! descriptor (a dup, a child's copy) refers to the same description. Delete before closing.
//!
//! # Upstream
//!
//! QEMU `util/fdmon-epoll.c`: `fdmon_epoll_update` (epoll_ctl ADD / MOD / DEL), `fdmon_epoll_wait`
//! (epoll_wait into a 128-event array), `fdmon_epoll_try_enable`.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{interest_bits, revents_to_event, timeout_ms_ceil};
use crate::kernel::{Event, FdMonitor, Interest};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::Mutex;
use crate::sys::{cvt, fd_error, os_error, with_context};

/// Events one epoll_wait returns at most. More ready fds come in the next wait (level-triggered).
const EVENT_BUFFER: usize = 128;

/// The epoll(7) [`FdMonitor`].
///
/// # Examples
///
/// ```
/// use aioctx::fdmon::Epoll;
/// use aioctx::kernel::{EventNotifier, FdMonitor, Interest};
/// use aioctx::sys::EventFd;
/// use std::time::Duration;
///
/// let (m, e) = (Epoll::new()?, EventFd::new()?);
/// m.add(e.fd(), 1, Interest::READ)?;
/// e.set()?;
/// let mut out = Vec::new();
/// m.wait(Some(Duration::from_secs(1)), &mut out)?;
/// assert_eq!(out[0].token, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "fdmon_epoll_ops")]
pub struct Epoll {
    epfd: OwnedFd,
    /// The wait's event buffer, reused (touched by `wait` only, so never contended).
    events: Mutex<Vec<libc::epoll_event>>,
    /// Registrations: add increments, delete decrements (saturating).
    count: AtomicUsize,
    /// The registered fds with no interest: not in the kernel's set.
    parked: Mutex<HashSet<RawFd>>,
    /// Registrations are edge-triggered (EPOLLET): under Miri only, see `ctl`.
    edge: bool,
}

/// The longest single epoll_wait: `c_int::MAX` ms (24.8 days), the most its timeout can say; a
/// longer wait is several. The library's own unit tests make it 20 ms, so that the repeat runs.
const MAX_WAIT_MS: libc::c_int = if cfg!(test) { 20 } else { libc::c_int::MAX };

/// The timeout of one epoll_wait for a wait of `timeout`.
#[allow(clippy::unnecessary_min_or_max)] // a no-op outside the unit tests, by design (MAX_WAIT_MS)
fn wait_ms(timeout: Option<Duration>) -> libc::c_int {
    timeout_ms_ceil(timeout).min(MAX_WAIT_MS)
}

impl Epoll {
    /// An empty epoll set (`epoll_create1(EPOLL_CLOEXEC)`).
    ///
    /// # Errors
    ///
    /// epoll_create1 failing (EMFILE, ENOMEM), the message saying so.
    pub fn new() -> io::Result<Self> {
        Self::with_trigger(cfg!(miri))
    }

    fn with_trigger(edge: bool) -> io::Result<Self> {
        // SAFETY:
        // - epoll_create1 takes no pointers; EPOLL_CLOEXEC is a valid flag.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
            .map_err(|e| with_context(e, io::ErrorKind::Other, "epoll_create1".to_owned()))?;
        Ok(Epoll {
            // SAFETY:
            // - `fd` was just returned by epoll_create1, is open, and is owned by nothing else.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Mutex::new(vec![libc::epoll_event { events: 0, u64: 0 }; EVENT_BUFFER]),
            count: AtomicUsize::new(0),
            parked: Mutex::new(HashSet::new()),
            edge,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut events = interest_bits(interest);
        // Miri emulates edge-triggered epoll only ("epoll_ctl: epollet flag must be included"), so
        // under Miri registrations are edge-triggered. For what the Miri tests register (the
        // context's own eventfd, drained until empty whenever a wait reports it) that is
        // equivalent: each write after a drain is a new edge
        // (`edge_triggered_sees_each_write_after_a_drain` checks it on the real kernel). Production
        // stays level-triggered.
        if self.edge {
            events |= libc::EPOLLET as u32;
        }
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY:
        // - `ev` is a valid epoll_event that outlives the call (DEL ignores it, but kernels before
        //   2.6.9 require it non-null).
        // - `self.epfd` is an open epoll fd owned by `self`; `fd` is only a number to the kernel.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }
}

impl fmt::Debug for Epoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoll").field("epfd", &self.epfd).field("len", &self.len()).finish()
    }
}

impl FdMonitor for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }

    /// # Errors
    ///
    /// All name the fd: not open (EBADF, kind InvalidInput), already registered (EEXIST, kind
    /// AlreadyExists), a regular file or directory (EPERM, kind Unsupported: epoll cannot watch those,
    /// use ppoll).
    fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        const OP: &str = "epoll_ctl(EPOLL_CTL_ADD)";
        let mut parked = self.parked.lock();
        if parked.contains(&fd) {
            return Err(fd_error(io::Error::from_raw_os_error(libc::EEXIST), OP, fd));
        }
        // Added even with no interest, then parked: the kernel checks the fd as for any other.
        let added = self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest).and_then(|()| {
            if interest.is_empty() {
                self.ctl(libc::EPOLL_CTL_DEL, fd, token, interest)?;
                parked.insert(fd);
            }
            Ok(())
        });
        match added {
            Ok(()) => {
                // ORDERING: Relaxed. A statistic: add and delete are serialised by the context's
                // handler lock, and readers of len() synchronise through that lock.
                self.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(with_context(
                e,
                io::ErrorKind::Unsupported,
                format!(
                    "{OP} on fd {fd}: epoll cannot watch a regular file or directory (always \
                     ready); use the ppoll backend"
                ),
            )),
            Err(e) => Err(fd_error(e, OP, fd)),
        }
    }

    /// # Errors
    ///
    /// Not registered (ENOENT, kind NotFound) or not open (EBADF, kind InvalidInput), naming the fd.
    /// To no interest, the fd is parked (EPOLL_CTL_DEL); from it, added back (EPOLL_CTL_ADD).
    fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut parked = self.parked.lock();
        let (op, name) = match (parked.contains(&fd), interest.is_empty()) {
            (true, true) => return Ok(()),
            (true, false) => (libc::EPOLL_CTL_ADD, "epoll_ctl(EPOLL_CTL_ADD)"),
            (false, true) => (libc::EPOLL_CTL_DEL, "epoll_ctl(EPOLL_CTL_DEL)"),
            (false, false) => (libc::EPOLL_CTL_MOD, "epoll_ctl(EPOLL_CTL_MOD)"),
        };
        self.ctl(op, fd, token, interest).map_err(|e| fd_error(e, name, fd))?;
        if interest.is_empty() {
            parked.insert(fd);
        } else {
            parked.remove(&fd);
        }
        Ok(())
    }

    /// EBADF and ENOENT are success: a closed fd has left the set already (or its number now names a
    /// file that was never in it).
    ///
    /// # Errors
    ///
    /// Other epoll_ctl failures (ENOMEM), naming the fd.
    fn delete(&self, fd: RawFd, token: u64) -> io::Result<()> {
        // A parked fd is not in the kernel's set.
        if !self.parked.lock().remove(&fd) {
            match self.ctl(libc::EPOLL_CTL_DEL, fd, token, Interest::NONE) {
                Ok(()) => {}
                Err(e) if matches!(os_error(&e), Some(libc::EBADF | libc::ENOENT)) => {}
                Err(e) => return Err(fd_error(e, "epoll_ctl(EPOLL_CTL_DEL)", fd)),
            }
        }
        // The caller deletes what it registered, so the count follows it even when the kernel forgot
        // the fd first. Saturating: a stray delete must not wrap len() around.
        // ORDERING: Relaxed, as in add.
        let _ = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        Ok(())
    }

    /// Home thread only. The timeout is rounded up to whole milliseconds, so it never ends early;
    /// EINTR (and a wake-up before the deadline) waits again for the time left.
    ///
    /// # Errors
    ///
    /// epoll_wait failing other than with EINTR, the message naming the epoll fd.
    fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let mut events = self.events.lock();
        let epfd = self.epfd.as_raw_fd();
        // None: forever, or past what Instant holds (then capped waits repeat, as forever does).
        let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
        let mut ms = wait_ms(timeout);
        let n = loop {
            // SAFETY:
            // - `events` is valid and writable for `events.len()` (= 128, fits c_int) epoll_events.
            // - `epfd` is an open epoll fd owned by `self`.
            let r = cvt(unsafe {
                libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as libc::c_int, ms)
            });
            match r {
                Ok(n) if n > 0 => break n as usize,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let what = format!("epoll_wait(epoll fd {epfd})");
                    return Err(with_context(e, io::ErrorKind::Other, what));
                }
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                ms = wait_ms(Some(left));
            }
        };
        out.extend(events[..n].iter().map(|ev| {
            // Copy the fields out: epoll_event is packed on x86_64.
            let (bits, token) = (ev.events, ev.u64);
            revents_to_event(token, bits)
        }));
        Ok(())
    }

    /// The epoll fd: readable whenever a registration is ready.
    fn pollable_fd(&self) -> Option<RawFd> {
        Some(self.epfd.as_raw_fd())
    }

    fn len(&self) -> usize {
        // ORDERING: Relaxed, as in add.
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::fdmon::suite::Pipe;

    fd_monitor_suite!(Epoll::new().unwrap());

    #[test]
    fn regular_file_is_a_clear_error() {
        let m = Epoll::new().unwrap();
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let fd = f.as_raw_fd();
        let e = m.add(fd, 1, Interest::READ).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("fd {fd}")) && msg.contains("regular file"), "{msg}");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(os_error(&e), Some(libc::EPERM));
        assert_eq!(m.len(), 0);
        // Deleting it is an error too: only a descriptor the kernel already forgot (closed: EBADF,
        // or its number reused: ENOENT) is deleted silently.
        let e = m.delete(fd, 1).unwrap_err();
        assert!(e.to_string().contains(&format!("fd {fd}")), "{e}");
        assert_eq!(os_error(&e), Some(libc::EPERM));
    }

    /// A wait longer than one epoll_wait can make (`MAX_WAIT_MS`, 20 ms in this build) is several,
    /// and returns no earlier than asked.
    #[test]
    fn a_wait_past_the_longest_epoll_wait_is_not_cut_short() {
        let m = Epoll::new().unwrap();
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        m.wait(Some(Duration::from_millis(3 * MAX_WAIT_MS as u64)), &mut out).unwrap();
        assert!(out.is_empty());
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(3 * MAX_WAIT_MS as u64),
            "returned after {waited:?}"
        );
    }

    /// Miri's registrations (edge-triggered), on the real kernel: an eventfd written is reported;
    /// left undrained it is not reported again (the edge is spent), and after a drain each write is
    /// a new edge, which is all the context's notifier needs.
    #[test]
    fn edge_triggered_sees_each_write_after_a_drain() {
        let m = Epoll::with_trigger(true).unwrap();
        let e = crate::sys::EventFd::new().unwrap();
        m.add(e.as_raw_fd(), 7, Interest::READ).unwrap();
        let mut out = Vec::new();
        let ready = Event { token: 7, readable: true, writable: false };
        for _ in 0..2 {
            e.set().unwrap();
            m.wait(Some(Duration::from_secs(5)), &mut out).unwrap();
            assert_eq!(out, [ready]);
            out.clear();
            m.wait(Some(Duration::ZERO), &mut out).unwrap();
            assert!(out.is_empty(), "an edge-triggered registration reported the same write twice");
            assert!(e.test_and_clear().unwrap());
        }
    }

    #[test]
    fn pollable_fd_readable_when_registration_ready() {
        let m = Epoll::new().unwrap();
        let epfd = m.pollable_fd().unwrap();
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        let readable = || {
            let mut pfd = libc::pollfd { fd: epfd, events: libc::POLLIN, revents: 0 };
            // SAFETY:
            // - `pfd` is one valid, writable pollfd, matching nfds = 1.
            cvt(unsafe { libc::poll(&mut pfd, 1, 0) }).unwrap();
            pfd.revents & libc::POLLIN != 0
        };
        assert!(!readable());
        p.write();
        assert!(readable());
    }
}
