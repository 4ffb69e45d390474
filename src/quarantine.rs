//! `quarantine`: the rejected rows of a period, one line per error (its line in
//! the file, column, rule, value and message), read from the quarantine Delta
//! table at the version the period's latest verdict wrote. Analysts see why rows
//! were refused without a Delta reader.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{cast, col, lit};
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Config;
use crate::exit::Exit;
use crate::ledger::{self, Verdict};
use crate::logging::escape_controls;

/// Why the rows could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "{dataset} {period}: no finished validation yet; run `pipeline validate --dataset {dataset}{flag}` first"
    )]
    NotValidated {
        dataset: String,
        period: String,
        flag: String,
    },
    #[error("cannot read meta.validation_log")]
    Db(#[source] tokio_postgres::Error),
    #[error("cannot read the quarantine table {path}")]
    Read {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl QuarantineError {
    pub fn exit(&self) -> Exit {
        match self {
            QuarantineError::Usage(_) | QuarantineError::NotValidated { .. } => Exit::Usage,
            QuarantineError::Db(_) | QuarantineError::Read { .. } => Exit::Failure,
        }
    }
}

/// One error of one rejected row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejected {
    pub line: i64,
    /// The row's primary key (`id=17`), or its first column where the
    /// dataset has none, as delivered: the row's name once lines are gone.
    pub key: String,
    pub column: String,
    pub rule: String,
    pub value: Option<String>,
    pub message: String,
}

/// The errors shown, and how many there are in all.
#[derive(Debug, Serialize)]
pub struct Report {
    pub dataset: String,
    pub period: Option<String>,
    pub validation_id: i64,
    pub quarantine_version: Option<i64>,
    /// Rows the verdict quarantined.
    pub rows_rejected: i64,
    /// Errors matching `--rule` (a row may have several).
    pub errors: u64,
    pub rows: Vec<Rejected>,
    #[serde(skip)]
    format: Format,
}

/// Output styles of `quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, one error per line.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of the errors.
    Json,
}

/// Which rejected rows to show, and how.
#[derive(Debug, Clone)]
pub struct Request {
    pub dataset: String,
    pub period: Option<String>,
    /// Only errors of this rule.
    pub rule: Option<String>,
    /// At most this many errors.
    pub limit: usize,
    pub format: Format,
}

pub async fn run(
    config: &Config,
    client: &Client,
    args: &Request,
) -> Result<Report, QuarantineError> {
    let (ds, period) = crate::period::target(config, &args.dataset, args.period.as_deref())
        .map_err(QuarantineError::Usage)?;
    let period = period.map(|p| p.to_string());
    let verdict = Verdict::latest(client, &args.dataset, period.as_deref())
        .await
        .map_err(QuarantineError::Db)?
        .ok_or_else(|| QuarantineError::NotValidated {
            dataset: args.dataset.clone(),
            period: period.clone().unwrap_or_else(|| "(no period)".into()),
            flag: period
                .as_deref()
                .map(|p| format!(" --period {p}"))
                .unwrap_or_default(),
        })?;
    let mut report = Report {
        dataset: args.dataset.clone(),
        period: period.clone(),
        validation_id: verdict.validation_id,
        quarantine_version: verdict.quarantine_version,
        rows_rejected: verdict.rows_rejected,
        errors: 0,
        rows: Vec::new(),
        format: args.format,
    };
    let Some(version) = verdict.quarantine_version else {
        return Ok(report);
    };
    let location = ledger::delta_location(config, "quarantine", &args.dataset);
    let path = location.display.clone();
    let read = |source: Box<dyn std::error::Error + Send + Sync>| QuarantineError::Read {
        path: path.clone(),
        source,
    };
    let table = location.open_version(version).await.map_err(read)?;
    let ctx = crate::context::session(config.limits.memory_bytes);
    let period = period.filter(|_| ds.period.has_period());
    let errors = errors(&ctx, table, ds, period.as_deref(), args.rule.as_deref())
        .await
        .map_err(|e| read(Box::new(e)))?;
    report.errors = errors
        .clone()
        .count()
        .await
        .map_err(|e| read(Box::new(e)))? as u64;
    report.rows = first(errors, args.limit)
        .await
        .map_err(|e| read(Box::new(e)))?;
    Ok(report)
}

/// One row per error of the quarantine version's rows of `period`, only
/// `rule`'s when given.
async fn errors(
    ctx: &SessionContext,
    table: deltalake::DeltaTable,
    ds: &crate::config::Dataset,
    period: Option<&str>,
    rule: Option<&str>,
) -> Result<DataFrame, DataFusionError> {
    let provider = table
        .table_provider()
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let mut rows = ctx.read_table(provider)?;
    if let Some(p) = period {
        rows = rows.filter(col("_data_period").eq(lit(p)))?;
    }
    ctx.register_table("q", rows.into_view())?;
    let key = key_text(ds);
    let errors = ctx
        .sql(&format!(
            "SELECT _line AS line, key, e.column AS \"column\", e.rule AS rule, e.value AS value,
                    e.message AS message
               FROM (SELECT _line, {key} AS key, unnest(_errors) AS e FROM q)"
        ))
        .await?;
    match rule {
        Some(rule) => errors.filter(col("rule").eq(lit(rule))),
        None => Ok(errors),
    }
}

/// `id=17, day=2013-05-01`: the row's primary key as delivered (its raw text),
/// else its first column's.
fn key_text(ds: &crate::config::Dataset) -> String {
    let columns: Vec<&str> = match ds.primary_key.is_empty() {
        false => ds.primary_key.iter().map(String::as_str).collect(),
        true => ds.columns.keys().take(1).map(String::as_str).collect(),
    };
    let parts: Vec<String> = (columns.iter())
        .map(|c| {
            format!(
                "{} || coalesce(CAST({} AS VARCHAR), '(null)')",
                crate::db::quote_literal(&format!("{c}=")),
                crate::db::quote_ident(c)
            )
        })
        .collect();
    match parts.as_slice() {
        [] => "''".into(),
        _ => format!("concat_ws(', ', {})", parts.join(", ")),
    }
}

/// The first `limit` errors, in file order.
async fn first(errors: DataFrame, limit: usize) -> Result<Vec<Rejected>, DataFusionError> {
    let batches = errors
        .sort(vec![
            col("line").sort(true, true),
            col("column").sort(true, true),
        ])?
        .limit(0, Some(limit))?
        .select(vec![
            cast(col("line"), DataType::Int64).alias("line"),
            cast(col("key"), DataType::Utf8).alias("key"),
            cast(col("column"), DataType::Utf8).alias("column"),
            cast(col("rule"), DataType::Utf8).alias("rule"),
            cast(col("value"), DataType::Utf8).alias("value"),
            cast(col("message"), DataType::Utf8).alias("message"),
        ])?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for b in &batches {
        let line = b.column(0).as_primitive::<Int64Type>();
        let text = |i: usize| b.column(i).as_string::<i32>();
        let (key, column, rule, value, message) = (text(1), text(2), text(3), text(4), text(5));
        for r in 0..b.num_rows() {
            rows.push(Rejected {
                line: line.value(r),
                key: key.value(r).to_owned(),
                column: column.value(r).to_owned(),
                rule: rule.value(r).to_owned(),
                value: (!value.is_null(r)).then(|| value.value(r).to_owned()),
                message: message.value(r).to_owned(),
            });
        }
    }
    Ok(rows)
}

/// Keeps a cell on one line and at most `width` characters.
fn cell(text: &str, width: usize) -> String {
    let text = escape_controls(text);
    if text.chars().count() <= width {
        return text;
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Report {
    /// The rows in the format asked for (`--format`), for people and pipes.
    pub fn render(&self) -> String {
        match self.format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
            Format::Json => {
                let mut text = serde_json::to_string(&self.rows).expect("rows serialise");
                text.push('\n');
                text
            }
        }
    }

    fn table(&self) -> String {
        let header = ["LINE", "KEY", "COLUMN", "RULE", "VALUE", "MESSAGE"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.line.to_string(),
                    cell(&r.key, 30),
                    cell(&r.column, 30),
                    r.rule.clone(),
                    r.value.as_deref().map_or("(null)".into(), |v| cell(v, 40)),
                    cell(&r.message, 60),
                ]
            })
            .collect();
        let mut table = crate::table::Table::new(&header, &[0]);
        for c in cells {
            table.row(c.to_vec());
        }
        let mut out = table.render();
        let period = self.period.as_deref().unwrap_or("(no period)");
        out.push_str(&format!(
            "{} of {} error(s) shown; {} row(s) of {} {period} quarantined by validation {}\n",
            self.rows.len(),
            self.errors,
            self.rows_rejected,
            self.dataset,
            self.validation_id
        ));
        out
    }

    fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(["line", "key", "column", "rule", "value", "message"])
            .expect("writing to memory");
        for r in &self.rows {
            writer
                .write_record([
                    r.line.to_string().as_str(),
                    &spreadsheet_safe(&r.key),
                    &r.column,
                    &r.rule,
                    &spreadsheet_safe(r.value.as_deref().unwrap_or("")),
                    &spreadsheet_safe(&r.message),
                ])
                .expect("writing to memory");
        }
        String::from_utf8(writer.into_inner().expect("flushed to memory")).expect("UTF-8 input")
    }
}

/// A CSV cell a spreadsheet will not run: text starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return gets a leading `'` (OWASP's rule against
/// formula injection), unless it is a plain number such as `-12.50`.
fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && text.parse::<f64>().is_err() {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
        for (raw, safe) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("-12.50", "-12.50"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(spreadsheet_safe(raw), safe);
        }
        let mut r = report(Format::Csv);
        r.rows[0].value = Some("=HYPERLINK(\"http://x\")".into());
        assert!(
            r.render().contains("\"'=HYPERLINK(\"\"http://x\"\")\""),
            "{}",
            r.render()
        );
    }

    fn report(format: Format) -> Report {
        Report {
            dataset: "citizens".into(),
            period: Some("2025-06".into()),
            validation_id: 7,
            quarantine_version: Some(3),
            rows_rejected: 2,
            errors: 3,
            rows: vec![
                Rejected {
                    line: 4,
                    key: "citizen_id=17".into(),
                    column: "email".into(),
                    rule: "regex".into(),
                    value: Some("a,b\nc".into()),
                    message: "does not match".into(),
                },
                Rejected {
                    line: 12,
                    key: "citizen_id=(null)".into(),
                    column: "amount".into(),
                    rule: "required".into(),
                    value: None,
                    message: "a value is required".into(),
                },
            ],
            format,
        }
    }

    #[test]
    fn table_keeps_each_error_on_one_line_and_says_how_many_are_left() {
        let text = report(Format::Table).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].starts_with("   4  citizen_id=17      email   regex     a,b\\nc"),
            "{text}"
        );
        assert!(lines[2].contains("(null)"), "{text}");
        assert!(lines[3].starts_with("2 of 3 error(s) shown"), "{text}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let text = report(Format::Csv).render();
        assert_eq!(
            text,
            "line,key,column,rule,value,message\n4,citizen_id=17,email,regex,\"a,b\nc\",does not match\n12,citizen_id=(null),amount,required,,a value is required\n"
        );
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("abc", 4), "abc");
    }
}
