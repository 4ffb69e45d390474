//! The module shape documentation/architecture.md draws: stage modules never
//! import each other (what two stages share lives below both), and the exit
//! codes are a leaf that imports nothing of the crate.

use std::path::{Path, PathBuf};

use crate::support::repo;

/// The stage modules; `run` (the orchestrator) and `lib` sit above them.
const STAGES: [&str; 8] = [
    "ingest",
    "validate",
    "load_stage",
    "transform",
    "status",
    "migrate",
    "quarantine",
    "report",
];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = repo().join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let dir = src.join(module);
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty(), "no source for module {module}");
    files
}

/// Every `crate::…` module a file names, in `use` lines or paths (comments and
/// doc links are not imports).
fn crate_refs(path: &Path) -> Vec<String> {
    let text: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut refs = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                refs.push(name);
            }
        } else {
            refs.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    refs
}

#[test]
fn stage_modules_do_not_import_each_other() {
    let mut found = Vec::new();
    for stage in STAGES {
        for file in sources(stage) {
            for r in crate_refs(&file) {
                if r != stage && STAGES.contains(&r.as_str()) {
                    found.push(format!("{} uses crate::{r}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "sideways imports between stages:\n{}",
        found.join("\n")
    );
}

/// Stages take their own request types, not clap's argument structs: the CLI
/// is one caller among others (run, tests, an embedding program).
#[test]
fn stage_modules_do_not_import_the_cli() {
    let mut found = Vec::new();
    for stage in STAGES {
        for file in sources(stage) {
            if crate_refs(&file).iter().any(|r| r == "cli") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "stages importing crate::cli: {found:?}");
}

/// The orchestrators above the stages (`run`, `events`) compose them but are
/// themselves composed only by `lib`: neither imports the CLI or the other.
#[test]
fn orchestrators_stay_below_lib() {
    let mut found = Vec::new();
    for (module, other) in [("run", "events"), ("events", "run")] {
        for file in sources(module) {
            let refs = crate_refs(&file);
            if refs.iter().any(|r| r == "cli" || r == other || r == "lib") {
                found.push(format!("{}: {refs:?}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "orchestrators reaching up or sideways: {found:?}"
    );
}

#[test]
fn exit_codes_are_a_leaf() {
    let refs = crate_refs(&repo().join("src/exit.rs"));
    assert!(refs.is_empty(), "src/exit.rs imports {refs:?}");
}

#[test]
fn the_checker_sees_sideways_imports() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "//! see [`crate::error`]\nuse crate::{config, ingest::header};\nlet x = crate::validate::run;",
    )
    .unwrap();
    assert_eq!(crate_refs(&f), ["config", "ingest", "validate"]);
}
