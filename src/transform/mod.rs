//! `pipeline transform`: the analysts' SQL models for one period, in dependency
//! order. Each model is planned by DataFusion over the PostgreSQL tables it reads
//! (filters and columns pushed down), and its result replaces the target's rows
//! for the period in one transaction, like load-stage. A failing model rolls back
//! its own target only; models downstream of it are skipped; the others run.

pub mod audits;
pub mod kept;
pub mod lake;
pub mod lineage;
pub mod models;
mod schema_change;
pub mod trace;
mod write;

pub mod unit;

use crate::db::Pooled;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::{Column, ParamValues, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, lit};
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, PeriodKind};
use crate::db::{self, DbError, Table, quote_ident};
use crate::exit::Exit;
use crate::ledger::{self, ModelSpec, ModelState};
use crate::period::Period;
use crate::pg_table::{self, PgTable};
use crate::replace;
use crate::stage_table::{self, DATA_PERIOD, PgColumn};
use audits::{AuditResult, Scope, Severity};
use models::{Model, ModelError};
pub use write::engine_name;
use write::*;

/// Why transform could not start (a failing model is reported, not an error).
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Models(#[from] ModelError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot start the query engine")]
    Engine(#[source] DataFusionError),
    #[error("cannot read {table} from PostgreSQL")]
    Read {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl TransformError {
    pub fn exit(&self) -> Exit {
        match self {
            TransformError::Models(_) | TransformError::Usage(_) => Exit::Usage,
            TransformError::Db(e) => e.exit(),
            TransformError::Read { .. } | TransformError::Engine(_) => Exit::Failure,
        }
    }
}

/// One model's run.
#[derive(Debug, Clone, Serialize)]
pub struct ModelOutcome {
    pub model: String,
    pub file: String,
    pub status: ModelStatus,
    pub full_refresh: bool,
    pub rows_deleted: u64,
    pub rows_inserted: u64,
    pub error: Option<String>,
    pub duration_ms: u64,
    /// --dry-run: the model's plan and its first rows, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// What each of its audits found (none when nothing was written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audits: Vec<AuditResult>,
    /// The engine that computed its rows, with its version (absent when
    /// nothing was written), as meta.transform_log records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// What its `on_schema_change` changed in its table first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema_change: Vec<String>,
    /// In [`Report::recomputed`]: the other period recomputed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// How a model's run ended (serialised in snake_case, as `meta.transform_log` writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    Done,
    Failed,
    /// An `error` audit failed: its rows were rolled back, the period keeps
    /// its previous rows.
    Rejected,
    /// An upstream model failed or was rejected.
    Skipped,
    /// A stage table it reads was not loaded for the period (`run` only).
    Unavailable,
    /// `--dry-run`: planned, not written.
    Planned,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Done => "done",
            ModelStatus::Failed => "failed",
            ModelStatus::Rejected => "rejected",
            ModelStatus::Skipped => "skipped",
            ModelStatus::Unavailable => "unavailable",
            ModelStatus::Planned => "planned",
        }
    }
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `transform` did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// "" (null in JSON) when no dataset has periods.
    #[serde(serialize_with = "null_if_empty")]
    pub period: String,
    pub models: Vec<ModelOutcome>,
    /// Models downstream of `--model` that now hold older results.
    pub stale: Vec<String>,
    /// The other periods of each model whose table changed, recomputed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recomputed: Vec<ModelOutcome>,
}

fn null_if_empty<S: serde::Serializer>(period: &str, s: S) -> Result<S::Ok, S::Error> {
    match period {
        "" => s.serialize_none(),
        p => s.serialize_str(p),
    }
}

/// The period as meta.transform_log keeps it: NULL when there is none.
fn logged(period: &str) -> Option<&str> {
    (!period.is_empty()).then_some(period)
}

impl Report {
    /// The plans of a --dry-run, in run order.
    pub fn plans(&self) -> Option<String> {
        let plans: Vec<&str> = self
            .models
            .iter()
            .filter_map(|m| m.plan.as_deref())
            .collect();
        (!plans.is_empty()).then(|| plans.concat())
    }

    /// One line per model (what `transform` prints without `--json`): its
    /// status, rows, time, engine and, when it did not go through, why.
    pub fn table(&self) -> String {
        if self.models.is_empty() {
            return "no model to run\n".into();
        }
        let mut table = crate::table::Table::new(
            &["MODEL", "STATUS", "ROWS", "MS", "ENGINE", "DETAIL"],
            &[2, 3],
        );
        for m in &self.models {
            table.row(vec![
                m.model.clone(),
                m.status.as_str().to_owned(),
                m.rows_inserted.to_string(),
                m.duration_ms.to_string(),
                m.engine.clone().unwrap_or_else(|| "-".into()),
                (m.error.as_deref().unwrap_or_default())
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ]);
        }
        for m in &self.recomputed {
            let detail = m
                .error
                .as_deref()
                .unwrap_or("recomputed: its table changed");
            table.row(vec![
                format!("{} {}", m.model, m.period.as_deref().unwrap_or_default()),
                m.status.as_str().to_owned(),
                m.rows_inserted.to_string(),
                m.duration_ms.to_string(),
                m.engine.clone().unwrap_or_else(|| "-".into()),
                detail.lines().next().unwrap_or_default().to_owned(),
            ]);
        }
        let mut out = table.render();
        for m in self.models.iter().filter(|m| !m.schema_change.is_empty()) {
            out.push_str(&format!("{}: {}\n", m.model, m.schema_change.join("; ")));
        }
        for s in &self.stale {
            out.push_str(&format!("stale (downstream of --model): {s}\n"));
        }
        out
    }

    /// 1 when a model failed; 3 when none failed but an audit rejected one
    /// (its dependants are skipped for that, not for a failure); 0 otherwise.
    pub fn exit(&self) -> Exit {
        let any = |s: ModelStatus| {
            self.models
                .iter()
                .chain(&self.recomputed)
                .any(|m| m.status == s)
        };
        if any(ModelStatus::Failed) {
            Exit::Failure
        } else if any(ModelStatus::Rejected) {
            Exit::Rejected
        } else if any(ModelStatus::Skipped) {
            Exit::Failure
        } else {
            Exit::Ok
        }
    }
}

/// The analysts' models: `sql/` beside the config file.
pub fn sql_dir(config: &Config) -> PathBuf {
    config.base_dir.join("sql")
}

/// Checks `text` is a period of some granularity the datasets use; "" when
/// not given, or when no dataset has periods: then only the models replaced
/// whole run.
fn parse_period(config: &Config, text: &str) -> Result<String, TransformError> {
    let kinds: BTreeSet<PeriodKind> = config
        .datasets
        .values()
        .map(|d| d.period)
        .filter(|k| k.has_period())
        .collect();
    if kinds.is_empty() {
        if !text.is_empty() {
            tracing::info!(
                event = "period_ignored",
                period = text,
                "no dataset has periods: every model is replaced whole"
            );
        }
        return Ok(String::new());
    }
    if text.is_empty() {
        return Ok(String::new());
    }
    kinds
        .iter()
        .find_map(|k| Period::parse(*k, text).ok())
        .map(|p| p.to_string())
        .ok_or_else(|| {
            TransformError::Usage(format!(
                "`{text}` is not a period of the configured datasets (expected {})",
                kinds
                    .iter()
                    .map(|k| k.pattern())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// A session with the stage, core and mart schemas.
fn session(memory_limit: usize) -> SessionContext {
    with_schemas(crate::context::session(memory_limit))
}

fn with_schemas(ctx: SessionContext) -> SessionContext {
    let ctx = crate::dialect::session(ctx);
    let catalog = ctx.catalog("datafusion").expect("default catalog");
    for schema in ["stage", "core", "mart"] {
        catalog
            .register_schema(schema, Arc::new(MemorySchemaProvider::new()))
            .expect("fresh catalog");
    }
    ctx
}

/// Where in the file an error points: DataFusion's span, sqlparser's
/// "Line: x, Column: y", or the first occurrence of the unknown name.
fn locate(e: &DataFusionError, sql: &str) -> Option<(u64, u64)> {
    if let Some(span) = e.diagnostic().and_then(|d| d.span)
        && span.start.line > 0
    {
        return Some((span.start.line, span.start.column));
    }
    let text = e.to_string();
    if let Some(lc) = models::line_col(&text) {
        return Some(lc);
    }
    let name = ["No field named ", "table '", "Table not found: "]
        .iter()
        .find_map(|marker| {
            let at = text.find(marker)? + marker.len();
            let rest = text[at..].trim_start_matches(['"', '\'']);
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            Some(rest[..end].trim_end_matches('.').to_owned())
        })?;
    let needle = name.rsplit('.').next().unwrap_or(&name);
    let at = sql.find(&name).or_else(|| sql.find(needle))?;
    let line = sql[..at].matches('\n').count() as u64 + 1;
    let column = (at - sql[..at].rfind('\n').map_or(0, |n| n + 1)) as u64 + 1;
    Some((line, column))
}

/// A failure while the model's rows were computed or written, as
/// `file:line:col: message` where the dialect's checks said where
/// (`… (Line: l, Column: c)`), else `file: message`.
fn located(m: &Model, message: &str) -> String {
    if let Some((line, col)) = models::line_col(message) {
        let at = message.rfind(" (Line: ").unwrap_or(message.len());
        let end = message[at..]
            .find(')')
            .map_or(message.len(), |e| at + e + 1);
        let text = format!("{}{}", &message[..at], &message[end..]);
        return format!("{}:{line}:{col}: {text}", m.path.display());
    }
    format!("{}: {message}", m.path.display())
}

fn model_error(m: &Model, e: &DataFusionError) -> String {
    let first = e.to_string().lines().next().unwrap_or_default().to_owned();
    match locate(e, &m.sql) {
        Some((line, col)) => format!("{}:{line}:{col}: {first}", m.path.display()),
        None => format!("{}: {first}", m.path.display()),
    }
}

/// Plans a model: its SQL with `$period` bound, plus `_data_period` for periodic models.
async fn plan(
    ctx: &SessionContext,
    m: &Model,
    period: &str,
    periodic: bool,
) -> Result<DataFrame, DataFusionError> {
    plan_sql(ctx, &m.sql, period, periodic).await
}

/// The plan, unless the engine would give it another meaning than in
/// process ([`crate::dialect::cluster_refuses`]).
fn on_engine(engine: &crate::config::Engine, df: DataFrame) -> Result<DataFrame, DataFusionError> {
    if *engine != crate::config::Engine::InProcess
        && let Some(why) = crate::dialect::cluster_refuses(df.logical_plan())
    {
        return Err(DataFusionError::Plan(why));
    }
    Ok(df)
}

/// [`plan`] of a SELECT's text.
async fn plan_sql(
    ctx: &SessionContext,
    sql: &str,
    period: &str,
    periodic: bool,
) -> Result<DataFrame, DataFusionError> {
    if let Some(why) = crate::dialect::refused(sql) {
        return Err(DataFusionError::Plan(why));
    }
    let df = ctx
        .sql(sql)
        .await?
        .with_param_values(ParamValues::Map(HashMap::from([(
            "period".to_owned(),
            ScalarValue::Utf8(Some(period.to_owned())).into(),
        )])))?;
    // The dialect's meaning (checked arithmetic, exact integer sums), before
    // DataFusion's analyzer sees the plan.
    let (state, logical) = df.into_parts();
    let rewritten = crate::dialect::rewrite(logical)?;
    // The types the rows will have once DataFusion's analyzer has coerced the
    // plan (a UNION or CASE of BIGINT and DOUBLE is DOUBLE, where the plan as
    // SQL made it says BIGINT): each column is cast to its type below. The
    // plan itself stays unanalyzed, as a cluster's scheduler expects it.
    let analyzed =
        state
            .analyzer()
            .execute_and_check(rewritten.clone(), state.config_options(), |_, _| {})?;
    let coerced = analyzed.schema().clone();
    let df = DataFrame::new(state, rewritten);
    let mut exprs: Vec<Expr> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, (qualifier, field)) in df.schema().iter().enumerate() {
        let coerced_type = coerced.field(i).data_type();
        if field.name() == DATA_PERIOD {
            continue;
        }
        if names.contains(field.name()) {
            return Err(DataFusionError::Plan(format!(
                "the result has two columns named `{}`; give them distinct aliases",
                field.name()
            )));
        }
        names.push(field.name().clone());
        let mut column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        if coerced_type != field.data_type() {
            column = cast(column, coerced_type.clone());
        }
        // Types PostgreSQL has no column for, as the nearest it has:
        // row_number() and friends are unsigned, SQL timestamps nanoseconds.
        let column = match coerced_type {
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                cast(column, DataType::Int64)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => cast(
                column,
                DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            ),
            DataType::Float64 | DataType::Float32 => crate::dialect::finite(column, field.name()),
            _ => column,
        };
        exprs.push(column.alias(field.name()));
    }
    if names.is_empty() {
        return Err(DataFusionError::Plan(
            "the result has no columns of its own (besides `_data_period`, which the pipeline \
             adds); select what the model's table should hold"
                .into(),
        ));
    }
    if periodic && !period_passed_through(df.logical_plan()) {
        return Err(DataFusionError::Plan(format!(
            "the result computes its own `{DATA_PERIOD}`, which the pipeline sets to the run's \
             period; leave it out or give the column another name"
        )));
    }
    if periodic {
        exprs.push(lit(period).alias(DATA_PERIOD));
    }
    df.select(exprs)
}

/// Whether a `_data_period` column of the plan's result is an input's own
/// `_data_period` passed through (as `SELECT *` from stage does), or absent;
/// false when the model computes or renames something into it, a value the
/// pipeline would replace without a word.
fn period_passed_through(plan: &LogicalPlan) -> bool {
    let passes = |e: &Expr| {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        matches!(inner, Expr::Column(c) if c.name == DATA_PERIOD)
    };
    let outputs_pass = |exprs: Vec<&Expr>, schema: &datafusion::common::DFSchema| {
        // A wildcard not yet expanded passes its inputs' columns through.
        exprs.len() != schema.fields().len()
            || exprs
                .into_iter()
                .zip(schema.fields())
                .filter(|(_, f)| f.name() == DATA_PERIOD)
                .all(|(e, _)| passes(e))
    };
    match plan {
        LogicalPlan::Projection(p) => outputs_pass(p.expr.iter().collect(), &p.schema),
        LogicalPlan::Aggregate(a) => {
            outputs_pass(a.group_expr.iter().chain(&a.aggr_expr).collect(), &a.schema)
        }
        LogicalPlan::Union(u) => u.inputs.iter().all(|i| period_passed_through(i)),
        LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_) => plan.inputs().into_iter().all(period_passed_through),
        _ => true,
    }
}

/// Registers a PostgreSQL table under `schema.table`.
async fn register_pg(
    ctx: &SessionContext,
    client: &Arc<Pooled>,
    schema: &str,
    table: &str,
) -> Result<bool, TransformError> {
    let found = PgTable::open(client.clone(), schema, table)
        .await
        .map_err(|source| TransformError::Read {
            table: format!("{schema}.{table}"),
            source,
        })?;
    let Some(provider) = found else {
        return Ok(false);
    };
    let name = TableReference::partial(schema, table);
    let _ = ctx.deregister_table(name.clone());
    ctx.register_table(name, Arc::new(provider))
        .expect("schema registered");
    Ok(true)
}

/// Runs `transform`.
/// Which models to run for a period.
#[derive(Debug, Clone)]
pub struct Request {
    pub period: String,
    /// Only this model and what it depends on.
    pub model: Option<String>,
    /// Plan and show the first rows; write nothing.
    pub dry_run: bool,
    /// Only these models (targets), in run order: what `run` found stale.
    pub only: Option<BTreeSet<String>>,
}

#[tracing::instrument(name = "transform", skip_all, fields(stage = "transform", period = %args.period))]
pub async fn run(config: &Config, args: &Request) -> Result<Report, TransformError> {
    run_with(config, args, &BTreeSet::new()).await
}

/// Like [`run`], skipping models that read (directly or not) a dataset in
/// `unavailable` (not loaded for the period), on the command's own two
/// connections (one reads, one writes).
pub async fn run_with(
    config: &Config,
    args: &Request,
    unavailable: &BTreeSet<String>,
) -> Result<Report, TransformError> {
    let pool = db::Pool::new("pipeline transform", 2);
    run_in(config, &pool, args, unavailable).await
}

/// [`run_with`] on the connections of `pool` (`pipeline run` hands down its
/// own): one reads stage and upstream tables, one writes the models.
pub async fn run_in(
    config: &Config,
    pool: &db::Pool,
    args: &Request,
    unavailable: &BTreeSet<String>,
) -> Result<Report, TransformError> {
    let period = parse_period(config, &args.period)?;
    let all = models::discover(&sql_dir(config))?;
    let order = models::order(&all, config)?;
    let (mut selected, stale) = select(&all, &order, args.model.as_deref())?;
    if let Some(only) = &args.only {
        selected.retain(|&i| only.contains(&all[i].target()));
    }
    if period.is_empty() {
        whole_only(&all, config, &mut selected)?;
    }
    let specs = models::specs(&all, config);
    let client = Arc::new(pool.get(&format!("pipeline transform {period}")).await?);
    // Models are planned and run on the configured engine; results are written here.
    let ctx = crate::context::planner(&config.engine, config.limits.memory_bytes)
        .await
        .map(with_schemas)
        .map_err(TransformError::Engine)?;
    register_stage(config, &ctx, &client, &all, &selected).await?;
    // Audits, and the rows this run kept, are read in process: on a cluster
    // the kept files are not where its executors are.
    let local = match &config.engine {
        crate::config::Engine::InProcess => ctx.clone(),
        crate::config::Engine::Ballista(_) => session(config.limits.memory_bytes),
    };
    // The models some model of this run reads: their rows are kept for it.
    let read_in_run: BTreeSet<String> = (selected.iter())
        .flat_map(|&j| all[j].deps.iter())
        .map(|(schema, t)| format!("{schema}.{t}"))
        .collect();
    let files = kept::RunFiles::new().map_err(|e| {
        TransformError::Usage(format!("cannot make a folder for the run's rows: {e}"))
    })?;
    let mut run = ModelRun {
        config,
        ctx,
        local,
        files,
        read_in_run,
        client,
        writer: None,
        pool,
        all: &all,
        specs: &specs,
        period: &period,
        dry_run: args.dry_run,
        unavailable,
        lineage: None,
    };
    let mut outcomes: Vec<ModelOutcome> = Vec::new();
    // Models that did not go through, and how (failed, rejected, skipped).
    let mut failed: BTreeMap<usize, ModelStatus> = BTreeMap::new();
    for &i in &selected {
        let outcome = match &config.engine {
            // Ballista queues a job forever when no executor is alive.
            crate::config::Engine::Ballista(address) => tokio::select! {
                outcome = run.model(i, &failed) => outcome?,
                why = crate::context::executors_gone(address) => {
                    return Err(TransformError::Engine(DataFusionError::Execution(why)));
                }
            },
            _ => run.model(i, &failed).await?,
        };
        if !run.finished(&outcome).await {
            failed.insert(i, outcome.status);
        }
        outcomes.push(outcome);
    }
    for s in &stale {
        tracing::warn!(event = "model_stale", model = %s, "downstream of --model and now stale; run it too");
    }
    let recomputed = recompute_other_periods(config, &run, &outcomes, unavailable).await?;
    Ok(Report {
        period,
        models: outcomes,
        stale,
        recomputed,
    })
}

/// Each model whose table changed in this run (`schema_change`), for every
/// other period its table holds: recomputed now, so no period keeps a column
/// half filled (NULL where the new one has values, or the old meaning of a
/// retyped one). Each is a transform of that period and that model alone.
async fn recompute_other_periods(
    config: &Config,
    run: &ModelRun<'_>,
    outcomes: &[ModelOutcome],
    unavailable: &BTreeSet<String>,
) -> Result<Vec<ModelOutcome>, TransformError> {
    let mut recomputed = Vec::new();
    for o in outcomes
        .iter()
        .filter(|o| !o.schema_change.is_empty() && !o.full_refresh)
    {
        let (schema, name) = o.model.split_once('.').unwrap_or(("", &o.model));
        let table = Table::new(schema, name);
        let periods: Vec<String> = run
            .client
            .query(
                &format!(
                    "SELECT DISTINCT {p} FROM {table} WHERE {p} <> $1 ORDER BY 1",
                    p = quote_ident(DATA_PERIOD)
                ),
                &[&run.period],
            )
            .await
            .map_err(|source| TransformError::Read {
                table: table.to_string(),
                source,
            })?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !periods.is_empty() {
            tracing::info!(event = "model_recomputing", model = %o.model, periods = %periods.join(", "), "{}: its table changed ({}); recomputing its other periods", o.model, o.schema_change.join("; "));
        }
        for p in periods {
            let args = Request {
                period: p.clone(),
                model: None,
                only: Some(BTreeSet::from([o.model.clone()])),
                dry_run: false,
            };
            let report = Box::pin(run_with(config, &args, unavailable)).await?;
            recomputed.extend(report.models.into_iter().map(|mut m| {
                m.period = Some(p.clone());
                m
            }));
        }
    }
    Ok(recomputed)
}

/// Without a period only the models replaced whole can run: keeps those, or
/// says --period is needed when none was selected.
fn whole_only(
    all: &[Model],
    config: &Config,
    selected: &mut Vec<usize>,
) -> Result<(), TransformError> {
    let before = selected.len();
    selected.retain(|&i| !models::periodic(all, config, i));
    if selected.is_empty() && before > 0 {
        return Err(TransformError::Usage(
            "--period is required: every model selected reads a dataset with periods (models replaced whole run without it)".into(),
        ));
    }
    if selected.len() < before {
        tracing::info!(
            event = "models_left_out",
            left_out = before - selected.len(),
            "no --period: only the models replaced whole run"
        );
    }
    Ok(())
}

/// The models of a period that are stale and why, and the ones to run: the
/// stale ones and every model downstream of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stale {
    /// (model, why) in run order.
    pub reasons: Vec<(String, String)>,
    pub to_run: BTreeSet<String>,
}

/// Which models of `period` are stale. `reloading` names stage datasets about
/// to be replaced: what reads them is stale too (`run --plan`); models reading
/// (directly or not) a dataset in `ignored` are left out (`run` left it out).
pub async fn stale_models(
    config: &Config,
    client: &Client,
    period: &str,
    reloading: &BTreeSet<String>,
    ignored: &BTreeSet<String>,
) -> Result<Stale, TransformError> {
    let all = models::discover(&sql_dir(config))?;
    let order = models::order(&all, config)?;
    let specs = models::specs(&all, config);
    let reads_ignored = |i: usize| {
        std::iter::once(i)
            .chain(models::ancestors(&all, i))
            .flat_map(|j| all[j].deps.iter())
            .any(|(s, t)| s == "stage" && ignored.contains(t))
    };
    // Without a period only the models replaced whole can be stale.
    let left_out = |i: usize| reads_ignored(i) || (period.is_empty() && specs[i].periodic);
    let mut chosen = BTreeSet::new();
    let mut why: BTreeMap<usize, String> = BTreeMap::new();
    for &i in order.iter().filter(|&&i| !left_out(i)) {
        let spec = &specs[i];
        let reloaded: Vec<String> = (spec.inputs.iter())
            .filter(|x| !x.model && reloading.contains(x.table.trim_start_matches("stage.")))
            .map(|x| format!("{} {period} will be reloaded", x.table))
            .collect();
        let reason = if reloaded.is_empty() {
            let state =
                spec.state(client, period)
                    .await
                    .map_err(|source| TransformError::Read {
                        table: "meta.transform_log".into(),
                        source,
                    })?;
            // Never run and not fed still runs: transform then reports it
            // unavailable (the dataset it waits for says why).
            match state.unwrap_or(ModelState::NeverRan) {
                state if state.up_to_date() => continue,
                state => state.to_string(),
            }
        } else {
            reloaded.join("; ")
        };
        chosen.insert(i);
        why.insert(i, reason);
    }
    let mut run = ledger::with_dependants(&specs, &chosen);
    run.retain(|&i| !left_out(i));
    let reasons = (order.iter().filter(|i| run.contains(i)))
        .map(|&i| {
            let reason = why
                .remove(&i)
                .unwrap_or_else(|| "an upstream model re-runs".into());
            (all[i].target(), reason)
        })
        .collect();
    Ok(Stale {
        reasons,
        to_run: run.iter().map(|&i| all[i].target()).collect(),
    })
}

/// Registers the stage tables the selected models read, and the targets of
/// upstream models that are not run now (they are read as they stand).
async fn register_stage(
    config: &Config,
    ctx: &SessionContext,
    client: &Arc<Pooled>,
    all: &[Model],
    selected: &[usize],
) -> Result<(), TransformError> {
    let tables: BTreeSet<&(String, String)> =
        selected.iter().flat_map(|&i| all[i].deps.iter()).collect();
    let run_now: BTreeSet<String> = selected.iter().map(|&i| all[i].target()).collect();
    for (schema, t) in tables {
        if !run_now.contains(&format!("{schema}.{t}")) {
            register_table(config, ctx, client, schema, t).await?;
        }
    }
    Ok(())
}

/// Registers one table a model or an audit reads: a stage table from the lake
/// where the lake accounts for it, else (and every other table) PostgreSQL's.
async fn register_table(
    config: &Config,
    ctx: &SessionContext,
    client: &Arc<Pooled>,
    schema: &str,
    t: &str,
) -> Result<(), TransformError> {
    if schema != "stage" {
        register_pg(ctx, client, schema, t).await?;
        return Ok(());
    }
    if let Some(lake) = lake::for_stage(config, client, t).await? {
        let name = TableReference::partial("stage", t);
        let _ = ctx.deregister_table(name.clone());
        ctx.register_table(name, Arc::new(lake))
            .expect("schema registered");
    } else if !register_pg(ctx, client, "stage", t).await? {
        return Err(TransformError::Usage(format!(
            "stage.{t} does not exist; run `pipeline migrate`"
        )));
    }
    Ok(())
}

/// What every model of one transform run shares.
struct ModelRun<'a> {
    config: &'a Config,
    ctx: SessionContext,
    /// In process: where audits run and the rows kept this run are read
    /// (`ctx` itself when models run in process).
    local: SessionContext,
    files: kept::RunFiles,
    /// Models a model of this run reads (see [`Made::kept`]).
    read_in_run: BTreeSet<String>,
    /// Reads: the PostgreSQL tables the models scan.
    client: Arc<Pooled>,
    /// Writes: every model's replace transaction, one after the other, on a
    /// connection of its own (the reads stream on `client` meanwhile); opened
    /// at the first write, again after one that failed.
    writer: Option<Pooled>,
    /// The command's connections (the writer comes from it).
    pool: &'a db::Pool,
    all: &'a [Model],
    specs: &'a [ModelSpec],
    period: &'a str,
    dry_run: bool,
    unavailable: &'a BTreeSet<String>,
    /// --dry-run: every model's column lineage, read once at the first need.
    lineage: Option<lineage::Report>,
}

impl ModelRun<'_> {
    /// Plans and writes (or, dry, plans) model `i`, unless an upstream model
    /// `failed` or a stage table it needs is unavailable.
    async fn model(
        &mut self,
        i: usize,
        failed: &BTreeMap<usize, ModelStatus>,
    ) -> Result<ModelOutcome, TransformError> {
        let (all, period) = (self.all, self.period);
        let m = &all[i];
        let started = Instant::now();
        let periodic = models::periodic(self.all, self.config, i);
        let mut outcome = ModelOutcome {
            model: m.target(),
            file: m.path.display().to_string(),
            status: ModelStatus::Done,
            full_refresh: !periodic,
            rows_deleted: 0,
            rows_inserted: 0,
            error: None,
            duration_ms: 0,
            plan: None,
            audits: Vec::new(),
            engine: None,
            schema_change: Vec::new(),
            period: None,
        };
        let fail = |outcome: &mut ModelOutcome, error: String| {
            outcome.status = ModelStatus::Failed;
            outcome.error = Some(error);
        };
        if let Some(broken) = &m.broken {
            fail(&mut outcome, broken.clone());
        } else if let Some((status, why)) = skipped(self.all, i, failed, self.unavailable, period) {
            outcome.status = status;
            outcome.error = Some(why);
        } else {
            let planned = plan(&self.ctx, m, period, periodic)
                .await
                .and_then(|df| on_engine(&self.config.engine, df));
            match planned {
                Err(e) => fail(&mut outcome, model_error(m, &e)),
                Ok(df) if self.dry_run => {
                    outcome.status = ModelStatus::Planned;
                    match self.explain(m, df, periodic).await? {
                        Ok(plan) => outcome.plan = Some(plan),
                        Err(why) => fail(&mut outcome, why),
                    }
                }
                Ok(df) => match self.write(i, df, periodic, started).await {
                    Ok(written) => {
                        outcome.rows_deleted = written.deleted;
                        outcome.rows_inserted = written.inserted;
                        outcome.audits = written.audits;
                        outcome.engine = Some(written.engine);
                        outcome.schema_change = written.schema_change;
                        // On a cluster, downstream models read what was written;
                        // in process, the rows kept (registered by the write).
                        if self.config.engine != crate::config::Engine::InProcess {
                            register_pg(&self.ctx, &self.client, &m.schema, &m.name).await?;
                        }
                    }
                    Err(WriteError::Rejected(results)) => {
                        outcome.status = ModelStatus::Rejected;
                        outcome.error = Some(rejection(m, &results));
                        outcome.audits = results;
                        register_pg(&self.local, &self.client, &m.schema, &m.name).await?;
                    }
                    Err(e) => {
                        fail(&mut outcome, located(m, &crate::exit::one_line(&e)));
                        register_pg(&self.local, &self.client, &m.schema, &m.name).await?;
                    }
                },
            }
        }
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        Ok(outcome)
    }

    /// Replaces the model's period (or table) on the write connection.
    async fn write(
        &mut self,
        i: usize,
        df: DataFrame,
        periodic: bool,
        started: Instant,
    ) -> Result<Written, WriteError> {
        let m = &self.all[i];
        // What the model reads, as it stands before the rows stream: see
        // ledger::model_runs for why before.
        let inputs = self.specs[i]
            .inputs_now(&**self.client, self.period)
            .await?;
        let mut conn = match self.writer.take() {
            Some(conn) => conn,
            None => {
                (self.pool)
                    .get(&format!("pipeline transform {} writes", self.period))
                    .await?
            }
        };
        self.audit_tables(m).await.map_err(|e| match e {
            TransformError::Read { source, .. } => WriteError::Db(source),
            other => WriteError::Audit(crate::exit::one_line(&other)),
        })?;
        let made = Made {
            model: m,
            inputs: &inputs,
            period: self.period,
            periodic,
            started,
            engine: engine_name(&self.config.engine),
            kept: (!m.audits.is_empty() || self.read_in_run.contains(&m.target()))
                .then(|| self.files.path(m)),
            local: &self.local,
            reader: &self.client,
        };
        let written = write_model(&mut conn, &made, df).await;
        if written.is_ok() {
            self.writer = Some(conn);
        }
        written
    }

    /// Registers in the local session the tables model `m`'s audits read
    /// (a relationship's table, an SQL audit's), unless already there.
    async fn audit_tables(&self, m: &Model) -> Result<(), TransformError> {
        let target = (m.schema.clone(), m.name.clone());
        for (schema, t) in audits::reads(&m.path, &m.audits) {
            let name = TableReference::partial(schema.as_str(), t.as_str());
            if (schema.clone(), t.clone()) == target
                || self.local.table_exist(name).unwrap_or(false)
            {
                continue;
            }
            register_table(self.config, &self.local, &self.client, &schema, &t).await?;
        }
        Ok(())
    }

    /// --dry-run: each audit's query, planned by DataFusion against the
    /// model's result as the dry run registered it, so a column it names that
    /// is not there fails the model before a real run would; as text for the plan.
    async fn explain_audits(&self, m: &Model, periodic: bool) -> Result<String, String> {
        if m.audits.is_empty() {
            return Ok(String::new());
        }
        let yml = m.path.with_extension("yml").display().to_string();
        self.audit_tables(m)
            .await
            .map_err(|e| format!("{yml}: {}", crate::exit::one_line(&e)))?;
        let target = Table::new(&m.schema, &m.name);
        let scope = Scope {
            target: &target,
            period: periodic.then_some(self.period),
            rows: 0,
            previous_rows: None,
        };
        let mut text = String::from("-- audits (DataFusion, before COMMIT)\n");
        for a in &m.audits {
            let q = a.failing_rows(&scope);
            audits::planned(&self.local, &q).await.map_err(|e| {
                format!(
                    "{yml}: audit {}: {}",
                    a.name,
                    e.to_string().lines().next().unwrap_or_default()
                )
            })?;
            text.push_str(&format!("-- {}: {q}\n", a.name));
        }
        Ok(text)
    }

    /// --dry-run: the model's plan and first rows, what its table's schema
    /// change would be, what rule changes reach it, and its audits planned;
    /// Err: why the real run would fail it.
    async fn explain(
        &mut self,
        m: &Model,
        df: DataFrame,
        periodic: bool,
    ) -> Result<Result<String, String>, TransformError> {
        let schema = df.schema().as_arrow().clone();
        let text = match dry_run(&self.ctx, m, df).await {
            Ok(text) => text,
            Err(e) => return Ok(Err(model_error(m, &e))),
        };
        let audits = match self.explain_audits(m, periodic).await {
            Ok(audits) => audits,
            Err(e) => return Ok(Err(e)),
        };
        let change = match self.explain_schema(m, &schema).await? {
            Ok(change) => change,
            Err(refusal) => return Ok(Err(located(m, &refusal))),
        };
        let reach = self.explain_rule_reach(m).await?;
        Ok(Ok(text + &change + &reach + &audits))
    }

    /// --dry-run: the model's columns a rule change reaches — computed from a
    /// stage column whose rule changed since the period's verdict (through
    /// the models in between), from the plans' lineage — as a line of the plan.
    async fn explain_rule_reach(&mut self, m: &Model) -> Result<String, TransformError> {
        if self.lineage.is_none() {
            match lineage::run(self.config, None, None).await {
                Ok(l) => self.lineage = Some(l),
                Err(_) => return Ok(String::new()),
            }
        }
        let Some(ml) = (self.lineage.iter())
            .flat_map(|l| &l.models)
            .find(|l| l.model == m.target())
        else {
            return Ok(String::new());
        };
        let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let read: BTreeSet<&str> = (ml.columns.iter().flat_map(|c| &c.stage))
            .chain(&ml.filters)
            .filter_map(|s| s.table.strip_prefix("stage."))
            .collect();
        for name in read {
            let Some(ds) = self.config.datasets.get(name) else {
                continue;
            };
            let period = (ds.period.has_period() && !self.period.is_empty()).then_some(self.period);
            let verdict = ledger::Verdict::latest(&**self.client, name, period)
                .await
                .map_err(|source| TransformError::Read {
                    table: "meta.validation_log".into(),
                    source,
                })?;
            let keys = verdict.map(|v| v.rules_changed(&crate::config::Rules::of(ds)));
            changed.insert(format!("stage.{name}"), keys.unwrap_or_default());
        }
        let mut reached = Vec::new();
        let mut keys_named = BTreeSet::new();
        for c in &ml.columns {
            for s in &c.stage {
                let Some(keys) = changed.get(&s.table) else {
                    continue;
                };
                for k in keys
                    .iter()
                    .filter(|k| k.rsplit_once('.').is_some_and(|(col, _)| col == s.column))
                {
                    keys_named.insert(format!("{}.{k}", s.table.trim_start_matches("stage.")));
                    reached.push(format!("{} ← {}.{}", c.column, s.table, s.column));
                }
            }
        }
        reached.dedup();
        Ok(match reached.is_empty() {
            true => String::new(),
            false => format!(
                "-- reached by rules changed since the period's verdict ({}): {}\n",
                keys_named.into_iter().collect::<Vec<_>>().join(", "),
                reached.join(", ")
            ),
        })
    }

    /// --dry-run: what the model's `on_schema_change` will do to its table
    /// (a line of the plan), or why the real run will stop (Err).
    async fn explain_schema(
        &self,
        m: &Model,
        schema: &Schema,
    ) -> Result<Result<String, String>, TransformError> {
        let target = Table::new(&m.schema, &m.name);
        let decision = schema_decision(&self.client, m, schema)
            .await
            .map_err(|source| TransformError::Read {
                table: target.to_string(),
                source,
            })?;
        Ok(match decision {
            None => Ok(String::new()),
            Some(d) if d.refuse.is_empty() => Ok(format!(
                "-- schema: {}\n",
                d.words(&target, m.on_schema_change)
            )),
            Some(d) => Err(d.refusal(&target, m.on_schema_change)),
        })
    }

    /// Logs a model's outcome (and records a failure); false when it failed
    /// or was skipped, so its dependants are skipped.
    async fn finished(&self, outcome: &ModelOutcome) -> bool {
        match outcome.status {
            ModelStatus::Done | ModelStatus::Planned | ModelStatus::Unavailable => {
                tracing::info!(event = "model_finished",
                    model = %outcome.model,
                    status = outcome.status.as_str(),
                    rows_deleted = outcome.rows_deleted,
                    rows_inserted = outcome.rows_inserted,
                    engine = outcome.engine.as_deref().unwrap_or_default(),
                    duration_ms = outcome.duration_ms,
                    "model {}",
                    outcome.status
                );
                true
            }
            _ => {
                tracing::error!(event = "model_failed", model = %outcome.model, status = outcome.status.as_str(), error = outcome.error.as_deref().unwrap_or_default(), "model {}", outcome.status);
                if !self.dry_run {
                    let engine = engine_name(&self.config.engine);
                    record(&self.client, outcome, self.period, &engine).await;
                }
                false
            }
        }
    }
}

/// The models `--model` asks for (it and everything upstream, in run order) and
/// the downstream ones it leaves stale; every model without `--model`.
fn select(
    all: &[Model],
    order: &[usize],
    model: Option<&str>,
) -> Result<(Vec<usize>, Vec<String>), TransformError> {
    Ok(match model {
        None => (order.to_vec(), Vec::new()),
        Some(name) => {
            let i = all
                .iter()
                .position(|m| m.target() == name || m.name == name)
                .ok_or_else(|| {
                    TransformError::Usage(format!(
                        "no model `{name}` (models: {})",
                        all.iter().map(Model::target).collect::<Vec<_>>().join(", ")
                    ))
                })?;
            let mut keep = models::ancestors(all, i);
            keep.insert(i);
            let stale: Vec<String> = (0..all.len())
                .filter(|&j| models::ancestors(all, j).contains(&i))
                .map(|j| all[j].target())
                .collect();
            (
                order.iter().copied().filter(|j| keep.contains(j)).collect(),
                stale,
            )
        }
    })
}

/// Why model `i` cannot run: a stage table it reads was not loaded for the
/// period, or an upstream model failed.
fn skipped(
    all: &[Model],
    i: usize,
    failed: &BTreeMap<usize, ModelStatus>,
    unavailable: &BTreeSet<String>,
    period: &str,
) -> Option<(ModelStatus, String)> {
    let blocked: Vec<String> = models::ancestors(all, i)
        .iter()
        .filter_map(|a| {
            let how = match failed.get(a)? {
                ModelStatus::Rejected => "audit failed",
                _ => "failed",
            };
            Some(format!("{} {how}", all[*a].target()))
        })
        .collect();
    let missing: Vec<String> = std::iter::once(i)
        .chain(models::ancestors(all, i))
        .flat_map(|j| all[j].deps.iter())
        .filter(|(s, t)| s == "stage" && unavailable.contains(t))
        .map(|(_, t)| format!("stage.{t}"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        Some((
            ModelStatus::Unavailable,
            format!("skipped: {} not loaded for {period}", missing.join(", ")),
        ))
    } else if !blocked.is_empty() {
        Some((
            ModelStatus::Skipped,
            format!("skipped: upstream {}", blocked.join(", ")),
        ))
    } else {
        None
    }
}

/// The model's plan and first rows, for people (printed by the caller, so
/// `--json` output stays one document).
async fn dry_run(
    ctx: &SessionContext,
    m: &Model,
    df: DataFrame,
) -> Result<String, DataFusionError> {
    let rows = df.clone().limit(0, Some(10))?.collect().await?;
    let text = format!(
        "-- {} ({})\n{}\n{}\n",
        m.target(),
        m.path.display(),
        df.logical_plan().display_indent(),
        datafusion::arrow::util::pretty::pretty_format_batches(&rows)?
    );
    // Downstream models read this result as it would be written.
    let name = TableReference::partial(m.schema.as_str(), m.name.as_str());
    let _ = ctx.deregister_table(name.clone());
    ctx.register_table(name, df.into_view())?;
    Ok(text)
}

/// Each stage table's Arrow shape as the config implies it (declared columns,
/// then the pipeline's own `_` columns).
fn stage_schemas(config: &Config) -> Vec<(String, SchemaRef)> {
    (config.datasets.iter())
        .map(|(name, ds)| {
            let mut fields: Vec<Field> = (ds.columns.iter())
                .map(|(c, spec)| Field::new(c, spec.ty.arrow_type(), true))
                .collect();
            for col in stage_table::expected_columns(ds)
                .iter()
                .filter(|c| c.name.starts_with('_'))
            {
                fields.push(Field::new(
                    &col.name,
                    pg_table::arrow_type(&col.sql_type),
                    true,
                ));
            }
            (name.clone(), Arc::new(Schema::new(fields)))
        })
        .collect()
}

/// Parses and plans every model against empty tables shaped by the config, in
/// dependency order: how the test suite keeps analysts' SQL from rotting.
pub async fn check_models(
    config: &Config,
    sql_dir: &std::path::Path,
) -> Result<Vec<(String, SchemaRef)>, String> {
    let (all, planned) = plan_all(config, sql_dir).await.map_err(|p| p.message)?;
    Ok(planned
        .into_iter()
        .map(|(i, df)| (all[i].target(), df.schema().inner().clone()))
        .collect())
}

/// A model that does not plan: which, and why at file:line:col.
#[derive(Debug, Clone)]
pub struct ModelProblem {
    /// The model's target, when the problem is one model's.
    pub model: Option<String>,
    pub message: String,
}

impl From<String> for ModelProblem {
    fn from(message: String) -> ModelProblem {
        ModelProblem {
            model: None,
            message,
        }
    }
}

/// Every model planned, in dependency order, against empty tables shaped by
/// the config (no database): the models and each one's plan.
pub async fn plan_all(
    config: &Config,
    sql_dir: &std::path::Path,
) -> Result<(Vec<Model>, Vec<(usize, DataFrame)>), ModelProblem> {
    let all = models::discover(sql_dir).map_err(|e| e.to_string())?;
    if let Some(m) = all.iter().find(|m| m.broken.is_some()) {
        return Err(ModelProblem {
            model: Some(m.target()),
            message: m.broken.clone().unwrap_or_default(),
        });
    }
    let order = models::order(&all, config).map_err(|e| e.to_string())?;
    let ctx = session(config.limits.memory_bytes);
    for (name, schema) in stage_schemas(config) {
        let table = MemTable::try_new(schema, vec![vec![]]).map_err(|e| e.to_string())?;
        ctx.register_table(
            TableReference::partial("stage", name.as_str()),
            Arc::new(table),
        )
        .map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    for i in order {
        let m = &all[i];
        let problem = |message: String| ModelProblem {
            model: Some(m.target()),
            message,
        };
        let df = plan(&ctx, m, "2000-01", models::periodic(&all, config, i))
            .await
            .map_err(|e| problem(model_error(m, &e)))?;
        let schema: SchemaRef = df.schema().inner().clone();
        expected_columns(&schema).map_err(|e| problem(format!("{}: {e}", m.path.display())))?;
        let table = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(|e| e.to_string())?;
        ctx.register_table(
            TableReference::partial(m.schema.as_str(), m.name.as_str()),
            Arc::new(table),
        )
        .map_err(|e| e.to_string())?;
        out.push((i, df));
    }
    Ok((all, out))
}

/// Each planned model whose result differs from its table in the database:
/// what its `on_schema_change` will do (Ok: the words of the change) or why
/// it will stop (Err: the statements to apply). Models without a table yet
/// are left out (their table is created as the result is).
pub async fn schema_changes(
    client: &Client,
    all: &[Model],
    planned: &[(usize, DataFrame)],
) -> Result<Vec<(String, Result<String, String>)>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for (i, df) in planned {
        let m = &all[*i];
        let Some(decision) = schema_decision(client, m, df.schema().as_arrow()).await? else {
            continue;
        };
        let target = Table::new(&m.schema, &m.name);
        let said = match decision.refuse.is_empty() {
            true => Ok(decision.words(&target, m.on_schema_change)),
            false => Err(decision.refusal(&target, m.on_schema_change)),
        };
        out.push((m.target(), said));
    }
    Ok(out)
}

/// What `m`'s `on_schema_change` makes of its result `schema` against its
/// table; None when the table does not exist or matches.
async fn schema_decision(
    client: &Client,
    m: &Model,
    schema: &Schema,
) -> Result<Option<schema_change::Decision>, tokio_postgres::Error> {
    let target = Table::new(&m.schema, &m.name);
    let (Ok(expected), Some(actual)) = (
        expected_columns(schema),
        db::table_columns(client, &target).await?,
    ) else {
        return Ok(None);
    };
    let d = schema_change::decide(
        m.on_schema_change,
        schema_change::changes(&target, &expected, &actual),
    );
    Ok((!d.is_empty()).then_some(d))
}

/// Runs one SELECT as a model of `period` over the stage tables as transform
/// reads them (the lake at the versions stage holds, else PostgreSQL), and
/// returns its rows without writing them: how the dialect corpus holds
/// transform's engine to its expected answers.
pub async fn query(
    config: &Config,
    client: &Arc<Pooled>,
    sql: &str,
    period: &str,
) -> Result<Vec<RecordBatch>, String> {
    let ctx = crate::context::planner(&config.engine, config.limits.memory_bytes)
        .await
        .map(with_schemas)
        .map_err(|e| e.to_string())?;
    for name in config.datasets.keys() {
        let deps = BTreeSet::from([("stage".to_owned(), name.clone())]);
        let m = Model {
            schema: "mart".into(),
            name: "query".into(),
            path: PathBuf::from("query.sql"),
            sql: String::new(),
            deps,
            fingerprint: String::new(),
            broken: None,
            audits: Vec::new(),
            tests: Vec::new(),
            on_schema_change: Default::default(),
        };
        register_stage(config, &ctx, client, std::slice::from_ref(&m), &[0])
            .await
            .map_err(|e| crate::exit::report(&e))?;
    }
    let df = plan_sql(&ctx, sql, period, false)
        .await
        .and_then(|df| on_engine(&config.engine, df))
        .map_err(|e| crate::exit::one_line(&e))?;
    df.collect().await.map_err(|e| crate::exit::one_line(&e))
}
