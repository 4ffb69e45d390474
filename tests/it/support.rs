//! Shared test harness: a fresh database per test, and running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_pipeline");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The server's admin URL: DATABASE_URL, or the project's own local cluster.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let out = Command::new(repo().join("scripts/postgres.sh"))
            .arg("start")
            .output()
            .expect("run scripts/postgres.sh start");
        assert!(
            out.status.success(),
            "scripts/postgres.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A database created for one test and dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub fn new(test: &str) -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t_{}_{}_{}",
            test,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect(server_url());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        let mut url = url::Url::parse(server_url()).expect("DATABASE_URL is a URL");
        url.set_path(&name);
        TestDb {
            url: url.to_string(),
            name,
        }
    }

    pub fn client(&self) -> postgres::Client {
        connect(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(server_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect to the test PostgreSQL")
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `--json` output, checked against documentation/output.schema.json.
    pub fn json(&self) -> serde_json::Value {
        let value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", self.stdout));
        assert_output_schema(&value);
        value
    }
}

/// Fails when `value` is not what documentation/output.schema.json promises.
pub fn assert_output_schema(value: &serde_json::Value) {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let text =
            std::fs::read_to_string(repo().join("documentation/output.schema.json")).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a valid schema")
    });
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "--json output breaks documentation/output.schema.json:\n{}\n{value:#}",
        errors.join("\n")
    );
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A `pipeline` command in `dir`, with DATABASE_URL set to `db` (or unset).
pub fn command(dir: &Path, db: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_remove("PIPELINE_CONFIG");
    match db {
        Some(url) => cmd.env("DATABASE_URL", url),
        None => cmd.env_remove("DATABASE_URL"),
    };
    cmd
}

/// Runs `pipeline`; with `--json`, stdout must be one object the output schema
/// accepts, whatever the outcome.
pub fn pipeline(dir: &Path, db: Option<&str>, args: &[&str]) -> Run {
    let run: Run = command(dir, db, args)
        .output()
        .expect("run pipeline")
        .into();
    if args.contains(&"--json") {
        if args.contains(&"--help") || args.contains(&"--version") {
            return run;
        }
        // Even an argument clap cannot read gets its JSON document.
        run.json();
    }
    run
}

/// A temporary project folder holding `config` as datasets_config.yml.
pub fn project(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("datasets_config.yml"), config).unwrap();
    dir
}

/// The repository's own sample config.
pub fn sample_config() -> String {
    std::fs::read_to_string(repo().join("datasets_config.yml")).unwrap()
}

/// The local S3 server's endpoint: S3_ENDPOINT, or the project's moto server.
pub fn s3_endpoint() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("S3_ENDPOINT") {
            return url;
        }
        let out = Command::new(repo().join("scripts/s3.sh"))
            .arg("start")
            .output()
            .expect("run scripts/s3.sh start");
        assert!(
            out.status.success(),
            "scripts/s3.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
    .clone()
}

/// Environment for the binary to reach the local S3 server.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("S3_ENDPOINT", endpoint.to_owned()),
        ("S3_REGION", "us-east-1".into()),
        ("S3_ACCESS_KEY", "test".into()),
        ("S3_SECRET_KEY", "test".into()),
    ]
}

/// Uploads an object to the test bucket.
pub fn s3_put(key: &str, body: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("pipeline-test")
        .with_region("us-east-1")
        .with_endpoint(s3_endpoint())
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.put(&object_store::path::Path::parse(key).unwrap(), body.into()))
        .unwrap();
}

/// The Python of the S3 server's virtualenv (scripts/s3.sh), which has boto3.
pub fn s3_python() -> PathBuf {
    std::env::var_os("PIPELINE_S3_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".s3/venv"))
        .join("bin/python")
}

/// Uploads an object under a key object_store cannot represent (`a/../b`,
/// `a//b`). Rust's URL types resolve `..` in a path, so this goes through boto3,
/// which the S3 server script installs with moto.
pub fn s3_put_raw(key: &str, body: &[u8]) {
    let script = "import sys, boto3\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
            aws_access_key_id='test', aws_secret_access_key='test')\n\
        s3.put_object(Bucket='pipeline-test', Key=sys.argv[2], Body=sys.stdin.buffer.read())\n";
    let mut child = Command::new(s3_python())
        .args(["-c", script, &s3_endpoint(), key])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with boto3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    assert!(child.wait().unwrap().success(), "boto3 put {key:?}");
}

/// Rows of a Delta table matching `filter` (SQL over table `t`), each value as text.
pub fn delta_rows(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = url::Url::from_directory_path(std::fs::canonicalize(dir).unwrap()).unwrap();
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        as_text(&batches, "NULL")
    })
}

/// Every value of `batches` as text, row by row; `null` stands for a null.
pub fn as_text(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
    null: &str,
) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default().with_null(null);
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    rows
}

/// A temporary project (config + `landed/`) with a migrated database of its own.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

impl Project {
    pub fn new(test: &str, config: &str) -> Project {
        let dir = project(config);
        std::fs::create_dir_all(dir.path().join("landed")).unwrap();
        let db = TestDb::new(test);
        let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
        assert_eq!(run.code, 0, "{run:?}");
        Project { dir, db }
    }

    /// A path inside the project.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `pipeline --json <args>` in the project.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--json"];
        all.extend(args);
        pipeline(self.dir.path(), Some(&self.db.url), &all)
    }
}

/// A copy of the repository's sample project: config, landed files, models.
pub fn sample_project() -> tempfile::TempDir {
    let dir = project(&sample_config());
    copy_dir(&repo().join("data/landed"), &dir.path().join("data/landed"));
    copy_dir(&repo().join("sql"), &dir.path().join("sql"));
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Waits for a spawned process (stdout and stderr piped) and returns its stdout;
/// fails the test with its stderr when it did not succeed.
pub fn wait_ok(child: std::process::Child) -> Vec<u8> {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One stage's result in `run --json` output: `dataset`'s `stage`.
pub fn stage_of<'a>(
    out: &'a serde_json::Value,
    dataset: &str,
    stage: &str,
) -> &'a serde_json::Value {
    out["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dataset"] == dataset && s["stage"] == stage)
        .unwrap_or_else(|| panic!("no {dataset}/{stage} in {out}"))
}
