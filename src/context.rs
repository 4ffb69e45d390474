//! The one place that builds DataFusion sessions, so every stage plans and runs
//! with the same settings.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

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

/// Where validate's and transform's plans run: in this process (the default), or
/// on a DataFusion Ballista cluster (`engine: ballista://host:port` in the config,
/// or `--engine`), whose scheduler is `pipeline cluster scheduler`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Engine {
    #[default]
    InProcess,
    /// The scheduler's `host:port`.
    Ballista(String),
}

impl TryFrom<String> for Engine {
    type Error = String;

    fn try_from(text: String) -> Result<Engine, String> {
        Engine::parse(&text)
    }
}

impl Engine {
    pub fn parse(text: &str) -> Result<Engine, String> {
        let text = text.trim();
        if text.is_empty() || text == "in-process" {
            return Ok(Engine::InProcess);
        }
        let address = text.strip_prefix("ballista://").ok_or_else(|| {
            format!("engine `{text}` is neither `in-process` nor `ballista://host:port`")
        })?;
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Engine::Ballista(address.to_owned()))
            }
            _ => Err(format!(
                "engine `{text}`: expected ballista://host:port, e.g. ballista://scheduler:50050"
            )),
        }
    }

    /// Whether this binary can use it (Ballista is the `ballista` Cargo feature).
    pub fn available(&self) -> Result<(), String> {
        match self {
            Engine::Ballista(_) if !cfg!(feature = "ballista") => Err(
                "this pipeline binary was built without Ballista: build it with \
                 `cargo build --release --features ballista` to use engine ballista://"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// The session that plans and runs a stage's queries on `engine`: [`session`]
/// in process, or a client of the Ballista scheduler. Writes (Delta, PostgreSQL)
/// stay in this process either way.
pub async fn planner(
    engine: &Engine,
    memory_limit: usize,
) -> Result<SessionContext, datafusion::error::DataFusionError> {
    match engine {
        Engine::InProcess => Ok(session(memory_limit)),
        #[cfg(feature = "ballista")]
        Engine::Ballista(address) => crate::cluster::client(address).await,
        #[cfg(not(feature = "ballista"))]
        Engine::Ballista(_) => Err(datafusion::error::DataFusionError::Configuration(
            Engine::Ballista(String::new()).available().unwrap_err(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Engine;

    #[test]
    fn engines_parse_from_their_urls() {
        assert_eq!(Engine::parse("").unwrap(), Engine::InProcess);
        assert_eq!(Engine::parse("in-process").unwrap(), Engine::InProcess);
        assert_eq!(
            Engine::parse("ballista://sched.internal:50050").unwrap(),
            Engine::Ballista("sched.internal:50050".into())
        );
        for bad in [
            "ballista://",
            "ballista://host",
            "ballista://:50050",
            "spark://x:1",
            "ballista://h:99999",
        ] {
            assert!(Engine::parse(bad).is_err(), "{bad}");
        }
    }
}
