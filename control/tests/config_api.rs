//! The Config API client against a local HTTPS server speaking the same
//! protocol (`PUT /change-requests/{id}`, bearer token), its certificate
//! issued by a test CA: a delivery, retries on 503 and 429 with backoff,
//! a timeout retried, a 4xx final, a server with a certificate from another
//! CA refused at once, and `verify_ssl: false` accepting it (dev only: the
//! loader refuses it elsewhere).

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use mlcore_config::{ConfigApiConfig, Secret};
use mlcore_control::config_api::{ConfigApi, ConfigApiError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{json, Value};

/// What the stub answers, in order (the last repeats), and what it saw.
#[derive(Default)]
struct Script {
    answers: Vec<(u16, Duration)>,
    seen: Vec<(String, Option<String>, Value, Instant)>,
}

type Shared = Arc<Mutex<Script>>;

async fn change(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let (status, delay) = {
        let mut s = s.lock().unwrap();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.seen.push((id, auth, body, Instant::now()));
        let i = (s.seen.len() - 1).min(s.answers.len() - 1);
        s.answers[i]
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap()
}

/// A CA, and a server certificate for localhost/127.0.0.1 it issued.
fn pki() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

async fn stub(cert: &str, key: &str, answers: Vec<(u16, Duration)>) -> (SocketAddr, Shared) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shared: Shared = Arc::new(Mutex::new(Script {
        answers,
        seen: Vec::new(),
    }));
    let app = Router::new()
        .route("/api/change-requests/{id}", put(change))
        .with_state(Arc::clone(&shared));
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_pem(cert.as_bytes().to_vec(), key.as_bytes().to_vec())
            .await
            .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(app.into_make_service()));
    (addr, shared)
}

fn client(addr: SocketAddr, ca_file: Option<&std::path::Path>, verify: bool) -> ConfigApi {
    ConfigApi::new(&ConfigApiConfig {
        base_url: format!("https://localhost:{}/api", addr.port()),
        token: Secret::literal("stub-token"),
        timeout_seconds: 0.5,
        retries: 3,
        backoff_ms: 50,
        verify_ssl: verify,
        ca_file: ca_file.map(std::path::Path::to_path_buf),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retry_what_may_pass_and_refuse_the_wrong_certificate() {
    let (ca, cert, key) = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let body = json!({"id": "cr-7", "state": "approved"});
    let ms = Duration::from_millis;

    // Delivered at once, with the token and the request.
    let (addr, seen) = stub(&cert, &key, vec![(200, ms(0))]).await;
    let api = client(addr, Some(&ca_file), true);
    let d = api.put_change("cr-7", &body).await.unwrap();
    assert_eq!((d.status, d.attempts), (200, 1));
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.seen[0].0, "cr-7");
        assert_eq!(s.seen[0].1.as_deref(), Some("Bearer stub-token"));
        assert_eq!(s.seen[0].2, body);
    }

    // 503, 429, then 204: three retries' worth, backing off 50 then 100 ms.
    let (addr, seen) = stub(&cert, &key, vec![(503, ms(0)), (429, ms(0)), (204, ms(0))]).await;
    let d = client(addr, Some(&ca_file), true)
        .put_change("cr-7", &body)
        .await
        .unwrap();
    assert_eq!((d.status, d.attempts), (204, 3));
    {
        let s = seen.lock().unwrap();
        let gaps: Vec<Duration> = s.seen.windows(2).map(|w| w[1].3 - w[0].3).collect();
        assert!(
            gaps[0] >= ms(50) && gaps[1] >= ms(100),
            "exponential backoff: {gaps:?}"
        );
    }

    // A slow answer (past the 0.5 s timeout) is retried; then it answers.
    let (addr, _) = stub(&cert, &key, vec![(200, ms(1500)), (200, ms(0))]).await;
    let d = client(addr, Some(&ca_file), true)
        .put_change("cr-7", &body)
        .await
        .unwrap();
    assert_eq!(d.attempts, 2);

    // Always 500: given up after 1 + 3 attempts, saying why.
    let (addr, seen) = stub(&cert, &key, vec![(500, ms(0))]).await;
    match client(addr, Some(&ca_file), true).put_change("cr-7", &body).await {
        Err(ConfigApiError::Exhausted { attempts: 4, last }) => assert!(last.contains("500"), "{last}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.lock().unwrap().seen.len(), 4);

    // A 4xx other than 429 is final.
    let (addr, seen) = stub(&cert, &key, vec![(422, ms(0))]).await;
    match client(addr, Some(&ca_file), true).put_change("cr-7", &body).await {
        Err(ConfigApiError::Refused {
            status: 422,
            attempts: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.lock().unwrap().seen.len(), 1);

    // A server whose certificate another CA issued: refused at once, not
    // retried, nothing sent.
    let (_, other_cert, other_key) = pki();
    let (addr, seen) = stub(&other_cert, &other_key, vec![(200, ms(0))]).await;
    match client(addr, Some(&ca_file), true).put_change("cr-7", &body).await {
        Err(ConfigApiError::Transport(why)) => assert!(why.to_lowercase().contains("certificate"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(seen.lock().unwrap().seen.is_empty());
    // Nor trusted by the public roots (no CA file).
    assert!(matches!(
        client(addr, None, true).put_change("cr-7", &body).await,
        Err(ConfigApiError::Transport(_))
    ));
    // verify_ssl: false (dev only) accepts it.
    let d = client(addr, None, false).put_change("cr-7", &body).await.unwrap();
    assert_eq!(d.attempts, 1);
}

#[test]
fn verify_ssl_false_and_plain_http_are_refused_outside_dev() {
    use mlcore_config::{ConfigCode, Environment, MapEnv};
    let root = mlcore_testkit::workspace_root().join("configs");
    let tmp = tempfile::tempdir().unwrap();
    mlcore_testkit::copy_tree(&root, &tmp.path().join("configs")).unwrap();
    let api = "config_api: {base_url: \"http://config.internal/api\", token: \"$MLCORE_CONFIG_API_TOKEN\", timeout_seconds: 5, retries: 3, backoff_ms: 200, verify_ssl: false, ca_file: null}\n";
    for env in ["stg", "dev"] {
        let file = tmp.path().join(format!("configs/envs/{env}/control.yaml"));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        std::fs::write(&file, format!("{text}{api}")).unwrap();
    }
    let vars = MapEnv::new()
        .with("MLCORE_CONFIG_API_TOKEN", "a-token-long-enough-for-stg")
        .with("MLCORE_REDIS_URL", "redis://x")
        .with("MLCORE_PG_DSN", "postgres://x");
    let err = mlcore_config::load_for(
        &tmp.path().join("configs"),
        Environment::Stg,
        &vars,
        mlcore_config::Process::Offline,
    )
    .unwrap_err();
    let keys: Vec<&str> = err
        .problems
        .iter()
        .filter(|p| p.code == ConfigCode::ValueInvalid)
        .map(|p| p.key.as_str())
        .collect();
    assert!(
        keys.contains(&"config_api.verify_ssl") && keys.contains(&"config_api.base_url"),
        "{err}"
    );
    // In dev both are allowed.
    let dev = mlcore_config::load_for(
        &tmp.path().join("configs"),
        Environment::Dev,
        &vars,
        mlcore_config::Process::Offline,
    )
    .unwrap();
    assert!(!dev.control.config_api.unwrap().verify_ssl);
}

/// The control plane mirrors every state change of a request to the
/// configured Config API (in the background, the workflow not waiting):
/// the stub sees `draft`, then `pr_created`, with the token, each body
/// carrying `updated_at_ms` so the newest can be kept.
#[test]
fn the_control_plane_mirrors_every_state_change() {
    use mlcore_config::{Environment, MapEnv};
    use mlcore_control::{api, config_changes, db};
    use mlcore_testkit::{self as testutil, RedisNamespace};
    let db = testutil::TestDatabase::create("mlcore_config_api");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ca, cert, key) = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca).unwrap();
        let (addr, seen) = stub(&cert, &key, vec![(200, Duration::ZERO)]).await;
        let vars = MapEnv::new()
            .with("MLCORE_REDIS_URL", &testutil::redis_url())
            .with("MLCORE_PG_DSN", &db.dsn);
        let mut cfg = mlcore_config::load(
            &testutil::workspace_root().join("configs"),
            Environment::Dev,
            &vars,
        )
        .unwrap();
        let ns = RedisNamespace::new();
        cfg.redis.namespace = ns.ns.clone();
        cfg.storage.worm_root = dir.path().join("worm");
        let live = dir.path().join("live/configs");
        testutil::copy_tree(&testutil::workspace_root().join("configs"), &live).unwrap();
        cfg.control.config_changes.repository = dir.path().join("config-repo");
        cfg.control.config_changes.deploy_dir = live;
        cfg.control.config_api = Some(ConfigApiConfig {
            base_url: format!("https://localhost:{}/api", addr.port()),
            token: Secret::literal("mirror-token"),
            timeout_seconds: 2.0,
            retries: 2,
            backoff_ms: 20,
            verify_ssl: true,
            ca_file: Some(ca_file),
        });
        db::migrate(&cfg.database).await.unwrap();
        let state = api::state(cfg).await.unwrap();
        let edit = config_changes::Edit {
            file: "base/core_policy.yaml".into(),
            content: None,
            key: Some("risk.max_gross".into()),
            value: Some("0.9".into()),
            delete: false,
        };
        let cr = config_changes::create(&state.services, "dev-operator", "tighter", vec![edit])
            .await
            .unwrap();
        config_changes::submit(&state.services, "dev-operator", &cr.id)
            .await
            .unwrap();
        let mirrored = testutil::wait_until(Duration::from_secs(10), || seen.lock().unwrap().seen.len() >= 2);
        assert!(
            mirrored.is_some(),
            "the stub saw {:?}",
            seen.lock().unwrap().seen.len()
        );
        {
            let s = seen.lock().unwrap();
            let mut states: Vec<(u64, String)> = s
                .seen
                .iter()
                .map(|(id, auth, body, _)| {
                    assert_eq!(id, &cr.id);
                    assert_eq!(auth.as_deref(), Some("Bearer mirror-token"));
                    (
                        body["updated_at_ms"].as_u64().unwrap(),
                        body["state"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            states.sort();
            let states: Vec<&str> = states.iter().map(|(_, s)| s.as_str()).collect();
            assert_eq!(states, ["draft", "pr_created"], "in order of updated_at_ms");
        }
        state.services.pool.close().await;
    });
}
