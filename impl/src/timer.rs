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
use std::marker::PhantomData;
use std::time::Duration;

use crate::ctx::Shared;
use crate::kernel::Clock;
use crate::kind::{Kind, Local};
use crate::notify::NotifyState;
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, UnsafeCell};
use crate::trace::Step;
use crate::AioContext;

/// A timer's callback; `Send` or not by its kind (see `crate::kind`).
type Callback = Box<dyn FnMut(&TimerRef<'_>) + 'static>;

pub(crate) struct TimerInner {
    id: u64,
    /// Home thread only. None once deleted from inside itself ([`TimerRef::delete`]).
    cb: UnsafeCell<Option<Callback>>,
    /// Home thread only: the callback is running (not re-entered by a nested poll).
    running: UnsafeCell<bool>,
    /// Home thread only: deleted while running; drop `cb` when the call returns.
    dead: UnsafeCell<bool>,
}

// SAFETY:
// - a `Remote` timer's callback is `Send`, so it may be dropped on any thread. A `Local` timer's
//   references are held by its `!Send` owner, by `TimerQueue::armed` and by a running call: the owner
//   and the call are on the home thread; `armed` loses it to the owner's drop (`del`, home thread) or
//   to `Timers::run` and `Timers::clear` (home thread), and a `Local` timer is never armed once the
//   context is dropped (`arm`), so the shared half, wherever it is dropped, holds no `Local` timer;
// - `cb`, `running` and `dead` are accessed only by the home thread (`Timers::run`, called by poll).
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

/// The timer list of one context (under `Timers::queue`).
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
    queue: Mutex<TimerQueue>,
    earliest: AtomicU64,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers { queue: Mutex::new(TimerQueue::default()), earliest: AtomicU64::new(u64::MAX) }
    }

    /// A new timer id.
    fn new_id(&self) -> u64 {
        let mut q = self.queue.lock();
        q.next_id += 1;
        q.next_id
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
    pub(crate) fn run(&self, ctx: &AioContext, now: u64, running: &Cell<u32>) -> bool {
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
            ran |= call(ctx, &t, running);
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
/// Returns whether a callback was called (not if it was deleted from inside itself before).
fn call(ctx: &AioContext, t: &Arc<TimerInner>, running: &Cell<u32>) -> bool {
    debug_assert!(!is_running(t), "a running timer was called again");
    // SAFETY: (each access to `cb`, `running` and `dead` here) they are only accessed on the home
    // thread (from `Timers::run`, called by poll), by short raw-pointer accesses.
    if t.cb.with(|c| unsafe { (*c).is_none() }) {
        return false;
    }
    // SAFETY: as above; `running` prevents a second &mut to the callback from a nested poll.
    t.running.with_mut(|r| unsafe { *r = true });
    running.set(running.get() + 1);
    struct Reset<'a>(&'a TimerInner, &'a Cell<u32>);
    impl Drop for Reset<'_> {
        fn drop(&mut self) {
            // SAFETY: as above.
            self.0.running.with_mut(|r| unsafe { *r = false });
            self.1.set(self.1.get() - 1);
            // SAFETY: as above.
            if self.0.dead.with_mut(|d| unsafe { std::mem::take(&mut *d) }) {
                // Deleted from inside itself: drop the closure on this (home) thread, outside the
                // cell (its drop may run user code).
                // SAFETY: as above; the call is over.
                drop(self.0.cb.with_mut(|c| unsafe { (*c).take() }));
            }
        }
    }
    let _reset = Reset(t, running);
    let this = TimerRef { t, ctx };
    // SAFETY: as above; the &mut covers the `cb` cell only (`TimerRef::delete` writes `dead`).
    t.cb.with_mut(|c| unsafe {
        if let Some(cb) = (*c).as_mut() {
            cb(&this)
        }
    });
    true
}

/// `timer_mod_ns`: arm `t` for `deadline_ns`; notify the loop if it is now the earliest timer.
fn arm(timers: &Timers, notify: &NotifyState, t: &Arc<TimerInner>, deadline_ns: u64) {
    let lowered = {
        let mut q = timers.queue.lock();
        q.next_seq += 1;
        let seq = q.next_seq;
        // The callback reference it replaces is not the last one (the caller's `t`): nothing is
        // dropped under the lock.
        q.armed.insert(t.id, Armed { seq, deadline: deadline_ns, timer: t.clone() });
        q.heap.push(Reverse(Entry { deadline: deadline_ns, seq, id: t.id }));
        q.compact();
        // ORDERING: Relaxed, under the timers lock.
        let old = timers.earliest.load(Ordering::Relaxed);
        let new = q.earliest();
        // ORDERING: Relaxed under the lock; published to the home thread by the notify below.
        timers.earliest.store(new, Ordering::Relaxed);
        new < old
    };
    crate::trace_step!(Step::TimerMod);
    if lowered {
        notify.notify();
    }
}

/// `timer_del`: disarm timer `id`. Returns the queue's reference, to be dropped by the caller after
/// the lock (it may be the last one: a `Local` closure's drop runs user code).
fn disarm(timers: &Timers, id: u64) -> Option<Arc<TimerInner>> {
    let mut q = timers.queue.lock();
    let a = q.armed.remove(&id);
    q.compact();
    // `earliest` may stay early; the loop wakes once, finds nothing due and recomputes it.
    a.map(|a| a.timer)
}

fn deadline(timers: &Timers, id: u64) -> Option<u64> {
    timers.queue.lock().armed.get(&id).map(|a| a.deadline)
}

fn deadline_in(clock: &dyn Clock, d: Duration) -> u64 {
    clock.now_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)
}

/// A timer of one context (QEMU `QEMUTimer` on the context's clock). Arm it with [`Timer::mod_ns`] or
/// [`Timer::mod_in`]; its callback runs on the home thread, inside `poll`, at or after the deadline.
/// [`Timer::delete`] (or dropping the `Timer`) disarms it and drops its callback (at once; if the
/// callback is running on the home thread, when it returns).
///
/// The callback gets a [`TimerRef`]: itself, to re-arm (a periodic timer), disarm or delete itself,
/// and the context.
///
/// Two kinds ([`crate::kind`]): `Timer` (= `Timer<Local>`) from [`AioContext::timer_new`] takes any
/// `'static` closure and stays on the home thread (once the context is dropped, arming it does
/// nothing); `Timer<Remote>` from [`Handle::timer_new`](crate::Handle::timer_new) takes a `Send`
/// closure and is `Send + Sync`: arm it from any thread.
///
/// # Re-entrancy (nested polls)
///
/// A timer's callback is never re-entered. If it polls its context nested ([`TimerRef::context`]),
/// that nested poll does not call this timer, even if the callback re-armed it for a deadline that is
/// passed by then: the arming is kept, is not progress and does not keep the nested poll from
/// sleeping, and the timer fires in the first poll after the running call returned. Other due timers
/// do run in the nested poll.
///
/// # Examples
///
/// ```
/// # use aioctx::AioContext;
/// # use std::{cell::Cell, rc::Rc, time::Duration};
/// let ctx = AioContext::new()?;
/// let fired = Rc::new(Cell::new(0));
/// let f2 = fired.clone();
/// let t = ctx.timer_new(move |this| {
///     f2.set(f2.get() + 1);
///     if f2.get() < 2 {
///         this.mod_in(Duration::from_millis(1)); // periodic, from inside
///     }
/// });
/// t.mod_in(Duration::from_millis(1));
/// assert!(!ctx.poll(false)); // arming notified the loop: consumed here, not progress
/// assert!(ctx.poll(true)); // blocks until the deadline, then runs it
/// while fired.get() < 2 {
///     ctx.poll(true); // the re-arming's notify, then the second expiry
/// }
/// assert!(!t.is_pending());
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "QEMUTimer")]
pub struct Timer<K: Kind = Local> {
    inner: Arc<TimerInner>,
    ctx: Arc<Shared>,
    _kind: PhantomData<K>,
}

impl<K: Kind> std::fmt::Debug for Timer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("id", &self.inner.id)
            .field("deadline", &self.deadline_ns())
            .finish()
    }
}

impl<K: Kind> Timer<K> {
    pub(crate) fn new(ctx: Arc<Shared>, cb: Callback) -> Timer<K> {
        let id = ctx.timers().new_id();
        let inner = Arc::new(TimerInner {
            id,
            cb: UnsafeCell::new(Some(cb)),
            running: UnsafeCell::new(false),
            dead: UnsafeCell::new(false),
        });
        Timer { inner, ctx, _kind: PhantomData }
    }

    /// Arm (or re-arm) the timer for the absolute deadline `deadline_ns` on the context's clock
    /// ([`crate::Handle::now_ns`]). Notifies the loop if this is now the earliest timer. A `Local`
    /// timer of a dropped context is not armed (it could never run).
    #[doc(alias = "timer_mod_ns")]
    pub fn mod_ns(&self, deadline_ns: u64) {
        // ORDERING: Relaxed: for a `Local` timer this is the home thread, which set `closed` itself
        // (sequenced before). See the Send impl of `TimerInner` for why it matters.
        if K::LOCAL && self.ctx.closed().load(Ordering::Relaxed) {
            return;
        }
        arm(self.ctx.timers(), self.ctx.notify(), &self.inner, deadline_ns);
    }

    /// Arm the timer `d` from now.
    pub fn mod_in(&self, d: Duration) {
        self.mod_ns(deadline_in(self.ctx.clock(), d));
    }

    /// Disarm the timer; a pending expiry will not run it. It can be armed again. From another
    /// thread, a call the loop already took off the queue (its poll is running timers) still
    /// starts after this returns, inside that poll, as with QEMU's `timer_del` (and as a `Bh`'s
    /// drop allows a call the loop dequeued before); on the home thread nothing runs it after this.
    #[doc(alias = "timer_del")]
    pub fn del(&self) {
        drop(disarm(self.ctx.timers(), self.inner.id));
    }

    /// The armed deadline, if any.
    pub fn deadline_ns(&self) -> Option<u64> {
        deadline(self.ctx.timers(), self.inner.id)
    }

    /// Whether the timer is armed.
    #[doc(alias = "timer_pending")]
    pub fn is_pending(&self) -> bool {
        self.deadline_ns().is_some()
    }

    /// Delete the timer (the same as dropping it): disarmed, its closure dropped (when its running
    /// call returns, if it is running).
    #[doc(alias = "timer_free")]
    pub fn delete(self) {}
}

impl<K: Kind> Drop for Timer<K> {
    /// Disarm: the queue's reference to the callback goes (stale heap entries name only the id), so
    /// the callback and its captures are dropped with `self.inner` right after this, unless the home
    /// thread is running it, or took it off the queue to run it (then when that call returns; see
    /// [`Timer::del`] for the call that may still start).
    fn drop(&mut self) {
        self.del();
    }
}

/// A timer callback's view of its own timer, valid for the duration of the call.
pub struct TimerRef<'a> {
    t: &'a Arc<TimerInner>,
    ctx: &'a AioContext,
}

impl std::fmt::Debug for TimerRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerRef").field("id", &self.t.id).finish()
    }
}

impl<'a> TimerRef<'a> {
    /// Re-arm this timer for `deadline_ns` (it fires in a later poll, never re-entered).
    #[doc(alias = "timer_mod_ns")]
    pub fn mod_ns(&self, deadline_ns: u64) {
        let s = self.ctx.shared();
        arm(s.timers(), s.notify(), self.t, deadline_ns);
    }

    /// Re-arm this timer `d` from now.
    pub fn mod_in(&self, d: Duration) {
        self.mod_ns(deadline_in(self.ctx.shared().clock(), d));
    }

    /// Disarm this timer (an arming made since this call began).
    #[doc(alias = "timer_del")]
    pub fn del(&self) {
        drop(disarm(self.ctx.shared().timers(), self.t.id));
    }

    /// Whether this timer is armed again.
    pub fn is_pending(&self) -> bool {
        deadline(self.ctx.shared().timers(), self.t.id).is_some()
    }

    /// Delete this timer from inside its callback: disarmed, never called again, its closure dropped
    /// when this call returns. The owner's [`Timer`] stays valid (arming it then calls nothing) and
    /// frees the rest when dropped.
    pub fn delete(&self) {
        self.del();
        // SAFETY: home thread (inside the call), a short access; see `call`.
        self.t.dead.with_mut(|d| unsafe { *d = true });
    }

    /// The context running the callback (for a nested poll, or to create more work on it).
    pub fn context(&self) -> &'a AioContext {
        self.ctx
    }
}

#[cfg(test)]
mod tests {
    use crate::{AioContext, Backend, ModelKernel};

    /// A timer re-armed again and again (a periodic timer, a deadline pushed back on every request)
    /// leaves a stale heap entry per arming; they are dropped once they outnumber the live ones, so
    /// the heap stays within twice the armed timers (past a small floor), and the earliest live
    /// deadline still comes first.
    #[test]
    fn rearming_keeps_the_heap_within_twice_the_armed_timers() {
        let ctx =
            AioContext::builder().backend(Backend::Model(ModelKernel::new())).build().unwrap();
        let first = ctx.timer_new(|_| {});
        first.mod_ns(10);
        let t = ctx.timer_new(|_| {});
        let heap = || {
            let q = ctx.shared().timers().queue.lock();
            (q.heap.len(), q.armed.len())
        };
        for i in 0..1000 {
            // Later than `first`: the stale entries stay below the live top, where pruning the top
            // does not reach them.
            t.mod_ns(1_000_000 + i);
            let (len, armed) = heap();
            assert!(len <= 64 || len <= 2 * armed, "{len} heap entries for {armed} armed timers");
        }
        // Many timers armed, then most of them deleted: re-arming stays bounded by the few left.
        let many: Vec<_> = (0..100).map(|_| ctx.timer_new(|_| {})).collect();
        for (i, m) in many.iter().enumerate() {
            m.mod_ns(2_000_000 + i as u64);
        }
        drop(many);
        for i in 0..1000 {
            t.mod_ns(1_001_000 + i);
            let (len, armed) = heap();
            assert!(len <= 64 || len <= 2 * armed, "{len} heap entries for {armed} armed timers");
        }
        let earliest = || ctx.shared().timers().queue.lock().earliest();
        assert_eq!(earliest(), 10);
        first.del();
        assert_eq!(earliest(), 1_001_999, "the last arming counts");
    }

    /// Re-arming is amortised: among many armed timers, the heap is trimmed only once the stale
    /// entries outnumber the live ones, so the entries a trim scans, summed over many armings, stay
    /// within a constant per arming (not O(armed timers) per arming, as trimming on every arming
    /// past the floor would cost).
    #[test]
    fn rearming_among_many_armed_timers_trims_the_heap_rarely() {
        let ctx =
            AioContext::builder().backend(Backend::Model(ModelKernel::new())).build().unwrap();
        // 200 live timers, the earliest first: the re-armed one below stays under the live top, so
        // the heap only shrinks when it is trimmed.
        let live: Vec<_> = (0..200)
            .map(|i| {
                let t = ctx.timer_new(|_| {});
                t.mod_ns(10 + i);
                t
            })
            .collect();
        let t = ctx.timer_new(|_| {});
        let len = || ctx.shared().timers().queue.lock().heap.len();
        let (armings, mut scanned, mut trims) = (2_000u64, 0u64, 0u64);
        let mut before = len();
        for i in 0..armings {
            t.mod_ns(1_000_000 + i);
            let after = len();
            if after <= before {
                // Trimmed: the trim scanned every entry, the new one included.
                scanned += before as u64 + 1;
                trims += 1;
            }
            before = after;
        }
        assert!(trims > 0, "2000 armings of one timer left {before} heap entries untrimmed");
        assert!(
            scanned <= 4 * armings,
            "{trims} trims scanned {scanned} heap entries for {armings} armings among {} timers",
            live.len() + 1
        );
    }

    /// A timer armed no earlier than the earliest deadline wakes nobody: the loop's next blocking
    /// poll sleeps until that earliest deadline and runs its timer (a wake-up would make the wait
    /// return at once with nothing done). Arming an earlier one does wake it.
    #[test]
    fn arming_a_timer_wakes_the_loop_only_when_it_is_the_earliest() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::Arc;
        let ctx =
            AioContext::builder().backend(Backend::Model(ModelKernel::new())).build().unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let first = ctx.timer_new(move |_| {
            f.fetch_add(1, SeqCst);
        });
        let later = ctx.timer_new(|_| {});
        let mut due = ctx.now_ns() + 1_000;
        first.mod_ns(due);
        // The notify of that arming (it lowered the earliest deadline), taken by a poll.
        assert!(!ctx.poll(false));
        // At the earliest deadline, then after it.
        for later_by in [0, 1_000] {
            later.mod_ns(due + later_by);
            assert!(ctx.poll(true), "a blocking poll after arming a timer {later_by} ns after the earliest returned with nothing done");
            assert_eq!(fired.swap(0, SeqCst), 1, "the earliest timer ran");
            assert_eq!(ctx.now_ns(), due, "the wait slept until the earliest deadline");
            due += 10_000;
            first.mod_ns(due);
            assert!(!ctx.poll(false));
        }
        // An earlier deadline wakes the loop: the blocking poll returns at once, before it.
        later.mod_ns(ctx.now_ns() + 100);
        assert!(!ctx.poll(true), "the wake-up of an earlier arming is taken without progress");
        assert_eq!(fired.load(SeqCst), 0);
    }
}
