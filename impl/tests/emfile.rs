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

#[test]
fn emfile_is_an_error_not_a_panic() {
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
