//! Recording real multi-threaded runs (implementation → model).
//!
//! A run is one [`RunSpec`]: a home thread (the test thread) that creates an [`AioContext`] on a real
//! kernel backend (eventfd + epoll / ppoll / io_uring) and either loops in `poll(true)` or drives it
//! as an external loop (prepare, its own `poll(2)` on the context's fd, check, dispatch), and remote
//! threads that run lists of [`Op`]s on real [`Bh`]s and the [`Handle`]. Every remote ends with a stop
//! notify (it sets its done flag, then calls `notify()`: the flag is the notify's work) unless the
//! run is the classic `while !ran { ctx.poll(true) }`. The recorded trace is converted with
//! [`crate::convert`], and [`RunSpec::scenario`] is the model scenario it must belong to.
//!
//! Polling ([`Polling`]): off; on (the context notifier is the only poll handler: it joins the poll
//! list once its eventfd fired, and its window then drives userspace polling); or on with one user
//! poll handler that is never ready (an eventfd nobody writes after setup), put on the poll list
//! with a non-zero window before recording starts. With a user handler registered, a poll with
//! timeout 0 still calls the fd monitor: the scenario's `zero_timeout_wait`.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use aioctx::trace::Step;
use aioctx::{AioContext, Backend, Bh, FdHandler, Handle, Remote};
use aioctx_model::{Loops, Op, Poller, Scenario, Trace};

use crate::Rng;

/// A real kernel backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// epoll(7).
    Epoll,
    /// ppoll(2) (an external loop's prepare moves it to epoll).
    Ppoll,
    /// io_uring(7).
    IoUring,
}

impl Kernel {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Epoll => "epoll",
            Kernel::Ppoll => "ppoll",
            Kernel::IoUring => "io_uring",
        }
    }
    fn backend(self) -> Backend {
        match self {
            Kernel::Epoll => Backend::Epoll,
            Kernel::Ppoll => Backend::Ppoll,
            Kernel::IoUring => Backend::IoUring,
        }
    }
    /// Whether this kernel lets us create one (io_uring may be refused by seccomp, sysctl, memlock).
    pub fn available(self) -> bool {
        AioContext::builder().backend(self.backend()).build().is_ok()
    }
}

/// Adaptive polling in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polling {
    /// Off.
    Off,
    /// On; the context's notifier is the only poll handler.
    On,
    /// On, with a never-ready user poll handler as well (every poll then calls the fd monitor).
    OnWithHandler,
}

impl Polling {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Polling::Off => "polling off",
            Polling::On => "polling on",
            Polling::OnWithHandler => "polling on, user poll handler",
        }
    }
    /// Polling enabled.
    pub fn on(self) -> bool {
        self != Polling::Off
    }
}

/// How the home thread drives the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `poll(true)` until every remote is done (or, with `until_ran`, until BH 0 ran).
    Blocking,
    /// prepare / `poll(2)` on the context's fd / check / dispatch.
    External,
}

/// One recorded run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Its name (the scenario's).
    pub name: String,
    /// The backend.
    pub kernel: Kernel,
    /// Adaptive polling.
    pub polling: Polling,
    /// The home thread's loop.
    pub driver: Driver,
    /// Each remote's operations (the stop notify is added unless `until_ran`).
    pub remotes: Vec<Vec<Op>>,
    /// BHs `0..bhs`.
    pub bhs: u8,
    /// `while !ran { ctx.poll(true) }` on BH 0's callback, no stop notify.
    pub until_ran: bool,
    /// Seed of the remotes' timing jitter.
    pub seed: u64,
}

/// A recorded run.
#[derive(Debug)]
pub struct Recorded {
    /// The model scenario the run belongs to.
    pub scenario: Scenario,
    /// The converted trace.
    pub trace: Trace,
    /// The implementation's own events (before projection).
    pub raw: Vec<aioctx::trace::TraceEvent>,
}

impl RunSpec {
    /// The model scenario of this run (thread 0 the home thread, then the remotes), with
    /// `poll_rounds` userspace rounds allowed per poll.
    pub fn scenario(&self, poll_rounds: u32) -> Scenario {
        let mut sc = Scenario::new(self.name.clone()).bhs(self.bhs).polling(poll_rounds);
        sc = sc.poller(match self.driver {
            Driver::Blocking => Poller::Blocking(Loops::Forever),
            Driver::External => Poller::External(Loops::Forever),
        });
        for ops in &self.remotes {
            let mut ops = ops.clone();
            if !self.until_ran {
                ops.push(Op::Notify);
            }
            sc = sc.remote(&ops);
        }
        // A registered user handler makes every poll call the fd monitor, also with timeout 0.
        sc.zero_timeout_wait = self.polling == Polling::OnWithHandler;
        sc
    }

    /// `bh_schedule_vs_blocking_poll`: the classic `while !ran { poll(true) }` against one schedule.
    pub fn bh_schedule_vs_blocking_poll(kernel: Kernel, polling: Polling, seed: u64) -> RunSpec {
        RunSpec {
            name: "bh_schedule_vs_blocking_poll".into(),
            kernel,
            polling,
            driver: Driver::Blocking,
            remotes: vec![vec![Op::Schedule(0)]],
            bhs: 1,
            until_ran: true,
            seed,
        }
    }

    /// `notify_vs_blocking_poll`: bare notifies (1 to 3) against a blocking loop.
    pub fn notify_vs_blocking_poll(kernel: Kernel, polling: Polling, seed: u64) -> RunSpec {
        let n = 1 + Rng::new(seed).below(3) as usize;
        RunSpec {
            name: "notify_vs_blocking_poll".into(),
            kernel,
            polling,
            driver: Driver::Blocking,
            remotes: vec![vec![Op::Notify; n]],
            bhs: 0,
            until_ran: false,
            seed,
        }
    }

    /// `bh_schedule_twice_vs_external_loop`: an external loop against two schedules of one BH.
    pub fn bh_schedule_twice_vs_external_loop(
        kernel: Kernel,
        polling: Polling,
        seed: u64,
    ) -> RunSpec {
        RunSpec {
            name: "bh_schedule_twice_vs_external_loop".into(),
            kernel,
            polling,
            driver: Driver::External,
            remotes: vec![vec![Op::Schedule(0), Op::Schedule(0)]],
            bhs: 1,
            until_ran: false,
            seed,
        }
    }

    /// Random schedule / schedule_idle / oneshot / cancel / notify / delete sequences from one or
    /// two remotes (each owns its BHs and deletes some of them last), against either driver.
    pub fn random_ops(kernel: Kernel, polling: Polling, driver: Driver, seed: u64) -> RunSpec {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let nremotes = 1 + rng.below(2) as usize;
        let mut bhs = 0u8;
        let mut remotes = Vec::new();
        for _ in 0..nremotes {
            let owned = [bhs, bhs + 1];
            bhs += 2;
            let mut ops = Vec::new();
            let mut used = [false; 2];
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(2) as usize;
                let b = owned[i];
                let op = match rng.below(6) {
                    0 | 1 => Op::Schedule(b),
                    2 => Op::ScheduleIdle(b),
                    3 => Op::Cancel(b),
                    4 => {
                        bhs += 1;
                        Op::Oneshot(bhs - 1)
                    }
                    _ => Op::Notify,
                };
                if !matches!(op, Op::Oneshot(_) | Op::Notify) {
                    used[i] = true;
                }
                ops.push(op);
            }
            for i in 0..2 {
                if used[i] && rng.below(2) == 0 {
                    ops.push(Op::Delete(owned[i]));
                }
            }
            remotes.push(ops);
        }
        let name = match driver {
            Driver::Blocking => "random_ops_vs_blocking_poll",
            Driver::External => "random_ops_vs_external_loop",
        };
        RunSpec { name: name.into(), kernel, polling, driver, remotes, bhs, until_ran: false, seed }
    }
}

/// A never-ready user poll handler, put on the poll list with a non-zero window (its eventfd is
/// closed on drop).
pub struct PollDummy {
    fd: RawFd,
}

/// Register a [`PollDummy`] on `ctx` (before recording: setup makes traced steps).
pub fn install_poll_dummy(ctx: &AioContext) -> PollDummy {
    PollDummy::install(ctx)
}

impl PollDummy {
    fn install(ctx: &AioContext) -> PollDummy {
        // SAFETY: eventfd(2) takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        let h = FdHandler::new()
            .on_read(move |_| {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into `v`, a valid u64.
                unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
            })
            .on_poll(|_| false, |_| {});
        ctx.set_fd_handler(fd, h).expect("register the poll handler");
        // One fd event while polling is on puts it on the poll list and grows its window
        // (0 -> 4000 ns): a dispatch after a short block.
        for _ in 0..100 {
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one`, a valid u64.
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            while ctx.poll(false) {}
            if ctx.is_polled(fd) && ctx.poll_ns(fd).unwrap_or(0) > 0 {
                return PollDummy { fd };
            }
        }
        panic!("the poll handler did not join the poll list with a window: {:?}", ctx.poll_ns(fd));
    }
}

impl Drop for PollDummy {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Run the external loop's own wait on the context's fd, and record it (`ctx_poll_wait`, the
/// model's external wait: `notifier` and `readable` = the fd was readable, `timeout` = prepare's).
fn external_wait(fd: RawFd, timeout: Option<Duration>) {
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let r = loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break r;
        }
    };
    assert!(r >= 0, "poll(ctx fd): {}", std::io::Error::last_os_error());
    let readable = p.revents & libc::POLLIN != 0;
    let t = timeout.map_or(-1, |d| d.as_nanos() as i64);
    let mut g = aioctx::trace::lock();
    aioctx::trace::record(
        &mut g,
        Step::CtxPollWait,
        &[("notifier", readable as i64), ("timeout", t), ("readable", readable as i64)],
    );
}

/// The BHs of a run, shared by the remotes: an owner's `Delete` takes its `Bh` out and drops it.
type Bhs = Arc<Vec<Mutex<Option<Bh<Remote>>>>>;

fn run_op(op: Op, h: &Handle, bhs: &Bhs, calls: &Arc<Vec<AtomicU32>>) {
    let bh = |b: u8| bhs[b as usize].lock().unwrap_or_else(|e| e.into_inner());
    match op {
        Op::Notify => h.notify(),
        Op::Schedule(b) => bh(b).as_ref().expect("schedule after delete").schedule(),
        Op::ScheduleIdle(b) => bh(b).as_ref().expect("schedule after delete").schedule_idle(),
        Op::Cancel(b) => bh(b).as_ref().expect("cancel after delete").cancel(),
        Op::Delete(b) => drop(bh(b).take().expect("double delete")),
        Op::Oneshot(b) => {
            let c = calls.clone();
            h.bh_oneshot(move || {
                c[b as usize].fetch_add(1, SeqCst);
            });
        }
    }
}

/// Run `spec` once on the calling thread (the home thread) and return the recorded trace. The caller
/// holds [`crate::serial`].
///
/// # Panics
///
/// When the run does not finish within 30 s (a hang: the partial trace is printed and the process
/// aborts, as nothing else could end it).
pub fn record(spec: &RunSpec) -> Recorded {
    let mut b = AioContext::builder().backend(spec.kernel.backend());
    if spec.polling.on() {
        b = b.poll_params(50_000, 0, 0);
    }
    let ctx = b.build().unwrap_or_else(|e| panic!("{} context: {e}", spec.kernel.name()));
    let dummy = (spec.polling == Polling::OnWithHandler).then(|| PollDummy::install(&ctx));
    let calls: Arc<Vec<AtomicU32>> = Arc::new((0..spec.bhs).map(|_| AtomicU32::new(0)).collect());
    let bhs: Bhs = Arc::new(
        (0..spec.bhs)
            .map(|b| {
                let c = calls.clone();
                Mutex::new(Some(ctx.handle().bh_new(move |_| {
                    c[b as usize].fetch_add(1, SeqCst);
                })))
            })
            .collect(),
    );
    let n = spec.remotes.len();
    let done: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut joins = Vec::new();
    for (r, ops) in spec.remotes.iter().enumerate() {
        let (ops, h, bhs, calls, done, barrier) = (
            ops.clone(),
            ctx.handle().clone(),
            bhs.clone(),
            calls.clone(),
            done.clone(),
            barrier.clone(),
        );
        let until_ran = spec.until_ran;
        let mut rng = Rng::new(spec.seed.wrapping_add(r as u64 * 7919));
        joins.push(std::thread::spawn(move || {
            barrier.wait();
            for op in ops {
                // Timing jitter, so that operations land in every phase of the loop: none, a few
                // ns to µs of spinning, or a yield.
                match rng.below(4) {
                    0 => {}
                    1 => (0..rng.below(300)).for_each(|_| std::hint::spin_loop()),
                    2 => (0..rng.below(20_000)).for_each(|_| std::hint::spin_loop()),
                    _ => std::thread::yield_now(),
                }
                run_op(op, &h, &bhs, &calls);
            }
            if !until_ran {
                done[r].store(true, SeqCst);
                h.notify();
            }
        }));
    }

    // The watchdog: a hang is a failure with the partial trace.
    let (fin_tx, fin_rx) = std::sync::mpsc::channel::<()>();
    let name = format!(
        "{} ({}, {}, seed {})",
        spec.name,
        spec.kernel.name(),
        spec.polling.name(),
        spec.seed
    );
    let watchdog = std::thread::spawn(move || {
        if fin_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let log = aioctx::trace::stop();
            eprintln!("HANG: run {name} did not finish in 30 s; trace so far:");
            for e in &log {
                eprintln!("  {e}");
            }
            std::process::abort();
        }
    });

    aioctx::trace::start();
    for j in &joins {
        aioctx::trace::register_thread(j.thread().id());
    }
    barrier.wait();
    let all_done = || done.iter().all(|d| d.load(SeqCst));
    match spec.driver {
        Driver::Blocking if spec.until_ran => {
            while calls[0].load(SeqCst) == 0 {
                ctx.poll(true);
            }
        }
        Driver::Blocking => {
            while !all_done() {
                ctx.poll(true);
            }
        }
        Driver::External => {
            while !all_done() {
                let t = ctx.prepare();
                external_wait(ctx.as_raw_fd(), t);
                ctx.check();
                ctx.dispatch();
            }
        }
    }
    let raw = aioctx::trace::stop();
    for j in joins {
        j.join().expect("remote thread panicked");
    }
    let _ = fin_tx.send(());
    watchdog.join().expect("watchdog");
    drop(bhs);
    drop(dummy);
    drop(ctx);

    let trace = crate::convert::to_model(&raw, n as u32 + 1, |t| t)
        .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    // The model's polling bound is derived from the recorded steps: the most rounds one poll made.
    // That count is time (the 50 µs window over the cost of a round: more on a faster machine, and
    // full windows are more frequent on a busy one, where the remotes are descheduled), so it has no
    // fixed cap: a u8 bound here failed on a busy machine ("350 polling rounds in one poll").
    let rounds = crate::convert::max_rounds(&trace);
    let rounds = u32::try_from(rounds).expect("more than 2^32 polling rounds in one trace");
    let scenario = spec.scenario(if spec.polling.on() { rounds.max(1) } else { 0 });
    Recorded { scenario, trace, raw }
}
