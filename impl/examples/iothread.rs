//! The README example: an IoThread, an fd handler registered from main through the thread's handle,
//! a cross-thread bottom half, `run_sync`, `join`. Run: `cargo run -p aioctx --example iothread`
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use aioctx::{FdHandler, IoThread};

fn main() -> std::io::Result<()> {
    let io = IoThread::spawn("io0")?; // a thread running poll(true) until joined
    let (mut r, mut w) = UnixStream::pair()?;
    let fd = r.as_raw_fd();
    let (tx, rx) = mpsc::channel();

    // Registered from main, runs on io0 whenever `r` is readable (level-triggered: it reads).
    let tx2 = tx.clone();
    io.handle().set_fd_handler(
        fd,
        FdHandler::new_remote().on_read(move |_| {
            let mut buf = [0; 16];
            let n = r.read(&mut buf).unwrap();
            tx2.send(format!("fd handler read {:?}", String::from_utf8_lossy(&buf[..n]))).unwrap();
        }),
    )?;
    // A bottom half scheduled from main: the call wakes io0 and runs there.
    io.handle().bh_oneshot(move || {
        tx.send(format!("bottom half ran on {:?}", std::thread::current().name())).unwrap();
    });
    w.write_all(b"ping")?;
    for _ in 0..2 {
        println!("{}", rx.recv().unwrap()); // in either order
    }
    // run_sync: run a closure on io0 and wait for its result.
    let on = io.run_sync(|| std::thread::current().name().map(str::to_owned));
    println!("run_sync ran on {on:?}");
    io.handle().remove_fd_handler(fd)?; // drops the handler (and `r` with it) on io0
    io.join(); // a oneshot BH stops the loop
    Ok(())
}
