//! aioctx-model: the abstract AioContext protocol (docs/protocol.md §2 and §4) as an explicit
//! transition system, used three ways:
//!
//! 1. [`explore()`]: exhaustive exploration of a bounded [`Scenario`], checking `p_no_lost_wakeup`,
//!    `p_no_busy_loop`, `p_deleted_bh_never_called` and `p_bh_never_on_list_twice` (the same names as
//!    the Promela models), with a counterexample trace for each violation.
//! 2. [`check_trace`]: the oracle for implementation runs and spin simulations: replays a recorded
//!    [`Trace`] and reports the first step the model cannot take, with the expected values and the state.
//! 3. [`enumerate_traces`]: every interleaving of a scenario (optionally preemption-bounded), to replay
//!    on the implementation with a step-gated scheduler.
//! 4. [`workload`]: generated workloads over the whole API, run on the real code, and the model of
//!    what the caller sees (poll's results, callbacks, re-entrancy, nested polls) as their oracle.
//!
//! And, apart from the transition system, [`c11`]: an axiomatic RC11 / C11 checker of litmus programs
//! of the handshake, labelled with the code's ordering sites so that `aioctx-mutants`' mutants apply
//! to them (the weak-memory executions the sequentially consistent model below leaves to others).
//!
//! Steps are the implementation's [`aioctx::trace::Step`] values, character for character the Promela
//! labels; the values each step records are listed in [`system`].
//!
//! # What is modelled
//!
//! - Shared state: `notify_me`, `notified`, `notifier` (eventfd counter non-zero), each BH's flags,
//!   `bh_list` (a LIFO), and ghosts: callbacks run per BH, a bare notify's pending request, a call of
//!   a BH whose dequeue saw DELETED.
//! - Threads (see [`Scenario`]): the blocking `poll` (compute_timeout, optional userspace polling
//!   rounds reading `notified` with `notify_me == 0`, arm `+= 2` / fence / re-check `notified`, wait,
//!   `-= 2`, accept, drain the notifier if the wait reported it, then the BH scan: the drain comes
//!   before the scan, as decided after promela/external.pml); the external-loop variant (prepare
//!   `|= 1` / fence / [re-check `notified`] / timeout, its own wait on the context's fd, check
//!   `&= !1`, accept, [readiness query], drain, dispatch), so two pollers can share a context;
//!   remote threads doing bare notifies, schedule / schedule_idle / oneshot, cancel, and delete (the
//!   owner's drop: enqueue(DELETED), i.e. `fetch_or(PENDING | DELETED)`, push if PENDING was clear,
//!   notify; as the implementation and docs/protocol.md §4).
//! - A bare notify carries a ghost request that only the scan sees (QEMU's `req` in its
//!   aio_notify_accept model): the work a notify announces may be invisible to compute_timeout.
//! - Planted bugs as runtime variants ([`Bug`]), named like the `aioctx_bug` cfg values.
//!
//! # What is not
//!
//! - Weak memory: every step is atomic and the model is sequentially consistent, so fences are steps
//!   with no effect (they exist so traces line up with the implementation). Fence placement is loom's
//!   job (and the Promela TSO model's).
//! - Time: there is no clock. A finite timeout (an idle BH pending) is a wait that may return at any
//!   moment; the userspace polling budget is "0 to `poll_rounds` rounds, any of them".
//! - Timers, user fd handlers, poll mode begin/end and the final poll, idle handler removal, nested
//!   polls (their own Promela models cover them); the notifier is the only fd.
//! - `notify_me` updates are single atomic steps. The implementation uses a plain load + store because
//!   only the home thread writes it; two pollers in one scenario interleave at step granularity,
//!   with no home-role lock (promela/external.pml has one), which allows every interleaving the lock
//!   allows and more.
//! - BH order within a slice is LIFO, as the implementation does today (docs/protocol.md §6.4
//!   leaves it unspecified).

#![warn(missing_docs)]

pub mod c11;
pub mod explore;
pub mod scenario;
pub mod system;
pub mod trace;
pub mod workload;

pub use explore::{explore, Exploration, Violation};
pub use scenario::{Bug, Loops, Op, Poller, Scenario};
pub use system::{Property, State, Timeout, Transition};
pub use trace::{
    check_trace, enumerate_traces, parse_spin_output, Bound, CheckReport, Key, ParseError,
    RejectReason, Rejection, Trace, TraceEvent, Traces,
};
