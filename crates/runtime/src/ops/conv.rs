//! Convolution (ONNX `Conv`) and transposed convolution (`ConvTranspose`), f32, NCHW, 1-D (as
//! `H = 1`) and 2-D, on top of the packed SGEMM.
//!
//! # Algorithms (chosen per shape by [`ConvParams::algorithm`])
//!
//! * **Pointwise** (1x1 kernel, stride 1, no padding): `Y_g = W_g · X_g` straight on the input,
//!   `W_g` (`C_out/g x C_in/g`) as A and the image's channels (`C_in/g x H*W`, row stride
//!   `H*W`) as B. No copy of the input beyond the GEMM's own B packing; the GEMM splits the
//!   threads itself.
//! * **Depthwise** (`group == C_in`, any channel multiplier `C_out / C_in`): a direct kernel per
//!   output plane. The input plane is copied once into a zero-padded buffer whose rows are
//!   de-interleaved by column phase (`x mod stride_w`), so every tap of every stride reads a
//!   contiguous run (AVX2 copy for column strides 1 and 2). With AVX2/FMA the output is computed
//!   in register blocks of 8 or 7 rows by 8 columns, or 4 rows by 16 (whichever wastes fewest
//!   lanes on the rounded-up plane; 7 and 14 fit 7-row blocks), all taps accumulated in
//!   registers, the residual and the common activations (ReLU, clip, hard-swish) applied in
//!   the store, other activations in a pass over the rows just stored. 3x3 and 5x5 kernels
//!   with vertical stride 1 or 2 (and vertical dilation 1) have a specialized kernel that walks
//!   each block kernel column by column, loading every input row once per column and feeding
//!   each output row of the block it belongs to (up to `kh` FMAs per load, the column's
//!   weights in registers); other shapes (dilated rows, other sizes, 1-D) load once per tap
//!   and FMA. Without AVX2, each output row is computed 16 (or 8) columns at a time. Threads
//!   split the planes.
//! * **Im2col** (everything else: dilated, grouped, 1-D, strides above 2, many channels on
//!   both sides): for each image, the output columns (`OH*OW` positions) are
//!   processed in chunks. A chunk's im2col matrix is written **directly in the packed-B layout**
//!   of the GEMM ([`crate::PackedB`]: 16-column panels, k-major) into the scratch buffer, so the
//!   GEMM (`W_g` as A, the chunk as pre-packed B, bias per row, residual, activation fused in the
//!   epilogue) needs no further copy and writes NCHW output in place. The chunk width keeps the
//!   chunk near 1 MiB (L2-sized). Threads first split the chunk's panels (im2col), then the
//!   output rows (channels) among themselves, each running a single-threaded GEMM on its rows;
//!   row blocks are multiples of the 6-row micro-tile when there are enough rows, or even
//!   splits otherwise (16 rows on 2 threads: 8 + 8, not 12 + 4).
//!
//! * **Direct** (one group, a 2-D kernel of more than one tap, no dilation, strides up to 2,
//!   and at most 64 output channels or at most 4 input channels; chosen after Rows and
//!   Pointwise): an implicit GEMM with no im2col matrix. Per image, every input channel is
//!   copied once into a zero-padded [`PaddedPlane`] (columns de-interleaved by phase for
//!   stride 2), so for tap `k = (ci, ky, kx)` the consecutive output columns of one output row
//!   read a contiguous run at a fixed per-tap offset. The AVX2 kernel computes register tiles
//!   of 6 output channels (4 for a last block of at most 4) by 16 output columns (a tail of at
//!   most 8 columns: 8), the K loop doing two unaligned loads of the padded planes and one
//!   broadcast weight per channel, as the GEMM's 6x16 micro-kernel does with its packed
//!   panels; bias, residual (separate or in place) and activation are applied in the store,
//!   tails masked. Tiles follow output rows (widths like 24 or 12 waste no lanes on a 16-column
//!   panel grid), each output row runs every channel block before the next, so the padded rows
//!   it reads stay in L1 and the weights (pre-packed at compile time by
//!   [`conv_prepare_weights`] in blocks of 6 channels, k-major) in L2. Threads split the output
//!   rows. It is chosen where writing Im2col's expanded B costs a large share of the product
//!   (few output channels reuse each B element little; a 3-channel stem's K of 27 makes the
//!   fill dominate); up to 64 output channels it measured at least as fast as Im2col on every
//!   shape tried (`examples/conv_bench.rs`), beyond that Im2col stays (its GEMM blocks K).
//! * **Rows** (small outputs, where the 16-column panels of Im2col would be mostly padding:
//!   an STFT frame of 4 positions, the 1x1 tail of a 1-D encoder): the roles swap.
//!   `Yᵀ = im2col(X)ᵀ · W_gᵀ`, one row per output position of *every* image, so the batch
//!   fills the GEMM's 6-row micro-tiles; `W_gᵀ` is the GEMM's B **packed at compile time**
//!   ([`conv_prepare_weights`]); bias and activation are fused in the epilogue, and the
//!   `[positions, channels]` result is scattered into NCHW (adding a residual there, then the
//!   activation). Chosen when its micro-tiles are at least 1.5x better filled.
//!
//! ConvTranspose is `col = W_gᵀ · X_g` (GEMM, A read transposed) per chunk of input positions,
//! then a col2im scatter-add into the output (pre-filled with the bias), then the activation.
//!
//! Pointwise, Depthwise and Im2col use the weights in their ONNX layout (the GEMM packs the
//! small A operand itself, at a cost of `1 / (2 * chunk width)` of the arithmetic); Rows and
//! Direct use them pre-packed. The backend always calls [`conv_prepare_weights`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use super::{STATUS_INTERNAL, STATUS_NULL, STATUS_OK, STATUS_PARAMS};
use crate::ffi::{
    PARE_ACT_CLAMP, PARE_ACT_GELU, PARE_ACT_GELU_TANH, PARE_ACT_HARD_SIGMOID, PARE_ACT_HARD_SWISH,
    PARE_ACT_IDENTITY, PARE_ACT_LEAKY_RELU, PARE_ACT_RELU, PARE_ACT_SIGMOID, PARE_ACT_TANH,
};
use crate::gemm::{MR, NR};
use crate::{Activation, BOperand, Bias, Epilogue, Gemm, Isa, PackedB, PackedBRef, Residual};

// ---------------------------------------------------------------------------------------------
// Shared helpers (also used by `ops::matmul` and `ops::pool`).
// ---------------------------------------------------------------------------------------------

/// Why a kernel's safe entry point rejected a call. Nothing is written on error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The status the C entry point returns for it ([`super::STATUS_PARAMS`], ...).
    pub status: i32,
    /// What was wrong.
    pub message: String,
}

impl KernelError {
    pub(crate) fn params(message: impl Into<String>) -> KernelError {
        KernelError {
            status: STATUS_PARAMS,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> KernelError {
        KernelError {
            status: STATUS_INTERNAL,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (status {})", self.message, self.status)
    }
}

impl std::error::Error for KernelError {}

/// Largest value any size field may hold, so that sums and signed index arithmetic of a few
/// fields cannot overflow.
pub(crate) const MAX_DIM: usize = i32::MAX as usize;

/// Decodes a size word: `0..=MAX_DIM`.
pub(crate) fn word_usize(w: i64) -> Option<usize> {
    usize::try_from(w).ok().filter(|&v| v <= MAX_DIM)
}

/// Decodes a flag word: 0 or 1.
pub(crate) fn word_bool(w: i64) -> Option<bool> {
    match w {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Number of words an activation takes: `[kind, p0, p1]`, kind a `PARE_ACT_*` code, the
/// parameters as `f64` bits (clamp min/max, leaky-relu slope in p0; 0 otherwise).
pub(crate) const ACT_WORDS: usize = 3;

pub(crate) fn encode_activation(a: &Activation, out: &mut Vec<i64>) {
    let (kind, p0, p1) = match *a {
        Activation::Identity => (PARE_ACT_IDENTITY, 0.0, 0.0),
        Activation::Relu => (PARE_ACT_RELU, 0.0, 0.0),
        Activation::Clamp { min, max } => (PARE_ACT_CLAMP, min, max),
        Activation::LeakyRelu { alpha } => (PARE_ACT_LEAKY_RELU, alpha, 0.0),
        Activation::Sigmoid => (PARE_ACT_SIGMOID, 0.0, 0.0),
        Activation::Tanh => (PARE_ACT_TANH, 0.0, 0.0),
        Activation::Gelu => (PARE_ACT_GELU, 0.0, 0.0),
        Activation::GeluTanh => (PARE_ACT_GELU_TANH, 0.0, 0.0),
        Activation::HardSigmoid { alpha, beta } => (PARE_ACT_HARD_SIGMOID, alpha, beta),
        Activation::HardSwish => (PARE_ACT_HARD_SWISH, 0.0, 0.0),
    };
    out.push(kind as i64);
    out.push(super::f64_word(p0 as f64));
    out.push(super::f64_word(p1 as f64));
}

/// Decodes and validates an activation (clamp `min <= max`, no NaN parameters).
pub(crate) fn decode_activation(w: &[i64]) -> Option<Activation> {
    let p0 = super::word_f64(w[1]) as f32;
    let p1 = super::word_f64(w[2]) as f32;
    let a = match i32::try_from(w[0]).ok()? {
        PARE_ACT_IDENTITY => Activation::Identity,
        PARE_ACT_RELU => Activation::Relu,
        PARE_ACT_CLAMP => Activation::Clamp { min: p0, max: p1 },
        PARE_ACT_LEAKY_RELU => Activation::LeakyRelu { alpha: p0 },
        PARE_ACT_SIGMOID => Activation::Sigmoid,
        PARE_ACT_TANH => Activation::Tanh,
        PARE_ACT_GELU => Activation::Gelu,
        PARE_ACT_GELU_TANH => Activation::GeluTanh,
        PARE_ACT_HARD_SIGMOID => Activation::HardSigmoid {
            alpha: p0,
            beta: p1,
        },
        PARE_ACT_HARD_SWISH => Activation::HardSwish,
        _ => return None,
    };
    a.validate().ok()?;
    Some(a)
}

/// Checked product of sizes.
pub(crate) fn prod(xs: &[usize]) -> Option<usize> {
    xs.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// Whether the AVX2 + FMA kernels may run.
#[inline]
pub(crate) fn avx2() -> bool {
    #[cfg(test)]
    if FORCE_GENERIC.with(|f| f.get()) {
        return false;
    }
    Isa::detect() == Isa::Avx2Fma
}

#[cfg(test)]
thread_local! {
    /// Unit tests set this to run the portable plane kernels on this thread.
    pub(crate) static FORCE_GENERIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `a * b + c`, fused when the caller is compiled with FMA.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Below this much work (flops, or elements for memory-bound kernels) a task is not worth a
/// pool wake-up.
pub(crate) const MIN_TASK_WORK: usize = 1 << 20;

/// How many tasks to split `work` into, at most `threads`.
pub(crate) fn task_count(threads: usize, work: usize, min_work: usize) -> usize {
    threads.max(1).min((work / min_work.max(1)).max(1))
}

/// Runs `f(i, parts[i])` for every part, in parallel on the pool (part 0 on this thread).
pub(crate) fn run_parts<T: Send>(parts: Vec<T>, f: &(dyn Fn(usize, T) + Sync)) {
    if parts.len() <= 1 {
        if let Some(p) = parts.into_iter().next() {
            f(0, p);
        }
        return;
    }
    let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    crate::pool::run(slots.len(), &|i| {
        let part = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(part) = part {
            f(i, part);
        }
    });
}

/// Splits `s` into consecutive pieces `[b[0], b[1])`, `[b[1], b[2])`, ... (`b` non-decreasing,
/// `b[0] == 0`, last `<= s.len()`).
pub(crate) fn split_bounds<'a, T>(mut s: &'a mut [T], b: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(b.len().saturating_sub(1));
    let mut at = b.first().copied().unwrap_or(0);
    for &e in &b[1..] {
        let (head, tail) = std::mem::take(&mut s).split_at_mut(e - at);
        out.push(head);
        s = tail;
        at = e;
    }
    out
}

/// `t + 1` bounds splitting `0..len` evenly into `t` parts.
pub(crate) fn even_bounds(len: usize, t: usize) -> Vec<usize> {
    (0..=t).map(|i| len * i / t).collect()
}

/// Records the first error of a parallel section.
pub(crate) struct FirstError(Mutex<Option<KernelError>>);

impl FirstError {
    pub(crate) fn new() -> Self {
        FirstError(Mutex::new(None))
    }

    pub(crate) fn set(&self, e: KernelError) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }

    pub(crate) fn gemm(&self, r: Result<(), crate::GemmError>) {
        if let Err(e) = r {
            self.set(KernelError::internal(format!("GEMM rejected a call: {e}")));
        }
    }

    pub(crate) fn into_result(self) -> Result<(), KernelError> {
        match self.0.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Views a scratch byte buffer as floats (at least `floats` of them).
pub(crate) fn scratch_f32(scratch: &mut [u8], floats: usize) -> Result<&mut [f32], KernelError> {
    // SAFETY: every bit pattern is a valid f32, and `align_to_mut` only yields the correctly
    // aligned middle part.
    let (_, mid, _) = unsafe { scratch.align_to_mut::<f32>() };
    if mid.len() < floats {
        return Err(KernelError::params(format!(
            "scratch holds {} aligned floats, the kernel needs {floats}",
            mid.len()
        )));
    }
    Ok(&mut mid[..floats])
}

/// Checks a slice holds at least `need` elements.
pub(crate) fn need_len(what: &str, len: usize, need: usize) -> Result<(), KernelError> {
    if len < need {
        Err(KernelError::params(format!(
            "{what} has {len} elements, the shape needs {need}"
        )))
    } else {
        Ok(())
    }
}

/// Where a residual comes from.
#[derive(Clone, Copy)]
pub(crate) enum Res<'a> {
    None,
    /// A separate buffer shaped like the output.
    Separate(&'a [f32]),
    /// The output buffer already holds it (C entry point called with `residual == y`).
    InPlace,
}

/// Buffer lengths of a GEMM-like C entry point whose `bufs` are
/// `[a, b, bias, residual, c, scratch]` (`pare_k_qmatmul`, `pare_k_spmm`).
pub(crate) struct GemmLens {
    /// f32 elements of `a`.
    pub a: usize,
    /// 32-bit elements of the packed `b`.
    pub b: usize,
    /// f32 elements of the bias, when there is one.
    pub bias: Option<usize>,
    /// Whether a residual shaped like `c` is read.
    pub residual: bool,
    /// f32 elements of `c`.
    pub c: usize,
    /// Scratch bytes.
    pub scratch: usize,
}

impl GemmLens {
    /// Checks slices against these lengths: the bias and residual are present exactly when
    /// declared, and every operand but the packed weight (checked by its own reader) is long
    /// enough.
    pub(crate) fn check(
        &self,
        a: &[f32],
        bias: Option<&[f32]>,
        res: &Res<'_>,
        c: &[f32],
        scratch: &[u8],
    ) -> Result<(), KernelError> {
        if bias.is_some() != self.bias.is_some() {
            return Err(KernelError::params("bias presence does not match has_bias"));
        }
        if matches!(res, Res::None) == self.residual {
            return Err(KernelError::params(
                "residual presence does not match has_residual",
            ));
        }
        need_len("a", a.len(), self.a)?;
        need_len("c", c.len(), self.c)?;
        need_len("scratch", scratch.len(), self.scratch)?;
        if let (Some(v), Some(n)) = (bias, self.bias) {
            need_len("bias", v.len(), n)?;
        }
        if let Res::Separate(r) = res {
            need_len("residual", r.len(), self.c)?;
        }
        Ok(())
    }
}

/// The operands [`gemm_bufs`] returns.
pub(crate) struct GemmBufs<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub res: Res<'a>,
    pub c: &'a mut [f32],
    pub scratch: &'a mut [u8],
}

/// Reads the 6 buffer pointers of a GEMM-like entry point; a residual pointer equal to `c` is
/// an in-place residual (no separate slice is made for it).
///
/// # Safety
/// `bufs` points to 6 pointers, each valid for the length `lens` gives it (null allowed for an
/// absent bias or residual); inputs are not written during the call, and `c` and the scratch
/// alias nothing else (except the in-place residual).
pub(crate) unsafe fn gemm_bufs<'a>(
    bufs: *const *mut u8,
    lens: &GemmLens,
) -> Result<GemmBufs<'a>, i32> {
    // SAFETY: the caller's contract on `bufs` (6 pointers).
    let bp = unsafe { c_bufs(bufs, 6) }?;
    // SAFETY (all slices below): the caller's contract gives each pointer its length; inputs
    // are not written and `c` and the scratch are not aliased, except an in-place residual,
    // which is then not made into a separate slice.
    let a = unsafe { c_in(bp[0], lens.a) }?;
    let b = unsafe { c_in(bp[1], lens.b) }?;
    let bias = match lens.bias {
        // SAFETY: as above.
        Some(n) => Some(unsafe { c_in(bp[2], n) }?),
        None => None,
    };
    let res = if !lens.residual {
        Res::None
    } else if bp[3] == bp[4] {
        Res::InPlace
    } else {
        // SAFETY: as above.
        Res::Separate(unsafe { c_in(bp[3], lens.c) }?)
    };
    // SAFETY: as above.
    let c = unsafe { c_out(bp[4], lens.c) }?;
    // SAFETY: as above.
    let scratch = unsafe { c_scratch(bp[5], lens.scratch) }?;
    Ok(GemmBufs {
        a,
        b,
        bias,
        res,
        c,
        scratch,
    })
}

/// The slice a C pointer describes, for the entry points.
///
/// # Safety
/// `p` is null or points to `len` readable floats, not written while the slice lives.
pub(crate) unsafe fn c_in<'a>(p: *mut u8, len: usize) -> Result<&'a [f32], i32> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(STATUS_NULL);
    }
    if !p.cast::<f32>().is_aligned() {
        return Err(STATUS_PARAMS);
    }
    // SAFETY: non-null, aligned, `len` readable floats by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p as *const f32, len) })
}

/// The mutable slice a C pointer describes.
///
/// # Safety
/// `p` is null or points to `len` writable floats that nothing else accesses while the slice
/// lives.
pub(crate) unsafe fn c_out<'a>(p: *mut u8, len: usize) -> Result<&'a mut [f32], i32> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(STATUS_NULL);
    }
    if !p.cast::<f32>().is_aligned() {
        return Err(STATUS_PARAMS);
    }
    // SAFETY: non-null, aligned, `len` writable and unaliased floats by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p as *mut f32, len) })
}

/// The mutable byte slice of a scratch pointer.
///
/// # Safety
/// As [`c_out`], for `len` bytes.
pub(crate) unsafe fn c_scratch<'a>(p: *mut u8, len: usize) -> Result<&'a mut [u8], i32> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(STATUS_NULL);
    }
    // SAFETY: non-null, `len` writable and unaliased bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Reads the parameter words of a C entry point: `words` of them, after checking the first is
/// `tag` (so a foreign block is rejected before reading past its end).
///
/// # Safety
/// `params` is null or points to at least one readable word, and to `words` readable words if
/// the first equals `tag`.
pub(crate) unsafe fn c_params<'a>(
    params: *const i64,
    tag: i64,
    words: usize,
) -> Result<&'a [i64], i32> {
    if params.is_null() {
        return Err(STATUS_NULL);
    }
    // SAFETY: at least one readable word by the caller's contract.
    if unsafe { *params } != tag {
        return Err(STATUS_PARAMS);
    }
    // SAFETY: the tag matched, so `words` are readable by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(params, words) })
}

/// Reads `count` buffer pointers.
///
/// # Safety
/// `bufs` is null or points to `count` readable pointers.
pub(crate) unsafe fn c_bufs(bufs: *const *mut u8, count: usize) -> Result<Vec<*mut u8>, i32> {
    if bufs.is_null() {
        return Err(STATUS_NULL);
    }
    // SAFETY: `count` readable pointers by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(bufs, count) }.to_vec())
}

/// Runs a C entry point's body, mapping errors and panics to status codes.
pub(crate) fn c_guard(f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(s)) => s,
        Err(_) => STATUS_INTERNAL,
    }
}

/// A plane copied into a zero- (or `fill`-) padded buffer with each row de-interleaved by column
/// phase: padded column `c` of padded row `r` at `r*row_stride + (c % s)*phase_len + c / s`.
/// Then output column `o` of tap offset `t` (padded column `o*s + t`) is at
/// `(t % s)*phase_len + t/s + o`: contiguous in `o`, for any stride.
pub(crate) struct PaddedPlane {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
    pub phase_len: usize,
    pub row_stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// Slack floats after a padded plane: partial output blocks read up to 16 lanes past the last
/// used column.
pub(crate) const PLANE_SLACK: usize = 16;

impl PaddedPlane {
    /// `rows x cols` padded extent needed by the windows; `stride` the column stride.
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        stride: usize,
        pad_top: usize,
        pad_left: usize,
    ) -> Self {
        let phase_len = cols.div_ceil(stride);
        PaddedPlane {
            rows,
            cols,
            stride,
            phase_len,
            row_stride: phase_len * stride,
            pad_top,
            pad_left,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows * self.row_stride + PLANE_SLACK
    }

    /// Offset of padded column `t` of padded row `r` (then `+ o` for output column `o`).
    #[inline]
    pub(crate) fn tap(&self, r: usize, t: usize) -> usize {
        r * self.row_stride + (t % self.stride) * self.phase_len + t / self.stride
    }

    /// Sets the whole buffer (padding included) to `fill`. The padding never changes between
    /// planes of one shape, so this is done once per buffer and [`PaddedPlane::copy_in`] then
    /// only writes the input's own positions.
    pub(crate) fn init(&self, fill: f32, dst: &mut [f32]) {
        dst[..self.len()].fill(fill);
    }

    /// Copies the `h x w` plane `x` into its positions of a buffer set up by `init`.
    pub(crate) fn copy_in(&self, x: &[f32], h: usize, w: usize, dst: &mut [f32]) {
        let s = self.stride;
        // Padded columns [pl, pl + w) hold the input, clipped to [0, cols).
        let c0 = self.pad_left.min(self.cols);
        let c1 = (self.pad_left + w).min(self.cols);
        if c0 >= c1 {
            return;
        }
        let r0 = self.pad_top.min(self.rows);
        let r1 = (self.pad_top + h).min(self.rows);
        for r in r0..r1 {
            let src = &x[(r - self.pad_top) * w..(r - self.pad_top + 1) * w];
            let row = &mut dst[r * self.row_stride..(r + 1) * self.row_stride];
            if s == 1 {
                row[c0..c1].copy_from_slice(&src[c0 - self.pad_left..c1 - self.pad_left]);
                continue;
            }
            if s == 2 {
                // Read the row once, in pairs: padded columns c and c+1 go to the two phases,
                // at slots c/2 and (c+1)/2 (an interleaved access LLVM vectorizes).
                let src = &src[c0 - self.pad_left..c1 - self.pad_left];
                let slot = |c: usize| (c % 2) * self.phase_len + c / 2;
                let (a, b) = (slot(c0), slot(c0 + 1));
                let pairs = src.len() / 2;
                let (ra, rb) = if a < b {
                    let (lo, hi) = row.split_at_mut(b);
                    (&mut lo[a..a + pairs], &mut hi[..pairs])
                } else {
                    let (lo, hi) = row.split_at_mut(a);
                    (&mut hi[..pairs], &mut lo[b..b + pairs])
                };
                for ((pair, da), db) in src.chunks_exact(2).zip(ra.iter_mut()).zip(rb.iter_mut()) {
                    *da = pair[0];
                    *db = pair[1];
                }
                if src.len() % 2 == 1 {
                    let c = c1 - 1;
                    row[slot(c)] = src[src.len() - 1];
                }
                continue;
            }
            // Phase ph holds padded columns ph, ph + s, ...: slots i with c0 <= i*s + ph < c1.
            for ph in 0..s {
                let i0 = c0.saturating_sub(ph).div_ceil(s);
                let i1 = (c1 + s - 1 - ph) / s; // first i with i*s + ph >= c1
                if i0 >= i1 {
                    continue;
                }
                let first = i0 * s + ph - self.pad_left;
                let d = &mut row[ph * self.phase_len + i0..ph * self.phase_len + i1];
                for (v, &e) in d.iter_mut().zip(src[first..].iter().step_by(s)) {
                    *v = e;
                }
            }
        }
    }
}

/// Up to 8 consecutive output columns of one output row of a plane kernel (pool):
/// input block at `pad[src + tap offset ..][..8]`, output at `y[dst..dst + len]`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seg {
    pub src: usize,
    pub dst: usize,
    pub len: usize,
    pub oy: usize,
    pub ox: usize,
}

/// The 8-column segments of an `oh x ow` output whose rows are `row_step` apart in the padded
/// plane, padded with empty segments to a multiple of 8 (so kernels always run 8 independent
/// accumulators).
pub(crate) fn segments(oh: usize, ow: usize, row_step: usize) -> Vec<Seg> {
    let mut v = Vec::with_capacity(oh * ow.div_ceil(8) + 8);
    for oy in 0..oh {
        let mut ox = 0;
        while ox < ow {
            let len = 8.min(ow - ox);
            v.push(Seg {
                src: oy * row_step + ox,
                dst: oy * ow + ox,
                len,
                oy,
                ox,
            });
            ox += len;
        }
    }
    while !v.len().is_multiple_of(8) {
        v.push(Seg::default());
    }
    v
}

/// Residual source of a plane kernel.
#[derive(Clone, Copy)]
pub(crate) enum SegRes<'a> {
    None,
    Separate(&'a [f32]),
    InPlace,
}

/// AVX2 + FMA plane kernels. Pooling: 8 segments (64 outputs) at a time, one accumulator each,
/// every tap an unaligned load and a max / add. Depthwise: register blocks of output rows by
/// 8-column vectors ([`simd::dw_grid`], [`simd::dw_plane`]), plus the padded copy
/// ([`simd::copy_in`]).
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    use std::arch::x86_64::*;

    use super::{Direct, PaddedPlane, Seg, SegRes, SharedOut, DIRECT_MR, MASKS};
    use crate::gemm::epilogue::avx2::{act, act_slice};
    use crate::Activation;

    /// Checks every access the kernels make: loads of 8 floats at `seg.src + off` (`off <=
    /// max_off`) from `pad`, and `dst..dst+len` of `y` (and of a separate residual).
    fn check(pad: &[f32], segs: &[Seg], max_off: usize, y_len: usize, res: SegRes<'_>) {
        assert!(segs.len().is_multiple_of(8));
        for s in segs {
            assert!(s.len <= 8 && s.src + max_off + 8 <= pad.len() && s.dst + s.len <= y_len);
        }
        if let SegRes::Separate(r) = res {
            assert!(r.len() >= y_len);
        }
    }

    /// Adds the residual (if any) to `a`, applies the activation and stores segment `s`
    /// (masked when it is shorter than 8).
    ///
    /// # Safety
    /// AVX2; `s.dst + s.len <= y.len()` and a separate residual is at least as long as `y`.
    #[inline(always)]
    unsafe fn finish(
        mut a: __m256,
        s: Seg,
        res: SegRes<'_>,
        activation: Activation,
        y: &mut [f32],
    ) {
        if s.len == 0 {
            return;
        }
        // SAFETY: AVX2 by contract; lanes < s.len of y[s.dst..] (and of the residual) are in
        // bounds by contract, and masked loads/stores touch only those (the mask has s.len <= 8
        // leading ones; MASKS[16 - len..24 - len] is in bounds).
        unsafe {
            let m = _mm256_loadu_si256(MASKS.as_ptr().add(16 - s.len) as *const __m256i);
            let full = s.len == 8;
            let load = |p: *const f32| {
                if full {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, m)
                }
            };
            match res {
                SegRes::Separate(r) => a = _mm256_add_ps(a, load(r.as_ptr().add(s.dst))),
                SegRes::InPlace => a = _mm256_add_ps(a, load(y.as_ptr().add(s.dst))),
                SegRes::None => {}
            }
            a = act(a, activation);
            let out = y.as_mut_ptr().add(s.dst);
            if full {
                _mm256_storeu_ps(out, a);
            } else {
                _mm256_maskstore_ps(out, m, a);
            }
        }
    }

    /// Depthwise plane, register-blocked: `R` output rows by `C` vectors of 8 columns at a
    /// time, `y[oy, ox] = act(bias + sum_t w_t * pad[oy*row_step + off_t + ox] + residual)`.
    /// Every tap is a broadcast weight and `R*C` unaligned loads + FMAs (any taps: dilations,
    /// other kernel sizes and strides; [`dw_grid`] is the faster special case). Rows and columns
    /// are computed in whole blocks (`oh` rounded up to `R`, `ow` to `8*C`), so `pad` must hold
    /// every load of the rounded extent (asserted); only the `oh x ow` outputs are stored
    /// ([`store_block`]: residual added, activation applied if [`fused_act`]; other activations
    /// run over the stored rows, contiguous in `y` and still in L1, every 2048 floats or so).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dw_plane<const R: usize, const C: usize>(
        pad: &[f32],
        row_step: usize,
        oh: usize,
        ow: usize,
        offs: &[usize],
        wts: &[f32],
        bias: f32,
        res: SegRes<'_>,
        activation: Activation,
        y: &mut [f32],
    ) {
        assert!(offs.len() == wts.len());
        if oh == 0 || ow == 0 || offs.is_empty() {
            return;
        }
        let max_off = offs.iter().copied().max().unwrap_or(0);
        let yp = y.as_mut_ptr();
        // SAFETY: AVX2 by contract.
        let (rp, tail, post) = unsafe {
            dw_check::<R, C>(pad, row_step, oh, ow, max_off, res, yp, y.len(), activation)
        };
        let p = pad.as_ptr();
        let mut acted = 0;
        for oy0 in (0..oh).step_by(R) {
            let rows = R.min(oh - oy0);
            for x0 in (0..ow).step_by(8 * C) {
                let base = oy0 * row_step + x0;
                // SAFETY: AVX2/FMA by contract. Every load from `pad` is of 8 floats at `base +
                // off + r*row_step + 8*c` with `oy0 + r < oh` rounded up to R, `x0 + 8*c + 8 <=
                // ow` rounded up to 8*C and `off <= max_off`, so it ends by `need <= pad.len()`.
                // Stores (and residual loads, `rp` being as long as `y` or `y` itself) follow
                // `store_block`'s contract, which `dw_check` checked.
                unsafe {
                    let mut acc = [[_mm256_set1_ps(bias); C]; R];
                    for (&off, &wv) in offs.iter().zip(wts) {
                        let w = _mm256_set1_ps(wv);
                        let q = p.add(base + off);
                        for (r, a) in acc.iter_mut().enumerate() {
                            let qr = q.add(r * row_step);
                            for (c, a) in a.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(qr.add(8 * c)), *a);
                            }
                        }
                    }
                    store_block(&acc, rows, oy0, x0, ow, rp, yp, y.len(), tail, activation);
                }
            }
            // SAFETY: AVX2 by contract; `(oy0 + rows) * ow <= oh * ow <= y.len()` (checked by
            // `dw_check`).
            unsafe { act_rows(yp, &mut acted, (oy0 + rows) * ow, oh * ow, post) };
        }
    }

    /// Applies the activation to outputs `*from..end` at `yp` once at least 2048 of them are
    /// pending or `end == total` (the last block), then sets `*from = end`.
    ///
    /// # Safety
    /// AVX2; `end` floats at `yp`, no reference to them live.
    #[inline(always)]
    unsafe fn act_rows(
        yp: *mut f32,
        from: &mut usize,
        end: usize,
        total: usize,
        activation: Activation,
    ) {
        if end - *from >= 2048 || end == total {
            // SAFETY: by contract.
            unsafe {
                act_slice(
                    std::slice::from_raw_parts_mut(yp.add(*from), end - *from),
                    activation,
                )
            };
            *from = end;
        }
    }

    /// Whether [`store_block`] applies `activation` itself (the common CNN ones, a few vector
    /// operations behind a predictable branch); the others run over the stored rows after.
    pub(super) fn fused_act(activation: Activation) -> bool {
        matches!(
            activation,
            Activation::Identity
                | Activation::Relu
                | Activation::Clamp { .. }
                | Activation::HardSwish
        )
    }

    /// `activation` of `a` if [`fused_act`], else `a`.
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[inline(always)]
    unsafe fn fused(a: __m256, activation: Activation) -> __m256 {
        // SAFETY: AVX2/FMA by contract.
        unsafe {
            match activation {
                Activation::Relu => act(a, Activation::Relu),
                Activation::Clamp { min, max } => act(a, Activation::Clamp { min, max }),
                Activation::HardSwish => act(a, Activation::HardSwish),
                _ => a,
            }
        }
    }

    /// Stores rows `0..rows` of a block of accumulators at output `(oy0, x0)` of an `ow`-wide
    /// plane: the residual (`rp`, null for none) added, the activation applied if
    /// [`fused_act`] (else the caller applies it afterwards), full vectors while `ox + 8 <= ow`,
    /// `tail`-masked (the `ow % 8` lanes left) for the last, none past `ow`.
    ///
    /// # Safety
    /// AVX2 and FMA; `(oy0 + rows) * ow <= y_len` floats at `yp` (and at `rp` unless null),
    /// `y_len` floats at `yp` that no other thread accesses; `tail` has `ow % 8` leading ones.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn store_block<const R: usize, const C: usize>(
        acc: &[[__m256; C]; R],
        rows: usize,
        oy0: usize,
        x0: usize,
        ow: usize,
        rp: *const f32,
        yp: *mut f32,
        y_len: usize,
        tail: __m256i,
        activation: Activation,
    ) {
        // SAFETY: every access is at `oy*ow + ox` with `oy < oy0 + rows` and `ox < ow`, full
        // vectors only while `ox + 8 <= ow` or, for `y`, `o + 8 <= y_len`; by contract.
        unsafe {
            for (r, a) in acc.iter().enumerate().take(rows) {
                for (c, &a) in a.iter().enumerate() {
                    let ox = x0 + 8 * c;
                    if ox >= ow {
                        break;
                    }
                    let o = (oy0 + r) * ow + ox;
                    if ox + 8 <= ow {
                        let a = if rp.is_null() {
                            a
                        } else {
                            _mm256_add_ps(a, _mm256_loadu_ps(rp.add(o)))
                        };
                        _mm256_storeu_ps(yp.add(o), fused(a, activation));
                    } else {
                        let a = if rp.is_null() {
                            a
                        } else {
                            _mm256_add_ps(a, _mm256_maskload_ps(rp.add(o), tail))
                        };
                        let a = fused(a, activation);
                        if o + 8 <= y_len {
                            // Blend into the 8 floats there and store them all (cheaper than
                            // a masked store on some CPUs): the lanes past the row keep their
                            // value, and are this plane's (this thread's) own.
                            let old = _mm256_loadu_ps(yp.add(o));
                            let a = _mm256_blendv_ps(old, a, _mm256_castsi256_ps(tail));
                            _mm256_storeu_ps(yp.add(o), a);
                        } else {
                            _mm256_maskstore_ps(yp.add(o), tail, a);
                        }
                    }
                }
            }
        }
    }

    /// Checks the bounds of a blocked depthwise plane (see [`dw_plane`]) with taps at offsets up
    /// to `max_off`, writing `y_len` floats at `yp`, and returns the residual pointer (null for
    /// none; `yp` itself in place), the mask of the last `ow % 8` columns, and the activation
    /// left to apply after the stores (Identity when [`store_block`] fuses `activation`).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn dw_check<const R: usize, const C: usize>(
        pad: &[f32],
        row_step: usize,
        oh: usize,
        ow: usize,
        max_off: usize,
        res: SegRes<'_>,
        yp: *mut f32,
        y_len: usize,
        activation: Activation,
    ) -> (*const f32, __m256i, Activation) {
        let need = (oh.div_ceil(R) * R - 1) * row_step + max_off + ow.div_ceil(8 * C) * 8 * C;
        assert!(need <= pad.len() && oh * ow <= y_len);
        let rp = match res {
            SegRes::Separate(r) => {
                assert!(r.len() >= oh * ow);
                r.as_ptr()
            }
            SegRes::InPlace => yp as *const f32,
            SegRes::None => std::ptr::null(),
        };
        // SAFETY: AVX2 by contract; MASKS[m..m + 8] is in bounds (m = 16 - ow % 8 <= 16).
        let tail = unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(16 - ow % 8) as *const __m256i) };
        let post = if fused_act(activation) {
            Activation::Identity
        } else {
            activation
        };
        (rp, tail, post)
    }

    /// Runs `$body` with `$i` = 0, 1, .., `$n - 1` (`$n <= 20`, a constant), fully unrolled.
    macro_rules! unroll_20 {
        ($n:expr, |$i:ident| $body:block) => {
            unroll_20!(@ $n, $i, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19)
        };
        (@ $n:expr, $i:ident, $body:block, $($k:literal)*) => {
            $(
                if $k < $n {
                    let $i: usize = $k;
                    $body
                }
            )*
        };
    }

    /// Depthwise plane for a dense `KH x KW` kernel (vertical dilation 1) with vertical stride
    /// `SH`: the same blocks and results as [`dw_plane`], but each block walks the kernel
    /// column by column: the column's `KH` weights are broadcast once, then every input row
    /// the block's `R` output rows see is loaded once per vector and feeds each output row it
    /// is a kernel row of (up to `KH` FMAs per load). Tap `ky*KW + kx` (weight `wts[ky*KW + kx]`)
    /// is read at offset `ky*row_stride + cols[kx]` (only the first `KW` entries of `cols` are
    /// read, so the row-major tap offsets of a kernel with vertical dilation 1 serve).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn dw_grid<
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const R: usize,
        const C: usize,
    >(
        pad: &[f32],
        row_stride: usize,
        oh: usize,
        ow: usize,
        cols: &[usize],
        wts: &[f32],
        bias: f32,
        res: SegRes<'_>,
        activation: Activation,
        y: &mut [f32],
    ) {
        const { assert!((R - 1) * SH + KH <= 20 && SH <= KH) };
        assert!(wts.len() == KH * KW);
        if oh == 0 || ow == 0 {
            return;
        }
        let co: [usize; KW] = std::array::from_fn(|kx| cols[kx]);
        let max_off = (KH - 1) * row_stride + co.iter().copied().max().unwrap_or(0);
        let row_step = SH * row_stride;
        let yp = y.as_mut_ptr();
        // SAFETY: AVX2 by contract.
        let (rp, tail, post) = unsafe {
            dw_check::<R, C>(pad, row_step, oh, ow, max_off, res, yp, y.len(), activation)
        };
        let p = pad.as_ptr();
        let mut acted = 0;
        for oy0 in (0..oh).step_by(R) {
            let rows = R.min(oh - oy0);
            for x0 in (0..ow).step_by(8 * C) {
                // SAFETY: AVX2/FMA by contract. Input row `i` of the block, kernel column `kx`,
                // vector `c` is at `oy0*row_step + x0 + i*row_stride + co[kx] + 8c`, i.e. tap
                // offset `ky*row_stride + co[kx] <= max_off` of output row `r` (`i = r*SH +
                // ky`; every `i` has such an `r` and `ky` as `SH <= KH`), which `dw_check`
                // bounds for the rounded-up extent. Stores follow `store_block`'s contract,
                // which `dw_check` checked.
                unsafe {
                    let q = p.add(oy0 * row_step + x0);
                    let mut acc = [[_mm256_set1_ps(bias); C]; R];
                    for kx in 0..KW {
                        let wv: [__m256; KH] =
                            std::array::from_fn(|ky| _mm256_set1_ps(wts[ky * KW + kx]));
                        let qk = q.add(co[kx]);
                        // Input rows 0..(R - 1)*SH + KH (at most 7*2 + 5 = 19), unrolled so
                        // that the row-to-(output row, kernel row) pairing is static.
                        unroll_20!((R - 1) * SH + KH, |i| {
                            let qi = qk.add(i * row_stride);
                            for c in 0..C {
                                let x = _mm256_loadu_ps(qi.add(8 * c));
                                for (r, a) in acc.iter_mut().enumerate() {
                                    if i >= r * SH && i - r * SH < KH {
                                        a[c] = _mm256_fmadd_ps(wv[i - r * SH], x, a[c]);
                                    }
                                }
                            }
                        });
                    }
                    store_block(&acc, rows, oy0, x0, ow, rp, yp, y.len(), tail, activation);
                }
            }
            // SAFETY: AVX2 by contract; `(oy0 + rows) * ow <= oh * ow <= y.len()` (checked by
            // `dw_check`).
            unsafe { act_rows(yp, &mut acted, (oy0 + rows) * ow, oh * ow, post) };
        }
    }

    /// [`PaddedPlane::copy_in`] for column stride 1, or 2 with `w >= 32`, when the input's
    /// columns lie inside the padded extent (`pad_left + w <= cols`: unless the windows never
    /// read the last input columns): rows copied 8 floats at a time, stride-2 rows split into
    /// their even and odd columns 16 at a time with shuffles (the stride-1 tail through a masked
    /// load). Returns false (having written nothing) for other shapes. The buffer's padding
    /// must be zeros (`init` with 0): a stride-1 row's tail stores zeros past the row's input.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn copy_in(
        pp: &PaddedPlane,
        x: &[f32],
        h: usize,
        w: usize,
        dst: &mut [f32],
    ) -> bool {
        let (pl, s, rs) = (pp.pad_left, pp.stride, pp.row_stride);
        // Narrow stride-2 rows are mostly tail: the portable pair loop does them better.
        if !(s == 1 || (s == 2 && w >= 32)) || pl + w > pp.cols || s * pp.phase_len != rs {
            return false;
        }
        let r0 = pp.pad_top.min(pp.rows);
        let r1 = (pp.pad_top + h).min(pp.rows);
        for r in r0..r1 {
            let src = &x[(r - pp.pad_top) * w..(r - pp.pad_top + 1) * w];
            let row = &mut dst[r * rs..(r + 1) * rs];
            if s == 1 {
                let d = &mut row[pl..pl + w];
                let mut i = 0;
                while i + 8 <= w {
                    // SAFETY: AVX2 by contract; `i + 8 <= w` floats of `src` and `d`.
                    unsafe {
                        let v = _mm256_loadu_ps(src.as_ptr().add(i));
                        _mm256_storeu_ps(d.as_mut_ptr().add(i), v);
                    }
                    i += 8;
                }
                if i < w {
                    // The last floats, through a masked load. Storing all 8 lanes (the loaded
                    // zeros past `w`) is cheaper than a masked store on some CPUs and harmless
                    // where the buffer goes on: the lanes past the row's input are padding
                    // (zeros) or input of later rows, written after this one.
                    let at = r * rs + pl + i;
                    // SAFETY: AVX2 by contract; the mask (from MASKS[16 - n..24 - n], in
                    // bounds) has n = w - i < 8 leading ones: only floats i..w of `src` are
                    // read, and floats `at..at + 8` of `dst` (in bounds, checked) or i..w of
                    // `d` are written.
                    unsafe {
                        let m =
                            _mm256_loadu_si256(MASKS.as_ptr().add(16 - (w - i)) as *const __m256i);
                        let v = _mm256_maskload_ps(src.as_ptr().add(i), m);
                        if at + 8 <= dst.len() {
                            _mm256_storeu_ps(dst.as_mut_ptr().add(at), v);
                        } else {
                            _mm256_maskstore_ps(dst.as_mut_ptr().add(at), m, v);
                        }
                    }
                }
                continue;
            }
            // Input column j is padded column pl + j: phase (pl + j) % 2, slot (pl + j) / 2.
            // Even j form one run from slot pl / 2, odd j another from (pl + 1) / 2.
            let (ne, no) = (w.div_ceil(2), w / 2);
            let (ph0, ph1) = row.split_at_mut(pp.phase_len);
            let (ev, od) = if pl % 2 == 0 { (ph0, ph1) } else { (ph1, ph0) };
            let ev = &mut ev[pl / 2..pl / 2 + ne];
            let od = &mut od[pl.div_ceil(2)..pl.div_ceil(2) + no];
            let mut j = 0;
            while 2 * j + 16 <= w {
                // SAFETY: AVX2 by contract; reads src[2j..2j + 16] (2j + 16 <= w) and writes
                // ev[j..j + 8], od[j..j + 8] (j + 8 <= w / 2 <= no <= ne).
                unsafe {
                    let a = _mm256_loadu_ps(src.as_ptr().add(2 * j));
                    let b = _mm256_loadu_ps(src.as_ptr().add(2 * j + 8));
                    // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], same for odds.
                    let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                    let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                    let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                        _mm256_castps_pd(e),
                    ));
                    let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                        _mm256_castps_pd(o),
                    ));
                    _mm256_storeu_ps(ev.as_mut_ptr().add(j), e);
                    _mm256_storeu_ps(od.as_mut_ptr().add(j), o);
                }
                j += 8;
            }
            for (k, &v) in src.iter().enumerate().skip(2 * j) {
                if k % 2 == 0 {
                    ev[k / 2] = v;
                } else {
                    od[k / 2] = v;
                }
            }
        }
        true
    }

    /// `R x C` register tile of the Direct kernel: output channels `0..R` of a weight block
    /// (`wp`, k-major with [`DIRECT_MR`] lanes per tap) by `8 * C` consecutive output columns
    /// whose tap `k` reads `8 * C` floats at `src + offs[k]`.
    ///
    /// # Safety
    /// AVX2 and FMA; `src + offs[k] .. + 8 * C` and `wp[k * DIRECT_MR + r]` in bounds for every
    /// `k < offs.len()`, `r < R`.
    #[inline(always)]
    unsafe fn direct_tile<const R: usize, const C: usize>(
        src: *const f32,
        offs: &[usize],
        wp: *const f32,
    ) -> [[__m256; C]; R] {
        // SAFETY: AVX2/FMA and the bounds by the caller's contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            for (ki, &o) in offs.iter().enumerate() {
                let s = src.add(o);
                let mut b = [_mm256_setzero_ps(); C];
                for (c, bc) in b.iter_mut().enumerate() {
                    *bc = _mm256_loadu_ps(s.add(8 * c));
                }
                let wk = wp.add(ki * DIRECT_MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*wk.add(r));
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = _mm256_fmadd_ps(a, b[c], *v);
                    }
                }
            }
            acc
        }
    }

    /// Stores channels `0..rows` (`rows <= R`) by columns `0..lanes` of a Direct tile at
    /// output channel `oc0`, position `pos` (`oy * ow + ox`): bias, residual, activation.
    ///
    /// # Safety
    /// AVX2 and FMA; `(oc0 + r) * hw + pos + lanes` within the output (and residual) for
    /// `r < rows`; those floats owned by this task.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn direct_store<const R: usize, const C: usize>(
        acc: &[[__m256; C]; R],
        d: &Direct<'_>,
        rows: usize,
        lanes: usize,
        oc0: usize,
        pos: usize,
        hw: usize,
        y: *mut f32,
    ) {
        // SAFETY: AVX2/FMA and the bounds by the caller's contract; the masks come from
        // MASKS[16 - n..24 - n] with 0 < n < 8 (in bounds) and cover only the first n lanes.
        unsafe {
            for (r, row) in acc.iter().enumerate().take(rows) {
                let b = _mm256_set1_ps(d.bias.map_or(0.0, |b| b[oc0 + r]));
                for (c, &v) in row.iter().enumerate() {
                    let n = lanes.saturating_sub(8 * c).min(8);
                    if n == 0 {
                        break;
                    }
                    let at = (oc0 + r) * hw + pos + 8 * c;
                    let mut v = _mm256_add_ps(v, b);
                    if n == 8 {
                        if let Some(res) = d.res {
                            v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(at)));
                        } else if d.in_place {
                            v = _mm256_add_ps(v, _mm256_loadu_ps(y.add(at)));
                        }
                        _mm256_storeu_ps(y.add(at), act(v, d.activation));
                    } else {
                        let m = _mm256_loadu_si256(MASKS.as_ptr().add(16 - n) as *const __m256i);
                        if let Some(res) = d.res {
                            v = _mm256_add_ps(v, _mm256_maskload_ps(res.as_ptr().add(at), m));
                        } else if d.in_place {
                            v = _mm256_add_ps(v, _mm256_maskload_ps(y.add(at), m));
                        }
                        _mm256_maskstore_ps(y.add(at), m, act(v, d.activation));
                    }
                }
            }
        }
    }

    /// The AVX2 Direct kernel: output rows `oy0..oy1` of every channel (see
    /// [`Direct::rows_portable`]). Blocks of 6 channels (4 for a last block of at most 4),
    /// each output row in 16-column tiles, the tail in one tile of 16 (more than 8 left) or 8.
    ///
    /// # Safety
    /// AVX2 and FMA; the output contract of [`Direct::rows_portable`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn direct_rows(d: &Direct<'_>, oy0: usize, oy1: usize, y: SharedOut) {
        let (ow, hw, k) = (d.ow, d.oh * d.ow, d.offs.len());
        d.check(oy1);
        let y = y.0;
        for oy in oy0..oy1 {
            for oc0 in (0..d.c_out).step_by(DIRECT_MR) {
                let rows = (d.c_out - oc0).min(DIRECT_MR);
                let wb = &d.w[oc0 * k..(oc0 + DIRECT_MR) * k];
                let mut ox = 0;
                while ox < ow {
                    let left = ow - ox;
                    let lanes = left.min(16);
                    // SAFETY: AVX2/FMA by contract. Loads: offset (oy * row_step + ox) +
                    // offs[k] + up to 16 lanes, with ox + 16 <= ow + 8 (a 16-lane tile when
                    // more than 8 columns are left, else 8 lanes): within the padded planes by
                    // `check`. Weights: block oc0 / DIRECT_MR holds k * DIRECT_MR floats (`wb`).
                    // Stores: channels oc0..oc0 + rows < c_out, columns ox..ox + lanes <= ow of
                    // row oy < oh, owned by this task (caller's contract).
                    unsafe {
                        let src = d.pad.as_ptr().add(oy * d.row_step + ox);
                        let wp = wb.as_ptr();
                        let pos = oy * ow + ox;
                        macro_rules! tile {
                            ($r:literal, $c:literal) => {{
                                let acc = direct_tile::<$r, $c>(src, d.offs, wp);
                                direct_store::<$r, $c>(&acc, d, rows, lanes, oc0, pos, hw, y);
                            }};
                        }
                        match (rows > 4, left > 8) {
                            (true, true) => tile!(6, 2),
                            (true, false) => tile!(6, 1),
                            (false, true) => tile!(4, 2),
                            (false, false) => tile!(4, 1),
                        }
                    }
                    ox += lanes;
                }
            }
        }
    }

    /// Max (NaN-propagating) or average pool plane over tap offsets `taps`; for the average,
    /// output `(oy, ox)` is scaled by `inv_y[oy] * inv_x[ox]` (`inv_x` has 8 floats of slack).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn pool_plane(
        pad: &[f32],
        segs: &[Seg],
        taps: &[usize],
        max: bool,
        inv_y: &[f32],
        inv_x: &[f32],
        y: &mut [f32],
    ) {
        let max_off = taps.iter().copied().max().unwrap_or(0);
        check(pad, segs, max_off, y.len(), SegRes::None);
        if !max {
            for s in segs {
                assert!(s.len == 0 || (s.oy < inv_y.len() && s.ox + 8 <= inv_x.len()));
            }
        }
        let p = pad.as_ptr();
        for g in segs.chunks_exact(8) {
            // SAFETY: `check` (and the assertion above for the divisors) bounds every load and
            // store; AVX2/FMA by contract.
            unsafe {
                if max {
                    let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 8];
                    let mut nan = [_mm256_setzero_ps(); 8];
                    for &off in taps {
                        for v in 0..8 {
                            let x = _mm256_loadu_ps(p.add(g[v].src + off));
                            // max(x, acc) keeps a NaN already in acc; NaNs of x are tracked.
                            acc[v] = _mm256_max_ps(x, acc[v]);
                            nan[v] = _mm256_or_ps(nan[v], _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
                        }
                    }
                    for v in 0..8 {
                        let a = _mm256_blendv_ps(acc[v], _mm256_set1_ps(f32::NAN), nan[v]);
                        finish(a, g[v], SegRes::None, Activation::Identity, y);
                    }
                } else {
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for &off in taps {
                        for v in 0..8 {
                            acc[v] = _mm256_add_ps(acc[v], _mm256_loadu_ps(p.add(g[v].src + off)));
                        }
                    }
                    for v in 0..8 {
                        let s = g[v];
                        if s.len == 0 {
                            continue;
                        }
                        let scale = _mm256_mul_ps(
                            _mm256_set1_ps(inv_y[s.oy]),
                            _mm256_loadu_ps(inv_x.as_ptr().add(s.ox)),
                        );
                        let a = _mm256_mul_ps(acc[v], scale);
                        finish(a, s, SegRes::None, Activation::Identity, y);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conv
// ---------------------------------------------------------------------------------------------

/// Tag word that starts an encoded [`ConvParams`] (`"CONV"`, layout version 1).
pub const CONV_TAG: i64 = 0x434f_4e56_0001;
/// Number of words of an encoded [`ConvParams`].
pub const CONV_WORDS: usize = 19 + ACT_WORDS;

/// Parameters of `pare_k_conv`: ONNX Conv on NCHW f32 with a fused epilogue,
/// `y = act(conv(x, w) + bias[c] + residual)`.
///
/// A 1-D convolution is `h = 1`, `kh = 1`, `stride_h = dilation_h = 1`, zero top/bottom pads.
/// Output extents are derived (`out_h()`, `out_w()`): `(h + pt + pb - dh*(kh-1) - 1)/sh + 1`;
/// the backend resolves `auto_pad` into explicit pads.
///
/// **Word layout** (`encode`, [`CONV_WORDS`] words): `[CONV_TAG, n, c_in, h, w, c_out, kh, kw,
/// stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, pad_bottom, pad_right, group,
/// has_bias, has_residual, act_kind, act_p0, act_p1]`; flags are 0/1, `act_kind` a `PARE_ACT_*`
/// code, `act_p0`/`act_p1` `f64` bits (clamp min/max, leaky-relu slope).
///
/// **Buffers** (`bufs`, 6 pointers): `[x, w_prepared, bias, residual, y, scratch]`:
/// `x` `[n, c_in, h, w]`; `w_prepared` from [`conv_prepare_weights`]; `bias` `[c_out]` (read only
/// if `has_bias`, else may be null); `residual` shaped like `y` (read only if `has_residual`; it
/// may be the same pointer as `y` for an in-place residual add, otherwise it must not overlap
/// `y`); `y` `[n, c_out, out_h, out_w]`; `scratch` of [`ConvParams::scratch_bytes`] bytes (null
/// when that is 0). `x` must not overlap `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvParams {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height (1 for 1-D).
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Padding above.
    pub pad_top: usize,
    /// Padding left.
    pub pad_left: usize,
    /// Padding below.
    pub pad_bottom: usize,
    /// Padding right.
    pub pad_right: usize,
    /// Groups (`c_in` and `c_out` divisible by it).
    pub group: usize,
    /// Whether a `[c_out]` bias is added.
    pub has_bias: bool,
    /// Whether a residual shaped like the output is added (after the bias).
    pub has_residual: bool,
    /// Applied last.
    pub activation: Activation,
}

/// How [`conv`] computes a given shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgo {
    /// 1x1, stride 1, no padding: GEMM on the input in place.
    Pointwise,
    /// `group == c_in`: direct per-plane kernel.
    Depthwise,
    /// im2col into packed panels + GEMM.
    Im2col,
    /// Small output: im2col rows of all images as A, the pre-packed weight as B.
    Rows,
    /// Few output channels (or a 3-channel stem): implicit GEMM straight from a zero-padded
    /// copy of the input, no im2col matrix (see the module doc).
    Direct,
}

/// Output channels per register block of the Direct algorithm (rows of its micro-tile); the
/// prepared weight is packed in blocks of this many channels.
const DIRECT_MR: usize = 6;

/// Largest `c_out` the Direct algorithm takes (with `c_in > DIRECT_STEM_CIN`): beyond it every
/// expanded B element of Im2col is reused by enough multiply-adds that the packing is cheap.
const DIRECT_MAX_COUT: usize = 64;

/// Inputs of at most this many channels (image stems) take Direct whatever `c_out`.
const DIRECT_STEM_CIN: usize = 4;

/// Largest GEMM row count (`n * out_h * out_w`) the Rows algorithm takes.
const ROWS_MAX: usize = 256;

/// Target size of one im2col chunk (floats): 1 MiB.
const CHUNK_FLOATS: usize = 1 << 18;

impl ConvParams {
    /// A plain 2-D convolution: stride 1, dilation 1, no padding, one group, no epilogue.
    pub fn new(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        ConvParams {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 0,
            pad_left: 0,
            pad_bottom: 0,
            pad_right: 0,
            group: 1,
            has_bias: false,
            has_residual: false,
            activation: Activation::Identity,
        }
    }

    /// Output height.
    pub fn out_h(&self) -> usize {
        out_extent(
            self.h,
            self.kh,
            self.stride_h,
            self.dilation_h,
            self.pad_top,
            self.pad_bottom,
        )
    }

    /// Output width.
    pub fn out_w(&self) -> usize {
        out_extent(
            self.w,
            self.kw,
            self.stride_w,
            self.dilation_w,
            self.pad_left,
            self.pad_right,
        )
    }

    /// The words of this block (see the struct doc).
    pub fn encode(&self) -> Vec<i64> {
        let mut v: Vec<i64> = [
            self.n,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.kh,
            self.kw,
            self.stride_h,
            self.stride_w,
            self.dilation_h,
            self.dilation_w,
            self.pad_top,
            self.pad_left,
            self.pad_bottom,
            self.pad_right,
            self.group,
            self.has_bias as usize,
            self.has_residual as usize,
        ]
        .iter()
        .map(|&x| x as i64)
        .collect();
        v.insert(0, CONV_TAG);
        encode_activation(&self.activation, &mut v);
        v
    }

    /// Parses and validates words produced by [`ConvParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != CONV_WORDS || words[0] != CONV_TAG {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let p = ConvParams {
            n: u(1)?,
            c_in: u(2)?,
            h: u(3)?,
            w: u(4)?,
            c_out: u(5)?,
            kh: u(6)?,
            kw: u(7)?,
            stride_h: u(8)?,
            stride_w: u(9)?,
            dilation_h: u(10)?,
            dilation_w: u(11)?,
            pad_top: u(12)?,
            pad_left: u(13)?,
            pad_bottom: u(14)?,
            pad_right: u(15)?,
            group: u(16)?,
            has_bias: word_bool(words[17])?,
            has_residual: word_bool(words[18])?,
            activation: decode_activation(&words[19..22])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters describe a valid convolution whose buffer sizes fit in `usize`.
    pub fn validate(&self) -> Result<(), KernelError> {
        let dims = [
            self.n,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.kh,
            self.kw,
            self.stride_h,
            self.stride_w,
            self.dilation_h,
            self.dilation_w,
            self.pad_top,
            self.pad_left,
            self.pad_bottom,
            self.pad_right,
            self.group,
        ];
        if dims.iter().any(|&d| d > MAX_DIM) {
            return Err(KernelError::params("a conv dimension exceeds i32::MAX"));
        }
        if self.c_in == 0 || self.c_out == 0 || self.h == 0 || self.w == 0 {
            return Err(KernelError::params(
                "conv with an empty channel or spatial extent",
            ));
        }
        if self.kh == 0 || self.kw == 0 || self.stride_h == 0 || self.stride_w == 0 {
            return Err(KernelError::params(
                "conv kernel and strides must be positive",
            ));
        }
        if self.dilation_h == 0 || self.dilation_w == 0 || self.group == 0 {
            return Err(KernelError::params(
                "conv dilations and group must be positive",
            ));
        }
        if !self.c_in.is_multiple_of(self.group) || !self.c_out.is_multiple_of(self.group) {
            return Err(KernelError::params(format!(
                "channels {} -> {} not divisible by group {}",
                self.c_in, self.c_out, self.group
            )));
        }
        if self.out_h() == 0 || self.out_w() == 0 {
            return Err(KernelError::params(
                "conv kernel extent exceeds the padded input",
            ));
        }
        self.activation
            .validate()
            .map_err(|e| KernelError::params(e.to_string()))?;
        let sizes = [
            prod(&[self.n, self.c_in, self.h, self.w]),
            prod(&[self.n, self.c_out, self.out_h(), self.out_w()]),
            prod(&[self.c_out, self.c_in / self.group, self.kh, self.kw]),
            prod(&[
                self.c_in,
                self.kh,
                self.kw,
                self.out_h() * self.out_w() + NR,
                4,
            ]),
            prod(&[
                self.h + self.pad_top + self.pad_bottom + self.kh * self.dilation_h,
                self.w + self.pad_left + self.pad_right + self.kw * self.dilation_w + NR,
            ]),
        ];
        if sizes.iter().any(|s| s.is_none()) {
            return Err(KernelError::params("conv buffer sizes overflow usize"));
        }
        Ok(())
    }

    /// The algorithm [`conv`] uses for this shape.
    pub fn algorithm(&self) -> ConvAlgo {
        // Depthwise: one input channel per group and a small channel multiplier. A single-input
        // convolution with many filters (an STFT basis, an image stem on a gray channel) is a
        // GEMM in disguise and goes to im2col.
        if self.group == self.c_in
            && self.c_out.is_multiple_of(self.c_in)
            && (self.c_in > 1 || self.c_out <= 4)
            && self.c_out / self.c_in <= 4
        {
            ConvAlgo::Depthwise
        } else if self.rows_wins() {
            ConvAlgo::Rows
        } else if self.kh == 1
            && self.kw == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top + self.pad_left + self.pad_bottom + self.pad_right == 0
        {
            ConvAlgo::Pointwise
        } else if self.direct_fits() {
            ConvAlgo::Direct
        } else {
            ConvAlgo::Im2col
        }
    }

    /// Whether the Direct algorithm takes this (non-pointwise, non-depthwise) shape: one group,
    /// a 2-D kernel of more than one tap, no dilation, strides up to 2, and few output channels
    /// or few input channels (where writing Im2col's 9x-expanded B costs a large fraction of
    /// the product).
    fn direct_fits(&self) -> bool {
        self.group == 1
            && self.h > 1
            && self.kh * self.kw > 1
            && self.dilation_h == 1
            && self.dilation_w == 1
            && self.stride_h <= 2
            && self.stride_w <= 2
            && (self.c_out <= DIRECT_MAX_COUT || self.c_in <= DIRECT_STEM_CIN)
            && self.out_h() > 0
            && self.out_w() > 0
            && self.direct_sizes_fit()
    }

    /// Whether Direct's scratch bytes and prepared weight length fit comfortably in `usize`
    /// (always for real models; `validate` bounds the other algorithms' sizes).
    fn direct_sizes_fit(&self) -> bool {
        let u = |v: usize| v as u128;
        let rows = (u(self.out_h()) - 1) * u(self.stride_h) + u(self.kh);
        // The row stride rounds the padded columns up to a multiple of the stride (<= 2).
        let cols = (u(self.out_w()) - 1) * u(self.stride_w) + u(self.kw) + 1;
        let plane = rows * cols + u(PLANE_SLACK);
        let scratch = (u(self.c_in) * plane + u(DIRECT_SLACK)) * 4 + 64;
        let weight =
            u(self.c_out.div_ceil(DIRECT_MR) * DIRECT_MR) * u(self.c_in) * u(self.kh) * u(self.kw);
        scratch.max(weight * 4) <= u(isize::MAX as usize)
    }

    /// The zero-padded plane layout Direct copies each input channel into: the rows and
    /// columns the output windows cover, columns de-interleaved by phase for stride 2.
    fn direct_plane(&self) -> PaddedPlane {
        let (oh, ow) = (self.out_h(), self.out_w());
        PaddedPlane::new(
            (oh - 1) * self.stride_h + self.kh,
            (ow - 1) * self.stride_w + self.kw,
            self.stride_w,
            self.pad_top,
            self.pad_left,
        )
    }

    /// Direct scratch floats: every input channel's padded plane, plus slack for the rounded-up
    /// column blocks.
    fn direct_scratch_floats(&self) -> usize {
        self.c_in * self.direct_plane().len() + DIRECT_SLACK
    }

    /// Whether Rows fills the micro-tiles (`MR` rows x `NR` columns) at least 1.5x better
    /// than the per-image column layout: there, each image's positions are the columns and the
    /// output channels the rows; in Rows, all images' positions are the rows and the channels
    /// the columns.
    fn rows_wins(&self) -> bool {
        let hw = self.out_h() * self.out_w();
        let m = self.n * hw;
        let cout_g = self.c_out / self.group.max(1);
        if hw == 0 || cout_g == 0 || m > ROWS_MAX {
            return false;
        }
        let fill = |x: usize, tile: usize| x as f64 / (x.div_ceil(tile) * tile) as f64;
        let cols = fill(hw, NR) * fill(cout_g, MR);
        let rows = fill(m, MR) * fill(cout_g, NR);
        rows > 1.5 * cols
    }

    /// Elements of `x`.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    /// Elements of `y` (and of the residual).
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }

    /// Elements of the ONNX weight `[c_out, c_in/group, kh, kw]`.
    pub fn w_len(&self) -> usize {
        self.c_out * (self.c_in / self.group) * self.kh * self.kw
    }

    /// Elements of the prepared weight ([`conv_prepare_weights`]).
    pub fn prepared_len(&self) -> usize {
        match self.algorithm() {
            ConvAlgo::Rows => self.group * self.packed_group_len(),
            ConvAlgo::Direct => self.c_out.div_ceil(DIRECT_MR) * DIRECT_MR * self.k_group(),
            _ => self.w_len(),
        }
    }

    /// Floats of one group's packed `W_gᵀ` (`k_group x c_out/group`) for Rows.
    fn packed_group_len(&self) -> usize {
        PackedB::packed_len(self.k_group(), self.c_out / self.group).unwrap_or(usize::MAX)
    }

    /// Rows of one group's im2col matrix (`c_in/group * kh * kw`).
    fn k_group(&self) -> usize {
        self.c_in / self.group * self.kh * self.kw
    }

    /// Output columns per im2col chunk (a multiple of 16 unless it is all of them).
    fn chunk_cols(&self) -> usize {
        let hw = self.out_h() * self.out_w();
        let k = self.c_in * self.kh * self.kw;
        let target = (CHUNK_FLOATS / k.max(1)) / NR * NR;
        target.max(4 * NR).min(hw.div_ceil(NR) * NR)
    }

    /// Bytes of scratch the kernel needs (0 unless the algorithm is Im2col, Rows or Direct).
    /// Includes 64 bytes of slack so that any 4-byte-aligned buffer works.
    pub fn scratch_bytes(&self) -> usize {
        match self.algorithm() {
            ConvAlgo::Im2col => self.c_in * self.kh * self.kw * self.chunk_cols() * 4 + 64,
            ConvAlgo::Rows => self.rows_scratch_floats() * 4 + 64,
            ConvAlgo::Direct => self.direct_scratch_floats() * 4 + 64,
            _ => 0,
        }
    }

    /// Rows scratch: the im2col rows (`n*OH*OW x k_group`) and the GEMM result
    /// (`n*OH*OW x c_out/group`) of one group.
    fn rows_scratch_floats(&self) -> usize {
        let m = self.n * self.out_h() * self.out_w();
        m * (self.k_group() + self.c_out / self.group)
    }

    fn geo(&self) -> Geo {
        Geo {
            cin_g: self.c_in / self.group,
            h: self.h,
            w: self.w,
            ow: self.out_w(),
            kh: self.kh,
            kw: self.kw,
            sh: self.stride_h,
            sw: self.stride_w,
            dh: self.dilation_h,
            dw: self.dilation_w,
            pt: self.pad_top as isize,
            pl: self.pad_left as isize,
        }
    }
}

/// `(x + pb + pe - d*(k-1) - 1)/s + 1`, or 0 when the kernel does not fit.
fn out_extent(x: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize) -> usize {
    let padded = x as u128 + pb as u128 + pe as u128;
    let ext = (d as u128) * (k.max(1) as u128 - 1) + 1;
    if k == 0 || s == 0 || padded < ext {
        0
    } else {
        ((padded - ext) / s as u128 + 1).min(usize::MAX as u128) as usize
    }
}

/// The ONNX weight `[c_out, c_in/group, kh, kw]` in the layout [`conv`] reads (the same layout
/// except for Rows and Direct; see the module doc). The backend stores the result as 64-byte-aligned constant
/// data. Panics if `w` is shorter than [`ConvParams::w_len`].
pub fn conv_prepare_weights(p: &ConvParams, w: &[f32]) -> Vec<f32> {
    if p.algorithm() == ConvAlgo::Direct {
        // Blocks of DIRECT_MR output channels (the last zero-filled), each k-major:
        // block b, tap k, lane r at (b * K + k) * DIRECT_MR + r holds w[b * DIRECT_MR + r][k].
        let k = p.k_group();
        let w = &w[..p.w_len()];
        let mut out = vec![0.0f32; p.prepared_len()];
        for (oc, row) in w.chunks_exact(k).enumerate() {
            let (b, r) = (oc / DIRECT_MR, oc % DIRECT_MR);
            for (ki, &v) in row.iter().enumerate() {
                out[(b * k + ki) * DIRECT_MR + r] = v;
            }
        }
        return out;
    }
    if p.algorithm() != ConvAlgo::Rows {
        return w[..p.w_len()].to_vec();
    }
    // Rows: per group, W_g (`c_out/group x k_group`, row-major) packed as the GEMM's B = W_gᵀ.
    let (kg, cout_g) = (p.k_group(), p.c_out / p.group);
    let mut out = Vec::with_capacity(p.prepared_len());
    for g in 0..p.group {
        let wg = &w[g * cout_g * kg..(g + 1) * cout_g * kg];
        match PackedB::new(kg, cout_g, wg, kg, true) {
            Ok(pb) => out.extend_from_slice(pb.as_slice()),
            Err(e) => panic!("conv_prepare_weights: packing a validated weight failed: {e}"),
        }
    }
    out
}

/// Computes the convolution (see [`ConvParams`]). `bias` / `residual` must be present exactly
/// when `has_bias` / `has_residual` say so; `scratch` must hold [`ConvParams::scratch_bytes`].
/// `threads >= 1` (0 is treated as 1).
#[allow(clippy::too_many_arguments)] // the operands of the op
pub fn conv(
    p: &ConvParams,
    x: &[f32],
    w_prepared: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    let res = match residual {
        Some(r) => Res::Separate(r),
        None => Res::None,
    };
    conv_impl(p, x, w_prepared, bias, res, y, scratch, threads)
}

#[allow(clippy::too_many_arguments)]
fn conv_impl(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    p.validate()?;
    if bias.is_some() != p.has_bias {
        return Err(KernelError::params("bias presence does not match has_bias"));
    }
    if matches!(res, Res::None) == p.has_residual {
        return Err(KernelError::params(
            "residual presence does not match has_residual",
        ));
    }
    need_len("x", x.len(), p.x_len())?;
    need_len("w_prepared", w.len(), p.prepared_len())?;
    need_len("y", y.len(), p.y_len())?;
    if let Some(b) = bias {
        need_len("bias", b.len(), p.c_out)?;
    }
    if let Res::Separate(r) = res {
        need_len("residual", r.len(), p.y_len())?;
    }
    let threads = threads.max(1);
    let y = &mut y[..p.y_len()];
    match p.algorithm() {
        ConvAlgo::Depthwise => {
            depthwise(p, x, w, bias, res, y, threads);
            Ok(())
        }
        ConvAlgo::Pointwise => pointwise(p, x, w, bias, res, y, threads),
        ConvAlgo::Im2col => {
            let floats = (p.scratch_bytes() - 64) / 4;
            let scratch = scratch_f32(scratch, floats)?;
            im2col_conv(p, x, w, bias, res, y, scratch, threads)
        }
        ConvAlgo::Rows => {
            let scratch = scratch_f32(scratch, p.rows_scratch_floats())?;
            rows_conv(p, x, w, bias, res, y, scratch, threads)
        }
        ConvAlgo::Direct => {
            let scratch = scratch_f32(scratch, p.direct_scratch_floats())?;
            direct_conv(p, x, w, bias, res, y, scratch, threads);
            Ok(())
        }
    }
}

/// The Rows algorithm (see the module doc): per group, im2col rows of every image, one GEMM
/// with the pre-packed `W_gᵀ`, then a scatter into NCHW.
#[allow(clippy::too_many_arguments)]
fn rows_conv(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    scratch: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let geo = p.geo();
    let (oh, ow) = (p.out_h(), p.out_w());
    let hw = oh * ow;
    let m = p.n * hw;
    let kg = p.k_group();
    let cout_g = p.c_out / p.group;
    let plen = p.packed_group_len();
    let hw_in = p.h * p.w;
    let (a, c) = scratch.split_at_mut(m * kg);
    let c = &mut c[..m * cout_g];
    for g in 0..p.group {
        for ni in 0..p.n {
            let xg = &x[(ni * p.c_in + g * geo.cin_g) * hw_in..][..geo.cin_g * hw_in];
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = &mut a[(ni * hw + oy * ow + ox) * kg..][..kg];
                    let mut at = 0;
                    for ci in 0..geo.cin_g {
                        let plane = &xg[ci * hw_in..(ci + 1) * hw_in];
                        for ky in 0..geo.kh {
                            let iy = (oy * geo.sh + ky * geo.dh) as isize - geo.pt;
                            for kx in 0..geo.kw {
                                let ix = (ox * geo.sw + kx * geo.dw) as isize - geo.pl;
                                row[at] = if (0..geo.h as isize).contains(&iy)
                                    && (0..geo.w as isize).contains(&ix)
                                {
                                    plane[iy as usize * geo.w + ix as usize]
                                } else {
                                    0.0
                                };
                                at += 1;
                            }
                        }
                    }
                }
            }
        }
        let pb = PackedBRef::new(kg, cout_g, &w[g * plen..(g + 1) * plen])
            .map_err(|e| KernelError::params(format!("prepared weight: {e}")))?;
        // Without a residual the activation is fused; with one it must follow the addition.
        let fused = matches!(res, Res::None);
        let gemm = Gemm {
            m,
            n: cout_g,
            k: kg,
            alpha: 1.0,
            beta: 0.0,
            a,
            lda: kg,
            trans_a: false,
            b: BOperand::Packed(pb),
            epilogue: Epilogue {
                bias: match bias {
                    Some(b) => Bias::PerColumn(&b[g * cout_g..(g + 1) * cout_g]),
                    None => Bias::None,
                },
                residual: None,
                activation: if fused {
                    p.activation
                } else {
                    Activation::Identity
                },
            },
            threads,
            isa: Isa::Auto,
        };
        gemm.run(c, cout_g)
            .map_err(|e| KernelError::internal(format!("GEMM rejected a call: {e}")))?;
        for ni in 0..p.n {
            for s in 0..hw {
                let crow = &c[(ni * hw + s) * cout_g..][..cout_g];
                for (oc, &v) in crow.iter().enumerate() {
                    let at = (ni * p.c_out + g * cout_g + oc) * hw + s;
                    y[at] = match res {
                        Res::None => v,
                        Res::Separate(r) => p.activation.apply(v + r[at]),
                        Res::InPlace => p.activation.apply(v + y[at]),
                    };
                }
            }
        }
    }
    Ok(())
}

/// The epilogue of one GEMM over rows `r0..r0+m` of one image's output (`ld` = plane size),
/// columns from `j0`.
fn epilogue<'a>(
    bias: Option<&'a [f32]>,
    res_img: Option<&'a [f32]>,
    row0: usize,
    m: usize,
    j0: usize,
    ld: usize,
    act: Activation,
) -> Epilogue<'a> {
    Epilogue {
        bias: match bias {
            Some(b) => Bias::PerRow(&b[row0..row0 + m]),
            None => Bias::None,
        },
        residual: res_img.map(|r| Residual {
            data: &r[row0 * ld + j0..],
            ld,
        }),
        activation: act,
    }
}

#[allow(clippy::too_many_arguments)]
fn pointwise(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let hw = p.h * p.w;
    let (cin_g, cout_g) = (p.c_in / p.group, p.c_out / p.group);
    for ni in 0..p.n {
        let x_img = &x[ni * p.c_in * hw..(ni + 1) * p.c_in * hw];
        let y_img = &mut y[ni * p.c_out * hw..(ni + 1) * p.c_out * hw];
        let res_img = match res {
            Res::Separate(r) => Some(&r[ni * p.c_out * hw..(ni + 1) * p.c_out * hw]),
            _ => None,
        };
        for g in 0..p.group {
            let gemm = Gemm {
                m: cout_g,
                n: hw,
                k: cin_g,
                alpha: 1.0,
                beta: if matches!(res, Res::InPlace) {
                    1.0
                } else {
                    0.0
                },
                a: &w[g * cout_g * cin_g..(g + 1) * cout_g * cin_g],
                lda: cin_g,
                trans_a: false,
                b: BOperand::Dense {
                    data: &x_img[g * cin_g * hw..(g + 1) * cin_g * hw],
                    ld: hw,
                    trans: false,
                },
                epilogue: epilogue(bias, res_img, g * cout_g, cout_g, 0, hw, p.activation),
                threads,
                isa: Isa::Auto,
            };
            gemm.run(&mut y_img[g * cout_g * hw..(g + 1) * cout_g * hw], hw)
                .map_err(|e| KernelError::internal(format!("GEMM rejected a call: {e}")))?;
        }
    }
    Ok(())
}

/// Geometry for im2col.
#[derive(Clone, Copy)]
struct Geo {
    cin_g: usize,
    h: usize,
    w: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: isize,
    pl: isize,
}

/// The output buffer shared by the threads of [`im2col_conv`]; each thread writes only the
/// output columns (spatial positions) of its own panels, in every row (channel).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: threads only touch disjoint column ranges (see `im2col_conv`) and the `&mut [f32]`
// the pointer came from outlives the parallel section.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// Where a thread of [`im2col_conv`] puts its GEMM results.
enum Out<'a> {
    /// Single thread: the GEMM writes the output directly.
    Direct(&'a mut [f32]),
    /// Several threads: the GEMM writes a private `c_out/group x cols` tile, which is then
    /// copied into the shared output.
    Tile(SharedOut, Vec<f32>),
}

/// im2col + GEMM. The output positions (`OH*OW` columns) are processed in chunks of
/// `chunk_cols`; within a chunk each of `t` threads owns a contiguous run of 16-column panels,
/// whose scratch slice it fills and multiplies by the weights on its own (no synchronization
/// but the final join: one pool job per call). With one thread the GEMM writes into `y`
/// directly; with several, each GEMM writes a private tile (with the whole epilogue fused) that
/// is copied into `y`, because the threads' outputs interleave in memory (every channel row
/// has a piece from every thread).
#[allow(clippy::too_many_arguments)]
fn im2col_conv(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    scratch: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let hw = p.out_h() * p.out_w();
    let kg = p.k_group();
    let chunk = p.chunk_cols();
    let panels = chunk.div_ceil(NR);
    let flops = 2 * p.n * p.c_out * kg * hw;
    let t = task_count(threads, flops, 2 * MIN_TASK_WORK).min(panels);
    let unit = p.group * kg * NR; // scratch floats per panel (all groups)
    let pb = even_bounds(panels, t);
    let regions = split_bounds(
        &mut scratch[..panels * unit],
        &pb.iter().map(|&q| q * unit).collect::<Vec<_>>(),
    );
    let errors = FirstError::new();
    if t == 1 {
        let region = regions.into_iter().next().expect("one region");
        im2col_worker(
            p,
            x,
            w,
            bias,
            res,
            (0, panels),
            region,
            Out::Direct(y),
            &errors,
        );
        return errors.into_result();
    }
    let out = SharedOut(y.as_mut_ptr());
    let parts: Vec<(usize, &mut [f32])> = regions.into_iter().enumerate().collect();
    run_parts(parts, &|_, (ti, region): (usize, &mut [f32])| {
        let (q0, q1) = (pb[ti], pb[ti + 1]);
        let tile = vec![0.0f32; p.c_out / p.group * (q1 - q0) * NR];
        im2col_worker(
            p,
            x,
            w,
            bias,
            res,
            (q0, q1),
            region,
            Out::Tile(out, tile),
            &errors,
        );
    });
    errors.into_result()
}

/// One thread of [`im2col_conv`]: panels `q0..q1` of every chunk of every image.
#[allow(clippy::too_many_arguments)]
fn im2col_worker(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    (q0, q1): (usize, usize),
    region: &mut [f32],
    mut out: Out<'_>,
    errors: &FirstError,
) {
    let geo = p.geo();
    let hw_in = p.h * p.w;
    let hw = p.out_h() * p.out_w();
    let kg = p.k_group();
    let cout_g = p.c_out / p.group;
    let chunk = p.chunk_cols();
    let in_place = matches!(res, Res::InPlace);
    for ni in 0..p.n {
        let x_img = &x[ni * p.c_in * hw_in..(ni + 1) * p.c_in * hw_in];
        let img = ni * p.c_out * hw;
        let res_img = match res {
            Res::Separate(r) => Some(&r[img..img + p.c_out * hw]),
            _ => None,
        };
        let mut j0 = 0;
        while j0 < hw {
            let cw = chunk.min(hw - j0);
            let c0 = j0 + q0 * NR;
            let c1 = (j0 + q1 * NR).min(j0 + cw);
            j0 += cw;
            if c0 >= c1 {
                continue;
            }
            let cols = c1 - c0;
            let np = cols.div_ceil(NR);
            let per_group = np * kg * NR;
            for g in 0..p.group {
                let xg = &x_img[g * geo.cin_g * hw_in..(g + 1) * geo.cin_g * hw_in];
                let gp = &mut region[g * per_group..(g + 1) * per_group];
                for (q, d) in gp.chunks_exact_mut(kg * NR).enumerate() {
                    let col0 = c0 + q * NR;
                    fill_panel_dispatch(&geo, xg, col0, NR.min(c1 - col0), d);
                }
            }
            for g in 0..p.group {
                let r0 = g * cout_g;
                let pbg =
                    match PackedBRef::new(kg, cols, &region[g * per_group..(g + 1) * per_group]) {
                        Ok(v) => v,
                        Err(e) => return errors.gemm(Err(e)),
                    };
                let gemm = Gemm {
                    m: cout_g,
                    n: cols,
                    k: kg,
                    alpha: 1.0,
                    beta: if in_place { 1.0 } else { 0.0 },
                    a: &w[r0 * kg..(r0 + cout_g) * kg],
                    lda: kg,
                    trans_a: false,
                    b: BOperand::Packed(pbg),
                    epilogue: epilogue(bias, res_img, r0, cout_g, c0, hw, p.activation),
                    threads: 1,
                    isa: Isa::Auto,
                };
                match &mut out {
                    Out::Direct(y) => {
                        errors.gemm(gemm.run(&mut y[img + r0 * hw + c0..], hw));
                    }
                    Out::Tile(shared, tile) => {
                        let base = img + r0 * hw + c0;
                        if in_place {
                            for (i, row) in tile.chunks_exact_mut(cols).take(cout_g).enumerate() {
                                // SAFETY: row r0+i, columns c0..c1 of image ni lie inside the
                                // validated output (the caller checked y.len() >= y_len) and
                                // belong to this thread's panels only, so no other thread
                                // reads or writes them; `row` holds `cols` floats.
                                unsafe {
                                    std::ptr::copy_nonoverlapping(
                                        shared.0.add(base + i * hw),
                                        row.as_mut_ptr(),
                                        cols,
                                    );
                                }
                            }
                        }
                        errors.gemm(gemm.run(&mut tile[..cout_g * cols], cols));
                        for (i, row) in tile.chunks_exact(cols).take(cout_g).enumerate() {
                            // SAFETY: as above: this thread's columns of row r0+i, in bounds.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    shared.0.add(base + i * hw),
                                    cols,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn fill_panel_dispatch(g: &Geo, xg: &[f32], col0: usize, ncols: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { fill_panel_avx2(g, xg, col0, ncols, dst) };
        return;
    }
    fill_panel::<false>(g, xg, col0, ncols, dst);
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fill_panel_avx2(g: &Geo, xg: &[f32], col0: usize, ncols: usize, dst: &mut [f32]) {
    fill_panel::<true>(g, xg, col0, ncols, dst);
}

#[cfg(target_arch = "x86_64")]
use crate::gemm::epilogue::avx2::MASKS;

/// `row[lane..lane + len].copy_from_slice(s)` (or `.fill(0)` without `s`) in one 16-float
/// panel row. With `AVX` (the caller is compiled with AVX2) as vector moves instead of a libc
/// call: a full row is two loads and two stores; a partial one blends the masked source into
/// the row (masked loads are cheap, masked stores are not on AMD).
#[inline(always)]
fn copy_run<const AVX: bool>(row: &mut [f32], lane: usize, len: usize, s: Option<&[f32]>) {
    assert!(row.len() == NR && lane + len <= NR && s.is_none_or(|s| s.len() == len));
    #[cfg(target_arch = "x86_64")]
    if AVX {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled in the caller (AVX is only true inside `fill_panel_avx2`).
        // Unmasked loads read 16 source floats only when len == 16; masked loads read only the
        // lanes lane..lane+len, i.e. s[0..len] (the base pointer is formed with wrapping
        // arithmetic, and masked-off lanes are not accessed); the row holds 16 floats; the
        // MASKS offsets are in 0..=16 and 8..=24, in bounds of the 32-entry table.
        unsafe {
            let r = row.as_mut_ptr();
            if len == NR {
                let (v0, v1) = match s {
                    None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                    Some(s) => (
                        _mm256_loadu_ps(s.as_ptr()),
                        _mm256_loadu_ps(s.as_ptr().add(8)),
                    ),
                };
                _mm256_storeu_ps(r, v0);
                _mm256_storeu_ps(r.add(8), v1);
                return;
            }
            let mask = |n: usize| {
                (
                    _mm256_loadu_si256(MASKS.as_ptr().add(16 - n) as *const __m256i),
                    _mm256_loadu_si256(MASKS.as_ptr().add(24 - n) as *const __m256i),
                )
            };
            let (e0, e1) = mask(lane + len);
            let (b0, b1) = mask(lane);
            let m0 = _mm256_andnot_si256(b0, e0);
            let m1 = _mm256_andnot_si256(b1, e1);
            let (v0, v1) = match s {
                None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                Some(s) => {
                    let base = s.as_ptr().wrapping_sub(lane);
                    (
                        _mm256_maskload_ps(base, m0),
                        _mm256_maskload_ps(base.wrapping_add(8), m1),
                    )
                }
            };
            let o0 = _mm256_loadu_ps(r);
            let o1 = _mm256_loadu_ps(r.add(8));
            _mm256_storeu_ps(r, _mm256_blendv_ps(o0, v0, _mm256_castsi256_ps(m0)));
            _mm256_storeu_ps(r.add(8), _mm256_blendv_ps(o1, v1, _mm256_castsi256_ps(m1)));
        }
        return;
    }
    let d = &mut row[lane..lane + len];
    match s {
        Some(s) => {
            for (a, &b) in d.iter_mut().zip(s) {
                *a = b;
            }
        }
        None => d.iter_mut().for_each(|a| *a = 0.0),
    }
}

/// A run of a panel's columns inside one output row.
#[derive(Clone, Copy, Default)]
struct PanelSeg {
    /// First lane (column within the panel).
    lane: usize,
    oy: usize,
    /// Input column of lane 0 for tap kx = 0 (may be negative: padding).
    x0: isize,
    len: usize,
    /// Taps `kx_lo..kx_hi` read only inside the input row.
    kx_lo: usize,
    kx_hi: usize,
}

/// Writes one 16-column panel of the group's im2col matrix (`dst`: `k_g x 16`, k-major), for
/// output columns `col0 .. col0 + ncols` (`ncols <= 16`; the rest zero). Row `k` of the matrix
/// is `(ci, ky, kx)` in the weight's order.
#[inline(always)]
fn fill_panel<const AVX: bool>(g: &Geo, xg: &[f32], col0: usize, ncols: usize, dst: &mut [f32]) {
    // Split the panel's columns into runs that lie in one output row.
    let mut segs = [PanelSeg::default(); NR];
    let mut nseg = 0;
    let (w, sw, dw) = (g.w as isize, g.sw as isize, g.dw as isize);
    let mut j = 0;
    while j < ncols {
        let c = col0 + j;
        let (oy, ox) = (c / g.ow, c % g.ow);
        let len = (ncols - j).min(g.ow - ox);
        let x0 = (ox * g.sw) as isize - g.pl;
        // Inside for all lanes: x0 + kx*dw >= 0 and x0 + kx*dw + (len-1)*sw <= w - 1.
        let kx_lo = if x0 >= 0 {
            0
        } else {
            ((-x0) as usize).div_ceil(g.dw)
        };
        let lim = w - 1 - (len as isize - 1) * sw - x0;
        let kx_hi = if lim < 0 { 0 } else { (lim / dw + 1) as usize }.min(g.kw);
        segs[nseg] = PanelSeg {
            lane: j,
            oy,
            x0,
            len,
            kx_lo: kx_lo.min(kx_hi),
            kx_hi,
        };
        nseg += 1;
        j += len;
    }
    let segs = &segs[..nseg];
    let kg = g.cin_g * g.kh * g.kw;
    let dst = &mut dst[..kg * NR];
    if ncols < NR {
        for row in dst.chunks_exact_mut(NR) {
            copy_run::<AVX>(row, ncols, NR - ncols, None);
        }
    }
    let hw_in = g.h * g.w;
    for ci in 0..g.cin_g {
        let plane = &xg[ci * hw_in..(ci + 1) * hw_in];
        for ky in 0..g.kh {
            let kbase = (ci * g.kh + ky) * g.kw;
            for s in segs {
                let iy = (s.oy * g.sh + ky * g.dh) as isize - g.pt;
                if iy < 0 || iy >= g.h as isize {
                    for kx in 0..g.kw {
                        let at = (kbase + kx) * NR;
                        copy_run::<AVX>(&mut dst[at..at + NR], s.lane, s.len, None);
                    }
                    continue;
                }
                let row = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                for kx in 0..g.kw {
                    let at = (kbase + kx) * NR;
                    let x = s.x0 + (kx * g.dw) as isize;
                    if kx >= s.kx_lo && kx < s.kx_hi && g.sw == 1 {
                        let x = x as usize;
                        let src = &row[x..x + s.len];
                        copy_run::<AVX>(&mut dst[at..at + NR], s.lane, s.len, Some(src));
                        continue;
                    }
                    let d = &mut dst[at + s.lane..at + s.lane + s.len];
                    if kx >= s.kx_lo && kx < s.kx_hi {
                        let x = x as usize;
                        let src = &row[x..=x + (s.len - 1) * g.sw];
                        for (v, &e) in d.iter_mut().zip(src.iter().step_by(g.sw)) {
                            *v = e;
                        }
                    } else {
                        for (l, v) in d.iter_mut().enumerate() {
                            let ix = x + l as isize * sw;
                            *v = if ix >= 0 && ix < w {
                                row[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Direct (implicit GEMM)
// ---------------------------------------------------------------------------------------------

/// Slack floats after Direct's padded planes: a column block reads up to 8 lanes past the last
/// output column of its row.
const DIRECT_SLACK: usize = 16;

/// What the tasks of one image of [`direct_conv`] share.
struct Direct<'a> {
    c_out: usize,
    oh: usize,
    ow: usize,
    /// Padded-plane floats between output rows (`stride_h` padded rows).
    row_step: usize,
    /// Every input channel's padded plane, then [`DIRECT_SLACK`].
    pad: &'a [f32],
    /// Offset in `pad` of tap `k = (ci, ky, kx)` for output `(0, 0)`.
    offs: &'a [usize],
    /// The prepared weight (blocks of [`DIRECT_MR`] channels, k-major).
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    /// A separate residual, this image's `c_out x oh*ow`.
    res: Option<&'a [f32]>,
    /// The residual is already in the output (added to it).
    in_place: bool,
    activation: Activation,
}

impl Direct<'_> {
    /// Checks every access of the kernels for output rows `..oy1` once: loads of up to 8
    /// floats past the last output column of the farthest tap of the last output row, the
    /// prepared weight, bias, residual, and the `c_out * oh * ow` output floats.
    fn check(&self, oy1: usize) {
        let y_len = self.c_out * self.oh * self.ow;
        let k = self.offs.len();
        let max_off = self.offs.iter().copied().max().unwrap_or(0);
        assert!(self.oh > 0 && self.ow > 0 && k > 0);
        assert!((self.oh - 1) * self.row_step + max_off + self.ow + 8 <= self.pad.len());
        assert!(self.w.len() >= self.c_out.div_ceil(DIRECT_MR) * DIRECT_MR * k);
        assert!(self.bias.is_none_or(|b| b.len() >= self.c_out));
        assert!(self.res.is_none_or(|r| r.len() >= y_len));
        assert!(oy1 <= self.oh);
    }

    /// Output rows `oy0..oy1` of every channel into `y` (`c_out * oh * ow` floats), portable.
    ///
    /// # Safety
    /// `y` points to `c_out * oh * ow` floats whose rows `oy0..oy1` (of every channel) no
    /// other thread accesses.
    unsafe fn rows_portable(&self, oy0: usize, oy1: usize, y: SharedOut) {
        self.check(oy1);
        let (ow, hw, k) = (self.ow, self.oh * self.ow, self.offs.len());
        for oc in 0..self.c_out {
            let (b, r) = (oc / DIRECT_MR, oc % DIRECT_MR);
            let wb = &self.w[b * k * DIRECT_MR..(b + 1) * k * DIRECT_MR];
            for oy in oy0..oy1 {
                let at = oc * hw + oy * ow;
                // SAFETY: row oy of channel oc lies inside the `c_out * oh * ow` floats at `y`
                // (oc < c_out, oy < oy1 <= oh, checked above) and belongs to this task only
                // (caller's contract).
                let yrow = unsafe { std::slice::from_raw_parts_mut(y.0.add(at), ow) };
                let base = oy * self.row_step;
                for (ox, yv) in yrow.iter_mut().enumerate() {
                    let mut s = 0.0f32;
                    for (ki, &o) in self.offs.iter().enumerate() {
                        s = fmadd::<false>(wb[ki * DIRECT_MR + r], self.pad[base + o + ox], s);
                    }
                    if let Some(bias) = self.bias {
                        s += bias[oc];
                    }
                    if let Some(res) = self.res {
                        s += res[at + ox];
                    } else if self.in_place {
                        s += *yv;
                    }
                    *yv = self.activation.apply(s);
                }
            }
        }
    }

    /// [`Direct::rows_portable`] with the AVX2 kernel when the CPU has it.
    ///
    /// # Safety
    /// As [`Direct::rows_portable`].
    unsafe fn rows(&self, oy0: usize, oy1: usize, y: SharedOut) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: the CPU has AVX2 and FMA (checked just above); the output contract is
            // the caller's.
            unsafe { simd::direct_rows(self, oy0, oy1, y) };
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.rows_portable(oy0, oy1, y) };
    }
}

/// The Direct algorithm (see the module doc): per image, every input channel is copied into a
/// zero-padded [`PaddedPlane`] (column phases for stride 2), then the tasks (runs of output
/// rows) compute their rows of every channel in register tiles of up to 6 channels x 16
/// columns, reading B straight from the padded planes at per-tap offsets.
#[allow(clippy::too_many_arguments)]
fn direct_conv(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    scratch: &mut [f32],
    threads: usize,
) {
    let pp = p.direct_plane();
    let plen = pp.len();
    let (oh, ow) = (p.out_h(), p.out_w());
    let hw = oh * ow;
    let hw_in = p.h * p.w;
    let mut offs = Vec::with_capacity(p.k_group());
    for ci in 0..p.c_in {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                offs.push(ci * plen + pp.tap(ky, kx));
            }
        }
    }
    let t = task_count(threads, 2 * p.c_out * p.k_group() * hw, 2 * MIN_TASK_WORK).min(oh);
    let bounds = even_bounds(oh, t);
    let pad = &mut scratch[..p.c_in * plen + DIRECT_SLACK];
    // The padding never changes: zero once, then copy only the inputs' own positions.
    pad.fill(0.0);
    for ni in 0..p.n {
        let x_img = &x[ni * p.c_in * hw_in..(ni + 1) * p.c_in * hw_in];
        for (ci, xc) in x_img.chunks_exact(hw_in).enumerate() {
            copy_in(&pp, xc, p.h, p.w, &mut pad[ci * plen..(ci + 1) * plen]);
        }
        let y_img = &mut y[ni * p.c_out * hw..(ni + 1) * p.c_out * hw];
        let job = Direct {
            c_out: p.c_out,
            oh,
            ow,
            row_step: p.stride_h * pp.row_stride,
            pad,
            offs: &offs,
            w,
            bias,
            res: match res {
                Res::Separate(r) => Some(&r[ni * p.c_out * hw..(ni + 1) * p.c_out * hw]),
                _ => None,
            },
            in_place: matches!(res, Res::InPlace),
            activation: p.activation,
        };
        let out = SharedOut(y_img.as_mut_ptr());
        run_parts((0..t).collect(), &|_, ti: usize| {
            // SAFETY: `out` holds this image's `c_out * oh * ow` output floats (borrowed
            // mutably for the whole parallel section) and task ti alone owns output rows
            // bounds[ti]..bounds[ti + 1] (disjoint ranges of 0..oh).
            unsafe { job.rows(bounds[ti], bounds[ti + 1], out) };
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Depthwise
// ---------------------------------------------------------------------------------------------

/// Register blocking of the AVX2 depthwise kernels for an `oh x ow` output: `(R, C)` = output
/// rows by 8-column vectors per block (8 or 7 accumulators), the candidate computing the fewest
/// (rounded-up) outputs, earlier candidates first on a tie.
fn dw_blocking(oh: usize, ow: usize) -> (usize, usize) {
    let cost = |&(r, c): &(usize, usize)| oh.div_ceil(r) * r * ow.div_ceil(8 * c) * 8 * c;
    [(8, 1), (7, 1), (4, 2)]
        .iter()
        .min_by_key(|rc| cost(rc))
        .copied()
        .unwrap_or((4, 2))
}

/// [`PaddedPlane::copy_in`], with the AVX2 copy where it applies.
fn copy_in(pp: &PaddedPlane, x: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        if unsafe { simd::copy_in(pp, x, h, w, dst) } {
            return;
        }
    }
    pp.copy_in(x, h, w, dst);
}

/// See the module doc. Per output plane: copy the input plane into a zero-padded
/// [`PaddedPlane`] (column phases for strided convs; long enough for the register blocks'
/// rounded-up extent), then [`DwPlane::run`]: [`simd::dw_grid`] for 3x3 / 5x5 with vertical
/// stride 1 or 2 and vertical dilation 1, else [`simd::dw_plane`], or the portable
/// `DwPlane::rows` without AVX2.
fn depthwise(
    p: &ConvParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    y: &mut [f32],
    threads: usize,
) {
    let (oh, ow) = (p.out_h(), p.out_w());
    let plane_out = oh * ow;
    let planes = p.n * p.c_out;
    let taps = p.kh * p.kw;
    let work = 2 * taps * planes * plane_out;
    let t = task_count(threads, work, MIN_TASK_WORK / 4).min(planes.max(1));
    let pb = even_bounds(planes, t);
    let parts: Vec<(usize, &mut [f32])> =
        split_bounds(y, &pb.iter().map(|&b| b * plane_out).collect::<Vec<_>>())
            .into_iter()
            .enumerate()
            .map(|(i, s)| (pb[i], s))
            .collect();
    let pp = PaddedPlane::new(
        (oh - 1) * p.stride_h + (p.kh - 1) * p.dilation_h + 1,
        (ow - 1) * p.stride_w + (p.kw - 1) * p.dilation_w + 1,
        p.stride_w,
        p.pad_top,
        p.pad_left,
    );
    let tap_off: Vec<usize> = (0..p.kh)
        .flat_map(|ky| (0..p.kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| pp.tap(ky * p.dilation_h, kx * p.dilation_w))
        .collect();
    let row_step = p.stride_h * pp.row_stride;
    let blocking = dw_blocking(oh, ow);
    let grid = (p.dilation_h == 1 && matches!(p.stride_h, 1 | 2))
        .then_some((p.kh, p.kw, p.stride_h))
        .filter(|&(kh, kw, _)| kh == kw && matches!(kh, 3 | 5));
    // The blocked kernel computes whole R x 8C blocks: its loads reach up to the rounded-up
    // extent, past the plane's own slack (the extra rows and columns stay zero).
    let (br, bc) = blocking;
    let max_off = tap_off.iter().copied().max().unwrap_or(0);
    let pad_len = pp
        .len()
        .max((oh.div_ceil(br) * br - 1) * row_step + max_off + ow.div_ceil(8 * bc) * 8 * bc);
    let mult = p.c_out / p.c_in;
    let hw_in = p.h * p.w;
    run_parts(parts, &|_, (pl0, ys): (usize, &mut [f32])| {
        let mut pad = vec![0.0f32; pad_len];
        for (i, yp) in ys.chunks_exact_mut(plane_out).enumerate() {
            let plane = pl0 + i;
            let co = plane % p.c_out;
            let input = |plane: usize| {
                let (ni, ci) = (plane / p.c_out, plane % p.c_out / mult);
                &x[(ni * p.c_in + ci) * hw_in..(ni * p.c_in + ci + 1) * hw_in]
            };
            let xp = input(plane);
            copy_in(&pp, xp, p.h, p.w, &mut pad);
            let rp = match res {
                Res::Separate(r) => Some(&r[plane * plane_out..(plane + 1) * plane_out]),
                _ => None,
            };
            let job = DwPlane {
                pad: &pad,
                row_step,
                row_stride: pp.row_stride,
                grid,
                offs: &tap_off,
                wts: &w[co * taps..(co + 1) * taps],
                oh,
                ow,
                blocking,
                bias: bias.map_or(0.0, |b| b[co]),
                res: rp,
                in_place: matches!(res, Res::InPlace),
                act: p.activation,
            };
            job.run(yp);
        }
    });
}

/// One output plane of a depthwise convolution over a [`PaddedPlane`].
struct DwPlane<'a> {
    /// The padded plane, long enough for the blocked kernel's rounded-up extent.
    pad: &'a [f32],
    /// Offset between consecutive output rows in `pad`.
    row_step: usize,
    /// Offset between consecutive padded rows in `pad`.
    row_stride: usize,
    /// `(kh, kw, stride_h)` when [`simd::dw_grid`] has a specialization for the shape: 3x3 or
    /// 5x5, vertical stride 1 or 2, vertical dilation 1.
    grid: Option<(usize, usize, usize)>,
    /// Offset in `pad` per tap, row-major over the kernel (`ky * row_stride + ` the column
    /// offset of `kx`).
    offs: &'a [usize],
    /// Weight per tap.
    wts: &'a [f32],
    oh: usize,
    ow: usize,
    /// `(R, C)` of the AVX2 kernel (from [`dw_blocking`]).
    blocking: (usize, usize),
    bias: f32,
    res: Option<&'a [f32]>,
    in_place: bool,
    act: Activation,
}

impl DwPlane<'_> {
    fn run(&self, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            let res = match (self.res, self.in_place) {
                (Some(r), _) => SegRes::Separate(r),
                (None, true) => SegRes::InPlace,
                (None, false) => SegRes::None,
            };
            let (pad, oh, ow, offs, wts) = (self.pad, self.oh, self.ow, self.offs, self.wts);
            let (b, act) = (self.bias, self.act);
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe {
                macro_rules! plane {
                    ($r:literal, $c:literal) => {
                        simd::dw_plane::<$r, $c>(
                            pad,
                            self.row_step,
                            oh,
                            ow,
                            offs,
                            wts,
                            b,
                            res,
                            act,
                            y,
                        )
                    };
                }
                macro_rules! grid {
                    ($k:literal, $s:literal, $r:literal, $c:literal) => {
                        simd::dw_grid::<$k, $k, $s, $r, $c>(
                            pad,
                            self.row_stride,
                            oh,
                            ow,
                            offs,
                            wts,
                            b,
                            res,
                            act,
                            y,
                        )
                    };
                }
                match (self.grid, self.blocking) {
                    (Some((3, 3, 1)), (8, 1)) => grid!(3, 1, 8, 1),
                    (Some((3, 3, 1)), (7, 1)) => grid!(3, 1, 7, 1),
                    (Some((3, 3, 1)), _) => grid!(3, 1, 4, 2),
                    (Some((3, 3, 2)), (8, 1)) => grid!(3, 2, 8, 1),
                    (Some((3, 3, 2)), (7, 1)) => grid!(3, 2, 7, 1),
                    (Some((3, 3, 2)), _) => grid!(3, 2, 4, 2),
                    (Some((5, 5, 1)), (8, 1)) => grid!(5, 1, 8, 1),
                    (Some((5, 5, 1)), (7, 1)) => grid!(5, 1, 7, 1),
                    (Some((5, 5, 1)), _) => grid!(5, 1, 4, 2),
                    (Some((5, 5, 2)), (8, 1)) => grid!(5, 2, 8, 1),
                    (Some((5, 5, 2)), (7, 1)) => grid!(5, 2, 7, 1),
                    (Some((5, 5, 2)), _) => grid!(5, 2, 4, 2),
                    (_, (8, 1)) => plane!(8, 1),
                    (_, (7, 1)) => plane!(7, 1),
                    _ => plane!(4, 2),
                }
            }
            return;
        }
        if self.ow > 8 {
            self.rows::<false, 16>(y);
        } else {
            self.rows::<false, 8>(y);
        }
    }

    #[inline(always)]
    fn rows<const FMA: bool, const B: usize>(&self, y: &mut [f32]) {
        let ow = self.ow;
        for oy in 0..self.oh {
            let base = oy * self.row_step;
            let yrow = &mut y[oy * ow..(oy + 1) * ow];
            let rrow = self.res.map(|r| &r[oy * ow..(oy + 1) * ow]);
            let mut ox = 0;
            while ox < ow {
                let len = B.min(ow - ox);
                let mut acc = [self.bias; B];
                for (&off, &wv) in self.offs.iter().zip(self.wts) {
                    let src: &[f32; B] = self.pad[base + off + ox..base + off + ox + B]
                        .try_into()
                        .expect("block of B floats");
                    for l in 0..B {
                        acc[l] = fmadd::<FMA>(wv, src[l], acc[l]);
                    }
                }
                if let Some(r) = rrow {
                    for (a, &v) in acc[..len].iter_mut().zip(&r[ox..ox + len]) {
                        *a += v;
                    }
                } else if self.in_place {
                    for (a, &v) in acc[..len].iter_mut().zip(&yrow[ox..ox + len]) {
                        *a += v;
                    }
                }
                self.act.apply_slice(&mut acc);
                yrow[ox..ox + len].copy_from_slice(&acc[..len]);
                ox += len;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose
// ---------------------------------------------------------------------------------------------

/// Tag word that starts an encoded [`ConvTransposeParams`] (`"CONT"`, layout version 1).
pub const CONV_TRANSPOSE_TAG: i64 = 0x434f_4e54_0001;
/// Number of words of an encoded [`ConvTransposeParams`].
pub const CONV_TRANSPOSE_WORDS: usize = 19 + ACT_WORDS;

/// Parameters of `pare_k_conv_transpose`: ONNX ConvTranspose on NCHW f32,
/// `y = act(conv_transpose(x, w) + bias[c])`.
///
/// Input pixel `(iy, ix)` and tap `(ky, kx)` contribute to output pixel
/// `(iy*stride_h + ky*dilation_h - pad_top, ix*stride_w + kx*dilation_w - pad_left)` when it lies
/// inside `out_h x out_w`. The output extents are given (the backend computes them from
/// `output_padding`, `output_shape` and the pads; see [`ConvTransposeParams::natural_out`]), so
/// the end pads are implied.
///
/// **Word layout** (`encode`, [`CONV_TRANSPOSE_WORDS`] words): `[CONV_TRANSPOSE_TAG, n, c_in, h,
/// w, c_out, kh, kw, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, out_h, out_w,
/// group, has_bias, 0 (reserved), act_kind, act_p0, act_p1]`.
///
/// **Buffers** (`bufs`, 5 pointers): `[x, w_prepared, bias, y, scratch]`: `x` `[n, c_in, h, w]`;
/// `w_prepared` from [`conv_transpose_prepare_weights`] (ONNX weight `[c_in, c_out/group, kh,
/// kw]`); `bias` `[c_out]` (read only if `has_bias`); `y` `[n, c_out, out_h, out_w]`, not
/// overlapping `x`; `scratch` of [`ConvTransposeParams::scratch_bytes`] bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTransposeParams {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height (1 for 1-D).
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Padding removed above.
    pub pad_top: usize,
    /// Padding removed left.
    pub pad_left: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Groups.
    pub group: usize,
    /// Whether a `[c_out]` bias is added.
    pub has_bias: bool,
    /// Applied last.
    pub activation: Activation,
}

impl ConvTransposeParams {
    /// ONNX's output extent for one axis:
    /// `stride*(input-1) + output_padding + (kernel-1)*dilation + 1 - pad_begin - pad_end`
    /// (None if negative).
    pub fn natural_out(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad_begin: usize,
        pad_end: usize,
        output_padding: usize,
    ) -> Option<usize> {
        (stride * input.saturating_sub(1) + output_padding + (kernel.max(1) - 1) * dilation + 1)
            .checked_sub(pad_begin + pad_end)
    }

    /// The words of this block (see the struct doc).
    pub fn encode(&self) -> Vec<i64> {
        let mut v: Vec<i64> = vec![CONV_TRANSPOSE_TAG];
        v.extend(
            [
                self.n,
                self.c_in,
                self.h,
                self.w,
                self.c_out,
                self.kh,
                self.kw,
                self.stride_h,
                self.stride_w,
                self.dilation_h,
                self.dilation_w,
                self.pad_top,
                self.pad_left,
                self.out_h,
                self.out_w,
                self.group,
                self.has_bias as usize,
                0,
            ]
            .iter()
            .map(|&x| x as i64),
        );
        encode_activation(&self.activation, &mut v);
        v
    }

    /// Parses and validates words produced by [`ConvTransposeParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != CONV_TRANSPOSE_WORDS || words[0] != CONV_TRANSPOSE_TAG || words[18] != 0 {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let p = ConvTransposeParams {
            n: u(1)?,
            c_in: u(2)?,
            h: u(3)?,
            w: u(4)?,
            c_out: u(5)?,
            kh: u(6)?,
            kw: u(7)?,
            stride_h: u(8)?,
            stride_w: u(9)?,
            dilation_h: u(10)?,
            dilation_w: u(11)?,
            pad_top: u(12)?,
            pad_left: u(13)?,
            out_h: u(14)?,
            out_w: u(15)?,
            group: u(16)?,
            has_bias: word_bool(words[17])?,
            activation: decode_activation(&words[19..22])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters and that buffer sizes fit in `usize`.
    pub fn validate(&self) -> Result<(), KernelError> {
        let dims = [
            self.n,
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.kh,
            self.kw,
            self.stride_h,
            self.stride_w,
            self.dilation_h,
            self.dilation_w,
            self.pad_top,
            self.pad_left,
            self.out_h,
            self.out_w,
            self.group,
        ];
        if dims.iter().any(|&d| d > MAX_DIM) {
            return Err(KernelError::params(
                "a conv_transpose dimension exceeds i32::MAX",
            ));
        }
        if dims[..11].contains(&0) || self.group == 0 {
            return Err(KernelError::params(
                "conv_transpose sizes, kernel, strides, dilations and group must be positive",
            ));
        }
        if !self.c_in.is_multiple_of(self.group) || !self.c_out.is_multiple_of(self.group) {
            return Err(KernelError::params(
                "conv_transpose channels not divisible by group",
            ));
        }
        self.activation
            .validate()
            .map_err(|e| KernelError::params(e.to_string()))?;
        let sizes = [
            prod(&[self.n, self.c_in, self.h, self.w]),
            prod(&[self.n, self.c_out, self.out_h, self.out_w]),
            prod(&[self.c_in, self.c_out, self.kh, self.kw]),
            prod(&[self.c_out, self.kh, self.kw, self.h * self.w, 4]),
            prod(&[
                self.stride_h + self.dilation_h,
                self.h + self.kh + self.out_h,
            ]),
            prod(&[
                self.stride_w + self.dilation_w,
                self.w + self.kw + self.out_w,
            ]),
        ];
        if sizes.iter().any(|s| s.is_none()) {
            return Err(KernelError::params("conv_transpose sizes overflow usize"));
        }
        Ok(())
    }

    /// Elements of `x`.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    /// Elements of `y`.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h * self.out_w
    }

    /// Elements of the ONNX weight `[c_in, c_out/group, kh, kw]` (and of the prepared one).
    pub fn w_len(&self) -> usize {
        self.c_in * (self.c_out / self.group) * self.kh * self.kw
    }

    /// Rows of one group's column matrix (`c_out/group * kh * kw`).
    fn m_group(&self) -> usize {
        self.c_out / self.group * self.kh * self.kw
    }

    /// Input positions per GEMM chunk.
    fn chunk_cols(&self) -> usize {
        let hw = self.h * self.w;
        let target = (CHUNK_FLOATS / self.m_group().max(1)) / NR * NR;
        target.max(NR).min(hw)
    }

    /// Bytes of scratch the kernel needs (with 64 bytes of slack for alignment).
    pub fn scratch_bytes(&self) -> usize {
        self.m_group() * self.chunk_cols() * 4 + 64
    }
}

/// The ONNX weight `[c_in, c_out/group, kh, kw]` in the layout [`conv_transpose`] reads
/// (currently the same). Panics if `w` is shorter than [`ConvTransposeParams::w_len`].
pub fn conv_transpose_prepare_weights(p: &ConvTransposeParams, w: &[f32]) -> Vec<f32> {
    w[..p.w_len()].to_vec()
}

/// Computes the transposed convolution (see [`ConvTransposeParams`]).
pub fn conv_transpose(
    p: &ConvTransposeParams,
    x: &[f32],
    w_prepared: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [u8],
    threads: usize,
) -> Result<(), KernelError> {
    p.validate()?;
    if bias.is_some() != p.has_bias {
        return Err(KernelError::params("bias presence does not match has_bias"));
    }
    need_len("x", x.len(), p.x_len())?;
    need_len("w_prepared", w_prepared.len(), p.w_len())?;
    need_len("y", y.len(), p.y_len())?;
    if let Some(b) = bias {
        need_len("bias", b.len(), p.c_out)?;
    }
    let threads = threads.max(1);
    let chunk = p.chunk_cols();
    let mg = p.m_group();
    let col = scratch_f32(scratch, mg * chunk)?;
    let (hw_in, ohw) = (p.h * p.w, p.out_h * p.out_w);
    let (cin_g, cout_g) = (p.c_in / p.group, p.c_out / p.group);
    let y = &mut y[..p.y_len()];
    for ni in 0..p.n {
        let x_img = &x[ni * p.c_in * hw_in..(ni + 1) * p.c_in * hw_in];
        let y_img = &mut y[ni * p.c_out * ohw..(ni + 1) * p.c_out * ohw];
        for (co, plane) in y_img.chunks_exact_mut(ohw).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[co]));
        }
        for g in 0..p.group {
            let wg = &w_prepared[g * cin_g * mg..(g + 1) * cin_g * mg];
            let xg = &x_img[g * cin_g * hw_in..(g + 1) * cin_g * hw_in];
            let yg = &mut y_img[g * cout_g * ohw..(g + 1) * cout_g * ohw];
            let mut j0 = 0;
            while j0 < hw_in {
                let cw = chunk.min(hw_in - j0);
                let gemm = Gemm {
                    m: mg,
                    n: cw,
                    k: cin_g,
                    alpha: 1.0,
                    beta: 0.0,
                    a: wg,
                    lda: mg,
                    trans_a: true,
                    b: BOperand::Dense {
                        data: &xg[j0..],
                        ld: hw_in,
                        trans: false,
                    },
                    epilogue: Epilogue::default(),
                    threads,
                    isa: Isa::Auto,
                };
                let colc = &mut col[..mg * cw];
                gemm.run(colc, cw)
                    .map_err(|e| KernelError::internal(format!("GEMM rejected a call: {e}")))?;
                let colc: &[f32] = colc;
                let t = task_count(threads, mg * cw, MIN_TASK_WORK / 4).min(cout_g);
                let cb = even_bounds(cout_g, t);
                let parts: Vec<(usize, &mut [f32])> =
                    split_bounds(yg, &cb.iter().map(|&c| c * ohw).collect::<Vec<_>>())
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| (cb[i], s))
                        .collect();
                run_parts(parts, &|_, (c0, ys): (usize, &mut [f32])| {
                    for (i, plane) in ys.chunks_exact_mut(ohw).enumerate() {
                        col2im_plane(p, colc, c0 + i, j0, cw, plane);
                    }
                });
                j0 += cw;
            }
        }
        if p.activation != Activation::Identity {
            let t = task_count(threads, y_img.len(), MIN_TASK_WORK / 4).min(p.c_out);
            let cb = even_bounds(p.c_out, t);
            let parts = split_bounds(y_img, &cb.iter().map(|&c| c * ohw).collect::<Vec<_>>());
            run_parts(parts, &|_, ys: &mut [f32]| p.activation.apply_slice(ys));
        }
    }
    Ok(())
}

/// Adds the column rows of output channel `co` (within its group) for input positions
/// `j0..j0+cw` into its plane.
fn col2im_plane(
    p: &ConvTransposeParams,
    col: &[f32],
    co: usize,
    j0: usize,
    cw: usize,
    y: &mut [f32],
) {
    let (oh, ow) = (p.out_h as isize, p.out_w as isize);
    let sw = p.stride_w;
    for ky in 0..p.kh {
        for kx in 0..p.kw {
            let r = (co * p.kh + ky) * p.kw + kx;
            let crow = &col[r * cw..(r + 1) * cw];
            let xoff = (kx * p.dilation_w) as isize - p.pad_left as isize;
            // Valid input columns: 0 <= ix*sw + xoff < ow.
            let ix_lo = if xoff >= 0 {
                0
            } else {
                ((-xoff) as usize).div_ceil(sw)
            };
            let ix_hi = if ow - xoff <= 0 {
                0
            } else {
                ((ow - xoff) as usize).div_ceil(sw).min(p.w)
            };
            let mut j = 0;
            while j < cw {
                let pos = j0 + j;
                let (iy, ix0) = (pos / p.w, pos % p.w);
                let len = (cw - j).min(p.w - ix0);
                let oy = (iy * p.stride_h + ky * p.dilation_h) as isize - p.pad_top as isize;
                if oy >= 0 && oy < oh {
                    let yrow = &mut y[oy as usize * p.out_w..(oy as usize + 1) * p.out_w];
                    let a = ix_lo.max(ix0);
                    let b = ix_hi.min(ix0 + len);
                    if a < b {
                        let src = &crow[j + a - ix0..j + b - ix0];
                        let o0 = (a as isize * sw as isize + xoff) as usize;
                        if sw == 1 {
                            for (d, &s) in yrow[o0..o0 + (b - a)].iter_mut().zip(src) {
                                *d += s;
                            }
                        } else {
                            for (d, &s) in yrow[o0..].iter_mut().step_by(sw).zip(src) {
                                *d += s;
                            }
                        }
                    }
                }
                j += len;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// C entry points
// ---------------------------------------------------------------------------------------------

/// `Conv` kernel (see [`ConvParams`] for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`ConvParams`] (or at least one word that is not its tag);
/// `bufs` to 6 pointers satisfying the buffer contract of [`ConvParams`].
#[no_mangle]
pub unsafe extern "C" fn pare_k_conv(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, CONV_TAG, CONV_WORDS) }?;
        let p = ConvParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs`.
        let b = unsafe { c_bufs(bufs, 6) }?;
        // SAFETY (all slices below): the buffer contract gives each pointer the length its
        // shape implies; inputs are not written and `y` is not aliased, except an in-place
        // residual, which is then not made into a separate slice.
        let x = unsafe { c_in(b[0], p.x_len()) }?;
        let w = unsafe { c_in(b[1], p.prepared_len()) }?;
        let bias = if p.has_bias {
            // SAFETY: the buffer contract (see the SAFETY note above).
            Some(unsafe { c_in(b[2], p.c_out) }?)
        } else {
            None
        };
        let in_place = p.has_residual && b[3] == b[4];
        let res = if !p.has_residual {
            Res::None
        } else if in_place {
            Res::InPlace
        } else {
            // SAFETY: the buffer contract (see the SAFETY note above).
            Res::Separate(unsafe { c_in(b[3], p.y_len()) }?)
        };
        // SAFETY: the buffer contract (see the SAFETY note above).
        let y = unsafe { c_out(b[4], p.y_len()) }?;
        // SAFETY: the buffer contract (see the SAFETY note above).
        let scratch = unsafe { c_scratch(b[5], p.scratch_bytes()) }?;
        conv_impl(&p, x, w, bias, res, y, scratch, threads).map_err(|e| e.status)
    })
}

/// `ConvTranspose` kernel (see [`ConvTransposeParams`] for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`ConvTransposeParams`] (or at least one word that is not its
/// tag); `bufs` to 5 pointers satisfying the buffer contract of [`ConvTransposeParams`].
#[no_mangle]
pub unsafe extern "C" fn pare_k_conv_transpose(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, CONV_TRANSPOSE_TAG, CONV_TRANSPOSE_WORDS) }?;
        let p = ConvTransposeParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs`.
        let b = unsafe { c_bufs(bufs, 5) }?;
        // SAFETY (all slices below): the buffer contract gives each pointer the length its
        // shape implies; inputs are not written and `y` / `scratch` are not aliased.
        let x = unsafe { c_in(b[0], p.x_len()) }?;
        let w = unsafe { c_in(b[1], p.w_len()) }?;
        let bias = if p.has_bias {
            // SAFETY: the buffer contract (see the SAFETY note above).
            Some(unsafe { c_in(b[2], p.c_out) }?)
        } else {
            None
        };
        // SAFETY: the buffer contract (see the SAFETY note above).
        let y = unsafe { c_out(b[3], p.y_len()) }?;
        // SAFETY: the buffer contract (see the SAFETY note above).
        let scratch = unsafe { c_scratch(b[4], p.scratch_bytes()) }?;
        conv_transpose(&p, x, w, bias, y, scratch, threads).map_err(|e| e.status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Runs `f` with the portable kernels, then with the detected ones, and compares.
    fn both(len: usize, f: impl Fn(&mut [f32])) {
        let mut a = vec![f32::NAN; len];
        FORCE_GENERIC.with(|g| g.set(true));
        f(&mut a);
        FORCE_GENERIC.with(|g| g.set(false));
        let mut b = vec![f32::NAN; len];
        f(&mut b);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn portable_kernels_match_avx2() {
        let mut seed = 1;
        for (c_in, c_out, group, h, w, k, s, d, pad) in [
            (3, 5, 1, 9, 13, 3, 2, 1, 1),
            (4, 6, 2, 11, 7, 2, 1, 2, 2),
            (6, 6, 6, 12, 21, 3, 1, 1, 1),
            (4, 8, 4, 15, 10, 5, 2, 1, 2),
            (3, 3, 3, 7, 40, 3, 3, 2, 3),
            (2, 7, 1, 5, 33, 1, 3, 1, 0),
            // Depthwise: each specialized kernel and blocking, and the general kernel.
            (4, 4, 4, 14, 14, 5, 1, 1, 2),
            (3, 3, 3, 28, 28, 3, 2, 1, 1),
            (2, 4, 2, 4, 16, 3, 1, 1, 1),
            (2, 2, 2, 9, 11, 4, 1, 1, 2),
            // Direct: 6- and 4-channel blocks, 16- and 8-column tiles with tails, stride 2.
            (8, 13, 1, 6, 27, 3, 1, 1, 1),
            (5, 4, 1, 9, 12, 3, 2, 1, 1),
            (7, 11, 1, 5, 9, 2, 1, 1, 0),
        ] {
            for (bias, res, act) in [
                (false, false, Activation::Identity),
                (true, true, Activation::Relu),
                (true, false, Activation::Sigmoid),
            ] {
                seed += 1;
                let mut p = ConvParams::new(2, c_in, h, w, c_out, k, k);
                (p.stride_h, p.stride_w, p.dilation_h, p.dilation_w) = (s, s, d, d);
                (p.pad_top, p.pad_left, p.pad_bottom, p.pad_right) = (pad, pad, pad, 0);
                (p.group, p.has_bias, p.has_residual, p.activation) = (group, bias, res, act);
                p.validate().unwrap();
                let x = fill(p.x_len(), seed);
                let wt = conv_prepare_weights(&p, &fill(p.w_len(), seed + 1));
                let b = fill(p.c_out, seed + 2);
                let r = fill(p.y_len(), seed + 3);
                both(p.y_len(), |y| {
                    let mut scratch = vec![0u8; p.scratch_bytes()];
                    conv(
                        &p,
                        &x,
                        &wt,
                        bias.then_some(&b[..]),
                        res.then_some(&r[..]),
                        y,
                        &mut scratch,
                        1,
                    )
                    .unwrap();
                });
            }
        }
        // Pools.
        use super::super::pool::{pool, PoolKind, PoolParams};
        for kind in [
            PoolKind::Max,
            PoolKind::Average,
            PoolKind::GlobalMax,
            PoolKind::GlobalAverage,
        ] {
            let mut p = PoolParams::global(kind, 2, 3, 11, 19);
            if matches!(kind, PoolKind::Max | PoolKind::Average) {
                (p.out_h, p.out_w, p.kh, p.kw, p.stride_h, p.stride_w) = (6, 7, 3, 3, 2, 3);
                (p.pad_top, p.pad_left, p.pad_bottom, p.pad_right) = (1, 2, 1, 1);
                p.count_include_pad = true;
            }
            let x = fill(p.x_len(), 9);
            both(p.y_len(), |y| pool(&p, &x, y, 1).unwrap());
        }
    }
}
