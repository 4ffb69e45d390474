//! Two versions of a period's cleaned rows compared by the dataset's primary
//! key: keys added, removed, changed, and per column how many keys changed
//! it. `pipeline diff` shows it (the rows stage holds against the latest
//! verdict's, or any two verdicts), and the drift gate's `changed_keys`
//! refuses a re-delivery that rewrites too much of a loaded period.
//!
//! Both sides are read from the cleaned Delta table at their versions, by
//! DataFusion, so a diff never touches PostgreSQL's rows. A dataset without a
//! primary key is compared by row counts only, said as such.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::execution::context::SessionContext;
use serde::Serialize;

use crate::config::{Config, Dataset};
use crate::ledger;
use crate::stage_table::DATA_PERIOD;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What changed between two versions of a period's rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyDiff {
    /// The primary key compared by (empty: counts only).
    pub key: Vec<String>,
    pub old_rows: u64,
    pub new_rows: u64,
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// Per column: how many keys changed its value (only columns that changed).
    pub columns: BTreeMap<String, u64>,
    /// A few keys of each kind (`added`, `removed`, and `changed <column>`),
    /// as text: only when asked for, since keys are the delivery's values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub examples: BTreeMap<String, Vec<String>>,
}

impl KeyDiff {
    /// Keys changed or removed, as a share of the old version's rows.
    pub fn rewritten_share(&self) -> f64 {
        match self.old_rows {
            0 => 0.0,
            n => (self.changed + self.removed) as f64 / n as f64,
        }
    }

    /// In words, without any value: `5 removed, 10 changed (dep_delay 10)`.
    pub fn words(&self) -> String {
        if self.key.is_empty() {
            return format!(
                "rows {} → {} (no primary key: compared by count only)",
                self.old_rows, self.new_rows
            );
        }
        let columns: Vec<String> = (self.columns.iter())
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let changed = match columns.is_empty() {
            true => format!("{} changed", self.changed),
            false => format!("{} changed ({})", self.changed, columns.join(", ")),
        };
        format!(
            "{} added, {} removed, {changed}, {} unchanged",
            self.added, self.removed, self.unchanged
        )
    }
}

/// The period's rows at `old` against those at `new` (versions of the
/// dataset's cleaned table); `examples` keys of each kind when above 0.
pub async fn by_key(
    config: &Config,
    dataset: &str,
    ds: &Dataset,
    period: Option<&str>,
    (old, new): (i64, i64),
    examples: usize,
) -> Result<KeyDiff, BoxError> {
    let ctx = crate::context::session(config.limits.memory_bytes);
    let location = ledger::delta_location(config, "cleaned", dataset);
    for (name, version) in [("old_version", old), ("new_version", new)] {
        let table = location.open_version(version).await?;
        ctx.register_table(name, table.table_provider().await?)?;
    }
    let period_filter = match period {
        Some(p) => format!(
            " WHERE {} = {}",
            quoted(DATA_PERIOD),
            crate::db::quote_literal(p)
        ),
        None => String::new(),
    };
    let columns: Vec<&String> = ds.columns.keys().collect();
    let list = (columns.iter().map(|c| quoted(c)))
        .collect::<Vec<_>>()
        .join(", ");
    for side in ["old", "new"] {
        let sql = format!("SELECT {list} FROM {side}_version{period_filter}");
        ctx.register_table(side, ctx.sql(&sql).await?.into_view())?;
    }
    let count = |side: &str| format!("SELECT count(*) FROM {side}");
    let (old_rows, new_rows) = (
        one_number(&ctx, &count("old")).await?,
        one_number(&ctx, &count("new")).await?,
    );
    let mut diff = KeyDiff {
        key: ds.primary_key.clone(),
        old_rows,
        new_rows,
        ..KeyDiff::default()
    };
    if ds.primary_key.is_empty() {
        return Ok(diff);
    }
    let query = Query::new(ds, &columns);
    ctx.register_udf(crate::rules::key_fingerprint_udf());
    ctx.register_table("by_key", ctx.sql(&query.by_key()).await?.into_view())?;
    let batch = one_row(&ctx, &query.counts()).await?;
    let n = |i: usize| batch.column(i).as_primitive::<Int64Type>().value(0) as u64;
    (diff.added, diff.removed, diff.changed) = (n(0), n(1), n(2));
    diff.unchanged = new_rows.saturating_sub(diff.added + diff.changed);
    for (j, c) in query.values.iter().enumerate() {
        if n(3 + j) > 0 {
            diff.columns.insert((*c).clone(), n(3 + j));
        }
    }
    if examples > 0 {
        for (kind, condition) in query.example_conditions(&diff) {
            let keys = query.keys_where(&ctx, &condition, examples).await?;
            diff.examples.insert(kind, keys);
        }
    }
    Ok(diff)
}

/// The SQL of a comparison: the key columns and the compared ones.
///
/// Both sides are stacked and grouped by key rather than joined: DataFusion's
/// hash join cannot spill, so two versions of a period of millions of rows
/// exhausted the memory pool, where a grouped aggregation spills to disk.
/// Each key's group holds one row per side it is in (the key is unique in
/// cleaned rows); a column differs when exactly one side is null or the two
/// values differ. Values are compared by their 128-bit fingerprint
/// ([`crate::rules::key_fingerprint`], null for null), so `min` ≠ `max` is a
/// comparison of two numbers: comparing text values by `min` and `max` made
/// the diff of a month of a million rows take four times its validation.
struct Query<'a> {
    key: Vec<String>,
    values: Vec<&'a String>,
}

/// Names of the per-key flags, beside the dataset's own columns.
const IN_OLD: &str = "__pipeline_in_old";
const IN_NEW: &str = "__pipeline_in_new";

impl<'a> Query<'a> {
    fn new(ds: &Dataset, columns: &[&'a String]) -> Query<'a> {
        Query {
            key: ds.primary_key.clone(),
            values: (columns.iter().copied())
                .filter(|c| !ds.primary_key.contains(c))
                .collect(),
        }
    }

    /// One row per key: in which sides it is, and per compared column
    /// (`__pipeline_differs_<j>`) 1 when its values differ.
    fn by_key(&self) -> String {
        let keys: Vec<String> = self.key.iter().map(|k| quoted(k)).collect();
        let keys = keys.join(", ");
        let mut items = vec![
            format!("max({IN_OLD}) AS {IN_OLD}"),
            format!("max({IN_NEW}) AS {IN_NEW}"),
        ];
        let mut hashed = keys.clone();
        for (j, c) in self.values.iter().enumerate() {
            let h = format!("__pipeline_value_{j}");
            hashed.push_str(&format!(", key_fingerprint({}) AS {h}", quoted(c)));
            items.push(format!(
                "CASE WHEN count({h}) = 1 OR min({h}) IS DISTINCT FROM max({h}) \
                 THEN 1 ELSE 0 END AS {}",
                Self::differs(j)
            ));
        }
        format!(
            "SELECT {keys}, {} FROM (\
             SELECT 1 AS {IN_OLD}, 0 AS {IN_NEW}, {hashed} FROM old \
             UNION ALL SELECT 0 AS {IN_OLD}, 1 AS {IN_NEW}, {hashed} FROM new) \
             GROUP BY {keys}",
            items.join(", ")
        )
    }

    fn differs(j: usize) -> String {
        format!("__pipeline_differs_{j}")
    }

    fn both() -> String {
        format!("({IN_OLD} = 1 AND {IN_NEW} = 1)")
    }

    fn any_differs(&self) -> String {
        match self.values.is_empty() {
            true => "false".into(),
            false => (0..self.values.len())
                .map(|j| format!("{} = 1", Self::differs(j)))
                .collect::<Vec<_>>()
                .join(" OR "),
        }
    }

    /// added, removed, changed, then per compared column; over `by_key`.
    fn counts(&self) -> String {
        let both = Self::both();
        let mut items = vec![
            format!("count(*) FILTER (WHERE {IN_OLD} = 0)"),
            format!("count(*) FILTER (WHERE {IN_NEW} = 0)"),
            format!(
                "count(*) FILTER (WHERE {both} AND ({}))",
                self.any_differs()
            ),
        ];
        for j in 0..self.values.len() {
            items.push(format!(
                "count(*) FILTER (WHERE {both} AND {} = 1)",
                Self::differs(j)
            ));
        }
        format!("SELECT {} FROM by_key", items.join(", "))
    }

    fn example_conditions(&self, diff: &KeyDiff) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if diff.added > 0 {
            out.push(("added".into(), format!("{IN_OLD} = 0")));
        }
        if diff.removed > 0 {
            out.push(("removed".into(), format!("{IN_NEW} = 0")));
        }
        for (j, c) in self.values.iter().enumerate() {
            if diff.columns.contains_key(*c) {
                let condition = format!("{} AND {} = 1", Self::both(), Self::differs(j));
                out.push((format!("changed {c}"), condition));
            }
        }
        out
    }

    /// Up to `limit` keys (as text, parts joined by `|`) where `condition`.
    async fn keys_where(
        &self,
        ctx: &SessionContext,
        condition: &str,
        limit: usize,
    ) -> Result<Vec<String>, BoxError> {
        let parts: Vec<String> = (self.key.iter())
            .map(|k| format!("CAST({} AS VARCHAR)", quoted(k)))
            .collect();
        let sql = format!(
            "SELECT concat_ws('|', {}) AS k FROM by_key WHERE {condition} ORDER BY k LIMIT {limit}",
            parts.join(", "),
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut keys = Vec::new();
        for b in &batches {
            let col = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )?;
            let text = col.as_string::<i32>();
            keys.extend(
                (0..text.len())
                    .filter(|&i| !text.is_null(i))
                    .map(|i| text.value(i).to_owned()),
            );
        }
        Ok(keys)
    }
}

/// A column name as DataFusion's SQL reads it, case kept.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Result<RecordBatch, BoxError> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
    Ok(batch)
}

async fn one_number(ctx: &SessionContext, sql: &str) -> Result<u64, BoxError> {
    let batch = one_row(ctx, sql).await?;
    Ok(batch.column(0).as_primitive::<Int64Type>().value(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_name_counts_and_columns_never_values() {
        let mut d = KeyDiff {
            key: vec!["id".into()],
            old_rows: 100,
            new_rows: 95,
            added: 0,
            removed: 5,
            changed: 10,
            unchanged: 85,
            ..KeyDiff::default()
        };
        d.columns.insert("dep_delay".into(), 10);
        assert_eq!(
            d.words(),
            "0 added, 5 removed, 10 changed (dep_delay 10), 85 unchanged"
        );
        assert!((d.rewritten_share() - 0.15).abs() < 1e-12);
        let counts_only = KeyDiff {
            old_rows: 3,
            new_rows: 4,
            ..KeyDiff::default()
        };
        assert!(counts_only.words().contains("no primary key"));
    }
}

/// What `pipeline diff` compares: a period, and which two versions.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub period: Option<String>,
    /// The old side: this verdict's rows (default: the rows stage holds,
    /// i.e. the Delta version the load in force copied).
    pub from_validation: Option<i64>,
    /// The new side: this verdict's rows (default: the latest verdict's).
    pub to_validation: Option<i64>,
    /// How many keys of each kind to show.
    pub limit: usize,
}

/// One side of a diff: where its rows come from.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// The verdict whose cleaned rows these are.
    pub validation_id: Option<i64>,
    /// The load whose rows these are (the old side by default).
    pub load_id: Option<i64>,
    /// The cleaned table's Delta version read.
    pub version: i64,
}

/// What `pipeline diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub period: Option<String>,
    pub from: Side,
    pub to: Side,
    #[serde(flatten)]
    pub diff: KeyDiff,
}

impl Report {
    /// The diff as people read it: the counts, then a few keys of each kind.
    pub fn text(&self) -> String {
        let side = |s: &Side| match (s.load_id, s.validation_id) {
            (Some(l), _) => format!("load {l} (Delta version {})", s.version),
            (None, Some(v)) => format!("validation {v} (Delta version {})", s.version),
            (None, None) => format!("Delta version {}", s.version),
        };
        let mut out = format!(
            "{} {}: {} → {}\n{}\n",
            self.dataset,
            self.period.as_deref().unwrap_or("(all)"),
            side(&self.from),
            side(&self.to),
            self.diff.words()
        );
        for (kind, keys) in &self.diff.examples {
            out.push_str(&format!("  {kind}: {}\n", keys.join(", ")));
        }
        out
    }
}

/// Why a diff cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the pipeline's tables")]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot compare the cleaned rows")]
    Read(#[source] BoxError),
}

impl DiffError {
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            DiffError::Usage(_) => crate::exit::Exit::Usage,
            DiffError::Db(_) | DiffError::Read(_) => crate::exit::Exit::Failure,
        }
    }
}

/// `pipeline diff`: the period's two versions found in the ledger, compared.
pub async fn run(
    config: &Config,
    client: &tokio_postgres::Client,
    args: &Request,
) -> Result<Report, DiffError> {
    let (ds, period) = crate::period::target(config, &args.dataset, args.period.as_deref())
        .map_err(DiffError::Usage)?;
    let period = period.map(|p| p.to_string());
    let p = period.as_deref();
    let from = match args.from_validation {
        Some(id) => verdict_side(client, &args.dataset, p, id).await?,
        None => loaded_side(client, &args.dataset, p).await?,
    };
    let to = match args.to_validation {
        Some(id) => verdict_side(client, &args.dataset, p, id).await?,
        None => {
            let v = ledger::Verdict::latest(client, &args.dataset, p)
                .await?
                .ok_or_else(|| {
                    DiffError::Usage(format!("{} has no verdict to compare", args.dataset))
                })?;
            verdict_side(client, &args.dataset, p, v.validation_id).await?
        }
    };
    let diff = by_key(
        config,
        &args.dataset,
        ds,
        p,
        (from.version, to.version),
        args.limit,
    )
    .await
    .map_err(DiffError::Read)?;
    Ok(Report {
        dataset: args.dataset.clone(),
        period,
        from,
        to,
        diff,
    })
}

/// The rows stage holds: the Delta version the period's load in force copied.
async fn loaded_side(
    client: &tokio_postgres::Client,
    dataset: &str,
    period: Option<&str>,
) -> Result<Side, DiffError> {
    let loaded = ledger::Loaded::latest(client, dataset, period)
        .await?
        .ok_or_else(|| {
            DiffError::Usage(format!(
                "{dataset} {} was never loaded: name the old side with --from-validation",
                period.unwrap_or("(all)")
            ))
        })?;
    Ok(Side {
        load_id: Some(loaded.load_id),
        validation_id: loaded.validation_id,
        version: loaded.source_delta_version.ok_or_else(|| {
            DiffError::Usage(format!(
                "load {} of {dataset} copied a --parquet-path file, not the lake: name the old \
                 side with --from-validation",
                loaded.load_id
            ))
        })?,
    })
}

/// The cleaned rows verdict `id` of the period wrote.
async fn verdict_side(
    client: &tokio_postgres::Client,
    dataset: &str,
    period: Option<&str>,
    id: i64,
) -> Result<Side, DiffError> {
    let row = client
        .query_opt(
            "SELECT cleaned_version FROM meta.validation_log
              WHERE id = $1 AND dataset = $2 AND period IS NOT DISTINCT FROM $3
                AND status IN ('passed', 'failed')",
            &[&id, &dataset, &period],
        )
        .await?
        .ok_or_else(|| {
            DiffError::Usage(format!(
                "validation {id} is no finished validation of {dataset} {}",
                period.unwrap_or("(all)")
            ))
        })?;
    let version: Option<i64> = row.get(0);
    Ok(Side {
        validation_id: Some(id),
        load_id: None,
        version: version
            .ok_or_else(|| DiffError::Usage(format!("validation {id} wrote no rows")))?,
    })
}
