//! `status --deep`: what the quick status cannot see without reading every
//! row. Counts agree when a row of stage was edited in place, and the ledger
//! names Delta versions whose Parquet files may since have been deleted; so
//! for each period:
//!
//! - stage's rows are compared, value by value, with the cleaned rows its
//!   load in force copied (the Delta version meta.load_log names), both read
//!   by DataFusion: rows only in stage, rows only in the lake;
//! - every Parquet file of the verdict in force (its cleaned and quarantine
//!   versions), for the period, is asked for: a replay or a load reads them.
//!
//! Nothing is recorded at load time for this: the lake is the checksum.

use crate::db::Pooled;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{cast, lit};
use datafusion::prelude::ident;
use object_store::ObjectStoreExt;

use super::{PeriodStatus, StatusError, db};
use crate::config::{Config, Dataset};
use crate::ledger::{self, Verdict};
use crate::pg_table::PgTable;
use crate::stage_table::DATA_PERIOD;

/// Adds to each period what reading its rows and files in full finds wrong.
pub(super) async fn check(
    config: &Config,
    periods: &mut [PeriodStatus],
) -> Result<(), StatusError> {
    let client = match crate::db::connect_as("pipeline status --deep").await {
        Ok(c) => Arc::new(Pooled::own(c)),
        Err(e) => {
            let why = crate::exit::report(&e);
            for p in periods.iter_mut() {
                p.problems.push(format!("--deep could not connect: {why}"));
            }
            return Ok(());
        }
    };
    let mut missing: HashMap<(String, &'static str, i64, Option<String>), Option<String>> =
        HashMap::new();
    for p in periods.iter_mut() {
        let Some(ds) = config.datasets.get(&p.dataset) else {
            continue;
        };
        if p.file_status.as_deref() != Some("accepted") {
            continue;
        }
        let period = p.period.clone();
        if let Some(v) = Verdict::latest(&**client, &p.dataset, period.as_deref())
            .await
            .map_err(db)?
        {
            for (which, version) in [
                ("cleaned", v.cleaned_version),
                ("quarantine", v.quarantine_version),
            ] {
                let Some(version) = version else { continue };
                let key = (p.dataset.clone(), which, version, period.clone());
                if !missing.contains_key(&key) {
                    let found = files_missing(config, &key).await;
                    missing.insert(key.clone(), found);
                }
                if let Some(problem) = &missing[&key] {
                    p.problems.push(problem.clone());
                }
            }
        }
        if p.load.as_deref() == Some("loaded")
            && let Some(problem) = stage_against_lake(config, &client, ds, p).await?
        {
            p.problems.push(problem);
        }
    }
    Ok(())
}

/// The Parquet files of the period at (dataset, table, version) that the
/// store no longer has, said as a problem; None when all are there.
async fn files_missing(
    config: &Config,
    (dataset, which, version, period): &(String, &'static str, i64, Option<String>),
) -> Option<String> {
    let location = ledger::delta_location(config, which, dataset);
    let table = match location.open_version(*version).await {
        Ok(t) => t,
        Err(e) => {
            return Some(format!(
                "the {which} Delta table of {dataset} cannot be opened at version {version} \
                 (a replay or a load of this period would fail): {e}"
            ));
        }
    };
    let files: Vec<_> = match table.snapshot() {
        Ok(state) => state
            .log_data()
            .into_iter()
            .map(|f| f.object_store_path())
            .filter(|path| {
                period
                    .as_ref()
                    .is_none_or(|p| path.as_ref().contains(&format!("{DATA_PERIOD}={p}/")))
            })
            .collect(),
        Err(e) => return Some(format!("the {which} Delta table of {dataset}: {e}")),
    };
    let store = table.object_store();
    let mut gone = Vec::new();
    for path in files {
        if store.head(&path).await.is_err() {
            gone.push(path.to_string());
        }
    }
    let first = gone.first()?;
    Some(format!(
        "{} Parquet file(s) of the {which} rows validated at Delta version {version} are \
         gone from {} (first: {first}): a replay or a load of this period fails; \
         validate it again from its file (`pipeline validate --dataset {dataset}{}`)",
        gone.len(),
        location.display,
        period
            .as_ref()
            .map(|p| format!(" --period {p}"))
            .unwrap_or_default(),
    ))
}

/// Stage's rows of the period against the cleaned rows its load in force
/// copied: a problem naming how many differ each way (rows edited, added or
/// deleted outside the pipeline), or why they could not be compared.
async fn stage_against_lake(
    config: &Config,
    client: &Arc<Pooled>,
    ds: &Dataset,
    p: &PeriodStatus,
) -> Result<Option<String>, StatusError> {
    let period = p.period.as_deref();
    let Some(loaded) = ledger::Loaded::latest(&***client, &p.dataset, period)
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let (load_id, version) = (loaded.load_id, loaded.source_delta_version);
    // A `--parquet-path` load copied a file the lake never held.
    let Some(version) = version else {
        return Ok(None);
    };
    let compared = compare(config, client, ds, &p.dataset, period, version).await;
    let shown = period.map(|p| format!(" --period {p}")).unwrap_or_default();
    Ok(match compared {
        Ok((0, 0)) => None,
        Ok((only_stage, only_lake)) => Some(format!(
            "stage differs from the rows load {load_id} copied (cleaned Delta version \
             {version}): {only_stage} row(s) only in stage, {only_lake} only in the lake — \
             changed outside the pipeline; `pipeline load-stage --dataset {}{shown}` puts \
             the loaded rows back",
            p.dataset
        )),
        Err(e) => Some(format!(
            "stage could not be compared with the rows load {load_id} copied (cleaned Delta \
             version {version}): {}",
            crate::exit::one_line(e.as_ref())
        )),
    })
}

/// Rows only in stage and rows only in the lake (as multisets) of the
/// period, over the dataset's declared columns in their declared types.
async fn compare(
    config: &Config,
    client: &Arc<Pooled>,
    ds: &Dataset,
    dataset: &str,
    period: Option<&str>,
    version: i64,
) -> Result<(usize, usize), Box<dyn std::error::Error + Send + Sync>> {
    let lake = ledger::delta_location(config, "cleaned", dataset)
        .open_version(version)
        .await?
        .table_provider()
        .await?;
    let stage = PgTable::open(client.clone(), "stage", dataset)
        .await?
        .ok_or_else(|| format!("stage.{dataset} does not exist"))?;
    let ctx = crate::context::session(config.limits.memory_bytes);
    let shaped = |df: DataFrame| -> DfResult<DataFrame> {
        let df = match period {
            Some(p) => df.filter(ident(DATA_PERIOD).eq(lit(p)))?,
            None => df,
        };
        df.select(
            ds.columns
                .iter()
                .map(|(c, spec)| cast(ident(c), spec.ty.arrow_type()).alias(c))
                .collect::<Vec<_>>(),
        )
    };
    let lake = shaped(ctx.read_table(lake)?)?;
    let stage = shaped(ctx.read_table(Arc::new(stage))?)?;
    let only_stage = stage.clone().except(lake.clone())?.count().await?;
    let only_lake = lake.except(stage)?.count().await?;
    Ok((only_stage, only_lake))
}
