//! Cross-field and cross-file rules that types alone cannot express.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{AppConfig, ConfigCode, ConfigProblem, Credential, Environment};

/// Every rule violation in `c`; `file` maps a config file name to its path.
pub(crate) fn validate(c: &AppConfig, file: &dyn Fn(&str) -> PathBuf) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let mut bad = |f: &str, key: String, message: String| {
        out.push(ConfigProblem {
            code: ConfigCode::ValueInvalid,
            file: file(f),
            key,
            message,
        });
    };

    // Listen addresses: a port that cannot exist is a config error, not a
    // surprise at bind time (or an OS-chosen port nobody looks for).
    for (f, key, addr) in [
        ("daemon.yaml", "ingress.listen", &c.daemon.ingress.listen),
        ("metrics.yaml", "listen", &c.metrics.listen),
        ("control.yaml", "listen", &c.control.listen),
    ] {
        if let Err(why) = listen_address(addr) {
            bad(f, key.into(), format!("`{addr}` is not a listen address: {why}"));
        }
    }

    // core_policy.yaml
    let t = &c.core_policy.theta;
    if !(t.theta1 > 0.5 && t.theta1 < 1.0) {
        bad(
            "core_policy.yaml",
            "theta.theta1".into(),
            format!("must be in (0.5, 1), got {}", t.theta1),
        );
    }
    if !(t.theta2 > 0.0 && t.theta2 <= 1.0) {
        bad(
            "core_policy.yaml",
            "theta.theta2".into(),
            format!("must be in (0, 1], got {}", t.theta2),
        );
    }
    for (key, [lo, hi], v) in [
        ("theta1_bounds", t.theta1_bounds, t.theta1),
        ("theta2_bounds", t.theta2_bounds, t.theta2),
    ] {
        if !(lo <= v && v <= hi) {
            bad(
                "core_policy.yaml",
                format!("theta.{key}"),
                format!("[{lo}, {hi}] does not contain the current value {v}"),
            );
        }
    }
    for (id, pair) in &t.per_strategy {
        if c.strategy(id).is_none() {
            bad(
                "core_policy.yaml",
                format!("theta.per_strategy.{id}"),
                format!("`{id}` is not a strategy of universe.yaml"),
            );
        }
        for (key, [lo, hi], v) in [
            ("theta1", t.theta1_bounds, pair.theta1),
            ("theta2", t.theta2_bounds, pair.theta2),
        ] {
            if !(lo <= v && v <= hi) {
                bad(
                    "core_policy.yaml",
                    format!("theta.per_strategy.{id}.{key}"),
                    format!("{v} is outside theta.{key}_bounds [{lo}, {hi}]"),
                );
            }
        }
    }
    if !(t.max_step > 0.0 && t.max_step.is_finite()) {
        bad(
            "core_policy.yaml",
            "theta.max_step".into(),
            "must be a positive number".into(),
        );
    }
    let r = &c.core_policy.risk;
    for (key, v) in [
        ("risk.max_gross", r.max_gross),
        ("risk.max_symbol_weight", r.max_symbol_weight),
        ("risk.beta_tolerance", r.beta_tolerance),
        ("sizing.target_annual_vol", c.core_policy.sizing.target_annual_vol),
        ("sizing.periods_per_year", c.core_policy.sizing.periods_per_year),
    ] {
        if !(v > 0.0 && v.is_finite()) {
            bad(
                "core_policy.yaml",
                key.into(),
                format!("must be a positive number, got {v}"),
            );
        }
    }
    if c.core_policy.signal.ttl_ms == 0 {
        bad(
            "core_policy.yaml",
            "signal.ttl_ms".into(),
            "must be positive".into(),
        );
    }

    let margin = c.core_policy.adoption.sharpe_margin;
    if !(margin.is_finite() && margin >= 0.0) {
        bad(
            "core_policy.yaml",
            "adoption.sharpe_margin".into(),
            "must be a finite Sharpe gain of 0 or more".into(),
        );
    }

    // universe.yaml and cost_table.yaml
    let mut strategy_ids = BTreeSet::new();
    // The ids' syntax is checked when they are read (`StrategyId`, `Symbol`).
    for (si, s) in c.universe.strategies.iter().enumerate() {
        if !strategy_ids.insert(s.id.as_str()) {
            bad(
                "universe.yaml",
                format!("strategies[{si}].id"),
                format!("duplicate strategy id `{}`", s.id),
            );
        }
        if s.symbols.is_empty() {
            bad(
                "universe.yaml",
                format!("strategies[{si}].symbols"),
                "a strategy needs at least one symbol".into(),
            );
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (i, sym) in s.symbols.iter().enumerate() {
            let key = |f: &str| format!("strategies[{si}].symbols[{i}].{f}");
            if !names.insert(sym.symbol.as_str()) {
                bad(
                    "universe.yaml",
                    key("symbol"),
                    format!("duplicate symbol `{}`", sym.symbol),
                );
            }
            if !ids.insert(sym.id) {
                bad(
                    "universe.yaml",
                    key("id"),
                    format!("duplicate symbol id {}", sym.id),
                );
            }
            if !(sym.max_weight > 0.0 && sym.max_weight <= r.max_symbol_weight) {
                bad(
                    "universe.yaml",
                    key("max_weight"),
                    format!("must be in (0, risk.max_symbol_weight = {}]", r.max_symbol_weight),
                );
            }
            if !positive(sym.lot_size) || sym.min_qty < 0.0 || !positive(sym.notional_per_unit_weight) {
                bad(
                    "universe.yaml",
                    key("lot_size"),
                    "lot_size and notional_per_unit_weight must be positive, min_qty non-negative".into(),
                );
            }
            if !c.cost_table.symbols.contains_key(sym.symbol.as_str()) {
                bad(
                    "cost_table.yaml",
                    format!("symbols.{}", sym.symbol),
                    format!("no cost entry for universe symbol `{}`", sym.symbol),
                );
            }
        }
        if !names.contains(s.benchmark.as_str()) {
            bad(
                "universe.yaml",
                format!("strategies[{si}].benchmark"),
                format!("benchmark `{}` is not one of the strategy's symbols", s.benchmark),
            );
        }
    }
    for (sym, cost) in &c.cost_table.symbols {
        if cost.spread_bps < 0.0
            || cost.commission_bps < 0.0
            || !cost.spread_bps.is_finite()
            || !cost.commission_bps.is_finite()
        {
            bad(
                "cost_table.yaml",
                format!("symbols.{sym}"),
                "costs must be finite and non-negative".into(),
            );
        }
    }
    let slip = &c.cost_table.slippage;
    let usable = |v: f64| v >= 0.0 && v.is_finite();
    if !usable(slip.fixed_bps) || !usable(slip.impact_bps_per_million) {
        bad(
            "cost_table.yaml",
            "slippage".into(),
            "fixed_bps and impact_bps_per_million must be finite and non-negative".into(),
        );
    }

    // redis.yaml / database.yaml
    if c.redis.namespace.is_empty() || c.redis.namespace.contains(['{', '}', ':', ' ']) {
        bad(
            "redis.yaml",
            "namespace".into(),
            "must be non-empty without `{`, `}`, `:` or spaces".into(),
        );
    }
    if c.redis.mode == super::RedisMode::Cluster && c.redis.cluster_nodes.is_empty() {
        bad(
            "redis.yaml",
            "cluster_nodes".into(),
            "cluster mode needs at least one seed node".into(),
        );
    }
    if c.redis.guard_engine == super::GuardEngine::Module && c.redis.contract != super::GuardContract::V3 {
        bad(
            "redis.yaml",
            "guard_engine".into(),
            "module runs contract v3's publish call: it needs `contract: v3`".into(),
        );
    }
    if c.redis.heartbeat.ttl_ms <= c.redis.heartbeat.interval_ms {
        bad(
            "redis.yaml",
            "heartbeat.ttl_ms".into(),
            "must exceed heartbeat.interval_ms".into(),
        );
    }
    let p = &c.database.pool;
    if p.max == 0 || p.min > p.max {
        bad(
            "database.yaml",
            "pool".into(),
            format!(
                "need 0 <= min <= max and max > 0, got min {} max {}",
                p.min, p.max
            ),
        );
    }
    if c.database.search_path.first().map(String::as_str) != Some("core")
        || !c.database.search_path.iter().any(|s| s == "audit")
    {
        bad(
            "database.yaml",
            "search_path".into(),
            "must start with `core` and include `audit`".into(),
        );
    }
    if c.database.retention.critical_days < c.database.retention.audit_days {
        bad(
            "database.yaml",
            "retention.critical_days".into(),
            "critical events cannot be kept shorter than ordinary ones".into(),
        );
    }

    // Transport outside dev: the API speaks HTTPS, alerts leave over HTTPS.
    let n = &c.notifications;
    if c.environment != Environment::Dev {
        if c.control.tls.is_none() {
            bad(
                "control.yaml",
                "tls".into(),
                "the API must serve HTTPS outside dev: set tls.cert_file and tls.key_file".into(),
            );
        }
        let targets = [
            (n.slack.enabled, "slack.webhook_url", n.slack.webhook_url.expose()),
            (
                n.pagerduty.enabled,
                "pagerduty.events_url",
                n.pagerduty.events_url.as_str(),
            ),
            (n.webhook.enabled, "webhook.url", n.webhook.url.as_str()),
        ];
        for (enabled, key, url) in targets {
            // An unresolved secret (a process that does not send) is empty.
            if enabled && !url.is_empty() && !url.starts_with("https://") {
                bad(
                    "notifications.yaml",
                    key.into(),
                    "must be an https:// URL outside dev".into(),
                );
            }
        }
    }
    if c.control.tls.as_ref().is_some_and(|t| t.reload_check_s == 0) {
        bad(
            "control.yaml",
            "tls.reload_check_s".into(),
            "must be at least 1 second".into(),
        );
    }
    if c.control.second_factor.required {
        for (i, pr) in c.control.principals.iter().enumerate() {
            let decides = pr
                .roles
                .iter()
                .any(|r| matches!(r, super::Role::Approver | super::Role::Admin));
            if decides && pr.totp.is_none() {
                bad(
                    "control.yaml",
                    format!("principals[{i}].totp"),
                    format!(
                        "`{}` may approve, and second_factor.required: enrol a TOTP secret",
                        pr.name
                    ),
                );
            }
        }
    }

    // control.yaml: retraining.
    let r = &c.control.retrain;
    for (key, ok, what) in [
        (
            "retrain.decision_every_ms",
            r.decision_every_ms >= 1,
            "at least 1",
        ),
        ("retrain.horizon", r.horizon >= 1, "at least 1"),
        ("retrain.valid_days", r.valid_days >= 1, "at least 1"),
        ("retrain.folds", (2..=20).contains(&r.folds), "between 2 and 20"),
        (
            "retrain.trees.num_leaves",
            (2..=4096).contains(&r.trees.num_leaves),
            "between 2 and 4096",
        ),
        (
            "retrain.trees.learning_rate",
            r.trees.learning_rate > 0.0 && r.trees.learning_rate <= 1.0,
            "in (0, 1]",
        ),
        (
            "retrain.trees.min_data_in_leaf",
            r.trees.min_data_in_leaf >= 1,
            "at least 1",
        ),
        ("retrain.trees.max_trees", r.trees.max_trees >= 1, "at least 1"),
        ("retrain.search.every_ms", r.search.every_ms >= 1, "at least 1"),
        ("retrain.search.grid", r.search.grid >= 2, "at least 2"),
        (
            "retrain.search.max_drawdown",
            r.search.max_drawdown > 0.0 && r.search.max_drawdown <= 1.0,
            "in (0, 1]",
        ),
    ] {
        if !ok {
            bad("control.yaml", key.into(), format!("must be {what}"));
        }
    }
    if let Some(schedule) = &r.schedule {
        if let Err(e) = crate::schedule::parse(&schedule.cron) {
            bad("control.yaml", "retrain.schedule.cron".into(), e);
        }
        if schedule.strategies.is_empty() {
            bad(
                "control.yaml",
                "retrain.schedule.strategies".into(),
                "name at least one strategy (or set schedule: null)".into(),
            );
        }
        for (i, id) in schedule.strategies.iter().enumerate() {
            if c.strategy(id).is_none() {
                bad(
                    "control.yaml",
                    format!("retrain.schedule.strategies[{i}]"),
                    format!("`{id}` is not a strategy of universe.yaml"),
                );
            }
        }
    }

    // control.yaml: observability automation.
    let o = &c.control.observability;
    for (key, ok, what) in [
        (
            "observability.latency.every_minutes",
            o.latency.every_minutes >= 1,
            "at least 1",
        ),
        (
            "observability.latency.slo_p95_ms",
            o.latency.slo_p95_ms.is_finite() && o.latency.slo_p95_ms > 0.0,
            "a positive number of ms",
        ),
        (
            "observability.latency.warning_after",
            o.latency.warning_after >= 1,
            "at least 1",
        ),
        (
            "observability.latency.critical_after",
            o.latency.critical_after > o.latency.warning_after,
            "more than warning_after",
        ),
        (
            "observability.latency.rotate_bytes",
            o.latency.rotate_bytes >= 1024,
            "at least 1024",
        ),
        (
            "observability.latency.raw_retention_days",
            o.latency.raw_retention_days >= 1,
            "at least 1",
        ),
        (
            "observability.latency.rollup_retention_days",
            o.latency.rollup_retention_days >= 1,
            "at least 1",
        ),
        (
            "observability.latency.max_samples_per_stream",
            o.latency.max_samples_per_stream >= 1,
            "at least 1",
        ),
        (
            "observability.weekly_report.timeout_ms",
            o.weekly_report.timeout_ms >= 1,
            "at least 1",
        ),
        (
            "observability.weekly_report.history_days",
            o.weekly_report.history_days >= 7,
            "at least 7",
        ),
        (
            "observability.weekly_report.drawdown_budget",
            o.weekly_report.drawdown_budget > 0.0 && o.weekly_report.drawdown_budget <= 1.0,
            "in (0, 1]",
        ),
        (
            "observability.weekly_report.drawdown_warning_fraction",
            o.weekly_report.drawdown_warning_fraction > 0.0
                && o.weekly_report.drawdown_warning_fraction <= 1.0,
            "in (0, 1]",
        ),
        (
            "observability.dashboard.history_weeks",
            o.dashboard.history_weeks >= 1,
            "at least 1",
        ),
        (
            "observability.dashboard.ev_history_runs",
            o.dashboard.ev_history_runs >= 1,
            "at least 1",
        ),
        (
            "observability.dashboard.upload_timeout_ms",
            o.dashboard.upload_timeout_ms >= 1,
            "at least 1",
        ),
        (
            "observability.dashboard.upload_command",
            o.dashboard
                .upload_command
                .as_ref()
                .is_none_or(|argv| !argv.is_empty()),
            "a program and its arguments (or null)",
        ),
    ] {
        if !ok {
            bad("control.yaml", key.into(), format!("must be {what}"));
        }
    }
    if let Some(s) = &o.schedule {
        for (key, expr) in [
            ("latency", &s.latency),
            ("dashboard", &s.dashboard),
            ("weekly_report", &s.weekly_report),
        ] {
            if let Err(e) = crate::schedule::parse(expr) {
                bad("control.yaml", format!("observability.schedule.{key}"), e);
            }
        }
    }

    // control.yaml: config change requests.
    let cc = &c.control.config_changes;
    let w = &cc.change_window;
    let valid_branch = !cc.branch.is_empty()
        && !cc.branch.starts_with(['-', '/', '.'])
        && !cc.branch.ends_with(['/', '.'])
        && !cc.branch.contains("..")
        && cc
            .branch
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '/' | '_' | '-' | '.'));
    for (key, ok, what) in [
        (
            "config_changes.branch",
            valid_branch,
            "a git branch name (letters, digits, / _ - .)".to_owned(),
        ),
        ("config_changes.ttl_h", cc.ttl_h >= 1, "at least 1".into()),
        (
            "config_changes.apply_timeout_ms",
            cc.apply_timeout_ms >= 100,
            "at least 100".into(),
        ),
        (
            "config_changes.change_window.days",
            !w.days.is_empty(),
            "at least one day".into(),
        ),
        (
            "config_changes.change_window.start",
            super::minutes_of_day(&w.start).is_some_and(|m| m < 1440),
            format!("HH:MM from 00:00 to 23:59, got `{}`", w.start),
        ),
        (
            "config_changes.change_window.end",
            matches!((super::minutes_of_day(&w.start), super::minutes_of_day(&w.end)), (Some(a), Some(b)) if b > a),
            format!("HH:MM after start (24:00 at most), got `{}`", w.end),
        ),
    ] {
        if !ok {
            bad("control.yaml", key.into(), format!("must be {what}"));
        }
    }

    if let Some(api) = &c.control.config_api {
        let dev = c.environment == Environment::Dev;
        let scheme_ok = api.base_url.starts_with("https://") || (dev && api.base_url.starts_with("http://"));
        for (key, ok, what) in [
            (
                "config_api.base_url",
                scheme_ok,
                "an https:// URL (http:// only in dev)",
            ),
            (
                "config_api.timeout_seconds",
                api.timeout_seconds > 0.0 && api.timeout_seconds <= 300.0,
                "in (0, 300]",
            ),
            ("config_api.retries", api.retries <= 10, "at most 10"),
            ("config_api.backoff_ms", api.backoff_ms <= 60_000, "at most 60000"),
            (
                "config_api.verify_ssl",
                api.verify_ssl || dev,
                "true outside dev (an unverified certificate lets anyone read and answer)",
            ),
        ] {
            if !ok {
                bad("control.yaml", key.into(), format!("must be {what}"));
            }
        }
    }

    // notifications.yaml / metrics.yaml / sources.yaml
    if n.retry.max_attempts == 0 {
        bad(
            "notifications.yaml",
            "retry.max_attempts".into(),
            "must be at least 1".into(),
        );
    }
    for (stage, buckets) in &c.metrics.latency_buckets_seconds {
        if buckets.is_empty()
            || buckets.windows(2).any(|w| w[0] >= w[1])
            || buckets.iter().any(|b| !positive(*b))
        {
            bad(
                "metrics.yaml",
                format!("latency_buckets_seconds.{stage}"),
                "buckets must be positive and strictly increasing".into(),
            );
        }
    }
    let mut priorities = BTreeSet::new();
    for (i, prov) in c.sources.providers.iter().enumerate() {
        if !priorities.insert(prov.priority) {
            bad(
                "sources.yaml",
                format!("providers[{i}].priority"),
                format!("priority {} is used twice", prov.priority),
            );
        }
    }

    // daemon.yaml
    let th = &c.daemon.threads;
    if th.worker_cores.is_empty() {
        bad(
            "daemon.yaml",
            "threads.worker_cores".into(),
            "at least one inference worker is needed".into(),
        );
    }
    if th.realtime_priority > 99 {
        bad(
            "daemon.yaml",
            "threads.realtime_priority".into(),
            format!(
                "{} is not a SCHED_FIFO priority: 0 (normal scheduling) or 1-99",
                th.realtime_priority
            ),
        );
    }
    if c.daemon.decision.timer_interval_ms == 0 {
        bad(
            "daemon.yaml",
            "decision.timer_interval_ms".into(),
            "must be at least 1 (a decision every N ms in timer mode)".into(),
        );
    }
    if c.daemon.queues.decisions == 0 || c.daemon.queues.publish == 0 {
        bad(
            "daemon.yaml",
            "queues".into(),
            "queue capacities must be positive".into(),
        );
    }

    // control.yaml
    let fa = &c.control.failed_auth;
    for (key, v) in [
        ("failed_auth.burst", fa.burst),
        ("failed_auth.alert_after", fa.alert_after),
    ] {
        if v == 0 {
            bad("control.yaml", key.into(), "must be at least 1".into());
        }
    }
    if c.control.refused_audit_window_s == 0 {
        bad(
            "control.yaml",
            "refused_audit_window_s".into(),
            "must be at least 1 second".into(),
        );
    }
    let mut principal_names = BTreeSet::new();
    for (i, pr) in c.control.principals.iter().enumerate() {
        if !principal_names.insert(pr.name.as_str()) {
            bad(
                "control.yaml",
                format!("principals[{i}].name"),
                format!("duplicate principal `{}`", pr.name),
            );
        }
        if pr.roles.is_empty() {
            bad(
                "control.yaml",
                format!("principals[{i}].roles"),
                "a principal needs at least one role".into(),
            );
        }
        match &pr.credential {
            Credential::Sha256 { value: h }
                if h.len() != 64 || !h.chars().all(|ch| ch.is_ascii_hexdigit()) =>
            {
                bad(
                    "control.yaml",
                    format!("principals[{i}].credential.value"),
                    "must be 64 hex digits".into(),
                );
            }
            Credential::Token { value: s }
                if s.is_resolved() && s.expose().len() < 16 && c.environment != Environment::Dev =>
            {
                bad(
                    "control.yaml",
                    format!("principals[{i}].credential.value"),
                    "tokens must be at least 16 characters".into(),
                );
            }
            _ => {}
        }
    }

    // trust.yaml
    let mut key_ids = BTreeSet::new();
    for (i, k) in c.trust.keys.iter().enumerate() {
        let key = |f: &str| format!("keys[{i}].{f}");
        if !key_ids.insert(k.id.as_str()) {
            bad("trust.yaml", key("id"), format!("duplicate key id `{}`", k.id));
        }
        if k.public_key.len() != 64 || !k.public_key.chars().all(|ch| ch.is_ascii_hexdigit()) {
            bad(
                "trust.yaml",
                key("public_key"),
                "must be 64 hex digits (an ed25519 public key)".into(),
            );
        }
        let from = mlcore_market::civil::parse(&k.valid_from);
        let until = mlcore_market::civil::parse(&k.valid_until);
        match (from, until) {
            (Some(f), Some(u)) if f <= u => {}
            (None, _) => bad(
                "trust.yaml",
                key("valid_from"),
                format!("`{}` is not a YYYY-MM-DD date", k.valid_from),
            ),
            (_, None) => bad(
                "trust.yaml",
                key("valid_until"),
                format!("`{}` is not a YYYY-MM-DD date", k.valid_until),
            ),
            _ => bad("trust.yaml", key("valid_until"), "ends before valid_from".into()),
        }
        if k.purposes.is_empty() {
            bad(
                "trust.yaml",
                key("purposes"),
                "a key needs at least one purpose".into(),
            );
        }
    }
    out
}

/// Strictly positive and finite (NaN is not positive).
fn positive(v: f64) -> bool {
    v > 0.0 && v.is_finite()
}

/// Why `addr` is not `host:port` with a port of 0-65535 (0: the OS picks
/// one, which the process then announces), or `Ok`.
fn listen_address(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!("`{host}` is not an IPv6 address (write it in brackets)"));
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("port `{port}` is not a number from 0 to 65535"))
}
