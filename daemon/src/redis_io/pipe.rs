//! The publisher's connection: decisions go out while earlier ones are
//! still in Redis, and replies are read without building values.
//!
//! With one call in flight, Redis idles between a reply and the next call:
//! the reply travels, the publisher wakes up, reads it, takes the next
//! decision and sends it (50–150 µs on a busy 2-core machine, next to
//! ≈ 300 µs of work in Redis). A [`PublishPipe`] lets the caller send up
//! to [`MAX_IN_FLIGHT`] guard pipelines before reading the first reply, so
//! under load the next decision is already queued in Redis when the
//! previous one finishes. Redis runs the commands of one connection in
//! order, so the guard sees exactly the sequence it would see one by one.
//!
//! Replies are read by [`ReplyReader`] into reused buffers: after warm-up
//! a decision allocates nothing on the publisher's thread (the Redis
//! client would allocate its reply values).
//!
//! On a Redis Cluster (or an address the pipe cannot open itself) the
//! pipe falls back to the Redis client, one pipeline at a time: the same
//! calls and outcomes, without the overlap and with the client's
//! allocations.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionLike, IntoConnectionInfo, RedisResult, Value};

use mlcore_config::{RedisConfig, RedisMode};
use mlcore_contract::guard::{push_value_outcomes, ContractVersion};
use mlcore_contract::{ContractError, Guard, PublishBuffers, PublishOutcome, RedisConn, SignalBatch};

use super::resp::{Kind, Reply, ReplyReader};

/// Most guard pipelines sent and not yet answered. Two keep Redis busy
/// (one running, one queued); more would only queue decisions in Redis
/// that could otherwise still fold into the next pipeline.
pub const MAX_IN_FLIGHT: usize = 2;

/// One guard pipeline's outcomes, one per batch, in order.
pub type Outcomes = [Result<PublishOutcome, ContractError>];

/// A connection that publishes through the guard with pipelines in flight.
/// It is also a [`ConnectionLike`] for the guard's other calls (load,
/// high-water marks), which need nothing in flight.
#[derive(Debug)]
pub struct PublishPipe {
    transport: Transport,
    /// Sent pipelines, oldest at `head`.
    rounds: Vec<Round>,
    head: usize,
    in_flight: usize,
    db: i64,
    /// A read or write failed: the stream's position is unknown.
    broken: bool,
    /// Whether a call that finds the guard missing may load it
    /// (`redis.yaml` `guard_install`).
    may_install: bool,
    /// The contract version of the calls last sent: the library a reload
    /// must bring back.
    contract: ContractVersion,
}

#[derive(Debug)]
enum Transport {
    /// The pipe's own socket.
    Socket { stream: Stream, reader: ReplyReader },
    /// The Redis client (Cluster, or an address the pipe cannot open).
    Client(Box<RedisConn>),
}

#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sent pipeline: its encoded calls (kept to retry after a reload) and,
/// once read, its outcomes.
#[derive(Debug, Default)]
struct Round {
    bufs: PublishBuffers,
    outcomes: Vec<Result<PublishOutcome, ContractError>>,
    /// Its replies have been read.
    read: bool,
}

impl PublishPipe {
    /// Connects as `cfg` says: its own socket to a standalone server
    /// (TCP or Unix socket, with `AUTH` and `SELECT` from the URL),
    /// otherwise through the Redis client.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, ContractError> {
        let connect = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        let command = Duration::from_millis(cfg.command_timeout_ms.max(1));
        if cfg.mode == RedisMode::Standalone {
            if let Some(pipe) = Self::connect_url(cfg.url.expose(), connect, command)? {
                return Ok(pipe);
            }
        }
        let conn = RedisConn::connect(&cfg.into())?;
        let db = conn.get_db();
        Ok(Self::with(Transport::Client(Box::new(conn)), db))
    }

    /// Whether a call that finds the guard missing may load it; without,
    /// the calls fail with `GuardMissing` until it is installed.
    #[must_use]
    pub fn installing(mut self, may_install: bool) -> Self {
        self.may_install = may_install;
        self
    }

    /// Its own socket to the standalone server at `url`, authenticated and
    /// on the URL's database; `None` for an address it cannot open itself
    /// (TLS), which [`PublishPipe::connect`] leaves to the Redis client.
    pub fn connect_url(
        url: &str,
        connect: Duration,
        command: Duration,
    ) -> Result<Option<Self>, ContractError> {
        let info = url.into_connection_info()?;
        let settings = info.redis_settings();
        let Some(stream) = open(info.addr(), connect, Some(command)).map_err(redis::RedisError::from)? else {
            return Ok(None);
        };
        let mut pipe = Self::with(
            Transport::Socket {
                stream,
                reader: ReplyReader::default(),
            },
            settings.db(),
        );
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password).exec(&mut pipe)?;
        }
        if settings.db() != 0 {
            redis::cmd("SELECT").arg(settings.db()).exec(&mut pipe)?;
        }
        Ok(Some(pipe))
    }

    fn with(transport: Transport, db: i64) -> Self {
        Self {
            transport,
            rounds: (0..MAX_IN_FLIGHT).map(|_| Round::default()).collect(),
            head: 0,
            in_flight: 0,
            db,
            may_install: true,
            contract: ContractVersion::V2,
            broken: false,
        }
    }

    /// Pipelines sent and not yet received.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether this pipe overlaps pipelines (its own socket), or sends
    /// each one and waits for its replies (the Redis client).
    pub fn overlaps(&self) -> bool {
        matches!(self.transport, Transport::Socket { .. })
    }

    /// Sends `batches` through the guard as [`Guard::publish_many`] would,
    /// without waiting for the replies; [`PublishPipe::recv`] returns
    /// their outcomes, pipelines in the order they were sent. At most
    /// [`MAX_IN_FLIGHT`] may be in flight. An `Err` means the connection
    /// is lost (nothing can be said of what is in flight) or the batches
    /// were refused before sending.
    pub fn send(&mut self, guard: &Guard, batches: &[SignalBatch]) -> Result<(), ContractError> {
        if self.in_flight == MAX_IN_FLIGHT {
            return Err(ContractError::Invalid {
                field: "in_flight",
                reason: format!("{MAX_IN_FLIGHT} pipelines already wait for their replies"),
            });
        }
        if self.broken {
            return Err(ContractError::Redis(
                io::Error::new(io::ErrorKind::NotConnected, "the connection broke earlier").into(),
            ));
        }
        self.contract = guard.contract();
        let slot = (self.head + self.in_flight) % MAX_IN_FLIGHT;
        let round = &mut self.rounds[slot];
        round.outcomes.clear();
        match &mut self.transport {
            Transport::Socket { stream, .. } => {
                guard.encode(batches, &mut round.bufs)?;
                round.read = false;
                if let Err(e) = stream.write_all(round.bufs.packed().bytes()) {
                    self.broken = true;
                    return Err(ContractError::Redis(e.into()));
                }
            }
            Transport::Client(conn) => {
                let outcomes = guard.publish_many_with(conn, batches, &mut round.bufs)?;
                round.outcomes.extend(outcomes);
                round.read = true;
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// The outcomes of the oldest pipeline in flight, waiting for its
    /// replies. A guard library found missing is reloaded (after reading
    /// everything in flight) and only the calls that failed on it are sent
    /// again, in order. An `Err` means the connection is lost.
    pub fn recv(&mut self) -> Result<&Outcomes, ContractError> {
        if self.in_flight == 0 {
            return Err(ContractError::Invalid {
                field: "in_flight",
                reason: "no pipeline waits for its replies".into(),
            });
        }
        let head = self.head;
        if !self.rounds[head].read {
            self.read_round(head)?;
            if missing_guard(&self.rounds[head]) {
                self.reload_and_retry()?;
            }
        }
        self.head = (head + 1) % MAX_IN_FLIGHT;
        self.in_flight -= 1;
        Ok(&self.rounds[head].outcomes)
    }

    /// Reads the replies of round `slot` into its outcomes.
    fn read_round(&mut self, slot: usize) -> Result<(), ContractError> {
        let Transport::Socket { stream, reader } = &mut self.transport else {
            return Ok(()); // the client's rounds are read when sent
        };
        let round = &mut self.rounds[slot];
        for g in round.bufs.groups() {
            match reader.read(stream) {
                Ok(reply) => push_outcomes(reply, g.len(), &mut round.outcomes),
                Err(e) => {
                    self.broken = true;
                    reader.reset();
                    return Err(ContractError::Redis(e.into()));
                }
            }
        }
        round.read = true;
        Ok(())
    }

    /// Reads every round in flight, reloads the guard, and sends again
    /// the calls that found it missing, round by round.
    fn reload_and_retry(&mut self) -> Result<(), ContractError> {
        let slots: Vec<usize> = (0..self.in_flight)
            .map(|i| (self.head + i) % MAX_IN_FLIGHT)
            .collect();
        for &s in &slots {
            if !self.rounds[s].read {
                self.read_round(s)?;
            }
        }
        let (may_install, contract) = (self.may_install, self.contract);
        Guard::ensure(self, may_install, contract)?;
        let Self {
            transport,
            rounds,
            broken,
            ..
        } = self;
        for s in slots {
            let round = &mut rounds[s];
            let failed: Vec<usize> = (0..round.bufs.groups().len())
                .filter(|&i| is_missing(&round.outcomes[round.bufs.groups()[i].start]))
                .collect();
            if failed.is_empty() {
                continue;
            }
            let retry = round.bufs.packed().only(|i| failed.contains(&i));
            exchange(transport, broken, retry.bytes(), failed.len(), |reply, i| {
                let g = round.bufs.groups()[failed[i]].clone();
                let mut fresh = Vec::with_capacity(g.len());
                push_outcomes(reply, g.len(), &mut fresh);
                for (slot, o) in round.outcomes[g].iter_mut().zip(fresh) {
                    *slot = o;
                }
            })?;
        }
        Ok(())
    }

    /// Whether nothing is unread on the socket, for a plain request.
    fn idle(&self) -> RedisResult<()> {
        let unread = (0..self.in_flight).any(|i| !self.rounds[(self.head + i) % MAX_IN_FLIGHT].read);
        if unread {
            Err(io::Error::other("a request was made while guard pipelines wait for their replies").into())
        } else {
            Ok(())
        }
    }
}

/// Writes `bytes` and reads `count` replies, handing each to `each` with
/// its index (nothing may be unread on the socket).
fn exchange(
    transport: &mut Transport,
    broken: &mut bool,
    bytes: &[u8],
    count: usize,
    mut each: impl FnMut(Reply<'_>, usize),
) -> RedisResult<()> {
    let Transport::Socket { stream, reader } = transport else {
        return Err(io::Error::other("the Redis client path has no socket of its own").into());
    };
    if *broken {
        return Err(io::Error::new(io::ErrorKind::NotConnected, "the connection broke earlier").into());
    }
    let result = stream.write_all(bytes).and_then(|()| {
        (0..count).try_for_each(|i| {
            each(reader.read(stream)?, i);
            Ok(())
        })
    });
    if let Err(e) = result {
        *broken = true;
        reader.reset();
        return Err(e.into());
    }
    Ok(())
}
/// Whether any call of the round found the guard library missing.
fn missing_guard(round: &Round) -> bool {
    round.outcomes.iter().any(is_missing)
}

fn is_missing(o: &Result<PublishOutcome, ContractError>) -> bool {
    matches!(o, Err(ContractError::GuardMissing { .. }))
}

/// Opens a TCP or Unix socket to `addr`; `None` for addresses the pipe
/// leaves to the Redis client.
fn open(addr: &ConnectionAddr, connect: Duration, command: Option<Duration>) -> io::Result<Option<Stream>> {
    Ok(Some(match addr {
        ConnectionAddr::Tcp(host, port) => {
            let stream = connect_tcp(host, *port, connect)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(command)?;
            stream.set_write_timeout(command)?;
            Stream::Tcp(stream)
        }
        ConnectionAddr::Unix(path) => {
            let stream = UnixStream::connect(path)?;
            stream.set_read_timeout(command)?;
            stream.set_write_timeout(command)?;
            Stream::Unix(stream)
        }
        _ => return Ok(None),
    }))
}

fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port} resolves to nothing"),
        )
    }))
}

impl ConnectionLike for PublishPipe {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if let Transport::Client(c) = &mut self.transport {
            return c.req_packed_command(cmd);
        }
        self.idle()?;
        let mut raw = Vec::new();
        exchange(&mut self.transport, &mut self.broken, cmd, 1, |reply, _| {
            raw.extend_from_slice(reply.bytes);
        })?;
        redis::parse_redis_value(&raw)
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        if let Transport::Client(c) = &mut self.transport {
            return c.req_packed_commands(cmd, offset, count);
        }
        self.idle()?;
        let mut values = Vec::with_capacity(count);
        exchange(
            &mut self.transport,
            &mut self.broken,
            cmd,
            offset + count,
            |reply, i| {
                if i >= offset {
                    values.push(reply.value(0));
                }
            },
        )?;
        values.into_iter().collect()
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").exec(self).is_ok()
    }

    fn is_open(&self) -> bool {
        match &self.transport {
            Transport::Socket { .. } => !self.broken,
            Transport::Client(c) => c.is_open(),
        }
    }
}

/// Appends the outcomes of one guard call's reply, carrying `n`
/// batches, to `out`: what [`Guard::publish_many`] makes of the same
/// reply. When every decision was accepted (the common reply) the
/// outcomes are read off the frames; anything else is read as the Redis
/// client would read it, by [`push_value_outcomes`] (refusals and
/// errors are rare and may allocate).
fn push_outcomes(reply: Reply<'_>, n: usize, out: &mut Vec<Result<PublishOutcome, ContractError>>) {
    let start = out.len();
    let all_accepted = if n == 1 {
        accepted(reply, 0).map(|count| out.push(Ok(PublishOutcome::Accepted { count })))
    } else {
        match reply.frame(0) {
            Some(f) if f.kind == Kind::Array && usize::try_from(f.int) == Ok(n) => {
                reply.children(0).try_for_each(|i| {
                    accepted(reply, i).map(|count| out.push(Ok(PublishOutcome::Accepted { count })))
                })
            }
            _ => None,
        }
    };
    if all_accepted.is_none() {
        out.truncate(start);
        push_value_outcomes(reply.value(0), n, out);
    }
}

/// The signal count of element `i` of `reply` when it is the accepted
/// reply `["ok", n]`, read off the frames.
fn accepted(reply: Reply<'_>, i: usize) -> Option<usize> {
    match (reply.frame(i), reply.frame(i + 1), reply.frame(i + 2)) {
        (Some(a), Some(ok), Some(n))
            if a.kind == Kind::Array
                && a.int == 2
                && ok.kind == Kind::Bulk
                && n.kind == Kind::Int
                && reply.payload(i + 1) == b"ok" =>
        {
            usize::try_from(n.int).ok()
        }
        _ => None,
    }
}
