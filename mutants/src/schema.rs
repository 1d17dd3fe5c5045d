//! Writing the schema into a scratch copy of the tree: every site of every file in scope calls the
//! schema runtime (`mutants/schema/mutant.rs`, copied into the scratch tree at [`RUNTIME_PATH`]), so ONE build per
//! checker holds every ordering and fence mutant, chosen at run time by `AIOCTX_MUTANT`.
//!
//! Why schemata and not one build per mutant: about 200 mutants × 5 checker builds (std per backend,
//! conformance, loom, shuttle, miri) at 30–90 s a build is days on two cores; one build per checker is
//! minutes. Why the token stream (proc-macro2) and not syn's AST: the protocol's accesses sit inside
//! `traced!(...)`, whose body syn does not parse.

use crate::logic::{AltKind, Placed};
use crate::sites::{mutants_of, scan_file, Mutant, Offsets, Site};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files of `impl/src` whose sites are mutated: the protocol core and the context. Not the sync
/// facade (it is the checkers' view of memory), not trace.rs (instrumentation, compiled out of
/// production builds), not kernel.rs (the model kernel: the checkers' environment) nor sys/ (no
/// atomics).
pub fn in_scope(rel: &str) -> bool {
    !(rel.starts_with("sync/")
        || rel.starts_with("sys/")
        || rel == "trace.rs"
        || rel == "kernel.rs")
}

/// The `.rs` files under `src`, relative, sorted (so site ids are deterministic).
pub fn rust_files(src: &Path) -> Vec<String> {
    fn go(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                go(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(
                    p.strip_prefix(base).expect("under base").to_string_lossy().replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(src, src, &mut out);
    out.sort();
    out
}

/// Every site and mutant of the files in scope under `src`.
pub fn scan_tree(src: &Path) -> Result<(Vec<Site>, Vec<Mutant>), String> {
    let mut sites = Vec::new();
    for rel in rust_files(src).into_iter().filter(|r| in_scope(r)) {
        let text = std::fs::read_to_string(src.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        let found = scan_file(&rel, &text, sites.len())?;
        sites.extend(found);
    }
    let mutants = sites.iter().flat_map(mutants_of).collect();
    Ok((sites, mutants))
}

/// One edit of the schema. Nodes nest (a body holds the operators in it, an operand holds an
/// ordering site); [`render`] writes each node around the rendering of the nodes inside it.
#[derive(Debug, Clone)]
pub enum Node {
    /// An ordering site: `from..to` becomes `text`.
    Leaf { from: usize, to: usize, text: String },
    /// Text inserted at a point (a match arm's guard), owned by a mutant.
    Insert { at: usize, text: String, id: usize },
    /// `from..to` (a body's contents, or a guard) kept behind alternatives `(id, replacement)`.
    Alt { from: usize, to: usize, alts: Vec<(usize, String)>, kind: AltKind },
    /// A binary expression `from..to` whose operator `op` has alternatives `(id, operator)`.
    Binary { from: usize, to: usize, op: (usize, usize), alts: Vec<(usize, String)> },
    /// `!e` / `-e` over `from..to`, the operator ending at `op_end`; `id` deletes the operator.
    Unary { from: usize, to: usize, op_end: usize, id: usize },
}

impl Node {
    pub fn leaf(edit: &(usize, usize, String)) -> Node {
        Node::Leaf { from: edit.0, to: edit.1, text: edit.2.clone() }
    }
    fn range(&self) -> (usize, usize) {
        match self {
            Node::Leaf { from, to, .. }
            | Node::Alt { from, to, .. }
            | Node::Binary { from, to, .. }
            | Node::Unary { from, to, .. } => (*from, *to),
            Node::Insert { at, .. } => (*at, *at),
        }
    }
    fn is_insert(&self) -> bool {
        matches!(self, Node::Insert { .. })
    }
    /// Nodes over the same range nest in this order, outermost first: a body that is one
    /// expression holds that expression's operator, a guard holds its operator.
    fn rank(&self) -> u8 {
        match self {
            Node::Insert { .. } => 0,
            Node::Alt { kind: AltKind::Body, .. } => 1,
            Node::Alt { kind: AltKind::Guard, .. } => 2,
            Node::Binary { .. } => 3,
            Node::Unary { .. } => 4,
            Node::Leaf { .. } => 5,
        }
    }
    /// Whether `other` lies inside `self` (an insertion only strictly inside).
    fn contains(&self, other: &Node) -> bool {
        let (a, b) = self.range();
        let (c, d) = other.range();
        if other.is_insert() {
            a < c && c < b
        } else {
            a <= c && d <= b && ((a, b) != (c, d) || self.rank() < other.rank())
        }
    }
    /// Whether the two overlap without one holding the other (such a node cannot be placed).
    fn crosses(&self, other: &Node) -> bool {
        let (a, b) = self.range();
        let (c, d) = other.range();
        !self.is_insert()
            && !other.is_insert()
            && a < d
            && c < b
            && !self.contains(other)
            && !other.contains(self)
    }
    /// The mutant ids of a logic node.
    fn ids(&self) -> Vec<usize> {
        match self {
            Node::Alt { alts, .. } | Node::Binary { alts, .. } => {
                alts.iter().map(|a| a.0).collect()
            }
            Node::Unary { id, .. } | Node::Insert { id, .. } => vec![*id],
            _ => Vec::new(),
        }
    }
}

/// Merge alternatives of the same span into one node (a body with `true` and `false`, an operator
/// with two replacements).
fn merge(nodes: Vec<Node>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for n in nodes {
        let merged = match (&n, out.iter_mut().find(|m| m.range() == n.range())) {
            (Node::Alt { alts: a, kind: k, .. }, Some(Node::Alt { alts, kind, .. }))
                if k == kind =>
            {
                alts.extend(a.iter().cloned());
                true
            }
            (Node::Binary { alts: a, .. }, Some(Node::Binary { alts, .. })) => {
                alts.extend(a.iter().cloned());
                true
            }
            _ => false,
        };
        if !merged {
            out.push(n);
        }
    }
    out
}

/// Split off the logic nodes that cross an ordering site or an earlier logic node; returns the rest
/// and the ids left out.
pub fn crossing(nodes: Vec<Node>) -> (Vec<Node>, Vec<usize>) {
    let mut keep: Vec<Node> = Vec::new();
    let mut out = Vec::new();
    let (leaves, logic): (Vec<Node>, Vec<Node>) =
        nodes.into_iter().partition(|n| matches!(n, Node::Leaf { .. }));
    keep.extend(leaves);
    for n in logic {
        if keep.iter().any(|k| k.crosses(&n)) {
            out.extend(n.ids());
        } else {
            keep.push(n);
        }
    }
    (keep, out)
}

struct Tree {
    node: Node,
    kids: Vec<Tree>,
}

fn build(mut nodes: Vec<Node>) -> Vec<Tree> {
    // Outer first: by start, insertions before a node starting at the same point, wider first,
    // then by rank.
    nodes.sort_by_key(|n| {
        let (a, b) = n.range();
        (a, !n.is_insert(), std::cmp::Reverse(b), n.rank())
    });
    fn place(list: &mut Vec<Tree>, n: Node) {
        if let Some(last) = list.last_mut() {
            if last.node.contains(&n) {
                return place(&mut last.kids, n);
            }
        }
        list.push(Tree { node: n, kids: Vec::new() });
    }
    let mut roots = Vec::new();
    for n in nodes {
        place(&mut roots, n);
    }
    roots
}

/// Writes the schema text and records which output ranges belong to which mutant (for blaming a
/// compile error on the mutant whose replacement does not type-check).
struct Out<'a> {
    src: &'a str,
    text: String,
    owners: Vec<(usize, usize, usize)>,
}

impl Out<'_> {
    fn range(&mut self, a: usize, b: usize, kids: &[Tree]) {
        let mut pos = a;
        for k in kids.iter().filter(|k| {
            let (c, d) = k.node.range();
            c >= a && d <= b
        }) {
            let (c, d) = k.node.range();
            self.text.push_str(&self.src[pos..c]);
            self.node(k);
            pos = d;
        }
        self.text.push_str(&self.src[pos..b]);
    }
    fn owned(&mut self, id: usize, f: impl FnOnce(&mut Self)) {
        let start = self.text.len();
        f(self);
        self.owners.push((start, self.text.len(), id));
    }
    fn node(&mut self, t: &Tree) {
        match &t.node {
            Node::Leaf { text, .. } => self.text.push_str(text),
            Node::Insert { text, id, .. } => self.owned(*id, |o| o.text.push_str(text)),
            Node::Alt { from, to, alts, kind } => {
                let paren = *kind == AltKind::Guard;
                if paren {
                    self.text.push('(');
                }
                for (id, with) in alts {
                    self.owned(*id, |o| {
                        o.text.push_str(&format!("if crate::mutant::on({id}) {{ {with} }}"))
                    });
                    self.text.push_str(" else ");
                }
                self.text.push_str("{ ");
                self.range(*from, *to, &t.kids);
                self.text.push_str(" }");
                if paren {
                    self.text.push(')');
                }
            }
            Node::Binary { from, to, op, alts } => {
                self.text.push('(');
                for (id, with) in alts {
                    self.owned(*id, |o| {
                        o.text.push_str(&format!("if crate::mutant::on({id}) {{ "));
                        o.range(*from, op.0, &t.kids);
                        o.text.push_str(&format!(" {with} "));
                        o.range(op.1, *to, &t.kids);
                        o.text.push_str(" }");
                    });
                    self.text.push_str(" else ");
                }
                self.text.push_str("{ ");
                self.range(*from, *to, &t.kids);
                self.text.push_str(" })");
            }
            Node::Unary { from, to, op_end, id } => {
                self.text.push('(');
                self.owned(*id, |o| {
                    o.text.push_str(&format!("if crate::mutant::on({id}) {{ "));
                    o.range(*op_end, *to, &t.kids);
                    o.text.push_str(" }");
                });
                self.text.push_str(" else { ");
                self.range(*from, *to, &t.kids);
                self.text.push_str(" })");
            }
        }
    }
}

/// Render `src` with `nodes`; returns the text and the output ranges owned by each mutant id.
/// A logic node that crosses another (overlaps without nesting) is left out; [`crossing`] names it.
pub fn render(src: &str, nodes: Vec<Node>) -> (String, Vec<(usize, usize, usize)>) {
    let (nodes, _) = crossing(merge(nodes));
    let roots = build(nodes);
    let mut o = Out { src, text: String::with_capacity(src.len() * 2), owners: Vec::new() };
    o.range(0, src.len(), &roots);
    (o.text, o.owners)
}

const RUNTIME: &str = include_str!("../schema/mutant.rs");
/// Where the runtime goes, relative to `impl/src`.
pub const RUNTIME_PATH: &str = "sync/mutant.rs";

/// The schema written into a scratch tree.
pub struct Applied {
    pub sites: Vec<Site>,
    /// Ordering mutants, then logic mutants (spec `on`, site = their id).
    pub mutants: Vec<Mutant>,
    /// Per file (relative to impl/src): output ranges owned by a mutant id.
    pub owners: BTreeMap<String, Vec<(usize, usize, usize)>>,
    /// Logic mutants syn could not place.
    pub unplaced: Vec<usize>,
}

/// Rewrite the scratch `src` in place into the schema: every ordering site, and the logic mutants
/// `logic` (ids from `sites.len()` on) but those in `skip`. Refuses a tree that is not a scratch
/// copy (a `.git` entry beside its package), so the real tree is never rewritten.
pub fn apply(src: &Path, logic: &[Placed], skip: &BTreeSet<usize>) -> Result<Applied, String> {
    let pkg: PathBuf = src.join("..");
    let root = pkg.join("..");
    if root.join(".git").exists() {
        return Err(format!(
            "{}: refusing to rewrite a git checkout (give a scratch copy)",
            src.display()
        ));
    }
    let (sites, mut mutants) = scan_tree(src)?;
    let mut files: BTreeSet<String> = sites.iter().map(|s| s.file.clone()).collect();
    files.extend(logic.iter().map(|p| p.listed.file.trim_start_matches("impl/src/").to_string()));
    let mut owners = BTreeMap::new();
    let mut unplaced = Vec::new();
    for rel in files {
        let p = src.join(&rel);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{rel}: {e}"))?;
        let mut nodes: Vec<Node> =
            sites.iter().filter(|s| s.file == rel).map(|s| Node::leaf(&s.edit)).collect();
        let mine: Vec<Placed> = logic
            .iter()
            .filter(|p| {
                p.listed.file.trim_start_matches("impl/src/") == rel && !skip.contains(&p.id)
            })
            .cloned()
            .collect();
        if !mine.is_empty() {
            let off = Offsets::new(&text);
            let (ns, un) = crate::logic::nodes(&text, &mine, &|lc| off.at(lc))
                .map_err(|e| format!("{rel}: {e}"))?;
            nodes.extend(ns);
            unplaced.extend(un);
        }
        let (kept, crossed) = crossing(merge(nodes));
        unplaced.extend(crossed);
        let (mut out, own) = render(&text, kept);
        out.push_str("\n#[allow(unused_imports)]\nuse crate::mutant::{MutAtomic as _, MutBool as _, MutInt as _};\n");
        std::fs::write(&p, out).map_err(|e| format!("{rel}: {e}"))?;
        owners.insert(rel, own);
    }
    // Stable names: cargo-mutants' own name without its line and column (which any edit above
    // moves), plus ` #k` when the same replacement occurs k times in one function.
    let base = |p: &crate::logic::Placed| {
        let file = p.listed.file.trim_start_matches("impl/src/");
        format!(
            "{file}: {}",
            p.listed.name.split_once(": ").map_or(p.listed.name.as_str(), |x| x.1)
        )
    };
    let mut total = std::collections::HashMap::<String, usize>::new();
    for p in logic {
        *total.entry(base(p)).or_default() += 1;
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for p in logic {
        let file = p.listed.file.trim_start_matches("impl/src/");
        let mut name = base(p);
        if total[&name] > 1 {
            let k = seen.entry(name.clone()).or_default();
            *k += 1;
            name = format!("{name} #{k}");
        }
        mutants.push(Mutant {
            site: p.id,
            file: file.to_string(),
            line: p.listed.start.0,
            spec: "on".into(),
            name,
            desc: format!("{} (cargo-mutants {})", p.listed.name, p.listed.genre),
            visible_under_sc: true,
        });
    }
    let lib = src.join("lib.rs");
    let mut text = std::fs::read_to_string(&lib).map_err(|e| format!("lib.rs: {e}"))?;
    // In sync/: like the facade, the runtime is the checkers' instrumentation (its coverage bitmap and
    // counters are std atomics, invisible to loom and shuttle on purpose).
    text.push_str("\n#[doc(hidden)]\n#[path = \"sync/mutant.rs\"]\npub mod mutant;\n");
    std::fs::write(&lib, text).map_err(|e| format!("lib.rs: {e}"))?;
    let n = sites.len() + logic.len();
    let rt = RUNTIME.replace("__SITES__", &n.max(1).to_string());
    std::fs::write(src.join(RUNTIME_PATH), rt).map_err(|e| format!("{RUNTIME_PATH}: {e}"))?;
    Ok(Applied { sites, mutants, owners, unplaced })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_operators_bodies_and_sites() {
        let src = "fn f(a: u32) -> bool { a.load(Ordering::SeqCst) == 1 && !g() }";
        let body = (src.find("{ ").unwrap() + 2, src.rfind(" }").unwrap());
        let eq = src.find("==").unwrap();
        let load = src.find("load(").unwrap();
        let not = src.find("!g").unwrap();
        let nodes = vec![
            Node::Alt {
                from: body.0,
                to: body.1,
                alts: vec![(10, "true".into())],
                kind: AltKind::Body,
            },
            Node::Alt {
                from: body.0,
                to: body.1,
                alts: vec![(11, "false".into())],
                kind: AltKind::Body,
            },
            Node::Binary {
                from: body.0,
                to: src.find(" &&").unwrap(),
                op: (eq, eq + 2),
                alts: vec![(12, "!=".into())],
            },
            Node::Unary { from: not, to: body.1, op_end: not + 1, id: 13 },
            Node::Leaf { from: load, to: load + 5, text: "__m_load(0, ".into() },
        ];
        let (out, owners) = render(src, nodes);
        assert_eq!(
            out,
            "fn f(a: u32) -> bool { if crate::mutant::on(10) { true } else if crate::mutant::on(11) { false } else { \
             (if crate::mutant::on(12) { a.__m_load(0, Ordering::SeqCst)  !=  1 } else { a.__m_load(0, Ordering::SeqCst) == 1 }) \
             && (if crate::mutant::on(13) { g() } else { !g() }) } }"
        );
        assert_eq!(owners.iter().map(|o| o.2).collect::<Vec<_>>(), [10, 11, 12, 13]);
    }

    #[test]
    fn arm_insertions_sit_outside_the_guard() {
        let src = "match x { A if c => 1, _ => 2 }";
        let g = src.find("c =>").unwrap();
        let nodes = vec![
            Node::Insert { at: g, text: "!crate::mutant::on(5) && (".into(), id: 5 },
            Node::Insert { at: g + 1, text: ")".into(), id: 5 },
            Node::Alt { from: g, to: g + 1, alts: vec![(6, "true".into())], kind: AltKind::Guard },
        ];
        let (out, _) = render(src, nodes);
        assert_eq!(out, "match x { A if !crate::mutant::on(5) && ((if crate::mutant::on(6) { true } else { c })) => 1, _ => 2 }");
    }
}
