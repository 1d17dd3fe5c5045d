//! aioctx: QEMU's AioContext event loop in Rust.
//!
//! An [`AioContext`] is the event loop of one thread: bottom halves ([`Bh`]) scheduled from any
//! thread, fd handlers ([`FdHandler`]) over ppoll or epoll, timers ([`Timer`]), adaptive userspace
//! polling, and the wake-up protocol that makes cross-thread notification free while the loop is
//! busy. [`IoThread`] runs a context on its own thread. See README.md for the protocol and its models.
#![warn(missing_docs)]

/// Whether the planted protocol bug `$name` (an `aioctx_bug` value of the workspace Cargo.toml) is
/// in this run. `--cfg aioctx_bug="<name>"` plants it at compile time (the constant `cfg!`: in a
/// production build every `planted!` is `false` and costs nothing); a model-checker build (loom,
/// shuttle), or one with the test-only `planted-bugs` feature, also plants it at run time when
/// `AIOCTX_BUG=<name>` ([`sync::planted_at_run_time`]), so one build serves every planted bug
/// (ci/loom, ci/shuttle, the conformance replays).
macro_rules! planted {
    ($name:literal) => {
        (cfg!(aioctx_bug = $name) || $crate::sync::planted_at_run_time($name))
    };
}

mod bh;
mod ctx;
mod handler;
mod iothread;
pub mod kernel;
pub mod kind;
mod notify;
mod poll;
pub mod sync;
pub mod task;
mod timer;
pub mod trace;

#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
pub mod fdmon;
#[cfg(not(any(aioctx_loom, aioctx_shuttle)))]
pub mod sys;

pub use bh::{bh_flags, Bh, BhRef, BhScheduler};
pub use ctx::{AioContext, Backend, Builder, Handle};
pub use handler::{FdHandler, FdRef};
pub use iothread::IoThread;
pub use kernel::{Clock, FaultCounts, Faults, Interest, ModelClock, ModelKernel, MonotonicClock};
pub use kind::{Local, Remote};
pub use poll::{adjust_poll_ns, POLL_IDLE_INTERVAL_NS, POLL_INITIAL_NS};
pub use timer::{Timer, TimerRef};

/// The README's example is compiled and run as a doctest, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
