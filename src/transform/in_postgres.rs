//! Models run where their data lives. Every table a model reads is a
//! PostgreSQL table, so once DataFusion has planned and checked a model
//! (dependencies, `$period`, errors at file:line:col, the result's columns),
//! its logical plan is unparsed to PostgreSQL SQL (DataFusion's unparser) and
//! runs as one `INSERT … SELECT` inside the model's replace transaction: no row
//! travels to this process and back. When the unparser cannot write the plan,
//! or PostgreSQL refuses what it wrote (a function it does not have), the
//! statement is rolled back to a savepoint and the model runs in DataFusion as
//! before, its rows streamed back with COPY. Either way the result is the one
//! the model's SQL means; `tests/it/in_postgres.rs` runs models both ways and
//! requires identical rows.

use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::scalar::ScalarValue;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use serde::Serialize;
use tokio_postgres::Transaction;

use crate::db::{Table, quote_ident};
use crate::stage_table::PgColumn;

/// Where a model's rows were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RanIn {
    Postgres,
    Datafusion,
}

/// `PIPELINE_MODELS_IN=datafusion` keeps every model in DataFusion (to
/// compare, or to step around a difference); unset or `auto`: PostgreSQL
/// when it can.
pub fn allowed() -> bool {
    !matches!(
        std::env::var("PIPELINE_MODELS_IN").as_deref(),
        Ok("datafusion")
    )
}

/// The model's plan as one PostgreSQL SELECT, or why the unparser cannot
/// write it. The plan is the model's query under the projection `plan` adds
/// (its columns by name, `_data_period` as a literal); the query is unparsed
/// and the projection written here, by name: DataFusion's unparser loses the
/// tables' aliases when it wraps a query in a derived table.
pub fn select(df: &DataFrame) -> Result<String, String> {
    let LogicalPlan::Projection(top) = df.logical_plan() else {
        return Err("the model's plan does not end in its projection".into());
    };
    differs(&top.input)?;
    let inner = Unparser::new(&PostgreSqlDialect {})
        .plan_to_sql(&top.input)
        .map_err(|e| e.to_string())?;
    let columns = (top.expr.iter())
        .map(|e| match e {
            Expr::Alias(a) => match a.expr.as_ref() {
                Expr::Column(c) => Ok(format!(
                    "{} AS {}",
                    quote_ident(&c.name),
                    quote_ident(&a.name)
                )),
                // A cast `plan` adds (unsigned → bigint, ns → µs): PostgreSQL's
                // own types are those already.
                Expr::Cast(cast) => match cast.expr.as_ref() {
                    Expr::Column(c) => Ok(format!(
                        "{} AS {}",
                        quote_ident(&c.name),
                        quote_ident(&a.name)
                    )),
                    other => Err(format!("unexpected column `{other}`")),
                },
                Expr::Literal(ScalarValue::Utf8(Some(v)), _) => Ok(format!(
                    "'{}' AS {}",
                    v.replace('\'', "''"),
                    quote_ident(&a.name)
                )),
                other => Err(format!("unexpected column `{other}`")),
            },
            other => Err(format!("unexpected column `{other}`")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "SELECT {} FROM ({inner}) AS \"model\"",
        columns.join(", ")
    ))
}

/// Refuses what PostgreSQL computes differently, found by the differential
/// test: DataFusion truncates a decimal quotient (and a decimal average) to
/// its scale where PostgreSQL rounds, so 1.25 / 3 is 0.416666 in one and
/// 0.416667 in the other. Such a model stays in DataFusion. A type that cannot
/// be told is taken as a difference.
fn differs(plan: &LogicalPlan) -> Result<(), String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Operator;
    let mut found: Option<String> = None;
    let _ = plan.apply(|node| {
        let inputs = node.inputs();
        let schema = match inputs.as_slice() {
            [one] => one.schema().clone(),
            _ => node.schema().clone(),
        };
        let decimal = |e: &Expr| match e.get_type(&schema) {
            Ok(t) => matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)),
            Err(_) => true,
        };
        let _ = node.apply_expressions(|e| {
            e.apply(|sub| {
                let why = match sub {
                    Expr::BinaryExpr(b)
                        if b.op == Operator::Divide && (decimal(&b.left) || decimal(&b.right)) =>
                    {
                        Some(format!("`{sub}` divides a decimal"))
                    }
                    Expr::AggregateFunction(f)
                        if f.func.name() == "avg" && f.params.args.iter().any(decimal) =>
                    {
                        Some(format!("`{sub}` averages a decimal"))
                    }
                    _ => None,
                };
                match why {
                    Some(why) => {
                        found = Some(why);
                        Ok(TreeNodeRecursion::Stop)
                    }
                    None => Ok(TreeNodeRecursion::Continue),
                }
            })
        });
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    match found {
        Some(why) => Err(format!(
            "{why}, which PostgreSQL rounds where DataFusion truncates"
        )),
        None => Ok(()),
    }
}

/// The temporary table a model's rows are computed into first.
const ROWS: &str = "pipeline_model_rows";

/// Runs the model's `select` into `target (columns)` under a savepoint: the rows
/// inserted, or PostgreSQL's refusal with nothing changed (rolled back to the
/// savepoint, the transaction still usable).
///
/// The rows are computed by `CREATE TEMP TABLE … AS <select>`, then inserted:
/// PostgreSQL 15 plans an `INSERT … SELECT` without parallel workers, a
/// `CREATE TABLE AS` with them — half the time of the TPC-H models on 2 cores
/// (bench/results/2026-12-03-tpch-sf1.md). A role that may not create
/// temporary tables gets the plain `INSERT … SELECT`.
pub async fn insert(
    tx: &mut Transaction<'_>,
    target: &Table,
    columns: &[PgColumn],
    select: &str,
) -> Result<Result<u64, tokio_postgres::Error>, tokio_postgres::Error> {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let into = format!("INSERT INTO {target} ({})", names.join(", "));
    let sp = tx.savepoint("model_in_postgres").await?;
    let computed = sp
        .batch_execute(&format!(
            "CREATE TEMP TABLE {ROWS} ON COMMIT DROP AS {select}"
        ))
        .await;
    let inserted = match computed {
        Ok(()) => {
            let n = sp
                .execute(&format!("{into} SELECT * FROM {ROWS}"), &[])
                .await;
            match n {
                Ok(n) => sp
                    .batch_execute(&format!("DROP TABLE {ROWS}"))
                    .await
                    .map(|()| n),
                Err(e) => Err(e),
            }
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            sp.rollback().await?;
            let sp = tx.savepoint("model_in_postgres").await?;
            let inserted = sp.execute(&format!("{into} {select}"), &[]).await;
            return finish(sp, inserted).await;
        }
        Err(e) => Err(e),
    };
    finish(sp, inserted).await
}

/// Keeps the savepoint's work when it succeeded; rolls it back when PostgreSQL
/// refused the SQL (the caller runs the model in DataFusion instead).
async fn finish(
    sp: Transaction<'_>,
    inserted: Result<u64, tokio_postgres::Error>,
) -> Result<Result<u64, tokio_postgres::Error>, tokio_postgres::Error> {
    match inserted {
        Ok(n) => {
            sp.commit().await?;
            Ok(Ok(n))
        }
        Err(e) if refuses_sql(&e) => {
            sp.rollback().await?;
            Ok(Err(e))
        }
        // A timeout, a full disk, a lost connection: running the model in
        // DataFusion would not help (and would do the work again).
        Err(e) => Err(e),
    }
}

/// Whether PostgreSQL refused the SQL itself (its syntax, a function or type
/// it lacks, a value it will not convert) rather than failed to run it.
fn refuses_sql(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let class = &c.code()[..2];
        matches!(class, "42" | "0A" | "22")
    })
}
