//! QEMU's tests/unit/test-aio-multithread.c, written afresh for aioctx, plus the two coroutine tests
//! of test-aio.c adapted to bottom halves.
//!
//! What changed from QEMU, and why:
//! - There are no coroutines. QEMU's `/aio/multi/schedule` parks a coroutine in `to_schedule[id]` and
//!   yields; here a *worker BH* per context parks itself in `slots[id]` (an atomic word, taken with
//!   `swap` as QEMU's `qatomic_xchg`, set with a SeqCst store as `qatomic_set_mb`) and returns; being
//!   scheduled again is its wake-up. In QEMU a coroutine that finds no parked target still parks, so
//!   the number of runnable coroutines only shrinks and the hand-offs die out quickly; here a worker
//!   that finds nothing reschedules itself instead, so the number of runnable workers stays constant
//!   (two of five) and the cross-context hand-offs (a BH scheduled onto a context whose loop is
//!   blocked in `poll(true)`) continue for the whole duration.
//! - `/aio/multi/mutex/*` test QEMU's CoMutex, which aioctx does not have. The kept idea — five
//!   contexts passing work around, a counter under a lock against an atomic counter — becomes tokens
//!   that hop between contexts as oneshot BHs; losing a cross-thread oneshot shows up as a missing
//!   token (and as a hang, which the watchdog turns into a failure).
//! - `/aio/coroutine/worker-thread-co-enter`: a worker thread schedules work onto the main context;
//!   it runs there, on the main thread. `/aio/coroutine/queue-chaining`: two BHs scheduling each other
//!   25000 times from their callbacks are queued, never nested.
//!
//! Durations: `AIOCTX_STRESS_SECS` (default 1 s, as QEMU's quick tests; the full tier uses 10 s, as
//! QEMU's slow ones). Every test runs under a watchdog that fails instead of hanging.
#![allow(clippy::disallowed_types)] // tests use std directly: they never run under a checker

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use aioctx::{AioContext, Bh, BhRef, Handle, IoThread, Remote};

const NUM_CONTEXTS: usize = 5;

fn stress_secs() -> u64 {
    std::env::var("AIOCTX_STRESS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Run `f` on a thread; fail (not hang) if it does not finish within `secs`. `state` describes the
/// progress so far for the failure message.
fn watchdog<T: Send + 'static>(
    what: &str,
    secs: u64,
    state: impl Fn() -> String,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: hang: not finished after {secs} s; {}", state())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
    }
}

/// A small xorshift generator (one per worker; no shared state).
fn next_rand(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn spawn_all() -> Vec<IoThread> {
    (0..NUM_CONTEXTS).map(|i| IoThread::spawn(&format!("aio-multi-{i}")).unwrap()).collect()
}

// ------------------------------------------------------------------------------------------------
// /aio/multi/lifecycle

std::thread_local! {
    static ID: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Five IoThreads; a callback runs on each through `run_sync` (QEMU's `ctx_run`: a oneshot BH plus a
/// wait, which hangs if the wake-up of the blocked loop is lost); join all (a oneshot BH stops each).
#[test]
fn multi_lifecycle() {
    watchdog("/aio/multi/lifecycle", 30, String::new, || {
        let threads = spawn_all();
        for (i, t) in threads.iter().enumerate() {
            // QEMU's set_id_cb: runs on the context's own thread, inside its poll.
            let (name, in_poll) = t.run_sync(move || {
                ID.with(|c| c.set(Some(i)));
                let name = std::thread::current().name().map(str::to_string);
                (name, AioContext::with_current(|_| ()).is_some())
            });
            assert_eq!(name.as_deref(), Some(format!("aio-multi-{i}").as_str()));
            assert!(in_poll, "run_sync's callback runs inside the IoThread's poll");
        }
        for (i, t) in threads.iter().enumerate() {
            assert_eq!(t.run_sync(|| ID.with(|c| c.get())), Some(i), "the same thread every time");
        }
        for t in threads {
            t.join();
        }
    });
}

// ------------------------------------------------------------------------------------------------
// /aio/multi/schedule

/// Runnable workers at the start (the others start parked).
const ACTIVE: usize = 2;
/// A scheduled worker that has not run after this long was not woken (generous: two shared cores).
const LOST_WAKEUP: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Schedule {
    /// QEMU's `to_schedule[]`: 0 = empty, `w + 1` = worker w is parked here (always w == its index).
    slots: [AtomicUsize; NUM_CONTEXTS],
    workers: OnceLock<Vec<Bh<Remote>>>,
    stop: AtomicBool,
    /// Body executions per worker.
    runs: [AtomicU64; NUM_CONTEXTS],
    /// A worker was taken from a slot and scheduled onto its (other) context.
    taken: AtomicU64,
    /// Nothing parked where a worker looked: it rescheduled itself.
    retries: AtomicU64,
    /// Parked workers woken by the final wake-ups.
    finish_wakes: AtomicU64,
    exited: AtomicUsize,
    /// Per worker: when (ns since `t0`, plus 1) it was taken and scheduled onto its context; 0 once
    /// it ran. A context that stays asleep with its worker scheduled is a lost wake-up.
    scheduled_at: [AtomicU64; NUM_CONTEXTS],
    t0: OnceLock<Instant>,
    /// A worker found its own slot non-empty when it ran (QEMU: `g_assert(to_schedule[id] == NULL)`),
    /// or a slot held another worker than its own.
    violations: AtomicU64,
}

impl Schedule {
    fn total_runs(&self) -> u64 {
        self.runs.iter().map(|r| r.load(SeqCst)).sum()
    }
    fn describe(&self) -> String {
        format!(
            "runs {:?}, taken {}, retries {}, finish wakes {}, exited {}, slots {:?}",
            self.runs.iter().map(|r| r.load(SeqCst)).collect::<Vec<_>>(),
            self.taken.load(SeqCst),
            self.retries.load(SeqCst),
            self.finish_wakes.load(SeqCst),
            self.exited.load(SeqCst),
            self.slots.iter().map(|s| s.load(SeqCst)).collect::<Vec<_>>()
        )
    }
}

/// The worker of context `id` (QEMU's `test_multi_co_schedule_entry`, one iteration per run).
fn worker(w: Weak<Schedule>, id: usize) -> impl FnMut(&BhRef<'_>) + Send + 'static {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (id as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    move |_| {
        let Some(s) = w.upgrade() else { return };
        s.runs[id].fetch_add(1, SeqCst);
        s.scheduled_at[id].store(0, SeqCst);
        if s.slots[id].load(SeqCst) != 0 {
            s.violations.fetch_add(1, SeqCst);
        }
        if s.stop.load(SeqCst) {
            s.exited.fetch_add(1, SeqCst);
            return;
        }
        let workers = s.workers.get().unwrap();
        let n = (next_rand(&mut rng) % NUM_CONTEXTS as u64) as usize;
        // QEMU's schedule_next: take whoever is parked at n.
        match s.slots[n].swap(0, SeqCst) {
            0 => {
                s.retries.fetch_add(1, SeqCst);
                workers[id].schedule(); // stay runnable (see the header)
                return;
            }
            parked => {
                if parked != n + 1 {
                    s.violations.fetch_add(1, SeqCst);
                }
                s.taken.fetch_add(1, SeqCst);
                let at = s.t0.get().unwrap().elapsed().as_nanos() as u64 + 1;
                s.scheduled_at[n].store(at, SeqCst);
                workers[n].schedule();
            }
        }
        // Park (QEMU: qatomic_set_mb(&to_schedule[id], self); yield).
        s.slots[id].store(id + 1, SeqCst);
    }
}

/// Cross-context BH scheduling stress: lost wake-ups of a blocked `poll(true)` hang it (the watchdog
/// fails it); the counts must balance: every body execution was caused by exactly one schedule.
#[test]
fn multi_schedule() {
    let secs = stress_secs();
    let s = Arc::new(Schedule::default());
    let s2 = s.clone();
    let s3 = s.clone();
    watchdog(
        "/aio/multi/schedule",
        secs + 60,
        move || s3.describe(),
        move || {
            let s = s2;
            let threads = spawn_all();
            let workers: Vec<Bh<Remote>> = threads
                .iter()
                .enumerate()
                .map(|(i, t)| t.handle().bh_new(worker(Arc::downgrade(&s), i)))
                .collect();
            assert!(s.workers.set(workers).is_ok());
            assert!(s.t0.set(Instant::now()).is_ok());
            let workers = s.workers.get().unwrap();
            for (i, slot) in s.slots.iter().enumerate().skip(ACTIVE) {
                slot.store(i + 1, SeqCst);
            }
            for w in &workers[..ACTIVE] {
                w.schedule();
            }

            let t0 = *s.t0.get().unwrap();
            // A worker scheduled onto a context must run soon: that loop is blocked in poll(true)
            // with nothing else to do, and the schedule must wake it. Checked during the run, and
            // at the end until every schedule seen so far has been served (the final wake-ups below
            // would otherwise repair a lost one).
            let lost = |now: u64, n: usize, at: u64| {
                panic!(
                    "lost wake-up: worker {n} was scheduled onto its context {:?} ago and has not \
                     run: {}",
                    Duration::from_nanos(now.saturating_sub(at - 1)),
                    s.describe()
                )
            };
            while t0.elapsed() < Duration::from_secs(secs) {
                std::thread::sleep(Duration::from_millis(50));
                let now = t0.elapsed().as_nanos() as u64;
                for (n, at) in s.scheduled_at.iter().enumerate() {
                    let at = at.load(SeqCst);
                    if at != 0 && now.saturating_sub(at - 1) > LOST_WAKEUP.as_nanos() as u64 {
                        lost(now, n, at);
                    }
                }
            }
            let last: Vec<u64> = s.scheduled_at.iter().map(|a| a.load(SeqCst)).collect();
            for (n, &at) in last.iter().enumerate() {
                while at != 0 && s.scheduled_at[n].load(SeqCst) == at {
                    let now = t0.elapsed().as_nanos() as u64;
                    if now.saturating_sub(at - 1) > LOST_WAKEUP.as_nanos() as u64 {
                        lost(now, n, at);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }

            // Stop, then wake each context from its last wait (QEMU's finish_cb through ctx_run).
            s.stop.store(true, SeqCst);
            for (i, t) in threads.iter().enumerate() {
                let s4 = s.clone();
                t.run_sync(move || {
                    let parked = s4.slots[i].swap(0, SeqCst);
                    if parked != 0 {
                        if parked != i + 1 {
                            s4.violations.fetch_add(1, SeqCst);
                        }
                        s4.finish_wakes.fetch_add(1, SeqCst);
                        s4.workers.get().unwrap()[i].schedule();
                    }
                });
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while s.exited.load(SeqCst) < NUM_CONTEXTS {
                assert!(Instant::now() < deadline, "workers did not all exit: {}", s.describe());
                std::thread::sleep(Duration::from_millis(1));
            }
            for t in threads {
                t.join();
            }
        },
    );
    assert_eq!(s.exited.load(SeqCst), NUM_CONTEXTS, "{}", s.describe());
    assert_eq!(s.violations.load(SeqCst), 0, "a worker ran while parked: {}", s.describe());
    for (i, slot) in s.slots.iter().enumerate() {
        assert_eq!(slot.load(SeqCst), 0, "slot {i} not empty at the end: {}", s.describe());
    }
    let (taken, retries, wakes) =
        (s.taken.load(SeqCst), s.retries.load(SeqCst), s.finish_wakes.load(SeqCst));
    assert_eq!(
        s.total_runs(),
        ACTIVE as u64 + taken + retries + wakes,
        "every run has exactly one cause: {}",
        s.describe()
    );
    assert!(taken > 0, "no cross-context hand-off happened");
    println!(
        "/aio/multi/schedule: {secs} s, {} worker runs, {taken} cross-context hand-offs, {retries} \
         retries, {wakes} final wake-ups",
        s.total_runs()
    );
}

// ------------------------------------------------------------------------------------------------
// /aio/multi/mutex/contended (adapted)

struct Tokens {
    handles: Vec<Handle>,
    stop: AtomicBool,
    counter: Mutex<u64>,
    atomic_counter: AtomicU64,
    /// Hops per context.
    hops: [AtomicU64; NUM_CONTEXTS],
    done: AtomicUsize,
}

/// One hop of a token on context `i`: the counter under the lock, the atomic one after it, then on to
/// a random context as a oneshot BH.
fn hop(t: Arc<Tokens>, i: usize, mut rng: u64) {
    assert!(AioContext::with_current(|_| ()).is_some(), "a oneshot runs inside its context's poll");
    t.hops[i].fetch_add(1, SeqCst);
    *t.counter.lock().unwrap() += 1;
    t.atomic_counter.fetch_add(1, SeqCst);
    if t.stop.load(SeqCst) {
        t.done.fetch_add(1, SeqCst);
        return;
    }
    let j = (next_rand(&mut rng) % NUM_CONTEXTS as u64) as usize;
    let t2 = t.clone();
    t.handles[j].bh_oneshot(move || hop(t2, j, rng));
}

/// Five tokens hop between five contexts for the stress duration; none is lost, and the locked
/// counter equals the atomic one.
#[test]
fn multi_mutex_contended_tokens() {
    let secs = stress_secs();
    let out = Arc::new(Mutex::new(String::new()));
    let out2 = out.clone();
    let (hops, counter) = watchdog(
        "/aio/multi/mutex/contended (tokens)",
        secs + 60,
        move || out2.lock().unwrap().clone(),
        move || {
            let threads = spawn_all();
            let t = Arc::new(Tokens {
                handles: threads.iter().map(|t| t.handle().clone()).collect(),
                stop: AtomicBool::new(false),
                counter: Mutex::new(0),
                atomic_counter: AtomicU64::new(0),
                hops: Default::default(),
                done: AtomicUsize::new(0),
            });
            for i in 0..NUM_CONTEXTS {
                let t2 = t.clone();
                t.handles[i].bh_oneshot(move || hop(t2, i, 0x2545_F491_4F6C_DD1D ^ (i as u64 + 1)));
            }
            std::thread::sleep(Duration::from_secs(secs));
            t.stop.store(true, SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while t.done.load(SeqCst) < NUM_CONTEXTS {
                *out.lock().unwrap() = format!("tokens done {}", t.done.load(SeqCst));
                assert!(
                    Instant::now() < deadline,
                    "a token was lost ({} of 5 done)",
                    t.done.load(SeqCst)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let hops: Vec<u64> = t.hops.iter().map(|h| h.load(SeqCst)).collect();
            let counter = *t.counter.lock().unwrap();
            assert_eq!(counter, t.atomic_counter.load(SeqCst));
            drop(t);
            for th in threads {
                th.join();
            }
            (hops, counter)
        },
    );
    assert_eq!(hops.iter().sum::<u64>(), counter);
    assert!(hops.iter().all(|&h| h > 0), "every context ran tokens: {hops:?}");
    println!("/aio/multi/mutex/contended (tokens): {secs} s, {counter} hops, per context {hops:?}");
}

// ------------------------------------------------------------------------------------------------
// test-aio.c /aio/coroutine/*, adapted to BHs

/// `/aio/coroutine/worker-thread-co-enter`: a worker thread (not the loop's) schedules work onto the
/// main context; it is queued there, not run on the worker, and runs on the main thread in the next
/// poll. Then nothing is left.
#[test]
fn worker_thread_schedules_onto_main_context() {
    watchdog("/aio/coroutine/worker-thread-co-enter", 30, String::new, || {
        let ctx = AioContext::new().unwrap();
        while ctx.poll(false) {}
        let main = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(None));
        let (h, r2) = (ctx.handle().clone(), ran_on.clone());
        std::thread::spawn(move || {
            h.bh_oneshot(move || *r2.lock().unwrap() = Some(std::thread::current().id()));
        })
        .join()
        .unwrap();
        assert_eq!(*ran_on.lock().unwrap(), None, "not run on the worker thread");
        assert!(ctx.poll(true));
        assert_eq!(*ran_on.lock().unwrap(), Some(main), "runs on the context's home thread");
        assert!(!ctx.poll(false));
    });
}

/// `/aio/coroutine/queue-chaining`: A schedules B and B schedules A from their callbacks, 25000 times
/// each way; every schedule is queued for a later poll, never run nested (no stack growth).
#[test]
fn bh_queue_chaining_never_nests() {
    const MAX: u64 = 25_000;
    let ctx = AioContext::new().unwrap();
    let depth = Arc::new(AtomicUsize::new(0));
    let (a_n, b_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Home-thread BHs: the slots need no lock and no `Send` (Rc, OnceCell).
    let a_slot: Rc<OnceCell<Bh>> = Rc::default();
    let b_slot: Rc<OnceCell<Bh>> = Rc::default();
    let (d1, n1, bs) = (depth.clone(), a_n.clone(), Rc::downgrade(&b_slot));
    let a = ctx.bh_new(move |_| {
        assert_eq!(d1.fetch_add(1, SeqCst), 0, "nested");
        if n1.fetch_add(1, SeqCst) + 1 < MAX {
            bs.upgrade().unwrap().get().unwrap().schedule();
        }
        d1.fetch_sub(1, SeqCst);
    });
    let (d2, n2, as_) = (depth.clone(), b_n.clone(), Rc::downgrade(&a_slot));
    let b = ctx.bh_new(move |_| {
        assert_eq!(d2.fetch_add(1, SeqCst), 0, "nested");
        n2.fetch_add(1, SeqCst);
        as_.upgrade().unwrap().get().unwrap().schedule();
        d2.fetch_sub(1, SeqCst);
    });
    assert!(a_slot.set(a).is_ok() && b_slot.set(b).is_ok());
    a_slot.get().unwrap().schedule();
    let mut polls = 0u64;
    while ctx.poll(false) {
        polls += 1;
    }
    assert_eq!(a_n.load(SeqCst), MAX);
    assert_eq!(b_n.load(SeqCst), MAX - 1);
    assert_eq!(polls, 2 * MAX - 1, "one callback per poll: each schedule waits for the next poll");
}

/// The removed `/aio/acquire` (2013–2023), without the context lock aioctx does not have: the main
/// thread blocks in `poll(true)` while holding a lock; another thread kicks a registered eventfd and
/// then takes the lock. The kick must wake the blocked poll, which returns true (the dummy handler
/// ran) and only then lets the other thread have the lock.
#[test]
fn kick_from_other_thread_wakes_blocked_poll_before_lock_handoff() {
    use aioctx::sys::EventFd;
    use aioctx::FdHandler;
    watchdog("/aio/acquire (adapted)", 30, String::new, || {
        let ctx = AioContext::new().unwrap();
        let e = Arc::new(EventFd::new().unwrap());
        let n = Arc::new(AtomicU64::new(0));
        let (e2, n2) = (e.clone(), n.clone());
        ctx.set_fd_handler(
            e.fd(),
            FdHandler::new().on_read(move |_| {
                e2.test_and_clear().unwrap();
                n2.fetch_add(1, SeqCst);
            }),
        )
        .unwrap();
        while ctx.poll(false) {}
        let lock = Arc::new(Mutex::new(false)); // true once the poll returned
        let guard = lock.lock().unwrap();
        let (l2, e3) = (lock.clone(), e.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            e3.set().unwrap();
            let polled = *l2.lock().unwrap();
            assert!(polled, "got the lock before the blocked poll returned");
        });
        let mut guard = guard;
        assert!(ctx.poll(true), "the kick ran the dummy handler: progress");
        assert_eq!(n.load(SeqCst), 1);
        *guard = true;
        drop(guard);
        t.join().unwrap();
        ctx.remove_fd_handler(e.fd()).unwrap();
    });
}
