//! The hot path allocates nothing per event: a counting global allocator
//! counts allocations made on this thread while the daemon's own ingress,
//! worker and publisher code decide (driven step by step on this thread,
//! against the real Redis and ONNX Runtime). ONNX Runtime's run on a full
//! batch and publishing through the pipe are asserted on their own too,
//! and so are the side ↔ hot hand-offs of histograms and models
//! (`mailbox`).

#![allow(unsafe_code)] // a counting allocator must implement GlobalAlloc
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use mlcore_config::ScoringBackend;
use mlcore_daemon::job::Job;
use mlcore_daemon::wire::{self, Frame};
use mlcore_market::Quote;
use mlcore_research::onnx::export::ToOnnx;
use mlcore_research::synth::{Generator, SynthSpec};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Where the first counted allocation came from, for the failure message.
static FIRST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

/// Counts an allocation made while measuring; the first one's stack is
/// kept (captured with measuring off: the capture allocates itself).
fn count() {
    if MEASURING.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        MEASURING.with(|m| m.set(false));
        if let Ok(mut first) = FIRST.lock() {
            if first.is_none() {
                *first = Some(std::backtrace::Backtrace::force_capture().to_string());
            }
        }
        MEASURING.with(|m| m.set(true));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn measured(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

/// The daemon's own hot-path code, driven one decision at a time on this
/// thread: `Ingress::feed` (frames decoded, quotes into the features,
/// triggers into pooled jobs), `Worker::step` (ONNX Runtime on the full
/// batch, the decision crate) and `Publisher::step` (mode, seq,
/// valid_until, the guard through the publisher's own pipe, against the
/// real Redis), with a real signed model. After a warm-up that lets every
/// buffer grow, a whole decision — quotes to accepted signals — allocates
/// nothing: an allocation added to any of them fails this test.
#[test]
fn a_decision_through_the_daemons_hot_path_allocates_nothing() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use mlcore_config::{self as config, Environment, MapEnv};
    use mlcore_contract::{Guard, Keys, OpsMode};
    use mlcore_daemon::ingress::{Ingress, IngressParts};
    use mlcore_daemon::job::ModelMeta;
    use mlcore_daemon::mailbox::Mailbox;
    use mlcore_daemon::ops::OpsTable;
    use mlcore_daemon::publisher::{Publisher, PublisherParts};
    use mlcore_daemon::stats::{Counters, Histograms, Outcome};
    use mlcore_daemon::worker::{ModelUpdate, Worker, WorkerParts};
    use mlcore_decision::universe::Universe;
    use mlcore_models::artifact::{self, SecretKeyFile, TrustStore, VerifyContext};
    use mlcore_models::runtime;
    use mlcore_models::scoring::ModelScorer;
    use mlcore_testkit::{self as testutil, RedisNamespace};

    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let vars = MapEnv::new().with("MLCORE_REDIS_URL", &testutil::redis_url());
    let mut cfg = config::load_for(
        &testutil::workspace_root().join("configs"),
        Environment::Dev,
        &vars,
        config::Process::Daemon,
    )
    .unwrap();
    cfg.redis.namespace = ns.ns.clone();
    // Nothing may depend on this machine's speed: a busy test run must not
    // expire a decision before it is sent, nor time out a reply (a
    // reconnect would allocate, rightly, and fail the count).
    cfg.core_policy.signal.ttl_ms = 600_000;
    cfg.redis.command_timeout_ms = 30_000;
    let universe = Arc::new(Universe::from_config(&cfg));
    let strategy = &universe.strategies[0];
    let n = strategy.symbols.len();

    // Redis: the guard loaded, the strategy active (in Redis and in the
    // daemon's table, which the ops watcher would fill).
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let guard = Guard::new(Keys::new(&ns.ns), cfg.redis.stream_maxlen);
    testutil::set_mode(&guard, &mut conn, &strategy.id, OpsMode::Active);
    let ops = Arc::new(OpsTable::new(universe.strategies.len()));
    ops.set(0, OpsMode::Active, 1);

    // A real signed model, verified, scored by a worker's sessions.
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let files = testutil::logistic_artifact(&key, &strategy.id, 1, 1.0, testutil::now_ms());
    let trust = TrustStore::from_config(&cfg.trust).unwrap();
    let verified = artifact::verify(files, &VerifyContext::new(&trust, testutil::now_ms())).unwrap();
    // The native backend, as dev's daemon.yaml asks: both heads compiled
    // and checked against ONNX Runtime on the artifact's validation rows.
    let mut scorer = ModelScorer::new(&verified, n, ScoringBackend::Native).unwrap();
    for (head, backend) in scorer.backends() {
        assert!(
            matches!(backend, mlcore_models::scoring::HeadBackend::Native { .. }),
            "{head}: {backend:?}"
        );
    }
    scorer.warm_up(n, 5).unwrap();
    let meta = Arc::new(ModelMeta {
        model_id: verified.manifest.model_id.clone(),
        version: verified.manifest.version,
        manifest_sha256: String::new(),
        theta1: 0.501,
        theta2: 0.99,
    });

    // The wiring `run::start` does, minus threads.
    let counters = Arc::new(Counters::default());
    let hists = Histograms::new(8);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (decisions_tx, decisions_rx) = crossbeam_channel::bounded(8);
    let (publish_tx, publish_rx) = crossbeam_channel::bounded(8);
    let (pool_tx, pool_rx) = crossbeam_channel::bounded(8);
    for _ in 0..8 {
        pool_tx.send(Box::new(Job::new(0, &strategy.params))).unwrap();
    }
    let live = Arc::new(mlcore_daemon::live::Live::new(Arc::clone(&universe), 1000));
    let mut ingress = Ingress::new(IngressParts {
        listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        universe: Arc::clone(&universe),
        live: Arc::clone(&live),
        pools: vec![pool_rx],
        pool_returns: vec![pool_tx.clone()],
        decisions: decisions_tx,
        counters: Arc::clone(&counters),
        hists: hists.clone(),
        max_connections: 1,
        max_frame: 4096,
        timer: false,
        shutdown: Arc::clone(&shutdown),
    })
    .unwrap();
    let models: Arc<[Mailbox<ModelUpdate>]> = std::iter::once(Mailbox::new()).collect();
    assert!(models[0]
        .put(Box::new(ModelUpdate {
            scorer: Box::new(scorer),
            meta,
        }))
        .is_none());
    let (retired_tx, _retired_rx) = crossbeam_channel::bounded(4);
    let mut worker = Worker::new(WorkerParts {
        jobs: decisions_rx,
        models,
        retired: retired_tx,
        publish: publish_tx,
        pool_returns: vec![pool_tx.clone()],
        universe: Arc::clone(&universe),
        counters: Arc::clone(&counters),
        hists: hists.clone(),
        shutdown: Arc::clone(&shutdown),
    });
    let mut publisher = Publisher::new(PublisherParts {
        jobs: publish_rx,
        pool_returns: vec![pool_tx],
        redis: cfg.redis.clone(),
        guard,
        universe: Arc::clone(&universe),
        live: Arc::clone(&live),
        ops,
        counters: Arc::clone(&counters),
        hists,
        shutdown,
    });

    // The market as frames: quotes of every symbol, a trigger after every
    // 40 rounds of quotes (timestamps of now, so nothing is expired).
    let spec = SynthSpec {
        seed: 1,
        symbols: n,
        start_day: 20_458,
        days: 1,
        interval_ms: 5_000,
        effect: 1.0,
    };
    let quotes: Vec<Quote> = Generator::new(spec).unwrap().day_merged(20_458);
    let ids: Vec<u32> = cfg.universe.strategies[0].symbols.iter().map(|s| s.id).collect();
    let t0 = i64::try_from(testutil::now_ms()).unwrap() * 1_000_000 - 3_600_000_000_000;
    let mut decisions: Vec<Vec<u8>> = Vec::new();
    for (k, chunk) in quotes.chunks(n * 40).take(60).enumerate() {
        let mut bytes = Vec::new();
        let mut last = 0;
        for (j, q) in chunk.iter().enumerate() {
            last = t0 + (k * n * 40 + j) as i64 * 1_000_000;
            let f = Frame::Quote {
                ts_ns: last,
                symbol_id: ids[usize::from(q.symbol)],
                bid: q.bid,
                ask: q.ask,
                bid_size: q.bid_size,
                ask_size: q.ask_size,
            };
            wire::encode(&f, &mut bytes);
        }
        let now = i64::try_from(testutil::now_ms()).unwrap() * 1_000_000;
        wire::encode(
            &Frame::Trigger {
                ts_ns: now.max(last),
                strategy: 0,
            },
            &mut bytes,
        );
        decisions.push(bytes);
    }

    // One decision, quotes to accepted signals.
    let mut decide = |bytes: &[u8]| {
        assert_eq!(ingress.feed(bytes).unwrap(), bytes.len());
        assert!(worker.step(Duration::from_secs(1)));
        let before = counters.outcomes_of(Outcome::Accepted);
        let started = Instant::now();
        while counters.outcomes_of(Outcome::Accepted) == before {
            assert!(publisher.step());
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never accepted: {counters:?}"
            );
        }
    };
    let (warm, measured_part) = decisions.split_at(20);
    for d in warm {
        decide(d);
    }
    let allocs = measured(|| {
        for d in measured_part {
            decide(d);
        }
    });
    let n_decisions = counters.outcomes_of(Outcome::Accepted);
    assert_eq!(n_decisions, 60, "{counters:?}");
    assert!(counters.signals_accepted.load(Ordering::Relaxed) >= 60 * n as u64);
    assert_eq!(
        allocs, 0,
        "40 decisions through ingress, worker and publisher allocated {allocs} times ({counters:?}); the first at:\n{}",
        FIRST.lock().map(|f| f.clone().unwrap_or_default()).unwrap_or_default()
    );
}

/// A model that fails to score (here: sessions built for fewer rows than
/// the universe has) is counted as a scoring failure, not as "no model".
#[test]
fn a_scoring_failure_is_counted_as_such() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    use mlcore_config::{self as config, Environment, MapEnv};
    use mlcore_daemon::job::ModelMeta;
    use mlcore_daemon::mailbox::Mailbox;
    use mlcore_daemon::stats::{Counters, Histograms};
    use mlcore_daemon::worker::{ModelUpdate, Worker, WorkerParts};
    use mlcore_decision::universe::Universe;
    use mlcore_models::artifact::{self, SecretKeyFile, TrustStore, VerifyContext};
    use mlcore_models::runtime;
    use mlcore_models::scoring::ModelScorer;
    use mlcore_testkit as testutil;

    runtime::init(&testutil::ort_library()).unwrap();
    let vars = MapEnv::new().with("MLCORE_REDIS_URL", &testutil::redis_url());
    let cfg = config::load_for(
        &testutil::workspace_root().join("configs"),
        Environment::Dev,
        &vars,
        config::Process::Daemon,
    )
    .unwrap();
    let universe = Arc::new(Universe::from_config(&cfg));
    let strategy = &universe.strategies[0];
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let files = testutil::logistic_artifact(&key, &strategy.id, 1, 1.0, testutil::now_ms());
    let trust = TrustStore::from_config(&cfg.trust).unwrap();
    let verified = artifact::verify(files, &VerifyContext::new(&trust, testutil::now_ms())).unwrap();
    let models: Arc<[Mailbox<ModelUpdate>]> = std::iter::once(Mailbox::new()).collect();
    let update = ModelUpdate {
        scorer: Box::new(ModelScorer::new(&verified, 2, ScoringBackend::Onnx).unwrap()),
        meta: Arc::new(ModelMeta {
            model_id: "m".into(),
            version: 1,
            manifest_sha256: String::new(),
            theta1: 0.55,
            theta2: 0.6,
        }),
    };
    assert!(models[0].put(Box::new(update)).is_none());
    let counters = Arc::new(Counters::default());
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(2);
    let (publish_tx, publish_rx) = crossbeam_channel::bounded(2);
    let (pool_tx, pool_rx) = crossbeam_channel::bounded(2);
    let (retired_tx, _retired_rx) = crossbeam_channel::bounded(2);
    let mut worker = Worker::new(WorkerParts {
        jobs: jobs_rx,
        models,
        retired: retired_tx,
        publish: publish_tx,
        pool_returns: vec![pool_tx],
        universe: Arc::clone(&universe),
        counters: Arc::clone(&counters),
        hists: Histograms::new(2),
        shutdown: Arc::new(AtomicBool::new(false)),
    });
    jobs_tx.send(Box::new(Job::new(0, &strategy.params))).unwrap();
    assert!(worker.step(Duration::from_secs(1)));
    assert_eq!(counters.decisions_scoring_failed.load(Ordering::Relaxed), 1);
    assert_eq!(counters.decisions_without_model.load(Ordering::Relaxed), 0);
    assert!(publish_rx.try_recv().is_err(), "nothing decided");
    assert!(pool_rx.try_recv().is_ok(), "the job went back to its pool");
}

/// A head's run on a full batch, as the worker scores the universe:
/// features copied into the scorer's input tensor, passed by position, and
/// ONNX Runtime writing into a preallocated output. Asserted: no
/// allocation. (A plain `session.run` with a named input and an output ORT
/// allocates makes 4; reported for comparison.)
#[test]
fn a_full_batch_onnx_runtime_run_allocates_nothing() {
    use mlcore_models::runtime;
    use mlcore_models::scoring::HeadScorer;
    use mlcore_testkit as testutil;
    runtime::init(&testutil::ort_library()).unwrap();
    let model = testutil::logistic_head(1.0).to_onnx("ai1").unwrap();
    let spec = testutil::logistic_head_spec("ai1.onnx");
    assert_eq!(spec.n_features, 15);
    let mut head = HeadScorer::new("ai1", &model, &spec, 32).unwrap();
    let x: Vec<f32> = (0..32 * 15).map(|i| (i % 7) as f32 * 0.1).collect();
    let first = head.score(&x, 32).unwrap().to_vec();
    let per_run = measured(|| {
        for _ in 0..100 {
            std::hint::black_box(head.score(&x, 32).unwrap()[0]);
        }
    }) / 100;
    eprintln!("a full-batch head run allocates {per_run} times (32 rows)");
    assert_eq!(per_run, 0);
    // Same values as the plain path (a batch of another size takes it).
    let plain: Vec<f32> = (0..32)
        .flat_map(|r| head.score(&x[r * 15..(r + 1) * 15], 1).unwrap().to_vec())
        .collect();
    assert_eq!(first, plain);
    assert!(first.iter().all(|p| (0.0..=1.0).contains(p)) && first[0] != first[1]);

    let mut session = runtime::hot_path_session(&model).unwrap();
    let mut run = || {
        let input = ort::value::TensorRef::from_array_view(([32usize, 15], &x[..])).unwrap();
        let out = session.run(ort::inputs!["x" => input]).unwrap();
        std::hint::black_box(out["prob"].try_extract_tensor::<f32>().unwrap().1[0]);
    };
    run();
    let plain_per_run = measured(|| {
        for _ in 0..100 {
            run();
        }
    }) / 100;
    eprintln!("a plain session.run allocates {plain_per_run} times per 32-row run");
}

/// `trees` trees of depth 5 over the 15 features, leaves and thresholds
/// varied by `seed`.
fn tree_head(trees: usize, seed: usize) -> mlcore_models::native::TreeEnsembleHead {
    use mlcore_models::native::{Platt, TreeEnsembleHead, TreeNode};
    let f = mlcore_features::N_FEATURES;
    fn grow(nodes: &mut Vec<TreeNode>, t: usize, depth: usize, f: usize) -> usize {
        let me = nodes.len();
        if depth == 0 {
            nodes.push(TreeNode::Leaf(((me * 7 + t * 3) % 11) as f32 * 0.01 - 0.05));
            return me;
        }
        nodes.push(TreeNode::Leaf(0.0));
        let left = grow(nodes, t, depth - 1, f);
        let right = grow(nodes, t, depth - 1, f);
        nodes[me] = TreeNode::Split {
            feature: (me + t) % f,
            threshold: ((me * 13 + t) % 9) as f32 * 0.1 - 0.4,
            left,
            right,
        };
        me
    }
    TreeEnsembleHead {
        trees: (0..trees)
            .map(|t| {
                let mut nodes = Vec::new();
                grow(&mut nodes, t + seed, 5, f);
                nodes
            })
            .collect(),
        base: 0.1,
        platt: Platt { a: 1.2, b: -0.05 },
        n_features: f,
    }
}

/// 256 varied rows of the feature vector.
fn varied_rows() -> Vec<f32> {
    (0..256 * mlcore_features::N_FEATURES)
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 2.0)
        .collect()
}

/// A native tree ensemble scoring 32 rows. Asserted: no allocation, and
/// the values of the ONNX Runtime session it was checked against.
#[test]
fn a_native_tree_head_allocates_nothing() {
    use mlcore_models::native::NativeHead;
    use mlcore_models::runtime;
    use mlcore_models::scoring::{HeadBackend, HeadScorer};
    use mlcore_testkit as testutil;
    runtime::init(&testutil::ort_library()).unwrap();
    let f = mlcore_features::N_FEATURES;
    let head = tree_head(40, 0);
    let model = head.to_onnx("ai1").unwrap();
    let spec = testutil::logistic_head_spec("ai1.onnx");
    let rows = varied_rows();
    let mut ort = HeadScorer::new("ai1", &model, &spec, 32).unwrap();
    let mut native = HeadScorer::new("ai1", &model, &spec, 32).unwrap();
    native.try_native(Ok(NativeHead::Trees(head)), Some(&rows), &mut || {});
    assert!(
        matches!(native.backend(), HeadBackend::Native { rows: 256, .. }),
        "{:?}",
        native.backend()
    );
    let x = &rows[32 * f..64 * f];
    let want = ort.score(x, 32).unwrap().to_vec();
    let got = native.score(x, 32).unwrap().to_vec();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6, "{a} against ONNX Runtime's {b}");
    }
    let per_run = measured(|| {
        for k in 0..100 {
            let x = &rows[(k % 8) * 32 * f..(k % 8 + 1) * 32 * f];
            std::hint::black_box(native.score(x, 32).unwrap()[0]);
        }
    }) / 100;
    assert_eq!(per_run, 0, "a native 32-row run allocated");
}

/// A model of three native tree heads, as the daemon's worker scores it:
/// the rows transposed once for the three. Asserted: no allocation, and
/// each head's probabilities to the bit as that head scores the rows alone.
#[test]
fn a_model_of_native_tree_heads_allocates_nothing() {
    use mlcore_models::native::NativeHead;
    use mlcore_models::runtime;
    use mlcore_models::scoring::{HeadBackend, HeadScorer, ModelScorer};
    use mlcore_testkit as testutil;
    runtime::init(&testutil::ort_library()).unwrap();
    let f = mlcore_features::N_FEATURES;
    let heads = [tree_head(40, 0), tree_head(20, 5), tree_head(30, 9)];
    let model = testutil::tree_artifact([&heads[0], &heads[1], &heads[2]]);
    let mut scorer = ModelScorer::new(&model, 32, ScoringBackend::Native).unwrap();
    for (head, backend) in scorer.backends() {
        assert!(
            matches!(backend, HeadBackend::Native { .. }),
            "{head}: {backend:?}"
        );
    }
    // Each head alone, natively, on the per-head path.
    let rows = varied_rows();
    let mut alone: Vec<HeadScorer> = ["ai1", "ai2", "ai3"]
        .iter()
        .zip(&heads)
        .map(|(name, head)| {
            let spec = &model.manifest.heads[*name];
            let onnx = &model.files.0[&format!("{name}.onnx")];
            let mut h = HeadScorer::new(name, onnx, spec, 32).unwrap();
            h.try_native(Ok(NativeHead::Trees(head.clone())), Some(&rows), &mut || {});
            h
        })
        .collect();
    let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
    // Batches of 32, then shorter ones over the lanes they left behind.
    for (k, n) in [32, 32, 5, 31, 1, 32].into_iter().enumerate() {
        let x = &rows[k * 32 * f..(k * 32 + n) * f];
        let scores = scorer.score(x, n).unwrap();
        let together = [
            scores.ai1.to_vec(),
            scores.ai2.to_vec(),
            scores.ai3.unwrap().to_vec(),
        ];
        for (h, got) in alone.iter_mut().zip(&together) {
            let want = h.score(x, n).unwrap();
            assert_eq!(bits(got), bits(want), "{n} rows");
        }
    }
    let per_run = measured(|| {
        for k in 0..100 {
            let x = &rows[(k % 8) * 32 * f..(k % 8 + 1) * 32 * f];
            std::hint::black_box(scorer.score(x, 32).unwrap().ai1[0]);
        }
    }) / 100;
    assert_eq!(per_run, 0, "a 32-row run of three native tree heads allocated");
}

/// Publishing, against the real guard on the test Redis in a fresh
/// namespace, rounds of 4 decisions folded into one guard call as the
/// daemon's are under load. Through the publisher's own connection
/// (`PublishPipe`, two rounds in flight) a decision allocates nothing once
/// its buffers have grown: asserted. Through the Redis client (the path a
/// Redis Cluster takes) what is left is the client's reply values (an array
/// and its `ok` string per decision; the folded call's reply array and the
/// list of replies per pipeline) and the outcome list: reported, and held
/// to that.
#[test]
fn publishing_a_decision_allocates_nothing_through_the_pipe() {
    publishing_allocates_nothing(mlcore_contract::guard::ContractVersion::V2);
}

/// The same through contract v3's encoding (symbols joined, binary records).
#[test]
fn publishing_a_v3_decision_allocates_nothing_through_the_pipe() {
    publishing_allocates_nothing(mlcore_contract::guard::ContractVersion::V3);
}

#[allow(clippy::print_stderr)] // a test's helper: it reports what it measured
fn publishing_allocates_nothing(contract: mlcore_contract::guard::ContractVersion) {
    use std::time::Duration;

    use mlcore_contract::{
        Guard, Keys, ModeChange, OpsMode, PublishBuffers, PublishOutcome, Side, Signal, SignalBatch,
    };
    use mlcore_daemon::redis_io::{PublishPipe, MAX_IN_FLIGHT};
    use mlcore_testkit::{self as testutil, RedisNamespace};

    let ns = RedisNamespace::new();
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let guard = Guard::new(Keys::new(&ns.ns), 100).with_contract(contract);
    let change = ModeChange {
        strategy: "fx",
        expected_version: 0,
        mode: OpsMode::Active,
        reason: "test",
        actor: "tester",
        request_id: "r",
    };
    guard.set_mode(&mut conn, &change).unwrap();
    let now = testutil::now_ms();
    let mut batches: Vec<SignalBatch> = (0..4)
        .map(|_| SignalBatch {
            strategy: "fx".into(),
            seq: 0,
            generated_at_ms: now,
            valid_until_ms: now + 600_000,
            model_id: "fx-v1".into(),
            model_version: 1,
            signals: (0..32)
                .map(|i| Signal {
                    symbol: format!("SYM{i:02}"),
                    side: Side::Long,
                    weight: 0.012_345_678_901_234_5 + f64::from(i),
                    qty: 12_000.0,
                    return_prob: 0.512_345_678_901_234_5,
                    risk_score: 0.25,
                })
                .collect(),
        })
        .collect();
    let mut seq = 0;
    let mut renumber = |batches: &mut Vec<SignalBatch>| {
        for b in batches.iter_mut() {
            seq += 1;
            b.seq = seq;
        }
    };
    let accepted = |o: &Result<PublishOutcome, _>| matches!(o, Ok(PublishOutcome::Accepted { count: 32 }));
    let rounds = 20;

    let mut pipe = PublishPipe::connect_url(
        &testutil::redis_url(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .unwrap()
    .unwrap();
    let mut piped = |batches: &mut Vec<SignalBatch>, pipe: &mut PublishPipe| {
        renumber(batches);
        if pipe.in_flight() == MAX_IN_FLIGHT {
            assert!(pipe.recv().unwrap().iter().all(accepted));
        }
        pipe.send(&guard, batches).unwrap();
    };
    // Warm-up: every round slot sent and read once.
    for _ in 0..2 * MAX_IN_FLIGHT {
        piped(&mut batches, &mut pipe);
    }
    let allocs = measured(|| {
        for _ in 0..rounds {
            piped(&mut batches, &mut pipe);
        }
    });
    while pipe.in_flight() > 0 {
        assert!(pipe.recv().unwrap().iter().all(accepted));
    }
    let per_decision = allocs as f64 / f64::from(rounds * 4);
    eprintln!("publishing through the pipe allocates {per_decision:.2} times per 32-signal decision (rounds of 4, 2 in flight)");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations in {rounds} rounds of 4 decisions"
    );

    let mut bufs = PublishBuffers::default();
    let mut client = |batches: &mut Vec<SignalBatch>, bufs: &mut PublishBuffers| {
        renumber(batches);
        let outcomes = guard.publish_many_with(&mut conn, batches, bufs).unwrap();
        assert!(outcomes.iter().all(accepted), "{outcomes:?}");
    };
    for _ in 0..3 {
        client(&mut batches, &mut bufs);
    }
    let allocs = measured(|| {
        for _ in 0..rounds {
            client(&mut batches, &mut bufs);
        }
    });
    let per_decision = allocs as f64 / f64::from(rounds * 4);
    eprintln!("publishing through the Redis client allocates {per_decision:.2} times per 32-signal decision (pipelines of 4)");
    // 2 reply values per decision; 4 lists per pipeline (the replies as read
    // and as results, the folded call's reply array, the outcomes).
    assert!(per_decision <= 3.0, "{per_decision} allocations per decision");
}

/// A hot thread's histograms go to the aggregator and come back cleared
/// through the thread's mailbox, and a new model is taken from the worker's
/// mailbox: no allocation on the hot thread, and every sample recorded
/// reaches the merged histogram.
#[test]
fn histogram_and_model_hand_offs_allocate_nothing_and_lose_no_sample() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    use mlcore_daemon::mailbox::Mailbox;
    use mlcore_daemon::stats::{Histograms, Stage};

    let hists = Histograms::new(1);
    let mut local = hists.local(Stage::Inference);
    let stop = Arc::new(AtomicBool::new(false));
    let aggregator = {
        let (hists, stop) = (hists.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                hists.drain();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let models: Mailbox<Vec<u8>> = Mailbox::with(Box::new(vec![1, 2, 3]));
    let mut taken = None;
    let mut recorded = 0u64;
    let allocs = measured(|| {
        taken = models.take();
        // Twenty hand-overs, each after the aggregator had time to put the
        // other histogram back.
        for _ in 0..20 {
            for us in 1..=50u64 {
                local.record(Duration::from_micros(us));
                recorded += 1;
            }
            local.flush();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert_eq!(
        allocs, 0,
        "the hand-offs allocated {allocs} times on the hot thread"
    );
    assert_eq!(taken.as_deref(), Some(&vec![1, 2, 3]));
    // The histograms went round: each flush found the other one back, so
    // everything but (at most) the last round is merged already.
    std::thread::sleep(Duration::from_millis(20));
    let merged_so_far = hists.merged.lock().unwrap().stages[Stage::Inference as usize].len();
    assert!(
        merged_so_far >= recorded - 50,
        "{merged_so_far} of {recorded} merged"
    );
    // Whatever the last flush could not hand over goes with the next one.
    std::thread::sleep(Duration::from_millis(20));
    local.flush();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    aggregator.join().unwrap();
    hists.drain();
    let merged = hists.merged.lock().unwrap().stages[Stage::Inference as usize].len();
    assert_eq!(merged, recorded, "every sample reached the merged histogram");
}
