//! [`IoUring`]: the io_uring(7) fd monitor, QEMU's preferred backend where the kernel allows it.
//!
//! Each registration is one one-shot `IORING_OP_POLL_ADD`, re-armed after each completion, so the
//! monitor stays level-triggered like ppoll and epoll: an fd that is still ready when it is re-armed
//! completes again at once. Completions land in the completion ring, which the loop can read without
//! a syscall ([`FdMonitor::polls_readiness`] is true).
//!
//! One exception: the kernel adds POLLRDHUP to every poll, and a one-shot poll of a half-closed
//! stream socket that is watched for nothing (or for a write that cannot proceed) would complete at
//! once with nothing to report, forever. Such a registration is re-armed as a multishot poll, which
//! completes on wake-ups only, until one reports; then it goes back to one-shot.
//!
//! # Protocol
//!
//! Only the home thread touches the ring: `add`, `modify` and `delete` (any thread, under the context's
//! handler lock) only change the registration table and put the slot on the dirty list; `wait` pushes
//! the SQEs of dirty slots at its start and submits them with its own `io_uring_enter`. The context
//! notifies after every change, so a `wait` blocked in the kernel returns and picks the change up.
//! Every field below is under the table's facade mutex (`wait` holds the ring mutex, then the table
//! mutex only while it pushes SQEs or harvests completions, never while it blocks).
//!
//! | `Slot` field | set by | cleared by |
//! |---|---|---|
//! | `live` | `add` (a free or new slot) | `delete` |
//! | `want_arm` | `add`, `modify`, harvest (re-arm after a completion) | `delete`; `push_dirty` (POLL_ADD pushed) |
//! | `polling` | `push_dirty` (POLL_ADD of `gen` pushed) | harvest (its completion); `modify`/`delete` (POLL_REMOVE queued) |
//! | `want_remove` | `modify`/`delete` of a polling slot: the generation to cancel | `push_dirty` (POLL_REMOVE pushed) |
//! | `gen` | bumped by `modify` of a polling slot and by reuse of a freed slot | never |
//! | `inflight` | `push_dirty`: +1 per pushed SQE | harvest: -1 per last completion of an SQE (no IORING_CQE_F_MORE) |
//! | `failed` | harvest of an error completion (EBADF, ...) | `modify` |
//! | `multishot` | harvest of a completion with only unrequested bits (POLLRDHUP) | harvest of a reporting completion; `modify` |
//! | `parked` | harvest: multishot refused (EINVAL, Linux < 5.13) | `modify` |
//!
//! A completion's `user_data` is `kind | gen << 32 | slot index`, never a pointer. A POLL_ADD
//! completion counts as an event only if its slot is live, its generation is the slot's current one
//! and the slot is `polling`; anything else is the late completion of a cancelled or superseded poll
//! and is dropped. A deleted slot is freed (its index reusable) only when `inflight` is 0: nothing
//! the kernel may still complete names a reused slot (bug-history B23).
//!
//! # Model
//!
//! None: the ring is kernel state. The context's protocol sees this monitor only through
//! [`FdMonitor`], which the model kernel (`kernel::ModelFdMonitor`) stands in for under loom and
//! shuttle. Covered by the shared `fd_monitor_suite!` plus the tests at the end of this file.
//!
//! # Upstream
//!
//! QEMU `util/fdmon-io_uring.c`: `fdmon_io_uring_update` (queue the change, here a dirty slot),
//! `fill_sq_ring` (here `push_dirty`), `process_cq_ring` / `process_cqe` (here `harvest`),
//! `fdmon_io_uring_wait` (`io_uring_submit_and_wait` with a timeout, EINTR retried: "aio-posix:
//! signal-proof fdmon-io_uring"), `fdmon_io_uring_need_wait` (here [`IoUring::need_wait`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use ::io_uring::{opcode, types};

use super::{interest_bits, revents_to_event};
use crate::kernel::{Event, FaultCounts, FaultDraw, Faults, FdMonitor, Interest};
use crate::sync::Mutex;
use crate::sys::{fd_is_open, with_context};

/// Submission ring entries (the completion ring gets twice as many).
const ENTRIES: u32 = 128;

/// The longest single kernel wait; a longer timeout waits again for the rest (a timespec this size
/// converts exactly on every kernel).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// `user_data` layout: kind in bits 62..63, generation in bits 32..61, slot index in bits 0..31.
const KIND_SHIFT: u32 = 62;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u32 = (1 << 30) - 1;
/// A slot's POLL_ADD.
const KIND_POLL: u64 = 0;
/// A slot's POLL_REMOVE.
const KIND_REMOVE: u64 = 1;
/// The wait's IORING_OP_TIMEOUT (kernels without IORING_FEAT_EXT_ARG).
const KIND_TIMEOUT: u64 = 2;

fn user_data(kind: u64, idx: u32, gen: u32) -> u64 {
    kind << KIND_SHIFT | u64::from(gen & GEN_MASK) << GEN_SHIFT | u64::from(idx)
}

/// (kind, slot index, generation) of a `user_data`.
fn decode(ud: u64) -> (u64, u32, u32) {
    (ud >> KIND_SHIFT, ud as u32, (ud >> GEN_SHIFT) as u32 & GEN_MASK)
}

/// One registration (or a deleted one whose SQEs the kernel has not completed yet).
#[derive(Debug, Clone, Copy)]
struct Slot {
    fd: RawFd,
    token: u64,
    interest: Interest,
    /// Generation of the current POLL_ADD (30 bits, wrapping).
    gen: u32,
    /// Registered: not deleted.
    live: bool,
    /// A POLL_ADD of `gen` is pushed and its completion not harvested.
    polling: bool,
    /// A POLL_ADD of `gen` must be pushed.
    want_arm: bool,
    /// A POLL_REMOVE of the POLL_ADD of this generation must be pushed.
    want_remove: Option<u32>,
    /// Pushed SQEs naming this slot whose completions have not been harvested.
    inflight: u32,
    /// On the dirty list.
    dirty: bool,
    /// The last POLL_ADD failed (EBADF, ...): reported once, not re-armed until modified.
    failed: bool,
    /// The POLL_ADD of `gen` is (to be) multishot: see [`Table::harvest`].
    multishot: bool,
    /// A multishot poll was refused (before Linux 5.13): not re-armed until modified.
    parked: bool,
}

impl Slot {
    /// A POLL_ADD is to be pushed: an arm was asked for, the registration is live, and it watches
    /// something. With no interest the fd is not polled at all, as ppoll leaves it out: a poll for
    /// no events still completes on a hang-up or an error, and a registration with no interest
    /// reports nothing (a nested wait sets it so for the handler whose callback runs).
    fn arms(&self) -> bool {
        self.want_arm && self.live && !self.interest.is_empty()
    }
}

/// The registrations; changed from any thread, read by `wait` on the home thread.
#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    /// Indices of freed slots.
    free: Vec<u32>,
    /// Live registrations by fd.
    by_fd: HashMap<RawFd, u32>,
    /// Slots with SQEs to push; each at most once (`Slot::dirty`), so bounded by `slots.len()`.
    dirty: Vec<u32>,
    /// Statistic: completions of current polls that reported nothing.
    quiet_completions: u64,
}

impl Table {
    fn mark_dirty(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Free `idx` if it is deleted and nothing the kernel may still complete names it.
    fn maybe_free(&mut self, idx: u32) {
        let s = &self.slots[idx as usize];
        if !s.live && s.inflight == 0 && s.want_remove.is_none() && !s.dirty {
            self.free.push(idx);
        }
    }

    /// Queue the cancellation of the slot's current POLL_ADD, if one is pushed. The new generation
    /// makes its completion (a late event or -ECANCELED) recognisably stale.
    fn cancel_poll(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if s.polling {
            s.polling = false;
            s.want_remove = Some(s.gen);
            s.gen = s.gen.wrapping_add(1) & GEN_MASK;
            self.mark_dirty(idx);
        }
    }

    fn not_registered(fd: RawFd) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("io_uring: fd {fd} is not registered"))
    }

    /// Completions were lost (the kernel's CQ overflow counter moved): re-issue every live poll.
    /// A poll whose completion was lost gets a fresh one; a lost POLL_REMOVE completion only keeps its
    /// slot from ever being freed (a leak of one index, never a reuse while the kernel holds it).
    fn resync(&mut self) {
        for idx in 0..self.slots.len() as u32 {
            let s = &self.slots[idx as usize];
            if s.live && s.polling {
                self.cancel_poll(idx);
                self.slots[idx as usize].want_arm = true;
            }
        }
    }

    /// Apply one completion (`more`: IORING_CQE_F_MORE, a multishot poll that stays armed); a ready
    /// registration is appended to `out`.
    fn harvest(&mut self, ud: u64, res: i32, more: bool, out: &mut Vec<Event>) {
        let (kind, idx, gen) = decode(ud);
        if kind == KIND_TIMEOUT {
            return;
        }
        let Some(s) = self.slots.get_mut(idx as usize) else {
            panic!("io_uring: completion for unknown slot {idx} (user_data {ud:#x})");
        };
        if !more {
            // The SQE's last completion: nothing the kernel holds names it any more.
            s.inflight = s.inflight.checked_sub(1).unwrap_or_else(|| {
                panic!("io_uring: inflight underflow on slot {idx} (user_data {ud:#x}, res {res})")
            });
        }
        if kind == KIND_POLL && s.live && s.polling && s.gen == gen {
            let ev = revents_to_event(s.token, res.max(0) as u32);
            let ready = res >= 0 && (ev.readable || ev.writable);
            if ready {
                out.push(ev);
            }
            if more {
                // The multishot poll is still armed. Once it reports, go back to a level-triggered
                // one-shot poll; until then, keep waiting for a wake-up that brings a wanted bit.
                if ready {
                    self.cancel_poll(idx);
                    let s = &mut self.slots[idx as usize];
                    s.multishot = false;
                    s.want_arm = true;
                }
            } else {
                s.polling = false;
                if ready {
                    s.multishot = false;
                    s.want_arm = true;
                } else if res >= 0 {
                    // Only bits nobody asked for: POLLRDHUP, which the kernel always adds (a stream
                    // socket whose peer shut down writing, watched for nothing or for a write that
                    // cannot proceed). It persists, so a one-shot poll would complete at once
                    // forever and `wait` would spin. Re-arm as a multishot poll, which completes
                    // only on wake-ups (more data, write space, close) that may bring a wanted bit.
                    s.multishot = true;
                    s.want_arm = true;
                } else if res == -libc::ECANCELED {
                    // Not cancelled by us (that poll's generation is stale): the kernel cancels a
                    // thread's requests when it exits. Re-arm from this thread.
                    s.want_arm = true;
                } else if res == -libc::EINVAL && s.multishot {
                    // No multishot poll (before Linux 5.13): parked until modified, not spinning.
                    s.multishot = false;
                    s.parked = true;
                } else {
                    // EBADF (closed before the POLL_ADD was submitted), ENOMEM, ...: the handler
                    // hears of it as a hang-up, once, as ppoll's POLLNVAL. Not re-armed until
                    // modified.
                    s.failed = true;
                    out.push(Event { token: s.token, readable: true, writable: true });
                }
                if s.want_arm {
                    self.mark_dirty(idx);
                }
            }
            if !ready {
                self.quiet_completions += 1;
            }
        }
        // Otherwise a stale poll (superseded by modify, deleted) or a POLL_REMOVE (0, -ENOENT when its
        // target had completed, -EALREADY when it was completing): nothing to report.
        self.maybe_free(idx);
    }
}

/// The ring and what only `wait` (the home thread) touches.
struct RingState {
    ring: ::io_uring::IoUring,
    /// Timeouts through `IORING_ENTER_EXT_ARG` (Linux 5.11+), else an `IORING_OP_TIMEOUT` SQE.
    ext_arg: bool,
    /// The IORING_OP_TIMEOUT's timespec. The kernel reads it when it submits the SQE, which can be a
    /// later enter than the one it was pushed for (if that one failed with EBUSY): boxed, so its
    /// address stays valid as long as the ring.
    timeout_ts: Box<types::Timespec>,
    /// The kernel's count of dropped completions, as last seen.
    dropped: u32,
    /// Statistics: submits because the SQ was full, enters that moved held-back (overflowed)
    /// completions into the CQ.
    sq_full_submits: u64,
    overflow_flushes: u64,
    /// Faults to inject ([`IoUring::with_faults`]).
    faults: Option<FaultDraw>,
    /// Tests: the next waiting enter fails with this errno.
    #[cfg(test)]
    fail_next_enter: Option<i32>,
}

impl RingState {
    /// An injected `io_uring_enter` failure, drawn before the call (nothing is submitted): EINTR,
    /// EBUSY, EAGAIN and, for an enter that waits, ETIME, in turn.
    fn enter_fault(&mut self, waits: bool) -> Option<io::Error> {
        #[cfg(test)]
        if let Some(errno) = self.fail_next_enter.take_if(|_| waits) {
            return Some(io::Error::from_raw_os_error(errno));
        }
        let f = self.faults.as_mut()?;
        let r = f.draw(f.faults.enter_fail)?;
        f.injected.enter_failures += 1;
        let errnos: &[i32] = if waits {
            &[libc::EINTR, libc::EBUSY, libc::EAGAIN, libc::ETIME]
        } else {
            &[libc::EINTR, libc::EBUSY, libc::EAGAIN]
        };
        Some(io::Error::from_raw_os_error(errnos[(r % errnos.len() as u64) as usize]))
    }
}

/// Draw `rate` (one of `Faults`' io_uring rates) from `faults`; counted in `count` if it happens.
fn fault(
    faults: &mut Option<FaultDraw>,
    rate: fn(&Faults) -> u32,
    count: fn(&mut FaultCounts) -> &mut u64,
) -> bool {
    let Some(f) = faults.as_mut() else { return false };
    let hit = f.draw(rate(&f.faults)).is_some();
    if hit {
        *count(&mut f.injected) += 1;
    }
    hit
}

/// The io_uring(7) [`FdMonitor`]: one-shot `IORING_OP_POLL_ADD`s, re-armed after each completion.
///
/// Changes made while `wait` blocks take effect at the next `wait` (the context's notify after each
/// change ends the blocking one). A deleted fd may stay referenced by the kernel (its poll holds the
/// file) until the next `wait` submits the POLL_REMOVE. A registered fd closed without delete stays
/// watched through the in-flight poll; once that completes, the re-arm fails with EBADF, which is
/// reported once as readable and writable (a hang-up), then not re-armed until modified.
///
/// # Examples
///
/// ```
/// use aioctx::fdmon::IoUring;
/// use aioctx::kernel::{EventNotifier, FdMonitor, Interest};
/// use aioctx::sys::EventFd;
/// use std::time::Duration;
///
/// let m = match IoUring::new() {
///     Ok(m) => m,
///     Err(e) => { eprintln!("no io_uring here: {e}"); return Ok(()); }
/// };
/// let e = EventFd::new()?;
/// m.add(e.fd(), 1, Interest::READ)?;
/// e.set()?;
/// let mut out = Vec::new();
/// m.wait(Some(Duration::from_secs(1)), &mut out)?;
/// assert_eq!(out[0].token, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "fdmon_io_uring_ops")]
pub struct IoUring {
    /// Locked by `wait`, `flush` and `need_wait` (home thread): never contended by add / delete.
    ring: Mutex<RingState>,
    table: Mutex<Table>,
    ring_fd: RawFd,
}

/// Explain an `io_uring_setup` failure, so the caller can log why it falls back to epoll.
fn setup_error(e: io::Error, entries: u32) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => {
            "io_uring is not available (kernel without CONFIG_IO_URING, or a \
                               seccomp filter returning ENOSYS)"
        }
        Some(libc::EPERM) => {
            "io_uring is not permitted (sysctl kernel.io_uring_disabled, or a \
                              seccomp filter such as a container runtime's default profile)"
        }
        Some(libc::ENOMEM) => {
            "cannot allocate the rings (before Linux 5.12 they count against \
                               RLIMIT_MEMLOCK, often 64 KiB)"
        }
        Some(libc::EMFILE | libc::ENFILE) => "no file descriptor left for the ring",
        Some(libc::EINVAL) => "the kernel rejected the ring parameters",
        _ => "io_uring_setup failed",
    };
    let kind = match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL) => io::ErrorKind::Unsupported,
        Some(libc::EPERM) => io::ErrorKind::PermissionDenied,
        _ => e.kind(),
    };
    with_context(e, kind, format!("io_uring_setup({entries} entries): {why}"))
}

fn unsupported(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what)
}

/// EBUSY (completions the kernel holds back until the CQ has room) and EAGAIN (no memory for a
/// request right now): harvest, then try again.
fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN))
}

impl IoUring {
    /// A ring of 128 entries, after checking that the kernel can serve as an fd monitor.
    ///
    /// # Errors
    ///
    /// Why io_uring cannot be used here, for the builder to log before falling back to epoll:
    /// io_uring_setup failing (ENOSYS: not built in or filtered; EPERM: `io_uring_disabled` or
    /// seccomp; ENOMEM: RLIMIT_MEMLOCK on kernels before 5.12), no IORING_REGISTER_PROBE (before
    /// 5.6), IORING_OP_POLL_ADD / POLL_REMOVE / TIMEOUT missing, no IORING_FEAT_NODROP, or a
    /// first io_uring_enter failing. Under Miri (no io_uring emulation): Unsupported.
    pub fn new() -> io::Result<Self> {
        Self::with_entries(ENTRIES)
    }

    /// As [`IoUring::new`] with `entries` submission entries (a power of two, 1 to 32768); the
    /// completion ring gets twice as many. More ready fds than that are not lost: the kernel holds
    /// the overflow (IORING_FEAT_NODROP) and `wait` moves it in.
    ///
    /// # Errors
    ///
    /// As [`IoUring::new`].
    pub fn with_entries(entries: u32) -> io::Result<Self> {
        Self::build(entries, true)
    }

    /// As [`IoUring::new`], injecting `faults` (their io_uring rates: `enter_fail`, `cq_lost`,
    /// `cq_delay`) from the seed: the kernel faults a caller must survive, on demand, for tests.
    ///
    /// # Errors
    ///
    /// As [`IoUring::new`], or InvalidInput if `enter_fail` or `cq_lost` is 1000 or more (every
    /// enter failing, or every completion lost, never makes progress).
    pub fn with_faults(faults: Faults) -> io::Result<Self> {
        if faults.enter_fail >= 1000 || faults.cq_lost >= 1000 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("io_uring faults {faults:?}: enter_fail and cq_lost must be below 1000"),
            ));
        }
        let m = Self::new()?;
        m.ring.lock().faults = Some(FaultDraw::new(faults));
        Ok(m)
    }

    /// The faults injected so far (all zero without [`IoUring::with_faults`]).
    pub fn faults_injected(&self) -> FaultCounts {
        self.ring.lock().faults.as_ref().map(|f| f.injected).unwrap_or_default()
    }

    fn build(entries: u32, allow_ext_arg: bool) -> io::Result<Self> {
        if cfg!(miri) {
            return Err(unsupported("io_uring: not available under Miri".to_owned()));
        }
        let ring = ::io_uring::IoUring::new(entries).map_err(|e| setup_error(e, entries))?;
        let mut probe = ::io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            let what = "io_uring: IORING_REGISTER_PROBE failed (Linux 5.6+ needed)".to_owned();
            with_context(e, io::ErrorKind::Unsupported, what)
        })?;
        let params = ring.params();
        let ext_arg = allow_ext_arg && params.is_feature_ext_arg();
        let mut needed = vec![
            (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
            (opcode::PollRemove::CODE, "IORING_OP_POLL_REMOVE"),
        ];
        if !ext_arg {
            needed
                .push((opcode::Timeout::CODE, "IORING_OP_TIMEOUT (no IORING_FEAT_EXT_ARG either)"));
        }
        for (code, name) in needed {
            if !probe.is_supported(code) {
                return Err(unsupported(format!("io_uring: the kernel does not support {name}")));
            }
        }
        if !params.is_feature_nodrop() {
            return Err(unsupported(
                "io_uring: no IORING_FEAT_NODROP (Linux 5.5+): a full completion ring would drop \
                 events"
                    .to_owned(),
            ));
        }
        let ring_fd = ring.as_raw_fd();
        let mut rs = RingState {
            ring,
            ext_arg,
            timeout_ts: Box::default(),
            dropped: 0,
            sq_full_submits: 0,
            overflow_flushes: 0,
            faults: None,
            #[cfg(test)]
            fail_next_enter: None,
        };
        // One NOP through io_uring_enter: a filter can allow setup and still refuse enter.
        let nop = opcode::Nop::new().build().user_data(user_data(KIND_TIMEOUT, 0, 0));
        // SAFETY:
        // - a NOP references no memory.
        unsafe { rs.ring.submission().push(&nop) }.expect("a new ring has room for one SQE");
        rs.ring.submit_and_wait(1).map_err(|e| {
            with_context(e, io::ErrorKind::Other, format!("io_uring_enter(ring fd {ring_fd})"))
        })?;
        rs.ring.completion().for_each(drop);
        rs.dropped = rs.ring.completion().overflow();
        Ok(IoUring { ring: Mutex::new(rs), table: Mutex::new(Table::default()), ring_fd })
    }

    /// Whether `wait` must run before the registrations are fully reflected in the completion ring:
    /// completions are waiting to be harvested, or changes and re-arms to be submitted. A userspace
    /// polling loop ends when this is true (QEMU's `fdmon_io_uring_need_wait`). Home thread.
    pub fn need_wait(&self) -> bool {
        let mut rs = self.ring.lock();
        !rs.ring.completion().is_empty()
            || rs.ring.submission().cq_overflow()
            || !rs.ring.submission().is_empty()
            || !self.table.lock().dirty.is_empty()
    }

    /// Submit pending changes and re-arms now, without harvesting, so the ring fd
    /// ([`FdMonitor::pollable_fd`]) covers every registration. An external loop calls this before it
    /// sleeps on the ring fd (from its prepare step): otherwise the fds reported by the last `wait`
    /// are re-armed only by the next `wait`, and their next event would not wake it. Home thread.
    ///
    /// # Errors
    ///
    /// io_uring_enter failing other than with EINTR, EBUSY or EAGAIN (those leave the rest for the
    /// next `wait`).
    pub fn flush(&self) -> io::Result<()> {
        let mut rs = self.ring.lock();
        let rs = &mut *rs;
        self.push_dirty(rs)?;
        self.submit(rs)
    }

    /// Push the SQEs of dirty slots, submitting when the SQ is full. Returns false if some remain
    /// (the kernel would not take more yet: harvest first).
    fn push_dirty(&self, rs: &mut RingState) -> io::Result<bool> {
        let mut t = self.table.lock();
        while let Some(&idx) = t.dirty.last() {
            let s = t.slots[idx as usize];
            // Every path that marks a slot dirty leaves it wanting an arm exactly while it is live
            // (`add`, `modify`, `resync` and `harvest` set `want_arm` on a live slot, `delete`
            // clears both), and only this loop clears `want_arm` of a live one.
            debug_assert_eq!(
                s.want_arm, s.live,
                "dirty slot {idx} wants an arm while deleted, or none while live"
            );
            let need = usize::from(s.want_remove.is_some()) + usize::from(s.arms());
            let room = |rs: &mut RingState| {
                let sq = rs.ring.submission();
                sq.capacity() - sq.len()
            };
            if room(rs) < need {
                rs.sq_full_submits += 1;
                self.submit(rs)?;
                if room(rs) < need {
                    return Ok(false);
                }
            }
            t.dirty.pop();
            let mut sq = rs.ring.submission();
            let s = &mut t.slots[idx as usize];
            s.dirty = false;
            if let Some(gen) = s.want_remove.take() {
                let target = user_data(KIND_POLL, idx, gen);
                let e = opcode::PollRemove::new(target).build().user_data(user_data(
                    KIND_REMOVE,
                    idx,
                    gen,
                ));
                // SAFETY:
                // - POLL_REMOVE references no memory: its target is a user_data number.
                unsafe { sq.push(&e) }.expect("room checked above");
                s.inflight += 1;
            }
            if s.arms() {
                let e = opcode::PollAdd::new(types::Fd(s.fd), interest_bits(s.interest))
                    .multi(s.multishot)
                    .build()
                    .user_data(user_data(KIND_POLL, idx, s.gen));
                // SAFETY:
                // - POLL_ADD references no memory; the fd is a number the kernel resolves when it
                //   submits the SQE (a closed one completes with -EBADF).
                unsafe { sq.push(&e) }.expect("room checked above");
                s.polling = true;
                s.inflight += 1;
            }
            s.want_arm = false;
            drop(sq);
            t.maybe_free(idx);
        }
        Ok(true)
    }

    /// Submit the SQ without waiting (with GETEVENTS when the kernel holds overflowed completions,
    /// which moves them into the CQ). EBUSY / EAGAIN leave the SQEs queued for the next attempt.
    fn submit(&self, rs: &mut RingState) -> io::Result<()> {
        loop {
            let r = match rs.enter_fault(false) {
                Some(e) => Err(e),
                None => rs.ring.submit(),
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_busy(&e) => return Ok(()),
                Err(e) => return Err(self.enter_error(e)),
            }
        }
    }

    fn enter_error(&self, e: io::Error) -> io::Error {
        with_context(e, io::ErrorKind::Other, format!("io_uring_enter(ring fd {})", self.ring_fd))
    }

    /// Submit the SQ and block until a completion or `left` passes (None: forever). A signal
    /// (EINTR), the timeout (ETIME) and EBUSY return Ok: the caller harvests and decides.
    fn submit_and_wait(&self, rs: &mut RingState, left: Option<Duration>) -> io::Result<()> {
        if let Some(e) = rs.enter_fault(true) {
            return self.enter_result(Err(e));
        }
        let r = match left {
            None => rs.ring.submit_and_wait(1),
            Some(d) if rs.ext_arg => {
                let ts = types::Timespec::from(d.min(MAX_WAIT));
                let args = types::SubmitArgs::new().timespec(&ts);
                rs.ring.submitter().submit_with_args(1, &args)
            }
            Some(d) => {
                if rs.ring.submission().is_full() {
                    self.submit(rs)?;
                    if rs.ring.submission().is_full() {
                        return Ok(()); // harvest first; the caller loops
                    }
                }
                *rs.timeout_ts = types::Timespec::from(d.min(MAX_WAIT));
                // count = 1: the timeout also completes at the first other completion, so it never
                // outlives this wait by more than one completion (no IORING_OP_TIMEOUT_REMOVE).
                let e = opcode::Timeout::new(&*rs.timeout_ts)
                    .count(1)
                    .build()
                    .user_data(user_data(KIND_TIMEOUT, 0, 0));
                // SAFETY:
                // - the timespec is boxed in `rs`, which lives as long as the ring, and is only
                //   rewritten by a later wait of this thread (then the SQE, if still unsubmitted, reads
                //   the newer remaining time: fine); the kernel copies it when it submits the SQE.
                unsafe { rs.ring.submission().push(&e) }.expect("room checked above");
                rs.ring.submit_and_wait(1)
            }
        };
        self.enter_result(r)
    }

    /// What a waiting `io_uring_enter`'s result means for `wait`.
    fn enter_result(&self, r: io::Result<usize>) -> io::Result<()> {
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_busy(&e) => Ok(()),
            Err(e) => Err(self.enter_error(e)),
        }
    }

    /// Harvest every completion, including those the kernel held back on CQ overflow.
    fn harvest_all(&self, rs: &mut RingState, out: &mut Vec<Event>) -> io::Result<()> {
        loop {
            {
                let mut t = self.table.lock();
                let mut lost = false;
                for cqe in rs.ring.completion() {
                    if fault(&mut rs.faults, |f| f.cq_lost, |c| &mut c.completions_lost) {
                        lost = true; // injected: dropped unread
                    } else {
                        let more = ::io_uring::cqueue::more(cqe.flags());
                        t.harvest(cqe.user_data(), cqe.result(), more, out);
                    }
                    if fault(&mut rs.faults, |f| f.cq_delay, |c| &mut c.harvests_delayed) {
                        break; // injected: the rest waits for the next harvest
                    }
                }
                let dropped = rs.ring.completion().overflow();
                if dropped != rs.dropped || lost {
                    // Only without NODROP memory: lost completions, identity unknown.
                    rs.dropped = dropped;
                    t.resync();
                }
            }
            if !rs.ring.submission().cq_overflow() {
                return Ok(());
            }
            // IORING_FEAT_NODROP kept completions the CQ had no room for; an enter with GETEVENTS
            // (the io-uring crate adds it when the overflow flag is set) moves them in.
            rs.overflow_flushes += 1;
            self.submit(rs)?;
        }
    }

    #[cfg(test)]
    fn without_ext_arg() -> io::Result<Self> {
        Self::build(ENTRIES, false)
    }

    /// Deleted slots not freed yet, and the dirty list's length.
    #[cfg(test)]
    fn pending(&self) -> (usize, usize) {
        let t = self.table.lock();
        let freed = t.free.len();
        let dead = t.slots.iter().filter(|s| !s.live).count();
        (dead - freed, t.dirty.len())
    }
}

impl fmt::Debug for IoUring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.table.lock();
        f.debug_struct("IoUring")
            .field("ring_fd", &self.ring_fd)
            .field("len", &t.by_fd.len())
            .field("slots", &t.slots.len())
            .field("dirty", &t.dirty.len())
            .finish_non_exhaustive()
    }
}

impl FdMonitor for IoUring {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    /// Takes effect at the next `wait` (the caller notifies the loop after it).
    ///
    /// # Errors
    ///
    /// `fd` not open (EBADF, kind InvalidInput) or already registered (AlreadyExists); both messages
    /// name the fd.
    fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        fd_is_open(fd)?;
        let mut t = self.table.lock();
        if t.by_fd.contains_key(&fd) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("io_uring: fd {fd} is already registered"),
            ));
        }
        let mut slot = Slot {
            fd,
            token,
            interest,
            gen: 0,
            live: true,
            polling: false,
            want_arm: true,
            want_remove: None,
            inflight: 0,
            dirty: false,
            failed: false,
            multishot: false,
            parked: false,
        };
        let idx = match t.free.pop() {
            Some(idx) => {
                // Freed only with nothing in flight; a new generation all the same.
                slot.gen = t.slots[idx as usize].gen.wrapping_add(1) & GEN_MASK;
                t.slots[idx as usize] = slot;
                idx
            }
            None => {
                let idx = u32::try_from(t.slots.len()).expect("io_uring: more than 2^32 slots");
                t.slots.push(slot);
                idx
            }
        };
        t.by_fd.insert(fd, idx);
        t.mark_dirty(idx);
        Ok(())
    }

    /// POLL_REMOVE of the current poll plus a POLL_ADD with the new mask, at the next `wait`; a failed
    /// registration is re-armed.
    ///
    /// # Errors
    ///
    /// `fd` not registered (NotFound, naming the fd).
    fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut t = self.table.lock();
        let idx = *t.by_fd.get(&fd).ok_or_else(|| Table::not_registered(fd))?;
        t.cancel_poll(idx);
        let s = &mut t.slots[idx as usize];
        s.token = token;
        s.interest = interest;
        s.failed = false;
        s.multishot = false;
        s.parked = false;
        s.want_arm = true;
        t.mark_dirty(idx);
        Ok(())
    }

    /// Never fails: the POLL_REMOVE names the poll, not the fd, so a closed fd is fine. The slot is
    /// kept until the kernel has completed everything that names it.
    fn delete(&self, fd: RawFd, _token: u64) -> io::Result<()> {
        let mut t = self.table.lock();
        if let Some(idx) = t.by_fd.remove(&fd) {
            t.cancel_poll(idx);
            let s = &mut t.slots[idx as usize];
            s.live = false;
            s.want_arm = false;
            t.maybe_free(idx);
        }
        Ok(())
    }

    /// Home thread only. Submits pending changes and re-arms, then harvests; blocks (through the
    /// ext-arg timeout, or an IORING_OP_TIMEOUT on older kernels) until an event or the deadline.
    /// Completions that report nothing (stale polls, removals, a signal) never end a wait early.
    ///
    /// # Errors
    ///
    /// io_uring_enter failing other than with EINTR, ETIME, EBUSY or EAGAIN, naming the ring fd.
    fn wait(&self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let before = out.len();
        // None: forever, or past what Instant holds.
        let deadline = timeout.and_then(|d| Instant::now().checked_add(d));
        let mut rs = self.ring.lock();
        let rs = &mut *rs;
        loop {
            let all_pushed = self.push_dirty(rs)?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let last = left == Some(Duration::ZERO);
            if last
                || !all_pushed
                || !rs.ring.completion().is_empty()
                || rs.ring.submission().cq_overflow()
            {
                // Something to harvest already, or no time to wait: submit (inline completions of
                // fds that are ready land now) and harvest without blocking.
                self.submit(rs)?;
            } else {
                self.submit_and_wait(rs, left)?;
            }
            self.harvest_all(rs, out)?;
            if out.len() > before || last {
                return Ok(());
            }
        }
    }

    /// The ring fd: readable while the completion ring holds completions. Caveat: changes and the
    /// re-arms of fds reported by the last `wait` reach the kernel only at the next `wait` or
    /// [`IoUring::flush`]; an external loop must call `flush` before sleeping on this fd.
    fn pollable_fd(&self) -> Option<RawFd> {
        Some(self.ring_fd)
    }

    fn polls_readiness(&self) -> bool {
        true
    }

    fn faults_injected(&self) -> FaultCounts {
        IoUring::faults_injected(self)
    }

    fn len(&self) -> usize {
        self.table.lock().by_fd.len()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::mpsc;

    use super::*;
    use crate::fdmon::suite::{high_dup, Pipe};
    use crate::sync::{thread, Arc};
    use crate::sys::{cvt, os_error, EventFd};

    const LONG: Option<Duration> = Some(Duration::from_secs(5));

    /// A monitor, or None with the reason printed (a kernel or sandbox without io_uring). With
    /// `AIOCTX_REQUIRE_IO_URING=1` (CI on a kernel known to have it) the reason is a failure instead.
    fn ring_or_skip(r: io::Result<IoUring>) -> Option<IoUring> {
        match r {
            Ok(m) => Some(m),
            Err(e) if std::env::var_os("AIOCTX_REQUIRE_IO_URING").is_some() => {
                panic!("AIOCTX_REQUIRE_IO_URING is set but io_uring is unavailable: {e}")
            }
            Err(e) => {
                eprintln!("skipping io_uring test: {e}");
                None
            }
        }
    }

    fn new() -> Option<IoUring> {
        ring_or_skip(IoUring::new())
    }

    fn wait(m: &IoUring, timeout: Option<Duration>) -> Vec<Event> {
        let mut out = Vec::new();
        m.wait(timeout, &mut out).unwrap();
        out
    }

    fd_monitor_suite!(maybe new());

    /// The same suite with IORING_OP_TIMEOUT instead of the ext-arg timeout (kernels before 5.11).
    mod timeout_op {
        use super::*;
        fd_monitor_suite!(maybe ring_or_skip(IoUring::without_ext_arg()));
    }

    fn faulty(enter_fail: u32, cq_lost: u32, cq_delay: u32) -> Option<IoUring> {
        let f = Faults { seed: 7, enter_fail, cq_lost, cq_delay, ..Faults::default() };
        ring_or_skip(IoUring::with_faults(f))
    }

    /// Level-triggered through the faults: a readable pipe is reported by each of 20 waits.
    fn a_ready_pipe_is_reported_by_every_wait(m: &IoUring) {
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        p.write();
        for _ in 0..20 {
            assert_eq!(wait(m, LONG), [Event { token: 1, readable: true, writable: false }]);
        }
    }

    /// The suite but for its "still readable in a zero-timeout wait" check: an enter refused with
    /// EBUSY or EAGAIN takes no SQE, so a wait that may not block cannot re-arm, and reports the
    /// fd at the next wait instead (as with the kernel's own EBUSY).
    mod enter_faults {
        use super::*;
        fd_monitor_suite!(transient faulty(400, 0, 0));

        #[test]
        fn injected() {
            let Some(m) = faulty(400, 0, 0) else { return };
            a_ready_pipe_is_reported_by_every_wait(&m);
            assert!(m.faults_injected().enter_failures > 0, "{:?}", m.faults_injected());
        }
    }

    /// Every lost completion is made good by re-issuing the polls (`resync`).
    mod lost_completions {
        use super::*;
        fd_monitor_suite!(maybe faulty(0, 300, 0));

        #[test]
        fn injected() {
            let Some(m) = faulty(0, 300, 0) else { return };
            a_ready_pipe_is_reported_by_every_wait(&m);
            assert!(m.faults_injected().completions_lost > 0, "{:?}", m.faults_injected());
        }
    }

    mod delayed_completions {
        use super::*;
        fd_monitor_suite!(maybe faulty(0, 0, 500));

        #[test]
        fn injected() {
            let Some(m) = faulty(0, 0, 500) else { return };
            let pipes: Vec<Pipe> = (0..8).map(|_| Pipe::new()).collect();
            for (i, p) in pipes.iter().enumerate() {
                m.add(p.rfd(), i as u64, Interest::READ).unwrap();
                p.write();
            }
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..8 {
                seen.extend(wait(&m, LONG).iter().map(|e| e.token));
            }
            assert_eq!(seen.len(), 8, "{seen:?}");
            assert!(m.faults_injected().harvests_delayed > 0, "{:?}", m.faults_injected());
        }
    }

    /// A hard `io_uring_enter` error (not EINTR, ETIME, EBUSY, EAGAIN) fails the wait, naming the
    /// ring fd; the transient ones never do.
    #[test]
    fn a_hard_enter_error_fails_the_wait() {
        let Some(m) = new() else { return };
        m.ring.lock().fail_next_enter = Some(libc::EFAULT);
        let mut out = Vec::new();
        let e = m.wait(Some(Duration::from_millis(1)), &mut out).unwrap_err();
        assert!(e.to_string().contains(&format!("ring fd {}", m.ring_fd)), "{e}");
        assert!(e.to_string().contains("Bad address"), "{e}");
    }

    #[test]
    fn faults_of_every_enter_or_completion_are_refused() {
        for f in [(1000, 0), (0, 1000)] {
            let faults = Faults { enter_fail: f.0, cq_lost: f.1, ..Faults::default() };
            let e = IoUring::with_faults(faults).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }

    /// A ring without IORING_FEAT_EXT_ARG (kernels before 5.11, or `without_ext_arg`) times its
    /// waits with an IORING_OP_TIMEOUT, whose timespec the ring keeps: the `timeout_op` suite above
    /// runs that path, not the ext-arg one.
    #[test]
    fn without_ext_arg_a_timed_wait_uses_a_timeout_op() {
        let Some(m) = ring_or_skip(IoUring::without_ext_arg()) else { return };
        let unset = format!("{:?}", *m.ring.lock().timeout_ts);
        assert!(wait(&m, Some(Duration::from_millis(3))).is_empty());
        let set = format!("{:?}", *m.ring.lock().timeout_ts);
        assert_ne!(unset, set, "the timed wait did not go through IORING_OP_TIMEOUT");
        // With ext-arg (Linux 5.11+), the timeout goes with the wait itself: no extra SQE per wait.
        let Some(m) = new() else { return };
        if m.ring.lock().ext_arg {
            let unset = format!("{:?}", *m.ring.lock().timeout_ts);
            assert!(wait(&m, Some(Duration::from_millis(3))).is_empty());
            assert_eq!(format!("{:?}", *m.ring.lock().timeout_ts), unset, "an IORING_OP_TIMEOUT");
        }
    }

    #[test]
    fn user_data_round_trips() {
        for (kind, idx, gen) in
            [(KIND_POLL, 0, 0), (KIND_REMOVE, u32::MAX, GEN_MASK), (KIND_TIMEOUT, 7, 3)]
        {
            assert_eq!(decode(user_data(kind, idx, gen)), (kind, idx, gen));
        }
        // Generations wrap within their 30 bits.
        assert_eq!(decode(user_data(KIND_POLL, 1, GEN_MASK + 1)), (KIND_POLL, 1, 0));
    }

    /// A table with one live registration whose (multishot if `multishot`) POLL_ADD of generation 0
    /// is in flight.
    fn one_polling_slot(multishot: bool) -> Table {
        let mut t = Table::default();
        t.slots.push(Slot {
            fd: 5,
            token: 9,
            interest: Interest::READ,
            gen: 0,
            live: true,
            polling: true,
            want_arm: false,
            want_remove: None,
            inflight: 1,
            dirty: false,
            failed: false,
            multishot,
            parked: false,
        });
        t.by_fd.insert(5, 0);
        t
    }

    /// Each cancellation (a modify or a re-arm of a polling registration) moves the slot to a
    /// generation it has not had since (until the 30 bits wrap), so a late completion of any
    /// earlier poll is recognisably stale.
    #[test]
    fn cancelled_polls_never_share_a_generation() {
        let mut t = one_polling_slot(false);
        let mut seen = std::collections::HashSet::from([t.slots[0].gen]);
        for _ in 0..1000 {
            t.slots[0].polling = true;
            t.cancel_poll(0);
            assert!(seen.insert(t.slots[0].gen), "generation {} again", t.slots[0].gen);
        }
    }

    /// The error completions of a poll that the handler must not hear of as a hang-up: the kernel
    /// cancelled it (the submitting thread exited: re-armed), or it has no multishot poll (before
    /// Linux 5.13: parked until modified, not spinning). Any other error is reported once, a
    /// one-shot poll's EINVAL included.
    #[test]
    fn harvest_error_completions() {
        let ud = user_data(KIND_POLL, 0, 0);
        let mut out = Vec::new();
        let mut t = one_polling_slot(false);
        t.harvest(ud, -libc::ECANCELED, false, &mut out);
        assert!(out.is_empty(), "ECANCELED reported: {out:?}");
        let s = t.slots[0];
        assert!(s.want_arm && !s.failed && !s.polling, "{s:?}");

        let mut t = one_polling_slot(true);
        t.harvest(ud, -libc::EINVAL, false, &mut out);
        assert!(out.is_empty(), "EINVAL of a multishot poll reported: {out:?}");
        let s = t.slots[0];
        assert!(s.parked && !s.multishot && !s.failed && !s.want_arm, "{s:?}");

        // Only a multishot poll's EINVAL means "no multishot": a one-shot poll's (a mask or a
        // file the kernel cannot poll) is an error like the others, reported once.
        for errno in [libc::EBADF, libc::EINVAL] {
            out.clear();
            let mut t = one_polling_slot(false);
            t.harvest(ud, -errno, false, &mut out);
            assert_eq!(out, [Event { token: 9, readable: true, writable: true }], "errno {errno}");
            let s = t.slots[0];
            assert!(s.failed && !s.parked && !s.want_arm, "errno {errno}: {s:?}");
        }
    }

    /// A resync (completions were lost) re-issues the polls in flight, and only those: a
    /// registration whose poll failed (reported once) or is parked stays as it is until modified,
    /// and a POLL_REMOVE names the old generation, never the current one.
    #[test]
    fn resync_reissues_only_polls_in_flight() {
        let ud = user_data(KIND_POLL, 0, 0);
        let mut out = Vec::new();
        let mut t = one_polling_slot(false);
        t.harvest(ud, -libc::EBADF, false, &mut out); // failed: reported once
        let mut t2 = one_polling_slot(true);
        t2.harvest(ud, -libc::EINVAL, false, &mut out); // parked
        for (t, what) in [(&mut t, "failed"), (&mut t2, "parked")] {
            let before = t.slots[0];
            t.resync();
            let s = t.slots[0];
            assert!(!s.want_arm && s.want_remove.is_none() && s.gen == before.gen, "{what}: {s:?}");
        }
        let mut t = one_polling_slot(false);
        t.resync();
        let s = t.slots[0];
        assert!(s.want_arm && s.want_remove == Some(0) && s.gen == 1 && !s.polling, "{s:?}");
        // A late completion of the cancelled poll, and the POLL_REMOVE's own (generation 0): stale,
        // nothing reported.
        out.clear();
        t.slots[0].inflight += 1; // the POLL_REMOVE, as `push_dirty` would count it
        t.harvest(ud, libc::POLLIN as i32, false, &mut out);
        t.harvest(user_data(KIND_REMOVE, 0, 0), 0, false, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn setup_errors_say_why() {
        let msg = |errno| setup_error(io::Error::from_raw_os_error(errno), 128).to_string();
        assert!(msg(libc::EPERM).contains("seccomp"), "{}", msg(libc::EPERM));
        assert!(msg(libc::ENOSYS).contains("CONFIG_IO_URING"), "{}", msg(libc::ENOSYS));
        assert!(msg(libc::ENOMEM).contains("RLIMIT_MEMLOCK"), "{}", msg(libc::ENOMEM));
        let e = setup_error(io::Error::from_raw_os_error(libc::EPERM), 128);
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(os_error(&e), Some(libc::EPERM));
        // A kernel that rejects the parameters (flags it does not know) has no usable io_uring.
        assert!(msg(libc::EINVAL).contains("ring parameters"), "{}", msg(libc::EINVAL));
        let e = setup_error(io::Error::from_raw_os_error(libc::EINVAL), 128);
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        for errno in [libc::EMFILE, libc::ENFILE] {
            assert!(msg(errno).contains("no file descriptor"), "{}", msg(errno));
        }
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOSYS), 128);
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn delete_while_poll_in_flight_and_fd_ready_reports_nothing_after() {
        let Some(m) = new() else { return };
        const TOKEN: u64 = 0xDE1E7E;
        for round in 0..300u64 {
            let p = Arc::new(Pipe::new());
            let token = TOKEN + round;
            m.add(p.rfd(), token, Interest::READ).unwrap();
            assert!(wait(&m, Some(Duration::ZERO)).is_empty()); // POLL_ADD in flight, not ready
                                                                // The poll completes before the delete (its completion is in the CQ, the POLL_REMOVE
                                                                // finds nothing), races with the delete and with the wait that submits the POLL_REMOVE
                                                                // (another thread writes), or is cancelled (no write).
            if round % 3 == 0 {
                p.write();
            }
            let writer = (round % 3 == 1).then(|| {
                let p = p.clone();
                let delay = Duration::from_micros(round % 5 * 40);
                thread::spawn(move || {
                    std::thread::sleep(delay);
                    p.write();
                })
            });
            m.delete(p.rfd(), token).unwrap();
            for _ in 0..2 {
                let ev = wait(&m, Some(Duration::from_micros(100)));
                assert!(ev.iter().all(|e| e.token != token), "round {round}: {ev:?}");
            }
            if let Some(w) = writer {
                w.join().unwrap();
            }
            let ev = wait(&m, Some(Duration::from_millis(1)));
            assert!(ev.iter().all(|e| e.token != token), "round {round}: {ev:?}");
            drop(p); // closed after delete, maybe before the kernel completed the POLL_REMOVE
        }
        // Every deleted slot's completions arrive, then the slot is free.
        for _ in 0..100 {
            if m.pending() == (0, 0) {
                break;
            }
            wait(&m, Some(Duration::from_millis(1)));
        }
        assert_eq!(m.pending(), (0, 0));
        assert!(m.is_empty());
        // Slots are reused: 300 rounds needed at most a few.
        assert!(m.table.lock().slots.len() <= 3, "{m:?}");
    }

    #[test]
    fn add_and_delete_from_another_thread_during_blocking_wait() {
        let Some(m) = new() else { return };
        let m = Arc::new(m);
        const NOTIFIER: u64 = 1;
        const PIPE: u64 = 2;
        let notifier = Arc::new(EventFd::new().unwrap());
        m.add(notifier.fd(), NOTIFIER, Interest::READ).unwrap();
        let p = Arc::new(Pipe::new());
        let (tx, rx) = mpsc::channel::<&'static str>();
        let home = {
            let (m, notifier, p) = (m.clone(), notifier.clone(), p.clone());
            thread::spawn(move || {
                // Phase 1: blocked with only the notifier; the pipe arrives from the other thread.
                let mut seen_pipe = false;
                while !seen_pipe {
                    for e in wait(&m, None) {
                        match e.token {
                            NOTIFIER => assert!(notifier.test_and_clear().unwrap()),
                            PIPE => seen_pipe = true,
                            t => panic!("unexpected token {t}"),
                        }
                    }
                }
                let mut buf = [0u8; 8];
                // SAFETY:
                // - `buf` is writable for its length; the read end is open while `p` lives.
                let n = unsafe { libc::read(p.rfd(), buf.as_mut_ptr().cast(), buf.len()) };
                assert_eq!(n, 1);
                tx.send("pipe seen").unwrap();
                // Phase 2: blocked again; the pipe is deleted, then written, then we are notified.
                let ev = wait(&m, None);
                assert!(ev.iter().all(|e| e.token == NOTIFIER), "{ev:?}");
                assert!(notifier.test_and_clear().unwrap());
                let ev = wait(&m, Some(Duration::from_millis(50)));
                assert!(ev.is_empty(), "deleted pipe reported: {ev:?}");
                tx.send("done").unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(50)); // let it block in the kernel
        p.write();
        m.add(p.rfd(), PIPE, Interest::READ).unwrap();
        notifier.set().unwrap(); // the context's notify after a change
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "pipe seen");
        std::thread::sleep(Duration::from_millis(50));
        m.delete(p.rfd(), PIPE).unwrap();
        p.write();
        notifier.set().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "done");
        home.join().unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn thousand_registrations_one_ready_reported() {
        let Some(m) = new() else { return };
        let fds: Vec<EventFd> = (0..1000).map(|_| EventFd::new().unwrap()).collect();
        for (i, e) in fds.iter().enumerate() {
            m.add(e.fd(), i as u64, Interest::READ).unwrap();
        }
        assert_eq!(m.len(), 1000);
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        fds[617].set().unwrap();
        assert_eq!(wait(&m, LONG), [Event { token: 617, readable: true, writable: false }]);
        fds[617].test_and_clear().unwrap();
        assert!(wait(&m, Some(Duration::from_millis(5))).is_empty());
        fds[3].set().unwrap();
        fds[999].set().unwrap();
        let mut tokens: Vec<u64> = wait(&m, LONG).iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [3, 999]);
    }

    #[test]
    fn cq_overflow_more_ready_than_cq_entries_all_reported() {
        // 4 SQ entries, so 8 CQ entries, and 100 ready fds: the kernel holds the overflow.
        let Some(m) = ring_or_skip(IoUring::with_entries(4)) else { return };
        let p = Pipe::new();
        p.write();
        let dups: Vec<OwnedFd> = (0..100).map(|_| p.r.try_clone().unwrap()).collect();
        for (i, d) in dups.iter().enumerate() {
            m.add(d.as_raw_fd(), i as u64, Interest::READ).unwrap();
        }
        for round in 0..3 {
            let mut seen = vec![0u32; dups.len()];
            for _ in 0..dups.len() {
                for e in wait(&m, LONG) {
                    seen[e.token as usize] += 1;
                }
                if seen.iter().all(|&n| n > 0) {
                    break;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "round {round}: reports per token {seen:?}");
        }
        let rs = m.ring.lock();
        assert_eq!(rs.dropped, 0, "the kernel dropped completions");
        assert!(rs.overflow_flushes > 0, "the CQ never overflowed: the test tests nothing");
    }

    #[test]
    fn overflowed_submission_queue_is_submitted_in_batches() {
        // 2 SQ entries and 50 registrations: push_dirty submits whenever the SQ fills, and only then.
        let Some(m) = ring_or_skip(IoUring::with_entries(2)) else { return };
        let fds: Vec<EventFd> = (0..50).map(|_| EventFd::new().unwrap()).collect();
        for (i, e) in fds.iter().enumerate() {
            m.add(e.fd(), i as u64, Interest::READ).unwrap();
        }
        fds[49].set().unwrap();
        fds[0].set().unwrap();
        let mut tokens: Vec<u64> = wait(&m, LONG).iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [0, 49]);
        // Submitted early only when the next change does not fit: after every 2 of the 50 POLL_ADDs
        // but the last two (the wait's own enter takes those).
        assert_eq!(m.ring.lock().sq_full_submits, 24, "io_uring_enter calls for a full SQ");
    }

    /// A deleted registration's slot is freed once the kernel has completed what names it, and a
    /// deleted one is never polled again: a registration added and deleted again and again (a
    /// handler replaced on every request) keeps the table at a few slots.
    #[test]
    fn add_and_delete_again_and_again_reuses_slots() {
        let Some(m) = new() else { return };
        let e = EventFd::new().unwrap(); // never set: a poll of it completes only when removed
        for i in 0..100 {
            m.add(e.fd(), i, Interest::READ).unwrap();
            assert!(wait(&m, Some(Duration::ZERO)).is_empty()); // polling
            m.delete(e.fd(), i).unwrap();
            assert!(wait(&m, Some(Duration::ZERO)).is_empty()); // removed
        }
        let slots = m.table.lock().slots.len();
        assert!(slots <= 4, "{slots} slots for one registration at a time");
    }

    /// `flush` pushes every change, also when each needs the whole SQ (a modify of a polling
    /// registration: POLL_REMOVE + POLL_ADD on a ring of 2 entries): it submits and goes on, so the
    /// ring fd an external loop then sleeps on covers every registration.
    #[test]
    fn flush_pushes_every_change_when_each_fills_the_sq() {
        let Some(m) = ring_or_skip(IoUring::with_entries(2)) else { return };
        let fds: Vec<EventFd> = (0..3).map(|_| EventFd::new().unwrap()).collect();
        for (i, e) in fds.iter().enumerate() {
            m.add(e.fd(), i as u64, Interest::READ).unwrap();
        }
        assert!(wait(&m, Some(Duration::ZERO)).is_empty()); // all polling now
        for (i, e) in fds.iter().enumerate() {
            m.modify(e.fd(), 10 + i as u64, Interest::READ).unwrap();
        }
        m.flush().unwrap();
        assert!(m.table.lock().dirty.is_empty(), "flush left changes unpushed");
        fds[1].set().unwrap();
        assert_eq!(wait(&m, LONG), [Event { token: 11, readable: true, writable: false }]);
    }

    #[test]
    fn waits_from_a_new_thread_after_the_submitting_thread_exited() {
        // The kernel cancels a thread's requests when it exits (-ECANCELED for the current
        // generation): the next waiter re-arms them instead of losing the registration.
        let Some(m) = new() else { return };
        let m = Arc::new(m);
        let p = Arc::new(Pipe::new());
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        for round in 0..3 {
            let (m2, p2) = (m.clone(), p.clone());
            thread::spawn(move || {
                assert!(wait(&m2, Some(Duration::ZERO)).is_empty()); // submits the POLL_ADD
                if round == 2 {
                    p2.write();
                    assert_eq!(
                        wait(&m2, LONG),
                        [Event { token: 1, readable: true, writable: false }]
                    );
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(wait(&m, LONG), [Event { token: 1, readable: true, writable: false }]);
    }

    #[test]
    fn error_completion_reported_once_as_hangup_until_modified() {
        let Some(m) = new() else { return };
        let p = Pipe::new();
        let fd = high_dup(p.rfd());
        let raw = fd.as_raw_fd();
        m.add(raw, 5, Interest::READ).unwrap();
        drop(fd); // closed before the POLL_ADD is submitted: it completes with -EBADF
        let both = Event { token: 5, readable: true, writable: true };
        assert_eq!(wait(&m, LONG), [both]);
        assert!(wait(&m, Some(Duration::from_millis(5))).is_empty(), "re-armed after an error");
        m.modify(raw, 6, Interest::READ).unwrap();
        assert_eq!(wait(&m, LONG), [Event { token: 6, ..both }]);
        m.delete(raw, 6).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        assert_eq!(m.pending(), (0, 0));
    }

    #[test]
    fn modify_while_polling_never_reports_the_old_token() {
        let Some(m) = new() else { return };
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty()); // POLL_ADD in flight
        for token in 2..50 {
            m.modify(p.rfd(), token, Interest::READ).unwrap();
            if token % 7 == 0 {
                assert!(wait(&m, Some(Duration::ZERO)).is_empty());
            }
        }
        p.write();
        assert_eq!(wait(&m, LONG), [Event { token: 49, readable: true, writable: false }]);
        m.delete(p.rfd(), 49).unwrap();
        for _ in 0..10 {
            wait(&m, Some(Duration::from_millis(1)));
        }
        assert_eq!(m.pending(), (0, 0));
    }

    #[test]
    fn fd_number_reused_while_old_slot_is_in_flight() {
        let Some(m) = new() else { return };
        let a = Pipe::new();
        let num = a.rfd();
        m.add(num, 1, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        m.delete(num, 1).unwrap();
        // Reuse the number for another file before the POLL_REMOVE is submitted.
        let b = Pipe::new();
        // SAFETY:
        // - dup2 takes two fd numbers and touches no memory; `num` is open (a's read end), and
        //   replacing it closes a's read end, which `a` owns: it is forgotten below, never closed twice.
        cvt(unsafe { libc::dup2(b.rfd(), num) }).unwrap();
        let Pipe { r, w: _w } = a;
        std::mem::forget(r);
        // SAFETY:
        // - `num` now refers to b's read end (dup2 above) and is owned by nothing else.
        let reused = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(num) };
        m.add(num, 2, Interest::READ).unwrap();
        b.write();
        assert_eq!(wait(&m, LONG), [Event { token: 2, readable: true, writable: false }]);
        m.delete(num, 2).unwrap();
        drop(reused);
        for _ in 0..10 {
            wait(&m, Some(Duration::from_millis(1)));
        }
        assert_eq!(m.pending(), (0, 0));
    }

    #[test]
    fn lost_completions_resync_rearms_every_poll() {
        let Some(m) = new() else { return };
        let (a, b) = (Pipe::new(), Pipe::new());
        m.add(a.rfd(), 1, Interest::READ).unwrap();
        m.add(b.rfd(), 2, Interest::READ).unwrap();
        assert!(wait(&m, Some(Duration::ZERO)).is_empty());
        // What harvest_all does when the kernel's overflow counter moves.
        m.table.lock().resync();
        a.write();
        assert_eq!(wait(&m, LONG), [Event { token: 1, readable: true, writable: false }]);
        b.write();
        let mut tokens: Vec<u64> = wait(&m, LONG).iter().map(|e| e.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [1, 2]);
    }

    #[test]
    fn pollable_fd_readable_after_flush_when_registration_ready() {
        let Some(m) = new() else { return };
        let ring_fd = m.pollable_fd().unwrap();
        let readable = || {
            let mut pfd = libc::pollfd { fd: ring_fd, events: libc::POLLIN, revents: 0 };
            // SAFETY:
            // - `pfd` is one valid, writable pollfd, matching nfds = 1.
            cvt(unsafe { libc::poll(&mut pfd, 1, 0) }).unwrap();
            pfd.revents & libc::POLLIN != 0
        };
        let p = Pipe::new();
        m.add(p.rfd(), 1, Interest::READ).unwrap();
        assert!(m.need_wait());
        m.flush().unwrap();
        assert!(!m.need_wait());
        assert!(!readable());
        p.write();
        assert!(readable());
        assert!(m.need_wait());
        assert_eq!(
            wait(&m, Some(Duration::ZERO)),
            [Event { token: 1, readable: true, writable: false }]
        );
        // Reported: re-armed only by the next wait or flush.
        assert!(!readable());
        m.flush().unwrap();
        assert!(readable(), "still readable, so the re-armed poll completes at once");
    }

    /// A connected AF_UNIX stream pair, non-blocking, closed on drop.
    fn socketpair() -> (OwnedFd, OwnedFd) {
        let mut fds = [-1; 2];
        // SAFETY:
        // - `fds` is a writable array of two c_ints, as socketpair requires.
        cvt(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })
        .unwrap();
        // SAFETY:
        // - socketpair succeeded: both fds are open and owned by nothing else.
        unsafe {
            (
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
                <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn half_closed_socket_with_unrequested_rdhup_does_not_spin() {
        let Some(m) = new() else { return };
        let (a, b) = socketpair();
        // Fill a's send buffer (b's receive queue), so a is not writable.
        let chunk = [0u8; 4096];
        loop {
            // SAFETY:
            // - `chunk` is readable for its length; `a` is open.
            let n = unsafe { libc::write(a.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
            if n < 0 {
                assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN));
                break;
            }
        }
        // b shuts down writing: a sees POLLRDHUP (and EOF), which a write-only watcher never asked for.
        // SAFETY:
        // - shutdown takes an fd and a flag and touches no memory; `b` is open.
        cvt(unsafe { libc::shutdown(b.as_raw_fd(), libc::SHUT_WR) }).unwrap();
        m.add(a.as_raw_fd(), 7, Interest::WRITE).unwrap();
        let t = Instant::now();
        assert!(wait(&m, Some(Duration::from_millis(100))).is_empty());
        assert!(t.elapsed() >= Duration::from_millis(100));
        let quiet = m.table.lock().quiet_completions;
        assert!((1..10).contains(&quiet), "{quiet} completions with nothing to report: spinning");
        // b drains its queue: write space wakes the multishot poll, which reports a writable.
        let mut buf = [0u8; 65536];
        // SAFETY:
        // - `buf` is writable for its length; `b` is open.
        while unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        assert_eq!(wait(&m, LONG), [Event { token: 7, readable: false, writable: true }]);
        // Back to one-shot: level-triggered again.
        assert_eq!(
            wait(&m, Some(Duration::ZERO)),
            [Event { token: 7, readable: false, writable: true }]
        );
        // Watched for nothing: RDHUP only, again without spinning; then delete cleanly.
        m.modify(a.as_raw_fd(), 7, Interest::NONE).unwrap();
        assert!(wait(&m, Some(Duration::from_millis(50))).is_empty());
        let quiet2 = m.table.lock().quiet_completions;
        assert!(quiet2 - quiet < 10, "{} quiet completions: spinning", quiet2 - quiet);
        m.delete(a.as_raw_fd(), 7).unwrap();
        for _ in 0..10 {
            wait(&m, Some(Duration::from_millis(1)));
        }
        assert_eq!(m.pending(), (0, 0));
    }

    #[test]
    fn polls_readiness_and_name() {
        let Some(m) = new() else { return };
        assert!(m.polls_readiness());
        assert_eq!(m.name(), "io_uring");
        assert!(format!("{m:?}").contains("ring_fd"));
    }
}
