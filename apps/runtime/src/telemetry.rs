//! Structured logs on stderr, filtered by `RUST_LOG` (default `info,rskafka=warn`), as text
//! or JSON lines (`LOG_FORMAT`). Text is coloured only when stderr, where logs go, is a
//! terminal and `NO_COLOR` is unset: a file or a log collector never gets escape codes.

use std::fmt::Write as _;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryArgs};

/// Installs the process's subscriber; a second call keeps the first.
pub fn init(args: &TelemetryArgs) {
    // rskafka logs every connection at info; its warnings are what an operator needs.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rskafka=warn"));
    // Logs go to stderr so stdout carries only what a binary prints for people (folio's
    // banner).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but empty.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`, `target`, the
/// event's fields (`message` among them) and `spans`, the names of the spans it is in.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let spans: Vec<Value> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .map(|span| Value::from(span.name()))
            .collect();
        let line = json_line(
            chrono::Utc::now(),
            event.metadata().level().as_str(),
            event.metadata().target(),
            |visitor| event.record(visitor),
            spans,
        );
        writeln!(writer, "{line}")
    }
}

fn json_line(
    at: chrono::DateTime<chrono::Utc>,
    level: &str,
    target: &str,
    record: impl FnOnce(&mut JsonFields),
    spans: Vec<Value>,
) -> String {
    let mut fields = JsonFields(Map::new());
    fields.0.insert(
        "timestamp".into(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .into(),
    );
    fields.0.insert("level".into(), level.into());
    fields.0.insert("target".into(), target.into());
    record(&mut fields);
    if !spans.is_empty() {
        fields.0.insert("spans".into(), Value::Array(spans));
    }
    Value::Object(fields.0).to_string()
}

/// An event's fields as JSON values: numbers and booleans stay themselves, the rest is
/// text.
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().into(), text.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())));
    }

    #[test]
    fn a_json_line_keeps_numbers_and_text_apart() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let line = json_line(
            at,
            "INFO",
            "folio",
            |f| {
                f.0.insert("message".into(), "stopped".into());
                f.0.insert("events".into(), 3u64.into());
            },
            vec!["worker".into()],
        );
        assert_eq!(
            line,
            r#"{"events":3,"level":"INFO","message":"stopped","spans":["worker"],"target":"folio","timestamp":"2023-11-14T22:13:20.000000Z"}"#
        );
    }
}
