//! `pipeline run`: a whole period in one command. For each dataset: ingest the
//! period's landed file, validate it, load it; then transform the period. A
//! dataset stops at its first failing stage while the others go on. Stages whose
//! inputs did not change are skipped, so a second run over the same files does
//! nothing and exits 99.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Dataset, Rules};
use crate::exit::Exit;
use crate::landed::{Entry, Landed};
use crate::ledger::{FileVersion, Kept, Loaded, StageState, Verdict};
use crate::period::Period;
use crate::{db, ingest, load_stage, stage_table, transform, validate};

mod plan;
pub use plan::{Plan, Planned, plan};

/// Why `run` could not start (a stage's own failure is a result, not this).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The landed dir could not be opened or listed.
    #[error(transparent)]
    Landed(#[from] ingest::IngestError),
    /// `--plan` could not read the ledger.
    #[error("cannot {what}")]
    Read {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// `--plan` could not read the models.
    #[error(transparent)]
    Models(#[from] transform::TransformError),
}

impl RunError {
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Usage(_) => Exit::Usage,
            RunError::Db(e) => e.exit(),
            RunError::Landed(e) => e.exit(),
            RunError::Read { .. } => Exit::Failure,
            RunError::Models(e) => e.exit(),
        }
    }
}

/// One stage of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub dataset: String,
    /// The period the stage ran for (the run's, for a full-refresh dataset).
    pub period: String,
    pub stage: &'static str,
    pub status: StageStatus,
    #[serde(rename = "exit_code", serialize_with = "crate::exit::as_code")]
    pub exit: Exit,
    pub rows: Option<u64>,
    /// validate: rows quarantined of `rows`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    pub score: Option<i32>,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

impl StageResult {
    fn with_rejected(mut self, rows: u64) -> StageResult {
        self.rows_rejected = Some(rows);
        self
    }
}

/// How one stage of `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Done,
    /// Nothing changed since the last run: the stage was not repeated.
    Unchanged,
    /// No file has landed for the period.
    Missing,
    Rejected,
    Failed,
    /// transform: every model waited on a dataset that was not loaded.
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Done => "done",
            StageStatus::Unchanged => "unchanged",
            StageStatus::Missing => "missing",
            StageStatus::Rejected => "rejected",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
        }
    }
}

/// What `run` did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The period asked for, or `FROM..TO` for a range.
    pub period: String,
    /// Every period run, in order.
    pub periods: Vec<String>,
    /// Datasets left out because their periods are of another granularity
    /// (a day dataset in a month run); the models reading them are skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_datasets: Vec<String>,
    #[serde(rename = "exit_code", serialize_with = "crate::exit::as_code")]
    pub exit: Exit,
    pub stages: Vec<StageResult>,
}

impl Report {
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// A table per dataset and stage, for people.
    pub fn table(&self) -> String {
        let mut table = crate::table::Table::new(
            &[
                "PERIOD", "DATASET", "STAGE", "STATUS", "ROWS", "SCORE", "MS", "DETAIL",
            ],
            &[4, 5, 6],
        );
        for s in &self.stages {
            table.row(vec![
                s.period.clone(),
                s.dataset.clone(),
                s.stage.to_owned(),
                s.status.as_str().to_owned(),
                s.rows.map_or("-".into(), |r| r.to_string()),
                s.score.map_or("-".into(), |r| r.to_string()),
                s.duration_ms.to_string(),
                s.detail.clone().unwrap_or_default(),
            ]);
        }
        let mut out = table.render();
        if !self.skipped_datasets.is_empty() {
            out.push_str(&format!(
                "left out (periods of another granularity): {}\n",
                self.skipped_datasets.join(", ")
            ));
        }
        out.push_str(&format!("exit code {}\n", self.exit.code()));
        out
    }
}

struct Stage<'a> {
    dataset: &'a str,
    period: &'a str,
    stage: &'static str,
    started: Instant,
    spinner: crate::progress::Spinner,
}

impl<'a> Stage<'a> {
    fn start(dataset: &'a str, period: &'a str, stage: &'static str) -> Stage<'a> {
        tracing::info!(
            event = "stage_started",
            dataset,
            period,
            step = stage,
            "starting"
        );
        Stage {
            dataset,
            period,
            stage,
            started: Instant::now(),
            spinner: crate::progress::Spinner::start(format!("{dataset} {stage}")),
        }
    }

    fn end(
        self,
        status: StageStatus,
        exit: Exit,
        rows: Option<u64>,
        score: Option<i32>,
        detail: Option<String>,
    ) -> StageResult {
        self.spinner
            .finish(if exit == Exit::Ok { "✔" } else { "✘" });
        // Every refusal and failure is an event of its own, with its reason,
        // in both log formats (not only the run table and the exit code).
        let (dataset, period, step) = (self.dataset, self.period, self.stage);
        let why = detail.as_deref().unwrap_or_default();
        match status {
            StageStatus::Failed => {
                tracing::error!(
                    event = "stage_finished",
                    dataset,
                    period,
                    step,
                    status = status.as_str(),
                    exit_code = exit.code(),
                    reason = why,
                    "{step} failed"
                )
            }
            StageStatus::Rejected | StageStatus::Missing => {
                tracing::warn!(
                    event = "stage_finished",
                    dataset,
                    period,
                    step,
                    status = status.as_str(),
                    exit_code = exit.code(),
                    reason = why,
                    "{step} {}",
                    status.as_str()
                )
            }
            _ => {}
        }
        StageResult {
            dataset: self.dataset.to_owned(),
            period: self.period.to_owned(),
            stage: self.stage,
            status,
            exit,
            rows,
            rows_rejected: None,
            score,
            duration_ms: self.started.elapsed().as_millis() as u64,
            detail,
        }
    }

    /// A runtime failure outside a stage's own error (reading meta.*).
    fn end_error(self, exit: Exit, what: &str, e: &tokio_postgres::Error) -> StageResult {
        let detail = format!("{what}: {}", crate::exit::report(e).replace('\n', " "));
        self.end(StageStatus::Failed, exit, None, None, Some(detail))
    }

    /// A stage's own error, with the exit code it asks for.
    fn failed(self, exit: Exit, e: &(dyn std::error::Error + 'static)) -> StageResult {
        let status = if exit == Exit::Rejected {
            StageStatus::Rejected
        } else {
            StageStatus::Failed
        };
        self.end(
            status,
            exit,
            None,
            None,
            Some(crate::exit::report(e).replace('\n', " ")),
        )
    }
}

/// What `run` is asked for: a period or a range of them, optionally one
/// dataset, optionally the acquisition folder to take files from.
#[derive(Debug, Clone)]
pub struct Request {
    /// The period, or the first of the range.
    pub period: String,
    /// The last period of the range (`--to`); None for one period.
    pub to: Option<String>,
    pub dataset: Option<String>,
    pub acq_date: Option<String>,
}

/// What the run's periods share: the datasets taking part, the landed files
/// listed once, and the one connection.
struct Run<'a> {
    config: &'a Config,
    datasets: Vec<Named<'a>>,
    /// Datasets left out: their periods are of another granularity.
    skipped: BTreeSet<String>,
    client: Client,
    landed: Landed,
    entries: Vec<Entry>,
}

/// The datasets `args` selects: the one `--dataset` names, or all.
fn selected<'a>(config: &'a Config, args: &Request) -> Result<Vec<Named<'a>>, RunError> {
    match &args.dataset {
        Some(d) => {
            config.require_dataset(d).map_err(RunError::Usage)?;
            Ok(config.datasets.get_key_value(d).into_iter().collect())
        }
        None => Ok(config.datasets.iter().collect()),
    }
}

/// The periods from `args.period` to `args.to`, checked against every
/// periodic dataset taking part (after [`fitting`], only a dataset named by
/// `--dataset` can misfit).
fn periods(datasets: &[Named<'_>], args: &Request) -> Result<Vec<String>, RunError> {
    needs_period(datasets, args)?;
    let mut kind = None;
    for (name, ds) in datasets.iter().filter(|(_, d)| d.period.has_period()) {
        if let Some(e) = misfit(ds, args) {
            return Err(RunError::Usage(format!("dataset `{name}`: {e}")));
        }
        kind.get_or_insert(ds.period);
    }
    let (Some(to), Some(kind)) = (&args.to, kind) else {
        return Ok(vec![args.period.clone()]);
    };
    let (mut p, last) = (
        Period::parse(kind, &args.period).map_err(|e| RunError::Usage(e.to_string()))?,
        Period::parse(kind, to).map_err(|e| RunError::Usage(e.to_string()))?,
    );
    if p > last {
        return Err(RunError::Usage(format!(
            "--from {} comes after --to {to}",
            args.period
        )));
    }
    let mut out = Vec::new();
    while p <= last {
        if out.len() == MAX_PERIODS {
            return Err(RunError::Usage(format!(
                "--from {} --to {to} spans more than {MAX_PERIODS} periods; run it in parts",
                args.period
            )));
        }
        out.push(p.to_string());
        p = p.next();
    }
    Ok(out)
}

/// The most periods one `run --from/--to` takes: ten years of hours, a
/// century of days; a range past it is a typo more often than a plan.
pub const MAX_PERIODS: usize = 100_000;

/// Without --period only datasets with `period: none` can run: says so when
/// one taking part has periods.
fn needs_period(datasets: &[Named<'_>], args: &Request) -> Result<(), RunError> {
    let periodic: Vec<&str> = (datasets.iter())
        .filter(|(_, d)| d.period.has_period())
        .map(|(n, _)| n.as_str())
        .collect();
    if !args.period.is_empty() || periodic.is_empty() {
        return Ok(());
    }
    Err(RunError::Usage(format!(
        "--period (or --from/--to) is required: {} ha{} periods; without it only datasets with `period: none` run (--dataset NAME)",
        periodic.join(", "),
        if periodic.len() == 1 { "s" } else { "ve" }
    )))
}

/// A dataset and its name, as the config holds them.
type Named<'a> = (&'a String, &'a Dataset);

/// Why `args`'s periods are not periods of `ds` (a day dataset asked for a
/// month), if they are not.
fn misfit(ds: &Dataset, args: &Request) -> Option<crate::period::PeriodError> {
    std::iter::once(&args.period)
        .chain(args.to.as_ref())
        .find_map(|text| Period::parse(ds.period, text).err())
}

/// Without `--dataset`, periodic datasets of another granularity than the
/// period asked for are left out (a month run of a config that also has day
/// datasets runs the month ones) and named; the rest, and every full-refresh
/// dataset, take part. Asked by name, a misfit is a usage error.
fn fitting<'a>(
    datasets: Vec<Named<'a>>,
    args: &Request,
) -> Result<(Vec<Named<'a>>, BTreeSet<String>), RunError> {
    if args.dataset.is_some() {
        return Ok((datasets, BTreeSet::new()));
    }
    needs_period(&datasets, args)?;
    let (fit, misfits): (Vec<_>, Vec<_>) = datasets
        .into_iter()
        .partition(|(_, ds)| !ds.period.has_period() || misfit(ds, args).is_none());
    let periodic = fit.iter().any(|(_, ds)| ds.period.has_period());
    if let (false, Some((name, ds))) = (periodic, misfits.first()) {
        let e = misfit(ds, args).expect("a misfit");
        return Err(RunError::Usage(format!("dataset `{name}`: {e}")));
    }
    let skipped: BTreeSet<String> = misfits.iter().map(|(n, _)| (*n).clone()).collect();
    if !skipped.is_empty() {
        tracing::info!(event = "datasets_skipped", datasets = %skipped.iter().cloned().collect::<Vec<_>>().join(", "), period = %args.period, "left out: their periods are of another granularity");
    }
    Ok((fit, skipped))
}

impl<'a> Run<'a> {
    async fn open(config: &'a Config, args: &Request) -> Result<(Run<'a>, Vec<String>), RunError> {
        let (datasets, skipped) = fitting(selected(config, args)?, args)?;
        let periods = periods(&datasets, args)?;
        let client = db::connect_as(&format!("pipeline run {}", label(&periods))).await?;
        let landed =
            Landed::open(&config.resolve(&config.landed_dir)).map_err(ingest::IngestError::from)?;
        let folder = landed
            .select_folder(args.acq_date.as_deref())
            .await
            .map_err(ingest::IngestError::from)?;
        if let Some(f) = &folder {
            tracing::info!(event = "acq_folder", folder = %f, "reading acquisition folder");
        }
        let entries = landed
            .list(folder.as_deref())
            .await
            .map_err(ingest::IngestError::from)?;
        let run = Run {
            config,
            datasets,
            skipped,
            client,
            landed,
            entries,
        };
        Ok((run, periods))
    }

    /// The datasets of `period`: every periodic one, and the full-refresh ones
    /// in the first period only (they have one state whatever the period).
    fn datasets_of(&self, first: bool) -> Vec<Named<'a>> {
        (self.datasets.iter().copied())
            .filter(|(_, ds)| first || ds.period.has_period())
            .collect()
    }
}

/// `P`, or `FIRST..LAST` for a range.
fn label(periods: &[String]) -> String {
    match periods {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}..{last}"),
    }
}

/// Runs what is stale in each period of `args`, in order: a crashed range run
/// again continues where it stopped, since what finished is no longer stale.
#[tracing::instrument(name = "run", skip_all, fields(stage = "run", period = %args.period))]
pub async fn run(config: &Config, args: &Request) -> Result<Report, RunError> {
    let (mut run, periods) = Run::open(config, args).await?;
    let mut results = Vec::new();
    for (n, period) in periods.iter().enumerate() {
        let progress = (periods.len() > 1).then(|| {
            crate::progress::Spinner::start(format!("period {}/{} {period}", n + 1, periods.len()))
        });
        let stages = run_period(&mut run, period, n == 0).await;
        if let Some(p) = progress {
            p.finish(if overall_exit(&stages) == Exit::NothingToDo {
                "="
            } else {
                "✔"
            });
        }
        results.extend(stages);
    }
    let exit = overall_exit(&results);
    let report = Report {
        period: label(&periods),
        periods,
        skipped_datasets: run.skipped.iter().cloned().collect(),
        exit,
        stages: results,
    };
    tracing::info!(
        event = "run_finished",
        exit_code = exit.code(),
        "run finished"
    );
    Ok(report)
}

/// One period: ingest, validate and load each dataset, then the models.
async fn run_period(run: &mut Run<'_>, period: &str, first: bool) -> Vec<StageResult> {
    let mut results = Vec::new();
    let mut unavailable = run.skipped.clone();
    for (name, ds) in run.datasets_of(first) {
        let own = ds.period.has_period().then_some(period);
        let mut c = DatasetRun {
            config: run.config,
            client: &mut run.client,
            name,
            ds,
            period: own,
            label: period,
        };
        let (stages, ok) = run_dataset(&mut c, &run.landed, &run.entries).await;
        results.extend(stages);
        if !ok {
            unavailable.insert(name.clone());
        }
    }
    let t = transform_stage(run.config, &run.client, period, &unavailable, &run.skipped).await;
    results.push(t);
    results
}

/// Transform after the datasets: the stale models and their dependants (a
/// model is stale when its SQL changed or an input was replaced since it ran);
/// models reading a dataset that was not loaded are skipped, not failed.
async fn transform_stage(
    config: &Config,
    client: &Client,
    period: &str,
    unavailable: &BTreeSet<String>,
    skipped: &BTreeSet<String>,
) -> StageResult {
    let t = Stage::start("*", period, "transform");
    let none = BTreeSet::new();
    let stale = match transform::stale_models(config, client, period, &none, skipped).await {
        Ok(s) => s,
        Err(e) => return t.failed(e.exit(), &e),
    };
    if stale.to_run.is_empty() {
        return t.end(
            StageStatus::Unchanged,
            Exit::Ok,
            None,
            None,
            Some("every model is up to date".into()),
        );
    }
    for (model, why) in &stale.reasons {
        tracing::info!(event = "model_stale", model = %model, period, reason = %why, "stale");
    }
    let targs = transform::Request {
        period: period.to_owned(),
        model: None,
        dry_run: false,
        only: Some(stale.to_run.clone()),
    };
    match transform::run_with(config, &targs, unavailable).await {
        Ok(report) => {
            let rows: u64 = report.models.iter().map(|m| m.rows_inserted).sum();
            let problems: Vec<String> = report
                .models
                .iter()
                .filter(|m| m.status != transform::ModelStatus::Done)
                .map(|m| format!("{} {}", m.model, m.status))
                .collect();
            let done = report
                .models
                .iter()
                .any(|m| m.status == transform::ModelStatus::Done);
            // Models waiting for a rejected dataset are not a new failure: the
            // dataset's own stage already says why.
            let status = match report.exit() {
                Exit::Ok if problems.is_empty() || done => StageStatus::Done,
                Exit::Ok => StageStatus::Skipped,
                // An audit blocked a model's rows, like a gate blocks a file.
                Exit::Rejected => StageStatus::Rejected,
                _ => StageStatus::Failed,
            };
            let detail = format!(
                "{} model(s){}",
                report.models.len(),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("; {}", problems.join(", "))
                }
            );
            t.end(status, report.exit(), Some(rows), None, Some(detail))
        }
        Err(e) => t.failed(e.exit(), &e),
    }
}

/// The run's exit code: the most urgent of its stages' — a broken command or
/// config, a failure, a lock, a rejected file, then a file that has not arrived
/// yet (wait for it); nothing to do when every stage was unchanged.
fn overall_exit(results: &[StageResult]) -> Exit {
    const URGENCY: [Exit; 5] = [
        Exit::Usage,
        Exit::Failure,
        Exit::Locked,
        Exit::Rejected,
        Exit::NotArrived,
    ];
    let unchanged = results.iter().all(|r| r.status == StageStatus::Unchanged);
    (URGENCY.into_iter())
        .find(|e| results.iter().any(|r| r.exit == *e))
        .unwrap_or(if unchanged {
            Exit::NothingToDo
        } else {
            Exit::Ok
        })
}

/// What one dataset's stages share.
struct DatasetRun<'a> {
    config: &'a Config,
    /// The run's one connection: validate writes through it too.
    client: &'a mut Client,
    name: &'a str,
    ds: &'a Dataset,
    /// The dataset's period (None for a full-refresh dataset).
    period: Option<&'a str>,
    /// The run's period, for results and logs.
    label: &'a str,
}

impl<'a> DatasetRun<'a> {
    fn stage(&self, stage: &'static str) -> Stage<'a> {
        Stage::start(self.name, self.label, stage)
    }

    /// The landed file of this dataset and period among `entries` (the last
    /// listed when there are several).
    fn entry<'e>(&self, entries: &'e [Entry]) -> Option<&'e Entry> {
        entries.iter().rfind(|e| {
            let caps = self.ds.pattern().captures(e.name());
            if self.ds.incremental.is_some() {
                // An incremental snapshot's period is its acquisition folder.
                return caps.is_some() && e.acq_date().is_some() && e.acq_date() == self.period;
            }
            match (caps, self.period) {
                (Some(found), Some(p)) => found.name("period").is_some_and(|m| m.as_str() == p),
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
    }
}

/// Ingest → validate → load for one dataset; (results, usable for transform).
/// Each step records its result and says whether the next may run.
async fn run_dataset(
    c: &mut DatasetRun<'_>,
    landed: &Landed,
    entries: &[Entry],
) -> (Vec<StageResult>, bool) {
    let mut out = Vec::new();
    let Some(file) = ingest_step(c, landed, entries, &mut out).await else {
        return (out, false);
    };
    let Some(verdict) = validate_step(c, &file, &mut out).await else {
        return (out, false);
    };
    let usable = load_step(c, &verdict, &mut out).await;
    (out, usable)
}

/// The file a dataset's period is run from: the landed one just ingested or,
/// when the landed dir no longer lists one, the ledger's current version.
struct FileAt {
    file_id: i64,
    file_name: String,
    source_uri: String,
    /// Whether the landed dir lists it now (else only what the pipeline kept is left).
    present: bool,
}

/// Ingest the period's file among the listed ones; None when there is none (and
/// never was) or it was rejected.
async fn ingest_step(
    c: &DatasetRun<'_>,
    landed: &Landed,
    entries: &[Entry],
    out: &mut Vec<StageResult>,
) -> Option<FileAt> {
    let s = c.stage("ingest");
    let Some(entry) = c.entry(entries) else {
        return gone(c, s, out).await;
    };
    match ingest::ingest_one(c.config, landed, &*c.client, entry.clone()).await {
        Ok(f) if f.accepted() => {
            let status = if f.unchanged {
                StageStatus::Unchanged
            } else {
                StageStatus::Done
            };
            out.push(s.end(status, Exit::Ok, None, None, Some(f.file_name.clone())));
            Some(FileAt {
                file_id: f.file_id,
                file_name: f.file_name,
                source_uri: f.source_uri,
                present: true,
            })
        }
        Ok(f) => {
            out.push(s.end(
                StageStatus::Rejected,
                Exit::Rejected,
                None,
                None,
                f.reason.clone(),
            ));
            None
        }
        Err(e) => {
            out.push(s.failed(e.exit(), &e));
            None
        }
    }
}

/// No landed file for the period: it has not arrived, or it arrived, was
/// taken in and has since been moved or expired — then its version stays
/// current and what the pipeline made of it stands.
async fn gone(c: &DatasetRun<'_>, s: Stage<'_>, out: &mut Vec<StageResult>) -> Option<FileAt> {
    match FileVersion::current(&*c.client, c.name, c.period).await {
        Ok(Some(v)) => {
            let detail = format!(
                "{} is no longer in the landed dir; version {} stays current",
                v.file_name, v.id
            );
            out.push(s.end(StageStatus::Unchanged, Exit::Ok, None, None, Some(detail)));
            Some(FileAt {
                file_id: v.id,
                file_name: v.file_name,
                source_uri: v.source_uri,
                present: false,
            })
        }
        Ok(None) => {
            let detail = format!("no landed file for {}", c.period.unwrap_or("this dataset"));
            out.push(s.end(
                StageStatus::Missing,
                Exit::NotArrived,
                None,
                None,
                Some(detail),
            ));
            None
        }
        Err(e) => {
            out.push(s.end_error(Exit::Failure, "cannot read meta.ingestion_log", &e));
            None
        }
    }
}

/// Validate, unless the latest verdict is of this file and no attempt after it
/// was cut off (then the Delta head may hold rows no verdict names); the verdict
/// in force, None when the file failed.
async fn validate_step(
    c: &mut DatasetRun<'_>,
    file: &FileAt,
    out: &mut Vec<StageResult>,
) -> Option<Verdict> {
    let s = c.stage("validate");
    let rules = Rules::of(c.ds);
    match Verdict::latest(&*c.client, c.name, c.period).await {
        Err(e) => {
            out.push(s.end_error(Exit::Failure, "cannot read meta.validation_log", &e));
            None
        }
        Ok(Some(v)) if v.stands(file.file_id, &rules) => {
            match kept_rows(c, &v).await {
                Kept::Intact => {}
                Kept::Lost(why) => {
                    tracing::warn!(event = "kept_rows_lost", validation_id = v.validation_id, reason = %why, "the rows validation {} approved are gone from the cleaned table: validating again", v.validation_id);
                    if !file.present {
                        let lost =
                            format!("the rows validation {} approved are gone", v.validation_id);
                        let replay = format!("they were its only copy ({why})");
                        out.push(cannot_revalidate(s, file, lost, &replay));
                        return None;
                    }
                    return validate_now(c, file, s, out).await;
                }
                Kept::Damaged(why) => {
                    out.push(s.end(
                        StageStatus::Failed,
                        Exit::Failure,
                        None,
                        None,
                        Some(damaged(&why)),
                    ));
                    return None;
                }
                Kept::Unreadable(why) => {
                    let detail = format!("cannot read the cleaned Delta table: {why}; try again");
                    out.push(s.end(StageStatus::Failed, Exit::Failure, None, None, Some(detail)));
                    return None;
                }
            }
            let (status, exit, detail) = match v.passed {
                true => (StageStatus::Unchanged, Exit::Ok, None),
                false => (
                    StageStatus::Rejected,
                    Exit::Rejected,
                    Some("quality below threshold (unchanged file)".to_owned()),
                ),
            };
            let rows = Some(v.rows_in as u64);
            let result = s.end(status, exit, rows, v.score, detail);
            out.push(result.with_rejected(v.rows_rejected as u64));
            v.passed.then_some(v)
        }
        Ok(v) => judge_again(c, file, v, s, out).await,
    }
}

/// A period whose verdict no longer stands: re-judged on its kept rows when
/// a rule edit changes none of them ([`rejudged`]), else validated again (from
/// the file, or by replay when it is gone and the kept rows can stand in).
async fn judge_again(
    c: &mut DatasetRun<'_>,
    file: &FileAt,
    v: Option<Verdict>,
    s: Stage<'_>,
    out: &mut Vec<StageResult>,
) -> Option<Verdict> {
    let rules = Rules::of(c.ds);
    // Say why it is judged again when the file did not change.
    let changed = (v.as_ref())
        .filter(|v| v.settles(file.file_id))
        .map(|v| v.rules_changed(&rules).join(", "));
    // An edit that changes no row of the period costs no rewrite.
    let s = match (&changed, &v) {
        (Some(keys), Some(v)) => match rejudged(c, v, keys, s).await {
            Ok((result, verdict)) => {
                out.push(result);
                return verdict;
            }
            Err(s) => s,
        },
        _ => s,
    };
    if let Some(changed) = &changed {
        tracing::info!(event = "rules_changed", changed = %changed, "the rules changed since the verdict; validating again");
    }
    if !file.present
        && let Some(why) = validate::replay::refusal(c.ds, v.as_ref(), file.file_id)
    {
        let reason = match &changed {
            Some(keys) => format!("the rules changed since its verdict ({keys})"),
            None => "its verdict is not in force (a validation did not finish)".to_owned(),
        };
        out.push(cannot_revalidate(s, file, reason, &why));
        return None;
    }
    validate_now(c, file, s, out).await
}

/// The period judged again on its verdict's kept rows under the new rules
/// ([`validate::replay::rejudge`]): when no row changes, the new verdict keeps
/// the rows, the load and the models (`unchanged`, said so); None when the
/// edit changes something (or cannot be judged so), then the period is
/// validated again as usual (the stage handed back).
async fn rejudged<'a>(
    c: &DatasetRun<'_>,
    v: &Verdict,
    changed: &str,
    s: Stage<'a>,
) -> Result<(StageResult, Option<Verdict>), Stage<'a>> {
    let id = match validate::replay::rejudge(c.config, &*c.client, c.ds, c.name, c.period, v).await
    {
        Ok(Some(id)) => id,
        Ok(None) => return Err(s),
        Err(e) => {
            tracing::warn!(event = "rejudge_failed", error = %crate::exit::report(&e), "could not judge the kept rows under the new rules; validating again");
            return Err(s);
        }
    };
    let Ok(Some(now)) = Verdict::latest(&*c.client, c.name, c.period).await else {
        return Err(s);
    };
    let detail = format!(
        "re-judged under the new rules ({changed}): no row changes; rows, load and models kept (validation {id})"
    );
    let (status, exit) = match now.passed {
        true => (StageStatus::Unchanged, Exit::Ok),
        false => (StageStatus::Rejected, Exit::Rejected),
    };
    let result = s.end(
        status,
        exit,
        Some(now.rows_in as u64),
        now.score,
        Some(detail),
    );
    let result = result.with_rejected(now.rows_rejected as u64);
    Ok((result, now.passed.then_some(now)))
}

/// Whether the rows a passed verdict approved are still in the cleaned table
/// (a failed one is not loaded: nothing to check).
async fn kept_rows(c: &DatasetRun<'_>, v: &Verdict) -> Kept {
    match (v.passed, v.cleaned_version) {
        (true, Some(version)) => {
            let location = crate::ledger::delta_location(c.config, "cleaned", c.name);
            (location.head().await).keeps(version, v.cleaned_table_id.as_deref())
        }
        _ => Kept::Intact,
    }
}

/// What to do about a damaged Delta log.
fn damaged(why: &str) -> String {
    format!(
        "the cleaned Delta table cannot be read: {why}. Its `_delta_log` is damaged; nothing \
         was changed. Move the table aside (its folder, or on S3 its prefix) and run again: \
         run then validates each period again from its landed file (operations.md, \
         \"A damaged or lost stage_dir\")"
    )
}

/// The period must be judged again but its file is gone and the rows kept of
/// it cannot stand in for it (`validate::replay::refusal` says why): refused,
/// naming the file to put back.
fn cannot_revalidate(s: Stage<'_>, file: &FileAt, why: String, replay: &str) -> StageResult {
    let detail = format!(
        "{why}, and re-validating needs {} (file {}), which is no longer in the landed dir \
         ({}); the rows kept of it cannot stand in: {replay}. Put it back and run again",
        file.file_name, file.file_id, file.source_uri
    );
    s.end(
        StageStatus::Rejected,
        Exit::Rejected,
        None,
        None,
        Some(detail),
    )
}

/// Validates the file and returns the verdict it recorded when it passed.
async fn validate_now(
    c: &mut DatasetRun<'_>,
    file: &FileAt,
    s: Stage<'_>,
    out: &mut Vec<StageResult>,
) -> Option<Verdict> {
    let r = match validate::run(c.config, c.client, &validate::FileRef::Id(file.file_id)).await {
        Ok(r) => r,
        Err(e) => {
            out.push(s.failed(e.exit(), &e));
            return None;
        }
    };
    let top = (r.top_failing_rules.first())
        .map(|f| format!("top rule: {}.{} ×{}", f.column, f.rule, f.count));
    let detail = match (r.replayed_from, top) {
        (Some(from), top) => Some(format!(
            "replayed from the rows kept by validation {from} (the file is gone){}",
            top.map(|t| format!("; {t}")).unwrap_or_default()
        )),
        (None, top) => top,
    };
    // A re-delivery says what it changes in the loaded period, by key.
    let detail = match (&r.redelivery, detail) {
        (Some(d), None) => Some(format!("re-delivery: {}", d.words())),
        (Some(d), Some(t)) => Some(format!("re-delivery: {}; {t}", d.words())),
        (None, detail) => detail,
    };
    let (status, exit) = match r.passed {
        true => (StageStatus::Done, Exit::Ok),
        false => (StageStatus::Rejected, Exit::Rejected),
    };
    let result = s.end(status, exit, Some(r.rows_in), Some(r.score), detail);
    out.push(result.with_rejected(r.rows_rejected));
    if !r.passed {
        return None;
    }
    let missing = |detail: String| {
        let s = c.stage("load-stage");
        s.end(StageStatus::Failed, Exit::Failure, None, None, Some(detail))
    };
    match Verdict::latest(&*c.client, c.name, c.period).await {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            out.push(missing(
                "meta.validation_log has no verdict right after validating \
                 (was it changed meanwhile?)"
                    .into(),
            ));
            None
        }
        Err(e) => {
            let s = c.stage("load-stage");
            out.push(s.end_error(Exit::Failure, "cannot read meta.validation_log", &e));
            None
        }
    }
}

/// Load, unless stage holds exactly this verdict's rows; whether stage is
/// usable for the models afterwards.
async fn load_step(c: &DatasetRun<'_>, verdict: &Verdict, out: &mut Vec<StageResult>) -> bool {
    let s = c.stage("load-stage");
    let holds = async {
        let loaded = Loaded::latest(&*c.client, c.name, c.period).await?;
        let rows = stage_table::row_count(&*c.client, c.name, c.period).await?;
        let state = StageState::of(
            Some(verdict.ingestion_id),
            Some(verdict),
            &Rules::of(c.ds),
            loaded.as_ref(),
            verdict.rows_valid,
            rows,
        );
        Ok::<_, tokio_postgres::Error>(state.up_to_date())
    };
    match holds.await {
        Ok(true) => {
            out.push(s.end(
                StageStatus::Unchanged,
                Exit::Ok,
                Some(verdict.rows_valid as u64),
                None,
                None,
            ));
            return true;
        }
        Ok(false) => {}
        // No stage table: load-stage says to run migrate.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
        Err(e) => {
            out.push(s.end_error(Exit::Failure, "cannot read what stage holds", &e));
            return false;
        }
    }
    match load_stage::run(c.config, &load_stage::Request::new(c.name, c.period)).await {
        Ok(r) => {
            out.push(s.end(
                StageStatus::Done,
                Exit::Ok,
                Some(r.rows_inserted),
                None,
                Some(format!("replaced {} row(s)", r.rows_deleted)),
            ));
            true
        }
        Err(e) => {
            out.push(s.failed(e.exit(), &e));
            false
        }
    }
}
