//! Running out of fds (EMFILE) is an `io::Error` from every constructor, never a panic, and the
//! process keeps working once fds are available again. A test binary of its own: it lowers
//! RLIMIT_NOFILE for the whole process.
#![allow(clippy::disallowed_types)] // tests, benches and examples use std directly: they never run under a checker

use aioctx::{AioContext, Backend};

fn set_nofile(soft: u64) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        let old = r.rlim_cur;
        r.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        old
    }
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// The tests of this binary change the process's fd limit: one at a time.
static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn emfile_is_an_error_not_a_panic() {
    let _one = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
    for b in [Backend::Ppoll, Backend::Epoll, Backend::Auto] {
        let mut ctxs = Vec::new();
        let old = set_nofile(open_fds() + 6);
        let err = loop {
            match AioContext::builder().backend(b.clone()).build() {
                Ok(c) => ctxs.push(c),
                Err(e) => break e,
            }
            assert!(ctxs.len() < 100, "the limit did not apply");
        };
        assert_eq!(err.raw_os_error().or(aioctx::sys::os_error(&err)), Some(libc::EMFILE), "{err}");
        // The contexts that were created still work.
        for c in &ctxs {
            c.bh_oneshot(|| {});
            assert!(c.poll(false));
        }
        drop(ctxs);
        set_nofile(old);
        let c = AioContext::builder().backend(b).build().expect("works again with fds available");
        assert!(!c.poll(false));
    }
}

/// ppoll(2) fails with EINVAL when asked to watch more fds than RLIMIT_NOFILE: a failure that
/// retrying cannot cure, so `poll` reports it (a panic naming the monitor: the monitor's own
/// call failed), never retrying it as if interrupted nor taking it for a wait that found nothing.
#[test]
fn ppoll_over_the_fd_limit_is_reported_not_retried() {
    use aioctx::FdHandler;
    use std::os::fd::AsRawFd;
    let _one = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = AioContext::builder().backend(Backend::Ppoll).build().unwrap();
    if ctx.backend_name() != "ppoll" {
        return; // a build that forces another backend
    }
    let pairs: Vec<_> = (0..3).map(|_| std::os::unix::net::UnixStream::pair().unwrap()).collect();
    for (r, _) in &pairs {
        ctx.set_fd_handler(r.as_raw_fd(), FdHandler::new().on_read(|_| {})).unwrap();
    }
    let old = set_nofile(2); // 4 pollfds (3 handlers and the notifier) over a limit of 2
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.poll(false)));
    set_nofile(old);
    let msg = r.map(|p| format!("returned {p}")).expect_err("ppoll over the fd limit");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("ppoll wait failed"), "{msg}");
    for (r, _) in &pairs {
        ctx.remove_fd_handler(r.as_raw_fd()).unwrap();
    }
    assert!(!ctx.poll(false), "the context works again under the old limit");
}
