//! Model audits (sql/<schema>/<model>.yml): a failing `error` audit rolls the
//! model's replace transaction back, so nobody ever sees its rows; `warn`
//! audits commit; every result is kept in reporting.audit_results.

use std::time::{Duration, Instant};

use crate::support::*;
use crate::transform::Env;

/// core.sales_enriched's rows of a period, as `id|amount|city` sorted.
fn enriched(env: &Env, period: &str) -> Vec<String> {
    env.rows(&format!(
        "SELECT coalesce(string_agg(concat_ws('|', id, amount, city), ',' ORDER BY id), '')
           FROM core.sales_enriched WHERE _data_period = '{period}'"
    ))
}

fn audit_rows(env: &Env, sql: &str) -> Vec<String> {
    env.rows(&format!(
        "SELECT coalesce(string_agg(x, ',' ORDER BY x), '') FROM ({sql}) AS q(x)"
    ))
}

/// An audit that would never end is stopped at the statement timeout
/// (PIPELINE_STATEMENT_TIMEOUT_SECONDS), failing its model by name with the
/// previous rows kept: the model's transaction does not wait forever.
#[test]
fn an_audit_that_never_ends_is_stopped_at_the_statement_timeout() {
    let env = Env::new("audit_never_ends");
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    let before = enriched(&env, "2025-06");
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - name: never_ends\n    sql: select a.value from range(1000000000) a, range(1000000000) b where a.value + b.value < 0\n",
    );
    let started = Instant::now();
    let run: Run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "transform", "--period", "2025-06"],
    )
    .env("PIPELINE_STATEMENT_TIMEOUT_SECONDS", "2")
    .output()
    .unwrap()
    .into();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let err = run.json()["models"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("never_ends") && err.contains("statement timeout"),
        "{err}"
    );
    assert_eq!(enriched(&env, "2025-06"), before);
}

#[test]
fn a_failing_error_audit_keeps_the_previous_rows_and_skips_dependants() {
    let env = Env::new("audit_blocks");
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    let before = enriched(&env, "2025-06");
    assert_eq!(before, ["3|1.25|Lyon,4|2.25|Lyon,5|100.00|Oslo"]);
    let mart_before = env.rows(
        "SELECT string_agg(concat_ws('|', city, n), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-06'",
    );

    // A new sale breaks the audit; a slow (warn) audit first keeps the
    // transaction open long enough to look from another connection. Audits
    // run in DataFusion: the write connection waits, idle in its transaction.
    env.db
        .client()
        .batch_execute("INSERT INTO stage.sales VALUES (6, 2, 900.00, '2025-06')")
        .unwrap();
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - name: slow\n    severity: warn\n    sql: select a.value from range(3000) a, range(3000) b where a.value + b.value < 0\n  - expression: amount < 500\n",
    );
    let mut child = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "transform", "--period", "2025-06"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watcher = env.db.client();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database()
                    AND application_name LIKE 'pipeline transform % writes'
                    AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the audit never ran");
        if let Some(status) = child.try_wait().unwrap() {
            let out: Run = child.wait_with_output().unwrap().into();
            panic!("transform ended ({status}) before its audit was seen: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The new rows are written but not visible: the period's old rows are.
    let during: String = watcher
        .query_one(
            "SELECT string_agg(concat_ws('|', id, amount, city), ',' ORDER BY id) FROM core.sales_enriched WHERE _data_period = '2025-06'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(during, before[0], "nobody sees the audited rows");

    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, 3, "an audit rejects like a gate: {run:?}");
    let out = run.json();
    let core = &out["models"][0];
    assert_eq!(core["status"], "rejected", "{out:#}");
    let error = core["error"].as_str().unwrap();
    assert!(
        error.contains("sql/core/sales_enriched.sql")
            && error.contains("audit expression(amount < 500) (error) failed: 1 failing")
            && error.contains("\"amount\":900")
            && error.contains("keeps its previous rows"),
        "names the model, the audit, the count and a failing row: {error}"
    );
    assert_eq!(core["audits"][1]["failing"], 1);
    assert_eq!(core["audits"][1]["passed"], false);
    let mart = &out["models"][1];
    assert_eq!(mart["status"], "skipped");
    assert_eq!(
        mart["error"],
        "skipped: upstream core.sales_enriched audit failed"
    );
    assert_eq!(enriched(&env, "2025-06"), before, "rolled back");
    assert_eq!(
        env.rows("SELECT string_agg(concat_ws('|', city, n), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-06'"),
        mart_before
    );
    assert_eq!(
        audit_rows(
            &env,
            "SELECT concat_ws('|', audit, severity, passed, failing, blocked, t.status)
               FROM reporting.audit_results a JOIN meta.transform_log t ON t.id = a.transform_log_id"
        ),
        ["expression(amount < 500)|error|f|1|t|rejected,slow|warn|t|0|t|rejected"]
    );

    // status shows the rejected model run and fails --check.
    let status = pipeline(env.dir.path(), Some(&env.db.url), &["status", "--check"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(
        status.stdout.contains("rejected") && status.stdout.contains("expression(amount < 500)"),
        "{}",
        status.stdout
    );

    // Fixed upstream: the next run commits.
    env.db
        .client()
        .batch_execute("DELETE FROM stage.sales WHERE id = 6")
        .unwrap();
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
}

#[test]
fn a_warn_audit_commits_is_recorded_and_shown() {
    let env = Env::new("audit_warns");
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - expression: n > 1\n    severity: warn\n  - not_null: [city, n]\n  - unique: [city]\n",
    );
    for _ in 0..3 {
        let run = env.transform(&["--period", "2025-06"]);
        assert_eq!(run.code, 0, "{run:?}");
        let mart = &run.json()["models"][1];
        assert_eq!(mart["status"], "done");
        assert_eq!(mart["audits"][0]["passed"], false);
        assert_eq!(mart["audits"][0]["sample"][0]["city"], "Oslo");
    }
    assert_eq!(
        env.rows("SELECT string_agg(city, ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-06'"),
        ["Lyon,Oslo"],
        "a warn audit does not block"
    );
    // The history: three runs of three audits, each tied to its committed run.
    assert_eq!(
        audit_rows(
            &env,
            "SELECT concat_ws('|', audit, passed, failing, blocked, count(*), count(DISTINCT transform_log_id))
               FROM reporting.audit_results a JOIN meta.transform_log t ON t.id = a.transform_log_id AND t.status = 'done'
              WHERE a.period = '2025-06' GROUP BY audit, passed, failing, blocked"
        ),
        ["expression(n > 1)|f|1|f|3|3,not_null(city, n)|t|0|f|3|3,unique(city)|t|0|f|3|3"]
    );
    let status = pipeline(env.dir.path(), Some(&env.db.url), &["--json", "status"]);
    let failing = &status.json()["failing_audits"];
    assert_eq!(failing.as_array().unwrap().len(), 1, "{failing:#}");
    assert_eq!(failing[0]["audit"], "expression(n > 1)");
    assert_eq!(failing[0]["blocked"], false);
    let text = pipeline(env.dir.path(), Some(&env.db.url), &["status"]);
    assert!(
        text.stdout
            .contains("warn: audit expression(n > 1) of mart.city_totals 2025-06: 1 failing"),
        "{}",
        text.stdout
    );
    let report = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &["report", "--out", "report"],
    );
    assert_eq!(report.code, 0, "{report:?}");
    let page = std::fs::read_to_string(env.dir.path().join("report/index.html")).unwrap();
    assert!(
        page.contains("<section id=\"audits\">") && page.contains("expression(n &gt; 1)"),
        "the report shows audits per model and period"
    );
}

#[test]
fn relationships_and_row_count_against_the_previous_period_both_ways() {
    let env = Env::new("audit_relations");
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - relationships: { column: city, to: stage.shops, field: city }\n  - row_count: { min: 1, within_previous: 0.3 }\n",
    );
    // 2025-05 has no previous period: within_previous does not apply.
    assert_eq!(env.transform(&["--period", "2025-05"]).code, 0);
    // 2025-06 has 3 rows against 2: +50 % is more than 30 %.
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 3, "{run:?}");
    let core = &run.json()["models"][0];
    assert_eq!(core["audits"][1]["failing"], 1);
    assert_eq!(core["audits"][1]["sample"][0]["previous"], 2);
    assert_eq!(enriched(&env, "2025-06"), [""], "nothing committed");
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - relationships: { column: city, to: stage.shops, field: city }\n  - row_count: { min: 1, within_previous: 0.6 }\n",
    );
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    // A period with no rows is below min.
    let run = env.transform(&["--period", "2025-07"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.json()["models"][0]["error"]
            .as_str()
            .unwrap()
            .contains("row_count (error) failed"),
    );

    // relationships: a city the model writes that stage.shops does not have.
    env.write(
        "sql/core/sales_enriched.sql",
        "SELECT s.id, s.amount, CASE WHEN s.id = 4 THEN 'Nowhere' ELSE sh.city END AS city
           FROM stage.sales AS s JOIN stage.shops AS sh ON sh.shop_id = s.shop_id
          WHERE s._data_period = $period",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 3, "{run:?}");
    let core = &run.json()["models"][0];
    assert_eq!(core["audits"][0]["failing"], 1);
    assert_eq!(core["audits"][0]["sample"][0]["city"], "Nowhere");
    assert_eq!(
        enriched(&env, "2025-06"),
        ["3|1.25|Lyon,4|2.25|Lyon,5|100.00|Oslo"],
        "the previous rows stay"
    );
}

#[test]
fn a_bad_audit_file_fails_its_model_alone_naming_the_line() {
    let env = Env::new("audit_bad_file");
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - unique: [city]\n    severty: warn\n",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    assert_eq!(out["models"][0]["status"], "done", "the other model runs");
    let error = out["models"][1]["error"].as_str().unwrap();
    assert!(
        error.contains("city_totals.yml")
            && error.contains("unknown field `severty`")
            && error.contains("line 3"),
        "{error}"
    );
    // An audit whose SQL PostgreSQL refuses fails the model, naming the audit.
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - expression: no_such_column > 0\n",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.json()["models"][1]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("audit expression(no_such_column > 0)") && error.contains("no_such_column"),
        "{error}"
    );
    // --dry-run plans each audit in PostgreSQL against the table as it stands.
    env.write("sql/mart/city_totals.yml", "audits:\n  - unique: [city]\n");
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    let dry = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &["transform", "--period", "2025-06", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout
            .contains("-- unique(city): SELECT \"city\", count(*)"),
        "{}",
        dry.stdout
    );
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - expression: no_such_column > 0\n",
    );
    let dry = env.transform(&["--period", "2025-06", "--dry-run"]);
    assert_eq!(dry.code, 1, "{dry:?}");
    let error = dry.json()["models"][1]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("city_totals.yml: audit expression(no_such_column > 0)")
            && error.contains("no_such_column"),
        "{error}"
    );
    // Audits only read.
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - name: sneaky\n    sql: \"select * from mart.city_totals, pg_terminate_backend(1)\"\n",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.json()["models"][1]["error"]
            .as_str()
            .unwrap()
            .contains("`pg_terminate_backend` changes something"),
    );
}

#[test]
fn unit_tests_run_without_a_database_and_show_their_diff() {
    let dir = project(crate::transform::CONFIG);
    for (path, text) in [
        ("sql/core/sales_enriched.sql", crate::transform::CORE),
        ("sql/mart/city_totals.sql", crate::transform::MART),
        (
            "sql/core/sales_enriched.yml",
            r#"tests:
  - name: joins_the_city
    period: "2025-06"
    given:
      stage.sales:
        - {id: 1, shop_id: 1, amount: 2.5, _data_period: "2025-06"}
        - {id: 2, shop_id: 9, amount: 1, _data_period: "2025-06"}
        - {id: 3, shop_id: 1, amount: 7, _data_period: "2025-05"}
      stage.shops: [{shop_id: 1, city: Lyon}]
    expect: [{id: 1, amount: 2.5, city: Lyon}]
  - name: typo
    given: {stage.sales: [{idd: 1}]}
    expect: []
"#,
        ),
        (
            "sql/mart/city_totals.yml",
            r#"tests:
  - name: two_cities
    period: "2025-06"
    given:
      core.sales_enriched:
        - {id: 1, amount: 10.5, city: Lyon, _data_period: "2025-06"}
        - {id: 2, amount: 1.5, city: Lyon, _data_period: "2025-06"}
        - {id: 3, amount: 4, city: Oslo, _data_period: "2025-06"}
        - {id: 4, amount: 99, city: Oslo, _data_period: "2025-05"}
    expect:
      - {city: Lyon, n: 2, total: 12.0}
      - {city: Oslo, n: 1, total: 4}
  - name: wrong
    given: {core.sales_enriched: [{id: 1, amount: 1, city: Lyon, _data_period: "2000-01"}]}
    expect: [{city: Lyon, n: 2}]
"#,
        ),
    ] {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // No DATABASE_URL at all.
    let run = pipeline(dir.path(), None, &["--json", "test"]);
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    let verdicts: Vec<String> = (out["tests"].as_array().unwrap().iter())
        .map(|t| {
            format!(
                "{} {} {}",
                t["model"].as_str().unwrap(),
                t["test"].as_str().unwrap(),
                t["passed"]
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            "core.sales_enriched joins_the_city true",
            "core.sales_enriched typo false",
            "mart.city_totals two_cities true",
            "mart.city_totals wrong false"
        ]
    );
    assert_eq!(
        out["tests"][1]["error"],
        "given stage.sales: row 1: no column `idd` (columns: id, shop_id, amount, _data_period, _ingestion_id, _loaded_at)"
    );
    assert_eq!(
        out["tests"][3]["diff"],
        serde_json::json!([
            "- expected, not returned: {\"city\":\"Lyon\",\"n\":2}",
            "+ returned, not expected: {\"city\":\"Lyon\",\"n\":1}"
        ])
    );
    let text = pipeline(dir.path(), None, &["test"]);
    assert!(
        text.stdout.contains("FAIL  mart.city_totals wrong")
            && text.stdout.contains("4 test(s): 2 passed, 2 failed"),
        "{}",
        text.stdout
    );
    let one = pipeline(
        dir.path(),
        None,
        &["--json", "test", "--model", "mart.city_totals"],
    );
    assert_eq!(one.json()["tests"].as_array().unwrap().len(), 2);
    // A model YAML transform refuses is a failure, not "0 tests".
    for bad in [
        "tests:\n  - name: a\n    expect: []\n    expekt: []\n",
        "tests:\n  - name: a\n    expect: []\n  - name: a\n    expect: []\n",
        "tests:\n  - name: a\n    given: {}\n",
    ] {
        std::fs::write(dir.path().join("sql/mart/city_totals.yml"), bad).unwrap();
        let run = pipeline(
            dir.path(),
            None,
            &["--json", "test", "--model", "mart.city_totals"],
        );
        assert_eq!(run.code, 1, "{bad}: {run:?}");
        let out = run.json();
        assert_eq!(out["tests"][0]["test"], "(model)", "{bad}: {out}");
        assert!(
            out["tests"][0]["error"]
                .as_str()
                .unwrap()
                .contains("city_totals.yml"),
            "{out}"
        );
    }
    std::fs::write(dir.path().join("sql/core/sales_enriched.yml"), "").unwrap();
    std::fs::remove_file(dir.path().join("sql/mart/city_totals.yml")).unwrap();
    let none = pipeline(dir.path(), None, &["test"]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(none.stdout.contains("no unit tests"), "{}", none.stdout);
}

#[test]
fn audits_and_downstream_models_read_the_rows_the_run_kept_in_datafusion() {
    let env = Env::new("audit_kept_rows");
    // `arrow_typeof` is DataFusion's: PostgreSQL would refuse this audit. The
    // relationship reads stage.shops, which the model's own SQL reads too.
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - name: typed\n    sql: select * from core.sales_enriched where _data_period = $period and arrow_typeof(amount) not like 'Decimal128%'\n  - accepted_values: { column: city, values: [Lyon, Oslo] }\n",
    );
    env.write(
        "sql/mart/city_totals.yml",
        "audits:\n  - name: sums_match\n    sql: >\n      select c.city from mart.city_totals c\n      join (select city, sum(amount) as total from core.sales_enriched where _data_period = $period group by city) s on s.city = c.city\n      where c._data_period = $period and c.total <> s.total\n",
    );
    let run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "transform", "--period", "2025-06"],
    )
    .env("PIPELINE_LOG", "debug")
    .output()
    .unwrap();
    let run: Run = run.into();
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(out["models"][0]["audits"][0]["passed"], true, "{out:#}");
    assert_eq!(out["models"][1]["audits"][0]["passed"], true, "{out:#}");
    // Neither the mart model nor any audit read core.sales_enriched back out
    // of PostgreSQL: the run kept its rows.
    let pulled: Vec<&str> = (run.stderr.lines())
        .filter(|l| l.contains("reading from PostgreSQL") && l.contains("sales_enriched"))
        .collect();
    assert!(pulled.is_empty(), "{pulled:#?}");
    let kept = |stderr: &str, model: &str| {
        (stderr.lines()).any(|l| l.contains("keeping the rows") && l.contains(model))
    };
    assert!(kept(&run.stderr, "core.sales_enriched") && kept(&run.stderr, "mart.city_totals"));
    // Rows neither an audit nor a model of the run reads are only copied.
    std::fs::remove_file(env.dir.path().join("sql/mart/city_totals.yml")).unwrap();
    let plain: Run = command(
        env.dir.path(),
        Some(&env.db.url),
        &["--json", "transform", "--period", "2025-06"],
    )
    .env("PIPELINE_LOG", "debug")
    .output()
    .unwrap()
    .into();
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(
        kept(&plain.stderr, "core.sales_enriched"),
        "read by the mart model"
    );
    assert!(!kept(&plain.stderr, "mart.city_totals"), "{}", plain.stderr);
    assert_eq!(
        env.rows("SELECT string_agg(concat_ws('|', city, n, total), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-06'"),
        ["Lyon|2|3.50,Oslo|1|100.00"]
    );
    // A rerun (the model's other periods from PostgreSQL, this one from the
    // run) gives the same rows; a failing accepted_values audit names a row.
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - accepted_values: { column: city, values: [Lyon] }\n",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 3, "{run:?}");
    let core = &run.json()["models"][0];
    assert_eq!(core["audits"][0]["failing"], 1, "{core:#}");
    assert_eq!(core["audits"][0]["sample"][0]["city"], "Oslo", "{core:#}");
}

/// Audits are computed by DataFusion over the rows the run kept: no
/// PostgreSQL function is reachable from them however it is spelled, so an
/// audit cannot change anything or read a server file (#47: `U&"nextv\0061l"`
/// got past the list of names when PostgreSQL ran audits).
#[test]
fn an_audit_cannot_reach_a_postgresql_function_however_spelled() {
    let env = Env::new("audit_no_server_functions");
    env.db
        .client()
        .batch_execute("CREATE SEQUENCE public.s")
        .unwrap();
    for sql in [
        r#"select * from core.sales_enriched where U&"nextv\0061l"('public.s') > 0"#,
        r#"select U&"pg\005fread\005ffile"('/etc/hostname') as f from core.sales_enriched"#,
        "select * from core.sales_enriched where lo_creat(-1) > 0",
    ] {
        env.write(
            "sql/core/sales_enriched.yml",
            &format!(
                "audits:\n  - name: sneaky\n    sql: '{}'\n",
                sql.replace('\'', "''")
            ),
        );
        let run = env.transform(&["--period", "2025-06"]);
        assert_eq!(run.code, 1, "{sql}: {run:?}");
        let error = run.json()["models"][0]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains("audit sneaky"), "{error}");
    }
    let advanced: bool = env
        .db
        .client()
        .query_one("SELECT is_called FROM public.s", &[])
        .unwrap()
        .get(0);
    assert!(!advanced, "the sequence never advanced");
    let objects: i64 = env
        .db
        .client()
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0);
    assert_eq!(objects, 0, "no large object was made");
}
