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
pub mod key_scan;
pub mod profile;
pub mod quality;
pub mod rules;
pub mod source;
pub mod uniqueness;

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
use deltalake::parquet::basic::Compression;
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
use profile::{Profiler, RAW_PREFIX, RuleFailure};
use quality::Counts;
use rules::{Compiled, dup_column};
use source::Digests;
use uniqueness::{KeyPass, KeyTracker, TooManyDuplicates};

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
        source: deltalake::DeltaTableError,
    },
    #[error("cannot open the Delta table {path}")]
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
            ValidateError::Rejected { .. } => Exit::Rejected,
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

/// The ingestion_log row being validated.
struct FileRow {
    id: i64,
    dataset: String,
    period: Option<String>,
    source_uri: String,
    file_name: String,
    size: Option<i64>,
    modified: Option<DateTime<Utc>>,
    sha256: Option<String>,
}

/// The file a validation reads, resolved and checked against its ingested fingerprint.
struct Input {
    row: FileRow,
    landed: Landed,
    file: LandedFile,
    format: FileFormat,
}

async fn input(config: &Config, client: &Client, file: &FileRef) -> Result<Input, ValidateError> {
    let row = find_file(config, client, file).await?;
    let ds = config.dataset(&row.dataset).ok_or_else(|| {
        ValidateError::Usage(format!(
            "dataset `{}` is no longer in the config",
            row.dataset
        ))
    })?;
    let landed = Landed::open(&config.resolve(&config.landed_dir))?;
    let file = match landed
        .resolve(row.source_uri.trim_start_matches("file://"), None)
        .await?
    {
        Entry::File(f) => f,
        Entry::Refused { reason, .. } => return Err(ValidateError::Usage(reason)),
    };
    let changed = row.size.is_some_and(|s| s as u64 != file.size)
        || matches!((row.modified, file.modified), (Some(a), Some(b)) if a.timestamp_micros() != b.timestamp_micros());
    if changed {
        return Err(ValidateError::Changed {
            file_id: row.id,
            uri: row.source_uri,
        });
    }
    let format = ds
        .format_for(&file.name)
        .ok_or_else(|| ValidateError::Usage(format!("cannot tell the format of {}", file.name)))?;
    Ok(Input {
        row,
        landed,
        file,
        format,
    })
}

/// `validate --explain`: the plan's checks as SQL; reads only the header, writes nothing.
pub async fn explain(
    config: &Config,
    client: &Client,
    file: &FileRef,
) -> Result<String, ValidateError> {
    let Input {
        row,
        landed,
        file,
        format,
    } = input(config, client, file).await?;
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
    let plan = validated_plan(&ctx, opened.table, ds, &compiled, &row, pass, None, None).await;
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
    let ds = &config.datasets[&row.dataset];
    // Every event of this validation carries its dataset, period and file.
    let span = tracing::Span::current();
    span.record("dataset", row.dataset.as_str());
    span.record("period", row.period.as_deref().unwrap_or_default());
    span.record("file_id", row.id);
    tracing::info!(event = "validating", file = %row.file_name, "validating");
    // Incremental: the keys earlier nights processed (refuses an older night).
    let seen = match (&ds.incremental, &row.period) {
        (Some(_), Some(period)) => Some(manifest::seen(client, &row.dataset, period).await?),
        _ => None,
    };
    let validation_id: i64 = client
        .query_one(
            "INSERT INTO meta.validation_log (ingestion_id, dataset, period, status, started_at)
             VALUES ($1, $2, $3, 'running', $4) RETURNING id",
            &[&row.id, &row.dataset, &row.period, &started_at],
        )
        .await
        .map_err(db("record the validation's start in meta.validation_log"))?
        .get(0);
    let repeated = keys_repeated_last_time(client, &row.dataset).await?;
    let result = async {
        let mut checked = check(config, ds, &input, seen, repeated).await?;
        let report = checked.report(validation_id, ds, row);
        persist(client, ds, &input, &mut checked, &report, started).await?;
        Ok::<_, ValidateError>(report)
    }
    .await;
    let report = match result {
        Ok(done) => done,
        Err(e) => {
            // Best effort: the row says what went wrong; without it, `running`
            // stays behind and says the same (the previous verdict stays in force).
            let text = crate::exit::report(&e);
            if let Err(mark) = client
                .execute(
                    "UPDATE meta.validation_log
                        SET status = 'error', error = $2, finished_at = now(), duration_ms = $3
                      WHERE id = $1",
                    &[
                        &validation_id,
                        &text,
                        &(started.elapsed().as_millis() as i64),
                    ],
                )
                .await
            {
                tracing::warn!(event = "validation_log_failed", validation_id, error = %mark, "could not mark the validation as failed");
            }
            tracing::error!(event = "validation_error", validation_id, error = %text, "validation failed");
            return Err(e);
        }
    };
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
    Ok(report)
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
    let Input {
        row,
        landed,
        file,
        format,
    } = input;
    let compiled = rules::compile(ds);
    // `ctx` writes the Delta tables here; `planner` reads and checks the rows,
    // here or on a Ballista cluster.
    let ctx = crate::context::session(config.limits.memory_bytes);
    let planner = match &config.engine {
        crate::config::Engine::InProcess => ctx.clone(),
        engine => crate::context::planner(engine, config.limits.memory_bytes)
            .await
            .map_err(|source| ValidateError::Engine {
                dataset: row.dataset.clone(),
                step: "connecting to the Ballista scheduler",
                source,
            })?,
    };
    let mut counts = Counts {
        declared_columns: ds.columns.len(),
        ..Counts::default()
    };
    let mut profiler = Profiler::new(ds, &compiled.checks);
    let mut versions = (None, None);
    let mut duplicate_check = "none";
    let digests = Digests::default();
    let mut manifest = seen.is_some().then(manifest::Collector::default);
    let incremental = seen
        .map(Arc::new)
        .zip(ds.incremental.as_ref().map(|i| i.changed_rows));
    let engine = |step| {
        move |source| ValidateError::Engine {
            dataset: row.dataset.clone(),
            step,
            source,
        }
    };
    let expected = row.sha256.clone();
    let opened = open_source(
        landed,
        file,
        ds,
        *format,
        &config.limits,
        digests.clone(),
        expected,
    )
    .await?;
    match opened {
        Err(parse_error) => counts.parse_error = Some(parse_error),
        Ok(opened) => {
            counts.schema_failures = opened.missing.clone();
            // The key set of an in-pass check (with the room to sort it) may
            // take a quarter of the pool, as may the duplicated keys a pre-pass
            // collects: the rest is the plan's.
            let (set_budget, dup_budget) = (
                config.limits.memory_bytes / 4,
                config.limits.memory_bytes / 4,
            );
            // A pre-pass's key set may take half: no rule plan runs beside it.
            let room = PrePassRoom {
                keys: config.limits.memory_bytes / 2,
                duplicates: dup_budget,
                rows: opened.rows_estimate,
                in_process: config.engine == crate::config::Engine::InProcess,
            };
            let mut pass = KeyPass::choose(compiled.keys.len(), repeated_last_time);
            if pass == KeyPass::PrePass {
                // Its deliveries repeat keys: a read stopped at the first one is waste.
                tracing::info!(
                    event = "key_pre_pass",
                    "the last validation of {} found repeated keys: reading the keys first",
                    row.dataset
                );
            }
            loop {
                let plan = validated_plan(
                    &planner,
                    opened.table.clone(),
                    ds,
                    &compiled,
                    row,
                    pass,
                    Some(room),
                    incremental.clone(),
                )
                .await;
                let df = match plan {
                    Err(e) => match source::malformed_reason(&e) {
                        Some(reason) => {
                            counts.parse_error = Some(reason);
                            break;
                        }
                        None => return Err(engine("finding duplicated keys")(e)),
                    },
                    Ok(df) => df,
                };
                duplicate_check = pass.name();
                if config.engine != crate::config::Engine::InProcess {
                    // Executors check every complete read against the ingested
                    // sha256 where they read; a mismatch fails the job.
                    let mut read = digests.lock().expect("not poisoned");
                    read.extend(row.sha256.clone());
                }
                let tracker = match pass {
                    KeyPass::InPass => Some(KeyTracker::new(
                        compiled.keys.len(),
                        opened.rows_estimate,
                        &ctx.runtime_env().memory_pool,
                        ctx.runtime_env().disk_manager.clone(),
                        set_budget,
                    )),
                    _ => None,
                };
                let written = match tracker {
                    Some(Err(stop)) => Written::Restart(stop),
                    tracker => {
                        write_outputs(
                            &ctx,
                            df,
                            (ds, row, config),
                            &mut profiler,
                            manifest.as_mut(),
                            tracker.map(|t| t.expect("checked")),
                            &digests,
                        )
                        .await?
                    }
                };
                match written {
                    Written::Versions(c, q) => versions = (c, q),
                    Written::Malformed(e) => counts.parse_error = Some(e),
                    Written::Failed(e) => {
                        return Err(engine("reading and checking the rows")(e));
                    }
                    Written::Changed(read) => {
                        return Err(ValidateError::ChangedWhileRead {
                            file_id: row.id,
                            uri: row.source_uri.clone(),
                            read,
                            ingested: row.sha256.clone().unwrap_or_default(),
                        });
                    }
                    Written::Restart(stop) => {
                        // Nothing was committed: validate again, the exact way.
                        tracing::info!(event = "key_pre_pass", reason = %stop, "{stop}: reading the keys first");
                        pass = KeyPass::PrePass;
                        profiler = Profiler::new(ds, &compiled.checks);
                        manifest = manifest.map(|_| manifest::Collector::default());
                        continue;
                    }
                }
                break;
            }
        }
    }
    if counts.parse_error.is_none() {
        counts.rows = profiler.rows;
        counts.format_rows = profiler.format_rows;
        counts.completeness_rows = profiler.completeness_rows;
        counts.bounds_rows = profiler.bounds_rows;
        counts.uniqueness_rows = profiler.uniqueness_rows;
    } else {
        profiler = Profiler::new(ds, &compiled.checks);
        // Nothing of a malformed file is stored, so none of its keys is processed.
        manifest = manifest.map(|_| manifest::Collector::default());
    }
    let quality = quality::score(&counts, ds.min_quality_score);
    let sha256 = digests.lock().expect("not poisoned").last().cloned();
    Ok(Checked {
        counts,
        profiler,
        quality,
        versions,
        sha256,
        duplicate_check,
        manifest,
    })
}

/// Whether the dataset's last finished validation found a key more than once.
async fn keys_repeated_last_time(client: &Client, dataset: &str) -> Result<bool, ValidateError> {
    let last = client
        .query_opt(
            "SELECT duplicated_rows > 0 FROM meta.validation_log
              WHERE dataset = $1 AND duplicated_rows IS NOT NULL
              ORDER BY id DESC LIMIT 1",
            &[&dataset],
        )
        .await
        .map_err(db("read meta.validation_log"))?;
    Ok(last.is_some_and(|r| r.get(0)))
}

/// Why a (dataset, period) has no accepted file: its latest version was rejected
/// at ingest (exit 3 with the reason), or nothing has arrived (exit 5).
async fn no_accepted_file(
    client: &Client,
    name: &str,
    period: Option<String>,
) -> Result<ValidateError, ValidateError> {
    let rejected = ledger::FileVersion::latest_rejected(client, name, period.as_deref())
        .await
        .map_err(db("read meta.ingestion_log"))?;
    Ok(match rejected {
        Some(f) => ValidateError::Rejected {
            file_id: f.id,
            name: f.file_name,
            reason: f.reason.unwrap_or_default(),
        },
        None => ValidateError::NotArrived {
            dataset: name.to_owned(),
            period,
        },
    })
}

/// The version `file` names: by id, or the ledger's current file.
async fn find_file(
    config: &Config,
    client: &Client,
    file: &FileRef,
) -> Result<FileRow, ValidateError> {
    let version = match file {
        FileRef::Id(id) => ledger::FileVersion::by_id(client, *id)
            .await
            .map_err(db("read meta.ingestion_log"))?
            .ok_or_else(|| {
                ValidateError::Usage(format!("there is no ingested file with id {id}"))
            })?,
        FileRef::Current {
            dataset: name,
            period,
        } => {
            let (_, period) = crate::period::target(config, name, period.as_deref())
                .map_err(ValidateError::Usage)?;
            let period = period.map(|p| p.as_str().to_owned());
            let current = ledger::FileVersion::current(client, name, period.as_deref())
                .await
                .map_err(db("read meta.ingestion_log"))?;
            match current {
                Some(version) => version,
                None => return Err(no_accepted_file(client, name, period).await?),
            }
        }
    };
    if version.status != "accepted" {
        return Err(ValidateError::Rejected {
            file_id: version.id,
            name: version.file_name,
            reason: version.reason.unwrap_or_default(),
        });
    }
    Ok(FileRow {
        id: version.id,
        dataset: version.dataset.unwrap_or_default(),
        period: version.period,
        source_uri: version.source_uri,
        file_name: version.file_name,
        size: version.size_bytes,
        modified: version.modified_at,
        sha256: version.sha256,
    })
}

/// A landed file opened for the plan.
struct Opened {
    table: Arc<dyn TableProvider>,
    /// The declared columns the file lacks.
    missing: Vec<String>,
    /// The header's guess of the row count ([`header::Header::rows_estimate`]).
    rows_estimate: Option<u64>,
}

/// The source over the file; Err(reason) when the file cannot be parsed (or a
/// Parquet type does not fit).
async fn open_source(
    landed: &Landed,
    file: &LandedFile,
    ds: &Dataset,
    format: FileFormat,
    limits: &crate::config::Limits,
    digests: Digests,
    expected_sha256: Option<String>,
) -> Result<Result<Opened, String>, ValidateError> {
    let header = header::read_typed(landed, file, format, ds, limits).await;
    let header = match header {
        Ok(h) => h,
        Err(header::HeaderError::Reject(reason)) => return Ok(Err(reason)),
        Err(header::HeaderError::Io(e)) => return Err(e.into()),
    };
    let spec = source::Spec::new(ds, format, &header.names, &header.types);
    let missing: Vec<String> = ds
        .columns
        .keys()
        .zip(&spec.positions)
        .filter(|(_, p)| p.is_none())
        .map(|(c, _)| c.clone())
        .collect();
    let table = source::table(landed, file, spec, digests, expected_sha256).map_err(|source| {
        ValidateError::Engine {
            dataset: file.name.clone(),
            step: "opening the file",
            source,
        }
    })?;
    Ok(Ok(Opened {
        table,
        missing,
        rows_estimate: header.rows_estimate,
    }))
}

/// The memory a key pre-pass may take, and the header's guess of the rows.
#[derive(Debug, Clone, Copy)]
struct PrePassRoom {
    /// For the fingerprints read so far (the ranged scan's set, spilled past it).
    keys: usize,
    /// For the duplicated ones, which the main pass looks each row's key up in.
    duplicates: usize,
    rows: Option<u64>,
    /// The plan runs here: the keys read by a scan are collected here too
    /// (on a Ballista engine, an aggregate on the executors finds them).
    in_process: bool,
}

/// The validated rows: typed columns, raw copies, `_errors`, lineage.
///
/// Uniqueness ([`uniqueness`]): with [`KeyPass::InPass`] the rows carry each
/// key's fingerprint for the [`uniqueness::KeyTracker`] and no row is flagged
/// (the pass stops at the first key seen twice). With [`KeyPass::PrePass`] a
/// key-only pre-pass finds the duplicated key fingerprints, up to
/// `room.duplicates` bytes (past it the file fails with [`TooManyDuplicates`];
/// every key of 30 million rows repeated ten times takes 52 MB), and the main
/// pass looks each row's up in them ([`rules::repeated_key`]). In process the
/// pre-pass is [`key_scan`] (a local CSV file in byte ranges on every core);
/// on a Ballista engine, or without room for the key set, a DataFusion
/// aggregate over the file (it spills). With `room` None (explain) nothing is
/// run.
#[allow(clippy::too_many_arguments)]
async fn validated_plan(
    ctx: &SessionContext,
    source: Arc<dyn TableProvider>,
    ds: &Dataset,
    compiled: &Compiled,
    row: &FileRow,
    pass: KeyPass,
    room: Option<PrePassRoom>,
    incremental: Option<(Arc<MemTable>, ChangedRows)>,
) -> Result<DataFrame, DataFusionError> {
    // A name, so `--explain` shows `landed_file` rather than an anonymous table
    // (a second pass over the file replaces the first one's).
    ctx.deregister_table("landed_file")?;
    ctx.register_table("landed_file", source.clone())?;
    let typed_key = |c: &String| -> Expr {
        let col = &ds.columns[c];
        rules::typed_value(c, col.ty, col.format.as_deref())
    };
    let all_fingerprint =
        |key: &[String]| rules::key_fingerprint(key.iter().map(typed_key).collect());
    let mut exprs: Vec<Expr> = Vec::new();
    if pass != KeyPass::PrePass {
        let mut df = ctx.table("landed_file").await?;
        for (k, key) in compiled.keys.iter().enumerate() {
            let name = uniqueness::fingerprint_column(k);
            df = df
                .with_column(&name, all_fingerprint(key))?
                .with_column(&dup_column(k), lit(ScalarValue::Boolean(None)))?;
            exprs.push(col(name.as_str()));
        }
        return finish_plan(ctx, df, ds, compiled, row, exprs, incremental);
    }
    // Every key as one fingerprint of its typed values (see
    // [`rules::key_fingerprint`]): the pass groups and looks up 16 bytes a row.
    let fingerprints: Vec<Expr> = compiled.keys.iter().map(|k| all_fingerprint(k)).collect();
    let ranged = match room {
        Some(room) => {
            key_scan::duplicates(
                ctx,
                &source,
                &fingerprints,
                room.rows,
                (room.keys, room.duplicates),
                room.in_process,
            )
            .await?
        }
        None => None,
    };
    let mut df = ctx.table("landed_file").await?;
    for (k, (key, fingerprint)) in compiled.keys.iter().zip(fingerprints).enumerate() {
        let repeated = match (room, &ranged) {
            // explain: the lookup as it would run, without running the pre-pass.
            (None, _) => Vec::new(),
            (Some(_), Some(ranged)) => ranged[k].clone(),
            (Some(room), None) => {
                let dup_name = format!("__d{k}");
                let dups = ctx
                    .read_table(source.clone())?
                    .select(vec![fingerprint.clone().alias(&dup_name)])?
                    .filter(col(dup_name.as_str()).is_not_null())?
                    .aggregate(
                        vec![col(dup_name.as_str())],
                        vec![count(lit(1)).alias("__n")],
                    )?
                    .filter(col("__n").gt(lit(1)))?
                    .select(vec![col(dup_name.as_str())])?;
                collect_within(dups, room.duplicates).await?
            }
        };
        if !repeated.is_empty() {
            tracing::info!(event = "duplicated_keys", key = %key.join(","), duplicated_keys = repeated.len(), "duplicated keys found");
        }
        let flag = match (room, repeated.is_empty()) {
            // No key repeats: no row needs its fingerprint.
            (Some(_), true) => lit(ScalarValue::Boolean(None)),
            _ => rules::repeated_key(repeated, fingerprint),
        };
        df = df.with_column(&dup_column(k), flag)?;
    }
    finish_plan(ctx, df, ds, compiled, row, exprs, incremental)
}

/// The validated rows' columns over `df` (the file's rows with the duplicated
/// keys' flags), after `exprs`.
fn finish_plan(
    ctx: &SessionContext,
    mut df: DataFrame,
    ds: &Dataset,
    compiled: &Compiled,
    row: &FileRow,
    mut exprs: Vec<Expr>,
    incremental: Option<(Arc<MemTable>, ChangedRows)>,
) -> Result<DataFrame, DataFusionError> {
    if let Some((seen, changed_rows)) = incremental {
        df = with_processed(ctx, df, ds, seen, changed_rows)?;
        exprs.extend([
            col(manifest::PK),
            col(manifest::ROW_HASH),
            col(manifest::SKIP),
        ]);
    }
    for (name, typed) in &compiled.typed {
        exprs.push(typed.clone().alias(name));
    }
    for name in ds.columns.keys() {
        // As the source holds it: a native Parquet value becomes text only in a
        // rejected row (formatting every value was a fifth of its validate CPU).
        exprs.push(rules::raw(name).alias(format!("{RAW_PREFIX}{name}")));
    }
    exprs.push(rules::row_errors(&compiled.checks).alias("_errors"));
    exprs.push(col(source::LINE));
    exprs.push(lit(row.id).alias("_ingestion_id"));
    exprs.push(lit(row.period.clone().unwrap_or_default()).alias("_data_period"));
    exprs.push(lit(row.source_uri.clone()).alias("_source_file"));
    df.select(exprs)
}

/// Incremental datasets: each row's key (`_pk`: its typed key values as text,
/// null when one is missing or not of its type), the md5 of its delivered
/// values (`_row_hash`), and `_skip`: an earlier night processed the key (with
/// `changed_rows: append`, only when the values are the same).
fn with_processed(
    ctx: &SessionContext,
    df: DataFrame,
    ds: &Dataset,
    seen: Arc<MemTable>,
    changed_rows: ChangedRows,
) -> Result<DataFrame, DataFusionError> {
    use datafusion::functions::expr_fn::{coalesce, concat_ws, md5};
    use datafusion::logical_expr::{cast, when};
    const SEP: &str = "\u{1f}";
    let key: Vec<Expr> = ds
        .primary_key
        .iter()
        .map(|c| {
            let column = &ds.columns[c];
            cast(
                rules::typed_value(c, column.ty, column.format.as_deref()),
                DataType::Utf8,
            )
        })
        .collect();
    let any_null = key
        .iter()
        .map(|k| k.clone().is_null())
        .reduce(Expr::or)
        .expect("incremental datasets have a primary key");
    let pk = when(any_null, lit(ScalarValue::Utf8(None))).otherwise(concat_ws(lit(SEP), key))?;
    // \u{0} stands for a missing value, which no delivered text contains.
    let values: Vec<Expr> = ds
        .columns
        .keys()
        .map(|c| coalesce(vec![rules::text(c), lit("\u{0}")]))
        .collect();
    let hash = md5(concat_ws(lit(SEP), values));
    let df = df
        .with_column(manifest::PK, pk)?
        .with_column(manifest::ROW_HASH, hash)?;
    // The processed keys are the build side; the snapshot streams through.
    let seen = ctx.read_table(seen)?;
    let df = seen.join_on(
        df,
        JoinType::Right,
        [col(manifest::SEEN_PK).eq(col(manifest::PK))],
    )?;
    let known = col(manifest::SEEN_PK).is_not_null();
    let skip = match changed_rows {
        ChangedRows::Ignore => known,
        ChangedRows::Append => known.and(col(manifest::SEEN_HASH).eq(col(manifest::ROW_HASH))),
    };
    df.with_column(manifest::SKIP, skip)
}

/// The duplicated key fingerprints `df` finds, failing with
/// [`TooManyDuplicates`] once they take more than `budget` bytes.
async fn collect_within(df: DataFrame, budget: usize) -> Result<Vec<i128>, DataFusionError> {
    let mut stream = df.execute_stream().await?;
    let mut found = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let fingerprints = batch.column(0).as_primitive::<Decimal128Type>();
        found.extend(fingerprints.iter().flatten());
        if rules::repeated_key_bytes(found.len()) > budget {
            return Err(DataFusionError::External(Box::new(TooManyDuplicates {
                keys: found.len(),
                budget,
            })));
        }
    }
    Ok(found)
}

/// How the pass over the rows ended. Only `Versions` commits the Delta writes.
enum Written {
    /// The cleaned and quarantine Delta versions written.
    Versions(Option<i64>, Option<i64>),
    /// The input cannot be parsed (a data problem, scored).
    Malformed(String),
    /// A runtime failure (memory, I/O, object store): not a property of the data.
    Failed(DataFusionError),
    /// The bytes read hash to this, not to the ingested sha256.
    Changed(String),
    /// The in-pass uniqueness check stopped (nothing committed): the file needs
    /// a pre-pass.
    Restart(uniqueness::Stop),
}

/// Which columns of the validated rows go to cleaned and to quarantine, and the
/// schemas of the two tables.
struct Outputs {
    clean_idx: Vec<usize>,
    clean_schema: SchemaRef,
    quarantine_idx: Vec<usize>,
    quarantine_schema: SchemaRef,
}

impl Outputs {
    fn of(ds: &Dataset, schema: &Schema) -> Outputs {
        let periodic = ds.period.has_period();
        let pick = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .map(|n| schema.index_of(n).expect("column"))
                .collect()
        };
        let mut clean_cols: Vec<String> = ds.columns.keys().cloned().collect();
        clean_cols.push("_ingestion_id".into());
        let mut quarantine_cols: Vec<String> = ds
            .columns
            .keys()
            .map(|c| format!("{RAW_PREFIX}{c}"))
            .collect();
        quarantine_cols
            .extend(["_errors", "_source_file", source::LINE, "_ingestion_id"].map(String::from));
        if periodic {
            clean_cols.push("_data_period".into());
            quarantine_cols.push("_data_period".into());
        }
        let clean_idx = pick(&clean_cols);
        let quarantine_idx = pick(&quarantine_cols);
        let clean_schema = Arc::new(schema.project(&clean_idx).expect("indices exist"));
        // Quarantine keeps the original column names for its raw text values.
        let quarantine_schema = Arc::new(Schema::new(
            quarantine_idx
                .iter()
                .map(|&i| {
                    let f = schema.field(i);
                    match f.name().strip_prefix(RAW_PREFIX) {
                        Some(name) => Field::new(name, DataType::Utf8, f.is_nullable()),
                        None => Field::new(f.name(), f.data_type().clone(), f.is_nullable()),
                    }
                })
                .collect::<Vec<_>>(),
        ));
        Outputs {
            clean_idx,
            clean_schema,
            quarantine_idx,
            quarantine_schema,
        }
    }
}

/// A digest of a complete read that differs from the ingested sha256, or a note
/// that the file was not read to its end; None when every read saw its bytes.
fn read_mismatch(digests: &Digests, expected: Option<&str>) -> Option<String> {
    let read = digests.lock().expect("not poisoned").clone();
    match (expected, read.is_empty()) {
        (_, true) => Some("(the file was not read to its end)".to_owned()),
        (Some(want), false) => read.iter().find(|d| *d != want).cloned(),
        (None, false) => None,
    }
}

/// Streams the validated rows once: counts them and feeds the cleaned and
/// quarantine writers, and the `tracker` the keys of an in-pass check. Unless
/// the whole file was read and its bytes hash to the ingested sha256
/// (`row.sha256`), or when the tracker stops, both writers are aborted and
/// neither table changes.
async fn write_outputs(
    ctx: &SessionContext,
    df: DataFrame,
    (ds, row, config): (&Dataset, &FileRow, &Config),
    profiler: &mut Profiler,
    mut manifest: Option<&mut manifest::Collector>,
    mut tracker: Option<KeyTracker>,
    digests: &Digests,
) -> Result<Written, ValidateError> {
    let expected_sha256 = &row.sha256;
    let periodic = ds.period.has_period();
    let Outputs {
        clean_idx,
        clean_schema,
        quarantine_idx,
        quarantine_schema,
    } = Outputs::of(ds, df.schema().as_arrow());
    let period = row.period.as_deref().filter(|_| periodic);
    let (clean_tx, clean_write) = start_write(
        ctx,
        &ledger::delta_location(config, "cleaned", &row.dataset),
        clean_schema.clone(),
        period,
        ("cleaned", &unique_columns(ds)),
    )
    .await?;
    let (quar_tx, quar_write) = start_write(
        ctx,
        &ledger::delta_location(config, "quarantine", &row.dataset),
        quarantine_schema.clone(),
        period,
        ("quarantine", &[]),
    )
    .await?;

    let produce = async move {
        let (clean_tx, quar_tx) = (clean_tx, quar_tx);
        let abort = |msg: String| {
            let (c, q) = (clean_tx.clone(), quar_tx.clone());
            async move {
                let _ = c.send(Err(DataFusionError::Execution(msg.clone()))).await;
                let _ = q.send(Err(DataFusionError::Execution(msg))).await;
            }
        };
        let mut stream = match df.execute_stream().await {
            Ok(s) => ahead(s),
            Err(e) => {
                abort(e.to_string()).await;
                return Some(e);
            }
        };
        while let Some(batch) = stream.next().await {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    abort(e.to_string()).await;
                    return Some(e);
                }
            };
            // Every row's key, before incremental drops processed rows.
            if let Some(Err(stop)) = tracker.as_mut().map(|t| t.add(&batch)) {
                abort(stop.to_string()).await;
                return Some(DataFusionError::External(Box::new(stop)));
            }
            // Incremental: rows an earlier night processed are counted and dropped.
            let batch = match manifest.as_deref_mut().map(|m| m.take_new(&batch)) {
                None => batch,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    let e = DataFusionError::External(Box::new(e));
                    abort(e.to_string()).await;
                    return Some(e);
                }
            };
            let bad = profiler.update(&batch);
            let bad_mask = BooleanArray::from(bad);
            if let Some(Err(e)) = manifest.as_deref_mut().map(|m| m.add(&batch, &bad_mask)) {
                let e = DataFusionError::External(Box::new(e));
                abort(e.to_string()).await;
                return Some(e);
            }
            let good_mask = datafusion::arrow::compute::not(&bad_mask).expect("same length");
            let clean =
                filter_record_batch(&batch.project(&clean_idx).expect("indices"), &good_mask)
                    .and_then(|b| b.with_schema(clean_schema.clone()));
            let quar =
                filter_record_batch(&batch.project(&quarantine_idx).expect("indices"), &bad_mask)
                    .and_then(|b| {
                        // Native raw values as text, for the rejected rows only.
                        let columns = b
                            .columns()
                            .iter()
                            .zip(quarantine_schema.fields())
                            .map(|(c, f)| match c.data_type() == f.data_type() {
                                true => Ok(c.clone()),
                                false => datafusion::arrow::compute::cast(c, f.data_type()),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        RecordBatch::try_new(quarantine_schema.clone(), columns)
                    });
            let sent = clean_tx
                .send(clean.map_err(DataFusionError::from))
                .await
                .is_ok()
                & quar_tx
                    .send(quar.map_err(DataFusionError::from))
                    .await
                    .is_ok();
            if !sent {
                // A writer stopped; its error is reported below.
                return None;
            }
        }
        // Keys in two of the tracker's sorted runs: still uncommitted, so restart.
        if let Some(Err(stop)) = tracker.map(KeyTracker::finish) {
            abort(stop.to_string()).await;
            return Some(DataFusionError::External(Box::new(stop)));
        }
        // Every read of the file that reached its end must have seen the ingested bytes;
        // the senders are still open, so a mismatch aborts both writes uncommitted.
        if let Some(digest) = read_mismatch(digests, expected_sha256.as_deref()) {
            abort("the file changed while it was read".into()).await;
            return Some(DataFusionError::External(Box::new(ReadMismatch(digest))));
        }
        None
    };
    let clean_write = async {
        let written = clean_write.await;
        if written.is_ok() {
            crate::fault::point("validate-after-cleaned");
        }
        written
    };
    // The senders move into `produce` and drop when it ends, which ends the writes.
    let (failure, clean_result, quar_result) = tokio::join!(produce, clean_write, quar_write);
    if let Some(e) = failure {
        if let Some(digest) = source::remote_mismatch(&e) {
            return Ok(Written::Changed(digest));
        }
        return Ok(match (source::malformed_reason(&e), e) {
            (_, DataFusionError::External(b)) if b.is::<uniqueness::Stop>() => {
                Written::Restart(*b.downcast::<uniqueness::Stop>().expect("checked"))
            }
            (_, DataFusionError::External(b)) if b.is::<ReadMismatch>() => {
                Written::Changed(b.downcast::<ReadMismatch>().expect("checked").0)
            }
            (Some(reason), _) => Written::Malformed(reason),
            (None, e) => Written::Failed(e),
        });
    }
    let clean = clean_result?;
    let quar = quar_result?;
    crate::fault::point("validate-after-delta");
    Ok(Written::Versions(clean, quar))
}

/// The digest of the bytes read, when it is not the ingested one.
#[derive(Debug, thiserror::Error)]
#[error("the bytes read hash to {0}")]
struct ReadMismatch(String);

/// The plan's batches computed in a task of their own, up to two batches ahead
/// of the loop that counts and splits them: the rule plan and the per-batch work
/// then run on both cores instead of taking turns in one task. Dropping the
/// stream stops the task.
fn ahead(
    mut stream: SendableRecordBatchStream,
) -> impl futures::Stream<Item = Result<RecordBatch, DataFusionError>> + Unpin {
    let (tx, rx) = mpsc::channel(2);
    let task = SpawnedTask::spawn(async move {
        while let Some(batch) = stream.next().await {
            if tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(
        (rx, task),
        |(mut rx, task)| async move { rx.recv().await.map(|batch| (batch, (rx, task))) },
    ))
}

/// A Delta write under way; ends with the version it committed.
type Writer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<i64>, ValidateError>> + Send>>;

/// The columns whose valid values are all different: a one-column primary key
/// and `unique: true` columns.
fn unique_columns(ds: &Dataset) -> Vec<&str> {
    let key = match ds.primary_key.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let unique = ds
        .columns
        .iter()
        .filter(|(_, c)| c.unique)
        .map(|(n, _)| n.as_str());
    key.into_iter().chain(unique).collect()
}

/// delta-rs's Parquet settings (Snappy, arrow-rs defaults) without a dictionary
/// for the `unique` columns: every value of such a column would be interned
/// into a dictionary until it overflows (1 MiB a row group) and is dropped
/// (about 2 % of a narrow file's validate time, for no smaller file).
fn writer_properties(unique: &[&str]) -> WriterProperties {
    unique
        .iter()
        .fold(
            WriterProperties::builder().set_compression(Compression::SNAPPY),
            |b, name| b.set_column_dictionary_enabled(ColumnPath::from(*name), false),
        )
        .build()
}

/// A Delta write of the rows sent on the returned channel: replaces `period`'s
/// partition (or the whole table for period-less datasets) in one commit;
/// `which` names the table in errors, `unique` its columns without repeats.
async fn start_write(
    ctx: &SessionContext,
    location: &ledger::DeltaLocation,
    schema: SchemaRef,
    period: Option<&str>,
    (which, unique): (&'static str, &[&str]),
) -> Result<(mpsc::Sender<Result<RecordBatch, DataFusionError>>, Writer), ValidateError> {
    let path = location.display.clone();
    let table = location
        .open_for_write()
        .await
        .map_err(|source| ValidateError::StageDir {
            path: path.clone(),
            source,
        })?;
    let exists = table.version().is_some();
    // Replacing a period of a table as we created it: our own commit (see
    // delta_commit), without delta-rs's scan of the table for the period's files.
    if let Some(replace) = period
        .filter(|_| exists)
        .and_then(|p| delta_commit::Replace::fits(&table, &schema, p))
    {
        let (tx, rx) = mpsc::channel(2);
        // A task of its own: encoding and compressing the Parquet files runs on
        // another core than the loop that splits the batches (as in delta-rs's
        // write). Dropping the future aborts the task; a write not committed yet
        // then stays uncommitted (its files are orphans for a vacuum).
        let task = SpawnedTask::spawn(
            replace
                .run(rx, writer_properties(unique), which)
                .in_current_span(),
        );
        let fut: Writer = Box::pin(async move {
            let written = task.join_unwind().await.unwrap_or_else(|e| {
                Err(deltalake::DeltaTableError::Generic(format!(
                    "the write was cancelled: {e}"
                )))
            });
            written.map(Some).map_err(|source| ValidateError::Delta {
                which,
                path,
                source,
            })
        });
        return Ok((tx, fut));
    }
    let (tx, provider) = source::channel_table(schema);
    let plan = ctx
        .read_table(provider)
        .map_err(|source| ValidateError::Engine {
            dataset: path.clone(),
            step: "planning the Delta write",
            source,
        })?
        .into_unoptimized_plan();
    // delta-rs plans the write in its own session (it needs its planner
    // extensions); the plan carries our channel table, so that works.
    let mut write = table
        .write(vec![])
        .with_input_plan(plan)
        .with_writer_properties(writer_properties(unique));
    // One partition: the rows come on one channel and hold one period, so
    // DataFusion's round-robin and delta-rs's hash split by period only copied
    // every batch on its way to the one writer that gets them.
    let one_partition = [(
        "datafusion.execution.target_partitions".to_owned(),
        "1".to_owned(),
    )];
    let session = DeltaSessionContext::new_with_session_overrides(&one_partition.into()).map_err(
        |source| ValidateError::Delta {
            which,
            path: path.clone(),
            source,
        },
    )?;
    write = write.with_session_state(Arc::new(session.state()));
    write = match (exists, period) {
        (false, Some(_)) => write
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(["_data_period"]),
        (true, Some(p)) => write
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(col("_data_period").eq(lit(p))),
        (false, None) => write.with_save_mode(SaveMode::Append),
        (true, None) => write.with_save_mode(SaveMode::Overwrite),
    };
    let fut: Writer = Box::pin(async move {
        write
            .await
            .map(|table| table.version().map(|v| v as i64))
            .map_err(|source| ValidateError::Delta {
                which,
                path,
                source,
            })
    });
    Ok((tx, fut))
}

/// The dataset's rules as JSON, for monitoring_file_schema_definition.definition.
fn definition(ds: &Dataset) -> Value {
    let bound = |b: &Option<Bound>| match b {
        Some(Bound::Number(x)) => json!(x),
        Some(Bound::Text(t)) => json!(t),
        None => Value::Null,
    };
    let columns: serde_json::Map<String, Value> = ds
        .columns
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                json!({
                    "type": c.ty.to_string(),
                    "required": c.required,
                    "unique": c.unique,
                    "regex": c.regex,
                    "min": bound(&c.min),
                    "max": bound(&c.max),
                    "allowed": c.allowed.as_ref().map(|a| a.iter().map(|v| v.to_string().trim_matches('\'').to_owned()).collect::<Vec<_>>()),
                    "format": c.format,
                }),
            )
        })
        .collect();
    json!({
        "file_pattern": ds.file_pattern,
        "period": ds.period.to_string(),
        "headers": format!("{:?}", ds.headers).to_lowercase(),
        "primary_key": ds.primary_key,
        "min_quality_score": ds.min_quality_score,
        "columns": columns,
    })
}

/// Writes the verdict into the validation's `running` row and the reporting rows,
/// in one transaction: the commit point of the validation.
async fn persist(
    client: &mut Client,
    ds: &Dataset,
    input: &Input,
    checked: &mut Checked,
    report: &Report,
    started: Instant,
) -> Result<(), ValidateError> {
    let tx = client
        .transaction()
        .await
        .map_err(db("begin a transaction"))?;
    record_verdict(&tx, ds, report, checked, started).await?;
    // The night's keys become processed with the verdict that stores their rows.
    if let (Some(keys), Some(period)) = (checked.manifest.as_mut(), &input.row.period) {
        std::mem::take(keys)
            .write(
                &tx,
                &input.row.dataset,
                period,
                input.row.id,
                report.validation_id,
            )
            .await?;
    }
    let (file_id, run_id) = upsert_run(&tx, ds, input).await?;
    write_quality(&tx, file_id, run_id, checked).await?;
    tx.commit()
        .await
        .map_err(db("commit the validation report"))?;
    Ok(())
}

/// The verdict: the `running` row becomes passed or failed, with its counts and
/// the Delta versions it approves. Fails if another process marked it meanwhile.
async fn record_verdict(
    tx: &tokio_postgres::Transaction<'_>,
    ds: &Dataset,
    report: &Report,
    checked: &Checked,
    started: Instant,
) -> Result<(), ValidateError> {
    let status = if report.passed { "passed" } else { "failed" };
    let duration = started.elapsed().as_millis() as i64;
    let updated = tx
        .execute(
            "UPDATE meta.validation_log
                SET status = $2, rows_in = $3, rows_valid = $4, rows_rejected = $5, score = $6,
                    passed = $7, min_quality_score = $8, cleaned_version = $9,
                    quarantine_version = $10, error = $11, sha256 = $12, finished_at = now(),
                    duration_ms = $13, rows_skipped = $14, duplicate_check = $15,
                    duplicated_rows = $16
              WHERE id = $1 AND status = 'running'",
            &[
                &report.validation_id,
                &status,
                &(report.rows_in as i64),
                &(report.rows_valid as i64),
                &(report.rows_rejected as i64),
                &report.score,
                &report.passed,
                &i32::from(ds.min_quality_score),
                &report.cleaned_version,
                &report.quarantine_version,
                &report.error,
                &checked.sha256,
                &duration,
                &report.rows_skipped.map(|n| n as i64),
                &report.duplicate_check,
                // Unknown when the file could not be parsed.
                &(checked.counts.parse_error.is_none())
                    .then_some(checked.counts.uniqueness_rows as i64),
            ],
        )
        .await
        .map_err(db("write meta.validation_log"))?;
    if updated != 1 {
        return Err(ValidateError::Superseded {
            validation_id: report.validation_id,
        });
    }
    Ok(())
}

/// The reporting rows the quality hangs on: the dataset's schema definition,
/// its monitoring file and the period's run; (monitoring file id, run id).
async fn upsert_run(
    tx: &tokio_postgres::Transaction<'_>,
    ds: &Dataset,
    input: &Input,
) -> Result<(i32, i32), ValidateError> {
    let (row, file) = (&input.row, &input.file);
    let definition_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file_schema_definition (name, description, definition)
             VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                SET description = EXCLUDED.description, definition = EXCLUDED.definition, updated_at = now()
             RETURNING id",
            &[&row.dataset, &ds.description, &definition(ds)],
        )
        .await
        .map_err(db("write reporting.monitoring_file_schema_definition"))?
        .get(0);
    let agency = ds.agency();
    let file_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file (file_name, agency_slug, schema_definition_id)
             VALUES ($1, $2, $3)
             ON CONFLICT (agency_slug, file_name) DO UPDATE SET schema_definition_id = EXCLUDED.schema_definition_id
             RETURNING id",
            &[&row.dataset, &agency, &definition_id],
        )
        .await
        .map_err(db("write reporting.monitoring_file"))?
        .get(0);
    // The run is the window a monitoring-layout key names, else the period's
    // start, else (no periods) the file's modification hour.
    let modified: NaiveDateTime = file.modified.unwrap_or_else(Utc::now).naive_utc();
    let lower: Option<NaiveDateTime> = row
        .period
        .as_deref()
        .and_then(|p| Period::parse(ds.period, p).ok())
        .map(|p| p.start());
    let anchor = file
        .window
        .as_ref()
        .map(|w| w.window)
        .or(lower)
        .unwrap_or(modified);
    let run_date = anchor.date();
    let run_hour = anchor.hour() as i32;
    // Replayed events may validate the same run concurrently: one writer per
    // (monitoring file, run_date, run_hour) until this transaction ends.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('reporting.monitoring_file_run'),
                                      hashtext($1::int::text || ' ' || $2::date::text || ' ' || $3::int::text))",
        &[&file_id, &run_date, &run_hour],
    )
    .await
    .map_err(db("lock the monitoring run"))?;
    let run_id: i32 = tx
        .query_one(
            "INSERT INTO reporting.monitoring_file_run
                (monitoring_file_id, file_last_modified, file_range_lower_limit, file_size, run_date, run_hour)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (monitoring_file_id, run_date, run_hour) DO UPDATE
                SET file_last_modified = EXCLUDED.file_last_modified,
                    file_range_lower_limit = EXCLUDED.file_range_lower_limit,
                    file_size = EXCLUDED.file_size, updated_at = now()
             RETURNING id",
            &[&file_id, &modified, &lower, &(file.size as i64), &run_date, &run_hour],
        )
        .await
        .map_err(db("write reporting.monitoring_file_run"))?
        .get(0);
    Ok((file_id, run_id))
}

/// The run's quality, failed rules, profile, and the file's latest score.
async fn write_quality(
    tx: &tokio_postgres::Transaction<'_>,
    file_id: i32,
    run_id: i32,
    checked: &Checked,
) -> Result<(), ValidateError> {
    let (q, profiler) = (&checked.quality, &checked.profiler);
    let failing = profiler.failing_rules();
    let rules: Value = json!(failing
        .iter()
        .map(|f| json!({"column": f.column, "rule": f.rule, "count": f.count, "message": f.message}))
        .collect::<Vec<_>>());
    let rules = (!failing.is_empty()).then_some(rules);
    let failing = &failing;
    tx.execute(
        "INSERT INTO reporting.monitoring_file_data_quality
            (monitoring_file_run_id, score, passed, metrics, deductions, failed_validation_message, failed_validation_rules)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (monitoring_file_run_id) DO UPDATE
            SET score = EXCLUDED.score, passed = EXCLUDED.passed, metrics = EXCLUDED.metrics,
                deductions = EXCLUDED.deductions, failed_validation_message = EXCLUDED.failed_validation_message,
                failed_validation_rules = EXCLUDED.failed_validation_rules, updated_at = now()",
        &[&run_id, &q.score, &q.passed, &q.metrics, &q.deductions, &q.failed_validation_message, &rules],
    )
    .await
    .map_err(db("write reporting.monitoring_file_data_quality"))?;
    tx.execute(
        "DELETE FROM reporting.monitoring_file_failed_validation WHERE monitoring_file_run_id = $1",
        &[&run_id],
    )
    .await
    .map_err(db("clear reporting.monitoring_file_failed_validation"))?;
    for f in failing {
        tx.execute(
            "INSERT INTO reporting.monitoring_file_failed_validation
                (monitoring_file_run_id, column_name, rule, failed_count, example_values, message)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &run_id,
                &f.column,
                &f.rule,
                &(f.count as i64),
                &json!(f.examples),
                &f.message,
            ],
        )
        .await
        .map_err(db("write reporting.monitoring_file_failed_validation"))?;
    }
    tx.execute(
        "INSERT INTO reporting.monitoring_file_data_profile (monitoring_file_run_id, profile_payload)
         VALUES ($1, $2)
         ON CONFLICT (monitoring_file_run_id) DO UPDATE
            SET profile_payload = EXCLUDED.profile_payload, updated_at = now()",
        &[&run_id, &profiler.profile()],
    )
    .await
    .map_err(db("write reporting.monitoring_file_data_profile"))?;
    tx.execute(
        "UPDATE reporting.monitoring_file SET latest_data_quality_score = $1 WHERE id = $2",
        &[&q.score, &file_id],
    )
    .await
    .map_err(db("update reporting.monitoring_file"))?;
    Ok(())
}
