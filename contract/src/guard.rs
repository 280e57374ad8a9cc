//! The guard: a Redis Function library every signal write goes through.
//!
//! Loaded (or upgraded) at start with `FUNCTION LOAD REPLACE`; in a Cluster
//! the load goes to every primary. Function names carry the version
//! (`mlcore_publish_v2`), so a call can only ever reach the guard it was
//! written for: when the library is gone (restart without persistence,
//! `FUNCTION FLUSH`, failover to an empty replica) the call fails, the guard is
//! reloaded once and the call retried, or the publish is refused. There is no
//! code path that writes a signal key directly.
//!
//! Two contract versions are loaded side by side while consumers migrate
//! (docs/redis-contract.md, "Migrating to v3"): v2 (`guard.lua`: a hash per
//! symbol, JSON stream entries) and v3 (`guard_v3.lua`: one snapshot hash
//! per strategy, binary records). [`Guard::with_contract`] picks the one a
//! client writes with; [`Guard::read`] reads the newer of the two.

use std::ops::Range;

use redis::{ConnectionLike, Value};

use super::conn::PackedCommands;
use super::keys::{Keys, StrategyKeys};
use super::ops::{OpsMode, OpsState};
use super::signal::{Side, SignalBatch, StoredSignal};
use super::ContractError;

/// Library name (with its version).
pub const LIBRARY: &str = "mlcore_guard_v2";
/// Guard version; part of every function name.
pub const VERSION: i64 = 2;
/// What was added to this version compatibly (2: `mlcore_publish_many_v2`;
/// 3: `written_at_us` in every stream entry; 4: every key's type checked
/// before the first write, so no error leaves a half-written call; 5:
/// `set_mode` only for a user that may write the mode-writer key, and
/// `mlcore_spend_code_v2`). A loaded library must answer at least this
/// revision.
pub const REVISION: i64 = 5;
/// Most decisions folded into one guard call. More would save little (the
/// per-decision checks dominate from about 8 on) and would hold Redis for
/// longer in one go: about 1.2 ms at 8 on this machine.
pub const MAX_DECISIONS_PER_CALL: usize = 8;
/// The library source.
pub const SOURCE: &str = include_str!("guard.lua");
/// Contract v3's library name.
pub const LIBRARY_V3: &str = "mlcore_guard_v3";
/// Contract v3's library source.
pub const SOURCE_V3: &str = include_str!("guard_v3.lua");
/// Bytes of one signal in a v3 decision's records: weight (f64), qty
/// (f64), return_prob (f32), risk_score (f32), little-endian. The side is
/// the weight's sign (it cannot disagree with it).
pub const RECORD_BYTES: usize = 24;

/// One guard library: what loads it and how it says which it is.
#[derive(Debug, Clone, Copy)]
pub struct Library {
    /// Library name.
    pub name: &'static str,
    /// Lua source.
    pub source: &'static str,
    /// Contract version, part of every function name.
    pub version: i64,
    /// Revision within the version this build needs at least.
    pub revision: i64,
    info_fn: &'static str,
}

/// Every library this build loads: v2 and v3, side by side while
/// consumers migrate.
pub const LIBRARIES: [Library; 2] = [
    Library {
        name: LIBRARY,
        source: SOURCE,
        version: VERSION,
        revision: REVISION,
        info_fn: FN_INFO,
    },
    Library {
        name: LIBRARY_V3,
        source: SOURCE_V3,
        version: 3,
        revision: 1,
        info_fn: FN_INFO_V3,
    },
];

impl Library {
    /// The command that loads or upgrades it.
    pub fn load_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FUNCTION");
        cmd.arg("LOAD").arg("REPLACE").arg(self.source);
        cmd
    }

    /// The command that asks the loaded library its version; its reply
    /// goes to [`Library::check_info`].
    pub fn info_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL_RO");
        cmd.arg(self.info_fn).arg(0);
        cmd
    }

    /// Whether `reply` (to [`Library::info_cmd`]) is this library, at this
    /// revision or later.
    pub fn check_info(&self, reply: &Value) -> Result<(), ContractError> {
        match reply_items(reply).as_deref() {
            Some([Item::Str(name), Item::Int(v), Item::Int(rev)])
                if name == "mlcore_guard" && *v == self.version && *rev >= self.revision =>
            {
                Ok(())
            }
            _ => Err(ContractError::GuardMissing {
                library: self.name,
                reason: format!(
                    "guard answered {reply:?}, expected version {} revision ≥ {}",
                    self.version, self.revision
                ),
            }),
        }
    }

    /// The library a process writing with `contract` needs.
    pub fn of(contract: ContractVersion) -> &'static Library {
        match contract {
            ContractVersion::V2 => &LIBRARIES[0],
            ContractVersion::V3 => &LIBRARIES[1],
        }
    }

    /// Whether it answers on `conn` at its revision or later.
    pub fn check(&self, conn: &mut impl ConnectionLike) -> Result<(), ContractError> {
        let reply: Value = self.info_cmd().query(conn).map_err(|e| {
            if is_function_missing(&e) {
                self.missing(&e)
            } else {
                ContractError::Redis(e)
            }
        })?;
        self.check_info(&reply)
    }

    fn missing(&self, e: &redis::RedisError) -> ContractError {
        ContractError::GuardMissing {
            library: self.name,
            reason: e.to_string(),
        }
    }
}

#[cfg(feature = "config")]
impl From<mlcore_config::GuardContract> for ContractVersion {
    fn from(c: mlcore_config::GuardContract) -> Self {
        match c {
            mlcore_config::GuardContract::V2 => Self::V2,
            mlcore_config::GuardContract::V3 => Self::V3,
        }
    }
}

#[cfg(feature = "config")]
impl From<mlcore_config::GuardEngine> for GuardEngine {
    fn from(e: mlcore_config::GuardEngine) -> Self {
        match e {
            mlcore_config::GuardEngine::Function => Self::Function,
            mlcore_config::GuardEngine::Module => Self::Module,
        }
    }
}

/// What runs contract v3's publish call inside Redis (`redis.yaml`
/// `guard_engine`). Both check, write and answer alike (the module's
/// differential test holds them to it); only the cost differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuardEngine {
    /// `FCALL mlcore_publish_v3` (`guard_v3.lua`).
    #[default]
    Function,
    /// `mlcore.publish_v3` of the `mlcore_guard` module
    /// (`guardmod/`, `libmlcore_guard_module.so`): the five keys first, no
    /// key count, then the function's arguments.
    Module,
}

/// The module's publish command.
pub const MODULE_PUBLISH: &str = "mlcore.publish_v3";
/// The module's version command.
pub const MODULE_INFO: &str = "mlcore.guard_info";
/// The first item of the module's version reply.
const MODULE_REPLY_NAME: &str = "mlcore_guard_module";

/// Which contract version a [`Guard`] writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContractVersion {
    /// `mlcore_publish_v2`: a hash per symbol, JSON stream entries.
    #[default]
    V2,
    /// `mlcore_publish_v3`: one snapshot hash per strategy, binary records.
    V3,
}

const FN_PUBLISH: &str = "mlcore_publish_v2";
const FN_PUBLISH_MANY: &str = "mlcore_publish_many_v2";
const FN_READ: &str = "mlcore_read_v2";
const FN_SET_MODE: &str = "mlcore_set_mode_v2";
const FN_INFO: &str = "mlcore_info_v2";
const FN_SPEND_CODE: &str = "mlcore_spend_code_v2";
const FN_PUBLISH_V3: &str = "mlcore_publish_v3";
const FN_READ_V3: &str = "mlcore_read_v3";
const FN_SET_MODE_V3: &str = "mlcore_set_mode_v3";
const FN_INFO_V3: &str = "mlcore_info_v3";
const FN_SPEND_CODE_V3: &str = "mlcore_spend_code_v3";

/// What the guard did with a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// All signals written.
    Accepted {
        /// How many.
        count: usize,
    },
    /// `valid_until_ms` was not after Redis' clock.
    Expired {
        /// Redis time.
        now_ms: u64,
    },
    /// A symbol already holds this or a later `seq`.
    Stale {
        /// The symbol.
        symbol: String,
        /// Its stored high-water mark.
        stored_seq: u64,
    },
    /// The strategy's mode forbids the batch.
    Halted {
        /// The mode in force.
        mode: OpsMode,
        /// The symbol that broke the mode's rule (empty for `halted`).
        symbol: String,
    },
}

impl PublishOutcome {
    /// A short label for metrics (`accepted`, `expired`, `stale`, `halted`).
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Expired { .. } => "expired",
            Self::Stale { .. } => "stale",
            Self::Halted { .. } => "halted",
        }
    }
}

/// What spending a one-time-code step came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSpent {
    /// First use of the step: recorded.
    Spent,
    /// The step, or a later one, was used already.
    Replayed {
        /// The newest step this principal used.
        newest_used: u64,
    },
}

/// What a compare-and-set mode change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetModeOutcome {
    /// Applied; the new version.
    Applied {
        /// Version after the change.
        version: u64,
    },
    /// Someone else changed the mode first.
    Conflict {
        /// The version now stored.
        current_version: u64,
    },
}

/// A mode change request.
#[derive(Debug, Clone, Copy)]
pub struct ModeChange<'a> {
    /// Strategy id.
    pub strategy: &'a str,
    /// The version the caller saw (0 when never set).
    pub expected_version: u64,
    /// New mode.
    pub mode: OpsMode,
    /// Why.
    pub reason: &'a str,
    /// Who.
    pub actor: &'a str,
    /// Control-plane request id.
    pub request_id: &'a str,
}

/// Client of the guard for one namespace.
#[derive(Debug, Clone)]
pub struct Guard {
    keys: Keys,
    stream_maxlen: u64,
    may_install: bool,
    contract: ContractVersion,
    engine: GuardEngine,
}

/// What to do about it, appended to "the guard is missing" when the caller
/// may not or cannot install it.
const INSTALL_HINT: &str =
    "installing it is a deployment step: `mlcore-control redis install-guard --env ENV`, \
     as a Redis user that may FUNCTION LOAD (deployments/redis/README.md)";

impl Guard {
    /// A guard client for `keys`' namespace; signal streams are capped at
    /// about `stream_maxlen` entries.
    /// It reloads the guard when a call finds it gone, unless told not to
    /// with [`Guard::installing`].
    pub fn new(keys: Keys, stream_maxlen: u64) -> Self {
        Self {
            keys,
            stream_maxlen,
            may_install: true,
            contract: ContractVersion::V2,
            engine: GuardEngine::Function,
        }
    }

    /// Publishes contract v3 through `engine` (`redis.yaml` `guard_engine`;
    /// v2 has only the function).
    #[must_use]
    pub fn with_engine(mut self, engine: GuardEngine) -> Self {
        self.engine = engine;
        self
    }

    /// What runs the publish call.
    pub fn engine(&self) -> GuardEngine {
        self.engine
    }

    /// Whether what this client publishes through answers on `conn`: for
    /// [`GuardEngine::Module`] the module, at contract 3 and this build's
    /// revision or later (the function library is [`Guard::ensure`]'s).
    /// The module is loaded with Redis' `loadmodule`, never by a client: a
    /// missing one is an error saying so.
    pub fn check_engine(&self, conn: &mut impl ConnectionLike) -> Result<(), ContractError> {
        if self.engine == GuardEngine::Function {
            return Ok(());
        }
        let missing = |reason: String| ContractError::GuardMissing {
            library: "mlcore_guard (Redis module)",
            reason: format!(
                "{reason}; load libmlcore_guard_module.so with redis-server's `loadmodule` \
                 (docs/redis-contract.md, \"The guard as a module\"), or set `guard_engine: function`"
            ),
        };
        if self.contract != ContractVersion::V3 {
            return Err(missing("the module publishes contract v3 only".into()));
        }
        let reply: Value = redis::cmd(MODULE_INFO).query(conn).map_err(|e| {
            if e.to_string().to_ascii_lowercase().contains("unknown command") {
                missing(format!("Redis does not know {MODULE_INFO}"))
            } else {
                ContractError::Redis(e)
            }
        })?;
        match reply_items(&reply).as_deref() {
            Some([Item::Str(name), Item::Int(3), Item::Int(rev)])
                if name == MODULE_REPLY_NAME && *rev >= LIBRARIES[1].revision =>
            {
                Ok(())
            }
            _ => Err(missing(format!(
                "the module answered {reply:?}, expected contract 3 revision ≥ {}",
                LIBRARIES[1].revision
            ))),
        }
    }

    /// Writes with contract `version` (`redis.yaml` `contract`): publishes,
    /// mode changes and one-time codes go through that version's functions.
    #[must_use]
    pub fn with_contract(mut self, version: ContractVersion) -> Self {
        self.contract = version;
        self
    }

    /// The contract version this client writes with.
    pub fn contract(&self) -> ContractVersion {
        self.contract
    }

    /// Whether this client may load the guard when a call finds it missing
    /// (`redis.yaml` `guard_install`); without, the call fails with
    /// [`ContractError::GuardMissing`] saying how to install it.
    #[must_use]
    pub fn installing(mut self, may_install: bool) -> Self {
        self.may_install = may_install;
        self
    }

    /// Makes sure the library of `contract` (the version this process
    /// writes with) answers on `conn`: checks, and only when it is missing
    /// or older and `may_install`, loads this build's libraries. A process
    /// whose Redis user may only call the guard therefore starts whenever
    /// the right guard is installed — and a v3 process runs once v2's
    /// library is deleted (the migration's last step).
    pub fn ensure(
        conn: &mut impl ConnectionLike,
        may_install: bool,
        contract: ContractVersion,
    ) -> Result<(), ContractError> {
        let missing = match Self::check_contract(conn, contract) {
            Ok(()) => return Ok(()),
            // Redis down or failing: nothing to install, say so as it is.
            Err(e @ ContractError::Redis(_)) => return Err(e),
            Err(e) => e,
        };
        Self::reinstall(conn, may_install, missing)
    }

    /// After a call found the guard `missing`: loads it (on every primary
    /// of a Cluster: a check could reach a node that still has it) when
    /// `may_install`, or says how to install it.
    fn reinstall(
        conn: &mut impl ConnectionLike,
        may_install: bool,
        missing: ContractError,
    ) -> Result<(), ContractError> {
        if !may_install {
            return Err(with_install_hint(missing));
        }
        Self::load(conn).map_err(|e| match &e {
            ContractError::GuardMissing { reason, .. } if reason.to_ascii_uppercase().contains("NOPERM") => {
                with_install_hint(e)
            }
            _ => e,
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Loads or upgrades every library of [`LIBRARIES`] (every primary in
    /// a Cluster) and checks that each answers with its version.
    pub fn load(conn: &mut impl ConnectionLike) -> Result<(), ContractError> {
        for lib in &LIBRARIES {
            lib.load_cmd().query::<Value>(conn).map_err(|e| lib.missing(&e))?;
        }
        Self::check_version(conn)
    }

    /// Whether every library of [`LIBRARIES`], at its revision or later,
    /// answers on `conn` (what installing checks).
    pub fn check_version(conn: &mut impl ConnectionLike) -> Result<(), ContractError> {
        for lib in &LIBRARIES {
            lib.check(conn)?;
        }
        Ok(())
    }

    /// Whether the library of `contract`, at its revision or later,
    /// answers on `conn` (what a process writing with it needs).
    pub fn check_contract(
        conn: &mut impl ConnectionLike,
        contract: ContractVersion,
    ) -> Result<(), ContractError> {
        Library::of(contract).check(conn)
    }

    /// The `FCALL` that publishes `batch` (for callers that pipeline several).
    pub fn publish_cmd(&self, keys: &StrategyKeys, batch: &SignalBatch) -> redis::Cmd {
        let mut cmd = redis::Cmd::new();
        self.fill_publish_cmd(&mut cmd, keys, std::slice::from_ref(batch), &mut Vec::new());
        cmd
    }

    /// Writes the `FCALL` that publishes `group` into `cmd` (cleared first):
    /// `mlcore_publish_v2` for one batch, `mlcore_publish_many_v2` for
    /// several of one strategy and symbol list. Arguments are written in
    /// place — numbers as `Display` prints them, keys from their parts — so
    /// a reused `cmd` allocates nothing once it has grown.
    fn fill_publish_cmd(
        &self,
        cmd: &mut redis::Cmd,
        keys: &StrategyKeys,
        group: &[SignalBatch],
        scratch: &mut Vec<u8>,
    ) {
        // `call_bound` must follow every argument written here.
        cmd.clear();
        let Some(first) = group.first() else { return };
        if self.contract == ContractVersion::V3 {
            self.fill_publish_v3(cmd, keys, group, scratch);
            return;
        }
        let many = group.len() > 1;
        cmd.arg("FCALL")
            .arg(if many { FN_PUBLISH_MANY } else { FN_PUBLISH })
            .arg(3 + first.signals.len())
            .arg(&keys.ops)
            .arg(&keys.hwm)
            .arg(&keys.signals);
        for s in &first.signals {
            cmd.arg(keys.sig_arg(&s.symbol));
        }
        if many {
            cmd.arg(group.len());
        }
        for batch in group {
            cmd.arg(batch.seq)
                .arg(batch.generated_at_ms)
                .arg(batch.valid_until_ms)
                .arg(self.stream_maxlen)
                .arg(&batch.model_id)
                .arg(batch.model_version)
                .arg(&batch.strategy);
            for s in &batch.signals {
                cmd.arg(&s.symbol)
                    .arg(s.side.as_str())
                    .arg(Num(s.weight))
                    .arg(Num(s.qty))
                    .arg(Num(s.return_prob))
                    .arg(Num(s.risk_score));
            }
        }
    }

    /// [`Guard::fill_publish_cmd`] for contract v3: `mlcore_publish_v3`
    /// with the symbols as one comma-separated argument and each batch's
    /// signals as one binary argument of [`RECORD_BYTES`] per signal, built
    /// in `scratch` (reused: no allocation once it has grown).
    fn fill_publish_v3(
        &self,
        cmd: &mut redis::Cmd,
        keys: &StrategyKeys,
        group: &[SignalBatch],
        scratch: &mut Vec<u8>,
    ) {
        let Some(first) = group.first() else { return };
        match self.engine {
            GuardEngine::Function => cmd.arg("FCALL").arg(FN_PUBLISH_V3).arg(5),
            GuardEngine::Module => cmd.arg(MODULE_PUBLISH),
        };
        cmd.arg(&keys.ops)
            .arg(&keys.snapshot)
            .arg(&keys.seq)
            .arg(&keys.stream_v3)
            .arg(&keys.hwm)
            .arg(&first.strategy);
        scratch.clear();
        for (i, s) in first.signals.iter().enumerate() {
            if i > 0 {
                scratch.push(b',');
            }
            scratch.extend_from_slice(s.symbol.as_bytes());
        }
        cmd.arg(&scratch[..]).arg(self.stream_maxlen).arg(group.len());
        for batch in group {
            cmd.arg(batch.seq)
                .arg(batch.generated_at_ms)
                .arg(batch.valid_until_ms)
                .arg(&batch.model_id)
                .arg(batch.model_version);
            scratch.clear();
            for s in &batch.signals {
                encode_record(s, scratch);
            }
            cmd.arg(&scratch[..]);
        }
    }

    /// Publishes one batch atomically. Reloads the guard once if it is gone.
    pub fn publish(
        &self,
        conn: &mut impl ConnectionLike,
        batch: &SignalBatch,
    ) -> Result<PublishOutcome, ContractError> {
        self.publish_many(conn, std::slice::from_ref(batch))?
            .pop()
            .unwrap_or_else(|| Err(ContractError::Protocol("no reply to the publish".into())))
    }

    /// Publishes several batches in one round trip: one outcome per batch,
    /// in order, each exactly what publishing the batches one after the
    /// other would have given. The daemon uses it when decisions queue up
    /// behind the network round trip.
    ///
    /// Consecutive batches of one strategy with the same symbols (up to
    /// [`MAX_DECISIONS_PER_CALL`]) go in one `mlcore_publish_many_v2` call:
    /// Redis then writes the signal hashes once for them instead of once
    /// per batch, which is most of a decision's cost inside Redis. The
    /// calls go in one pipeline (one by one on a Cluster connection). An
    /// `Err` from the whole call means nothing can be said about any batch
    /// (connection lost). A missing or older guard library is reloaded once
    /// and the calls that failed on it are retried (the others ran).
    pub fn publish_many(
        &self,
        conn: &mut impl ConnectionLike,
        batches: &[SignalBatch],
    ) -> Result<Vec<Result<PublishOutcome, ContractError>>, ContractError> {
        self.publish_many_with(conn, batches, &mut PublishBuffers::default())
    }

    /// [`Guard::publish_many`] with buffers the caller keeps between calls:
    /// once they have grown, encoding allocates nothing, and what is left
    /// per call is the Redis client's reply values (the daemon's publisher
    /// calls this for every decision).
    pub fn publish_many_with(
        &self,
        conn: &mut impl ConnectionLike,
        batches: &[SignalBatch],
        bufs: &mut PublishBuffers,
    ) -> Result<Vec<Result<PublishOutcome, ContractError>>, ContractError> {
        self.encode(batches, bufs)?;
        let mut replies = bufs.packed.run(conn).map_err(classify)?;
        let missing = |r: &redis::RedisResult<Value>| matches!(r, Err(e) if is_function_missing(e));
        if replies.iter().any(missing) {
            // Gone (restart, FUNCTION FLUSH) or an older revision without
            // `publish_many`: reload, then retry only the calls that failed
            // on it — the others ran, and sending them again would make
            // them stale.
            Self::reinstall(
                conn,
                self.may_install,
                ContractError::GuardMissing {
                    library: LIBRARY,
                    reason: "Function not found".into(),
                },
            )?;
            let again: Vec<usize> = (0..replies.len()).filter(|&i| missing(&replies[i])).collect();
            let retried = bufs
                .packed
                .only(|i| again.contains(&i))
                .run(conn)
                .map_err(classify)?;
            for (i, r) in again.into_iter().zip(retried) {
                replies[i] = r;
            }
        }
        let mut out = Vec::with_capacity(batches.len());
        for (g, reply) in bufs.groups.iter().zip(replies) {
            push_value_outcomes(reply, g.len(), &mut out);
        }
        Ok(out)
    }

    /// Encodes the guard calls that publish `batches` into `bufs` (the
    /// calls in `bufs.packed`, the batches each carries in `bufs.groups`).
    pub fn encode(&self, batches: &[SignalBatch], bufs: &mut PublishBuffers) -> Result<(), ContractError> {
        if let Some(i) = batches.iter().position(|b| b.signals.is_empty()) {
            return Err(ContractError::Invalid {
                field: "signals",
                reason: format!("batch {i} has no signal"),
            });
        }
        if self.contract == ContractVersion::V3 {
            // v3 carries no side: it is the weight's sign. One that
            // disagrees is refused here, as v2's guard refuses it.
            for (i, b) in batches.iter().enumerate() {
                if let Some(s) = b.signals.iter().find(|s| s.side != Side::of_weight(s.weight)) {
                    return Err(ContractError::Invalid {
                        field: "side",
                        reason: format!(
                            "batch {i}, {}: side {} does not match weight {}",
                            s.symbol,
                            s.side.as_str(),
                            s.weight
                        ),
                    });
                }
            }
        }
        group_calls(batches, &mut bufs.groups);
        bufs.packed.clear();
        for g in &bufs.groups {
            let group = &batches[g.clone()];
            let k = strategy_keys(&mut bufs.keys, &self.keys, &group[0].strategy);
            // Room for the most this call can encode to, whatever its
            // numbers print as: buffers grow when the shape of the calls
            // changes, never because a float printed longer than before.
            let (args, data) = call_bound(&bufs.keys[k], group, self.contract);
            bufs.packed.reserve(data + args * ARG_FRAMING + ARG_FRAMING, 1);
            if args > bufs.cmd_room.0 || data > bufs.cmd_room.1 {
                let room = (args.max(bufs.cmd_room.0), data.max(bufs.cmd_room.1));
                bufs.cmd = redis::Cmd::with_capacity(room.0, room.1);
                bufs.cmd_room = room;
            }
            self.fill_publish_cmd(&mut bufs.cmd, &bufs.keys[k], group, &mut bufs.scratch);
            bufs.packed.push(&bufs.cmd);
        }
        Ok(())
    }

    /// The current signal of `symbol`, only while it is valid (Redis time):
    /// the newer (by `seq`) of what contract v3's snapshot and v2's hash
    /// hold, so a consumer reads the right signal before, during and after
    /// a daemon's move from v2 to v3.
    pub fn read(
        &self,
        conn: &mut impl ConnectionLike,
        strategy: &str,
        symbol: &str,
    ) -> Result<Option<StoredSignal>, ContractError> {
        let keys = self.keys.strategy(strategy);
        let mut newest: Option<StoredSignal> = None;
        for (function, key) in [(FN_READ_V3, keys.snapshot.clone()), (FN_READ, keys.sig(symbol))] {
            let mut cmd = redis::cmd("FCALL_RO");
            cmd.arg(function).arg(1).arg(&key);
            if function == FN_READ_V3 {
                cmd.arg(symbol);
            }
            // The other version's library may be absent (v3 not yet
            // installed, or v2 already removed): no signal from it, not an
            // error. The version this client writes with is reloaded when
            // missing, as every call of it is.
            let ours = (function == FN_READ) == (self.contract == ContractVersion::V2);
            let reply = if ours {
                with_guard(conn, self.may_install, |c| cmd.query::<Value>(c))?
            } else {
                match cmd.query::<Value>(conn) {
                    Err(e) if is_function_missing(&e) => continue,
                    other => other.map_err(classify)?,
                }
            };
            if reply == Value::Nil {
                continue;
            }
            let signal = StoredSignal::from_fields(symbol, &pairs(&reply)?)?;
            if newest.as_ref().is_none_or(|n| signal.seq > n.seq) {
                newest = Some(signal);
            }
        }
        Ok(newest)
    }

    /// Compare-and-set of a strategy's mode; publishes an `ops_mode` event.
    pub fn set_mode(
        &self,
        conn: &mut impl ConnectionLike,
        change: &ModeChange<'_>,
    ) -> Result<SetModeOutcome, ContractError> {
        let cmd = self.set_mode_cmd(change);
        let reply = with_guard(conn, self.may_install, |c| cmd.query::<Value>(c))?;
        Self::set_mode_outcome(&reply)
    }

    /// The `FCALL` of [`Guard::set_mode`] (for callers with their own
    /// connection); its reply goes to [`Guard::set_mode_outcome`].
    pub fn set_mode_cmd(&self, change: &ModeChange<'_>) -> redis::Cmd {
        let keys = self.keys.strategy(change.strategy);
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(match self.contract {
            ContractVersion::V2 => FN_SET_MODE,
            ContractVersion::V3 => FN_SET_MODE_V3,
        })
        .arg(1)
        .arg(&keys.ops)
        .arg(change.expected_version)
        .arg(change.mode.as_str())
        .arg(change.reason)
        .arg(change.actor)
        .arg(change.request_id)
        .arg(change.strategy)
        .arg(self.keys.events());
        cmd
    }

    /// What the guard's reply to [`Guard::set_mode_cmd`] says.
    pub fn set_mode_outcome(reply: &Value) -> Result<SetModeOutcome, ContractError> {
        match reply_items(reply).as_deref() {
            Some([Item::Str(s), Item::Int(v)]) if s == "ok" => {
                Ok(SetModeOutcome::Applied { version: to_u64(*v)? })
            }
            Some([Item::Str(s), Item::Int(v)]) if s == "conflict" => Ok(SetModeOutcome::Conflict {
                current_version: to_u64(*v)?,
            }),
            _ => Err(ContractError::Protocol(format!("set_mode replied {reply:?}"))),
        }
    }

    /// Records that `principal` used one-time-code `step`, once: the
    /// second factor of the control plane's decisions and of break-glass.
    pub fn spend_code(
        &self,
        conn: &mut impl ConnectionLike,
        principal: &str,
        step: u64,
    ) -> Result<CodeSpent, ContractError> {
        let cmd = self.spend_code_cmd(principal, step);
        let reply = with_guard(conn, self.may_install, |c| cmd.query::<Value>(c))?;
        Self::spend_code_outcome(&reply)
    }

    /// The `FCALL` of [`Guard::spend_code`]; its reply goes to
    /// [`Guard::spend_code_outcome`].
    pub fn spend_code_cmd(&self, principal: &str, step: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(match self.contract {
            ContractVersion::V2 => FN_SPEND_CODE,
            ContractVersion::V3 => FN_SPEND_CODE_V3,
        })
        .arg(1)
        .arg(self.keys.second_factor_steps())
        .arg(principal)
        .arg(step);
        cmd
    }

    /// What the guard's reply to [`Guard::spend_code_cmd`] says.
    pub fn spend_code_outcome(reply: &Value) -> Result<CodeSpent, ContractError> {
        match reply_items(reply).as_deref() {
            Some([Item::Str(s)]) if s == "ok" => Ok(CodeSpent::Spent),
            Some([Item::Str(s), Item::Int(v)]) if s == "replayed" => Ok(CodeSpent::Replayed {
                newest_used: to_u64(*v)?,
            }),
            _ => Err(ContractError::Protocol(format!("spend_code replied {reply:?}"))),
        }
    }

    /// A strategy's ops state; absent or unreadable state reads as `halted`.
    pub fn read_mode(
        &self,
        conn: &mut impl ConnectionLike,
        strategy: &str,
    ) -> Result<OpsState, ContractError> {
        let fields: Vec<(String, String)> = self.read_mode_cmd(strategy).query(conn)?;
        Ok(OpsState::from_fields(&fields))
    }

    /// The read of [`Guard::read_mode`]: its reply, as `(field, value)`
    /// pairs, goes to [`OpsState::from_fields`].
    pub fn read_mode_cmd(&self, strategy: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.strategy(strategy).ops);
        cmd
    }

    /// The highest `seq` the guard ever accepted for the strategy (0 if
    /// none), under either contract version: where a restarted daemon
    /// continues its sequence from.
    pub fn high_water_mark(
        &self,
        conn: &mut impl ConnectionLike,
        strategy: &str,
    ) -> Result<u64, ContractError> {
        let keys = self.keys.strategy(strategy);
        let mut values: Vec<String> = redis::cmd("HVALS").arg(&keys.hwm).query(conn)?;
        let v3: Option<String> = redis::cmd("GET").arg(&keys.seq).query(conn)?;
        values.extend(v3);
        values.iter().try_fold(0u64, |max, v| {
            v.parse::<u64>().map(|n| max.max(n)).map_err(|_| {
                ContractError::Protocol(format!(
                    "{strategy}'s high-water mark holds a non-integer seq {v:?}"
                ))
            })
        })
    }
}

/// The most bytes an integer argument takes (`u64::MAX` has 20 digits).
const INT_MAX_BYTES: usize = 20;
/// The most bytes `Num` prints any number as. `Display` never uses an
/// exponent, so 1e-300 takes 300 bytes: 309 integer digits, or "0." with
/// 307 zeros and 17 digits, and a sign. Every number is budgeted at this
/// worst case, whatever it is, and every side at the longest's length: a
/// bound that followed the values grew the buffers mid-run when a
/// decision printed longer than every one before it (the allocation test
/// caught it once the synthetic market made the model go short).
const NUM_MAX_BYTES: usize = 340;
/// The longest side's name (`short`).
const SIDE_MAX_BYTES: usize = 5;

/// RESP framing of one argument (`$<len>\r\n` … `\r\n`) or of a
/// command's header (`*<n>\r\n`), at most.
const ARG_FRAMING: usize = 16;

/// An upper bound of what [`Guard::fill_publish_cmd`] writes for `group`:
/// (arguments, bytes of argument data).
fn call_bound(keys: &StrategyKeys, group: &[SignalBatch], contract: ContractVersion) -> (usize, usize) {
    let Some(first) = group.first() else { return (0, 0) };
    if contract == ContractVersion::V3 {
        // FCALL, the function, 5, five keys, strategy, symbols, maxlen,
        // count; then 6 per decision (the module's command, in place of
        // the first three, is shorter: this bounds both).
        let args = 12 + 6 * group.len();
        let data = "FCALL".len()
            + FN_PUBLISH_V3.len()
            + 3 * INT_MAX_BYTES
            + keys.ops.len()
            + keys.snapshot.len()
            + keys.seq.len()
            + keys.stream_v3.len()
            + keys.hwm.len()
            + first.strategy.len()
            + first.signals.iter().map(|s| s.symbol.len() + 1).sum::<usize>()
            + group
                .iter()
                .map(|b| 4 * INT_MAX_BYTES + b.model_id.len() + RECORD_BYTES * b.signals.len())
                .sum::<usize>();
        return (args, data);
    }
    let sig_key = keys.sig_arg("").byte_len();
    let mut args = 6 + first.signals.len() + 1;
    let mut data = "FCALL".len()
        + FN_PUBLISH_MANY.len().max(FN_PUBLISH.len())
        + 2 * INT_MAX_BYTES
        + keys.ops.len()
        + keys.hwm.len()
        + keys.signals.len();
    data += first
        .signals
        .iter()
        .map(|s| sig_key + s.symbol.len())
        .sum::<usize>();
    for batch in group {
        args += 7 + 6 * batch.signals.len();
        data += 5 * INT_MAX_BYTES + batch.model_id.len() + batch.strategy.len();
        data += batch
            .signals
            .iter()
            .map(|s| {
                // "short", the longest side: a decision that turns a
                // long into a short must not grow the buffers either.
                s.symbol.len() + SIDE_MAX_BYTES + 4 * NUM_MAX_BYTES
            })
            .sum::<usize>();
    }
    (args, data)
}

/// Buffers [`Guard::publish_many_with`] reuses between calls: the command
/// being encoded, the packed pipeline, the batches each call carries, and
/// the key layout of each strategy seen so far.
#[derive(Debug, Default)]
pub struct PublishBuffers {
    cmd: redis::Cmd,
    /// The (arguments, data bytes) `cmd` was made with room for.
    cmd_room: (usize, usize),
    packed: PackedCommands,
    groups: Vec<Range<usize>>,
    keys: Vec<StrategyKeys>,
    /// Contract v3's symbol list and records, built per argument.
    scratch: Vec<u8>,
}

impl PublishBuffers {
    /// The guard calls [`Guard::encode`] wrote, packed for the wire.
    pub fn packed(&self) -> &PackedCommands {
        &self.packed
    }

    /// The batches each encoded call carries (ranges of the batches given
    /// to [`Guard::encode`]), in call order.
    pub fn groups(&self) -> &[Range<usize>] {
        &self.groups
    }
}

/// Index of `strategy`'s key layout in `known`, built on first sight.
fn strategy_keys(known: &mut Vec<StrategyKeys>, keys: &Keys, strategy: &str) -> usize {
    match known.iter().position(|k| k.strategy == strategy) {
        Some(k) => k,
        None => {
            known.push(keys.strategy(strategy));
            known.len() - 1
        }
    }
}

/// Splits `batches` into guard calls (ranges of `batches`): a run of
/// consecutive batches of one strategy with the same symbols in the same
/// order, up to [`MAX_DECISIONS_PER_CALL`], is one call. Only consecutive
/// batches are folded, so the calls keep the batches' order.
fn group_calls(batches: &[SignalBatch], groups: &mut Vec<Range<usize>>) {
    groups.clear();
    let mut start = 0;
    for i in 1..=batches.len() {
        let ends = i == batches.len()
            || i - start == MAX_DECISIONS_PER_CALL
            || !same_layout(&batches[start], &batches[i]);
        if ends {
            groups.push(start..i);
            start = i;
        }
    }
}

/// Whether two batches touch the same keys in the same order.
fn same_layout(a: &SignalBatch, b: &SignalBatch) -> bool {
    a.strategy == b.strategy
        && a.signals.len() == b.signals.len()
        && a.signals
            .iter()
            .zip(&b.signals)
            .all(|(x, y)| x.symbol == y.symbol)
}

/// Appends `s` as a v3 record ([`RECORD_BYTES`], little-endian). The
/// probabilities travel as `f32`: they are the models' `f32` outputs
/// widened, so nothing is lost.
fn encode_record(s: &super::signal::Signal, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.weight.to_le_bytes());
    out.extend_from_slice(&s.qty.to_le_bytes());
    #[allow(clippy::cast_possible_truncation)] // f32 outputs widened: exact
    {
        out.extend_from_slice(&(s.return_prob as f32).to_le_bytes());
        out.extend_from_slice(&(s.risk_score as f32).to_le_bytes());
    }
}

/// The signals of a v3 decision, from its `symbols` (comma-separated) and
/// `records` (what a v3 stream entry and the snapshot hold): what a
/// consumer following the v3 stream decodes each entry with.
pub fn decode_records(symbols: &str, records: &[u8]) -> Result<Vec<super::signal::Signal>, ContractError> {
    use super::signal::Signal;
    let names: Vec<&str> = symbols.split(',').collect();
    if records.len() != names.len() * RECORD_BYTES {
        return Err(ContractError::Protocol(format!(
            "{} bytes of records for {} symbols (want {} each)",
            records.len(),
            names.len(),
            RECORD_BYTES
        )));
    }
    let f64_at = |r: &[u8], at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&r[at..at + 8]);
        f64::from_le_bytes(b)
    };
    let f32_at = |r: &[u8], at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&r[at..at + 4]);
        f64::from(f32::from_le_bytes(b))
    };
    names
        .iter()
        .zip(records.chunks_exact(RECORD_BYTES))
        .map(|(symbol, r)| {
            let weight = f64_at(r, 0);
            if !weight.is_finite() {
                return Err(ContractError::Protocol(format!("{symbol}: weight {weight}")));
            }
            Ok(Signal {
                symbol: (*symbol).to_owned(),
                side: Side::of_weight(weight),
                weight,
                qty: f64_at(r, 8),
                return_prob: f32_at(r, 16),
                risk_score: f32_at(r, 20),
            })
        })
        .collect()
}

/// A number as a Redis argument, written as `Display` prints it (the
/// shortest form that reads back to the same `f64`, never an exponent).
struct Num(f64);

impl redis::ToRedisArgs for Num {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(self.0);
    }
}

/// Runs `f`; if the guard is missing and `may_install`, reloads it once and
/// runs `f` again.
fn with_guard<C: ConnectionLike, T>(
    conn: &mut C,
    may_install: bool,
    mut f: impl FnMut(&mut C) -> redis::RedisResult<T>,
) -> Result<T, ContractError> {
    match f(conn) {
        Ok(v) => Ok(v),
        Err(e) if is_function_missing(&e) => {
            Guard::reinstall(conn, may_install, classify(e))?;
            f(conn).map_err(classify)
        }
        Err(e) => Err(classify(e)),
    }
}

/// `e` (a [`ContractError::GuardMissing`]) saying how to install the guard;
/// any other error unchanged.
pub fn with_install_hint(e: ContractError) -> ContractError {
    match e {
        ContractError::GuardMissing { library, reason } => ContractError::GuardMissing {
            library,
            reason: format!("{reason}; {INSTALL_HINT}"),
        },
        other => other,
    }
}

/// Whether `e` says the guard library is not loaded (restart without
/// persistence, `FUNCTION FLUSH`, an empty replica after failover).
pub fn is_function_missing(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

fn classify(e: redis::RedisError) -> ContractError {
    if e.code() == Some("BADINPUT") {
        return ContractError::BadInput(e.detail().unwrap_or_default().to_owned());
    }
    if is_function_missing(&e) {
        return ContractError::GuardMissing {
            library: LIBRARY,
            reason: e.to_string(),
        };
    }
    ContractError::Redis(e)
}

/// Appends the outcomes of one guard call's reply, carrying `n` batches,
/// to `out`: one reply for `mlcore_publish_v2`, a list of `n` for
/// `mlcore_publish_many_v2`; an error, or a reply of the wrong shape, is
/// every batch's outcome.
pub fn push_value_outcomes(
    reply: redis::RedisResult<Value>,
    n: usize,
    out: &mut Vec<Result<PublishOutcome, ContractError>>,
) {
    let reply = match reply {
        Ok(Value::ServerError(e)) => Err(redis::RedisError::from(e)),
        other => other,
    };
    match reply {
        Ok(v) if n == 1 => out.push(parse_publish_reply(&v)),
        Ok(Value::Array(items)) if items.len() == n => out.extend(items.iter().map(parse_publish_reply)),
        Ok(v) => {
            let what = format!("publish_many replied {v:?} for {n} decisions");
            out.extend((0..n).map(|_| Err(ContractError::Protocol(what.clone()))));
        }
        Err(e) => out.extend((0..n).map(|_| Err(classify(e.clone())))),
    }
}

fn parse_publish_reply(reply: &Value) -> Result<PublishOutcome, ContractError> {
    // The common reply, read without building strings.
    if let Value::Array(items) = reply {
        if let [Value::BulkString(ok), Value::Int(n)] = items.as_slice() {
            if ok == b"ok" {
                if let Ok(count) = usize::try_from(*n) {
                    return Ok(PublishOutcome::Accepted { count });
                }
            }
        }
    }
    let bad = || ContractError::Protocol(format!("publish replied {reply:?}"));
    let items = reply_items(reply).ok_or_else(bad)?;
    match items.as_slice() {
        [Item::Str(s), Item::Int(n)] if s == "ok" => Ok(PublishOutcome::Accepted {
            count: usize::try_from(*n).map_err(|_| bad())?,
        }),
        [Item::Str(s), Item::Int(now)] if s == "expired" => Ok(PublishOutcome::Expired {
            now_ms: to_u64(*now)?,
        }),
        [Item::Str(s), Item::Str(symbol), Item::Int(seq)] if s == "stale" => Ok(PublishOutcome::Stale {
            symbol: symbol.clone(),
            stored_seq: to_u64(*seq)?,
        }),
        [Item::Str(s), Item::Str(mode), Item::Str(symbol)] if s == "halted" => Ok(PublishOutcome::Halted {
            mode: mode.parse().map_err(|_| bad())?,
            symbol: symbol.clone(),
        }),
        // One malformed decision of a `publish_many` call.
        [Item::Str(s), Item::Str(what)] if s == "bad_input" => Err(ContractError::BadInput(what.clone())),
        _ => Err(bad()),
    }
}

enum Item {
    Str(String),
    Int(i64),
}

fn reply_items(v: &Value) -> Option<Vec<Item>> {
    let Value::Array(items) = v else { return None };
    items
        .iter()
        .map(|i| match i {
            Value::Int(n) => Some(Item::Int(*n)),
            Value::BulkString(b) => String::from_utf8(b.clone()).ok().map(Item::Str),
            Value::SimpleString(s) => Some(Item::Str(s.clone())),
            _ => None,
        })
        .collect()
}

fn pairs(v: &Value) -> Result<Vec<(String, String)>, ContractError> {
    let items =
        reply_items(v).ok_or_else(|| ContractError::Protocol(format!("expected field list, got {v:?}")))?;
    let strs: Vec<String> = items
        .into_iter()
        .map(|i| match i {
            Item::Str(s) => s,
            Item::Int(n) => n.to_string(),
        })
        .collect();
    Ok(strs
        .chunks_exact(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect())
}

fn to_u64(n: i64) -> Result<u64, ContractError> {
    u64::try_from(n).map_err(|_| ContractError::Protocol(format!("negative integer {n} in guard reply")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signal;

    fn batch(strategy: &str, symbols: &[&str]) -> SignalBatch {
        SignalBatch {
            strategy: strategy.into(),
            seq: 1,
            generated_at_ms: 1,
            valid_until_ms: 2,
            model_id: "m".into(),
            model_version: 1,
            signals: symbols.iter().map(|s| Signal::flat(*s)).collect(),
        }
    }

    fn groups(batches: &[SignalBatch]) -> Vec<Range<usize>> {
        let mut g = Vec::from([3..4, 5..6]); // stale content is cleared
        group_calls(batches, &mut g);
        g
    }

    #[test]
    fn the_room_made_before_encoding_holds_whatever_the_numbers_print_as() {
        for contract in [ContractVersion::V2, ContractVersion::V3] {
            room_holds(&Guard::new(Keys::new("ns-room"), 10_000).with_contract(contract));
        }
        room_holds(
            &Guard::new(Keys::new("ns-room"), 10_000)
                .with_contract(ContractVersion::V3)
                .with_engine(GuardEngine::Module),
        );
    }

    #[test]
    fn the_module_is_called_with_the_keys_first_and_the_functions_arguments() {
        let g = Guard::new(Keys::new("ns"), 500).with_contract(ContractVersion::V3);
        let keys = g.keys.strategy("fx");
        let b = batch("fx", &["EURUSD", "USDJPY"]);
        let args = |g: &Guard| -> Vec<Vec<u8>> {
            g.publish_cmd(&keys, &b)
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => b.to_vec(),
                    _ => Vec::new(),
                })
                .collect()
        };
        let function = args(&g);
        let module = args(&g.clone().with_engine(GuardEngine::Module));
        assert_eq!(
            function[..3],
            [b"FCALL".to_vec(), FN_PUBLISH_V3.into(), b"5".to_vec()]
        );
        assert_eq!(module[0], MODULE_PUBLISH.as_bytes());
        assert_eq!(module[1..], function[3..], "the same keys and arguments");
        assert_eq!(module[1], keys.ops.as_bytes());
    }

    fn room_holds(guard: &Guard) {
        let values = [
            0.0,
            1.0,
            -0.5,
            0.1 + 0.2,
            1e-6,
            9.99e-7,
            -1e-300,
            5e-324,
            1e15,
            -1.7976931348623157e308,
            123_456.789,
            f64::NAN,
            f64::INFINITY,
        ];
        let mut bufs = PublishBuffers::default();
        for (i, v) in values.iter().enumerate() {
            let mut batches = vec![batch("fx", &["EURUSD", "USDJPY", "AUDUSD"]); 1 + i % 9];
            batches.push(batch("eq", &["SPY"]));
            for (j, b) in batches.iter_mut().enumerate() {
                b.seq = u64::MAX - j as u64;
                for s in &mut b.signals {
                    (s.weight, s.qty, s.return_prob, s.risk_score) = (*v, -*v, *v / 3.0, *v * 7.0);
                    s.side = crate::signal::Side::of_weight(*v);
                }
            }
            guard.encode(&batches, &mut bufs).unwrap();
            let mut bound = 0;
            for g in bufs.groups() {
                let group = &batches[g.clone()];
                let keys = guard.keys.strategy(&group[0].strategy);
                let (args, data) = call_bound(&keys, group, guard.contract);
                let mut cmd = redis::Cmd::new();
                guard.fill_publish_cmd(&mut cmd, &keys, group, &mut Vec::new());
                assert!(cmd.args_iter().count() <= args, "{v}: arguments");
                let written: usize = cmd
                    .args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => b.len(),
                        _ => 0,
                    })
                    .sum();
                assert!(written <= data, "{v}: {written} bytes > {data}");
                bound += data + args * ARG_FRAMING + ARG_FRAMING;
            }
            assert!(bufs.packed().bytes().len() <= bound, "{v}: packed");
        }
    }

    #[test]
    fn v3_records_decode_to_what_was_encoded() {
        let mut b = batch("fx", &["EURUSD", "USDJPY", "AUDUSD"]);
        b.signals[0].weight = 0.1 + 0.2;
        b.signals[0].side = crate::signal::Side::Long;
        b.signals[1].weight = -1e-300;
        b.signals[1].side = crate::signal::Side::Short;
        for s in &mut b.signals {
            s.return_prob = f64::from(0.731_f32);
        }
        let mut records = Vec::new();
        for s in &b.signals {
            encode_record(s, &mut records);
        }
        assert_eq!(records.len(), 3 * RECORD_BYTES);
        let back = decode_records("EURUSD,USDJPY,AUDUSD", &records).unwrap();
        assert_eq!(back, b.signals);
        assert!(decode_records("EURUSD", &records).is_err());
        records[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode_records("EURUSD,USDJPY,AUDUSD", &records).is_err());
    }

    #[test]
    fn buffers_warmed_on_short_numbers_do_not_grow_for_longer_ones() {
        let guard = Guard::new(Keys::new("ns-room"), 10_000);
        let with = |v: f64| {
            let mut b = batch("fx", &["EURUSD", "USDJPY", "AUDUSD", "NZDUSD"]);
            for s in &mut b.signals {
                (s.weight, s.qty, s.return_prob, s.risk_score) = (v, -v, v / 3.0, v * 7.0);
            }
            vec![b]
        };
        let mut bufs = PublishBuffers::default();
        guard.encode(&with(0.5), &mut bufs).unwrap();
        let warmed = (bufs.packed.capacity(), bufs.cmd_room);
        for v in [
            0.1 + 0.2,
            123_456.789_012_345,
            4e-6,
            -0.000_123_456_789_012_345_67,
            9.9e13,
        ] {
            guard.encode(&with(v), &mut bufs).unwrap();
            assert_eq!((bufs.packed.capacity(), bufs.cmd_room), warmed, "{v}");
        }
    }

    #[test]
    fn consecutive_batches_of_one_layout_share_a_call_up_to_the_limit() {
        let a = batch("fx", &["EURUSD", "USDJPY"]);
        assert_eq!(groups(&[]), Vec::<Range<usize>>::new());
        let one: Vec<Range<usize>> = std::iter::once(0..1).collect();
        assert_eq!(groups(std::slice::from_ref(&a)), one);
        let twenty = vec![a.clone(); 20];
        assert_eq!(groups(&twenty), [0..8, 8..16, 16..20]);
        assert_eq!(MAX_DECISIONS_PER_CALL, 8);
    }

    #[test]
    fn another_strategy_or_symbol_list_starts_a_new_call_and_order_is_kept() {
        let a = batch("fx", &["EURUSD", "USDJPY"]);
        let other_strategy = batch("eq", &["EURUSD", "USDJPY"]);
        let reordered = batch("fx", &["USDJPY", "EURUSD"]);
        let fewer = batch("fx", &["EURUSD"]);
        let batches = [
            a.clone(),
            a.clone(),
            other_strategy,
            a.clone(),
            reordered,
            fewer,
            a.clone(),
            a,
        ];
        // The fourth is not folded into the first call: that would send it
        // before the third's call, out of order.
        assert_eq!(groups(&batches), [0..2, 2..3, 3..4, 4..5, 5..6, 6..8]);
    }
}
