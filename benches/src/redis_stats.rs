//! Redis' own account of the guard's cost, from `INFO commandstats`.
//!
//! Redis runs every guard call on its one main thread, so the share of a
//! core it spends in them bounds the decision rate, and a share near 100 %
//! means decisions queue behind each other: the tail then belongs to Redis'
//! capacity on this machine, not to the daemon. The load generator prints
//! it per phase. `INFO` counts the whole server: another client's `FCALL`s
//! during a run count too.

/// A command's totals since Redis started (or `CONFIG RESETSTAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Calls.
    pub calls: u64,
    /// Microseconds Redis spent executing them.
    pub usec: u64,
}

impl CommandStats {
    /// `command`'s line of an `INFO commandstats` reply (zero when Redis has
    /// not run it yet: it then has no line).
    pub fn from_info(info: &str, command: &str) -> Result<Self, String> {
        let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
        let Some(line) = info.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str())) else {
            return Ok(Self::default());
        };
        let field = |name: &str| -> Result<u64, String> {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| format!("cmdstat_{command} has no {name}: {line}"))?
                .parse()
                .map_err(|e| format!("cmdstat_{command} {name}: {e}: {line}"))
        };
        Ok(Self {
            calls: field("calls")?,
            usec: field("usec")?,
        })
    }

    /// What happened between `earlier` and `self` (zero if the counters
    /// were reset in between).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            calls: self.calls.saturating_sub(earlier.calls),
            usec: self.usec.saturating_sub(earlier.usec),
        }
    }

    /// One line: guard calls for `decisions` over `seconds`, their mean
    /// time in Redis and the share of Redis' core they took.
    pub fn guard_summary(&self, decisions: u64, seconds: f64) -> String {
        let per_call = if self.calls == 0 {
            0.0
        } else {
            self.usec as f64 / self.calls as f64
        };
        let busy = if seconds > 0.0 {
            self.usec as f64 / 1e4 / seconds
        } else {
            0.0
        };
        let per = if self.calls == 0 {
            0.0
        } else {
            decisions as f64 / self.calls as f64
        };
        format!(
            "Redis: {} guard calls for {decisions} decisions ({per:.2} per call), {per_call:.0} us per call, {busy:.0} % of its core in guard calls",
            self.calls
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_xread:calls=17786,usec=178768,usec_per_call=10.05,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_fcall:calls=19148,usec=6536852,usec_per_call=341.39,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_fcall_ro:calls=1,usec=13,usec_per_call=13.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn a_commands_line_is_read_and_not_its_prefixed_neighbour() {
        assert_eq!(
            CommandStats::from_info(INFO, "FCALL"),
            Ok(CommandStats {
                calls: 19148,
                usec: 6536852
            })
        );
        assert_eq!(
            CommandStats::from_info(INFO, "fcall_ro"),
            Ok(CommandStats { calls: 1, usec: 13 })
        );
        assert_eq!(CommandStats::from_info(INFO, "hset"), Ok(CommandStats::default()));
    }

    #[test]
    fn a_malformed_line_is_an_error_that_shows_it() {
        let err = CommandStats::from_info("cmdstat_fcall:calls=x,usec=1", "fcall").unwrap_err();
        assert!(err.contains("calls") && err.contains("calls=x,usec=1"), "{err}");
        let err = CommandStats::from_info("cmdstat_fcall:calls=3", "fcall").unwrap_err();
        assert!(err.contains("no usec"), "{err}");
    }

    #[test]
    fn the_summary_says_calls_time_and_busy_share() {
        let before = CommandStats {
            calls: 100,
            usec: 30_000,
        };
        let after = CommandStats {
            calls: 20_100,
            usec: 6_530_000,
        };
        let d = after.since(&before);
        assert_eq!(
            d,
            CommandStats {
                calls: 20_000,
                usec: 6_500_000
            }
        );
        let line = d.guard_summary(20_000, 10.0);
        assert_eq!(
            line,
            "Redis: 20000 guard calls for 20000 decisions (1.00 per call), 325 us per call, 65 % of its core in guard calls"
        );
        assert_eq!(before.since(&after), CommandStats::default());
    }
}
