//! A virtqueue-style device on an [`IoThread`] with adaptive polling, the way QEMU's virtio-blk
//! dataplane uses its AioContext: the "guest" (a plain thread) pushes requests into a shared ring and
//! kicks the device's eventfd (QEMU's ioeventfd) only while the device has notifications enabled; the
//! device's `io_poll` checks the ring, `io_poll_ready` completes the requests, `io_poll_begin` disables
//! notifications and `io_poll_end` re-enables them. Completions go back the same way: the device
//! writes the used index and signals the guest's eventfd (QEMU's irqfd) only while the guest has
//! interrupts enabled, which it does only before it sleeps.
//!
//! ```text
//! cargo run --release -p aioctx --example virtqueue [-- --requests N]
//! ```
//!
//! It runs queue depth 1 and 32 with polling off and on and prints requests/s, guest kicks and
//! interrupts per request, and how many requests the device found by polling.
//!
//! # No lost kick, no lost interrupt
//!
//! Both directions are the Dekker pattern of aioctx's own notify (docs/protocol.md §2):
//!
//! ```text
//!   guest:  avail = n;            fence(SeqCst); if notify_enabled { kick }
//!   device: notify_enabled = 1;   fence(SeqCst); (the context's final io_poll after io_poll_end) read avail
//!
//!   device: used = n;             fence(SeqCst); if irq_enabled { interrupt }
//!   guest:  irq_enabled = 1;      fence(SeqCst); read used, sleep only if nothing new
//! ```
//!
//! After `io_poll_end` the context polls every handler once more before it blocks
//! (docs/protocol.md §3), so a request the guest published without a kick (it still saw notifications disabled) is found
//! by that poll. A lost kick or interrupt would hang the run.
//!
//! The bench `impl/benches/polling/` includes this file as a module and runs the same workload;
//! `impl/examples/virtqueue_async.rs` includes it too and serves the same ring from a task per
//! queue (`cargo run --release -p aioctx --example virtqueue_async`), printing the same table.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::sys::EventFd;
use aioctx::{AioContext, FdHandler, IoThread, Remote};

/// Ring slots (the largest queue depth a guest may use).
pub const RING: u64 = 256;

/// The device's answer to request payload `p`.
const fn response(p: u64) -> u64 {
    p.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
}

/// One cache line per field the two sides write, so the guest's and the device's stores do not
/// share a line.
#[repr(align(128))]
#[derive(Default)]
pub struct Line<T>(pub T);

/// Counters of one queue (Relaxed: statistics only).
#[derive(Default)]
pub struct QueueStats {
    /// Guest kicks (eventfd writes to the device).
    pub kicks: AtomicU64,
    /// Interrupts (eventfd writes to the guest).
    pub irqs: AtomicU64,
    /// Guest sleeps waiting for an interrupt.
    pub guest_sleeps: AtomicU64,
    /// Requests the device completed from `io_poll_ready` (found by userspace polling).
    pub via_poll: AtomicU64,
    /// Requests the device completed from its eventfd read handler (after a kick).
    pub via_kick: AtomicU64,
    /// `io_poll_begin` / `io_poll_end` calls.
    pub begins: AtomicU64,
    /// See `begins`.
    pub ends: AtomicU64,
}

/// The shared memory of one virtqueue, plus its two eventfds.
pub struct Queue {
    /// Requests published by the guest (the avail index).
    avail: Line<AtomicU64>,
    /// Requests completed by the device (the used index).
    used: Line<AtomicU64>,
    /// Requests the device has taken (device-local).
    seen: Line<AtomicU64>,
    /// The device wants kicks (virtio: VRING_USED_F_NO_NOTIFY clear). Written by the device.
    notify_enabled: Line<AtomicBool>,
    /// The guest wants an interrupt (virtio: VRING_AVAIL_F_NO_INTERRUPT clear). Written by the guest.
    irq_enabled: Line<AtomicBool>,
    req: Box<[AtomicU64]>,
    resp: Box<[AtomicU64]>,
    /// Guest → device (QEMU's ioeventfd).
    pub kick: EventFd,
    /// Device → guest (QEMU's irqfd).
    pub irq: EventFd,
    /// Counters.
    pub stats: QueueStats,
}

impl Queue {
    /// An empty queue with notifications enabled and interrupts disabled.
    ///
    /// # Errors
    ///
    /// Creating an eventfd failed (EMFILE).
    pub fn new() -> io::Result<Arc<Queue>> {
        let slots = || (0..RING).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Ok(Arc::new(Queue {
            avail: Line::default(),
            used: Line::default(),
            seen: Line::default(),
            notify_enabled: Line(AtomicBool::new(true)),
            irq_enabled: Line::default(),
            req: slots(),
            resp: slots(),
            kick: EventFd::new()?,
            irq: EventFd::new()?,
            stats: QueueStats::default(),
        }))
    }

    /// The fd the device's handler is registered on.
    pub fn kick_fd(&self) -> RawFd {
        self.kick.as_raw_fd()
    }

    /// Device: requests are waiting (the `io_poll` check: no side effects).
    #[inline]
    pub fn has_work(&self) -> bool {
        // ORDERING: Relaxed: only a hint; `process` re-reads `avail` with Acquire before it touches
        // the slots. `seen` is written by the device thread only.
        self.avail.0.load(Ordering::Relaxed) != self.seen.0.load(Ordering::Relaxed)
    }

    /// Device: complete every published request, then interrupt the guest if it asked for one.
    pub fn process(&self, via_poll: bool) {
        // ORDERING: Acquire: pairs with the guest's Release store of `avail`: the request slots
        // below are visible.
        let a = self.avail.0.load(Ordering::Acquire);
        // ORDERING: Relaxed: device-local.
        let s = self.seen.0.load(Ordering::Relaxed);
        if a == s {
            return; // a kick for requests already completed by polling
        }
        for i in s..a {
            let k = (i % RING) as usize;
            // ORDERING: Relaxed: published by the Release store of `used` below.
            self.resp[k].store(response(self.req[k].load(Ordering::Relaxed)), Ordering::Relaxed);
        }
        // ORDERING: Relaxed: device-local.
        self.seen.0.store(a, Ordering::Relaxed);
        // ORDERING: Release: the responses above are visible to a guest that reads this index.
        self.used.0.store(a, Ordering::Release);
        let st = &self.stats;
        // ORDERING: Relaxed: statistics.
        if via_poll { &st.via_poll } else { &st.via_kick }.fetch_add(a - s, Ordering::Relaxed);
        // ORDERING: SeqCst fence: the store of `used` precedes the read of `irq_enabled`; pairs with
        // the guest's fence between `irq_enabled = true` and its re-read of `used` (Dekker).
        fence(Ordering::SeqCst);
        // ORDERING: Relaxed, ordered by the fence above.
        if self.irq_enabled.0.load(Ordering::Relaxed) {
            self.irq.set().expect("irq eventfd write");
            st.irqs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Device: polling begins, the guest need not kick (virtio_queue_set_notification(vq, 0)).
    pub fn disable_notify(&self) {
        // ORDERING: Relaxed: a stale `true` on the guest side only costs a needless kick.
        self.notify_enabled.0.store(false, Ordering::Relaxed);
        self.stats.begins.fetch_add(1, Ordering::Relaxed);
    }

    /// Device: polling ends, the guest must kick again. The context's final io_poll (after
    /// io_poll_end, before it blocks) re-checks the ring after this fence.
    pub fn enable_notify(&self) {
        // ORDERING: Relaxed store, then a SeqCst fence: the store precedes the final poll's read of
        // `avail`; pairs with the guest's fence between its `avail` store and its `notify_enabled`
        // read (Dekker: one side sees the other).
        self.notify_enabled.0.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.stats.ends.fetch_add(1, Ordering::Relaxed);
    }

    /// The device's fd handler: the eventfd read handler plus the polling callbacks.
    pub fn device_handler(self: &Arc<Self>) -> FdHandler<Remote> {
        let (q1, q2, q3, q4, q5) =
            (self.clone(), self.clone(), self.clone(), self.clone(), self.clone());
        FdHandler::new_remote()
            .on_read(move |_| {
                q1.kick.test_and_clear().expect("kick eventfd read");
                q1.process(false);
            })
            .on_poll(move |_| q2.has_work(), move |_| q3.process(true))
            .on_poll_begin(move |_| q4.disable_notify())
            .on_poll_end(move |_| q5.enable_notify())
    }
}

/// What one guest run did.
#[derive(Debug, Clone, Copy)]
pub struct GuestReport {
    /// Requests completed (and checked).
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// How long the guest spins on the used index before it enables interrupts and sleeps (a vCPU's
/// halt polling; KVM's default is 200 µs).
pub const GUEST_SPIN: Duration = Duration::from_micros(50);

/// The guest: keep up to `depth` requests in flight until `max_requests` completed or `max_time`
/// passed; every completion's response is checked. Kicks only while the device wants them.
///
/// # Panics
///
/// A wrong response (a lost or duplicated request), or `depth` outside 1..=RING.
pub fn guest_run(q: &Queue, depth: u64, max_requests: u64, max_time: Duration) -> GuestReport {
    assert!((1..=RING).contains(&depth), "depth {depth} outside 1..={RING}");
    // ORDERING: Relaxed: the guest is the only writer of `avail`; `used` equals it between runs.
    let base = q.avail.0.load(Ordering::Relaxed);
    let mut sub = base;
    let mut checked = base;
    let mut end = base.saturating_add(max_requests);
    let t0 = Instant::now();
    let mut iter = 0u32;
    while checked < end {
        let mut pushed = false;
        while sub < end && sub - checked < depth {
            // ORDERING: Relaxed: published by the Release store of `avail` below.
            q.req[(sub % RING) as usize].store(sub ^ 0x5a5a, Ordering::Relaxed);
            sub += 1;
            pushed = true;
        }
        if pushed {
            // ORDERING: Release: the request slots are visible to the device's Acquire load.
            q.avail.0.store(sub, Ordering::Release);
            // ORDERING: SeqCst fence: the `avail` store precedes the `notify_enabled` read; pairs
            // with the fence in `enable_notify` (no lost kick).
            fence(Ordering::SeqCst);
            // ORDERING: Relaxed, ordered by the fence above.
            if q.notify_enabled.0.load(Ordering::Relaxed) {
                q.kick.set().expect("kick eventfd write");
                q.stats.kicks.fetch_add(1, Ordering::Relaxed);
            }
        }
        let used = wait_used(q, checked);
        for i in checked..used {
            // ORDERING: Relaxed: made visible by the Acquire load of `used` in wait_used.
            let r = q.resp[(i % RING) as usize].load(Ordering::Relaxed);
            assert_eq!(r, response(i ^ 0x5a5a), "request {i}: wrong response");
        }
        checked = used;
        iter += 1;
        if iter % 16 == 0 && end > sub && t0.elapsed() >= max_time {
            end = sub; // stop submitting; collect what is in flight
        }
    }
    GuestReport { requests: checked - base, elapsed: t0.elapsed() }
}

/// Guest: wait until `used` passes `old`: spin for [`GUEST_SPIN`], then enable interrupts and sleep
/// on the irq eventfd.
fn wait_used(q: &Queue, old: u64) -> u64 {
    let t0 = Instant::now();
    let mut k = 0u32;
    loop {
        // ORDERING: Acquire: pairs with the device's Release store; the responses are visible.
        let u = q.used.0.load(Ordering::Acquire);
        if u > old {
            return u;
        }
        std::hint::spin_loop();
        k += 1;
        if k % 64 == 0 && t0.elapsed() >= GUEST_SPIN {
            break;
        }
    }
    // ORDERING: Relaxed store, then a SeqCst fence: the store precedes the re-read of `used`; pairs
    // with the device's fence between its `used` store and its `irq_enabled` read (Dekker).
    q.irq_enabled.0.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    loop {
        // ORDERING: Acquire, as above.
        let u = q.used.0.load(Ordering::Acquire);
        if u > old {
            // ORDERING: Relaxed: a stale `true` on the device side only costs a spurious interrupt.
            q.irq_enabled.0.store(false, Ordering::Relaxed);
            return u;
        }
        q.stats.guest_sleeps.fetch_add(1, Ordering::Relaxed);
        wait_readable(q.irq.as_raw_fd());
        q.irq.test_and_clear().expect("irq eventfd read");
    }
}

/// Block until `fd` is readable.
fn wait_readable(fd: RawFd) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY:
        // - `p` is one valid, writable pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The device's adaptive window, read on its IoThread (home-thread only API).
pub fn device_poll_ns(io: &IoThread, fd: RawFd) -> Option<u64> {
    io.run_sync(move || AioContext::with_current(|c| c.poll_ns(fd)).flatten())
}

/// The first two CPUs the process may use.
pub fn first_two_cpus() -> Option<(usize, usize)> {
    // SAFETY:
    // - an all-zero cpu_set_t is a valid (empty) set; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    // SAFETY: CPU_ISSET reads one bit of a valid set, for indices below CPU_SETSIZE.
    let mut it = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    Some((it.next()?, it.next()?))
}

/// Pin the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; `cpu` came from CPU_ISSET, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// `--requests N` (default 200 000) from the command line of the example `name`.
pub fn requests_arg(name: &str) -> u64 {
    let mut requests = 200_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--requests" => {
                requests = args.next().and_then(|s| s.parse().ok()).expect("--requests N")
            }
            _ => {
                eprintln!("usage: {name} [--requests N]");
                std::process::exit(2);
            }
        }
    }
    requests
}

/// The table's header.
pub fn print_header() {
    println!(
        "{:>8} {:>5} {:>12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "poll_max",
        "depth",
        "requests/s",
        "kicks/req",
        "irqs/req",
        "sleeps/req",
        "via poll",
        "begins/req",
        "poll_ns"
    );
}

/// One row of the table: the guest runs `depth` requests in flight against the device serving `q`
/// on `io` (a warm-up of a tenth, so the adaptive window grows, then `requests`), and the row is
/// printed. Returns requests/s.
pub fn run_row(io: &IoThread, q: &Queue, poll_max: u64, depth: u64, requests: u64) -> f64 {
    guest_run(q, depth, requests / 10, Duration::from_secs(10)); // warm-up: the window grows
    let st = &q.stats;
    let before = [&st.kicks, &st.irqs, &st.guest_sleeps, &st.via_poll, &st.begins]
        .map(|c| c.load(Ordering::Relaxed));
    let r = guest_run(q, depth, requests, Duration::from_secs(30));
    let after = [&st.kicks, &st.irqs, &st.guest_sleeps, &st.via_poll, &st.begins]
        .map(|c| c.load(Ordering::Relaxed));
    let per = |i: usize| (after[i] - before[i]) as f64 / r.requests as f64;
    let window = device_poll_ns(io, q.kick_fd());
    let rate = r.requests as f64 / r.elapsed.as_secs_f64();
    println!(
        "{:>8} {:>5} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>9.1}% {:>12.4} {:>9}",
        poll_max,
        depth,
        rate,
        per(0),
        per(1),
        per(2),
        100.0 * per(3),
        per(4),
        window.map_or("-".into(), |w| w.to_string()),
    );
    rate
}

/// The device's IoThread, pinned to the second CPU when there are two (the guest, the caller, is
/// pinned to the first by `main`), with QEMU's IoThread polling parameters but `poll_max`.
pub fn device_thread(cpus: Option<(usize, usize)>, poll_max: u64) -> io::Result<IoThread> {
    // QEMU's IoThread default: poll-max-ns 32768, grow and shrink 0 (×2, reset).
    IoThread::spawn_with("virtqueue", move || {
        if let Some((_, device)) = cpus {
            pin_to(device);
        }
        AioContext::builder().poll_params(poll_max, 0, 0)
    })
}

fn main() -> io::Result<()> {
    let requests = requests_arg("virtqueue");
    // Polling pays off only when the guest and the device run at the same time on different CPUs:
    // pin them, as QEMU deployments pin vCPUs and IOThreads (unpinned, the kernel often wakes the
    // device on the guest's CPU, where it polls while the guest cannot run).
    let cpus = first_two_cpus();
    if let Some((guest, _)) = cpus {
        pin_to(guest);
    }
    print_header();
    for poll_max in [0u64, 32768] {
        for depth in [1u64, 32] {
            let io = device_thread(cpus, poll_max)?;
            let q = Queue::new()?;
            io.handle().set_fd_handler(q.kick_fd(), q.device_handler())?;
            run_row(&io, &q, poll_max, depth, requests);
            io.handle().remove_fd_handler(q.kick_fd())?;
            io.join();
        }
    }
    Ok(())
}
