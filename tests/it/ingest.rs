//! `pipeline ingest`: every format, every rejection, re-ingest, date folders, S3.

use std::path::{Path, PathBuf};

use crate::files::*;
use crate::support::*;

const CONFIG: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
limits:
  xlsx_max_uncompressed_bytes: 1000000
datasets:
  people:
    file_pattern: '^people_(?P<period>\d{4}-\d{2})\.(csv|jsonl|parquet|xlsx)$'
    period: month
    columns:
      id:    { type: int, required: true }
      name:  { type: string }
      score: { type: float }
  daily:
    file_pattern: '^daily_(?P<period>\d{4}-\d{2}-\d{2})\.csv$'
    period: day
    headers: subset
    delimiter: ';'
    columns:
      id:    { type: int }
      value: { type: float }
"#;

const COLS: &[&str] = &["id", "name", "score"];

fn rows() -> Vec<Vec<&'static str>> {
    vec![vec!["1", "Ana", "1.5"], vec!["2", "Bo, Jr", "2"]]
}

/// (id, dataset, period, status, reason) of a meta.ingestion_log row.
type LogRow = (i64, Option<String>, Option<String>, String, Option<String>);

struct Env(Project);

impl std::ops::Deref for Env {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.0
    }
}

impl Env {
    fn new(test: &str) -> Env {
        Env::with_config(test, CONFIG)
    }

    fn with_config(test: &str, config: &str) -> Env {
        Env(Project::new(test, config))
    }

    fn landed(&self) -> PathBuf {
        self.dir.path().join("landed")
    }

    fn put(&self, name: &str, body: impl AsRef<[u8]>) -> PathBuf {
        let path = self.landed().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        path
    }

    fn ingest(&self, args: &[&str]) -> Run {
        self.run(&[&["ingest"], args].concat())
    }

    fn ingest_file(&self, name: &str) -> Run {
        self.ingest(&["--file-path", name])
    }

    /// The log rows, oldest first.
    fn log(&self) -> Vec<LogRow> {
        self.db
            .client()
            .query(
                "SELECT id, dataset, period, status, reason FROM meta.ingestion_log ORDER BY id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }
}

fn assert_rejected(env: &Env, run: &Run, reason_part: &str) {
    assert_refused(env, run, "rejected", reason_part);
}

/// `--file-path` refuses the file (exit 3) with `status` in its JSON; the log
/// row says `rejected` either way.
fn assert_refused(env: &Env, run: &Run, status: &str, reason_part: &str) {
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(out["status"], status, "{out}");
    let reason = out["reason"].as_str().unwrap();
    assert!(
        reason.contains(reason_part),
        "reason {reason:?} lacks {reason_part:?}"
    );
    assert!(
        run.stderr.contains(reason_part),
        "stderr lacks {reason_part:?}: {}",
        run.stderr
    );
    let log = env.log();
    let row = log
        .iter()
        .find(|r| r.0 == out["file_id"].as_i64().unwrap())
        .expect("log row");
    assert_eq!(row.3, "rejected");
    assert!(row.4.as_deref().unwrap().contains(reason_part));
}

#[test]
fn every_format_is_accepted() {
    let env = Env::new("ingest_formats");
    env.put("people_2025-01.csv", csv(COLS, &rows()));
    write_jsonl(&env.landed().join("people_2025-02.jsonl"), COLS, &rows());
    write_parquet(&env.landed().join("people_2025-03.parquet"), COLS, &rows());
    write_xlsx(
        &env.landed().join("people_2025-04.xlsx"),
        "Data",
        &[COLS.to_vec(), vec!["1", "Ana", "1.5"]],
        0,
    );
    env.put("daily_2025-06-30.csv", "extra;value;id\nx;1.5;7\n");
    for (name, period) in [
        ("people_2025-01.csv", "2025-01"),
        ("people_2025-02.jsonl", "2025-02"),
        ("people_2025-03.parquet", "2025-03"),
        ("people_2025-04.xlsx", "2025-04"),
        ("daily_2025-06-30.csv", "2025-06-30"),
    ] {
        let run = env.ingest_file(name);
        assert_eq!(run.code, 0, "{name}: {run:?}");
        let out = run.json();
        assert_eq!(out["status"], "accepted", "{name}: {out}");
        assert_eq!(out["period"], period);
        assert_eq!(out["unchanged"], false);
        assert!(out["file_id"].as_i64().unwrap() > 0);
        assert_eq!(out["sha256"].as_str().unwrap().len(), 64);
    }
    let log = env.log();
    assert_eq!(log.len(), 5);
    assert!(
        log.iter().all(|r| r.3 == "accepted" && r.4.is_none()),
        "{log:?}"
    );
    assert_eq!(log[4].1.as_deref(), Some("daily"));
}

#[test]
fn name_and_period_rejections() {
    let env = Env::new("ingest_names");
    env.put("orders_2025-01.csv", csv(COLS, &rows()));
    env.put("people_2025-13.csv", csv(COLS, &rows()));
    env.put("daily_2025-02-30.csv", "id;value\n1;2\n");
    env.put("people_2025-01.txt", csv(COLS, &rows()));
    // A name no dataset claims is `unmatched` (a real outcome, counted as such
    // by metrics), logged as rejected.
    let run = env.ingest_file("orders_2025-01.csv");
    assert_refused(&env, &run, "unmatched", "matches no dataset's file_pattern");
    assert_eq!(env.log()[0].1, None);
    let run = env.ingest_file("people_2025-13.csv");
    assert_rejected(
        &env,
        &run,
        "`2025-13` is not a valid month period (expected YYYY-MM)",
    );
    let run = env.ingest_file("daily_2025-02-30.csv");
    assert_rejected(&env, &run, "`2025-02-30` is not a valid day period");
    // Matches no pattern (the pattern names the extensions).
    let run = env.ingest_file("people_2025-01.txt");
    assert_refused(&env, &run, "unmatched", "matches no dataset");
}

#[test]
fn a_name_matching_two_datasets_is_rejected_naming_both() {
    // Unicode classes this large are too big to compare at config time, so the
    // overlap is only caught when a file matches both.
    let config = CONFIG.replace(
        "  daily:\n    file_pattern: '^daily_(?P<period>\\d{4}-\\d{2}-\\d{2})\\.csv$'",
        "  daily:\n    file_pattern: '^people_(?P<period>\\d{4}-\\d{2}-\\d{2})\\w{40}\\w{40}\\.csv$'",
    );
    assert_ne!(config, CONFIG);
    let env = Env::with_config("ingest_two", &config);
    let name = format!("people_2025-01-01{}.csv", "a".repeat(80));
    let config2 = config.replace(
        "'^people_(?P<period>\\d{4}-\\d{2})\\.(csv|jsonl|parquet|xlsx)$'",
        "'^people_(?P<period>\\d{4}-\\d{2})'",
    );
    std::fs::write(env.dir.path().join("datasets_config.yml"), config2).unwrap();
    env.put(&name, "id;value\n1;2\n");
    let run = env.ingest_file(&name);
    assert_rejected(
        &env,
        &run,
        "matches the file_pattern of several datasets (people, daily)",
    );
}

#[test]
fn header_rejections_name_each_column() {
    let env = Env::new("ingest_headers");
    let cases: &[(&str, String, &str)] = &[
        (
            "people_2025-01.csv",
            "id,name\n1,a\n".into(),
            "missing columns: score",
        ),
        (
            "people_2025-02.csv",
            "id,name,score,extra\n1,a,2,x\n".into(),
            "unexpected columns: \"extra\"",
        ),
        (
            "people_2025-03.csv",
            "id,score,name\n1,2,a\n".into(),
            "position 2 is score but should be name",
        ),
        ("people_2025-04.csv", String::new(), "the file is empty"),
        (
            "people_2025-05.csv",
            "ident,nom\n".into(),
            "missing columns: id, name, score",
        ),
    ];
    for (name, body, reason) in cases {
        env.put(name, body);
        let run = env.ingest_file(name);
        assert_rejected(&env, &run, reason);
    }
    // subset: every declared column present, extras dropped; a missing one is rejected.
    env.put("daily_2025-01-01.csv", "value;other\n1;2\n");
    assert_rejected(
        &env,
        &env.ingest_file("daily_2025-01-01.csv"),
        "missing columns: id",
    );
}

#[test]
fn non_utf8_truncated_and_oversized_files_are_rejected() {
    let env = Env::new("ingest_hostile_content");
    let mut body = b"id,name,score\n1,ok,2\n2,caf".to_vec();
    body.extend([0xE9]);
    body.extend(b",3\n");
    env.put("people_2025-01.csv", &body);
    assert_rejected(
        &env,
        &env.ingest_file("people_2025-01.csv"),
        "not UTF-8 at line 3",
    );

    let parquet = env.landed().join("people_2025-02.parquet");
    write_parquet(&parquet, COLS, &rows());
    let bytes = std::fs::read(&parquet).unwrap();
    std::fs::write(&parquet, &bytes[..bytes.len() - 20]).unwrap();
    assert_rejected(
        &env,
        &env.ingest_file("people_2025-02.parquet"),
        "not a readable Parquet file",
    );

    // 5 MB of zeros compress to a few KB but exceed the 1 MB cap of the config.
    write_xlsx(
        &env.landed().join("people_2025-03.xlsx"),
        "Data",
        &[COLS.to_vec()],
        5_000_000,
    );
    let size = std::fs::metadata(env.landed().join("people_2025-03.xlsx"))
        .unwrap()
        .len();
    assert!(size < 100_000, "the bomb is small on disk: {size}");
    assert_rejected(
        &env,
        &env.ingest_file("people_2025-03.xlsx"),
        "decompresses to more than 1000000 bytes",
    );

    let long = format!("id,name,score{}\n1,2,3\n", ",x".repeat(700_000));
    env.put("people_2025-04.csv", long);
    assert_rejected(
        &env,
        &env.ingest_file("people_2025-04.csv"),
        "header is longer than 1048576 bytes",
    );
}

#[test]
fn path_escapes_and_symlinks_out_are_refused() {
    let env = Env::new("ingest_escape");
    let outside = env.dir.path().join("secret_2025-01.csv");
    std::fs::write(&outside, csv(COLS, &rows())).unwrap();
    std::os::unix::fs::symlink(&outside, env.landed().join("people_2025-01.csv")).unwrap();

    let escape = format!("{}/../secret_2025-01.csv", env.landed().display());
    let run = env.ingest_file(&escape);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("is not inside the landed dir"),
        "{}",
        run.stderr
    );
    assert!(
        env.log().is_empty(),
        "a path outside the landed dir is not a landed file"
    );

    let run = env.ingest_file("people_2025-01.csv");
    assert_rejected(&env, &run, "is a symlink to");
    assert_eq!(
        run.json()["sha256"],
        serde_json::Value::Null,
        "refused unread"
    );

    // A symlink that stays inside is followed.
    env.put("real.bin", csv(COLS, &rows()));
    std::os::unix::fs::symlink(
        env.landed().join("real.bin"),
        env.landed().join("people_2025-02.csv"),
    )
    .unwrap();
    assert_eq!(env.ingest_file("people_2025-02.csv").code, 0);

    // Control characters in a listed name are refused.
    env.put("people_2025-03\u{1b}.csv", csv(COLS, &rows()));
    let run = env.ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    let files = run.json()["files"].as_array().unwrap().clone();
    let ctrl = files
        .iter()
        .find(|f| f["file_name"].as_str().unwrap().contains('\u{1b}'))
        .unwrap();
    assert!(
        ctrl["reason"]
            .as_str()
            .unwrap()
            .contains("control characters"),
        "{ctrl}"
    );
}

#[test]
fn identical_bytes_keep_their_id_and_a_changed_file_becomes_current() {
    let env = Env::new("ingest_reingest");
    env.put("people_2025-01.csv", csv(COLS, &rows()));
    let first = env.ingest_file("people_2025-01.csv").json();
    let again = env.ingest_file("people_2025-01.csv");
    assert_eq!(again.code, 0);
    let again = again.json();
    assert_eq!(again["file_id"], first["file_id"]);
    assert_eq!(again["unchanged"], true);
    assert_eq!(env.log().len(), 1);

    env.put("people_2025-01.csv", csv(COLS, &[vec!["3", "Cy", "0"]]));
    let changed = env.ingest_file("people_2025-01.csv").json();
    assert_ne!(changed["file_id"], first["file_id"]);
    assert_eq!(changed["unchanged"], false);
    assert_eq!(env.log().len(), 2);
    let current: i64 = env
        .db
        .client()
        .query_one(
            "SELECT id FROM meta.ingestion_log WHERE dataset = 'people' AND period = '2025-01'
               AND status = 'accepted' ORDER BY last_seen_at DESC, id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(current, changed["file_id"].as_i64().unwrap());
    // Unchanged re-ingests spend no id: the next new version is the next number.
    env.put("people_2025-02.csv", csv(COLS, &rows()));
    let next = env.ingest_file("people_2025-02.csv").json();
    assert_eq!(
        next["file_id"].as_i64().unwrap(),
        changed["file_id"].as_i64().unwrap() + 1,
        "ids have no gaps"
    );
}

/// A version once accepted stays accepted when a later config would reject it
/// (its data may be validated and loaded already); a rejected version takes the
/// verdict of a fixed config.
#[test]
fn a_drifted_config_does_not_flip_accepted_versions_but_a_fixed_one_accepts() {
    let env = Env::new("ingest_drift");
    env.put("people_2025-01.csv", csv(COLS, &rows()));
    env.put("people_2025-02.csv", "id,name\n1,Ana\n");
    let first = env.ingest(&["--all"]);
    assert_eq!(first.json()["accepted"], 1, "{first:?}");
    let before = env.log();

    // A new required column: 2025-01 would now be rejected.
    let drifted = CONFIG.replace(
        "      score: { type: float }",
        "      score: { type: float }\n      city:  { type: string }",
    );
    std::fs::write(env.path("datasets_config.yml"), &drifted).unwrap();
    let run = env.ingest(&["--all"]);
    let jan = run.json()["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["period"] == "2025-01")
        .unwrap()
        .clone();
    assert_eq!(jan["status"], "accepted", "{run:?}");
    assert_eq!(jan["file_id"], before[0].0);
    assert!(
        run.stderr.contains("stays accepted") && run.stderr.contains("city"),
        "{}",
        run.stderr
    );
    assert_eq!(env.log()[0].3, "accepted");

    // The config fixed for the two-column file: its rejected version is accepted.
    let fixed = CONFIG.replace("      score: { type: float }\n", "");
    std::fs::write(env.path("datasets_config.yml"), &fixed).unwrap();
    env.ingest(&["--all"]);
    let feb = env
        .log()
        .into_iter()
        .find(|r| r.2.as_deref() == Some("2025-02"))
        .unwrap();
    assert_eq!(feb.3, "accepted", "{feb:?}");
    assert_eq!(env.log().len(), 2, "no new rows for known versions");
}

#[test]
fn a_date_folder_linked_outside_the_landed_dir_is_refused_unread() {
    let env = Env::new("ingest_folder_link");
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("people_2025-06.csv"), csv(COLS, &rows())).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.landed().join("2025-07-01")).unwrap();

    let run = env.ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(out["folder"], "2025-07-01");
    let file = &out["files"][0];
    assert_eq!(file["status"], "rejected", "{out}");
    assert!(
        file["reason"]
            .as_str()
            .unwrap()
            .contains("through a symlinked folder, outside the landed dir"),
        "{out}"
    );
    assert_eq!(file["sha256"], serde_json::Value::Null, "refused unread");

    for path in [
        "people_2025-06.csv".to_owned(),
        format!("{}/2025-07-01/people_2025-06.csv", env.landed().display()),
    ] {
        let run = env.ingest(&["--file-path", &path, "--acq-date", "2025-07-01"]);
        assert_eq!(run.code, 3, "{path}: {run:?}");
    }
    assert!(
        env.log().iter().all(|r| r.3 == "rejected"),
        "{:?}",
        env.log()
    );
}

#[test]
fn all_reads_the_newest_date_folder_or_the_one_asked() {
    let env = Env::new("ingest_acq");
    env.put("2025-06-01/people_2025-05.csv", csv(COLS, &rows()));
    env.put("2025-06-02/people_2025-06.csv", csv(COLS, &rows()));
    env.put("2025-06-02/notes.txt", "hello");
    env.put("2025-06-02/.partial_upload", "x");
    let run = env.ingest(&["--all"]);
    assert_eq!(
        run.code, 0,
        "unmatched files are reported, not fatal: {run:?}"
    );
    let out = run.json();
    assert_eq!(out["folder"], "2025-06-02");
    assert_eq!(out["accepted"], 1);
    assert_eq!(out["unmatched"], 1);
    assert_eq!(
        out["files"].as_array().unwrap().len(),
        2,
        "dot-files are skipped"
    );
    let people = |out: &serde_json::Value| {
        out["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["dataset"] == "people")
            .unwrap()
            .clone()
    };
    assert_eq!(people(&out)["period"], "2025-06");

    let run = env.ingest(&["--all", "--acq-date", "2025-06-01"]);
    assert_eq!(people(&run.json())["period"], "2025-05");
    let run = env.ingest(&[
        "--file-path",
        "people_2025-05.csv",
        "--acq-date",
        "2025-06-01",
    ]);
    assert_eq!(run.code, 0, "{run:?}");

    let run = env.ingest(&["--all", "--acq-date", "2025-07-01"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("no acquisition folder 2025-07-01/"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("2025-06-01, 2025-06-02"),
        "{}",
        run.stderr
    );
}

/// Checksums and listing of a folder, recursively.
fn snapshot(dir: &Path) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap_or_default();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let sum: u64 = bytes
                .iter()
                .enumerate()
                .map(|(i, b)| (i as u64 + 1) * *b as u64)
                .sum();
            out.push((
                p.display().to_string(),
                sum,
                format!("{:?}", meta.modified().unwrap()),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn landed_files_are_never_copied_moved_or_modified() {
    let env = Env::new("ingest_readonly");
    env.put("people_2025-01.csv", csv(COLS, &rows()));
    env.put("people_2025-02.csv", "bad,header\n");
    write_xlsx(
        &env.landed().join("people_2025-03.xlsx"),
        "Data",
        &[COLS.to_vec()],
        0,
    );
    env.put("stray.txt", "x");
    let before = snapshot(env.dir.path());
    let run = env.ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(snapshot(env.dir.path()), before);
}

#[test]
fn json_summary_counts_each_kind() {
    let env = Env::new("ingest_summary");
    env.put("people_2025-01.csv", csv(COLS, &rows()));
    env.put("people_2025-02.csv", "id\n");
    env.put("other.csv", "x\n");
    let out = env.ingest(&["--all"]).json();
    assert_eq!(
        (
            out["accepted"].as_u64(),
            out["rejected"].as_u64(),
            out["unmatched"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let out = env.ingest(&["--all"]).json();
    assert_eq!(out["unchanged"], 2);
    assert_eq!(out["accepted"], 0);
    // The rejected file seen again still fails the command, and its error
    // counts it (it said "0 file(s) rejected").
    assert_eq!(out["exit_code"], 3, "{out}");
    assert_eq!(
        out["error"],
        "1 file(s) rejected (rejected before and still in the landed zone); see each file's reason",
        "{out}"
    );
}

#[test]
fn s3_landed_dir() {
    let endpoint = s3_endpoint();
    let prefix = format!("ingest_{}", std::process::id());
    let config = CONFIG.replace(
        "landed_dir: landed",
        &format!("landed_dir: s3://pipeline-test/{prefix}"),
    );
    let env = Env::with_config("ingest_s3", &config);
    s3_put(
        &format!("{prefix}/2025-06-02/people_2025-06.csv"),
        csv(COLS, &rows()).into_bytes(),
    );
    let mut parquet = tempfile::NamedTempFile::new().unwrap();
    write_parquet(parquet.path(), COLS, &rows());
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut parquet, &mut bytes).unwrap();
    s3_put(
        &format!("{prefix}/2025-06-02/people_2025-05.parquet"),
        bytes,
    );
    s3_put(
        &format!("{prefix}/2025-06-02/people_2025-04.csv"),
        b"id,name\n".to_vec(),
    );
    s3_put(
        &format!("{prefix}/2025-06-01/people_2025-03.csv"),
        csv(COLS, &rows()).into_bytes(),
    );

    let run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "ingest", "--all"],
    )
    .envs(s3_env(&endpoint))
    .output()
    .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(out["folder"], "2025-06-02");
    assert_eq!(out["accepted"], 2, "{out}");
    assert_eq!(out["rejected"], 1, "{out}");
    let uris: Vec<&str> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["source_uri"].as_str().unwrap())
        .collect();
    assert!(
        uris.iter()
            .all(|u| u.starts_with(&format!("s3://pipeline-test/{prefix}/2025-06-02/"))),
        "{uris:?}"
    );

    let run = command(
        env.dir.path(),
        Some(&env.db.url),
        &[
            "--json",
            "ingest",
            "--file-path",
            "2025-06-01/people_2025-03.csv",
        ],
    )
    .envs(s3_env(&endpoint))
    .output()
    .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["period"], "2025-03");

    // validate streams the object from S3 (CSV) or reads it whole (Parquet).
    for period in ["2025-03", "2025-05"] {
        let run = command(
            env.dir.path(),
            Some(&env.db.url),
            &[
                "--json",
                "validate",
                "--dataset",
                "people",
                "--period",
                period,
            ],
        )
        .envs(s3_env(&endpoint))
        .output()
        .unwrap();
        let run = Run::from(run);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(run.json()["rows_valid"], 2, "{period}");
    }
}

const ODD_NAMES: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  u:
    file_pattern: '^u_(?P<period>\d{4}-\d{2}).*\.csv$'
    period: month
    columns:
      id: { type: int }
"#;

/// Any name the file system allows is ingested or refused with its reason, never
/// stops the other files, and never reaches the pretty log raw (a newline would
/// forge a line, ESC would reach the terminal).
#[test]
fn odd_file_names_are_ingested_or_refused_alone() {
    let env = Env::with_config("ingest_odd_names", ODD_NAMES);
    let accepted = [
        "u_2025-01_é.csv",
        "u_2025-02_#.csv",
        "u_2025-03_%41.csv",
        "u_2025-04_ü ß.csv",
    ];
    for name in accepted {
        env.put(name, "id\n1\n");
    }
    let refused = [
        "u_2025-05\nforged INFO line.csv",
        "u_2025-06\u{1b}[31mred.csv",
        "u_2025-07#12",
        "u_\u{ff12}\u{ff10}\u{ff12}\u{ff15}-08.csv",
        "u_2025-09.csv\u{200b}",
    ];
    for name in refused {
        env.put(name, "id\n1\n");
    }
    let run = env.ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(out["accepted"], accepted.len(), "{out}");
    assert_eq!(
        out["rejected"].as_u64().unwrap() + out["unmatched"].as_u64().unwrap(),
        refused.len() as u64,
        "{out}"
    );
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    assert!(
        !run.stderr.lines().any(|l| l.starts_with("forged")),
        "{}",
        run.stderr
    );
    // The accepted ones are readable by validate too.
    for period in ["2025-01", "2025-02", "2025-03", "2025-04"] {
        let v = env.run(&["validate", "--dataset", "u", "--period", period]);
        assert_eq!(v.code, 0, "{period}: {v:?}");
        assert_eq!(v.json()["rows_valid"], 1, "{period}");
    }
}

#[test]
fn s3_keys_with_non_ascii_names_are_read() {
    let endpoint = s3_endpoint();
    let prefix = format!("odd_{}", std::process::id());
    let config = ODD_NAMES.replace(
        "landed_dir: landed",
        &format!("landed_dir: s3://pipeline-test/{prefix}"),
    );
    let env = Env::with_config("ingest_s3_odd", &config);
    s3_put(&format!("{prefix}/u_2025-01_é.csv"), b"id\n1\n".to_vec());
    s3_put(&format!("{prefix}/u_2025-02_#%41.csv"), b"id\n1\n".to_vec());
    let run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "ingest", "--all"],
    )
    .envs(s3_env(&endpoint))
    .output()
    .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["accepted"], 2, "{run:?}");
    let v = command(
        env.dir.path(),
        Some(&env.db.url),
        &[
            "--json",
            "validate",
            "--dataset",
            "u",
            "--period",
            "2025-01",
        ],
    )
    .envs(s3_env(&endpoint))
    .output()
    .unwrap();
    let v = Run::from(v);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["rows_valid"], 1);
}

/// An S3 key object_store cannot represent (a `..` or empty segment) fails its
/// whole listing page: it must be refused by name while the files beside it,
/// in the landed dir and in a date folder, are ingested.
#[test]
fn s3_keys_with_dot_dot_or_empty_segments_do_not_hide_the_others() {
    let endpoint = s3_endpoint();
    let prefix = format!("dotdot_{}", std::process::id());
    let config = ODD_NAMES.replace(
        "landed_dir: landed",
        &format!("landed_dir: s3://pipeline-test/{prefix}"),
    );
    let env = Env::with_config("ingest_s3_dotdot", &config);
    s3_put(&format!("{prefix}/u_2025-01.csv"), b"id\n1\n".to_vec());
    s3_put_raw(&format!("{prefix}/../u_2025-02.csv"), b"id\n1\n");
    s3_put_raw(&format!("{prefix}//u_2025-03.csv"), b"id\n1\n");
    s3_put_raw(&format!("{prefix}/.."), b"id\n1\n");
    let ingest = |args: &[&str]| {
        let mut all = vec!["--json", "ingest"];
        all.extend_from_slice(args);
        Run::from(
            command(env.dir.path(), Some(&env.db.url), &all)
                .envs(s3_env(&endpoint))
                .output()
                .unwrap(),
        )
    };
    let run = ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.json()["accepted"], 1, "{run:?}");
    assert_eq!(run.json()["rejected"], 1, "the `..` object: {run:?}");
    assert!(run.stderr.contains("`..`"), "{}", run.stderr);

    // The same inside a date folder, which is listed on its own.
    s3_put(
        &format!("{prefix}/2025-06-01/u_2025-04.csv"),
        b"id\n1\n".to_vec(),
    );
    s3_put_raw(&format!("{prefix}/2025-06-01/.."), b"id\n1\n");
    s3_put_raw(&format!("{prefix}/2025-06-01//x"), b"id\n1\n");
    let run = ingest(&["--all"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.json()["accepted"], 1, "{run:?}");
    let accepted: Vec<_> = env
        .log()
        .into_iter()
        .filter(|r| r.3 == "accepted")
        .filter_map(|r| r.2)
        .collect();
    assert_eq!(accepted, ["2025-01", "2025-04"]);
}

#[test]
fn odd_targets_get_messages_that_say_what_they_are() {
    let env = Env::new("ingest_odd_targets");
    let run = env.ingest(&["--file-path", ""]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--file-path is empty"),
        "{}",
        run.stderr
    );

    std::fs::create_dir_all(env.landed().join("people_2025-01.csv")).unwrap();
    let run = env.ingest_file("people_2025-01.csv");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("is a directory, not a file"),
        "{}",
        run.stderr
    );
    assert!(
        env.log().is_empty(),
        "neither is a landed file: {:?}",
        env.log()
    );

    for (name, body, says) in [
        ("people_2025-02.csv", "\n\n  \r\n", "only blank lines"),
        ("people_2025-03.csv", "\u{feff}", "only a byte-order mark"),
    ] {
        env.put(name, body);
        assert_rejected(&env, &env.ingest_file(name), says);
    }
}

/// A "folder" marker (the S3 console's "create folder" writes `prefix/`) is no
/// file: not ingested, not rejected, whether listed at the root or as a folder.
#[test]
fn s3_folder_markers_are_skipped() {
    let endpoint = s3_endpoint();
    let prefix = format!("markers_{}", std::process::id());
    let config = ODD_NAMES.replace(
        "landed_dir: landed",
        &format!("landed_dir: s3://pipeline-test/{prefix}"),
    );
    let env = Env::with_config("ingest_s3_markers", &config);
    s3_put_raw(&format!("{prefix}/"), b"");
    s3_put_raw(&format!("{prefix}/sub/"), b"");
    s3_put(&format!("{prefix}/u_2025-01.csv"), b"id\n1\n".to_vec());
    let run = Run::from(
        command(
            env.dir.path(),
            Some(&env.db.url),
            &["--json", "ingest", "--all"],
        )
        .envs(s3_env(&endpoint))
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["accepted"], 1, "{run:?}");
    assert_eq!(run.json()["rejected"], 0, "{run:?}");
    assert_eq!(env.log().len(), 1, "only the file is logged");
}

#[test]
fn ten_concurrent_ingests_of_the_same_file_spend_one_id() {
    let p = Project::new("ingest_concurrent_ids", CONFIG);
    std::fs::write(
        p.path("landed/people_2025-01.csv"),
        "id,name,score\n1,A,1\n",
    )
    .unwrap();
    std::fs::write(p.path("landed/stray.txt"), "no dataset matches").unwrap();
    // The table held: all ten pile up on their first statement and go at once.
    let mut holder = p.db.client();
    let mut tx = holder.transaction().unwrap();
    tx.execute("LOCK TABLE meta.ingestion_log IN EXCLUSIVE MODE", &[])
        .unwrap();
    let children: Vec<_> = (0..10)
        .map(|_| {
            command(
                p.dir.path(),
                Some(&p.db.url),
                &["--json", "ingest", "--all"],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tx.commit().unwrap();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let row =
        p.db.client()
            .query_one("SELECT count(*), max(id) FROM meta.ingestion_log", &[])
            .unwrap();
    let (rows, max): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((rows, max), (2, 2), "one row and one id per version");
}
