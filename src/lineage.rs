//! What `meta.*` says a period holds: the verdict of its latest finished
//! validation, whether a later attempt was cut off, and what stage was loaded
//! from. Read by load-stage (its gate), check-counts and run ("unchanged?"), and
//! status, so they all answer from the same rows.
//!
//! A validation is real once its `meta.validation_log` row says `passed` or
//! `failed`: that row names the file version (ingestion id and the sha256 read)
//! and the Delta versions written. A `running` or `error` row newer than it means
//! an attempt did not finish; the Delta head may then hold rows no verdict names.

use std::collections::HashMap;
use std::path::PathBuf;

use deltalake::DeltaTable;
use tokio_postgres::GenericClient;

use crate::config::Config;

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

    /// The table at exactly `version`, whatever was committed after.
    pub async fn open_version(&self, version: i64) -> Result<DeltaTable, BoxError> {
        let (url, options) = self.url(false)?;
        let mut table = DeltaTable::try_from_url_with_storage_options(url, options).await?;
        table.load_version(version as u64).await?;
        Ok(table)
    }
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
                        v.quarantine_version
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
        }))
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
    /// validation, read at the Delta version it wrote.
    pub fn holds(&self, verdict: &Verdict) -> bool {
        self.validation_id == Some(verdict.validation_id)
            && self.source_delta_version == verdict.cleaned_version
    }
}

/// The newest accepted file version of a (dataset, period): (ingestion id, sha256).
pub async fn current_file(
    client: &impl GenericClient,
    dataset: &str,
    period: Option<&str>,
) -> Result<Option<(i64, Option<String>)>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT id, sha256 FROM meta.ingestion_log
              WHERE dataset = $1 AND period IS NOT DISTINCT FROM $2 AND status = 'accepted'
              ORDER BY last_seen_at DESC, id DESC LIMIT 1",
            &[&dataset, &period],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}
