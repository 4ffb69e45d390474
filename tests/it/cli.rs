//! The command line as users and orchestrators see it: help, exit codes, errors,
//! logs on stderr and data on stdout.

use crate::support::*;

/// The output schema has teeth: a failure without `error`, an unknown field or a
/// wrong type is refused.
#[test]
fn the_output_schema_refuses_what_it_does_not_promise() {
    for bad in [
        serde_json::json!({"command": "status", "exit_code": 3}),
        serde_json::json!({"command": "migrate", "exit_code": 0, "duration_ms": 1, "applied": [], "already_applied": 2, "stage_tables_created": [], "stage_tables_unchanged": [], "stage_tables_partitioned": []}),
        serde_json::json!({"command": "quarantine", "exit_code": 0, "duration_ms": 1, "dataset": "d", "period": null, "validation_id": 1, "quarantine_version": 0, "rows_rejected": 0, "errors": 0, "rows": [], "surprise": 1}),
        serde_json::json!({"command": "nope", "exit_code": 0}),
    ] {
        let refused = std::panic::catch_unwind(|| assert_output_schema(&bad)).is_err();
        assert!(refused, "the schema accepted {bad}");
    }
    assert_output_schema(
        &serde_json::json!({"command": "status", "exit_code": 2, "error": "unknown dataset"}),
    );
}

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let dir = project(&sample_config());
    let run = pipeline(dir.path(), None, &["--help"]);
    assert_eq!(run.code, 0);
    for cmd in [
        "migrate",
        "ingest",
        "validate",
        "load-stage",
        "transform",
        "run",
        "check-counts",
        "status",
    ] {
        assert!(
            run.stdout.contains(&format!("\n  {cmd} ")),
            "help lacks {cmd}:\n{}",
            run.stdout
        );
    }
    for flag in ["--config", "--json", "--log-format"] {
        assert!(run.stdout.contains(flag), "help lacks {flag}");
    }
    assert!(
        run.stdout.starts_with("Takes files landing") && run.stdout.contains("DATABASE_URL"),
        "help opens with what the tool does and what it reads from the environment:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("99  nothing to do"), "{}", run.stdout);
    assert!(run.stdout.contains("5   not arrived"), "{}", run.stdout);
    assert!(run.stdout.contains("3   rejected"), "{}", run.stdout);
    let sub = pipeline(dir.path(), None, &["load-stage", "--help"]);
    assert!(
        sub.stdout.contains("--parquet-path") && sub.stdout.contains("--force"),
        "{}",
        sub.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = project(&sample_config());
    assert_eq!(pipeline(dir.path(), None, &["frobnicate"]).code, 2);
    assert_eq!(pipeline(dir.path(), None, &["ingest"]).code, 2);
    assert_eq!(pipeline(dir.path(), None, &["transform"]).code, 2);
    // An argument that is not UTF-8: a usage error with its JSON, not a panic.
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"\xff");
        let out: Run = std::process::Command::new(BIN)
            .current_dir(dir.path())
            .args(["--json", "run", "--period"])
            .arg(bad)
            .output()
            .unwrap()
            .into();
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.json()["error"].as_str().unwrap().contains("UTF-8"),
            "{out:?}"
        );
    }
    // A range past 100,000 periods is refused before anything runs.
    let huge = pipeline(
        dir.path(),
        None,
        &["run", "--plan", "--from", "1000-01", "--to", "9999-12"],
    );
    assert_eq!(huge.code, 2, "{huge:?}");
    assert!(
        huge.stderr.contains("more than 100000 periods"),
        "{}",
        huge.stderr
    );
}

#[test]
fn bad_config_exits_2_naming_dataset_column_key_and_line() {
    let config = sample_config().replace(
        "amount:      { type: float, min: 0 }",
        "amount:      { type: string, min: 0 }",
    );
    let dir = project(&config);
    let run = pipeline(dir.path(), None, &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("datasets_config.yml"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("dataset `citizens`: column `amount`: `min`: min applies to numbers"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 21"), "{}", run.stderr);
}

#[test]
fn unknown_config_key_exits_2_with_line() {
    let config = sample_config().replace(
        "    headers: strict\n",
        "    headers: strict\n    heders: subset\n",
    );
    let dir = project(&config);
    let run = pipeline(dir.path(), None, &["--json", "status"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("unknown field `heders`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 14"), "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["exit_code"], 2);
    assert!(out["error"].as_str().unwrap().contains("heders"));
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = pipeline(dir.path(), None, &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("cannot read config file datasets_config.yml"),
        "{}",
        run.stderr
    );
    let run = pipeline(dir.path(), None, &["--config", "elsewhere.yml", "migrate"]);
    assert!(run.stderr.contains("elsewhere.yml"), "{}", run.stderr);
}

#[test]
fn missing_database_url_exits_2_with_a_hint() {
    let dir = project(&sample_config());
    let run = pipeline(dir.path(), None, &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("DATABASE_URL is not set"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("scripts/postgres.sh start"),
        "{}",
        run.stderr
    );
    // Set but empty (an unfilled template variable) is the same mistake.
    let empty = pipeline(dir.path(), Some(""), &["--json", "migrate"]);
    assert_eq!(empty.code, 2, "{empty:?}");
    assert!(
        empty.json()["error"]
            .as_str()
            .unwrap()
            .contains("DATABASE_URL is not set")
    );
}

/// The URL's password appears nowhere: not in logs (pretty or JSON, at debug level,
/// where the redacted URL is logged), not in errors, not on stdout.
#[test]
fn database_password_never_appears_in_output() {
    let db = TestDb::new("cli_password");
    let secret = format!("Zq9secret{}", std::process::id());
    let role = format!("{}_role", db.name);
    db.client()
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD '{secret}'"
        ))
        .unwrap();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(&secret)).unwrap();
    let dir = project(&sample_config());
    for format in ["pretty", "json"] {
        let run = command(
            dir.path(),
            Some(url.as_str()),
            &["--json", "--log-format", format, "migrate"],
        )
        .env("PIPELINE_LOG", "debug")
        .output()
        .unwrap();
        let run = Run::from(run);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains(":***@"),
            "debug logs show the redacted URL: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(&secret) && !run.stdout.contains(&secret),
            "{run:?}"
        );
    }
    url.set_password(Some("Wr0ngPassw0rd")).unwrap();
    let run = pipeline(dir.path(), Some(url.as_str()), &["--json", "migrate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("cannot connect to PostgreSQL"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Wr0ngPassw0rd") && !run.stdout.contains("Wr0ngPassw0rd"),
        "{run:?}"
    );
}

/// Every form of connection string a user may write, well-formed or not: the
/// password (`S3cr3t…`) reaches neither stderr nor the JSON on stdout.
#[test]
fn no_form_of_database_url_leaks_its_password() {
    let dir = project(&sample_config());
    for url in [
        "postgres://app:S3cr3t/x@127.0.0.1:1/db",
        "postgres://app:S3cr3t#x@127.0.0.1:1/db",
        "postgres://app:S3cr3t?x@127.0.0.1:1/db",
        "postgres://app:S3cr3tx@127.0.0.1:notaport/db",
        "postgres://app:S3cr3tx@[::1/db",
        "postgres://app@127.0.0.1:1/db?password=S3cr3tx",
        "host=127.0.0.1 port=1 password = S3cr3tx",
        "host=127.0.0.1 port=1 PASSWORD=S3cr3tx",
        r"host=127.0.0.1 port=1 password='S3cr3t\' x'",
        "host=127.0.0.1 port=notaport password=S3cr3tx",
        "host=127.0.0.1 password='S3cr3t x",
        "postgres:app:NoSlashS3cr3t@127.0.0.1/x",
        "postgres:/app:S3cr3t@127.0.0.1/x",
        "host=127.0.0.1 password=ab S3cr3tTail user=x",
    ] {
        let run = pipeline(dir.path(), Some(url), &["--json", "migrate"]);
        assert_ne!(run.code, 0, "{url}: {run:?}");
        assert!(
            !run.stderr.contains("S3cr3t") && !run.stdout.contains("S3cr3t"),
            "{url}: {run:?}"
        );
        assert!(run.json()["error"].is_string(), "{url}: {run:?}");
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_stage_fields() {
    let db = TestDb::new("cli_json_logs");
    let dir = project(&sample_config());
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &["--log-format", "json", "--json", "migrate"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l["ts"].is_string() && l["level"].is_string() && l["msg"].is_string(),
            "{l}"
        );
        assert_eq!(l["stage"], "migrate", "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["dataset"] == "citizens" && l["msg"] == "created stage table")
    );
    // stdout holds only the result object.
    assert_eq!(run.json()["command"], "migrate");
    assert!(run.json()["duration_ms"].is_u64());
}

/// Every event of a run names itself (`event`) and carries its dataset, period
/// and, inside validate, its file id; readable lines show each field once.
#[test]
fn every_event_has_a_name_and_its_dataset_period_and_file() {
    let db = TestDb::new("cli_events");
    let dir = sample_project();
    assert_eq!(pipeline(dir.path(), Some(&db.url), &["migrate"]).code, 0);
    let run = pipeline(
        dir.path(),
        Some(&db.url),
        &[
            "--log-format",
            "json",
            "run",
            "--period",
            "2025-06",
            "--dataset",
            "citizens",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        assert!(l["event"].is_string(), "no event name: {l}");
        assert_eq!(l["period"], "2025-06", "{l}");
    }
    let validate: Vec<_> = lines.iter().filter(|l| l["stage"] == "validate").collect();
    assert!(validate.len() >= 2, "{lines:?}");
    for l in validate {
        assert!(l["dataset"] == "citizens" && l["file_id"].is_i64(), "{l}");
    }
    assert!(lines.iter().any(|l| l["event"] == "validated"));
    assert!(lines.iter().any(|l| l["event"] == "loaded"));

    let pretty = pipeline(
        dir.path(),
        Some(&db.url),
        &["validate", "--dataset", "citizens", "--period", "2025-06"],
    );
    let line = pretty
        .stderr
        .lines()
        .find(|l| l.contains(" validated "))
        .unwrap_or_else(|| panic!("{}", pretty.stderr));
    assert_eq!(line.matches("period=").count(), 1, "{line}");
    assert!(
        !line.contains("stage=") && !line.contains("event="),
        "{line}"
    );
}

#[test]
fn usage_errors_say_what_to_pass() {
    let dir = project(&sample_config());
    let run = pipeline(dir.path(), None, &["validate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--file-id <ID>|--dataset <D>"),
        "either way of naming the file is offered: {}",
        run.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let run = pipeline(empty.path(), None, &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--config PATH") && run.stderr.contains("PIPELINE_CONFIG"),
        "{}",
        run.stderr
    );
}

/// `--json` promises one document on stdout whatever happens, arguments clap
/// cannot read included; the usage message stays on stderr.
#[test]
fn argument_errors_with_json_still_print_one_document() {
    let dir = project(&sample_config());
    for (args, command, says) in [
        (&["--json", "status", "--bogus"][..], "status", "--bogus"),
        (
            &["--json", "validate", "--file-id", "abc"],
            "validate",
            "abc",
        ),
        (
            &[
                "--json",
                "quarantine",
                "--dataset",
                "citizens",
                "--limit",
                "-1",
            ],
            "quarantine",
            "-1",
        ),
        (&["--json"], "pipeline", "subcommand"),
        (&["--json", "events", "replay"], "events replay", "FILE"),
        (&["--json", "run", "--from", "2025-01"], "run", "--to"),
    ] {
        let run = pipeline(dir.path(), None, args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        let out = run.json();
        assert_eq!(out["command"], command, "{args:?}: {out}");
        assert_eq!(out["exit_code"], 2);
        let error = out["error"].as_str().unwrap();
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(run.stderr.contains("error:"), "{args:?}: {}", run.stderr);
    }
    // Without --json, clap's message alone, as before.
    let plain = pipeline(dir.path(), None, &["status", "--bogus"]);
    assert_eq!((plain.code, plain.stdout.as_str()), (2, ""));
}

/// A library quoting the URL it was given (object_store's request errors
/// name the endpoint with its userinfo) is caught on every output.
#[test]
fn a_password_in_s3_endpoint_never_reaches_any_output() {
    let db = TestDb::new("cli_s3_endpoint_secret");
    let dir =
        project(&sample_config().replace("landed_dir: data/landed", "landed_dir: s3://bkt/in"));
    for json in [true, false] {
        let mut args = vec!["ingest", "--all"];
        if json {
            args.insert(0, "--json");
        }
        let run: Run = command(dir.path(), Some(&db.url), &args)
            .env("S3_ENDPOINT", "http://user:PW0rdS3cret@127.0.0.1:1")
            .env("S3_ACCESS_KEY", "key")
            .env("S3_SECRET_KEY", "secret")
            .output()
            .unwrap()
            .into();
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            !run.stdout.contains("PW0rdS3cret") && !run.stderr.contains("PW0rdS3cret"),
            "{run:?}"
        );
        assert!(run.stderr.contains("user:***@127.0.0.1"), "{}", run.stderr);
    }
}

/// libpq's conventions: a URL without its password takes it from PGPASSWORD
/// or the password file, and with no DATABASE_URL at all PGHOST/PGPORT/
/// PGUSER/PGDATABASE say where to connect — as psql would. The password is
/// never printed.
#[test]
fn libpq_environment_fills_what_database_url_leaves_out() {
    let db = TestDb::new("cli_libpq_env");
    let role = format!("libpq_{}", std::process::id());
    let secret = "Lib9qS3cret";
    let mut admin = connect(server_url());
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD '{secret}';
             GRANT ALL ON DATABASE \"{}\" TO {role}; ALTER DATABASE \"{}\" OWNER TO {role}",
            db.name, db.name
        ))
        .unwrap();
    let server = url::Url::parse(server_url()).unwrap();
    let (host, port) = (
        server.host_str().unwrap().to_owned(),
        server.port().unwrap_or(5432),
    );
    let no_password = format!("postgres://{role}@{host}:{port}/{}", db.name);
    let dir = project(&sample_config());
    let home = tempfile::tempdir().unwrap();
    let migrate = |url: Option<&str>, env: &[(&str, String)]| -> Run {
        let mut cmd = command(dir.path(), url, &["--json", "status"]);
        for v in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGPASSFILE",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("HOME", home.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let run: Run = cmd.output().unwrap().into();
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{run:?}"
        );
        run
    };
    // Without any password: refused, and the message says where one is read from.
    let refused = migrate(Some(&no_password), &[]);
    assert_ne!(refused.code, 0, "{refused:?}");
    // PGPASSWORD.
    let ok = migrate(Some(&no_password), &[("PGPASSWORD", secret.to_owned())]);
    assert!(ok.code == 0 || ok.code == 2, "{ok:?}");
    assert!(!ok.stderr.contains("password"), "authenticated: {ok:?}");
    // The password file, private as libpq wants it; a readable one is ignored.
    let pgpass = home.path().join(".pgpass");
    std::fs::write(&pgpass, format!("{host}:{port}:*:{role}:{secret}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ignored = migrate(Some(&no_password), &[]);
    assert!(
        ignored.stderr.contains("readable by group or others"),
        "{ignored:?}"
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let from_file = migrate(Some(&no_password), &[]);
    assert!(!from_file.stderr.contains("password"), "{from_file:?}");
    // No DATABASE_URL: PGHOST, PGPORT, PGUSER, PGDATABASE (and the file).
    let env_only = migrate(
        None,
        &[
            ("PGHOST", host.clone()),
            ("PGPORT", port.to_string()),
            ("PGUSER", role.clone()),
            ("PGDATABASE", db.name.clone()),
        ],
    );
    assert!(!env_only.stderr.contains("password"), "{env_only:?}");
    assert!(
        !env_only.stderr.contains("DATABASE_URL is not set"),
        "{env_only:?}"
    );
    for run in [&ok, &from_file, &env_only] {
        let out = run.json();
        assert!(
            out["error"].as_str().is_none_or(|e| e.contains("migrate")),
            "connected (status may only ask for migrate): {out}"
        );
    }
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" OWNER TO CURRENT_USER; DROP OWNED BY {role}; DROP ROLE {role}",
            db.name
        ))
        .unwrap();
}
