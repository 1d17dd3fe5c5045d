//! cargo-mutants' logic mutants (conditions, returns, arithmetic, match arms), turned into schema
//! nodes so that they share the ordering mutants' builds: cargo-mutants lists them (`--list
//! --json`: a file, a span and a replacement each), syn finds the expression around each span (the
//! operands of a binary operator, the operand of `!`, the pattern of a match arm), and the schema
//! keeps the original and every replacement behind `crate::mutant::on(id)`.
//!
//! | genre | schema |
//! |---|---|
//! | FnValue (a body replaced by a value) | `if on(a) { value_a } else if on(b) { value_b } else { body }` |
//! | BinaryOperator | `(if on(a) { L op_a R } else { L op R })` |
//! | UnaryOperator (delete `!` / `-`) | `(if on(a) { E } else { !E })` |
//! | MatchArmGuard | `(if on(a) { true } else { guard })` |
//! | MatchArm (delete) | the arm gets the guard `if !on(a)` (or `!on(a) && (guard)`) |

use crate::schema::Node;
use proc_macro2::LineColumn;
use syn::spanned::Spanned;
use syn::visit::Visit;

/// One cargo-mutants mutant, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub file: String,
    pub genre: String,
    /// cargo-mutants' own name: `impl/src/bh.rs:173:62: replace | with & in Bh::schedule_idle`.
    pub name: String,
    pub replacement: String,
    /// 1-based line, 1-based column, end exclusive.
    pub start: (usize, usize),
    pub end: (usize, usize),
}

/// Parse `cargo mutants --list --json` output (an array of objects).
pub fn parse_list(json: &str) -> Result<Vec<Listed>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("cargo mutants --list --json: {e}"))?;
    let arr = v.as_array().ok_or("cargo mutants --list --json: not an array")?;
    let mut out = Vec::new();
    for m in arr {
        let s =
            |k: &str| m[k].as_str().map(String::from).ok_or(format!("a listed mutant without {k}"));
        let pos = |k: &str| -> Result<(usize, usize), String> {
            let p = &m["span"][k];
            match (p["line"].as_u64(), p["column"].as_u64()) {
                (Some(l), Some(c)) => Ok((l as usize, c as usize)),
                _ => Err(format!("a listed mutant without span.{k}")),
            }
        };
        out.push(Listed {
            file: s("file")?,
            genre: s("genre")?,
            name: s("name")?,
            replacement: s("replacement")?,
            start: pos("start")?,
            end: pos("end")?,
        });
    }
    Ok(out)
}

/// A logic mutant placed in the schema: its global id and how it changes the code.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: usize,
    pub listed: Listed,
}

/// A start and an end.
type Span = (LineColumn, LineColumn);

/// What syn found at the mutants' spans in one file.
#[derive(Default)]
struct Finder {
    /// (op start, op end, whole expr start, whole expr end) of every binary expression.
    binary: Vec<(LineColumn, LineColumn, LineColumn, LineColumn)>,
    /// (op start, op end, expr end) of every `!x` / `-x`.
    unary: Vec<(LineColumn, LineColumn, LineColumn)>,
    /// (arm start, pattern end, guard span) of every match arm.
    arms: Vec<(LineColumn, LineColumn, Option<Span>)>,
}

impl<'a> Visit<'a> for Finder {
    fn visit_expr_binary(&mut self, e: &'a syn::ExprBinary) {
        let op = e.op.span();
        self.binary.push((op.start(), op.end(), e.left.span().start(), e.right.span().end()));
        syn::visit::visit_expr_binary(self, e);
    }
    fn visit_expr_unary(&mut self, e: &'a syn::ExprUnary) {
        let op = e.op.span();
        self.unary.push((op.start(), op.end(), e.expr.span().end()));
        syn::visit::visit_expr_unary(self, e);
    }
    fn visit_arm(&mut self, a: &'a syn::Arm) {
        let guard = a.guard.as_ref().map(|(_, g)| (g.span().start(), g.span().end()));
        let start = a.attrs.first().map_or_else(|| a.pat.span().start(), |x| x.span().start());
        self.arms.push((start, a.pat.span().end(), guard));
        syn::visit::visit_arm(self, a);
    }
}

fn lc(p: (usize, usize)) -> LineColumn {
    LineColumn { line: p.0, column: p.1 - 1 }
}

/// The schema nodes of the logic mutants of one file (`off` converts a LineColumn to a byte offset).
/// Mutants whose span syn cannot place are returned in the second list (reported as unviable).
pub fn nodes(
    src: &str,
    placed: &[Placed],
    off: &dyn Fn(LineColumn) -> usize,
) -> Result<(Vec<Node>, Vec<usize>), String> {
    let file = syn::parse_file(src).map_err(|e| format!("syn: {e}"))?;
    let mut f = Finder::default();
    f.visit_file(&file);
    let mut out: Vec<Node> = Vec::new();
    let mut unplaced = Vec::new();
    for p in placed {
        let m = &p.listed;
        let (s, e) = (lc(m.start), lc(m.end));
        match m.genre.as_str() {
            "FnValue" => out.push(Node::Alt {
                from: off(s),
                to: off(e),
                alts: vec![(p.id, m.replacement.clone())],
                kind: AltKind::Body,
            }),
            "MatchArmGuard" => out.push(Node::Alt {
                from: off(s),
                to: off(e),
                alts: vec![(p.id, m.replacement.clone())],
                kind: AltKind::Guard,
            }),
            "BinaryOperator" => match f.binary.iter().find(|b| b.0 == s) {
                Some(&(os, oe, xs, xe)) => out.push(Node::Binary {
                    from: off(xs),
                    to: off(xe),
                    op: (off(os), off(oe)),
                    alts: vec![(p.id, m.replacement.clone())],
                }),
                None => unplaced.push(p.id),
            },
            "UnaryOperator" => match f.unary.iter().find(|u| u.0 == s) {
                Some(&(os, oe, xe)) => {
                    out.push(Node::Unary { from: off(os), to: off(xe), op_end: off(oe), id: p.id })
                }
                None => unplaced.push(p.id),
            },
            "MatchArm" => match f.arms.iter().find(|a| a.0 == s) {
                Some(&(_, pe, None)) => out.push(Node::Insert {
                    at: off(pe),
                    text: format!(" if !crate::mutant::on({})", p.id),
                    id: p.id,
                }),
                Some(&(_, _, Some((gs, ge)))) => {
                    out.push(Node::Insert {
                        at: off(gs),
                        text: format!("!crate::mutant::on({}) && (", p.id),
                        id: p.id,
                    });
                    out.push(Node::Insert { at: off(ge), text: ")".into(), id: p.id });
                }
                None => unplaced.push(p.id),
            },
            _ => unplaced.push(p.id),
        }
    }
    Ok((out, unplaced))
}

/// How an `Alt` node keeps its alternatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AltKind {
    /// A function body: `if on(a) { v } else { body }` (a block's contents).
    Body,
    /// An expression: `(if on(a) { v } else { expr })`.
    Guard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_mutants_list() {
        let j = r#"[{"diff":"x \"y\"\n","file":"impl/src/bh.rs","genre":"BinaryOperator","name":"impl/src/bh.rs:2:7: replace == with != in f","package":"aioctx","replacement":"!=","span":{"end":{"column":9,"line":2},"start":{"column":7,"line":2}}}]"#;
        let l = parse_list(j).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].start, l[0].end, l[0].replacement.as_str()), ((2, 7), (2, 9), "!="));
    }
}
