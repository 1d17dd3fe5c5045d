//! Reading the names each side uses: Promela labels, trace keys, globals and BUG_* variants; the
//! implementation's traced steps and value keys; model citations in comments. `tests/names.rs`
//! compares them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::root;

/// The current-protocol models: `promela/*.pml` except `common.pml` and the 2015 mirrors `qemu_*`.
pub fn current_models() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("promela"))
        .expect("promela/")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension()? == "pml" && stem != "common" && !stem.starts_with("qemu_"))
                .then_some(stem)
        })
        .collect();
    v.sort();
    v
}

/// A model after the C preprocessor (comments gone, common.pml and the TRACE macros expanded), with
/// `defines` set: `gcc -E -P -x c`, as spin and ci/spin do.
pub fn preprocess(model: &str, defines: &[&str]) -> String {
    let mut c = Command::new("gcc");
    c.args(["-E", "-P", "-x", "c"]).current_dir(root().join("promela"));
    for d in defines {
        c.arg(format!("-D{d}"));
    }
    let o = c.arg(format!("{model}.pml")).output().expect("gcc -E");
    assert!(o.status.success(), "gcc -E {model}.pml: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("utf-8")
}

/// Every `#ifdef`/`#if` symbol tested in a model or common.pml.
pub fn tested_symbols(model: &str) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for f in [format!("{model}.pml"), "common.pml".into()] {
        let text = std::fs::read_to_string(root().join("promela").join(f)).expect("pml");
        for l in text.lines() {
            let t = l.trim_start();
            if let Some(rest) = t.strip_prefix('#') {
                let rest = rest.trim_start();
                if ["if", "ifdef", "ifndef", "elif"].iter().any(|k| rest.starts_with(k)) {
                    for w in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                        if w.starts_with("BUG_")
                            || w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && w.len() > 3
                        {
                            s.insert(w.to_string());
                        }
                    }
                }
            }
        }
    }
    s
}

fn ident_at(s: &str, end: usize) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = end;
    while i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        i -= 1;
    }
    (i < end && !b[i].is_ascii_digit()).then(|| &s[i..end])
}

/// The labels of a preprocessed model (an identifier followed by one `:` at the start of a
/// statement), as ci/spin extracts them. `::` (options) are not labels.
pub fn labels(pre: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = pre.as_bytes();
    for (i, _) in pre.match_indices(':') {
        if b.get(i + 1) == Some(&b':') || (i > 0 && b[i - 1] == b':') {
            continue;
        }
        let Some(id) = ident_at(pre, i) else { continue };
        let start = i - id.len();
        let before = pre[..start].trim_end();
        let stmt_start = before.is_empty()
            || before.ends_with(';')
            || before.ends_with('{')
            || before.ends_with("->")
            || before.ends_with(':');
        if stmt_start && id != "default" {
            out.insert(id.to_string());
        }
    }
    out
}

/// The trace lines a preprocessed model prints: label → keys (`"@@@ %d <label> k=%d ..."`).
pub fn trace_lines(pre: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, _) in pre.match_indices("\"@@@ %d ") {
        let rest = &pre[i + 8..];
        let line = &rest[..rest.find('"').unwrap_or(rest.len())];
        let line = line.trim_end_matches("\\n");
        let mut w = line.split_whitespace();
        let Some(label) = w.next() else { continue };
        let keys = m.entry(label.to_string()).or_default();
        for kv in w {
            if let Some((k, _)) = kv.split_once('=') {
                keys.insert(k.to_string());
            }
        }
    }
    m
}

/// Global variable names declared at the top level of a preprocessed model.
pub fn globals(pre: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut depth = 0i32;
    for line in pre.lines() {
        let t = line.trim();
        if depth == 0 {
            for ty in ["bool ", "byte ", "short ", "int ", "bit ", "hidden "] {
                if let Some(rest) = t.strip_prefix(ty) {
                    for decl in rest.trim_end_matches(';').split(',') {
                        let name: String = decl
                            .trim()
                            .trim_start_matches("byte ")
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                }
            }
        }
        depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
    }
    out
}

/// One `traced!` / `trace_step!` call in the implementation.
#[derive(Debug, Clone)]
pub struct TracedCall {
    /// `file:line`.
    pub at: String,
    /// The `Step::X` it names (or the expression if not a literal step).
    pub step: String,
    /// Its value keys.
    pub keys: Vec<String>,
}

fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Every `traced!` / `trace_step!` call in `impl/src/**/*.rs` (trace.rs's macro definitions and
/// tests excluded).
pub fn traced_calls() -> Vec<TracedCall> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let mut dirs = vec![root().join("impl").join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).expect("impl/src").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("trace.rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for mac in ["traced!(", "trace_step!("] {
            for (i, _) in text.match_indices(mac) {
                let body_start = i + mac.len();
                let mut depth = 1;
                let mut end = body_start;
                for (j, c) in text[body_start..].char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = body_start + j;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let body = &text[body_start..end];
                let line = text[..i].matches('\n').count() + 1;
                let parts = split_top(body, ',');
                let step = parts[0].trim().trim_start_matches("Step::").to_string();
                let values = if mac == "traced!(" {
                    let semi = split_top(body, ';');
                    if semi.len() > 1 {
                        semi[semi.len() - 1].to_string()
                    } else {
                        String::new()
                    }
                } else {
                    parts[1..].join(",")
                };
                let keys = split_top(&values, ',')
                    .iter()
                    .filter_map(|kv| {
                        let (k, _) = kv.split_once('=')?;
                        let k = k.trim();
                        (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                            .then(|| k.to_string())
                    })
                    .collect();
                let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
                out.push(TracedCall { at: format!("{rel}:{line}"), step, keys });
            }
        }
    }
    out
}

/// `<file>.pml#<label>` citations in comments of `impl/src`: (where, file, label).
pub fn citations() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("impl").join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).expect("impl/src").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read");
            for (n, line) in text.lines().enumerate() {
                let Some(c) = line.find("//") else { continue };
                let comment = &line[c..];
                for (i, _) in comment.match_indices(".pml#") {
                    let Some(file) = ident_at(comment, i) else { continue };
                    let label: String = comment[i + 5..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let rel = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
                    out.push((format!("{rel}:{}", n + 1), format!("{file}.pml"), label));
                }
            }
        }
    }
    out.sort();
    out
}

/// The `aioctx_bug` values of the workspace Cargo.toml's check-cfg list.
pub fn cargo_bug_values() -> BTreeSet<String> {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let line = cargo
        .lines()
        .find(|l| l.contains("cfg(aioctx_bug, values("))
        .expect("the workspace Cargo.toml declares cfg(aioctx_bug, values(...))");
    let inner = &line[line.find("values(").unwrap() + 7..];
    inner.split('"').skip(1).step_by(2).map(String::from).collect()
}
