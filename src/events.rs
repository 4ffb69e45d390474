//! `pipeline events`: S3 object-created events, replayed from a file or received
//! from an SQS queue, each object ingested, validated and scored.
//!
//! An event names a bucket and a key. The key is looked up in the landed dir
//! like `ingest --file-path` would: a file at its root or in a `YYYY-MM-DD/`
//! folder carries dataset and period in its name; a file in a monitoring window
//! folder (`agency/<slug>/files/<name>/<YYYY-MM-DD>/<HH>/…`) gets them from the
//! folder. Replaying the same events again changes nothing: a file version seen
//! before keeps its id and, once validated, is not validated again; the
//! monitoring run is upserted per (file, run_date, run_hour) under a lock.

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::config::Config;
use crate::exit::Exit;
use crate::ingest;
use crate::landed::{Landed, LandedError};
use crate::sqs::{Queue, SqsError};
use crate::validate;

/// Why the events command could not do its work (an object that fails is an
/// outcome, not an error).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("cannot read the events file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Landed(#[from] LandedError),
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error("{step}")]
    Db {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The cleaned Delta table cannot be read, so whether the file needs
    /// validating cannot be decided.
    #[error("{0}")]
    Broken(String),
}

impl EventsError {
    pub fn exit(&self) -> Exit {
        match self {
            EventsError::Read { .. }
            | EventsError::Usage(_)
            | EventsError::Sqs(SqsError::BadUrl(_)) => Exit::Usage,
            EventsError::Landed(e) => e.exit(),
            _ => Exit::Failure,
        }
    }
}

/// One object-created event: the object it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// The key as stored (S3 notifications URL-encode it; this is decoded).
    pub key: String,
}

/// What reading events found: objects to process, and problems (a line that
/// is not JSON, a record without bucket or key). Other events (deletions,
/// S3's test event) are counted and left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub objects: Vec<ObjectEvent>,
    pub ignored: usize,
    pub problems: Vec<Problem>,
}

/// An event that could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line in the events file (0 for an SQS message).
    pub line: usize,
    pub reason: String,
}

/// Reads a document of events: one JSON value (an S3 notification
/// `{"Records": [...]}`, a `{bucket, key, …}` object as the monitoring seed
/// sends, or an array of either), or JSON Lines of them.
pub fn parse(text: &str) -> Parsed {
    // A file saved by an editor that writes a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = read_all(text);
    // A folder marker (`in/`) is no file; an object named twice in one batch
    // (S3 may deliver an event more than once) is processed once.
    let before = parsed.objects.len();
    let mut seen = std::collections::HashSet::new();
    parsed
        .objects
        .retain(|o| !o.key.ends_with('/') && seen.insert((o.bucket.clone(), o.key.clone())));
    parsed.ignored += before - parsed.objects.len();
    parsed
}

fn read_all(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    match serde_json::from_str::<Value>(text) {
        Ok(value) => read_value(&value, 1, &mut parsed),
        Err(_) => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(value) => read_value(&value, i + 1, &mut parsed),
                    Err(e) => parsed.problems.push(Problem {
                        line: i + 1,
                        reason: format!("not JSON: {e}"),
                    }),
                }
            }
        }
    }
    parsed
}

fn read_value(value: &Value, line: usize, parsed: &mut Parsed) {
    let problem = |reason: String| Problem { line, reason };
    match value {
        Value::Array(items) => items.iter().for_each(|v| read_value(v, line, parsed)),
        Value::Object(map) if map.contains_key("Records") => match &map["Records"] {
            Value::Array(records) => {
                for record in records {
                    match read_record(record) {
                        Ok(Some(event)) => parsed.objects.push(event),
                        Ok(None) => parsed.ignored += 1,
                        Err(reason) => parsed.problems.push(problem(reason)),
                    }
                }
            }
            _ => parsed
                .problems
                .push(problem("`Records` is not a list".into())),
        },
        // An SNS envelope around a notification.
        Value::Object(map) if map.get("Type").and_then(Value::as_str) == Some("Notification") => {
            match map
                .get("Message")
                .and_then(Value::as_str)
                .map(serde_json::from_str::<Value>)
            {
                Some(Ok(inner)) => read_value(&inner, line, parsed),
                _ => parsed.problems.push(problem(
                    "an SNS notification whose Message is not JSON".into(),
                )),
            }
        }
        // S3 sends `s3:TestEvent` when a notification is configured.
        Value::Object(map) if map.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") => {
            parsed.ignored += 1
        }
        Value::Object(map) if map.contains_key("bucket") || map.contains_key("key") => {
            let text = |k: &str| map.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
            match (text("bucket"), text("key")) {
                (Some(bucket), Some(key)) => parsed.objects.push(ObjectEvent {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }),
                _ => parsed.problems.push(problem(
                    "an event needs a non-empty `bucket` and `key`".into(),
                )),
            }
        }
        _ => parsed.problems.push(problem(
            "not an S3 event (expected `Records[].s3` or `{bucket, key}`)".into(),
        )),
    }
}

/// One S3 notification record: Some(object) for an object-created event,
/// None for any other event.
fn read_record(record: &Value) -> Result<Option<ObjectEvent>, String> {
    let name = record["eventName"].as_str().unwrap_or_default();
    if !name.starts_with("ObjectCreated:") {
        return Ok(None);
    }
    let bucket = record["s3"]["bucket"]["name"].as_str();
    let key = record["s3"]["object"]["key"].as_str();
    match (bucket, key) {
        (Some(bucket), Some(key)) if !bucket.is_empty() && !key.is_empty() => {
            let key =
                decode_key(key).ok_or_else(|| format!("key {key:?} is not URL-encoded UTF-8"))?;
            Ok(Some(ObjectEvent {
                bucket: bucket.to_owned(),
                key,
            }))
        }
        _ => Err(format!(
            "a {name} record without s3.bucket.name or s3.object.key"
        )),
    }
}

/// S3 notifications encode keys as form values: `+` is a space, `%XX` a byte.
/// None for a broken escape or bytes that are not UTF-8.
fn decode_key(key: &str) -> Option<String> {
    let spaced = key.replace('+', " ");
    // percent_decode passes a broken escape through as text; S3 never sends one.
    let broken = spaced.match_indices('%').any(|(i, _)| {
        (spaced.as_bytes().get(i + 1..i + 3)).is_none_or(|h| !h.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).ok()
}

/// S3's longest key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// Why no landed file can have this key: longer than S3 allows, or holding a
/// control character (a NUL, which PostgreSQL text cannot hold, among them).
fn unusable_key(key: &str) -> Option<String> {
    if key.len() > MAX_KEY_BYTES {
        Some(format!(
            "the key is {} bytes long; S3 keys are at most {MAX_KEY_BYTES}",
            key.len()
        ))
    } else if key.chars().any(char::is_control) {
        Some("the key holds a control character (such as NUL)".into())
    } else {
        None
    }
}

/// A key as reports show it: at most [`MAX_KEY_BYTES`] bytes, control
/// characters escaped.
fn shown_key(key: &str) -> String {
    let mut end = key.len().min(MAX_KEY_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < key.len() { "…" } else { "" };
    format!("{}{cut}", key[..end].escape_default())
}

/// How one object ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ingested and validated now.
    Processed,
    /// This version was validated before; nothing done.
    Unchanged,
    /// Ingest refused it (name, period, header…): final, a retry will not help.
    Rejected,
    /// Not a landed file (another bucket, outside the prefix or the layouts).
    Skipped,
    /// Could not be processed (missing object, database, S3): worth a retry.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected => "rejected",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// One object's result.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub bucket: String,
    pub key: String,
    pub outcome: Outcome,
    pub file_id: Option<i64>,
    pub dataset: Option<String>,
    pub period: Option<String>,
    pub score: Option<i32>,
    pub passed: Option<bool>,
    pub reason: Option<String>,
}

impl ObjectReport {
    fn new(event: &ObjectEvent, outcome: Outcome, reason: Option<String>) -> ObjectReport {
        ObjectReport {
            bucket: event.bucket.clone(),
            key: event.key.clone(),
            outcome,
            file_id: None,
            dataset: None,
            period: None,
            score: None,
            passed: None,
            reason,
        }
    }
}

/// What `events replay` or `events listen` did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub processed: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Events that name no created object (deletions, S3's test event).
    pub ignored: usize,
    pub objects: Vec<ObjectReport>,
    pub problems: Vec<Problem>,
    /// `listen` only: messages received, deleted after success, left for a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Messages>,
}

#[derive(Debug, Default, Serialize)]
pub struct Messages {
    pub received: usize,
    pub deleted: usize,
    pub kept: usize,
}

impl Report {
    fn add(&mut self, object: ObjectReport) {
        match object.outcome {
            Outcome::Processed => self.processed += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Failed => self.failed += 1,
        }
        self.objects.push(object);
    }

    /// 1 when an object failed, else 2 when an event was unreadable, else 3
    /// when an object was rejected or scored below its threshold, else 0.
    pub fn exit(&self) -> Exit {
        let below = self.objects.iter().any(|o| o.passed == Some(false));
        if self.failed > 0 {
            Exit::Failure
        } else if !self.problems.is_empty() {
            Exit::Usage
        } else if self.rejected > 0 || below {
            Exit::Rejected
        } else {
            Exit::Ok
        }
    }
}

impl Report {
    /// Why [`Report::exit`] is not 0, in one sentence.
    pub fn failure(&self) -> String {
        let below = self
            .objects
            .iter()
            .filter(|o| o.passed == Some(false))
            .count();
        if self.failed > 0 {
            format!(
                "{} object(s) could not be processed; they are worth a retry",
                self.failed
            )
        } else if !self.problems.is_empty() {
            format!(
                "{} event(s) could not be read; see `problems`",
                self.problems.len()
            )
        } else {
            format!(
                "{} file(s) rejected by ingest, {below} below their quality threshold",
                self.rejected
            )
        }
    }
}

/// `events replay FILE`: every object the file's events name, in order.
#[tracing::instrument(name = "events", skip_all, fields(stage = "events"))]
pub async fn replay(
    config: &Config,
    client: &mut Client,
    path: &str,
) -> Result<Report, EventsError> {
    let text = std::fs::read_to_string(path).map_err(|source| EventsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let landed = s3_landed(config)?;
    let parsed = parse(&text);
    for p in &parsed.problems {
        tracing::error!(event = "event_unreadable", file = %path, line = p.line, reason = %p.reason, "unreadable event");
    }
    let mut report = Report {
        ignored: parsed.ignored,
        problems: parsed.problems,
        ..Report::default()
    };
    for event in &parsed.objects {
        report.add(process(config, &landed, client, event).await);
    }
    finished(&report);
    Ok(report)
}

/// `events listen`: receive from the queue until stopped (or, with
/// `until_empty`, until a receive finds nothing); a message is deleted once
/// every object it names ended for good, else left to come back.
#[tracing::instrument(name = "events", skip_all, fields(stage = "events"))]
pub async fn listen(
    config: &Config,
    client: &mut Client,
    queue: &Queue,
    until_empty: bool,
) -> Result<Report, EventsError> {
    let landed = s3_landed(config)?;
    let mut report = Report {
        messages: Some(Messages::default()),
        ..Report::default()
    };
    tracing::info!(event = "listening", queue = %queue.url(), "waiting for S3 events");
    loop {
        let messages = queue.receive().await?;
        if messages.is_empty() && until_empty {
            break;
        }
        for message in messages {
            let parsed = parse(&message.body);
            report.ignored += parsed.ignored;
            let mut keep = false;
            for p in parsed.problems {
                tracing::error!(event = "event_unreadable", message_id = %message.id, reason = %p.reason, "unreadable event; the message stays on the queue (a redrive policy moves it aside)");
                report.problems.push(Problem { line: 0, ..p });
                keep = true;
            }
            for event in &parsed.objects {
                let object = process(config, &landed, client, event).await;
                keep |= object.outcome == Outcome::Failed;
                report.add(object);
            }
            let counts = report.messages.as_mut().expect("listen counts messages");
            counts.received += 1;
            if keep {
                counts.kept += 1;
            } else {
                queue.delete(&message.receipt).await?;
                counts.deleted += 1;
            }
        }
    }
    finished(&report);
    Ok(report)
}

fn finished(report: &Report) {
    tracing::info!(
        event = "events_finished",
        processed = report.processed,
        unchanged = report.unchanged,
        rejected = report.rejected,
        skipped = report.skipped,
        failed = report.failed,
        unreadable = report.problems.len(),
        "events finished"
    );
}

fn s3_landed(config: &Config) -> Result<Landed, EventsError> {
    let dir = config.resolve(&config.landed_dir);
    if !dir.starts_with("s3://") {
        return Err(EventsError::Usage(format!(
            "events name S3 objects, but landed_dir is the local folder {dir}; set landed_dir to s3://bucket/prefix"
        )));
    }
    Ok(Landed::open(&dir)?)
}

/// Ingest, then (unless this version was validated before) validate one object.
async fn process(
    config: &Config,
    landed: &Landed,
    client: &mut Client,
    event: &ObjectEvent,
) -> ObjectReport {
    let report = process_inner(config, landed, client, event).await;
    let reason = report.reason.as_deref();
    if report.outcome == Outcome::Failed {
        tracing::error!(event = "event_object", bucket = %report.bucket, key = %report.key, outcome = "failed", reason, "object failed; a retry may succeed");
    } else {
        tracing::info!(event = "event_object", bucket = %report.bucket, key = %report.key, outcome = report.outcome.as_str(), file_id = report.file_id, score = report.score, reason, "object handled");
    }
    report
}

async fn process_inner(
    config: &Config,
    landed: &Landed,
    client: &mut Client,
    event: &ObjectEvent,
) -> ObjectReport {
    let failed = |reason: String| ObjectReport::new(event, Outcome::Failed, Some(reason));
    // A key no landed file can have is final: a retry would fail alike.
    if let Some(why) = unusable_key(&event.key) {
        let mut report = ObjectReport::new(event, Outcome::Rejected, Some(why));
        report.key = shown_key(&event.key);
        return report;
    }
    let rel = match landed.key_in(&event.bucket, &event.key) {
        Ok(rel) => rel,
        Err(reason) => return ObjectReport::new(event, Outcome::Skipped, Some(reason)),
    };
    let entry = match landed.resolve(&rel, None).await {
        Ok(entry) => entry,
        Err(e @ LandedError::Outside { .. }) => {
            return ObjectReport::new(event, Outcome::Skipped, Some(e.to_string()));
        }
        Err(e) => return failed(crate::exit::report(&e)),
    };
    let file = match ingest::ingest_one(config, landed, client, entry).await {
        Ok(file) => file,
        Err(e) => return failed(crate::exit::report(&e)),
    };
    let mut report = ObjectReport {
        file_id: Some(file.file_id),
        dataset: file.dataset.clone(),
        period: file.period.clone(),
        ..ObjectReport::new(event, Outcome::Rejected, file.reason.clone())
    };
    if !file.accepted() {
        return report;
    }
    match validated(config, client, &file).await {
        Ok(Some((score, passed))) => {
            report.outcome = Outcome::Unchanged;
            (report.score, report.passed) = (score, passed);
            return report;
        }
        Ok(None) => {}
        Err(e) => return failed(crate::exit::report(&e)),
    }
    match validate::run(config, client, &validate::FileRef::Id(file.file_id)).await {
        Ok(v) => {
            report.outcome = Outcome::Processed;
            (report.score, report.passed) = (Some(v.score), Some(v.passed));
            report.reason = v.error;
        }
        Err(e) if e.exit() == Exit::Failure => {
            report.outcome = Outcome::Failed;
            report.reason = Some(crate::exit::report(&e));
        }
        // A file that cannot be validated as it is (changed since ingest,
        // dataset gone) will not be on a retry either.
        Err(e) => report.reason = Some(crate::exit::report(&e)),
    }
    report
}

/// The verdict in force for an ingested version, when `run` would not
/// validate it again ([`crate::decision::decide`], the one decision `run`
/// follows: a rules change or lost kept rows validate again); Err with the
/// reason when the cleaned table cannot be read.
async fn validated(
    config: &Config,
    client: &Client,
    file: &ingest::FileOutcome,
) -> Result<Option<(Option<i32>, Option<bool>)>, EventsError> {
    use crate::decision::{Action, Subject};
    let dataset = file.dataset.as_deref().unwrap_or_default();
    let Some(ds) = config.datasets.get(dataset) else {
        return Ok(None);
    };
    let subject = Subject {
        config,
        name: dataset,
        ds,
        period: ds
            .period
            .has_period()
            .then_some(file.period.as_deref())
            .flatten(),
        head: None,
        counted: None,
    };
    let d = crate::decision::decide(client, subject, None)
        .await
        .map_err(|source| EventsError::Db {
            step: "read the ledger",
            source,
        })?;
    let verdict = d.verdict.filter(|v| v.ingestion_id == file.file_id);
    Ok(match d.action {
        Action::Load | Action::Rejected | Action::Nothing => {
            verdict.map(|v| (v.score, Some(v.passed)))
        }
        Action::Broken(why) => return Err(EventsError::Broken(why)),
        Action::Wait | Action::Refused(_) | Action::Ingest | Action::Validate => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(bucket: &str, key: &str) -> ObjectEvent {
        ObjectEvent {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    #[test]
    fn reads_s3_notifications_with_encoded_keys() {
        let text = r#"{"Records": [
            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
              "object": {"key": "agency%2Fa%2Ffiles%2Fx%2F2026-01-04%2F12%2Fdata+file%C3%A9.csv", "size": 8}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "gone.csv"}}},
            {"eventName": "ObjectCreated:Copy", "s3": {"bucket": {"name": "b"}}}
        ]}"#;
        let parsed = parse(text);
        assert_eq!(
            parsed.objects,
            vec![obj("b", "agency/a/files/x/2026-01-04/12/data fileé.csv")]
        );
        assert_eq!(parsed.ignored, 1);
        assert_eq!(parsed.problems.len(), 1);
        assert!(parsed.problems[0].reason.contains("ObjectCreated:Copy"));
    }

    #[test]
    fn reads_the_seed_shape_arrays_sns_and_json_lines() {
        let seed = r#"{"bucket": "b", "key": "agency/a/files/x/2026-01-04/12/data.csv", "last_modified": "2026-01-04T12:34:56Z", "size": 1}"#;
        assert_eq!(
            parse(seed).objects,
            vec![obj("b", "agency/a/files/x/2026-01-04/12/data.csv")]
        );
        // The same object twice in one batch is processed once.
        let array = format!("[{seed}, {seed}]");
        assert_eq!(parse(&array).objects.len(), 1);
        let sns = serde_json::json!({"Type": "Notification", "Message": seed}).to_string();
        assert_eq!(parse(&sns).objects.len(), 1);
        let test_event = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}"#;
        let lines = format!("{seed}\n\n{{not json\n{test_event}\n{{\"bucket\": \"b\"}}\n42\n");
        let parsed = parse(&lines);
        assert_eq!(parsed.objects.len(), 1);
        // A byte-order mark before the first line is not a broken line.
        let bom = parse(&format!("\u{feff}{seed}\n"));
        assert_eq!(
            (bom.objects.len(), bom.problems.len()),
            (1, 0),
            "{:?}",
            bom.problems
        );
        assert_eq!(parsed.ignored, 1);
        let at: Vec<usize> = parsed.problems.iter().map(|p| p.line).collect();
        assert_eq!(at, vec![3, 5, 6], "{:?}", parsed.problems);
        assert!(parsed.problems[0].reason.starts_with("not JSON"));
    }

    #[test]
    fn folder_markers_and_repeats_in_a_batch_are_ignored() {
        let one = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"in/a.csv"}}}]}"#;
        let marker = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"in/"}}}]}"#;
        let text = format!("{one}\n{marker}\n{}", format!("{one}\n").repeat(20_000));
        let parsed = parse(&text);
        assert_eq!(parsed.objects, vec![obj("b", "in/a.csv")]);
        assert_eq!(parsed.ignored, 20_001);
        assert!(parsed.problems.is_empty());
    }

    /// Keys no object can have are refused for good (not failed, which a
    /// queue retries forever), and shown short.
    #[test]
    fn keys_no_object_can_have_are_final() {
        assert_eq!(unusable_key("a/b c.csv"), None);
        let nul = decode_key("x%00y.csv").unwrap();
        assert!(unusable_key(&nul).unwrap().contains("control character"));
        let long = "k".repeat(2 << 20);
        assert!(unusable_key(&long).unwrap().contains("2097152 bytes"));
        assert_eq!(shown_key(&long).len(), MAX_KEY_BYTES + "…".len());
        assert_eq!(shown_key(&nul), "x\\u{0}y.csv");
    }

    #[test]
    fn key_decoding_refuses_broken_escapes() {
        assert_eq!(decode_key("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(decode_key("a%2"), None);
        assert_eq!(decode_key("a%zz"), None);
        assert_eq!(decode_key("%FF"), None);
    }

    #[test]
    fn the_worst_outcome_sets_the_exit_code() {
        let event = obj("b", "k");
        let with = |outcome, passed| {
            let mut r = Report::default();
            r.add(ObjectReport {
                passed,
                ..ObjectReport::new(&event, outcome, None)
            });
            r
        };
        assert_eq!(with(Outcome::Processed, Some(true)).exit(), Exit::Ok);
        assert_eq!(with(Outcome::Skipped, None).exit(), Exit::Ok);
        assert_eq!(with(Outcome::Processed, Some(false)).exit(), Exit::Rejected);
        assert_eq!(with(Outcome::Rejected, None).exit(), Exit::Rejected);
        let mut r = with(Outcome::Rejected, None);
        r.problems.push(Problem {
            line: 1,
            reason: "x".into(),
        });
        assert_eq!(r.exit(), Exit::Usage);
        r.add(ObjectReport::new(&event, Outcome::Failed, None));
        assert_eq!(r.exit(), Exit::Failure);
    }
}
