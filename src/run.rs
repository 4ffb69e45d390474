//! `pipeline run`: a whole period in one command. For each dataset: ingest the
//! period's landed file, validate it, load it; then transform the period. A
//! dataset stops at its first failing stage while the others go on. Stages whose
//! inputs did not change are skipped, so a second run over the same files does
//! nothing and exits 99.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Dataset};
use crate::exit::Exit;
use crate::landed::{Entry, Landed};
use crate::ledger::{Loaded, StageState, Verdict};
use crate::period::Period;
use crate::{db, ingest, load_stage, stage_table, transform, validate};

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
}

impl RunError {
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Usage(_) => Exit::Usage,
            RunError::Db(e) => e.exit(),
            RunError::Landed(e) => e.exit(),
        }
    }
}

/// One stage of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub dataset: String,
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
    pub period: String,
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
                "DATASET", "STAGE", "STATUS", "ROWS", "SCORE", "MS", "DETAIL",
            ],
            &[3, 4, 5],
        );
        for s in &self.stages {
            table.row(vec![
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
        out.push_str(&format!("exit code {}\n", self.exit.code()));
        out
    }
}

struct Stage<'a> {
    dataset: &'a str,
    stage: &'static str,
    started: Instant,
    spinner: crate::progress::Spinner,
}

impl<'a> Stage<'a> {
    fn start(dataset: &'a str, stage: &'static str) -> Stage<'a> {
        tracing::info!(event = "stage_started", dataset, step = stage, "starting");
        Stage {
            dataset,
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
        StageResult {
            dataset: self.dataset.to_owned(),
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

/// What `run` is asked for: a period, optionally one dataset, optionally the
/// acquisition folder to take files from.
#[derive(Debug, Clone)]
pub struct Request {
    pub period: String,
    pub dataset: Option<String>,
    pub acq_date: Option<String>,
}

/// Runs every stage for `args.period`.
#[tracing::instrument(name = "run", skip_all, fields(stage = "run", period = %args.period))]
pub async fn run(config: &Config, args: &Request) -> Result<Report, RunError> {
    let datasets: Vec<(&String, &Dataset)> = match &args.dataset {
        Some(d) => {
            let ds = config.require_dataset(d).map_err(RunError::Usage)?;
            vec![(d, ds)]
        }
        None => config.datasets.iter().collect(),
    };
    // The period must fit every periodic dataset taking part.
    for (name, ds) in &datasets {
        if ds.period.has_period() {
            Period::parse(ds.period, &args.period)
                .map_err(|e| RunError::Usage(format!("dataset `{name}`: {e}")))?;
        }
    }
    let mut client = db::connect_as(&format!("pipeline run {}", args.period)).await?;
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

    let mut results = Vec::new();
    let mut loaded_now = false;
    let mut unavailable = BTreeSet::new();
    for (name, ds) in datasets {
        let period = ds.period.has_period().then(|| args.period.clone());
        let (stages, loaded, ok) = run_dataset(
            config,
            &mut client,
            &landed,
            &entries,
            name,
            ds,
            period.as_deref(),
        )
        .await;
        results.extend(stages);
        loaded_now |= loaded;
        if !ok {
            unavailable.insert(name.clone());
        }
    }

    results.push(transform_stage(config, &client, &args.period, loaded_now, &unavailable).await);

    let exit = overall_exit(&results);
    let report = Report {
        period: args.period.clone(),
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

/// Transform after the datasets: skipped when nothing was loaded now and every
/// model already ran for the period; models reading a dataset that was not
/// loaded are skipped, not failed.
async fn transform_stage(
    config: &Config,
    client: &Client,
    period: &str,
    loaded_now: bool,
    unavailable: &BTreeSet<String>,
) -> StageResult {
    let t = Stage::start("*", "transform");
    let needed = loaded_now || !transform_done(config, client, period).await;
    if !needed {
        return t.end(
            StageStatus::Unchanged,
            Exit::Ok,
            None,
            None,
            Some("every model is up to date".into()),
        );
    }
    let targs = transform::Request {
        period: period.to_owned(),
        model: None,
        dry_run: false,
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
    period: Option<&'a str>,
}

/// Ingest → validate → load for one dataset; (results, loaded now, usable for
/// transform). Each step records its result and says whether the next may run.
async fn run_dataset(
    config: &Config,
    client: &mut Client,
    landed: &Landed,
    entries: &[Entry],
    name: &str,
    ds: &Dataset,
    period: Option<&str>,
) -> (Vec<StageResult>, bool, bool) {
    let mut c = DatasetRun {
        config,
        client,
        name,
        ds,
        period,
    };
    let mut out = Vec::new();
    let Some(file) = ingest_step(&c, landed, entries, &mut out).await else {
        return (out, false, false);
    };
    let Some(verdict) = validate_step(&mut c, &file, &mut out).await else {
        return (out, false, false);
    };
    let (loaded_now, usable) = load_step(&c, &verdict, &mut out).await;
    (out, loaded_now, usable)
}

/// Ingest the period's file among the listed ones; None when there is none or
/// it was rejected.
async fn ingest_step(
    c: &DatasetRun<'_>,
    landed: &Landed,
    entries: &[Entry],
    out: &mut Vec<StageResult>,
) -> Option<ingest::FileOutcome> {
    let s = Stage::start(c.name, "ingest");
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            let caps = c.ds.pattern().captures(e.name());
            if c.ds.incremental.is_some() {
                // An incremental snapshot's period is its acquisition folder.
                return caps.is_some() && e.acq_date().is_some() && e.acq_date() == c.period;
            }
            match (caps, c.period) {
                (Some(found), Some(p)) => found.name("period").is_some_and(|m| m.as_str() == p),
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
        .collect();
    let Some(entry) = mine.last() else {
        out.push(s.end(
            StageStatus::Missing,
            Exit::NotArrived,
            None,
            None,
            Some(format!(
                "no landed file for {}",
                c.period.unwrap_or("this dataset")
            )),
        ));
        return None;
    };
    match ingest::ingest_one(c.config, landed, &*c.client, (*entry).clone()).await {
        Ok(f) if f.accepted() => {
            let status = if f.unchanged {
                StageStatus::Unchanged
            } else {
                StageStatus::Done
            };
            out.push(s.end(status, Exit::Ok, None, None, Some(f.file_name.clone())));
            Some(f)
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

/// Validate, unless the latest verdict is of this file and no attempt after it
/// was cut off (then the Delta head may hold rows no verdict names); the verdict
/// in force, None when the file failed.
async fn validate_step(
    c: &mut DatasetRun<'_>,
    file: &ingest::FileOutcome,
    out: &mut Vec<StageResult>,
) -> Option<Verdict> {
    let s = Stage::start(c.name, "validate");
    match Verdict::latest(&*c.client, c.name, c.period).await {
        Err(e) => {
            out.push(s.end_error(Exit::Failure, "cannot read meta.validation_log", &e));
            None
        }
        Ok(Some(v)) if v.settles(file.file_id) => {
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
        Ok(_) => validate_now(c, file, s, out).await,
    }
}

/// Validates the file and returns the verdict it recorded when it passed.
async fn validate_now(
    c: &mut DatasetRun<'_>,
    file: &ingest::FileOutcome,
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
    let detail = (r.top_failing_rules.first())
        .map(|f| format!("top rule: {}.{} ×{}", f.column, f.rule, f.count));
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
        let s = Stage::start(c.name, "load-stage");
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
            let s = Stage::start(c.name, "load-stage");
            out.push(s.end_error(Exit::Failure, "cannot read meta.validation_log", &e));
            None
        }
    }
}

/// Load, unless stage holds exactly this verdict's rows; (loaded now, usable).
async fn load_step(
    c: &DatasetRun<'_>,
    verdict: &Verdict,
    out: &mut Vec<StageResult>,
) -> (bool, bool) {
    let s = Stage::start(c.name, "load-stage");
    let holds = async {
        let loaded = Loaded::latest(&*c.client, c.name, c.period).await?;
        let rows = stage_table::row_count(&*c.client, c.name, c.period).await?;
        let state = StageState::of(
            Some(verdict.ingestion_id),
            Some(verdict),
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
            return (false, true);
        }
        Ok(false) => {}
        Err(e) => {
            out.push(s.end_error(Exit::Failure, "cannot read what stage holds", &e));
            return (false, false);
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
            (true, true)
        }
        Err(e) => {
            out.push(s.failed(e.exit(), &e));
            (false, false)
        }
    }
}

/// Whether every model has a successful run for the period after the last load.
async fn transform_done(config: &Config, client: &Client, period: &str) -> bool {
    let Ok(models) = transform::models::discover(&transform::sql_dir(config)) else {
        return false;
    };
    if models.is_empty() {
        return true;
    }
    let row = client
        .query_one(
            "SELECT count(DISTINCT model) FROM meta.transform_log t
              WHERE t.status = 'done' AND (t.period = $1 OR t.period IS NULL)
                AND t.finished_at >= coalesce((SELECT max(finished_at) FROM meta.load_log WHERE status = 'loaded'), '-infinity')",
            &[&period],
        )
        .await;
    row.map(|r| r.get::<_, i64>(0) as usize >= models.len())
        .unwrap_or(false)
}
