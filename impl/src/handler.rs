//! fd handlers: callbacks run on the home thread when an fd is ready, registered from any thread.
//!
//! # Protocol
//!
//! | state | written by | read by | meaning |
//! |---|---|---|---|
//! | `HandlerTable` (under `Shared::handlers`) | `set_fd_handler` / `remove_fd_handler` (any thread) | home thread (token lookup after a wait) | fd → handler, token → handler, the fd monitor, removed handlers awaiting finalisation |
//! | `AioHandler::deleted: AtomicBool` | remover, under the table lock | home thread before each callback | removed: never call it again |
//! | `AioHandler` callbacks and `local` | home thread only | home thread | the closures, re-entrancy flag, polling state |
//!
//! Removal is deferred the Rust way: a handler is reference counted, the dispatch list holds a
//! reference while its callbacks may run, and `deleted` stops any further call at once. Removed
//! handlers wait in the table's `deleted` list until the home thread, outside any handler walk,
//! finalises them (`io_poll_end` if polling had begun, docs/protocol.md §6.3) and drops them. Every
//! change ends with a notify, so a loop blocked on the old fd set re-evaluates it (bug-history B4).
//!
//! # Model
//!
//! loom and shuttle scenario `handler_removal_during_dispatch` in `model/tests/loom_handler.rs` and
//! `model/tests/shuttle_handler.rs` (the body is in `model/tests/support/mod.rs`); no Promela model.
//!
//! # Upstream
//!
//! QEMU util/aio-posix.c: `aio_set_fd_handler`, `aio_remove_fd_handler`, `aio_free_deleted_handlers`,
//! `aio_dispatch_handler`; util/fdmon-epoll.c `fdmon_epoll_try_upgrade` (the 64-fd switch).

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use crate::kernel::{Event, FdMonitor, Interest};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, UnsafeCell};
#[allow(unused_imports)] // used by trace_step! when the `trace` feature is on
use crate::trace::Step;

type Cb = Box<dyn FnMut() + Send + 'static>;
type PollCb = Box<dyn FnMut() -> bool + Send + 'static>;

/// The callbacks of one fd, built with chained setters and registered with
/// [`crate::Handle::set_fd_handler`].
///
/// `on_read` / `on_write` run when the fd is readable / writable (a hang-up or error runs both). The
/// polling callbacks serve adaptive userspace polling: `io_poll` is a cheap readiness check with no
/// side effects, `io_poll_ready` does the work after a successful `io_poll`, and `io_poll_begin` /
/// `io_poll_end` bracket a stretch of polling (virtio uses them to suppress guest notifications). A
/// handler with `io_poll` but no `io_poll_ready` is not polled.
///
/// Re-entrancy: a handler's callbacks are never re-entered. While one of them runs, a nested poll
/// ([`AioContext::with_current`](crate::AioContext::with_current)) skips the handler, which is not
/// progress, and a nested blocking poll leaves its fd out of its wait, so the fd's readiness does not
/// keep the nested poll from sleeping. Nothing is lost: fds are level-triggered, so a readiness the
/// callback left unconsumed is reported again by the first wait after it returned.
///
/// # Examples
///
/// ```
/// # use aioctx::{AioContext, FdHandler};
/// # use std::os::fd::AsRawFd;
/// let ctx = AioContext::new()?;
/// let (r, w) = std::os::unix::net::UnixStream::pair()?;
/// ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new().on_read(|| println!("readable")))?;
/// # ctx.remove_fd_handler(r.as_raw_fd())?;
/// # drop(w);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Default)]
pub struct FdHandler {
    pub(crate) read: Option<Cb>,
    pub(crate) write: Option<Cb>,
    pub(crate) poll: Option<PollCb>,
    pub(crate) poll_ready: Option<Cb>,
    pub(crate) poll_begin: Option<Cb>,
    pub(crate) poll_end: Option<Cb>,
}

impl std::fmt::Debug for FdHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdHandler")
            .field("read", &self.read.is_some())
            .field("write", &self.write.is_some())
            .field("poll", &self.poll.is_some())
            .field("poll_ready", &self.poll_ready.is_some())
            .finish()
    }
}

impl FdHandler {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Called when the fd is readable (QEMU `io_read`).
    pub fn on_read(mut self, f: impl FnMut() + Send + 'static) -> Self {
        self.read = Some(Box::new(f));
        self
    }
    /// Called when the fd is writable (QEMU `io_write`).
    pub fn on_write(mut self, f: impl FnMut() + Send + 'static) -> Self {
        self.write = Some(Box::new(f));
        self
    }
    /// Userspace polling: `check` says whether work is ready (no side effects); `ready` does it
    /// (QEMU `io_poll` and `io_poll_ready`).
    pub fn io_poll(
        mut self,
        check: impl FnMut() -> bool + Send + 'static,
        ready: impl FnMut() + Send + 'static,
    ) -> Self {
        self.poll = Some(Box::new(check));
        self.poll_ready = Some(Box::new(ready));
        self
    }
    /// Called when polling of this handler begins (QEMU `io_poll_begin`).
    pub fn io_poll_begin(mut self, f: impl FnMut() + Send + 'static) -> Self {
        self.poll_begin = Some(Box::new(f));
        self
    }
    /// Called when polling of this handler ends; always follows a begin (QEMU `io_poll_end`).
    pub fn io_poll_end(mut self, f: impl FnMut() + Send + 'static) -> Self {
        self.poll_end = Some(Box::new(f));
        self
    }
    fn interest(&self) -> Interest {
        Interest { read: self.read.is_some() || self.poll.is_some(), write: self.write.is_some() }
    }
    pub(crate) fn can_poll(&self) -> bool {
        self.poll.is_some() && self.poll_ready.is_some()
    }
}

/// Home-thread-only state of a handler (adaptive polling lives here too).
#[derive(Debug, Default)]
pub(crate) struct HandlerLocal {
    /// A callback of this handler is running (a nested poll skips it instead of re-entering).
    pub(crate) in_callback: bool,
    /// On the context's poll list.
    pub(crate) on_poll_list: bool,
    /// io_poll_begin was called and io_poll_end not yet.
    pub(crate) poll_begun: bool,
    /// Adaptive polling window of this handler (ns).
    pub(crate) poll_ns: u64,
    /// Deadline after which an idle handler leaves the poll list (ns, context clock).
    pub(crate) poll_idle_deadline: u64,
    /// Its io_poll succeeded: io_poll_ready is due at dispatch.
    pub(crate) poll_ready: bool,
}

/// One registered fd.
pub(crate) struct AioHandler {
    pub(crate) fd: RawFd,
    pub(crate) token: u64,
    pub(crate) can_poll: bool,
    #[cfg_attr(any(aioctx_loom, aioctx_shuttle), allow(dead_code))]
    pub(crate) interest: Interest,
    deleted: AtomicBool,
    /// Home thread only.
    cbs: UnsafeCell<FdHandler>,
    /// Home thread only.
    pub(crate) local: UnsafeCell<HandlerLocal>,
}

// SAFETY:
// - the callbacks are `Send`, so the handler may move to (and be dropped on) any thread;
// - `cbs` and `local` are accessed only by the context's home thread (every accessor is called from
//   AioContext, which is !Send); other threads read only the immutable fields and the atomic `deleted`.
unsafe impl Send for AioHandler {}
// SAFETY: see the Send impl above.
unsafe impl Sync for AioHandler {}

impl std::fmt::Debug for AioHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioHandler").field("fd", &self.fd).field("token", &self.token).finish()
    }
}

impl AioHandler {
    pub(crate) fn is_deleted(&self) -> bool {
        // ORDERING: Acquire: pairs with the Release store in `HandlerTable::remove`; only a flag.
        self.deleted.load(Ordering::Acquire)
    }

    /// Read or write the home-local state. Home thread only.
    #[inline]
    pub(crate) fn with_local<R>(&self, f: impl FnOnce(&mut HandlerLocal) -> R) -> R {
        // SAFETY:
        // - `local` is only touched by the home thread (AioContext is !Send and every caller is one of
        //   its methods), and callers never call user code inside `f`, so no second &mut exists.
        self.local.with_mut(|l| f(unsafe { &mut *l }))
    }

    /// Run one callback with the re-entrancy guard. Returns None if it is absent, deleted or already
    /// running further up the stack.
    fn run<R>(&self, pick: impl FnOnce(&mut FdHandler) -> Option<R>) -> Option<R> {
        if self.is_deleted() || self.with_local(|l| std::mem::replace(&mut l.in_callback, true)) {
            return None;
        }
        struct Reset<'a>(&'a AioHandler);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.with_local(|l| l.in_callback = false);
            }
        }
        let _reset = Reset(self);
        // SAFETY:
        // - home thread only (as `with_local`);
        // - `in_callback` was false and is now true, so no other &mut to `cbs` is live up the stack,
        //   and nested polls skip this handler until `_reset` runs.
        self.cbs.with_mut(|c| pick(unsafe { &mut *c }))
    }

    /// Dispatch fd readiness. Returns true if a user callback ran (progress).
    pub(crate) fn dispatch(&self, ev: &Event) -> bool {
        let mut progress = false;
        if ev.readable {
            progress |= self.run(|c| c.read.as_mut().map(|f| f())).is_some();
        }
        if ev.writable {
            progress |= self.run(|c| c.write.as_mut().map(|f| f())).is_some();
        }
        if progress {
            crate::trace_step!(Step::CtxPollDispatch);
        }
        progress
    }

    /// io_poll. `Some(ready)`, or None if it could not run (deleted, running).
    pub(crate) fn io_poll(&self) -> Option<bool> {
        self.run(|c| c.poll.as_mut().map(|f| f()))
    }

    /// io_poll_ready. True if it ran.
    pub(crate) fn io_poll_ready(&self) -> bool {
        self.run(|c| c.poll_ready.as_mut().map(|f| f())).is_some()
    }

    /// io_poll_begin / io_poll_end: tracked so that end always follows begin (§6.3). Deleted handlers
    /// still get their end (from finalisation).
    pub(crate) fn set_polling(&self, on: bool) {
        if self.with_local(|l| std::mem::replace(&mut l.poll_begun, on)) == on {
            return;
        }
        // Not `run`: end must reach a deleted handler too. The re-entrancy flag still applies.
        if self.with_local(|l| std::mem::replace(&mut l.in_callback, true)) {
            return;
        }
        // SAFETY: as in `run`.
        self.cbs.with_mut(|c| {
            // SAFETY: as in `run`.
            let c = unsafe { &mut *c };
            let f = if on { c.poll_begin.as_mut() } else { c.poll_end.as_mut() };
            if let Some(f) = f {
                f()
            }
        });
        self.with_local(|l| l.in_callback = false);
    }
}

/// Token reported for the context's own event notifier.
pub(crate) const NOTIFIER_TOKEN: u64 = 0;

/// All registrations of one context. Lives under `Shared::handlers`.
#[derive(Debug)]
pub(crate) struct HandlerTable {
    pub(crate) by_fd: HashMap<RawFd, Arc<AioHandler>>,
    pub(crate) by_token: HashMap<u64, Arc<AioHandler>>,
    next_token: u64,
    /// The fd monitor in use; replaced when ppoll is upgraded to epoll.
    pub(crate) fdmon: Arc<Box<dyn FdMonitor>>,
    /// Removed handlers the home thread has not finalised yet.
    pub(crate) deleted: Vec<Arc<AioHandler>>,
    /// The notifier's fd (registered with NOTIFIER_TOKEN in every fd monitor).
    pub(crate) notifier_fd: RawFd,
    /// Switch from ppoll to epoll at this many user fds (0: never).
    #[cfg_attr(any(aioctx_loom, aioctx_shuttle), allow(dead_code))]
    pub(crate) upgrade_at: usize,
}

impl HandlerTable {
    pub(crate) fn new(
        fdmon: Box<dyn FdMonitor>,
        notifier_fd: RawFd,
        upgrade_at: usize,
    ) -> io::Result<Self> {
        fdmon.add(notifier_fd, NOTIFIER_TOKEN, Interest::READ)?;
        Ok(HandlerTable {
            by_fd: HashMap::new(),
            by_token: HashMap::new(),
            next_token: NOTIFIER_TOKEN + 1,
            fdmon: Arc::new(fdmon),
            deleted: Vec::new(),
            notifier_fd,
            upgrade_at,
        })
    }

    /// Register or replace `fd`'s handler.
    pub(crate) fn set(&mut self, fd: RawFd, h: FdHandler) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("set_fd_handler: invalid fd {fd}"),
            ));
        }
        if fd == self.notifier_fd {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("set_fd_handler: fd {fd} is the context's own event notifier"),
            ));
        }
        let interest = h.interest();
        if interest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("set_fd_handler: fd {fd}: the handler has no read, write or io_poll callback (use remove_fd_handler)"),
            ));
        }
        let token = self.next_token;
        let node = Arc::new(AioHandler {
            fd,
            token,
            can_poll: h.can_poll(),
            interest,
            deleted: AtomicBool::new(false),
            cbs: UnsafeCell::new(h),
            local: UnsafeCell::new(HandlerLocal::default()),
        });
        match self.by_fd.get(&fd) {
            Some(old) => {
                self.fdmon.modify(fd, token, interest)?;
                let old = old.clone();
                self.retire(&old);
            }
            None => self.fdmon.add(fd, token, interest)?,
        }
        self.next_token += 1;
        self.by_fd.insert(fd, node.clone());
        self.by_token.insert(token, node);
        Ok(())
    }

    /// Remove `fd`'s handler. Ok(false) if there was none.
    pub(crate) fn remove(&mut self, fd: RawFd) -> io::Result<bool> {
        let Some(old) = self.by_fd.get(&fd).cloned() else { return Ok(false) };
        self.fdmon.delete(fd, old.token)?;
        self.retire(&old);
        Ok(true)
    }

    fn retire(&mut self, old: &Arc<AioHandler>) {
        // ORDERING: Release: pairs with the Acquire in `is_deleted`; written under the table lock.
        old.deleted.store(true, Ordering::Release);
        self.by_fd.remove(&old.fd);
        self.by_token.remove(&old.token);
        self.deleted.push(old.clone());
    }

    /// Move every registration to `new` (the ppoll → epoll upgrade). Called with the table lock held,
    /// so a registration racing the switch either is copied here or goes to `new` afterwards
    /// (bug-history B17).
    #[cfg_attr(any(aioctx_loom, aioctx_shuttle), allow(dead_code))]
    pub(crate) fn switch_to(&mut self, new: Box<dyn FdMonitor>) -> io::Result<()> {
        new.add(self.notifier_fd, NOTIFIER_TOKEN, Interest::READ)?;
        for h in self.by_fd.values() {
            new.add(h.fd, h.token, h.interest)?;
        }
        self.fdmon = Arc::new(new);
        Ok(())
    }
}
