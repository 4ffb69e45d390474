//! Integrity from file to stage: validate and load never disagree, a crash
//! between any two commits is repaired by one more `run`, lineage (not counts)
//! decides "already loaded", and a bad delivery cannot replace good rows.

use std::path::PathBuf;

use crate::files::*;
use crate::support::*;

const CONFIG: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{4}-\d{2})\.csv$'
    period: month
    primary_key: [id]
    max_rejected_ratio: 0.9
    columns:
      id:     { type: int, required: true }
      amount: { type: float, min: 0 }
      note:   { type: string }
"#;

struct Env(Project);

impl std::ops::Deref for Env {
    type Target = Project;
    fn deref(&self) -> &Project {
        &self.0
    }
}

impl Env {
    fn new(test: &str) -> Env {
        Env(Project::new(test, CONFIG))
    }

    fn landed(&self, period: &str) -> PathBuf {
        self.path(&format!("landed/sales_{period}.csv"))
    }

    /// Lands `sales_<period>.csv` with ids `ids` and every amount `amount`.
    fn deliver(&self, period: &str, ids: impl Iterator<Item = i64>, amount: &str) {
        self.land_rows(
            period,
            ids.map(|i| (i, amount.to_owned(), format!("note {i}"))),
        );
    }

    /// Lands `sales_<period>.csv` with these (id, amount, note) rows.
    fn land_rows(&self, period: &str, rows: impl Iterator<Item = (i64, String, String)>) {
        let rows: Vec<[String; 3]> = rows.map(|(i, a, n)| [i.to_string(), a, n]).collect();
        let rows: Vec<Vec<&str>> = rows
            .iter()
            .map(|r| r.iter().map(String::as_str).collect())
            .collect();
        std::fs::write(self.landed(period), csv(&["id", "amount", "note"], &rows)).unwrap();
    }

    fn ingest(&self, period: &str) -> Run {
        let path = self.landed(period);
        self.run(&["ingest", "--file-path", path.to_str().unwrap()])
    }

    /// `validate` with a crash point armed.
    fn validate_crashing(&self, period: &str, point: &str) -> Run {
        command(
            self.dir.path(),
            Some(&self.db.url),
            &["validate", "--dataset", "sales", "--period", period],
        )
        .env("PIPELINE_FAULT", point)
        .output()
        .unwrap()
        .into()
    }

    fn period_args<'a>(&self, cmd: &'a str, period: &'a str) -> Vec<&'a str> {
        vec![cmd, "--dataset", "sales", "--period", period]
    }

    /// (rows, distinct amounts) of the period in stage.
    fn stage(&self, period: &str) -> (i64, Vec<f64>) {
        let mut c = self.db.client();
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM stage.sales WHERE _data_period = $1",
                &[&period],
            )
            .unwrap()
            .get(0);
        let amounts = c
            .query(
                "SELECT DISTINCT amount FROM stage.sales WHERE _data_period = $1 ORDER BY 1",
                &[&period],
            )
            .unwrap()
            .iter()
            .map(|r| r.get::<_, f64>(0))
            .collect();
        (n, amounts)
    }

    fn scalar_i64(&self, sql: &str) -> i64 {
        self.db.client().query_one(sql, &[]).unwrap().get(0)
    }
}

/// A crash after the Delta commits and before the verdict row: load-stage keeps
/// loading what the last verdict named, check-counts does not skip, and one more
/// `run` validates again and loads the new file. Fails on a main that loads "the
/// latest" Delta head.
#[test]
fn a_crash_between_validate_commits_never_reaches_stage_and_run_repairs_it() {
    for point in ["validate-after-cleaned", "validate-after-delta"] {
        let env = Env::new("crash_seam");
        env.deliver("2025-01", 1..=10, "1");
        let first = env.run(&["run", "--period", "2025-01"]);
        assert_eq!(first.code, 0, "{first:?}");
        assert_eq!(env.stage("2025-01"), (10, vec![1.0]));

        // A corrected re-delivery with the same row count; validate dies mid-way.
        env.deliver("2025-01", 1..=10, "2");
        assert_eq!(env.ingest("2025-01").code, 0);
        let crashed = env.validate_crashing("2025-01", point);
        assert_ne!(crashed.code, 0, "{point}: {crashed:?}");
        assert!(crashed.stderr.contains(point), "{crashed:?}");

        // The Delta head holds the new rows, but no verdict names them.
        let load = env.run(&env.period_args("load-stage", "2025-01"));
        assert_eq!(load.code, 0, "{point}: {load:?}");
        assert_eq!(
            env.stage("2025-01"),
            (10, vec![1.0]),
            "{point}: stage must hold only rows of the last finished validation"
        );
        let check = env.run(&env.period_args("check-counts", "2025-01"));
        assert_eq!(check.code, 0, "{point}: must not skip: {check:?}");

        let repair = env.run(&["run", "--period", "2025-01"]);
        assert_eq!(repair.code, 0, "{point}: {repair:?}");
        assert_eq!(env.stage("2025-01"), (10, vec![2.0]), "{point}");
        let again = env.run(&["run", "--period", "2025-01"]);
        assert_eq!(again.code, 99, "{point}: {again:?}");
        let check = env.run(&env.period_args("check-counts", "2025-01"));
        assert_eq!(check.code, 99, "{point}: {check:?}");
        // The interrupted attempt is visible to operators.
        let status = env.run(&["status", "--period", "2025-01"]);
        assert_eq!(status.code, 0, "{status:?}");
    }
}

/// Two periods of one dataset validated again at the same time: each replaces
/// only its own period; the commit that comes second is checked against the
/// first (it removed none of the same files) and lands on the next version.
#[test]
fn two_periods_revalidated_at_once_both_land() {
    let env = Env::new("concurrent_periods");
    let periods = ["2025-04", "2025-05", "2025-06"];
    for (amount, validate) in [("1", true), ("2", false)] {
        for p in periods {
            env.deliver(p, 1..=20_000, amount);
            assert_eq!(env.ingest(p).code, 0);
            if validate {
                assert_eq!(env.run(&env.period_args("validate", p)).code, 0);
            }
        }
    }
    let children: Vec<_> = periods
        .iter()
        .map(|p| {
            command(
                env.dir.path(),
                Some(&env.db.url),
                &env.period_args("validate", p),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        wait_ok(child);
    }
    let rows = delta_rows(
        &env.path("stage/cleaned/sales"),
        "SELECT _data_period, count(*), min(amount), max(amount) FROM t GROUP BY 1 ORDER BY 1",
    );
    let want: Vec<Vec<String>> = periods
        .iter()
        .map(|p| vec![p.to_string(), "20000".into(), "2.0".into(), "2.0".into()])
        .collect();
    assert_eq!(rows, want);
}

/// Two first runs of one period at once, on a fresh project (no cleaned table
/// yet), several times: one validates, the other waits for it; the period's
/// rows are never doubled, in Delta or in stage.
#[test]
fn two_first_runs_of_one_period_at_once_never_double_its_rows() {
    for round in 0..3 {
        let env = Env::new(&format!("concurrent_first_{round}"));
        env.deliver("2025-06", 1..=20_000, "1");
        let children: Vec<_> = (0..2)
            .map(|_| {
                command(
                    env.dir.path(),
                    Some(&env.db.url),
                    &["--json", "run", "--period", "2025-06"],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(99),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rows = delta_rows(
            &env.path("stage/cleaned/sales"),
            "SELECT count(*) FROM t WHERE _data_period = '2025-06'",
        );
        assert_eq!(rows[0][0], "20000", "round {round}: the Delta head");
        assert_eq!(
            env.scalar_i64("SELECT count(*) FROM stage.sales"),
            20_000,
            "round {round}: stage"
        );
        assert_eq!(
            env.scalar_i64(
                "SELECT count(*) FROM meta.validation_log WHERE status = 'passed' AND rows_valid <> 20000"
            ),
            0
        );
    }
}

/// Keys that outgrow their share of the pool are spilled to temporary files;
/// when those cannot be written (here the temporary directory does not exist;
/// in production, a full disk) the one read stops, the pre-pass is tried and
/// fails the same way: a runtime failure naming the path, no score, nothing
/// committed.
#[test]
fn keys_that_cannot_spill_fail_the_validation_naming_the_path() {
    let config = CONFIG.replace("datasets:", "limits:\n  memory_bytes: 16777216\ndatasets:");
    let env = Env(Project::new("spill_fails", &config));
    // 600,000 distinct keys: over a quarter (one read) and half (pre-pass) of 16 MiB.
    env.deliver("2025-11", 1..=600_000, "1");
    assert_eq!(env.ingest("2025-11").code, 0);
    let missing = env.path("no-such-tmp");
    let v: Run = command(
        env.dir.path(),
        Some(&env.db.url),
        &[
            "--json",
            "validate",
            "--dataset",
            "sales",
            "--period",
            "2025-11",
        ],
    )
    .env("TMPDIR", &missing)
    .output()
    .unwrap()
    .into();
    assert_eq!(v.code, 1, "{v:?}");
    assert!(
        v.stderr
            .contains("the keys could not be written to a temporary file"),
        "the one read stopped on the spill: {}",
        v.stderr
    );
    let err = v.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("finding duplicated keys") && err.contains(missing.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.validation_log WHERE status = 'error'"),
        1
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM reporting.monitoring_file_data_quality"),
        0,
        "no quality score for a runtime failure"
    );
    assert!(!env.path("stage/cleaned/sales/_delta_log").exists());
}

/// A crash inside load-stage's transaction leaves the period as it was.
#[test]
fn a_crash_before_the_load_commits_keeps_the_previous_rows() {
    let env = Env::new("crash_load");
    env.deliver("2025-01", 1..=10, "1");
    assert_eq!(env.run(&["run", "--period", "2025-01"]).code, 0);
    env.deliver("2025-01", 1..=12, "3");
    assert_eq!(env.ingest("2025-01").code, 0);
    assert_eq!(env.run(&env.period_args("validate", "2025-01")).code, 0);
    let crashed: Run = command(
        env.dir.path(),
        Some(&env.db.url),
        &env.period_args("load-stage", "2025-01"),
    )
    .env("PIPELINE_FAULT", "load-before-commit")
    .output()
    .unwrap()
    .into();
    assert_ne!(crashed.code, 0, "{crashed:?}");
    assert_eq!(env.stage("2025-01"), (10, vec![1.0]));
    let repair = env.run(&["run", "--period", "2025-01"]);
    assert_eq!(repair.code, 0, "{repair:?}");
    assert_eq!(env.stage("2025-01"), (12, vec![3.0]));
}

/// check-counts compares lineage: a corrected file with the same number of rows
/// is not "already loaded" (the seed's count signal stays in the JSON).
#[test]
fn check_counts_does_not_skip_a_corrected_file_with_the_same_count() {
    let env = Env::new("same_count");
    env.deliver("2025-02", 1..=5, "1");
    assert_eq!(env.run(&["run", "--period", "2025-02"]).code, 0);
    let skip = env.run(&env.period_args("check-counts", "2025-02"));
    assert_eq!(skip.code, 99, "{skip:?}");
    assert_eq!(skip.json()["counts_match"], true);

    env.deliver("2025-02", 1..=5, "7");
    assert_eq!(env.ingest("2025-02").code, 0);
    // Before validation: the current file is not the validated one.
    let check = env.run(&env.period_args("check-counts", "2025-02"));
    assert_eq!(check.code, 0, "{check:?}");
    assert_eq!(env.run(&env.period_args("validate", "2025-02")).code, 0);
    let check = env.run(&env.period_args("check-counts", "2025-02"));
    assert_eq!(check.code, 0, "{check:?}");
    let out = check.json();
    assert_eq!(out["counts_match"], true, "same counts: {out}");
    assert_ne!(out["validation_id"], out["loaded_validation_id"], "{out}");
    assert_eq!(env.run(&env.period_args("load-stage", "2025-02")).code, 0);
    assert_eq!(env.stage("2025-02"), (5, vec![7.0]));
    assert_eq!(
        env.run(&env.period_args("check-counts", "2025-02")).code,
        99
    );

    // And through `run`.
    env.deliver("2025-02", 1..=5, "8");
    let run = env.run(&["run", "--period", "2025-02"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.stage("2025-02"), (5, vec![8.0]));
}

/// The bytes validated are the bytes ingested: a file rewritten in place with
/// its size and modification time kept is caught by the digest of what was read.
#[test]
fn a_file_changed_after_ingest_is_not_validated() {
    let env = Env::new("changed_bytes");
    // Another period first: the Delta tables exist, so the write below is the
    // replace of a period by our own commit, which must not commit either.
    env.deliver("2025-02", 1..=5, "1");
    assert_eq!(env.ingest("2025-02").code, 0);
    assert_eq!(env.run(&env.period_args("validate", "2025-02")).code, 0);
    env.deliver("2025-03", 1..=20, "1");
    assert_eq!(env.ingest("2025-03").code, 0);
    let path = env.landed("2025-03");
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(",1,", ",9,");
    std::fs::write(&path, &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    let run = env.run(&env.period_args("validate", "2025-03"));
    assert_eq!(run.code, 1, "{run:?}");
    let err = run.json()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("changed while it was being read"), "{err}");
    let finished = "SELECT count(*) FROM meta.validation_log WHERE status IN ('passed', 'failed')";
    assert_eq!(env.scalar_i64(finished), 1, "only February's");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM reporting.monitoring_file_data_quality"),
        1,
        "no quality score for a runtime failure"
    );
    for table in ["cleaned", "quarantine"] {
        let log = env.path(&format!("stage/{table}/sales/_delta_log"));
        assert!(log.join("00000000000000000000.json").exists());
        assert!(
            !log.join("00000000000000000001.json").exists(),
            "nothing committed to the {table} table"
        );
    }
    let load = env.run(&env.period_args("load-stage", "2025-03"));
    assert_eq!(load.code, 3, "{load:?}");
}

/// A file whose every row is rejected scores well enough to pass (bounds only
/// deduct 15) but would empty the period: refused, unless --force, which is recorded.
#[test]
fn an_all_rejected_file_cannot_empty_a_loaded_period() {
    let env = Env::new("all_rejected");
    env.deliver("2025-04", 1..=10, "1");
    assert_eq!(env.run(&["run", "--period", "2025-04"]).code, 0);

    env.deliver("2025-04", 1..=10, "-5");
    assert_eq!(env.ingest("2025-04").code, 0);
    let v = env.run(&env.period_args("validate", "2025-04"));
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["score"], 85);
    assert_eq!(v.json()["rows_valid"], 0);
    let load = env.run(&env.period_args("load-stage", "2025-04"));
    assert_eq!(load.code, 3, "{load:?}");
    assert!(
        load.json()["error"].as_str().unwrap().contains("zero_rows"),
        "{load:?}"
    );
    assert_eq!(env.stage("2025-04"), (10, vec![1.0]));

    let run = env.run(&["run", "--period", "2025-04"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(env.stage("2025-04"), (10, vec![1.0]));

    let mut forced = env.period_args("load-stage", "2025-04");
    forced.push("--force");
    let load = env.run(&forced);
    assert_eq!(load.code, 0, "{load:?}");
    assert_eq!(env.stage("2025-04").0, 0);
    let overrides: Vec<String> = env
        .db
        .client()
        .query_one(
            "SELECT overrides FROM meta.load_log WHERE status = 'loaded' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(overrides.contains(&"zero_rows".to_owned()), "{overrides:?}");
    assert!(
        overrides.contains(&"rejected_ratio".to_owned()),
        "{overrides:?}"
    );
}

/// Every key twice: uniqueness deducts 10 (score 90, passed) and quarantines
/// every row, so the replace would empty the period.
#[test]
fn an_all_duplicate_file_is_refused_by_the_zero_rows_gate() {
    let env = Env::new("all_dups");
    env.deliver("2025-05", (1..=6).chain(1..=6), "1");
    assert_eq!(env.ingest("2025-05").code, 0);
    let v = env.run(&env.period_args("validate", "2025-05"));
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["score"], 90);
    assert_eq!(v.json()["rows_rejected"], 12);
    let load = env.run(&env.period_args("load-stage", "2025-05"));
    assert_eq!(load.code, 3, "{load:?}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.load_log WHERE status = 'loaded'"),
        0
    );
}

/// A delivery with far fewer rows than the period holds is refused (max_shrink
/// 0.5 by default) inside the load's transaction; --force loads it.
#[test]
fn a_much_smaller_delivery_is_refused_by_the_shrink_gate() {
    let env = Env::new("shrink");
    env.deliver("2025-06", 1..=10, "1");
    assert_eq!(env.run(&["run", "--period", "2025-06"]).code, 0);
    env.deliver("2025-06", 1..=3, "2");
    let run = env.run(&["run", "--period", "2025-06"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("shrink"), "{run:?}");
    assert_eq!(env.stage("2025-06"), (10, vec![1.0]));
    // A delivery within the bound is fine.
    env.deliver("2025-06", 1..=6, "3");
    let run = env.run(&["run", "--period", "2025-06"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(env.stage("2025-06"), (6, vec![3.0]));
}

/// `--parquet-path` is checked like any source: a file lacking a required column
/// is refused and the period keeps its rows.
#[test]
fn parquet_path_missing_required_columns_is_refused() {
    let env = Env::new("parquet_checked");
    env.deliver("2025-07", 1..=4, "1");
    assert_eq!(env.run(&["run", "--period", "2025-07"]).code, 0);
    let bad = env.path("bad.parquet");
    write_parquet(&bad, &["note"], &[vec!["a"], vec!["b"]]);
    let mut args = env.period_args("load-stage", "2025-07");
    args.extend(["--parquet-path", bad.to_str().unwrap()]);
    let load = env.run(&args);
    assert_eq!(load.code, 3, "{load:?}");
    let err = load.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("schema") && err.contains("`id` is missing"),
        "{err}"
    );
    assert_eq!(env.stage("2025-07"), (4, vec![1.0]));

    let text = env.path("text.parquet");
    write_parquet(
        &text,
        &["id", "amount", "note"],
        &[
            vec!["1", "2.5", "x"],
            vec!["two", "1", "y"],
            vec!["3", "1", "z"],
            vec!["4", "1", "w"],
        ],
    );
    let mut args = env.period_args("load-stage", "2025-07");
    args.extend(["--parquet-path", text.to_str().unwrap()]);
    let load = env.run(&args);
    assert_eq!(load.code, 3, "{load:?}");
    let err = load.json()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("1 values of `id` are not int"), "{err}");

    // A CSV given by mistake is a usage error (exit 2), not a failed load.
    let csv = env.path("rows.csv");
    std::fs::write(&csv, "id,amount,note\n1,2.5,x\n").unwrap();
    let mut args = env.period_args("load-stage", "2025-07");
    args.extend(["--parquet-path", csv.to_str().unwrap()]);
    let load = env.run(&args);
    assert_eq!(load.code, 2, "{load:?}");
    let err = load.json()["error"].as_str().unwrap().to_owned();
    assert!(err.contains("is not a Parquet file"), "{err}");
    assert_eq!(env.stage("2025-07"), (4, vec![1.0]));
}

/// A `--parquet-path` file goes through the dataset's rules and keys like a
/// delivery: rows breaking them refuse the load (exit 3, naming each rule),
/// and `--force` loads it with the `rules` override recorded.
#[test]
fn parquet_path_rows_breaking_the_rules_are_refused_unless_forced() {
    let env = Env::new("parquet_rules");
    env.deliver("2025-07", 1..=4, "1");
    assert_eq!(env.run(&["run", "--period", "2025-07"]).code, 0);
    let bad = env.path("rules.parquet");
    write_parquet(
        &bad,
        &["id", "amount", "note"],
        &[
            vec!["1", "-5", "x"],
            vec!["2", "1", "y"],
            vec!["2", "1", "z"],
            vec!["3", "-1", "w"],
        ],
    );
    let mut args = env.period_args("load-stage", "2025-07");
    args.extend(["--parquet-path", bad.to_str().unwrap()]);
    let load = env.run(&args);
    assert_eq!(load.code, 3, "{load:?}");
    let err = load.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("2 rows break amount.min") && err.contains("2 rows repeat a key of (id)"),
        "{err}"
    );
    assert_eq!(env.stage("2025-07"), (4, vec![1.0]));
    args.push("--force");
    assert_eq!(env.run(&args).code, 0);
    assert_eq!(
        env.scalar_i64(
            "SELECT count(*) FROM meta.load_log WHERE 'rules' = ANY(overrides) AND status = 'loaded'"
        ),
        1
    );
}

/// Uniqueness within a small memory pool when most keys repeat: the duplicated
/// keys (each a 16-byte fingerprint, sorted and indexed for the lookup) are
/// held in a quarter of the pool, and every row is still counted. Past that quarter
/// the file fails as a runtime failure that says which limit to raise, never
/// by exhausting the pool mid-write.
#[test]
fn many_repeated_keys_validate_within_a_small_memory_pool() {
    let config = CONFIG.replace("datasets:", "limits:\n  memory_bytes: 33554432\ndatasets:");
    let env = Env(Project::new("many_dups", &config));
    let n = 900_000i64;
    env.deliver("2025-08", (0..n).map(|i| i / 3), "1");
    assert_eq!(env.ingest("2025-08").code, 0);
    let v = env.run(&env.period_args("validate", "2025-08"));
    assert_eq!(v.code, 0, "{v:?}");
    let out = v.json();
    assert_eq!(out["duplicate_check"], "pre_pass", "{out}");
    assert_eq!(out["rows_in"], n);
    assert_eq!(out["rows_rejected"], n, "every row is in a duplicated key");

    // Few duplicates: only they are rejected.
    env.deliver("2025-09", (0..1000).chain(0..3), "1");
    assert_eq!(env.ingest("2025-09").code, 0);
    let v = env.run(&env.period_args("validate", "2025-09"));
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["duplicate_check"], "pre_pass");
    assert_eq!(v.json()["rows_rejected"], 6);

    // 300,000 duplicated keys (16 bytes each) outgrow a quarter of an 8 MiB
    // pool: a clear failure.
    let config = CONFIG.replace("datasets:", "limits:\n  memory_bytes: 8388608\ndatasets:");
    let env = Env(Project::new("many_dups_small", &config));
    env.deliver("2025-10", (0..600_000i64).map(|i| i / 2), "1");
    assert_eq!(env.ingest("2025-10").code, 0);
    let v = env.run(&env.period_args("validate", "2025-10"));
    assert_eq!(v.code, 1, "{v:?}");
    let err = v.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("finding duplicated keys")
            && err.contains("keys occur more than once")
            && err.contains("raise limits.memory_bytes"),
        "{err}"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.validation_log WHERE status = 'error'"),
        1
    );
}

/// A keyed file with no repeated key is read once: its keys are remembered as
/// the rows stream, in at most a quarter of the pool, and written to sorted runs on
/// disk when that fills (whatever the header guessed of the rows), so any size
/// is read once. A repeated key, seen as the rows stream or only when the runs
/// are merged, commits nothing: the file is validated again with the key-only
/// pre-pass, and the dataset's next delivery reads its keys first.
#[test]
fn keys_are_checked_in_the_one_read_and_a_repeat_reads_them_first() {
    // An 8 MiB pool: the key set may take 2 MiB, 131 072 buckets (114 688 keys)
    // with the room to sort them.
    let config = CONFIG.replace("datasets:", "limits:\n  memory_bytes: 8388608\ndatasets:");
    let env = Env(Project::new("in_pass", &config));
    let validate = |period: &str| {
        assert_eq!(env.ingest(period).code, 0);
        let v = env.run(&env.period_args("validate", period));
        assert_eq!(v.code, 0, "{v:?}");
        let out = v.json();
        let counts = ["rows_in", "rows_valid", "rows_rejected"].map(|c| out[c].as_i64().unwrap());
        (
            out["duplicate_check"].as_str().unwrap().to_owned(),
            counts,
            v.stderr,
        )
    };
    env.deliver("2025-08", 0..100_000, "1");
    let (pass, counts, log) = validate("2025-08");
    assert_eq!((pass.as_str(), counts), ("in_pass", [100_000, 100_000, 0]));
    assert!(!log.contains("key_pre_pass"), "{log}");

    // 600 000 keys: more than the set holds, so sorted runs, merged at the end.
    env.deliver("2025-09", 0..600_000, "1");
    let (pass, counts, log) = validate("2025-09");
    assert_eq!((pass.as_str(), counts), ("in_pass", [600_000, 600_000, 0]));
    assert!(!log.contains("key_pre_pass"), "{log}");

    // 1 000 rows of 2 kB, then 400 000 short ones: the first MiB promises ~5 000 rows.
    let long = "x".repeat(2000);
    let rows: Vec<Vec<String>> = (0..401_000i64)
        .map(|i| {
            let note = if i < 1000 {
                long.clone()
            } else {
                format!("n{i}")
            };
            vec![i.to_string(), "1".into(), note]
        })
        .collect();
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    std::fs::write(env.landed("2025-10"), csv(&["id", "amount", "note"], &rows)).unwrap();
    let (pass, counts, _) = validate("2025-10");
    assert_eq!((pass.as_str(), counts), ("in_pass", [401_000, 401_000, 0]));

    // Key 0 again after 600 000 others: only the merge of the runs sees it.
    env.deliver("2025-11", (0..600_000).chain([0]), "1");
    let (pass, counts, log) = validate("2025-11");
    assert_eq!((pass.as_str(), counts), ("pre_pass", [600_001, 599_999, 2]));
    assert!(
        log.contains("key 0 occurs more than once: reading the keys first"),
        "{log}"
    );
    // The aborted read committed nothing: one cleaned version per validation.
    let cleaned = env.path("stage/cleaned/sales/_delta_log");
    let commits = std::fs::read_dir(cleaned)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(commits, 4, "one commit per validated period");

    // The dataset repeats keys: its next delivery reads the keys first at once,
    // and once that one had none, the one after is read once again.
    for (period, expected) in [("2025-12", "pre_pass"), ("2026-01", "in_pass")] {
        env.deliver(period, 0..1000, "1");
        let (pass, counts, log) = validate(period);
        assert_eq!(
            (pass.as_str(), counts),
            (expected, [1000, 1000, 0]),
            "{period}"
        );
        assert_eq!(
            log.contains("found repeated keys: reading the keys first"),
            period == "2025-12",
            "{log}"
        );
    }
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.validation_log WHERE duplicated_rows > 0 AND duplicate_check = 'pre_pass'"),
        1
    );
}

/// A pool too small for the work is a runtime failure: exit 1 with the cause,
/// no score, no reporting rows, and the previous verdict stays in force.
#[test]
fn running_out_of_memory_is_a_runtime_failure_not_a_score() {
    let config = CONFIG.replace("datasets:", "limits:\n  memory_bytes: 4096\ndatasets:");
    let env = Env(Project::new("oom", &config));
    env.deliver("2025-10", (0..30_000).map(|i| i / 2), "1");
    assert_eq!(env.ingest("2025-10").code, 0);
    let v = env.run(&env.period_args("validate", "2025-10"));
    assert_eq!(v.code, 1, "{v:?}");
    let err = v.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("runtime failure") && err.to_lowercase().contains("resources exhausted"),
        "{err}"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.validation_log WHERE score IS NOT NULL"),
        0
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM meta.validation_log WHERE status = 'error'"),
        1
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM reporting.monitoring_file_data_quality"),
        0
    );
}

/// `status --check --deep` finds what counts cannot: a stage row edited in
/// place (same count) and a Parquet file of the verdict deleted from the
/// lake; each named, with the command that repairs it.
#[test]
fn status_deep_finds_rows_edited_in_place_and_lost_lake_files() {
    let env = Env::new("status_deep");
    env.deliver("2025-07", 1..=5, "2");
    env.deliver("2025-08", 1..=3, "4");
    assert_eq!(
        env.run(&["run", "--from", "2025-07", "--to", "2025-08"])
            .code,
        0
    );
    let deep = env.run(&["status", "--check", "--deep"]);
    assert_eq!(deep.code, 0, "{deep:?}");

    env.db
        .client()
        .batch_execute(
            "UPDATE stage.sales SET amount = 99 WHERE id = 2 AND _data_period = '2025-07'",
        )
        .unwrap();
    assert_eq!(
        env.run(&["status", "--check"]).code,
        0,
        "counts alone miss it"
    );
    let deep = env.run(&["status", "--check", "--deep"]);
    assert_eq!(deep.code, 3, "{deep:?}");
    let text = deep.stdout.clone();
    assert!(
        text.contains("1 row(s) only in stage, 1 only in the lake")
            && text.contains("load-stage --dataset sales --period 2025-07"),
        "{text}"
    );
    let json = deep.json();
    let august = json["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["period"] == "2025-08")
        .unwrap();
    assert_eq!(
        august["problems"],
        serde_json::json!([]),
        "August untouched: {text}"
    );
    let load = env.run(&[
        "load-stage",
        "--dataset",
        "sales",
        "--period",
        "2025-07",
        "--force",
    ]);
    assert_eq!(load.code, 0, "{load:?}");
    assert_eq!(env.run(&["status", "--check", "--deep"]).code, 0);

    // A Parquet file of August's verdict deleted from the lake.
    let dir = env.path("stage/cleaned/sales/_data_period=2025-08");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .expect("a Parquet file of August")
        .path();
    std::fs::remove_file(&file).unwrap();
    let deep = env.run(&["status", "--check", "--deep"]);
    assert_eq!(deep.code, 3, "{deep:?}");
    assert!(
        deep.stdout.contains("Parquet file(s) of the cleaned rows")
            && deep
                .stdout
                .contains("pipeline validate --dataset sales --period 2025-08"),
        "{}",
        deep.stdout
    );
}

/// A corrected re-delivery diffed by key before it is loaded: `pipeline
/// diff` says exactly which keys were removed and changed, in which column;
/// the drift gate's `changed_keys` refuses it when it rewrites too much of
/// the loaded period, naming the measure, and `--force` loads it.
#[test]
fn a_redelivery_is_diffed_by_key_and_changed_keys_gates_it() {
    let config = CONFIG.replace(
        "    max_rejected_ratio: 0.9\n",
        "    max_rejected_ratio: 0.9\n    max_shrink: 1\n    drift: { changed_keys: 0.5 }\n",
    );
    let env = Env(Project::new("redelivery_diff", &config));
    env.deliver("2025-07", 1..=20, "2");
    assert_eq!(env.run(&["run", "--period", "2025-07"]).code, 0);
    // Ids 16-20 gone, ids 1-10 with another amount, 11-15 as they were.
    env.land_rows(
        "2025-07",
        (1..=15).map(|i| {
            let amount = if i <= 10 { "3" } else { "2" };
            (i, amount.to_owned(), format!("note {i}"))
        }),
    );
    assert_eq!(env.ingest("2025-07").code, 0);
    let validated = env.run(&env.period_args("validate", "2025-07"));
    assert_eq!(validated.code, 0, "{validated:?}");
    // Recorded with the verdict, counts only, and shown by status.
    let recorded = &validated.json()["redelivery"];
    assert_eq!(
        (
            &recorded["removed"],
            &recorded["changed"],
            &recorded["columns"]
        ),
        (&5.into(), &10.into(), &serde_json::json!({"amount": 10})),
        "{recorded:#}"
    );
    assert!(
        recorded.get("examples").is_none(),
        "no key is recorded: {recorded:#}"
    );
    let status = env.run(&["status", "--period", "2025-07"]);
    assert_eq!(
        status.json()["periods"][0]["redelivery"],
        "0 added, 5 removed, 10 changed (amount 10), 5 unchanged"
    );

    let diff = env.run(&[
        "diff",
        "--dataset",
        "sales",
        "--period",
        "2025-07",
        "--limit",
        "3",
    ]);
    assert_eq!(diff.code, 0, "{diff:?}");
    let d = diff.json();
    assert_eq!(
        (&d["added"], &d["removed"], &d["changed"], &d["unchanged"]),
        (&0.into(), &5.into(), &10.into(), &5.into()),
        "{d:#}"
    );
    assert_eq!(d["columns"], serde_json::json!({"amount": 10}), "{d:#}");
    assert_eq!(
        d["examples"]["removed"],
        serde_json::json!(["16", "17", "18"]),
        "{d:#}"
    );
    assert!(
        d["from"]["load_id"].is_i64() && d["to"]["validation_id"].is_i64(),
        "{d:#}"
    );
    let text = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &["diff", "--dataset", "sales", "--period", "2025-07"],
    );
    assert!(
        text.stdout
            .contains("0 added, 5 removed, 10 changed (amount 10), 5 unchanged"),
        "{}",
        text.stdout
    );

    // 15 of 20 keys rewritten: more than changed_keys 0.5.
    let load = env.run(&env.period_args("load-stage", "2025-07"));
    assert_eq!(load.code, 3, "{load:?}");
    let err = load.json()["error"].as_str().unwrap().to_owned();
    assert!(
        err.contains("drift gate") && err.contains("changes 10 and removes 5 of the 20 keys"),
        "{err}"
    );
    assert!(
        !err.contains("note 1"),
        "no value of a row in the message: {err}"
    );
    assert_eq!(env.stage("2025-07").0, 20, "nothing changed");
    let mut forced = env.period_args("load-stage", "2025-07");
    forced.push("--force");
    assert_eq!(env.run(&forced).code, 0);
    assert_eq!(env.stage("2025-07").0, 15);
}

/// A re-delivery too large for a hash join in the memory pool is still
/// diffed by key (grouped, which spills, not joined): at 3 M rows the default
/// pool gave "Resources exhausted" and the diff was silently left out.
#[test]
fn a_redelivery_larger_than_the_memory_pool_is_still_diffed() {
    let config = CONFIG.replace(
        "stage_dir: stage\n",
        "stage_dir: stage\nlimits: { memory_bytes: 8388608 }\n",
    );
    let env = Env(Project::new("redelivery_big", &config));
    env.deliver("2025-07", 1..=200_000, "2");
    assert_eq!(env.run(&["run", "--period", "2025-07"]).code, 0);
    // The last five ids gone, the first ten with another amount, two more
    // with their note blanked (null: one side null is a change).
    env.land_rows(
        "2025-07",
        (1..=199_995).map(|i| {
            let amount = if i <= 10 { "3" } else { "2" };
            let note = match i {
                11 | 12 => String::new(),
                _ => format!("note {i}"),
            };
            (i, amount.to_owned(), note)
        }),
    );
    assert_eq!(env.ingest("2025-07").code, 0);
    let validated = env.run(&env.period_args("validate", "2025-07"));
    assert_eq!(validated.code, 0, "{validated:?}");
    assert!(
        !validated.stderr.contains("could not be compared"),
        "{}",
        validated.stderr
    );
    let recorded = &validated.json()["redelivery"];
    assert_eq!(
        (
            &recorded["removed"],
            &recorded["changed"],
            &recorded["columns"]
        ),
        (
            &5.into(),
            &12.into(),
            &serde_json::json!({"amount": 10, "note": 2})
        ),
        "{recorded:#} {}",
        validated.stderr
    );
}

/// The same file validated again (after a rule edit) is not a re-delivery:
/// nothing is diffed or recorded (at 3 M rows the diff doubled the
/// validation).
#[test]
fn the_same_file_validated_again_is_not_diffed_as_a_redelivery() {
    let env = Env(Project::new("redelivery_same_file", CONFIG));
    env.deliver("2025-07", 1..=20, "2");
    assert_eq!(env.run(&["run", "--period", "2025-07"]).code, 0);
    let relaxed = CONFIG.replace("{ type: float, min: 0 }", "{ type: float, min: -1 }");
    std::fs::write(env.dir.path().join("datasets_config.yml"), relaxed).unwrap();
    let validated = env.run(&env.period_args("validate", "2025-07"));
    assert_eq!(validated.code, 0, "{validated:?}");
    assert_eq!(validated.json()["rows_valid"], 20, "{validated:?}");
    assert!(
        validated.json().get("redelivery").is_none(),
        "{validated:?}"
    );
    assert!(
        !validated.stderr.contains("re-delivery"),
        "{}",
        validated.stderr
    );
}
