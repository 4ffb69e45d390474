//! `pipeline`: landed files through ingest, validate, load-stage and transform into
//! PostgreSQL, one period at a time, each stage generated from `datasets_config.yml`.
//!
//! `main.rs` only parses arguments and maps errors to exit codes; [`execute`]
//! dispatches each command to its stage module.

pub mod alerts;
pub mod blocking;
pub mod cli;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod config;
pub mod context;
pub mod db;
pub mod decision;
pub mod dialect;
pub mod diff;
pub mod error;
pub mod events;
pub mod exit;
pub mod fault;
pub mod header;
pub mod ingest;
pub mod landed;
pub mod ledger;
pub mod load_stage;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod migrate;
pub mod outcome;
pub mod partition;
pub mod period;
pub mod pg_copy;
pub mod pg_table;
pub mod progress;
pub mod quarantine;
pub mod redact;
pub mod remote;
pub mod replace;
pub mod report;
pub mod rules;
pub mod run;
pub mod s3;
pub mod sqs;
pub mod stage_table;
pub mod status;
pub mod table;
pub mod transform;
pub mod types;
pub mod validate;

use std::time::Instant;

pub use error::Error;
pub use exit::Exit;

use cli::{Cli, Command};
use config::Config;
use outcome::{Failure, ManifestWritten, Outcome, PageWritten, Report};

/// `report`: the page, and beside it each period's rejected rows as CSV.
async fn report_command(config: &Config, args: &cli::ReportArgs) -> Result<Report, Error> {
    let client = db::connect().await?;
    let request = report::Request {
        period: args.period.clone(),
        dataset: args.dataset.clone(),
    };
    let mut page = report::run(config, &client, &request).await?;
    let write = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))
            .and_then(|()| std::fs::write(path, text))
            .map_err(|source| (path.display().to_string(), source))
    };
    let failed = |(path, source)| Error::Write { path, source };
    let mut exports = Vec::new();
    for d in &mut page.datasets {
        for r in &mut d.runs {
            if r.rows_rejected.unwrap_or(0) == 0 {
                continue;
            }
            let rows = quarantine::run(
                config,
                &client,
                &quarantine::Request {
                    dataset: d.name.clone(),
                    period: r.period.clone(),
                    rule: None,
                    limit: u32::MAX as usize,
                    format: quarantine::Format::Csv,
                },
            )
            .await?;
            let rel = format!(
                "quarantine/{}_{}.csv",
                d.name,
                r.period.as_deref().unwrap_or("all")
            );
            write(&args.out.join(&rel), &rows.render()).map_err(failed)?;
            exports.push(rel.clone());
            r.quarantine_csv = Some(rel);
        }
    }
    // The project drawn, with each model's column lineage; models that do
    // not plan leave the graph out (their error is `run --plan`'s to say).
    match transform::lineage::run(config, None, None).await {
        Ok(lineage) => {
            let models = lineage.models.iter().map(model_node).collect();
            page.graph = Some(report::Graph::new(&page, models));
        }
        Err(e) => {
            tracing::warn!(event = "report_graph_left_out", error = %exit::one_line(&e), "the project graph is left out: the models do not plan");
        }
    }
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let index = args.out.join("index.html");
    write(&index, &page.html(&generated)).map_err(failed)?;
    let periods: usize = page.datasets.iter().map(|d| d.runs.len()).sum();
    tracing::info!(event = "report_written", page = %index.display(), periods, "report written");
    Ok(Report::Page(PageWritten {
        page: index.display().to_string(),
        datasets: page.datasets.len(),
        periods,
        quarantine_files: exports,
    }))
}

/// A model as the report draws it: the tables it reads and each column's sources.
fn model_node(m: &transform::lineage::ModelLineage) -> report::ModelNode {
    let mut reads: Vec<String> = (m.columns.iter())
        .flat_map(|c| c.from.iter().map(|s| s.table.clone()))
        .chain(m.filters.iter().map(|s| s.table.clone()))
        .collect();
    reads.sort();
    reads.dedup();
    let columns = (m.columns.iter())
        .map(|c| {
            let from = (c.from.iter())
                .map(|s| format!("{}.{}", s.table, s.column))
                .collect();
            (
                c.column.clone(),
                transform::lineage::usage(c.usage).to_owned(),
                from,
            )
        })
        .collect();
    report::ModelNode {
        name: m.model.clone(),
        reads,
        columns,
    }
}

/// Runs one command: its result, or the error that stopped it, as one
/// [`Outcome`] (never an `Err`: a failure is an outcome with its exit code).
/// `alerts` receives the config's alert targets once it has loaded (a config
/// that does not load names none), so the caller alerts without loading it
/// again.
pub async fn execute(cli: &Cli, alerts: &mut Option<config::Alerts>) -> Outcome {
    let started = Instant::now();
    let result = dispatch(cli, alerts).await.map_err(|err| Failure {
        exit: err.exit(),
        error: redact::text(&exit::report(&err)).into_owned(),
    });
    Outcome {
        command: cli.command.name(),
        result,
        duration: started.elapsed(),
    }
}

async fn dispatch(cli: &Cli, alerts: &mut Option<config::Alerts>) -> Result<Report, Error> {
    #[cfg(feature = "ballista")]
    {
        context::install_connector(cluster::connect);
        if let Command::Cluster(role) = &cli.command {
            // The servers read no dataset config: the plans they run carry it.
            cluster::serve(&role.role()).await?;
            return Ok(Report::Served);
        }
    }
    let mut config = Config::load(&cli.config)?;
    alerts.clone_from(&config.alerts);
    if let Some(engine) = &cli.engine {
        config.engine = engine.clone();
    }
    if cli.command.plans()
        && config.engine != config::Engine::InProcess
        && !cfg!(feature = "ballista")
    {
        return Err(Error::Usage(config::Engine::NOT_BUILT.to_owned()));
    }
    let report = match &cli.command {
        Command::Migrate => migrate_command(&config).await?,
        Command::Ingest(args) => ingest_command(&config, args).await?,
        Command::Validate(args) => validate_command(&config, args).await?,
        Command::LoadStage(args) => load_stage_command(&config, args).await?,
        Command::CheckCounts(args) => Report::CheckCounts(
            load_stage::check_counts(&config, &args.dataset, args.period.as_deref()).await?,
        ),
        Command::Transform(args) => transform_command(&config, args).await?,
        Command::Run(args) if args.plan => Report::Plan(run::plan(&config, &args.request()).await?),
        Command::Run(args) => Report::Run(run::run(&config, &args.request()).await?),
        Command::Quarantine(args) => quarantine_command(&config, args).await?,
        Command::Report(args) => report_command(&config, args).await?,
        Command::Status(args) => status_command(&config, args).await?,
        Command::Events(events) => events_command(&config, events).await?,
        Command::Manifest(args) => manifest_command(&config, args).await?,
        Command::Test(args) => Report::Test(
            transform::unit::run(&config, args.model.as_deref())
                .await
                .map_err(Error::from)?,
        ),
        Command::Lineage(args) => Report::Lineage {
            report: transform::lineage::run(&config, args.model.as_deref(), args.column.as_deref())
                .await
                .map_err(Error::from)?,
            dot: args.format == cli::LineageFormat::Dot,
        },
        Command::Diff(args) => {
            let client = db::connect().await?;
            let request = diff::Request {
                dataset: args.dataset.clone(),
                period: args.period.clone(),
                from_validation: args.from_validation,
                to_validation: args.to_validation,
                limit: args.limit,
            };
            Report::Diff(diff::run(&config, &client, &request).await?)
        }
        Command::Trace(args) => {
            let request = transform::trace::Request {
                model: args.model.clone(),
                period: args.period.clone().unwrap_or_default(),
                filter: args.filter.clone(),
                limit: args.limit,
            };
            Report::Trace(transform::trace::run(&config, &request).await?)
        }
        #[cfg(feature = "ballista")]
        Command::Cluster(_) => unreachable!("served above"),
    };
    Ok(report)
}

/// `events replay` and `events listen`
async fn events_command(config: &Config, command: &cli::EventsCommand) -> Result<Report, Error> {
    let mut client = db::connect().await?;
    let report = match command {
        cli::EventsCommand::Replay(args) => events::replay(config, &mut client, &args.file).await?,
        cli::EventsCommand::Listen(args) => {
            let queue = sqs::Queue::open(
                &args.sqs_queue_url,
                std::time::Duration::from_secs(args.wait_seconds),
                std::time::Duration::from_secs(args.visibility_timeout),
            )
            .map_err(events::EventsError::from)?;
            events::listen(config, &mut client, &queue, args.until_empty).await?
        }
    };
    Ok(Report::Events(report))
}

/// `manifest`
async fn manifest_command(config: &Config, args: &cli::ManifestArgs) -> Result<Report, Error> {
    match config.dataset(&args.dataset) {
        None => {
            return Err(Error::Usage(format!(
                "unknown dataset `{}` (configured: {})",
                args.dataset,
                config
                    .datasets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some(ds) if ds.incremental.is_none() => {
            return Err(Error::Usage(format!(
                "dataset `{}` is not incremental, so it has no processed keys",
                args.dataset
            )));
        }
        Some(_) => {}
    }
    let client = db::connect().await?;
    let rows = manifest::export(&client, &args.dataset, &args.out)
        .await
        .map_err(validate::ValidateError::from)?;
    tracing::info!(event = "manifest_written", dataset = %args.dataset, rows, out = %args.out.display(), "processed keys written");
    Ok(Report::Manifest(ManifestWritten {
        dataset: args.dataset.clone(),
        out: args.out.display().to_string(),
        rows,
    }))
}

/// `migrate`
async fn migrate_command(config: &Config) -> Result<Report, Error> {
    let mut client = db::connect().await?;
    Ok(Report::Migrate(migrate::run(&mut client, config).await?))
}

/// `ingest`
async fn ingest_command(config: &Config, args: &cli::IngestArgs) -> Result<Report, Error> {
    let client = db::connect().await?;
    // --file-path: the one file's outcome; --all: counts and `files`
    // (documentation/output.schema.json names both shapes).
    Ok(Report::Ingest {
        report: ingest::run(config, &client, &args.request()).await?,
        one_file: args.target.file_path.is_some(),
    })
}

/// `validate`
async fn validate_command(config: &Config, args: &cli::ValidateArgs) -> Result<Report, Error> {
    let mut client = db::connect().await?;
    let file = match args.file_id {
        Some(id) => validate::FileRef::Id(id),
        None => validate::FileRef::Current {
            dataset: args
                .dataset
                .clone()
                .expect("clap requires --file-id or --dataset"),
            period: args.period.clone(),
        },
    };
    Ok(if args.explain {
        Report::Explain {
            sql: validate::explain(config, &client, &file).await?,
        }
    } else {
        Report::Validate(validate::run(config, &mut client, &file).await?)
    })
}

/// `load-stage`
async fn load_stage_command(config: &Config, args: &cli::LoadStageArgs) -> Result<Report, Error> {
    let request = load_stage::Request {
        dataset: args.dataset.clone(),
        period: args.period.clone(),
        parquet_path: args.parquet_path.clone(),
        force: args.force,
        no_wait: args.no_wait,
        attempts: args.attempts,
    };
    Ok(Report::LoadStage(load_stage::run(config, &request).await?))
}

/// `transform`
async fn transform_command(config: &Config, args: &cli::TransformArgs) -> Result<Report, Error> {
    let request = transform::Request {
        period: args.period.clone().unwrap_or_default(),
        model: args.model.clone(),
        dry_run: args.dry_run,
        only: None,
    };
    Ok(Report::Transform(transform::run(config, &request).await?))
}

/// `quarantine`
async fn quarantine_command(config: &Config, args: &cli::QuarantineArgs) -> Result<Report, Error> {
    let client = db::connect().await?;
    Ok(Report::Quarantine(
        quarantine::run(config, &client, &args.request()).await?,
    ))
}

/// `status`
async fn status_command(config: &Config, args: &cli::StatusArgs) -> Result<Report, Error> {
    let client = db::connect().await?;
    let found = transform::models::discover(&transform::sql_dir(config)).ok();
    let request = status::Request {
        models: (found.as_ref()).map(|models| models.iter().map(|m| m.target()).collect()),
        specs: (found.as_ref())
            .map(|models| transform::models::specs(models, config))
            .unwrap_or_default(),
        ..args.request()
    };
    let report = status::run(config, &client, &request).await?;
    let problems = report.problem_count();
    if args.check && problems > 0 {
        tracing::error!(
            event = "status_problems",
            problems,
            "status --check: {problems} problem(s) shown"
        );
    }
    Ok(Report::Status {
        report,
        check: args.check,
    })
}
