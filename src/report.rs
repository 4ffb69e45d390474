//! `pipeline report`: one self-contained static HTML page of the data quality of
//! every (or the selected) dataset and period — score and deductions, the score
//! history as a chart, rule failures with examples, each column's profile — read
//! from `reporting.*` (the tables the monitoring UI reads; `monitoring_file` is
//! the dataset, its run the period), for each dataset's latest verdict per period. No server, no script,
//! no CDN: the page opens from a file or any static host.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::config::Config;
use crate::exit::Exit;
use crate::ledger::PeriodVerdict;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the quality tables")]
    Db(#[from] tokio_postgres::Error),
}

impl ReportError {
    pub fn exit(&self) -> Exit {
        match self {
            ReportError::Usage(_) => Exit::Usage,
            ReportError::Db(_) => Exit::Failure,
        }
    }
}

/// Which datasets and periods the page covers (all when None).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub period: Option<String>,
    pub dataset: Option<String>,
}

/// What the page shows, as read from the database.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The latest outcome of every stage, dataset or model and period,
    /// failures first: what the top of the page answers.
    pub latest: Vec<Outcome>,
    pub datasets: Vec<DatasetReport>,
    /// The latest result of each model audit per period, by model and period.
    pub audits: Vec<AuditRow>,
    /// Every file version ingest rejected, newest first.
    pub rejections: Vec<Rejection>,
    /// Each model's latest run in the selection: status, why, when.
    pub model_runs: BTreeMap<String, ModelRun>,
    /// The project drawn: datasets → core → mart, with each node's state
    /// (set by the caller that knows the models, see [`Graph::new`]).
    #[serde(skip)]
    pub graph: Option<Graph>,
}

/// A model's latest run (meta.transform_log).
#[derive(Debug, Clone, Serialize)]
pub struct ModelRun {
    pub period: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub at: String,
}

/// One model as the graph and its lineage table show it.
#[derive(Debug, Clone)]
pub struct ModelNode {
    /// `schema.name`
    pub name: String,
    /// The tables it reads (`stage.x`, `core.y`).
    pub reads: Vec<String>,
    /// Each column: how it is made (`copied`, `computed`, `aggregated`) and
    /// from which columns (`stage.citizens.region`).
    pub columns: Vec<(String, String, Vec<String>)>,
}

/// The project as a graph: every dataset and model with its state.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub models: Vec<ModelNode>,
}

/// One box of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// `stage.x`, `core.y`, `mart.z`
    pub id: String,
    /// 0 stage, 1 core, 2 mart.
    pub layer: usize,
    /// `current`, `stale`, `failed`, `rejected`, `refused`, `audits failing`, `not run`.
    pub state: String,
    pub why: String,
    /// The page's anchor it links to.
    pub anchor: String,
    pub reads: Vec<String>,
}

/// One model audit's latest result for a period (reporting.audit_results).
#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub model: String,
    pub period: Option<String>,
    pub audit: String,
    pub severity: String,
    pub passed: bool,
    pub failing: i64,
    pub blocked: bool,
    pub sample: Value,
    pub checked_at: String,
}

/// The latest outcome of one stage for one dataset (or model) and period.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// When it ended, `YYYY-MM-DD HH:MM:SS UTC`.
    pub at: String,
    /// `ingest`, `validate`, `load-stage` or `transform`.
    pub stage: String,
    /// The dataset, the model, or the file (a file no dataset matched).
    pub target: String,
    pub period: Option<String>,
    /// As the ledger records it (`rejected`, `failed`, `error`, `refused`,
    /// `passed`, `loaded`, `done`).
    pub status: String,
    pub failed: bool,
    pub why: String,
    /// A command that will work, or what to do first.
    pub todo: String,
}

/// How many outcomes that went well the top of the page lists after the failures.
const LATEST_OK: i64 = 10;

/// Each stage's latest outcome per dataset (model) and period in the
/// selection; failures first, newest first.
async fn latest_outcomes(client: &Client, args: &Request) -> Result<Vec<Outcome>, ReportError> {
    let rows = client
        .query(
            "WITH v AS (
               SELECT DISTINCT ON (dataset, period) 'validate' AS stage, dataset AS target, period, status,
                      coalesce(finished_at, started_at) AS at,
                      CASE WHEN status = 'failed' AND error IS NULL
                           THEN format('score %s below min_quality_score %s (%s of %s rows rejected)',
                                       score, min_quality_score, rows_rejected, rows_in)
                           ELSE coalesce(error, '') END AS why
                 FROM meta.validation_log WHERE status <> 'running'
                ORDER BY dataset, period, id DESC),
             l AS (
               SELECT DISTINCT ON (dataset, period) 'load-stage', dataset, period, status,
                      coalesce(finished_at, started_at),
                      CASE WHEN status = 'loaded'
                           THEN format('%s rows replaced by %s', rows_deleted, rows_inserted)
                           ELSE coalesce(error, '') END
                 FROM meta.load_log ORDER BY dataset, period, id DESC),
             t AS (
               SELECT DISTINCT ON (model, period) 'transform', model, period, status,
                      coalesce(finished_at, started_at),
                      CASE WHEN status = 'done' THEN format('%s rows', rows_inserted)
                           ELSE coalesce(error, '') END
                 FROM meta.transform_log ORDER BY model, period, id DESC),
             i AS (
               SELECT DISTINCT ON (coalesce(dataset, file_name), period) 'ingest',
                      coalesce(dataset, file_name), period, status, last_seen_at,
                      file_name || ': ' || coalesce(reason, '')
                 FROM meta.ingestion_log
                ORDER BY coalesce(dataset, file_name), period, last_seen_at DESC, id DESC),
             x AS (SELECT * FROM v UNION ALL SELECT * FROM l UNION ALL SELECT * FROM t
                   UNION ALL SELECT * FROM i WHERE status = 'rejected'),
             s AS (SELECT *, status NOT IN ('passed', 'loaded', 'done', 'accepted') AS failed,
                          row_number() OVER (PARTITION BY status NOT IN ('passed', 'loaded', 'done', 'accepted')
                                             ORDER BY at DESC) AS n
                     FROM x
                    WHERE ($1::text IS NULL OR period = $1)
                      AND ($2::text IS NULL OR target = $2 OR stage = 'transform'))
           SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                  stage, target, period, status, failed, why
             FROM s WHERE failed OR n <= $3
            ORDER BY failed DESC, at DESC",
            &[&args.period, &args.dataset, &LATEST_OK],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (stage, target, period, status): (String, String, Option<String>, String) =
                (r.get(1), r.get(2), r.get(3), r.get(4));
            let todo = todo(&stage, &target, period.as_deref(), &status);
            Outcome {
                at: r.get(0),
                stage,
                target,
                period,
                status,
                failed: r.get(5),
                why: crate::exit::without_row_values(&r.get::<_, String>(6)),
                todo,
            }
        })
        .collect())
}

/// What to do about an outcome: a command that will work (a re-run of a
/// refused or failed stage would end the same way, so never just that).
fn todo(stage: &str, target: &str, period: Option<&str>, status: &str) -> String {
    let p = period.map(|p| format!(" --period {p}")).unwrap_or_default();
    if matches!(status, "passed" | "loaded" | "done" | "accepted") {
        return String::new();
    }
    match (stage, status) {
        ("ingest", _) => {
            "fix the file's name or headers and deliver it again (the message says which)".into()
        }
        ("validate", "failed") => format!(
            "`pipeline quarantine --dataset {target}{p}` lists the rejected rows; a corrected delivery then runs with `pipeline run{p}`"
        ),
        ("validate", _) => {
            format!("fix the cause above, then `pipeline validate --dataset {target}{p}`")
        }
        ("load-stage", "refused") => format!(
            "check the delivery with its sender; if it is right, `pipeline load-stage --dataset {target}{p} --force`"
        ),
        ("load-stage", "failed") => {
            format!("fix the cause above, then `pipeline load-stage --dataset {target}{p}`")
        }
        ("transform", "rejected") => format!(
            "an audit blocked the rows (the period kept its previous ones): fix the data or the audit, then `pipeline transform{p} --model {target}`"
        ),
        ("transform", "failed" | "skipped") => {
            format!("fix the model or what it reads, then `pipeline transform{p} --model {target}`")
        }
        _ => String::new(),
    }
}

/// Each model's latest run in the selected period (any period when none).
async fn model_runs(
    client: &Client,
    period: Option<&str>,
) -> Result<BTreeMap<String, ModelRun>, ReportError> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (model) model, period, status, error,
                    to_char(coalesce(finished_at, started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC'
               FROM meta.transform_log WHERE $1::text IS NULL OR period = $1
              ORDER BY model, id DESC",
            &[&period],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let run = ModelRun {
                period: r.get(1),
                status: r.get(2),
                error: r.get(3),
                at: r.get(4),
            };
            (r.get(0), run)
        })
        .collect())
}

impl Graph {
    /// The graph of `models` and the page's datasets, each node's state from
    /// what the page read: a dataset's worst period, a model's latest run
    /// (and its failing `warn` audits).
    pub fn new(page: &Report, models: Vec<ModelNode>) -> Graph {
        let mut nodes = Vec::new();
        for d in &page.datasets {
            let worst = d.runs.iter().find(|r| r.troubled());
            let (state, why) = match worst {
                None if d.runs.is_empty() => ("not run".into(), "no validated file".into()),
                None => ("current".into(), String::new()),
                Some(r) => {
                    let period = r.period.as_deref().unwrap_or("(all)");
                    match (r.load.as_deref(), r.passed, &r.stale) {
                        (Some(l @ ("refused" | "failed")), _, _) => {
                            (l.to_owned(), format!("{period}: load {l}"))
                        }
                        (_, Some(false), _) => {
                            ("failed".into(), format!("{period}: verdict failed"))
                        }
                        (_, _, Some(why)) => ("stale".into(), format!("{period}: {why}")),
                        _ => ("current".into(), String::new()),
                    }
                }
            };
            nodes.push(Node {
                id: format!("stage.{}", d.name),
                layer: 0,
                state,
                why,
                anchor: format!("dataset-{}", d.name),
                reads: Vec::new(),
            });
        }
        for m in &models {
            let warn_failing = page.audits.iter().any(|a| a.model == m.name && !a.passed);
            let (state, why) = match page.model_runs.get(&m.name) {
                None => ("not run".to_owned(), String::new()),
                Some(r) if r.status == "done" && warn_failing => {
                    ("audits failing".into(), "a warn audit failed".into())
                }
                Some(r) if r.status == "done" => ("current".into(), String::new()),
                Some(r) => (
                    r.status.clone(),
                    format!(
                        "{}: {}",
                        r.period.as_deref().unwrap_or("(whole table)"),
                        r.error.as_deref().unwrap_or_default()
                    ),
                ),
            };
            nodes.push(Node {
                id: m.name.clone(),
                layer: if m.name.starts_with("core.") { 1 } else { 2 },
                state,
                why,
                anchor: format!("model-{}", m.name),
                reads: m.reads.clone(),
            });
        }
        Graph { nodes, models }
    }

    /// The graph as SVG: one column per layer, each node a link to its
    /// section, coloured by its state (its title says why).
    pub fn svg(&self) -> String {
        let (w, hgt, gap, col) = (230.0, 30.0, 14.0, 300.0);
        let mut rows = [0usize; 3];
        let mut at: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for n in &self.nodes {
            let x = 10.0 + col * n.layer as f64;
            let y = 30.0 + rows[n.layer] as f64 * (hgt + gap);
            rows[n.layer] += 1;
            at.insert(n.id.as_str(), (x, y));
        }
        let height = 40.0 + *rows.iter().max().unwrap_or(&1) as f64 * (hgt + gap);
        let width = 20.0 + col * 2.0 + w;
        let mut s = format!(
            "<svg class=\"graph\" role=\"img\" aria-label=\"datasets, core and mart models\" width=\"{width}\" \
             height=\"{height}\" viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\">"
        );
        for (i, label) in ["stage (datasets)", "core", "mart"].iter().enumerate() {
            let _ = write!(
                s,
                "<text x=\"{:.0}\" y=\"16\" font-weight=\"600\">{label}</text>",
                10.0 + col * i as f64
            );
        }
        for n in &self.nodes {
            let (x2, y2) = at[n.id.as_str()];
            for r in &n.reads {
                if let Some(&(x1, y1)) = at.get(r.as_str()) {
                    let (sx, sy, ey) = (x1 + w, y1 + hgt / 2.0, y2 + hgt / 2.0);
                    let _ = write!(
                        s,
                        "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{sx:.0},{sy:.0} C{:.0},{sy:.0} {:.0},{ey:.0} {x2:.0},{ey:.0}\" fill=\"none\" stroke=\"#888\"/>",
                        esc(r),
                        esc(&n.id),
                        sx + 30.0,
                        x2 - 30.0
                    );
                }
            }
        }
        for n in &self.nodes {
            let (x, y) = at[n.id.as_str()];
            let fill = match n.state.as_str() {
                "current" => "#3c9a55",
                "stale" | "audits failing" => "#d99a1e",
                "not run" => "#999999",
                _ => "#c43c3c",
            };
            let title = match n.why.is_empty() {
                true => n.state.clone(),
                false => format!("{}: {}", n.state, n.why),
            };
            let _ = write!(
                s,
                "<a href=\"#{a}\" data-node=\"{id}\" data-state=\"{st}\"><rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{w}\" height=\"{hgt}\" rx=\"4\" fill=\"{fill}\"/>\
                 <text x=\"{:.0}\" y=\"{:.0}\" fill=\"#fff\">{id} — {st}</text><title>{t}</title></a>",
                x + 8.0,
                y + 19.0,
                a = esc(&n.anchor),
                id = esc(&n.id),
                st = esc(&n.state),
                t = esc(&title),
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// The latest result of every (model, period, audit) in the selected period(s).
async fn audit_rows(client: &Client, period: Option<&str>) -> Result<Vec<AuditRow>, ReportError> {
    let rows = client
        .query(
            "SELECT DISTINCT ON (model, period, audit)
                    model, period, audit, severity, passed, failing, blocked, sample,
                    to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC')
               FROM reporting.audit_results WHERE $1::text IS NULL OR period = $1
              ORDER BY model, period, audit, id DESC",
            &[&period],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            model: r.get(0),
            period: r.get(1),
            audit: r.get(2),
            severity: r.get(3),
            passed: r.get(4),
            failing: r.get(5),
            blocked: r.get(6),
            sample: r.get(7),
            checked_at: r.get(8),
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub min_quality_score: u8,
    /// The drift gate's `row_count` and `null_share`, drawn on the trends.
    pub drift: (Option<f64>, Option<f64>),
    /// One per period, oldest first: the latest finished validation's run.
    pub runs: Vec<RunReport>,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub dataset: String,
    pub period: Option<String>,
    pub file_name: String,
    pub validation_id: i64,
    pub rows_in: Option<i64>,
    pub rows_rejected: Option<i64>,
    /// From reporting.monitoring_file_data_quality.
    pub score: Option<i32>,
    pub passed: Option<bool>,
    pub deductions: Value,
    pub metrics: Value,
    pub rules: Vec<RuleRow>,
    pub profile: Option<Value>,
    /// Where the page links this period's rejected rows (set by the caller that
    /// writes them), relative to the page.
    pub quarantine_csv: Option<String>,
    /// Why `run` would redo the period (the ledger's words); None when current.
    pub stale: Option<String>,
    /// The latest load attempt's status (`loaded`, `refused`, `failed`), if any.
    pub load: Option<String>,
    /// Every file version, verdict and load of the period, oldest first.
    pub history: Vec<crate::ledger::Event>,
    /// The verdict's missing values per column (`{"rows": n, "columns": {…}}`).
    pub missing: Option<Value>,
}

/// A file version ingest rejected (meta.ingestion_log).
#[derive(Debug, Serialize)]
pub struct Rejection {
    pub dataset: Option<String>,
    pub period: Option<String>,
    pub file_id: i64,
    pub file_name: String,
    pub reason: String,
    pub last_seen_at: String,
}

#[derive(Debug, Serialize)]
pub struct RuleRow {
    pub column: String,
    pub rule: String,
    pub count: i64,
    pub message: String,
    pub examples: Vec<String>,
}

/// Reads what the page shows.
pub async fn run(config: &Config, client: &Client, args: &Request) -> Result<Report, ReportError> {
    crate::period::check_selection(config, args.dataset.as_deref(), args.period.as_deref())
        .map_err(ReportError::Usage)?;
    let mut datasets = Vec::new();
    for (name, ds) in &config.datasets {
        if args.dataset.as_ref().is_some_and(|d| d != name) {
            continue;
        }
        let validations = PeriodVerdict::each(client, name, args.period.as_deref()).await?;
        let mut runs = Vec::new();
        for v in validations {
            runs.push(run_report(client, name, ds, v).await?);
        }
        datasets.push(DatasetReport {
            name: name.clone(),
            min_quality_score: ds.min_quality_score,
            drift: ds
                .drift
                .as_ref()
                .map_or((None, None), |d| (d.row_count, d.null_share)),
            runs,
        });
    }
    let audits = audit_rows(client, args.period.as_deref()).await?;
    let rejections = rejections(client, args).await?;
    let latest = latest_outcomes(client, args).await?;
    let model_runs = model_runs(client, args.period.as_deref()).await?;
    Ok(Report {
        model_runs,
        graph: None,
        latest,
        datasets,
        audits,
        rejections,
    })
}

/// The rejected file versions of the selection (an unmatched file belongs to
/// no dataset: shown unless a dataset is selected).
async fn rejections(client: &Client, args: &Request) -> Result<Vec<Rejection>, ReportError> {
    let rows = client
        .query(
            "SELECT dataset, period, id, file_name, coalesce(reason, ''),
                    to_char(last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
               FROM meta.ingestion_log
              WHERE status = 'rejected'
                AND ($1::text IS NULL OR dataset = $1)
                AND ($2::text IS NULL OR period = $2)
              ORDER BY last_seen_at DESC, id DESC",
            &[&args.dataset, &args.period],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Rejection {
            dataset: r.get(0),
            period: r.get(1),
            file_id: r.get(2),
            file_name: r.get(3),
            reason: r.get(4),
            last_seen_at: r.get(5),
        })
        .collect())
}

/// One period's verdict `v` with the quality, profile and failed rules that
/// validate wrote under reporting.* for it.
async fn run_report(
    client: &Client,
    name: &str,
    ds: &crate::config::Dataset,
    v: PeriodVerdict,
) -> Result<RunReport, ReportError> {
    let PeriodVerdict {
        period,
        file_name,
        validation_id,
        rows_in,
        rows_rejected,
    } = v;
    // validate writes the run of (dataset, the period's start); without
    // periods, the latest run.
    let lower: Option<chrono::NaiveDateTime> = period
        .as_deref()
        .and_then(|p| crate::period::Period::parse(ds.period, p).ok())
        .map(|p| p.start());
    let quality = client
        .query_opt(
            "SELECT r.id, q.score, q.passed, q.deductions, q.metrics, p.profile_payload
               FROM reporting.monitoring_file f
               JOIN reporting.monitoring_file_run r ON r.monitoring_file_id = f.id
               LEFT JOIN reporting.monitoring_file_data_quality q ON q.monitoring_file_run_id = r.id
               LEFT JOIN reporting.monitoring_file_data_profile p ON p.monitoring_file_run_id = r.id
              WHERE f.agency_slug = $1 AND f.file_name = $2
                AND r.file_range_lower_limit IS NOT DISTINCT FROM $3
              ORDER BY r.updated_at DESC, r.id DESC LIMIT 1",
            &[&ds.agency(), &name, &lower],
        )
        .await?;
    let mut run = RunReport {
        dataset: name.to_owned(),
        period,
        file_name,
        validation_id,
        rows_in,
        rows_rejected,
        score: None,
        passed: None,
        deductions: Value::Null,
        metrics: Value::Null,
        rules: Vec::new(),
        profile: None,
        quarantine_csv: None,
        stale: None,
        load: None,
        history: Vec::new(),
        missing: None,
    };
    run.missing = client
        .query_opt(
            "SELECT missing FROM meta.validation_log WHERE id = $1",
            &[&validation_id],
        )
        .await?
        .and_then(|r| r.get::<_, Option<Value>>(0));
    let (state, verdict) =
        crate::ledger::StageState::read(client, name, ds, run.period.as_deref(), None).await?;
    run.stale = state.stale(verdict.as_ref());
    run.load = crate::ledger::LoadAttempt::latest(client, name, run.period.as_deref())
        .await?
        .map(|l| l.status);
    run.history = crate::ledger::history(client, name, run.period.as_deref()).await?;
    if let Some(q) = quality {
        let run_id: i32 = q.get(0);
        run.score = q.get(1);
        run.passed = q.get(2);
        run.deductions = q.get::<_, Option<Value>>(3).unwrap_or(Value::Null);
        run.metrics = q.get::<_, Option<Value>>(4).unwrap_or(Value::Null);
        run.profile = q.get(5);
        run.rules = failed_rules(client, run_id).await?;
    }
    Ok(run)
}

/// The rules a run's rows broke, most broken first.
async fn failed_rules(client: &Client, run_id: i32) -> Result<Vec<RuleRow>, ReportError> {
    let rows = client
        .query(
            "SELECT column_name, rule, failed_count, message, example_values
               FROM reporting.monitoring_file_failed_validation
              WHERE monitoring_file_run_id = $1
              ORDER BY failed_count DESC, column_name, rule",
            &[&run_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RuleRow {
            column: r.get(0),
            rule: r.get(1),
            count: r.get(2),
            message: r.get::<_, Option<String>>(3).unwrap_or_default(),
            examples: r
                .get::<_, Option<Value>>(4)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                .collect(),
        })
        .collect())
}

/// HTML text: everything escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| {
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{}", f as i64)
                } else {
                    format!("{f:.2}")
                }
            })
            .unwrap_or_default(),
        Value::String(s) => esc(s),
        Value::Null => "–".into(),
        other => esc(&other.to_string()),
    }
}

const CATEGORIES: [&str; 5] = ["schema", "format", "completeness", "bounds", "uniqueness"];

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{margin-top:2.5rem;border-bottom:2px solid #ddd}h3{margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.4rem 0 1rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#176b2c;font-weight:600}.fail{color:#a31515;font-weight:600}
.bar{display:inline-block;height:.7rem;background:#4a78c2;vertical-align:middle}
details{margin:.6rem 0;border:1px solid #e3e3e3;border-radius:4px;padding:.3rem .8rem}summary{cursor:pointer;font-weight:600}
code{background:#f4f4f4;padding:0 .2rem}.muted{color:#777}
tr.failed td{background:#fdf0f0}pre{white-space:pre-wrap;word-break:break-all;max-width:40rem;margin:.2rem 0}
details.sample{border:0;padding:0;margin:0}details.sample summary{font-weight:400}";

impl Report {
    /// The page.
    pub fn html(&self, generated_at: &str) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>Data quality report</title><style>{STYLE}</style></head><body>\
             <h1>Data quality report</h1><p class=\"muted\">Generated {} from <code>reporting.*</code>. \
             Score = 100 − deductions (schema 40, format 35, completeness 20, bounds 15, uniqueness 10, each × the share of rows or columns at fault).</p>",
            esc(generated_at)
        );
        self.latest_section(&mut h);
        if let Some(g) = &self.graph {
            let _ = write!(
                h,
                "<section id=\"project\"><h2>The project</h2><p class=\"muted\">Each box links to its section; \
                 green current, amber stale or a warn audit failing, red failed, refused or rejected.</p>{}</section>",
                g.svg()
            );
        }
        if self.datasets.iter().all(|d| d.runs.is_empty()) {
            h.push_str("<p id=\"empty\">No validated file yet: run <code>pipeline validate</code> first.</p>");
        }
        for d in &self.datasets {
            self.dataset(&mut h, d);
        }
        self.models_section(&mut h);
        self.audits_section(&mut h);
        self.rejections_section(&mut h);
        h.push_str("</body></html>\n");
        h
    }

    /// Each model: its latest run and each column's lineage (what it is
    /// computed from, down to the stage columns).
    fn models_section(&self, h: &mut String) {
        let Some(g) = &self.graph else { return };
        if g.models.is_empty() {
            return;
        }
        h.push_str("<section id=\"models\"><h2>Models</h2>");
        for m in &g.models {
            let node = g.nodes.iter().find(|n| n.id == m.name);
            let state = node.map_or("not run", |n| n.state.as_str());
            let run = self.model_runs.get(&m.name).map_or(String::new(), |r| {
                format!(
                    " <span class=\"muted\">(latest run {} {}, {})</span>",
                    esc(r.period.as_deref().unwrap_or("")),
                    esc(&r.status),
                    esc(&r.at)
                )
            });
            let _ = write!(
                h,
                "<div class=\"model\" id=\"model-{m0}\"><h3>{m0} — <span class=\"{cls}\">{st}</span>{run}</h3>\
                 <table class=\"lineage\"><tr><th>column</th><th>made by</th><th>from</th></tr>",
                m0 = esc(&m.name),
                cls = if state == "current" { "pass" } else { "fail" },
                st = esc(state),
            );
            for (column, usage, from) in &m.columns {
                let _ = write!(
                    h,
                    "<tr data-column=\"{c}\"><td>{c}</td><td>{u}</td><td>{f}</td></tr>",
                    c = esc(column),
                    u = esc(usage),
                    f = from
                        .iter()
                        .map(|x| format!("<code>{}</code>", esc(x)))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
            h.push_str("</table></div>");
        }
        h.push_str("</section>");
    }

    /// The top of the page: what failed or was refused lately, where, when,
    /// why and what to do — failures first — then the latest that went well.
    fn latest_section(&self, h: &mut String) {
        let failures = self.latest.iter().filter(|o| o.failed).count();
        let _ = write!(
            h,
            "<section id=\"latest\"><h2>Latest runs</h2><p class=\"{}\">{}</p>",
            if failures > 0 { "fail" } else { "pass" },
            match failures {
                0 => "Nothing failed or was refused.".to_owned(),
                n => format!("{n} failed or refused: the latest of each stage, failures first."),
            }
        );
        if self.latest.is_empty() {
            h.push_str("<p class=\"muted\">Nothing has run yet.</p></section>");
            return;
        }
        h.push_str(
            "<table class=\"latest\"><tr><th>when</th><th>stage</th><th>dataset or model</th><th>period</th>\
             <th>result</th><th>why</th><th>what to do</th></tr>",
        );
        for o in &self.latest {
            let _ = write!(
                h,
                "<tr data-stage=\"{st}\" data-status=\"{status}\" class=\"{row}\"><td>{at}</td><td>{st}</td><td>{t}</td>\
                 <td>{p}</td><td class=\"{cls}\">{status}</td><td>{why}</td><td>{todo}</td></tr>",
                at = esc(&o.at),
                st = esc(&o.stage),
                t = esc(&o.target),
                p = esc(o.period.as_deref().unwrap_or("–")),
                status = esc(&o.status),
                row = if o.failed { "failed" } else { "ok" },
                cls = if o.failed { "fail" } else { "pass" },
                why = esc(&o.why),
                todo = code_spans(&o.todo),
            );
        }
        h.push_str("</table></section>");
    }

    /// Each model audit's latest result per period, grouped by model with
    /// the models that have a failure first, failures first within each;
    /// samples folded. A blocked one kept the period's previous rows.
    fn audits_section(&self, h: &mut String) {
        if self.audits.is_empty() {
            return;
        }
        let mut models: Vec<&str> = self.audits.iter().map(|a| a.model.as_str()).collect();
        models.dedup();
        let failing = |m: &str| {
            self.audits
                .iter()
                .filter(|a| a.model == m && !a.passed)
                .count()
        };
        models.sort_by_key(|m| (failing(m) == 0, *m));
        h.push_str("<section id=\"audits\"><h2>Model audits</h2>");
        for m in models {
            let n = failing(m);
            let mut rows: Vec<&AuditRow> = self.audits.iter().filter(|a| a.model == m).collect();
            rows.sort_by_key(|a| (a.passed, a.period.clone(), a.audit.clone()));
            let _ = write!(
                h,
                "<details class=\"model-audits\" data-model=\"{m0}\"{open}><summary>{m0} — <span class=\"{cls}\">{what}</span></summary>",
                m0 = esc(m),
                open = if n > 0 { " open" } else { "" },
                cls = if n > 0 { "fail" } else { "pass" },
                what = match n {
                    0 => format!("{} passed", rows.len()),
                    n => format!("{n} failing of {}", rows.len()),
                },
            );
            self.audit_table(h, &rows);
            h.push_str("</details>");
        }
        h.push_str("</section>");
    }

    fn audit_table(&self, h: &mut String, rows: &[&AuditRow]) {
        h.push_str(
            "<table class=\"audits\"><tr><th>model</th><th>period</th>\
             <th>audit</th><th>severity</th><th>result</th><th>failing</th><th>checked</th><th>sample</th></tr>",
        );
        for a in rows {
            let (cls, result) = match (a.passed, a.blocked) {
                (true, _) => ("pass", "passed"),
                (false, true) => ("fail", "failed: rows rolled back"),
                (false, false) => ("fail", "failed"),
            };
            let sample = match &a.sample {
                Value::Array(rows) if rows.is_empty() => String::new(),
                other => format!(
                    "<details class=\"sample\"><summary>sample</summary><pre>{}</pre></details>",
                    esc(&serde_json::to_string_pretty(other).unwrap_or_default())
                ),
            };
            let _ = write!(
                h,
                "<tr data-model=\"{m}\" data-period=\"{p}\"><td>{m}</td><td>{p}</td><td>{audit}</td><td>{sev}</td>\
                 <td class=\"{cls}\">{result}</td><td class=\"n\">{n}</td><td>{at}</td><td>{sample}</td></tr>",
                m = esc(&a.model),
                p = esc(a.period.as_deref().unwrap_or("(whole table)")),
                audit = esc(&a.audit),
                sev = esc(&a.severity),
                n = a.failing,
                at = esc(&a.checked_at),
            );
        }
        h.push_str("</table>");
    }

    /// Every file version ingest rejected: a refused re-delivery of a loaded
    /// period leaves no verdict, so it shows here (and in its period's history).
    fn rejections_section(&self, h: &mut String) {
        if self.rejections.is_empty() {
            return;
        }
        h.push_str(
            "<section id=\"rejections\"><h2>Files rejected at ingest</h2><table class=\"rejections\">\
             <tr><th>dataset</th><th>period</th><th>file</th><th>reason</th><th>last seen</th></tr>",
        );
        for r in &self.rejections {
            let _ = write!(
                h,
                "<tr data-file-id=\"{id}\"><td>{d}</td><td>{p}</td><td>{f} <span class=\"muted\">(file {id})</span></td>\
                 <td class=\"fail\">{why}</td><td>{at}</td></tr>",
                id = r.file_id,
                d = esc(r.dataset.as_deref().unwrap_or("(no dataset matched)")),
                p = esc(r.period.as_deref().unwrap_or("–")),
                f = esc(&r.file_name),
                why = esc(&r.reason),
                at = esc(&r.last_seen_at),
            );
        }
        h.push_str("</table></section>");
    }

    fn dataset(&self, h: &mut String, d: &DatasetReport) {
        let _ = write!(
            h,
            "<section data-dataset=\"{0}\" id=\"dataset-{0}\"><h2>{0}</h2><p>Threshold: score ≥ {1} passes.</p>",
            esc(&d.name),
            d.min_quality_score
        );
        if d.runs.is_empty() {
            h.push_str("<p class=\"muted\">No validated file.</p></section>");
            return;
        }
        h.push_str(&history_chart(d));
        h.push_str(&rows_chart(d));
        h.push_str(&nulls_chart(d));
        h.push_str(
            "<table class=\"periods\"><tr><th>period</th><th>file</th><th>rows</th><th>rejected</th><th>score</th><th>verdict</th><th>validated (UTC)</th><th>load</th><th>loaded (UTC)</th>",
        );
        for c in CATEGORIES {
            let _ = write!(h, "<th>−{c}</th>");
        }
        h.push_str("</tr>");
        for r in &d.runs {
            let period = r.period.as_deref().unwrap_or("(all)");
            let _ = write!(
                h,
                "<tr data-period=\"{p}\"><td>{p}</td><td>{f}</td><td class=\"n\">{rows}</td><td class=\"n\">{rej}</td>\
                 <td class=\"n score\">{score}</td><td class=\"{cls}\">{verdict}</td>",
                p = esc(period),
                f = esc(&r.file_name),
                rows = r.rows_in.map_or("–".into(), |n| n.to_string()),
                rej = r.rows_rejected.map_or("–".into(), |n| n.to_string()),
                score = r.score.map_or("–".into(), |s| s.to_string()),
                cls = if r.passed == Some(true) {
                    "pass"
                } else {
                    "fail"
                },
                verdict = match r.passed {
                    Some(true) => "passed",
                    Some(false) => "failed",
                    None => "–",
                },
            );
            let load = r.load.as_deref().unwrap_or("not loaded");
            let cls = if load == "loaded" { "pass" } else { "fail" };
            let _ = write!(
                h,
                "<td>{}</td><td class=\"{cls} load\">{}</td><td>{}</td>",
                esc(&last_at(&r.history, "validation")),
                esc(load),
                esc(&last_at(&r.history, "load")),
            );
            for c in CATEGORIES {
                let _ = write!(h, "<td class=\"n\">{}</td>", num(&r.deductions[c]));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        // The periods that need someone open; none: the newest.
        let troubled: Vec<bool> = d.runs.iter().map(RunReport::troubled).collect();
        let any = troubled.iter().any(|t| *t);
        let last = d.runs.len() - 1;
        for (i, r) in d.runs.iter().enumerate() {
            run_details(h, r, troubled[i] || (!any && i == last));
        }
        h.push_str("</section>");
    }
}

/// When the period's latest event of `kind` happened (`validation`, `load`), or –.
fn last_at(events: &[crate::ledger::Event], kind: &str) -> String {
    events
        .iter()
        .rev()
        .find(|e| e.kind == kind)
        .map_or("–".into(), |e| e.at.format("%Y-%m-%d %H:%M").to_string())
}

/// Text with its `commands` in backquotes set as code, the rest escaped.
fn code_spans(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            1 => format!("<code>{}</code>", esc(part)),
            _ => esc(part),
        })
        .collect()
}

impl RunReport {
    /// Whether the period needs someone: its verdict failed, or its load
    /// failed or was refused, or it is stale.
    pub fn troubled(&self) -> bool {
        self.passed == Some(false)
            || matches!(self.load.as_deref(), Some("failed" | "refused"))
            || self.stale.is_some()
    }
}

/// The period's deliveries, verdicts and loads, oldest first.
fn history(h: &mut String, events: &[crate::ledger::Event]) {
    if events.is_empty() {
        return;
    }
    h.push_str(
        "<h3>History</h3><table class=\"history\"><tr><th>when (UTC)</th><th>what</th><th>id</th><th>status</th><th></th></tr>",
    );
    for e in events {
        let cls = match e.status.as_str() {
            "accepted" | "passed" | "loaded" => "pass",
            "running" => "muted",
            _ => "fail",
        };
        let _ = write!(
            h,
            "<tr data-kind=\"{k}\" data-status=\"{st}\"><td>{at}</td><td>{k}</td><td class=\"n\">{id}</td>\
             <td class=\"{cls}\">{st}</td><td>{d}</td></tr>",
            at = e.at.format("%Y-%m-%d %H:%M:%S"),
            k = esc(&e.kind),
            id = e.id,
            st = esc(&e.status),
            d = esc(&e.detail),
        );
    }
    h.push_str("</table>");
}

/// Score per period as bars, green when passed, with the threshold as a line.
fn history_chart(d: &DatasetReport) -> String {
    let (bar, gap, height, top, bottom) = (34.0, 10.0, 160.0, 12.0, 46.0);
    let width = 40.0 + d.runs.len() as f64 * (bar + gap);
    let y = |score: f64| top + height * (1.0 - score / 100.0);
    let mut s = format!(
        "<svg class=\"history\" role=\"img\" aria-label=\"score by period\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\">",
        top + height + bottom,
        top + height + bottom
    );
    for tick in [0.0, 50.0, 100.0] {
        let _ = write!(
            s,
            "<text x=\"26\" y=\"{:.1}\" text-anchor=\"end\">{tick}</text>",
            y(tick) + 3.0
        );
    }
    for (i, r) in d.runs.iter().enumerate() {
        let x = 32.0 + i as f64 * (bar + gap);
        let score = f64::from(r.score.unwrap_or(0));
        // A verdict that passed but whose load failed or was refused is red too.
        let color = if r.troubled() { "#c43c3c" } else { "#3c9a55" };
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{color}\"><title>{} score {}, load {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" transform=\"rotate(-40 {:.1} {:.1})\">{}</text>",
            y(score),
            top + height - y(score),
            esc(r.period.as_deref().unwrap_or("(all)")),
            r.score.map_or("–".into(), |s| s.to_string()),
            esc(r.load.as_deref().unwrap_or("not loaded")),
            x + bar / 2.0,
            y(score) - 2.0,
            r.score.map_or("–".into(), |s| s.to_string()),
            x + bar / 2.0 + 4.0,
            top + height + 12.0,
            x + bar / 2.0 + 4.0,
            top + height + 12.0,
            esc(r.period.as_deref().unwrap_or("(all)")),
        );
    }
    let t = y(f64::from(d.min_quality_score));
    let _ = write!(
        s,
        "<line x1=\"30\" x2=\"{width}\" y1=\"{t:.1}\" y2=\"{t:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\
         <line x1=\"30\" x2=\"30\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#999\"/></svg>",
        top + height
    );
    s
}

/// Rows per period as bars, with the drift gate's `row_count` band around
/// the median when the dataset has one (a period outside it would be refused).
fn rows_chart(d: &DatasetReport) -> String {
    let rows: Vec<f64> = d
        .runs
        .iter()
        .map(|r| r.rows_in.unwrap_or(0) as f64)
        .collect();
    let most = rows.iter().copied().fold(1.0_f64, f64::max);
    let (bar, gap, height, top) = (34.0, 10.0, 100.0, 14.0);
    let width = 40.0 + rows.len() as f64 * (bar + gap);
    let y = |n: f64| top + height * (1.0 - (n / (most * 1.1)).min(1.0));
    let mut s = format!(
        "<svg class=\"rows\" role=\"img\" aria-label=\"rows by period\" width=\"{width}\" height=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\"><text x=\"2\" y=\"10\">rows</text>",
        top + height + 14.0
    );
    if let Some(band) = d.drift.0 {
        let mut sorted = rows.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let (lo, hi) = (median * (1.0 - band), median * (1.0 + band));
        let _ = write!(
            s,
            "<rect class=\"band\" x=\"30\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a78c2\" fill-opacity=\"0.12\">\
             <title>drift row_count {band}: {lo:.0}–{hi:.0} rows around the median {median:.0}</title></rect>",
            y(hi),
            width - 30.0,
            (y(lo) - y(hi)).max(1.0)
        );
    }
    for (i, r) in d.runs.iter().enumerate() {
        let x = 32.0 + i as f64 * (bar + gap);
        let color = if r.troubled() { "#c43c3c" } else { "#4a78c2" };
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{color}\"><title>{} rows {}</title></rect>",
            y(rows[i]),
            top + height - y(rows[i]),
            esc(r.period.as_deref().unwrap_or("(all)")),
            rows[i] as i64
        );
    }
    s.push_str("</svg>");
    s
}

/// Each column's share of missing values per period, for the columns whose
/// share moved by more than a point, as lines; the drift gate's `null_share`
/// as a dashed line above the lowest period's share when the dataset has one.
fn nulls_chart(d: &DatasetReport) -> String {
    let share = |r: &RunReport, c: &str| -> Option<f64> {
        let m = r.missing.as_ref()?;
        let rows = m["rows"].as_f64().filter(|n| *n > 0.0)?;
        Some(m["columns"][c].as_f64().unwrap_or(0.0) / rows)
    };
    let columns: std::collections::BTreeSet<String> = (d.runs.iter())
        .filter_map(|r| r.missing.as_ref()?["columns"].as_object().cloned())
        .flat_map(|o| o.keys().cloned().collect::<Vec<_>>())
        .collect();
    let moved: Vec<(String, Vec<Option<f64>>)> = (columns.into_iter())
        .map(|c| {
            let points = d.runs.iter().map(|r| share(r, &c)).collect::<Vec<_>>();
            (c, points)
        })
        .filter(|(_, p)| {
            let known: Vec<f64> = p.iter().flatten().copied().collect();
            let (lo, hi) = known
                .iter()
                .fold((1.0_f64, 0.0_f64), |(a, b), v| (a.min(*v), b.max(*v)));
            !known.is_empty() && hi - lo > 0.01
        })
        .collect();
    if moved.is_empty() {
        return String::new();
    }
    let (step, height, top) = (44.0, 100.0, 14.0);
    let width = 60.0 + d.runs.len() as f64 * step + 120.0;
    let y = |v: f64| top + height * (1.0 - v.min(1.0));
    let mut s = format!(
        "<svg class=\"nulls\" role=\"img\" aria-label=\"missing values by period\" width=\"{width}\" height=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"10\"><text x=\"2\" y=\"10\">missing (share of rows)</text>",
        top + height + 14.0
    );
    let colors = ["#c43c3c", "#4a78c2", "#d99a1e", "#3c9a55", "#7a4ac2"];
    for (k, (c, points)) in moved.iter().enumerate() {
        let color = colors[k % colors.len()];
        let path: Vec<String> = (points.iter().enumerate())
            .filter_map(|(i, p)| p.map(|v| format!("{:.1},{:.1}", 40.0 + i as f64 * step, y(v))))
            .collect();
        let _ = write!(
            s,
            "<polyline data-column=\"{c0}\" points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"><title>{c0}</title></polyline>\
             <text x=\"{:.0}\" y=\"{:.0}\" fill=\"{color}\">{c0}</text>",
            path.join(" "),
            50.0 + d.runs.len() as f64 * step,
            top + 12.0 * (k as f64 + 1.0),
            c0 = esc(c),
        );
        if let Some(points_over) = d.drift.1 {
            let lowest = points.iter().flatten().copied().fold(1.0_f64, f64::min);
            let limit = y(lowest + points_over);
            let _ = write!(
                s,
                "<line class=\"limit\" x1=\"30\" x2=\"{:.0}\" y1=\"{limit:.1}\" y2=\"{limit:.1}\" stroke=\"{color}\" stroke-dasharray=\"3 3\">\
                 <title>{} + null_share {points_over}</title></line>",
                30.0 + d.runs.len() as f64 * step,
                esc(c)
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn run_details(h: &mut String, r: &RunReport, open: bool) {
    let period = r.period.as_deref().unwrap_or("(all)");
    let _ = write!(
        h,
        "<details{} data-period=\"{p}\"><summary>{p} — {f}{s}</summary>",
        if open { " open" } else { "" },
        p = esc(period),
        f = esc(&r.file_name),
        s = if r.stale.is_some() { " — stale" } else { "" }
    );
    if let Some(why) = &r.stale {
        // A refused or failed load ends the same way when run again.
        let todo = match r.load.as_deref() {
            Some("refused") => format!(
                "the load was refused: check the delivery; if it is right, <code>pipeline load-stage --dataset {} --period {}</code> with <code>--force</code>",
                esc(&r.dataset),
                esc(period)
            ),
            Some("failed") => format!(
                "the load failed: fix its cause (in the history below), then <code>pipeline load-stage --dataset {} --period {}</code>",
                esc(&r.dataset),
                esc(period)
            ),
            _ => format!(
                "<code>pipeline run --period {}</code> redoes it",
                esc(period)
            ),
        };
        let _ = write!(h, "<p class=\"stale\">Stale: {} ({todo})</p>", esc(why));
    }
    history(h, &r.history);
    if let Some(link) = &r.quarantine_csv {
        let _ = write!(
            h,
            "<p>Rejected rows: <a href=\"{}\">{}</a></p>",
            esc(link),
            esc(link)
        );
    }
    if let Value::Object(metrics) = &r.metrics {
        h.push_str("<h3>Checks</h3><table><tr><th>check</th><th>passed</th><th>details</th></tr>");
        for (k, m) in metrics {
            let passed = m["passed"].as_bool() == Some(true);
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(k),
                if passed { "pass" } else { "fail" },
                if passed { "yes" } else { "no" },
                esc(m["details"].as_str().unwrap_or_default())
            );
        }
        h.push_str("</table>");
    }
    if r.rules.is_empty() {
        h.push_str("<p>No rule failed.</p>");
    } else {
        h.push_str("<h3>Rule failures</h3><table class=\"rules\"><tr><th>column</th><th>rule</th><th>rows</th><th>message</th><th>examples</th></tr>");
        for rule in &r.rules {
            let _ = write!(
                h,
                "<tr data-column=\"{c}\" data-rule=\"{ru}\"><td>{c}</td><td>{ru}</td><td class=\"n count\">{n}</td><td>{m}</td><td>{e}</td></tr>",
                c = esc(&rule.column),
                ru = esc(&rule.rule),
                n = rule.count,
                m = esc(&rule.message),
                e = rule
                    .examples
                    .iter()
                    .map(|x| format!("<code>{}</code>", esc(x)))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        h.push_str("</table>");
    }
    if let Some(p) = &r.profile {
        profile(h, p);
    }
    h.push_str("</details>");
}

/// Each column: completeness, distinct values, min/max/mean, the most frequent
/// values as bars.
fn profile(h: &mut String, p: &Value) {
    let Some(columns) = p["completenessOverview"].as_object() else {
        return;
    };
    h.push_str("<h3>Profile</h3><table class=\"profile\"><tr><th>column</th><th>present</th><th>missing</th><th>distinct</th><th>min</th><th>max</th><th>mean</th><th>most frequent values</th></tr>");
    let order: Vec<String> = p["sampleData"]["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| columns.keys().cloned().collect());
    for col in order {
        let c = &columns.get(&col).cloned().unwrap_or(Value::Null);
        let stats = &p["statisticalSummary"][&col];
        let dist = &p["valueDistributions"][&col];
        let mut bars = String::new();
        if let Some(values) = dist["values"].as_array() {
            let most = values
                .iter()
                .filter_map(|v| v["count"].as_f64())
                .fold(1.0_f64, f64::max);
            for v in values.iter().take(8) {
                let n = v["count"].as_f64().unwrap_or(0.0);
                let _ = write!(
                    bars,
                    "<div><span class=\"bar\" style=\"width:{:.0}px\"></span> <code>{}</code> {}</div>",
                    (n / most * 120.0).max(1.0),
                    esc(v["value"].as_str().unwrap_or_default()),
                    n as i64
                );
            }
        }
        let _ = write!(
            h,
            "<tr data-column=\"{c0}\"><td>{c0}</td><td class=\"n present\">{}</td><td class=\"n missing\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{bars}</td></tr>",
            num(&c["present"]),
            num(&c["missing"]),
            num(&dist["distinct"]),
            num(&stats["min"]),
            num(&stats["max"]),
            num(&stats["mean"]),
            c0 = esc(&col),
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let mut report = Report {
            model_runs: BTreeMap::new(),
            graph: None,
            latest: vec![Outcome {
                at: "2025-02-01 00:00:00 UTC".into(),
                stage: "load-stage".into(),
                target: "d<b>".into(),
                period: Some("2025-01".into()),
                status: "refused".into(),
                failed: true,
                why: "refused by the <em>shrink</em> gate".into(),
                todo: todo("load-stage", "d<b>", Some("2025-01"), "refused"),
            }],
            datasets: vec![DatasetReport {
                name: "d".into(),
                min_quality_score: 80,
                drift: (None, None),
                runs: vec![RunReport {
                    dataset: "d".into(),
                    period: Some("2025-01".into()),
                    file_name: "<script>alert(1)</script>.csv".into(),
                    validation_id: 1,
                    rows_in: Some(2),
                    rows_rejected: Some(1),
                    score: Some(83),
                    passed: Some(true),
                    deductions: serde_json::json!({"format": 17.5}),
                    metrics: Value::Null,
                    rules: vec![RuleRow {
                        column: "name".into(),
                        rule: "regex".into(),
                        count: 1,
                        message: "does not match ^[a-z]+$".into(),
                        examples: vec!["<img src=x>".into()],
                    }],
                    profile: None,
                    quarantine_csv: None,
                    stale: Some("rules changed: <b>".into()),
                    load: Some("refused".into()),
                    history: vec![crate::ledger::Event {
                        at: chrono::Utc::now(),
                        kind: "load".into(),
                        id: 3,
                        status: "refused".into(),
                        detail: "refused by the <i>shrink</i> gate".into(),
                    }],
                    missing: None,
                }],
            }],
            audits: vec![AuditRow {
                model: "mart.m".into(),
                period: Some("2025-01".into()),
                audit: "expression(a <script>)".into(),
                severity: "error".into(),
                passed: false,
                failing: 2,
                blocked: true,
                sample: serde_json::json!([{"a": "<img src=y>"}]),
                checked_at: "2025-02-01 00:00:00 UTC".into(),
            }],
            rejections: vec![Rejection {
                dataset: Some("d".into()),
                period: Some("2025-01".into()),
                file_id: 4,
                file_name: "<svg onload=x>.csv".into(),
                reason: "missing column <u>".into(),
                last_seen_at: "2025-02-01 00:00".into(),
            }],
        };
        let graph = Graph::new(
            &report,
            vec![ModelNode {
                name: "mart.m<x>".into(),
                reads: vec!["stage.d".into()],
                columns: vec![("c<".into(), "computed".into(), vec!["stage.d.<y>".into()])],
            }],
        );
        report.graph = Some(graph);
        let page = report.html("now");
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("m<x>") && !page.contains("<y>"), "{page}");
        assert!(
            page.contains("data-node=\"stage.d\" data-state=\"refused\"")
                && page.contains("<a href=\"#dataset-d\""),
            "the dataset's node is red with its refused load and links to it: {page}"
        );
        assert!(
            page.contains("data-from=\"stage.d\" data-to=\"mart.m&lt;x&gt;\""),
            "{page}"
        );
        assert!(!page.contains("<img"), "{page}");
        for raw in ["<i>", "<svg onload", "<u>", "<em>", "d<b>"] {
            assert!(!page.contains(raw), "{raw} unescaped: {page}");
        }
        assert!(page.contains("17.50"), "{page}");
        assert!(page.contains("<td class=\"n score\">83</td>"), "{page}");
        assert!(
            page.contains("Stale: rules changed: &lt;b&gt;"),
            "a stale period says so: {page}"
        );
        assert!(
            page.contains("<td class=\"fail\">failed: rows rolled back</td><td class=\"n\">2</td>"),
            "a blocked audit says its rows were rolled back: {page}"
        );
        assert!(
            page.contains(
                "<code>pipeline load-stage --dataset d&lt;b&gt; --period 2025-01 --force</code>"
            ),
            "the command to run, as code: {page}"
        );
        assert!(
            page.contains("the load was refused") && !page.contains("redoes it"),
            "a refused load is not redone by a re-run: {page}"
        );
    }

    fn run(period: &str, rows: i64, missing_c: i64) -> RunReport {
        RunReport {
            dataset: "d".into(),
            period: Some(period.into()),
            file_name: format!("d_{period}.csv"),
            validation_id: 1,
            rows_in: Some(rows),
            rows_rejected: Some(0),
            score: Some(100),
            passed: Some(true),
            deductions: Value::Null,
            metrics: Value::Null,
            rules: Vec::new(),
            profile: None,
            quarantine_csv: None,
            stale: None,
            load: Some("loaded".into()),
            history: Vec::new(),
            missing: Some(
                serde_json::json!({"rows": rows, "columns": {"c": missing_c, "steady": 0}}),
            ),
        }
    }

    /// The trends (#49): rows per period with the drift gate's band around
    /// the median, and the missing share of the columns that moved (only
    /// those) with the gate's limit.
    #[test]
    fn trends_draw_rows_and_the_columns_whose_missing_share_moved() {
        let d = DatasetReport {
            name: "d".into(),
            min_quality_score: 80,
            drift: (Some(0.5), Some(0.05)),
            runs: vec![
                run("2025-01", 100, 0),
                run("2025-02", 100, 0),
                run("2025-03", 10, 5),
            ],
        };
        let rows = rows_chart(&d);
        assert!(
            rows.contains("drift row_count 0.5: 50–150 rows around the median 100")
                && rows.contains("<title>2025-03 rows 10</title>"),
            "{rows}"
        );
        let nulls = nulls_chart(&d);
        assert!(nulls.contains("data-column=\"c\""), "{nulls}");
        assert!(
            !nulls.contains("data-column=\"steady\""),
            "a column that did not move is left out: {nulls}"
        );
        assert!(nulls.contains("c + null_share 0.05"), "{nulls}");
        let flat = DatasetReport {
            runs: vec![run("2025-01", 100, 0), run("2025-02", 100, 0)],
            ..d
        };
        assert_eq!(nulls_chart(&flat), "", "nothing moved, no chart");
    }
}
