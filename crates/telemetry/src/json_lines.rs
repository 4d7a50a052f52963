//! The JSON line format: `{"timestamp":…,"level":…,<the event's fields>,"target":…}`,
//! the fields tracing-subscriber's JSON formatter writes with `flatten_event(true)` and no
//! span fields, written straight into the line buffer.
//!
//! tracing-subscriber's formatter formats the timestamp into a fresh `String`, goes
//! through serde for every field and formats every `Display`/`Debug` field into another
//! `String` before escaping it. One line per request makes that a measurable share of the
//! request's instructions (docs/performance.md); here each value is escaped as it is
//! written, and the timestamp is computed with integer arithmetic.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::{Context, Layer};

/// The layer of `log.format = "json"`: every event becomes one line; spans are not looked
/// at. A layer of its own rather than `fmt::layer()` behind an events-only per-layer
/// filter: that filter kept the formatter from rendering span fields, but a per-layer
/// filter makes the registry look every span up on every enter and exit (nine of each per
/// request) only to find it filtered out.
pub(crate) struct JsonLinesLayer<W> {
    make_writer: W,
}

impl<W> JsonLinesLayer<W> {
    pub(crate) fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

thread_local! {
    /// The line being formatted, reused (as tracing-subscriber's fmt layer does).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, W> Layer<S> for JsonLinesLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        LINE.with(|line| {
            // An event logged while a line is being formatted (by a `Debug` impl, say)
            // gets a buffer of its own.
            let mut fresh = String::new();
            let mut borrowed = line.try_borrow_mut();
            let line = match &mut borrowed {
                Ok(line) => &mut **line,
                Err(_) => &mut fresh,
            };
            line.clear();
            // Failures are reported as tracing-subscriber's fmt layer reports them.
            let mut writer = self.make_writer.make_writer_for(event.metadata());
            if write_line(&mut Writer::new(line), event).is_ok() {
                if let Err(error) = writer.write_all(line.as_bytes()) {
                    eprintln!(
                        "[tracing-subscriber] Unable to write an event to the Writer for this Subscriber! Error: {error}\n"
                    );
                }
            } else {
                let message = format!(
                    "Unable to format the following event. Name: {}; Fields: {:?}\n",
                    event.metadata().name(),
                    event.fields()
                );
                if let Err(error) = writer.write_all(message.as_bytes()) {
                    eprintln!(
                        "[tracing-subscriber] Unable to write an \"event formatting error\" to the Writer for this Subscriber! Error: {error}\n"
                    );
                }
            }
            line.clear();
        });
    }
}

/// One event as a JSON line, newline included.
fn write_line(writer: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
    let metadata = event.metadata();
    writer.write_str("{\"timestamp\":\"")?;
    write_timestamp(writer, SystemTime::now())?;
    writer.write_str("\",\"level\":\"")?;
    writer.write_str(metadata.level().as_str())?;
    writer.write_char('"')?;
    let mut fields = Fields {
        writer,
        log_target: None,
        result: Ok(()),
    };
    event.record(&mut fields);
    let Fields {
        writer,
        log_target,
        result,
    } = fields;
    result?;
    writer.write_str(",\"target\":")?;
    // Records bridged from the `log` crate carry their real target as a field.
    write_escaped(writer, log_target.as_deref().unwrap_or(metadata.target()))?;
    writer.write_str("}\n")
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
        // Field names are identifiers in practice: written as they are, in three calls
        // instead of five and a pass through the escaper (~200 instructions a field).
        self.result = if name
            .bytes()
            .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
        {
            self.writer
                .write_str(",\"")
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_str("\":"))
        } else {
            self.writer
                .write_char(',')
                .and_then(|()| write_escaped(self.writer, name))
                .and_then(|()| self.writer.write_char(':'))
        };
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
/// (`2026-12-02T06:27:21.123456Z`). The digits are placed into a fixed layout on the stack
/// and written at once: `write!` with seven padded arguments cost ~2k instructions a line.
fn write_timestamp(writer: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        // Wider than the layout below: let `fmt` pad it.
        return write!(
            writer,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60,
            since.subsec_micros()
        );
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], in_day / 3600);
    put_digits(&mut text[14..16], in_day % 3600 / 60);
    put_digits(&mut text[17..19], in_day % 60);
    put_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    // Only ASCII digits and separators were written.
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        // `value % 10` is below 10: the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
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

    /// The layout written digit by digit is what `write!` with padded arguments wrote.
    #[test]
    fn timestamps_match_the_formatted_ones() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut cases = vec![0, 1, 999_999, 86_399_999_999, 253_402_300_799_999_999];
        for _ in 0..10_000 {
            // xorshift64: deterministic, spread over every field.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            cases.push(state % 400_000_000_000_000_000);
        }
        for micros in cases {
            let at = UNIX_EPOCH + Duration::from_micros(micros);
            let since = at.duration_since(UNIX_EPOCH).unwrap();
            let (secs, in_day) = (since.as_secs(), since.as_secs() % 86_400);
            let (year, month, day) = civil_from_days(secs / 86_400);
            let expected = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                in_day / 3600,
                in_day % 3600 / 60,
                in_day % 60,
                since.subsec_micros()
            );
            let mut text = String::new();
            write_timestamp(&mut Writer::new(&mut text), at).unwrap();
            assert_eq!(text, expected, "{micros} µs");
        }
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
        let subscriber =
            tracing_subscriber::registry().with(JsonLinesLayer::new(move || sink.clone()));
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
