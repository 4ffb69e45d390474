//! The crate's top-level error and the exit codes orchestrators rely on.

use std::error::Error as StdError;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::db::DbError;
use crate::ingest::IngestError;
use crate::load_stage::LoadError;
use crate::migrate::MigrateError;
use crate::transform::TransformError;
use crate::validate::ValidateError;

/// Exit codes of the design's table; Airflow skips a task on 99.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Rejected = 3,
    Locked = 4,
    NothingToDo = 99,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Anything that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Usage,
            Error::Db(e) => e.exit(),
            Error::Migrate(e) => e.exit(),
            Error::Ingest(e) => e.exit(),
            Error::Validate(e) => e.exit(),
            Error::Load(e) => e.exit(),
            Error::Transform(e) => e.exit(),
            Error::Usage(_) => Exit::Usage,
        }
    }
}

/// The error and its causes, one per line, skipping causes the message already
/// quotes (many messages embed their source for one-line logs).
pub fn report(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut last = out.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // tokio-postgres wraps the server's message in an error that says only "db error".
        if text != "db error" && !last.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        last = text;
        source = cause.source();
    }
    out
}
