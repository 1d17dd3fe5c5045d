//! Scenarios for the task module (impl/src/task): a task is a `Local` BH, its waker a BH schedule
//! behind a `woken` flag, `block_on`'s waker a flag plus a notify. What they check:
//!
//! - `p_no_lost_wakeup`: a wake from another thread racing the task's poll, or the home thread's
//!   blocking poll, is never lost (the task is polled again after the last wake);
//! - `p_wake_publishes`: what the waker wrote before the wake is seen by the poll it causes;
//! - `p_progress_exact`: a poll returns true iff a task was polled in it;
//! - `p_task_freed_once`: a task's future is dropped exactly once, on the home thread, however its
//!   completion, cancellation or context drop races the wakes of other threads.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use aioctx::sync::atomic::{AtomicU32, Ordering};
use aioctx::sync::{thread, Arc, Mutex};
use aioctx::ModelKernel;

use super::{join_all, model_ctx, poll_checked, Gate, HomeCount, Keep, Size};

/// A cross-thread signal: `set` stores its value (Relaxed: the wake must publish it), then wakes
/// the waker the future left.
#[derive(Default)]
pub struct Signal {
    value: AtomicU32,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    pub fn set(&self, v: u32) {
        // ORDERING: Relaxed on purpose: the verdict on the waker's own ordering (p_wake_publishes).
        self.value.store(v, Ordering::Relaxed);
        let w = self.waker.lock().take();
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// Waits for a [`Signal`]; counts its polls (home-only) in `polls`.
pub struct Wait {
    sig: Arc<Signal>,
    polls: HomeCount,
}

impl Future for Wait {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        self.polls.inc();
        // The waker first, then the value: a `set` after the load below finds the waker.
        *self.sig.waker.lock() = Some(cx.waker().clone());
        // ORDERING: Relaxed, as in `set`.
        match self.sig.value.load(Ordering::Relaxed) {
            0 => Poll::Pending,
            v => Poll::Ready(v),
        }
    }
}

/// Remote threads each set the signal of one task while the home thread runs blocking polls until
/// every task completed: every wake is seen (`p_no_lost_wakeup`, `p_wake_publishes`), every poll
/// that polled a task says so (`p_progress_exact`). The race that matters is a wake landing while
/// its task is being polled (after the future read "not set"): the task's `woken` flag must have
/// been cleared before that poll, or the wake is absorbed and the task never runs again
/// (`aioctx_bug = "task_clears_woken_after_poll"`).
pub fn task_wake_vs_blocking_poll(s: Size) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let total = s.total();
    let polls = HomeCount::new();
    let done = HomeCount::new();
    let gate = Gate::new(s);
    let mut sigs = Vec::new();
    let mut joins = Vec::new();
    for i in 0..total {
        let sig = Arc::new(Signal::default());
        let (p, d, g) = (polls.clone(), done.clone(), gate.clone());
        let wait = Wait { sig: sig.clone(), polls: p };
        joins.push(ctx.spawn_local(async move {
            let v = wait.await;
            d.inc();
            g.pass();
            v
        }));
        sigs.push((i, sig));
    }
    let mut ts = Keep::new(Vec::new());
    for r in 0..s.remotes {
        let mine: Vec<_> = sigs
            .iter()
            .filter(|(i, _)| i / s.per_remote == r)
            .map(|(i, s)| (*i, s.clone()))
            .collect();
        let gate = gate.clone();
        ts.push(thread::spawn(move || {
            for (j, (i, sig)) in mine.into_iter().enumerate() {
                gate.wait(j * s.remotes + r);
                sig.set(i as u32 + 1);
            }
        }));
    }
    while done.get() < total {
        poll_checked(&ctx, true, &polls, "task_wake_vs_blocking_poll");
    }
    join_all(ts);
    for (i, j) in joins.into_iter().enumerate() {
        assert!(j.is_finished(), "p_no_lost_wakeup violated: task {i} did not finish");
        let mut j = j;
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut j).poll(&mut cx) {
            Poll::Ready(Ok(v)) => {
                assert_eq!(v, i as u32 + 1, "p_wake_publishes violated: task {i} saw another value")
            }
            other => panic!("task {i}: {other:?}"),
        }
    }
    assert!(!ctx.poll(false), "p_progress_exact violated: nothing was left to run");
}

/// `block_on` of a future that waits for a remote signal, with no other work on the context: the
/// wake (a flag and a notify) ends the blocking poll inside `block_on` (`p_no_lost_wakeup`) and the
/// value it published is seen (`p_wake_publishes`).
pub fn block_on_wake_vs_blocking_poll() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let sig = Arc::new(Signal::default());
    let s2 = sig.clone();
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || s2.set(7))]);
    let v = ctx.block_on(Wait { sig, polls: HomeCount::new() });
    join_all(ts);
    assert_eq!(v, 7, "p_wake_publishes violated");
}

/// Counts the drops of a task's future and checks they happen on the home thread.
pub struct FutureProbe {
    drops: HomeCount,
    home: thread::ThreadId,
}

impl Drop for FutureProbe {
    fn drop(&mut self) {
        self.drops.inc();
        assert_eq!(
            thread::current().id(),
            self.home,
            "p_task_freed_once violated: a task's future was dropped off its home thread"
        );
    }
}

/// How the task's life ends while a remote thread holds its waker and wakes it.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// The task completes (the remote's wake made it ready, or it was already).
    Complete,
    /// The home thread cancels it through its `JoinHandle`.
    Cancel,
    /// The home thread drops the context.
    DropContext,
}

/// A remote thread wakes a task (twice, by reference and by value, then drops the waker) while the
/// home thread ends the task's life (`end`): the future is dropped exactly once, on the home thread
/// (`p_task_freed_once`), and the late wakes do nothing (no poll after the end, no crash).
pub fn task_end_racing_wake(end: End) {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let drops = HomeCount::new();
    let probe = FutureProbe { drops: drops.clone(), home: thread::current().id() };
    let sig = Arc::new(Signal::default());
    let polls = HomeCount::new();
    let wait = Wait { sig: sig.clone(), polls: polls.clone() };
    let j = ctx.spawn_local(async move {
        let _p = probe;
        wait.await
    });
    assert!(ctx.poll(false)); // pending; its waker is in `sig`
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        // ORDERING: Relaxed, as in `Signal::set`.
        sig.value.store(1, Ordering::Relaxed);
        let w = sig.waker.lock().take();
        if let Some(w) = w {
            w.wake_by_ref();
            w.wake();
        }
    })]);
    let ctx = match end {
        End::Complete => {
            while !j.is_finished() {
                ctx.poll(true);
            }
            Some(ctx)
        }
        End::Cancel => {
            j.cancel();
            Some(ctx)
        }
        End::DropContext => {
            drop(ctx.into_inner());
            None
        }
    };
    join_all(ts);
    assert!(j.is_finished());
    assert_eq!(drops.get(), 1, "p_task_freed_once violated: {} drops", drops.get());
    if let Some(ctx) = ctx {
        let after = polls.get();
        while ctx.poll(false) {}
        assert_eq!(polls.get(), after, "a finished task was polled again");
    }
}

/// The waker is the only link between the threads: the remote gets the task's waker (taken from its
/// first poll, handed over by the thread spawn) and publishes two values through it, `1` then `2`,
/// with a wake after each; the second wake usually finds the first one pending (`woken` still set)
/// and schedules nothing, so its value reaches the task only through the `woken` flag's release /
/// acquire pair. The task must see `2` (`p_wake_publishes`) and finish (`p_no_lost_wakeup`: a poll
/// that missed `2` after the last wake was absorbed never runs again). No lock of the scenario's own
/// orders anything (a mutex around the waker, as in [`Signal`], would publish for the waker and
/// hide its orderings).
pub fn task_wakes_publish() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let slot: std::rc::Rc<std::cell::RefCell<Option<Waker>>> = Default::default();
    let (d, s) = (data.clone(), slot.clone());
    let j = ctx.spawn_local(std::future::poll_fn(move |cx| {
        s.borrow_mut().get_or_insert_with(|| cx.waker().clone());
        // ORDERING: Relaxed on purpose: the verdict on the waker's orderings.
        if d.load(Ordering::Relaxed) == 2 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    assert!(ctx.poll(false)); // the first poll: pending, its waker in `slot`
    let w = slot.borrow_mut().take().expect("the task left its waker");
    let ts: Keep<Vec<_>> = Keep::new(vec![thread::spawn(move || {
        data.store(1, Ordering::Relaxed);
        w.wake_by_ref();
        data.store(2, Ordering::Relaxed);
        w.wake();
    })]);
    while !j.is_finished() {
        ctx.poll(true);
    }
    join_all(ts);
}

/// `block_on`'s waker as the only link: the future hands its waker to a remote thread it spawns in
/// its first poll; the remote stores `1` (Relaxed) and wakes, then `2` and wakes again. The second
/// wake can land after `block_on`'s `poll(true)` returned for the first one and before `block_on`
/// consumed its flag: it finds the flag set and does not notify, so `2` reaches the future only
/// through the flag's release / acquire pair. The future must see `2` (`p_wake_publishes`) and
/// `block_on` return (`p_no_lost_wakeup`).
pub fn block_on_wake_publishes() {
    let k = ModelKernel::new();
    let ctx = model_ctx(&k);
    let data = Arc::new(AtomicU32::new(0));
    let mut ts: Option<Keep<Vec<thread::JoinHandle<()>>>> = None;
    let d = data.clone();
    ctx.block_on(std::future::poll_fn(|cx| {
        if ts.is_none() {
            let (w, d) = (cx.waker().clone(), d.clone());
            ts = Some(Keep::new(vec![thread::spawn(move || {
                d.store(1, Ordering::Relaxed);
                w.wake_by_ref();
                d.store(2, Ordering::Relaxed);
                w.wake();
            })]));
        }
        // ORDERING: Relaxed on purpose, as in `task_wakes_publish`.
        if data.load(Ordering::Relaxed) == 2 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }));
    join_all(ts.expect("the future was polled"));
}
