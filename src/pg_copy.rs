//! Binary COPY of a DataFusion result into a PostgreSQL table: whole Arrow
//! batches encoded by pgpq, sent in ~1 MiB chunks, inside the caller's transaction.

use bytes::BytesMut;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use futures::{SinkExt, StreamExt};
use pgpq::ArrowToPostgresBinaryEncoder;
use tokio_postgres::Transaction;

use crate::db::quote_ident;

/// Why a COPY failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Engine(#[from] DataFusionError),
    #[error("cannot encode the rows for COPY: {0}")]
    Encode(String),
}

/// COPYs every row of `df` into `table` (already quoted), naming the columns of
/// `df`'s schema; `started` runs once the COPY is open. Returns the rows copied.
pub async fn copy_dataframe(
    tx: &Transaction<'_>,
    table: &crate::db::Table,
    df: DataFrame,
    started: impl FnOnce(),
) -> Result<u64, CopyError> {
    let schema = df.schema().inner().clone();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .collect();
    let mut encoder = ArrowToPostgresBinaryEncoder::try_new(&schema)
        .map_err(|e| CopyError::Encode(e.to_string()))?;
    let mut stream = df.execute_stream().await?;
    let copy = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        columns.join(", ")
    );
    let sink = tx.copy_in(&copy).await?;
    futures::pin_mut!(sink);
    started();
    let mut buf = BytesMut::with_capacity(1 << 20);
    encoder
        .write_header(&mut buf)
        .map_err(|e| CopyError::Encode(e.to_string()))?;
    while let Some(batch) = stream.next().await {
        encoder
            .write_batch(&batch?, &mut buf)
            .map_err(|e| CopyError::Encode(e.to_string()))?;
        if buf.len() >= 1 << 20 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    encoder
        .write_footer(&mut buf)
        .map_err(|e| CopyError::Encode(e.to_string()))?;
    sink.send(buf.split().freeze()).await?;
    Ok(sink.as_mut().finish().await?)
}
