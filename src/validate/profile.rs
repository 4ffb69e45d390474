//! Counting while the rows stream past: quality counts, per-rule failures with
//! examples, and the profile payload. Memory is bounded: distributions track at
//! most `MAX_DISTINCT` values per column, examples and samples are capped.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, Float64Array, ListArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use serde_json::{Map, Value, json};

use super::rules::{Category, Check, is_blank, text_at};
use crate::config::{ColumnType, Dataset};

const MAX_DISTINCT: usize = 1000;
const MAX_DISTRIBUTION: usize = 25;
const MAX_SAMPLE: usize = 50;
const MAX_EXAMPLES: usize = 10;

/// Prefix of the raw (text) copy of a declared column in the validated batches.
pub const RAW_PREFIX: &str = "__raw__";

#[derive(Debug, Default)]
struct ColumnStats {
    missing: u64,
    count: u64,
    min: Option<f64>,
    max: Option<f64>,
    sum: f64,
    /// foldhash, not SipHash: the lookups of every value were a fifth of the
    /// profiler's time (the keys are the file's own values, hashed in memory only).
    distribution: datafusion::common::HashMap<String, u64>,
    truncated: bool,
}

impl ColumnStats {
    /// The most frequent values (at most MAX_DISTRIBUTION) and how many
    /// distinct ones there are, unless too many to count.
    fn distribution(&self) -> Value {
        let mut items: Vec<(&String, &u64)> = self.distribution.iter().collect();
        items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let values: Vec<Value> = items
            .iter()
            .take(MAX_DISTRIBUTION)
            .map(|(v, c)| json!({"value": v, "count": c}))
            .collect();
        json!({
            "distinct": if self.truncated { None } else { Some(self.distribution.len()) },
            "values": values,
            "truncated": self.truncated || items.len() > MAX_DISTRIBUTION,
        })
    }

    fn add_numbers(&mut self, numbers: &Float64Array) {
        let mut add = |x: f64| {
            self.sum += x;
            self.min = Some(self.min.map_or(x, |m| m.min(x)));
            self.max = Some(self.max.map_or(x, |m| m.max(x)));
        };
        if numbers.null_count() == 0 {
            numbers.values().iter().for_each(|&x| add(x));
        } else {
            numbers.iter().flatten().for_each(add);
        }
        self.count += (numbers.len() - numbers.null_count()) as u64;
    }

    fn add_texts(&mut self, text: &StringArray) {
        // One search of the batch's bytes instead of one per value.
        let nul = text.value_data().contains(&0);
        for v in text.iter().flatten() {
            self.count += 1;
            // Looked up as it is: a copy per value was most of the
            // profile's cost on a column of distinct strings.
            let v: std::borrow::Cow<str> = if nul && v.contains('\0') {
                printable(v).into()
            } else {
                v.into()
            };
            if let Some(c) = self.distribution.get_mut(v.as_ref()) {
                *c += 1;
            } else if self.distribution.len() < MAX_DISTINCT {
                self.distribution.insert(v.into_owned(), 1);
            } else {
                self.truncated = true;
            }
        }
    }
}

/// The null, empty or blank values of a raw column. Most values start with
/// a byte that is no blank: the rest are the only ones read whole (a call per
/// value was about a fifth of the profiler's samples on the narrow bench).
fn missing_texts(raw: &StringArray) -> usize {
    let (offsets, data) = (raw.value_offsets(), raw.value_data());
    (0..raw.len())
        .filter(|&i| {
            let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
            raw.is_null(i)
                || from == to
                || (data[from].is_ascii_whitespace() && is_blank(raw.value(i)))
        })
        .count()
}

/// One failing (column, rule) with how often and a few offending values.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleFailure {
    pub column: String,
    pub rule: String,
    pub message: String,
    pub count: u64,
    pub examples: Vec<String>,
    #[serde(skip)]
    pub category: Category,
}

/// What an amended verdict keeps of the verdict it amends (see
/// [`super::replay::amendable`]): that verdict profiled every row of the file,
/// and a relaxed value rule changes no row's typed or raw value, so its
/// statistics, completeness, distributions and sample stand. Only the rule
/// failures are new: those of the quarantined rows, judged again.
#[derive(Debug, Clone)]
pub struct Base {
    /// The verdict's cleaned rows, kept as they are (not read again).
    pub kept_rows: u64,
    /// Its profile payload (`reporting.monitoring_file_data_profile`).
    pub profile: Value,
    /// Its missing values per column (`meta.validation_log.missing`).
    pub missing: Value,
}

/// The profile keys an amended verdict computes anew: the rule failures.
const FAILURE_KEYS: [&str; 3] = ["typeFormatIssues", "uniquenessOverview", "boundsAnomalies"];

/// Everything counted over one file.
#[derive(Debug)]
pub struct Profiler {
    columns: Vec<(String, ColumnType)>,
    stats: Vec<ColumnStats>,
    pub failures: Vec<RuleFailure>,
    index: HashMap<(String, String), usize>,
    pub rows: u64,
    pub rows_rejected: u64,
    pub format_rows: u64,
    pub completeness_rows: u64,
    pub bounds_rows: u64,
    pub uniqueness_rows: u64,
    sample: Vec<Vec<Value>>,
    base: Option<Base>,
}

impl Profiler {
    pub fn new(ds: &Dataset, checks: &[Check]) -> Profiler {
        let failures: Vec<RuleFailure> = checks
            .iter()
            .map(|c| RuleFailure {
                column: c.column.clone(),
                rule: c.rule.to_owned(),
                message: c.message.clone(),
                count: 0,
                examples: Vec::new(),
                category: c.category,
            })
            .collect();
        let index = failures
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.column.clone(), f.rule.clone()), i))
            .collect();
        Profiler {
            columns: ds.columns.iter().map(|(n, c)| (n.clone(), c.ty)).collect(),
            stats: ds.columns.keys().map(|_| ColumnStats::default()).collect(),
            failures,
            index,
            rows: 0,
            rows_rejected: 0,
            format_rows: 0,
            completeness_rows: 0,
            bounds_rows: 0,
            uniqueness_rows: 0,
            sample: Vec::new(),
            base: None,
        }
    }

    /// The rows counted so far were a verdict's quarantined rows judged again:
    /// with `base`'s kept rows they make the whole file (see [`Base`]).
    pub fn rebase(&mut self, base: Base) {
        self.rows += base.kept_rows;
        self.base = Some(base);
    }

    /// Counts one validated batch; returns which rows have errors.
    pub fn update(&mut self, batch: &RecordBatch) -> Vec<bool> {
        let n = batch.num_rows();
        self.rows += n as u64;
        let errors = batch
            .column_by_name("_errors")
            .expect("validated batches carry _errors")
            .as_any()
            .downcast_ref::<ListArray>()
            .expect("_errors is a list");
        let mut bad = vec![false; n];
        for (row, flag) in bad.iter_mut().enumerate() {
            if errors.value_length(row) == 0 {
                continue;
            }
            *flag = true;
            self.rows_rejected += 1;
            self.count_errors(errors.value(row).as_struct());
        }
        for i in 0..self.columns.len() {
            self.add_column(i, batch);
        }
        self.add_sample(batch);
        bad
    }

    /// One rejected row's errors: each rule's count and examples, and the
    /// categories the row fails.
    fn count_errors(&mut self, list: &datafusion::arrow::array::StructArray) {
        let col = list.column(0).as_string::<i32>();
        let rule = list.column(1).as_string::<i32>();
        let value = list.column(2).as_string::<i32>();
        let mut seen = [false; 4];
        for e in 0..list.len() {
            let key = (col.value(e).to_owned(), rule.value(e).to_owned());
            let Some(&i) = self.index.get(&key) else {
                continue;
            };
            let f = &mut self.failures[i];
            f.count += 1;
            if value.is_valid(e) && f.examples.len() < MAX_EXAMPLES {
                let v = printable(value.value(e));
                if !f.examples.contains(&v) {
                    f.examples.push(v);
                }
            }
            seen[f.category as usize] = true;
        }
        self.format_rows += u64::from(seen[Category::Format as usize]);
        self.completeness_rows += u64::from(seen[Category::Completeness as usize]);
        self.bounds_rows += u64::from(seen[Category::Bounds as usize]);
        self.uniqueness_rows += u64::from(seen[Category::Uniqueness as usize]);
    }

    /// Column `i`'s missing values and statistics in `batch`.
    fn add_column(&mut self, i: usize, batch: &RecordBatch) {
        let (name, ty) = &self.columns[i];
        let stats = &mut self.stats[i];
        let raw = batch
            .column_by_name(&format!("{RAW_PREFIX}{name}"))
            .expect("raw copy of each column");
        // Missing as the `required` rule sees it: null, empty or only
        // blanks (a native Parquet value is never blank).
        stats.missing += match raw.as_string_opt::<i32>() {
            Some(raw) => missing_texts(raw),
            None => raw.null_count(),
        } as u64;
        let typed = batch.column_by_name(name).expect("typed column");
        let cast = datafusion::arrow::compute::cast;
        let numbers = match ty {
            ColumnType::Int | ColumnType::Float | ColumnType::Decimal { .. } => {
                cast(typed, &DataType::Float64).ok()
            }
            ColumnType::Date => cast(typed, &DataType::Int32)
                .ok()
                .and_then(|a| cast(&a, &DataType::Float64).ok()),
            ColumnType::Timestamp => cast(typed, &DataType::Int64)
                .ok()
                .and_then(|a| cast(&a, &DataType::Float64).ok()),
            ColumnType::String | ColumnType::Bool => None,
        };
        if let Some(numbers) = numbers {
            stats.add_numbers(numbers.as_primitive::<Float64Type>());
        } else {
            let text = cast(typed, &DataType::Utf8).expect("text");
            stats.add_texts(text.as_string::<i32>());
        }
    }

    /// The first rows, as delivered, until the sample is full.
    fn add_sample(&mut self, batch: &RecordBatch) {
        for row in 0..batch.num_rows() {
            if self.sample.len() >= MAX_SAMPLE {
                break;
            }
            let values = self
                .columns
                .iter()
                .map(|(name, _)| {
                    let raw = batch
                        .column_by_name(&format!("{RAW_PREFIX}{name}"))
                        .expect("raw");
                    match text_at(raw, row) {
                        Ok(Some(v)) => json!(printable(&v)),
                        _ => Value::Null,
                    }
                })
                .collect();
            self.sample.push(values);
        }
    }

    /// The rules that failed at least once, most frequent first.
    pub fn failing_rules(&self) -> Vec<RuleFailure> {
        let mut f: Vec<RuleFailure> = self
            .failures
            .iter()
            .filter(|f| f.count > 0)
            .cloned()
            .collect();
        f.sort_by(|a, b| b.count.cmp(&a.count).then(a.column.cmp(&b.column)));
        f
    }

    /// The profile payload: exactly the keys of the reporting contract.
    /// The failures of rules of `cat`, by column and rule.
    fn failures_of(&self, cat: Category) -> Map<String, Value> {
        let mut m = Map::new();
        for f in (self.failures.iter()).filter(|f| f.category == cat && f.count > 0) {
            let entry = m.entry(f.column.clone()).or_insert_with(|| json!({}));
            entry[f.rule.as_str()] =
                json!({"count": f.count, "message": f.message, "examples": f.examples});
        }
        m
    }

    /// Each key's duplicated rows and the share of rows that are unique.
    fn uniqueness(&self) -> Map<String, Value> {
        let mut uniqueness = Map::new();
        for f in (self.failures.iter()).filter(|f| f.category == Category::Uniqueness) {
            let share = if self.rows == 0 {
                1.0
            } else {
                1.0 - f.count as f64 / self.rows as f64
            };
            uniqueness.insert(
                f.column.clone(),
                json!({"duplicate_rows": f.count, "uniqueness": share, "examples": f.examples}),
            );
        }
        uniqueness
    }

    /// How many of the rows profiled had no value, per column: what the
    /// verdict keeps for the drift gate (`meta.validation_log.missing`).
    pub fn missing(&self) -> Value {
        if let Some(base) = &self.base {
            return base.missing.clone();
        }
        let columns: Map<String, Value> = (self.columns.iter().zip(&self.stats))
            .map(|((name, _), s)| (name.clone(), json!(s.missing.min(self.rows))))
            .collect();
        json!({"rows": self.rows, "columns": columns})
    }

    pub fn profile(&self) -> Value {
        let own = self.own_profile();
        let Some(base) = &self.base else {
            return own;
        };
        let mut merged = base.profile.clone();
        for key in FAILURE_KEYS {
            merged[key] = own[key].clone();
        }
        merged
    }

    fn own_profile(&self) -> Value {
        let mut summary = Map::new();
        let mut completeness = Map::new();
        let mut distributions = Map::new();
        for ((name, ty), s) in self.columns.iter().zip(&self.stats) {
            let present = self.rows - s.missing.min(self.rows);
            completeness.insert(
                name.clone(),
                json!({
                    "present": present,
                    "missing": s.missing,
                    "completeness": if self.rows == 0 { 1.0 } else { present as f64 / self.rows as f64 },
                }),
            );
            match ty {
                ColumnType::Int | ColumnType::Float | ColumnType::Decimal { .. } => {
                    summary.insert(
                        name.clone(),
                        json!({
                            "count": s.count,
                            "min": s.min,
                            "max": s.max,
                            "mean": if s.count == 0 { None } else { Some(s.sum / s.count as f64) },
                        }),
                    );
                }
                ColumnType::Date | ColumnType::Timestamp => {
                    let show = |x: Option<f64>| x.map(|x| temporal_text(*ty, x));
                    summary.insert(
                        name.clone(),
                        json!({"count": s.count, "min": show(s.min), "max": show(s.max)}),
                    );
                }
                ColumnType::String | ColumnType::Bool => {
                    distributions.insert(name.clone(), s.distribution());
                }
            }
        }
        let by = |cat| self.failures_of(cat);
        let uniqueness = self.uniqueness();
        json!({
            "statisticalSummary": summary,
            "completenessOverview": completeness,
            "typeFormatIssues": by(Category::Format),
            "uniquenessOverview": uniqueness,
            "valueDistributions": distributions,
            "boundsAnomalies": by(Category::Bounds),
            "sampleData": {
                "columns": self.columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                "rows": self.sample,
            },
        })
    }
}

fn temporal_text(ty: ColumnType, x: f64) -> String {
    match ty {
        ColumnType::Date => (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
            + chrono::Duration::days(x as i64))
        .to_string(),
        _ => chrono::DateTime::from_timestamp_micros(x as i64)
            .map(|t| t.naive_utc().to_string())
            .unwrap_or_default(),
    }
}

/// A value as the reports store it: PostgreSQL's text and jsonb cannot hold NUL,
/// so it is shown as `\0` (the quarantine table keeps the original).
fn printable(v: &str) -> String {
    v.replace('\0', "\\0")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, ListBuilder, StructBuilder};

    use super::*;
    use crate::config::Config;

    /// A period-less dataset of one column `c` of type `ty`.
    fn one_column(ty: &str) -> Config {
        Config::from_yaml(&format!(
            "version: 1\nlanded_dir: l\nstage_dir: s\ndatasets:\n  d:\n    file_pattern: '^d\\.csv$'\n    period: none\n    columns:\n      c: {{ type: {ty} }}\n"
        ))
        .unwrap()
    }

    /// A validated batch of column `c`: its typed and raw values, no errors.
    fn batch(typed: ArrayRef, raw: ArrayRef) -> RecordBatch {
        let mut errors = ListBuilder::new(StructBuilder::from_fields(
            super::super::rules::error_fields(),
            0,
        ));
        (0..raw.len()).for_each(|_| errors.append(true));
        RecordBatch::try_from_iter([
            ("c", typed),
            ("__raw__c", raw),
            ("_errors", Arc::new(errors.finish()) as ArrayRef),
        ])
        .unwrap()
    }

    /// A string column's distribution counts each value once per row, a value
    /// holding NUL under its printable form, whatever batch it arrives in.
    #[test]
    fn distributions_count_values_and_show_nul_escaped() {
        let config = one_column("string");
        let mut profiler = Profiler::new(config.dataset("d").unwrap(), &[]);
        for values in [vec!["a\0b", "x", "a\0b"], vec!["x", "x", "a\0b"]] {
            let text: ArrayRef = Arc::new(StringArray::from(values));
            profiler.update(&batch(text.clone(), text));
        }
        let profile = profiler.profile();
        assert_eq!(
            profile["valueDistributions"]["c"]["values"],
            json!([{"value": "a\\0b", "count": 3}, {"value": "x", "count": 3}])
        );
        assert_eq!(profile["valueDistributions"]["c"]["distinct"], json!(2));
    }

    /// An amended verdict's profile: the base's statistics, completeness,
    /// distributions, sample and missing values, the kept rows counted, and
    /// the rule failures of the rows judged again (here none).
    #[test]
    fn a_rebased_profile_keeps_its_base_and_reports_its_own_failures() {
        use datafusion::arrow::array::Int64Array;

        let config = one_column("int");
        let mut profiler = Profiler::new(config.dataset("d").unwrap(), &[]);
        profiler.update(&batch(
            Arc::new(Int64Array::from(vec![Some(1), Some(2)])),
            Arc::new(StringArray::from(vec![Some("1"), Some("2")])),
        ));
        let base = Base {
            kept_rows: 8,
            profile: json!({
                "statisticalSummary": {"c": {"count": 10, "min": 1.0, "max": 10.0, "mean": 5.5}},
                "completenessOverview": {"c": {"present": 10, "missing": 0, "completeness": 1.0}},
                "typeFormatIssues": {"c": {"type": {"count": 2}}},
                "sampleData": {"columns": ["c"], "rows": [["1"]]},
            }),
            missing: json!({"rows": 10, "columns": {"c": 0}}),
        };
        profiler.rebase(base.clone());
        assert_eq!((profiler.rows, profiler.rows_rejected), (10, 0));
        let profile = profiler.profile();
        for kept in ["statisticalSummary", "completenessOverview", "sampleData"] {
            assert_eq!(profile[kept], base.profile[kept], "{kept}");
        }
        assert_eq!(profile["typeFormatIssues"], json!({}));
        assert_eq!(profile["boundsAnomalies"], json!({}));
        assert_eq!(profiler.missing(), base.missing);
    }

    /// Missing is what `required` calls blank (null, empty, spaces, tabs, line
    /// ends; not other Unicode spaces), and numbers are summarised over the
    /// present values of batches with and without nulls.
    /// (Nor a form feed, nor a value that only starts with a blank.)
    #[test]
    fn missing_values_and_numbers_are_counted_as_the_rules_read_them() {
        use datafusion::arrow::array::Int64Array;

        let config = one_column("int");
        let mut profiler = Profiler::new(config.dataset("d").unwrap(), &[]);
        for (raw, typed) in [
            (
                vec![Some("1"), None, Some(" \t"), Some("3")],
                vec![Some(1), None, None, Some(3)],
            ),
            (
                vec![
                    Some("5"),
                    Some("\u{a0}"),
                    Some(""),
                    Some("6"),
                    Some("\x0c"),
                    Some(" x"),
                ],
                vec![Some(5), None, None, Some(6), None, None],
            ),
            (vec![Some("7"), Some("8")], vec![Some(7), Some(8)]),
        ] {
            profiler.update(&batch(
                Arc::new(Int64Array::from(typed)),
                Arc::new(StringArray::from(raw)),
            ));
        }
        let profile = profiler.profile();
        assert_eq!(profile["completenessOverview"]["c"]["missing"], json!(3));
        assert_eq!(
            profile["statisticalSummary"]["c"],
            json!({"count": 6, "min": 1.0, "max": 8.0, "mean": 5.0})
        );
    }
}
