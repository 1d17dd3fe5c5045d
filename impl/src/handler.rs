//! fd handlers: callbacks run on the home thread when an fd is ready, registered from any thread.
//!
//! # Protocol
//!
//! | state | written by | read by | meaning |
//! |---|---|---|---|
//! | `HandlerTable` (in the context's shared half, under a lock) | `set_fd_handler` / `remove_fd_handler` (any thread) | home thread (token lookup after a wait) | fd → handler, token → handler, the fd monitor, removed handlers awaiting finalisation |
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
use std::marker::PhantomData;
use std::os::fd::RawFd;

use crate::kernel::{Event, FdMonitor, Interest};
use crate::kind::{Kind, Local, Remote};
use crate::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use crate::sync::{Arc, UnsafeCell};
use crate::trace::Step;
use crate::AioContext;

/// A handler callback; `Send` or not by the handler's kind (see `crate::kind`).
type Cb = Box<dyn FnMut(&FdRef<'_>) + 'static>;
type PollCb = Box<dyn FnMut(&FdRef<'_>) -> bool + 'static>;

/// The callbacks of one fd, built with chained setters and registered with
/// [`AioContext::set_fd_handler`] (or, for a `Remote` one, [`Handle::set_fd_handler`](crate::Handle::set_fd_handler)).
///
/// One naming scheme, `on_<event>`: `on_read` / `on_write` run when the fd is readable / writable (a
/// hang-up or error runs both). The polling callbacks serve adaptive userspace polling: `on_poll`'s
/// `check` is a cheap readiness check with no side effects and its `ready` does the work after a
/// successful check (QEMU `io_poll` / `io_poll_ready`); `on_poll_begin` / `on_poll_end` bracket a
/// stretch of polling (virtio uses them to suppress guest notifications; QEMU `io_poll_begin` /
/// `io_poll_end`).
///
/// Every callback gets an [`FdRef`]: its fd, its context, and the handler itself, to change what it
/// waits for in place ([`FdRef::set_interest`], also [`Handle::set_fd_interest`](crate::Handle::set_fd_interest)) or remove
/// itself ([`FdRef::remove`]).
///
/// Two kinds ([`crate::kind`]): `FdHandler::new()` (= `FdHandler<Local>`) takes any `'static`
/// closures and registers on the home context; `FdHandler::new_remote()` takes `Send` closures and
/// registers from any thread through a `Handle`.
///
/// # Re-entrancy (nested polls)
///
/// A handler's callbacks are never re-entered. While one of them runs, a nested poll
/// ([`FdRef::context`]) skips the handler, which is not progress, and a nested blocking poll leaves
/// its fd out of its wait, so the fd's readiness does not keep the nested poll from sleeping. Nothing
/// is lost: fds are level-triggered, so a readiness the callback left unconsumed is reported again by
/// the first wait after it returned. Other handlers do run in the nested poll.
///
/// # Examples
///
/// ```
/// # use aioctx::{AioContext, FdHandler, Interest};
/// # use std::{cell::Cell, io::{Read, Write}, os::fd::AsRawFd, rc::Rc};
/// let ctx = AioContext::new()?;
/// let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
/// let got = Rc::new(Cell::new(0));
/// let g2 = got.clone();
/// let mut r2 = r.try_clone()?;
/// ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new().on_read(move |this| {
///     let mut b = [0; 1];
///     r2.read_exact(&mut b).unwrap();
///     g2.set(g2.get() + 1);
///     this.remove().unwrap(); // one event is enough
/// }))?;
/// w.write_all(b"xy")?;
/// assert!(ctx.poll(true));
/// assert!(!ctx.poll(false)); // removed: the second byte is not read
/// assert_eq!(got.get(), 1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FdHandler<K: Kind = Local> {
    pub(crate) read: Option<Cb>,
    pub(crate) write: Option<Cb>,
    pub(crate) poll: Option<PollCb>,
    pub(crate) poll_ready: Option<Cb>,
    pub(crate) poll_begin: Option<Cb>,
    pub(crate) poll_end: Option<Cb>,
    _kind: PhantomData<K>,
}

// SAFETY: every closure of a `FdHandler<Remote>` was `Send` when boxed (the `Remote` setters require
// it); the box type forgets it only so that both kinds share one representation.
unsafe impl Send for FdHandler<Remote> {}

impl<K: Kind> std::fmt::Debug for FdHandler<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdHandler")
            .field("read", &self.read.is_some())
            .field("write", &self.write.is_some())
            .field("poll", &self.poll.is_some())
            .field("poll_ready", &self.poll_ready.is_some())
            .finish()
    }
}

impl<K: Kind> FdHandler<K> {
    fn empty() -> Self {
        FdHandler {
            read: None,
            write: None,
            poll: None,
            poll_ready: None,
            poll_begin: None,
            poll_end: None,
            _kind: PhantomData,
        }
    }
    /// Forget the kind (the callbacks run on the home thread either way).
    pub(crate) fn erase(self) -> FdHandler<Local> {
        FdHandler {
            read: self.read,
            write: self.write,
            poll: self.poll,
            poll_ready: self.poll_ready,
            poll_begin: self.poll_begin,
            poll_end: self.poll_end,
            _kind: PhantomData,
        }
    }
    fn interest(&self) -> Interest {
        Interest { read: self.read.is_some() || self.poll.is_some(), write: self.write.is_some() }
    }
    pub(crate) fn can_poll(&self) -> bool {
        self.poll.is_some() && self.poll_ready.is_some()
    }
}

/// The setters of one kind: `$($bound)*` is the closure bound (`+ Send` for `Remote`).
macro_rules! setters {
    ($kind:ty, $($bound:tt)*) => {
        impl FdHandler<$kind> {
            /// Called when the fd is readable (QEMU `io_read`).
            pub fn on_read(mut self, f: impl FnMut(&FdRef<'_>) $($bound)* + 'static) -> Self {
                self.read = Some(Box::new(f));
                self
            }
            /// Called when the fd is writable (QEMU `io_write`).
            pub fn on_write(mut self, f: impl FnMut(&FdRef<'_>) $($bound)* + 'static) -> Self {
                self.write = Some(Box::new(f));
                self
            }
            /// Userspace polling: `check` says whether work is ready (no side effects); `ready` does
            /// it (QEMU `io_poll` and `io_poll_ready`).
            pub fn on_poll(
                mut self,
                check: impl FnMut(&FdRef<'_>) -> bool $($bound)* + 'static,
                ready: impl FnMut(&FdRef<'_>) $($bound)* + 'static,
            ) -> Self {
                self.poll = Some(Box::new(check));
                self.poll_ready = Some(Box::new(ready));
                self
            }
            /// Called when polling of this handler begins (QEMU `io_poll_begin`).
            pub fn on_poll_begin(mut self, f: impl FnMut(&FdRef<'_>) $($bound)* + 'static) -> Self {
                self.poll_begin = Some(Box::new(f));
                self
            }
            /// Called when polling of this handler ends; always follows a begin (QEMU
            /// `io_poll_end`).
            pub fn on_poll_end(mut self, f: impl FnMut(&FdRef<'_>) $($bound)* + 'static) -> Self {
                self.poll_end = Some(Box::new(f));
                self
            }
        }
    };
}
setters!(Local,);
setters!(Remote, + Send);

impl FdHandler<Local> {
    /// No callbacks yet; closures need not be `Send`. Register it with
    /// [`AioContext::set_fd_handler`] on the home thread.
    pub fn new() -> Self {
        Self::empty()
    }
}

impl Default for FdHandler<Local> {
    fn default() -> Self {
        Self::new()
    }
}

impl FdHandler<Remote> {
    /// No callbacks yet; closures must be `Send`. Register it from any thread with
    /// [`Handle::set_fd_handler`](crate::Handle::set_fd_handler).
    pub fn new_remote() -> Self {
        Self::empty()
    }
}

/// A handler callback's view of its own handler, valid for the duration of the call.
pub struct FdRef<'a> {
    h: &'a AioHandler,
    ctx: &'a AioContext,
}

impl std::fmt::Debug for FdRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdRef").field("fd", &self.h.fd).finish()
    }
}

impl<'a> FdRef<'a> {
    /// The handler's fd.
    pub fn fd(&self) -> RawFd {
        self.h.fd
    }

    /// Change what this handler waits for, in place (the callbacks stay); see
    /// [`Handle::set_fd_interest`](crate::Handle::set_fd_interest). Does nothing if the handler was removed or replaced.
    ///
    /// # Errors
    ///
    /// As [`Handle::set_fd_interest`](crate::Handle::set_fd_interest).
    pub fn set_interest(&self, interest: Interest) -> io::Result<()> {
        crate::ctx::set_interest(self.ctx.handle(), self.h.fd, Some(self.h.token), interest)
            .map(|_| ())
    }

    /// The interest it waits for now.
    pub fn interest(&self) -> Interest {
        self.h.interest()
    }

    /// Remove this handler (see [`Handle::remove_fd_handler`](crate::Handle::remove_fd_handler)):
    /// no callback of it runs after this one returns. Returns false if it was already removed or
    /// replaced (then nothing is removed: a replacement stays).
    ///
    /// # Errors
    ///
    /// The fd monitor refused the removal.
    pub fn remove(&self) -> io::Result<bool> {
        crate::ctx::remove_fd_handler(self.ctx.handle(), self.h.fd, Some(self.h.token))
    }

    /// The context running the callback (for a nested poll, or to create more work on it).
    pub fn context(&self) -> &'a AioContext {
        self.ctx
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
    /// What the fd monitor watches for: `Interest` bits, written under the table lock.
    interest: AtomicU32,
    /// What the callbacks can serve (a `set_interest` may not exceed it).
    pub(crate) capable: Interest,
    deleted: AtomicBool,
    /// Home thread only.
    cbs: UnsafeCell<FdHandler>,
    /// Home thread only.
    pub(crate) local: UnsafeCell<HandlerLocal>,
}

// SAFETY:
// - a `Remote` handler's callbacks are `Send`, so it may be dropped on any thread. A `Local` one is
//   registered only through the `AioContext` (home thread) and the context's drop (home thread)
//   takes every handler out of the table; every other holder (the dispatch and poll lists) is
//   home-thread state, and a removal on another thread only moves the table's reference to the
//   `deleted` list under the lock (never the last one), so it is dropped on the home thread;
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

fn interest_bits(i: Interest) -> u32 {
    i.read as u32 | (i.write as u32) << 1
}

impl AioHandler {
    /// What the fd monitor watches for. Read under the table lock, or by the home thread (a hint).
    pub(crate) fn interest(&self) -> Interest {
        // ORDERING: Relaxed: written under the table lock, read under it (or as a hint).
        let b = self.interest.load(Ordering::Relaxed);
        Interest { read: b & 1 != 0, write: b & 2 != 0 }
    }

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
    fn run<R>(
        &self,
        ctx: &AioContext,
        pick: impl FnOnce(&mut FdHandler, &FdRef<'_>) -> Option<R>,
    ) -> Option<R> {
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
        let this = FdRef { h: self, ctx };
        // SAFETY:
        // - home thread only (as `with_local`);
        // - `in_callback` was false and is now true, so no other &mut to `cbs` is live up the stack,
        //   and nested polls skip this handler until `_reset` runs.
        self.cbs.with_mut(|c| pick(unsafe { &mut *c }, &this))
    }

    /// Dispatch fd readiness to the sides the handler waits for now (a side paused after the wait
    /// reported it is not called; a hang-up, readable and writable, calls only the sides waited
    /// for). Returns true if a user callback ran (progress).
    pub(crate) fn dispatch(&self, ctx: &AioContext, ev: &Event) -> bool {
        let interest = self.interest();
        let mut progress = false;
        if ev.readable && interest.read {
            progress |= self.run(ctx, |c, r| c.read.as_mut().map(|f| f(r))).is_some();
        }
        if ev.writable && interest.write {
            progress |= self.run(ctx, |c, r| c.write.as_mut().map(|f| f(r))).is_some();
        }
        if progress {
            crate::trace_step!(Step::CtxPollDispatch);
        }
        progress
    }

    /// io_poll. `Some(ready)`, or None if it could not run (deleted, running).
    pub(crate) fn io_poll(&self, ctx: &AioContext) -> Option<bool> {
        self.run(ctx, |c, r| c.poll.as_mut().map(|f| f(r)))
    }

    /// io_poll_ready. True if it ran.
    pub(crate) fn io_poll_ready(&self, ctx: &AioContext) -> bool {
        self.run(ctx, |c, r| c.poll_ready.as_mut().map(|f| f(r))).is_some()
    }

    /// io_poll_begin / io_poll_end: tracked so that end always follows begin (§6.3). Deleted handlers
    /// still get their end (from finalisation), never a begin (no callback of a removed handler
    /// starts after its removal; a deleted handler left on the poll list until the finalisation
    /// was begun by a later poll mode before). Not while a callback of this handler runs (a poll
    /// nested in it began or ended poll mode): a callback is never re-entered (§5.4);
    /// `PollState::settle` makes the call that is still owed once that callback returned.
    pub(crate) fn set_polling(&self, ctx: &AioContext, on: bool) {
        if on && self.is_deleted() {
            return;
        }
        let due = self.with_local(|l| {
            let due = !l.in_callback && l.poll_begun != on;
            if due {
                l.poll_begun = on;
                l.in_callback = true;
            }
            due
        });
        if !due {
            return;
        }
        let this = FdRef { h: self, ctx };
        // Not `run`: end must reach a deleted handler too.
        // SAFETY: as in `run` (`in_callback` was false and is now true).
        self.cbs.with_mut(|c| {
            // SAFETY: as in `run`.
            let c = unsafe { &mut *c };
            let f = if on { c.poll_begin.as_mut() } else { c.poll_end.as_mut() };
            if let Some(f) = f {
                f(&this)
            }
        });
        self.with_local(|l| l.in_callback = false);
    }
}

/// Token reported for the context's own event notifier.
pub(crate) const NOTIFIER_TOKEN: u64 = 0;

/// All registrations of one context. Lives in the context's shared half, under a lock.
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
    /// Register `h` for `fd` (replacing its handler); returns the new handler's token.
    pub(crate) fn set(&mut self, fd: RawFd, h: FdHandler) -> io::Result<u64> {
        // `h` is already kind-erased: the caller's signature checked it (`Handle`: `Remote` only).
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
                format!("set_fd_handler: fd {fd}: the handler has no on_read, on_write or on_poll callback (use remove_fd_handler)"),
            ));
        }
        let token = self.next_token;
        let node = Arc::new(AioHandler {
            fd,
            token,
            can_poll: h.can_poll(),
            interest: AtomicU32::new(interest_bits(interest)),
            capable: interest,
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
        Ok(token)
    }

    /// Change what `fd`'s handler (the one with `token`, if given) waits for. Ok(false) if there is
    /// none.
    pub(crate) fn set_interest(
        &mut self,
        fd: RawFd,
        token: Option<u64>,
        interest: Interest,
    ) -> io::Result<bool> {
        let Some(h) = self.by_fd.get(&fd) else { return Ok(false) };
        if token.is_some_and(|t| t != h.token) {
            return Ok(false);
        }
        if interest.read && !h.capable.read || interest.write && !h.capable.write {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "set_fd_interest: fd {fd}: {interest:?} asks for more than its callbacks serve ({:?})",
                    h.capable
                ),
            ));
        }
        self.fdmon.modify(fd, h.token, interest)?;
        // ORDERING: Relaxed: under the table lock (see `AioHandler::interest`).
        h.interest.store(interest_bits(interest), Ordering::Relaxed);
        Ok(true)
    }

    /// Remove `fd`'s handler (the one with `token`, if given). Ok(false) if there was none.
    pub(crate) fn remove(&mut self, fd: RawFd, token: Option<u64>) -> io::Result<bool> {
        let Some(old) = self.by_fd.get(&fd).cloned() else { return Ok(false) };
        if token.is_some_and(|t| t != old.token) {
            return Ok(false);
        }
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
            new.add(h.fd, h.token, h.interest())?;
        }
        self.fdmon = Arc::new(new);
        Ok(())
    }
}
