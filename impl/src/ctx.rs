//! `AioContext`: the event loop of one thread, and `Handle`, its cross-thread face.
//!
//! # Protocol
//!
//! The context is split in two halves:
//!
//! | half | type | who touches it | holds |
//! |---|---|---|---|
//! | shared | `Shared` behind an `Arc`, reached through [`Handle`] (`Send + Sync`) | any thread | `notify_me`, `notified`, the event notifier, `bh_list`, the handler table, timers, polling parameters |
//! | home | [`AioContext`] (`!Send + !Sync`) | the home thread only | the BH slice queue, the handler walk depth, the cached fd monitor, the poll list |
//!
//! `poll` exists only on [`AioContext`], so a poll from a foreign thread does not compile (QEMU's 2018
//! foreign-poll hang, bug-history B5, is impossible by type). A callback reaches its context (a nested
//! poll) through its view of itself ([`BhRef::context`](crate::BhRef::context), ...) or
//! [`AioContext::with_current`]. Callbacks created here need not be `Send` (see [`crate::kind`]).
//!
//! `poll(blocking)` follows docs/protocol.md §2 step by step; the numbers in the comments below are
//! its steps. Our decisions where QEMU is loose (§6) are marked "Decision".
//!
//! # Model
//!
//! `promela/notify.pml`, `promela/bh.pml`, `promela/external.pml`; loom and shuttle scenarios in
//! `model/tests/`.
//!
//! # Upstream
//!
//! QEMU util/aio-posix.c `aio_poll`, util/async.c `aio_context_new`, `aio_ctx_prepare`,
//! `aio_ctx_check`, `aio_ctx_dispatch`, `aio_compute_timeout`.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Duration;

use crate::bh::{self, Bh, BhRef, HomeBhs, Pending};
use crate::handler::{AioHandler, FdHandler, HandlerTable, NOTIFIER_TOKEN};
use crate::kernel::{
    Clock, Event, EventNotifier, FaultCounts, Faults, FdMonitor, Interest, ModelFdMonitor,
    ModelKernel, ModelNotifier,
};
use crate::kind::{Kind, Remote};
use crate::notify::NotifyState;
use crate::poll::{PollEnv, PollParams, PollState};
use crate::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Arc, Mutex};
use crate::timer::{Timer, TimerRef, Timers};
use crate::trace::Step;

/// A zero-sized field that ends a cache-line block in a `repr(C)` struct: the next field starts on
/// the next 128-byte boundary (two 64-byte lines: Intel's adjacent-line prefetcher moves lines in
/// pairs; crossbeam's `CachePadded` uses 128 on x86-64 and aarch64 for the same reason).
#[derive(Debug, Default, Clone, Copy)]
#[repr(align(128))]
pub(crate) struct LineEnd;

/// A pending idle BH caps a blocking wait at this (QEMU: 10 ms).
const IDLE_BH_TIMEOUT_NS: u64 = 10_000_000;

/// The longest wait while a registration a nested wait left out could not be restored (the fd
/// monitor refused it, `AioContext::resync`): the restore is retried before each wait.
const RESYNC_RETRY_NS: u64 = 1_000_000;

/// The shared half of a context.
///
/// Layout: the two fields every cross-thread kick writes (`notify.notified`, and `bh_list` for a BH)
/// and `notify_me`, which the notifier reads right after, come first, in a cache-line block of their
/// own ([`LineEnd`]): a kick then moves one line of the context, not two, and nothing the home
/// thread writes on its own shares it. (A layout guarantee, not a measured speed-up: the polling
/// round trip of impl/benches/polling/ did not change measurably on the 2-core VM.)
#[repr(C)]
pub(crate) struct Shared {
    notify: NotifyState,
    bh_list: AtomicPtr<bh::BhInner>,
    _line_end: LineEnd,
    handlers: Mutex<HandlerTable>,
    /// Bumped under the handler lock on every change (the home thread refreshes its cache).
    handlers_gen: AtomicU64,
    /// Registered user handlers (not counting the notifier).
    nr_user: AtomicUsize,
    /// Polling is off and no user handler is registered: `poll(false)` takes the short path. Written
    /// under the handler-table lock (by `publish_counts` and `set_poll_params`), read by `poll`.
    quiet: AtomicBool,
    /// Registered user handlers that cannot poll (no io_poll + io_poll_ready): QEMU's poll_disable_cnt.
    nr_no_poll: AtomicUsize,
    /// The table's `deleted` list is non-empty.
    has_deleted: AtomicBool,
    timers: Timers,
    clock: Box<dyn Clock>,
    poll_params: PollParams,
    closed: AtomicBool,
}

/// The parts of the shared half that bh.rs and timer.rs use. Their functions take these parts, not
/// `Shared`; only their owner types (`Bh`, `BhScheduler`, `Timer`, which keep the shared half alive)
/// and the callback views pick the parts out here. The fields stay private to this module.
impl Shared {
    /// The handshake state (`notify_me`, `notified`, the event notifier).
    #[inline(always)]
    pub(crate) fn notify(&self) -> &NotifyState {
        &self.notify
    }
    /// The lock-free list of scheduled BHs.
    #[inline(always)]
    pub(crate) fn bh_list(&self) -> &AtomicPtr<bh::BhInner> {
        &self.bh_list
    }
    /// The timer list.
    #[inline(always)]
    pub(crate) fn timers(&self) -> &Timers {
        &self.timers
    }
    /// The context's clock.
    #[inline(always)]
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
    /// Set when the [`AioContext`] is dropped (a `Local` timer is not armed after that).
    #[inline(always)]
    pub(crate) fn closed(&self) -> &AtomicBool {
        &self.closed
    }
}

impl Shared {
    /// Mirror the table's counts into the lock-free fields the home thread reads. Under the lock.
    pub(crate) fn publish_counts(&self, t: &HandlerTable) {
        // ORDERING: Relaxed, written under the table lock; every change ends with a notify, whose
        // fences publish them to the home thread.
        self.nr_user.store(t.by_fd.len(), Ordering::Relaxed);
        // ORDERING: Relaxed, as above (the poll parameters are also written under the table lock).
        self.quiet.store(t.by_fd.is_empty() && !self.poll_params.enabled(), Ordering::Relaxed);
        self.nr_no_poll.store(t.by_fd.values().filter(|h| !h.can_poll).count(), Ordering::Relaxed);
        self.has_deleted.store(!t.deleted.is_empty(), Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // BHs pushed after the context was dropped (through a surviving Handle or Bh) are freed
        // without being called.
        HomeBhs::new().drop_all(&self.bh_list);
    }
}

/// Which fd monitor a context uses.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring if the kernel allows it; otherwise (logged once with the reason) ppoll, switching to
    /// epoll at [`Builder::epoll_threshold`] fds, as QEMU does.
    #[default]
    Auto,
    /// ppoll(2) only (no switch).
    Ppoll,
    /// epoll(7).
    Epoll,
    /// io_uring(7) (one-shot POLL_ADD); building fails if the kernel refuses it.
    IoUring,
    /// The model kernel: no syscalls (loom, shuttle, deterministic tests).
    Model(Arc<ModelKernel>),
}

/// Configures and creates an [`AioContext`].
#[derive(Debug)]
pub struct Builder {
    backend: Backend,
    clock: Option<Box<dyn Clock>>,
    epoll_threshold: Option<usize>,
    poll: (u64, u64, u64),
    io_uring_faults: Option<Faults>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            backend: Backend::Auto,
            clock: None,
            epoll_threshold: None,
            poll: (0, 0, 0),
            io_uring_faults: None,
        }
    }
}

impl Builder {
    /// Choose the fd monitor (overridden by `--cfg aioctx_force_fdmon="..."` for real backends).
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    /// Use `clock` instead of `CLOCK_MONOTONIC` (tests: a [`crate::ModelClock`]).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }
    /// Switch from ppoll to epoll at this many fds: with [`Backend::Auto`] falling back to ppoll
    /// (default 64, as QEMU), and with [`Backend::Ppoll`] only when set here.
    pub fn epoll_threshold(mut self, n: usize) -> Self {
        self.epoll_threshold = Some(n);
        self
    }
    /// Inject `faults` into the io_uring fd monitor (their io_uring rates: failed `io_uring_enter`s,
    /// lost and delayed completions; [`Faults`]), reproducibly from their seed: for testing code
    /// on the context against the kernel faults it must survive. Needs [`Backend::IoUring`]: with
    /// any other backend `build` fails (nothing is silently not injected).
    /// [`AioContext::faults_injected`] counts what was injected.
    pub fn io_uring_faults(mut self, faults: Faults) -> Self {
        self.io_uring_faults = Some(faults);
        self
    }
    /// Adaptive userspace polling parameters (see [`Handle::set_poll_params`]); default off.
    pub fn poll_params(mut self, max_ns: u64, grow: u64, shrink: u64) -> Self {
        self.poll = (max_ns, grow, shrink);
        self
    }

    /// Create the context on the calling thread, which becomes its home thread.
    ///
    /// # Errors
    ///
    /// Creating the eventfd or the fd monitor failed (EMFILE, ENFILE, ENOMEM), with the call named.
    pub fn build(self) -> io::Result<AioContext> {
        let poll = self.poll;
        let (notifier, fdmon, clock, upgrade_at) = self.kernel()?;
        let notifier_fd = notifier.fd();
        let table = HandlerTable::new(fdmon, notifier_fd, upgrade_at)?;
        let shared = Arc::new(Shared {
            notify: NotifyState::new(notifier),
            bh_list: AtomicPtr::new(ptr::null_mut()),
            _line_end: LineEnd,
            handlers: Mutex::new(table),
            handlers_gen: AtomicU64::new(0),
            nr_user: AtomicUsize::new(0),
            quiet: AtomicBool::new(poll.0 == 0),
            nr_no_poll: AtomicUsize::new(0),
            has_deleted: AtomicBool::new(false),
            timers: Timers::new(),
            clock,
            poll_params: PollParams::new(poll.0, poll.1, poll.2),
            closed: AtomicBool::new(false),
        });
        let fdmon = shared.handlers.lock().fdmon.clone();
        Ok(AioContext {
            handle: Handle { shared },
            home: Home {
                bhs: HomeBhs::new(),
                walk_depth: Cell::new(0),
                polls_woken: Cell::new(0),
                timers_running: Cell::new(0),
                fdmon: RefCell::new((0, fdmon)),
                events: Cell::new(Vec::new()),
                ready: Cell::new(Vec::new()),
                unsynced: RefCell::new(Vec::new()),
                polling: PollState::default(),
            },
            tasks: Default::default(),
            _not_send: std::marker::PhantomData,
        })
    }

    #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
    fn kernel(self) -> io::Result<Kernel> {
        use crate::fdmon::{Epoll, IoUring, Ppoll};
        use crate::sys::EventFd;
        if self.io_uring_faults.is_some() && !matches!(self.backend, Backend::IoUring) {
            return Err(faults_need_io_uring(&self.backend));
        }
        let mut backend = self.backend;
        if !matches!(backend, Backend::Model(_)) {
            if cfg!(aioctx_force_fdmon = "ppoll") {
                backend = Backend::Ppoll;
            } else if cfg!(aioctx_force_fdmon = "epoll") {
                backend = Backend::Epoll;
            } else if cfg!(aioctx_force_fdmon = "io_uring") {
                backend = Backend::IoUring;
            }
        }
        if let Some(f) = self.io_uring_faults {
            if !matches!(backend, Backend::IoUring) {
                // Asked for io_uring, but a build forces another backend.
                return Err(faults_need_io_uring(&backend));
            }
            let clock =
                self.clock.unwrap_or_else(|| Box::new(crate::kernel::MonotonicClock::new()));
            let notifier: Box<dyn EventNotifier> = Box::new(EventFd::new()?);
            return Ok((notifier, Box::new(IoUring::with_faults(f)?), clock, 0));
        }
        if let Backend::Model(k) = backend {
            return Ok(model_kernel(k, self.clock));
        }
        let clock = self.clock.unwrap_or_else(|| Box::new(crate::kernel::MonotonicClock::new()));
        let notifier: Box<dyn EventNotifier> = Box::new(EventFd::new()?);
        Ok(match backend {
            Backend::Ppoll => {
                (notifier, Box::new(Ppoll::new()), clock, self.epoll_threshold.unwrap_or(0))
            }
            Backend::Epoll => (notifier, Box::new(Epoll::new()?), clock, 0),
            Backend::IoUring => (notifier, Box::new(IoUring::new()?), clock, 0),
            _ => match IoUring::new() {
                Ok(u) => (notifier, Box::new(u), clock, 0),
                Err(e) => {
                    log_io_uring_fallback(&e);
                    (notifier, Box::new(Ppoll::new()), clock, self.epoll_threshold.unwrap_or(64))
                }
            },
        })
    }

    #[cfg(any(aioctx_loom, aioctx_shuttle))]
    fn kernel(self) -> io::Result<Kernel> {
        if self.io_uring_faults.is_some() {
            return Err(faults_need_io_uring(&self.backend));
        }
        let k = match self.backend {
            Backend::Model(k) => k,
            _ => ModelKernel::new(),
        };
        Ok(model_kernel(k, self.clock))
    }
}

fn faults_need_io_uring(b: &Backend) -> io::Error {
    let what = if cfg!(any(aioctx_loom, aioctx_shuttle)) { "a model checker's kernel" } else { "" };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("io_uring_faults needs Backend::IoUring, not {b:?}{what}"),
    )
}

/// Say once per process why io_uring is not used (seccomp, old kernel, RLIMIT_MEMLOCK, sysctl).
#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
fn log_io_uring_fallback(e: &io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::warn!("aioctx: io_uring unavailable, using ppoll/epoll: {e}"));
}

/// What a context is built on: its notifier, fd monitor, clock, and the ppoll→epoll threshold.
type Kernel = (Box<dyn EventNotifier>, Box<dyn FdMonitor>, Box<dyn Clock>, usize);

fn model_kernel(k: Arc<ModelKernel>, clock: Option<Box<dyn Clock>>) -> Kernel {
    let c: Box<dyn Clock> = clock.unwrap_or_else(|| Box::new(k.clock()));
    (Box::new(ModelNotifier::new(k.clone())), Box::new(ModelFdMonitor::new(k)), c, 0)
}

/// The cross-thread face of a context: cheap to clone, `Send + Sync`. Everything but `poll`.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("fd", &self.shared.notify.notifier.fd()).finish()
    }
}

impl Handle {
    /// Make the home thread re-examine its work: wakes a blocking `poll` (which then returns false
    /// unless something else made progress). No syscall while the loop is busy.
    #[doc(alias = "aio_notify")]
    pub fn notify(&self) {
        self.shared.notify.notify();
    }

    /// A new bottom half running `f` on the home thread each time it is scheduled, created from any
    /// thread: `f` must be `Send`, and so is the [`Bh<Remote>`](Bh) (on the home thread,
    /// [`AioContext::bh_new`] takes any closure).
    #[doc(alias = "aio_bh_new")]
    pub fn bh_new(&self, f: impl FnMut(&BhRef<'_>) + Send + 'static) -> Bh<Remote> {
        Bh::new(self.shared.clone(), Box::new(f))
    }

    /// Run `f` once on the home thread, in its next poll. If the context is dropped first, `f` is
    /// dropped without being called (see [`AioContext`]'s drop).
    #[doc(alias = "aio_bh_schedule_oneshot")]
    pub fn bh_oneshot(&self, f: impl FnOnce() + Send + 'static) {
        bh::oneshot(&self.shared.bh_list, &self.shared.notify, f);
    }

    /// A new, disarmed timer running `f` on the home thread, created from any thread: `f` must be
    /// `Send`, and so is the [`Timer<Remote>`](Timer) (on the home thread, [`AioContext::timer_new`]
    /// takes any closure).
    #[doc(alias = "aio_timer_new")]
    pub fn timer_new(&self, f: impl FnMut(&TimerRef<'_>) + Send + 'static) -> Timer<Remote> {
        Timer::new(self.shared.clone(), Box::new(f))
    }

    /// The context clock's current time in ns (timer deadlines are on this clock).
    pub fn now_ns(&self) -> u64 {
        self.shared.clock.now_ns()
    }

    /// Register (or replace) the handler of `fd`, from any thread. The loop picks it up by its next
    /// iteration (a blocked wait is woken).
    ///
    /// # Errors
    ///
    /// `fd` is negative, closed (EBADF), cannot be watched (epoll: a regular file), is the context's
    /// own notifier, or the handler has no callback. The message names the fd.
    #[doc(alias = "aio_set_fd_handler")]
    pub fn set_fd_handler(&self, fd: RawFd, h: FdHandler<Remote>) -> io::Result<()> {
        set_fd_handler(self, fd, h.erase()).map(drop)
    }

    /// Change what `fd`'s handler waits for, in place: its callbacks stay, and so does its polling
    /// state. `Interest::NONE` pauses it (its `on_poll` check still runs while the context polls).
    /// The loop picks it up by its next wait (a blocked wait is woken). Returns false if `fd` has no
    /// handler.
    ///
    /// # Errors
    ///
    /// `interest` asks for an event the handler has no callback for (`read` needs `on_read` or
    /// `on_poll`, `write` needs `on_write`), or the fd monitor refused the change. The message names
    /// the fd.
    #[doc(alias = "aio_set_fd_interest")]
    pub fn set_fd_interest(&self, fd: RawFd, interest: Interest) -> io::Result<bool> {
        set_interest(self, fd, None, interest)
    }

    /// Remove the handler of `fd`, from any thread, also from inside a callback (its own or another's):
    /// no callback of it runs after this returns, except one already running on the home thread. Its
    /// `on_poll_end` still runs if polling had begun. Returns whether a handler was registered.
    ///
    /// # Errors
    ///
    /// The fd monitor refused the removal (the message names the fd).
    pub fn remove_fd_handler(&self, fd: RawFd) -> io::Result<bool> {
        remove_fd_handler(self, fd, None)
    }

    /// True once the [`AioContext`] was dropped: BHs scheduled now are dropped without running.
    /// When it returns true, everything the home thread did before dropping the context is visible
    /// to the caller, as after joining a thread.
    pub fn is_closed(&self) -> bool {
        // ORDERING: Acquire: pairs with the Release store in AioContext's drop (checked:
        // `loom_bh::closed_publishes`, mutants/CLAIMS).
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Set the adaptive polling parameters, from any thread: `max_ns` is the longest window (0 turns
    /// polling off; QEMU IOThreads use 32768), `grow` multiplies a window that was too short (0: ×2),
    /// `shrink` divides one that was too long (0: reset to 0). Every handler's window restarts at 0.
    #[doc(alias = "aio_context_set_poll_params")]
    pub fn set_poll_params(&self, max_ns: u64, grow: u64, shrink: u64) {
        let s = &*self.shared;
        {
            // Under the handler-table lock: concurrent calls do not mix their parameters, and
            // `quiet` (polling off and no handler) is recomputed with the table's count.
            let t = s.handlers.lock();
            s.poll_params.set_poll_params(max_ns, grow, shrink);
            s.publish_counts(&t);
        }
        s.notify.notify();
    }

    /// How long a poll handler may go without a successful io_poll before it leaves the poll list
    /// (default 7 s; only on backends that poll fd readiness from userspace).
    pub fn set_poll_idle_timeout(&self, d: Duration) {
        self.shared.poll_params.set_poll_idle_timeout(d.as_nanos() as u64);
        self.shared.notify.notify();
    }

    /// The current polling parameters `(max_ns, grow, shrink)`.
    pub fn poll_params(&self) -> (u64, u64, u64) {
        self.shared.poll_params.get()
    }
}

#[cfg(feature = "trace")]
impl Handle {
    /// The protocol state of the context (trace builds only, for the replay controller).
    pub fn debug_state(&self) -> crate::trace::DebugState {
        use crate::sync::atomic::Ordering::Relaxed;
        let s = &self.shared;
        // ORDERING: Relaxed: read by the replay controller between two gated steps, when no thread
        // is in a protocol access (the gate's own lock orders them).
        crate::trace::DebugState {
            notify_me: s.notify.notify_me.load(Relaxed),
            notified: s.notify.notified.load(Relaxed),
            notifier_fd: s.notify.notifier.fd(),
            bh_list: !s.bh_list.load(Relaxed).is_null(),
        }
    }
}

/// `aio_set_fd_handler`, for both kinds (the caller's signature checked the kind). Returns the
/// handler's token.
pub(crate) fn set_fd_handler(h: &Handle, fd: RawFd, handler: FdHandler) -> io::Result<u64> {
    let s = &*h.shared;
    let token = {
        let mut t = s.handlers.lock();
        let token = t.set(fd, handler)?;
        s.publish_counts(&t);
        #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
        if t.upgrade_at != 0 && t.by_fd.len() >= t.upgrade_at && t.fdmon.name() == "ppoll" {
            // QEMU's fdmon_epoll_try_upgrade: under the table lock, so no racing registration is
            // lost (B17). If epoll cannot be created, ppoll keeps working with any number of fds.
            t.upgrade_at = 0;
            if let Ok(ep) = crate::fdmon::Epoll::new() {
                t.switch_to(Box::new(ep))?;
            }
        }
        // ORDERING: Relaxed: the notify below publishes it (Release fence; the home thread's accept
        // fence acquires).
        s.handlers_gen.fetch_add(1, Ordering::Relaxed);
        token
    };
    s.notify.notify();
    Ok(token)
}

/// Change the interest of `fd`'s handler (the one with `token`, if given), then notify.
pub(crate) fn set_interest(
    h: &Handle,
    fd: RawFd,
    token: Option<u64>,
    interest: Interest,
) -> io::Result<bool> {
    let s = &*h.shared;
    let changed = s.handlers.lock().set_interest(fd, token, interest)?;
    if changed {
        // A blocked wait re-reads the interest set (ppoll builds its array per wait).
        s.notify.notify();
    }
    Ok(changed)
}

/// `aio_remove_fd_handler` of `fd`'s handler (the one with `token`, if given).
pub(crate) fn remove_fd_handler(h: &Handle, fd: RawFd, token: Option<u64>) -> io::Result<bool> {
    let s = &*h.shared;
    let removed = {
        let mut t = s.handlers.lock();
        let r = t.remove(fd, token)?;
        s.publish_counts(&t);
        // ORDERING: Relaxed: published by the notify below (its Release fence; the home thread's accept
        // fence acquires).
        s.handlers_gen.fetch_add(1, Ordering::Relaxed);
        r
    };
    s.notify.notify();
    Ok(removed)
}

/// The home thread's half.
struct Home {
    bhs: HomeBhs,
    /// Nesting of handler walks (QEMU's list_lock count). 0: outside `poll`.
    walk_depth: Cell<u32>,
    /// Polls (full path) that took a notification or made progress, so far: a count that
    /// `poll_full` compares across the callbacks it makes before its wait (so only the polls
    /// nested in those callbacks move it there).
    polls_woken: Cell<u64>,
    /// (generation, fd monitor) cached from the handler table.
    fdmon: RefCell<(u64, Arc<Box<dyn FdMonitor>>)>,
    /// Timer callbacks running (a poll nested in one leaves its timer out of the timeout).
    timers_running: Cell<u32>,
    /// Reusable buffers (taken by the outermost poll; a nested poll allocates its own).
    events: Cell<Vec<Event>>,
    ready: Cell<Vec<(Arc<AioHandler>, Event)>>,
    /// Registrations a nested wait left out and the fd monitor then refused to restore
    /// ([`AioContext::nested_wait`]): retried before every wait ([`AioContext::resync`]).
    unsynced: RefCell<Vec<Arc<AioHandler>>>,
    pub(crate) polling: PollState,
}

impl Home {
    /// A registration is left unrestored (`unsynced`).
    #[inline]
    fn has_unsynced(&self) -> bool {
        !self.unsynced.borrow().is_empty()
    }
}

/// An event loop (QEMU `AioContext`): bottom halves, fd handlers and timers run by [`poll`] on the
/// thread that created it (its home thread).
///
/// `AioContext` is `!Send` and `!Sync`: only its home thread can poll it. Other threads use a
/// [`Handle`] (`ctx.handle()`, or the methods reached through `Deref`).
///
/// Dropping the context drops every scheduled BH and timer without calling it, and finalises the
/// handlers (`io_poll_end` where polling had begun). Work scheduled later through a surviving `Handle`
/// is dropped the same way ([`Handle::is_closed`] tells). QEMU aborts instead; a library should not.
///
/// [`poll`]: AioContext::poll
///
/// # Examples
///
/// ```
/// use aioctx::AioContext;
/// let ctx = AioContext::new()?;
/// let h = ctx.handle().clone();
/// let t = std::thread::spawn(move || h.bh_oneshot(|| println!("on the home thread")));
/// t.join().unwrap();
/// assert!(ctx.poll(true));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct AioContext {
    handle: Handle,
    home: Home,
    /// The tasks of [`AioContext::spawn_local`] (shared with their join handles).
    tasks: std::rc::Rc<crate::task::TaskSet>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for AioContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioContext").field("backend", &self.backend_name()).finish()
    }
}

impl std::ops::Deref for AioContext {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

#[cfg(not(aioctx_loom))]
crate::sync::thread_local! {
    static CURRENT: Cell<*const AioContext> = const { Cell::new(ptr::null()) };
}
#[cfg(aioctx_loom)] // loom's thread_local! has no const form
crate::sync::thread_local! {
    static CURRENT: Cell<*const AioContext> = Cell::new(ptr::null());
}

impl AioContext {
    /// A context with the default backend, on the calling thread.
    ///
    /// # Errors
    ///
    /// See [`Builder::build`].
    #[doc(alias = "aio_context_new")]
    pub fn new() -> io::Result<AioContext> {
        Builder::default().build()
    }

    /// A builder for a configured context.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The cross-thread handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The fd of the context's own event notifier (never a valid argument to `set_fd_handler`). The
    /// fd an external loop waits on is [`AsRawFd::as_raw_fd`] instead.
    pub fn notifier_fd(&self) -> RawFd {
        self.handle.shared.notify.notifier.fd()
    }

    /// A new bottom half running `f` on this (home) thread each time it is scheduled. `f` need not be
    /// `Send` (it may hold `Rc`, `RefCell`); the [`Bh`] stays on this thread, and [`Bh::scheduler`]
    /// schedules it from others. From another thread, use [`Handle::bh_new`].
    #[doc(alias = "aio_bh_new")]
    pub fn bh_new(&self, f: impl FnMut(&BhRef<'_>) + 'static) -> Bh {
        Bh::new(self.handle.shared.clone(), Box::new(f))
    }

    /// Run `f` once on this thread, in the next poll; `f` need not be `Send`. If the context is
    /// dropped first, `f` is dropped (on this thread) without being called.
    #[doc(alias = "aio_bh_schedule_oneshot")]
    pub fn bh_oneshot(&self, f: impl FnOnce() + 'static) {
        bh::oneshot(&self.handle.shared.bh_list, &self.handle.shared.notify, f);
    }

    /// A new, disarmed timer running `f` on this (home) thread; `f` need not be `Send`, and the
    /// [`Timer`] stays on this thread. From another thread, use [`Handle::timer_new`].
    #[doc(alias = "aio_timer_new")]
    pub fn timer_new(&self, f: impl FnMut(&TimerRef<'_>) + 'static) -> Timer {
        Timer::new(self.handle.shared.clone(), Box::new(f))
    }

    /// Register (or replace) the handler of `fd` on this (home) thread: a [`FdHandler`] of either
    /// kind (its closures need not be `Send`).
    ///
    /// # Errors
    ///
    /// As [`Handle::set_fd_handler`].
    #[doc(alias = "aio_set_fd_handler")]
    pub fn set_fd_handler<K: Kind>(&self, fd: RawFd, h: FdHandler<K>) -> io::Result<()> {
        set_fd_handler(&self.handle, fd, h.erase()).map(drop)
    }

    /// The kernel faults injected so far: by the io_uring monitor
    /// ([`Builder::io_uring_faults`]) or the model kernel ([`ModelKernel::set_faults`]); zero
    /// otherwise.
    pub fn faults_injected(&self) -> FaultCounts {
        self.fdmon().faults_injected()
    }

    /// "ppoll", "epoll", "io_uring" or "model".
    pub fn backend_name(&self) -> &'static str {
        self.handle.shared.handlers.lock().fdmon.name()
    }

    /// The adaptive window of `fd`'s handler, if it is registered (diagnostics and tests).
    pub fn poll_ns(&self, fd: RawFd) -> Option<u64> {
        let h = self.handle.shared.handlers.lock().by_fd.get(&fd).cloned()?;
        Some(h.with_local(|l| l.poll_ns))
    }

    /// Whether `fd`'s handler is on the poll list.
    pub fn is_polled(&self, fd: RawFd) -> bool {
        let h = self.handle.shared.handlers.lock().by_fd.get(&fd).cloned();
        h.is_some_and(|h| h.with_local(|l| l.on_poll_list))
    }

    /// Whether `fd`'s handler has a registration the fd monitor refused to restore after a nested
    /// wait left it out (ENOMEM, ENOSPC, ...): until a retry before a later wait succeeds, the
    /// monitor does not watch the fd, and no wait blocks longer than 1 ms.
    pub fn is_unwatched(&self, fd: RawFd) -> bool {
        self.home.unsynced.borrow().iter().any(|h| h.fd == fd)
    }

    /// Whether poll mode is on (io_poll_begin was called and io_poll_end is due).
    pub fn poll_started(&self) -> bool {
        self.home.polling.started()
    }

    /// What the poller (`self.home.polling`) is lent for one call.
    #[inline]
    fn poll_env(&self) -> PollEnv<'_> {
        let s = &*self.handle.shared;
        PollEnv {
            ctx: self,
            params: &s.poll_params,
            clock: &*s.clock,
            notify: &s.notify,
            handlers: &s.handlers,
            nr_no_poll: &s.nr_no_poll,
        }
    }

    /// Run `f` with the context that is polling on this thread (the innermost one), if any: the way a
    /// callback reaches its context for a nested poll.
    #[doc(alias = "qemu_get_current_aio_context")]
    pub fn with_current<R>(f: impl FnOnce(&AioContext) -> R) -> Option<R> {
        let p = CURRENT.with(|c| c.get());
        // SAFETY:
        // - CURRENT is set only by `poll`/`dispatch` on this thread to `self` for the duration of the
        //   call (restored on exit, also on unwind), and `self` outlives that call; AioContext is
        //   !Send, so the pointer is never used on another thread.
        (!p.is_null()).then(|| f(unsafe { &*p }))
    }

    /// One iteration of the loop (QEMU `aio_poll`): run pending bottom halves, ready fd handlers and
    /// expired timers. With `blocking`, first wait until something is ready (a notify also ends the
    /// wait). Returns whether progress was made: a non-idle BH ran, a handler callback ran, or a timer
    /// fired. A notify alone is not progress.
    ///
    /// # Panics
    ///
    /// Only on a failure of the fd monitor's wait that is not a fault of the caller (EBADF/EFAULT on
    /// the monitor's own fd); these are bugs in aioctx.
    #[doc(alias = "aio_poll")]
    #[inline(always)]
    pub fn poll(&self, blocking: bool) -> bool {
        let s = &*self.handle.shared;
        // ORDERING: Relaxed, as `nr_user` in `poll_full` (a change is followed by a notify).
        if !blocking && s.quiet.load(Ordering::Relaxed) {
            return self.poll_quiet();
        }
        self.poll_full(blocking)
    }

    /// `poll(false)` with polling off and no user fd handler: exactly what `poll_full(false)` does
    /// then (no clock, no poll mode, no wait: a zero timeout with no user fd makes no syscall), as a
    /// short path inlined into the caller, so the common "run what was scheduled" iteration has no
    /// call frame; everything rare in it (nested slices, ready poll handlers, deleted handlers,
    /// timers) is out of line. (callgrind, `ci/bench`: 90 instructions per `schedule` + `poll(false)`, 2.05× the bare algorithm.)
    #[inline(always)]
    fn poll_quiet(&self) -> bool {
        let s = &*self.handle.shared;
        let walk = self.enter();
        crate::trace_step!(Step::CtxPollComputeTimeout, timeout = 0);
        if !planted!("accept_after_scan") {
            s.notify.accept(); // 8.
        }
        let mut progress = self.home.bhs.poll(&s.bh_list, self); // 10.
        if planted!("accept_after_scan") {
            s.notify.accept(); // planted bug: accept after the scan
        }
        if self.home.polling.has_ready() {
            progress |= self.dispatch_events(&[], 0);
        }
        // ORDERING: Relaxed, as in `poll_full`.
        if s.has_deleted.load(Ordering::Relaxed) {
            self.finalize_deleted_outermost();
        }
        drop(walk);
        progress | self.run_timers()
    }

    #[inline(never)]
    fn poll_full(&self, blocking: bool) -> bool {
        let s = &*self.handle.shared;
        let _walk = self.enter();
        let woken_at_start = self.home.polls_woken.get();

        // 3. The timeout: 0 when non-blocking or work is pending.
        // (Traced as one unit: the BH flags and timers it reads.)
        crate::traced!(Step::CtxPollComputeTimeout,
            let mut timeout = if blocking { self.compute_timeout() } else { Some(0) };
            timeout = timeout.map_or(-1, |t| t as i64));

        // 2, 4. Userspace polling with notify_me still 0 (poll.rs).
        let polling = s.poll_params.enabled();
        let start = if polling { s.clock.now_ns() } else { 0 };
        let polled = if polling {
            Some(self.home.polling.try_poll_mode(&self.poll_env(), &mut timeout, start))
        } else {
            None
        };
        // Progress is what ran (a handler io_poll found ready counts when its io_poll_ready runs,
        // in `dispatch_events`: one removed meanwhile runs nothing).
        let mut progress = false;

        // 5. Announce a blocking wait; a notify that came in while notify_me was 0 cancels it.
        let armed = timeout != Some(0);
        if armed && s.notify.arm() {
            timeout = Some(0);
        }

        // 6. Wait (leaving poll mode first if it will block). Decision (docs/protocol.md §6.1): a
        // non-blocking poll with user handlers still checks their fds once; with none it makes no
        // syscall at all (the context's own notifier is covered by `notified`).
        // ORDERING: Relaxed: a change of the count is followed by a notify, whose fences publish it.
        let waits = timeout != Some(0) || s.nr_user.load(Ordering::Relaxed) != 0;
        let mut events = Vec::new(); // no allocation unless a wait needs the buffer
        if waits {
            if self.home.has_unsynced() {
                self.resync(&mut timeout);
            }
            events = self.home.events.take();
            if timeout != Some(0) && self.home.polling.poll_mode_end(&self.poll_env()) {
                // The final poll after io_poll_end found an event: do not block.
                timeout = Some(0);
            }
            if timeout != Some(0) && self.home.polls_woken.get() != woken_at_start {
                // A callback this poll made before its wait (an io_poll, io_poll_begin or
                // io_poll_end that polls: never sensible, not forbidden) polled nested, and that
                // poll took a notification meant for this one (it accepted `notified` or drained
                // the notifier) or ran work, maybe the very work this one would wait for: do not
                // block (the caller looks again). Found by the generated workloads
                // (`FdSpec::bracket`): a remote's notify, taken by a poll nested in io_poll_begin,
                // left the outer poll blocked for good.
                timeout = Some(0);
            }
            if timeout != Some(0) && self.home.walk_depth.get() > 1 {
                self.nested_wait(timeout, &mut events);
            } else {
                self.wait(timeout, &mut events);
            }
        }

        // 7. The wait is over.
        if armed {
            s.notify.disarm();
        }
        // A notification taken here (accepted, or drained below) by a nested poll was maybe meant
        // for its outer poll's wait (`polls_woken`).
        let mut kicked = false;
        if !planted!("accept_after_scan") {
            kicked = s.notify.accept(); // 8.
        }

        // 9. Time spent polling and waiting (handler time excluded) for the adaptive window. Without a
        // wait, polling's last clock reading is the end (no clock read between a kick and its BH).
        let block_ns = match polled {
            None => 0,
            Some(p) => match p.end_ns {
                Some(end) if !waits => end,
                _ => s.clock.now_ns(),
            }
            .saturating_sub(start),
        };

        // 10. Drain the notifier, then BHs, then ready handlers (and io_poll_ready), then deleted
        // handlers, then timers. Decision (a finding of promela/external.pml): the eventfd is drained
        // BEFORE the work scan. QEMU drains it in the notifier's fd handler, after aio_bh_poll; then a
        // poll nested in an external loop's prepare/check window can eat a kick that arrived after its
        // scan and was meant for the external loop's own wait (planted bug `drain_after_scan`).
        let notifier = !events.is_empty() && take_notifier_event(&mut events);
        if notifier && !planted!("drain_after_scan") {
            s.notify.drain();
        }
        kicked |= notifier;
        progress |= self.home.bhs.poll(&s.bh_list, self);
        if planted!("accept_after_scan") {
            s.notify.accept(); // planted bug: accept after the scan
        }
        if planted!("drain_after_scan") && notifier {
            s.notify.drain(); // planted bug: drain after the scan
        }
        if polling {
            self.home.polling.notifier_dispatched(&s.poll_params, notifier, block_ns);
        }
        if !events.is_empty() || self.home.polling.has_ready() {
            progress |= self.dispatch_events(&events, block_ns);
        }
        if waits {
            events.clear();
            self.home.events.set(events);
        }
        // ORDERING: Relaxed, as `nr_user` above.
        if s.has_deleted.load(Ordering::Relaxed) {
            self.finalize_deleted_outermost();
        }
        drop(_walk);
        progress |= self.run_timers();
        // Counted at every depth: only the polls nested in another's pre-wait callbacks end
        // between that poll's start and its wait, so only they change what it compares.
        if progress || kicked {
            self.home.polls_woken.set(self.home.polls_woken.get() + 1);
        }
        progress
    }

    /// Enter a handler walk and make this the current context; undone on drop (also on unwind).
    #[inline]
    fn enter(&self) -> impl Drop + '_ {
        struct Walk<'a>(&'a AioContext, *const AioContext);
        impl Drop for Walk<'_> {
            #[inline]
            fn drop(&mut self) {
                let d = &self.0.home.walk_depth;
                d.set(d.get() - 1);
                if crate::sync::model_unwinding() {
                    return; // the model's execution is over; its thread-locals are gone
                }
                CURRENT.with(|c| c.set(self.1));
            }
        }
        let d = &self.home.walk_depth;
        // Timer callbacks run inside a walk, and each call's guard uncounts it, also on unwind:
        // outside every walk none runs (`timer_deadline` takes the cached deadline then).
        debug_assert!(
            d.get() != 0 || self.home.timers_running.get() == 0,
            "a timer counts as running outside every poll"
        );
        d.set(d.get() + 1);
        let prev = CURRENT.with(|c| c.replace(self as *const AioContext));
        Walk(self, prev)
    }

    /// `aio_compute_timeout`: Some(0) if a non-idle BH is pending (also in an outer slice), 10 ms if
    /// only idle ones, else the earliest timer, else None (infinite).
    fn compute_timeout(&self) -> Option<u64> {
        let s = &*self.handle.shared;
        let mut t = match self.home.bhs.pending(&s.bh_list) {
            Pending::Busy => return Some(0),
            Pending::Idle => Some(IDLE_BH_TIMEOUT_NS),
            Pending::None => None,
        };
        let earliest = self.timer_deadline();
        if earliest != u64::MAX {
            let d = earliest.saturating_sub(s.clock.now_ns());
            t = Some(t.map_or(d, |t| t.min(d)));
        }
        t
    }

    /// The earliest deadline of a timer this poll can call (`u64::MAX`: none). A poll nested in a
    /// timer callback cannot call that timer: its deadline is left out.
    #[inline]
    fn timer_deadline(&self) -> u64 {
        let s = &*self.handle.shared;
        if self.home.timers_running.get() == 0 {
            s.timers.earliest()
        } else {
            s.timers.earliest_callable()
        }
    }

    /// The fd monitor, refreshed from the handler table when it changed.
    pub(crate) fn fdmon(&self) -> Arc<Box<dyn FdMonitor>> {
        let s = &*self.handle.shared;
        // ORDERING: Relaxed: a change is followed by a notify, whose fences publish it.
        let gen = s.handlers_gen.load(Ordering::Relaxed);
        let mut c = self.home.fdmon.borrow_mut();
        if c.0 != gen {
            *c = (gen, s.handlers.lock().fdmon.clone());
        }
        c.1.clone()
    }

    fn wait(&self, timeout: Option<u64>, events: &mut Vec<Event>) {
        let fdmon = self.fdmon();
        if let Err(e) = fdmon.wait(timeout.map(Duration::from_nanos), events) {
            panic!("aioctx: {} wait failed: {e}", fdmon.name());
        }
        // Recorded when the wait returns (the trace lock is never held across a wait): it took
        // `timeout` and saw the notifier readable or not.
        crate::trace_step!(
            Step::CtxPollWait,
            timeout = timeout.map_or(-1, |t| t as i64),
            notifier = events.iter().any(|e| e.token == NOTIFIER_TOKEN),
            readable = events.iter().any(|e| e.token == NOTIFIER_TOKEN)
        );
    }

    /// A blocking wait of a nested poll: the fds of handlers whose callback is running further up the
    /// stack are out of it. Such a handler cannot run here, so its readiness (level-triggered: its
    /// fd stays ready until the running callback consumes it) must not end the wait; it would make
    /// the nested poll spin. Their interest is set to none for the wait and restored after it, under
    /// the table lock and only for a handler still registered (a concurrent `set_fd_handler` or
    /// `remove_fd_handler` wins). Restored, a still-ready fd is reported by the next wait after the
    /// callback returned. With no interest a registration reports nothing, not even a hang-up or
    /// an error (`FdMonitor::modify`), so a hung-up fd does not end the wait either.
    ///
    /// A restore the monitor refuses (ENOMEM; on epoll an EPOLL_CTL_ADD, which also meets
    /// ENOSPC, the per-user watch limit; a failed io_uring submission) would leave the fd unwatched
    /// while its handler waits for it: a lost wake-up. It is kept in `unsynced` and retried before
    /// every later wait ([`AioContext::resync`]).
    #[cold]
    fn nested_wait(&self, timeout: Option<u64>, events: &mut Vec<Event>) {
        let s = &*self.handle.shared;
        let running: Vec<Arc<AioHandler>> = {
            let t = s.handlers.lock();
            let running: Vec<_> =
                t.by_fd.values().filter(|h| h.with_local(|l| l.in_callback)).cloned().collect();
            for h in &running {
                // An error (the fd was closed under the running callback) leaves it as it is.
                let _ = t.fdmon.modify(h.fd, h.token, Interest::NONE);
            }
            running
        };
        self.wait(timeout, events);
        if !running.is_empty() {
            let t = s.handlers.lock();
            for h in &running {
                // Still registered: `retire` sets `deleted` under this lock.
                if !h.is_deleted() {
                    self.restore(&t, h);
                }
            }
        }
    }

    /// Restore `h`'s registration after a nested wait; one the monitor refuses is kept (once) in
    /// `unsynced` for [`AioContext::resync`].
    fn restore(&self, t: &HandlerTable, h: &Arc<AioHandler>) {
        if t.fdmon.modify(h.fd, h.token, h.interest()).is_ok() {
            return;
        }
        let mut unsynced = self.home.unsynced.borrow_mut();
        if !unsynced.iter().any(|u| Arc::ptr_eq(u, h)) {
            unsynced.push(h.clone());
        }
    }

    /// Retry the restores `nested_wait` could not make (under the table lock, for the handlers
    /// still registered). While one is still refused, no wait blocks longer than
    /// [`RESYNC_RETRY_NS`]: its fd is looked at again soon, by the next retry, instead of never.
    #[cold]
    fn resync(&self, timeout: &mut Option<u64>) {
        let t = self.handle.shared.handlers.lock();
        let mut unsynced = self.home.unsynced.borrow_mut();
        unsynced
            .retain(|h| !h.is_deleted() && t.fdmon.modify(h.fd, h.token, h.interest()).is_err());
        if !unsynced.is_empty() {
            *timeout = Some(timeout.map_or(RESYNC_RETRY_NS, |t| t.min(RESYNC_RETRY_NS)));
        }
    }

    /// Dispatch the events of a wait (the notifier's already taken out): run ready handlers and
    /// io_poll_ready. Returns progress.
    fn dispatch_events(&self, events: &[Event], block_ns: u64) -> bool {
        let mut ready = self.home.ready.take();
        if !events.is_empty() {
            let t = self.handle.shared.handlers.lock();
            for e in events.iter() {
                if let Some(h) = t.by_token.get(&e.token) {
                    ready.push((h.clone(), *e));
                }
            }
        }
        let (polling, env) = (&self.home.polling, self.poll_env());
        let mut progress = polling.dispatch_poll_ready(&env, block_ns);
        for (h, e) in ready.drain(..) {
            if polling.dispatch_handler(&env, &h, &e, block_ns) {
                progress = true;
            }
        }
        self.home.ready.set(ready);
        progress
    }

    /// `finalize_deleted`, if this is the outermost handler walk (a nested poll leaves them to it).
    #[cold]
    fn finalize_deleted_outermost(&self) {
        if self.home.walk_depth.get() == 1 {
            self.finalize_deleted();
        }
    }

    /// Finalise removed handlers: io_poll_end where polling had begun, then drop them.
    #[cold]
    fn finalize_deleted(&self) {
        let s = &*self.handle.shared;
        let dead = {
            let mut t = s.handlers.lock();
            // ORDERING: Relaxed, under the table lock.
            s.has_deleted.store(false, Ordering::Relaxed);
            std::mem::take(&mut t.deleted)
        };
        for h in dead {
            self.home.polling.poll_list_forget(self, &h);
        }
    }

    #[inline]
    fn run_timers(&self) -> bool {
        let s = &*self.handle.shared;
        if s.timers.earliest() == u64::MAX {
            return false;
        }
        self.run_timers_slow()
    }

    #[cold]
    fn run_timers_slow(&self) -> bool {
        let s = &*self.handle.shared;
        let _walk = self.enter();
        s.timers.run(self, s.clock.now_ns(), &self.home.timers_running)
    }

    // ---- external-loop integration (QEMU's GSource: prepare / check / dispatch) ----

    /// External loop, before it waits: returns how long it may block (None: until the context's fd,
    /// [`AsRawFd::as_raw_fd`], is readable). Sets `notify_me` bit 0 so notifiers write the eventfd,
    /// and leaves userspace poll mode. A context on ppoll moves to epoll here, so that one fd covers
    /// every handler. Must be followed by [`check`](AioContext::check).
    #[doc(alias = "aio_ctx_prepare")]
    pub fn prepare(&self) -> Option<Duration> {
        self.ensure_pollable_fd();
        let s = &*self.handle.shared;
        let notified = s.notify.prepare();
        // Traced as one unit, as in `poll` (the BH flags and timers it reads): Model:
        // external.pml#ctx_poll_compute_timeout (in ctx_prepare).
        crate::traced!(Step::CtxPollComputeTimeout,
            let mut t = self.compute_timeout();
            timeout = t.map_or(-1, |t| t as i64));
        if notified || self.home.polling.poll_mode_end(&self.poll_env()) {
            t = Some(0);
        }
        t.map(Duration::from_nanos)
    }

    /// External loop, after its wait: clears bit 0, accepts the notification, and says whether
    /// [`dispatch`](AioContext::dispatch) has work (BHs, ready fds, expired timers).
    #[doc(alias = "aio_ctx_check")]
    pub fn check(&self) -> bool {
        let s = &*self.handle.shared;
        s.notify.check();
        s.notify.accept();
        let mut events = self.home.events.take();
        events.clear();
        // ORDERING: Relaxed, as in `poll`.
        let has_fds = s.nr_user.load(Ordering::Relaxed) != 0;
        self.wait(Some(0), &mut events);
        if take_notifier_event(&mut events) {
            s.notify.drain();
        }
        let fd_ready = has_fds && !events.is_empty();
        self.home.events.set(events);
        fd_ready
            || self.home.bhs.pending(&s.bh_list) == Pending::Busy
            || self.timer_deadline() <= s.clock.now_ns()
            || self.home.polling.has_ready()
    }

    /// External loop: run what [`check`](AioContext::check) found. Returns progress.
    #[doc(alias = "aio_ctx_dispatch")]
    pub fn dispatch(&self) -> bool {
        let s = &*self.handle.shared;
        let walk = self.enter();
        let mut events = self.home.events.take();
        let mut progress = self.home.bhs.poll(&s.bh_list, self);
        progress |= self.dispatch_events(&events, 0);
        events.clear();
        self.home.events.set(events);
        // ORDERING: Relaxed, as in `poll`.
        if s.has_deleted.load(Ordering::Relaxed) {
            self.finalize_deleted_outermost();
        }
        drop(walk);
        progress | self.run_timers()
    }

    fn ensure_pollable_fd(&self) {
        #[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
        {
            let s = &*self.handle.shared;
            let mut t = s.handlers.lock();
            // ppoll has no single fd; io_uring's ring fd would not see re-arms made by `check` until
            // the next wait, so an external loop gets epoll (QEMU disables io_uring with a GSource).
            if matches!(t.fdmon.name(), "ppoll" | "io_uring") {
                if let Ok(ep) = crate::fdmon::Epoll::new() {
                    if t.switch_to(Box::new(ep)).is_ok() {
                        t.upgrade_at = 0;
                        // ORDERING: Relaxed, under the table lock; the caller's next poll reads it on this thread.
                        s.handlers_gen.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Remove the notifier's readiness from a wait's events; true if it was there.
fn take_notifier_event(events: &mut Vec<Event>) -> bool {
    let before = events.len();
    events.retain(|e| e.token != NOTIFIER_TOKEN);
    events.len() != before
}

impl AsRawFd for AioContext {
    /// The fd an external loop waits on: epoll's or io_uring's own fd (readable when any handler or the
    /// notifier is), else the event notifier's. Call [`AioContext::prepare`] first: it moves a ppoll
    /// context to epoll.
    fn as_raw_fd(&self) -> RawFd {
        let t = self.handle.shared.handlers.lock();
        t.fdmon.pollable_fd().unwrap_or(t.notifier_fd)
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // The tasks' futures first, while everything they may hold (timers, handlers) still works.
        self.tasks.drop_all();
        let s = &*self.handle.shared;
        // ORDERING: Release: pairs with the Acquire in `Handle::is_closed`.
        s.closed.store(true, Ordering::Release);
        self.home.bhs.drop_all(&s.bh_list);
        s.timers.clear();
        let handlers: Vec<_> = {
            let mut t = s.handlers.lock();
            let mut v: Vec<_> = t.by_fd.drain().map(|(_, h)| h).collect();
            v.append(&mut t.deleted);
            t.by_token.clear();
            for h in &v {
                let _ = t.fdmon.delete(h.fd, h.token);
            }
            v
        };
        for h in handlers {
            self.home.polling.poll_list_forget(self, &h);
        }
        self.home.polling.clear();
    }
}

impl AioContext {
    pub(crate) fn shared(&self) -> &Shared {
        &self.handle.shared
    }
    /// A BH whose closure is made from its own schedule handle (a task's waker holds it).
    pub(crate) fn bh_new_cyclic<C>(&self, f: impl FnOnce(crate::BhScheduler) -> C) -> Bh
    where
        C: FnMut(&BhRef<'_>) + 'static,
    {
        Bh::new_cyclic(self.handle.shared.clone(), f)
    }
    pub(crate) fn tasks(&self) -> &std::rc::Rc<crate::task::TaskSet> {
        &self.tasks
    }
    /// Make this the current context ([`AioContext::with_current`]) until the guard drops (`block_on`
    /// polling its future).
    pub(crate) fn enter_current(&self) -> impl Drop + '_ {
        struct Restore(*const AioContext);
        impl Drop for Restore {
            fn drop(&mut self) {
                if crate::sync::model_unwinding() {
                    return; // as in `enter`
                }
                CURRENT.with(|c| c.set(self.0));
            }
        }
        Restore(CURRENT.with(|c| c.replace(self as *const AioContext)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_ctx() -> AioContext {
        AioContext::builder().backend(Backend::Model(ModelKernel::new())).build().unwrap()
    }

    /// `aio_compute_timeout`: 0 with a pending BH, 10 ms with only an idle one, else the timer, else
    /// infinite.
    #[test]
    fn compute_timeout_idle_bh_caps_at_10ms() {
        let ctx = model_ctx();
        assert_eq!(ctx.compute_timeout(), None);
        let bh = ctx.bh_new(|_| {});
        bh.schedule_idle();
        assert_eq!(ctx.compute_timeout(), Some(IDLE_BH_TIMEOUT_NS));
        bh.schedule(); // QEMU semantics: OR-ing SCHEDULED keeps a pending BH idle
        assert_eq!(ctx.compute_timeout(), Some(IDLE_BH_TIMEOUT_NS));
        let busy = ctx.bh_new(|_| {});
        busy.schedule();
        assert_eq!(ctx.compute_timeout(), Some(0));
        assert!(ctx.poll(false));
        let t = ctx.timer_new(|_| {});
        t.mod_ns(ctx.now_ns() + 5_000_000);
        assert_eq!(ctx.compute_timeout(), Some(5_000_000));
        bh.schedule_idle();
        assert_eq!(
            ctx.compute_timeout(),
            Some(5_000_000),
            "the timer is earlier than the idle cap"
        );
    }

    /// A restore that the fd monitor refuses after a nested wait left the running handler's fd out
    /// is retried before every later wait, and until it succeeds no wait blocks longer than
    /// `RESYNC_RETRY_NS` (the fd would otherwise stay unwatched while its handler waits for it);
    /// once it succeeds, waits block as long as they need again.
    #[test]
    fn a_restore_the_monitor_refused_is_retried_before_each_wait() {
        use crate::{Faults, FdHandler};
        use std::cell::Cell;
        use std::rc::Rc;
        let k = ModelKernel::new();
        let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
        let fd = k.open();
        let nested = Rc::new(Cell::new(0));
        let n2 = nested.clone();
        let k2 = k.clone();
        // The nested poll's blocking wait ends at this timer (armed now: an arming from inside the
        // callback would notify, and a notified nested poll does not wait).
        let inner = Rc::new(ctx.timer_new(|_| {}));
        let i2 = inner.clone();
        ctx.set_fd_handler(
            fd,
            FdHandler::new().on_read(move |_| {
                k2.take_readable(fd);
                // A nested blocking poll: the fd is left out of its wait, then restored.
                AioContext::with_current(|c| while i2.is_pending() && c.poll(true) {});
                n2.set(n2.get() + 1);
            }),
        )
        .unwrap();
        inner.mod_ns(ctx.now_ns() + 1_000);
        k.set_readable(fd, true);
        // Every add / modify fails from now on: the leave-out (harmless: the fd stays watched) and
        // the restore (the fd would stay out).
        k.set_faults(Faults { register_fail: 1000, ..Faults::default() });
        assert!(ctx.poll(true));
        assert_eq!(nested.get(), 1);
        assert_eq!(ctx.home.unsynced.borrow().len(), 1, "the refused restore is kept");
        assert!(ctx.is_unwatched(fd) && !ctx.is_unwatched(fd + 1));
        let fired = Rc::new(Cell::new(false));
        let f2 = fired.clone();
        let late = ctx.timer_new(move |_| f2.set(true));
        let t0 = ctx.now_ns();
        late.mod_ns(t0 + 1_000_000_000);
        // Still refused: the wait is capped, the timer a second away is not reached.
        assert!(!ctx.poll(true));
        assert!(!fired.get() && ctx.now_ns() - t0 <= 2 * RESYNC_RETRY_NS, "{}", ctx.now_ns() - t0);
        assert_eq!(ctx.home.unsynced.borrow().len(), 1);
        // Accepted: the list empties and the wait blocks until the timer.
        k.set_faults(Faults::default());
        assert!(ctx.poll(true));
        assert!(fired.get() && ctx.home.unsynced.borrow().is_empty() && !ctx.is_unwatched(fd));
        k.set_readable(fd, true);
        assert!(ctx.poll(true), "the restored registration reports its fd");
        assert_eq!(nested.get(), 2);
    }

    /// With the model kernel, a blocking poll with only a timer pending waits until the deadline
    /// (the model clock jumps), then runs it: never early.
    #[test]
    fn model_clock_timer_fires_at_deadline() {
        let k = ModelKernel::new();
        let ctx = AioContext::builder().backend(Backend::Model(k.clone())).build().unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = fired.clone();
        let t = ctx.timer_new(move |_| f2.store(true, Ordering::Relaxed));
        t.mod_ns(1_000_000);
        while ctx.poll(false) {}
        assert!(!fired.load(Ordering::Relaxed));
        assert!(ctx.poll(true));
        assert!(fired.load(Ordering::Relaxed));
        assert!(k.clock().now_ns() >= 1_000_000);
    }
}
