//! `--engine ballista://`: a real Ballista scheduler and two executors, each a
//! separate `pipeline cluster …` process, run validate's and transform's plans
//! for a period whose files sit on the local S3 server; every table they feed
//! equals, row for row, what the in-process engine wrote for the same period.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The cluster's processes, killed when the test ends however it ends.
struct Cluster {
    children: Vec<Child>,
    logs: tempfile::TempDir,
    scheduler: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(address: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} never listened on {address}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn(args: &[&str], log: &Path, env: &[(&str, String)]) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start a cluster process")
}

/// A scheduler alone, listening.
fn start_scheduler(env: &[(&str, String)]) -> Cluster {
    let logs = tempfile::tempdir().unwrap();
    let scheduler = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster {
        children: Vec::new(),
        logs,
        scheduler: scheduler.clone(),
    };
    let log = cluster.logs.path().join("scheduler.log");
    cluster.children.push(spawn(
        &["cluster", "scheduler", "--bind", &scheduler],
        &log,
        env,
    ));
    wait_for(&scheduler, "the scheduler");
    cluster
}

/// One scheduler and two executors, reading S3 and PostgreSQL with their own
/// credentials (`env`).
fn start_cluster(env: &[(&str, String)]) -> Cluster {
    let mut cluster = start_scheduler(env);
    let scheduler = cluster.scheduler.clone();
    for i in 0..2 {
        let flight = format!("127.0.0.1:{}", free_port());
        let grpc = free_port().to_string();
        let work = cluster.logs.path().join(format!("work{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let log = cluster.logs.path().join(format!("executor{i}.log"));
        cluster.children.push(spawn(
            &[
                "cluster",
                "executor",
                "--scheduler",
                &scheduler,
                "--bind",
                &flight,
                "--grpc-port",
                &grpc,
                "--concurrent-tasks",
                "2",
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &log,
            env,
        ));
        wait_for(&flight, "an executor");
    }
    cluster
}

/// Every row of a query, as text, sorted.
fn pg_rows(db: &TestDb, sql: &str) -> Vec<String> {
    let mut rows: Vec<String> = db
        .client()
        .query(
            &format!("SELECT (to_jsonb(t) - '_loaded_at')::text FROM ({sql}) t"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

fn delta_sorted(dir: &Path) -> Vec<Vec<String>> {
    let mut rows = delta_rows(dir, "SELECT * FROM t");
    rows.sort();
    rows
}

/// What a period left behind: cleaned and quarantined rows, stage and mart.
fn tables(dir: &Path, db: &TestDb) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for which in ["cleaned", "quarantine"] {
        for ds in ["citizens", "regions"] {
            let rows = delta_sorted(&dir.join(format!("data/stage/{which}/{ds}")));
            out.push((format!("{which}/{ds}"), format!("{rows:?}")));
        }
    }
    for table in ["stage.citizens", "stage.regions"] {
        let rows = pg_rows(db, &format!("SELECT * FROM {table}"));
        out.push((table.to_owned(), format!("{rows:?}")));
    }
    // A float sum depends on the order it adds in, which partitions change.
    let mart = pg_rows(
        db,
        "SELECT region_code, region_name, citizens, active_citizens, _data_period,
                round(total_amount::numeric, 6) AS total_amount
           FROM mart.citizens_by_region",
    );
    out.push(("mart.citizens_by_region".to_owned(), format!("{mart:?}")));
    out
}

fn validated(run: &Run) -> (i64, i64, f64) {
    let out = run.json();
    (
        out["rows_valid"].as_i64().unwrap(),
        out["rows_rejected"].as_i64().unwrap(),
        out["score"].as_f64().unwrap(),
    )
}

#[test]
fn a_period_on_a_ballista_cluster_equals_the_in_process_run_row_for_row() {
    let endpoint = s3_endpoint();
    let prefix = format!("cluster_{}", std::process::id());
    let config = sample_config().replace(
        "landed_dir: data/landed",
        &format!("landed_dir: s3://pipeline-test/{prefix}/landed"),
    );
    let dir = project(&config);
    copy_dir(&repo().join("sql"), &dir.path().join("sql"));
    for name in ["citizens_2025-06.csv", "regions.csv"] {
        let body = std::fs::read(repo().join("data/landed").join(name)).unwrap();
        s3_put(&format!("{prefix}/landed/{name}"), body);
    }
    let db = TestDb::new("cluster");
    let mut env = s3_env(&endpoint);
    env.push(("DATABASE_URL", db.url.clone()));
    let cluster = start_cluster(&env);
    let engine = format!("ballista://{}", cluster.scheduler);
    let run = |args: &[&str]| -> Run {
        command(dir.path(), Some(&db.url), args)
            .envs(s3_env(&endpoint))
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(run(&["migrate"]).code, 0);

    // In process first: the reference.
    let ingested = run(&["ingest", "--all"]);
    assert_eq!(ingested.code, 0, "{ingested:?}");
    let mut reference = Vec::new();
    for ds in ["citizens", "regions"] {
        let mut args = vec!["--json", "validate", "--dataset", ds];
        if ds == "citizens" {
            args.extend(["--period", "2025-06"]);
        }
        let v = run(&args);
        assert!(v.code == 0 || v.code == 3, "{v:?}");
        reference.push(validated(&v));
        let mut args = vec!["load-stage", "--dataset", ds];
        if ds == "citizens" {
            args.extend(["--period", "2025-06"]);
        }
        let loaded = run(&args);
        assert_eq!(loaded.code, 0, "{loaded:?}");
    }
    let t = run(&["--json", "transform", "--period", "2025-06"]);
    assert_eq!(t.code, 0, "{t:?}");
    let in_process = tables(dir.path(), &db);
    for (name, rows) in &in_process {
        // The sample's regions have no bad row.
        if name != "quarantine/regions" {
            assert_ne!(rows, "[]", "the reference run filled {name}");
        }
    }

    // Then the same period again, its plans run by the cluster.
    for (i, ds) in ["citizens", "regions"].into_iter().enumerate() {
        let mut args = vec![
            "--engine",
            engine.as_str(),
            "--json",
            "validate",
            "--dataset",
            ds,
        ];
        if ds == "citizens" {
            args.extend(["--period", "2025-06"]);
        }
        let v = run(&args);
        assert!(
            v.code == 0 || v.code == 3,
            "{v:?}\n{}",
            cluster.log("scheduler.log")
        );
        assert_eq!(validated(&v), reference[i], "{ds}: same counts and score");
        // What the cluster's validation wrote, loaded again.
        let mut args = vec!["load-stage", "--force", "--dataset", ds];
        if ds == "citizens" {
            args.extend(["--period", "2025-06"]);
        }
        let loaded = run(&args);
        assert_eq!(loaded.code, 0, "{loaded:?}");
    }
    let t = run(&[
        "--engine",
        &engine,
        "--json",
        "transform",
        "--period",
        "2025-06",
    ]);
    assert_eq!(t.code, 0, "{t:?}\n{}", cluster.log("scheduler.log"));
    let on_cluster = tables(dir.path(), &db);
    for ((name, want), (_, got)) in in_process.iter().zip(&on_cluster) {
        assert_eq!(got, want, "{name} differs between the engines");
    }

    // The work did run on the executors: each received tasks of the jobs.
    let executed: usize = (0..2)
        .map(|i| {
            cluster
                .log(&format!("executor{i}.log"))
                .matches("Execute task")
                .count()
        })
        .sum();
    assert!(
        executed > 0,
        "no executor ran a task:\n{}\n{}",
        cluster.log("executor0.log"),
        cluster.log("scheduler.log")
    );
}

#[test]
fn an_unreachable_scheduler_fails_the_validation_and_names_it() {
    let p = Project::new("cluster_unreachable", &sample_config());
    copy_dir(&repo().join("data/landed"), &p.path("data/landed"));
    let ingested = p.run(&["ingest", "--all"]);
    assert_eq!(ingested.code, 0, "{ingested:?}");
    let port = free_port();
    let engine = format!("ballista://127.0.0.1:{port}");
    let v = p.run(&["--engine", &engine, "validate", "--dataset", "regions"]);
    assert_eq!(v.code, 1, "{v:?}");
    let error = v.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!(
            "cannot reach the Ballista scheduler at 127.0.0.1:{port}"
        )),
        "{error}"
    );
}

/// A scheduler with no executor would queue the job forever: the command
/// fails within PIPELINE_CLUSTER_WAIT_SECONDS, and its validation is closed.
#[test]
fn a_scheduler_without_executors_fails_the_validation_fast() {
    let p = Project::new("cluster_no_executor", &sample_config());
    copy_dir(&repo().join("data/landed"), &p.path("data/landed"));
    assert_eq!(p.run(&["ingest", "--all"]).code, 0);
    let cluster = start_scheduler(&[]);
    let engine = format!("ballista://{}", cluster.scheduler);
    let started = Instant::now();
    let mut child = command(
        p.dir.path(),
        Some(&p.db.url),
        &[
            "--json",
            "--engine",
            &engine,
            "validate",
            "--dataset",
            "regions",
        ],
    )
    .env("PIPELINE_CLUSTER_WAIT_SECONDS", "3")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("validate still waits for an executor after 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no Ballista executor has been alive"),
        "{stdout}"
    );
    let row =
        p.db.client()
            .query_one(
                "SELECT status FROM meta.validation_log ORDER BY id DESC LIMIT 1",
                &[],
            )
            .unwrap();
    assert_eq!(row.get::<_, String>(0), "error", "the validation is closed");
}

/// Scheduler and executors listen on loopback unless told otherwise: the
/// gRPC is plaintext and unauthenticated, and executors hold credentials.
#[test]
fn cluster_processes_listen_on_loopback_by_default() {
    for (role, default) in [
        ("scheduler", "127.0.0.1:50050"),
        ("executor", "127.0.0.1:50051"),
    ] {
        let help = pipeline(Path::new("."), None, &["cluster", role, "--help"]);
        assert_eq!(help.code, 0, "{help:?}");
        // Wrapped to the terminal's width: compare words.
        let words = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(&format!("[default: {default}]")),
            "{role}: {}",
            help.stdout
        );
        assert!(!help.stdout.contains("0.0.0.0"), "{}", help.stdout);
    }
}

/// The dialect corpus (395 queries as models) on the cluster: every model
/// gives the expected rows, or fails where an error is expected, as in
/// process (tests/it/dialect.rs); the two the cluster cannot run fail with a
/// reason, never with other rows.
#[test]
fn the_dialect_corpus_gives_the_expected_rows_on_the_cluster() {
    let corpus = crate::dialect::Loaded::new("cluster_dialect");
    let cluster = start_cluster(&[("DATABASE_URL", corpus.url().to_owned())]);
    let engine = format!("ballista://{}", cluster.scheduler);
    corpus.run_corpus(
        &["--engine", &engine],
        &[
            // IGNORE NULLS does not reach the executors: refused, not answered wrong.
            (
                &["win_lag_ignore_nulls"],
                "cannot run on a Ballista cluster",
            ),
            // A scalar subquery beside the same aggregate outside it: DataFusion's
            // optimizer fails in the Ballista client's session (it runs in
            // process); documentation/dialect.md says so.
            (&["agg_share_of_total"], "scalar_subquery_to_join"),
        ],
    );
}
