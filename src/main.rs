//! The `pipeline` binary: parse arguments, start logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;
use pipeline::cli::{Cli, LogFormat};
use pipeline::{Exit, execute, exit, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(execute(&cli)) {
        Ok(outcome) => {
            if cli.json {
                println!("{}", outcome.summary);
            } else if let Some(text) = &outcome.human {
                print!("{text}");
            }
            outcome.exit.into()
        }
        Err(err) => {
            let exit = err.exit();
            let text = exit::report(&err);
            if cli.json {
                let summary = serde_json::json!({
                    "command": cli.command.name(),
                    "exit_code": exit as u8,
                    "error": text,
                });
                println!("{summary}");
            }
            match cli.log_format {
                LogFormat::Json => {
                    tracing::error!(command = cli.command.name(), exit_code = exit as u8, error = %text, "command failed")
                }
                // Operators read the last lines of stderr first: the error, in plain words.
                LogFormat::Pretty => eprintln!("error: {text}"),
            }
            exit.into()
        }
    }
}
