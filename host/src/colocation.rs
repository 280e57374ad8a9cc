//! Whether the Redis the daemon publishes to may run on its hot cores.
//!
//! On one host, the scheduler is free to run a Redis that is not pinned on
//! any core, and it likes to wake Redis next to the thread that woke it —
//! the publisher, on a hot core. There the hot threads (at `SCHED_FIFO`
//! when configured) preempt it for every decision, so each guard call takes
//! as long as Redis' work plus everything the hot core does meanwhile. On
//! the 2-core dev machine, with the hot threads on core 1, pinning Redis to
//! core 0 took the 2,000/s p99 from 3.2–10.9 ms to 1.6–4.0 ms and Redis'
//! time per call from 300–631 to 292–429 µs, six runs each, interleaved
//! (`docs/performance.md`).
//!
//! The daemon cannot pin a server it does not own; when its side thread
//! connects it looks whether Redis is a process on this host (a loopback or
//! Unix-socket address, a `redis-server`/`valkey-server` with the `process_id`
//! Redis reports) and, if the cores Redis may use overlap the hot cores,
//! says so once per connection.

use std::path::Path;

use redis::{ConnectionAddr, ConnectionLike, IntoConnectionInfo};

/// Cores in a Linux CPU list (`0-3,6,8-9`, as `Cpus_allowed_list` reads).
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cores = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| format!("CPU list {list:?}: {s:?}: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("CPU list {list:?}: range {part} runs backwards"));
                }
                cores.extend(a..=b);
            }
            None => cores.push(num(part)?),
        }
    }
    Ok(cores)
}

/// Whether `url` names a server on this host.
pub fn is_local(url: &str) -> bool {
    match url.into_connection_info().map(|i| i.addr().clone()) {
        Ok(ConnectionAddr::Tcp(host, _)) => {
            matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]")
        }
        Ok(ConnectionAddr::Unix(_)) => true,
        _ => false,
    }
}

/// The pid Redis reports for itself (`INFO server`).
pub fn redis_pid(conn: &mut impl ConnectionLike) -> Option<u32> {
    let info: String = redis::cmd("INFO").arg("server").query(conn).ok()?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))?
        .parse()
        .ok()
}

/// The cores the Redis process behind `conn` may run on, read from
/// `proc` (`/proc`), with its pid; `None` when the pid Redis reports is not
/// a Redis process here (another host or a container).
pub fn redis_cores(conn: &mut impl ConnectionLike, proc: &Path) -> Option<(u32, Vec<usize>)> {
    let pid = redis_pid(conn)?;
    let dir = proc.join(pid.to_string());
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    if !matches!(comm.trim(), "redis-server" | "valkey-server") {
        return None;
    }
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some((pid, parse_cpu_list(list).ok()?))
}

/// What to tell the operator when Redis (`pid`, allowed on `redis`) may run
/// on one of the `hot` cores; `None` when it cannot.
pub fn advice(pid: u32, redis: &[usize], hot: &[usize]) -> Option<String> {
    let mut shared: Vec<usize> = hot.iter().copied().filter(|c| redis.contains(c)).collect();
    shared.sort_unstable();
    shared.dedup();
    (!shared.is_empty()).then(|| {
        format!(
            "Redis (pid {pid}) may run on core(s) {shared:?}, where the daemon's hot threads run: \
             every decision preempts it there; pin Redis to other cores (deployments/redis/README.md)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_linux_writes_them() {
        assert_eq!(parse_cpu_list("0-1\n"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Ok(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3"), Ok(vec![3]));
        let err = parse_cpu_list("0-x").unwrap_err();
        assert!(err.contains("\"x\""), "{err}");
        assert!(parse_cpu_list("4-2").unwrap_err().contains("backwards"));
    }

    #[test]
    fn advice_names_the_shared_cores_only_when_there_are_some() {
        let said = advice(42, &[0, 1], &[1, 1, 1]).unwrap();
        assert!(
            said.starts_with("Redis (pid 42) may run on core(s) [1],"),
            "{said}"
        );
        assert_eq!(advice(42, &[0], &[1]), None);
    }

    #[test]
    fn only_loopback_and_unix_addresses_are_local() {
        assert!(is_local("redis://127.0.0.1:6379/0"));
        assert!(is_local("redis://localhost/"));
        assert!(is_local("redis+unix:///run/redis.sock"));
        assert!(!is_local("redis://10.0.0.7:6379/"));
        assert!(!is_local("not a url"));
    }

    #[test]
    fn the_cores_of_a_redis_process_are_read_from_proc() {
        let proc = tempfile::tempdir().unwrap();
        let write = |pid: &str, comm: &str| {
            let d = proc.path().join(pid);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(
                d.join("status"),
                "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n",
            )
            .unwrap();
        };
        // What the Redis the tests use reports as its pid, faked in /proc.
        let mut conn = mlcore_testkit::redis_connection();
        let pid = redis_pid(&mut conn).unwrap();
        write(&pid.to_string(), "redis-server");
        assert_eq!(redis_cores(&mut conn, proc.path()), Some((pid, vec![0, 1])));
        // Another process with that pid (a container's Redis): not Redis.
        write(&pid.to_string(), "postgres");
        assert_eq!(redis_cores(&mut conn, proc.path()), None);
    }
}
