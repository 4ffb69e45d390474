//! What one command did, as Prometheus metrics: written for node_exporter's
//! textfile collector (`--metrics-file`) and pushed to a Pushgateway
//! (`--pushgateway`). They are read off the command's typed [`Outcome`], the
//! same value `--json` prints, so the two can never disagree.
//!
//! Every value describes this invocation (a batch job's last run), so they are
//! gauges, plus one histogram of the quality scores it produced. Exporting is
//! never fatal: a metrics file that cannot be written or a Pushgateway that does
//! not answer is logged, and the command's exit code stands.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};

use crate::exit::Exit;
use crate::outcome::{Outcome, Report};

/// Score buckets: the thresholds people set (`min_quality_score`) fall on these.
const SCORE_BUCKETS: [f64; 8] = [0.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0];

/// Why metrics could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write the metrics file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot push metrics to {url}: {source}")]
    Push {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the Pushgateway at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// The metrics of one command's result.
pub struct Snapshot {
    registry: Registry,
    command: String,
}

struct Families {
    last_run: GaugeVec,
    exit_code: GaugeVec,
    success: GaugeVec,
    failure: GaugeVec,
    duration: GaugeVec,
    files: GaugeVec,
    rows: GaugeVec,
    stages: GaugeVec,
    stage_duration: GaugeVec,
    models: GaugeVec,
    audits: GaugeVec,
    score: HistogramVec,
}

impl Families {
    fn new(registry: &Registry) -> Families {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let score = HistogramVec::new(
            HistogramOpts::new(
                "pipeline_quality_score",
                "Data-quality scores (0-100) of the files validated by this run.",
            )
            .buckets(SCORE_BUCKETS.to_vec()),
            &["dataset"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(score.clone()))
            .expect("registered once");
        Families {
            last_run: gauge(
                "pipeline_last_run_timestamp_seconds",
                "When the command finished (Unix time).",
                &["command"],
            ),
            exit_code: gauge(
                "pipeline_exit_code",
                "The command's exit code (0 ok, 1 failure, 2 usage, 3 rejected, 4 locked, 5 not arrived, 99 nothing to do).",
                &["command"],
            ),
            success: gauge(
                "pipeline_success",
                "1 when the command exited 0 or 99, else 0.",
                &["command"],
            ),
            failure: gauge(
                "pipeline_failure",
                "1 for the kind of failure the command ended with.",
                &["command", "kind"],
            ),
            duration: gauge(
                "pipeline_duration_seconds",
                "How long the command took.",
                &["command"],
            ),
            files: gauge(
                "pipeline_files",
                "Files handled by the command, by dataset and outcome.",
                &["command", "dataset", "outcome"],
            ),
            rows: gauge(
                "pipeline_rows",
                "Rows counted by a stage: in/valid/rejected (validate), inserted/deleted (load-stage, transform).",
                &["dataset", "stage", "kind"],
            ),
            stages: gauge(
                "pipeline_stages",
                "Stages of `run`, by dataset, stage and how they ended.",
                &["dataset", "stage", "status"],
            ),
            stage_duration: gauge(
                "pipeline_stage_duration_seconds",
                "How long each stage of `run` took.",
                &["dataset", "stage"],
            ),
            models: gauge(
                "pipeline_models",
                "Transform models by how they ended.",
                &["status"],
            ),
            audits: gauge(
                "pipeline_audit_failing_rows",
                "Failing rows each model audit found (0: it passed); passed is \"true\" or \"false\" after its threshold.",
                &["model", "audit", "severity", "passed"],
            ),
            score,
        }
    }
}

impl Families {
    /// What the result counts: files by outcome, rows, scores, stages, models.
    fn count(&self, command: &str, report: &Report) {
        for file in report.files() {
            let dataset = file.dataset.as_deref().unwrap_or("none");
            self.files
                .with_label_values(&[command, dataset, file.outcome])
                .inc();
            if let Some(score) = file.score {
                self.score
                    .with_label_values(&[dataset])
                    .observe(f64::from(score));
            }
        }
        if let Report::Validate(v) = report {
            let outcome = if v.passed { "passed" } else { "failed" };
            let dataset = v.dataset.as_str();
            self.files
                .with_label_values(&["validate", dataset, outcome])
                .inc();
            for (kind, n) in [
                ("in", v.rows_in),
                ("valid", v.rows_valid),
                ("rejected", v.rows_rejected),
            ] {
                self.rows
                    .with_label_values(&[dataset, "validate", kind])
                    .set(n as f64);
            }
            self.score
                .with_label_values(&[dataset])
                .observe(f64::from(v.score));
        }
        if let Report::LoadStage(l) = report {
            for (kind, n) in [("inserted", l.rows_inserted), ("deleted", l.rows_deleted)] {
                self.rows
                    .with_label_values(&[l.dataset.as_str(), "load-stage", kind])
                    .set(n as f64);
            }
        }
        for model in report.models() {
            self.models
                .with_label_values(&[model.status.as_str()])
                .inc();
            for (kind, n) in [
                ("inserted", model.rows_inserted),
                ("deleted", model.rows_deleted),
            ] {
                self.rows
                    .with_label_values(&[model.model.as_str(), "transform", kind])
                    .set(n as f64);
            }
            for a in &model.audits {
                let passed = if a.passed { "true" } else { "false" };
                self.audits
                    .with_label_values(&[&model.model, &a.audit, a.severity.as_str(), passed])
                    .set(a.failing as f64);
            }
        }
        for stage in report.stages() {
            let (dataset, name) = (stage.dataset.as_str(), stage.stage);
            self.stages
                .with_label_values(&[dataset, name, stage.status.as_str()])
                .inc();
            self.stage_duration
                .with_label_values(&[dataset, name])
                .set(stage.duration_ms as f64 / 1000.0);
            if let Some(n) = stage.rows {
                self.rows
                    .with_label_values(&[dataset, name, "rows"])
                    .set(n as f64);
            }
            if let Some(score) = stage.score {
                self.score
                    .with_label_values(&[dataset])
                    .observe(f64::from(score));
            }
        }
    }
}

/// The exit code's name, as operators call the failure.
fn failure_kind(exit: Exit) -> &'static str {
    match exit {
        Exit::Failure => "failure",
        Exit::Usage => "usage",
        Exit::Rejected => "rejected",
        Exit::Locked => "locked",
        Exit::NotArrived => "not_arrived",
        Exit::Ok | Exit::NothingToDo => "other",
    }
}

impl Snapshot {
    /// The metrics `outcome` implies, stamped with `finished`.
    pub fn from_outcome(outcome: &Outcome, finished: SystemTime) -> Snapshot {
        let registry = Registry::new();
        let f = Families::new(&registry);
        let command = outcome.command;
        let exit = outcome.exit();
        let cmd = [command];
        let since_epoch = finished.duration_since(UNIX_EPOCH).unwrap_or_default();
        f.last_run
            .with_label_values(&cmd)
            .set(since_epoch.as_secs_f64());
        f.exit_code
            .with_label_values(&cmd)
            .set(f64::from(exit.code()));
        let ok = outcome.succeeded();
        f.success
            .with_label_values(&cmd)
            .set(if ok { 1.0 } else { 0.0 });
        if !ok {
            f.failure
                .with_label_values(&[command, failure_kind(exit)])
                .set(1.0);
        }
        if let Some(report) = outcome.report() {
            f.duration
                .with_label_values(&cmd)
                .set(outcome.duration.as_secs_f64());
            f.count(command, report);
        }
        Snapshot {
            registry,
            command: command.to_owned(),
        }
    }

    /// Prometheus text exposition format (0.0.4), as node_exporter and the
    /// Pushgateway read it.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into memory does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Writes the file whole or not at all (a temporary file renamed over it),
    /// so the textfile collector never reads half a file.
    pub fn write_file(&self, path: &Path) -> Result<(), MetricsError> {
        write_rendered(path, &self.render())
    }

    /// Replaces this command's group on the Pushgateway at `base`
    /// (`PUT <base>/metrics/job/pipeline/command/<command>`).
    pub async fn push(&self, base: &str) -> Result<(), MetricsError> {
        let url = format!(
            "{}/metrics/job/pipeline/command/{}",
            base.trim_end_matches('/'),
            self.command
        );
        let shown = crate::redact::connection_string(&url);
        // reqwest errors print their URL, userinfo included: show ours, redacted.
        let push = |source: reqwest::Error| MetricsError::Push {
            url: shown.clone(),
            source: source.without_url(),
        };
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(push)?
            .put(&url)
            .header("Content-Type", TextEncoder::new().format_type())
            .body(self.render())
            .send()
            .await
            .map_err(push)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(MetricsError::Refused {
            url: shown.clone(),
            status,
            body: response.text().await.unwrap_or_default(),
        })
    }
}

/// Writes and pushes what the options ask for; failures are warnings.
pub async fn export(outcome: &Outcome, file: Option<&Path>, pushgateway: Option<&str>) {
    if file.is_none() && pushgateway.is_none() {
        return;
    }
    let snapshot = Snapshot::from_outcome(outcome, SystemTime::now());
    if let Some(path) = file {
        match crate::blocking::run({
            let (snapshot_text, path) = (snapshot.render(), path.to_owned());
            move || write_rendered(&path, &snapshot_text)
        })
        .await
        {
            Ok(()) => {
                tracing::debug!(event = "metrics_written", path = %path.display(), "metrics written")
            }
            Err(e) => {
                tracing::warn!(event = "metrics_write_failed", error = %e, "metrics not written")
            }
        }
    }
    if let Some(url) = pushgateway {
        match snapshot.push(url).await {
            Ok(()) => tracing::debug!(event = "metrics_pushed", "metrics pushed"),
            Err(e) => {
                tracing::warn!(event = "metrics_push_failed", error = %e, "metrics not pushed")
            }
        }
    }
}

fn write_rendered(path: &Path, text: &str) -> Result<(), MetricsError> {
    let err = |source| MetricsError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{FileOutcome, FileStatus};
    use crate::outcome::Failure;
    use crate::run::{StageResult, StageStatus};
    use crate::transform::{ModelOutcome, ModelStatus};

    fn at(command: &'static str, result: Result<Report, Failure>) -> String {
        let outcome = Outcome {
            command,
            result,
            duration: Duration::from_millis(1500),
        };
        Snapshot::from_outcome(&outcome, UNIX_EPOCH + Duration::from_secs(1_700_000_000)).render()
    }

    fn validation() -> crate::validate::Report {
        crate::validate::Report {
            validation_id: 1,
            file_id: 1,
            dataset: "citizens".into(),
            period: Some("2025-06".into()),
            file_name: "citizens_2025-06.csv".into(),
            rows_in: 10,
            rows_valid: 7,
            rows_rejected: 3,
            rows_skipped: None,
            score: 72,
            passed: false,
            min_quality_score: 80,
            cleaned_version: Some(0),
            quarantine_version: Some(0),
            top_failing_rules: Vec::new(),
            error: None,
            duplicate_check: "none",
            replayed_from: None,
            amended_from: None,
            rows_withdrawn: None,
            redelivery: None,
        }
    }

    fn file(dataset: Option<&str>, status: FileStatus, unchanged: bool) -> FileOutcome {
        FileOutcome {
            file_id: 1,
            dataset: dataset.map(str::to_owned),
            period: None,
            file_name: "f.csv".into(),
            source_uri: "file:///f.csv".into(),
            status,
            unchanged,
            reason: None,
            size_bytes: None,
            sha256: None,
        }
    }

    #[test]
    fn a_validation_becomes_rows_a_score_and_a_file_outcome() {
        let text = at("validate", Ok(Report::Validate(validation())));
        for line in [
            "pipeline_exit_code{command=\"validate\"} 3",
            "pipeline_success{command=\"validate\"} 0",
            "pipeline_failure{command=\"validate\",kind=\"rejected\"} 1",
            "pipeline_duration_seconds{command=\"validate\"} 1.5",
            "pipeline_last_run_timestamp_seconds{command=\"validate\"} 1700000000",
            "pipeline_files{command=\"validate\",dataset=\"citizens\",outcome=\"failed\"} 1",
            "pipeline_rows{dataset=\"citizens\",kind=\"rejected\",stage=\"validate\"} 3",
            "pipeline_quality_score_bucket{dataset=\"citizens\",le=\"70\"} 0",
            "pipeline_quality_score_bucket{dataset=\"citizens\",le=\"80\"} 1",
            "pipeline_quality_score_sum{dataset=\"citizens\"} 72",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn ingest_files_are_counted_by_outcome() {
        let files = vec![
            file(Some("a"), FileStatus::Accepted, false),
            file(Some("a"), FileStatus::Accepted, true),
            file(None, FileStatus::Unmatched, false),
            file(Some("a"), FileStatus::Rejected, false),
            file(Some("a"), FileStatus::Rejected, false),
        ];
        let report = crate::ingest::Report {
            folder: None,
            accepted: 1,
            unchanged: 1,
            rejected: 2,
            unmatched: 1,
            files,
        };
        let text = at(
            "ingest",
            Ok(Report::Ingest {
                report,
                one_file: false,
            }),
        );
        for line in [
            "pipeline_files{command=\"ingest\",dataset=\"a\",outcome=\"rejected\"} 2",
            "pipeline_files{command=\"ingest\",dataset=\"none\",outcome=\"unmatched\"} 1",
            "pipeline_files{command=\"ingest\",dataset=\"a\",outcome=\"unchanged\"} 1",
            "pipeline_failure{command=\"ingest\",kind=\"rejected\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn run_stages_and_transform_models_are_counted_by_status() {
        let stage = |stage, status, rows, score| StageResult {
            dataset: "a".into(),
            period: "2025-06".into(),
            stage,
            status,
            exit: Exit::Ok,
            rows,
            rows_rejected: None,
            score,
            duration_ms: 250,
            detail: None,
        };
        let report = crate::run::Report {
            period: "2025-06".into(),
            periods: vec!["2025-06".into()],
            skipped_datasets: Vec::new(),
            exit: Exit::Ok,
            stages: vec![
                stage("validate", StageStatus::Done, Some(9), Some(96)),
                stage("load-stage", StageStatus::Unchanged, None, None),
            ],
        };
        let text = at("run", Ok(Report::Run(report)));
        for line in [
            "pipeline_stages{dataset=\"a\",stage=\"validate\",status=\"done\"} 1",
            "pipeline_stages{dataset=\"a\",stage=\"load-stage\",status=\"unchanged\"} 1",
            "pipeline_stage_duration_seconds{dataset=\"a\",stage=\"validate\"} 0.25",
            "pipeline_rows{dataset=\"a\",kind=\"rows\",stage=\"validate\"} 9",
            "pipeline_quality_score_count{dataset=\"a\"} 1",
            "pipeline_success{command=\"run\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("pipeline_failure{"), "{text}");

        let model = ModelOutcome {
            model: "mart.x".into(),
            file: "sql/mart/x.sql".into(),
            status: ModelStatus::Done,
            full_refresh: false,
            rows_deleted: 2,
            rows_inserted: 4,
            error: None,
            duration_ms: 3,
            plan: None,
            audits: vec![crate::transform::audits::AuditResult {
                audit: "unique(x)".into(),
                kind: "unique",
                severity: crate::transform::audits::Severity::Warn,
                passed: false,
                failing: 2,
                sample: serde_json::json!([]),
                duration_ms: 1,
            }],
            engine: None,
            schema_change: Vec::new(),
            period: None,
        };
        let report = crate::transform::Report {
            period: "2025-06".into(),
            models: vec![model],
            stale: Vec::new(),
            recomputed: Vec::new(),
        };
        let text = at("transform", Ok(Report::Transform(report)));
        for line in [
            "pipeline_models{status=\"done\"} 1",
            "pipeline_rows{dataset=\"mart.x\",kind=\"inserted\",stage=\"transform\"} 4",
            "pipeline_rows{dataset=\"mart.x\",kind=\"deleted\",stage=\"transform\"} 2",
            "pipeline_audit_failing_rows{audit=\"unique(x)\",model=\"mart.x\",passed=\"false\",severity=\"warn\"} 2",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn event_objects_are_counted_by_outcome_with_their_scores() {
        use crate::events::{ObjectReport, Outcome as Handled};
        let object = |dataset: Option<&str>, outcome, score| ObjectReport {
            bucket: "b".into(),
            key: "k".into(),
            outcome,
            file_id: None,
            dataset: dataset.map(str::to_owned),
            period: None,
            score,
            passed: None,
            reason: None,
        };
        let report = crate::events::Report {
            processed: 1,
            unchanged: 1,
            failed: 1,
            objects: vec![
                object(Some("a"), Handled::Processed, Some(90)),
                object(Some("a"), Handled::Unchanged, Some(90)),
                object(None, Handled::Failed, None),
            ],
            ..Default::default()
        };
        let text = at("events replay", Ok(Report::Events(report)));
        for line in [
            "pipeline_files{command=\"events replay\",dataset=\"a\",outcome=\"processed\"} 1",
            "pipeline_files{command=\"events replay\",dataset=\"none\",outcome=\"failed\"} 1",
            "pipeline_quality_score_count{dataset=\"a\"} 2",
            "pipeline_failure{command=\"events replay\",kind=\"failure\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn an_error_is_a_failure_of_its_kind_with_no_duration() {
        let failure = Failure {
            exit: Exit::Locked,
            error: "locked".into(),
        };
        let text = at("load-stage", Err(failure));
        assert!(
            text.contains("pipeline_failure{command=\"load-stage\",kind=\"locked\"} 1"),
            "{text}"
        );
        assert!(!text.contains("pipeline_duration_seconds{"), "{text}");
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.prom");
        std::fs::write(&path, "old").unwrap();
        let outcome = Outcome {
            command: "status",
            result: Ok(Report::Served),
            duration: Duration::ZERO,
        };
        let snapshot = Snapshot::from_outcome(&outcome, SystemTime::now());
        snapshot.write_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# HELP"), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
