//! Least-privilege Redis users for one namespace, as `ACL SETUSER` rules.
//!
//! | user | reads | writes | may not |
//! |---|---|---|---|
//! | [`Role::Daemon`] | the namespace; subscribes to `ns:events` | through the guard: signals, high-water marks, the stream (and the ops key, which the publish call declares); directly: its heartbeat and the daemon list | change a mode (the guard's `set_mode` asks for the mode-writer key), the model pointer, the audit checkpoint, the one-time-code record; `FUNCTION` anything, `CONFIG SET`, `DEL`, `KEYS`, `FLUSH*`, other namespaces |
//! | [`Role::Control`] | the namespace (and the signal streams, for latency sampling); subscribes | modes (through the guard), the model pointer, the one-time-code record (through the guard), the audit checkpoint, the analytics cache | signals, high-water marks, the stream, heartbeats; the same commands |
//! | [`Role::Consumer`] | the namespace (`FCALL_RO` the read function); subscribes | nothing | any write, the publish and mode functions |
//! | [`Role::Installer`] | nothing | `FUNCTION LOAD` (`mlcore-control redis install-guard`) | every key, every other command |
//!
//! Redis runs a function's `redis.call`s with its caller's permissions (a
//! user with only `+fcall` cannot run a guard that calls `HSET`), so the
//! users that call the guard also hold the data commands the guard uses,
//! [`GUARD_COMMANDS`] (a test keeps the list equal to what the guards
//! call). Redis 7 cannot grant a command "only from inside a function":
//! such a user could also send those commands directly, on the keys it may
//! write. `deployments/redis/users.acl` is [`acl_file`] for the namespace
//! `mlcore`; `docs/redis-contract.md` says what each user is for.

use std::fmt::Write as _;

use super::guard::GuardEngine;

/// The data commands `guard.lua` and `guard_v3.lua` call (what a user
/// calling the guard must hold, lower case).
pub const GUARD_COMMANDS: [&str; 13] = [
    "get",
    "hget",
    "hgetall",
    "hmget",
    "hset",
    "hvals",
    "pexpireat",
    "publish",
    "set",
    "time",
    "type",
    "xadd",
    "xrevrange",
];

/// What every client needs to connect (redis-rs: `AUTH`/`HELLO`, `SELECT`
/// of the URL's database; Cluster clients read the slot map). Not `CLIENT
/// SETINFO`: Redis 7.0 does not know it (an ACL naming it fails to load)
/// and redis-rs ignores its refusal.
const CONNECTION: [&str; 10] = [
    "auth",
    "hello",
    "ping",
    "select",
    "client|setname",
    "client|id",
    "readonly",
    "cluster|slots",
    "cluster|shards",
    "asking",
];

/// Who a Redis user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `mlcore-daemon`.
    Daemon,
    /// `mlcore-control serve` and its CLI (break-glass `ops set-mode`).
    Control,
    /// A trading consumer: reads signals, never writes.
    Consumer,
    /// The deployment step that installs the guard library.
    Installer,
}

impl Role {
    /// Every role, in the order [`acl_file`] writes them.
    pub const ALL: [Self; 4] = [Self::Daemon, Self::Control, Self::Consumer, Self::Installer];

    /// The Redis user name.
    pub const fn user(self) -> &'static str {
        match self {
            Self::Daemon => "mlcore-daemon",
            Self::Control => "mlcore-control",
            Self::Consumer => "mlcore-consumer",
            Self::Installer => "mlcore-guard-installer",
        }
    }

    /// The commands the role holds beyond connecting (lower case,
    /// `command|subcommand` where only a subcommand is granted).
    pub fn commands(self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        match self {
            Self::Daemon | Self::Control => {
                out.extend(["fcall", "fcall_ro"]);
                out.extend(GUARD_COMMANDS);
                // The heartbeat (HSET, PEXPIRE, ZADD), the model pointer and
                // ops state (HGETALL), events.
                out.extend(["pexpire", "zadd", "subscribe", "unsubscribe"]);
                if self == Self::Control {
                    // The monitor: the daemons by last heartbeat; latency
                    // sampling: the signal streams; the analytics cache.
                    out.extend(["zrange", "xrange", "incr"]);
                }
            }
            Self::Consumer => out.extend([
                "fcall_ro",
                "hget",
                "hgetall",
                "hmget",
                "hvals",
                "time",
                "type",
                "exists",
                "pttl",
                "xrange",
                "xrevrange",
                "xread",
                "zrange",
                "subscribe",
                "unsubscribe",
            ]),
            Self::Installer => out.extend(["function|load", "function|list", "fcall_ro"]),
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The rules after `ACL SETUSER <user>` (without a password: the
    /// deployment adds `#<sha256>` or `>password`; a user without one
    /// cannot log in).
    pub fn rules(self, namespace: &str) -> Vec<String> {
        let ns = glob_escape(namespace);
        let mut rules = vec!["reset".to_owned(), "on".to_owned()];
        // Read the namespace; write only what the role owns. A function's
        // declared keys need write access (Redis cannot tell what it will
        // do), so the daemon writes the ops key too; the guard's set_mode
        // asks for the mode-writer key, which only the control plane has.
        let write = |suffixes: &[&str]| {
            suffixes
                .iter()
                .map(|s| format!("%RW~{ns}:{s}"))
                .collect::<Vec<_>>()
        };
        match self {
            Self::Daemon => {
                rules.push(format!("%R~{ns}:*"));
                rules.extend(write(&[
                    "{*}:ops",
                    "{*}:hwm",
                    "{*}:signals",
                    "{*}:sig:*",
                    "{*}:v3:*",
                    "daemon:*",
                    "daemons",
                ]));
                rules.push(format!("&{ns}:events"));
            }
            Self::Control => {
                rules.push(format!("%R~{ns}:*"));
                rules.extend(write(&[
                    "{*}:ops",
                    "{*}:mode_writer",
                    "{*}:model",
                    "second_factor",
                    "audit:checkpoint",
                    "analytics_cache:*",
                ]));
                rules.push(format!("&{ns}:events"));
            }
            Self::Consumer => {
                rules.push(format!("%R~{ns}:*"));
                rules.push(format!("&{ns}:events"));
            }
            Self::Installer => {}
        }
        rules.push("-@all".to_owned());
        rules.extend(
            CONNECTION
                .iter()
                .chain(self.commands().iter())
                .map(|c| format!("+{c}")),
        );
        rules
    }
}

/// An ACL file (`aclfile` in `redis.conf`; Redis allows no comments in it)
/// with every role's user for `namespace`, passwords left to the
/// deployment: a user without one cannot log in until it gets
/// `#<sha256 of the password>` (or `ACL SETUSER <user> '>password'`).
/// Redis' `default` user is switched off (left out, Redis would create it
/// with every right and no password): add an administrator line of your
/// own.
pub fn acl_file(namespace: &str) -> String {
    acl_file_for(namespace, GuardEngine::Function)
}

/// [`acl_file`] for a daemon that publishes through `engine`: with
/// [`GuardEngine::Module`], `mlcore-daemon` also holds the module's
/// commands, [`MODULE_COMMANDS`] (only then: Redis 7.0 refuses an ACL that
/// names a command it does not know, so a Redis without the module could
/// not load the file). The module's reads and writes run with the caller's
/// permissions, as the function's do: the same data commands and keys.
pub fn acl_file_for(namespace: &str, engine: GuardEngine) -> String {
    let mut out = String::from("user default off resetkeys resetchannels -@all\n");
    for role in Role::ALL {
        let mut rules = role.rules(namespace);
        if role == Role::Daemon && engine == GuardEngine::Module {
            rules.extend(MODULE_COMMANDS.iter().map(|c| format!("+{c}")));
        }
        let _ = writeln!(out, "user {} {}", role.user(), rules.join(" "));
    }
    out
}

/// The guard module's commands (`guardmod/`): what a daemon publishing
/// through it needs beyond [`Role::Daemon`]'s rules.
pub const MODULE_COMMANDS: [&str; 2] = [super::guard::MODULE_PUBLISH, super::guard::MODULE_INFO];

/// `s` with Redis glob characters escaped, so a namespace matches only
/// itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_commands_are_what_guard_lua_calls() {
        let source = [include_str!("guard.lua"), include_str!("guard_v3.lua")].concat();
        let mut called: Vec<String> = source
            .split("call(")
            .skip(1)
            .filter_map(|rest| {
                let rest = rest.trim_start();
                let quote = rest.chars().next().filter(|q| *q == '\'' || *q == '"')?;
                let name = rest[1..].split(quote).next()?;
                Some(name.to_ascii_lowercase())
            })
            .collect();
        called.sort();
        called.dedup();
        assert_eq!(
            called, GUARD_COMMANDS,
            "guard.lua's redis.call commands changed: update GUARD_COMMANDS"
        );
    }

    #[test]
    fn rules_are_scoped_to_the_namespace_and_escape_globs() {
        let rules = Role::Consumer.rules("a*b");
        assert!(rules.contains(&"%R~a\\*b:*".to_owned()), "{rules:?}");
        assert!(!rules.iter().any(|r| r == "+hset" || r == "+fcall"), "{rules:?}");
        let installer = Role::Installer.rules("mlcore");
        assert!(
            !installer.iter().any(|r| r.starts_with('~') || r.starts_with('%')),
            "{installer:?}"
        );
        assert!(installer.contains(&"+function|load".to_owned()));
        for role in [Role::Daemon, Role::Control, Role::Consumer] {
            assert!(
                !role.rules("mlcore").iter().any(|r| r.contains("function")),
                "{role:?}"
            );
        }
    }
}
