//! Observability automation against real files, a real Redis (a private
//! namespace, signals written through the guard) and a local webhook
//! server: breaches counted across runs (2 → warning, 3 → critical)
//! through the alert channels, the weekly report signed, retried and kept,
//! the dashboard bundle's sequence, verification, restore and pruning,
//! lock contention, and `run-daily --observability --dry-run` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use mlcore_config::{self as config, AppConfig, Channel, Environment, MapEnv, Secret, Severity};
use mlcore_contract::guard::ContractVersion;
use mlcore_contract::{Guard, Keys, OpsMode, SignalBatch};
use mlcore_control::observability::{Automation, Options};
use mlcore_observe::dashboard::{self, Dataset};
use mlcore_observe::latency::{rollup, samples};
use mlcore_observe::{lock, runlog, schema, Job, Layout, RunRecord, RunStatus};
use mlcore_testkit::{self as testutil, RedisNamespace};
use serde_json::{json, Value};
use sha2::Sha256;

const STRATEGY: &str = "fx_g10";

/// Requests a webhook received: `X-OBS-Signature` and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A local webhook: answers with the scripted statuses in order (then
/// 200) and records every request's `X-OBS-Signature` and body.
#[derive(Clone, Default)]
struct Hook {
    script: Arc<Mutex<VecDeque<u16>>>,
    seen: Received,
}

impl Hook {
    async fn start() -> (Self, String) {
        let hook = Self::default();
        let h = hook.clone();
        let app =
            axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let h = h.clone();
                async move {
                    let sig = headers
                        .get("x-obs-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    h.seen.lock().unwrap().push((sig, body.to_vec()));
                    let status = h.script.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hook, url)
    }

    fn answer(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    fn seen(&self) -> Vec<(String, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

struct Env {
    tmp: tempfile::TempDir,
    ns: RedisNamespace,
    cfg: AppConfig,
}

fn env() -> Env {
    let vars = MapEnv::new()
        .with("MLCORE_REDIS_URL", &testutil::redis_url())
        .with("MLCORE_PG_DSN", &testutil::pg_dsn());
    let mut cfg = config::load(
        &testutil::workspace_root().join("configs"),
        Environment::Dev,
        &vars,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ns = RedisNamespace::new();
    cfg.redis.namespace = ns.ns.clone();
    cfg.storage.ops_root = tmp.path().join("ops");
    cfg.storage.out_root = tmp.path().join("out");
    cfg.storage.runs_root = tmp.path().join("runs");
    let o = &mut cfg.control.observability;
    o.latency.slo_p95_ms = 100.0;
    o.weekly_report.retry_wait_ms = 10;
    o.dashboard.upload_retry_wait_ms = 10;
    Env { tmp, ns, cfg }
}

impl Env {
    fn automation(&self) -> Automation {
        Automation::new(Arc::new(self.cfg.clone()), "test".into()).unwrap()
    }

    fn layout(&self) -> Layout {
        let s = &self.cfg.storage;
        Layout::new(&s.ops_root, &s.out_root, &s.runs_root)
    }

    /// `n` decisions of fx_g10 through the guard of `contract`, each
    /// triggered `latency_ms` before now (the guard stamps the write).
    fn publish(&self, contract: ContractVersion, n: u64, latency_ms: u64) {
        let mut conn = testutil::redis_connection();
        Guard::load(&mut conn).unwrap();
        let g = Guard::new(Keys::new(&self.ns.ns), 1000).with_contract(contract);
        testutil::set_mode(&g, &mut conn, STRATEGY, OpsMode::Active);
        for _ in 0..n {
            let now = testutil::now_ms();
            let batch = SignalBatch {
                strategy: STRATEGY.into(),
                seq: next_seq(),
                generated_at_ms: now - latency_ms,
                valid_until_ms: now + 60_000,
                model_id: "m1".into(),
                model_version: 1,
                signals: vec![mlcore_testkit::signals::signal("EURUSD", 0.1)],
            };
            let outcome = g.publish(&mut conn, &batch).unwrap();
            assert!(
                matches!(outcome, mlcore_contract::PublishOutcome::Accepted { .. }),
                "{outcome:?}"
            );
        }
    }

    /// A finished retraining run in runs/: its ledger line, backtest and
    /// daily P&L.
    fn run(&self, run_id: &str, finished: chrono::DateTime<Utc>, max_drawdown: f64, win_rate: f64) {
        let runs = &self.cfg.storage.runs_root;
        let started = finished - Duration::minutes(20);
        let mut e = mlcore_retrain::ledger::Entry {
            run_id: run_id.into(),
            strategy: STRATEGY.into(),
            env: "dev".into(),
            started_at: mlcore_observe::time::rfc3339(started),
            finished_at: mlcore_observe::time::rfc3339(finished),
            status: "succeeded".into(),
            verdict: "adopted".into(),
            model_id: format!("{STRATEGY}@7"),
            data: ("2026-01-05".into(), "2026-01-30".into()),
            kpis: [None; 9],
            duration_s: 1200.0,
        };
        e.kpis[2] = Some(1.4);
        e.kpis[3] = Some(0.3);
        e.kpis[4] = Some(max_drawdown);
        e.kpis[5] = Some(120.0);
        mlcore_retrain::ledger::append(runs, &e).unwrap();
        let daily: BTreeMap<String, f64> = [
            ("2026-01-28", 0.002),
            ("2026-01-29", -0.001),
            ("2026-01-30", 0.003),
        ]
        .into_iter()
        .map(|(d, v)| (d.to_owned(), v))
        .collect();
        let summary = json!({
            "strategy": STRATEGY, "model_id": format!("{STRATEGY}@7"), "model_version": 7,
            "theta1": 0.55, "theta2": 0.6,
            "window_start_ms": 1_769_558_400_000_i64, "window_end_ms": 1_769_817_600_000_i64,
            "cadence_ms": 60000, "latency_ms": 250,
            "slippage": {"kind": "fixed"},
            "base": {"decisions": 4000, "decisions_not_flat": 0.4, "signals_not_flat": 0.2, "fills": 120,
                     "total_return": 0.004, "costs_paid": 0.001, "sharpe": 1.4, "sharpe_ci90": [0.3, 2.1],
                     "sortino": 1.9, "max_drawdown": max_drawdown, "win_rate": win_rate,
                     "turnover_per_day": 2.5, "realised_slippage_bps": 0.8, "mean_gross": 0.5,
                     "mean_abs_net": 0.1, "mean_abs_residual_beta": 0.01, "max_abs_residual_beta": 0.02,
                     "mean_abs_held_beta": 0.01, "daily_pnl": daily},
            "scenarios": {}
        });
        let dir = runs.join(run_id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("portfolio_summary.json"),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .unwrap();
        let csv: String = std::iter::once("day,pnl\n".to_owned())
            .chain(daily.iter().map(|(d, v)| format!("{d},{v}\n")))
            .collect();
        std::fs::write(dir.join("daily.csv"), csv).unwrap();
    }

    fn log(&self) -> Vec<RunRecord> {
        runlog::read(&self.layout().automation_log()).unwrap()
    }
}

fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Increasing within the test process and above any earlier process's.
    testutil::now_ms() * 1000 + SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_breaching_runs_warn_then_go_critical_through_the_alert_channels() {
    let mut e = env();
    let (hook, url) = Hook::start().await;
    let n = &mut e.cfg.notifications;
    n.webhook.enabled = true;
    n.webhook.url = url;
    n.webhook.hmac_secret = Secret::literal("alert-secret");
    n.routing = BTreeMap::from([
        (Severity::Warning, vec![Channel::Webhook]),
        (Severity::Critical, vec![Channel::Webhook]),
    ]);
    let a = e.automation();
    let layout = e.layout();
    let run = |opts: Options| {
        let a = &a;
        async move { a.run(Job::Latency, &opts).await }
    };

    // Run 1: 300 ms on both contracts' streams breaches once — no alert yet.
    e.publish(ContractVersion::V2, 4, 300);
    e.publish(ContractVersion::V3, 4, 300);
    let r1 = run(Options::default()).await;
    assert_eq!(r1.status, RunStatus::Ok, "{r1:?}");
    assert_eq!(r1.summary["samples_written"], 8, "{}", r1.summary);
    assert_eq!(r1.summary["sampling"]["streams"], 2);
    let p95 = r1.summary["p95_ms"].as_f64().unwrap();
    assert!(
        (300.0..5_000.0).contains(&p95),
        "trigger → Redis is what was published: {p95}"
    );
    assert_eq!(r1.summary["breach_count"], 1);
    assert!(r1.alerts.is_empty());
    let sources: Vec<String> = samples::read(&layout.latency_csv())
        .unwrap()
        .into_iter()
        .map(|s| s.source)
        .collect();
    assert!(
        sources.contains(&"stream:fx_g10:v2".to_owned()) && sources.contains(&"stream:fx_g10:v3".to_owned())
    );

    // Run 2: the second breach in a row is a warning, sent to the webhook
    // with its dedup key.
    e.publish(ContractVersion::V3, 3, 300);
    let r2 = run(Options::default()).await;
    assert_eq!(r2.summary["samples_written"], 3, "only what is new since run 1");
    assert_eq!(r2.alerts.len(), 1, "{r2:?}");
    assert_eq!(r2.alerts[0]["severity"], "warning");
    assert_eq!(r2.alerts[0]["notified_channels"], json!(["webhook"]));
    let sent = hook.seen();
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0].1).unwrap();
    assert_eq!(body["kind"], "latency_breach");
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["dedup_key"], "mlcore:latency_breach:global");
    assert_eq!(
        sent[0].0,
        format!("sha256={}", hmac_hex(b"alert-secret", &sent[0].1))
    );

    // Run 3: the third is critical; with --dry-run-alert its payload is
    // written instead of sent.
    e.publish(ContractVersion::V2, 3, 300);
    let r3 = run(Options {
        dry_run_alert: true,
        ..Options::default()
    })
    .await;
    assert_eq!(r3.alerts[0]["severity"], "critical", "{r3:?}");
    assert_eq!(r3.alerts[0]["consecutive_breaches"], 3);
    assert_eq!(hook.seen().len(), 1, "a dry run sends nothing");
    let payload: Value = serde_json::from_str(
        &std::fs::read_to_string(layout.latency_alerts().join(format!("{}.json", r3.job_id))).unwrap(),
    )
    .unwrap();
    assert_eq!(payload["severity"], "critical");
    assert!(r3.dry_run && r3.artefacts.iter().any(|a| a.starts_with("out/latency_alerts/")));

    // Run 4: within the SLO resets the count and resolves the incident
    // (same dedup key, routed as the critical alert was); run 5 without
    // samples leaves the count.
    e.publish(ContractVersion::V3, 40, 5);
    let r4 = run(Options::default()).await;
    assert_eq!(r4.summary["breach_count"].as_u64(), Some(0), "{r4:?}");
    assert_eq!(
        (r4.alerts.len(), r4.alerts[0]["resolve"].as_bool()),
        (1, Some(true)),
        "{r4:?}"
    );
    let sent = hook.seen();
    assert_eq!(sent.len(), 2);
    let resolution: Value = serde_json::from_slice(&sent[1].1).unwrap();
    assert_eq!(
        (resolution["resolve"].as_bool(), resolution["dedup_key"].as_str()),
        (Some(true), Some("mlcore:latency_breach:global"))
    );
    let r5 = run(Options::default()).await;
    assert_eq!(r5.summary["samples_written"], 0);
    assert!(r5.alerts.is_empty(), "resolved once: {r5:?}");
    assert_eq!(r5.summary["p95_ms"], Value::Null);

    // The hours' rollups hold every sample and breached (their p95 is one
    // of the 300 ms ones); the heartbeat says when to expect the next run
    // and when the last breach was.
    let hours = rollup::read(&layout.rollup_csv()).unwrap();
    assert_eq!(hours.iter().map(|h| h.samples).sum::<usize>(), 54, "{hours:?}");
    assert!(
        hours.iter().any(|h| h.breach_flag && h.p95_ms >= 300.0),
        "{hours:?}"
    );
    let hb: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.latency_heartbeat()).unwrap()).unwrap();
    let gen = mlcore_observe::time::parse(hb["generated_at"].as_str().unwrap()).unwrap();
    let next = mlcore_observe::time::parse(hb["next_run_at"].as_str().unwrap()).unwrap();
    assert_eq!(next - gen, Duration::minutes(15));
    assert!(hb["last_breach_at"].is_string(), "{hb}");
    let log = e.log();
    assert_eq!(log.len(), 5);
    assert!(log
        .iter()
        .all(|r| r.status == RunStatus::Ok && r.job_id.as_str().ends_with("-latency")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_skips_the_run_and_says_so() {
    let e = env();
    let generation = || {
        let v: Option<u64> = redis::cmd("GET")
            .arg(Keys::new(&e.ns.ns).analytics_generation())
            .query(&mut testutil::redis_connection())
            .unwrap();
        v.unwrap_or(0)
    };
    let held = lock::try_lock(&e.layout().lock(Job::Latency)).unwrap().unwrap();
    let r = e.automation().run(Job::Latency, &Options::default()).await;
    assert_eq!(r.status, RunStatus::Skipped);
    assert!(r.error_message.unwrap().contains(".latency.lock"));
    assert_eq!(generation(), 0, "a skipped run wrote nothing new");
    drop(held);
    let r = e.automation().run(Job::Latency, &Options::default()).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(
        generation(),
        1,
        "a run that wrote invalidates the analytics cache"
    );
    let statuses: Vec<RunStatus> = e.log().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, [RunStatus::Skipped, RunStatus::Ok]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_is_signed_retried_on_5xx_kept_and_pruned() {
    let mut e = env();
    let (hook, url) = Hook::start().await;
    // A complete week two weeks ago: the test never straddles a week's end.
    let week = mlcore_observe::time::week_start(Utc::now()) - Duration::days(14);
    let now = mlcore_observe::time::midnight(week) + Duration::days(2) + Duration::hours(10);
    let opts = Options {
        week_start: Some(week),
        ..Options::default()
    };
    let wr = &mut e.cfg.control.observability.weekly_report;
    wr.webhook_url = Some(Secret::literal(&url));
    wr.webhook_secret = Secret::literal("obs-secret");
    wr.max_retries = 3;
    // 4.5 % against a 5 % budget: warning from 80 %.
    e.run("fx_g10-r1", now - Duration::minutes(5), 0.045, 0.55);
    // A breaching hour this week in the rollups, and its samples.
    let layout = e.layout();
    let hour = mlcore_observe::time::hour_start(now);
    let s: Vec<samples::Sample> = (0..20)
        .map(|i| samples::Sample {
            at_ms: hour.timestamp_millis() + i * 1000,
            source: "stream:fx_g10:v3".into(),
            latency_ms: if i < 10 { 50.0 } else { 400.0 },
        })
        .collect();
    samples::append(&layout.latency_csv(), &s).unwrap();
    rollup::merge(
        &layout.rollup_csv(),
        &rollup::aggregate(&s, 100.0),
        Utc::now(),
        90,
    )
    .unwrap();
    // A report older than the 60 days kept.
    let hist = layout.weekly_history();
    std::fs::create_dir_all(&hist).unwrap();
    for f in ["2026-01-05.json", "2026-01-05.sig"] {
        std::fs::write(hist.join(f), "{}").unwrap();
    }

    hook.answer(&[503, 503]);
    let a = e.automation();
    let r = a.run(Job::WeeklyReport, &opts).await;
    assert_eq!(r.status, RunStatus::Ok, "{r:?}");
    assert_eq!(r.attempts, 3, "two 503s, then delivered");
    let sent = hook.seen();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|s| s == &sent[0]),
        "every retry sends the same signed body"
    );
    let (sig, body) = &sent[0];
    // The receiver's check: HMAC-SHA256 over the canonical form of what it got.
    let doc: Value = serde_json::from_slice(body).unwrap();
    let canonical = serde_json_canonicalizer::to_vec(&doc).unwrap();
    assert_eq!(&canonical, body, "the body is sent in canonical form");
    assert_eq!(sig, &format!("sha256={}", hmac_hex(b"obs-secret", &canonical)));
    schema::validate(schema::WEEKLY_REPORT, "received", &doc).unwrap();
    assert_eq!(doc["week_start"], week.to_string());
    assert_eq!(doc["portfolio"]["budget_status"], "warning");
    assert_eq!(
        doc["portfolio"]["strategies"][0]["equity_curve"]["2026-01-30"],
        json!(0.004)
    );
    assert_eq!(doc["runs"][0]["run_id"], "fx_g10-r1");
    assert_eq!(doc["runs"][0]["win_rate"], json!(0.55));
    assert_eq!(doc["latency"]["samples"], 20);
    assert_eq!(doc["latency"]["p95_ms"].as_f64(), Some(400.0));
    assert_eq!(
        doc["latency"]["breaches"][0]["hour_utc"],
        mlcore_observe::time::rfc3339(hour)
    );
    assert!(doc["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == "drawdown_budget"));
    assert_eq!(
        r.summary["payload_checksum_sha256"],
        mlcore_observe::files::sha256_hex(body)
    );
    assert_eq!(
        std::fs::read(hist.join(format!("{week}.json"))).unwrap(),
        *body,
        "history keeps what was signed"
    );
    assert_eq!(
        std::fs::read_to_string(hist.join(format!("{week}.sig")))
            .unwrap()
            .trim(),
        sig
    );
    assert!(!hist.join("2026-01-05.json").exists() && !hist.join("2026-01-05.sig").exists());
    assert_eq!(r.summary["history_pruned"], 2);

    // A 4xx is final: one attempt, an error, the signed report kept to
    // send again.
    hook.answer(&[400]);
    let r = a.run(Job::WeeklyReport, &opts).await;
    assert_eq!((r.status, r.attempts), (RunStatus::Error, 1), "{r:?}");
    assert_eq!(r.error_code.as_deref(), Some("OBS_WEBHOOK_FAILED"));
    let kept = layout.weekly_dry_runs().join(format!("{}.json", r.job_id));
    assert!(kept.exists() && kept.with_extension("sig").exists(), "{r:?}");
    // Nobody listening: every retry counted.
    let port = testutil::free_port();
    e.cfg.control.observability.weekly_report.webhook_url =
        Some(Secret::literal(&format!("http://127.0.0.1:{port}/")));
    e.cfg.control.observability.weekly_report.max_retries = 2;
    let r = e.automation().run(Job::WeeklyReport, &opts).await;
    assert_eq!((r.status, r.attempts), (RunStatus::Error, 3), "{r:?}");
    let attempts: Vec<u32> = e.log().iter().map(|r| r.attempts).collect();
    assert_eq!(attempts, [3, 1, 3], "automation_runs.log records the attempts");
}

/// The CLI in a project folder of its own (dev's configs, this test's
/// namespace and roots).
fn project(e: &Env) -> PathBuf {
    let (dir, dev) = testutil::dev_project(&e.ns.ns);
    let root = dir.keep();
    let s = &e.cfg.storage;
    let storage: String = std::fs::read_to_string(dev.join("storage.yaml"))
        .unwrap()
        .lines()
        .filter(|l| {
            !["ops_root:", "out_root:", "runs_root:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dev.join("storage.yaml"),
        format!(
            "{storage}ops_root: {}\nout_root: {}\nruns_root: {}\n",
            s.ops_root.display(),
            s.out_root.display(),
            s.runs_root.display()
        ),
    )
    .unwrap();
    root
}

fn control(project: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcore-control"))
        .current_dir(project)
        .args(args)
        // Not the checkout's (scripts/lib.sh exports it for the suite).
        .env("MLCORE_CONFIG_DIR", project.join("configs"))
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", testutil::pg_dsn())
        .output()
        .unwrap()
}

#[test]
fn a_report_that_breaks_its_schema_is_refused_with_the_details() {
    let e = env();
    e.run("fx_g10-bad", Utc::now() - Duration::minutes(1), 0.01, 1.7);
    let dir = project(&e);
    let o = control(
        &dir,
        &["observe", "weekly-report", "--env", "dev", "--dry-run-webhook"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(12), "{stderr}");
    assert!(stderr.contains("/portfolio/strategies/0/win_rate"), "{stderr}");
    let record: RunRecord = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(record.error_code.as_deref(), Some("OBS_SCHEMA"));
    assert!(!e.layout().weekly_history().exists(), "nothing invalid is kept");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_bundles_count_up_verify_upload_restore_and_prune() {
    let mut e = env();
    let now = Utc::now();
    e.run("fx_g10-r1", now - Duration::days(2), 0.02, 0.52);
    e.run("fx_g10-r2", now - Duration::days(1), 0.03, 0.56);
    let layout = e.layout();
    // A bundle from 9 weeks ago, past the 8 weeks kept.
    let old = layout
        .dashboard_history()
        .join("000000-20260101T000000Z-dashboard");
    std::fs::create_dir_all(&old).unwrap();

    let r1 = e.automation().run(Job::Dashboard, &Options::default()).await;
    assert_eq!(r1.status, RunStatus::Ok, "{r1:?}");
    let m1 = dashboard::verify(&layout.dashboard()).unwrap();
    assert_eq!(m1.sequence, 1);
    assert!(!old.exists(), "the 9-week-old bundle is pruned");
    let rows: BTreeMap<String, usize> = m1.datasets.iter().map(|d| (d.dataset.clone(), d.rows)).collect();
    assert_eq!(rows["ev_history"], 2);
    assert_eq!(rows["slippage"], 1, "one row per strategy: its newest backtest");
    assert_eq!(rows["turnover"], 2);
    let ev: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.dashboard().join("ev_history.json")).unwrap())
            .unwrap();
    assert_eq!(ev["rows"][0]["run_id"], "fx_g10-r2", "newest first");
    assert_eq!(ev["rows"][0]["ev_per_decision"], json!(0.000001));
    let turnover: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.dashboard().join("turnover.json")).unwrap())
            .unwrap();
    assert_eq!(turnover["rows"][0]["drawdown_pct"], json!(3.0));
    assert_eq!(
        turnover["rows"][0]["avg_trades_per_day"],
        json!(40.0),
        "120 fills over 3 days"
    );
    assert_eq!(m1.provenance.inputs.len(), 4, "{:?}", m1.provenance.inputs);
    assert_eq!(m1.provenance.commit_sha.len(), 40);

    // An upload that fails once, then succeeds: retried, attempts recorded.
    let marker = e.tmp.path().join("uploaded-once");
    e.cfg.control.observability.dashboard.upload_command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "test -f {{bundle}}/manifest.json || exit 9; test -f {0} && exit 0; touch {0}; exit 3",
            marker.display()
        ),
    ]);
    let r2 = e
        .automation()
        .run(
            Job::Dashboard,
            &Options {
                datasets: vec![Dataset::Slippage, Dataset::EvHistory],
                ..Options::default()
            },
        )
        .await;
    assert_eq!((r2.status, r2.attempts), (RunStatus::Ok, 2), "{r2:?}");
    let m2 = dashboard::verify(&layout.dashboard()).unwrap();
    assert_eq!(m2.sequence, 2);
    // The datasets not rebuilt stay in the bundle as they were.
    let seqs: BTreeMap<String, u64> = m2
        .datasets
        .iter()
        .map(|d| (d.dataset.clone(), d.sequence))
        .collect();
    assert_eq!(
        seqs,
        BTreeMap::from([
            ("ev_history".to_owned(), 2),
            ("latency_rollups".to_owned(), 1),
            ("slippage".to_owned(), 2),
            ("turnover".to_owned(), 1),
        ])
    );
    let hb: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.dashboard_heartbeat()).unwrap()).unwrap();
    assert_eq!(
        (hb["sequence"].as_u64(), hb["upload_status"].as_str()),
        (Some(2), Some("ok"))
    );

    // A dataset out of range fails the export and leaves the last bundle.
    e.run("fx_g10-r3", now, 0.02, 1.5);
    e.cfg.control.observability.dashboard.upload_command = None;
    let r3 = e.automation().run(Job::Dashboard, &Options::default()).await;
    assert_eq!(r3.status, RunStatus::Error);
    assert_eq!(r3.error_code.as_deref(), Some("OBS_RANGE"), "{r3:?}");
    assert!(r3.error_message.unwrap().contains("win_rate = 1.5"));
    assert_eq!(dashboard::verify(&layout.dashboard()).unwrap().sequence, 2);
    let hb: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.dashboard_heartbeat()).unwrap()).unwrap();
    assert_eq!(
        (hb["status"].as_str(), hb["sequence"].as_u64()),
        (Some("error"), Some(2))
    );

    // A damaged bundle fails verification; --restore puts back the last
    // one that verifies.
    std::fs::write(layout.dashboard().join("slippage.json"), "{\"rows\": []}\n").unwrap();
    let dir = project(&e);
    let o = control(&dir, &["observe", "verify-dashboard", "--env", "dev"]);
    assert_eq!(
        o.status.code(),
        Some(13),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("slippage.json: sha256"));
    let o = control(
        &dir,
        &["observe", "verify-dashboard", "--env", "dev", "--restore"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (out["status"].as_str(), out["sequence"].as_u64()),
        (Some("restored"), Some(2))
    );
    assert_eq!(dashboard::verify(&layout.dashboard()).unwrap().sequence, 2);
    std::fs::remove_dir_all(dir).unwrap();

    // An export killed between its two renames left no bundle and the
    // good one aside: the next export puts it back, and a partial export
    // still carries every other dataset over.
    std::fs::remove_dir_all(e.tmp.path().join("runs/fx_g10-r3")).unwrap();
    let ledger = e.tmp.path().join("runs/index.csv");
    let kept: String = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("fx_g10-r3"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ledger, kept).unwrap();
    std::fs::rename(
        layout.dashboard(),
        layout.out.join(".dashboard.old-20260101T000000Z-dashboard"),
    )
    .unwrap();
    let only_slippage = Options {
        datasets: vec![Dataset::Slippage],
        ..Options::default()
    };
    let r4 = e.automation().run(Job::Dashboard, &only_slippage).await;
    assert_eq!(r4.status, RunStatus::Ok, "{r4:?}");
    let m4 = dashboard::verify(&layout.dashboard()).unwrap();
    assert_eq!((m4.sequence, m4.datasets.len()), (3, 4), "{m4:?}");
    // A damaged current bundle: the others come from the history instead.
    std::fs::write(layout.dashboard().join("turnover.json"), "{}").unwrap();
    let r5 = e.automation().run(Job::Dashboard, &only_slippage).await;
    assert_eq!(r5.status, RunStatus::Ok, "{r5:?}");
    let m5 = dashboard::verify(&layout.dashboard()).unwrap();
    assert_eq!((m5.sequence, m5.datasets.len()), (4, 4), "{m5:?}");
}

#[test]
fn run_daily_dry_run_writes_every_artefact_and_sends_nothing() {
    let e = env();
    e.publish(ContractVersion::V3, 5, 20);
    e.run("fx_g10-r1", Utc::now() - Duration::hours(1), 0.02, 0.52);
    let dir = project(&e);
    let o = control(
        &dir,
        &["run-daily", "--observability", "--env", "dev", "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let records: Vec<RunRecord> = serde_json::from_slice(&o.stdout).unwrap();
    let jobs: Vec<Job> = records.iter().map(|r| r.job).collect();
    assert_eq!(jobs, [Job::Latency, Job::Dashboard, Job::WeeklyReport]);
    assert!(
        records.iter().all(|r| r.status == RunStatus::Ok && r.dry_run),
        "{records:?}"
    );
    assert_eq!(records[0].summary["samples_written"], 5);
    assert_eq!(records[2].summary["delivery"], "dry_run");
    let l = e.layout();
    let week = mlcore_observe::weekly::default_week(Utc::now());
    let weekly_job = &records[2].job_id;
    for f in [
        l.automation_log(),
        l.latency_csv(),
        l.rollup_csv(),
        l.latency_state(),
        l.latency_heartbeat(),
        l.dashboard().join("manifest.json"),
        l.dashboard().join("ev_history.json"),
        l.dashboard().join("slippage.json"),
        l.dashboard().join("turnover.json"),
        l.dashboard().join("latency_rollups.json"),
        l.dashboard_heartbeat(),
        l.weekly_dry_runs().join(format!("{weekly_job}.json")),
        l.weekly_dry_runs().join(format!("{weekly_job}.sig")),
    ] {
        assert!(f.exists(), "{} missing; stderr:\n{stderr}", f.display());
    }
    assert!(
        !l.weekly_history().join(format!("{week}.json")).exists(),
        "a dry run never replaces a delivered report"
    );
    assert_eq!(dashboard::history(&l).len(), 1);
    assert_eq!(e.log().len(), 3);
    for r in &records {
        assert!(stderr.contains(&format!("{}: ok", r.job_id)), "{stderr}");
    }
    // The report written in the dry run is the one the schema accepts.
    let doc: Value = serde_json::from_slice(
        &std::fs::read(l.weekly_dry_runs().join(format!("{weekly_job}.json"))).unwrap(),
    )
    .unwrap();
    schema::validate(schema::WEEKLY_REPORT, "dry run", &doc).unwrap();
    // On a Monday the default week is the one that just ended, without
    // the samples published now.
    let this_week = week == mlcore_observe::time::week_start(Utc::now());
    assert_eq!(doc["latency"]["samples"], if this_week { 5 } else { 0 });
    std::fs::remove_dir_all(dir).unwrap();
}

/// A daemon's `/metrics` as the exposition writes it, `trigger_to_ack`
/// buckets at 0.5, 1 and 2 ms holding `counts` (cumulative).
fn exposition(counts: [u64; 3]) -> String {
    let mut t = String::from(
        "# HELP ml_assets_core_stage_latency_seconds Latency per pipeline stage.\n# TYPE ml_assets_core_stage_latency_seconds histogram\n",
    );
    for (le, c) in ["0.0005", "0.001", "0.002"].iter().zip(counts) {
        t.push_str(&format!(
            "ml_assets_core_stage_latency_seconds_bucket{{environment=\"e2e\",stage=\"trigger_to_ack\",le=\"{le}\"}} {c}\n"
        ));
    }
    t.push_str(&format!(
        "ml_assets_core_stage_latency_seconds_bucket{{environment=\"e2e\",stage=\"trigger_to_ack\",le=\"+Inf\"}} {}\n# EOF\n",
        counts[2]
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_histograms_are_reported_for_the_interval_between_runs() {
    let mut e = env();
    let bodies = Arc::new(Mutex::new(VecDeque::from([
        exposition([10, 90, 100]),
        exposition([10, 170, 200]),
    ])));
    let b = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let b = Arc::clone(&b);
            async move { b.lock().unwrap().pop_front().unwrap_or_default() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dead = format!("http://127.0.0.1:{}/metrics", testutil::free_port());
    e.cfg.control.observability.latency.metrics_targets = vec![target.clone(), dead.clone()];
    let a = e.automation();
    let first = a.run(Job::Latency, &Options::default()).await;
    assert_eq!(
        first.status,
        RunStatus::Ok,
        "a daemon that does not answer does not fail the run: {first:?}"
    );
    let h = &first.summary["histograms"];
    assert_eq!(
        (h[0]["target"].as_str(), h[0]["decisions"].as_f64()),
        (Some(target.as_str()), Some(100.0))
    );
    assert!(h[1]["error"].is_string(), "{h}");
    // The second run sees only the 100 decisions since the first, 80 of
    // them between 0.5 and 1 ms: p50 = 0.5 + 0.5 × 50/80 ms, reported to
    // the microsecond.
    let second = a.run(Job::Latency, &Options::default()).await;
    let h = &second.summary["histograms"][0];
    assert_eq!(h["decisions"].as_f64(), Some(100.0), "{h}");
    assert_eq!(h["p50_ms"].as_f64(), Some(0.813));
    assert_eq!(
        h["p99_ms"].as_f64(),
        Some(1.95),
        "rank 99 of 100 in (1, 2] ms, which holds the last 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_jobs_on_their_schedule() {
    let mut e = env();
    let never = "0 0 0 1 1 *".to_owned();
    e.cfg.control.observability.schedule = Some(config::ObservabilitySchedule {
        latency: "* * * * * *".into(),
        dashboard: never.clone(),
        weekly_report: never,
    });
    let handles = mlcore_control::observability::spawn_schedule(Arc::new(e.cfg.clone()));
    assert_eq!(handles.len(), 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let latency_runs = || {
        runlog::read(&e.layout().automation_log())
            .unwrap_or_default()
            .iter()
            .filter(|r| r.job == Job::Latency && r.status == RunStatus::Ok)
            .count()
    };
    while latency_runs() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for h in handles {
        h.abort();
    }
    assert!(latency_runs() >= 2, "{:?}", e.log());
    assert!(
        e.log().iter().all(|r| r.job == Job::Latency),
        "the others wait for 1 January"
    );
}
