//! The processed set of an incremental dataset (`meta.processed_keys`, the
//! seed's `validation_status` manifest): which keys earlier nights validated,
//! with the hash of the values they had; recording a night's keys in the
//! validation's own transaction; and exporting the set as Parquet.
//!
//! A night's rows are joined with the keys of *earlier* nights only, so a re-run
//! of a night sees the same rows as its first run and replaces that night's keys.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tokio_postgres::{Client, Transaction};

use crate::db::Table;

/// Columns of the plan that carry a row's key, the hash of its values, and
/// whether an earlier night processed it (see validate's plan).
pub const PK: &str = "_pk";
pub const ROW_HASH: &str = "_row_hash";
pub const SKIP: &str = "_skip";
/// The processed keys' columns as the plan joins them.
pub const SEEN_PK: &str = "__seen_pk";
pub const SEEN_HASH: &str = "__seen_hash";

/// Why the processed set could not be read, written or exported.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{step}")]
    Db {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "dataset {dataset} is incremental and night {latest} was processed already; night {period} can no longer be validated (nights are validated in order, so each key belongs to one night)"
    )]
    OutOfOrder {
        dataset: String,
        period: String,
        latest: String,
    },
    #[error("cannot build the processed keys")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Copy(#[from] crate::pg_copy::CopyError),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn db(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ManifestError {
    move |source| ManifestError::Db { step, source }
}

fn seen_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SEEN_PK, DataType::Utf8, false),
        Field::new(SEEN_HASH, DataType::Utf8, false),
    ]))
}

/// The keys nights before `period` processed, each with the hash of its latest
/// values, as a table to join. Refuses a night older than one already processed.
pub async fn seen(client: &Client, dataset: &str, period: &str) -> Result<MemTable, ManifestError> {
    let latest: Option<String> = client
        .query_one(
            "SELECT max(period) FROM meta.processed_keys WHERE dataset = $1",
            &[&dataset],
        )
        .await
        .map_err(db("read meta.processed_keys"))?
        .get(0);
    if let Some(latest) = latest.filter(|l| l.as_str() > period) {
        return Err(ManifestError::OutOfOrder {
            dataset: dataset.to_owned(),
            period: period.to_owned(),
            latest,
        });
    }
    let rows = client
        .query(
            "SELECT DISTINCT ON (pk) pk, row_hash FROM meta.processed_keys
              WHERE dataset = $1 AND period < $2
              ORDER BY pk, period DESC",
            &[&dataset, &period],
        )
        .await
        .map_err(db("read meta.processed_keys"))?;
    let pks: StringArray = rows.iter().map(|r| Some(r.get::<_, String>(0))).collect();
    let hashes: StringArray = rows.iter().map(|r| Some(r.get::<_, String>(1))).collect();
    let schema = seen_schema();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(pks), Arc::new(hashes)])?;
    Ok(MemTable::try_new(schema, vec![vec![batch]]).expect("schema matches"))
}

/// A night's processed keys, gathered while its rows stream to the Delta writers.
#[derive(Debug, Default)]
pub struct Collector {
    batches: Vec<RecordBatch>,
    /// Rows skipped because an earlier night processed their key.
    pub skipped: u64,
}

fn night_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk", DataType::Utf8, false),
        Field::new("row_hash", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("errors", DataType::Utf8, true),
        Field::new("line", DataType::Int64, true),
    ]))
}

impl Collector {
    /// Drops the rows an earlier night processed (counting them) and returns the rest.
    pub fn take_new(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ManifestError> {
        let Some(skip) = batch.column_by_name(SKIP) else {
            return Ok(batch.clone());
        };
        let skip = skip
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("_skip is boolean");
        self.skipped += skip.true_count() as u64;
        let keep = datafusion::arrow::compute::not(skip)?;
        Ok(datafusion::arrow::compute::filter_record_batch(
            batch, &keep,
        )?)
    }

    /// Records the keys of `batch`'s rows, `bad` marking the rejected ones;
    /// rows without a key (a key column empty or not of its type) are not
    /// recorded: they are rejected again on every night that delivers them.
    pub fn add(&mut self, batch: &RecordBatch, bad: &BooleanArray) -> Result<(), ManifestError> {
        let (Some(pk), Some(hash)) = (batch.column_by_name(PK), batch.column_by_name(ROW_HASH))
        else {
            return Ok(());
        };
        let keyed = datafusion::arrow::compute::is_not_null(pk)?;
        let status: StringArray = bad
            .iter()
            .map(|b| Some(if b == Some(true) { "rejected" } else { "valid" }))
            .collect();
        let errors: ArrayRef = match batch.column_by_name("_errors") {
            Some(errors) => {
                let shown = ArrayFormatter::try_new(errors.as_ref(), &FormatOptions::default())?;
                let mut text = StringBuilder::new();
                for i in 0..errors.len() {
                    if bad.value(i) && errors.is_valid(i) {
                        text.append_value(shown.value(i).to_string());
                    } else {
                        text.append_null();
                    }
                }
                Arc::new(text.finish())
            }
            None => Arc::new(StringArray::new_null(batch.num_rows())),
        };
        let line: ArrayRef = match batch.column_by_name("_line") {
            Some(line) => cast(line, &DataType::Int64)?,
            None => Arc::new(Int64Array::new_null(batch.num_rows())),
        };
        let columns: Vec<ArrayRef> = vec![
            cast(pk, &DataType::Utf8)?,
            cast(hash, &DataType::Utf8)?,
            Arc::new(status),
            errors,
            line,
        ];
        let columns = columns
            .iter()
            .map(|c| filter(c, &keyed))
            .collect::<Result<Vec<_>, _>>()?;
        self.batches
            .push(RecordBatch::try_new(night_schema(), columns)?);
        Ok(())
    }

    /// Replaces the night's keys with the collected ones, inside the validation's
    /// transaction (a key seen twice in one snapshot is recorded once).
    pub async fn write(
        self,
        tx: &Transaction<'_>,
        dataset: &str,
        period: &str,
        ingestion_id: i64,
        validation_id: i64,
    ) -> Result<(), ManifestError> {
        tx.execute(
            "DELETE FROM meta.processed_keys WHERE dataset = $1 AND period = $2",
            &[&dataset, &period],
        )
        .await
        .map_err(db("replace the night in meta.processed_keys"))?;
        tx.batch_execute(
            "CREATE TEMP TABLE processed_night
                (pk text, row_hash text, status text, errors text, line bigint) ON COMMIT DROP",
        )
        .await
        .map_err(db("create the night's key table"))?;
        // The night's batches as they are: no session needed to stream them.
        let schema = night_schema();
        let batches = futures::stream::iter(self.batches.into_iter().map(Ok));
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema.clone(), batches));
        let night = Table::new("pg_temp", "processed_night");
        crate::pg_copy::copy_stream(tx.client(), &night, schema, stream, || {}).await?;
        tx.execute(
            "INSERT INTO meta.processed_keys
                    (dataset, period, pk, row_hash, status, errors, line, ingestion_id, validation_id)
             SELECT DISTINCT ON (pk) $1, $2, pk, row_hash, status, errors, line, $3, $4
               FROM processed_night
              ORDER BY pk, (status = 'rejected') DESC, line",
            &[&dataset, &period, &ingestion_id, &validation_id],
        )
        .await
        .map_err(db("write meta.processed_keys"))?;
        Ok(())
    }
}

/// `pipeline manifest --dataset D --out FILE.parquet`: the processed set as
/// Parquet (dataset, period, pk, row_hash, status, errors, line, file ids,
/// validated_at), for the tools that read the seed's manifest. Returns the rows.
pub async fn export(client: &Client, dataset: &str, out: &Path) -> Result<u64, ManifestError> {
    let rows = client
        .query(
            "SELECT period, pk, row_hash, status, errors, line, ingestion_id, validation_id,
                    (extract(epoch FROM validated_at) * 1000000)::bigint
               FROM meta.processed_keys WHERE dataset = $1 ORDER BY period, pk",
            &[&dataset],
        )
        .await
        .map_err(db("read meta.processed_keys"))?;
    let text = |i: usize| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| r.get::<_, Option<String>>(i))
                .collect::<StringArray>(),
        )
    };
    let int = |i: usize| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| r.get::<_, Option<i64>>(i))
                .collect::<Int64Array>(),
        )
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("period", DataType::Utf8, false),
        Field::new("pk", DataType::Utf8, false),
        Field::new("row_hash", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("errors", DataType::Utf8, true),
        Field::new("line", DataType::Int64, true),
        Field::new("ingestion_id", DataType::Int64, false),
        Field::new("validation_id", DataType::Int64, false),
        Field::new(
            "validated_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let validated_at = rows
        .iter()
        .map(|r| Some(r.get::<_, i64>(8)))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![dataset; rows.len()])),
            text(0),
            text(1),
            text(2),
            text(3),
            text(4),
            int(5),
            int(6),
            int(7),
            Arc::new(validated_at),
        ],
    )?;
    let path = out.display().to_string();
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| ManifestError::Write {
        path: path.clone(),
        source: e,
    };
    let tmp = out.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| fail(e.into()))?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None)
        .map_err(|e| fail(e.into()))?;
    writer.write(&batch).map_err(|e| fail(e.into()))?;
    writer.close().map_err(|e| fail(e.into()))?;
    std::fs::rename(&tmp, out).map_err(|e| fail(e.into()))?;
    Ok(rows.len() as u64)
}
