//! The home-thread API (issue 16): `!Send` callbacks on the home context, each callback's view of
//! itself (`BhRef`, `TimerRef`, `FdRef`), explicit deletes, a handler's interest changed in place,
//! and the `Send` scheduler of a home-thread BH, on every real backend. (Where their closures are
//! dropped, and what must not compile, is in impl/tests/miri.rs and impl/src/kind.rs.)
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
mod common;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use aioctx::{FdHandler, Interest};
use common::*;

/// A BH that counts in `Rc<Cell>` state and reschedules itself until 5: one call per poll, no slot.
#[test]
fn bh_reschedules_itself_through_its_ref() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let bh = ctx.bh_new(move |this| {
            n2.set(n2.get() + 1);
            assert!(!this.is_scheduled(), "dequeued, so not scheduled");
            if n2.get() < 5 {
                this.schedule();
                assert!(this.is_scheduled(), "rescheduled through its ref");
            }
        });
        bh.schedule();
        let mut polls = 0;
        while ctx.poll(false) {
            polls += 1;
            assert_eq!(n.get(), polls, "{name}: one call per poll");
        }
        assert_eq!(n.get(), 5, "{name}");
        assert!(!bh.is_scheduled());
    }
}

/// An idle BH that reschedules itself idle through its ref: it runs once per poll, and (idle) no
/// poll counts it as progress; a blocking poll waits for it no longer than the idle cap (10 ms).
#[test]
fn idle_bh_reschedules_itself_idle_through_its_ref() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let bh = ctx.bh_new(move |this| {
            n2.set(n2.get() + 1);
            if n2.get() < 3 {
                this.schedule_idle();
            }
        });
        bh.schedule_idle();
        assert!(!ctx.poll(false), "{name}: an idle BH is not progress");
        assert_eq!(n.get(), 1, "{name}");
        assert!(bh.is_scheduled(), "{name}: rescheduled from its callback");
        let t = std::time::Instant::now();
        while n.get() < 3 && t.elapsed() < Duration::from_secs(5) {
            ctx.poll(true);
        }
        assert_eq!(n.get(), 3, "{name}: the idle reschedules ran");
        assert!(!bh.is_scheduled(), "{name}");
    }
}

/// `BhRef::cancel` cancels a schedule made (by the owner) while the callback runs.
#[test]
fn bh_cancels_itself_through_its_ref() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let owner: Rc<RefCell<Option<aioctx::Bh>>> = Rc::default();
        let (n2, o2) = (n.clone(), owner.clone());
        let bh = ctx.bh_new(move |this| {
            n2.set(n2.get() + 1);
            o2.borrow().as_ref().unwrap().schedule(); // someone schedules it again
            this.cancel(); // and it declines
        });
        bh.schedule();
        *owner.borrow_mut() = Some(bh);
        assert!(ctx.poll(false), "{name}");
        assert!(!ctx.poll(false), "{name}: the cancelled schedule ran");
        assert_eq!(n.get(), 1, "{name}");
        owner.borrow_mut().take(); // break the test's own cycle
    }
}

/// A oneshot on the home context takes a `!Send` closure.
#[test]
fn local_oneshot_takes_rc_state() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        ctx.bh_oneshot(move || n2.set(n2.get() + 1));
        assert!(ctx.poll(false), "{name}");
        assert!(!ctx.poll(false), "{name}");
        assert_eq!(n.get(), 1);
        assert_eq!(Rc::strong_count(&n), 1, "{name}: the oneshot was not freed");
    }
}

/// A timer re-arms itself (periodic) then deletes itself; the owner's arming afterwards calls
/// nothing, and the closure is gone once the deleting call returned.
#[test]
fn timer_rearms_then_deletes_itself() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let t = ctx.timer_new(move |this| {
            n2.set(n2.get() + 1);
            if n2.get() < 3 {
                this.mod_in(Duration::from_millis(1));
                assert!(this.is_pending());
            } else {
                this.delete();
                assert!(!this.is_pending());
            }
        });
        t.mod_ns(0);
        let mut polls = 0;
        while n.get() < 3 {
            ctx.poll(true);
            polls += 1;
            assert!(polls < 100, "{name}: the periodic timer stopped");
        }
        assert!(!t.is_pending(), "{name}");
        assert_eq!(Rc::strong_count(&n), 1, "{name}: the deleted timer's closure is alive");
        t.mod_ns(0);
        assert!(!ctx.poll(false), "{name}: a deleted timer was called");
        t.delete();
    }
}

/// A timer re-arms itself, then disarms itself (`TimerRef::del`) in the same call: not pending, not
/// called again; the owner can arm it again afterwards (del is not delete).
#[test]
fn timer_rearms_then_disarms_itself() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let n = Rc::new(Cell::new(0));
        let n2 = n.clone();
        let t = ctx.timer_new(move |this| {
            n2.set(n2.get() + 1);
            this.mod_ns(0);
            assert!(this.is_pending());
            this.del();
            assert!(!this.is_pending(), "still armed after its own del");
        });
        t.mod_ns(0);
        assert!(ctx.poll(false), "{name}");
        assert_eq!(n.get(), 1, "{name}");
        assert!(!t.is_pending(), "{name}");
        assert!(!ctx.poll(false), "{name}: a disarmed timer was called");
        assert_eq!(n.get(), 1, "{name}");
        t.mod_ns(0);
        assert!(ctx.poll(false), "{name}: the owner's arming after a del");
        assert_eq!(n.get(), 2, "{name}");
    }
}

/// A handler changes its own interest, in place: its write callback pauses itself once called (the
/// socket stays writable: level-triggered, so without the change it would fire on every poll), the
/// read callback stays, and `set_fd_interest` re-enables the write side without re-registering.
#[test]
fn handler_interest_changed_in_place() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, mut w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let (reads, writes) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (r2, w2) = (reads.clone(), writes.clone());
        let mut rs = r.try_clone().unwrap();
        ctx.set_fd_handler(
            fd,
            FdHandler::new()
                .on_read(move |_| {
                    let mut buf = [0; 8];
                    let _ = rs.read(&mut buf).unwrap();
                    r2.set(r2.get() + 1);
                })
                .on_write(move |this| {
                    w2.set(w2.get() + 1);
                    assert_eq!(this.interest(), Interest::BOTH);
                    this.set_interest(Interest::READ).unwrap(); // pause the write side
                    assert_eq!(this.interest(), Interest::READ);
                }),
        )
        .unwrap();
        assert!(ctx.poll(false), "{name}: writable");
        assert_eq!(writes.get(), 1, "{name}");
        assert!(!ctx.poll(false), "{name}: the paused write side still fires");
        w.write_all(b"x").unwrap();
        assert!(ctx.poll(true), "{name}: the read side was lost by the change");
        assert_eq!((reads.get(), writes.get()), (1, 1), "{name}");
        assert!(ctx.set_fd_interest(fd, Interest::BOTH).unwrap(), "{name}");
        assert!(ctx.poll(false), "{name}: re-enabled write side");
        assert_eq!(writes.get(), 2, "{name}");
        // Pausing everything: nothing fires though the socket is writable and readable.
        assert!(ctx.set_fd_interest(fd, Interest::NONE).unwrap(), "{name}");
        w.write_all(b"y").unwrap();
        assert!(!ctx.poll(false), "{name}: a paused handler fired");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// A paused handler (no interest) hears nothing of its fd, not even a hang-up (which epoll and
/// io_uring report whatever was asked): a blocking poll sleeps until other work comes instead of
/// returning at once, again and again; resumed, the handler hears of the hang-up.
#[test]
fn a_paused_handler_on_a_hung_up_fd_lets_the_loop_sleep() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let calls = Rc::new(Cell::new(0));
        let c2 = calls.clone();
        ctx.set_fd_handler(fd, FdHandler::new().on_read(move |_| c2.set(c2.get() + 1))).unwrap();
        assert!(ctx.set_fd_interest(fd, Interest::NONE).unwrap(), "{name}");
        drop(w);
        let (done, t) = work_after(ctx.handle(), Duration::from_millis(50));
        let (n, progress) = nested_wait(&ctx, &done);
        t.join().unwrap();
        assert!(
            n <= FEW_CALLS,
            "{name}: the loop spun: {n} poll(true) calls ({progress} progress)"
        );
        assert_eq!((progress, calls.get()), (1, 0), "{name}: a paused handler ran");
        assert!(ctx.set_fd_interest(fd, Interest::READ).unwrap(), "{name}");
        assert!(ctx.poll(true), "{name}: the hang-up is not reported once resumed");
        assert_eq!(calls.get(), 1, "{name}");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// A side paused is not called, also when its fd was reported before the pause: two ready
/// handlers, each pausing the other from its callback, in one poll: whichever runs first, the
/// other is not called. And a hang-up (readable and writable) calls only the side waited for.
#[test]
fn a_paused_side_is_not_called_even_when_already_reported() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let pairs: Vec<_> = (0..2).map(|_| UnixStream::pair().unwrap()).collect();
        let fds: Vec<_> = pairs.iter().map(|(r, _)| r.as_raw_fd()).collect();
        let calls = Rc::new(Cell::new(0));
        for (i, (_, w)) in pairs.iter().enumerate() {
            let (c2, other) = (calls.clone(), fds[1 - i]);
            ctx.set_fd_handler(
                fds[i],
                FdHandler::new().on_read(move |this| {
                    c2.set(c2.get() + 1);
                    this.context().set_fd_interest(other, Interest::NONE).unwrap();
                }),
            )
            .unwrap();
            (&*w).write_all(b"x").unwrap(); // never read: stays readable
        }
        assert!(ctx.poll(true), "{name}");
        assert_eq!(calls.get(), 1, "{name}: a handler paused in this poll was called");
        for fd in fds {
            ctx.remove_fd_handler(fd).unwrap();
        }

        let (r, w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let sides = Rc::new(Cell::new((0, 0)));
        let (s1, s2) = (sides.clone(), sides.clone());
        ctx.set_fd_handler(
            fd,
            FdHandler::new()
                .on_read(move |_| s1.set((s1.get().0 + 1, s1.get().1)))
                .on_write(move |_| s2.set((s2.get().0, s2.get().1 + 1))),
        )
        .unwrap();
        assert!(ctx.set_fd_interest(fd, Interest::READ).unwrap(), "{name}");
        drop(w);
        assert!(ctx.poll(true), "{name}: the hang-up");
        assert_eq!(sides.get(), (1, 0), "{name}: (read, write) calls for a hang-up, write paused");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// Interest beyond the callbacks, or on an fd without a handler: a clear error / `false`, no panic.
#[test]
fn handler_interest_errors() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, _w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        assert!(!ctx.set_fd_interest(fd, Interest::READ).unwrap(), "{name}: no handler");
        ctx.set_fd_handler(fd, FdHandler::new().on_read(|_| {})).unwrap();
        let e = ctx.set_fd_interest(fd, Interest::WRITE).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{name}");
        assert!(e.to_string().contains(&format!("fd {fd}")), "{name}: {e}");
        assert!(ctx.set_fd_interest(fd, Interest::READ).unwrap(), "{name}");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// A handler's interest is what its callbacks serve, each side on its own: a write-only handler
/// waits for writability only (`FdRef::interest`).
#[test]
fn handler_interest_is_per_side() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, _w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let seen = Rc::new(Cell::new(None));
        let s2 = seen.clone();
        ctx.set_fd_handler(
            fd,
            FdHandler::new().on_write(move |this| s2.set(Some(this.interest()))),
        )
        .unwrap();
        assert!(ctx.poll(false), "{name}: writable");
        assert_eq!(seen.take(), Some(Interest::WRITE), "{name}: a write-only handler");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// `FdRef::remove` removes its own handler only: after a replacement, the old handler's `remove`
/// (called from a callback of its still-running dispatch) leaves the new one registered.
#[test]
fn handler_removes_itself_but_not_its_replacement() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, mut w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let new_calls = Rc::new(Cell::new(0));
        let nc = new_calls.clone();
        let removed = Rc::new(Cell::new(None));
        let rm = removed.clone();
        ctx.set_fd_handler(
            fd,
            FdHandler::new().on_read(move |this| {
                let nc = nc.clone();
                this.context()
                    .set_fd_handler(
                        this.fd(),
                        FdHandler::new().on_read(move |_| nc.set(nc.get() + 1)),
                    )
                    .unwrap();
                rm.set(Some(this.remove().unwrap()));
            }),
        )
        .unwrap();
        w.write_all(b"x").unwrap();
        assert!(ctx.poll(true), "{name}");
        assert_eq!(removed.get(), Some(false), "{name}: removed its replacement");
        assert!(ctx.poll(false), "{name}: the replacement is not registered");
        assert_eq!(new_calls.get(), 1, "{name}");
        assert!(ctx.remove_fd_handler(fd).unwrap(), "{name}");
    }
}

/// A handler that removes itself from its callback (`FdRef::remove`): true, and it is gone: not
/// registered, and not called again although its fd stays readable.
#[test]
fn handler_removes_itself_from_its_callback() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let (r, mut w) = UnixStream::pair().unwrap();
        let fd = r.as_raw_fd();
        let calls = Rc::new(Cell::new(0));
        let removed = Rc::new(Cell::new(None));
        let (c2, rm) = (calls.clone(), removed.clone());
        ctx.set_fd_handler(
            fd,
            FdHandler::new().on_read(move |this| {
                c2.set(c2.get() + 1);
                rm.set(Some(this.remove().unwrap()));
            }),
        )
        .unwrap();
        w.write_all(b"x").unwrap(); // never read: the fd stays readable
        assert!(ctx.poll(true), "{name}");
        assert_eq!(removed.get(), Some(true), "{name}: the removal of itself");
        assert_eq!(ctx.poll_ns(fd), None, "{name}: still registered");
        assert!(!ctx.poll(false), "{name}: a removed handler made progress");
        assert_eq!(calls.get(), 1, "{name}: called after its removal");
        assert!(!ctx.remove_fd_handler(fd).unwrap(), "{name}: removed twice");
    }
}

/// What `{:?}` of each public object tells someone reading a log or a failed assertion: its type, and
/// the state that tells two of them apart or one moment from another (a context's backend and a
/// handle's notifier fd, whether a BH is scheduled, a timer's deadline, which callbacks a handler
/// has, which fd a callback is running for).
#[test]
fn debug_output_names_the_object_and_its_state() {
    for (name, b) in backends() {
        let ctx = ctx(&b);
        let dbg = |x: &dyn std::fmt::Debug| format!("{x:?}");

        let c = dbg(&ctx);
        assert!(c.starts_with("AioContext") && c.contains(ctx.backend_name()), "{name}: {c}");
        let h = dbg(ctx.handle());
        assert!(
            h.starts_with("Handle") && h.contains(&ctx.notifier_fd().to_string()),
            "{name}: {h}"
        );

        let inside = Rc::new(RefCell::new(String::new()));
        let i2 = inside.clone();
        let bh = ctx.bh_new(move |this| *i2.borrow_mut() = format!("{this:?}"));
        let idle = dbg(&bh);
        bh.schedule();
        let scheduled = dbg(&bh);
        assert!(
            idle.starts_with("Bh") && scheduled.starts_with("Bh"),
            "{name}: {idle} {scheduled}"
        );
        assert_ne!(idle, scheduled, "{name}: a scheduled BH looks like an idle one");
        let sched = bh.scheduler();
        let alive = dbg(&sched);
        assert!(ctx.poll(false), "{name}");
        assert!(inside.borrow().starts_with("BhRef"), "{name}: {}", inside.borrow());
        assert_eq!(dbg(&bh), idle, "{name}: ran, so idle again");
        drop(bh);
        let gone = dbg(&sched);
        assert!(alive.starts_with("BhScheduler") && gone.starts_with("BhScheduler"), "{name}");
        assert_ne!(alive, gone, "{name}: a scheduler of a deleted BH looks like a live one");

        let i2 = inside.clone();
        let t = ctx.timer_new(move |this| *i2.borrow_mut() = format!("{this:?}"));
        let disarmed = dbg(&t);
        let deadline = ctx.now_ns() + 123_456_789;
        t.mod_ns(deadline);
        let armed = dbg(&t);
        assert!(disarmed.starts_with("Timer") && armed.starts_with("Timer"), "{name}: {armed}");
        assert!(armed.contains(&deadline.to_string()), "{name}: no deadline in {armed}");
        assert!(!disarmed.contains(&deadline.to_string()), "{name}: {disarmed}");
        t.mod_ns(0);
        assert!(ctx.poll(false), "{name}: the timer is due");
        assert!(inside.borrow().starts_with("TimerRef"), "{name}: {}", inside.borrow());

        let reads = FdHandler::new().on_read(|_| {});
        let writes = FdHandler::new().on_write(|_| {});
        let (r, w) = (dbg(&reads), dbg(&writes));
        assert!(r.starts_with("FdHandler") && w.starts_with("FdHandler"), "{name}: {r}");
        assert_ne!(r, w, "{name}: a reader and a writer look the same");

        let (sock, mut peer) = UnixStream::pair().unwrap();
        let fd = sock.as_raw_fd();
        let i2 = inside.clone();
        ctx.set_fd_handler(
            fd,
            FdHandler::new().on_read(move |this| *i2.borrow_mut() = format!("{this:?}")),
        )
        .unwrap();
        peer.write_all(b"x").unwrap();
        assert!(ctx.poll(true), "{name}");
        let f = inside.borrow().clone();
        assert!(f.starts_with("FdRef") && f.contains(&fd.to_string()), "{name}: {f}");
        ctx.remove_fd_handler(fd).unwrap();
    }
}

/// io_uring fault injection: refused with a clear error on any other backend (nothing is silently
/// not injected); on io_uring, injected and counted, and the loop still runs every BH and fd
/// event through them.
#[test]
fn io_uring_faults_are_injected_and_counted_or_refused() {
    use aioctx::{AioContext, Backend, Faults};
    let f = Faults { seed: 3, enter_fail: 300, cq_lost: 200, cq_delay: 300, ..Faults::default() };
    for b in [Backend::Epoll, Backend::Ppoll, Backend::Auto] {
        let e = AioContext::builder().backend(b.clone()).io_uring_faults(f).build().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{b:?}: {e}");
        assert!(e.to_string().contains("io_uring_faults needs Backend::IoUring"), "{e}");
    }
    let Ok(ctx) = AioContext::builder().backend(Backend::IoUring).io_uring_faults(f).build() else {
        return; // io_uring refused by this kernel: nothing to inject into
    };
    assert_eq!(ctx.backend_name(), "io_uring");
    let (r, mut w) = UnixStream::pair().unwrap();
    let reads = Rc::new(Cell::new(0));
    let r2 = reads.clone();
    let mut rs = r.try_clone().unwrap();
    ctx.set_fd_handler(
        r.as_raw_fd(),
        FdHandler::new().on_read(move |_| {
            let mut buf = [0; 8];
            let _ = rs.read(&mut buf).unwrap();
            r2.set(r2.get() + 1);
        }),
    )
    .unwrap();
    let ran = Rc::new(Cell::new(0));
    let ran2 = ran.clone();
    let bh = ctx.bh_new(move |_| ran2.set(ran2.get() + 1));
    for i in 1..=50 {
        bh.schedule();
        w.write_all(b"x").unwrap();
        while ran.get() < i || reads.get() < i {
            ctx.poll(true);
        }
    }
    let n = ctx.faults_injected();
    assert!(n.enter_failures > 0 && n.completions_lost > 0 && n.harvests_delayed > 0, "{n:?}");
    ctx.remove_fd_handler(r.as_raw_fd()).unwrap();
}

/// An explicit backend is the one built, or an error: never another in its place. `Backend::Auto`
/// falls back from io_uring to ppoll (switching to epoll at 64 fds) when the kernel refuses
/// io_uring, and says so with a warning. The refusal is a seccomp filter on one thread of this
/// test (filters are per thread): io_uring_setup fails with ENOSYS there, as on a kernel built
/// without it.
#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn an_explicit_backend_is_built_or_refused_and_auto_falls_back_with_a_warning() {
    use aioctx::{AioContext, Backend};
    let name = |b: Backend| AioContext::builder().backend(b).build().ok().map(|c| c.backend_name());
    let forced = [
        (cfg!(aioctx_force_fdmon = "ppoll"), "ppoll"),
        (cfg!(aioctx_force_fdmon = "epoll"), "epoll"),
        (cfg!(aioctx_force_fdmon = "io_uring"), "io_uring"),
    ];
    if let Some((_, f)) = forced.iter().find(|x| x.0) {
        // A build that forces one backend (CI's reruns): every choice gives that one.
        for b in [Backend::Ppoll, Backend::Epoll, Backend::Auto] {
            assert_eq!(name(b.clone()), Some(*f), "{b:?} in a build forcing {f}");
        }
        return;
    }
    assert_eq!(name(Backend::Ppoll), Some("ppoll"));
    assert_eq!(name(Backend::Epoll), Some("epoll"));
    if let Some(n) = name(Backend::IoUring) {
        assert_eq!(n, "io_uring");
    }
    std::thread::spawn(move || {
        refuse_io_uring_on_this_thread();
        let e = AioContext::builder().backend(Backend::IoUring).build().unwrap_err();
        assert!(e.to_string().contains("io_uring is not available"), "{e}");
        let (warnings, ctx) = capture_warnings(|| AioContext::builder().build().unwrap());
        assert_eq!(ctx.backend_name(), "ppoll", "Auto without io_uring");
        assert!(
            warnings.iter().any(|w| w.contains("io_uring unavailable")),
            "the fallback was not logged: {warnings:?}"
        );
    })
    .join()
    .unwrap();
}

/// A seccomp filter on the calling thread: io_uring_setup(2) fails with ENOSYS.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn refuse_io_uring_on_this_thread() {
    const AUDIT_ARCH: u32 = if cfg!(target_arch = "x86_64") { 0xc000_003e } else { 0xc000_00b7 };
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (ld, jeq, ret) = (0x20, 0x15, 0x06); // BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    let mut prog = [
        f(ld, 0, 0, 4), // seccomp_data.arch
        f(jeq, 0, 3, AUDIT_ARCH),
        f(ld, 0, 0, 0), // seccomp_data.nr
        f(jeq, 0, 1, libc::SYS_io_uring_setup as u32),
        f(ret, 0, 0, 0x0005_0000 | libc::ENOSYS as u32), // SECCOMP_RET_ERRNO
        f(ret, 0, 0, 0x7fff_0000),                       // SECCOMP_RET_ALLOW
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: prctl(2) with PR_SET_NO_NEW_PRIVS, then PR_SET_SECCOMP with a valid filter program
    // that outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let r = libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog);
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// Run `f` with a tracing subscriber on this thread that keeps each WARN event's fields.
fn capture_warnings<T>(f: impl FnOnce() -> T) -> (Vec<String>, T) {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    struct Capture(Arc<Mutex<Vec<String>>>);
    struct Text(String);
    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level() == tracing::Level::WARN
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let mut t = Text(String::new());
            e.record(&mut t);
            self.0.lock().unwrap().push(t.0);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Capture(seen.clone()), f);
    let seen = seen.lock().unwrap().clone();
    (seen, out)
}
