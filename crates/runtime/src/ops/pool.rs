//! MaxPool, AveragePool (2-D, and 1-D as `H = 1`), GlobalMaxPool and GlobalAveragePool on NCHW
//! f32.
//!
//! Windowed pools copy each plane once into a padded buffer (`-inf` or 0 outside the input)
//! whose rows are de-interleaved by column phase (see `conv::PaddedPlane`), so every tap of any
//! stride and dilation reads a contiguous run; output rows are then computed 16 (or 8) columns
//! at a time with the taps reduced in registers (AVX2 when the CPU has it). Average divisors are
//! separable (rows x columns of the window that count) and precomputed. Threads split the
//! `N*C` planes.

#[cfg(target_arch = "x86_64")]
use super::conv::simd;
use super::conv::{
    avx2, c_bufs, c_guard, c_in, c_out, c_params, even_bounds, need_len, prod, run_parts, segments,
    split_bounds, task_count, word_bool, word_usize, KernelError, PaddedPlane, Seg, MAX_DIM,
    MIN_TASK_WORK,
};
use super::STATUS_PARAMS;

/// Tag word that starts an encoded [`PoolParams`] (`"POOL"`, layout version 1).
pub const POOL_TAG: i64 = 0x504f_4f4c_0001;
/// Number of words of an encoded [`PoolParams`].
pub const POOL_WORDS: usize = 19;

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// MaxPool (NaN propagates).
    Max,
    /// AveragePool.
    Average,
    /// GlobalMaxPool: output `[n, c, 1, 1]`; window fields ignored.
    GlobalMax,
    /// GlobalAveragePool: output `[n, c, 1, 1]`; window fields ignored.
    GlobalAverage,
}

/// Parameters of `pare_k_pool`.
///
/// Output pixel `(oy, ox)` of a windowed pool reduces input pixels
/// `(oy*stride_h + ky*dilation_h - pad_top, ox*stride_w + kx*dilation_w - pad_left)` over the
/// `kh x kw` taps that fall inside the input (max: others are ignored; a window with none gives
/// `-inf`). Average divides by the number of those taps, or with `count_include_pad` by the
/// number that fall inside the padded input `[-pad_top, h + pad_bottom) x [-pad_left, w +
/// pad_right)` (ONNX semantics, also under `ceil_mode`). The output extents are given: the
/// caller computes them (including `ceil_mode`).
///
/// **Word layout** (`encode`, [`POOL_WORDS`] words): `[POOL_TAG, kind (0 max, 1 average, 2
/// global max, 3 global average), n, c, h, w, out_h, out_w, kh, kw, stride_h, stride_w, pad_top,
/// pad_left, pad_bottom, pad_right, dilation_h, dilation_w, count_include_pad]`.
///
/// **Buffers** (`bufs`, 2 pointers): `[x, y]`: `x` `[n, c, h, w]`, `y` `[n, c, out_h, out_w]`
/// (`[n, c, 1, 1]` for the global kinds), not overlapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolParams {
    /// Which pooling.
    pub kind: PoolKind,
    /// Batch.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height (1 for 1-D).
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height (1 for the global kinds).
    pub out_h: usize,
    /// Output width (1 for the global kinds).
    pub out_w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Padding above.
    pub pad_top: usize,
    /// Padding left.
    pub pad_left: usize,
    /// Padding below.
    pub pad_bottom: usize,
    /// Padding right.
    pub pad_right: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// AveragePool: count padding taps in the divisor.
    pub count_include_pad: bool,
}

impl PoolParams {
    /// A global pool over `[n, c, h, w]`.
    pub fn global(kind: PoolKind, n: usize, c: usize, h: usize, w: usize) -> Self {
        PoolParams {
            kind,
            n,
            c,
            h,
            w,
            out_h: 1,
            out_w: 1,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            dilation_h: 1,
            dilation_w: 1,
            count_include_pad: false,
        }
    }

    /// The words of this block (see the struct doc).
    pub fn encode(&self) -> Vec<i64> {
        let kind = match self.kind {
            PoolKind::Max => 0,
            PoolKind::Average => 1,
            PoolKind::GlobalMax => 2,
            PoolKind::GlobalAverage => 3,
        };
        let mut v = vec![POOL_TAG, kind];
        v.extend(
            [
                self.n,
                self.c,
                self.h,
                self.w,
                self.out_h,
                self.out_w,
                self.kh,
                self.kw,
                self.stride_h,
                self.stride_w,
                self.pad_top,
                self.pad_left,
                self.pad_bottom,
                self.pad_right,
                self.dilation_h,
                self.dilation_w,
                self.count_include_pad as usize,
            ]
            .iter()
            .map(|&x| x as i64),
        );
        v
    }

    /// Parses and validates words produced by [`PoolParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != POOL_WORDS || words[0] != POOL_TAG {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let p = PoolParams {
            kind: match words[1] {
                0 => PoolKind::Max,
                1 => PoolKind::Average,
                2 => PoolKind::GlobalMax,
                3 => PoolKind::GlobalAverage,
                _ => return None,
            },
            n: u(2)?,
            c: u(3)?,
            h: u(4)?,
            w: u(5)?,
            out_h: u(6)?,
            out_w: u(7)?,
            kh: u(8)?,
            kw: u(9)?,
            stride_h: u(10)?,
            stride_w: u(11)?,
            pad_top: u(12)?,
            pad_left: u(13)?,
            pad_bottom: u(14)?,
            pad_right: u(15)?,
            dilation_h: u(16)?,
            dilation_w: u(17)?,
            count_include_pad: word_bool(words[18])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    fn is_global(&self) -> bool {
        matches!(self.kind, PoolKind::GlobalMax | PoolKind::GlobalAverage)
    }

    /// Checks the parameters and that buffer sizes fit in `usize`.
    pub fn validate(&self) -> Result<(), KernelError> {
        let dims = [
            self.n,
            self.c,
            self.h,
            self.w,
            self.out_h,
            self.out_w,
            self.kh,
            self.kw,
            self.stride_h,
            self.stride_w,
            self.pad_top,
            self.pad_left,
            self.pad_bottom,
            self.pad_right,
            self.dilation_h,
            self.dilation_w,
        ];
        if dims.iter().any(|&d| d > MAX_DIM) {
            return Err(KernelError::params("a pool dimension exceeds i32::MAX"));
        }
        if self.h == 0 || self.w == 0 {
            return Err(KernelError::params("pool over an empty plane"));
        }
        if prod(&[self.n, self.c, self.h, self.w]).is_none() {
            return Err(KernelError::params("pool sizes overflow usize"));
        }
        if self.is_global() {
            return Ok(());
        }
        if dims[4..10].contains(&0) || self.dilation_h == 0 || self.dilation_w == 0 {
            return Err(KernelError::params(
                "pool output, window, strides and dilations must be positive",
            ));
        }
        let rows = (self.out_h - 1) as u128 * self.stride_h as u128
            + (self.kh - 1) as u128 * self.dilation_h as u128
            + 1;
        let cols = (self.out_w - 1) as u128 * self.stride_w as u128
            + (self.kw - 1) as u128 * self.dilation_w as u128
            + 1
            + self.stride_w as u128;
        let big = rows
            .checked_mul(cols)
            .is_none_or(|x| x > (isize::MAX as u128) / 8);
        if big || prod(&[self.n, self.c, self.out_h, self.out_w, 4]).is_none() {
            return Err(KernelError::params("pool sizes overflow usize"));
        }
        Ok(())
    }

    /// Elements of `x`.
    pub fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// Elements of `y`.
    pub fn y_len(&self) -> usize {
        if self.is_global() {
            self.n * self.c
        } else {
            self.n * self.c * self.out_h * self.out_w
        }
    }

    /// Scratch bytes (always 0).
    pub fn scratch_bytes(&self) -> usize {
        0
    }
}

/// Computes the pooling (see [`PoolParams`]).
pub fn pool(p: &PoolParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<(), KernelError> {
    p.validate()?;
    need_len("x", x.len(), p.x_len())?;
    need_len("y", y.len(), p.y_len())?;
    let planes = p.n * p.c;
    let plane_in = p.h * p.w;
    let plane_out = if p.is_global() { 1 } else { p.out_h * p.out_w };
    let y = &mut y[..p.y_len()];
    if planes == 0 {
        return Ok(());
    }
    let work = planes * (plane_in + plane_out * p.kh * p.kw);
    let t = task_count(threads, work, MIN_TASK_WORK / 4).min(planes);
    let pb = even_bounds(planes, t);
    let parts: Vec<(usize, &mut [f32])> =
        split_bounds(y, &pb.iter().map(|&b| b * plane_out).collect::<Vec<_>>())
            .into_iter()
            .enumerate()
            .map(|(i, s)| (pb[i], s))
            .collect();
    if p.is_global() {
        let max = p.kind == PoolKind::GlobalMax;
        run_parts(parts, &|_, (p0, ys): (usize, &mut [f32])| {
            for (i, out) in ys.iter_mut().enumerate() {
                let plane = &x[(p0 + i) * plane_in..(p0 + i + 1) * plane_in];
                *out = if max {
                    reduce_max(plane)
                } else {
                    reduce_sum(plane) / plane_in as f32
                };
            }
        });
        return Ok(());
    }
    let max = p.kind == PoolKind::Max;
    let pp = PaddedPlane::new(
        (p.out_h - 1) * p.stride_h + (p.kh - 1) * p.dilation_h + 1,
        (p.out_w - 1) * p.stride_w + (p.kw - 1) * p.dilation_w + 1,
        p.stride_w,
        p.pad_top,
        p.pad_left,
    );
    let taps: Vec<usize> = (0..p.kh)
        .flat_map(|ky| (0..p.kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| pp.tap(ky * p.dilation_h, kx * p.dilation_w))
        .collect();
    // Separable average divisors.
    let counts = |o: usize, s: usize, k: usize, d: usize, pad: usize, x: usize, pad_end: usize| {
        let (lo, hi) = if p.count_include_pad {
            (-(pad as isize), (x + pad_end) as isize)
        } else {
            (0, x as isize)
        };
        (0..k)
            .filter(|&t| {
                let i = (o * s + t * d) as isize - pad as isize;
                i >= lo && i < hi
            })
            .count() as f32
    };
    let inv_y: Vec<f32> = (0..p.out_h)
        .map(|oy| {
            1.0 / counts(
                oy,
                p.stride_h,
                p.kh,
                p.dilation_h,
                p.pad_top,
                p.h,
                p.pad_bottom,
            )
        })
        .collect();
    let mut inv_x: Vec<f32> = (0..p.out_w)
        .map(|ox| {
            1.0 / counts(
                ox,
                p.stride_w,
                p.kw,
                p.dilation_w,
                p.pad_left,
                p.w,
                p.pad_right,
            )
        })
        .collect();
    inv_x.resize(p.out_w + 16, 0.0);
    run_parts(parts, &|_, (p0, ys): (usize, &mut [f32])| {
        let mut pad = vec![0.0f32; pp.len()];
        pp.init(if max { f32::NEG_INFINITY } else { 0.0 }, &mut pad);
        let segs = segments(p.out_h, p.out_w, p.stride_h * pp.row_stride);
        for (i, yp) in ys.chunks_exact_mut(plane_out).enumerate() {
            let plane = p0 + i;
            let xp = &x[plane * plane_in..(plane + 1) * plane_in];
            pp.copy_in(xp, p.h, p.w, &mut pad);
            let job = PoolPlane {
                pad: &pad,
                row_step: p.stride_h * pp.row_stride,
                taps: &taps,
                oh: p.out_h,
                ow: p.out_w,
                inv_y: &inv_y,
                inv_x: &inv_x,
            };
            job.run(max, &segs, yp);
        }
    });
    Ok(())
}

/// NaN-propagating maximum (the vectorizable form: compare, select, select).
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    let m = if b > a { b } else { a };
    if b.is_nan() {
        b
    } else {
        m
    }
}

fn reduce_max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { reduce_max_avx2(xs) };
    }
    reduce_max_impl(xs)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_max_avx2(xs: &[f32]) -> f32 {
    reduce_max_impl(xs)
}

#[inline(always)]
fn reduce_max_impl(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] = max_nan(acc[l], c[l]);
        }
    }
    let mut m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| max_nan(a, b));
    for a in acc {
        m = max_nan(m, a);
    }
    m
}

fn reduce_sum(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { reduce_sum_avx2(xs) };
    }
    reduce_sum_impl(xs)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_sum_avx2(xs: &[f32]) -> f32 {
    reduce_sum_impl(xs)
}

#[inline(always)]
fn reduce_sum_impl(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// One output plane of a windowed pool over a padded plane.
struct PoolPlane<'a> {
    pad: &'a [f32],
    row_step: usize,
    taps: &'a [usize],
    oh: usize,
    ow: usize,
    inv_y: &'a [f32],
    /// `ow + 16` entries (the tail is padding for partial blocks).
    inv_x: &'a [f32],
}

impl PoolPlane<'_> {
    fn run(&self, max: bool, segs: &[Seg], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe {
                simd::pool_plane(self.pad, segs, self.taps, max, self.inv_y, self.inv_x, y);
            }
            return;
        }
        self.run_any(max, y);
    }

    #[inline(always)]
    fn run_any(&self, max: bool, y: &mut [f32]) {
        match (max, self.ow > 8) {
            (true, true) => self.rows::<true, 16>(y),
            (true, false) => self.rows::<true, 8>(y),
            (false, true) => self.rows::<false, 16>(y),
            (false, false) => self.rows::<false, 8>(y),
        }
    }

    #[inline(always)]
    fn rows<const MAX: bool, const B: usize>(&self, y: &mut [f32]) {
        let ow = self.ow;
        for oy in 0..self.oh {
            let base = oy * self.row_step;
            let yrow = &mut y[oy * ow..(oy + 1) * ow];
            let mut ox = 0;
            while ox < ow {
                let len = B.min(ow - ox);
                let mut acc = [if MAX { f32::NEG_INFINITY } else { 0.0 }; B];
                for &off in self.taps {
                    let src: &[f32; B] = self.pad[base + off + ox..base + off + ox + B]
                        .try_into()
                        .expect("block of B floats");
                    for l in 0..B {
                        acc[l] = if MAX {
                            max_nan(acc[l], src[l])
                        } else {
                            acc[l] + src[l]
                        };
                    }
                }
                if !MAX {
                    let iy = self.inv_y[oy];
                    let ix: &[f32; B] = self.inv_x[ox..ox + B].try_into().expect("B floats");
                    for l in 0..B {
                        acc[l] *= iy * ix[l];
                    }
                }
                yrow[ox..ox + len].copy_from_slice(&acc[..len]);
                ox += len;
            }
        }
    }
}

/// Pooling kernel (see [`PoolParams`] for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`PoolParams`] (or at least one word that is not its tag);
/// `bufs` to 2 pointers satisfying the buffer contract of [`PoolParams`].
#[no_mangle]
pub unsafe extern "C" fn pare_k_pool(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, POOL_TAG, POOL_WORDS) }?;
        let p = PoolParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs`.
        let b = unsafe { c_bufs(bufs, 2) }?;
        // SAFETY: the buffer contract: `x` readable and not written, `y` writable and
        // unaliased, each as long as its shape implies.
        let x = unsafe { c_in(b[0], p.x_len()) }?;
        // SAFETY: as above.
        let y = unsafe { c_out(b[1], p.y_len()) }?;
        pool(&p, x, y, threads).map_err(|e| e.status)
    })
}
