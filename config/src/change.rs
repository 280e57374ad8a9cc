//! What a configuration change changes: each key path with its old and new
//! value (secrets redacted), which processes take it live and which must
//! restart, and how risky it is.
//!
//! The comparison is on the merged YAML of each file (base + the
//! environment's override), before secrets are resolved, so a change to a
//! `$VAR` reference shows as the reference, and a literal secret (dev) never
//! leaves as text. Lists of records are matched by their identity (`id`,
//! `symbol`, `name`), so a reordered or grown universe reads as symbols added
//! or removed, not as every index shifting.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_norway::Value;

use crate::merge::deep_merge;
use crate::tree::ConfigTree;
use crate::{Environment, FILES};

/// Which process a change reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proc {
    /// `mlcore-daemon`.
    Daemon,
    /// `mlcore-control serve`.
    Control,
}

/// How a process takes a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// While it runs, between two decisions.
    Live,
    /// Only after a restart; until then it keeps the old value and says so.
    Restart,
}

/// One process's way of taking a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Effect {
    /// The process.
    pub process: Proc,
    /// Live or restart.
    pub apply: Apply,
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The environment whose merged configuration changes.
    pub env: Environment,
    /// The file (`core_policy.yaml`).
    pub file: String,
    /// The key path in the merged file (`theta.per_strategy.fx_g10.theta1`,
    /// `strategies[fx_g10].symbols[EURUSD].lot_size`).
    pub key: String,
    /// The old value, rendered (`None`: absent); secrets redacted.
    pub old: Option<String>,
    /// The new value, rendered (`None`: removed); secrets redacted.
    pub new: Option<String>,
    /// The key holds a secret (its value, or its `$VAR` reference).
    pub secret: bool,
    /// Who takes it, and how.
    pub effects: Vec<Effect>,
    #[serde(skip)]
    old_value: Option<Value>,
    #[serde(skip)]
    new_value: Option<Value>,
}

/// Low or high risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Cosmetic or tightening: one approver.
    Low,
    /// Loosening, θ beyond its step, new symbols, secrets: two approvers
    /// and the change window.
    High,
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Low => "low",
            Self::High => "high",
        })
    }
}

/// A change's risk and the reasons for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Risk {
    /// The level.
    pub level: RiskLevel,
    /// Why high (empty when low).
    pub reasons: Vec<String>,
}

/// The merged files of one environment, raw (secrets unresolved).
fn merged(tree: &ConfigTree, env: Environment) -> BTreeMap<&'static str, Value> {
    FILES
        .iter()
        .map(|file| {
            let parse = |path: String| {
                tree.get(&path)
                    .and_then(|t| serde_norway::from_str::<Value>(t).ok())
                    .unwrap_or(Value::Null)
            };
            let mut base = parse(format!("base/{file}"));
            let over = parse(format!("envs/{}/{file}", env.as_str()));
            if !over.is_null() {
                deep_merge(&mut base, over);
            }
            (*file, base)
        })
        .collect()
}

/// Every key that differs between `old` and `new` for `env`. Files that do
/// not parse compare as empty: the loader reports them with their code;
/// this is a preview.
pub fn diff(old: &ConfigTree, new: &ConfigTree, env: Environment) -> Vec<Change> {
    let (old, new) = (merged(old, env), merged(new, env));
    let mut out = Vec::new();
    for file in FILES {
        walk(env, file, String::new(), old.get(file), new.get(file), &mut out);
    }
    out
}

/// The environments a tree defines, each as [`Environment`].
pub fn environments(tree: &ConfigTree) -> Vec<Environment> {
    tree.envs().filter_map(|e| e.parse().ok()).collect()
}

fn identity(v: &Value) -> Option<String> {
    let m = v.as_mapping()?;
    ["symbol", "id", "name"]
        .iter()
        .find_map(|k| match m.get(Value::String((*k).into())) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

fn identified(s: &[Value]) -> Vec<(String, &Value)> {
    s.iter().map(|v| (identity(v).unwrap_or_default(), v)).collect()
}

fn find<'a>(list: &[(String, &'a Value)], id: &str) -> Option<&'a Value> {
    list.iter().find(|(i, _)| i == id).map(|(_, v)| *v)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => render(other),
    }
}

fn walk(
    env: Environment,
    file: &str,
    path: String,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Change>,
) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    if old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Mapping(_)) | None, Some(Value::Mapping(_)) | None)
            if old.is_some_and(Value::is_mapping) || new.is_some_and(Value::is_mapping) =>
        {
            let empty = serde_norway::Mapping::new();
            let (a, b) = (
                old.and_then(Value::as_mapping).unwrap_or(&empty),
                new.and_then(Value::as_mapping).unwrap_or(&empty),
            );
            let mut keys: Vec<&Value> = a.keys().collect();
            keys.extend(b.keys().filter(|k| !a.contains_key(*k)));
            if keys.is_empty() {
                leaf(env, file, path, old, new, out);
                return;
            }
            for k in keys {
                walk(env, file, join(&path, &key_text(k)), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Sequence(a)), Some(Value::Sequence(b)))
            if a.iter().chain(b).all(|v| identity(v).is_some()) && !(a.is_empty() && b.is_empty()) =>
        {
            let (a, b) = (identified(a), identified(b));
            let mut seen: Vec<&str> = a.iter().map(|(i, _)| i.as_str()).collect();
            seen.extend(
                b.iter()
                    .map(|(i, _)| i.as_str())
                    .filter(|i| !a.iter().any(|(x, _)| x == i)),
            );
            for id in seen {
                walk(
                    env,
                    file,
                    format!("{path}[{id}]"),
                    find(&a, id),
                    find(&b, id),
                    out,
                );
            }
            let order = |l: &[(String, &Value)]| l.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
            let (oa, ob) = (order(&a), order(&b));
            let common_a: Vec<&String> = oa.iter().filter(|i| ob.contains(i)).collect();
            let common_b: Vec<&String> = ob.iter().filter(|i| oa.contains(i)).collect();
            if common_a != common_b {
                let list =
                    |o: &[String]| Value::Sequence(o.iter().map(|i| Value::String(i.clone())).collect());
                leaf(
                    env,
                    file,
                    format!("{path}[order]"),
                    Some(&list(&oa)),
                    Some(&list(&ob)),
                    out,
                );
            }
        }
        (Some(Value::Sequence(_)) | None, Some(_)) | (Some(_), None) | (Some(_), Some(_))
            if old.is_some_and(Value::is_mapping) || new.is_some_and(Value::is_mapping) =>
        {
            // A record where there was none (or the reverse): each leaf.
            walk(
                env,
                file,
                path.clone(),
                old.filter(|v| v.is_mapping()),
                new.filter(|v| v.is_mapping()),
                out,
            );
            leaf(
                env,
                file,
                path,
                old.filter(|v| !v.is_mapping()),
                new.filter(|v| !v.is_mapping()),
                out,
            );
        }
        _ => leaf(env, file, path, old, new, out),
    }
}

fn leaf(
    env: Environment,
    file: &str,
    key: String,
    old: Option<&Value>,
    new: Option<&Value>,
    out: &mut Vec<Change>,
) {
    if old == new {
        return;
    }
    let secret = is_secret(file, &key);
    let show = |v: Option<&Value>| {
        v.map(|v| match v {
            Value::String(s) if secret && crate::secret::is_reference(s) => s.clone(),
            _ if secret => "<redacted>".to_owned(),
            other => render(other),
        })
    };
    out.push(Change {
        env,
        file: file.to_owned(),
        effects: effects(file, &key),
        old: show(old),
        new: show(new),
        secret,
        // A secret's raw value is never kept (not even for Debug).
        old_value: old.filter(|_| !secret).cloned(),
        new_value: new.filter(|_| !secret).cloned(),
        key,
    });
}

/// One line of YAML for a value.
fn render(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", ")),
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", key_text(k), render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => render(&t.value),
    }
}

/// Whether a key holds a secret (`Secret` fields of the schema).
fn is_secret(file: &str, key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    match file {
        "redis.yaml" => last == "url",
        "database.yaml" => last == "dsn",
        "notifications.yaml" => matches!(last, "webhook_url" | "routing_key" | "hmac_secret"),
        "control.yaml" => last == "totp" || last == "token" || key.ends_with("credential.value"),
        "sources.yaml" => last == "api_key",
        _ => false,
    }
}

/// Who takes a change of `file`'s `key`, and how. The daemon takes the
/// decision's parameters live (`mlcore-daemon`'s `live` module); the rest
/// needs a restart of every process that reads it — `mlcore-control serve`
/// reads its configuration once, at start.
pub fn effects(file: &str, key: &str) -> Vec<Effect> {
    let daemon_live = Effect {
        process: Proc::Daemon,
        apply: Apply::Live,
    };
    let restart = |process| Effect {
        process,
        apply: Apply::Restart,
    };
    match file {
        "core_policy.yaml" => {
            if key.starts_with("adoption.")
                || key == "theta.max_step"
                || key.starts_with("theta.theta1_bounds")
                || key.starts_with("theta.theta2_bounds")
                // The global θ: a model carries the θ its daemons decide
                // with; this one seeds retraining's search and backtests.
                || key == "theta.theta1"
                || key == "theta.theta2"
            {
                // Read by retraining and the change checks: `serve` reads
                // its configuration at start (CLI runs read it each time).
                vec![restart(Proc::Control)]
            } else if key == "sizing.vol_lookback" {
                // The feature engine's windows are sized at start.
                vec![restart(Proc::Daemon)]
            } else {
                vec![daemon_live]
            }
        }
        "universe.yaml" => {
            const LIVE: [&str; 5] = [
                "lot_size",
                "min_qty",
                "max_weight",
                "notional_per_unit_weight",
                "beta.value",
            ];
            let in_symbol = key.contains("].symbols[") && !key.ends_with("[order]");
            if in_symbol && LIVE.iter().any(|f| key.ends_with(&format!("].{f}"))) {
                vec![daemon_live]
            } else {
                vec![restart(Proc::Daemon), restart(Proc::Control)]
            }
        }
        "cost_table.yaml" if key.starts_with("symbols") => vec![daemon_live],
        "cost_table.yaml" => vec![restart(Proc::Control)],
        "daemon.yaml" if key == "decision.timer_interval_ms" => vec![daemon_live],
        "daemon.yaml" => vec![restart(Proc::Daemon)],
        // The control plane's alerter takes new channels and routing.
        "notifications.yaml" => vec![Effect {
            process: Proc::Control,
            apply: Apply::Live,
        }],
        // Re-read by the daemon every 10 s (keys rotate, revocations apply).
        "trust.yaml" => vec![daemon_live, restart(Proc::Control)],
        "redis.yaml" | "storage.yaml" | "metrics.yaml" => {
            vec![restart(Proc::Daemon), restart(Proc::Control)]
        }
        _ => vec![restart(Proc::Control)],
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// The change's risk, from the changes themselves and the old
/// configuration's `theta.max_step` (per environment).
pub fn risk(old: &ConfigTree, changes: &[Change]) -> Risk {
    let mut reasons = Vec::new();
    let mut why = |c: &Change, text: String| {
        let line = format!("{} {}: {}", c.env, c.key_in_file(), text);
        if !reasons.contains(&line) {
            reasons.push(line);
        }
    };
    for c in changes {
        let (o, n) = (number(c.old_value.as_ref()), number(c.new_value.as_ref()));
        let up = matches!((o, n), (Some(o), Some(n)) if n > o);
        let down = matches!((o, n), (Some(o), Some(n)) if n < o);
        if c.secret {
            why(c, "secret reference changed".into());
            continue;
        }
        match c.file.as_str() {
            "core_policy.yaml" => {
                let policy = merged(old, c.env)
                    .remove("core_policy.yaml")
                    .unwrap_or(Value::Null);
                let at = |k: &str| policy.get("theta").and_then(|t| t.get(k)).and_then(Value::as_f64);
                let max_step = at("max_step").unwrap_or(0.0);
                let theta_key = ["theta.theta1", "theta.theta2"]
                    .iter()
                    .find(|k| c.key == **k)
                    .map(|k| &k["theta.".len()..])
                    .or_else(|| {
                        c.key.strip_prefix("theta.per_strategy.").and_then(|rest| {
                            rest.rsplit_once('.')
                                .map(|(_, k)| k)
                                .filter(|k| *k == "theta1" || *k == "theta2")
                        })
                    });
                let is_override = c.key.starts_with("theta.per_strategy.");
                if is_override && (c.old_value.is_none() || c.new_value.is_none()) {
                    // The strategy's daemons switch between the θ its model
                    // carries (unknown here) and this one.
                    why(
                        c,
                        if c.new_value.is_some() {
                            "θ override added: the strategy stops deciding with its model's θ".into()
                        } else {
                            "θ override removed: the strategy goes back to its model's θ".into()
                        },
                    );
                } else if let (Some(k), Some(n)) = (theta_key, n) {
                    // An override new to a strategy moves it from the global θ.
                    let from = o.or_else(|| at(k)).unwrap_or(n);
                    if (n - from).abs() > max_step + 1e-12 {
                        why(
                            c,
                            format!(
                                "θ moves by {:.4}, more than max_step {max_step}",
                                (n - from).abs()
                            ),
                        );
                    }
                } else if c.key == "theta.max_step" && up {
                    why(c, "max_step raised".into());
                } else if (c.key.ends_with("bounds[0]") && down) || (c.key.ends_with("bounds[1]") && up) {
                    why(c, "θ bounds widened".into());
                } else if c.key.starts_with("theta.theta")
                    && c.key.contains("bounds")
                    && c.old_value != c.new_value
                {
                    why(c, "θ bounds changed".into());
                }
                let loosened = match c.key.as_str() {
                    "risk.max_gross"
                    | "risk.max_symbol_weight"
                    | "risk.beta_tolerance"
                    | "sizing.target_annual_vol"
                    | "signal.ttl_ms" => up,
                    "risk.min_edge_over_cost_bps" | "adoption.sharpe_margin" => down,
                    "sizing.use_ai3" => c.new_value == Some(Value::Bool(false)),
                    _ => false,
                };
                if loosened {
                    why(c, "risk limit loosened".into());
                }
            }
            "universe.yaml" => {
                if c.old_value.is_none() && c.new_value.is_some() && c.key.contains("].symbols[") {
                    why(c, "symbol added".into());
                } else if c.old_value.is_none() && c.key.starts_with("strategies[") {
                    why(c, "strategy added".into());
                } else if (c.key.ends_with("].max_weight") || c.key.ends_with("].notional_per_unit_weight"))
                    && up
                {
                    why(c, "symbol cap loosened".into());
                }
            }
            "trust.yaml" => why(c, "trusted keys changed".into()),
            "control.yaml"
                if [
                    "principals",
                    "second_factor",
                    "config_changes",
                    "approvals",
                    "rollback_signing",
                    "tls",
                    "config_api",
                ]
                .iter()
                .any(|k| {
                    c.key == *k || c.key.starts_with(&format!("{k}.")) || c.key.starts_with(&format!("{k}["))
                }) =>
            {
                why(c, "who may act, or how changes are reviewed, changed".into());
            }
            _ => {}
        }
    }
    Risk {
        level: if reasons.is_empty() {
            RiskLevel::Low
        } else {
            RiskLevel::High
        },
        reasons,
    }
}

impl Change {
    /// `file: key`, as the reasons and previews print it.
    pub fn key_in_file(&self) -> String {
        format!("{}: {}", self.file, self.key)
    }

    /// Whether `process` must restart to take this change.
    pub fn needs_restart(&self, process: Proc) -> bool {
        self.effects
            .iter()
            .any(|e| e.process == process && e.apply == Apply::Restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_tree() -> ConfigTree {
        ConfigTree::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")).unwrap()
    }

    fn edited(path: &str, f: impl FnOnce(&str) -> String) -> (ConfigTree, ConfigTree) {
        let old = repo_tree();
        let mut new = old.clone();
        let text = f(old.get(path).unwrap_or(""));
        new.insert(path, text).unwrap();
        (old, new)
    }

    #[test]
    fn a_small_theta_move_is_low_risk_and_a_strategys_override_is_live_in_the_daemon() {
        // The global θ seeds retraining; daemons decide with their model's.
        let (old, new) = edited("base/core_policy.yaml", |t| {
            t.replace("theta1: 0.55", "theta1: 0.57")
        });
        let changes = diff(&old, &new, Environment::Dev);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!(
            (c.key.as_str(), c.old.as_deref(), c.new.as_deref()),
            ("theta.theta1", Some("0.55"), Some("0.57"))
        );
        assert_eq!(
            c.effects,
            vec![Effect {
                process: Proc::Control,
                apply: Apply::Restart
            }]
        );
        assert_eq!(risk(&old, &changes).level, RiskLevel::Low);
        // A strategy's override moved within max_step: low, and live.
        let with = |t1: &str| {
            let mut t = repo_tree();
            t.insert(
                "envs/dev/core_policy.yaml",
                format!("theta:\n  per_strategy:\n    fx_g10: {{theta1: {t1}, theta2: 0.9}}\n"),
            )
            .unwrap();
            t
        };
        let (old, new) = (with("0.60"), with("0.62"));
        let changes = diff(&old, &new, Environment::Dev);
        assert_eq!(changes[0].key, "theta.per_strategy.fx_g10.theta1");
        assert_eq!(
            changes[0].effects,
            vec![Effect {
                process: Proc::Daemon,
                apply: Apply::Live
            }]
        );
        assert_eq!(risk(&old, &changes).level, RiskLevel::Low);
        assert_eq!(
            risk(&old, &diff(&old, &with("0.70"), Environment::Dev)).level,
            RiskLevel::High
        );
    }

    #[test]
    fn theta_beyond_its_step_loosened_caps_new_symbols_and_secrets_are_high_risk() {
        type Edit<'a> = &'a dyn Fn(&str) -> String;
        let cases: [(&str, Edit<'_>, &str); 5] = [
            (
                "base/core_policy.yaml",
                &|t| t.replace("theta1: 0.55", "theta1: 0.65"),
                "more than max_step",
            ),
            (
                "base/core_policy.yaml",
                &|t| t.replace("max_gross: 1.0", "max_gross: 1.5"),
                "risk limit loosened",
            ),
            (
                "base/universe.yaml",
                &|t| {
                    format!("{t}      - {{symbol: USDMXN, id: 33, beta: {{source: static, value: -0.5}}, lot_size: 1000, min_qty: 1000, max_weight: 0.10, notional_per_unit_weight: 10000000}}\n")
                },
                "symbol added",
            ),
            (
                "envs/dev/redis.yaml",
                &|t| format!("{t}url: \"$OTHER_REDIS_URL\"\n"),
                "secret reference changed",
            ),
            (
                "envs/dev/core_policy.yaml",
                &|_| "theta:\n  per_strategy:\n    fx_g10: {theta1: 0.56, theta2: 0.60}\n".into(),
                "θ override added",
            ),
        ];
        for (path, f, reason) in cases {
            let (old, new) = edited(path, f);
            let changes = diff(&old, &new, Environment::Dev);
            let r = risk(&old, &changes);
            assert_eq!(r.level, RiskLevel::High, "{path}: {changes:?}");
            assert!(
                r.reasons.iter().any(|x| x.contains(reason)),
                "{path}: {:?}",
                r.reasons
            );
        }
    }

    #[test]
    fn tightening_is_low_risk_and_secrets_never_show() {
        let (old, new) = edited("base/core_policy.yaml", |t| {
            t.replace("max_gross: 1.0", "max_gross: 0.8")
        });
        assert_eq!(
            risk(&old, &diff(&old, &new, Environment::Dev)).level,
            RiskLevel::Low
        );
        let (old, new) = edited("envs/dev/redis.yaml", |t| {
            format!("{t}url: \"redis://:hunter2@10.0.0.1:6379\"\n")
        });
        let changes = diff(&old, &new, Environment::Dev);
        let text = format!("{changes:?}") + &serde_norway::to_string(&changes).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>") && changes.iter().all(|c| c.secret));
        assert!(changes[0].needs_restart(Proc::Daemon) && changes[0].needs_restart(Proc::Control));
    }

    #[test]
    fn symbols_are_matched_by_name_and_their_caps_are_live() {
        let (old, new) = edited("base/universe.yaml", |t| {
            t.replacen(
                "{symbol: GBPUSD, id: 2, beta: {source: static, value: 0.85}, lot_size: 1000",
                "{symbol: GBPUSD, id: 2, beta: {source: static, value: 0.85}, lot_size: 2000",
                1,
            )
        });
        let changes = diff(&old, &new, Environment::Dev);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].key, "strategies[fx_g10].symbols[GBPUSD].lot_size");
        assert!(!changes[0].needs_restart(Proc::Daemon));
        let (old, new) = edited("base/daemon.yaml", |t| {
            t.replace("max_connections: 16", "max_connections: 8")
        });
        let changes = diff(&old, &new, Environment::Dev);
        assert!(changes[0].needs_restart(Proc::Daemon), "{changes:?}");
    }
}
