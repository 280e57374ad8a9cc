//! Wiring: builds the queues and pools, starts the pinned hot threads
//! (ingress, workers, publisher) and the side runtime — a tokio runtime
//! whose threads are pinned to a side core — running the HTTP endpoints
//! (async) and the loader + heartbeat + histogram merge and ops watcher
//! loops (blocking tasks: sync Redis pub/sub, file reads, ONNX session
//! builds), and stops them on request.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlcore_config::{AppConfig, DecisionMode};
use mlcore_contract::{Guard, Heartbeat, Keys, RedisConn};
use mlcore_models::artifact::{SharedTrust, TrustStore};
use mlcore_models::runtime;
use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
    ThreadPriorityValue, ThreadSchedulePolicy,
};

use crate::clock::now_ms;
use crate::http::{self, Observed};
use crate::ingress::{Ingress, IngressParts};
use crate::job::Job;
use crate::loader::{Loader, RegistryLink};
use crate::mailbox::Mailbox;
use crate::ops::{self, OpsTable};
use crate::publisher::{self, PublisherParts};
use crate::redis_io::tuning;
use crate::stats::{Counters, Histograms};
use crate::worker::{self, ModelUpdate, WorkerParts};
use mlcore_decision::universe::Universe;

use crate::live::{ConfigSource, ConfigWatch, Live};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// ONNX Runtime.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// trust.yaml is unusable.
    #[error(transparent)]
    Trust(#[from] mlcore_models::artifact::trust::TrustConfigError),
    /// The loader's persisted state is unusable.
    #[error(transparent)]
    Loader(#[from] crate::loader::LoaderError),
    /// The side runtime could not be built.
    #[error("cannot start the side runtime: {0}")]
    SideRuntime(#[source] std::io::Error),
    /// Thread start failed.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A running daemon.
#[derive(Debug)]
pub struct Running {
    /// Set to stop every thread.
    pub shutdown: Arc<AtomicBool>,
    /// Where the feed connects.
    pub ingress_addr: std::net::SocketAddr,
    /// Where `/metrics` is served.
    pub http_addr: std::net::SocketAddr,
    threads: Vec<JoinHandle<()>>,
    side: tokio::runtime::Runtime,
    observed: Observed,
    link: RegistryLink,
}

impl Running {
    /// Stops every thread and waits for them.
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.wait();
    }

    /// Blocks until the hot threads exit (they do when `shutdown` is set:
    /// ingress stops accepting, workers finish their decision, the
    /// publisher reads the replies of what it sent), writes the final
    /// heartbeat (`stopped`, with the final counters), then winds the side
    /// runtime down (its loops watch the same flag).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
        // The side loops first: the heartbeat loop could otherwise write
        // `ok` over `stopped`.
        self.side.shutdown_timeout(Duration::from_secs(5));
        let hb = heartbeat(&self.observed, &self.link.instance, "stopped");
        let written = RedisConn::connect(&(&self.link.redis).into())
            .map_err(mlcore_contract::ContractError::from)
            .and_then(|mut conn| hb.write(&mut conn, &self.link.keys, self.link.redis.heartbeat.ttl_ms));
        if let Err(e) = written {
            tracing::warn!(error = %e, "final heartbeat not written");
        }
        tracing::info!(
            decisions = hb.decisions,
            signals_accepted = hb.signals_accepted,
            "daemon stopped"
        );
    }
}

/// What the daemon reports about itself now, with `status`.
fn heartbeat(observed: &Observed, instance: &str, status: &str) -> Heartbeat {
    let c = &observed.counters;
    let p99 = observed
        .hists
        .merged
        .lock()
        .map(|m| m.stages[crate::stats::Stage::TriggerToAck as usize].value_at_quantile(0.99) / 1_000)
        .unwrap_or(0);
    Heartbeat {
        instance: instance.to_owned(),
        status: status.to_owned(),
        at_ms: now_ms(),
        last_decision_ms: c.last_decision_ms.load(Ordering::Relaxed),
        p99_us: p99,
        decisions: c.decisions.load(Ordering::Relaxed),
        signals_accepted: c.signals_accepted.load(Ordering::Relaxed),
        decisions_dropped: c.decisions_dropped.load(Ordering::Relaxed),
        refused_artifacts: c.refused_artifacts.load(Ordering::Relaxed),
        models: observed
            .active
            .load()
            .iter()
            .map(|(k, m)| (k.clone(), format!("{}@{}", m.model_id, m.version)))
            .collect::<BTreeMap<_, _>>(),
        modes: observed
            .universe
            .strategies
            .iter()
            .enumerate()
            .map(|(s, x)| (x.id.to_string(), observed.ops.mode(s).to_string()))
            .collect(),
        refusals: BTreeMap::clone(&observed.refusals.load()),
        config: mlcore_contract::heartbeat::ConfigReport::clone(&observed.config.load()),
    }
}

/// Pins the calling thread to `core`, when given.
fn pin(core: Option<usize>) {
    if let Some(c) = core {
        let ids = core_affinity::get_core_ids().unwrap_or_default();
        match ids.iter().find(|id| id.id == c) {
            Some(id) if core_affinity::set_for_current(*id) => {}
            _ => tracing::warn!(core = c, "could not pin thread"),
        }
    }
}

/// Puts the calling hot thread under `SCHED_FIFO` at `priority` (0: leaves
/// it alone). Refused (no `CAP_SYS_NICE`) or not, the daemon runs; the log
/// says which.
fn realtime(name: &str, priority: u8) {
    if priority == 0 {
        return;
    }
    let set = ThreadPriorityValue::try_from(priority).and_then(|p| {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(p),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .map_err(|e| format!("{e:?}"))
    });
    match set {
        Ok(()) => tracing::info!(thread = name, priority, "hot thread runs SCHED_FIFO"),
        Err(e) => tracing::warn!(
            thread = name,
            priority,
            error = %e,
            "hot thread could not get real-time priority (needs CAP_SYS_NICE); it runs with normal scheduling"
        ),
    }
}

/// Starts a hot thread: named, pinned to `core`, at `priority`.
fn spawn(
    name: &str,
    core: Option<usize>,
    priority: u8,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        pin(core);
        realtime(std::thread::current().name().unwrap_or("hot"), priority);
        f();
    })
}

/// Starts the daemon for `cfg`; with `config_source`, `trust.yaml` is re-read
/// every 10 s. Setting `shutdown` stops it (a signal handler may hold it
/// before the daemon starts, so a stop during start-up is not lost).
pub fn start(
    cfg: AppConfig,
    config_source: Option<ConfigSource>,
    shutdown: Arc<AtomicBool>,
) -> Result<Running, StartError> {
    runtime::init(&cfg.storage.onnxruntime_library)?;
    let universe = Arc::new(Universe::from_config(&cfg));
    let live = Arc::new(Live::new(
        Arc::clone(&universe),
        cfg.daemon.decision.timer_interval_ms.max(1),
    ));
    let counters = Arc::new(Counters::default());
    let threads_cfg = &cfg.daemon.threads;
    let rt = threads_cfg.realtime_priority;
    let n_workers = threads_cfg.worker_cores.len().max(1);
    let hists = Histograms::new(2 + 2 * n_workers + 2);
    // Redis settings, key layout and instance id: the loader (pointers,
    // refusal events) and the heartbeat use the same.
    let link = RegistryLink {
        redis: cfg.redis.clone(),
        keys: Keys::new(&cfg.redis.namespace),
        instance: cfg.daemon.instance_id.clone(),
    };
    let guard = Guard::new(link.keys.clone(), cfg.redis.stream_maxlen)
        .installing(cfg.redis.guard_install.may_install())
        .with_contract(cfg.redis.contract.into())
        .with_engine(cfg.redis.guard_engine.into());
    let ops_table = Arc::new(OpsTable::new(universe.strategies.len()));

    let (decisions_tx, decisions_rx) = crossbeam_channel::bounded::<Box<Job>>(cfg.daemon.queues.decisions);
    let (publish_tx, publish_rx) = crossbeam_channel::bounded::<Box<Job>>(cfg.daemon.queues.publish);
    // Every job buffer of a strategy, preallocated: a full pool is overload.
    let per_strategy = cfg.daemon.queues.decisions + cfg.daemon.queues.publish + n_workers + 2;
    let (mut pools, mut pool_returns) = (Vec::new(), Vec::new());
    for (s, strat) in universe.strategies.iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(per_strategy);
        for _ in 0..per_strategy {
            let _ = tx.try_send(Box::new(Job::new(s as u16, &strat.params)));
        }
        pools.push(rx);
        pool_returns.push(tx);
    }

    let bind = |addr: &str| {
        TcpListener::bind(addr).map_err(|source| StartError::Bind {
            addr: addr.to_owned(),
            source,
        })
    };
    let ingress_listener = bind(&cfg.daemon.ingress.listen)?;
    let http_listener = bind(&cfg.metrics.listen)?;
    let ingress_addr = ingress_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    // Side threads share the hot cores only when the machine has no others.
    let n_cores = core_affinity::get_core_ids().map_or(1, |v| v.len());
    let hot: Vec<usize> = std::iter::once(threads_cfg.ingress_core)
        .chain(threads_cfg.worker_cores.iter().copied())
        .chain(std::iter::once(threads_cfg.publisher_core))
        .collect();
    let side_core = threads_cfg
        .side_cores
        .iter()
        .copied()
        .find(|c| *c < n_cores && (!hot.contains(c) || n_cores <= hot.len()));

    // Side work: one async worker for the endpoints, blocking threads for
    // the loops; every thread of it on the side core.
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("side")
        .on_thread_start(move || pin(side_core))
        .enable_all()
        .build()
        .map_err(StartError::SideRuntime)?;

    let mut threads = Vec::new();
    // Never full, so a worker never drops a replaced model (and its ONNX
    // sessions) on its own thread: the loader empties this before every
    // scan, a scan puts at most one model per strategy into each worker's
    // mailbox, and a mailbox holds one — so between two emptyings a worker
    // retires at most two models per strategy.
    let retired_cap = (2 * threads_cfg.worker_cores.len() * universe.strategies.len()).max(64);
    let (retired_tx, retired_rx) = crossbeam_channel::bounded(retired_cap);
    let mut mailboxes = Vec::new();
    for (w, core) in threads_cfg.worker_cores.iter().enumerate() {
        let models: Arc<[Mailbox<ModelUpdate>]> =
            universe.strategies.iter().map(|_| Mailbox::new()).collect();
        mailboxes.push(Arc::clone(&models));
        let parts = WorkerParts {
            jobs: decisions_rx.clone(),
            models,
            retired: retired_tx.clone(),
            publish: publish_tx.clone(),
            pool_returns: pool_returns.clone(),
            universe: Arc::clone(&universe),
            counters: Arc::clone(&counters),
            hists: hists.clone(),
            shutdown: Arc::clone(&shutdown),
        };
        threads.push(spawn(&format!("worker-{w}"), Some(*core), rt, move || {
            worker::run(parts)
        })?);
    }

    let trust = Arc::new(SharedTrust::new(TrustStore::from_config(&cfg.trust)?));
    let mut loader = Loader::new(
        &cfg.storage.models_root,
        &cfg.daemon.instance_id,
        Arc::clone(&universe),
        trust,
        mailboxes,
        retired_rx,
        Arc::clone(&counters),
        Some(link.clone()),
        cfg.daemon.scoring,
    )?;
    // The first scan happens before the feed is accepted, so the first
    // trigger finds a warmed model when one exists.
    loader.scan();
    let active = Arc::clone(&loader.active);
    let refusals = Arc::clone(&loader.refusals);

    let ingress = Ingress::new(IngressParts {
        listener: ingress_listener,
        universe: Arc::clone(&universe),
        pools,
        pool_returns: pool_returns.clone(),
        decisions: decisions_tx,
        counters: Arc::clone(&counters),
        hists: hists.clone(),
        max_connections: cfg.daemon.ingress.max_connections as usize,
        max_frame: cfg.daemon.ingress.max_frame_bytes as usize,
        live: Arc::clone(&live),
        timer: cfg.daemon.decision.mode == DecisionMode::Timer,
        shutdown: Arc::clone(&shutdown),
    })?;
    threads.push(spawn("ingress", Some(threads_cfg.ingress_core), rt, move || {
        ingress.run()
    })?);

    let publisher_parts = PublisherParts {
        jobs: publish_rx,
        pool_returns,
        redis: cfg.redis.clone(),
        guard: guard.clone(),
        universe: Arc::clone(&universe),
        live: Arc::clone(&live),
        ops: Arc::clone(&ops_table),
        counters: Arc::clone(&counters),
        hists: hists.clone(),
        shutdown: Arc::clone(&shutdown),
    };
    threads.push(spawn(
        "publisher",
        Some(threads_cfg.publisher_core),
        rt,
        move || publisher::run(publisher_parts),
    )?);

    // A `model_activated` event wakes the loader at once.
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    // A `config_applied` event makes the side loop look at the folder at once.
    let (config_wake_tx, config_wake_rx) = crossbeam_channel::bounded::<()>(1);
    {
        let (redis, guard, table, stop) = (
            cfg.redis.clone(),
            guard.clone(),
            Arc::clone(&ops_table),
            Arc::clone(&shutdown),
        );
        let ids: Vec<String> = universe.strategies.iter().map(|s| s.id.to_string()).collect();
        side.spawn_blocking(move || {
            ops::watch(
                redis,
                guard,
                ids,
                table,
                ops::Wakes {
                    models: wake_tx,
                    config: config_wake_tx,
                },
                stop,
            )
        });
    }

    let observed = Observed {
        counters: Arc::clone(&counters),
        hists: hists.clone(),
        active: Arc::clone(&active),
        refusals,
        ops: Arc::clone(&ops_table),
        universe: Arc::clone(&universe),
        metrics: cfg.metrics.clone(),
        config: Arc::new(arc_swap::ArcSwap::from_pointee(
            mlcore_contract::heartbeat::ConfigReport {
                version: crate::live::LOCAL_VERSION.into(),
                since_ms: now_ms(),
                ..Default::default()
            },
        )),
    };
    let watch = config_source
        .as_ref()
        .map(|src| ConfigWatch::new(src.clone(), cfg.clone(), Arc::clone(&live)));
    if let Some(w) = &watch {
        observed.config.store(w.report().load_full());
    }
    {
        let (obs, stop) = (observed.clone(), Arc::clone(&shutdown));
        http_listener.set_nonblocking(true)?;
        let listener = {
            let _in_runtime = side.enter();
            tokio::net::TcpListener::from_std(http_listener)?
        };
        side.spawn(http::serve(listener, obs, stop));
    }
    {
        let (observed, link, stop) = (observed.clone(), link.clone(), Arc::clone(&shutdown));
        side.spawn_blocking(move || {
            side_loop(
                loader,
                observed,
                link,
                SideConfig {
                    source: config_source,
                    watch,
                    wake: config_wake_rx,
                },
                wake_rx,
                stop,
            )
        });
    }
    tracing::info!(ingress = %ingress_addr, http = %http_addr, workers = n_workers, "daemon started");
    Ok(Running {
        shutdown,
        ingress_addr,
        http_addr,
        threads,
        side,
        observed,
        link,
    })
}

/// Keys rotate and revocations apply without a restart: `trust.yaml` is
/// taken from the last deployed version the daemon took, or re-read from a
/// folder no change request deployed. A broken one leaves the current
/// keys in force.
fn reload_trust(config: &SideConfig, loader: &mut Loader) {
    let loaded = match (&config.watch, &config.source) {
        (Some(w), _) if w.deployed() => match w.taken() {
            Some(cfg) => Ok(cfg.trust.clone()),
            None => return,
        },
        (_, Some(src)) => mlcore_config::ConfigTree::read(&src.config_dir)
            .and_then(|tree| {
                mlcore_config::load_tree(
                    &tree,
                    &src.config_dir,
                    &src.project_root,
                    src.env,
                    &mlcore_config::ProcessEnv,
                    mlcore_config::Process::Daemon,
                )
            })
            .map(|cfg| cfg.trust),
        (_, None) => return,
    };
    match loaded {
        Ok(trust) => {
            if let Err(e) = loader.trust.reload(&trust) {
                tracing::warn!(error = %e, "trust.yaml reload refused; keeping current keys");
            }
        }
        Err(e) => tracing::warn!(error = %e, "configuration reload failed; keeping current keys"),
    }
}

/// The side loop's part in live configuration.
struct SideConfig {
    source: Option<ConfigSource>,
    watch: Option<ConfigWatch>,
    wake: crossbeam_channel::Receiver<()>,
}

/// Model scans (every second, and at once on a `model_activated` event),
/// histogram merging (every 100 ms), heartbeats; on each new Redis
/// connection, [`advise_on_server`].
fn side_loop(
    mut loader: Loader,
    observed: Observed,
    link: RegistryLink,
    mut config: SideConfig,
    wake: crossbeam_channel::Receiver<()>,
    shutdown: Arc<AtomicBool>,
) {
    let mut next_trust = Instant::now() + Duration::from_secs(10);
    let mut next_config = Instant::now() + Duration::from_secs(1);
    let mut next_scan = Instant::now() + Duration::from_secs(1);
    let mut next_hb = Instant::now();
    // Workers count scoring failures (no logging on a hot thread); this
    // loop says how many there were since it last looked.
    let mut scoring_failed = 0;
    let RegistryLink {
        redis,
        keys,
        instance,
    } = link;
    let hb_every = Duration::from_millis(redis.heartbeat.interval_ms.max(10));
    let mut conn: Option<RedisConn> = None;
    while !shutdown.load(Ordering::Relaxed) {
        // Either event wakes the loop at once (a config change waits for
        // no tick); otherwise it runs every 100 ms.
        let (woken, config_woken) = crossbeam_channel::select! {
            recv(wake) -> m => (m.is_ok(), false),
            recv(config.wake) -> m => (false, m.is_ok()),
            default(Duration::from_millis(100)) => (false, false),
        };
        observed.hists.drain();
        loader.drop_retired();
        // A deployment is looked at on its event, and every second in case
        // the event was missed.
        if let (Some(w), true) = (
            config.watch.as_mut(),
            config_woken || Instant::now() >= next_config,
        ) {
            next_config = Instant::now() + Duration::from_secs(1);
            if w.check() {
                observed.config.store(w.report().load_full());
                // Whoever applied it waits for this heartbeat.
                next_hb = Instant::now();
            }
        }
        if Instant::now() >= next_trust {
            next_trust = Instant::now() + Duration::from_secs(10);
            reload_trust(&config, &mut loader);
        }
        if woken || Instant::now() >= next_scan {
            loader.scan();
            next_scan = Instant::now() + Duration::from_secs(1);
        }
        if Instant::now() >= next_hb {
            next_hb = Instant::now() + hb_every;
            let failed = observed.counters.decisions_scoring_failed.load(Ordering::Relaxed);
            if failed > scoring_failed {
                tracing::error!(
                    failed = (failed - scoring_failed),
                    total = failed,
                    "ONNX Runtime failed to score decisions with the serving model"
                );
                scoring_failed = failed;
            }
            let hb = heartbeat(&observed, &instance, observed.status());
            if conn.is_none() {
                conn = RedisConn::connect(&(&redis).into()).ok();
                if let Some(cn) = conn.as_mut() {
                    advise_on_server(cn);
                }
            }
            if let Some(cn) = conn.as_mut() {
                if hb.write(cn, &keys, redis.heartbeat.ttl_ms).is_err() {
                    conn = None;
                }
            }
        }
    }
}

/// Says what about the Redis server on `conn` costs every guard call and is
/// the operator's to change: a `hash-max-listpack-entries` above the
/// guard's advice ([`tuning`]). Runs on the side thread, once per
/// connection, so no hot thread waits for the round trip. (What the host
/// itself costs — idle settings, Redis on the hot cores — is `check`'s to
/// say, through `mlcore-host`.)
fn advise_on_server(conn: &mut RedisConn) {
    // A server that will not say (an ACL) or says something odd is served
    // all the same: this is advice, not a check.
    let entries = tuning::hash_listpack_entries(conn).ok().flatten();
    if let Some((entries, advice)) = entries.and_then(|e| tuning::advice(e).map(|a| (e, a))) {
        tracing::info!(hash_max_listpack_entries = entries, "{advice}");
    }
}
