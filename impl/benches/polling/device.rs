//! Part 4: the virtqueue device (examples/virtqueue.rs).

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use aioctx::{AioContext, IoThread};

use crate::common::{stat, two_cpus, Counts, Meter};
use crate::idle_handlers::{backend_of, raise_nofile};
use crate::machine::Pin;
use crate::table::{pass, Table};
use crate::virtqueue::{guest_run, Queue};
use crate::POLL_MAX;

thread_local! {
    /// The device thread's meter and its window start.
    static DEV_METER: RefCell<Option<(Meter, Counts)>> = const { RefCell::new(None) };
}

fn dev_window_start(io: &IoThread) {
    io.run_sync(|| {
        DEV_METER.with(|m| {
            let mut m = m.borrow_mut();
            let meter = m.take().map(|x| x.0).unwrap_or_else(Meter::new);
            let s = meter.snap();
            *m = Some((meter, s));
        })
    });
}

fn dev_window_end(io: &IoThread) -> Counts {
    io.run_sync(|| {
        DEV_METER.with(|m| {
            let m = m.borrow();
            let (meter, s) = m.as_ref().expect("device window started");
            meter.since(*s)
        })
    })
}

#[derive(Debug, Clone, Copy)]
struct VqRun {
    rate: f64,
    /// Per request: both threads' syscalls, kicks, interrupts, fraction found by polling.
    sys: f64,
    kicks: f64,
    irqs: f64,
    via_poll: f64,
    /// Guest + device CPU per request, ns.
    cpu: f64,
}

/// One guest run on `q` (served by `io`), with counters.
fn vq_run(io: &IoThread, q: &Queue, depth: u64, d: Duration) -> VqRun {
    let st = &q.stats;
    // ORDERING: Relaxed: statistics.
    let get = || [&st.kicks, &st.irqs, &st.via_poll].map(|c| c.load(Ordering::Relaxed));
    dev_window_start(io);
    let before = get();
    let m = Meter::new();
    let s = m.snap();
    let r = guest_run(q, depth, u64::MAX, d);
    let cg = m.since(s);
    let after = get();
    let cd = dev_window_end(io);
    let n = r.requests as f64;
    let per = |i: usize| (after[i] - before[i]) as f64 / n;
    let c = cg.add(cd);
    VqRun {
        rate: n / r.elapsed.as_secs_f64(),
        sys: c.syscalls() as f64 / n,
        kicks: per(0),
        irqs: per(1),
        via_poll: per(2),
        cpu: c.cpu_ns as f64 / n,
    }
}

/// A device IoThread, pinned to the second CPU (the guest runs on the first).
fn device(backend: Option<&str>, poll_max: u64) -> std::io::Result<IoThread> {
    let b = backend.map(backend_of);
    let cpu = two_cpus().map(|c| c.1);
    IoThread::spawn_with("vq-device", move || {
        // On the new thread: pinned for its whole life.
        std::mem::forget(Pin::to(cpu));
        let mut builder = AioContext::builder().poll_params(poll_max, 0, 0);
        if let Some(b) = b {
            builder = builder.backend(b);
        }
        builder
    })
}

pub(crate) fn part4(t: &mut Table, rounds: usize, d: Duration) {
    let _pin = Pin::to(two_cpus().map(|c| c.0)); // the guest
    one_device(t, rounds, d);
    // (b) QEMU's scalability case: 100 devices x 32 idle queues + 1 active queue on one IoThread,
    // against the active queue alone, per backend; depth 1.
    raise_nofile();
    for backend in ["io_uring", "epoll", "ppoll"] {
        scalability(t, rounds, d, backend);
    }
}

/// (a) One device, depth 1 and 32, polling off and on.
fn one_device(t: &mut Table, rounds: usize, d: Duration) {
    let configs = [(0u64, 1u64), (0, 32), (POLL_MAX, 1), (POLL_MAX, 32)];
    let devs: Vec<(IoThread, Arc<Queue>)> = configs
        .iter()
        .map(|&(pm, depth)| {
            let io = device(None, pm).unwrap();
            let q = Queue::new().unwrap();
            io.handle().set_fd_handler(q.kick_fd(), q.device_handler()).unwrap();
            guest_run(&q, depth, u64::MAX, d / 4); // warm-up: the window grows
            (io, q)
        })
        .collect();
    let backend =
        devs[0].0.run_sync(|| AioContext::with_current(|c| c.backend_name())).unwrap_or("?");
    let mut runs: Vec<Vec<VqRun>> = vec![Vec::new(); configs.len()];
    for r in 0..rounds {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            runs[i].push(vq_run(&devs[i].0, &devs[i].1, configs[i].1, d));
        }
    }
    for (i, &(pm, depth)) in configs.iter().enumerate() {
        let v = &runs[i];
        let s = |f: fn(&VqRun) -> f64| stat(v.iter().map(f).collect());
        let label = if pm == 0 { "off" } else { "on (32768)" };
        let off = if pm != 0 { Some(i - 2) } else { None };
        let ratio =
            off.map(|o| stat(v.iter().zip(&runs[o]).map(|(a, b)| a.rate / b.rate).collect()).med);
        t.push(
            format!("4. virtqueue depth {depth}, polling {label}, {backend}: requests/s"),
            s(|r| r.rate),
            "req/s",
            ratio,
            if off.is_some() { "polling off" } else { "-" },
            "-",
            "info",
        );
        t.info("    syscalls per request, guest + device (perf)", s(|r| r.sys), "syscalls/req");
        t.info("    guest kicks per request", s(|r| r.kicks), "kicks/req");
        t.info("    interrupts per request", s(|r| r.irqs), "irqs/req");
        if pm != 0 {
            t.info("    requests found by io_poll", s(|r| r.via_poll * 100.0), "%");
        }
        t.info("    CPU per request, guest + device", s(|r| r.cpu), "ns/req");
    }
    for (io, q) in devs {
        io.handle().remove_fd_handler(q.kick_fd()).unwrap();
        io.join();
    }
}

/// Part 4's gate (io_uring): the active queue's rate among 3200 idle queues over its rate alone, best
/// run of each side. What it guards: idle queues dropped from the poll list after the idle timeout
/// (left on it, as on epoll and ppoll, the ratio reads about 0.01). Measured on a quiet machine in
/// seven runs in a row: 0.974, 0.992, 1.104, 1.058, 0.926, 0.869, 1.200 (the same-round medians
/// 0.895..1.207): either side's best run moves by ±15% between runs (two IoThreads, each spinning
/// against a guest thread, placed by the host), so the gate is 0.8, not the 0.9 it was (which
/// failed one run in seven with nothing changed).
const SCALABILITY_GATE: f64 = 0.8;

/// (b) The scalability case on `backend`: 100 devices x 32 idle queues + 1 active queue on one
/// IoThread, against the active queue alone; depth 1. A row says so if the backend is unavailable.
fn scalability(t: &mut Table, rounds: usize, d: Duration, backend: &str) {
    let idle_timeout = Duration::from_millis(50);
    let single = device(Some(backend), POLL_MAX);
    let many = device(Some(backend), POLL_MAX);
    let (single, many) = match (single, many) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            t.note(
                format!("4. scalability on {backend}: skipped, the backend is unavailable: {e}"),
                "-",
                "SKIP",
            );
            return;
        }
    };
    for io in [&single, &many] {
        io.handle().set_poll_idle_timeout(idle_timeout);
    }
    // Idle queues: each kicked once (as a guest driver's set-up does), so each joins the poll list
    // (a handler joins on its first event), then never again.
    let idle: Vec<Arc<Queue>> = (0..3200).map(|_| Queue::new().unwrap()).collect();
    for q in &idle {
        many.handle().set_fd_handler(q.kick_fd(), q.device_handler()).unwrap();
    }
    for q in &idle {
        q.kick.set().unwrap();
    }
    let fds: Vec<RawFd> = idle.iter().map(|q| q.kick_fd()).collect();
    let fds = Arc::new(fds);
    let count_polled = |io: &IoThread| {
        let f = fds.clone();
        io.run_sync(move || {
            AioContext::with_current(|c| f.iter().filter(|&&fd| c.is_polled(fd)).count())
                .unwrap_or(0)
        })
    };
    // Let the loop dispatch the set-up kicks.
    thread::sleep(Duration::from_millis(20));
    let joined = count_polled(&many);
    let qa = Queue::new().unwrap();
    let qs = Queue::new().unwrap();
    many.handle().set_fd_handler(qa.kick_fd(), qa.device_handler()).unwrap();
    single.handle().set_fd_handler(qs.kick_fd(), qs.device_handler()).unwrap();
    // Warm-up past the idle timeout (4x).
    guest_run(&qa, 1, u64::MAX, idle_timeout * 4);
    guest_run(&qs, 1, u64::MAX, idle_timeout * 4);
    let left = count_polled(&many);
    // Many short pairs (both sides spin: a run in which another job preempted one of them
    // measures the scheduler, not the loop).
    let mut rs = Vec::new();
    let mut rm = Vec::new();
    for r in 0..3 * rounds {
        if r % 2 == 0 {
            rs.push(vq_run(&single, &qs, 1, d / 3));
            rm.push(vq_run(&many, &qa, 1, d / 3));
        } else {
            rm.push(vq_run(&many, &qa, 1, d / 3));
            rs.push(vq_run(&single, &qs, 1, d / 3));
        }
    }
    let left_end = count_polled(&many);
    let s = |v: &[VqRun], f: fn(&VqRun) -> f64| stat(v.iter().map(f).collect());
    let ratio = stat(rm.iter().zip(&rs).map(|(m, s)| m.rate / s.rate).collect());
    // Other jobs only lower a rate: the gate compares the best run of each side.
    let best = s(&rm, |r| r.rate).max / s(&rs, |r| r.rate).max;
    t.info(
        format!("4. scalability {backend}: 1 device, 1 active queue, depth 1"),
        s(&rs, |r| r.rate),
        "req/s",
    );
    let m = format!("4. scalability {backend}: 100 devices x 32 idle queues + the active queue");
    if backend == "io_uring" {
        t.push(
            m,
            s(&rm, |r| r.rate),
            "req/s",
            Some(best),
            "1 device (best runs)",
            &format!(">= {SCALABILITY_GATE} x 1 device"),
            pass(best >= SCALABILITY_GATE),
        );
    } else {
        t.push(
            m,
            s(&rm, |r| r.rate),
            "req/s",
            Some(best),
            "1 device (best runs)",
            "- (no idle removal)",
            "info",
        );
    }
    t.info("    same-round ratio many / single", ratio, "x");
    t.info("    syscalls per request, 1 device", s(&rs, |r| r.sys), "syscalls/req");
    t.info("    syscalls per request, 3201 queues", s(&rm, |r| r.sys), "syscalls/req");
    t.info("    requests found by io_poll, 1 device", s(&rs, |r| r.via_poll * 100.0), "%");
    t.info("    requests found by io_poll, 3201 queues", s(&rm, |r| r.via_poll * 100.0), "%");
    t.note(
        format!(
            "    idle queues on the poll list: {joined} after set-up, {left} after warm-up ({}x{} ms idle timeout), {left_end} at the end",
            4,
            idle_timeout.as_millis()
        ),
        if backend == "io_uring" { "0 after warm-up" } else { "- (all stay)" },
        if backend == "io_uring" { pass(left == 0 && left_end == 0) } else { "info" },
    );
    for (io, fd) in [(&many, qa.kick_fd()), (&single, qs.kick_fd())] {
        io.handle().remove_fd_handler(fd).unwrap();
    }
    for fd in fds.iter() {
        many.handle().remove_fd_handler(*fd).unwrap();
    }
    single.join();
    many.join();
    drop(idle);
}
