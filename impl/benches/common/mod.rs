//! Helpers shared by the `loop` and `polling` benches (each includes this file with `mod common;`;
//! a folder without a `main.rs` is no bench target of its own): the counters of the calling thread,
//! the responder's measuring window, the median and spread over rounds, CPU pinning, the atomic
//! cache-line ping-pong (both benches' hardware floor), the table's rows and layout, the TSV path,
//! the watchdog and the panic hook.
//!
//! What only one bench uses stays in that bench (an inherent `impl Counts` there adds its own
//! accessors).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------
// Syscall, context-switch and CPU counters of the calling thread.

/// A snapshot of the calling thread's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// All syscalls (perf tracepoint), if available.
    pub sys: Option<u64>,
    /// Read-class syscalls (/proc/thread-self/io `syscr`).
    pub syscr: u64,
    /// Write-class syscalls (`syscw`).
    pub syscw: u64,
    /// Voluntary context switches (the thread blocked; getrusage RUSAGE_THREAD).
    pub nvcsw: u64,
    /// Involuntary context switches (preempted; getrusage RUSAGE_THREAD).
    pub nivcsw: u64,
    /// User + system CPU time of the thread, ns (getrusage RUSAGE_THREAD, µs resolution).
    pub cpu_ns: u64,
}

impl Counts {
    pub fn sub(self, o: Counts) -> Counts {
        Counts {
            sys: self.sys.zip(o.sys).map(|(a, b)| a.wrapping_sub(b)),
            syscr: self.syscr.wrapping_sub(o.syscr),
            syscw: self.syscw.wrapping_sub(o.syscw),
            nvcsw: self.nvcsw.wrapping_sub(o.nvcsw),
            nivcsw: self.nivcsw.wrapping_sub(o.nivcsw),
            cpu_ns: self.cpu_ns.wrapping_sub(o.cpu_ns),
        }
    }
    pub fn add(self, o: Counts) -> Counts {
        Counts {
            sys: self.sys.zip(o.sys).map(|(a, b)| a + b),
            syscr: self.syscr + o.syscr,
            syscw: self.syscw + o.syscw,
            nvcsw: self.nvcsw + o.nvcsw,
            nivcsw: self.nivcsw + o.nivcsw,
            cpu_ns: self.cpu_ns + o.cpu_ns,
        }
    }
}

/// `struct perf_event_attr` (PERF_ATTR_SIZE_VER5 and later are supersets; 128 bytes, zeroed tail).
#[repr(C)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    rest: [u64; 14],
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// The id of the `raw_syscalls:sys_enter` tracepoint (tracefs is mounted on first access).
fn sys_enter_id() -> Option<u64> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().find_map(|d| {
        let s = std::fs::read_to_string(format!("{d}/events/raw_syscalls/sys_enter/id")).ok()?;
        s.trim().parse().ok()
    })
}

/// Counters of the thread that creates it (`perf_event_open` with pid 0 counts the calling thread).
pub struct Meter {
    pub perf: Option<OwnedFd>,
    /// What one `snap` costs (its own syscalls), measured at creation.
    cost: Counts,
}

impl Meter {
    pub fn new() -> Meter {
        let perf = sys_enter_id().and_then(|id| {
            let attr = PerfEventAttr {
                type_: PERF_TYPE_TRACEPOINT,
                size: std::mem::size_of::<PerfEventAttr>() as u32,
                config: id,
                rest: [0; 14], // enabled at once, not inherited, kernel and user counted
            };
            // SAFETY:
            // - `attr` is a valid, initialised perf_event_attr of the size it declares, alive for the
            //   call; pid 0 / cpu -1 / group -1 select "this thread, any CPU, no group".
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const PerfEventAttr,
                    0 as libc::pid_t,
                    -1 as libc::c_int,
                    -1 as libc::c_int,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            // SAFETY:
            // - a non-negative return is a new fd that nothing else owns.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
        });
        let mut m = Meter { perf, cost: Counts::default() };
        let a = m.snap();
        let b = m.snap();
        m.cost = b.sub(a);
        m
    }

    /// This thread's syscalls so far (perf), this read included; None without perf. One syscall.
    pub fn syscalls(&self) -> Option<u64> {
        self.perf.as_ref().and_then(|fd| {
            let mut v = 0u64;
            // SAFETY:
            // - `v` is 8 writable bytes; a perf fd with read_format 0 returns one u64.
            let n =
                unsafe { libc::read(fd.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
            (n == 8).then_some(v)
        })
    }

    pub fn snap(&self) -> Counts {
        let sys = self.syscalls();
        let (syscr, syscw) = proc_io();
        let ru = rusage(libc::RUSAGE_THREAD);
        Counts {
            sys,
            syscr,
            syscw,
            nvcsw: ru.ru_nvcsw as u64,
            nivcsw: ru.ru_nivcsw as u64,
            cpu_ns: tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime),
        }
    }

    /// The counts between `start` and a snapshot taken now, the snapshots' own syscalls (their
    /// cost, measured at creation) removed.
    pub fn since(&self, start: Counts) -> Counts {
        let d = self.snap().sub(start);
        Counts {
            sys: d.sys.zip(self.cost.sys).map(|(d, c)| d.saturating_sub(c)),
            syscr: d.syscr.saturating_sub(self.cost.syscr),
            syscw: d.syscw.saturating_sub(self.cost.syscw),
            ..d
        }
    }
}

/// `getrusage(who)`: RUSAGE_THREAD (the calling thread) or RUSAGE_SELF (the whole process).
pub fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY:
    // - an all-zero rusage is a valid value; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY:
    // - `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    ru
}

/// A `timeval` in ns.
pub fn tv_ns(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000
}

/// `syscr` and `syscw` of the calling thread.
fn proc_io() -> (u64, u64) {
    let mut buf = [0u8; 512];
    let mut f =
        File::open("/proc/thread-self/io").expect("/proc/thread-self/io (task I/O accounting)");
    let n = f.read(&mut buf).expect("read /proc/thread-self/io");
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {k} in /proc/thread-self/io"))
    };
    (field("syscr:"), field("syscw:"))
}

/// Window bookkeeping for the responder thread: opens its meter at round `w`, closes it at `w + n`.
pub struct BWindow {
    w: u64,
    n: u64,
    i: u64,
    meter: Option<(Meter, Counts)>,
    out: Arc<Mutex<Option<Counts>>>,
}

impl BWindow {
    /// The window and where it puts the responder's counts when it closes.
    pub fn new(w: u64, n: u64) -> (BWindow, Arc<Mutex<Option<Counts>>>) {
        let out = Arc::new(Mutex::new(None));
        (BWindow { w, n, i: 0, meter: None, out: out.clone() }, out)
    }
    /// Call on receiving a ping, before replying.
    pub fn before_reply(&mut self) {
        if self.i == self.w {
            let m = Meter::new();
            let s = m.snap();
            self.meter = Some((m, s));
        }
    }
    /// Call after replying.
    pub fn after_reply(&mut self) {
        self.i += 1;
        if self.i == self.w + self.n {
            if let Some((m, s)) = self.meter.take() {
                *self.out.lock().unwrap() = Some(m.since(s));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Statistics over rounds.

#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub med: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stat(mut v: Vec<f64>) -> Stat {
    assert!(!v.is_empty());
    // total_cmp: a NaN (a run that measured nothing, e.g. an atomic ping-pong starved of CPU on a
    // loaded machine) sorts last instead of panicking the whole bench.
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Stat { med, min: v[0], max: v[n - 1] }
}

// ---------------------------------------------------------------------------------------------------
// CPU affinity (the spinning round trips pin their two threads to two CPUs).

/// The calling thread's CPU affinity mask.
pub fn affinity() -> libc::cpu_set_t {
    // SAFETY:
    // - an all-zero cpu_set_t is a valid (empty) set; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    set
}

pub fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

/// A set holding only `cpu`.
pub fn only_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; `cpu` is below CPU_SETSIZE (it came from CPU_ISSET).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// The first two CPUs this process may use (None: only one), as the process started (so a thread
/// that is pinned already still gets both).
pub fn two_cpus() -> Option<(usize, usize)> {
    static CPUS: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(two_cpus_now)
}

fn two_cpus_now() -> Option<(usize, usize)> {
    let orig = affinity();
    // SAFETY: CPU_ISSET reads one bit of a valid set, for indices below CPU_SETSIZE.
    let is_set = |c: usize| unsafe { libc::CPU_ISSET(c, &orig) };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize).filter(|&c| is_set(c)).take(2).collect();
    (cpus.len() == 2).then(|| (cpus[0], cpus[1]))
}

// ---------------------------------------------------------------------------------------------------
// The atomic cache-line ping-pong (odd: ping, even: pong, `STOP`: stop).

/// The ping-pong's word, alone in its cache line(s).
#[repr(align(128))]
struct Line(AtomicU64);

/// The word's value that ends the responder.
const STOP: u64 = u64::MAX;

/// Spin until `x` satisfies `f`; returns the value.
fn spin(x: &AtomicU64, f: impl Fn(u64) -> bool) -> u64 {
    loop {
        // ORDERING: Acquire: pairs with the partner's Release store of the value it hands over.
        let v = x.load(Ordering::Acquire);
        if f(v) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// One run of the atomic ping-pong, as thread A (the caller) saw it.
pub struct AtomicRun {
    /// ns per round trip of each block of `block` round trips after the warm-up, in run order.
    pub blocks: Vec<f64>,
    /// The whole run, warm-up included.
    #[allow(dead_code)] // loop.rs reports the blocks only
    pub el: Duration,
    /// Round trips done, warm-up included (at least 1).
    pub rts: u64,
    /// Both threads' counters over the whole run.
    pub counts: Counts,
}

/// Two threads spinning on one AtomicU64: the hardware floor of a cross-thread hand-off, with no
/// sleeping at all. The caller is thread A; B is spawned for the run. With two CPUs available the
/// two are pinned to the first two (A to the first, B to the second) and A's mask is restored at
/// the end.
///
/// `w` warm-up round trips, then A times blocks of `block` round trips counted from the end of the
/// warm-up (a block in which a thread was preempted measures the scheduler: the callers report a
/// low percentile of the blocks). The run stops after `w + n` round trips or 300 ms, whichever
/// comes first.
pub fn atomic_ping_pong(w: u64, n: u64, block: u64) -> AtomicRun {
    let budget = Duration::from_millis(300);
    let orig = affinity();
    let cpus = two_cpus();
    let x = Arc::new(Line(AtomicU64::new(0)));
    let x2 = x.clone();
    let b = thread::spawn(move || {
        if let Some((_, c1)) = cpus {
            set_affinity(&only_cpu(c1));
        }
        let m = Meter::new();
        let start = m.snap();
        loop {
            let v = spin(&x2.0, |v| v % 2 == 1);
            if v == STOP {
                return m.since(start);
            }
            // ORDERING: Release: the pong; pairs with A's Acquire in `spin`.
            x2.0.store(v + 1, Ordering::Release);
        }
    });
    if let Some((c0, _)) = cpus {
        set_affinity(&only_cpu(c0));
    }
    let m = Meter::new();
    let start = m.snap();
    let t_end = Instant::now() + budget;
    let mut blocks = Vec::new();
    let mut v = 0;
    let t_all = Instant::now();
    let mut t = t_all;
    // The clock is read only every `block` round trips (and at the end of the warm-up): on a KVM
    // guest a clock_gettime on the hand-off's path adds ~90 ns to each round trip (it nearly
    // doubled this reference when the budget was checked every round trip), and a division per
    // round trip costs too, so a countdown marks the block ends.
    let mut left = if w == 0 { block } else { w };
    while v / 2 < w + n {
        // ORDERING: Release: the ping; pairs with B's Acquire in `spin`.
        x.0.store(v + 1, Ordering::Release);
        v = spin(&x.0, |y| y == v + 2);
        left -= 1;
        if left == 0 {
            let now = Instant::now();
            if v / 2 > w {
                blocks.push(now.duration_since(t).as_nanos() as f64 / block as f64);
            }
            t = now;
            left = block;
            if now >= t_end {
                break;
            }
        }
    }
    let el = t_all.elapsed();
    let rts = (v / 2).max(1);
    let ca = m.since(start);
    // ORDERING: Release: ends B (its `spin` reads STOP with Acquire).
    x.0.store(STOP, Ordering::Release);
    let cb = b.join().unwrap();
    set_affinity(&orig);
    AtomicRun { blocks, el, rts, counts: ca.add(cb) }
}

// ---------------------------------------------------------------------------------------------------
// The hand model: QEMU's BH hand-off written out with aioctx's atomics and fences and nothing
// around them (polling.rs: the protocol's floor for a round trip; loop.rs: for one schedule + poll).

/// A context of the hand model: the fields a kick touches, on a 128-byte block of their own (as
/// aioctx's `Shared`).
#[repr(C, align(128))]
pub struct HandCtx {
    notified: AtomicBool,
    list: AtomicPtr<HandBh>,
    notify_me: AtomicU32,
}

/// A BH of the hand model (heap-allocated, as aioctx's): its flags and its list link.
pub struct HandBh {
    flags: AtomicU32,
    next: AtomicPtr<HandBh>,
}

const HAND_PENDING: u32 = 1;
const HAND_SCHEDULED: u32 = 2;
const HAND_DELETED: u32 = 8;

impl HandCtx {
    pub fn new() -> HandCtx {
        HandCtx {
            notified: AtomicBool::new(false),
            list: AtomicPtr::new(std::ptr::null_mut()),
            notify_me: AtomicU32::new(0),
        }
    }

    /// aioctx's `enqueue(SCHEDULED)` without the notify: set the flags; push if PENDING was clear.
    ///
    /// # Safety
    ///
    /// `b` came from [`HandBh::alloc`] and is not freed yet.
    pub unsafe fn enqueue(&self, b: *mut HandBh) {
        // SAFETY: the caller's obligation.
        let bh = unsafe { &*b };
        // ORDERING (here and below: as in aioctx's bh.rs and notify.rs, whose comments name the pairs).
        if bh.flags.fetch_or(HAND_PENDING | HAND_SCHEDULED, Ordering::AcqRel) & HAND_PENDING == 0 {
            let mut h = self.list.load(Ordering::Relaxed);
            loop {
                bh.next.store(h, Ordering::Relaxed);
                match self.list.compare_exchange_weak(h, b, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(x) => h = x,
                }
            }
        }
    }

    /// aioctx's `notify` (the hand model never arms: the eventfd write is never due).
    pub fn notify(&self) {
        fence(Ordering::Release);
        self.notified.swap(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        assert_eq!(self.notify_me.load(Ordering::Relaxed), 0, "the hand model never arms");
    }

    /// What a polling loop watches.
    #[allow(dead_code)] // loop.rs's bare loop never waits
    pub fn notified(&self) -> bool {
        self.notified.load(Ordering::Relaxed)
    }

    /// aioctx's `notify_accept`.
    pub fn accept(&self) {
        self.notified.swap(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// aioctx's `HomeBhs::poll` for one slice: take the list, dequeue each BH (a swap to 0), `call()`
    /// for each scheduled one. Returns how many were called.
    pub fn run_bhs(&self, mut call: impl FnMut()) -> u64 {
        let mut p = self.list.swap(std::ptr::null_mut(), Ordering::Acquire);
        let mut calls = 0;
        while !p.is_null() {
            // SAFETY: a listed BH is alive (`enqueue`'s caller keeps it until its last poll).
            let bh = unsafe { &*p };
            p = bh.next.load(Ordering::Relaxed);
            if bh.flags.swap(0, Ordering::AcqRel) & (HAND_SCHEDULED | HAND_DELETED)
                == HAND_SCHEDULED
            {
                call();
                calls += 1;
            }
        }
        calls
    }
}

impl HandBh {
    /// A new BH, to be freed with [`HandBh::free`].
    pub fn alloc() -> *mut HandBh {
        Box::into_raw(Box::new(HandBh { flags: AtomicU32::new(0), next: AtomicPtr::default() }))
    }

    /// # Safety
    ///
    /// `b` came from [`HandBh::alloc`], is freed once, and no thread uses it any more.
    pub unsafe fn free(b: *mut HandBh) {
        // SAFETY: the caller's obligations.
        drop(unsafe { Box::from_raw(b) });
    }
}

// ---------------------------------------------------------------------------------------------------
// The run: the text table, the TSV path, the watchdog, panics.

/// One row of the table (and of the TSV file).
pub struct Row {
    pub measure: String,
    pub value: f64,
    pub spread: String,
    pub unit: &'static str,
    pub ratio: Option<f64>,
    pub reference: String,
    pub target: String,
    pub result: &'static str,
}

/// The text table: a header, a rule, one line per row of eight cells (measure, value, spread,
/// unit, ratio, vs, target, result); the value and ratio columns are right-aligned. `fmt_v` writes
/// the value (each bench has its own digits).
pub fn render(rows: &[Row], fmt_v: fn(f64) -> String) -> String {
    let head = ["measure", "value", "spread (min..max)", "unit", "ratio", "vs", "target", "result"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.measure.clone(),
                fmt_v(r.value),
                r.spread.clone(),
                r.unit.to_string(),
                r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
                r.reference.clone(),
                r.target.clone(),
                r.result.to_string(),
            ]
        })
        .collect();
    let mut wd = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            wd[i] = wd[i].max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, x) in c.iter().enumerate() {
            let pad = wd[i] - x.chars().count();
            if i == 1 || i == 4 {
                let _ = write!(s, "{}{}  ", " ".repeat(pad), x);
            } else {
                let _ = write!(s, "{}{}  ", x, " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&head.map(String::from));
    out += "\n";
    out += &wd.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ");
    out += "\n";
    for c in &cells {
        out += &line(c);
        out += "\n";
    }
    out
}

/// The TSV file's header line.
pub const TSV_HEAD: &str = "measure\tvalue\tmin_max\tunit\tratio\treference\ttarget\tresult\n";

/// One TSV line of `r`, its measure and value written as the bench names them (`name`, `value`).
pub fn tsv_line(s: &mut String, name: &str, value: &str, r: &Row) {
    let _ = writeln!(
        s,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        name,
        value,
        r.spread,
        r.unit,
        r.ratio.map_or(String::new(), |x| format!("{x:.4}")),
        r.reference,
        r.target,
        r.result
    );
}

/// `$CARGO_TARGET_DIR/<bench>.tsv`, else `<target>/<bench>.tsv` next to the binary's `release/deps`.
pub fn default_tsv_path(bench: &str) -> std::path::PathBuf {
    let file = format!("{bench}.tsv");
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return std::path::PathBuf::from(d).join(file);
    }
    // <target>/release/deps/<bench>-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(|t| t.join(&file)).unwrap_or_else(|| file.into())
}

/// Abort the process if the bench hangs (a lost wake-up, kick or interrupt would block a ping-pong
/// or a side forever). Returns the setter of the phase the abort message names.
pub fn watchdog(bench: &'static str, limit: Duration) -> impl Fn(&'static str) {
    let phase = Arc::new(Mutex::new("setup"));
    let set = phase.clone();
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!(
            "{bench} bench: no end after {limit:?}, in phase {:?}: lost wake-up?",
            phase.lock().unwrap()
        );
        std::process::exit(3);
    });
    move |p| *set.lock().unwrap() = p
}

/// A panic on a helper thread would leave its partner blocked forever: fail the whole run.
pub fn exit_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
}

/// A value for the tables: "-" for none (NaN), fewer decimals the larger it is.
pub fn fmt_v(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.5}")
    }
}

/// A statistic's spread for the table: "min..max".
pub fn spread(s: Stat) -> String {
    format!("{}..{}", fmt_v(s.min), fmt_v(s.max))
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg gives them ("?" if unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
