//! An amended verdict's load (see `validate::replay::amendable`): when stage
//! holds exactly the rows of the verdict it amends, only the rows the
//! amendment made valid are appended to the period's partition, and the rows
//! it withdrew to quarantine are deleted from it by primary key.

use chrono::Utc;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use tokio_postgres::Client;

use super::{
    Approval, Attempt, AttemptError, Gate, LoadError, Target, cleaned_rows, read, source_rows,
};
use crate::config::Config;
use crate::db::Table;
use crate::ledger::{self, Verdict};
use crate::partition;
use crate::stage_table::{DATA_PERIOD, INGESTION_ID};

/// The base of an amended verdict (`meta.validation_log.amended_from`): the
/// verdict whose cleaned rows it keeps. When stage holds exactly those (the
/// load in force copied them and the period still has them all), the load
/// appends the newly valid rows to the period instead of swapping it whole.
#[derive(Debug, Clone)]
pub(super) struct Append {
    ingestion_id: i64,
    cleaned_version: i64,
    quarantine_version: i64,
    rows: i64,
    /// Of the base's cleaned rows, how many the amendment withdrew.
    withdrawn: i64,
}

impl Append {
    /// The base of `verdict`, when it is an amendment.
    pub(super) async fn of(
        client: &Client,
        verdict: &Verdict,
    ) -> Result<Option<Append>, LoadError> {
        if verdict.amended_from.is_none() {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT b.ingestion_id, b.cleaned_version, b.quarantine_version,
                        coalesce(b.rows_valid, 0), coalesce(a.rows_withdrawn, 0)
                   FROM meta.validation_log a JOIN meta.validation_log b ON b.id = a.amended_from
                  WHERE a.id = $1",
                &[&verdict.validation_id],
            )
            .await
            .map_err(read("read meta.validation_log"))?;
        Ok(row.and_then(|r| {
            Some(Append {
                ingestion_id: r.get(0),
                cleaned_version: r.get::<_, Option<i64>>(1)?,
                quarantine_version: r.get::<_, Option<i64>>(2)?,
                rows: r.get(3),
                withdrawn: r.get(4),
            })
        }))
    }

    /// `df` (the period's cleaned rows at the amended version) cut to the
    /// rows whose line the base quarantined: what the amendment appended.
    pub(super) async fn appended(
        &self,
        ctx: &SessionContext,
        config: &Config,
        name: &str,
        period: Option<&str>,
        df: DataFrame,
    ) -> Result<DataFrame, Box<dyn std::error::Error + Send + Sync>> {
        let table = ledger::delta_location(config, "quarantine", name)
            .open_version(self.quarantine_version)
            .await?;
        let mut lines = ctx
            .read_table(table.table_provider().await?)?
            .filter(col(INGESTION_ID).eq(lit(self.ingestion_id)))?;
        if let Some(p) = period {
            lines = lines.filter(col(DATA_PERIOD).eq(lit(p)))?;
        }
        let lines = lines.select(vec![col(LINE).alias(BASE_LINE)])?;
        Ok(df.join(
            lines,
            datafusion::common::JoinType::LeftSemi,
            &[LINE],
            &[BASE_LINE],
            None,
        )?)
    }

    /// The primary key of the base's cleaned rows (`base`, the period's at
    /// the base's version) whose line the amended version (`amended`) no
    /// longer holds: the rows the amendment withdrew to quarantine.
    pub(super) fn withdrawn(
        &self,
        base: DataFrame,
        amended: DataFrame,
        key: &[String],
    ) -> Result<DataFrame, datafusion::error::DataFusionError> {
        let amended = amended.select(vec![col(LINE).alias(AMENDED_LINE)])?;
        base.filter(col(INGESTION_ID).eq(lit(self.ingestion_id)))?
            .join(
                amended,
                datafusion::common::JoinType::LeftAnti,
                &[LINE],
                &[AMENDED_LINE],
                None,
            )?
            .select_columns(&key.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The base's cleaned rows, at its version.
    pub(super) fn version(&self) -> i64 {
        self.cleaned_version
    }

    /// Whether stage holds exactly the base's rows: the period's latest load
    /// copied them, and its partition `held` rows, as many.
    pub(super) async fn holds(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        name: &str,
        period: &str,
        held: u64,
    ) -> Result<bool, tokio_postgres::Error> {
        let latest = tx
            .query_opt(
                "SELECT l.source_delta_version, l.rows_inserted, v.ingestion_id
                   FROM meta.load_log l LEFT JOIN meta.validation_log v ON v.id = l.validation_id
                  WHERE l.dataset = $1 AND l.period = $2 AND l.status = 'loaded'
                  ORDER BY l.id DESC LIMIT 1",
                &[&name, &period],
            )
            .await?;
        Ok(latest.is_some_and(|r| {
            r.get::<_, Option<i64>>(0) == Some(self.cleaned_version)
                && r.get::<_, Option<i64>>(1) == Some(self.rows)
                && r.get::<_, Option<i64>>(2) == Some(self.ingestion_id)
                && held as i64 == self.rows
        }))
    }
}

/// The cleaned rows' line in their file.
const LINE: &str = "_line";
/// The base's quarantined lines, as joined.
const BASE_LINE: &str = "__base_line";
/// The amended version's cleaned lines, as joined.
const AMENDED_LINE: &str = "__amended_line";

/// What an amended verdict's load changes in the period's partition: the
/// rows it appends, and the keys of the rows it withdrew (None when it
/// withdrew none).
pub(super) struct Amended {
    pub(super) appended: DataFrame,
    pub(super) withdrawn: Option<DataFrame>,
}

/// An amended verdict's newly valid rows and withdrawn keys ([`Append`]),
/// when it is one and they can be told apart; None: the period is replaced
/// whole (so too when it withdrew rows from a dataset without a primary key).
pub(super) async fn amended_rows(
    ctx: &SessionContext,
    config: &Config,
    target: &Target<'_>,
    approval: &Approval<'_>,
) -> Option<Amended> {
    let base = approval.append.as_ref()?;
    let period = target.period.as_deref();
    let (name, ds) = (target.name, target.ds);
    let skipped = |e: &dyn std::fmt::Display| {
        tracing::info!(event = "append_skipped", error = %e, "the amended verdict's rows cannot be told apart: the period is replaced whole");
    };
    if base.withdrawn > 0 && ds.primary_key.is_empty() {
        skipped(&"it withdrew rows from a dataset without a primary key to delete them by");
        return None;
    }
    let appended =
        match source_rows(ctx, config, name, ds, period, &approval.source, Some(base)).await {
            Ok((rows, _)) => rows,
            Err(e) => {
                skipped(&crate::exit::report(&e));
                return None;
            }
        };
    if base.withdrawn == 0 {
        return Some(Amended {
            appended,
            withdrawn: None,
        });
    }
    let super::Source::Delta { version } = approval.source else {
        return None;
    };
    let read = async {
        let old = cleaned_rows(ctx, config, name, period, base.version(), None).await?;
        let new = cleaned_rows(ctx, config, name, period, version, None).await?;
        let keys = base.withdrawn(old, new, &ds.primary_key)?;
        // Typed as stage holds them.
        let typed: Vec<datafusion::prelude::Expr> = (ds.primary_key.iter())
            .map(|k| {
                let ty = ds.columns[k].ty.arrow_type();
                datafusion::prelude::cast(col(k.as_str()), ty).alias(k)
            })
            .collect();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(keys.select(typed)?)
    };
    match read.await {
        Ok(keys) => Some(Amended {
            appended,
            withdrawn: Some(keys),
        }),
        Err(e) => {
            skipped(&crate::exit::report(&*e));
            None
        }
    }
}

/// What an amended verdict's load did to the period's partition.
pub(super) struct Amending {
    /// Rows the partition held.
    pub(super) held: u64,
    /// Withdrawn rows deleted by key.
    pub(super) removed: u64,
    /// Newly valid rows appended.
    pub(super) added: u64,
    /// The gates `--force` overrode.
    pub(super) overrides: Vec<Gate>,
}

impl Attempt<'_> {
    /// An amended verdict's change to the period's partition made in `tx`,
    /// when stage holds exactly the base's rows ([`Append::holds`]): the rows
    /// it withdrew deleted by primary key, its newly valid rows COPYd in at
    /// the partition's `_loaded_at` (the time the load in force swapped it
    /// in). None (and nothing written) otherwise, or when the rows do not add
    /// up to the verdict's: the period is swapped whole.
    pub(super) async fn append(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        amended: Amended,
    ) -> Result<Option<Amending>, AttemptError> {
        let (Some(base), Some(period)) = (&self.approval.append, self.target.period.as_deref())
        else {
            return Ok(None);
        };
        let (Some(partition), held) =
            partition::rows_of_period(tx, &self.target.table, period).await?
        else {
            return Ok(None);
        };
        if !base.holds(tx, self.target.name, period, held).await? {
            tracing::info!(
                event = "append_skipped",
                "stage does not hold exactly the rows the amended verdict keeps: the period is replaced whole"
            );
            return Ok(None);
        }
        // Withdrawn rows shrink the period as a swap would.
        let overrides = self.shrink_gate(held)?;
        let Some(rows) = self.stamped(tx, &partition, amended.appended).await? else {
            return Ok(None);
        };
        tx.batch_execute("SAVEPOINT append").await?;
        let removed = match amended.withdrawn {
            Some(keys) => self.withdraw(tx, &partition, keys).await?,
            None => 0,
        };
        let added = crate::pg_copy::copy_dataframe(tx, &partition, rows, || {
            tracing::info!(event = "copying", appending = true, rows_held = held, rows_removed = removed, %partition, "appending the amended verdict's newly valid rows")
        })
        .await?;
        if (held + added) as i64 - removed as i64 != self.approval.rows_new {
            // Lines that do not tell the rows apart (kept before lines were):
            // undone, and the period is replaced whole.
            tx.batch_execute("ROLLBACK TO SAVEPOINT append").await?;
            tracing::info!(
                event = "append_skipped",
                rows_held = held,
                rows_removed = removed,
                rows_read = added,
                rows_counted = self.approval.rows_new,
                "the rows do not add up to the amended verdict's: the period is replaced whole"
            );
            return Ok(None);
        }
        tx.batch_execute("RELEASE SAVEPOINT append").await?;
        Ok(Some(Amending {
            held,
            removed,
            added,
            overrides,
        }))
    }

    /// `rows` at the `_loaded_at` of the period's `partition`; None when it
    /// holds no row to tell it.
    async fn stamped(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        partition: &Table,
        rows: DataFrame,
    ) -> Result<Option<DataFrame>, AttemptError> {
        let at: Option<chrono::DateTime<Utc>> = tx
            .query_opt(
                &format!(
                    "SELECT {} FROM {partition} LIMIT 1",
                    crate::db::quote_ident(crate::stage_table::LOADED_AT)
                ),
                &[],
            )
            .await?
            .and_then(|r| r.get(0));
        let Some(at) = at else {
            return Ok(None);
        };
        let stamp = datafusion::scalar::ScalarValue::TimestampMicrosecond(
            Some(at.timestamp_micros()),
            Some("UTC".into()),
        );
        let rows = rows
            .with_column(crate::stage_table::LOADED_AT, lit(stamp))
            .map_err(|e| AttemptError::Failed {
                transient: false,
                source: Box::new(e),
            })?;
        Ok(Some(rows))
    }

    /// Deletes from `partition` the rows whose primary key is one of `keys`
    /// (an amended verdict's withdrawn rows), through a temporary table;
    /// returns how many.
    async fn withdraw(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        partition: &Table,
        keys: DataFrame,
    ) -> Result<u64, AttemptError> {
        let key: Vec<String> = (self.target.ds.primary_key.iter())
            .map(|k| crate::db::quote_ident(k))
            .collect();
        let temp = Table::new("pg_temp", "pipeline_withdrawn");
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {temp} ON COMMIT DROP AS SELECT {} FROM {partition} WITH NO DATA",
            key.join(", ")
        ))
        .await?;
        crate::pg_copy::copy_dataframe(tx, &temp, keys, || {}).await?;
        let on: Vec<String> = key.iter().map(|k| format!("p.{k} = w.{k}")).collect();
        let removed = tx
            .execute(
                &format!(
                    "DELETE FROM {partition} p USING {temp} w WHERE {}",
                    on.join(" AND ")
                ),
                &[],
            )
            .await?;
        tx.batch_execute(&format!("DROP TABLE {temp}")).await?;
        Ok(removed)
    }
}
