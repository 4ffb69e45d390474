//! `events replay` and `events listen` against the local S3 server (moto, which
//! also serves SQS and delivers bucket notifications to it): each object
//! ingested, validated and scored once, replays that change nothing, a missing
//! object, unreadable event lines, and the queue path end to end.

use std::process::Command;

use crate::support::*;

/// A dataset fed in the monitoring layout (hourly windows) beside the sample's
/// citizens, whose files carry their period in their names.
fn config(landed: &str) -> String {
    let orders = r#"
  orders:
    agency_slug: tenant-a
    file_pattern: '^orders_(?P<period>\d{4}-\d{2}-\d{2}T\d{2})\.csv$'
    period: hour
    primary_key: [order_id]
    min_quality_score: 50
    columns:
      order_id: { type: int, required: true, unique: true }
      amount:   { type: float, min: 0 }
"#;
    let sample = sample_config()
        .replace("landed_dir: data/landed", &format!("landed_dir: {landed}"))
        .replace("stage_dir: data/stage", "stage_dir: stage");
    sample.replacen("datasets:\n", &format!("datasets:{orders}"), 1)
}

/// Runs a Python snippet with boto3 against the local server (argv[1] is the
/// endpoint); its stdout.
fn boto(script: &str, args: &[&str]) -> String {
    let prelude = "import sys, json, boto3\n\
        kw = dict(endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                  aws_access_key_id='test', aws_secret_access_key='test')\n\
        s3 = boto3.client('s3', **kw); sqs = boto3.client('sqs', **kw)\n";
    let out = Command::new(s3_python())
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .arg(s3_endpoint())
        .args(args)
        .output()
        .expect("python3 with boto3");
    assert!(
        out.status.success(),
        "boto3 script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().query_one(sql, &[]).unwrap().get(0)
}

/// Row counts of every table events write, to compare two replays.
fn footprint(db: &TestDb) -> Vec<i64> {
    [
        "meta.ingestion_log",
        "meta.validation_log",
        "reporting.monitoring_file",
        "reporting.monitoring_file_run",
        "reporting.monitoring_file_data_quality",
        "reporting.monitoring_file_data_profile",
    ]
    .iter()
    .map(|t| count(db, &format!("SELECT count(*) FROM {t}")))
    .collect()
}

fn objects_by_key(out: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = out["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_owned(),
                o["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn replay_scores_each_object_once_and_a_second_replay_changes_nothing() {
    let endpoint = s3_endpoint();
    let prefix = format!("events_replay_{}", std::process::id());
    let project = Project::new(
        "events_replay",
        &config(&format!("s3://pipeline-test/{prefix}")),
    );
    let window =
        |hour: &str| format!("{prefix}/agency/tenant-a/files/orders/2026-01-04/{hour}/data.csv");
    s3_put(
        &window("12"),
        b"order_id,amount\n1,10\n2,20\n3,30\n4,40\n".to_vec(),
    );
    // Hour 13: one amount below its minimum, one duplicated key.
    s3_put(
        &window("13"),
        b"order_id,amount\n1,10\n2,-5\n3,30\n3,31\n".to_vec(),
    );
    s3_put(
        &format!("{prefix}/citizens_2025-06.csv"),
        std::fs::read(repo().join("data/landed/citizens_2025-06.csv")).unwrap(),
    );
    let missing = format!("{prefix}/agency/tenant-a/files/orders/2026-01-04/14/data.csv");
    // S3 notification records URL-encode keys (`/` as %2F, space as +).
    let encoded = |key: &str| key.replace('/', "%2F");
    let notification = serde_json::json!({"Records": [
        {"eventName": "ObjectCreated:Put", "eventTime": "2026-01-04T12:05:00Z",
         "s3": {"bucket": {"name": "pipeline-test"}, "object": {"key": encoded(&window("12")), "size": 38}}},
        {"eventName": "ObjectCreated:Put", "eventTime": "2026-01-04T13:05:00Z",
         "s3": {"bucket": {"name": "pipeline-test"}, "object": {"key": encoded(&window("13"))}}},
        {"eventName": "ObjectRemoved:Delete",
         "s3": {"bucket": {"name": "pipeline-test"}, "object": {"key": "whatever.csv"}}},
    ]});
    let seed = |bucket: &str, key: &str| {
        serde_json::json!({"bucket": bucket, "key": key,
                           "last_modified": "2026-01-04T12:34:56Z", "size": 1})
    };
    let lines = [
        notification.to_string(),
        seed("pipeline-test", &format!("{prefix}/citizens_2025-06.csv")).to_string(),
        seed("pipeline-test", &missing).to_string(),
        r#"{"Records": [ {"eventName": "#.to_owned(),
        seed("another-bucket", "x/citizens_2025-06.csv").to_string(),
        // Keys no object can have: final (rejected), never a retried failure.
        seed("pipeline-test", &format!("{prefix}/bad\u{0}name.csv")).to_string(),
        seed(
            "pipeline-test",
            &format!("{prefix}/{}", "k".repeat(2 << 20)),
        )
        .to_string(),
    ];
    let events = project.path("events.jsonl");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let replay = || -> Run {
        command(
            project.dir.path(),
            Some(&project.db.url),
            &["--json", "events", "replay", events.to_str().unwrap()],
        )
        .envs(s3_env(&endpoint))
        .output()
        .unwrap()
        .into()
    };

    let first = replay();
    // The missing object is a failure worth a retry: exit 1, the others still done.
    assert_eq!(first.code, 1, "{first:?}");
    let out = first.json();
    assert_output_schema(&out);
    let mut expected: Vec<(String, String)> = vec![
        (window("12"), "processed".into()),
        (window("13"), "processed".into()),
        (format!("{prefix}/citizens_2025-06.csv"), "processed".into()),
        (missing.clone(), "failed".into()),
        ("x/citizens_2025-06.csv".into(), "skipped".into()),
        (format!("{prefix}/bad\\u{{0}}name.csv"), "rejected".into()),
        (
            format!("{prefix}/{}", "k".repeat(2 << 20))[..1024].to_owned() + "…",
            "rejected".into(),
        ),
    ];
    expected.sort();
    assert_eq!(objects_by_key(&out), expected, "{out:#}");
    assert_eq!(
        out["ignored"], 1,
        "the deletion is not an object to process"
    );
    let problems = out["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{out:#}");
    assert_eq!(problems[0]["line"], 4);
    assert!(first.stderr.contains("does not exist"), "{}", first.stderr);

    // The monitoring layout named the dataset, the period (the window's hour)
    // and the run (run_date, run_hour); the citizens file's run is its period.
    let runs: Vec<(String, String, String, i32, i32)> = project
        .db
        .client()
        .query(
            "SELECT f.agency_slug, f.file_name, r.run_date::text, r.run_hour, q.score
               FROM reporting.monitoring_file f
               JOIN reporting.monitoring_file_run r ON r.monitoring_file_id = f.id
               JOIN reporting.monitoring_file_data_quality q ON q.monitoring_file_run_id = r.id
              ORDER BY 2, 3, 4",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(&runs[0].1, "citizens");
    assert_eq!((runs[0].2.as_str(), runs[0].3), ("2025-06-01", 0));
    assert_eq!(
        (
            runs[1].0.as_str(),
            runs[1].1.as_str(),
            runs[1].2.as_str(),
            runs[1].3,
            runs[1].4
        ),
        ("tenant-a", "orders", "2026-01-04", 12, 100)
    );
    assert_eq!((runs[2].2.as_str(), runs[2].3), ("2026-01-04", 13));
    let hour13 = runs[2].4;
    assert!(hour13 < 100, "{runs:?}");
    let latest: i32 = project
        .db
        .client()
        .query_one(
            "SELECT latest_data_quality_score FROM reporting.monitoring_file WHERE file_name = 'orders'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(latest, hour13, "the file's latest score is its last run's");
    let periods: Vec<String> = project
        .db
        .client()
        .query(
            "SELECT period FROM meta.ingestion_log WHERE dataset = 'orders' ORDER BY period",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(periods, ["2026-01-04T12", "2026-01-04T13"]);

    // The same events again: nothing validated twice, no row added anywhere.
    let before = footprint(&project.db);
    let second = replay();
    assert_eq!(second.code, 1, "{second:?}");
    let out = second.json();
    assert_eq!(
        (out["processed"].as_u64(), out["unchanged"].as_u64()),
        (Some(0), Some(3)),
        "{out:#}"
    );
    assert_eq!(footprint(&project.db), before);

    // The late object arrives: its event now succeeds.
    s3_put(&missing, b"order_id,amount\n9,90\n".to_vec());
    let third = replay();
    let out = third.json();
    assert_eq!(out["processed"], 1, "{out:#}");
    assert_eq!(out["failed"], 0, "{out:#}");
    assert_eq!(third.code, 2, "the unreadable line still makes it exit 2");

    // A rule of orders relaxed: run would validate the orders files again,
    // and so does a replay (the verdicts no longer stand); citizens' stands.
    let config_path = project.path("datasets_config.yml");
    let relaxed = std::fs::read_to_string(&config_path).unwrap().replace(
        "amount:   { type: float, min: 0 }",
        "amount:   { type: float, min: -10 }",
    );
    std::fs::write(&config_path, relaxed).unwrap();
    let fourth = replay().json();
    let outcomes = objects_by_key(&fourth);
    let of = |key: &str| {
        outcomes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, o)| o.as_str())
    };
    assert_eq!(of(&window("13")), Some("processed"), "{fourth:#}");
    assert_eq!(
        of(&format!("{prefix}/citizens_2025-06.csv")),
        Some("unchanged"),
        "{fourth:#}"
    );
}

#[test]
fn listen_takes_bucket_notifications_from_sqs_and_keeps_what_failed() {
    let endpoint = s3_endpoint();
    let bucket = format!("events-listen-{}", std::process::id());
    let queue = boto(
        "b, name = sys.argv[2], sys.argv[3]\n\
         s3.create_bucket(Bucket=b)\n\
         q = sqs.create_queue(QueueName=name)['QueueUrl']\n\
         arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration={'QueueConfigurations': [\n\
             {'QueueArn': arn, 'Events': ['s3:ObjectCreated:*']}]})\n\
         print(q)\n",
        &[&bucket, &bucket],
    );
    let queue = queue.trim().to_owned();
    let project = Project::new("events_listen", &config(&format!("s3://{bucket}/in")));
    let put = "s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.argv[4].encode())\n";
    boto(
        put,
        &[
            &bucket,
            "in/agency/tenant-a/files/orders/2026-02-01/08/data.csv",
            "order_id,amount\n1,5\n2,6\n",
        ],
    );
    boto(put, &[&bucket, "elsewhere/notes.txt", "not a landed file"]);
    // A message naming an object that does not exist: it must stay on the queue.
    let ghost = serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": "in/agency/tenant-a/files/orders/2026-02-01/09/data.csv"}}}]});
    boto(
        "sqs.send_message(QueueUrl=sys.argv[2], MessageBody=sys.argv[3])\n",
        &[&queue, &ghost.to_string()],
    );

    let run: Run = command(
        project.dir.path(),
        Some(&project.db.url),
        &[
            "--json",
            "events",
            "listen",
            "--sqs-queue-url",
            &queue,
            "--wait-seconds",
            "1",
            "--visibility-timeout",
            "60",
            "--until-empty",
        ],
    )
    .envs(s3_env(&endpoint))
    .output()
    .unwrap()
    .into();
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    assert_output_schema(&out);
    assert_eq!(out["processed"], 1, "{out:#}");
    assert_eq!(out["skipped"], 1, "{out:#}");
    assert_eq!(out["failed"], 1, "{out:#}");
    // S3's test event, two notifications and the ghost.
    assert_eq!(out["messages"]["received"], 4, "{out:#}");
    assert_eq!(out["messages"]["deleted"], 3, "{out:#}");
    assert_eq!(out["messages"]["kept"], 1, "{out:#}");
    assert_eq!(
        count(
            &project.db,
            "SELECT count(*) FROM reporting.monitoring_file_run r JOIN reporting.monitoring_file f ON f.id = r.monitoring_file_id
              WHERE f.file_name = 'orders' AND r.run_date = '2026-02-01' AND r.run_hour = 8"
        ),
        1
    );
    // What was deleted is gone; the ghost waits, hidden, for its retry.
    let left = boto(
        "a = sqs.get_queue_attributes(QueueUrl=sys.argv[2], AttributeNames=['All'])['Attributes']\n\
         print(a['ApproximateNumberOfMessages'], a['ApproximateNumberOfMessagesNotVisible'])\n",
        &[&queue],
    );
    assert_eq!(left.trim(), "0 1");
}
