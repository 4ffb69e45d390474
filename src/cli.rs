//! The command line: one `Command` per stage, doc comments are the `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shown at the end of `--help`.
const EXIT_CODES: &str = "Exit codes:
  0   ok
  1   runtime failure
  2   usage or config error
  3   rejected (gate failed, quality below threshold)
  4   period locked by another run
  5   not arrived: no file has landed for the period yet (wait, then run again)
  99  nothing to do (Airflow skips the task)";

/// Takes files landing in a folder or S3 bucket through ingest, validate,
/// load-stage and transform into PostgreSQL, one period at a time.
///
/// DATABASE_URL names the PostgreSQL database; PIPELINE_LOG sets the log level
/// (e.g. debug). Logs go to stderr, `--json` results to stdout.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Cli {
    /// Dataset configuration file.
    #[arg(
        long,
        global = true,
        env = "PIPELINE_CONFIG",
        default_value = "datasets_config.yml"
    )]
    pub config: PathBuf,

    /// Print one JSON object with the command's result on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Format of the logs written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Write Prometheus metrics of this command to PATH when it ends (replaced
    /// whole; point it into node_exporter's textfile collector folder, e.g.
    /// /var/lib/prometheus/node-exporter/pipeline.prom).
    #[arg(
        long,
        global = true,
        env = "PIPELINE_METRICS_FILE",
        value_name = "PATH"
    )]
    pub metrics_file: Option<PathBuf>,

    /// Push the same metrics to this Prometheus Pushgateway (e.g.
    /// http://pushgateway:9091), grouped by job="pipeline" and command. A failed
    /// push is logged and never changes the exit code.
    #[arg(
        long,
        global = true,
        env = "PIPELINE_PUSHGATEWAY_URL",
        value_name = "URL"
    )]
    pub pushgateway: Option<String>,

    /// Where validate's and transform's plans run: `in-process`, or
    /// `ballista://host:port` for a Ballista scheduler started with `pipeline
    /// cluster scheduler` (needs a build with `--features ballista`). Overrides
    /// the config's `engine`.
    #[arg(
        long,
        global = true,
        env = "PIPELINE_ENGINE",
        value_name = "URL",
        value_parser = crate::config::Engine::parse
    )]
    pub engine: Option<crate::config::Engine>,

    #[command(subcommand)]
    pub command: Command,
}

pub use crate::logging::LogFormat;

/// The global options' ids, as clap names them.
const GLOBALS: &[&str] = &[
    "config",
    "json",
    "log_format",
    "metrics_file",
    "pushgateway",
    "engine",
];

/// Subcommands whose plans `--engine` decides.
const ENGINE_USERS: &[&str] = &["validate", "transform", "run", "events"];

/// Shown under each subcommand's options instead of the global ones.
const GLOBAL_NOTE: &str = "Global options (--config, --json, --log-format, --metrics-file, \
--pushgateway): see `pipeline --help`; they may be given before or after the subcommand.";

/// The command line as [`Cli`] declares it, with the global options listed
/// once, in `pipeline --help`: each subcommand still accepts them (a hidden
/// copy, so clap does not repeat them in its help) and names them in a line.
/// `--engine` is shown only where it decides something.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let root = Cli::command();
    let globals: Vec<clap::Arg> = (root.get_arguments())
        .filter(|a| GLOBALS.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    fn hide(sc: clap::Command, globals: &[clap::Arg], engine: Option<bool>) -> clap::Command {
        // Nested subcommands (`events replay`) plan as their parent does.
        let engine = engine.unwrap_or_else(|| ENGINE_USERS.contains(&sc.get_name()));
        let mut sc = sc.mut_subcommands(|c| hide(c, globals, Some(engine)));
        for a in globals {
            let shown = a.get_id() == "engine" && engine;
            sc = sc.arg(a.clone().hide(!shown));
        }
        let note = match sc.get_after_help() {
            Some(more) => format!("{more}\n\n{GLOBAL_NOTE}"),
            None => GLOBAL_NOTE.to_owned(),
        };
        sc.after_help(note)
    }
    root.mut_subcommands(|sc| hide(sc, &globals, None))
}

/// Parses the process's arguments with [`command`].
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let mut matches = command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    // `lineage --format json` is the command's --json document.
    if let Command::Lineage(a) = &cli.command
        && a.format == LineageFormat::Json
    {
        cli.json = true;
    }
    Ok(cli)
}

/// `--log-format`'s values: the formats are logging's, their spelling here.
impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Pretty, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            LogFormat::Pretty => PossibleValue::new("pretty").help("Readable lines for a terminal"),
            LogFormat::Json => PossibleValue::new("json")
                .help("One JSON object per line (level, ts, stage, dataset, period, ...)"),
        })
    }
}

/// `quarantine --format`'s values.
impl ValueEnum for QuarantineFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            QuarantineFormat::Table,
            QuarantineFormat::Csv,
            QuarantineFormat::Json,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            QuarantineFormat::Table => {
                PossibleValue::new("table").help("Aligned columns, one error per line")
            }
            QuarantineFormat::Csv => PossibleValue::new("csv").help("CSV with a header row"),
            QuarantineFormat::Json => {
                PossibleValue::new("json").help("One JSON array of the errors")
            }
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the meta, stage, core, mart and reporting schemas, and the
    /// stage table of every configured dataset.
    ///
    /// Safe to re-run and to run concurrently. When an existing stage table
    /// disagrees with the config, lists each difference with the ALTER that would
    /// fix it, changes nothing and exits 2.
    Migrate,

    /// Gate landed files: name, period and header checked, logged in
    /// meta.ingestion_log. The file is never copied or modified.
    Ingest(IngestArgs),

    /// Apply the dataset's rules: good rows to the cleaned Delta table, bad rows
    /// to quarantine, a quality score and profile to meta and reporting.
    Validate(ValidateArgs),

    /// Replace one period of stage.<dataset> with its cleaned rows, in one
    /// transaction.
    ///
    /// The rows are COPYed into a table of their own over one connection per
    /// core (at most 8; PIPELINE_COPY_STREAMS sets how many: fewer leave
    /// cores to other work) and swapped in for the period's partition (a full-refresh
    /// dataset's whole table) in the one transaction.
    LoadStage(LoadStageArgs),

    /// Run the SQL models in sql/core and sql/mart for a period, in dependency order.
    Transform(TransformArgs),

    /// All four stages for a period, in order, stopping a dataset at its first failure.
    Run(RunArgs),

    /// Whether stage already holds what the period's verdict in force produced
    /// (same file version, validation and Delta version, and the same row
    /// count): exit 99 when it does (already loaded), 0 when it does not (the
    /// reason says why: load it), 5 when no file has been ingested for the
    /// period yet.
    CheckCounts(CheckCountsArgs),

    /// The state of every dataset and period: files, stages, rows, scores, gaps.
    Status(StatusArgs),

    /// The rejected rows of a period, one line per error: its line in the file,
    /// column, rule, value and message (from the quarantine table version the
    /// period's latest validation wrote).
    Quarantine(QuarantineArgs),

    /// A self-contained HTML page of data quality (scores and deductions, score
    /// history, rule failures, column profiles) from reporting.*, with each
    /// period's rejected rows as CSV beside it; opens from a file, no server
    Report(ReportArgs),

    /// Process S3 object-created events: ingest, validate and score each object
    /// they name. Replaying the same events again changes nothing.
    #[command(subcommand)]
    Events(EventsCommand),

    /// Serve a Ballista cluster that runs validate's and transform's plans
    /// (`--engine ballista://host:port`): one scheduler and any number of
    /// executors, each a long-running process with the same binary, so the
    /// landed-file source and the rule functions are known everywhere.
    #[cfg(feature = "ballista")]
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Write an incremental dataset's processed keys (meta.processed_keys: key,
    /// row hash, valid/rejected, errors, night, file, when) to a Parquet file.
    Manifest(ManifestArgs),

    /// Run the models' unit tests (`tests:` in sql/<schema>/<model>.yml) on
    /// in-memory tables: no database needed. Prints each expected row not
    /// returned and each returned row not expected; exit 1 when one fails.
    Test(TestArgs),

    /// Column-level lineage from the models' plans (no database needed): for
    /// each model column, the columns it is computed from (another model's
    /// or a stage table's), down to the stage columns with their declared
    /// type and rules, and how each is used (copied, computed, aggregated);
    /// per model, the columns it filters or joins on.
    Lineage(LineageArgs),

    /// A period's cleaned rows compared by primary key: keys added, removed
    /// and changed, and per column how many keys changed it, with a few keys
    /// of each. By default the rows stage holds (what the load in force
    /// copied) against the latest verdict's (what a load would copy now).
    Diff(DiffArgs),

    /// From a model's rows back to the file lines they came from: the model
    /// computed for the period, its rows matching --where, and for each stage
    /// table it reads the rows that fed them — their file, verdict, load and
    /// line. Counts are exact; --limit caps the rows shown.
    Trace(TraceArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The model (`schema.name` or `name`).
    #[arg(long, value_name = "NAME")]
    pub model: String,
    /// The period to trace (omit for models replaced whole).
    #[arg(long, value_name = "P")]
    pub period: Option<String>,
    /// A condition on the model's columns, in SQL (`carrier = 'AA'`).
    #[arg(long = "where", value_name = "CONDITION")]
    pub filter: String,
    /// Rows shown of each kind (the counts stay exact).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Dataset to compare.
    #[arg(long, value_name = "D")]
    pub dataset: String,
    /// Period (omit for datasets with `period: none`).
    #[arg(long, value_name = "P")]
    pub period: Option<String>,
    /// The old side: this validation's rows (default: what stage holds).
    #[arg(long, value_name = "ID")]
    pub from_validation: Option<i64>,
    /// The new side: this validation's rows (default: the latest verdict's).
    #[arg(long, value_name = "ID")]
    pub to_validation: Option<i64>,
    /// Keys shown of each kind (added, removed, changed per column).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct LineageArgs {
    /// Only this model (`schema.name` or `name`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Only this column of the model(s).
    #[arg(long, value_name = "C")]
    pub column: Option<String>,
    /// `text` (default), `json` (as --json) or `dot` (Graphviz: source column → model column).
    #[arg(long, value_name = "text|json|dot", default_value = "text")]
    pub format: LineageFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LineageFormat {
    Text,
    Json,
    Dot,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only this model's tests (`schema.name` or `name`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The incremental dataset.
    #[arg(long, value_name = "D")]
    pub dataset: String,

    /// The Parquet file to write (replaced whole).
    #[arg(long, value_name = "FILE.parquet")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events from a file: an S3 notification (`{"Records": [...]}`), the
    /// monitoring seed's `{bucket, key, last_modified, size}` objects, a JSON array
    /// of either, or JSON Lines. A line that is not an event is reported
    /// (exit 2) and the others are still processed.
    Replay(EventsReplayArgs),

    /// Events from an SQS queue fed by S3 bucket notifications (long polling).
    /// A message is deleted once each object it names was processed, rejected
    /// or skipped; one whose object failed stays on the queue and comes back
    /// after the visibility timeout (give the queue a redrive policy for
    /// messages that never succeed).
    Listen(EventsListenArgs),
}

#[derive(Debug, Args)]
pub struct EventsReplayArgs {
    /// The events file.
    #[arg(value_name = "FILE.json")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct EventsListenArgs {
    /// The queue, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/landed.
    #[arg(long, value_name = "URL", env = "PIPELINE_SQS_QUEUE_URL")]
    pub sqs_queue_url: String,

    /// Long-polling wait per receive, in seconds (0-20).
    #[arg(long, value_name = "S", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_seconds: u64,

    /// Seconds a received message stays hidden while it is processed; a message
    /// not deleted by then is received again.
    #[arg(long, value_name = "S", default_value_t = 900)]
    pub visibility_timeout: u64,

    /// Stop when a receive finds no message (for cron) instead of listening on.
    #[arg(long)]
    pub until_empty: bool,
}

#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// Dataset whose rejected rows to show.
    #[arg(long, value_name = "D")]
    pub dataset: String,

    /// Period (omit for datasets with `period: none`).
    #[arg(long, value_name = "P")]
    pub period: Option<String>,

    /// Only errors of this rule (required, type, format, min, max, regex,
    /// allowed, unique, nul, …).
    #[arg(long, value_name = "RULE")]
    pub rule: Option<String>,

    /// Show at most N errors, in file order.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,

    /// How to print them (`--json` prints the whole report instead).
    #[arg(long, value_enum, default_value_t = QuarantineFormat::Table)]
    pub format: QuarantineFormat,
}

pub use crate::quarantine::Format as QuarantineFormat;

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct IngestTarget {
    /// One landed file (a path, or a name inside the landed dir; a name may
    /// start with `-`).
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    pub file_path: Option<String>,

    /// Every file in the landed dir (or its acquisition-date folder).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub target: IngestTarget,

    /// Acquisition-date folder (landed_dir/YYYY-MM-DD/) to read from; with --all and
    /// a landed dir organised by date, the newest folder when omitted.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub acq_date: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("file").required(true).args(["file_id", "dataset"])))]
pub struct ValidateArgs {
    /// The meta.ingestion_log id of an accepted file.
    #[arg(long, value_name = "ID", conflicts_with_all = ["dataset", "period"])]
    pub file_id: Option<i64>,

    /// Dataset whose current file for --period is validated.
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,

    /// Period to validate (omit for datasets with `period: none`).
    #[arg(long, value_name = "P", requires = "dataset")]
    pub period: Option<String>,

    /// Print the generated checks as SQL (DataFusion's unparser) and write nothing.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct LoadStageArgs {
    /// Dataset to load.
    #[arg(long, value_name = "D")]
    pub dataset: String,

    /// Period to replace (omit for datasets with `period: none`).
    #[arg(long, value_name = "P")]
    pub period: Option<String>,

    /// Load this Parquet file instead of the cleaned Delta table's period.
    #[arg(long, value_name = "PATH")]
    pub parquet_path: Option<PathBuf>,

    /// Load even though the period's validation did not pass (recorded in meta.load_log).
    #[arg(long)]
    pub force: bool,

    /// Exit 4 at once when another run holds the period, instead of waiting.
    #[arg(long)]
    pub no_wait: bool,

    /// Attempts for transient failures (connection lost, deadlock, serialization,
    /// admin shutdown), with exponential backoff and jitter.
    #[arg(long, value_name = "N", default_value_t = crate::load_stage::DEFAULT_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: u32,
}

#[derive(Debug, Args)]
pub struct TransformArgs {
    /// Period whose rows the models replace. Omit it when no dataset has
    /// periods (`period: none` everywhere): every model is then replaced whole.
    #[arg(long, value_name = "P")]
    pub period: Option<String>,

    /// Run only this model (and what it depends on).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Print the order, plans and first rows; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Period to run: what is stale in it is redone (a new file, changed
    /// rules, an unloaded verdict, a changed model or one whose inputs were
    /// replaced); exit 99 when nothing is. Omit it (and --from/--to) when no
    /// dataset has periods: the full-refresh datasets and models run alone.
    #[arg(long, value_name = "P", conflicts_with = "from")]
    pub period: Option<String>,

    /// First period of a range (backfill or restatement): each period from
    /// --from to --to in order, resumable (run it again after a crash: what
    /// finished is not redone).
    #[arg(long, value_name = "P", requires = "to")]
    pub from: Option<String>,

    /// Last period of the range.
    #[arg(long, value_name = "P", requires = "from")]
    pub to: Option<String>,

    /// Print what would be redone and why; change nothing (exit 99 when
    /// nothing is stale).
    #[arg(long)]
    pub plan: bool,

    /// Only this dataset (transform still runs the models it feeds).
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,

    /// Acquisition-date folder (landed_dir/YYYY-MM-DD/) to take the period's files
    /// from, e.g. to backfill from an older delivery; the newest folder when omitted.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub acq_date: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Folder to write index.html (and quarantine/*.csv) into; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,

    /// Only this period.
    #[arg(long, value_name = "P")]
    pub period: Option<String>,

    /// Only this dataset.
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckCountsArgs {
    /// Dataset to compare.
    #[arg(long, value_name = "D")]
    pub dataset: String,

    /// Period to compare.
    #[arg(long, value_name = "P")]
    pub period: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this period.
    #[arg(long, value_name = "P")]
    pub period: Option<String>,

    /// Only this dataset.
    #[arg(long, value_name = "D")]
    pub dataset: Option<String>,

    /// Exit 3 when any problem (a `!!` line: a gap, a broken ledger, a failed
    /// model) is shown, so a monitor can run `pipeline status --check`.
    #[arg(long)]
    pub check: bool,

    /// Also read every row and file the status rests on: stage compared value
    /// by value with the cleaned rows its load copied (catches rows edited in
    /// place), and every Parquet file of each verdict asked for. Reads each
    /// loaded period in full.
    #[arg(long)]
    pub deep: bool,
}

impl IngestArgs {
    pub fn request(&self) -> crate::ingest::Request {
        crate::ingest::Request {
            file_path: self.target.file_path.clone(),
            acq_date: self.acq_date.clone(),
        }
    }
}

impl RunArgs {
    pub fn request(&self) -> crate::run::Request {
        crate::run::Request {
            period: self
                .period
                .clone()
                .or(self.from.clone())
                .unwrap_or_default(),
            to: self.to.clone(),
            dataset: self.dataset.clone(),
            acq_date: self.acq_date.clone(),
        }
    }
}

impl StatusArgs {
    pub fn request(&self) -> crate::status::Request {
        crate::status::Request {
            period: self.period.clone(),
            dataset: self.dataset.clone(),
            models: None,
            specs: Vec::new(),
            deep: self.deep,
        }
    }
}

impl QuarantineArgs {
    pub fn request(&self) -> crate::quarantine::Request {
        crate::quarantine::Request {
            dataset: self.dataset.clone(),
            period: self.period.clone(),
            rule: self.rule.clone(),
            limit: self.limit,
            format: self.format,
        }
    }
}

/// What to add to clap's "unrecognized subcommand" when the subcommand is
/// one this build leaves out (`cluster` without the ballista feature).
pub fn feature_hint(unrecognized: bool, args: &[String]) -> Option<&'static str> {
    hint_for(unrecognized, args, cfg!(feature = "ballista"))
}

fn hint_for(unrecognized: bool, args: &[String], with_ballista: bool) -> Option<&'static str> {
    (unrecognized && !with_ballista && args.iter().any(|a| a == "cluster")).then_some(
        "`cluster` is part of builds with the `ballista` feature: cargo build --release --features ballista",
    )
}

impl Command {
    /// The period the command was asked for, if it takes one.
    pub fn period(&self) -> Option<&str> {
        match self {
            Command::Validate(a) => a.period.as_deref(),
            Command::LoadStage(a) => a.period.as_deref(),
            Command::Transform(a) => a.period.as_deref(),
            Command::Run(a) => a.period.as_deref().or(a.from.as_deref()),
            Command::CheckCounts(a) => a.period.as_deref(),
            Command::Status(a) => a.period.as_deref(),
            Command::Quarantine(a) => a.period.as_deref(),
            Command::Report(a) => a.period.as_deref(),
            Command::Migrate
            | Command::Ingest(_)
            | Command::Events(_)
            | Command::Manifest(_)
            | Command::Test(_)
            | Command::Lineage(_) => None,
            Command::Diff(a) => a.period.as_deref(),
            Command::Trace(a) => a.period.as_deref(),
            #[cfg(feature = "ballista")]
            Command::Cluster(_) => None,
        }
    }

    /// The name used in logs and `--json` output.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Ingest(_) => "ingest",
            Command::Validate(_) => "validate",
            Command::LoadStage(_) => "load-stage",
            Command::Transform(_) => "transform",
            Command::Run(_) => "run",
            Command::CheckCounts(_) => "check-counts",
            Command::Status(_) => "status",
            Command::Quarantine(_) => "quarantine",
            Command::Report(_) => "report",
            Command::Events(EventsCommand::Replay(_)) => "events replay",
            Command::Events(EventsCommand::Listen(_)) => "events listen",
            Command::Manifest(_) => "manifest",
            Command::Test(_) => "test",
            Command::Lineage(_) => "lineage",
            Command::Diff(_) => "diff",
            Command::Trace(_) => "trace",
            #[cfg(feature = "ballista")]
            Command::Cluster(ClusterCommand::Scheduler(_)) => "cluster scheduler",
            #[cfg(feature = "ballista")]
            Command::Cluster(ClusterCommand::Executor(_)) => "cluster executor",
        }
    }

    /// Whether the command plans queries on the configured engine.
    pub fn plans(&self) -> bool {
        matches!(
            self,
            Command::Validate(_) | Command::Transform(_) | Command::Run(_) | Command::Events(_)
        )
    }
}

#[cfg(feature = "ballista")]
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The scheduler: takes plans from `pipeline --engine ballista://HOST:PORT`
    /// and hands their tasks to the executors.
    Scheduler(SchedulerArgs),
    /// An executor: registers with the scheduler and runs tasks. Reads landed
    /// files with its own S3_* credentials and PostgreSQL with its own DATABASE_URL.
    Executor(ExecutorArgs),
}

#[cfg(feature = "ballista")]
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on: loopback unless told otherwise (the gRPC is
    /// plaintext and unauthenticated; bind a private interface to serve
    /// executors on other hosts).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    pub bind: String,
}

#[cfg(feature = "ballista")]
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler's address.
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:50050")]
    pub scheduler: String,
    /// Address to listen on for Arrow Flight (shuffle and result reads):
    /// loopback unless told otherwise, as for the scheduler.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
    pub bind: String,
    /// Port of the executor's gRPC service.
    #[arg(long, value_name = "PORT", default_value_t = 50052)]
    pub grpc_port: u16,
    /// The host name other processes reach this executor by (default: the bind host).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub concurrent_tasks: usize,
    /// Folder for shuffle files (default: a fresh temporary folder).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<std::path::PathBuf>,
}

#[cfg(feature = "ballista")]
impl ClusterCommand {
    /// The server to run, in the cluster's own terms.
    pub fn role(&self) -> crate::cluster::Role {
        use crate::cluster::{Executor, Role};
        match self {
            ClusterCommand::Scheduler(args) => Role::Scheduler {
                bind: args.bind.clone(),
            },
            ClusterCommand::Executor(args) => Role::Executor(Executor {
                scheduler: args.scheduler.clone(),
                bind: args.bind.clone(),
                grpc_port: args.grpc_port,
                external_host: args.external_host.clone(),
                concurrent_tasks: args.concurrent_tasks,
                work_dir: args.work_dir.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {

    fn help_of(path: &[&str]) -> String {
        let mut cmd = super::command();
        cmd.build();
        let mut sc = &mut cmd;
        for name in path {
            sc = sc.find_subcommand_mut(name).expect("a subcommand");
        }
        sc.render_long_help().to_string()
    }

    #[test]
    fn global_options_are_listed_once_and_accepted_everywhere() {
        let top = help_of(&[]);
        for flag in [
            "--config",
            "--json",
            "--log-format",
            "--metrics-file",
            "--pushgateway",
            "--engine",
        ] {
            assert!(top.contains(flag), "pipeline --help lacks {flag}");
        }
        let migrate = help_of(&["migrate"]);
        assert!(
            !migrate.contains("--pushgateway <URL>") && !migrate.contains("--engine"),
            "{migrate}"
        );
        assert!(migrate.contains("see `pipeline"), "{migrate}");
        assert!(help_of(&["validate"]).contains("--engine <URL>"));
        assert!(help_of(&["events", "replay"]).contains("--engine <URL>"));
        assert!(!help_of(&["ingest"]).contains("--engine"));
        use clap::FromArgMatches;
        for args in [
            &["pipeline", "--json", "migrate"][..],
            &["pipeline", "migrate", "--json"][..],
        ] {
            let m = super::command().try_get_matches_from(args).expect("parses");
            assert!(Cli::from_arg_matches(&m).expect("a Cli").json, "{args:?}");
        }
        let m = super::command()
            .try_get_matches_from(["pipeline", "ingest", "--all", "--engine", "in-process"])
            .expect("still accepted, as before");
        assert!(Cli::from_arg_matches(&m).expect("a Cli").engine.is_some());
    }

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_default_build_names_the_feature_cluster_needs() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let hint = hint_for(true, &args(&["cluster", "scheduler"]), false).unwrap();
        assert!(hint.contains("--features ballista"), "{hint}");
        assert_eq!(hint_for(true, &args(&["cluster"]), true), None);
        assert_eq!(hint_for(true, &args(&["frobnicate"]), false), None);
        assert_eq!(hint_for(false, &args(&["cluster"]), false), None);
    }

    #[test]
    fn ingest_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["pipeline", "ingest"]).is_err());
        assert!(Cli::try_parse_from(["pipeline", "ingest", "--all", "--file-path", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["pipeline", "ingest", "--all", "--acq-date", "2025-01-01"])
                .is_ok()
        );
    }

    #[test]
    fn validate_takes_file_id_or_dataset() {
        assert!(Cli::try_parse_from(["pipeline", "validate"]).is_err());
        assert!(
            Cli::try_parse_from(["pipeline", "validate", "--file-id", "3", "--dataset", "a"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "pipeline",
                "validate",
                "--dataset",
                "a",
                "--period",
                "2025-01"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["pipeline", "validate", "--file-id", "3"]).is_ok());
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "pipeline",
            "migrate",
            "--json",
            "--log-format",
            "json",
            "--config",
            "x.yml",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.config, PathBuf::from("x.yml"));
    }
}
