//! An axiomatic C11 memory-model checker for the wake-up handshake: every candidate execution of a
//! small litmus program, kept or rejected by the axioms of RC11 (or of ISO C11/C++20 without
//! no-thin-air), and the protocol's programs ([`handshake`]) with the mutants of `aioctx-mutants`
//! applied to their labelled events.
//!
//! loom, shuttle and Miri build executions from interleavings: the modification orders of all
//! locations then follow one global order of the writes, and SC fences join a global clock. C11
//! allows more (a location's modification order may disagree with another's; an SC fence orders
//! only what `psc` says). Some ordering mutants survive them for that reason alone; here they meet
//! the model itself.
//!
//! # Programs
//!
//! A [`Program`] is a few threads of straight-line code: loads, stores, RMWs (swap, fetch_or /
//! and / add, compare-exchange), fences, each with an [`Order`], local `let`s and `if`s on the values
//! read, and `assume` (a bounded loop's last iteration). Each access or fence may carry the name
//! of the code site it stands for (`notify::accept::swap#1`, as `aioctx-mutants sites` prints
//! it); [`Program::mutated`] applies a mutant (`<site>:<spec>`, the specs of
//! `mutants/schema/mutant.rs`: `ord<k>=<o>`, `split`, `remove`, `fence=<o>`) to those events. The
//! question is an outcome predicate over the final state (the last write of each location in
//! modification order, and each thread's registers), herd's `exists` clause.
//!
//! # Candidate executions
//!
//! 1. Value domains: each location's initial value and every value some path writes, to a
//!    fixpoint (so a read can only return a value that some write of the program produces).
//! 2. Per thread, every path: each read returns any value of its domain; the branches follow.
//!    An RMW is two events, a read (its ordering's acquire half) and a write (the release half),
//!    related by `rmw`; a failed CAS is a read with the failure ordering. A split RMW (the mutant)
//!    is the same two events without `rmw`.
//! 3. Per combination of paths: every `rf` (each read reads a write of its location and value,
//!    the initial writes included, which are sb-before every event), then every `mo` (a total
//!    order of each location's writes, the initial write first).
//!
//! The count of candidates (every (paths, rf, mo) triple, before any axiom) is reported; the work
//! (rf choices plus full checks) is bounded by an explicit cap and exceeding it is an error, never a
//! partial "pass". Two prunings do not change the answer: an rf that fails no-thin-air or makes hb
//! cyclic is rejected before its mo's are enumerated, and an mo is only generated if it puts each
//! RMW's write right after the write its read reads from (atomicity) and agrees with hb on writes
//! (write-write coherence); both are implied by the axioms below.
//!
//! # Axioms (RC11: Lahav, Vafeiadis, Kang, Hur, Dreyer, "Repairing Sequential Consistency in
//! C/C++11", PLDI 2017, §3, with the paper's names)
//!
//! - `fr = rf⁻¹; mo` (from-read), `eco = (rf ∪ mo ∪ fr)⁺` (extended coherence order).
//! - `rs = [W]; (rf; rmw)*`: the release sequence of C++20 (P0982R1: a release write and the RMWs
//!   that follow it; RC11's `sb|loc` same-thread part is gone).
//! - `sw = [E⊒rel]; ([F]; sb)?; rs; rf; [R⊒rlx]; (sb; [F])?; [E⊒acq]` (synchronizes-with: a
//!   release write or a release fence before a write; an acquire read or an acquire fence after
//!   the read).
//! - `hb = (sb ∪ sw)⁺`.
//! - **Coherence**: `hb; eco?` is irreflexive.
//! - **Atomicity**: `rmw ∩ (fr; mo) = ∅` (nothing between an RMW's read and its write in mo).
//! - **SC**: `psc = psc_base ∪ psc_F` is acyclic, where `scb = sb ∪ sb|≠loc; hb; sb|≠loc ∪
//!   hb|loc ∪ mo ∪ fr`, `psc_base = ([E^sc] ∪ [F^sc]; hb?); scb; ([E^sc] ∪ hb?; [F^sc])`,
//!   `psc_F = [F^sc]; (hb ∪ hb; eco; hb); [F^sc]`. (A fence has no location: pairs with a fence
//!   are in `sb|≠loc`, never in `hb|loc`.)
//! - **No-thin-air**: `sb ∪ rf` is acyclic (RC11 only).
//!
//! [`Model::C11`] drops no-thin-air and keeps the rest: ISO C++20 (which adopted RC11's SC
//! semantics, P0668R5) and C11 as the standard's text allows, so load buffering (`LB`) is allowed.
//! Its out-of-thin-air values are limited to the values of the domain fixpoint above (a value no
//! write can produce is never read).
//!
//! # Blocking
//!
//! The eventfd is a location (`eventfd`): the notifier's write is an AcqRel `fetch_add(1)` (the
//! kernel takes a lock; the mutants never touch it). A blocking wait is not an event: the home
//! thread blocks iff its path reaches the wait, and the wait never returns iff the counter's final
//! value is 0 (no write ever comes). A lost wakeup is an outcome predicate over the final state:
//! the home thread blocks, the counter stays 0, and the work the notify announced is not
//! consumed.
//!
//! # Not modelled
//!
//! Non-atomic accesses and data races (every access here is atomic); mutexes (the timer's lock is
//! only on the notifier's side, the home thread reads `earliest` lock-free: the lock orders
//! nothing the program asks about); loops beyond what `assume` bounds; `compare_exchange_weak`'s
//! spurious failures (a CAS retry loop is unrolled as far as the program's writes can make it fail).

mod check;
pub mod handshake;
mod program;
pub mod verdicts;

pub use check::{check, Event, Execution, Kind, Model, Report, DEFAULT_CAP, MAX_EVENTS};
pub use program::{e, Expr, Instr, Mutant, Order, Outcome, Program, RmwOp, Spec, Thread};

/// Run `p` (with the mutant named by `AIOCTX_C11_MUTANT` applied, if it is set and its site is in
/// `p`) under RC11 and C11, print the counts, and panic with the property name and the first
/// counterexample if RC11 allows the outcome. Returns both reports.
///
/// # Panics
///
/// When RC11 allows the outcome (the property is violated), when the mutant name is malformed or
/// does not fit its site, or when the work cap is exceeded.
pub fn assert_holds(p: &Program) -> (Report, Report) {
    // The mutant runner's coverage pass (aioctx-mutants, tier `c11`): the sites this program
    // stands for, by name, one per line.
    if let Some(f) = std::env::var_os("AIOCTX_MUTANT_COVER") {
        use std::io::Write;
        let names: String = p.sites().iter().map(|(n, _)| format!("{n}\n")).collect();
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .and_then(|mut f| f.write_all(names.as_bytes()));
    }
    let (p, what) = match std::env::var("AIOCTX_C11_MUTANT") {
        Ok(m) if !m.is_empty() => {
            let mutant = Mutant::parse(&m).unwrap_or_else(|e| panic!("AIOCTX_C11_MUTANT: {e}"));
            let (q, n) = p.mutated(&mutant).unwrap_or_else(|e| panic!("AIOCTX_C11_MUTANT: {e}"));
            let what = if n == 0 {
                format!("mutant {m}: its site is not in this program (unchanged)")
            } else {
                format!("mutant {m} ({n} instruction(s))")
            };
            (q, what)
        }
        _ => (p.clone(), "the code's orderings".to_string()),
    };
    let started = std::time::Instant::now();
    let rc11 = check(&p, Model::Rc11, DEFAULT_CAP).unwrap_or_else(|e| panic!("{e}"));
    let c11 = check(&p, Model::C11, DEFAULT_CAP).unwrap_or_else(|e| panic!("{e}"));
    println!("{}: {what}", p.name);
    println!("  {rc11}");
    println!("  {c11}");
    println!("  ({} ms for both)", started.elapsed().as_millis());
    if let Some(x) = &c11.example {
        if rc11.example.is_none() {
            println!("  C11 (not RC11) allows {} violated:\n{x}", p.property);
            // `AIOCTX_C11_ISO=1` (the mutant runner's c11 tier): judge by ISO C11 as well, whose
            // executions include load buffering (an execution RC11 forbids, but the standard allows).
            if std::env::var_os("AIOCTX_C11_ISO").is_some_and(|v| v == "1") {
                panic!(
                    "{} violated in {} under ISO C11 only ({}; RC11 forbids it), counterexample:\n{x}",
                    p.property, p.name, what
                );
            }
        }
    }
    if let Some(x) = &rc11.example {
        panic!("{} violated in {} under RC11 ({}), counterexample:\n{x}", p.property, p.name, what);
    }
    (rc11, c11)
}

#[cfg(test)]
mod litmus {
    //! Classic litmus tests with their known verdicts (herd7's `c11` / RC11 results; the RC11
    //! paper's examples).
    use super::e::*;
    use super::*;
    use Instr::*;
    use Order::*;

    fn ld(loc: &'static str, ord: Order, dst: &'static str) -> Instr {
        Load { site: None, loc, ord, dst }
    }
    fn st(loc: &'static str, ord: Order, v: u64) -> Instr {
        Store { site: None, loc, ord, val: c(v) }
    }
    fn fence(ord: Order) -> Instr {
        Fence { site: None, ord }
    }
    fn t(name: &'static str, code: Vec<Instr>) -> Thread {
        Thread { name, code }
    }
    fn prog(name: &'static str, threads: Vec<Thread>, outcome: fn(&Outcome) -> bool) -> Program {
        Program { name, init: vec![], threads, property: "exists", outcome }
    }
    fn allowed(p: &Program, m: Model) -> bool {
        let r = check(p, m, DEFAULT_CAP).unwrap();
        assert!(
            r.consistent > 0,
            "{}: no consistent execution at all: the checker explored nothing",
            p.name
        );
        assert!(r.candidates >= r.consistent as u128);
        r.allowed()
    }
    fn both(p: &Program) -> (bool, bool) {
        (allowed(p, Model::Rc11), allowed(p, Model::C11))
    }

    fn sb(o_st: Order, o_ld: Order, f: Option<Order>) -> Program {
        let mid = |v: Vec<Instr>| v;
        let mk = |a: &'static str, b: &'static str| {
            let mut code = vec![st(a, o_st, 1)];
            if let Some(f) = f {
                code.push(fence(f));
            }
            code.push(ld(b, o_ld, "r"));
            mid(code)
        };
        prog("SB", vec![t("P0", mk("x", "y")), t("P1", mk("y", "x"))], |o| {
            o.reg("P0", "r") == Some(0) && o.reg("P1", "r") == Some(0)
        })
    }

    #[test]
    fn sb_relaxed_allowed() {
        assert_eq!(both(&sb(Relaxed, Relaxed, None)), (true, true));
    }

    #[test]
    fn sb_rel_acq_allowed() {
        assert_eq!(both(&sb(Release, Acquire, None)), (true, true));
    }

    #[test]
    fn sb_seqcst_accesses_forbidden() {
        assert_eq!(both(&sb(SeqCst, SeqCst, None)), (false, false));
    }

    #[test]
    fn sb_sc_fences_forbidden() {
        assert_eq!(both(&sb(Relaxed, Relaxed, Some(SeqCst))), (false, false));
    }

    #[test]
    fn sb_acqrel_fences_allowed() {
        assert_eq!(both(&sb(Relaxed, Relaxed, Some(AcqRel))), (true, true));
    }

    /// One SC fence and one side without: still allowed.
    #[test]
    fn sb_one_sc_fence_allowed() {
        let p = prog(
            "SB+sc-fence+po",
            vec![
                t("P0", vec![st("x", Relaxed, 1), fence(SeqCst), ld("y", Relaxed, "r")]),
                t("P1", vec![st("y", Relaxed, 1), ld("x", Relaxed, "r")]),
            ],
            |o| o.reg("P0", "r") == Some(0) && o.reg("P1", "r") == Some(0),
        );
        assert_eq!(both(&p), (true, true));
    }

    fn mp(w: Order, r: Order) -> Program {
        prog(
            "MP",
            vec![
                t("P0", vec![st("x", Relaxed, 1), st("y", w, 1)]),
                t("P1", vec![ld("y", r, "a"), ld("x", Relaxed, "b")]),
            ],
            |o| o.reg("P1", "a") == Some(1) && o.reg("P1", "b") == Some(0),
        )
    }

    #[test]
    fn mp_rel_acq_forbidden() {
        assert_eq!(both(&mp(Release, Acquire)), (false, false));
    }

    #[test]
    fn mp_relaxed_allowed() {
        assert_eq!(both(&mp(Relaxed, Relaxed)), (true, true));
        assert_eq!(both(&mp(Release, Relaxed)), (true, true));
        assert_eq!(both(&mp(Relaxed, Acquire)), (true, true));
    }

    /// MP with fences: a release fence before the flag, an acquire fence after reading it.
    #[test]
    fn mp_fences_forbidden() {
        let p = prog(
            "MP+fences",
            vec![
                t("P0", vec![st("x", Relaxed, 1), fence(Release), st("y", Relaxed, 1)]),
                t("P1", vec![ld("y", Relaxed, "a"), fence(Acquire), ld("x", Relaxed, "b")]),
            ],
            |o| o.reg("P1", "a") == Some(1) && o.reg("P1", "b") == Some(0),
        );
        assert_eq!(both(&p), (false, false));
    }

    /// C++20 release sequence: a relaxed RMW of another thread continues it.
    #[test]
    fn mp_release_sequence_through_rmw_forbidden() {
        let p = prog(
            "MP+rs-rmw",
            vec![
                t("P0", vec![st("x", Relaxed, 1), st("y", Release, 1)]),
                t(
                    "P1",
                    vec![Rmw {
                        site: None,
                        loc: "y",
                        op: RmwOp::FetchAdd(c(1)),
                        ord: Relaxed,
                        fail: Relaxed,
                        dst: "o",
                    }],
                ),
                t("P2", vec![ld("y", Acquire, "a"), ld("x", Relaxed, "b")]),
            ],
            |o| o.reg("P2", "a") == Some(2) && o.reg("P2", "b") == Some(0),
        );
        assert_eq!(both(&p), (false, false));
    }

    /// ... but a plain relaxed store of the same thread does not, in C++20 (it did in C++11/RC11).
    #[test]
    fn mp_release_sequence_broken_by_store_allowed() {
        let p = prog(
            "MP+rs-same-thread-store",
            vec![
                t("P0", vec![st("x", Relaxed, 1), st("y", Release, 1), st("y", Relaxed, 2)]),
                t("P1", vec![ld("y", Acquire, "a"), ld("x", Relaxed, "b")]),
            ],
            |o| o.reg("P1", "a") == Some(2) && o.reg("P1", "b") == Some(0),
        );
        assert_eq!(both(&p), (true, true));
    }

    fn lb(o: Order) -> Program {
        prog(
            "LB",
            vec![
                t("P0", vec![ld("x", o, "r"), st("y", Relaxed, 1)]),
                t("P1", vec![ld("y", Relaxed, "r"), st("x", Relaxed, 1)]),
            ],
            |o| o.reg("P0", "r") == Some(1) && o.reg("P1", "r") == Some(1),
        )
    }

    #[test]
    fn lb_allowed_in_c11_forbidden_in_rc11() {
        assert_eq!(both(&lb(Relaxed)), (false, true));
    }

    #[test]
    fn lb_with_acquire_still_c11_only() {
        // One acquire read alone does not synchronize with a relaxed store.
        assert_eq!(both(&lb(Acquire)), (false, true));
    }

    fn iriw(w: Order, r: Order, fences: bool) -> Program {
        let reader = |a: &'static str, b: &'static str| {
            let mut v = vec![ld(a, r, "a")];
            if fences {
                v.push(fence(SeqCst));
            }
            v.push(ld(b, r, "b"));
            v
        };
        prog(
            "IRIW",
            vec![
                t("W0", vec![st("x", w, 1)]),
                t("W1", vec![st("y", w, 1)]),
                t("R0", reader("x", "y")),
                t("R1", reader("y", "x")),
            ],
            |o| {
                o.reg("R0", "a") == Some(1)
                    && o.reg("R0", "b") == Some(0)
                    && o.reg("R1", "a") == Some(1)
                    && o.reg("R1", "b") == Some(0)
            },
        )
    }

    #[test]
    fn iriw_sc_forbidden() {
        assert_eq!(both(&iriw(SeqCst, SeqCst, false)), (false, false));
    }

    #[test]
    fn iriw_acquire_allowed() {
        // Not multi-copy atomic: C11 allows the readers to disagree on the order of the writes.
        assert_eq!(both(&iriw(Release, Acquire, false)), (true, true));
    }

    #[test]
    fn iriw_sc_fences_forbidden() {
        assert_eq!(both(&iriw(Relaxed, Relaxed, true)), (false, false));
    }

    /// 2+2W: two threads store to x and y in opposite orders; both final values the first store's.
    fn w22(o: Order) -> Program {
        prog(
            "2+2W",
            vec![
                t("P0", vec![st("x", o, 1), st("y", o, 2)]),
                t("P1", vec![st("y", o, 1), st("x", o, 2)]),
            ],
            |o| o.mem("x") == 1 && o.mem("y") == 1,
        )
    }

    #[test]
    fn w22_relaxed_and_release_allowed() {
        assert_eq!(both(&w22(Relaxed)), (true, true));
        assert_eq!(both(&w22(Release)), (true, true));
    }

    #[test]
    fn w22_sc_forbidden() {
        assert_eq!(both(&w22(SeqCst)), (false, false));
    }

    /// 2+2W with SC fences between the stores: forbidden by psc_F (`hb; eco; hb` between the fences).
    #[test]
    fn w22_sc_fences_forbidden() {
        let p = prog(
            "2+2W+fences",
            vec![
                t("P0", vec![st("x", Relaxed, 1), fence(SeqCst), st("y", Relaxed, 2)]),
                t("P1", vec![st("y", Relaxed, 1), fence(SeqCst), st("x", Relaxed, 2)]),
            ],
            |o| o.mem("x") == 1 && o.mem("y") == 1,
        );
        assert_eq!(both(&p), (false, false));
    }

    /// RWC (read-to-write causality) with SC fences: forbidden; with acquire/release only: allowed.
    fn rwc(f: Option<Order>) -> Program {
        let mid = |v: Vec<Instr>, last: Instr| {
            let mut v = v;
            if let Some(o) = f {
                v.push(fence(o));
            }
            v.push(last);
            v
        };
        prog(
            "RWC",
            vec![
                t("P0", vec![st("x", Relaxed, 1)]),
                t("P1", mid(vec![ld("x", Relaxed, "a")], ld("y", Relaxed, "b"))),
                t("P2", mid(vec![st("y", Relaxed, 1)], ld("x", Relaxed, "c"))),
            ],
            |o| {
                o.reg("P1", "a") == Some(1)
                    && o.reg("P1", "b") == Some(0)
                    && o.reg("P2", "c") == Some(0)
            },
        )
    }

    #[test]
    fn rwc_sc_fences_forbidden_acqrel_allowed() {
        assert_eq!(both(&rwc(Some(SeqCst))), (false, false));
        assert_eq!(both(&rwc(Some(AcqRel))), (true, true));
        assert_eq!(both(&rwc(None)), (true, true));
    }

    /// CoRR: two reads of one location in one thread never see its writes in the opposite order.
    #[test]
    fn corr_forbidden() {
        let p = prog(
            "CoRR",
            vec![
                t("P0", vec![st("x", Relaxed, 1)]),
                t("P1", vec![st("x", Relaxed, 2)]),
                t("P2", vec![ld("x", Relaxed, "a"), ld("x", Relaxed, "b")]),
                t("P3", vec![ld("x", Relaxed, "a"), ld("x", Relaxed, "b")]),
            ],
            |o| {
                o.reg("P2", "a") == Some(1)
                    && o.reg("P2", "b") == Some(2)
                    && o.reg("P3", "a") == Some(2)
                    && o.reg("P3", "b") == Some(1)
            },
        );
        assert_eq!(both(&p), (false, false));
        // The reads may disagree with the final value's write when they only see one each.
        let q = prog(
            "CoRR-single",
            vec![
                t("P0", vec![st("x", Relaxed, 1)]),
                t("P1", vec![ld("x", Relaxed, "a"), ld("x", Relaxed, "b")]),
            ],
            |o| o.reg("P1", "a") == Some(1) && o.reg("P1", "b") == Some(0),
        );
        assert_eq!(both(&q), (false, false));
    }

    /// CoWR: a thread's read after its own write never sees an mo-earlier write.
    #[test]
    fn cowr_forbidden() {
        let p = prog(
            "CoWR",
            vec![
                t("P0", vec![st("x", Relaxed, 1), ld("x", Relaxed, "r")]),
                t("P1", vec![st("x", Relaxed, 2)]),
            ],
            // Reading P1's 2 is fine when 2 is mo-after P0's 1; with 2 mo-before it, it is not.
            |o| o.reg("P0", "r") == Some(2) && o.mem("x") == 1,
        );
        assert_eq!(both(&p), (false, false));
        let mut later = p.clone();
        later.outcome = |o| o.reg("P0", "r") == Some(2) && o.mem("x") == 2;
        assert_eq!(both(&later), (true, true));
        let init = prog(
            "CoWR-init",
            vec![t("P0", vec![st("x", Relaxed, 1), ld("x", Relaxed, "r")])],
            |o| o.reg("P0", "r") == Some(0),
        );
        assert_eq!(both(&init), (false, false));
    }

    fn add(ord: Order) -> Instr {
        Rmw { site: None, loc: "x", op: RmwOp::FetchAdd(c(1)), ord, fail: Relaxed, dst: "o" }
    }

    /// Two relaxed increments never lose one; split into load + store they do.
    #[test]
    fn rmw_atomicity() {
        let p = prog(
            "RMW-atomic",
            vec![t("P0", vec![add(Relaxed)]), t("P1", vec![add(Relaxed)])],
            |o| o.mem("x") == 1,
        );
        assert_eq!(both(&p), (false, false));
        let split = Mutant { site: "inc".into(), spec: Spec::Split };
        let mut q = p.clone();
        for th in &mut q.threads {
            th.code = vec![Rmw {
                site: Some("inc"),
                loc: "x",
                op: RmwOp::FetchAdd(c(1)),
                ord: Relaxed,
                fail: Relaxed,
                dst: "o",
            }];
        }
        let (q, n) = q.mutated(&split).unwrap();
        assert_eq!(n, 2);
        assert_eq!(both(&q), (true, true));
    }

    /// A failed CAS is a read: it cannot fail against a value nobody wrote.
    #[test]
    fn cas_reads_the_latest_in_its_own_order() {
        let cas = |n: &'static str| {
            vec![Rmw {
                site: None,
                loc: "x",
                op: RmwOp::Cas(c(0), c(1)),
                ord: Relaxed,
                fail: Relaxed,
                dst: n,
            }]
        };
        let p = prog("CAS-both-succeed", vec![t("P0", cas("o")), t("P1", cas("o"))], |o| {
            o.reg("P0", "o") == Some(0) && o.reg("P1", "o") == Some(0)
        });
        assert_eq!(both(&p), (false, false));
    }

    #[test]
    fn work_cap_is_an_error_not_a_pass() {
        let err = check(&iriw(Relaxed, Relaxed, false), Model::Rc11, 10).unwrap_err();
        assert!(err.to_string().contains("NOT complete"), "{err}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = prog(
            "bad",
            vec![t("P0", vec![Store { site: None, loc: "x", ord: Relaxed, val: r("nope") }])],
            |_| true,
        );
        assert_eq!(
            check(&p, Model::Rc11, DEFAULT_CAP).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        assert!(Mutant::parse("notify::accept::swap#1:frobnicate").is_err());
        assert!(Mutant::parse("no-spec").is_err());
        assert!(Mutant::parse("a::b::load#1:ord0=Sequential").is_err());
        let m = Mutant::parse("x:remove").unwrap();
        let q = prog(
            "misfit",
            vec![t("P0", vec![Load { site: Some("x"), loc: "x", ord: Relaxed, dst: "r" }])],
            |_| true,
        );
        assert_eq!(q.mutated(&m).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    }
}
