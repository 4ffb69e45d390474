//! The ledger: what `meta.*` says is in force for a (dataset, period), and the
//! one place each of these questions is answered — the current file version,
//! the verdict in force, whether a version is validated, what stage holds and
//! whether stage is up to date. validate, load-stage, check-counts, run, events,
//! status, report and quarantine ask here, so they cannot disagree.
//!
//! A validation is real once its `meta.validation_log` row says `passed` or
//! `failed`: that row names the file version (ingestion id and the sha256 read)
//! and the Delta versions written. A `running` or `error` row newer than it means
//! an attempt did not finish; the Delta head may then hold rows no verdict names.

use std::collections::HashMap;
use std::path::PathBuf;

use deltalake::DeltaTable;
use tokio_postgres::GenericClient;

use crate::config::{Config, Dataset, Rules};

mod model_runs;
pub use model_runs::{Input, InputVersions, ModelRun, ModelSpec, ModelState, with_dependants};

/// Where a Delta table lives: `<stage_dir>/<table>/<dataset>`, a local folder or
/// an `s3://bucket/prefix/…` URL, for the `cleaned` and `quarantine` tables whose
/// versions a verdict names.
#[derive(Debug, Clone)]
pub struct DeltaLocation {
    /// The folder, or the S3 URL, for messages.
    pub display: String,
    local: Option<PathBuf>,
    s3: Option<url::Url>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn delta_location(config: &Config, table: &str, dataset: &str) -> DeltaLocation {
    let base = config.resolve(&config.stage_dir);
    if base.starts_with("s3://") {
        let text = format!("{}/{table}/{dataset}/", base.trim_end_matches('/'));
        DeltaLocation {
            display: text.trim_end_matches('/').to_owned(),
            s3: url::Url::parse(&text).ok(),
            local: None,
        }
    } else {
        let dir = PathBuf::from(base).join(table).join(dataset);
        DeltaLocation {
            display: dir.display().to_string(),
            local: Some(dir),
            s3: None,
        }
    }
}

impl DeltaLocation {
    /// Whether anything was ever written there (local tables only; an S3 prefix
    /// exists once an object does, which opening the table finds out).
    pub fn may_exist(&self) -> bool {
        self.local.as_ref().is_none_or(|d| d.exists())
    }

    /// Whether a table was committed there: for a local folder, whether its
    /// `_delta_log` holds a commit or a checkpoint (no log read); for S3,
    /// whether opening it finds a version.
    pub async fn has_table(&self) -> bool {
        match &self.local {
            Some(dir) => std::fs::read_dir(dir.join("_delta_log")).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.ends_with(".json") || name.ends_with(".parquet")
                })
            }),
            None => matches!(self.open_head().await, Ok(Some(_))),
        }
    }

    /// The table's URL and storage options; a local folder is created first when
    /// `create` (validate writes there).
    fn url(&self, create: bool) -> Result<(url::Url, HashMap<String, String>), BoxError> {
        match (&self.local, &self.s3) {
            (Some(dir), _) => {
                if create {
                    std::fs::create_dir_all(dir)?;
                }
                let abs = std::fs::canonicalize(dir)?;
                let url =
                    url::Url::from_directory_path(abs).map_err(|()| "not an absolute path")?;
                Ok((url, HashMap::new()))
            }
            (None, Some(url)) => {
                static HANDLERS: std::sync::Once = std::sync::Once::new();
                HANDLERS.call_once(|| deltalake::aws::register_handlers(None));
                Ok((url.clone(), crate::s3::storage_options()))
            }
            (None, None) => Err(format!("`{}` is not a valid S3 URL", self.display).into()),
        }
    }

    /// The table as it is now (or an empty handle where none exists yet), ready
    /// to be written to.
    pub async fn open_for_write(&self) -> Result<DeltaTable, BoxError> {
        let (url, options) = self.url(true)?;
        Ok(DeltaTable::try_from_url_with_storage_options(url, options).await?)
    }

    /// The table as it is now, read only: None where no table exists.
    pub async fn open_head(&self) -> Result<Option<DeltaTable>, deltalake::DeltaTableError> {
        if !self.may_exist() {
            return Ok(None);
        }
        let (url, options) = self
            .url(false)
            .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
        let table = DeltaTable::try_from_url_with_storage_options(url, options).await?;
        Ok(table.version().is_some().then_some(table))
    }

    /// The table's head as the log says (read only, nothing created).
    pub async fn head(&self) -> Head {
        let first = |e: &dyn std::fmt::Display| {
            format!(
                "{}: {}",
                self.display,
                crate::exit::first_line(&e.to_string())
            )
        };
        match self.open_head().await {
            Ok(Some(table)) => Head::Table {
                display: self.display.clone(),
                version: table.version().map_or(-1, |v| v as i64),
                id: table_id(&table),
            },
            Ok(None) => Head::Missing(format!("{} holds no Delta table", self.display)),
            Err(e @ deltalake::DeltaTableError::ObjectStore { .. }) => Head::Unreadable(first(&e)),
            // An emptied S3 prefix can still list a log folder with no commit in it.
            Err(e) if is_missing(&e.to_string()) => Head::Missing(first(&e)),
            Err(e) => Head::Damaged(first(&e)),
        }
    }

    /// The table at exactly `version`, whatever was committed after.
    pub async fn open_version(&self, version: i64) -> Result<DeltaTable, BoxError> {
        let (url, options) = self.url(false)?;
        let mut table = DeltaTable::try_from_url_with_storage_options(url, options).await?;
        table.load_version(version as u64).await?;
        Ok(table)
    }
}

/// Whether an open error means no table is there (rather than a damaged one).
fn is_missing(message: &str) -> bool {
    [
        "No files in log segment",
        "Not a Delta table",
        "not a Delta table",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The Delta table's id (its `metaData.id`, set when it is created): a table
/// recreated at the same place has another.
pub fn table_id(table: &DeltaTable) -> Option<String> {
    Some(table.snapshot().ok()?.metadata().id().to_owned())
}

/// A Delta table's head, as its log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Table {
        display: String,
        version: i64,
        id: Option<String>,
    },
    /// No table there (never written, or lost).
    Missing(String),
    /// The log cannot be parsed (a truncated or corrupt `_delta_log`).
    Damaged(String),
    /// The store did not answer (I/O, network).
    Unreadable(String),
}

impl Head {
    /// What is left of the rows a verdict approved at `version` of the table
    /// `id` (None for verdicts recorded before ids were).
    pub fn keeps(&self, version: i64, id: Option<&str>) -> Kept {
        let (display, head, now) = match self {
            Head::Table {
                display,
                version,
                id,
            } => (display, *version, id.as_deref()),
            Head::Missing(why) => return Kept::Lost(why.clone()),
            Head::Damaged(why) => return Kept::Damaged(why.clone()),
            Head::Unreadable(why) => return Kept::Unreadable(why.clone()),
        };
        match (id, now) {
            (Some(then), Some(now)) if then != now => Kept::Lost(format!(
                "{display} was recreated (table {now}; the verdict's rows were in table {then})"
            )),
            _ if head < version => Kept::Lost(format!(
                "{display} is at version {head}, before the verdict's version {version} \
                 (its log was truncated, or the table recreated)"
            )),
            _ => Kept::Intact,
        }
    }
}

/// Whether the rows a verdict approved are still in their Delta table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    Intact,
    /// The table, or the verdict's version of it, is gone (why).
    Lost(String),
    /// The log cannot be parsed (a truncated or corrupt `_delta_log`).
    Damaged(String),
    /// The store did not answer (I/O, network): try again.
    Unreadable(String),
}

/// The latest finished validation of a (dataset, period).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub validation_id: i64,
    pub ingestion_id: i64,
    pub passed: bool,
    pub score: Option<i32>,
    pub min_quality_score: Option<i32>,
    pub rows_in: i64,
    pub rows_valid: i64,
    pub rows_rejected: i64,
    pub cleaned_version: Option<i64>,
    pub quarantine_version: Option<i64>,
    pub sha256: Option<String>,
    /// Whether a later validation attempt started and did not reach a verdict.
    pub interrupted_after: bool,
    /// The rules it judged by; None for verdicts recorded before rules were.
    pub rules: Option<Rules>,
    /// The file could not be parsed: none of its rows were kept.
    pub malformed: bool,
    /// The verdict whose kept rows this one re-validated (the file was gone).
    pub replayed_from: Option<i64>,
    /// The id of the cleaned table its version is in (None before ids were recorded).
    pub cleaned_table_id: Option<String>,
    /// Re-judged under new rules with no row changed: the verdict whose rows
    /// (Delta versions) it keeps, which a load of those rows holds too.
    pub kept_from: Option<i64>,
    /// Amended under relaxed rules: the verdict whose cleaned rows it keeps,
    /// its newly valid rows appended (see `validate::replay::amendable`).
    pub amended_from: Option<i64>,
}

impl Verdict {
    /// The latest finished validation, or None when the period has none.
    pub async fn latest(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<Verdict>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT v.id, v.ingestion_id, v.passed, v.score, v.min_quality_score,
                        coalesce(v.rows_in, 0), coalesce(v.rows_valid, 0), coalesce(v.rows_rejected, 0),
                        v.cleaned_version, v.sha256,
                        EXISTS (SELECT 1 FROM meta.validation_log l
                                 WHERE l.dataset = v.dataset AND l.period IS NOT DISTINCT FROM v.period
                                   AND l.id > v.id AND l.status IN ('running', 'error')),
                        v.quarantine_version, v.rules, v.error IS NOT NULL, v.replayed_from,
                        v.cleaned_table_id, v.kept_from, v.amended_from
                   FROM meta.validation_log v
                  WHERE v.dataset = $1 AND v.period IS NOT DISTINCT FROM $2
                    AND v.status IN ('passed', 'failed')
                  ORDER BY v.id DESC LIMIT 1",
                &[&dataset, &period],
            )
            .await?;
        Ok(row.map(|r| Verdict {
            validation_id: r.get(0),
            ingestion_id: r.get(1),
            passed: r.get::<_, Option<bool>>(2) == Some(true),
            score: r.get(3),
            min_quality_score: r.get(4),
            rows_in: r.get(5),
            rows_valid: r.get(6),
            rows_rejected: r.get(7),
            cleaned_version: r.get(8),
            sha256: r.get(9),
            interrupted_after: r.get(10),
            quarantine_version: r.get(11),
            rules: r
                .get::<_, Option<serde_json::Value>>(12)
                .and_then(Rules::from_json),
            malformed: r.get(13),
            replayed_from: r.get(14),
            cleaned_table_id: r.get(15),
            kept_from: r.get(16),
            amended_from: r.get(17),
        }))
    }
}

/// A period's verdict in force with its file's name, as the report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodVerdict {
    pub period: Option<String>,
    pub file_name: String,
    pub validation_id: i64,
    pub rows_in: Option<i64>,
    pub rows_rejected: Option<i64>,
}

impl PeriodVerdict {
    /// The verdict in force of each period of `dataset` (only `period`'s when
    /// given): its latest finished validation, as [`Verdict::latest`] decides.
    pub async fn each(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Vec<PeriodVerdict>, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT DISTINCT ON (v.period) v.period, i.file_name, v.id, v.rows_in, v.rows_rejected
                   FROM meta.validation_log v JOIN meta.ingestion_log i ON i.id = v.ingestion_id
                  WHERE v.dataset = $1 AND v.status IN ('passed', 'failed')
                    AND ($2::text IS NULL OR v.period = $2)
                  ORDER BY v.period, v.id DESC",
                &[&dataset, &period],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|v| PeriodVerdict {
                period: v.get(0),
                file_name: v.get(1),
                validation_id: v.get(2),
                rows_in: v.get(3),
                rows_rejected: v.get(4),
            })
            .collect())
    }
}

/// The latest successful load of a (dataset, period) into stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub load_id: i64,
    pub validation_id: Option<i64>,
    pub source_delta_version: Option<i64>,
    pub rows_inserted: i64,
}

impl Loaded {
    pub async fn latest(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<Loaded>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT id, validation_id, source_delta_version, coalesce(rows_inserted, 0)
                   FROM meta.load_log
                  WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2 AND status = 'loaded'
                  ORDER BY id DESC LIMIT 1",
                &[&dataset, &period],
            )
            .await?;
        Ok(row.map(|r| Loaded {
            load_id: r.get(0),
            validation_id: r.get(1),
            source_delta_version: r.get(2),
            rows_inserted: r.get(3),
        }))
    }

    /// Whether this load holds exactly what `verdict` approved: the same
    /// validation (or the one a re-judged verdict keeps the rows of), read at
    /// the Delta version it wrote.
    pub fn holds(&self, verdict: &Verdict) -> bool {
        let judged = Some(verdict.validation_id);
        (self.validation_id == judged
            || (verdict.kept_from.is_some() && self.validation_id == verdict.kept_from))
            && self.source_delta_version == verdict.cleaned_version
    }
}

/// The latest validation attempt of a (dataset, period), finished or not:
/// what `status` shows beside the verdict in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// `running`, `passed`, `failed` or `error`.
    pub status: String,
    pub score: Option<i32>,
    pub rows_in: Option<i64>,
    pub rows_valid: Option<i64>,
    pub rows_rejected: Option<i64>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub ingestion_id: i64,
    pub error: Option<String>,
    /// The validation whose kept rows it read (the file was gone).
    pub replayed_from: Option<i64>,
    /// A re-delivery against the loaded rows, in words (counts by key).
    pub redelivery: Option<String>,
    /// The verdict it amended (its quarantined rows judged again under
    /// changed value rules, its cleaned rows kept).
    pub amended_from: Option<i64>,
    /// Of the amended verdict's cleaned rows, how many a changed rule moved
    /// to quarantine.
    pub rows_withdrawn: Option<i64>,
}

/// An amended verdict in words: what `run` and `status` say of it.
pub fn amended_words(from: i64, withdrawn: Option<i64>) -> String {
    let judged = match withdrawn.unwrap_or(0) {
        0 => "its quarantined rows were judged again and its cleaned rows kept".to_owned(),
        n => format!(
            "its quarantined rows and the {n} cleaned row(s) a changed rule now rejects were \
             judged again, its other cleaned rows kept"
        ),
    };
    format!(
        "amended validation {from}: only value rules changed, so {judged} (the file was not read)"
    )
}

impl Attempt {
    pub async fn latest(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<Attempt>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT status, score, rows_in, rows_valid, rows_rejected, finished_at, ingestion_id, error,
                        replayed_from, redelivery->>'words', amended_from, rows_withdrawn
                   FROM meta.validation_log WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2
                  ORDER BY id DESC LIMIT 1",
                &[&dataset, &period],
            )
            .await?;
        Ok(row.map(|v| Attempt {
            status: v.get(0),
            score: v.get(1),
            rows_in: v.get(2),
            rows_valid: v.get(3),
            rows_rejected: v.get(4),
            finished_at: v.get(5),
            ingestion_id: v.get(6),
            error: v.get(7),
            replayed_from: v.get(8),
            redelivery: v.get(9),
            amended_from: v.get(10),
            rows_withdrawn: v.get(11),
        }))
    }
}

/// The latest load attempt of a (dataset, period): `loaded` or `failed`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadAttempt {
    pub status: String,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
}

impl LoadAttempt {
    pub async fn latest(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<LoadAttempt>, tokio_postgres::Error> {
        let row = client
            .query_opt(
                "SELECT status, finished_at, error FROM meta.load_log
                  WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2 ORDER BY id DESC LIMIT 1",
                &[&dataset, &period],
            )
            .await?;
        Ok(row.map(|l| LoadAttempt {
            status: l.get(0),
            finished_at: l.get(1),
            error: l.get(2),
        }))
    }
}

/// One event of a period's history: a file version seen, a verdict, a load
/// or a refused or failed load, oldest first ([`history`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub at: chrono::DateTime<chrono::Utc>,
    /// `file`, `validation` or `load`.
    pub kind: String,
    /// The row's id in its meta table.
    pub id: i64,
    /// The row's status (`accepted`, `rejected`, `passed`, `failed`, `error`,
    /// `running`, `loaded`, `refused`).
    pub status: String,
    /// What it was, in words.
    pub detail: String,
}

/// Everything the ledger holds of a (dataset, period): every file version
/// seen, every verdict, every load, oldest first.
pub async fn history(
    client: &impl GenericClient,
    dataset: &str,
    period: Option<&str>,
) -> Result<Vec<Event>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT at, kind, id, status, detail FROM (
               SELECT first_seen_at AS at, 'file' AS kind, id, status,
                      file_name || coalesce(': ' || reason, '') AS detail
                 FROM meta.ingestion_log WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2
               UNION ALL
               SELECT coalesce(finished_at, started_at), 'validation', id, status,
                      format('file %s: %s rows, %s rejected, score %s', ingestion_id,
                             coalesce(rows_in::text, '?'), coalesce(rows_rejected::text, '?'),
                             coalesce(score::text, '-'))
                      || coalesce(' (replayed from validation ' || replayed_from || ')', '')
                      || coalesce(' (amended validation ' || amended_from || ': its quarantined rows'
                                  || CASE WHEN rows_withdrawn > 0
                                          THEN ' and ' || rows_withdrawn || ' of its cleaned rows'
                                          ELSE '' END
                                  || ' judged again)', '')
                      || coalesce('; re-delivery: ' || (redelivery->>'words'), '')
                      || coalesce(': ' || error, '')
                 FROM meta.validation_log WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2
               UNION ALL
               SELECT coalesce(finished_at, started_at), 'load', id, status,
                      CASE WHEN status = 'loaded'
                           THEN format('validation %s: %s rows replaced by %s', validation_id,
                                       rows_deleted, rows_inserted)
                                || CASE WHEN forced THEN ' (forced: ' || array_to_string(overrides, ', ') || ')'
                                        ELSE '' END
                           ELSE coalesce(error, '') END
                 FROM meta.load_log WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2
             ) h ORDER BY at, kind, id",
            &[&dataset, &period],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Event {
            at: r.get(0),
            kind: r.get(1),
            id: r.get(2),
            status: r.get(3),
            detail: r.get(4),
        })
        .collect())
}

/// One version of a landed file, as `meta.ingestion_log` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileVersion {
    pub id: i64,
    pub dataset: Option<String>,
    pub period: Option<String>,
    pub source_uri: String,
    pub file_name: String,
    /// `accepted` or `rejected`.
    pub status: String,
    pub reason: Option<String>,
    pub size_bytes: Option<i64>,
    pub modified_at: Option<chrono::DateTime<chrono::Utc>>,
    pub sha256: Option<String>,
    /// When ingest last saw these bytes (what makes a version current).
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
}

const FILE_COLUMNS: &str = "id, dataset, period, source_uri, file_name, status, reason, \
                            size_bytes, modified_at, sha256, last_seen_at";

/// The rule for "current": of a (dataset, period)'s versions, the one seen last.
const NEWEST: &str = "ORDER BY last_seen_at DESC, id DESC";

impl FileVersion {
    fn from_row(r: &tokio_postgres::Row) -> FileVersion {
        FileVersion {
            id: r.get(0),
            dataset: r.get(1),
            period: r.get(2),
            source_uri: r.get(3),
            file_name: r.get(4),
            status: r.get(5),
            reason: r.get(6),
            size_bytes: r.get(7),
            modified_at: r.get(8),
            sha256: r.get(9),
            last_seen_at: r.get(10),
        }
    }

    /// The version with this `meta.ingestion_log` id.
    pub async fn by_id(
        client: &impl GenericClient,
        id: i64,
    ) -> Result<Option<FileVersion>, tokio_postgres::Error> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM meta.ingestion_log WHERE id = $1");
        Ok(client
            .query_opt(&sql, &[&id])
            .await?
            .as_ref()
            .map(Self::from_row))
    }

    /// The current file of a (dataset, period): its newest accepted version.
    pub async fn current(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<FileVersion>, tokio_postgres::Error> {
        Self::newest(client, dataset, period, "accepted").await
    }

    /// The newest rejected version of a (dataset, period): why it has no current file.
    pub async fn latest_rejected(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
    ) -> Result<Option<FileVersion>, tokio_postgres::Error> {
        Self::newest(client, dataset, period, "rejected").await
    }

    async fn newest(
        client: &impl GenericClient,
        dataset: &str,
        period: Option<&str>,
        status: &str,
    ) -> Result<Option<FileVersion>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM meta.ingestion_log
              WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2 AND status = $3 {NEWEST}
              LIMIT 1"
        );
        let row = client
            .query_opt(&sql, &[&dataset, &period, &status])
            .await?;
        Ok(row.as_ref().map(Self::from_row))
    }

    /// Each period's file as `status` shows it: the current one, or, where no
    /// version was accepted, the newest rejected one.
    pub async fn per_period(
        client: &impl GenericClient,
        dataset: &str,
    ) -> Result<Vec<FileVersion>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT DISTINCT ON (period) {FILE_COLUMNS} FROM meta.ingestion_log
              WHERE dataset = $1
              ORDER BY period, (status = 'accepted') DESC, last_seen_at DESC, id DESC"
        );
        let rows = client.query(&sql, &[&dataset]).await?;
        Ok(rows.iter().map(Self::from_row).collect())
    }
}

impl Verdict {
    /// Whether this verdict settles `file_id`: it judged that version and no
    /// later attempt was cut off (which may have left rows no verdict names).
    /// run and events validate again exactly when it does not.
    pub fn settles(&self, file_id: i64) -> bool {
        self.ingestion_id == file_id && !self.interrupted_after
    }

    /// The rules that changed since this verdict was reached (sorted keys such
    /// as `origin.allowed`); empty when they did not, or when the verdict is
    /// older than recorded rules.
    pub fn rules_changed(&self, now: &Rules) -> Vec<String> {
        match &self.rules {
            Some(then) if then.fingerprint() != now.fingerprint() => then.changed(now),
            _ => Vec::new(),
        }
    }

    /// Whether this verdict still decides `file_id` under the rules `now`: it
    /// settles the version and was reached by the same rules.
    pub fn stands(&self, file_id: i64, now: &Rules) -> bool {
        self.settles(file_id) && self.rules_changed(now).is_empty()
    }
}

/// The stage rows a command counted after the latest load it saw: (load id,
/// rows). See [`StageState::read`].
pub type StageRows = std::sync::Mutex<Option<(i64, i64)>>;

/// What stage holds of a (dataset, period), against the ledger: the answer of
/// `check-counts` and of `run`'s "load again?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageState {
    /// No accepted file has landed.
    NotArrived,
    /// The period has no verdict.
    NotValidated,
    /// The verdict in force judged another version than the current file.
    OtherFile {
        validation_id: i64,
        validated_file: i64,
        current_file: i64,
    },
    /// A validation after the verdict did not finish.
    Interrupted { validation_id: i64 },
    /// The dataset's rules changed since the verdict: these keys.
    RulesChanged {
        validation_id: i64,
        changed: Vec<String>,
    },
    /// Stage was never loaded from the verdict's rows.
    NotLoaded { validation_id: i64 },
    /// Stage holds another validation or Delta version than the verdict's.
    OlderLoad {
        loaded_validation: Option<i64>,
        loaded_version: Option<i64>,
        validation_id: i64,
        version: Option<i64>,
    },
    /// The right load, but the row counts differ (the table changed since).
    CountsDiffer { cleaned: i64, stage: i64 },
    /// Stage holds exactly what the verdict approved.
    UpToDate {
        validation_id: i64,
        file_id: i64,
        rows: i64,
    },
}

impl StageState {
    /// Whether the verdict in force needs only loading (again): the rows it
    /// approved are right, stage does not hold them. Else the period needs a
    /// validation first (or nothing, when up to date or not arrived). Every
    /// state is named, so a new one must say which it is.
    pub fn needs_load_only(&self) -> bool {
        match self {
            StageState::NotLoaded { .. }
            | StageState::OlderLoad { .. }
            | StageState::CountsDiffer { .. }
            | StageState::UpToDate { .. } => true,
            StageState::NotArrived
            | StageState::NotValidated
            | StageState::OtherFile { .. }
            | StageState::Interrupted { .. }
            | StageState::RulesChanged { .. } => false,
        }
    }

    /// Decides from what the ledger read: the current file, the verdict in
    /// force, the rules in force now, the latest load, and the rows the
    /// verdict's version and stage hold.
    pub fn of(
        current_file: Option<i64>,
        verdict: Option<&Verdict>,
        rules: &Rules,
        loaded: Option<&Loaded>,
        cleaned_rows: i64,
        stage_rows: i64,
    ) -> StageState {
        let Some(current) = current_file else {
            return StageState::NotArrived;
        };
        let Some(v) = verdict else {
            return StageState::NotValidated;
        };
        if v.ingestion_id != current {
            return StageState::OtherFile {
                validation_id: v.validation_id,
                validated_file: v.ingestion_id,
                current_file: current,
            };
        }
        if v.interrupted_after {
            return StageState::Interrupted {
                validation_id: v.validation_id,
            };
        }
        let changed = v.rules_changed(rules);
        if !changed.is_empty() {
            return StageState::RulesChanged {
                validation_id: v.validation_id,
                changed,
            };
        }
        match loaded {
            None => StageState::NotLoaded {
                validation_id: v.validation_id,
            },
            Some(l) if !l.holds(v) => StageState::OlderLoad {
                loaded_validation: l.validation_id,
                loaded_version: l.source_delta_version,
                validation_id: v.validation_id,
                version: v.cleaned_version,
            },
            Some(_) if cleaned_rows != stage_rows => StageState::CountsDiffer {
                cleaned: cleaned_rows,
                stage: stage_rows,
            },
            Some(_) => StageState::UpToDate {
                validation_id: v.validation_id,
                file_id: v.ingestion_id,
                rows: stage_rows,
            },
        }
    }

    /// The stage rows of `name`'s period. A dataset added since `migrate`
    /// has no stage table yet: it holds nothing (load-stage then says to run
    /// migrate).
    async fn count(
        client: &tokio_postgres::Client,
        name: &str,
        period: Option<&str>,
    ) -> Result<i64, tokio_postgres::Error> {
        match crate::partition::row_count(client, name, period).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
            rows => rows,
        }
    }

    pub fn up_to_date(&self) -> bool {
        matches!(self, StageState::UpToDate { .. })
    }

    /// Reads what decides the state of `name`'s period: its current file, the
    /// verdict in force, the latest load and the stage rows, against the
    /// rules `ds` has now. The verdict's valid rows stand for the cleaned rows.
    ///
    /// `counted`: where a command that reads the same period again (`run`,
    /// before each step) keeps the stage rows it counted after a load; they
    /// are counted again only once another load is the latest (a count of a
    /// month of millions of rows takes a tenth of a second, and `run` asked
    /// it three times a period).
    pub async fn read(
        client: &tokio_postgres::Client,
        name: &str,
        ds: &Dataset,
        period: Option<&str>,
        counted: Option<&StageRows>,
    ) -> Result<(StageState, Option<Verdict>), tokio_postgres::Error> {
        let current = FileVersion::current(client, name, period).await?;
        let verdict = Verdict::latest(client, name, period).await?;
        let loaded = Loaded::latest(client, name, period).await?;
        let load_id = loaded.as_ref().map(|l| l.load_id);
        let known = counted
            .and_then(|c| *c.lock().unwrap_or_else(|e| e.into_inner()))
            .filter(|(id, _)| load_id == Some(*id));
        let rows = match known {
            Some((_, rows)) => rows,
            None => Self::count(client, name, period).await?,
        };
        if let (Some(c), Some(id)) = (counted, load_id) {
            *c.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, rows));
        }
        let state = StageState::of(
            current.map(|c| c.id),
            verdict.as_ref(),
            &Rules::of(ds),
            loaded.as_ref(),
            verdict.as_ref().map_or(0, |v| v.rows_valid),
            rows,
        );
        Ok((state, verdict))
    }

    /// Why the period is stale, in words; None when it is up to date, has no
    /// file yet, or its verdict (reached by today's rules) rejected it: then
    /// there is nothing to redo until something changes.
    pub fn stale(&self, verdict: Option<&Verdict>) -> Option<String> {
        let rejected = verdict.is_some_and(|v| !v.passed);
        Some(match self {
            StageState::NotArrived | StageState::UpToDate { .. } => return None,
            StageState::NotLoaded { .. }
            | StageState::OlderLoad { .. }
            | StageState::CountsDiffer { .. }
                if rejected =>
            {
                return None;
            }
            StageState::NotValidated => "not validated yet".into(),
            StageState::OtherFile { current_file, .. } => {
                format!("file {current_file} landed and is not validated yet")
            }
            StageState::Interrupted { .. } => "a validation did not finish".into(),
            StageState::RulesChanged { changed, .. } => {
                format!("rules changed: {}", changed.join(", "))
            }
            StageState::NotLoaded { validation_id } => {
                format!("validation {validation_id} is not loaded yet")
            }
            StageState::OlderLoad { validation_id, .. } => {
                format!("stage holds an older load than validation {validation_id}")
            }
            StageState::CountsDiffer { cleaned, stage } => {
                format!("stage holds {stage} rows, the verdict {cleaned}")
            }
        })
    }
}

fn id(v: Option<i64>) -> String {
    v.map_or("-".into(), |i| i.to_string())
}

impl std::fmt::Display for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageState::NotArrived => write!(
                f,
                "not arrived: no accepted file for the period yet (run `pipeline ingest` once it lands)"
            ),
            StageState::NotValidated => {
                write!(f, "proceed: the period has not been validated yet")
            }
            StageState::OtherFile {
                validation_id,
                validated_file,
                current_file,
            } => write!(
                f,
                "proceed: the latest validation ({validation_id}) is of file {validated_file}, \
                 the current file is {current_file}"
            ),
            StageState::Interrupted { validation_id } => write!(
                f,
                "proceed: a validation after {validation_id} did not finish; validate again"
            ),
            StageState::RulesChanged {
                validation_id,
                changed,
            } => write!(
                f,
                "proceed: rules changed since validation {validation_id}: {}; validate again",
                changed.join(", ")
            ),
            StageState::NotLoaded { validation_id } => {
                write!(f, "proceed: validation {validation_id} is not loaded yet")
            }
            StageState::OlderLoad {
                loaded_validation,
                loaded_version,
                validation_id,
                version,
            } => write!(
                f,
                "proceed: stage holds validation {} (Delta v{}), the latest is {validation_id} \
                 (Delta v{})",
                id(*loaded_validation),
                id(*loaded_version),
                id(*version)
            ),
            StageState::CountsDiffer { cleaned, stage } => write!(
                f,
                "proceed: counts differ ({cleaned} cleaned rows, {stage} stage rows)"
            ),
            StageState::UpToDate {
                validation_id,
                file_id,
                rows,
            } => write!(
                f,
                "already loaded: validation {validation_id} of file {file_id} ({rows} rows)"
            ),
        }
    }
}

/// A verdict for unit tests to vary: validation 7 of file 2 passed with
/// score 100, its 10 rows all valid at Delta version 3.
#[cfg(test)]
impl Verdict {
    pub(crate) fn sample() -> Verdict {
        Verdict {
            validation_id: 7,
            ingestion_id: 2,
            passed: true,
            score: Some(100),
            min_quality_score: Some(80),
            rows_in: 10,
            rows_valid: 10,
            rows_rejected: 0,
            cleaned_version: Some(3),
            quarantine_version: Some(3),
            sha256: None,
            interrupted_after: false,
            rules: None,
            malformed: false,
            replayed_from: None,
            cleaned_table_id: None,
            kept_from: None,
            amended_from: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(file: i64, interrupted: bool) -> Verdict {
        Verdict {
            ingestion_id: file,
            interrupted_after: interrupted,
            ..Verdict::sample()
        }
    }

    fn load(validation: i64, version: i64) -> Loaded {
        Loaded {
            load_id: 1,
            validation_id: Some(validation),
            source_delta_version: Some(version),
            rows_inserted: 10,
        }
    }

    #[test]
    fn stage_is_up_to_date_only_with_the_current_files_verdict_loaded_whole() {
        let v = verdict(2, false);
        let l = load(7, 3);
        let state = |current, v: Option<&Verdict>, l: Option<&Loaded>, stage| {
            StageState::of(current, v, &Rules::default(), l, 10, stage)
        };
        assert_eq!(state(None, Some(&v), Some(&l), 10), StageState::NotArrived);
        assert_eq!(state(Some(2), None, None, 0), StageState::NotValidated);
        assert!(matches!(
            state(Some(3), Some(&v), Some(&l), 10),
            StageState::OtherFile {
                current_file: 3,
                ..
            }
        ));
        let cut = verdict(2, true);
        assert!(matches!(
            state(Some(2), Some(&cut), Some(&l), 10),
            StageState::Interrupted { .. }
        ));
        assert!(matches!(
            state(Some(2), Some(&v), None, 0),
            StageState::NotLoaded { .. }
        ));
        let older = load(7, 2);
        assert!(matches!(
            state(Some(2), Some(&v), Some(&older), 10),
            StageState::OlderLoad { .. }
        ));
        assert_eq!(
            state(Some(2), Some(&v), Some(&l), 9),
            StageState::CountsDiffer {
                cleaned: 10,
                stage: 9
            }
        );
        let done = state(Some(2), Some(&v), Some(&l), 10);
        assert!(done.up_to_date());
        assert_eq!(
            done.to_string(),
            "already loaded: validation 7 of file 2 (10 rows)"
        );
    }

    #[test]
    fn changed_rules_make_a_loaded_period_stale_and_say_which() {
        let ds = |allowed: &str| -> Dataset {
            serde_yaml::from_str(&format!(
                "file_pattern: '^f\\.csv$'\nperiod: none\ncolumns:\n  origin: {{ type: string, allowed: [{allowed}] }}\n"
            ))
            .expect("a dataset")
        };
        let then = Rules::of(&ds("JFK"));
        let v = Verdict {
            rules: Some(then.clone()),
            ..verdict(2, false)
        };
        let l = load(7, 3);
        let same = StageState::of(Some(2), Some(&v), &then, Some(&l), 10, 10);
        assert!(same.up_to_date());
        assert_eq!(same.stale(Some(&v)), None);
        let relaxed = StageState::of(
            Some(2),
            Some(&v),
            &Rules::of(&ds("JFK, SFO")),
            Some(&l),
            10,
            10,
        );
        assert_eq!(
            relaxed.stale(Some(&v)).as_deref(),
            Some("rules changed: origin.allowed")
        );
        // A rejected period is not stale until something changes.
        let failed = Verdict {
            passed: false,
            ..v.clone()
        };
        let state = StageState::of(Some(2), Some(&failed), &then, None, 10, 0);
        assert_eq!(state.stale(Some(&failed)), None);
        let state = StageState::of(Some(2), Some(&failed), &Rules::of(&ds("SFO")), None, 10, 0);
        assert!(state.stale(Some(&failed)).is_some());
    }

    #[test]
    fn a_verdicts_rows_are_kept_only_in_its_own_table_at_or_after_its_version() {
        let head = |version, id: Option<&str>| Head::Table {
            display: "t".into(),
            version,
            id: id.map(str::to_owned),
        };
        assert_eq!(head(5, Some("a")).keeps(3, Some("a")), Kept::Intact);
        assert_eq!(
            head(5, Some("a")).keeps(3, None),
            Kept::Intact,
            "older verdicts: version only"
        );
        assert!(
            matches!(head(5, Some("b")).keeps(3, Some("a")), Kept::Lost(w) if w.contains("recreated"))
        );
        assert!(
            matches!(head(2, Some("a")).keeps(3, Some("a")), Kept::Lost(w) if w.contains("before"))
        );
        assert!(matches!(
            Head::Missing("m".into()).keeps(0, None),
            Kept::Lost(_)
        ));
        assert!(matches!(
            Head::Damaged("d".into()).keeps(0, None),
            Kept::Damaged(_)
        ));
        assert!(is_missing("Generic error: No files in log segment"));
        assert!(!is_missing("Json error: Truncated record"));
    }

    #[test]
    fn a_verdict_settles_only_its_own_uninterrupted_version() {
        assert!(verdict(2, false).settles(2));
        assert!(!verdict(2, false).settles(3));
        assert!(!verdict(2, true).settles(2));
    }
}
