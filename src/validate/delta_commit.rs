//! Replacing one period of an existing Delta table in one commit of our own.
//!
//! delta-rs's `replace_where` first runs a scan of the table to find which files
//! hold rows of the period (`scan_files_where_matches`, before it checks that
//! the predicate names only the partition column), then checks every written
//! row against the predicate. Our rows all carry the period by construction and
//! the period is the table's only partition column, so the files to remove are
//! exactly the active files whose partition value is the period: read from the
//! log, not from the data. delta-rs's own writer writes the new files and its
//! `CommitBuilder` commits the adds and removes as one version, with the same
//! conflict checks as its write operation.

use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use delta_kernel::table_features::TableFeature;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, EagerSnapshot};
use deltalake::logstore::LogStoreRef;
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use indexmap::IndexMap;
use tokio::sync::mpsc;

// The partition column of every periodic dataset's cleaned and quarantine table.
use crate::stage_table::DATA_PERIOD as PERIOD_COLUMN;

/// The key our commits carry in their commitInfo, naming the period replaced.
const COMMIT_INFO_KEY: &str = "pipeline.replacedPeriod";
/// The same, for a commit that added to the period's files.
const APPEND_INFO_KEY: &str = "pipeline.appendedPeriod";

/// An existing table whose schema is `schema` and that is partitioned by the
/// period alone: what the replace below may write to without delta-rs's
/// planning. Anything else (a table to create, a schema edited since, another
/// layout) goes through delta-rs's write, which knows how to refuse it.
pub struct Replace {
    snapshot: EagerSnapshot,
    log_store: LogStoreRef,
    schema: SchemaRef,
    period: String,
    /// Add the new files to the period's (an amended verdict's newly valid
    /// rows) instead of replacing them.
    append: bool,
}

/// Whether the table asks nothing of a writer beyond writing Parquet files: the
/// features validate's tables are created with (`timestampNtz`, or the legacy
/// writer version 2 with neither an append-only flag nor a column invariant).
/// A table someone gave a CHECK constraint, generated columns, column mapping,
/// a change data feed, deletion vectors… is written by delta-rs, which honours them.
fn plain(snapshot: &EagerSnapshot) -> bool {
    let protocol = snapshot.protocol();
    match protocol.writer_features() {
        Some(features) => features
            .iter()
            .all(|f| *f == TableFeature::TimestampWithoutTimezone),
        None => {
            let append_only = snapshot
                .metadata()
                .configuration()
                .get("delta.appendOnly")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let invariants = snapshot
                .schema()
                .fields()
                .any(|f| f.metadata().contains_key("delta.invariants"));
            protocol.min_writer_version() <= 2 && !append_only && !invariants
        }
    }
}

impl Replace {
    pub fn fits(table: &DeltaTable, schema: &SchemaRef, period: &str) -> Option<Replace> {
        let state = table.snapshot().ok()?;
        let snapshot = state.snapshot().clone();
        if snapshot.metadata().partition_columns() != [PERIOD_COLUMN] || !plain(&snapshot) {
            return None;
        }
        // The table's schema as delta-rs reads it back; our rows must be the same
        // columns with the same Arrow types, so that no cast is skipped.
        let table_schema = snapshot.arrow_schema();
        let same = table_schema.fields().len() == schema.fields().len()
            && table_schema
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(t, s)| t.name() == s.name() && t.data_type() == s.data_type());
        same.then(|| Replace {
            snapshot,
            log_store: table.log_store(),
            schema: schema.clone(),
            period: period.to_owned(),
            append: false,
        })
    }

    /// The same write, appending to the period's files.
    pub fn appending(self) -> Replace {
        Replace {
            append: true,
            ..self
        }
    }

    /// Writes the batches received on `rx` into new files of the period and, once
    /// the channel ends without an error, commits them together with the removal
    /// of the period's current files. Returns the committed version. An error
    /// received (or a failed write) aborts the writer and commits nothing.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
        properties: WriterProperties,
        which: &'static str,
    ) -> Result<i64, DeltaTableError> {
        let Replace {
            snapshot,
            log_store,
            schema,
            period,
            append,
        } = self;
        let config = snapshot.table_configuration();
        let stats = WriterStatsConfig::from_config(config);
        let writer_config = WriterConfig::new(
            schema,
            vec![PERIOD_COLUMN.to_owned()],
            Some(properties),
            Some(config.table_properties().target_file_size()),
            None,
            stats.num_indexed_cols,
            stats.stats_columns,
        );
        let writer = DeltaWriter::new(log_store.object_store(None), writer_config);
        let writing = std::time::Instant::now();
        let adds = write_files(writer, &mut rx, &period).await?;
        let write_ms = writing.elapsed().as_millis() as u64;
        let removes: Vec<Action> = if append {
            Vec::new()
        } else {
            snapshot
                .file_views(log_store.as_ref(), None)
                .try_filter_map(|file| {
                    let ours = file.partition_values_map().get(PERIOD_COLUMN)
                        == Some(&Some(period.clone()));
                    futures::future::ready(Ok(
                        ours.then(|| Action::Remove(file.remove_action(true)))
                    ))
                })
                .try_collect()
                .await?
        };
        let (added, removed) = (adds.len(), removes.len());
        let actions = adds.into_iter().map(Action::Add).chain(removes).collect();
        let operation = DeltaOperation::Write {
            mode: if append {
                SaveMode::Append
            } else {
                SaveMode::Overwrite
            },
            partition_by: Some(vec![PERIOD_COLUMN.to_owned()]),
            predicate: (!append)
                .then(|| format!("{PERIOD_COLUMN} = '{}'", period.replace('\'', "''"))),
        };
        let properties = CommitProperties::default().with_metadata(HashMap::from([(
            match append {
                true => APPEND_INFO_KEY,
                false => COMMIT_INFO_KEY,
            }
            .to_owned(),
            serde_json::Value::String(period),
        )]));
        let commit = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(&snapshot), log_store, operation)
            .await?;
        tracing::debug!(
            table = which,
            added,
            removed,
            write_ms,
            version = commit.version(),
            "replaced the period's files in one Delta commit"
        );
        Ok(commit.version() as i64)
    }
}

/// The period's new files: every batch received on `rx` written, then the
/// writer closed. An error received (or a failed write) aborts the writer.
async fn write_files(
    mut writer: DeltaWriter,
    rx: &mut mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    period: &str,
) -> Result<Vec<deltalake::kernel::Add>, DeltaTableError> {
    let values = IndexMap::from([(
        PERIOD_COLUMN.to_owned(),
        delta_kernel::expressions::Scalar::String(period.to_owned()),
    )]);
    while let Some(batch) = rx.recv().await {
        let written = match batch {
            Ok(b) if b.num_rows() == 0 => Ok(()),
            Ok(b) => writer.write_partition(b, &values).await,
            Err(e) => Err(DeltaTableError::from(e)),
        };
        if let Err(e) = written {
            if let Err(abort) = writer.abort().await {
                tracing::warn!("could not abort the Delta write's uploads: {abort}");
            }
            return Err(e);
        }
    }
    writer.close().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(PERIOD_COLUMN, DataType::Utf8, true),
        ]))
    }

    /// A table as validate's first write creates it: delta-rs, partitioned by period.
    async fn created(dir: &std::path::Path, partitions: &[&str]) -> DeltaTable {
        let url = url::Url::from_directory_path(dir).unwrap();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["2025-01", "2025-01"])),
            ],
        )
        .unwrap();
        DeltaTable::try_from_url(url)
            .await
            .unwrap()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(partitions.iter().copied())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_plain_table_partitioned_by_period_with_our_schema_is_replaced_by_us() {
        let dir = tempfile::tempdir().unwrap();
        let table = created(dir.path(), &[PERIOD_COLUMN]).await;
        assert!(Replace::fits(&table, &schema(), "2025-01").is_some());

        // A schema edited since: delta-rs's write decides (and refuses).
        let edited = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new(PERIOD_COLUMN, DataType::Utf8, true),
        ]));
        assert!(Replace::fits(&table, &edited, "2025-01").is_none());

        // A CHECK constraint is enforced by delta-rs's writer, not by ours.
        let constrained = table
            .add_constraint()
            .with_constraint("positive", "id > 0")
            .await
            .unwrap();
        assert!(Replace::fits(&constrained, &schema(), "2025-01").is_none());

        // Not partitioned by the period.
        let dir = tempfile::tempdir().unwrap();
        let whole = created(dir.path(), &[]).await;
        assert!(Replace::fits(&whole, &schema(), "2025-01").is_none());
    }
}
