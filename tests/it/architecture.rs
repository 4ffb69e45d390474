//! The module shape documentation/architecture.md draws, computed from the
//! sources: every `crate::` path of every file under src/ (test code left out)
//! is an edge of the module graph. The graph has no cycle; every edge points to
//! the same layer or one below; stage modules never import each other; only the
//! CLI names clap; only the cluster's edge knows the `ballista` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo;

/// The layers, lowest first; architecture.md draws the same table. A module
/// may use modules of its own layer (no cycle allowed) or of a lower one.
const LAYERS: &[(&str, &[&str])] = &[
    ("leaf", &["exit"]),
    (
        "base",
        &[
            "fault", "blocking", "redact", "progress", "logging", "table", "s3", "sqs", "db",
            "pg_copy",
        ],
    ),
    (
        "shared",
        &[
            "config",
            "rules",
            "period",
            "types",
            "context",
            "dialect",
            "remote",
            "landed",
            "header",
            "ledger",
            "decision",
            "stage_table",
            "partition",
            "replace",
            "manifest",
            "pg_table",
            "diff",
        ],
    ),
    (
        "stages",
        &[
            "ingest",
            "validate",
            "load_stage",
            "transform",
            "status",
            "migrate",
            "quarantine",
            "report",
        ],
    ),
    ("above the stages", &["cluster"]),
    ("orchestrators", &["run", "events"]),
    ("results", &["error", "outcome", "alerts", "metrics"]),
    ("edge", &["cli"]),
];

/// Layers whose members never import each other.
const SIDEWAYS_FORBIDDEN: &[&str] = &["stages", "orchestrators"];

/// `lib.rs` and `main.rs` sit above everything and are not in the graph.
const TOP: &[&str] = &["lib", "main"];

/// Top-level module → the source files that make it up (tests.rs files left out).
fn modules(src: &Path) -> BTreeMap<String, Vec<std::path::PathBuf>> {
    let mut found: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let name = top.trim_end_matches(".rs").to_owned();
            found.entry(name).or_default().push(path);
        }
    }
    found
}

/// The text of a file without its comments and without its `#[cfg(test)]`
/// module (written last in every file of this crate).
fn code(text: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every module of the crate a text names: `crate::x…` and `use crate::{x, y::z}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the group's top level names modules: `{a, b::{c, d}}` → a, b.
            let mut depth = 0;
            let mut start = true;
            for c in group.char_indices() {
                match c.1 {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    ch if start && !ch.is_whitespace() => {
                        refs.insert(ident(&group[c.0..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            refs.insert(ident(rest));
        }
    }
    refs.remove("");
    refs
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph() -> Graph {
    let src = repo().join("src");
    let mut graph = Graph::new();
    for (module, files) in modules(&src) {
        if TOP.contains(&module.as_str()) {
            continue;
        }
        let edges = graph.entry(module.clone()).or_default();
        for file in files {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            edges.extend(crate_refs(&text).into_iter().filter(|r| *r != module));
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, members))| members.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// Each edge that points up a layer or sideways where that is forbidden.
fn layering_breaks(graph: &Graph) -> Vec<String> {
    let mut breaks = Vec::new();
    for (from, edges) in graph {
        let Some((lf, name)) = layer_of(from) else {
            continue;
        };
        for to in edges {
            let Some((lt, _)) = layer_of(to) else {
                continue;
            };
            if lt > lf {
                breaks.push(format!("{from} ({name}) uses {to}, a layer above"));
            } else if lt == lf && SIDEWAYS_FORBIDDEN.contains(&name) {
                breaks.push(format!("{from} uses {to}: {name} never import each other"));
            }
        }
    }
    breaks
}

#[test]
fn the_module_graph_has_no_cycle() {
    let found = cycles(&graph());
    assert!(
        found.is_empty(),
        "modules that import each other in a loop: {found:?}"
    );
}

#[test]
fn every_import_follows_the_layers() {
    let graph = graph();
    let unplaced: Vec<&String> = graph.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS and to architecture.md): {unplaced:?}"
    );
    for (_, members) in LAYERS {
        for m in *members {
            assert!(
                graph.contains_key(*m),
                "LAYERS names `{m}`, which src/ does not have"
            );
        }
    }
    let breaks = layering_breaks(&graph);
    assert!(
        breaks.is_empty(),
        "imports against the layers:\n{}",
        breaks.join("\n")
    );
}

/// The architecture document's module table lists every module, and its layer
/// table says what LAYERS says.
#[test]
fn architecture_md_lists_every_module_and_the_layers() {
    let doc = std::fs::read_to_string(repo().join("documentation/architecture.md")).unwrap();
    let mut missing = Vec::new();
    for files in modules(&repo().join("src")).values() {
        for file in files {
            let rel = file.strip_prefix(repo()).unwrap().display().to_string();
            if !doc.contains(&format!("`{rel}`")) {
                missing.push(rel);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "architecture.md's table lacks {missing:?}"
    );
    for (name, members) in LAYERS {
        let row = format!("| {name} | {} |", members.join(", "));
        assert!(
            doc.contains(&row),
            "architecture.md lacks the layer row `{row}`"
        );
    }
}

/// Stages take their own request types and the CLI is one caller among others:
/// clap is named by cli.rs and main.rs alone.
#[test]
fn only_the_cli_names_clap() {
    let mut found = Vec::new();
    for (module, files) in modules(&repo().join("src")) {
        if module == "cli" || module == "main" {
            continue;
        }
        for file in files {
            if code(&std::fs::read_to_string(&file).unwrap()).contains("clap::") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "clap outside the CLI: {found:?}");
}

/// One place builds DataFusion sessions (context.rs), so every stage plans
/// with the same settings; delta-rs's writer is handed its own session type
/// (validate/write.rs), which it needs for its extensions.
#[test]
fn only_context_builds_a_session() {
    let mut found = Vec::new();
    for (module, files) in modules(&repo().join("src")) {
        if module == "context" {
            continue;
        }
        for file in files {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            let plain = text.replace("DeltaSessionContext::new", "");
            if plain.contains("SessionContext::new") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(
        found.is_empty(),
        "a session built outside context.rs: {found:?}"
    );
}

/// The Ballista engine is an edge: the cluster module, and where the CLI, the
/// error and lib name it. Core code builds and behaves the same without it.
#[test]
fn only_the_edge_knows_the_ballista_feature() {
    let allowed = ["cli", "cluster", "error", "lib"];
    let mut found = Vec::new();
    for (module, files) in modules(&repo().join("src")) {
        for file in files {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            if text.contains("feature = \"ballista\"") && !allowed.contains(&module.as_str()) {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(
        found.is_empty(),
        "the ballista feature in core code: {found:?}"
    );
}

#[test]
fn exit_codes_are_a_leaf() {
    assert_eq!(graph()["exit"], BTreeSet::new());
}

#[test]
fn the_checker_sees_imports_cycles_and_breaks() {
    let text = code(
        "//! see [`crate::error`]\nuse crate::{config, ingest::{header, x}, validate};\n\
         let x = crate::run::run;\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    );
    let names: Vec<String> = crate_refs(&text).into_iter().collect();
    assert_eq!(names, ["config", "ingest", "run", "validate"]);

    let edges = |pairs: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in pairs {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    };
    let looped = edges(&[
        ("logging", "cli"),
        ("cli", "run"),
        ("run", "logging"),
        ("run", "db"),
    ]);
    assert_eq!(cycles(&looped), [vec!["cli", "logging", "run"]]);
    assert!(cycles(&edges(&[("run", "db"), ("cli", "run")])).is_empty());

    let up = edges(&[
        ("config", "context"),
        ("context", "cluster"),
        ("ingest", "validate"),
    ]);
    assert_eq!(
        layering_breaks(&up),
        [
            "context (shared) uses cluster, a layer above",
            "ingest uses validate: stages never import each other"
        ]
    );
}

/// The longest a function outside test code may be, in lines.
const MAX_FUNCTION_LINES: usize = 80;

/// Removes string and char literals and `//` comments from a line, so their
/// braces do not count.
fn braces_only(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            // A char literal ('{', '\n'); a lifetime ('a) has no closing quote.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.nth(2);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Every `fn` of `text` (test module left out) longer than `max` lines: its
/// name and length.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let code = code(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let t = t
            .strip_prefix("pub(super) ")
            .or_else(|| t.strip_prefix("pub(crate) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let t = t.strip_prefix("const ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name = ident(rest);
        let (mut depth, mut opened, mut j) = (0i32, false, i);
        while j < lines.len() {
            let b = braces_only(lines[j]);
            if !opened && b.trim_end().ends_with(';') && !b.contains('{') {
                break;
            }
            for c in b.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                break;
            }
            j += 1;
        }
        if opened && j + 1 - i > max {
            found.push((name, j + 1 - i));
        }
        i = if opened { j + 1 } else { i + 1 };
    }
    found
}

/// Functions stay readable: none over 80 lines outside tests, and clippy's
/// `too_many_arguments` is never silenced.
#[test]
fn no_function_is_over_80_lines_and_no_argument_lint_is_silenced() {
    let mut long = Vec::new();
    let mut silenced = Vec::new();
    for files in modules(&repo().join("src")).values() {
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for (name, n) in long_functions(&text, MAX_FUNCTION_LINES) {
                long.push(format!("{}: {name} ({n} lines)", file.display()));
            }
            if text.contains("clippy::too_many_arguments") {
                silenced.push(file.display().to_string());
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
    assert!(
        silenced.is_empty(),
        "too_many_arguments silenced in {silenced:?}"
    );
}

#[test]
fn the_length_check_counts_braces_of_code_only() {
    let body: String = (0..5).map(|_| "    let x = \"}\"; // {\n").collect();
    let text = format!(
        "fn short() {{\n}}\nasync fn long(a: &'a str) {{\n    let c = '{{';\n{body}}}\nfn after() {{}}\n"
    );
    assert_eq!(long_functions(&text, 6), [("long".to_owned(), 8)]);
    assert!(long_functions(&text, 8).is_empty());
}
