//! `datasets_config.yml`: parsed into typed structs, then checked as a whole.
//!
//! [`Config::load`] is the only way in: it returns a value whose patterns compile,
//! whose rules fit their column types and whose names are safe SQL identifiers, or a
//! [`ConfigError`] listing every problem with its dataset, column, key and line.

mod engine;
mod overlap;
mod rules;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use indexmap::IndexMap;
use regex::Regex;
use serde::Deserialize;

pub use engine::Engine;
pub use rules::{ColumnRule, Rules};

/// Columns the pipeline adds to stage tables; a dataset may not declare them.
pub const RESERVED_COLUMNS: &[&str] = &["_data_period", "_ingestion_id", "_loaded_at"];

/// Columns of the quarantine table and of validate's plans: a declared column
/// of one of these names would collide with them.
const INTERNAL_COLUMNS: &[&str] = &[
    "_errors",
    "_line",
    "_source_file",
    "_shape",
    "_row",
    "_row_hash",
    "_pk",
    "_skip",
];

/// PostgreSQL's system columns, which no table may declare.
const SYSTEM_COLUMNS: &[&str] = &["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid"];

/// Why `name` cannot be a declared column, if it cannot.
fn reserved_column(name: &str) -> Option<String> {
    if RESERVED_COLUMNS.contains(&name) {
        return Some(format!(
            "`{name}` is reserved for the pipeline's lineage columns ({})",
            RESERVED_COLUMNS.join(", ")
        ));
    }
    if INTERNAL_COLUMNS.contains(&name) || name.starts_with("__") {
        return Some(format!(
            "`{name}` is reserved: the quarantine table and validate use it ({}, and every name \
             starting with __); rename the column",
            INTERNAL_COLUMNS.join(", ")
        ));
    }
    if SYSTEM_COLUMNS.contains(&name) {
        return Some(format!(
            "`{name}` is a PostgreSQL system column ({}): no table may declare it; rename the column",
            SYSTEM_COLUMNS.join(", ")
        ));
    }
    None
}

/// Names of datasets, columns and models: safe to quote into SQL as identifiers.
pub fn is_sql_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file; only `1` exists.
    pub version: u32,
    /// Where files land: a local folder or `s3://bucket/prefix`.
    pub landed_dir: String,
    /// Where the cleaned/ and quarantine/ Delta tables live.
    pub stage_dir: String,
    /// Datasets by name, in the order they are declared.
    pub datasets: IndexMap<String, Dataset>,
    /// Safety limits on landed files.
    #[serde(default)]
    pub limits: Limits,
    /// Where alerts go and when (none by default).
    #[serde(default)]
    pub alerts: Option<Alerts>,
    /// Where validate's and transform's plans run: `in-process` (the default)
    /// or `ballista://host:port`; `--engine` overrides it.
    #[serde(default)]
    pub engine: Engine,
    /// Folder that relative `landed_dir` and `stage_dir` are resolved against: the
    /// config file's folder, so cron jobs work from any working directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Safety limits on landed files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// An XLSX file whose entries decompress to more bytes than this is rejected
    /// without being opened (zip bombs).
    pub xlsx_max_uncompressed_bytes: u64,
    /// A CSV or JSONL header (first record) longer than this is rejected.
    pub header_max_bytes: u64,
    /// Memory DataFusion's operators may hold before they spill to disk.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            xlsx_max_uncompressed_bytes: 1 << 30,
            header_max_bytes: 1 << 20,
            memory_bytes: 256 << 20,
        }
    }
}

/// One dataset: how its files are recognised and what its rows must look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Free text shown in reports.
    #[serde(default)]
    pub description: Option<String>,
    /// The agency (data provider) in reporting.monitoring_file; `default` when absent.
    #[serde(default)]
    pub agency_slug: Option<String>,
    /// Regex over the landed file's name; a named group `period` carries the period.
    pub file_pattern: String,
    /// Granularity of the period in the file name, or `none` for full-refresh data.
    pub period: PeriodKind,
    /// File format; when absent it is taken from the file's extension.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// How the file's header is compared with the declared columns.
    #[serde(default)]
    pub headers: HeaderMode,
    /// CSV field delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// CSV quote character (one ASCII character).
    #[serde(default = "default_quote")]
    pub quote: char,
    /// XLSX sheet to read; the first sheet when absent.
    #[serde(default)]
    pub sheet: Option<String>,
    /// Columns whose combination identifies a row; duplicates are quarantined.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// load-stage refuses a period whose validation scored lower than this.
    #[serde(default = "default_min_quality_score")]
    pub min_quality_score: u8,
    /// load-stage refuses a replace that would shrink the period's stage rows by
    /// more than this fraction (0.5: to less than half).
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// load-stage refuses a period whose file had more than this fraction of its
    /// rows rejected (none by default: the score decides).
    #[serde(default)]
    pub max_rejected_ratio: Option<f64>,
    /// Row-level incremental intake: each acquisition folder holds a snapshot
    /// of the table, and only rows whose primary key was not processed on an
    /// earlier night are validated (see [`Incremental`]).
    #[serde(default)]
    pub incremental: Option<Incremental>,
    /// load-stage compares each new period with the loaded periods before it
    /// (see [`Drift`]); none by default.
    #[serde(default)]
    pub drift: Option<Drift>,
    /// Declared columns, in stage-table order.
    pub columns: IndexMap<String, Column>,
    /// `file_pattern`, compiled once the config is checked.
    #[serde(skip)]
    compiled: Option<Regex>,
}

fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}
fn default_min_quality_score() -> u8 {
    80
}
fn default_max_shrink() -> f64 {
    0.5
}

/// `drift:` on a dataset: a gate at load-stage comparing the period with the
/// loaded periods before it, from what their verdicts counted (no second
/// pass over the data).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// How many earlier loaded periods make the window (fewer than 3 loaded:
    /// the gate says so and passes).
    #[serde(default = "default_drift_window")]
    pub window: usize,
    /// Refuse when the period's rows differ from the window's median by more
    /// than this fraction.
    #[serde(default)]
    pub row_count: Option<f64>,
    /// Refuse when a column's share of missing values exceeds the window's
    /// highest by more than this many points (a fraction: 0.05 is 5 points).
    #[serde(default)]
    pub null_share: Option<f64>,
    /// Refuse a re-delivery that changes or removes more than this fraction
    /// of the keys the period's load in force wrote (compared by primary key).
    #[serde(default)]
    pub changed_keys: Option<f64>,
    /// `error`: refused like the other gates (exit 3, `--force` recorded);
    /// `warn`: loaded, and the drift logged and kept with the load.
    #[serde(default)]
    pub severity: DriftSeverity,
}

fn default_drift_window() -> usize {
    6
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DriftSeverity {
    #[default]
    Error,
    Warn,
}

/// `incremental:` on a dataset: the period is the acquisition date (the
/// `YYYY-MM-DD/` folder the snapshot sits in), rows are told apart by
/// `primary_key`, and `meta.processed_keys` records every key validated.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// What a row whose key was processed before but whose values changed means.
    #[serde(default)]
    pub changed_rows: ChangedRows,
}

/// What to do with a known key delivered with other values.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangedRows {
    /// Skip it like an unchanged row: a key is validated once (the seed's rule).
    #[default]
    Ignore,
    /// Validate it again and append it in the night's period: stage keeps each
    /// version, the newest in the latest period.
    Append,
}

/// Period granularity of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// `YYYY-MM`
    Month,
    /// `YYYY-MM-DD`
    Day,
    /// `YYYY-MM-DDTHH`
    Hour,
    /// No period: each load replaces the whole table.
    None,
}

impl PeriodKind {
    pub fn has_period(self) -> bool {
        self != PeriodKind::None
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeriodKind::Month => "month",
            PeriodKind::Day => "day",
            PeriodKind::Hour => "hour",
            PeriodKind::None => "none",
        })
    }
}

/// Landed file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Parquet,
    Xlsx,
}

/// How the header is compared with the declared columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMode {
    /// Exactly the declared columns, in order.
    #[default]
    Strict,
    /// Every declared column present; extra columns are dropped.
    Subset,
}

/// One declared column: its type and the rules its values must satisfy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// `int`, `float`, `decimal(p,s)`, `string`, `bool`, `date` or `timestamp`.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Null, empty and whitespace-only values are errors.
    #[serde(default)]
    pub required: bool,
    /// Every row of a value that occurs more than once is quarantined.
    #[serde(default)]
    pub unique: bool,
    /// The value (as text) must match this regex (string columns).
    #[serde(default)]
    pub regex: Option<String>,
    /// Lowest allowed value (numbers; dates and timestamps as text).
    #[serde(default)]
    pub min: Option<Bound>,
    /// Highest allowed value (numbers; dates and timestamps as text).
    #[serde(default)]
    pub max: Option<Bound>,
    /// The value must be one of these.
    #[serde(default)]
    pub allowed: Option<Vec<Scalar>>,
    /// chrono format of date and timestamp values, e.g. `%Y-%m-%d`.
    #[serde(default)]
    pub format: Option<String>,
}

/// Column types and their PostgreSQL counterparts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ColumnType {
    Int,
    Float,
    Decimal { precision: u8, scale: u8 },
    String,
    Bool,
    Date,
    Timestamp,
}

impl ColumnType {
    /// The PostgreSQL type, spelled as `information_schema` formats it back.
    pub fn sql_type(self) -> String {
        match self {
            ColumnType::Int => "bigint".into(),
            ColumnType::Float => "double precision".into(),
            ColumnType::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            ColumnType::String => "text".into(),
            ColumnType::Bool => "boolean".into(),
            ColumnType::Date => "date".into(),
            ColumnType::Timestamp => "timestamp without time zone".into(),
        }
    }

    fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int | ColumnType::Float | ColumnType::Decimal { .. }
        )
    }

    fn is_temporal(self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Int => f.write_str("int"),
            ColumnType::Float => f.write_str("float"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::String => f.write_str("string"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
        }
    }
}

impl TryFrom<String> for ColumnType {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        Ok(match t {
            "int" => ColumnType::Int,
            "float" => ColumnType::Float,
            "string" => ColumnType::String,
            "bool" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => return parse_decimal(t),
        })
    }
}

fn parse_decimal(t: &str) -> Result<ColumnType, String> {
    let unknown = || {
        format!(
            "unknown type `{t}` (expected int, float, decimal(p,s), string, bool, date or timestamp)"
        )
    };
    if t.starts_with("decimal(") && !t.ends_with(')') {
        return Err(format!(
            "type `{t}` looks cut at a comma: write it quoted, `type: 'decimal(10,2)'`"
        ));
    }
    let inner = t
        .strip_prefix("decimal(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(unknown)?;
    let (p, s) = inner.split_once(',').ok_or_else(unknown)?;
    let precision: u8 = p.trim().parse().map_err(|_| unknown())?;
    let scale: u8 = s.trim().parse().map_err(|_| unknown())?;
    // Arrow's Decimal128 holds at most 38 digits; PostgreSQL wants scale <= precision.
    if !(1..=38).contains(&precision) || scale > precision {
        return Err(format!(
            "type `{t}`: decimal needs 1 <= precision <= 38 and 0 <= scale <= precision"
        ));
    }
    Ok(ColumnType::Decimal { precision, scale })
}

/// A `min`/`max` bound: a number, or text for dates, timestamps and decimals.
///
/// A whole number is kept as an integer (exact to 2^63), so an int bound is
/// compared exactly; a number with a fraction is what YAML gives, a float,
/// and one with more significant digits than a float holds is refused (it
/// must be quoted to mean what it says, see [`Column::bound_problem`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    Int(i64),
    Number(f64),
    Text(String),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Int(i) => write!(f, "{i}"),
            Bound::Number(x) => write!(f, "{x}"),
            Bound::Text(t) => f.write_str(t),
        }
    }
}

/// One value of an `allowed` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => write!(f, "'{s}'"),
        }
    }
}

/// One thing wrong with the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: Option<usize>,
    pub dataset: Option<String>,
    pub column: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(d) = &self.dataset {
            write!(f, "dataset `{d}`: ")?;
        }
        if let Some(c) = &self.column {
            write!(f, "column `{c}`: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "`{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config file {}: {source} (run from the project folder, or pass --config PATH or set PIPELINE_CONFIG)",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config file {} has {} problem(s):\n{}", path.display(), problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_yaml(&text).map_err(|e| e.at(path))?;
        config.base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(config)
    }

    /// `landed_dir` or `stage_dir` as given when absolute or an `s3://` URL,
    /// otherwise resolved against the config file's folder.
    pub fn resolve(&self, dir: &str) -> String {
        if dir.contains("://") || Path::new(dir).is_absolute() {
            dir.to_owned()
        } else {
            self.base_dir.join(dir).to_string_lossy().into_owned()
        }
    }

    /// Parses and checks configuration text (`path` in errors is left empty).
    ///
    /// Every problem found is reported at once: keys written twice, then what
    /// serde refuses, then the checks of the parsed whole.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let text = text::quote_flow_decimals(text);
        let text = text.as_ref();
        let mut problems = text::duplicate_keys(text);
        let mut config: Config = match serde_yaml::from_str(text) {
            Ok(config) => config,
            Err(source) => {
                if let Some(problem) = explain_parse_error(&source) {
                    problems.push(problem);
                } else if problems.is_empty() {
                    return Err(ConfigError::Parse {
                        path: PathBuf::new(),
                        source,
                    });
                }
                return Err(ConfigError::Invalid {
                    path: PathBuf::new(),
                    problems,
                });
            }
        };
        problems.extend(config.check(&Lines::new(text)));
        if problems.is_empty() {
            for ds in config.datasets.values_mut() {
                ds.compiled = Regex::new(&ds.file_pattern).ok();
            }
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: PathBuf::new(),
                problems,
            })
        }
    }

    /// The dataset called `name`, if the config declares one.
    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.get(name)
    }

    /// The dataset a command names, or a message listing the known ones.
    pub fn require_dataset(&self, name: &str) -> Result<&Dataset, String> {
        self.datasets.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.datasets.keys().map(String::as_str).collect();
            format!("unknown dataset `{name}` (known: {})", known.join(", "))
        })
    }

    /// The folders and limits: where files are read and written, and how much.
    fn check_places(&self, lines: &Lines) -> Vec<Problem> {
        let mut problems = Vec::new();
        let top = |key: &str, message: String| Problem {
            line: lines.find(&[key]),
            dataset: None,
            column: None,
            key: Some(key.to_owned()),
            message,
        };
        if self.landed_dir.trim().is_empty() {
            problems.push(top("landed_dir", "must not be empty".into()));
        }
        if self.stage_dir.trim().is_empty() {
            problems.push(top("stage_dir", "must not be empty".into()));
        }
        for (key, dir) in [
            ("landed_dir", &self.landed_dir),
            ("stage_dir", &self.stage_dir),
        ] {
            if let Some((scheme, _)) = dir.split_once("://")
                && !matches!(scheme, "s3" | "file")
            {
                problems.push(top(
                    key,
                    format!("`{dir}`: only local paths, file:// and s3:// are supported"),
                ));
            }
        }
        for (key, dir) in [
            ("landed_dir", &self.landed_dir),
            ("stage_dir", &self.stage_dir),
        ] {
            if let Some(rest) = dir.strip_prefix("s3://")
                && rest.split('/').next().is_none_or(str::is_empty)
            {
                let msg = format!("`{dir}` names no bucket (write s3://bucket/prefix)");
                problems.push(top(key, msg));
            }
        }
        for (key, value) in [
            (
                "xlsx_max_uncompressed_bytes",
                self.limits.xlsx_max_uncompressed_bytes,
            ),
            ("header_max_bytes", self.limits.header_max_bytes),
            ("memory_bytes", self.limits.memory_bytes as u64),
        ] {
            if value == 0 {
                let msg = "must be above 0: no file could be read".to_owned();
                problems.push(Problem {
                    line: lines.find(&["limits", key]),
                    dataset: None,
                    column: None,
                    key: Some(format!("limits.{key}")),
                    message: msg,
                });
            }
        }
        problems
    }

    fn check(&self, lines: &Lines) -> Vec<Problem> {
        let mut problems = Vec::new();
        let top = |key: &str, message: String| Problem {
            line: lines.find(&[key]),
            dataset: None,
            column: None,
            key: Some(key.to_owned()),
            message,
        };
        if self.version != 1 {
            problems.push(top(
                "version",
                format!("unsupported version {} (only 1 exists)", self.version),
            ));
        }
        problems.extend(self.check_places(lines));
        if self.datasets.is_empty() {
            problems.push(top("datasets", "declares no dataset".into()));
        }
        if let Some(alerts) = &self.alerts {
            problems.extend(alerts.check(|path| lines.find(path)));
        }
        let mut patterns = Vec::new();
        for (name, ds) in &self.datasets {
            let mut at = DatasetProblems {
                lines,
                dataset: name,
                problems: &mut problems,
            };
            if let Some(re) = ds.check(&mut at) {
                patterns.push((name.as_str(), ds.file_pattern.as_str(), re));
            }
        }
        let sources: Vec<&str> = patterns.iter().map(|(_, p, _)| *p).collect();
        for (i, j, witness) in overlap::overlaps(&sources) {
            let (a, b) = (patterns[i].0, patterns[j].0);
            problems.push(Problem {
                line: lines.find(&["datasets", b, "file_pattern"]),
                dataset: Some(b.to_owned()),
                column: None,
                key: Some("file_pattern".into()),
                message: format!(
                    "overlaps dataset `{a}`: both patterns match the file name `{witness}`; \
                     make the patterns exclusive so every file belongs to one dataset"
                ),
            });
        }
        problems
    }
}

/// Collects problems for one dataset, locating each by its YAML path.
struct DatasetProblems<'a> {
    lines: &'a Lines<'a>,
    dataset: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl DatasetProblems<'_> {
    fn dataset(&mut self, key: &str, message: impl Into<String>) {
        let line = self
            .lines
            .find(&["datasets", self.dataset, key])
            .or_else(|| self.lines.find(&["datasets", self.dataset]));
        self.problems.push(Problem {
            line,
            dataset: Some(self.dataset.to_owned()),
            column: None,
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }

    fn column(&mut self, column: &str, key: Option<&str>, message: impl Into<String>) {
        let path = ["datasets", self.dataset, "columns", column];
        let line = key
            .and_then(|k| self.lines.find_inline(&path, k))
            .or_else(|| self.lines.find(&path));
        self.problems.push(Problem {
            line,
            dataset: Some(self.dataset.to_owned()),
            column: Some(column.to_owned()),
            key: key.map(str::to_owned),
            message: message.into(),
        });
    }
}

impl Dataset {
    /// The agency in reporting.monitoring_file and in monitoring-layout keys.
    pub fn agency(&self) -> &str {
        self.agency_slug.as_deref().unwrap_or("default")
    }

    /// The dataset's declared format, or the one the file's extension names.
    pub fn format_for(&self, name: &str) -> Option<FileFormat> {
        if self.format.is_some() {
            return self.format;
        }
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" | "tsv" => Some(FileFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(FileFormat::Jsonl),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "xlsx" => Some(FileFormat::Xlsx),
            _ => None,
        }
    }

    /// The compiled `file_pattern`.
    pub fn pattern(&self) -> &Regex {
        self.compiled
            .as_ref()
            .expect("Config::from_yaml compiles every checked pattern")
    }

    /// Checks this dataset; returns its compiled pattern when that part is sound.
    fn check(&self, at: &mut DatasetProblems) -> Option<Regex> {
        if !is_sql_identifier(at.dataset) {
            let name = at.dataset.to_owned();
            at.dataset(
                "name",
                format!("`{name}` is not a valid name: use lower-case letters, digits and _ (at most 63, not starting with a digit)"),
            );
        }
        let pattern = self.check_pattern(at);
        self.check_reader(at);
        self.check_thresholds(at);
        if self.columns.is_empty() {
            at.dataset("columns", "declares no column");
        }
        for (name, column) in &self.columns {
            column.check(name, at);
        }
        self.check_keys(at);
        pattern
    }

    /// `file_pattern`: a regex, with a `period` group exactly when the period
    /// comes from the name.
    fn check_pattern(&self, at: &mut DatasetProblems) -> Option<Regex> {
        let re = match Regex::new(&self.file_pattern) {
            Ok(re) => re,
            Err(e) => {
                let problem = format!("`{}` is not a valid regex: {e}", self.file_pattern);
                at.dataset("file_pattern", problem);
                return None;
            }
        };
        let has_period = re.capture_names().flatten().any(|n| n == "period");
        // An incremental dataset's period is its acquisition folder.
        let named = self.period.has_period() && self.incremental.is_none();
        let problem = match (named, has_period) {
            (true, false) => format!(
                "pattern `{}` has no named group `period` (write it as (?P<period>...)), \
                 which `period: {}` needs",
                self.file_pattern, self.period
            ),
            (false, true) if self.incremental.is_some() => format!(
                "pattern `{}` has a `period` group, but an incremental dataset's period is its acquisition folder (YYYY-MM-DD/); drop the group",
                self.file_pattern
            ),
            (false, true) => format!(
                "pattern `{}` has a `period` group but the dataset has `period: none`",
                self.file_pattern
            ),
            _ => return Some(re),
        };
        at.dataset("file_pattern", problem);
        Some(re)
    }

    /// The CSV reader's `delimiter` and `quote`.
    fn check_reader(&self, at: &mut DatasetProblems) {
        for (key, c) in [("delimiter", self.delimiter), ("quote", self.quote)] {
            if !c.is_ascii() || c == '\n' || c == '\r' {
                at.dataset(
                    key,
                    format!("{c:?} must be one ASCII character other than a newline"),
                );
            }
        }
        if self.delimiter == self.quote {
            at.dataset("quote", "must differ from the delimiter");
        }
    }

    /// The gates' thresholds: a score and two fractions.
    fn check_thresholds(&self, at: &mut DatasetProblems) {
        if self.min_quality_score > 100 {
            at.dataset(
                "min_quality_score",
                format!("{} is outside 0..=100", self.min_quality_score),
            );
        }
        for (key, value) in [
            ("max_shrink", Some(self.max_shrink)),
            ("max_rejected_ratio", self.max_rejected_ratio),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                at.dataset(key, format!("{v} is outside 0..=1 (a fraction)"));
            }
        }
        if let Some(d) = &self.drift {
            if d.window == 0 {
                at.dataset("drift", "window must be at least 1 earlier period");
            }
            if d.row_count.is_none() && d.null_share.is_none() && d.changed_keys.is_none() {
                at.dataset(
                    "drift",
                    "names no measure: give row_count, null_share, changed_keys or several",
                );
            }
            if let Some(v) = d.changed_keys {
                if !(0.0..=1.0).contains(&v) {
                    at.dataset(
                        "drift",
                        format!("changed_keys {v} is outside 0..=1 (a fraction)"),
                    );
                }
                if self.primary_key.is_empty() {
                    at.dataset(
                        "drift",
                        "changed_keys compares keys: the dataset has no primary_key",
                    );
                }
            }
            if let Some(v) = d.row_count
                && !(v > 0.0 && v.is_finite())
            {
                at.dataset("drift", format!("row_count {v} must be a fraction above 0"));
            }
            if let Some(v) = d.null_share
                && !(0.0..=1.0).contains(&v)
            {
                at.dataset(
                    "drift",
                    format!("null_share {v} is outside 0..=1 (a fraction)"),
                );
            }
            if !self.period.has_period() {
                at.dataset("drift", "compares periods: the dataset has `period: none`");
            }
        }
    }

    /// `primary_key` names declared columns once each; `incremental` needs one
    /// and `period: day`.
    fn check_keys(&self, at: &mut DatasetProblems) {
        if self.incremental.is_some() {
            if self.primary_key.is_empty() {
                at.dataset(
                    "incremental",
                    "an incremental dataset needs `primary_key`: it tells processed rows from new ones",
                );
            }
            if self.period != PeriodKind::Day {
                at.dataset(
                    "incremental",
                    format!(
                        "an incremental dataset needs `period: day` (its period is the acquisition date), not `period: {}`",
                        self.period
                    ),
                );
            }
        }
        let mut seen = Vec::new();
        for key in &self.primary_key {
            if !self.columns.contains_key(key) {
                at.dataset("primary_key", format!("`{key}` is not a declared column"));
            }
            if seen.contains(&key) {
                at.dataset("primary_key", format!("`{key}` is listed twice"));
            }
            seen.push(key);
        }
    }
}

impl Column {
    fn check(&self, name: &str, at: &mut DatasetProblems) {
        if !is_sql_identifier(name) {
            at.column(
                name,
                None,
                "not a valid column name: use lower-case letters, digits and _ (at most 63, not starting with a digit)",
            );
        }
        if let Some(why) = reserved_column(name) {
            at.column(name, None, why);
        }
        let ty = self.ty;
        if let Some(regex) = &self.regex {
            if ty != ColumnType::String {
                at.column(
                    name,
                    Some("regex"),
                    format!("regex applies to string columns, not {ty}"),
                );
            } else if let Err(e) = Regex::new(regex) {
                at.column(
                    name,
                    Some("regex"),
                    format!("`{regex}` is not a valid regex: {e}"),
                );
            }
        }
        match (&self.format, ty.is_temporal()) {
            (Some(f), true) => {
                if let Some(msg) = chrono_format_problem(ty, f) {
                    at.column(name, Some("format"), msg);
                }
            }
            (Some(_), false) => at.column(
                name,
                Some("format"),
                format!("format applies to date and timestamp columns, not {ty}"),
            ),
            _ => {}
        }
        self.check_bounds(name, at);
        if let Some(values) = &self.allowed {
            if values.is_empty() {
                at.column(
                    name,
                    Some("allowed"),
                    "the list is empty, so no value could pass",
                );
            }
            for v in values {
                if let Some(msg) = allowed_problem(ty, v) {
                    at.column(name, Some("allowed"), msg);
                }
            }
            if let Some(msg) = self.allowed_outside_bounds() {
                at.column(name, Some("allowed"), msg);
            }
        }
    }

    /// `min` and `max`: each fits the column's type, and they leave room.
    fn check_bounds(&self, name: &str, at: &mut DatasetProblems) {
        let ty = self.ty;
        for (key, bound) in [("min", &self.min), ("max", &self.max)] {
            let Some(bound) = bound else { continue };
            if let Some(msg) = self.bound_problem(key, bound) {
                at.column(name, Some(key), msg);
            }
        }
        match (&self.min, &self.max) {
            (Some(Bound::Int(lo)), Some(Bound::Int(hi))) if lo > hi => {
                at.column(name, Some("max"), format!("max {hi} is below min {lo}"));
            }
            (Some(lo), Some(hi))
                if ty.is_numeric()
                    && !matches!((lo, hi), (Bound::Int(_), Bound::Int(_)))
                    && matches!((lo.approx(), hi.approx()), (Some(a), Some(b)) if a > b) =>
            {
                at.column(name, Some("max"), format!("max {hi} is below min {lo}"));
            }
            (Some(Bound::Text(lo)), Some(Bound::Text(hi))) if ty.is_temporal() => {
                let f = self.format.as_deref();
                if let (Ok(a), Ok(b)) = (parse_temporal(ty, f, lo), parse_temporal(ty, f, hi))
                    && a > b
                {
                    let msg = format!("max `{hi}` is before min `{lo}`: no value could pass");
                    at.column(name, Some("max"), msg);
                }
            }
            _ => {}
        }
    }

    fn bound_problem(&self, key: &str, bound: &Bound) -> Option<String> {
        let ty = self.ty;
        match (ty, bound) {
            (ColumnType::String | ColumnType::Bool, _) => Some(format!(
                "{key} applies to numbers, dates and timestamps, not {ty}"
            )),
            (_, Bound::Number(x)) if ty.is_numeric() && !x.is_finite() => {
                Some(format!("{key} must be a finite number"))
            }
            (ColumnType::Int, Bound::Number(x)) if x.fract() == 0.0 && x.abs() >= 2f64.powi(63) => {
                Some(format!(
                    "{key} {x} is beyond a 64-bit integer (-9223372036854775808 to 9223372036854775807)"
                ))
            }
            (ColumnType::Int | ColumnType::Decimal { .. }, Bound::Number(x))
                if significant_digits(&x.to_string()) > 15 =>
            {
                Some(format!(
                    "{key} {x} has more digits than a YAML number holds exactly; \
                     quote it ({key}: '...') so it is compared as written"
                ))
            }
            (ColumnType::Int | ColumnType::Float, Bound::Int(_) | Bound::Number(_)) => None,
            (ColumnType::Decimal { precision, scale }, b) => {
                decimal_fit(&b.to_string(), precision, scale).map(|e| format!("{key} `{b}` {e}"))
            }
            (_, Bound::Text(t)) if ty.is_numeric() => {
                Some(format!("{key} `{t}` must be a number for a {ty} column"))
            }
            (_, Bound::Int(_) | Bound::Number(_)) => Some(format!(
                "{key} {bound} must be a quoted {ty} for a {ty} column, e.g. '2020-01-31'"
            )),
            (_, Bound::Text(t)) => parse_temporal(ty, self.format.as_deref(), t)
                .map(drop)
                .err()
                .map(|e| format!("{key} `{t}` is not a {ty}: {e}")),
        }
    }

    /// `allowed` values of a number column that no `min`/`max` lets through:
    /// a list that lies entirely outside the bounds can never pass.
    fn allowed_outside_bounds(&self) -> Option<String> {
        let values = self.allowed.as_ref()?;
        let lo = self.min.as_ref().and_then(Bound::approx);
        let hi = self.max.as_ref().and_then(Bound::approx);
        if values.is_empty() || !self.ty.is_numeric() || (lo.is_none() && hi.is_none()) {
            return None;
        }
        let inside = |v: f64| lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi);
        let numbers: Vec<f64> = values
            .iter()
            .filter_map(|v| match v {
                Scalar::Int(i) => Some(*i as f64),
                Scalar::Float(x) => Some(*x),
                _ => None,
            })
            .collect();
        (numbers.len() == values.len() && !numbers.into_iter().any(inside))
            .then(|| "every allowed value is outside min/max, so no value could pass".into())
    }
}

impl Bound {
    /// The bound as a float, to order two bounds (not to compare values by).
    fn approx(&self) -> Option<f64> {
        match self {
            Bound::Int(i) => Some(*i as f64),
            Bound::Number(x) => Some(*x),
            Bound::Text(t) => t.parse().ok(),
        }
    }
}

/// Digits of a plain decimal numeral that carry its value: leading and
/// trailing zeros and the point left out. A float keeps 15 exactly.
fn significant_digits(numeral: &str) -> usize {
    let digits: String = numeral.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// Why the numeral `text` is not a value of `decimal(precision, scale)`: not
/// a plain decimal numeral, too many decimal places (it would be rounded), or
/// too many digits before the point.
fn decimal_fit(text: &str, precision: u8, scale: u8) -> Option<String> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !plain(whole) || !plain(frac) {
        return Some("is not a plain decimal number (like 12.50)".into());
    }
    let places = frac.trim_end_matches('0').len();
    let before = whole.trim_start_matches('0').len();
    let room = usize::from(precision - scale);
    if places > usize::from(scale) {
        Some(format!(
            "has {places} decimal places; decimal({precision},{scale}) holds {scale}"
        ))
    } else if before > room {
        Some(format!(
            "has {before} digits before the point; decimal({precision},{scale}) holds {room}"
        ))
    } else {
        None
    }
}

/// Parses a date or timestamp bound with the column's format, or ISO 8601
/// without one (a date as its midnight).
fn parse_temporal(
    ty: ColumnType,
    format: Option<&str>,
    text: &str,
) -> Result<chrono::NaiveDateTime, String> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
    let date = |f: &str| NaiveDate::parse_from_str(text, f).map(|d| d.and_time(NaiveTime::MIN));
    // Without a format every field has its full width, as validate reads values.
    if format.is_none() && text.len() != if ty == ColumnType::Date { 10 } else { 19 } {
        return Err("not written YYYY-MM-DD (HH:MM:SS) with every digit".into());
    }
    let result = match (ty, format) {
        (ColumnType::Date, Some(f)) => date(f),
        (ColumnType::Date, None) => date("%Y-%m-%d"),
        (_, Some(f)) => NaiveDateTime::parse_from_str(text, f),
        (_, None) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")),
    };
    result.map_err(|e| e.to_string())
}

/// Why `format` cannot read a value of `ty`: not a chrono format, or one
/// that leaves out a part every value needs (a date's year, month and day, a
/// timestamp's hour too), so no value could pass.
fn chrono_format_problem(ty: ColumnType, format: &str) -> Option<String> {
    use chrono::format::{Fixed, Numeric};
    if format.trim().is_empty() {
        return Some("must not be empty".into());
    }
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Some(format!(
            "`{format}` is not a valid chrono format (see %Y, %m, %d, %H, %M, %S)"
        ));
    }
    let has = |wanted: &[Numeric]| {
        items.iter().any(|item| match item {
            Item::Numeric(n, _) => wanted.contains(n) || *n == Numeric::Timestamp,
            Item::Fixed(Fixed::RFC3339 | Fixed::RFC2822) => true,
            _ => false,
        })
    };
    let named_month = items.iter().any(|item| {
        matches!(
            item,
            Item::Fixed(Fixed::ShortMonthName | Fixed::LongMonthName | Fixed::RFC3339)
        )
    });
    let mut missing = Vec::new();
    if !has(&[Numeric::Year, Numeric::IsoYear, Numeric::YearMod100]) {
        missing.push("a year (%Y)");
    }
    let ordinal = has(&[
        Numeric::Ordinal,
        Numeric::IsoWeek,
        Numeric::WeekFromMon,
        Numeric::WeekFromSun,
    ]);
    if !ordinal && !named_month && !has(&[Numeric::Month]) {
        missing.push("a month (%m)");
    }
    if !ordinal && !has(&[Numeric::Day]) {
        missing.push("a day (%d)");
    }
    if ty == ColumnType::Timestamp && !has(&[Numeric::Hour, Numeric::Hour12]) {
        missing.push("an hour (%H)");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "`{format}` has no {} for a {ty}, so no value could pass",
            missing.join(", ")
        )
    })
}

fn allowed_problem(ty: ColumnType, value: &Scalar) -> Option<String> {
    match (ty, value) {
        (ColumnType::String, Scalar::Text(_)) => None,
        (ColumnType::String, v) => Some(format!(
            "{v} is not text; quote it (e.g. '{}') so YAML keeps it as written",
            v.to_string().trim_matches('\'')
        )),
        (ColumnType::Int, Scalar::Int(_)) => None,
        (ColumnType::Float | ColumnType::Decimal { .. }, Scalar::Int(_) | Scalar::Float(_)) => None,
        (ColumnType::Bool | ColumnType::Date | ColumnType::Timestamp, _) => Some(format!(
            "allowed applies to string and number columns, not {ty}"
        )),
        (_, v) => Some(format!("{v} is not a {ty}")),
    }
}

/// Finds the line of a key in the YAML text by walking its path, block or flow style.
///
/// serde_yaml gives lines for syntax and type errors only; the checks above run on
/// the parsed value, so they look their keys up here to point at the right line.
struct Lines<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines {
            lines: text.lines().collect(),
        }
    }

    /// 1-based line of the last key in `path`, each key searched for below the
    /// previous one and indented deeper than it.
    fn find(&self, path: &[&str]) -> Option<usize> {
        let mut start = 0;
        let mut indent: Option<usize> = None;
        let mut found = None;
        for key in path {
            let (idx, ind) = self.lines[start..]
                .iter()
                .enumerate()
                .find_map(|(i, line)| {
                    let trimmed = line.trim_start();
                    let ind = line.len() - trimmed.len();
                    if trimmed.is_empty() || trimmed.starts_with('#') {
                        return None;
                    }
                    if indent.is_some_and(|parent| ind <= parent) && i > 0 {
                        // Left the parent's block without finding the key.
                        return Some((usize::MAX, 0));
                    }
                    let unquoted = trimmed.trim_start_matches(['\'', '"']);
                    let rest = unquoted.strip_prefix(*key)?;
                    let rest = rest.trim_start_matches(['\'', '"']);
                    rest.trim_start().starts_with(':').then_some((i, ind))
                })?;
            if idx == usize::MAX {
                return None;
            }
            found = Some(start + idx + 1);
            start += idx + 1;
            indent = Some(ind);
        }
        found
    }

    /// Line of `key` inside the mapping at `path` (flow `{ key: ... }` on the same
    /// line, or a block key below it).
    fn find_inline(&self, path: &[&str], key: &str) -> Option<usize> {
        let line = self.find(path)?;
        let text = self.lines[line - 1];
        let needle = format!("{key}:");
        if text.contains(&format!(" {needle}")) || text.contains(&format!("{{{needle}")) {
            return Some(line);
        }
        let mut full = path.to_vec();
        full.push(key);
        self.find(&full)
    }
}

/// serde's words for a value that fits no variant of an untagged enum, said as
/// what the user should write instead.
fn explain_parse_error(error: &serde_yaml::Error) -> Option<Problem> {
    let message = error.to_string();
    let (key, what) = if message.contains("untagged enum Scalar") {
        (
            "allowed",
            "each value must be text, a number or true/false (not a list, a mapping or null)",
        )
    } else if message.contains("untagged enum Bound") {
        (
            "min/max",
            "must be a number, or a quoted date or timestamp such as '2020-01-01'",
        )
    } else {
        return None;
    };
    // serde_yaml starts its message with the path: `datasets.d.columns.c.allowed[2]: …`.
    let path: Vec<&str> = message
        .split_once(": ")
        .map_or(Vec::new(), |(path, _)| path.split('.').collect());
    let after = |name: &str| {
        path.iter()
            .position(|p| *p == name)
            .and_then(|i| path.get(i + 1))
            .map(|s| s.to_string())
    };
    Some(Problem {
        line: error.location().map(|l| l.line()),
        dataset: after("datasets"),
        column: after("columns"),
        key: Some(key.to_owned()),
        message: what.to_owned(),
    })
}

impl ConfigError {
    fn at(self, path: &Path) -> ConfigError {
        match self {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            },
            other => other,
        }
    }
}

mod alerts;
mod text;

pub use alerts::{Alerts, Email, Webhook, When};

#[cfg(test)]
mod tests;
