//! `pipeline test`: the models' unit tests (`tests:` in the YAML file beside a
//! model), run in-process on DataFusion over in-memory tables. No database:
//! each table a model reads is shaped by the config (stage) or by planning the
//! upstream model (core, mart), filled with the case's `given` rows (columns
//! left out are NULL), and the model's rows are compared with `expect` as a
//! multiset (only the columns `expect` names; floats to 1e-9 relative).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use serde::Serialize;
use serde_json::{Map, Value};

use super::audits::UnitTest;
use super::models::{self, Model};
use super::{TransformError, model_error, plan, plan_sql, session, sql_dir, stage_schemas};
use crate::config::Config;
use crate::exit::Exit;

/// One unit test's outcome.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub model: String,
    pub test: String,
    pub passed: bool,
    /// Why it could not run (a given table unknown, the model does not plan...).
    pub error: Option<String>,
    /// Rows expected and not returned (`- …`) and returned and not expected (`+ …`).
    pub diff: Vec<String>,
    pub duration_ms: u64,
}

/// What `pipeline test` ran.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tests: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

impl Report {
    /// 1 when a test failed.
    pub fn exit(&self) -> Exit {
        if self.failed > 0 {
            Exit::Failure
        } else {
            Exit::Ok
        }
    }

    /// One line per test, the diff of each failing one, then the totals.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for t in &self.tests {
            let mark = if t.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{mark}  {} {}  ({} ms)\n",
                t.model, t.test, t.duration_ms
            ));
            if let Some(e) = &t.error {
                out.push_str(&format!("      {e}\n"));
            }
            for line in &t.diff {
                out.push_str(&format!("      {line}\n"));
            }
        }
        if self.tests.is_empty() {
            out.push_str("no unit tests: add `tests:` to a model's .yml file (documentation/data-schemas.md)\n");
        } else {
            out.push_str(&format!(
                "{} test(s): {} passed, {} failed\n",
                self.tests.len(),
                self.passed,
                self.failed
            ));
        }
        out
    }
}

/// Runs every model's unit tests, or `--model`'s.
pub async fn run(config: &Config, model: Option<&str>) -> Result<Report, TransformError> {
    let all = models::discover(&sql_dir(config))?;
    let order = models::order(&all, config)?;
    if let Some(name) = model
        && !all.iter().any(|m| m.target() == name || m.name == name)
    {
        return Err(TransformError::Usage(format!(
            "no model `{name}` (models: {})",
            all.iter().map(Model::target).collect::<Vec<_>>().join(", ")
        )));
    }
    let schemas = schemas(config, &all, &order).await;
    let mut tests = Vec::new();
    for &i in &order {
        let m = &all[i];
        if model.is_some_and(|name| m.target() != name && m.name != name) {
            continue;
        }
        // A model transform refuses (its SQL or its YAML: an unknown key, two
        // tests of one name, a test without `expect`) fails here too, rather
        // than counting as zero tests.
        if let Some(broken) = &m.broken {
            tests.push(CaseResult {
                model: m.target(),
                test: "(model)".into(),
                passed: false,
                error: Some(broken.clone()),
                diff: Vec::new(),
                duration_ms: 0,
            });
            continue;
        }
        for t in &m.tests {
            let started = Instant::now();
            let (error, diff) = match case(config, &all, i, t, &schemas).await {
                Ok(diff) => (None, diff),
                Err(e) => (Some(e), Vec::new()),
            };
            tests.push(CaseResult {
                model: m.target(),
                test: t.name.clone(),
                passed: error.is_none() && diff.is_empty(),
                error,
                diff,
                duration_ms: started.elapsed().as_millis() as u64,
            });
        }
    }
    let passed = tests.iter().filter(|t| t.passed).count();
    Ok(Report {
        failed: tests.len() - passed,
        passed,
        tests,
    })
}

/// Runs one SELECT as a model over in-memory `tables` (`stage.x` → its rows),
/// as `pipeline test` runs a model over a case's given rows.
pub async fn query(
    config: &Config,
    tables: &[(String, Vec<RecordBatch>)],
    sql: &str,
    period: &str,
) -> Result<Vec<RecordBatch>, String> {
    let ctx = session(config.limits.memory_bytes);
    for (name, schema) in stage_schemas(config) {
        let table = format!("stage.{name}");
        let rows = (tables.iter())
            .find(|(t, _)| *t == table)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        let schema = rows.first().map_or(schema, |b| b.schema());
        register(&ctx, &table, schema, rows)?;
    }
    let df = plan_sql(&ctx, sql, period, false)
        .await
        .map_err(|e| crate::exit::one_line(&e))?;
    df.collect().await.map_err(|e| crate::exit::one_line(&e))
}

/// Each table's shape: stage from the config, each model from planning it
/// over empty upstream tables (a model that does not plan: why).
async fn schemas(
    config: &Config,
    all: &[Model],
    order: &[usize],
) -> BTreeMap<String, Result<SchemaRef, String>> {
    let ctx = session(config.limits.memory_bytes);
    let mut out = BTreeMap::new();
    for (name, schema) in stage_schemas(config) {
        let table = format!("stage.{name}");
        let _ = register(&ctx, &table, schema.clone(), Vec::new());
        out.insert(table, Ok(schema));
    }
    for &i in order {
        let m = &all[i];
        let shaped = match &m.broken {
            Some(e) => Err(e.clone()),
            None => match plan(&ctx, m, "2000-01", models::periodic(all, config, i)).await {
                Ok(df) => Ok(Arc::new(df.schema().as_arrow().clone())),
                Err(e) => Err(model_error(m, &e)),
            },
        };
        if let Ok(schema) = &shaped {
            let _ = register(&ctx, &m.target(), schema.clone(), Vec::new());
        }
        out.insert(m.target(), shaped);
    }
    out
}

fn register(
    ctx: &SessionContext,
    table: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(), String> {
    let (s, t) = table.split_once('.').unwrap_or(("stage", table));
    let mem = MemTable::try_new(schema, vec![batches]).map_err(|e| e.to_string())?;
    let name = TableReference::partial(s, t);
    let _ = ctx.deregister_table(name.clone());
    ctx.register_table(name, Arc::new(mem))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs one case: the diff (empty when it passes), or why it cannot run.
async fn case(
    config: &Config,
    all: &[Model],
    i: usize,
    t: &UnitTest,
    schemas: &BTreeMap<String, Result<SchemaRef, String>>,
) -> Result<Vec<String>, String> {
    let m = &all[i];
    if let Some(e) = &m.broken {
        return Err(e.clone());
    }
    if let Some(unknown) = t.given.keys().find(|k| !schemas.contains_key(*k)) {
        return Err(format!(
            "given: `{unknown}` is not a table of the config or the models"
        ));
    }
    let ctx = session(config.limits.memory_bytes);
    for (table, schema) in schemas {
        let Ok(schema) = schema else { continue };
        let rows = t.given.get(table).map(Vec::as_slice).unwrap_or_default();
        let batch = batch(schema, rows).map_err(|e| format!("given {table}: {e}"))?;
        register(&ctx, table, schema.clone(), batch.into_iter().collect())?;
    }
    let period = t.period.as_deref().unwrap_or("2000-01");
    let df = plan(&ctx, m, period, models::periodic(all, config, i))
        .await
        .map_err(|e| model_error(m, &e))?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(|e| model_error(m, &e))?;
    let got = json_rows(&batches)?;
    compare(&t.expect, &got, &schema)
}

/// The case's rows for `schema` (keys it lacks are NULL, keys it has not are
/// errors), as one batch.
fn batch(schema: &SchemaRef, rows: &[Map<String, Value>]) -> Result<Option<RecordBatch>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for (n, row) in rows.iter().enumerate() {
        if let Some(k) = row.keys().find(|k| !columns.contains(&k.as_str())) {
            return Err(format!(
                "row {}: no column `{k}` (columns: {})",
                n + 1,
                columns.join(", ")
            ));
        }
    }
    for (n, row) in rows.iter().enumerate() {
        for (k, v) in row {
            let field = schema.field_with_name(k).map_err(|e| e.to_string())?;
            if let Some(why) = unfit(field.data_type(), v) {
                return Err(format!(
                    "row {}: `{k}` ({}): {why}",
                    n + 1,
                    field.data_type()
                ));
            }
        }
    }
    let mut lines = String::new();
    for row in rows {
        lines.push_str(&Value::Object(row.clone()).to_string());
        lines.push('\n');
    }
    let reader = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len())
        .build(std::io::Cursor::new(lines))
        .map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    datafusion::arrow::compute::concat_batches(schema, &batches)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The model's rows as JSON objects (NULL kept as null).
pub(super) fn json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, String> {
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<Map<String, Value>> =
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(rows)
}

/// Why a given value is not one of `ty`'s, which Arrow's reader would
/// coerce without a word (1.9 read into an integer column as 1, 7 into text).
fn unfit(ty: &DataType, v: &Value) -> Option<String> {
    let fits = match (ty, v) {
        (_, Value::Null) => true,
        (t, Value::Number(n)) if t.is_integer() => n.is_i64() || n.is_u64(),
        (t, Value::Number(_)) if t.is_floating() => true,
        (DataType::Decimal128(..) | DataType::Decimal256(..), Value::Number(_)) => true,
        (DataType::Decimal128(..) | DataType::Decimal256(..), Value::String(t)) => {
            decimal_text(t).is_some()
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Value::String(_)) => true,
        (DataType::Boolean, Value::Bool(_)) => true,
        (DataType::Date32 | DataType::Date64 | DataType::Timestamp(..), Value::String(_)) => true,
        _ => false,
    };
    (!fits).then(|| format!("{v} is not a value of this column; write one of its type"))
}

/// A decimal numeral as (negative, digits before the point without leading
/// zeros, digits after it without trailing zeros), so `10.50` and `10.5`
/// are one number; None when `text` is not a plain numeral.
fn decimal_text(text: &str) -> Option<(bool, String, String)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return None;
    }
    let (whole, frac) = (whole.trim_start_matches('0'), frac.trim_end_matches('0'));
    let zero = whole.is_empty() && frac.is_empty();
    Some((negative && !zero, whole.to_owned(), frac.to_owned()))
}

/// Whether an expected value is the result's value in a column of `ty`:
/// integers exactly, floats to 1e-9 relative, decimals exactly as numbers
/// (`10.5` is `"10.50"`), text exactly, timestamps with `T` or a space
/// between date and time. A value of another kind never matches (the text
/// `'1.0'` is not the number 1).
fn same(expected: &Value, got: &Value, ty: Option<&DataType>) -> bool {
    match (expected, got, ty) {
        (Value::Null, Value::Null, _) => true,
        (Value::Null, _, _) | (_, Value::Null, _) => false,
        (Value::Number(a), Value::Number(b), Some(t)) if t.is_integer() => {
            match (a.as_i128(), b.as_i128()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
        }
        (Value::Number(a), Value::Number(b), Some(t)) if t.is_floating() => {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => false,
            }
        }
        (a, b, Some(DataType::Decimal128(..) | DataType::Decimal256(..))) => {
            let text = |v: &Value| match v {
                Value::Number(n) => decimal_text(&n.to_string()),
                Value::String(s) => decimal_text(s),
                _ => None,
            };
            matches!((text(a), text(b)), (Some(x), Some(y)) if x == y)
        }
        (Value::String(a), Value::String(b), Some(DataType::Timestamp(..))) => {
            let bytes = |s: &str| -> Vec<u8> {
                let mut v = s.as_bytes().to_vec();
                if v.get(10) == Some(&b'T') {
                    v[10] = b' ';
                }
                v
            };
            bytes(a) == bytes(b)
        }
        _ => expected == got,
    }
}

/// `expect` against `got` as multisets on the columns `expect` names: the
/// rows of each side the other lacks (empty: they agree).
fn compare(
    expect: &[Map<String, Value>],
    got: &[Map<String, Value>],
    schema: &Schema,
) -> Result<Vec<String>, String> {
    let ty = |k: &str| schema.field_with_name(k).ok().map(|f| f.data_type());
    let mut compared: Vec<&String> = Vec::new();
    for row in expect {
        for k in row.keys() {
            if !compared.contains(&k) {
                compared.push(k);
            }
        }
    }
    if let Some(missing) = compared.iter().find(|k| ty(k).is_none()) {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(format!(
            "expect: the model returns no column `{missing}` (columns: {})",
            columns.join(", ")
        ));
    }
    let project = |row: &Map<String, Value>| -> Value {
        Value::Object(
            compared
                .iter()
                .map(|k| {
                    (
                        (*k).clone(),
                        row.get(k.as_str()).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        )
    };
    let mut taken = vec![false; got.len()];
    let mut diff = Vec::new();
    for e in expect {
        let found = (0..got.len()).find(|&j| {
            !taken[j]
                && e.iter()
                    .all(|(k, v)| same(v, got[j].get(k).unwrap_or(&Value::Null), ty(k)))
        });
        match found {
            Some(j) => taken[j] = true,
            None => diff.push(format!(
                "- expected, not returned: {}",
                Value::Object(e.clone())
            )),
        }
    }
    for (_, row) in got.iter().enumerate().filter(|(j, _)| !taken[*j]) {
        diff.push(format!("+ returned, not expected: {}", project(row)));
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(v).unwrap()
    }

    fn schema(columns: &[(&str, DataType)]) -> Schema {
        let fields: Vec<datafusion::arrow::datatypes::Field> = columns
            .iter()
            .map(|(n, t)| datafusion::arrow::datatypes::Field::new(*n, t.clone(), true))
            .collect();
        Schema::new(fields)
    }

    #[test]
    fn rows_compare_as_a_multiset_on_the_expected_columns() {
        let got = rows(
            json!([{"a": 1, "b": "x", "c": 9}, {"a": 1, "b": "x", "c": 8}, {"a": 2, "b": null, "c": 7}]),
        );
        let s = schema(&[
            ("a", DataType::Int64),
            ("b", DataType::Utf8),
            ("c", DataType::Int64),
        ]);
        let ok = rows(json!([{"a": 2, "b": null}, {"a": 1, "b": "x"}, {"a": 1, "b": "x"}]));
        assert_eq!(compare(&ok, &got, &s).unwrap(), Vec::<String>::new());
        let once = rows(json!([{"a": 1, "b": "x"}, {"a": 2, "b": null}]));
        assert_eq!(
            compare(&once, &got, &s).unwrap(),
            ["+ returned, not expected: {\"a\":1,\"b\":\"x\"}"],
            "a row returned twice and expected once is a difference"
        );
        let wrong = rows(json!([{"a": 3}]));
        let diff = compare(&wrong, &got, &s).unwrap();
        assert_eq!(diff[0], "- expected, not returned: {\"a\":3}");
        assert_eq!(diff.len(), 4);
        let e = compare(&rows(json!([{"zz": 1}])), &got, &s).unwrap_err();
        assert!(e.contains("no column `zz`"), "{e}");
        let e = compare(&rows(json!([{"zz": 1}])), &[], &s).unwrap_err();
        assert!(
            e.contains("no column `zz`"),
            "even with no rows returned: {e}"
        );
        assert_eq!(compare(&[], &[], &s).unwrap(), Vec::<String>::new());
    }

    /// Each value compares in its column's type: integers exactly (2^53 + 1
    /// is not 2^53), floats to a tolerance, decimals as numbers, text as
    /// written (not `' eam'` for `'Team'`, nor `'1.0'` for 1).
    #[test]
    fn values_compare_in_the_result_column_type() {
        let int = Some(&DataType::Int64);
        let float = Some(&DataType::Float64);
        let text = Some(&DataType::Utf8);
        let dec = DataType::Decimal128(12, 2);
        let ts = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None);
        assert!(same(&json!(10), &json!(10), int));
        assert!(!same(
            &json!(9007199254740993_i64),
            &json!(9007199254740992_i64),
            int
        ));
        assert!(!same(&json!("1"), &json!(1), int), "text is not a number");
        assert!(same(&json!(10.0), &json!(10), float));
        assert!(same(&json!(0.1 + 0.2), &json!(0.3), float));
        assert!(!same(&json!(1.0), &json!(1.000001), float));
        assert!(same(&json!(10.5), &json!("10.50"), Some(&dec)));
        assert!(same(&json!("10.50"), &json!("10.5"), Some(&dec)));
        assert!(!same(&json!(10.51), &json!("10.50"), Some(&dec)));
        assert!(!same(&json!("7"), &json!("007"), text), "text stays text");
        assert!(!same(&json!(" eam"), &json!("Team"), text));
        assert!(!same(&json!("1.0"), &json!(1), float));
        assert!(same(
            &json!("2013-01-01 10:00:00"),
            &json!("2013-01-01T10:00:00"),
            Some(&ts)
        ));
        assert!(!same(
            &json!("2013-01-01 10:00:00"),
            &json!("2013-01-01T10:00:00"),
            text
        ));
        assert!(!same(&json!(1), &json!(null), int));
        assert!(same(&json!(null), &json!(null), int));
    }

    /// A given value Arrow would coerce is refused, naming row and column.
    #[test]
    fn given_values_must_be_of_their_column_type() {
        let s = Arc::new(schema(&[("n", DataType::Int64), ("t", DataType::Utf8)]));
        for (row, says) in [
            (json!({"n": 1.9}), "row 1: `n` (Int64): 1.9 is not a value"),
            (json!({"t": 7}), "row 1: `t` (Utf8): 7 is not a value"),
            (json!({"n": "1"}), "\"1\" is not a value"),
        ] {
            let e = batch(&s, &rows(json!([row]))).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let ok = batch(&s, &rows(json!([{"n": 2, "t": "x"}, {"n": null}]))).unwrap();
        assert_eq!(ok.unwrap().num_rows(), 2);
    }
}
