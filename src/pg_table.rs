//! A PostgreSQL table as a DataFusion table: the columns a model references and
//! its filters (e.g. `_data_period = '2025-06'`) are sent to PostgreSQL, so a whole
//! table is never read to be filtered locally. Rows stream back in batches.

use crate::db::Pooled;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::StreamExt;
use tokio_postgres::types::ToSql;

use crate::db::quote_ident;

const BATCH_ROWS: usize = 8192;

/// How to SELECT one column (numeric travels as text, cast to Decimal128 here),
/// and how to compare it in a pushed-down filter so PostgreSQL sees the value
/// DataFusion sees.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PgColumn {
    name: String,
    select: String,
    filter: String,
}

/// A PostgreSQL table readable by DataFusion.
#[derive(Debug)]
pub struct PgTable {
    conn: Conn,
    /// `schema."table"`
    qualified: String,
    schema: SchemaRef,
    columns: Vec<PgColumn>,
}

/// How a scan reaches PostgreSQL: this process's connection, or, in a process
/// the plan was sent to (a Ballista executor), its own `DATABASE_URL`: a
/// connection string with a password never travels inside a plan.
#[derive(Debug, Clone)]
enum Conn {
    Client(Arc<Pooled>),
    Env,
}

impl Conn {
    async fn client(&self) -> DfResult<Arc<Pooled>> {
        match self {
            Conn::Client(c) => Ok(c.clone()),
            Conn::Env => crate::db::connect_as("pipeline executor")
                .await
                .map(|c| Arc::new(Pooled::own(c)))
                .map_err(|e| DataFusionError::External(Box::new(e))),
        }
    }
}

/// A PostgreSQL table as data, for a codec (src/cluster.rs).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Description {
    qualified: String,
    schema: Vec<u8>,
    columns: Vec<PgColumn>,
}

/// A PostgreSQL scan as data: its SQL, parameters and the schema of its rows.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ScanDescription {
    sql: String,
    params: Vec<String>,
    schema: Vec<u8>,
}

impl PgTable {
    /// The description of a PostgreSQL table, for a codec; None for any other table.
    pub fn describe(table: &dyn TableProvider) -> Option<DfResult<Vec<u8>>> {
        let t = table.downcast_ref::<PgTable>()?;
        Some((|| {
            serde_json::to_vec(&Description {
                qualified: t.qualified.clone(),
                schema: crate::remote::schema_bytes(&t.schema)?,
                columns: t.columns.clone(),
            })
            .map_err(crate::remote::json_error)
        })())
    }

    /// The table [`PgTable::describe`] wrote, opened in this process; its scans
    /// plan as [`crate::remote::Described`] and connect with `DATABASE_URL`.
    pub fn remote(bytes: &[u8]) -> DfResult<Arc<dyn TableProvider>> {
        let d: Description = serde_json::from_slice(bytes).map_err(crate::remote::json_error)?;
        Ok(Arc::new(PgTable {
            conn: Conn::Env,
            qualified: d.qualified,
            schema: crate::remote::schema_from_bytes(&d.schema)?,
            columns: d.columns,
        }))
    }

    /// The scan a [`crate::remote::Described`] of kind `pg` describes.
    pub fn remote_exec(json: &str) -> DfResult<Arc<dyn ExecutionPlan>> {
        let d: ScanDescription = serde_json::from_str(json).map_err(crate::remote::json_error)?;
        let schema = crate::remote::schema_from_bytes(&d.schema)?;
        pg_exec(PgScan {
            conn: Conn::Env,
            schema,
            sql: d.sql,
            params: d.params,
        })
    }
}

fn pg_exec(part: PgScan) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(StreamingTableExec::try_new(
        part.schema.clone(),
        vec![Arc::new(part)],
        None,
        Vec::new(),
        false,
        None,
    )?))
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
        client: Arc<Pooled>,
        schema: &str,
        table: &str,
    ) -> Result<Option<PgTable>, tokio_postgres::Error> {
        let table = crate::db::Table::new(schema, table);
        let qualified = table.to_string();
        let Some(found) = crate::db::table_columns(&**client, &table).await? else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for c in found {
            let (name, ty) = (c.name, c.sql_type);
            let dt = arrow_type(&ty);
            let q = quote_ident(&name);
            let text_like = ty == "text" || ty.starts_with("character");
            let (select, filter) = match (&dt, ty.as_str()) {
                (DataType::Decimal128(..), _) => (format!("{q}::text"), q.clone()),
                (DataType::Utf8, _) if text_like => (format!("{q}::text"), q.clone()),
                (DataType::Utf8, _) => (format!("{q}::text"), format!("{q}::text")),
                (DataType::Float64, "numeric") => (format!("{q}::float8"), format!("{q}::float8")),
                _ => (q.clone(), q),
            };
            fields.push(Field::new(&name, dt, true));
            columns.push(PgColumn {
                name,
                select,
                filter,
            });
        }
        Ok(Some(PgTable {
            conn: Conn::Client(client),
            qualified,
            schema: Arc::new(Schema::new(fields)),
            columns,
        }))
    }
}

/// A filter DataFusion pushes down, as PostgreSQL SQL whose every literal is
/// a parameter (`CAST($n::text AS <type>)`, the value sent as text and
/// parsed by PostgreSQL), appended to `params`. None for anything this does
/// not render; DataFusion then applies that filter itself.
fn filter_sql(columns: &[PgColumn], filter: &Expr, params: &mut Vec<String>) -> Option<String> {
    let mut sub = |e: &Expr| filter_sql(columns, e, params);
    Some(match filter {
        Expr::Column(c) => columns.iter().find(|p| p.name == c.name)?.filter.clone(),
        Expr::Literal(value, _) => {
            if value.is_null() {
                return None;
            }
            let ty = pg_type(&value.data_type())?;
            params.push(literal_text(value)?);
            format!("CAST(${}::text AS {ty})", params.len())
        }
        Expr::Cast(c) => format!(
            "CAST({} AS {})",
            sub(&c.expr)?,
            pg_type(c.field.data_type())?
        ),
        Expr::BinaryExpr(b) => {
            let op = match b.op {
                Operator::Eq => "=",
                Operator::NotEq => "<>",
                Operator::Lt => "<",
                Operator::LtEq => "<=",
                Operator::Gt => ">",
                Operator::GtEq => ">=",
                Operator::And => "AND",
                Operator::Or => "OR",
                _ => return None,
            };
            let (left, right) = (sub(&b.left)?, sub(&b.right)?);
            format!("({left} {op} {right})")
        }
        Expr::Not(e) => format!("(NOT {})", sub(e)?),
        Expr::IsNull(e) => format!("({} IS NULL)", sub(e)?),
        Expr::IsNotNull(e) => format!("({} IS NOT NULL)", sub(e)?),
        Expr::Between(b) => {
            let (e, low, high) = (sub(&b.expr)?, sub(&b.low)?, sub(&b.high)?);
            let not = if b.negated { "NOT " } else { "" };
            format!("({e} {not}BETWEEN {low} AND {high})")
        }
        Expr::InList(l) if !l.list.is_empty() => {
            let e = sub(&l.expr)?;
            let list = l.list.iter().map(sub).collect::<Option<Vec<_>>>()?;
            let not = if l.negated { "NOT " } else { "" };
            format!("({e} {not}IN ({}))", list.join(", "))
        }
        _ => return None,
    })
}

/// A literal as PostgreSQL parses it: a timestamp as its date and time (a
/// ScalarValue prints the microseconds since 1970, which PostgreSQL refuses).
fn literal_text(value: &datafusion::scalar::ScalarValue) -> Option<String> {
    match value.data_type() {
        DataType::Timestamp(..) | DataType::Date64 => {
            let array = value.to_array().ok()?;
            let format = datafusion::arrow::util::display::FormatOptions::default();
            let f =
                datafusion::arrow::util::display::ArrayFormatter::try_new(array.as_ref(), &format)
                    .ok()?;
            Some(f.value(0).to_string())
        }
        _ => Some(value.to_string()),
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
                if filter_sql(&self.columns, f, &mut Vec::new()).is_some() {
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
        let mut params = Vec::new();
        let conditions: Vec<String> = filters
            .iter()
            .filter_map(|f| {
                // A filter that does not render leaves no parameters behind.
                let mut own = params.clone();
                let sql = filter_sql(&self.columns, f, &mut own)?;
                params = own;
                Some(sql)
            })
            .collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        tracing::debug!(event = "pg_read", table = %self.qualified, sql = %sql, params = ?params, "reading from PostgreSQL");
        if let Conn::Env = self.conn {
            let json = serde_json::to_string(&ScanDescription {
                sql: sql.clone(),
                params: params.clone(),
                schema: crate::remote::schema_bytes(&schema)?,
            })
            .map_err(crate::remote::json_error)?;
            let exec = pg_exec(PgScan {
                conn: Conn::Env,
                schema,
                sql,
                params,
            })?;
            return Ok(crate::remote::Described::new(exec, "pg", json));
        }
        pg_exec(PgScan {
            conn: self.conn.clone(),
            schema,
            sql,
            params,
        })
    }
}

#[derive(Debug)]
struct PgScan {
    conn: Conn,
    schema: SchemaRef,
    sql: String,
    /// `$1`, `$2`, … as text; the SQL casts each to its type.
    params: Vec<String>,
}

impl PartitionStream for PgScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (conn, schema, sql) = (self.conn.clone(), self.schema.clone(), self.sql.clone());
        let values = self.params.clone();
        let stream = futures::stream::once(async move {
            let client = conn.client().await?;
            let params: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = client
                .query_raw(sql.as_str(), params)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            // The stream keeps the client (and so its connection) until its end.
            Ok::<_, DataFusionError>(rows.chunks(BATCH_ROWS).map(move |chunk| {
                let _open = &client;
                to_batch(&schema, chunk)
            }))
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        })
        .flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Column `i` of every row, each value read as `T` and mapped by `f`.
fn values<'r, T, U>(
    rows: &'r [tokio_postgres::Row],
    i: usize,
    f: impl Fn(T) -> U,
) -> DfResult<Vec<Option<U>>>
where
    T: tokio_postgres::types::FromSql<'r>,
{
    rows.iter()
        .map(|r| {
            r.try_get::<_, Option<T>>(i)
                .map(|v| v.map(&f))
                .map_err(|e| DataFusionError::External(Box::new(e)))
        })
        .collect()
}

/// Column `i` as an array of `ty`: native where the driver reads the type,
/// else text cast to it (numeric to its decimal type).
fn column(rows: &[tokio_postgres::Row], i: usize, ty: &DataType) -> DfResult<ArrayRef> {
    Ok(match ty {
        DataType::Int64 => Arc::new(Int64Array::from(values(
            rows,
            i,
            std::convert::identity::<i64>,
        )?)),
        DataType::Int32 => Arc::new(Int32Array::from(values(
            rows,
            i,
            std::convert::identity::<i32>,
        )?)),
        DataType::Int16 => Arc::new(Int16Array::from(values(
            rows,
            i,
            std::convert::identity::<i16>,
        )?)),
        DataType::Float64 => Arc::new(Float64Array::from(values(
            rows,
            i,
            std::convert::identity::<f64>,
        )?)),
        DataType::Float32 => Arc::new(Float32Array::from(values(
            rows,
            i,
            std::convert::identity::<f32>,
        )?)),
        DataType::Boolean => Arc::new(BooleanArray::from(values(
            rows,
            i,
            std::convert::identity::<bool>,
        )?)),
        DataType::Date32 => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
            let days = values(rows, i, |d: NaiveDate| (d - epoch).num_days() as i32)?;
            Arc::new(Date32Array::from(days))
        }
        DataType::Timestamp(_, None) => {
            let micros = values(rows, i, |t: NaiveDateTime| t.and_utc().timestamp_micros())?;
            Arc::new(TimestampMicrosecondArray::from(micros))
        }
        DataType::Timestamp(_, Some(tz)) => {
            let micros = values(rows, i, |t: DateTime<Utc>| t.timestamp_micros())?;
            Arc::new(TimestampMicrosecondArray::from(micros).with_timezone(tz.clone()))
        }
        other => {
            let text: ArrayRef = Arc::new(StringArray::from(values(
                rows,
                i,
                std::convert::identity::<String>,
            )?));
            if matches!(other, DataType::Utf8) {
                text
            } else {
                datafusion::arrow::compute::cast(&text, other)?
            }
        }
    })
}

fn to_batch(
    schema: &SchemaRef,
    rows: Vec<Result<tokio_postgres::Row, tokio_postgres::Error>>,
) -> DfResult<RecordBatch> {
    let rows: Vec<tokio_postgres::Row> = rows
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let arrays = (schema.fields().iter().enumerate())
        .map(|(i, field)| column(&rows, i, field.data_type()))
        .collect::<DfResult<Vec<ArrayRef>>>()?;
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
    fn pushed_filters_send_their_values_as_parameters() {
        use datafusion::logical_expr::{col, lit};
        use datafusion::scalar::ScalarValue;
        let column = |name: &str, filter: &str| PgColumn {
            name: name.into(),
            select: filter.into(),
            filter: filter.into(),
        };
        let columns = [
            column("_data_period", "\"_data_period\""),
            column("amount", "\"amount\"::float8"),
            column("day", "\"day\""),
        ];
        let mut params = Vec::new();
        let filter = col("_data_period")
            .eq(lit("2025-06' OR '1'='1"))
            .and(col("amount").gt_eq(lit(1.5)))
            .and(col("day").in_list(vec![lit(ScalarValue::Date32(Some(20000)))], false));
        let sql = filter_sql(&columns, &filter, &mut params).unwrap();
        assert_eq!(
            sql,
            "(((\"_data_period\" = CAST($1::text AS text)) AND (\"amount\"::float8 >= \
             CAST($2::text AS double precision))) AND (\"day\" IN (CAST($3::text AS date))))"
        );
        assert_eq!(params, ["2025-06' OR '1'='1", "1.5", "2024-10-04"]);
        let mut params = Vec::new();
        let at = ScalarValue::TimestampMicrosecond(Some(1_704_067_200_500_000), None);
        filter_sql(&columns, &col("day").gt(lit(at)), &mut params).unwrap();
        assert_eq!(
            params,
            ["2024-01-01T00:00:00.500"],
            "a timestamp PostgreSQL parses"
        );
        // Unknown columns, functions and null literals are left to DataFusion.
        for other in [
            col("nope").eq(lit(1)),
            col("amount").eq(lit(ScalarValue::Float64(None))),
            datafusion::functions::expr_fn::upper(col("_data_period")).eq(lit("X")),
        ] {
            assert_eq!(
                filter_sql(&columns, &other, &mut Vec::new()),
                None,
                "{other}"
            );
        }
    }
}
