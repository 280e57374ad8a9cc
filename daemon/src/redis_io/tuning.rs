//! A Redis setting that changes what the guard costs, never what it does.
//!
//! Redis keeps a hash of at most `hash-max-listpack-entries` fields (512
//! built in, 128 in the `redis.conf` Redis ships) as a listpack: one flat
//! buffer, searched field by field and rewritten on every change. A guard
//! call rewrites every signal hash of the decision (10 fields each) and the
//! strategy's high-water-mark hash (one field per symbol). With the setting
//! at [`ADVISED_MAX`] or below those hashes are hash tables, and a 32-signal
//! call costs Redis ≈ 17 % fewer instructions (2.01 M → 1.66 M with the
//! current guard, counted by `mlcore-guard-cost`; `docs/performance.md`)
//! for ≈ 0.5 KB more memory per signal key.
//! Consumers cannot tell: the encoding is Redis' own business, every
//! command answers the same. The ops hash (6 fields) and the model pointer
//! (8) stay listpacks.
//!
//! The setting is the server's, shared with whatever else it stores, so the
//! daemon never changes it: its side thread reads it when it connects and
//! says what it would save (`deployments/redis/README.md`).

use redis::ConnectionLike;

use mlcore_contract::ContractError;

/// The server setting.
pub const SETTING: &str = "hash-max-listpack-entries";

/// The largest value at which every hash the guard rewrites per decision is
/// a hash table (a signal hash has 10 fields).
pub const ADVISED_MAX: u64 = 9;

/// The server's `hash-max-listpack-entries`; `None` when the server does not
/// say (an ACL that forbids `CONFIG`, a server without the setting).
pub fn hash_listpack_entries(conn: &mut impl ConnectionLike) -> Result<Option<u64>, ContractError> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg(SETTING).query(conn);
    match reply {
        Ok(pair) => match pair.as_slice() {
            [name, value] if name == SETTING => value
                .parse()
                .map(Some)
                .map_err(|e| ContractError::Protocol(format!("{SETTING} is {value:?}: {e}"))),
            [] => Ok(None),
            other => Err(ContractError::Protocol(format!(
                "CONFIG GET {SETTING} answered {other:?}"
            ))),
        },
        // Refused (NOPERM, or CONFIG renamed away: ERR unknown command):
        // the server keeps it to itself.
        Err(e) if matches!(e.code(), Some("NOPERM" | "ERR")) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What to tell the operator about a server whose setting is `entries`, or
/// `None` when the guard's hashes are already hash tables.
pub fn advice(entries: u64) -> Option<String> {
    (entries > ADVISED_MAX).then(|| {
        format!(
            "Redis {SETTING} is {entries}: the guard's signal and high-water-mark hashes are listpacks; \
             at {ADVISED_MAX} or less each guard call costs Redis about 17 % less (deployments/redis/README.md)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_only_while_the_guards_hashes_are_listpacks() {
        let said = advice(128).unwrap();
        assert!(said.contains("hash-max-listpack-entries is 128"), "{said}");
        assert!(said.contains("at 9 or less"), "{said}");
        assert_eq!(advice(10).map(|_| ()), Some(()));
        assert_eq!(advice(9), None);
        assert_eq!(advice(0), None);
    }
}
