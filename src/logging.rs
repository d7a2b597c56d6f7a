//! The agent's log: `tracing` events on stderr, as text for people or as JSON lines for log
//! shippers (`--log-format json`).
//!
//! Text has colours only when stderr is a terminal (and `NO_COLOR` is unset, as
//! <https://no-color.org> asks), so files and journald get no escape codes. JSON is one object per
//! line: `{"timestamp", "level", "target", "message", "fields", "spans"}`, where `spans` holds each
//! enclosing span's fields under its name (`"spans": {"source": {"name": "r1"}}`).

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: time, level, spans, message, fields; coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line (see the module documentation).
    Json,
}

/// Installs the process's log subscriber: stderr, in `format`, filtered by the `FLUMEN_LOG`
/// environment variable (an `EnvFilter` directive such as `info,flumen::sink=debug`; default
/// `info`).
///
/// # Panics
/// When a global subscriber is already installed.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FLUMEN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colours()).init(),
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(JsonLines).init(),
    }
}

/// Whether text logs are coloured: stderr is a terminal and `NO_COLOR` is unset or empty.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The JSON lines format. tracing-subscriber's own JSON format writes a span's name and its
/// fields into one object, so a span's `name` field (`info_span!("source", name = %name)`, as
/// flumen's spans have) would be written twice under one key; this one keys each span's fields by
/// the span's name.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), jiff::Timestamp::now().to_string().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        if !fields.0.is_empty() {
            line.insert("fields".into(), fields.0.into());
        }
        let mut spans = serde_json::Map::new();
        for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
            let extensions = span.extensions();
            // Recorded by `JsonFields`: the span's fields as a JSON object (empty without fields).
            let recorded = extensions
                .get::<FormattedFields<N>>()
                .and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok())
                .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
            spans.insert(span.name().into(), recorded);
        }
        if !spans.is_empty() {
            line.insert("spans".into(), spans.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields as JSON values: numbers and booleans as such, the rest as their text.
#[derive(Default)]
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
