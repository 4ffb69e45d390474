//! `pipeline validate`: one file through the dataset's rules in one DataFusion
//! plan. Good rows go to the cleaned Delta table, bad rows with their reasons to
//! the quarantine Delta table (both replace the period atomically); the quality
//! score and profile go to meta.validation_log and reporting.*.
//!
//! Uniqueness needs to know a key's other rows before the first one is written
//! ([`uniqueness`]): a keyed file is read once while no key repeats, and read
//! again after a key-only pre-pass that finds the duplicated keys when one does
//! (or when its keys would not fit in memory). A key is grouped and looked up
//! as one 128-bit fingerprint of its typed values ([`rules::key_fingerprint`]):
//! 16 bytes a row, whatever the key's width.

pub mod delta_commit;
mod input;
pub mod key_scan;
mod plan;
pub mod profile;
pub mod quality;
pub mod replay;
pub mod source;
pub mod uniqueness;
mod verdict;
mod write;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::common::JoinType;
use datafusion::common::ScalarValue;
use datafusion::common::runtime::SpawnedTask;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SessionContext;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, col, lit};
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::parquet::basic::{Compression, Encoding};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::Instrument;

use crate::config::{Bound, ChangedRows, Config, Dataset, FileFormat};
use crate::exit::Exit;
use crate::header;
use crate::landed::{Entry, Landed, LandedError, LandedFile};
use crate::ledger;
use crate::manifest;
use crate::period::Period;
use crate::rules::{self, Compiled, dup_column};
use profile::{Profiler, RAW_PREFIX, RuleFailure};
use quality::Counts;
use source::Digests;
use uniqueness::{KeyPass, KeyTracker, TooManyDuplicates};

use input::*;
use plan::*;
use verdict::*;
use write::*;

/// Why validation could not run (a failed quality gate is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(
        "file {file_id} ({name}) was rejected at ingest ({reason}); fix the file and ingest it again"
    )]
    Rejected {
        file_id: i64,
        name: String,
        reason: String,
    },
    #[error(
        "no file for dataset `{dataset}`{} has been ingested yet; it has not arrived \
         (or `pipeline ingest` has not run)",
        period.as_deref().map(|p| format!(" period {p}")).unwrap_or_default()
    )]
    NotArrived {
        dataset: String,
        period: Option<String>,
    },
    #[error(
        "{uri} changed since it was ingested as file {file_id} (size or modification time differ); \
         run `pipeline ingest` on it again"
    )]
    Changed { file_id: i64, uri: String },
    #[error(
        "{uri} changed while it was being read: the bytes read have sha256 {read}, the ingested \
         file {file_id} has {ingested}; nothing was recorded as validated. Run `pipeline ingest` \
         on it again once the delivery is complete"
    )]
    ChangedWhileRead {
        file_id: i64,
        uri: String,
        read: String,
        ingested: String,
    },
    #[error(
        "{uri} (file {file_id}, {name}) is no longer in the landed dir, and the rows kept of it \
         cannot stand in for it: {why}. Put the file back and run again"
    )]
    Unreplayable {
        file_id: i64,
        name: String,
        uri: String,
        why: String,
    },
    #[error(transparent)]
    Landed(#[from] LandedError),
    #[error(
        "validation of {dataset} failed while {step} (a runtime failure: no quality score was recorded)"
    )]
    Engine {
        dataset: String,
        step: &'static str,
        #[source]
        source: DataFusionError,
    },
    #[error("cannot write the {which} Delta table at {path}")]
    Delta {
        which: &'static str,
        path: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error(
        "cannot open the Delta table {path} (when its `_delta_log` is damaged: move the table \
         aside and run again, see operations.md \"A damaged or lost stage_dir\")"
    )]
    StageDir {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot {step}")]
    Db {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Another process closed this validation's row first (a runtime race,
    /// exit 1): nothing of this attempt was recorded.
    #[error(
        "validation {validation_id} is no longer running (another process marked it); nothing recorded"
    )]
    Superseded { validation_id: i64 },
}

impl ValidateError {
    pub fn exit(&self) -> Exit {
        match self {
            ValidateError::Usage(_) | ValidateError::Changed { .. } => Exit::Usage,
            ValidateError::Rejected { .. } | ValidateError::Unreplayable { .. } => Exit::Rejected,
            ValidateError::NotArrived { .. } => Exit::NotArrived,
            ValidateError::Landed(e) => e.exit(),
            ValidateError::Manifest(manifest::ManifestError::OutOfOrder { .. }) => Exit::Usage,
            _ => Exit::Failure,
        }
    }
}

fn db(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ValidateError {
    move |source| ValidateError::Db { step, source }
}

/// Which ingested file to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// A `meta.ingestion_log` id.
    Id(i64),
    /// The dataset's current accepted file for the period.
    Current {
        dataset: String,
        period: Option<String>,
    },
}

/// What `validate` did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub validation_id: i64,
    pub file_id: i64,
    pub dataset: String,
    pub period: Option<String>,
    pub file_name: String,
    pub rows_in: u64,
    pub rows_valid: u64,
    pub rows_rejected: u64,
    /// Incremental datasets: snapshot rows skipped because an earlier night
    /// processed their key (null for other datasets).
    pub rows_skipped: Option<u64>,
    pub score: i32,
    pub passed: bool,
    pub min_quality_score: u8,
    pub cleaned_version: Option<i64>,
    pub quarantine_version: Option<i64>,
    pub top_failing_rules: Vec<RuleFailure>,
    pub error: Option<String>,
    /// How duplicated keys were found: `none` (no key) or `hash` (the duplicated
    /// keys, a wide one as its fingerprint, held within a quarter of the pool).
    pub duplicate_check: &'static str,
    /// The landed file was gone: the validation whose kept rows were read
    /// instead ([`replay`]); null when the file was read.
    pub replayed_from: Option<i64>,
    /// Only value rules changed since the verdict of this file: the
    /// validation whose cleaned rows this one keeps, its quarantined rows
    /// (and the cleaned rows a changed rule rejects) judged again (the file
    /// was not read); null otherwise.
    pub amended_from: Option<i64>,
    /// An amendment's cleaned rows of the verdict it amends that a changed
    /// rule moved to quarantine; null when not an amendment.
    pub rows_withdrawn: Option<i64>,
    /// A re-delivery of a period stage holds, against the rows its load in
    /// force copied, by key: counts only (`pipeline diff` shows the keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelivery: Option<crate::diff::KeyDiff>,
}

impl Report {
    pub fn exit(&self) -> Exit {
        if self.passed {
            Exit::Ok
        } else {
            Exit::Rejected
        }
    }
}

/// `validate --explain`: the plan's checks as SQL; reads only the header, writes nothing.
pub async fn explain(
    config: &Config,
    client: &Client,
    file: &FileRef,
) -> Result<String, ValidateError> {
    let Input {
        row,
        from,
        file,
        format,
    } = input(config, client, file).await?;
    let landed = match from {
        Origin::Landed(landed) => landed,
        Origin::Kept(kept) => {
            return Ok(format!(
                "-- {} is no longer in the landed dir: validate would read the rows kept by \
                 validation {} instead (see validate/replay.rs)",
                row.file_name, kept.validation_id
            ));
        }
        Origin::Amend(a) => {
            return Ok(format!(
                "-- only value rules changed since validation {}: validate would judge its \
                 quarantined rows and the {} cleaned row(s) a changed rule rejects again, and \
                 keep its other cleaned rows (see validate/replay.rs)",
                a.kept.validation_id,
                a.withdrawn.len()
            ));
        }
    };
    let ds = &config.datasets[&row.dataset];
    let compiled = rules::compile(ds);
    // The plan as this process would run it.
    let ctx = crate::context::session(config.limits.memory_bytes);
    let opened = match open_source(
        &landed,
        &file,
        ds,
        format,
        &config.limits,
        Digests::default(),
        None,
    )
    .await?
    {
        Err(reason) => return Ok(format!("-- the file cannot be read: {reason}")),
        Ok(opened) => opened,
    };
    let pass = KeyPass::choose(
        compiled.keys.len(),
        keys_repeated_last_time(client, &row.dataset).await?,
    );
    let mut sql = match pass {
        KeyPass::PrePass => "-- the keys are read first (a pre-pass), then each row's is looked up in the repeated ones (repeated_key)\n",
        KeyPass::InPass => "-- the keys are checked as the rows stream (a key seen twice: validated again with a pre-pass)\n",
        KeyPass::None => "",
    }
    .to_owned();
    let what = Planned {
        ds,
        compiled: &compiled,
        row: &row,
        incremental: None,
    };
    let plan = validated_plan(&ctx, opened.table, what, pass, None).await;
    sql.push_str(&match plan {
        Ok(df) => match datafusion::sql::unparser::plan_to_sql(df.logical_plan()) {
            Ok(sql) => sql.to_string(),
            Err(_) => df.logical_plan().display_indent().to_string(),
        },
        Err(e) => format!("-- the plan could not be built: {e}"),
    });
    Ok(sql)
}

/// Runs `validate`. The `meta.validation_log` row is the commit point: it is
/// written `running` first, and only its final update (in one transaction with
/// the reporting rows) makes the new Delta versions the period's validated rows.
#[tracing::instrument(name = "validate", skip_all, fields(stage = "validate", dataset = tracing::field::Empty, period = tracing::field::Empty, file_id = tracing::field::Empty))]
pub async fn run(
    config: &Config,
    client: &mut Client,
    file: &FileRef,
) -> Result<Report, ValidateError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let input = input(config, client, file).await?;
    let row = &input.row;
    // Every event of this validation carries its dataset, period and file.
    let span = tracing::Span::current();
    span.record("dataset", row.dataset.as_str());
    span.record("period", row.period.as_deref().unwrap_or_default());
    span.record("file_id", row.id);
    tracing::info!(event = "validating", file = %row.file_name, "validating");
    let key = lock_period(client, &row.dataset, row.period.as_deref()).await?;
    let creating = match tables_missing(config, &row.dataset).await {
        true => Some(lock_creation(client, &row.dataset).await?),
        false => None,
    };
    // Decided under the lock: no other validation of the period runs now.
    let result = match replay::amend(config, client, input).await {
        Ok(input) => validate_locked(config, client, &input, started, started_at).await,
        Err(e) => Err(e),
    };
    // Closing the connection releases them too; an unlock that fails changes nothing.
    for key in std::iter::once(key).chain(creating) {
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&key])
            .await;
    }
    result
}

/// Whether the dataset's cleaned or quarantine table is still to be created.
async fn tables_missing(config: &Config, dataset: &str) -> bool {
    for which in ["cleaned", "quarantine"] {
        if !ledger::delta_location(config, which, dataset)
            .has_table()
            .await
        {
            return true;
        }
    }
    false
}

/// Waits until no other validation of the dataset is creating its tables,
/// and keeps it so until unlocked: two first validations of two periods
/// would each create the Delta tables (two table ids, one verdict's rows
/// then "gone"); the second starts once the first has created them.
async fn lock_creation(client: &Client, dataset: &str) -> Result<i64, ValidateError> {
    let key: i64 = client
        .query_one(
            "SELECT hashtextextended('pipeline validate create ' || $1, 0)",
            &[&dataset],
        )
        .await
        .map_err(db("compute the dataset's creation lock"))?
        .get(0);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(db("wait for the dataset's creation lock"))?;
    Ok(key)
}

/// Waits until no other validation of the (dataset, period) runs, and keeps
/// it so until unlocked (a session lock: it spans validate's transactions,
/// and a dead process's connection lets it go). Two validations at once would
/// otherwise both write the period — two first writes of a table both append,
/// doubling every row; the second now starts after the first and replaces it.
async fn lock_period(
    client: &Client,
    dataset: &str,
    period: Option<&str>,
) -> Result<i64, ValidateError> {
    let key: i64 = client
        .query_one(
            "SELECT hashtextextended('pipeline validate ' || $1 || ' ' || coalesce($2, ''), 0)",
            &[&dataset, &period],
        )
        .await
        .map_err(db("compute the period's lock"))?
        .get(0);
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(db("take the period's validation lock"))?
        .get(0);
    if !free {
        tracing::info!(
            event = "validation_waiting",
            "another validation of this period is running; waiting for it to finish"
        );
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(db("wait for the period's validation lock"))?;
    }
    Ok(key)
}

/// The validation proper, once no other one of the period runs.
async fn validate_locked(
    config: &Config,
    client: &mut Client,
    input: &Input,
    started: Instant,
    started_at: chrono::DateTime<Utc>,
) -> Result<Report, ValidateError> {
    let row = &input.row;
    let ds = &config.datasets[&row.dataset];
    // Incremental: the keys earlier nights processed (refuses an older night).
    let seen = match (&ds.incremental, &row.period) {
        (Some(_), Some(period)) => Some(manifest::seen(client, &row.dataset, period).await?),
        _ => None,
    };
    // The rules this verdict judges by, recorded with it (the ledger compares).
    let rules = crate::config::Rules::of(ds);
    let validation_id: i64 = client
        .query_one(
            "INSERT INTO meta.validation_log
                 (ingestion_id, dataset, period, status, started_at, rules, rules_fingerprint)
             VALUES ($1, $2, $3, 'running', $4, $5, $6) RETURNING id",
            &[
                &row.id,
                &row.dataset,
                &row.period,
                &started_at,
                &rules.to_json(),
                &rules.fingerprint(),
            ],
        )
        .await
        .map_err(db("record the validation's start in meta.validation_log"))?
        .get(0);
    let repeated = keys_repeated_last_time(client, &row.dataset).await?;
    let result = async {
        let mut checked = check(config, ds, input, seen, repeated).await?;
        let report = checked.report(validation_id, ds, row);
        persist(client, ds, input, &mut checked, &report, started).await?;
        Ok::<_, ValidateError>(report)
    }
    .await;
    let mut report = match result {
        Ok(done) => done,
        Err(e) => {
            mark_error(client, validation_id, &e, started).await;
            return Err(e);
        }
    };
    report.redelivery = redelivery(config, client, ds, &report).await;
    logged(&report, ds, started);
    Ok(report)
}

/// A re-delivery of a period stage holds (another file than the one its load
/// in force was validated from): the new cleaned rows against those, by key,
/// recorded with the verdict (counts only). The same file validated again
/// (after a rule edit, or by hand) is not a re-delivery: its rows differ only
/// by what the rules moved, which `run --plan` says beforehand, and a diff of
/// millions of rows would double the validation. Best effort: a diff that
/// cannot be made is logged, and changes nothing of the verdict.
async fn redelivery(
    config: &Config,
    client: &Client,
    ds: &Dataset,
    report: &Report,
) -> Option<crate::diff::KeyDiff> {
    let new = report.cleaned_version?;
    let period = report.period.as_deref();
    let loaded = ledger::Loaded::latest(client, &report.dataset, period)
        .await
        .ok()??;
    let old = loaded.source_delta_version.filter(|v| *v != new)?;
    let loaded_file: Option<i64> = match loaded.validation_id {
        Some(id) => client
            .query_opt(
                "SELECT ingestion_id FROM meta.validation_log WHERE id = $1",
                &[&id],
            )
            .await
            .ok()?
            .map(|r| r.get(0)),
        None => None,
    };
    if loaded_file == Some(report.file_id) {
        tracing::debug!(
            event = "redelivery_same_file",
            file_id = report.file_id,
            "the file stage was loaded from, validated again: not a re-delivery, not diffed"
        );
        return None;
    }
    let diff = match crate::diff::by_key(config, &report.dataset, ds, period, (old, new), 0).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(event = "redelivery_not_diffed", error = %e, "the re-delivery could not be compared with the loaded rows");
            return None;
        }
    };
    let mut recorded = serde_json::to_value(&diff).unwrap_or_default();
    recorded["words"] = serde_json::Value::String(diff.words());
    recorded["against_version"] = serde_json::json!(old);
    let saved = client
        .execute(
            "UPDATE meta.validation_log SET redelivery = $2 WHERE id = $1",
            &[&report.validation_id, &recorded],
        )
        .await;
    if let Err(e) = saved {
        tracing::warn!(event = "redelivery_not_diffed", error = %e, "the re-delivery's diff could not be recorded");
    }
    tracing::info!(event = "redelivery", diff = %diff.words(), "re-delivery against the loaded rows: {}", diff.words());
    Some(diff)
}

/// Best effort: the row says what went wrong; without it, `running` stays
/// behind and says the same (the previous verdict stays in force).
async fn mark_error(client: &Client, validation_id: i64, e: &ValidateError, started: Instant) {
    let text = crate::exit::report(e);
    let marked = client
        .execute(
            "UPDATE meta.validation_log
                SET status = 'error', error = $2, finished_at = clock_timestamp(), duration_ms = $3
              WHERE id = $1",
            &[
                &validation_id,
                &text,
                &(started.elapsed().as_millis() as i64),
            ],
        )
        .await;
    if let Err(mark) = marked {
        tracing::warn!(event = "validation_log_failed", validation_id, error = %mark, "could not mark the validation as failed");
    }
    tracing::error!(event = "validation_error", validation_id, error = %text, "validation failed");
}

/// The verdict's log lines: a malformed file, each failing rule, the summary.
fn logged(report: &Report, ds: &Dataset, started: Instant) {
    if let Some(reason) = &report.error {
        tracing::error!(event = "file_malformed",
            file = %report.file_name,
            "the file is malformed and none of its rows were kept: {reason}"
        );
    }
    for f in &report.top_failing_rules {
        tracing::warn!(event = "rule_failed", column = %f.column, rule = %f.rule, rows = f.count, example = f.examples.first().map(String::as_str).unwrap_or(""), "{}", f.message);
    }
    tracing::info!(
        event = "validated",
        validation_id = report.validation_id,
        rows_in = report.rows_in,
        rows_valid = report.rows_valid,
        rows_rejected = report.rows_rejected,
        score = report.score,
        passed = report.passed,
        threshold = ds.min_quality_score,
        duplicate_check = report.duplicate_check,
        duration_ms = started.elapsed().as_millis() as u64,
        "validated"
    );
}

/// What the checks found, before anything is recorded in PostgreSQL.
struct Checked {
    counts: Counts,
    profiler: Profiler,
    quality: quality::Quality,
    versions: (Option<i64>, Option<i64>),
    /// The sha256 of the bytes read.
    sha256: Option<String>,
    /// How duplicated keys were found: `none` or `hash` (see [`Report`]).
    duplicate_check: &'static str,
    /// Incremental datasets: the night's keys and the rows skipped.
    manifest: Option<manifest::Collector>,
    /// The validation whose kept rows stood in for the file.
    replayed_from: Option<i64>,
    /// The validation whose cleaned rows this one keeps, its quarantined
    /// rows judged again under changed value rules.
    amended_from: Option<i64>,
    /// How many of those cleaned rows a changed rule moved to quarantine.
    rows_withdrawn: Option<i64>,
    /// The ids of the Delta tables `versions` are in ([`ledger::table_id`]).
    table_ids: (Option<String>, Option<String>),
}

impl Checked {
    fn report(&self, validation_id: i64, ds: &Dataset, row: &FileRow) -> Report {
        let p = &self.profiler;
        Report {
            validation_id,
            file_id: row.id,
            dataset: row.dataset.clone(),
            period: row.period.clone(),
            file_name: row.file_name.clone(),
            rows_in: p.rows,
            rows_valid: p.rows - p.rows_rejected,
            rows_rejected: p.rows_rejected,
            rows_skipped: self.manifest.as_ref().map(|m| m.skipped),
            score: self.quality.score,
            passed: self.quality.passed,
            min_quality_score: ds.min_quality_score,
            cleaned_version: self.versions.0,
            quarantine_version: self.versions.1,
            top_failing_rules: p.failing_rules().into_iter().take(10).collect(),
            error: self.counts.parse_error.clone(),
            duplicate_check: self.duplicate_check,
            replayed_from: self.replayed_from,
            amended_from: self.amended_from,
            rows_withdrawn: self.rows_withdrawn,
            redelivery: None,
        }
    }
}

/// One pass over the file: the rules, the two Delta writes, the score.
async fn check(
    config: &Config,
    ds: &Dataset,
    input: &Input,
    seen: Option<MemTable>,
    repeated_last_time: bool,
) -> Result<Checked, ValidateError> {
    let compiled = rules::compile(ds);
    // `ctx` writes the Delta tables here; `planner` reads and checks the rows,
    // here or on a Ballista cluster.
    let ctx = crate::context::session(config.limits.memory_bytes);
    // Kept rows are read in this process (their table has no remote form).
    let planner = match (&config.engine, &input.from) {
        (crate::config::Engine::InProcess, _) | (_, Origin::Kept(_) | Origin::Amend(..)) => {
            ctx.clone()
        }
        (engine, Origin::Landed(_)) => crate::context::planner(engine, config.limits.memory_bytes)
            .await
            .map_err(engine_error(
                &input.row,
                "connecting to the Ballista scheduler",
            ))?,
    };
    let manifest = seen.is_some().then(manifest::Collector::default);
    let incremental = seen
        .map(Arc::new)
        .zip(ds.incremental.as_ref().map(|i| i.changed_rows));
    let mut pass = Pass {
        config,
        what: Planned {
            ds,
            compiled: &compiled,
            row: &input.row,
            incremental: incremental.as_ref(),
        },
        ctx,
        planner,
        digests: Digests::default(),
        counts: Counts {
            declared_columns: ds.columns.len(),
            ..Counts::default()
        },
        profiler: Profiler::new(ds, &compiled.checks),
        manifest,
        versions: (None, None),
        duplicate_check: "none",
        amending: match &input.from {
            Origin::Amend(a) => Some((a.kept.clone(), a.withdrawn.clone())),
            _ => None,
        },
    };
    match open_input(&pass, input).await? {
        Err(parse_error) => pass.counts.parse_error = Some(parse_error),
        Ok(opened) => {
            pass.counts.schema_failures = opened.missing.clone();
            let read = pass.read(&opened, repeated_last_time);
            match (&config.engine, &input.from) {
                // Ballista queues a job forever when no executor is alive.
                (crate::config::Engine::Ballista(address), Origin::Landed(_)) => tokio::select! {
                    read = read => read?,
                    why = crate::context::executors_gone(address) => {
                        return Err(engine_error(&input.row, "waiting for a Ballista executor")(
                            DataFusionError::Execution(why),
                        ));
                    }
                },
                _ => read.await?,
            }
        }
    }
    if let Origin::Amend(a) = &input.from
        && pass.counts.parse_error.is_none()
    {
        pass.profiler.rebase(a.base.clone());
    }
    let mut checked = pass.finish();
    checked.replayed_from = input.from.replayed_from();
    checked.amended_from = input.from.amended_from();
    if let Origin::Amend(a) = &input.from {
        checked.rows_withdrawn = Some(a.withdrawn.len() as i64);
    }
    checked.table_ids = table_ids(config, &input.row.dataset, checked.versions).await;
    Ok(checked)
}

/// The ids of the tables the versions were written to; None where unknown
/// (the ledger then checks the version alone).
async fn table_ids(
    config: &Config,
    dataset: &str,
    (cleaned, quarantine): (Option<i64>, Option<i64>),
) -> (Option<String>, Option<String>) {
    let id = |which: &'static str, version: Option<i64>| async move {
        let table = ledger::delta_location(config, which, dataset)
            .open_version(version?)
            .await
            .ok()?;
        ledger::table_id(&table)
    };
    (
        id("cleaned", cleaned).await,
        id("quarantine", quarantine).await,
    )
}

/// The source the pass reads: the landed file, or the rows kept of it.
async fn open_input(
    pass: &Pass<'_>,
    input: &Input,
) -> Result<Result<Opened, String>, ValidateError> {
    let (config, ds) = (pass.config, pass.what.ds);
    match &input.from {
        Origin::Landed(landed) => {
            open_source(
                landed,
                &input.file,
                ds,
                input.format,
                &config.limits,
                pass.digests.clone(),
                input.row.sha256.clone(),
            )
            .await
        }
        Origin::Kept(kept) => {
            tracing::info!(
                event = "replaying",
                from_validation = kept.validation_id,
                "{} is no longer in the landed dir: validating the rows kept by validation {}",
                input.row.file_name,
                kept.validation_id
            );
            // No bytes of the file are read: the kept rows are the verdict's own.
            (pass.digests.lock().expect("not poisoned")).extend(input.row.sha256.clone());
            let opened = replay::open(&pass.ctx, config, ds, &input.row, (kept, None)).await?;
            Ok(Ok(opened))
        }
        Origin::Amend(a) => {
            tracing::info!(
                event = "amending",
                from_validation = a.kept.validation_id,
                kept_rows = a.base.kept_rows,
                withdrawn_rows = a.withdrawn.len(),
                "only value rules changed since validation {}: its quarantined rows and the {} \
                 cleaned row(s) a changed rule rejects are judged again, its {} other cleaned \
                 rows kept (the file is not read)",
                a.kept.validation_id,
                a.withdrawn.len(),
                a.base.kept_rows
            );
            (pass.digests.lock().expect("not poisoned")).extend(input.row.sha256.clone());
            let amending = (&a.kept, Some(&a.withdrawn));
            let opened = replay::open(&pass.ctx, config, ds, &input.row, amending).await?;
            Ok(Ok(opened))
        }
    }
}

fn engine_error(
    row: &FileRow,
    step: &'static str,
) -> impl FnOnce(DataFusionError) -> ValidateError {
    let dataset = row.dataset.clone();
    move |source| ValidateError::Engine {
        dataset,
        step,
        source,
    }
}

/// A validation's pass over its file, and what it found so far.
struct Pass<'a> {
    config: &'a Config,
    what: Planned<'a>,
    ctx: SessionContext,
    planner: SessionContext,
    digests: Digests,
    counts: Counts,
    profiler: Profiler,
    manifest: Option<manifest::Collector>,
    versions: (Option<i64>, Option<i64>),
    duplicate_check: &'static str,
    /// An amended verdict's base and the lines of its cleaned rows judged
    /// again: the period's other cleaned rows are kept (added to, or
    /// rewritten with, the rows judged valid).
    amending: Option<(replay::Kept, replay::Lines)>,
}

impl Pass<'_> {
    /// Reads the rows once (twice when an in-pass key check must give way to
    /// a pre-pass; nothing is committed by the first).
    async fn read(
        &mut self,
        opened: &Opened,
        repeated_last_time: bool,
    ) -> Result<(), ValidateError> {
        let limits = &self.config.limits;
        // A pre-pass's key set may take half the pool: no rule plan runs beside
        // it; the duplicated keys it collects, a quarter.
        let room = PrePassRoom {
            keys: limits.memory_bytes / 2,
            duplicates: limits.memory_bytes / 4,
            rows: opened.rows_estimate,
            in_process: self.config.engine == crate::config::Engine::InProcess,
        };
        let mut pass = KeyPass::choose(self.what.compiled.keys.len(), repeated_last_time);
        if pass == KeyPass::PrePass {
            // Its deliveries repeat keys: a read stopped at the first one is waste.
            tracing::info!(
                event = "key_pre_pass",
                "the last validation of {} found repeated keys: reading the keys first",
                self.what.row.dataset
            );
        }
        loop {
            let Some(written) = self.attempt(opened, pass, room).await? else {
                return Ok(());
            };
            let Written::Restart(stop) = written else {
                return self.settle(written);
            };
            // Nothing was committed: validate again, the exact way.
            tracing::info!(event = "key_pre_pass", reason = %stop, "{stop}: reading the keys first");
            pass = KeyPass::PrePass;
            self.profiler = Profiler::new(self.what.ds, &self.what.compiled.checks);
            self.manifest = self
                .manifest
                .as_ref()
                .map(|_| manifest::Collector::default());
        }
    }

    /// One read with `pass`; None when the plan found the file malformed.
    async fn attempt(
        &mut self,
        opened: &Opened,
        pass: KeyPass,
        room: PrePassRoom,
    ) -> Result<Option<Written>, ValidateError> {
        let row = self.what.row;
        let plan = validated_plan(
            &self.planner,
            opened.table.clone(),
            self.what,
            pass,
            Some(room),
        );
        let df = match plan.await {
            Ok(df) => df,
            Err(e) => match source::malformed_reason(&e) {
                Some(reason) => {
                    self.counts.parse_error = Some(reason);
                    return Ok(None);
                }
                None => return Err(engine_error(row, "finding duplicated keys")(e)),
            },
        };
        self.duplicate_check = pass.name();
        if self.config.engine != crate::config::Engine::InProcess {
            // Executors check every complete read against the ingested
            // sha256 where they read; a mismatch fails the job.
            let mut read = self.digests.lock().expect("not poisoned");
            read.extend(row.sha256.clone());
        }
        // The key set of an in-pass check (with the room to sort it) may take
        // a quarter of the pool: the rest is the plan's.
        let runtime = self.ctx.runtime_env();
        let tracker = match pass {
            KeyPass::InPass => match KeyTracker::new(
                self.what.compiled.keys.len(),
                opened.rows_estimate,
                &runtime.memory_pool,
                runtime.disk_manager.clone(),
                self.config.limits.memory_bytes / 4,
            ) {
                Ok(tracker) => Some(tracker),
                Err(stop) => return Ok(Some(Written::Restart(stop))),
            },
            _ => None,
        };
        Ok(Some(self.write(df, tracker).await?))
    }

    /// What a finished read means for the validation.
    fn settle(&mut self, written: Written) -> Result<(), ValidateError> {
        let row = self.what.row;
        match written {
            Written::Versions(c, q) => self.versions = (c, q),
            Written::Malformed(e) => self.counts.parse_error = Some(e),
            Written::Failed(e) => {
                return Err(engine_error(row, "reading and checking the rows")(e));
            }
            Written::Changed(read) => {
                return Err(ValidateError::ChangedWhileRead {
                    file_id: row.id,
                    uri: row.source_uri.clone(),
                    read,
                    ingested: row.sha256.clone().unwrap_or_default(),
                });
            }
            Written::Restart(_) => unreachable!("a restart reads again"),
        }
        Ok(())
    }

    /// The counts, the score and what the pass wrote.
    fn finish(mut self) -> Checked {
        let counts = &mut self.counts;
        if counts.parse_error.is_none() {
            let p = &self.profiler;
            counts.rows = p.rows;
            counts.format_rows = p.format_rows;
            counts.completeness_rows = p.completeness_rows;
            counts.bounds_rows = p.bounds_rows;
            counts.uniqueness_rows = p.uniqueness_rows;
        } else {
            self.profiler = Profiler::new(self.what.ds, &self.what.compiled.checks);
            // Nothing of a malformed file is stored, so none of its keys is processed.
            self.manifest = self.manifest.map(|_| manifest::Collector::default());
        }
        let quality = quality::score(&self.counts, self.what.ds.min_quality_score);
        let sha256 = self.digests.lock().expect("not poisoned").last().cloned();
        Checked {
            counts: self.counts,
            profiler: self.profiler,
            quality,
            versions: self.versions,
            sha256,
            duplicate_check: self.duplicate_check,
            manifest: self.manifest,
            replayed_from: None,
            amended_from: None,
            rows_withdrawn: None,
            table_ids: (None, None),
        }
    }
}
