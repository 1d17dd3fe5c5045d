//! The C11 checker's litmus programs (aioctx_model::c11::handshake) are faithful to the code: every
//! site an event is labelled with exists in `aioctx-mutants sites` with the same orderings as the
//! code, and every mutant of a labelled site has a recorded verdict for every program holding the
//! site (aioctx_model::c11::verdicts). A change of an ordering in impl/src, a renamed function or a
//! new mutant at a labelled site fails here, loudly, until the litmus program follows.

use aioctx_model::c11::{handshake, verdicts::VERDICTS, Mutant, Order, Program, Spec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `aioctx-mutants <cmd>` over impl/src: the TSV rows after the header.
fn tool(cmd: &str) -> Vec<Vec<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_aioctx-mutants"))
        .arg(cmd)
        .current_dir(root())
        .output()
        .expect("run aioctx-mutants");
    assert!(out.status.success(), "aioctx-mutants {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let rows: Vec<Vec<String>> =
        text.lines().skip(1).map(|l| l.split('\t').map(String::from).collect()).collect();
    assert!(rows.len() > 30, "aioctx-mutants {cmd}: only {} rows", rows.len());
    rows
}

/// The code's orderings per site name.
fn code_sites() -> BTreeMap<String, Vec<Order>> {
    tool("sites")
        .into_iter()
        .map(|r| {
            let ords = r[3]
                .split(',')
                .map(|o| Order::parse(o).unwrap_or_else(|| panic!("ordering {o} of {}", r[0])))
                .collect();
            (r[0].clone(), ords)
        })
        .collect()
}

/// Every mismatch between a program's labels and the code.
fn unfaithful(p: &Program, code: &BTreeMap<String, Vec<Order>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (site, ords) in p.sites() {
        match code.get(site) {
            None => bad.push(format!("{}: site {site} is not in `aioctx-mutants sites`", p.name)),
            Some(c) if *c != ords => bad.push(format!(
                "{}: site {site} has {ords:?} in the litmus program, {c:?} in the code",
                p.name
            )),
            Some(_) => {}
        }
    }
    bad
}

#[test]
fn litmus_sites_exist_with_the_code_orderings() {
    let code = code_sites();
    let mut labelled = 0;
    let mut bad = Vec::new();
    for p in handshake::all() {
        labelled += p.sites().len();
        bad.extend(unfaithful(&p, &code));
    }
    assert!(labelled > 30, "only {labelled} labelled sites: the programs lost their labels");
    assert!(bad.is_empty(), "litmus programs unfaithful to impl/src:\n{}", bad.join("\n"));
}

/// The check above fails when a litmus program's ordering differs from the code's (planted: the
/// program with a mutant applied, as if the code had changed under it).
#[test]
fn litmus_sites_check_catches_a_changed_ordering() {
    let code = code_sites();
    let p = handshake::bh_schedule_vs_blocking_poll();
    let m = Mutant { site: "bh::poll::swap#1".into(), spec: Spec::Order(0, Order::Relaxed) };
    let (q, n) = p.mutated(&m).unwrap();
    assert_eq!(n, 1);
    let bad = unfaithful(&q, &code);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("bh::poll::swap#1"), "{bad:?}");
    let mut renamed = p.clone();
    renamed.threads[0].code.push(aioctx_model::c11::Instr::Fence {
        site: Some("notify::no_such_fn::fence#1"),
        ord: Order::SeqCst,
    });
    assert_eq!(unfaithful(&renamed, &code).len(), 1);
}

#[test]
fn every_mutant_of_a_labelled_site_has_a_recorded_verdict() {
    let mutants: BTreeSet<String> = tool("list").into_iter().map(|r| r[0].clone()).collect();
    let recorded: BTreeSet<(&str, &str)> = VERDICTS.iter().map(|v| (v.mutant, v.program)).collect();
    let mut missing = Vec::new();
    for p in handshake::all() {
        let sites: BTreeSet<&str> = p.sites().into_iter().map(|(s, _)| s).collect();
        for m in &mutants {
            let site = m.rsplit_once(':').expect("site:spec").0;
            if sites.contains(site) && !recorded.contains(&(m.as_str(), p.name)) {
                missing.push(format!("{m} in {}", p.name));
            }
        }
    }
    assert!(missing.is_empty(), "mutants of labelled sites without a recorded C11 verdict (run the c11_verdicts example):\n{}", missing.join("\n"));
    let stale: Vec<&str> =
        VERDICTS.iter().map(|v| v.mutant).filter(|m| !mutants.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "recorded verdicts for mutants the generator no longer produces: {stale:?}"
    );
}
