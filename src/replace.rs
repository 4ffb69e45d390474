//! Replacing one period of a PostgreSQL table, the way load-stage and transform
//! both do it, inside the caller's transaction:
//!
//! advisory lock on (table, period) → DELETE the period's rows (every row for a
//! table without periods) → [the caller's checks] → binary COPY of the new rows
//! ([`crate::pg_copy`]) → [the caller's log row] → COMMIT by the caller.
//!
//! Any failure before COMMIT rolls everything back, so the period holds either
//! its old rows or its new ones; other periods are never touched.

use std::time::Instant;

use tokio_postgres::Transaction;

use crate::db::{Table, quote_ident};
use crate::stage_table::DATA_PERIOD;

/// The lock is held by another run and the caller asked not to wait.
#[derive(Debug)]
pub struct Busy;

/// Takes the transaction-scoped advisory lock of (`table`, `period`): two runs
/// replacing the same period queue, different periods run side by side. When
/// the lock is taken, says who holds it and, unless `no_wait` (then `Busy`),
/// waits for it.
pub async fn lock(
    tx: &Transaction<'_>,
    table: &Table,
    period: Option<&str>,
    no_wait: bool,
) -> Result<Result<(), Busy>, tokio_postgres::Error> {
    let (key, period) = (table.to_string(), period.unwrap_or(""));
    let got: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))",
            &[&key, &period],
        )
        .await?
        .get(0);
    if got {
        return Ok(Ok(()));
    }
    if no_wait {
        return Ok(Err(Busy));
    }
    // Say who holds it, so an operator knows what the run waits for.
    let holder = tx
        .query_opt(
            "SELECT a.pid, coalesce(a.application_name, '')
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                AND l.classid = hashtext($1)::oid AND l.objid = hashtext($2)::oid
              LIMIT 1",
            &[&key, &period],
        )
        .await?
        .map(|r| format!("pid {} ({})", r.get::<_, i32>(0), r.get::<_, String>(1)))
        .unwrap_or_else(|| "another run".into());
    tracing::info!(%table, period, %holder, "waiting for the period's lock");
    let waiting = Instant::now();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
        &[&key, &period],
    )
    .await?;
    tracing::info!(
        waited_ms = waiting.elapsed().as_millis() as u64,
        "got the period's lock"
    );
    Ok(Ok(()))
}

/// Deletes the period's rows (every row when `period` is None); how many.
pub async fn delete(
    tx: &Transaction<'_>,
    table: &Table,
    period: Option<&str>,
) -> Result<u64, tokio_postgres::Error> {
    match period {
        Some(p) => {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE {} = $1",
                    quote_ident(DATA_PERIOD)
                ),
                &[&p],
            )
            .await
        }
        None => tx.execute(&format!("DELETE FROM {table}"), &[]).await,
    }
}
