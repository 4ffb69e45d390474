//! What one command did, as Prometheus metrics: written for node_exporter's
//! textfile collector (`--metrics-file`) and pushed to a Pushgateway
//! (`--pushgateway`). They are read off the command's result document, the
//! same JSON `--json` prints, so the two can never disagree.
//!
//! Every value describes this invocation (a batch job's last run), so they are
//! gauges, plus one histogram of the quality scores it produced. Exporting is
//! never fatal: a metrics file that cannot be written or a Pushgateway that does
//! not answer is logged, and the command's exit code stands.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder};
use serde_json::Value;

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
            score,
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn number(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64()
}

/// The exit code's name, as operators call the failure.
fn failure_kind(code: u64) -> &'static str {
    match code {
        1 => "failure",
        2 => "usage",
        3 => "rejected",
        4 => "locked",
        5 => "not_arrived",
        _ => "other",
    }
}

impl Snapshot {
    /// The metrics `summary` (a command's `--json` document) implies, stamped
    /// with `finished`.
    pub fn from_summary(summary: &Value, finished: SystemTime) -> Snapshot {
        let registry = Registry::new();
        let f = Families::new(&registry);
        let command = text(summary, "command").to_owned();
        let code = summary["exit_code"].as_u64().unwrap_or(1);
        let cmd = [command.as_str()];
        let since_epoch = finished.duration_since(UNIX_EPOCH).unwrap_or_default();
        f.last_run
            .with_label_values(&cmd)
            .set(since_epoch.as_secs_f64());
        f.exit_code.with_label_values(&cmd).set(code as f64);
        let ok = code == 0 || code == 99;
        f.success
            .with_label_values(&cmd)
            .set(if ok { 1.0 } else { 0.0 });
        if !ok {
            f.failure
                .with_label_values(&[command.as_str(), failure_kind(code)])
                .set(1.0);
        }
        if let Some(ms) = number(summary, "duration_ms") {
            f.duration.with_label_values(&cmd).set(ms / 1000.0);
        }

        // ingest: a list of files, or (with --file-path) the one file.
        let files: Vec<&Value> = match summary["files"].as_array() {
            Some(list) => list.iter().collect(),
            None if command == "ingest" && summary.get("file_name").is_some() => vec![summary],
            None => Vec::new(),
        };
        for file in files {
            let dataset = file["dataset"].as_str().unwrap_or("none");
            let outcome = if file["unchanged"] == true {
                "unchanged"
            } else {
                text(file, "status")
            };
            f.files
                .with_label_values(&[command.as_str(), dataset, outcome])
                .inc();
        }

        let dataset = text(summary, "dataset");
        match command.as_str() {
            "validate" if summary.get("rows_in").is_some() => {
                let outcome = if summary["passed"] == true {
                    "passed"
                } else {
                    "failed"
                };
                f.files
                    .with_label_values(&["validate", dataset, outcome])
                    .inc();
                for kind in ["in", "valid", "rejected"] {
                    if let Some(n) = number(summary, &format!("rows_{kind}")) {
                        f.rows
                            .with_label_values(&[dataset, "validate", kind])
                            .set(n);
                    }
                }
                if let Some(score) = number(summary, "score") {
                    f.score.with_label_values(&[dataset]).observe(score);
                }
            }
            "load-stage" => {
                for kind in ["inserted", "deleted"] {
                    if let Some(n) = number(summary, &format!("rows_{kind}")) {
                        f.rows
                            .with_label_values(&[dataset, "load-stage", kind])
                            .set(n);
                    }
                }
            }
            "events replay" | "events listen" => {
                for object in summary["objects"].as_array().into_iter().flatten() {
                    let dataset = object["dataset"].as_str().unwrap_or("none");
                    f.files
                        .with_label_values(&[command.as_str(), dataset, text(object, "outcome")])
                        .inc();
                    if let Some(score) = number(object, "score") {
                        f.score.with_label_values(&[dataset]).observe(score);
                    }
                }
            }
            _ => {}
        }

        for model in summary["models"].as_array().into_iter().flatten() {
            f.models.with_label_values(&[text(model, "status")]).inc();
            for kind in ["inserted", "deleted"] {
                if let Some(n) = number(model, &format!("rows_{kind}")) {
                    f.rows
                        .with_label_values(&[text(model, "model"), "transform", kind])
                        .set(n);
                }
            }
        }

        for stage in summary["stages"].as_array().into_iter().flatten() {
            let (dataset, name) = (text(stage, "dataset"), text(stage, "stage"));
            f.stages
                .with_label_values(&[dataset, name, text(stage, "status")])
                .inc();
            if let Some(ms) = number(stage, "duration_ms") {
                f.stage_duration
                    .with_label_values(&[dataset, name])
                    .set(ms / 1000.0);
            }
            if let Some(n) = number(stage, "rows") {
                f.rows.with_label_values(&[dataset, name, "rows"]).set(n);
            }
            if let Some(score) = number(stage, "score") {
                f.score.with_label_values(&[dataset]).observe(score);
            }
        }
        Snapshot { registry, command }
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
pub async fn export(summary: &Value, file: Option<&Path>, pushgateway: Option<&str>) {
    if file.is_none() && pushgateway.is_none() {
        return;
    }
    let snapshot = Snapshot::from_summary(summary, SystemTime::now());
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
    use serde_json::json;

    use super::*;

    fn at(summary: Value) -> String {
        Snapshot::from_summary(&summary, UNIX_EPOCH + Duration::from_secs(1_700_000_000)).render()
    }

    #[test]
    fn a_validation_becomes_rows_a_score_and_a_file_outcome() {
        let text = at(json!({
            "command": "validate", "exit_code": 3, "duration_ms": 1500,
            "dataset": "citizens", "passed": false, "score": 72,
            "rows_in": 10, "rows_valid": 7, "rows_rejected": 3,
        }));
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
    fn ingest_files_run_stages_and_models_are_counted_by_outcome() {
        let text = at(json!({
            "command": "ingest", "exit_code": 3,
            "files": [
                {"dataset": "a", "status": "accepted", "unchanged": false},
                {"dataset": "a", "status": "accepted", "unchanged": true},
                {"dataset": null, "status": "unmatched", "unchanged": false},
                {"dataset": "a", "status": "rejected", "unchanged": false},
                {"dataset": "a", "status": "rejected", "unchanged": false},
            ],
        }));
        assert!(
            text.contains(
                "pipeline_files{command=\"ingest\",dataset=\"a\",outcome=\"rejected\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pipeline_files{command=\"ingest\",dataset=\"none\",outcome=\"unmatched\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pipeline_files{command=\"ingest\",dataset=\"a\",outcome=\"unchanged\"} 1"
            ),
            "{text}"
        );

        let text = at(json!({
            "command": "run", "exit_code": 0, "stages": [
                {"dataset": "a", "stage": "validate", "status": "done", "rows": 9, "score": 96, "duration_ms": 250},
                {"dataset": "a", "stage": "load-stage", "status": "unchanged", "rows": null, "score": null, "duration_ms": 0},
            ],
            "models": [{"model": "mart.x", "status": "done", "rows_inserted": 4, "rows_deleted": 2}],
        }));
        for line in [
            "pipeline_stages{dataset=\"a\",stage=\"validate\",status=\"done\"} 1",
            "pipeline_stages{dataset=\"a\",stage=\"load-stage\",status=\"unchanged\"} 1",
            "pipeline_stage_duration_seconds{dataset=\"a\",stage=\"validate\"} 0.25",
            "pipeline_rows{dataset=\"a\",kind=\"rows\",stage=\"validate\"} 9",
            "pipeline_quality_score_count{dataset=\"a\"} 1",
            "pipeline_models{status=\"done\"} 1",
            "pipeline_rows{dataset=\"mart.x\",kind=\"inserted\",stage=\"transform\"} 4",
            "pipeline_success{command=\"run\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(!text.contains("pipeline_failure{"), "{text}");
    }

    #[test]
    fn event_objects_are_counted_by_outcome_with_their_scores() {
        let text = at(json!({
            "command": "events replay", "exit_code": 1,
            "objects": [
                {"dataset": "a", "outcome": "processed", "score": 90},
                {"dataset": "a", "outcome": "unchanged", "score": 90},
                {"dataset": null, "outcome": "failed", "score": null},
            ],
        }));
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
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.prom");
        std::fs::write(&path, "old").unwrap();
        let snapshot = Snapshot::from_summary(
            &json!({"command": "status", "exit_code": 0}),
            SystemTime::now(),
        );
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
