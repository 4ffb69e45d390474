//! Landed files and the cleaned/quarantine Delta tables both on the local S3
//! server: validate → load-stage → transform through `run`, the unchanged re-run,
//! a corrected delivery, and the quarantine read back from S3.

use crate::support::*;

fn stage_count(db: &TestDb, period: &str) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM stage.citizens WHERE _data_period = $1",
            &[&period],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_period_runs_end_to_end_with_landed_and_stage_on_s3() {
    let endpoint = s3_endpoint();
    let prefix = format!("s3stage_{}", std::process::id());
    let config = sample_config()
        .replace(
            "landed_dir: data/landed",
            &format!("landed_dir: s3://pipeline-test/{prefix}/landed"),
        )
        .replace(
            "stage_dir: data/stage",
            &format!("stage_dir: s3://pipeline-test/{prefix}/stage"),
        );
    let dir = project(&config);
    copy_dir(&repo().join("sql"), &dir.path().join("sql"));
    for name in ["citizens_2025-06.csv", "regions.csv"] {
        let body = std::fs::read(repo().join("data/landed").join(name)).unwrap();
        s3_put(&format!("{prefix}/landed/{name}"), body);
    }
    let db = TestDb::new("s3_stage");
    let pipeline_s3 = |args: &[&str]| -> Run {
        command(dir.path(), Some(&db.url), args)
            .envs(s3_env(&endpoint))
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(pipeline_s3(&["migrate"]).code, 0);

    let run = pipeline_s3(&["--json", "run", "--period", "2025-06"]);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let validated = out["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dataset"] == "citizens" && s["stage"] == "validate")
        .unwrap()
        .clone();
    let valid = validated["rows"].as_i64().unwrap() - validated["rows_rejected"].as_i64().unwrap();
    assert!(valid > 0, "{out}");
    assert_eq!(
        stage_count(&db, "2025-06"),
        valid,
        "stage holds the cleaned rows read from S3"
    );
    let mart: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM mart.citizens_by_region WHERE _data_period = '2025-06'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(mart > 0, "transform ran on what was loaded");

    // Nothing changed: the lineage (file, verdict, Delta version on S3) says so.
    assert_eq!(pipeline_s3(&["run", "--period", "2025-06"]).code, 99);

    // The quarantine table is read back from S3 at the verdict's version.
    let q = pipeline_s3(&[
        "--json",
        "quarantine",
        "--dataset",
        "citizens",
        "--period",
        "2025-06",
    ]);
    assert_eq!(q.code, 0, "{q:?}");
    assert_eq!(
        q.json()["rows_rejected"].as_i64(),
        validated["rows_rejected"].as_i64(),
        "{q:?}"
    );

    // A corrected delivery with one row fewer replaces the period on S3 and in stage.
    let original =
        std::fs::read_to_string(repo().join("data/landed/citizens_2025-06.csv")).unwrap();
    let mut lines: Vec<&str> = original.lines().collect();
    lines.pop();
    s3_put(
        &format!("{prefix}/landed/citizens_2025-06.csv"),
        (lines.join("\n") + "\n").into_bytes(),
    );
    let again = pipeline_s3(&["--json", "run", "--period", "2025-06"]);
    assert_eq!(again.code, 0, "{again:?}");
    let after = stage_count(&db, "2025-06");
    assert!(after == valid - 1 || after == valid, "{after} vs {valid}");
    let versions: Vec<(Option<i64>,)> = db
        .client()
        .query(
            "SELECT cleaned_version FROM meta.validation_log WHERE dataset = 'citizens' AND status IN ('passed', 'failed') ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0),))
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(
        versions[1].0 > versions[0].0,
        "a new Delta version on S3: {versions:?}"
    );

    // Commits are conditional writes: a second writer that lost the race for a
    // version cannot overwrite it (what keeps concurrent commits safe on S3).
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("pipeline-test")
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let first = object_store::path::Path::parse(format!(
        "{prefix}/stage/cleaned/citizens/_delta_log/00000000000000000000.json"
    ))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The corrected delivery replaced the period by our own commit on S3: its
    // files written through the table's store, the old ones removed in the log.
    let replace = object_store::path::Path::parse(format!(
        "{prefix}/stage/cleaned/citizens/_delta_log/00000000000000000001.json"
    ))
    .unwrap();
    let replace = rt.block_on(async { store.get(&replace).await.unwrap().bytes().await.unwrap() });
    let replace = String::from_utf8(replace.to_vec()).unwrap();
    assert!(
        replace.contains(r#""pipeline.replacedPeriod":"2025-06""#),
        "{replace}"
    );
    assert!(replace.contains(r#""remove":"#), "{replace}");
    let lost = rt.block_on(store.put_opts(
        &first,
        b"{}".to_vec().into(),
        PutOptions::from(PutMode::Create),
    ));
    assert!(
        matches!(lost, Err(object_store::Error::AlreadyExists { .. })),
        "{lost:?}"
    );
}

#[test]
fn parquet_from_s3_is_read_by_ranges_with_every_row_counted() {
    let endpoint = s3_endpoint();
    let prefix = format!("s3parquet_{}", std::process::id());
    let config = format!(
        r#"version: 1
landed_dir: s3://pipeline-test/{prefix}
stage_dir: stage
datasets:
  items:
    file_pattern: '^items_(?P<period>\d{{4}}-\d{{2}})\.parquet$'
    period: month
    min_quality_score: 0
    columns:
      id:    {{ type: int, required: true }}
      label: {{ type: string }}
"#
    );
    let project = Project::new("s3_parquet", &config);
    let ids: Vec<String> = (1..=20_000)
        .map(|i| {
            if i % 1000 == 0 {
                "x".to_owned()
            } else {
                i.to_string()
            }
        })
        .collect();
    let rows: Vec<Vec<&str>> = ids.iter().map(|i| vec![i.as_str(), "label"]).collect();
    let local = project.path("items.parquet");
    crate::files::write_parquet(&local, &["id", "label"], &rows);
    s3_put(
        &format!("{prefix}/items_2025-01.parquet"),
        std::fs::read(&local).unwrap(),
    );
    let run = |args: &[&str]| -> Run {
        let mut all = vec!["--json"];
        all.extend(args);
        command(project.dir.path(), Some(&project.db.url), &all)
            .envs(s3_env(&endpoint))
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(run(&["ingest", "--all"]).code, 0);
    let v = run(&["validate", "--dataset", "items", "--period", "2025-01"]);
    assert_eq!(v.code, 0, "{v:?}");
    let out = v.json();
    assert_eq!(
        (out["rows_in"].as_u64(), out["rows_rejected"].as_u64()),
        (Some(20_000), Some(20)),
        "{out}"
    );
    let cleaned = delta_rows(
        &project.path("stage/cleaned/items"),
        "SELECT count(*), sum(id) FROM t",
    );
    let expected: i64 = (1..=20_000i64).filter(|i| i % 1000 != 0).sum();
    assert_eq!(cleaned, [vec!["19980".to_owned(), expected.to_string()]]);
}

/// Three periods of one dataset validated again at the same time with the
/// tables on S3: each commit is a conditional put, the ones that lose the race
/// for a version are checked against the winner (other periods' files only)
/// and retried on the next, and every period ends with its new rows.
#[test]
fn periods_revalidated_at_once_all_commit_on_s3() {
    let endpoint = s3_endpoint();
    let prefix = format!("s3periods_{}", std::process::id());
    let config = format!(
        r#"version: 1
landed_dir: landed
stage_dir: s3://pipeline-test/{prefix}/stage
datasets:
  sales:
    file_pattern: '^sales_(?P<period>\d{{4}}-\d{{2}})\.csv$'
    period: month
    primary_key: [id]
    columns:
      id:     {{ type: int, required: true }}
      amount: {{ type: float, min: 0 }}
"#
    );
    let project = Project::new("s3_periods", &config);
    let pipeline = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend(args);
        let mut cmd = command(project.dir.path(), Some(&project.db.url), &all);
        cmd.envs(s3_env(&endpoint));
        cmd
    };
    let run = |args: &[&str]| -> Run { pipeline(args).output().unwrap().into() };
    let periods = ["2025-04", "2025-05", "2025-06"];
    let deliver = |period: &str, amount: &str| {
        let body: String = std::iter::once("id,amount\n".to_owned())
            .chain((1..=20_000).map(|i| format!("{i},{amount}\n")))
            .collect();
        let path = project.path(&format!("landed/sales_{period}.csv"));
        std::fs::write(&path, body).unwrap();
        let ingest = run(&["ingest", "--file-path", path.to_str().unwrap()]);
        assert_eq!(ingest.code, 0, "{ingest:?}");
    };
    for p in periods {
        deliver(p, "1");
        let v = run(&["validate", "--dataset", "sales", "--period", p]);
        assert_eq!(v.code, 0, "{v:?}");
    }
    for p in periods {
        deliver(p, "2");
    }
    let children: Vec<_> = periods
        .iter()
        .map(|p| {
            pipeline(&["validate", "--dataset", "sales", "--period", p])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut versions = Vec::new();
    for child in children {
        let json: serde_json::Value = serde_json::from_slice(&wait_ok(child)).unwrap();
        versions.push(json["cleaned_version"].as_i64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, [3, 4, 5], "one version each, none lost");
    for p in periods {
        let load = run(&["load-stage", "--dataset", "sales", "--period", p]);
        assert_eq!(load.code, 0, "{load:?}");
        let row = project
            .db
            .client()
            .query_one(
                "SELECT count(*), min(amount), max(amount) FROM stage.sales WHERE _data_period = $1",
                &[&p],
            )
            .unwrap();
        let (n, lo, hi): (i64, f64, f64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((n, lo, hi), (20_000, 2.0, 2.0), "{p}");
    }
}
