//! Timer futures: [`sleep`], [`sleep_until`], [`timeout`], built on the context's [`Timer`]s (so
//! they follow its clock: a [`ModelClock`](crate::ModelClock) context sleeps in model time).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::{AioContext, Timer};

/// What a [`Sleep`] and its timer's callback share.
#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// The future of [`sleep`] / [`sleep_until`]: ready once its timer fired. Dropping it deletes the
/// timer. `!Send`: it lives on the home thread.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    timer: Timer,
    st: Rc<Shared>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline_ns", &self.timer.deadline_ns())
            .field("fired", &self.st.fired.get())
            .finish()
    }
}

impl Sleep {
    fn new(ctx: &AioContext, deadline_ns: u64) -> Sleep {
        let st = Rc::new(Shared::default());
        let st2 = st.clone();
        let timer = ctx.timer_new(move |_| {
            st2.fired.set(true);
            if let Some(w) = st2.waker.take() {
                w.wake();
            }
        });
        timer.mod_ns(deadline_ns);
        Sleep { timer, st }
    }

    /// The deadline, in the context's clock (ns), until the timer fired.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.timer.deadline_ns()
    }

    /// Move the deadline (in the context's clock, ns); a fired sleep becomes pending again.
    pub fn reset(&mut self, deadline_ns: u64) {
        self.st.fired.set(false);
        self.timer.mod_ns(deadline_ns);
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.st.fired.get() {
            return Poll::Ready(());
        }
        let w = self.st.waker.take();
        self.st.waker.set(Some(match w {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        }));
        Poll::Pending
    }
}

impl futures_core::FusedFuture for Sleep {
    /// Once the timer fired (until [`Sleep::reset`]).
    fn is_terminated(&self) -> bool {
        self.st.fired.get()
    }
}

impl AioContext {
    /// A future ready `d` from now (the context's clock). See [`sleep`].
    pub fn sleep(&self, d: Duration) -> Sleep {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Sleep::new(self, self.now_ns().saturating_add(ns))
    }

    /// A future ready at `deadline_ns` in the context's clock ([`Handle::now_ns`](crate::Handle::now_ns)).
    pub fn sleep_until(&self, deadline_ns: u64) -> Sleep {
        Sleep::new(self, deadline_ns)
    }

    /// `fut`, or [`Elapsed`] if it has not completed `d` from now. See [`timeout`].
    pub fn timeout<F: Future>(&self, d: Duration, fut: F) -> Timeout<F> {
        Timeout { fut, sleep: self.sleep(d) }
    }
}

/// A future ready `d` from now, on the context polling on this thread (QEMU
/// `qemu_co_sleep_ns`). A timer of that context: it fires in the poll that sees the deadline passed.
///
/// # Panics
///
/// If no context is polling on this thread (see [`spawn_local`](super::spawn_local)); use
/// [`AioContext::sleep`] there.
#[doc(alias = "qemu_co_sleep_ns")]
pub fn sleep(d: Duration) -> Sleep {
    AioContext::with_current(|c| c.sleep(d)).unwrap_or_else(|| super::no_context("sleep"))
}

/// A future ready at `deadline_ns` of the current context's clock.
///
/// # Panics
///
/// As [`sleep`].
pub fn sleep_until(deadline_ns: u64) -> Sleep {
    AioContext::with_current(|c| c.sleep_until(deadline_ns))
        .unwrap_or_else(|| super::no_context("sleep_until"))
}

/// The error of a [`timeout`] whose future did not complete in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// The future of [`timeout`].
    #[must_use = "futures do nothing unless awaited"]
    #[derive(Debug)]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The future first: one that completes in the poll where the deadline passed still wins.
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `fut`, or [`Elapsed`] if it has not completed `d` from now (the current context's clock).
///
/// # Panics
///
/// As [`sleep`].
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout { fut, sleep: sleep(d) }
}
