//! Parquet: only the declared columns decoded, each value as text; a local
//! file read by positioned reads (`RangedObject`).

use super::*;

/// A Parquet file in an object store, read by byte ranges on demand, every
/// request pinned to the object's ETag (a rewrite mid-read fails, it never mixes
/// two versions).
#[derive(Clone)]
pub(super) struct RangedObject {
    pub(super) handle: tokio::runtime::Handle,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) location: object_store::path::Path,
    pub(super) size: u64,
    pub(super) etag: Option<String>,
    /// The first store error, so it is reported as such rather than as a
    /// malformed file by the Parquet reader it passes through.
    pub(super) failure: Arc<Mutex<Option<object_store::Error>>>,
}

/// How much a `get_read` fetches at a time (page headers are small).
pub(super) const READ_AHEAD: u64 = 64 << 10;

impl RangedObject {
    pub(super) fn options(&self, range: Option<std::ops::Range<u64>>) -> object_store::GetOptions {
        object_store::GetOptions {
            if_match: self.etag.clone(),
            range: range.map(Into::into),
            ..Default::default()
        }
    }

    pub(super) fn fetch(
        &self,
        range: std::ops::Range<u64>,
    ) -> datafusion::parquet::errors::Result<Bytes> {
        let got = self.handle.block_on(async {
            self.store
                .get_opts(&self.location, self.options(Some(range)))
                .await?
                .bytes()
                .await
        });
        got.map_err(|e| {
            let text = e.to_string();
            self.failure.lock().expect("not poisoned").get_or_insert(e);
            datafusion::parquet::errors::ParquetError::External(text.into())
        })
    }
}

impl datafusion::parquet::file::reader::Length for RangedObject {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for RangedObject {
    type T = RangedRead;

    fn get_read(&self, start: u64) -> datafusion::parquet::errors::Result<RangedRead> {
        Ok(RangedRead {
            object: self.clone(),
            pos: start,
            chunk: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> datafusion::parquet::errors::Result<Bytes> {
        self.fetch(start..(start + length as u64).min(self.size))
    }
}

/// A `Read` from an offset of a [`RangedObject`], fetching [`READ_AHEAD`] at a time.
pub(super) struct RangedRead {
    pub(super) object: RangedObject,
    pub(super) pos: u64,
    pub(super) chunk: Bytes,
}

impl Read for RangedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            if self.pos >= self.object.size {
                return Ok(0);
            }
            let end = (self.pos + READ_AHEAD).min(self.object.size);
            self.chunk = self
                .object
                .fetch(self.pos..end)
                .map_err(std::io::Error::other)?;
            self.pos = end;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

pub(super) fn read_parquet<T: ChunkReader + 'static>(
    input: T,
    spec: &Spec,
    sink: &Sink,
) -> Result<bool, DataFusionError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(input).map_err(malformed)?;
    // Only the columns this scan reads are decoded (the uniqueness pre-pass
    // wants its key alone); they arrive in file order.
    let mut roots: Vec<usize> = spec.positions.iter().flatten().copied().collect();
    roots.sort_unstable();
    roots.dedup();
    // A scan of no declared column still counts rows: it reads them all.
    let mask = if roots.is_empty() {
        ProjectionMask::all()
    } else {
        ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied())
    };
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(malformed)?;
    // Each column's date/timestamp format, read once for the file.
    let items: Vec<Option<Vec<Item<'static>>>> = spec
        .temporal_formats
        .iter()
        .map(|f| {
            f.as_deref()
                .and_then(|f| StrftimeItems::new(f).parse_to_owned().ok())
        })
        .collect();
    let mut row = 0i64;
    for batch in reader {
        let batch = batch.map_err(malformed)?;
        let n = batch.num_rows();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(spec.columns.len() + 2);
        for (i, ((pos, fmt), items)) in spec
            .positions
            .iter()
            .zip(&spec.temporal_formats)
            .zip(&items)
            .enumerate()
        {
            let native = spec.native_type(i);
            let Some(pos) = pos else {
                arrays.push(new_null_array(&native.unwrap_or(DataType::Utf8), n));
                continue;
            };
            let column = batch.column(roots.binary_search(pos).expect("projected"));
            if let Some(ty) = native {
                arrays.push(datafusion::arrow::compute::cast(column, &ty)?);
                continue;
            }
            let mut builder = StringBuilder::with_capacity(n, n * 8);
            append_text(column, fmt.as_deref(), items.as_deref(), &mut builder)?;
            arrays.push(Arc::new(builder.finish()));
        }
        arrays.push(Arc::new(Int64Array::from_iter_values(
            row + 1..=row + n as i64,
        )));
        arrays.push(new_null_array(&DataType::Utf8, n));
        row += n as i64;
        let out = RecordBatch::try_new(sink.schema.clone(), arrays)?;
        if sink.tx.blocking_send(Ok(out)).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Appends a Parquet column's values to `builder` as the text the rules parse:
/// strings and integers by arrow's cast kernel, dates and timestamps without a
/// zone through the column's format read once (`items`), anything else through
/// arrow's display, written in place (no string per value).
pub(super) fn append_text(
    array: &ArrayRef,
    format: Option<&str>,
    items: Option<&[Item<'static>]>,
    builder: &mut StringBuilder,
) -> Result<(), DataFusionError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Date32Type, TimeUnit};
    use datafusion::arrow::temporal_conversions as tc;
    use std::fmt::Write;
    match (array.data_type(), items) {
        (
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64,
            _,
        ) => {
            let text = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
            for v in text.as_string::<i32>() {
                builder.append_option(v);
            }
        }
        (DataType::Date32, Some(items)) => {
            for v in array.as_primitive::<Date32Type>() {
                match v.and_then(tc::date32_to_datetime) {
                    Some(t) => {
                        let _ = write!(builder, "{}", t.date().format_with_items(items.iter()));
                        builder.append_value("");
                    }
                    None => builder.append_null(),
                }
            }
        }
        (DataType::Timestamp(unit, None), Some(items)) => {
            let to_datetime = match unit {
                TimeUnit::Second => tc::timestamp_s_to_datetime,
                TimeUnit::Millisecond => tc::timestamp_ms_to_datetime,
                TimeUnit::Microsecond => tc::timestamp_us_to_datetime,
                TimeUnit::Nanosecond => tc::timestamp_ns_to_datetime,
            };
            let values = datafusion::arrow::compute::cast(array, &DataType::Int64)?;
            for v in values.as_primitive::<datafusion::arrow::datatypes::Int64Type>() {
                // Without a zone the value is UTC (a format's `%z` writes +0000).
                match v.and_then(to_datetime) {
                    Some(t) => {
                        let t = t.and_utc();
                        let _ = write!(builder, "{}", t.format_with_items(items.iter()));
                        builder.append_value("");
                    }
                    None => builder.append_null(),
                }
            }
        }
        _ => {
            let options = FormatOptions::default()
                .with_date_format(format)
                .with_datetime_format(format)
                .with_timestamp_format(format);
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
            for i in 0..array.len() {
                if array.is_null(i) {
                    builder.append_null();
                } else {
                    let _ = write!(builder, "{}", formatter.value(i));
                    builder.append_value("");
                }
            }
        }
    }
    Ok(())
}

/// A local Parquet file read in place, row group by row group, and hashed by a
/// second thread meanwhile (a Parquet reader seeks, so the hash cannot ride
/// along with it); the sha256 when it was read to the end.
pub(super) fn read_local_parquet(
    f: std::fs::File,
    spec: &Spec,
    sink: &Sink,
) -> Result<Option<String>, DataFusionError> {
    let again = f.try_clone()?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hashing = {
        let stop = stop.clone();
        std::thread::spawn(move || sha256_at(&again, &stop))
    };
    let complete = read_parquet(f, spec, sink);
    if !matches!(complete, Ok(true)) {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        return complete.map(|_| None);
    }
    Ok(hashing.join().expect("hashing does not panic")?)
}

/// A Parquet object read by ranges, then hashed in one streamed pass; the
/// sha256 when it was read to the end.
pub(super) fn read_ranged_parquet(
    ranged: RangedObject,
    spec: &Spec,
    sink: &Sink,
) -> Result<Option<String>, DataFusionError> {
    let read = read_parquet(ranged.clone(), spec, sink);
    if let Some(e) = ranged.failure.lock().expect("not poisoned").take() {
        // The store failed (or the object changed): a runtime failure, not a
        // malformed file.
        return Err(ext(e));
    }
    if !read? {
        return Ok(None);
    }
    let whole = (ranged.handle)
        .block_on(
            ranged
                .store
                .get_opts(&ranged.location, ranged.options(None)),
        )
        .map_err(ext)?;
    let mut hashing = HashingRead {
        inner: StreamRead {
            handle: ranged.handle.clone(),
            stream: whole.into_stream(),
            chunk: Bytes::new(),
        },
        hasher: Hasher::new(),
    };
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    Ok(Some(hashing.hasher.finish()))
}
