//! `pipeline trace`: from a model's rows back to the file lines they came
//! from. The model is computed for the period as transform computes it
//! (DataFusion over the lake), its rows filtered by `--where`; then, for each
//! stage table the model reads, the cleaned rows of the period — read from
//! the lake at the Delta version the period's load in force copied, where
//! each row keeps its file (`_ingestion_id`) and line (`_line`) — that feed
//! those rows: the rows whose columns the model copies (a GROUP BY key, a
//! join key, a selected column, through the models in between) equal a
//! matching row's. A stage table no result column is copied from feeds every
//! matching row with all its rows of the period, said as such. Counts are
//! exact; `--limit` caps the rows shown.

use crate::db::Pooled;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::ident;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_postgres::Client;

use super::lineage::{self, Usage};
use super::models;
use super::{TransformError, plan, register_stage, with_schemas};
use crate::config::Config;
use crate::stage_table::DATA_PERIOD;

/// The cleaned rows' line in their file (validate writes it; a contract of
/// the lake, data-schemas.md).
const LINE: &str = "_line";

/// What to trace.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: String,
    pub period: String,
    /// A condition on the model's columns, in SQL (`carrier = 'AA'`).
    pub filter: String,
    /// How many rows of each kind are shown (counts stay exact).
    pub limit: usize,
}

/// One stage row that fed the matching rows: where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub file: String,
    pub file_id: i64,
    /// Its line in the file (None: cleaned before lines were kept).
    pub line: Option<i64>,
    /// The values of the columns that link it to the model's rows.
    pub values: Map<String, Value>,
}

/// One stage table the model reads, and its rows that fed the matching ones.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub table: String,
    /// `model column ← stage column` pairs the rows are matched by; empty:
    /// every row of the period feeds the model.
    pub linked_by: Vec<String>,
    /// The verdict and load whose rows these are, and the Delta version read.
    pub validation_id: Option<i64>,
    pub load_id: Option<i64>,
    pub version: Option<i64>,
    /// How many of its rows fed them (exact).
    pub rows: u64,
    /// The first `--limit` of them.
    pub lines: Vec<Line>,
    /// Why it could not be traced, or how it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `pipeline trace` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub period: String,
    pub filter: String,
    /// How many of the model's rows match (exact).
    pub rows: u64,
    /// The first `--limit` of them.
    pub matched: Vec<Map<String, Value>>,
    pub sources: Vec<Source>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} {} where {}: {} row(s)\n",
            self.model, self.period, self.filter, self.rows
        );
        for r in &self.matched {
            out.push_str(&format!("  {}\n", Value::Object(r.clone())));
        }
        for s in &self.sources {
            let how = match s.linked_by.is_empty() {
                true => "every row of the period".to_owned(),
                false => format!("by {}", s.linked_by.join(", ")),
            };
            out.push_str(&format!("{} ({how}): {} row(s)", s.table, s.rows));
            if let (Some(v), Some(l)) = (s.validation_id, s.load_id) {
                out.push_str(&format!(", validation {v}, load {l}"));
            }
            out.push('\n');
            if let Some(note) = &s.note {
                out.push_str(&format!("  {note}\n"));
            }
            for l in &s.lines {
                let line = l.line.map_or("line ?".into(), |n| format!("line {n}"));
                out.push_str(&format!(
                    "  {} (file {}) {line}  {}\n",
                    l.file,
                    l.file_id,
                    Value::Object(l.values.clone())
                ));
            }
        }
        out
    }
}

/// Traces the model's rows matching `args.filter` back to file lines.
pub async fn run(config: &Config, args: &Request) -> Result<Report, TransformError> {
    let period = super::parse_period(config, &args.period)?;
    let all = models::discover(&super::sql_dir(config))?;
    let Some(i) = all
        .iter()
        .position(|m| m.target() == args.model || m.name == args.model)
    else {
        return Err(TransformError::Usage(format!(
            "no model `{}` (models: {})",
            args.model,
            all.iter()
                .map(|m| m.target())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let m = &all[i];
    let client = Arc::new(Pooled::own(crate::db::connect_as("pipeline trace").await?));
    let ctx = with_schemas(crate::context::session(config.limits.memory_bytes));
    register_stage(config, &ctx, &client, &all, &[i]).await?;
    let usage = |e: datafusion::error::DataFusionError| {
        TransformError::Usage(format!(
            "--where `{}`: {}",
            args.filter,
            crate::exit::one_line(&e)
        ))
    };
    let df = plan(&ctx, m, &period, models::periodic(&all, config, i))
        .await
        .map_err(|e| TransformError::Usage(super::model_error(m, &e)))?;
    let condition = df.parse_sql_expr(&args.filter).map_err(usage)?;
    let matched = df.filter(condition).map_err(usage)?;
    let rows = matched
        .clone()
        .count()
        .await
        .map_err(TransformError::Engine)? as u64;
    let shown = matched
        .clone()
        .limit(0, Some(args.limit))
        .map_err(TransformError::Engine)?;
    let shown = super::unit::json_rows(&shown.collect().await.map_err(TransformError::Engine)?)
        .map_err(TransformError::Usage)?;
    let lineage = lineage::run(config, Some(&m.target()), None).await?;
    let mut links = copied_links(&lineage, &m.target(), m);
    through_joins(&mut links, &lineage::equi_joins(matched.logical_plan()));
    let mut sources = Vec::new();
    for (table, links) in links {
        let source = trace_table(
            config,
            &client,
            &ctx,
            &matched,
            (&table, links),
            &period,
            args.limit,
        )
        .await?;
        sources.push(source);
    }
    Ok(Report {
        model: m.target(),
        period,
        filter: args.filter.clone(),
        rows,
        matched: shown,
        sources,
    })
}

/// Each stage table the model reads (through the models in between), with
/// the (model column, stage column) pairs copied all the way.
fn copied_links(
    lineage: &lineage::Report,
    target: &str,
    m: &models::Model,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let Some(ml) = lineage.models.iter().find(|x| x.model == target) else {
        return out;
    };
    for c in &ml.columns {
        for s in c.stage.iter().filter(|s| s.table.starts_with("stage.")) {
            out.entry(s.table.clone()).or_default();
            // A column copied from exactly one column of this table links them.
            let from_table = c.stage.iter().filter(|x| x.table == s.table).count();
            if s.usage == Usage::Copied && from_table == 1 && s.column != DATA_PERIOD {
                out.get_mut(&s.table)
                    .expect("inserted above")
                    .push((c.column.clone(), s.column.clone()));
            }
        }
    }
    // A stage table read only to filter or join still fed the rows.
    for s in ml.filters.iter().filter(|s| s.table.starts_with("stage.")) {
        out.entry(s.table.clone()).or_default();
    }
    for (schema, t) in &m.deps {
        if schema == "stage" {
            out.entry(format!("stage.{t}")).or_default();
        }
    }
    out
}

/// A stage table no result column is copied from, joined on a column equal
/// to one another table's copied column (`JOIN r ON r.code = c.code` with
/// `r.code` selected): linked by that column too.
fn through_joins(
    links: &mut BTreeMap<String, Vec<(String, String)>>,
    joins: &[(lineage::TableColumn, lineage::TableColumn)],
) {
    let direct = links.clone();
    for (table, mine) in links.iter_mut().filter(|(_, l)| l.is_empty()) {
        for (a, b) in joins {
            let (here, there) = match (&a.0 == table, &b.0 == table) {
                (true, false) => (a, b),
                (false, true) => (b, a),
                _ => continue,
            };
            let copied = direct.get(&there.0).into_iter().flatten();
            for (model_col, _) in copied.filter(|(_, s)| *s == there.1) {
                if !mine.iter().any(|(m, _)| m == model_col) {
                    mine.push((model_col.clone(), here.1.clone()));
                }
            }
        }
    }
}

/// One stage table's rows of the period that fed the matching model rows.
async fn trace_table(
    config: &Config,
    client: &Arc<Pooled>,
    ctx: &datafusion::execution::context::SessionContext,
    matched: &DataFrame,
    (table, links): (&str, Vec<(String, String)>),
    period: &str,
    limit: usize,
) -> Result<Source, TransformError> {
    let dataset = table.trim_start_matches("stage.");
    let ds = config.datasets.get(dataset);
    let periodic = ds.is_some_and(|d| d.period.has_period());
    let p = (periodic && !period.is_empty()).then_some(period);
    let mut source = Source {
        table: table.to_owned(),
        linked_by: links
            .iter()
            .map(|(m, s)| format!("{m} ← {table}.{s}"))
            .collect(),
        validation_id: None,
        load_id: None,
        version: None,
        rows: 0,
        lines: Vec::new(),
        note: None,
    };
    let loaded = crate::ledger::Loaded::latest(&***client, dataset, p)
        .await
        .map_err(|source| TransformError::Read {
            table: "meta.load_log".into(),
            source,
        })?;
    let Some(crate::ledger::Loaded {
        load_id: load,
        validation_id: validation,
        source_delta_version: version,
        ..
    }) = loaded
    else {
        source.note = Some("never loaded for this period".into());
        return Ok(source);
    };
    (source.load_id, source.validation_id, source.version) = (Some(load), validation, version);
    let Some(version) = version else {
        source.note = Some(format!(
            "load {load} copied a --parquet-path file: no file lines"
        ));
        return Ok(source);
    };
    let engine = |e: datafusion::error::DataFusionError| TransformError::Engine(e);
    let provider = crate::ledger::delta_location(config, "cleaned", dataset)
        .open_version(version)
        .await
        .map_err(|e| TransformError::Usage(format!("{table}: the lake at version {version}: {e}")))?
        .table_provider()
        .await
        .map_err(|e| TransformError::Usage(format!("{table}: {e}")))?;
    let mut lake = ctx.read_table(provider).map_err(engine)?;
    if let Some(p) = p {
        lake = lake.filter(col(DATA_PERIOD).eq(lit(p))).map_err(engine)?;
    }
    let fed = fed_rows(lake, matched, &links).map_err(engine)?;
    source.rows = fed.clone().count().await.map_err(engine)? as u64;
    source.lines = lines_of(client, fed, limit).await?;
    if links.is_empty() {
        source.note = Some(format!(
            "no column of the result is copied from {table}: every row of the period fed it"
        ));
    }
    Ok(source)
}

/// The lake rows that fed the matching rows (all of them when nothing links
/// the two): each with its file, line and linked columns.
fn fed_rows(
    lake: DataFrame,
    matched: &DataFrame,
    links: &[(String, String)],
) -> datafusion::error::Result<DataFrame> {
    let has_line = lake.schema().has_column_with_unqualified_name(LINE);
    let mut keep: Vec<Expr> = vec![ident("_ingestion_id")];
    keep.push(match has_line {
        true => ident(LINE),
        false => cast(
            lit(datafusion::scalar::ScalarValue::Null),
            datafusion::arrow::datatypes::DataType::Int64,
        )
        .alias(LINE),
    });
    keep.extend(links.iter().map(|(_, s)| ident(s.as_str())));
    if links.is_empty() {
        return lake.select(keep);
    }
    // The matching rows' linked values, each cast to the stage column's type.
    let lake_schema = lake.schema().clone();
    let keys: Vec<Expr> = (links.iter().enumerate())
        .map(|(k, (m, s))| {
            let ty = lake_schema
                .field_with_unqualified_name(s)?
                .data_type()
                .clone();
            Ok(cast(ident(m.as_str()), ty).alias(format!("__trace_{k}")))
        })
        .collect::<datafusion::error::Result<_>>()?;
    let wanted = matched.clone().select(keys)?.distinct()?;
    let on: Vec<Expr> = (links.iter().enumerate())
        .map(|(k, (_, s))| ident(s.as_str()).eq(ident(format!("__trace_{k}"))))
        .collect();
    lake.join_on(wanted, datafusion::common::JoinType::LeftSemi, on)?
        .select(keep)
}

/// The first `limit` fed rows, by file and line, with their file's name.
async fn lines_of(
    client: &Client,
    fed: DataFrame,
    limit: usize,
) -> Result<Vec<Line>, TransformError> {
    let engine = TransformError::Engine;
    let ordered = fed
        .sort(vec![
            ident("_ingestion_id").sort(true, true),
            ident(LINE).sort(true, true),
        ])
        .map_err(engine)?
        .limit(0, Some(limit))
        .map_err(engine)?;
    let batches = ordered.collect().await.map_err(engine)?;
    let rows = super::unit::json_rows(&batches).map_err(TransformError::Usage)?;
    let ids: Vec<i64> = (batches.iter())
        .flat_map(|b| {
            let a = b.column(0).as_primitive::<Int64Type>();
            a.iter().flatten().collect::<Vec<_>>()
        })
        .collect();
    let names = file_names(client, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            let file_id = (r.remove("_ingestion_id"))
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let line = r.remove(LINE).and_then(|v| v.as_i64());
            Line {
                file: names.get(&file_id).cloned().unwrap_or_default(),
                file_id,
                line,
                values: r,
            }
        })
        .collect())
}

/// meta.ingestion_log's file names of `ids`.
async fn file_names(client: &Client, ids: &[i64]) -> Result<BTreeMap<i64, String>, TransformError> {
    let rows = client
        .query(
            "SELECT id, file_name FROM meta.ingestion_log WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|source| TransformError::Read {
            table: "meta.ingestion_log".into(),
            source,
        })?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
