//! An amended verdict's load (see `validate::replay::amendable`): when stage
//! holds exactly the rows of the verdict it amends, only the rows the
//! amendment made valid are appended to the period's partition.

use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, col, lit};
use tokio_postgres::Client;

use super::{Approval, LoadError, Target, read, source_rows};
use crate::config::Config;
use crate::ledger::{self, Verdict};
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
        // An amendment that withdrew cleaned rows took rows out of the
        // period, which stage cannot tell by line: the period is swapped.
        let row = client
            .query_opt(
                "SELECT b.ingestion_id, b.cleaned_version, b.quarantine_version,
                        coalesce(b.rows_valid, 0)
                   FROM meta.validation_log a JOIN meta.validation_log b ON b.id = a.amended_from
                  WHERE a.id = $1 AND coalesce(a.rows_withdrawn, 0) = 0",
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

/// An amended verdict's newly valid rows ([`Append`]), when it is one and
/// they can be told apart; None: the period is replaced whole.
pub(super) async fn appended_rows(
    ctx: &SessionContext,
    config: &Config,
    target: &Target<'_>,
    approval: &Approval<'_>,
) -> Option<DataFrame> {
    let only = Some(approval.append.as_ref()?);
    let period = target.period.as_deref();
    let (name, ds) = (target.name, target.ds);
    match source_rows(ctx, config, name, ds, period, &approval.source, only).await {
        Ok((rows, _)) => Some(rows),
        Err(e) => {
            tracing::info!(event = "append_skipped", error = %crate::exit::report(&e), "the amended verdict's new rows cannot be told apart: the period is replaced whole");
            None
        }
    }
}
