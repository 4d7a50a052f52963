//! A task's JSON written straight into the response buffer: the same bytes as
//! `serde_json` gives for `Task`'s derived `Serialize` (same field order, same escaping,
//! same timestamps), without the serde machinery where it costs most on every response —
//! chrono serialises each timestamp through `collect_str`, i.e. `core::fmt` with a
//! `write!` per fraction, for three timestamps per task.

use actix_web::web::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, Timelike, Utc};
use tasks_domain::Task;

/// Appends `task` as JSON to `buf`.
///
/// # Errors
/// Only what `serde_json` reports for a string or number written into memory (nothing in
/// practice; kept so a failure is answered, not unwrapped).
pub fn write_task(buf: &mut BytesMut, task: &Task) -> Result<(), serde_json::Error> {
    buf.put_slice(b"{\"id\":\"");
    let mut id = [0_u8; uuid::fmt::Hyphenated::LENGTH];
    // uuid serialises itself in its lowercase hyphenated form.
    buf.put_slice(task.id.hyphenated().encode_lower(&mut id).as_bytes());
    buf.put_slice(b"\",\"title\":");
    // Strings keep going through serde_json: its escaping is the reference.
    serde_json::to_writer((&mut *buf).writer(), &task.title)?;
    buf.put_slice(b",\"description\":");
    match &task.description {
        Some(description) => serde_json::to_writer((&mut *buf).writer(), description)?,
        None => buf.put_slice(b"null"),
    }
    buf.put_slice(b",\"status\":\"");
    // The wire names are plain lowercase ASCII: nothing to escape.
    buf.put_slice(task.status.as_str().as_bytes());
    buf.put_slice(b"\",\"due_at\":");
    match &task.due_at {
        Some(due_at) => write_timestamp(buf, due_at)?,
        None => buf.put_slice(b"null"),
    }
    buf.put_slice(b",\"created_at\":");
    write_timestamp(buf, &task.created_at)?;
    buf.put_slice(b",\"updated_at\":");
    write_timestamp(buf, &task.updated_at)?;
    buf.put_slice(b",\"version\":");
    serde_json::to_writer((&mut *buf).writer(), &task.version)?;
    buf.put_u8(b'}');
    Ok(())
}

/// A quoted RFC 3339 timestamp exactly as chrono's `Serialize` writes it
/// (`SecondsFormat::AutoSi`, `Z`): `"2024-05-06T07:08:09Z"`, with `.mmm`, `.uuuuuu` or
/// `.nnnnnnnnn` when the nanoseconds need them, and a leap second as `:60`.
fn write_timestamp(buf: &mut BytesMut, at: &DateTime<Utc>) -> Result<(), serde_json::Error> {
    let at = at.naive_utc();
    let Ok(year) = u32::try_from(at.year()) else {
        // Before year 0: chrono writes a sign and five digits; rare enough to leave to it.
        return serde_json::to_writer((&mut *buf).writer(), &at.and_utc());
    };
    if year > 9999 {
        return serde_json::to_writer((&mut *buf).writer(), &at.and_utc());
    }
    let (mut second, mut nano) = (at.second(), at.nanosecond());
    // chrono keeps a leap second in the nanoseconds (≥ 1e9) and prints it as second 60.
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    // `"YYYY-MM-DDTHH:MM:SS` + `.nnnnnnnnn` + `Z"`: at most 32 bytes.
    let mut text = *b"\"0000-00-00T00:00:00.000000000Z\"";
    put_digits(&mut text[1..5], year);
    put_digits(&mut text[6..8], at.month());
    put_digits(&mut text[9..11], at.day());
    put_digits(&mut text[12..14], at.hour());
    put_digits(&mut text[15..17], at.minute());
    put_digits(&mut text[18..20], second);
    let end = if nano == 0 {
        20
    } else if nano % 1_000_000 == 0 {
        put_digits(&mut text[21..24], nano / 1_000_000);
        24
    } else if nano % 1_000 == 0 {
        put_digits(&mut text[21..27], nano / 1_000);
        27
    } else {
        put_digits(&mut text[21..30], nano);
        30
    };
    buf.put_slice(&text[..end]);
    buf.put_slice(b"Z\"");
    Ok(())
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        // `value % 10` is below 10: the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use tasks_domain::Status;
    use uuid::Uuid;

    use super::*;

    fn task(seed: u64) -> Task {
        Task {
            id: Uuid::from_u64_pair(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), !seed),
            title: "Ship it".to_owned(),
            description: None,
            status: Status::Todo,
            due_at: None,
            created_at: Utc.timestamp_opt(1_700_000_000, 0).single().unwrap(),
            updated_at: Utc
                .timestamp_opt(1_700_000_000, 123_456_000)
                .single()
                .unwrap(),
            version: 1,
        }
    }

    fn assert_same_as_serde(task: &Task) {
        let expected = serde_json::to_vec(task).unwrap();
        let mut ours = BytesMut::new();
        write_task(&mut ours, task).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&expected),
            "{task:?}"
        );
    }

    /// A small deterministic generator (splitmix64): many cases, same every run.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn timestamp(state: &mut u64) -> DateTime<Utc> {
        let min = DateTime::<Utc>::MIN_UTC.timestamp();
        let max = DateTime::<Utc>::MAX_UTC.timestamp();
        let seconds = match next(state) % 4 {
            // Anywhere chrono can represent, years before 0 and after 9999 included.
            0 => min + i64::try_from(next(state) % (max - min).unsigned_abs()).unwrap(),
            // Years 0–9999, the fast path.
            1 => -62_167_219_200 + i64::try_from(next(state) % 315_537_897_600).unwrap(),
            // Around now, as stored.
            _ => 1_600_000_000 + i64::try_from(next(state) % 400_000_000).unwrap(),
        };
        let nanos = match next(state) % 5 {
            0 => 0,
            1 => u32::try_from(next(state) % 1_000).unwrap() * 1_000_000,
            2 => u32::try_from(next(state) % 1_000_000).unwrap() * 1_000,
            3 => u32::try_from(next(state) % 1_000_000_000).unwrap(),
            _ => 1_000_000_000 + u32::try_from(next(state) % 1_000_000_000).unwrap(),
        };
        // A leap second is only representable at second 59.
        let seconds = if nanos >= 1_000_000_000 {
            seconds - seconds.rem_euclid(60) + 59
        } else {
            seconds
        };
        DateTime::from_timestamp(seconds, nanos).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    #[test]
    fn output_is_byte_identical_to_serde() {
        let titles = [
            "Ship it",
            "",
            "quote \" backslash \\ slash /",
            "control \u{0} \u{1f} \n \r \t \u{7f}",
            "unicode é ✓ 𝄞 \u{2028} \u{feff}",
        ];
        let mut state = 7;
        for seed in 0..20_000_u64 {
            let mut task = task(seed);
            task.title = titles[usize::try_from(seed % 5).unwrap()].to_owned();
            task.description = match next(&mut state) % 3 {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!("{} and {}", task.title, seed)),
            };
            task.status = Status::ALL[usize::try_from(seed % 3).unwrap()];
            task.due_at = next(&mut state)
                .is_multiple_of(2)
                .then(|| timestamp(&mut state));
            task.created_at = timestamp(&mut state);
            task.updated_at = timestamp(&mut state);
            task.version = match seed % 4 {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => 0,
                _ => i64::try_from(next(&mut state) >> 1).unwrap() - (1 << 62),
            };
            assert_same_as_serde(&task);
        }
    }

    #[test]
    fn edges_are_byte_identical_to_serde() {
        let edges = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).single().unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59)
                .single()
                .unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0)
                .single()
                .unwrap(),
            DateTime::from_timestamp(1_483_228_799, 1_999_999_999).unwrap(),
            DateTime::from_timestamp(1_483_228_799, 1_000_000_000).unwrap(),
            DateTime::from_timestamp(0, 1).unwrap(),
            DateTime::from_timestamp(0, 10_000).unwrap(),
            DateTime::from_timestamp(0, 100_000_000).unwrap(),
        ];
        for (seed, at) in (0..).zip(edges) {
            let mut task = task(seed);
            task.due_at = Some(at);
            task.created_at = at;
            task.updated_at = at;
            assert_same_as_serde(&task);
        }
    }

    #[test]
    fn a_stored_task_reads_as_expected() {
        let mut ours = BytesMut::new();
        write_task(&mut ours, &task(0)).unwrap();
        assert_eq!(
            std::str::from_utf8(&ours).unwrap(),
            r#"{"id":"00000000-0000-0000-ffff-ffffffffffff","title":"Ship it","description":null,"status":"todo","due_at":null,"created_at":"2023-11-14T22:13:20Z","updated_at":"2023-11-14T22:13:20.123456Z","version":1}"#
        );
    }
}
