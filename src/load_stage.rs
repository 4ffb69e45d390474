//! `pipeline load-stage` and `pipeline check-counts`: one period of cleaned rows
//! into `stage.<dataset>`, replacing what was there, in ONE transaction:
//!
//! advisory lock (table, period) → DELETE the period → binary COPY of the new rows
//! (whole Arrow batches encoded by pgpq) → meta.load_log row → COMMIT.
//!
//! Any failure rolls everything back, so the period keeps its previous rows and
//! other periods are never touched. Transient failures are retried from scratch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{Expr, cast, col, lit};
use deltalake::DeltaTable;
use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::cli::{CheckCountsArgs, LoadStageArgs};
use crate::config::{ColumnType, Config, Dataset};
use crate::db::{self, DbError};
use crate::error::Exit;
use crate::period::Period;
use crate::pg_copy::CopyError;
use crate::stage_table::{self, DATA_PERIOD, INGESTION_ID};

/// Why a load did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "{table} period {period}: the latest validation {state}; fix the data and validate again, \
         or pass --force to load anyway"
    )]
    Gate {
        table: String,
        period: String,
        state: String,
    },
    #[error("{table} period {period} is locked by another run (--no-wait)")]
    Locked { table: String, period: String },
    #[error("cannot read the cleaned rows of {dataset} from {path}")]
    Source {
        dataset: String,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "loading {table} period {period} failed after {attempts} attempt(s); its previous rows are intact: {cause}"
    )]
    Load {
        table: String,
        period: String,
        attempts: u32,
        cause: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl LoadError {
    pub fn exit(&self) -> Exit {
        match self {
            LoadError::Usage(_) => Exit::Usage,
            LoadError::Gate { .. } => Exit::Rejected,
            LoadError::Locked { .. } => Exit::Locked,
            LoadError::Db(e) => e.exit(),
            LoadError::Source { .. } | LoadError::Load { .. } => Exit::Failure,
        }
    }
}

/// What a load did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub load_id: i64,
    pub dataset: String,
    pub period: Option<String>,
    pub rows_deleted: u64,
    pub rows_inserted: u64,
    pub source_delta_version: Option<i64>,
    pub source_path: String,
    pub forced: bool,
    pub attempts: u32,
}

/// The dataset and its checked period (None for `period: none`).
fn target<'a>(
    config: &'a Config,
    dataset: &str,
    period: Option<&str>,
) -> Result<(&'a Dataset, Option<String>), LoadError> {
    let ds = config.dataset(dataset).ok_or_else(|| {
        let known: Vec<&str> = config.datasets.keys().map(String::as_str).collect();
        LoadError::Usage(format!(
            "unknown dataset `{dataset}` (known: {})",
            known.join(", ")
        ))
    })?;
    let period = match (period, ds.period.has_period()) {
        (Some(p), true) => Some(
            Period::parse(ds.period, p)
                .map_err(|e| LoadError::Usage(e.to_string()))?
                .to_string(),
        ),
        (None, true) => {
            return Err(LoadError::Usage(format!(
                "dataset `{dataset}` has periods: pass --period {}",
                ds.period.pattern()
            )));
        }
        (Some(_), false) => {
            return Err(LoadError::Usage(format!(
                "dataset `{dataset}` has `period: none`: drop --period"
            )));
        }
        (None, false) => None,
    };
    Ok((ds, period))
}

fn cleaned_dir(config: &Config, dataset: &str) -> PathBuf {
    PathBuf::from(config.resolve(&config.stage_dir))
        .join("cleaned")
        .join(dataset)
}

/// The period's cleaned rows, typed as the stage table expects, and the Delta version read.
async fn source_rows(
    ctx: &SessionContext,
    config: &Config,
    name: &str,
    ds: &Dataset,
    period: Option<&str>,
    parquet: Option<&PathBuf>,
) -> Result<(DataFrame, Option<i64>, String), LoadError> {
    let fail = |path: &str| {
        let path = path.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| LoadError::Source {
            dataset: name.to_owned(),
            path: path.clone(),
            source: e,
        }
    };
    let (df, version, path) = match parquet {
        Some(p) => {
            let path = p.display().to_string();
            let df = ctx
                .read_parquet(path.as_str(), Default::default())
                .await
                .map_err(|e| fail(&path)(Box::new(e)))?;
            (df, None, path)
        }
        None => {
            let dir = cleaned_dir(config, name);
            let path = dir.display().to_string();
            let abs = std::fs::canonicalize(&dir).map_err(|e| {
                fail(&path)(format!("{e}; run `pipeline validate` for this dataset first").into())
            })?;
            let url = url::Url::from_directory_path(abs).expect("absolute path");
            let table = DeltaTable::try_from_url(url)
                .await
                .map_err(|e| fail(&path)(Box::new(e)))?;
            let version = table.version().map(|v| v as i64);
            if version.is_none() {
                return Err(fail(&path)(
                    "no Delta table there yet; run `pipeline validate` first".into(),
                ));
            }
            let provider = table
                .table_provider()
                .await
                .map_err(|e| fail(&path)(Box::new(e)))?;
            let mut df = ctx
                .read_table(provider)
                .map_err(|e| fail(&path)(Box::new(e)))?;
            if let Some(p) = period {
                df = df
                    .filter(col(DATA_PERIOD).eq(lit(p)))
                    .map_err(|e| fail(&path)(Box::new(e)))?;
            }
            (df, version, path)
        }
    };
    let has = |c: &str| df.schema().has_column_with_unqualified_name(c);
    let mut exprs: Vec<Expr> = ds
        .columns
        .iter()
        .map(|(c, spec)| {
            let ty = arrow_type(spec.ty);
            if has(c) {
                cast(col(c.as_str()), ty).alias(c)
            } else {
                cast(lit(datafusion::scalar::ScalarValue::Null), ty).alias(c)
            }
        })
        .collect();
    if let Some(p) = period {
        exprs.push(lit(p).alias(DATA_PERIOD));
    }
    exprs.push(if has(INGESTION_ID) {
        cast(col(INGESTION_ID), DataType::Int64).alias(INGESTION_ID)
    } else {
        cast(lit(datafusion::scalar::ScalarValue::Null), DataType::Int64).alias(INGESTION_ID)
    });
    let df = df.select(exprs).map_err(|e| fail(&path)(Box::new(e)))?;
    Ok((df, version, path))
}

fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale as i8),
        ColumnType::String => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => {
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None)
        }
    }
}

/// The latest validation of the period: Ok when it passed, else why not.
async fn gate(client: &Client, dataset: &str, period: Option<&str>) -> Result<Option<i64>, String> {
    let row = client
        .query_opt(
            "SELECT id, passed, score, min_quality_score, status FROM meta.validation_log
              WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2 ORDER BY id DESC LIMIT 1",
            &[&dataset, &period],
        )
        .await
        .map_err(|e| format!("could not be read ({e})"))?;
    let Some(row) = row else {
        return Err("does not exist (never validated)".into());
    };
    let (id, passed, score, threshold, status): (
        i64,
        Option<bool>,
        Option<i32>,
        Option<i32>,
        String,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if passed == Some(true) {
        return Ok(Some(id));
    }
    Err(match (score, threshold) {
        (Some(s), Some(t)) => {
            format!("scored {s}, below the threshold {t} (validation {id}, {status})")
        }
        _ => format!("did not pass (validation {id}, {status})"),
    })
}

/// Whether retrying could help.
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
        // No SQLSTATE: an I/O error (refused, reset) rather than a server verdict.
        None => {
            let text = e.to_string();
            !text.contains("password") && !text.contains("authentication")
        }
    }
}

/// One failed attempt: the message, and whether to retry.
struct AttemptError {
    transient: bool,
    locked: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl From<tokio_postgres::Error> for AttemptError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => {
                let mut m = db.message().to_owned();
                if let Some(d) = db.detail() {
                    m.push_str(&format!(" ({d})"));
                }
                if let Some(w) = db.where_() {
                    m.push_str(&format!("; {w}"));
                }
                m
            }
            None => crate::error::report(&e),
        };
        AttemptError {
            transient: transient(&e),
            locked: false,
            source: message.into(),
        }
    }
}

impl From<CopyError> for AttemptError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Db(e) => e.into(),
            other => AttemptError {
                transient: false,
                locked: false,
                source: Box::new(other),
            },
        }
    }
}

/// Runs `load-stage`.
#[tracing::instrument(name = "load-stage", skip_all, fields(stage = "load-stage", dataset = %args.dataset, period = args.period.as_deref().unwrap_or_default()))]
pub async fn run(config: &Config, args: &LoadStageArgs) -> Result<Report, LoadError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let (ds, period) = target(config, &args.dataset, args.period.as_deref())?;
    let name = args.dataset.as_str();
    let table = stage_table::qualified(name);
    let period_text = period.clone().unwrap_or_else(|| "(all)".into());
    let app = format!("pipeline load-stage {name} {period_text}");
    let client = db::connect_as(&app).await?;
    let validation_id = match gate(&client, name, period.as_deref()).await {
        Ok(id) => id,
        Err(state) if args.force => {
            tracing::warn!(state = %state, "quality gate overridden by --force");
            None
        }
        Err(state) => {
            return Err(LoadError::Gate {
                table,
                period: period_text,
                state,
            });
        }
    };
    let ctx = crate::context::session();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (df, version, path) = source_rows(
            &ctx,
            config,
            name,
            ds,
            period.as_deref(),
            args.parquet_path.as_ref(),
        )
        .await?;
        // Each attempt gets a fresh connection; only a later attempt's failure to
        // connect is worth retrying (the first one says the database is unreachable).
        let conn = match db::connect_as(&app).await {
            Ok(c) => Ok(c),
            Err(e) if attempt == 1 => return Err(e.into()),
            Err(e) => Err(AttemptError {
                transient: true,
                locked: false,
                source: Box::new(e),
            }),
        };
        let outcome = match conn {
            Ok(mut c) => {
                attempt_load(
                    &mut c,
                    df,
                    name,
                    period.as_deref(),
                    args,
                    validation_id,
                    version,
                    &path,
                    started_at,
                    started,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mut report) => {
                report.attempts = attempt;
                tracing::info!(
                    load_id = report.load_id,
                    rows_deleted = report.rows_deleted,
                    rows_inserted = report.rows_inserted,
                    attempts = attempt,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "loaded"
                );
                return Ok(report);
            }
            Err(e) if e.locked => {
                return Err(LoadError::Locked {
                    table,
                    period: period_text,
                });
            }
            Err(e) if e.transient && attempt < args.attempts => {
                let backoff = backoff(attempt);
                tracing::warn!(attempt, error = %e.source, retry_in_ms = backoff.as_millis() as u64, "transient failure; retrying");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                let cause = e.source.to_string();
                record_failure(
                    &app,
                    name,
                    period.as_deref(),
                    args,
                    &cause,
                    started_at,
                    started,
                )
                .await;
                return Err(LoadError::Load {
                    table,
                    period: period_text,
                    attempts: attempt,
                    cause,
                    source: e.source,
                });
            }
        }
    }
}

/// Exponential backoff (200 ms, 400 ms, ...) with up to 50% jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << (attempt - 1).min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    Duration::from_millis(base + nanos % (base / 2 + 1))
}

#[allow(clippy::too_many_arguments)]
async fn attempt_load(
    client: &mut Client,
    df: DataFrame,
    name: &str,
    period: Option<&str>,
    args: &LoadStageArgs,
    validation_id: Option<i64>,
    version: Option<i64>,
    path: &str,
    started_at: chrono::DateTime<Utc>,
    started: Instant,
) -> Result<Report, AttemptError> {
    let table = stage_table::qualified(name);
    let tx = client.transaction().await?;
    let lock_key = period.unwrap_or("");
    if args.no_wait {
        let got: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))",
                &[&table, &lock_key],
            )
            .await?
            .get(0);
        if !got {
            return Err(AttemptError {
                transient: false,
                locked: true,
                source: "locked".into(),
            });
        }
    } else {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
            &[&table, &lock_key],
        )
        .await?;
    }
    let rows_deleted = match period {
        Some(p) => {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {DATA_PERIOD} = $1"),
                &[&p],
            )
            .await?
        }
        None => tx.execute(&format!("DELETE FROM {table}"), &[]).await?,
    };
    let rows_inserted = crate::pg_copy::copy_dataframe(&tx, &table, df, || {
        tracing::info!(rows_deleted, "copying rows")
    })
    .await?;
    let load_id: i64 = tx
        .query_one(
            "INSERT INTO meta.load_log
                (dataset, period, validation_id, ingestion_id, status, rows_deleted, rows_inserted,
                 source_delta_version, source_path, forced, started_at, finished_at, duration_ms)
             VALUES ($1, $2, $3, (SELECT ingestion_id FROM meta.validation_log WHERE id = $3),
                     'loaded', $4, $5, $6, $7, $8, $9, now(), $10)
             RETURNING id",
            &[
                &name,
                &period,
                &validation_id,
                &(rows_deleted as i64),
                &(rows_inserted as i64),
                &version,
                &path,
                &args.force,
                &started_at,
                &(started.elapsed().as_millis() as i64),
            ],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Report {
        load_id,
        dataset: name.to_owned(),
        period: period.map(str::to_owned),
        rows_deleted,
        rows_inserted,
        source_delta_version: version,
        source_path: path.to_owned(),
        forced: args.force,
        attempts: 0,
    })
}

/// Best effort: a failed load still leaves a trace in meta.load_log.
async fn record_failure(
    app: &str,
    name: &str,
    period: Option<&str>,
    args: &LoadStageArgs,
    cause: &str,
    started_at: chrono::DateTime<Utc>,
    started: Instant,
) {
    let Ok(client) = db::connect_as(app).await else {
        return;
    };
    let result = client
        .execute(
            "INSERT INTO meta.load_log (dataset, period, status, forced, error, started_at, finished_at, duration_ms)
             VALUES ($1, $2, 'failed', $3, $4, $5, now(), $6)",
            &[&name, &period, &args.force, &cause, &started_at, &(started.elapsed().as_millis() as i64)],
        )
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record the failed load in meta.load_log");
    }
}

/// What `check-counts` found.
#[derive(Debug, Serialize)]
pub struct Counts {
    pub exit_dag: bool,
    pub reason: String,
    pub source_count: i64,
    pub target_count: i64,
}

/// Runs `check-counts`: cleaned rows of the period versus stage rows.
#[tracing::instrument(name = "check-counts", skip_all, fields(stage = "check-counts", dataset = %args.dataset))]
pub async fn check_counts(config: &Config, args: &CheckCountsArgs) -> Result<Counts, LoadError> {
    let (ds, period) = target(config, &args.dataset, args.period.as_deref())?;
    let ctx = crate::context::session();
    let source_count =
        match source_rows(&ctx, config, &args.dataset, ds, period.as_deref(), None).await {
            Ok((df, _, _)) => df.count().await.map_err(|e| LoadError::Source {
                dataset: args.dataset.clone(),
                path: cleaned_dir(config, &args.dataset).display().to_string(),
                source: Box::new(e),
            })? as i64,
            // Nothing validated yet: nothing to compare.
            Err(LoadError::Source { .. }) => 0,
            Err(e) => return Err(e),
        };
    let client = db::connect().await?;
    let table = stage_table::qualified(&args.dataset);
    let sql = match &period {
        Some(_) => format!("SELECT count(*) FROM {table} WHERE {DATA_PERIOD} = $1"),
        None => format!("SELECT count(*) FROM {table}"),
    };
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match &period {
        Some(p) => vec![p],
        None => vec![],
    };
    let target_count: i64 = client
        .query_one(&sql, &params)
        .await
        .map_err(|e| {
            LoadError::Usage(format!(
                "cannot count {table}: {}; run `pipeline migrate`?",
                crate::error::report(&e)
            ))
        })?
        .get(0);
    let exit_dag = source_count == target_count && source_count > 0;
    let reason = if exit_dag {
        format!("already loaded: {source_count} cleaned rows and {target_count} stage rows")
    } else if source_count == 0 || target_count == 0 {
        format!(
            "proceed: {source_count} cleaned rows, {target_count} stage rows (nothing validated or loaded yet)"
        )
    } else {
        format!("proceed: counts differ ({source_count} cleaned rows, {target_count} stage rows)")
    };
    tracing::info!(source_count, target_count, exit_dag, "{reason}");
    Ok(Counts {
        exit_dag,
        reason,
        source_count,
        target_count,
    })
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
    }

    #[test]
    fn arrow_types_match_stage_sql_types() {
        assert_eq!(arrow_type(ColumnType::Int), DataType::Int64);
        assert_eq!(
            arrow_type(ColumnType::Decimal {
                precision: 12,
                scale: 2
            }),
            DataType::Decimal128(12, 2)
        );
    }
}
