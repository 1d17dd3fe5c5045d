//! The syscall layer (std builds only): the one wrapper every syscall of the crate goes through, error
//! context that names the fd and the operation, and the eventfd notifier.
//!
//! # Errors
//!
//! A failed syscall becomes an [`io::Error`] built from `errno` by `cvt`. Where an fd is involved the
//! error is wrapped by `fd_error`, whose message names the operation and the fd
//! (`"epoll_ctl(EPOLL_CTL_ADD) on fd 7: Bad file descriptor (os error 9)"`). The wrapped error stays
//! reachable: as the [`std::error::Error::source`] of the returned error, and through [`os_error`].

use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

pub mod eventfd;

pub use eventfd::EventFd;

/// Return types of syscalls that signal failure with -1 and `errno`.
pub(crate) trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty),*) => {$(
        impl IsMinusOne for $t {
            fn is_minus_one(self) -> bool {
                self == -1
            }
        }
    )*};
}
impl_is_minus_one!(i32, isize);

/// Turn a syscall's return value into a result: -1 is `errno` as an [`io::Error`].
pub(crate) fn cvt<T: IsMinusOne>(r: T) -> io::Result<T> {
    if r.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`cvt`] around `f`, calling `f` again while it fails with EINTR. For syscalls that have no timeout
/// to recompute (read, write); the blocking waits retry themselves with the remaining time. Never for
/// close(2): on Linux the fd is gone even when close reports EINTR.
pub(crate) fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// An OS error with what the crate was doing when it happened.
#[derive(Debug)]
struct SysError {
    what: String,
    source: io::Error,
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl Error for SysError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// Wrap `e` with a description of what failed, under `kind`. The message reads `"{what}: {e}"`; `e`
/// stays the error's source, so [`os_error`] still finds its errno.
pub(crate) fn with_context(e: io::Error, kind: io::ErrorKind, what: String) -> io::Error {
    io::Error::new(kind, SysError { what, source: e })
}

/// Wrap `e`, the failure of `op` on `fd`: the message names both. EBADF (the fd is not open) becomes
/// [`io::ErrorKind::InvalidInput`], the kind the model kernel uses for the same mistake; other errors
/// keep their kind.
pub(crate) fn fd_error(e: io::Error, op: &str, fd: RawFd) -> io::Error {
    let kind =
        if e.raw_os_error() == Some(libc::EBADF) { io::ErrorKind::InvalidInput } else { e.kind() };
    with_context(e, kind, format!("{op} on fd {fd}"))
}

/// The errno behind `e`: its own, or that of the OS error it wraps (errors of this crate name the fd
/// and the operation, and keep the original error as their source).
pub fn os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        let inner = e.get_ref()?.downcast_ref::<SysError>()?;
        inner.source.raw_os_error()
    })
}

/// Check that `fd` is an open file descriptor (`fcntl(F_GETFD)`).
///
/// # Errors
///
/// EBADF becomes an [`io::ErrorKind::InvalidInput`] error whose message names the fd; [`os_error`]
/// returns `EBADF` for it.
pub fn fd_is_open(fd: RawFd) -> io::Result<()> {
    // SAFETY:
    // - F_GETFD takes no third argument and touches no memory; any fd value is allowed (an invalid one
    //   fails with EBADF).
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    cvt(r).map(drop).map_err(|e| fd_error(e, "fcntl(F_GETFD)", fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_is_open_rejects_closed_fd_naming_it() {
        // A number far above what this process opens, so no other test thread can own it.
        let e = fd_is_open(987).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("fd 987"), "{e}");
        assert_eq!(os_error(&e), Some(libc::EBADF));
        let source =
            e.get_ref().and_then(|s| s.source()).and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.and_then(io::Error::raw_os_error), Some(libc::EBADF));
    }

    #[test]
    fn fd_is_open_accepts_pipe_ends() {
        let mut fds = [0; 2];
        // SAFETY:
        // - `fds` is a valid, writable array of two c_ints, as pipe(2) requires.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) }).unwrap();
        fd_is_open(fds[0]).unwrap();
        fd_is_open(fds[1]).unwrap();
        for fd in fds {
            // SAFETY:
            // - both fds were opened above and are closed once, here.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    fn cvt_r_retries_eintr() {
        let mut calls = 0;
        let r = cvt_r(|| {
            calls += 1;
            if calls < 3 {
                // SAFETY:
                // - errno is thread-local; writing it through its location is what libc expects.
                unsafe { *libc::__errno_location() = libc::EINTR };
                -1
            } else {
                5
            }
        });
        assert_eq!(r.unwrap(), 5);
        assert_eq!(calls, 3);
    }
}
