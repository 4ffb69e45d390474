//! Landed files as a DataFusion table of text: one Utf8 column per declared
//! column, plus `_line` (the record's line in the file, header = line 1) and
//! `_shape` (why a row is malformed, or null).
//!
//! Every format becomes text so one rule plan serves them all: CSV and XLSX are
//! text already; JSONL values are written as their JSON text (strings unquoted);
//! Parquet values are formatted by arrow, dates and timestamps in the column's
//! declared `format` — except a Parquet column that already holds its declared
//! type ([`Spec::native`]), which keeps it: the rule functions take either.
//! Files are read on a blocking thread in batches, so memory stays bounded; each
//! scan reads the file again.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use calamine::{Data, DataType as _, Reader as _, Xlsx};
use chrono::format::{Item, StrftimeItems};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, Int64Builder, RecordBatch, StringBuilder, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::ChunkReader;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::streaming::StreamingTableExec;
use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{ColumnType, Dataset, FileFormat};
use crate::landed::{Landed, LandedFile};
use crate::remote::Described;

mod columnar;
mod delimited;
mod jsonl;
mod workbook;

use columnar::*;
use delimited::*;
use jsonl::*;
use workbook::*;

/// The input itself cannot be read as its format (a corrupt Parquet footer, a
/// broken XLSX archive, a CSV quote never closed): a property of the data, scored
/// as a format failure. Every other reader error (I/O, object store, memory) is
/// a runtime failure and never becomes a quality score.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(Malformed(e.to_string())))
}

/// The reason, when `e` (or anything it wraps) says the input is malformed,
/// here or in a remote executor.
pub fn malformed_reason(e: &DataFusionError) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(m) = err.downcast_ref::<Malformed>() {
            return Some(m.0.clone());
        }
        cur = err.source();
    }
    crate::remote::marked(MALFORMED, &e.to_string())
}

/// The sha256 of every complete read of the file, in hex: what validate read is
/// checked against what ingest fingerprinted.
pub type Digests = Arc<Mutex<Vec<String>>>;

/// A `Read` that hashes what passes through it.
struct HashingRead<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// sha256 on a thread of its own, fed a copy of each MiB read: on the reader's
/// thread it was a third of that thread's work in a key pre-pass, which it paces.
struct Hasher {
    pending: Vec<u8>,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<String>>,
}

impl Hasher {
    const CHUNK: usize = 1 << 20;

    fn new() -> Hasher {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || {
            let mut sha = Sha256::new();
            received.iter().for_each(|chunk| sha.update(&chunk));
            hex::encode(sha.finalize())
        });
        Hasher {
            pending: Vec::with_capacity(Self::CHUNK),
            chunks: Some(chunks),
            thread: Some(thread),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= Self::CHUNK {
            self.send();
        }
    }

    fn send(&mut self) {
        let full = std::mem::replace(&mut self.pending, Vec::with_capacity(Self::CHUNK));
        if let Some(chunks) = &self.chunks {
            // The thread only stops when the channel closes.
            let _ = chunks.send(full);
        }
    }

    /// The hex sha256 of every byte given.
    fn finish(mut self) -> String {
        self.send();
        self.chunks = None;
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("hashing does not panic")
    }
}

/// The hex sha256 of a local file, read by position (the file's offset belongs
/// to the Parquet reader using it at the same time); None once `stop` is set.
fn sha256_at(
    file: &std::fs::File,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let mut sha = Sha256::new();
    let mut buf = vec![0; Hasher::CHUNK];
    let mut at = 0;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            return Ok(Some(hex::encode(sha.finalize())));
        }
        sha.update(&buf[..n]);
        at += n as u64;
    }
}

/// A typed column as the text the rules parse, as a Parquet delivery's values
/// are read: dates and timestamps in `format` (the column's, see [`Spec`]).
pub(in crate::validate) fn text_of(
    array: &ArrayRef,
    format: Option<&str>,
) -> Result<ArrayRef, DataFusionError> {
    let items = format.and_then(|f| StrftimeItems::new(f).parse_to_owned().ok());
    let mut builder = StringBuilder::with_capacity(array.len(), array.len() * 8);
    append_text(array, format, items.as_deref(), &mut builder)?;
    Ok(Arc::new(builder.finish()))
}

/// Rows per batch handed to DataFusion.
pub const BATCH_ROWS: usize = 8192;
pub const LINE: &str = "_line";
pub use crate::rules::SHAPE;

/// How to read one file for one dataset.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub format: FileFormat,
    pub delimiter: u8,
    pub quote: u8,
    pub sheet: Option<String>,
    /// Declared columns, in order.
    pub columns: Vec<String>,
    /// For each declared column: the format its native dates/timestamps are
    /// written in (Parquet, XLSX), so the text parses with the column's rule.
    pub temporal_formats: Vec<Option<String>>,
    /// For each declared column: its index among the file's columns, if present
    /// with a usable type.
    pub positions: Vec<Option<usize>>,
    /// For each declared column: the Arrow type it is read as when the file
    /// holds it natively (see [`ColumnType::native`]); None for text.
    #[serde(default)]
    pub native: Vec<Option<DataType>>,
}

impl Spec {
    /// `types`: the Arrow type of each header column, when the file has types
    /// (Parquet); empty otherwise.
    pub fn new(ds: &Dataset, format: FileFormat, header: &[String], types: &[DataType]) -> Spec {
        let columns: Vec<String> = ds.columns.keys().cloned().collect();
        let temporal_formats = ds
            .columns
            .values()
            .map(|c| match c.ty {
                ColumnType::Date => Some(c.format.clone().unwrap_or_else(|| "%Y-%m-%d".into())),
                ColumnType::Timestamp => Some(
                    c.format
                        .clone()
                        .unwrap_or_else(|| "%Y-%m-%dT%H:%M:%S%.f".into()),
                ),
                _ => None,
            })
            .collect();
        let positions: Vec<Option<usize>> = columns
            .iter()
            .map(|c| header.iter().position(|h| h == c))
            .collect();
        let native = ds
            .columns
            .values()
            .zip(&positions)
            .map(|(c, pos)| {
                let actual = types.get((*pos)?)?;
                c.ty.native(actual).then(|| c.ty.arrow_type())
            })
            .collect();
        Spec {
            format,
            delimiter: ds.delimiter as u8,
            quote: ds.quote as u8,
            sheet: ds.sheet.clone(),
            columns,
            temporal_formats,
            positions,
            native,
        }
    }

    fn native_type(&self, column: usize) -> Option<DataType> {
        self.native.get(column).cloned().flatten()
    }

    pub fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(c, self.native_type(i).unwrap_or(DataType::Utf8), true))
            .collect();
        fields.push(Field::new(LINE, DataType::Int64, false));
        fields.push(Field::new(SHAPE, DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }
}

/// A table whose every scan reads the file from the start. Columns a scan does
/// not project are skipped while parsing (the uniqueness pre-pass reads keys only).
pub fn table(
    landed: &Landed,
    file: &LandedFile,
    spec: Spec,
    digests: Digests,
    expected_sha256: Option<String>,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    Ok(Arc::new(FileTable {
        schema: spec.schema(),
        store: landed.store(),
        file: file.clone(),
        scan: FileScan {
            landed_dir: landed.display.clone(),
            location: file.location.to_string(),
            size: file.size,
            spec,
            expected_sha256,
        },
        digests,
        remote: false,
    }))
}

/// A scan of the landed file as data: what another process (a Ballista
/// scheduler or executor, src/cluster.rs) needs to read it with its own
/// credentials. The reader there checks the digest of every complete read
/// against the ingested sha256 itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileScan {
    /// `s3://bucket/prefix` or the local folder, as [`Landed::open`] takes it.
    pub landed_dir: String,
    /// The file's location in that store.
    pub location: String,
    pub size: u64,
    pub spec: Spec,
    pub expected_sha256: Option<String>,
}

impl FileScan {
    fn open(&self) -> Result<(Arc<dyn ObjectStore>, LandedFile), DataFusionError> {
        let landed =
            Landed::open(&self.landed_dir).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let location = ObjPath::parse(&self.location)
            .unwrap_or_else(|_| ObjPath::from_iter(self.location.split('/')));
        let name = location.filename().unwrap_or_default().to_owned();
        let file = LandedFile {
            uri: format!("{}/{}", landed.display, name),
            location,
            name,
            size: self.size,
            modified: None,
            window: None,
            acq_date: None,
        };
        Ok((landed.store(), file))
    }
}

/// The description of a file table, for a codec; None for any other table.
pub fn describe(table: &dyn TableProvider) -> Option<&FileScan> {
    table.downcast_ref::<FileTable>().map(|t| &t.scan)
}

/// The store, file and reading spec of a CSV file table read in this process
/// (None for any other table): what the key pre-pass's ranged reader needs.
pub(super) fn local_csv(
    table: &dyn TableProvider,
) -> Option<(Arc<dyn ObjectStore>, LandedFile, Spec)> {
    let t = table.downcast_ref::<FileTable>()?;
    (t.scan.spec.format == FileFormat::Csv && !t.remote)
        .then(|| (t.store.clone(), t.file.clone(), t.scan.spec.clone()))
}

/// The file table a description names, opened in this process. Its scans plan
/// as [`Described`] so they can travel on to the executors.
pub fn remote_table(scan: FileScan) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    let (store, file) = scan.open()?;
    Ok(Arc::new(FileTable {
        schema: scan.spec.schema(),
        store,
        file,
        scan,
        digests: Digests::default(),
        remote: true,
    }))
}

/// What a remote scan of the file carries: the table, and what the scan kept.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RemoteFileScan {
    scan: FileScan,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
}

/// The scan a [`Described`] of kind `file` describes, built in this process.
pub fn remote_exec(json: &str) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let remote: RemoteFileScan = serde_json::from_str(json).map_err(crate::remote::json_error)?;
    let (store, file) = remote.scan.open()?;
    let schema = remote.scan.spec.schema();
    file_exec(
        FilePartition {
            schema,
            store,
            file,
            spec: remote.scan.spec,
            digests: Digests::default(),
            verify: Some(remote.scan.expected_sha256),
        },
        remote.projection.as_ref(),
        remote.limit,
    )
}

fn file_exec(
    part: FilePartition,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let schema = part.schema.clone();
    Ok(Arc::new(StreamingTableExec::try_new(
        schema,
        vec![Arc::new(part)],
        projection,
        Vec::new(),
        false,
        limit,
    )?))
}

#[derive(Debug)]
struct FileTable {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    file: LandedFile,
    scan: FileScan,
    digests: Digests,
    /// Decoded from a description: scans plan as [`Described`].
    remote: bool,
}

#[async_trait::async_trait]
impl TableProvider for FileTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let mut spec = self.scan.spec.clone();
        if let Some(wanted) = projection {
            for (i, pos) in spec.positions.iter_mut().enumerate() {
                if !wanted.contains(&i) {
                    *pos = None;
                }
            }
        }
        let part = FilePartition {
            schema: self.schema.clone(),
            store: self.store.clone(),
            file: self.file.clone(),
            spec: spec.clone(),
            digests: self.digests.clone(),
            verify: None,
        };
        let exec = file_exec(part, projection, limit)?;
        if !self.remote {
            return Ok(exec);
        }
        let remote = RemoteFileScan {
            scan: FileScan {
                spec,
                ..self.scan.clone()
            },
            projection: projection.cloned(),
            limit,
        };
        let json = serde_json::to_string(&remote).map_err(crate::remote::json_error)?;
        Ok(Described::new(exec, "file", json))
    }
}

#[derive(Debug)]
struct FilePartition {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    file: LandedFile,
    spec: Spec,
    digests: Digests,
    /// In an executor of another process: the ingested sha256 every complete
    /// read must hash to, and errors marked so their kind survives as text.
    verify: Option<Option<String>>,
}

impl PartitionStream for FilePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel::<Result<RecordBatch, DataFusionError>>(2);
        let (store, file, spec, schema, digests) = (
            self.store.clone(),
            self.file.clone(),
            self.spec.clone(),
            self.schema.clone(),
            self.digests.clone(),
        );
        let verify = self.verify.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let sink = Sink { tx: &tx, schema };
            let read = read_file(&handle, &store, &file, &spec, &sink);
            let failure = match (read, verify) {
                // Recorded before the stream ends, so the consumer sees it at its end.
                (Ok(Some(digest)), None) => {
                    digests.lock().expect("not poisoned").push(digest);
                    None
                }
                (Ok(Some(digest)), Some(Some(want))) if digest != want => Some(
                    DataFusionError::Execution(crate::remote::mark(CHANGED, &digest)),
                ),
                (Ok(_), _) => None,
                (Err(e), None) => Some(e),
                (Err(e), Some(_)) => Some(match malformed_reason(&e) {
                    Some(reason) => {
                        DataFusionError::Execution(crate::remote::mark(MALFORMED, &reason))
                    }
                    None => e,
                }),
            };
            if let Some(e) = failure {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// The marks of a remote read's errors (see [`crate::remote::mark`]).
const MALFORMED: &str = "malformed";
const CHANGED: &str = "changed";

/// The digest of a remote read that differs from the ingested one.
pub fn remote_mismatch(e: &DataFusionError) -> Option<String> {
    crate::remote::marked(CHANGED, &e.to_string())
}

/// Where the reader thread puts its batches.
struct Sink<'a> {
    tx: &'a mpsc::Sender<Result<RecordBatch, DataFusionError>>,
    schema: SchemaRef,
}

/// Column builders for one batch; None for a column the reader never fills (a
/// scan's projection left it out, or the file lacks it): sent as all nulls.
struct Batch {
    values: Vec<Option<StringBuilder>>,
    line: Int64Builder,
    shape: StringBuilder,
    rows: usize,
}

impl Batch {
    fn new(columns: usize) -> Batch {
        Batch::with(vec![true; columns])
    }

    /// Builders only for the columns found at a position of the file.
    fn positioned(positions: &[Option<usize>]) -> Batch {
        Batch::with(positions.iter().map(Option::is_some).collect())
    }

    fn with(filled: Vec<bool>) -> Batch {
        Batch {
            values: filled
                .into_iter()
                .map(|f| f.then(|| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8)))
                .collect(),
            line: Int64Builder::with_capacity(BATCH_ROWS),
            shape: StringBuilder::new(),
            rows: 0,
        }
    }

    fn end_row(&mut self, line: u64, shape: Option<String>) {
        self.line.append_value(line as i64);
        self.shape.append_option(shape);
        self.rows += 1;
    }

    /// Sends the batch when full (or when `force`); false when the consumer is gone.
    fn flush(&mut self, sink: &Sink, force: bool) -> Result<bool, DataFusionError> {
        if self.rows == 0 || (!force && self.rows < BATCH_ROWS) {
            return Ok(true);
        }
        // A finished builder starts again empty and grew by doubling (a copy
        // each time): the next batch's builders get room for this one's bytes.
        let mut arrays: Vec<ArrayRef> = self
            .values
            .iter_mut()
            .map(|b| match b {
                Some(b) => {
                    let bytes = b.values_slice().len();
                    let mut full = std::mem::replace(
                        b,
                        StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8),
                    );
                    Arc::new(full.finish()) as ArrayRef
                }
                None => new_null_array(&DataType::Utf8, self.rows),
            })
            .collect();
        let mut line = std::mem::replace(&mut self.line, Int64Builder::with_capacity(BATCH_ROWS));
        arrays.push(Arc::new(line.finish()));
        arrays.push(Arc::new(self.shape.finish()));
        self.rows = 0;
        let batch = RecordBatch::try_new(sink.schema.clone(), arrays)?;
        Ok(sink.tx.blocking_send(Ok(batch)).is_ok())
    }
}

fn ext(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Reads the whole file into batches; the sha256 of its bytes when it was read
/// to the end (None when the consumer stopped early).
fn read_file(
    handle: &tokio::runtime::Handle,
    store: &Arc<dyn ObjectStore>,
    file: &LandedFile,
    spec: &Spec,
    sink: &Sink,
) -> Result<Option<String>, DataFusionError> {
    let got = handle.block_on(store.get(&file.location)).map_err(ext)?;
    // A local Parquet file is read in place, row group by row group, and hashed
    // by a second thread meanwhile (a Parquet reader seeks, so the hash cannot
    // ride along with it).
    let got = match (spec.format, got.payload) {
        (FileFormat::Parquet, GetResultPayload::File(f, _)) => {
            return read_local_parquet(f, spec, sink);
        }
        // From S3, by ranges: memory holds what the reader asks for (the footer,
        // a row group's column chunks), never the whole file; then one streamed
        // pass hashes it. Every request is pinned to the version first seen.
        (FileFormat::Parquet, GetResultPayload::Stream(_)) => {
            let ranged = RangedObject {
                handle: handle.clone(),
                store: store.clone(),
                location: file.location.clone(),
                size: file.size,
                etag: got.meta.e_tag.clone(),
                failure: Arc::default(),
            };
            return read_ranged_parquet(ranged, spec, sink);
        }
        (_, payload) => payload,
    };
    let reader: Box<dyn Read + Send> = match got {
        GetResultPayload::File(f, _) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
        GetResultPayload::Stream(s) => Box::new(StreamRead {
            handle: handle.clone(),
            stream: s,
            chunk: Bytes::new(),
        }),
    };
    let mut hashing = HashingRead {
        inner: reader,
        hasher: Hasher::new(),
    };
    let complete = match spec.format {
        FileFormat::Csv => read_csv(&mut hashing, spec, sink)?,
        FileFormat::Jsonl => read_jsonl(&mut hashing, spec, sink)?,
        // Reached for a payload that is neither a local file nor a stream.
        FileFormat::Parquet => read_parquet(all_bytes(&mut hashing)?, spec, sink)?,
        // calamine needs the whole archive: held in memory, capped by
        // limits.xlsx_max_uncompressed_bytes.
        FileFormat::Xlsx => read_xlsx(all_bytes(&mut hashing)?, spec, sink)?,
    };
    if !complete {
        return Ok(None);
    }
    // Whatever the parser left unread (after the last record) still counts.
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(Some(hashing.hasher.finish()))
}

fn all_bytes(r: &mut impl Read) -> Result<Bytes, DataFusionError> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// A blocking `Read` over an object_store byte stream.
struct StreamRead {
    handle: tokio::runtime::Handle,
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// A field's bytes as text, bytes that are not UTF-8 replaced (U+FFFD).
pub(super) fn append_bytes(builder: &mut StringBuilder, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => builder.append_value(s),
        Err(_) => builder.append_value(String::from_utf8_lossy(bytes)),
    }
}

/// One rule for every text format: a row whose every field is empty or
/// whitespace (a blank line, `,,,`, an empty spreadsheet row) carries no data and
/// is skipped; the rows after it keep their true line numbers.
pub(super) fn is_blank(field: &[u8]) -> bool {
    field.iter().all(u8::is_ascii_whitespace)
}

/// A table fed by a channel: lets one pass over the file feed two Delta writes.
pub fn channel_table(
    schema: SchemaRef,
) -> (
    mpsc::Sender<Result<RecordBatch, DataFusionError>>,
    Arc<dyn TableProvider>,
) {
    let (tx, rx) = mpsc::channel(2);
    let part = ChannelPartition {
        schema: schema.clone(),
        rx: Mutex::new(Some(rx)),
    };
    let table = StreamingTable::try_new(schema, vec![Arc::new(part)]).expect("schema matches");
    (tx, Arc::new(table))
}

#[derive(Debug)]
struct ChannelPartition {
    schema: SchemaRef,
    rx: Mutex<Option<mpsc::Receiver<Result<RecordBatch, DataFusionError>>>>,
}

impl PartitionStream for ChannelPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().expect("not poisoned").take();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            rx.recv().await.map(|b| (b, Some(rx)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    use proptest::prelude::*;

    /// The threaded hashers give the sha256 of exactly the bytes given, across
    /// chunk boundaries and in reads of any size, and a stopped one gives none.
    #[test]
    fn background_hashes_are_the_sha256_of_the_bytes() {
        let expected = |data: &[u8]| hex::encode(Sha256::digest(data));
        for len in [
            0,
            1,
            Hasher::CHUNK - 1,
            Hasher::CHUNK,
            Hasher::CHUNK + 1,
            3 * Hasher::CHUNK + 12345,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut hasher = Hasher::new();
            data.chunks(8191).for_each(|c| hasher.update(c));
            assert_eq!(hasher.finish(), expected(&data), "{len} bytes");

            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &data).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let go = std::sync::atomic::AtomicBool::new(false);
            assert_eq!(sha256_at(&file, &go).unwrap(), Some(expected(&data)));
            let stop = std::sync::atomic::AtomicBool::new(true);
            assert_eq!(sha256_at(&file, &stop).unwrap(), None);
        }
    }

    /// A row as read: its line, its values, its shape note.
    type Row = (i64, Vec<Option<String>>, Option<String>);

    /// A reader handing out at most 3 bytes per call, so line ends and quotes fall
    /// across reads.
    pub(super) struct Trickle<'a>(pub(super) &'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Runs the CSV or JSONL reader over `bytes` for columns c0..cN.
    fn read_all(format: FileFormat, bytes: &[u8], n: usize) -> Result<Vec<Row>, DataFusionError> {
        read_from(format, bytes, n)
    }

    fn read_from(
        format: FileFormat,
        input: impl Read,
        n: usize,
    ) -> Result<Vec<Row>, DataFusionError> {
        let spec = Spec {
            format,
            delimiter: b',',
            quote: b'"',
            sheet: None,
            columns: (0..n).map(|i| format!("c{i}")).collect(),
            temporal_formats: vec![None; n],
            positions: (0..n).map(Some).collect(),
            native: vec![None; n],
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let sink = Sink {
            tx: &tx,
            schema: spec.schema(),
        };
        match format {
            FileFormat::Csv => read_csv(input, &spec, &sink)?,
            _ => read_jsonl(input, &spec, &sink)?,
        };
        drop(tx);
        let mut rows = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            let batch = batch?;
            let lines = batch.column(n).as_primitive::<Int64Type>();
            let shapes = batch.column(n + 1).as_string::<i32>();
            for r in 0..batch.num_rows() {
                let values = (0..n)
                    .map(|c| {
                        let a = batch.column(c).as_string::<i32>();
                        (!a.is_null(r)).then(|| a.value(r).to_owned())
                    })
                    .collect();
                let shape = (!shapes.is_null(r)).then(|| shapes.value(r).to_owned());
                rows.push((lines.value(r), values, shape));
            }
        }
        Ok(rows)
    }

    /// A line break or a blank line between records, as deliveries have them.
    fn gap() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(""), Just("\n"), Just("\r\n"), Just("\n\n")]
    }

    /// Each CSV field is decoded on its own: text valid as a whole record whose
    /// field splits a character gives replacement characters in both fields
    /// (not the character), and valid fields keep every character.
    #[test]
    fn csv_fields_are_utf8_each_on_their_own() {
        let csv = b"a,b,c\nx\xc3,\xa9y,\xc3\xa9\n\xff,ok,\xc3\xa9t\xc3\xa9\n";
        let rows = read_all(FileFormat::Csv, csv, 3).unwrap();
        let values: Vec<Vec<Option<String>>> = rows.into_iter().map(|r| r.1).collect();
        let v = |s: &str| Some(s.to_owned());
        assert_eq!(
            values,
            [
                vec![v("x\u{fffd}"), v("\u{fffd}y"), v("é")],
                vec![v("\u{fffd}"), v("ok"), v("été")],
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Arbitrary bytes: the readers return rows or an error, never
        /// panic; each row has every column and rows come in line order;
        /// and reading a few bytes at a time gives the same answer.
        #[test]
        fn csv_and_jsonl_readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for format in [FileFormat::Csv, FileFormat::Jsonl] {
                let whole = read_all(format, &bytes, 3);
                let trickled = read_from(format, Trickle(&bytes), 3);
                match (whole, trickled) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(&a, &b);
                        prop_assert!(a.iter().all(|r| r.1.len() == 3));
                        prop_assert!(a.windows(2).all(|w| w[0].0 <= w[1].0), "{:?}", a);
                    }
                    (Err(_), Err(_)) => {}
                    (a, b) => prop_assert!(false, "whole {:?} but trickled {:?}", a.is_ok(), b.is_ok()),
                }
            }
        }

        /// Any well-quoted CSV (quotes, line breaks and CRs inside values, LF or
        /// CRLF line ends, blank lines between records) reads back every
        /// non-blank record with its values and the true line it starts on.
        #[test]
        fn csv_rows_keep_their_values_and_true_lines(
            records in proptest::collection::vec(
                (proptest::collection::vec("[a-z \"\n\r]{0,5}", 3), gap()), 0..25),
            ending in 0u8..3,
        ) {
            let (end, terminator) = match ending {
                0 => ("\n", csv::Terminator::Any(b'\n')),
                1 => ("\r\n", csv::Terminator::CRLF),
                _ => ("\r", csv::Terminator::Any(b'\r')),
            };
            let mut doc = format!("c0,c1,c2{end}");
            let mut expected = Vec::new();
            for (fields, gap) in &records {
                // With lone-CR line ends, blank lines are CRs too.
                doc.push_str(&if ending == 2 { gap.replace('\n', "\r") } else { gap.to_string() });
                let line = 1 + line_breaks(doc.as_bytes()) as i64;
                let mut w = csv::WriterBuilder::new()
                    .terminator(terminator)
                    .from_writer(Vec::new());
                w.write_record(fields).unwrap();
                doc.push_str(&String::from_utf8(w.into_inner().unwrap()).unwrap());
                if !fields.iter().all(|f| is_blank(f.as_bytes())) {
                    expected.push((line, fields.iter().map(|f| Some(f.clone())).collect::<Vec<_>>(), None));
                }
            }
            let rows = read_all(FileFormat::Csv, doc.as_bytes(), 3);
            prop_assert!(rows.is_ok(), "{doc:?}: {rows:?}");
            prop_assert_eq!(rows.unwrap(), expected.clone(), "{:?}", doc);
            // The same when every read returns a few bytes.
            let trickled = read_from(FileFormat::Csv, Trickle(doc.as_bytes()), 3);
            prop_assert_eq!(trickled.unwrap(), expected, "{:?} read 3 bytes at a time", doc);
        }

        /// JSONL: objects between blank or whitespace lines, LF or CRLF, keep
        /// their values and line numbers.
        #[test]
        fn jsonl_rows_keep_their_values_and_true_lines(
            records in proptest::collection::vec(("[a-z \"\\\n]{0,5}", gap()), 0..25),
            crlf in any::<bool>(),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut doc = String::new();
            let mut expected = Vec::new();
            for (value, gap) in &records {
                doc.push_str(gap);
                let line = 1 + doc.matches('\n').count() as i64;
                doc.push_str(&format!("{{\"c0\":{}}}{end}", serde_json::json!(value)));
                expected.push((line, vec![Some(value.clone()), None, None], None));
            }
            let rows = read_all(FileFormat::Jsonl, doc.as_bytes(), 3);
            prop_assert!(rows.is_ok(), "{doc:?}: {rows:?}");
            prop_assert_eq!(rows.unwrap(), expected, "{:?}", doc);
        }
    }

    #[test]
    fn a_jsonl_key_written_twice_is_a_row_error_naming_the_key() {
        let doc = b"{\"c0\":\"1\",\"c0\":\"2\",\"c1\":\"A\"}\n{\"c0\":\"3\",\"c1\":\"B\"}\n";
        let rows = read_all(FileFormat::Jsonl, doc, 2).unwrap();
        let (line, values, shape) = &rows[0];
        // The values are read (the last one of a key) so their own rules
        // are checked too; the row is quarantined either way.
        assert_eq!(
            (*line, values.clone()),
            (1, vec![Some("2".into()), Some("A".into())])
        );
        assert!(
            shape
                .as_deref()
                .is_some_and(|s| s.contains("`c0` is written twice")),
            "{shape:?}"
        );
        assert_eq!(rows[1], (2, vec![Some("3".into()), Some("B".into())], None));
    }

    #[test]
    fn xlsx_cells_read_like_csv_text() {
        assert_eq!(cell_text(&Data::Float(3.0), None).as_deref(), Some("3"));
        assert_eq!(cell_text(&Data::Float(2.5), None).as_deref(), Some("2.5"));
        assert_eq!(cell_text(&Data::Empty, None), None);
        assert_eq!(cell_text(&Data::Bool(true), None).as_deref(), Some("true"));
    }
}
