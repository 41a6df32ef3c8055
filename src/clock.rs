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

/// Appends `n` as exactly `width` decimal digits (zero-padded).
fn push_digits(out: &mut String, n: u64, width: u32) {
    for i in (0..width).rev() {
        let digit = (n / 10u64.pow(i) % 10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

/// Appends `2026-01-06T12:00:00Z` (or `...00.123Z` with `millis`) to `out`.
/// Digits are written by hand: this runs for every relayed message, and
/// `write!` costs several times more.
pub fn write_rfc3339(out: &mut String, unix_ms: u64, with_millis: bool) {
    let secs = (unix_ms / 1000) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    push_digits(out, year.clamp(0, 9999) as u64, 4);
    out.push('-');
    push_digits(out, month.into(), 2);
    out.push('-');
    push_digits(out, day.into(), 2);
    out.push('T');
    push_digits(out, sod / 3600, 2);
    out.push(':');
    push_digits(out, sod / 60 % 60, 2);
    out.push(':');
    push_digits(out, sod % 60, 2);
    if with_millis {
        out.push('.');
        push_digits(out, unix_ms % 1000, 3);
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
    fn clock_is_monotonic() {
        let a = now_micros();
        let b = now_micros();
        assert!(b >= a);
    }
}
