//! The ordering and fence sites of a source tree, and their mutants.
//!
//! A *site* is one atomic access with an explicit `Ordering` argument (`x.load(Ordering::Acquire)`,
//! `x.compare_exchange(a, b, Ordering::AcqRel, Ordering::Relaxed)`, ...) or one `fence(Ordering::X)`.
//! Sites are found in the token stream, so they are found inside macro bodies too (`traced!`), and
//! never in comments or strings. Code compiled only into a planted-bug build
//! (`#[cfg(aioctx_bug = "...")]`), code that runs only there (the block of
//! `if planted!("...") { ... }` or `if cfg!(aioctx_bug = "...") { ... }`; its `else` is the production
//! code and has sites) and code
//! compiled only into unit tests (`#[cfg(test)]`) has no sites.
//!
//! Every site gets its mutants from the rules below, never from a list: a new atomic in the code has
//! its mutants the next time the generator runs.
//!
//! | site | mutants |
//! |---|---|
//! | each `Ordering` argument | weakened one step: SeqCst → AcqRel (RMW) / Release (store) / Acquire (load, CAS failure); AcqRel → Release and → Acquire; Release, Acquire → Relaxed |
//! | `fence(o)` | removed; a SeqCst fence → AcqRel |
//! | an RMW (`swap`, `fetch_*`, `compare_exchange*`, `fetch_update`) | split into a load (the acquire half of its ordering) and a store (the release half): the RMW's atomicity lost. For `swap` this is "the swap made a store" (the old value then comes from the separate load) |
//! | `compare_exchange` | made `compare_exchange_weak` (the schema fails it spuriously on every other call) |

use proc_macro2::{Delimiter, LineColumn, TokenStream, TokenTree};

/// One site in a file.
#[derive(Debug, Clone)]
pub struct Site {
    /// Index in the tree's site list (the schema's numeric id; not stable across edits).
    pub id: usize,
    /// Path relative to the scanned `src` directory, e.g. `fdmon/epoll.rs`.
    pub file: String,
    pub line: usize,
    /// The enclosing `fn` (or `-` at module level).
    pub func: String,
    /// `fence`, `load`, `store`, `swap`, `fetch_add`, ...
    pub op: String,
    /// 1-based ordinal of this op in this function (for the stable name).
    pub ordinal: usize,
    /// The orderings as written, in argument order (`SeqCst`, ...).
    pub orders: Vec<String>,
    /// Byte range to replace, and its replacement, in the schema.
    pub edit: (usize, usize, String),
}

impl Site {
    /// Stable name of the site: `notify::accept::swap#1` (file stem path, function, op and its
    /// ordinal); a mutant's name is this, `:`, its spec. Litmus programs label their events with it
    /// (aioctx-model's `c11`).
    pub fn name(&self) -> String {
        let stem = self.file.trim_end_matches(".rs").trim_end_matches("/mod");
        format!("{stem}::{}::{}#{}", self.func, self.op, self.ordinal)
    }
}

/// One mutant: a site and what changes there.
#[derive(Debug, Clone)]
pub struct Mutant {
    pub site: usize,
    /// File (relative to impl/src) and line of the site.
    pub file: String,
    pub line: usize,
    /// What the schema runtime applies, e.g. `ord0=Relaxed`, `split`, `weak`, `remove`, `fence=AcqRel`.
    pub spec: String,
    /// Stable name: `notify::accept::swap#1:split` (file stem path, function, op and its ordinal, spec).
    pub name: String,
    /// Human description.
    pub desc: String,
    /// Whether a sequentially consistent checker (shuttle: every atomic SeqCst, `fence` a no-op) can
    /// tell it from the original: false for ordering and fence mutants.
    pub visible_under_sc: bool,
}

const ORDERINGS: [&str; 5] = ["Relaxed", "Release", "Acquire", "AcqRel", "SeqCst"];
const RMW: [&str; 11] = [
    "swap",
    "fetch_add",
    "fetch_sub",
    "fetch_and",
    "fetch_or",
    "fetch_xor",
    "fetch_max",
    "fetch_min",
    "fetch_update",
    "compare_exchange",
    "compare_exchange_weak",
];

fn is_atomic_method(m: &str) -> bool {
    m == "load" || m == "store" || RMW.contains(&m)
}

#[derive(Clone, Copy)]
enum Role {
    Load,
    Store,
    Rmw,
    Fail,
}

/// One step weaker, valid for the role.
fn weaken(role: Role, o: &str) -> &'static [&'static str] {
    match (role, o) {
        (Role::Load | Role::Fail, "SeqCst") => &["Acquire"],
        (Role::Load | Role::Fail, "Acquire") => &["Relaxed"],
        (Role::Store, "SeqCst") => &["Release"],
        (Role::Store, "Release") => &["Relaxed"],
        (Role::Rmw, "SeqCst") => &["AcqRel"],
        (Role::Rmw, "AcqRel") => &["Release", "Acquire"],
        (Role::Rmw, "Release" | "Acquire") => &["Relaxed"],
        _ => &[],
    }
}

fn roles(op: &str, n: usize) -> Vec<Role> {
    match op {
        "load" => vec![Role::Load],
        "store" => vec![Role::Store],
        "compare_exchange" | "compare_exchange_weak" | "fetch_update" => {
            vec![Role::Rmw, Role::Fail]
        }
        _ => vec![Role::Rmw],
    }
    .into_iter()
    .chain(std::iter::repeat(Role::Rmw))
    .take(n)
    .collect()
}

/// The mutants of one site, by the rules of the module doc.
pub fn mutants_of(s: &Site) -> Vec<Mutant> {
    let base = s.name();
    let mut out = Vec::new();
    let mut push = |spec: String, desc: String, sc: bool| {
        out.push(Mutant {
            site: s.id,
            file: s.file.clone(),
            line: s.line,
            name: format!("{base}:{spec}"),
            spec,
            desc,
            visible_under_sc: sc,
        })
    };
    if s.op == "fence" {
        push("remove".into(), format!("fence({}) removed", s.orders[0]), false);
        if s.orders[0] == "SeqCst" {
            push("fence=AcqRel".into(), "fence(SeqCst) -> fence(AcqRel)".into(), false);
        }
        return out;
    }
    for (k, (o, role)) in s.orders.iter().zip(roles(&s.op, s.orders.len())).enumerate() {
        for w in weaken(role, o) {
            push(format!("ord{k}={w}"), format!("{} ordering #{k}: {o} -> {w}", s.op), false);
        }
    }
    if RMW.contains(&s.op.as_str()) {
        let what = if s.op == "swap" {
            "swap made a store (old value by a separate load)"
        } else {
            "RMW split into load + store"
        };
        push("split".into(), format!("{}: {what}", s.op), true);
    }
    if s.op == "compare_exchange" {
        push(
            "weak".into(),
            "compare_exchange -> compare_exchange_weak (spurious failures)".into(),
            true,
        );
    }
    out
}

/// Byte offset of a line/column (column in chars) in `src`.
pub struct Offsets<'a> {
    src: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    pub fn new(src: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { src, line_starts }
    }
    pub fn at(&self, lc: LineColumn) -> usize {
        let start = self.line_starts[lc.line - 1];
        let line = &self.src[start..];
        start + line.char_indices().nth(lc.column).map_or(line.len(), |(i, _)| i)
    }
}

/// An `Ordering` argument: `Ordering::X` or a longer path ending in it.
fn ordering_of(arg: &[TokenTree]) -> Option<String> {
    let s: String = arg.iter().map(|t| t.to_string()).collect::<Vec<_>>().join("").replace(' ', "");
    let (path, last) = s.rsplit_once("::")?;
    (path.ends_with("Ordering") && ORDERINGS.contains(&last)).then(|| last.to_string())
}

fn split_args(ts: TokenStream) -> Vec<Vec<TokenTree>> {
    let mut args = vec![Vec::new()];
    for t in ts {
        match &t {
            TokenTree::Punct(p) if p.as_char() == ',' => args.push(Vec::new()),
            _ => args.last_mut().expect("non-empty").push(t),
        }
    }
    if args.last().is_some_and(Vec::is_empty) {
        args.pop();
    }
    args
}

fn is_punct(t: Option<&TokenTree>, c: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// Attributes whose item has no sites in the correct build.
fn skips_item(attr: &str) -> bool {
    let a = attr.replace(' ', "");
    a == "cfg(test)"
        || (a.starts_with("cfg(aioctx_bug") || a.starts_with("cfg(any(aioctx_bug"))
            && !a.contains("not(")
}

/// `if planted!("...")` or `if cfg!(aioctx_bug ...)` (not `if !planted!(...)`, whose block is the
/// production code) at `toks[i]`.
fn is_bug_branch(toks: &[TokenTree], i: usize) -> bool {
    matches!(&toks[i], TokenTree::Ident(id) if id == "if")
        && is_punct(toks.get(i + 2), '!')
        && match (toks.get(i + 1), toks.get(i + 3)) {
            (Some(TokenTree::Ident(m)), Some(TokenTree::Group(_))) if m == "planted" => true,
            (Some(TokenTree::Ident(m)), Some(TokenTree::Group(g))) if m == "cfg" => {
                skips_item(&format!("cfg({})", g.stream()))
            }
            _ => false,
        }
}

struct Scan<'a> {
    file: String,
    off: Offsets<'a>,
    sites: Vec<Site>,
    next_id: usize,
}

impl Scan<'_> {
    fn walk(&mut self, ts: TokenStream, func: &str) {
        let toks: Vec<TokenTree> = ts.into_iter().collect();
        let mut pending_fn: Option<String> = None;
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    if let Some(TokenTree::Group(g)) = toks.get(i + 1) {
                        if g.delimiter() == Delimiter::Bracket
                            && skips_item(&g.stream().to_string())
                        {
                            // Skip the item or statement: up to its `;` or its first `{}` block.
                            i += 2;
                            while i < toks.len() {
                                let end = is_punct(toks.get(i), ';')
                                    || matches!(&toks[i], TokenTree::Group(g) if g.delimiter() == Delimiter::Brace);
                                i += 1;
                                if end {
                                    break;
                                }
                            }
                            continue;
                        }
                    }
                }
                TokenTree::Ident(_) if is_bug_branch(&toks, i) => {
                    // Skip the condition and the planted bug's block; an `else` is walked as usual.
                    i += 4;
                    while i < toks.len()
                        && !matches!(&toks[i], TokenTree::Group(g) if g.delimiter() == Delimiter::Brace)
                    {
                        i += 1;
                    }
                    i += 1;
                    continue;
                }
                TokenTree::Ident(id) if id == "fn" => {
                    if let Some(TokenTree::Ident(name)) = toks.get(i + 1) {
                        pending_fn = Some(name.to_string());
                    }
                }
                TokenTree::Ident(id)
                    if id == "fence"
                        && !is_punct(i.checked_sub(1).and_then(|j| toks.get(j)), '.') =>
                {
                    if let Some(TokenTree::Group(g)) = toks.get(i + 1) {
                        let args = split_args(g.stream());
                        if let [arg] = args.as_slice() {
                            if let Some(o) = ordering_of(arg) {
                                // Replace the whole path `[a::b::]fence(` with the schema's fence.
                                let mut start = i;
                                while start >= 3
                                    && is_punct(toks.get(start - 1), ':')
                                    && is_punct(toks.get(start - 2), ':')
                                    && matches!(toks.get(start - 3), Some(TokenTree::Ident(_)))
                                {
                                    start -= 3;
                                }
                                let from = self.off.at(toks[start].span().start());
                                let to = self.off.at(g.span_open().end());
                                let id = self.next_id;
                                let line = id_line(&toks[i]);
                                self.push(
                                    func,
                                    "fence",
                                    vec![o],
                                    line,
                                    (from, to, format!("crate::mutant::fence({id}, ")),
                                );
                            }
                        }
                    }
                }
                TokenTree::Punct(p) if p.as_char() == '.' => {
                    if let (Some(TokenTree::Ident(m)), Some(TokenTree::Group(g))) =
                        (toks.get(i + 1), toks.get(i + 2))
                    {
                        let m = m.to_string();
                        if g.delimiter() == Delimiter::Parenthesis && is_atomic_method(&m) {
                            let orders: Vec<String> = split_args(g.stream())
                                .iter()
                                .filter_map(|a| ordering_of(a))
                                .collect();
                            if !orders.is_empty() {
                                let from = self.off.at(toks[i + 1].span().start());
                                let to = self.off.at(g.span_open().end());
                                let id = self.next_id;
                                let line = id_line(&toks[i + 1]);
                                self.push(
                                    func,
                                    &m,
                                    orders,
                                    line,
                                    (from, to, format!("__m_{m}({id}, ")),
                                );
                            }
                        }
                    }
                }
                TokenTree::Group(g) => {
                    let f =
                        if g.delimiter() == Delimiter::Brace { pending_fn.take() } else { None };
                    self.walk(g.stream(), f.as_deref().unwrap_or(func));
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn push(
        &mut self,
        func: &str,
        op: &str,
        orders: Vec<String>,
        line: usize,
        edit: (usize, usize, String),
    ) {
        let ordinal = 1 + self.sites.iter().filter(|s| s.func == func && s.op == op).count();
        self.sites.push(Site {
            id: self.next_id,
            file: self.file.clone(),
            line,
            func: func.to_string(),
            op: op.to_string(),
            ordinal,
            orders,
            edit,
        });
        self.next_id += 1;
    }
}

fn id_line(t: &TokenTree) -> usize {
    t.span().start().line
}

/// The sites of one file, numbered from `first_id`.
pub fn scan_file(rel: &str, src: &str, first_id: usize) -> Result<Vec<Site>, String> {
    let ts: TokenStream = src.parse().map_err(|e| format!("{rel}: cannot tokenize: {e:?}"))?;
    let mut scan = Scan {
        file: rel.to_string(),
        off: Offsets::new(src),
        sites: Vec::new(),
        next_id: first_id,
    };
    scan.walk(ts, "-");
    Ok(scan.sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
//! x.load(Ordering::SeqCst) in a doc comment is no site
fn notify(&self) {
    traced!(Step::A, fence(Ordering::Release));
    traced!(Step::B, let _old = self.notified.swap(true, Ordering::Relaxed); notified = 1);
    #[cfg(aioctx_bug = "x")]
    fence(Ordering::SeqCst);
    #[cfg(not(aioctx_bug = "x"))]
    std::sync::atomic::fence(Ordering::SeqCst);
    let s = "y.store(1, Ordering::SeqCst)";
    match list.compare_exchange(h, n, Ordering::AcqRel, Ordering::Acquire) { _ => {} }
    v.swap(0, 1); // a Vec's swap: no ordering, no site
}
#[cfg(test)]
mod tests { fn t() { x.load(Ordering::SeqCst); } }
"#;

    #[test]
    fn finds_sites_in_macros_and_skips_comments_strings_bug_and_test_code() {
        let sites = scan_file("notify.rs", SRC, 0).unwrap();
        let ops: Vec<_> =
            sites.iter().map(|s| (s.op.as_str(), s.orders.join(","), s.line)).collect();
        assert_eq!(
            ops,
            [
                ("fence", "Release".to_string(), 4),
                ("swap", "Relaxed".to_string(), 5),
                ("fence", "SeqCst".to_string(), 9),
                ("compare_exchange", "AcqRel,Acquire".to_string(), 11)
            ]
        );
        let leaves: Vec<_> = sites.iter().map(|s| crate::schema::Node::leaf(&s.edit)).collect();
        let out = crate::schema::render(SRC, leaves).0;
        assert!(
            out.contains("traced!(Step::A, crate::mutant::fence(0, Ordering::Release));"),
            "{out}"
        );
        assert!(out.contains("self.notified.__m_swap(1, true, Ordering::Relaxed)"), "{out}");
        assert!(out.contains("    crate::mutant::fence(2, Ordering::SeqCst);"), "{out}");
        assert!(out.contains("list.__m_compare_exchange(3, h, n,"), "{out}");
        assert!(out.contains("\"y.store(1, Ordering::SeqCst)\""), "strings are untouched");
    }

    #[test]
    fn a_cfg_bug_branch_has_no_sites_and_its_else_has() {
        let src = r#"
fn arm(&self) {
    if cfg!(aioctx_bug = "y") { w.fetch_add(2, Ordering::SeqCst); } else { fence(Ordering::AcqRel); }
    if planted!("z") && x { fence(Ordering::SeqCst); }
    if !planted!("y") { fence(Ordering::Acquire); }
    let n = w.load(Ordering::Relaxed);
}
"#;
        let ops: Vec<_> = scan_file("notify.rs", src, 0)
            .unwrap()
            .iter()
            .map(|s| (s.op.clone(), s.orders.join(","), s.line))
            .collect();
        let want = [("fence", "AcqRel", 3), ("fence", "Acquire", 5), ("load", "Relaxed", 6)];
        assert_eq!(ops, want.map(|(o, r, l)| (o.to_string(), r.to_string(), l)));
    }

    #[test]
    fn mutants_follow_the_rules() {
        let sites = scan_file("notify.rs", SRC, 0).unwrap();
        let names: Vec<String> = sites.iter().flat_map(mutants_of).map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "notify::notify::fence#1:remove",
                "notify::notify::swap#1:split",
                "notify::notify::fence#2:remove",
                "notify::notify::fence#2:fence=AcqRel",
                "notify::notify::compare_exchange#1:ord0=Release",
                "notify::notify::compare_exchange#1:ord0=Acquire",
                "notify::notify::compare_exchange#1:ord1=Relaxed",
                "notify::notify::compare_exchange#1:split",
                "notify::notify::compare_exchange#1:weak",
            ]
        );
    }
}
