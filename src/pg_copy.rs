//! Binary COPY of a DataFusion result into a PostgreSQL table: whole Arrow
//! batches encoded by pgpq, sent in ~1 MiB chunks: one stream inside the caller's
//! transaction, or several at once over connections of their own.

use bytes::BytesMut;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::{SinkExt, StreamExt};
use pgpq::ArrowToPostgresBinaryEncoder;
use tokio_postgres::{Client, Transaction};

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
    let stream = df.execute_stream().await?;
    copy_stream(tx.client(), table, schema, stream, started).await
}

/// COPYs every row of `df` into `table` over `clients` at once, one COPY (and
/// so one transaction of its own) on each: the server's insert work runs on as
/// many backends. Each stream takes the next batch when it has sent its last,
/// so a stream whose backend runs slower (its core shared with others) takes
/// fewer and the streams end together; dealt in turn, the slowest one was
/// left alone with half the rows still to send. A failed stream leaves the
/// others' rows in `table`, so `table` must be one a failure throws away.
pub async fn copy_parallel<C: std::ops::Deref<Target = Client>>(
    clients: &[C],
    table: &crate::db::Table,
    df: DataFrame,
) -> Result<u64, CopyError> {
    let schema = df.schema().inner().clone();
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(df.execute_stream().await?));
    let copies = clients.iter().map(|client| {
        let next = futures::stream::unfold(shared.clone(), |rows| async move {
            let batch = rows.lock().await.next().await;
            batch.map(|b| (b, rows))
        });
        let stream: SendableRecordBatchStream = Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema.clone(), next),
        );
        copy_stream(client, table, schema.clone(), stream, || {})
    });
    Ok(futures::future::try_join_all(copies).await?.iter().sum())
}

pub async fn copy_stream(
    client: &Client,
    table: &crate::db::Table,
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
    started: impl FnOnce(),
) -> Result<u64, CopyError> {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| quote_ident(f.name()))
        .collect();
    let mut encoder = ArrowToPostgresBinaryEncoder::try_new(&schema)
        .map_err(|e| CopyError::Encode(e.to_string()))?;
    let copy = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        columns.join(", ")
    );
    let sink = client.copy_in(&copy).await?;
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
