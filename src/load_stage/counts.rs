//! `check-counts`: does stage's period hold exactly what the current file's
//! latest validation approved? Lineage decides (file version, validation,
//! Delta version); row counts are an extra signal. What an orchestrator's
//! sensor asks before it runs validate and load-stage.

use serde::Serialize;

use super::{LoadError, Source, read, source_rows, target};
use crate::config::Config;
use crate::db;
use crate::exit::Exit;
use crate::ledger::{self, Loaded, Verdict};

/// What `check-counts` found.
#[derive(Debug, Serialize)]
pub struct Counts {
    /// True (exit 99) when stage already holds exactly what the latest passed
    /// validation of the current file approved.
    pub exit_dag: bool,
    /// True (exit 5) when no file has landed for the period yet.
    pub not_arrived: bool,
    /// True (exit 3) when files landed for the period but ingest refused
    /// every one: waiting will not help, the delivery must be fixed.
    pub rejected: bool,
    pub reason: String,
    /// Cleaned rows of the period at the validated Delta version.
    pub source_count: i64,
    /// Rows of the period in stage.
    pub target_count: i64,
    /// The seed's signal: source_count == target_count > 0 (not enough on its own:
    /// a corrected file with the same row count must still be loaded).
    pub counts_match: bool,
    pub current_file_id: Option<i64>,
    pub validation_id: Option<i64>,
    pub validated_file_id: Option<i64>,
    pub cleaned_version: Option<i64>,
    pub loaded_validation_id: Option<i64>,
    pub loaded_delta_version: Option<i64>,
}

impl Counts {
    /// 3 when every file landed was refused, 5 when none has landed, 99 when
    /// stage is up to date, else 0.
    pub fn exit(&self) -> Exit {
        if self.rejected {
            Exit::Rejected
        } else if self.not_arrived {
            Exit::NotArrived
        } else if self.exit_dag {
            Exit::NothingToDo
        } else {
            Exit::Ok
        }
    }
}

/// Runs `check-counts`: is stage's period exactly what the current file's
/// latest validation approved? Lineage decides; counts are an extra signal.
#[tracing::instrument(name = "check-counts", skip_all, fields(stage = "check-counts", dataset = %dataset, period = period.unwrap_or_default()))]
pub async fn check_counts(
    config: &Config,
    dataset: &str,
    period: Option<&str>,
) -> Result<Counts, LoadError> {
    let (ds, period) = target(config, dataset, period)?;
    let name = dataset;
    let period = period.as_deref();
    let client = db::connect().await?;
    let current = ledger::FileVersion::current(&client, name, period)
        .await
        .map_err(read("read meta.ingestion_log"))?;
    let verdict = Verdict::latest(&client, name, period)
        .await
        .map_err(read("read meta.validation_log"))?;
    let loaded = Loaded::latest(&client, name, period)
        .await
        .map_err(read("read meta.load_log"))?;
    let target_count = crate::partition::row_count(&client, name, period)
        .await
        .map_err(read("count the stage table's rows"))?;
    let source_count = match verdict.as_ref().and_then(|v| v.cleaned_version) {
        Some(version) => {
            let ctx = crate::context::session(config.limits.memory_bytes);
            let (df, path) = source_rows(
                &ctx,
                config,
                name,
                ds,
                period,
                &Source::Delta { version },
                None,
            )
            .await?;
            df.count().await.map_err(|e| LoadError::Source {
                dataset: name.to_owned(),
                path,
                source: Box::new(e),
            })? as i64
        }
        None => 0,
    };
    let counts_match = source_count == target_count && source_count > 0;
    let current_id = current.as_ref().map(|c| c.id);
    let state = ledger::StageState::of(
        current_id,
        verdict.as_ref(),
        &crate::config::Rules::of(ds),
        loaded.as_ref(),
        source_count,
        target_count,
    );
    let (mut reason, exit_dag) = (state.to_string(), state.up_to_date());
    let refused = refused_only(&client, name, period, &state).await?;
    if let Some(why) = &refused {
        reason = why.clone();
    }
    tracing::info!(
        event = "check_counts",
        source_count,
        target_count,
        exit_dag,
        "{reason}"
    );
    Ok(Counts {
        exit_dag,
        not_arrived: state == ledger::StageState::NotArrived && refused.is_none(),
        rejected: refused.is_some(),
        reason,
        source_count,
        target_count,
        counts_match,
        current_file_id: current_id,
        validation_id: verdict.as_ref().map(|v| v.validation_id),
        validated_file_id: verdict.as_ref().map(|v| v.ingestion_id),
        cleaned_version: verdict.as_ref().and_then(|v| v.cleaned_version),
        loaded_validation_id: loaded.as_ref().and_then(|l| l.validation_id),
        loaded_delta_version: loaded.as_ref().and_then(|l| l.source_delta_version),
    })
}

/// Why the period has not arrived although files landed for it: ingest
/// rejected every one (the newest named), or None.
async fn refused_only(
    client: &tokio_postgres::Client,
    name: &str,
    period: Option<&str>,
    state: &ledger::StageState,
) -> Result<Option<String>, LoadError> {
    if *state != ledger::StageState::NotArrived {
        return Ok(None);
    }
    let refused = ledger::FileVersion::latest_rejected(client, name, period)
        .await
        .map_err(read("read meta.ingestion_log"))?;
    Ok(refused.map(|f| {
        format!(
            "{} landed for the period and was rejected by ingest: {}",
            f.file_name,
            f.reason.as_deref().unwrap_or("see meta.ingestion_log")
        )
    }))
}
