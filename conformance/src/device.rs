//! Replaying the poll-mode models' trails (promela/poll_mode.pml, poll_idle.pml) on the real code.
//!
//! These models have no Rust-model counterpart: a virtio-like device whose handler polls a queue
//! (`vq_pending`), whose `io_poll_begin` / `io_poll_end` turn guest kicks off / on
//! (`vq_kick_enabled`), and whose guest writes the handler's eventfd (`ioeventfd`) on a kick while
//! kicks are on. The replayer builds that device on the model kernel (a model fd, `io_poll` reading
//! `vq_pending`, `io_poll_ready` and the read handler consuming it), runs `poll` on the home thread
//! with the controller of [`crate::replay`] as the gate, and performs the environment's steps
//! (`env_guest_submit`, `env_guest_kick`) itself, in trail order, once the home thread is settled at
//! its next gate (or blocked). Only the models' own steps are gated (compute_timeout, poll
//! begin/end, io_poll, final poll, idle removal, wait, poll-ready, dispatch); the notify handshake
//! steps the implementation also takes pass freely (no other thread notifies, so they commute with
//! everything here).
//!
//! Mapping: Promela's `ctx_poll_final_poll` (one atomic step: the final io_poll) is the
//! implementation's `ctx_poll_final_poll` followed by that handler's `handler_io_poll`. A step the
//! implementation records after its effect (`handler_io_poll` reads the queue, `ctx_poll_wait` the
//! fd, `ctx_poll_dispatch` consumes both) cannot have an environment step between it and the home
//! thread's previous step: such a trail is not replayable. So is a trail whose idle removal
//! (poll_idle.pml) is not at the end of the first polling phase: the replayer sets the idle timeout
//! so that the first phase removes the handler.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aioctx::kernel::ModelKernel;
use aioctx::trace::Step;
use aioctx::{AioContext, Backend, FdHandler};

use crate::replay::{set_model_tid, ClockRef, Controller, Outcome, ReplayClock, Slot, St};

/// One event of the trail, as the replayer uses it.
#[derive(Debug, Clone)]
enum Ev {
    /// A home-thread step (pid 0) with its values (timeouts converted: -1 infinite, 0, 10).
    Home(Step, BTreeMap<String, i64>),
    /// `env_driver_call blocking=b`: the home thread's next call is `poll(b)`.
    Driver(bool),
    /// The guest (pid 1).
    Submit,
    Kick(bool),
}

/// The steps these models have (everything else the implementation records passes its gate).
const VOCABULARY: &[Step] = &[
    Step::CtxPollComputeTimeout,
    Step::CtxPollBegin,
    Step::HandlerIoPoll,
    Step::CtxPollEnd,
    Step::CtxPollFinalPoll,
    Step::CtxPollIdleRemove,
    Step::CtxPollWait,
    Step::HandlerPollReady,
    Step::CtxPollDispatch,
];

fn parse(spin_output: &str) -> Result<(Vec<Ev>, bool), String> {
    let mut evs = Vec::new();
    let mut hang = false;
    for line in spin_output.lines() {
        let Some(rest) = line.trim_start().strip_prefix("@@@") else { continue };
        let mut w = rest.split_whitespace();
        let pid: u32 = w.next().and_then(|p| p.parse().ok()).ok_or("bad pid")?;
        let label = w.next().ok_or("no label")?;
        let vals: BTreeMap<String, i64> = w
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                let v: i64 = v.parse().ok()?;
                let v = if k == "timeout" {
                    match v {
                        1 => 10,
                        2 => -1,
                        v => v,
                    }
                } else {
                    v
                };
                Some((k.to_string(), v))
            })
            .collect();
        match (pid, label) {
            (_, "env_watchdog_hang") => hang = true,
            (_, "env_guest_stop") => {}
            (0, "env_driver_call") => evs.push(Ev::Driver(vals.get("blocking") == Some(&1))),
            (_, "env_guest_submit") => evs.push(Ev::Submit),
            (_, "env_guest_kick") => evs.push(Ev::Kick(vals.get("vq_kick_enabled") == Some(&1))),
            (0, l) => {
                let step = Step::from_label(l).ok_or_else(|| format!("unknown step {l}"))?;
                if !VOCABULARY.contains(&step) {
                    return Err(format!("step {l} is outside the poll-mode vocabulary"));
                }
                if step == Step::CtxPollFinalPoll {
                    evs.push(Ev::Home(step, BTreeMap::new()));
                    evs.push(Ev::Home(Step::HandlerIoPoll, vals));
                } else {
                    evs.push(Ev::Home(step, vals));
                }
            }
            (p, l) => return Err(format!("unexpected process {p} step {l}")),
        }
    }
    Ok((evs, hang))
}

/// Why the trail cannot be replayed here, if so.
fn limits(model: &str, evs: &[Ev]) -> Option<String> {
    let mut last_home = None;
    let mut env_since = false;
    let mut removals = 0;
    let mut phase_io_polls = 0;
    for (i, e) in evs.iter().enumerate() {
        match e {
            Ev::Submit | Ev::Kick(_) | Ev::Driver(_) => env_since |= !matches!(e, Ev::Driver(_)),
            Ev::Home(s, _) => {
                let after_effect =
                    matches!(s, Step::HandlerIoPoll | Step::CtxPollWait | Step::CtxPollDispatch);
                if after_effect && env_since && last_home.is_some() {
                    return Some(format!(
                        "event {i}: a guest step inside `{}`, which the implementation records after \
                         its effect",
                        s.as_str()
                    ));
                }
                if *s == Step::CtxPollIdleRemove {
                    removals += 1;
                    if removals > 1 || phase_io_polls != 1 {
                        return Some(format!(
                            "event {i}: an idle removal after the first polling round"
                        ));
                    }
                }
                if *s == Step::HandlerIoPoll {
                    phase_io_polls += 1;
                }
                last_home = Some(i);
                env_since = false;
            }
        }
    }
    if model == "poll_idle" && removals == 0 {
        return Some(
            "no idle removal (the replayer removes the handler in the first phase)".into(),
        );
    }
    // A non-blocking poll must be followed by the zero-timeout wait the implementation makes (a
    // user handler is registered).
    let mut nonblocking = false;
    for e in evs {
        match e {
            Ev::Driver(b) => nonblocking = !b,
            Ev::Home(Step::CtxPollWait, _) => nonblocking = false,
            Ev::Home(Step::CtxPollComputeTimeout, _) => {}
            Ev::Home(_, _) if nonblocking => {
                return Some(
                    "a non-blocking poll skips its wait (the implementation checks the fd)".into(),
                )
            }
            _ => {}
        }
    }
    None
}

struct Device {
    pending: AtomicBool,
    kick_enabled: AtomicBool,
}

/// Replay a poll_mode.pml / poll_idle.pml trail (`spin -T -t -p` output) on the implementation as
/// built. The caller holds [`crate::serial`].
pub fn replay_device_trail(model: &str, spin_output: &str) -> Outcome {
    let (evs, hang) = match parse(spin_output) {
        Ok(x) => x,
        Err(e) => return Outcome::NotReplayable(e),
    };
    if let Some(r) = limits(model, &evs) {
        return Outcome::NotReplayable(r);
    }
    let drivers: Vec<bool> =
        evs.iter().filter_map(|e| if let Ev::Driver(b) = e { Some(*b) } else { None }).collect();
    let ctl = Arc::new(Controller {
        st: Mutex::new(St { slots: vec![Slot::default()], ..St::default() }),
        cv: Condvar::new(),
        hidden: Step::ALL.iter().copied().filter(|s| !VOCABULARY.contains(s)).collect(),
        trace: Vec::new(),
        pos: AtomicU64::new(0),
        pollers: vec![0],
    });
    let clock = Arc::new(ReplayClock::default());
    let dev =
        Arc::new(Device { pending: AtomicBool::new(false), kick_enabled: AtomicBool::new(true) });
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let go = Arc::new(std::sync::Barrier::new(2));
    let home = {
        let (clock, dev, stop, go) = (clock.clone(), dev.clone(), stop.clone(), go.clone());
        let idle = model == "poll_idle";
        std::thread::spawn(move || {
            let k = ModelKernel::new();
            k.set_polls_readiness(idle);
            let ctx = AioContext::builder()
                .backend(Backend::Model(k.clone()))
                .clock(ClockRef(clock.clone()))
                .poll_params(50_000, 0, 0)
                .build()
                .expect("model context");
            if idle {
                ctx.set_poll_idle_timeout(Duration::from_nanos(1000));
            }
            let fd = k.open();
            let (k2, d1, d2, d3, d4, d5) =
                (k.clone(), dev.clone(), dev.clone(), dev.clone(), dev.clone(), dev.clone());
            let h = FdHandler::new()
                .on_read(move |_| {
                    k2.set_readable(fd, false);
                    d1.pending.store(false, SeqCst);
                })
                .on_poll(move |_| d2.pending.load(SeqCst), move |_| d3.pending.store(false, SeqCst))
                .on_poll_begin(move |_| d4.kick_enabled.store(false, SeqCst))
                .on_poll_end(move |_| d5.kick_enabled.store(true, SeqCst));
            ctx.set_fd_handler(fd, h).expect("device handler");
            clock.tick.store(100, SeqCst);
            k.set_readable(fd, true);
            while ctx.poll(false) {}
            clock.tick.store(0, SeqCst);
            assert!(ctx.is_polled(fd), "the device handler is not on the poll list");
            while ctx.poll(false) {}
            dev.kick_enabled.store(true, SeqCst);
            tx.send((k.clone(), fd, ctx.handle().clone())).ok();
            go.wait(); // the gate is installed
            set_model_tid(Some(0));
            let mut calls = drivers.into_iter();
            while !stop.load(SeqCst) {
                ctx.poll(calls.next().unwrap_or(true));
            }
            set_model_tid(None);
        })
    };
    let (k, fd, handle) = rx.recv().expect("home setup");
    clock.jump.store(1_000_000, SeqCst);
    aioctx::trace::set_gate(Some(ctl.clone()));
    go.wait();
    let outcome = drive(&evs, hang, &ctl, &clock, &dev, &k, fd);
    {
        let mut g = ctl.lock();
        g.aborted = true;
        ctl.cv.notify_all();
    }
    aioctx::trace::set_gate(None);
    stop.store(true, SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !home.is_finished() && Instant::now() < deadline {
        handle.notify();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(home.is_finished(), "device replay teardown: the home thread does not stop");
    home.join().expect("home thread");
    outcome
}

/// Where the home thread is: at a gate (step), blocked (`Err`), or running (None). Blocked is read
/// from the model kernel, exactly: parked in the model fd monitor's wait with nothing ready (only
/// the guest's steps, which `drive` makes itself after settling, change an fd).
fn home_stand(ctl: &Controller, k: &ModelKernel) -> Option<Result<Step, ()>> {
    let g = ctl.lock();
    if let Some((s, _)) = g.slots[0].arrived {
        return Some(Ok(s));
    }
    drop(g);
    (k.blocked_waiters() > 0).then_some(Err(()))
}

/// Wait until the home thread is at a gate or blocked.
fn settle(ctl: &Controller, k: &ModelKernel) -> Result<Result<Step, ()>, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(s) = home_stand(ctl, k) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err("the home thread neither reaches a gate nor blocks in 3 s".into());
        }
        let g = ctl.lock();
        let _ = ctl.cv.wait_timeout(g, Duration::from_micros(300));
    }
}

fn drive(
    evs: &[Ev],
    hang: bool,
    ctl: &Controller,
    clock: &ReplayClock,
    dev: &Device,
    k: &ModelKernel,
    fd: std::os::fd::RawFd,
) -> Outcome {
    let diverged = |index: usize, got: String| Outcome::Diverged {
        index,
        expected: evs.get(index).map(|e| format!("{e:?}")),
        got,
        model_state: format!(
            "vq_pending={} vq_kick_enabled={} ioeventfd={}",
            dev.pending.load(SeqCst) as u8,
            dev.kick_enabled.load(SeqCst) as u8,
            k.is_readable(fd) as u8
        ),
    };
    let mut steps = 0;
    for (i, e) in evs.iter().enumerate() {
        match e {
            Ev::Driver(_) => {}
            Ev::Submit | Ev::Kick(_) => {
                if let Err(m) = settle(ctl, k) {
                    return diverged(i, m);
                }
                if let Ev::Kick(enabled) = e {
                    if dev.kick_enabled.load(SeqCst) != *enabled {
                        return diverged(
                            i,
                            format!(
                                "guest notifications are {}",
                                if *enabled { "off" } else { "on" }
                            ),
                        );
                    }
                    if *enabled {
                        k.set_readable(fd, true);
                    }
                } else {
                    dev.pending.store(true, SeqCst);
                }
                steps += 1;
            }
            Ev::Home(step, vals) => {
                match settle(ctl, k) {
                    Err(m) => return diverged(i, m),
                    Ok(Err(())) => {
                        return diverged(i, "the home thread is blocked in a wait".into())
                    }
                    Ok(Ok(s)) if s != *step => {
                        return diverged(
                            i,
                            format!("the home thread takes `{}` instead", s.as_str()),
                        )
                    }
                    Ok(Ok(_)) => {}
                }
                // The last io_poll of a polling phase (not a final poll): end the phase.
                let final_poll = i > 0 && matches!(evs[i - 1], Ev::Home(Step::CtxPollFinalPoll, _));
                if *step == Step::HandlerIoPoll && !final_poll && vals.get("ready") == Some(&0) {
                    let next = evs[i + 1..].iter().find_map(|e| {
                        if let Ev::Home(s, _) = e {
                            Some(*s)
                        } else {
                            None
                        }
                    });
                    if next != Some(Step::HandlerIoPoll) {
                        clock.ns.fetch_add(clock.jump.load(SeqCst), SeqCst);
                    }
                }
                let done = {
                    let mut g = ctl.lock();
                    g.slots[0].released = true;
                    ctl.cv.notify_all();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    loop {
                        if let Some(d) = g.dones.pop_front() {
                            break Some(d);
                        }
                        if Instant::now() > deadline {
                            break None;
                        }
                        g = ctl
                            .cv
                            .wait_timeout(g, Duration::from_millis(10))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                };
                let Some((_, dstep, values)) = done else {
                    return diverged(i, "released but no record".into());
                };
                if dstep != *step {
                    return diverged(i, format!("recorded `{}`", dstep.as_str()));
                }
                for (kk, v) in &values {
                    if let Some(want) = vals.get(*kk) {
                        let same =
                            if *kk == "timeout" { v.signum() == want.signum() } else { v == want };
                        if !same {
                            return diverged(i, format!("records {kk}={v} (the trail: {want})"));
                        }
                    }
                }
                steps += 1;
            }
        }
    }
    let end = evs.len();
    match settle(ctl, k) {
        Err(m) => diverged(end, m),
        Ok(Err(())) if hang && dev.pending.load(SeqCst) => {
            Outcome::Followed { steps, blocked: vec![0], hang: true }
        }
        Ok(Err(())) => diverged(end, "the home thread blocks where the trail does not".into()),
        Ok(Ok(s)) if hang => diverged(
            end,
            format!(
                "the home thread takes `{}` where the trail has it blocked in its wait",
                s.as_str()
            ),
        ),
        Ok(Ok(_)) => Outcome::Followed { steps, blocked: vec![], hang: false },
    }
}
