//! Sparse-weight MatMul ([`pare_k_spmm`]): `C[m x n] = act(A[m x k] · W[k x n] + bias[n] +
//! residual[m x n])`, f32, A and C row-major (batch dims folded into `m`), W a compile-time
//! constant with many zeros (e.g. after `prune-unstructured`), packed by [`spmm_prepare_b`].
//!
//! # Algorithm: column CSR, M vectorized
//!
//! Each non-zero `w = W[p, j]` contributes `w · A[:, p]` to column `j` of C. The kernel
//! transposes A into `Aᵀ` (in the scratch, per tile of up to 32 rows of A, zero-padded to 8, 16
//! or 32 lanes), then for each output column `j` and each non-zero `(p, w)` of column `j`:
//! `Cᵀ[j, :] += w · Aᵀ[p, :]`: one broadcast and `lanes/8` FMAs on 8-wide vectors, every lane
//! useful. With 32 lanes that is 4 accumulators per column, unrolled over 2 non-zeros into 8
//! independent FMA chains (8 over 4 non-zeros with 16 lanes, 8 non-zeros with 8 lanes). `Cᵀ` is
//! then transposed back into C (8x8 register transposes) with the residual and activation
//! fused; the bias initializes the accumulators.
//!
//! Why this format: random unstructured sparsity leaves almost no all-zero rows in a 16- or
//! 8-column panel (`0.9^16 ≈ 19 %` at 90 % sparsity), so a panel format (dense micro-kernel
//! skipping zero k) does nearly dense work. CSR per column does work proportional to the
//! non-zeros for any pattern (2:4 included), at the price of the two transposes (`O(m·k +
//! m·n)`, 8x8 in registers), which is why it loses for tiny sparsity. For `m < 8` most lanes
//! are padding and the kernel only wins when W is very sparse (see [`spmm_is_faster`]).
//!
//! Long `k` is cut into blocks of `k_block` rows (stored in the packed weight) so the slice of
//! `Aᵀ` the columns gather from stays in L1; the partial `Cᵀ` columns are reloaded per block.
//!
//! # Packed weight ([`spmm_prepare_b`]), 32-bit words
//!
//! ```text
//! [0] SPMM_BLOB_MAGIC  [1] k  [2] n  [3] nnz  [4] k_block  [5..8] 0
//! [8 .. 8 + nb·n + 1]        ptr: non-zeros of (k block b, column j) are ptr[b·n + j] .. ptr[b·n + j + 1]
//! [.. + nnz]                 idx: the row p (absolute, < k) of each non-zero, increasing per list
//! [.. + nnz]                 val: the value (f32 bits)
//! ```
//!
//! with `nb = ceil(k / k_block)`. Exact zeros (`±0.0`) are dropped; NaN and infinities are kept.
//! The kernel checks the header, that `ptr` is non-decreasing and ends at `nnz`, and that every
//! `idx < k` before reading anything through them (one linear pass).
//!
//! **Word layout** ([`SPMM_WORDS`] words): `[SPMM_TAG, m, n, k, nnz, k_block, has_bias,
//! has_residual, act_kind, act_p0, act_p1]`.
//!
//! **Buffers** (6 pointers): `[a (m·k f32), b (the packed weight, [`SpmmParams::b_len`] words),
//! bias (n f32, if has_bias), residual (m·n f32, if has_residual; may be `c` itself), c (m·n
//! f32), scratch ([`SpmmParams::scratch_bytes`])]`.
//!
//! **Threads**: the columns are split into ranges of about equal non-zero counts (multiples of
//! 8 columns); `Aᵀ` is built once, the final transpose is split by rows.

use super::conv::{
    c_guard, c_params, decode_activation, encode_activation, gemm_bufs, need_len, run_parts,
    split_bounds, task_count, word_bool, word_usize, GemmLens, KernelError, Res, ACT_WORDS,
    MAX_DIM, MIN_TASK_WORK,
};
use super::STATUS_PARAMS;
use crate::{Activation, Isa};

/// Tag word that starts an encoded [`SpmmParams`] (`"SPMM"`, layout version 1).
pub const SPMM_TAG: i64 = 0x5350_4d4d_0001;
/// Number of words of an encoded [`SpmmParams`].
pub const SPMM_WORDS: usize = 8 + ACT_WORDS;
/// First word of a packed weight (`"SPM1"`).
pub const SPMM_BLOB_MAGIC: u32 = 0x5350_4d31;
/// Words before the `ptr` array of a packed weight.
pub const SPMM_HEADER_WORDS: usize = 8;
/// The `k_block` [`spmm_prepare_b`] uses: 256 rows of a 32-lane `Aᵀ` tile are 32 KiB.
pub const SPMM_DEFAULT_K_BLOCK: usize = 256;

/// Widest tile of rows of A (lanes of `Aᵀ`).
const MAX_LANES: usize = 32;

/// Parameters of `pare_k_spmm` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpmmParams {
    /// Rows of A and C (all batch dims folded in).
    pub m: usize,
    /// Columns of W and C.
    pub n: usize,
    /// Columns of A, rows of W.
    pub k: usize,
    /// Non-zeros of the packed weight.
    pub nnz: usize,
    /// Rows of W per k block of the packed weight (>= 1).
    pub k_block: usize,
    /// A per-column bias is added.
    pub has_bias: bool,
    /// A residual shaped like C is added (after the bias).
    pub has_residual: bool,
    /// Applied last.
    pub activation: Activation,
}

impl SpmmParams {
    /// The buffer lengths of the C entry point.
    pub(crate) fn buffer_lens(&self) -> GemmLens {
        GemmLens {
            a: self.a_len(),
            b: self.b_len(),
            bias: self.has_bias.then_some(self.n),
            residual: self.has_residual,
            c: self.c_len(),
            scratch: self.scratch_bytes(),
        }
    }

    /// A plain product, nothing fused.
    pub fn new(m: usize, n: usize, k: usize, nnz: usize, k_block: usize) -> Self {
        SpmmParams {
            m,
            n,
            k,
            nnz,
            k_block,
            has_bias: false,
            has_residual: false,
            activation: Activation::Identity,
        }
    }

    /// A plain product with `k`, `n`, `nnz` and `k_block` read from the header of a weight
    /// packed by [`spmm_prepare_b`].
    pub fn for_weight(m: usize, packed: &[u32]) -> Result<Self, KernelError> {
        if packed.len() < SPMM_HEADER_WORDS || packed[0] != SPMM_BLOB_MAGIC {
            return Err(KernelError::params("not a packed sparse weight"));
        }
        let w = |i: usize| packed[i] as usize;
        let p = SpmmParams::new(m, w(2), w(1), w(3), w(4));
        p.validate()?;
        Ok(p)
    }

    /// The words of this block (see the module doc).
    pub fn encode(&self) -> Vec<i64> {
        let mut v = vec![
            SPMM_TAG,
            self.m as i64,
            self.n as i64,
            self.k as i64,
            self.nnz as i64,
            self.k_block as i64,
            self.has_bias as i64,
            self.has_residual as i64,
        ];
        encode_activation(&self.activation, &mut v);
        v
    }

    /// Parses and validates words produced by [`SpmmParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != SPMM_WORDS || words[0] != SPMM_TAG {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let p = SpmmParams {
            m: u(1)?,
            n: u(2)?,
            k: u(3)?,
            nnz: u(4)?,
            k_block: u(5)?,
            has_bias: word_bool(words[6])?,
            has_residual: word_bool(words[7])?,
            activation: decode_activation(&words[8..8 + ACT_WORDS])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters and that every size fits.
    pub fn validate(&self) -> Result<(), KernelError> {
        if [self.m, self.n, self.k, self.nnz, self.k_block]
            .iter()
            .any(|&d| d > MAX_DIM)
        {
            return Err(KernelError::params("an spmm dimension exceeds i32::MAX"));
        }
        if self.k_block == 0 {
            return Err(KernelError::params("spmm k_block must be >= 1"));
        }
        if self.nnz as u128 > self.k as u128 * self.n as u128 {
            return Err(KernelError::params("spmm nnz exceeds k·n"));
        }
        self.activation
            .validate()
            .map_err(|e| KernelError::params(e.to_string()))?;
        if self.lens().is_none() {
            return Err(KernelError::params("spmm buffer sizes overflow"));
        }
        Ok(())
    }

    /// Number of k blocks.
    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(self.k_block.max(1))
    }

    /// `[a, c, b words, scratch floats]`.
    fn lens(&self) -> Option<[usize; 4]> {
        let a = self.m.checked_mul(self.k)?;
        let c = self.m.checked_mul(self.n)?;
        c.checked_mul(4)?;
        let ptr = self.k_blocks().checked_mul(self.n)?.checked_add(1)?;
        let b = SPMM_HEADER_WORDS
            .checked_add(ptr)?
            .checked_add(self.nnz.checked_mul(2)?)?;
        // u32 offsets in the packed weight.
        if ptr > u32::MAX as usize || self.nnz > u32::MAX as usize {
            return None;
        }
        let lanes = total_lanes(self.m);
        let scratch = self
            .k
            .checked_add(self.n)?
            .checked_mul(lanes)?
            .checked_add(16)?;
        scratch.checked_mul(4)?;
        Some([a, c, b, scratch])
    }

    /// Elements of `a`.
    pub fn a_len(&self) -> usize {
        self.lens().map_or(0, |l| l[0])
    }

    /// Elements of `c` (and of the residual).
    pub fn c_len(&self) -> usize {
        self.lens().map_or(0, |l| l[1])
    }

    /// 32-bit words of the packed weight.
    pub fn b_len(&self) -> usize {
        self.lens().map_or(0, |l| l[2])
    }

    /// Scratch bytes: `Aᵀ` (`k` x padded `m`) and `Cᵀ` (`n` x padded `m`), plus alignment
    /// slack.
    pub fn scratch_bytes(&self) -> usize {
        self.lens().map_or(0, |l| l[3] * 4)
    }
}

/// Lanes of the tile holding `r` (1..=32) rows.
fn tile_lanes(r: usize) -> usize {
    if r <= 8 {
        8
    } else if r <= 16 {
        16
    } else {
        32
    }
}

/// Sum of the lanes of all tiles of `m` rows (full 32-row tiles, then one narrower).
fn total_lanes(m: usize) -> usize {
    let rem = m % MAX_LANES;
    (m / MAX_LANES) * MAX_LANES + if rem == 0 { 0 } else { tile_lanes(rem) }
}

/// A tile of rows of A: rows `i0 .. i0 + rows`, `lanes` wide, `off` lanes before it.
#[derive(Debug, Clone, Copy)]
struct Tile {
    i0: usize,
    rows: usize,
    lanes: usize,
    off: usize,
}

fn tiles(m: usize) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut i0 = 0;
    while i0 < m {
        let rows = (m - i0).min(MAX_LANES);
        let lanes = tile_lanes(rows);
        out.push(Tile {
            i0,
            rows,
            lanes,
            off: i0,
        });
        i0 += rows;
    }
    out
}

/// Packs `op(W)` (`k x n`; `w` is `k x n` row-major, or `n x k` with `trans_b`) into the sparse
/// layout of the module doc with the default `k_block` ([`SPMM_DEFAULT_K_BLOCK`]).
pub fn spmm_prepare_b(
    k: usize,
    n: usize,
    w: &[f32],
    trans_b: bool,
) -> Result<Vec<u32>, KernelError> {
    spmm_prepare_b_blocked(k, n, w, trans_b, SPMM_DEFAULT_K_BLOCK)
}

/// [`spmm_prepare_b`] with an explicit `k_block` (>= 1; `k` or more: no blocking).
pub fn spmm_prepare_b_blocked(
    k: usize,
    n: usize,
    w: &[f32],
    trans_b: bool,
    k_block: usize,
) -> Result<Vec<u32>, KernelError> {
    let k_block = k_block.clamp(1, k.max(1));
    let total = k
        .checked_mul(n)
        .ok_or_else(|| KernelError::params("k·n overflows"))?;
    need_len("w", w.len(), total)?;
    let at = |p: usize, j: usize| if trans_b { w[j * k + p] } else { w[p * n + j] };
    let nnz = w[..total].iter().filter(|&&x| x != 0.0).count();
    let p = SpmmParams::new(0, n, k, nnz, k_block);
    p.validate()?;
    let nb = p.k_blocks();
    let mut ptr = Vec::with_capacity(nb * n + 1);
    let mut idx = Vec::with_capacity(nnz);
    let mut val = Vec::with_capacity(nnz);
    for b in 0..nb {
        let rows = b * k_block..((b + 1) * k_block).min(k);
        for j in 0..n {
            ptr.push(idx.len() as u32);
            for q in rows.clone() {
                let v = at(q, j);
                if v != 0.0 {
                    idx.push(q as u32);
                    val.push(v.to_bits());
                }
            }
        }
    }
    ptr.push(idx.len() as u32);
    let mut out = Vec::with_capacity(p.b_len());
    out.extend_from_slice(&[
        SPMM_BLOB_MAGIC,
        k as u32,
        n as u32,
        nnz as u32,
        k_block as u32,
        0,
        0,
        0,
    ]);
    out.extend(ptr);
    out.extend(idx);
    out.extend(val);
    debug_assert_eq!(out.len(), p.b_len());
    Ok(out)
}

/// A checked view of a packed weight.
struct Weight<'a> {
    ptr: &'a [u32],
    idx: &'a [u32],
    val: &'a [f32],
}

fn weight_view<'a>(p: &SpmmParams, b: &'a [u32]) -> Result<Weight<'a>, KernelError> {
    need_len("b", b.len(), p.b_len())?;
    let head = [
        SPMM_BLOB_MAGIC,
        p.k as u32,
        p.n as u32,
        p.nnz as u32,
        p.k_block as u32,
    ];
    if b[..5] != head {
        return Err(KernelError::params(
            "packed sparse weight header does not match the params",
        ));
    }
    let np = p.k_blocks() * p.n + 1;
    let (ptr, rest) = b[SPMM_HEADER_WORDS..].split_at(np);
    let (idx, rest) = rest.split_at(p.nnz);
    let val = cast_f32(&rest[..p.nnz]);
    let mut prev = 0u32;
    let mut ok = ptr[0] == 0 && ptr[np - 1] as usize == p.nnz;
    for &x in ptr {
        ok &= x >= prev;
        prev = x;
    }
    if !ok {
        return Err(KernelError::params("packed sparse weight: bad ptr array"));
    }
    // Vectorizable: the maximum index.
    let max = idx.iter().fold(0u32, |a, &x| a.max(x));
    if p.nnz > 0 && max as usize >= p.k {
        return Err(KernelError::params("packed sparse weight: row index >= k"));
    }
    Ok(Weight { ptr, idx, val })
}

/// Reinterprets 32-bit words as f32.
fn cast_f32(w: &[u32]) -> &[f32] {
    // SAFETY: f32 has the size and alignment of u32 and every bit pattern is a valid f32; the
    // length is unchanged and the borrow is carried over.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<f32>(), w.len()) }
}

/// Reinterprets f32 as 32-bit words.
fn cast_u32(w: &[f32]) -> &[u32] {
    // SAFETY: as `cast_f32`, the other way round.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u32>(), w.len()) }
}

/// Computes the product (see the module doc). `bias` must be present exactly when `has_bias`,
/// `residual` exactly when `has_residual`; `scratch` holds at least
/// [`SpmmParams::scratch_bytes`] bytes.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub fn spmm(
    p: &SpmmParams,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    spmm_with_isa(p, a, b, bias, residual, c, scratch, threads, Isa::Auto)
}

/// [`spmm`] with the instruction set forced (`Generic`: the portable kernels; `Auto`: the best
/// the CPU has; an unsupported choice is an error). For tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn spmm_with_isa(
    p: &SpmmParams,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
    isa: Isa,
) -> Result<(), KernelError> {
    let res = residual.map_or(Res::None, Res::Separate);
    spmm_impl(p, a, b, bias, res, c, scratch, threads, isa)
}

/// Whether to run the AVX2 + FMA kernels for `isa`.
fn use_avx2(isa: Isa) -> Result<bool, KernelError> {
    match isa {
        Isa::Generic => Ok(false),
        Isa::Auto => Ok(Isa::detect() == Isa::Avx2Fma),
        other => {
            if other.supported() && Isa::detect() == Isa::Avx2Fma {
                Ok(true)
            } else {
                Err(KernelError {
                    status: super::STATUS_CPU,
                    message: "spmm: instruction set not supported by this CPU".into(),
                })
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spmm_impl(
    p: &SpmmParams,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    c: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
    isa: Isa,
) -> Result<(), KernelError> {
    p.validate()?;
    p.buffer_lens().check(a, bias, &res, c, scratch)?;
    let (m, n, k) = (p.m, p.n, p.k);
    let wv = weight_view(p, b)?;
    let avx = use_avx2(isa)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let lanes = total_lanes(m);
    let sf = scratch_floats(scratch, (k + n) * lanes)?;
    let (at, ct) = sf.split_at_mut(k * lanes);
    let tl = tiles(m);
    let a = &a[..m * k];
    let bias = bias.map(|v| &v[..n]);

    // 1. Aᵀ, tile by tile.
    for t in &tl {
        let dst = &mut at[t.off * k..(t.off + t.lanes) * k];
        transpose_a(
            avx,
            &a[t.i0 * k..(t.i0 + t.rows) * k],
            t.rows,
            k,
            t.lanes,
            dst,
        );
    }
    let at: &[f32] = at;

    // 2. Cᵀ, columns split over the threads by non-zero count.
    let work = 2 * p.nnz.max(1) * lanes + (k + n) * lanes;
    let nt = task_count(threads, work, MIN_TASK_WORK).min(n.div_ceil(8));
    let bounds = column_bounds(&wv, n, p.k_blocks(), nt);
    // Per thread: for each tile, its columns' slice of that tile's Cᵀ.
    let mut parts: Vec<(usize, usize, Vec<&mut [f32]>)> = bounds
        .windows(2)
        .map(|w| (w[0], w[1], Vec::with_capacity(tl.len())))
        .collect();
    {
        let mut rest: &mut [f32] = &mut ct[..n * lanes];
        for t in &tl {
            let (tile_ct, r) = std::mem::take(&mut rest).split_at_mut(n * t.lanes);
            rest = r;
            let cb: Vec<usize> = bounds.iter().map(|&j| j * t.lanes).collect();
            for (part, s) in parts.iter_mut().zip(split_bounds(tile_ct, &cb)) {
                part.2.push(s);
            }
        }
    }
    let nb = p.k_blocks();
    let wv = &wv;
    // k == 0: no block, but the columns still start from the bias (or zero).
    let no_block = vec![0u32; if nb == 0 { n + 1 } else { 0 }];
    run_parts(
        parts,
        &|_, (j0, j1, cts): (usize, usize, Vec<&mut [f32]>)| {
            for (t, cts) in tl.iter().zip(cts) {
                let at_t = &at[t.off * k..(t.off + t.lanes) * k];
                for blk in 0..nb.max(1) {
                    let starts = if nb == 0 {
                        &no_block[j0..=j1]
                    } else {
                        &wv.ptr[blk * n + j0..=blk * n + j1]
                    };
                    let init = if blk == 0 {
                        Init::Bias(bias.map(|v| &v[j0..j1]))
                    } else {
                        Init::Accumulate
                    };
                    columns(avx, t.lanes, at_t, cts, starts, wv.idx, wv.val, init);
                }
            }
        },
    );
    let ct: &[f32] = &ct[..n * lanes];

    // 3. C = act(transpose(Cᵀ) + residual), rows split over the threads in groups of 8.
    let groups = m.div_ceil(8);
    let nt = task_count(threads, m * n * 4, MIN_TASK_WORK).min(groups);
    let rb: Vec<usize> = (0..=nt).map(|i| (groups * i / nt * 8).min(m)).collect();
    let cb: Vec<usize> = rb.iter().map(|&r| r * n).collect();
    let c = &mut c[..m * n];
    let res_sep = match res {
        Res::Separate(r) => Some(&r[..m * n]),
        _ => None,
    };
    let in_place = matches!(res, Res::InPlace);
    let parts: Vec<(usize, &mut [f32])> = split_bounds(c, &cb)
        .into_iter()
        .enumerate()
        .map(|(i, s)| (rb[i], s))
        .collect();
    let act = p.activation;
    run_parts(parts, &|_, (r0, cs): (usize, &mut [f32])| {
        let rows = cs.len() / n;
        let mut g = 0;
        while g < rows {
            let i = r0 + g;
            let t = tl[i / MAX_LANES];
            let lane0 = i - t.i0;
            let cnt = (rows - g).min(8);
            let src = &ct[t.off * n..(t.off + t.lanes) * n];
            let out = &mut cs[g * n..(g + cnt) * n];
            let r = res_sep.map(|r| &r[i * n..(i + cnt) * n]);
            finish_rows(avx, src, t.lanes, lane0, n, r, in_place, act, out);
            g += cnt;
        }
    });
    Ok(())
}

/// The 64-byte aligned floats of the scratch.
fn scratch_floats(scratch: &mut [u8], floats: usize) -> Result<&mut [f32], KernelError> {
    let off = scratch.as_ptr().align_offset(64).min(scratch.len());
    super::conv::scratch_f32(&mut scratch[off..], floats)
}

/// `t + 1` column bounds (multiples of 8, last `n`) giving every part about the same number of
/// non-zeros (plus a per-column cost for the transposes).
fn column_bounds(w: &Weight<'_>, n: usize, nb: usize, t: usize) -> Vec<usize> {
    if t <= 1 {
        return vec![0, n];
    }
    let mut cum = vec![0usize; n + 1];
    for j in 0..n {
        let mut c = 8; // per-column overhead, in non-zeros
        for b in 0..nb {
            c += (w.ptr[b * n + j + 1] - w.ptr[b * n + j]) as usize;
        }
        cum[j + 1] = cum[j] + c;
    }
    let total = cum[n];
    let mut out = vec![0];
    let mut j = 0;
    for i in 1..t {
        let target = total * i / t;
        while j < n && cum[j] < target {
            j += 1;
        }
        let jb = (j / 8 * 8).max(*out.last().unwrap_or(&0));
        out.push(jb.min(n));
    }
    out.push(n);
    out
}

/// How a column's accumulators start.
#[derive(Clone, Copy)]
enum Init<'a> {
    /// From the bias of these columns (or zero): the first k block.
    Bias(Option<&'a [f32]>),
    /// From the partial sums already in `Cᵀ`.
    Accumulate,
}

/// `Aᵀ` of one tile: `dst[p*lanes + r] = a[r*k + p]` for `r < rows`, 0 for `rows <= r < lanes`.
fn transpose_a(avx: bool, a: &[f32], rows: usize, k: usize, lanes: usize, dst: &mut [f32]) {
    assert!(a.len() >= rows * k && dst.len() >= k * lanes && rows <= lanes);
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: `avx` is only true when AVX2 and FMA were detected; lengths asserted above.
        return unsafe { avx2::transpose_a(a, rows, k, lanes, dst) };
    }
    let _ = avx;
    for r in 0..lanes {
        if r < rows {
            let row = &a[r * k..(r + 1) * k];
            for (p, &x) in row.iter().enumerate() {
                dst[p * lanes + r] = x;
            }
        } else {
            for p in 0..k {
                dst[p * lanes + r] = 0.0;
            }
        }
    }
}

/// Accumulates the columns `starts.len() - 1` of one tile and one k block into `ct` (`lanes`
/// floats per column).
#[allow(clippy::too_many_arguments)]
fn columns(
    avx: bool,
    lanes: usize,
    at: &[f32],
    ct: &mut [f32],
    starts: &[u32],
    idx: &[u32],
    val: &[f32],
    init: Init<'_>,
) {
    let cols = starts.len() - 1;
    assert_eq!(ct.len(), cols * lanes);
    assert_eq!(idx.len(), val.len());
    if let Init::Bias(Some(b)) = init {
        assert_eq!(b.len(), cols);
    }
    // Callers pass the checked weight: starts non-decreasing and <= nnz, every idx < k.
    debug_assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    debug_assert!(starts.last().is_none_or(|&e| e as usize <= idx.len()));
    debug_assert!(idx.iter().all(|&p| (p as usize + 1) * lanes <= at.len()));
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: AVX2+FMA detected (`avx`); the contract of `avx2::columns` is the checked
        // weight (non-decreasing `starts` within `idx`, every `idx < k`, `at` holding `k` rows
        // of `lanes`), established by `weight_view` and the slicing in `spmm_impl`.
        unsafe {
            match lanes {
                8 => avx2::columns::<1, 8>(at, ct, starts, idx, val, init),
                16 => avx2::columns::<2, 4>(at, ct, starts, idx, val, init),
                _ => avx2::columns::<4, 2>(at, ct, starts, idx, val, init),
            }
        }
        return;
    }
    let _ = avx;
    match lanes {
        8 => columns_generic::<8>(at, ct, starts, idx, val, init),
        16 => columns_generic::<16>(at, ct, starts, idx, val, init),
        _ => columns_generic::<32>(at, ct, starts, idx, val, init),
    }
}

fn columns_generic<const L: usize>(
    at: &[f32],
    ct: &mut [f32],
    starts: &[u32],
    idx: &[u32],
    val: &[f32],
    init: Init<'_>,
) {
    for (c, out) in ct.chunks_exact_mut(L).enumerate() {
        let mut acc = [0f32; L];
        match init {
            Init::Bias(Some(b)) => acc = [b[c]; L],
            Init::Bias(None) => {}
            Init::Accumulate => acc.copy_from_slice(out),
        }
        let (s, e) = (starts[c] as usize, starts[c + 1] as usize);
        for (&p, &w) in idx[s..e].iter().zip(&val[s..e]) {
            let row: &[f32; L] = at[p as usize * L..(p as usize + 1) * L]
                .try_into()
                .expect("L floats");
            for l in 0..L {
                acc[l] += w * row[l];
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// Rows `lane0 .. lane0 + out.len()/n` of one tile's `Cᵀ` (`src`, `lanes` floats per column)
/// into `out` (row-major, `n` columns), plus the residual (`res`, or `out`'s old contents when
/// `in_place`), then the activation.
#[allow(clippy::too_many_arguments)]
fn finish_rows(
    avx: bool,
    src: &[f32],
    lanes: usize,
    lane0: usize,
    n: usize,
    res: Option<&[f32]>,
    in_place: bool,
    act: Activation,
    out: &mut [f32],
) {
    let rows = out.len() / n;
    assert!(rows <= 8 && lane0 + rows <= lanes && src.len() >= n * lanes);
    if let Some(r) = res {
        assert_eq!(r.len(), out.len());
    }
    #[cfg(target_arch = "x86_64")]
    if avx && lane0 + 8 <= lanes {
        // SAFETY: AVX2+FMA detected; lengths asserted above (8 lanes from lane0 are in the
        // tile, so the 8x8 blocks read inside `src`).
        unsafe { avx2::finish_rows(src, lanes, lane0, n, res, in_place, act, out) };
        return;
    }
    let _ = avx;
    for r in 0..rows {
        let o = &mut out[r * n..(r + 1) * n];
        for (j, y) in o.iter_mut().enumerate() {
            let mut v = src[j * lanes + lane0 + r];
            if let Some(rs) = res {
                v += rs[r * n + j];
            } else if in_place {
                v += *y;
            }
            *y = v;
        }
        act.apply_slice(o);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use super::{Activation, Init};

    /// Transposes an 8x8 block held in 8 registers.
    #[inline(always)]
    unsafe fn t8x8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: register-only intrinsics; the caller is compiled with AVX.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        }
    }

    /// See `super::transpose_a`.
    ///
    /// # Safety
    /// AVX2 available; `a.len() >= rows*k`, `dst.len() >= k*lanes`, `rows <= lanes`, `lanes` a
    /// multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transpose_a(
        a: &[f32],
        rows: usize,
        k: usize,
        lanes: usize,
        dst: &mut [f32],
    ) {
        let k8 = k / 8 * 8;
        let ap = a.as_ptr();
        let dp = dst.as_mut_ptr();
        for r0 in (0..lanes).step_by(8) {
            let mut p0 = 0;
            while p0 < k8 {
                let mut v = [_mm256_setzero_ps(); 8];
                for (rr, x) in v.iter_mut().enumerate() {
                    if r0 + rr < rows {
                        // SAFETY: row r0+rr < rows, columns p0..p0+8 <= k: inside `a`.
                        *x = unsafe { _mm256_loadu_ps(ap.add((r0 + rr) * k + p0)) };
                    }
                }
                // SAFETY: registers only.
                let t = unsafe { t8x8(v) };
                for (c, x) in t.iter().enumerate() {
                    // SAFETY: row p0+c < k of dst, lanes r0..r0+8 <= lanes: inside `dst`.
                    unsafe { _mm256_storeu_ps(dp.add((p0 + c) * lanes + r0), *x) };
                }
                p0 += 8;
            }
            for p in k8..k {
                for rr in 0..8 {
                    let r = r0 + rr;
                    dst[p * lanes + r] = if r < rows { a[r * k + p] } else { 0.0 };
                }
            }
        }
    }

    /// See `super::columns`: `V` vectors of 8 lanes per column, non-zeros unrolled by `U`.
    ///
    /// # Safety
    /// AVX2+FMA available; `ct.len() == (starts.len()-1) * 8V`; `starts` non-decreasing with
    /// its last element `<= idx.len() == val.len()`; every `idx[q]` with `q` in a column's
    /// range satisfies `(idx[q]+1) * 8V <= at.len()`; a bias slice has one value per column.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn columns<const V: usize, const U: usize>(
        at: &[f32],
        ct: &mut [f32],
        starts: &[u32],
        idx: &[u32],
        val: &[f32],
        init: Init<'_>,
    ) {
        let lanes = 8 * V;
        let ap = at.as_ptr();
        let ip = idx.as_ptr();
        let vp = val.as_ptr();
        for (c, out) in ct.chunks_exact_mut(lanes).enumerate() {
            let mut acc = [[_mm256_setzero_ps(); V]; U];
            match init {
                Init::Bias(Some(b)) => acc[0] = [_mm256_set1_ps(b[c]); V],
                Init::Bias(None) => {}
                Init::Accumulate => {
                    for (v, x) in acc[0].iter_mut().enumerate() {
                        // SAFETY: `out` holds 8V floats.
                        *x = unsafe { _mm256_loadu_ps(out.as_ptr().add(8 * v)) };
                    }
                }
            }
            let (s, e) = (starts[c] as usize, starts[c + 1] as usize);
            let mut q = s;
            while q + U <= e {
                for (u, accu) in acc.iter_mut().enumerate() {
                    // SAFETY: q+u < e <= idx.len() == val.len(); the row idx[q+u] of `at`
                    // holds 8V floats (the contract).
                    unsafe {
                        let w = _mm256_broadcast_ss(&*vp.add(q + u));
                        let row = ap.add(*ip.add(q + u) as usize * lanes);
                        for (v, x) in accu.iter_mut().enumerate() {
                            *x = _mm256_fmadd_ps(w, _mm256_loadu_ps(row.add(8 * v)), *x);
                        }
                    }
                }
                q += U;
            }
            while q < e {
                // SAFETY: as above, q < e.
                unsafe {
                    let w = _mm256_broadcast_ss(&*vp.add(q));
                    let row = ap.add(*ip.add(q) as usize * lanes);
                    for (v, x) in acc[0].iter_mut().enumerate() {
                        *x = _mm256_fmadd_ps(w, _mm256_loadu_ps(row.add(8 * v)), *x);
                    }
                }
                q += 1;
            }
            let (first, rest) = acc.split_at_mut(1);
            for other in rest.iter() {
                for (x, &y) in first[0].iter_mut().zip(other) {
                    *x = _mm256_add_ps(*x, y);
                }
            }
            for (v, &x) in first[0].iter().enumerate() {
                // SAFETY: `out` holds 8V floats.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * v), x) };
            }
        }
    }

    /// See `super::finish_rows`.
    ///
    /// # Safety
    /// AVX2+FMA available; `out.len() == rows*n` with `rows <= 8`; `lane0 + 8 <= lanes`;
    /// `src.len() >= n*lanes`; `res`, if any, as long as `out`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn finish_rows(
        src: &[f32],
        lanes: usize,
        lane0: usize,
        n: usize,
        res: Option<&[f32]>,
        in_place: bool,
        act: Activation,
        out: &mut [f32],
    ) {
        let rows = out.len() / n;
        let n8 = n / 8 * 8;
        let sp = src.as_ptr();
        let op = out.as_mut_ptr();
        let mut j = 0;
        while j < n8 {
            let mut v = [_mm256_setzero_ps(); 8];
            for (c, x) in v.iter_mut().enumerate() {
                // SAFETY: column j+c < n, lanes lane0..lane0+8 <= lanes: inside `src`.
                *x = unsafe { _mm256_loadu_ps(sp.add((j + c) * lanes + lane0)) };
            }
            // SAFETY: registers only.
            let t = unsafe { t8x8(v) };
            for (r, &x) in t.iter().enumerate().take(rows) {
                // SAFETY: row r < rows, columns j..j+8 <= n: inside `out` (and `res`).
                unsafe {
                    let o = op.add(r * n + j);
                    let y = match res {
                        Some(rs) => _mm256_add_ps(x, _mm256_loadu_ps(rs.as_ptr().add(r * n + j))),
                        None if in_place => _mm256_add_ps(x, _mm256_loadu_ps(o)),
                        None => x,
                    };
                    _mm256_storeu_ps(o, y);
                }
            }
            j += 8;
        }
        for r in 0..rows {
            for jj in n8..n {
                let mut v = src[jj * lanes + lane0 + r];
                if let Some(rs) = res {
                    v += rs[r * n + jj];
                } else if in_place {
                    v += out[r * n + jj];
                }
                out[r * n + jj] = v;
            }
            act.apply_slice(&mut out[r * n..(r + 1) * n]);
        }
    }
}

/// Sparse MatMul kernel (see the module doc for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`SpmmParams`] (or at least one word that is not its tag);
/// `bufs` to 6 pointers satisfying the buffer contract of the module doc.
#[no_mangle]
pub unsafe extern "C" fn pare_k_spmm(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, SPMM_TAG, SPMM_WORDS) }?;
        let p = SpmmParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs` is the one `gemm_bufs` needs.
        let o = unsafe { gemm_bufs(bufs, &p.buffer_lens()) }?;
        spmm_impl(
            &p,
            o.a,
            cast_u32(o.b),
            o.bias,
            o.res,
            o.c,
            o.scratch,
            threads,
            Isa::Auto,
        )
        .map_err(|e| e.status)
    })
}

/// Whether [`pare_k_spmm`] is expected to beat the dense packed SGEMM (`pare_k_matmul` with a
/// pre-packed B) by a clear margin (predicted ≥ 20 %) for this weight (`op(W)` is `k x n`; `w` is `k x n`
/// row-major, or `n x k` with `trans_b`; only its zero count matters), at one thread.
///
/// See [`spmm_is_faster_nnz`] for the model and its calibration.
pub fn spmm_is_faster(m: usize, k: usize, n: usize, w: &[f32], trans_b: bool) -> bool {
    // The non-zero count does not depend on the storage order.
    let _ = trans_b;
    match k.checked_mul(n) {
        Some(kn) if m > 0 && kn > 0 && w.len() >= kn => {
            let nnz = w[..kn].iter().filter(|&&x| x != 0.0).count();
            spmm_is_faster_nnz(m, k, n, nnz)
        }
        _ => false,
    }
}

/// Predicted time of the dense packed SGEMM, in ns (see [`spmm_is_faster_nnz`]).
pub fn dense_cost_ns(m: usize, k: usize, n: usize) -> f64 {
    let (m, k, n) = (m as f64, k as f64, n as f64);
    (DENSE_NS_PER_FMA * m * k * n).max(DENSE_NS_PER_WEIGHT * k * n)
}

/// Predicted time of [`pare_k_spmm`], in ns (see [`spmm_is_faster_nnz`]).
pub fn spmm_cost_ns(m: usize, k: usize, n: usize, nnz: usize) -> f64 {
    let per_nz: f64 = tiles(m)
        .iter()
        .map(|t| match t.lanes {
            8 => SPMM_NS_PER_NZ[0],
            16 => SPMM_NS_PER_NZ[1],
            _ => SPMM_NS_PER_NZ[2],
        })
        .sum();
    per_nz * nnz as f64 + SPMM_NS_PER_MOVED * (total_lanes(m) * (k + n)) as f64 + SPMM_NS_FIXED
}

/// Dense SGEMM, 1 thread, compute-bound: 93-95 µs for 32x384x384 (4.7 M FMAs), 1.42-1.55 ms
/// for 128x384x1536, 370-400 µs for 32x384x1536 and 32x1536x384 (best samples).
const DENSE_NS_PER_FMA: f64 = 0.020;
/// Dense SGEMM, 1 thread, bound by streaming the packed weight: 43-45 µs for 1x384x1536
/// (2.36 MB of weight).
const DENSE_NS_PER_WEIGHT: f64 = 0.074;
/// Sparse kernel cost per non-zero and per row tile of 8, 16, 32 lanes (1, 2, 4 FMAs per
/// non-zero). 32 lanes: 157-159 µs for the 147 k non-zeros of a dense 32x384x384, 0.26 ns per
/// lane vector on all the 32- and 128-row shapes; 8 lanes (m = 1): 313-327 µs for 590 k
/// non-zeros. 16 lanes not measured: interpolated.
const SPMM_NS_PER_NZ: [f64; 3] = [0.54, 0.62, 1.03];
/// Sparse kernel cost per element of the two transposes (`lanes · (k + n)`), fitted from the
/// 90-95 % sparse points (about 4.7 µs for 32x384x384).
const SPMM_NS_PER_MOVED: f64 = 0.19;
/// Sparse kernel fixed cost per call (weight check, thread split).
const SPMM_NS_FIXED: f64 = 1000.0;
/// Required predicted speedup. The model is within about ±8 % of the best measured samples.
const SPMM_MARGIN: f64 = 1.2;

/// [`spmm_is_faster`] from the non-zero count: `dense_cost_ns >= 1.2 · spmm_cost_ns`.
///
/// Model (one thread, AVX2+FMA kernels of both, on the 2-core AMD EPYC (AVX-512-capable, Zen 4
/// class, 32 KiB L1d, 1 MiB L2) this was written on; `examples/spmm_bench.rs`, best of 31
/// interleaved samples):
///
/// * dense = `max(0.020 ns · m·k·n, 0.074 ns · k·n)` (compute-bound at ~95 GFLOP/s, or
///   streaming a weight that does not stay in cache for tiny `m`);
/// * sparse = `nnz · Σ_tiles c(lanes) + 0.19 ns · lanes_total · (k + n) + 1 µs`, with
///   `c = 0.54 / 0.62 / 1.03 ns` for tiles of 8 / 16 / 32 lanes (rows of A, padded to 8).
///
/// Measured (best-of) crossovers: 32x384x384, 32x384x1536, 128x384x1536: sparse faster from
/// ~45 % random sparsity (1.2-1.3x at 50 %, 1.8-2.0x at 70 %, 5x at 90 %), 32x1536x384 from
/// ~45 % (1.2-1.4x at 50 %), 1x384x1536 from ~88 % (1.2x at 90 %, 2x at 95 %); 2:4 behaves
/// as 50 % random (1.2x). With the 1.2 margin the model picks the sparse kernel from about
/// 55 % sparsity for 32+ rows (never at 50 % or for 2:4 on these shapes) and from 90 % for
/// `m = 1`: every pick was measured ≥ 1.2x faster. It is calibrated for one thread; with more
/// threads both kernels split the work (the sparse one by columns, balanced by non-zeros). The
/// portable (non-AVX2) kernels are not modelled.
pub fn spmm_is_faster_nnz(m: usize, k: usize, n: usize, nnz: usize) -> bool {
    if m == 0 || k == 0 || n == 0 || nnz as u128 > k as u128 * n as u128 {
        return false;
    }
    if SpmmParams::new(m, n, k, nnz, SPMM_DEFAULT_K_BLOCK)
        .validate()
        .is_err()
    {
        return false;
    }
    dense_cost_ns(m, k, n) >= SPMM_MARGIN * spmm_cost_ns(m, k, n, nnz)
}
