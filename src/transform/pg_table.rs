//! A PostgreSQL table as a DataFusion table: the columns a model references and
//! its filters (e.g. `_data_period = '2025-06'`) are sent to PostgreSQL, so a whole
//! table is never read to be filtered locally. Rows stream back in batches.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use futures::StreamExt;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::db::quote_ident;

const BATCH_ROWS: usize = 8192;

/// How to SELECT one column (numeric travels as text, cast to Decimal128 here).
#[derive(Debug, Clone)]
struct PgColumn {
    select: String,
}

/// A PostgreSQL table readable by DataFusion.
#[derive(Debug)]
pub struct PgTable {
    client: Arc<Client>,
    /// `schema."table"`
    qualified: String,
    schema: SchemaRef,
    columns: Vec<PgColumn>,
}

/// The Arrow type a PostgreSQL type (as `format_type` spells it) reads as.
pub fn arrow_type(pg: &str) -> DataType {
    match pg {
        "bigint" => DataType::Int64,
        "integer" => DataType::Int32,
        "smallint" => DataType::Int16,
        "double precision" => DataType::Float64,
        "real" => DataType::Float32,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp without time zone" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp with time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        t if t.starts_with("numeric(") => {
            let inner = &t["numeric(".len()..t.len() - 1];
            let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
            DataType::Decimal128(
                p.trim().parse().unwrap_or(38),
                s.trim().parse().unwrap_or(0),
            )
        }
        "numeric" => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// The PostgreSQL type for an Arrow type in a model's result.
pub fn pg_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int16 | DataType::Int8 | DataType::UInt8 => "smallint".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Float32 => "real".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        _ => return None,
    })
}

impl PgTable {
    /// Reads the table's columns from the catalog; None when it does not exist.
    pub async fn open(
        client: Arc<Client>,
        schema: &str,
        table: &str,
    ) -> Result<Option<PgTable>, tokio_postgres::Error> {
        let qualified = format!("{schema}.{}", quote_ident(table));
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                  WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&qualified],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for r in rows {
            let (name, ty): (String, String) = (r.get(0), r.get(1));
            let dt = arrow_type(&ty);
            let q = quote_ident(&name);
            let select = match (&dt, ty.as_str()) {
                (DataType::Decimal128(..), _) | (DataType::Utf8, _) => format!("{q}::text"),
                (DataType::Float64, "numeric") => format!("{q}::float8"),
                _ => q,
            };
            fields.push(Field::new(&name, dt, true));
            columns.push(PgColumn { select });
        }
        Ok(Some(PgTable {
            client,
            qualified,
            schema: Arc::new(Schema::new(fields)),
            columns,
        }))
    }

    fn filter_sql(filter: &Expr) -> Option<String> {
        Unparser::new(&PostgreSqlDialect {})
            .expr_to_sql(filter)
            .ok()
            .map(|e| e.to_string())
    }
}

#[async_trait]
impl TableProvider for PgTable {
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
        // Inexact: PostgreSQL filters, DataFusion re-checks, so any difference in
        // semantics costs time, never correctness.
        Ok(filters
            .iter()
            .map(|f| {
                if Self::filter_sql(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.columns.len()).collect());
        let schema = Arc::new(self.schema.project(&indices)?);
        let select: Vec<String> = indices
            .iter()
            .map(|&i| self.columns[i].select.clone())
            .collect();
        // An empty projection (count(*)) still needs rows: select a constant.
        let select = if select.is_empty() {
            "1".to_owned()
        } else {
            select.join(", ")
        };
        let mut sql = format!("SELECT {select} FROM {}", self.qualified);
        let conditions: Vec<String> = filters.iter().filter_map(Self::filter_sql).collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        tracing::debug!(table = %self.qualified, sql = %sql, "reading from PostgreSQL");
        let part = PgScan {
            client: self.client.clone(),
            schema: schema.clone(),
            sql,
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(part)],
            None,
            Vec::new(),
            false,
            None,
        )?))
    }
}

#[derive(Debug)]
struct PgScan {
    client: Arc<Client>,
    schema: SchemaRef,
    sql: String,
}

impl PartitionStream for PgScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (client, schema, sql) = (self.client.clone(), self.schema.clone(), self.sql.clone());
        let stream = futures::stream::once(async move {
            let params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            let rows = client
                .query_raw(sql.as_str(), params)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok::<_, DataFusionError>(
                rows.chunks(BATCH_ROWS)
                    .map(move |chunk| to_batch(&schema, chunk)),
            )
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

fn to_batch(
    schema: &SchemaRef,
    rows: Vec<Result<tokio_postgres::Row, tokio_postgres::Error>>,
) -> DfResult<RecordBatch> {
    let rows: Vec<tokio_postgres::Row> = rows
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let pg = |e: tokio_postgres::Error| DataFusionError::External(Box::new(e));
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let array: ArrayRef = match field.data_type() {
            DataType::Int64 => {
                let mut b = Int64Builder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<i64>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<i32>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Int16 => {
                let mut b = Int16Builder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<i16>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<f64>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Float32 => {
                let mut b = Float32Builder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<f32>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<bool>>(i).map_err(pg)?);
                }
                Arc::new(b.finish())
            }
            DataType::Date32 => {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
                let mut b = Date32Builder::new();
                for r in &rows {
                    let d = r.try_get::<_, Option<NaiveDate>>(i).map_err(pg)?;
                    b.append_option(d.map(|d| (d - epoch).num_days() as i32));
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(_, None) => {
                let mut b = TimestampMicrosecondBuilder::new();
                for r in &rows {
                    let t = r.try_get::<_, Option<NaiveDateTime>>(i).map_err(pg)?;
                    b.append_option(t.map(|t| t.and_utc().timestamp_micros()));
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(_, Some(tz)) => {
                let mut b = TimestampMicrosecondBuilder::new().with_timezone(tz.clone());
                for r in &rows {
                    let t = r.try_get::<_, Option<DateTime<Utc>>>(i).map_err(pg)?;
                    b.append_option(t.map(|t| t.timestamp_micros()));
                }
                Arc::new(b.finish())
            }
            other => {
                // Text, and numeric as text cast to its decimal type.
                let mut b = StringBuilder::new();
                for r in &rows {
                    b.append_option(r.try_get::<_, Option<String>>(i).map_err(pg)?);
                }
                let text: ArrayRef = Arc::new(b.finish());
                if matches!(other, DataType::Utf8) {
                    text
                } else {
                    datafusion::arrow::compute::cast(&text, other)?
                }
            }
        };
        arrays.push(array);
    }
    if arrays.is_empty() {
        return Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            vec![],
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?);
    }
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_mapping_round_trips() {
        for pg in [
            "bigint",
            "integer",
            "double precision",
            "numeric(12,2)",
            "text",
            "boolean",
            "date",
            "timestamp without time zone",
        ] {
            assert_eq!(pg_type(&arrow_type(pg)).as_deref(), Some(pg), "{pg}");
        }
    }

    #[test]
    fn pushed_filters_become_postgres_sql() {
        use datafusion::logical_expr::{col, lit};
        let sql = PgTable::filter_sql(&col("_data_period").eq(lit("2025-06"))).unwrap();
        assert_eq!(sql, "(\"_data_period\" = '2025-06')");
    }
}
