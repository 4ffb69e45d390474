//! The one place that builds DataFusion sessions, so every stage plans and runs
//! with the same settings.

use std::sync::{Arc, OnceLock};

use datafusion::error::DataFusionError;
use futures::future::BoxFuture;

use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use crate::config::Engine;

/// A session sized for this machine: one partition per core, 8192-row batches,
/// operators spilling past `memory_limit` bytes (`limits.memory_bytes`, 256 MiB
/// by default).
pub fn session(memory_limit: usize) -> SessionContext {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = SessionConfig::new()
        .with_target_partitions(cores)
        .with_batch_size(8192)
        .with_information_schema(true);
    // Spans let errors in analysts' SQL point at a line and column.
    config.options_mut().sql_parser.collect_spans = true;
    // Each sort keeps this much aside to merge its spill files; DataFusion's
    // 10 MiB default alone would exhaust a small pool before anything spills.
    let execution = &mut config.options_mut().execution;
    execution.sort_spill_reservation_bytes = execution
        .sort_spill_reservation_bytes
        .min(memory_limit / 16);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_limit)))
        .build_arc()
        .expect("a runtime with a memory pool");
    SessionContext::new_with_config_rt(config, runtime)
}

/// How a session reaches a Ballista scheduler at `host:port`. `crate::cluster`
/// installs it ([`install_connector`]): its codecs carry the stages' own sources
/// and functions, so it sits above the stages, and this module, below them,
/// only calls what was installed.
pub type Connector = fn(String) -> BoxFuture<'static, Result<SessionContext, DataFusionError>>;

static CONNECTOR: OnceLock<Connector> = OnceLock::new();

/// Makes `engine: ballista://…` reachable; the first call wins.
pub fn install_connector(connect: Connector) {
    let _ = CONNECTOR.set(connect);
}

/// The session that plans and runs a stage's queries on `engine`: [`session`]
/// in process, or a client of the Ballista scheduler. Writes (Delta, PostgreSQL)
/// stay in this process either way.
pub async fn planner(
    engine: &Engine,
    memory_limit: usize,
) -> Result<SessionContext, DataFusionError> {
    match engine {
        Engine::InProcess => Ok(session(memory_limit)),
        Engine::Ballista(address) => match CONNECTOR.get() {
            Some(connect) => connect(address.clone()).await,
            None => Err(DataFusionError::Configuration(Engine::NOT_BUILT.to_owned())),
        },
    }
}

/// How long a command on a Ballista cluster waits for a live executor:
/// `PIPELINE_CLUSTER_WAIT_SECONDS`, default 60.
pub fn cluster_wait() -> std::time::Duration {
    let secs = std::env::var("PIPELINE_CLUSTER_WAIT_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// Resolves (with what to tell the operator) once no executor has reported
/// alive in `meta.cluster_executors` (executors report every 5 s; alive means
/// within 15 s) for [`cluster_wait`]; never while one does. Raced against a command's work on `--engine ballista://…`, it ends a
/// job Ballista would keep queued forever.
pub async fn executors_gone(scheduler: &str) -> String {
    let wait = cluster_wait();
    let client = crate::db::connect_as("pipeline cluster watch").await.ok();
    let mut since = std::time::Instant::now();
    loop {
        let alive = match &client {
            Some(c) => c
                .query_one(
                    "SELECT count(*) FROM meta.cluster_executors
                      WHERE last_seen_at > clock_timestamp() - interval '15 seconds'",
                    &[],
                )
                .await
                .map(|r| r.get::<_, i64>(0) > 0)
                // Not knowing is not "none": the job goes on.
                .unwrap_or(true),
            None => true,
        };
        if alive {
            since = std::time::Instant::now();
        } else if since.elapsed() >= wait {
            return format!(
                "no Ballista executor has been alive for {}s (none reported in \
                 meta.cluster_executors): the scheduler at {scheduler} would keep the job queued. \
                 Start `pipeline cluster executor --scheduler …` (with DATABASE_URL set, so it \
                 reports), or run in process (`--engine in-process`); PIPELINE_CLUSTER_WAIT_SECONDS \
                 sets the wait",
                wait.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2).min(wait)).await;
    }
}
