//! Integer GEMM for dynamically quantized activations and int8 weights:
//! `u8 (activations) x i8 (weights) -> i32`, dequantized in an f32 epilogue.
//!
//! ## The arithmetic
//!
//! A (`m x k`, f32) is quantized per row, asymmetric uint8, the way onnxruntime's
//! `DynamicQuantizeLinear` quantizes a tensor but with one `(scale, zero)` per row
//! ([`quantize_rows_u8`]): `a ≈ sa[i] * (qa - za[i])`. Per-tensor quantization is the special
//! case of equal entries, so callers that need it pass the same pair for every row. The weight B
//! (`k x n`) is int8 symmetric per output column: `b ≈ sw[j] * qb` (zero point 0). Then
//!
//! ```text
//! C[i,j] = act( sa[i]·sw[j]·( Σ_p qa[i,p]·qb[p,j]  −  za[i]·Σ_p qb[p,j] ) + bias[j] )
//! ```
//!
//! The column sums `Σ_p qb[p,j]` are computed once when B is packed ([`PackedQB`]). The integer
//! part is exact: the kernels accumulate in wrapping i32 arithmetic and the true value of
//! `Σ (qa − za)·qb` is bounded by `k·255·128`, which fits in an i32 for `k <=` [`QGEMM_MAX_K`]
//! (checked), so the wrapped result is the exact one. [`qgemm_i32`] returns that integer
//! matrix; [`qgemm`] the dequantized f32 one.
//!
//! ## Packed B and kernels
//!
//! B is packed once (at compile time, into an artifact that may run on another CPU), so its
//! layout cannot depend on the CPU that runs it; every kernel must be exact on it. The packed
//! layout is [`QbFormat::I8Quads`]: 16-column panels, 4 consecutive k of one column per 32-bit
//! word, any i8 codes. This is exactly what AVX-512 VNNI's `vpdpbusd` consumes, it is the
//! smallest layout (1 byte per weight), and AVX2 can still run it exactly. Whether all codes fit
//! in `[-64, 64]` ("7-bit", what onnxruntime's `reduce_range` produces) is recorded in the pack
//! ([`PackedQB::seven_bit`]); a borrowed [`PackedQBRef`] scans for it only when a kernel needs
//! it (or takes the recorded answer, [`PackedQBRef::with_seven_bit`]). The run-time choice:
//!
//! * **AVX-512 VNNI** ([`Isa::Avx512Vnni`], what [`Isa::Auto`] picks when the CPU has
//!   AVX-512 F/BW/VL/VNNI): an `8 x 32` tile of 16 zmm i32 accumulators (two B panels), per
//!   k-step two 64-byte B loads, one 4-byte A broadcast per row and 16 `vpdpbusd` (u8 x s8,
//!   4 products summed into each i32 lane and added *without saturation*): exact for any codes,
//!   64 MACs per instruction. (Measured on Zen 4 against a `6 x 16` ymm tile, the AVX2
//!   blocking, with AVX-512VL `vpdpbusd`: ~25% slower on the larger shapes, with more loads and
//!   broadcasts per dot product; `12 x 16` and `6 x 32` zmm tiles were within noise of `8 x 32`.)
//! * **AVX2, 7-bit codes**: the `6 x 16` ymm tile with `vpmaddubsw` (u8 x s8, pairs summed to
//!   i16, *saturating*) then `vpmaddwd` with ones (-> i32). A pair sum is at most `2·255·|qb|`,
//!   which fits in i16 iff `|qb| <= 64`, hence the 7-bit condition. 32 MACs per 3 uops.
//! * **AVX2, full-range codes**: a `4 x 16` ymm tile; each k-step's B quads are split in
//!   registers into sign-extended i16 halves `(b0, b2)` and `(b1, b3)` per column (three shifts
//!   per 8 columns, shared by the rows) and A is packed at run time as the matching u16 halves,
//!   so two `vpmaddwd` (pairs summed straight into i32, at most `2·255·128` in magnitude) do the
//!   4 k exactly. 16 MACs per `vpmaddwd` + `vpaddd`, like the old `I16Pairs` kernel, from half
//!   the B bytes. 4 rows (not 6) so that the 4 split B vectors, the 8 accumulators and the 2 A
//!   broadcasts stay in the 16 registers with each A word loaded once per k-step (measured
//!   faster than 6 rows that re-broadcast A per 8 columns). Splitting the *weight* instead
//!   (`b = hi + lo`, two `vpmaddubsw`) was rejected: an exact i16 pair sum of full-range products
//!   does not exist, so each half would still need its own `vpmaddwd` to reach i32, 6 uops per
//!   32 MACs instead of 4.
//! * **Portable** (no AVX2, or [`Isa::Generic`]): plain Rust on the same layout, exact i32.
//!
//! [`QbFormat::I16Pairs`] (2 k per word as i16, A as zero-extended u16 pairs; `vpmaddwd` with
//! AVX2, `vpdpwssd` with VNNI, both exact) is kept so that existing packs still run, but
//! [`pack_qb`] no longer produces it: twice the bytes and no faster anywhere. Edge tiles of
//! the SIMD kernels compute zero-padded panels and store only the valid part.
//!
//! ## Blocking and threads
//!
//! There is no blocking over k: the i32 accumulators stay in registers for the whole k range
//! and the epilogue runs once, so no i32 partial sums go through memory. A is packed in blocks of
//! up to ~256 KiB of rows (L2); for every 16-column B micro-panel (`k/4·64` or `k/2·64` bytes,
//! in L1 for k up to ~512/256 and streamed from L2 with prefetch beyond that) the row tiles of
//! the A block run over it (two panels at a time for the VNNI tile). Threads split C in whole
//! tiles along M when there are enough row tiles (B is pre-packed, so that duplicates nothing)
//! and along N otherwise, on the runtime's pool, like the f32 SGEMM; a thread gets at least
//! `2·MIN_FLOPS_PER_THREAD` integer ops (the integer kernels are about twice as fast or more,
//! so that is the same ~10 us of work or less).
//!
//! ## Epilogue
//!
//! Per-column bias and any [`Activation`] (Identity, Relu and Clamp in registers; the others as
//! a vectorized pass over the just-stored tile, like the f32 kernel). No `beta`/residual yet.

mod avx2;
mod avx512;

use std::ops::Range;

use crate::{Activation, GemmError, Isa};

/// Rows of the micro-tile.
pub(crate) const QMR: usize = 6;
/// Columns of the micro-tile (two ymm of i32).
pub(crate) const QNR: usize = 16;
/// Largest `k` for which the i32 result `Σ (qa − za)·qb` (at most `k·255·128` in magnitude) is
/// representable: `i32::MAX / (255·128)`.
pub const QGEMM_MAX_K: usize = (i32::MAX as usize) / (255 * 128);
/// Target bytes of one packed A block (kept in L2 while the B micro-panels pass over it).
const A_BLOCK_BYTES: usize = 256 * 1024;
/// Most rows in one packed A block.
const MC_MAX: usize = 240;

/// How a [`PackedQB`] stores the weight codes; see the module doc for the exactness argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QbFormat {
    /// 4 consecutive k per 32-bit word, as i8; any codes. What [`pack_qb`] produces. Runs
    /// `vpdpbusd` with AVX-512 VNNI; with AVX2 alone, `vpmaddubsw` when every code is in
    /// `[-64, 64]` ([`PackedQB::seven_bit`]) and an exact even/odd `vpmaddwd` kernel otherwise.
    I8Quads,
    /// 2 consecutive k per 32-bit word, as i16; any codes. Kept for existing packs (and
    /// [`PackedQB::new`] with an explicit format): twice the bytes of `I8Quads` and no faster
    /// on any CPU, so [`pack_qb`] no longer chooses it.
    I16Pairs,
}

impl QbFormat {
    /// Values of k per 32-bit word.
    pub fn k_per_word(self) -> usize {
        match self {
            QbFormat::I8Quads => 4,
            QbFormat::I16Pairs => 2,
        }
    }

    /// Number of k-steps (32-bit words per row or column) for a given `k`.
    pub fn steps(self, k: usize) -> usize {
        k.div_ceil(self.k_per_word())
    }
}

/// A `Vec<u32>` whose visible part starts on a 64-byte boundary.
#[derive(Clone, Default)]
struct Words {
    buf: Vec<u32>,
    off: usize,
    len: usize,
}

impl Words {
    fn zeros(len: usize) -> Words {
        let buf = vec![0u32; len + 16];
        let addr = buf.as_ptr() as usize;
        let off = (64 - addr % 64) % 64 / 4;
        Words { buf, off, len }
    }
    fn as_slice(&self) -> &[u32] {
        &self.buf[self.off..self.off + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [u32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Dynamic per-row asymmetric uint8 quantization of the `m x k` matrix `a` (element `(i, p)` at
/// `a[i*lda + p]`) into `out` (`m x k`, dense, row stride `k`), with `scale[i]` and `zero[i]`
/// per row, following ONNX `DynamicQuantizeLinear` for each row:
///
/// * `lo = min(0, min_p a[i,p])`, `hi = max(0, max_p a[i,p])` (the range always contains 0, so
///   0 is represented exactly);
/// * `scale = (hi − lo) / 255`; `zero = round_half_even(clamp(−lo / scale, 0, 255))`;
/// * `q = clamp(round_half_even(a / scale) + zero, 0, 255)`.
///
/// A row whose range is empty (all zeros, or so tiny that `scale` underflows to 0) gets
/// `scale = 1, zero = 0` and all-zero codes. Rows with NaN or infinities get memory-safe but
/// meaningless codes; feed finite data.
#[allow(clippy::too_many_arguments)] // a matrix, its shape, and three outputs
pub fn quantize_rows_u8(
    a: &[f32],
    m: usize,
    k: usize,
    lda: usize,
    out: &mut [u8],
    scale: &mut [f32],
    zero: &mut [u8],
) -> Result<(), GemmError> {
    let need = crate::gemm::stored_need("a", m, k, lda)?;
    if a.len() < need {
        return Err(GemmError::BufferTooSmall {
            operand: "a",
            len: a.len(),
            need,
        });
    }
    let out_need = m.checked_mul(k).ok_or(GemmError::Overflow)?;
    for (operand, len, need) in [
        ("a_u8", out.len(), out_need),
        ("a_scale", scale.len(), m),
        ("a_zero", zero.len(), m),
    ] {
        if len < need {
            return Err(GemmError::BufferTooSmall { operand, len, need });
        }
    }
    if k == 0 {
        scale[..m].fill(1.0);
        zero[..m].fill(0);
        return Ok(());
    }
    let avx2 = Isa::detect() == Isa::Avx2Fma;
    for i in 0..m {
        let row = &a[i * lda..i * lda + k];
        let dst = &mut out[i * k..(i + 1) * k];
        #[cfg(target_arch = "x86_64")]
        let (s, z) = if avx2 {
            // SAFETY: AVX2 and FMA were detected at run time just above.
            unsafe { quantize_row_avx2(row, dst) }
        } else {
            quantize_row(row, dst)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (s, z) = {
            let _ = avx2;
            quantize_row(row, dst)
        };
        scale[i] = s;
        zero[i] = z;
    }
    Ok(())
}

/// One row of [`quantize_rows_u8`]; returns `(scale, zero)`. Written so that LLVM vectorizes
/// it for the baseline ISA (lane-wise min/max, a division, round-half-even by the 1.5·2^23
/// trick, an i32 convert); [`quantize_row_avx2`] is the AVX2 version.
fn quantize_row(row: &[f32], out: &mut [u8]) -> (f32, u8) {
    let mut lo = [0.0f32; 8];
    let mut hi = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for t in 0..8 {
            lo[t] = if c[t] < lo[t] { c[t] } else { lo[t] };
            hi[t] = if c[t] > hi[t] { c[t] } else { hi[t] };
        }
    }
    for &x in rest {
        lo[0] = if x < lo[0] { x } else { lo[0] };
        hi[0] = if x > hi[0] { x } else { hi[0] };
    }
    let lo = lo.iter().fold(0.0f32, |m, &x| m.min(x));
    let hi = hi.iter().fold(0.0f32, |m, &x| m.max(x));
    let scale = (hi - lo) / 255.0;
    if !scale.is_finite() || scale <= 0.0 {
        out.fill(0);
        return (1.0, 0);
    }
    let zf = (-lo / scale).clamp(0.0, 255.0).round_ties_even();
    quantize_tail(row, out, scale, zf);
    (scale, zf as u8)
}

/// [`quantize_row`] with AVX2 intrinsics: 8-wide min/max, division, round-half-even
/// (`vroundps`, nearest) and saturation; the same results bit for bit.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `out.len() == row.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(row: &[f32], out: &mut [u8]) -> (f32, u8) {
    use std::arch::x86_64::*;
    let n = row.len().min(out.len());
    let body = n / 8 * 8;
    // SAFETY: every load reads row[p..p+8] with p + 8 <= body <= row.len(); stores go to a
    // local array. `minps`/`maxps` return the second operand when one is NaN, so NaNs are
    // ignored by the range and become 0 in the saturation, as in the scalar code.
    unsafe {
        let zero = _mm256_setzero_ps();
        let (mut lo, mut hi) = (zero, zero);
        let mut p = 0;
        while p < body {
            let x = _mm256_loadu_ps(row.as_ptr().add(p));
            lo = _mm256_min_ps(x, lo);
            hi = _mm256_max_ps(x, hi);
            p += 8;
        }
        let (mut l8, mut h8) = ([0.0f32; 8], [0.0f32; 8]);
        _mm256_storeu_ps(l8.as_mut_ptr(), lo);
        _mm256_storeu_ps(h8.as_mut_ptr(), hi);
        let mut lo = l8.iter().fold(0.0f32, |m, &x| m.min(x));
        let mut hi = h8.iter().fold(0.0f32, |m, &x| m.max(x));
        for &x in &row[body..n] {
            lo = if x < lo { x } else { lo };
            hi = if x > hi { x } else { hi };
        }
        let scale = (hi - lo) / 255.0;
        if !scale.is_finite() || scale <= 0.0 {
            out.fill(0);
            return (1.0, 0);
        }
        let zf = (-lo / scale).clamp(0.0, 255.0).round_ties_even();
        let (vs, vz, vmax) = (
            _mm256_set1_ps(scale),
            _mm256_set1_ps(zf),
            _mm256_set1_ps(255.0),
        );
        let mut p = 0;
        while p < body {
            let x = _mm256_loadu_ps(row.as_ptr().add(p));
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_div_ps(x, vs),
            );
            let v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), zero), vmax);
            // 8 i32 in [0, 255] -> 8 bytes: the packs work per 128-bit lane, so bytes 0..4
            // end up in the low lane's first dword and bytes 4..8 in the high lane's.
            let w = _mm256_cvtps_epi32(v);
            let b = _mm256_packus_epi16(_mm256_packus_epi32(w, w), w);
            let lo4 = _mm_cvtsi128_si32(_mm256_castsi256_si128(b)) as u32 as u64;
            let hi4 = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(b)) as u32 as u64;
            out[p..p + 8].copy_from_slice(&(lo4 | hi4 << 32).to_le_bytes());
            p += 8;
        }
        let mut tail = [0u8; 8];
        quantize_tail(&row[body..n], &mut tail, scale, zf);
        out[body..n].copy_from_slice(&tail[..n - body]);
        (scale, zf as u8)
    }
}

/// The element loop of [`quantize_row`] for a given scale and zero point.
#[inline(always)]
fn quantize_tail(row: &[f32], out: &mut [u8], scale: f32, zf: f32) {
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer, ties to even (the default
    // FP rounding mode, which Rust assumes), exactly for |t| <= 2^22; values beyond ±512 clamp to
    // 0 or 255 anyway, so clamping `t` first changes nothing.
    const MAGIC: f32 = 12_582_912.0;
    for (q, &x) in out.iter_mut().zip(row) {
        let t = (x / scale).clamp(-512.0, 512.0);
        let r = (t + MAGIC) - MAGIC;
        // NaN fails both comparisons and ends up as 0.
        let v = r + zf;
        let v = if v > 0.0 { v } else { 0.0 };
        let v = if v < 255.0 { v } else { 255.0 };
        *q = v as i32 as u8;
    }
}

/// Symmetric per-column int8 quantization of the `k x n` weight `op(B)` (`b[p*ldb + j]`, or
/// `b[j*ldb + p]` when `trans_b`): `scale[j] = max_p |b[p,j]| / qmax` and
/// `code = clamp(round_half_even(b / scale), -qmax, qmax)`, with `qmax = 127`, or `64` when
/// `reduce_range` (which makes [`pack_qb`] choose the faster [`QbFormat::I8Quads`]). An
/// all-zero column gets scale 1. Returns the codes (`k x n`, row-major, dense) and the scales.
pub fn quantize_weights_per_column(
    k: usize,
    n: usize,
    b: &[f32],
    ldb: usize,
    trans_b: bool,
    reduce_range: bool,
) -> Result<(Vec<i8>, Vec<f32>), GemmError> {
    let view = crate::gemm::validate_operand("b", k, n, b, ldb, trans_b)?;
    let qmax: f32 = if reduce_range { 64.0 } else { 127.0 };
    let at = |p: usize, j: usize| view.data[p * view.rs + j * view.cs];
    let scales: Vec<f32> = (0..n)
        .map(|j| {
            let mx = (0..k).fold(0.0f32, |m, p| m.max(at(p, j).abs()));
            let s = mx / qmax;
            if s > 0.0 && s.is_finite() {
                s
            } else {
                1.0
            }
        })
        .collect();
    let len = k.checked_mul(n).ok_or(GemmError::Overflow)?;
    let mut codes = vec![0i8; len];
    for p in 0..k {
        for j in 0..n {
            codes[p * n + j] = (at(p, j) / scales[j]).round_ties_even().clamp(-qmax, qmax) as i8;
        }
    }
    Ok((codes, scales))
}

/// An int8 weight (`k x n`) packed once for [`qgemm`], with its per-column scales and column
/// sums.
///
/// Layout of [`PackedQB::words`] (stable, little-endian 32-bit words, so a compiler can embed
/// it): `ceil(n/16)` panels of 16 columns; panel `q` holds `steps = ceil(k / kw)` rows of 16
/// words (`kw` = [`QbFormat::k_per_word`]): word `q*16*steps + s*16 + jj` holds, for column
/// `j = 16q + jj`, the codes of k = `kw*s .. kw*s + kw` — as 4 i8 bytes (byte `t` = k `4s+t`)
/// for `I8Quads`, as 2 i16 halves (low half = k `2s`) for `I16Pairs`. Codes past `k` and
/// columns past `n` are zero.
#[derive(Clone)]
pub struct PackedQB {
    k: usize,
    n: usize,
    format: QbFormat,
    seven_bit: bool,
    words: Words,
    col_sums: Vec<i32>,
    scales: Vec<f32>,
}

impl std::fmt::Debug for PackedQB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedQB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("format", &self.format)
            .field("seven_bit", &self.seven_bit)
            .finish_non_exhaustive()
    }
}

/// Packs int8 weight codes (`op(B)`, `k x n`: `codes[p*ldb + j]`, or `codes[j*ldb + p]` when
/// `trans_b`) with per-column `scales` (length `n`), choosing [`QbFormat::I8Quads`] when every
/// code is in `[-64, 64]` or not (recorded as [`PackedQB::seven_bit`]).
pub fn pack_qb(
    k: usize,
    n: usize,
    codes: &[i8],
    ldb: usize,
    trans_b: bool,
    scales: &[f32],
) -> Result<PackedQB, GemmError> {
    PackedQB::new(k, n, codes, ldb, trans_b, scales, None)
}

/// Quantizes an f32 weight with the given per-column scales (`round_half_even(b / scale[j])`,
/// clamped to `[-128, 127]`) and packs it like [`pack_qb`].
pub fn pack_qb_f32(
    k: usize,
    n: usize,
    b: &[f32],
    ldb: usize,
    trans_b: bool,
    scales: &[f32],
) -> Result<PackedQB, GemmError> {
    let view = crate::gemm::validate_operand("b", k, n, b, ldb, trans_b)?;
    if scales.len() != n {
        return Err(GemmError::PackedB("scales length is not n"));
    }
    let len = k.checked_mul(n).ok_or(GemmError::Overflow)?;
    let mut codes = vec![0i8; len];
    for p in 0..k {
        for j in 0..n {
            let x = view.data[p * view.rs + j * view.cs] / scales[j];
            codes[p * n + j] = x.round_ties_even().clamp(-128.0, 127.0) as i8;
        }
    }
    PackedQB::new(k, n, &codes, n, false, scales, None)
}

impl PackedQB {
    /// Words needed to hold a packed `k x n` matrix in `format`.
    pub fn packed_len(k: usize, n: usize, format: QbFormat) -> Result<usize, GemmError> {
        n.div_ceil(QNR)
            .checked_mul(QNR)
            .and_then(|x| x.checked_mul(format.steps(k)))
            .ok_or(GemmError::Overflow)
    }

    /// [`pack_qb`] with the format chosen by the caller (`None`: automatic, which is
    /// [`QbFormat::I8Quads`]).
    pub fn new(
        k: usize,
        n: usize,
        codes: &[i8],
        ldb: usize,
        trans_b: bool,
        scales: &[f32],
        format: Option<QbFormat>,
    ) -> Result<PackedQB, GemmError> {
        if k > QGEMM_MAX_K {
            return Err(GemmError::Overflow);
        }
        if scales.len() != n {
            return Err(GemmError::PackedB("scales length is not n"));
        }
        let (sr, sc) = if trans_b { (n, k) } else { (k, n) };
        let need = crate::gemm::stored_need("b", sr, sc, ldb)?;
        if codes.len() < need {
            return Err(GemmError::BufferTooSmall {
                operand: "b",
                len: codes.len(),
                need,
            });
        }
        let (rs, cs) = if trans_b { (1, ldb) } else { (ldb, 1) };
        let at = |p: usize, j: usize| codes[p * rs + j * cs];
        let mut fits7 = true;
        let mut col_sums = vec![0i32; n];
        for (j, sum) in col_sums.iter_mut().enumerate() {
            for p in 0..k {
                let c = at(p, j);
                fits7 &= (-64..=64).contains(&c);
                *sum += c as i32;
            }
        }
        let format = format.unwrap_or(QbFormat::I8Quads);
        let len = Self::packed_len(k, n, format)?;
        let steps = format.steps(k);
        let mut words = Words::zeros(len);
        let w = words.as_mut_slice();
        for j in 0..n {
            let (q, jj) = (j / QNR, j % QNR);
            for s in 0..steps {
                let word = match format {
                    QbFormat::I8Quads => {
                        let mut bytes = [0u8; 4];
                        for (t, byte) in bytes.iter_mut().enumerate() {
                            let p = 4 * s + t;
                            if p < k {
                                *byte = at(p, j) as u8;
                            }
                        }
                        u32::from_le_bytes(bytes)
                    }
                    QbFormat::I16Pairs => {
                        let half = |p: usize| {
                            if p < k {
                                (at(p, j) as i16) as u16 as u32
                            } else {
                                0
                            }
                        };
                        half(2 * s) | half(2 * s + 1) << 16
                    }
                };
                w[q * QNR * steps + s * QNR + jj] = word;
            }
        }
        Ok(PackedQB {
            k,
            n,
            format,
            seven_bit: fits7,
            words,
            col_sums,
            scales: scales.to_vec(),
        })
    }

    /// Rows (the GEMM's `k`).
    pub fn k(&self) -> usize {
        self.k
    }
    /// Columns (the GEMM's `n`).
    pub fn n(&self) -> usize {
        self.n
    }
    /// The storage format.
    pub fn format(&self) -> QbFormat {
        self.format
    }
    /// Whether every code is in `[-64, 64]`, which lets AVX2 without VNNI use the faster
    /// `vpmaddubsw` kernel on [`QbFormat::I8Quads`]. A compiler can record it next to the
    /// words and pass it back through [`PackedQBRef::with_seven_bit`].
    pub fn seven_bit(&self) -> bool {
        self.seven_bit
    }
    /// The packed codes (64-byte aligned), layout in the type's doc.
    pub fn words(&self) -> &[u32] {
        self.words.as_slice()
    }
    /// `Σ_p code[p, j]` per column.
    pub fn col_sums(&self) -> &[i32] {
        &self.col_sums
    }
    /// The per-column weight scales.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    /// A borrowed view, the form the GEMM takes.
    pub fn as_ref(&self) -> PackedQBRef<'_> {
        PackedQBRef {
            k: self.k,
            n: self.n,
            format: self.format,
            seven_bit: Some(self.seven_bit),
            words: self.words.as_slice(),
            col_sums: &self.col_sums,
            scales: &self.scales,
        }
    }
}

/// A borrowed packed int8 weight: a [`PackedQB`], or the same data living elsewhere (an
/// artifact's constant section).
#[derive(Debug, Clone, Copy)]
pub struct PackedQBRef<'a> {
    k: usize,
    n: usize,
    format: QbFormat,
    /// Whether every code is in `[-64, 64]`; `None` until known (scanned on first use by a
    /// kernel that needs it).
    seven_bit: Option<bool>,
    words: &'a [u32],
    col_sums: &'a [i32],
    scales: &'a [f32],
}

impl<'a> PackedQBRef<'a> {
    /// Wraps data in the [`PackedQB`] layout. Checks the lengths and `k <=` [`QGEMM_MAX_K`]
    /// (constant time: the codes are not read). Any codes are valid in either format; whether
    /// they fit in 7 bits is found out by the first call that runs the AVX2 `vpmaddubsw`
    /// kernel (CPUs without VNNI), or asserted with [`PackedQBRef::with_seven_bit`]. The column
    /// sums are trusted (wrong sums give wrong results, never unsoundness).
    pub fn new(
        k: usize,
        n: usize,
        format: QbFormat,
        words: &'a [u32],
        col_sums: &'a [i32],
        scales: &'a [f32],
    ) -> Result<Self, GemmError> {
        if k > QGEMM_MAX_K {
            return Err(GemmError::Overflow);
        }
        if words.len() != PackedQB::packed_len(k, n, format)? {
            return Err(GemmError::PackedB(
                "data length does not match packed_len(k, n, format)",
            ));
        }
        if col_sums.len() != n || scales.len() != n {
            return Err(GemmError::PackedB("col_sums/scales length is not n"));
        }
        Ok(PackedQBRef {
            k,
            n,
            format,
            seven_bit: None,
            words,
            col_sums,
            scales,
        })
    }
    /// Rows (the GEMM's `k`).
    pub fn k(&self) -> usize {
        self.k
    }
    /// Columns (the GEMM's `n`).
    pub fn n(&self) -> usize {
        self.n
    }
    /// The storage format.
    pub fn format(&self) -> QbFormat {
        self.format
    }

    /// Records whether every code is in `[-64, 64]` (as [`PackedQB::seven_bit`] reported when
    /// the weight was packed), sparing the scan. Only AVX2 CPUs without VNNI use it, to pick
    /// the `vpmaddubsw` kernel for [`QbFormat::I8Quads`]: a wrong `true` makes that kernel
    /// saturate (wrong results, never unsoundness).
    pub fn with_seven_bit(mut self, seven_bit: bool) -> Self {
        self.seven_bit = Some(seven_bit);
        self
    }

    /// Whether every code is in `[-64, 64]`: the recorded answer, else a scan of the words
    /// (padding is zero, so it does not matter).
    pub fn seven_bit(&self) -> bool {
        self.seven_bit.unwrap_or_else(|| {
            // Branch-free over 4 bytes at a time so that it vectorizes: a byte `b` is in
            // [-64, 64] iff `b + 64` (wrapping) is at most 128 as u8.
            self.words.iter().fold(true, |ok, &w| {
                ok & w
                    .to_le_bytes()
                    .iter()
                    .fold(true, |o, &b| o & (b.wrapping_add(64) <= 128))
            })
        })
    }
}

impl<'a> From<&'a PackedQB> for PackedQBRef<'a> {
    fn from(p: &'a PackedQB) -> Self {
        p.as_ref()
    }
}

/// A fully described quantized GEMM (see the module doc for the formula). [`qgemm`] and
/// [`qgemm_i32`] fill it in; use it directly to choose the instruction set.
#[derive(Debug, Clone, Copy)]
pub struct QGemm<'a> {
    /// Rows of A and C.
    pub m: usize,
    /// Quantized A, `m x k`: element `(i, p)` at `a[i*lda + p]`.
    pub a: &'a [u8],
    /// Leading dimension of A.
    pub lda: usize,
    /// Per-row activation scales (length `m`; unused by [`QGemm::run_i32`]).
    pub a_scale: &'a [f32],
    /// Per-row activation zero points (length `m`).
    pub a_zero: &'a [u8],
    /// The packed weight (gives `k`, `n`, the weight scales and column sums).
    pub b: PackedQBRef<'a>,
    /// Optional per-column bias (length `n`), added after dequantization.
    pub bias: Option<&'a [f32]>,
    /// Activation applied last.
    pub activation: Activation,
    /// Threads; 0 means all available cores. Small problems use fewer.
    pub threads: usize,
    /// Kernels to use.
    pub isa: Isa,
}

/// The output pointer of one call, shared by its threads (which write disjoint rectangles).
#[derive(Clone, Copy)]
pub(crate) enum OutPtr {
    F32(*mut f32),
    I32(*mut i32),
}

// SAFETY: threads dereference the pointer only inside the disjoint rectangles `partition`
// assigns, and `QGemm::run_*` holds the `&mut` slice it came from until every thread joined.
unsafe impl Send for OutPtr {}
// SAFETY: as above; sharing only copies the address.
unsafe impl Sync for OutPtr {}

/// A validated call: every index the kernels form from these fields is in bounds.
pub(crate) struct Job<'a> {
    pub m: usize,
    pub n: usize,
    pub steps: usize,
    pub format: QbFormat,
    pub a: &'a [u8],
    pub lda: usize,
    pub k: usize,
    pub a_scale: &'a [f32],
    pub a_zero: &'a [u8],
    pub b: PackedQBRef<'a>,
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
    pub out: OutPtr,
    pub ldc: usize,
    pub isa: Isa,
    /// How A is packed for the chosen kernel.
    pub a_layout: ALayout,
    /// Rows per packed A panel (the kernel's tile height).
    pub mr: usize,
}

/// The packed-A layouts: `wps` 32-bit words per row and k-step (a k-step being
/// [`QbFormat::k_per_word`] values of k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ALayout {
    /// 4 u8 per word (k `4s..4s+4`, byte `t` = k `4s+t`): `I8Quads` with `vpdpbusd`,
    /// `vpmaddubsw` or the portable kernel.
    U8Quads,
    /// 2 zero-extended u16 per word (k `2s`, `2s+1`): `I16Pairs`.
    U16Pairs,
    /// 2 words per k-step of a quad format: `k 4s | k 4s+2 << 16`, then `k 4s+1 | k 4s+3 << 16`,
    /// as u16: the AVX2 kernel for full-range `I8Quads`, which splits the B quads into the
    /// matching even/odd i16 halves.
    U16EvenOdd,
}

impl ALayout {
    /// 32-bit words per row and k-step.
    pub(crate) fn wps(self) -> usize {
        match self {
            ALayout::U16EvenOdd => 2,
            _ => 1,
        }
    }
}

impl QGemm<'_> {
    /// Computes the dequantized f32 result into `c` (`m x n`, `c[i*ldc + j]`). Validates
    /// everything first; on error `c` is untouched.
    pub fn run(&self, c: &mut [f32], ldc: usize) -> Result<(), GemmError> {
        self.check_c(c.len(), ldc)?;
        if self.a_scale.len() != self.m {
            return Err(GemmError::BufferTooSmall {
                operand: "a_scale",
                len: self.a_scale.len(),
                need: self.m,
            });
        }
        if let Some(b) = self.bias {
            if b.len() != self.b.n {
                return Err(GemmError::BiasLength {
                    expected: self.b.n,
                    got: b.len(),
                });
            }
        }
        self.activation.validate()?;
        self.execute(OutPtr::F32(c.as_mut_ptr()), ldc)
    }

    /// Computes the exact integer matrix `Σ_p qa[i,p]·qb[p,j] − za[i]·Σ_p qb[p,j]` into `c`
    /// (no scales, bias or activation).
    pub fn run_i32(&self, c: &mut [i32], ldc: usize) -> Result<(), GemmError> {
        self.check_c(c.len(), ldc)?;
        self.execute(OutPtr::I32(c.as_mut_ptr()), ldc)
    }

    fn check_c(&self, c_len: usize, ldc: usize) -> Result<(), GemmError> {
        let (m, n, k) = (self.m, self.b.n, self.b.k);
        let c_need = crate::gemm::stored_need("c", m, n, ldc)?;
        if c_len < c_need {
            return Err(GemmError::BufferTooSmall {
                operand: "c",
                len: c_len,
                need: c_need,
            });
        }
        let a_need = crate::gemm::stored_need("a", m, k, self.lda)?;
        if self.a.len() < a_need {
            return Err(GemmError::BufferTooSmall {
                operand: "a",
                len: self.a.len(),
                need: a_need,
            });
        }
        if self.a_zero.len() != m {
            return Err(GemmError::BufferTooSmall {
                operand: "a_zero",
                len: self.a_zero.len(),
                need: m,
            });
        }
        Ok(())
    }

    fn execute(&self, out: OutPtr, ldc: usize) -> Result<(), GemmError> {
        let isa = match self.isa {
            Isa::Auto if Isa::Avx512Vnni.supported() => Isa::Avx512Vnni,
            Isa::Auto => Isa::detect(),
            isa if isa.supported() => isa,
            isa => return Err(GemmError::UnsupportedIsa(isa)),
        };
        let format = self.b.format;
        let (a_layout, mr) = match (isa, format) {
            (Isa::Avx512Vnni, QbFormat::I16Pairs) => (ALayout::U16Pairs, avx512::MR),
            (Isa::Avx512Vnni, QbFormat::I8Quads) => (ALayout::U8Quads, avx512::MR),
            (_, QbFormat::I16Pairs) => (ALayout::U16Pairs, QMR),
            // Only this case needs to know the code range (the scan, if not recorded).
            (Isa::Avx2Fma, QbFormat::I8Quads) if !self.b.seven_bit() => {
                (ALayout::U16EvenOdd, avx2::EO_MR)
            }
            _ => (ALayout::U8Quads, QMR),
        };
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |t| t.get())
        } else {
            self.threads
        };
        let job = Job {
            m: self.m,
            n: self.b.n,
            k: self.b.k,
            steps: self.b.format.steps(self.b.k),
            format: self.b.format,
            a: self.a,
            lda: self.lda,
            a_scale: self.a_scale,
            a_zero: self.a_zero,
            b: self.b,
            bias: self.bias,
            activation: self.activation,
            out,
            ldc,
            isa,
            a_layout,
            mr,
        };
        if job.m == 0 || job.n == 0 {
            return Ok(());
        }
        let parts = partition(job.m, job.n, job.k, mr, threads);
        if parts.len() == 1 {
            run_range(&job, 0..job.m, 0..job.n);
        } else {
            crate::pool::run(parts.len(), &|t| {
                let (rows, cols) = parts[t].clone();
                run_range(&job, rows, cols);
            });
        }
        Ok(())
    }
}

/// `C = act(dequant(qA · B) + bias)` (f32 output); see the module doc.
#[allow(clippy::too_many_arguments)] // mirrors the f32 sgemm_packed / C ABI style
pub fn qgemm<'a>(
    m: usize,
    a: &[u8],
    lda: usize,
    a_scale: &[f32],
    a_zero: &[u8],
    b: impl Into<PackedQBRef<'a>>,
    bias: Option<&[f32]>,
    activation: Activation,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) -> Result<(), GemmError> {
    QGemm {
        m,
        a,
        lda,
        a_scale,
        a_zero,
        b: b.into(),
        bias,
        activation,
        threads,
        isa: Isa::Auto,
    }
    .run(c, ldc)
}

/// The exact zero-point-corrected integer product (i32 output); see [`QGemm::run_i32`].
#[allow(clippy::too_many_arguments)] // mirrors qgemm
pub fn qgemm_i32<'a>(
    m: usize,
    a: &[u8],
    lda: usize,
    a_zero: &[u8],
    b: impl Into<PackedQBRef<'a>>,
    c: &mut [i32],
    ldc: usize,
    threads: usize,
) -> Result<(), GemmError> {
    QGemm {
        m,
        a,
        lda,
        a_scale: &[],
        a_zero,
        b: b.into(),
        bias: None,
        activation: Activation::Identity,
        threads,
        isa: Isa::Auto,
    }
    .run_i32(c, ldc)
}

/// Splits C into one rectangle per thread in whole tiles: along M when every thread gets a row
/// tile (B is pre-packed, so nothing is duplicated), else along N.
fn partition(
    m: usize,
    n: usize,
    k: usize,
    mr: usize,
    threads: usize,
) -> Vec<(Range<usize>, Range<usize>)> {
    let ops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    let tiles_m = m.div_ceil(mr);
    let tiles_n = n.div_ceil(QNR);
    let t = threads
        .min((ops / (2 * crate::gemm::MIN_FLOPS_PER_THREAD)).max(1))
        .min(tiles_m.max(tiles_n))
        .max(1);
    if t == 1 {
        return vec![(0..m, 0..n)];
    }
    let split_m = tiles_m >= t;
    let (tiles, tile, len) = if split_m {
        (tiles_m, mr, m)
    } else {
        (tiles_n, QNR, n)
    };
    (0..t)
        .map(|i| {
            let lo = (tiles * i / t * tile).min(len);
            let hi = (tiles * (i + 1) / t * tile).min(len);
            if split_m {
                (lo..hi, 0..n)
            } else {
                (0..m, lo..hi)
            }
        })
        .filter(|(r, c)| !r.is_empty() && !c.is_empty())
        .collect()
}

/// Packs rows `i0..i0+mc` of A into `dst` in `job.a_layout`: `ceil(mc/mr)` panels of `mr`
/// rows, word `q*steps*mr*wps + s*mr*wps + i*wps + w` holding word `w` of row `i0 + mr*q + i`'s
/// k-step `s`; rows past `mc` and k past `k` are zero.
fn pack_a(job: &Job<'_>, dst: &mut [u32], i0: usize, mc: usize) {
    let (k, steps, mr) = (job.k, job.steps, job.mr);
    let wps = job.a_layout.wps();
    let kw = job.format.k_per_word();
    let row_words = mr * wps;
    if job.a_layout == ALayout::U8Quads {
        return pack_a_quads(job, dst, i0, mc);
    }
    let mut pad = [0u8; 4];
    for q in 0..mc.div_ceil(mr) {
        let panel = &mut dst[q * steps * row_words..(q + 1) * steps * row_words];
        for i in 0..mr {
            let r = q * mr + i;
            if r >= mc {
                for step in panel.chunks_exact_mut(row_words) {
                    step[i * wps..(i + 1) * wps].fill(0);
                }
                continue;
            }
            let start = (i0 + r) * job.lda;
            let row = &job.a[start..start + k];
            for (s, step) in panel.chunks_exact_mut(row_words).enumerate() {
                let lo = s * kw;
                let c: &[u8] = if lo + kw <= k {
                    &row[lo..lo + kw]
                } else {
                    pad.fill(0);
                    pad[..k - lo].copy_from_slice(&row[lo..]);
                    &pad[..kw]
                };
                let d = &mut step[i * wps..(i + 1) * wps];
                match job.a_layout {
                    ALayout::U8Quads => d[0] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    ALayout::U16Pairs => d[0] = c[0] as u32 | (c[1] as u32) << 16,
                    ALayout::U16EvenOdd => {
                        d[0] = c[0] as u32 | (c[2] as u32) << 16;
                        d[1] = c[1] as u32 | (c[3] as u32) << 16;
                    }
                }
            }
        }
    }
}

/// [`pack_a`] for [`ALayout::U8Quads`], the layout of every VNNI and 7-bit AVX2 run: word `s`
/// of row `i` of a panel is the 4 bytes `a[4s..4s+4]` of that row as they lie in memory, so
/// whole steps are plain 4-byte moves (one unaligned read per word, the panel written in order)
/// and only a partial last step and missing rows are padded with zeros.
fn pack_a_quads(job: &Job<'_>, dst: &mut [u32], i0: usize, mc: usize) {
    let (k, steps, mr) = (job.k, job.steps, job.mr);
    let full = k / 4;
    for q in 0..mc.div_ceil(mr) {
        let panel = &mut dst[q * steps * mr..(q + 1) * steps * mr];
        let rows = mr.min(mc - q * mr);
        let row = |i: usize| {
            let start = (i0 + q * mr + i) * job.lda;
            &job.a[start..start + k]
        };
        // Whole blocks of 8 steps of a full 8-row panel move as 8x8 word transposes.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if mr == 8 && rows == 8 && full >= 8 && crate::ops::conv::avx2() {
            let start = (i0 + q * mr) * job.lda;
            let blocks = full / 8;
            if start + 7 * job.lda + 32 * blocks <= job.a.len() {
                // SAFETY: AVX2 was detected; the bound was just checked and the panel holds
                // steps*8 >= 64*blocks words.
                unsafe { pack_quads_8rows_avx2(job.a, start, job.lda, blocks, panel) };
                done = 8 * blocks;
            }
        }
        for i in 0..rows {
            let r = row(i);
            let tail = panel.iter_mut().skip(done * mr + i).step_by(mr);
            for (w, c) in tail.zip(r[4 * done..].chunks_exact(4)) {
                *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            if full < steps {
                let mut pad = [0u8; 4];
                pad[..k - 4 * full].copy_from_slice(&r[4 * full..]);
                panel[full * mr + i] = u32::from_le_bytes(pad);
            }
        }
        for i in rows..mr {
            for w in panel.iter_mut().skip(i).step_by(mr) {
                *w = 0;
            }
        }
    }
}

/// Transposes one 8x8 block of 32-bit elements: element `(r, c)` at `src + r*ss + c*4` (bytes)
/// goes to `dst + c*ds + r*4`. The elements are moved as bit patterns (unpack, shuffle and
/// lane permutes of f32 vectors never change bits, NaN payloads included).
///
/// # Safety
/// The CPU supports AVX2; the 8 rows of 32 bytes at `src + r*ss` are readable and the 8 rows
/// of 32 bytes at `dst + c*ds` writable (no alignment needed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn transpose8x8_avx2(src: *const u8, ss: usize, dst: *mut u8, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract covers exactly these eight 32-byte loads and stores.
    unsafe {
        let ld = |i: usize| _mm256_loadu_ps(src.add(i * ss).cast::<f32>());
        let (a0, a1, a2, a3) = (ld(0), ld(1), ld(2), ld(3));
        let (a4, a5, a6, a7) = (ld(4), ld(5), ld(6), ld(7));
        let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
        let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
        let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
        let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let st = |j: usize, v: __m256| _mm256_storeu_ps(dst.add(j * ds).cast::<f32>(), v);
        st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
        st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
        st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
        st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
        st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
        st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
        st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
        st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
    }
}

/// The whole 8-step blocks of a full 8-row panel of [`pack_a_quads`]: 8 rows of `k` codes
/// starting at `a[start..]`, `lda` apart, become `blocks` groups of 8 steps x 8 words.
///
/// # Safety
/// AVX2; `start + 7*lda + 32*blocks <= a.len()` and `panel.len() >= 64*blocks`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_quads_8rows_avx2(
    a: &[u8],
    start: usize,
    lda: usize,
    blocks: usize,
    panel: &mut [u32],
) {
    let (src, dst) = (a.as_ptr(), panel.as_mut_ptr());
    for b in 0..blocks {
        // SAFETY: block b reads bytes start + r*lda + 32b .. +32 (r < 8) and writes words
        // 64b .. 64b + 64, inside the slices by the caller's contract.
        unsafe { transpose8x8_avx2(src.add(start + 32 * b), lda, dst.add(64 * b).cast(), 32) };
    }
}

/// One thread's rectangle: pack A blocks, run the tiles.
fn run_range(job: &Job<'_>, rows: Range<usize>, cols: Range<usize>) {
    let (steps, mr) = (job.steps, job.mr);
    let row_words = steps * job.a_layout.wps();
    let row_bytes = (row_words * 4).max(1);
    let mc_max = (A_BLOCK_BYTES / row_bytes / mr * mr).clamp(mr, MC_MAX / mr * mr);
    let mc_max = mc_max.min(rows.len().div_ceil(mr) * mr);
    let mut abuf = Words::zeros(mc_max * row_words + 8);
    let mut ic = rows.start;
    while ic < rows.end {
        let mc = mc_max.min(rows.end - ic);
        pack_a(job, abuf.as_mut_slice(), ic, mc);
        let blk = QBlock {
            job,
            a: abuf.as_slice(),
            i0: ic,
            mc,
            j0: cols.start,
            nc: cols.len(),
        };
        match job.isa {
            // SAFETY: Avx2Fma is only chosen when the CPU has AVX2 (`execute`); the block's
            // rows and columns lie inside this thread's rectangle of the validated C.
            Isa::Avx2Fma => unsafe { avx2::macro_kernel(&blk) },
            // SAFETY: Avx512Vnni is only chosen when the CPU has AVX-512 F/BW/VL/VNNI and AVX2
            // (`execute`, `Isa::supported`); the rest as above.
            Isa::Avx512Vnni => unsafe { avx512::macro_kernel(&blk) },
            // SAFETY: as above, minus the CPU feature.
            _ => unsafe { generic_macro_kernel(&blk) },
        }
        ic += mc;
    }
}

/// One block of rows `i0..i0+mc` (A packed in `a`) against columns `j0..j0+nc` (`j0` a multiple
/// of 16).
pub(crate) struct QBlock<'a> {
    pub job: &'a Job<'a>,
    pub a: &'a [u32],
    pub i0: usize,
    pub mc: usize,
    pub j0: usize,
    pub nc: usize,
}

impl QBlock<'_> {
    /// The B micro-panel holding global column `j` (a multiple of 16).
    pub(crate) fn b_panel(&self, j: usize) -> &[u32] {
        let s = self.job.steps;
        &self.job.b.words[(j / QNR) * s * QNR..][..s * QNR]
    }
    /// The A micro-panel of block row `ir` (a multiple of `mr`): `steps * mr * wps` words.
    pub(crate) fn a_panel(&self, ir: usize) -> &[u32] {
        let job = self.job;
        let len = job.steps * job.mr * job.a_layout.wps();
        &self.a[(ir / job.mr) * len..][..len]
    }
}

/// Multiply-adds one packed A word and one packed B word exactly.
#[inline(always)]
fn word_dot(format: QbFormat, a: u32, b: u32) -> i32 {
    match format {
        QbFormat::I8Quads => {
            let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
            (0..4).fold(0i32, |s, t| s + a[t] as i32 * (b[t] as i8) as i32)
        }
        QbFormat::I16Pairs => {
            let lo = (a as u16 as i16 as i32) * (b as u16 as i16 as i32);
            let hi = ((a >> 16) as u16 as i16 as i32) * ((b >> 16) as u16 as i16 as i32);
            lo + hi
        }
    }
}

/// Applies the epilogue to one tile row of raw sums (`acc[jj]` for column `j0 + jj`,
/// `jj < n_eff`) and writes it to row `i` of C.
///
/// # Safety
/// Row `i`, columns `j0..j0+n_eff` of C are inside the validated output and this thread's
/// rectangle.
#[inline(always)]
pub(crate) unsafe fn finish_row_scalar(
    job: &Job<'_>,
    acc: &[i32; QNR],
    i: usize,
    j0: usize,
    n_eff: usize,
) {
    let za = job.a_zero[i] as i32;
    let sums = &job.b.col_sums[j0..j0 + n_eff];
    match job.out {
        OutPtr::I32(c) => {
            // SAFETY: by the contract.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * job.ldc + j0), n_eff) };
            for ((o, &x), &s) in row.iter_mut().zip(acc).zip(sums) {
                *o = x.wrapping_sub(za.wrapping_mul(s));
            }
        }
        OutPtr::F32(c) => {
            // SAFETY: by the contract.
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * job.ldc + j0), n_eff) };
            let sa = job.a_scale[i];
            let sw = &job.b.scales[j0..j0 + n_eff];
            for (jj, o) in row.iter_mut().enumerate() {
                let v = acc[jj].wrapping_sub(za.wrapping_mul(sums[jj]));
                let mut y = v as f32 * (sa * sw[jj]);
                if let Some(b) = job.bias {
                    y += b[j0 + jj];
                }
                *o = job.activation.apply(y);
            }
        }
    }
}

/// Portable kernel over the same packed layouts.
///
/// # Safety
/// The block's rows/columns of C are valid and exclusively this call's.
unsafe fn generic_macro_kernel(blk: &QBlock<'_>) {
    let format = blk.job.format;
    debug_assert!(blk.job.mr == QMR && blk.job.a_layout.wps() == 1);
    for jr in (0..blk.nc).step_by(QNR) {
        let j = blk.j0 + jr;
        let n_eff = QNR.min(blk.nc - jr);
        let bp = blk.b_panel(j);
        for ir in (0..blk.mc).step_by(QMR) {
            let m_eff = QMR.min(blk.mc - ir);
            let ap = blk.a_panel(ir);
            let mut acc = [[0i32; QNR]; QMR];
            for (av, bv) in ap.chunks_exact(QMR).zip(bp.chunks_exact(QNR)) {
                for (row, &x) in acc.iter_mut().zip(av) {
                    for (r, &y) in row.iter_mut().zip(bv) {
                        *r = r.wrapping_add(word_dot(format, x, y));
                    }
                }
            }
            for (ii, row) in acc.iter().enumerate().take(m_eff) {
                // SAFETY: row blk.i0+ir+ii < m and columns j..j+n_eff <= n belong to the block.
                unsafe { finish_row_scalar(blk.job, row, blk.i0 + ir + ii, j, n_eff) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable and AVX2 row quantizers agree bit for bit, including ties, zero rows and
    /// out-of-range magnitudes, and both match the ONNX formula with `round_ties_even`.
    #[test]
    fn quantizers_agree() {
        let mut rows: Vec<Vec<f32>> = vec![
            vec![0.0; 21],
            vec![
                -127.5, 127.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5, 4.5, 0.0,
            ],
            (0..37)
                .map(|i| (i as f32 * 0.731).sin() * 3.0 + 1.0)
                .collect(),
            (0..19).map(|i| -(i as f32) * 1e3).collect(),
            vec![1e-40, -1e-40, 0.0, 5e-41],
            vec![7.0],
        ];
        rows.push((0..64).map(|i| (i as f32 - 20.0) * 0.25).collect());
        for row in &rows {
            let mut q1 = vec![0u8; row.len()];
            let (s1, z1) = quantize_row(row, &mut q1);
            for (p, &x) in row.iter().enumerate() {
                let want = ((x / s1).round_ties_even() + z1 as f32).clamp(0.0, 255.0) as u8;
                assert_eq!(q1[p], want, "{row:?} at {p}");
            }
            #[cfg(target_arch = "x86_64")]
            if Isa::detect() == Isa::Avx2Fma {
                let mut q2 = vec![0u8; row.len()];
                // SAFETY: AVX2/FMA detected; equal lengths.
                let (s2, z2) = unsafe { quantize_row_avx2(row, &mut q2) };
                assert_eq!((s1, z1, &q1), (s2, z2, &q2), "{row:?}");
            }
        }
    }
}
