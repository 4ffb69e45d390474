//! `--metrics-file` and `--pushgateway`: what a run writes is read back with the
//! Python prometheus_client parser (Debian's python3-prometheus-client) and from
//! a real Prometheus Pushgateway (Debian's prometheus-pushgateway), both
//! installed by .ci/run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A Pushgateway on a free local port, stopped when dropped.
struct Pushgateway {
    child: Child,
    port: u16,
}

impl Pushgateway {
    fn start() -> Pushgateway {
        let port = free_port();
        let bin =
            std::env::var("PUSHGATEWAY_BIN").unwrap_or_else(|_| "prometheus-pushgateway".into());
        let child = Command::new(&bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): apt-get install prometheus-pushgateway (.ci/run does)")
            });
        let gateway = Pushgateway { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/-/ready").is_none() {
            assert!(
                Instant::now() < deadline,
                "the Pushgateway did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of a plain HTTP GET, or None when nothing answers 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// Every sample of a Prometheus text exposition, as parsed by prometheus_client.
fn parse(text: &str) -> Vec<(String, Value, f64)> {
    let python = std::env::var("PROMETHEUS_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(
            "import json, sys\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
             print(json.dumps(out))",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} ({e})"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text (apt-get install python3-prometheus-client):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<(String, Value, f64)>>(&out.stdout).unwrap()
}

/// The value of the one sample called `name` whose labels include `labels`.
fn sample(samples: &[(String, Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in {samples:?}");
    found[0]
}

fn read(path: &Path) -> Vec<(String, Value, f64)> {
    parse(&std::fs::read_to_string(path).unwrap())
}

#[test]
fn a_run_writes_metrics_a_parser_and_a_pushgateway_read_back() {
    let dir = sample_project();
    let db = TestDb::new("metrics_run");
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    let gateway = Pushgateway::start();
    let file = dir.path().join("pipeline.prom");
    let file_arg = file.display().to_string();
    let url = gateway.url();
    let args = [
        "--json",
        "--metrics-file",
        &file_arg,
        "--pushgateway",
        &url,
        "run",
        "--period",
        "2025-06",
    ];

    let run = pipeline(dir.path(), Some(&db.url), &args);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let samples = read(&file);
    let run_label = [("command", "run")];
    assert_eq!(sample(&samples, "pipeline_exit_code", &run_label), 0.0);
    assert_eq!(sample(&samples, "pipeline_success", &run_label), 1.0);
    for stage in out["stages"].as_array().unwrap() {
        let (dataset, name) = (
            stage["dataset"].as_str().unwrap(),
            stage["stage"].as_str().unwrap(),
        );
        let labels = [
            ("dataset", dataset),
            ("stage", name),
            ("status", stage["status"].as_str().unwrap()),
        ];
        assert_eq!(sample(&samples, "pipeline_stages", &labels), 1.0, "{stage}");
        if let Some(rows) = stage["rows"].as_f64() {
            let labels = [("dataset", dataset), ("stage", name), ("kind", "rows")];
            assert_eq!(sample(&samples, "pipeline_rows", &labels), rows, "{stage}");
        }
    }
    let validated = out["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "validate" && s["score"].is_number())
        .count();
    assert!(validated > 0, "{out}");
    let scored: f64 = samples
        .iter()
        .filter(|(n, _, _)| n == "pipeline_quality_score_count")
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(
        scored, validated as f64,
        "one score observed per validated file"
    );

    // The Pushgateway holds the same metrics under job="pipeline", command="run".
    let pushed = parse(&http_get(gateway.port, "/metrics").expect("the Pushgateway answers"));
    assert_eq!(
        sample(
            &pushed,
            "pipeline_success",
            &[("job", "pipeline"), ("command", "run")]
        ),
        1.0
    );

    // The unchanged re-run replaces the file: exit 99 counts as success.
    let again = pipeline(dir.path(), Some(&db.url), &args);
    assert_eq!(again.code, 99, "{again:?}");
    let samples = read(&file);
    assert_eq!(sample(&samples, "pipeline_exit_code", &run_label), 99.0);
    assert_eq!(sample(&samples, "pipeline_success", &run_label), 1.0);
}

#[test]
fn a_failure_is_a_metric_and_an_unreachable_gateway_changes_nothing() {
    let dir = sample_project();
    let db = TestDb::new("metrics_failure");
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    let file = dir.path().join("pipeline.prom");
    let file_arg = file.display().to_string();
    let nobody = format!("http://pusher:s3cret@127.0.0.1:{}", free_port());
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &[
            "--metrics-file",
            &file_arg,
            "--pushgateway",
            &nobody,
            "validate",
            "--dataset",
            "citizens",
            "--period",
            "2031-01",
        ],
    );
    assert_eq!(run.code, 5, "nothing landed for 2031-01: {run:?}");
    assert!(run.stderr.contains("metrics not pushed"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    let samples = read(&file);
    let labels = [("command", "validate"), ("kind", "not_arrived")];
    assert_eq!(sample(&samples, "pipeline_failure", &labels), 1.0);
    assert_eq!(
        sample(&samples, "pipeline_success", &[("command", "validate")]),
        0.0
    );
}

/// What ingest really emits is what metrics count: a name no dataset claims is
/// `unmatched` (it used to be counted as `rejected`, while only a hand-written
/// document said `unmatched`), a re-seen file `unchanged`.
#[test]
fn ingest_outcomes_are_counted_as_ingest_reports_them() {
    let dir = sample_project();
    let db = TestDb::new("metrics_ingest");
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    std::fs::write(dir.path().join("data/landed/notes_2025-06.txt"), "x\n").unwrap();
    let file = dir.path().join("pipeline.prom");
    let file_arg = file.display().to_string();
    let args = ["--json", "--metrics-file", &file_arg, "ingest", "--all"];
    let run = pipeline(dir.path(), Some(&db.url), &args);
    assert_eq!(
        run.code, 0,
        "an unmatched name is reported, not fatal: {run:?}"
    );
    let out = run.json();
    let unmatched: Vec<&Value> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "unmatched")
        .collect();
    assert_eq!(unmatched.len(), 1, "{out}");
    assert_eq!(out["unmatched"], 1, "{out}");
    let samples = read(&file);
    let outcome = |dataset, outcome| {
        sample(
            &samples,
            "pipeline_files",
            &[
                ("command", "ingest"),
                ("dataset", dataset),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(outcome("none", "unmatched"), 1.0);
    assert_eq!(outcome("citizens", "accepted"), 2.0);
    assert!(
        !samples
            .iter()
            .any(|(n, l, _)| n == "pipeline_files" && l["outcome"] == "rejected"),
        "nothing was rejected: {samples:?}"
    );

    let again = pipeline(dir.path(), Some(&db.url), &args);
    assert_eq!(again.code, 0, "{again:?}");
    let samples = read(&file);
    let unchanged = sample(
        &samples,
        "pipeline_files",
        &[
            ("command", "ingest"),
            ("dataset", "citizens"),
            ("outcome", "unchanged"),
        ],
    );
    assert_eq!(unchanged, 2.0);
}

/// operations.md's metrics table names every metric the code registers, with
/// exactly its labels (a claim that drifted: a missing metric, a label too many).
#[test]
fn the_metrics_table_lists_every_metric_with_its_labels() {
    let code = std::fs::read_to_string(repo().join("src/metrics.rs")).unwrap();
    let doc = std::fs::read_to_string(repo().join("documentation/operations.md")).unwrap();
    let family = regex::Regex::new(
        r#""(pipeline_[a-z_]+)",\s*"[^"]*",\s*\)?\s*(?:\.buckets\([^\n]*\),\s*)?&\[([^\]]*)\]"#,
    )
    .unwrap();
    let mut found = 0;
    for m in family.captures_iter(&code) {
        found += 1;
        let name = &m[1];
        let labels: Vec<&str> = m[2]
            .split(',')
            .map(|l| l.trim().trim_matches('"'))
            .filter(|l| !l.is_empty())
            .collect();
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("operations.md's metrics table has no row for {name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let documented: Vec<&str> = cells[2].split(',').map(str::trim).collect();
        assert_eq!(documented, labels, "{name}'s labels in operations.md");
    }
    assert!(found >= 11, "only {found} metrics seen in src/metrics.rs");
}
