//! Normalizations: Softmax / LogSoftmax ([`pare_k_softmax`]), LayerNormalization
//! ([`pare_k_layernorm`]) and InstanceNormalization ([`pare_k_instnorm`]), all f32.
//!
//! Softmax is numerically stable (the row maximum is subtracted before `exp`). `exp` is a
//! branch-free polynomial ([`exp_fast`], Cephes' `expf` scheme: `2^n · p(r)` with `r` in
//! `[-ln2/2, ln2/2]`, about 1 ulp) that the compiler vectorizes; the hot loops are compiled
//! twice, for the baseline and for AVX2+FMA, and picked at run time. Reductions keep 8 partial
//! sums so they vectorize too. When the softmax axis is not innermost (`inner > 1`), the work is
//! done on tiles of 64 columns: each pass over the axis updates 64 running maxima or sums at
//! once, contiguous in memory.
//!
//! LayerNormalization and InstanceNormalization compute the mean, then the variance of the
//! deviations (two passes, no cancellation), in f32.

use super::copy::{
    buf, even_bounds, guard, par_each, param_words, prod, slice_in, slice_out, split_at_bounds,
    tasks_for, word_usize,
};
use super::{f64_word, word_f64, STATUS_PARAMS};

/// Partial sums kept by the vectorized reductions.
pub(crate) const LANES: usize = 8;

/// Elements per task below which a kernel stays on one thread.
pub(crate) const PAR_MIN_ELEMS: usize = 32 << 10;

/// Defines `fn name(args) -> ret` whose body is compiled for the baseline and, on x86-64, for
/// AVX2+FMA too, dispatching on the running CPU.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    body($($arg),*)
                }
                if $crate::ops::norm::has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Whether the running CPU has AVX2 and FMA (cached by `std`).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `e^x` in f32, branch-free so that loops over it vectorize: about 1 ulp on
/// `[-87.3, 88.7]`, 0 below, +inf above, NaN for NaN.
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and the rest (Cody-Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // Not `clamp`: comparisons keep a NaN (clamp does too, but through a branchy path that
    // vectorizes worse).
    #[allow(clippy::manual_clamp)]
    let xc = if x < -87.0 {
        -87.0
    } else if x > 88.0 {
        88.0
    } else {
        x
    };
    let t = xc * LOG2E + MAGIC;
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r2 + r + 1.0;
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    let y = p * scale;
    // A NaN fails every comparison, so it flows through the arithmetic to the result.
    let y = if x < -87.0 { 0.0 } else { y };
    if x > 88.0 {
        f32::INFINITY
    } else {
        y
    }
}

/// `max` that lets a NaN through (as the reference does).
#[inline(always)]
pub(crate) fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Maximum of a slice (-inf for an empty one), NaN if any element is NaN.
#[inline(always)]
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut ch = x.chunks_exact(LANES);
    for c in &mut ch {
        for k in 0..LANES {
            m[k] = max_nan(m[k], c[k]);
        }
    }
    let mut r = f32::NEG_INFINITY;
    for &v in ch.remainder().iter().chain(m.iter()) {
        r = max_nan(r, v);
    }
    r
}

/// Sum of `f(x)` over a slice with [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn sum_lanes(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut s = [0.0f32; LANES];
    let mut ch = x.chunks_exact(LANES);
    for c in &mut ch {
        for k in 0..LANES {
            s[k] += f(c[k]);
        }
    }
    let mut r = 0.0f32;
    for &v in ch.remainder() {
        r += f(v);
    }
    s.iter().sum::<f32>() + r
}

multiversion! {
    /// `y = exp(x - m)`, returning the sum of `y`.
    pub(crate) fn exp_store_sum(x: &[f32], y: &mut [f32], m: f32) -> f32 {
        let n = x.len().min(y.len());
        let (x, y) = (&x[..n], &mut y[..n]);
        let mut s = [0.0f32; LANES];
        let mut xc = x.chunks_exact(LANES);
        let mut yc = y.chunks_exact_mut(LANES);
        for (a, b) in (&mut xc).zip(&mut yc) {
            for k in 0..LANES {
                let e = exp_fast(a[k] - m);
                b[k] = e;
                s[k] += e;
            }
        }
        let mut r = 0.0f32;
        for (a, b) in xc.remainder().iter().zip(yc.into_remainder()) {
            let e = exp_fast(*a - m);
            *b = e;
            r += e;
        }
        s.iter().sum::<f32>() + r
    }
}

multiversion! {
    /// Softmax (or LogSoftmax) of one contiguous row.
    fn softmax_row(x: &[f32], y: &mut [f32], log: bool) -> () {
        let m = max_lanes(x);
        if log {
            let s = sum_lanes(x, |v| exp_fast(v - m));
            let l = m + s.ln();
            for (b, &a) in y.iter_mut().zip(x) {
                *b = a - l;
            }
        } else {
            let s = exp_store_sum(x, y, m);
            let inv = 1.0 / s;
            for b in y.iter_mut() {
                *b *= inv;
            }
        }
    }
}

/// Columns per tile of the strided (`inner > 1`) softmax.
const COL_TILE: usize = 64;

/// The output of a strided softmax, shared by its tasks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: tasks write disjoint (outer, column tile) regions of the output (see
// `softmax_strided`), and the output outlives the pool job.
unsafe impl Send for OutPtr {}
// SAFETY: as above; sharing only copies the address.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer `off` elements further (a method, so closures capture the whole `OutPtr`).
    ///
    /// # Safety
    /// The result stays inside the output.
    unsafe fn add(self, off: usize) -> OutPtr {
        // SAFETY: forwarded from the caller.
        OutPtr(unsafe { self.0.add(off) })
    }
}

multiversion! {
    /// Softmax over `n` rows of `inner` for columns `c0..c0+w` (`w <= COL_TILE`) of one outer
    /// block `x` (`n·inner` elements) whose output starts at `y`.
    ///
    /// Writes only the elements `t·inner + c0 + j` (`t < n`, `j < w`) of the block at `y`.
    fn softmax_cols(x: &[f32], y: OutPtr, n: usize, inner: usize, c0: usize, w: usize, log: bool) -> () {
        let mut mx = [f32::NEG_INFINITY; COL_TILE];
        let mx = &mut mx[..w];
        for t in 0..n {
            let xr = &x[t * inner + c0..][..w];
            for (m, &v) in mx.iter_mut().zip(xr) {
                *m = max_nan(*m, v);
            }
        }
        let mut s = [0.0f32; COL_TILE];
        let s = &mut s[..w];
        let row = |t: usize| {
            // SAFETY: the caller owns these w elements of row t of this block exclusively, and
            // the block lies inside the output (checked by `softmax`).
            unsafe { std::slice::from_raw_parts_mut(y.0.add(t * inner + c0), w) }
        };
        for t in 0..n {
            let xr = &x[t * inner + c0..][..w];
            let yr = row(t);
            for j in 0..w {
                let e = exp_fast(xr[j] - mx[j]);
                yr[j] = e;
                s[j] += e;
            }
        }
        if log {
            for j in 0..w {
                s[j] = mx[j] + s[j].ln();
            }
            for t in 0..n {
                let xr = &x[t * inner + c0..][..w];
                let yr = row(t);
                for j in 0..w {
                    yr[j] = xr[j] - s[j];
                }
            }
        } else {
            for v in s.iter_mut() {
                *v = 1.0 / *v;
            }
            for t in 0..n {
                let yr = row(t);
                for j in 0..w {
                    yr[j] *= s[j];
                }
            }
        }
    }
}

/// Softmax or LogSoftmax of an `outer x axis_len x inner` f32 tensor along the middle axis.
///
/// Words: `[outer, axis_len, inner, log]` (`log` 0: Softmax, 1: LogSoftmax).
///
/// Bufs: `[x, y]`, both `outer·axis_len·inner` f32, not overlapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxParams {
    /// Product of the dimensions before the axis.
    pub outer: usize,
    /// Extent of the softmax axis.
    pub axis_len: usize,
    /// Product of the dimensions after the axis.
    pub inner: usize,
    /// LogSoftmax instead of Softmax.
    pub log: bool,
}

impl SoftmaxParams {
    /// Number of parameter words.
    pub const WORDS: usize = 4;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.outer as i64,
            self.axis_len as i64,
            self.inner as i64,
            self.log as i64,
        ]
    }

    /// Parses words produced by [`SoftmaxParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<SoftmaxParams> {
        if w.len() != Self::WORDS || !matches!(w[3], 0 | 1) {
            return None;
        }
        Some(SoftmaxParams {
            outer: word_usize(w[0])?,
            axis_len: word_usize(w[1])?,
            inner: word_usize(w[2])?,
            log: w[3] == 1,
        })
    }

    /// Elements of `x` (and `y`).
    pub fn numel(&self) -> Option<usize> {
        prod(&[self.outer, self.axis_len, self.inner]).ok()
    }
}

/// Softmax / LogSoftmax (see [`SoftmaxParams`]); nothing is written on error.
pub fn softmax(p: &SoftmaxParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<(), i32> {
    let total = p.numel().ok_or(STATUS_PARAMS)?;
    if x.len() < total || y.len() < total {
        return Err(STATUS_PARAMS);
    }
    if total == 0 {
        return Ok(());
    }
    let (n, inner) = (p.axis_len, p.inner);
    let tasks = tasks_for(total, threads, PAR_MIN_ELEMS);
    if inner == 1 {
        let bounds = even_bounds(p.outer, tasks.min(p.outer));
        let eb: Vec<usize> = bounds.iter().map(|&b| b * n).collect();
        let parts = split_at_bounds(&mut y[..total], &eb);
        par_each(parts, &|t, ys: &mut [f32]| {
            let xs = &x[eb[t]..eb[t + 1]];
            for (xr, yr) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
                softmax_row(xr, yr, p.log);
            }
        });
        return Ok(());
    }
    let tiles = inner.div_ceil(COL_TILE);
    let items = p.outer * tiles;
    let tasks = tasks.min(items);
    let bounds = even_bounds(items, tasks);
    let out = OutPtr(y.as_mut_ptr());
    let block = n * inner;
    let run = |t: usize| {
        for item in bounds[t]..bounds[t + 1] {
            let (o, tile) = (item / tiles, item % tiles);
            let c0 = tile * COL_TILE;
            let w = COL_TILE.min(inner - c0);
            // SAFETY: block o lies inside y (total checked above); items are disjoint.
            let yb = unsafe { out.add(o * block) };
            softmax_cols(&x[o * block..(o + 1) * block], yb, n, inner, c0, w, p.log);
        }
    };
    if tasks <= 1 {
        run(0);
    } else {
        crate::pool::run(tasks, &run);
    }
    Ok(())
}

/// C entry point of [`softmax`]; see [`SoftmaxParams`].
///
/// # Safety
/// `params` holds a [`SoftmaxParams`] encoding; `bufs` holds the two pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_softmax(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = SoftmaxParams::decode(unsafe { param_words(params, SoftmaxParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let n = p.numel().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller passes two pointers to n f32 each, not overlapping.
        let (x, y) = unsafe {
            (
                slice_in::<f32>(buf(bufs, 0)?, n)?,
                slice_out::<f32>(buf(bufs, 1)?, n)?,
            )
        };
        softmax(&p, x, y, threads)
    })
}

multiversion! {
    /// Normalizes one row: `y = (x - mean) / sqrt(var + eps) * scale + bias`, where `scale` /
    /// `bias` are per element (slices of the row's length) or, when `per_row` is given, one
    /// pair for the whole row.
    fn norm_row(
        x: &[f32],
        y: &mut [f32],
        eps: f32,
        scale: &[f32],
        bias: Option<&[f32]>,
        per_row: Option<(f32, f32)>,
    ) -> () {
        let n = x.len();
        if n == 0 {
            return;
        }
        let mean = sum_lanes(x, |v| v) / n as f32;
        let var = sum_lanes(x, |v| (v - mean) * (v - mean)) / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        match (per_row, bias) {
            (Some((s, b)), _) => {
                let k = inv * s;
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = (v - mean) * k + b;
                }
            }
            (None, Some(bias)) => {
                for (((o, &v), &s), &b) in y.iter_mut().zip(x).zip(scale).zip(bias) {
                    *o = (v - mean) * inv * s + b;
                }
            }
            (None, None) => {
                for ((o, &v), &s) in y.iter_mut().zip(x).zip(scale) {
                    *o = (v - mean) * inv * s;
                }
            }
        }
    }
}

/// A per-row body: `(row index, x row, y row)`.
type RowFn<'a> = dyn Fn(usize, &[f32], &mut [f32]) + Sync + 'a;

/// Runs `row(r, x_row, y_row)` for `rows` rows of `len`, split over threads.
fn for_rows(x: &[f32], y: &mut [f32], rows: usize, len: usize, threads: usize, row: &RowFn<'_>) {
    let total = rows * len;
    let tasks = tasks_for(total, threads, PAR_MIN_ELEMS).min(rows.max(1));
    let bounds = even_bounds(rows, tasks);
    let eb: Vec<usize> = bounds.iter().map(|&b| b * len).collect();
    let parts = split_at_bounds(&mut y[..total], &eb);
    par_each(parts, &|t, ys: &mut [f32]| {
        let xs = &x[eb[t]..eb[t + 1]];
        for (i, (xr, yr)) in xs
            .chunks_exact(len)
            .zip(ys.chunks_exact_mut(len))
            .enumerate()
        {
            row(bounds[t] + i, xr, yr);
        }
    });
}

/// ONNX LayerNormalization (Y only) of an `outer x inner` f32 tensor over `inner`:
/// `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, population variance.
///
/// Words: `[outer, inner, epsilon (f64 bits, see `f64_word`), has_bias]`.
///
/// Bufs: `[x, scale, bias|null, y]`: `x` and `y` `outer·inner` f32 (not overlapping), `scale`
/// and `bias` `inner` f32 each (broadcast by the backend to the normalized shape); `bias` is
/// read only when `has_bias`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormParams {
    /// Product of the dimensions before `axis`.
    pub outer: usize,
    /// Product of the normalized dimensions.
    pub inner: usize,
    /// Added to the variance.
    pub epsilon: f64,
    /// Whether `bias` is given.
    pub has_bias: bool,
}

impl LayerNormParams {
    /// Number of parameter words.
    pub const WORDS: usize = 4;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.outer as i64,
            self.inner as i64,
            f64_word(self.epsilon),
            self.has_bias as i64,
        ]
    }

    /// Parses words produced by [`LayerNormParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<LayerNormParams> {
        if w.len() != Self::WORDS || !matches!(w[3], 0 | 1) {
            return None;
        }
        Some(LayerNormParams {
            outer: word_usize(w[0])?,
            inner: word_usize(w[1])?,
            epsilon: word_f64(w[2]),
            has_bias: w[3] == 1,
        })
    }
}

/// LayerNormalization (see [`LayerNormParams`]); nothing is written on error.
pub fn layernorm(
    p: &LayerNormParams,
    x: &[f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    threads: usize,
) -> Result<(), i32> {
    let total = prod(&[p.outer, p.inner])?;
    if x.len() < total || y.len() < total || scale.len() < p.inner {
        return Err(STATUS_PARAMS);
    }
    let bias = match (p.has_bias, bias) {
        (true, Some(b)) if b.len() >= p.inner => Some(&b[..p.inner]),
        (true, _) => return Err(STATUS_PARAMS),
        (false, _) => None,
    };
    if total == 0 {
        return Ok(());
    }
    let eps = p.epsilon as f32;
    let scale = &scale[..p.inner];
    for_rows(x, y, p.outer, p.inner, threads, &|_, xr, yr| {
        norm_row(xr, yr, eps, scale, bias, None)
    });
    Ok(())
}

/// C entry point of [`layernorm`]; see [`LayerNormParams`].
///
/// # Safety
/// `params` holds a [`LayerNormParams`] encoding; `bufs` holds the four pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_layernorm(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = LayerNormParams::decode(unsafe { param_words(params, LayerNormParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let n = prod(&[p.outer, p.inner])?;
        // SAFETY: the caller passes the documented buffers with these lengths; y overlaps none.
        let (x, scale, y) = unsafe {
            (
                slice_in::<f32>(buf(bufs, 0)?, n)?,
                slice_in::<f32>(buf(bufs, 1)?, p.inner)?,
                slice_out::<f32>(buf(bufs, 3)?, n)?,
            )
        };
        let bias = if p.has_bias {
            // SAFETY: as above.
            Some(unsafe { slice_in::<f32>(buf(bufs, 2)?, p.inner)? })
        } else {
            None
        };
        layernorm(&p, x, scale, bias, y, threads)
    })
}

/// ONNX InstanceNormalization of an `[n, c, spatial]` f32 tensor: each `(n, c)` row of
/// `spatial` elements is normalized and mapped by `scale[c]`, `bias[c]`.
///
/// Words: `[n, c, spatial, epsilon (f64 bits)]`.
///
/// Bufs: `[x, scale, bias, y]`: `x`, `y` `n·c·spatial` f32 (not overlapping); `scale`, `bias`
/// `c` f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstNormParams {
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Product of the spatial dimensions.
    pub spatial: usize,
    /// Added to the variance.
    pub epsilon: f64,
}

impl InstNormParams {
    /// Number of parameter words.
    pub const WORDS: usize = 4;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.n as i64,
            self.c as i64,
            self.spatial as i64,
            f64_word(self.epsilon),
        ]
    }

    /// Parses words produced by [`InstNormParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<InstNormParams> {
        if w.len() != Self::WORDS {
            return None;
        }
        Some(InstNormParams {
            n: word_usize(w[0])?,
            c: word_usize(w[1])?,
            spatial: word_usize(w[2])?,
            epsilon: word_f64(w[3]),
        })
    }
}

/// InstanceNormalization (see [`InstNormParams`]); nothing is written on error.
pub fn instnorm(
    p: &InstNormParams,
    x: &[f32],
    scale: &[f32],
    bias: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<(), i32> {
    let total = prod(&[p.n, p.c, p.spatial])?;
    if x.len() < total || y.len() < total || scale.len() < p.c || bias.len() < p.c {
        return Err(STATUS_PARAMS);
    }
    if total == 0 {
        return Ok(());
    }
    let eps = p.epsilon as f32;
    let c = p.c;
    for_rows(x, y, p.n * c, p.spatial, threads, &|r, xr, yr| {
        norm_row(xr, yr, eps, &[], None, Some((scale[r % c], bias[r % c])))
    });
    Ok(())
}

/// C entry point of [`instnorm`]; see [`InstNormParams`].
///
/// # Safety
/// `params` holds an [`InstNormParams`] encoding; `bufs` holds the four pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_instnorm(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = InstNormParams::decode(unsafe { param_words(params, InstNormParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let n = prod(&[p.n, p.c, p.spatial])?;
        // SAFETY: the caller passes the documented buffers with these lengths; y overlaps none.
        let (x, scale, bias, y) = unsafe {
            (
                slice_in::<f32>(buf(bufs, 0)?, n)?,
                slice_in::<f32>(buf(bufs, 1)?, p.c)?,
                slice_in::<f32>(buf(bufs, 2)?, p.c)?,
                slice_out::<f32>(buf(bufs, 3)?, n)?,
            )
        };
        instnorm(&p, x, scale, bias, y, threads)
    })
}
