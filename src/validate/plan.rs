//! Planning: the validated rows as one DataFusion plan over the source, with
//! the key pre-pass and the processed keys of incremental datasets.

use super::*;

/// The memory a key pre-pass may take, and the header's guess of the rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct PrePassRoom {
    /// For the fingerprints read so far (the ranged scan's set, spilled past it).
    pub(super) keys: usize,
    /// For the duplicated ones, which the main pass looks each row's key up in.
    pub(super) duplicates: usize,
    pub(super) rows: Option<u64>,
    /// The plan runs here: the keys read by a scan are collected here too
    /// (on a Ballista engine, an aggregate on the executors finds them).
    pub(super) in_process: bool,
}

/// What a plan of the validated rows is built from: the dataset, its compiled
/// rules, the file version, and (incremental datasets) the processed keys.
#[derive(Clone, Copy)]
pub(super) struct Planned<'a> {
    pub(super) ds: &'a Dataset,
    pub(super) compiled: &'a Compiled,
    pub(super) row: &'a FileRow,
    pub(super) incremental: Option<&'a (Arc<MemTable>, ChangedRows)>,
}

/// The validated rows: typed columns, raw copies, `_errors`, lineage.
///
/// Uniqueness ([`uniqueness`]): with [`KeyPass::InPass`] the rows carry each
/// key's fingerprint for the [`uniqueness::KeyTracker`] and no row is flagged
/// (the pass stops at the first key seen twice). With [`KeyPass::PrePass`] a
/// key-only pre-pass finds the duplicated key fingerprints, up to
/// `room.duplicates` bytes (past it the file fails with [`TooManyDuplicates`];
/// every key of 30 million rows repeated ten times takes 52 MB), and the main
/// pass looks each row's up in them ([`rules::repeated_key`]). In process the
/// pre-pass is [`key_scan`] (a local CSV file in byte ranges on every core);
/// on a Ballista engine, or without room for the key set, a DataFusion
/// aggregate over the file (it spills). With `room` None (explain) nothing is
/// run.
pub(super) async fn validated_plan(
    ctx: &SessionContext,
    source: Arc<dyn TableProvider>,
    what: Planned<'_>,
    pass: KeyPass,
    room: Option<PrePassRoom>,
) -> Result<DataFrame, DataFusionError> {
    // A name, so `--explain` shows `landed_file` rather than an anonymous table
    // (a second pass over the file replaces the first one's).
    ctx.deregister_table("landed_file")?;
    ctx.register_table("landed_file", source.clone())?;
    let ds = what.ds;
    let typed_key = |c: &String| -> Expr {
        let col = &ds.columns[c];
        rules::typed_value(c, col.ty, col.format.as_deref())
    };
    // Every key as one fingerprint of its typed values (see
    // [`rules::key_fingerprint`]): the pass groups and looks up 16 bytes a row.
    let fingerprints: Vec<Expr> = (what.compiled.keys.iter())
        .map(|key| rules::key_fingerprint(key.iter().map(typed_key).collect()))
        .collect();
    let mut df = ctx.table("landed_file").await?;
    let mut exprs: Vec<Expr> = Vec::new();
    if pass != KeyPass::PrePass {
        for (k, fingerprint) in fingerprints.into_iter().enumerate() {
            let name = uniqueness::fingerprint_column(k);
            df = df
                .with_column(&name, fingerprint)?
                .with_column(&dup_column(k), lit(ScalarValue::Boolean(None)))?;
            exprs.push(col(name.as_str()));
        }
        return finish_plan(ctx, df, what, exprs);
    }
    let repeated = repeated_keys(ctx, &source, &fingerprints, room).await?;
    let keys = what.compiled.keys.iter().zip(fingerprints).zip(repeated);
    for (k, ((key, fingerprint), repeated)) in keys.enumerate() {
        if !repeated.is_empty() {
            tracing::info!(event = "duplicated_keys", key = %key.join(","), duplicated_keys = repeated.len(), "duplicated keys found");
        }
        let flag = match (room, repeated.is_empty()) {
            // No key repeats: no row needs its fingerprint.
            (Some(_), true) => lit(ScalarValue::Boolean(None)),
            _ => rules::repeated_key(repeated, fingerprint),
        };
        df = df.with_column(&dup_column(k), flag)?;
    }
    finish_plan(ctx, df, what, exprs)
}

/// The pre-pass: each key's duplicated fingerprints, by the ranged scan where it
/// can run, else by an aggregate over the file; none without `room` (explain:
/// the lookup as it would run, without running the pre-pass).
async fn repeated_keys(
    ctx: &SessionContext,
    source: &Arc<dyn TableProvider>,
    fingerprints: &[Expr],
    room: Option<PrePassRoom>,
) -> Result<Vec<Vec<i128>>, DataFusionError> {
    let Some(room) = room else {
        return Ok(vec![Vec::new(); fingerprints.len()]);
    };
    let budgets = (room.keys, room.duplicates);
    let ranged = key_scan::duplicates(
        ctx,
        source,
        fingerprints,
        room.rows,
        budgets,
        room.in_process,
    )
    .await?;
    if let Some(ranged) = ranged {
        return Ok(ranged);
    }
    let mut found = Vec::new();
    for (k, fingerprint) in fingerprints.iter().enumerate() {
        let dup_name = format!("__d{k}");
        let dups = ctx
            .read_table(source.clone())?
            .select(vec![fingerprint.clone().alias(&dup_name)])?
            .filter(col(dup_name.as_str()).is_not_null())?
            .aggregate(
                vec![col(dup_name.as_str())],
                vec![count(lit(1)).alias("__n")],
            )?
            .filter(col("__n").gt(lit(1)))?
            .select(vec![col(dup_name.as_str())])?;
        found.push(collect_within(dups, room.duplicates).await?);
    }
    Ok(found)
}

/// The validated rows' columns over `df` (the file's rows with the duplicated
/// keys' flags), after `exprs`.
pub(super) fn finish_plan(
    ctx: &SessionContext,
    mut df: DataFrame,
    what: Planned<'_>,
    mut exprs: Vec<Expr>,
) -> Result<DataFrame, DataFusionError> {
    let Planned {
        ds, compiled, row, ..
    } = what;
    if let Some((seen, changed_rows)) = what.incremental {
        df = with_processed(ctx, df, ds, seen.clone(), *changed_rows)?;
        exprs.extend([
            col(manifest::PK),
            col(manifest::ROW_HASH),
            col(manifest::SKIP),
        ]);
    }
    for (name, typed) in &compiled.typed {
        exprs.push(typed.clone().alias(name));
    }
    for name in ds.columns.keys() {
        // As the source holds it: a native Parquet value becomes text only in a
        // rejected row (formatting every value was a fifth of its validate CPU).
        exprs.push(rules::raw(name).alias(format!("{RAW_PREFIX}{name}")));
    }
    exprs.push(rules::row_errors(&compiled.checks).alias("_errors"));
    exprs.push(col(source::LINE));
    exprs.push(lit(row.id).alias("_ingestion_id"));
    exprs.push(lit(row.period.clone().unwrap_or_default()).alias("_data_period"));
    df.select(exprs)
}

/// Incremental datasets: each row's key (`_pk`: its typed key values as text,
/// null when one is missing or not of its type), the md5 of its delivered
/// values (`_row_hash`), and `_skip`: an earlier night processed the key (with
/// `changed_rows: append`, only when the values are the same).
pub(super) fn with_processed(
    ctx: &SessionContext,
    df: DataFrame,
    ds: &Dataset,
    seen: Arc<MemTable>,
    changed_rows: ChangedRows,
) -> Result<DataFrame, DataFusionError> {
    use datafusion::functions::expr_fn::{coalesce, concat_ws, md5};
    use datafusion::logical_expr::{cast, when};
    const SEP: &str = "\u{1f}";
    let key: Vec<Expr> = ds
        .primary_key
        .iter()
        .map(|c| {
            let column = &ds.columns[c];
            cast(
                rules::typed_value(c, column.ty, column.format.as_deref()),
                DataType::Utf8,
            )
        })
        .collect();
    let any_null = key
        .iter()
        .map(|k| k.clone().is_null())
        .reduce(Expr::or)
        .expect("incremental datasets have a primary key");
    let pk = when(any_null, lit(ScalarValue::Utf8(None))).otherwise(concat_ws(lit(SEP), key))?;
    // \u{0} stands for a missing value, which no delivered text contains.
    let values: Vec<Expr> = ds
        .columns
        .keys()
        .map(|c| coalesce(vec![rules::text(c), lit("\u{0}")]))
        .collect();
    let hash = md5(concat_ws(lit(SEP), values));
    let df = df
        .with_column(manifest::PK, pk)?
        .with_column(manifest::ROW_HASH, hash)?;
    // The processed keys are the build side; the snapshot streams through.
    let seen = ctx.read_table(seen)?;
    let df = seen.join_on(
        df,
        JoinType::Right,
        [col(manifest::SEEN_PK).eq(col(manifest::PK))],
    )?;
    let known = col(manifest::SEEN_PK).is_not_null();
    let skip = match changed_rows {
        ChangedRows::Ignore => known,
        ChangedRows::Append => known.and(col(manifest::SEEN_HASH).eq(col(manifest::ROW_HASH))),
    };
    df.with_column(manifest::SKIP, skip)
}

/// The duplicated key fingerprints `df` finds, failing with
/// [`TooManyDuplicates`] once they take more than `budget` bytes.
pub(super) async fn collect_within(
    df: DataFrame,
    budget: usize,
) -> Result<Vec<i128>, DataFusionError> {
    let mut stream = df.execute_stream().await?;
    let mut found = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let fingerprints = batch.column(0).as_primitive::<Decimal128Type>();
        found.extend(fingerprints.iter().flatten());
        if rules::repeated_key_bytes(found.len()) > budget {
            return Err(DataFusionError::External(Box::new(TooManyDuplicates {
                keys: found.len(),
                budget,
            })));
        }
    }
    Ok(found)
}
