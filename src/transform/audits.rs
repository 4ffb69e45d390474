//! Model audits and unit tests, declared beside the model in a YAML file of the
//! same stem (`sql/mart/sales.yml` beside `sales.sql`); the format is in
//! documentation/data-schemas.md.
//!
//! Audits run while the model's replace transaction is open, after its new
//! rows are written and before COMMIT, computed by DataFusion over the rows
//! the run kept (`kept`), with the dialect models have: an `error` audit that
//! fails rolls the transaction back, so its rows are never visible to anyone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::db::{Table, quote_ident, quote_literal as literal};
use crate::stage_table::DATA_PERIOD;

/// What the YAML file beside a model declares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    #[serde(default)]
    audits: Vec<AuditSpec>,
    #[serde(default)]
    pub tests: Vec<UnitTest>,
    #[serde(default)]
    on_schema_change: OnSchemaChange,
}

/// What happens when a model's result columns differ from its table's (as
/// dbt's `on_schema_change`): in every case the table changes before the
/// replace transaction, `run --plan` and `transform --dry-run` say how, and
/// every other period the table holds is recomputed in the same run, so no
/// period keeps a column half filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Columns the result gained are added; one it lost or retyped stops the
    /// model with the statement to apply (nothing is dropped unasked).
    #[default]
    Add,
    /// The table follows the result: columns added, dropped, retyped.
    Sync,
    /// Any difference stops the model.
    Fail,
}

impl OnSchemaChange {
    pub fn as_str(self) -> &'static str {
        match self {
            OnSchemaChange::Add => "add",
            OnSchemaChange::Sync => "sync",
            OnSchemaChange::Fail => "fail",
        }
    }
}

/// What a model's YAML file declares, checked.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub audits: Vec<Audit>,
    pub tests: Vec<UnitTest>,
    pub on_schema_change: OnSchemaChange,
}

/// One `audits:` item as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditSpec {
    name: Option<String>,
    severity: Option<Severity>,
    error_if: Option<String>,
    not_null: Option<Vec<String>>,
    unique: Option<Vec<String>>,
    accepted_values: Option<AcceptedValues>,
    relationships: Option<Relationship>,
    row_count: Option<RowCount>,
    expression: Option<String>,
    sql: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptedValues {
    column: String,
    values: Vec<serde_yaml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Relationship {
    column: String,
    to: String,
    field: String,
}

/// Bounds on the rows a model writes for the period.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    min: Option<u64>,
    max: Option<u64>,
    /// The largest change from the model's previous period (0.3: ±30 %).
    within_previous: Option<f64>,
}

/// One unit test of a model (`pipeline test`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTest {
    pub name: String,
    /// The period `$period` is bound to (any period when the model ignores it).
    pub period: Option<String>,
    /// Rows of each table the model reads; a table left out is empty, a column
    /// left out is NULL.
    #[serde(default)]
    pub given: BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>>,
    /// The rows the model must return (a multiset; only the columns written here
    /// are compared).
    pub expect: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Whether a failing audit blocks the model's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Error,
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }
}

/// What an audit checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    NotNull(Vec<String>),
    Unique(Vec<String>),
    AcceptedValues {
        column: String,
        values: Vec<String>,
    },
    /// `to` is (schema, table).
    Relationship {
        column: String,
        to: (String, String),
        field: String,
    },
    RowCount(RowCount),
    /// Every row must satisfy it (NULL does not).
    Expression(String),
    /// A query returning the failing rows.
    Sql(String),
}

impl Check {
    fn kind(&self) -> &'static str {
        match self {
            Check::NotNull(_) => "not_null",
            Check::Unique(_) => "unique",
            Check::AcceptedValues { .. } => "accepted_values",
            Check::Relationship { .. } => "relationships",
            Check::RowCount(_) => "row_count",
            Check::Expression(_) => "expression",
            Check::Sql(_) => "sql",
        }
    }

    /// The name an audit gets when it is not given one.
    fn default_name(&self) -> String {
        match self {
            Check::NotNull(cols) | Check::Unique(cols) => {
                format!("{}({})", self.kind(), cols.join(", "))
            }
            Check::AcceptedValues { column, .. } => format!("accepted_values({column})"),
            Check::Relationship { column, to, field } => {
                format!("relationships({column} → {}.{}.{field})", to.0, to.1)
            }
            Check::RowCount(_) => "row_count".into(),
            Check::Expression(e) => format!("expression({e})"),
            Check::Sql(_) => "sql".into(),
        }
    }
}

/// When failing rows fail the audit: more than (or at least) a count, or a
/// fraction of the rows written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    at_least: bool,
    value: f64,
    percent: bool,
}

impl Default for Threshold {
    /// Any failing row.
    fn default() -> Self {
        Threshold {
            at_least: false,
            value: 0.0,
            percent: false,
        }
    }
}

impl Threshold {
    /// `> 10`, `>= 3`, `> 1%`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        let (at_least, rest) = if let Some(r) = t.strip_prefix(">=") {
            (true, r)
        } else if let Some(r) = t.strip_prefix('>') {
            (false, r)
        } else {
            return Err(format!("error_if `{text}`: write `> N`, `>= N` or `> N%`"));
        };
        let rest = rest.trim();
        let (number, percent) = match rest.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (rest, false),
        };
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("error_if `{text}`: `{number}` is not a number ≥ 0"))?;
        Ok(Threshold {
            at_least,
            value,
            percent,
        })
    }

    /// Whether `failing` of `rows` crosses the threshold.
    pub fn crossed(&self, failing: i64, rows: u64) -> bool {
        let limit = if self.percent {
            self.value / 100.0 * rows as f64
        } else {
            self.value
        };
        let failing = failing as f64;
        if self.at_least {
            failing >= limit
        } else {
            failing > limit
        }
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.at_least { ">=" } else { ">" };
        let pct = if self.percent { "%" } else { "" };
        write!(f, "{op} {}{pct}", self.value)
    }
}

/// One audit, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub name: String,
    pub check: Check,
    pub severity: Severity,
    pub threshold: Threshold,
}

/// The audits and unit tests beside `model_path` (none when there is no
/// `.yml` file), or what is wrong with the file, naming it.
pub fn beside(model_path: &Path) -> Result<Declared, String> {
    let path = model_path.with_extension("yml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a model's YAML file.
pub fn parse(text: &str) -> Result<Declared, String> {
    let file: ModelFile = if text.trim().is_empty() {
        ModelFile::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut audits = Vec::new();
    for (i, spec) in file.audits.iter().enumerate() {
        let audit = checked(spec).map_err(|e| format!("audits[{i}]: {e}"))?;
        if audits.iter().any(|a: &Audit| a.name == audit.name) {
            return Err(format!(
                "audits[{i}]: two audits are named `{}`; give one a `name`",
                audit.name
            ));
        }
        audits.push(audit);
    }
    for (i, t) in file.tests.iter().enumerate() {
        if file.tests[..i].iter().any(|u| u.name == t.name) {
            return Err(format!("tests[{i}]: two tests are named `{}`", t.name));
        }
    }
    Ok(Declared {
        audits,
        tests: file.tests,
        on_schema_change: file.on_schema_change,
    })
}

fn identifiers(cols: &[String], what: &str) -> Result<(), String> {
    if cols.is_empty() {
        return Err(format!("{what}: name at least one column"));
    }
    match cols.iter().find(|c| c.trim().is_empty()) {
        Some(_) => Err(format!("{what}: a column name is empty")),
        None => Ok(()),
    }
}

fn accepted(a: &AcceptedValues) -> Result<Check, String> {
    identifiers(std::slice::from_ref(&a.column), "accepted_values")?;
    if a.values.is_empty() {
        return Err("accepted_values: list at least one value".into());
    }
    let values = (a.values.iter())
        .map(|v| match v {
            serde_yaml::Value::String(s) => Ok(s.clone()),
            serde_yaml::Value::Number(n) => Ok(n.to_string()),
            serde_yaml::Value::Bool(b) => Ok(b.to_string()),
            other => Err(format!(
                "accepted_values: `{}` is not a plain value",
                serde_yaml::to_string(other).unwrap_or_default().trim()
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Check::AcceptedValues {
        column: a.column.clone(),
        values,
    })
}

fn relationship(r: &Relationship) -> Result<Check, String> {
    identifiers(&[r.column.clone(), r.field.clone()], "relationships")?;
    let to = match r.to.split_once('.') {
        Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => {
            (s.to_owned(), t.to_owned())
        }
        _ => {
            return Err(format!(
                "relationships: `to: {}` must be schema.table (stage.stores)",
                r.to
            ));
        }
    };
    Ok(Check::Relationship {
        column: r.column.clone(),
        to,
        field: r.field.clone(),
    })
}

fn row_count_check(rc: RowCount) -> Result<Check, String> {
    if let (Some(min), Some(max)) = (rc.min, rc.max)
        && min > max
    {
        return Err(format!("row_count: min {min} is above max {max}"));
    }
    if rc
        .within_previous
        .is_some_and(|w| !(w.is_finite() && w >= 0.0))
    {
        return Err("row_count: within_previous must be a fraction ≥ 0 (0.3 is ±30 %)".into());
    }
    if (rc.min, rc.max, rc.within_previous) == (None, None, None) {
        return Err("row_count: give min, max or within_previous".into());
    }
    Ok(Check::RowCount(rc))
}

/// Every check an audit item declares (one, when it is well written).
fn checks(spec: &AuditSpec) -> Result<Vec<Check>, String> {
    let mut checks: Vec<Check> = Vec::new();
    if let Some(cols) = &spec.not_null {
        identifiers(cols, "not_null")?;
        checks.push(Check::NotNull(cols.clone()));
    }
    if let Some(cols) = &spec.unique {
        identifiers(cols, "unique")?;
        checks.push(Check::Unique(cols.clone()));
    }
    if let Some(a) = &spec.accepted_values {
        checks.push(accepted(a)?);
    }
    if let Some(r) = &spec.relationships {
        checks.push(relationship(r)?);
    }
    if let Some(rc) = spec.row_count {
        checks.push(row_count_check(rc)?);
    }
    if let Some(e) = &spec.expression {
        read_only(e, false)?;
        checks.push(Check::Expression(e.clone()));
    }
    if let Some(sql) = &spec.sql {
        if spec.name.is_none() {
            return Err("an audit with `sql` needs a `name`".into());
        }
        let sql = sql.trim().trim_end_matches(';');
        read_only(&sql.replace("$period", "'p'"), true)?;
        checks.push(Check::Sql(sql.to_owned()));
    }
    Ok(checks)
}

fn checked(spec: &AuditSpec) -> Result<Audit, String> {
    let mut checks = checks(spec)?;
    let check = match checks.len() {
        1 => checks.remove(0),
        0 => return Err("say what it checks: not_null, unique, accepted_values, relationships, row_count, expression or sql".into()),
        _ => return Err(format!(
            "one check per audit; this one has {}",
            checks.iter().map(Check::kind).collect::<Vec<_>>().join(", ")
        )),
    };
    Ok(Audit {
        name: spec.name.clone().unwrap_or_else(|| check.default_name()),
        threshold: match &spec.error_if {
            Some(t) => Threshold::parse(t)?,
            None => Threshold::default(),
        },
        severity: spec.severity.unwrap_or_default(),
        check,
    })
}

/// PostgreSQL functions that change something or run SQL of their own: an
/// audit only reads, inside the model's write transaction.
const SIDE_EFFECTS: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "set_config",
    "nextval",
    "setval",
    "pg_notify",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "pg_advisory_lock_shared",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_create",
    "lo_from_bytea",
    "lo_put",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "pg_switch_wal",
    "pg_promote",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "pg_drop_replication_slot",
    "pg_stat_reset",
    "txid_current",
    "pg_current_xact_id",
];

/// Refuses audit SQL that is not one read: another kind of statement (or a
/// data-modifying CTE), or a call of a function in [`SIDE_EFFECTS`].
fn read_only(text: &str, query: bool) -> Result<(), String> {
    use datafusion::sql::sqlparser::ast::{ObjectName, Statement, Visit, Visitor};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    struct Guard(Option<String>);
    impl Visitor for Guard {
        type Break = ();
        fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
            if !matches!(s, Statement::Query(_)) {
                self.0 = Some(
                    "an audit only reads: this one holds a statement that is not a SELECT".into(),
                );
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &datafusion::sql::sqlparser::ast::Expr) -> ControlFlow<()> {
            match e {
                datafusion::sql::sqlparser::ast::Expr::Function(f) => self.called(&f.name),
                _ => ControlFlow::Continue(()),
            }
        }
        /// A table function in FROM is a relation.
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            self.called(name)
        }
    }
    impl Guard {
        fn called(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let name = name.to_string().to_lowercase();
            let bare = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
            if SIDE_EFFECTS.contains(&bare) || bare.starts_with("dblink") {
                self.0 = Some(format!(
                    "an audit only reads: `{bare}` changes something or runs SQL of its own"
                ));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let dialect = PostgreSqlDialect {};
    let mut guard = Guard(None);
    if query {
        let statements = Parser::parse_sql(&dialect, text).map_err(|e| format!("sql: {e}"))?;
        match statements.as_slice() {
            [one] => {
                let _ = one.visit(&mut guard);
            }
            _ => {
                return Err(format!(
                    "sql: one SELECT, not {} statements",
                    statements.len()
                ));
            }
        }
    } else {
        let mut parser = Parser::new(&dialect)
            .try_with_sql(text)
            .map_err(|e| format!("expression: {e}"))?;
        let expr = parser
            .parse_expr()
            .map_err(|e| format!("expression: {e}"))?;
        if parser.peek_token().token != datafusion::sql::sqlparser::tokenizer::Token::EOF {
            return Err(format!("expression: `{text}` is more than one expression"));
        }
        let _ = expr.visit(&mut guard);
    }
    guard.0.map_or(Ok(()), Err)
}

/// The rows an audit checks: those of the period written, or the whole table.
pub struct Scope<'a> {
    pub target: &'a Table,
    /// None for a model replaced whole.
    pub period: Option<&'a str>,
    /// Rows the model wrote.
    pub rows: u64,
    /// A model replaced whole: the rows it had before.
    pub previous_rows: Option<i64>,
}

impl Scope<'_> {
    fn filter(&self) -> String {
        match self.period {
            Some(p) => format!("{} = {}", quote_ident(DATA_PERIOD), literal(p)),
            None => "TRUE".into(),
        }
    }
}

impl Audit {
    /// The query returning the failing rows (not for `row_count`).
    pub fn failing_rows(&self, scope: &Scope<'_>) -> String {
        let (t, w) = (scope.target, scope.filter());
        let cols = |cols: &[String]| cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>();
        match &self.check {
            Check::NotNull(c) => format!(
                "SELECT * FROM {t} WHERE {w} AND ({})",
                cols(c)
                    .iter()
                    .map(|c| format!("{c} IS NULL"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
            Check::Unique(c) => {
                let c = cols(c).join(", ");
                format!(
                    "SELECT {c}, count(*) AS duplicates FROM {t} WHERE {w} GROUP BY {c} HAVING count(*) > 1"
                )
            }
            Check::AcceptedValues { column, values } => format!(
                "SELECT * FROM {t} WHERE {w} AND {c} IS NOT NULL AND {c}::text NOT IN ({})",
                values
                    .iter()
                    .map(|v| literal(v))
                    .collect::<Vec<_>>()
                    .join(", "),
                c = quote_ident(column)
            ),
            Check::Relationship { column, to, field } => format!(
                "SELECT * FROM {t} AS a WHERE {w} AND a.{c} IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM {to} AS b WHERE b.{f} = a.{c})",
                to = Table::new(&to.0, &to.1),
                c = quote_ident(column),
                f = quote_ident(field)
            ),
            Check::Expression(e) => {
                format!("SELECT * FROM {t} WHERE {w} AND NOT coalesce(({e}), false)")
            }
            Check::Sql(sql) => {
                let sql = match scope.period {
                    Some(p) => sql.replace("$period", &literal(p)),
                    None => sql.clone(),
                };
                format!("SELECT * FROM ({sql}) AS audit")
            }
            Check::RowCount(_) => format!("SELECT * FROM {t} WHERE FALSE"),
        }
    }
}

/// The tables `audits` read besides their model's: a relationship's table
/// and the tables an SQL audit names.
pub fn reads(model_path: &Path, audits: &[Audit]) -> BTreeSet<(String, String)> {
    let mut tables = BTreeSet::new();
    for a in audits {
        match &a.check {
            Check::Relationship { to, .. } => {
                tables.insert(to.clone());
            }
            Check::Sql(sql) => {
                let sql = sql.replace("$period", "''");
                if let Ok(deps) = super::models::dependencies(model_path, &sql) {
                    tables.extend(deps);
                }
            }
            _ => {}
        }
    }
    tables
}

/// What one audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditResult {
    pub audit: String,
    pub kind: &'static str,
    pub severity: Severity,
    pub passed: bool,
    /// Failing rows (`unique`: duplicated keys; `row_count`: bounds crossed).
    pub failing: i64,
    /// A few failing rows as JSON objects.
    pub sample: serde_json::Value,
    pub duration_ms: u64,
}

impl AuditResult {
    /// One line for an error or a log: the audit, the count and the sample.
    pub fn describe(&self) -> String {
        let sample = match &self.sample {
            serde_json::Value::Array(rows) if rows.is_empty() => String::new(),
            other => format!(", e.g. {other}"),
        };
        format!(
            "audit {} ({}) failed: {} failing{sample}",
            self.audit,
            self.severity.as_str(),
            self.failing
        )
    }
}

/// How many failing rows a sample shows.
const SAMPLE: usize = 5;

/// Runs every audit in DataFusion on `ctx`, where the model's table
/// (`scope.target`) is the table as the replace would commit it (see
/// `kept::view`), in order. An error names the audit.
pub async fn run(
    ctx: &SessionContext,
    audits: &[Audit],
    scope: &Scope<'_>,
) -> Result<Vec<AuditResult>, String> {
    let mut results = Vec::new();
    for audit in audits {
        let started = Instant::now();
        let evaluated = async {
            match &audit.check {
                Check::RowCount(rc) => row_count(ctx, rc, scope).await,
                _ => failing(ctx, &audit.failing_rows(scope)).await,
            }
        };
        // The model's transaction waits open meanwhile: an audit that never
        // ends is stopped like a statement that never ends.
        let found = match crate::db::statement_timeout() {
            Some(limit) => tokio::time::timeout(limit, evaluated)
                .await
                .unwrap_or_else(|_| {
                    Err(DataFusionError::Execution(format!(
                        "it ran longer than the statement timeout ({} s, \
                         PIPELINE_STATEMENT_TIMEOUT_SECONDS) and was stopped",
                        limit.as_secs()
                    )))
                }),
            None => evaluated.await,
        };
        let (failing, sample) = found.map_err(|e| sql_error(audit, &e))?;
        results.push(AuditResult {
            audit: audit.name.clone(),
            kind: audit.check.kind(),
            severity: audit.severity,
            passed: !audit.threshold.crossed(failing, scope.rows),
            failing,
            sample,
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(results)
}

/// An audit's query planned as models are (the dialect's meaning), not run.
pub async fn planned(ctx: &SessionContext, sql: &str) -> DfResult<DataFrame> {
    let (state, plan) = ctx.sql(sql).await?.into_parts();
    Ok(DataFrame::new(state, crate::dialect::rewrite(plan)?))
}

/// How many rows `sql` returns, and the first few as JSON objects.
async fn failing(ctx: &SessionContext, sql: &str) -> DfResult<(i64, serde_json::Value)> {
    let df = planned(ctx, sql).await?;
    let count = df.clone().count().await? as i64;
    let sample = if count == 0 {
        serde_json::json!([])
    } else {
        json_rows(&df.limit(0, Some(SAMPLE))?.collect().await?)?
    };
    Ok((count, sample))
}

/// Rows as a JSON array of objects (NULL kept as null), as unit tests read them.
fn json_rows(batches: &[RecordBatch]) -> DfResult<serde_json::Value> {
    let rows = super::unit::json_rows(batches).map_err(DataFusionError::Execution)?;
    Ok(serde_json::Value::Array(
        rows.into_iter().map(serde_json::Value::Object).collect(),
    ))
}

fn sql_error(audit: &Audit, e: &DataFusionError) -> String {
    let first = e.to_string().lines().next().unwrap_or_default().to_owned();
    format!("audit {}: {first}", audit.name)
}

/// One value of the first row of `sql`'s result.
async fn scalar(ctx: &SessionContext, sql: &str) -> DfResult<ScalarValue> {
    let batches = ctx.sql(sql).await?.collect().await?;
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => ScalarValue::try_from_array(b.column(0), 0),
        None => Ok(ScalarValue::Null),
    }
}

/// `row_count`: the rows written against min, max and the previous period
/// (or, for a model replaced whole, the table before).
async fn row_count(
    ctx: &SessionContext,
    rc: &RowCount,
    scope: &Scope<'_>,
) -> DfResult<(i64, serde_json::Value)> {
    let rows = scope.rows as i64;
    let previous: Option<i64> = match scope.period {
        Some(p) => {
            let t = scope.target;
            let dp = quote_ident(DATA_PERIOD);
            let last = scalar(
                ctx,
                &format!("SELECT max({dp}) FROM {t} WHERE {dp} < {p}", p = literal(p)),
            )
            .await?;
            match last {
                ScalarValue::Utf8(Some(m))
                | ScalarValue::Utf8View(Some(m))
                | ScalarValue::LargeUtf8(Some(m)) => {
                    let n = scalar(
                        ctx,
                        &format!("SELECT count(*) FROM {t} WHERE {dp} = {m}", m = literal(&m)),
                    )
                    .await?;
                    match n {
                        ScalarValue::Int64(Some(n)) => Some(n),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        None => scope.previous_rows,
    };
    let mut crossed = Vec::new();
    if let Some(min) = rc.min
        && (rows as u64) < min
    {
        crossed.push(format!("fewer than min {min}"));
    }
    if let Some(max) = rc.max
        && rows as u64 > max
    {
        crossed.push(format!("more than max {max}"));
    }
    if let (Some(w), Some(prev)) = (rc.within_previous, previous)
        && prev > 0
        && ((rows - prev).abs() as f64) > w * prev as f64
    {
        crossed.push(format!(
            "more than {} % away from the previous {prev}",
            w * 100.0
        ));
    }
    let sample = if crossed.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::json!([{ "rows": rows, "previous": previous, "crossed": crossed }])
    };
    Ok((crossed.len() as i64, sample))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audits_parse_with_names_severities_and_thresholds() {
        let Declared { audits, tests, .. } = parse(
            r#"
audits:
  - not_null: [store_id, orders]
  - unique: [store_id]
  - accepted_values: { column: channel, values: [web, shop, 3] }
  - relationships: { column: store_id, to: stage.stores, field: store_id }
  - row_count: { min: 1, max: 100000, within_previous: 0.3 }
  - expression: "orders > 0"
  - name: no_absurd_totals
    sql: "select * from mart.sales where avg_total > 100000;"
    severity: warn
    error_if: "> 10"
tests:
  - name: one_store
    period: "2013-01"
    given:
      stage.sales: [{store_id: 1}]
    expect: [{store_id: 1}]
"#,
        )
        .unwrap();
        let names: Vec<&str> = audits.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "not_null(store_id, orders)",
                "unique(store_id)",
                "accepted_values(channel)",
                "relationships(store_id → stage.stores.store_id)",
                "row_count",
                "expression(orders > 0)",
                "no_absurd_totals"
            ]
        );
        assert_eq!(audits[6].severity, Severity::Warn);
        assert_eq!(audits[0].severity, Severity::Error);
        assert_eq!(
            audits[2].check,
            Check::AcceptedValues {
                column: "channel".into(),
                values: vec!["web".into(), "shop".into(), "3".into()]
            }
        );
        assert_eq!(
            audits[6].check,
            Check::Sql("select * from mart.sales where avg_total > 100000".into())
        );
        assert!(!audits[6].threshold.crossed(10, 100));
        assert!(audits[6].threshold.crossed(11, 100));
        assert_eq!(tests.len(), 1);
        assert_eq!(tests[0].given["stage.sales"].len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_audits_are_errors_with_their_place() {
        let e = parse("audits:\n  - not_null: [a]\n    severty: warn\n").unwrap_err();
        assert!(
            e.contains("unknown field `severty`") && e.contains("line 3"),
            "{e}"
        );
        let e = parse("audits:\n  - not_null: [a]\n    unique: [a]\n").unwrap_err();
        assert!(e.contains("audits[0]: one check per audit"), "{e}");
        let e = parse("audits:\n  - severity: warn\n").unwrap_err();
        assert!(e.contains("say what it checks"), "{e}");
        let e = parse("audits:\n  - sql: select 1\n").unwrap_err();
        assert!(e.contains("needs a `name`"), "{e}");
        let e =
            parse("audits:\n  - relationships: {column: a, to: stores, field: b}\n").unwrap_err();
        assert!(e.contains("schema.table"), "{e}");
        let e = parse("audits:\n  - row_count: {min: 5, max: 1}\n").unwrap_err();
        assert!(e.contains("min 5 is above max 1"), "{e}");
        let e = parse("audits:\n  - unique: [a]\n  - unique: [a]\n").unwrap_err();
        assert!(
            e.contains("audits[1]: two audits are named `unique(a)`"),
            "{e}"
        );
        let e = parse("audits:\n  - not_null: [a]\n    error_if: \"< 3\"\n").unwrap_err();
        assert!(e.contains("error_if `< 3`"), "{e}");
        assert_eq!(parse("").unwrap().audits, vec![]);
        assert_eq!(parse("").unwrap().on_schema_change, OnSchemaChange::Add);
        assert_eq!(
            parse("on_schema_change: sync\n").unwrap().on_schema_change,
            OnSchemaChange::Sync
        );
        assert!(parse("on_schema_change: drop\n").is_err());
        for (bad, says) in [
            (
                "  - expression: \"pg_terminate_backend(1)\"\n",
                "`pg_terminate_backend` changes something",
            ),
            (
                "  - expression: \"x > 0) OR (true\"\n",
                "more than one expression",
            ),
            (
                "  - name: n\n    sql: \"delete from mart.x\"\n",
                "not a SELECT",
            ),
            (
                "  - name: n\n    sql: \"select 1; drop table mart.x\"\n",
                "not 2 statements",
            ),
            (
                "  - name: n\n    sql: \"with d as (delete from mart.x returning *) select * from d\"\n",
                "not a SELECT",
            ),
            (
                "  - name: n\n    sql: \"select * from pg_catalog.set_config('a', 'b', true)\"\n",
                "`set_config`",
            ),
            (
                "  - name: n\n    sql: \"select query_to_xml('drop table x', true, true, '')\"\n",
                "`query_to_xml`",
            ),
        ] {
            let e = parse(&format!("audits:\n{bad}")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        parse("audits:\n  - name: n\n    sql: \"select * from mart.x where _data_period = $period and coalesce(a, 0) < 0\"\n")
            .expect("a read with $period is an audit");
    }

    #[test]
    fn thresholds_count_or_take_a_fraction_of_the_rows_written() {
        let t = Threshold::parse("> 1%").unwrap();
        assert!(!t.crossed(10, 1000));
        assert!(t.crossed(11, 1000));
        let t = Threshold::parse(">= 3").unwrap();
        assert!(!t.crossed(2, 10) && t.crossed(3, 10));
        let any = Threshold::default();
        assert!(!any.crossed(0, 10) && any.crossed(1, 10));
        assert_eq!(Threshold::parse(" >  2.5 %").unwrap().to_string(), "> 2.5%");
        assert!(Threshold::parse("> -1").is_err());
    }

    #[test]
    fn failing_row_queries_keep_to_the_period_and_quote_names() {
        let target = Table::new("mart", "sales");
        let scope = Scope {
            target: &target,
            period: Some("2013-01"),
            rows: 3,
            previous_rows: None,
        };
        let Declared { audits, .. } = parse(
            "audits:\n  - not_null: [a, \"b c\"]\n  - name: mine\n    sql: select * from mart.sales where _data_period = $period and x < 0\n",
        )
        .unwrap();
        assert_eq!(
            audits[0].failing_rows(&scope),
            "SELECT * FROM mart.\"sales\" WHERE \"_data_period\" = '2013-01' AND (\"a\" IS NULL OR \"b c\" IS NULL)"
        );
        assert_eq!(
            audits[1].failing_rows(&scope),
            "SELECT * FROM (select * from mart.sales where _data_period = '2013-01' and x < 0) AS audit"
        );
        let whole = Scope {
            period: None,
            ..scope
        };
        assert!(audits[0].failing_rows(&whole).contains("WHERE TRUE AND"));
    }
}
