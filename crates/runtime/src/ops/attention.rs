//! ONNX Attention (opset 23), 4-D form ([`pare_k_attention`]), f32:
//! `Y = softmax(scale·Q·Kᵀ (softcapped) + mask + causal) · V` per (batch, query head), with
//! grouped-query attention (`q_heads` a multiple of `kv_heads`).
//!
//! The query heads that share a key/value head are consecutive in `Q` (`[B, Hq, Sq, D]` is
//! `[B, Hkv, group·Sq, D]`), so one `(batch, kv head)` pair is a single matrix of
//! `group·Sq` query rows against one K and one V. Those rows are processed in blocks sized so
//! that the score tile (`rows x Skv` f32) stays in L2: `S = scale·Q_blk·Kᵀ` (SGEMM), then per
//! row softcap, mask, causal limit and a stable softmax in place (vectorized `exp`), then
//! `Y_blk = S·V` (SGEMM) straight into the output. Blocks are spread over the threads, each
//! with its own slot of the scratch buffer; a single block uses the threads inside its GEMMs.
//!
//! A fully masked row has no finite score, and its output is NaN (as in the reference).

use super::copy::{
    buf, even_bounds, guard, par_each, param_words, prod, slice_in, slice_out, split_at_bounds,
    word_usize,
};
use super::norm::{exp_fast, max_lanes, multiversion, LANES};
use super::{f64_word, word_f64, STATUS_INTERNAL, STATUS_PARAMS};
use crate::sgemm;

/// Score elements per block (256 KiB of f32): the tile stays in L2 between the two GEMMs.
const BLOCK_ELEMS: usize = 64 << 10;

/// Below this many flops per task, fewer tasks are used.
const MIN_FLOPS_PER_TASK: usize = 4_000_000;

/// Kind of the `attn_mask` operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// No mask.
    None = 0,
    /// f32, added to the scores.
    Float = 1,
    /// bool (one byte; non-zero keeps the key, zero masks it out).
    Bool = 2,
}

/// ONNX Attention on 4-D `Q [B, Hq, Sq, D]`, `K [B, Hkv, Skv, D]`, `V [B, Hkv, Skv, Dv]` to
/// `Y [B, Hq, Sq, Dv]` (a KV cache is concatenated into K and V by the backend; see
/// `causal_offset`).
///
/// Words: `[batch, q_heads, kv_heads, q_len, kv_len, head_dim, v_dim, scale (f64 bits),
/// is_causal, causal_offset, softcap (f64 bits), mask_kind, mask_strides[4], mask_cols,
/// max_threads]` (18 words; `mask_kind`: [`MaskKind`] code).
///
/// - `scale`: the ONNX attribute, or `1/sqrt(head_dim)` when absent ([`default_scale`]).
/// - `is_causal`: query `i` sees keys `j <= i + causal_offset` (`causal_offset` is the past
///   length when K holds a cache, else 0).
/// - `softcap`: 0 for none, else scores become `softcap·tanh(s/softcap)` before the mask.
/// - the mask element for `(b, h, i, j)` is `mask[b·s0 + h·s1 + i·s2 + j·s3]` (strides in
///   elements, 0 broadcasts) for `j < mask_cols`; keys `j >= mask_cols` are masked out (ONNX
///   pads a mask narrower than the key sequence with -inf).
/// - `max_threads`: how many per-thread slots the scratch holds; the kernel uses at most that
///   many threads.
///
/// Bufs: `[q, k, v, mask|null, y, scratch]`; `scratch` holds [`AttentionParams::scratch_bytes`]
/// bytes (4-byte aligned); `y` and `scratch` overlap nothing else.
///
/// [`default_scale`]: AttentionParams::default_scale
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    /// B
    pub batch: usize,
    /// Hq
    pub q_heads: usize,
    /// Hkv (divides Hq)
    pub kv_heads: usize,
    /// Sq
    pub q_len: usize,
    /// Skv
    pub kv_len: usize,
    /// D (of Q and K)
    pub head_dim: usize,
    /// Dv (of V and Y)
    pub v_dim: usize,
    /// Multiplier of Q·Kᵀ.
    pub scale: f64,
    /// Causal masking.
    pub is_causal: bool,
    /// Keys visible beyond the diagonal under `is_causal` (the past length).
    pub causal_offset: usize,
    /// Softcap (0: none).
    pub softcap: f64,
    /// Kind of the mask operand.
    pub mask: MaskKind,
    /// Mask strides for `[B, Hq, Sq, Skv]`, in elements.
    pub mask_strides: [usize; 4],
    /// Keys the mask covers; later keys are masked out.
    pub mask_cols: usize,
    /// Scratch slots (threads) provided.
    pub max_threads: usize,
}

impl AttentionParams {
    /// Number of parameter words.
    pub const WORDS: usize = 18;

    /// ONNX's default scale, `1/sqrt(head_dim)`.
    pub fn default_scale(head_dim: usize) -> f64 {
        1.0 / (head_dim as f64).sqrt()
    }

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        let mut w = vec![
            self.batch as i64,
            self.q_heads as i64,
            self.kv_heads as i64,
            self.q_len as i64,
            self.kv_len as i64,
            self.head_dim as i64,
            self.v_dim as i64,
            f64_word(self.scale),
            self.is_causal as i64,
            self.causal_offset as i64,
            f64_word(self.softcap),
            self.mask as i64,
        ];
        w.extend(self.mask_strides.iter().map(|&s| s as i64));
        w.push(self.mask_cols as i64);
        w.push(self.max_threads as i64);
        w
    }

    /// Parses words produced by [`AttentionParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<AttentionParams> {
        if w.len() != Self::WORDS || !matches!(w[8], 0 | 1) {
            return None;
        }
        let mask = match w[11] {
            0 => MaskKind::None,
            1 => MaskKind::Float,
            2 => MaskKind::Bool,
            _ => return None,
        };
        let u = |i: usize| word_usize(w[i]);
        let p = AttentionParams {
            batch: u(0)?,
            q_heads: u(1)?,
            kv_heads: u(2)?,
            q_len: u(3)?,
            kv_len: u(4)?,
            head_dim: u(5)?,
            v_dim: u(6)?,
            scale: word_f64(w[7]),
            is_causal: w[8] == 1,
            causal_offset: u(9)?,
            softcap: word_f64(w[10]),
            mask,
            mask_strides: [u(12)?, u(13)?, u(14)?, u(15)?],
            mask_cols: u(16)?,
            max_threads: u(17)?,
        };
        p.valid().then_some(p)
    }

    fn valid(&self) -> bool {
        self.kv_heads > 0
            && self.q_heads.is_multiple_of(self.kv_heads)
            && self.max_threads > 0
            && self.scale.is_finite()
            && self.softcap.is_finite()
            && self.softcap >= 0.0
            && self.lens().is_some()
            && self.block_rows().is_some()
    }

    /// Query rows per key/value head: `group·Sq`.
    fn rows(&self) -> usize {
        (self.q_heads / self.kv_heads.max(1)) * self.q_len
    }

    /// Query rows per block.
    fn block_rows(&self) -> Option<usize> {
        let rows = self.rows();
        let b = (BLOCK_ELEMS / self.kv_len.max(1)).max(1);
        let b = if b >= 6 { b / 6 * 6 } else { b };
        let b = b.min(rows).max(1);
        b.checked_mul(self.kv_len)?;
        Some(b)
    }

    /// f32 elements of one thread's scratch slot.
    fn slot_elems(&self) -> Option<usize> {
        self.block_rows()?.checked_mul(self.kv_len)
    }

    /// Bytes of the scratch buffer.
    pub fn scratch_bytes(&self) -> usize {
        self.slot_elems()
            .and_then(|e| e.checked_mul(self.max_threads.max(1)))
            .and_then(|e| e.checked_mul(4))
            .unwrap_or(usize::MAX)
    }

    /// Elements of `q, k, v, y, mask`.
    fn lens(&self) -> Option<[usize; 5]> {
        let mask = if self.mask == MaskKind::None || self.mask_cols == 0 {
            0
        } else {
            let dims = [self.batch, self.q_heads, self.q_len, self.mask_cols];
            if dims.contains(&0) {
                0
            } else {
                let mut hi = 0usize;
                for (&n, &s) in dims.iter().zip(&self.mask_strides) {
                    hi = hi.checked_add((n - 1).checked_mul(s)?)?;
                }
                hi.checked_add(1)?
            }
        };
        Some([
            prod(&[self.batch, self.q_heads, self.q_len, self.head_dim]).ok()?,
            prod(&[self.batch, self.kv_heads, self.kv_len, self.head_dim]).ok()?,
            prod(&[self.batch, self.kv_heads, self.kv_len, self.v_dim]).ok()?,
            prod(&[self.batch, self.q_heads, self.q_len, self.v_dim]).ok()?,
            mask,
        ])
    }
}

/// The `attn_mask` operand.
#[derive(Debug, Clone, Copy)]
pub enum AttnMask<'a> {
    /// Added to the scores.
    Float(&'a [f32]),
    /// One byte per element, non-zero keeps.
    Bool(&'a [u8]),
}

multiversion! {
    /// Stable softmax of a row, in place.
    fn softmax_inplace(row: &mut [f32]) -> () {
        let m = max_lanes(row);
        let mut s = [0.0f32; LANES];
        let mut ch = row.chunks_exact_mut(LANES);
        for c in &mut ch {
            for k in 0..LANES {
                let e = exp_fast(c[k] - m);
                c[k] = e;
                s[k] += e;
            }
        }
        let mut r = 0.0f32;
        for v in ch.into_remainder() {
            *v = exp_fast(*v - m);
            r += *v;
        }
        let inv = 1.0 / (s.iter().sum::<f32>() + r);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Attention (see [`AttentionParams`]); `scratch` holds at least `scratch_bytes() / 4` f32.
/// Nothing is written on a parameter error.
#[allow(clippy::too_many_arguments)] // the operands of the op
pub fn attention(
    p: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<AttnMask<'_>>,
    y: &mut [f32],
    scratch: &mut [f32],
    threads: usize,
) -> Result<(), i32> {
    if !p.valid() {
        return Err(STATUS_PARAMS);
    }
    let [nq, nk, nv, ny, nm] = p.lens().ok_or(STATUS_PARAMS)?;
    let slot = p.slot_elems().ok_or(STATUS_PARAMS)?;
    let mask_ok = match (p.mask, mask) {
        (MaskKind::None, _) => true,
        (MaskKind::Float, Some(AttnMask::Float(m))) => m.len() >= nm,
        (MaskKind::Bool, Some(AttnMask::Bool(m))) => m.len() >= nm,
        _ => false,
    };
    if q.len() < nq
        || k.len() < nk
        || v.len() < nv
        || y.len() < ny
        || !mask_ok
        || scratch.len() < slot.saturating_mul(p.max_threads)
    {
        return Err(STATUS_PARAMS);
    }
    let mask = if p.mask == MaskKind::None { None } else { mask };
    if ny == 0 {
        return Ok(());
    }
    let (skv, d, dv, sq) = (p.kv_len, p.head_dim, p.v_dim, p.q_len);
    let rows = p.rows();
    let blk = p.block_rows().ok_or(STATUS_PARAMS)?;
    let nblk = rows.div_ceil(blk);
    let pairs = p.batch * p.kv_heads;
    let items = pairs * nblk;
    let flops = 2usize
        .saturating_mul(ny / dv.max(1))
        .saturating_mul(skv)
        .saturating_mul(d + dv);
    let tasks = threads
        .max(1)
        .min(p.max_threads)
        .min(items)
        .min((flops / MIN_FLOPS_PER_TASK).max(1));
    let gemm_threads = if tasks == 1 && items == 1 {
        threads.max(1)
    } else {
        1
    };
    // Row offset (in rows of all pairs) of the first row of an item.
    let row_of = |item: usize| (item / nblk) * rows + ((item % nblk) * blk).min(rows);
    let bounds = even_bounds(items, tasks);
    let yb: Vec<usize> = bounds.iter().map(|&b| row_of(b) * dv).collect();
    let y_parts = split_at_bounds(&mut y[..ny], &yb);
    let work: Vec<(&mut [f32], &mut [f32])> = y_parts
        .into_iter()
        .zip(scratch.chunks_exact_mut(slot.max(1)))
        .collect();
    let group = p.q_heads / p.kv_heads;
    let scale = p.scale as f32;
    let softcap = p.softcap as f32;
    let [s0, s1, s2, s3] = p.mask_strides;
    let failed = std::sync::atomic::AtomicBool::new(false);
    par_each(work, &|t, (ys, sc): (&mut [f32], &mut [f32])| {
        for item in bounds[t]..bounds[t + 1] {
            let pair = item / nblk;
            let r0 = ((item % nblk) * blk).min(rows);
            let r1 = (r0 + blk).min(rows);
            let m = r1 - r0;
            if m == 0 {
                continue;
            }
            let (b, kvh) = (pair / p.kv_heads, pair % p.kv_heads);
            let qs = &q[(pair * rows + r0) * d..(pair * rows + r1) * d];
            let ks = &k[pair * skv * d..(pair + 1) * skv * d];
            let vs = &v[pair * skv * dv..(pair + 1) * skv * dv];
            let s = &mut sc[..m * skv];
            let at = (row_of(item) - row_of(bounds[t])) * dv;
            let yo = &mut ys[at..at + m * dv];
            if sgemm(
                m,
                skv,
                d,
                scale,
                qs,
                d,
                false,
                ks,
                d,
                true,
                0.0,
                s,
                skv,
                gemm_threads,
            )
            .is_err()
            {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            for (rr, row) in s.chunks_exact_mut(skv.max(1)).enumerate() {
                let r = r0 + rr;
                let (g, i) = (r / sq, r % sq);
                let h = kvh * group + g;
                if softcap > 0.0 {
                    for x in row.iter_mut() {
                        *x = softcap * (*x / softcap).tanh();
                    }
                }
                let base = b * s0 + h * s1 + i * s2;
                let cols = p.mask_cols.min(skv);
                match mask {
                    Some(AttnMask::Float(mk)) => {
                        for (j, x) in row[..cols].iter_mut().enumerate() {
                            *x += mk[base + j * s3];
                        }
                        row[cols..].fill(f32::NEG_INFINITY);
                    }
                    Some(AttnMask::Bool(mk)) => {
                        for (j, x) in row[..cols].iter_mut().enumerate() {
                            if mk[base + j * s3] == 0 {
                                *x = f32::NEG_INFINITY;
                            }
                        }
                        row[cols..].fill(f32::NEG_INFINITY);
                    }
                    None => {}
                }
                if p.is_causal {
                    let keep = (i + p.causal_offset + 1).min(skv);
                    row[keep..].fill(f32::NEG_INFINITY);
                }
                softmax_inplace(row);
            }
            if sgemm(
                m,
                dv,
                skv,
                1.0,
                s,
                skv,
                false,
                vs,
                dv,
                false,
                0.0,
                yo,
                dv,
                gemm_threads,
            )
            .is_err()
            {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    });
    if failed.into_inner() {
        return Err(STATUS_INTERNAL);
    }
    Ok(())
}

/// C entry point of [`attention`]; see [`AttentionParams`].
///
/// # Safety
/// `params` holds an [`AttentionParams`] encoding; `bufs` holds the six pointers it documents
/// (`mask` null when `mask_kind` is 0).
#[no_mangle]
pub unsafe extern "C" fn pare_k_attention(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = AttentionParams::decode(unsafe { param_words(params, AttentionParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let [nq, nk, nv, ny, nm] = p.lens().ok_or(STATUS_PARAMS)?;
        let nscratch = p
            .slot_elems()
            .and_then(|s| s.checked_mul(p.max_threads))
            .ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller passes the documented buffers with these lengths; y and scratch
        // overlap nothing else.
        unsafe {
            let q = slice_in::<f32>(buf(bufs, 0)?, nq)?;
            let k = slice_in::<f32>(buf(bufs, 1)?, nk)?;
            let v = slice_in::<f32>(buf(bufs, 2)?, nv)?;
            let mask = match p.mask {
                MaskKind::None => None,
                MaskKind::Float => Some(AttnMask::Float(slice_in::<f32>(buf(bufs, 3)?, nm)?)),
                MaskKind::Bool => Some(AttnMask::Bool(slice_in::<u8>(buf(bufs, 3)?, nm)?)),
            };
            let y = slice_out::<f32>(buf(bufs, 4)?, ny)?;
            let scratch = slice_out::<f32>(buf(bufs, 5)?, nscratch)?;
            attention(&p, q, k, v, mask, y, scratch, threads)
        }
    })
}
