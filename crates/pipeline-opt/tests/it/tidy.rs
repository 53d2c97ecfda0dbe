//! Layering, checked from the source. Every `crate::…` and `super::…` path in the
//! library's `src/` (in code, `use` groups, doc comments, and whole-path strings such as
//! `#[serde(with = "crate::record::secs")]`) is an edge from the module it is written in
//! to the module it names; an edge may only point down [`LAYERS`], the same table
//! ARCHITECTURE.md shows. Read as text, not compiled, so it sees what a reader sees.

use std::collections::{BTreeMap, BTreeSet};

use camino::{Utf8Path, Utf8PathBuf};

/// Layer of every top-level module, lowest first, in design.md's order. `lib` stands
/// for lib.rs and the items it re-exports at the crate root (the library's CLI entry).
///
/// Same-layer edges between different modules are allowed as long as the modules do
/// not form a cycle: a layer is a set of peers, not an order inside it.
const LAYERS: &[(&str, u8)] = &[
    // What the run starts from, and the saved record: import nothing above.
    ("config", 0),
    ("workspace", 0),
    ("toolchain", 0),
    ("test_settings", 0),
    ("exit", 0),
    // Where the tool keeps things: every path under the state directory.
    ("state", 0),
    ("record", 0),
    // What recommendations need to know about the workspace, measured into the record.
    ("facts", 0),
    // Signals, markers, stopping and reaping processes: std and libc only.
    ("process", 0),
    // Process-level instruments the orchestrator uses (the rustc wrapper mode, /proc).
    ("rustc_shim", 0),
    ("cpu_sampler", 0),
    // `RUSTDOC` for a narrowed doctest stage: answers for the doctests the cache proved.
    ("doctest_shim", 0),
    // The cargo config files that apply, as cargo finds them.
    ("cargo_config", 0),
    // The shared compile cache's sccache server, started beside a run, and its stats.
    ("compile_cache", 0),
    // The target runner a user set for the tests, which the lease runner chains.
    ("target_runner", 0),
    // What to run, and what the run is held to.
    ("plan", 1),
    ("targets", 1),
    // Which tests each of N machines runs: pure, beside the plan.
    ("shard", 1),
    // What to skip or narrow, and the loaded inputs that the plan is made from.
    ("inputs", 2),
    ("cache", 2),
    ("affected", 2),
    ("orchestrator", 3),
    ("profile", 4),
    ("report", 5),
    // Front-ends, and the fixtures only tests and benchmarks use.
    ("optimize", 6),
    ("explore", 6),
    ("bench", 6),
    ("pool", 6),
    ("workflow", 6),
    // The build machine's side of scale-out: archive listing, shard plan files.
    ("scale", 6),
    ("fixture", 6),
    // Runs one test of the pipeline under a profiler, through optimize.
    ("flamegraph", 7),
    ("lib", 7),
    // The command line, above everything it calls (design.md's "lib's CLI").
    ("cli", 8),
];

/// Upward edges that other branches of issue #15 remove: (the module that imports, the
/// path it names, which branch removes the edge). Emptied when those branches merge;
/// an entry that no longer matches any edge fails the test, so the list only shrinks.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

#[test]
fn tidy_every_module_has_a_layer() {
    let src = src_dir();
    let unplaced: Vec<String> = top_level_modules(&src)
        .into_iter()
        .filter(|m| layer(m).is_none())
        .map(|m| format!("module `{m}` has no layer: add it to LAYERS in tests/it/tidy.rs and to ARCHITECTURE.md"))
        .collect();
    assert!(unplaced.is_empty(), "\n{}\n", unplaced.join("\n"));
}

#[test]
fn tidy_imports_point_down_the_layers() {
    let refs = references(&src_dir());
    let mut errors = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for r in &refs {
        let (from, to) = (top(&r.from), top(&r.to));
        let (Some(lf), Some(lt)) = (layer(&from), layer(&to)) else { continue };
        if lt <= lf {
            continue;
        }
        match known_upward(r) {
            Some(i) => {
                used_exceptions.insert(i);
            }
            None => errors.push(format!(
                "{}:{}: `{}` (layer {lf}) imports `{to}` (layer {lt}), an upward edge: `crate::{}`",
                r.file,
                r.line,
                r.from.join("::"),
                r.path
            )),
        }
    }
    for (i, (m, path, by)) in KNOWN_UPWARD.iter().enumerate() {
        if !used_exceptions.contains(&i) {
            errors.push(format!(
                "KNOWN_UPWARD lists `{m}` -> `{path}` ({by}), which no longer occurs: remove it"
            ));
        }
    }
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
}

#[test]
fn tidy_modules_form_no_cycle() {
    let mut refs = references(&src_dir());
    refs.retain(|r| known_upward(r).is_none());
    // Between top-level modules, and between file modules of which neither contains
    // the other (report/html and report/markdown); a parent and its children may use
    // each other, as `mod.rs` and `super::` do.
    let top_edges: BTreeSet<(String, String)> =
        refs.iter().map(|r| (top(&r.from), top(&r.to))).filter(|(a, b)| a != b).collect();
    let file_edges: BTreeSet<(String, String)> = refs
        .iter()
        .filter(|r| !r.from.starts_with(&r.to) && !r.to.starts_with(&r.from))
        .map(|r| (r.from.join("::"), r.to.join("::")))
        .collect();
    let cycles: Vec<String> = [cycle(&top_edges), cycle(&file_edges)]
        .into_iter()
        .flatten()
        .map(|c| format!("import cycle: {}", c.join(" -> ")))
        .collect();
    assert!(cycles.is_empty(), "\n{}\n", cycles.join("\n"));
}

/// The [`KNOWN_UPWARD`] entry that excuses `r`, by its index.
fn known_upward(r: &Reference) -> Option<usize> {
    KNOWN_UPWARD.iter().position(|(m, path, _)| *m == r.from.join("::") && r.path.starts_with(path))
}

/// One `crate::…` or `super::…` path: where it is written and what it names.
#[derive(Debug)]
struct Reference {
    file: Utf8PathBuf,
    line: usize,
    /// The module it is written in, file modules only (`["report", "html"]`).
    from: Vec<String>,
    /// The deepest file module the path names (`["record"]`; empty for the crate root).
    to: Vec<String>,
    /// The path from the crate root, `record::secs`.
    path: String,
}

fn src_dir() -> Utf8PathBuf {
    Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module of a module path; the crate root and its items are `lib`.
fn top(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".into())
}

/// Every library source file and its module path. `src/bin/` holds separate crates.
fn source_files(src: &Utf8Path) -> Vec<(Utf8PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = Utf8PathBuf::try_from(entry.unwrap().path()).unwrap();
            if path.is_dir() && path != src.join("bin") {
                dirs.push(path);
            } else if path.extension() == Some("rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut module: Vec<String> = rel.components().map(|c| c.to_string()).collect();
                if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                    module.pop();
                }
                out.push((path, module));
            }
        }
    }
    out.sort();
    out
}

fn top_level_modules(src: &Utf8Path) -> BTreeSet<String> {
    source_files(src).into_iter().map(|(_, m)| top(&m)).collect()
}

fn references(src: &Utf8Path) -> Vec<Reference> {
    let files = source_files(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut out = Vec::new();
    for (path, module) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for (line, inline, written) in paths_in(&text) {
            let mut base: Vec<String> = module.iter().cloned().chain(inline).collect();
            let mut segments = written.iter().peekable();
            match segments.next().map(String::as_str) {
                Some("crate") => base.clear(),
                Some("super") => {
                    base.pop();
                    while segments.next_if(|s| *s == "super").is_some() {
                        base.pop();
                    }
                }
                _ => continue,
            }
            let full: Vec<String> = base.into_iter().chain(segments.cloned()).collect();
            let to = (0..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| modules.contains(m))
                .unwrap_or_default();
            let rel = path.strip_prefix(src.parent().unwrap()).unwrap().to_owned();
            out.push(Reference {
                file: rel,
                line,
                from: module.clone(),
                to,
                path: full.join("::"),
            });
        }
    }
    out
}

/// The `crate::`/`super::` paths of a source file: (line, the inline modules they are
/// written in, segments). `use` groups give one path per member
/// (`crate::{a, b::c}` gives `crate::a` and `crate::b::c`).
fn paths_in(text: &str) -> Vec<(usize, Vec<String>, Vec<String>)> {
    let tokens = tokens(text);
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t.kind {
            Kind::Punct if t.text == "{" => depth += 1,
            Kind::Punct if t.text == "}" => {
                // Saturating: the text of a doc comment, read the same way, may close
                // a brace it never opened.
                depth = usize::saturating_sub(depth, 1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Kind::Ident if t.text == "mod" => {
                if let (Some(name), Some(open)) = (tokens.get(i + 1), tokens.get(i + 2))
                    && open.text == "{"
                {
                    inline.push((name.text.clone(), depth));
                }
            }
            Kind::Ident if is_path_start(&tokens, i) => {
                let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                for p in expand(&tokens, &mut i) {
                    out.push((t.line, names.clone(), p));
                }
                continue;
            }
            // Any path in a doc comment; a string only when it is a path and nothing
            // else (`with = "crate::record::secs"`), not prose that names one.
            Kind::Doc | Kind::Str if t.kind == Kind::Doc || is_path(&t.text) => {
                for (_, _, p) in paths_in(&t.text) {
                    let names = inline.iter().map(|(n, _)| n.clone()).collect();
                    out.push((t.line, names, p));
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `crate::` or `super::` starting a path: not `pub(crate)`, not `a::super`.
fn is_path_start(tokens: &[Token], i: usize) -> bool {
    matches!(tokens[i].text.as_str(), "crate" | "super")
        && tokens.get(i + 1).is_some_and(|t| t.text == "::")
        && (i == 0 || tokens[i - 1].text != "::")
}

/// The paths starting at `tokens[*i]`, expanding `{…}` groups; leaves `*i` after them.
fn expand(tokens: &[Token], i: &mut usize) -> Vec<Vec<String>> {
    let mut prefix = vec![tokens[*i].text.clone()];
    *i += 1;
    while tokens.get(*i).is_some_and(|t| t.text == "::") {
        match tokens.get(*i + 1) {
            Some(t) if t.kind == Kind::Ident => {
                prefix.push(t.text.clone());
                *i += 2;
            }
            Some(t) if t.text == "{" => {
                *i += 2;
                let mut out = Vec::new();
                while tokens.get(*i).is_some_and(|t| t.text != "}") {
                    if tokens[*i].kind == Kind::Ident {
                        for rest in expand(tokens, i) {
                            out.push(prefix.iter().cloned().chain(rest).collect());
                        }
                    } else {
                        *i += 1;
                    }
                }
                *i += 1;
                return out;
            }
            _ => break,
        }
    }
    vec![prefix]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Punct,
    /// A doc comment's text.
    Doc,
    /// A string literal's contents.
    Str,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    text: String,
    line: usize,
}

/// Just enough of Rust's lexer to tell code from comments, strings and chars: plain
/// comments are dropped (`// crate::bin tests::bad` quotes nextest output), doc comments
/// and strings keep their text, `::` is one token.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, c)| chars.get(i + k) == Some(&c));
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if at(i, "//") {
            let end = (i..chars.len()).find(|&k| chars[k] == '\n').unwrap_or(chars.len());
            if at(i, "///") || at(i, "//!") {
                let doc: String = chars[i + 3..end].iter().collect();
                out.push(Token { kind: Kind::Doc, text: doc, line });
            }
            i = end;
        } else if at(i, "/*") {
            let mut nest = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    nest += 1;
                    i += 2;
                } else if at(i, "*/") {
                    nest -= 1;
                    i += 2;
                    if nest == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' || ((c == 'r' || c == 'b') && raw_or_byte_string(&chars, i)) {
            let (contents, next) = string_literal(&chars, i);
            line += contents.matches('\n').count();
            out.push(Token { kind: Kind::Str, text: contents, line: start_line });
            i = next;
        } else if c == '\'' {
            // A char literal ('a', '\n', '{'), else a lifetime.
            if chars.get(i + 1) == Some(&'\\') {
                i = (i + 2..chars.len()).find(|&k| chars[k] == '\'').map_or(chars.len(), |k| k + 1);
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let end = (i..chars.len())
                .find(|&k| !(chars[k].is_alphanumeric() || chars[k] == '_'))
                .unwrap_or(chars.len());
            let word: String = chars[i..end].iter().collect();
            out.push(Token { kind: Kind::Ident, text: word, line });
            i = end;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            let len = if at(i, "::") { 2 } else { 1 };
            let punct: String = chars[i..i + len].iter().collect();
            out.push(Token { kind: Kind::Punct, text: punct, line });
            i += len;
        }
    }
    out
}

/// Whether `chars[i]` starts `r"`, `r#"`, `b"`, `br"` or `br#"`.
fn raw_or_byte_string(chars: &[char], i: usize) -> bool {
    let prev_is_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut k = i + 1;
    if chars[i] == 'b' && chars.get(k) == Some(&'r') {
        k += 1;
    }
    while chars.get(k) == Some(&'#') && chars[i..k].contains(&'r') {
        k += 1;
    }
    !prev_is_word && chars.get(k) == Some(&'"')
}

/// The contents of the string literal at `chars[i]` and the index after it.
fn string_literal(chars: &[char], mut i: usize) -> (String, usize) {
    let raw = chars[i..].iter().take_while(|c| **c != '"').any(|c| *c == 'r');
    let hashes = chars[i..].iter().take_while(|c| **c != '"').filter(|c| **c == '#').count();
    i = (i..chars.len()).find(|&k| chars[k] == '"').unwrap_or(chars.len()) + 1;
    let mut contents = String::new();
    while i < chars.len() {
        let c = chars[i];
        if !raw && c == '\\' {
            contents.extend(chars.get(i..i + 2).unwrap_or_default());
            i += 2;
        } else if c == '"' && (1..=hashes).all(|h| chars.get(i + h) == Some(&'#')) {
            return (contents, i + 1 + hashes);
        } else {
            contents.push(c);
            i += 1;
        }
    }
    (contents, i)
}

/// `crate::record::secs`, `super::secs`: a path and nothing else.
fn is_path(s: &str) -> bool {
    let mut parts = s.split("::");
    matches!(parts.next(), Some("crate" | "super"))
        && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        && s.contains("::")
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    // Depth-first, with the path so far: a node met again on the path closes a cycle.
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == n) {
            let mut c: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for m in next.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    next.keys().find_map(|n| visit(n, &next, &mut Vec::new(), &mut done))
}

/// The reader itself, on the forms the checks rely on.
#[test]
fn tidy_reads_groups_supers_and_serde_strings() {
    let text = r##"
use crate::{a, b::{c, d::e}};
/// See [`crate::f::g`].
#[serde(with = "crate::h::secs")]
// crate::not_a_reference
const S: &str = "crate::i is prose, not a path";
const R: &str = r#"crate::j::k"#;
fn x() { let c = '{'; super::l::m(); }
mod tests {
    use super::*;
    fn y() -> &'static str { crate::n::o() }
}
"##;
    let found: Vec<String> = paths_in(text)
        .into_iter()
        .map(|(line, inline, p)| format!("{line} {} {}", inline.join("::"), p.join("::")))
        .collect();
    assert_eq!(
        found,
        [
            "2  crate::a",
            "2  crate::b::c",
            "2  crate::b::d::e",
            "3  crate::f::g",
            "4  crate::h::secs",
            "7  crate::j::k",
            "8  super::l::m",
            "10 tests super",
            "11 tests crate::n::o",
        ]
    );
}
