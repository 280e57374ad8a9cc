//! Scoring through ONNX Runtime.
//!
//! One [`ModelScorer`] per worker thread (ORT sessions are not shared between
//! hot threads): sessions built with one intra-op thread and spinning off,
//! batched runs of N rows per head, output buffers allocated once at
//! construction and reused, and a warm-up before first use so the first real
//! decision does not pay for lazy initialisation.
//!
//! A full batch (the universe's rows, what the daemon scores) runs without
//! a single allocation: the features are copied into an input tensor the
//! scorer owns, the head's input is passed by position (naming it would
//! build a list), and ONNX Runtime writes the head's output into a tensor
//! preallocated once (`OutputSelector::preallocate`), whose values are then
//! copied into this scorer's buffer. Any other batch size takes the plain
//! path: a view of the caller's matrix, and an output tensor ONNX Runtime
//! allocates per run.
//!
//! With [`ScoringBackend::Native`], a head whose artifact ships its native
//! parameters is compiled ([`crate::native`]) and, once it agrees with the
//! ONNX Runtime session on the artifact's validation rows, scores natively;
//! the session stays, as the reference and the fallback. [`ModelScorer::backends`]
//! says which backend each head runs on and why.

use ort::memory::Allocator;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorRef};

use mlcore_config::ScoringBackend;

use crate::artifact::{HeadSpec, VerifiedArtifact, VALIDATION_ROWS};
use crate::native::compiled::{Rows, Transposer};
use crate::native::{self, CompiledHead, InstructionSet, NativeHead, PARITY_TOLERANCE};
use crate::runtime::{self, RuntimeError};

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// ONNX Runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The head is not what the manifest says.
    #[error("head `{head}`: {reason}")]
    Head {
        /// Head name.
        head: String,
        /// What is wrong.
        reason: String,
    },
    /// Input of the wrong size.
    #[error("input has {got} values, expected {rows} rows × {features} features")]
    Shape {
        /// Values given.
        got: usize,
        /// Rows asked.
        rows: usize,
        /// Features per row.
        features: usize,
    },
}

fn ort_err(e: ort::Error) -> ScoreError {
    ScoreError::Runtime(RuntimeError::Ort(e.to_string()))
}

impl From<mlcore_config::MaxInstructionSet> for InstructionSet {
    fn from(m: mlcore_config::MaxInstructionSet) -> Self {
        match m {
            mlcore_config::MaxInstructionSet::Avx512 => Self::Avx512,
            mlcore_config::MaxInstructionSet::Avx2 => Self::Avx2,
            mlcore_config::MaxInstructionSet::Baseline => Self::Baseline,
        }
    }
}

/// Which backend a head scores on, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadBackend {
    /// The compiled native head, which agreed with ONNX Runtime on the
    /// artifact's validation rows within [`PARITY_TOLERANCE`].
    Native {
        /// Validation rows compared.
        rows: usize,
        /// The largest difference seen.
        max_abs_diff: f32,
        /// The instruction set a tree ensemble is evaluated in on this
        /// CPU; `None` for a logistic head (a dot product per row).
        kernel: Option<InstructionSet>,
    },
    /// ONNX Runtime: asked for (`onnx`), or the artifact has no native form
    /// of this head.
    Onnx,
    /// ONNX Runtime, because the native head was refused: a native path was
    /// asked for and the artifact shipped one, but it failed to compile, had
    /// no validation rows to be checked on, or disagreed with ONNX Runtime.
    Fallback {
        /// Why.
        reason: String,
    },
}

/// One head's session, its native form when it serves, and its output buffer.
#[derive(Debug)]
pub struct HeadScorer {
    name: String,
    session: Session,
    input: String,
    output: String,
    n_features: usize,
    out: Vec<f32>,
    /// The allocation-free run of a full batch.
    full: FullBatch,
    /// The compiled head, when it serves.
    native: Option<CompiledHead>,
    backend: HeadBackend,
}

/// What a full batch runs with: the input tensor the features are copied
/// into, and run options that name the head's output alone and hand ONNX
/// Runtime a preallocated tensor for it.
struct FullBatch {
    input: Tensor<f32>,
    options: RunOptions<HasSelectedOutputs>,
}

impl std::fmt::Debug for FullBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `RunOptions<HasSelectedOutputs>` has no `Debug` of its own.
        f.debug_struct("FullBatch")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl HeadScorer {
    /// Builds the session for `model` and allocates outputs for `max_rows`.
    pub fn new(name: &str, model: &[u8], spec: &HeadSpec, max_rows: usize) -> Result<Self, ScoreError> {
        let mut session = runtime::hot_path_session(model)?;
        let head = |reason: String| ScoreError::Head {
            head: name.to_owned(),
            reason,
        };
        if !session.inputs().iter().any(|i| i.name() == spec.input) {
            return Err(head(format!("no input named `{}`", spec.input)));
        }
        if !session.outputs().iter().any(|o| o.name() == spec.output) {
            return Err(head(format!("no output named `{}`", spec.output)));
        }
        if session.inputs().len() != 1 {
            return Err(head(format!(
                "{} inputs; a head takes one, `{}`",
                session.inputs().len(),
                spec.input
            )));
        }
        let rows = max_rows.max(1);
        let full =
            Self::full_batch(&mut session, spec, rows).map_err(|e| head(format!("full batch: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            session,
            input: spec.input.clone(),
            output: spec.output.clone(),
            n_features: spec.n_features,
            out: vec![0.0; rows],
            full,
            native: None,
            backend: HeadBackend::Onnx,
        })
    }

    /// Takes the native path with `head` if it compiles and agrees with
    /// this head's ONNX Runtime session on every row of `validation`
    /// (row-major); otherwise stays on ONNX Runtime and records why.
    /// `pause` is called between batches of the comparison.
    pub fn try_native(
        &mut self,
        head: Result<NativeHead, String>,
        validation: Option<&[f32]>,
        pause: &mut dyn FnMut(),
    ) {
        self.backend = match self.check_native(head, validation, pause) {
            Ok((compiled, rows, max_abs_diff)) => {
                let kernel = compiled.kernel();
                self.native = Some(compiled);
                HeadBackend::Native {
                    rows,
                    max_abs_diff,
                    kernel,
                }
            }
            Err(reason) => {
                self.native = None;
                HeadBackend::Fallback { reason }
            }
        };
    }

    fn check_native(
        &mut self,
        head: Result<NativeHead, String>,
        validation: Option<&[f32]>,
        pause: &mut dyn FnMut(),
    ) -> Result<(CompiledHead, usize, f32), String> {
        let compiled = CompiledHead::compile(&head?, self.n_features).map_err(|e| e.to_string())?;
        let rows =
            validation.ok_or_else(|| format!("the artifact has no {VALIDATION_ROWS} to check it on"))?;
        let n = rows.len() / self.n_features;
        if n == 0 {
            return Err(format!("{VALIDATION_ROWS} holds no row"));
        }
        let batch = self.out.len();
        let mut native = vec![0.0f32; batch];
        let mut worst = 0.0f32;
        for chunk in rows.chunks(batch * self.n_features) {
            pause();
            let k = chunk.len() / self.n_features;
            compiled
                .predict(chunk, &mut native[..k])
                .map_err(|e| e.to_string())?;
            let reference = self.score(chunk, k).map_err(|e| format!("ONNX Runtime: {e}"))?;
            for (a, b) in native[..k].iter().zip(reference) {
                let d = (a - b).abs();
                // NaN on either side is a disagreement too.
                if d.is_nan() || d > PARITY_TOLERANCE {
                    return Err(format!(
                        "differs from ONNX Runtime by {d:e} (> {PARITY_TOLERANCE:e}) on a validation row \
                         ({a} against {b}, one of {n})",
                    ));
                }
                worst = worst.max(d);
            }
        }
        Ok((compiled, n, worst))
    }

    /// Holds a native tree head's kernel to `cap` at most
    /// ([`CompiledHead::cap_kernel`]); its backend says the set it runs in.
    pub fn cap_kernel(&mut self, cap: InstructionSet) {
        if let (Some(compiled), HeadBackend::Native { kernel, .. }) =
            (self.native.as_mut(), &mut self.backend)
        {
            compiled.cap_kernel(cap);
            *kernel = compiled.kernel();
        }
    }

    /// Which backend scores this head.
    pub fn backend(&self) -> &HeadBackend {
        &self.backend
    }

    /// The input tensor and run options of a full batch of `rows`: one run
    /// on zeros learns the output's shape, and a tensor of that shape is
    /// preallocated for it.
    fn full_batch(session: &mut Session, spec: &HeadSpec, rows: usize) -> ort::Result<FullBatch> {
        let allocator = Allocator::default();
        let mut input = Tensor::<f32>::new(&allocator, [rows, spec.n_features])?;
        input.extract_tensor_mut().1.fill(0.0);
        let shape = {
            let probe = session.run(ort::inputs![&input])?;
            probe[spec.output.as_str()].shape().clone()
        };
        let output = Tensor::<f32>::new(&allocator, shape)?;
        let options = RunOptions::new()?.with_outputs(
            OutputSelector::no_default()
                .with(spec.output.as_str())
                .preallocate(spec.output.as_str(), output),
        );
        Ok(FullBatch { input, options })
    }

    /// Scores `rows` rows of `x` (row-major); returns one value per row.
    pub fn score(&mut self, x: &[f32], rows: usize) -> Result<&[f32], ScoreError> {
        self.score_rows(Rows::new(x), rows)
    }

    /// Whether this head is a native tree ensemble: it reads the rows
    /// transposed, which [`ModelScorer::score`] then does once for all heads.
    fn reads_columns(&self) -> bool {
        matches!(self.native, Some(CompiledHead::Trees(_)))
    }

    /// [`Self::score`] on rows that may be transposed already.
    fn score_rows(&mut self, input: Rows<'_>, rows: usize) -> Result<&[f32], ScoreError> {
        let x = input.x();
        if x.len() != rows * self.n_features || rows > self.out.len() {
            return Err(ScoreError::Shape {
                got: x.len(),
                rows,
                features: self.n_features,
            });
        }
        if let Some(native) = &self.native {
            let out = &mut self.out[..rows];
            native.predict_rows(input, out).map_err(|e| ScoreError::Head {
                head: self.name.clone(),
                reason: e.to_string(),
            })?;
            return Ok(out);
        }
        let outputs = if rows == self.out.len() {
            let full = &mut self.full;
            full.input.extract_tensor_mut().1.copy_from_slice(x);
            self.session
                .run_with_options(ort::inputs![&full.input], &full.options)
                .map_err(ort_err)?
        } else {
            let input = TensorRef::from_array_view(([rows, self.n_features], x)).map_err(ort_err)?;
            self.session
                .run(ort::inputs![self.input.as_str() => input])
                .map_err(ort_err)?
        };
        let (_, values) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(ort_err)?;
        if values.len() != rows {
            return Err(ScoreError::Head {
                head: self.name.clone(),
                reason: format!("returned {} values for {rows} rows", values.len()),
            });
        }
        self.out[..rows].copy_from_slice(values);
        Ok(&self.out[..rows])
    }

    /// Runs `iterations` batches of zeros of `rows` rows.
    pub fn warm_up(&mut self, rows: usize, iterations: usize) -> Result<(), ScoreError> {
        let x = vec![0.0f32; rows * self.n_features];
        for _ in 0..iterations {
            self.score(&x, rows)?;
        }
        Ok(())
    }
}

/// Probabilities for one batch.
#[derive(Debug, Clone, Copy)]
pub struct Scores<'a> {
    /// ai1: probability of an up move.
    pub ai1: &'a [f32],
    /// ai2: risk score.
    pub ai2: &'a [f32],
    /// ai3: meta-label, when the model has it.
    pub ai3: Option<&'a [f32]>,
}

/// Warm-up runs of one head between two pauses of
/// [`ModelScorer::warm_up_paced`]: about 0.1 ms for the sample 60-tree head
/// on 32 rows, no longer than a session build.
pub const WARM_UP_RUNS_PER_PAUSE: usize = 5;

/// All heads of one verified model, for one worker thread.
#[derive(Debug)]
pub struct ModelScorer {
    ai1: HeadScorer,
    ai2: HeadScorer,
    ai3: Option<HeadScorer>,
    /// The rows transposed once per call for every native tree head; none
    /// when no head is one.
    transposer: Option<Transposer>,
}

impl ModelScorer {
    /// Every head of `artifact` on `backend`, for batches of up to `max_rows`.
    pub fn new(
        artifact: &VerifiedArtifact,
        max_rows: usize,
        backend: ScoringBackend,
    ) -> Result<Self, ScoreError> {
        Self::new_paced(artifact, max_rows, backend, || {})
    }

    /// [`ModelScorer::new`], calling `pause` before each head's session is
    /// built: a session build is a millisecond of CPU in one piece, and a
    /// loader that shares a core with hot threads sleeps in between so that
    /// no decision waits behind the whole model.
    pub fn new_paced(
        artifact: &VerifiedArtifact,
        max_rows: usize,
        backend: ScoringBackend,
        mut pause: impl FnMut(),
    ) -> Result<Self, ScoreError> {
        let mut head = |name: &str| -> Result<Option<HeadScorer>, ScoreError> {
            let Some(spec) = artifact.manifest.heads.get(name) else {
                return Ok(None);
            };
            pause();
            let bytes = artifact.files.get(&spec.file).ok_or_else(|| ScoreError::Head {
                head: name.to_owned(),
                reason: format!("file `{}` missing", spec.file),
            })?;
            let mut scorer = HeadScorer::new(name, bytes, spec, max_rows)?;
            if let (ScoringBackend::Native, Some(file)) = (backend, &spec.native) {
                let native = artifact
                    .files
                    .get(file)
                    .ok_or_else(|| format!("file `{file}` missing"))
                    .and_then(|b| NativeHead::from_json(b).map_err(|e| format!("{file}: {e}")));
                let validation = artifact
                    .files
                    .get(VALIDATION_ROWS)
                    .map(|b| native::decode_rows(b, spec.n_features))
                    .transpose();
                match validation {
                    Ok(rows) => scorer.try_native(native, rows.as_deref(), &mut pause),
                    Err(e) => scorer.try_native(Err(format!("{VALIDATION_ROWS}: {e}")), None, &mut pause),
                }
            }
            Ok(Some(scorer))
        };
        let missing = |name: &str| ScoreError::Head {
            head: name.to_owned(),
            reason: "not in the manifest".into(),
        };
        let mut scorer = Self {
            ai1: head("ai1")?.ok_or_else(|| missing("ai1"))?,
            ai2: head("ai2")?.ok_or_else(|| missing("ai2"))?,
            ai3: head("ai3")?,
            transposer: None,
        };
        if scorer.heads().any(HeadScorer::reads_columns) {
            scorer.transposer = Some(Transposer::new(max_rows.max(1)));
        }
        Ok(scorer)
    }

    /// Holds every native tree head to `cap` at most (`daemon.yaml`
    /// `scoring.max_instruction_set`, which the backtester reads too).
    pub fn cap_kernels(&mut self, cap: InstructionSet) {
        for h in self.heads_mut() {
            h.cap_kernel(cap);
        }
    }

    /// Each head, ai3 when the model has it.
    fn heads_mut(&mut self) -> impl Iterator<Item = &mut HeadScorer> {
        [Some(&mut self.ai1), Some(&mut self.ai2), self.ai3.as_mut()]
            .into_iter()
            .flatten()
    }

    /// Each head, ai3 when the model has it.
    fn heads(&self) -> impl Iterator<Item = &HeadScorer> {
        [Some(&self.ai1), Some(&self.ai2), self.ai3.as_ref()]
            .into_iter()
            .flatten()
    }

    /// Each head's name and backend.
    pub fn backends(&self) -> impl Iterator<Item = (&str, &HeadBackend)> {
        self.heads().map(|h| (h.name.as_str(), &h.backend))
    }

    /// Scores every head on `rows` rows of `x`. Every head takes the same
    /// rows, so native tree heads share one transposition of them.
    pub fn score(&mut self, x: &[f32], rows: usize) -> Result<Scores<'_>, ScoreError> {
        // Rows of the wrong shape go untransposed: the heads refuse them
        // with their own error.
        let input = match self.transposer.as_mut() {
            Some(t) => t.transpose(x, self.ai1.n_features).unwrap_or(Rows::new(x)),
            None => Rows::new(x),
        };
        self.ai1.score_rows(input, rows)?;
        self.ai2.score_rows(input, rows)?;
        if let Some(h) = self.ai3.as_mut() {
            h.score_rows(input, rows)?;
        }
        Ok(Scores {
            ai1: &self.ai1.out[..rows],
            ai2: &self.ai2.out[..rows],
            ai3: self.ai3.as_ref().map(|h| &h.out[..rows]),
        })
    }

    /// Warms every head up.
    pub fn warm_up(&mut self, rows: usize, iterations: usize) -> Result<(), ScoreError> {
        self.warm_up_paced(rows, iterations, || {})
    }

    /// [`ModelScorer::warm_up`], calling `pause` before every
    /// [`WARM_UP_RUNS_PER_PAUSE`] runs of a head, as
    /// [`ModelScorer::new_paced`] does before each build.
    pub fn warm_up_paced(
        &mut self,
        rows: usize,
        iterations: usize,
        mut pause: impl FnMut(),
    ) -> Result<(), ScoreError> {
        for h in self.heads_mut() {
            let mut left = iterations;
            while left > 0 {
                let runs = left.min(WARM_UP_RUNS_PER_PAUSE);
                pause();
                h.warm_up(rows, runs)?;
                left -= runs;
            }
        }
        Ok(())
    }
}
