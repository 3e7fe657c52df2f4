//! Quantized MatMul ([`pare_k_qmatmul`]): f32 activations quantized to uint8 inside the
//! kernel, an int8 weight pre-packed at compile time, the exact integer product of
//! [`crate::qgemm`], and an f32 epilogue (scales, bias, residual, activation).
//!
//! `C = act( sa · sw[j] · Σ_p (qa[i,p] − za)·qb[p,j]  + bias[j] + residual[i,j] )`
//!
//! This is what the two quantized-MatMul forms of an ONNX graph compute, without the integer
//! tensors ever reaching memory:
//!
//! * **dynamic** — `DynamicQuantizeLinear(A) → MatMulInteger(·, W_q) → Cast → Mul(sa·sw)`
//!   (onnxruntime's `quantize_dynamic`, pare's `quantize(bits=8)` without calibration): `sa`
//!   and `za` come from the range of the *whole* A, following `DynamicQuantizeLinear`
//!   exactly, so the codes are the ones the graph would compute;
//! * **static** — `DequantizeLinear(QuantizeLinear(A, sa, za))` feeding a MatMul/Gemm whose
//!   weight is `DequantizeLinear(W_q, sw)` (QDQ form): `sa`, `za` are compile-time constants
//!   (int8 activations are shifted to uint8 with `za + 128`, which leaves `qa − za`
//!   unchanged).
//!
//! The integer sum is exact (see [`crate::qgemm`]); the graph computes the same sum in f32
//! (after the Cast, or on dequantized values), so results agree to f32 rounding of the final
//! scaling.
//!
//! **Word layout** ([`QMATMUL_WORDS`] words): `[QMATMUL_TAG, m, n, k, format (0 I8Quads,
//! 1 I16Pairs), seven_bit, dynamic, a_scale (f64 bits), a_zero, has_bias, has_residual,
//! act_kind, act_p0, act_p1]`.
//!
//! **Buffers** (6 pointers): `[a (m·k f32), b (the packed weight blob, see
//! [`qmatmul_prepare_b`]), bias (n f32, if has_bias), residual (m·n f32, if has_residual; may be
//! `c` itself), c (m·n f32), scratch ([`QMatMulParams::scratch_bytes`])]`.

use super::conv::{
    c_guard, c_params, decode_activation, encode_activation, gemm_bufs, need_len, word_bool,
    word_usize, GemmLens, KernelError, Res, ACT_WORDS, MAX_DIM,
};
use super::{f64_word, word_f64, STATUS_PARAMS};
use crate::qgemm::{PackedQB, PackedQBRef, QbFormat};
use crate::{Activation, Isa};

/// Tag word that starts an encoded [`QMatMulParams`] (`"QMMT"`, layout version 2).
pub const QMATMUL_TAG: i64 = 0x514d_4d54_0002;
/// Number of words of an encoded [`QMatMulParams`].
pub const QMATMUL_WORDS: usize = 11 + ACT_WORDS;

/// How the kernel quantizes A.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantA {
    /// `DynamicQuantizeLinear` over the whole of A at run time.
    Dynamic,
    /// Fixed scale and uint8 zero point (`QuantizeLinear` with constant parameters).
    Static {
        /// Scale (finite, > 0).
        scale: f32,
        /// Zero point in the uint8 domain.
        zero: u8,
    },
}

/// Parameters of `pare_k_qmatmul` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QMatMulParams {
    /// Rows of A and C (all batch dims folded in).
    pub m: usize,
    /// Columns of the weight and C.
    pub n: usize,
    /// Columns of A, rows of the weight.
    pub k: usize,
    /// The packed weight's format.
    pub format: QbFormat,
    /// Every weight code is in `[-64, 64]` (recorded at packing; lets AVX2 CPUs without VNNI
    /// use the faster `vpmaddubsw` kernel without scanning the weight at every call).
    pub seven_bit: bool,
    /// How A is quantized.
    pub quant: QuantA,
    /// A per-column bias is added.
    pub has_bias: bool,
    /// A residual shaped like C is added (after the bias).
    pub has_residual: bool,
    /// Applied last.
    pub activation: Activation,
}

impl QMatMulParams {
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
    pub fn new(m: usize, n: usize, k: usize, format: QbFormat, quant: QuantA) -> Self {
        QMatMulParams {
            m,
            n,
            k,
            format,
            seven_bit: false,
            quant,
            has_bias: false,
            has_residual: false,
            activation: Activation::Identity,
        }
    }

    /// The words of this block (see the module doc).
    pub fn encode(&self) -> Vec<i64> {
        let (dynamic, scale, zero) = match self.quant {
            QuantA::Dynamic => (1, 1.0, 0),
            QuantA::Static { scale, zero } => (0, scale, zero as i64),
        };
        let mut v = vec![
            QMATMUL_TAG,
            self.m as i64,
            self.n as i64,
            self.k as i64,
            match self.format {
                QbFormat::I8Quads => 0,
                QbFormat::I16Pairs => 1,
            },
            self.seven_bit as i64,
            dynamic,
            f64_word(scale as f64),
            zero,
            self.has_bias as i64,
            self.has_residual as i64,
        ];
        encode_activation(&self.activation, &mut v);
        v
    }

    /// Parses and validates words produced by [`QMatMulParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != QMATMUL_WORDS || words[0] != QMATMUL_TAG {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let format = match words[4] {
            0 => QbFormat::I8Quads,
            1 => QbFormat::I16Pairs,
            _ => return None,
        };
        let quant = if word_bool(words[6])? {
            QuantA::Dynamic
        } else {
            QuantA::Static {
                scale: word_f64(words[7]) as f32,
                zero: u8::try_from(words[8]).ok()?,
            }
        };
        let p = QMatMulParams {
            m: u(1)?,
            n: u(2)?,
            k: u(3)?,
            format,
            seven_bit: word_bool(words[5])?,
            quant,
            has_bias: word_bool(words[9])?,
            has_residual: word_bool(words[10])?,
            activation: decode_activation(&words[11..11 + ACT_WORDS])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters and that every size fits.
    pub fn validate(&self) -> Result<(), KernelError> {
        if [self.m, self.n, self.k].iter().any(|&d| d > MAX_DIM) {
            return Err(KernelError::params("a qmatmul dimension exceeds i32::MAX"));
        }
        if self.k > crate::qgemm::QGEMM_MAX_K {
            return Err(KernelError::params(
                "qmatmul k is too large for an exact i32 sum",
            ));
        }
        if let QuantA::Static { scale, .. } = self.quant {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(KernelError::params(
                    "qmatmul activation scale must be finite and > 0",
                ));
            }
        }
        self.activation
            .validate()
            .map_err(|e| KernelError::params(e.to_string()))?;
        if self.lens().is_none() {
            return Err(KernelError::params("qmatmul buffer sizes overflow usize"));
        }
        Ok(())
    }

    /// `[a, c, b words, scratch bytes]`.
    fn lens(&self) -> Option<[usize; 4]> {
        let a = self.m.checked_mul(self.k)?;
        let c = self.m.checked_mul(self.n)?;
        c.checked_mul(4)?;
        let words = PackedQB::packed_len(self.k, self.n, self.format).ok()?;
        // The blob: words, then n column sums, then n scales (all 4-byte elements).
        let blob = words.checked_add(self.n.checked_mul(2)?)?;
        // Scratch: the codes (rounded up to 64 bytes), then m scales, then m zero points.
        let scratch = a
            .checked_add(63)?
            .checked_div(64)?
            .checked_mul(64)?
            .checked_add(self.m.checked_mul(5)?)?;
        Some([a, c, blob, scratch])
    }

    /// Elements of `a`.
    pub fn a_len(&self) -> usize {
        self.lens().map_or(0, |l| l[0])
    }

    /// Elements of `c` (and of the residual).
    pub fn c_len(&self) -> usize {
        self.lens().map_or(0, |l| l[1])
    }

    /// 32-bit elements of the packed weight blob.
    pub fn b_len(&self) -> usize {
        self.lens().map_or(0, |l| l[2])
    }

    /// Scratch bytes: the uint8 codes of A and the per-row scale/zero arrays.
    pub fn scratch_bytes(&self) -> usize {
        self.lens().map_or(0, |l| l[3])
    }
}

/// Packs int8 weight codes `codes` (`k x n` row-major, `codes[p*n + j]`) with per-column
/// `scales` into the weight blob of [`pare_k_qmatmul`]: the [`PackedQB`] words, then the `n`
/// column sums (i32), then the `n` scales (f32), as 32-bit words. Returns the blob, the
/// format [`crate::qgemm::pack_qb`] chose and whether every code is in `[-64, 64]` (for
/// [`QMatMulParams::seven_bit`]).
pub fn qmatmul_prepare_b(
    k: usize,
    n: usize,
    codes: &[i8],
    scales: &[f32],
) -> Result<(Vec<u32>, QbFormat, bool), KernelError> {
    let packed = crate::qgemm::pack_qb(k, n, codes, n, false, scales)
        .map_err(|e| KernelError::params(e.to_string()))?;
    let mut blob = Vec::with_capacity(packed.words().len() + 2 * n);
    blob.extend_from_slice(packed.words());
    blob.extend(packed.col_sums().iter().map(|&s| s as u32));
    blob.extend(packed.scales().iter().map(|s| s.to_bits()));
    Ok((blob, packed.format(), packed.seven_bit()))
}

/// Splits a blob from [`qmatmul_prepare_b`] into the packed weight view.
fn weight_view<'a>(p: &QMatMulParams, blob: &'a [u32]) -> Result<PackedQBRef<'a>, KernelError> {
    packed_weight(p.k, p.n, p.format, p.seven_bit, blob)
}

/// Views a `k x n` weight blob in the layout of [`qmatmul_prepare_b`] (checked lengths).
pub(crate) fn packed_weight(
    k: usize,
    n: usize,
    format: QbFormat,
    seven_bit: bool,
    blob: &[u32],
) -> Result<PackedQBRef<'_>, KernelError> {
    let words =
        PackedQB::packed_len(k, n, format).map_err(|e| KernelError::params(e.to_string()))?;
    let need = n
        .checked_mul(2)
        .and_then(|x| x.checked_add(words))
        .ok_or_else(|| KernelError::params("weight blob size overflows usize"))?;
    need_len("b", blob.len(), need)?;
    let (w, rest) = blob.split_at(words);
    let sums: &[i32] = cast_u32(&rest[..n]);
    let scales: &[f32] = cast_u32(&rest[n..2 * n]);
    PackedQBRef::new(k, n, format, w, sums, scales)
        .map(|r| r.with_seven_bit(seven_bit))
        .map_err(|e| KernelError::params(e.to_string()))
}

/// Reinterprets 32-bit words as another plain 32-bit type.
pub(crate) fn cast_u32<T: Plain32>(w: &[u32]) -> &[T] {
    // SAFETY: `T` is i32 or f32 (the sealed `Plain32`), which have the size and alignment of
    // u32 and no invalid bit patterns, so every word is a valid `T` and the length is the same.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<T>(), w.len()) }
}

/// 32-bit plain-old-data types every bit pattern of which is valid.
pub(crate) trait Plain32 {}
impl Plain32 for i32 {}
impl Plain32 for f32 {}

/// Round half to even of `x / scale`, plus `zero`, saturated to `[0, 255]`: ONNX
/// `QuantizeLinear` to uint8, and the element rule of `DynamicQuantizeLinear`. Adding and
/// subtracting 1.5·2^23 rounds to the nearest integer, ties to even (the default rounding mode),
/// exactly for |t| ≤ 2^22; beyond ±512 the result saturates anyway, so clamping `t` first
/// changes nothing. Written without `round_ties_even` (a libm call on the baseline ISA) so that
/// it vectorizes.
#[inline(always)]
fn quantize_slice(a: &[f32], out: &mut [u8], scale: f32, zero: f32) {
    const MAGIC: f32 = 12_582_912.0;
    for (q, &x) in out.iter_mut().zip(a) {
        let t = (x / scale).clamp(-512.0, 512.0);
        let v = ((t + MAGIC - MAGIC) + zero).clamp(0.0, 255.0);
        // `v` is an integer in [0, 255]: adding 1.5·2^23 puts it in the low mantissa bits, so
        // the code is the low byte of the bit pattern (Rust's saturating float-to-int casts
        // do not vectorize; a bit cast does). NaN input gives an arbitrary code.
        *q = (v + MAGIC).to_bits() as u8;
    }
}

/// [`quantize_slice`] compiled for AVX2 (8 lanes per division).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_slice_avx2(a: &[f32], out: &mut [u8], scale: f32, zero: f32) {
    quantize_slice(a, out, scale, zero)
}

/// [`quantize_slice`] compiled for AVX-512 (16 lanes per division: on CPUs whose divider is
/// the bottleneck of this loop, twice the lanes per instruction).
///
/// # Safety
/// The CPU must support AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn quantize_slice_avx512(a: &[f32], out: &mut [u8], scale: f32, zero: f32) {
    quantize_slice(a, out, scale, zero)
}

/// Quantizes `a` into `out` with the fastest code the CPU runs.
pub(crate) fn quantize_all(a: &[f32], out: &mut [u8], scale: f32, zero: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 F and BW were detected on this CPU.
        return unsafe { quantize_slice_avx512(a, out, scale, zero) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { quantize_slice_avx2(a, out, scale, zero) };
    }
    quantize_slice(a, out, scale, zero)
}

/// `DynamicQuantizeLinear`'s scale and zero point for the whole of `a` (range widened to
/// contain 0; an empty range gets scale `1/255`), computed as the ONNX reference does.
pub fn dynamic_range(a: &[f32]) -> (f32, u8) {
    let (lo, hi) = min_max(a);
    let scale = (if hi == lo { 1.0 } else { hi - lo }) / 255.0;
    let zero = (0.0f32 - lo / scale).clamp(0.0, 255.0).round_ties_even();
    (scale, zero as u8)
}

/// `(min(0, min a), max(0, max a))`, in 16 independent lanes so that it vectorizes.
#[inline(always)]
fn min_max_lanes(a: &[f32]) -> (f32, f32) {
    let mut lo = [0f32; 16];
    let mut hi = [0f32; 16];
    let mut chunks = a.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let (mut l, mut h) = (0f32, 0f32);
    for &x in chunks.remainder().iter().chain(&lo) {
        l = if x < l { x } else { l };
    }
    for &x in chunks.remainder().iter().chain(&hi) {
        h = if x > h { x } else { h };
    }
    (l, h)
}

/// [`min_max_lanes`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_max_avx2(a: &[f32]) -> (f32, f32) {
    min_max_lanes(a)
}

fn min_max(a: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected on this CPU.
        return unsafe { min_max_avx2(a) };
    }
    min_max_lanes(a)
}

/// Computes the quantized product (see the module doc). `bias` must be present exactly when
/// `has_bias`, `residual` exactly when `has_residual`; `scratch` holds at least
/// [`QMatMulParams::scratch_bytes`] bytes.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub fn qmatmul(
    p: &QMatMulParams,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    qmatmul_impl(
        p,
        a,
        b,
        bias,
        residual.map_or(Res::None, Res::Separate),
        c,
        scratch,
        threads,
    )
}

#[allow(clippy::too_many_arguments)]
fn qmatmul_impl(
    p: &QMatMulParams,
    a: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    c: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    p.validate()?;
    p.buffer_lens().check(a, bias, &res, c, scratch)?;
    let (m, n, k) = (p.m, p.n, p.k);
    let wb = weight_view(p, b)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let a = &a[..m * k];
    let (codes, rest) = scratch.split_at_mut((m * k).div_ceil(64) * 64);
    let codes = &mut codes[..m * k];
    let (scale_bytes, zeros) = rest.split_at_mut(4 * m);
    let zeros = &mut zeros[..m];
    let (scale, zero) = match p.quant {
        QuantA::Dynamic => dynamic_range(a),
        QuantA::Static { scale, zero } => (scale, zero),
    };
    quantize_all(a, codes, scale, zero as f32);
    let mut a_scale = vec![0f32; 0];
    // The per-row scale array lives in the scratch bytes when they are aligned for f32 (the
    // arena gives 64-byte aligned scratch and the codes part is a multiple of 64 bytes);
    // otherwise a small heap vector is used.
    let scales: &mut [f32] = match bytes_as_f32(scale_bytes) {
        Some(s) => s,
        None => {
            a_scale.resize(m, 0.0);
            &mut a_scale
        }
    };
    scales.fill(scale);
    zeros.fill(zero);
    let (codes, scales, zeros): (&[u8], &[f32], &[u8]) = (codes, scales, zeros);
    // The residual is added after the integer product, so the activation then runs last.
    let act = if p.has_residual {
        Activation::Identity
    } else {
        p.activation
    };
    let run = |out: &mut [f32]| -> Result<(), KernelError> {
        crate::qgemm::QGemm {
            m,
            a: codes,
            lda: k,
            a_scale: scales,
            a_zero: zeros,
            b: wb,
            bias,
            activation: act,
            threads,
            isa: Isa::Auto,
        }
        .run(out, n)
        .map_err(|e| KernelError::internal(format!("qgemm rejected a call: {e}")))
    };
    let c = &mut c[..m * n];
    match res {
        Res::None => run(c),
        Res::Separate(r) => {
            run(c)?;
            // Two plain passes (the add vectorizes; `apply_slice` dispatches once per call,
            // not once per element).
            for (y, &x) in c.iter_mut().zip(&r[..m * n]) {
                *y += x;
            }
            p.activation.apply_slice(c);
            Ok(())
        }
        Res::InPlace => {
            // c holds the residual: compute into a temporary, then add.
            let mut t = vec![0f32; m * n];
            run(&mut t)?;
            for (y, x) in c.iter_mut().zip(t) {
                *y += x;
            }
            p.activation.apply_slice(c);
            Ok(())
        }
    }
}

/// The bytes as f32s when their start is 4-byte aligned.
pub(crate) fn bytes_as_f32(b: &mut [u8]) -> Option<&mut [f32]> {
    if !b.as_ptr().cast::<f32>().is_aligned() {
        return None;
    }
    // SAFETY: aligned for f32 (checked), `len / 4` whole floats lie inside the exclusive
    // borrow `b`, and every bit pattern is a valid f32.
    Some(unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<f32>(), b.len() / 4) })
}

/// Quantized MatMul kernel (see the module doc for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`QMatMulParams`] (or at least one word that is not its
/// tag); `bufs` to 6 pointers satisfying the buffer contract of the module doc.
#[no_mangle]
pub unsafe extern "C" fn pare_k_qmatmul(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, QMATMUL_TAG, QMATMUL_WORDS) }?;
        let p = QMatMulParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs` is the one `gemm_bufs` needs.
        let o = unsafe { gemm_bufs(bufs, &p.buffer_lens()) }?;
        let b = cast_f32_words(o.b);
        qmatmul_impl(&p, o.a, b, o.bias, o.res, o.c, o.scratch, threads).map_err(|e| e.status)
    })
}

/// The blob arrives through the f32 operand reader (same size and alignment); view it as words.
pub(crate) fn cast_f32_words(w: &[f32]) -> &[u32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a valid
    // u32; the length is unchanged.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<u32>(), w.len()) }
}
