//! Alerting against local HTTP servers standing in for Slack, PagerDuty and
//! the webhook receiver: routing by severity, `enabled: false`, the HMAC
//! signature, the PagerDuty dedup key, and retries on 5xx/429.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use mlcore_config::{self as config, Channel, Environment, MapEnv, Secret, Severity};
use mlcore_control::alerts::{signature, Alert, Delivery, Notifier};
use mlcore_testkit as testutil;

/// A stand-in receiver: answers with the scripted statuses (then 200) and
/// records every request.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    r.seen.lock().unwrap().push((headers, body));
    let next = {
        let mut s = r.script.lock().unwrap();
        if s.is_empty() {
            200
        } else {
            s.remove(0)
        }
    };
    StatusCode::from_u16(next).unwrap()
}

async fn serve(script: Vec<u16>) -> (String, Receiver) {
    let r = Receiver {
        script: Arc::new(Mutex::new(script)),
        ..Receiver::default()
    };
    let app = Router::new().route("/", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

fn notifications() -> mlcore_config::NotificationsConfig {
    let vars = MapEnv::new()
        .with("MLCORE_REDIS_URL", "redis://x")
        .with("MLCORE_PG_DSN", "postgresql://x");
    let mut n = config::load(
        &testutil::workspace_root().join("configs"),
        Environment::Dev,
        &vars,
    )
    .unwrap()
    .notifications;
    n.retry.initial_backoff_ms = 5;
    n.retry.max_backoff_ms = 20;
    n.retry.max_attempts = 4;
    n
}

fn alert(severity: Severity) -> Alert {
    Alert {
        severity,
        kind: "heartbeat_missing".into(),
        scope: "daemon-1".into(),
        summary: "daemon-1 silent for 6 s".into(),
        details: serde_json::json!({"last_seen_ms": 1}),
        resolve: false,
    }
}

#[tokio::test]
async fn critical_alerts_reach_every_channel_signed_and_deduplicated() {
    let (slack_url, slack) = serve(vec![]).await;
    let (pd_url, pd) = serve(vec![503, 429]).await;
    let (hook_url, hook) = serve(vec![]).await;
    let mut n = notifications();
    n.slack.enabled = true;
    n.slack.webhook_url = Secret::literal(&slack_url);
    n.pagerduty.enabled = true;
    n.pagerduty.events_url = pd_url;
    n.webhook.enabled = true;
    n.webhook.url = hook_url;
    n.routing.insert(
        Severity::Critical,
        vec![Channel::Slack, Channel::Pagerduty, Channel::Webhook],
    );
    let out = Notifier::new(n.clone())
        .unwrap()
        .notify(&alert(Severity::Critical))
        .await;
    assert_eq!(
        out,
        vec![
            (Channel::Slack, Delivery::Sent { attempts: 1 }),
            (Channel::Pagerduty, Delivery::Sent { attempts: 3 }),
            (Channel::Webhook, Delivery::Sent { attempts: 1 }),
        ]
    );
    assert_eq!(pd.seen.lock().unwrap().len(), 3, "two retries after 503 and 429");
    let pd_body: serde_json::Value = serde_json::from_str(&pd.seen.lock().unwrap()[0].1).unwrap();
    assert_eq!(pd_body["dedup_key"], "mlcore:heartbeat_missing:daemon-1");
    assert_eq!(pd_body["event_action"], "trigger");
    assert_eq!(pd_body["payload"]["severity"], "critical");
    let (headers, body) = hook.seen.lock().unwrap()[0].clone();
    let expected = format!(
        "sha256={}",
        signature(n.webhook.hmac_secret.expose().as_bytes(), body.as_bytes())
    );
    assert_eq!(headers["x-obs-signature"].to_str().unwrap(), expected);
    assert!(slack.seen.lock().unwrap()[0].1.contains("daemon-1 silent"));
}

#[tokio::test]
async fn disabled_channels_are_skipped_and_failures_are_reported_after_the_retries() {
    let (hook_url, hook) = serve(vec![500, 500, 500, 500, 500]).await;
    let mut n = notifications();
    n.slack.enabled = false;
    n.webhook.enabled = true;
    n.webhook.url = hook_url;
    n.routing
        .insert(Severity::Warning, vec![Channel::Slack, Channel::Webhook]);
    let out = Notifier::new(n).unwrap().notify(&alert(Severity::Warning)).await;
    assert_eq!(out[0], (Channel::Slack, Delivery::Disabled));
    assert!(
        matches!(&out[1], (Channel::Webhook, Delivery::Failed { attempts: 4, error }) if error.contains("500")),
        "{out:?}"
    );
    assert_eq!(hook.seen.lock().unwrap().len(), 4);

    // A 4xx other than 429 is not retried.
    let (url, r) = serve(vec![400]).await;
    let mut n = notifications();
    n.webhook.enabled = true;
    n.webhook.url = url;
    n.routing.insert(Severity::Info, vec![Channel::Webhook]);
    let out = Notifier::new(n).unwrap().notify(&alert(Severity::Info)).await;
    assert!(
        matches!(&out[0], (Channel::Webhook, Delivery::Failed { attempts: 1, .. })),
        "{out:?}"
    );
    assert_eq!(r.seen.lock().unwrap().len(), 1);
}
