//! The drift gate (`drift:` on a dataset): the period about to be loaded
//! against the loaded periods before it, from what their verdicts counted —
//! the rows each load wrote, and each verdict's missing values per column
//! (`meta.validation_log.missing`) — so no data is read again.

use serde_json::Value;
use tokio_postgres::Client;

use super::{Gate, LoadError, read};
use crate::config::{Config, Dataset, Drift, DriftSeverity};
use crate::ledger::Verdict;

/// Fewer earlier loaded periods than this: the gate says so and passes.
const MIN_WINDOW: usize = 3;

/// One earlier loaded period: its rows and its verdict's missing counts.
struct Loaded {
    period: String,
    rows: i64,
    missing: Option<Value>,
}

/// The drift gate's refusals for `period` (empty when it passes, or when
/// its severity is `warn`: then each finding is logged instead).
pub(super) async fn gate(
    config: &Config,
    client: &Client,
    name: &str,
    ds: &Dataset,
    period: &str,
    verdict: &Verdict,
) -> Result<Vec<(Gate, String)>, LoadError> {
    let Some(drift) = &ds.drift else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    // A re-delivery against the rows it replaces: no window needed.
    if let Some(limit) = drift.changed_keys {
        found.extend(changed_keys(config, client, (name, ds), period, verdict, limit).await?);
    }
    let window = window(client, name, period, drift.window).await?;
    if window.len() < MIN_WINDOW {
        tracing::info!(
            event = "drift_not_checked",
            loaded = window.len(),
            "drift gate: {} earlier loaded period(s), fewer than {MIN_WINDOW}; not checked",
            window.len()
        );
        return Ok(findings(drift, found));
    }
    if let Some(limit) = drift.row_count {
        found.extend(row_count(&window, verdict.rows_valid, limit));
    }
    if let Some(points) = drift.null_share {
        let missing: Option<Value> = client
            .query_one(
                "SELECT missing FROM meta.validation_log WHERE id = $1",
                &[&verdict.validation_id],
            )
            .await
            .map_err(read("read the verdict's missing values"))?
            .get(0);
        if let Some(missing) = missing {
            found.extend(null_share(&window, &missing, points, ds));
        }
    }
    Ok(findings(drift, found))
}

/// A re-delivery that changes or removes more than `limit` of the keys the
/// period's load in force wrote: compared by primary key between the Delta
/// version that load copied and the verdict's (no key's value is said).
async fn changed_keys(
    config: &Config,
    client: &Client,
    (name, ds): (&str, &Dataset),
    period: &str,
    verdict: &Verdict,
    limit: f64,
) -> Result<Option<String>, LoadError> {
    let Some(new) = verdict.cleaned_version else {
        return Ok(None);
    };
    let loaded = crate::ledger::Loaded::latest(client, name, Some(period))
        .await
        .map_err(read("read the period's load in force"))?;
    let Some((load_id, Some(old))) = loaded.map(|l| (l.load_id, l.source_delta_version)) else {
        return Ok(None);
    };
    if old == new {
        return Ok(None);
    }
    let d = crate::diff::by_key(config, name, ds, Some(period), (old, new), 0)
        .await
        .map_err(|source| LoadError::Source {
            dataset: name.to_owned(),
            path: format!("the cleaned table, versions {old} and {new}"),
            source,
        })?;
    let share = d.rewritten_share();
    Ok((share > limit).then(|| {
        format!(
            "changed_keys: the re-delivery changes {} and removes {} of the {} keys load \
             {load_id} wrote ({:.1} %, more than {:.1} %): {}",
            d.changed,
            d.removed,
            d.old_rows,
            share * 100.0,
            limit * 100.0,
            d.words()
        )
    }))
}

/// Refusals at severity `error`; at `warn`, each finding logged and none refused.
fn findings(drift: &Drift, found: Vec<String>) -> Vec<(Gate, String)> {
    match drift.severity {
        DriftSeverity::Error => found.into_iter().map(|f| (Gate::Drift, f)).collect(),
        DriftSeverity::Warn => {
            for f in &found {
                tracing::warn!(event = "drift_warning", finding = %f, "drift: {f}");
            }
            Vec::new()
        }
    }
}

/// The latest load in force of each of the `size` loaded periods before `period`.
async fn window(
    client: &Client,
    name: &str,
    period: &str,
    size: usize,
) -> Result<Vec<Loaded>, LoadError> {
    let rows = client
        .query(
            "SELECT period, rows_inserted, missing FROM (
                SELECT DISTINCT ON (l.period) l.period, l.rows_inserted, v.missing
                  FROM meta.load_log l LEFT JOIN meta.validation_log v ON v.id = l.validation_id
                 WHERE l.dataset = $1 AND l.period < $2 AND l.status = 'loaded'
                 ORDER BY l.period, l.id DESC) AS latest
              ORDER BY period DESC LIMIT $3",
            &[&name, &period, &(size as i64)],
        )
        .await
        .map_err(read("read the earlier loads for the drift gate"))?;
    Ok(rows
        .iter()
        .map(|r| Loaded {
            period: r.get(0),
            rows: r.get::<_, Option<i64>>(1).unwrap_or(0),
            missing: r.get(2),
        })
        .collect())
}

/// The window's periods, oldest to newest, for a message.
fn named(window: &[Loaded]) -> String {
    match (window.last(), window.first()) {
        (Some(first), Some(last)) => format!(
            "the {} loaded periods before ({}–{})",
            window.len(),
            first.period,
            last.period
        ),
        _ => "no loaded period before".into(),
    }
}

/// The period's rows against the window's median.
fn row_count(window: &[Loaded], rows: i64, limit: f64) -> Option<String> {
    let mut counts: Vec<i64> = window.iter().map(|l| l.rows).collect();
    counts.sort_unstable();
    let n = counts.len();
    let median = match n % 2 {
        1 => counts[n / 2] as f64,
        _ => (counts[n / 2 - 1] + counts[n / 2]) as f64 / 2.0,
    };
    let off = (rows as f64 - median).abs() / median.max(1.0);
    (off > limit).then(|| {
        format!(
            "row_count: {rows} rows, {:.0}% from the median {median} of {}: {}–{} (drift.row_count {limit})",
            off * 100.0,
            named(window),
            counts[0],
            counts[n - 1]
        )
    })
}

/// Each column's share of missing values against the window's highest.
fn null_share(window: &[Loaded], missing: &Value, points: f64, ds: &Dataset) -> Vec<String> {
    let share = |m: &Value, column: &str| -> Option<f64> {
        let rows = m["rows"].as_f64().filter(|r| *r > 0.0)?;
        Some(m["columns"][column].as_f64()? / rows)
    };
    let mut found = Vec::new();
    for column in ds.columns.keys() {
        let Some(now) = share(missing, column) else {
            continue;
        };
        let before: Vec<f64> = (window.iter())
            .filter_map(|l| share(l.missing.as_ref()?, column))
            .collect();
        if before.len() < MIN_WINDOW {
            continue;
        }
        let highest = before.iter().copied().fold(0.0, f64::max);
        if now > highest + points {
            found.push(format!(
                "null_share: column {column} is {:.1}% missing; {} had at most {:.1}% (drift.null_share {points})",
                now * 100.0,
                named(window),
                highest * 100.0
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(rows: &[i64]) -> Vec<Loaded> {
        (rows.iter().enumerate())
            .map(|(i, &r)| Loaded {
                period: format!("2013-{:02}", 9 - i),
                rows: r,
                missing: Some(serde_json::json!({"rows": r, "columns": {"a": r / 100}})),
            })
            .collect()
    }

    #[test]
    fn row_count_compares_with_the_windows_median_and_names_it() {
        let window = loaded(&[29_425, 27_000, 26_980, 28_000]);
        assert_eq!(row_count(&window, 27_500, 0.5), None);
        let refused = row_count(&window, 1_000, 0.5).unwrap();
        assert!(
            refused.contains("1000 rows")
                && refused.contains("median 27500")
                && refused.contains("26980–29425")
                && refused.contains("the 4 loaded periods before (2013-06–2013-09)"),
            "{refused}"
        );
        // More rows drift too.
        assert!(row_count(&window, 60_000, 0.5).is_some());
    }

    #[test]
    fn null_share_compares_with_the_windows_highest_share() {
        let ds: Dataset = serde_yaml::from_str(
            "file_pattern: '^f_(?P<period>\\d{4}-\\d{2})\\.csv$'\nperiod: month\ncolumns:\n  a: { type: int }\n",
        )
        .unwrap();
        let window = loaded(&[1000, 1000, 1000]);
        let fine = serde_json::json!({"rows": 1000, "columns": {"a": 50}});
        assert!(null_share(&window, &fine, 0.05, &ds).is_empty());
        let gone = serde_json::json!({"rows": 1000, "columns": {"a": 400}});
        let found = null_share(&window, &gone, 0.05, &ds);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("column a is 40.0% missing") && found[0].contains("at most 1.0%"),
            "{found:?}"
        );
    }
}
