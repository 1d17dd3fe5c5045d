//! Fd readiness futures: [`AsyncFd`], built on the context's fd handlers, so they work on every
//! backend (ppoll, epoll, io_uring, the model kernel) and beside adaptive polling.
//!
//! # Readiness, level-triggered
//!
//! The handlers are level-triggered, so the handler's interest follows the waiters: a `readable()`
//! that has to wait turns read interest on; a report that finds no waiter turns it off again (so an
//! fd nobody waits on does not keep the loop busy). A report is consumed by the `readable()` it
//! resolves: the caller then does its non-blocking I/O until `WouldBlock` and calls `readable()`
//! again. A report can be stale (the fd was readable when the loop waited, and a task drained it
//! before the handler ran), so a `WouldBlock` after a resolved `readable()` is normal: wait again.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::ctx;
use crate::{AioContext, FdHandler, FdRef, Handle, Interest};

/// One direction's state.
#[derive(Default)]
struct Dir {
    /// Reported ready and not yet consumed by a `readable()` / `writable()`.
    ready: Cell<bool>,
    /// The tasks waiting (usually one).
    wakers: RefCell<Vec<Waker>>,
}

impl Dir {
    /// The handler's callback for this direction: a waiter is woken and interest stays on (it will
    /// come back after its I/O); with no waiter, the report is kept and interest turned off.
    fn report(&self, st: &State, this: &FdRef<'_>, off: Interest) {
        self.ready.set(true);
        let waiting = std::mem::take(&mut *self.wakers.borrow_mut());
        if waiting.is_empty() {
            let now = st.interest.get();
            let want = Interest { read: now.read && !off.read, write: now.write && !off.write };
            if this.set_interest(want).is_ok() {
                st.interest.set(want);
            }
        } else {
            waiting.into_iter().for_each(Waker::wake);
        }
    }
}

/// What an [`AsyncFd`] and its handler share (home thread only).
#[derive(Default)]
struct State {
    read: Dir,
    write: Dir,
    /// The handler's interest as last set.
    interest: Cell<Interest>,
}

/// An fd registered with a context for `readable().await` / `writable().await` (tokio's `AsyncFd`,
/// on an AioContext). It owns `T` (a socket, a pipe end, an eventfd...), which must be in
/// non-blocking mode for the I/O that follows a readiness. Dropping it removes the handler, then
/// drops `T`. `!Send`: it lives on the home thread.
///
/// # Examples
///
/// ```
/// # use aioctx::{AioContext, task::AsyncFd};
/// # use std::io::{Read, Write};
/// let ctx = AioContext::new()?;
/// let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
/// r.set_nonblocking(true)?;
/// let r = AsyncFd::with_context(&ctx, r)?;
/// let reader = ctx.spawn_local(async move {
///     let mut buf = [0; 2];
///     loop {
///         r.readable().await?;
///         match r.get_ref().read(&mut buf) {
///             Ok(n) => return Ok::<_, std::io::Error>(buf[..n].to_vec()),
///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
///             Err(e) => return Err(e),
///         }
///     }
/// });
/// w.write_all(b"hi")?;
/// assert_eq!(ctx.block_on(reader).unwrap()?, b"hi");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AsyncFd<T: AsRawFd> {
    inner: Option<T>,
    fd: RawFd,
    /// The handler's token: interest changes and the removal touch this handler only, never one
    /// that replaced it.
    token: u64,
    st: Rc<State>,
    handle: Handle,
}

impl<T: AsRawFd> std::fmt::Debug for AsyncFd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncFd")
            .field("fd", &self.fd)
            .field("interest", &self.st.interest.get())
            .field("read_ready", &self.st.read.ready.get())
            .field("write_ready", &self.st.write.ready.get())
            .finish()
    }
}

impl<T: AsRawFd> AsyncFd<T> {
    /// Register `inner`'s fd with the context polling on this thread.
    ///
    /// # Errors
    ///
    /// No context is polling on this thread (`ErrorKind::Other`; use [`AsyncFd::with_context`]),
    /// or as [`AsyncFd::with_context`].
    pub fn new(inner: T) -> io::Result<Self> {
        AioContext::with_current(|c| AsyncFd::with_context(c, inner)).unwrap_or_else(|| {
            Err(io::Error::other(
                "AsyncFd::new outside a context: call it from a task, a callback or block_on, or use AsyncFd::with_context",
            ))
        })
    }

    /// Register `inner`'s fd with `ctx` (a handler for read and write, with no interest until a
    /// `readable()` or `writable()` waits). It replaces a handler already registered for the fd.
    ///
    /// # Errors
    ///
    /// As [`AioContext::set_fd_handler`] (a closed fd, the context's own notifier, the fd monitor's
    /// errors), with the fd in the message.
    pub fn with_context(ctx: &AioContext, inner: T) -> io::Result<Self> {
        let fd = inner.as_raw_fd();
        let st = Rc::new(State::default());
        let (r, w) = (st.clone(), st.clone());
        let h = FdHandler::new()
            .on_read(move |this| r.read.report(&r, this, Interest::READ))
            .on_write(move |this| w.write.report(&w, this, Interest::WRITE));
        let ctxerr = |e: io::Error| io::Error::new(e.kind(), format!("AsyncFd: fd {fd}: {e}"));
        let token = ctx::set_fd_handler(ctx.handle(), fd, h.erase()).map_err(ctxerr)?;
        let fdref = AsyncFd { inner: Some(inner), fd, token, st, handle: ctx.handle().clone() };
        // Both callbacks are set, so the handler starts with both interests: none until a waiter.
        fdref.set_interest(Interest::NONE).map_err(ctxerr)?;
        Ok(fdref)
    }

    /// The object.
    pub fn get_ref(&self) -> &T {
        self.inner.as_ref().expect("present until into_inner or drop")
    }

    /// The object, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.as_mut().expect("present until into_inner or drop")
    }

    /// Remove the handler and give the object back.
    pub fn into_inner(mut self) -> T {
        self.deregister();
        self.inner.take().expect("present until into_inner or drop")
    }

    /// Ready when the fd was reported readable (or hung up, or in error) since the last
    /// `readable()` that resolved. Then read until `WouldBlock`, and wait again. Several tasks may
    /// wait at once: a report wakes them all, and the first to run consumes it (the others wait
    /// again).
    ///
    /// # Errors
    ///
    /// Turning read interest on failed (the fd monitor's error).
    pub fn readable(&self) -> Readable<'_, T> {
        Readable { fd: self }
    }

    /// As [`AsyncFd::readable`], for writability.
    ///
    /// # Errors
    ///
    /// Turning write interest on failed.
    pub fn writable(&self) -> Writable<'_, T> {
        Writable { fd: self }
    }

    fn poll_dir(&self, cx: &mut Context<'_>, read: bool) -> Poll<io::Result<()>> {
        let d = if read { &self.st.read } else { &self.st.write };
        if d.ready.replace(false) {
            return Poll::Ready(Ok(()));
        }
        {
            let mut ws = d.wakers.borrow_mut();
            if !ws.iter().any(|w| w.will_wake(cx.waker())) {
                ws.push(cx.waker().clone());
            }
        }
        let now = self.st.interest.get();
        if (read && !now.read) || (!read && !now.write) {
            let want = Interest { read: now.read || read, write: now.write || !read };
            if let Err(e) = self.set_interest(want) {
                d.wakers.borrow_mut().retain(|w| !w.will_wake(cx.waker()));
                return Poll::Ready(Err(io::Error::new(
                    e.kind(),
                    format!("AsyncFd: fd {}: turning interest on: {e}", self.fd),
                )));
            }
        }
        Poll::Pending
    }

    fn set_interest(&self, want: Interest) -> io::Result<()> {
        ctx::set_interest(&self.handle, self.fd, Some(self.token), want)?;
        self.st.interest.set(want);
        Ok(())
    }

    fn deregister(&mut self) {
        if self.inner.is_some() {
            // An error means the fd monitor refused the removal (the fd was closed under us): the
            // handler is out of the table either way, and a drop has no one to report it to.
            let _ = ctx::remove_fd_handler(&self.handle, self.fd, Some(self.token));
        }
    }
}

impl<T: AsRawFd> Drop for AsyncFd<T> {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// The future of [`AsyncFd::readable`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Readable<'a, T: AsRawFd> {
    fd: &'a AsyncFd<T>,
}

impl<T: AsRawFd> Future for Readable<'_, T> {
    type Output = io::Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fd.poll_dir(cx, true)
    }
}

/// The future of [`AsyncFd::writable`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Writable<'a, T: AsRawFd> {
    fd: &'a AsyncFd<T>,
}

impl<T: AsRawFd> Future for Writable<'_, T> {
    type Output = io::Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fd.poll_dir(cx, false)
    }
}
