//! [`EventFd`]: the production [`EventNotifier`], an eventfd with a pipe fallback.
//!
//! # Upstream
//!
//! QEMU `util/event_notifier-posix.c`: `event_notifier_init` (eventfd, else a pipe),
//! `event_notifier_set` (write 1; EAGAIN means already set), `event_notifier_test_and_clear` (read
//! until a short read or EAGAIN).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_r, fd_error};
use crate::kernel::EventNotifier;

/// A level-triggered, pollable flag: readable from [`set`](EventFd::set) until
/// [`test_and_clear`](EventFd::test_and_clear). The methods are inherent (no trait to import); it
/// also implements [`EventNotifier`] for the kernel boundary, and `AsRawFd` / `AsFd` for the fd.
///
/// Backed by `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`, or, where eventfd does not exist, by a
/// non-blocking pipe (the read end is its fd, `set` writes the other). Both fds are closed on drop.
///
/// # Examples
///
/// ```
/// use aioctx::sys::EventFd;
///
/// let e = EventFd::new()?;
/// e.set()?;
/// e.set()?; // already set: still fine
/// assert!(e.test_and_clear()?);
/// assert!(!e.test_and_clear()?);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "EventNotifier")]
#[derive(Debug)]
pub struct EventFd {
    /// The eventfd, or the pipe's read end.
    read: OwnedFd,
    /// The pipe's write end; `None` for an eventfd (written through `read`).
    write: Option<OwnedFd>,
}

impl EventFd {
    /// A cleared notifier: an eventfd, or a pipe if the kernel has no eventfd (ENOSYS, EINVAL).
    ///
    /// # Errors
    ///
    /// The error of eventfd(2) or pipe2(2), e.g. EMFILE.
    #[doc(alias = "event_notifier_init")]
    pub fn new() -> io::Result<Self> {
        // SAFETY:
        // - eventfd takes no pointers; the flags are valid for it.
        match cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }) {
            Ok(fd) => Ok(EventFd {
                // SAFETY:
                // - `fd` was just returned by eventfd, is open, and is owned by nothing else.
                read: unsafe { OwnedFd::from_raw_fd(fd) },
                write: None,
            }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
                Self::new_pipe()
            }
            Err(e) => Err(e),
        }
    }

    /// A cleared notifier on a pipe, the fallback [`new`](Self::new) uses when eventfd is missing
    /// (public so tests can exercise it).
    ///
    /// # Errors
    ///
    /// The error of pipe2(2), e.g. EMFILE.
    pub fn new_pipe() -> io::Result<Self> {
        let mut fds = [-1; 2];
        // SAFETY:
        // - `fds` is a writable array of two c_ints, as pipe2 requires.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY:
        // - pipe2 succeeded, so both fds are open, and nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(EventFd { read, write: Some(write) })
    }

    /// True when backed by a pipe rather than an eventfd.
    pub fn is_pipe(&self) -> bool {
        self.write.is_some()
    }

    /// The fd to wait on (readable while set): the eventfd, or the pipe's read end. The same as
    /// `AsRawFd::as_raw_fd`.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl EventFd {
    /// Write 1 (8 bytes to the eventfd, 1 byte to the pipe). A full counter or pipe (EAGAIN) means the
    /// notifier is already set: `Ok`.
    #[doc(alias = "event_notifier_set")]
    pub fn set(&self) -> io::Result<()> {
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let one = 1u64.to_ne_bytes();
        // An eventfd takes exactly 8 bytes; one is enough for the pipe.
        let len = if self.is_pipe() { 1 } else { one.len() };
        // SAFETY:
        // - `one` is readable for `len` <= 8 bytes and outlives the call.
        // - `fd` is owned by `self`, so it is open for the duration of the call.
        match cvt_r(|| unsafe { libc::write(fd, one.as_ptr().cast(), len) }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(fd_error(e, "write(event notifier)", fd)),
        }
    }

    /// Read until nothing is left: the eventfd's counter goes to zero in one read; the pipe is drained
    /// 512 bytes at a time until a short read or EAGAIN. Returns whether anything was read.
    #[doc(alias = "event_notifier_test_and_clear")]
    pub fn test_and_clear(&self) -> io::Result<bool> {
        let fd = self.read.as_raw_fd();
        let mut buf = [0u8; 512];
        let mut was_set = false;
        loop {
            // SAFETY:
            // - `buf` is writable for `buf.len()` bytes and outlives the call.
            // - `fd` is owned by `self`, so it is open for the duration of the call.
            match cvt_r(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }) {
                Ok(n) => {
                    was_set |= n > 0;
                    // A short read emptied it (an eventfd read is always 8 bytes, a short one).
                    if (n as usize) < buf.len() {
                        return Ok(was_set);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(was_set),
                Err(e) => return Err(fd_error(e, "read(event notifier)", fd)),
            }
        }
    }
}

/// The kernel boundary's view of it; the same methods are inherent (no import needed).
impl EventNotifier for EventFd {
    fn set(&self) -> io::Result<()> {
        EventFd::set(self)
    }

    fn test_and_clear(&self) -> io::Result<bool> {
        EventFd::test_and_clear(self)
    }

    fn fd(&self) -> RawFd {
        EventFd::fd(self)
    }
}

impl AsRawFd for EventFd {
    /// The fd to poll: the eventfd, or the pipe's read end.
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl AsFd for EventFd {
    /// The fd to poll: the eventfd, or the pipe's read end.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `fd` is readable right now.
    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY:
        // - `p` is one valid, writable pollfd, matching nfds = 1.
        cvt(unsafe { libc::poll(&mut p, 1, 0) }).unwrap();
        p.revents & libc::POLLIN != 0
    }

    fn set_and_clear(e: &EventFd) {
        assert!(!e.test_and_clear().unwrap());
        assert!(!readable(e.fd()));
        e.set().unwrap();
        assert!(readable(e.fd()));
        assert!(e.test_and_clear().unwrap());
        assert!(!readable(e.fd()));
        assert!(!e.test_and_clear().unwrap());
        // Double set: still one "set", cleared by one test_and_clear.
        e.set().unwrap();
        e.set().unwrap();
        assert!(e.test_and_clear().unwrap());
        assert!(!e.test_and_clear().unwrap());
        assert!(!readable(e.fd()));
    }

    #[test]
    fn eventfd_set_test_and_clear() {
        let e = EventFd::new().unwrap();
        assert!(!e.is_pipe());
        set_and_clear(&e);
    }

    #[test]
    fn pipe_set_test_and_clear() {
        let e = EventFd::new_pipe().unwrap();
        assert!(e.is_pipe());
        assert_ne!(e.as_raw_fd(), e.write.as_ref().unwrap().as_raw_fd());
        set_and_clear(&e);
    }

    #[test]
    fn eventfd_set_when_saturated_is_ok() {
        let e = EventFd::new().unwrap();
        let max = (u64::MAX - 1).to_ne_bytes();
        // SAFETY:
        // - `max` is readable for 8 bytes; the fd is owned by `e`, which outlives the call.
        let n = unsafe { libc::write(e.fd(), max.as_ptr().cast(), max.len()) };
        assert_eq!(n, 8);
        // The counter is at its maximum: write(1) fails with EAGAIN, which means "already set".
        e.set().unwrap();
        assert!(e.test_and_clear().unwrap());
        assert!(!e.test_and_clear().unwrap());
    }

    #[test]
    fn pipe_set_when_full_is_ok() {
        let e = EventFd::new_pipe().unwrap();
        let w = e.write.as_ref().unwrap().as_raw_fd();
        let chunk = [0u8; 4096];
        let mut total = 0;
        loop {
            // SAFETY:
            // - `chunk` is readable for its length; `w` is owned by `e`, which outlives the call.
            let n = unsafe { libc::write(w, chunk.as_ptr().cast(), chunk.len()) };
            if n < 0 {
                assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
                break;
            }
            total += n as usize;
        }
        assert!(total >= 4096, "pipe took only {total} bytes");
        // Top up whatever space a 4096-byte write could not use (those are atomic: all or EAGAIN).
        // SAFETY:
        // - `chunk` is readable for 1 byte; `w` is owned by `e`, which outlives the calls.
        while unsafe { libc::write(w, chunk.as_ptr().cast(), 1) } == 1 {}
        e.set().unwrap();
        assert!(e.test_and_clear().unwrap());
        assert!(!readable(e.fd()));
        assert!(!e.test_and_clear().unwrap());
    }
}
