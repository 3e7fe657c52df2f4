//! Quantized 2-D convolution ([`pare_k_qconv`]): the f32 input quantized to uint8 inside the
//! kernel with a constant scale and zero point, an int8 weight pre-packed at compile time, the
//! exact integer product of [`crate::qgemm`](mod@crate::qgemm), and an f32 epilogue (scales, bias, residual,
//! activation).
//!
//! `y[co, p] = act( sx · sw[co] · Σ_t (qx[t(p)] − zx)·qw[co, t]  + bias[co] + residual[co, p] )`
//!
//! This is what `Conv(DequantizeLinear(QuantizeLinear(x, sx, zx)), DequantizeLinear(W_q, sw))`
//! computes (the QDQ form of a statically quantized convolution), without the integer tensors
//! reaching memory as f32. The codes are the ones `QuantizeLinear` produces (round half to even,
//! saturated to `[0, 255]`; int8 activations are shifted to uint8 with `zx + 128`, which leaves
//! `qx − zx` unchanged). Padded positions hold the code `zx`, so they contribute exactly 0, as
//! the zero padding of the dequantized tensor does in the graph. The integer sum is exact.
//!
//! **Algorithm.** Per image, the input is quantized into a zero-point-padded **NHWC** u8 buffer
//! (`(H + pt + pb) x (W + pl + pr) x C_in`). The convolution is then a GEMM whose rows are the
//! output positions: A is the im2col matrix `[OH·OW, kh·kw·C_in]` (k ordered `(ky, kx, ci)`, so
//! each tap is a contiguous run of `C_in` codes, and with dilation 1 a whole kernel row is one
//! run of `kw·C_in`), B the weight `[kh·kw·C_in, C_out]` packed at compile time
//! ([`qconv_prepare_weights`]) for the VNNI / AVX2 kernels of [`crate::qgemm`](mod@crate::qgemm). A 1x1, stride 1,
//! unpadded convolution uses the NHWC codes as A directly. The rows are processed in chunks
//! (about 1 MiB of A and C); each chunk's `[positions, C_out]` result is written transposed into
//! the NCHW output, adding the residual and applying the activation there (bias and, without a
//! residual, the activation are fused in the GEMM's epilogue). The GEMM splits its threads
//! itself; the quantization (by input rows), the im2col (by output positions) and the
//! transposition (by output channels) are split on the runtime's pool too. The transpositions
//! (NCHW f32 → NHWC before quantizing, the result into NCHW) use 8x8 AVX blocks.
//!
//! Only `group == 1` is supported (grouped and depthwise convolutions stay f32).
//!
//! **Word layout** ([`QCONV_WORDS`] words): the words of the [`ConvParams`] (with
//! [`QCONV_TAG`] instead of its tag; `group` must be 1), then `[format (0 I8Quads, 1
//! I16Pairs), seven_bit, x_scale (f64 bits), x_zero]`.
//!
//! **Buffers** (6 pointers): `[x (n·c_in·h·w f32), b (the packed weight blob, see
//! [`qconv_prepare_weights`]), bias (c_out f32, if has_bias), residual (shaped like y, if
//! has_residual; may be `y` itself), y (n·c_out·oh·ow f32), scratch
//! ([`QConvParams::scratch_bytes`])]`.

use super::conv::{
    c_guard, c_params, even_bounds, gemm_bufs, run_parts, scratch_f32, split_bounds, task_count,
    ConvParams, GemmLens, KernelError, Res, CONV_TAG, CONV_WORDS,
};
use super::qmatmul::{cast_f32_words, packed_weight, qmatmul_prepare_b, quantize_all};
use super::{f64_word, word_f64, STATUS_PARAMS};
use crate::qgemm::{PackedQB, QbFormat, QGEMM_MAX_K};
use crate::{Activation, Isa};

/// Tag word that starts an encoded [`QConvParams`] (`"QCNV"`, layout version 1).
pub const QCONV_TAG: i64 = 0x5143_4e56_0001;
/// Number of words of an encoded [`QConvParams`].
pub const QCONV_WORDS: usize = CONV_WORDS + 4;

/// Target bytes of one chunk's im2col rows plus its f32 result.
const CHUNK_BYTES: usize = 1 << 20;
/// Row granularity of a chunk (a multiple of every qgemm tile height).
const CHUNK_ALIGN: usize = 48;
/// Least elements per thread in the quantization, im2col and transposition phases.
const MIN_PART_WORK: usize = 1 << 15;

/// Parameters of `pare_k_qconv` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QConvParams {
    /// The convolution's geometry and epilogue (`group` must be 1).
    pub conv: ConvParams,
    /// The packed weight's format.
    pub format: QbFormat,
    /// Every weight code is in `[-64, 64]` (recorded at packing).
    pub seven_bit: bool,
    /// Scale of the input quantization (finite, > 0).
    pub x_scale: f32,
    /// Zero point of the input quantization, uint8 domain.
    pub x_zero: u8,
}

/// Sizes derived from validated parameters.
struct Lens {
    x: usize,
    y: usize,
    blob: usize,
    /// Rows (output positions) per chunk.
    chunk: usize,
    /// Bytes of the padded NHWC codes of one image.
    padded: usize,
    /// Floats of one input row of all channels, transposed to `[w, c_in]`.
    row: usize,
    /// Bytes of the im2col chunk (0 for a pointwise conv).
    a: usize,
    scratch: usize,
}

fn round64(x: usize) -> Option<usize> {
    x.checked_add(63).map(|v| v / 64 * 64)
}

impl QConvParams {
    /// Plain quantized convolution parameters (the epilogue flags live in `conv`).
    pub fn new(conv: ConvParams, format: QbFormat, x_scale: f32, x_zero: u8) -> Self {
        QConvParams {
            conv,
            format,
            seven_bit: false,
            x_scale,
            x_zero,
        }
    }

    /// The words of this block (see the module doc).
    pub fn encode(&self) -> Vec<i64> {
        let mut v = self.conv.encode();
        v[0] = QCONV_TAG;
        v.push(match self.format {
            QbFormat::I8Quads => 0,
            QbFormat::I16Pairs => 1,
        });
        v.push(self.seven_bit as i64);
        v.push(f64_word(self.x_scale as f64));
        v.push(self.x_zero as i64);
        v
    }

    /// Parses and validates words produced by [`QConvParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != QCONV_WORDS || words[0] != QCONV_TAG {
            return None;
        }
        let mut cw = words[..CONV_WORDS].to_vec();
        cw[0] = CONV_TAG;
        let conv = ConvParams::decode(&cw)?;
        let e = &words[CONV_WORDS..];
        let format = match e[0] {
            0 => QbFormat::I8Quads,
            1 => QbFormat::I16Pairs,
            _ => return None,
        };
        let seven_bit = match e[1] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let p = QConvParams {
            conv,
            format,
            seven_bit,
            x_scale: word_f64(e[2]) as f32,
            x_zero: u8::try_from(e[3]).ok()?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters and that every size fits.
    pub fn validate(&self) -> Result<(), KernelError> {
        self.conv.validate()?;
        if self.conv.group != 1 {
            return Err(KernelError::params("qconv supports group == 1 only"));
        }
        if self.k() > QGEMM_MAX_K {
            return Err(KernelError::params(
                "qconv c_in·kh·kw is too large for an exact i32 sum",
            ));
        }
        if !(self.x_scale.is_finite() && self.x_scale > 0.0) {
            return Err(KernelError::params(
                "qconv input scale must be finite and > 0",
            ));
        }
        if self.lens().is_none() {
            return Err(KernelError::params("qconv buffer sizes overflow usize"));
        }
        Ok(())
    }

    /// The GEMM's depth: `c_in · kh · kw` (saturating; validated parameters never saturate).
    fn k(&self) -> usize {
        self.conv
            .c_in
            .saturating_mul(self.conv.kh)
            .saturating_mul(self.conv.kw)
    }

    /// Whether the input codes are the GEMM's A as they are (1x1, stride 1, no padding).
    fn pointwise(&self) -> bool {
        let c = &self.conv;
        c.kh == 1
            && c.kw == 1
            && c.stride_h == 1
            && c.stride_w == 1
            && c.pad_top + c.pad_left + c.pad_bottom + c.pad_right == 0
    }

    fn lens(&self) -> Option<Lens> {
        let c = &self.conv;
        let (oh, ow) = (c.out_h(), c.out_w());
        let m = oh.checked_mul(ow)?;
        let k = c.c_in.checked_mul(c.kh)?.checked_mul(c.kw)?;
        let x =
            c.n.checked_mul(c.c_in)?
                .checked_mul(c.h)?
                .checked_mul(c.w)?;
        let y = c.n.checked_mul(c.c_out)?.checked_mul(m)?;
        y.checked_mul(4)?;
        let words = PackedQB::packed_len(k, c.c_out, self.format).ok()?;
        let blob = words.checked_add(c.c_out.checked_mul(2)?)?;
        let per_row = k.checked_add(c.c_out.checked_mul(4)?)?;
        let chunk = (CHUNK_BYTES / per_row.max(1) / CHUNK_ALIGN * CHUNK_ALIGN)
            .max(CHUNK_ALIGN)
            .min(m);
        let hp = c.h.checked_add(c.pad_top)?.checked_add(c.pad_bottom)?;
        let wp = c.w.checked_add(c.pad_left)?.checked_add(c.pad_right)?;
        let padded = hp.checked_mul(wp)?.checked_mul(c.c_in)?;
        let row = c.c_in.checked_mul(c.w)?;
        let a = if self.pointwise() {
            0
        } else {
            chunk.checked_mul(k)?
        };
        // The f32 result and row (with 64 bytes of alignment slack), then the byte buffers.
        let scratch = chunk
            .checked_mul(c.c_out)?
            .checked_add(row)?
            .checked_mul(4)?
            .checked_add(64)?
            .checked_add(round64(padded)?)?
            .checked_add(round64(a)?)?;
        Some(Lens {
            x,
            y,
            blob,
            chunk,
            padded,
            row,
            a,
            scratch,
        })
    }

    /// Elements of `x`.
    pub fn x_len(&self) -> usize {
        self.lens().map_or(0, |l| l.x)
    }

    /// Elements of `y` (and of the residual).
    pub fn y_len(&self) -> usize {
        self.lens().map_or(0, |l| l.y)
    }

    /// 32-bit elements of the packed weight blob.
    pub fn b_len(&self) -> usize {
        self.lens().map_or(0, |l| l.blob)
    }

    /// Scratch bytes: the padded NHWC codes of one image, one chunk of im2col rows and its f32
    /// result.
    pub fn scratch_bytes(&self) -> usize {
        self.lens().map_or(0, |l| l.scratch)
    }

    /// The buffer lengths of the C entry point.
    pub(crate) fn buffer_lens(&self) -> GemmLens {
        GemmLens {
            a: self.x_len(),
            b: self.b_len(),
            bias: self.conv.has_bias.then_some(self.conv.c_out),
            residual: self.conv.has_residual,
            c: self.y_len(),
            scratch: self.scratch_bytes(),
        }
    }
}

/// Packs the ONNX int8 weight `codes` (`[c_out, c_in, kh, kw]`) with per-output-channel
/// `scales` (length `c_out`) into the weight blob of [`pare_k_qconv`]: the GEMM operand
/// `[kh·kw·c_in, c_out]` (k ordered `(ky, kx, ci)`) in the layout of
/// [`super::qmatmul::qmatmul_prepare_b`]. Returns the blob, its format and whether every code
/// is in `[-64, 64]` (for [`QConvParams::seven_bit`]).
pub fn qconv_prepare_weights(
    c_out: usize,
    c_in: usize,
    kh: usize,
    kw: usize,
    codes: &[i8],
    scales: &[f32],
) -> Result<(Vec<u32>, QbFormat, bool), KernelError> {
    let taps = kh
        .checked_mul(kw)
        .ok_or_else(|| KernelError::params("qconv kernel size overflows usize"))?;
    let k = taps
        .checked_mul(c_in)
        .ok_or_else(|| KernelError::params("qconv weight size overflows usize"))?;
    let len = k
        .checked_mul(c_out)
        .ok_or_else(|| KernelError::params("qconv weight size overflows usize"))?;
    if codes.len() != len || scales.len() != c_out {
        return Err(KernelError::params(format!(
            "qconv weight has {} codes and {} scales, [{c_out}, {c_in}, {kh}, {kw}] needs {len} \
             and {c_out}",
            codes.len(),
            scales.len()
        )));
    }
    let mut kn = vec![0i8; len];
    for co in 0..c_out {
        for ci in 0..c_in {
            for t in 0..taps {
                kn[(t * c_in + ci) * c_out + co] = codes[(co * c_in + ci) * taps + t];
            }
        }
    }
    qmatmul_prepare_b(k, c_out, &kn, scales)
}

/// Computes the quantized convolution (see the module doc). `bias` must be present exactly
/// when `has_bias`, `residual` exactly when `has_residual`; `scratch` holds at least
/// [`QConvParams::scratch_bytes`] bytes.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub fn qconv(
    p: &QConvParams,
    x: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    qconv_impl(
        p,
        x,
        b,
        bias,
        residual.map_or(Res::None, Res::Separate),
        y,
        scratch,
        threads,
    )
}

#[allow(clippy::too_many_arguments)]
fn qconv_impl(
    p: &QConvParams,
    x: &[f32],
    b: &[u32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    p.validate()?;
    p.buffer_lens().check(x, bias, &res, y, scratch)?;
    let l = p
        .lens()
        .ok_or_else(|| KernelError::params("qconv buffer sizes overflow usize"))?;
    let c = &p.conv;
    let k = p.k();
    let nco = c.c_out;
    let wb = packed_weight(k, nco, p.format, p.seven_bit, b)?;
    let m = c.out_h() * c.out_w();
    let chunk = l.chunk;
    let (floats, rest) = scratch.split_at_mut((chunk * nco + l.row) * 4 + 64);
    let (tmp, row) = scratch_f32(floats, chunk * nco + l.row)?.split_at_mut(chunk * nco);
    let (padded, rest) = rest.split_at_mut(l.padded.div_ceil(64) * 64);
    let padded = &mut padded[..l.padded];
    let abuf = &mut rest[..l.a];
    let scales = vec![p.x_scale; chunk];
    let zeros = vec![p.x_zero; chunk];
    // With a residual, the activation runs after the add, in the transposition.
    let (gemm_act, act) = if c.has_residual {
        (Activation::Identity, Some(c.activation))
    } else {
        (c.activation, None)
    };
    let (x_img, y_img) = (c.c_in * c.h * c.w, nco * m);
    for img in 0..c.n {
        quantize_nhwc(p, &x[img * x_img..][..x_img], row, padded, threads);
        let yi = &mut y[img * y_img..][..y_img];
        let ri = match res {
            Res::Separate(r) => Some(&r[img * y_img..][..y_img]),
            _ => None,
        };
        let mut m0 = 0;
        while m0 < m {
            let rows = chunk.min(m - m0);
            let a: &[u8] = if p.pointwise() {
                &padded[m0 * k..(m0 + rows) * k]
            } else {
                let a = &mut abuf[..rows * k];
                let t = task_count(threads, rows * k, MIN_PART_WORK);
                let b: Vec<usize> = even_bounds(rows, t).iter().map(|&r| r * k).collect();
                let padded: &[u8] = padded;
                run_parts(split_bounds(a, &b), &|i, part| {
                    im2col(p, padded, m0 + b[i] / k, part.len() / k, part)
                });
                &abuf[..rows * k]
            };
            let out = &mut tmp[..rows * nco];
            crate::qgemm::QGemm {
                m: rows,
                a,
                lda: k,
                a_scale: &scales[..rows],
                a_zero: &zeros[..rows],
                b: wb,
                bias,
                activation: gemm_act,
                threads,
                isa: Isa::Auto,
            }
            .run(out, nco)
            .map_err(|e| KernelError::internal(format!("qgemm rejected a call: {e}")))?;
            let out: &[f32] = out;
            let t = task_count(threads, rows * nco, MIN_PART_WORK);
            // Whole channels per part (multiples of 8 where there are enough).
            let cb: Vec<usize> = even_bounds(nco.div_ceil(8), t)
                .iter()
                .map(|&q| (q * 8).min(nco))
                .collect();
            let yb: Vec<usize> = cb.iter().map(|&co| co * m).collect();
            run_parts(split_bounds(yi, &yb), &|i, part| {
                scatter(out, rows, nco, cb[i]..cb[i + 1], part, m, m0, ri, act)
            });
            m0 += rows;
        }
    }
    Ok(())
}

/// Quantizes one image `x` (`[c_in, h, w]`) into `padded` (`[h + pt + pb, w + pl + pr, c_in]`
/// codes, the border holding the zero point), one input row at a time: transposed to
/// `[w, c_in]` in a row buffer (`row`, `c_in · w` floats, for the first part; the other
/// threads' parts allocate theirs), then quantized into the padded row. Threads split the rows.
fn quantize_nhwc(p: &QConvParams, x: &[f32], row: &mut [f32], padded: &mut [u8], threads: usize) {
    let c = &p.conv;
    let (ci, h, w) = (c.c_in, c.h, c.w);
    let wp = w + c.pad_left + c.pad_right;
    if c.pad_top + c.pad_left + c.pad_bottom + c.pad_right > 0 {
        padded.fill(p.x_zero);
    }
    let t = task_count(threads, ci * h * w, MIN_PART_WORK);
    let ys = even_bounds(h, t);
    let line = wp * ci;
    let mut b: Vec<usize> = ys.iter().map(|&y| (y + c.pad_top) * line).collect();
    b[0] = 0;
    if let Some(last) = b.last_mut() {
        *last = padded.len();
    }
    let bounds = b.clone();
    let row = std::sync::Mutex::new(Some(row));
    run_parts(split_bounds(padded, &b), &|i, part| {
        let mine = if i == 0 {
            row.lock().ok().and_then(|mut r| r.take())
        } else {
            None
        };
        let mut own = Vec::new();
        let buf: &mut [f32] = match mine {
            Some(r) => r,
            None => {
                own.resize(ci * w, 0f32);
                &mut own
            }
        };
        let zero = p.x_zero as f32;
        for yy in ys[i]..ys[i + 1] {
            let at = ((yy + c.pad_top) * wp + c.pad_left) * ci - bounds[i];
            let dst = &mut part[at..][..w * ci];
            if ci == 1 {
                quantize_all(&x[yy * w..][..w], dst, p.x_scale, zero);
                continue;
            }
            transpose(&x[yy * w..], h * w, buf, ci, ci, w);
            quantize_all(buf, dst, p.x_scale, zero);
        }
    });
}

/// `dst[c * ds + r] = src[r * ss + c]` for `r < rows`, `c < cols`. Slices too short for the
/// shape leave `dst` partly unwritten (never out of bounds).
fn transpose(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let fits = (rows - 1)
        .checked_mul(ss)
        .and_then(|v| v.checked_add(cols))
        .is_some_and(|need| need <= src.len())
        && (cols - 1)
            .checked_mul(ds)
            .and_then(|v| v.checked_add(rows))
            .is_some_and(|need| need <= dst.len());
    #[cfg(target_arch = "x86_64")]
    if fits && super::conv::avx2() {
        // SAFETY: AVX2 was detected; `fits` bounds every index the kernel forms.
        unsafe { transpose_avx2(src, ss, dst, ds, rows, cols) };
        return;
    }
    let _ = fits;
    transpose_edges(src, ss, dst, ds, 0..rows, 0..cols);
}

/// The scalar transposition of the block `rows x cols` (bounds-checked).
fn transpose_edges(
    src: &[f32],
    ss: usize,
    dst: &mut [f32],
    ds: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    for r in rows {
        for c in cols.clone() {
            if let (Some(&v), Some(d)) = (src.get(r * ss + c), dst.get_mut(c * ds + r)) {
                *d = v;
            }
        }
    }
}

/// [`transpose`] in 8x8 AVX blocks (unpack, shuffle, lane permute), scalar edges.
///
/// # Safety
/// The CPU supports AVX2; `src` holds `(rows - 1) * ss + cols` floats and `dst`
/// `(cols - 1) * ds + rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(
    src: &[f32],
    ss: usize,
    dst: &mut [f32],
    ds: usize,
    rows: usize,
    cols: usize,
) {
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for r in (0..r8).step_by(8) {
        for c in (0..c8).step_by(8) {
            // SAFETY: rows r..r+8 < rows and columns c..c+8 <= cols, inside the bounds the
            // caller guarantees for `src` and (transposed) for `dst`; AVX2 by contract.
            unsafe {
                crate::qgemm::transpose8x8_avx2(
                    sp.add(r * ss + c).cast(),
                    4 * ss,
                    dp.add(c * ds + r).cast(),
                    4 * ds,
                )
            };
        }
    }
    transpose_edges(src, ss, dst, ds, 0..r8, c8..cols);
    transpose_edges(src, ss, dst, ds, r8..rows, 0..cols);
}

/// Writes im2col rows `m0..m0 + rows` (output positions, row-major over `(oy, ox)`) into `a`
/// (`rows x kh·kw·c_in`, k ordered `(ky, kx, ci)`), reading the padded NHWC codes.
fn im2col(p: &QConvParams, padded: &[u8], m0: usize, rows: usize, a: &mut [u8]) {
    let c = &p.conv;
    let (ci, kh, kw) = (c.c_in, c.kh, c.kw);
    let k = ci * kh * kw;
    let ow = c.out_w();
    let wp = c.w + c.pad_left + c.pad_right;
    let run = kw * ci;
    for (r, dst) in a.chunks_exact_mut(k).take(rows).enumerate() {
        let pos = m0 + r;
        let (oy, ox) = (pos / ow, pos % ow);
        for ky in 0..kh {
            let base = (oy * c.stride_h + ky * c.dilation_h) * wp + ox * c.stride_w;
            let d = &mut dst[ky * run..][..run];
            if c.dilation_w == 1 {
                d.copy_from_slice(&padded[base * ci..][..run]);
            } else {
                for (kx, t) in d.chunks_exact_mut(ci).enumerate() {
                    t.copy_from_slice(&padded[(base + kx * c.dilation_w) * ci..][..ci]);
                }
            }
        }
    }
}

/// Writes channels `cos` of a chunk's `[rows, nco]` result `t` into columns `m0..m0 + rows`
/// of those channels' NCHW output rows `yc` (`[cos.len(), m]`, starting at channel
/// `cos.start`), adding the residual (`ri`, the image's whole residual, or `yc`'s own values
/// when `act` is set and `ri` is `None`: the in-place residual) and applying `act` when there
/// is a residual.
#[allow(clippy::too_many_arguments)]
fn scatter(
    t: &[f32],
    rows: usize,
    nco: usize,
    cos: std::ops::Range<usize>,
    yc: &mut [f32],
    m: usize,
    m0: usize,
    ri: Option<&[f32]>,
    act: Option<Activation>,
) {
    if cos.is_empty() || rows == 0 {
        return;
    }
    let Some(a) = act else {
        transpose(&t[cos.start..], nco, &mut yc[m0..], m, rows, cos.len());
        return;
    };
    // Residual: transpose 64-row x 8-channel blocks into a small buffer, then add the
    // residual and activate each channel's contiguous run.
    const RB: usize = 64;
    const CB: usize = 8;
    let mut buf = [0f32; RB * CB];
    let mut co0 = cos.start;
    while co0 < cos.end {
        let cb = CB.min(cos.end - co0);
        let mut i0 = 0;
        while i0 < rows {
            let len = RB.min(rows - i0);
            transpose(&t[i0 * nco + co0..], nco, &mut buf, RB, len, cb);
            for (j, run) in buf.chunks_exact(RB).take(cb).enumerate() {
                let at = (co0 - cos.start + j) * m + m0 + i0;
                let out = &mut yc[at..at + len];
                match ri {
                    Some(r) => {
                        let ra = (co0 + j) * m + m0 + i0;
                        for ((o, &v), &x) in out.iter_mut().zip(run).zip(&r[ra..ra + len]) {
                            *o = a.apply(v + x);
                        }
                    }
                    None => {
                        for (o, &v) in out.iter_mut().zip(run) {
                            *o = a.apply(v + *o);
                        }
                    }
                }
            }
            i0 += len;
        }
        co0 += cb;
    }
}

/// Quantized convolution kernel (see the module doc for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`QConvParams`] (or at least one word that is not its tag);
/// `bufs` to 6 pointers satisfying the buffer contract of the module doc.
#[no_mangle]
pub unsafe extern "C" fn pare_k_qconv(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, QCONV_TAG, QCONV_WORDS) }?;
        let p = QConvParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs` is the one `gemm_bufs` needs.
        let o = unsafe { gemm_bufs(bufs, &p.buffer_lens()) }?;
        let b = cast_f32_words(o.b);
        qconv_impl(&p, o.a, b, o.bias, o.res, o.c, o.scratch, threads).map_err(|e| e.status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 block transposition and the scalar one agree on full blocks, edges and
    /// strided operands.
    #[test]
    fn transpositions_agree() {
        for (rows, cols) in [(1, 1), (8, 8), (13, 21), (64, 8), (3, 40), (17, 9)] {
            let (ss, ds) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
            let mut want = vec![-1f32; cols * ds];
            transpose_edges(&src, ss, &mut want, ds, 0..rows, 0..cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(want[c * ds + r], src[r * ss + c]);
                }
            }
            let mut got = vec![-1f32; cols * ds];
            transpose(&src, ss, &mut got, ds, rows, cols);
            assert_eq!(want, got, "{rows}x{cols}");
        }
        // Operands too short for the shape: no panic, nothing out of bounds.
        let mut small = [0f32; 4];
        transpose(&[1.0; 10], 5, &mut small, 2, 2, 5);
    }
}
