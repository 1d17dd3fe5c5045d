//! Generated workloads (issue 14): proptest strategies for [`Program`]s, a quickcheck `Arbitrary`
//! for single-threaded ones, real-kernel fds, and the runners of `tests/workloads.rs`.
//!
//! The programs, the runner over the real code and the oracle live in `aioctx_model::workload`
//! (shuttle runs them from the model package); this module draws them with shrinking and runs them on
//! the model kernel with faults and on the real kernels, threads really racing. A failing program
//! shrinks to a minimal one, printed as a ready-to-paste regression test ([`check_program`]'s panic
//! message), and every run is reproducible from the printed seed.

use std::os::fd::RawFd;
use std::sync::Arc;

use aioctx::{Backend, Faults};
use aioctx_model::workload::run::{run, Env, Fds, Outcome, Watchdog};
use aioctx_model::workload::{BhSpec, FdSpec, Nested, Op, Owner, Program, TimerSpec};
use proptest::prelude::*;

use crate::real::Kernel;

/// Where a program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// The model kernel (std threads), with faults from a seed.
    Model(Faults),
    /// A real kernel backend, threads really racing; remote `Interrupt`s send a signal to the home
    /// thread (EINTR) and saturate the context's eventfd (EAGAIN on the next notify's write).
    Real(Kernel),
    /// The real io_uring backend as `Real`, with its faults injected from a seed (failed enters,
    /// lost and delayed completions: `Builder::io_uring_faults`).
    IoUringFaults(Faults),
}

/// The model kernel with `faults`.
pub fn model_kernel(faults: Faults) -> Where {
    Where::Model(faults)
}

/// A real backend.
pub fn real_kernel(k: Kernel) -> Where {
    Where::Real(k)
}

/// The real io_uring backend with `faults`' io_uring rates.
pub fn io_uring_faults(faults: Faults) -> Where {
    Where::IoUringFaults(faults)
}

/// io_uring fault rates from the model-kernel rates [`faults`] draws (so the io_uring run shares
/// the generator's stream): failed enters at the spurious wake-up rate, lost completions at a
/// quarter of the registration-failure rate, delayed harvests at half the spurious rate.
pub fn io_uring_rates(f: Faults) -> Faults {
    Faults {
        seed: f.seed,
        enter_fail: f.spurious_wake,
        cq_lost: f.register_fail / 4,
        cq_delay: f.spurious_wake / 2,
        ..Faults::default()
    }
}

/// The environment of `w`.
pub fn env(w: Where) -> Env {
    match w {
        Where::Model(f) => Env::model(f),
        Where::Real(k) => Env {
            backend: match k {
                Kernel::Epoll => Backend::Epoll,
                Kernel::Ppoll => Backend::Ppoll,
                Kernel::IoUring => Backend::IoUring,
            },
            kernel: None,
            fds: Arc::new(RealFds::default()),
            faults: Faults::default(),
            watchdog: Watchdog::Seconds(20),
            strict_fds: false,
            hang_file: Some((hang_path(), encode_where(w))),
        },
        Where::IoUringFaults(f) => Env {
            faults: f,
            hang_file: Some((hang_path(), encode_where(w))),
            ..env(Where::Real(Kernel::IoUring))
        },
    }
}

/// Where failures are written: `$AIOCTX_WORKLOAD_DIR` (ci/workloads: target/workloads, where
/// `ci/verify`'s report finds the charts), if set.
pub fn out_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("AIOCTX_WORKLOAD_DIR").map(std::path::PathBuf::from)
}

/// Where a real-kernel run that hangs past every notify writes its program before the process
/// aborts: [`out_dir`], else the temporary directory; one file per process.
pub fn hang_path() -> std::path::PathBuf {
    let dir = out_dir().unwrap_or_else(std::env::temp_dir);
    dir.join(format!("workload-hang-{}.program", std::process::id()))
}

/// Rerun `p` where `w` says with the protocol steps recorded (impl's `trace` feature) and, if the
/// oracle rejects the run again, write them to `path` as a counterexample chart's input
/// (`crate::msc`'s `.trace` format: one lifeline per thread, thread 0 the home thread, the failed
/// property and its detail under the chart, the program on a comment line). Returns whether a
/// chart was written (a run that passes this time, or records no step, writes none). The recorder
/// is process-global: hold [`crate::serial`].
pub fn write_chart(p: &Program, w: Where, path: &std::path::Path) -> std::io::Result<bool> {
    aioctx::trace::start();
    let out = run_program(p, w);
    let raw = aioctx::trace::stop();
    let Err(f) = &out.result else { return Ok(false) };
    let threads = raw.iter().map(|e| e.thread + 1).max().unwrap_or(0);
    if threads == 0 {
        return Ok(false);
    }
    let trace = crate::convert::to_model(&raw, threads, |t| t).map_err(std::io::Error::other)?;
    if trace.is_empty() {
        return Ok(false);
    }
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = format!(
        "#! title generated workload: {} ({} operations, {})\n#! checker workload\n\
         #! thread 0 home\n#! property {}\n#! violation last\n#! note {}\n# program: {}\n{trace}",
        f.property,
        p.len(),
        how(w),
        f.property,
        one_line(&f.to_string()),
        one_line(&p.encode())
    );
    std::fs::write(path, text)?;
    Ok(true)
}

/// `w` as one line of text (the first line of a program file: [`decode_where`] reads it back).
pub fn encode_where(w: Where) -> String {
    match w {
        Where::Model(f) => format!("model {} {} {}", f.seed, f.spurious_wake, f.register_fail),
        Where::Real(k) => format!("real {k:?}"),
        Where::IoUringFaults(f) => {
            format!("io_uring_faults {} {} {} {}", f.seed, f.enter_fail, f.cq_lost, f.cq_delay)
        }
    }
}

/// Read back what [`encode_where`] wrote.
pub fn decode_where(line: &str) -> Result<Where, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> Result<u64, String> {
        w.get(i).and_then(|t| t.parse().ok()).ok_or(format!("field {i} of `{line}`"))
    };
    let r = |i: usize| n(i).map(|v| v as u32);
    Ok(match w.first().copied() {
        Some("model") => Where::Model(Faults {
            seed: n(1)?,
            spurious_wake: r(2)?,
            register_fail: r(3)?,
            ..Faults::default()
        }),
        Some("real") => Where::Real(match w.get(1).copied() {
            Some("Epoll") => Kernel::Epoll,
            Some("Ppoll") => Kernel::Ppoll,
            Some("IoUring") => Kernel::IoUring,
            _ => return Err(format!("not a kernel: `{line}`")),
        }),
        Some("io_uring_faults") => Where::IoUringFaults(Faults {
            seed: n(1)?,
            enter_fail: r(2)?,
            cq_lost: r(3)?,
            cq_delay: r(4)?,
            ..Faults::default()
        }),
        _ => return Err(format!("not a place to run: `{line}`")),
    })
}

/// Run `p` where `w` says; the outcome.
pub fn run_program(p: &Program, w: Where) -> Outcome {
    run(p, &env(w))
}

/// Run `p`; panic with the failure, the log and a ready-to-paste regression test.
pub fn check_program(p: &Program, w: Where) {
    let out = run_program(p, w);
    if out.result.is_err() {
        panic!("{}\nregression test:\n{}", out.report(p), p.regression_test("regression", &how(w)));
    }
}

/// `w` as an expression of `tests/workloads.rs`.
pub fn how(w: Where) -> String {
    match w {
        Where::Model(f) => format!("model_kernel({f:?})"),
        Where::Real(k) => format!("real_kernel(Kernel::{k:?})"),
        Where::IoUringFaults(f) => format!("io_uring_faults({f:?})"),
    }
}

/// Real fds: the reading end of a Unix stream socket pair each, so that a hang-up is a real one
/// (the peer closed: POLLIN | POLLHUP for good, a read returns the data, then 0); the home thread
/// interruptible by SIGUSR1 (a no-op handler without SA_RESTART).
#[derive(Default)]
pub struct RealFds {
    /// fd -> its peer (the writing end), until the peer is closed. Every write to a peer and its
    /// close happen under this lock: a peer closed by one thread is never written by another (its
    /// number may already name a new fd).
    peers: std::sync::Mutex<std::collections::HashMap<RawFd, RawFd>>,
}

impl RealFds {
    fn peers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<RawFd, RawFd>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `recv` of up to `buf.len()` bytes with `flags`, never blocking.
    fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> isize {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags | libc::MSG_DONTWAIT) }
    }
}

impl Fds for RealFds {
    fn open(&self) -> RawFd {
        let mut sv = [-1; 2];
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: `sv` is valid for two fds.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) };
        assert!(r == 0, "socketpair: {}", std::io::Error::last_os_error());
        self.peers().insert(sv[0], sv[1]);
        sv[0]
    }
    fn ready(&self, fd: RawFd) {
        let peers = self.peers();
        if let Some(&peer) = peers.get(&fd) {
            // SAFETY: one byte from a valid buffer, to the open peer (closed only under this lock).
            unsafe { libc::send(peer, b"x".as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
        }
    }
    fn consume(&self, fd: RawFd) -> bool {
        let mut buf = [0u8; 64];
        let mut any = false;
        while Self::recv(fd, &mut buf, 0) > 0 {
            any = true;
        }
        any
    }
    fn is_ready(&self, fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
    }
    fn hang_up(&self, fd: RawFd) {
        if let Some(peer) = self.peers().remove(&fd) {
            // SAFETY: the peer, ours, closed once (taken out of the map under its lock).
            unsafe { libc::close(peer) };
        }
    }
    fn at_eof(&self, fd: RawFd) -> bool {
        Self::recv(fd, &mut [0u8; 1], libc::MSG_PEEK) == 0
    }
    fn close(&self, fd: RawFd) {
        self.hang_up(fd);
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(fd) };
    }
    fn interrupter(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        install_sigusr1();
        // SAFETY: pthread_self has no preconditions.
        let home = unsafe { libc::pthread_self() };
        let notifier = NOTIFIER.with(|n| n.get());
        Some(Box::new(move || {
            // SAFETY: the home thread outlives the remotes (it joins them); SIGUSR1 has a no-op
            // handler installed, so the signal only interrupts a syscall (EINTR).
            unsafe { libc::pthread_kill(home, libc::SIGUSR1) };
            if notifier >= 0 {
                // Saturate the context's eventfd: its next write fails with EAGAIN.
                let v = u64::MAX - 1;
                // SAFETY: writes 8 bytes from a valid u64 to the context's eventfd, open while
                // remotes run (the context outlives them).
                unsafe { libc::write(notifier, (&v as *const u64).cast(), 8) };
            }
        }))
    }
    fn external_wait(&self, fd: RawFd, timeout: Option<std::time::Duration>) {
        let ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
        };
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd. EINTR (a remote's interrupt) just ends the wait early.
        unsafe { libc::poll(&mut p, 1, ms) };
    }
    fn after_build(&self, ctx: &aioctx::AioContext) {
        NOTIFIER.with(|n| n.set(ctx.notifier_fd()));
    }
}

thread_local! {
    static NOTIFIER: std::cell::Cell<RawFd> = const { std::cell::Cell::new(-1) };
}

fn install_sigusr1() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn nothing(_: libc::c_int) {}
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask; no SA_RESTART, so an
        // interrupted wait returns EINTR (retried by the fd monitors).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
    });
}

// ---- proptest strategies ----

fn owner(nremotes: u8) -> BoxedStrategy<Owner> {
    if nremotes == 0 {
        Just(Owner::Home).boxed()
    } else {
        prop_oneof![Just(Owner::Home), (0..nremotes).prop_map(Owner::Remote)].boxed()
    }
}

fn nested(timers: u8, wait: bool) -> BoxedStrategy<Nested> {
    let mut v =
        vec![Just(Nested::No).boxed(), Just(Nested::Drain).boxed(), Just(Nested::Once).boxed()];
    if wait && timers > 0 {
        v.push((0..timers).prop_map(Nested::WaitTimer).boxed());
    }
    proptest::strategy::Union::new_weighted(
        v.into_iter().enumerate().map(|(i, s)| (if i == 0 { 4 } else { 1 }, s)).collect(),
    )
    .boxed()
}

/// One operation of the home thread (`home`) or a remote, on `bhs` BHs, `timers` timers, `fds` fds.
pub fn op(home: bool, bhs: u8, timers: u8, fds: u8) -> BoxedStrategy<Op> {
    let b = 0..bhs.max(1);
    let t = 0..timers.max(1);
    let f = 0..fds.max(1);
    let mut v: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (6, b.clone().prop_map(Op::Schedule).boxed()),
        (2, b.clone().prop_map(Op::Cancel).boxed()),
        (1, b.prop_map(Op::Delete).boxed()),
        (2, Just(Op::Oneshot).boxed()),
        (
            3,
            (t.clone(), prop_oneof![Just(0u8), Just(1), Just(50)])
                .prop_map(|(t, d)| Op::TimerMod(t, d))
                .boxed(),
        ),
        (1, t.clone().prop_map(Op::TimerDel).boxed()),
        (1, t.prop_map(Op::TimerDrop).boxed()),
        (3, f.clone().prop_map(Op::SetHandler).boxed()),
        (1, f.clone().prop_map(Op::RemoveHandler).boxed()),
        (2, (f.clone(), any::<bool>()).prop_map(|(f, on)| Op::SetInterest(f, on)).boxed()),
        (3, f.clone().prop_map(Op::Ready).boxed()),
        (1, f.clone().prop_map(Op::HangUp).boxed()),
        (3, f.prop_map(Op::Send).boxed()),
        (2, Just(Op::Notify).boxed()),
        (1, any::<bool>().prop_map(Op::PollParams).boxed()),
    ];
    if home {
        v.push((4, any::<bool>().prop_map(Op::Poll).boxed()));
        v.push((2, Just(Op::Drain).boxed()));
        v.push((1, Just(Op::External).boxed()));
    } else {
        v.push((1, Just(Op::Interrupt).boxed()));
    }
    proptest::strategy::Union::new_weighted(v).boxed()
}

/// A program: 0..=`max_remotes` remote threads, up to `max_ops` operations per thread.
pub fn program(max_remotes: u8, max_ops: usize) -> impl Strategy<Value = Program> {
    (0..=max_remotes, 1u8..5, 0u8..3, 0u8..3).prop_flat_map(move |(nr, nb, nt, nf)| {
        let bh = (
            owner(nr),
            prop::bool::weighted(0.15),
            0u8..4,
            nested(nt, true),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.4),
        )
            .prop_map(|(owner, idle, resched, nested, del, task, completes)| BhSpec {
                owner,
                idle: idle && !task,
                resched: if resched == 3 { 0 } else { resched },
                nested,
                delete_self: del && owner == Owner::Home,
                task,
                completes: completes && task,
            });
        let timer = (owner(nr), 0u8..3, nested(nt, false))
            .prop_map(|(owner, rearm, nested)| TimerSpec { owner, rearm, nested });
        let fd = (
            owner(nr),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.2),
            nested(nt, true),
            prop::bool::weighted(0.3),
            prop::bool::weighted(0.4),
            prop::bool::weighted(0.5),
            nested(nt, true),
        )
            .prop_map(
                |(owner, poll, rs, nested, consume_late, eof_removes, write, bracket)| FdSpec {
                    owner,
                    poll,
                    remove_self: rs && owner == Owner::Home,
                    nested,
                    consume_late,
                    eof_removes,
                    write: write && owner == Owner::Home,
                    bracket: if poll { bracket } else { Nested::No },
                },
            );
        (
            prop::bool::weighted(0.25),
            prop::collection::vec(bh, nb as usize),
            prop::collection::vec(timer, nt as usize),
            prop::collection::vec(fd, nf as usize),
            prop::collection::vec(op(true, nb, nt, nf), 0..2 * max_ops),
            prop::collection::vec(
                prop::collection::vec(op(false, nb, nt, nf), 0..max_ops),
                nr as usize,
            ),
        )
            .prop_map(|(polling, bhs, timers, fds, home, remotes)| Program {
                polling,
                bhs,
                timers,
                fds,
                home,
                remotes,
            })
    })
}

/// Fault rates for the model kernel (the seed is drawn too).
pub fn faults() -> impl Strategy<Value = Faults> {
    (any::<u64>(), prop_oneof![Just(0u32), 50u32..400], prop_oneof![Just(0u32), 50u32..400])
        .prop_map(|(seed, spurious_wake, register_fail)| Faults {
            seed,
            spurious_wake,
            register_fail,
            ..Faults::default()
        })
}

// ---- quickcheck: single-threaded programs ----

/// A home-only program (quickcheck `Arbitrary`, shrinking by [`Program::shrink_candidates`]).
#[derive(Debug, Clone)]
pub struct HomeProgram(pub Program);

impl quickcheck::Arbitrary for HomeProgram {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let seed = <u64 as quickcheck::Arbitrary>::arbitrary(g);
        let mut p = Program::random(
            seed,
            aioctx_model::workload::Size { remotes: 0, ops: g.size().min(24) },
        );
        p.remotes.clear();
        HomeProgram(p)
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        // One operation, object or behaviour less at a time, as `Program::shrink` (quickcheck
        // shrinks again from each smaller program that still fails).
        Box::new(self.0.shrink_candidates().into_iter().map(HomeProgram))
    }
}

// ---- the same programs, projected on the handshake model (implementation → model) ----

/// The part of `p` the Rust model of the wake-up handshake can check (`aioctx_model::check_trace`):
/// the remote threads' BH operations (schedule, schedule_idle, cancel, delete, oneshot) and bare
/// notifies, against a blocking loop, or an external loop if the home thread drives one. Timers,
/// fd handlers, nested polls and the home thread's own operations have no counterpart in that
/// model and are left out. `None` if nothing is left.
pub fn handshake_projection(
    p: &Program,
    kernel: Kernel,
    seed: u64,
) -> Option<crate::real::RunSpec> {
    use aioctx_model::Op as M;
    let mut bhs = 0u8;
    let mut remotes = Vec::new();
    for (r, ops) in p.remotes.iter().enumerate() {
        let own: Vec<usize> =
            (0..p.bhs.len()).filter(|&b| p.bhs[b].owner == Owner::Remote(r as u8)).collect();
        // This remote's BHs get the model's ids `base..base + own.len()`; a deleted one takes no
        // further operation.
        let base = bhs;
        bhs += own.len() as u8;
        let mut deleted = vec![false; own.len()];
        let mut out = Vec::new();
        for op in ops {
            let pick = |i: u8| (!own.is_empty()).then(|| i as usize % own.len());
            match *op {
                Op::Schedule(i) | Op::Cancel(i) | Op::Delete(i) => {
                    let Some(k) = pick(i) else { continue };
                    if deleted[k] {
                        continue;
                    }
                    let b = base + k as u8;
                    out.push(match *op {
                        Op::Schedule(_) if p.bhs[own[k]].idle => M::ScheduleIdle(b),
                        Op::Schedule(_) => M::Schedule(b),
                        Op::Cancel(_) => M::Cancel(b),
                        _ => {
                            deleted[k] = true;
                            M::Delete(b)
                        }
                    });
                }
                Op::Notify => out.push(M::Notify),
                Op::Oneshot => out.push(M::Oneshot(u8::MAX)), // numbered below
                _ => {}
            }
        }
        remotes.push(out);
    }
    // Oneshots take the ids after every owned BH.
    for ops in &mut remotes {
        for op in ops.iter_mut() {
            if let M::Oneshot(_) = op {
                *op = M::Oneshot(bhs);
                bhs += 1;
            }
        }
    }
    if remotes.iter().all(Vec::is_empty) {
        return None;
    }
    let external = p.home.contains(&Op::External);
    Some(crate::real::RunSpec {
        name: format!(
            "workload_projection_vs_{}",
            if external { "external_loop" } else { "blocking_poll" }
        ),
        kernel,
        polling: if p.polling { crate::real::Polling::On } else { crate::real::Polling::Off },
        driver: if external {
            crate::real::Driver::External
        } else {
            crate::real::Driver::Blocking
        },
        remotes,
        bhs,
        until_ran: false,
        seed,
    })
}
