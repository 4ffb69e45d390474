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
use datafusion::arrow::datatypes::SchemaRef;
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
    let batches = df.collect().await.map_err(|e| model_error(m, &e))?;
    let got = json_rows(&batches)?;
    compare(&t.expect, &got)
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

/// Whether two values are the same result: numbers to 1e-9 relative (a
/// decimal written as text compares as its number), timestamps with `T` or a
/// space.
fn same(expected: &Value, got: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (expected, got) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (number(expected), number(got)) {
            (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
            _ => false,
        },
        (Value::String(a), Value::String(b)) => {
            a == b || a.replace('T', " ") == b.replace('T', " ")
        }
        _ => expected == got,
    }
}

/// `expect` against `got` as multisets on the columns `expect` names: the
/// rows of each side the other lacks (empty: they agree).
fn compare(
    expect: &[Map<String, Value>],
    got: &[Map<String, Value>],
) -> Result<Vec<String>, String> {
    let mut compared: Vec<&String> = Vec::new();
    for row in expect {
        for k in row.keys() {
            if !compared.contains(&k) {
                compared.push(k);
            }
        }
    }
    if let Some(first) = got.first()
        && let Some(missing) = compared.iter().find(|k| !first.contains_key(k.as_str()))
    {
        return Err(format!(
            "expect: the model returns no column `{missing}` (columns: {})",
            first.keys().cloned().collect::<Vec<_>>().join(", ")
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
                    .all(|(k, v)| same(v, got[j].get(k).unwrap_or(&Value::Null)))
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

    #[test]
    fn rows_compare_as_a_multiset_on_the_expected_columns() {
        let got = rows(
            json!([{"a": 1, "b": "x", "c": 9}, {"a": 1, "b": "x", "c": 8}, {"a": 2, "b": null, "c": 7}]),
        );
        let ok = rows(json!([{"a": 2, "b": null}, {"a": 1, "b": "x"}, {"a": 1, "b": "x"}]));
        assert_eq!(compare(&ok, &got).unwrap(), Vec::<String>::new());
        let once = rows(json!([{"a": 1, "b": "x"}, {"a": 2, "b": null}]));
        assert_eq!(
            compare(&once, &got).unwrap(),
            ["+ returned, not expected: {\"a\":1,\"b\":\"x\"}"],
            "a row returned twice and expected once is a difference"
        );
        let wrong = rows(json!([{"a": 3}]));
        let diff = compare(&wrong, &got).unwrap();
        assert_eq!(diff[0], "- expected, not returned: {\"a\":3}");
        assert_eq!(diff.len(), 4);
        let e = compare(&rows(json!([{"zz": 1}])), &got).unwrap_err();
        assert!(e.contains("no column `zz`"), "{e}");
        assert_eq!(compare(&[], &[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn numbers_compare_to_a_relative_tolerance_and_decimals_as_numbers() {
        assert!(same(&json!(10.0), &json!(10)));
        assert!(same(&json!(10.0), &json!("10.00")));
        assert!(same(&json!(0.1 + 0.2), &json!(0.3)));
        assert!(!same(&json!(1.0), &json!(1.000001)));
        assert!(!same(&json!("7"), &json!("007")), "text stays text");
        assert!(same(
            &json!("2013-01-01 10:00:00"),
            &json!("2013-01-01T10:00:00")
        ));
        assert!(!same(&json!(1), &json!(null)));
        assert!(same(&json!(null), &json!(null)));
    }
}
