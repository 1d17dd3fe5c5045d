//! The enumeration of candidate executions and the consistency axioms (see the module docs of
//! [`crate::c11`]).

use super::program::{Expr, Instr, Order, Outcome, Program, RmwOp};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

/// Which axioms an execution must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// RC11 (Lahav et al., PLDI 2017): coherence, atomicity, SC (psc acyclic), no-thin-air.
    Rc11,
    /// ISO C11/C++20 as RC11 without the no-thin-air axiom: load buffering is allowed.
    C11,
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Rc11 => "RC11",
            Model::C11 => "C11",
        })
    }
}

/// Event kinds. An RMW is a read and a write related by `rmw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A read (a load, the read half of an RMW, a failed CAS).
    R,
    /// A write (a store, the write half of an RMW, an initial value).
    W,
    /// A fence.
    F,
}

/// One event of a candidate execution.
#[derive(Debug, Clone)]
pub struct Event {
    /// Thread index, `None` for an initial write.
    pub thread: Option<usize>,
    /// Read, write or fence.
    pub kind: Kind,
    /// Location (`None` for a fence).
    pub loc: Option<&'static str>,
    /// Value read or written.
    pub val: u64,
    /// Ordering of this event (an RMW's halves: see [`Order::acq_half`]).
    pub ord: Order,
    /// Code site.
    pub site: Option<&'static str>,
}

/// A consistent execution, printed as events per thread, rf and mo.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Thread names.
    pub threads: Vec<&'static str>,
    /// Events (initial writes first).
    pub events: Vec<Event>,
    /// `(read, write)`: the read reads from the write.
    pub rf: Vec<(usize, usize)>,
    /// Per location, the writes in modification order (the initial write first).
    pub mo: Vec<(&'static str, Vec<usize>)>,
    /// `(read, write)` pairs of the RMWs.
    pub rmw: Vec<(usize, usize)>,
    /// The final state.
    pub outcome: Outcome,
}

impl fmt::Display for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (t, name) in self.threads.iter().enumerate() {
            writeln!(f, "  thread {name}:")?;
            for (i, e) in self.events.iter().enumerate().filter(|(_, e)| e.thread == Some(t)) {
                let what = match e.kind {
                    Kind::R => format!("R{} {} = {}", e.ord, e.loc.unwrap_or("?"), e.val),
                    Kind::W => format!("W{} {} := {}", e.ord, e.loc.unwrap_or("?"), e.val),
                    Kind::F => format!("F{}", e.ord),
                };
                let rmw =
                    if self.rmw.iter().any(|&(r, w)| r == i || w == i) { " (rmw)" } else { "" };
                writeln!(f, "    e{i:<3} {what:<28}{rmw:<7} {}", e.site.unwrap_or("-"))?;
            }
        }
        write!(f, "  rf:")?;
        for (r, w) in &self.rf {
            write!(f, " e{w}->e{r}")?;
        }
        writeln!(f)?;
        for (loc, ws) in &self.mo {
            let ws: Vec<String> = ws.iter().map(|w| format!("e{w}")).collect();
            writeln!(f, "  mo {loc}: {}", ws.join(" < "))?;
        }
        writeln!(f, "  final: {:?}", self.outcome.mem)?;
        write!(f, "  registers: {:?}", self.outcome.regs)
    }
}

/// What one check found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Program name.
    pub program: &'static str,
    /// The axioms used.
    pub model: Model,
    /// Per-thread paths, multiplied out (combinations of one path per thread).
    pub path_combos: u64,
    /// Candidate executions: every (paths, rf, mo) whose reads read a write of the value they
    /// read, before any axiom.
    pub candidates: u128,
    /// rf choices examined (each has its hb built and checked).
    pub rf_checked: u64,
    /// Full consistency checks run (the work the cap bounds).
    pub checked: u64,
    /// Consistent executions.
    pub consistent: u64,
    /// Consistent executions with the asked outcome (violations of a protocol property).
    pub hits: u64,
    /// The first of those.
    pub example: Option<Execution>,
}

impl Report {
    /// Whether the model allows the asked outcome.
    pub fn allowed(&self) -> bool {
        self.hits > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}]: {} path combinations, {} candidate executions, {} rf choices, {} checked, {} consistent, {} with the outcome",
            self.program, self.model, self.path_combos, self.candidates, self.rf_checked, self.checked, self.consistent, self.hits
        )
    }
}

/// The default bound on work (full consistency checks plus rf choices).
pub const DEFAULT_CAP: u64 = 20_000_000;

/// Most events an execution may have (relations are 64-bit rows).
pub const MAX_EVENTS: usize = 64;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

// ---- per-thread paths ----

#[derive(Debug, Clone)]
struct Path {
    /// Values this path reads that only another thread can have written.
    needs: Vec<(&'static str, u64)>,
    /// Values this path writes.
    writes: BTreeSet<(&'static str, u64)>,
    events: Vec<Event>,
    rmw: Vec<(usize, usize)>,
    regs: BTreeMap<&'static str, u64>,
}

/// What a thread's reads may return: per location, the initial value and the values the other
/// threads may write.
struct Sources<'a> {
    init: &'a BTreeMap<&'static str, u64>,
    others: &'a BTreeMap<&'static str, BTreeSet<u64>>,
}

struct Run<'a> {
    tid: usize,
    src: &'a Sources<'a>,
    /// The thread's own latest write per location on this path.
    own: BTreeMap<&'static str, u64>,
    choices: Vec<usize>,
    options: Vec<usize>,
    reads: usize,
    path: Path,
}

impl Run<'_> {
    /// A read returns the thread's own latest write of the location (or, before any, the initial
    /// value) or a value another thread may write: coherence (CoWR, CoRR) rules out the rest.
    fn read(&mut self, loc: &'static str) -> io::Result<u64> {
        let mut d: BTreeSet<u64> = self.src.others.get(loc).cloned().unwrap_or_default();
        let local = match self.own.get(loc) {
            Some(v) => *v,
            None => *self
                .src
                .init
                .get(loc)
                .ok_or_else(|| invalid(format!("location `{loc}` has no initial value")))?,
        };
        d.insert(local);
        let d: Vec<u64> = d.into_iter().collect();
        let k = self.reads;
        self.reads += 1;
        if k == self.choices.len() {
            self.choices.push(0);
        }
        self.options.push(d.len());
        let v = d[self.choices[k]];
        if v != local {
            self.path.needs.push((loc, v));
        }
        Ok(v)
    }

    fn ev(
        &mut self,
        kind: Kind,
        loc: Option<&'static str>,
        val: u64,
        ord: Order,
        site: Option<&'static str>,
    ) -> usize {
        if kind == Kind::W {
            let l = loc.expect("a write has a location");
            self.own.insert(l, val);
            self.path.writes.insert((l, val));
        }
        self.path.events.push(Event { thread: Some(self.tid), kind, loc, val, ord, site });
        self.path.events.len() - 1
    }

    /// Ok(false): an `Assume` failed (the path is discarded).
    fn exec(&mut self, code: &[Instr]) -> io::Result<bool> {
        for i in code {
            match i {
                Instr::Load { site, loc, ord, dst } => {
                    let v = self.read(loc)?;
                    self.ev(Kind::R, Some(loc), v, *ord, *site);
                    self.path.regs.insert(dst, v);
                }
                Instr::Store { site, loc, ord, val } => {
                    let v = val.eval(&self.path.regs)?;
                    self.ev(Kind::W, Some(loc), v, *ord, *site);
                }
                Instr::Fence { site, ord } => {
                    self.ev(Kind::F, None, 0, *ord, *site);
                }
                Instr::Let { dst, val } => {
                    let v = val.eval(&self.path.regs)?;
                    self.path.regs.insert(dst, v);
                }
                Instr::Assume(c) => {
                    if c.eval(&self.path.regs)? == 0 {
                        return Ok(false);
                    }
                }
                Instr::If { cond, then, els } => {
                    let go = if cond.eval(&self.path.regs)? != 0 { then } else { els };
                    if !self.exec(go)? {
                        return Ok(false);
                    }
                }
                Instr::Rmw { site, loc, op, ord, fail, dst } => {
                    let old = self.read(loc)?;
                    self.path.regs.insert(dst, old);
                    let arg = |x: &Expr, regs: &BTreeMap<&'static str, u64>| x.eval(regs);
                    let new = match op {
                        RmwOp::Swap(v) => Some(arg(v, &self.path.regs)?),
                        RmwOp::FetchOr(v) => Some(old | arg(v, &self.path.regs)?),
                        RmwOp::FetchAnd(v) => Some(old & arg(v, &self.path.regs)?),
                        RmwOp::FetchAdd(v) => Some(old.wrapping_add(arg(v, &self.path.regs)?)),
                        RmwOp::Cas(x, v) => {
                            if old == arg(x, &self.path.regs)? {
                                Some(arg(v, &self.path.regs)?)
                            } else {
                                None
                            }
                        }
                    };
                    match new {
                        Some(n) => {
                            let r = self.ev(Kind::R, Some(loc), old, ord.acq_half(), *site);
                            let w = self.ev(Kind::W, Some(loc), n, ord.rel_half(), *site);
                            self.path.rmw.push((r, w));
                        }
                        None => {
                            self.ev(Kind::R, Some(loc), old, *fail, *site);
                        }
                    }
                }
            }
        }
        Ok(true)
    }
}

/// Every path of a thread when each read may return any value of [`Run::read`].
fn thread_paths(code: &[Instr], tid: usize, src: &Sources, cap: u64) -> io::Result<Vec<Path>> {
    let mut out = Vec::new();
    let mut choices: Vec<usize> = Vec::new();
    loop {
        let mut run = Run {
            tid,
            src,
            own: BTreeMap::new(),
            choices: std::mem::take(&mut choices),
            options: Vec::new(),
            reads: 0,
            path: Path {
                needs: Vec::new(),
                writes: BTreeSet::new(),
                events: Vec::new(),
                rmw: Vec::new(),
                regs: BTreeMap::new(),
            },
        };
        if run.exec(code)? {
            out.push(run.path);
        }
        if out.len() as u64 > cap {
            return Err(io::Error::other(format!(
                "more than {cap} paths in thread {tid}: raise the cap or shrink the program"
            )));
        }
        choices = run.choices;
        choices.truncate(run.reads);
        // Odometer over the choices actually made.
        loop {
            match choices.len() {
                0 => return Ok(out),
                k => {
                    if choices[k - 1] + 1 < run.options[k - 1] {
                        choices[k - 1] += 1;
                        break;
                    }
                    choices.pop();
                }
            }
        }
    }
}

fn locations(p: &Program) -> BTreeSet<&'static str> {
    fn go(code: &[Instr], out: &mut BTreeSet<&'static str>) {
        for i in code {
            match i {
                Instr::Load { loc, .. } | Instr::Store { loc, .. } | Instr::Rmw { loc, .. } => {
                    out.insert(loc);
                }
                Instr::If { then, els, .. } => {
                    go(then, out);
                    go(els, out);
                }
                _ => {}
            }
        }
    }
    let mut out: BTreeSet<&'static str> = p.init.iter().map(|(l, _)| *l).collect();
    for t in &p.threads {
        go(&t.code, &mut out);
    }
    out
}

/// Per thread, the values the other threads may write, per location: what each thread writes when
/// its reads return values found so far, for as many rounds as the program has writes (a value's
/// dependency chain through `sb ∪ rf` is acyclic under no-thin-air, so it has at most that many
/// writes), or to a fixpoint if that comes first. A counter incremented by several threads never
/// reaches a fixpoint: its extra values are never written in a real execution and a read of one
/// finds no write (pruned at rf).
fn domains(
    p: &Program,
    init: &BTreeMap<&'static str, u64>,
    cap: u64,
) -> io::Result<Vec<BTreeMap<&'static str, BTreeSet<u64>>>> {
    fn writes(code: &[Instr]) -> usize {
        code.iter()
            .map(|i| match i {
                Instr::Store { .. } | Instr::Rmw { .. } => 1,
                Instr::If { then, els, .. } => writes(then) + writes(els),
                _ => 0,
            })
            .sum()
    }
    let rounds = p.threads.iter().map(|t| writes(&t.code)).sum::<usize>() + 1;
    let n = p.threads.len();
    let others = |w: &Vec<BTreeMap<&'static str, BTreeSet<u64>>>, t: usize| {
        let mut o: BTreeMap<&'static str, BTreeSet<u64>> = BTreeMap::new();
        for (_, wu) in w.iter().enumerate().filter(|&(u, _)| u != t) {
            for (l, vs) in wu {
                o.entry(l).or_default().extend(vs.iter().copied());
            }
        }
        o
    };
    let mut w: Vec<BTreeMap<&'static str, BTreeSet<u64>>> = vec![BTreeMap::new(); n];
    for _ in 0..rounds {
        let mut next = vec![BTreeMap::new(); n];
        for (tid, t) in p.threads.iter().enumerate() {
            let o = others(&w, tid);
            let src = Sources { init, others: &o };
            for path in thread_paths(&t.code, tid, &src, cap)? {
                for e in path.events.iter().filter(|e| e.kind == Kind::W) {
                    let l = e.loc.expect("a write has a location");
                    next[tid].entry(l).or_insert_with(BTreeSet::new).insert(e.val);
                }
            }
        }
        if next == w {
            break;
        }
        w = next;
    }
    Ok((0..n).map(|t| others(&w, t)).collect())
}

// ---- relations: one u64 row per event ----

type Rel = Vec<u64>;

fn has(r: &Rel, a: usize, b: usize) -> bool {
    r[a] >> b & 1 == 1
}

fn closure(r: &mut Rel) {
    let n = r.len();
    for k in 0..n {
        for i in 0..n {
            if has(r, i, k) {
                r[i] |= r[k];
            }
        }
    }
}

fn compose(a: &Rel, b: &Rel) -> Rel {
    a.iter()
        .map(|&row| {
            let mut out = 0;
            let mut m = row;
            while m != 0 {
                let k = m.trailing_zeros() as usize;
                m &= m - 1;
                out |= b[k];
            }
            out
        })
        .collect()
}

fn acyclic(r: &Rel) -> bool {
    let mut c = r.clone();
    closure(&mut c);
    (0..c.len()).all(|i| !has(&c, i, i))
}

fn union(a: &Rel, b: &Rel) -> Rel {
    a.iter().zip(b).map(|(x, y)| x | y).collect()
}

/// One combination of thread paths, with the relations that do not depend on rf and mo.
struct Base<'a> {
    events: Vec<Event>,
    sb: Rel,
    rmw: Vec<(usize, usize)>,
    rmw_of_read: Vec<Option<usize>>,
    reads: Vec<usize>,
    writes_at: BTreeMap<&'static str, Vec<usize>>,
    paths: Vec<&'a Path>,
    names: Vec<&'static str>,
}

impl Base<'_> {
    fn same_loc(&self, a: usize, b: usize) -> bool {
        matches!((self.events[a].loc, self.events[b].loc), (Some(x), Some(y)) if x == y)
    }

    /// sw (RC11 with C++20's release sequence: `rs = [W]; (rf; rmw)*`):
    /// `[E⊒rel]; ([F]; sb)?; rs; rf; [R]; (sb; [F])?; [E⊒acq]`.
    fn sw(&self, rf: &[Option<usize>]) -> Rel {
        let n = self.events.len();
        let ev = &self.events;
        // readers[w]: the reads that read from w.
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (r, w) in rf.iter().enumerate() {
            if let Some(w) = w {
                readers[*w].push(r);
            }
        }
        let mut rs: Rel = vec![0; n];
        for w in (0..n).filter(|&w| ev[w].kind == Kind::W) {
            let mut set = 1u64 << w;
            let mut todo = vec![w];
            while let Some(x) = todo.pop() {
                for &r in &readers[x] {
                    if let Some(w2) = self.rmw_of_read[r] {
                        if set >> w2 & 1 == 0 {
                            set |= 1 << w2;
                            todo.push(w2);
                        }
                    }
                }
            }
            rs[w] = set;
        }
        let mut sw: Rel = vec![0; n];
        for a in 0..n {
            let e = &ev[a];
            if e.thread.is_none() || !e.ord.is_rel() || e.kind == Kind::R {
                continue;
            }
            // The writes that head a release sequence for a: a itself, or (a fence) the writes after it.
            let heads: Vec<usize> = match e.kind {
                Kind::W => vec![a],
                _ => (0..n).filter(|&w| ev[w].kind == Kind::W && has(&self.sb, a, w)).collect(),
            };
            let mut seq = 0u64;
            for h in heads {
                seq |= rs[h];
            }
            let mut m = seq;
            while m != 0 {
                let w = m.trailing_zeros() as usize;
                m &= m - 1;
                for &r in &readers[w] {
                    if ev[r].ord.is_acq() {
                        sw[a] |= 1 << r;
                    }
                    for (b, f) in ev.iter().enumerate() {
                        if f.kind == Kind::F && f.ord.is_acq() && has(&self.sb, r, b) {
                            sw[a] |= 1 << b;
                        }
                    }
                }
            }
        }
        sw
    }
}

/// Every modification order of one location's writes that keeps each RMW's write right after the
/// write its read reads from, and agrees with hb (write-write coherence).
fn orders(
    base: &Base,
    ws: &[usize],
    init: usize,
    rf: &[Option<usize>],
    hb: &Rel,
) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = vec![init];
    let mut used = vec![false; ws.len()];
    fn go(
        base: &Base,
        ws: &[usize],
        rf: &[Option<usize>],
        hb: &Rel,
        cur: &mut Vec<usize>,
        used: &mut Vec<bool>,
        out: &mut Vec<Vec<usize>>,
    ) {
        if cur.len() == ws.len() + 1 {
            out.push(cur.clone());
            return;
        }
        let last = *cur.last().expect("init first");
        for i in 0..ws.len() {
            if used[i] {
                continue;
            }
            let w = ws[i];
            // An RMW write comes right after the write its read read from.
            if let Some(&(r, _)) = base.rmw.iter().find(|&&(_, x)| x == w) {
                if rf[r] != Some(last) {
                    continue;
                }
            }
            // A write whose successor must be an RMW's write cannot be followed by anything else:
            // checked when that RMW is placed (it would find the wrong predecessor). hb: no unused
            // write may be hb-before w.
            if (0..ws.len()).any(|j| !used[j] && j != i && has(hb, ws[j], w)) {
                continue;
            }
            used[i] = true;
            cur.push(w);
            go(base, ws, rf, hb, cur, used, out);
            cur.pop();
            used[i] = false;
        }
    }
    go(base, ws, rf, hb, &mut cur, &mut used, &mut out);
    out
}

fn factorial(k: usize) -> u128 {
    (1..=k as u128).product()
}

struct Ctx<'a> {
    model: Model,
    cap: u64,
    work: u64,
    report: Report,
    program: &'a Program,
}

impl Ctx<'_> {
    fn tick(&mut self) -> io::Result<()> {
        self.work += 1;
        if self.work > self.cap {
            return Err(io::Error::other(format!(
                "{} [{}]: work cap of {} consistency checks exceeded ({} candidates so far): the search is NOT complete",
                self.program.name, self.model, self.cap, self.report.candidates
            )));
        }
        Ok(())
    }

    fn combo(&mut self, base: &Base) -> io::Result<()> {
        let n = base.events.len();
        // rf candidates of each read: writes of the same location and value, not sb-after it, not its
        // own RMW's write.
        let mut cands: Vec<Vec<usize>> = Vec::new();
        for &r in &base.reads {
            let e = &base.events[r];
            let c: Vec<usize> = (0..n)
                .filter(|&w| {
                    let x = &base.events[w];
                    x.kind == Kind::W && x.loc == e.loc && x.val == e.val && !has(&base.sb, r, w)
                })
                .collect();
            if c.is_empty() {
                return Ok(());
            }
            cands.push(c);
        }
        let mo_raw: u128 = base.writes_at.values().map(|ws| factorial(ws.len() - 1)).product();
        let mut pick = vec![0usize; base.reads.len()];
        loop {
            let mut rf: Vec<Option<usize>> = vec![None; n];
            for (k, &r) in base.reads.iter().enumerate() {
                rf[r] = Some(cands[k][pick[k]]);
            }
            self.report.candidates += mo_raw;
            // Atomicity, cheaply first: two RMWs never read from the same write (both writes would
            // have to come right after it in mo).
            let mut rmw_src = 0u64;
            let mut atomic = true;
            for &(r, _) in &base.rmw {
                let w = rf[r].expect("every read has an rf");
                if rmw_src >> w & 1 == 1 {
                    atomic = false;
                    break;
                }
                rmw_src |= 1 << w;
            }
            if atomic {
                self.rf_choice(base, &rf)?;
            }
            // Odometer.
            let mut k = pick.len();
            loop {
                if k == 0 {
                    return Ok(());
                }
                k -= 1;
                if pick[k] + 1 < cands[k].len() {
                    pick[k] += 1;
                    break;
                }
                pick[k] = 0;
            }
        }
    }

    fn rf_choice(&mut self, base: &Base, rf: &[Option<usize>]) -> io::Result<()> {
        self.tick()?;
        self.report.rf_checked += 1;
        let n = base.events.len();
        let mut rfr: Rel = vec![0; n];
        for (r, w) in rf.iter().enumerate() {
            if let Some(w) = w {
                rfr[*w] |= 1 << r;
            }
        }
        // No-thin-air (RC11 only): acyclic(sb ∪ rf).
        if self.model == Model::Rc11 && !acyclic(&union(&base.sb, &rfr)) {
            return Ok(());
        }
        let sw = base.sw(rf);
        let mut hb = union(&base.sb, &sw);
        closure(&mut hb);
        if (0..n).any(|i| has(&hb, i, i)) {
            return Ok(());
        }
        // Modification orders per location.
        let mut per_loc: Vec<(&'static str, Vec<Vec<usize>>)> = Vec::new();
        for (loc, ws) in &base.writes_at {
            let os = orders(base, &ws[1..], ws[0], rf, &hb);
            if os.is_empty() {
                return Ok(());
            }
            per_loc.push((loc, os));
        }
        let mut pick = vec![0usize; per_loc.len()];
        loop {
            self.tick()?;
            self.report.checked += 1;
            let mo: Vec<(&'static str, &Vec<usize>)> =
                per_loc.iter().zip(&pick).map(|((l, os), &k)| (*l, &os[k])).collect();
            if self.consistent(base, rf, &rfr, &hb, &mo) {
                self.report.consistent += 1;
                let outcome = self.outcome(base, &mo);
                if (self.program.outcome)(&outcome) {
                    self.report.hits += 1;
                    if self.report.example.is_none() {
                        self.report.example = Some(Execution {
                            threads: base.names.clone(),
                            events: base.events.clone(),
                            rf: rf
                                .iter()
                                .enumerate()
                                .filter_map(|(r, w)| w.map(|w| (r, w)))
                                .collect(),
                            mo: mo.iter().map(|(l, o)| (*l, o.to_vec())).collect(),
                            rmw: base.rmw.clone(),
                            outcome,
                        });
                    }
                }
            }
            let mut k = pick.len();
            loop {
                if k == 0 {
                    return Ok(());
                }
                k -= 1;
                if pick[k] + 1 < per_loc[k].1.len() {
                    pick[k] += 1;
                    break;
                }
                pick[k] = 0;
            }
        }
    }

    fn outcome(&self, base: &Base, mo: &[(&'static str, &Vec<usize>)]) -> Outcome {
        Outcome {
            regs: base.names.iter().zip(&base.paths).map(|(n, p)| (*n, p.regs.clone())).collect(),
            mem: mo.iter().map(|(l, o)| (*l, base.events[*o.last().expect("init")].val)).collect(),
        }
    }

    /// Coherence, atomicity and SC (no-thin-air and hb's acyclicity were checked per rf).
    fn consistent(
        &self,
        base: &Base,
        rf: &[Option<usize>],
        rfr: &Rel,
        hb: &Rel,
        mo: &[(&'static str, &Vec<usize>)],
    ) -> bool {
        let n = base.events.len();
        let ev = &base.events;
        let mut mor: Rel = vec![0; n];
        for (_, o) in mo {
            for i in 0..o.len() {
                for j in i + 1..o.len() {
                    mor[o[i]] |= 1 << o[j];
                }
            }
        }
        // fr = rf⁻¹; mo
        let mut fr: Rel = vec![0; n];
        for (r, w) in rf.iter().enumerate() {
            if let Some(w) = w {
                fr[r] = mor[*w] & !(1 << r);
            }
        }
        // Atomicity: rmw ∩ (fr; mo) = ∅.
        for &(r, w) in &base.rmw {
            if compose(&vec![fr[r]], &mor)[0] >> w & 1 == 1 {
                return false;
            }
        }
        // Coherence: irreflexive(hb; eco?), eco = (rf ∪ mo ∪ fr)+.
        let mut eco = union(&union(rfr, &mor), &fr);
        closure(&mut eco);
        for (a, &row) in hb.iter().enumerate() {
            let mut m = row;
            while m != 0 {
                let b = m.trailing_zeros() as usize;
                m &= m - 1;
                if has(&eco, b, a) {
                    return false;
                }
            }
        }
        // SC: acyclic(psc_base ∪ psc_F).
        let sc: Vec<bool> =
            ev.iter().map(|e| e.thread.is_some() && e.ord == Order::SeqCst).collect();
        if !sc.iter().any(|&s| s) {
            return true;
        }
        let fsc = |i: usize| sc[i] && ev[i].kind == Kind::F;
        let mut hbq = hb.clone();
        for (i, row) in hbq.iter_mut().enumerate() {
            *row |= 1 << i;
        }
        let sbnl: Rel = (0..n)
            .map(|a| {
                let mut row = 0;
                for b in 0..n {
                    if has(&base.sb, a, b) && !base.same_loc(a, b) {
                        row |= 1 << b;
                    }
                }
                row
            })
            .collect();
        let hbloc: Rel = (0..n)
            .map(|a| {
                let mut row = 0;
                for b in 0..n {
                    if has(hb, a, b) && base.same_loc(a, b) {
                        row |= 1 << b;
                    }
                }
                row
            })
            .collect();
        let scb = union(
            &union(&union(&base.sb, &compose(&compose(&sbnl, hb), &sbnl)), &hbloc),
            &union(&mor, &fr),
        );
        // hbq_into[b]: the events hb?-before b.
        let mut hbq_into = vec![0u64; n];
        for (a, row) in hbq.iter().enumerate() {
            for (b, into) in hbq_into.iter_mut().enumerate() {
                if row >> b & 1 == 1 {
                    *into |= 1 << a;
                }
            }
        }
        let heh = compose(&compose(hb, &eco), hb);
        let mut psc: Rel = vec![0; n];
        for a in (0..n).filter(|&a| sc[a]) {
            // ([E^sc] ∪ [F^sc]; hb?) ; scb
            let left = if fsc(a) { hbq[a] } else { 1 << a };
            let x = compose(&vec![left], &scb)[0];
            for b in (0..n).filter(|&b| sc[b]) {
                // ; ([E^sc] ∪ hb?; [F^sc])
                let base_edge = x >> b & 1 == 1 || (fsc(b) && x & hbq_into[b] != 0);
                // psc_F = [F^sc]; (hb ∪ hb; eco; hb); [F^sc]
                let f_edge = fsc(a) && fsc(b) && (has(hb, a, b) || has(&heh, a, b));
                if base_edge || f_edge {
                    psc[a] |= 1 << b;
                }
            }
        }
        acyclic(&psc)
    }
}

/// Every consistent execution of `p` under `model`, and those with the asked outcome. Work
/// (rf choices plus full consistency checks) is bounded by `cap`: exceeding it is an error, never a
/// silent partial answer. A malformed program (a register read before written, more than
/// [`MAX_EVENTS`] events) is an `InvalidInput` error.
pub fn check(p: &Program, model: Model, cap: u64) -> io::Result<Report> {
    let locs: Vec<&'static str> = locations(p).into_iter().collect();
    let mut init: BTreeMap<&'static str, u64> = locs.iter().map(|l| (*l, 0)).collect();
    init.extend(p.init.iter().copied());
    let others = domains(p, &init, cap)?;
    let paths: Vec<Vec<Path>> = p
        .threads
        .iter()
        .enumerate()
        .map(|(tid, t)| {
            thread_paths(&t.code, tid, &Sources { init: &init, others: &others[tid] }, cap)
        })
        .collect::<io::Result<_>>()?;
    let mut ctx = Ctx {
        model,
        cap,
        work: 0,
        program: p,
        report: Report {
            program: p.name,
            model,
            path_combos: 0,
            candidates: 0,
            rf_checked: 0,
            checked: 0,
            consistent: 0,
            hits: 0,
            example: None,
        },
    };
    if paths.iter().any(|ps| ps.is_empty()) {
        return Ok(ctx.report);
    }
    let mut pick = vec![0usize; paths.len()];
    loop {
        ctx.report.path_combos += 1;
        let chosen: Vec<&Path> = paths.iter().zip(&pick).map(|(ps, &k)| &ps[k]).collect();
        // Every value a path reads from another thread is written by another chosen path (else
        // no rf exists: skip before building anything).
        let feasible = chosen.iter().enumerate().all(|(t, p)| {
            p.needs
                .iter()
                .all(|nv| chosen.iter().enumerate().any(|(u, q)| u != t && q.writes.contains(nv)))
        });
        if feasible {
            let mut events: Vec<Event> = locs
                .iter()
                .map(|l| Event {
                    thread: None,
                    kind: Kind::W,
                    loc: Some(l),
                    val: init.get(l).copied().unwrap_or(0),
                    ord: Order::Relaxed,
                    site: None,
                })
                .collect();
            let mut rmw = Vec::new();
            let mut spans = Vec::new();
            for path in &chosen {
                let off = events.len();
                events.extend(path.events.iter().cloned());
                rmw.extend(path.rmw.iter().map(|&(r, w)| (r + off, w + off)));
                spans.push(off..events.len());
            }
            let n = events.len();
            if n > MAX_EVENTS {
                return Err(invalid(format!(
                    "{}: {n} events in one execution, more than {MAX_EVENTS}",
                    p.name
                )));
            }
            let mask = |k: usize| if k >= 64 { !0u64 } else { (1u64 << k) - 1 };
            let mut sb: Rel = vec![0; n];
            for row in sb.iter_mut().take(locs.len()) {
                // The initial writes are sb-before every event of every thread.
                *row = mask(n) & !mask(locs.len());
            }
            for s in &spans {
                for i in s.clone() {
                    for j in i + 1..s.end {
                        sb[i] |= 1 << j;
                    }
                }
            }
            let mut rmw_of_read = vec![None; n];
            for &(r, w) in &rmw {
                rmw_of_read[r] = Some(w);
            }
            let mut writes_at: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
            for (i, e) in events.iter().enumerate() {
                if e.kind == Kind::W {
                    writes_at.entry(e.loc.expect("write has a location")).or_default().push(i);
                }
            }
            let base = Base {
                reads: (0..n).filter(|&i| events[i].kind == Kind::R).collect(),
                events,
                sb,
                rmw,
                rmw_of_read,
                writes_at,
                paths: chosen,
                names: p.threads.iter().map(|t| t.name).collect(),
            };
            ctx.combo(&base)?;
        }
        let mut k = pick.len();
        loop {
            if k == 0 {
                return Ok(ctx.report);
            }
            k -= 1;
            if pick[k] + 1 < paths[k].len() {
                pick[k] += 1;
                break;
            }
            pick[k] = 0;
        }
    }
}
