//! Connecting to Redis: one server or a Cluster, behind one type every
//! contract function accepts.

use std::time::Duration;

use redis::{Cmd, ConnectionLike, RedisResult, Value};

/// Where Redis is and how long to wait for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `redis://[user:pass@]host:port/db` (or `unix://...`) of one server.
    pub url: String,
    /// Seed nodes (`host:port`) of a Cluster; empty for one server.
    pub cluster_nodes: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-command timeout.
    pub command_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("cluster_nodes", &self.cluster_nodes)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// One server at `url`, with the timeouts a test or a consumer would take.
    pub fn single(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            cluster_nodes: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
        }
    }

    /// Whether this is a Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// The Cluster's seed nodes as URLs.
    pub fn cluster_urls(&self) -> Vec<String> {
        self.cluster_nodes
            .iter()
            .map(|n| format!("redis://{n}/"))
            .collect()
    }
}

/// `redis.yaml` as an endpoint (feature `config`).
#[cfg(feature = "config")]
impl From<&mlcore_config::RedisConfig> for Endpoint {
    fn from(cfg: &mlcore_config::RedisConfig) -> Self {
        Self {
            url: cfg.url.expose().to_owned(),
            cluster_nodes: match cfg.mode {
                mlcore_config::RedisMode::Standalone => Vec::new(),
                mlcore_config::RedisMode::Cluster => cfg.cluster_nodes.clone(),
            },
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms.max(1)),
            command_timeout: Duration::from_millis(cfg.command_timeout_ms.max(1)),
        }
    }
}

/// A standalone or Cluster connection.
#[allow(clippy::large_enum_variant)] // one per thread, never moved on a hot path
pub enum RedisConn {
    /// One server.
    Single(redis::Connection),
    /// A Redis Cluster.
    Cluster(redis::cluster::ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Connects with the configured timeouts.
    pub fn connect(endpoint: &Endpoint) -> RedisResult<Self> {
        let (connect, command) = (endpoint.connect_timeout, endpoint.command_timeout);
        if endpoint.is_cluster() {
            let client = redis::cluster::ClusterClientBuilder::new(endpoint.cluster_urls())
                .connection_timeout(connect)
                .response_timeout(command)
                .build()?;
            return Ok(Self::Cluster(client.get_connection()?));
        }
        let client = redis::Client::open(endpoint.url.as_str())?;
        let conn = client.get_connection_with_timeout(connect)?;
        conn.set_read_timeout(Some(command))?;
        conn.set_write_timeout(Some(command))?;
        Ok(Self::Single(conn))
    }
}

/// Commands packed for the wire, sent together by [`PackedCommands::run`].
/// Kept and refilled by callers that send on every decision: once its
/// buffers have grown, packing allocates nothing.
#[derive(Debug, Default)]
pub struct PackedCommands {
    bytes: Vec<u8>,
    /// Where each command ends in `bytes`.
    ends: Vec<usize>,
}

impl PackedCommands {
    /// Empties it, keeping the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Makes room for `bytes` more bytes in `commands` more commands.
    pub fn reserve(&mut self, bytes: usize, commands: usize) {
        self.bytes.reserve(bytes);
        self.ends.reserve(commands);
    }

    /// Bytes it can hold without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The commands as they go on the wire.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends one command.
    pub fn push(&mut self, cmd: &Cmd) {
        cmd.write_packed_command(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    /// The commands whose index passes `keep`, in order (for retrying a few).
    pub fn only(&self, keep: impl Fn(usize) -> bool) -> Self {
        let mut out = Self::default();
        let mut start = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            if keep(i) {
                out.bytes.extend_from_slice(&self.bytes[start..end]);
                out.ends.push(out.bytes.len());
            }
            start = end;
        }
        out
    }

    /// Sends the commands and returns each one's reply or error: in one
    /// round trip on a connection that pipelines, one by one on a Cluster
    /// connection (a Cluster pipeline goes to a single node, and the
    /// commands of one call may live in different slots). A lost connection
    /// ends the call with `Err`; a command the server refuses is an `Err` in
    /// its slot.
    pub fn run(&self, conn: &mut impl ConnectionLike) -> RedisResult<Vec<RedisResult<Value>>> {
        if conn.supports_pipelining() {
            return Ok(conn
                .req_packed_commands(&self.bytes, 0, self.ends.len())?
                .into_iter()
                .map(|v| match v {
                    Value::ServerError(e) => Err(e.into()),
                    v => Ok(v),
                })
                .collect());
        }
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let one = &self.bytes[start..end];
                start = end;
                match conn.req_packed_command(one) {
                    Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => Err(e),
                    reply => Ok(reply),
                }
            })
            .collect()
    }
}

/// Runs `pipe`'s commands as [`PackedCommands::run`] does, for commands
/// whose replies do not matter: the first refusal is the error.
pub fn run_all(conn: &mut impl ConnectionLike, pipe: &redis::Pipeline) -> RedisResult<()> {
    let mut packed = PackedCommands::default();
    pipe.cmd_iter().for_each(|c| packed.push(c));
    packed.run(conn)?.into_iter().try_for_each(|r| r.map(|_| ()))
}

impl ConnectionLike for RedisConn {
    fn supports_pipelining(&self) -> bool {
        match self {
            Self::Single(c) => c.supports_pipelining(),
            Self::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Single(c) => c.req_command(cmd),
            Self::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Single(c) => c.check_connection(),
            Self::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Single(c) => c.is_open(),
            Self::Cluster(c) => c.is_open(),
        }
    }
}
