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
use datafusion::sql::sqlparser::ast;
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
    let marked = mark(&top.input)?;
    let mut inner = Unparser::new(&PostgreSqlDialect {})
        .plan_to_sql(&marked)
        .map_err(|e| e.to_string())?;
    truncate(&mut inner)?;
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
                    "{} AS {}",
                    crate::db::quote_literal(v),
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

/// The name of the marker `mark` puts around what PostgreSQL must truncate:
/// `pipeline_truncate_<scale>(x)`, rewritten by `truncate` once unparsed.
const MARKER: &str = "pipeline_truncate_";

/// DataFusion truncates a decimal quotient (and a decimal average) to its
/// scale where PostgreSQL rounds: 1.25 / 3 is 0.416666 in one and 0.416667 in
/// the other (found by the differential test). One dialect for analysts means
/// DataFusion's answer both ways, so before unparsing, the dividend of each
/// decimal division and the argument of each decimal `avg` is wrapped in a
/// marker carrying the result's scale, its name and type those of what it
/// wraps (the plan's schemas stay as they are). `truncate` then writes the
/// marked expressions as PostgreSQL's exact integer division:
/// `x / y` → `div(x * 10^s, y) * 10^-s`, `avg(x)` → the same over
/// `sum(x)` and `count(x)`. A decimal divided into something not decimal, or a
/// type that cannot be told, keeps the model in DataFusion.
fn mark(plan: &LogicalPlan) -> Result<LogicalPlan, String> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::optimizer::AnalyzerRule;
    use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
    // DataFusion's implicit casts made explicit, so PostgreSQL computes in
    // DataFusion's types: `amount * 1.5` is a float in one, a numeric in the
    // other, unless the decimal is cast.
    let coerced = TypeCoercion::new()
        .analyze(plan.clone(), &Default::default())
        .map_err(|e| e.to_string())?;
    let mut refused: Option<String> = None;
    let marked = coerced.transform_up_with_subqueries(|node| {
        let schema = match node.inputs().as_slice() {
            [one] => one.schema().clone(),
            _ => node.schema().clone(),
        };
        node.map_expressions(|e| {
            e.transform_up(|sub| {
                let marked = with_marker(&sub, &schema);
                Ok(match marked {
                    Ok(Some(e)) => Transformed::yes(e),
                    Ok(None) => Transformed::no(sub),
                    Err(why) => {
                        refused.get_or_insert(why);
                        Transformed::no(sub)
                    }
                })
            })
        })
    });
    match (refused, marked) {
        (Some(why), _) => Err(format!(
            "{why}, and PostgreSQL rounds decimals where DataFusion truncates"
        )),
        (None, Ok(t)) => Ok(t.data),
        (None, Err(e)) => Err(e.to_string()),
    }
}

/// `sub` with its marker (see `mark`), `None` when it needs none, or why it
/// cannot be written for PostgreSQL.
fn with_marker(sub: &Expr, schema: &datafusion::common::DFSchema) -> Result<Option<Expr>, String> {
    use datafusion::logical_expr::{BinaryExpr, Operator, WindowFunctionDefinition};
    let scale = |e: &Expr| match e.get_type(schema) {
        Ok(DataType::Decimal128(_, s) | DataType::Decimal256(_, s)) => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(_) => Err(format!("the type of `{e}` cannot be told")),
    };
    match sub {
        Expr::BinaryExpr(b) if b.op == Operator::Divide => {
            match (scale(sub), scale(&b.left), scale(&b.right)) {
                (Ok(Some(s)), _, _) => Ok(Some(Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(marker(s, (*b.left).clone())),
                    Operator::Divide,
                    b.right.clone(),
                )))),
                (Ok(None), Ok(None), Ok(None)) => Ok(None),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                _ => Err(format!("`{sub}` divides a decimal into a float")),
            }
        }
        Expr::AggregateFunction(f) if f.func.name() == "avg" => match scale(sub) {
            Ok(Some(s)) => {
                let mut f = f.clone();
                f.params.args = f.params.args.into_iter().map(|a| marker(s, a)).collect();
                Ok(Some(Expr::AggregateFunction(f)))
            }
            other => other.map(|_| None),
        },
        Expr::WindowFunction(w) if matches!(&w.fun, WindowFunctionDefinition::AggregateUDF(f) if f.name() == "avg") => {
            match scale(sub) {
                Ok(Some(s)) => {
                    let mut w = w.clone();
                    w.params.args = w.params.args.into_iter().map(|a| marker(s, a)).collect();
                    Ok(Some(Expr::WindowFunction(w)))
                }
                other => other.map(|_| None),
            }
        }
        _ => Ok(None),
    }
}

/// `pipeline_truncate_<scale>(e)`: typed and named as `e`, never run.
fn marker(scale: i8, e: Expr) -> Expr {
    use std::sync::Arc;
    let udf = datafusion::logical_expr::ScalarUDF::from(Marker {
        name: format!("{MARKER}{scale}"),
        signature: datafusion::logical_expr::Signature::any(
            1,
            datafusion::logical_expr::Volatility::Immutable,
        ),
    });
    Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
        Arc::new(udf),
        vec![e],
    ))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Marker {
    name: String,
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for Marker {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(args[0].clone())
    }
    fn schema_name(&self, args: &[Expr]) -> datafusion::error::Result<String> {
        Ok(args[0].schema_name().to_string())
    }
    fn display_name(&self, args: &[Expr]) -> datafusion::error::Result<String> {
        Ok(args[0].schema_name().to_string())
    }
    fn invoke_with_args(
        &self,
        _: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        datafusion::common::not_impl_err!("{} only marks a plan to unparse", self.name)
    }
}

/// Rewrites the marked expressions of an unparsed statement (see `mark`) as
/// PostgreSQL's exact integer division scaled back: what DataFusion computes.
/// Fails if a marker is left where it was not expected.
fn truncate(statement: &mut ast::Statement) -> Result<(), String> {
    use std::ops::ControlFlow;
    let rewritten = ast::visit_expressions_mut(statement, |e| {
        let replacement = match e {
            ast::Expr::BinaryOp {
                left,
                op: ast::BinaryOperator::Divide,
                right,
            } => marked(left).map(|(s, x)| scaled(s, &x.to_string(), &right.to_string())),
            ast::Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("avg") => {
                match &f.args {
                    ast::FunctionArguments::List(list) => match list.args.as_slice() {
                        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] => marked(arg)
                            .map(|(s, x)| {
                                let over = |name: &str| {
                                    let mut g = f.clone();
                                    g.name = ast::ObjectName::from(vec![ast::Ident::new(name)]);
                                    if let ast::FunctionArguments::List(l) = &mut g.args {
                                        l.args = vec![ast::FunctionArg::Unnamed(
                                            ast::FunctionArgExpr::Expr(x.clone()),
                                        )];
                                    }
                                    g.to_string()
                                };
                                scaled(s, &over("sum"), &over("count"))
                            }),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        match replacement.map(|sql| parse_expr(&sql)) {
            Some(Ok(new)) => *e = ast::Expr::Nested(Box::new(new)),
            Some(Err(why)) => return ControlFlow::Break(why),
            None => {}
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(why) = rewritten {
        return Err(why);
    }
    if statement.to_string().contains(MARKER) {
        return Err(
            "a decimal average or quotient was unparsed where it cannot be rewritten".into(),
        );
    }
    Ok(())
}

/// The scale and the expression a marker wraps, if `e` is one.
fn marked(e: &ast::Expr) -> Option<(u32, ast::Expr)> {
    let ast::Expr::Function(f) = e else {
        return None;
    };
    let scale = f
        .name
        .to_string()
        .trim_matches('"')
        .strip_prefix(MARKER)?
        .parse()
        .ok()?;
    match &f.args {
        ast::FunctionArguments::List(list) => match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x))] => Some((scale, x.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// `x / y` truncated to `scale` decimals, in PostgreSQL: `div` is its exact
/// integer quotient (towards zero, as DataFusion's), and multiplying by
/// `0.0…1` is exact and gives the scale.
fn scaled(scale: u32, x: &str, y: &str) -> String {
    if scale == 0 {
        return format!("div(({x}), ({y}))");
    }
    let s = scale as usize;
    format!(
        "div(({x}) * 1{zeros}, ({y})) * 0.{fraction}1",
        zeros = "0".repeat(s),
        fraction = "0".repeat(s - 1)
    )
}

fn parse_expr(sql: &str) -> Result<ast::Expr, String> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect as Postgres;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&Postgres {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("cannot write `{sql}` back: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    /// `sql` over `t (x decimal(10,2), y bigint)`, marked, unparsed, truncated.
    async fn postgres_sql(sql: &str) -> Result<String, String> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Decimal128(10, 2), true),
            Field::new("y", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    Decimal128Array::from(vec![Some(125)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![Some(3)])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch).unwrap();
        let plan = ctx.sql(sql).await.unwrap().logical_plan().clone();
        let mut statement = Unparser::new(&PostgreSqlDialect {})
            .plan_to_sql(&mark(&plan)?)
            .unwrap();
        truncate(&mut statement)?;
        Ok(statement.to_string())
    }

    #[tokio::test]
    async fn decimal_quotients_and_averages_become_exact_integer_division() {
        let sql = postgres_sql("SELECT x / y AS q FROM t").await.unwrap();
        assert!(sql.contains("div(") && !sql.contains(MARKER), "{sql}");
        assert!(
            sql.contains("* 0.000001"),
            "DataFusion's quotient has scale 6: {sql}"
        );
        let sql = postgres_sql("SELECT avg(DISTINCT x) AS m FROM t")
            .await
            .unwrap();
        assert!(
            sql.contains("sum(DISTINCT") && sql.contains("count(DISTINCT"),
            "{sql}"
        );
        assert!(
            sql.contains("* 0.000001"),
            "avg of decimal(10,2) has scale 6: {sql}"
        );
        let sql = postgres_sql("SELECT avg(x) OVER (PARTITION BY y) AS m FROM t")
            .await
            .unwrap();
        assert!(
            sql.contains("sum(") && sql.contains("OVER (PARTITION BY"),
            "{sql}"
        );
        // Nothing decimal, nothing rewritten.
        let sql = postgres_sql("SELECT y / 2 AS h, avg(y) AS m FROM t GROUP BY y")
            .await
            .unwrap();
        assert!(!sql.contains("div("), "{sql}");
    }

    #[test]
    fn scaled_divides_exactly_then_scales() {
        assert_eq!(scaled(0, "a", "b"), "div((a), (b))");
        assert_eq!(scaled(3, "a", "b"), "div((a) * 1000, (b)) * 0.001");
        assert!(parse_expr(&scaled(38, "a + 1", "b")).is_ok());
    }
}
