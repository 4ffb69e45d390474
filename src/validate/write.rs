//! The two Delta writes: the validated rows split into cleaned and quarantine
//! as they stream, each table written in a task of its own through a channel
//! table, committed only when the bytes read are the ingested ones.

use super::*;

/// How the pass over the rows ended. Only `Versions` commits the Delta writes.
pub(super) enum Written {
    /// The cleaned and quarantine Delta versions written.
    Versions(Option<i64>, Option<i64>),
    /// The input cannot be parsed (a data problem, scored).
    Malformed(String),
    /// A runtime failure (memory, I/O, object store): not a property of the data.
    Failed(DataFusionError),
    /// The bytes read hash to this, not to the ingested sha256.
    Changed(String),
    /// The in-pass uniqueness check stopped (nothing committed): the file needs
    /// a pre-pass.
    Restart(uniqueness::Stop),
}

/// Which columns of the validated rows go to cleaned and to quarantine, and the
/// schemas of the two tables.
pub(super) struct Outputs {
    pub(super) clean_idx: Vec<usize>,
    pub(super) clean_schema: SchemaRef,
    pub(super) quarantine_idx: Vec<usize>,
    pub(super) quarantine_schema: SchemaRef,
    /// `_source_file`, one value a file: made a column for the rejected rows
    /// only, at its place in quarantine (as a literal of the plan it was
    /// copied into every row of every batch).
    source_file: (usize, String),
}

impl Outputs {
    fn of(ds: &Dataset, schema: &Schema, source_file: &str) -> Outputs {
        let periodic = ds.period.has_period();
        let pick = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .map(|n| schema.index_of(n).expect("column"))
                .collect()
        };
        let mut clean_cols: Vec<String> = ds.columns.keys().cloned().collect();
        // Each cleaned row keeps its line in the file: a replay that rejects
        // it later, and `pipeline trace`, still say where it came from.
        clean_cols.extend(["_ingestion_id", source::LINE].map(String::from));
        let mut quarantine_cols: Vec<String> = ds
            .columns
            .keys()
            .map(|c| format!("{RAW_PREFIX}{c}"))
            .collect();
        quarantine_cols.extend(["_errors", source::LINE, "_ingestion_id"].map(String::from));
        if periodic {
            clean_cols.push("_data_period".into());
            quarantine_cols.push("_data_period".into());
        }
        let clean_idx = pick(&clean_cols);
        let quarantine_idx = pick(&quarantine_cols);
        // `_line` may be NULL in the table: rows written before it was kept.
        let clean_schema = Arc::new(Schema::new(
            (clean_idx.iter())
                .map(|&i| {
                    let f = schema.field(i);
                    let nullable = f.is_nullable() || f.name() == source::LINE;
                    Field::new(f.name(), f.data_type().clone(), nullable)
                })
                .collect::<Vec<_>>(),
        ));
        // Quarantine keeps the original column names for its raw text values.
        let mut quarantine_fields: Vec<Field> = quarantine_idx
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                match f.name().strip_prefix(RAW_PREFIX) {
                    Some(name) => Field::new(name, DataType::Utf8, f.is_nullable()),
                    None => Field::new(f.name(), f.data_type().clone(), f.is_nullable()),
                }
            })
            .collect();
        // Right after `_errors`, where the table has it.
        let at = ds.columns.len() + 1;
        quarantine_fields.insert(at, Field::new("_source_file", DataType::Utf8, false));
        Outputs {
            clean_idx,
            clean_schema,
            quarantine_idx,
            quarantine_schema: Arc::new(Schema::new(quarantine_fields)),
            source_file: (at, source_file.to_owned()),
        }
    }
}

/// A digest of a complete read that differs from the ingested sha256, or a note
/// that the file was not read to its end; None when every read saw its bytes.
pub(super) fn read_mismatch(digests: &Digests, expected: Option<&str>) -> Option<String> {
    let read = digests.lock().expect("not poisoned").clone();
    match (expected, read.is_empty()) {
        (_, true) => Some("(the file was not read to its end)".to_owned()),
        (Some(want), false) => read.iter().find(|d| *d != want).cloned(),
        (None, false) => None,
    }
}

impl Outputs {
    /// A batch's valid rows for cleaned and its rejected ones for quarantine.
    fn split(
        &self,
        batch: &RecordBatch,
        bad_mask: &BooleanArray,
    ) -> Result<(RecordBatch, RecordBatch), DataFusionError> {
        let good_mask = datafusion::arrow::compute::not(bad_mask).expect("same length");
        let clean = filter_record_batch(&batch.project(&self.clean_idx)?, &good_mask)?
            .with_schema(self.clean_schema.clone())?;
        let quar = filter_record_batch(&batch.project(&self.quarantine_idx)?, bad_mask)?;
        // Native raw values as text, for the rejected rows only.
        let (at, source_file) = &self.source_file;
        let mut fields: Vec<&datafusion::arrow::datatypes::FieldRef> =
            self.quarantine_schema.fields().iter().collect();
        fields.remove(*at);
        let mut columns = (quar.columns().iter())
            .zip(fields)
            .map(
                |(c, f)| match (c.data_type() == f.data_type(), f.data_type()) {
                    (true, _) => Ok(c.clone()),
                    (false, DataType::Utf8) => crate::rules::shown_text(c),
                    (false, ty) => Ok(datafusion::arrow::compute::cast(c, ty)?),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        let rows = quar.num_rows();
        let file = datafusion::arrow::array::StringArray::from(vec![source_file.as_str(); rows]);
        columns.insert(*at, Arc::new(file));
        Ok((
            clean,
            RecordBatch::try_new(self.quarantine_schema.clone(), columns)?,
        ))
    }
}

/// What each batch of the validated rows passes through before it is split:
/// the in-pass key check, the incremental dataset's processed keys, the profile.
struct Feed<'a> {
    outputs: Outputs,
    profiler: &'a mut Profiler,
    manifest: Option<&'a mut manifest::Collector>,
    tracker: Option<KeyTracker>,
}

impl Feed<'_> {
    /// The batch's cleaned and quarantined rows; Err stops the pass.
    fn take(&mut self, batch: RecordBatch) -> Result<(RecordBatch, RecordBatch), DataFusionError> {
        let external = |e: Box<dyn std::error::Error + Send + Sync>| DataFusionError::External(e);
        // Every row's key, before incremental drops processed rows.
        if let Some(Err(stop)) = self.tracker.as_mut().map(|t| t.add(&batch)) {
            return Err(external(Box::new(stop)));
        }
        // Incremental: rows an earlier night processed are counted and dropped.
        let batch = match self.manifest.as_deref_mut().map(|m| m.take_new(&batch)) {
            None => batch,
            Some(result) => result.map_err(|e| external(Box::new(e)))?,
        };
        let bad_mask = BooleanArray::from(self.profiler.update(&batch));
        if let Some(m) = self.manifest.as_deref_mut() {
            m.add(&batch, &bad_mask)
                .map_err(|e| external(Box::new(e)))?;
        }
        self.outputs.split(&batch, &bad_mask)
    }

    /// After the last batch: keys in two of the tracker's sorted runs are a
    /// repeat, still uncommitted, so the validation restarts.
    fn finish(self) -> Result<(), DataFusionError> {
        match self.tracker.map(KeyTracker::finish) {
            Some(Err(stop)) => Err(DataFusionError::External(Box::new(stop))),
            _ => Ok(()),
        }
    }
}

/// The two writers' senders: what the pass sends, and how it aborts both.
struct Senders {
    clean: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
    quarantine: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
}

impl Senders {
    async fn abort(&self, e: &DataFusionError) {
        let msg = e.to_string();
        let _ = (self.clean)
            .send(Err(DataFusionError::Execution(msg.clone())))
            .await;
        let _ = (self.quarantine)
            .send(Err(DataFusionError::Execution(msg)))
            .await;
    }

    /// False when a writer stopped (its error is reported by its task).
    async fn send(&self, (clean, quar): (RecordBatch, RecordBatch)) -> bool {
        self.clean.send(Ok(clean)).await.is_ok() & self.quarantine.send(Ok(quar)).await.is_ok()
    }
}

/// Streams `df` through `feed` into the writers; the error that stopped it,
/// after aborting both writers, or None.
async fn produce(
    df: DataFrame,
    mut feed: Feed<'_>,
    senders: Senders,
    digests: &Digests,
    expected_sha256: Option<&str>,
) -> Option<DataFusionError> {
    let stopped = async {
        let mut stream = ahead(df.execute_stream().await?);
        while let Some(batch) = stream.next().await {
            if !senders.send(feed.take(batch?)?).await {
                return Ok(false);
            }
        }
        feed.finish()?;
        // Every read of the file that reached its end must have seen the ingested
        // bytes; the senders are still open, so a mismatch aborts both writes.
        match read_mismatch(digests, expected_sha256) {
            Some(digest) => Err(DataFusionError::External(Box::new(ReadMismatch(digest)))),
            None => Ok(true),
        }
    };
    match stopped.await {
        Ok(_) => None,
        Err(e) => {
            senders.abort(&e).await;
            Some(e)
        }
    }
}

/// How a pass that stopped on `e` ended.
fn stopped_on(e: DataFusionError) -> Written {
    if let Some(digest) = source::remote_mismatch(&e) {
        return Written::Changed(digest);
    }
    match (source::malformed_reason(&e), e) {
        (_, DataFusionError::External(b)) if b.is::<uniqueness::Stop>() => {
            Written::Restart(*b.downcast::<uniqueness::Stop>().expect("checked"))
        }
        (_, DataFusionError::External(b)) if b.is::<ReadMismatch>() => {
            Written::Changed(b.downcast::<ReadMismatch>().expect("checked").0)
        }
        (Some(reason), _) => Written::Malformed(reason),
        (None, e) => Written::Failed(e),
    }
}

impl Pass<'_> {
    /// Streams the validated rows once: counts them and feeds the cleaned and
    /// quarantine writers, and the `tracker` the keys of an in-pass check.
    /// Unless the whole file was read and its bytes hash to the ingested sha256
    /// (`row.sha256`), or when the tracker stops, both writers are aborted and
    /// neither table changes.
    pub(super) async fn write(
        &mut self,
        df: DataFrame,
        tracker: Option<KeyTracker>,
    ) -> Result<Written, ValidateError> {
        let (ctx, ds, row, config) = (&self.ctx, self.what.ds, self.what.row, self.config);
        let outputs = Outputs::of(ds, df.schema().as_arrow(), &row.source_uri);
        let period = row.period.as_deref().filter(|_| ds.period.has_period());
        let (clean, clean_write) = start_write(
            ctx,
            &ledger::delta_location(config, "cleaned", &row.dataset),
            outputs.clean_schema.clone(),
            Target {
                which: "cleaned",
                encodings: &column_encodings(ds),
                period,
                append: self.amending.as_ref().is_some_and(|(_, w)| w.is_empty()),
            },
        )
        .await?;
        // An amendment that withdraws cleaned rows rewrites the period: its
        // other cleaned rows are copied in as the table holds them.
        let kept = match &self.amending {
            Some((kept, withdrawn)) if !withdrawn.is_empty() => {
                Some(replay::kept_cleaned(ctx, config, row, (kept, withdrawn)).await?)
            }
            _ => None,
        };
        let copy = copy_kept(kept, clean.clone(), outputs.clean_schema.clone());
        let (quarantine, quar_write) = start_write(
            ctx,
            &ledger::delta_location(config, "quarantine", &row.dataset),
            outputs.quarantine_schema.clone(),
            Target {
                which: "quarantine",
                encodings: &[],
                period,
                append: false,
            },
        )
        .await?;
        let feed = Feed {
            outputs,
            profiler: &mut self.profiler,
            manifest: self.manifest.as_mut(),
            tracker,
        };
        // The senders move into `produce` and drop when it ends, which ends the writes.
        let senders = Senders { clean, quarantine };
        let produce = produce(df, feed, senders, &self.digests, row.sha256.as_deref());
        let clean_write = async {
            let written = clean_write.await;
            if written.is_ok() {
                crate::fault::point("validate-after-cleaned");
            }
            written
        };
        let (failure, clean_result, quar_result, ()) =
            tokio::join!(produce, clean_write, quar_write, copy);
        if let Some(e) = failure {
            return Ok(stopped_on(e));
        }
        let clean = clean_result?;
        let quar = quar_result?;
        crate::fault::point("validate-after-delta");
        Ok(Written::Versions(clean, quar))
    }
}

/// Sends `rows` (an amendment's kept cleaned rows) to the cleaned writer as
/// `schema` lays them out; an error is sent on, which aborts the write.
async fn copy_kept(rows: Option<SendableRecordBatchStream>, to: Sender, schema: SchemaRef) {
    let Some(mut rows) = rows else {
        return;
    };
    while let Some(batch) = rows.next().await {
        let batch = batch.and_then(|b| laid_out(&b, &schema));
        let failed = batch.is_err();
        if to.send(batch).await.is_err() || failed {
            break;
        }
    }
}

/// `batch`'s columns named and typed as `schema`'s.
fn laid_out(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    let columns = (schema.fields().iter())
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                DataFusionError::Execution(format!(
                    "the kept cleaned rows have no column {}",
                    f.name()
                ))
            })?;
            Ok(match c.data_type() == f.data_type() {
                true => c.clone(),
                false => datafusion::arrow::compute::cast(c, f.data_type())?,
            })
        })
        .collect::<Result<Vec<_>, DataFusionError>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The digest of the bytes read, when it is not the ingested one.
#[derive(Debug, thiserror::Error)]
#[error("the bytes read hash to {0}")]
pub(super) struct ReadMismatch(String);

/// The plan's batches computed in a task of their own, up to two batches ahead
/// of the loop that counts and splits them: the rule plan and the per-batch work
/// then run on both cores instead of taking turns in one task. Dropping the
/// stream stops the task.
pub(super) fn ahead(
    mut stream: SendableRecordBatchStream,
) -> impl futures::Stream<Item = Result<RecordBatch, DataFusionError>> + Unpin {
    let (tx, rx) = mpsc::channel(2);
    let task = SpawnedTask::spawn(async move {
        while let Some(batch) = stream.next().await {
            if tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures::stream::unfold(
        (rx, task),
        |(mut rx, task)| async move { rx.recv().await.map(|batch| (batch, (rx, task))) },
    ))
}

/// A Delta write under way; ends with the version it committed.
pub(super) type Writer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<i64>, ValidateError>> + Send>>;

/// How a column of the cleaned table is written where arrow-rs's default (a
/// dictionary, then plain values once it overflows) does not pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoded {
    /// Delta-encoded (DELTA_BINARY_PACKED), no dictionary.
    Delta,
    /// Plain values, no dictionary.
    Plain,
}

/// The cleaned table's columns written otherwise than by default: every
/// integer, date and timestamp column is delta-encoded, and a column whose
/// valid values are all different (a one-column primary key, `unique: true`)
/// takes no dictionary.
///
/// Integers, dates and timestamps delta-encoded: the dictionary interned every
/// value of every row (a hash and a lookup that misses the cache; with the
/// text columns' interning a tenth of a narrow validate's CPU), while the
/// differences between neighbouring values take a few bits (dates and
/// timestamps of rows that arrive roughly in order, counts, codes). On the
/// narrow bench the cleaned file halved (53.7 → 27.2 MB) and validate's CPU time
/// fell by a tenth. A unique text column: every value would be interned until
/// the dictionary overflows (1 MiB a row group) and is dropped, for no smaller
/// file. Text and float columns keep the default: their repeats are what a
/// dictionary is for.
pub(super) fn column_encodings(ds: &Dataset) -> Vec<(&str, Encoded)> {
    use crate::config::ColumnType;
    let key = match ds.primary_key.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    ds.columns
        .iter()
        .filter_map(|(name, c)| {
            let unique = c.unique || key == Some(name.as_str());
            match c.ty {
                ColumnType::Int | ColumnType::Date | ColumnType::Timestamp => {
                    Some((name.as_str(), Encoded::Delta))
                }
                _ if unique => Some((name.as_str(), Encoded::Plain)),
                _ => None,
            }
        })
        .collect()
}

/// delta-rs's Parquet settings (Snappy, arrow-rs defaults) with the columns'
/// `encodings` ([`column_encodings`]; none for the quarantine, whose values
/// are the raw text). The rows' line numbers rise by one from row to row:
/// delta-encoded they take a few bits a row where the dictionary, then plain
/// values and Snappy took 4 bytes (a sixth of the narrow bench's cleaned file)
/// and interned 131,072 of them a row group.
pub(super) fn writer_properties(encodings: &[(&str, Encoded)]) -> WriterProperties {
    // `_ingestion_id` is one value a file: delta-encoded it takes no space and
    // no dictionary lookup a row (interning was a fifth of the dictionaries' time).
    let sequences = [source::LINE, "_ingestion_id"].map(|name| (name, Encoded::Delta));
    let plain = WriterProperties::builder().set_compression(Compression::SNAPPY);
    encodings
        .iter()
        .copied()
        .chain(sequences)
        .fold(plain, |b, (name, encoded)| {
            let b = b.set_column_dictionary_enabled(ColumnPath::from(name), false);
            match encoded {
                Encoded::Delta => {
                    b.set_column_encoding(ColumnPath::from(name), Encoding::DELTA_BINARY_PACKED)
                }
                Encoded::Plain => b,
            }
        })
        .build()
}

/// Which table a write is of, and what it replaces.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    /// `cleaned` or `quarantine`, for errors.
    pub(super) which: &'static str,
    /// Its columns written otherwise than by default ([`column_encodings`]).
    pub(super) encodings: &'a [(&'a str, Encoded)],
    /// The partition replaced; None: the whole table (period-less datasets).
    pub(super) period: Option<&'a str>,
    /// Added to the partition instead (an amended verdict's newly valid rows).
    pub(super) append: bool,
}

type Sender = mpsc::Sender<Result<RecordBatch, DataFusionError>>;

/// A Delta write of the rows sent on the returned channel: replaces the
/// target's period (or the whole table for period-less datasets) in one commit.
pub(super) async fn start_write(
    ctx: &SessionContext,
    location: &ledger::DeltaLocation,
    schema: SchemaRef,
    target: Target<'_>,
) -> Result<(Sender, Writer), ValidateError> {
    let path = location.display.clone();
    let table = location
        .open_for_write()
        .await
        .map_err(|source| ValidateError::StageDir {
            path: path.clone(),
            source,
        })?;
    let exists = table.version().is_some();
    // Replacing a period of a table as we created it: our own commit (see
    // delta_commit), without delta-rs's scan of the table for the period's files.
    match (target.period)
        .filter(|_| exists)
        .and_then(|p| delta_commit::Replace::fits(&table, &schema, p))
    {
        Some(replace) if target.append => Ok(our_replace(replace.appending(), target, path)),
        Some(replace) => Ok(our_replace(replace, target, path)),
        None => delta_rs_write(ctx, table, schema, target, path, exists),
    }
}

fn delta_error(
    which: &'static str,
    path: String,
) -> impl FnOnce(deltalake::DeltaTableError) -> ValidateError {
    move |source| ValidateError::Delta {
        which,
        path,
        source: Box::new(source),
    }
}

/// The period replaced by our own commit, written in a task of its own:
/// encoding and compressing the Parquet files runs on another core than the
/// loop that splits the batches (as in delta-rs's write). Dropping the future
/// aborts the task; a write not committed yet then stays uncommitted (its files
/// are orphans for a vacuum).
fn our_replace(
    replace: delta_commit::Replace,
    target: Target<'_>,
    path: String,
) -> (Sender, Writer) {
    let (tx, rx) = mpsc::channel(2);
    let which = target.which;
    let task = SpawnedTask::spawn(
        replace
            .run(rx, writer_properties(target.encodings), which)
            .in_current_span(),
    );
    let fut: Writer = Box::pin(async move {
        let written = task.join_unwind().await.unwrap_or_else(|e| {
            Err(deltalake::DeltaTableError::Generic(format!(
                "the write was cancelled: {e}"
            )))
        });
        written.map(Some).map_err(delta_error(which, path))
    });
    (tx, fut)
}

/// A table to create, or one that asks more of a writer: delta-rs's write,
/// which honours or refuses what the table asks.
fn delta_rs_write(
    ctx: &SessionContext,
    table: deltalake::DeltaTable,
    schema: SchemaRef,
    target: Target<'_>,
    path: String,
    exists: bool,
) -> Result<(Sender, Writer), ValidateError> {
    // A table written before its rows kept their line gains the column (NULL
    // in the rows already there); nothing else about a table changes here.
    let gains_line = exists
        && schema.field_with_name(source::LINE).is_ok()
        && table.snapshot().is_ok_and(|s| {
            s.snapshot()
                .arrow_schema()
                .field_with_name(source::LINE)
                .is_err()
        });
    let (tx, provider) = source::channel_table(schema);
    let plan = ctx
        .read_table(provider)
        .map_err(|source| ValidateError::Engine {
            dataset: path.clone(),
            step: "planning the Delta write",
            source,
        })?
        .into_unoptimized_plan();
    // delta-rs plans the write in its own session (it needs its planner
    // extensions); the plan carries our channel table, so that works.
    let mut write = table
        .write(vec![])
        .with_input_plan(plan)
        .with_writer_properties(writer_properties(target.encodings));
    // One partition: the rows come on one channel and hold one period, so
    // DataFusion's round-robin and delta-rs's hash split by period only copied
    // every batch on its way to the one writer that gets them.
    let one_partition = [(
        "datafusion.execution.target_partitions".to_owned(),
        "1".to_owned(),
    )];
    let session = DeltaSessionContext::new_with_session_overrides(&one_partition.into())
        .map_err(delta_error(target.which, path.clone()))?;
    write = write.with_session_state(Arc::new(session.state()));
    if gains_line {
        write = write.with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
    }
    write = match (exists, target.period) {
        (false, Some(_)) => write
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(["_data_period"]),
        (true, Some(_)) if target.append => write.with_save_mode(SaveMode::Append),
        (true, Some(p)) => write
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(col("_data_period").eq(lit(p))),
        (false, None) => write.with_save_mode(SaveMode::Append),
        (true, None) => write.with_save_mode(SaveMode::Overwrite),
    };
    let which = target.which;
    let fut: Writer = Box::pin(async move {
        write
            .await
            .map(|table| table.version().map(|v| v as i64))
            .map_err(delta_error(which, path))
    });
    Ok((tx, fut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// `_line`, `_ingestion_id` and every integer, date and timestamp column
    /// are delta-encoded without a dictionary; a unique text column only loses
    /// its dictionary; text and float columns keep the defaults (dictionary,
    /// then plain).
    #[test]
    fn line_numbers_integers_dates_and_timestamps_are_delta_encoded() {
        let config = Config::from_yaml(
            "version: 1\nlanded_dir: l\nstage_dir: s\ndatasets:\n  d:\n    file_pattern: '^d\\.csv$'\n    period: none\n    primary_key: [id]\n    columns:\n      id: { type: int }\n      code: { type: string, unique: true }\n      n: { type: int }\n      day: { type: date }\n      at: { type: timestamp }\n      x: { type: float }\n      s: { type: string }\n",
        )
        .unwrap();
        let encodings = column_encodings(&config.datasets["d"]);
        let props = writer_properties(&encodings);
        let delta = Some(Encoding::DELTA_BINARY_PACKED);
        for (name, encoding, dictionary) in [
            (source::LINE, delta, false),
            ("_ingestion_id", delta, false),
            ("id", delta, false),
            ("code", None, false),
            ("n", delta, false),
            ("day", delta, false),
            ("at", delta, false),
            ("x", None, true),
            ("s", None, true),
        ] {
            let path = ColumnPath::from(name);
            assert_eq!(props.encoding(&path), encoding, "{name}");
            assert_eq!(props.dictionary_enabled(&path), dictionary, "{name}");
        }
        // The quarantine's values are text: only its sequences are delta-encoded.
        let props = writer_properties(&[]);
        assert_eq!(props.encoding(&ColumnPath::from("n")), None);
        assert!(props.dictionary_enabled(&ColumnPath::from("n")));
    }
}
