//! The JSON line format: `{"timestamp":…,"level":…,<the event's fields>,"target":…}`,
//! the fields tracing-subscriber's JSON formatter writes with `flatten_event(true)` and no
//! span fields, written straight into the line buffer.
//!
//! tracing-subscriber's formatter formats the timestamp into a fresh `String`, goes
//! through serde for every field and formats every `Display`/`Debug` field into another
//! `String` before escaping it. One line per request makes that a measurable share of the
//! request's instructions (docs/performance.md); here each value is escaped as it is
//! written, and the timestamp is computed with integer arithmetic.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `log.format = "json"`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            writer: &mut writer,
            log_target: None,
            result: Ok(()),
        };
        event.record(&mut fields);
        let Fields {
            log_target, result, ..
        } = fields;
        result?;
        writer.write_str(",\"target\":")?;
        // Records bridged from the `log` crate carry their real target as a field.
        write_escaped(
            &mut writer,
            log_target.as_deref().unwrap_or(metadata.target()),
        )?;
        writer.write_str("}\n")
    }
}

struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// `log.target` of a record bridged from the `log` crate.
    log_target: Option<String>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a member; `false` for fields not written (the `log` bridge's own).
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        self.result = self
            .writer
            .write_char(',')
            .and_then(|()| write_escaped(self.writer, name))
            .and_then(|()| self.writer.write_char(':'));
        self.result.is_ok()
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.key(field) {
            self.result = self.writer.write_fmt(value);
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        if self.key(field) {
            self.result = write_escaped(self.writer, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.result = self
                .writer
                .write_char('"')
                .and_then(|()| write!(Escaping(self.writer), "{value:?}"))
                .and_then(|()| self.writer.write_char('"'));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            // `{:?}` keeps a fraction (`1.0`), as serde_json writes floats.
            self.raw(field, format_args!("{value:?}"));
        } else {
            // JSON has no NaN or infinity (serde_json writes null too).
            self.raw(field, format_args!("null"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.result = self
                .writer
                .write_char('"')
                .and_then(|()| write!(Escaping(self.writer), "{value}"))
                .and_then(|()| self.writer.write_char('"'));
        }
    }
}

/// Escapes what it is given as the inside of a JSON string (RFC 8259 §7).
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            // Slicing at an ASCII byte is always on a character boundary.
            self.0.write_str(text.get(plain..i).unwrap_or_default())?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(text.get(plain..).unwrap_or_default())
    }
}

fn write_escaped(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaping(writer).write_str(text)?;
    writer.write_char('"')
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's `SystemTime` timer writes it
/// (`2026-12-02T06:27:21.123456Z`).
fn write_timestamp(writer: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    write!(
        writer,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
        let mut text = String::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_796_192_841_123_456);
        write_timestamp(&mut Writer::new(&mut text), at).unwrap();
        assert_eq!(text, "2026-12-02T06:27:21.123456Z");
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_json_with_every_field() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let route = "/v1/tasks/{id}";
            tracing::info!(
                target: "http.access",
                method = "GET",
                route,
                status = 200_u16,
                duration_ms = 1.5,
                whole = 2.0,
                nan = f64::NAN,
                ok = true,
                shown = %"quote \" backslash \\ newline \n tab \t bell \u{7}",
                "request"
            );
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let body = text
            .strip_prefix("{\"timestamp\":\"")
            .and_then(|rest| rest.strip_suffix("}\n"))
            .unwrap_or_else(|| panic!("not one JSON object line: {text}"));
        let (timestamp, rest) = body.split_at("2026-12-02T06:27:21.123456Z".len());
        assert!(
            timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{text}"
        );
        assert_eq!(
            rest,
            concat!(
                r#"","level":"INFO","message":"request","method":"GET","route":"/v1/tasks/{id}","#,
                r#""status":200,"duration_ms":1.5,"whole":2.0,"nan":null,"ok":true,"#,
                r#""shown":"quote \" backslash \\ newline \n tab \t bell \u0007","#,
                r#""target":"http.access""#
            )
        );
    }
}
