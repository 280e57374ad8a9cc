//! Connecting to Redis as `redis.yaml` says: one server or a Cluster, behind
//! one type every contract function accepts.

use std::time::Duration;

use redis::{Cmd, ConnectionLike, RedisResult, Value};

use crate::config::{RedisConfig, RedisMode};

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
    pub fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        let connect = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let command = Duration::from_millis(cfg.command_timeout_ms.max(1));
        match cfg.mode {
            RedisMode::Standalone => {
                let client = redis::Client::open(cfg.url.expose())?;
                let conn = client.get_connection_with_timeout(connect)?;
                conn.set_read_timeout(Some(command))?;
                conn.set_write_timeout(Some(command))?;
                Ok(Self::Single(conn))
            }
            RedisMode::Cluster => {
                let nodes: Vec<String> = cfg
                    .cluster_nodes
                    .iter()
                    .map(|n| format!("redis://{n}/"))
                    .collect();
                let client = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(connect)
                    .response_timeout(command)
                    .build()?;
                Ok(Self::Cluster(client.get_connection()?))
            }
        }
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
