//! A model's `stage.<dataset>`, read from the validated lake: for each period
//! the cleaned Delta table at exactly the version its load in force read
//! (meta.load_log), shaped as stage holds it (declared columns, `_data_period`,
//! `_ingestion_id`, `_loaded_at`). A delivery validated since but refused by a
//! gate, or not loaded yet, sits at the Delta head and is not read.
//!
//! The lake stands in for stage only where it accounts for every row stage
//! holds: each period's row count in stage equals what its load wrote, from a
//! Delta version. Rows inserted by hand (the DEFAULT partition, a period no
//! load wrote), a `--parquet-path` load, or a table changed outside the
//! pipeline make [`open`] say why, and the caller reads PostgreSQL instead.
//!
//! Periods are opened lazily: a model reading `_data_period = $period` opens
//! one Delta version, not one per period.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{TableProvider, TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    Expr, LogicalPlanBuilder, Operator, TableProviderFilterPushDown, cast, col, lit, when,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::TransformError;
use crate::config::{Config, Dataset};
use crate::ledger::{self, DeltaLocation};
use crate::stage_table::{DATA_PERIOD, INGESTION_ID, LOADED_AT};

/// One period as stage holds it: the Delta version its load read and when
/// the load committed.
#[derive(Debug, Clone)]
struct Held {
    version: i64,
    loaded_at: DateTime<Utc>,
}

/// `stage.<dataset>` as the lake holds it (see the module).
#[derive(Debug)]
pub struct LakeTable {
    dataset: String,
    location: DeltaLocation,
    columns: Vec<(String, DataType)>,
    periodic: bool,
    schema: SchemaRef,
    /// Period ("" for a dataset without periods) → what stage holds.
    held: BTreeMap<String, Held>,
    /// Delta tables opened so far, by version.
    opened: Mutex<HashMap<i64, Arc<dyn TableProvider>>>,
}

/// The timestamp type of `_loaded_at` (PostgreSQL's timestamptz).
fn loaded_at_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Opens `stage.<dataset>` from the lake, or says why the lake cannot stand in
/// for it (then read PostgreSQL).
pub async fn open(
    config: &Config,
    client: &Client,
    dataset: &str,
) -> Result<Result<LakeTable, String>, tokio_postgres::Error> {
    let Some(ds) = config.datasets.get(dataset) else {
        return Ok(Err(format!("stage.{dataset} is no dataset of the config")));
    };
    let loads = client
        .query(
            "SELECT DISTINCT ON (period) coalesce(period, ''), id, source_delta_version,
                    coalesce(rows_inserted, 0)
               FROM meta.load_log
              WHERE dataset = $1 AND status = 'loaded'
              ORDER BY period, id DESC",
            &[&dataset],
        )
        .await?;
    let by_period = if ds.period.has_period() {
        format!(
            "SELECT {p}, count(*), min({l}) FROM stage.{t} GROUP BY {p}",
            p = crate::db::quote_ident(DATA_PERIOD),
            l = crate::db::quote_ident(LOADED_AT),
            t = crate::db::quote_ident(dataset)
        )
    } else {
        format!(
            "SELECT '', count(*), min({l}) FROM stage.{t} HAVING count(*) > 0",
            l = crate::db::quote_ident(LOADED_AT),
            t = crate::db::quote_ident(dataset)
        )
    };
    let stage = match client.query(&by_period, &[]).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(Err(format!("stage.{dataset} does not exist")));
        }
        other => other?,
    };
    let mut wrote: BTreeMap<String, (i64, Option<i64>, i64)> = loads
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let mut held = BTreeMap::new();
    for row in &stage {
        let period: String = row.get(0);
        let rows: i64 = row.get(1);
        let loaded_at: DateTime<Utc> = row.get(2);
        let shown = if period.is_empty() { "" } else { " " };
        let Some((load, version, inserted)) = wrote.remove(&period) else {
            return Ok(Err(format!(
                "stage.{dataset}{shown}{period} holds {rows} rows no load wrote (inserted by hand?)"
            )));
        };
        let Some(version) = version else {
            return Ok(Err(format!(
                "stage.{dataset}{shown}{period} was loaded from a Parquet file (load {load}), not the lake"
            )));
        };
        if rows != inserted {
            return Ok(Err(format!(
                "stage.{dataset}{shown}{period} holds {rows} rows where load {load} wrote {inserted}: \
                 the table was changed outside the pipeline"
            )));
        }
        held.insert(period, Held { version, loaded_at });
    }
    if let Some((period, (load, _, inserted))) = wrote.into_iter().find(|(_, w)| w.2 > 0) {
        return Ok(Err(format!(
            "stage.{dataset} {period} holds no rows where load {load} wrote {inserted}: \
             rows were deleted outside the pipeline"
        )));
    }
    Ok(Ok(LakeTable::new(config, dataset, ds, held)))
}

/// `stage.<dataset>` from the lake at the versions stage holds, or None
/// (logged with why) where the lake cannot account for stage's rows or the
/// models run on a cluster: then PostgreSQL's table is read.
pub async fn for_stage(
    config: &Config,
    client: &Client,
    dataset: &str,
) -> Result<Option<LakeTable>, TransformError> {
    if config.engine != crate::config::Engine::InProcess {
        tracing::info!(
            event = "stage_read_from_postgres",
            dataset,
            reason = "the models run on a cluster",
            "stage.{dataset} read from PostgreSQL"
        );
        return Ok(None);
    }
    let opened = open(config, client, dataset)
        .await
        .map_err(|source| TransformError::Read {
            table: format!("stage.{dataset}"),
            source,
        })?;
    match opened {
        Ok(table) => {
            tracing::info!(event = "stage_read_from_lake", dataset, held = %table.describe(), "stage.{dataset} read from the lake");
            Ok(Some(table))
        }
        Err(why) => {
            tracing::warn!(event = "stage_read_from_postgres", dataset, reason = %why, "stage.{dataset} read from PostgreSQL: {why}");
            Ok(None)
        }
    }
}

impl LakeTable {
    fn new(config: &Config, dataset: &str, ds: &Dataset, held: BTreeMap<String, Held>) -> Self {
        let columns: Vec<(String, DataType)> = (ds.columns.iter())
            .map(|(c, spec)| (c.clone(), spec.ty.arrow_type()))
            .collect();
        let mut fields: Vec<Field> = (columns.iter())
            .map(|(c, t)| Field::new(c, t.clone(), true))
            .collect();
        let periodic = ds.period.has_period();
        if periodic {
            fields.push(Field::new(DATA_PERIOD, DataType::Utf8, true));
        }
        fields.push(Field::new(INGESTION_ID, DataType::Int64, true));
        fields.push(Field::new(LOADED_AT, loaded_at_type(), true));
        LakeTable {
            dataset: dataset.to_owned(),
            location: ledger::delta_location(config, "cleaned", dataset),
            columns,
            periodic,
            schema: Arc::new(Schema::new(fields)),
            held,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// The periods and the Delta versions they are read at, for the log.
    pub fn describe(&self) -> String {
        let versions: std::collections::BTreeSet<i64> =
            self.held.values().map(|h| h.version).collect();
        format!(
            "{} period(s) at Delta version(s) {}",
            self.held.len(),
            versions
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    async fn at_version(&self, version: i64) -> DfResult<Arc<dyn TableProvider>> {
        let mut opened = self.opened.lock().await;
        if let Some(p) = opened.get(&version) {
            return Ok(p.clone());
        }
        let fail = |e: &dyn std::fmt::Display| {
            DataFusionError::Execution(format!(
                "cannot read {}@v{version} for stage.{}: {e}",
                self.location.display, self.dataset
            ))
        };
        let table = self
            .location
            .open_version(version)
            .await
            .map_err(|e| fail(&e))?;
        let provider = table.table_provider().await.map_err(|e| fail(&e))?;
        opened.insert(version, provider.clone());
        Ok(provider)
    }

    /// The rows of `periods` (all read at `version`), shaped as stage holds them.
    fn shaped(
        &self,
        state: &SessionState,
        provider: Arc<dyn TableProvider>,
        periods: &[(&String, &Held)],
        projection: &[usize],
    ) -> DfResult<DataFrame> {
        let plan =
            LogicalPlanBuilder::scan("cleaned", provider_as_source(provider), None)?.build()?;
        let mut df = DataFrame::new(state.clone(), plan);
        let source = df.schema().clone();
        let has = |c: &str| source.has_column_with_unqualified_name(c);
        let stamp = |h: &Held| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(h.loaded_at.timestamp_micros()),
                Some("UTC".into()),
            ))
        };
        let loaded_at = if self.periodic {
            let list: Vec<Expr> = periods.iter().map(|(p, _)| lit(p.as_str())).collect();
            df = df.filter(col(DATA_PERIOD).in_list(list, false))?;
            let (first, rest) = periods.split_first().expect("at least one period");
            let mut case = when(col(DATA_PERIOD).eq(lit(first.0.as_str())), stamp(first.1));
            for (p, h) in rest {
                case = case.when(col(DATA_PERIOD).eq(lit(p.as_str())), stamp(h));
            }
            case.end()?
        } else {
            stamp(periods[0].1)
        };
        let null = |ty: DataType| cast(lit(ScalarValue::Null), ty);
        let mut exprs: Vec<Expr> = (self.columns.iter())
            .map(|(c, ty)| match has(c) {
                true => cast(col(c.as_str()), ty.clone()).alias(c),
                false => null(ty.clone()).alias(c),
            })
            .collect();
        if self.periodic {
            exprs.push(cast(col(DATA_PERIOD), DataType::Utf8).alias(DATA_PERIOD));
        }
        exprs.push(match has(INGESTION_ID) {
            true => cast(col(INGESTION_ID), DataType::Int64).alias(INGESTION_ID),
            false => null(DataType::Int64).alias(INGESTION_ID),
        });
        exprs.push(cast(loaded_at, loaded_at_type()).alias(LOADED_AT));
        let picked: Vec<Expr> = projection.iter().map(|&i| exprs[i].clone()).collect();
        df.select(picked)
    }

    /// The periods a scan's filters keep (`_data_period = 'p'`, `IN (…)`).
    fn wanted(&self, filters: &[Expr]) -> Vec<(&String, &Held)> {
        let mut keep: Option<Vec<String>> = None;
        for f in filters {
            if let Some(values) = period_values(f) {
                keep = Some(match keep {
                    None => values,
                    Some(k) => k.into_iter().filter(|p| values.contains(p)).collect(),
                });
            }
        }
        (self.held.iter())
            .filter(|(p, _)| keep.as_ref().is_none_or(|k| k.contains(p)))
            .collect()
    }
}

/// The period literals of `_data_period = 'p'` or `_data_period IN ('p', …)`.
pub(super) fn period_values(f: &Expr) -> Option<Vec<String>> {
    let text = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => Some(s.clone()),
        _ => None,
    };
    let is_period = |e: &Expr| matches!(e, Expr::Column(c) if c.name == DATA_PERIOD);
    match f {
        Expr::BinaryExpr(b) if b.op == Operator::Eq => {
            if is_period(&b.left) {
                text(&b.right).map(|s| vec![s])
            } else if is_period(&b.right) {
                text(&b.left).map(|s| vec![s])
            } else {
                None
            }
        }
        Expr::InList(l) if !l.negated && is_period(&l.expr) => l.list.iter().map(text).collect(),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: the period filters only choose what to open; DataFusion
        // applies every filter again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let schema = Arc::new(self.schema.project(&indices)?);
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal(
                "the lake reader needs a SessionState".into(),
            ));
        };
        let mut by_version: BTreeMap<i64, Vec<(&String, &Held)>> = BTreeMap::new();
        for (p, h) in self.wanted(filters) {
            by_version.entry(h.version).or_default().push((p, h));
        }
        let mut plans = Vec::new();
        for (version, periods) in by_version {
            let provider = self.at_version(version).await?;
            let df = self.shaped(state, provider, &periods, &indices)?;
            plans.push(df.create_physical_plan().await?);
        }
        match plans.len() {
            0 => Ok(Arc::new(EmptyExec::new(schema))),
            _ => UnionExec::try_new(plans),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::binary_expr;

    #[test]
    fn period_filters_choose_the_periods_to_open() {
        let eq = col(DATA_PERIOD).eq(lit("2025-06"));
        assert_eq!(period_values(&eq), Some(vec!["2025-06".to_owned()]));
        let flipped = binary_expr(lit("2025-07"), Operator::Eq, col(DATA_PERIOD));
        assert_eq!(period_values(&flipped), Some(vec!["2025-07".to_owned()]));
        let list = col(DATA_PERIOD).in_list(vec![lit("a"), lit("b")], false);
        assert_eq!(
            period_values(&list),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(period_values(&col(DATA_PERIOD).gt(lit("a"))), None);
        assert_eq!(period_values(&col("x").eq(lit("a"))), None);
    }
}
