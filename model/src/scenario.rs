//! Scenarios as data: which pollers and remote threads share one context, and which bug is planted.
//!
//! Thread ids (the `thread` of every trace event) are indexes: pollers first, in order, then remotes.

use std::fmt;

/// How many times a poller goes round its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loops {
    /// `n` calls of `poll` (or `n` prepare/wait/check/dispatch rounds), then the thread ends.
    Times(u8),
    /// Forever: the state graph may then have cycles, which is what `p_no_busy_loop` looks for.
    Forever,
}

/// A thread that polls the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Poller {
    /// `poll(true)` on the home thread (docs/protocol.md §2, steps 1–11).
    Blocking(Loops),
    /// An external loop driving the context (QEMU's GSource): prepare, its own wait on the context's
    /// fd (a `ctx_poll_wait` step, recorded by whoever drives the loop; Promela's `env_loop_wait`),
    /// check, dispatch.
    External(Loops),
}

impl Poller {
    /// How many times it loops.
    pub fn loops(self) -> Loops {
        match self {
            Poller::Blocking(l) | Poller::External(l) => l,
        }
    }
}

/// One operation of a remote thread. BHs are numbered `0..bhs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A bare `notify()` for work the loop only sees when it scans (a ghost request, consumed by the next
    /// `bh_poll_take`: QEMU's `req` in its aio_notify_accept model).
    Notify,
    /// `bh.schedule()`: enqueue(SCHEDULED), then notify.
    Schedule(u8),
    /// `bh.schedule_idle()`: enqueue(SCHEDULED | IDLE), then notify.
    ScheduleIdle(u8),
    /// The oneshot form: enqueue(SCHEDULED | ONESHOT), then notify.
    Oneshot(u8),
    /// `bh.cancel()`: `fetch_and(!SCHEDULED)`, no notify.
    Cancel(u8),
    /// The owner drops its handle: enqueue(DELETED) (docs/protocol.md §4, the implementation's
    /// `Drop for Bh`): `fetch_or(PENDING | DELETED)` (step `bh_delete`), push if PENDING was clear, then notify.
    /// The next dequeue sees DELETED and does not call it.
    Delete(u8),
}

/// A planted protocol bug. The names are the `aioctx_bug` cfg values of the implementation
/// (`--cfg aioctx_bug="<name>"`) and the Promela `BUG_<NAME>` macros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// poll arms `notify_me` and waits without re-checking `notified` (a notify that came while
    /// `notify_me` was 0 wrote no event): lost wakeup.
    PollNoRecheckNotified,
    /// `notify_accept` clears `notified` after the BH scan instead of before: a notify between the scan
    /// and the accept is forgotten: lost wakeup. (Blocking poll only.)
    AcceptAfterScan,
    /// The blocking poll drains the eventfd after the BH scan instead of before (QEMU's order,
    /// docs/protocol.md §7.2): a poll running while an external loop waits eats the kick meant for
    /// that wait (promela/external.pml): lost wakeup.
    DrainAfterScan,
    /// notify skips the event write when `notified` was already set (QEMU's BUG2): a stale `notified`
    /// hides a later notify from a waiter that does not re-check `notified` (the external loop).
    SkipEventWhenNotified,
    /// MODEL ONLY (not an `aioctx_bug` value): the notifier's read handler never drains the eventfd, so
    /// every later wait returns at once. It exists to show that `p_no_busy_loop` is live.
    NoEventDrain,
}

impl Bug {
    /// Every variant.
    pub const ALL: &'static [Bug] = &[
        Bug::PollNoRecheckNotified,
        Bug::AcceptAfterScan,
        Bug::DrainAfterScan,
        Bug::SkipEventWhenNotified,
        Bug::NoEventDrain,
    ];

    /// The cfg value / Promela macro suffix.
    pub const fn as_str(self) -> &'static str {
        match self {
            Bug::PollNoRecheckNotified => "poll_no_recheck_notified",
            Bug::AcceptAfterScan => "accept_after_scan",
            Bug::DrainAfterScan => "drain_after_scan",
            Bug::SkipEventWhenNotified => "skip_event_when_notified",
            Bug::NoEventDrain => "no_event_drain",
        }
    }

    /// Look a bug up by its cfg value.
    pub fn from_name(s: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|b| b.as_str() == s)
    }

    /// True for the variants that have an `aioctx_bug` cfg value in the implementation.
    pub const fn in_impl(self) -> bool {
        !matches!(self, Bug::NoEventDrain)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounded scenario: the threads that share one context, and the model variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scenario {
    /// Its name, `subject_condition` style.
    pub name: String,
    /// Pollers (thread ids `0..pollers.len()`).
    pub pollers: Vec<Poller>,
    /// Remote threads, each a sequence of operations (thread ids follow the pollers).
    pub remotes: Vec<Vec<Op>>,
    /// Number of bottom halves (ids `0..bhs`), all created idle (flags 0, off the list).
    pub bhs: u8,
    /// Userspace polling: the most `ctx_poll_userspace` rounds one `poll` may make (0 = polling off).
    /// Any number from 0 to this bound is allowed (the budget is time, which the model does not have).
    /// A count, not a `u8`: a recorded run's bound is the most rounds one of its polls made, which is
    /// the polling window divided by the cost of a round (hundreds in a 50 µs window on a fast machine).
    pub poll_rounds: u32,
    /// The blocking poll still calls the fd monitor when its timeout is 0 (user fd handlers exist, or
    /// the backend needs a wait); false models an otherwise empty context, which makes no syscall then.
    pub zero_timeout_wait: bool,
    /// The external loop's prepare re-checks `notified` after its fence (as a
    /// `ctx_poll_recheck_notified` step; true zeroes the timeout). On by default: the implementation's
    /// `NotifyState::prepare` does it (traced; docs/protocol.md §7.3). The first version of the
    /// protocol's prepare (and promela/external.pml's) does not, and then a bare notify made while
    /// `notify_me` was 0 is lost by the external loop (see the tests);
    /// [`Scenario::without_prepare_recheck`] models that.
    pub prepare_recheck_notified: bool,
    /// The external loop's check asks the fd monitor for readiness (a `ctx_poll_wait` with timeout 0
    /// after accept) and drains the notifier if it is readable, as the implementation's `check` does
    /// (it cannot see what the foreign wait returned). False: the foreign wait's readiness decides the
    /// drain, as in promela/external.pml.
    pub check_readiness_wait: bool,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
}

impl Scenario {
    /// A scenario with no threads; fill it with the builder methods.
    pub fn new(name: impl Into<String>) -> Scenario {
        Scenario {
            name: name.into(),
            pollers: Vec::new(),
            remotes: Vec::new(),
            bhs: 0,
            poll_rounds: 0,
            zero_timeout_wait: false,
            prepare_recheck_notified: true,
            check_readiness_wait: true,
            bug: None,
        }
    }

    /// Add a poller.
    pub fn poller(mut self, p: Poller) -> Scenario {
        self.pollers.push(p);
        self
    }

    /// Add a remote thread running `ops` in order.
    pub fn remote(mut self, ops: &[Op]) -> Scenario {
        self.remotes.push(ops.to_vec());
        self
    }

    /// Set the number of BHs.
    pub fn bhs(mut self, n: u8) -> Scenario {
        self.bhs = n;
        self
    }

    /// Enable userspace polling with up to `rounds` rounds per poll.
    pub fn polling(mut self, rounds: u32) -> Scenario {
        self.poll_rounds = rounds;
        self
    }

    /// The external loop's prepare re-checks `notified` (the default; the name gains
    /// `+prepare_recheck`).
    pub fn prepare_recheck(mut self) -> Scenario {
        self.prepare_recheck_notified = true;
        self.name = format!("{}+prepare_recheck", self.name);
        self
    }

    /// The external loop's prepare does not re-check `notified`: the protocol before
    /// docs/protocol.md §7.3, and promela/external.pml (the name gains `+no_prepare_recheck`).
    pub fn without_prepare_recheck(mut self) -> Scenario {
        self.prepare_recheck_notified = false;
        self.name = format!("{}+no_prepare_recheck", self.name);
        self
    }

    /// Plant a bug (the name gains `+<bug>`).
    pub fn with_bug(mut self, bug: Bug) -> Scenario {
        self.bug = Some(bug);
        self.name = format!("{}+{}", self.name, bug);
        self
    }

    /// Every poller loops `n` times instead of forever (finite traces for replay).
    pub fn loops(mut self, n: u8) -> Scenario {
        for p in &mut self.pollers {
            *p = match *p {
                Poller::Blocking(_) => Poller::Blocking(Loops::Times(n)),
                Poller::External(_) => Poller::External(Loops::Times(n)),
            };
        }
        self
    }

    /// Number of threads (pollers + remotes).
    pub fn threads(&self) -> usize {
        self.pollers.len() + self.remotes.len()
    }

    /// Panics with a clear message if the scenario refers to a BH that does not exist or has too many
    /// threads or BHs for the model's compact state.
    pub fn validate(&self) {
        assert!(self.threads() <= 16, "scenario {}: at most 16 threads", self.name);
        assert!(self.bhs <= 16, "scenario {}: at most 16 BHs", self.name);
        for ops in &self.remotes {
            for op in ops {
                if let Op::Schedule(b)
                | Op::ScheduleIdle(b)
                | Op::Oneshot(b)
                | Op::Cancel(b)
                | Op::Delete(b) = *op
                {
                    assert!(
                        b < self.bhs,
                        "scenario {}: {op:?} but only {} BHs",
                        self.name,
                        self.bhs
                    );
                }
            }
        }
    }

    // ---- named scenarios ----

    /// A blocking poll (looping forever) against a remote thread that calls a bare `notify()` twice.
    pub fn notify_vs_blocking_poll() -> Scenario {
        Scenario::new("notify_vs_blocking_poll")
            .poller(Poller::Blocking(Loops::Forever))
            .remote(&[Op::Notify, Op::Notify])
    }

    /// A blocking poll against a remote thread that schedules one BH.
    pub fn bh_schedule_vs_blocking_poll() -> Scenario {
        Scenario::new("bh_schedule_vs_blocking_poll")
            .poller(Poller::Blocking(Loops::Forever))
            .remote(&[Op::Schedule(0)])
            .bhs(1)
    }

    /// A blocking poll with userspace polling (up to 2 rounds) against a remote BH schedule.
    pub fn bh_schedule_during_userspace_polling() -> Scenario {
        Scenario::new("bh_schedule_during_userspace_polling")
            .poller(Poller::Blocking(Loops::Forever))
            .remote(&[Op::Schedule(0)])
            .bhs(1)
            .polling(2)
    }

    /// An external loop against a remote thread that schedules the same BH twice.
    pub fn bh_schedule_twice_vs_external_loop() -> Scenario {
        Scenario::new("bh_schedule_twice_vs_external_loop")
            .poller(Poller::External(Loops::Forever))
            .remote(&[Op::Schedule(0), Op::Schedule(0)])
            .bhs(1)
    }

    /// Two pollers on one context: an external loop, and a temporary second poller making two
    /// blocking polls (QEMU's temporary second waiter), against two schedules of one BH.
    pub fn two_pollers_external_and_poll() -> Scenario {
        Scenario::new("two_pollers_external_and_poll")
            .poller(Poller::External(Loops::Forever))
            .poller(Poller::Blocking(Loops::Times(2)))
            .remote(&[Op::Schedule(0), Op::Schedule(0)])
            .bhs(1)
    }

    /// A blocking poll against schedule + delete (the owner) and a racing cancel, plus an idle BH.
    pub fn schedule_cancel_delete() -> Scenario {
        Scenario::new("schedule_cancel_delete")
            .poller(Poller::Blocking(Loops::Forever))
            .remote(&[Op::Schedule(0), Op::Delete(0)])
            .remote(&[Op::Cancel(0), Op::ScheduleIdle(1)])
            .bhs(2)
    }

    /// Every named scenario (correct model).
    pub fn named() -> Vec<Scenario> {
        vec![
            Scenario::notify_vs_blocking_poll(),
            Scenario::bh_schedule_vs_blocking_poll(),
            Scenario::bh_schedule_during_userspace_polling(),
            Scenario::bh_schedule_twice_vs_external_loop(),
            Scenario::two_pollers_external_and_poll(),
            Scenario::schedule_cancel_delete(),
        ]
    }
}
