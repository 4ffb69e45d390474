//! `pipeline migrate` against a real PostgreSQL.

use crate::support::*;

fn migrate(dir: &std::path::Path, db: &TestDb) -> Run {
    pipeline(dir, Some(&db.url), &["--json", "migrate"])
}

fn columns(client: &mut postgres::Client, schema: &str, table: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&format!("{schema}.{table}")],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn fresh_database_gets_schemas_meta_reporting_and_stage_tables() {
    let db = TestDb::new("migrate_fresh");
    let dir = project(&sample_config());
    let run = migrate(dir.path(), &db);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    assert_eq!(out["command"], "migrate");
    assert_eq!(
        out["applied"],
        serde_json::json!([
            "0001_meta_and_reporting",
            "0002_integrity",
            "0003_incremental",
            "0004_key_history",
            "0005_fingerprints",
            "0006_audits",
            "0007_kept_rows_and_history",
            "0008_stage_partitions",
            "0009_model_engine",
            "0010_drift",
            "0011_redelivery",
            "0012_rejudged",
            "0013_amended",
            "0014_withdrawn"
        ])
    );
    assert_eq!(
        out["stage_tables_created"],
        serde_json::json!(["citizens", "regions"])
    );

    let mut c = db.client();
    let schemas: Vec<String> = c
        .query(
            "SELECT nspname::text FROM pg_namespace
              WHERE nspname IN ('meta','stage','core','mart','reporting') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, ["core", "mart", "meta", "reporting", "stage"]);
    for t in [
        "ingestion_log",
        "validation_log",
        "load_log",
        "transform_log",
        "schema_migrations",
    ] {
        assert!(!columns(&mut c, "meta", t).is_empty(), "meta.{t} missing");
    }

    let citizens = columns(&mut c, "stage", "citizens");
    assert_eq!(
        citizens,
        pairs(&[
            ("citizen_id", "bigint"),
            ("full_name", "text"),
            ("email", "text"),
            ("region_code", "text"),
            ("amount", "double precision"),
            ("signup", "date"),
            ("status", "text"),
            ("_data_period", "text"),
            ("_ingestion_id", "bigint"),
            ("_loaded_at", "timestamp with time zone"),
        ])
    );
    let period_not_null: bool = c
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'stage.citizens'::regclass AND attname = '_data_period'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(period_not_null);
    let kinds: Vec<(String, String)> = c
        .query(
            "SELECT relname::text, relkind::text FROM pg_class
              WHERE relnamespace = 'stage'::regnamespace AND relname IN ('citizens', 'regions')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kinds,
        pairs(&[("citizens", "p"), ("regions", "p")]),
        "periods partition a table; a dataset without them has its one DEFAULT partition"
    );
    // Period-less datasets have no _data_period.
    let regions = columns(&mut c, "stage", "regions");
    assert!(
        regions.iter().all(|(n, _)| n != "_data_period"),
        "{regions:?}"
    );
}

#[test]
fn reporting_tables_mirror_the_seed_contract() {
    let db = TestDb::new("migrate_reporting");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    let mut c = db.client();
    let tz = "timestamp with time zone";
    let expected: &[(&str, &[(&str, &str)])] = &[
        (
            "monitoring_file_schema_definition",
            &[
                ("id", "integer"),
                ("name", "character varying"),
                ("description", "text"),
                ("definition", "jsonb"),
                ("created_at", tz),
                ("updated_at", tz),
            ],
        ),
        (
            "monitoring_file",
            &[
                ("id", "integer"),
                ("file_name", "character varying"),
                ("agency_slug", "character varying"),
                ("latest_data_quality_score", "integer"),
                ("schema_definition_id", "integer"),
            ],
        ),
        (
            "monitoring_file_run",
            &[
                ("id", "integer"),
                ("monitoring_file_id", "integer"),
                ("agency_id", "integer"),
                ("created_at", tz),
                ("updated_at", tz),
                ("file_last_modified", "timestamp without time zone"),
                ("file_range_lower_limit", "timestamp without time zone"),
                ("file_size", "bigint"),
                ("run_date", "date"),
                ("run_hour", "integer"),
            ],
        ),
        (
            "monitoring_file_data_quality",
            &[
                ("id", "integer"),
                ("monitoring_file_run_id", "integer"),
                ("score", "integer"),
                ("passed", "boolean"),
                ("metrics", "jsonb"),
                ("deductions", "jsonb"),
                ("failed_validation_message", "text"),
                ("failed_validation_rules", "jsonb"),
                ("created_at", tz),
                ("updated_at", tz),
            ],
        ),
        (
            "monitoring_file_data_profile",
            &[
                ("id", "integer"),
                ("monitoring_file_run_id", "integer"),
                ("profile_payload", "jsonb"),
                ("created_at", tz),
                ("updated_at", tz),
            ],
        ),
    ];
    for (table, cols) in expected {
        assert_eq!(
            columns(&mut c, "reporting", table),
            pairs(cols),
            "reporting.{table}"
        );
    }
    assert!(!columns(&mut c, "reporting", "monitoring_file_failed_validation").is_empty());

    // The run is unique per (file, date, hour); quality and profile are one-to-one.
    c.batch_execute(
        "INSERT INTO reporting.monitoring_file (file_name, agency_slug) VALUES ('citizens', 'demo');
         INSERT INTO reporting.monitoring_file_run (monitoring_file_id, file_last_modified, file_size, run_date, run_hour)
              VALUES (1, now(), 10, '2025-06-01', 0);
         INSERT INTO reporting.monitoring_file_data_quality (monitoring_file_run_id, score, passed, metrics, deductions)
              VALUES (1, 90, true, '{}', '{}');
         INSERT INTO reporting.monitoring_file_data_profile (monitoring_file_run_id, profile_payload) VALUES (1, '{}');",
    )
    .unwrap();
    for dup in [
        "INSERT INTO reporting.monitoring_file_run (monitoring_file_id, file_last_modified, file_size, run_date, run_hour)
              VALUES (1, now(), 11, '2025-06-01', 0)",
        "INSERT INTO reporting.monitoring_file_data_quality (monitoring_file_run_id, score, passed, metrics, deductions)
              VALUES (1, 50, false, '{}', '{}')",
        "INSERT INTO reporting.monitoring_file_data_profile (monitoring_file_run_id, profile_payload) VALUES (1, '{}')",
    ] {
        let err = c.batch_execute(dup).unwrap_err();
        assert!(err.to_string().contains("db error"), "{err}");
        assert_eq!(err.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION), "{dup}");
    }
}

#[test]
fn rerun_is_a_no_op() {
    let db = TestDb::new("migrate_rerun");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    let second = migrate(dir.path(), &db);
    assert_eq!(second.code, 0, "{second:?}");
    let out = second.json();
    assert_eq!(out["applied"], serde_json::json!([]));
    let all = pipeline::migrate::MIGRATIONS.len();
    assert_eq!(out["already_applied"].as_array().unwrap().len(), all);
    assert_eq!(out["stage_tables_created"], serde_json::json!([]));
    assert_eq!(
        out["stage_tables_unchanged"],
        serde_json::json!(["citizens", "regions"])
    );
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM meta.schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(n as usize, all);
}

#[test]
fn concurrent_runs_are_safe() {
    let db = TestDb::new("migrate_concurrent");
    let dir = project(&sample_config());
    let children: Vec<_> = (0..3)
        .map(|_| {
            command(dir.path(), Some(&db.url), &["--json", "migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().into())
        .collect();
    for r in &runs {
        assert_eq!(r.code, 0, "{r:?}");
    }
    let applied: Vec<usize> = runs
        .iter()
        .map(|r| r.json()["applied"].as_array().unwrap().len())
        .filter(|&n| n > 0)
        .collect();
    assert_eq!(
        applied,
        [pipeline::migrate::MIGRATIONS.len()],
        "exactly one run applies the migrations: {runs:?}"
    );
    let created: usize = runs
        .iter()
        .map(|r| r.json()["stage_tables_created"].as_array().unwrap().len())
        .sum();
    assert_eq!(created, 2);
}

#[test]
fn edited_migration_is_an_error() {
    let db = TestDb::new("migrate_edited");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    db.client()
        .batch_execute("UPDATE meta.schema_migrations SET checksum = 'deadbeef' WHERE version = 1")
        .unwrap();
    let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("0001_meta_and_reporting was edited"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("deadbeef"), "{}", run.stderr);
}

#[test]
fn unknown_applied_migration_is_an_error() {
    let db = TestDb::new("migrate_unknown");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    db.client()
        .batch_execute("INSERT INTO meta.schema_migrations (version, name, checksum) VALUES (999, '0999_future', 'x')")
        .unwrap();
    let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("0999 (0999_future)"), "{}", run.stderr);
}

#[test]
fn stage_table_drift_names_each_alter_and_changes_nothing() {
    let db = TestDb::new("migrate_drift");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    let mut c = db.client();
    c.batch_execute(
        "ALTER TABLE stage.citizens DROP COLUMN email;
         ALTER TABLE stage.citizens ALTER COLUMN amount TYPE text;
         ALTER TABLE stage.citizens ADD COLUMN legacy_flag boolean;",
    )
    .unwrap();
    let before = columns(&mut c, "stage", "citizens");
    let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    for expected in [
        "stage.citizens.email: missing (config declares text)",
        "ALTER TABLE stage.\"citizens\" ADD COLUMN \"email\" text;",
        "stage.citizens.amount: is text but config declares double precision",
        "ALTER TABLE stage.\"citizens\" ALTER COLUMN \"amount\" TYPE double precision USING \"amount\"::double precision;",
        "ALTER TABLE stage.\"citizens\" DROP COLUMN \"legacy_flag\";",
        "nothing was changed",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    assert_eq!(columns(&mut c, "stage", "citizens"), before);
}

#[test]
fn drift_on_a_fresh_database_rolls_back_the_migrations_too() {
    let db = TestDb::new("migrate_drift_fresh");
    let dir = project(&sample_config());
    db.client()
        .batch_execute("CREATE SCHEMA stage; CREATE TABLE stage.regions (region_code integer)")
        .unwrap();
    let run = pipeline(dir.path(), Some(&db.url), &["migrate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("stage.regions.region_code: is integer"),
        "{}",
        run.stderr
    );
    let mut c = db.client();
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('meta.schema_migrations') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!exists, "the failed migrate must leave nothing behind");
    assert!(columns(&mut c, "stage", "citizens").is_empty());
}

/// Every row of the plain citizens table, in order, as one md5.
fn citizens_checksum(c: &mut postgres::Client) -> (i64, String) {
    let row = c
        .query_one(
            "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY citizen_id)) FROM stage.citizens t",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn relkind(c: &mut postgres::Client, table: &str) -> String {
    c.query_one(
        "SELECT relkind::text FROM pg_class WHERE oid = $1::text::regclass",
        &[&table],
    )
    .unwrap()
    .get(0)
}

/// A stage table made before 0008 (plain, indexed, granted, rows in two
/// periods) is partitioned by `migrate` with every row, its grant and its
/// extra index; a view reading it stops the conversion, named, nothing changed.
#[test]
fn plain_stage_tables_are_partitioned_with_every_row() {
    let db = TestDb::new("migrate_partition");
    let dir = project(&sample_config());
    assert_eq!(migrate(dir.path(), &db).code, 0);
    let reader = format!("{}_reader", db.name);
    let mut c = db.client();
    c.batch_execute(&format!(
        "CREATE TABLE stage.plain (LIKE stage.citizens INCLUDING DEFAULTS);
         DROP TABLE stage.citizens;
         ALTER TABLE stage.plain RENAME TO citizens;
         CREATE INDEX citizens_data_period_idx ON stage.citizens (_data_period);
         CREATE INDEX citizens_email_idx ON stage.citizens (email);
         INSERT INTO stage.citizens (citizen_id, full_name, email, _data_period, _ingestion_id, _loaded_at)
         SELECT g, 'n' || g, g || '@x', CASE WHEN g % 3 = 0 THEN '2025-05' ELSE '2025-06' END, g % 7,
                '2025-07-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1, 3000) g;
         CREATE ROLE \"{reader}\";
         GRANT SELECT ON stage.citizens TO \"{reader}\";
         CREATE VIEW public.recent AS SELECT * FROM stage.citizens WHERE _data_period = '2025-06';"
    ))
    .unwrap();
    let before = citizens_checksum(&mut c);
    assert_eq!(before.0, 3000);

    let refused = migrate(dir.path(), &db);
    assert_eq!(refused.code, 2, "{refused:?}");
    for expected in ["public.recent", "nothing was changed", "stage.\"citizens\""] {
        assert!(
            refused.stderr.contains(expected),
            "{expected:?} in {}",
            refused.stderr
        );
    }
    assert_eq!(relkind(&mut c, "stage.citizens"), "r");

    c.batch_execute("DROP VIEW public.recent").unwrap();
    let run = migrate(dir.path(), &db);
    assert_eq!(run.code, 0, "{run:?}");
    assert_output_schema(&run.json());
    assert_eq!(
        run.json()["stage_tables_partitioned"],
        serde_json::json!(["citizens"])
    );
    assert_eq!(relkind(&mut c, "stage.citizens"), "p");
    assert_eq!(citizens_checksum(&mut c), before, "every row, every value");
    let parts: Vec<(String, i64)> = c
        .query(
            "SELECT i.inhrelid::regclass::text,
                    (SELECT count(*) FROM stage.citizens t WHERE t.tableoid = i.inhrelid)
               FROM pg_inherits i WHERE i.inhparent = 'stage.citizens'::regclass ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        parts,
        [
            ("stage_part.\"citizens/2025-05/migrated\"".to_string(), 1000),
            ("stage_part.\"citizens/2025-06/migrated\"".to_string(), 2000),
            ("stage_part.\"citizens/default\"".to_string(), 0),
        ]
    );
    let kept: (bool, i64) = {
        let row = c
            .query_one(
                "SELECT has_table_privilege($1, 'stage.citizens', 'SELECT'),
                        (SELECT count(*) FROM pg_indexes WHERE schemaname = 'stage'
                            AND tablename = 'citizens' AND indexdef LIKE '%(email)%')",
                &[&reader],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(kept, (true, 1), "the grant and the email index are kept");
    let again = migrate(dir.path(), &db);
    assert_eq!(
        again.json()["stage_tables_partitioned"],
        serde_json::json!([])
    );
    c.batch_execute(&format!(
        "DROP TABLE stage.citizens; DROP ROLE \"{reader}\";"
    ))
    .unwrap();
}

/// A dataset added to the config after `migrate`: its load and check-counts
/// say to run `pipeline migrate` (exit 2), and after it the period loads.
#[test]
fn a_dataset_added_since_migrate_is_told_to_run_migrate() {
    let one = "version: 1\nlanded_dir: landed\nstage_dir: stage\ndatasets:\n  a:\n    file_pattern: '^a_(?P<period>\\d{4}-\\d{2})\\.csv$'\n    period: month\n    columns:\n      id: { type: int }\n";
    let p = Project::new("migrate_added_dataset", one);
    let two = format!(
        "{one}  b:\n    file_pattern: '^b_(?P<period>\\d{{4}}-\\d{{2}})\\.csv$'\n    period: month\n    columns:\n      id: {{ type: int }}\n"
    );
    std::fs::write(p.path("datasets_config.yml"), two).unwrap();
    std::fs::write(p.path("landed/b_2025-01.csv"), "id\n1\n").unwrap();
    let run = p.run(&["run", "--period", "2025-01", "--dataset", "b"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stdout.contains("run `pipeline migrate`"),
        "{}",
        run.stdout
    );
    let check = p.run(&["check-counts", "--dataset", "b", "--period", "2025-01"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(
        check.stderr.contains("run `pipeline migrate`"),
        "{}",
        check.stderr
    );
    assert_eq!(p.run(&["migrate"]).code, 0);
    assert_eq!(
        p.run(&["run", "--period", "2025-01", "--dataset", "b"])
            .code,
        0
    );
}
