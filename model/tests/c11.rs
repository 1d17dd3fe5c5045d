//! The axiomatic C11 checker over the protocol's litmus programs (aioctx_model::c11::handshake).
//!
//! One test per program fails (the property's name and a counterexample: events per thread, rf,
//! mo) when RC11 allows the violation; `AIOCTX_C11_MUTANT=<mutant name>` applies an
//! `aioctx-mutants` mutant to the events labelled with its site (a test whose program does not hold
//! the site runs unchanged and says so). The `_finds_` tests plant a mutant and require the
//! counterexample, so each checker run here is shown able to fail.

use aioctx_model::c11::{
    assert_holds, check, handshake, verdicts::VERDICTS, Model, Mutant, Program, DEFAULT_CAP,
};

#[test]
fn bh_schedule_vs_blocking_poll() {
    assert_holds(&handshake::bh_schedule_vs_blocking_poll());
}

#[test]
fn timer_mod_racing_bh() {
    assert_holds(&handshake::timer_mod_racing_bh());
}

#[test]
fn bh_schedule_vs_polling_poll() {
    assert_holds(&handshake::bh_schedule_vs_polling_poll());
}

#[test]
fn timer_mod_racing_bh_polling() {
    assert_holds(&handshake::timer_mod_racing_bh_polling());
}

#[test]
fn external_loop_wait_vs_bh() {
    assert_holds(&handshake::external_loop_wait_vs_bh());
}

#[test]
fn bh_dequeue_vs_repush() {
    assert_holds(&handshake::bh_dequeue_vs_repush());
}

#[test]
fn bh_drop_all_vs_repush() {
    assert_holds(&handshake::bh_drop_all_vs_repush());
}

/// (RC11 allows the violation, C11 allows it) for `p` with mutant `m`, asserting the mutant
/// applies to `p` and that the checker found consistent executions at all.
fn verdict(p: &Program, m: &str) -> (bool, bool) {
    let (q, n) = p.mutated(&Mutant::parse(m).unwrap()).unwrap();
    assert!(n > 0, "{m}: its site is not in {}", p.name);
    let rc11 = check(&q, Model::Rc11, DEFAULT_CAP).unwrap();
    let c11 = check(&q, Model::C11, DEFAULT_CAP).unwrap();
    assert!(rc11.consistent > 0 && c11.consistent > 0, "{}: explored nothing", p.name);
    if let Some(x) = &rc11.example {
        println!("{m} in {}: {} violated under RC11:\n{x}", p.name, p.property);
    }
    (rc11.allowed(), c11.allowed())
}

/// The SeqCst fence of notify removed: the store-buffering lost wakeup (loom kills it too).
#[test]
fn bh_schedule_vs_blocking_poll_finds_notify_fence_removed() {
    let p = handshake::bh_schedule_vs_blocking_poll();
    assert_eq!(verdict(&p, "notify::notify::fence#2:remove"), (true, true));
    assert_eq!(verdict(&p, "notify::arm::fence#1:fence=AcqRel"), (true, true));
}

/// accept's swap as a load + store: `notified`'s modification order disagrees with `bh_list`'s
/// (impl/src/notify.rs `accept`). loom, shuttle and Miri cannot build this execution.
#[test]
fn bh_schedule_vs_blocking_poll_finds_accept_swap_split() {
    let p = handshake::bh_schedule_vs_blocking_poll();
    assert_eq!(verdict(&p, "notify::accept::swap#1:split"), (true, true));
}

/// notify's Release fence removed: the timer's Relaxed `earliest` reaches the home thread only
/// through the release sequence of the mover's swap, which the fence heads.
#[test]
fn timer_mod_racing_bh_finds_notify_release_fence_removed() {
    let p = handshake::timer_mod_racing_bh();
    assert_eq!(verdict(&p, "notify::notify::fence#1:remove"), (true, true));
}

/// The external loop that just waits (issue 13): prepare's fence removed is a lost wakeup.
#[test]
fn external_loop_wait_vs_bh_finds_prepare_fence_removed() {
    let p = handshake::external_loop_wait_vs_bh();
    assert_eq!(verdict(&p, "notify::prepare::fence#1:remove"), (true, true));
}

/// The load-buffering trio: allowed by C11, forbidden by RC11's no-thin-air axiom.
#[test]
fn bh_dequeue_vs_repush_finds_load_buffering_in_c11_only() {
    let p = handshake::bh_dequeue_vs_repush();
    assert_eq!(verdict(&p, "bh::poll::swap#2:ord0=Acquire"), (false, true));
    assert_eq!(verdict(&p, "bh::enqueue::fetch_or#1:ord0=Release"), (false, true));
    let d = handshake::bh_drop_all_vs_repush();
    assert_eq!(verdict(&d, "bh::drop_all::fetch_and#1:ord0=Acquire"), (false, true));
}

/// Every verdict of `aioctx_model::c11::verdicts` recomputed (release build: about 3 min of CPU;
/// debug: much longer, hence ignored by default).
#[test]
#[ignore = "run in release: cargo test --release -p aioctx-model --test c11 -- --ignored"]
fn recorded_verdicts() {
    let mut wrong = Vec::new();
    for v in VERDICTS {
        let p = handshake::by_name(v.program).unwrap_or_else(|| panic!("no program {}", v.program));
        let got = verdict(&p, v.mutant);
        if got != (v.rc11, v.c11) {
            wrong.push(format!(
                "{} in {}: recorded {:?}, checker {got:?}",
                v.mutant,
                v.program,
                (v.rc11, v.c11)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "recorded verdicts that the checker no longer gives:\n{}",
        wrong.join("\n")
    );
    println!("{} recorded verdicts hold", VERDICTS.len());
}
