//! Adaptive userspace polling (docs/protocol.md §3), deterministic: the model kernel's fds and a
//! model clock (advanced by the test, or ticking on every read so a polling loop always sees time pass).
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use aioctx::{adjust_poll_ns, AioContext, Backend, FdHandler, IoThread, ModelKernel};
use common::watchdog;

const MAX: u64 = 32768;

#[test]
fn adjust_grows_0_4000_8000_16000_32000_32768_then_resets() {
    let mut ns = 0;
    let mut seen = vec![];
    for _ in 0..6 {
        // The wait took longer than the window but not longer than max: grow.
        ns = adjust_poll_ns(ns, (ns + 1).min(MAX - 1), MAX, 0, 0);
        seen.push(ns);
    }
    assert_eq!(seen, [4000, 8000, 16000, 32000, 32768, 32768]);
    assert_eq!(adjust_poll_ns(32768, 32768, MAX, 0, 0), 32768, "a wait that fits keeps it");
    assert_eq!(adjust_poll_ns(32768, MAX + 1, MAX, 0, 0), 0, "shrink 0: a wait > max resets");
    assert_eq!(adjust_poll_ns(32768, MAX + 1, MAX, 0, 2), 16384, "shrink 2 halves");
    assert_eq!(adjust_poll_ns(4000, 5000, MAX, 4, 0), 16000, "grow 4");
    assert_eq!(adjust_poll_ns(0, 0, MAX, 0, 0), 0, "no wait at all: keep");
}

/// A virtio-like device on a model fd: the guest pushes requests into a ring and kicks the fd only
/// while notifications are enabled; io_poll checks the ring, io_poll_ready completes requests,
/// io_poll_begin disables notifications, io_poll_end re-enables them.
#[derive(Default)]
struct Device {
    ring: AtomicU32,
    notify_enabled: AtomicBool,
    done: AtomicU32,
    reads: AtomicU32,
    ready_calls: AtomicU32,
    begins: AtomicU32,
    ends: AtomicU32,
    /// Requests the guest pushes from inside io_poll_end (an event racing the end).
    push_in_end: AtomicU32,
    /// The next io_poll_ready waits 1 ms for a timer in a nested poll(true) (AIO_WAIT_WHILE).
    wait_in_ready: AtomicBool,
}

impl Device {
    fn new() -> Arc<Device> {
        let d = Arc::new(Device::default());
        d.notify_enabled.store(true, SeqCst);
        d
    }
    fn submit(&self, k: &ModelKernel, fd: RawFd) {
        self.ring.fetch_add(1, SeqCst);
        if self.notify_enabled.load(SeqCst) {
            k.set_readable(fd, true);
        }
    }
    fn complete(&self) {
        self.done.fetch_add(self.ring.swap(0, SeqCst), SeqCst);
    }
    fn handler(self: &Arc<Self>, k: &Arc<ModelKernel>, fd: RawFd) -> FdHandler {
        let (d1, d2, d3, d4, d5) =
            (self.clone(), self.clone(), self.clone(), self.clone(), self.clone());
        let k1 = k.clone();
        FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
                d1.reads.fetch_add(1, SeqCst);
                d1.complete();
            })
            .on_poll(
                move |_| d2.ring.load(SeqCst) > 0,
                move |r| {
                    d3.ready_calls.fetch_add(1, SeqCst);
                    d3.complete();
                    if d3.wait_in_ready.swap(false, SeqCst) {
                        let ctx = r.context();
                        let fired = Arc::new(AtomicBool::new(false));
                        let f2 = fired.clone();
                        let t = ctx.timer_new(move |_| f2.store(true, SeqCst));
                        t.mod_in(std::time::Duration::from_millis(1));
                        while !fired.load(SeqCst) {
                            ctx.poll(true);
                        }
                    }
                },
            )
            .on_poll_begin(move |_| {
                d4.begins.fetch_add(1, SeqCst);
                d4.notify_enabled.store(false, SeqCst);
            })
            .on_poll_end(move |_| {
                d5.ends.fetch_add(1, SeqCst);
                // The guest pushes while notifications are still disabled: no kick.
                if d5.push_in_end.load(SeqCst) > 0 {
                    d5.push_in_end.fetch_sub(1, SeqCst);
                    d5.ring.fetch_add(1, SeqCst);
                }
                d5.notify_enabled.store(true, SeqCst);
            })
    }
}

fn model_ctx(tick: u64) -> (AioContext, Arc<ModelKernel>) {
    let k = ModelKernel::new();
    k.clock().set_tick(tick);
    let ctx = AioContext::builder()
        .backend(Backend::Model(k.clone()))
        .poll_params(MAX, 0, 0)
        .build()
        .unwrap();
    (ctx, k)
}

/// Register the device and make it fire once, so it joins the poll list with a window > 0.
fn device_on_poll_list(ctx: &AioContext, k: &Arc<ModelKernel>) -> (Arc<Device>, RawFd) {
    let fd = k.open();
    let d = Device::new();
    ctx.set_fd_handler(fd, d.handler(k, fd)).unwrap();
    d.submit(k, fd);
    assert!(ctx.poll(true));
    assert_eq!(d.done.load(SeqCst), 1);
    assert!(ctx.is_polled(fd), "joined the poll list on its first event");
    assert_eq!(ctx.poll_ns(fd), Some(4000), "window grown after the first dispatch");
    (d, fd)
}

/// The window grows 0 → 4000 → ×2 … → max from the loop's own block_ns measurement, a wait that fits
/// the window keeps it, and a wait longer than max resets it. Each "wait" is simulated: io_poll lets model time pass, then the guest kicks the
/// fd, so block_ns = the simulated wait (the clock does not tick by itself here).
#[test]
fn poll_window_grows_with_block_ns_and_resets_past_max() {
    assert_eq!(
        drive_window_sequence(),
        [4000, 8000, 16_000, 32_000, 32_768, 0],
        "keep when the wait fits, grow x2, cap at max, reset when the wait > max"
    );
}

/// The scenario of `poll_window_grows_with_block_ns_and_resets_past_max`; returns the windows seen
/// after each simulated wait of 2, 5, 10, 20, 32.5 and 40 us (the handler is removed at the end).
fn drive_window_sequence() -> Vec<u64> {
    let k = ModelKernel::new();
    let ctx = AioContext::builder()
        .backend(Backend::Model(k.clone()))
        .poll_params(MAX, 0, 0)
        .build()
        .unwrap();
    let wait_ns = Arc::new(AtomicU64::new(0));
    let (w2, k2) = (wait_ns.clone(), k.clone());
    let fd = listed_handler(&ctx, &k, move |fd| {
        // The event comes `wait` ns later: within the 4 us window of the first step, polling finds
        // it; otherwise polling finds nothing, and it comes through the fd.
        let w = w2.swap(0, SeqCst);
        if w > 0 {
            k2.clock().advance(std::time::Duration::from_nanos(w));
            if w <= 4000 {
                return true;
            }
            k2.set_readable(fd, true);
        }
        false
    });
    let mut seen = vec![];
    for wait in [2000, 5000, 10_000, 20_000, 32_500, 40_000] {
        wait_ns.store(wait, SeqCst);
        assert!(ctx.poll(true));
        seen.push(ctx.poll_ns(fd).unwrap());
    }
    ctx.remove_fd_handler(fd).unwrap();
    assert!(!ctx.poll(false)); // finalises the removed handler: it leaves the poll list
    seen
}

/// Register a poll handler on a fresh model fd (its read callback consumes the fd's event, its
/// io_poll is `io_poll(fd)`, its io_poll_ready does nothing) and put it on the poll list with a
/// 4000 ns window: its first event, with the clock ticking 1 us per read for that one poll, so that
/// the iteration's block_ns is > 0 and < max. The clock stands still afterwards.
fn listed_handler(
    ctx: &AioContext,
    k: &Arc<ModelKernel>,
    mut io_poll: impl FnMut(RawFd) -> bool + 'static,
) -> RawFd {
    k.clock().set_tick(1000);
    let fd = polled_handler(ctx, k, move |r| io_poll(r.fd()), |_| {});
    k.clock().set_tick(0);
    assert_eq!(ctx.poll_ns(fd), Some(4000), "0 -> 4000 after the first event");
    fd
}

/// Handler time is excluded from block_ns (bug-history B14): a slow io_poll_ready does not shrink the
/// window.
#[test]
fn slow_io_poll_ready_does_not_shrink_the_window() {
    let (ctx, k) = model_ctx(10);
    let fd = k.open();
    let ring = Arc::new(AtomicU32::new(0));
    let clock = k.clock();
    let (r1, r2, r3) = (ring.clone(), ring.clone(), ring.clone());
    let k1 = k.clone();
    ctx.set_fd_handler(
        fd,
        FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
                r1.store(0, SeqCst);
            })
            .on_poll(
                move |_| r2.load(SeqCst) > 0,
                move |_| {
                    // 1 ms of work, far above max: must not count as waiting.
                    clock.advance(std::time::Duration::from_millis(1));
                    r3.store(0, SeqCst);
                },
            ),
    )
    .unwrap();
    ring.store(1, SeqCst);
    k.set_readable(fd, true);
    assert!(ctx.poll(true));
    let mut windows = vec![ctx.poll_ns(fd).unwrap()];
    for _ in 0..4 {
        ring.store(1, SeqCst); // work is there before polling starts
        assert!(ctx.poll(true));
        windows.push(ctx.poll_ns(fd).unwrap());
    }
    assert!(windows.iter().all(|&w| w >= 4000), "window shrank: {windows:?}");
}

/// io_poll_end precedes every blocking wait, and a non-blocking iteration never ends poll mode
/// (bug-history B16).
#[test]
fn poll_end_precedes_blocking_wait_and_never_on_nonblocking() {
    let (ctx, k) = model_ctx(10);
    let (d, fd) = device_on_poll_list(&ctx, &k);
    // Work already in the ring: the blocking poll polls, finds it, does not block.
    d.ring.fetch_add(1, SeqCst);
    assert!(ctx.poll(true));
    assert_eq!(d.begins.load(SeqCst), 1);
    assert!(ctx.poll_started());
    for _ in 0..100 {
        // Non-blocking iterations do not poll (the budget is clamped by their zero timeout) and must
        // not end poll mode; blocking ones with work ready find it by polling, without blocking.
        assert!(!ctx.poll(false));
        d.ring.fetch_add(1, SeqCst);
        assert!(ctx.poll(true));
    }
    assert_eq!(d.ends.load(SeqCst), 0, "poll mode ended without a blocking wait");
    assert!(ctx.poll_started());
    // Now a blocking poll with nothing to do: polling fails, end runs before the wait, and the guest
    // (which kicks only with notifications enabled) wakes it.
    let h = ctx.handle().clone();
    let (d2, k2) = (d.clone(), k.clone());
    let guest = std::thread::spawn(move || {
        while !d2.notify_enabled.load(SeqCst) {
            std::thread::yield_now(); // a hang here would mean: blocked without io_poll_end
        }
        d2.submit(&k2, fd);
        drop(h);
    });
    let before = d.done.load(SeqCst);
    while d.done.load(SeqCst) == before {
        ctx.poll(true);
    }
    guest.join().unwrap();
    assert_eq!(d.ends.load(SeqCst), 1);
    assert!(d.begins.load(SeqCst) >= 1);
    ctx.remove_fd_handler(fd).unwrap();
}

/// The final poll after io_poll_end catches an event that raced the end (the guest pushed while
/// notifications were still disabled). Without it the loop sleeps forever.
#[test]
#[cfg_attr(aioctx_bug = "no_final_poll_after_poll_end", should_panic(expected = "hang"))]
fn final_poll_catches_event_racing_poll_end() {
    watchdog("final poll after io_poll_end", 10, || {
        let (ctx, k) = model_ctx(10);
        let (d, _fd) = device_on_poll_list(&ctx, &k);
        d.push_in_end.store(1, SeqCst);
        // Blocking poll: polling finds nothing, end runs (and the request arrives inside it), the
        // final poll sees it: no blocking, progress.
        assert!(ctx.poll(true));
        assert_eq!(d.done.load(SeqCst), 2);
        assert_eq!(d.ends.load(SeqCst), 1);
    });
}

/// A poll nested in io_poll_ready that blocks (it waits for a timer) ends poll mode, but cannot call
/// that handler's io_poll_end there (a callback is never re-entered). The end is made once
/// io_poll_ready returned, followed by the final poll, so a request that raced it is not lost.
/// Before, the end was dropped: the device kept notifications off and the loop slept through its
/// next request.
#[test]
fn poll_end_due_inside_io_poll_ready_is_made_when_it_returns() {
    let (ctx, k) = model_ctx(10);
    let (d, fd) = device_on_poll_list(&ctx, &k);
    d.ring.fetch_add(1, SeqCst);
    d.wait_in_ready.store(true, SeqCst);
    d.push_in_end.store(1, SeqCst);
    // Polling finds the request; io_poll_ready waits nested, which ends poll mode before its wait.
    assert!(ctx.poll(true));
    assert!(!ctx.poll_started(), "the nested blocking wait ended poll mode");
    assert_eq!((d.begins.load(SeqCst), d.ends.load(SeqCst)), (1, 1), "end made after the call");
    assert!(d.notify_enabled.load(SeqCst), "notifications back on before the loop can sleep");
    assert_eq!(d.done.load(SeqCst), 3, "the request pushed inside io_poll_end: final poll");
    // The next request kicks the fd again: a blocking poll wakes for it.
    d.submit(&k, fd);
    assert!(k.is_readable(fd));
    ctx.remove_fd_handler(fd).unwrap();
    assert_eq!(d.ends.load(SeqCst), 1, "no second end at removal");
}

/// Idle removal (only on backends that poll readiness from userspace): io_poll_end, then a final poll
/// that catches an event racing it.
#[test]
#[cfg_attr(aioctx_bug = "no_final_poll_after_poll_end", should_panic(expected = "hang"))]
fn idle_poll_handler_removal_ends_polling_with_final_poll() {
    watchdog("idle removal", 10, || {
        let k = ModelKernel::new();
        k.set_polls_readiness(true);
        k.clock().set_tick(10);
        let ctx = AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .poll_params(MAX, 0, 0)
            .build()
            .unwrap();
        ctx.set_poll_idle_timeout(std::time::Duration::from_micros(1));
        let (d, fd) = device_on_poll_list(&ctx, &k);
        d.ring.fetch_add(1, SeqCst);
        assert!(ctx.poll(true)); // polling: ready, poll mode begins
        assert!(ctx.poll_started());
        // Idle for longer than the idle timeout, and a request arrives inside io_poll_end.
        k.clock().advance(std::time::Duration::from_millis(1));
        d.push_in_end.store(1, SeqCst);
        let done = d.done.load(SeqCst);
        let window = ctx.poll_ns(fd);
        assert!(ctx.poll(true), "the final poll of the removed handler found the request");
        assert!(!ctx.is_polled(fd), "idle handler left the poll list");
        // Its io_poll_ready ran off the poll list: no window to adapt (it starts again when its
        // next event puts it back).
        assert_eq!(ctx.poll_ns(fd), window, "the window of a handler off the poll list changed");
        assert_eq!(d.ends.load(SeqCst), 1);
        assert_eq!(d.done.load(SeqCst), done + 1);
    });
}

/// The idle interval's edge (QEMU's `now >= poll_idle_timeout`): a handler whose io_poll last
/// succeeded `idle` ns ago leaves the poll list; one ns earlier it stays. The clock moves only
/// where the test moves it: inside io_poll, by exactly the step, and a timer ends polling at that
/// reading.
#[test]
fn idle_removal_happens_at_the_idle_interval_not_before() {
    assert!(!idle_after(999), "a handler idle for 999 ns of a 1000 ns interval left the poll list");
    assert!(idle_after(1000), "a handler idle for exactly the 1000 ns interval stayed listed");
}

/// Whether a poll handler, last ready at time T, is off the poll list after a poll whose only
/// polling round reads the clock at T + `step` (idle interval 1000 ns).
fn idle_after(step: u64) -> bool {
    watchdog("idle edge", 10, move || {
        let k = ModelKernel::new();
        k.set_polls_readiness(true);
        let ctx = AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .poll_params(MAX, 0, 0)
            .build()
            .unwrap();
        ctx.set_poll_idle_timeout(std::time::Duration::from_nanos(1000));
        let (ready, advance) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (r2, a2, k2) = (ready.clone(), advance.clone(), k.clone());
        let fd = listed_handler(&ctx, &k, move |_| {
            let step = a2.swap(0, SeqCst);
            k2.clock().advance(std::time::Duration::from_nanos(step));
            r2.swap(false, SeqCst)
        });
        // io_poll succeeds at T (the poll's start; the clock stands still): deadline T + 1000.
        ready.store(true, SeqCst);
        assert!(ctx.poll(true), "io_poll_ready ran");
        assert!(ctx.is_polled(fd));
        // The next poll's one round: io_poll moves the clock to T + step and fails; the timer due
        // then makes the budget `step`, so polling ends with that reading and the timer runs.
        let fired = Arc::new(AtomicBool::new(false));
        let f2 = fired.clone();
        let t = ctx.timer_new(move |_| f2.store(true, SeqCst));
        t.mod_in(std::time::Duration::from_nanos(step));
        advance.store(step, SeqCst);
        assert!(ctx.poll(true));
        assert!(fired.load(SeqCst), "the timer at T + step ran");
        assert_eq!(advance.load(SeqCst), 0, "io_poll moved the clock");
        !ctx.is_polled(fd)
    })
}

/// No clock read stands between a polling loop seeing a kick and running its work (the latency
/// claim of `try_poll_mode`: a round that sees a kick breaks before reading the clock, and the poll
/// then takes the end of polling from the last round's reading). The kick is a BH scheduled from
/// inside the clock's own read at the end of a polling round, as another thread's would land there;
/// the BH records how many times the clock had been read when it ran.
#[test]
fn a_kick_seen_while_polling_runs_its_bh_with_no_clock_read_between() {
    watchdog("kick while polling", 10, || {
        let k = ModelKernel::new();
        let clock = KickClock::default();
        let ctx = AioContext::builder()
            .backend(Backend::Model(k.clone()))
            .clock(clock.clone())
            .poll_params(MAX, 0, 0)
            .build()
            .unwrap();
        clock.0.handle.set(ctx.handle().clone()).unwrap();
        // The context's own notifier joins the poll list (its window grows from this iteration's
        // block_ns): a kick through its fd while it waits. No user handler: only it is polled.
        k.set_readable(std::os::fd::AsRawFd::as_raw_fd(&ctx), true);
        assert!(!ctx.poll(true), "a notify alone is not progress");
        // The next blocking poll: the clock's second read from now (the poll's start, then the end
        // of polling's first round) schedules the BH.
        clock.0.kick_at.store(clock.0.reads.load(SeqCst) + 2, SeqCst);
        assert!(ctx.poll(true), "the BH ran in the poll whose polling saw its kick");
        let (kick, ran) = (clock.0.kick_at.load(SeqCst), clock.0.bh_ran_at.load(SeqCst));
        assert_eq!(ran, kick, "clock reads between the kick (read {kick}) and its BH");
    })
}

/// A clock that ticks 1 us per read and counts its reads; its read number `kick_at` schedules a
/// oneshot BH through `handle`, which records the read count when it runs.
#[derive(Debug, Default, Clone)]
struct KickClock(Arc<KickState>);

#[derive(Debug, Default)]
struct KickState {
    reads: AtomicU64,
    kick_at: AtomicU64,
    bh_ran_at: AtomicU64,
    handle: std::sync::OnceLock<aioctx::Handle>,
}

impl aioctx::Clock for KickClock {
    fn now_ns(&self) -> u64 {
        let n = self.0.reads.fetch_add(1, SeqCst) + 1;
        if n == self.0.kick_at.load(SeqCst) {
            let st = self.0.clone();
            self.0.handle.get().unwrap().bh_oneshot(move || {
                st.bh_ran_at.store(st.reads.load(SeqCst), SeqCst);
            });
        }
        n * 1000
    }
}

/// A handler that removes itself in its io_poll_ready gets its io_poll_end as soon as that callback
/// returns (the call it owes then, `PollState::settle`): before the next handler's io_poll_ready of
/// the same dispatch, not at the end of the poll. It is never put back on the poll list.
#[test]
fn io_poll_end_follows_at_once_when_io_poll_ready_removes_its_handler() {
    let (ctx, k) = model_ctx(10);
    let log = Rc::new(RefCell::new(Vec::new()));
    let ready = Rc::new(Cell::new(false));
    let mut fds = Vec::new();
    for name in ["a", "b"] {
        let fd = k.open();
        let (l1, l2, l3, r2, k1) =
            (log.clone(), log.clone(), log.clone(), ready.clone(), k.clone());
        let h = FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
            })
            .on_poll(
                move |_| r2.get(),
                move |this| {
                    l1.borrow_mut().push(format!("{name}.ready"));
                    if name == "a" {
                        assert!(this.remove().unwrap());
                    }
                },
            )
            .on_poll_begin(move |_| l2.borrow_mut().push(format!("{name}.begin")))
            .on_poll_end(move |_| l3.borrow_mut().push(format!("{name}.end")));
        ctx.set_fd_handler(fd, h).unwrap();
        k.set_readable(fd, true);
        assert!(ctx.poll(true));
        assert!(ctx.is_polled(fd));
        fds.push(fd);
    }
    ready.set(true);
    assert!(ctx.poll(true));
    let log = log.borrow();
    let at = |e: &str| log.iter().position(|x| x == e).unwrap_or_else(|| panic!("no {e}: {log:?}"));
    assert!(at("a.ready") < at("b.ready"), "the test needs a dispatched first: {log:?}");
    assert_eq!(at("a.end"), at("a.ready") + 1, "a's io_poll_end came late: {log:?}");
    assert_eq!(log.iter().filter(|e| *e == "a.end").count(), 1, "{log:?}");
    assert!(ctx.is_polled(fds[1]) && ctx.poll_started(), "b polls on: {log:?}");
}

/// `poll` returns true iff a callback ran, also when the only one is an io_poll_ready that an owed
/// io_poll_end's final poll finds due (`PollState::settle`) in a dispatch that runs no callback of
/// its own. The end is owed because a poll nested in io_poll_begin ended poll mode (never
/// sensible, not forbidden); the dispatch runs nothing because an idle BH (not progress) paused the
/// handler's read interest after the wait had reported its fd.
#[test]
fn an_io_poll_ready_after_an_owed_io_poll_end_is_progress() {
    let (ctx, k) = model_ctx(10);
    let fd = k.open();
    let (nest, ready) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let (readies, ends) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (n2, r2, r3, e2, k1) =
        (nest.clone(), ready.clone(), readies.clone(), ends.clone(), k.clone());
    let h = FdHandler::new()
        .on_read(move |_| {
            k1.take_readable(fd);
        })
        .on_poll(move |_| r2.get(), move |_| r3.set(r3.get() + 1))
        .on_poll_begin(move |this| {
            if n2.replace(false) {
                // Wait nested for a timer: the nested wait ends poll mode, and this handler's end
                // cannot be made while its io_poll_begin runs.
                let ctx = this.context();
                let fired = Rc::new(Cell::new(false));
                let f2 = fired.clone();
                let t = ctx.timer_new(move |_| f2.set(true));
                t.mod_in(std::time::Duration::from_millis(1));
                while !fired.get() {
                    ctx.poll(true);
                }
            }
        })
        .on_poll_end(move |_| e2.set(e2.get() + 1));
    ctx.set_fd_handler(fd, h).unwrap();
    k.set_readable(fd, true);
    assert!(ctx.poll(true));
    assert!(ctx.is_polled(fd));
    // One blocking poll: polling begins (io_poll_begin waits nested for its timer); that nested
    // poll ran work, so this one does not wait (the timer here only bounds it if it did).
    nest.set(true);
    let t = ctx.timer_new(|_| {});
    t.mod_in(std::time::Duration::from_millis(2));
    assert!(!ctx.poll(true), "the outer poll waited, or ran something of its own");
    assert!(!ctx.poll_started() && !nest.get());
    assert_eq!(ends.get(), 0, "the end owed to the handler was made already");
    // The fd is ready; an idle BH pauses the handler's reads (and its io_poll turns ready) after
    // the wait reported it: its dispatch runs no callback, its owed end is made, and the end's
    // final poll finds it ready: io_poll_ready runs, and that is the poll's only progress.
    k.set_readable(fd, true);
    let r4 = ready.clone();
    let bh = ctx.bh_new(move |b| {
        assert!(b.context().set_fd_interest(fd, aioctx::Interest::NONE).unwrap());
        r4.set(true);
    });
    bh.schedule_idle();
    assert!(ctx.poll(false), "an io_poll_ready ran, and poll said no progress");
    assert_eq!((ends.get(), readies.get()), (1, 1));
}

/// A notify that comes while a blocking poll polls ends that poll, also when a poll nested in an
/// io_poll_begin (never sensible, not forbidden) takes it first: the outer poll, which computed its
/// timeout before and arms after, would otherwise block for good. Here the notify comes from
/// inside io_poll_begin, just before its nested poll, as another thread's could at that moment
/// (the generated workloads found it so: `a_notify_taken_by_a_poll_nested_in_io_poll_begin_ends_the_outer_wait`).
#[test]
fn a_notify_taken_by_a_poll_nested_in_io_poll_begin_ends_the_blocking_poll() {
    watchdog("notify taken by a nested poll", 10, || {
        let (ctx, k) = model_ctx(10);
        let fd = k.open();
        let nest = Rc::new(Cell::new(false));
        let (n2, k1) = (nest.clone(), k.clone());
        let h = FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
            })
            .on_poll(|_| false, |_| {})
            .on_poll_begin(move |this| {
                if n2.replace(false) {
                    this.context().notify();
                }
                assert!(!this.context().poll(false), "a notify alone is not progress");
            });
        ctx.set_fd_handler(fd, h).unwrap();
        k.set_readable(fd, true);
        assert!(ctx.poll(true));
        assert!(ctx.is_polled(fd) && !ctx.poll_started());
        nest.set(true);
        assert!(!ctx.poll(true), "a notify alone is not progress");
        assert!(!nest.get(), "io_poll_begin did not run");
        // A nested poll there that takes nothing leaves the outer poll its wait: for a timer here,
        // run in the same call (no spin of non-blocking returns).
        let fired = Rc::new(Cell::new(false));
        let f2 = fired.clone();
        let t = ctx.timer_new(move |_| f2.set(true));
        t.mod_in(std::time::Duration::from_millis(1));
        assert!(!ctx.poll(true), "arming the timer notified: the first poll takes that");
        assert!(ctx.poll(true) && fired.get(), "the blocking poll did not wait for the timer");
    })
}

/// test-nested-aio-poll: io_poll_ready runs a nested blocking poll; it is never re-entered, a
/// never-ready handler never gets io_poll_ready, and polling is effective right after the first event.
/// A handler that io_poll found ready is progress only when its io_poll_ready runs: one removed in
/// between (here by its own io_poll; in the wild by another thread, which the generated workloads
/// caught as `p_progress_exact`) runs nothing, and the poll that found it returns false.
#[test]
fn a_ready_handler_removed_before_its_io_poll_ready_is_not_progress() {
    let (ctx, k) = model_ctx(10);
    let fd = k.open();
    let (polls, readies) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (p2, r2, k2) = (polls.clone(), readies.clone(), k.clone());
    ctx.set_fd_handler(
        fd,
        FdHandler::new()
            .on_read(move |_| {
                k2.take_readable(fd);
            })
            .on_poll(
                move |this| {
                    p2.fetch_add(1, SeqCst);
                    this.remove().unwrap();
                    true
                },
                move |_| {
                    r2.fetch_add(1, SeqCst);
                },
            ),
    )
    .unwrap();
    k.set_readable(fd, true);
    assert!(ctx.poll(true), "on_read");
    assert!(ctx.is_polled(fd), "joined the poll list on its first event");
    assert!(ctx.poll_ns(fd).is_some_and(|ns| ns > 0), "a polling window");
    // A bare notify ends the blocking poll after its polling round (not progress itself).
    ctx.notify();
    assert!(!ctx.poll(true), "found ready, removed, nothing ran: no progress");
    assert_eq!((polls.load(SeqCst), readies.load(SeqCst)), (1, 0));
}

#[test]
fn nested_poll_in_io_poll_ready_does_not_reenter() {
    let k = ModelKernel::new();
    k.clock().set_tick(10);
    let ctx = AioContext::builder()
        .backend(Backend::Model(k.clone()))
        .poll_params(1_000_000, 2, 2)
        .build()
        .unwrap();
    let (pfd, dfd) = (k.open(), k.open());
    let nested = Arc::new(AtomicBool::new(false));
    let readies = Arc::new(AtomicU32::new(0));
    let (k1, k2, k3) = (k.clone(), k.clone(), k.clone());
    let (n1, r1) = (nested.clone(), readies.clone());
    ctx.set_fd_handler(
        pfd,
        FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(pfd);
            })
            .on_poll(
                |_| true,
                move |_| {
                    assert!(!n1.swap(true, SeqCst), "io_poll_ready re-entered from a nested poll");
                    r1.fetch_add(1, SeqCst);
                    k2.set_readable(dfd, true);
                    assert!(
                        AioContext::with_current(|c| c.poll(true)).unwrap(),
                        "nested poll progress"
                    );
                    n1.store(false, SeqCst);
                },
            ),
    )
    .unwrap();
    ctx.set_fd_handler(
        dfd,
        FdHandler::new()
            .on_read(move |_| {
                k3.take_readable(dfd);
            })
            .on_poll(|_| false, |_| panic!("io_poll_ready of a never-ready handler")),
    )
    .unwrap();
    k.set_readable(pfd, true);
    assert!(ctx.poll(true), "first event: io_read, the handler joins the poll list");
    assert_eq!(readies.load(SeqCst), 0);
    // Polling is effective the first time around: io_poll_ready. Its nested blocking poll ends poll
    // mode; the io_poll_end owed to this handler is made when io_poll_ready returned, and the final
    // poll after it finds the handler ready again (it always is): a second io_poll_ready, whose
    // nested poll begins and ends poll mode without it (it is running). Two per poll, never nested.
    assert!(ctx.poll(true));
    assert_eq!(readies.load(SeqCst), 2, "polling effective the first time around");
    assert!(ctx.poll(true));
    assert_eq!(readies.load(SeqCst), 4);
}

/// An always-ready poll handler does not starve an fd-only handler (bug-history B12), nor a
/// poll-capable handler that has not fired yet (docs/protocol.md §6.1).
#[test]
fn always_ready_poll_handler_does_not_starve_fd_handlers() {
    for fd_only in [true, false] {
        let (ctx, k) = model_ctx(10);
        let busy = k.open();
        let k1 = k.clone();
        ctx.set_fd_handler(
            busy,
            FdHandler::new()
                .on_read(move |_| {
                    k1.take_readable(busy);
                })
                .on_poll(|_| true, |_| {}),
        )
        .unwrap();
        k.set_readable(busy, true);
        ctx.poll(true);
        let other = k.open();
        let hit = Arc::new(AtomicBool::new(false));
        let (h2, k2) = (hit.clone(), k.clone());
        let mut h = FdHandler::new().on_read(move |_| {
            k2.take_readable(other);
            h2.store(true, SeqCst);
        });
        if !fd_only {
            h = h.on_poll(|_| false, |_| {});
        }
        ctx.set_fd_handler(other, h).unwrap();
        k.set_readable(other, true);
        for _ in 0..3 {
            if hit.load(SeqCst) {
                break;
            }
            ctx.poll(true);
        }
        assert!(hit.load(SeqCst), "fd handler starved (fd_only = {fd_only})");
    }
}

/// A handler on a new model fd whose io_poll counts its calls (never ready), made to fire once so
/// that it joins the poll list.
fn counted_poll_handler(ctx: &AioContext, k: &Arc<ModelKernel>) -> (RawFd, Arc<AtomicU32>) {
    let fd = k.open();
    let polls = Arc::new(AtomicU32::new(0));
    let (p2, k1) = (polls.clone(), k.clone());
    ctx.set_fd_handler(
        fd,
        FdHandler::new()
            .on_read(move |_| {
                k1.take_readable(fd);
            })
            .on_poll(
                move |_| {
                    p2.fetch_add(1, SeqCst);
                    false
                },
                |_| {},
            ),
    )
    .unwrap();
    k.set_readable(fd, true);
    assert!(ctx.poll(true)); // its first event: it joins the poll list
    assert!(ctx.is_polled(fd));
    (fd, polls)
}

/// QEMU's `poll_disable_cnt`: while a handler without io_poll is registered, a monitor that reports
/// readiness only from its wait (ppoll, epoll) does not poll in userspace, since that handler's
/// event would wait a whole window; a monitor that polls readiness itself (io_uring) still polls.
#[test]
fn fd_only_handler_disables_polling_unless_the_monitor_polls_readiness() {
    for readiness in [false, true] {
        let (ctx, k) = model_ctx(10);
        k.set_polls_readiness(readiness);
        let (dev, polls) = counted_poll_handler(&ctx, &k);
        let plain = k.open();
        let k2 = k.clone();
        ctx.set_fd_handler(
            plain,
            FdHandler::new().on_read(move |_| {
                k2.take_readable(plain);
            }),
        )
        .unwrap();
        polls.store(0, SeqCst);
        k.set_readable(plain, true);
        assert!(ctx.poll(true));
        assert!(!ctx.is_polled(plain), "a handler without io_poll joined the poll list");
        let n = polls.load(SeqCst);
        if readiness {
            assert!(n > 0, "a monitor that polls readiness: polling stays on");
            // Polled moments ago (its idle timeout is the default 7 s): still on the list.
            assert!(ctx.is_polled(dev), "left the poll list long before its idle timeout");
        } else {
            assert_eq!(n, 0, "io_poll called {n} times beside an fd-only handler");
        }
    }
}

/// A handler removed from the poll list (here: removed) takes only itself off it: the others stay
/// and are polled, it is not polled again.
#[test]
fn removing_a_handler_leaves_the_others_on_the_poll_list() {
    let (ctx, k) = model_ctx(10);
    let (fds, counts): (Vec<_>, Vec<_>) = (0..2).map(|_| counted_poll_handler(&ctx, &k)).unzip();
    assert!(ctx.remove_fd_handler(fds[0]).unwrap());
    for c in &counts {
        c.store(0, SeqCst);
    }
    k.set_readable(fds[1], true); // ends the blocking poll after its polling
    assert!(ctx.poll(true));
    assert_eq!(counts[0].load(SeqCst), 0, "the removed handler was polled");
    assert!(counts[1].load(SeqCst) > 0, "the remaining handler was not polled");
    // The removal is finalised at the end of that poll (off the poll list); the next poll still
    // polls the other handler in userspace: more than the one io_poll that follows the end of
    // poll mode (its 4 us window, the clock ticking 10 ns per read: about 400 rounds; the first
    // poll's polling ended at once, on the removal's notify).
    counts[1].store(0, SeqCst);
    k.set_readable(fds[1], true);
    assert!(ctx.poll(true));
    let n = counts[1].load(SeqCst);
    assert!(n > 1, "the remaining handler left the poll list with the removed one ({n} io_poll)");
    assert!(ctx.is_polled(fds[1]));
}

/// A context with polling on but no poll handler, whose own notifier never fired, has nothing to
/// poll: each blocking poll reads the clock a few times, never a polling loop's worth. (The
/// notifier joins the poll list only once it fired or polling saw a kick; a context of timers and
/// BHs alone would otherwise spin before each wait.) The model kernel's clock (10 ns per read,
/// moved to the deadline by a wait that times out) is read through a wrapper that counts.
#[test]
fn a_context_without_poll_handlers_or_kicks_does_not_poll() {
    use aioctx::kernel::Clock;
    use std::sync::atomic::AtomicU64;
    #[derive(Debug)]
    struct Counting(Arc<AtomicU64>, Arc<aioctx::ModelClock>);
    impl Clock for Counting {
        fn now_ns(&self) -> u64 {
            self.0.fetch_add(1, SeqCst);
            self.1.now_ns()
        }
        fn advance_to(&self, deadline_ns: u64) {
            self.1.advance_to(deadline_ns);
        }
    }
    let k = ModelKernel::new();
    k.clock().set_tick(10);
    let reads = Arc::new(AtomicU64::new(0));
    let ctx = AioContext::builder()
        .backend(Backend::Model(k.clone()))
        .poll_params(1_000_000, 0, 0)
        .clock(Counting(reads.clone(), k.clock()))
        .build()
        .unwrap();
    let fired = Arc::new(AtomicU32::new(0));
    let f2 = fired.clone();
    let t = ctx.timer_new(move |_| {
        f2.fetch_add(1, SeqCst);
    });
    for i in 1..=8 {
        t.mod_in(std::time::Duration::from_micros(50));
        ctx.poll(false); // takes the arming's notify
        let before = reads.load(SeqCst);
        while fired.load(SeqCst) < i {
            ctx.poll(true);
        }
        let n = reads.load(SeqCst) - before;
        assert!(n < 50, "wait {i}: {n} clock reads: the context polled");
    }
}

/// A poll nested in a handler's fd callback that ends poll mode owes that handler its io_poll_end
/// (not callable while the callback runs); once the callback returned, the end is made, then one
/// final io_poll, and io_poll_ready only if that io_poll found the handler ready.
#[test]
fn owed_poll_end_after_a_nested_poll_then_io_poll_ready_only_if_ready() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (ctx, k) = model_ctx(10);
    let (g, h) = (k.open(), k.open());
    // g: its io_poll reports ready once when asked to.
    let g_ready = Rc::new(Cell::new(false));
    let (gr, kg) = (g_ready.clone(), k.clone());
    ctx.set_fd_handler(
        g,
        FdHandler::new()
            .on_read(move |_| {
                kg.take_readable(g);
            })
            .on_poll(move |_| gr.replace(false), |_| {}),
    )
    .unwrap();
    // h: never ready by polling; its fd callback, when told to, waits nested for a timer.
    let nest = Rc::new(Cell::new(false));
    let fired = Rc::new(Cell::new(false));
    let (readies, ends) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let f2 = fired.clone();
    let t = ctx.timer_new(move |_| f2.set(true));
    let (n2, f3, r2, e2, kh) =
        (nest.clone(), fired.clone(), readies.clone(), ends.clone(), k.clone());
    ctx.set_fd_handler(
        h,
        FdHandler::new()
            .on_read(move |this| {
                kh.take_readable(h);
                if n2.replace(false) {
                    t.mod_in(std::time::Duration::from_micros(10));
                    while !f3.get() {
                        this.context().poll(true); // ends poll mode before it blocks
                    }
                }
            })
            .on_poll(|_| false, move |_| r2.set(r2.get() + 1))
            .on_poll_end(move |_| e2.set(e2.get() + 1)),
    )
    .unwrap();
    k.set_readable(g, true);
    k.set_readable(h, true);
    assert!(ctx.poll(true)); // both dispatched: both join the poll list
    assert!(ctx.is_polled(g) && ctx.is_polled(h));
    // g is found ready by polling (poll mode begins and stays on: the wait is non-blocking), and
    // h's fd is ready: its callback runs with poll mode on, and its nested wait ends it.
    g_ready.set(true);
    k.set_readable(h, true);
    nest.set(true);
    assert!(ctx.poll(true));
    assert!(fired.get(), "the nested wait did not run");
    assert_eq!(ends.get(), 1, "h's owed io_poll_end");
    assert_eq!(readies.get(), 0, "io_poll_ready without a ready io_poll");
}

/// An IoThread with polling on survives 10^5 cross-thread BH round trips (watchdog, real backend).
#[test]
fn iothread_with_polling_1e5_round_trips() {
    watchdog("polling round trips", 120, || {
        let t = IoThread::spawn_with("poller", || AioContext::builder().poll_params(MAX, 0, 0))
            .unwrap();
        let main = AioContext::builder().poll_params(MAX, 0, 0).build().unwrap();
        let back = Arc::new(AtomicU32::new(0));
        let b2 = back.clone();
        let reply = Arc::new(main.handle().bh_new(move |_| {
            b2.fetch_add(1, SeqCst);
        }));
        let r2 = reply.clone();
        let ping = t.handle().bh_new(move |_| r2.schedule());
        for i in 1..=100_000u32 {
            ping.schedule();
            while back.load(SeqCst) < i {
                main.poll(true);
            }
        }
        drop(ping);
        t.join();
    });
}

/// QEMU's trace events, through `tracing`: poll_add, run_poll_handlers_begin/end, poll_grow,
/// poll_shrink, poll_remove (a subscriber that records event names).
#[test]
fn polling_emits_qemu_trace_events() {
    use std::sync::Mutex;
    use tracing::field::{Field, Visit};

    /// Each event's message, its `fd` field if any, and its `old` and `new` windows if any.
    #[derive(Default)]
    struct Names(Mutex<Vec<Ev>>);
    type Ev = (String, Option<i64>, Option<u64>, Option<u64>);
    struct Msg<'a>(&'a mut Ev);
    impl Visit for Msg<'_> {
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            if f.name() == "message" {
                self.0 .0 = format!("{v:?}");
            }
        }
        fn record_i64(&mut self, f: &Field, v: i64) {
            if f.name() == "fd" {
                self.0 .1 = Some(v);
            }
        }
        fn record_u64(&mut self, f: &Field, v: u64) {
            match f.name() {
                "old" => self.0 .2 = Some(v),
                "new" => self.0 .3 = Some(v),
                _ => {}
            }
        }
    }
    impl tracing::Subscriber for &'static Names {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let mut m = (String::new(), None, None, None);
            e.record(&mut Msg(&mut m));
            self.0.lock().unwrap().push(m);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let names: &'static Names = Box::leak(Box::default());
    // A global subscriber, not a scoped one: callsites cache their interest process-wide, and one hit
    // first by another test thread would stay disabled under a scoped subscriber. Setting the global
    // default rebuilds every callsite's interest. (Other tests' events land here too: harmless, we
    // only look for names.)
    tracing::subscriber::set_global_default(names).expect("the only global subscriber");
    // A callsite that another test thread was registering meanwhile can still end up disabled:
    // tracing-core pushes a new callsite on its list, then computes its interest from the
    // subscribers it sees and stores it, with no lock, so a computation that began before the
    // default was set may store "never" after the rebuild (seen once beside two CPU hogs: no
    // run_poll_handlers_begin). That store happens once per callsite, and the next rebuild repairs
    // it; so two rounds of (rebuild, drive), names accumulated: a late store spoils one at most.
    for _ in 0..2 {
        tracing::callsite::rebuild_interest_cache();
        drive_window_sequence();
        drive_notifier_window();
    }
    let seen = names.0.lock().unwrap().clone();
    for want in [
        "poll_add",
        "run_poll_handlers_begin",
        "run_poll_handlers_end",
        "poll_grow",
        "poll_shrink",
        "poll_remove",
    ] {
        assert!(seen.iter().any(|(s, ..)| s == want), "no {want} event in {seen:?}");
    }
    // The context's own notifier is reported as fd -1 (QEMU: its poll handler has no user fd).
    assert!(
        seen.iter().any(|(s, fd, ..)| s == "poll_grow" && *fd == Some(-1)),
        "no poll_grow of the notifier (fd -1) in {seen:?}"
    );
    // A window that grew or shrank, and only then: a kept window is no event (the sequence keeps
    // one: `drive_window_sequence`'s first wait, 2 us in a 4 us window).
    for (s, _, old, new) in &seen {
        let (Some(old), Some(new)) = (old, new) else { continue };
        match s.as_str() {
            "poll_grow" => assert!(new > old, "poll_grow from {old} to {new}"),
            "poll_shrink" => assert!(new < old, "poll_shrink from {old} to {new}"),
            _ => {}
        }
    }
}

/// The context's own notifier fires (another thread notifies while the loop waits), with polling
/// on: its window grows 0 -> 4000 (a notify is not progress).
fn drive_notifier_window() {
    let (ctx, k) = model_ctx(1000);
    let h = ctx.handle().clone();
    let k2 = k.clone();
    let kicker = std::thread::spawn(move || {
        while k2.blocked_waiters() == 0 {
            std::thread::yield_now(); // the loop has nothing to do: it does block
        }
        h.notify();
    });
    assert!(!ctx.poll(true), "woken by a notify only");
    kicker.join().unwrap();
}

/// The polling parameters read back as they were given, from the builder and from
/// `set_poll_params` (which any thread may call), including turning polling off again.
#[test]
fn poll_params_read_back_as_set() {
    let k = ModelKernel::new();
    let ctx =
        AioContext::builder().backend(Backend::Model(k)).poll_params(MAX, 3, 5).build().unwrap();
    assert_eq!(ctx.poll_params(), (MAX, 3, 5));
    let h = ctx.handle().clone();
    std::thread::spawn(move || h.set_poll_params(1000, 2, 7)).join().unwrap();
    assert_eq!(ctx.poll_params(), (1000, 2, 7));
    ctx.set_poll_params(0, 0, 0);
    assert_eq!(ctx.poll_params(), (0, 0, 0));
    assert!(!ctx.poll(false));
}

/// Register a handler on the model fd `fd` with `check`/`ready` as its io_poll/io_poll_ready (and a
/// read callback that consumes the fd), and make its fd fire once: it joins the poll list.
fn polled_handler(
    ctx: &AioContext,
    k: &Arc<ModelKernel>,
    check: impl FnMut(&aioctx::FdRef<'_>) -> bool + 'static,
    ready: impl FnMut(&aioctx::FdRef<'_>) + 'static,
) -> RawFd {
    let fd = k.open();
    let k1 = k.clone();
    let h = FdHandler::new()
        .on_read(move |_| {
            k1.take_readable(fd);
        })
        .on_poll(check, ready);
    ctx.set_fd_handler(fd, h).unwrap();
    k.set_readable(fd, true);
    assert!(ctx.poll(true));
    assert!(ctx.is_polled(fd), "joined the poll list on its first event");
    fd
}

/// A poll that runs a BH is progress, also when a handler that polling found ready was removed
/// before its io_poll_ready could run: here an idle BH, run in the same poll as that polling,
/// removes the handler, turns polling off and polls (nested) for another BH.
#[test]
fn nested_poll_running_a_bh_is_progress_after_a_ready_handler_was_removed() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (ctx, k) = model_ctx(10);
    let readies = Arc::new(AtomicU32::new(0));
    let r2 = readies.clone();
    let fd = polled_handler(
        &ctx,
        &k,
        |_| true,
        move |_| {
            r2.fetch_add(1, SeqCst);
        },
    );
    let b_ran = Rc::new(Cell::new(false));
    let b2 = b_ran.clone();
    let b = ctx.bh_new(move |_| b2.set(true));
    let nested = Rc::new(Cell::new(None));
    let n2 = nested.clone();
    let a = ctx.bh_new(move |this| {
        let c = this.context();
        c.remove_fd_handler(fd).unwrap();
        c.set_poll_params(0, 0, 0);
        b.schedule();
        n2.set(Some(c.poll(false)));
    });
    a.schedule_idle();
    ctx.poll(true);
    assert!(b_ran.get(), "the nested poll ran the BH");
    assert_eq!(nested.get(), Some(true), "a nested poll that ran a BH reported no progress");
    assert_eq!(readies.load(SeqCst), 0, "io_poll_ready of a removed handler");
}

/// Polling keeps polling for its whole window: a device that becomes ready a few rounds in is
/// served by that poll's io_poll_ready, without a wait (the point of polling).
#[test]
fn polling_lasts_its_window_and_finds_work_that_comes_a_few_rounds_in() {
    watchdog("polling for the window", 10, || {
        let (ctx, k) = model_ctx(10);
        let checks = Arc::new(AtomicU32::new(0));
        let readies = Arc::new(AtomicU32::new(0));
        let (c2, r2) = (checks.clone(), readies.clone());
        let fd = polled_handler(
            &ctx,
            &k,
            move |_| c2.fetch_add(1, SeqCst) + 1 >= 5,
            move |_| {
                r2.fetch_add(1, SeqCst);
            },
        );
        assert!(ctx.poll_ns(fd).unwrap() > 0, "a window to poll for");
        checks.store(0, SeqCst);
        assert!(ctx.poll(true), "the device was ready on the 5th io_poll");
        assert_eq!(readies.load(SeqCst), 1);
        assert!(checks.load(SeqCst) >= 5);
    });
}
