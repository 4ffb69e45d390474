//! Validate's and transform's plans on a DataFusion Ballista cluster (the
//! `ballista` Cargo feature): the client session `--engine ballista://host:port`
//! plans with, the codecs that carry our own parts of a plan, and the scheduler
//! and executor processes (`pipeline cluster scheduler|executor`).
//!
//! Our plans use three things DataFusion's protobuf does not know: the
//! landed-file source, the PostgreSQL tables and the rule functions; plus
//! in-memory tables (the duplicated keys, the processed keys). The codecs below
//! write each as a tagged description (JSON, or Arrow IPC for rows) and rebuild
//! it on the other side; everything else goes to Ballista's own codecs. Every
//! process runs this binary, so both ends know the same descriptions.
//!
//! What crosses the wire never holds a secret: executors read S3 with their own
//! `S3_*`/`AWS_*` variables and PostgreSQL with their own `DATABASE_URL`.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::pg_table::PgTable;
use crate::remote::Described;
use crate::rules;
use crate::validate::source;

/// Plans carry the processed keys of incremental datasets as rows: allow
/// messages far past gRPC's 16 MiB default (about 100 bytes a key).
const MAX_MESSAGE: u32 = 1 << 30;

/// Our descriptions start with this, which no protobuf message does (field 31
/// with wire type 7 does not exist), so Ballista's own bytes are never mistaken.
const MAGIC: &[u8] = b"\xffpipeline:";

fn tagged(tag: &str, body: &[u8], buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(tag.as_bytes());
    buf.push(0);
    buf.extend_from_slice(body);
}

/// The tag and body of one of our descriptions; None for anything else.
fn untag(buf: &[u8]) -> Option<(&str, &[u8])> {
    let rest = buf.strip_prefix(MAGIC)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&rest[..end]).ok()?, &rest[end + 1..]))
}

fn rows_to_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn rows_from_bytes(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

fn encode_udf(udf: &ScalarUDF, buf: &mut Vec<u8>) -> bool {
    // The dialect's functions are made again from their name alone.
    if crate::dialect::udf(udf.name()).is_some() {
        return true;
    }
    match rules::encode_udf(udf) {
        Some(bytes) => {
            buf.extend(bytes);
            true
        }
        None => false,
    }
}

/// The logical codec: the client encodes, the scheduler decodes.
#[derive(Debug, Default)]
pub struct LogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match untag(buf) {
            Some(("file", body)) => source::remote_table(
                serde_json::from_slice(body).map_err(crate::remote::json_error)?,
            ),
            Some(("pg", body)) => PgTable::remote(body),
            Some(("rows", body)) => {
                let (_, batches) = rows_from_bytes(body)?;
                Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
            }
            Some((tag, _)) => Err(DataFusionError::Internal(format!(
                "unknown table description `{tag}` for {table_ref}: are the client and the cluster the same pipeline version?"
            ))),
            None => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(scan) = source::describe(node.as_ref()) {
            let body = serde_json::to_vec(scan).map_err(crate::remote::json_error)?;
            tagged("file", &body, buf);
            return Ok(());
        }
        if let Some(body) = PgTable::describe(node.as_ref()) {
            tagged("pg", &body?, buf);
            return Ok(());
        }
        if let Some(mem) = node.downcast_ref::<MemTable>() {
            let mut batches = Vec::new();
            for part in &mem.batches {
                let part = part.try_read().map_err(|_| {
                    DataFusionError::Internal(format!("{table_ref} is being written"))
                })?;
                batches.extend(part.iter().cloned());
            }
            tagged("rows", &rows_to_bytes(&mem.schema(), &batches)?, buf);
            return Ok(());
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if let Some(udf) = crate::dialect::udf(name) {
            return Ok(Arc::new(udf));
        }
        match rules::decode_udf(name, buf) {
            Some(udf) => udf.map(Arc::new),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if encode_udf(node, buf) {
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }
}

/// The physical codec: the scheduler encodes tasks, executors decode them.
#[derive(Debug, Default)]
pub struct PhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match untag(buf) {
            Some(("file", body)) => {
                source::remote_exec(std::str::from_utf8(body).map_err(|e| {
                    DataFusionError::Internal(format!("a file scan is not UTF-8: {e}"))
                })?)
            }
            Some(("pg", body)) => PgTable::remote_exec(std::str::from_utf8(body).map_err(|e| {
                DataFusionError::Internal(format!("a PostgreSQL scan is not UTF-8: {e}"))
            })?),
            Some((tag, _)) => Err(DataFusionError::Internal(format!(
                "unknown scan description `{tag}`: are the scheduler and this executor the same pipeline version?"
            ))),
            None => self.ballista.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(d) = node.downcast_ref::<Described>() {
            tagged(d.kind, d.json.as_bytes(), buf);
            return Ok(());
        }
        self.ballista.try_encode(node, buf, converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if let Some(udf) = crate::dialect::udf(name) {
            return Ok(Arc::new(udf));
        }
        match rules::decode_udf(name, buf) {
            Some(udf) => udf.map(Arc::new),
            None => self.ballista.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if encode_udf(node, buf) {
            return Ok(());
        }
        self.ballista.try_encode_udf(node, buf)
    }
}

/// A session whose plans run on the scheduler at `address` (`host:port`).
/// Ballista connects at the first query; the scheduler is reached here first so
/// an unreachable one is reported as such, not as the failure of a plan step.
pub async fn client(address: &str) -> Result<SessionContext> {
    let reach = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(address),
    )
    .await;
    match reach {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(DataFusionError::Configuration(format!(
                "cannot reach the Ballista scheduler at {address}: {e}"
            )));
        }
        Err(_) => {
            return Err(DataFusionError::Configuration(format!(
                "cannot reach the Ballista scheduler at {address}: no answer in 10 s"
            )));
        }
    }
    let mut config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
        .with_information_schema(true)
        // Ballista 55's adaptive planner never finishes some of our jobs (the
        // scheduler spins in AdaptiveExecutionGraph::revive, memory growing, on
        // validate's plan for a dataset with no duplicated keys); the static
        // planner runs them.
        .set_str("ballista.planner.adaptive.enabled", "false");
    config.options_mut().sql_parser.collect_spans = true;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    SessionContext::remote_with_state(&format!("df://{address}"), state).await
}

fn split(address: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` is not HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("`{address}`: the port is not a number"))?;
    Ok((host.to_owned(), port))
}

/// Which server `pipeline cluster` runs.
#[derive(Debug, Clone)]
pub enum Role {
    /// Listens on `bind` (`HOST:PORT`) for plans and executors.
    Scheduler {
        bind: String,
    },
    Executor(Executor),
}

/// An executor's settings (`pipeline cluster executor --help` says each).
#[derive(Debug, Clone)]
pub struct Executor {
    pub scheduler: String,
    pub bind: String,
    pub grpc_port: u16,
    pub external_host: Option<String>,
    pub concurrent_tasks: usize,
    pub work_dir: Option<std::path::PathBuf>,
}

/// Why a server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A `HOST:PORT` that is not one (exit 2).
    #[error("{0}")]
    Address(String),
    /// The server could not start, or stopped on an error (exit 1).
    #[error("the {role} {what}: {message}")]
    Server {
        role: &'static str,
        what: &'static str,
        message: String,
    },
}

impl ClusterError {
    pub fn exit(&self) -> crate::exit::Exit {
        match self {
            ClusterError::Address(_) => crate::exit::Exit::Usage,
            ClusterError::Server { .. } => crate::exit::Exit::Failure,
        }
    }
}

fn server(role: &'static str, what: &'static str) -> impl FnOnce(String) -> ClusterError {
    move |message| ClusterError::Server {
        role,
        what,
        message,
    }
}

/// The [`crate::context::Connector`] for `engine: ballista://…`.
pub fn connect(address: String) -> futures::future::BoxFuture<'static, Result<SessionContext>> {
    Box::pin(async move { client(&address).await })
}

/// Runs a scheduler or an executor until it is stopped (SIGTERM, Ctrl-C).
pub async fn serve(role: &Role) -> std::result::Result<(), ClusterError> {
    match role {
        Role::Scheduler { bind } => scheduler(bind).await,
        Role::Executor(args) => executor(args).await,
    }
}

async fn scheduler(bind: &str) -> std::result::Result<(), ClusterError> {
    let (host, port) = split(bind).map_err(ClusterError::Address)?;
    let address: SocketAddr = bind
        .parse()
        .map_err(|e| ClusterError::Address(format!("--bind {bind}: {e}")))?;
    let mut config = SchedulerConfig {
        bind_host: host,
        bind_port: port,
        grpc_server_max_decoding_message_size: MAX_MESSAGE,
        grpc_server_max_encoding_message_size: MAX_MESSAGE,
        grpc_client_max_message_size: MAX_MESSAGE,
        ..SchedulerConfig::default()
    };
    config.override_logical_codec = Some(Arc::new(LogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(PhysicalCodec::default()));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| server("scheduler", "cannot start")(e.to_string()))?;
    tracing::info!(event = "scheduler_started", bind = %bind, "Ballista scheduler listening");
    start_server(cluster, address, Arc::new(config))
        .await
        .map_err(|e| server("scheduler", "stopped")(e.to_string()))
}

async fn executor(args: &Executor) -> std::result::Result<(), ClusterError> {
    let (bind_host, port) = split(&args.bind).map_err(ClusterError::Address)?;
    let (scheduler_host, scheduler_port) = split(&args.scheduler).map_err(ClusterError::Address)?;
    let config = ExecutorProcessConfig {
        bind_host: bind_host.clone(),
        external_host: args.external_host.clone().or(Some(bind_host)),
        port,
        grpc_port: args.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: args.concurrent_tasks,
        work_dir: args
            .work_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
        grpc_max_decoding_message_size: MAX_MESSAGE,
        grpc_max_encoding_message_size: MAX_MESSAGE,
        override_logical_codec: Some(Arc::new(LogicalCodec::default())),
        override_physical_codec: Some(Arc::new(PhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(event = "executor_started", bind = %args.bind, scheduler = %args.scheduler, "Ballista executor starting");
    let beat = tokio::spawn(heartbeat(args.bind.clone(), args.scheduler.clone()));
    let served = start_executor_process(Arc::new(config))
        .await
        .map_err(|e| server("executor", "stopped")(e.to_string()));
    beat.abort();
    served
}

/// Says this executor is alive in `meta.cluster_executors` every few seconds,
/// so a client fails fast when none is (see `context::executors_gone`).
async fn heartbeat(executor: String, scheduler: String) {
    let mut client = None;
    let mut warned = false;
    loop {
        if client.is_none() {
            client = crate::db::connect_as("pipeline cluster executor")
                .await
                .ok();
        }
        let beat = match &client {
            Some(c) => c
                .execute(
                    "INSERT INTO meta.cluster_executors (executor, scheduler) VALUES ($1, $2)
                     ON CONFLICT (executor) DO UPDATE
                        SET scheduler = EXCLUDED.scheduler, last_seen_at = clock_timestamp()",
                    &[&executor, &scheduler],
                )
                .await
                .map(|_| ())
                .map_err(|e| crate::exit::one_line(&e)),
            None => Err("cannot connect (is DATABASE_URL set?)".to_owned()),
        };
        match beat {
            Ok(()) => warned = false,
            Err(e) => {
                if !warned {
                    tracing::warn!(event = "heartbeat_failed", error = %e, "cannot report this executor alive in meta.cluster_executors; clients on this cluster will fail fast as if no executor ran");
                    warned = true;
                }
                client = None;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn descriptions_are_told_from_protobuf() {
        let mut buf = Vec::new();
        tagged("file", b"{\"a\":1}", &mut buf);
        assert_eq!(untag(&buf), Some(("file", &b"{\"a\":1}"[..])));
        assert_eq!(untag(b"\x0a\x03abc"), None);
    }

    #[test]
    fn in_memory_rows_round_trip_through_the_codec() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let table = Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap());
        let codec = LogicalCodec::default();
        let mut buf = Vec::new();
        let name = TableReference::bare("dups");
        codec
            .try_encode_table_provider(&name, table, &mut buf)
            .unwrap();
        let ctx = SessionContext::new();
        let back = codec
            .try_decode_table_provider(&buf, &name, schema, &ctx.task_ctx())
            .unwrap();
        let mem = back.downcast_ref::<MemTable>().unwrap();
        let rows = mem.batches[0].try_read().unwrap().clone();
        assert_eq!(rows, vec![batch]);
    }

    #[test]
    fn rule_functions_round_trip_through_the_codec() {
        let checks = rules::compile(
            &crate::config::Config::from_yaml(include_str!("../datasets_config.yml"))
                .unwrap()
                .datasets["citizens"],
        )
        .checks;
        let expr = rules::row_errors(&checks);
        let datafusion::logical_expr::Expr::ScalarFunction(f) = expr else {
            panic!("row_errors is a function call")
        };
        let codec = PhysicalCodec::default();
        let mut buf = Vec::new();
        codec.try_encode_udf(&f.func, &mut buf).unwrap();
        assert!(!buf.is_empty(), "the checks travel with the function");
        let back = codec.try_decode_udf("row_errors", &buf).unwrap();
        assert_eq!(back.as_ref(), f.func.as_ref(), "same checks, same function");

        // The uniqueness pass of a key of several columns hashes them on the executors.
        let key = rules::key_fingerprint(vec![rules::raw("a"), rules::raw("b")]);
        let datafusion::logical_expr::Expr::ScalarFunction(f) = key else {
            panic!("key_fingerprint is a function call")
        };
        let mut buf = Vec::new();
        codec.try_encode_udf(&f.func, &mut buf).unwrap();
        let back = codec.try_decode_udf("key_fingerprint", &buf).unwrap();
        assert_eq!(back.as_ref(), f.func.as_ref());
    }
}
