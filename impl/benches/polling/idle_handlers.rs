//! Part 3: cost of one iteration with many idle fd handlers.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aioctx::sys::EventFd;
use aioctx::{AioContext, Backend, FdHandler};

use crate::common::{stat, Stat};
use crate::table::{pass, Table};

/// Raise RLIMIT_NOFILE's soft limit to the hard one; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    // SAFETY:
    // - an all-zero rlimit is a valid value; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid, writable rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: `rl` is a valid rlimit; raising soft to hard needs no privilege.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    rl.rlim_cur as u64
}

pub(crate) fn backend_of(name: &str) -> Backend {
    match name {
        "ppoll" => Backend::Ppoll,
        "epoll" => Backend::Epoll,
        _ => Backend::IoUring,
    }
}

/// A context on `backend` with `idle` registered (never written) plus its own active eventfd.
struct IterCtx {
    ctx: AioContext,
    active: Arc<EventFd>,
    hits: Arc<AtomicU64>,
}

fn iter_ctx(backend: &str, idle: &[EventFd]) -> std::io::Result<IterCtx> {
    let ctx = AioContext::builder().backend(backend_of(backend)).build()?;
    for e in idle {
        let fd = e.as_raw_fd();
        ctx.set_fd_handler(fd, FdHandler::new().on_read(move |_| drain_raw(fd)))?;
    }
    let active = Arc::new(EventFd::new()?);
    let hits = Arc::new(AtomicU64::new(0));
    let (a2, h2) = (active.clone(), hits.clone());
    ctx.set_fd_handler(
        active.as_raw_fd(),
        FdHandler::new().on_read(move |_| {
            a2.test_and_clear().unwrap();
            // ORDERING: Relaxed: a counter read on this thread.
            h2.fetch_add(1, Ordering::Relaxed);
        }),
    )?;
    // Let the backend take every registration (io_uring submits them on the first wait).
    while ctx.poll(false) {}
    Ok(IterCtx { ctx, active, hits })
}

fn drain_raw(fd: RawFd) {
    let mut v = 0u64;
    // SAFETY:
    // - reads 8 bytes into a live u64 from an open, non-blocking eventfd.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
}

/// ns per `write active; poll(true)` over about `d`.
fn iter_cost(c: &IterCtx, d: Duration) -> f64 {
    let step = |k: u64| {
        for _ in 0..k {
            c.active.set().unwrap();
            c.ctx.poll(true);
        }
    };
    let t = Instant::now();
    step(100);
    let per = t.elapsed().as_nanos() as u64 / 100;
    let k = (d.as_nanos() as u64 / per.max(1)).clamp(200, 200_000);
    // ORDERING: Relaxed: this thread's own counter.
    let h0 = c.hits.load(Ordering::Relaxed);
    let t = Instant::now();
    step(k);
    let el = t.elapsed();
    assert_eq!(c.hits.load(Ordering::Relaxed) - h0, k, "the active handler missed iterations");
    el.as_nanos() as f64 / k as f64
}

const SIZES: [usize; 4] = [1, 64, 512, 3200];

pub(crate) fn part3(t: &mut Table, rounds: usize, d: Duration) {
    let nofile = raise_nofile();
    t.note(format!("3. RLIMIT_NOFILE soft raised to the hard limit: {nofile}"), "-", "info");
    let idle: Vec<EventFd> = (0..SIZES[3]).map(|_| EventFd::new().unwrap()).collect();
    for backend in ["ppoll", "epoll", "io_uring"] {
        let ctxs: Result<Vec<IterCtx>, _> =
            SIZES.iter().map(|&n| iter_ctx(backend, &idle[..n])).collect();
        let ctxs = match ctxs {
            Ok(c) => c,
            Err(e) => {
                t.note(
                    format!("3. {backend}: skipped, the backend is unavailable: {e}"),
                    "-",
                    "SKIP",
                );
                continue;
            }
        };
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); SIZES.len()];
        for r in 0..rounds {
            let mut order: Vec<usize> = (0..SIZES.len()).collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for i in order {
                runs[i].push(iter_cost(&ctxs[i], d));
            }
        }
        let st: Vec<Stat> = runs.iter().map(|v| stat(v.clone())).collect();
        // A single-thread cost: other jobs only add to it, so the ratio compares the best rounds.
        let ratio = |i: usize| stat(vec![st[i].min / st[0].min]);
        for (i, &n) in SIZES.iter().enumerate() {
            let m = format!(
                "3. {backend}: write active fd + poll(true), {n} idle fd handlers + 1 active"
            );
            if i == 0 {
                t.info(m, st[i], "ns/iter");
            } else if n == 3200 && backend != "ppoll" {
                let r = ratio(i);
                t.push(
                    m,
                    st[i],
                    "ns/iter",
                    Some(r.med),
                    "1 idle (best rounds)",
                    "<= 1.1 x cost(1)",
                    pass(r.med <= 1.1),
                );
            } else {
                t.push(
                    m,
                    st[i],
                    "ns/iter",
                    Some(ratio(i).med),
                    "1 idle (best rounds)",
                    "-",
                    "info",
                );
            }
        }
        if backend == "ppoll" {
            // Least-squares slope over the four sizes, per round (median, spread), and over each
            // size's best round (in the measure's name).
            let fit = |ys: Vec<f64>| {
                let xs: Vec<f64> = SIZES.iter().map(|&n| n as f64).collect();
                let mx = xs.iter().sum::<f64>() / xs.len() as f64;
                let my = ys.iter().sum::<f64>() / ys.len() as f64;
                let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
                let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
                num / den
            };
            let best = fit(st.iter().map(|s| s.min).collect());
            let slopes: Vec<f64> = (0..rounds)
                .map(|r| {
                    let xs: Vec<f64> = SIZES.iter().map(|&n| n as f64).collect();
                    let ys: Vec<f64> = runs.iter().map(|v| v[r]).collect();
                    let mx = xs.iter().sum::<f64>() / xs.len() as f64;
                    let my = ys.iter().sum::<f64>() / ys.len() as f64;
                    let num: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
                    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
                    num / den
                })
                .collect();
            t.push(
                format!(
                    "3. ppoll: slope (least squares over 1..3200 idle fds; best rounds: {best:.0})"
                ),
                stat(slopes),
                "ns/idle fd",
                None,
                "-",
                "- (reported)",
                "info",
            );
        }
    }
}
