//! The kernel boundary: what the protocol core needs from the operating system.
//!
//! The core (notify, bottom halves, the poll loop, handlers, timers) never makes a syscall itself. It
//! talks to three traits:
//!
//! | trait | production (`std` builds) | under loom / shuttle, and in deterministic tests |
//! |---|---|---|
//! | [`EventNotifier`] | eventfd (pipe fallback), `sys::EventFd` | [`ModelNotifier`]: a flag in the [`ModelKernel`] |
//! | [`FdMonitor`] | `fdmon::ppoll`, `fdmon::epoll` (io_uring: polling issue) | [`ModelFdMonitor`]: Mutex + Condvar over model fds |
//! | [`Clock`] | [`MonotonicClock`] (`CLOCK_MONOTONIC` via `Instant`) | [`ModelClock`]: advanced by waits that time out |
//!
//! As tokio swaps its I/O driver for a condvar parker under loom, the model kernel turns "the eventfd
//! is readable" into a flag under a facade mutex, and a blocking wait into a facade condvar wait, so the
//! checkers see every wake-up. A wait with a finite timeout is "returns when an fd is ready, or times out"
//! (the model clock jumps to the deadline): both outcomes are reachable through interleavings.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Condvar, Mutex};

/// What a handler waits for on its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Interest {
    /// Wake when readable (or hung up / in error).
    pub read: bool,
    /// Wake when writable (or hung up / in error).
    pub write: bool,
}

impl Interest {
    /// Neither readable nor writable.
    pub const NONE: Interest = Interest { read: false, write: false };
    /// Readable.
    pub const READ: Interest = Interest { read: true, write: false };
    /// Writable.
    pub const WRITE: Interest = Interest { read: false, write: true };
    /// Both.
    pub const BOTH: Interest = Interest { read: true, write: true };
    /// Neither bit set.
    pub fn is_empty(self) -> bool {
        !self.read && !self.write
    }
}

/// Readiness reported by an [`FdMonitor`] for one registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Readable (POLLIN), or hung up / in error (then both bits are set, as QEMU dispatches
    /// G_IO_HUP | G_IO_ERR to the read and the write handler).
    pub readable: bool,
    /// Writable (POLLOUT), or hung up / in error.
    pub writable: bool,
}

/// An event notifier: a level-triggered, pollable "something happened" flag (QEMU's EventNotifier).
pub trait EventNotifier: Send + Sync + std::fmt::Debug {
    /// Make the notifier readable. Setting an already-set notifier is not an error.
    fn set(&self) -> io::Result<()>;
    /// Clear it; return whether it was set.
    fn test_and_clear(&self) -> io::Result<bool>;
    /// The fd an [`FdMonitor`] waits on.
    fn fd(&self) -> RawFd;
}

/// An fd monitor (QEMU's FDMonOps): registrations from any thread, a wait on the home thread.
///
/// `add`, `modify` and `delete` are called with the context's handler lock held (so two of them never
/// race, and a backend switch sees a consistent set); `wait` is called on the home thread only, without
/// that lock.
pub trait FdMonitor: Send + Sync + std::fmt::Debug {
    /// "ppoll", "epoll", "io_uring" or "model".
    fn name(&self) -> &'static str;
    /// Start watching `fd` for `interest`, reporting it with `token`. Errors name the fd.
    fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Change what `fd` (registered with `token`) is watched for. With [`Interest::NONE`] the fd is
    /// not watched at all until modified again: nothing is reported for it, not even a hang-up or
    /// an error (which epoll and a poll SQE report whatever was asked; a nested wait relies on it).
    fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Stop watching `fd`. A closed fd is not an error here (the kernel forgot it already).
    fn delete(&self, fd: RawFd, token: u64) -> io::Result<()>;
    /// Wait until a registration is ready or `timeout` passes (`None`: forever; zero: just check).
    /// Appends ready registrations to `out`. EINTR is retried inside with the remaining time.
    fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()>;
    /// One fd that is readable whenever a registration is ready, for driving the context from another
    /// event loop (epoll's and io_uring's own fd); `None` for backends without one (ppoll, model).
    fn pollable_fd(&self) -> Option<RawFd> {
        None
    }
    /// Whether the backend reports fd readiness through memory the loop can poll from userspace
    /// (io_uring's completion ring). Only then do fd-only handlers get polled and idle poll handlers
    /// leave the poll list (docs/protocol.md §3).
    fn polls_readiness(&self) -> bool {
        false
    }
    /// The faults this monitor injected so far (see [`Faults`]).
    fn faults_injected(&self) -> FaultCounts {
        FaultCounts::default()
    }
    /// Number of registrations.
    fn len(&self) -> usize;
    /// No registrations.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A monotonic clock in nanoseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since an arbitrary fixed origin; never decreases.
    fn now_ns(&self) -> u64;
    /// Called by a model wait that timed out at `deadline_ns`; a real clock ignores it.
    fn advance_to(&self, _deadline_ns: u64) {}
}

/// `CLOCK_MONOTONIC` through `std::time::Instant` (the vDSO: no syscall).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        MonotonicClock { origin: std::time::Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to: by tests, by a model wait that times out, or by a fixed tick
/// on every read (so a polling loop always sees time pass).
#[derive(Debug, Default)]
pub struct ModelClock {
    ns: AtomicU64,
    tick: AtomicU64,
}

impl ModelClock {
    /// A clock at `ns`.
    pub fn new(ns: u64) -> Self {
        ModelClock { ns: AtomicU64::new(ns), tick: AtomicU64::new(0) }
    }
    /// Advance by `tick` ns on every read (0: only when told).
    pub fn set_tick(&self, tick: u64) {
        // ORDERING: Relaxed: configuration.
        self.tick.store(tick, Ordering::Relaxed);
    }
    /// Set the time (never backwards).
    pub fn set_ns(&self, ns: u64) {
        // ORDERING: Relaxed. The clock carries no data; whoever reads it synchronises through the
        // context's own protocol (a test sets it, then notifies). fetch_max keeps it monotonic.
        self.ns.fetch_max(ns, Ordering::Relaxed);
    }
    /// Move the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        // ORDERING: Relaxed, as in set_ns.
        self.ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for ModelClock {
    fn now_ns(&self) -> u64 {
        // ORDERING: Relaxed, as in set_ns.
        match self.tick.load(Ordering::Relaxed) {
            0 => self.ns.load(Ordering::Relaxed),
            t => self.ns.fetch_add(t, Ordering::Relaxed) + t,
        }
    }
    fn advance_to(&self, deadline_ns: u64) {
        self.set_ns(deadline_ns);
    }
}

impl Clock for Arc<ModelClock> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
    fn advance_to(&self, deadline_ns: u64) {
        (**self).advance_to(deadline_ns)
    }
}

/// The model kernel: model fds with a readable/writable flag each (and a hang-up), one lock and one
/// condvar. Used under
/// loom and shuttle (there is no kernel there) and by deterministic tests in std builds.
#[derive(Debug)]
pub struct ModelKernel {
    state: Mutex<KernelState>,
    cond: Condvar,
    clock: Arc<ModelClock>,
    polls_readiness: crate::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct KernelState {
    /// Model fd number -> its state.
    fds: Vec<ModelFd>,
    /// Registrations of the (single) model fd monitor: fd -> (token, interest).
    watched: Vec<Option<(u64, Interest)>>,
    /// Threads parked in the model fd monitor's wait (on `cond`, this lock released).
    parked: usize,
    /// Faults to inject ([`ModelKernel::set_faults`]), their PRNG, and what was injected.
    faults: FaultDraw,
    /// Calls of the model fd monitor's add, modify and delete
    /// ([`ModelKernel::registration_changes`]).
    changes: u64,
}

/// One model fd.
#[derive(Debug, Clone, Copy)]
struct ModelFd {
    /// Data to read (an "event").
    readable: bool,
    writable: bool,
    open: bool,
    /// Its peer is gone: readable (end of file) and writable (the error) for good, as POLLHUP.
    hung_up: bool,
}

/// Faults to inject, drawn from a seed, so a run is reproducible from it (the conformance workloads,
/// `aioctx_model::workload`). Rates are per 1000 calls; 0 turns a fault off. The model kernel
/// injects the first two ([`ModelKernel::set_faults`]), the io_uring monitor the last three
/// ([`Builder::io_uring_faults`](crate::Builder::io_uring_faults)); each ignores the others'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Seed of the draws.
    pub seed: u64,
    /// A wait that finds nothing ready returns at once with no event and the clock unmoved: a
    /// spurious wake-up (an EINTR the caller sees, or an io_uring completion for no registration).
    pub spurious_wake: u32,
    /// `add` and `modify` fail, with ENOMEM or EMFILE (even and odd draws), as epoll_ctl(2) and
    /// io_uring submission can.
    pub register_fail: u32,
    /// io_uring: an `io_uring_enter` fails at once with a transient error, submitting nothing:
    /// EINTR, EBUSY, EAGAIN, or (for a waiting one) ETIME, in turn. The monitor must absorb each
    /// (harvest, then go on) and lose no SQE.
    pub enter_fail: u32,
    /// io_uring: a completion is lost (dropped unread, the kernel's overflow counter moved, as when
    /// it cannot allocate an overflow entry even with IORING_FEAT_NODROP). The monitor must re-issue
    /// every poll (`resync`): a lost readiness is reported by the new one.
    pub cq_lost: u32,
    /// io_uring: a harvest stops after one completion and leaves the rest in the ring for the next
    /// `wait` (completions delayed).
    pub cq_delay: u32,
}

/// What was injected so far ([`ModelKernel::faults_injected`], [`AioContext::faults_injected`](crate::AioContext::faults_injected)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Spurious wake-ups returned by waits.
    pub spurious_wakes: u64,
    /// Failed `add` / `modify` calls.
    pub register_failures: u64,
    /// io_uring: failed `io_uring_enter` calls.
    pub enter_failures: u64,
    /// io_uring: completions dropped unread.
    pub completions_lost: u64,
    /// io_uring: harvests cut short.
    pub harvests_delayed: u64,
}

/// The faults to inject, their PRNG (xorshift64*, from [`Faults::seed`]), and what was injected.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultDraw {
    pub(crate) faults: Faults,
    rng: u64,
    pub(crate) injected: FaultCounts,
}

impl FaultDraw {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultDraw {
            faults,
            rng: faults.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            injected: FaultCounts::default(),
        }
    }

    /// Draw a fault with probability `per_mille` / 1000: `Some(random bits)` if it happens.
    pub(crate) fn draw(&mut self, per_mille: u32) -> Option<u64> {
        if per_mille == 0 {
            return None;
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r % 1000 < u64::from(per_mille)).then_some(r / 1000)
    }
}

/// Model fd numbers start here, so they are never mistaken for real fds in messages.
const MODEL_FD_BASE: RawFd = 1000;

impl ModelKernel {
    /// A kernel with no fds and a model clock at 0.
    pub fn new() -> Arc<Self> {
        Arc::new(ModelKernel {
            state: Mutex::new(KernelState::default()),
            cond: Condvar::new(),
            clock: Arc::new(ModelClock::new(0)),
            polls_readiness: crate::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Make the model fd monitor behave like io_uring for polling purposes ([`FdMonitor::polls_readiness`]):
    /// idle poll handlers leave the poll list. Set before building the context.
    pub fn set_polls_readiness(&self, on: bool) {
        // ORDERING: Relaxed: configuration, set before the context is built.
        self.polls_readiness.store(on, Ordering::Relaxed);
    }

    /// Inject `faults` from now on (set after building the context: its own registration is not
    /// failed). Reproducible from the seed for a given order of calls.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = FaultDraw::new(faults);
    }

    /// The faults injected so far.
    pub fn faults_injected(&self) -> FaultCounts {
        self.state.lock().faults.injected
    }

    fn register_fault(&self, s: &mut KernelState, fd: RawFd) -> io::Result<()> {
        let rate = s.faults.faults.register_fail;
        match s.faults.draw(rate) {
            None => Ok(()),
            Some(r) => {
                s.faults.injected.register_failures += 1;
                let (errno, name) = if r % 2 == 0 { (12, "ENOMEM") } else { (24, "EMFILE") };
                Err(io::Error::new(
                    io::Error::from_raw_os_error(errno).kind(),
                    format!(
                        "model fd {fd}: injected {name} ({})",
                        io::Error::from_raw_os_error(errno)
                    ),
                ))
            }
        }
    }

    /// How many registrations the model fd monitor has made, changed or removed (its add, modify
    /// and delete calls, failed ones included): one epoll_ctl each on epoll.
    pub fn registration_changes(&self) -> u64 {
        self.state.lock().changes
    }

    /// The kernel's clock.
    pub fn clock(&self) -> Arc<ModelClock> {
        self.clock.clone()
    }

    /// Open a model fd (not readable, writable).
    pub fn open(&self) -> RawFd {
        let mut s = self.state.lock();
        s.fds.push(ModelFd { readable: false, writable: true, open: true, hung_up: false });
        s.watched.push(None);
        MODEL_FD_BASE + (s.fds.len() as RawFd - 1)
    }

    /// Close a model fd: it stays in the table (numbers are never reused) but is no longer valid.
    pub fn close(&self, fd: RawFd) {
        let mut s = self.state.lock();
        if let Some(e) = Self::slot(&mut s, fd) {
            e.open = false;
        }
        if let Some(w) = s.watched.get_mut((fd - MODEL_FD_BASE) as usize) {
            *w = None;
        }
    }

    fn slot(s: &mut KernelState, fd: RawFd) -> Option<&mut ModelFd> {
        if fd < MODEL_FD_BASE {
            return None;
        }
        s.fds.get_mut((fd - MODEL_FD_BASE) as usize)
    }

    /// Set or clear `fd`'s readable flag (an "event" on it), waking a waiting monitor.
    pub fn set_readable(&self, fd: RawFd, readable: bool) {
        let mut s = self.state.lock();
        if let Some(e) = Self::slot(&mut s, fd) {
            e.readable = readable;
        }
        drop(s);
        if readable {
            self.cond.notify_all();
        }
    }

    /// Hang `fd` up (its peer closed): from now on it is readable and writable for good, a read finds
    /// the data written before, then the end of file ([`is_at_eof`](Self::is_at_eof)); a monitor
    /// reports it with both sides set (as POLLHUP), to a registration with any interest but none.
    /// Wakes a waiting monitor.
    pub fn hang_up(&self, fd: RawFd) {
        let mut s = self.state.lock();
        if let Some(e) = Self::slot(&mut s, fd) {
            e.hung_up = true;
        }
        drop(s);
        self.cond.notify_all();
    }

    /// Whether a read of `fd` finds the end of file: hung up, no data left.
    pub fn is_at_eof(&self, fd: RawFd) -> bool {
        let mut s = self.state.lock();
        Self::slot(&mut s, fd).is_some_and(|e| e.hung_up && !e.readable)
    }

    /// How many threads are blocked in the model fd monitor's wait: parked with no timeout while no
    /// watched fd is ready, so that only a change of an fd or of a registration can end their wait.
    /// Exact, not sampled (read under the kernel's lock): a harness that steps the threads itself
    /// (the conformance replay) tells "blocked in its wait" from "descheduled on its way to a gate"
    /// with it, whatever the machine's load.
    pub fn blocked_waiters(&self) -> usize {
        let s = self.state.lock();
        if s.parked == 0 {
            return 0;
        }
        let mut ready = Vec::new();
        ModelFdMonitor::ready(&s, &mut ready);
        if ready.is_empty() {
            s.parked
        } else {
            0 // about to return
        }
    }

    /// Whether `fd` is readable (data, or hung up).
    pub fn is_readable(&self, fd: RawFd) -> bool {
        let mut s = self.state.lock();
        Self::slot(&mut s, fd).is_some_and(|e| e.readable || e.hung_up)
    }

    /// Clear `fd`'s readable flag (read its data), returning whether it was set. A hung-up fd stays
    /// readable (the end of file).
    pub fn take_readable(&self, fd: RawFd) -> bool {
        let mut s = self.state.lock();
        match Self::slot(&mut s, fd) {
            Some(e) => std::mem::replace(&mut e.readable, false),
            None => false,
        }
    }

    fn check_open(s: &mut KernelState, fd: RawFd) -> io::Result<()> {
        match Self::slot(s, fd) {
            Some(e) if e.open => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("model fd {fd} is not open (EBADF)"),
            )),
        }
    }
}

/// An [`EventNotifier`] backed by a model fd.
#[derive(Debug)]
pub struct ModelNotifier {
    kernel: Arc<ModelKernel>,
    fd: RawFd,
}

impl ModelNotifier {
    /// A new notifier on a fresh model fd.
    pub fn new(kernel: Arc<ModelKernel>) -> Self {
        let fd = kernel.open();
        ModelNotifier { kernel, fd }
    }
}

impl EventNotifier for ModelNotifier {
    fn set(&self) -> io::Result<()> {
        self.kernel.set_readable(self.fd, true);
        Ok(())
    }
    fn test_and_clear(&self) -> io::Result<bool> {
        Ok(self.kernel.take_readable(self.fd))
    }
    fn fd(&self) -> RawFd {
        self.fd
    }
}

/// An [`FdMonitor`] over the model kernel's fds.
#[derive(Debug)]
pub struct ModelFdMonitor {
    kernel: Arc<ModelKernel>,
}

impl ModelFdMonitor {
    /// The monitor of `kernel` (one per kernel).
    pub fn new(kernel: Arc<ModelKernel>) -> Self {
        ModelFdMonitor { kernel }
    }

    fn ready(s: &KernelState, out: &mut Vec<Event>) {
        for (i, w) in s.watched.iter().enumerate() {
            if let Some((token, interest)) = *w {
                let ModelFd { readable: r, writable: wr, open, hung_up } = s.fds[i];
                // A hang-up is reported on both sides whatever was asked, but never to a
                // registration with no interest (the `FdMonitor::modify` contract).
                let hup = hung_up && open && !interest.is_empty();
                let readable = hup || interest.read && r && open;
                let writable = hup || interest.write && wr && open;
                if readable || writable {
                    out.push(Event { token, readable, writable });
                }
            }
        }
    }
}

impl FdMonitor for ModelFdMonitor {
    fn name(&self) -> &'static str {
        "model"
    }
    fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut s = self.kernel.state.lock();
        s.changes += 1;
        ModelKernel::check_open(&mut s, fd)?;
        self.kernel.register_fault(&mut s, fd)?;
        s.watched[(fd - MODEL_FD_BASE) as usize] = Some((token, interest));
        drop(s);
        self.kernel.cond.notify_all();
        Ok(())
    }
    fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.add(fd, token, interest)
    }
    fn delete(&self, fd: RawFd, _token: u64) -> io::Result<()> {
        let mut s = self.kernel.state.lock();
        s.changes += 1;
        if fd >= MODEL_FD_BASE {
            if let Some(w) = s.watched.get_mut((fd - MODEL_FD_BASE) as usize) {
                *w = None;
            }
        }
        Ok(())
    }
    fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let mut s = self.kernel.state.lock();
        loop {
            let before = out.len();
            Self::ready(&s, out);
            if out.len() > before {
                return Ok(());
            }
            let rate = s.faults.faults.spurious_wake;
            if timeout != Some(Duration::ZERO) && s.faults.draw(rate).is_some() {
                s.faults.injected.spurious_wakes += 1;
                return Ok(());
            }
            match timeout {
                Some(d) if d.is_zero() => return Ok(()),
                Some(d) => {
                    // Nothing ready now: take the "times out" branch. The other branch (woken by an
                    // event) is the interleaving in which the event came before this check.
                    let deadline = self.kernel.clock.now_ns().saturating_add(d.as_nanos() as u64);
                    self.kernel.clock.advance_to(deadline);
                    return Ok(());
                }
                None => {
                    s.parked += 1;
                    s = self.kernel.cond.wait(s);
                    s.parked -= 1;
                }
            }
        }
    }
    fn polls_readiness(&self) -> bool {
        // ORDERING: Relaxed: configuration, set before the context is built.
        self.kernel.polls_readiness.load(Ordering::Relaxed)
    }
    fn faults_injected(&self) -> FaultCounts {
        self.kernel.faults_injected()
    }
    fn len(&self) -> usize {
        self.kernel.state.lock().watched.iter().filter(|w| w.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model fd hung up behaves as a socket whose peer closed: the data written before is read
    /// first, then the end of file, readable for good; the monitor reports it on both sides to any
    /// registration with an interest, to one with none not at all.
    #[test]
    fn a_hung_up_model_fd_reads_its_data_then_eof_and_is_reported_unless_unwatched() {
        let k = ModelKernel::new();
        let m = ModelFdMonitor::new(k.clone());
        let fd = k.open();
        let wait = |m: &ModelFdMonitor| {
            let mut out = Vec::new();
            m.wait(Some(Duration::ZERO), &mut out).unwrap();
            out
        };
        m.add(fd, 7, Interest::NONE).unwrap();
        k.set_readable(fd, true);
        k.hang_up(fd);
        assert_eq!(wait(&m), [], "reported with no interest");
        assert!(k.is_readable(fd) && !k.is_at_eof(fd), "the data comes before the end of file");
        assert!(k.take_readable(fd));
        assert!(k.is_readable(fd) && k.is_at_eof(fd) && !k.take_readable(fd));
        for (interest, token) in [(Interest::READ, 8), (Interest::WRITE, 9)] {
            m.modify(fd, token, interest).unwrap();
            let ev = wait(&m);
            assert!(
                ev.len() == 1 && ev[0].token == token && ev[0].readable && ev[0].writable,
                "{interest:?}: {ev:?}"
            );
        }
        m.modify(fd, 10, Interest::NONE).unwrap();
        assert_eq!(wait(&m), [], "still reported once unwatched");
        assert!(k.is_readable(fd), "the end of file is for good");
    }
}
