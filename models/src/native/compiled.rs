//! The compiled form a head is evaluated in on the hot path.
//!
//! Tree ensembles are evaluated as QuickScorer does (Lucchese et al.,
//! SIGIR 2015), vectorised across the rows of a block: no walk down the
//! trees, no data-dependent branch at all.
//!
//! - A tree's leaves are numbered left to right, and a set of its leaves is
//!   a `u32` (so a tree has at most 32 leaves: LightGBM's default 31 fits).
//! - A split `x[f] < t` that a row **fails** rules out every leaf of its
//!   left subtree; the split carries the mask of the leaves that remain
//!   (all but those). A row's exit leaf is the leftmost leaf no failed
//!   split ruled out: the lowest set bit of the AND of the masks of the
//!   splits it fails — whatever order the splits are applied in.
//! - So for a block of up to 32 rows, feature-major (a feature's column is
//!   32 lanes), each split of each tree costs one vector compare of its
//!   threshold with the column, an OR with its mask and an AND into the
//!   tree's running masks: 3 instructions per 8 rows with AVX2 (per 4 rows
//!   in SSE2); in AVX-512 a compare into a mask register and a masked AND,
//!   2 instructions per 16 rows. Then each row adds the value of its exit
//!   leaf (its lowest set bit: `trailing_zeros`, or 31 − `vplzcntd` of
//!   `r & -r` in AVX-512) to its margin, tree after tree, in tree order and
//!   in f32, as the trainer's reference predictor does: the same
//!   probabilities to the bit (unit tests, on every instruction set the CPU
//!   has). ONNX Runtime adds the base after the trees and has its own
//!   sigmoid: within 1e-6 (the parity check).
//! - Three forms of the same loops: the target's baseline (through `wide`:
//!   SSE2 on x86-64), AVX2 and AVX-512 (`std::arch` intrinsics);
//!   [`CompiledHead::predict`] takes the widest the CPU has
//!   ([`InstructionSet::detected`], once, when the head is compiled). The same results in the same order,
//!   so the same bits (unit tests), at 4, 8 and 16 lanes per instruction;
//!   AVX-512 also drops the OR (its compares write mask registers, and the
//!   AND is masked) and finds the exit leaves in registers. Left to the
//!   compiler, plain loops over the 32 lanes were vectorised across splits
//!   instead (gathers, 13× slower), so the vectors are spelled out.
//!
//! A NaN feature fails every test, as ONNX's `BRANCH_LT` sends it right.
//!
//! Why not the alternatives (measured on the sample model's 86-tree ai1,
//! 32 varied rows, against ONNX Runtime's 87 µs): walking each row down
//! each tree (ONNX Runtime, and the reference) mispredicts a branch at most
//! levels; interleaving 32 such walks in lockstep with branch-free steps
//! took 37 µs (about 14 instructions per row and level); walking the tree
//! once for the block with row masks took 30–40 µs (varied rows reach most
//! nodes); complete-tree layouts (`2^depth` slots) blow leaf-wise trees
//! (depth up to 17) out of the cache; generated code would need a compiler
//! at load time. See `docs/models.md`.

use wide::bytemuck::cast;
use wide::{f32x8, u32x8};

use super::heads::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};
use super::{NativeError, NativeHead};

/// Rows evaluated together (the lanes of a column): the daemon's universe
/// of 32 symbols in one block.
const BLOCK: usize = 32;
/// The most features a compiled head takes: a block of columns has room
/// for this many (8 KiB, in the scorer's `Transposer` or on a head's stack).
pub const MAX_FEATURES: usize = 64;
/// The most leaves a tree of a compiled head has (a leaf set is a `u32`).
pub const MAX_LEAVES: usize = 32;

/// A split of a compiled tree: the rows with `!(x[feature] < threshold)`
/// keep only the leaves in `keep`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Split {
    feature: u32,
    threshold: f32,
    keep: u32,
}

/// A tree's leaf values, left to right, padded to [`MAX_LEAVES`]: an exit
/// leaf's index (`trailing_zeros & 31`) needs no bounds check, and the
/// AVX-512 form loads them as two whole registers (`vpermt2ps` selects from
/// 32). Aligned to a cache line, so neither load straddles two.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Leaves([f32; MAX_LEAVES]);

/// The lanes of a block: one value per row.
type Lanes<T> = [T; BLOCK];

/// A feature of every row of a block, aligned to a cache line: a split
/// loads it whole (two 512-bit or four 256-bit loads), and a load that
/// straddles two lines costs two.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Column(Lanes<f32>);

/// A block transposed: column `j` holds feature `j` of every row.
type Columns = [Column; MAX_FEATURES];

/// A tree ensemble compiled for batched evaluation.
#[derive(Debug, Clone)]
pub struct CompiledTrees {
    splits: Box<[Split]>,
    /// Each tree's range of `splits`.
    trees: Box<[(usize, usize)]>,
    /// Each tree's leaves.
    leaves: Box<[Leaves]>,
    /// The widest form this CPU runs, found once here rather than per call.
    set: InstructionSet,
    base: f32,
    platt: Platt,
    n_features: usize,
}

/// The leaves under `node` (numbered from `next`, left to right), as a
/// mask; pushes the leaves' values and the splits' kept sets.
fn number(
    tree: &[TreeNode],
    node: usize,
    next: &mut u32,
    leaves: &mut [f32; MAX_LEAVES],
    splits: &mut Vec<Split>,
) -> Result<u32, NativeError> {
    match tree[node] {
        TreeNode::Leaf(v) => {
            let Some(slot) = leaves.get_mut(*next as usize) else {
                return Err(NativeError::Invalid(format!(
                    "a tree has more than {MAX_LEAVES} leaves: the native backend takes up to {MAX_LEAVES}"
                )));
            };
            *slot = v;
            let bit = 1u32 << *next;
            *next += 1;
            Ok(bit)
        }
        TreeNode::Split {
            feature,
            threshold,
            left,
            right,
        } => {
            let l = number(tree, left, next, leaves, splits)?;
            let r = number(tree, right, next, leaves, splits)?;
            splits.push(Split {
                feature: u32::try_from(feature).map_err(|_| NativeError::Invalid("feature index".into()))?,
                threshold,
                keep: !l,
            });
            Ok(l | r)
        }
    }
}

impl CompiledTrees {
    /// Compiles `head` after [`TreeEnsembleHead::check`] (which makes the
    /// recursion below finite: every node is reached once from its root).
    pub fn compile(head: &TreeEnsembleHead) -> Result<Self, NativeError> {
        head.check()?;
        if head.n_features > MAX_FEATURES {
            return Err(NativeError::Invalid(format!(
                "{} features: the native backend takes up to {MAX_FEATURES}",
                head.n_features
            )));
        }
        let mut splits = Vec::new();
        let mut leaves = Vec::with_capacity(head.trees.len());
        let mut trees = Vec::with_capacity(head.trees.len());
        for tree in &head.trees {
            let first = splits.len();
            let (mut next, mut values) = (0, [0.0; MAX_LEAVES]);
            number(tree, 0, &mut next, &mut values, &mut splits)?;
            trees.push((first, splits.len()));
            leaves.push(Leaves(values));
        }
        Ok(Self {
            splits: splits.into(),
            leaves: leaves.into(),
            trees: trees.into(),
            set: InstructionSet::detected(),
            base: head.base,
            platt: head.platt,
            n_features: head.n_features,
        })
    }

    /// Calibrated probabilities of `out.len()` rows (row-major in
    /// `rows.x`, or already transposed). The caller checked
    /// `rows.x.len() == out.len() * n_features`. `set` is available on
    /// this CPU.
    fn predict(&self, set: InstructionSet, rows: Rows<'_>, out: &mut [f32]) {
        let f = self.n_features;
        match rows.blocks {
            // Transposed once for every tree head of the model.
            Some((blocks, n)) if n == f => {
                debug_assert_eq!(blocks.len(), out.len().div_ceil(BLOCK));
                for (columns, out) in blocks.iter().zip(out.chunks_mut(BLOCK)) {
                    self.probabilities(set, columns, out);
                }
            }
            _ => {
                let mut columns: Columns = [Column([0.0; BLOCK]); MAX_FEATURES];
                for (block, out) in rows.x.chunks(BLOCK * f).zip(out.chunks_mut(BLOCK)) {
                    transpose(block, f, &mut columns);
                    self.probabilities(set, &columns, out);
                }
            }
        }
    }

    /// The calibrated probabilities of one block's rows (`out.len()` of them).
    fn probabilities(&self, set: InstructionSet, columns: &Columns, out: &mut [f32]) {
        let mut margin = [self.base; BLOCK];
        set.margins(
            Block {
                splits: &self.splits,
                trees: &self.trees,
                leaves: &self.leaves,
                columns,
            },
            &mut margin,
        );
        for (o, m) in out.iter_mut().zip(margin) {
            *o = self.platt.apply(m);
        }
    }
}

/// One block of rows of `f` features (row-major, up to [`BLOCK`] rows) into
/// `columns`, row by row (reads in order, writes within 8 KiB of L1). The
/// lanes past a short block's end keep what they held (zero, or an earlier
/// block's rows): computed and never read.
fn transpose(block: &[f32], f: usize, columns: &mut Columns) {
    for (i, row) in block.chunks_exact(f).enumerate() {
        for (column, &v) in columns.iter_mut().zip(row) {
            column.0[i % BLOCK] = v;
        }
    }
}

/// Rows to score: row-major, and transposed into blocks of columns when a
/// [`Transposer`] did it once for every head that scores them. Only a
/// transposer makes the blocks, from these very rows, and the borrow keeps
/// them from being refilled while a head reads them.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    x: &'a [f32],
    /// The blocks of `x` transposed, and the features per row they were
    /// transposed with.
    blocks: Option<(&'a [Columns], usize)>,
}

impl<'a> Rows<'a> {
    /// Row-major rows, to be transposed by each tree head that scores them.
    pub(crate) fn new(x: &'a [f32]) -> Self {
        Self { x, blocks: None }
    }

    /// The rows, row-major.
    pub(crate) fn x(&self) -> &'a [f32] {
        self.x
    }
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The blocks' 2,048 floats each say nothing a reader needs.
        f.debug_struct("Rows")
            .field("values", &self.x.len())
            .field("blocks", &self.blocks.map(|(b, n)| (b.len(), n)))
            .finish()
    }
}

/// Reusable blocks of columns: a model's tree heads all score the same
/// rows, so the scorer transposes them once per call rather than once per
/// head (and no head zeroes 8 KiB of stack for it). Allocated once.
pub(crate) struct Transposer {
    blocks: Box<[Columns]>,
}

impl std::fmt::Debug for Transposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transposer")
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl Transposer {
    /// Blocks for up to `max_rows` rows.
    pub(crate) fn new(max_rows: usize) -> Self {
        Self {
            blocks: vec![[Column([0.0; BLOCK]); MAX_FEATURES]; max_rows.div_ceil(BLOCK)].into_boxed_slice(),
        }
    }

    /// `x` (row-major rows of `n_features`) transposed into these blocks.
    ///
    /// # Errors
    /// [`NativeError::Width`] when `n_features` is 0 or over
    /// [`MAX_FEATURES`]; [`NativeError::NotWholeRows`] when `x` is not whole
    /// rows of `n_features`; [`NativeError::Capacity`] when it holds more
    /// rows than these blocks. None of them allocates.
    pub(crate) fn transpose<'a>(
        &'a mut self,
        x: &'a [f32],
        n_features: usize,
    ) -> Result<Rows<'a>, NativeError> {
        let f = n_features;
        if f == 0 || f > MAX_FEATURES {
            return Err(NativeError::Width(f));
        }
        if !x.len().is_multiple_of(f) {
            return Err(NativeError::NotWholeRows {
                got: x.len(),
                features: f,
            });
        }
        let (rows, max) = (x.len() / f, self.blocks.len() * BLOCK);
        if rows > max {
            return Err(NativeError::Capacity { rows, max });
        }
        for (block, columns) in x.chunks(BLOCK * f).zip(self.blocks.iter_mut()) {
            transpose(block, f, columns);
        }
        Ok(Rows {
            x,
            blocks: Some((&self.blocks[..rows.div_ceil(BLOCK)], f)),
        })
    }
}

/// What the margins of a block are computed from.
#[derive(Debug, Clone, Copy)]
struct Block<'a> {
    splits: &'a [Split],
    trees: &'a [(usize, usize)],
    leaves: &'a [Leaves],
    columns: &'a Columns,
}

impl<'a> Block<'a> {
    /// Each tree's splits and leaves, in tree order: what every form of
    /// the kernel walks (inlined into each, so each keeps its own
    /// instructions).
    #[inline(always)]
    fn trees(self) -> impl Iterator<Item = (&'a [Split], &'a Leaves)> {
        let splits = self.splits;
        self.trees
            .iter()
            .map(move |&(first, end)| splits.get(first..end).unwrap_or_default())
            .zip(self.leaves)
    }
}

/// An instruction set the tree kernels are compiled for, ordered from the
/// narrowest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstructionSet {
    /// The target's baseline: SSE2 on x86-64 (4 lanes per instruction).
    Baseline,
    /// AVX2 (8 lanes per instruction), where the CPU has it.
    Avx2,
    /// AVX-512 F and CD (16 lanes per instruction, compares into mask
    /// registers), where the CPU has both.
    Avx512,
}

impl InstructionSet {
    /// Every form, from the baseline up (tests and benches compare them).
    pub const ALL: [Self; 3] = [Self::Baseline, Self::Avx2, Self::Avx512];

    /// The best one this CPU runs: what [`CompiledHead::predict`] uses.
    /// The standard library caches the CPU's answer: atomic loads.
    pub fn detected() -> Self {
        Self::widest_up_to(Self::Avx512)
    }

    /// The widest one this CPU runs that is no wider than `cap`
    /// (`daemon.yaml` `scoring.max_instruction_set`).
    pub fn widest_up_to(cap: Self) -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|s| *s <= cap && s.available())
            .unwrap_or(Self::Baseline)
    }

    /// Whether this CPU runs it: the features its kernel's
    /// `#[target_feature]` names (`avx2`; `avx512f` and `avx512cd`, which
    /// imply AVX2 on every CPU that has them), the one check that makes
    /// calling that kernel sound.
    pub fn available(self) -> bool {
        match self {
            Self::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512cd")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2 | Self::Avx512 => false,
        }
    }

    /// Its name in logs and benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// Adds every tree's exit-leaf value to each lane's margin, tree after
    /// tree, in this set when the CPU runs it (else in the baseline).
    fn margins(self, block: Block<'_>, margin: &mut Lanes<f32>) {
        #[cfg(target_arch = "x86_64")]
        match self {
            Self::Avx512 if self.available() => {
                #[allow(unsafe_code)]
                // SAFETY: `margins_avx512` only needs the CPU to have
                // AVX-512 F and CD, which `available` has just checked.
                unsafe {
                    margins_avx512(block, margin)
                };
                return;
            }
            Self::Avx2 if self.available() => {
                #[allow(unsafe_code)]
                // SAFETY: `margins_avx2` only needs the CPU to have AVX2,
                // which `available` has just checked.
                unsafe {
                    margins_avx2(block, margin)
                };
                return;
            }
            _ => {}
        }
        margins_baseline(block, margin);
    }
}

/// A column as the kernels read it: 4 vectors of 8 lanes.
fn vectors(column: &Column) -> &[[f32; 8]; 4] {
    wide::bytemuck::cast_ref(&column.0)
}

/// The x86-64 baseline (SSE2, through `wide`): per split, for the 32
/// lanes, a compare, an OR and an AND (each `f32x8` op is two SSE ops);
/// per tree, each lane's exit leaf added to its margin.
fn margins_baseline(block: Block<'_>, margin: &mut Lanes<f32>) {
    let columns = block.columns;
    for (tree, values) in block.trees() {
        let mut remain = [u32x8::splat(u32::MAX); 4];
        for s in tree {
            // `feature < MAX_FEATURES` (compile checks it); the modulo only
            // spares the bounds check.
            let column = vectors(&columns[s.feature as usize % MAX_FEATURES]);
            let threshold = f32x8::splat(s.threshold);
            let keep = u32x8::splat(s.keep);
            for (r, v) in remain.iter_mut().zip(column) {
                // Lanes that pass the test are all ones: they keep every
                // leaf; the others keep `keep`.
                let pass: u32x8 = cast(f32x8::from(*v).simd_lt(threshold));
                *r &= pass | keep;
            }
        }
        let exits = remain.iter().flat_map(|r| r.to_array());
        for (m, exit) in margin.iter_mut().zip(exits) {
            // A tree's rightmost leaf is in no left subtree, so `exit != 0`.
            *m += values.0[(exit.trailing_zeros() % MAX_LEAVES as u32) as usize];
        }
    }
}

/// [`margins_baseline`] in AVX2: the same bits, the splits' operations in
/// the same order on 256-bit vectors, the exit leaves in registers
/// ([`exit_values_avx2`]) (`wide` picks its instructions when the crate is
/// compiled, so this form is written with `std::arch`'s intrinsics, which
/// a `#[target_feature]` function may call safely).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn margins_avx2(block: Block<'_>, margin: &mut Lanes<f32>) {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_and_si256, _mm256_castps_si256, _mm256_cmp_ps, _mm256_or_si256,
        _mm256_set1_epi32, _mm256_set1_ps, _CMP_LT_OQ,
    };
    let columns = block.columns;
    let mut sums: [__m256; 4] = cast(*margin);
    for (tree, values) in block.trees() {
        let mut remain = [_mm256_set1_epi32(-1); 4];
        for s in tree {
            let column = vectors(&columns[s.feature as usize % MAX_FEATURES]);
            let threshold = _mm256_set1_ps(s.threshold);
            let keep = _mm256_set1_epi32(i32::from_ne_bytes(s.keep.to_ne_bytes()));
            for (r, v) in remain.iter_mut().zip(column) {
                let v: __m256 = cast(*v);
                // `_CMP_LT_OQ`: false for NaN, as `simd_lt`.
                let pass = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(v, threshold));
                *r = _mm256_and_si256(*r, _mm256_or_si256(pass, keep));
            }
        }
        let leaves: [__m256; 4] = cast(values.0);
        for (sum, r) in sums.iter_mut().zip(remain) {
            // Lane by lane the same leaf and the same f32 addition as the
            // baseline's.
            *sum = _mm256_add_ps(*sum, exit_values_avx2(r, &leaves));
        }
    }
    *margin = cast(sums);
}

/// The value of each lane's exit leaf (the lowest set bit of its `r`,
/// never 0) among a tree's 32 padded `leaves`, in registers. The form
/// before went lane by lane through memory, and the vector load over
/// eight rows' stores stalled store forwarding once per 8 rows and tree.
///
/// AVX2 has no `lzcnt` on lanes, so the index comes from the lowest bit
/// converted to `f32`: a power of two is exact, and its exponent field is
/// `127 + index`, so `e + 1` holds the index in its bits 0–4 (bit 31 reads
/// as −2^31, whose sign bit lands above them, at bit 8). Nothing reads the
/// bits above: `vpermps` picks within 8 leaves by the index's low 3 bits,
/// and its bits 3 and 4 choose among the four eights, each shifted up to
/// bit 31, where `blendv` reads a lane's sign (the shift drops the rest).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exit_values_avx2(
    r: std::arch::x86_64::__m256i,
    leaves: &[std::arch::x86_64::__m256; 4],
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_and_si256, _mm256_blendv_ps, _mm256_castps_si256, _mm256_castsi256_ps,
        _mm256_cvtepi32_ps, _mm256_permutevar8x32_ps, _mm256_set1_epi32, _mm256_setzero_si256,
        _mm256_slli_epi32, _mm256_srli_epi32, _mm256_sub_epi32,
    };
    let lowest = _mm256_and_si256(r, _mm256_sub_epi32(_mm256_setzero_si256(), r));
    let exponent = _mm256_srli_epi32::<23>(_mm256_castps_si256(_mm256_cvtepi32_ps(lowest)));
    // The index in bits 0-4 (above them, for bit 31, the sign: nothing
    // below reads it).
    let exit = _mm256_add_epi32(exponent, _mm256_set1_epi32(1));
    let [l0, l1, l2, l3] = *leaves;
    let bit3 = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(exit));
    let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(exit));
    let low = _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(l0, exit),
        _mm256_permutevar8x32_ps(l1, exit),
        bit3,
    );
    let high = _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(l2, exit),
        _mm256_permutevar8x32_ps(l3, exit),
        bit3,
    );
    _mm256_blendv_ps(low, high, bit4)
}

/// [`margins_baseline`] in AVX-512 (F and CD), 16 lanes per instruction.
/// A compare writes a mask register, so a split costs a compare and a
/// masked AND per 16 rows (against a compare, an OR and an AND per 8 in
/// AVX2), and a tree's exit leaves are found and looked up in registers:
/// the lowest set bit's index (31 − leading zeros of `r & -r`) selects
/// from the 32 padded leaf values held in two registers (`vpermt2ps`),
/// where AVX2 needs a float conversion, four permutes and three blends
/// ([`exit_values_avx2`]) and the baseline goes lane by lane. The same bits: the masked AND
/// is the baseline's `r & (pass | keep)`, and each lane adds the same leaf
/// value, tree after tree, in f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512cd")]
fn margins_avx512(block: Block<'_>, margin: &mut Lanes<f32>) {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_and_si512, _mm512_cmp_ps_mask, _mm512_lzcnt_epi32,
        _mm512_mask_and_epi32, _mm512_permutex2var_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_si512, _mm512_sub_epi32, _CMP_NLT_UQ,
    };
    let columns = block.columns;
    let mut sums: [__m512; 2] = bytemuck::cast(*margin);
    for (tree, values) in block.trees() {
        let mut remain = [_mm512_set1_epi32(-1); 2];
        for s in tree {
            let column: &[[f32; 16]; 2] = bytemuck::cast_ref(&columns[s.feature as usize % MAX_FEATURES].0);
            let threshold = _mm512_set1_ps(s.threshold);
            let keep = _mm512_set1_epi32(i32::from_ne_bytes(s.keep.to_ne_bytes()));
            for (r, v) in remain.iter_mut().zip(column) {
                // `_CMP_NLT_UQ`, the complement of `_CMP_LT_OQ`: the lanes
                // that fail `x < t`, NaN included.
                let fail = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(bytemuck::cast(*v), threshold);
                *r = _mm512_mask_and_epi32(*r, fail, *r, keep);
            }
        }
        let [low_leaves, high_leaves]: [__m512; 2] = bytemuck::cast(values.0);
        for (sum, r) in sums.iter_mut().zip(remain) {
            // `r != 0` (a tree's rightmost leaf is in no left subtree), so
            // the index is in 0..32; `vpermt2ps` reads its low 5 bits.
            let lowest = _mm512_and_si512(r, _mm512_sub_epi32(_mm512_setzero_si512(), r));
            let exit = _mm512_sub_epi32(_mm512_set1_epi32(31), _mm512_lzcnt_epi32(lowest));
            *sum = _mm512_add_ps(*sum, _mm512_permutex2var_ps(low_leaves, exit, high_leaves));
        }
    }
    *margin = bytemuck::cast(sums);
}

/// A head in its compiled form.
#[derive(Debug, Clone)]
pub enum CompiledHead {
    /// A tree ensemble.
    Trees(CompiledTrees),
    /// A logistic regression (a dot product per row).
    Logistic(LogisticHead),
}

impl CompiledHead {
    /// Compiles `head`, refusing what is not well formed or takes another
    /// number of features than `n_features`.
    pub fn compile(head: &NativeHead, n_features: usize) -> Result<Self, NativeError> {
        let got = match head {
            NativeHead::Trees(t) => t.n_features,
            NativeHead::Logistic(l) => l.weights.len(),
        };
        if got != n_features {
            return Err(NativeError::Invalid(format!(
                "the head takes {got} features, the manifest says {n_features}"
            )));
        }
        Ok(match head {
            NativeHead::Trees(t) => Self::Trees(CompiledTrees::compile(t)?),
            NativeHead::Logistic(l) => {
                l.check()?;
                Self::Logistic(l.clone())
            }
        })
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        match self {
            Self::Trees(t) => t.n_features,
            Self::Logistic(l) => l.weights.len(),
        }
    }

    /// The instruction set [`Self::predict`] evaluates this head in: the
    /// one detected when a tree ensemble was compiled, `None` for a
    /// logistic head (a dot product per row, one form).
    pub fn kernel(&self) -> Option<InstructionSet> {
        match self {
            Self::Trees(t) => Some(t.set),
            Self::Logistic(_) => None,
        }
    }

    /// Holds a tree ensemble's kernel to `cap` at most: it then runs in the
    /// widest set this CPU has no wider than `cap` ([`Self::kernel`] says
    /// which). Same results: every form computes the same bits.
    pub fn cap_kernel(&mut self, cap: InstructionSet) {
        if let Self::Trees(t) = self {
            t.set = InstructionSet::widest_up_to(t.set.min(cap));
        }
    }

    /// Writes the probability of each of `out.len()` rows of `x` into
    /// `out`, without allocating, with the best instruction set this CPU
    /// has ([`Self::kernel`], detected at compile time, or as capped by
    /// [`Self::cap_kernel`]).
    ///
    /// # Errors
    /// [`NativeError::Shape`] when `x` does not hold `out.len()` rows.
    pub fn predict(&self, x: &[f32], out: &mut [f32]) -> Result<(), NativeError> {
        self.predict_rows(Rows::new(x), out)
    }

    /// [`Self::predict`] on rows a [`Transposer`] may have transposed
    /// already (a tree ensemble then reads its blocks; a logistic head
    /// reads the rows).
    ///
    /// # Errors
    /// [`NativeError::Shape`] when the rows are not `out.len()` rows.
    pub(crate) fn predict_rows(&self, rows: Rows<'_>, out: &mut [f32]) -> Result<(), NativeError> {
        self.check_shape(rows.x, out)?;
        let set = match self {
            Self::Trees(t) => t.set,
            Self::Logistic(_) => InstructionSet::Baseline,
        };
        self.run(set, rows, out);
        Ok(())
    }

    /// [`Self::predict`] with tree ensembles evaluated in `set` (benches and
    /// tests compare them; a logistic head has one form).
    ///
    /// # Errors
    /// [`NativeError::Shape`] when `x` does not hold `out.len()` rows;
    /// [`NativeError::Unavailable`] when this CPU does not run `set`.
    pub fn predict_on(&self, set: InstructionSet, x: &[f32], out: &mut [f32]) -> Result<(), NativeError> {
        self.check_shape(x, out)?;
        if !set.available() {
            return Err(NativeError::Unavailable(set.name()));
        }
        self.run(set, Rows::new(x), out);
        Ok(())
    }

    /// `x` holds `out.len()` rows (and a row is not empty: a logistic head
    /// built by hand can have no weights).
    fn check_shape(&self, x: &[f32], out: &[f32]) -> Result<(), NativeError> {
        let f = self.n_features();
        if f == 0 || x.len() != out.len() * f {
            return Err(NativeError::Shape {
                got: x.len(),
                rows: out.len(),
                features: f,
            });
        }
        Ok(())
    }

    /// The rows' probabilities, once the shape is checked (`set` falls
    /// back to the baseline where the CPU lacks it: `margins` checks).
    fn run(&self, set: InstructionSet, rows: Rows<'_>, out: &mut [f32]) {
        match self {
            Self::Trees(t) => t.predict(set, rows, out),
            Self::Logistic(l) => {
                for (row, o) in rows.x.chunks_exact(l.weights.len()).zip(out.iter_mut()) {
                    *o = l.predict_row(row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> TreeEnsembleHead {
        // Tree 0: x0 < 0.5 ? (x1 < -1 ? 0.25 : -0.5) : 1.0 — unbalanced.
        // Tree 1: a lone leaf.
        TreeEnsembleHead {
            trees: vec![
                vec![
                    TreeNode::Split {
                        feature: 0,
                        threshold: 0.5,
                        left: 2,
                        right: 1,
                    },
                    TreeNode::Leaf(1.0),
                    TreeNode::Split {
                        feature: 1,
                        threshold: -1.0,
                        left: 3,
                        right: 4,
                    },
                    TreeNode::Leaf(0.25),
                    TreeNode::Leaf(-0.5),
                ],
                vec![TreeNode::Leaf(0.125)],
            ],
            base: -0.1,
            platt: Platt { a: 1.5, b: 0.2 },
            n_features: 2,
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_exit_values_pick_the_lowest_set_bit_of_every_position() {
        if !InstructionSet::Avx2.available() {
            eprintln!("this CPU has no AVX2: its exit-leaf lookup is not tested here");
            return;
        }
        let leaves: [f32; MAX_LEAVES] = std::array::from_fn(|i| i as f32 + 0.5);
        let registers: [std::arch::x86_64::__m256; 4] = cast(leaves);
        // Every lowest bit, alone and under every higher bit set (bit 31,
        // which converts to -2^31, included), eight lanes at a time.
        let masks: Vec<u32> = (0..32).flat_map(|k| [1u32 << k, u32::MAX << k]).collect();
        for lanes in masks.chunks(8) {
            let mut r = [1u32; 8];
            r[..lanes.len()].copy_from_slice(lanes);
            #[allow(unsafe_code)]
            // SAFETY: AVX2 is available (checked above).
            let got: [f32; 8] = cast(unsafe { exit_values_avx2(cast(r), &registers) });
            for (mask, v) in r.iter().zip(got) {
                assert_eq!(v, leaves[mask.trailing_zeros() as usize], "r = {mask:#034b}");
            }
        }
    }

    #[test]
    fn compiled_equals_the_reference_on_every_path_and_any_batch_size() {
        let h = head();
        let c = CompiledHead::compile(&NativeHead::Trees(h.clone()), 2).unwrap();
        let rows: Vec<[f32; 2]> = (0..70)
            .map(|i| [(i % 7) as f32 * 0.3 - 0.6, (i % 5) as f32 - 2.5])
            .chain([[f32::NAN, 0.0], [0.0, f32::NAN], [0.5, -1.0]])
            .collect();
        let x: Vec<f32> = rows.iter().flatten().copied().collect();
        let sets: Vec<InstructionSet> = InstructionSet::ALL
            .into_iter()
            .filter(|s| s.available())
            .collect();
        if sets.len() < InstructionSet::ALL.len() {
            eprintln!("this CPU runs only {sets:?}: the other forms are not tested here");
        }
        for n in [1, 31, 32, 33, rows.len()] {
            let mut out = vec![0.0; n];
            c.predict(&x[..n * 2], &mut out).unwrap();
            for (r, o) in rows[..n].iter().zip(&out) {
                assert_eq!(o.to_bits(), h.predict_row(r).to_bits(), "row {r:?}");
            }
            for set in &sets {
                let mut out = vec![0.0; n];
                c.predict_on(*set, &x[..n * 2], &mut out).unwrap();
                for (r, o) in rows[..n].iter().zip(&out) {
                    assert_eq!(o.to_bits(), h.predict_row(r).to_bits(), "{set:?}, row {r:?}");
                }
            }
        }
    }

    #[test]
    fn rows_transposed_once_score_as_rows_transposed_per_head() {
        let h = head();
        let trees = CompiledHead::compile(&NativeHead::Trees(h.clone()), 2).unwrap();
        let logistic = CompiledHead::compile(
            &NativeHead::Logistic(LogisticHead {
                weights: vec![0.75, -0.5],
                intercept: 0.1,
                platt: Platt::IDENTITY,
            }),
            2,
        )
        .unwrap();
        // Other rows at every call, so blocks an earlier call left behind
        // would give other probabilities.
        let rows = |n: usize, seed: usize| -> Vec<f32> {
            (0..n * 2)
                .map(|i| ((i * 7 + seed * 5) % 11) as f32 * 0.2 - 1.1)
                .collect()
        };
        let bits = |v: &[f32]| v.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        // One transposer for every size, largest first: a short block's
        // lanes past its end hold an earlier call's rows.
        let mut transposer = Transposer::new(73);
        for (seed, n) in [73, 1, 31, 32, 33].into_iter().enumerate() {
            let x = rows(n, seed);
            let shared = transposer.transpose(&x, 2).unwrap();
            for head in [&trees, &logistic] {
                let (mut once, mut per_head) = (vec![0.0; n], vec![0.0; n]);
                head.predict_rows(shared, &mut once).unwrap();
                head.predict(&x, &mut per_head).unwrap();
                assert_eq!(bits(&once), bits(&per_head), "{n} rows, {:?}", head.kernel());
            }
        }
        // A tree head reads the blocks, not the rows: given blocks of other
        // rows, it scores those.
        let (a, b) = (rows(32, 1), rows(32, 2));
        let mut t = Transposer::new(32);
        let Rows { blocks, .. } = t.transpose(&b, 2).unwrap();
        let mut got = vec![0.0; 32];
        trees.predict_rows(Rows { x: &a, blocks }, &mut got).unwrap();
        let (mut of_a, mut of_b) = (vec![0.0; 32], vec![0.0; 32]);
        trees.predict(&a, &mut of_a).unwrap();
        trees.predict(&b, &mut of_b).unwrap();
        assert_ne!(bits(&of_a), bits(&of_b), "the test's rows must score apart");
        assert_eq!(bits(&got), bits(&of_b));
        // Blocks of another width are not read: the head transposes its own.
        let x = rows(15, 3);
        let mut t3 = Transposer::new(32);
        let three = t3.transpose(&x[..30], 3).unwrap();
        let (mut got, mut want) = (vec![0.0; 15], vec![0.0; 15]);
        trees.predict_rows(three, &mut got).unwrap();
        trees.predict(&x[..30], &mut want).unwrap();
        assert_eq!(bits(&got), bits(&want));
        // What a transposer cannot take is refused, with what was wrong.
        let x = rows(33, 4);
        let err = Transposer::new(32).transpose(&x, 2).unwrap_err();
        assert_eq!(err, NativeError::Capacity { rows: 33, max: 32 });
        assert_eq!(err.to_string(), "33 rows: room for 32");
        let err = Transposer::new(32).transpose(&x[..5], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input has 5 values: not whole rows of 2 features"
        );
        let err = Transposer::new(32).transpose(&[], 65).unwrap_err();
        assert_eq!(
            err.to_string(),
            "65 features a row: the native backend takes 1 to 64"
        );
        assert_eq!(
            Transposer::new(32).transpose(&[], 0).unwrap_err(),
            NativeError::Width(0)
        );
    }

    /// Thresholds and values on one coarse grid, so that rows often sit on
    /// a threshold exactly (`x < t` false there).
    fn grid(k: u64) -> f32 {
        ((k % 241) as f32 - 120.0) / 100.0
    }

    /// A random tree of up to `leaves` leaves over `features` features,
    /// unbalanced as leaf-wise growth makes them.
    fn random_tree(next: &mut impl FnMut() -> u64, features: usize, leaves: usize) -> Vec<TreeNode> {
        let mut nodes = vec![TreeNode::Leaf(0.0)];
        let mut open = vec![0usize];
        while open.len() < leaves {
            let at = open.swap_remove((next() % open.len() as u64) as usize);
            let (l, r) = (nodes.len(), nodes.len() + 1);
            nodes.push(TreeNode::Leaf(0.0));
            nodes.push(TreeNode::Leaf(0.0));
            nodes[at] = TreeNode::Split {
                feature: (next() % features as u64) as usize,
                threshold: grid(next()),
                left: l,
                right: r,
            };
            open.extend([l, r]);
        }
        for i in open {
            nodes[i] = TreeNode::Leaf((next() % 2001) as f32 / 10_000.0 - 0.1);
        }
        nodes
    }

    #[test]
    fn every_instruction_set_of_this_cpu_equals_the_reference_on_a_large_random_ensemble() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let features = 23;
        let h = TreeEnsembleHead {
            trees: (0..120)
                .map(|i| random_tree(&mut next, features, 1 + i % MAX_LEAVES))
                .collect(),
            base: 0.05,
            platt: Platt { a: 1.1, b: -0.3 },
            n_features: features,
        };
        let c = CompiledHead::compile(&NativeHead::Trees(h.clone()), features).unwrap();
        let rows = 100;
        let x: Vec<f32> = (0..rows * features)
            .map(|i| if i % 97 == 0 { f32::NAN } else { grid(next()) })
            .collect();
        let want: Vec<u32> = x
            .chunks(features)
            .map(|row| h.predict_row(row).to_bits())
            .collect();
        let mut out = vec![0.0; rows];
        c.predict(&x, &mut out).unwrap();
        let got: Vec<u32> = out.iter().map(|o| o.to_bits()).collect();
        assert_eq!(got, want, "detected ({:?})", InstructionSet::detected());
        for set in InstructionSet::ALL {
            let mut out = vec![0.0; rows];
            if set.available() {
                c.predict_on(set, &x, &mut out).unwrap();
                let got: Vec<u32> = out.iter().map(|o| o.to_bits()).collect();
                assert_eq!(got, want, "{set:?}");
            } else {
                let e = c.predict_on(set, &x, &mut out).unwrap_err();
                assert!(e.to_string().contains(set.name()), "{e}");
            }
        }
    }

    #[test]
    fn the_detected_set_is_the_widest_this_cpu_runs() {
        let detected = InstructionSet::detected();
        assert!(detected.available());
        let widest = InstructionSet::ALL.into_iter().rev().find(|s| s.available());
        assert_eq!(Some(detected), widest);
    }

    #[test]
    fn a_capped_head_runs_in_the_widest_set_under_its_cap_with_the_same_bits() {
        let h = head();
        let rows: Vec<f32> = (0..64).map(|i| (i % 9) as f32 * 0.4 - 1.6).collect();
        let mut want = vec![0.0; 32];
        let c = CompiledHead::compile(&NativeHead::Trees(h.clone()), 2).unwrap();
        c.predict(&rows, &mut want).unwrap();
        for cap in InstructionSet::ALL {
            let mut capped = c.clone();
            capped.cap_kernel(cap);
            let k = capped.kernel().unwrap();
            assert!(k <= cap && k.available(), "{cap:?} gave {k:?}");
            assert_eq!(k, InstructionSet::widest_up_to(cap));
            assert!(
                k == cap || !cap.available(),
                "{cap:?} is available but {k:?} runs"
            );
            let mut out = vec![0.0; 32];
            capped.predict(&rows, &mut out).unwrap();
            assert_eq!(out, want, "{cap:?}");
            // A cap never widens: a head held to the baseline stays there.
            capped.cap_kernel(InstructionSet::Avx512);
            assert_eq!(capped.kernel(), Some(k));
        }
        let mut logistic = CompiledHead::compile(
            &NativeHead::Logistic(LogisticHead {
                weights: vec![0.5, -0.5],
                intercept: 0.1,
                platt: Platt { a: 1.0, b: 0.0 },
            }),
            2,
        )
        .unwrap();
        logistic.cap_kernel(InstructionSet::Baseline);
        assert_eq!(logistic.kernel(), None);
    }

    #[test]
    fn malformed_trees_are_refused_with_the_reason() {
        let mut cyc = head();
        cyc.trees[0][2] = TreeNode::Split {
            feature: 1,
            threshold: 0.0,
            left: 0,
            right: 4,
        };
        let mut far = head();
        far.trees[0][0] = TreeNode::Split {
            feature: 0,
            threshold: 0.5,
            left: 2,
            right: 9,
        };
        let mut orphan = head();
        orphan.trees[1].push(TreeNode::Leaf(1.0));
        let mut feature = head();
        feature.trees[0][0] = TreeNode::Split {
            feature: 2,
            threshold: 0.5,
            left: 2,
            right: 1,
        };
        let mut nan = head();
        nan.trees[0][1] = TreeNode::Leaf(f32::NAN);
        for (h, says) in [
            (cyc, "reached twice"),
            (far, "points at node 9"),
            (orphan, "not reached"),
            (feature, "feature 2 of 2"),
            (nan, "non-finite leaf"),
        ] {
            let e = CompiledHead::compile(&NativeHead::Trees(h), 2)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = CompiledHead::compile(&NativeHead::Trees(head()), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 2 features"), "{e}");
        // Compiled directly (public), a head of no features is refused
        // too: a block of zero-width rows would have no end.
        let none = TreeEnsembleHead {
            trees: vec![vec![TreeNode::Leaf(0.5)]],
            n_features: 0,
            ..head()
        };
        let e = CompiledTrees::compile(&none).unwrap_err().to_string();
        assert!(e.contains("no features"), "{e}");
        let c = CompiledHead::compile(&NativeHead::Trees(head()), 2).unwrap();
        let e = c.predict(&[0.0; 5], &mut [0.0; 2]).unwrap_err().to_string();
        assert!(e.contains("5 values"), "{e}");
    }
}
