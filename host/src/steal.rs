//! What the hypervisor took from each core during a phase, by the guest
//! kernel's own account: the `steal` column of `/proc/stat` ([`CpuTimes`]).
//!
//! The stall probe ([`crate::stalls`]) runs before the load, for a second
//! per core, and cannot say what happened during it. Steal time can: a
//! paravirtualised guest (KVM's steal clock) is told how long each vCPU
//! wanted to run while the host ran something else. The load generator
//! reads it at each phase's start and end and prints the share per core,
//! beside how busy each core was; a phase whose tail missed its target
//! while the host took a few percent of Redis' core is the machine's, not
//! the daemon's. It costs nothing while the load runs (two reads of a
//! file). On a host that does not report steal the column reads 0.

/// Clock ticks per core since boot, as `/proc/stat` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTimes {
    /// One per `cpuN` line, in the file's order.
    pub cores: Vec<CoreTimes>,
}

/// One core's ticks: what it did, idled, and lost to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreTimes {
    /// N of `cpuN`.
    pub core: usize,
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
    /// Ticks the vCPU wanted to run and the host ran something else.
    pub steal: u64,
}

impl CoreTimes {
    fn total(&self) -> u64 {
        self.busy + self.idle + self.steal
    }
}

/// One core's shares of a window, in percent of the window's ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreShare {
    /// N of `cpuN`.
    pub core: usize,
    /// Taken by the host.
    pub steal_pct: f64,
    /// Running this guest's work.
    pub busy_pct: f64,
}

impl CpuTimes {
    /// Reads `/proc/stat`.
    pub fn read() -> Result<Self, String> {
        let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
        Self::parse(&text)
    }

    /// Parses the `cpuN` lines of a `/proc/stat` text (the `cpu` total line
    /// and everything else are skipped). Kernels before 2.6.11 have no
    /// steal column; this one needs it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cores = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(core) = fields
                .next()
                .and_then(|name| name.strip_prefix("cpu"))
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            let core = core
                .parse()
                .map_err(|e| format!("/proc/stat: {line:?}: core {core:?}: {e}"))?;
            let ticks = fields
                .take(8)
                .map(|f| {
                    f.parse::<u64>()
                        .map_err(|e| format!("/proc/stat: {line:?}: {f:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
                return Err(format!(
                    "/proc/stat: {line:?}: {} columns, want at least 8 (user .. steal)",
                    ticks.len()
                ));
            };
            cores.push(CoreTimes {
                core,
                busy: user + nice + system + irq + softirq,
                idle: idle + iowait,
                steal,
            });
        }
        if cores.is_empty() {
            return Err("/proc/stat: no cpuN line".to_owned());
        }
        Ok(Self { cores })
    }

    /// Each core's shares between `earlier` and this reading; a core that
    /// is not in both (hot-plugged meanwhile) or saw no tick is left out.
    pub fn since(&self, earlier: &Self) -> Vec<CoreShare> {
        self.cores
            .iter()
            .filter_map(|now| {
                let then = earlier.cores.iter().find(|c| c.core == now.core)?;
                let total = now.total().checked_sub(then.total()).filter(|t| *t > 0)? as f64;
                let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 * 100.0 / total;
                Some(CoreShare {
                    core: now.core,
                    steal_pct: pct(now.steal, then.steal),
                    busy_pct: pct(now.busy, then.busy),
                })
            })
            .collect()
    }
}

/// The shares from `start` (a reading taken earlier, or why it could not
/// be) to now.
pub fn since(start: Result<CpuTimes, String>) -> Result<Vec<CoreShare>, String> {
    Ok(CpuTimes::read()?.since(&start?))
}

/// One line for a window, or why there is none.
pub fn describe(window: &Result<Vec<CoreShare>, String>) -> String {
    match window {
        Ok(shares) => summary(shares),
        Err(why) => format!("steal time unknown ({why})"),
    }
}

/// The host's share of a core above which a phase's p99 says more about
/// the host than about the daemon: a p99 leaves 1 % of decisions to be slow,
/// and a core that lost 1 % of a phase to the host lost that much time in
/// stalls, each of which delays every decision triggered during it (and the
/// burst that drains after it). Steal is counted in clock ticks (10 ms), so
/// below this a window's figure is also within a tick or two of nothing.
pub const QUIET_STEAL_PCT: f64 = 1.0;

/// What the host took beyond [`QUIET_STEAL_PCT`] in `window`, as "core N
/// X %" for each such core; `None` when it took no more than that, or when
/// steal time could not be read (a host that does not report it reads 0).
pub fn disturbance(window: &Result<Vec<CoreShare>, String>) -> Option<String> {
    let shares = window.as_ref().ok()?;
    let over: Vec<String> = shares
        .iter()
        .filter(|s| s.steal_pct > QUIET_STEAL_PCT)
        .map(|s| format!("core {} {:.1} %", s.core, s.steal_pct))
        .collect();
    (!over.is_empty()).then(|| over.join(", "))
}

/// One line: per core, the host's share and the guest's busy share.
fn summary(shares: &[CoreShare]) -> String {
    if shares.is_empty() {
        return "the kernel counted no ticks".to_owned();
    }
    let cores: Vec<String> = shares
        .iter()
        .map(|s| format!("core {} {:.1} % (busy {:.0} %)", s.core, s.steal_pct, s.busy_pct))
        .collect();
    format!("taken by the host (steal): {}", cores.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  295651 0 34869 269409 1315 0 5768 5174 0 0
cpu0 150051 0 15029 135692 346 0 3103 2698 0 0
cpu1 145599 0 19840 133717 968 0 2665 2475 0 0
intr 123 4 5
ctxt 999
";

    #[test]
    fn the_cpu_lines_are_read_column_by_column() {
        let t = CpuTimes::parse(BEFORE).unwrap();
        assert_eq!(
            t.cores,
            vec![
                CoreTimes {
                    core: 0,
                    busy: 150_051 + 15_029 + 3_103,
                    idle: 135_692 + 346,
                    steal: 2_698
                },
                CoreTimes {
                    core: 1,
                    busy: 145_599 + 19_840 + 2_665,
                    idle: 133_717 + 968,
                    steal: 2_475
                },
            ]
        );
    }

    #[test]
    fn shares_are_of_the_window_and_per_core() {
        let before = CpuTimes::parse(BEFORE).unwrap();
        // Core 0: 100 ticks, 70 busy (60 user + 10 system), 25 idle, 5 stolen.
        // Core 1: 200 ticks, 50 busy, 150 idle, none stolen.
        let after = "cpu0 150111 0 15039 135717 346 0 3103 2703 0 0
cpu1 145649 0 19840 133867 968 0 2665 2475 0 0
";
        let shares = CpuTimes::parse(after).unwrap().since(&before);
        assert_eq!(
            shares,
            vec![
                CoreShare {
                    core: 0,
                    steal_pct: 5.0,
                    busy_pct: 70.0
                },
                CoreShare {
                    core: 1,
                    steal_pct: 0.0,
                    busy_pct: 25.0
                },
            ]
        );
        assert_eq!(
            summary(&shares),
            "taken by the host (steal): core 0 5.0 % (busy 70 %), core 1 0.0 % (busy 25 %)"
        );
        // No tick between two readings: nothing to say, not a division by 0.
        assert_eq!(before.since(&before), vec![]);
        assert_eq!(summary(&[]), "the kernel counted no ticks");
    }

    #[test]
    fn only_cores_the_host_took_more_than_the_quiet_share_of_are_named() {
        let share = |core, steal_pct| CoreShare {
            core,
            steal_pct,
            busy_pct: 50.0,
        };
        assert_eq!(disturbance(&Ok(vec![share(0, 0.4), share(1, 1.0)])), None);
        assert_eq!(
            disturbance(&Ok(vec![share(0, 0.4), share(1, 4.14)])).as_deref(),
            Some("core 1 4.1 %")
        );
        assert_eq!(
            disturbance(&Ok(vec![share(0, 13.0), share(1, 17.5)])).as_deref(),
            Some("core 0 13.0 %, core 1 17.5 %")
        );
        // Unknown is not disturbed: the verdict stands as measured.
        assert_eq!(disturbance(&Err("/proc/stat: gone".to_owned())), None);
        assert_eq!(disturbance(&Ok(vec![])), None);
    }

    #[test]
    fn a_line_without_the_steal_column_or_with_a_bad_number_is_an_error_naming_it() {
        let short = CpuTimes::parse("cpu0 1 2 3 4\n").unwrap_err();
        assert!(short.contains("4 columns"), "{short}");
        let bad = CpuTimes::parse("cpu0 1 2 x 4 5 6 7 8\n").unwrap_err();
        assert!(bad.contains("\"x\""), "{bad}");
        assert!(CpuTimes::parse("intr 1 2\n")
            .unwrap_err()
            .contains("no cpuN line"));
    }

    #[test]
    fn this_machine_s_proc_stat_reads() {
        let t = CpuTimes::read().unwrap();
        assert!(!t.cores.is_empty());
        assert!(t.cores.iter().all(|c| c.busy + c.idle > 0), "{t:?}");
        // A window from that reading to now has one share per core.
        let cores = t.cores.len();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let window = since(Ok(t));
        assert!(window.as_ref().is_ok_and(|w| w.len() <= cores), "{window:?}");
        let said = describe(&window);
        assert!(
            said.starts_with("taken by the host (steal): core ") || said == "the kernel counted no ticks",
            "{said}"
        );
        // A start that could not be read says why, not a share of nothing.
        let unknown = since(Err("/proc/stat: gone".to_owned()));
        assert_eq!(describe(&unknown), "steal time unknown (/proc/stat: gone)");
    }
}
