//! The corpus of malformed inputs (tests/corpus/cases.yml): each case's exit code
//! and message, and after each that nothing it should not touch has changed:
//! stage/core/mart tables and the Delta tables always (rows cases excepted for
//! Delta), every meta and reporting table for config and command-line cases.
//!
//! `CORPUS_REPORT=1` prints what each case actually did, for writing new cases.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use serde::Deserialize;

use crate::files::*;
use crate::support::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    at: At,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    make: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    replace: Vec<(String, String)>,
    #[serde(default)]
    args: Vec<String>,
    exit: i32,
    #[serde(default)]
    says: Option<String>,
    /// `[line, column, rule]` of each quarantined error, in line order.
    #[serde(default)]
    rows: Vec<(i64, String, String)>,
}

#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum At {
    Ingest,
    Validate,
    Rows,
    Config,
    Cli,
}

const COLS: &[&str] = &["id", "name", "score", "born", "kind"];

fn corpus(file: &str) -> String {
    std::fs::read_to_string(repo().join("tests/corpus").join(file)).unwrap()
}

fn cases() -> Vec<Case> {
    serde_yaml::from_str(&corpus("cases.yml")).expect("tests/corpus/cases.yml")
}

#[test]
fn the_corpus_has_at_least_100_cases_with_unique_names() {
    let cases = cases();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names repeat");
    for c in &cases {
        let sources = [c.body.is_some(), c.hex.is_some(), c.make.is_some()];
        match c.at {
            At::Ingest | At::Validate | At::Rows => assert!(
                c.file.is_some() && sources.iter().filter(|s| **s).count() == 1,
                "{}: a file case needs `file` and one of body/hex/make",
                c.name
            ),
            At::Config => assert!(c.config.is_some() || !c.replace.is_empty(), "{}", c.name),
            At::Cli => assert!(!c.args.is_empty(), "{}", c.name),
        }
        assert!(
            c.says.is_some() || c.at == At::Rows,
            "{}: says what message?",
            c.name
        );
        assert!(
            c.at != At::Rows || !c.rows.is_empty(),
            "{}: which rows?",
            c.name
        );
    }
}

/// What must not change: table contents by name, Delta log files, meta counts.
#[derive(Debug, PartialEq)]
struct Snapshot {
    data: BTreeMap<String, String>,
    delta: Vec<String>,
    meta: BTreeMap<String, i64>,
    passed_validations: i64,
}

fn snapshot(p: &Project) -> Snapshot {
    let mut client = p.db.client();
    let tables: Vec<(String, String)> = client
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema IN ('stage', 'core', 'mart', 'meta', 'reporting') \
             AND table_type = 'BASE TABLE' ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut data = BTreeMap::new();
    let mut meta = BTreeMap::new();
    for (schema, table) in tables {
        let name = format!("\"{schema}\".\"{table}\"");
        if schema == "meta" || schema == "reporting" {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                .unwrap()
                .get(0);
            meta.insert(name, n);
        } else {
            let digest: Option<String> = client
                .query_one(
                    &format!("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {name} t"),
                    &[],
                )
                .unwrap()
                .get(0);
            data.insert(name, digest.unwrap_or_default());
        }
    }
    let passed_validations = client
        .query_one("SELECT count(*) FROM meta.validation_log WHERE passed", &[])
        .unwrap()
        .get(0);
    let mut delta = Vec::new();
    for table in ["cleaned/people", "quarantine/people"] {
        let log = p.path("stage").join(table).join("_delta_log");
        if let Ok(dir) = std::fs::read_dir(&log) {
            for e in dir {
                delta.push(format!(
                    "{table}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
    }
    delta.sort();
    Snapshot {
        data,
        delta,
        meta,
        passed_validations,
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn parquet(path: &Path, fields: Vec<Field>, arrays: Vec<ArrayRef>) {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn truncate_half(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// The generated files: inputs a text body cannot hold.
fn make(kind: &str, path: &Path) {
    let good = vec!["1", "Ann", "50", "2000-01-01", "a"];
    match kind {
        "parquet_truncated" => {
            write_parquet(path, COLS, &[good]);
            truncate_half(path);
        }
        "parquet_missing_kind" => write_parquet(path, &COLS[..4], &[good[..4].to_vec()]),
        "parquet_list_kind" => {
            let mut fields: Vec<Field> = COLS[..4]
                .iter()
                .map(|c| Field::new(*c, DataType::Utf8, true))
                .collect();
            let mut arrays: Vec<ArrayRef> = good[..4]
                .iter()
                .map(|v| Arc::new(StringArray::from(vec![*v])) as ArrayRef)
                .collect();
            let mut list = ListBuilder::new(StringBuilder::new());
            list.values().append_value("a");
            list.append(true);
            let list = list.finish();
            fields.push(Field::new("kind", list.data_type().clone(), true));
            arrays.push(Arc::new(list));
            parquet(path, fields, arrays);
        }
        "zip_without_workbook" => {
            let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
            zip.start_file("hello.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"hello").unwrap();
            zip.finish().unwrap();
        }
        "xlsx_bomb" => write_xlsx(path, "Sheet1", &[COLS.to_vec(), good], 2_000_000),
        "xlsx_missing_kind" => {
            write_xlsx(path, "Sheet1", &[COLS[..4].to_vec(), good[..4].to_vec()], 0)
        }
        "xlsx_truncated" => {
            write_xlsx(path, "Sheet1", &[COLS.to_vec(), good], 0);
            truncate_half(path);
        }
        "xlsx_empty_sheet" => write_xlsx(path, "Sheet1", &[], 0),
        "xlsx_error_cell" => write_xlsx(
            path,
            "Sheet1",
            &[
                COLS.to_vec(),
                good.clone(),
                vec!["2", "Bob", "!ERR #DIV/0!", "2000-01-01", "a"],
            ],
            0,
        ),
        "xlsx_rounded_int" => write_xlsx(
            path,
            "Sheet1",
            &[
                COLS.to_vec(),
                good.clone(),
                vec!["!NUM 12345678901234567", "Bob", "1", "2000-01-01", "a"],
            ],
            0,
        ),
        "xlsx_unsaved_formula" => write_xlsx(
            path,
            "Sheet1",
            &[
                COLS.to_vec(),
                good.clone(),
                vec!["2", "!FORMULA CONCAT(\"a\",\"b\")", "1", "2000-01-01", "a"],
            ],
            0,
        ),
        "xlsx_uncalculated_formula" => write_xlsx_as(
            path,
            "Sheet1",
            &[
                COLS.to_vec(),
                good.clone(),
                vec!["2", "Bob", "!CALC 1+1|0", "2000-01-01", "a"],
            ],
            0,
            true,
        ),
        other => panic!("no generator {other:?}"),
    }
}

/// Runs one case; returns what differs from its expectation (empty: it held).
fn run_case(p: &Project, case: &Case, period: &str, report: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    let before = snapshot(p);
    let mut written = None;
    let run = match case.at {
        At::Config | At::Cli => {
            let (config, args): (String, Vec<&str>) = match case.at {
                At::Config => {
                    let mut text = case.config.clone().unwrap_or_else(|| corpus("base.yml"));
                    for (from, to) in &case.replace {
                        assert!(
                            text.contains(from),
                            "{}: base.yml lacks {from:?}",
                            case.name
                        );
                        text = text.replacen(from, to, 1);
                    }
                    (text, vec!["ingest", "--all"])
                }
                _ => (
                    corpus("base.yml"),
                    case.args.iter().map(String::as_str).collect(),
                ),
            };
            let path = p.path("case_config.yml");
            std::fs::write(&path, config).unwrap();
            let mut all = vec!["--config", "case_config.yml"];
            all.extend(args);
            p.run(&all)
        }
        At::Ingest | At::Validate | At::Rows => {
            let name = case.file.as_deref().unwrap().replace("{period}", period);
            let path = p.path("landed").join(&name);
            match (&case.body, &case.hex, &case.make) {
                (Some(body), _, _) => std::fs::write(&path, body).unwrap(),
                (_, Some(hex), _) => std::fs::write(&path, hex_bytes(hex)).unwrap(),
                (_, _, Some(kind)) => make(kind, &path),
                _ => unreachable!("checked by the shape test"),
            }
            written = Some(path);
            let ingest = p.run(&["ingest", "--file-path", &name]);
            if case.at == At::Ingest || ingest.code != 0 {
                if case.at != At::Ingest {
                    wrong.push(format!("ingest exited {}: {}", ingest.code, ingest.stderr));
                }
                ingest
            } else {
                let id = ingest.json()["file_id"].to_string();
                p.run(&["validate", "--file-id", &id])
            }
        }
    };
    if let Some(path) = written {
        std::fs::remove_file(path).unwrap();
    }
    if report {
        let first: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| !l.contains(" INFO "))
            .take(3)
            .collect();
        eprintln!(
            "{:<34} exit {} | {}",
            case.name,
            run.code,
            first.join(" // ")
        );
    }
    if run.code != case.exit {
        wrong.push(format!("exit {} (expected {})", run.code, case.exit));
    }
    if let Some(says) = case
        .says
        .as_ref()
        .filter(|s| !run.stderr.contains(s.as_str()))
    {
        wrong.push(format!("stderr lacks {says:?}:\n{}", run.stderr));
    }
    if run.stderr.contains("panicked") {
        wrong.push(format!("panicked:\n{}", run.stderr));
    }
    let after = snapshot(p);
    if after.data != before.data {
        wrong.push("stage/core/mart tables changed".into());
    }
    match case.at {
        At::Rows => {
            let q = p.run(&["quarantine", "--dataset", "people", "--period", period]);
            let got: Vec<(i64, String, String)> = match q.code {
                0 => q.json()["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["line"].as_i64().unwrap(),
                            r["column"].as_str().unwrap().to_owned(),
                            r["rule"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect(),
                _ => {
                    wrong.push(format!("quarantine exited {}: {}", q.code, q.stderr));
                    Vec::new()
                }
            };
            if got != case.rows {
                wrong.push(format!("quarantined {got:?} (expected {:?})", case.rows));
            }
        }
        At::Ingest | At::Validate => {
            if after.delta != before.delta {
                wrong.push("a Delta table changed".into());
            }
            if after.passed_validations != before.passed_validations {
                wrong.push("a validation passed".into());
            }
        }
        At::Config | At::Cli => {
            if after.delta != before.delta {
                wrong.push("a Delta table changed".into());
            }
            if after.meta != before.meta {
                wrong.push(format!(
                    "meta changed: {:?} -> {:?}",
                    before.meta, after.meta
                ));
            }
        }
    }
    wrong
}

#[test]
fn every_corpus_case_gets_its_exit_code_and_message_and_changes_nothing_else() {
    let p = Project::new("corpus", &corpus("base.yml"));
    // One good period loaded, for the cases to leave alone.
    std::fs::write(
        p.path("landed/people_2024-01.csv"),
        csv(COLS, &[vec!["1", "Ann", "50", "2000-01-01", "a"]]),
    )
    .unwrap();
    let run = p.run(&["run", "--period", "2024-01"]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::remove_file(p.path("landed/people_2024-01.csv")).unwrap();

    let report = std::env::var_os("CORPUS_REPORT").is_some();
    let mut failures = Vec::new();
    let cases = cases();
    for (i, case) in cases.iter().enumerate() {
        // A period of the case's own: 2030-01, 2030-02, ...
        let period = format!("{}-{:02}", 2030 + i / 12, i % 12 + 1);
        let wrong = run_case(&p, case, &period, report);
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case.name, wrong.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
