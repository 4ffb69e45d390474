//! Scans that can be sent to another process as data.
//!
//! The landed-file source and the PostgreSQL tables are our own code: an engine
//! that runs plans elsewhere (Ballista, `src/cluster.rs`) cannot rebuild them
//! from DataFusion's protobuf alone. A table decoded in such a process plans its
//! scan as a [`Described`]: the ordinary execution plan, plus a JSON description
//! from which the executor that runs it builds the same plan again.
//!
//! Errors lose their Rust type between processes; [`mark`] and [`marked`] carry
//! the two kinds validate must tell apart (a malformed file, bytes that changed
//! since ingest) through the text.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// An execution plan with the description it can be rebuilt from.
#[derive(Debug)]
pub struct Described {
    inner: Arc<dyn ExecutionPlan>,
    /// `file` or `pg`: which builder reads [`Described::json`].
    pub kind: &'static str,
    pub json: String,
}

impl Described {
    pub fn new(inner: Arc<dyn ExecutionPlan>, kind: &'static str, json: String) -> Arc<Self> {
        Arc::new(Described { inner, kind, json })
    }
}

impl DisplayAs for Described {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "kind={}", self.kind),
            _ => {
                let inner = datafusion::physical_plan::displayable(self.inner.as_ref())
                    .one_line()
                    .to_string();
                write!(f, "RemoteScan({}): {}", self.kind, inner.trim_end())
            }
        }
    }
}

impl ExecutionPlan for Described {
    fn name(&self) -> &str {
        "RemoteScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "a remote scan has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}

/// An Arrow schema as bytes (an IPC stream without batches).
pub fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(StreamReader::try_new(std::io::Cursor::new(bytes), None)?.schema())
}

/// A JSON error of a description, as DataFusion's.
pub fn json_error(e: serde_json::Error) -> DataFusionError {
    DataFusionError::Internal(format!("a remote scan description does not read: {e}"))
}

/// `text` between the markers of `kind`, so it survives being sent as text.
pub fn mark(kind: &str, text: &str) -> String {
    format!("[[{kind}]]{text}[[/{kind}]]")
}

/// The text [`mark`] wrapped, found anywhere in `error`'s message.
pub fn marked(kind: &str, error: &str) -> Option<String> {
    let open = format!("[[{kind}]]");
    let close = format!("[[/{kind}]]");
    let start = error.find(&open)? + open.len();
    let end = start + error[start..].find(&close)?;
    Some(error[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

    #[test]
    fn schemas_round_trip_through_bytes() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Decimal128(12, 2), true),
            Field::new("c", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        ]);
        let back = schema_from_bytes(&schema_bytes(&schema).unwrap()).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }

    #[test]
    fn marked_text_is_found_inside_wrapped_messages() {
        let sent = format!(
            "Job failed: Task 3 failed: Execution error: {}",
            mark("malformed", "line 7: unclosed quote")
        );
        assert_eq!(
            marked("malformed", &sent).as_deref(),
            Some("line 7: unclosed quote")
        );
        assert_eq!(marked("changed", &sent), None);
        assert_eq!(marked("malformed", "[[malformed]]no end"), None);
    }
}
