//! The data-quality score of one file (seeds/data-quality-scoring.md).
//!
//! Start at 100; each category deducts its weight times the failing fraction:
//! schema 40, format 35, completeness 20, bounds 15, uniqueness 10.
//! score = clamp(round(100 − Σ), 0, 100); passed = score ≥ min_quality_score.

use serde::Serialize;
use serde_json::{Value, json};

pub const SCHEMA_WEIGHT: f64 = 40.0;
pub const FORMAT_WEIGHT: f64 = 35.0;
pub const COMPLETENESS_WEIGHT: f64 = 20.0;
pub const BOUNDS_WEIGHT: f64 = 15.0;
pub const UNIQUENESS_WEIGHT: f64 = 10.0;

/// What the checks counted over one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Declared columns.
    pub declared_columns: usize,
    /// Declared columns missing from the file, or of an incompatible type.
    pub schema_failures: Vec<String>,
    pub rows: u64,
    /// Rows with at least one type, date/timestamp format or regex error.
    pub format_rows: u64,
    /// Rows missing at least one required value.
    pub completeness_rows: u64,
    /// Rows with at least one min, max or allowed error.
    pub bounds_rows: u64,
    /// Rows in duplicated-key groups.
    pub uniqueness_rows: u64,
    /// The parser's error when the file could not be read at all.
    pub parse_error: Option<String>,
}

/// The score and its parts, in the shapes the reporting tables store.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub score: i32,
    pub passed: bool,
    pub metrics: Value,
    pub deductions: Value,
    pub failed_validation_message: Option<String>,
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn pct(f: f64) -> String {
    let p = f * 100.0;
    if p == 0.0 || p >= 1.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

/// Two decimals are plenty for a deduction and keep the JSON readable.
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Scores `counts` against `min_quality_score`.
pub fn score(c: &Counts, min_quality_score: u8) -> Quality {
    if let Some(err) = &c.parse_error {
        // Nothing could be checked: the whole format weight is lost, and a file
        // that could not be read never passes, whatever the threshold.
        let score = (100.0 - FORMAT_WEIGHT).round() as i32;
        return Quality {
            score,
            passed: false,
            metrics: json!({
                "schemaValidation": {"passed": false, "details": "not checked: the file could not be parsed"},
                "formatParsing": {"passed": false, "details": format!("the file could not be parsed: {err}")},
                "completeness": {"passed": false, "details": "not checked: the file could not be parsed"},
                "boundsRange": {"passed": false, "details": "not checked: the file could not be parsed"},
                "uniqueness": {"passed": false, "details": "not checked: the file could not be parsed"},
            }),
            deductions: json!({"schema": 0.0, "format": FORMAT_WEIGHT, "completeness": 0.0, "bounds": 0.0, "uniqueness": 0.0}),
            failed_validation_message: Some(err.clone()),
        };
    }
    let schema_f = fraction(c.schema_failures.len() as u64, c.declared_columns as u64);
    let format_f = fraction(c.format_rows, c.rows);
    let complete_f = fraction(c.completeness_rows, c.rows);
    let bounds_f = fraction(c.bounds_rows, c.rows);
    let unique_f = fraction(c.uniqueness_rows, c.rows);
    let d = [
        SCHEMA_WEIGHT * schema_f,
        FORMAT_WEIGHT * format_f,
        COMPLETENESS_WEIGHT * complete_f,
        BOUNDS_WEIGHT * bounds_f,
        UNIQUENESS_WEIGHT * unique_f,
    ];
    let score = (100.0 - d.iter().sum::<f64>()).round().clamp(0.0, 100.0) as i32;
    let passed = score >= i32::from(min_quality_score);
    let metric = |fails: u64, ok: &str, bad: String| json!({"passed": fails == 0, "details": if fails == 0 { ok.to_owned() } else { bad }});
    let metrics = json!({
        "schemaValidation": metric(
            c.schema_failures.len() as u64,
            "all declared columns present with compatible types",
            format!("{} of {} declared columns missing or of an incompatible type: {}",
                c.schema_failures.len(), c.declared_columns, c.schema_failures.join(", ")),
        ),
        "formatParsing": metric(
            c.format_rows,
            "every value parsed",
            format!("{} of {} rows ({}) have a type, format or pattern error", c.format_rows, c.rows, pct(format_f)),
        ),
        "completeness": metric(
            c.completeness_rows,
            "every required value present",
            format!("{} of {} rows ({}) miss a required value", c.completeness_rows, c.rows, pct(complete_f)),
        ),
        "boundsRange": metric(
            c.bounds_rows,
            "all values in expected ranges",
            format!("{} of {} rows ({}) are out of range or not an allowed value", c.bounds_rows, c.rows, pct(bounds_f)),
        ),
        "uniqueness": metric(
            c.uniqueness_rows,
            "every key is unique",
            format!("{} of {} rows ({}) share a key with another row (uniqueness {})",
                c.uniqueness_rows, c.rows, pct(unique_f), pct(1.0 - unique_f)),
        ),
    });
    let deductions = json!({
        "schema": round2(d[0]),
        "format": round2(d[1]),
        "completeness": round2(d[2]),
        "bounds": round2(d[3]),
        "uniqueness": round2(d[4]),
    });
    let failed_validation_message = (!passed)
        .then(|| format!("quality score {score} is below the threshold {min_quality_score}"));
    Quality {
        score,
        passed,
        metrics,
        deductions,
        failed_validation_message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: u64) -> Counts {
        Counts {
            declared_columns: 5,
            rows,
            ..Counts::default()
        }
    }

    #[test]
    fn clean_file_scores_100() {
        let q = score(&counts(1000), 80);
        assert_eq!(q.score, 100);
        assert!(q.passed);
        for k in [
            "schemaValidation",
            "formatParsing",
            "completeness",
            "boundsRange",
            "uniqueness",
        ] {
            assert_eq!(q.metrics[k]["passed"], true, "{k}");
            assert!(q.metrics[k]["details"].is_string());
        }
        for k in ["schema", "format", "completeness", "bounds", "uniqueness"] {
            assert_eq!(q.deductions[k], 0.0, "{k}");
        }
        assert_eq!(q.failed_validation_message, None);
    }

    #[test]
    fn one_of_five_columns_missing_deducts_8() {
        let mut c = counts(10);
        c.schema_failures = vec!["email".into()];
        let q = score(&c, 80);
        assert_eq!(q.deductions["schema"], 8.0);
        assert_eq!(q.score, 92);
        assert!(
            q.metrics["schemaValidation"]["details"]
                .as_str()
                .unwrap()
                .contains("email")
        );
    }

    #[test]
    fn every_row_failing_a_regex_and_an_allowed_rule_scores_50() {
        let mut c = counts(40);
        c.format_rows = 40;
        c.bounds_rows = 40;
        let q = score(&c, 80);
        assert_eq!(q.score, 50);
        assert!(!q.passed);
        assert_eq!(q.deductions["format"], 35.0);
        assert_eq!(q.deductions["bounds"], 15.0);
        assert_eq!(
            q.failed_validation_message.as_deref(),
            Some("quality score 50 is below the threshold 80")
        );
    }

    #[test]
    fn partial_failures_are_proportional_and_rounded() {
        let mut c = counts(200);
        c.completeness_rows = 6; // 3% of 20 = 0.6
        c.uniqueness_rows = 34; // 17% of 10 = 1.7
        c.format_rows = 1; // 0.5% of 35 = 0.175
        let q = score(&c, 98);
        assert_eq!(q.deductions["completeness"], 0.6);
        assert_eq!(q.deductions["uniqueness"], 1.7);
        assert_eq!(q.deductions["format"], 0.18);
        assert_eq!(q.score, 98); // 100 - 2.475 = 97.525 → 98
        assert!(q.passed);
        assert_eq!(q.metrics["uniqueness"]["passed"], false);
    }

    #[test]
    fn score_is_clamped_at_zero() {
        let mut c = counts(10);
        c.schema_failures = (0..5).map(|i| i.to_string()).collect();
        (
            c.format_rows,
            c.completeness_rows,
            c.bounds_rows,
            c.uniqueness_rows,
        ) = (10, 10, 10, 10);
        assert_eq!(score(&c, 0).score, 0);
        assert!(score(&c, 0).passed, "a threshold of 0 passes anything");
    }

    #[test]
    fn empty_file_loses_nothing_for_rows() {
        assert_eq!(score(&counts(0), 80).score, 100);
    }

    #[test]
    fn unparsable_file_loses_the_whole_format_weight() {
        let mut c = counts(0);
        c.parse_error = Some("bad zip".into());
        let q = score(&c, 80);
        assert_eq!(q.score, 65);
        assert!(!q.passed);
        assert_eq!(q.metrics["formatParsing"]["passed"], false);
        assert_eq!(q.deductions["format"], 35.0);
        assert_eq!(q.failed_validation_message.as_deref(), Some("bad zip"));
        assert!(
            !score(&c, 50).passed,
            "an unreadable file fails even under a threshold below its score"
        );
    }
}
