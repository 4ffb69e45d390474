//! The key pre-pass ([`super::uniqueness`]): every row's key fingerprints
//! collected into [`Duplicates`], which keeps the ones seen more than once.
//!
//! A local CSV file is read in byte ranges, one thread per core at once: the
//! pre-pass needs neither line numbers nor the order of the rows, so a range
//! can start at any line break (the first `\n` at or after each
//! `size × i / parts`). A boundary inside a quoted value would make the next
//! range start mid-record; the record the previous range ends with then spans
//! that line break, and a record spanning lines declines the ranged read. Any
//! other file, or a CSV file the ranges decline, is read by one scan of its key
//! columns. The bytes read in ranges are not hashed: the main pass that follows
//! hashes the bytes it reads and fails the validation if they are not the
//! ingested ones.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{Decimal128Type, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use futures::StreamExt;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt};

use super::source::{self, BATCH_ROWS, Spec};
use super::uniqueness::{Batch, Duplicated, Duplicates};
use crate::landed::LandedFile;

/// Each key's duplicated fingerprints, from `fingerprints` (one expression per
/// key over the file's columns) evaluated on every row: a local CSV file is read
/// in byte ranges (see the module's doc); any other file, or a CSV file the
/// ranges decline, is read by one scan of its key columns, when `in_process`.
/// None leaves the pre-pass to a DataFusion aggregate (a Ballista engine, or a
/// pool without room for the keys).
pub async fn duplicates(
    ctx: &SessionContext,
    table: &Arc<dyn TableProvider>,
    fingerprints: &[Expr],
    rows: Option<u64>,
    budgets: (usize, usize),
    in_process: bool,
) -> Result<Option<Vec<Vec<i128>>>, DataFusionError> {
    let collector = || {
        let runtime = ctx.runtime_env();
        Duplicates::new(
            fingerprints.len(),
            rows,
            &runtime.memory_pool,
            runtime.disk_manager.clone(),
            budgets,
        )
        .inspect_err(|stop| {
            tracing::debug!(event = "key_pre_pass", reason = %stop, "no room for the keys");
        })
        .ok()
    };
    if let Some((store, file, spec)) = source::local_csv(table.as_ref()) {
        let Some(collector) = collector() else {
            return Ok(None);
        };
        if let Some(found) = ranged(ctx, (store, file, spec), fingerprints, collector).await? {
            return Ok(Some(found));
        }
    }
    if !in_process {
        return Ok(None);
    }
    let Some(collector) = collector() else {
        return Ok(None);
    };
    let names: Vec<String> = (0..fingerprints.len())
        .map(|k| format!("__fp{k}"))
        .collect();
    let keys = ctx.read_table(table.clone())?.select(
        fingerprints
            .iter()
            .zip(&names)
            .map(|(e, name)| e.clone().alias(name))
            .collect::<Vec<_>>(),
    )?;
    let mut stream = keys.execute_stream().await?;
    let mut held = collector.batch();
    let mut added = Ok(());
    'read: while let Some(batch) = stream.next().await {
        let batch = batch?;
        for (k, column) in batch.columns().iter().enumerate() {
            added = held.add(k, column.as_primitive::<Decimal128Type>());
            if added.is_err() {
                break 'read;
            }
        }
    }
    match added.and_then(|()| held.flush()) {
        Ok(()) => {}
        Err(Duplicated::Stop(_)) => return Ok(None),
        Err(too_many) => return Err(duplicated(too_many)),
    }
    drop(held);
    match collector.finish() {
        Ok(found) => Ok(Some(found)),
        Err(Duplicated::Stop(_)) => Ok(None),
        Err(too_many) => Err(duplicated(too_many)),
    }
}

/// A local CSV file's keys read in byte ranges; None when a record spans lines
/// or the key set's runs fail.
async fn ranged(
    ctx: &SessionContext,
    (store, file, spec): (Arc<dyn ObjectStore>, LandedFile, Spec),
    fingerprints: &[Expr],
    collector: Duplicates,
) -> Result<Option<Vec<Vec<i128>>>, DataFusionError> {
    let schema = spec.schema();
    // Only the columns the keys are made of are read.
    let mut columns: Vec<usize> = fingerprints
        .iter()
        .flat_map(Expr::column_refs)
        .filter_map(|c| schema.index_of(c.name()).ok())
        .collect();
    columns.sort_unstable();
    columns.dedup();
    let projected = Arc::new(schema.project(&columns)?);
    let df_schema = DFSchema::try_from(projected.as_ref().clone())?;
    let exprs = fingerprints
        .iter()
        .map(|e| ctx.create_physical_expr(e.clone(), &df_schema))
        .collect::<Result<Vec<_>, _>>()?;
    let got = match store.get(&file.location).await.map_err(ext)?.payload {
        GetResultPayload::File(f, _) => f,
        GetResultPayload::Stream(_) => return Ok(None),
    };
    let parts = ctx.state().config().target_partitions().max(1);
    let scan = Scan {
        spec,
        columns,
        schema: projected,
        exprs,
        collector,
        declined: AtomicBool::new(false),
        failure: Mutex::new(None),
    };
    let (found, ranges) = tokio::task::spawn_blocking(move || -> Result<_, DataFusionError> {
        let ranges = ranges(&got, parts)?;
        std::thread::scope(|s| {
            for (i, &range) in ranges.iter().enumerate() {
                let (scan, got) = (&scan, &got);
                s.spawn(move || scan.range(got, range, i == 0));
            }
        });
        if let Some(e) = scan.failure.into_inner().expect("not poisoned") {
            return Err(e);
        }
        if scan.declined.into_inner() {
            return Ok((None, ranges.len()));
        }
        match scan.collector.finish() {
            Ok(found) => Ok((Some(found), ranges.len())),
            Err(Duplicated::Stop(stop)) => {
                tracing::debug!(event = "key_pre_pass", reason = %stop, "the ranged key scan's runs failed");
                Ok((None, ranges.len()))
            }
            Err(too_many) => Err(duplicated(too_many)),
        }
    })
    .await
    .map_err(|e| DataFusionError::External(Box::new(e)))??;
    match &found {
        Some(_) => tracing::debug!(event = "key_pre_pass", ranges, "keys read in byte ranges"),
        None => tracing::debug!(
            event = "key_pre_pass",
            "the byte ranges declined: the keys are read by one scan"
        ),
    }
    Ok(found)
}

fn ext(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Too many duplicates fails the validation as the DataFusion pre-pass does; a
/// key set the pool or the disk refuses declines (Stop becomes None above).
fn duplicated(d: Duplicated) -> DataFusionError {
    match d {
        Duplicated::TooMany(e) => ext(e),
        Duplicated::Stop(stop) => ext(stop),
    }
}

/// The bytes a range's reader reads at once, and the longest line it holds (a
/// longer one declines the ranges). Tiny in tests, so lines cross reads.
const READ: usize = if cfg!(test) { 64 } else { 1 << 20 };
const MAX_LINE: usize = if cfg!(test) { 4 << 10 } else { 64 << 20 };

/// One ranged read of a file, shared by its threads.
struct Scan {
    spec: Spec,
    /// The file's columns read, in the order of `schema`.
    columns: Vec<usize>,
    schema: SchemaRef,
    /// Each key's fingerprint over `schema`.
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    collector: Duplicates,
    /// A record spans lines: every range stops, nothing found is used.
    declined: AtomicBool,
    failure: Mutex<Option<DataFusionError>>,
}

impl Scan {
    /// Reads the byte range `[start, end)`; the first range begins with the header.
    fn range(&self, file: &File, (start, end): (u64, u64), first: bool) {
        if let Err(e) = self.read(file, start, end, first) {
            self.declined.store(true, Ordering::Relaxed);
            let mut failure = self.failure.lock().expect("not poisoned");
            match e {
                // A stop of the collector (pool, disk) declines; the rest fails.
                DataFusionError::External(b) if b.is::<super::uniqueness::Stop>() => {}
                e => {
                    failure.get_or_insert(e);
                }
            }
        }
    }

    fn read(&self, file: &File, start: u64, end: u64, first: bool) -> Result<(), DataFusionError> {
        let mut input = RangeRead {
            file,
            at: start,
            end,
        };
        let positions: Vec<Option<usize>> = self
            .columns
            .iter()
            .map(|&c| self.spec.positions[c])
            .collect();
        let mut lines = Lines {
            wanted: positions.iter().flatten().max().map_or(0, |p| p + 1),
            positions,
            delimiter: self.spec.delimiter,
            quote: self.spec.quote,
            core: csv_core::ReaderBuilder::new()
                .delimiter(self.spec.delimiter)
                .quote(self.spec.quote)
                .build(),
            header: first,
            values: Vec::new(),
            rows: 0,
            fields: (Vec::new(), Vec::new()),
        };
        lines.values = lines.builders();
        let mut held = self.collector.batch();
        let mut buf = vec![0u8; READ];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                // A line longer than the buffer: up to a point (a file of `\r`
                // line ends is one line to this reader).
                if buf.len() >= MAX_LINE {
                    self.declined.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = input.read(&mut buf[filled..])?;
            filled += n;
            let done = match n {
                0 => filled,
                _ => match memchr::memrchr(b'\n', &buf[..filled]) {
                    Some(last) => last + 1,
                    None => continue,
                },
            };
            let mut at = 0;
            while at < done {
                let next = memchr::memchr(b'\n', &buf[at..done]).map_or(done, |i| at + i + 1);
                if !lines.line(&buf[at..next]) {
                    self.declined.store(true, Ordering::Relaxed);
                }
                if self.declined.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if lines.rows == BATCH_ROWS {
                    self.add(&mut held, lines.take())?;
                }
                at = next;
            }
            buf.copy_within(done..filled, 0);
            filled -= done;
            if n == 0 {
                break;
            }
        }
        if lines.rows > 0 {
            self.add(&mut held, lines.take())?;
        }
        held.flush().map_err(duplicated)
    }

    /// Fingerprints a batch of key values (on this range's thread) and
    /// collects them.
    fn add(&self, held: &mut Batch, values: Vec<StringBuilder>) -> Result<(), DataFusionError> {
        let arrays: Vec<ArrayRef> = values
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        let fingerprints = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>, _>>()?;
        for (k, fp) in fingerprints.iter().enumerate() {
            held.add(k, fp.as_primitive::<Decimal128Type>())
                .map_err(duplicated)?;
        }
        Ok(())
    }
}

/// A range's lines split into records, as the csv crate would (the main pass's
/// reader): a line whose key fields hold no quote is split at its delimiters
/// directly (only the delimiters up to the last key column are looked for, and
/// then only the quotes after it, to be sure the record ends with the line);
/// any other line (and one with a lone `\r`) is parsed by csv_core itself, and
/// must hold exactly one whole record.
struct Lines {
    /// Where each read column is among a record's fields.
    positions: Vec<Option<usize>>,
    /// The fields a record is split into: up to the last read column.
    wanted: usize,
    delimiter: u8,
    quote: u8,
    core: csv_core::Reader,
    /// The next record is the header (skipped).
    header: bool,
    values: Vec<StringBuilder>,
    rows: usize,
    /// csv_core's output: the fields' bytes and where each ends.
    fields: (Vec<u8>, Vec<usize>),
}

impl Lines {
    fn builders(&self) -> Vec<StringBuilder> {
        (0..self.positions.len())
            .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8))
            .collect()
    }

    /// The values read so far.
    fn take(&mut self) -> Vec<StringBuilder> {
        self.rows = 0;
        let fresh = self.builders();
        std::mem::replace(&mut self.values, fresh)
    }

    /// Reads one line (with its `\n`, if any); false when it is not one whole
    /// record (a quoted line break, a lone `\r`).
    fn line(&mut self, line: &[u8]) -> bool {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        // An empty line is no record.
        if content.is_empty() {
            return true;
        }
        if memchr::memchr(b'\r', content).is_some() {
            return self.parsed(line);
        }
        let quote = memchr::memchr(self.quote, content);
        if quote.is_some() && self.header {
            return self.parsed(line);
        }
        if std::mem::take(&mut self.header) {
            return true;
        }
        // Every field blank (whitespace only): no data, as in the main pass.
        // With quotes, csv_core tells (`""` is a blank field).
        let (delimiter, q) = (self.delimiter, self.quote);
        if content
            .iter()
            .all(|&b| b == delimiter || b == q || b.is_ascii_whitespace())
        {
            return quote.is_none() || self.parsed(line);
        }
        // Where the fields up to the last one read end (the delimiters found
        // so far); past the last delimiter a field ends with the line.
        let wanted = self.wanted;
        let mut ends = [0usize; 64];
        if wanted > ends.len() {
            return self.parsed(line);
        }
        let mut known = 0;
        let mut delimiters = memchr::memchr_iter(self.delimiter, content);
        while known < wanted {
            match delimiters.next() {
                Some(d) => ends[known] = d,
                None => {
                    ends[known] = content.len();
                    known += 1;
                    break;
                }
            }
            known += 1;
        }
        // A quote before the last field read ends: csv_core unquotes the
        // fields. One after it: the record must end with the line.
        if let Some(at) = quote {
            let read_to = known.checked_sub(1).map_or(0, |k| ends[k]);
            if at < read_to || !ends_unquoted(content, at, delimiter, q) {
                return self.parsed(line);
            }
        }
        for (builder, pos) in self.values.iter_mut().zip(&self.positions) {
            match pos {
                Some(p) if *p < known => {
                    let from = if *p == 0 { 0 } else { ends[p - 1] + 1 };
                    source::append_bytes(builder, &content[from..ends[*p]]);
                }
                // A record shorter than the file's header, or a column the file lacks.
                _ => builder.append_null(),
            }
        }
        self.rows += 1;
        true
    }

    /// A line parsed by csv_core: one record ending with the line.
    fn parsed(&mut self, line: &[u8]) -> bool {
        let (out, ends) = &mut self.fields;
        out.resize(line.len() + 1, 0);
        ends.resize(line.len() + 1, 0);
        self.core.reset();
        let (result, read, written, fields) = self.core.read_record(line, out, ends);
        let (result, fields) = match result {
            // The line had no line end (the file's last): end the input. The
            // record goes on where it stood (csv_core's ends count from its start).
            csv_core::ReadRecordResult::InputEmpty if !line.ends_with(b"\n") => {
                let (result, _, _, more) =
                    self.core
                        .read_record(&[], &mut out[written..], &mut ends[fields..]);
                (result, fields + more)
            }
            other => (other, fields),
        };
        // One record, and nothing after it but its line end.
        if result != csv_core::ReadRecordResult::Record
            || line[read..].iter().any(|&b| b != b'\n' && b != b'\r')
        {
            return false;
        }
        if std::mem::take(&mut self.header) {
            return true;
        }
        let field = |i: usize| {
            let from = if i == 0 { 0 } else { ends[i - 1] };
            &out[from..ends[i]]
        };
        if (0..fields).all(|i| source::is_blank(field(i))) {
            return true;
        }
        for (builder, pos) in self.values.iter_mut().zip(&self.positions) {
            match pos {
                Some(p) if *p < fields => source::append_bytes(builder, field(*p)),
                _ => builder.append_null(),
            }
        }
        self.rows += 1;
        true
    }
}

/// Whether a record's quoting closes by the end of `content` (one line, no
/// `\r`), from its first quote at `at`, as csv_core reads it: a quote opens a
/// quoted field only where a field starts (after a delimiter); in one, a
/// doubled quote is a quote and a single one closes it, and the field goes on
/// unquoted to the next delimiter. Only the quotes are visited.
fn ends_unquoted(content: &[u8], mut at: usize, delimiter: u8, quote: u8) -> bool {
    let next = |from: usize| memchr::memchr(quote, content.get(from..)?).map(|i| from + i);
    loop {
        // `at` is a quote outside quotes.
        if at > 0 && content[at - 1] != delimiter {
            // Within an unquoted field: a plain character.
            match next(at + 1) {
                Some(q) => at = q,
                None => return true,
            }
            continue;
        }
        // Opens a quoted field: find the quote that closes it.
        let mut from = at + 1;
        loop {
            let Some(q) = next(from) else {
                // Still open at the end of the line: a quoted line break.
                return false;
            };
            if content.get(q + 1) == Some(&quote) {
                from = q + 2;
                continue;
            }
            match next(q + 1) {
                Some(after) => at = after,
                None => return true,
            }
            break;
        }
    }
}

/// `parts` byte ranges covering the file, each after the first starting right
/// after a `\n` (fewer when the file has fewer line breaks).
fn ranges(file: &File, parts: usize) -> std::io::Result<Vec<(u64, u64)>> {
    let size = file.metadata()?.len();
    let mut starts = vec![0];
    for i in 1..parts {
        let nominal = size * i as u64 / parts as u64;
        let from = nominal.max(*starts.last().expect("one start"));
        match line_start_at(file, from, size)? {
            Some(at) if at > *starts.last().expect("one start") && at < size => starts.push(at),
            _ => {}
        }
    }
    let ends = starts.iter().skip(1).copied().chain([size]);
    Ok(starts.iter().copied().zip(ends).collect())
}

/// The offset right after the first `\n` at or after `from`.
fn line_start_at(file: &File, mut from: u64, size: u64) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0; 64 << 10];
    while from < size {
        let n = file.read_at(&mut buf, from)?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(from + i as u64 + 1));
        }
        from += n as u64;
    }
    Ok(None)
}

/// The bytes `[at, end)` of a file, read by position (every range's thread
/// shares the one open file).
struct RangeRead<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for RangeRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = (self.end - self.at).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..left], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;
    use crate::landed::{Landed, LandedFile};
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::SessionConfig;
    use proptest::prelude::*;

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut f, bytes).expect("write");
        f
    }

    #[test]
    fn ranges_start_after_line_breaks_and_cover_the_file() {
        let text = b"id,v\n1,a\n22,bb\n333,ccc\n4444,dddd\n";
        let f = file(text);
        for parts in 1..8 {
            let r = ranges(&f, parts).expect("ranges");
            assert_eq!(r.first().map(|r| r.0), Some(0));
            assert_eq!(r.last().map(|r| r.1), Some(text.len() as u64));
            for pair in r.windows(2) {
                assert_eq!(pair[0].1, pair[1].0, "{r:?}");
                assert_eq!(text[pair[1].0 as usize - 1], b'\n', "{r:?}");
            }
            assert!(r.len() <= parts);
        }
        // No line break after the middle: one range.
        let f = file(b"id,v\n1,aaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(ranges(&f, 2).expect("ranges"), vec![(0, 30)]);
    }

    type Found = Vec<Vec<i128>>;

    /// [`duplicates`] of `csv` (columns id, v; the keys are `id` typed as an
    /// integer, and `id, v`), and the DataFusion aggregate's over the same table
    /// (one reader, in order); None for a file the reader refuses.
    /// A landed CSV file `f.csv` of columns `header` as the validate source
    /// table, and the fingerprints of the keys `id` (an integer) and `id, v`.
    fn table(
        csv: &[u8],
        header: &[&str],
    ) -> (tempfile::TempDir, Arc<dyn TableProvider>, [Expr; 2]) {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("f.csv"), csv).expect("write");
        let landed = Landed::open(dir.path().to_str().expect("utf-8")).expect("landed");
        let file = LandedFile {
            location: "f.csv".into(),
            name: "f.csv".into(),
            uri: "f.csv".into(),
            size: csv.len() as u64,
            modified: None,
            window: None,
            acq_date: None,
        };
        let ds: crate::config::Dataset = serde_yaml::from_str(
            "file_pattern: '^f\\.csv$'\nperiod: none\nprimary_key: [id]\n\
             columns:\n  id: { type: int }\n  v: { type: string, unique: true }\n",
        )
        .expect("dataset");
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let spec = Spec::new(&ds, FileFormat::Csv, &header, &[]);
        let table = source::table(&landed, &file, spec, Default::default(), None).expect("table");
        let typed = |c: &str| {
            let column = &ds.columns[c];
            super::super::rules::typed_value(c, column.ty, column.format.as_deref())
        };
        let keys = [
            super::super::rules::key_fingerprint(vec![typed("id")]),
            super::super::rules::key_fingerprint(vec![typed("id"), typed("v")]),
        ];
        (dir, table, keys)
    }

    fn both(
        csv: &[u8],
        parts: usize,
        header: &[&str],
        in_process: bool,
    ) -> (Option<Found>, Option<Found>) {
        let (_dir, table, keys) = table(csv, header);
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(parts));
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let fast = duplicates(&ctx, &table, &keys, None, (1 << 20, 1 << 20), in_process)
                .await
                .expect("scan");
            let mut slow = Vec::new();
            for key in &keys {
                let batches = ctx
                    .read_table(table.clone())
                    .and_then(|df| df.select(vec![key.clone().alias("fp")]))
                    .and_then(|df| df.filter(col("fp").is_not_null()))
                    .and_then(|df| df.aggregate(vec![col("fp")], vec![count(lit(1)).alias("n")]))
                    .and_then(|df| df.filter(col("n").gt(lit(1))))
                    .expect("plan")
                    .collect()
                    .await;
                // A file the reader refuses (a quote never closed) has no keys.
                let Ok(batches) = batches else {
                    return (fast, None);
                };
                let mut found: Vec<i128> = batches
                    .iter()
                    .flat_map(|b| {
                        let a = b.column(0).as_primitive::<Decimal128Type>();
                        (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
                    })
                    .collect();
                found.sort_unstable();
                slow.push(found);
            }
            let fast = fast.map(|keys| {
                keys.into_iter()
                    .map(|mut k| {
                        k.sort_unstable();
                        k
                    })
                    .collect()
            });
            (fast, Some(slow))
        })
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (0..6i32).prop_map(|i| i.to_string()),
            1 => Just(" 3 ".to_owned()),
            1 => Just("x".to_owned()),
            1 => Just(String::new()),
            1 => Just("\"4\"".to_owned()),
            1 => Just("\"a,b\"".to_owned()),
            1 => Just("\"5\"\"\"".to_owned()),
            1 => Just("a\"b".to_owned()),
            1 => Just("\"a\"b\"c".to_owned()),
            1 => Just("\"\"".to_owned()),
            1 => Just("\"x\"\"".to_owned()),
            1 => Just("é".to_owned()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => (field(), field()).prop_map(|(a, b)| format!("{a},{b}")),
            1 => field(),
            1 => (field(), field(), field()).prop_map(|(a, b, c)| format!("{a},{b},{c}")),
            1 => Just(" , ".to_owned()),
            1 => Just(String::new()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The ranged scan finds the keys the DataFusion pre-pass finds,
        /// whatever the ranges, line ends (a last line without one), blank or
        /// short rows, quoted and escaped values, stray quotes and values not
        /// of the key's type; it declines only a file with a quoted line break.
        #[test]
        fn the_ranged_scan_finds_what_the_pre_pass_finds(
            lines in proptest::collection::vec(line(), 0..60),
            crlf in any::<bool>(),
            last_end in any::<bool>(),
            order in 0usize..3,
            parts in 1usize..5,
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            // The key's columns in either order, or after a column not declared.
            let header = [["id", "v"].as_slice(), &["v", "id"], &["x", "id", "v"]][order];
            let mut csv = format!("{}{end}{}", header.join(","), lines.join(end));
            if last_end {
                csv.push_str(end);
            }
            let (fast, slow) = both(csv.as_bytes(), parts, header, false);
            // It declines exactly when a record (as the csv crate reads the
            // file) spans lines: a quote left open.
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(csv.as_bytes());
            let spans = reader
                .byte_records()
                .any(|r| r.expect("flexible").as_slice().iter().any(|&b| b == b'\n' || b == b'\r'));
            match (fast, slow) {
                (Some(fast), Some(slow)) => prop_assert_eq!(fast, slow),
                (Some(_), None) => prop_assert!(false, "ran on a file the reader refuses"),
                (None, _) => prop_assert!(spans, "declined a file whose records each hold one line"),
            }
        }
    }

    /// A pool without room for the key set leaves the pre-pass to the
    /// DataFusion aggregate, which spills.
    #[test]
    fn a_pool_without_room_for_the_keys_leaves_the_pre_pass_to_the_aggregate() {
        let (_dir, table, keys) = table(b"id,v\n1,a\n1,b\n", &["id", "v"]);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let found = |pool: usize| {
            let ctx = crate::context::session(pool);
            let budgets = (32 << 20, 1 << 20);
            rt.block_on(duplicates(
                &ctx,
                &table,
                &keys,
                Some(1_000_000),
                budgets,
                true,
            ))
            .expect("no failure")
        };
        assert_eq!(found(64 << 10), None);
        // With room, the same file's repeat is found.
        assert_eq!(found(64 << 20).map(|k| k[0].len()), Some(1));
    }

    #[test]
    fn a_line_longer_than_the_reader_holds_declines_the_ranges() {
        let csv = format!("id,v\n1,{}\n2,b\n1,c\n", "x".repeat(MAX_LINE + 1));
        let (fast, slow) = both(csv.as_bytes(), 1, &["id", "v"], false);
        assert_eq!(fast, None);
        let slow = slow.expect("read");
        assert_eq!(slow[0].len(), 1);
        assert_eq!(both(csv.as_bytes(), 1, &["id", "v"], true).0, Some(slow));
        // Just within it: read in ranges.
        let csv = format!("id,v\n1,{}\n2,b\n1,c\n", "x".repeat(MAX_LINE / 2));
        assert!(both(csv.as_bytes(), 2, &["id", "v"], false).0.is_some());
    }

    #[test]
    fn a_quoted_line_break_declines_the_ranged_scan_for_one_scan() {
        let mut csv = String::from("id,v\n");
        for i in 0..200 {
            csv.push_str(&format!("{},\"a\nb{i}\"\n", i % 150));
        }
        let (fast, slow) = both(csv.as_bytes(), 2, &["id", "v"], false);
        assert_eq!(fast, None);
        let slow = slow.expect("read");
        assert_eq!(slow[0].len(), 50);
        // Only one range: still declined, the record spans lines.
        assert_eq!(both(csv.as_bytes(), 1, &["id", "v"], false).0, None);
        // In process, one scan of the key columns finds them instead.
        assert_eq!(both(csv.as_bytes(), 2, &["id", "v"], true).0, Some(slow));
    }
}
