//! A `poll(true)` that must not block forever in a property test: a helper thread notifies the context
//! after [`HANG`], and the case fails instead of hanging the test run.
#![allow(clippy::disallowed_types)]

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aioctx::{AioContext, Handle};

/// Turns a hang of `poll(true)` into a failure: while a poll is armed, a helper thread notifies the
/// context once the poll has lasted `HANG`, and the poll's caller then fails the case.
pub struct Rescuer {
    st: Arc<(Mutex<Rescue>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}
#[derive(Default)]
struct Rescue {
    armed: Option<(Handle, Instant)>,
    fired: bool,
    stop: bool,
}
/// How long a `poll(true)` may block before the case fails.
pub const HANG: Duration = Duration::from_secs(2);

impl Rescuer {
    /// Start the helper thread.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Rescuer {
        let st: Arc<(Mutex<Rescue>, Condvar)> = Arc::default();
        let s2 = st.clone();
        let thread = std::thread::spawn(move || {
            let (m, cv) = &*s2;
            let mut g = m.lock().unwrap();
            while !g.stop {
                let wait = match &g.armed {
                    Some((h, deadline)) if Instant::now() >= *deadline => {
                        h.notify();
                        g.fired = true;
                        Duration::from_millis(50)
                    }
                    Some((_, deadline)) => *deadline - Instant::now(),
                    None => Duration::from_secs(3600),
                };
                g = cv.wait_timeout(g, wait).unwrap().0;
            }
        });
        Rescuer { st, thread: Some(thread) }
    }
    /// `ctx.poll(true)`, failing the case if it had to be rescued.
    pub fn poll_true(&self, ctx: &AioContext) -> bool {
        let (m, cv) = &*self.st;
        {
            let mut g = m.lock().unwrap();
            g.armed = Some((ctx.handle().clone(), Instant::now() + HANG));
            g.fired = false;
            cv.notify_all();
        }
        let r = ctx.poll(true);
        let fired = {
            let mut g = m.lock().unwrap();
            g.armed = None;
            g.fired
        };
        assert!(!fired, "poll(true) blocked for {HANG:?} although the case says it cannot (lost wake-up or missed timer)");
        r
    }
}
impl Drop for Rescuer {
    fn drop(&mut self) {
        self.st.0.lock().unwrap().stop = true;
        self.st.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
