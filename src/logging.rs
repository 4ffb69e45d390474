//! Logs on stderr: readable lines, or one JSON object per line.
//!
//! Both flatten the fields of every open span (stage, dataset, period, ids) into
//! the event, each once, so each line stands alone in a log search. Every event
//! carries a stable machine name, `event` (`validated`, `file_rejected`...),
//! beside its human message; JSON lines show it, readable lines leave it out.
//! tracing-subscriber's formatters cannot do this: its JSON nests span fields
//! under `spans` and its text formats repeat a field each span sets.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output styles (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Pretty,
    /// One JSON object per line (level, ts, stage, dataset, period, ...).
    Json,
}

/// What dependencies log unless a directive names them: warnings. delta-rs logs
/// expected conditions (a table not created yet) as errors; its real failures
/// reach us as errors and are reported with context. A Ballista scheduler and
/// executor (`pipeline cluster …`) say what they run at info; the scheduler's
/// metrics display logs a harmless mismatch as an error on every stage.
const DEPENDENCIES: &str = "deltalake_core=off,delta_kernel=off,buoyant_kernel=off,\
ballista_scheduler=info,ballista_executor=info,ballista_scheduler::display=off,warn";

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
    let terminal = format == LogFormat::Pretty && std::io::stderr().is_terminal();
    crate::progress::init(terminal);
    let layer = Lines {
        json: format == LogFormat::Json,
        ansi: terminal,
        quiet: terminal && std::env::var_os("PIPELINE_LOG").is_none(),
    };
    tracing_subscriber::registry()
        .with(filter())
        .with(layer)
        .init();
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

/// Writes each event as one line: JSON (ts, level, msg, then the span and event
/// fields by name) or readable text (ts, level, span path, message, fields).
pub struct Lines {
    json: bool,
    ansi: bool,
    /// Info events not printed: on a terminal, unless PIPELINE_LOG asks,
    /// the progress lines and the result's table say what they would (spans
    /// stay enabled, so a warning still names its dataset and period).
    quiet: bool,
}

struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for Lines
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
        let mut spans = Vec::new();
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                spans.push(span.name());
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.0.clone());
                }
            }
        }
        let level = *event.metadata().level();
        if self.quiet && level > Level::WARN {
            return;
        }
        let mut own = Map::new();
        event.record(&mut JsonVisitor(&mut own));
        let text = if self.json {
            fields.extend(own);
            json_line(level, fields)
        } else {
            pretty_line(level, &spans, own, fields, self.ansi)
        };
        // Whatever a library quoted (a URL with its password) is hidden here.
        let text = crate::redact::text(&text);
        // A failed write to stderr has nowhere to be reported.
        let _ = crate::progress::Writer.write_all(text.as_bytes());
    }
}

/// `{"ts":…,"level":…,"msg":…, then the other fields by name}`
fn json_line(level: Level, mut fields: Map<String, Value>) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut text = format!(
        "{{\"ts\":{},\"level\":{}",
        Value::from(ts),
        Value::from(level.as_str().to_lowercase())
    );
    let msg = fields.remove("msg").map(|m| ("msg".to_owned(), m));
    for (key, value) in msg.into_iter().chain(fields) {
        text.push_str(&format!(",{}:{value}", Value::from(key)));
    }
    text.push_str("}\n");
    text
}

/// `ts LEVEL run:validate: message own=fields span=fields`, each field once;
/// `stage` is the span path already and `event` is for machines.
fn pretty_line(
    level: Level,
    spans: &[&str],
    mut own: Map<String, Value>,
    inherited: Map<String, Value>,
    ansi: bool,
) -> String {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let name = match (ansi, level) {
        (false, _) => format!("{:>5}", level.as_str()),
        (true, Level::ERROR) => format!("\x1b[31m{:>5}\x1b[0m", level.as_str()),
        (true, Level::WARN) => format!("\x1b[33m{:>5}\x1b[0m", level.as_str()),
        (true, Level::INFO) => format!("\x1b[32m{:>5}\x1b[0m", level.as_str()),
        (true, _) => format!("\x1b[34m{:>5}\x1b[0m", level.as_str()),
    };
    let mut text = format!("{ts} {name} ");
    if !spans.is_empty() {
        text.push_str(&spans.join(":"));
        text.push_str(": ");
    }
    if let Some(msg) = own.remove("msg") {
        text.push_str(&match msg {
            Value::String(s) => escape_controls(&s),
            other => other.to_string(),
        });
    }
    let shown: Vec<(String, Value)> = own
        .into_iter()
        .chain(inherited.into_iter().filter(|(k, _)| k != "stage"))
        .filter(|(k, _)| k != "event")
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (key, value) in shown {
        if !seen.insert(key.clone()) {
            continue;
        }
        let value = match value {
            Value::String(s) => {
                let s = escape_controls(&s);
                // Quoted when it has spaces, as it reads; JSON lines are the
                // form for parsers.
                if s.is_empty() || s.contains([' ', '=']) {
                    format!("\"{s}\"")
                } else {
                    s
                }
            }
            other => other.to_string(),
        };
        text.push_str(&format!(" {key}={value}"));
    }
    text.push('\n');
    text
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
    fn readable_lines_show_each_field_once_and_no_event_name() {
        let own: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "msg": "validated", "event": "validated", "score": 83, "period": "2025-06"
        }))
        .unwrap();
        let inherited: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "stage": "validate", "period": "2025-06", "dataset": "sales", "file": "a b.csv"
        }))
        .unwrap();
        let line = pretty_line(Level::INFO, &["run", "validate"], own, inherited, false);
        assert!(line.contains(" INFO run:validate: validated"), "{line}");
        assert_eq!(line.matches("period=").count(), 1, "{line}");
        assert!(!line.contains("stage="), "{line}");
        assert!(!line.contains("event="), "{line}");
        assert!(line.contains("dataset=sales"), "{line}");
        assert!(line.contains("file=\"a b.csv\""), "{line}");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn json_lines_lead_with_ts_level_msg() {
        let fields: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "msg": "validated", "event": "validated", "dataset": "sales"
        }))
        .unwrap();
        let line = json_line(Level::WARN, fields);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["level"], "warn");
        assert_eq!(parsed["event"], "validated");
        assert!(line.starts_with("{\"ts\":"), "{line}");
        assert!(
            line.contains("\"level\":\"warn\",\"msg\":\"validated\""),
            "{line}"
        );
    }

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
