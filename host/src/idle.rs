//! How this host's idle cores wake up, and what to tell the operator about it.
//!
//! Every decision crosses cores several times (the feed → ingress, the
//! publisher → Redis, Redis → the publisher), and between decisions the
//! cores go idle. In a virtual machine an idle vCPU that halts is put to
//! sleep by the hypervisor, and waking it costs far more than a hand-off:
//! 20–40 µs measured here per wake-up, on every one of those crossings.
//! Linux's `haltpoll` cpuidle driver (KVM guests) makes an idle vCPU poll
//! for up to `guest_halt_poll_ns` before it halts, adapting the window to
//! how soon it was woken before; a machine booted with
//! `haltpoll.guest_halt_poll_ns=0` halts at once. On the 2-core dev
//! machine, eight interleaved pairs of runs at 2,000 decisions/s took
//! trigger → visible p50 from 413–896 µs (halting at once) to 293–452 µs
//! (polling up to 200 µs or 1 ms), and a lone guard call from 284–532 to
//! 191–415 µs (`docs/performance.md`).
//!
//! The daemon does not change a kernel setting; when it starts it reads
//! the driver and the window from `sysfs` and, when idle vCPUs halt at
//! once, logs what to set (`deployments/host/README.md`). The load
//! generator prints the same reading beside its figures.

use std::path::Path;

/// Where the window is set (read and written as a number of ns).
pub const HALT_POLL_PARAM: &str = "module/haltpoll/parameters/guest_halt_poll_ns";

/// The window the advice names: the haltpoll governor's own default.
pub const ADVISED_HALT_POLL_NS: u64 = 200_000;

/// What `sysfs` says about idle cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleReading {
    /// The cpuidle driver (`haltpoll`, `intel_idle`, `acpi_idle`, `none`).
    pub driver: String,
    /// The haltpoll window, when that driver's parameters are there.
    pub halt_poll_ns: Option<u64>,
}

impl IdleReading {
    /// Reads the cpuidle driver and the haltpoll window under `sys`
    /// (`/sys`); `None` where the kernel has no cpuidle (a container that
    /// hides `sysfs`, a kernel built without it).
    pub fn read(sys: &Path) -> Option<Self> {
        let driver = std::fs::read_to_string(sys.join("devices/system/cpu/cpuidle/current_driver")).ok()?;
        let halt_poll_ns = std::fs::read_to_string(sys.join(HALT_POLL_PARAM))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Some(Self {
            driver: driver.trim().to_owned(),
            halt_poll_ns,
        })
    }

    /// [`IdleReading::read`] of this host's `/sys` (the daemon at start,
    /// the load generator beside its figures).
    pub fn of_this_host() -> Option<Self> {
        Self::read(Path::new("/sys"))
    }

    /// Whether an idle core halts the moment it has nothing to run: the
    /// haltpoll driver with a zero window. (Other drivers are the
    /// hardware's or the kernel's choice; nothing was measured about them
    /// here, so nothing is said.)
    pub fn halts_at_once(&self) -> bool {
        self.driver == "haltpoll" && self.halt_poll_ns == Some(0)
    }

    /// One line for a report: the driver, and the window when there is one.
    pub fn summary(&self) -> String {
        match self.halt_poll_ns {
            Some(ns) if self.driver == "haltpoll" => format!(
                "cpuidle driver haltpoll, guest_halt_poll_ns {ns}{}",
                if self.halts_at_once() {
                    " (idle vCPUs halt at once)"
                } else {
                    ""
                }
            ),
            _ => format!("cpuidle driver {}", self.driver),
        }
    }

    /// What to tell the operator, when there is something to tell.
    pub fn advice(&self) -> Option<String> {
        self.halts_at_once().then(|| {
            format!(
                "idle vCPUs on this host halt at once (cpuidle haltpoll, guest_halt_poll_ns 0): \
                 every hand-off to an idle core waits for the hypervisor to wake it; \
                 `echo {ADVISED_HALT_POLL_NS} > /sys/{HALT_POLL_PARAM}` (as root) lets them poll first \
                 (deployments/host/README.md)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(driver: &str, window: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cpuidle = dir.path().join("devices/system/cpu/cpuidle");
        std::fs::create_dir_all(&cpuidle).unwrap();
        std::fs::write(cpuidle.join("current_driver"), format!("{driver}\n")).unwrap();
        if let Some(w) = window {
            let param = dir.path().join(HALT_POLL_PARAM);
            std::fs::create_dir_all(param.parent().unwrap()).unwrap();
            std::fs::write(param, format!("{w}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn a_zero_haltpoll_window_is_advised_against_with_the_setting_to_change() {
        let dir = sys("haltpoll", Some("0"));
        let r = IdleReading::read(dir.path()).unwrap();
        assert_eq!(
            r,
            IdleReading {
                driver: "haltpoll".into(),
                halt_poll_ns: Some(0)
            }
        );
        assert!(r.halts_at_once());
        let said = r.advice().unwrap();
        assert!(
            said.contains("echo 200000 > /sys/module/haltpoll/parameters/guest_halt_poll_ns"),
            "{said}"
        );
        assert_eq!(
            r.summary(),
            "cpuidle driver haltpoll, guest_halt_poll_ns 0 (idle vCPUs halt at once)"
        );
    }

    #[test]
    fn a_polling_window_or_another_driver_needs_no_advice() {
        let polling = IdleReading::read(sys("haltpoll", Some("200000")).path()).unwrap();
        assert!(!polling.halts_at_once());
        assert_eq!(polling.advice(), None);
        assert_eq!(
            polling.summary(),
            "cpuidle driver haltpoll, guest_halt_poll_ns 200000"
        );
        // The module's parameters may be there while another driver runs.
        let other = IdleReading::read(sys("intel_idle", Some("0")).path()).unwrap();
        assert_eq!(other.advice(), None);
        assert_eq!(other.summary(), "cpuidle driver intel_idle");
        let bare = IdleReading::read(sys("none", None).path()).unwrap();
        assert_eq!(bare.halt_poll_ns, None);
        assert_eq!(bare.advice(), None);
    }

    #[test]
    fn no_cpuidle_in_sysfs_reads_as_nothing() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(IdleReading::read(empty.path()), None);
        // An unreadable window is no window, not a zero one.
        let odd = IdleReading::read(sys("haltpoll", Some("lots")).path()).unwrap();
        assert_eq!(odd.halt_poll_ns, None);
        assert_eq!(odd.advice(), None);
    }
}
