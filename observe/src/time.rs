//! UTC times as the files write them.

use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};

/// RFC 3339, seconds, `Z` (`2026-06-27T23:30:00Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 with milliseconds (`2026-06-27T23:30:00.125Z`).
pub fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Milliseconds since the epoch as a UTC time.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The start of `t`'s hour.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    from_ms(ms - ms.rem_euclid(3_600_000))
}

/// The Monday of `t`'s ISO week.
pub fn week_start(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

/// Midnight UTC of `d`.
pub fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_start_is_the_monday_and_hours_truncate() {
        let sat = parse("2026-06-27T23:30:00Z").unwrap();
        assert_eq!(week_start(sat).to_string(), "2026-06-22");
        let mon = parse("2026-06-22T00:00:00Z").unwrap();
        assert_eq!(week_start(mon).to_string(), "2026-06-22");
        assert_eq!(rfc3339(hour_start(sat)), "2026-06-27T23:00:00Z");
    }
}
