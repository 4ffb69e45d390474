//! Writing a model's result: its table following the result's columns
//! (`on_schema_change`), the period's rows replaced in one transaction while
//! they are kept for the audits and the models downstream, the audits run
//! before COMMIT, and the run recorded in meta.transform_log.

use super::*;
use crate::db::Pooled;
/// Why writing a model's result failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// The server's own message, its cause kept.
    #[error("{}", server_message(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] db::DbError),
    #[error(transparent)]
    Copy(#[from] crate::pg_copy::CopyError),
    /// Keeping the rows, or reading them back for the audits.
    #[error(transparent)]
    Engine(#[from] DataFusionError),
    #[error("{0}")]
    Schema(String),
    /// An audit's query failed (its SQL names a column that is not there...).
    #[error("{0}")]
    Audit(String),
    /// An `error` audit failed: the transaction was rolled back.
    #[error("blocked by audits")]
    Rejected(Vec<AuditResult>),
}

/// What one model's replace transaction committed.
pub(super) struct Written {
    pub(super) deleted: u64,
    pub(super) inserted: u64,
    pub(super) audits: Vec<AuditResult>,
    pub(super) engine: String,
    /// What its `on_schema_change` changed in the table first.
    pub(super) schema_change: Vec<String>,
}

/// Why a model was rejected: each blocking audit, its count and a few rows.
pub(super) fn rejection(m: &Model, results: &[AuditResult]) -> String {
    let failed: Vec<String> = (results.iter())
        .filter(|r| !r.passed && r.severity == Severity::Error)
        .map(AuditResult::describe)
        .collect();
    format!(
        "{}: {}; the period keeps its previous rows",
        m.path.display(),
        failed.join("; ")
    )
}

/// What PostgreSQL said, or (no server error: I/O, a closed connection) the
/// client's whole cause chain.
pub(super) fn server_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => crate::exit::report(e),
    }
}

/// The target's columns as the model's result implies them.
pub(super) fn expected_columns(schema: &Schema) -> Result<Vec<PgColumn>, WriteError> {
    schema
        .fields()
        .iter()
        .map(|f: &Arc<Field>| {
            let sql_type = pg_table::pg_type(f.data_type()).ok_or_else(|| {
                WriteError::Schema(format!(
                    "column `{}` has type {} which has no PostgreSQL counterpart here; cast it",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(PgColumn {
                name: f.name().clone(),
                sql_type,
                not_null: f.name() == DATA_PERIOD,
            })
        })
        .collect()
}

/// One model's rows being written, and what they were made of.
pub(super) struct Made<'a> {
    pub(super) model: &'a Model,
    pub(super) inputs: &'a ledger::InputVersions,
    pub(super) period: &'a str,
    pub(super) periodic: bool,
    pub(super) started: Instant,
    /// What computes the rows ([`engine_name`]).
    pub(super) engine: String,
    /// Where the rows are kept as they are written ([`kept`]); None when
    /// neither an audit nor a model of this run reads them, so the rows are
    /// only copied.
    pub(super) kept: Option<PathBuf>,
    /// Where the audits run and the kept rows are registered.
    pub(super) local: &'a SessionContext,
    /// Reads the target's other periods as they stand.
    pub(super) reader: &'a Arc<Pooled>,
}

/// COPYs the model's rows into `target`, keeping them at `kept` as they
/// pass ([`kept::tee`]). A hash join cannot spill: when one exhausts the
/// memory pool, the rows copied so far are rolled back (to a savepoint) and
/// the model runs again with sort-merge joins, whose sorts spill to disk, so
/// a model larger than the pool still finishes, slower.
pub(super) async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Model,
    target: &Table,
    df: DataFrame,
    kept: Option<&std::path::Path>,
) -> Result<u64, WriteError> {
    async fn teed(
        tx: &tokio_postgres::Transaction<'_>,
        target: &Table,
        df: DataFrame,
        kept: Option<&std::path::Path>,
    ) -> Result<u64, WriteError> {
        let Some(kept) = kept else {
            return Ok(crate::pg_copy::copy_dataframe(tx, target, df, || {}).await?);
        };
        let schema = df.schema().inner().clone();
        tracing::debug!(event = "model_rows_kept", path = %kept.display(), "keeping the rows for the audits and the models downstream");
        let (stream, tee) = kept::tee(df.execute_stream().await?, kept)?;
        let copied =
            crate::pg_copy::copy_stream(tx.client(), target, schema, stream, || {}).await?;
        tee.finish()?;
        Ok(copied)
    }
    tx.batch_execute("SAVEPOINT model_rows").await?;
    match teed(tx, target, df.clone(), kept).await {
        Err(e) if crate::exit::report(&e).contains("Resources exhausted") => {
            tracing::warn!(event = "model_sort_merge", model = %m.target(), reason = %crate::exit::one_line(&e), "a hash join exhausted the memory pool; running {} again with sort-merge joins, which spill", m.target());
            tx.batch_execute("ROLLBACK TO SAVEPOINT model_rows").await?;
            let (mut state, plan) = df.into_parts();
            state.config_mut().options_mut().optimizer.prefer_hash_join = false;
            teed(tx, target, DataFrame::new(state, plan), kept).await
        }
        other => other,
    }
}

/// The model's `on_schema_change` applied to its table, in a transaction of
/// its own before the replace transaction (the replace's audits read the
/// table's other periods from another connection while it waits open, and
/// an ALTER TABLE's lock held there would block them): columns added (NULL
/// in the other periods until they are recomputed), and under `sync` dropped
/// and retyped. A change the policy does not allow stops the model with the
/// statements to apply, before anything is changed. Returns what changed.
pub(super) async fn apply_schema_change(
    conn: &mut Client,
    m: &Model,
    target: &Table,
    expected: &[PgColumn],
) -> Result<Vec<String>, WriteError> {
    let Some(actual) = db::table_columns(&*conn, target).await? else {
        return Ok(Vec::new());
    };
    let policy = m.on_schema_change;
    let d = schema_change::decide(policy, schema_change::changes(target, expected, &actual));
    if !d.refuse.is_empty() {
        return Err(WriteError::Schema(d.refusal(target, policy)));
    }
    if d.apply.is_empty() {
        return Ok(Vec::new());
    }
    let tx = conn.transaction().await?;
    for c in &d.apply {
        tx.batch_execute(&c.statement).await.map_err(|e| {
            WriteError::Schema(format!(
                "{target}: cannot apply `{}` ({}): {}; nothing was changed",
                c.statement,
                c.words,
                server_message(&e)
            ))
        })?;
    }
    tx.commit().await?;
    for c in &d.apply {
        tracing::info!(event = "model_schema_changed", model = %m.target(), change = %c.words, on_schema_change = policy.as_str(), "{target}: {}", c.words);
    }
    Ok(d.apply.into_iter().map(|c| c.words).collect())
}

/// [`replace_model_rows`]; when the target table is still to be created,
/// under a lock the runs of other periods wait for: two would both create
/// it and one fail on PostgreSQL's catalog. The lock is taken before the
/// replace transaction begins, so that transaction sees a table the other
/// run committed meanwhile (a name looked up inside a transaction may be
/// answered from a cache of the catalog as it was).
pub(super) async fn write_model(
    conn: &mut Client,
    made: &Made<'_>,
    df: DataFrame,
) -> Result<Written, WriteError> {
    let target = Table::new(&made.model.schema, &made.model.name);
    if db::table_columns(&*conn, &target).await?.is_some() {
        return replace_model_rows(conn, made, df).await;
    }
    let key: i64 = conn
        .query_one(
            "SELECT hashtextextended($1, 0)",
            &[&format!("pipeline create {target}")],
        )
        .await?
        .get(0);
    conn.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
    let written = replace_model_rows(conn, made, df).await;
    // Closing the connection releases it too.
    let _ = conn.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
    written
}

/// Replaces the period's rows of the model's target in one transaction.
pub(super) async fn replace_model_rows(
    conn: &mut Client,
    made: &Made<'_>,
    df: DataFrame,
) -> Result<Written, WriteError> {
    let Made {
        model: m,
        period,
        periodic,
        ..
    } = *made;
    let target = Table::new(&m.schema, &m.name);
    let schema: SchemaRef = df.schema().inner().clone();
    let expected = expected_columns(&schema)?;
    let schema_change = apply_schema_change(conn, m, &target, &expected).await?;
    let tx = conn.transaction().await?;
    // A model without periods is replaced whole: its lock is the table's.
    let replaced = periodic.then_some(period);
    replace::lock(&tx, &target, replaced).await?;
    match db::table_columns(&tx, &target).await? {
        None => {
            let cols: Vec<String> = expected
                .iter()
                .map(|c| {
                    format!(
                        "{} {}{}",
                        quote_ident(&c.name),
                        c.sql_type,
                        if c.not_null { " NOT NULL" } else { "" }
                    )
                })
                .collect();
            tx.batch_execute(&format!("CREATE TABLE {target} ({})", cols.join(", ")))
                .await?;
            if periodic {
                tx.batch_execute(&format!(
                    "CREATE INDEX ON {target} ({})",
                    quote_ident(DATA_PERIOD)
                ))
                .await?;
            }
            tracing::info!(event = "model_table_created", model = %m.target(), "created target table");
        }
        Some(actual) => {
            // Changed by someone else since it was applied: said, not written.
            let left = schema_change::changes(&target, &expected, &actual);
            if !left.is_empty() {
                let d = schema_change::Decision {
                    apply: Vec::new(),
                    refuse: left,
                };
                return Err(WriteError::Schema(d.refusal(&target, m.on_schema_change)));
            }
        }
    }
    let deleted = replace::delete(&tx, &target, replaced).await?;
    let inserted = copy_rows(&tx, m, &target, df, made.kept.as_deref()).await?;
    if let Some(kept) = &made.kept {
        // The table as COMMIT would leave it, read by the audits and by the
        // models downstream in this run.
        let previous = match PgTable::open(made.reader.clone(), &m.schema, &m.name).await? {
            Some(t) => Some(made.local.read_table(Arc::new(t))?),
            None => None,
        };
        let view = kept::view(made.local, kept, &schema, replaced, previous).await?;
        let name = TableReference::partial(m.schema.as_str(), m.name.as_str());
        let _ = made.local.deregister_table(name.clone());
        made.local.register_table(name, Arc::new(view))?;
    }
    let results = audit(made.local, m, &target, replaced, inserted, deleted).await?;
    let run_id = log_done(&tx, made, deleted, inserted).await?;
    record_audits(&tx, &m.target(), replaced, &results, Some(run_id), false).await?;
    tx.commit().await?;
    Ok(Written {
        deleted,
        inserted,
        audits: results,
        engine: made.engine.clone(),
        schema_change,
    })
}

/// The engine that computes models, as meta.transform_log records it:
/// `datafusion 55.2.0/dialect 1` in process, with ` ballista://host:port`
/// on a cluster (the same plans either way).
pub fn engine_name(engine: &crate::config::Engine) -> String {
    let df = crate::dialect::ENGINE.clone();
    match engine {
        crate::config::Engine::InProcess => df,
        crate::config::Engine::Ballista(address) => format!("{df} ballista://{address}"),
    }
}

/// Runs the model's audits in DataFusion over the rows kept, while the
/// replace transaction is open (nobody sees the rows until COMMIT); a failing `error` audit is
/// [`WriteError::Rejected`]: the caller drops the transaction, rolling it back.
pub(super) async fn audit(
    ctx: &SessionContext,
    m: &Model,
    target: &Table,
    period: Option<&str>,
    inserted: u64,
    deleted: u64,
) -> Result<Vec<AuditResult>, WriteError> {
    let scope = Scope {
        target,
        period,
        rows: inserted,
        previous_rows: period.is_none().then_some(deleted as i64),
    };
    let results = audits::run(ctx, &m.audits, &scope)
        .await
        .map_err(WriteError::Audit)?;
    for r in results.iter().filter(|r| !r.passed) {
        tracing::warn!(event = "audit_failed", model = %m.target(), audit = %r.audit, severity = r.severity.as_str(), failing = r.failing, "{}", r.describe());
    }
    if (results.iter()).any(|r| !r.passed && r.severity == Severity::Error) {
        return Err(WriteError::Rejected(results));
    }
    Ok(results)
}

/// Keeps audit results in reporting.audit_results: in the replace
/// transaction when the rows commit, after the rollback when they were
/// blocked (`blocked`).
pub(super) async fn record_audits(
    client: &impl tokio_postgres::GenericClient,
    model: &str,
    period: Option<&str>,
    results: &[AuditResult],
    run_id: Option<i64>,
    blocked: bool,
) -> Result<(), tokio_postgres::Error> {
    for r in results {
        client
            .execute(
                "INSERT INTO reporting.audit_results
                    (model, period, audit, kind, severity, passed, failing, sample,
                     duration_ms, blocked, transform_log_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &model,
                    &period,
                    &r.audit,
                    &r.kind,
                    &r.severity.as_str(),
                    &r.passed,
                    &r.failing,
                    &r.sample,
                    &(r.duration_ms as i64),
                    &blocked,
                    &run_id,
                ],
            )
            .await?;
    }
    Ok(())
}

/// The model's `done` row, in its replace transaction: what it wrote and what
/// it was made of (fingerprint, inputs).
pub(super) async fn log_done(
    tx: &tokio_postgres::Transaction<'_>,
    made: &Made<'_>,
    deleted: u64,
    inserted: u64,
) -> Result<i64, tokio_postgres::Error> {
    let m = made.model;
    let elapsed = made.started.elapsed().as_millis() as i64;
    let inputs = serde_json::to_value(made.inputs).expect("a map of ids serialises");
    let row = tx
        .query_one(
            "INSERT INTO meta.transform_log
            (model, source_file, period, status, rows_deleted, rows_inserted, started_at,
             finished_at, duration_ms, fingerprint, inputs, engine)
         VALUES ($1, $2, $3, 'done', $4, $5, $6, clock_timestamp(), $7, $8, $9, $10)
         RETURNING id",
            &[
                &m.target(),
                &m.path.display().to_string(),
                &logged(made.period),
                &(deleted as i64),
                &(inserted as i64),
                &(Utc::now() - chrono::Duration::milliseconds(elapsed)),
                &elapsed,
                &m.fingerprint,
                &inputs,
                &made.engine,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Best effort: failed, rejected and skipped models leave a row in
/// meta.transform_log; a rejected one its audits' results too.
pub(super) async fn record(client: &Client, o: &ModelOutcome, period: &str, engine: &str) {
    let periodic = !o.full_refresh;
    let status = match o.status {
        ModelStatus::Skipped | ModelStatus::Rejected => o.status,
        _ => ModelStatus::Failed,
    }
    .as_str();
    let result = async {
        let row = client
            .query_one(
                "INSERT INTO meta.transform_log (model, source_file, period, status, error, finished_at, duration_ms, engine)
                 VALUES ($1, $2, $3, $4, $5, clock_timestamp(), $6, $7) RETURNING id",
                &[&o.model, &o.file, &logged(period), &status, &o.error, &(o.duration_ms as i64), &engine],
            )
            .await?;
        let period = periodic.then_some(period);
        record_audits(client, &o.model, period, &o.audits, Some(row.get(0)), true).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(event = "transform_log_failed", error = %e, "could not record the model in meta.transform_log");
    }
}
