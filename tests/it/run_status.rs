//! `pipeline run` and `pipeline status` over the shipped sample, and the
//! orchestration examples.

use crate::support::*;

fn setup(test: &str) -> (tempfile::TempDir, TestDb) {
    let dir = sample_project();
    let db = TestDb::new(test);
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    (dir, db)
}

#[test]
fn run_two_periods_then_an_unchanged_rerun_exits_99() {
    let (dir, db) = setup("run_sample");
    for period in ["2025-05", "2025-06"] {
        let run = pipeline(
            dir.path(),
            Some(&db.url),
            &["--json", "run", "--period", period],
        );
        assert_eq!(run.code, 0, "{run:?}");
        let out = run.json();
        assert_eq!(stage_of(&out, "citizens", "load-stage")["status"], "done");
        assert_eq!(stage_of(&out, "*", "transform")["status"], "done");
    }
    let again = pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-06"]);
    assert_eq!(again.code, 99, "{again:?}");
    assert!(
        again.stdout.contains("every model is up to date"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.starts_with(&["2025-06", "citizens", "load-stage", "unchanged"])
        }),
        "{}",
        again.stdout
    );
    let mut c = db.client();
    let n: i64 = c
        .query_one("SELECT count(*) FROM stage.citizens", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 37 + 41);
    let m: i64 = c
        .query_one("SELECT count(*) FROM mart.citizens_by_region", &[])
        .unwrap()
        .get(0);
    assert_eq!(m, 10);
    let loads: i64 = c
        .query_one("SELECT count(*) FROM meta.load_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(loads, 3, "the unchanged re-run loaded nothing");
}

/// `run --acq-date` takes the period's files from an older acquisition folder
/// (a backfill); without it the newest folder is read.
#[test]
fn run_backfills_from_the_acquisition_folder_asked() {
    let (dir, db) = setup("run_acq_date");
    let landed = dir.path().join("data/landed");
    for (folder, period) in [("2025-06-01", "2025-05"), ("2025-07-01", "2025-06")] {
        std::fs::create_dir_all(landed.join(folder)).unwrap();
        for e in std::fs::read_dir(&landed).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_file() && (name.contains(period) || !name.contains("_20")) {
                std::fs::copy(&p, landed.join(folder).join(&name)).unwrap();
            }
        }
    }
    let run = |args: &[&str]| {
        let mut all = vec![
            "--json",
            "run",
            "--period",
            "2025-05",
            "--dataset",
            "citizens",
        ];
        all.extend(args);
        pipeline(dir.path(), Some(&db.url), &all)
    };
    let newest = run(&[]);
    assert_eq!(
        newest.code, 5,
        "2025-05 is not in the newest folder: {newest:?}"
    );
    let older = run(&["--acq-date", "2025-06-01"]);
    assert_eq!(older.code, 0, "{older:?}");
    assert_eq!(
        stage_of(&older.json(), "citizens", "load-stage")["status"],
        "done"
    );
    let n: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 37);
}

/// status tells the truth about what is gone and what has no period: a model
/// whose SQL file was removed is marked removed, and a file whose name carries
/// no valid period is not shown with the whole table's rows.
#[test]
fn status_marks_removed_models_and_periodless_rejections() {
    let (dir, db) = setup("status_removed");
    let run = pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-06"]);
    assert_eq!(run.code, 0, "{run:?}");
    std::fs::write(
        dir.path().join("data/landed/citizens_2025-13.csv"),
        "citizen_id\n1\n",
    )
    .unwrap();
    pipeline(dir.path(), Some(&db.url), &["ingest", "--all"]);
    let mart = std::fs::read_dir(dir.path().join("sql/mart"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sql"))
        .unwrap();
    let gone = format!("mart.{}", mart.file_stem().unwrap().to_string_lossy());
    std::fs::remove_file(&mart).unwrap();

    let status = pipeline(dir.path(), Some(&db.url), &["--json", "status"]);
    let out = status.json();
    let models = out["models"].as_array().unwrap();
    let removed: Vec<&serde_json::Value> = models.iter().filter(|m| m["removed"] == true).collect();
    assert_eq!(removed.len(), 1, "{models:?}");
    assert_eq!(removed[0]["model"], gone.as_str());
    let bad = out["periods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file_name"] == "citizens_2025-13.csv")
        .unwrap()
        .clone();
    assert_eq!(bad["period"], serde_json::Value::Null);
    assert_eq!(bad["stage_rows"], serde_json::Value::Null, "{bad}");
    assert_eq!(bad["validation"], serde_json::Value::Null, "{bad}");

    let table = pipeline(dir.path(), Some(&db.url), &["status"]);
    assert!(
        table.stdout.contains("its SQL file is gone"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_file_failing_its_gate_fails_only_its_dataset() {
    let (dir, db) = setup("run_gate");
    let mut bad = String::from("citizen_id,full_name,email,region_code,amount,signup,status\n");
    for i in 0..10 {
        bad.push_str(&format!("{i},Name,not-an-email,NO,-1,2020-01-01,gone\n"));
    }
    std::fs::write(dir.path().join("data/landed/citizens_2025-07.csv"), bad).unwrap();
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &["--json", "run", "--period", "2025-07"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    let out = run.json();
    assert_eq!(stage_of(&out, "citizens", "validate")["status"], "rejected");
    assert_eq!(
        stage_of(&out, "regions", "load-stage")["status"],
        "done",
        "the other dataset goes on"
    );
    assert!(
        out["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !(s["dataset"] == "citizens" && s["stage"] == "load-stage"))
    );
    assert_eq!(stage_of(&out, "*", "transform")["status"], "skipped");
    assert!(
        stage_of(&out, "*", "transform")["detail"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );
    let n: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-07'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A period with no file at all is reported as missing: exit 5 (not arrived).
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &[
            "--json",
            "run",
            "--period",
            "2025-09",
            "--dataset",
            "citizens",
        ],
    );
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(
        stage_of(&run.json(), "citizens", "ingest")["status"],
        "missing"
    );
}

#[test]
fn status_numbers_equal_the_tables_and_show_gaps_and_broken_ledgers() {
    let (dir, db) = setup("status");
    assert_eq!(
        pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-05"]).code,
        0
    );
    // 2025-08 lands, 2025-06 and 2025-07 have no accepted file yet.
    std::fs::rename(
        dir.path().join("data/landed/citizens_2025-06.csv"),
        dir.path().join("data/landed/citizens_2025-08.csv"),
    )
    .unwrap();
    assert_eq!(
        pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-08"]).code,
        0
    );
    let run = pipeline(dir.path(), Some(&db.url), &["--json", "status"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let gaps: Vec<&str> = out["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["period"].as_str().unwrap())
        .collect();
    assert_eq!(gaps, ["2025-06", "2025-07"]);
    assert_eq!(out["problems"], 2, "the two gaps: {out}");
    let check = pipeline(dir.path(), Some(&db.url), &["status", "--check"]);
    assert_eq!(check.code, 3, "--check fails on the gaps: {check:?}");
    let check = pipeline(
        dir.path(),
        Some(&db.url),
        &["status", "--check", "--period", "2025-05"],
    );
    assert_eq!(check.code, 0, "2025-05 alone is sound: {check:?}");
    let mut c = db.client();
    for p in out["periods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["dataset"] == "citizens")
    {
        let period = p["period"].as_str().unwrap();
        let staged: i64 = c
            .query_one(
                "SELECT count(*) FROM stage.citizens WHERE _data_period = $1",
                &[&period],
            )
            .unwrap()
            .get(0);
        assert_eq!(p["stage_rows"], staged);
        let (rows_in, valid): (i64, i64) = {
            let r = c
                .query_one(
                    "SELECT rows_in, rows_valid FROM meta.validation_log WHERE dataset = 'citizens' AND period = $1 ORDER BY id DESC LIMIT 1",
                    &[&period],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert_eq!(
            (p["rows_in"].as_i64(), p["rows_valid"].as_i64()),
            (Some(rows_in), Some(valid))
        );
        assert_eq!(p["problems"], serde_json::json!([]), "{p}");
    }
    c.batch_execute("DELETE FROM stage.citizens WHERE ctid IN (SELECT ctid FROM stage.citizens WHERE _data_period = '2025-05' LIMIT 1)")
        .unwrap();
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &["status", "--period", "2025-05"],
    );
    assert!(
        run.stdout
            .contains("!! ledger broken: 37 cleaned rows ≠ 36 stage rows"),
        "{}",
        run.stdout
    );
    let check = pipeline(
        dir.path(),
        Some(&db.url),
        &["status", "--check", "--period", "2025-05"],
    );
    assert_eq!(check.code, 3, "{check:?}");
    assert!(check.stderr.contains("1 problem"), "{}", check.stderr);
    assert!(
        run.stdout.contains("mart.citizens_by_region"),
        "{}",
        run.stdout
    );
}

/// The DAG is Python that names what it relies on, and the cron line calls the
/// tested month helper. Neither is *run* here: `make airflow-test` (in CI) runs
/// the DAG under real Airflow, and `cron_period_is_the_previous_month_on_every_day` runs the helper.
#[test]
fn orchestration_examples_are_well_formed() {
    let dag = repo().join("orchestration/airflow/pipeline_dag.py");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import ast, sys; src = open(sys.argv[1]).read(); ast.parse(src)\n\
             for needed in ('PythonSensor', 'AirflowSkipException', 'datasets_config', 'data_interval_start', '--period'):\n\
             \x20   assert needed in src, needed",
        )
        .arg(&dag)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cron = std::fs::read_to_string(repo().join("orchestration/cron/pipeline.cron")).unwrap();
    assert!(
        cron.contains("pipeline --json --log-format json run --period"),
        "{cron}"
    );
    assert!(cron.contains("previous-month.sh"), "{cron}");
    assert!(!cron.contains("last month"), "{cron}");
}

/// The shipped cron line, run as written (paths moved into a temporary
/// folder), two nights: both files it appends to stay one JSON object per
/// line, results apart from logs.
#[test]
fn the_cron_line_writes_files_that_stay_json_lines() {
    let (dir, db) = setup("cron_line");
    let logs_dir = tempfile::tempdir().unwrap();
    let cron = std::fs::read_to_string(repo().join("orchestration/cron/pipeline.cron")).unwrap();
    let line = cron.lines().find(|l| l.starts_with("30 2 ")).unwrap();
    // The line's paths moved to this machine, cron's `\%` unescaped.
    let here = |text: &str| {
        text.replace("./bin/pipeline", BIN)
            .replace(
                "./orchestration/cron/previous-month.sh",
                repo()
                    .join("orchestration/cron/previous-month.sh")
                    .to_str()
                    .unwrap(),
            )
            .replace("/var/log/pipeline", logs_dir.path().to_str().unwrap())
            .replace("\\%", "%")
    };
    let command = here(
        line.split_once("cd /opt/pipeline && ")
            .unwrap()
            .1
            .split_once("; rc=$?")
            .unwrap()
            .0,
    );
    for _night in 0..2 {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&command)
            .current_dir(dir.path())
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
    let lines = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(logs_dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}"))
            })
            .collect()
    };
    let results = lines("results.json");
    assert_eq!(results.len(), 2, "one document a night");
    assert!(results.iter().all(|r| r["command"] == "run"), "{results:?}");
    let logs = lines("run.json");
    assert!(
        logs.iter().any(|l| l["event"] == "run_finished"),
        "{logs:?}"
    );
    // What operations.md's jq queries select on: every line has an event name.
    assert!(logs.iter().all(|l| l["event"].is_string()), "{logs:?}");

    // A night that fails mails the reason, not only the exit code (#48, 5):
    // the whole line, `mail` standing in as a file, against a database that
    // does not exist.
    let mailed = tempfile::NamedTempFile::new().unwrap();
    let whole = here(
        &line
            .splitn(6, ' ')
            .nth(5)
            .unwrap()
            .replace("cd /opt/pipeline && ", ""),
    );
    let mail = format!("mail() {{ cat > {}; }}; ", mailed.path().display());
    let gone = db.url.rsplit_once('/').unwrap().0.to_owned() + "/no_such_database";
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{mail}{whole}"))
        .current_dir(dir.path())
        .env("DATABASE_URL", &gone)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(mailed.path()).unwrap();
    assert!(text.starts_with("pipeline run exited 1"), "{text}");
    assert!(
        text.contains("\"error\"") && text.contains("no_such_database"),
        "{text}"
    );
}

/// The cron example's period: the month before today's, also on the 29th–31st,
/// where `date -d 'last month'` returns the current month.
#[test]
fn cron_period_is_the_previous_month_on_every_day() {
    let script = repo().join("orchestration/cron/previous-month.sh");
    for (today, expected) in [
        ("2025-03-31", "2025-02"),
        ("2025-03-29", "2025-02"),
        ("2025-03-01", "2025-02"),
        ("2025-01-15", "2024-12"),
        ("2024-12-31", "2024-11"),
        ("2024-05-31", "2024-04"),
        ("2025-07-31", "2025-06"),
    ] {
        let out = std::process::Command::new(&script)
            .arg(today)
            .output()
            .unwrap();
        assert!(out.status.success(), "{today}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            expected,
            "{today}"
        );
    }
}

/// Spinners per stage on a terminal (a pseudo-terminal from `script`), none
/// when stderr is a pipe or the logs are JSON.
/// The lines a terminal shows after `raw` is written to it: enough of a VT100
/// for what indicatif sends (carriage return, erase line, cursor up).
fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut arg = String::new();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() || d == ';' {
                        arg.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let n: usize = arg.parse().unwrap_or(1);
                match chars.next() {
                    Some('K') => lines[row].truncate(if arg == "2" { 0 } else { col }),
                    Some('A') => row = row.saturating_sub(n),
                    Some('B') => row += n,
                    Some('J') => lines.truncate(row + 1),
                    _ => {} // colours and the like
                }
                while lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            c => {
                let line = &mut lines[row];
                while line.len() < col {
                    line.push(' ');
                }
                if col < line.len() {
                    line[col] = c;
                } else {
                    line.push(c);
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let (dir, db) = setup("run_progress");
    let cmd = format!("{BIN} run --period 2025-05");
    let tty = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(dir.path())
        .env("DATABASE_URL", &db.url)
        .env_remove("PIPELINE_LOG")
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    // What the terminal shows once the run is over: the verdict lines stay.
    let screen = screen(&shown);
    for line in [
        "✔ citizens validate",
        "✔ citizens load-stage",
        "✔ * transform",
    ] {
        assert!(
            screen.iter().any(|l| l.starts_with(line)),
            "{line:?} is not on the final screen:\n{}",
            screen.join("\n")
        );
    }
    // On a terminal the progress lines and the table say what info lines
    // would; warnings still show, with their dataset (#48, 5).
    assert!(
        !screen.iter().any(|l| l.contains(" INFO ")),
        "{}",
        screen.join("\n")
    );
    // A verdict line ends before the next log line starts (#48, 5).
    let glued: Vec<&String> = (screen.iter())
        .filter(|l| l.contains('✔') && (l.contains(" INFO ") || l.contains(" WARN ")))
        .collect();
    assert!(glued.is_empty(), "{glued:#?}");
    let piped = pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-05"]);
    assert_eq!(piped.code, 99);
    assert!(!piped.stderr.contains('✔'), "{}", piped.stderr);
    let cmd = format!("{BIN} --log-format json run --period 2025-05");
    let json = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .current_dir(dir.path())
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let logged = String::from_utf8_lossy(&json.stdout);
    // script(1) -e exits with the command's status: nothing to do again.
    assert_eq!(json.status.code(), Some(99), "{logged}");
    assert!(
        logged.contains("\"level\""),
        "JSON log lines on the terminal: {logged}"
    );
    assert!(!logged.contains('✔'), "{logged}");
}

/// With --json, stdout holds exactly one JSON document, always with `command` and
/// `exit_code`, and `error` whenever the exit is a failure: from an error, a
/// rejected file, a missing file in `run`, or a bad argument.
#[test]
fn json_output_always_has_command_exit_code_and_error_on_failure() {
    let (dir, db) = setup("json_shape");
    std::fs::write(dir.path().join("data/landed/unmatched.csv"), "x\n").unwrap();
    let cases: &[(&[&str], u8)] = &[
        (&["status"], 0),
        (&["run", "--period", "2025-05"], 0),
        (&["run", "--period", "2025-05"], 99),
        (&["run", "--period", "2031-01", "--dataset", "citizens"], 5),
        (
            &["validate", "--dataset", "citizens", "--period", "2031-01"],
            5,
        ),
        (&["ingest", "--file-path", "nope_2025-01.csv"], 2),
        (&["ingest", "--file-path", "unmatched.csv"], 3),
        (&["status", "--period", "9999-99"], 2),
        (
            &["check-counts", "--dataset", "nope", "--period", "2025-05"],
            2,
        ),
        (&["transform", "--period", "2025-05", "--dry-run"], 0),
    ];
    for (args, code) in cases {
        let run = pipeline(dir.path(), Some(&db.url), &[&["--json"], *args].concat());
        assert_eq!(run.code as u8, *code, "{args:?}: {run:?}");
        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&run.stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", run.stdout));
        assert_eq!(docs.len(), 1, "{args:?}: {}", run.stdout);
        let out = &docs[0];
        assert!(out["command"].is_string(), "{args:?}: {out}");
        assert_eq!(out["exit_code"], *code, "{args:?}: {out}");
        if *code == 0 || *code == 99 {
            assert!(out["error"].is_null(), "{args:?}: {out}");
        } else {
            assert!(
                out["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{args:?}: {out}"
            );
        }
    }
}

/// A refused stage is an event of its own with its reason, in both log
/// formats, not only a line of the run table and the exit code.
#[test]
fn run_logs_every_refusal_with_its_reason() {
    let (dir, db) = setup("run_logs_refusals");
    let config = dir.path().join("datasets_config.yml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("min_quality_score: 80"));
    std::fs::write(
        &config,
        text.replace("min_quality_score: 80", "min_quality_score: 100"),
    )
    .unwrap();
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &["--log-format", "json", "run", "--period", "2025-06"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    let refused: Vec<serde_json::Value> = (run.stderr.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage_finished")
        .collect();
    assert_eq!(refused.len(), 1, "{}", run.stderr);
    let e = &refused[0];
    assert_eq!(
        (
            e["level"].as_str(),
            e["dataset"].as_str(),
            e["step"].as_str(),
            e["status"].as_str()
        ),
        (
            Some("warn"),
            Some("citizens"),
            Some("validate"),
            Some("rejected")
        ),
        "{e}"
    );
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("top rule: citizen_id.unique"),
        "{e}"
    );
    let pretty = pipeline(dir.path(), Some(&db.url), &["run", "--period", "2025-06"]);
    assert!(
        pretty
            .stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("validate rejected")),
        "{}",
        pretty.stderr
    );
}
