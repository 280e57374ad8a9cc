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

impl ConnectionLike for RedisConn {
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
