//! The `pipeline` binary: parse arguments, start logging, run, map to an exit code.

use std::process::ExitCode;

use pipeline::logging::LogFormat;
use pipeline::{Exit, alerts, execute, logging, metrics};

fn main() -> ExitCode {
    let cli = match pipeline::cli::parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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
            LogFormat::Pretty => eprintln!("error: {}", pipeline::redact::text(&failure.error)),
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
    // The last net: nothing printed shows a password a message quoted.
    if cli.json {
        println!("{}", pipeline::redact::text(&outcome.to_json().to_string()));
    } else if let Some(text) = outcome.report().and_then(|r| r.human()) {
        print!("{}", pipeline::redact::text(&text));
    }
    outcome.exit().into()
}

/// clap could not read the arguments: its message on stderr as usual and, with
/// `--json` anywhere on the line, the one JSON document stdout always holds
/// (`command` is the subcommand named, or `pipeline` when none could be read).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    // args_os: an argument that is not UTF-8 (clap refused it) must not panic here.
    let args: Vec<String> = (std::env::args_os().skip(1))
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let asked_json = args.iter().any(|a| a == "--json");
    // `cluster` exists only in builds with the ballista feature: say so.
    let hint = pipeline::cli::feature_hint(e.kind() == ErrorKind::InvalidSubcommand, &args);
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let _ = e.print();
    if let Some(hint) = hint {
        eprintln!("\n{hint}");
    }
    if !asked_json {
        return Exit::Usage.into();
    }
    // clap's message without its usage and hint: the lines from `error:` to
    // the first blank one, joined.
    let rendered = e.render().to_string();
    let detail = rendered
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error:").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let detail = match hint {
        Some(hint) => format!("{detail}; {hint}"),
        None => detail,
    };
    let document = serde_json::json!({
        "command": command_named(&args),
        "exit_code": Exit::Usage.code(),
        "error": detail,
        "duration_ms": 0,
    });
    println!("{document}");
    Exit::Usage.into()
}

/// The subcommand the arguments name (`events replay` for a nested one).
fn command_named(args: &[String]) -> String {
    let top = pipeline::cli::command();
    let Some((i, sub)) = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| top.find_subcommand(a).map(|s| (i, s)))
    else {
        return "pipeline".into();
    };
    let name = sub.get_name().to_owned();
    match args.get(i + 1).and_then(|a| sub.find_subcommand(a)) {
        Some(nested) => format!("{name} {}", nested.get_name()),
        None => name,
    }
}
