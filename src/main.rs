//! The `pipeline` binary: parse arguments, start logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use pipeline::cli::{Cli, LogFormat};
use pipeline::{Exit, alerts, execute, exit, logging, metrics};

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
    let (exit, summary, human) = match runtime.block_on(execute(&cli, &mut targets)) {
        Ok(outcome) => (outcome.exit, outcome.summary, outcome.human),
        Err(err) => {
            let exit = err.exit();
            let text = exit::report(&err);
            match cli.log_format {
                LogFormat::Json => {
                    tracing::error!(event = "command_failed", command = cli.command.name(), exit_code = exit as u8, error = %text, "command failed")
                }
                // Operators read the last lines of stderr first: the error, in plain words.
                LogFormat::Pretty => eprintln!("error: {text}"),
            }
            let summary = serde_json::json!({
                "command": cli.command.name(),
                "exit_code": exit as u8,
                "error": text,
            });
            (exit, summary, None)
        }
    };
    runtime.block_on(async {
        metrics::export(
            &summary,
            cli.metrics_file.as_deref(),
            cli.pushgateway.as_deref(),
        )
        .await;
        // A config that does not load names no alert targets.
        if let Some(targets) = &targets {
            alerts::send(targets, &summary, cli.command.period()).await;
        }
    });
    if cli.json {
        println!("{summary}");
    } else if let Some(text) = &human {
        print!("{text}");
    }
    exit.into()
}
