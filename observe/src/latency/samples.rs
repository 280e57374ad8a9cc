//! `signal_latency.csv` (`timestamp_utc,source,latency_ms`): one row per
//! sampled decision, appended by each run. Past `rotate_bytes` the rows of
//! finished hours move to `signal_latency_archive/YYYY/MM/<job_id>.csv`
//! (the current hour stays, so its rollup still sees all of its samples);
//! archived files older than the raw retention are deleted, and so are
//! live rows older than it.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::runlog::JobId;
use crate::time::{from_ms, hour_start, parse, rfc3339_ms};
use crate::ObserveError;

/// The header.
pub const HEADER: &str = "timestamp_utc,source,latency_ms";

/// One sampled decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the signal was written, ms since the epoch.
    pub at_ms: i64,
    /// Where it came from (`stream:<strategy>:v2`, `stream:<strategy>:v3`).
    pub source: String,
    /// Trigger → written to Redis, ms.
    pub latency_ms: f64,
}

fn line(s: &Sample) -> String {
    format!(
        "{},{},{:.3}\n",
        rfc3339_ms(from_ms(s.at_ms)),
        s.source.replace([',', '\n', '"'], "_"),
        s.latency_ms
    )
}

/// Appends `samples` (the header first when the file is new); returns the
/// file's size after. A last line without its newline — a write cut short
/// by a crash or a full disk — is dropped first, so one torn row never
/// stops every later run from reading the file.
pub fn append(path: &Path, samples: &[Sample]) -> Result<u64, ObserveError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ObserveError::io(dir))?;
    }
    drop_torn_tail(path)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(ObserveError::io(path))?;
    let mut text = String::new();
    if f.metadata().map_err(ObserveError::io(path))?.len() == 0 {
        text.push_str(HEADER);
        text.push('\n');
    }
    for s in samples {
        text.push_str(&line(s));
    }
    let before = f.metadata().map_err(ObserveError::io(path))?.len();
    if let Err(e) = f.write_all(text.as_bytes()) {
        // Whole rows of a batch that failed would be appended again with
        // the batch: take them back (best effort; the error is the news).
        let _ = f.set_len(before);
        return Err(ObserveError::io(path)(e));
    }
    Ok(f.metadata().map_err(ObserveError::io(path))?.len())
}

fn drop_torn_tail(path: &Path) -> Result<(), ObserveError> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(ObserveError::io(path))?;
    f.set_len(keep as u64).map_err(ObserveError::io(path))
}

/// Every sample of the live file and of the archive's files that may hold
/// samples between `start_ms` and `end_ms`, within that window.
pub fn read_window(
    live: &Path,
    archive: &Path,
    start_ms: i64,
    end_ms: i64,
) -> Result<Vec<Sample>, ObserveError> {
    // An archive file is named after the run that rotated it, which is
    // after every sample in it: look from the month of `start_ms` on.
    let mut files = Vec::new();
    let mut month = start_ms;
    let last = chrono::Utc::now().timestamp_millis().max(end_ms);
    while month <= last + 31 * 86_400_000 {
        let t = from_ms(month);
        let dir = archive
            .join(t.format("%Y").to_string())
            .join(t.format("%m").to_string());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            // A file rotated at T holds only samples before T's hour: one
            // rotated at or before `start_ms` holds none of the window.
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.file_stem()
                    .and_then(|n| n.to_str())
                    .and_then(|n| serde_json::from_value::<JobId>(n.into()).ok())
                    .and_then(|id| id.started())
                    .is_none_or(|t| t.timestamp_millis() > start_ms)
            }));
        }
        month += 28 * 86_400_000;
    }
    files.sort();
    files.dedup();
    files.push(live.to_owned());
    let mut out = Vec::new();
    for f in files {
        out.extend(
            read(&f)?
                .into_iter()
                .filter(|s| s.at_ms >= start_ms && s.at_ms < end_ms),
        );
    }
    Ok(out)
}

/// Every sample of a samples file (none when it does not exist); a bad
/// row is an error naming its line.
pub fn read(path: &Path) -> Result<Vec<Sample>, ObserveError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ObserveError::io(path)(e)),
    };
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().skip(1) {
        let bad = |what: &str| ObserveError::input(path, format!("line {}: {what}: `{l}`", i + 1));
        let mut f = l.split(',');
        let (Some(ts), Some(source), Some(lat), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad("expected timestamp_utc,source,latency_ms"));
        };
        let at = parse(ts).ok_or_else(|| bad("timestamp_utc is not RFC 3339"))?;
        let latency_ms: f64 = lat
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| bad("latency_ms is not a non-negative number"))?;
        out.push(Sample {
            at_ms: at.timestamp_millis(),
            source: source.to_owned(),
            latency_ms,
        });
    }
    Ok(out)
}

fn write_rows(path: &Path, rows: &[Sample]) -> Result<(), ObserveError> {
    let mut text = String::from(HEADER);
    text.push('\n');
    for s in rows {
        text.push_str(&line(s));
    }
    crate::files::write_atomic(path, text.as_bytes())
}

/// What [`maintain`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Maintenance {
    /// Where finished hours' rows went, when the file was rotated.
    pub rotated_to: Option<PathBuf>,
    /// Live rows dropped for being older than the retention.
    pub expired_rows: usize,
    /// Archived files deleted for being older than the retention.
    pub pruned: Vec<PathBuf>,
    /// The live file's size after, bytes.
    pub size_after: u64,
}

/// Rotates `live` into `archive` when larger than `rotate_bytes`, drops
/// live rows and archived files older than `retention_days`.
pub fn maintain(
    live: &Path,
    archive: &Path,
    job: &JobId,
    now: DateTime<Utc>,
    rotate_bytes: u64,
    retention_days: u32,
) -> Result<Maintenance, ObserveError> {
    let mut m = Maintenance::default();
    let cutoff = now - Duration::days(i64::from(retention_days));
    let size = std::fs::metadata(live).map(|md| md.len()).unwrap_or(0);
    let rows = read(live)?;
    let kept: Vec<Sample> = rows
        .iter()
        .filter(|s| from_ms(s.at_ms) >= cutoff)
        .cloned()
        .collect();
    m.expired_rows = rows.len() - kept.len();
    let current_hour = hour_start(now).timestamp_millis();
    if size > rotate_bytes {
        let (done, current): (Vec<Sample>, Vec<Sample>) =
            kept.into_iter().partition(|s| s.at_ms < current_hour);
        if !done.is_empty() {
            let month = archive
                .join(now.format("%Y").to_string())
                .join(now.format("%m").to_string());
            // Two rotations within a second share a job id.
            let dest = (0..)
                .map(|i| {
                    month.join(if i == 0 {
                        format!("{job}.csv")
                    } else {
                        format!("{job}-{i}.csv")
                    })
                })
                .find(|p| !p.exists())
                .unwrap_or_else(|| month.join(format!("{job}.csv")));
            write_rows(&dest, &done)?;
            m.rotated_to = Some(dest);
        }
        write_rows(live, &current)?;
    } else if m.expired_rows > 0 {
        write_rows(live, &kept)?;
    }
    m.pruned = prune_archive(archive, cutoff)?;
    m.size_after = std::fs::metadata(live).map(|md| md.len()).unwrap_or(0);
    Ok(m)
}

/// Deletes archived files whose job started before `cutoff`.
fn prune_archive(archive: &Path, cutoff: DateTime<Utc>) -> Result<Vec<PathBuf>, ObserveError> {
    let mut pruned = Vec::new();
    let Ok(years) = std::fs::read_dir(archive) else {
        return Ok(pruned);
    };
    for year in years.flatten() {
        let Ok(months) = std::fs::read_dir(year.path()) else {
            continue;
        };
        for month in months.flatten() {
            let Ok(files) = std::fs::read_dir(month.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let started = name
                    .strip_suffix(".csv")
                    .and_then(|id| serde_json::from_value::<JobId>(id.into()).ok())
                    .and_then(|id| id.started());
                if started.is_some_and(|t| t < cutoff) {
                    std::fs::remove_file(f.path()).map_err(ObserveError::io(&f.path()))?;
                    pruned.push(f.path());
                }
            }
            // An emptied month folder goes too.
            let _ = std::fs::remove_dir(month.path());
        }
        let _ = std::fs::remove_dir(year.path());
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runlog::Job;

    fn s(at: &str, ms: f64) -> Sample {
        Sample {
            at_ms: parse(at).unwrap().timestamp_millis(),
            source: "stream:fx_g10:v3".into(),
            latency_ms: ms,
        }
    }

    #[test]
    fn rotation_moves_finished_hours_past_the_threshold_and_keeps_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let (live, archive) = (dir.path().join("signal_latency.csv"), dir.path().join("archive"));
        let now = parse("2026-06-27T10:20:00Z").unwrap();
        let rows = vec![s("2026-06-27T09:59:59Z", 0.4), s("2026-06-27T10:00:00Z", 0.5)];
        let size = append(&live, &rows).unwrap();
        let job = JobId::new(Job::Latency, now);
        // At the threshold: nothing moves.
        let m = maintain(&live, &archive, &job, now, size, 14).unwrap();
        assert_eq!(m.rotated_to, None);
        assert_eq!(read(&live).unwrap(), rows);
        // One byte over: the 09:xx row goes to the archive.
        let m = maintain(&live, &archive, &job, now, size - 1, 14).unwrap();
        let dest = m.rotated_to.unwrap();
        assert!(
            dest.ends_with("2026/06/20260627T102000Z-latency.csv"),
            "{}",
            dest.display()
        );
        assert_eq!(read(&dest).unwrap(), rows[..1]);
        assert_eq!(read(&live).unwrap(), rows[1..]);
        // 15 days later the archived file and the old live row are gone.
        let later = now + Duration::days(15);
        let m = maintain(
            &live,
            &archive,
            &JobId::new(Job::Latency, later),
            later,
            1 << 20,
            14,
        )
        .unwrap();
        assert_eq!(m.pruned, vec![dest.clone()]);
        assert_eq!(m.expired_rows, 1);
        assert!(!dest.exists() && !archive.join("2026").exists());
        assert!(read(&live).unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_row_is_dropped_and_windows_read_the_archive_too() {
        let dir = tempfile::tempdir().unwrap();
        let (live, archive) = (dir.path().join("signal_latency.csv"), dir.path().join("archive"));
        append(&live, &[s("2026-06-27T09:30:00Z", 0.4)]).unwrap();
        // A crash in the middle of a row.
        let mut f = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
        std::io::Write::write_all(&mut f, b"2026-06-27T09:31:00.000Z,stream:fx").unwrap();
        append(&live, &[s("2026-06-27T09:45:00Z", 0.6)]).unwrap();
        assert_eq!(
            read(&live).unwrap().len(),
            2,
            "the torn row is gone, both whole rows read"
        );
        // 09:xx rotated away at 10:20; a late 09:50 sample arrives after.
        let now = parse("2026-06-27T10:20:00Z").unwrap();
        maintain(&live, &archive, &JobId::new(Job::Latency, now), now, 1, 14).unwrap();
        append(&live, &[s("2026-06-27T09:50:00Z", 0.9)]).unwrap();
        let (from, to) = (
            parse("2026-06-27T09:00:00Z").unwrap(),
            parse("2026-06-27T10:00:00Z").unwrap(),
        );
        let hour = read_window(&live, &archive, from.timestamp_millis(), to.timestamp_millis()).unwrap();
        let mut ms: Vec<f64> = hour.iter().map(|s| s.latency_ms).collect();
        ms.sort_by(f64::total_cmp);
        assert_eq!(
            ms,
            [0.4, 0.6, 0.9],
            "the hour's rollup sees archived and late samples"
        );
    }

    #[test]
    fn a_bad_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("signal_latency.csv");
        std::fs::write(&live, format!("{HEADER}\n2026-06-27T10:00:00Z,a,-1\n")).unwrap();
        let e = read(&live).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("latency_ms"), "{e}");
    }
}
