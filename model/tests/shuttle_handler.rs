//! shuttle over the real code: fd handlers (handler.rs) removed by 4 threads while the home thread
//! dispatches them. Schedulers: PCT and random, each from a fixed seed (`support::shuttle_model`;
//! knobs `AIOCTX_SHUTTLE_SCHED` = `pct,random` by default, `_ITERS`, `_SEED`, `_DEPTH`). shuttle
//! has no weak memory: the fence bugs are loom's; the sequentially consistent ones are caught here
//! too, by at least one of the two schedulers. A failure prints shuttle's schedule string (replay
//! it with `shuttle::replay`). Built only with `--cfg aioctx_shuttle`.
#![cfg(aioctx_shuttle)]

mod support;

use support::{shuttle_model, Size};

#[test]
fn handler_removal_during_dispatch() {
    shuttle_model("handler_removal_during_dispatch", || {
        support::handler_removal_during_dispatch(Size::shuttle(4, 4))
    });
}
