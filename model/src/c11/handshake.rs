//! The protocol's litmus programs: the wake-up handshake and the BH list, each access and fence
//! labelled with the code site it stands for and carrying the code's ordering (a test in
//! mutants/tests/c11_sites.rs checks both against `aioctx-mutants sites`).
//!
//! | program | threads | property | sites |
//! |---|---|---|---|
//! | [`bh_schedule_vs_blocking_poll`] | scheduler (enqueue, push, notify), home (disarm, accept, scan, compute_timeout, arm, re-check, block) | `p_no_lost_wakeup` | notify, accept, disarm, arm, enqueue, push, poll (take, dequeue), pending, classify |
//! | [`timer_mod_racing_bh`] | scheduler, timer mover (`earliest` hint, notify), home (as above, and the timer hint in compute_timeout) | `p_no_lost_wakeup` | the above and timer::arm, timer::earliest |
//! | [`bh_schedule_vs_polling_poll`], [`timer_mod_racing_bh_polling`] | as above, the next poll polling in userspace first (one round reading `notified`) | `p_no_lost_wakeup` | the above and poll::try_poll_mode |
//! | [`external_loop_wait_vs_bh`] | scheduler, home as an external loop (check, accept, scan, prepare, compute_timeout, its own wait) | `p_no_lost_wakeup` | notify, accept, check, prepare, enqueue, push, poll, pending, classify |
//! | [`bh_dequeue_vs_repush`] | home dequeue (read `next`, then clear the flags), scheduler (enqueue, push) | `p_bh_never_on_list_twice` | poll::load, poll::swap#2, enqueue, push |
//! | [`bh_drop_all_vs_repush`] | home `drop_all` (take the list, read `next`, clear the flags), scheduler | `p_bh_never_on_list_twice` | drop_all, enqueue, push |
//!
//! Values: a BH pointer is its number (`b` = 1, `c` = 2), null is 0; `eventfd` is the counter; the
//! flag bits are aioctx's ([`aioctx::trace::bh_flags`]). A home thread blocks forever iff its path
//! reaches the wait with an infinite timeout and the counter's final value is 0 (module docs of
//! [`crate::c11`]).

use super::program::e::*;
use super::program::{Expr, Instr, Order, Outcome, Program, RmwOp, Thread};
use aioctx::trace::bh_flags::{BH_DELETED, BH_IDLE, BH_PENDING, BH_SCHEDULED};
use Instr::*;
use Order::*;

const B: u64 = 1;
const C: u64 = 2;
const NEVER: u64 = u64::MAX;
const DEADLINE: u64 = 1000;
const P: u64 = BH_PENDING as u64;
const S: u64 = BH_SCHEDULED as u64;
const D: u64 = BH_DELETED as u64;
const I: u64 = BH_IDLE as u64;

fn ld(site: &'static str, loc: &'static str, ord: Order, dst: &'static str) -> Instr {
    Load { site: Some(site), loc, ord, dst }
}
fn st(site: &'static str, loc: &'static str, ord: Order, val: Expr) -> Instr {
    Store { site: Some(site), loc, ord, val }
}
fn rmw(site: &'static str, loc: &'static str, op: RmwOp, ord: Order, dst: &'static str) -> Instr {
    Rmw { site: Some(site), loc, op, ord, fail: Relaxed, dst }
}
fn fence(site: &'static str, ord: Order) -> Instr {
    Fence { site: Some(site), ord }
}
fn when(cond: Expr, then: Vec<Instr>) -> Instr {
    If { cond, then, els: vec![] }
}
fn set(dst: &'static str, v: Expr) -> Instr {
    Let { dst, val: v }
}

/// `push(bh_list, b)` (impl/src/bh.rs): the CAS loop unrolled twice; a second failure needs two
/// other writes of `bh_list` between the load and the CAS, which no program here has (assumed).
fn push() -> Vec<Instr> {
    let cas = |expected: &'static str, dst| Rmw {
        site: Some("bh::push::compare_exchange_weak#1"),
        loc: "bh_list",
        op: RmwOp::Cas(r(expected), c(B)),
        ord: Release,
        fail: Relaxed,
        dst,
    };
    vec![
        ld("bh::push::load#1", "bh_list", Relaxed, "head"),
        st("bh::push::store#1", "b.next", Relaxed, r("head")),
        cas("head", "seen"),
        when(
            ne(r("seen"), r("head")),
            vec![
                st("bh::push::store#1", "b.next", Relaxed, r("seen")),
                cas("seen", "seen2"),
                Assume(eq(r("seen2"), r("seen"))),
            ],
        ),
    ]
}

/// `enqueue(b, new)`: fetch_or, push if PENDING was clear (no notify: see [`notify`]).
fn enqueue(new: u64) -> Vec<Instr> {
    vec![
        rmw("bh::enqueue::fetch_or#1", "b.flags", RmwOp::FetchOr(c(P | new)), AcqRel, "old"),
        when(eq(and(r("old"), c(P)), c(0)), push()),
    ]
}

/// `NotifyState::notify`.
fn notify() -> Vec<Instr> {
    vec![
        fence("notify::notify::fence#1", Release),
        rmw("notify::notify::swap#1", "notified", RmwOp::Swap(c(1)), Relaxed, "n_old"),
        fence("notify::notify::fence#2", SeqCst),
        ld("notify::notify::load#1", "notify_me", Relaxed, "me"),
        when(
            ne(r("me"), c(0)),
            // The eventfd write: a kernel object behind a lock (an AcqRel RMW), not a code site.
            vec![Rmw {
                site: None,
                loc: "eventfd",
                op: RmwOp::FetchAdd(c(1)),
                ord: AcqRel,
                fail: Relaxed,
                dst: "ev",
            }],
        ),
    ]
}

/// A remote `Bh::schedule`: enqueue(SCHEDULED) (which notifies).
fn scheduler() -> Thread {
    let mut code = enqueue(S);
    code.extend(notify());
    Thread { name: "scheduler", code }
}

/// `NotifyState::accept`.
fn accept() -> Vec<Instr> {
    vec![
        rmw("notify::accept::swap#1", "notified", RmwOp::Swap(c(0)), Relaxed, "acc"),
        fence("notify::accept::fence#1", SeqCst),
    ]
}

/// `HomeBhs::poll` on a list that holds at most `b`: take the list; dequeue `b` if taken. Sets
/// `taken` (the BH's pointer or 0).
fn scan() -> Vec<Instr> {
    vec![
        rmw("bh::poll::swap#1", "bh_list", RmwOp::Swap(c(0)), Acquire, "taken"),
        when(
            ne(r("taken"), c(0)),
            vec![
                ld("bh::poll::load#1", "b.next", Relaxed, "nx"),
                rmw("bh::poll::swap#2", "b.flags", RmwOp::Swap(c(0)), AcqRel, "f"),
            ],
        ),
    ]
}

/// `compute_timeout`'s BH half (`HomeBhs::pending`, the slice queue being empty): `busy` = 1 iff a
/// scheduled, not deleted BH is on `bh_list`.
fn pending() -> Vec<Instr> {
    vec![
        set("busy", c(0)),
        ld("bh::pending::load#1", "bh_list", Acquire, "pl"),
        when(
            ne(r("pl"), c(0)),
            vec![
                ld("bh::classify::load#1", "b.flags", Relaxed, "pf"),
                when(eq(and(r("pf"), c(S | D)), c(S)), vec![set("busy", c(1))]),
                ld("bh::classify::load#2", "b.next", Acquire, "pn"),
            ],
        ),
    ]
}

/// Poll step 5 (`NotifyState::arm`) and the wait: `blocked` = 1 iff the re-check read false.
fn arm_and_wait() -> Vec<Instr> {
    vec![
        ld("notify::arm::load#1", "notify_me", Relaxed, "me1"),
        st("notify::arm::store#1", "notify_me", Relaxed, add(r("me1"), c(2))),
        fence("notify::arm::fence#1", SeqCst),
        ld("notify::arm::load#2", "notified", Relaxed, "rc"),
        when(eq(r("rc"), c(0)), vec![set("blocked", c(1))]),
    ]
}

/// The end of one blocking poll (disarm, accept, the BH scan) and the next one up to its wait; with
/// `polling`, the next poll first polls in userspace (one round of `try_poll_mode` reading
/// `notified` with `notify_me` still 0: a `true` ends the poll without arming).
fn home(timer: bool, polling: bool) -> Thread {
    let mut code = vec![
        set("blocked", c(0)),
        ld("notify::disarm::load#1", "notify_me", Relaxed, "me0"),
        st("notify::disarm::store#1", "notify_me", Release, sub(r("me0"), c(2))),
    ];
    code.extend(accept());
    code.extend(scan());
    code.extend(pending());
    if timer {
        code.push(ld("timer::earliest::load#1", "earliest", Relaxed, "deadline"));
    } else {
        code.push(set("deadline", c(NEVER)));
    }
    code.push(set("polled", c(0)));
    if polling {
        code.push(when(
            and(eq(r("busy"), c(0)), eq(r("deadline"), c(NEVER))),
            vec![ld("poll::try_poll_mode::load#2", "notified", Relaxed, "polled")],
        ));
    }
    // A finite timeout (the timer's deadline) is a wait that ends by itself: never a lost wakeup.
    code.push(when(
        and(and(eq(r("busy"), c(0)), eq(r("deadline"), c(NEVER))), eq(r("polled"), c(0))),
        arm_and_wait(),
    ));
    Thread { name: "home", code }
}

fn lost_wakeup_bh(o: &Outcome) -> bool {
    o.reg("home", "blocked") == Some(1)
        && o.mem("eventfd") == 0
        && o.reg("home", "taken") == Some(0)
}

/// (a) A remote BH schedule against the home thread's loop: the poll that ends (disarm from
/// `notify_me == 2`, accept, BH scan) and the next blocking poll (compute_timeout, arm, fence,
/// re-check, wait). `p_no_lost_wakeup`: the home thread never blocks on a zero eventfd while the
/// BH it did not take stays scheduled.
pub fn bh_schedule_vs_blocking_poll() -> Program {
    Program {
        name: "bh_schedule_vs_blocking_poll",
        init: vec![
            ("notify_me", 2),
            ("notified", 0),
            ("bh_list", 0),
            ("b.flags", 0),
            ("b.next", 0),
            ("eventfd", 0),
        ],
        threads: vec![scheduler(), home(false, false)],
        property: "p_no_lost_wakeup",
        outcome: lost_wakeup_bh,
    }
}

/// (b) model/tests/support `timer_mod_racing_bh` as three threads: a remote BH schedule, a remote
/// `Timer::mod_ns` lowering the Relaxed `earliest` hint (under the timers lock, which the home
/// thread does not take) and notifying, and the home loop of (a) whose compute_timeout also reads
/// the hint. `p_no_lost_wakeup`: the home thread never waits with an infinite timeout on a zero
/// eventfd (the timer is armed in every execution, so such a wait never ends).
pub fn timer_mod_racing_bh() -> Program {
    timer_program("timer_mod_racing_bh", false)
}

/// (b') [`timer_mod_racing_bh`] with one round of userspace polling before the arm: the reads
/// between accept and the arm that `notify::accept::fence#1:fence=AcqRel`'s argument has to cover
/// (mutants/SURVIVORS.md; the device poll handlers are not modelled).
pub fn timer_mod_racing_bh_polling() -> Program {
    timer_program("timer_mod_racing_bh_polling", true)
}

/// (a') [`bh_schedule_vs_blocking_poll`] with one round of userspace polling before the arm.
pub fn bh_schedule_vs_polling_poll() -> Program {
    Program {
        name: "bh_schedule_vs_polling_poll",
        threads: vec![scheduler(), home(false, true)],
        ..bh_schedule_vs_blocking_poll()
    }
}

fn timer_program(name: &'static str, polling: bool) -> Program {
    let mut mover = vec![
        ld("timer::arm::load#1", "earliest", Relaxed, "old_earliest"),
        st("timer::arm::store#1", "earliest", Relaxed, c(DEADLINE)),
    ];
    mover.push(when(lt(c(DEADLINE), r("old_earliest")), notify()));
    Program {
        name,
        init: vec![
            ("notify_me", 2),
            ("notified", 0),
            ("bh_list", 0),
            ("b.flags", 0),
            ("b.next", 0),
            ("eventfd", 0),
            ("earliest", NEVER),
        ],
        threads: vec![scheduler(), Thread { name: "timer", code: mover }, home(true, polling)],
        property: "p_no_lost_wakeup",
        outcome: |o| o.reg("home", "blocked") == Some(1) && o.mem("eventfd") == 0,
    }
}

/// (c) An external loop that just waits (issue 13): `check` (clear bit 0 of `notify_me`), accept,
/// dispatch's BH scan, then `prepare` (set bit 0, fence, read `notified`), compute_timeout, and its
/// own wait on the context's fd, against a remote BH schedule. `p_no_lost_wakeup` as in (a).
pub fn external_loop_wait_vs_bh() -> Program {
    let mut code = vec![
        set("blocked", c(0)),
        ld("notify::check::load#1", "notify_me", Relaxed, "v0"),
        st("notify::check::store#1", "notify_me", Release, and(r("v0"), c(!1))),
    ];
    code.extend(accept());
    code.extend(scan());
    code.extend([
        ld("notify::prepare::load#1", "notify_me", Relaxed, "v1"),
        st("notify::prepare::store#1", "notify_me", Relaxed, or(r("v1"), c(1))),
        fence("notify::prepare::fence#1", SeqCst),
        ld("notify::prepare::load#2", "notified", Relaxed, "n"),
    ]);
    code.extend(pending());
    code.push(when(and(eq(r("n"), c(0)), eq(r("busy"), c(0))), vec![set("blocked", c(1))]));
    Program {
        name: "external_loop_wait_vs_bh",
        init: vec![
            ("notify_me", 1),
            ("notified", 0),
            ("bh_list", 0),
            ("b.flags", 0),
            ("b.next", 0),
            ("eventfd", 0),
        ],
        threads: vec![scheduler(), Thread { name: "home", code }],
        property: "p_no_lost_wakeup",
        outcome: lost_wakeup_bh,
    }
}

fn repusher() -> Thread {
    // The notify that follows is irrelevant to the property (it reads nothing of the BH).
    Thread { name: "scheduler", code: enqueue(S) }
}

/// `p_bh_never_on_list_twice`: the home thread's read of `b.next` (the rest of its slice) must not
/// read the re-push's write (`c`, the head of `bh_list`): then `c` would be in the home queue and
/// on `bh_list` at once.
fn linked_twice(o: &Outcome) -> bool {
    o.reg("home", "nx").is_some_and(|n| n != 0)
}

/// (d) The load-buffering shape of `next`: the home thread dequeues `b` (the last of its slice:
/// `b.next == 0`) by reading `next` and then clearing the flags; a remote schedule sets PENDING
/// again, and if it was clear pushes `b` on `bh_list` (which holds `c`), writing `b.next = c`.
pub fn bh_dequeue_vs_repush() -> Program {
    Program {
        name: "bh_dequeue_vs_repush",
        init: vec![("b.flags", P | S), ("b.next", 0), ("bh_list", C)],
        threads: vec![
            Thread {
                name: "home",
                code: vec![
                    ld("bh::poll::load#1", "b.next", Relaxed, "nx"),
                    rmw("bh::poll::swap#2", "b.flags", RmwOp::Swap(c(0)), AcqRel, "f"),
                ],
            },
            repusher(),
        ],
        property: "p_bh_never_on_list_twice",
        outcome: linked_twice,
    }
}

/// (d') The same pair in `HomeBhs::drop_all` (the context going away): take `bh_list`, then for
/// `b` (in the slice queue) read `next` and clear the flags with `fetch_and`.
pub fn bh_drop_all_vs_repush() -> Program {
    Program {
        name: "bh_drop_all_vs_repush",
        init: vec![("b.flags", P | S), ("b.next", 0), ("bh_list", C)],
        threads: vec![
            Thread {
                name: "home",
                code: vec![
                    rmw("bh::drop_all::swap#1", "bh_list", RmwOp::Swap(c(0)), Acquire, "l"),
                    ld("bh::drop_all::load#1", "b.next", Relaxed, "nx"),
                    rmw(
                        "bh::drop_all::fetch_and#1",
                        "b.flags",
                        RmwOp::FetchAnd(c(!(P | S | I))),
                        AcqRel,
                        "f",
                    ),
                ],
            },
            repusher(),
        ],
        property: "p_bh_never_on_list_twice",
        outcome: linked_twice,
    }
}

/// Every protocol program.
pub fn all() -> Vec<Program> {
    vec![
        bh_schedule_vs_blocking_poll(),
        bh_schedule_vs_polling_poll(),
        timer_mod_racing_bh(),
        timer_mod_racing_bh_polling(),
        external_loop_wait_vs_bh(),
        bh_dequeue_vs_repush(),
        bh_drop_all_vs_repush(),
    ]
}

/// The program of that name.
pub fn by_name(name: &str) -> Option<Program> {
    all().into_iter().find(|p| p.name == name)
}
