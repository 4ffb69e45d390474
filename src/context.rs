//! The one place that builds DataFusion sessions, so every stage plans and runs
//! with the same settings.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

/// Memory DataFusion's operators may hold before they spill to disk (the
/// uniqueness pre-pass's hash of distinct keys is the one that grows with a file).
pub const MEMORY_LIMIT: usize = 256 << 20;

/// A session sized for this machine: one partition per core, 8192-row batches,
/// operators spilling past [`MEMORY_LIMIT`].
pub fn session() -> SessionContext {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = SessionConfig::new()
        .with_target_partitions(cores)
        .with_batch_size(8192)
        .with_information_schema(true);
    // Spans let errors in analysts' SQL point at a line and column.
    config.options_mut().sql_parser.collect_spans = true;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(MEMORY_LIMIT)))
        .build_arc()
        .expect("a runtime with a memory pool");
    SessionContext::new_with_config_rt(config, runtime)
}
