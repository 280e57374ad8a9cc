//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), unprefixed as every Prometheus
//! client names them, read from `/proc/self` on each scrape. On a system
//! without `/proc` the families are simply absent.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::exposition::encode_gauge;

/// Clock ticks per second for `/proc/<pid>/stat` times. Linux reports them
/// in `USER_HZ`, which is 100 on every architecture it runs on (the kernel
/// converts from its own HZ); reading it would need `sysconf`, i.e. libc.
const TICKS_PER_SECOND: f64 = 100.0;

/// Page size for `statm`-style page counts: 4 KiB on x86-64 and aarch64 as
/// configured by every distribution this runs on.
const PAGE_BYTES: f64 = 4096.0;

/// Reads `/proc/self` on each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector {
    _private: (),
}

impl ProcessCollector {
    /// The collector.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What one reading of `/proc/self` gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set, bytes.
    pub resident_bytes: f64,
    /// Virtual memory, bytes.
    pub virtual_bytes: f64,
    /// Threads.
    pub threads: f64,
    /// Process start, seconds since the epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Parses `/proc/<pid>/stat` given the boot time (`btime` of
    /// `/proc/stat`, seconds since the epoch).
    pub fn parse(stat: &str, boot_time_s: f64) -> Option<Self> {
        // The command name (field 2) may hold spaces and parentheses: the
        // fields that follow start after its last `)`.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // Field n of the man page is f[n - 3].
        let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        Some(Self {
            cpu_seconds: (num(14)? + num(15)?) / TICKS_PER_SECOND,
            threads: num(20)?,
            start_time_seconds: boot_time_s + num(22)? / TICKS_PER_SECOND,
            virtual_bytes: num(23)?,
            resident_bytes: num(24)? * PAGE_BYTES,
        })
    }

    /// This process, now.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        Self::parse(&stat, btime)
    }
}

fn open_fds() -> Option<f64> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64)
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let none: [(&str, &str); 0] = [];
        if let Some(s) = ProcessStats::read() {
            encode_cpu(&mut encoder, s.cpu_seconds)?;
            encode_gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                [(none, s.resident_bytes)],
            )?;
            encode_gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                [(none, s.virtual_bytes)],
            )?;
            encode_gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                [(none, s.start_time_seconds)],
            )?;
            encode_gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                [(none, s.threads)],
            )?;
        }
        if let Some(n) = open_fds() {
            encode_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                [(none, n)],
            )?;
        }
        if let Some(n) = max_fds() {
            encode_gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                [(none, n)],
            )?;
        }
        Ok(())
    }
}

fn encode_cpu(encoder: &mut DescriptorEncoder<'_>, seconds: f64) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::NoLabelSet;
    use prometheus_client::metrics::MetricType;
    let mut family = encoder.encode_descriptor(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        None,
        MetricType::Counter,
    )?;
    family.encode_counter::<NoLabelSet, _, f64>(&seconds, None)
}

/// Seconds since the epoch, now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as a thread name may be.
        let stat = "4242 (mlcore (x) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 2000 18446744073709551615";
        let s = ProcessStats::parse(stat, 1_700_000_000.0).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!(s.virtual_bytes, 123_456_789.0);
        assert_eq!(s.resident_bytes, 2000.0 * 4096.0);
        let me = ProcessStats::read().unwrap();
        assert!(me.resident_bytes > 0.0 && me.threads >= 1.0);
        assert!(me.start_time_seconds <= now_seconds() + 1.0);
    }
}
