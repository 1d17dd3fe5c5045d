//! Scenarios over the REAL aioctx code, shared by the loom harnesses (`loom_*.rs`, `--cfg
//! aioctx_loom`) and the shuttle harnesses (`shuttle_*.rs`, `--cfg aioctx_shuttle`).
//!
//! Each scenario builds a context on the model's main thread (the home thread: `AioContext` is
//! `!Send`), hands `Handle`s to threads spawned with `aioctx::sync::thread::spawn`, and drives the
//! real `poll` / `prepare` / `check` / `dispatch`. Under both checkers the builder uses the model
//! kernel (`ModelKernel`: model fds, a model notifier and fd monitor over a facade Mutex +
//! Condvar), so a blocked wait is a facade condvar wait and a lost wakeup is a deadlock the checker
//! reports. The facade's runner renames it `p_no_lost_wakeup violated`, and a loop that never
//! settles (loom's branch limit, shuttle's step limit) `p_no_busy_loop violated`.
//!
//! The size parameter ([`Size`]) scales a scenario: loom runs each with two remote threads doing one
//! thing each (3 threads in all, exhaustive up to the preemption bound); shuttle runs them with 4-8
//! remote threads doing 4-8 things each, paced in rounds by a [`Gate`] (random and PCT schedules).
//!
//! # Properties (the strings the assertions panic with)
//!
//! - `p_no_lost_wakeup`: no execution ends with the home thread blocked in a wait while work is
//!   pending (deadlock)
//! - `p_no_busy_loop`: no execution loops without blocking or finishing (loom: branch limit;
//!   shuttle: step limit)
//! - `p_bh_runs_once`: a BH scheduled once runs exactly once, on the home thread
//! - `p_progress_exact`: `poll` returns true iff a BH, handler or timer callback ran in it; a
//!   notify alone is not progress
//! - `p_request_consumed`: a request pushed to a polled device is consumed (no hang in poll mode,
//!   at poll-mode end, or at idle removal)
//! - `p_poll_end_follows_begin`: `io_poll_end` runs once after every `io_poll_begin` (also when the
//!   context is dropped)
//! - `p_no_call_after_remove`: no callback of a handler starts after `remove_fd_handler` returned
//!   (one already dispatched may finish)
//! - `p_timer_not_early`: a timer runs at or after its deadline, exactly once per arming
//!
//! # Home-only bookkeeping
//!
//! Counters that only the home thread touches (written by callbacks, which run on the home thread,
//! and read by the home loop) are std atomics in a std `Arc` ([`HomeCount`]), invisible to the
//! checkers on purpose: no other thread reads them, so facade atomics would only add scheduling
//! points that explore nothing new. Everything another thread touches uses the facade.
#![allow(dead_code)]
#![allow(clippy::disallowed_types)] // std atomics for home-only bookkeeping, see above

pub mod task;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, AtomicUsize as StdAtomicUsize};
use std::sync::Arc as StdArc;
use std::time::Duration;

use aioctx::kernel::{FdMonitor, ModelFdMonitor};
use aioctx::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use aioctx::sync::{thread, Arc, Condvar, Mutex};
use aioctx::{AioContext, Backend, Clock, FdHandler, FdRef, ModelClock, ModelKernel};

/// How big a scenario is: `remotes` threads besides the home thread, each doing `per_remote`
/// things.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Remote threads (the home thread is extra).
    pub remotes: usize,
    /// Operations per remote thread.
    pub per_remote: usize,
}

impl Size {
    /// loom: two remote threads doing one thing each (3 threads in all).
    pub const LOOM: Size = Size { remotes: 2, per_remote: 1 };
    /// shuttle: `remotes` threads doing `per_remote` things each.
    pub const fn shuttle(remotes: usize, per_remote: usize) -> Size {
        Size { remotes, per_remote }
    }
    fn total(self) -> usize {
        self.remotes * self.per_remote
    }
}

/// Owns a value whose drop touches the model (an `AioContext`, a `Bh`, a `Timer`, the join handles
/// of threads that return them) and leaks it instead while the thread unwinds. When loom reports a
/// deadlock it panics with no active thread left, and a model operation in a destructor during that
/// unwinding would abort the whole test binary instead of failing (or, with a planted bug, passing)
/// the `should_panic` test. Dropped normally otherwise.
pub struct Keep<T>(std::mem::ManuallyDrop<T>);

impl<T> Keep<T> {
    pub fn new(v: T) -> Self {
        Keep(std::mem::ManuallyDrop::new(v))
    }
    pub fn into_inner(mut self) -> T {
        // SAFETY: `self` is forgotten right after, so the value is taken exactly once.
        let v = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        std::mem::forget(self);
        v
    }
}

impl<T> std::ops::Deref for Keep<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Keep<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> Drop for Keep<T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: dropped exactly once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.0) }
        }
    }
}

/// shuttle: run `f` under each scheduler of `AIOCTX_SHUTTLE_SCHED` (a comma-separated list; default
/// `pct,random`), one [`aioctx::sync::model_named`] run each, with the runner's other knobs
/// (`AIOCTX_SHUTTLE_ITERS`, `_SEED`, `_DEPTH`) as set. The two schedulers find different planted
/// bugs (PCT demotes a thread at every `spin_loop`, so it cannot reach some windows that random
/// schedules reach, and vice versa), so a scenario's `should_panic` means "caught by at least one
/// of them"; the output says which (a `MODEL` line for each scheduler that completed).
///
/// The runner reads the scheduler from the environment; runs in one test binary are serialised by a
/// lock held across the `set_var` and the run, so parallel tests never see each other's setting.
pub fn shuttle_model<F>(name: &str, f: F)
where
    F: Fn() + Send + Sync + Clone + 'static,
{
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let list = std::env::var("AIOCTX_SHUTTLE_SCHED").unwrap_or_else(|_| "pct,random".into());
    let scheds: Vec<String> = list.split(',').map(|x| x.trim().to_string()).collect();
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            std::env::set_var("AIOCTX_SHUTTLE_SCHED", &self.0);
        }
    }
    let _restore = Restore(list.clone());
    for sched in scheds {
        assert!(
            sched == "pct" || sched == "random",
            "AIOCTX_SHUTTLE_SCHED: unknown scheduler {sched}"
        );
        std::env::set_var("AIOCTX_SHUTTLE_SCHED", &sched);
        aioctx::sync::model_named(name, f.clone());
    }
}

/// A counter only the home thread touches (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct HomeCount(StdArc<StdAtomicUsize>);

impl HomeCount {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn inc(&self) -> usize {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }
    pub fn set(&self, v: usize) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed)
    }
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A clock that only the home thread reads, moving 1 µs per read. With it a poll's polling +
/// waiting time is never zero, so a poll handler's adaptive window grows from 0 to 4 µs on its
/// first dispatch (on the kernel's model clock, which moves only when a wait times out, the window
/// would stay 0 and nothing would ever be polled). Under the checkers `try_poll_mode` is also
/// bounded by a fixed number of rounds (`MODEL_POLL_ROUNDS`), so the tick only decides the window
/// and idle deadlines.
///
/// With a `base` (the kernel's model clock) it reads `base + ticks`, so a model wait that times out
/// (it moves the kernel clock to its deadline) moves this clock too: needed when timers run on it.
/// Without one it adds no model operation (loom explores no extra interleavings for it).
#[derive(Debug, Default, Clone)]
pub struct TickClock {
    ns: StdArc<StdAtomicU64>,
    base: Option<Arc<ModelClock>>,
    /// No more ticks ([`TickClock::stop`]).
    stopped: StdArc<std::sync::atomic::AtomicBool>,
}

impl TickClock {
    /// Ticks on top of the kernel's model clock (see the type's docs).
    pub fn on(base: Arc<ModelClock>) -> Self {
        TickClock { base: Some(base), ..TickClock::default() }
    }
    /// Stop ticking: from now on the clock moves only with its base (a model wait that times out).
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// The time without moving the clock (for assertions in callbacks, on the home thread).
    pub fn peek(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.now_ns())
            + self.ns.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clock for TickClock {
    fn now_ns(&self) -> u64 {
        if !self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            self.ns.fetch_add(1000, std::sync::atomic::Ordering::Relaxed);
        }
        self.peek()
    }
}

/// A context on the model kernel, polling off.
pub fn model_ctx(k: &Arc<ModelKernel>) -> Keep<AioContext> {
    Keep::new(
        AioContext::builder().backend(Backend::Model(k.clone())).build().expect("model context"),
    )
}

/// Join every thread, re-raising a panic of one of them.
pub fn join_all<T>(ts: Keep<Vec<thread::JoinHandle<T>>>) -> Vec<T> {
    ts.into_inner().into_iter().map(|t| t.join().expect("remote thread panicked")).collect()
}

/// Paces the remote threads in rounds (shuttle sizes, `per_remote > 1`): operations are numbered
/// globally (`g = j * remotes + r` for remote `r`'s `j`-th), and operation `g` starts only after
/// the home thread observed the effects of all `g` earlier ones. So every operation is a fresh race
/// with the home thread's next poll, with every other remote blocked: a lost wakeup deadlocks at
/// once. (A lost wakeup needs the LAST notification to hit the poller's window; without the gate,
/// later operations of other threads mask it, and random or PCT schedules of 4-8 threads almost
/// never catch a planted bug.) With one operation per remote (loom) the gate does nothing and adds
/// no scheduling points: loom explores every interleaving anyway.
#[derive(Debug, Clone)]
pub struct Gate(Option<Arc<(Mutex<usize>, Condvar)>>);

impl Gate {
    pub fn new(s: Size) -> Gate {
        Gate((s.per_remote > 1).then(|| Arc::new((Mutex::new(0), Condvar::new()))))
    }
    /// Home thread: `n` operations took effect (monotonic).
    pub fn reach(&self, n: usize) {
        if let Some(g) = &self.0 {
            let mut c = g.0.lock();
            *c = (*c).max(n);
            drop(c);
            g.1.notify_all();
        }
    }
    /// Home thread: one more operation took effect.
    pub fn pass(&self) {
        if let Some(g) = &self.0 {
            *g.0.lock() += 1;
            g.1.notify_all();
        }
    }
    /// Remote thread: wait until `n` operations took effect.
    pub fn wait(&self, n: usize) {
        if let Some(g) = &self.0 {
            let mut c = g.0.lock();
            while *c < n {
                c = g.1.wait(c);
            }
        }
    }
}

/// One `poll(blocking)` with `p_progress_exact` checked: it returns true iff `done` moved.
fn poll_checked(ctx: &AioContext, blocking: bool, done: &HomeCount, what: &str) -> bool {
    let before = done.get();
    let p = ctx.poll(blocking);
    let ran = done.get() != before;
    assert_eq!(
        p, ran,
        "p_progress_exact violated: {what}: poll({blocking}) returned {p}, callbacks ran: {ran}"
    );
    p
}

// ---------------------------------------------------------------------------------------------
// notify

/// A remote `schedule` racing the home thread's `cancel` and its own `schedule` of the same BH.
/// Whatever the order, the BH runs once or twice (twice when the remote schedule lands after the
/// first run), every poll reports progress exactly, and the BH list stays a list: `cancel` must clear
/// SCHEDULED with one RMW, or a schedule that lands between its load and its store loses PENDING
/// while the BH is queued, and the next schedule queues it a second time (a cycle in the list).
pub fn bh_cancel_racing_schedule() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let runs = HomeCount::new();
    let r = runs.clone();
    let bh = Arc::new(ctx.handle().bh_new(move |_| {
        r.inc();
    }));
    let remote = bh.clone();
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        remote.schedule();
        remote
    })]);
    bh.cancel();
    bh.schedule();
    while runs.get() < 1 {
        poll_checked(&ctx, true, &runs, "bh_cancel_racing_schedule");
    }
    let kept = join_all(ts);
    while poll_checked(&ctx, false, &runs, "bh_cancel_racing_schedule (drain)") {}
    assert!(runs.get() <= 2, "p_bh_runs_once violated: {} runs for two schedules", runs.get());
    drop(kept);
}

/// Counts the drops of the closure that owns it and records, at its drop, the value of `data` it
/// saw (+1, so 0 means "not dropped"). The drop may run on any thread (a context's last reference
/// can go with a remote `Bh`), so both counters are std atomics: bookkeeping, not model state.
pub struct DropProbe {
    data: Arc<AtomicU32>,
    drops: HomeCount,
    seen: HomeCount,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.drops.inc();
        // ORDERING: Relaxed on purpose: the value is the scenario's verdict on the code's ordering.
        self.seen.set(self.data.load(Ordering::Relaxed) as usize + 1);
    }
}

/// A BH is pending (the home thread scheduled it) when a remote thread writes `data` (Relaxed) and
/// schedules it again: the remote finds PENDING set and does not push, so only the flags carry its
/// write. Whether that schedule is absorbed by the call in progress or makes a second call, the last
/// call must see the write (`p_schedule_publishes`: what a thread wrote before `schedule` is visible
/// to the call it causes). Kills the mutants that drop the release of `enqueue`'s fetch_or, the
/// acquire of the dequeue's swap, or split the swap (mutants/CLAIMS).
pub fn bh_schedule_publishes() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let (seen, calls) = (HomeCount::new(), HomeCount::new());
    let (d, s, c) = (data.clone(), seen.clone(), calls.clone());
    let bh = Arc::new(ctx.handle().bh_new(move |_| {
        c.inc();
        // ORDERING: Relaxed on purpose, as in DropProbe.
        s.set(d.load(Ordering::Relaxed) as usize + 1);
    }));
    bh.schedule();
    let remote = bh.clone();
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        data.store(1, Ordering::Relaxed);
        remote.schedule();
        remote
    })]);
    ctx.poll(false);
    let kept = join_all(ts);
    while ctx.poll(false) {}
    assert!(calls.get() >= 1, "p_bh_runs_once violated: a scheduled BH never ran");
    assert_eq!(
        seen.get(),
        2,
        "p_schedule_publishes violated: the last call missed a write made before its schedule"
    );
    drop(kept);
}

/// A remote thread writes `data` (Relaxed) and drops a BH that the home thread scheduled, while the
/// home thread polls (`poll_first`) or drops the context at once (`HomeBhs::drop_all`). The closure
/// is dropped exactly once (`p_bh_freed_once`: a delete racing the dequeue is not lost, or the BH
/// leaks) and its drop sees the write (`p_delete_publishes`: what the owner did before dropping a
/// `Bh` happens before its closure's drop, as for an `Arc`). Kills the RMW splits of the dequeue and
/// of `drop_all`, and the mutants that drop the acquire of either (mutants/CLAIMS).
pub fn bh_delete_publishes(poll_first: bool) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let (drops, seen) = (HomeCount::new(), HomeCount::new());
    let probe = DropProbe { data: data.clone(), drops: drops.clone(), seen: seen.clone() };
    let bh = ctx.handle().bh_new(move |_| {
        let _ = &probe;
    });
    bh.schedule();
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        data.store(1, Ordering::Relaxed);
        drop(bh);
    })]);
    if poll_first {
        ctx.poll(false);
    }
    drop(ctx.into_inner());
    join_all(ts);
    assert_eq!(
        drops.get(),
        1,
        "p_bh_freed_once violated: a deleted BH's closure was dropped {} times",
        drops.get()
    );
    assert_eq!(
        seen.get(),
        2,
        "p_delete_publishes violated: the closure's drop missed a write made before the Bh's drop"
    );
}

/// A remote thread queues two oneshots while the home thread drops the context: both closures are
/// dropped exactly once, never called (`p_bh_freed_once`). `drop_all` takes the list and walks its
/// `next` links: each must be the pusher's (kills `drop_all`'s swap made Relaxed: the second node's
/// `next` read stale, the first node leaks).
pub fn oneshots_racing_context_drop() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let (drops, seen, calls) = (HomeCount::new(), HomeCount::new(), HomeCount::new());
    let h = ctx.handle().clone();
    let (d, s, c) = (drops.clone(), seen.clone(), calls.clone());
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        for _ in 0..2 {
            let probe = DropProbe { data: data.clone(), drops: d.clone(), seen: s.clone() };
            let c = c.clone();
            h.bh_oneshot(move || {
                let _ = &probe;
                c.inc();
            });
        }
    })]);
    drop(ctx.into_inner());
    join_all(ts);
    assert_eq!(calls.get(), 0, "a oneshot ran after its context was dropped");
    assert_eq!(
        drops.get(),
        2,
        "p_bh_freed_once violated: {} of 2 oneshot closures dropped",
        drops.get()
    );
}

/// A BH's callback polls its context (nested, QEMU's drain idiom) while a remote thread schedules and
/// then drops the BH: the nested poll dequeues the running BH and defers it (`defer` sets PENDING by
/// one RMW, racing the remote's flags). No double push, no lost delete: the closure is dropped exactly
/// once, and every call but the running one is made (`p_bh_runs_once`: at most one call per schedule
/// plus the first).
pub fn bh_reschedule_racing_nested_poll() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let (drops, seen, calls) = (HomeCount::new(), HomeCount::new(), HomeCount::new());
    let probe = DropProbe { data, drops: drops.clone(), seen };
    let c = calls.clone();
    let bh = ctx.handle().bh_new(move |this| {
        let _ = &probe;
        if c.inc() == 1 {
            this.context().poll(false);
        }
    });
    bh.schedule();
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        bh.schedule();
        drop(bh);
    })]);
    ctx.poll(false);
    join_all(ts);
    while ctx.poll(false) {}
    assert!(calls.get() <= 2, "p_bh_runs_once violated: {} calls for two schedules", calls.get());
    drop(ctx.into_inner());
    assert_eq!(
        drops.get(),
        1,
        "p_bh_freed_once violated: the closure was dropped {} times",
        drops.get()
    );
}

/// The home thread writes `data` and drops the context; a remote thread that sees `is_closed()` also
/// sees the write (`p_closed_publishes`: `is_closed` synchronizes with the drop, as a join does).
/// Kills the mutants that make the store in the drop or the load in `is_closed` Relaxed.
pub fn closed_publishes() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let (h, d) = (ctx.handle().clone(), data.clone());
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        if h.is_closed() {
            // ORDERING: Relaxed on purpose: the verdict on the drop's Release / is_closed's Acquire.
            assert_eq!(d.load(Ordering::Relaxed), 1, "p_closed_publishes violated");
        }
    })]);
    data.store(1, Ordering::Relaxed);
    drop(ctx.into_inner());
    join_all(ts);
}

/// Remote threads notify; the home thread's single blocking poll must return (a notify made before
/// it is not lost), and returns false (a notify is not progress).
pub fn notify_vs_blocking_poll(s: Size) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let ts: Keep<Vec<_>> = Keep::new(
        (0..s.remotes)
            .map(|_| {
                let h = ctx.handle().clone();
                thread::spawn(move || {
                    for _ in 0..s.per_remote {
                        h.notify();
                    }
                })
            })
            .collect(),
    );
    let p = ctx.poll(true);
    assert!(!p, "p_progress_exact violated: a poll woken only by notify returned true");
    join_all(ts);
    assert!(!ctx.poll(false), "p_progress_exact violated: a leftover notify returned true");
}

// ---------------------------------------------------------------------------------------------
// bottom halves

/// Remote threads schedule BHs (created on the home thread; every other one a oneshot created by
/// the remote; in rounds, see [`Gate`]) while the home thread loops `while !all_ran { poll(true)
/// }`. Each runs exactly once; each poll returns true iff one ran.
pub fn bh_schedule_vs_blocking_poll(s: Size) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let total = s.total();
    let runs: Vec<HomeCount> = (0..total).map(|_| HomeCount::new()).collect();
    let done = HomeCount::new();
    let mut ts = Keep::new(Vec::new());
    let gate = Gate::new(s);
    for r in 0..s.remotes {
        let mut bhs = Vec::new();
        for j in 0..s.per_remote {
            let i = r * s.per_remote + j;
            let (run, done, gate) = (runs[i].clone(), done.clone(), gate.clone());
            let cb = move || {
                run.inc();
                done.inc();
                gate.pass();
            };
            // Odd items (shuttle only) are oneshots, made on the remote thread.
            bhs.push(if j % 2 == 0 {
                let cb = cb;
                Ok(ctx.handle().bh_new(move |_| cb()))
            } else {
                Err(cb)
            });
        }
        let (h, gate) = (ctx.handle().clone(), gate.clone());
        ts.push(thread::spawn(move || {
            let mut keep = Vec::new();
            for (j, b) in bhs.into_iter().enumerate() {
                gate.wait(j * s.remotes + r);
                match b {
                    Ok(bh) => {
                        bh.schedule();
                        keep.push(bh); // dropping it would delete it before it runs
                    }
                    Err(cb) => h.bh_oneshot(cb),
                }
            }
            keep
        }));
    }
    while done.get() < total {
        poll_checked(&ctx, true, &done, "bh_schedule_vs_blocking_poll");
    }
    let kept = join_all(ts);
    assert!(!ctx.poll(false), "p_progress_exact violated: nothing was left to run");
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.get(), 1, "p_bh_runs_once violated: BH {i} ran {} times", r.get());
    }
    drop(kept);
}

// ---------------------------------------------------------------------------------------------
// external loop

/// Two pollers on one context: the home thread runs an external loop (QEMU's GSource: `prepare`,
/// its own wait on the context's fd, `check`, `dispatch`) and, inside each prepare/check window, a
/// blocking `poll` (so `notify_me` has bit 0 and a poller count at once). Remote threads schedule
/// oneshot BHs. Every BH runs exactly once, in the poll or in a dispatch, and neither wait hangs: a
/// kick that arrives after the nested poll drained the notifier stays pending for the external
/// wait.
///
/// The external wait uses a second [`ModelFdMonitor`] over the same model kernel: it is ready when
/// any fd the context registered is (the notifier included), as the context's epoll fd would be.
pub fn external_prepare_and_poll_two_pollers(s: Size) {
    external_loop(s, Nested::Blocking)
}

/// The external loop with a NON-blocking poll nested in each prepare/check window, on a context
/// with one user fd handler that never fires (so the nested poll asks the fd monitor, with a zero
/// timeout, and drains the notifier when it is readable; it never re-checks `notified`, as it does
/// not block). Before the nested poll the home thread schedules a BH of its own, whose kick (bit 0
/// is set) makes the eventfd readable. A remote kick that lands between the nested poll's accept
/// and its drain then leaves `notified` set over an empty eventfd; the external wait that follows
/// blocks on the fd, so the next remote kick must write the eventfd although `notified` is still
/// set (bit 0 of `notify_me` asks for it). With `skip_event_when_notified` it does not, and the
/// external wait hangs.
pub fn external_prepare_and_nonblocking_poll(s: Size) {
    external_loop(s, Nested::NonBlocking)
}

/// The plain external loop, as a GSource-driven main loop runs it: `prepare`, its own wait on the
/// context's fd, `check`, `dispatch`, with NO poll nested in the window, vs remote oneshot BHs.
/// Every BH runs exactly once and the external wait never hangs. Here `prepare`'s own fence is the
/// only thing between its `notify_me |= 1` and its re-check of `notified` (the nested scenarios run
/// a poll whose fence hides a missing one): without it a remote kick can read `notify_me == 0` and
/// skip the eventfd while `prepare` reads a stale `notified == false` and the BH list empty.
pub fn external_plain_loop(s: Size) {
    external_loop(s, Nested::None)
}

/// The poll nested in the external loop's prepare/check window.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Nested {
    None,
    Blocking,
    NonBlocking,
}

fn external_loop(s: Size, nested: Nested) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let outer = ModelFdMonitor::new(k.clone());
    if nested == Nested::NonBlocking {
        let idle = k.open(); // never readable
        ctx.set_fd_handler(idle, FdHandler::new().on_read(|_| panic!("the idle fd never fires")))
            .unwrap();
    }
    let total = s.total();
    let done = HomeCount::new(); // remote BHs run
    let ran = HomeCount::new(); // all callbacks run (remote BHs and the home thread's own)
    let gate = Gate::new(s);
    let ts: Keep<Vec<_>> = Keep::new(
        (0..s.remotes)
            .map(|r| {
                let h = ctx.handle().clone();
                let (done, ran, gate) = (done.clone(), ran.clone(), gate.clone());
                thread::spawn(move || {
                    for j in 0..s.per_remote {
                        gate.wait(j * s.remotes + r);
                        let (done, ran, gate) = (done.clone(), ran.clone(), gate.clone());
                        h.bh_oneshot(move || {
                            done.inc();
                            ran.inc();
                            gate.pass();
                        });
                    }
                })
            })
            .collect(),
    );
    let mut events = Vec::new();
    while done.get() < total {
        let timeout = ctx.prepare();
        // Poller 2, inside the window. Blocking: a BH is on its way, so it returns.
        match nested {
            Nested::None => false,
            Nested::Blocking => {
                poll_checked(&ctx, true, &ran, "blocking poll inside prepare/check")
            }
            Nested::NonBlocking => {
                let own = ran.clone();
                ctx.bh_oneshot(move || {
                    own.inc();
                });
                poll_checked(&ctx, false, &ran, "poll(false) inside prepare/check")
            }
        };
        // Poller 1: the external loop's own wait, only while a BH is still to come (bit 0 of
        // notify_me is set, so its schedule kicks the fd).
        if done.get() < total {
            outer.wait(timeout, &mut events).expect("model wait");
            events.clear();
        }
        let ready = ctx.check();
        let before = ran.get();
        let p = ctx.dispatch();
        assert_eq!(
            p,
            ran.get() != before,
            "p_progress_exact violated: dispatch returned {p} (check said {ready})"
        );
    }
    join_all(ts);
    assert!(!ctx.poll(false), "p_progress_exact violated: nothing was left to run");
    assert_eq!(
        done.get(),
        total,
        "p_bh_runs_once violated: {} runs for {total} oneshots",
        done.get()
    );
}

// ---------------------------------------------------------------------------------------------
// userspace polling

/// A polling context: the home-only [`TickClock`], max window 32 µs, and a model fd monitor that
/// polls readiness from userspace (like io_uring) iff `polls_readiness` (only then do idle poll
/// handlers leave the poll list).
pub fn polling_ctx(k: &Arc<ModelKernel>, polls_readiness: bool) -> Keep<AioContext> {
    k.set_polls_readiness(polls_readiness);
    Keep::new(
        AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .clock(TickClock::default())
            .poll_params(32_768, 0, 0)
            .build()
            .expect("polling model context"),
    )
}

/// Put `fd`'s poll handler on the poll list: a handler joins when its fd first fires, and its
/// window grows from 0 on that dispatch. Single-threaded setup, before any remote thread exists.
pub fn join_poll_list(ctx: &AioContext, k: &ModelKernel, fd: RawFd) {
    k.set_readable(fd, true);
    assert!(ctx.poll(false), "setup: the first fd event must dispatch the handler");
    assert!(ctx.is_polled(fd), "setup: the handler must be on the poll list");
    assert!(ctx.poll_ns(fd).unwrap_or(0) > 0, "setup: the handler's window must have grown");
}

/// What the home thread observed of a [`Device`]: requests consumed, handler callbacks run
/// (`on_read` + `io_poll_ready`: the progress `poll` must report), io_poll_begin / io_poll_end
/// calls.
#[derive(Debug, Clone, Default)]
pub struct DeviceStats {
    pub consumed: HomeCount,
    pub calls: HomeCount,
    pub begins: HomeCount,
    pub ends: HomeCount,
}

/// A virtio-like device: a request ring (a counter) filled by producer threads, and guest→host
/// notifications ("kicks": the model fd becomes readable) that the consumer disables while it
/// polls.
///
/// The kick is a Dekker pattern of its own, as in virtio: the producer publishes the request, full
/// fence, reads `notif_enabled`; the consumer's `io_poll_end` sets `notif_enabled`, full fence, and
/// the context's final poll then reads the ring. Written with explicit fences (loom models them; it
/// does not model SeqCst accesses).
#[derive(Debug)]
pub struct Device {
    k: Arc<ModelKernel>,
    pub fd: RawFd,
    ring: AtomicU32,
    notif_enabled: AtomicBool,
    /// Requests consumed, published for producers that push in rounds (see [`Gate`]).
    pub gate: Gate,
}

impl Device {
    pub fn new(k: &Arc<ModelKernel>, s: Size) -> Arc<Device> {
        Arc::new(Device {
            k: k.clone(),
            fd: k.open(),
            ring: AtomicU32::new(0),
            notif_enabled: AtomicBool::new(true),
            gate: Gate::new(s),
        })
    }

    /// Producer: push one request, kick if the consumer wants kicks. Returns the request's index.
    pub fn push(&self) -> usize {
        // ORDERING: Release: the request is published with the counter. Then a full fence orders it
        // before the read of notif_enabled. Pairs with the fence in `enable_notifications`.
        let i = self.ring.fetch_add(1, Ordering::Release) as usize;
        fence(Ordering::SeqCst);
        if self.notif_enabled.load(Ordering::Relaxed) {
            self.k.set_readable(self.fd, true);
        }
        i
    }

    /// Consumer (home thread): take every available request.
    fn consume(&self, st: &DeviceStats) {
        st.calls.inc();
        let n = self.available();
        st.consumed.set(n);
        self.gate.reach(n);
    }

    fn disable_notifications(&self) {
        // ORDERING: Relaxed: a stale "enabled" only costs a spurious kick.
        self.notif_enabled.store(false, Ordering::Relaxed);
    }

    fn enable_notifications(&self) {
        // ORDERING: Relaxed store, then a full fence before the context's final io_poll reads the
        // ring. Pairs with the fence in `push`.
        self.notif_enabled.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn available(&self) -> usize {
        // ORDERING: Acquire: pairs with the Release fetch_add in `push`.
        self.ring.load(Ordering::Acquire) as usize
    }

    /// The consumer's handler: `on_read` (the kick) and `io_poll_ready` consume every available
    /// request; `io_poll` checks the ring; `io_poll_begin` / `io_poll_end` disable / enable kicks.
    pub fn handler(dev: &Arc<Device>, st: &DeviceStats) -> FdHandler {
        let (d1, d2, d3, d4, d5) =
            (dev.clone(), dev.clone(), dev.clone(), dev.clone(), dev.clone());
        let (s1, s2, s3, s4, s5) = (st.clone(), st.clone(), st.clone(), st.clone(), st.clone());
        FdHandler::new()
            .on_read(move |_| {
                d1.k.take_readable(d1.fd);
                d1.consume(&s1);
            })
            .on_poll(move |_| d2.available() > s2.consumed.get(), move |_| d3.consume(&s3))
            .on_poll_begin(move |_| {
                s4.begins.inc();
                d4.disable_notifications();
            })
            .on_poll_end(move |_| {
                assert_eq!(
                    s5.ends.inc(),
                    s5.begins.get(),
                    "p_poll_end_follows_begin violated: end without begin"
                );
                d5.enable_notifications();
            })
    }
}

/// Remote threads schedule BHs while the home thread polls in userspace: poll parameters on, and a
/// poll handler (on a model fd, never ready after setup) already on the poll list, so the home
/// thread polls with `notify_me == 0` and must notice `notified`, or arm and re-check it.
pub fn notify_during_userspace_polling(s: Size) {
    let k = ModelKernel::new();
    let ctx = polling_ctx(&k, false);
    let dev = Device::new(&k, s);
    let st = DeviceStats::default();
    ctx.set_fd_handler(dev.fd, Device::handler(&dev, &st)).unwrap();
    join_poll_list(&ctx, &k, dev.fd);

    let total = s.total();
    let done = HomeCount::new();
    let gate = Gate::new(s);
    let ts: Keep<Vec<_>> = Keep::new(
        (0..s.remotes)
            .map(|r| {
                let (h, done, gate) = (ctx.handle().clone(), done.clone(), gate.clone());
                thread::spawn(move || {
                    for j in 0..s.per_remote {
                        gate.wait(j * s.remotes + r);
                        let (done, gate) = (done.clone(), gate.clone());
                        h.bh_oneshot(move || {
                            done.inc();
                            gate.pass();
                        });
                    }
                })
            })
            .collect(),
    );
    while done.get() < total {
        poll_checked(&ctx, true, &done, "notify_during_userspace_polling");
    }
    join_all(ts);
    drop(ctx);
    assert_eq!(st.begins.get(), st.ends.get(), "p_poll_end_follows_begin violated after drop");
}

/// Polling ends on a clock that stands still: the home thread alone, a poll handler on the poll
/// list (never ready after setup), then the clock stops and a timer is armed 1 ms ahead. The window
/// (4 µs) is never used up on a still clock, so only the checkers' bound on polling rounds
/// (`MODEL_POLL_ROUNDS`) ends polling; then the poll waits, and the model wait's timeout moves the
/// clock to the timer. Without that bound a checker would spin here (`p_no_busy_loop`).
pub fn polling_ends_on_a_still_clock() {
    let k = ModelKernel::new();
    let clock = TickClock::on(k.clock());
    let ctx = Keep::new(
        AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .clock(clock.clone())
            .poll_params(32_768, 0, 0)
            .build()
            .expect("polling model context"),
    );
    let fd = k.open();
    let k1 = k.clone();
    let handler = FdHandler::new()
        .on_read(move |_| {
            k1.take_readable(fd);
        })
        .on_poll(|_| false, |_| {});
    ctx.set_fd_handler(fd, handler).unwrap();
    join_poll_list(&ctx, &k, fd);
    clock.stop();
    let fired = HomeCount::new();
    let f = fired.clone();
    let t = ctx.timer_new(move |_| {
        f.inc();
    });
    t.mod_in(Duration::from_millis(1));
    // Arming the timer notified the context: the first poll takes that kick, the next waits.
    for _ in 0..2 {
        if fired.get() == 0 {
            ctx.poll(true);
        }
    }
    assert_eq!(fired.get(), 1, "the timer did not run in two blocking polls");
    assert!(ctx.is_polled(fd), "the handler left the poll list");
}

/// The device scenario: producers push requests (kicking only while kicks are enabled) while the
/// home thread loops `while consumed < pushed { poll(true) }` with the device's handler on the poll
/// list. A request pushed while kicks were disabled (in poll mode) must be found by polling or by
/// the final poll after `io_poll_end`; with `polls_readiness`, the handler also leaves the poll
/// list when idle (the tick clock makes it idle after one polling pass with a 1 ns idle timeout),
/// and that removal must do the same end + final poll.
fn device_scenario(s: Size, polls_readiness: bool, name: &str) {
    let k = ModelKernel::new();
    let ctx = polling_ctx(&k, polls_readiness);
    if polls_readiness {
        ctx.handle().set_poll_idle_timeout(Duration::from_nanos(1));
    }
    let dev = Device::new(&k, s);
    let st = DeviceStats::default();
    ctx.set_fd_handler(dev.fd, Device::handler(&dev, &st)).unwrap();
    join_poll_list(&ctx, &k, dev.fd);

    let total = s.total();
    let ts: Keep<Vec<_>> = Keep::new(
        (0..s.remotes)
            .map(|r| {
                let dev = dev.clone();
                thread::spawn(move || {
                    for j in 0..s.per_remote {
                        dev.gate.wait(j * s.remotes + r); // every earlier request was consumed
                        dev.push();
                    }
                })
            })
            .collect(),
    );
    while st.consumed.get() < total {
        poll_checked(&ctx, true, &st.calls, name);
    }
    join_all(ts);
    assert_eq!(st.consumed.get(), total, "p_request_consumed violated: consumed more than pushed");
    drop(ctx);
    assert_eq!(st.begins.get(), st.ends.get(), "p_poll_end_follows_begin violated after drop");
}

/// Poll mode ends (io_poll_end re-enables kicks) while a producer pushes: the final poll after
/// io_poll_end must find a request pushed while kicks were still disabled.
pub fn poll_mode_end_racing_event(s: Size) {
    device_scenario(s, false, "poll_mode_end_racing_event");
}

/// An idle poll handler leaves the poll list (io_uring-like backend) while a producer pushes: the
/// removal's io_poll_end + final poll must find a request pushed while kicks were disabled.
pub fn idle_removal_racing_event(s: Size) {
    device_scenario(s, true, "idle_removal_racing_event");
}

// ---------------------------------------------------------------------------------------------
// fd handlers

/// What the handlers' callbacks and the removers share (a facade mutex: both threads touch it), per
/// handler.
#[derive(Debug, Default, Clone)]
struct RemovalLog {
    /// `remove_fd_handler` returned (set by the remover right after).
    removed: bool,
    /// Callback starts that saw `removed`.
    late: usize,
    calls: usize,
}

/// Remote threads remove handlers while the home thread dispatches them (their fds stay readable,
/// so they fire on every poll). After `remove_fd_handler` returned, at most the one call the home
/// thread had already dispatched may start (per handler); after the removers are joined, none. No
/// crash, no leak (loom checks that every facade Arc is freed).
pub fn handler_removal_during_dispatch(s: Size) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let n = s.total();
    let fds: Vec<RawFd> = (0..n).map(|_| k.open()).collect();
    let log = Arc::new(Mutex::new(vec![RemovalLog::default(); n]));
    for (i, &fd) in fds.iter().enumerate() {
        k.set_readable(fd, true); // level-triggered: fires on every poll until removed
        let log = log.clone();
        let on_read = move |_: &FdRef<'_>| {
            let mut g = log.lock();
            let l = &mut g[i];
            l.calls += 1;
            if l.removed {
                l.late += 1;
            }
        };
        ctx.set_fd_handler(fd, FdHandler::new().on_read(on_read)).unwrap();
    }
    let ts: Keep<Vec<_>> = Keep::new(
        (0..s.remotes)
            .map(|r| {
                let (h, log, fds) = (ctx.handle().clone(), log.clone(), fds.clone());
                thread::spawn(move || {
                    for i in r * s.per_remote..(r + 1) * s.per_remote {
                        assert!(h.remove_fd_handler(fds[i]).unwrap(), "the handler was registered");
                        log.lock()[i].removed = true;
                    }
                })
            })
            .collect(),
    );
    // One poll races the removals (loom: 126k executions at bound 3 with two, 5 min; the race is
    // the same); the polls after the join check that nothing runs any more.
    ctx.poll(false);
    join_all(ts);
    let calls: Vec<usize> = log.lock().iter().map(|l| l.calls).collect();
    for _ in 0..2 {
        assert!(!ctx.poll(false), "p_progress_exact violated: no handler is left to run");
    }
    for (i, l) in log.lock().iter().enumerate() {
        assert_eq!(
            l.calls, calls[i],
            "p_no_call_after_remove violated: handler {i} ran after its remover was joined"
        );
        assert!(
            l.late <= 1,
            "p_no_call_after_remove violated: handler {i}: {} calls started after removal",
            l.late
        );
    }
}

// ---------------------------------------------------------------------------------------------
// timers

/// Three threads, one piece of work each: remote A schedules a oneshot BH, remote B moves a timer
/// (lowering `earliest`, then notify), the home thread loops `poll(true)` until both ran. A's kick
/// wakes the home thread, whose accept then reads A's `notified = true`; A's swap is an RMW in the
/// release sequence headed by B's swap, so notify's Release fence in B is what makes B's timer
/// (`earliest`, a Relaxed hint) visible to the next timeout computation. Without that fence the home
/// thread can compute an infinite timeout from the stale hint, arm, re-check `notified` (already
/// accepted) and block, while B's notify read `notify_me == 0` before the arm: a lost wake-up that
/// needs the third thread (with one remote the accept that could read B's kick comes only after
/// the home thread was woken through the eventfd, which synchronises). loom finds it when accept's
/// own fence is removed; with notify's Release fence removed it does not (mutants/SURVIVORS.md).
pub fn timer_mod_racing_bh() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let done = HomeCount::new();
    let (clock, d) = (k.clock(), done.clone());
    let t = ctx.handle().timer_new(move |_| {
        assert!(clock.now_ns() >= 1000, "p_timer_not_early violated");
        d.inc();
    });
    let h = ctx.handle().clone();
    let d = done.clone();
    let ts: Keep<Vec<_>> = Keep::new(vec![
        thread::spawn(move || {
            h.bh_oneshot(move || {
                d.inc();
            });
            None
        }),
        thread::spawn(move || {
            t.mod_ns(1000);
            Some(t) // keep it armed: dropping a Timer disarms it
        }),
    ]);
    while done.get() < 2 {
        poll_checked(&ctx, true, &done, "timer_mod_racing_bh");
    }
    let timers = join_all(ts);
    assert!(!ctx.poll(false), "p_progress_exact violated: everything already ran");
    drop(timers);
}

/// Remote threads arm timers (created on the home thread) at fixed deadlines on the model clock, in
/// rounds (see [`Gate`]); the home thread loops `while !all_fired { poll(true) }`. A blocked wait
/// must be woken by the arming to recompute its timeout; each timer then fires once, never early
/// (the model wait "times out" by moving the model clock to the deadline).
pub fn timer_mod_from_other_thread(s: Size) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let total = s.total();
    let done = HomeCount::new();
    let mut ts = Keep::new(Vec::new());
    let gate = Gate::new(s);
    for r in 0..s.remotes {
        let mut timers = Vec::new();
        for j in 0..s.per_remote {
            // Later rounds, later deadlines (a deadline already past when armed is fine: it fires
            // at once, and never early).
            let deadline = 1000 * (1 + (j * s.remotes + r) as u64);
            let (clock, done, fired, gate) =
                (k.clock(), done.clone(), HomeCount::new(), gate.clone());
            let t = ctx.handle().timer_new(move |_| {
                let now = clock.now_ns();
                assert!(
                    now >= deadline,
                    "p_timer_not_early violated: ran at {now}, deadline {deadline}"
                );
                assert_eq!(
                    fired.inc(),
                    1,
                    "p_timer_not_early violated: fired twice for one arming"
                );
                done.inc();
                gate.pass();
            });
            timers.push((t, deadline));
        }
        let gate = gate.clone();
        ts.push(thread::spawn(move || {
            for (j, (t, d)) in timers.iter().enumerate() {
                gate.wait(j * s.remotes + r);
                t.mod_ns(*d);
            }
            timers // keep them armed: dropping a Timer disarms it
        }));
    }
    while done.get() < total {
        poll_checked(&ctx, true, &done, "timer_mod_from_other_thread");
    }
    let timers = join_all(ts);
    assert!(!ctx.poll(false), "p_progress_exact violated: every timer already fired");
    drop(timers);
}

// ---------------------------------------------------------------------------------------------
// shuttle only: everything at once

/// Everything at once (shuttle): `s.remotes` threads in four roles, by index mod 4 — a BH scheduler
/// (a `Bh` shared by all schedulers, scheduled repeatedly, plus oneshots), a device producer (its
/// poll handler is on the poll list), a timer armer (arms late, then re-arms earlier), and a
/// handler churner (adds and removes an fd-only handler, which also turns userspace polling off
/// while it is registered) — against a polling context whose home thread loops on `poll(true)`
/// until every oneshot ran, every request was consumed and every timer fired.
pub fn mixed_traffic(s: Size) {
    let k = ModelKernel::new();
    let clock = TickClock::on(k.clock());
    let now = clock.clone();
    let ctx = Keep::new(
        AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .clock(clock)
            .poll_params(32_768, 0, 0)
            .build()
            .expect("polling model context"),
    );
    let dev = Device::new(&k, s);
    let st = DeviceStats::default();
    ctx.set_fd_handler(dev.fd, Device::handler(&dev, &st)).unwrap();
    join_poll_list(&ctx, &k, dev.fd);

    let (oneshots, shared_runs, fired) = (HomeCount::new(), HomeCount::new(), HomeCount::new());
    let sr = shared_runs.clone();
    let shared_bh = Arc::new(ctx.handle().bh_new(move |_| {
        sr.inc();
    }));
    let churn_fd = k.open();
    let (mut expect_oneshots, mut expect_requests, mut expect_timers) = (0, 0, 0);
    let mut ts = Keep::new(Vec::new());
    for r in 0..s.remotes {
        let h = ctx.handle().clone();
        match r % 4 {
            0 => {
                expect_oneshots += s.per_remote;
                let (bh, n) = (shared_bh.clone(), oneshots.clone());
                ts.push(thread::spawn(move || {
                    for _ in 0..s.per_remote {
                        bh.schedule();
                        let n = n.clone();
                        h.bh_oneshot(move || {
                            n.inc();
                        });
                    }
                    None
                }));
            }
            1 => {
                expect_requests += s.per_remote;
                let dev = dev.clone();
                ts.push(thread::spawn(move || {
                    for _ in 0..s.per_remote {
                        dev.push();
                    }
                    None
                }));
            }
            2 => {
                expect_timers += 1;
                let (now, f, once) = (now.clone(), fired.clone(), HomeCount::new());
                let deadline = 5000 * (1 + r as u64);
                let t = ctx.handle().timer_new(move |_| {
                    let t = now.peek();
                    assert!(
                        t >= deadline,
                        "p_timer_not_early violated: ran at {t}, deadline {deadline}"
                    );
                    assert!(
                        once.inc() <= 2,
                        "p_timer_not_early violated: fired more often than it was armed (twice)"
                    );
                    f.inc();
                });
                ts.push(thread::spawn(move || {
                    t.mod_ns(deadline + 1_000_000_000);
                    t.mod_ns(deadline); // earlier: notifies the loop
                    Some(t) // keep it armed: dropping a Timer disarms it
                }));
            }
            _ => {
                let k = k.clone();
                ts.push(thread::spawn(move || {
                    for _ in 0..s.per_remote {
                        // Another churner may own the fd right now: no assertion on the results.
                        let k2 = k.clone();
                        let on_read = move |_: &FdRef<'_>| {
                            k2.take_readable(churn_fd);
                        };
                        let _ =
                            h.set_fd_handler(churn_fd, FdHandler::new_remote().on_read(on_read));
                        k.set_readable(churn_fd, true);
                        let _ = h.remove_fd_handler(churn_fd);
                    }
                    None
                }));
            }
        }
    }
    while oneshots.get() < expect_oneshots
        || st.consumed.get() < expect_requests
        || fired.get() < expect_timers
    {
        ctx.poll(true);
    }
    let timers = join_all(ts);
    while ctx.poll(false) {}
    assert_eq!(oneshots.get(), expect_oneshots, "p_bh_runs_once violated: oneshots");
    if expect_oneshots > 0 {
        assert!(shared_runs.get() >= 1, "p_bh_runs_once violated: the shared BH never ran");
        assert!(
            !shared_bh.is_scheduled(),
            "p_no_lost_wakeup violated: the shared BH is still scheduled"
        );
    }
    drop(timers);
    drop(shared_bh);
    drop(ctx);
    assert_eq!(st.begins.get(), st.ends.get(), "p_poll_end_follows_begin violated after drop");
}
