//! The `pipeline` binary: parse arguments, start logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use pipeline::cli::Cli;
use pipeline::logging::LogFormat;
use pipeline::{Exit, alerts, execute, logging, metrics};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(event = "runtime_failed", error = %e, "cannot start the async runtime");
            return Exit::Failure.into();
        }
    };
    let mut targets = None;
    let outcome = runtime.block_on(execute(&cli, &mut targets));
    if let Err(failure) = &outcome.result {
        match cli.log_format {
            LogFormat::Json => {
                tracing::error!(event = "command_failed", command = outcome.command, exit_code = failure.exit.code(), error = %failure.error, "command failed")
            }
            // Operators read the last lines of stderr first: the error, in plain words.
            LogFormat::Pretty => eprintln!("error: {}", failure.error),
        }
    }
    runtime.block_on(async {
        metrics::export(
            &outcome,
            cli.metrics_file.as_deref(),
            cli.pushgateway.as_deref(),
        )
        .await;
        // A config that does not load names no alert targets.
        if let Some(targets) = &targets {
            alerts::send(targets, &outcome, cli.command.period()).await;
        }
    });
    if cli.json {
        println!("{}", outcome.to_json());
    } else if let Some(text) = outcome.report().and_then(|r| r.human()) {
        print!("{text}");
    }
    outcome.exit().into()
}
