//! The axiomatic C11 checker over the protocol's litmus programs (aioctx_model::c11::handshake).
//! Each test fails (the property's name and a counterexample: events per thread, rf, mo) when RC11
//! allows the violation; `AIOCTX_C11_MUTANT=<mutant name>` applies an `aioctx-mutants` mutant to
//! the events labelled with its site.

use aioctx_model::c11::{assert_holds, handshake};

#[test]
fn bh_schedule_vs_blocking_poll() {
    assert_holds(&handshake::bh_schedule_vs_blocking_poll());
}

#[test]
fn timer_mod_racing_bh() {
    assert_holds(&handshake::timer_mod_racing_bh());
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
