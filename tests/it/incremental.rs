//! Row-level incremental datasets: each acquisition folder holds a snapshot of
//! the table; only keys no earlier night processed are validated and appended.
//! Three nights with new, unchanged, changed and invalid rows; a crash at each
//! commit seam; re-runs; `changed_rows: append`; the manifest as Parquet.

use crate::support::*;

fn config(changed_rows: &str) -> String {
    format!(
        r#"version: 1
landed_dir: landed
stage_dir: stage
datasets:
  customers:
    file_pattern: '^customers\.csv$'
    period: day
    primary_key: [id]
    min_quality_score: 0
    incremental: {{ changed_rows: {changed_rows} }}
    columns:
      id:     {{ type: int, required: true }}
      email:  {{ type: string, regex: '^[^@\s]+@[^@\s]+$' }}
      amount: {{ type: float, min: 0 }}
"#
    )
}

/// Night 1: 1-3 good, 4 a bad email. Night 2: 1, 3, 4 again, 2 with a changed
/// amount, 5 new. Night 3: everything again, 6 new with a negative amount, 7 new.
const NIGHTS: [(&str, &str); 3] = [
    (
        "2025-07-01",
        "id,email,amount\n1,a@x.io,10\n2,b@x.io,20\n3,c@x.io,30\n4,not-an-email,40\n",
    ),
    (
        "2025-07-02",
        "id,email,amount\n1,a@x.io,10\n2,b@x.io,25\n3,c@x.io,30\n4,not-an-email,40\n5,e@x.io,50\n",
    ),
    (
        "2025-07-03",
        "id,email,amount\n1,a@x.io,10\n2,b@x.io,25\n3,c@x.io,30\n4,not-an-email,40\n5,e@x.io,50\n6,f@x.io,-1\n7,g@x.io,70\n",
    ),
];

fn land(project: &Project, night: usize) {
    let (date, body) = NIGHTS[night];
    let dir = project.path(&format!("landed/{date}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("customers.csv"), body).unwrap();
}

/// `run` for one night, taking the file from its acquisition folder.
fn run_night(project: &Project, night: usize) -> Run {
    let date = NIGHTS[night].0;
    project.run(&["run", "--period", date, "--acq-date", date])
}

fn validated(out: &serde_json::Value) -> (u64, u64, u64) {
    (
        out["rows_in"].as_u64().unwrap(),
        out["rows_rejected"].as_u64().unwrap(),
        out["rows_skipped"].as_u64().unwrap(),
    )
}

/// (period, id) of every stage row, in order.
fn stage(project: &Project) -> Vec<(String, i64)> {
    project
        .db
        .client()
        .query(
            "SELECT _data_period, id FROM stage.customers ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// (period, pk, status) of every processed key, in order.
fn processed(project: &Project) -> Vec<(String, String, String)> {
    project
        .db
        .client()
        .query(
            "SELECT period, pk, status FROM meta.processed_keys ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn keys(period: &str, ids: &[(&str, &str)]) -> Vec<(String, String, String)> {
    ids.iter()
        .map(|(id, status)| (period.to_owned(), (*id).to_owned(), (*status).to_owned()))
        .collect()
}

#[test]
fn three_nights_validate_each_key_once_and_append_the_new_rows() {
    let project = Project::new("incremental_nights", &config("ignore"));
    for night in 0..3 {
        land(&project, night);
    }
    let night1 = run_night(&project, 0);
    assert_eq!(night1.code, 0, "{night1:?}");

    // Validating night 1 again sees the same rows: the night's own keys are
    // replaced, not counted as processed before.
    let again = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-01",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(validated(&again.json()), (4, 1, 0));

    let night2 = run_night(&project, 1);
    assert_eq!(night2.code, 0, "{night2:?}");
    let v2 = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-02",
    ]);
    // 1-4 were processed on night 1 (2 changed, ignored by default); only 5 is new.
    assert_eq!(validated(&v2.json()), (1, 0, 4));

    let night3 = run_night(&project, 2);
    assert_eq!(night3.code, 0, "{night3:?}");
    assert_eq!(
        stage(&project),
        vec![
            ("2025-07-01".into(), 1),
            ("2025-07-01".into(), 2),
            ("2025-07-01".into(), 3),
            ("2025-07-02".into(), 5),
            ("2025-07-03".into(), 7),
        ]
    );
    let mut expected = keys(
        "2025-07-01",
        &[
            ("1", "valid"),
            ("2", "valid"),
            ("3", "valid"),
            ("4", "rejected"),
        ],
    );
    expected.extend(keys("2025-07-02", &[("5", "valid")]));
    expected.extend(keys("2025-07-03", &[("6", "rejected"), ("7", "valid")]));
    assert_eq!(processed(&project), expected);
    let errors: String = project
        .db
        .client()
        .query_one("SELECT errors FROM meta.processed_keys WHERE pk = '6'", &[])
        .unwrap()
        .get(0);
    assert!(
        errors.contains("amount") && errors.contains("min"),
        "{errors}"
    );
    let skipped: i64 = project
        .db
        .client()
        .query_one(
            "SELECT rows_skipped FROM meta.validation_log WHERE period = '2025-07-03' AND status = 'passed' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(skipped, 5);

    // Re-running the last night processes nothing twice: same keys, same stage.
    let before = (stage(&project), processed(&project));
    let rerun = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-03",
    ]);
    assert_eq!(validated(&rerun.json()), (2, 1, 5));
    let load = project.run(&[
        "load-stage",
        "--dataset",
        "customers",
        "--period",
        "2025-07-03",
    ]);
    assert_eq!(load.code, 0, "{load:?}");
    assert_eq!((stage(&project), processed(&project)), before);

    // An older night after a newer one would put a key in two nights: refused.
    let old = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-02",
    ]);
    assert_eq!(old.code, 2, "{old:?}");
    assert!(
        old.json()["error"].as_str().unwrap().contains("in order"),
        "{old:?}"
    );

    // The manifest as Parquet: every processed key with its status.
    let out = project.path("manifest.parquet");
    let export = project.run(&[
        "manifest",
        "--dataset",
        "customers",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(export.code, 0, "{export:?}");
    assert_eq!(export.json()["rows"], 7);
    let rows = parquet_rows(&out, "SELECT period, pk, status FROM t ORDER BY 1, 2");
    let from_parquet: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(from_parquet, expected);
}

#[test]
fn changed_rows_append_validates_a_known_key_again_when_its_values_changed() {
    let project = Project::new("incremental_append", &config("append"));
    for night in 0..2 {
        land(&project, night);
        let run = run_night(&project, night);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let v2 = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-02",
    ]);
    // 2 changed its amount and 5 is new; 1, 3 and the still-bad 4 are unchanged.
    assert_eq!(validated(&v2.json()), (2, 0, 3));
    assert_eq!(
        stage(&project)
            .into_iter()
            .filter(|(p, _)| p == "2025-07-02")
            .map(|(_, id)| id)
            .collect::<Vec<_>>(),
        [2, 5]
    );
}

/// A crash at each commit seam of night 2 (after the cleaned write, after both
/// Delta writes, before stage's commit): no key is marked processed unless the
/// verdict storing its row committed, and the next run finishes the night.
#[test]
fn a_crash_between_steps_never_marks_keys_processed_that_were_not_stored() {
    let project = Project::new("incremental_crash", &config("ignore"));
    land(&project, 0);
    assert_eq!(run_night(&project, 0).code, 0);
    land(&project, 1);
    let ingest = project.run(&["ingest", "--all", "--acq-date", "2025-07-02"]);
    assert_eq!(ingest.code, 0, "{ingest:?}");
    let night1_keys = processed(&project);
    for fault in ["validate-after-cleaned", "validate-after-delta"] {
        let crashed: Run = command(
            project.dir.path(),
            Some(&project.db.url),
            &[
                "validate",
                "--dataset",
                "customers",
                "--period",
                "2025-07-02",
            ],
        )
        .env("PIPELINE_FAULT", fault)
        .output()
        .unwrap()
        .into();
        assert_ne!(crashed.code, 0, "{fault}: {crashed:?}");
        assert_eq!(processed(&project), night1_keys, "{fault}");
    }
    // Validated and committed, then a crash before load-stage commits.
    let validate = project.run(&[
        "validate",
        "--dataset",
        "customers",
        "--period",
        "2025-07-02",
    ]);
    assert_eq!(validated(&validate.json()), (1, 0, 4));
    let crashed: Run = command(
        project.dir.path(),
        Some(&project.db.url),
        &[
            "load-stage",
            "--dataset",
            "customers",
            "--period",
            "2025-07-02",
        ],
    )
    .env("PIPELINE_FAULT", "load-before-commit")
    .output()
    .unwrap()
    .into();
    assert_ne!(crashed.code, 0, "{crashed:?}");
    assert!(!stage(&project).iter().any(|(p, _)| p == "2025-07-02"));
    // The key is processed and its row stored in the cleaned table: the re-run
    // loads it, and validates nothing twice.
    let rerun = run_night(&project, 1);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert_eq!(
        stage(&project)
            .into_iter()
            .filter(|(p, _)| p == "2025-07-02")
            .collect::<Vec<_>>(),
        [("2025-07-02".to_owned(), 5)]
    );
    let mut expected = night1_keys;
    expected.extend(keys("2025-07-02", &[("5", "valid")]));
    assert_eq!(processed(&project), expected);
}

#[test]
fn an_incremental_snapshot_outside_a_date_folder_is_rejected() {
    let project = Project::new("incremental_root", &config("ignore"));
    std::fs::write(project.path("landed/customers.csv"), NIGHTS[0].1).unwrap();
    let ingest = project.run(&["ingest", "--file-path", "customers.csv"]);
    assert_eq!(ingest.code, 3, "{ingest:?}");
    assert!(
        ingest.json()["reason"]
            .as_str()
            .unwrap()
            .contains("acquisition folder"),
        "{ingest:?}"
    );
}

/// Rows of a Parquet file, through DataFusion, each value as text.
fn parquet_rows(path: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_parquet("t", path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        as_text(&batches, "")
    })
}
