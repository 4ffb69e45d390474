//! What a command did, typed: each stage's own report, one [`Report`] variant per
//! command. The exit policy, the one sentence a failure reads as, and the facts
//! alerts and metrics need are methods here, so a renamed field is a compile
//! error rather than a silent gap in an alert. JSON is made only at the edge
//! ([`Outcome::to_json`], what `--json` prints).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::exit::Exit;
use crate::ingest::FileStatus;
use crate::run::{StageResult, StageStatus};
use crate::transform::{ModelOutcome, ModelStatus};
use crate::{events, ingest, load_stage, migrate, quarantine, run, status, transform, validate};

/// The result of a command that ran to its end (a rejection or a failed model
/// included: those are results, with their own exit code).
#[derive(Debug)]
pub enum Report {
    Migrate(migrate::Report),
    /// `one_file`: `--file-path` (the result is that file's outcome).
    Ingest {
        report: ingest::Report,
        one_file: bool,
    },
    Validate(validate::Report),
    /// `validate --explain`: the plan as SQL.
    Explain {
        sql: String,
    },
    LoadStage(load_stage::Report),
    CheckCounts(load_stage::Counts),
    Transform(transform::Report),
    Run(run::Report),
    /// `run --plan`: what would be redone; nothing was changed.
    Plan(run::Plan),
    Quarantine(quarantine::Report),
    /// `report`: the page written and the quarantine CSVs beside it.
    Page(PageWritten),
    /// `check` when `status --check` was asked: then problems fail the command.
    Status {
        report: status::Report,
        check: bool,
    },
    Events(events::Report),
    Manifest(ManifestWritten),
    /// `test`: the models' unit tests.
    Test(transform::unit::Report),
    /// `lineage`, and whether to draw it for Graphviz.
    Lineage {
        report: transform::lineage::Report,
        dot: bool,
    },
    /// `diff`: a period's two versions compared by key.
    Diff(crate::diff::Report),
    /// `trace`: a model's rows back to their file lines.
    Trace(transform::trace::Report),
    /// `pipeline cluster …`: a server that stopped cleanly.
    Served,
}

/// What `report` wrote.
#[derive(Debug, Serialize)]
pub struct PageWritten {
    pub page: String,
    pub datasets: usize,
    pub periods: usize,
    pub quarantine_files: Vec<String>,
}

/// What `manifest` wrote.
#[derive(Debug, Serialize)]
pub struct ManifestWritten {
    pub dataset: String,
    pub out: String,
    pub rows: u64,
}

/// One validation a result holds, as alerts and metrics count it.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub dataset: String,
    pub score: Option<i32>,
    pub rows_in: Option<u64>,
    pub rows_rejected: Option<u64>,
}

/// One file (ingest) or object (events) a result holds, by outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCount {
    pub dataset: Option<String>,
    /// `accepted`, `rejected`, `unmatched`, `unchanged` (ingest); an events
    /// outcome (`processed`, `skipped`…).
    pub outcome: &'static str,
    pub score: Option<i32>,
}

impl Report {
    /// The exit code this result asks for.
    pub fn exit(&self) -> Exit {
        match self {
            Report::Ingest { report, one_file } => report.exit(*one_file),
            Report::Validate(r) => r.exit(),
            Report::CheckCounts(c) => c.exit(),
            Report::Transform(r) => r.exit(),
            Report::Run(r) => r.exit(),
            Report::Plan(p) => p.exit(),
            Report::Status { report, check } if *check && report.problem_count() > 0 => {
                Exit::Rejected
            }
            Report::Events(r) => r.exit(),
            Report::Test(r) => r.exit(),
            _ => Exit::Ok,
        }
    }

    /// The text printed for people when `--json` is not given.
    pub fn human(&self) -> Option<String> {
        match self {
            Report::Explain { sql } => Some(format!("{sql}\n")),
            Report::Transform(r) => r.plans().or_else(|| Some(r.table())),
            Report::Run(r) => Some(r.table()),
            Report::Plan(p) => Some(p.table()),
            Report::Quarantine(r) => Some(r.render()),
            Report::Page(p) => Some(format!("{}\n", p.page)),
            Report::Status { report, .. } => Some(report.table()),
            Report::Test(r) => Some(r.text()),
            Report::Lineage { report, dot: true } => Some(report.dot()),
            Report::Lineage { report, .. } => Some(report.text()),
            Report::Diff(r) => Some(r.text()),
            Report::Trace(r) => Some(r.text()),
            _ => None,
        }
    }

    /// The period the result is about, if it names one.
    pub fn period(&self) -> Option<&str> {
        match self {
            Report::Validate(r) => r.period.as_deref(),
            Report::LoadStage(r) => r.period.as_deref(),
            Report::Transform(r) => Some(r.period.as_str()).filter(|p| !p.is_empty()),
            Report::Run(r) => Some(&r.period),
            Report::Plan(p) => Some(&p.period),
            Report::Ingest {
                report,
                one_file: true,
            } => report.files.first().and_then(|f| f.period.as_deref()),
            _ => None,
        }
    }

    /// The dataset a one-dataset result is about.
    pub fn dataset(&self) -> Option<&str> {
        match self {
            Report::Validate(r) => Some(&r.dataset),
            Report::LoadStage(r) => Some(&r.dataset),
            Report::Manifest(m) => Some(&m.dataset),
            Report::Ingest {
                report,
                one_file: true,
            } => report.files.first().and_then(|f| f.dataset.as_deref()),
            _ => None,
        }
    }

    /// Every validation the result holds: `validate`'s own, or each of `run`'s
    /// validate stages that scored a file.
    pub fn validations(&self) -> Vec<Validation> {
        match self {
            Report::Validate(r) => vec![Validation {
                dataset: r.dataset.clone(),
                score: Some(r.score),
                rows_in: Some(r.rows_in),
                rows_rejected: Some(r.rows_rejected),
            }],
            Report::Run(r) => r
                .stages
                .iter()
                .filter(|s| s.stage == "validate")
                .map(|s| Validation {
                    dataset: s.dataset.clone(),
                    score: s.score,
                    rows_in: s.rows,
                    rows_rejected: s.rows_rejected,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The files ingest gated and the objects events handled, by outcome.
    pub fn files(&self) -> Vec<FileCount> {
        match self {
            Report::Ingest { report, .. } => report
                .files
                .iter()
                .map(|f| FileCount {
                    dataset: f.dataset.clone(),
                    outcome: if f.unchanged {
                        "unchanged"
                    } else {
                        f.status.as_str()
                    },
                    score: None,
                })
                .collect(),
            Report::Events(r) => r
                .objects
                .iter()
                .map(|o| FileCount {
                    dataset: o.dataset.clone(),
                    outcome: o.outcome.as_str(),
                    score: o.score,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `run`'s stages.
    pub fn stages(&self) -> &[StageResult] {
        match self {
            Report::Run(r) => &r.stages,
            _ => &[],
        }
    }

    /// `transform`'s models.
    pub fn models(&self) -> &[ModelOutcome] {
        match self {
            Report::Transform(r) => &r.models,
            _ => &[],
        }
    }

    /// One sentence for a result whose exit is a failure (a rejected file, a
    /// failed model, a stage of `run`), so `--json` always carries `error` then.
    pub fn error(&self, command: &str) -> Option<String> {
        let exit = self.exit();
        if matches!(exit, Exit::Ok | Exit::NothingToDo) {
            return None;
        }
        Some(
            self.failure(exit)
                .unwrap_or_else(|| format!("{command} exited {}", exit.code())),
        )
    }

    fn failure(&self, exit: Exit) -> Option<String> {
        match self {
            Report::Ingest { report, one_file } => Some(match report.files.first() {
                Some(f) if *one_file => f.reason.clone()?,
                _ => {
                    let rejected = || {
                        report
                            .files
                            .iter()
                            .filter(|f| f.status == FileStatus::Rejected)
                    };
                    let (n, seen) = (
                        rejected().count(),
                        rejected().filter(|f| f.unchanged).count(),
                    );
                    // `rejected` counts new verdicts; a file rejected before and
                    // still landed is `unchanged` there but still fails the run.
                    let before = match seen {
                        0 => String::new(),
                        s if s == n => " (rejected before and still in the landed zone)".into(),
                        s => format!(" ({s} of them rejected before and still in the landed zone)"),
                    };
                    format!("{n} file(s) rejected{before}; see each file's reason")
                }
            }),
            Report::Validate(r) => Some(r.error.clone().unwrap_or_else(|| {
                format!(
                    "the quality score {} is below min_quality_score {}",
                    r.score, r.min_quality_score
                )
            })),
            Report::CheckCounts(c) => Some(c.reason.clone()),
            Report::Run(r) => r.stages.iter().find(|s| s.exit == exit).map(stage_failure),
            Report::Transform(r) => r
                .models
                .iter()
                .chain(&r.recomputed)
                .find(|m| matches!(m.status, ModelStatus::Failed | ModelStatus::Rejected))
                .map(|m| {
                    format!(
                        "model {} {}: {}",
                        m.model,
                        m.status,
                        m.error.as_deref().unwrap_or("see the log")
                    )
                }),
            Report::Test(r) => Some(format!(
                "{} unit test(s) failed: {}",
                r.failed,
                (r.tests.iter())
                    .filter(|t| !t.passed)
                    .map(|t| format!("{} {}", t.model, t.test))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Report::Status { report, .. } => Some(format!(
                "{} problem(s): see the !! lines",
                report.problem_count()
            )),
            Report::Events(r) => Some(r.failure()),
            Report::Plan(p) => (p.items.iter())
                .find(|i| i.action == "fail")
                .map(|i| format!("{} would fail: {}", i.target, i.reason)),
            _ => None,
        }
    }

    /// The stage's own document, before the common keys are added.
    fn body(&self) -> Value {
        let value = match self {
            Report::Migrate(r) => serde_json::to_value(r),
            Report::Ingest { report, one_file } => match report.files.first() {
                Some(file) if *one_file => serde_json::to_value(file),
                _ => serde_json::to_value(report),
            },
            Report::Validate(r) => serde_json::to_value(r),
            Report::Explain { sql } => Ok(json!({"explained": true, "sql": sql})),
            Report::LoadStage(r) => serde_json::to_value(r),
            Report::CheckCounts(c) => serde_json::to_value(c),
            Report::Transform(r) => serde_json::to_value(r),
            Report::Run(r) => serde_json::to_value(r),
            Report::Plan(p) => serde_json::to_value(p),
            Report::Quarantine(r) => serde_json::to_value(r),
            Report::Page(p) => serde_json::to_value(p),
            Report::Status { report, .. } => serde_json::to_value(report).map(|mut v| {
                v["problems"] = json!(report.problem_count());
                v
            }),
            Report::Events(r) => serde_json::to_value(r),
            Report::Manifest(m) => serde_json::to_value(m),
            Report::Test(r) => serde_json::to_value(r),
            Report::Lineage { report, .. } => serde_json::to_value(report),
            Report::Diff(r) => serde_json::to_value(r),
            Report::Trace(r) => serde_json::to_value(r),
            Report::Served => Ok(json!({})),
        };
        value.expect("reports serialise")
    }
}

fn stage_failure(s: &StageResult) -> String {
    let detail = s
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!("{} {}: {}{detail}", s.dataset, s.stage, s.status.as_str())
}

/// A command that stopped with an error instead of a result.
#[derive(Debug, Clone)]
pub struct Failure {
    pub exit: Exit,
    /// The error and its causes ([`crate::exit::report`]), already redacted.
    pub error: String,
}

/// What one invocation did: its result or its error, and how long it took.
#[derive(Debug)]
pub struct Outcome {
    /// The command's name (`load-stage`, `events replay`…).
    pub command: &'static str,
    pub result: Result<Report, Failure>,
    pub duration: Duration,
}

impl Outcome {
    pub fn exit(&self) -> Exit {
        match &self.result {
            Ok(report) => report.exit(),
            Err(failure) => failure.exit,
        }
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.exit(), Exit::Ok | Exit::NothingToDo)
    }

    /// Why the command failed, when it did.
    pub fn error(&self) -> Option<String> {
        let error = match &self.result {
            Ok(report) => report.error(self.command),
            Err(failure) => Some(failure.error.clone()),
        };
        error.map(|e| crate::redact::text(&e).into_owned())
    }

    pub fn report(&self) -> Option<&Report> {
        self.result.as_ref().ok()
    }

    /// `run`'s stages that did not succeed: failed or rejected.
    pub fn failed_stages(&self) -> Vec<String> {
        self.report()
            .map(Report::stages)
            .unwrap_or_default()
            .iter()
            .filter(|s| matches!(s.status, StageStatus::Failed | StageStatus::Rejected))
            .map(stage_failure)
            .collect()
    }

    /// The document `--json` prints: the stage's report, plus `command`,
    /// `exit_code`, `error` on failure and `duration_ms`.
    pub fn to_json(&self) -> Value {
        let mut value = match &self.result {
            Ok(report) => report.body(),
            Err(_) => json!({}),
        };
        if let Value::Object(map) = &mut value {
            map.insert("command".into(), json!(self.command));
            map.insert("exit_code".into(), json!(self.exit().code()));
            if let Some(error) = self.error() {
                map.insert("error".into(), json!(error));
            }
            if self.result.is_ok() {
                map.insert(
                    "duration_ms".into(),
                    json!(self.duration.as_millis() as u64),
                );
            }
        }
        value
    }
}
