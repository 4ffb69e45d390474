//! `pipeline status`: for every dataset and period, the current file and what
//! each stage made of it, with the ledger checked (file rows = valid + rejected,
//! cleaned rows = stage rows) and the periods that never arrived.

mod deep;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Dataset};
use crate::decision::{Action, Subject};
use crate::exit::Exit;
use crate::ledger::{Attempt, FileVersion, LoadAttempt, ModelSpec, StageState};
use crate::period::Period;

/// The state of one dataset's period.
#[derive(Debug, Default, Serialize)]
pub struct PeriodStatus {
    pub dataset: String,
    pub period: Option<String>,
    pub file_id: Option<i64>,
    pub file_name: Option<String>,
    pub file_status: Option<String>,
    pub ingested_at: Option<DateTime<Utc>>,
    pub validation: Option<String>,
    pub score: Option<i32>,
    pub rows_in: Option<i64>,
    pub rows_valid: Option<i64>,
    pub rows_rejected: Option<i64>,
    pub validated_at: Option<DateTime<Utc>>,
    /// The landed file was gone: the validation whose kept rows were judged
    /// instead (quarantine replay).
    pub replayed_from: Option<i64>,
    /// Only value rules changed since the verdict it amended: its
    /// quarantined rows (and the cleaned rows a changed rule rejects) judged
    /// again, its other cleaned rows kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amended_from: Option<i64>,
    /// With `amended_from`: how many of its cleaned rows a changed rule moved
    /// to quarantine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_withdrawn: Option<i64>,
    /// The latest validation was a re-delivery of the loaded period: what it
    /// changes, by key (counts only; `pipeline diff` shows the keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redelivery: Option<String>,
    pub load: Option<String>,
    pub loaded_at: Option<DateTime<Utc>>,
    pub stage_rows: Option<i64>,
    /// Why `run` would redo this period (new file, changed rules, an unloaded
    /// or older load); None when it is up to date or rejected as it stands.
    pub stale: Option<String>,
    /// Everything that needs a look: failed stages, broken ledgers, stale stages.
    pub problems: Vec<String>,
}

/// A model's period that `run` would redo, and why.
#[derive(Debug, Serialize)]
pub struct StaleModel {
    pub model: String,
    /// None for a model replaced whole.
    pub period: Option<String>,
    pub reason: String,
}

/// A period expected of a dataset that has no accepted file: one between its
/// first and last accepted file, one up to the newest period another dataset
/// of its period kind has, or (`--period`) the period asked for.
#[derive(Debug, Serialize)]
pub struct Gap {
    pub dataset: String,
    pub period: String,
}

#[derive(Debug, Serialize)]
pub struct ModelStatus {
    pub model: String,
    pub period: Option<String>,
    pub status: String,
    pub rows_inserted: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// Its SQL file is gone: the rows above are history, nothing refreshes them.
    pub removed: bool,
    /// What computed (or tried to compute) it: `datafusion 55.2.0/dialect 1`;
    /// None for runs recorded before engines were.
    pub engine: Option<String>,
}

/// The latest result of a model audit that did not pass.
#[derive(Debug, Serialize)]
pub struct FailingAudit {
    pub model: String,
    /// None for a model replaced whole.
    pub period: Option<String>,
    pub audit: String,
    pub severity: String,
    pub failing: i64,
    /// Its model's rows were rolled back (an `error` audit).
    pub blocked: bool,
    pub checked_at: DateTime<Utc>,
}

/// What `status` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub periods: Vec<PeriodStatus>,
    pub gaps: Vec<Gap>,
    pub models: Vec<ModelStatus>,
    /// Audits whose latest result failed (a blocked one also shows as its
    /// model's `rejected` run).
    pub failing_audits: Vec<FailingAudit>,
    /// Model periods that are stale: SQL changed, an input replaced since.
    pub stale_models: Vec<StaleModel>,
}

/// Why `status` could not tell.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Usage(String),
    #[error("the pipeline's tables are missing; run `pipeline migrate` first")]
    NotMigrated(#[source] tokio_postgres::Error),
    #[error("cannot read the pipeline's tables")]
    Db(#[source] tokio_postgres::Error),
}

impl StatusError {
    pub fn exit(&self) -> Exit {
        match self {
            StatusError::Usage(_) | StatusError::NotMigrated(_) => Exit::Usage,
            StatusError::Db(_) => Exit::Failure,
        }
    }
}

fn db(e: tokio_postgres::Error) -> StatusError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
            StatusError::NotMigrated(e)
        }
        _ => StatusError::Db(e),
    }
}

/// `--dataset` must name a dataset and `--period` must be a period of one.
fn check_args(config: &Config, args: &Request) -> Result<(), StatusError> {
    crate::period::check_selection(config, args.dataset.as_deref(), args.period.as_deref())
        .map_err(StatusError::Usage)
}

/// Which datasets and periods `status` shows (all when None).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub period: Option<String>,
    pub dataset: Option<String>,
    /// The models defined now (`schema.name`), to mark those whose SQL file was
    /// removed; None when unknown.
    pub models: Option<std::collections::BTreeSet<String>>,
    /// The models defined now, to tell which of their periods are stale.
    pub specs: Vec<ModelSpec>,
    /// Also read every row and file a period's status rests on ([`deep`]).
    pub deep: bool,
}

/// Reads the state of every (or the selected) dataset and period.
pub async fn run(config: &Config, client: &Client, args: &Request) -> Result<Report, StatusError> {
    check_args(config, args)?;
    let mut periods = Vec::new();
    let mut gaps = Vec::new();
    let newest = newest_periods(config, client).await?;
    for (name, ds) in &config.datasets {
        if args.dataset.as_ref().is_some_and(|d| d != name) {
            continue;
        }
        let files = FileVersion::per_period(client, name).await.map_err(db)?;
        let accepted: Vec<String> = files
            .iter()
            .filter(|f| f.status == "accepted")
            .filter_map(|f| f.period.clone())
            .collect();
        if ds.period.has_period() {
            let upto = match &args.period {
                Some(p) => Period::parse(ds.period, p).ok(),
                None => newest.get(&ds.period).cloned(),
            };
            gaps.extend(
                missing_periods(name, ds, &accepted, upto.as_ref())
                    .into_iter()
                    .filter(|g| args.period.as_ref().is_none_or(|p| *p == g.period)),
            );
        }
        // The cleaned table's head, read once: are the verdicts' rows still there?
        let head = match accepted.is_empty() && ds.period.has_period() {
            true => None,
            false => Some(
                crate::ledger::delta_location(config, "cleaned", name)
                    .head()
                    .await,
            ),
        };
        for f in &files {
            if args.period.is_some() && f.period != args.period {
                continue;
            }
            let subject = Subject {
                config,
                name,
                ds,
                period: f.period.as_deref(),
                head: head.as_ref(),
                counted: None,
            };
            periods.push(period_status(client, subject, f).await?);
        }
    }
    if args.deep {
        deep::check(config, &mut periods).await?;
    }
    let models = model_states(client, args).await?;
    let stale_models = stale_models(client, args, &periods).await?;
    let failing_audits = failing_audits(client, args).await?;
    Ok(Report {
        periods,
        gaps,
        models,
        failing_audits,
        stale_models,
    })
}

/// Periods between the first and last accepted ones that have no accepted file.
fn missing_periods(
    name: &str,
    ds: &Dataset,
    accepted: &[String],
    upto: Option<&Period>,
) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut valid: Vec<Period> = accepted
        .iter()
        .filter_map(|p| Period::parse(ds.period, p).ok())
        .collect();
    valid.sort();
    let last = match (valid.last(), upto) {
        (Some(l), Some(u)) if u > l => Some(u.next()),
        (Some(l), _) => Some(l.clone()),
        (None, Some(u)) => {
            gaps.push(Gap {
                dataset: name.to_owned(),
                period: u.to_string(),
            });
            None
        }
        (None, None) => None,
    };
    if let (Some(first), Some(last)) = (valid.first(), last) {
        let mut p = first.next();
        while p < last {
            if !valid.contains(&p) {
                gaps.push(Gap {
                    dataset: name.to_owned(),
                    period: p.to_string(),
                });
            }
            p = p.next();
        }
    }
    gaps
}

/// The newest period any dataset has an accepted file for, per period kind:
/// what every dataset of that kind is expected to have.
async fn newest_periods(
    config: &Config,
    client: &Client,
) -> Result<BTreeMap<crate::config::PeriodKind, Period>, StatusError> {
    let rows = client
        .query(
            "SELECT dataset, max(period) FROM meta.ingestion_log
              WHERE status = 'accepted' AND period IS NOT NULL GROUP BY dataset",
            &[],
        )
        .await
        .map_err(db)?;
    let mut newest: BTreeMap<crate::config::PeriodKind, Period> = BTreeMap::new();
    for r in rows {
        let (name, period): (String, String) = (r.get(0), r.get(1));
        let Some(ds) = config.datasets.get(&name) else {
            continue;
        };
        if let Ok(p) = Period::parse(ds.period, &period) {
            let slot = newest.entry(ds.period).or_insert_with(|| p.clone());
            if p > *slot {
                *slot = p;
            }
        }
    }
    Ok(newest)
}

impl PeriodStatus {
    /// The latest validation attempt and the problems it shows.
    fn validated(&mut self, v: &Attempt, min_quality_score: u8) {
        self.validation = Some(v.status.clone());
        self.score = v.score;
        (self.rows_in, self.rows_valid, self.rows_rejected) =
            (v.rows_in, v.rows_valid, v.rows_rejected);
        self.validated_at = v.finished_at;
        self.replayed_from = v.replayed_from;
        self.amended_from = v.amended_from;
        self.rows_withdrawn = v.amended_from.map(|_| v.rows_withdrawn.unwrap_or(0));
        self.redelivery = v.redelivery.clone();
        match v.status.as_str() {
            "failed" => self.problems.push(format!(
                "validation failed: score {} below {min_quality_score}",
                self.score.unwrap_or(0),
            )),
            "error" => self.problems.push(format!(
                "validation error (no verdict; the previous one stays in force): {}",
                v.error.as_deref().unwrap_or_default()
            )),
            "running" => self.problems.push(
                "a validation started and has not finished (or its process died); \
                 the previous verdict stays in force: run again"
                    .into(),
            ),
            _ => {}
        }
        if let (Some(i), Some(ok), Some(bad)) = (self.rows_in, self.rows_valid, self.rows_rejected)
            && i != ok + bad
        {
            self.problems.push(format!(
                "ledger broken: {i} file rows ≠ {ok} valid + {bad} rejected"
            ));
        }
    }

    /// The latest load attempt, and its error when it failed.
    fn loaded(&mut self, l: &LoadAttempt) {
        self.load = Some(l.status.clone());
        self.loaded_at = l.finished_at;
        let error = l.error.as_deref().unwrap_or_default();
        match l.status.as_str() {
            "failed" => self.problems.push(format!("load failed: {error}")),
            "refused" => self.problems.push(format!(
                "load refused (stage keeps its earlier rows): {error}"
            )),
            _ => {}
        }
    }
}

/// A re-delivery refused at ingest after `current` was taken in: the earlier
/// version stays in force, so the period looks done while the provider thinks
/// it sent a new file.
async fn refused_redelivery(
    client: &Client,
    name: &str,
    current: &FileVersion,
) -> Result<Option<String>, StatusError> {
    let rejected = FileVersion::latest_rejected(client, name, current.period.as_deref())
        .await
        .map_err(db)?
        .filter(|r| r.last_seen_at > current.last_seen_at);
    Ok(rejected.map(|r| {
        format!(
            "a later delivery, {} (file {}, seen {}), was rejected at ingest: {}; file {} stays current",
            r.file_name,
            r.id,
            r.last_seen_at.format("%Y-%m-%d %H:%M"),
            r.reason.as_deref().unwrap_or("no reason recorded"),
            current.id
        )
    }))
}

/// One (dataset, period) row: its file, latest verdict, latest load, stage rows
/// and the problems they show.
async fn period_status(
    client: &Client,
    subject: Subject<'_>,
    file: &FileVersion,
) -> Result<PeriodStatus, StatusError> {
    let (name, ds) = (subject.name, subject.ds);
    let period = file.period.clone();
    let mut s = PeriodStatus {
        dataset: name.to_owned(),
        period: period.clone(),
        file_id: Some(file.id),
        file_name: Some(file.file_name.clone()),
        file_status: Some(file.status.clone()),
        ingested_at: Some(file.last_seen_at),
        ..PeriodStatus::default()
    };
    if s.file_status.as_deref() == Some("rejected") {
        s.problems.push("the file was rejected at ingest".into());
    } else if let Some(problem) = refused_redelivery(client, name, file).await? {
        s.problems.push(problem);
    }
    // A file whose name carries no valid period belongs to no period:
    // nothing was validated or loaded for it, and the table's rows are
    // not its rows.
    if ds.period.has_period() && period.is_none() {
        return Ok(s);
    }
    let period = period.as_deref();
    if let Some(v) = Attempt::latest(client, name, period).await.map_err(db)? {
        s.validated(&v, ds.min_quality_score);
    }
    if let Some(l) = LoadAttempt::latest(client, name, period)
        .await
        .map_err(db)?
    {
        s.loaded(&l);
    }
    s.stage_rows = Some(
        crate::partition::row_count(client, name, period)
            .await
            .map_err(db)?,
    );
    if s.load.as_deref() == Some("loaded")
        && let (Some(valid), Some(staged)) = (s.rows_valid, s.stage_rows)
        && valid != staged
    {
        s.problems.push(format!(
            "ledger broken: {valid} cleaned rows ≠ {staged} stage rows"
        ));
    }
    if s.file_status.as_deref() == Some("accepted") {
        // What `run` would do here: the one decision, from the ledger.
        let d = crate::decision::decide(client, subject, None)
            .await
            .map_err(db)?;
        match d.action {
            Action::Validate | Action::Load => {
                // Differing counts are reported as a broken ledger above.
                if d.lost.is_some() || !matches!(d.state, StageState::CountsDiffer { .. }) {
                    s.problems.push(format!("stale: {}", d.reason));
                }
                s.stale = Some(d.reason);
            }
            Action::Broken(why) => s.problems.push(why),
            Action::Wait
            | Action::Refused(_)
            | Action::Ingest
            | Action::Rejected
            | Action::Nothing => {}
        }
    }
    Ok(s)
}

/// Each model's periods that `run` would redo: those with a run, and those
/// whose stage inputs hold a load but that never ran.
async fn stale_models(
    client: &Client,
    args: &Request,
    periods: &[PeriodStatus],
) -> Result<Vec<StaleModel>, StatusError> {
    let shown: BTreeSet<String> = periods.iter().filter_map(|p| p.period.clone()).collect();
    // Period → the models stale there of themselves, and why.
    let mut direct: BTreeMap<String, BTreeMap<usize, String>> = BTreeMap::new();
    for (i, spec) in args.specs.iter().enumerate() {
        let ran: Vec<Option<String>> = client
            .query(
                "SELECT DISTINCT period FROM meta.transform_log WHERE model = $1
                   AND ($2::text IS NULL OR period = $2)",
                &[&spec.target, &args.period],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let candidates: BTreeSet<String> = match spec.periodic {
            true => shown
                .iter()
                .cloned()
                .chain(ran.into_iter().flatten())
                .collect(),
            false => shown.iter().next().cloned().into_iter().collect(),
        };
        for p in candidates {
            let Some(state) = spec.state(client, &p).await.map_err(db)? else {
                continue;
            };
            if !state.up_to_date() {
                direct.entry(p).or_default().insert(i, state.to_string());
            }
        }
    }
    // What reads a stale model is redone with it, as `run` does.
    let mut out: Vec<StaleModel> = Vec::new();
    for (p, stale) in direct {
        let keys: BTreeSet<usize> = stale.keys().copied().collect();
        for j in crate::ledger::with_dependants(&args.specs, &keys) {
            let spec = &args.specs[j];
            let model = StaleModel {
                model: spec.target.clone(),
                period: spec.periodic.then(|| p.clone()),
                reason: (stale.get(&j).cloned())
                    .unwrap_or_else(|| "an upstream model re-runs".into()),
            };
            if !out
                .iter()
                .any(|o| o.model == model.model && o.period == model.period)
            {
                out.push(model);
            }
        }
    }
    Ok(out)
}

/// The latest run of each (model, period); `removed` when its SQL file is gone.
async fn model_states(client: &Client, args: &Request) -> Result<Vec<ModelStatus>, StatusError> {
    let models = client
        .query(
            "SELECT DISTINCT ON (model, period) model, period, status, rows_inserted, finished_at, error,
                    engine
               FROM meta.transform_log WHERE $1::text IS NULL OR period = $1
              ORDER BY model, period, id DESC",
            &[&args.period],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let model: String = r.get(0);
            ModelStatus {
                removed: args.models.as_ref().is_some_and(|m| !m.contains(&model)),
                model,
                period: r.get(1),
                status: r.get(2),
                rows_inserted: r.get(3),
                finished_at: r.get(4),
                error: r.get(5),
                engine: r.get(6),
            }
        })
        .collect();
    Ok(models)
}

/// The latest result of each (model, period, audit), where it failed.
async fn failing_audits(client: &Client, args: &Request) -> Result<Vec<FailingAudit>, StatusError> {
    let rows = client
        .query(
            "SELECT model, period, audit, severity, failing, blocked, checked_at FROM (
                SELECT DISTINCT ON (model, period, audit) *
                  FROM reporting.audit_results WHERE $1::text IS NULL OR period = $1
                 ORDER BY model, period, audit, id DESC) latest
              WHERE NOT passed ORDER BY model, period, audit",
            &[&args.period],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| FailingAudit {
            model: r.get(0),
            period: r.get(1),
            audit: r.get(2),
            severity: r.get(3),
            failing: r.get(4),
            blocked: r.get(5),
            checked_at: r.get(6),
        })
        .collect())
}

impl Report {
    /// How many problems the `!!` lines report: each period's problems, each
    /// missing period (gap) and each failed model.
    pub fn problem_count(&self) -> usize {
        let periods: usize = self.periods.iter().map(|p| p.problems.len()).sum();
        let gaps = self.gaps.len();
        let models = self.models.iter().filter(|m| m.error.is_some()).count();
        periods + gaps + models + self.stale_models.len()
    }

    /// The stale model periods, then each model's latest run.
    fn models_table(&self, out: &mut String) {
        let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
        // A stale period with a row in the table says so on that row; one
        // that never ran, here.
        let stale = |model: &str, period: &Option<String>| {
            (self.stale_models.iter()).find(|s| s.model == model && s.period == *period)
        };
        for m in &self.stale_models {
            if self
                .models
                .iter()
                .any(|r| r.model == m.model && r.period == m.period)
            {
                continue;
            }
            out.push_str(&format!(
                "!! stale: {} {}: {}\n",
                m.model,
                m.period.as_deref().unwrap_or("(whole table)"),
                m.reason
            ));
        }
        if !self.models.is_empty() {
            let mut table =
                crate::table::Table::new(&["MODEL", "PERIOD", "STATUS", "ROWS", "ENGINE"], &[3]);
            for m in &self.models {
                table.row(vec![
                    m.model.clone(),
                    m.period.clone().unwrap_or_else(|| "-".into()),
                    match (m.removed, stale(&m.model, &m.period)) {
                        (true, _) => "removed".into(),
                        (false, Some(_)) => format!("{}, stale", m.status),
                        (false, None) => m.status.clone(),
                    },
                    opt(m.rows_inserted),
                    m.engine.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            let mut lines = table.lines().into_iter();
            out.push_str(&format!("\n{}\n", lines.next().unwrap_or_default()));
            for (m, line) in self.models.iter().zip(lines) {
                out.push_str(&line);
                out.push('\n');
                if m.removed {
                    out.push_str(&format!(
                        "  (its SQL file is gone; {} keeps the rows of its last run)\n",
                        m.model
                    ));
                }
                if let Some(e) = &m.error {
                    out.push_str(&format!("  !! {e}\n"));
                }
                if let Some(s) = stale(&m.model, &m.period) {
                    out.push_str(&format!("  !! stale: {}\n", s.reason));
                }
            }
        }
        // Blocking ones are the `rejected` runs above; these committed.
        for a in self.failing_audits.iter().filter(|a| !a.blocked) {
            out.push_str(&format!(
                "warn: audit {} of {} {}: {} failing ({})\n",
                a.audit,
                a.model,
                a.period.as_deref().unwrap_or("(whole table)"),
                a.failing,
                a.severity
            ));
        }
    }

    /// The report as aligned text; problems are marked with `!!`.
    pub fn table(&self) -> String {
        let opt = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
        let mut table = crate::table::Table::new(
            &[
                "DATASET", "PERIOD", "FILE", "VALIDATE", "SCORE", "ROWS", "VALID", "REJECT",
                "LOAD", "STAGE",
            ],
            &[4, 5, 6, 7, 9],
        );
        for p in &self.periods {
            table.row(vec![
                p.dataset.clone(),
                p.period.clone().unwrap_or_else(|| "(none)".into()),
                p.file_name.clone().unwrap_or_else(|| "-".into()),
                p.validation.clone().unwrap_or_else(|| "-".into()),
                p.score.map_or("-".into(), |s| s.to_string()),
                opt(p.rows_in),
                opt(p.rows_valid),
                opt(p.rows_rejected),
                p.load.clone().unwrap_or_else(|| "-".into()),
                opt(p.stage_rows),
            ]);
        }
        // Each period's line, then its problems under it.
        let mut lines = table.lines().into_iter();
        let mut out = format!("{}\n", lines.next().unwrap_or_default());
        for (p, line) in self.periods.iter().zip(lines) {
            out.push_str(&line);
            out.push('\n');
            if let Some(from) = p.replayed_from {
                out.push_str(&format!(
                    "  replayed: the file is gone; validated from the rows kept by validation {from}\n"
                ));
            }
            if let Some(from) = p.amended_from {
                let words = crate::ledger::amended_words(from, p.rows_withdrawn);
                out.push_str(&format!("  {words}\n"));
            }
            if let Some(words) = &p.redelivery {
                out.push_str(&format!("  re-delivery: {words}\n"));
            }
            for problem in &p.problems {
                out.push_str(&format!("  !! {problem}\n"));
            }
        }
        let mut by_dataset: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for g in &self.gaps {
            by_dataset.entry(&g.dataset).or_default().push(&g.period);
        }
        for (d, ps) in by_dataset {
            out.push_str(&format!(
                "!! gaps in {d}: no accepted file for {}\n",
                ps.join(", ")
            ));
        }
        self.models_table(&mut out);
        out
    }
}
