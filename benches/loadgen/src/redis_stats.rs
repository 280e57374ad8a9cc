//! Redis' own account of the guard's cost, from `INFO commandstats`
//! ([`CommandStats`]).
//!
//! Redis runs every guard call on its one main thread, so the share of a
//! core it spends in them bounds the decision rate, and a share near 100 %
//! means decisions queue behind each other: the tail then belongs to Redis'
//! capacity on this machine, not to the daemon. The load generator prints
//! it per phase. `INFO` counts the whole server: another client's calls of
//! the same command (`FCALL`, or the module's) during a run count too.

pub use mlcore_testkit::CommandStats;

/// The `INFO commandstats` name of the command the daemon publishes with:
/// `fcall` for the guard's Lua functions; for `guard_engine: module` the
/// module's own command (`mlcore.publish_v3`), whose calls `fcall`'s line
/// never counts.
pub fn guard_command(engine: mlcore_config::GuardEngine) -> &'static str {
    match engine {
        mlcore_config::GuardEngine::Function => "fcall",
        mlcore_config::GuardEngine::Module => mlcore_contract::guard::MODULE_PUBLISH,
    }
}

/// One line: `stats`' guard calls for `decisions` over `seconds`, their
/// mean time in Redis and the share of Redis' core they took.
pub fn guard_summary(stats: &CommandStats, decisions: u64, seconds: f64) -> String {
    let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
    let calls = stats.calls as f64;
    format!(
        "Redis: {} guard calls for {decisions} decisions ({:.2} per call), {:.0} us per call, {:.0} % of its core in guard calls",
        stats.calls,
        ratio(decisions as f64, calls),
        ratio(stats.usec as f64, calls),
        ratio(stats.usec as f64 / 1e4, seconds)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_is_counted_on_its_own_commands_line() {
        // As Redis 7 writes the two lines when a module serves the guard.
        let info = "# Commandstats\r\n\
            cmdstat_fcall:calls=3,usec=150,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_mlcore.publish_v3:calls=20000,usec=200000,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";
        let read = |engine| CommandStats::from_info(info, guard_command(engine)).unwrap();
        assert_eq!(
            read(mlcore_config::GuardEngine::Module),
            CommandStats {
                calls: 20_000,
                usec: 200_000
            }
        );
        assert_eq!(
            read(mlcore_config::GuardEngine::Function),
            CommandStats { calls: 3, usec: 150 }
        );
    }

    #[test]
    fn the_summary_says_calls_time_and_busy_share() {
        let d = CommandStats {
            calls: 16_000,
            usec: 6_500_000,
        };
        assert_eq!(
            guard_summary(&d, 20_000, 10.0),
            "Redis: 16000 guard calls for 20000 decisions (1.25 per call), 406 us per call, 65 % of its core in guard calls"
        );
        assert_eq!(
            guard_summary(&CommandStats::default(), 0, 0.0),
            "Redis: 0 guard calls for 0 decisions (0.00 per call), 0 us per call, 0 % of its core in guard calls"
        );
    }
}
