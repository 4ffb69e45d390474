//! `pipeline load-stage` and `pipeline check-counts`: one period of cleaned rows
//! into `stage.<dataset>`, replacing what was there, in ONE transaction:
//!
//! advisory lock (table, period) → the period's old rows counted → binary COPY of
//! the new rows (whole Arrow batches encoded by pgpq) into a staging table, one
//! stream per core → the old partition dropped, the staging table attached in its
//! place ([`crate::partition`]) → meta.load_log row → COMMIT. A plain stage table
//! (no periods, or not yet partitioned by `migrate`) has the period DELETEd and
//! the rows COPYed in one stream instead.
//!
//! Any failure rolls everything back, so the period keeps its previous rows and
//! other periods are never touched. Transient failures are retried from scratch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, TryCast, cast, col, lit, when};
use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::config::{Config, Dataset};
use crate::db::Table;
use crate::db::{self, DbError};
use crate::exit::Exit;
use crate::ledger::{self, Verdict};
use crate::partition;
use crate::pg_copy::CopyError;
use crate::replace;
use crate::stage_table::{DATA_PERIOD, INGESTION_ID};
use append::{Amended, Append, amended_rows};

mod append;
mod counts;
mod drift;
pub use counts::{Counts, check_counts};

/// A check that protects the period; `--force` overrides each, and the
/// override is recorded in `meta.load_log.overrides`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// The period's latest validation did not pass.
    Quality,
    /// The file had rows but none is valid: the period would be emptied.
    ZeroRows,
    /// The period would lose more than `max_shrink` of its stage rows.
    Shrink,
    /// More than `max_rejected_ratio` of the file's rows were rejected.
    RejectedRatio,
    /// A `--parquet-path` file lacks columns, has unusable types or bad values.
    Schema,
    /// A `--parquet-path` file has rows the dataset's rules reject, or
    /// repeated keys.
    Rules,
    /// The period drifted from the loaded periods before it (`drift:`).
    Drift,
}

impl Gate {
    pub fn name(self) -> &'static str {
        match self {
            Gate::Quality => "quality",
            Gate::ZeroRows => "zero_rows",
            Gate::Shrink => "shrink",
            Gate::RejectedRatio => "rejected_ratio",
            Gate::Schema => "schema",
            Gate::Rules => "rules",
            Gate::Drift => "drift",
        }
    }
}

/// The command that loads the refused period anyway.
fn forced(table: &Table, period: &str) -> String {
    match period {
        "" | "(all)" => format!("pipeline load-stage --dataset {} --force", table.name()),
        p => format!(
            "pipeline load-stage --dataset {} --period {p} --force",
            table.name()
        ),
    }
}

/// Why a load did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "{table} period {period}: refused by the {} gate: {reason}; nothing was changed. \
         Fix the data and run again, or load it anyway with `{}`",
        gates.iter().map(|g| g.name()).collect::<Vec<_>>().join(" and "),
        forced(table, period)
    )]
    Gate {
        table: Table,
        period: String,
        /// Every gate that failed, so one refusal names them all.
        gates: Vec<Gate>,
        reason: String,
    },
    #[error("{table} period {period}: {reason}; run `pipeline validate` for it first")]
    NotValidated {
        table: Table,
        period: String,
        reason: String,
    },
    #[error(
        "{table} period {period} is locked by another run (--no-wait, or the role's lock_timeout ran out)"
    )]
    Locked { table: Table, period: String },
    #[error(
        "{table} period {period}: the swap waited {waited_s} s for other sessions to let go of \
         the table (readers went on meanwhile) and gave up; nothing was changed. Holding it: {}. \
         End those transactions, or wait longer with PIPELINE_SWAP_WAIT_SECONDS, and run again",
        holders.join("; ")
    )]
    SwapBlocked {
        table: Table,
        period: String,
        waited_s: u64,
        holders: Vec<String>,
    },
    #[error(
        "{table} period {period}: the load's role may not replace the period's partition; \
         nothing was changed. The swap needs a role that owns {table} and its partitions in \
         stage_part (the role that runs `pipeline migrate`; operations.md, \"What the swap asks \
         of the database\")"
    )]
    NotOwner {
        table: Table,
        period: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read the cleaned rows of {dataset} from {path}")]
    Source {
        dataset: String,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot {step}")]
    Read {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A table the config implies is not in the database: a dataset added
    /// (or the database made) since the last `migrate`.
    #[error(
        "cannot {step}: a table is missing (a dataset added to the config since the last \
         `pipeline migrate`?); run `pipeline migrate`, then load again"
    )]
    NotMigrated {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "{table} does not exist (a dataset added to the config since the last \
         `pipeline migrate`?); run `pipeline migrate`, then load again"
    )]
    NoStageTable { table: Table },
    #[error(
        "loading {table} period {period} failed after {attempts} attempt(s); its previous rows are intact"
    )]
    Load {
        table: Table,
        period: String,
        attempts: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "{table} period {period}: the cleaned table at version {version} holds {read} rows of the \
         period where validation {validation_id} counted {counted} (the table was rewritten, or \
         its log lost and the table recreated, since); nothing was changed. Validate the period \
         again (`pipeline run --period {period}` does)"
    )]
    Unbalanced {
        table: Table,
        period: String,
        version: i64,
        validation_id: i64,
        read: u64,
        counted: i64,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl LoadError {
    pub fn exit(&self) -> Exit {
        match self {
            LoadError::Usage(_)
            | LoadError::NotMigrated { .. }
            | LoadError::NoStageTable { .. } => Exit::Usage,
            LoadError::Gate { .. } | LoadError::NotValidated { .. } => Exit::Rejected,
            LoadError::Locked { .. } | LoadError::SwapBlocked { .. } => Exit::Locked,
            LoadError::Db(e) => e.exit(),
            LoadError::Source { .. }
            | LoadError::NotOwner { .. }
            | LoadError::Read { .. }
            | LoadError::Load { .. }
            | LoadError::Unbalanced { .. } => Exit::Failure,
        }
    }
}

fn read(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LoadError {
    move |source| match source.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => LoadError::NotMigrated { step, source },
        _ => LoadError::Read { step, source },
    }
}

/// What a load did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub load_id: i64,
    pub dataset: String,
    pub period: Option<String>,
    pub validation_id: Option<i64>,
    pub rows_deleted: u64,
    pub rows_inserted: u64,
    pub source_delta_version: Option<i64>,
    pub source_path: String,
    pub forced: bool,
    /// The gates `--force` overrode.
    pub overrides: Vec<Gate>,
    pub attempts: u32,
    /// An amended verdict's newly valid rows added to the period, which kept
    /// its other rows (`rows_inserted` is then what the period holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_appended: Option<u64>,
}

/// The dataset and its checked period (None for `period: none`).
fn target<'a>(
    config: &'a Config,
    dataset: &str,
    period: Option<&str>,
) -> Result<(&'a Dataset, Option<String>), LoadError> {
    let (ds, period) = crate::period::target(config, dataset, period).map_err(LoadError::Usage)?;
    Ok((ds, period.map(|p| p.to_string())))
}

/// Attempts for transient failures when the caller does not say: with the
/// backoff below, about half a minute of retrying, which outlasts a
/// PostgreSQL restart.
pub const DEFAULT_ATTEMPTS: u32 = 8;

/// What to load: a period of a dataset, from its approved cleaned rows or a
/// Parquet file, and how to behave when it is refused or locked.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub period: Option<String>,
    /// Load this (checked) Parquet file instead of the cleaned Delta version.
    pub parquet_path: Option<PathBuf>,
    /// Override every gate (recorded in meta.load_log).
    pub force: bool,
    /// Exit 4 at once when another run holds the period.
    pub no_wait: bool,
    /// Attempts for transient failures (connection lost, deadlock, serialization).
    pub attempts: u32,
}

impl Request {
    /// The period's approved rows, with the gates on, waiting for the lock.
    pub fn new(dataset: &str, period: Option<&str>) -> Request {
        Request {
            dataset: dataset.to_owned(),
            period: period.map(str::to_owned),
            parquet_path: None,
            force: false,
            no_wait: false,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

/// Where the rows come from: the cleaned Delta table at the version a
/// validation wrote, or a Parquet file given on the command line.
enum Source<'a> {
    Delta { version: i64 },
    Parquet(&'a PathBuf),
}

/// The period's rows from `source`, typed as the stage table expects. With
/// `only`, the rows of the period whose line the base of an amended verdict
/// quarantined: the ones its amendment appended ([`Append`]).
async fn source_rows(
    ctx: &SessionContext,
    config: &Config,
    name: &str,
    ds: &Dataset,
    period: Option<&str>,
    source: &Source<'_>,
    only: Option<&Append>,
) -> Result<(DataFrame, String), LoadError> {
    let fail = |path: &str| {
        let path = path.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| LoadError::Source {
            dataset: name.to_owned(),
            path: path.clone(),
            source: e,
        }
    };
    let (df, path) = match source {
        Source::Parquet(p) => {
            let path = p.display().to_string();
            let df = ctx
                .read_parquet(path.as_str(), Default::default())
                .await
                .map_err(|e| fail(&path)(Box::new(e)))?;
            (df, path)
        }
        Source::Delta { version } => {
            let path = ledger::delta_location(config, "cleaned", name).display;
            let df = cleaned_rows(ctx, config, name, period, *version, only)
                .await
                .map_err(fail(&path))?;
            (df, format!("{path}@v{version}"))
        }
    };
    let has = |c: &str| df.schema().has_column_with_unqualified_name(c);
    let null = |ty: DataType| cast(lit(datafusion::scalar::ScalarValue::Null), ty);
    let mut exprs: Vec<Expr> = ds
        .columns
        .iter()
        .map(|(c, spec)| {
            let ty = spec.ty.arrow_type();
            if has(c) {
                // Cleaned rows already have these types; a checked Parquet file's
                // unusable values become NULL only under --force.
                Expr::TryCast(TryCast::new(Box::new(col(c.as_str())), ty)).alias(c)
            } else {
                null(ty).alias(c)
            }
        })
        .collect();
    if let Some(p) = period {
        exprs.push(lit(p).alias(DATA_PERIOD));
    }
    exprs.push(if has(INGESTION_ID) {
        cast(col(INGESTION_ID), DataType::Int64).alias(INGESTION_ID)
    } else {
        null(DataType::Int64).alias(INGESTION_ID)
    });
    let df = df.select(exprs).map_err(|e| fail(&path)(Box::new(e)))?;
    Ok((df, path))
}

/// The period's cleaned rows at `version` (with `only`, the ones an
/// amendment appended).
async fn cleaned_rows(
    ctx: &SessionContext,
    config: &Config,
    name: &str,
    period: Option<&str>,
    version: i64,
    only: Option<&Append>,
) -> Result<DataFrame, Box<dyn std::error::Error + Send + Sync>> {
    let location = ledger::delta_location(config, "cleaned", name);
    if !location.may_exist() {
        return Err("no such table; run `pipeline validate` for this dataset first".into());
    }
    // Exactly the version the approving validation wrote, whatever came after.
    let table = location.open_version(version).await?;
    let mut df = ctx.read_table(table.table_provider().await?)?;
    if let Some(p) = period {
        df = df.filter(col(DATA_PERIOD).eq(lit(p)))?;
    }
    match only {
        Some(a) => a.appended(ctx, config, name, period, df).await,
        None => Ok(df),
    }
}

/// What a `--parquet-path` file is checked for: each declared column present,
/// of a type that holds the declared one, its values of that type and, when
/// required, present. (problems found from the schema, the aggregates to run,
/// and for each aggregate's column what a count above 0 means.)
fn parquet_checks(
    schema: &datafusion::common::DFSchema,
    ds: &Dataset,
) -> (Vec<String>, Vec<Expr>, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut aggs = vec![count(lit(1)).alias("__rows")];
    let mut checks = Vec::new();
    let flag = rows_where;
    for (c, spec) in &ds.columns {
        let Ok(field) = schema.field_with_unqualified_name(c) else {
            problems.push(format!("column `{c}` is missing"));
            continue;
        };
        if !spec.ty.accepts(field.data_type()) {
            problems.push(format!(
                "column `{c}` has type {}, which cannot hold {}",
                field.data_type(),
                spec.ty
            ));
            continue;
        }
        let typed = Expr::TryCast(TryCast::new(
            Box::new(col(c.as_str())),
            spec.ty.arrow_type(),
        ));
        let bad = format!("__bad_{c}");
        aggs.push(flag(
            col(c.as_str()).is_not_null().and(typed.clone().is_null()),
            &bad,
        ));
        checks.push((bad, format!("values of `{c}` are not {}", spec.ty)));
        if spec.required {
            let null = format!("__null_{c}");
            aggs.push(flag(typed.is_null(), &null));
            checks.push((null, format!("rows lack the required `{c}`")));
        }
    }
    (problems, aggs, checks)
}

/// `sum(CASE WHEN flag THEN 1 ELSE 0 END) AS alias`: the rows `flag` marks.
fn rows_where(flag: Expr, alias: &str) -> Expr {
    sum(when(flag, lit(1i64)).otherwise(lit(0i64)).expect("a CASE")).alias(alias)
}

/// The Int64 in row 0 of `column` of the first batch (0 when null or absent):
/// the result of a one-row aggregate.
fn first_i64(batches: &[datafusion::arrow::record_batch::RecordBatch], column: &str) -> i64 {
    batches
        .first()
        .and_then(|b| b.column_by_name(column))
        .and_then(|a| datafusion::scalar::ScalarValue::try_from_array(a, 0).ok())
        .and_then(|v| match v {
            datafusion::scalar::ScalarValue::Int64(x) => x,
            _ => None,
        })
        .unwrap_or(0)
}

/// Why `path` cannot be a Parquet file: unreadable, or not starting and
/// ending with Parquet's `PAR1` magic (a CSV given by mistake is a usage
/// error, not a failed load).
fn not_parquet(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    let magic = file.read_exact(&mut head).is_ok()
        && file.seek(SeekFrom::End(-4)).is_ok()
        && file.read_exact(&mut tail).is_ok()
        && &head == b"PAR1"
        && &tail == b"PAR1";
    (!magic).then(|| "is not a Parquet file (no PAR1 magic at its start and end)".into())
}

/// A `--parquet-path` file checked like a source: every declared column present
/// with a usable type, no unusable values, required columns filled; then the
/// dataset's rules and keys. Returns its row count, what is wrong with its
/// shape, and what its rows break.
async fn check_parquet(
    ctx: &SessionContext,
    name: &str,
    ds: &Dataset,
    path: &Path,
) -> Result<(i64, Vec<String>, Vec<String>), LoadError> {
    let shown = path.display().to_string();
    if let Some(why) = not_parquet(path) {
        return Err(LoadError::Usage(format!("--parquet-path {shown}: {why}")));
    }
    let fail = |e: datafusion::error::DataFusionError| LoadError::Source {
        dataset: name.to_owned(),
        path: shown.clone(),
        source: Box::new(e),
    };
    let df = ctx
        .read_parquet(shown.as_str(), Default::default())
        .await
        .map_err(fail)?;
    let (mut problems, aggs, checks) = parquet_checks(df.schema(), ds);
    let batches = (df.clone().aggregate(vec![], aggs))
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let value = |name: &str| first_i64(&batches, name);
    for (column, what) in checks {
        let n = value(&column);
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    let rules = if problems.is_empty() {
        rule_failures(&df, ds).await.map_err(fail)?
    } else {
        Vec::new()
    };
    Ok((value("__rows"), problems, rules))
}

/// The dataset's own rules over a `--parquet-path` file (the ones validate
/// compiles, minus the row-shape check a Parquet file cannot fail) and its
/// keys: what each rejects, as "N rows break column.rule (message)".
async fn rule_failures(
    df: &DataFrame,
    ds: &Dataset,
) -> Result<Vec<String>, datafusion::error::DataFusionError> {
    let compiled = crate::rules::compile(ds);
    let checks: Vec<_> = (compiled.checks.iter())
        .filter(|c| c.rule != "unique" && c.column != "_row")
        .collect();
    let mut out = Vec::new();
    if !checks.is_empty() {
        let aggs = (checks.iter().enumerate())
            .map(|(i, c)| rows_where(c.flag(), &format!("__rule_{i}")))
            .collect();
        let batches = df.clone().aggregate(vec![], aggs)?.collect().await?;
        for (i, c) in checks.iter().enumerate() {
            let n = first_i64(&batches, &format!("__rule_{i}"));
            if n > 0 {
                out.push(format!(
                    "{n} rows break {}.{} ({})",
                    c.column, c.rule, c.message
                ));
            }
        }
    }
    for key in &compiled.keys {
        let group: Vec<Expr> = key.iter().map(|k| col(k.as_str())).collect();
        let repeated = df
            .clone()
            .aggregate(group, vec![count(lit(1)).alias("__n")])?
            .filter(col("__n").gt(lit(1i64)))?
            .aggregate(vec![], vec![sum(col("__n")).alias("__rows")])?
            .collect()
            .await?;
        let n = first_i64(&repeated, "__rows");
        if n > 0 {
            out.push(format!("{n} rows repeat a key of ({})", key.join(", ")));
        }
    }
    Ok(out)
}

/// The stage table and period a load replaces.
struct Target<'a> {
    name: &'a str,
    ds: &'a Dataset,
    table: Table,
    period: Option<String>,
    /// The period, or `(all)` for a dataset without periods.
    period_text: String,
}

impl<'a> Target<'a> {
    /// The dataset and period `args` asks for, checked against the config.
    fn of(config: &'a Config, args: &'a Request) -> Result<Target<'a>, LoadError> {
        let (ds, period) = target(config, &args.dataset, args.period.as_deref())?;
        let name = args.dataset.as_str();
        Ok(Target {
            name,
            ds,
            table: Table::stage(name),
            period_text: period.clone().unwrap_or_else(|| "(all)".into()),
            period,
        })
    }
}

/// What the gate approved: the source, and what the checks need to know.
struct Approval<'a> {
    source: Source<'a>,
    validation_id: Option<i64>,
    /// Rows the replace will insert.
    rows_new: i64,
    /// Rows the file had (valid and rejected).
    rows_in: i64,
    /// Gates already found failing (and overridden by --force).
    overrides: Vec<Gate>,
    /// An amended verdict's base, which stage may hold already.
    append: Option<Append>,
}

/// The gates a verdict fails: its quality, and the share of rows it rejected.
fn verdict_gates(verdict: &Verdict, max_rejected_ratio: Option<f64>) -> Vec<(Gate, String)> {
    let mut failing = Vec::new();
    if !verdict.passed {
        failing.push((
            Gate::Quality,
            format!(
                "validation {} scored {}, below the threshold {}",
                verdict.validation_id,
                verdict.score.unwrap_or(0),
                verdict.min_quality_score.unwrap_or(0)
            ),
        ));
    }
    if let Some(max) = max_rejected_ratio
        && verdict.rows_in > 0
    {
        let ratio = verdict.rows_rejected as f64 / verdict.rows_in as f64;
        if ratio > max {
            failing.push((
                Gate::RejectedRatio,
                format!(
                    "{} of {} rows were rejected ({:.1}% > max_rejected_ratio {max})",
                    verdict.rows_rejected,
                    verdict.rows_in,
                    ratio * 100.0
                ),
            ));
        }
    }
    failing
}

/// The verdict in force, when it can be loaded at all: it wrote cleaned rows
/// and was reached by the rules the dataset has now; with the Delta version of
/// those rows.
async fn approved_verdict(
    client: &Client,
    target: &Target<'_>,
) -> Result<(Verdict, i64), LoadError> {
    let Target {
        name,
        ds,
        table,
        period,
        period_text,
    } = target;
    let not_validated = |reason: String| LoadError::NotValidated {
        table: (*table).to_owned(),
        period: period_text.to_owned(),
        reason,
    };
    let verdict = Verdict::latest(client, name, period.as_deref())
        .await
        .map_err(read("read meta.validation_log"))?
        .ok_or_else(|| not_validated("it was never validated".into()))?;
    let Some(version) = verdict.cleaned_version else {
        return Err(not_validated(format!(
            "validation {} wrote no cleaned rows (the file could not be read)",
            verdict.validation_id
        )));
    };
    let changed = verdict.rules_changed(&crate::config::Rules::of(ds));
    if !changed.is_empty() {
        return Err(not_validated(format!(
            "the rules changed since validation {} ({}); validate it again",
            verdict.validation_id,
            changed.join(", ")
        )));
    }
    if verdict.interrupted_after {
        tracing::warn!(
            event = "validation_unfinished",
            validation_id = verdict.validation_id,
            "a later validation of this period did not finish; loading the rows of the last finished one"
        );
    }
    Ok((verdict, version))
}

/// Decides what to load, before any write: the latest verdict (or the checked
/// Parquet file) and the gates that do not depend on the stage table.
async fn approve<'a>(
    config: &Config,
    client: &Client,
    ctx: &SessionContext,
    target: &Target<'_>,
    args: &'a Request,
) -> Result<Approval<'a>, LoadError> {
    let Target {
        name,
        ds,
        table,
        period_text,
        ..
    } = target;
    let mut failing: Vec<(Gate, String)> = Vec::new();
    let approval = if let Some(path) = &args.parquet_path {
        let (rows, problems, rules) = check_parquet(ctx, name, ds, path).await?;
        if !problems.is_empty() {
            failing.push((Gate::Schema, problems.join("; ")));
        }
        if !rules.is_empty() {
            failing.push((Gate::Rules, rules.join("; ")));
        }
        Approval {
            source: Source::Parquet(path),
            validation_id: None,
            rows_new: rows,
            rows_in: rows,
            overrides: Vec::new(),
            append: None,
        }
    } else {
        let (verdict, version) = approved_verdict(client, target).await?;
        failing.extend(verdict_gates(&verdict, ds.max_rejected_ratio));
        if let Some(period) = &target.period {
            failing.extend(drift::gate(config, client, name, ds, period, &verdict).await?);
        }
        Approval {
            source: Source::Delta { version },
            validation_id: Some(verdict.validation_id),
            rows_new: verdict.rows_valid,
            rows_in: verdict.rows_in,
            overrides: Vec::new(),
            append: Append::of(client, &verdict).await?,
        }
    };
    let mut approval = approval;
    if approval.rows_new == 0 && approval.rows_in > 0 {
        failing.push((
            Gate::ZeroRows,
            format!(
                "all {} rows of the file were rejected: the period would be left empty",
                approval.rows_in
            ),
        ));
    }
    pass_or_override(
        &mut approval.overrides,
        failing,
        args.force,
        table,
        period_text,
    )?;
    Ok(approval)
}

/// Ok when nothing fails or --force overrides it (logged and kept), else one
/// refusal naming every failing gate.
fn pass_or_override(
    overrides: &mut Vec<Gate>,
    failing: Vec<(Gate, String)>,
    force: bool,
    table: &Table,
    period: &str,
) -> Result<(), LoadError> {
    if failing.is_empty() {
        return Ok(());
    }
    if !force {
        let (gates, reasons): (Vec<Gate>, Vec<String>) = failing.into_iter().unzip();
        return Err(LoadError::Gate {
            table: table.to_owned(),
            period: period.to_owned(),
            gates,
            reason: reasons.join("; "),
        });
    }
    for (gate, reason) in failing {
        tracing::warn!(event = "gate_overridden", gate = gate.name(), %reason, "gate overridden by --force");
        overrides.push(gate);
    }
    Ok(())
}

/// Whether retrying could help: the server said so (SQLSTATE), or the
/// connection itself failed (closed, or an I/O error underneath).
fn transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        ]
        .contains(code),
        None => {
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                if c.is::<std::io::Error>() {
                    return true;
                }
                cause = c.source();
            }
            false
        }
    }
}

/// One failed attempt.
enum AttemptError {
    /// --no-wait and another run holds the period.
    Locked,
    /// A gate refused after the lock (nothing written; not retried).
    Refused(LoadError),
    Failed {
        transient: bool,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<tokio_postgres::Error> for AttemptError {
    fn from(e: tokio_postgres::Error) -> Self {
        AttemptError::Failed {
            transient: transient(&e),
            source: Box::new(e),
        }
    }
}

impl From<CopyError> for AttemptError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Db(e) => e.into(),
            other => AttemptError::Failed {
                transient: false,
                source: Box::new(other),
            },
        }
    }
}

impl Attempt<'_> {
    fn loaded(&self, report: &Report) {
        tracing::info!(
            event = "loaded",
            load_id = report.load_id,
            rows_deleted = report.rows_deleted,
            rows_inserted = report.rows_inserted,
            attempts = report.attempts,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "loaded"
        );
    }

    /// The last attempt failed: recorded in meta.load_log, and the error.
    async fn give_up(
        &self,
        app: &str,
        attempts: u32,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> LoadError {
        let cause = crate::exit::report(source.as_ref());
        let target = self.target;
        let (name, period) = (target.name, target.period.as_deref());
        let at = (self.started_at, self.started);
        record_failure(
            self.pool,
            app,
            "failed",
            (name, period),
            self.args,
            &cause,
            at,
        )
        .await;
        LoadError::Load {
            table: target.table.clone(),
            period: target.period_text.clone(),
            attempts,
            source,
        }
    }

    /// A retry on a fresh connection (the first attempt's may have died with
    /// the server); failing to connect is transient too, the server may still
    /// be starting.
    async fn on_new_connection(
        &self,
        df: DataFrame,
        amended: Option<Amended>,
    ) -> Result<Report, AttemptError> {
        match self.pool.get(self.app).await {
            Ok(mut c) => self.run(&mut c, df, amended).await,
            Err(e) => Err(AttemptError::Failed {
                transient: true,
                source: Box::new(e),
            }),
        }
    }
}

/// Runs `load-stage`.
#[tracing::instrument(name = "load-stage", skip_all, fields(stage = "load-stage", dataset = %args.dataset, period = args.period.as_deref().unwrap_or_default()))]
pub async fn run(config: &Config, args: &Request) -> Result<Report, LoadError> {
    let pool = db::Pool::new("pipeline load-stage", 1 + copy_streams());
    run_in(config, &pool, args).await
}

/// [`run`] on the connections of `pool` (the command's, handed down by
/// `pipeline run`): the load's own, its COPY streams as far as the pool has
/// room, a retry's fresh one and the record of a failure all come from it.
pub async fn run_in(config: &Config, pool: &db::Pool, args: &Request) -> Result<Report, LoadError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let target = Target::of(config, args)?;
    let result = load(config, pool, args, &target, started, started_at).await;
    // A refusal is history too: the period's record says why stage kept its rows.
    if let Err(e @ (LoadError::Gate { .. } | LoadError::Unbalanced { .. })) = &result {
        let app = format!("pipeline load-stage {} {}", target.name, target.period_text);
        let period = target.period.as_deref();
        let why = crate::exit::report(e);
        let at = (started_at, started);
        record_failure(pool, &app, "refused", (target.name, period), args, &why, at).await;
    }
    if let Err(e @ (LoadError::SwapBlocked { .. } | LoadError::NotOwner { .. })) = &result {
        let app = format!("pipeline load-stage {} {}", target.name, target.period_text);
        let why = crate::exit::report(e);
        let at = (started_at, started);
        let period = target.period.as_deref();
        record_failure(pool, &app, "failed", (target.name, period), args, &why, at).await;
    }
    result
}

async fn load(
    config: &Config,
    pool: &db::Pool,
    args: &Request,
    target: &Target<'_>,
    started: Instant,
    started_at: chrono::DateTime<Utc>,
) -> Result<Report, LoadError> {
    let (name, ds) = (target.name, target.ds);
    let app = format!("pipeline load-stage {name} {}", target.period_text);
    // The command's connection: approval, then the first attempt.
    let mut held = pool.get(&app).await?;
    let client: &mut Client = &mut held;
    let table = Table::stage(name);
    if db::table_columns(&*client, &table)
        .await
        .map_err(read("read the stage table's columns"))?
        .is_none()
    {
        return Err(LoadError::NoStageTable { table });
    }
    // What killed loads of any period left, whatever is loaded now.
    for table in partition::drop_dead_staging(&*client)
        .await
        .map_err(read("drop the staging tables of loads that ended"))?
    {
        tracing::info!(event = "staging_dropped", %table, "dropped a staging table a killed load left");
    }
    let ctx = crate::context::session(config.limits.memory_bytes);
    let approval = approve(config, client, &ctx, target, args).await?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let period = target.period.as_deref();
        let (df, path) =
            source_rows(&ctx, config, name, ds, period, &approval.source, None).await?;
        let amended = amended_rows(&ctx, config, target, &approval).await;
        let load = Attempt {
            target,
            args,
            approval: &approval,
            path: &path,
            app: &app,
            pool,
            started_at,
            started,
        };
        let outcome = match attempt {
            1 => load.run(client, df, amended).await,
            _ => load.on_new_connection(df, amended).await,
        };
        match outcome {
            Ok(mut report) => {
                report.attempts = attempt;
                load.loaded(&report);
                return Ok(report);
            }
            Err(AttemptError::Locked) => {
                return Err(LoadError::Locked {
                    table: target.table.clone(),
                    period: target.period_text.clone(),
                });
            }
            Err(AttemptError::Refused(e)) => return Err(e),
            Err(AttemptError::Failed { transient, source })
                if transient && attempt < args.attempts =>
            {
                let backoff = backoff(attempt);
                tracing::warn!(event = "retrying", attempt, error = %crate::exit::report(source.as_ref()), retry_in_ms = backoff.as_millis() as u64, "transient failure; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(AttemptError::Failed { source, .. }) => {
                return Err(load.give_up(&app, attempt, source).await);
            }
        }
    }
}

/// Exponential backoff (200 ms, 400 ms, ... at most 10 s) with up to 50%
/// jitter: 8 attempts wait 23-34 s in all.
fn backoff(attempt: u32) -> Duration {
    let base = (200u64 << (attempt - 1).min(6)).min(10_000);
    Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

/// How long one try of the swap waits for its locks before letting the
/// readers queued behind it through.
const SWAP_TRY: Duration = Duration::from_secs(2);

/// How long a load waits in all for the swap's locks:
/// `PIPELINE_SWAP_WAIT_SECONDS`, default 300.
fn swap_wait() -> Duration {
    let secs = std::env::var("PIPELINE_SWAP_WAIT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// A load's COPY streams, however many cores: each is a server backend and a
/// connection out of `max_connections`.
const MAX_COPY_STREAMS: usize = 8;

/// How many COPY streams a load uses: `PIPELINE_COPY_STREAMS` when set, else
/// one per core, at most [`MAX_COPY_STREAMS`]. Not fewer on a busy machine:
/// measured with a busy loop per core, 2 streams beat 1 (a fair scheduler
/// gives more backends a larger share).
pub fn copy_streams() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var("PIPELINE_COPY_STREAMS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(cores)
        .min(MAX_COPY_STREAMS)
}

/// One attempt at the replace: everything it needs to know.
struct Attempt<'a> {
    target: &'a Target<'a>,
    args: &'a Request,
    approval: &'a Approval<'a>,
    path: &'a str,
    /// The application_name of the load's connections.
    app: &'a str,
    /// The command's connections.
    pool: &'a db::Pool,
    started_at: chrono::DateTime<Utc>,
    started: Instant,
}

impl Attempt<'_> {
    /// The period's lock: waited for, or (--no-wait) taken only when free. A
    /// role's lock_timeout giving up the wait is "locked" as well.
    async fn lock(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), AttemptError> {
        let (table, period) = (&self.target.table, self.target.period.as_deref());
        if self.args.no_wait {
            return match replace::try_lock(tx, table, period).await? {
                true => Ok(()),
                false => Err(AttemptError::Locked),
            };
        }
        match replace::lock(tx, table, period).await {
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                tracing::warn!(event = "lock_timeout", error = %e, "gave up waiting for the period's lock (lock_timeout)");
                Err(AttemptError::Locked)
            }
            other => Ok(other?),
        }
    }

    /// The rows read at the verdict's version must be the ones it counted: a
    /// table recreated under the same path reuses version numbers.
    fn balanced(&self, version: Option<i64>, read: u64) -> Result<(), AttemptError> {
        match (version, self.approval.validation_id) {
            (Some(version), Some(validation_id)) if read as i64 != self.approval.rows_new => {
                Err(AttemptError::Refused(LoadError::Unbalanced {
                    table: self.target.table.clone(),
                    period: self.target.period_text.clone(),
                    version,
                    validation_id,
                    read,
                    counted: self.approval.rows_new,
                }))
            }
            _ => Ok(()),
        }
    }

    /// Under the lock, `rows_deleted` are the period's rows: a replace that
    /// shrinks them too far is refused (and rolled back) unless forced.
    fn shrink_gate(&self, rows_deleted: u64) -> Result<Vec<Gate>, AttemptError> {
        let mut overrides = self.approval.overrides.clone();
        let new = self.approval.rows_new as f64;
        if rows_deleted > 0 && new < rows_deleted as f64 * (1.0 - self.target.ds.max_shrink) {
            let reason = format!(
                "the period has {rows_deleted} rows and would keep {} ({:.0}% fewer; max_shrink {})",
                self.approval.rows_new,
                (1.0 - new / rows_deleted as f64) * 100.0,
                self.target.ds.max_shrink
            );
            pass_or_override(
                &mut overrides,
                vec![(Gate::Shrink, reason)],
                self.args.force,
                &self.target.table,
                &self.target.period_text,
            )
            .map_err(AttemptError::Refused)?;
        }
        Ok(overrides)
    }

    fn version(&self) -> Option<i64> {
        match self.approval.source {
            Source::Delta { version } => Some(version),
            Source::Parquet(_) => None,
        }
    }

    /// A plain table (one `migrate` has not partitioned: a full-refresh table
    /// views read): DELETE the period (or all), shrink gate, one COPY stream.
    async fn delete_and_copy(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        df: DataFrame,
    ) -> Result<(u64, u64, Vec<Gate>), AttemptError> {
        let period = self.target.period.as_deref();
        let rows_deleted = replace::delete(tx, &self.target.table, period).await?;
        let overrides = self.shrink_gate(rows_deleted)?;
        let rows_inserted = crate::pg_copy::copy_dataframe(tx, &self.target.table, df, || {
            tracing::info!(event = "copying", rows_deleted, streams = 1, "copying rows")
        })
        .await?;
        self.balanced(self.version(), rows_inserted)?;
        Ok((rows_deleted, rows_inserted, overrides))
    }

    /// A partitioned table (by period, or a full-refresh one replaced whole):
    /// count the partition being replaced, shrink gate, COPY the new rows into
    /// a staging table over the COPY streams, then swap it in for the old
    /// partition in `tx`.
    async fn swap(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        period: Option<&str>,
        df: DataFrame,
    ) -> Result<(u64, u64, Vec<Gate>), AttemptError> {
        let parent = &self.target.table;
        let label = period.unwrap_or(partition::WHOLE);
        for table in partition::drop_orphans(tx, parent, label).await? {
            tracing::info!(event = "staging_dropped", %table, "dropped a staging table an earlier load left");
        }
        let (old, rows_deleted) = match period {
            Some(p) => partition::rows_of_period(tx, parent, p).await?,
            None => partition::rows_of_default(tx, parent).await?,
        };
        let overrides = self.shrink_gate(rows_deleted)?;
        let row = tx
            .query_one(
                "SELECT pg_current_xact_id()::text, extract(epoch FROM now())::text",
                &[],
            )
            .await?;
        let staging = partition::staging(parent, label, row.get(0));
        let loaded_at: String = row.get(1);
        let rows = self
            .fill(tx, &staging, period, &loaded_at, rows_deleted, df)
            .await?;
        let by_hand = self.swap_in(tx, old.as_ref(), &staging, period).await?;
        // The period's rows in the DEFAULT partition were deleted too.
        let deleted = rows_deleted + by_hand;
        let overrides = match by_hand {
            0 => overrides,
            _ => self.shrink_gate(deleted)?,
        };
        Ok((deleted, rows, overrides))
    }

    /// Creates `staging` and COPYs the rows into it over a connection per
    /// stream (or, when the role allows no second connection, in `tx`);
    /// checks they balance and gathers its statistics. A staging table that
    /// failed is dropped (best effort: the next load drops it otherwise).
    async fn fill(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        staging: &Table,
        period: Option<&str>,
        loaded_at: &str,
        rows_deleted: u64,
        df: DataFrame,
    ) -> Result<u64, AttemptError> {
        let parent = &self.target.table;
        let create = async |c: &Client| match period {
            Some(p) => partition::create_staging(c, parent, staging, p, loaded_at).await,
            None => partition::create_staging_whole(c, parent, staging, loaded_at).await,
        };
        let helpers = self.helpers().await;
        let copied = async {
            let rows = match helpers.first() {
                // A role allowed one connection: the staging table is made and
                // filled in the load's own transaction, one stream.
                None => {
                    create(tx.client()).await?;
                    crate::pg_copy::copy_dataframe(tx, staging, df, || {
                        tracing::info!(event = "copying", rows_deleted, streams = 1, %staging, "copying rows")
                    })
                    .await?
                }
                Some(first) => {
                    create(first).await?;
                    let streams = helpers.len();
                    tracing::info!(event = "copying", rows_deleted, streams, %staging, "copying rows");
                    crate::pg_copy::copy_parallel(&helpers, staging, df).await?
                }
            };
            self.balanced(self.version(), rows)?;
            match helpers.first() {
                Some(first) => partition::analyze(&**first, staging).await?,
                None => partition::analyze(tx, staging).await?,
            }
            Ok::<_, AttemptError>(rows)
        }
        .await;
        if copied.is_err()
            && let Some(first) = helpers.first()
        {
            // Only before the swap: once `tx` has touched the staging table,
            // dropping it elsewhere would wait for `tx` forever.
            let drop = format!("DROP TABLE IF EXISTS {staging}");
            if let Err(d) = first.batch_execute(&drop).await {
                tracing::warn!(event = "staging_left", %staging, error = %d, "could not drop the staging table");
            }
        }
        copied
    }

    /// [`partition::swap`] (or [`partition::swap_whole`]) in `tx`, asking for
    /// its locks in tries of [`SWAP_TRY`] so readers queued behind it get
    /// through between tries; after [`swap_wait`] in all, refused naming the
    /// sessions that held the table. The rows deleted from the DEFAULT
    /// partition are returned.
    async fn swap_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        old: Option<&Table>,
        staging: &Table,
        period: Option<&str>,
    ) -> Result<u64, AttemptError> {
        let parent = &self.target.table;
        let (budget, waiting) = (swap_wait(), Instant::now());
        let mut tries: u32 = 0;
        loop {
            tries += 1;
            tx.batch_execute(&format!(
                "SAVEPOINT swap; SET LOCAL lock_timeout = {}",
                SWAP_TRY.as_millis()
            ))
            .await?;
            let swapped = match period {
                Some(p) => partition::swap(tx, parent, old, staging, p).await,
                None => partition::swap_whole(tx, parent, old, staging)
                    .await
                    .map(|()| 0),
            };
            match swapped {
                Ok(by_hand) => {
                    tx.batch_execute("RELEASE SAVEPOINT swap; SET LOCAL lock_timeout = DEFAULT")
                        .await?;
                    return Ok(by_hand);
                }
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT swap").await?;
                    let holders = partition::lock_holders(tx, parent).await?;
                    let waited = waiting.elapsed();
                    if waited >= budget {
                        return Err(AttemptError::Refused(LoadError::SwapBlocked {
                            table: parent.clone(),
                            period: self.target.period_text.clone(),
                            waited_s: waited.as_secs(),
                            holders,
                        }));
                    }
                    let pause = (SWAP_TRY * tries).min(Duration::from_secs(10));
                    tracing::warn!(event = "swap_waiting", table = %parent, tries, waited_s = waited.as_secs(), holders = %holders.join("; "), "other sessions hold the table; the swap lets readers through and tries again");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A connection per COPY stream ([`copy_streams`]) for the parallel
    /// COPY, as many as the pool has room for and the server and the role
    /// allow (none: the load copies on its own connection).
    async fn helpers(&self) -> Vec<db::Pooled> {
        let wanted = copy_streams();
        let mut helpers = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            match self.pool.try_get(self.app).await {
                Some(Ok(c)) => helpers.push(c),
                Some(Err(e)) => {
                    tracing::info!(event = "copy_streams", streams = helpers.len().max(1), error = %crate::exit::report(&e), "copying on fewer connections");
                    break;
                }
                None => break,
            }
        }
        helpers
    }

    /// [`Attempt::replace`], with a privilege the swap lacks said in the
    /// table's terms (PostgreSQL names the partition, a table nobody wrote).
    async fn run(
        &self,
        client: &mut Client,
        df: DataFrame,
        amended: Option<Amended>,
    ) -> Result<Report, AttemptError> {
        match self.replace(client, df, amended).await {
            Err(AttemptError::Failed { source, .. })
                if source
                    .downcast_ref::<tokio_postgres::Error>()
                    .and_then(tokio_postgres::Error::code)
                    == Some(&SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                Err(AttemptError::Refused(LoadError::NotOwner {
                    table: self.target.table.clone(),
                    period: self.target.period_text.clone(),
                    source,
                }))
            }
            other => other,
        }
    }

    /// lock → replace the period (partition swap, or DELETE + COPY) → load_log
    /// → COMMIT, in one transaction.
    async fn replace(
        &self,
        client: &mut Client,
        df: DataFrame,
        amended: Option<Amended>,
    ) -> Result<Report, AttemptError> {
        let tx = client.transaction().await?;
        self.lock(&tx).await?;
        let period = self.target.period.as_deref();
        let partitioned = partition::is_partitioned(&tx, &self.target.table).await?;
        let appending = match (amended, partitioned) {
            (Some(rows), true) => self.append(&tx, rows).await?,
            _ => None,
        };
        let rows_appended = appending.as_ref().map(|a| a.added);
        let (rows_deleted, rows_inserted, overrides) = match appending {
            Some(a) => (
                a.removed,
                (a.held + a.added).saturating_sub(a.removed),
                a.overrides,
            ),
            None if partitioned => self.swap(&tx, period, df).await?,
            None => self.delete_and_copy(&tx, df).await?,
        };
        let version = self.version();
        let names: Vec<&str> = overrides.iter().map(|g| g.name()).collect();
        let load_id: i64 = tx
            .query_one(
                "INSERT INTO meta.load_log
                    (dataset, period, validation_id, ingestion_id, status, rows_deleted, rows_inserted,
                     source_delta_version, source_path, forced, overrides, started_at, finished_at, duration_ms,
                     rows_appended)
                 VALUES ($1, $2, $3, (SELECT ingestion_id FROM meta.validation_log WHERE id = $3),
                         'loaded', $4, $5, $6, $7, $8, $9, $10, clock_timestamp(), $11, $12)
                 RETURNING id",
                &[
                    &self.target.name,
                    &self.target.period.as_deref(),
                    &self.approval.validation_id,
                    &(rows_deleted as i64),
                    &(rows_inserted as i64),
                    &version,
                    &self.path,
                    &self.args.force,
                    &names,
                    &self.started_at,
                    &(self.started.elapsed().as_millis() as i64),
                    &rows_appended.map(|n| n as i64),
                ],
            )
            .await?
            .get(0);
        crate::fault::point("load-before-commit");
        tx.commit().await?;
        Ok(Report {
            load_id,
            dataset: self.target.name.to_owned(),
            period: self.target.period.as_deref().map(str::to_owned),
            validation_id: self.approval.validation_id,
            rows_deleted,
            rows_inserted,
            source_delta_version: version,
            source_path: self.path.to_owned(),
            forced: self.args.force,
            overrides,
            attempts: 0,
            rows_appended,
        })
    }
}

/// Best effort: a failed load still leaves a trace in meta.load_log.
/// `status`: `failed`, or `refused` by a gate.
async fn record_failure(
    pool: &db::Pool,
    app: &str,
    status: &str,
    (name, period): (&str, Option<&str>),
    args: &Request,
    cause: &str,
    (started_at, started): (chrono::DateTime<Utc>, Instant),
) {
    let client = match pool.get(app).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(event = "load_log_failed", error = %crate::exit::report(&e), "could not record the failed load in meta.load_log");
            return;
        }
    };
    let result = client
        .execute(
            "INSERT INTO meta.load_log (dataset, period, status, forced, error, started_at, finished_at, duration_ms)
             VALUES ($1, $2, $7, $3, $4, $5, clock_timestamp(), $6)",
            &[&name, &period, &args.force, &cause, &started_at, &(started.elapsed().as_millis() as i64), &status],
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(event = "load_log_failed", error = %e, "could not record the failed load in meta.load_log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter() {
        let b1 = backoff(1).as_millis();
        let b3 = backoff(3).as_millis();
        assert!((200..=300).contains(&b1), "{b1}");
        assert!((800..=1200).contains(&b3), "{b3}");
        assert!(
            (10_000..=15_000).contains(&backoff(9).as_millis()),
            "capped"
        );
        let all: u128 = (1..DEFAULT_ATTEMPTS).map(|a| backoff(a).as_millis()).sum();
        assert!(
            (20_000..=40_000).contains(&all),
            "the default retries for {all} ms"
        );
        // Jitter: runs retrying at once do not retry in step.
        let waits: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| {
                std::thread::sleep(Duration::from_micros(37));
                backoff(3).as_millis()
            })
            .collect();
        assert!(waits.len() > 1, "no jitter: {waits:?}");
    }
}
