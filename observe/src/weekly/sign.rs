//! The report's signature: HMAC-SHA256 over its canonical JSON (RFC 8785:
//! sorted keys, no insignificant whitespace, shortest numbers), sent as
//! `X-OBS-Signature: sha256=<hex>`. A receiver recomputes it over the
//! canonical form of the body it parsed, so re-indenting or reordering
//! keys in transit does not break it.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::ObserveError;

/// The header carrying the signature.
pub const HEADER: &str = "X-OBS-Signature";

/// The canonical JSON of `doc` (RFC 8785). Never a fallback to another
/// form: a receiver could not verify its signature.
pub fn canonical(doc: &Value) -> Result<Vec<u8>, ObserveError> {
    serde_json_canonicalizer::to_vec(doc).map_err(|e| ObserveError::Encode(e.to_string()))
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// `sha256=<hex HMAC-SHA256 of the canonical JSON under key>`.
pub fn signature(key: &[u8], doc: &Value) -> Result<String, ObserveError> {
    let mut m = mac(key);
    m.update(&canonical(doc)?);
    Ok(format!("sha256={}", hex::encode(m.finalize().into_bytes())))
}

/// Whether `header` is `doc`'s signature under `key` (compared in
/// constant time).
pub fn verify(key: &[u8], doc: &Value, header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let (Ok(bytes), Ok(body)) = (hex::decode(hex_sig), canonical(doc)) else {
        return false;
    };
    let mut m = mac(key);
    m.update(&body);
    m.verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The golden value: computed independently with Python's `hmac` over
    /// `json.dumps(doc, sort_keys=True, separators=(",", ":"))`, which is
    /// RFC 8785 for this document.
    #[test]
    fn golden_signature() {
        let doc = json!({
            "schema_version": "1.0.0",
            "week_start": "2026-06-22",
            "latency": {"p95_ms": 0.54, "p50_ms": 0.32, "breaches": []},
            "runs": [{"run_id": "fx_g10-20261002T214013Z", "sharpe": 1.25}],
            "alerts": []
        });
        assert_eq!(
            String::from_utf8(canonical(&doc).unwrap()).unwrap(),
            r#"{"alerts":[],"latency":{"breaches":[],"p50_ms":0.32,"p95_ms":0.54},"runs":[{"run_id":"fx_g10-20261002T214013Z","sharpe":1.25}],"schema_version":"1.0.0","week_start":"2026-06-22"}"#
        );
        let sig = signature(b"obs-golden-secret", &doc).unwrap();
        assert_eq!(sig, GOLDEN);
        assert!(verify(b"obs-golden-secret", &doc, &sig));
        assert!(!verify(b"another-secret", &doc, &sig));
        let mut changed = doc.clone();
        changed["latency"]["p95_ms"] = json!(0.55);
        assert!(!verify(b"obs-golden-secret", &changed, &sig));
    }

    const GOLDEN: &str = "sha256=5d94377fb762d202c89bbdebd8ecd3bf69c3117f95baf6aa211a74d44ee444d2";
}
