//! This run's rows of each model, kept while they stream into PostgreSQL: every
//! batch COPYd into the target is also written to a Parquet file of the run's
//! own (a temporary folder, gone when the run ends). The model's audits read
//! that file in DataFusion before COMMIT, and the models downstream in the same
//! run read it too, so a model's rows are never pulled back out of PostgreSQL
//! row by row by the run that wrote them.
//!
//! [`view`] is the model's table as it stands once the replace commits: its
//! other periods as PostgreSQL holds them, this period from the file (a model
//! replaced whole: the file alone).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::Column;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown, cast, col, lit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::ParquetReadOptions;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use super::models::Model;
use crate::stage_table::DATA_PERIOD;

/// The run's folder of kept rows.
pub struct RunFiles {
    dir: tempfile::TempDir,
}

impl RunFiles {
    pub fn new() -> std::io::Result<RunFiles> {
        Ok(RunFiles {
            dir: tempfile::Builder::new()
                .prefix("pipeline-transform-")
                .tempdir()?,
        })
    }

    /// Where model `m`'s rows of this run are kept.
    pub fn path(&self, m: &Model) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.{}.parquet", m.schema, m.name))
    }
}

/// The writer a [`tee`] shares with its stream.
type Shared = Arc<Mutex<Option<ArrowWriter<File>>>>;

/// A stream's batches written to a Parquet file as they pass.
pub struct Tee {
    writer: Shared,
}

/// `stream`, writing each batch to a new file at `path` on its way.
pub fn tee(
    stream: SendableRecordBatchStream,
    path: &Path,
) -> DfResult<(SendableRecordBatchStream, Tee)> {
    let schema = stream.schema();
    let file = File::create(path).map_err(|e| {
        DataFusionError::Execution(format!("cannot keep the rows in {}: {e}", path.display()))
    })?;
    let writer: Shared = Arc::new(Mutex::new(Some(ArrowWriter::try_new(
        file,
        schema.clone(),
        None,
    )?)));
    let shared = writer.clone();
    let teed = stream.map(move |batch| {
        let batch = batch?;
        if let Some(w) = shared.lock().expect("not poisoned").as_mut() {
            w.write(&batch)?;
        }
        Ok(batch)
    });
    Ok((
        Box::pin(RecordBatchStreamAdapter::new(schema, teed)),
        Tee { writer },
    ))
}

impl Tee {
    /// Closes the file: every batch that passed is in it.
    pub fn finish(self) -> DfResult<()> {
        if let Some(w) = self.writer.lock().expect("not poisoned").take() {
            w.close()?;
        }
        Ok(())
    }
}

/// A model's table once this period's replace commits (see the module).
/// A scan whose filters pin `_data_period` reads only the side that holds it:
/// a downstream model reading `$period` reads the file alone.
#[derive(Debug)]
pub struct RunView {
    schema: SchemaRef,
    /// The rows kept, in the result's shape.
    kept: LogicalPlan,
    /// The other periods as PostgreSQL holds them, in the same shape.
    previous: Option<LogicalPlan>,
    period: Option<String>,
}

/// The table that [`RunView`] is: `previous` (the table as PostgreSQL holds
/// it, when it exists) without `period`, and the rows kept at `path`, in the
/// result's `schema`. A column the model added in this run is NULL in the
/// other periods, as ALTER TABLE ADD COLUMN leaves it.
pub async fn view(
    ctx: &SessionContext,
    path: &Path,
    schema: &SchemaRef,
    period: Option<&str>,
    previous: Option<DataFrame>,
) -> DfResult<RunView> {
    let fresh = ctx
        .read_parquet(
            path.display().to_string(),
            ParquetReadOptions::default().schema(&Schema::new(schema.fields().clone())),
        )
        .await?;
    let kept = shaped(fresh, schema, |_| None)?.into_unoptimized_plan();
    let previous = match (period, previous) {
        (Some(period), Some(previous)) => {
            let held: Vec<String> = (previous.schema().fields().iter())
                .map(|f| f.name().clone())
                .collect();
            let others = previous.filter(col(DATA_PERIOD).not_eq(lit(period)))?;
            let others = shaped(others, schema, |name| {
                (!held.iter().any(|h| h == name)).then(|| lit(ScalarValue::Null))
            })?;
            Some(others.into_unoptimized_plan())
        }
        _ => None,
    };
    let nullable: Vec<Field> = (schema.fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Ok(RunView {
        schema: Arc::new(Schema::new(nullable)),
        kept,
        previous,
        period: period.map(str::to_owned),
    })
}

/// `df`'s columns in `schema`'s order and types; `missing` stands in for a
/// column `df` lacks.
fn shaped(
    df: DataFrame,
    schema: &SchemaRef,
    missing: impl Fn(&str) -> Option<Expr>,
) -> DfResult<DataFrame> {
    let exprs: Vec<Expr> = (schema.fields().iter())
        .map(|f| {
            let e = missing(f.name()).unwrap_or_else(|| col(Column::from_name(f.name())));
            cast(e, f.data_type().clone()).alias(f.name())
        })
        .collect();
    df.select(exprs)
}

/// `e` with its columns unqualified: a scan's filters name the view's
/// table, the plans below have none.
fn unqualified(e: &Expr) -> DfResult<Expr> {
    e.clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::from_name(c.name)))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

#[async_trait]
impl TableProvider for RunView {
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
        // Inexact: DataFusion applies every filter again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return Err(DataFusionError::Internal(
                "the run's rows need a SessionState".into(),
            ));
        };
        let indices: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let names: Vec<&str> = (indices.iter())
            .map(|&i| self.schema.field(i).name().as_str())
            .collect();
        // The periods the filters keep, if they say.
        let mut wanted: Option<Vec<String>> = None;
        for f in filters {
            if let Some(values) = super::lake::period_values(f) {
                wanted = Some(match wanted {
                    None => values,
                    Some(w) => w.into_iter().filter(|p| values.contains(p)).collect(),
                });
            }
        }
        let this = self.period.as_deref();
        let kept_wanted = match (this, &wanted) {
            (Some(p), Some(w)) => w.iter().any(|x| x == p),
            _ => true,
        };
        let previous_wanted = match (this, &wanted) {
            (Some(p), Some(w)) => w.iter().any(|x| x != p),
            _ => true,
        };
        let mut plans = Vec::new();
        for (plan, read) in [
            (Some(&self.kept), kept_wanted),
            (self.previous.as_ref(), previous_wanted),
        ] {
            let (Some(plan), true) = (plan, read) else {
                continue;
            };
            let mut df = DataFrame::new(state.clone(), plan.clone());
            for f in filters.iter().filter(|f| !f.is_volatile()) {
                df = df.filter(unqualified(f)?)?;
            }
            let df = df.select_columns(&names)?;
            plans.push(df.create_physical_plan().await?);
        }
        match plans.len() {
            0 => Ok(Arc::new(EmptyExec::new(Arc::new(
                self.schema.project(&indices)?,
            )))),
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }
}
