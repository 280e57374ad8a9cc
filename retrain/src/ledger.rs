//! `runs/index.csv`: one line per finished run (succeeded, rejected or
//! failed), appended under an exclusive lock so concurrent runs of
//! different strategies never interleave a line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::store::StoreError;

/// The ledger's columns.
pub const HEADER: &str = "run_id,strategy,env,started_at,finished_at,status,verdict,model_id,data_start,data_end,ai1_auc,oos_sharpe,sharpe,sharpe_lo,max_drawdown,fills,theta1,theta2,challenge_gain,duration_s";

/// One line of the ledger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// Run id.
    pub run_id: String,
    /// Strategy.
    pub strategy: String,
    /// Environment.
    pub env: String,
    /// Started, RFC 3339 UTC.
    pub started_at: String,
    /// Finished, RFC 3339 UTC.
    pub finished_at: String,
    /// `succeeded`, `rejected`, `failed`.
    pub status: String,
    /// One line.
    pub verdict: String,
    /// The registered model (empty otherwise).
    pub model_id: String,
    /// First and last day of data.
    pub data: (String, String),
    /// KPIs (empty when not reached): ai1 test AUC, θ search's
    /// out-of-sample Sharpe, the backtest's Sharpe and its 90 % lower
    /// bound, max drawdown, fills, θ, the challenge's Sharpe gain.
    pub kpis: [Option<f64>; 9],
    /// Wall time, s.
    pub duration_s: f64,
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Appends `e` to `runs/index.csv` (with the header when new).
pub fn append(runs: &Path, e: &Entry) -> Result<(), StoreError> {
    let path = runs.join("index.csv");
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(runs).map_err(io)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    f.lock().map_err(io)?;
    let mut line = String::new();
    if f.metadata().map_err(io)?.len() == 0 {
        line.push_str(HEADER);
        line.push('\n');
    }
    let kpis: Vec<String> = e
        .kpis
        .iter()
        .map(|k| k.map(|v| format!("{v:.6}")).unwrap_or_default())
        .collect();
    line.push_str(
        &[
            field(&e.run_id),
            field(&e.strategy),
            field(&e.env),
            field(&e.started_at),
            field(&e.finished_at),
            field(&e.status),
            field(&e.verdict),
            field(&e.model_id),
            field(&e.data.0),
            field(&e.data.1),
        ]
        .join(","),
    );
    line.push(',');
    line.push_str(&kpis.join(","));
    line.push_str(&format!(",{:.1}\n", e.duration_s));
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    Ok(())
}

/// `ms` (since the epoch) as UTC year, month, day, hour, minute, second.
pub fn utc(ms: u64) -> (i64, u32, u32, i64, i64, i64) {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = mlcore_market::civil::from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    (y, m, d, t / 3600, t / 60 % 60, t % 60)
}

/// RFC 3339 (UTC, seconds) of `ms`.
pub fn rfc3339(ms: u64) -> String {
    let (y, m, d, h, mi, s) = utc(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_once_and_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Entry {
            run_id: "r1".into(),
            verdict: "lost, by \"a lot\"".into(),
            ..Entry::default()
        };
        e.kpis[0] = Some(0.61);
        append(dir.path(), &e).unwrap();
        e.run_id = "r2".into();
        append(dir.path(), &e).unwrap();
        let text = std::fs::read_to_string(dir.path().join("index.csv")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], HEADER);
        assert!(
            lines[1].starts_with("r1,,,,,,\"lost, by \"\"a lot\"\"\",,,,0.610000,"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[1].split(',').count(),
            HEADER.split(',').count() + 1,
            "one comma inside quotes"
        );
        assert_eq!(rfc3339(1_796_378_400_123), "2026-12-04T10:00:00Z");
    }
}
