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
pub mod error;
pub mod events;
pub mod exit;
pub mod fault;
pub mod header;
pub mod ingest;
pub mod landed;
pub mod lineage;
pub mod load_stage;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod migrate;
pub mod period;
pub mod pg_copy;
pub mod progress;
pub mod quarantine;
pub mod redact;
pub mod remote;
pub mod replace;
pub mod report;
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

use serde_json::{Value, json};

pub use error::Error;
pub use exit::Exit;

use cli::{Cli, Command};
use config::Config;

/// What a command did: its exit code and the `--json` object describing it.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub summary: Value,
    /// A report for people, printed on stdout unless `--json` is given.
    pub human: Option<String>,
}

/// `report`: the page, and beside it each period's rejected rows as CSV.
async fn report_command(config: &Config, args: &cli::ReportArgs) -> Result<Outcome, Error> {
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
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let index = args.out.join("index.html");
    write(&index, &page.html(&generated)).map_err(failed)?;
    let periods: usize = page.datasets.iter().map(|d| d.runs.len()).sum();
    tracing::info!(event = "report_written", page = %index.display(), periods, "report written");
    Ok(Outcome {
        exit: Exit::Ok,
        summary: json!({
            "page": index.display().to_string(),
            "datasets": page.datasets.len(),
            "periods": periods,
            "quarantine_files": exports,
        }),
        human: Some(format!(
            "{}
",
            index.display()
        )),
    })
}

/// Runs one command. Errors carry their own exit code ([`Error::exit`]).
/// `alerts` receives the config's alert targets once it has loaded (a config
/// that does not load names none), so the caller alerts without loading it
/// again.
pub async fn execute(cli: &Cli, alerts: &mut Option<config::Alerts>) -> Result<Outcome, Error> {
    let started = Instant::now();
    #[cfg(feature = "ballista")]
    if let Command::Cluster(role) = &cli.command {
        // The servers read no dataset config: the plans they run carry it.
        return cluster::serve(role).await.map_err(Error::Usage);
    }
    let mut config = Config::load(&cli.config)?;
    alerts.clone_from(&config.alerts);
    if let Some(engine) = &cli.engine {
        config.engine = engine.clone();
    }
    if cli.command.plans() {
        config.engine.available().map_err(Error::Usage)?;
    }
    let mut outcome = match &cli.command {
        Command::Migrate => migrate_command(&config).await?,
        Command::Ingest(args) => ingest_command(&config, args).await?,
        Command::Validate(args) => validate_command(&config, args).await?,
        Command::LoadStage(args) => load_stage_command(&config, args).await?,
        Command::CheckCounts(args) => check_counts_command(&config, args).await?,
        Command::Transform(args) => transform_command(&config, args).await?,
        Command::Run(args) => run_command(&config, args).await?,
        Command::Quarantine(args) => quarantine_command(&config, args).await?,
        Command::Report(args) => report_command(&config, args).await?,
        Command::Status(args) => status_command(&config, args).await?,
        Command::Events(events) => events_command(&config, events).await?,
        Command::Manifest(args) => manifest_command(&config, args).await?,
        #[cfg(feature = "ballista")]
        Command::Cluster(_) => unreachable!("served above"),
    };
    if let Value::Object(map) = &mut outcome.summary {
        map.insert("command".into(), json!(cli.command.name()));
        map.insert("exit_code".into(), json!(outcome.exit.code()));
        let failed = !matches!(outcome.exit, Exit::Ok | Exit::NothingToDo);
        if failed && map.get("error").is_none_or(Value::is_null) {
            let error = failure_summary(map, cli.command.name(), outcome.exit);
            map.insert("error".into(), json!(error));
        }
        map.insert(
            "duration_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
    }
    Ok(outcome)
}

/// `events replay` and `events listen`
async fn events_command(config: &Config, command: &cli::EventsCommand) -> Result<Outcome, Error> {
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
    Ok(Outcome {
        exit: report.exit(),
        summary: serde_json::to_value(&report).expect("report serialises"),
        human: None,
    })
}

/// `manifest`
async fn manifest_command(config: &Config, args: &cli::ManifestArgs) -> Result<Outcome, Error> {
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
    Ok(Outcome {
        exit: Exit::Ok,
        summary: json!({"dataset": args.dataset, "out": args.out.display().to_string(), "rows": rows}),
        human: None,
    })
}

/// `migrate`
async fn migrate_command(config: &Config) -> Result<Outcome, Error> {
    let mut client = db::connect().await?;
    let report = migrate::run(&mut client, config).await?;
    Ok(Outcome {
        exit: Exit::Ok,
        summary: serde_json::to_value(&report).expect("report serialises"),
        human: None,
    })
}

/// `ingest`
async fn ingest_command(config: &Config, args: &cli::IngestArgs) -> Result<Outcome, Error> {
    let client = db::connect().await?;
    let report = ingest::run(config, &client, &args.request()).await?;
    let exit = report.exit(args.target.file_path.is_some());
    // --file-path: the one file's outcome; --all: counts and `files`
    // (documentation/output.schema.json names both shapes).
    let summary = match (&args.target.file_path, report.files.first()) {
        (Some(_), Some(file)) => serde_json::to_value(file),
        _ => serde_json::to_value(&report),
    };
    Ok(Outcome {
        exit,
        summary: summary.expect("report serialises"),
        human: None,
    })
}

/// `validate`
async fn validate_command(config: &Config, args: &cli::ValidateArgs) -> Result<Outcome, Error> {
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
        let sql = validate::explain(config, &client, &file).await?;
        Outcome {
            exit: Exit::Ok,
            summary: json!({"explained": true, "sql": sql}),
            human: Some(format!("{sql}\n")),
        }
    } else {
        let report = validate::run(config, &mut client, &file).await?;
        Outcome {
            exit: report.exit(),
            summary: serde_json::to_value(&report).expect("report serialises"),
            human: None,
        }
    })
}

/// `load-stage`
async fn load_stage_command(config: &Config, args: &cli::LoadStageArgs) -> Result<Outcome, Error> {
    let request = load_stage::Request {
        dataset: args.dataset.clone(),
        period: args.period.clone(),
        parquet_path: args.parquet_path.clone(),
        force: args.force,
        no_wait: args.no_wait,
        attempts: args.attempts,
    };
    let report = load_stage::run(config, &request).await?;
    Ok(Outcome {
        exit: Exit::Ok,
        summary: serde_json::to_value(&report).expect("report serialises"),
        human: None,
    })
}

/// `check-counts`
async fn check_counts_command(
    config: &Config,
    args: &cli::CheckCountsArgs,
) -> Result<Outcome, Error> {
    let counts = load_stage::check_counts(config, &args.dataset, args.period.as_deref()).await?;
    Ok(Outcome {
        exit: if counts.not_arrived {
            Exit::NotArrived
        } else if counts.exit_dag {
            Exit::NothingToDo
        } else {
            Exit::Ok
        },
        summary: serde_json::to_value(&counts).expect("counts serialise"),
        human: None,
    })
}

/// `transform`
async fn transform_command(config: &Config, args: &cli::TransformArgs) -> Result<Outcome, Error> {
    let request = transform::Request {
        period: args.period.clone(),
        model: args.model.clone(),
        dry_run: args.dry_run,
    };
    let report = transform::run(config, &request).await?;
    Ok(Outcome {
        exit: report.exit(),
        summary: serde_json::to_value(&report).expect("report serialises"),
        human: report.plans(),
    })
}

/// `run`
async fn run_command(config: &Config, args: &cli::RunArgs) -> Result<Outcome, Error> {
    let report = run::run(config, &args.request()).await?;
    Ok(Outcome {
        exit: report.exit(),
        human: Some(report.table()),
        summary: serde_json::to_value(&report).expect("report serialises"),
    })
}

/// `quarantine`
async fn quarantine_command(config: &Config, args: &cli::QuarantineArgs) -> Result<Outcome, Error> {
    let client = db::connect().await?;
    let report = quarantine::run(config, &client, &args.request()).await?;
    Ok(Outcome {
        exit: Exit::Ok,
        human: Some(report.render()),
        summary: serde_json::to_value(&report).expect("report serialises"),
    })
}

/// `status`
async fn status_command(config: &Config, args: &cli::StatusArgs) -> Result<Outcome, Error> {
    let client = db::connect().await?;
    let request = status::Request {
        models: transform::models::discover(&transform::sql_dir(config))
            .ok()
            .map(|models| models.iter().map(|m| m.target()).collect()),
        ..args.request()
    };
    let report = status::run(config, &client, &request).await?;
    let problems = report.problem_count();
    let mut summary = serde_json::to_value(&report).expect("report serialises");
    summary["problems"] = json!(problems);
    let exit = if args.check && problems > 0 {
        tracing::error!(
            event = "status_problems",
            problems,
            "status --check: {problems} problem(s) shown"
        );
        summary["error"] = json!(format!("{problems} problem(s): see the !! lines"));
        Exit::Rejected
    } else {
        Exit::Ok
    };
    Ok(Outcome {
        exit,
        human: Some(report.table()),
        summary,
    })
}

/// One sentence for a result that ended in a non-zero exit without an error of its
/// own (a rejected file, a failed model, a stage of `run`), so `--json` output
/// always carries `error` on failure.
fn failure_summary(map: &serde_json::Map<String, Value>, command: &str, exit: Exit) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    if let Some(reason) = map.get("reason").and_then(text) {
        return reason;
    }
    if let Some(stages) = map.get("stages").and_then(Value::as_array)
        && let Some(s) = stages
            .iter()
            .find(|s| s["exit_code"].as_u64() == Some(u64::from(exit.code())))
    {
        return format!(
            "{} {}: {}{}",
            s["dataset"].as_str().unwrap_or("*"),
            s["stage"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("failed"),
            s["detail"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    if let Some(models) = map.get("models").and_then(Value::as_array)
        && let Some(m) = models.iter().find(|m| m["status"] == "failed")
    {
        return format!(
            "model {} failed: {}",
            m["model"].as_str().unwrap_or("?"),
            m["error"].as_str().unwrap_or("see the log")
        );
    }
    if let (Some(score), Some(min)) = (map.get("score"), map.get("min_quality_score")) {
        return format!("the quality score {score} is below min_quality_score {min}");
    }
    if let Some(n) = map.get("rejected").and_then(Value::as_u64) {
        return format!("{n} file(s) rejected; see each file's reason");
    }
    format!("{command} exited {}", exit.code())
}
