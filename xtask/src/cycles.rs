//! The import-cycle check of `cargo xtask test`: imports between a crate's modules point one way.
//!
//! Every `crate::` and `super::` path in non-test code (use declarations and paths written
//! inline) is an edge from the module whose file holds it to the deepest module the path names.
//! An edge between a module and its own ancestor or descendant is structure, not a dependency
//! (a `mod.rs` re-exports its children; a child uses its parent's types). Any other edge is
//! lifted to the two siblings under the modules' common ancestor: `dhcp::request -> dhcp::reply`
//! stays under `dhcp`, `metrics -> xdp::counters` becomes `metrics -> xdp` under the crate root.
//! Among the siblings of every module, the edges must form no cycle.
//!
//! Test code is left out: files named `tests.rs` or `*_tests.rs`, and items under `#[cfg(test)]`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
};

use anyhow::{bail, Context as _};

/// The crates' source trees checked, from the workspace root.
pub(crate) const CHECKED: &[&str] = &["pxe-daemon/src", "pxe-common/src"];

/// One source file: its path under the crate's `src/` (with `/`) and its text.
#[derive(Debug)]
pub(crate) struct Source {
    /// Path under `src/`, e.g. `dhcp/request.rs`.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// An edge between two sibling modules, and where the code makes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Edge {
    /// Importing sibling.
    pub from: String,
    /// Imported sibling.
    pub to: String,
    /// `file:line` of the first path that makes the edge.
    pub at: String,
}

/// Siblings that import each other, directly or round a loop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// The common parent module (`crate` for the root).
    pub parent: String,
    /// The edges inside the cycle.
    pub edges: Vec<Edge>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "under {}:", self.parent)?;
        for e in &self.edges {
            write!(f, " {} -> {} ({});", e.from, e.to, e.at)?;
        }
        Ok(())
    }
}

/// Checks every crate in [`CHECKED`] under `root`; fails naming each cycle.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for dir in CHECKED {
        let sources = read_tree(&root.join(dir))?;
        found.extend(cycles(&sources).into_iter().map(|c| format!("{dir}: {c}")));
    }
    if !found.is_empty() {
        bail!(
            "imports between modules form a cycle (each module's children must import one \
             way):\n  {}",
            found.join("\n  ")
        );
    }
    println!("no import cycle in {}", CHECKED.join(", "));
    Ok(())
}

/// Every `.rs` file under `src`, except `main.rs` and `bin/` (other crates).
fn read_tree(src: &Path) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let rel = path
                .strip_prefix(src)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if rel != "bin" {
                    dirs.push(path);
                }
            } else if rel.ends_with(".rs") && rel != "main.rs" {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.push(Source { path: rel, text });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The cycles among siblings in one crate's sources.
pub(crate) fn cycles(sources: &[Source]) -> Vec<Cycle> {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| module_of(&s.path)).collect();
    // parent -> (from, to) -> first place
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<(String, String), String>> = BTreeMap::new();
    for source in sources {
        let name = source.path.rsplit('/').next().unwrap_or_default();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let here = module_of(&source.path);
        let code = strip(&source.text);
        for (line, path) in paths(&code) {
            let Some(absolute) = resolve(&here, &path) else {
                continue;
            };
            let target = deepest_module(&modules, &absolute);
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // the same module, an ancestor or a descendant
            }
            let edge = (here[common].clone(), target[common].clone());
            graphs
                .entry(here[..common].to_vec())
                .or_default()
                .entry(edge)
                .or_insert_with(|| format!("{}:{line}", source.path));
        }
    }
    let mut out = Vec::new();
    for (parent, edges) in graphs {
        for component in strongly_connected(&edges) {
            let inside: Vec<Edge> = edges
                .iter()
                .filter(|((a, b), _)| component.contains(a) && component.contains(b))
                .map(|((a, b), at)| Edge {
                    from: a.clone(),
                    to: b.clone(),
                    at: at.clone(),
                })
                .collect();
            out.push(Cycle {
                parent: if parent.is_empty() {
                    "crate".to_owned()
                } else {
                    parent.join("::")
                },
                edges: inside,
            });
        }
    }
    out
}

/// The module a file under `src/` defines: `lib.rs` the root, `a/mod.rs` and `a.rs` `a`.
fn module_of(path: &str) -> Vec<String> {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    let mut parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// A path written in `here` as an absolute module path (`None` for paths that leave the crate).
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut segments = path.iter();
    let mut base: Vec<String> = match segments.next()?.as_str() {
        "crate" => Vec::new(),
        "super" => here.get(..here.len().checked_sub(1)?)?.to_vec(),
        _ => return None,
    };
    let mut rest = segments.peekable();
    while rest.peek().is_some_and(|s| *s == "super") {
        rest.next();
        base.pop()?;
    }
    base.extend(rest.cloned());
    Some(base)
}

/// The longest prefix of `path` that is a module with a file.
fn deepest_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

/// The text with comments, string and char literals blanked and `#[cfg(test)]` items removed;
/// newlines are kept, so positions keep their line.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && !chars.get(i.wrapping_sub(1)).is_some_and(|p| ident_char(*p))
        {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            out.extend(chars[i..j.min(chars.len())].iter().map(|&c| blank(c)));
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let skip = if chars[i] == '\\' { 2 } else { 1 };
                for k in 0..skip {
                    if let Some(&c) = chars.get(i + k) {
                        out.push(blank(c));
                    }
                }
                i += skip;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a) left as it is.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.extend(std::iter::repeat_n(' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    remove_test_items(&out)
}

/// Blanks every item under `#[cfg(test)]`: up to its `;`, or its balanced `{ }` block.
fn remove_test_items(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out: Vec<char> = code.chars().collect();
    let text: String = out.iter().collect();
    let mut from = 0;
    while let Some(found) = text[from..].find(ATTR) {
        let start = from + found;
        // Byte and char offsets agree: `strip` left one ASCII blank per char of every literal
        // and comment, and Rust code outside them is ASCII here.
        let mut i = start;
        let mut depth = 0usize;
        while i < out.len() {
            let c = out[i];
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        if out[i] != '\n' {
                            out[i] = ' ';
                        }
                        i += 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    out[i] = ' ';
                    i += 1;
                    break;
                }
                _ => {}
            }
            if out[i] != '\n' {
                out[i] = ' ';
            }
            i += 1;
        }
        from = i.min(text.len());
    }
    out.into_iter().collect()
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::...` and `super::...` path in `code`, with its line; a use group
/// (`crate::a::{b, c::d}`) gives one path per leaf.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !ident_char(bytes[i - 1] as char);
        let rest = &code[i..];
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let line = code[..i].matches('\n').count() + 1;
            let (trees, end) = parse_tree(code, i);
            out.extend(trees.into_iter().map(|p| (line, p)));
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses a path tree at `at`: `seg::seg::{tree, tree}`; returns each leaf's path and where
/// the tree ends.
fn parse_tree(code: &str, mut at: usize) -> (Vec<Vec<String>>, usize) {
    let bytes = code.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && (bytes[i] as char).is_whitespace() {
            i += 1;
        }
        i
    };
    let mut prefix = Vec::new();
    loop {
        at = skip_ws(at);
        if bytes.get(at) == Some(&b'{') {
            let mut leaves = Vec::new();
            at += 1;
            loop {
                at = skip_ws(at);
                match bytes.get(at) {
                    None => return (leaves, at),
                    Some(b'}') => return (leaves, at + 1),
                    Some(b',') => at += 1,
                    Some(_) => {
                        let (sub, end) = parse_tree(code, at);
                        leaves.extend(sub.into_iter().map(|s| {
                            let mut p = prefix.clone();
                            p.extend(s);
                            p
                        }));
                        at = if end > at { end } else { at + 1 };
                    }
                }
            }
        }
        let start = at;
        while at < bytes.len() && ident_char(bytes[at] as char) {
            at += 1;
        }
        if at == start {
            return (vec![prefix], at);
        }
        let segment = &code[start..at];
        if segment != "self" {
            prefix.push(segment.to_owned());
        }
        let after = skip_ws(at);
        if code[after..].starts_with("::") {
            at = after + 2;
        } else {
            return (vec![prefix], at);
        }
    }
}

/// The strongly connected components of more than one node (Tarjan).
fn strongly_connected(edges: &BTreeMap<(String, String), String>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (a, b) in edges.keys() {
        state.next.entry(a.as_str()).or_default().push(b.as_str());
        state.next.entry(b.as_str()).or_default();
    }
    let nodes: Vec<&str> = state.next.keys().copied().collect();
    for v in nodes {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<Source> {
        files
            .iter()
            .map(|(path, text)| Source {
                path: (*path).to_owned(),
                text: (*text).to_owned(),
            })
            .collect()
    }

    #[test]
    fn finds_two_siblings_that_import_each_other() {
        let found = cycles(&tree(&[
            ("lib.rs", "pub mod dhcp;"),
            ("dhcp/mod.rs", "pub mod reply;\npub mod request;"),
            ("dhcp/request.rs", "use super::reply::{OPTION_A, OPTION_B};"),
            ("dhcp/reply.rs", "\n\nuse super::request::OFFSET;"),
        ]));
        assert_eq!(
            found,
            vec![Cycle {
                parent: "dhcp".into(),
                edges: vec![
                    Edge {
                        from: "reply".into(),
                        to: "request".into(),
                        at: "dhcp/reply.rs:3".into()
                    },
                    Edge {
                        from: "request".into(),
                        to: "reply".into(),
                        at: "dhcp/request.rs:1".into()
                    },
                ],
            }]
        );
    }

    #[test]
    fn lifts_deep_edges_to_the_siblings_under_the_common_parent() {
        let found = cycles(&tree(&[
            ("lib.rs", "pub mod metrics; pub mod xdp;"),
            (
                "metrics.rs",
                "fn f() { let m = crate::xdp::AttachMode::None; }",
            ),
            ("xdp/mod.rs", "mod counters;"),
            (
                "xdp/counters.rs",
                "use crate::{metrics::NAMESPACE, xdp::X};",
            ),
        ]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].parent, "crate");
        assert_eq!(
            found[0]
                .edges
                .iter()
                .map(|e| (&*e.from, &*e.to))
                .collect::<Vec<_>>(),
            [("metrics", "xdp"), ("xdp", "metrics")]
        );
    }

    #[test]
    fn a_loop_of_three_is_a_cycle_and_one_way_imports_are_not() {
        let three = tree(&[
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "use crate::c::Y;"),
            ("c.rs", "use crate::a::Z;"),
        ]);
        assert_eq!(cycles(&three).len(), 1);
        let one_way = tree(&[
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "use crate::c::Y;"),
            ("c.rs", "pub struct Y;"),
        ]);
        assert_eq!(cycles(&one_way), vec![]);
    }

    #[test]
    fn parents_and_children_tests_comments_and_strings_make_no_edge() {
        let found = cycles(&tree(&[
            ("lib.rs", "pub mod a; pub mod b; pub use a::X;"),
            (
                "a/mod.rs",
                "pub mod inner; pub use inner::X; use crate::b::Y;",
            ),
            ("a/inner.rs", "use super::Shared; use crate::a::Other;"),
            (
                "b.rs",
                "// crate::a::X in a comment\n\
                 const S: &str = \"crate::a::X\";\n\
                 const R: &str = r#\"super::a\"#;\n\
                 #[cfg(test)]\nmod tests { use crate::a::X; fn f() { let c = '{'; } }\n\
                 #[cfg(test)]\nuse crate::a::Y;",
            ),
            ("a/tests.rs", "use crate::b::Y; use crate::a::X;"),
            ("c.rs", "fn f() { crate::b::g() }"),
        ]));
        assert_eq!(found, vec![]);
    }
}
