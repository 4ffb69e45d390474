//! `pipeline ingest`: gate landed files by name, period and header, fingerprint
//! them, and log each distinct file version in `meta.ingestion_log`.
//!
//! The landed file is only read: never copied, moved or modified. Re-ingesting the
//! same bytes returns the same id; a new version of a period's file gets a new id
//! and becomes that period's current file.

use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, Dataset, FileFormat};
use crate::exit::Exit;
use crate::header;
use crate::landed::{Entry, Landed, LandedError, LandedFile, WindowKey};
use crate::period::Period;

/// Why ingest could not do its work (rejections of files are not errors).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Landed(#[from] LandedError),
    #[error("cannot record {uri} in meta.ingestion_log")]
    Log {
        uri: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl IngestError {
    pub fn exit(&self) -> Exit {
        match self {
            IngestError::Landed(e) => e.exit(),
            IngestError::Log { .. } => Exit::Failure,
        }
    }
}

/// The verdict on one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    /// The meta.ingestion_log id (`validate --file-id` takes it).
    pub file_id: i64,
    pub dataset: Option<String>,
    pub period: Option<String>,
    pub file_name: String,
    pub source_uri: String,
    pub status: FileStatus,
    /// True when these exact bytes were ingested before (no new row).
    pub unchanged: bool,
    pub reason: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
}

impl FileOutcome {
    pub fn accepted(&self) -> bool {
        self.status == FileStatus::Accepted
    }
}

/// The gate's verdict on a file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Accepted,
    Rejected,
    /// Its name matches no dataset: `--all` reports it without failing (a
    /// refused, hostile name is a rejection). Logged as `rejected`.
    Unmatched,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Accepted => "accepted",
            FileStatus::Rejected => "rejected",
            FileStatus::Unmatched => "unmatched",
        }
    }

    /// As `meta.ingestion_log.status` holds it (`accepted` or `rejected`).
    fn logged_as(self) -> &'static str {
        match self {
            FileStatus::Accepted => "accepted",
            FileStatus::Rejected | FileStatus::Unmatched => "rejected",
        }
    }
}

/// What one `ingest` run did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The acquisition-date folder read, if any.
    pub folder: Option<String>,
    pub accepted: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub unmatched: usize,
    pub files: Vec<FileOutcome>,
}

impl Report {
    /// 0 when every matched file is accepted (files matching no dataset are only
    /// reported by `--all`), 3 when one is rejected.
    pub fn exit(&self, single: bool) -> Exit {
        let rejected = self.files.iter().any(|f| match f.status {
            FileStatus::Accepted => false,
            FileStatus::Rejected => true,
            FileStatus::Unmatched => single,
        });
        if rejected { Exit::Rejected } else { Exit::Ok }
    }
}

/// One landed file, or (None) every file of the landed dir or its newest
/// (or `acq_date`'s) acquisition folder.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub file_path: Option<String>,
    pub acq_date: Option<String>,
}

/// Runs `ingest --file-path` or `ingest --all`.
#[tracing::instrument(name = "ingest", skip_all, fields(stage = "ingest"))]
pub async fn run(config: &Config, client: &Client, args: &Request) -> Result<Report, IngestError> {
    let landed = Landed::open(&config.resolve(&config.landed_dir))?;
    let (folder, entries) = match &args.file_path {
        Some(path) => (
            None,
            vec![landed.resolve(path, args.acq_date.as_deref()).await?],
        ),
        None => {
            let folder = landed.select_folder(args.acq_date.as_deref()).await?;
            if let Some(f) = &folder {
                tracing::info!(event = "acq_folder", folder = %f, "reading acquisition folder");
            }
            let entries = landed.list(folder.as_deref()).await?;
            (folder, entries)
        }
    };
    let mut report = Report {
        folder,
        accepted: 0,
        unchanged: 0,
        rejected: 0,
        unmatched: 0,
        files: Vec::new(),
    };
    for entry in entries {
        let outcome = ingest_one(config, &landed, client, entry).await?;
        match (outcome.status, outcome.unchanged) {
            (FileStatus::Unmatched, _) => report.unmatched += 1,
            (_, true) => report.unchanged += 1,
            (FileStatus::Accepted, false) => report.accepted += 1,
            (FileStatus::Rejected, false) => report.rejected += 1,
        }
        report.files.push(outcome);
    }
    tracing::info!(
        event = "ingest_finished",
        accepted = report.accepted,
        unchanged = report.unchanged,
        rejected = report.rejected,
        unmatched = report.unmatched,
        "ingest finished"
    );
    Ok(report)
}

/// A file's verdict before it is logged.
struct Verdict {
    dataset: Option<String>,
    period: Option<String>,
    reason: Option<String>,
    matched: bool,
}

impl Verdict {
    fn reject(dataset: Option<&str>, period: Option<&str>, reason: String) -> Verdict {
        Verdict {
            dataset: dataset.map(str::to_owned),
            period: period.map(str::to_owned),
            reason: Some(reason),
            matched: true,
        }
    }

    fn unmatched(reason: String) -> Verdict {
        Verdict {
            matched: false,
            ..Verdict::reject(None, None, reason)
        }
    }
}

/// Examines, fingerprints and logs one listed entry.
#[tracing::instrument(skip_all, fields(file = %entry.name()))]
pub async fn ingest_one(
    config: &Config,
    landed: &Landed,
    client: &Client,
    entry: Entry,
) -> Result<FileOutcome, IngestError> {
    let (file, verdict) = match entry {
        Entry::Refused { name, uri, reason } => {
            let verdict = Verdict::reject(None, None, reason);
            return log(client, &name, &uri, None, None, verdict).await;
        }
        Entry::File(file) => {
            let verdict = examine(config, landed, &file).await?;
            (file, verdict)
        }
    };
    let text_format = verdict.reason.is_none()
        && verdict
            .dataset
            .as_deref()
            .and_then(|d| config.datasets[d].format_for(&file.name))
            .is_some_and(|f| matches!(f, FileFormat::Csv | FileFormat::Jsonl));
    let fp = landed.fingerprint(&file, text_format).await?;
    let verdict = match fp.utf8_error {
        Some(at) if verdict.reason.is_none() => Verdict::reject(
            verdict.dataset.as_deref(),
            verdict.period.as_deref(),
            format!("the file is not UTF-8 at {at}; re-export it as UTF-8"),
        ),
        _ => verdict,
    };
    log(
        client,
        &file.name,
        &file.uri,
        Some(&file),
        Some(&fp.sha256),
        verdict,
    )
    .await
}

/// Name → dataset → period → format → header, stopping at the first failure.
async fn examine(
    config: &Config,
    landed: &Landed,
    file: &LandedFile,
) -> Result<Verdict, IngestError> {
    let name = &file.name;
    if let Some(key) = &file.window {
        return examine_window(config, landed, file, key).await;
    }
    let candidates: Vec<(&String, &Dataset)> = config
        .datasets
        .iter()
        .filter(|(_, ds)| ds.pattern().is_match(name))
        .collect();
    let (ds_name, ds) = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Ok(Verdict::unmatched(format!(
                "{name} matches no dataset's file_pattern ({})",
                config
                    .datasets
                    .iter()
                    .map(|(n, d)| format!("{n}: {}", d.file_pattern))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
            return Ok(Verdict::reject(
                None,
                None,
                format!(
                    "{name} matches the file_pattern of several datasets ({}); make them exclusive",
                    names.join(", ")
                ),
            ));
        }
    };
    let period = if ds.incremental.is_some() {
        match &file.acq_date {
            Some(date) => Some(date.clone()),
            None => {
                return Ok(Verdict::reject(
                    Some(ds_name),
                    None,
                    format!(
                        "{name}: dataset {ds_name} is incremental, so its snapshot must sit in an acquisition folder (YYYY-MM-DD/), whose date is the period"
                    ),
                ));
            }
        }
    } else if ds.period.has_period() {
        let caps = ds.pattern().captures(name).expect("pattern matched");
        let text = caps.name("period").map(|m| m.as_str()).unwrap_or_default();
        match Period::parse(ds.period, text) {
            Ok(p) => Some(p.as_str().to_owned()),
            Err(e) => return Ok(Verdict::reject(Some(ds_name), None, format!("{name}: {e}"))),
        }
    } else {
        None
    };
    check_content(config, landed, file, ds_name, ds, period.as_deref()).await
}

/// A file in a window folder of the monitoring layout: the folder names the
/// dataset (its name and `agency_slug`) and the window, whose period is the
/// dataset's period holding it; the object's own name only gives the format.
async fn examine_window(
    config: &Config,
    landed: &Landed,
    file: &LandedFile,
    key: &WindowKey,
) -> Result<Verdict, IngestError> {
    let found = config
        .datasets
        .iter()
        .find(|(n, ds)| **n == key.file_name && ds.agency() == key.agency);
    let Some((ds_name, ds)) = found else {
        let known: Vec<String> = config
            .datasets
            .iter()
            .map(|(n, ds)| format!("{}/{n}", ds.agency()))
            .collect();
        return Ok(Verdict::unmatched(format!(
            "its folder names file {:?} of agency {:?}, which no dataset is (agency/name: {})",
            key.file_name,
            key.agency,
            known.join(", ")
        )));
    };
    let period = Period::containing(ds.period, key.window).map(|p| p.as_str().to_owned());
    check_content(config, landed, file, ds_name, ds, period.as_deref()).await
}

/// Format → header, once the dataset and period are known.
async fn check_content(
    config: &Config,
    landed: &Landed,
    file: &LandedFile,
    ds_name: &String,
    ds: &Dataset,
    period: Option<&str>,
) -> Result<Verdict, IngestError> {
    let name = &file.name;
    let Some(format) = ds.format_for(name) else {
        return Ok(Verdict::reject(
            Some(ds_name),
            period,
            format!(
                "cannot tell the format of {name} from its extension; set `format:` on dataset {ds_name}"
            ),
        ));
    };
    let found = match header::read(landed, file, format, ds, &config.limits).await {
        Ok(h) => h,
        Err(header::HeaderError::Reject(reason)) => {
            return Ok(Verdict::reject(Some(ds_name), period, reason));
        }
        Err(header::HeaderError::Io(e)) => return Err(e.into()),
    };
    let declared: Vec<&str> = ds.columns.keys().map(String::as_str).collect();
    match header::compare(&declared, &found, ds.headers) {
        Ok(extra) => {
            if !extra.is_empty() {
                tracing::info!(event = "extra_columns_dropped", dataset = %ds_name, columns = %extra.join(", "), "extra columns will be dropped (headers: subset)");
            }
            Ok(Verdict {
                dataset: Some(ds_name.clone()),
                period: period.map(str::to_owned),
                reason: None,
                matched: true,
            })
        }
        Err(reason) => Ok(Verdict::reject(Some(ds_name), period, reason)),
    }
}

/// Records the verdict: a new row for a new file version, else the existing id.
async fn log(
    client: &Client,
    name: &str,
    uri: &str,
    file: Option<&LandedFile>,
    sha256: Option<&str>,
    verdict: Verdict,
) -> Result<FileOutcome, IngestError> {
    let status = match (&verdict.reason, verdict.matched) {
        (None, _) => FileStatus::Accepted,
        (Some(_), true) => FileStatus::Rejected,
        (Some(_), false) => FileStatus::Unmatched,
    };
    let size = file.map(|f| f.size as i64);
    let modified = file.and_then(|f| f.modified);
    let version = Version {
        name,
        uri,
        size,
        modified,
        sha256,
    };
    let row = upsert(client, &version, status, &verdict).await?;
    let kept: String = row.get(4);
    let (verdict, status) = if kept == "accepted" && status != FileStatus::Accepted {
        tracing::warn!(
            event = "verdict_kept",
            file_id = row.get::<_, i64>(0),
            file = name,
            "this version was accepted before and stays accepted; under the current config it \
             would be rejected: {}",
            verdict.reason.as_deref().unwrap_or_default()
        );
        (
            Verdict {
                dataset: row.get(2),
                period: row.get(3),
                reason: row.get(5),
                matched: true,
            },
            FileStatus::Accepted,
        )
    } else {
        (verdict, status)
    };
    let outcome = FileOutcome {
        file_id: row.get(0),
        dataset: verdict.dataset,
        period: verdict.period,
        file_name: name.to_owned(),
        source_uri: uri.to_owned(),
        status,
        unchanged: !row.get::<_, bool>(1),
        reason: verdict.reason,
        size_bytes: size,
        sha256: sha256.map(str::to_owned),
    };
    logged(&outcome);
    Ok(outcome)
}

/// A landed file version as `meta.ingestion_log` keys it.
struct Version<'a> {
    name: &'a str,
    uri: &'a str,
    size: Option<i64>,
    modified: Option<chrono::DateTime<chrono::Utc>>,
    sha256: Option<&'a str>,
}

/// The version's row (id, inserted, dataset, period, status, reason), added or
/// updated.
async fn upsert(
    client: &Client,
    v: &Version<'_>,
    status: FileStatus,
    verdict: &Verdict,
) -> Result<tokio_postgres::Row, IngestError> {
    let Version {
        uri, size, sha256, ..
    } = v;
    // A version seen before keeps its id (no sequence value is spent on it) and,
    // once accepted, its verdict: a later config that would reject it does not
    // rewrite history under data already validated or loaded from it. A rejected
    // version takes the new verdict (the config may have been fixed).
    // Concurrent ingests of one version take turns (a session lock: the
    // statement after it sees the other's row), so only one spends an id.
    let key: i64 = client
        .query_one(
            "SELECT hashtextextended('pipeline ingest ' || $1 || ' ' || coalesce($2, '') || ' ' || coalesce($3::bigint::text, ''), 0)",
            &[uri, sha256, size],
        )
        .await
        .map_err(|source| IngestError::Log {
            uri: (*uri).to_owned(),
            source,
        })?
        .get(0);
    let locked = client.execute("SELECT pg_advisory_lock($1)", &[&key]).await;
    let row = match locked {
        Ok(_) => upsert_locked(client, v, status, verdict).await,
        Err(source) => Err(IngestError::Log {
            uri: (*uri).to_owned(),
            source,
        }),
    };
    // Closing the connection releases it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    row
}

async fn upsert_locked(
    client: &Client,
    v: &Version<'_>,
    status: FileStatus,
    verdict: &Verdict,
) -> Result<tokio_postgres::Row, IngestError> {
    let Version {
        name,
        uri,
        size,
        modified,
        sha256,
    } = v;
    client
        .query_one(
            "WITH seen AS (
                 UPDATE meta.ingestion_log
                    SET last_seen_at = now(), modified_at = $6,
                        dataset = CASE WHEN status = 'accepted' THEN dataset ELSE $1 END,
                        period  = CASE WHEN status = 'accepted' THEN period ELSE $2 END,
                        reason  = CASE WHEN status = 'accepted' THEN reason ELSE $9 END,
                        status  = CASE WHEN status = 'accepted' THEN status ELSE $8 END
                  WHERE source_uri = $3 AND sha256 IS NOT DISTINCT FROM $7
                    AND size_bytes IS NOT DISTINCT FROM $5
              RETURNING id, false AS inserted, dataset, period, status, reason
             ), added AS (
                 INSERT INTO meta.ingestion_log
                        (dataset, period, source_uri, file_name, size_bytes, modified_at, sha256, status, reason)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
                  WHERE NOT EXISTS (SELECT 1 FROM seen)
                 ON CONFLICT (source_uri, sha256, size_bytes) DO UPDATE SET last_seen_at = now()
              RETURNING id, (xmax = 0) AS inserted, dataset, period, status, reason
             )
             SELECT * FROM seen UNION ALL SELECT * FROM added LIMIT 1",
            &[
                &verdict.dataset,
                &verdict.period,
                &uri,
                &name,
                &size,
                &modified,
                &sha256,
                &status.logged_as(),
                &verdict.reason,
            ],
        )
        .await
        .map_err(|source| IngestError::Log {
            uri: (*uri).to_owned(),
            source,
        })
}

/// The verdict's log line.
fn logged(outcome: &FileOutcome) {
    match &outcome.reason {
        None => tracing::info!(
            event = "file_accepted",
            file_id = outcome.file_id,
            dataset = outcome.dataset.as_deref().unwrap_or_default(),
            period = outcome.period.as_deref().unwrap_or_default(),
            unchanged = outcome.unchanged,
            "accepted"
        ),
        Some(reason) => tracing::warn!(event = "file_rejected",
            file_id = outcome.file_id,
            dataset = outcome.dataset.as_deref().unwrap_or_default(),
            reason = %reason,
            "rejected"
        ),
    }
}
