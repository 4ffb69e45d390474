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
use crate::decision::{self, Action, Decision, Listing, Subject};
use crate::exit::Exit;
use crate::landed::{Entry, Landed};
use crate::ledger::Verdict;
use crate::period::Period;
use crate::{db, ingest, load_stage, transform, validate};

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
    /// The command's connections: the run's own below, each load's and the
    /// models' when their turn comes (handed back after each).
    pool: db::Pool,
    client: db::Pooled,
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
        // The run's own, a load's with its COPY streams, and the models'
        // second (they read on one while they write on another).
        let pool = db::Pool::new("pipeline run", 2 + load_stage::copy_streams());
        let client = pool
            .get(&format!("pipeline run {}", label(&periods)))
            .await?;
        let landed = Landed::open(&config.resolve(&config.landed_dir))
            .map_err(ingest::IngestError::from)?
            .remembering_digests();
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
            pool,
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
    let span = tracing::Span::current();
    for (n, period) in periods.iter().enumerate() {
        // What is logged while a period is worked on names that period.
        span.record("period", period.as_str());
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
    span.record("period", label(&periods));
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
        let counted = crate::ledger::StageRows::default();
        let mut c = DatasetRun {
            config: run.config,
            client: &mut run.client,
            pool: &run.pool,
            name,
            ds,
            period: own,
            label: period,
            counted: Some(&counted),
        };
        let listing = Listing {
            landed: &run.landed,
            entries: &run.entries,
        };
        let (stages, ok) = run_dataset(&mut c, listing).await;
        results.extend(stages);
        if !ok {
            unavailable.insert(name.clone());
        }
    }
    let t = transform_stage(run, period, &unavailable).await;
    results.push(t);
    results
}

/// Transform after the datasets: the stale models and their dependants (a
/// model is stale when its SQL changed or an input was replaced since it ran);
/// models reading a dataset that was not loaded are skipped, not failed.
async fn transform_stage(
    run: &Run<'_>,
    period: &str,
    unavailable: &BTreeSet<String>,
) -> StageResult {
    let (config, skipped) = (run.config, &run.skipped);
    let t = Stage::start("*", period, "transform");
    let none = BTreeSet::new();
    let stale = match transform::stale_models(config, &run.client, period, &none, skipped).await {
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
    match transform::run_in(config, &run.pool, &targs, unavailable).await {
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
    /// The run's own connection: validate writes through it too.
    client: &'a mut Client,
    /// The run's pool: the load takes its connections from it.
    pool: &'a db::Pool,
    name: &'a str,
    ds: &'a Dataset,
    /// The dataset's period (None for a full-refresh dataset).
    period: Option<&'a str>,
    /// The run's period, for results and logs.
    label: &'a str,
    /// The stage rows counted after the latest load, kept between the
    /// decisions before each step (None: decided once, `--plan`).
    counted: Option<&'a crate::ledger::StageRows>,
}

impl<'a> DatasetRun<'a> {
    fn stage(&self, stage: &'static str) -> Stage<'a> {
        Stage::start(self.name, self.label, stage)
    }

    fn subject(&self) -> Subject<'a> {
        Subject {
            config: self.config,
            name: self.name,
            ds: self.ds,
            period: self.period,
            head: None,
            counted: self.counted,
        }
    }
}

/// A dataset's three stages, each filled once: by performing it, or, when
/// [`decision::decide`] never asked for it, as unchanged.
#[derive(Default)]
struct Steps {
    ingest: Option<StageResult>,
    validate: Option<StageResult>,
    load: Option<StageResult>,
}

impl Steps {
    fn into_results(self) -> Vec<StageResult> {
        [self.ingest, self.validate, self.load]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Stage `n`'s result: 0 ingest, 1 validate, 2 load.
    fn slot(&mut self, n: usize) -> &mut Option<StageResult> {
        match n {
            0 => &mut self.ingest,
            1 => &mut self.validate,
            _ => &mut self.load,
        }
    }

    /// The stage a failure to read the ledger is reported on: the first not
    /// yet reported.
    fn next(&self) -> &'static str {
        match (&self.ingest, &self.validate) {
            (None, _) => "ingest",
            (Some(_), None) => "validate",
            _ => "load-stage",
        }
    }

    /// The stages the decision did not ask for, up to `upto` (0 ingest, 1
    /// validate, 2 load), reported unchanged from the ledger.
    fn unchanged(&mut self, c: &DatasetRun<'_>, d: &Decision, upto: usize) {
        if self.ingest.is_none() {
            let s = c.stage("ingest");
            let detail = match (&d.entry, &d.current) {
                (None, Some(v)) => format!(
                    "{} is no longer in the landed dir; version {} stays current",
                    v.file_name, v.id
                ),
                (_, v) => v.as_ref().map_or_else(String::new, |v| v.file_name.clone()),
            };
            self.ingest = Some(s.end(StageStatus::Unchanged, Exit::Ok, None, None, Some(detail)));
        }
        let Some(v) = d.verdict.as_ref() else { return };
        if upto >= 1 && self.validate.is_none() {
            let s = c.stage("validate");
            let (status, exit, detail) = match v.passed {
                true => (StageStatus::Unchanged, Exit::Ok, None),
                false => (
                    StageStatus::Rejected,
                    Exit::Rejected,
                    Some("quality below threshold (unchanged file)".to_owned()),
                ),
            };
            let result = s.end(status, exit, Some(v.rows_in as u64), v.score, detail);
            self.validate = Some(result.with_rejected(v.rows_rejected as u64));
        }
        if upto >= 2 && self.load.is_none() && v.passed {
            let s = c.stage("load-stage");
            let rows = Some(v.rows_valid as u64);
            self.load = Some(s.end(StageStatus::Unchanged, Exit::Ok, rows, None, None));
        }
    }
}

/// After performing a step: decide again, or stop (whether stage is usable
/// for the models).
enum Next {
    Again,
    Stop(bool),
}

/// Ingest → validate → load for one dataset, as [`decision::decide`] says:
/// decide, perform that step, decide again (the step changed the ledger),
/// until nothing is left or a step stops the dataset. `run --plan` prints the
/// first decision. Returns (results, usable for transform).
async fn run_dataset(c: &mut DatasetRun<'_>, listing: Listing<'_>) -> (Vec<StageResult>, bool) {
    let mut steps = Steps::default();
    // Ingest, validate, load, and the look that finds nothing left.
    for _ in 0..4 {
        let d = match decision::decide(&*c.client, c.subject(), Some(listing)).await {
            Ok(d) => d,
            Err(e) => {
                let s = c.stage(steps.next());
                let failed = s.end_error(Exit::Failure, "cannot read the ledger", &e);
                steps.load = Some(failed);
                return (steps.into_results(), false);
            }
        };
        if let Next::Stop(usable) = perform(c, listing, d, &mut steps).await {
            return (steps.into_results(), usable);
        }
    }
    (steps.into_results(), false)
}

/// Performs what `d` decided, filling its stage in `steps`.
async fn perform(
    c: &mut DatasetRun<'_>,
    listing: Listing<'_>,
    d: Decision,
    steps: &mut Steps,
) -> Next {
    match d.action.clone() {
        Action::Wait => {
            let s = c.stage("ingest");
            let detail = format!("no landed file for {}", c.period.unwrap_or("this dataset"));
            let missing = s.end(
                StageStatus::Missing,
                Exit::NotArrived,
                None,
                None,
                Some(detail),
            );
            steps.ingest = Some(missing);
            Next::Stop(false)
        }
        Action::Refused(reason) => {
            steps.ingest = Some(match &d.entry {
                // A name no file may have: ingest records the refusal.
                Some(e @ Entry::Refused { .. }) => ingest_step(c, listing.landed, e).await,
                _ => {
                    let s = c.stage("ingest");
                    s.end(
                        StageStatus::Rejected,
                        Exit::Rejected,
                        None,
                        None,
                        Some(reason),
                    )
                }
            });
            Next::Stop(false)
        }
        Action::Ingest => step(c, listing, &d, steps, 0).await,
        Action::Validate => step(c, listing, &d, steps, 1).await,
        Action::Load => step(c, listing, &d, steps, 2).await,
        Action::Rejected => {
            steps.unchanged(c, &d, 1);
            Next::Stop(false)
        }
        Action::Broken(why) => {
            steps.unchanged(c, &d, 0);
            let s = c.stage("validate");
            let failed = s.end(StageStatus::Failed, Exit::Failure, None, None, Some(why));
            steps.validate.get_or_insert(failed);
            Next::Stop(false)
        }
        Action::Nothing => {
            steps.unchanged(c, &d, 2);
            Next::Stop(true)
        }
    }
}

/// Performs step `n` (0 ingest, 1 validate, 2 load) and what the decision
/// did not ask for before it is reported unchanged. Each step runs at most
/// once: when the ledger asks again for one this run did (another process
/// is at work on the period: its validation not finished yet, say), the run
/// goes on from what its own step left, as if the ledger had moved on.
async fn step(
    c: &mut DatasetRun<'_>,
    listing: Listing<'_>,
    d: &Decision,
    steps: &mut Steps,
    n: usize,
) -> Next {
    let Some(n) = (n..3).find(|&i| steps.slot(i).is_none()) else {
        return Next::Stop(true);
    };
    if n > 0 {
        steps.unchanged(c, d, n - 1);
    }
    let result = match n {
        0 => {
            let entry = d.entry.as_ref().expect("ingest decided on a landed entry");
            ingest_step(c, listing.landed, entry).await
        }
        1 => validate_step(c, d).await,
        _ => load_step(c).await,
    };
    let go_on = result.exit == Exit::Ok && result.status != StageStatus::Failed;
    *steps.slot(n) = Some(result);
    if go_on {
        Next::Again
    } else {
        Next::Stop(false)
    }
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

/// Ingests one landed entry.
async fn ingest_step(c: &DatasetRun<'_>, landed: &Landed, entry: &Entry) -> StageResult {
    let s = c.stage("ingest");
    match ingest::ingest_one(c.config, landed, &*c.client, entry.clone()).await {
        Ok(f) if f.accepted() => {
            let status = if f.unchanged {
                StageStatus::Unchanged
            } else {
                StageStatus::Done
            };
            s.end(status, Exit::Ok, None, None, Some(f.file_name))
        }
        Ok(f) => s.end(StageStatus::Rejected, Exit::Rejected, None, None, f.reason),
        Err(e) => s.failed(e.exit(), &e),
    }
}

/// Validates the period again, as decided: the verdict's rows are gone (from
/// the file; they cannot be replayed), or it no longer stands (re-judged on
/// its kept rows when only rules changed and no row changes, else from the
/// file, or by replay when the file is gone and the kept rows can stand in).
async fn validate_step(c: &mut DatasetRun<'_>, d: &Decision) -> StageResult {
    let s = c.stage("validate");
    let Some(v) = d.current.as_ref() else {
        let detail = "no current file to validate".to_owned();
        return s.end(StageStatus::Failed, Exit::Failure, None, None, Some(detail));
    };
    let file = FileAt {
        file_id: v.id,
        file_name: v.file_name.clone(),
        source_uri: v.source_uri.clone(),
        present: d.entry.is_some(),
    };
    if let Some(why) = &d.lost {
        let id = d.verdict.as_ref().map_or(0, |v| v.validation_id);
        tracing::warn!(event = "kept_rows_lost", validation_id = id, reason = %why, "the rows validation {id} approved are gone from the cleaned table: validating again");
        if !file.present {
            let lost = format!("the rows validation {id} approved are gone");
            let replay = format!("they were its only copy ({why})");
            return cannot_revalidate(s, &file, lost, &replay);
        }
        return validate_now(c, &file, s).await;
    }
    judge_again(c, &file, d.verdict.clone(), s).await
}

/// A period whose verdict no longer stands: re-judged on its kept rows when
/// a rule edit changes none of them ([`rejudged`]), else validated again (from
/// the file, or by replay when it is gone and the kept rows can stand in).
async fn judge_again(
    c: &mut DatasetRun<'_>,
    file: &FileAt,
    v: Option<Verdict>,
    s: Stage<'_>,
) -> StageResult {
    let rules = Rules::of(c.ds);
    // Say why it is judged again when the file did not change.
    let changed = (v.as_ref())
        .filter(|v| v.settles(file.file_id))
        .map(|v| v.rules_changed(&rules).join(", "));
    // An edit that changes no row of the period costs no rewrite.
    let s = match (&changed, &v) {
        (Some(keys), Some(v)) => match rejudged(c, v, keys, s).await {
            Ok(result) => return result,
            Err(s) => s,
        },
        _ => s,
    };
    if let Some(changed) = &changed {
        tracing::info!(event = "rules_changed", changed = %changed, "the rules changed since the verdict; validating again");
    }
    if !file.present
        && let Some(why) = decision::replay_refusal(c.ds, v.as_ref(), file.file_id)
    {
        let reason = match &changed {
            Some(keys) => format!("the rules changed since its verdict ({keys})"),
            None => "its verdict is not in force (a validation did not finish)".to_owned(),
        };
        return cannot_revalidate(s, file, reason, &why);
    }
    validate_now(c, file, s).await
}

/// The period judged again on its verdict's kept rows under the new rules
/// ([`validate::replay::rejudge`]): when no row changes, the new verdict keeps
/// the rows, the load and the models (`unchanged`, said so); the stage is
/// handed back when the edit changes something (or cannot be judged so),
/// then the period is validated again as usual.
async fn rejudged<'a>(
    c: &DatasetRun<'_>,
    v: &Verdict,
    changed: &str,
    s: Stage<'a>,
) -> Result<StageResult, Stage<'a>> {
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
    Ok(result.with_rejected(now.rows_rejected as u64))
}

/// The period must be judged again but its file is gone and the rows kept of
/// it cannot stand in for it (`decision::replay_refusal` says why): refused,
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

/// Validates the file (or replays it); the stage's result.
async fn validate_now(c: &mut DatasetRun<'_>, file: &FileAt, s: Stage<'_>) -> StageResult {
    let r = match validate::run(c.config, c.client, &validate::FileRef::Id(file.file_id)).await {
        Ok(r) => r,
        Err(e) => return s.failed(e.exit(), &e),
    };
    let top = (r.top_failing_rules.first())
        .map(|f| format!("top rule: {}.{} ×{}", f.column, f.rule, f.count));
    let detail = match (r.replayed_from, top) {
        (Some(from), top) => Some(format!(
            "replayed from the rows kept by validation {from} (the file is gone){}",
            top.map(|t| format!("; {t}")).unwrap_or_default()
        )),
        (None, top) => match r.amended_from {
            Some(from) => Some(format!(
                "{}{}",
                crate::ledger::amended_words(from, r.rows_withdrawn),
                top.map(|t| format!("; {t}")).unwrap_or_default()
            )),
            None => top,
        },
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
    result.with_rejected(r.rows_rejected)
}

/// Loads the verdict in force into stage, as decided.
async fn load_step(c: &DatasetRun<'_>) -> StageResult {
    let s = c.stage("load-stage");
    let args = load_stage::Request::new(c.name, c.period);
    match load_stage::run_in(c.config, c.pool, &args).await {
        Ok(r) => s.end(
            StageStatus::Done,
            Exit::Ok,
            Some(r.rows_inserted),
            None,
            Some(match (r.rows_appended, r.rows_deleted) {
                (Some(added), 0) => format!(
                    "appended {added} row(s) to the {} the period held (an amended verdict)",
                    r.rows_inserted - added
                ),
                (Some(added), removed) => format!(
                    "deleted {removed} withdrawn row(s) by key and appended {added} of the {} the \
                     period held (an amended verdict)",
                    r.rows_inserted + removed - added
                ),
                (None, removed) => format!("replaced {removed} row(s)"),
            }),
        ),
        Err(e) => s.failed(e.exit(), &e),
    }
}
