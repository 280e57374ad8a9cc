//! Key layout. `{S}` (the strategy id) is a hash tag: every key one guard
//! call touches lives in the same Redis Cluster slot.
//!
//! | key | type | what |
//! |---|---|---|
//! | `ns:{S}:sig:<SYMBOL>` | hash | current signal; expires at `valid_until_ms` |
//! | `ns:{S}:signals` | stream | every accepted signal, capped `MAXLEN ~` |
//! | `ns:{S}:hwm` | hash | symbol → highest `seq` ever accepted (never expires) |
//! | `ns:{S}:ops` | hash | mode, version, reason, actor, request_id, updated_at_ms |
//! | `ns:{S}:model` | hash | the registry's active model: model_id, version, manifest_sha256, rollback, pinned, actor, request_id, updated_at_ms |
//! | `ns:daemon:<instance>:hb` | hash | heartbeat, with a TTL |
//! | `ns:daemons` | sorted set | instance → last heartbeat time (ms) |
//! | `ns:events` | pub/sub channel | ops changes, model activations (JSON) |
//! | `ns:second_factor` | hash | principal → newest one-time-code step used (the API's decisions and break-glass) |
//! | `ns:{S}:mode_writer` | (never written) | who may write it may change `S`'s mode (the guard checks) |
//! | `ns:audit:checkpoint` | hash | `checkpoint`: the control plane's latest signed audit-log checkpoint (JSON) |
//! | `ns:analytics_cache:gen` | string | the analytics API cache's generation: a job that writes new data increments it |
//! | `ns:analytics_cache:<gen>:<query>` | string | one cached analytics answer (JSON), with a TTL |

/// Key builder for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Keys {
    /// Keys under `namespace` (from `redis.yaml`).
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// A strategy's keys, computed once so the hot path formats nothing.
    pub fn strategy(&self, strategy: &str) -> StrategyKeys {
        let prefix = format!("{}:{{{strategy}}}", self.ns);
        StrategyKeys {
            strategy: strategy.to_owned(),
            ops: format!("{prefix}:ops"),
            hwm: format!("{prefix}:hwm"),
            signals: format!("{prefix}:signals"),
            model: format!("{prefix}:model"),
            snapshot: format!("{prefix}:v3:snap"),
            seq: format!("{prefix}:v3:seq"),
            stream_v3: format!("{prefix}:v3:signals"),
            sig_prefix: format!("{prefix}:sig:"),
        }
    }

    /// The pub/sub channel for events.
    pub fn events(&self) -> String {
        format!("{}:events", self.ns)
    }

    /// A daemon's heartbeat hash.
    pub fn heartbeat(&self, instance: &str) -> String {
        format!("{}:daemon:{instance}:hb", self.ns)
    }

    /// The hash holding the control plane's latest signed audit checkpoint
    /// (field `checkpoint`, JSON): a copy outside the WORM archive.
    pub fn audit_checkpoint(&self) -> String {
        format!("{}:audit:checkpoint", self.ns)
    }

    /// The analytics API cache's generation counter: cached answers are
    /// keyed under it, so incrementing it invalidates them all at once.
    pub fn analytics_generation(&self) -> String {
        format!("{}:analytics_cache:gen", self.ns)
    }

    /// One cached analytics answer of `generation`.
    pub fn analytics_entry(&self, generation: u64, query: &str) -> String {
        format!("{}:analytics_cache:{generation}:{query}", self.ns)
    }

    /// The hash of the newest one-time-code step each principal used
    /// (principal → step), written only by the guard's
    /// `mlcore_spend_code_v2`: a code is accepted once, by the API or
    /// break-glass, across restarts.
    pub fn second_factor_steps(&self) -> String {
        format!("{}:second_factor", self.ns)
    }

    /// The sorted set of daemons by last heartbeat.
    pub fn daemons(&self) -> String {
        format!("{}:daemons", self.ns)
    }
}

/// The keys of one strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyKeys {
    /// Strategy id.
    pub strategy: String,
    /// Ops state hash.
    pub ops: String,
    /// High-water marks of `seq` per symbol.
    pub hwm: String,
    /// Signal stream.
    pub signals: String,
    /// The registry's active-model pointer.
    pub model: String,
    /// Contract v3: the newest accepted decision, whole (one hash).
    pub snapshot: String,
    /// Contract v3: the strategy's high-water mark of `seq`.
    pub seq: String,
    /// Contract v3: the signal stream.
    pub stream_v3: String,
    sig_prefix: String,
}

impl StrategyKeys {
    /// The current-signal hash of `symbol`.
    pub fn sig(&self, symbol: &str) -> String {
        format!("{}{symbol}", self.sig_prefix)
    }

    /// The signal key of `symbol` as a Redis argument written in place (no
    /// `String` built): what the publisher sends 32 times per decision.
    pub(super) fn sig_arg<'a>(&'a self, symbol: &'a str) -> SigKey<'a> {
        SigKey {
            prefix: &self.sig_prefix,
            symbol,
        }
    }
}

/// A signal key as a Redis argument (see [`StrategyKeys::sig_arg`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct SigKey<'a> {
    prefix: &'a str,
    symbol: &'a str,
}

impl SigKey<'_> {
    /// Its length as an argument.
    pub(super) fn byte_len(&self) -> usize {
        self.prefix.len() + self.symbol.len()
    }
}

impl redis::ToRedisArgs for SigKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(format_args!("{}{}", self.prefix, self.symbol));
    }
}

impl redis::ToSingleRedisArg for SigKey<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_keys_share_one_hash_tag() {
        let k = Keys::new("mlcore").strategy("fx_g10");
        for key in [k.ops.clone(), k.hwm.clone(), k.signals.clone(), k.sig("EURUSD")] {
            assert!(key.starts_with("mlcore:{fx_g10}:"), "{key}");
        }
        assert_eq!(k.sig("EURUSD"), "mlcore:{fx_g10}:sig:EURUSD");
        let mut cmd = redis::cmd("X");
        cmd.arg(k.sig_arg("EURUSD"));
        assert_eq!(
            cmd.get_packed_command(),
            redis::cmd("X").arg(k.sig("EURUSD")).get_packed_command()
        );
    }
}
