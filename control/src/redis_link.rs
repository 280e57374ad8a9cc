//! The control plane's Redis: one asynchronous, multiplexed, reconnecting
//! connection shared by every request (`redis`'s `ConnectionManager`; on a
//! Cluster, the asynchronous cluster client), speaking the contract through
//! its commands (`mlcore-contract`'s `*_cmd` and reply readers). Nothing
//! blocks a runtime thread and no request opens a connection of its own.
//!
//! The link connects lazily: the control plane starts, and answers what
//! needs only PostgreSQL, while Redis is down; requests that need Redis get
//! an error (`503` at the API) until it is back.

use std::collections::BTreeMap;

use mlcore_config::RedisConfig;
use mlcore_contract::guard::{is_function_missing, with_install_hint, Library, LIBRARIES};
use mlcore_contract::{
    ContractError, Endpoint, Guard, Heartbeat, Keys, ModeChange, ModelPointer, OpsState, SetModeOutcome,
};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisFuture, Value};
use tokio::sync::OnceCell;

/// A shared asynchronous connection and the namespace's key layout.
#[derive(Clone)]
pub struct RedisLink {
    conn: Conn,
    guard: Guard,
    /// `redis.yaml` `guard_install`: load the guard when a call finds it
    /// missing, or say how to install it.
    may_install: bool,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("namespace", &self.guard.keys().namespace())
            .finish_non_exhaustive()
    }
}

/// A stream entry as `XRANGE` returns it: its id and field/value pairs.
type RawEntry = (String, Vec<(String, Vec<u8>)>);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(std::sync::Arc<ClusterLink>),
}

/// A Cluster connection made on first use (and again after a failed try).
struct ClusterLink {
    client: redis::cluster::ClusterClient,
    conn: OnceCell<redis::cluster_async::ClusterConnection>,
}

impl RedisLink {
    /// A link to `redis.yaml`'s Redis; connects on first use.
    pub fn new(cfg: &RedisConfig) -> redis::RedisResult<Self> {
        let endpoint = Endpoint::from(cfg);
        let (connect, command) = (endpoint.connect_timeout, endpoint.command_timeout);
        let conn = if endpoint.is_cluster() {
            let client = redis::cluster::ClusterClientBuilder::new(endpoint.cluster_urls())
                .connection_timeout(connect)
                .response_timeout(command)
                .build()?;
            Conn::Cluster(std::sync::Arc::new(ClusterLink {
                client,
                conn: OnceCell::new(),
            }))
        } else {
            let client = redis::Client::open(endpoint.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(command))
                .set_number_of_retries(2);
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        Ok(Self {
            conn,
            guard: Guard::new(Keys::new(&cfg.namespace), cfg.stream_maxlen)
                .with_contract(cfg.contract.into()),
            may_install: cfg.guard_install.may_install(),
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        self.guard.keys()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, ContractError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Runs `cmd`, a guard call; if the guard is not loaded and this
    /// process may install it, loads it once and runs `cmd` again.
    async fn with_guard(&self, cmd: &Cmd) -> Result<Value, ContractError> {
        let mut conn = self.conn.clone();
        match cmd.query_async::<Value>(&mut conn).await {
            Err(e) if is_function_missing(&e) && !self.may_install => {
                Err(with_install_hint(ContractError::GuardMissing {
                    library: Library::of(self.guard.contract()).name,
                    reason: e.to_string(),
                }))
            }
            Err(e) if is_function_missing(&e) => {
                for lib in &LIBRARIES {
                    lib.load_cmd()
                        .query_async::<Value>(&mut conn)
                        .await
                        .map_err(|e| ContractError::GuardMissing {
                            library: lib.name,
                            reason: e.to_string(),
                        })?;
                }
                Ok(cmd.query_async(&mut conn).await?)
            }
            other => Ok(other?),
        }
    }

    /// Checks that this build's guard (version and revision) answers; when
    /// it does not and this process may install it, loads it and checks
    /// again; otherwise says how to install it. `serve` calls it at start.
    pub async fn ensure_guard(&self) -> Result<(), ContractError> {
        // The library of the version this process writes with; the other
        // may be absent (v3 not yet installed, or v2 removed).
        let lib = Library::of(self.guard.contract());
        let mut conn = self.conn.clone();
        let missing = match lib.info_cmd().query_async::<Value>(&mut conn).await {
            Ok(reply) => match lib.check_info(&reply) {
                Ok(()) => return Ok(()),
                Err(older) => older,
            },
            Err(e) if is_function_missing(&e) => ContractError::GuardMissing {
                library: lib.name,
                reason: e.to_string(),
            },
            Err(e) => return Err(e.into()),
        };
        if !self.may_install {
            return Err(with_install_hint(missing));
        }
        for l in &LIBRARIES {
            l.load_cmd().query_async::<Value>(&mut conn).await.map_err(|e| {
                with_install_hint(ContractError::GuardMissing {
                    library: l.name,
                    reason: e.to_string(),
                })
            })?;
        }
        let reply = lib.info_cmd().query_async::<Value>(&mut conn).await?;
        lib.check_info(&reply)
    }

    /// Spends `principal`'s one-time-code `step` through the guard (once).
    pub async fn spend_code(
        &self,
        principal: &str,
        step: u64,
    ) -> Result<mlcore_contract::CodeSpent, ContractError> {
        let reply = self
            .with_guard(&self.guard.spend_code_cmd(principal, step))
            .await?;
        Guard::spend_code_outcome(&reply)
    }

    /// Stores the latest signed audit checkpoint (JSON) beside the WORM
    /// archive's copy.
    pub async fn write_audit_checkpoint(&self, json: &str) -> Result<(), ContractError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys().audit_checkpoint())
            .arg("checkpoint")
            .arg(json);
        self.query::<Value>(&cmd).await.map(|_| ())
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), ContractError> {
        self.query::<Value>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// A strategy's ops state (absent or unreadable: halted).
    pub async fn read_mode(&self, strategy: &str) -> Result<OpsState, ContractError> {
        let fields: Vec<(String, String)> = self.query(&self.guard.read_mode_cmd(strategy)).await?;
        Ok(OpsState::from_fields(&fields))
    }

    /// Compare-and-set of a strategy's mode through the guard.
    pub async fn set_mode(&self, change: &ModeChange<'_>) -> Result<SetModeOutcome, ContractError> {
        let reply = self.with_guard(&self.guard.set_mode_cmd(change)).await?;
        Guard::set_mode_outcome(&reply)
    }

    /// Every daemon that ever sent a heartbeat, its last time, and its
    /// heartbeat while it has not expired.
    pub async fn heartbeats(&self) -> Result<Vec<(String, u64, Option<Heartbeat>)>, ContractError> {
        let keys = self.keys();
        let known: Vec<(String, u64)> = self.query(&Heartbeat::known_instances_cmd(keys)).await?;
        let mut out = Vec::with_capacity(known.len());
        for (instance, at) in known {
            let fields: BTreeMap<String, String> = self.query(&Heartbeat::read_cmd(keys, &instance)).await?;
            let hb = Heartbeat::from_fields(&instance, &fields);
            out.push((instance, at, hb));
        }
        Ok(out)
    }

    /// Replaces the pointer and announces it. The commands go one by one
    /// (a Cluster routes each to its slot), the announcement last.
    pub async fn write_pointer(&self, pointer: &ModelPointer) -> Result<(), ContractError> {
        for cmd in pointer.write_pipeline(self.keys())?.cmd_iter() {
            self.query::<Value>(cmd).await?;
        }
        Ok(())
    }

    /// Publishes `event` (JSON with a `type`) on the events channel.
    pub async fn publish_event(&self, event: &serde_json::Value) -> Result<(), ContractError> {
        self.query::<Value>(
            redis::cmd("PUBLISH")
                .arg(self.keys().events())
                .arg(event.to_string()),
        )
        .await
        .map(|_| ())
    }

    /// Entries of the stream `key` strictly after the id `after`, oldest
    /// first, at most `count`: each id with its fields (bytes: contract
    /// v3's records are binary).
    pub async fn stream_after(
        &self,
        key: &str,
        after: &str,
        count: usize,
    ) -> Result<Vec<(String, BTreeMap<String, Vec<u8>>)>, ContractError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(key)
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let entries: Vec<RawEntry> = self.query(&cmd).await?;
        Ok(entries
            .into_iter()
            .map(|(id, fields)| (id, fields.into_iter().collect()))
            .collect())
    }

    /// The analytics cache's generation (0 before any job wrote).
    pub async fn analytics_generation(&self) -> Result<u64, ContractError> {
        let v: Option<u64> = self
            .query(redis::cmd("GET").arg(self.keys().analytics_generation()))
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// Invalidates every cached analytics answer (a job wrote new data).
    pub async fn bump_analytics_generation(&self) -> Result<u64, ContractError> {
        self.query(redis::cmd("INCR").arg(self.keys().analytics_generation()))
            .await
    }

    /// A cached analytics answer.
    pub async fn cache_get(&self, key: &str) -> Result<Option<String>, ContractError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// Caches an analytics answer for `ttl_s` seconds.
    pub async fn cache_put(&self, key: &str, value: &str, ttl_s: u64) -> Result<(), ContractError> {
        self.query::<Value>(redis::cmd("SET").arg(key).arg(value).arg("EX").arg(ttl_s.max(1)))
            .await
            .map(|_| ())
    }

    /// Sets or clears the pin on `strategy`'s pointer.
    pub async fn set_pinned(&self, strategy: &str, pinned: bool) -> Result<(), ContractError> {
        self.query::<Value>(&ModelPointer::set_pinned_cmd(self.keys(), strategy, pinned))
            .await
            .map(|_| ())
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(link) => Box::pin(async move {
                let mut c = link.connection().await?;
                c.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(link) => Box::pin(async move {
                let mut c = link.connection().await?;
                c.req_packed_commands(cmd, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

impl ClusterLink {
    async fn connection(&self) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}
