//! `pipeline transform`: ordering, per-period replace, failures, dry runs, and
//! every SQL file in sql/ planned against the config.

use crate::support::*;

pub const CONFIG: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{4}-\d{2})\.csv$'
    period: month
    columns:
      id:      { type: int }
      shop_id: { type: int }
      amount:  { type: 'decimal(10,2)' }
  shops:
    file_pattern: '^shops\.csv$'
    period: none
    columns:
      shop_id: { type: int }
      city:    { type: string }
"#;

pub const CORE: &str = "-- Sales with their shop's city.
SELECT s.id, s.amount, sh.city
FROM stage.sales AS s
JOIN stage.shops AS sh ON sh.shop_id = s.shop_id
WHERE s._data_period = $period
";

pub const MART: &str = "WITH per_city AS (
    SELECT city, count(*) AS n, sum(amount) AS total
    FROM core.sales_enriched
    WHERE _data_period = $period
    GROUP BY city
)
SELECT city, n, total FROM per_city
";

/// A project with sales (monthly) and shops (full refresh) in stage and two
/// models, core.sales_enriched → mart.city_totals (audits.rs shares it).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: TestDb,
}

impl Env {
    pub fn new(test: &str) -> Env {
        let dir = project(CONFIG);
        for (path, sql) in [
            ("sql/core/sales_enriched.sql", CORE),
            ("sql/mart/city_totals.sql", MART),
        ] {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, sql).unwrap();
        }
        let db = TestDb::new(test);
        let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
        assert_eq!(run.code, 0, "{run:?}");
        db.client()
            .batch_execute(
                "INSERT INTO stage.shops (shop_id, city) VALUES (1, 'Lyon'), (2, 'Oslo');
                 INSERT INTO stage.sales (id, shop_id, amount, _data_period) VALUES
                   (1, 1, 10.50, '2025-05'), (2, 2, 5.00, '2025-05'),
                   (3, 1, 1.25, '2025-06'), (4, 1, 2.25, '2025-06'), (5, 2, 100.00, '2025-06');",
            )
            .unwrap();
        Env { dir, db }
    }

    pub fn write(&self, path: &str, sql: &str) {
        std::fs::write(self.dir.path().join(path), sql).unwrap();
    }

    pub fn transform(&self, args: &[&str]) -> Run {
        let mut all = vec!["--json", "transform"];
        all.extend(args);
        pipeline(self.dir.path(), Some(&self.db.url), &all)
    }

    /// `pipeline --json <args>` in the project.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--json"];
        all.extend(args);
        pipeline(self.dir.path(), Some(&self.db.url), &all)
    }

    pub fn rows(&self, sql: &str) -> Vec<String> {
        self.db
            .client()
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }
}

#[test]
fn core_then_mart_per_period_without_touching_other_periods() {
    let env = Env::new("transform_chain");
    let run = env.transform(&["--period", "2025-05"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let order: Vec<&str> = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["core.sales_enriched", "mart.city_totals"]);
    let may = env.rows("SELECT string_agg(concat_ws('|', city, n, total), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-05'");

    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    assert_eq!(
        env.transform(&["--period", "2025-06"]).code,
        0,
        "re-running is safe"
    );
    assert_eq!(
        env.rows("SELECT string_agg(concat_ws('|', city, n, total), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-05'"),
        may,
        "2025-05 untouched"
    );
    // The mart's numbers equal an independent computation over the same stage rows.
    let expected = env.rows(
        "SELECT string_agg(concat_ws('|', city, n, total), ',' ORDER BY city) FROM (
           SELECT sh.city, count(*) AS n, sum(s.amount) AS total
             FROM stage.sales s JOIN stage.shops sh USING (shop_id)
            WHERE s._data_period = '2025-06' GROUP BY sh.city) x",
    );
    let got = env.rows("SELECT string_agg(concat_ws('|', city, n, total), ',' ORDER BY city) FROM mart.city_totals WHERE _data_period = '2025-06'");
    assert_eq!(got, expected);
    assert_eq!(got, ["Lyon|2|3.50,Oslo|1|100.00"]);
    let n: i64 = env
        .db
        .client()
        .query_one(
            "SELECT count(*) FROM core.sales_enriched WHERE _data_period = '2025-06'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "no duplicates after a re-run");
    let logged: i64 = env
        .db
        .client()
        .query_one(
            "SELECT count(*) FROM meta.transform_log WHERE status = 'done'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(logged, 6);
}

/// A model's period is replaced under the same (table, period) lock as a load:
/// a run holding it makes transform wait, and the log says who holds it.
#[test]
fn a_held_period_lock_makes_transform_wait_and_says_who_holds_it() {
    let env = Env::new("transform_lock");
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    let mut holder = env.db.client();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('core.\"sales_enriched\"'), hashtext('2025-06'))",
        &[],
    )
    .unwrap();
    let child = command(
        env.dir.path(),
        Some(&env.db.url),
        &["transform", "--period", "2025-06"],
    )
    .env("PIPELINE_LOG", "info")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Still waiting: the period's rows are untouched meanwhile.
    let waiting: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pipeline transform%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(waiting >= 1, "transform is not connected and waiting");
    tx.rollback().unwrap();
    let run: Run = child.wait_with_output().unwrap().into();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("waiting for the period's lock") && run.stderr.contains("pid "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("got the period's lock"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_period_filter_and_columns_reach_postgres() {
    let env = Env::new("transform_pushdown");
    let run = command(
        env.dir.path(),
        Some(&env.db.url),
        &[
            "transform",
            "--period",
            "2025-06",
            "--model",
            "core.sales_enriched",
        ],
    )
    .env("PIPELINE_LOG", "pipeline=debug")
    // The route through DataFusion's scan (inside PostgreSQL nothing is read).
    .env("PIPELINE_MODELS_IN", "datafusion")
    .output()
    .unwrap();
    let run = Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("reading from PostgreSQL") && l.contains("sales"))
        .unwrap_or_else(|| panic!("no scan of stage.sales logged:\n{}", run.stderr));
    assert!(
        line.contains("\"_data_period\" = CAST($1::text AS text)")
            && line.contains("params=[\"2025-06\"]")
            && !line.contains("'2025-06'"),
        "the period filter runs in PostgreSQL with the value as a parameter: {line}"
    );
    assert!(
        !line.contains("SELECT *"),
        "only referenced columns: {line}"
    );
}

#[test]
fn a_failing_model_rolls_back_and_skips_its_dependants_only() {
    let env = Env::new("transform_failure");
    assert_eq!(env.transform(&["--period", "2025-06"]).code, 0);
    let before = env.rows(
        "SELECT string_agg(concat_ws('|', city, n), ',' ORDER BY city) FROM mart.city_totals",
    );
    env.write("sql/core/sales_enriched.sql", "SELECT s.id,\n       s.amountt AS amount, 'x' AS city\nFROM stage.sales AS s\nWHERE s._data_period = $period\n");
    std::fs::write(
        env.dir.path().join("sql/mart/shop_count.sql"),
        "SELECT count(*) AS shops FROM stage.shops\n",
    )
    .unwrap();
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    let status = |m: &str| {
        out["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["model"] == m)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status("core.sales_enriched"), "failed");
    assert_eq!(status("mart.city_totals"), "skipped");
    assert_eq!(
        status("mart.shop_count"),
        "done",
        "independent models still run"
    );
    let err = out["models"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let failing = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["status"] == "failed")
        .unwrap();
    let err = if err.is_empty() {
        failing["error"].as_str().unwrap().to_owned()
    } else {
        err
    };
    assert!(
        err.contains("sql/core/sales_enriched.sql:2:"),
        "names file and line: {err}"
    );
    assert!(err.contains("amountt"), "{err}");
    assert_eq!(
        env.rows(
            "SELECT string_agg(concat_ws('|', city, n), ',' ORDER BY city) FROM mart.city_totals"
        ),
        before
    );
    let skipped: i64 = env
        .db
        .client()
        .query_one(
            "SELECT count(*) FROM meta.transform_log WHERE status = 'skipped'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(skipped, 1);
    let full: bool = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["model"] == "mart.shop_count")
        .unwrap()["full_refresh"]
        .as_bool()
        .unwrap();
    assert!(full, "reads only a period-less table");
}

#[test]
fn dry_run_prints_order_plans_and_rows_and_writes_nothing() {
    let env = Env::new("transform_dry");
    let run = pipeline(
        env.dir.path(),
        Some(&env.db.url),
        &["transform", "--period", "2025-06", "--dry-run"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let core_at = run
        .stdout
        .find("-- core.sales_enriched")
        .expect("core first");
    let mart_at = run.stdout.find("-- mart.city_totals").expect("then mart");
    assert!(core_at < mart_at);
    assert!(run.stdout.contains("Projection"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Lyon"),
        "first rows shown: {}",
        run.stdout
    );
    let exists: bool = env
        .db
        .client()
        .query_one("SELECT to_regclass('core.sales_enriched') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists);
    let logged: i64 = env
        .db
        .client()
        .query_one("SELECT count(*) FROM meta.transform_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 0);
}

#[test]
fn model_flag_runs_upstream_and_lists_stale_downstream() {
    let env = Env::new("transform_model");
    let run = env.transform(&["--period", "2025-06", "--model", "core.sales_enriched"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(out["models"].as_array().unwrap().len(), 1);
    assert_eq!(out["stale"], serde_json::json!(["mart.city_totals"]));
    let run = env.transform(&["--period", "2025-06", "--model", "city_totals"]);
    assert_eq!(
        run.json()["models"].as_array().unwrap().len(),
        2,
        "with what it depends on"
    );
}

/// A column added to a model is added to its table, and every other period
/// becomes stale (the model changed) so `run` fills it; a removed column
/// stops the model with the statement to apply, nothing dropped unasked.
/// A model's result columns changing, the day after: `run --plan` and
/// `--dry-run` say how its table will change; an added column is added and
/// every other period recomputed in the same run (no period keeps it NULL);
/// a removed one stops the model with the statement (`on_schema_change: add`,
/// the default) until the model's YAML says `sync`, which drops and retypes;
/// `fail` refuses any change.
#[test]
fn a_model_result_that_changes_columns_changes_its_table_and_every_period() {
    let env = Env::new("transform_schema");
    std::fs::create_dir_all(env.dir.path().join("landed")).unwrap();
    let model = ["--model", "core.sales_enriched"];
    let transform = |period: &str| env.transform(&[&["--period", period][..], &model[..]].concat());
    for period in ["2025-05", "2025-06"] {
        assert_eq!(transform(period).code, 0);
    }
    env.write(
        "sql/core/sales_enriched.sql",
        &CORE.replace("sh.city", "sh.city, s.shop_id"),
    );
    // Audits reading the other periods while the replace waits open: the
    // column was added before it, so nothing blocks them.
    env.write(
        "sql/core/sales_enriched.yml",
        "audits:\n  - row_count: { within_previous: 10 }\n  - name: others_readable\n    sql: select * from core.sales_enriched where _data_period < $period and amount < 0\n",
    );
    let dry = env.transform(&[
        "--period",
        "2025-06",
        "--dry-run",
        "--model",
        "core.sales_enriched",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let plan = dry.json()["models"][0]["plan"].as_str().unwrap().to_owned();
    assert!(
        plan.contains("-- schema: adds shop_id bigint (on_schema_change: add); every other period"),
        "{plan}"
    );
    let planned = env.run(&["run", "--plan", "--period", "2025-06"]);
    let items = planned.json()["items"].clone();
    assert!(items.is_array(), "{planned:?}");
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["target"] == "core.sales_enriched"
                && i["action"] == "alter"
                && i["reason"]
                    .as_str()
                    .unwrap()
                    .contains("adds shop_id bigint")),
        "{items:#}"
    );

    let run = transform("2025-06");
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(
        out["models"][0]["schema_change"],
        serde_json::json!(["adds shop_id bigint"])
    );
    assert_eq!(out["models"][0]["audits"][1]["failing"], 0, "{out:#}");
    assert_eq!(
        out["recomputed"][0]["model"], "core.sales_enriched",
        "{out:#}"
    );
    assert_eq!(out["recomputed"][0]["period"], "2025-05", "{out:#}");
    assert_eq!(out["recomputed"][0]["status"], "done", "{out:#}");
    assert_eq!(
        env.rows("SELECT count(*)::text FROM core.sales_enriched WHERE shop_id IS NULL"),
        ["0"],
        "no period keeps the new column NULL"
    );
    let status = pipeline(env.dir.path(), Some(&env.db.url), &["--json", "status"]).json();
    let stale: Vec<String> = (status["stale_models"].as_array().unwrap().iter())
        .map(|m| format!("{} {}", m["model"], m["period"]))
        .collect();
    assert!(
        !stale.iter().any(|s| s.contains("core.sales_enriched")),
        "every period was recomputed: {stale:?}"
    );

    // A column removed: the default stops the model with the statement.
    env.write("sql/core/sales_enriched.yml", "");
    env.write(
        "sql/core/sales_enriched.sql",
        &CORE.replace("sh.city", "s.shop_id"),
    );
    let planned = env.run(&["run", "--plan", "--period", "2025-06"]);
    assert_eq!(planned.code, 1, "{planned:?}");
    let run = transform("2025-06");
    assert_eq!(run.code, 1, "{run:?}");
    let err = run.json()["models"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("ALTER TABLE core.\"sales_enriched\" DROP COLUMN \"city\";")
            && err.contains("on_schema_change: sync"),
        "{err}"
    );
    assert_eq!(
        env.rows("SELECT count(*)::text FROM core.sales_enriched WHERE city IS NOT NULL"),
        ["5"]
    );

    // `sync`: dropped, and a retyped column converted, every period again.
    env.write("sql/core/sales_enriched.yml", "on_schema_change: sync\n");
    env.write(
        "sql/core/sales_enriched.sql",
        &CORE
            .replace("sh.city", "s.shop_id")
            .replace("s.amount", "CAST(s.amount AS DOUBLE) AS amount"),
    );
    let run = transform("2025-06");
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(
        out["models"][0]["schema_change"],
        serde_json::json!([
            "retypes amount from numeric(10,2) to double precision",
            "drops city (text)"
        ]),
        "{out:#}"
    );
    assert_eq!(out["recomputed"][0]["status"], "done", "{out:#}");
    assert_eq!(
        env.rows("SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'core' AND table_name = 'sales_enriched'"),
        ["id bigint, amount double precision, _data_period text, shop_id bigint"]
    );

    // `fail`: any difference stops the model.
    env.write("sql/core/sales_enriched.yml", "on_schema_change: fail\n");
    env.write(
        "sql/core/sales_enriched.sql",
        &CORE
            .replace("sh.city", "s.shop_id, sh.city")
            .replace("s.amount", "CAST(s.amount AS DOUBLE) AS amount"),
    );
    let run = transform("2025-06");
    assert_eq!(run.code, 1, "{run:?}");
    let err = run.json()["models"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("adds city text") && err.contains("on_schema_change: fail"),
        "{err}"
    );
}

#[test]
fn bad_model_files_are_usage_errors_naming_the_file() {
    let env = Env::new("transform_bad");
    env.write("sql/mart/city_totals.sql", "SELECT * FROM mart.nowhere");
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("sql/mart/city_totals.sql: reads unknown table mart.nowhere"),
        "{}",
        run.stderr
    );
    env.write("sql/mart/city_totals.sql", "SELECT * FROM mart.city_totals");
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cycle"), "{}", run.stderr);
    let run = env.transform(&["--period", "June"]);
    assert_eq!(run.code, 2);
}

/// A model whose SQL does not parse (or is SELECT … INTO) fails alone with
/// exit 1, naming its file and line; the other models run, its dependants are
/// skipped.
#[test]
fn a_model_that_does_not_parse_fails_alone() {
    let env = Env::new("transform_syntax");
    env.write(
        "sql/core/broken.sql",
        "SELECT shop_id,\nFROM WHERE stage.sales",
    );
    env.write("sql/mart/on_broken.sql", "SELECT * FROM core.broken");
    env.write(
        "sql/core/evil.sql",
        "SELECT id INTO core.evil2 FROM stage.sales",
    );
    // The pipeline sets `_data_period`: a model computing its own is refused,
    // one passing stage's through (`SELECT *`) is not; nor is a model with no
    // column but that one.
    env.write(
        "sql/core/own_period.sql",
        "SELECT shop_id, '1999-01' AS _data_period FROM stage.sales",
    );
    env.write(
        "sql/core/all_of_it.sql",
        "SELECT * FROM stage.sales WHERE _data_period = $period",
    );
    env.write(
        "sql/core/nothing.sql",
        "SELECT _data_period FROM stage.sales",
    );
    let run = env.transform(&["--period", "2025-06"]);
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    let status = |model: &str| -> (String, String) {
        let m = out["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == model)
            .unwrap_or_else(|| panic!("no {model} in {out}"));
        (
            m["status"].as_str().unwrap().to_owned(),
            m["error"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let (broken, why) = status("core.broken");
    assert_eq!(broken, "failed");
    assert!(why.contains("sql/core/broken.sql:2:"), "{why}");
    assert_eq!(status("mart.on_broken").0, "skipped");
    let (evil, why) = status("core.evil");
    assert_eq!(evil, "failed");
    assert!(why.contains("INTO"), "{why}");
    assert_eq!(status("core.sales_enriched").0, "done");
    assert_eq!(status("mart.city_totals").0, "done");
    let (own, why) = status("core.own_period");
    assert_eq!(own, "failed");
    assert!(why.contains("computes its own `_data_period`"), "{why}");
    assert_eq!(status("core.all_of_it").0, "done");
    let (nothing, why) = status("core.nothing");
    assert_eq!(nothing, "failed");
    assert!(why.contains("no columns of its own"), "{why}");
    let into: bool = env
        .db
        .client()
        .query_one("SELECT to_regclass('core.\"into\"') IS NOT NULL OR to_regclass('core.evil2') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!into, "SELECT INTO created nothing");
}

/// Every model shipped in sql/ parses and plans against the schemas the config
/// declares, so a broken model fails CI.
#[test]
fn every_shipped_sql_model_plans() {
    let config = pipeline::config::Config::load(&repo().join("datasets_config.yml")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let planned = rt
        .block_on(pipeline::transform::check_models(
            &config,
            &repo().join("sql"),
        ))
        .unwrap();
    let (model, schema) = planned
        .iter()
        .find(|(m, _)| m == "mart.citizens_by_region")
        .expect("the sample mart model");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "region_code",
            "region_name",
            "citizens",
            "active_citizens",
            "total_amount",
            "_data_period"
        ],
        "{model}"
    );
    // The shipped unit tests pass, with no database.
    let run = pipeline(&repo(), None, &["--json", "test"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json()["passed"].as_u64().unwrap() >= 1, "{run:?}");
    // And the check does catch a broken model.
    let dir = project(CONFIG);
    std::fs::create_dir_all(dir.path().join("sql/core")).unwrap();
    std::fs::write(
        dir.path().join("sql/core/x.sql"),
        "SELECT nope FROM stage.sales",
    )
    .unwrap();
    let config = pipeline::config::Config::load(&dir.path().join("datasets_config.yml")).unwrap();
    let err = rt
        .block_on(pipeline::transform::check_models(
            &config,
            &dir.path().join("sql"),
        ))
        .unwrap_err();
    assert!(err.contains("x.sql:1:8"), "{err}");
}

const FULL_REFRESH: &str = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  parts:
    file_pattern: '^parts\.csv$'
    period: none
    columns:
      part_id: { type: int }
      price:   { type: 'decimal(10,2)' }
"#;

#[test]
fn a_project_of_full_refresh_datasets_runs_from_migrate_to_transform_without_a_period() {
    let p = Project::new("full_refresh_project", FULL_REFRESH);
    std::fs::write(
        p.path("landed/parts.csv"),
        "part_id,price\n1,5.00\n2,12.50\n3,7.25\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.path("sql/mart")).unwrap();
    std::fs::write(
        p.path("sql/mart/price_bands.sql"),
        "SELECT CASE WHEN price < 10 THEN 'low' ELSE 'high' END AS band, count(*) AS parts
           FROM stage.parts GROUP BY 1",
    )
    .unwrap();
    std::fs::write(
        p.path("sql/mart/price_bands.yml"),
        "audits:\n  - unique: [band]\n  - row_count: { min: 1, within_previous: 0.4 }\n",
    )
    .unwrap();
    let run = p.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    let bands = || {
        p.db.client()
            .query_one(
                "SELECT string_agg(band || '=' || parts, ',' ORDER BY band) FROM mart.price_bands",
                &[],
            )
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(bands(), "high=1,low=2");
    let periods: i64 =
        p.db.client()
            .query_one(
                "SELECT count(*) FROM meta.transform_log WHERE period IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
    assert_eq!(periods, 0, "a model replaced whole has no period");
    assert_eq!(p.run(&["run"]).code, 99, "nothing changed");
    let t = p.run(&["transform"]);
    assert_eq!(t.code, 0, "{t:?}");
    assert_eq!(t.json()["period"], serde_json::Value::Null);
    assert_eq!(t.json()["models"][0]["full_refresh"], true);
    // An orchestrator that passes a period anyway is not refused.
    assert_eq!(p.run(&["transform", "--period", "1998-12"]).code, 0);
    // The audits apply to the whole table: a model that went from 2 bands to 1
    // is more than 40 % away from the rows it had.
    std::fs::write(
        p.path("sql/mart/price_bands.sql"),
        "SELECT 'all' AS band, count(*) AS parts FROM stage.parts",
    )
    .unwrap();
    let t = p.run(&["transform"]);
    assert_eq!(t.code, 3, "{t:?}");
    assert_eq!(bands(), "high=1,low=2", "kept");
}

#[test]
fn without_a_period_models_and_datasets_with_periods_ask_for_one() {
    let env = Env::new("period_needed");
    let t = env.transform(&[]);
    assert_eq!(t.code, 2, "{t:?}");
    assert!(
        t.json()["error"]
            .as_str()
            .unwrap()
            .contains("--period is required"),
        "{t:?}"
    );
    let run = pipeline(env.dir.path(), Some(&env.db.url), &["--json", "run"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.json()["error"]
            .as_str()
            .unwrap()
            .contains("--period (or --from/--to) is required: sales has periods"),
        "{run:?}"
    );
}

/// `pipeline lineage`: each model column's sources read from the plan —
/// through a CTE, a join, CASE, COALESCE, a window and a correlated
/// subquery — down to the stage columns with their declared rules; no
/// database needed.
#[test]
fn lineage_traces_each_model_column_to_its_stage_columns() {
    let config = r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  orders:
    file_pattern: '^orders_(?P<period>\d{4}-\d{2})\.csv$'
    period: month
    columns:
      o_id:     { type: int, required: true }
      o_cust:   { type: int }
      o_total:  { type: 'decimal(12,2)', min: 0 }
      o_status: { type: string, allowed: [F, O] }
  customers:
    file_pattern: '^customers\.csv$'
    period: none
    columns:
      c_id:   { type: int }
      c_name: { type: string }
"#;
    let dir = project(config);
    for (path, sql) in [
        (
            "sql/core/order_facts.sql",
            "WITH o AS (
    SELECT o_id, o_cust, o_total, CASE WHEN o_status = 'F' THEN 1 ELSE 0 END AS is_final
    FROM stage.orders WHERE _data_period = $period
)
SELECT o.o_id, c.c_name AS customer, coalesce(o.o_total, 0) AS total, o.is_final,
       row_number() OVER (PARTITION BY o.o_cust ORDER BY o.o_total DESC) AS rank_in_customer
FROM o JOIN stage.customers c ON c.c_id = o.o_cust
WHERE o.o_total > (SELECT avg(o2.o_total) FROM stage.orders o2 WHERE o2.o_cust = o.o_cust)
",
        ),
        (
            "sql/mart/customer_totals.sql",
            "SELECT customer, sum(total) AS total, count(*) AS orders
FROM core.order_facts WHERE _data_period = $period GROUP BY customer
",
        ),
    ] {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, sql).unwrap();
    }
    let run = pipeline(dir.path(), None, &["--json", "lineage"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let sources = |model: &str, column: &str, key: &str| -> Vec<String> {
        let m = (out["models"].as_array().unwrap().iter())
            .find(|m| m["model"] == model)
            .unwrap_or_else(|| panic!("no {model}: {out:#}"));
        let c = (m["columns"].as_array().unwrap().iter())
            .find(|c| c["column"] == column)
            .unwrap_or_else(|| panic!("no {column}: {m:#}"));
        (c[key].as_array().unwrap().iter())
            .map(|s| {
                format!(
                    "{}.{} {}",
                    s["table"].as_str().unwrap(),
                    s["column"].as_str().unwrap(),
                    s["usage"].as_str().unwrap()
                )
            })
            .collect()
    };
    let core = "core.order_facts";
    assert_eq!(sources(core, "o_id", "from"), ["stage.orders.o_id copied"]);
    assert_eq!(
        sources(core, "customer", "from"),
        ["stage.customers.c_name copied"]
    );
    assert_eq!(
        sources(core, "total", "from"),
        ["stage.orders.o_total computed"]
    );
    assert_eq!(
        sources(core, "is_final", "from"),
        ["stage.orders.o_status computed"]
    );
    assert_eq!(
        sources(core, "rank_in_customer", "from"),
        [
            "stage.orders.o_cust aggregated",
            "stage.orders.o_total aggregated"
        ]
    );
    let mart = "mart.customer_totals";
    assert_eq!(
        sources(mart, "customer", "from"),
        ["core.order_facts.customer copied"]
    );
    assert_eq!(
        sources(mart, "customer", "stage"),
        ["stage.customers.c_name copied"]
    );
    assert_eq!(
        sources(mart, "total", "stage"),
        ["stage.orders.o_total aggregated"]
    );
    assert_eq!(
        sources(mart, "orders", "from"),
        ["core.order_facts.* aggregated"]
    );
    // Stage columns carry what the config declares.
    let declared = (out["models"][0]["columns"].as_array().unwrap().iter())
        .find(|c| c["column"] == "total")
        .map(|c| c["from"][0]["declared"].clone())
        .unwrap();
    assert_eq!(declared, "type: decimal(12,2), min: 0");
    // Filters and joins, the correlated subquery's included.
    let filters: Vec<String> = (out["models"][0]["filters"].as_array().unwrap().iter())
        .map(|s| {
            format!(
                "{}.{}",
                s["table"].as_str().unwrap(),
                s["column"].as_str().unwrap()
            )
        })
        .collect();
    for f in [
        "stage.orders._data_period",
        "stage.orders.o_total",
        "stage.orders.o_cust",
        "stage.customers.c_id",
    ] {
        assert!(filters.contains(&f.to_owned()), "{f} not in {filters:?}");
    }
    // Text and dot say the same; unknown names are usage errors.
    let text = pipeline(
        dir.path(),
        None,
        &["lineage", "--model", "customer_totals", "--column", "total"],
    );
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout
            .contains("← core.order_facts.total (aggregated)"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("⇐ stage.orders.o_total (aggregated) [type: decimal(12,2), min: 0]"),
        "{}",
        text.stdout
    );
    let dot = pipeline(dir.path(), None, &["lineage", "--format", "dot"]);
    assert!(
        dot.stdout
            .contains("\"stage.orders.o_id\" -> \"core.order_facts.o_id\""),
        "{}",
        dot.stdout
    );
    let unknown = pipeline(dir.path(), None, &["lineage", "--model", "nope"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no model `nope`"),
        "{}",
        unknown.stderr
    );
    let column = pipeline(
        dir.path(),
        None,
        &["lineage", "--model", "order_facts", "--column", "nope"],
    );
    assert_eq!(column.code, 2, "{column:?}");
}

/// Transforms of two periods at once on a fresh database both create the
/// model tables they need: one creates each, the other finds it (PostgreSQL's
/// catalog refused the second CREATE TABLE before: exit 1).
#[test]
fn transforms_of_two_periods_at_once_create_each_model_table_once() {
    for round in 0..3 {
        let env = Env::new(&format!("transform_first_two_{round}"));
        let spawn = |period: &str| {
            command(
                env.dir.path(),
                Some(&env.db.url),
                &["--json", "transform", "--period", period],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (a, b) = (spawn("2025-05"), spawn("2025-06"));
        for child in [a, b] {
            let run: Run = child.wait_with_output().unwrap().into();
            assert_eq!(run.code, 0, "{run:?}");
        }
        let n = env.rows("SELECT count(*)::text FROM mart.city_totals");
        assert_eq!(n, ["4"], "two cities in each of two periods");
    }
}

/// A mart value traced back to its file lines (#50): the model's rows
/// matching --where, and for each stage table the rows that fed them — the
/// citizens of that region through the join, the region itself — each with
/// its file, verdict, load and line; the lines are the file's.
#[test]
fn a_mart_value_is_traced_back_to_the_lines_of_its_files() {
    let dir = sample_project();
    let db = TestDb::new("transform_trace");
    let run = |args: &[&str]| pipeline(dir.path(), Some(&db.url), args);
    assert_eq!(run(&["migrate"]).code, 0);
    assert_eq!(run(&["run", "--period", "2025-05"]).code, 0);
    let trace = run(&[
        "--json",
        "trace",
        "--model",
        "mart.citizens_by_region",
        "--period",
        "2025-05",
        "--where",
        "region_code = 'NO'",
        "--limit",
        "1000",
    ]);
    assert_eq!(trace.code, 0, "{trace:?}");
    let out = trace.json();
    assert_eq!(out["rows"], 1, "{out:#}");
    let want: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05' AND region_code = 'NO'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(out["matched"][0]["citizens"], want, "{out:#}");
    let source = |t: &str| {
        out["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["table"] == t)
            .unwrap_or_else(|| panic!("{t}: {out:#}"))
            .clone()
    };
    let citizens = source("stage.citizens");
    assert_eq!(citizens["rows"], want, "{citizens:#}");
    assert!(
        citizens["linked_by"][0]
            .as_str()
            .unwrap()
            .contains("region_code ← stage.citizens.region_code"),
        "{citizens:#}"
    );
    let text =
        std::fs::read_to_string(dir.path().join("data/landed/citizens_2025-05.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for l in citizens["lines"].as_array().unwrap() {
        assert_eq!(l["file"], "citizens_2025-05.csv");
        let n = l["line"].as_i64().unwrap() as usize;
        let fields: Vec<&str> = lines[n - 1].split(',').collect();
        assert_eq!(
            fields[3],
            "NO",
            "line {n} is a citizen of NO: {}",
            lines[n - 1]
        );
    }
    let regions = source("stage.regions");
    assert_eq!(regions["rows"], 1, "{regions:#}");
    assert_eq!(regions["lines"][0]["file"], "regions.csv");
    assert_eq!(
        regions["lines"][0]["line"], 2,
        "NO is the first region: {regions:#}"
    );
    let human = run(&[
        "trace",
        "--model",
        "mart.citizens_by_region",
        "--period",
        "2025-05",
        "--where",
        "region_code = 'NO'",
    ]);
    assert!(
        human.stdout.contains("citizens_2025-05.csv (file"),
        "{}",
        human.stdout
    );
    let bad = run(&[
        "trace",
        "--model",
        "mart.citizens_by_region",
        "--period",
        "2025-05",
        "--where",
        "nope = 1",
    ]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--where `nope = 1`"), "{}", bad.stderr);
}
