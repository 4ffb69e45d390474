//! The rule compiler: a dataset's column types and rules become DataFusion
//! expressions over the text source: one typed value per column and one boolean
//! flag per check, built with the Expr API (config values are literals, never SQL
//! text).
//!
//! A value that fails to parse is one `type`/`format` error; bounds and allowed
//! checks look only at values that parsed, so it is never also a bounds error.

use std::borrow::Cow;
use std::ops::Not;
use std::sync::Arc;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Builder, ListBuilder, StringArray, StringBuilder,
    StructBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Fields, TimeUnit};
use datafusion::common::{Column as DfColumn, ScalarValue};
use datafusion::error::Result as DfResult;
use datafusion::functions::expr_fn::{btrim, concat_ws, lower, regexp_like};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
    lit, try_cast, when,
};

use crate::config::{Bound, Column, ColumnType, Dataset, Scalar};

mod temporal;
mod udf;

pub use temporal::*;
pub use udf::*;

/// Which quality category a failed check counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Format,
    Completeness,
    Bounds,
    Uniqueness,
}

/// One check: a flag that is true when the row fails it.
#[derive(Debug, Clone)]
pub struct Check {
    pub column: String,
    pub rule: &'static str,
    pub category: Category,
    pub message: String,
    /// True when the row fails; null where a part of it is null, which is
    /// no failure (see [`Check::flag`]).
    pub test: Expr,
    /// The offending value as text, shown in quarantine and reports.
    pub value: Expr,
}

impl Check {
    /// True when the row fails, never null. `row_errors` takes the `test`
    /// itself: `IS TRUE` was an element-wise comparison per check and row (a
    /// fortieth of a narrow validate's CPU), where a null test is simply no
    /// failure.
    pub fn flag(&self) -> Expr {
        self.test.clone().is_true()
    }
}

/// A dataset's rules, compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Declared column → its typed, cleaned value.
    pub typed: Vec<(String, Expr)>,
    pub checks: Vec<Check>,
    /// Column sets whose values must be unique in a file (primary key first).
    pub keys: Vec<Vec<String>>,
}

/// Whitespace that makes a value "missing".
const BLANK: &str = " \t\r\n";

/// The column a source sets when a row is malformed (its message); the
/// `_row` format check flags it.
pub const SHAPE: &str = "_shape";
const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
const FALSE: &[&str] = &["false", "f", "no", "n", "0"];

pub fn raw(name: &str) -> Expr {
    Expr::Column(DfColumn::from_name(name))
}

fn trimmed(name: &str) -> Expr {
    btrim(vec![raw(name), lit(BLANK)])
}

/// A source column as text: itself when it is text, its values cast to text when
/// the file holds them natively (see `validate::source::Spec::native`).
pub fn text(name: &str) -> Expr {
    cast(raw(name), DataType::Utf8)
}

/// Null, empty or whitespace-only (never null itself).
fn missing(name: &str) -> Expr {
    text_udf(TextFn::Blank).call(vec![raw(name)])
}

/// The name of the column flagging membership in duplicated group `k`.
pub fn dup_column(k: usize) -> String {
    format!("__dup_{k}")
}

/// Compiles `ds` over a source whose declared columns are Utf8 text, or values a
/// Parquet file already holds in the declared type (`validate::source::Spec::native`).
pub fn compile(ds: &Dataset) -> Compiled {
    let mut typed = Vec::new();
    let mut checks = Vec::new();
    for (name, c) in &ds.columns {
        let value = typed_value(name, c.ty, c.format.as_deref());
        typed.push((name.clone(), value.clone()));
        checks.extend(column_checks(name, c, value));
    }
    let keys = keys(ds);
    checks.extend(keys.iter().enumerate().map(|(k, key)| unique_check(k, key)));
    checks.push(Check {
        column: "_row".into(),
        rule: "format",
        category: Category::Format,
        message: "the row is malformed".into(),
        test: raw(SHAPE).is_not_null(),
        value: raw(SHAPE),
    });
    Compiled {
        typed,
        checks,
        keys,
    }
}

/// The checks of one declared column, in the order their errors are listed.
fn column_checks(name: &str, c: &Column, value: Expr) -> Vec<Check> {
    let check = |rule: &'static str, category, message: String, flag: Expr| Check {
        column: name.to_owned(),
        rule,
        category,
        message,
        test: flag,
        value: raw(name),
    };
    let mut checks = Vec::new();
    if c.required {
        let message = "a value is required".into();
        checks.push(check(
            "required",
            Category::Completeness,
            message,
            missing(name),
        ));
    }
    if c.ty == ColumnType::String {
        // Other types fail their parse on a NUL; text would fail at load time.
        checks.push(check(
            "nul",
            Category::Format,
            "contains a NUL byte, which PostgreSQL text cannot hold".into(),
            text_udf(TextFn::Nul).call(vec![raw(name)]),
        ));
    } else {
        let (rule, message) = parse_failure(c);
        let flag = missing(name).not().and(value.clone().is_null());
        checks.push(check(rule, Category::Format, message, flag));
    }
    if let Some(pattern) = &c.regex {
        let flag = missing(name)
            .not()
            .and(regexp_like(raw(name), lit(pattern.as_str()), None).not());
        let message = format!("does not match {pattern}");
        checks.push(check("regex", Category::Format, message, flag));
    }
    for (rule, bound) in [("min", &c.min), ("max", &c.max)] {
        let Some(bound) = bound else { continue };
        let limit = bound_literal(c.ty, c.format.as_deref(), bound);
        let (flag, word) = if rule == "min" {
            (value.clone().lt(limit), "below the minimum")
        } else {
            (value.clone().gt(limit), "above the maximum")
        };
        let message = format!("{word} {}", bound);
        checks.push(check(rule, Category::Bounds, message, flag));
    }
    if let Some(allowed) = &c.allowed {
        let list: Vec<Expr> = allowed.iter().map(|v| scalar_literal(c.ty, v)).collect();
        let shown: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        let flag = value.clone().is_not_null().and(value.in_list(list, true));
        let message = format!("not one of {}", shown.join(", "));
        checks.push(check("allowed", Category::Bounds, message, flag));
    }
    checks
}

/// The rule and message of a value that does not parse as its column's type.
fn parse_failure(c: &Column) -> (&'static str, String) {
    match (c.ty, &c.format) {
        (ColumnType::Date | ColumnType::Timestamp, Some(f)) => (
            "format",
            format!("not a {} in format {f} from year 1 to 9999", c.ty),
        ),
        (ColumnType::Date, None) => (
            "format",
            "not a date (YYYY-MM-DD) from year 1 to 9999".into(),
        ),
        (ColumnType::Timestamp, None) => (
            "format",
            "not a timestamp (YYYY-MM-DD HH:MM:SS) from year 1 to 9999".into(),
        ),
        (ColumnType::Bool, _) => ("type", "not a boolean (true/false, yes/no, 1/0)".into()),
        (ColumnType::Float, _) => ("type", "not a finite number".into()),
        (ColumnType::Int, _) => ("type", "not an integer (64-bit)".into()),
        (ColumnType::Decimal { scale, .. }, _) => (
            "type",
            format!("not a {} (at most {scale} decimal places)", c.ty),
        ),
        (ty, _) => ("type", format!("not a {ty}")),
    }
}

/// The keys whose values must not repeat: the primary key, then each `unique`
/// column that is not it.
fn keys(ds: &Dataset) -> Vec<Vec<String>> {
    let mut keys: Vec<Vec<String>> = Vec::new();
    if !ds.primary_key.is_empty() {
        keys.push(ds.primary_key.clone());
    }
    for (name, c) in &ds.columns {
        if c.unique && !keys.iter().any(|k| k.len() == 1 && k[0] == *name) {
            keys.push(vec![name.clone()]);
        }
    }
    keys
}

/// The `unique` check of key `k`, flagged by the pass's duplicated-key column.
fn unique_check(k: usize, key: &[String]) -> Check {
    Check {
        column: key.join(","),
        rule: "unique",
        category: Category::Uniqueness,
        message: "the key occurs more than once in the file".into(),
        test: raw(&dup_column(k)),
        // Joined only on the rows it is shown for.
        value: if key.len() == 1 {
            key_text(key)
        } else {
            when(raw(&dup_column(k)).is_true(), key_text(key))
                .end()
                .expect("valid CASE")
        },
    }
}

/// The raw key values joined by commas, for messages.
fn key_text(key: &[String]) -> Expr {
    if key.len() == 1 {
        return raw(&key[0]);
    }
    concat_ws(lit(","), key.iter().map(|k| text(k)).collect())
}

/// The typed value of a source column (text, or already of its type); null when
/// missing or unparsable.
///
/// Strings, integers, floats, dates and timestamps are read by one function per
/// value that trims in place (see [`TextFn`]); decimals and booleans by
/// DataFusion's own functions over the trimmed text.
pub fn typed_value(name: &str, ty: ColumnType, format: Option<&str>) -> Expr {
    let t = trimmed(name);
    match ty {
        ColumnType::String => when(missing(name).not(), raw(name))
            .end()
            .expect("valid CASE"),
        ColumnType::Int => text_udf(TextFn::Int).call(vec![raw(name)]),
        ColumnType::Float => text_udf(TextFn::Float).call(vec![raw(name)]),
        ColumnType::Decimal { precision, scale } => {
            // More fraction digits than the scale would be rounded by the cast:
            // a data-quality tool says so instead.
            let shape = format!(r"^[+-]?([0-9]+(\.[0-9]{{0,{scale}}})?|\.[0-9]{{1,{scale}}})$");
            when(
                regexp_like(t.clone(), lit(shape), None),
                try_cast(t, DataType::Decimal128(precision, scale as i8)),
            )
            .end()
            .expect("valid CASE")
        }
        ColumnType::Bool => {
            let l = lower(t);
            let as_list = |v: &[&str]| v.iter().map(|s| lit(*s)).collect::<Vec<_>>();
            when(l.clone().in_list(as_list(TRUE), false), lit(true))
                .when(l.in_list(as_list(FALSE), false), lit(false))
                .end()
                .expect("valid CASE")
        }
        ColumnType::Date => {
            parse_udf(Temporal::Date).call(vec![raw(name), lit(format.unwrap_or(""))])
        }
        ColumnType::Timestamp => {
            parse_udf(Temporal::Timestamp).call(vec![raw(name), lit(format.unwrap_or(""))])
        }
    }
}

fn bound_literal(ty: ColumnType, format: Option<&str>, bound: &Bound) -> Expr {
    match (ty, bound) {
        (ColumnType::Int, Bound::Int(i)) => lit(*i),
        (ColumnType::Int, Bound::Number(x)) if x.fract() == 0.0 => lit(*x as i64),
        (ColumnType::Decimal { precision, scale }, b) => {
            let text = b.to_string();
            cast(lit(text), DataType::Decimal128(precision, scale as i8))
        }
        (_, Bound::Int(i)) => lit(*i as f64),
        (_, Bound::Number(x)) => lit(*x),
        (ColumnType::Date, Bound::Text(t)) => {
            let days = parse_date(t, format).map(|d| (d - epoch()).num_days() as i32);
            lit(ScalarValue::Date32(days))
        }
        (_, Bound::Text(t)) => {
            let us = parse_timestamp(t, format).map(|ts| ts.and_utc().timestamp_micros());
            lit(ScalarValue::TimestampMicrosecond(us, None))
        }
    }
}

fn scalar_literal(ty: ColumnType, v: &Scalar) -> Expr {
    match (ty, v) {
        (ColumnType::Int, Scalar::Int(i)) => lit(*i),
        (ColumnType::Decimal { precision, scale }, v) => cast(
            lit(v.to_string()),
            DataType::Decimal128(precision, scale as i8),
        ),
        (_, Scalar::Int(i)) => lit(*i as f64),
        (_, Scalar::Float(x)) => lit(*x),
        (_, Scalar::Bool(b)) => lit(*b),
        (_, Scalar::Text(s)) => lit(s.as_str()),
    }
}

/// The value at `row` as text: borrowed from a text array, else Arrow's text
/// of it (as a cast to Utf8 writes it); None for a null.
pub(super) fn text_at(array: &dyn Array, row: usize) -> DfResult<Option<Cow<'_, str>>> {
    if array.is_null(row) {
        return Ok(None);
    }
    if let Some(text) = array.as_string_opt::<i32>() {
        return Ok(Some(Cow::Borrowed(text.value(row))));
    }
    let one = array.slice(row, 1);
    match datafusion::arrow::compute::cast(&one, &DataType::Utf8) {
        Ok(text) => Ok(Some(Cow::Owned(
            text.as_string::<i32>().value(0).to_owned(),
        ))),
        // A date or timestamp no calendar holds (Arrow's extremes in a
        // Parquet file) has no text: its stored number is shown instead.
        Err(e) => match datafusion::arrow::compute::cast(&one, &DataType::Int64) {
            Ok(n) => {
                let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                Ok(Some(Cow::Owned(format!(
                    "{} {} (out of range)",
                    array.data_type(),
                    n.value(0)
                ))))
            }
            Err(_) => Err(e.into()),
        },
    }
}

/// `array` as text, as a cast to Utf8 writes it; a date or timestamp no
/// calendar holds, which fails that cast, shows its stored number (see
/// [`text_at`]) so a bad cell stays a bad row.
pub fn shown_text(array: &ArrayRef) -> DfResult<ArrayRef> {
    if let Ok(text) = datafusion::arrow::compute::cast(array, &DataType::Utf8) {
        return Ok(text);
    }
    let mut b = StringBuilder::with_capacity(array.len(), array.len() * 8);
    for row in 0..array.len() {
        b.append_option(text_at(array.as_ref(), row)?);
    }
    Ok(Arc::new(b.finish()))
}

/// Null-free text that is empty or only blanks.
pub(super) fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| BLANK.as_bytes().contains(&b))
}

/// The fields of one error: {column, rule, value, message}.
pub fn error_fields() -> Fields {
    Fields::from(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, false),
    ])
}

/// The type of `_errors`. Its items are named `element`, as a Delta table
/// stores a list, so the quarantine rows are the table's type exactly (no cast
/// per batch, and a period can be replaced by our own commit: delta_commit).
pub fn errors_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(error_fields()),
        true,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_with_format_or_iso() {
        assert_eq!(
            parse_date("2025-02-28", None),
            NaiveDate::from_ymd_opt(2025, 2, 28)
        );
        assert_eq!(parse_date("2025-02-30", None), None);
        for lax in ["2020-1-1", "2020-01-1", "20-01-01", " 2020-01-01"] {
            assert_eq!(parse_date(lax, None), None, "{lax}: not YYYY-MM-DD");
        }
        for lax in [
            "2020-1-1 10:00:00",
            "2020-01-01 1:00:00",
            "2020-01-01T10:0:00",
        ] {
            assert_eq!(parse_timestamp(lax, None), None, "{lax}: not ISO 8601");
        }
        assert!(parse_timestamp("2025-02-28 10:11", None).is_some());
        assert_eq!(
            parse_date("28/02/2025", Some("%d/%m/%Y")),
            NaiveDate::from_ymd_opt(2025, 2, 28)
        );
        assert_eq!(parse_date("2025-02-28", Some("%d/%m/%Y")), None);
        assert!(parse_timestamp("2025-02-28 10:11:12", None).is_some());
        assert!(parse_timestamp("2025-02-28T10:11:12.5", None).is_some());
        assert!(parse_timestamp("2025-02-28 25:00:00", None).is_none());
        assert_eq!(
            parse_timestamp("2025-02-28T10:00:00+02:00", None),
            parse_timestamp("2025-02-28 08:00:00", None),
            "offsets are converted to UTC"
        );
        assert!(parse_timestamp("2025-02-28T10:00:00Z", None).is_some());
        assert_eq!(
            parse_timestamp("2025-02-28 10:00:00+0200", Some("%Y-%m-%d %H:%M:%S%z")),
            parse_timestamp("2025-02-28 08:00:00", None),
            "a format's offset is converted to UTC too"
        );
    }

    /// Evaluates `exprs` over one text column `v` holding `values`.
    fn eval(values: &[Option<String>], exprs: Vec<Expr>) -> Vec<ArrayRef> {
        let array: ArrayRef = Arc::new(values.iter().cloned().collect::<StringArray>());
        select(vec![("v", array)], exprs)
    }

    /// Evaluates `exprs` over a batch of `columns` with DataFusion; one array
    /// per expression.
    fn select(columns: Vec<(&str, ArrayRef)>, exprs: Vec<Expr>) -> Vec<ArrayRef> {
        use datafusion::arrow::record_batch::RecordBatch;
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let ctx = datafusion::prelude::SessionContext::new();
            let out = ctx.read_batch(batch).unwrap().select(exprs).unwrap();
            let batches = out.collect().await.unwrap();
            let batch =
                datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            batch.columns().to_vec()
        })
    }

    /// The lookup finds exactly its fingerprints, whatever their number (the
    /// index's width follows it) and sign, and survives the trip to another
    /// process.
    #[test]
    fn repeated_key_finds_exactly_its_fingerprints() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u128;
        let mut next = || {
            rng = rng
                .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
                .wrapping_add(1);
            rng as i128
        };
        for n in [0usize, 1, 2, 3, 100, 5000] {
            let members: Vec<i128> = (0..n)
                .map(|_| next())
                .chain([i128::MIN, i128::MAX, -1, 0])
                .collect();
            let others: Vec<i128> = (0..2000).map(|_| next()).collect();
            let lookup = RepeatedKey::new(members.clone());
            assert!(lookup.starts.len() <= n + 5, "{n}: {}", lookup.starts.len());
            assert!(
                repeated_key_bytes(lookup.repeated.len())
                    >= lookup.repeated.len() * 16 + lookup.starts.len() * 4
            );
            for fp in &members {
                assert!(lookup.contains(*fp), "{n}: {fp}");
            }
            for fp in &others {
                assert_eq!(lookup.contains(*fp), members.contains(fp), "{n}: {fp}");
            }
            let udf = ScalarUDF::from(lookup);
            let bytes = encode_udf(&udf).expect("ours");
            let back = decode_udf("repeated_key", &bytes)
                .expect("ours")
                .expect("decodes");
            assert_eq!(
                back.inner().downcast_ref::<RepeatedKey>(),
                udf.inner().downcast_ref::<RepeatedKey>()
            );
        }
    }

    /// Bounds compare exactly in the column's type: an int bound one above
    /// 2^53 rejects 2^53, and a decimal bound's last cent counts.
    #[test]
    fn bounds_are_exact_in_the_column_type() {
        let cases = [
            (
                "int",
                "min: 9007199254740993",
                "9007199254740992",
                "9007199254740993",
            ),
            (
                "int",
                "max: 9223372036854775806",
                "9223372036854775807",
                "9223372036854775806",
            ),
            (
                "'decimal(20,2)'",
                "max: '12345678901234567.89'",
                "12345678901234567.95",
                "12345678901234567.89",
            ),
        ];
        for (ty, rule, fails, passes) in cases {
            let yaml = format!(
                "version: 1\nlanded_dir: l\nstage_dir: s\ndatasets:\n  d:\n    \
                 file_pattern: '^d\\.csv$'\n    period: none\n    columns:\n      \
                 v: {{ type: {ty}, {rule} }}\n"
            );
            let config = crate::config::Config::from_yaml(&yaml).unwrap();
            let c = &config.datasets["d"].columns["v"];
            let checks = column_checks("v", c, typed_value("v", c.ty, None));
            let bound = checks
                .iter()
                .find(|k| k.rule != "type")
                .expect("a bound check");
            let values = [Some(fails.to_string()), Some(passes.to_string())];
            let out = eval(&values, vec![bound.flag()]);
            let flags = out[0].as_boolean();
            assert!(flags.value(0), "{ty} {rule}: {fails} must fail");
            assert!(!flags.value(1), "{ty} {rule}: {passes} must pass");
        }
    }

    /// An error's value is the text a cast to Utf8 gives, whether the check
    /// fails in one row (formatted alone) or in every row (cast at once).
    #[test]
    fn row_errors_show_native_values_as_their_cast_text() {
        use datafusion::arrow::array::{Date32Array, Float64Array};
        let v: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..40).map(|i| if i == 7 { -2.5 } else { f64::from(i) / 3.0 }),
        ));
        let d: ArrayRef = Arc::new(Date32Array::from_iter_values((0..40).map(|i| 20089 + i)));
        let check = |column: &str, flag: Expr| Check {
            column: column.into(),
            rule: "min",
            category: Category::Bounds,
            message: "m".into(),
            test: flag,
            value: raw(column),
        };
        let checks = [
            check("v", raw("v").lt(lit(0.0))),
            check("d", raw("d").is_not_null()),
        ];
        let errors = select(
            vec![("v", v.clone()), ("d", d.clone())],
            vec![row_errors(&checks)],
        )
        .remove(0);
        let text = |a: &ArrayRef, i: usize| {
            datafusion::arrow::compute::cast(a, &DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .value(i)
                .to_owned()
        };
        let list = errors.as_list::<i32>();
        for row in 0..40 {
            let shown = list.value(row);
            let shown: Vec<String> = (0..shown.len())
                .map(|e| {
                    shown
                        .as_struct()
                        .column(2)
                        .as_string::<i32>()
                        .value(e)
                        .to_owned()
                })
                .collect();
            let mut expected = Vec::new();
            if row == 7 {
                expected.push(text(&v, row));
            }
            expected.push(text(&d, row));
            assert_eq!(shown, expected, "row {row}");
        }
        assert_eq!(text(&v, 7), "-2.5");
    }

    /// Dates and timestamps no reader of the rows can hold — Arrow's extremes
    /// in a Parquet file, a five-digit year in text — parse to null, so the
    /// format check quarantines them instead of a panic further on.
    #[test]
    fn dates_and_timestamps_outside_years_1_to_9999_do_not_parse() {
        use datafusion::arrow::array::{Date32Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
        let d: ArrayRef = Arc::new(Date32Array::from(vec![
            i32::MAX,
            i32::MIN + 1,
            2_932_896,
            -719_162,
            0,
        ]));
        let t: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            i64::MIN + 1,
            i64::MAX,
            253_402_300_799_999_999,
            0,
        ]));
        let text: ArrayRef = Arc::new(StringArray::from(vec!["10000-01-01", "9999-12-31"]));
        let parsed = |name: &str, a: ArrayRef, ty| {
            select(vec![(name, a)], vec![typed_value(name, ty, None)]).remove(0)
        };
        let days = parsed("d", d, ColumnType::Date);
        let days: Vec<Option<i32>> = days.as_primitive::<Date32Type>().iter().collect();
        assert_eq!(days, [None, None, Some(2_932_896), Some(-719_162), Some(0)]);
        let micros = parsed("t", t, ColumnType::Timestamp);
        let micros: Vec<Option<i64>> = micros
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect();
        assert_eq!(micros, [None, None, Some(253_402_300_799_999_999), Some(0)]);
        let from_text = parsed("x", text, ColumnType::Date);
        let from_text: Vec<Option<i32>> = from_text.as_primitive::<Date32Type>().iter().collect();
        assert_eq!(from_text, [None, Some(2_932_896)]);
    }

    /// A key of (int, text, bool, date) parts, any of them null.
    type Key = (Option<i64>, Option<String>, Option<bool>, Option<i32>);

    /// The fingerprints of rows of keys.
    fn fingerprints(rows: &[Key]) -> Vec<Option<i128>> {
        use datafusion::arrow::array::{Date32Array, Int64Array};
        let a: ArrayRef = Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>());
        let b: ArrayRef = Arc::new(rows.iter().map(|r| r.1.clone()).collect::<StringArray>());
        let c: ArrayRef = Arc::new(rows.iter().map(|r| r.2).collect::<BooleanArray>());
        let d: ArrayRef = Arc::new(rows.iter().map(|r| r.3).collect::<Date32Array>());
        fingerprint_columns(vec![("a", a), ("b", b), ("c", c), ("d", d)])
    }

    /// `key_fingerprint` over all of `columns`, row by row.
    fn fingerprint_columns(columns: Vec<(&str, ArrayRef)>) -> Vec<Option<i128>> {
        use datafusion::arrow::datatypes::Decimal128Type;
        let key = columns.iter().map(|(name, _)| raw(name)).collect();
        let out = select(columns, vec![key_fingerprint(key)]).remove(0);
        out.as_primitive::<Decimal128Type>().iter().collect()
    }

    #[test]
    fn fingerprints_tell_text_boundaries_apart() {
        let row = |b: &str| (Some(1), Some(b.to_owned()), Some(true), Some(3));
        let f = fingerprints(&[row("ab"), row("a"), row("ab")]);
        assert_eq!(f[0], f[2]);
        assert_ne!(f[0], f[1]);
        // ("ab", "c") and ("a", "bc") as two text parts.
        let x: ArrayRef = Arc::new(StringArray::from(vec!["ab", "a"]));
        let y: ArrayRef = Arc::new(StringArray::from(vec!["c", "bc"]));
        let f = fingerprint_columns(vec![("x", x), ("y", y)]);
        assert_eq!(f.len(), 2);
        assert!(f[0].is_some());
        assert_ne!(f[0], f[1]);
    }

    /// chrono alone, as the parser read every value before it had layouts.
    fn chrono_only(format: &str, kind: Temporal, text: &str) -> Option<NaiveDateTime> {
        let items = StrftimeItems::new(format).parse_to_owned().ok()?;
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
        match kind {
            Temporal::Date => parsed
                .to_naive_date()
                .ok()
                .map(|d| d.and_time(Default::default())),
            Temporal::Timestamp => parsed.to_naive_datetime_with_offset(0).ok(),
        }
    }

    #[test]
    fn layouts_take_only_fixed_width_numbers_and_separators() {
        let kinds = |f| {
            (
                Layout::of(f, Temporal::Date).is_some(),
                Layout::of(f, Temporal::Timestamp).is_some(),
            )
        };
        assert_eq!(kinds("%Y-%m-%d"), (true, false));
        assert_eq!(kinds("%d/%m/%Y %H:%M"), (false, true));
        assert_eq!(kinds("%Y-%m-%dT%H:%M:%S%.f"), (false, true));
        assert_eq!(kinds("%Y%m%d"), (true, false));
        // Names, variable widths, other fields, a repeated field: chrono only.
        for f in [
            "%d %b %Y",
            "%e/%m/%Y",
            "%y-%m-%d",
            "%Y-%m-%d %z",
            "%Y-%m-%d-%d",
            "%Y-%m-%d%.f %H",
        ] {
            assert_eq!(kinds(f), (false, false), "{f}");
        }
        let ts = Layout::of("%d/%m/%Y %H:%M", Temporal::Timestamp).expect("layout");
        assert_eq!(
            ts.read("31/01/2025 23:59").map(Civil::micros),
            NaiveDate::from_ymd_opt(2025, 1, 31)
                .unwrap()
                .and_hms_opt(23, 59, 0)
                .map(|t| t.and_utc().timestamp_micros())
        );
        for other in [
            "31/1/2025 23:59",
            "31/01/2025 24:00",
            "30/02/2025 10:00",
            "31/01/2025T23:59",
            "31/01/2025 23:5x",
        ] {
            assert_eq!(ts.read(other), None, "{other}");
        }
    }

    /// The day count without chrono is chrono's for every field a four-digit
    /// year can carry, and refuses what chrono refuses (Feb 29 of 1900, day 0,
    /// month 13, hour 24, a leap second).
    #[test]
    fn civil_dates_count_days_as_chrono_does() {
        for year in 0..=9999 {
            for month in 0..=13 {
                for day in 0..=32 {
                    let ours = Civil::new(year, month, day, 0, 0, 0).map(|c| c.days);
                    let chrono = NaiveDate::from_ymd_opt(year as i32, month, day)
                        .map(|d| (d - epoch()).num_days());
                    assert_eq!(ours, chrono, "{year:04}-{month:02}-{day:02}");
                }
            }
        }
        assert_eq!(
            Civil::new(2024, 2, 29, 23, 59, 59).map(Civil::micros),
            Some(1_709_251_199_000_000)
        );
        for (h, m, s) in [(24, 0, 0), (23, 60, 0), (23, 59, 60)] {
            assert_eq!(Civil::new(2024, 2, 29, h, m, s), None);
        }
    }

    proptest::proptest! {
        /// A layout's answer, when it gives one, is chrono's: values near each
        /// format's shape (digits anywhere, separators changed, fields out of
        /// range, leap seconds, fractions, widths off by one).
        #[test]
        fn layouts_read_values_as_chrono_does(
            pick in 0usize..7,
            fields in (0u32..10000, 0u32..14, 0u32..33, 0u32..25, 0u32..61, 0u32..62),
            swaps in proptest::collection::vec(proptest::option::weighted(0.05, proptest::sample::select(vec!['-', '/', ':', ' ', 'T', '.', 'x', '7'])), 64),
            tail in proptest::sample::select(vec!["", "", "", ".5", ".123456", "0", "Z"]),
        ) {
            let (format, kind) = [
                ("%Y-%m-%d", Temporal::Date),
                ("%d/%m/%Y", Temporal::Date),
                ("%Y%m%d", Temporal::Date),
                ("%d/%m/%Y %H:%M", Temporal::Timestamp),
                ("%Y-%m-%d %H:%M:%S", Temporal::Timestamp),
                ("%Y-%m-%dT%H:%M:%S%.f", Temporal::Timestamp),
                // Over 32 bytes: read without the word masks.
                ("%d/%m/%Y at %H:%M:%S (local time, by the meter)", Temporal::Timestamp),
            ][pick];
            let layout = Layout::of(format, kind).expect("a layout");
            // The value in the layout's shape, a few characters swapped, a tail.
            let (y, mo, d, h, mi, sec) = fields;
            let padded = [format!("{y:04}"), format!("{mo:02}"), format!("{d:02}"), format!("{h:02}"), format!("{mi:02}"), format!("{sec:02}")];
            let mut next = [0usize; 6];
            let mut text: String = layout.slots.iter().zip(&swaps).map(|(slot, swap)| {
                let c = match *slot {
                    Slot::Literal(l) => l as char,
                    Slot::Digit(f) => {
                        let f = usize::from(f);
                        next[f] += 1;
                        padded[f].as_bytes()[next[f] - 1] as char
                    }
                };
                swap.unwrap_or(c)
            }).collect();
            text.push_str(tail);
            // The word masks take exactly what a byte-at-a-time check takes.
            proptest::prop_assert_eq!(
                layout.fits(text.as_bytes()),
                layout.fits_bytewise(text.as_bytes()),
                "{} on {:?}", format, text
            );
            let fast = layout.read(&text).map(Civil::micros);
            if fast.is_some() {
                let slow = chrono_only(format, kind, &text).map(|t| t.and_utc().timestamp_micros());
                proptest::prop_assert_eq!(fast, slow, "{} on {:?}", format, text);
            }
        }
    }

    proptest::proptest! {
        /// The one-pass text functions answer exactly as the DataFusion
        /// expressions they replaced: `v IS NULL OR btrim(v) = ''`,
        /// `TRY_CAST(btrim(v) AS BIGINT)`, `TRY_CAST(btrim(v) AS DOUBLE)`
        /// kept only when finite, and `strpos(v, NUL) > 0` as a flag.
        #[test]
        fn text_functions_match_the_expressions_they_replace(
            values in proptest::collection::vec(
                proptest::option::weighted(0.9, "[ \t\r\n]{0,2}([+-]?[0-9]{0,20}(\\.[0-9]{0,4})?([eE][+-]?[0-9]{1,3})?|NaN|nan|inf|-Infinity|0x1F|1_000|[a-zé \x00]{0,4})[ \t\r\n\u{a0}]{0,2}"),
                1..40,
            ),
        ) {
            use datafusion::functions::expr_fn::{abs, isnan};
            let t = trimmed("v");
            let float = try_cast(t.clone(), DataType::Float64);
            let finite = isnan(float.clone()).not().and(abs(float.clone()).not_eq(lit(f64::INFINITY)));
            let old = eval(&values, vec![
                raw("v").is_null().or(t.clone().eq(lit(""))),
                try_cast(t, DataType::Int64),
                when(finite, float).end().unwrap(),
                datafusion::functions::expr_fn::strpos(raw("v"), lit("\0")).gt(lit(0)).is_true(),
            ]);
            let new = eval(&values, vec![
                missing("v"),
                typed_value("v", ColumnType::Int, None),
                typed_value("v", ColumnType::Float, None),
                text_udf(TextFn::Nul).call(vec![raw("v")]),
            ]);
            for (i, (o, n)) in old.iter().zip(&new).enumerate() {
                proptest::prop_assert_eq!(o.as_ref(), n.as_ref(), "expression {} on {:?}", i, values);
            }
        }

        /// Two rows share a fingerprint exactly when every part of their keys
        /// is equal, and a key with a null part has none.
        #[test]
        fn fingerprints_are_equal_exactly_for_equal_keys(
            rows in proptest::collection::vec(
                (
                    proptest::option::weighted(0.9, 0i64..3),
                    proptest::option::weighted(0.9, "[ab]{0,2}"),
                    proptest::option::weighted(0.9, proptest::bool::ANY),
                    proptest::option::weighted(0.9, 0i32..2),
                ),
                1..60,
            ),
        ) {
            let f = fingerprints(&rows);
            for (i, r) in rows.iter().enumerate() {
                let whole = r.0.is_some() && r.1.is_some() && r.2.is_some() && r.3.is_some();
                proptest::prop_assert_eq!(f[i].is_some(), whole, "row {:?}", r);
                for (j, s) in rows.iter().enumerate() {
                    if f[i].is_some() && f[j].is_some() {
                        proptest::prop_assert_eq!(f[i] == f[j], r == s, "{:?} and {:?}", r, s);
                    }
                }
            }
        }

        /// The format read once parses every text exactly as chrono's
        /// `parse_from_str` reads it value by value (and the ISO fast path
        /// agrees with chrono on every date-shaped text).
        #[test]
        fn compiled_formats_parse_like_chrono(
            text in "[0-9+ -]{0,3}[0-9]{1,5}[-/][0-9]{1,3}[-/][0-9]{1,3}([T ][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{1,9})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
            format in proptest::sample::select(vec!["", "%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%dT%H:%M:%S%.f"]),
        ) {
            let f = (!format.is_empty()).then_some(format);
            let date = TemporalParser::new(f, Temporal::Date).date(&text);
            // Without a format only full-width ISO text is a value (chrono's
            // `%m` also takes `1`).
            let full = |n: usize| text.len() == n && temporal::iso_shaped(&format!("{text} 00:00"));
            let want = NaiveDate::parse_from_str(&text, if format.is_empty() { "%Y-%m-%d" } else { format })
                .ok()
                .filter(|_| !format.is_empty() || full(10));
            proptest::prop_assert_eq!(date, want);
            let ts = TemporalParser::new(f, Temporal::Timestamp).timestamp(&text);
            let want = if format.is_empty() {
                ISO_TIMESTAMPS
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(&text, f).ok())
                    .or_else(|| chrono::DateTime::parse_from_rfc3339(&text).ok().map(|t| t.naive_utc()))
                    .filter(|_| temporal::iso_shaped(&text))
            } else {
                NaiveDateTime::parse_from_str(&text, format).ok()
            };
            // Stored in microseconds (Arrow's Timestamp(µs)): a finer fraction is cut.
            let want = want.map(|t| {
                use chrono::Timelike;
                t.with_nanosecond(t.nanosecond() / 1000 * 1000).expect("a valid fraction")
            });
            proptest::prop_assert_eq!(ts, want);
        }
    }
}
