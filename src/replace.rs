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

/// Takes the transaction-scoped advisory lock of (`table`, `period`) if it is
/// free: two runs replacing the same period queue, different periods run side
/// by side. False when another run holds it.
pub async fn try_lock(
    tx: &Transaction<'_>,
    table: &Table,
    period: Option<&str>,
) -> Result<bool, tokio_postgres::Error> {
    let (key, period) = (table.to_string(), period.unwrap_or(""));
    Ok(tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))",
            &[&key, &period],
        )
        .await?
        .get(0))
}

/// Takes the lock of (`table`, `period`), waiting for it when another run holds
/// it, and saying who that is.
pub async fn lock(
    tx: &Transaction<'_>,
    table: &Table,
    period: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    if try_lock(tx, table, period).await? {
        return Ok(());
    }
    let (key, period) = (table.to_string(), period.unwrap_or(""));
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
    tracing::info!(event = "lock_waiting", %table, period, %holder, "waiting for the period's lock");
    let waiting = Instant::now();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
        &[&key, &period],
    )
    .await?;
    tracing::info!(
        event = "lock_acquired",
        waited_ms = waiting.elapsed().as_millis() as u64,
        "got the period's lock"
    );
    Ok(())
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
