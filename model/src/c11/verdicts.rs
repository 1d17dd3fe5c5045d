//! The recorded verdicts: for every mutant (`aioctx-mutants list`) of a site that a protocol
//! program labels, per program holding the site, whether RC11 and C11 allow the program's property
//! to be violated. `true` = a counterexample exists (the mutant is real for that program); `false` =
//! no consistent execution violates it (a machine-checked equivalence for that program only).
//!
//! Checked against the checker by `model/tests/c11.rs::recorded_verdicts` (release build, ~1 min:
//! `cargo test --release -p aioctx-model --test c11 -- --ignored recorded_verdicts`), and for
//! completeness (a new mutant of a labelled site needs a row) by `mutants/tests/c11_sites.rs`.
//! Regenerate the rows with the `c11_verdicts` example (its header shows the command).

/// One recorded verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The mutant's name (`notify::accept::swap#1:split`).
    pub mutant: &'static str,
    /// The program (a function name of [`super::handshake`]).
    pub program: &'static str,
    /// RC11 allows the violation.
    pub rc11: bool,
    /// C11 (no no-thin-air axiom) allows the violation.
    pub c11: bool,
}

const fn v(mutant: &'static str, program: &'static str, rc11: bool, c11: bool) -> Verdict {
    Verdict { mutant, program, rc11, c11 }
}

/// Every recorded verdict.
#[rustfmt::skip]
pub const VERDICTS: &[Verdict] = &[
    v("bh::enqueue::fetch_or#1:ord0=Release", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Release", "timer_mod_racing_bh", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Release", "external_loop_wait_vs_bh", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Release", "bh_dequeue_vs_repush", false, true),
    v("bh::enqueue::fetch_or#1:ord0=Release", "bh_drop_all_vs_repush", false, true),
    v("bh::enqueue::fetch_or#1:ord0=Acquire", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Acquire", "timer_mod_racing_bh", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Acquire", "external_loop_wait_vs_bh", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Acquire", "bh_dequeue_vs_repush", false, false),
    v("bh::enqueue::fetch_or#1:ord0=Acquire", "bh_drop_all_vs_repush", false, false),
    v("bh::enqueue::fetch_or#1:split", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::enqueue::fetch_or#1:split", "timer_mod_racing_bh", false, false),
    v("bh::enqueue::fetch_or#1:split", "external_loop_wait_vs_bh", false, false),
    v("bh::enqueue::fetch_or#1:split", "bh_dequeue_vs_repush", false, false),
    v("bh::enqueue::fetch_or#1:split", "bh_drop_all_vs_repush", false, false),
    v("bh::push::compare_exchange_weak#1:ord0=Relaxed", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::push::compare_exchange_weak#1:ord0=Relaxed", "timer_mod_racing_bh", false, false),
    v("bh::push::compare_exchange_weak#1:ord0=Relaxed", "external_loop_wait_vs_bh", false, false),
    v("bh::push::compare_exchange_weak#1:ord0=Relaxed", "bh_dequeue_vs_repush", false, false),
    v("bh::push::compare_exchange_weak#1:ord0=Relaxed", "bh_drop_all_vs_repush", false, false),
    v("bh::push::compare_exchange_weak#1:split", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::push::compare_exchange_weak#1:split", "timer_mod_racing_bh", false, false),
    v("bh::push::compare_exchange_weak#1:split", "external_loop_wait_vs_bh", false, false),
    v("bh::push::compare_exchange_weak#1:split", "bh_dequeue_vs_repush", false, false),
    v("bh::push::compare_exchange_weak#1:split", "bh_drop_all_vs_repush", false, false),
    v("bh::classify::load#2:ord0=Relaxed", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::classify::load#2:ord0=Relaxed", "timer_mod_racing_bh", false, false),
    v("bh::classify::load#2:ord0=Relaxed", "external_loop_wait_vs_bh", false, false),
    v("bh::pending::load#1:ord0=Relaxed", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::pending::load#1:ord0=Relaxed", "timer_mod_racing_bh", false, false),
    v("bh::pending::load#1:ord0=Relaxed", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#1:ord0=Relaxed", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::poll::swap#1:ord0=Relaxed", "timer_mod_racing_bh", false, false),
    v("bh::poll::swap#1:ord0=Relaxed", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#1:split", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::poll::swap#1:split", "timer_mod_racing_bh", false, false),
    v("bh::poll::swap#1:split", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#2:ord0=Release", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::poll::swap#2:ord0=Release", "timer_mod_racing_bh", false, false),
    v("bh::poll::swap#2:ord0=Release", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#2:ord0=Release", "bh_dequeue_vs_repush", false, false),
    v("bh::poll::swap#2:ord0=Acquire", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::poll::swap#2:ord0=Acquire", "timer_mod_racing_bh", false, false),
    v("bh::poll::swap#2:ord0=Acquire", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#2:ord0=Acquire", "bh_dequeue_vs_repush", false, true),
    v("bh::poll::swap#2:split", "bh_schedule_vs_blocking_poll", false, false),
    v("bh::poll::swap#2:split", "timer_mod_racing_bh", false, false),
    v("bh::poll::swap#2:split", "external_loop_wait_vs_bh", false, false),
    v("bh::poll::swap#2:split", "bh_dequeue_vs_repush", false, false),
    v("bh::drop_all::swap#1:ord0=Relaxed", "bh_drop_all_vs_repush", false, false),
    v("bh::drop_all::swap#1:split", "bh_drop_all_vs_repush", false, false),
    v("bh::drop_all::fetch_and#1:ord0=Release", "bh_drop_all_vs_repush", false, false),
    v("bh::drop_all::fetch_and#1:ord0=Acquire", "bh_drop_all_vs_repush", false, true),
    v("bh::drop_all::fetch_and#1:split", "bh_drop_all_vs_repush", false, false),
    v("notify::notify::fence#1:remove", "bh_schedule_vs_blocking_poll", false, true),
    v("notify::notify::fence#1:remove", "timer_mod_racing_bh", true, true),
    v("notify::notify::fence#1:remove", "external_loop_wait_vs_bh", false, false),
    v("notify::notify::swap#1:split", "bh_schedule_vs_blocking_poll", false, false),
    v("notify::notify::swap#1:split", "timer_mod_racing_bh", true, true),
    v("notify::notify::swap#1:split", "external_loop_wait_vs_bh", false, false),
    v("notify::notify::fence#2:remove", "bh_schedule_vs_blocking_poll", true, true),
    v("notify::notify::fence#2:remove", "timer_mod_racing_bh", true, true),
    v("notify::notify::fence#2:remove", "external_loop_wait_vs_bh", true, true),
    v("notify::notify::fence#2:fence=AcqRel", "bh_schedule_vs_blocking_poll", true, true),
    v("notify::notify::fence#2:fence=AcqRel", "timer_mod_racing_bh", true, true),
    v("notify::notify::fence#2:fence=AcqRel", "external_loop_wait_vs_bh", true, true),
    v("notify::accept::swap#1:split", "bh_schedule_vs_blocking_poll", true, true),
    v("notify::accept::swap#1:split", "timer_mod_racing_bh", true, true),
    v("notify::accept::swap#1:split", "external_loop_wait_vs_bh", false, false),
    v("notify::accept::fence#1:remove", "bh_schedule_vs_blocking_poll", false, true),
    v("notify::accept::fence#1:remove", "timer_mod_racing_bh", true, true),
    v("notify::accept::fence#1:remove", "external_loop_wait_vs_bh", false, false),
    v("notify::accept::fence#1:fence=AcqRel", "bh_schedule_vs_blocking_poll", false, false),
    v("notify::accept::fence#1:fence=AcqRel", "timer_mod_racing_bh", false, false),
    v("notify::accept::fence#1:fence=AcqRel", "external_loop_wait_vs_bh", false, false),
    v("notify::arm::fence#1:remove", "bh_schedule_vs_blocking_poll", true, true),
    v("notify::arm::fence#1:remove", "timer_mod_racing_bh", true, true),
    v("notify::arm::fence#1:fence=AcqRel", "bh_schedule_vs_blocking_poll", true, true),
    v("notify::arm::fence#1:fence=AcqRel", "timer_mod_racing_bh", true, true),
    v("notify::disarm::store#1:ord0=Relaxed", "bh_schedule_vs_blocking_poll", false, false),
    v("notify::disarm::store#1:ord0=Relaxed", "timer_mod_racing_bh", false, false),
    v("notify::prepare::fence#1:remove", "external_loop_wait_vs_bh", true, true),
    v("notify::prepare::fence#1:fence=AcqRel", "external_loop_wait_vs_bh", true, true),
    v("notify::check::store#1:ord0=Relaxed", "external_loop_wait_vs_bh", false, false),
];
