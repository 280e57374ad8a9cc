//! Structured JSON log lines on stderr: `{"ts_ms","level","msg",...fields}`.
//! Used by side threads, and by hot threads only for rare events (a refused
//! connection), never per frame or per decision.

use std::io::Write;

/// Writes one JSON log line.
pub fn log(level: &str, msg: &str, fields: &[(&str, serde_json::Value)]) {
    let mut obj = serde_json::Map::new();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    obj.insert("ts_ms".into(), ts.into());
    obj.insert("level".into(), level.into());
    obj.insert("msg".into(), msg.into());
    for (k, v) in fields {
        obj.insert((*k).to_owned(), v.clone());
    }
    let line = serde_json::Value::Object(obj).to_string();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
