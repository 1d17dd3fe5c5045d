//! The virtqueue device of `virtqueue.rs`, written with async: one task per queue on the device's
//! IoThread, straight-line code that awaits a kick, processes the ring and signals completions (as
//! QEMU's virtio-blk dataplane does from coroutines). The guest, the ring, the workload and the
//! printed table are `virtqueue.rs`'s own (included below as a module), so the two forms compare
//! row by row.
//!
//! ```text
//! cargo run --release -p aioctx --example virtqueue_async [-- --requests N]
//! cargo run --release -p aioctx --example virtqueue        [-- --requests N]   # the callback form
//! ```
//!
//! Two ways for the task to learn of a kick, each in its own table block:
//!
//! - `AsyncFd::readable()` on the kick eventfd: the plain async form. An `AsyncFd` has read and write
//!   callbacks only, no `io_poll`, so the context has nothing to poll: polling stays off (the
//!   callback form's poll_max 0 rows).
//! - a waker-based notification: the device keeps `virtqueue.rs`'s handler shape (the eventfd read
//!   callback, `io_poll` on the ring, `io_poll_begin`/`end` switching the guest's kicks off and on)
//!   but its callbacks only wake the task, which does the work. Adaptive polling then works as in
//!   the callback form (the poll_max 32768 rows): the handlers are the loop's, the work is the
//!   task's.
//!
//! Each wake is a BH schedule on the device's own thread, so the task runs in the loop's next
//! iteration (never inside the handler): one more pass through `poll` per kick than the callback
//! form, which processes the ring inside the handler.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker

#[allow(dead_code)] // its `main` is the callback form's
#[path = "virtqueue.rs"]
mod virtqueue;

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use aioctx::task::AsyncFd;
use aioctx::{AioContext, FdHandler};
use virtqueue::{
    device_thread, first_two_cpus, pin_to, print_header, requests_arg, run_row, Queue,
};

/// The queue's kick eventfd, for an [`AsyncFd`] (the queue owns the fd).
struct KickFd(Arc<Queue>);

impl AsRawFd for KickFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.kick_fd()
    }
}

/// The device task, plain form: wait for the kick eventfd, drain it, serve the ring. Level-triggered
/// readiness: a kick that lands after the drain makes the fd readable again, so none is lost (a
/// later `process` that finds the ring empty returns at once).
async fn device_asyncfd(q: Arc<Queue>) -> io::Result<()> {
    let kick = AsyncFd::new(KickFd(q.clone()))?;
    loop {
        kick.readable().await?;
        q.kick.test_and_clear()?;
        q.process(false);
    }
}

/// What the device's handler callbacks tell its task (home thread only).
#[derive(Default)]
struct Kicked {
    /// A kick or a poll found work since the task last looked; `true` in `via_poll` if by polling.
    pending: Cell<bool>,
    via_poll: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Kicked {
    fn signal(&self, via_poll: bool) {
        self.pending.set(true);
        self.via_poll.set(via_poll);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready with `via_poll` once signalled.
    async fn wait(&self) -> bool {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                return Poll::Ready(self.via_poll.get());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// The device task, waker form: the handler (`virtqueue.rs`'s shape, registered here on the home
/// thread) wakes it; it serves the ring.
async fn device_polled(q: Arc<Queue>) -> io::Result<()> {
    let k = Rc::new(Kicked::default());
    let (q1, q2, q3, q4) = (q.clone(), q.clone(), q.clone(), q.clone());
    let (k1, k2) = (k.clone(), k.clone());
    let h = FdHandler::new()
        .on_read(move |_| {
            q1.kick.test_and_clear().expect("kick eventfd read");
            k1.signal(false);
        })
        .on_poll(move |_| q2.has_work(), move |_| k2.signal(true))
        .on_poll_begin(move |_| q3.disable_notify())
        .on_poll_end(move |_| q4.enable_notify());
    AioContext::with_current(|c| c.set_fd_handler(q.kick_fd(), h))
        .expect("on the device thread")?;
    loop {
        let via_poll = k.wait().await;
        q.process(via_poll);
    }
}

fn main() -> io::Result<()> {
    let requests = requests_arg("virtqueue_async");
    let cpus = first_two_cpus();
    if let Some((guest, _)) = cpus {
        pin_to(guest);
    }
    type Device =
        fn(Arc<Queue>) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>>>>;
    let forms: [(&str, &[u64], Device); 2] = [
        ("task awaiting AsyncFd::readable() on the kick eventfd", &[0], |q| {
            Box::pin(device_asyncfd(q))
        }),
        (
            "task woken by the device's handler (io_poll, io_poll_begin/end: polling works)",
            &[0, 32768],
            |q| Box::pin(device_polled(q)),
        ),
    ];
    for (what, polls, device) in forms {
        println!("device: {what}");
        print_header();
        for &poll_max in polls {
            for depth in [1u64, 32] {
                let io = device_thread(cpus, poll_max)?;
                let q = Queue::new()?;
                let q2 = q.clone();
                // One task per queue, spawned on the device's thread; it serves the queue until
                // the IoThread stops, whose context drops it (and its AsyncFd or handler) there.
                io.run_sync(move || {
                    AioContext::with_current(|c| {
                        let t = c.spawn_local(async move {
                            if let Err(e) = device(q2).await {
                                panic!("virtqueue device: {e}");
                            }
                        });
                        drop(t); // detached
                    })
                    .expect("run_sync runs on the device thread");
                });
                run_row(&io, &q, poll_max, depth, requests);
                io.join();
            }
        }
    }
    Ok(())
}
