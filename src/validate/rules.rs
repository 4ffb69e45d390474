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

use crate::config::{Bound, ColumnType, Dataset, Scalar};

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
    /// True when the row fails (never null).
    pub flag: Expr,
    /// The offending value as text, shown in quarantine and reports.
    pub value: Expr,
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
const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
const FALSE: &[&str] = &["false", "f", "no", "n", "0"];

pub fn raw(name: &str) -> Expr {
    Expr::Column(DfColumn::from_name(name))
}

fn trimmed(name: &str) -> Expr {
    btrim(vec![raw(name), lit(BLANK)])
}

/// A source column as text: itself when it is text, its values cast to text when
/// the file holds them natively (see [`super::source::Spec::native`]).
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
/// Parquet file already holds in the declared type ([`super::source::Spec::native`]).
pub fn compile(ds: &Dataset) -> Compiled {
    let mut typed = Vec::new();
    let mut checks = Vec::new();
    for (name, c) in &ds.columns {
        let value = typed_value(name, c.ty, c.format.as_deref());
        typed.push((name.clone(), value.clone()));
        let check = |rule: &'static str, category, message: String, flag: Expr| Check {
            column: name.clone(),
            rule,
            category,
            message,
            flag: flag.is_true(),
            value: raw(name),
        };
        if c.required {
            checks.push(check(
                "required",
                Category::Completeness,
                "a value is required".into(),
                missing(name),
            ));
        }
        if c.ty != ColumnType::String {
            let (rule, message) = match (c.ty, &c.format) {
                (ColumnType::Date | ColumnType::Timestamp, Some(f)) => {
                    ("format", format!("not a {} in format {f}", c.ty))
                }
                (ColumnType::Date, None) => ("format", "not a date (YYYY-MM-DD)".into()),
                (ColumnType::Timestamp, None) => {
                    ("format", "not a timestamp (YYYY-MM-DD HH:MM:SS)".into())
                }
                (ColumnType::Bool, _) => ("type", "not a boolean (true/false, yes/no, 1/0)".into()),
                (ColumnType::Float, _) => ("type", "not a finite number".into()),
                (ColumnType::Int, _) => ("type", "not an integer (64-bit)".into()),
                (ColumnType::Decimal { scale, .. }, _) => (
                    "type",
                    format!("not a {} (at most {scale} decimal places)", c.ty),
                ),
                (ty, _) => ("type", format!("not a {ty}")),
            };
            let flag = missing(name).not().and(value.clone().is_null());
            checks.push(check(rule, Category::Format, message, flag));
        }
        if c.ty == ColumnType::String {
            // Other types fail their parse on a NUL; text would fail at load time.
            checks.push(check(
                "nul",
                Category::Format,
                "contains a NUL byte, which PostgreSQL text cannot hold".into(),
                text_udf(TextFn::Nul).call(vec![raw(name)]),
            ));
        }
        if let Some(pattern) = &c.regex {
            let flag = missing(name)
                .not()
                .and(regexp_like(raw(name), lit(pattern.as_str()), None).not());
            checks.push(check(
                "regex",
                Category::Format,
                format!("does not match {pattern}"),
                flag,
            ));
        }
        for (rule, bound) in [("min", &c.min), ("max", &c.max)] {
            let Some(bound) = bound else { continue };
            let limit = bound_literal(c.ty, c.format.as_deref(), bound);
            let flag = if rule == "min" {
                value.clone().lt(limit)
            } else {
                value.clone().gt(limit)
            };
            let word = if rule == "min" {
                "below the minimum"
            } else {
                "above the maximum"
            };
            checks.push(check(
                rule,
                Category::Bounds,
                format!("{word} {}", show(bound)),
                flag,
            ));
        }
        if let Some(allowed) = &c.allowed {
            let list: Vec<Expr> = allowed.iter().map(|v| scalar_literal(c.ty, v)).collect();
            let shown: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            let flag = value
                .clone()
                .is_not_null()
                .and(value.clone().in_list(list, true));
            checks.push(check(
                "allowed",
                Category::Bounds,
                format!("not one of {}", shown.join(", ")),
                flag,
            ));
        }
    }
    let mut keys: Vec<Vec<String>> = Vec::new();
    if !ds.primary_key.is_empty() {
        keys.push(ds.primary_key.clone());
    }
    for (name, c) in &ds.columns {
        if c.unique && !keys.iter().any(|k| k.len() == 1 && k[0] == *name) {
            keys.push(vec![name.clone()]);
        }
    }
    for (k, key) in keys.iter().enumerate() {
        checks.push(Check {
            column: key.join(","),
            rule: "unique",
            category: Category::Uniqueness,
            message: "the key occurs more than once in the file".into(),
            flag: raw(&dup_column(k)).is_true(),
            // Joined only on the rows it is shown for.
            value: if key.len() == 1 {
                key_text(key)
            } else {
                when(raw(&dup_column(k)).is_true(), key_text(key))
                    .end()
                    .expect("valid CASE")
            },
        });
    }
    checks.push(Check {
        column: "_row".into(),
        rule: "format",
        category: Category::Format,
        message: "the row is malformed".into(),
        flag: raw(super::source::SHAPE).is_not_null(),
        value: raw(super::source::SHAPE),
    });
    Compiled {
        typed,
        checks,
        keys,
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

fn show(b: &Bound) -> String {
    match b {
        Bound::Number(x) => x.to_string(),
        Bound::Text(t) => t.clone(),
    }
}

fn bound_literal(ty: ColumnType, format: Option<&str>, bound: &Bound) -> Expr {
    match (ty, bound) {
        (ColumnType::Int, Bound::Number(x)) if x.fract() == 0.0 => lit(*x as i64),
        (ColumnType::Decimal { precision, scale }, b) => {
            let text = show(b);
            cast(lit(text), DataType::Decimal128(precision, scale as i8))
        }
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

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")
}

/// Parses a date with `format`, or ISO 8601 without one.
pub fn parse_date(text: &str, format: Option<&str>) -> Option<NaiveDate> {
    TemporalParser::new(format, Temporal::Date).date(text)
}

/// Parses a timestamp with `format`, or ISO 8601 (`T` or space) without one.
pub fn parse_timestamp(text: &str, format: Option<&str>) -> Option<NaiveDateTime> {
    TemporalParser::new(format, Temporal::Timestamp).timestamp(text)
}

/// The ISO shapes a timestamp without `format` may take (then RFC 3339).
const ISO_TIMESTAMPS: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// A date or timestamp format read once per column. chrono's `parse_from_str`
/// reads the format string again for every value, which was the largest item of
/// validate's profile; this parses each value exactly as it would. A format of
/// fixed-width numbers and separators also gets a [`Layout`] that reads the
/// common, exact shape of a value without chrono's general parser.
pub struct TemporalParser {
    /// The formats to try, in order, as chrono items and their fast layouts.
    formats: Vec<(Vec<Item<'static>>, Option<Layout>)>,
    /// No format given: timestamps fall back to RFC 3339.
    iso: bool,
}

impl TemporalParser {
    pub fn new(format: Option<&str>, kind: Temporal) -> TemporalParser {
        let given = format.filter(|f| !f.is_empty());
        let texts: Vec<&str> = match (given, kind) {
            (Some(f), _) => vec![f],
            (None, Temporal::Date) => vec!["%Y-%m-%d"],
            (None, Temporal::Timestamp) => ISO_TIMESTAMPS.to_vec(),
        };
        TemporalParser {
            // The config check refused formats chrono cannot read; an unreadable
            // one here parses nothing, as parse_from_str would.
            formats: texts
                .iter()
                .map(|f| {
                    let items = StrftimeItems::new(f)
                        .parse_to_owned()
                        .unwrap_or_else(|_| vec![Item::Error]);
                    (items, Layout::of(f, kind))
                })
                .collect(),
            iso: given.is_none(),
        }
    }

    pub fn date(&self, text: &str) -> Option<NaiveDate> {
        self.days(text)
            .map(|days| epoch() + chrono::Duration::days(i64::from(days)))
    }

    /// The date as days since 1970-01-01 (Arrow's Date32).
    pub fn days(&self, text: &str) -> Option<i32> {
        self.formats.iter().find_map(|(items, layout)| {
            if let Some(c) = layout.as_ref().and_then(|l| l.read(text)) {
                return i32::try_from(c.days).ok();
            }
            let mut parsed = Parsed::new();
            chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
            let date = parsed.to_naive_date().ok()?;
            i32::try_from((date - epoch()).num_days()).ok()
        })
    }

    pub fn timestamp(&self, text: &str) -> Option<NaiveDateTime> {
        self.micros(text)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.naive_utc())
    }

    /// The timestamp as microseconds since 1970-01-01 00:00 UTC (Arrow's
    /// Timestamp(Microsecond)).
    pub fn micros(&self, text: &str) -> Option<i64> {
        self.formats
            .iter()
            .find_map(|(items, layout)| {
                if let Some(c) = layout.as_ref().and_then(|l| l.read(text)) {
                    return Some(c.micros());
                }
                let mut parsed = Parsed::new();
                chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
                let t = parsed.to_naive_datetime_with_offset(0).ok()?;
                Some(t.and_utc().timestamp_micros())
            })
            // With an offset or `Z` (RFC 3339): stored as UTC.
            .or_else(|| {
                self.iso
                    .then(|| chrono::DateTime::parse_from_rfc3339(text).ok())
                    .flatten()
                    .map(|t| t.timestamp_micros())
            })
    }
}

/// A date and time of day as a layout reads them: days since 1970-01-01 and
/// the second of the day, computed without chrono (building its date type and
/// subtracting the epoch were a third of the temporal parsing's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    days: i64,
    second: u32,
}

impl Civil {
    /// A valid proleptic Gregorian date and time (None for Feb 30, hour 24, a
    /// leap second); the day count is Howard Hinnant's `days_from_civil`.
    fn new(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<Civil> {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let m = i64::from(month);
        let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(Civil {
            days: era * 146_097 + day_of_era - 719_468,
            second: hour * 3600 + minute * 60 + second,
        })
    }

    fn micros(self) -> i64 {
        (self.days * 86_400 + i64::from(self.second)) * 1_000_000
    }
}

/// A format made only of `%Y %m %d` (and, for a timestamp, `%H %M` and
/// optionally `%S`, and a final `%.f`) and ASCII separators, as one byte pattern:
/// a value of exactly that shape (every field at its full width, no fraction)
/// is read digit by digit. It answers only for values chrono reads to the same
/// result; anything else (another shape, a field out of range, a leap second)
/// is None and goes to chrono, so no result changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout(Vec<Slot>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Literal(u8),
    /// A digit of field 0..6: year, month, day, hour, minute, second.
    Digit(u8),
}

impl Layout {
    fn of(format: &str, kind: Temporal) -> Option<Layout> {
        let format = format.strip_suffix("%.f").unwrap_or(format);
        let mut slots = Vec::new();
        let mut seen = [false; 6];
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                let (field, width) = match chars.next()? {
                    'Y' => (0, 4),
                    'm' => (1, 2),
                    'd' => (2, 2),
                    'H' => (3, 2),
                    'M' => (4, 2),
                    'S' => (5, 2),
                    _ => return None,
                };
                if std::mem::replace(&mut seen[field], true) {
                    return None;
                }
                slots.extend(std::iter::repeat_n(Slot::Digit(field as u8), width));
            } else if c.is_ascii_punctuation() || c.is_ascii_alphabetic() || c == ' ' {
                slots.push(Slot::Literal(c as u8));
            } else {
                return None;
            }
        }
        let wanted = match kind {
            Temporal::Date => seen == [true, true, true, false, false, false],
            Temporal::Timestamp => seen[..5] == [true; 5],
        };
        wanted.then_some(Layout(slots))
    }

    /// The value when `text` has exactly this shape and valid fields (a date
    /// layout gives midnight).
    fn read(&self, text: &str) -> Option<Civil> {
        let bytes = text.as_bytes();
        if bytes.len() != self.0.len() {
            return None;
        }
        let mut fields = [0u32; 6];
        for (&b, slot) in bytes.iter().zip(&self.0) {
            match *slot {
                Slot::Literal(l) if l == b => {}
                Slot::Digit(f) if b.is_ascii_digit() => {
                    let f = usize::from(f);
                    fields[f] = fields[f] * 10 + u32::from(b - b'0');
                }
                _ => return None,
            }
        }
        let [year, month, day, hour, minute, second] = fields;
        // A leap second (60) is refused here and left to chrono's parser.
        Civil::new(i64::from(year), month, day, hour, minute, second)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Temporal {
    Date,
    Timestamp,
}

fn parse_udf(kind: Temporal) -> ScalarUDF {
    ScalarUDF::from(ParseTemporal {
        kind,
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `parse_date(text, format)` / `parse_timestamp(text, format)`: the text without
/// its surrounding blanks parsed, null instead of an error when it does not parse
/// (DataFusion's `to_date` fails the query).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ParseTemporal {
    kind: Temporal,
    signature: Signature,
}

impl ScalarUDFImpl for ParseTemporal {
    fn name(&self) -> &str {
        match self.kind {
            Temporal::Date => "parse_date",
            Temporal::Timestamp => "parse_timestamp",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.kind {
            Temporal::Date => DataType::Date32,
            Temporal::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        if let Some(values) = native(&args.args[0], n)? {
            let to = match self.kind {
                Temporal::Date => DataType::Date32,
                Temporal::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            };
            return Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(
                &values, &to,
            )?));
        }
        let values = text_array(&args.args[0], n)?;
        let format = match &args.args[1] {
            ColumnarValue::Scalar(s) => s.to_string(),
            ColumnarValue::Array(_) => String::new(),
        };
        let format = (!format.is_empty() && format != "NULL").then_some(format.as_str());
        let parser = TemporalParser::new(format, self.kind);
        let out: ArrayRef = match self.kind {
            Temporal::Date => {
                let mut b = Date32Builder::with_capacity(n);
                for v in values.iter() {
                    b.append_option(v.and_then(|v| parser.days(strip(v))));
                }
                Arc::new(b.finish())
            }
            Temporal::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n);
                for v in values.iter() {
                    b.append_option(v.and_then(|v| parser.micros(strip(v))));
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
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
    let one = datafusion::arrow::compute::cast(&array.slice(row, 1), &DataType::Utf8)?;
    Ok(Some(Cow::Owned(one.as_string::<i32>().value(0).to_owned())))
}

/// Null-free text that is empty or only blanks.
pub(super) fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| BLANK.as_bytes().contains(&b))
}

/// Blank characters around a value, removed without copying it.
fn strip(text: &str) -> &str {
    let blank = |b: &u8| BLANK.as_bytes().contains(b);
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |e| e + 1);
    // The blanks are ASCII, so both ends are character boundaries.
    &text[start..end]
}

/// The checks and casts every text value goes through, each one function that
/// reads the value once and trims it in place. As DataFusion expressions
/// (`btrim`, `= ''`, `TRY_CAST`, `isnan`, `abs`) each step built a new array of
/// every value: they were a fifth of validate's time on a wide file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TextFn {
    /// `is_blank(text)`: null, empty or only blanks; never null.
    Blank,
    /// `parse_int(text)`: the trimmed text as a 64-bit integer, as `TRY_CAST` reads it.
    Int,
    /// `parse_float(text)`: the trimmed text as a finite double, as `TRY_CAST`
    /// reads it; null for NaN and infinities.
    Float,
    /// `has_nul(text)`: the text holds a NUL byte; never null.
    Nul,
}

impl TextFn {
    const ALL: [TextFn; 4] = [TextFn::Blank, TextFn::Int, TextFn::Float, TextFn::Nul];

    fn name(self) -> &'static str {
        match self {
            TextFn::Blank => "is_blank",
            TextFn::Int => "parse_int",
            TextFn::Float => "parse_float",
            TextFn::Nul => "has_nul",
        }
    }
}

fn text_udf(f: TextFn) -> ScalarUDF {
    ScalarUDF::from(TextUdf {
        f,
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextUdf {
    f: TextFn,
    signature: Signature,
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        self.f.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(match self.f {
            TextFn::Blank | TextFn::Nul => DataType::Boolean,
            TextFn::Int => DataType::Int64,
            TextFn::Float => DataType::Float64,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::{Float64Array, Int64Array};
        use datafusion::arrow::buffer::BooleanBuffer;
        use datafusion::arrow::compute::kernels::cast_utils::Parser;
        use datafusion::arrow::datatypes::{Float64Type, Int64Type};
        let n = args.number_rows;
        if let Some(values) = native(&args.args[0], n)? {
            use datafusion::arrow::compute::{cast, is_null};
            let out: ArrayRef = match self.f {
                TextFn::Blank => Arc::new(is_null(&values)?),
                TextFn::Nul => Arc::new(BooleanArray::new(BooleanBuffer::new_unset(n), None)),
                TextFn::Int => cast(&values, &DataType::Int64)?,
                TextFn::Float => Arc::new(
                    cast(&values, &DataType::Float64)?
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("cast to Float64")
                        .iter()
                        .map(|v| v.filter(|x| x.is_finite()))
                        .collect::<Float64Array>(),
                ),
            };
            return Ok(ColumnarValue::Array(out));
        }
        let values = text_array(&args.args[0], n)?;
        let out: ArrayRef = match self.f {
            TextFn::Blank => Arc::new(BooleanArray::new(
                BooleanBuffer::collect_bool(n, |i| values.is_null(i) || is_blank(values.value(i))),
                None,
            )),
            TextFn::Nul => {
                // One search of the batch's bytes; rows are looked at only when
                // it finds a NUL (strpos built an integer per row to compare).
                let offsets = values.value_offsets();
                let bytes = &values.value_data()[offsets[0] as usize..offsets[n] as usize];
                let found = if bytes.contains(&0) {
                    BooleanBuffer::collect_bool(n, |i| {
                        values.is_valid(i) && values.value(i).as_bytes().contains(&0)
                    })
                } else {
                    BooleanBuffer::new_unset(n)
                };
                Arc::new(BooleanArray::new(found, None))
            }
            TextFn::Int => Arc::new(
                values
                    .iter()
                    .map(|v| v.and_then(|v| Int64Type::parse(strip(v))))
                    .collect::<Int64Array>(),
            ),
            TextFn::Float => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        v.and_then(|v| Float64Type::parse(strip(v)))
                            .filter(|x| x.is_finite())
                    })
                    .collect::<Float64Array>(),
            ),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `key_fingerprint(v1, v2, ...)`: a 128-bit XXH3 hash of a row's typed key
/// values, null when any of them is null (a key with a null part takes no part
/// in uniqueness). Equal keys have equal fingerprints; two different keys share
/// one with a chance near n²/2¹²⁹ for n keys (about 10⁻²⁴ for 30 million), so
/// uniqueness groups and joins on this one 16-byte value instead of on every
/// key column: the key pass holds 16 bytes a key whatever the key's width.
pub fn key_fingerprint(values: Vec<Expr>) -> Expr {
    ScalarUDF::from(KeyFingerprint::new()).call(values)
}

/// The type of a key fingerprint: 128 bits as a decimal, so that grouping and
/// joining on it take DataFusion's paths for one primitive column.
fn fingerprint_type() -> DataType {
    DataType::Decimal128(38, 0)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct KeyFingerprint {
    signature: Signature,
}

impl KeyFingerprint {
    fn new() -> KeyFingerprint {
        KeyFingerprint {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for KeyFingerprint {
    fn name(&self) -> &str {
        "key_fingerprint"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(fingerprint_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::Decimal128Builder;
        let n = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| key_part(a.to_array(n)?))
            .collect::<DfResult<Vec<_>>>()?;
        let mut out = Decimal128Builder::with_capacity(n);
        let mut row_bytes = Vec::with_capacity(64);
        'rows: for row in 0..n {
            row_bytes.clear();
            for part in &arrays {
                if !part.append(row, &mut row_bytes) {
                    out.append_null();
                    continue 'rows;
                }
            }
            out.append_value(twox_hash::XxHash3_128::oneshot(&row_bytes) as i128);
        }
        let out = out.finish().with_data_type(fingerprint_type());
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `repeated_key(fingerprint)`: whether a row's key fingerprint
/// ([`key_fingerprint`]) is one the pre-pass found more than once in the file
/// (null for a null fingerprint). The main pass of a file with repeated keys
/// flags its rows with this lookup instead of joining the duplicated keys: a
/// join copied every column of every row to add one flag.
pub fn repeated_key(repeated: Vec<i128>, fingerprint: Expr) -> Expr {
    ScalarUDF::from(RepeatedKey::new(repeated)).call(vec![fingerprint])
}

/// The bytes [`repeated_key`] holds for `keys` fingerprints: 16 a key, and its
/// index of at most 4 a key.
pub fn repeated_key_bytes(keys: usize) -> usize {
    keys * 16 + RepeatedKey::index_len(keys) * 4
}

/// The fingerprints sorted, and an index of where each value of their top
/// `bits` bits starts: fingerprints are uniform hashes, so a lookup reads the
/// index and one or two fingerprints (a hash set would take up to twice the
/// bytes).
#[derive(Debug, PartialEq, Eq)]
struct RepeatedKey {
    repeated: Vec<u128>,
    bits: u32,
    starts: Vec<u32>,
    signature: Signature,
}

impl RepeatedKey {
    fn new(repeated: Vec<i128>) -> RepeatedKey {
        let mut repeated: Vec<u128> = repeated.into_iter().map(|fp| fp as u128).collect();
        repeated.sort_unstable();
        repeated.dedup();
        let bits = Self::index_bits(repeated.len());
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for top in 0..=(1u128 << bits) {
            while at < repeated.len() && Self::top(repeated[at], bits) < top {
                at += 1;
            }
            starts.push(at as u32);
        }
        RepeatedKey {
            repeated,
            bits,
            starts,
            signature: Signature::exact(vec![fingerprint_type()], Volatility::Immutable),
        }
    }

    /// The top bits indexed for `keys` fingerprints: 2^bits ≤ `keys`, at most 2²⁰.
    fn index_bits(keys: usize) -> u32 {
        keys.max(1).ilog2().min(20)
    }

    /// The index's entries: where each value of the top bits starts, and the end.
    fn index_len(keys: usize) -> usize {
        (1usize << Self::index_bits(keys)) + 1
    }

    fn top(fp: u128, bits: u32) -> u128 {
        fp.checked_shr(128 - bits).unwrap_or(0)
    }

    fn contains(&self, fp: i128) -> bool {
        let fp = fp as u128;
        let top = Self::top(fp, self.bits) as usize;
        let (from, to) = (self.starts[top] as usize, self.starts[top + 1] as usize);
        self.repeated[from..to].binary_search(&fp).is_ok()
    }
}

impl std::hash::Hash for RepeatedKey {
    /// Its size and ends: equal ones hash alike, and a plan's hashing does not
    /// read millions of fingerprints.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.repeated.len().hash(state);
        self.repeated.first().hash(state);
        self.repeated.last().hash(state);
    }
}

impl ScalarUDFImpl for RepeatedKey {
    fn name(&self) -> &str {
        "repeated_key"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let fingerprints = args.args[0].to_array(args.number_rows)?;
        let fingerprints = fingerprints.as_primitive::<Decimal128Type>();
        let flags: BooleanArray = fingerprints
            .iter()
            .map(|fp| fp.map(|fp| self.contains(fp)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(flags)))
    }
}

/// One key column's values as the bytes a fingerprint hashes: fixed-width
/// values (numbers, dates, times, decimals) as their native bytes, booleans as
/// one byte, text as its length and its bytes (so `("ab", "c")` and `("a", "bc")`
/// differ).
enum KeyPart {
    Fixed {
        data: datafusion::arrow::array::ArrayData,
        width: usize,
    },
    Bool(BooleanArray),
    Text(StringArray),
}

fn key_part(array: ArrayRef) -> DfResult<KeyPart> {
    let ty = array.data_type();
    Ok(if ty.is_primitive() {
        KeyPart::Fixed {
            width: ty.primitive_width().expect("primitive types have a width"),
            data: array.to_data(),
        }
    } else if let Some(b) = array.as_any().downcast_ref::<BooleanArray>() {
        KeyPart::Bool(b.clone())
    } else {
        let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
        KeyPart::Text(
            text.as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8 gives a StringArray")
                .clone(),
        )
    })
}

impl KeyPart {
    /// Appends the row's value; false when it is null.
    fn append(&self, row: usize, out: &mut Vec<u8>) -> bool {
        match self {
            KeyPart::Fixed { data, width } => {
                if data.is_null(row) {
                    return false;
                }
                let at = (data.offset() + row) * width;
                out.extend_from_slice(&data.buffers()[0].as_slice()[at..at + width]);
            }
            KeyPart::Bool(b) => {
                if b.is_null(row) {
                    return false;
                }
                out.push(u8::from(b.value(row)));
            }
            KeyPart::Text(t) => {
                if t.is_null(row) {
                    return false;
                }
                let v = t.value(row).as_bytes();
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        true
    }
}

/// The rule functions as bytes, for plans run in another process (Ballista):
/// None for any other function.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Vec<u8>> {
    let inner = udf.inner();
    if let Some(e) = inner.downcast_ref::<RowErrors>() {
        return serde_json::to_vec(&e.meta).ok();
    }
    if let Some(r) = inner.downcast_ref::<RepeatedKey>() {
        return Some(r.repeated.iter().flat_map(|fp| fp.to_le_bytes()).collect());
    }
    (inner.is::<ParseTemporal>() || inner.is::<TextUdf>() || inner.is::<KeyFingerprint>())
        .then(|| b"[]".to_vec())
}

/// A rule function [`encode_udf`] wrote; None when `name` is not one of ours.
pub fn decode_udf(name: &str, bytes: &[u8]) -> Option<DfResult<ScalarUDF>> {
    Some(Ok(match name {
        "parse_date" => parse_udf(Temporal::Date),
        "parse_timestamp" => parse_udf(Temporal::Timestamp),
        "key_fingerprint" => ScalarUDF::from(KeyFingerprint::new()),
        "repeated_key" => ScalarUDF::from(RepeatedKey::new(
            bytes
                .chunks_exact(16)
                .map(|b| i128::from_le_bytes(b.try_into().expect("16 bytes")))
                .collect(),
        )),
        _ if let Some(f) = TextFn::ALL.into_iter().find(|f| f.name() == name) => text_udf(f),
        "row_errors" => match serde_json::from_slice(bytes) {
            Ok(meta) => ScalarUDF::from(RowErrors {
                meta,
                signature: Signature::variadic_any(Volatility::Immutable),
            }),
            Err(e) => return Some(Err(crate::remote::json_error(e))),
        },
        _ => return None,
    }))
}

/// The argument's values when they are not text: a column the file holds in
/// its declared type (see [`super::source::Spec::native`]).
fn native(v: &ColumnarValue, rows: usize) -> DfResult<Option<ArrayRef>> {
    let text = matches!(
        v.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    );
    (!text).then(|| v.to_array(rows)).transpose()
}

fn text_array(v: &ColumnarValue, rows: usize) -> DfResult<StringArray> {
    let array = v.to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(array
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
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

/// `row_errors(flag1, value1, flag2, value2, ...)`: the list of a row's failed
/// checks as {column, rule, value, message}; column, rule and message come from
/// the compiled checks, in the same order as the arguments.
pub fn row_errors(checks: &[Check]) -> Expr {
    let meta: Vec<(String, String, String)> = checks
        .iter()
        .map(|c| (c.column.clone(), c.rule.to_owned(), c.message.clone()))
        .collect();
    let args = checks
        .iter()
        .flat_map(|c| [c.flag.clone(), c.value.clone()])
        .collect();
    ScalarUDF::from(RowErrors {
        meta,
        signature: Signature::variadic_any(Volatility::Immutable),
    })
    .call(args)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RowErrors {
    meta: Vec<(String, String, String)>,
    signature: Signature,
}

impl ScalarUDFImpl for RowErrors {
    fn name(&self) -> &str {
        "row_errors"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(errors_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::buffer::BooleanBuffer;
        let n = args.number_rows;
        // Each check's failing rows (a null flag is not a failure), and the rows
        // failing any: most rows fail none, so a value (native in a Parquet
        // file) is turned to text only in a failing row.
        let mut flags: Vec<BooleanBuffer> = Vec::new();
        let mut values: Vec<Option<ArrayRef>> = Vec::new();
        for pair in args.args.chunks(2) {
            let f = pair[0].to_array(n)?;
            let f = f
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("flags are boolean");
            let failing = match f.nulls() {
                Some(valid) => f.values() & valid.inner(),
                None => f.values().clone(),
            };
            // A check failing in many rows has its values cast at once, not
            // row by row (a file of bad values is read as fast as before).
            values.push(match failing.count_set_bits() {
                0 => None,
                some if some * 16 > n => Some(datafusion::arrow::compute::cast(
                    &pair[1].to_array(n)?,
                    &DataType::Utf8,
                )?),
                _ => Some(pair[1].to_array(n)?),
            });
            flags.push(failing);
        }
        let any = flags
            .iter()
            .fold(BooleanBuffer::new_unset(n), |acc, f| &acc | f);
        let fields = error_fields();
        let builders: Vec<Box<dyn datafusion::arrow::array::ArrayBuilder>> = vec![
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
            Box::new(StringBuilder::new()),
        ];
        let mut list = ListBuilder::new(StructBuilder::new(fields.clone(), builders)).with_field(
            Arc::new(Field::new("element", DataType::Struct(fields), true)),
        );
        for row in 0..n {
            if !any.value(row) {
                list.append(true);
                continue;
            }
            for (i, (column, rule, message)) in self.meta.iter().enumerate() {
                let Some(v) = values[i].as_ref().filter(|_| flags[i].value(row)) else {
                    continue;
                };
                let s = list.values();
                s.field_builder::<StringBuilder>(0)
                    .expect("column")
                    .append_value(column);
                s.field_builder::<StringBuilder>(1)
                    .expect("rule")
                    .append_value(rule);
                s.field_builder::<StringBuilder>(2)
                    .expect("value")
                    .append_option(text_at(v, row)?);
                s.field_builder::<StringBuilder>(3)
                    .expect("message")
                    .append_value(message);
                s.append(true);
            }
            list.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(list.finish())))
    }
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
            flag: flag.is_true(),
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
            pick in 0usize..6,
            fields in (0u32..10000, 0u32..14, 0u32..33, 0u32..25, 0u32..61, 0u32..62),
            swaps in proptest::collection::vec(proptest::option::weighted(0.05, proptest::sample::select(vec!['-', '/', ':', ' ', 'T', '.', 'x', '7'])), 20),
            tail in proptest::sample::select(vec!["", "", "", ".5", ".123456", "0", "Z"]),
        ) {
            let (format, kind) = [
                ("%Y-%m-%d", Temporal::Date),
                ("%d/%m/%Y", Temporal::Date),
                ("%Y%m%d", Temporal::Date),
                ("%d/%m/%Y %H:%M", Temporal::Timestamp),
                ("%Y-%m-%d %H:%M:%S", Temporal::Timestamp),
                ("%Y-%m-%dT%H:%M:%S%.f", Temporal::Timestamp),
            ][pick];
            let layout = Layout::of(format, kind).expect("a layout");
            // The value in the layout's shape, a few characters swapped, a tail.
            let (y, mo, d, h, mi, sec) = fields;
            let padded = [format!("{y:04}"), format!("{mo:02}"), format!("{d:02}"), format!("{h:02}"), format!("{mi:02}"), format!("{sec:02}")];
            let mut next = [0usize; 6];
            let mut text: String = layout.0.iter().zip(&swaps).map(|(slot, swap)| {
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
            let want = NaiveDate::parse_from_str(&text, if format.is_empty() { "%Y-%m-%d" } else { format }).ok();
            proptest::prop_assert_eq!(date, want);
            let ts = TemporalParser::new(f, Temporal::Timestamp).timestamp(&text);
            let want = if format.is_empty() {
                ISO_TIMESTAMPS
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(&text, f).ok())
                    .or_else(|| chrono::DateTime::parse_from_rfc3339(&text).ok().map(|t| t.naive_utc()))
            } else {
                NaiveDateTime::parse_from_str(&text, format).ok()
            };
            proptest::prop_assert_eq!(ts, want);
        }
    }
}
