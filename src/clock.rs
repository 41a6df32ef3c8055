//! Time: a monotonic clock in microseconds for budgets and deadlines, and
//! RFC 3339 UTC formatting of wall-clock time without a date crate.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static START: OnceLock<Instant> = OnceLock::new();

thread_local! {
    /// The last reading of [`now_micros`] on this thread.
    static LAST: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Microseconds since the process first asked for the time. Monotonic.
pub fn now_micros() -> u64 {
    let now = START.get_or_init(Instant::now).elapsed().as_micros() as u64;
    LAST.with(|l| l.set(now));
    now
}

/// The last reading of [`now_micros`] on this thread, without asking the
/// clock: never ahead of the time, behind it by as long as nothing read the
/// clock (the relay's stall sweep does four times a second). For checks
/// where late is harmless and a clock read per call is not.
pub fn recent_micros() -> u64 {
    LAST.with(|l| l.get())
}

/// Whole seconds since the process started.
pub fn uptime_secs() -> u64 {
    now_micros() / 1_000_000
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm, on a calendar whose years
    // start in March so the leap day is the last day of the year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `n` as exactly `out.len()` decimal digits (zero-padded).
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `2026-01-06T12:00:00` for the whole second `secs` since the epoch.
fn date_time(secs: i64) -> [u8; 19] {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    let mut b = *b"0000-00-00T00:00:00";
    put_digits(&mut b[0..4], year.clamp(0, 9999) as u64);
    put_digits(&mut b[5..7], month.into());
    put_digits(&mut b[8..10], day.into());
    put_digits(&mut b[11..13], sod / 3600);
    put_digits(&mut b[14..16], sod / 60 % 60);
    put_digits(&mut b[17..19], sod % 60);
    b
}

thread_local! {
    /// The last second [`push_rfc3339_millis`] formatted, and its text:
    /// messages arrive many to a second, and only the milliseconds change.
    static LAST_SECOND: std::cell::Cell<(i64, [u8; 19])> =
        const { std::cell::Cell::new((i64::MIN, [0; 19])) };
}

/// Appends `2026-01-06T12:00:00.123Z` to `out`. It runs for every relayed
/// message: the date and time of day are formatted once per second.
pub fn push_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u64) {
    let secs = (unix_ms / 1000) as i64;
    let text = LAST_SECOND.with(|last| {
        let (at, text) = last.get();
        if at == secs {
            return text;
        }
        let text = date_time(secs);
        last.set((secs, text));
        text
    });
    let mut millis = *b".000Z";
    put_digits(&mut millis[1..4], unix_ms % 1000);
    out.extend_from_slice(&text);
    out.extend_from_slice(&millis);
}

/// Appends `2026-01-06T12:00:00Z` (or `...00.123Z` with `millis`) to `out`.
pub fn write_rfc3339(out: &mut String, unix_ms: u64, with_millis: bool) {
    let text = date_time((unix_ms / 1000) as i64);
    out.push_str(std::str::from_utf8(&text).expect("ASCII digits"));
    if with_millis {
        let mut millis = *b".000";
        put_digits(&mut millis[1..4], unix_ms % 1000);
        out.push_str(std::str::from_utf8(&millis).expect("ASCII digits"));
    }
    out.push('Z');
}

/// `unix_ms` as an RFC 3339 UTC string.
pub fn rfc3339(unix_ms: u64, with_millis: bool) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339(&mut s, unix_ms, with_millis);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_700_800_123, true), "2026-01-06T12:00:00.123Z");
        // A leap day and the last second of a year.
        assert_eq!(rfc3339(951_782_400_000, false), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599_999, true), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_cached_second_is_only_reused_within_that_second() {
        let text = |ms| {
            let mut out = Vec::new();
            push_rfc3339_millis(&mut out, ms);
            String::from_utf8(out).unwrap()
        };
        for ms in [
            1_735_689_599_000,
            1_735_689_599_999,
            1_735_689_600_000,
            1_735_689_599_500,
            0,
            1_767_700_800_123,
        ] {
            assert_eq!(text(ms), rfc3339(ms, true));
        }
        assert_eq!(text(1_735_689_600_007), "2025-01-01T00:00:00.007Z");
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_micros();
        let b = now_micros();
        assert!(b >= a);
    }
}
