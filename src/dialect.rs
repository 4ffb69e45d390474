//! The SQL dialect of models: DataFusion SQL, with the few points where
//! DataFusion's own answer would be a silently wrong number made into what an
//! analyst (and PostgreSQL) expects. Every model, audit query and unit test is
//! planned through [`rewrite`], in-process and on a cluster alike, so one text
//! has one meaning (documentation/dialect.md lists every point).
//!
//! - Integer `+ - * / %` are checked: an overflow or a division by zero fails
//!   the query and names the expression and where it is in the file, where
//!   DataFusion's kernels would wrap around (`checked_add` … `checked_mod`).
//! - Float division by zero is an error, not ±Infinity or NaN
//!   (`checked_fdiv`), and a model's float result that is not finite (`ln(0)`,
//!   `exp(1000)`, `sqrt(-1)`) fails the model ([`finite`]).
//! - `sum` of integers is exact: it adds in DECIMAL(38,0) (PostgreSQL's and
//!   DuckDB's `sum(bigint)` are wide too), so `sum(x) / count(*)` is a decimal
//!   quotient, not an integer one, and a sum past BIGINT is not wrapped.
//!
//! - Decimal quotients and averages keep 16 decimal places (DataFusion's own
//!   keep the dividend's scale + 4, so a share of a total came out 0), by
//!   widening the dividend to DECIMAL(38, ≥ 12) first; `avg` of integers is
//!   exact the same way (DataFusion's wraps around past BIGINT).
//! - A cast of a float or decimal to an integer rounds (floats half to even,
//!   decimals half away from zero, as PostgreSQL), where DataFusion truncates.
//! - A timestamp cast to text reads `2024-01-31 23:59:59.5`, as PostgreSQL
//!   writes it, where DataFusion writes `2024-01-31T23:59:59.500`.
//! - `floor`/`ceil` of a decimal do not overflow at its precision.
//! - `SIMILAR TO` means what the SQL standard says (`%`, `_`, the whole
//!   value), where DataFusion took the pattern as a regular expression.
//! - `EXCEPT ALL` and `INTERSECT ALL` are refused ([`refused`]): DataFusion
//!   drops or keeps every copy of a row instead of counting them.
//!
//! The rewrite runs on the plan as SQL made it, before DataFusion's analyzer:
//! its type coercion then sees the new types. Names do not change (the checked
//! functions print as the operator they replace), so result columns keep theirs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Datum, Float64Array};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue, exec_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility, WindowFunctionDefinition, cast, lit,
};

/// The revision of this module's rewrite: a change of meaning bumps it, and
/// every model period computed under another becomes stale.
pub const DIALECT: u32 = 1;

/// What computes models, as `meta.transform_log.engine` starts: the engine's
/// version and the dialect's revision (a cluster appends where it ran).
pub static ENGINE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "datafusion {}/dialect {DIALECT}",
        datafusion::DATAFUSION_VERSION
    )
});

/// The engine part of a recorded engine (without where it ran).
pub fn engine_version(recorded: &str) -> &str {
    recorded.split(" ballista://").next().unwrap_or(recorded)
}

/// Makes `ctx` a session for models: decimal literals (`0.1` is
/// DECIMAL(1, 1), as in PostgreSQL and DuckDB, not a DOUBLE), and the names
/// analysts bring from PostgreSQL and DuckDB for functions DataFusion spells
/// otherwise (`sign` → `signum`, `strftime` → `to_char`).
pub fn session(ctx: datafusion::prelude::SessionContext) -> datafusion::prelude::SessionContext {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        state
            .config_mut()
            .options_mut()
            .sql_parser
            .parse_float_as_decimal = true;
    }
    let signum = datafusion::functions::math::signum();
    ctx.register_udf(signum.as_ref().clone().with_aliases(["sign"]));
    let to_char = datafusion::functions::datetime::to_char();
    ctx.register_udf(to_char.as_ref().clone().with_aliases(["strftime"]));
    ctx
}

/// The widest exact type `sum` of integers adds in.
pub const SUM_TYPE: DataType = DataType::Decimal128(38, 0);

/// Rewrites a model's plan (as `SessionContext::sql` made it, not yet
/// analyzed) to the dialect's meaning. Subqueries included.
pub fn rewrite(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = input_schema(&node);
        let sums = matches!(node, LogicalPlan::Aggregate(_) | LogicalPlan::Window(_));
        let rewritten =
            node.map_expressions(|e| e.transform_up(|e| rewrite_expr(e, &schema, sums)))?;
        // Types below may have changed (a sum is now a decimal): recompute
        // every node's schema on the way up.
        rewritten.map_data(|p| p.recompute_schema())
    })
    .map(|t| t.data)
}

/// The schema a node's expressions are evaluated against.
fn input_schema(node: &LogicalPlan) -> DFSchemaRef {
    let inputs = node.inputs();
    if inputs.is_empty() {
        node.schema().clone()
    } else {
        Arc::new(merge_schema(&inputs))
    }
}

fn rewrite_expr(e: Expr, schema: &DFSchema, sums: bool) -> Result<Transformed<Expr>> {
    match e {
        Expr::BinaryExpr(b) => binary(b, schema),
        Expr::Cast(c) => cast_expr(c, schema),
        Expr::SimilarTo(like) => similar_to(like),
        Expr::ScalarFunction(f)
            if matches!(f.func.name(), "floor" | "ceil") && f.args.len() == 1 =>
        {
            match f.args[0].get_type(schema)? {
                DataType::Decimal128(p, s) if p < 38 => {
                    let mut f = f;
                    widen_to(&mut f.args, DataType::Decimal128(38, s));
                    Ok(Transformed::yes(Expr::ScalarFunction(f)))
                }
                _ => Ok(Transformed::no(Expr::ScalarFunction(f))),
            }
        }
        Expr::AggregateFunction(mut agg) if sums => {
            let widened = widened_argument(&agg.func, &agg.params.args, schema)?;
            match widened {
                Some(t) => {
                    widen_to(&mut agg.params.args, t);
                    Ok(Transformed::yes(Expr::AggregateFunction(agg)))
                }
                None => Ok(Transformed::no(Expr::AggregateFunction(agg))),
            }
        }
        Expr::WindowFunction(mut w) if sums => {
            let widened = match &w.fun {
                WindowFunctionDefinition::AggregateUDF(f) => {
                    widened_argument(f, &w.params.args, schema)?
                }
                _ => None,
            };
            match widened {
                Some(t) => {
                    widen_to(&mut w.params.args, t);
                    Ok(Transformed::yes(Expr::WindowFunction(w)))
                }
                None => Ok(Transformed::no(Expr::WindowFunction(w))),
            }
        }
        e => Ok(Transformed::no(e)),
    }
}

/// An arithmetic operator: checked for integers and float division, a
/// decimal quotient widened first.
fn binary(b: BinaryExpr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let BinaryExpr { left, op, right } = b;
    let (lt, rt) = (left.get_type(schema)?, right.get_type(schema)?);
    let numeric = lt.is_numeric() && rt.is_numeric();
    let floating = lt.is_floating() || rt.is_floating();
    if op == Operator::Divide && (is_decimal(&lt) || is_decimal(&rt)) && !floating && numeric {
        let widened = cast(*left, quotient_type(&lt));
        return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
            left: Box::new(widened),
            op,
            right,
        })));
    }
    let kind = if is_integer(&lt) && is_integer(&rt) {
        Checked::integer(op)
    } else if op == Operator::Divide && floating && numeric {
        Some(Kind::FloatDivide)
    } else {
        None
    };
    let Some(kind) = kind else {
        return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
            left,
            op,
            right,
        })));
    };
    let text = format!("{} {op} {}", left.schema_name(), right.schema_name());
    let what = match location(&left).or_else(|| location(&right)) {
        Some((line, col)) => format!("{text} (Line: {line}, Column: {col})"),
        None => text,
    };
    let udf = ScalarUDF::from(Checked::new(kind));
    Ok(Transformed::yes(udf.call(vec![*left, *right, lit(what)])))
}

/// The type an aggregate's argument is widened to: `sum` of integers adds
/// in DECIMAL(38, 0); `avg` of integers and decimals averages in
/// DECIMAL(38, ≥ 12).
fn widened_argument(
    f: &Arc<datafusion::logical_expr::AggregateUDF>,
    args: &[Expr],
    schema: &DFSchema,
) -> Result<Option<DataType>> {
    if args.len() != 1 {
        return Ok(None);
    }
    let t = args[0].get_type(schema)?;
    Ok(match f.name() {
        "sum" if is_integer(&t) => Some(SUM_TYPE),
        "avg" if is_integer(&t) || matches!(t, DataType::Decimal128(_, s) if s < 12) => {
            Some(quotient_type(&t))
        }
        _ => None,
    })
}

/// Where the expression's first column is in the model's file.
fn location(e: &Expr) -> Option<(u64, u64)> {
    e.column_refs()
        .into_iter()
        .filter_map(|c| c.spans().first())
        .map(|s| (s.start.line, s.start.column))
        .find(|(line, _)| *line > 0)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
}

fn widen_to(args: &mut [Expr], t: DataType) {
    let arg = std::mem::replace(&mut args[0], lit(ScalarValue::Null));
    args[0] = cast(arg, t);
}

fn is_decimal(t: &DataType) -> bool {
    matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..))
}

/// The type a dividend (or an averaged value) is widened to, so the quotient
/// keeps 16 decimal places: DataFusion gives a quotient its dividend's scale + 4.
fn quotient_type(t: &DataType) -> DataType {
    let scale = match t {
        DataType::Decimal128(_, s) | DataType::Decimal256(_, s) => (*s).max(12),
        _ => 12,
    };
    DataType::Decimal128(38, scale)
}

/// Casts: a float or decimal to an integer rounds; a timestamp to text is
/// written as PostgreSQL writes it.
fn cast_expr(
    c: datafusion::logical_expr::expr::Cast,
    schema: &DFSchema,
) -> Result<Transformed<Expr>> {
    let from = c.expr.get_type(schema)?;
    let to = c.field.data_type().clone();
    if to.is_integer() && (from.is_floating() || is_decimal(&from)) {
        let rounded = ScalarUDF::from(Rounded::new()).call(vec![*c.expr]);
        return Ok(Transformed::yes(cast(rounded, to)));
    }
    if matches!(from, DataType::Timestamp(..))
        && matches!(
            to,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        )
    {
        let text = ScalarUDF::from(TimestampText::new()).call(vec![*c.expr]);
        return Ok(Transformed::yes(cast(text, to)));
    }
    Ok(Transformed::no(Expr::Cast(c)))
}

/// `x SIMILAR TO 'pattern'` as the standard means it: `%` any text, `_` one
/// character, the rest regular-expression syntax, matched against the whole
/// value.
fn similar_to(like: datafusion::logical_expr::expr::Like) -> Result<Transformed<Expr>> {
    let Expr::Literal(ScalarValue::Utf8(Some(pattern)), _) = like.pattern.as_ref() else {
        return datafusion::common::plan_err!(
            "SIMILAR TO needs a literal pattern here; use regexp_like for a computed one"
        );
    };
    let mut regex = String::from("^(?:");
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            c if Some(c) == like.escape_char => {
                if let Some(next) = chars.next() {
                    regex.push_str(&regex::escape(&next.to_string()));
                }
            }
            '.' => regex.push_str("\\."),
            c => regex.push(c),
        }
    }
    regex.push_str(")$");
    let udf = ScalarUDF::from(SimilarTo::new(like.negated, like.case_insensitive));
    Ok(Transformed::yes(udf.call(vec![
        *like.expr,
        lit(regex),
        lit(pattern.clone()),
    ])))
}

/// Why the pipeline refuses a model's SQL before planning it, with where:
/// `EXCEPT ALL` / `INTERSECT ALL`, which DataFusion 55 computes as an anti or
/// semi join (every copy of a row the right side has is dropped, or every copy
/// kept) instead of counting copies.
pub fn refused(sql: &str) -> Option<String> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?is)\b(except|intersect)\s+all\b").expect("a valid regex")
    });
    let code = blank_strings_and_comments(sql);
    let m = RE.captures(&code)?;
    let at = m.get(0)?.start();
    let line = code[..at].matches('\n').count() + 1;
    let column = at - code[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    Some(format!(
        "{} ALL is not supported: DataFusion drops or keeps every copy of a row instead of \
         counting copies; use {} (distinct rows) or count copies with row_number() \
         (Line: {line}, Column: {column})",
        m[1].to_uppercase(),
        m[1].to_uppercase()
    ))
}

/// The SQL with string literals and comments blanked (same length), so a
/// keyword search finds only code.
fn blank_strings_and_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                out.push(' ');
                for d in chars.by_ref() {
                    out.push(if d == '\n' { '\n' } else { ' ' });
                    if d == '\'' {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(' ');
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Why a plan cannot run on a Ballista cluster with the meaning it has in
/// process: `IGNORE NULLS` does not survive the trip to the executors
/// (datafusion-proto 55 drops it from window functions), so `lag(x) IGNORE
/// NULLS` would silently respect NULLs there.
pub fn cluster_refuses(plan: &LogicalPlan) -> Option<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::expr::NullTreatment;
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::WindowFunction(w) = e
                    && w.params.null_treatment == Some(NullTreatment::IgnoreNulls)
                {
                    found = Some(format!(
                        "{} IGNORE NULLS cannot run on a Ballista cluster (its executors \
                         would respect NULLs); run this model in process",
                        w.fun
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Which checked operation a [`Checked`] function performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    FloatDivide,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Add,
        Kind::Subtract,
        Kind::Multiply,
        Kind::Divide,
        Kind::Modulo,
        Kind::FloatDivide,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Add => "checked_add",
            Kind::Subtract => "checked_sub",
            Kind::Multiply => "checked_mul",
            Kind::Divide => "checked_div",
            Kind::Modulo => "checked_mod",
            Kind::FloatDivide => "checked_fdiv",
        }
    }

    fn operator(self) -> Operator {
        match self {
            Kind::Add => Operator::Plus,
            Kind::Subtract => Operator::Minus,
            Kind::Multiply => Operator::Multiply,
            Kind::Divide | Kind::FloatDivide => Operator::Divide,
            Kind::Modulo => Operator::Modulo,
        }
    }

    fn operand(self) -> DataType {
        match self {
            Kind::FloatDivide => DataType::Float64,
            _ => DataType::Int64,
        }
    }
}

/// An arithmetic operator that fails on overflow and on division by zero.
/// Integers are computed as BIGINT (PostgreSQL's widest integer); its third
/// argument is the expression's text, for the error.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Checked {
    kind: Kind,
    signature: Signature,
}

impl Checked {
    fn new(kind: Kind) -> Self {
        Checked {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn integer(op: Operator) -> Option<Kind> {
        Some(match op {
            Operator::Plus => Kind::Add,
            Operator::Minus => Kind::Subtract,
            Operator::Multiply => Kind::Multiply,
            Operator::Divide => Kind::Divide,
            Operator::Modulo => Kind::Modulo,
            _ => return None,
        })
    }

    fn apply(&self, l: &dyn Datum, r: &dyn Datum) -> Result<ArrayRef, ArrowError> {
        match self.kind {
            Kind::Add => numeric::add(l, r),
            Kind::Subtract => numeric::sub(l, r),
            Kind::Multiply => numeric::mul(l, r),
            Kind::Divide => numeric::div(l, r),
            Kind::Modulo => numeric::rem(l, r),
            Kind::FloatDivide => {
                let (divisor, _) = r.get();
                let divisor = divisor
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("coerced to Float64");
                if divisor.iter().any(|v| v == Some(0.0)) {
                    return Err(ArrowError::DivideByZero);
                }
                numeric::div(l, r)
            }
        }
    }
}

impl ScalarUDFImpl for Checked {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3 {
            return exec_err!("{} takes 3 arguments", self.name());
        }
        let t = self.kind.operand();
        Ok(vec![t.clone(), t, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.kind.operand())
    }

    /// Prints as the operator it replaces, so result columns keep their names.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(format!(
            "{} {} {}",
            args[0].schema_name(),
            self.kind.operator(),
            args[1].schema_name()
        ))
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        self.schema_name(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let what = match &args.args[2] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => s.clone(),
            _ => self.kind.operator().to_string(),
        };
        let scalars = args.args[..2]
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let l = datum(&args.args[0])?;
        let r = datum(&args.args[1])?;
        let out = self
            .apply(l.as_ref(), r.as_ref())
            .map_err(|e| arithmetic_error(e, &what, self.kind))?;
        if scalars {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else if out.len() == rows {
            Ok(ColumnarValue::Array(out))
        } else {
            exec_err!("{}: {} rows for {rows}", self.name(), out.len())
        }
    }
}

/// `out` as a scalar when `input` was one (a function of a literal), else as
/// the array it is.
fn shaped_like(input: &ColumnarValue, out: ArrayRef) -> Result<ColumnarValue> {
    match input {
        ColumnarValue::Scalar(_) => {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
        ColumnarValue::Array(_) => Ok(ColumnarValue::Array(out)),
    }
}

/// A value as arrow's kernels take it: an array, or a scalar broadcast by them.
fn datum(v: &ColumnarValue) -> Result<Box<dyn Datum>> {
    Ok(match v {
        ColumnarValue::Array(a) => Box::new(a.clone()),
        ColumnarValue::Scalar(s) => Box::new(s.to_scalar()?),
    })
}

fn arithmetic_error(e: ArrowError, what: &str, kind: Kind) -> DataFusionError {
    let message = match e {
        ArrowError::DivideByZero => format!("division by zero in {what}"),
        ArrowError::ArithmeticOverflow(_) if kind == Kind::FloatDivide => {
            format!("float overflow in {what}")
        }
        ArrowError::ArithmeticOverflow(_) => format!(
            "integer overflow in {what}: the result is outside BIGINT \
             (±9223372036854775807); cast an operand to DECIMAL(38, 0) or DOUBLE"
        ),
        other => format!("{what}: {other}"),
    };
    DataFusionError::Execution(message)
}

/// The dialect's functions by name, for a cluster's codec (the plan names
/// them; executors make them again).
pub fn udf(name: &str) -> Option<ScalarUDF> {
    match name {
        "finite" => return Some(ScalarUDF::from(Finite::new())),
        "rounded" => return Some(ScalarUDF::from(Rounded::new())),
        "timestamp_text" => return Some(ScalarUDF::from(TimestampText::new())),
        "similar_to" => return Some(ScalarUDF::from(SimilarTo::new(false, false))),
        "not_similar_to" => return Some(ScalarUDF::from(SimilarTo::new(true, false))),
        _ => {}
    }
    Kind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .map(|k| ScalarUDF::from(Checked::new(k)))
}

/// Wraps a model's result column `name` so that a float value that is not a
/// number (±Infinity, NaN) fails the model instead of being written.
pub fn finite(column: Expr, name: &str) -> Expr {
    ScalarUDF::from(Finite::new()).call(vec![column, lit(name)])
}

/// See [`finite`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Finite {
    signature: Signature,
}

impl Finite {
    fn new() -> Self {
        Finite {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Finite {
    fn name(&self) -> &str {
        "finite"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args[0].schema_name().to_string())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => s.clone(),
            _ => String::new(),
        };
        let value = args.args[0].clone();
        let array = value.to_array(args.number_rows)?;
        let bad = match array.data_type() {
            DataType::Float64 => {
                let a = array.as_any().downcast_ref::<Float64Array>().expect("f64");
                a.iter().flatten().find(|v| !v.is_finite())
            }
            DataType::Float32 => array
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float32Array>()
                .expect("f32")
                .iter()
                .flatten()
                .find(|v| !v.is_finite())
                .map(f64::from),
            _ => None,
        };
        match bad {
            Some(v) => exec_err!(
                "column `{name}` of the result is {}, which is not a number a table can \
                 hold meaningfully (a float overflow, ln(0), sqrt of a negative...)",
                if v.is_nan() {
                    "NaN".to_owned()
                } else {
                    format!("{v}")
                }
            ),
            None => Ok(value),
        }
    }
}

/// A float rounded half to even, a decimal half away from zero (its scale
/// kept), before a cast to an integer; prints as its argument.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Rounded {
    signature: Signature,
}

impl Rounded {
    fn new() -> Self {
        Rounded {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Rounded {
    fn name(&self) -> &str {
        "rounded"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args[0].schema_name().to_string())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{AsArray, Decimal128Array};
        use datafusion::arrow::datatypes::{Decimal128Type, Float32Type, Float64Type};
        let array = args.args[0].to_array(args.number_rows)?;
        let out: ArrayRef = match array.data_type() {
            DataType::Float64 => Arc::new(
                array
                    .as_primitive::<Float64Type>()
                    .unary::<_, Float64Type>(f64::round_ties_even),
            ),
            DataType::Float32 => Arc::new(
                array
                    .as_primitive::<Float32Type>()
                    .unary::<_, Float32Type>(f32::round_ties_even),
            ) as ArrayRef,
            DataType::Decimal128(p, s) => {
                let unit = 10i128.pow(u32::from((*s).max(0) as u8));
                let half = unit / 2;
                let rounded: Decimal128Array = array
                    .as_primitive::<Decimal128Type>()
                    .unary::<_, Decimal128Type>(|v| {
                        if unit == 1 {
                            return v;
                        }
                        let r = v % unit;
                        let base = v - r;
                        if r >= half {
                            base + unit
                        } else if r <= -half {
                            base - unit
                        } else {
                            base
                        }
                    })
                    .with_precision_and_scale(*p, *s)?;
                Arc::new(rounded)
            }
            _ => array,
        };
        shaped_like(&args.args[0], out)
    }
}

/// A timestamp as PostgreSQL writes it: `2024-01-31 23:59:59.5` (the fraction
/// without trailing zeros, none when whole; a zone as `+00`); prints as its
/// argument.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimestampText {
    signature: Signature,
}

impl TimestampText {
    fn new() -> Self {
        TimestampText {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimestampText {
    fn name(&self) -> &str {
        "timestamp_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(args[0].schema_name().to_string())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::{AsArray, StringArray};
        use datafusion::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
        let array = args.args[0].to_array(args.number_rows)?;
        let zoned = matches!(array.data_type(), DataType::Timestamp(_, Some(_)));
        let micros = datafusion::arrow::compute::cast(
            &array,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        let text: StringArray = micros
            .iter()
            .map(|v| {
                let v = v?;
                let t = chrono::DateTime::from_timestamp_micros(v)?.naive_utc();
                let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
                let frac = v.rem_euclid(1_000_000);
                if frac != 0 {
                    s.push_str(format!(".{frac:06}").trim_end_matches('0'));
                }
                if zoned {
                    s.push_str("+00");
                }
                Some(s)
            })
            .collect();
        let out: ArrayRef = Arc::new(text);
        shaped_like(&args.args[0], out)
    }
}

/// `x [NOT] SIMILAR TO pattern`: its arguments are the value, the pattern as an
/// anchored regular expression and the pattern as written (for its name).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SimilarTo {
    negated: bool,
    case_insensitive: bool,
    signature: Signature,
}

impl SimilarTo {
    fn new(negated: bool, case_insensitive: bool) -> Self {
        SimilarTo {
            negated,
            case_insensitive,
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SimilarTo {
    fn name(&self) -> &str {
        if self.negated {
            "not_similar_to"
        } else {
            "similar_to"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let not = if self.negated { "NOT " } else { "" };
        Ok(format!(
            "{} {not}SIMILAR TO {}",
            args[0].schema_name(),
            args[2].schema_name()
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::arrow::array::BooleanArray;
        let ColumnarValue::Scalar(ScalarValue::Utf8(Some(pattern))) = &args.args[1] else {
            return exec_err!("SIMILAR TO needs a literal pattern");
        };
        let re = regex::RegexBuilder::new(pattern)
            .case_insensitive(self.case_insensitive)
            .build()
            .map_err(|e| DataFusionError::Execution(format!("SIMILAR TO pattern: {e}")))?;
        let values = datafusion::arrow::compute::cast(
            &args.args[0].to_array(args.number_rows)?,
            &DataType::Utf8,
        )?;
        let values = values
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .expect("utf8");
        let out: BooleanArray = values
            .iter()
            .map(|v| v.map(|v| re.is_match(v) != self.negated))
            .collect();
        let out: ArrayRef = Arc::new(out);
        shaped_like(&args.args[0], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (i BIGINT, f DOUBLE) AS VALUES (1, 0.5), (2, 0.0), (NULL, NULL)")
            .await?
            .collect()
            .await?;
        let df = ctx.sql(sql).await?;
        let (state, plan) = df.into_parts();
        let plan = rewrite(plan)?;
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        Ok(pretty_format_batches(&df.collect().await?)?.to_string())
    }

    #[tokio::test]
    async fn integer_overflow_is_an_error_naming_the_expression() {
        let e = run("SELECT i * 9223372036854775807 AS big FROM t")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("integer overflow in t.i * Int64(9223372036854775807)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn division_by_zero_is_an_error_for_integers_and_floats() {
        let e = run("SELECT i / (i - 1) FROM t")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("division by zero in t.i / t.i - Int64(1)"),
            "{e}"
        );
        let e = run("SELECT 1.0 / f FROM t").await.unwrap_err().to_string();
        assert!(e.contains("division by zero"), "{e}");
    }

    #[tokio::test]
    async fn sum_of_integers_is_exact_and_names_stay() {
        let out = run("SELECT sum(i) / count(*) AS q, sum(i), sum(i) OVER () AS w FROM t GROUP BY i ORDER BY i")
            .await
            .unwrap();
        assert!(out.contains("sum(t.i)"), "{out}");
        let out = run("SELECT sum(i) / count(i) AS q FROM t").await.unwrap();
        assert!(out.contains("1.5"), "{out}");
        let e = run("SELECT sum(i * 4611686018427387904) FROM t").await;
        assert!(e.is_err(), "{e:?}");
    }

    #[tokio::test]
    async fn similar_to_takes_percent_underscore_and_escapes_and_a_dot_literally() {
        let out = run(
            "SELECT 'a.c' SIMILAR TO 'a.c' AS dot, 'abc' SIMILAR TO 'a.c' AS any, \
                    'a%c' SIMILAR TO 'a!%c' ESCAPE '!' AS escaped, 'abc' SIMILAR TO 'a!%c' ESCAPE '!' AS not_wild, \
                    'xabcx' SIMILAR TO 'a_c' AS whole, 'abc' NOT SIMILAR TO '_b%' AS negated",
        )
        .await
        .unwrap();
        let row = out.lines().nth(3).unwrap().replace(' ', "");
        assert_eq!(row, "|true|false|true|false|false|false|", "{out}");
    }

    #[test]
    fn except_all_and_intersect_all_are_refused_where_they_are() {
        let why = refused("SELECT a FROM t\n  EXCEPT ALL SELECT a FROM u").unwrap();
        assert!(why.starts_with("EXCEPT ALL is not supported"), "{why}");
        assert!(why.contains("(Line: 2, Column: 3)"), "{why}");
        assert!(refused("SELECT 'except all' AS x -- intersect all\nFROM t").is_none());
        assert!(refused("SELECT a FROM t EXCEPT SELECT a FROM u").is_none());
    }

    #[tokio::test]
    async fn names_of_rewritten_columns_do_not_change() {
        let out = run("SELECT i + 1, i * 2 - 1 FROM t ORDER BY i")
            .await
            .unwrap();
        assert!(out.contains("t.i + Int64(1)"), "{out}");
        assert!(out.contains("t.i * Int64(2) - Int64(1)"), "{out}");
    }
}
