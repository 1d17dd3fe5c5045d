//! Drive an [`AioContext`] from inside a tokio current_thread runtime: the external-loop integration
//! (QEMU's GSource prepare / check / dispatch) over `tokio::io::unix::AsyncFd`.
//!
//! Run: `cargo run -p aioctx --example tokio_asyncfd`
//!
//! The context lives on the runtime's thread and `main` loops:
//!
//! ```text
//! t = ctx.prepare()        how long tokio may sleep (None: until the context's fd is readable)
//! wait for: the context's fd readable (AsyncFd) | tokio::time::sleep(t)
//! if ctx.check() { ctx.dispatch() }    BHs, ready fd handlers, expired timers
//! ```
//!
//! A std thread schedules a bottom half and writes to a UnixStream whose other end has an fd handler;
//! a timer fires on the context's clock; an ordinary tokio task runs on the same thread meanwhile.
//! The example exits once the three callbacks ran, and fails if that takes more than 5 s.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aioctx::{AioContext, FdHandler};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const BH_RAN: u32 = 1;
const FD_RAN: u32 = 2;
const TIMER_RAN: u32 = 4;
const ALL_RAN: u32 = BH_RAN | FD_RAN | TIMER_RAN;

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// The timeout `prepare` returned as a future: `None` never completes.
async fn sleep_for(t: Option<Duration>) {
    match t {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let ctx = AioContext::new()?;
    let ran = Arc::new(AtomicU32::new(0));

    // An fd handler: runs inside ctx.dispatch() when `r` is readable.
    let (mut r, mut w) = UnixStream::pair()?;
    r.set_nonblocking(true)?;
    let r_fd = r.as_raw_fd();
    let ran2 = ran.clone();
    ctx.set_fd_handler(
        r_fd,
        FdHandler::new().on_read(move |_| {
            let mut buf = [0u8; 64];
            match r.read(&mut buf) {
                Ok(n) => println!(
                    "fd handler on {}: read {:?}",
                    thread_name(),
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
            ran2.fetch_or(FD_RAN, Ordering::Relaxed);
        }),
    )?;

    // A timer on the context's clock: prepare() turns its deadline into the tokio sleep.
    let ran2 = ran.clone();
    let timer = ctx.timer_new(move |_| {
        println!("timer on {}: fired", thread_name());
        ran2.fetch_or(TIMER_RAN, Ordering::Relaxed);
    });
    timer.mod_in(Duration::from_millis(60));

    // Another thread: a bottom half through the context's handle, then a write to the socket.
    let handle = ctx.handle().clone();
    let ran2 = ran.clone();
    let writer = std::thread::Builder::new().name("writer".into()).spawn(
        move || -> io::Result<UnixStream> {
            std::thread::sleep(Duration::from_millis(20));
            println!("writer: scheduling a bottom half");
            handle.bh_oneshot(move || {
                println!("bottom half on {}: ran", thread_name());
                ran2.fetch_or(BH_RAN, Ordering::Relaxed);
            });
            std::thread::sleep(Duration::from_millis(20));
            println!("writer: writing to the socket");
            w.write_all(b"hello from writer")?;
            Ok(w) // kept open until the end: a closed peer would make `r` readable (EOF) forever
        },
    )?;

    // An ordinary tokio task, interleaved with the context on this one thread.
    let task = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        println!("tokio task on {}: ran", thread_name());
    });

    // The loop. The first prepare() moves a ppoll context to epoll, whose fd then covers the notifier
    // and every handler, so the AsyncFd is created after it (on the raw fd: the context owns it).
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut afd: Option<AsyncFd<RawFd>> = None;
    let mut iterations = 0u32;
    while ran.load(Ordering::Relaxed) != ALL_RAN {
        iterations += 1;
        let timeout = ctx.prepare();
        let fd = match &afd {
            Some(a) => a,
            // SAFETY:
            // - the fd is the context's epoll fd (prepare() above moved it off ppoll), open for as long
            //   as `ctx` lives; `afd` is dropped before `ctx` (explicitly at the end, and on an early
            //   return because it was declared after `ctx`);
            // - a context never leaves epoll once on it, so the fd keeps naming the same epoll
            //   instance (asserted on every iteration below).
            None => afd.insert(unsafe {
                AsyncFd::register_with_interest(ctx.as_raw_fd(), Interest::READABLE)?
            }),
        };
        assert_eq!(*fd.get_ref(), ctx.as_raw_fd(), "the context's fd changed under the AsyncFd");
        let guard = tokio::select! {
            g = fd.readable() => Some(g?),
            _ = sleep_for(timeout) => None,
            _ = tokio::time::sleep_until(give_up) => {
                ctx.check();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the callbacks did not all run within 5 s"));
            }
        };
        if ctx.check() {
            ctx.dispatch();
        } else if let Some(mut g) = guard {
            // Nothing ready behind the fd any more: clear tokio's (edge-triggered) readiness. Only
            // here: while work remains, the next readable() must return at once. clear_ready keeps a
            // readiness event that arrived after this guard was taken.
            g.clear_ready();
        }
    }
    println!("all callbacks ran after {iterations} loop iterations");

    task.await.expect("tokio task");
    let _w = writer.join().expect("writer thread")?;
    drop(afd); // deregister from tokio before the context closes its fd
    ctx.remove_fd_handler(r_fd)?;
    Ok(())
}
