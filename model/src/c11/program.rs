//! Litmus programs: threads of straight-line code over named locations, with local branches on the
//! values read, and the mutants of `aioctx-mutants` applied to their labelled events.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

/// A C11 memory ordering (`std::sync::atomic::Ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// `Relaxed`
    Relaxed,
    /// `Release` (stores, RMWs, fences)
    Release,
    /// `Acquire` (loads, RMWs, fences)
    Acquire,
    /// `AcqRel` (RMWs, fences)
    AcqRel,
    /// `SeqCst`
    SeqCst,
}

impl Order {
    /// Parse the name as written in Rust (`"SeqCst"`).
    pub fn parse(s: &str) -> Option<Order> {
        Some(match s {
            "Relaxed" => Order::Relaxed,
            "Release" => Order::Release,
            "Acquire" => Order::Acquire,
            "AcqRel" => Order::AcqRel,
            "SeqCst" => Order::SeqCst,
            _ => return None,
        })
    }
    /// `⊒ rel`: Release, AcqRel or SeqCst.
    pub fn is_rel(self) -> bool {
        matches!(self, Order::Release | Order::AcqRel | Order::SeqCst)
    }
    /// `⊒ acq`: Acquire, AcqRel or SeqCst.
    pub fn is_acq(self) -> bool {
        matches!(self, Order::Acquire | Order::AcqRel | Order::SeqCst)
    }
    /// The ordering of an RMW's read event (the acquire half; the load of a split RMW).
    pub fn acq_half(self) -> Order {
        match self {
            Order::SeqCst => Order::SeqCst,
            Order::AcqRel | Order::Acquire => Order::Acquire,
            _ => Order::Relaxed,
        }
    }
    /// The ordering of an RMW's write event (the release half; the store of a split RMW).
    pub fn rel_half(self) -> Order {
        match self {
            Order::SeqCst => Order::SeqCst,
            Order::AcqRel | Order::Release => Order::Release,
            _ => Order::Relaxed,
        }
    }
    /// Rust's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Order::Relaxed => "Relaxed",
            Order::Release => "Release",
            Order::Acquire => "Acquire",
            Order::AcqRel => "AcqRel",
            Order::SeqCst => "SeqCst",
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Relaxed => "rlx",
            Order::Release => "rel",
            Order::Acquire => "acq",
            Order::AcqRel => "acqrel",
            Order::SeqCst => "sc",
        })
    }
}

/// A thread-local expression over registers (values are `u64`; booleans are 0 / 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A constant.
    Const(u64),
    /// A register of the thread (an error if read before written).
    Reg(&'static str),
    /// `a == b` (0 / 1)
    Eq(Box<Expr>, Box<Expr>),
    /// `a != b` (0 / 1)
    Ne(Box<Expr>, Box<Expr>),
    /// `a & b` (bitwise)
    And(Box<Expr>, Box<Expr>),
    /// `a | b` (bitwise)
    Or(Box<Expr>, Box<Expr>),
    /// `a + b` (wrapping)
    Add(Box<Expr>, Box<Expr>),
    /// `a - b` (wrapping)
    Sub(Box<Expr>, Box<Expr>),
    /// `a < b` (0 / 1)
    Lt(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub(crate) fn eval(&self, regs: &BTreeMap<&'static str, u64>) -> io::Result<u64> {
        let b = |x: bool| x as u64;
        Ok(match self {
            Expr::Const(c) => *c,
            Expr::Reg(r) => *regs.get(r).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("register `{r}` read before written"),
                )
            })?,
            Expr::Eq(a, c) => b(a.eval(regs)? == c.eval(regs)?),
            Expr::Ne(a, c) => b(a.eval(regs)? != c.eval(regs)?),
            Expr::And(a, c) => a.eval(regs)? & c.eval(regs)?,
            Expr::Or(a, c) => a.eval(regs)? | c.eval(regs)?,
            Expr::Add(a, c) => a.eval(regs)?.wrapping_add(c.eval(regs)?),
            Expr::Sub(a, c) => a.eval(regs)?.wrapping_sub(c.eval(regs)?),
            Expr::Lt(a, c) => b(a.eval(regs)? < c.eval(regs)?),
        })
    }
}

/// Shorthands for writing programs.
pub mod e {
    use super::Expr;
    /// A constant.
    pub fn c(v: u64) -> Expr {
        Expr::Const(v)
    }
    /// A register.
    pub fn r(n: &'static str) -> Expr {
        Expr::Reg(n)
    }
    /// `a == b`
    pub fn eq(a: Expr, b: Expr) -> Expr {
        Expr::Eq(Box::new(a), Box::new(b))
    }
    /// `a != b`
    pub fn ne(a: Expr, b: Expr) -> Expr {
        Expr::Ne(Box::new(a), Box::new(b))
    }
    /// `a & b`
    pub fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }
    /// `a | b`
    pub fn or(a: Expr, b: Expr) -> Expr {
        Expr::Or(Box::new(a), Box::new(b))
    }
    /// `a + b`
    pub fn add(a: Expr, b: Expr) -> Expr {
        Expr::Add(Box::new(a), Box::new(b))
    }
    /// `a - b`
    pub fn sub(a: Expr, b: Expr) -> Expr {
        Expr::Sub(Box::new(a), Box::new(b))
    }
    /// `a < b`
    pub fn lt(a: Expr, b: Expr) -> Expr {
        Expr::Lt(Box::new(a), Box::new(b))
    }
}

/// What an RMW writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmwOp {
    /// `swap(v)`
    Swap(Expr),
    /// `fetch_or(v)`
    FetchOr(Expr),
    /// `fetch_and(v)`
    FetchAnd(Expr),
    /// `fetch_add(v)`
    FetchAdd(Expr),
    /// `compare_exchange(expected, new)`: writes only if the value read equals `expected`; a failed
    /// CAS is a read with the failure ordering.
    Cas(Expr, Expr),
}

/// One instruction. `site` is the name of the code site the access or fence stands for
/// (`notify::accept::swap#1`, as `aioctx-mutants sites` prints it), or `None` for an access that is
/// not in impl/src (the kernel's eventfd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instr {
    /// `dst = loc.load(ord)`
    Load {
        /// Code site.
        site: Option<&'static str>,
        /// Location.
        loc: &'static str,
        /// Ordering (`ord0`).
        ord: Order,
        /// Register receiving the value.
        dst: &'static str,
    },
    /// `loc.store(val, ord)`
    Store {
        /// Code site.
        site: Option<&'static str>,
        /// Location.
        loc: &'static str,
        /// Ordering (`ord0`).
        ord: Order,
        /// Value stored.
        val: Expr,
    },
    /// `dst = loc.<op>(ord[, fail])`: one read event and (unless a CAS fails) one write event,
    /// related by `rmw`.
    Rmw {
        /// Code site.
        site: Option<&'static str>,
        /// Location.
        loc: &'static str,
        /// What is written.
        op: RmwOp,
        /// Success ordering (`ord0`).
        ord: Order,
        /// Failure ordering of a CAS (`ord1`); ignored otherwise.
        fail: Order,
        /// Register receiving the old value.
        dst: &'static str,
    },
    /// `fence(ord)`
    Fence {
        /// Code site.
        site: Option<&'static str>,
        /// Ordering.
        ord: Order,
    },
    /// `dst = val` (no event)
    Let {
        /// Register.
        dst: &'static str,
        /// Value.
        val: Expr,
    },
    /// `if cond != 0 { then } else { els }` (no event)
    If {
        /// Condition.
        cond: Expr,
        /// Taken when `cond != 0`.
        then: Vec<Instr>,
        /// Taken when `cond == 0`.
        els: Vec<Instr>,
    },
    /// Discard every execution where `cond == 0` (a bounded loop's last iteration, e.g. a CAS retry
    /// loop unrolled as far as the program's writes allow).
    Assume(Expr),
}

/// A thread: a name and its code.
#[derive(Debug, Clone)]
pub struct Thread {
    /// Name (used in the outcome and the printed executions).
    pub name: &'static str,
    /// Straight-line code with branches.
    pub code: Vec<Instr>,
}

/// The final state of one consistent execution.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Per thread (by name): its registers at the end.
    pub regs: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Per location: the value of the last write in modification order.
    pub mem: BTreeMap<&'static str, u64>,
}

impl Outcome {
    /// A register of a thread, `None` if the thread's path never wrote it.
    pub fn reg(&self, thread: &str, reg: &str) -> Option<u64> {
        self.regs.get(thread).and_then(|r| r.get(reg)).copied()
    }
    /// The final value of a location (its initial value if nobody wrote it).
    pub fn mem(&self, loc: &str) -> u64 {
        self.mem.get(loc).copied().unwrap_or(0)
    }
}

/// A litmus program and the outcome it asks about.
#[derive(Clone)]
pub struct Program {
    /// Name (`bh_schedule_vs_blocking_poll`, `SB+sc-fences`).
    pub name: &'static str,
    /// Initial values (a location not listed starts at 0).
    pub init: Vec<(&'static str, u64)>,
    /// The threads.
    pub threads: Vec<Thread>,
    /// The property the outcome predicate violates (`p_no_lost_wakeup`), or the litmus test's
    /// question (`exists`).
    pub property: &'static str,
    /// The outcome asked about: for a protocol program, a violation of `property`.
    pub outcome: fn(&Outcome) -> bool,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("name", &self.name)
            .field("init", &self.init)
            .field("threads", &self.threads)
            .field("property", &self.property)
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// A mutant of `aioctx-mutants`: `<site>:<spec>`, spec one of `ord<k>=<Ordering>`, `split`,
/// `remove`, `fence=AcqRel`, `weak`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutant {
    /// The site name (`notify::accept::swap#1`).
    pub site: String,
    /// The change.
    pub spec: Spec,
}

/// The change a mutant makes at its site (the runtime of `mutants/schema/mutant.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `ord<k>=<o>`: the k-th ordering argument (0: the access's or the CAS's success ordering,
    /// 1: the CAS's failure ordering).
    Order(u8, Order),
    /// `split`: an RMW as a load (its acquire half) and a store (its release half).
    Split,
    /// `remove`: a fence removed.
    Remove,
    /// `fence=<o>`: a fence's ordering.
    Fence(Order),
    /// `weak`: a strong CAS made weak (spurious failures).
    Weak,
}

impl Mutant {
    /// Parse `<site>:<spec>` (an unknown spec is an `InvalidInput` error).
    pub fn parse(s: &str) -> io::Result<Mutant> {
        let (site, spec) = s
            .rsplit_once(':')
            .ok_or_else(|| invalid(format!("mutant `{s}`: expected <site>:<spec>")))?;
        let bad = || invalid(format!("mutant `{s}`: unknown spec `{spec}`"));
        let spec = match spec {
            "split" => Spec::Split,
            "remove" => Spec::Remove,
            "weak" => Spec::Weak,
            _ if spec.starts_with("fence=") => {
                Spec::Fence(Order::parse(&spec["fence=".len()..]).ok_or_else(bad)?)
            }
            _ if spec.starts_with("ord") => {
                let (k, o) = spec[3..].split_once('=').ok_or_else(bad)?;
                Spec::Order(k.parse().map_err(|_| bad())?, Order::parse(o).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        if site.is_empty() {
            return Err(invalid(format!("mutant `{s}`: empty site")));
        }
        Ok(Mutant { site: site.to_string(), spec })
    }
}

impl Program {
    /// Every `(site, orderings)` of the program's labelled instructions, as `aioctx-mutants sites`
    /// prints them (a CAS has two: success, failure).
    pub fn sites(&self) -> Vec<(&'static str, Vec<Order>)> {
        fn go(code: &[Instr], out: &mut Vec<(&'static str, Vec<Order>)>) {
            for i in code {
                match i {
                    Instr::Load { site: Some(s), ord, .. }
                    | Instr::Store { site: Some(s), ord, .. }
                    | Instr::Fence { site: Some(s), ord } => out.push((s, vec![*ord])),
                    Instr::Rmw { site: Some(s), op, ord, fail, .. } => {
                        let ords = match op {
                            RmwOp::Cas(..) => vec![*ord, *fail],
                            _ => vec![*ord],
                        };
                        out.push((s, ords));
                    }
                    Instr::If { then, els, .. } => {
                        go(then, out);
                        go(els, out);
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for t in &self.threads {
            go(&t.code, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    /// The program with `m` applied to every instruction labelled with its site; also returns how
    /// many instructions it changed (0: the site is not in this program, the program is unchanged).
    /// A spec that does not fit the instruction (`remove` on a load) is an `InvalidInput` error.
    pub fn mutated(&self, m: &Mutant) -> io::Result<(Program, usize)> {
        fn go(code: &[Instr], m: &Mutant, n: &mut usize) -> io::Result<Vec<Instr>> {
            let mut out = Vec::new();
            for i in code {
                let here = match i {
                    Instr::Load { site, .. }
                    | Instr::Store { site, .. }
                    | Instr::Rmw { site, .. }
                    | Instr::Fence { site, .. } => *site == Some(m.site.as_str()),
                    _ => false,
                };
                if let Instr::If { cond, then, els } = i {
                    out.push(Instr::If {
                        cond: cond.clone(),
                        then: go(then, m, n)?,
                        els: go(els, m, n)?,
                    });
                    continue;
                }
                if !here {
                    out.push(i.clone());
                    continue;
                }
                *n += 1;
                let misfit =
                    || invalid(format!("mutant {}:{:?} does not apply to {i:?}", m.site, m.spec));
                match (i.clone(), m.spec) {
                    (Instr::Fence { .. }, Spec::Remove) => {}
                    (Instr::Fence { site, .. }, Spec::Fence(o)) => {
                        out.push(Instr::Fence { site, ord: o })
                    }
                    (Instr::Load { site, loc, dst, .. }, Spec::Order(0, o)) => {
                        out.push(Instr::Load { site, loc, ord: o, dst })
                    }
                    (Instr::Store { site, loc, val, .. }, Spec::Order(0, o)) => {
                        out.push(Instr::Store { site, loc, ord: o, val })
                    }
                    (Instr::Rmw { site, loc, op, fail, dst, .. }, Spec::Order(0, o)) => {
                        out.push(Instr::Rmw { site, loc, op, ord: o, fail, dst })
                    }
                    (
                        Instr::Rmw { site, loc, op: op @ RmwOp::Cas(..), ord, dst, .. },
                        Spec::Order(1, o),
                    ) => out.push(Instr::Rmw { site, loc, op, ord, fail: o, dst }),
                    (Instr::Rmw { site, loc, op, ord, dst, .. }, Spec::Split) => {
                        // As the schema's runtime: the old value by a load (the acquire half), the
                        // new one by a store (the release half); a CAS stores only on a match.
                        out.push(Instr::Load { site, loc, ord: ord.acq_half(), dst });
                        let st = |val| Instr::Store { site, loc, ord: ord.rel_half(), val };
                        let old = Expr::Reg(dst);
                        match op {
                            RmwOp::Swap(v) => out.push(st(v)),
                            RmwOp::FetchOr(v) => out.push(st(e::or(old, v))),
                            RmwOp::FetchAnd(v) => out.push(st(e::and(old, v))),
                            RmwOp::FetchAdd(v) => out.push(st(e::add(old, v))),
                            RmwOp::Cas(x, v) => out.push(Instr::If {
                                cond: e::eq(old, x),
                                then: vec![st(v)],
                                els: vec![],
                            }),
                        }
                    }
                    _ => return Err(misfit()),
                }
            }
            Ok(out)
        }
        let mut n = 0;
        let mut p = self.clone();
        for t in &mut p.threads {
            t.code = go(&t.code, m, &mut n)?;
        }
        Ok((p, n))
    }
}
