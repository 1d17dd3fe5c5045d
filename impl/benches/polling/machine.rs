//! The machine: the load over a part of the run, CPU affinity (parts 1, 2 and 4 pin their two
//! threads, as loop.rs's atomic reference does; the helpers are common), and the calling thread's
//! syscall count.

use std::thread;
use std::time::Instant;

use crate::common::{affinity, only_cpu, rusage, set_affinity, tv_ns, Counts};

// Counters of the calling thread: common::Counts (from loop.rs, plus voluntary context switches on
// their own; loop.rs adds both kinds up).
impl Counts {
    /// All syscalls if perf is available, else read + write syscalls.
    pub(crate) fn syscalls(&self) -> u64 {
        self.sys.unwrap_or(self.syscr + self.syscw)
    }
}

// ---------------------------------------------------------------------------------------------------
// Machine load.

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Machine CPU busy and this process's CPU over a part of the run.
pub(crate) struct LoadProbe {
    jiffies: (u64, u64),
    self_ns: u64,
    t: Instant,
}

impl LoadProbe {
    pub(crate) fn start() -> LoadProbe {
        let ru = rusage(libc::RUSAGE_SELF);
        LoadProbe {
            jiffies: cpu_jiffies(),
            self_ns: tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime),
            t: Instant::now(),
        }
    }
    /// (machine busy, this process, everything else) in cores.
    pub(crate) fn finish(&self) -> (f64, f64, f64) {
        let (b1, t1) = cpu_jiffies();
        let ru = rusage(libc::RUSAGE_SELF);
        let self_ns = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime) - self.self_ns;
        let wall = self.t.elapsed().as_secs_f64();
        let ncpu = nprocs() as f64;
        let busy_frac = (b1 - self.jiffies.0) as f64 / (t1 - self.jiffies.1).max(1) as f64;
        let busy = busy_frac * ncpu;
        let mine = self_ns as f64 / 1e9 / wall;
        (busy, mine, (busy - mine).max(0.0))
    }
}

pub(crate) fn nprocs() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu` until dropped (then restores its mask).
pub(crate) struct Pin(libc::cpu_set_t);

impl Pin {
    pub(crate) fn to(cpu: Option<usize>) -> Pin {
        let orig = affinity();
        if let Some(c) = cpu {
            set_affinity(&only_cpu(c));
        }
        Pin(orig)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        set_affinity(&self.0);
    }
}
