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
            if write_line(line, event).is_ok() {
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

/// One event as a JSON line, newline included. Written into the `String` itself (no
/// `fmt::Write` trait object in between: every piece is a capacity check and a copy into
/// a buffer that keeps its capacity from line to line).
fn write_line(line: &mut String, event: &Event<'_>) -> fmt::Result {
    let metadata = event.metadata();
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, SystemTime::now())?;
    line.push_str("\",\"level\":\"");
    line.push_str(metadata.level().as_str());
    line.push('"');
    let mut fields = Fields {
        line,
        log_target: None,
        result: Ok(()),
    };
    event.record(&mut fields);
    let Fields {
        line,
        log_target,
        result,
    } = fields;
    result?;
    line.push_str(",\"target\":");
    // Records bridged from the `log` crate carry their real target as a field.
    write_escaped(line, log_target.as_deref().unwrap_or(metadata.target()));
    line.push_str("}\n");
    Ok(())
}

struct Fields<'a> {
    line: &'a mut String,
    /// `log.target` of a record bridged from the `log` crate.
    log_target: Option<String>,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Starts a member; `false` for fields not written (the `log` bridge's own).
    fn key(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        // Field names are identifiers in practice: written as they are, without a pass
        // through the escaper.
        if plain_prefix(name.as_bytes()) == name.len() {
            self.line.push_str(",\"");
            self.line.push_str(name);
            self.line.push_str("\":");
        } else {
            self.line.push(',');
            write_escaped(self.line, name);
            self.line.push(':');
        }
        true
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.key(field) {
            self.result = self.line.write_fmt(value);
        }
    }

    /// An integer, its digits written without `core::fmt`.
    fn integer(&mut self, field: &Field, negative: bool, magnitude: u128) {
        if self.key(field) {
            if negative {
                self.line.push('-');
            }
            push_digits(self.line, magnitude);
        }
    }
}

/// The magnitudes for which serde_json's float writer and `{:?}` write the same text:
/// both write the shortest digits that read back as the value, positionally (`0.0012`,
/// `1234.5`, `7.0`); below 1e-4 and from 1e16 on `{:?}` switches to an exponent (`1e-5`),
/// serde_json at other thresholds and in another form (`1e+16`). Narrowed by a factor of
/// ten at each end, as a margin.
const POSITIONAL_F64: std::ops::Range<f64> = 1e-3..1e15;

/// `value` (finite, its magnitude in [`POSITIONAL_F64`]) as `{:?}` writes it, through
/// serde_json's float writer: `{:?}` went through `core::fmt`'s shortest-digits search
/// (~1k instructions per access-log line for `duration_ms`, docs/performance.md); the
/// unit tests compare the two over that range.
///
/// Both write the shortest digits that read back as the value, and of those the closest
/// to it; they differ only on a tie, two shortest candidates exactly as close (serde_json
/// writes `628318999870555.2` where `{:?}` writes `…555.3`). A tie needs the value's
/// exact decimal expansion to have one decimal place more than the digits written, so
/// that case is left to `{:?}`.
fn push_positional_f64(line: &mut String, value: f64) {
    // The longest positional text below 1e15 is a sign, 15 integer digits, a point and
    // 17 significant digits at most; 48 bytes leave room.
    let mut text = [0_u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let written = serde_json::to_writer(&mut cursor, &value).is_ok();
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    match text.get(..len).map(std::str::from_utf8) {
        Some(Ok(digits))
            if written
                && digits
                    .split_once('.')
                    .is_some_and(|(_, fraction)| fraction.len() + 1 != fraction_places(value)) =>
        {
            line.push_str(digits);
        }
        // A possible tie; or not reached (the text fits, and it is ASCII).
        _ => {
            let _ = write!(line, "{value:?}");
        }
    }
}

/// How many decimal places the exact value of `value` (a normal float) has: as many as
/// binary places after its point (a number of halves, quarters, … is exact in as many
/// decimal places), 0 for an integer.
fn fraction_places(value: f64) -> usize {
    const MANTISSA_BITS: u32 = 52;
    let bits = value.to_bits();
    let mantissa = (bits & ((1 << MANTISSA_BITS) - 1)) | (1 << MANTISSA_BITS);
    // The biased exponent is 11 bits: the cast cannot truncate.
    let exponent = ((bits >> MANTISSA_BITS) & 0x7ff) as i64 - 1075;
    // value = mantissa × 2^exponent; trailing zero bits of the mantissa are no places.
    let exponent = exponent + i64::from(mantissa.trailing_zeros());
    usize::try_from(-exponent).unwrap_or(0)
}

/// The decimal digits of `value`, as `Display` writes them.
fn push_digits(line: &mut String, mut value: u128) {
    // u128::MAX has 39 digits.
    let mut digits = [0_u8; 40];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `value % 10` is below 10: the cast cannot truncate.
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    line.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        }
        if self.key(field) {
            write_escaped(self.line, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.line.push('"');
            self.result = write!(Escaping(self.line), "{value:?}");
            self.line.push('"');
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value < 0, u128::from(value.unsigned_abs()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, false, u128::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.integer(field, value < 0, value.unsigned_abs());
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.integer(field, false, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            if !POSITIONAL_F64.contains(&value.abs()) {
                // `{:?}` keeps a fraction (`1.0`), as serde_json writes floats.
                self.raw(field, format_args!("{value:?}"));
            } else if self.key(field) {
                push_positional_f64(self.line, value);
            }
        } else if self.key(field) {
            // JSON has no NaN or infinity (serde_json writes null too).
            self.line.push_str("null");
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.line.push('"');
            self.result = write!(Escaping(self.line), "{value}");
            self.line.push('"');
        }
    }
}

/// The JSON escape of a byte that needs one (RFC 8259 §7), `""` for the control
/// characters written as `\u00XX`, `None` for a byte written as it is.
fn escape_of(byte: u8) -> Option<&'static str> {
    Some(match byte {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        0x08 => "\\b",
        0x0c => "\\f",
        0..=0x1f => "",
        _ => return None,
    })
}

/// Whether any of the eight bytes of `word` needs escaping (below 0x20, `"` or `\`): the
/// classic "has a byte less than n" and "has a zero byte" bit tricks, exact as a yes/no.
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGHS != 0
}

/// How many bytes at the start of `text` need no escaping, eight at a time.
fn plain_prefix(text: &[u8]) -> usize {
    let mut words = text.chunks_exact(8);
    let mut plain = 0;
    for chunk in words.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if word_needs_escape(word) {
            break;
        }
        plain += 8;
    }
    plain
        + text[plain..]
            .iter()
            .position(|&byte| escape_of(byte).is_some())
            .unwrap_or(text.len() - plain)
}

/// Appends `text` escaped as the inside of a JSON string: the runs that need no escaping
/// are found eight bytes at a time and copied whole.
fn push_escaped(line: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut at = 0;
    loop {
        let plain = at + plain_prefix(&bytes[at..]);
        // `plain` is at an ASCII byte or at the end: always a character boundary.
        line.push_str(text.get(at..plain).unwrap_or_default());
        let Some(&byte) = bytes.get(plain) else {
            return;
        };
        match escape_of(byte) {
            Some("") => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                line.push_str("\\u00");
                line.push(char::from(HEX[usize::from(byte >> 4)]));
                line.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            Some(escape) => line.push_str(escape),
            // Not reached: `plain_prefix` stops only at a byte that needs escaping.
            None => line.push(char::from(byte)),
        }
        at = plain + 1;
    }
}

/// Escapes what `Debug` and `Display` write as the inside of a JSON string.
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        push_escaped(self.0, text);
        Ok(())
    }
}

fn write_escaped(line: &mut String, text: &str) {
    line.push('"');
    push_escaped(line, text);
    line.push('"');
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's `SystemTime` timer writes it
/// (`2026-12-02T06:27:21.123456Z`). The digits are placed into a fixed layout on the stack
/// and written at once: `write!` with seven padded arguments cost ~2k instructions a line.
fn write_timestamp(writer: &mut String, now: SystemTime) -> fmt::Result {
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
    writer.push_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
    Ok(())
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
        write_timestamp(&mut text, at).unwrap();
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
            write_timestamp(&mut text, at).unwrap();
            assert_eq!(text, expected, "{micros} µs");
        }
    }

    /// The escaper that skips plain runs eight bytes at a time writes what escaping byte by
    /// byte writes, for every byte value at every position of a word.
    #[test]
    fn escaping_matches_byte_by_byte() {
        fn reference(text: &str) -> String {
            let mut out = String::new();
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out
        }
        let mut cases = vec![String::new(), "é—ü plain text of some length".to_owned()];
        for byte in 0_u8..0x80 {
            for position in 0..17 {
                let mut text = "abcdefghijklmnopq".to_owned();
                text.insert(position, char::from(byte));
                cases.push(text);
            }
        }
        for text in cases {
            let mut line = String::new();
            push_escaped(&mut line, &text);
            assert_eq!(line, reference(&text), "{text:?}");
        }
    }

    /// Integers are written as `Display` writes them.
    #[test]
    fn integers_match_display() {
        for value in [
            0_u128,
            1,
            9,
            10,
            200,
            65_535,
            u128::from(u64::MAX),
            u128::MAX,
        ] {
            let mut line = String::new();
            push_digits(&mut line, value);
            assert_eq!(line, value.to_string());
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLinesLayer::new(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                negative = -42_i64,
                min = i64::MIN,
                big = u64::MAX,
                wide = i128::MIN,
                "n"
            );
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(&format!(
                r#""negative":-42,"min":{},"big":{},"wide":{},"#,
                i64::MIN,
                u64::MAX,
                i128::MIN
            )),
            "{text}"
        );
    }

    /// serde_json's float text is `{:?}`'s over [`POSITIONAL_F64`]: durations in
    /// milliseconds from every nanosecond count up to 10 ms and a spread beyond, the
    /// range's ends, powers of ten, and values spread over every bit pattern in it.
    #[test]
    fn fraction_places_are_counted() {
        assert_eq!(fraction_places(1.0), 0);
        assert_eq!(fraction_places(1e14), 0);
        assert_eq!(fraction_places(0.5), 1);
        assert_eq!(fraction_places(628_318_999_870_555.0 + 0.25), 2);
        assert_eq!(fraction_places(1.0 + 0.5_f64.powi(17)), 17);
        assert_eq!(fraction_places(0.1), 55);
    }

    #[test]
    fn positional_floats_match_debug() {
        let mut cases: Vec<f64> = (1_000..10_000_000_u64)
            .step_by(97)
            .map(|nanos| Duration::from_nanos(nanos).as_secs_f64() * 1000.0)
            .collect();
        cases.extend(
            (0..18)
                .map(|exponent| 10_f64.powi(exponent - 3))
                .filter(|value| POSITIONAL_F64.contains(value)),
        );
        cases.extend([
            1e-3,
            1e15_f64.next_down(),
            0.1,
            0.2,
            0.3,
            1.0,
            2.5,
            1e14 + 0.5,
        ]);
        // Ties: values with few binary places, at every magnitude (the first is one
        // where serde_json and `{:?}` choose differently).
        cases.push(628_318_999_870_555.0 + 0.25);
        for places in 1..=52 {
            let unit = 0.5_f64.powi(places);
            for whole in [
                1_u64,
                3,
                7,
                1_000,
                123_456,
                1 << 20,
                1 << 40,
                999_999_999_999_999,
            ] {
                for odd in [1_u64, 3, 5, 7, 9, 11, 13, 15] {
                    let value = whole as f64 + odd as f64 * unit;
                    if POSITIONAL_F64.contains(&value) {
                        cases.push(value);
                    }
                }
            }
        }
        let (low, high) = (POSITIONAL_F64.start.to_bits(), POSITIONAL_F64.end.to_bits());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Positive finite floats order as their bits do.
            cases.push(f64::from_bits(low + state % (high - low)));
        }
        let mut line = String::new();
        for value in cases {
            for value in [value, -value] {
                assert!(POSITIONAL_F64.contains(&value.abs()), "{value:?}");
                line.clear();
                push_positional_f64(&mut line, value);
                assert_eq!(line, format!("{value:?}"));
            }
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
