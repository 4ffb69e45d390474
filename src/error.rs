//! The crate's top-level error: any stage's error, each saying its own exit code.

use crate::config::ConfigError;
use crate::db::DbError;
use crate::exit::Exit;
use crate::ingest::IngestError;
use crate::load_stage::LoadError;
use crate::migrate::MigrateError;
use crate::quarantine::QuarantineError;
use crate::report::ReportError;
use crate::status::StatusError;
use crate::transform::TransformError;
use crate::validate::ValidateError;

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
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Diff(#[from] crate::diff::DiffError),
    #[error("cannot write the report to {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "ballista")]
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
            Error::Status(e) => e.exit(),
            Error::Quarantine(e) => e.exit(),
            Error::Report(e) => e.exit(),
            Error::Events(e) => e.exit(),
            Error::Run(e) => e.exit(),
            Error::Diff(e) => e.exit(),
            Error::Write { .. } => Exit::Failure,
            #[cfg(feature = "ballista")]
            Error::Cluster(e) => e.exit(),
            Error::Usage(_) => Exit::Usage,
        }
    }
}
