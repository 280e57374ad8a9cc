//! Inference workers: score a job's feature matrix with the strategy's
//! model, then run the portfolio. Each worker owns its ONNX Runtime sessions.
//!
//! New models arrive in the worker's own [`Mailbox`]es (one per strategy),
//! already verified, built and warmed by the loader; the worker switches
//! between two jobs (an in-flight decision always finishes on the model it
//! started with) and hands the old sessions back to the loader to be dropped
//! there, off this thread. A mailbox rather than a channel: taking from it
//! never waits for the loader, whatever the scheduler does to the loader.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mlcore_models::scoring::ModelScorer;

use crate::job::{Job, ModelMeta};
use crate::mailbox::Mailbox;
use crate::stats::{Counters, Histograms, LocalHist, Stage};
use mlcore_decision::universe::Universe;

/// A verified, warmed model for one strategy, for one worker.
#[derive(Debug)]
pub struct ModelUpdate {
    /// Sessions for this worker.
    pub scorer: Box<ModelScorer>,
    /// What it is.
    pub meta: Arc<ModelMeta>,
}

/// What a worker needs.
#[derive(Debug)]
pub struct WorkerParts {
    /// Jobs from ingress.
    pub jobs: Receiver<Box<Job>>,
    /// Model updates from the loader, by strategy index.
    pub models: Arc<[Mailbox<ModelUpdate>]>,
    /// Replaced models back to the loader, to be dropped there.
    pub retired: Sender<Box<ModelUpdate>>,
    /// To the publisher.
    pub publish: Sender<Box<Job>>,
    /// Job pools (return side), per strategy.
    pub pool_returns: Vec<Sender<Box<Job>>>,
    /// Universe.
    pub universe: Arc<Universe>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Histogram pools.
    pub hists: Histograms,
    /// Stop flag.
    pub shutdown: Arc<AtomicBool>,
}

/// Runs a worker until the stop flag is set.
pub fn run(p: WorkerParts) {
    let mut w = Worker::new(p);
    while !w.p.shutdown.load(Ordering::Relaxed) {
        if !w.step(Duration::from_millis(50)) {
            return;
        }
    }
}

/// One worker's state: its models (one slot per strategy) and its
/// histograms. [`run`] calls [`Worker::step`] until stopped; tests call it
/// directly (the allocation test drives this very code).
#[derive(Debug)]
pub struct Worker {
    p: WorkerParts,
    models: Vec<Option<Box<ModelUpdate>>>,
    inference: LocalHist,
    portfolio: LocalHist,
}

impl Worker {
    /// A worker with no model yet.
    pub fn new(p: WorkerParts) -> Self {
        Self {
            models: (0..p.universe.strategies.len()).map(|_| None).collect(),
            inference: p.hists.local(Stage::Inference),
            portfolio: p.hists.local(Stage::Portfolio),
            p,
        }
    }

    /// Takes any new model (between jobs), waits up to `wait` for a job and
    /// decides it. `false` once the job queue is closed.
    pub fn step(&mut self, wait: Duration) -> bool {
        let p = &self.p;
        for (slot, mailbox) in self.models.iter_mut().zip(p.models.iter()) {
            if let Some(update) = mailbox.take() {
                if let Some(old) = slot.replace(update) {
                    // Sized never to be full (`run`); it fails only once the
                    // loader is gone, at shutdown.
                    let _ = p.retired.try_send(old);
                }
            }
        }
        let mut job = match p.jobs.recv_timeout(wait) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                self.inference.tick();
                self.portfolio.tick();
                return true;
            }
            Err(RecvTimeoutError::Disconnected) => return false,
        };
        let s = usize::from(job.strategy);
        let Some(Some(model)) = self.models.get_mut(s) else {
            Counters::inc(&p.counters.decisions_without_model);
            let _ = p.pool_returns[s].try_send(job);
            return true;
        };
        let n = job.inputs.len();
        let started = Instant::now();
        let ModelUpdate { scorer, meta } = &mut **model;
        let scored = match scorer.score(&job.features, n) {
            Ok(scores) => {
                mlcore_decision::apply_scores(&mut job.inputs, scores.ai1, scores.ai2, scores.ai3);
                true
            }
            Err(_) => false,
        };
        self.inference.record(started.elapsed());
        if !scored {
            // The model is there and ONNX Runtime failed on it: not "no
            // model", which would send an operator looking for a pointer.
            Counters::inc(&p.counters.decisions_scoring_failed);
            let _ = p.pool_returns[s].try_send(job);
            return true;
        }
        let started = Instant::now();
        // The tables ingress prepared this decision with (the startup ones
        // for a job that never went through ingress: tests).
        let tables = job.tables.as_deref().unwrap_or(&*p.universe);
        let (theta1, theta2) = tables.strategies[s].theta_or((meta.theta1, meta.theta2));
        let policy = tables.policy.with_theta(theta1, theta2);
        let Job {
            params,
            inputs,
            scratch,
            ..
        } = &mut *job;
        job.summary = mlcore_decision::decide(&policy, params, inputs, scratch);
        job.model = Some(Arc::clone(meta));
        self.portfolio.record(started.elapsed());
        Counters::inc(&p.counters.decisions);
        p.counters
            .last_decision_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        if let Err(e) = p.publish.try_send(job) {
            Counters::inc(&p.counters.publish_dropped);
            let _ = p.pool_returns[s].try_send(e.into_inner());
        }
        true
    }
}
