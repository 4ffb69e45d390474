//! The one place that builds DataFusion sessions, so every stage plans and runs
//! with the same settings.

use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;

/// A session sized for this machine: one partition per core, 8192-row batches.
pub fn session() -> SessionContext {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = SessionConfig::new()
        .with_target_partitions(cores)
        .with_batch_size(8192)
        .with_information_schema(true);
    // Spans let errors in analysts' SQL point at a line and column.
    config.options_mut().sql_parser.collect_spans = true;
    SessionContext::new_with_config(config)
}
