//! Periods: the `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDTHH` a file belongs to.
//!
//! A period is parsed against its dataset's granularity and must be a real
//! calendar period: 2025-13, 2025-02-30 and 2025-06-01T24 are rejected.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

use crate::config::{Config, Dataset, PeriodKind};

/// The dataset a command names and its checked `--period` (None for
/// `period: none`); the message says what to pass instead.
pub fn target<'a>(
    config: &'a Config,
    dataset: &str,
    period: Option<&str>,
) -> Result<(&'a Dataset, Option<Period>), String> {
    let ds = config.require_dataset(dataset)?;
    let period = match (period, ds.period.has_period()) {
        (Some(p), true) => Some(Period::parse(ds.period, p).map_err(|e| e.to_string())?),
        (None, true) => {
            return Err(format!(
                "dataset `{dataset}` has periods: pass --period {}",
                ds.period.pattern()
            ));
        }
        (Some(_), false) => {
            return Err(format!(
                "dataset `{dataset}` has `period: none`: drop --period"
            ));
        }
        (None, false) => None,
    };
    Ok((ds, period))
}

/// Checks a `--dataset`/`--period` filter of a reading command (status, report):
/// the dataset exists, and the period is one of the selected datasets'.
pub fn check_selection(
    config: &Config,
    dataset: Option<&str>,
    period: Option<&str>,
) -> Result<(), String> {
    if let Some(d) = dataset {
        config.require_dataset(d)?;
    }
    if let Some(p) = period {
        let fits = config
            .datasets
            .iter()
            .filter(|(n, _)| dataset.is_none_or(|d| d == n.as_str()))
            .any(|(_, ds)| ds.period.has_period() && Period::parse(ds.period, p).is_ok());
        if !fits {
            return Err(format!(
                "`{p}` is not a period of {}",
                dataset.map_or("any dataset".to_owned(), |d| format!("dataset `{d}`"))
            ));
        }
    }
    Ok(())
}

/// A checked period in its canonical text form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    kind: PeriodKind,
    // Before `text`: periods order by time (10000-01 after 9999-12).
    start: NaiveDateTime,
    text: String,
}

/// Why a text is not a period of the wanted granularity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {kind} period (expected {expected})")]
pub struct PeriodError {
    pub text: String,
    pub kind: PeriodKind,
    pub expected: &'static str,
}

impl Period {
    /// Parses `text` as a period of granularity `kind`.
    pub fn parse(kind: PeriodKind, text: &str) -> Result<Period, PeriodError> {
        let err = || PeriodError {
            text: text.to_owned(),
            kind,
            expected: kind.pattern(),
        };
        // Exact shape first: chrono accepts e.g. `2025-6` for `%Y-%m`.
        let shape_ok = match kind {
            PeriodKind::Month => shape(text, "dddd-dd"),
            PeriodKind::Day => shape(text, "dddd-dd-dd"),
            PeriodKind::Hour => shape(text, "dddd-dd-ddTdd"),
            PeriodKind::None => false,
        };
        if !shape_ok {
            return Err(err());
        }
        let start = match kind {
            PeriodKind::Month => NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0)),
            PeriodKind::Day => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0)),
            PeriodKind::Hour => {
                let (date, hour) = text.split_once('T').ok_or_else(err)?;
                let hour: u32 = hour.parse().map_err(|_| err())?;
                NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(hour, 0, 0))
            }
            PeriodKind::None => None,
        }
        .ok_or_else(err)?;
        // chrono takes year 0 (which PostgreSQL's dates lack); no delivery is
        // that old, so a year before 1000 is a typo.
        if start.year() < 1000 {
            return Err(PeriodError {
                expected: "a year from 1000 on",
                ..err()
            });
        }
        Ok(Period {
            kind,
            text: text.to_owned(),
            start,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first instant of the period.
    pub fn start(&self) -> NaiveDateTime {
        self.start
    }

    /// The period right after this one.
    pub fn next(&self) -> Period {
        let start = match self.kind {
            PeriodKind::Month => {
                let (y, m) = (self.start.year(), self.start.month());
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("first of a month exists")
            }
            PeriodKind::Day => self.start + chrono::Duration::days(1),
            PeriodKind::Hour | PeriodKind::None => self.start + chrono::Duration::hours(1),
        };
        Period::from_start(self.kind, start)
    }

    /// The period of granularity `kind` that holds `instant` (None for `period: none`).
    pub fn containing(kind: PeriodKind, instant: NaiveDateTime) -> Option<Period> {
        let date = instant.date();
        let start = match kind {
            PeriodKind::Month => date.with_day(1)?.and_hms_opt(0, 0, 0)?,
            PeriodKind::Day => date.and_hms_opt(0, 0, 0)?,
            PeriodKind::Hour => date.and_hms_opt(instant.hour(), 0, 0)?,
            PeriodKind::None => return None,
        };
        Some(Period::from_start(kind, start))
    }

    fn from_start(kind: PeriodKind, start: NaiveDateTime) -> Period {
        let text = match kind {
            PeriodKind::Month => format!("{:04}-{:02}", start.year(), start.month()),
            PeriodKind::Day => start.format("%Y-%m-%d").to_string(),
            _ => format!("{}T{:02}", start.format("%Y-%m-%d"), start.hour()),
        };
        Period { kind, text, start }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PeriodKind {
    /// The period's textual shape, for messages.
    pub fn pattern(self) -> &'static str {
        match self {
            PeriodKind::Month => "YYYY-MM",
            PeriodKind::Day => "YYYY-MM-DD",
            PeriodKind::Hour => "YYYY-MM-DDTHH",
            PeriodKind::None => "no period",
        }
    }
}

/// `d` is an ASCII digit; any other character must appear as is.
fn shape(text: &str, pattern: &str) -> bool {
    text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(t, p)| {
            if p == b'd' {
                t.is_ascii_digit()
            } else {
                t == p
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = PeriodKind> {
        prop_oneof![
            Just(PeriodKind::Month),
            Just(PeriodKind::Day),
            Just(PeriodKind::Hour),
            Just(PeriodKind::None)
        ]
    }

    proptest! {
        /// Any text: a period or an error that quotes it, never a panic.
        #[test]
        fn any_text_parses_or_is_refused_by_name(kind in kind(), text in "\\PC{0,16}|[0-9T-]{0,14}") {
            match Period::parse(kind, &text) {
                Ok(p) => prop_assert_eq!(p.as_str(), text.as_str()),
                Err(e) => {
                    let quoted = format!("`{}`", text);
                    prop_assert!(e.to_string().contains(&quoted), "{}", e);
                }
            }
        }

        /// Every real month, day and hour from year 1000 parses to itself, and
        /// its successor starts where it ends.
        #[test]
        fn real_periods_round_trip(y in 1000i32..=9998, m in 1u32..=12, d in 1u32..=28, h in 0u32..=23) {
            for (kind, text) in [
                (PeriodKind::Month, format!("{y:04}-{m:02}")),
                (PeriodKind::Day, format!("{y:04}-{m:02}-{d:02}")),
                (PeriodKind::Hour, format!("{y:04}-{m:02}-{d:02}T{h:02}")),
            ] {
                let p = Period::parse(kind, &text).unwrap();
                prop_assert_eq!(p.as_str(), text.as_str());
                prop_assert!(p.next().start() > p.start());
                prop_assert_eq!(Period::parse(kind, p.next().as_str()).unwrap(), p.next());
            }
        }
    }

    #[test]
    fn valid_periods_parse() {
        assert_eq!(
            Period::parse(PeriodKind::Month, "2025-06")
                .unwrap()
                .as_str(),
            "2025-06"
        );
        assert_eq!(
            Period::parse(PeriodKind::Day, "2024-02-29")
                .unwrap()
                .as_str(),
            "2024-02-29"
        );
        let h = Period::parse(PeriodKind::Hour, "2025-06-01T23").unwrap();
        assert_eq!(h.start().hour(), 23);
    }

    #[test]
    fn impossible_periods_are_rejected() {
        for (kind, text) in [
            (PeriodKind::Month, "2025-13"),
            (PeriodKind::Month, "2025-00"),
            (PeriodKind::Month, "2025-6"),
            (PeriodKind::Month, "2025-06-01"),
            (PeriodKind::Day, "2025-02-30"),
            (PeriodKind::Day, "2025-02-29"),
            (PeriodKind::Day, "2025-06"),
            (PeriodKind::Hour, "2025-06-01T24"),
            (PeriodKind::Hour, "2025-06-01 05"),
            (PeriodKind::Hour, "2025-06-01"),
            (PeriodKind::None, "2025-06"),
            (PeriodKind::Month, "0000-01"),
            (PeriodKind::Day, "0999-12-31"),
        ] {
            let err = Period::parse(kind, text).unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn error_names_the_expected_shape() {
        let err = Period::parse(PeriodKind::Hour, "2025-06-01T24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`2025-06-01T24` is not a valid hour period (expected YYYY-MM-DDTHH)"
        );
    }

    #[test]
    fn next_period_rolls_over() {
        let p = |k, t| Period::parse(k, t).unwrap();
        let last = p(PeriodKind::Month, "9999-12");
        assert!(last.next() > last, "periods order by time, not text");
        assert_eq!(p(PeriodKind::Month, "2025-12").next().as_str(), "2026-01");
        assert_eq!(
            p(PeriodKind::Day, "2024-02-28").next().as_str(),
            "2024-02-29"
        );
        assert_eq!(
            p(PeriodKind::Hour, "2025-06-30T23").next().as_str(),
            "2025-07-01T00"
        );
    }

    #[test]
    fn the_period_containing_an_instant() {
        let at = NaiveDate::from_ymd_opt(2026, 1, 4)
            .unwrap()
            .and_hms_opt(12, 34, 56)
            .unwrap();
        let text = |k| Period::containing(k, at).map(|p| p.as_str().to_owned());
        assert_eq!(text(PeriodKind::Month).as_deref(), Some("2026-01"));
        assert_eq!(text(PeriodKind::Day).as_deref(), Some("2026-01-04"));
        assert_eq!(text(PeriodKind::Hour).as_deref(), Some("2026-01-04T12"));
        assert_eq!(text(PeriodKind::None), None);
        // Same as parsing the text: the start is the period's first instant.
        let hour = Period::containing(PeriodKind::Hour, at).unwrap();
        assert_eq!(
            hour,
            Period::parse(PeriodKind::Hour, "2026-01-04T12").unwrap()
        );
    }
}
