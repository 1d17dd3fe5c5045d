//! Reading the names each side uses: Promela labels, trace keys, globals and BUG_* variants; the
//! implementation's traced steps and value keys; model citations in comments; the repository paths
//! and docs/protocol.md sections that any file cites. `tests/names.rs` compares them.

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

/// The repository's text files, relative to the root, with their contents: what git tracks plus the
/// untracked files it does not ignore (`git ls-files -co --exclude-standard`), so build outputs
/// (`target/`, spin's `pan*` files, trails) are not read. Files that are gone from the worktree or
/// are not UTF-8 are skipped.
pub fn repo_text_files() -> Vec<(String, String)> {
    let o = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git ls-files (the citation checks read the files git knows)");
    assert!(o.status.success(), "git ls-files: {}", String::from_utf8_lossy(&o.stderr));
    let names: BTreeSet<String> = String::from_utf8(o.stdout)
        .expect("utf-8 file names")
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    names
        .into_iter()
        .filter_map(|f| {
            let text = String::from_utf8(std::fs::read(root().join(&f)).ok()?).ok()?;
            Some((f, text))
        })
        .collect()
}

/// The top-level folders whose paths the citation check resolves.
pub const PATH_ROOTS: &[&str] = &["impl", "model", "conformance", "promela", "ci", "docs"];

/// Files whose path-like lines are not citations: `.gitignore` names files that must NOT exist in
/// the repository (build outputs).
pub const PATH_CITATION_EXEMPT_FILES: &[&str] = &[".gitignore"];

/// One repository path cited in a file.
#[derive(Debug, Clone)]
pub struct PathCitation {
    /// `file:line`.
    pub at: String,
    /// The path as written (placeholders such as `<file>` or `{model}` included).
    pub cited: String,
    /// The pattern that must match at least one file or folder: placeholders become `*`.
    pub pattern: String,
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '*')
}

/// The path token that starts at the beginning of `s`: path characters, plus placeholders `<...>`
/// and `{...}` without whitespace. Trailing sentence punctuation is not part of it.
fn path_token(s: &str) -> &str {
    let mut end = 0;
    let mut open: Option<(char, usize)> = None;
    for (i, c) in s.char_indices() {
        match open {
            Some((close, at)) => {
                if c == close {
                    open = None;
                } else if c.is_whitespace() || c == '`' {
                    end = at; // an unclosed placeholder is not part of the path
                    break;
                }
            }
            None if path_char(c) => {}
            None if c == '<' => open = Some(('>', i)),
            None if c == '{' => open = Some(('}', i)),
            None => break,
        }
        end = i + c.len_utf8();
    }
    if let Some((_, at)) = open {
        end = end.min(at);
    }
    s[..end].trim_end_matches(['.', ',', ':', ';', '-'])
}

/// `path` with each `<...>` / `{...}` placeholder replaced by `*`.
fn placeholders_to_glob(path: &str) -> String {
    let mut out = String::new();
    let mut skip: Option<char> = None;
    for c in path.chars() {
        match skip {
            Some(close) if c == close => {
                skip = None;
                out.push('*');
            }
            Some(_) => {}
            None if c == '<' => skip = Some('>'),
            None if c == '{' => skip = Some('}'),
            None => out.push(c),
        }
    }
    out
}

/// Every citation of a repository path (`impl/...`, `model/...`, `conformance/...`, `promela/...`,
/// `ci/...`, `docs/...`, in backticks or plain text) in `files`. A path is recognised where such a
/// prefix starts a word (the character before it is not a letter, digit, `_`, `.`, `-` or `/`, so
/// `aioctx-model/` or `qemu/docs/` are not ours). A path written right after `QEMU` or `QEMU's`
/// names QEMU's tree (`QEMU's docs/spin/...`) and is not checked.
pub fn path_citations(files: &[(String, String)]) -> Vec<PathCitation> {
    let mut out = Vec::new();
    for (f, text) in files {
        if PATH_CITATION_EXEMPT_FILES.contains(&f.as_str()) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for r in PATH_ROOTS {
                let prefix = format!("{r}/");
                for (i, _) in line.match_indices(&prefix) {
                    if line[..i].chars().next_back().is_some_and(path_char) {
                        continue;
                    }
                    let before = line[..i].trim_end_matches(['`', '"', '(']);
                    if before.ends_with("QEMU ") || before.ends_with("QEMU's ") {
                        continue;
                    }
                    let cited = path_token(&line[i..]).to_string();
                    let pattern = placeholders_to_glob(&cited);
                    out.push(PathCitation { at: format!("{f}:{}", n + 1), cited, pattern });
                }
            }
        }
    }
    out
}

/// `*` matches any run of characters within one path component.
fn wildcard(pat: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pat.chars().collect(), name.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && p[i] != '*' && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

fn glob_matches(dir: &std::path::Path, comps: &[&str]) -> bool {
    let Some((c, rest)) = comps.split_first() else { return true };
    let entries = || {
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect::<Vec<_>>()
    };
    if *c == "**" {
        return glob_matches(dir, rest)
            || entries().iter().any(|p| p.is_dir() && glob_matches(p, comps));
    }
    if c.contains('*') {
        return entries().iter().any(|p| {
            p.file_name().and_then(|s| s.to_str()).is_some_and(|s| wildcard(c, s))
                && (rest.is_empty() || p.is_dir() && glob_matches(p, rest))
        });
    }
    let p = dir.join(c);
    p.exists() && (rest.is_empty() || glob_matches(&p, rest))
}

/// Whether a cited path (a glob after [`placeholders_to_glob`]: `*` within a component, `**` over
/// folders) names at least one existing file or folder of the repository.
pub fn path_exists(pattern: &str) -> bool {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    glob_matches(&root(), &comps)
}

/// The section numbers of docs/protocol.md: every heading whose text starts with its number and a
/// period (`## 6. Points ...`, `### 6.1. A non-blocking ...`).
pub fn protocol_sections() -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(root().join("docs").join("protocol.md")).expect("docs/protocol.md");
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(2..=6).contains(&hashes) {
            continue;
        }
        let Some(rest) = line[hashes..].strip_prefix(' ') else { continue };
        let num: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        if let Some(id) = num.strip_suffix('.') {
            if !id.is_empty() && rest[num.len()..].starts_with(' ') {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// Every `§N` / `§N.M` in `files` that cites docs/protocol.md: (where, section). A `§` cites another
/// document only when that document's `.md` name is the last one written before it on the same line
/// (`qemu-tests.md §4.5`); with no `.md` name before it, or `protocol.md`, it cites docs/protocol.md.
pub fn section_citations(files: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (f, text) in files {
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices('§') {
                let after = &line[i + '§'.len_utf8()..];
                let num: String =
                    after.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
                let id = num.trim_end_matches('.');
                if id.is_empty() {
                    continue; // `§N`: a placeholder, not a citation
                }
                let before = &line[..i];
                if let Some(md) = before.rfind(".md") {
                    let start = before[..md]
                        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_.-/".contains(c)))
                        .map_or(0, |k| k + 1);
                    let name = &before[start..md + 3];
                    if !(name == "protocol.md" || name.ends_with("/protocol.md")) {
                        continue;
                    }
                }
                out.push((format!("{f}:{}", n + 1), id.to_string()));
            }
        }
    }
    out
}
