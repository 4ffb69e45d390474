//! The one integration-test binary: the real `pipeline` binary against a real
//! PostgreSQL (started by scripts/postgres.sh unless DATABASE_URL is set), each
//! test in a fresh database of its own.

mod alerts;
mod architecture;
mod audits;
mod cli;
#[cfg(feature = "ballista")]
mod cluster;
mod corpus;
mod dialect;
mod events;
mod files;
mod incremental;
mod ingest;
mod integrity;
mod load_stage;
mod metrics;
mod migrate;
mod report;
mod run_status;
mod s3_stage;
mod staleness;
mod support;
mod tls;
mod tpch_models;
mod transform;
mod validate;
