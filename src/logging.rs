//! Logs on stderr: readable lines on a terminal, or one JSON object per line.
//!
//! The JSON lines flatten the fields of every open span (stage, dataset, period,
//! ids) into the event, so each line stands alone in a log search.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// What dependencies log unless a directive names them: warnings. delta-rs logs
/// expected conditions (a table not created yet) as errors; its real failures
/// reach us as errors and are reported with context.
const DEPENDENCIES: &str = "deltalake_core=off,delta_kernel=off,buoyant_kernel=off,warn";

/// The filter `PIPELINE_LOG` asks for. A bare level (`debug`) is this crate's
/// level, so DataFusion's and delta-rs's internals stay at warn (a debug run of
/// a 25-row file printed 34,607 lines otherwise); anything else is tracing's
/// EnvFilter syntax as given (`pipeline=debug,datafusion=debug`).
fn directives(value: Option<&str>) -> String {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => format!("pipeline=info,{DEPENDENCIES}"),
        Some(level)
            if ["trace", "debug", "info", "warn", "error", "off"]
                .contains(&level.to_ascii_lowercase().as_str()) =>
        {
            format!("pipeline={level},{DEPENDENCIES}")
        }
        Some(given) => given.to_owned(),
    }
}

fn filter() -> EnvFilter {
    let value = std::env::var("PIPELINE_LOG").ok();
    EnvFilter::try_new(directives(value.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(directives(None)))
}

/// Installs the global subscriber; call once, before any work.
pub fn init(format: LogFormat) {
    crate::progress::init(format);
    let registry = tracing_subscriber::registry().with(filter());
    match format {
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(
                        tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
                            let text = escape_controls(&format!("{value:?}"));
                            if field.name() == "message" {
                                write!(w, "{text}")
                            } else {
                                write!(w, "{field}={text}")
                            }
                        })
                        .delimited(" "),
                    )
                    .with_writer(|| crate::progress::Writer)
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .compact(),
            )
            .init(),
        LogFormat::Json => registry.with(JsonLines).init(),
    }
}

/// Control characters (a newline or ESC in a file name, say) written as escapes, so
/// a value can neither forge a log line nor reach the terminal as a command.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Writes each event as one JSON object: ts, level, msg, span fields, event fields.
pub struct JsonLines;

struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.0.clone());
                }
            }
        }
        event.record(&mut JsonVisitor(&mut fields));
        // ts, level and msg lead each line; the other fields follow by name.
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = event.metadata().level().as_str().to_lowercase();
        let mut text = format!(
            "{{\"ts\":{},\"level\":{}",
            Value::from(ts),
            Value::from(level)
        );
        let msg = fields.remove("msg").map(|m| ("msg".to_owned(), m));
        for (key, value) in msg.into_iter().chain(fields) {
            text.push_str(&format!(",{}:{value}", Value::from(key)));
        }
        text.push_str("}\n");
        // A failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(key.to_owned(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(crate::exit::report(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a.csv"), "a.csv");
        assert_eq!(escape_controls("a\nforged"), "a\\nforged");
        assert_eq!(escape_controls("x\u{1b}[31m"), "x\\u{1b}[31m");
    }

    #[test]
    fn a_bare_level_is_this_crates_and_dependencies_stay_at_warn() {
        assert_eq!(
            directives(Some("debug")),
            format!("pipeline=debug,{DEPENDENCIES}")
        );
        assert_eq!(directives(None), format!("pipeline=info,{DEPENDENCIES}"));
        assert_eq!(directives(Some(" ")), directives(None));
        assert_eq!(
            directives(Some("pipeline=debug,datafusion=trace")),
            "pipeline=debug,datafusion=trace"
        );
    }
}
