//! `pipeline validate`: rules on good and bad values, Delta outputs, line
//! numbers, re-validation, the reporting rows, and every format alike.

use std::path::PathBuf;

use crate::files::*;
use crate::support::*;

const CONFIG: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  items:
    file_pattern: '^items_(?P<period>\d{4}-\d{2})\.(csv|jsonl|parquet|xlsx)$'
    period: month
    primary_key: [id]
    min_quality_score: 50
    columns:
      id:      { type: int, required: true, min: 1 }
      label:   { type: string, regex: '^[^0-9]+$' }
      price:   { type: float, min: 0, max: 1000 }
      qty:     { type: 'decimal(8,2)' }
      active:  { type: bool }
      day:     { type: date, format: '%d/%m/%Y', min: '01/01/2020' }
      seen:    { type: timestamp, format: '%Y-%m-%d %H:%M:%S' }
      kind:    { type: string, allowed: [a, b] }
"#;

const COLS: &[&str] = &[
    "id", "label", "price", "qty", "active", "day", "seen", "kind",
];

struct Env(Project);

impl std::ops::Deref for Env {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.0
    }
}

impl Env {
    fn new(test: &str) -> Env {
        Env::with_config(test, CONFIG)
    }

    fn with_config(test: &str, config: &str) -> Env {
        Env(Project::new(test, config))
    }

    fn landed(&self, name: &str) -> PathBuf {
        self.dir.path().join("landed").join(name)
    }

    /// Ingests then validates one landed file.
    fn ingest_validate(&self, name: &str) -> Run {
        let ingest = self.run(&["ingest", "--file-path", name]);
        assert_eq!(ingest.code, 0, "{ingest:?}");
        let id = ingest.json()["file_id"].as_i64().unwrap().to_string();
        self.run(&["validate", "--file-id", &id])
    }

    fn cleaned(&self, sql: &str) -> Vec<Vec<String>> {
        delta_rows(&self.dir.path().join("stage/cleaned/items"), sql)
    }

    fn quarantine(&self, sql: &str) -> Vec<Vec<String>> {
        delta_rows(&self.dir.path().join("stage/quarantine/items"), sql)
    }
}

fn row<'a>(v: &[&'a str]) -> Vec<&'a str> {
    v.to_vec()
}

#[test]
fn every_type_and_rule_on_good_and_bad_values() {
    let env = Env::new("validate_rules");
    let good = row(&[
        "1",
        "Crème",
        "9.5",
        "12.25",
        "yes",
        "31/12/2024",
        "2025-01-02 03:04:05",
        "a",
    ]);
    let mut rows = vec![good.clone()];
    // (line in the file, the changed column, the bad value, the expected rule)
    let cases: &[(&str, &str, &str)] = &[
        ("id", "", "required"),
        ("id", "   ", "required"),
        ("id", "99999999999999999999", "type"),
        ("id", "1.5", "type"),
        ("id", "0", "min"),
        ("label", "x1", "regex"),
        ("price", "NaN", "type"),
        ("price", "inf", "type"),
        ("price", "abc", "type"),
        ("price", "-1", "min"),
        ("price", "1000.5", "max"),
        ("qty", "12,5", "type"),
        ("qty", "1.005", "type"),
        ("qty", "123456789", "type"),
        ("active", "maybe", "type"),
        ("day", "30/02/2025", "format"),
        ("day", "2025-01-01", "format"),
        ("day", "31/12/2019", "min"),
        ("seen", "2025-01-02T03:04:05", "format"),
        ("kind", "c", "allowed"),
    ];
    for (i, (column, value, _)) in cases.iter().enumerate() {
        let mut r = good.clone();
        let id = (i + 2).to_string();
        let idx = COLS.iter().position(|c| c == column).unwrap();
        r[0] = Box::leak(id.into_boxed_str());
        r[idx] = value;
        rows.push(r);
    }
    // Whitespace around parseable values is trimmed; unicode is kept; empty optional is null.
    rows.push(row(&[
        "100",
        "Ünïcode é",
        " 7 ",
        "",
        "0",
        "01/01/2020",
        "",
        "",
    ]));
    std::fs::write(env.landed("items_2025-01.csv"), csv(COLS, &rows)).unwrap();
    let run = env.ingest_validate("items_2025-01.csv");
    let out = run.json();
    // 20 of 22 rows rejected across the format, completeness and bounds checks.
    // The score is pinned so a change in how rows are counted shows up here.
    assert_eq!(
        (run.code, &out["score"]),
        (0, &serde_json::json!(74)),
        "{run:?}"
    );
    assert_eq!(out["rows_in"], rows.len() as u64);
    assert_eq!(out["rows_rejected"], cases.len() as u64, "{out}");

    let q = env.quarantine("SELECT _line, e.column, e.rule, e.value FROM (SELECT _line, unnest(_errors) AS e FROM t) ORDER BY _line");
    assert_eq!(
        q.len(),
        cases.len(),
        "one error per bad row, no double counting: {q:?}"
    );
    // Every rejected row names its file (the column is added to them alone).
    let files = env.quarantine("SELECT _source_file, count(*) FROM t GROUP BY _source_file");
    assert!(
        files.len() == 1
            && files[0][0].ends_with("/items_2025-01.csv")
            && files[0][1] == cases.len().to_string(),
        "{files:?}"
    );
    for (i, (column, value, rule)) in cases.iter().enumerate() {
        let line = (i + 3).to_string(); // header is line 1, the good row line 2
        let found = &q[i];
        assert_eq!(found[0], line, "{q:?}");
        assert_eq!(
            (found[1].as_str(), found[2].as_str()),
            (*column, *rule),
            "line {line}: {found:?}"
        );
        let shown = if value.is_empty() { "" } else { value };
        assert_eq!(found[3], shown, "line {line}");
    }
    let clean =
        env.cleaned("SELECT id, label, price, qty, active, day, seen, kind FROM t ORDER BY id");
    assert_eq!(clean.len(), 2, "{clean:?}");
    assert_eq!(
        clean[0],
        [
            "1",
            "Crème",
            "9.5",
            "12.25",
            "true",
            "2024-12-31",
            "2025-01-02T03:04:05",
            "a"
        ]
    );
    assert_eq!(
        clean[1],
        [
            "100",
            "Ünïcode é",
            "7.0",
            "NULL",
            "false",
            "2020-01-01",
            "NULL",
            "NULL"
        ]
    );
}

#[test]
fn duplicated_keys_quarantine_every_row_of_the_key() {
    let env = Env::new("validate_unique");
    let r = |id: &'static str| {
        row(&[
            id,
            "A",
            "1",
            "1",
            "true",
            "01/01/2021",
            "2021-01-01 00:00:00",
            "a",
        ])
    };
    std::fs::write(
        env.landed("items_2025-01.csv"),
        csv(COLS, &[r("1"), r("2"), r("01"), r("3")]),
    )
    .unwrap();
    let out = env.ingest_validate("items_2025-01.csv").json();
    assert_eq!(
        out["rows_rejected"], 2,
        "1 and 01 are the same int key: {out}"
    );
    let q = env.quarantine("SELECT _line, id FROM t ORDER BY _line");
    assert_eq!(q, [["2", "1"], ["4", "01"]]);
    assert_eq!(out["top_failing_rules"][0]["rule"], "unique");
}

#[test]
fn quarantine_lines_point_at_records_with_quoted_newlines() {
    let env = Env::new("validate_lines");
    let body = "id,label,price,qty,active,day,seen,kind\n\
                1,\"multi\nline\",1,1,true,01/01/2021,2021-01-01 00:00:00,q\n\
                2,ok,-5,1,true,01/01/2021,2021-01-01 00:00:00,a\n\
                3,\"a, \"\"quoted\"\" one\",1,1,true,01/01/2021,2021-01-01 00:00:00,zz\n";
    std::fs::write(env.landed("items_2025-01.csv"), body).unwrap();
    let out = env.ingest_validate("items_2025-01.csv").json();
    assert_eq!(out["rows_in"], 3);
    let q = env.quarantine("SELECT _line, id, label FROM t ORDER BY _line");
    assert_eq!(
        q[0],
        ["2", "1", "multi\nline"],
        "the record starts on line 2"
    );
    assert_eq!(q[1], ["4", "2", "ok"]);
    assert_eq!(q[2], ["5", "3", "a, \"quoted\" one"]);
}

/// The key pre-pass reads a CSV file's keys as the main pass reads its rows,
/// whatever the line ends and quoting: CRLF, a quoted key, quoted values after
/// the key, a blank line. A quoted line break sends it from byte ranges to one
/// scan of the key columns: the same keys are found either way.
#[test]
fn the_key_pre_pass_finds_repeats_whatever_the_quoting_and_line_ends() {
    let env = Env::new("validate_prepass_shapes");
    let tail = "1,1,true,01/01/2021,2021-01-01 00:00:00,a";
    // The first validation meets key 1 again (reading it once, then the
    // pre-pass); `"1"` and ` 1` are key 1, `"2"` is key 2 (only its quotes
    // make it repeat).
    let body = format!(
        "id,label,price,qty,active,day,seen,kind\r\n\
         1,A,{tail}\r\n\
         \"2\",\"B, b\",{tail}\r\n\
         \r\n\
         \"1\",\"A \"\"a\"\"\",{tail}\r\n\
         3,C,{tail}\r\n\
         4,\"D\",{tail}\r\n\
          1,E,{tail}\r\n\
         2,F,{tail}"
    );
    std::fs::write(env.landed("items_2025-01.csv"), body).unwrap();
    let out = env.ingest_validate("items_2025-01.csv").json();
    assert_eq!(out["duplicate_check"], "pre_pass", "{out}");
    assert_eq!(out["rows_in"], 7, "{out}");
    let q = env.quarantine("SELECT _line FROM t ORDER BY _line");
    assert_eq!(q, [["2"], ["3"], ["5"], ["8"], ["9"]], "{out}");

    // The dataset repeated keys: the next file takes the pre-pass at once, and
    // its quoted line break is read by one scan.
    let body = format!(
        "id,label,price,qty,active,day,seen,kind\n\
         5,A,{tail}\n\
         6,\"two\nlines\",{tail}\n\
         7,C,{tail}\n\
         5,\"E\",{tail}\n"
    );
    std::fs::write(env.landed("items_2025-02.csv"), body).unwrap();
    let out = env.ingest_validate("items_2025-02.csv").json();
    assert_eq!(out["duplicate_check"], "pre_pass", "{out}");
    assert_eq!(out["rows_in"], 4, "{out}");
    assert_eq!(out["rows_rejected"], 2, "{out}");
    let q = env.quarantine("SELECT _line, id FROM t WHERE _data_period = '2025-02' ORDER BY _line");
    assert_eq!(q, [["2", "5"], ["6", "5"]], "{out}");
}

#[test]
fn revalidation_replaces_its_period_only_and_upserts_reports() {
    let env = Env::new("validate_replace");
    let r = |id: &'static str| {
        row(&[
            id,
            "A",
            "1",
            "1",
            "true",
            "01/01/2021",
            "2021-01-01 00:00:00",
            "a",
        ])
    };
    std::fs::write(
        env.landed("items_2025-01.csv"),
        csv(COLS, &[r("1"), r("2")]),
    )
    .unwrap();
    std::fs::write(
        env.landed("items_2025-02.csv"),
        csv(COLS, &[r("1"), r("2"), r("3")]),
    )
    .unwrap();
    assert_eq!(env.ingest_validate("items_2025-01.csv").code, 0);
    assert_eq!(env.ingest_validate("items_2025-02.csv").code, 0);
    std::fs::write(
        env.landed("items_2025-02.csv"),
        csv(COLS, &[r("7"), r("x")]),
    )
    .unwrap();
    assert_eq!(env.ingest_validate("items_2025-02.csv").code, 0);
    let counts = env
        .cleaned("SELECT _data_period, count(*), min(id) FROM t GROUP BY _data_period ORDER BY 1");
    assert_eq!(counts, [["2025-01", "2", "1"], ["2025-02", "1", "7"]]);
    let q = env.quarantine("SELECT _data_period, id FROM t");
    assert_eq!(q, [["2025-02", "x"]]);
    // The replace is one commit of ours that removes exactly the files the
    // period's earlier commit added, read from the log, not found by a scan.
    for table in ["cleaned", "quarantine"] {
        let log = env.path(&format!("stage/{table}/items/_delta_log"));
        let commit = |v: u64| -> Vec<serde_json::Value> {
            std::fs::read_to_string(log.join(format!("{v:020}.json")))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let paths = |actions: &[serde_json::Value], kind: &str| -> Vec<String> {
            let mut p: Vec<String> = actions
                .iter()
                .filter_map(|a| a[kind]["path"].as_str().map(str::to_owned))
                .collect();
            p.sort();
            p
        };
        let (feb, replace) = (commit(1), commit(2));
        let info = replace
            .iter()
            .find(|a| a["commitInfo"].is_object())
            .unwrap();
        assert_eq!(
            info["commitInfo"]["pipeline.replacedPeriod"], "2025-02",
            "{table}: {info}"
        );
        assert_eq!(paths(&replace, "remove"), paths(&feb, "add"), "{table}");
        // (February's first file had no rejected row: no quarantine file to remove)
        assert_eq!(paths(&feb, "add").is_empty(), table == "quarantine");
        assert!(
            paths(&replace, "add")
                .iter()
                .all(|p| p.starts_with("_data_period=2025-02/")),
            "{table}: {replace:?}"
        );
    }
    // by dataset and period: the current file
    let again = env.run(&["validate", "--dataset", "items", "--period", "2025-02"]);
    assert_eq!(again.code, 0, "{again:?}");
    let mut c = env.db.client();
    let mut n = |sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(n("SELECT count(*) FROM reporting.monitoring_file"), 1);
    assert_eq!(n("SELECT count(*) FROM reporting.monitoring_file_run"), 2);
    assert_eq!(
        n("SELECT count(*) FROM reporting.monitoring_file_data_quality"),
        2
    );
    assert_eq!(
        n("SELECT count(*) FROM reporting.monitoring_file_data_profile"),
        2
    );
    assert_eq!(
        n("SELECT count(*) FROM reporting.monitoring_file_failed_validation"),
        1
    );
    assert_eq!(n("SELECT count(*) FROM meta.validation_log"), 4);
    let row = c
        .query_one(
            "SELECT q.score, q.metrics, q.deductions, p.profile_payload, f.latest_data_quality_score
               FROM reporting.monitoring_file_run r
               JOIN reporting.monitoring_file_data_quality q ON q.monitoring_file_run_id = r.id
               JOIN reporting.monitoring_file_data_profile p ON p.monitoring_file_run_id = r.id
               JOIN reporting.monitoring_file f ON f.id = r.monitoring_file_id
              WHERE r.run_date = '2025-02-01'",
            &[],
        )
        .unwrap();
    let score: i32 = row.get(0);
    assert_eq!(score, 83, "half the rows fail the int type: 100 - 35/2");
    let metrics: serde_json::Value = row.get(1);
    let keys: Vec<&String> = metrics.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "boundsRange",
            "completeness",
            "formatParsing",
            "schemaValidation",
            "uniqueness"
        ]
    );
    let deductions: serde_json::Value = row.get(2);
    assert_eq!(deductions["format"], 17.5);
    let profile: serde_json::Value = row.get(3);
    let mut pk: Vec<&String> = profile.as_object().unwrap().keys().collect();
    pk.sort();
    assert_eq!(
        pk,
        [
            "boundsAnomalies",
            "completenessOverview",
            "sampleData",
            "statisticalSummary",
            "typeFormatIssues",
            "uniquenessOverview",
            "valueDistributions"
        ]
    );
    assert_eq!(profile["sampleData"]["rows"].as_array().unwrap().len(), 2);
    let latest: Option<i32> = row.get(4);
    assert_eq!(latest, Some(83));
}

#[test]
fn same_data_in_every_format_gives_the_same_cleaned_rows() {
    let config = CONFIG.replace(
        "format: '%d/%m/%Y', min: '01/01/2020'",
        "format: '%Y-%m-%d'",
    );
    let cols = COLS;
    let data = vec![
        row(&[
            "1",
            "Ana",
            "1.5",
            "2.25",
            "true",
            "2024-02-29",
            "2025-01-02 03:04:05",
            "a",
        ]),
        row(&[
            "2",
            "Bo",
            "",
            "3",
            "false",
            "2023-01-01",
            "2025-01-02 00:00:00",
            "b",
        ]),
        row(&[
            "3",
            "bad1",
            "1",
            "1",
            "true",
            "2023-01-01",
            "2025-01-02 00:00:00",
            "a",
        ]),
    ];
    let mut results = Vec::new();
    for (ext, write) in [
        (
            "csv",
            &(|p: &std::path::Path, c: &[&str], r: &[Vec<&str>]| {
                std::fs::write(p, csv(c, r)).unwrap()
            }) as &dyn Fn(&std::path::Path, &[&str], &[Vec<&str>]),
        ),
        ("jsonl", &|p, c, r| write_jsonl(p, c, r)),
        ("parquet", &|p, c, r| write_parquet(p, c, r)),
        ("xlsx", &|p, c, r| {
            let mut all = vec![c.to_vec()];
            all.extend(r.iter().cloned());
            write_xlsx(p, "Sheet1", &all, 0)
        }),
    ] {
        let env = Env::with_config(&format!("validate_fmt_{ext}"), &config);
        let name = format!("items_2025-03.{ext}");
        write(&env.landed(&name), cols, &data);
        let run = env.ingest_validate(&name);
        assert_eq!(run.code, 0, "{ext}: {run:?}");
        assert_eq!(run.json()["rows_rejected"], 1, "{ext}");
        results.push(
            env.cleaned("SELECT id, label, price, qty, active, day, seen, kind FROM t ORDER BY id"),
        );
    }
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    assert_eq!(results[0].len(), 2);
}

/// A blank row (empty line, `,,,`, an empty spreadsheet row) is skipped in every
/// format alike, and the rows after it keep their true line numbers.
#[test]
fn blank_rows_are_skipped_in_every_format_with_true_line_numbers() {
    let good = |id: &'static str| {
        row(&[
            id,
            "ok",
            "1",
            "1",
            "true",
            "01/01/2023",
            "2025-01-02 00:00:00",
            "a",
        ])
    };
    let bad = row(&[
        "3",
        "bad1",
        "1",
        "1",
        "true",
        "01/01/2023",
        "2025-01-02 00:00:00",
        "a",
    ]);
    let blank = vec![""; COLS.len()];
    let header = COLS.join(",");
    let line = |r: &Vec<&str>| {
        csv(COLS, std::slice::from_ref(r))
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // Header, 1, blank, 2, whitespace-only, bad 3, blank at the end.
    let csv_text = format!(
        "{header}\n{}\n\n{}\n , ,,,,,,\n{}\n{}\n",
        line(&good("1")),
        line(&good("2")),
        line(&bad),
        ",".repeat(COLS.len() - 1)
    );
    let json = |r: &Vec<&str>| {
        let fields: Vec<String> = COLS
            .iter()
            .zip(r)
            .map(|(c, v)| format!("{}:{}", serde_json::json!(c), serde_json::json!(v)))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let jsonl_text = format!(
        "{}\n\n{}\n  \t\n{}\n\n",
        json(&good("1")),
        json(&good("2")),
        json(&bad)
    );
    let spaces = vec![" "; COLS.len()];
    let sheet = vec![
        COLS.to_vec(),
        good("1"),
        blank.clone(),
        good("2"),
        spaces,
        bad.clone(),
        blank,
    ];
    // The bad row's line: 6 with a header line, 5 in JSONL (no header).
    for (ext, bad_line) in [("csv", 6), ("jsonl", 5), ("xlsx", 6)] {
        let env = Env::new(&format!("validate_blank_{ext}"));
        let name = format!("items_2025-03.{ext}");
        match ext {
            "csv" => std::fs::write(env.landed(&name), &csv_text).unwrap(),
            "jsonl" => std::fs::write(env.landed(&name), &jsonl_text).unwrap(),
            _ => write_xlsx(&env.landed(&name), "Sheet1", &sheet, 0),
        }
        let run = env.ingest_validate(&name);
        assert_eq!(run.code, 0, "{ext}: {run:?}");
        let out = run.json();
        assert_eq!(out["rows_valid"], 2, "{ext}: {out}");
        assert_eq!(out["rows_rejected"], 1, "{ext}: {out}");
        assert_eq!(
            env.quarantine("SELECT CAST(_line AS VARCHAR) FROM t"),
            [[bad_line.to_string()]],
            "{ext}"
        );
    }
}

#[test]
fn failing_quality_exits_3_but_writes_outputs() {
    let env = Env::with_config(
        "validate_gate",
        &CONFIG.replace("min_quality_score: 50", "min_quality_score: 80"),
    );
    let bad = |id: &'static str| row(&[id, "1", "x", "x", "x", "x", "x", "x"]);
    std::fs::write(
        env.landed("items_2025-01.csv"),
        csv(COLS, &[bad("1"), bad("2")]),
    )
    .unwrap();
    let run = env.ingest_validate("items_2025-01.csv");
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(out["passed"], false);
    assert_eq!(
        out["score"], 50,
        "every row fails format and bounds... {out}"
    );
    assert_eq!(env.quarantine("SELECT count(*) FROM t"), [["2"]]);
    assert!(run.stderr.contains("not a finite number"), "{}", run.stderr);
}

#[test]
fn rejected_unknown_ambiguous_and_missing_requests_say_which() {
    let env = Env::new("validate_usage");
    std::fs::write(env.landed("items_2025-01.csv"), "nope\n").unwrap();
    let ingest = env.run(&["ingest", "--file-path", "items_2025-01.csv"]);
    assert_eq!(ingest.code, 3);
    let id = ingest.json()["file_id"].as_i64().unwrap().to_string();
    let run = env.run(&["validate", "--file-id", &id]);
    assert_eq!(run.code, 3, "a rejected file is exit 3: {run:?}");
    assert!(
        run.stderr.contains("was rejected at ingest"),
        "{}",
        run.stderr
    );
    let run = env.run(&["validate", "--file-id", "999"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no ingested file with id 999"),
        "{}",
        run.stderr
    );
    let run = env.run(&["validate", "--dataset", "items"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("pass --period YYYY-MM"),
        "{}",
        run.stderr
    );
    let run = env.run(&["validate", "--dataset", "items", "--period", "2025-13"]);
    assert_eq!(run.code, 2);
    // By dataset and period: the period's latest version was rejected (3).
    let run = env.run(&["validate", "--dataset", "items", "--period", "2025-01"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("was rejected at ingest"),
        "{}",
        run.stderr
    );
    // Nothing landed for the period yet: exit 5, so an orchestrator waits.
    let run = env.run(&["validate", "--dataset", "items", "--period", "2025-04"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("has not arrived"), "{}", run.stderr);
}

#[test]
fn explain_prints_sql_and_writes_nothing() {
    let env = Env::new("validate_explain");
    std::fs::write(
        env.landed("items_2025-01.csv"),
        csv(
            COLS,
            &[row(&[
                "1",
                "A",
                "1",
                "1",
                "t",
                "01/01/2021",
                "2021-01-01 00:00:00",
                "a",
            ])],
        ),
    )
    .unwrap();
    assert_eq!(env.run(&["ingest", "--all"]).code, 0);
    let explain = |period: &str| {
        let args = [
            "validate",
            "--dataset",
            "items",
            "--period",
            period,
            "--explain",
        ];
        pipeline(env.dir.path(), Some(&env.db.url), &args)
    };
    let run = explain("2025-01");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("SELECT"), "{}", run.stdout);
    assert!(run.stdout.contains("parse_date"), "{}", run.stdout);
    assert!(run.stdout.contains("landed_file"), "{}", run.stdout);
    assert!(
        !env.dir
            .path()
            .join("stage/cleaned/items/_delta_log")
            .exists()
    );
    let n: i64 = env
        .db
        .client()
        .query_one("SELECT count(*) FROM meta.validation_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // A dataset whose last validation found repeated keys: the plan shown is the
    // pre-pass's, each row's key looked up in the repeated ones.
    let r = |id: &'static str| {
        row(&[
            id,
            "A",
            "1",
            "1",
            "t",
            "01/01/2021",
            "2021-01-01 00:00:00",
            "a",
        ])
    };
    std::fs::write(
        env.landed("items_2025-02.csv"),
        csv(COLS, &[r("1"), r("1")]),
    )
    .unwrap();
    assert_eq!(env.ingest_validate("items_2025-02.csv").code, 0);
    let run = explain("2025-02");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("(a pre-pass)"), "{}", run.stdout);
    assert!(run.stdout.contains("repeated_key"), "{}", run.stdout);
}

/// A Parquet column whose type cannot feed the declared column rejects the file
/// at ingest, naming the column and both types: it is never read as NULLs that
/// count as valid rows.
#[test]
fn incompatible_parquet_column_rejects_the_file_naming_it() {
    let config = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{4}-\d{2})\.parquet$'
    period: month
    columns:
      id:     { type: int }
      amount: { type: int }
      note:   { type: string }
"#;
    let env = Env::with_config("validate_schema", config);
    write_sales_parquet(&env.landed("sales_2025-01.parquet"), 10, 1, false);
    let run = env.run(&["ingest", "--file-path", "sales_2025-01.parquet"]);
    assert_eq!(run.code, 3, "{run:?}");
    let reason = run.json()["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("column `amount` is Float64 in the file, which cannot be read as int"),
        "{reason}"
    );
    let run = env.run(&["validate", "--dataset", "sales", "--period", "2025-01"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!env.path("stage/cleaned/sales").exists());
}

#[test]
fn a_header_only_file_validates_to_an_empty_period() {
    let env = Env::new("validate_empty");
    std::fs::write(
        env.landed("items_2025-01.csv"),
        format!("{}\r\n", COLS.join(",")),
    )
    .unwrap();
    let run = env.ingest_validate("items_2025-01.csv");
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(
        (out["rows_in"].as_u64(), out["score"].as_i64()),
        (Some(0), Some(100))
    );
    assert_eq!(env.cleaned("SELECT count(*) FROM t"), [["0"]]);
}

/// PostgreSQL text cannot hold NUL: a NUL in a text value is a row error with its
/// line and column (rule `nul`), a NUL in a number a type error, and the report
/// rows (which show the value as `\0`) and the load still succeed.
#[test]
fn nul_bytes_are_row_errors_with_line_and_column() {
    let env = Env::new("validate_nul");
    let body = "id,label,price,qty,active,day,seen,kind\n\
                1,ok\0x,1,1,true,01/01/2021,2021-01-01 00:00:00,a\n\
                2,fine,1,1,true,01/01/2021,2021-01-01 00:00:00,a\n\
                3\0,fine,1,1,true,01/01/2021,2021-01-01 00:00:00,b\n";
    std::fs::write(env.landed("items_2025-01.csv"), body).unwrap();
    let run = env.ingest_validate("items_2025-01.csv");
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(
        (out["rows_valid"].as_i64(), out["rows_rejected"].as_i64()),
        (Some(1), Some(2))
    );
    let errors = env.quarantine(
        "SELECT _line, e.column, e.rule FROM (SELECT _line, unnest(_errors) AS e FROM t) ORDER BY _line",
    );
    assert_eq!(
        errors,
        [
            vec!["2".to_owned(), "label".into(), "nul".into()],
            vec!["4".to_owned(), "id".into(), "type".into()],
        ]
    );
    let example: serde_json::Value = env
        .db
        .client()
        .query_one(
            "SELECT example_values FROM reporting.monitoring_file_failed_validation WHERE rule = 'nul'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(example, serde_json::json!(["ok\\0x"]));
    let load = env.run(&["load-stage", "--dataset", "items", "--period", "2025-01"]);
    assert_eq!(load.code, 0, "{load:?}");
    assert_eq!(load.json()["rows_inserted"], 1);
}

const TYPED: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  typed:
    file_pattern: '^typed_(?P<period>\d{4}-\d{2})\.parquet$'
    period: month
    columns:
      s_dict:  { type: string, required: true }
      s_large: { type: string }
      s_view:  { type: string }
      i8:      { type: int }
      u32:     { type: int }
      dec:     { type: 'decimal(10,2)' }
      f32:     { type: float }
      d:       { type: date }
      ts:      { type: timestamp }
      tsz:     { type: timestamp }
      b:       { type: bool }
"#;

/// Parquet is read by its real Arrow types: dictionary, large and view strings,
/// narrow and unsigned integers, decimals, dates, timestamps with and without a
/// zone, booleans. Every value arrives in the cleaned table, none as NULL.
#[test]
fn parquet_columns_of_every_arrow_type_are_converted() {
    use datafusion::arrow::array::*;
    use datafusion::arrow::datatypes::{DataType, Int32Type, TimeUnit};
    use std::sync::Arc;

    let project = Project::new("validate_parquet_types", TYPED);
    let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("s_dict", Arc::new(dict)),
        (
            "s_large",
            Arc::new(LargeStringArray::from(vec!["x", "y", "z"])),
        ),
        (
            "s_view",
            Arc::new(StringViewArray::from(vec!["p", "q", "r"])),
        ),
        ("i8", Arc::new(Int8Array::from(vec![-1, 0, 127]))),
        (
            "u32",
            Arc::new(UInt32Array::from(vec![0, 1, 4_000_000_000])),
        ),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![1234, -5, 0])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("f32", Arc::new(Float32Array::from(vec![1.5, -2.25, 0.0]))),
        ("d", Arc::new(Date32Array::from(vec![0, 19000, 20000]))),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![
                0,
                1_000_000,
                86_400_000_000,
            ])),
        ),
        (
            "tsz",
            Arc::new(
                TimestampMillisecondArray::from(vec![0, 3_600_000, 7_200_000])
                    .with_timezone("+02:00"),
            ),
        ),
        ("b", Arc::new(BooleanArray::from(vec![true, false, true]))),
    ];
    assert!(matches!(
        columns[0].1.data_type(),
        DataType::Dictionary(_, _)
    ));
    assert!(matches!(
        columns[9].1.data_type(),
        DataType::Timestamp(TimeUnit::Millisecond, Some(_))
    ));
    crate::files::write_parquet_columns(&project.path("landed/typed_2025-01.parquet"), columns);

    assert_eq!(project.run(&["ingest", "--all"]).code, 0);
    let v = project.run(&["validate", "--dataset", "typed", "--period", "2025-01"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["score"], 100, "{v:?}");
    assert_eq!(v.json()["rows_valid"], 3, "{v:?}");
    let rows = delta_rows(
        &project.path("stage/cleaned/typed"),
        "SELECT s_dict, s_large, s_view, i8, u32, dec, f32, d, ts, tsz, b FROM t ORDER BY i8",
    );
    assert_eq!(
        rows,
        [
            [
                "a",
                "x",
                "p",
                "-1",
                "0",
                "12.34",
                "1.5",
                "1970-01-01",
                "1970-01-01T00:00:00",
                "1970-01-01T00:00:00",
                "true"
            ],
            [
                "b",
                "y",
                "q",
                "0",
                "1",
                "-0.05",
                "-2.25",
                "2022-01-08",
                "1970-01-01T00:00:01",
                "1970-01-01T01:00:00",
                "false"
            ],
            [
                "a",
                "z",
                "r",
                "127",
                "4000000000",
                "0.00",
                "0.0",
                "2024-10-04",
                "1970-01-02T00:00:00",
                "1970-01-01T02:00:00",
                "true"
            ],
        ]
        .map(|r| r.map(str::to_owned).to_vec())
    );
}

/// One unbalanced quote must not swallow the rows after it into one value and
/// leave the file scoring well: the file is malformed (65, failed), and the
/// message names the line where the quote opened. A quoted line break that does
/// close is still one valid record.
#[test]
fn an_unbalanced_quote_makes_the_file_malformed_naming_its_line() {
    let env = Env::new("validate_quotes");
    let good = |i: usize| format!("{i},label,1,1,true,01/01/2021,2021-01-01 00:00:00,a");
    let header = "id,label,price,qty,active,day,seen,kind";
    // A quote opened on line 7 that never closes: it runs to the end of the file.
    let mut lines: Vec<String> = (1..=20).map(good).collect();
    lines[5] = "6,\"label,1,1,true,01/01/2021,2021-01-01 00:00:00,a".into();
    std::fs::write(
        env.landed("items_2025-01.csv"),
        format!("{header}\n{}\n", lines.join("\n")),
    )
    .unwrap();
    // A quote opened on line 4 that closes on line 9, inside another value: the
    // swallowed record has the wrong number of fields.
    let mut lines: Vec<String> = (1..=20).map(good).collect();
    lines[2] = "3,\"label,1,1,true,01/01/2021,2021-01-01 00:00:00,a".into();
    lines[7] = "8,la\"bel,1,1,true,01/01/2021,2021-01-01 00:00:00,a".into();
    std::fs::write(
        env.landed("items_2025-02.csv"),
        format!("{header}\n{}\n", lines.join("\n")),
    )
    .unwrap();
    for (file, line) in [("items_2025-01.csv", 7), ("items_2025-02.csv", 4)] {
        let run = env.ingest_validate(file);
        assert_eq!(run.code, 3, "{file}: {run:?}");
        let out = run.json();
        assert_eq!(out["score"], 65, "{file}: {out}");
        assert_eq!(out["passed"], false, "{file}: {out}");
        assert_eq!(out["rows_valid"], 0, "{file}: {out}");
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("line {line}:")) && error.contains("quote"),
            "{file}: {out}"
        );
    }
    // A quoted line break that closes is data.
    let mut lines: Vec<String> = (1..=20).map(good).collect();
    lines[4] = "5,\"two\nlines\",1,1,true,01/01/2021,2021-01-01 00:00:00,a".into();
    std::fs::write(
        env.landed("items_2025-03.csv"),
        format!("{header}\n{}\n", lines.join("\n")),
    )
    .unwrap();
    let run = env.ingest_validate("items_2025-03.csv");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["rows_valid"], 20);
}

#[test]
fn quarantine_command_shows_the_errors_of_the_verdict_in_force() {
    let env = Env::new("validate_quarantine_cmd");
    let good = ["1", "pen", "2.5", "1.00", "yes", "01/02/2024", "", "a"];
    let rows: Vec<Vec<&str>> = vec![
        good.to_vec(),
        row(&["2", "x9", "-1", "1.00", "yes", "01/02/2024", "", "a"]), // regex + min
        row(&["3", "ok", "1", "1.00", "yes", "01/02/2024", "", "z"]),  // allowed
        row(&["", "ok", "1", "1.00", "yes", "01/02/2024", "", "a"]),   // required
    ];
    std::fs::write(env.landed("items_2025-03.csv"), csv(COLS, &rows)).unwrap();
    assert_eq!(env.ingest_validate("items_2025-03.csv").code, 0);
    let args = ["quarantine", "--dataset", "items", "--period", "2025-03"];

    let out = env.run(&args).json();
    let expected = env.quarantine(
        "SELECT CAST(_line AS BIGINT), e.column, e.rule FROM (SELECT _line, unnest(_errors) AS e FROM t) ORDER BY 1, 2",
    );
    let shown: Vec<Vec<String>> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                r["line"].to_string(),
                r["column"].as_str().unwrap().to_owned(),
                r["rule"].as_str().unwrap().to_owned(),
            ]
        })
        .collect();
    assert_eq!(shown, expected, "{out}");
    assert_eq!(shown.len(), 4, "{out}");
    assert_eq!(
        (out["errors"].as_u64(), out["rows_rejected"].as_i64()),
        (Some(4), Some(3))
    );

    // --rule filters, --limit cuts, and the table says how many are left.
    let table = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &[&args[..], &["--rule", "min", "--limit", "5"]].concat(),
    );
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("price   min"), "{}", table.stdout);
    assert!(
        table.stdout.contains("1 of 1 error(s) shown"),
        "{}",
        table.stdout
    );
    let csv_out = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &[&args[..], &["--format", "csv", "--limit", "1"]].concat(),
    );
    assert_eq!(
        csv_out.stdout.lines().collect::<Vec<_>>(),
        [
            "line,key,column,rule,value,message",
            "3,id=2,label,regex,x9,does not match ^[^0-9]+$"
        ],
        "{csv_out:?}"
    );
    // Each error names its row by its key, as delivered (#48, 4).
    let keys: Vec<&str> = (out["rows"].as_array().unwrap().iter())
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["id=2", "id=2", "id=3", "id="], "{out}");

    // A period never validated is a usage error that says what to run.
    let none = env.run(&["quarantine", "--dataset", "items", "--period", "2025-04"]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(
        none.stderr
            .contains("pipeline validate --dataset items --period 2025-04"),
        "{}",
        none.stderr
    );
}

#[test]
fn debug_logs_are_this_tools_not_its_dependencies() {
    let env = Env::new("validate_debug_logs");
    let rows = vec![row(&[
        "1",
        "pen",
        "2.5",
        "1.00",
        "yes",
        "01/02/2024",
        "",
        "a",
    ])];
    std::fs::write(env.landed("items_2025-05.csv"), csv(COLS, &rows)).unwrap();
    assert_eq!(env.run(&["ingest", "--all"]).code, 0);
    let run: Run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["validate", "--dataset", "items", "--period", "2025-05"],
    )
    .env("PIPELINE_LOG", "debug")
    .output()
    .unwrap()
    .into();
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.stderr.lines().count();
    assert!(run.stderr.contains("DEBUG"), "{}", run.stderr);
    // DataFusion's and delta-rs's own debug output ran to tens of thousands of lines.
    assert!(lines < 100, "{lines} lines:\n{}", run.stderr);
}

/// A Parquet scan decodes only the columns it reads (the uniqueness pre-pass, its
/// key alone): with the file's columns in another order than the declared ones
/// and one more (`headers: subset`), duplicated keys are still found and every value lands in its
/// own column.
#[test]
fn parquet_key_pass_reads_its_columns_by_name_whatever_their_order() {
    let project = Project::new(
        "validate_parquet_order",
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  orders:
    file_pattern: '^orders_(?P<period>\d{4}-\d{2})\.parquet$'
    period: month
    primary_key: [code, id]
    headers: subset
    columns:
      id:    { type: int, required: true }
      label: { type: string }
      code:  { type: string, required: true }
"#,
    );
    crate::files::write_parquet(
        &project.path("landed/orders_2025-01.parquet"),
        &["extra", "label", "code", "id"],
        &[
            vec!["e1", "first", "A", "1"],
            vec!["e2", "second", "A", "2"],
            vec!["e3", "third", "B", "1"],
            vec!["e4", "again", "A", "2"],
        ],
    );
    let ingest = project.run(&["ingest", "--all"]);
    assert_eq!(ingest.code, 0, "{ingest:?}");
    let v = project.run(&["validate", "--dataset", "orders", "--period", "2025-01"]);
    assert_eq!(v.json()["rows_valid"], 2, "{v:?}");
    assert_eq!(
        delta_rows(
            &project.path("stage/cleaned/orders"),
            "SELECT id, label, code FROM t ORDER BY id, code"
        ),
        [["1", "first", "A"], ["1", "third", "B"]]
    );
    assert_eq!(
        delta_rows(
            &project.path("stage/quarantine/orders"),
            "SELECT id, label, code, _errors[1]['rule'], _errors[1]['value'] FROM t ORDER BY label"
        ),
        [
            ["2", "again", "A", "unique", "A,2"],
            ["2", "second", "A", "unique", "A,2"]
        ]
    );
}

/// Only a Parquet file's declared columns are decoded: an undeclared column
/// whose pages are damaged does not stop the file (decoding it would fail the
/// validation as malformed), and the declared ones are read by name.
#[test]
fn undeclared_parquet_columns_are_never_decoded() {
    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use std::sync::Arc;

    let project = Project::new(
        "validate_parquet_projection",
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  orders:
    file_pattern: '^orders_(?P<period>\d{4}-\d{2})\.parquet$'
    period: month
    primary_key: [id]
    headers: subset
    columns:
      id:    { type: int, required: true }
      label: { type: string }
"#,
    );
    let path = project.path("landed/orders_2025-01.parquet");
    let blob: Vec<String> = (0..3).map(|i| format!("{i}").repeat(400)).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("blob", Arc::new(StringArray::from(blob))),
        ("label", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    // Plain values, uncompressed: the blob's bytes are in the file as they are.
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    // Damage the second half of the blob column's chunk (its values).
    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let chunk = reader.metadata().row_group(0).column(0);
    let (start, len) = chunk.byte_range();
    drop(reader);
    let mut bytes = std::fs::read(&path).unwrap();
    let damaged = (start + len / 2) as usize..(start + len) as usize;
    bytes[damaged].fill(0xFF);
    std::fs::write(&path, &bytes).unwrap();

    let ingest = project.run(&["ingest", "--all"]);
    assert_eq!(ingest.code, 0, "{ingest:?}");
    let v = project.run(&["validate", "--dataset", "orders", "--period", "2025-01"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["rows_valid"], 3, "{v:?}");
    assert_eq!(
        delta_rows(
            &project.path("stage/cleaned/orders"),
            "SELECT id, label FROM t ORDER BY id"
        ),
        [["1", "a"], ["2", "b"], ["3", "c"]]
    );
}

/// Integers, floats, dates and naive timestamps a Parquet file already holds in
/// their declared type are checked as they are (no text round trip), with the
/// same rules and reasons as text: a NaN is not a finite number, a null in a
/// required column is missing, bounds apply, a duplicated two-column key is
/// found, and quarantine keeps the values as text. The timestamp keeps its
/// seconds and fraction: through text it was written in the column's format
/// (minutes only) and read back as 14:13:00.
#[test]
fn native_parquet_values_are_checked_like_text() {
    use datafusion::arrow::array::*;
    use std::sync::Arc;

    let project = Project::new(
        "validate_parquet_native",
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  native:
    file_pattern: '^native_(?P<period>\d{4}-\d{2})\.parquet$'
    period: month
    primary_key: [id, day]
    columns:
      id:     { type: int, required: true, max: 999 }
      amount: { type: float, min: 0 }
      day:    { type: date, min: '2025-01-01' }
      seen:   { type: timestamp, format: '%d/%m/%Y %H:%M' }
"#,
    );
    let day = |d: i32| 20089 + d; // 2025-01-01 + d
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(Int32Array::from(vec![
                Some(100),
                Some(101),
                Some(102),
                None,
                Some(1000),
                Some(105),
                Some(105),
            ])),
        ),
        (
            "amount",
            Arc::new(Float64Array::from(vec![
                1.5,
                f64::NAN,
                -2.0,
                3.0,
                4.0,
                5.0,
                6.0,
            ])),
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![
                day(0),
                day(1),
                day(2),
                day(3),
                day(4),
                day(-1),
                day(-1),
            ])),
        ),
        (
            "seen",
            Arc::new(TimestampNanosecondArray::from(vec![
                Some(1_736_000_000_123_456_789),
                None,
                None,
                None,
                None,
                None,
                None,
            ])),
        ),
    ];
    crate::files::write_parquet_columns(&project.path("landed/native_2025-01.parquet"), columns);

    assert_eq!(project.run(&["ingest", "--all"]).code, 0);
    let v = project.run(&["validate", "--dataset", "native", "--period", "2025-01"]);
    assert_eq!(v.json()["rows_valid"], 1, "{v:?}");
    assert_eq!(
        delta_rows(
            &project.path("stage/cleaned/native"),
            "SELECT id, amount, day, seen FROM t"
        ),
        [["100", "1.5", "2025-01-01", "2025-01-04T14:13:20.123456"]]
    );
    let rejected = delta_rows(
        &project.path("stage/quarantine/native"),
        "SELECT _line, starts_with(arrow_typeof(id), 'Utf8'), id, amount, day, \
         array_to_string(array_sort(array_agg(e['column'] || ':' || e['rule'])), ' ') \
         FROM (SELECT *, unnest(_errors) AS e FROM t) GROUP BY _line, id, amount, day ORDER BY _line",
    );
    assert_eq!(
        rejected,
        [
            ["2", "true", "101", "NaN", "2025-01-02", "amount:type"],
            ["3", "true", "102", "-2.0", "2025-01-03", "amount:min"],
            ["4", "true", "NULL", "3.0", "2025-01-04", "id:required"],
            ["5", "true", "1000", "4.0", "2025-01-05", "id:max"],
            [
                "6",
                "true",
                "105",
                "5.0",
                "2024-12-31",
                "day:min id,day:unique"
            ],
            [
                "7",
                "true",
                "105",
                "6.0",
                "2024-12-31",
                "day:min id,day:unique"
            ],
        ]
    );
    // Native values become text only where shown: in an error and in the profile.
    let values = delta_rows(
        &project.path("stage/quarantine/native"),
        "SELECT _line, e['value'] FROM (SELECT _line, unnest(_errors) AS e FROM t) \
         WHERE e['column'] = 'amount' ORDER BY _line",
    );
    assert_eq!(values, [["2", "NaN"], ["3", "-2.0"]]);
    let profile: serde_json::Value = project
        .db
        .client()
        .query_one(
            "SELECT profile_payload FROM reporting.monitoring_file_data_profile",
            &[],
        )
        .unwrap()
        .get(0);
    let sample = profile["sampleData"]["rows"].as_array().unwrap();
    assert!(
        sample.contains(&serde_json::json!([
            "100",
            "1.5",
            "2025-01-01",
            "2025-01-04T14:13:20.123456"
        ])),
        "{sample:?}"
    );
    assert!(
        sample.contains(&serde_json::json!([null, "3.0", "2025-01-04", null])),
        "{sample:?}"
    );
    assert_eq!(profile["completenessOverview"]["id"]["missing"], 1);
    assert_eq!(profile["completenessOverview"]["seen"]["missing"], 6);
}

/// A column whose valid values are all different (a one-column key, a
/// `unique: true` column) is written without a Parquet dictionary, which it
/// would only fill and drop; integer, date and timestamp columns are
/// delta-encoded instead; text and float columns keep theirs.
#[test]
fn unique_and_integer_like_columns_are_written_without_a_dictionary() {
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let config = CONFIG.replace(
        "kind:    { type: string, allowed: [a, b] }",
        "kind:    { type: string, allowed: [a, b] }\n      code:    { type: string, unique: true }",
    );
    let env = Env::with_config("validate_dictionary", &config);
    let rows: Vec<Vec<String>> = (1..=50)
        .map(|i| {
            let day = format!("{:02}/01/2021", i % 28 + 1);
            let code = format!("C{i:04}");
            [
                &i.to_string(),
                "A",
                "1",
                "1",
                "true",
                &day,
                "2021-01-01 00:00:00",
                "a",
                &code,
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .collect();
    let mut cols = COLS.to_vec();
    cols.push("code");
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    std::fs::write(env.landed("items_2025-01.csv"), csv(&cols, &rows)).unwrap();
    let out = env.ingest_validate("items_2025-01.csv");
    assert_eq!(out.code, 0, "{out:?}");
    let dictionary = |table: &str| {
        let dir = env
            .dir
            .path()
            .join(format!("stage/{table}/items/_data_period=2025-01"));
        let file = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .expect("a Parquet file");
        let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
        let group = reader.metadata().row_group(0).clone();
        group
            .columns()
            .iter()
            .map(|c| {
                let delta = c
                    .encodings()
                    .any(|e| e == deltalake::parquet::basic::Encoding::DELTA_BINARY_PACKED);
                (
                    c.column_path().string(),
                    (c.dictionary_page_offset().is_some(), delta),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let cleaned = dictionary("cleaned");
    // (dictionary, delta-encoded)
    for (column, want) in [
        ("id", (false, true)),
        ("day", (false, true)),
        ("seen", (false, true)),
        ("_line", (false, true)),
        ("code", (false, false)),
        ("kind", (true, false)),
        ("label", (true, false)),
        ("price", (true, false)),
    ] {
        assert_eq!(cleaned[column], want, "{column}: {cleaned:?}");
    }
}

/// Native Parquet dates and timestamps beyond what PostgreSQL and chrono
/// hold (Arrow's extremes, a zoned timestamp at i64::MIN + 1) are row errors
/// of their column, quarantined; the file's other rows load and it scores.
#[test]
fn parquet_dates_and_timestamps_out_of_range_are_row_errors() {
    use datafusion::arrow::array::*;
    use std::sync::Arc;

    let project = Project::new("validate_parquet_extremes", TYPED);
    let n = 5;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("s_dict", Arc::new(StringArray::from(vec!["a"; n]))),
        ("s_large", Arc::new(LargeStringArray::from(vec!["x"; n]))),
        ("s_view", Arc::new(StringViewArray::from(vec!["p"; n]))),
        ("i8", Arc::new(Int8Array::from(vec![1, 2, 3, 4, 5]))),
        ("u32", Arc::new(UInt32Array::from(vec![0; n]))),
        (
            "dec",
            Arc::new(
                Decimal128Array::from(vec![1; n])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("f32", Arc::new(Float32Array::from(vec![1.0; n]))),
        (
            "d",
            Arc::new(Date32Array::from(vec![i32::MAX, i32::MIN + 1, 0, 0, 0])),
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![
                0,
                0,
                i64::MIN + 1,
                i64::MAX,
                0,
            ])),
        ),
        (
            "tsz",
            Arc::new(
                TimestampMicrosecondArray::from(vec![0, 0, 0, 0, i64::MIN + 1])
                    .with_timezone("+02:00"),
            ),
        ),
        ("b", Arc::new(BooleanArray::from(vec![true; n]))),
    ];
    crate::files::write_parquet_columns(&project.path("landed/typed_2025-01.parquet"), columns);
    assert_eq!(project.run(&["ingest", "--all"]).code, 0);
    let v = project.run(&["validate", "--dataset", "typed", "--period", "2025-01"]);
    assert!(
        v.code == 0 || v.code == 3,
        "a verdict, not a runtime failure: {v:?}"
    );
    let out = v.json();
    assert_eq!(out["rows_valid"], 0, "{out}");
    assert_eq!(out["rows_rejected"], 5, "{out}");
    let q = project.run(&[
        "quarantine",
        "--dataset",
        "typed",
        "--period",
        "2025-01",
        "--json",
    ]);
    let text = q.stdout;
    for column in ["\"d\"", "\"ts\"", "\"tsz\""] {
        assert!(text.contains(column), "{column} named: {text}");
    }
}

/// An XLSX date cell in a timestamp column whose format carries a zone
/// (`%z`) is read as UTC, like the same value in a CSV written +0000; it
/// neither panics nor fails the file.
#[test]
fn xlsx_date_cells_meet_a_zoned_timestamp_format() {
    let project = Project::new(
        "validate_xlsx_zone",
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  events:
    file_pattern: '^events_(?P<period>\d{4}-\d{2})\.xlsx$'
    period: month
    columns:
      id: { type: int, required: true }
      at: { type: timestamp, required: true, format: '%Y-%m-%d %H:%M:%S%z' }
"#,
    );
    crate::files::write_xlsx(
        &project.path("landed/events_2025-01.xlsx"),
        "Sheet1",
        &[
            vec!["id", "at"],
            vec!["1", "!DATE 2025-01-02T10:11:12"],
            vec!["2", "2025-01-02 12:11:12+0200"],
        ],
        0,
    );
    assert_eq!(project.run(&["ingest", "--all"]).code, 0);
    let v = project.run(&["validate", "--dataset", "events", "--period", "2025-01"]);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["rows_valid"], 2, "{v:?}");
    let rows = delta_rows(
        &project.path("stage/cleaned/events"),
        "SELECT CAST(at AS VARCHAR) FROM t ORDER BY id",
    );
    assert_eq!(rows, [["2025-01-02T10:11:12"], ["2025-01-02T10:11:12"]]);
}

/// First validations of two periods at once create the cleaned and
/// quarantine tables once (one table id each): both verdicts stand, and
/// `status --check` passes.
#[test]
fn first_validations_of_two_periods_at_once_create_each_table_once() {
    let env = Env::new("validate_first_two");
    let good = |id: &'static str| {
        row(&[
            id,
            "Crème",
            "9.5",
            "12.25",
            "yes",
            "31/12/2024",
            "2025-01-02 03:04:05",
            "a",
        ])
    };
    for period in ["2025-01", "2025-02"] {
        let rows: Vec<Vec<&str>> = vec![good("1"), good("2")];
        std::fs::write(env.landed(&format!("items_{period}.csv")), csv(COLS, &rows)).unwrap();
    }
    assert_eq!(env.run(&["ingest", "--all"]).code, 0);
    let spawn = |period: &str| {
        command(
            env.dir.path(),
            Some(&env.db.url),
            &[
                "--json",
                "validate",
                "--dataset",
                "items",
                "--period",
                period,
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("2025-01"), spawn("2025-02"));
    for child in [a, b] {
        let run: Run = child.wait_with_output().unwrap().into();
        assert_eq!(run.code, 0, "{run:?}");
    }
    for which in ["cleaned", "quarantine"] {
        let log = env
            .dir
            .path()
            .join(format!("stage/{which}/items/_delta_log"));
        let ids: std::collections::BTreeSet<String> = std::fs::read_dir(&log)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .flat_map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| v["metaData"]["id"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids.len(), 1, "{which}: {ids:?}");
    }
    assert_eq!(env.cleaned("SELECT count(*) FROM t")[0][0], "4");
    let status = env.run(&["status", "--check"]);
    assert!(
        !status.stdout.contains("gone") && !status.stdout.contains("recreated"),
        "{status:?}"
    );
}

/// Cleaned rows keep their line in the file (`_line`); a cleaned table
/// written before they did gains the column at its next write, NULL in the
/// rows already there, and every period goes on validating.
#[test]
fn cleaned_rows_keep_their_line_and_an_older_table_gains_the_column() {
    let env = Env::new("validate_cleaned_lines");
    let good = |id: &'static str| {
        row(&[
            id,
            "Crème",
            "9.5",
            "12.25",
            "yes",
            "31/12/2024",
            "2025-01-02 03:04:05",
            "a",
        ])
    };
    std::fs::write(
        env.landed("items_2024-12.csv"),
        csv(COLS, &[good("1"), good("2")]),
    )
    .unwrap();
    assert_eq!(env.ingest_validate("items_2024-12.csv").code, 0);
    assert_eq!(
        env.cleaned("SELECT id, _line FROM t ORDER BY id"),
        [["1", "2"], ["2", "3"]],
        "each cleaned row keeps its line"
    );
    // The table as an older release wrote it: no `_line`.
    let dir = env.dir.path().join("stage/cleaned/items");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use deltalake::operations::write::SchemaMode;
        use deltalake::protocol::SaveMode;
        let url = url::Url::from_directory_path(std::fs::canonicalize(&dir).unwrap()).unwrap();
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table.table_provider().await.unwrap()).unwrap();
        let batches = ctx
            .sql("SELECT id, label, price, qty, active, day, seen, kind, _ingestion_id, _data_period FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_partition_columns(["_data_period"])
            .await
            .unwrap();
    });
    let schema = std::fs::read_dir(dir.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap();
    assert!(
        schema.contains("schemaString") && !schema.contains("_line"),
        "{schema}"
    );

    std::fs::write(
        env.landed("items_2025-01.csv"),
        csv(COLS, &[good("1"), good("3"), good("4")]),
    )
    .unwrap();
    let v = env.ingest_validate("items_2025-01.csv");
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        env.cleaned("SELECT _data_period, id, _line FROM t ORDER BY _data_period, id"),
        [
            ["2024-12", "1", "NULL"],
            ["2024-12", "2", "NULL"],
            ["2025-01", "1", "2"],
            ["2025-01", "3", "3"],
            ["2025-01", "4", "4"],
        ]
    );
}
