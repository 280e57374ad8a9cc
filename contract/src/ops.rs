//! Ops modes: what the daemon may publish for a strategy.

use std::fmt;
use std::str::FromStr;

/// A strategy's ops mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpsMode {
    /// Normal publishing.
    Active,
    /// Only signals whose |weight| does not grow (and does not flip side).
    ReduceOnly,
    /// Nothing is published. Also the meaning of absent or unreadable state.
    Halted,
    /// Only flat signals.
    Flatten,
}

impl OpsMode {
    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReduceOnly => "reduce_only",
            Self::Halted => "halted",
            Self::Flatten => "flatten",
        }
    }
}

impl fmt::Display for OpsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OpsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "reduce_only" => Ok(Self::ReduceOnly),
            "halted" => Ok(Self::Halted),
            "flatten" => Ok(Self::Flatten),
            other => Err(format!("unknown ops mode `{other}`")),
        }
    }
}

/// A strategy's ops hash as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsState {
    /// Effective mode: `halted` when the hash is absent or unreadable.
    pub mode: OpsMode,
    /// Compare-and-set version (0 when never set).
    pub version: u64,
    /// Why it was set.
    pub reason: String,
    /// Who set it.
    pub actor: String,
    /// The control-plane request that set it.
    pub request_id: String,
    /// When (Redis time).
    pub updated_at_ms: u64,
    /// Whether the stored state was absent or unreadable (and so treated as halted).
    pub fail_closed: bool,
}

impl OpsState {
    /// Builds the state from `HGETALL` fields, failing closed.
    pub fn from_fields(fields: &[(String, String)]) -> Self {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let mode = get("mode").and_then(|m| m.parse().ok());
        let version = get("version").and_then(|v| v.parse().ok());
        Self {
            mode: mode.unwrap_or(OpsMode::Halted),
            version: version.unwrap_or(0),
            reason: get("reason").unwrap_or_default().to_owned(),
            actor: get("actor").unwrap_or_default().to_owned(),
            request_id: get("request_id").unwrap_or_default().to_owned(),
            updated_at_ms: get("updated_at_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            fail_closed: mode.is_none() || version.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_garbled_state_is_halted() {
        assert_eq!(OpsState::from_fields(&[]).mode, OpsMode::Halted);
        assert!(OpsState::from_fields(&[]).fail_closed);
        let garbled = [
            ("mode".to_owned(), "go-fast".to_owned()),
            ("version".to_owned(), "3".to_owned()),
        ];
        assert_eq!(OpsState::from_fields(&garbled).mode, OpsMode::Halted);
        let ok = [
            ("mode".to_owned(), "reduce_only".to_owned()),
            ("version".to_owned(), "3".to_owned()),
        ];
        let s = OpsState::from_fields(&ok);
        assert_eq!(
            (s.mode, s.version, s.fail_closed),
            (OpsMode::ReduceOnly, 3, false)
        );
    }
}
