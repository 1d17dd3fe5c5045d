//! Timers on the context's monotonic clock: armed from any thread, run on the home thread after BHs
//! and handlers, never early.
//!
//! # Protocol
//!
//! | field | written by | read by | meaning |
//! |---|---|---|---|
//! | `TimerQueue` (under the timers mutex) | any thread (`mod`/`del`), home thread (run) | home thread | min-heap of (deadline, arm sequence, timer id); stale entries are skipped lazily |
//! | `earliest: AtomicU64` | under the timers mutex | home thread (timeout, run check) without the lock | earliest heap deadline, `u64::MAX` if none (may be early, never late) |
//! | `TimerQueue::armed` (under the mutex) | `mod`/`del`/run | run | timer id → its live arming (sequence number, deadline) and its callback; absent: disarmed |
//!
//! Only `armed` holds a reference to a timer's callback (heap entries name the timer by id), so `del`
//! and the owner's drop release it at once: a dropped timer's closure is freed by the drop, or, if the
//! home thread is running it, when that call returns.
//!
//! A `mod` that makes the timer the earliest notifies the loop (a blocked wait recomputes its timeout).
//! Timers run only inside `poll`, after BHs and fd handlers, when `now >= deadline`.
//!
//! # Model
//!
//! loom and shuttle scenario `timer_mod_from_other_thread` in `model/tests/loom_timer.rs` and
//! `model/tests/shuttle_timer.rs` (the body is in `model/tests/support/mod.rs`); no Promela model
//! (`timer_mod` and `timer_run` are implementation-only steps).
//!
//! # Upstream
//!
//! QEMU util/qemu-timer.c: `timer_mod_ns`, `timer_del`, `timerlist_run_timers`,
//! `timerlistgroup_deadline_ns`, `timerlist_notify`.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, UnsafeCell};
#[allow(unused_imports)] // used by trace_step! when the `trace` feature is on
use crate::trace::Step;
use crate::Shared;

type Callback = Box<dyn FnMut() + Send + 'static>;

pub(crate) struct TimerInner {
    /// Home thread only.
    cb: UnsafeCell<Callback>,
    /// Home thread only: the callback is running (not re-entered by a nested poll).
    running: UnsafeCell<bool>,
}

// SAFETY:
// - the callback is `Send`, so the timer may be dropped on any thread;
// - `cb` and `running` are accessed only by the home thread (`Timers::run`, called by poll).
unsafe impl Send for TimerInner {}
// SAFETY: see the Send impl above.
unsafe impl Sync for TimerInner {}

/// A heap entry: one arming of timer `id`, live while `TimerQueue::armed[id]` has its `seq`.
struct Entry {
    deadline: u64,
    seq: u64,
    id: u64,
}

/// The live arming of one timer.
struct Armed {
    seq: u64,
    deadline: u64,
    /// The only reference besides the owner's (and a running call's): dropped on `del` and `run`.
    timer: Arc<TimerInner>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(o.deadline, o.seq))
    }
}

/// The timer list of one context (under `Shared::timers`).
#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    next_id: u64,
    /// timer id -> the arming that counts.
    armed: std::collections::HashMap<u64, Armed>,
}

impl TimerQueue {
    /// `e` is the live arming of its timer (not superseded by a later `mod`, nor deleted).
    fn is_live(&self, e: &Entry) -> bool {
        self.armed.get(&e.id).is_some_and(|a| a.seq == e.seq)
    }
    fn prune(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }
    /// Drop stale entries once they are more than half the heap, so re-arming is amortised O(log n)
    /// in time and the heap's size stays within twice the number of armed timers.
    fn compact(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.armed.len() {
            let mut heap = std::mem::take(&mut self.heap);
            heap.retain(|Reverse(e)| self.is_live(e));
            self.heap = heap;
        }
    }
    fn earliest(&mut self) -> u64 {
        self.prune();
        self.heap.peek().map(|Reverse(e)| e.deadline).unwrap_or(u64::MAX)
    }
}

/// Shared timer state of a context.
pub(crate) struct Timers {
    pub(crate) queue: Mutex<TimerQueue>,
    pub(crate) earliest: AtomicU64,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers { queue: Mutex::new(TimerQueue::default()), earliest: AtomicU64::new(u64::MAX) }
    }

    /// Earliest deadline, `u64::MAX` if none. Lock-free; may be early (a deleted timer), never late.
    #[inline]
    pub(crate) fn earliest(&self) -> u64 {
        // ORDERING: Relaxed: a `mod` that lowers it also notifies, and the notify/accept fences make
        // the new value visible before the loop recomputes its timeout.
        self.earliest.load(Ordering::Relaxed)
    }

    /// Run every timer whose deadline is `<= now`. Home thread only. Returns true if one ran.
    ///
    /// One timer at a time, as QEMU's `timerlist_run_timers`: each is taken off the list under the
    /// lock just before its call, so a callback that deletes or moves a timer due later in the same
    /// pass is obeyed (it is not called, or not early). Only armings made before the pass began run in
    /// it: a callback that re-arms a timer for "now" runs it again in the next poll, not in a loop here.
    ///
    /// A timer whose callback is running further up the stack (this is a poll nested in it) is not
    /// called, and stays armed: its entry is set aside for the pass and put back, so it fires in a
    /// poll after that call returned. `running` counts the timer callbacks running (home thread).
    pub(crate) fn run(&self, now: u64, running: &Cell<u32>) -> bool {
        if self.earliest() > now {
            return false;
        }
        let limit = self.queue.lock().next_seq;
        let mut ran = false;
        let mut aside = Vec::new(); // no allocation unless a running timer is due
        loop {
            let due = {
                let mut q = self.queue.lock();
                let due = loop {
                    q.prune();
                    match q.heap.peek() {
                        Some(Reverse(e)) if e.deadline <= now && e.seq <= limit => {
                            let Reverse(e) = q.heap.pop().expect("peeked");
                            // Live: `prune` left it on top.
                            if q.armed.get(&e.id).is_some_and(|a| is_running(&a.timer)) {
                                aside.push(e);
                                continue;
                            }
                            break q.armed.remove(&e.id).map(|a| a.timer);
                        }
                        _ => break None,
                    }
                };
                q.heap.extend(aside.drain(..).map(Reverse));
                let earliest = q.earliest();
                // ORDERING: Relaxed, written under the lock (see `earliest`).
                self.earliest.store(earliest, Ordering::Relaxed);
                due
            };
            let Some(t) = due else { break };
            crate::trace_step!(Step::TimerRun);
            call(&t, running);
            ran = true;
        }
        ran
    }

    /// The earliest deadline of an armed timer whose callback is not running, `u64::MAX` if none: the
    /// timeout of a poll nested in a timer callback, which cannot call that timer (its deadline,
    /// passed or not, must not make the nested poll spin). Home thread only; O(armed timers), and
    /// used only while a timer callback runs.
    #[cold]
    pub(crate) fn earliest_callable(&self) -> u64 {
        let q = self.queue.lock();
        let callable = q.armed.values().filter(|a| !is_running(&a.timer));
        callable.map(|a| a.deadline).min().unwrap_or(u64::MAX)
    }

    /// Forget every timer (the context is going away).
    pub(crate) fn clear(&self) {
        let mut q = self.queue.lock();
        q.heap.clear();
        q.armed.clear();
        // ORDERING: Relaxed, under the timers lock (see `earliest`).
        self.earliest.store(u64::MAX, Ordering::Relaxed);
    }
}

/// Whether `t`'s callback is running further up the stack. Home thread only.
fn is_running(t: &TimerInner) -> bool {
    // SAFETY: `running` is only accessed on the home thread (the caller), by short reads and writes.
    t.running.with(|r| unsafe { *r })
}

/// Call `t`, which is not running (`Timers::run` sets running timers aside), counting it in `running`.
fn call(t: &TimerInner, running: &Cell<u32>) {
    debug_assert!(!is_running(t), "a running timer was called again");
    // SAFETY:
    // - `cb` and `running` are only accessed on the home thread (from `Timers::run`, called by poll);
    // - `running` prevents a second &mut to the callback from a nested poll inside it.
    t.running.with_mut(|r| unsafe { *r = true });
    running.set(running.get() + 1);
    struct Reset<'a>(&'a TimerInner, &'a Cell<u32>);
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            // SAFETY: as above.
            self.0.running.with_mut(|r| unsafe { *r = false });
            self.1.set(self.1.get() - 1);
        }
    }
    let _reset = Reset(t, running);
    // SAFETY: as above.
    t.cb.with_mut(|c| unsafe { (*c)() });
}

/// A timer of one context (QEMU `QEMUTimer` on the context's clock). Arm it with [`Timer::mod_ns`] or
/// [`Timer::mod_in`] from any thread; its callback runs on the home thread, inside `poll`, at or after
/// the deadline. Dropping the `Timer` disarms it and drops its callback (at once; if the callback is
/// running on the home thread, when it returns).
///
/// Re-entrancy: a timer's callback is never re-entered. If it polls its context nested
/// ([`AioContext::with_current`](crate::AioContext::with_current)), that nested poll does not call
/// this timer, even if the callback re-armed it for a deadline that is passed by then: the arming is
/// kept, is not progress and does not keep the nested poll from sleeping, and the timer fires in the
/// first poll after the running call returned.
///
/// # Examples
///
/// ```
/// # use aioctx::AioContext;
/// # use std::time::Duration;
/// let ctx = AioContext::new()?;
/// let t = ctx.timer_new(|| println!("fired"));
/// t.mod_in(Duration::from_millis(1));
/// assert!(!ctx.poll(false)); // arming notified the loop: consumed here, not progress
/// assert!(ctx.poll(true)); // blocks until the deadline, then runs it
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "QEMUTimer")]
pub struct Timer {
    inner: Arc<TimerInner>,
    ctx: Arc<Shared>,
    id: u64,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("id", &self.id)
            .field("deadline", &self.deadline_ns())
            .finish()
    }
}

impl Timer {
    pub(crate) fn new(ctx: Arc<Shared>, cb: Callback) -> Timer {
        let id = {
            let mut q = ctx.timers.queue.lock();
            q.next_id += 1;
            q.next_id
        };
        let inner =
            Arc::new(TimerInner { cb: UnsafeCell::new(cb), running: UnsafeCell::new(false) });
        Timer { inner, ctx, id }
    }

    /// Arm (or re-arm) the timer for the absolute deadline `deadline_ns` on the context's clock
    /// ([`crate::Handle::now_ns`]). Notifies the loop if this is now the earliest timer.
    #[doc(alias = "timer_mod_ns")]
    pub fn mod_ns(&self, deadline_ns: u64) {
        let t = &self.ctx.timers;
        let lowered = {
            let mut q = t.queue.lock();
            q.next_seq += 1;
            let seq = q.next_seq;
            // The callback reference it replaces is not the last one (`self.inner`): nothing is
            // dropped under the lock.
            q.armed
                .insert(self.id, Armed { seq, deadline: deadline_ns, timer: self.inner.clone() });
            q.heap.push(Reverse(Entry { deadline: deadline_ns, seq, id: self.id }));
            q.compact();
            // ORDERING: Relaxed, under the timers lock.
            let old = t.earliest.load(Ordering::Relaxed);
            let new = q.earliest();
            // ORDERING: Relaxed under the lock; published to the home thread by the notify below.
            t.earliest.store(new, Ordering::Relaxed);
            new < old
        };
        crate::trace_step!(Step::TimerMod);
        if lowered {
            self.ctx.notify.notify();
        }
    }

    /// Arm the timer `d` from now.
    pub fn mod_in(&self, d: Duration) {
        let now = self.ctx.clock.now_ns();
        self.mod_ns(now.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64));
    }

    /// Disarm the timer; a pending expiry will not run it. It can be armed again. From another
    /// thread, a call the loop already took off the queue (its poll is running timers) still
    /// starts after this returns, inside that poll, as with QEMU's `timer_del` (and as a `Bh`'s
    /// drop allows a call the loop dequeued before); on the home thread nothing runs it after this.
    #[doc(alias = "timer_del")]
    pub fn del(&self) {
        let mut q = self.ctx.timers.queue.lock();
        q.armed.remove(&self.id);
        q.compact();
        // `earliest` may stay early; the loop wakes once, finds nothing due and recomputes it.
    }

    /// The armed deadline, if any.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.ctx.timers.queue.lock().armed.get(&self.id).map(|a| a.deadline)
    }

    /// Whether the timer is armed.
    #[doc(alias = "timer_pending")]
    pub fn is_pending(&self) -> bool {
        self.deadline_ns().is_some()
    }
}

impl Drop for Timer {
    /// Disarm: the queue's reference to the callback goes (stale heap entries name only the id), so
    /// the callback and its captures are dropped with `self.inner` right after this, unless the home
    /// thread is running it, or took it off the queue to run it (then when that call returns; see
    /// [`Timer::del`] for the call that may still start).
    fn drop(&mut self) {
        self.del();
    }
}
