//! Running a [`Program`] on the REAL code and logging what the caller sees ([`Ev`]).
//!
//! The home thread (the caller's thread: `AioContext` is `!Send`) builds the context, creates every
//! object, starts the remote threads (the facade's `thread::spawn`: std threads, or shuttle's under
//! `--cfg aioctx_shuttle`), runs its own operations, then loops in `poll(true)` until every remote
//! finished and nothing is pending (the final drain), and drops everything. Objects live in facade
//! mutexes so that any thread can reach them; callbacks hold a `Weak` to them (no cycle through the
//! context).
//!
//! Lost wake-ups: under shuttle a hang is a deadlock shuttle reports. On the model kernel with std
//! threads, a watchdog reads [`ModelKernel::blocked_waiters`] once every remote's last notify has
//! returned: the home thread parked with nothing ready can never wake again, which is exact, not a
//! timeout. On a real kernel the same state cannot be read, and the watchdog falls back to a 20 s
//! limit after the remotes finished (a hang, not a slow run: the runs take milliseconds). The
//! watchdog logs `p_no_lost_wakeup` and kicks the home thread with a notify, so the run ends and the
//! failure shrinks like any other.
//!
//! Home-only bookkeeping (the log, run counters, instance numbers) uses std types on purpose, as in
//! `model/tests/support/mod.rs`: a checker scheduling point on them would explore nothing new.
#![allow(clippy::disallowed_types)] // std sync for the log and home-only counters, see above

use std::os::fd::RawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool as StdBool, AtomicU32 as StdU32, AtomicU64 as StdU64};
use std::sync::{Arc as StdArc, Mutex as StdMutex, Weak};

use aioctx::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use aioctx::sync::{thread, Arc, Mutex};
use aioctx::{
    AioContext, Backend, Bh, BhRef, FaultCounts, Faults, FdHandler, FdRef, Handle, Interest,
    ModelKernel, Remote, Timer, TimerRef,
};

use super::oracle::{self, Cb, Ev, Failure, Stats};
use super::{Nested, Op, Owner, Program};

/// A bottom half of the program: a real `Bh`, or a task standing for one ([`super::BhSpec::task`]).
enum BhObj {
    Bh(Bh<Remote>),
    Task(Arc<TaskWake>),
}

/// What the owner of a task holds: the waker its last poll left, and whether a wake is pending (the
/// runner's view, for the final drain; set before each wake, cleared by the poll).
struct TaskWake {
    waker: Mutex<Option<std::task::Waker>>,
    /// The waker of the task's current poll, for its own reschedule (`BhSpec::resched`): a remote
    /// owner's delete drops `waker`, at any time, even between the poll's store of it and the
    /// reschedule; a task still holds its own `Context`'s waker.
    own: Mutex<Option<std::task::Waker>>,
    pending: AtomicBool,
    /// A remote owner dropped its waker (`Op::Delete`): it wakes the task no more. The task, and a
    /// wake it has not run yet, stay (the home thread's final drain must still run it).
    dropped: AtomicBool,
    /// Its future returned `Ready` (`BhSpec::completes`): a wake now finds it finished.
    finished: AtomicBool,
}

impl BhObj {
    fn schedule(&self, idle: bool) {
        match self {
            BhObj::Bh(x) if idle => x.schedule_idle(),
            BhObj::Bh(x) => x.schedule(),
            BhObj::Task(t) => {
                t.pending.store(true, Ordering::SeqCst);
                // No waker before the task's first poll: it is still scheduled by its spawn.
                if let Some(w) = t.waker.lock().as_ref() {
                    w.wake_by_ref();
                }
            }
        }
    }

    /// Its callback (or the task's poll) schedules it again.
    fn reschedule_self(&self, idle: bool) {
        match self {
            BhObj::Task(t) => {
                t.pending.store(true, Ordering::SeqCst);
                if let Some(w) = t.own.lock().as_ref() {
                    w.wake_by_ref();
                }
            }
            BhObj::Bh(_) => self.schedule(idle),
        }
    }

    fn is_scheduled(&self) -> bool {
        match self {
            BhObj::Bh(x) => x.is_scheduled(),
            BhObj::Task(t) => {
                t.pending.load(Ordering::SeqCst) && !t.finished.load(Ordering::SeqCst)
            }
        }
    }

    /// Its owner can still schedule it (not a task whose waker its remote owner dropped).
    fn schedulable(&self) -> bool {
        !matches!(self, BhObj::Task(t) if t.dropped.load(Ordering::SeqCst))
    }
}

/// A value in the shared [`Objs`] that only the home thread may touch: `get` checks the thread.
struct HomeOnly<T> {
    home: thread::ThreadId,
    v: T,
}

// SAFETY: `v` is reached only through `get`, which panics off the home thread, and `Objs` (which
// holds it) is dropped by the home thread: `run` drops its last strong reference after joining
// every other thread; callbacks hold only a `Weak`.
unsafe impl<T> Send for HomeOnly<T> {}
// SAFETY: see the Send impl.
unsafe impl<T> Sync for HomeOnly<T> {}

impl<T> HomeOnly<T> {
    fn get(&self) -> &T {
        assert_eq!(
            thread::current().id(),
            self.home,
            "home-only state touched off the home thread"
        );
        &self.v
    }
}

/// The fds of a run: model fds or real sockets.
pub trait Fds: Send + Sync {
    /// A new fd, not readable.
    fn open(&self) -> RawFd;
    /// Make it readable.
    fn ready(&self, fd: RawFd);
    /// Consume its readiness; whether it was readable.
    fn consume(&self, fd: RawFd) -> bool;
    /// Whether it is readable (data, or hung up).
    fn is_ready(&self, fd: RawFd) -> bool;
    /// Close its peer: readable for good, a read finds the data written before, then the end of
    /// file.
    fn hang_up(&self, fd: RawFd);
    /// Whether a read finds the end of file (hung up, no data left).
    fn at_eof(&self, fd: RawFd) -> bool;
    /// Close it.
    fn close(&self, fd: RawFd);
    /// Called on the home thread: something a remote thread can call to interrupt the home thread's
    /// wait (a signal: EINTR), if the kernel has one.
    fn interrupter(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }
    /// An external loop's own wait on the context's fd (`AsRawFd`), for at most `timeout` (None:
    /// until readable). The model kernel has no fd to wait on: no wait (the default).
    fn external_wait(&self, _fd: RawFd, _timeout: Option<std::time::Duration>) {}
    /// Called on the home thread after the context is built: inject what the backend can
    /// (eventfd saturation on a real kernel).
    fn after_build(&self, _ctx: &AioContext) {}
}

/// Model fds of a [`ModelKernel`].
pub struct ModelFds(pub Arc<ModelKernel>);

impl Fds for ModelFds {
    fn open(&self) -> RawFd {
        self.0.open()
    }
    fn ready(&self, fd: RawFd) {
        self.0.set_readable(fd, true)
    }
    fn consume(&self, fd: RawFd) -> bool {
        self.0.take_readable(fd)
    }
    fn is_ready(&self, fd: RawFd) -> bool {
        self.0.is_readable(fd)
    }
    fn hang_up(&self, fd: RawFd) {
        self.0.hang_up(fd)
    }
    fn at_eof(&self, fd: RawFd) -> bool {
        self.0.is_at_eof(fd)
    }
    fn close(&self, fd: RawFd) {
        self.0.close(fd)
    }
}

/// How a lost wake-up is noticed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// None: the checker reports the deadlock (shuttle).
    Checker,
    /// `ModelKernel::blocked_waiters` after every remote finished (exact).
    ModelKernel,
    /// A real kernel: this many seconds after every remote finished.
    Seconds(u64),
}

/// Where a program runs.
pub struct Env {
    /// The backend (`Backend::Model(k)` for the model kernel).
    pub backend: Backend,
    /// The model kernel, if the backend is one (faults, the exact watchdog).
    pub kernel: Option<Arc<ModelKernel>>,
    /// Its fds.
    pub fds: std::sync::Arc<dyn Fds>,
    /// Faults to inject: the model kernel's, or with `Backend::IoUring` the io_uring monitor's
    /// (`Builder::io_uring_faults`; none when all rates are 0).
    pub faults: Faults,
    /// The watchdog.
    pub watchdog: Watchdog,
    /// The fd monitor reports readiness at once (model kernel): handlers join `p_runs_what_was_due`.
    pub strict_fds: bool,
    /// Where a hang that takes the process with it (see [`Watchdog::Seconds`]) writes the program
    /// ([`Program::encode`](super::Program::encode)), after this first line (where it ran), so that
    /// another process can rerun and shrink it (aioctx-conformance's `conformance-workload`).
    pub hang_file: Option<(std::path::PathBuf, String)>,
}

impl Env {
    /// The model kernel, with `faults` (std threads, or the checker's under a checker cfg).
    pub fn model(faults: Faults) -> Env {
        let k = ModelKernel::new();
        Env {
            backend: Backend::Model(k.clone()),
            kernel: Some(k.clone()),
            fds: std::sync::Arc::new(ModelFds(k)),
            faults,
            watchdog: if aioctx::sync::MODEL_CHECKER {
                Watchdog::Checker
            } else {
                Watchdog::ModelKernel
            },
            strict_fds: true,
            hang_file: None,
        }
    }
}

/// A run's log and the oracle's verdict on it.
#[derive(Debug)]
pub struct Outcome {
    /// What the caller saw.
    pub log: Vec<Ev>,
    /// The oracle's verdict.
    pub result: Result<Stats, Failure>,
    /// What was injected.
    pub injected: FaultCounts,
}

impl Outcome {
    /// The failure with the log around it, for a panic message.
    pub fn report(&self, p: &Program) -> String {
        match &self.result {
            Ok(_) => "ok".into(),
            Err(f) => {
                let from = f.at.saturating_sub(25);
                let mut s =
                    format!("{f}\nprogram:\n{}\nlog (events {from}..={}):\n", p.to_rust(), f.at);
                for (i, e) in self.log.iter().enumerate().take(f.at + 1).skip(from) {
                    s.push_str(&format!("  {i:4} {e:?}\n"));
                }
                s
            }
        }
    }
}

/// A side of an fd handler's interest ([`Objs::set_side`]).
#[derive(Clone, Copy)]
enum Side {
    Read,
    Write,
}

struct Objs {
    p: Program,
    handle: Handle,
    // Remote kinds (made through the Handle): other threads of the program own some of them.
    bhs: Vec<Mutex<Option<BhObj>>>,
    /// The join handles of the tasks (`!Send`: the home thread's).
    joins: HomeOnly<std::cell::RefCell<Vec<Option<aioctx::task::JoinHandle<()>>>>>,
    timers: Vec<Mutex<Option<Timer<Remote>>>>,
    fd: Vec<RawFd>,
    /// What fd f's handler waits for, by [`Side`]: readability (until `SetInterest(f, false)`
    /// returned; a new handler waits for it again), writability ([`super::FdSpec::write`];
    /// home-owned fds only).
    wants: Vec<[StdBool; 2]>,
    fds: std::sync::Arc<dyn Fds>,
    log: StdMutex<Vec<Ev>>,
    bh_runs: Vec<StdU32>,
    timer_fires: Vec<StdU32>,
    timer_running: Vec<StdBool>,
    next_inst: StdU32,
    oneshots: StdU32,
    oneshots_run: StdU32,
    faults: bool,
    /// The watchdog logged a violation and kicked the home thread: end the run.
    kicked: StdBool,
    bound: u64,
    /// Polls a nested `poll(true)` may make before its timer fires: each one that returns early
    /// needs a wake-up (a remote operation, an injected spurious wake-up, a readiness of another
    /// fd), so this counts work, not time.
    wait_bound: u64,
}

impl Objs {
    fn log(&self, e: Ev) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }

    fn poll(&self, ctx: &AioContext, blocking: bool) -> bool {
        self.poll_begin(ctx, blocking);
        let r = ctx.poll(blocking);
        self.log(Ev::PollEnd { progress: r });
        r
    }

    /// Log a poll's begin, after the fds the monitor does not watch for it (`Ev::Unwatched`).
    fn poll_begin(&self, ctx: &AioContext, blocking: bool) {
        for (f, fd) in self.fd.iter().enumerate() {
            if ctx.is_unwatched(*fd) {
                self.log(Ev::Unwatched(f as u8));
            }
        }
        self.log(Ev::PollBegin { blocking, now: self.handle.now_ns() });
    }

    /// After an outermost poll: which handlers are on the poll list.
    fn log_polled(&self, ctx: &AioContext, inst: &[Option<u32>]) {
        for (f, fd) in self.fd.iter().enumerate() {
            if ctx.is_polled(*fd) {
                self.log(Ev::Polled(f as u8, inst.get(f).copied().flatten().unwrap_or(0)));
            }
        }
    }

    fn nested(&self, kind: Nested) {
        match kind {
            Nested::No => {}
            Nested::Once => {
                AioContext::with_current(|ctx| self.poll(ctx, false));
            }
            Nested::Drain => {
                AioContext::with_current(|ctx| {
                    let mut n = 0;
                    while self.poll(ctx, false) && !self.kicked.load(Relaxed) {
                        n += 1;
                        if n >= self.bound {
                            self.log(Ev::Violation(format!(
                                "p_no_busy_loop: a nested `while poll(false) {{}}` made {n} polls \
                                 that all returned progress"
                            )));
                            break;
                        }
                    }
                });
            }
            Nested::WaitTimer(t) => {
                let ti = t as usize;
                if ti >= self.timers.len()
                    || self.p.timers[ti].owner != Owner::Home
                    || self.timer_running[ti].load(Relaxed)
                {
                    return;
                }
                let fired = self.timer_fires[ti].load(Relaxed);
                {
                    let g = self.timers[ti].lock();
                    let Some(tm) = g.as_ref() else { return };
                    let d = self.handle.now_ns() + 1_000_000;
                    self.log(Ev::TimerMod(t, d));
                    tm.mod_ns(d);
                }
                AioContext::with_current(|ctx| {
                    let mut n = 0;
                    while self.timer_fires[ti].load(Relaxed) == fired && !self.kicked.load(Relaxed)
                    {
                        if n >= self.wait_bound {
                            self.log(Ev::Violation(format!(
                                "p_no_busy_loop: a nested `poll(true)` waiting for timer {t} made \
                                 {n} polls and the timer did not fire"
                            )));
                            break;
                        }
                        self.poll(ctx, true);
                        n += 1;
                    }
                });
            }
        }
    }

    fn bh_callback(w: Weak<Objs>, b: u8) -> impl FnMut(&BhRef<'_>) + Send + 'static {
        move |_: &BhRef<'_>| {
            if let Some(o) = w.upgrade() {
                o.bh_body(b);
            }
        }
    }

    /// A task's future: each poll is a call of BH `b`'s callback; it completes (its delete, for
    /// the model) at the call after its reschedules if `completes`, else never.
    fn task_future(
        w: Weak<Objs>,
        b: u8,
        t: Arc<TaskWake>,
    ) -> impl std::future::Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            // The waker first, then the flag: a wake from now on reaches this task again.
            *t.waker.lock() = Some(cx.waker().clone());
            *t.own.lock() = Some(cx.waker().clone());
            t.pending.store(false, Ordering::SeqCst);
            let Some(o) = w.upgrade() else { return std::task::Poll::Pending };
            o.bh_body(b);
            let spec = o.p.bhs[b as usize];
            if spec.completes && o.bh_runs[b as usize].load(Relaxed) > u32::from(spec.resched) {
                t.finished.store(true, Ordering::SeqCst);
                o.log(Ev::Delete(b));
                return std::task::Poll::Ready(());
            }
            std::task::Poll::Pending
        })
    }

    /// BH `b`'s callback (or task `b`'s poll).
    fn bh_body(&self, b: u8) {
        let spec = self.p.bhs[b as usize];
        self.log(Ev::CbBegin(Cb::Bh(b)));
        let n = self.bh_runs[b as usize].fetch_add(1, Relaxed) + 1;
        if spec.delete_self && n == 1 && spec.owner == Owner::Home {
            let x = self.bhs[b as usize].lock().take();
            if let Some(x) = x {
                self.delete(b, x);
                self.log(Ev::Delete(b));
            }
        }
        if n <= u32::from(spec.resched) {
            let g = self.bhs[b as usize].lock();
            if let Some(x) = g.as_ref() {
                self.log(Ev::Schedule(b));
                x.reschedule_self(spec.idle);
            }
        }
        self.nested(spec.nested);
        self.log(Ev::CbEnd(Cb::Bh(b)));
    }

    /// Delete BH `b` (taken out of its slot): drop the `Bh`, or cancel the task (its home owner;
    /// a remote owner's delete only drops its waker, in `Op::Delete`).
    fn delete(&self, b: u8, x: BhObj) {
        match x {
            BhObj::Bh(bh) => drop(bh),
            BhObj::Task(_) => {
                let j = self.joins.get().borrow_mut()[b as usize].take();
                if let Some(j) = j {
                    j.cancel();
                }
            }
        }
    }

    fn timer_callback(w: Weak<Objs>, t: u8) -> impl FnMut(&TimerRef<'_>) + Send + 'static {
        // Logs `TimerFreed` when the closure (and so everything it captured) is dropped.
        struct Freed(Weak<Objs>, u8);
        impl Drop for Freed {
            fn drop(&mut self) {
                if let Some(o) = self.0.upgrade() {
                    o.log(Ev::TimerFreed(self.1));
                }
            }
        }
        let freed = Freed(w.clone(), t);
        move |_: &TimerRef<'_>| {
            let _ = &freed;
            let Some(o) = w.upgrade() else { return };
            let ti = t as usize;
            let spec = o.p.timers[ti];
            let now = o.handle.now_ns();
            o.log(Ev::CbBegin(Cb::Timer(t, now)));
            o.timer_running[ti].store(true, Relaxed);
            let n = o.timer_fires[ti].fetch_add(1, Relaxed) + 1;
            if n <= u32::from(spec.rearm) {
                let g = o.timers[ti].lock();
                if let Some(tm) = g.as_ref() {
                    let d = o.handle.now_ns();
                    o.log(Ev::TimerMod(t, d));
                    tm.mod_ns(d);
                }
            }
            o.nested(spec.nested);
            o.timer_running[ti].store(false, Relaxed);
            o.log(Ev::CbEnd(Cb::Timer(t, now)));
        }
    }

    fn handler(w: &Weak<Objs>, f: u8, inst: u32, o: &Objs) -> FdHandler<Remote> {
        let spec = o.p.fds[f as usize];
        let fd = o.fd[f as usize];
        let w1 = w.clone();
        let mut h = FdHandler::new_remote().on_read(move |_: &FdRef<'_>| {
            let Some(o) = w1.upgrade() else { return };
            let cb = Cb::Read(f, inst);
            o.log(Ev::CbBegin(cb));
            if spec.consume_late {
                o.nested(spec.nested);
            }
            let eof = o.read(f);
            if spec.remove_self && spec.owner == Owner::Home || eof && spec.eof_removes {
                o.remove_handler(f);
            } else if eof {
                o.set_side(f, Side::Read, false);
            }
            if !spec.consume_late {
                o.nested(spec.nested);
            }
            o.log(Ev::CbEnd(cb));
        });
        if spec.write && spec.owner == Owner::Home {
            let w6 = w.clone();
            h = h.on_write(move |_: &FdRef<'_>| {
                let Some(o) = w6.upgrade() else { return };
                let cb = Cb::Write(f, inst);
                o.log(Ev::CbBegin(cb));
                // The output is flushed: wait for writability no more (the read side kept).
                o.set_side(f, Side::Write, false);
                o.log(Ev::CbEnd(cb));
            });
        }
        if spec.poll {
            let (w2, w3, w4, w5) = (w.clone(), w.clone(), w.clone(), w.clone());
            h = h
                .on_poll(
                    // Data to read, not the end of file (a user's io_poll looks for requests).
                    move |_: &FdRef<'_>| {
                        w2.upgrade().is_some_and(|o| o.fds.is_ready(fd) && !o.fds.at_eof(fd))
                    },
                    move |_: &FdRef<'_>| {
                        let Some(o) = w3.upgrade() else { return };
                        let cb = Cb::PollReady(f, inst);
                        o.log(Ev::CbBegin(cb));
                        // The same nested poll as the read callback's, in the same place.
                        if spec.consume_late {
                            o.nested(spec.nested);
                        }
                        if o.read(f) {
                            if spec.eof_removes {
                                o.remove_handler(f);
                            } else {
                                o.set_side(f, Side::Read, false);
                            }
                        }
                        if !spec.consume_late {
                            o.nested(spec.nested);
                        }
                        o.log(Ev::CbEnd(cb));
                    },
                )
                .on_poll_begin(move |_: &FdRef<'_>| {
                    if let Some(o) = w4.upgrade() {
                        o.log(Ev::IoPollBegin(f, inst));
                        o.bracket(Cb::PollBracket(f, inst), spec.bracket);
                    }
                })
                .on_poll_end(move |_: &FdRef<'_>| {
                    if let Some(o) = w5.upgrade() {
                        o.log(Ev::IoPollEnd(f, inst));
                        o.bracket(Cb::PollBracket(f, inst), spec.bracket);
                    }
                });
        }
        h
    }

    /// The nested poll of an io_poll_begin or io_poll_end, logged as a callback of the handler (so
    /// that the oracle sees what the nested poll may not call: this handler).
    fn bracket(&self, cb: Cb, nested: Nested) {
        if nested == Nested::No {
            return;
        }
        self.log(Ev::CbBegin(cb));
        self.nested(nested);
        self.log(Ev::CbEnd(cb));
    }

    /// A handler's read of fd `f`: consume its data; whether it found the end of file of a
    /// home-owned fd (a hang-up is only of those: [`Op::HangUp`]), which the handler must react to.
    fn read(&self, f: u8) -> bool {
        let fd = self.fd[f as usize];
        if self.fds.consume(fd) {
            self.log(Ev::Consumed(f));
        }
        self.p.fds[f as usize].owner == Owner::Home && self.fds.at_eof(fd)
    }

    /// `remove_fd_handler(f)`, logged.
    fn remove_handler(&self, f: u8) {
        match self.handle.remove_fd_handler(self.fd[f as usize]) {
            Ok(_) => self.log(Ev::Removed(f)),
            Err(e) => self.log(Ev::Violation(format!("p_runner: remove_fd_handler: {e}"))),
        }
    }

    /// One side of fd `f`'s handler on or off (`set_fd_interest`, the other side kept), logged
    /// before (on is an obligation from there) and after (off is a withdrawal from there), as
    /// SetBegin / SetEnd. An injected registration fault leaves it as it was.
    fn set_side(&self, f: u8, side: Side, on: bool) {
        let write = matches!(side, Side::Write);
        self.log(if write { Ev::WriteBegin(f, on) } else { Ev::InterestBegin(f, on) });
        // The home thread's `pending` errs towards "nothing to wait for": off before the call (its
        // notify may wake a blocking poll that must then not block again for this fd), on once it
        // succeeded.
        let wants = &self.wants[f as usize];
        let want = &wants[write as usize];
        let before = want.load(Relaxed);
        if !on {
            want.store(false, Relaxed);
        }
        let mut interest = Interest { read: wants[0].load(Relaxed), write: wants[1].load(Relaxed) };
        *(if write { &mut interest.write } else { &mut interest.read }) = on;
        let r = self.handle.set_fd_interest(self.fd[f as usize], interest);
        let ok = r.is_ok();
        self.log(if write { Ev::WriteEnd(f, on, ok) } else { Ev::InterestEnd(f, on, ok) });
        want.store(if ok { on } else { before }, Relaxed);
        self.check_set(r);
    }

    /// A failed `set_fd_interest` is a violation unless faults are injected.
    fn check_set(&self, r: std::io::Result<bool>) {
        if let Err(e) = r {
            if !self.faults {
                self.log(Ev::Violation(format!("p_runner: set_fd_interest failed: {e}")));
            }
        }
    }

    /// Drop every object, then the context (io_poll_end of begun handlers runs in it).
    fn teardown(&self, ctx: AioContext) {
        for b in &self.bhs {
            drop(b.lock().take());
        }
        for j in self.joins.get().borrow_mut().iter_mut() {
            if let Some(j) = j.take() {
                j.cancel();
            }
        }
        for t in &self.timers {
            drop(t.lock().take());
        }
        drop(ctx);
        self.log(Ev::Dropped);
    }

    /// Whether work is pending (the home thread's view of the code's state).
    fn pending(&self, ctx: &AioContext) -> bool {
        self.bhs.iter().any(|b| b.lock().as_ref().is_some_and(|b| b.is_scheduled()))
            || self.timers.iter().any(|t| t.lock().as_ref().is_some_and(|t| t.is_pending()))
            || self.fd.iter().zip(&self.wants).any(|(fd, [read, write])| {
                let registered = ctx.poll_ns(*fd).is_some();
                registered && (self.fds.is_ready(*fd) && read.load(Relaxed) || write.load(Relaxed))
            })
            || self.oneshots.load(Relaxed) != self.oneshots_run.load(Relaxed)
    }
}

/// Shared by the threads of a run.
struct Shared {
    o: StdArc<Objs>,
    /// Remotes that finished their operations (set before their last notify).
    done: Arc<AtomicUsize>,
    /// Remotes whose last notify returned.
    quiet: Arc<AtomicUsize>,
    interrupt: Option<StdArc<dyn Fn() + Send + Sync>>,
    inst: StdArc<StdMutex<Vec<Option<u32>>>>,
}

impl Shared {
    /// A copy of the current handler instances: the std lock is never held across a facade
    /// operation (shuttle runs every thread on one OS thread, so a std lock held at a scheduling
    /// point deadlocks the process).
    fn instances(&self) -> Vec<Option<u32>> {
        self.inst.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The object an operation's index names: the n-th object of its kind that `thread` owns (for a
/// hang-up the n-th home-owned fd, whoever runs it), modulo their number, so that every operation
/// of a shrunk or generated program acts on something; None if there is no such object.
pub(super) fn resolve(p: &Program, op: Op, thread: Option<u8>) -> Option<Op> {
    let nth = |owners: Vec<Owner>, who: Option<u8>, i: u8| -> Option<u8> {
        let own: Vec<u8> =
            (0..owners.len() as u8).filter(|&k| Program::owns(owners[k as usize], who)).collect();
        (!own.is_empty()).then(|| own[i as usize % own.len()])
    };
    let bh_of = |i| nth(p.bhs.iter().map(|x| x.owner).collect(), thread, i);
    let tm_of = |i| nth(p.timers.iter().map(|x| x.owner).collect(), thread, i);
    let fd_of = |i| nth(p.fds.iter().map(|x| x.owner).collect(), thread, i);
    match op {
        Op::Schedule(i) => bh_of(i).map(Op::Schedule),
        Op::Cancel(i) => bh_of(i).map(Op::Cancel),
        Op::Delete(i) => bh_of(i).map(Op::Delete),
        Op::TimerMod(i, us) => tm_of(i).map(|t| Op::TimerMod(t, us)),
        Op::TimerDel(i) => tm_of(i).map(Op::TimerDel),
        Op::TimerDrop(i) => tm_of(i).map(Op::TimerDrop),
        Op::SetHandler(i) => fd_of(i).map(Op::SetHandler),
        Op::RemoveHandler(i) => fd_of(i).map(Op::RemoveHandler),
        Op::SetInterest(i, on) => fd_of(i).map(|f| Op::SetInterest(f, on)),
        Op::Ready(i) => fd_of(i).map(Op::Ready),
        Op::Send(i) => fd_of(i).map(Op::Send),
        Op::HangUp(i) => nth(p.fds.iter().map(|x| x.owner).collect(), None, i).map(Op::HangUp),
        other => Some(other),
    }
}

/// Run `op` as `thread` (None: home; `ctx` given).
fn exec(s: &Shared, w: &Weak<Objs>, op: Op, thread: Option<u8>, ctx: Option<&AioContext>) {
    let o = &*s.o;
    let p = &o.p;
    let Some(op) = resolve(p, op, thread) else { return };
    match op {
        Op::Schedule(b) => {
            let g = o.bhs[b as usize].lock();
            if let Some(x) = g.as_ref().filter(|x| x.schedulable()) {
                o.log(Ev::Schedule(b));
                x.schedule(p.bhs[b as usize].idle);
            }
        }
        Op::Cancel(b) => {
            let g = o.bhs[b as usize].lock();
            if let Some(BhObj::Bh(x)) = g.as_ref() {
                x.cancel();
                o.log(Ev::Cancel(b));
            }
        }
        Op::Delete(b) => {
            let mut g = o.bhs[b as usize].lock();
            if let Some(BhObj::Task(t)) = g.as_ref() {
                if p.bhs[b as usize].owner != Owner::Home {
                    // A remote owner only drops its waker (no delete to log).
                    t.dropped.store(true, Ordering::SeqCst);
                    drop(t.waker.lock().take());
                    return;
                }
            }
            let x = g.take();
            drop(g);
            if let Some(x) = x {
                o.delete(b, x);
                o.log(Ev::Delete(b));
            }
        }
        Op::Oneshot => {
            let n = o.oneshots.fetch_add(1, Relaxed);
            o.log(Ev::Oneshot(n));
            let w = w.clone();
            o.handle.bh_oneshot(move || {
                if let Some(o) = w.upgrade() {
                    o.log(Ev::CbBegin(Cb::Oneshot(n)));
                    o.oneshots_run.fetch_add(1, Relaxed);
                    o.log(Ev::CbEnd(Cb::Oneshot(n)));
                }
            });
        }
        Op::TimerMod(t, us) => {
            let g = o.timers[t as usize].lock();
            if let Some(x) = g.as_ref() {
                let d = o.handle.now_ns() + u64::from(us) * 1000;
                o.log(Ev::TimerMod(t, d));
                x.mod_ns(d);
            }
        }
        Op::TimerDel(t) => {
            let g = o.timers[t as usize].lock();
            if let Some(x) = g.as_ref() {
                x.del();
                o.log(Ev::TimerDel(t, false));
            }
        }
        Op::TimerDrop(t) => {
            let x = o.timers[t as usize].lock().take();
            if x.is_some() {
                drop(x);
                o.log(Ev::TimerDel(t, true));
            }
        }
        Op::SetHandler(f) => {
            let inst = o.next_inst.fetch_add(1, Relaxed) + 1;
            let h = Objs::handler(w, f, inst, o);
            o.log(Ev::SetBegin(f, inst));
            let r = o.handle.set_fd_handler(o.fd[f as usize], h);
            o.log(Ev::SetEnd(f, inst, r.is_ok()));
            match r {
                Ok(()) => {
                    let write = p.fds[f as usize].write && p.fds[f as usize].owner == Owner::Home;
                    let [want_read, want_write] = &o.wants[f as usize];
                    want_read.store(true, Relaxed);
                    want_write.store(write, Relaxed);
                    s.inst.lock().unwrap_or_else(|e| e.into_inner())[f as usize] = Some(inst)
                }
                Err(e) if !o.faults => {
                    o.log(Ev::Violation(format!("p_runner: set_fd_handler failed: {e}")))
                }
                Err(_) => {}
            }
        }
        Op::RemoveHandler(f) => o.remove_handler(f),
        Op::SetInterest(f, on) => o.set_side(f, Side::Read, on),
        Op::Ready(f) => {
            o.log(Ev::Ready(f));
            o.fds.ready(o.fd[f as usize]);
            o.log(Ev::ReadyDone(f));
        }
        Op::Send(f) if p.fds[f as usize].write && thread.is_none() => {
            o.set_side(f, Side::Write, true);
        }
        Op::HangUp(f) => {
            o.log(Ev::HangUp(f));
            o.fds.hang_up(o.fd[f as usize]);
            o.log(Ev::HungUp(f));
        }
        Op::Notify => {
            o.log(Ev::Wake);
            o.handle.notify();
        }
        Op::PollParams(on) => {
            o.log(Ev::Wake);
            o.handle.set_poll_params(if on { 50_000 } else { 0 }, 0, 0);
        }
        Op::Interrupt if thread.is_some() => {
            if let Some(i) = &s.interrupt {
                o.log(Ev::Wake);
                i();
            }
        }
        Op::Poll(_) | Op::Drain | Op::External if thread.is_none() => {
            home_loop(s, op, ctx.expect("home"))
        }
        _ => {} // not this thread's object or operation: skipped (shrinking keeps programs valid)
    }
}

/// The home thread's own loop operations: a poll, a drain, one external-loop iteration.
fn home_loop(s: &Shared, op: Op, ctx: &AioContext) {
    let o = &*s.o;
    match op {
        Op::Poll(blocking) => {
            let n = o.p.remotes.len();
            // A blocking poll only when something will end it: pending work, or a remote's last
            // notify still to come.
            let safe = o.pending(ctx) || s.done.load(Ordering::SeqCst) < n;
            o.poll(ctx, blocking && safe);
            o.log_polled(ctx, &s.instances());
        }
        Op::Drain => {
            let mut n = 0;
            while o.poll(ctx, false) {
                n += 1;
                if n >= o.bound {
                    o.log(Ev::Violation(format!(
                        "p_no_busy_loop: `while poll(false) {{}}` made {n} polls that all returned progress"
                    )));
                    break;
                }
            }
            o.log_polled(ctx, &s.instances());
        }
        Op::External => {
            let n = o.p.remotes.len();
            // Its own wait may block only when something will end it (as `Poll(true)`).
            let safe = o.pending(ctx) || s.done.load(Ordering::SeqCst) < n;
            o.poll_begin(ctx, safe);
            let t = ctx.prepare();
            o.fds.external_wait(
                std::os::fd::AsRawFd::as_raw_fd(ctx),
                if safe { t } else { Some(std::time::Duration::ZERO) },
            );
            ctx.check();
            let r = ctx.dispatch();
            o.log(Ev::PollEnd { progress: r });
        }
        _ => unreachable!("not a loop operation: {op:?}"),
    }
}

/// Run `p` in `env` on the calling thread (the home thread) and check the log with the oracle.
pub fn run(p: &Program, env: &Env) -> Outcome {
    let mut b = AioContext::builder().backend(env.backend.clone());
    if matches!(env.backend, Backend::IoUring) && env.faults != Faults::default() {
        b = b.io_uring_faults(env.faults);
    }
    if p.polling {
        b = b.poll_params(50_000, 0, 0);
    }
    if let Some(k) = &env.kernel {
        // Time moves 1 µs per clock read, so polling windows end and deadlines pass.
        k.clock().set_tick(1000);
    }
    let ctx = b.build().expect("build the context");
    env.fds.after_build(&ctx);
    let fd: Vec<RawFd> = p.fds.iter().map(|_| env.fds.open()).collect();
    let bound = 200 + 20 * p.len() as u64;
    // Each early return of a nested wait needs a wake-up: an operation (any thread's, and the
    // callbacks they cause), or an injected fault that ends a wait early (a spurious wake-up, an
    // io_uring enter failure or a lost or delayed completion; at most 40 %: 64 more cover a
    // geometric tail beyond any realistic draw).
    let f = env.faults;
    let early = f.spurious_wake + f.enter_fail + f.cq_lost + f.cq_delay > 0;
    let wait_bound = 16 + 4 * p.len() as u64 + if early { 64 } else { 0 };
    let o = StdArc::new_cyclic(|w: &Weak<Objs>| {
        let bhs = (0..p.bhs.len())
            .map(|b| {
                Mutex::new(Some(if p.bhs[b].task {
                    BhObj::Task(Arc::new(TaskWake {
                        waker: Mutex::new(None),
                        own: Mutex::new(None),
                        pending: AtomicBool::new(true), // spawned below: scheduled
                        dropped: AtomicBool::new(false),
                        finished: AtomicBool::new(false),
                    }))
                } else {
                    BhObj::Bh(ctx.handle().bh_new(Objs::bh_callback(w.clone(), b as u8)))
                }))
            })
            .collect();
        let timers = (0..p.timers.len())
            .map(|t| {
                Mutex::new(Some(ctx.handle().timer_new(Objs::timer_callback(w.clone(), t as u8))))
            })
            .collect();
        Objs {
            p: p.clone(),
            handle: ctx.handle().clone(),
            bhs,
            joins: HomeOnly {
                home: thread::current().id(),
                v: std::cell::RefCell::new(p.bhs.iter().map(|_| None).collect()),
            },
            timers,
            fd: fd.clone(),
            wants: p.fds.iter().map(|_| [StdBool::new(false), StdBool::new(false)]).collect(),
            fds: env.fds.clone(),
            log: StdMutex::new(Vec::new()),
            bh_runs: p.bhs.iter().map(|_| StdU32::new(0)).collect(),
            timer_fires: p.timers.iter().map(|_| StdU32::new(0)).collect(),
            timer_running: p.timers.iter().map(|_| StdBool::new(false)).collect(),
            next_inst: StdU32::new(0),
            oneshots: StdU32::new(0),
            oneshots_run: StdU32::new(0),
            faults: env.faults.register_fail != 0,
            kicked: StdBool::new(false),
            bound,
            wait_bound,
        }
    });
    if let Some(k) = &env.kernel {
        k.set_faults(env.faults);
    }
    let w = StdArc::downgrade(&o);
    // The tasks, spawned now (a spawn schedules: logged as such).
    for (b, spec) in p.bhs.iter().enumerate() {
        let t = match o.bhs[b].lock().as_ref() {
            Some(BhObj::Task(t)) if spec.task => t.clone(),
            _ => continue,
        };
        o.log(Ev::Schedule(b as u8));
        let j = ctx.spawn_local(Objs::task_future(w.clone(), b as u8, t));
        o.joins.get().borrow_mut()[b] = Some(j);
    }
    let sh = StdArc::new(Shared {
        o: o.clone(),
        done: Arc::new(AtomicUsize::new(0)),
        quiet: Arc::new(AtomicUsize::new(0)),
        interrupt: env.fds.interrupter().map(StdArc::from),
        inst: StdArc::new(StdMutex::new(vec![None; p.fds.len()])),
    });
    let n = p.remotes.len();

    // The watchdog (std threads only).
    let finished = StdArc::new(StdBool::new(false));
    let wd = match env.watchdog {
        Watchdog::Checker => None,
        kind => {
            let (sh, finished, k) = (sh.clone(), finished.clone(), env.kernel.clone());
            let hang_file = env.hang_file.clone();
            Some(std::thread::spawn(move || watchdog(kind, &sh, &finished, k, n, &hang_file)))
        }
    };

    let mut remotes = Vec::new();
    for (r, ops) in p.remotes.iter().enumerate() {
        let (sh, w, ops) = (sh.clone(), w.clone(), ops.clone());
        remotes.push(thread::spawn(move || {
            for (i, op) in ops.into_iter().enumerate() {
                if !aioctx::sync::MODEL_CHECKER {
                    // Jitter on real threads, so operations land in every phase of the loop.
                    match (r * 7 + i * 13) % 5 {
                        0 => thread::yield_now(),
                        1 => (0..(i * 997) % 20_000).for_each(|_| std::hint::spin_loop()),
                        _ => {}
                    }
                }
                exec(&sh, &w, op, Some(r as u8), None);
            }
            sh.o.log(Ev::RemoteDone(r as u8));
            sh.done.fetch_add(1, Ordering::SeqCst);
            sh.o.handle.notify();
            sh.quiet.fetch_add(1, Ordering::SeqCst);
        }));
    }

    for op in &p.home {
        exec(&sh, &w, *op, None, Some(&ctx));
    }
    let idle = final_drain(&sh, &ctx);
    for t in remotes {
        t.join().expect("remote thread panicked");
    }
    // Each injected fault may cost one more wake-up (a spurious one, or a wait that ends early).
    let injected = ctx.faults_injected();
    let wakes = injected.spurious_wakes
        + injected.enter_failures
        + injected.completions_lost
        + injected.harvests_delayed;
    o.log(Ev::End { idle_polls: idle, injected: wakes });
    finished.store(true, Relaxed);
    if let Some(t) = wd {
        t.join().expect("watchdog");
    }
    o.teardown(ctx);
    for f in &fd {
        env.fds.close(*f);
    }
    let log = std::mem::take(&mut *o.log.lock().unwrap_or_else(|e| e.into_inner()));
    drop(sh);
    drop(o);
    let result = oracle::check(p, &log, env.strict_fds);
    Outcome { log, result, injected }
}

/// The final drain: `poll(true)` until every remote finished and nothing is pending (or the
/// watchdog kicked the run to its end). Returns the polls that made no progress.
fn final_drain(sh: &Shared, ctx: &AioContext) -> u64 {
    let o = &*sh.o;
    let n = o.p.remotes.len();
    let (mut idle, mut iters) = (0u64, 0u64);
    while !o.kicked.load(Relaxed) && (sh.done.load(Ordering::SeqCst) < n || o.pending(ctx)) {
        iters += 1;
        if iters > 50 * o.bound {
            o.log(Ev::Violation(format!(
                "p_no_busy_loop: the final drain made {iters} polls ({idle} without progress)"
            )));
            break;
        }
        if !o.poll(ctx, true) {
            idle += 1;
        }
        o.log_polled(ctx, &sh.instances());
    }
    idle
}

fn watchdog(
    kind: Watchdog,
    sh: &Shared,
    finished: &StdBool,
    k: Option<Arc<ModelKernel>>,
    n: usize,
    hang_file: &Option<(std::path::PathBuf, String)>,
) {
    let since = StdU64::new(0);
    let start = std::time::Instant::now();
    let mut kicks = 0;
    while !finished.load(Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(2));
        if sh.quiet.load(Ordering::SeqCst) != n {
            continue;
        }
        let hung = match (kind, &k) {
            (Watchdog::ModelKernel, Some(k)) => k.blocked_waiters() > 0,
            (Watchdog::Seconds(s), _) => {
                let t = start.elapsed().as_secs();
                if since.load(Relaxed) == 0 {
                    since.store(t.max(1), Relaxed);
                }
                t >= since.load(Relaxed) + s
            }
            _ => false,
        };
        if hung && !finished.load(Relaxed) {
            if kicks == 0 {
                sh.o.log(Ev::Violation(
                    "p_no_lost_wakeup: the home thread is blocked in its wait with nothing ready, \
                     after every remote's last notify returned: nothing can wake it"
                        .into(),
                ));
            }
            sh.o.kicked.store(true, Relaxed);
            sh.o.handle.notify();
            kicks += 1;
            if kicks > 500 {
                // A poll that a notify cannot end: nothing else to do. The process ends here, so
                // the program cannot shrink in it: print it whole, with the log so far, and write
                // it where another process can rerun and shrink it.
                let log = sh.o.log.lock().unwrap_or_else(|e| e.into_inner());
                let tail: Vec<String> = log
                    .iter()
                    .enumerate()
                    .skip(log.len().saturating_sub(40))
                    .map(|(i, e)| format!("{i:>6} {e:?}"))
                    .collect();
                let saved = match hang_file {
                    Some((path, head)) => {
                        match std::fs::write(path, format!("{head}\n{}", sh.o.p.encode())) {
                            Ok(()) => format!(
                                "written to {} (shrink it: conformance-workload shrink {})",
                                path.display(),
                                path.display()
                            ),
                            Err(e) => format!("could not be written to {}: {e}", path.display()),
                        }
                    }
                    None => "not written anywhere".into(),
                };
                eprintln!(
                    "HANG: the home thread does not wake up, even after 500 notifies; aborting \
                     (a hang that a notify cannot end takes the process with it; the program is \
                     {saved})\nprogram:\n{}\nlog (last {} events):\n{}",
                    sh.o.p.to_rust(),
                    tail.len(),
                    tail.join("\n")
                );
                std::process::abort();
            }
        }
    }
}
