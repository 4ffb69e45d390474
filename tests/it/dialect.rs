//! The dialect corpus (tests/dialect/corpus.slt, written by generate.py with
//! DuckDB's answers): every query gives its expected rows, or fails where the
//! expected answer is an error, by every route a model takes — over the lake
//! as transform reads it, over in-memory tables as `pipeline test` does, and as
//! a model written by `pipeline transform` into PostgreSQL and read back.
//!
//! `DIALECT_ACTUAL=path` writes the pipeline's own answers there, for
//! generate.py's deliberate differences.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};

use crate::support::*;

/// One query of the corpus.
#[derive(Debug, Clone)]
struct Query {
    name: String,
    sql: String,
    /// A deliberate difference from DuckDB (documentation/dialect.md).
    difference: Option<String>,
    /// Sorted canonical rows, or one `error: …` line.
    expected: Vec<String>,
}

impl Query {
    fn errors(&self) -> bool {
        self.expected
            .first()
            .is_some_and(|l| l.starts_with("error: "))
    }
}

fn corpus() -> Vec<Query> {
    let text = std::fs::read_to_string(repo().join("tests/dialect/corpus.slt")).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with('#')).collect();
        let Some(head) = lines.first().and_then(|l| l.strip_prefix("query ")) else {
            continue;
        };
        let mut words = head.split_whitespace();
        let name = words.next().unwrap().to_owned();
        let difference = words
            .find_map(|w| w.strip_prefix("difference="))
            .map(str::to_owned);
        let sep = lines.iter().position(|l| *l == "----").unwrap();
        out.push(Query {
            name,
            sql: lines[1..sep].join("\n"),
            difference,
            expected: lines[sep + 1..].iter().map(|l| l.to_string()).collect(),
        });
    }
    out
}

/// Python's `format(v, ".12g")`, as generate.py writes floats.
fn g12(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let sci = format!("{v:.11e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let strip = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if !(-4..12).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), exp.abs())
    } else {
        let decimals = (11 - exp).max(0) as usize;
        strip(&format!("{v:.decimals$}"))
    }
}

/// A decimal's digits: an integer when integral, else as a float.
fn decimal(unscaled: i128, scale: i8) -> String {
    let p = 10i128.pow(scale.max(0) as u32);
    if unscaled % p == 0 {
        return (unscaled / p).to_string();
    }
    let digits = format!(
        "{}{}.{:0width$}",
        if unscaled < 0 { "-" } else { "" },
        (unscaled / p).abs(),
        (unscaled % p).abs(),
        width = scale as usize
    );
    number_text(&digits)
}

/// A number written in decimal: an integer exactly, else the nearest double
/// as `g12` writes it (what Python's float(Decimal) gives generate.py).
fn number_text(text: &str) -> String {
    if !text.contains(['.', 'e', 'E']) {
        return text
            .parse::<i128>()
            .map_or(text.to_owned(), |i| i.to_string());
    }
    let v: f64 = text.parse().unwrap();
    if let Some((int, frac)) = text.split_once('.')
        && !text.contains(['e', 'E'])
        && frac.trim_end_matches('0').is_empty()
    {
        return int
            .parse::<i128>()
            .map_or(int.to_owned(), |i| i.to_string());
    }
    g12(v)
}

fn text_value(s: &str) -> String {
    if s.is_empty() {
        "(empty)".into()
    } else {
        s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('|', "\\|")
    }
}

fn timestamp(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .naive_utc();
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = micros.rem_euclid(1_000_000);
    if frac != 0 {
        s.push_str(format!(".{frac:06}").trim_end_matches('0'));
    }
    s
}

/// The canonical text of row `i` of `a` (generate.py's `text`).
fn cell(a: &ArrayRef, i: usize) -> String {
    use datafusion::arrow::datatypes::*;
    if a.is_null(i) {
        return "NULL".into();
    }
    match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).to_string(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).to_string(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Float32 => g12(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => g12(a.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, s) => decimal(a.as_primitive::<Decimal128Type>().value(i), *s),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Utf8 => text_value(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => text_value(a.as_string::<i64>().value(i)),
        DataType::Utf8View => text_value(a.as_string_view().value(i)),
        DataType::Date32 => {
            let d = a.as_primitive::<Date32Type>().value(i);
            (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                + chrono::Duration::days(d as i64))
            .format("%Y-%m-%d")
            .to_string()
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i) * 1_000_000,
                TimeUnit::Millisecond => {
                    a.as_primitive::<TimestampMillisecondType>().value(i) * 1000
                }
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i) / 1000,
            };
            timestamp(v)
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(i);
            let items: Vec<String> = (0..l.len()).map(|j| cell(&l, j)).collect();
            format!("[{}]", items.join(", "))
        }
        other => {
            let f = datafusion::arrow::util::display::ArrayFormatter::try_new(
                a.as_ref(),
                &Default::default(),
            )
            .unwrap();
            format!("{other}:{}", f.value(i))
        }
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = (0..b.num_columns())
                .filter(|&c| b.schema().field(c).name() != "_data_period")
                .map(|c| cell(b.column(c), i))
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

/// What a route gave: sorted rows, or the error.
type Answer = Result<Vec<String>, String>;

/// Whether `got` is the expected answer: the same rows, or an error where an
/// error is expected.
fn agrees(q: &Query, got: &Answer) -> bool {
    match got {
        Ok(rows) => !q.errors() && *rows == q.expected,
        Err(_) => q.errors(),
    }
}

struct Corpus {
    dir: tempfile::TempDir,
    db: TestDb,
}

/// The corpus tables, landed and run through ingest, validate and load-stage.
fn loaded(test: &str) -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/dialect"), dir.path());
    let db = TestDb::new(test);
    for args in [&["migrate"][..], &["run", "--period", "2025-01"][..]] {
        let run = pipeline(dir.path(), Some(&db.url), args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let mut c = db.client();
    for (table, n) in [("stage.t", 12i64), ("stage.u", 6), ("stage.big", 4)] {
        let got: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(got, n, "{table}");
    }
    Corpus { dir, db }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every query through the lake (transform's engine and inputs) and over
/// in-memory copies of the same tables (`pipeline test`'s route).
fn in_process(c: &Corpus, queries: &[Query]) -> (Vec<Answer>, Vec<Answer>) {
    let config = pipeline::config::Config::load(&c.dir.path().join("datasets_config.yml")).unwrap();
    runtime().block_on(async {
        let client = Arc::new(pipeline::db::Pooled::own(
            pipeline::db::connect_to(&c.db.url).await.unwrap(),
        ));
        let mut tables = Vec::new();
        for t in ["t", "u", "big"] {
            let sql = format!("SELECT * FROM stage.{t}");
            let rows = pipeline::transform::query(&config, &client, &sql, "2025-01")
                .await
                .unwrap();
            tables.push((format!("stage.{t}"), rows));
        }
        let (mut lake, mut memory) = (Vec::new(), Vec::new());
        for q in queries {
            let got = pipeline::transform::query(&config, &client, &q.sql, "2025-01").await;
            lake.push(got.map(|b| rows(&b)));
            let got = pipeline::transform::unit::query(&config, &tables, &q.sql, "2025-01").await;
            memory.push(got.map(|b| rows(&b)));
        }
        (lake, memory)
    })
}

fn report(queries: &[Query], answers: &[Answer], path: &str) {
    let mut out = String::new();
    for (q, a) in queries.iter().zip(answers) {
        out.push_str(&format!("query {}\n", q.name));
        match a {
            Ok(rows) => rows.iter().for_each(|r| out.push_str(&format!("{r}\n"))),
            Err(e) => out.push_str(&format!(
                "error: {}\n",
                e.lines().next().unwrap_or_default()
            )),
        }
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn the_corpus_has_300_queries_and_each_difference_is_on_the_dialect_page() {
    let queries = corpus();
    assert!(queries.len() >= 300, "{} queries", queries.len());
    let page = std::fs::read_to_string(repo().join("documentation/dialect.md")).unwrap();
    let count = format!("{} queries", queries.len());
    assert!(
        page.contains(&count),
        "dialect.md says how many queries: {count}"
    );
    let ids: std::collections::BTreeSet<&str> = queries
        .iter()
        .filter_map(|q| q.difference.as_deref())
        .collect();
    for id in ids {
        assert!(
            page.contains(&format!("`{id}`")),
            "documentation/dialect.md does not explain `{id}`"
        );
    }
}

#[test]
fn every_corpus_query_gives_the_expected_rows_over_the_lake_and_in_memory() {
    let c = loaded("dialect_in_process");
    let queries = corpus();
    let (lake, memory) = in_process(&c, &queries);
    if let Ok(path) = std::env::var("DIALECT_ACTUAL") {
        report(&queries, &lake, &path);
    }
    let mut wrong = Vec::new();
    for ((q, l), m) in queries.iter().zip(&lake).zip(&memory) {
        if !agrees(q, l) {
            wrong.push(format!(
                "{} (lake): {}\n  want {:?}\n  got  {:?}",
                q.name, q.sql, q.expected, l
            ));
        }
        if l != m {
            wrong.push(format!(
                "{}: the lake gives {l:?}, memory tables {m:?}",
                q.name
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} queries:\n{}",
        wrong.len(),
        queries.len(),
        wrong.join("\n")
    );
}

/// Rows of a model's table in PostgreSQL, in canonical text, typed by the
/// columns of the in-process answer.
fn stored(c: &mut postgres::Client, table: &str) -> Vec<String> {
    let rows = c
        .query(
            &format!(
                "SELECT (SELECT json_agg(CASE json_typeof(e.value) WHEN 'number'
                                   THEN to_json('#' || e.value::text) ELSE e.value END ORDER BY e.n)
                           FROM json_each(to_json(t))
                           WITH ORDINALITY AS e(key, value, n) WHERE e.key <> '_data_period')::text
                   FROM {table} AS t"
            ),
            &[],
        )
        .unwrap();
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(json_cell)
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

fn json_cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => g12(n.as_f64().unwrap()),
        },
        // A number as PostgreSQL wrote it (see `stored`).
        Value::String(s) if s.starts_with('#') => number_text(&s[1..]),
        Value::String(s) => {
            // PostgreSQL's JSON of a timestamp: 2024-01-31T23:59:59.5
            let looks_like_time = s.len() >= 19
                && s.as_bytes()[10] == b'T'
                && chrono::NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S").is_ok();
            if looks_like_time {
                s.replacen('T', " ", 1)
                    .trim_end_matches("+00:00")
                    .to_owned()
            } else {
                text_value(s)
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(json_cell).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(_) => v.to_string(),
    }
}

/// Queries whose result is a list, which a model cannot store
/// (documentation/dialect.md).
const UNSTORABLE: &[&str] = &["agg_array_agg_ordered"];

/// Every query as a mart model, run by `pipeline transform`: the rows it
/// writes are the expected ones, and a query expected to fail fails its model
/// (and only its model) with exit 1.
#[test]
fn every_corpus_query_as_a_model_writes_the_expected_rows() {
    let c = loaded("dialect_transform");
    corpus_as_models(&c, &[], &[]);
}

/// The corpus tables loaded, in a database of their own named after `test`
/// (for the cluster's run of the corpus).
#[cfg(feature = "ballista")]
pub struct Loaded(Corpus);

#[cfg(feature = "ballista")]
impl Loaded {
    pub fn new(test: &str) -> Loaded {
        Loaded(loaded(test))
    }

    pub fn url(&self) -> &str {
        &self.0.db.url
    }

    /// Every corpus query as a model, run by transform with `args` before the
    /// command (`--engine ballista://…`), holds its expected answer, but those
    /// `refused`, whose model must fail saying why.
    pub fn run_corpus(&self, args: &[&str], refused: &[(&[&str], &str)]) {
        corpus_as_models(&self.0, args, refused)
    }
}

fn corpus_as_models(c: &Corpus, engine: &[&str], refused: &[(&[&str], &str)]) {
    // DIALECT_ONLY=a,b runs those queries alone, to look at one closely.
    let only = std::env::var("DIALECT_ONLY").ok();
    let queries: Vec<Query> = (corpus().into_iter())
        .filter(|q| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == q.name))
        })
        .collect();
    let mart = c.dir.path().join("sql/mart");
    std::fs::create_dir_all(&mart).unwrap();
    for q in &queries {
        std::fs::write(mart.join(format!("{}.sql", q.name)), &q.sql).unwrap();
    }
    let mut args = engine.to_vec();
    args.extend(["--json", "transform", "--period", "2025-01"]);
    let run = pipeline(c.dir.path(), Some(&c.db.url), &args);
    let out = run.json();
    let status: BTreeMap<String, (String, String)> = (out["models"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["model"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("mart.")
                    .to_owned(),
                (
                    m["status"].as_str().unwrap().to_owned(),
                    m["error"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect();
    let mut client = c.db.client();
    let mut wrong = Vec::new();
    if only.is_some() {
        eprintln!("{}", run.stderr);
    }
    for q in &queries {
        let (st, error) = &status[&q.name];
        // A list (array_agg) has no PostgreSQL column here: the model says so.
        let unstorable: (&[&str], &str) = (UNSTORABLE, "has no PostgreSQL counterpart");
        if let Some((_, why)) = (refused.iter().chain([&unstorable]))
            .find(|(names, _)| names.contains(&q.name.as_str()))
        {
            assert!(
                st == "failed" && error.contains(why),
                "{}: {st} {error}",
                q.name
            );
            continue;
        }
        match (q.errors(), st.as_str()) {
            (true, "failed") => {
                assert!(
                    error.contains(&format!("{}.sql", q.name)),
                    "{}: {error}",
                    q.name
                );
            }
            (false, "done") => {
                let got = stored(&mut client, &format!("mart.{}", q.name));
                if got != q.expected {
                    wrong.push(format!(
                        "{}: want {:?}\n  got {:?}",
                        q.name, q.expected, got
                    ));
                }
            }
            (_, other) => wrong.push(format!(
                "{}: {other} {error} (expected {:?})",
                q.name, q.expected
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} models:\n{}",
        wrong.len(),
        queries.len(),
        wrong.join("\n")
    );
    if only.is_none() {
        assert_eq!(run.code, 1, "some corpus queries are errors");
    }
}

fn model(c: &Corpus, name: &str, sql: &str) {
    let path = c.dir.path().join(format!("sql/mart/{name}.sql"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, sql).unwrap();
}

fn one(c: &Corpus, sql: &str) -> String {
    let mut client = c.db.client();
    let row = client.query_one(sql, &[]).unwrap();
    row.get::<_, Option<String>>(0).unwrap_or_default()
}

/// An overflow fails the model (exit 1, the file named, nothing wrapped) and
/// the period keeps the rows of the model's last good run; the engine that
/// computed those is recorded.
#[test]
fn overflow_fails_the_model_and_keeps_the_previous_rows_and_the_engine_is_recorded() {
    let c = loaded("dialect_overflow");
    model(&c, "doubled", "SELECT id, n * 1 AS x FROM stage.big");
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["--json", "transform", "--period", "2025-01"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let engine = run.json()["models"][0]["engine"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(engine.starts_with("datafusion 55."), "{engine}");
    assert_eq!(
        one(
            &c,
            "SELECT engine FROM meta.transform_log WHERE model = 'mart.doubled' AND status = 'done'"
        ),
        engine
    );
    let status = pipeline(c.dir.path(), Some(&c.db.url), &["--json", "status"]).json();
    let shown = (status["models"].as_array().unwrap().iter())
        .find(|m| m["model"] == "mart.doubled")
        .map(|m| m["engine"].clone());
    assert_eq!(
        shown,
        Some(serde_json::Value::from(engine.clone())),
        "status shows the engine"
    );
    let before = one(
        &c,
        "SELECT string_agg(x::text, ',' ORDER BY id) FROM mart.doubled",
    );
    model(
        &c,
        "doubled",
        "SELECT id,\n       n * 2 AS x FROM stage.big",
    );
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["--json", "transform", "--period", "2025-01"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.json()["models"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("doubled.sql:2:8"),
        "file, line and column: {error}"
    );
    assert!(
        error.contains("integer overflow in") && error.contains("n * Int64(2)"),
        "{error}"
    );
    assert_eq!(
        one(
            &c,
            "SELECT string_agg(x::text, ',' ORDER BY id) FROM mart.doubled"
        ),
        before,
        "the previous rows stay"
    );
}

/// A model reads stage from the lake at the version stage holds: a delivery
/// validated since (not loaded) at the Delta head is not read; rows inserted
/// into stage by hand make the reader fall back to PostgreSQL, and say why.
#[test]
fn models_read_the_loaded_lake_version_and_fall_back_to_postgres_for_hand_made_rows() {
    let c = loaded("dialect_lake");
    model(
        &c,
        "counted",
        "SELECT count(*) AS n, sum(d) AS total FROM stage.t",
    );
    // A new delivery of the period, validated but not loaded.
    let csv = c.dir.path().join("data/t_2025-01.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let first_two: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&csv, first_two.join("\n") + "\n").unwrap();
    for args in [
        &["ingest", "--all"][..],
        &["validate", "--dataset", "t", "--period", "2025-01"][..],
    ] {
        let run = pipeline(c.dir.path(), Some(&c.db.url), args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["transform", "--period", "2025-01"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("stage.t read from the lake"),
        "{}",
        run.stderr
    );
    assert_eq!(
        one(&c, "SELECT n::text FROM mart.counted"),
        "12",
        "the loaded version, not the head"
    );
    // A row inserted by hand: the lake cannot account for it.
    c.db.client()
        .batch_execute("INSERT INTO stage.t (id, d, _data_period) VALUES (99, 1000.00, '2025-01')")
        .unwrap();
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["transform", "--period", "2025-01"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("stage.t read from PostgreSQL")
            && run.stderr.contains("holds 13 rows where load"),
        "{}",
        run.stderr
    );
    assert_eq!(one(&c, "SELECT n::text FROM mart.counted"), "13");
}

/// A model period whose latest run failed is stale, though a run before it
/// succeeded and nothing it reads changed since: `run` redoes it.
#[test]
fn a_model_whose_latest_run_failed_is_stale_until_it_runs_again() {
    let c = loaded("dialect_failed_stale");
    model(&c, "ratio", "SELECT id, 100 / n AS x FROM stage.big");
    let transform = |c: &Corpus| {
        pipeline(
            c.dir.path(),
            Some(&c.db.url),
            &["transform", "--period", "2025-01"],
        )
    };
    assert_eq!(transform(&c).code, 0);
    let mut db = c.db.client();
    db.batch_execute("INSERT INTO stage.big (id, n, f) VALUES (5, 0, 0)")
        .unwrap();
    let failed = transform(&c);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("division by zero"),
        "{}",
        failed.stderr
    );
    db.batch_execute("DELETE FROM stage.big WHERE id = 5")
        .unwrap();
    let plan = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["run", "--period", "2025-01", "--plan"],
    );
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("mart.ratio") && plan.stdout.contains("its latest run failed"),
        "{}",
        plan.stdout
    );
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["run", "--period", "2025-01"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let again = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["run", "--period", "2025-01"],
    );
    assert_eq!(again.code, 99, "nothing left to do: {again:?}");
}

/// A hash join larger than the memory pool: the model runs again with
/// sort-merge joins, which spill, and finishes with the right count.
#[test]
fn a_join_larger_than_the_memory_pool_finishes_with_sort_merge_joins() {
    let c = loaded("dialect_memory");
    let config = c.dir.path().join("datasets_config.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "version: 1\n",
            "version: 1\nlimits:\n  memory_bytes: 8388608\n",
            1,
        ),
    )
    .unwrap();
    c.db.client()
        .batch_execute(
            "INSERT INTO stage.big (id, n, f) SELECT g, g, g FROM generate_series(10, 300000) g",
        )
        .unwrap();
    model(
        &c,
        "joined",
        "SELECT count(*) AS n FROM stage.big AS x JOIN stage.big AS y ON x.n = y.n",
    );
    let run = pipeline(
        c.dir.path(),
        Some(&c.db.url),
        &["transform", "--period", "2025-01"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("sort-merge joins"), "{}", run.stderr);
    // Without --json, transform prints a line per model with its engine.
    assert!(
        run.stdout.contains("mart.joined") && run.stdout.contains("datafusion 55."),
        "{}",
        run.stdout
    );
    assert_eq!(one(&c, "SELECT n::text FROM mart.joined"), "299995");
}
