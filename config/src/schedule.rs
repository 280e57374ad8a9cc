//! Cron expressions of schedules (`control.yaml retrain.schedule.cron`),
//! evaluated in UTC with `croner`: five fields, or six with seconds first.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

/// Parses `expr` (an error message naming what is wrong otherwise).
pub fn parse(expr: &str) -> Result<Schedule, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map(Schedule)
        .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl Schedule {
    /// The first time strictly after `after_ms` (ms since the epoch, UTC)
    /// the expression matches, or `None` when it never does again.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(i64::try_from(after_ms).ok()?).single()?;
        let next = self.0.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields_in_utc() {
        // 2026-12-04 (a Friday) 10:00:00 UTC.
        let friday_10h = 1_796_378_400_000;
        let s = parse("30 5 * * MON-FRI").unwrap();
        // Monday 05:30.
        assert_eq!(
            s.next_after(friday_10h),
            Some(friday_10h + 3 * 86_400_000 - 4 * 3_600_000 - 1_800_000)
        );
        let s = parse("*/10 * * * * *").unwrap();
        assert_eq!(s.next_after(friday_10h), Some(friday_10h + 10_000));
        assert!(parse("61 * * * *").unwrap_err().contains("`61 * * * *`"));
        assert!(parse("every day").is_err());
    }
}
