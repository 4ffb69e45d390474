//! Finding the input: the file version a validation reads (by id or the
//! ledger's current file), checked against its ingested fingerprint, and the
//! source over it.

use super::*;

/// The ingestion_log row being validated.
pub(super) struct FileRow {
    pub(super) id: i64,
    pub(super) dataset: String,
    pub(super) period: Option<String>,
    pub(super) source_uri: String,
    pub(super) file_name: String,
    pub(super) size: Option<i64>,
    pub(super) modified: Option<DateTime<Utc>>,
    pub(super) sha256: Option<String>,
}

/// The file a validation reads, resolved and checked against its ingested fingerprint.
pub(super) struct Input {
    pub(super) row: FileRow,
    pub(super) from: Origin,
    /// The landed file (as ingested, when only its kept rows are left).
    pub(super) file: LandedFile,
    pub(super) format: FileFormat,
}

/// Where the rows come from.
pub(super) enum Origin {
    /// The file in the landed dir.
    Landed(Landed),
    /// The file is gone: the rows its verdict in force kept ([`replay`]).
    Kept(replay::Kept),
    /// Only value rules changed since the verdict of this file: its
    /// quarantined rows and the cleaned rows a changed rule rejects judged
    /// again, its other cleaned rows kept ([`replay::amendable`]).
    Amend(replay::Amendment),
}

impl Origin {
    pub(super) fn replayed_from(&self) -> Option<i64> {
        match self {
            Origin::Kept(k) => Some(k.validation_id),
            Origin::Landed(_) | Origin::Amend(..) => None,
        }
    }

    pub(super) fn amended_from(&self) -> Option<i64> {
        match self {
            Origin::Amend(a) => Some(a.kept.validation_id),
            Origin::Landed(_) | Origin::Kept(_) => None,
        }
    }
}

pub(super) async fn input(
    config: &Config,
    client: &Client,
    file: &FileRef,
) -> Result<Input, ValidateError> {
    let row = find_file(config, client, file).await?;
    let ds = config.dataset(&row.dataset).ok_or_else(|| {
        ValidateError::Usage(format!(
            "dataset `{}` is no longer in the config",
            row.dataset
        ))
    })?;
    let landed = Landed::open(&config.resolve(&config.landed_dir))?;
    let file = match landed
        .resolve(row.source_uri.trim_start_matches("file://"), None)
        .await
    {
        Ok(Entry::File(f)) => f,
        Ok(Entry::Refused { reason, .. }) => return Err(ValidateError::Usage(reason)),
        Err(LandedError::NotFound { uri }) => return kept(client, ds, row, uri).await,
        Err(e) => return Err(e.into()),
    };
    let changed = row.size.is_some_and(|s| s as u64 != file.size)
        || matches!((row.modified, file.modified), (Some(a), Some(b)) if a.timestamp_micros() != b.timestamp_micros());
    if changed {
        return Err(ValidateError::Changed {
            file_id: row.id,
            uri: row.source_uri,
        });
    }
    let format = ds
        .format_for(&file.name)
        .ok_or_else(|| ValidateError::Usage(format!("cannot tell the format of {}", file.name)))?;
    Ok(Input {
        row,
        from: Origin::Landed(landed),
        file,
        format,
    })
}

/// The landed file is gone: its verdict's kept rows, when they can stand in
/// for it under the rules now ([`replay::refusal`]).
async fn kept(
    client: &Client,
    ds: &Dataset,
    row: FileRow,
    uri: String,
) -> Result<Input, ValidateError> {
    let verdict = ledger::Verdict::latest(client, &row.dataset, row.period.as_deref())
        .await
        .map_err(db("read meta.validation_log"))?;
    let refused = replay::refusal(ds, verdict.as_ref(), row.id);
    let kept = verdict.as_ref().and_then(replay::Kept::of);
    let (None, Some(kept)) = (refused.clone(), kept) else {
        return Err(ValidateError::Unreplayable {
            file_id: row.id,
            name: row.file_name,
            uri,
            why: refused.unwrap_or_else(|| "its verdict wrote no rows".into()),
        });
    };
    let format = ds.format_for(&row.file_name).ok_or_else(|| {
        ValidateError::Usage(format!("cannot tell the format of {}", row.file_name))
    })?;
    let file = LandedFile {
        uri,
        location: object_store::path::Path::from(row.file_name.as_str()),
        name: row.file_name.clone(),
        size: row.size.unwrap_or_default() as u64,
        modified: row.modified,
        window: None,
        acq_date: None,
    };
    Ok(Input {
        row,
        from: Origin::Kept(kept),
        file,
        format,
    })
}

/// Whether the dataset's last finished validation found a key more than once.
pub(super) async fn keys_repeated_last_time(
    client: &Client,
    dataset: &str,
) -> Result<bool, ValidateError> {
    let last = client
        .query_opt(
            "SELECT duplicated_rows > 0 FROM meta.validation_log
              WHERE dataset = $1 AND duplicated_rows IS NOT NULL
              ORDER BY id DESC LIMIT 1",
            &[&dataset],
        )
        .await
        .map_err(db("read meta.validation_log"))?;
    Ok(last.is_some_and(|r| r.get(0)))
}

/// Why a (dataset, period) has no accepted file: its latest version was rejected
/// at ingest (exit 3 with the reason), or nothing has arrived (exit 5).
pub(super) async fn no_accepted_file(
    client: &Client,
    name: &str,
    period: Option<String>,
) -> Result<ValidateError, ValidateError> {
    let rejected = ledger::FileVersion::latest_rejected(client, name, period.as_deref())
        .await
        .map_err(db("read meta.ingestion_log"))?;
    Ok(match rejected {
        Some(f) => ValidateError::Rejected {
            file_id: f.id,
            name: f.file_name,
            reason: f.reason.unwrap_or_default(),
        },
        None => ValidateError::NotArrived {
            dataset: name.to_owned(),
            period,
        },
    })
}

/// The version `file` names: by id, or the ledger's current file.
pub(super) async fn find_file(
    config: &Config,
    client: &Client,
    file: &FileRef,
) -> Result<FileRow, ValidateError> {
    let version = match file {
        FileRef::Id(id) => ledger::FileVersion::by_id(client, *id)
            .await
            .map_err(db("read meta.ingestion_log"))?
            .ok_or_else(|| {
                ValidateError::Usage(format!("there is no ingested file with id {id}"))
            })?,
        FileRef::Current {
            dataset: name,
            period,
        } => {
            let (_, period) = crate::period::target(config, name, period.as_deref())
                .map_err(ValidateError::Usage)?;
            let period = period.map(|p| p.as_str().to_owned());
            let current = ledger::FileVersion::current(client, name, period.as_deref())
                .await
                .map_err(db("read meta.ingestion_log"))?;
            match current {
                Some(version) => version,
                None => return Err(no_accepted_file(client, name, period).await?),
            }
        }
    };
    if version.status != "accepted" {
        return Err(ValidateError::Rejected {
            file_id: version.id,
            name: version.file_name,
            reason: version.reason.unwrap_or_default(),
        });
    }
    Ok(FileRow {
        id: version.id,
        dataset: version.dataset.unwrap_or_default(),
        period: version.period,
        source_uri: version.source_uri,
        file_name: version.file_name,
        size: version.size_bytes,
        modified: version.modified_at,
        sha256: version.sha256,
    })
}

/// A landed file opened for the plan.
pub(super) struct Opened {
    pub(super) table: Arc<dyn TableProvider>,
    /// The declared columns the file lacks.
    pub(super) missing: Vec<String>,
    /// The header's guess of the row count ([`header::Header::rows_estimate`]).
    pub(super) rows_estimate: Option<u64>,
}

/// The source over the file; Err(reason) when the file cannot be parsed (or a
/// Parquet type does not fit).
pub(super) async fn open_source(
    landed: &Landed,
    file: &LandedFile,
    ds: &Dataset,
    format: FileFormat,
    limits: &crate::config::Limits,
    digests: Digests,
    expected_sha256: Option<String>,
) -> Result<Result<Opened, String>, ValidateError> {
    let header = header::read_typed(landed, file, format, ds, limits).await;
    let header = match header {
        Ok(h) => h,
        Err(header::HeaderError::Reject(reason)) => return Ok(Err(reason)),
        Err(header::HeaderError::Io(e)) => return Err(e.into()),
    };
    let spec = source::Spec::new(ds, format, &header.names, &header.types);
    let missing: Vec<String> = ds
        .columns
        .keys()
        .zip(&spec.positions)
        .filter(|(_, p)| p.is_none())
        .map(|(c, _)| c.clone())
        .collect();
    let table = source::table(landed, file, spec, digests, expected_sha256).map_err(|source| {
        ValidateError::Engine {
            dataset: file.name.clone(),
            step: "opening the file",
            source,
        }
    })?;
    Ok(Ok(Opened {
        table,
        missing,
        rows_estimate: header.rows_estimate,
    }))
}
