//! The hot path allocates nothing per event: a counting global allocator
//! counts allocations made on this thread while the per-event work runs —
//! frame decoding, feature updates, the feature matrix, rolling β, the
//! portfolio, and the bounded queue hand-offs of pooled job buffers.
//! ONNX Runtime's run on a full batch (what the worker does) and publishing
//! a decision through the guard are asserted too, and so are the side ↔ hot
//! hand-offs of histograms and models (`mailbox`).

#![allow(unsafe_code)] // a counting allocator must implement GlobalAlloc
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use mlcore_daemon::job::Job;
use mlcore_daemon::wire::{self, Frame};
use mlcore_decision::{Policy, SymbolParams};
use mlcore_features::FeatureEngine;
use mlcore_market::Quote;
use mlcore_research::synth::{Generator, SynthSpec};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
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

#[test]
fn per_event_hot_path_work_allocates_nothing() {
    const N: usize = 32;
    let spec = SynthSpec {
        seed: 1,
        symbols: N,
        start_day: 20_458,
        days: 1,
        interval_ms: 5_000,
    };
    let quotes: Vec<Quote> = Generator::new(spec).unwrap().day_merged(20_458);
    let mut wire_bytes = Vec::new();
    for q in &quotes[..N * 400] {
        let f = Frame::Quote {
            ts_ns: q.ts_ns,
            symbol_id: u32::from(q.symbol) + 1,
            bid: q.bid,
            ask: q.ask,
            bid_size: q.bid_size,
            ask_size: q.ask_size,
        };
        wire::encode(&f, &mut wire_bytes);
    }
    let params: Vec<SymbolParams> = (0..N)
        .map(|i| SymbolParams {
            beta: 0.2 + i as f64 * 0.03,
            max_weight: 0.1,
            lot_size: 1000.0,
            min_qty: 1000.0,
            notional: 1e7,
            cost_bps: 0.5,
        })
        .collect();
    let policy = Policy {
        theta1: 0.51,
        theta2: 0.9,
        target_annual_vol: 0.1,
        periods_per_year: 4_354_560.0,
        max_gross: 1.0,
        beta_tolerance: 0.01,
        min_edge_over_cost_bps: 0.0,
        use_ai3: false,
    };
    // Set-up allocates: engine, pooled jobs, queues.
    let mut engine = FeatureEngine::new(N, 0);
    let (pool_tx, pool_rx) = crossbeam_channel::bounded::<Box<Job>>(4);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Box<Job>>(4);
    for _ in 0..4 {
        pool_tx.send(Box::new(Job::new(0, &params))).unwrap();
    }

    let allocs = measured(|| {
        let mut offset = 0;
        let mut decisions = 0;
        while let Ok(Some((frame, used))) = wire::decode(&wire_bytes[offset..], 4096) {
            offset += used;
            if let Frame::Quote {
                ts_ns,
                symbol_id,
                bid,
                ask,
                bid_size,
                ask_size,
            } = frame
            {
                engine.update(&Quote {
                    ts_ns,
                    symbol: (symbol_id - 1) as u16,
                    bid,
                    ask,
                    bid_size,
                    ask_size,
                });
                // A decision every 32 quotes: what ingress, a worker and the
                // publisher do with a pooled job, minus ONNX Runtime and Redis.
                if offset % (49 * N) == 0 {
                    let mut job = pool_rx.try_recv().unwrap();
                    engine.write_matrix(ts_ns, &mut job.features);
                    job.params.copy_from_slice(&params);
                    for (i, input) in job.inputs.iter_mut().enumerate() {
                        input.ready = engine.is_ready(i);
                        (input.rvol_20_bps, input.rvol_100_bps) = engine.state(i).unwrap().rvols_bps();
                        input.prob_up = 0.45 + (i as f64 % 10.0) * 0.01;
                        input.risk = 0.2;
                        if let Some(b) = engine
                            .state(i)
                            .unwrap()
                            .beta_against(engine.state(0).unwrap(), 100)
                        {
                            job.params[i].beta = b;
                        }
                    }
                    work_tx.try_send(job).unwrap();
                    let mut job = work_rx.try_recv().unwrap();
                    let Job {
                        params,
                        inputs,
                        scratch,
                        ..
                    } = &mut *job;
                    job.summary = mlcore_decision::decide(&policy, params, inputs, scratch);
                    pool_tx.try_send(job).unwrap();
                    decisions += 1;
                }
            }
        }
        assert_eq!(offset, wire_bytes.len());
        assert!(decisions >= 300, "{decisions} decisions");
    });
    assert_eq!(allocs, 0, "the per-event hot path allocated {allocs} times");
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
    use std::time::Duration;

    use mlcore_contract::{
        Guard, Keys, ModeChange, OpsMode, PublishBuffers, PublishOutcome, Side, Signal, SignalBatch,
    };
    use mlcore_daemon::redis_io::{PublishPipe, MAX_IN_FLIGHT};
    use mlcore_testkit::{self as testutil, RedisNamespace};

    let ns = RedisNamespace::new();
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let guard = Guard::new(Keys::new(&ns.ns), 100);
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
