//! Data movement: a strided N-d copy ([`pare_k_copy`]) and a constant fill ([`pare_k_fill`]).
//!
//! The backend lowers Transpose, Slice (negative steps included), Concat (one copy per input
//! into the output at an offset), Split, Expand and broadcasting (stride 0), Pad (a fill, then a
//! copy into the interior) and DepthToSpace-like reshuffles to one [`CopyParams`] each.
//!
//! The copy first normalizes the problem: dimensions of extent 1 are dropped, dimensions are
//! ordered by decreasing output stride (so writes stream), and neighbours that are contiguous in
//! both operands are merged. Then the innermost dimension decides the loop:
//!
//! - contiguous in both: one `memcpy` per run;
//! - broadcast input (stride 0), contiguous output: a fill of the run;
//! - contiguous output and another dimension contiguous in the input: a transpose, done in
//!   square tiles (32x32 elements, 64x64 for 1- and 2-byte elements) so that both the rows read
//!   and the rows written stay in L1;
//! - anything else: an element loop.
//!
//! Copies of more than [`PAR_MIN_BYTES`] per thread are split along the outermost dimension.
//!
//! This module also holds the plumbing shared by the operator kernels of this crate (parameter
//! and buffer access from the C ABI, the panic guard, splitting work over the pool).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use super::{STATUS_INTERNAL, STATUS_NULL, STATUS_OK, STATUS_PARAMS};

// ---------------------------------------------------------------------------------------------
// Shared plumbing
// ---------------------------------------------------------------------------------------------

/// Runs a kernel body, mapping `Ok` to [`STATUS_OK`], `Err(s)` to `s` and a panic to
/// [`STATUS_INTERNAL`] (a panic must never unwind into the artifact's C code).
pub(crate) fn guard(f: impl FnOnce() -> Result<(), i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(s)) => s,
        Err(_) => STATUS_INTERNAL,
    }
}

/// The first `n` parameter words.
///
/// # Safety
/// `params` is null or points at `n` readable, initialized `i64`s that outlive `'a`.
pub(crate) unsafe fn param_words<'a>(params: *const i64, n: usize) -> Result<&'a [i64], i32> {
    if params.is_null() {
        return Err(STATUS_PARAMS);
    }
    // SAFETY: non-null, and the caller guarantees `n` readable words.
    Ok(unsafe { std::slice::from_raw_parts(params, n) })
}

/// `bufs[i]`.
///
/// # Safety
/// `bufs` points at an array of at least `i + 1` pointers.
pub(crate) unsafe fn buf(bufs: *const *mut u8, i: usize) -> Result<*mut u8, i32> {
    if bufs.is_null() {
        return Err(STATUS_NULL);
    }
    // SAFETY: the caller guarantees the array has at least i + 1 entries.
    Ok(unsafe { *bufs.add(i) })
}

/// Null, misaligned and oversized (more than `isize::MAX` bytes) operands are errors.
fn check_ptr<T>(p: *mut u8, len: usize) -> Result<(), i32> {
    if p.is_null() {
        return Err(STATUS_NULL);
    }
    if !(p as usize).is_multiple_of(std::mem::align_of::<T>())
        || len
            .checked_mul(std::mem::size_of::<T>())
            .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(STATUS_PARAMS);
    }
    Ok(())
}

/// A read-only slice of `len` elements of `T` at `p` (empty if `len == 0`, even for null).
///
/// # Safety
/// If `len > 0` and `p` is non-null, `p` points at `len` initialized elements of `T` that are
/// not written while the slice lives.
pub(crate) unsafe fn slice_in<'a, T>(p: *mut u8, len: usize) -> Result<&'a [T], i32> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr::<T>(p, len)?;
    // SAFETY: non-null, aligned, and the caller guarantees `len` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p as *const T, len) })
}

/// A mutable slice of `len` elements of `T` at `p` (empty if `len == 0`, even for null).
///
/// # Safety
/// If `len > 0` and `p` is non-null, `p` points at `len` writable elements of `T` (any bit
/// pattern valid) that nothing else accesses while the slice lives.
pub(crate) unsafe fn slice_out<'a, T>(p: *mut u8, len: usize) -> Result<&'a mut [T], i32> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_ptr::<T>(p, len)?;
    // SAFETY: non-null, aligned, and the caller guarantees `len` exclusively owned elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(p as *mut T, len) })
}

/// Product of sizes, or [`STATUS_PARAMS`] on overflow.
pub(crate) fn prod(xs: &[usize]) -> Result<usize, i32> {
    xs.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or(STATUS_PARAMS)
}

/// A non-negative parameter word as a size.
pub(crate) fn word_usize(w: i64) -> Option<usize> {
    usize::try_from(w).ok()
}

/// How many tasks to use for `work` units when each task should get at least `min_per_task`.
pub(crate) fn tasks_for(work: usize, threads: usize, min_per_task: usize) -> usize {
    (work / min_per_task.max(1)).clamp(1, threads.max(1))
}

/// Bounds splitting `n` units into `tasks` near-equal contiguous ranges: `tasks + 1` values.
pub(crate) fn even_bounds(n: usize, tasks: usize) -> Vec<usize> {
    let t = tasks.max(1);
    (0..=t).map(|i| n * i / t).collect()
}

/// Splits `data` at the (non-decreasing) element offsets `bounds` (`bounds[0]` is ignored and
/// the last part ends at `bounds[last]`): part `i` is `data[bounds[i]..bounds[i+1]]`.
pub(crate) fn split_at_bounds<'a, T>(mut data: &'a mut [T], bounds: &[usize]) -> Vec<&'a mut [T]> {
    let mut parts = Vec::with_capacity(bounds.len().saturating_sub(1));
    let mut at = bounds.first().copied().unwrap_or(0);
    data = std::mem::take(&mut data).split_at_mut(at).1;
    for &b in &bounds[1..] {
        let (head, tail) = std::mem::take(&mut data).split_at_mut(b - at);
        parts.push(head);
        data = tail;
        at = b;
    }
    parts
}

/// Runs `f(i, work[i])` for every item, on the pool when there are several (item 0 on the
/// calling thread). Each item is moved into exactly one task.
pub(crate) fn par_each<W: Send>(work: Vec<W>, f: &(dyn Fn(usize, W) + Sync)) {
    if work.len() <= 1 {
        for (i, w) in work.into_iter().enumerate() {
            f(i, w);
        }
        return;
    }
    let slots: Vec<Mutex<Option<W>>> = work.into_iter().map(|w| Mutex::new(Some(w))).collect();
    crate::pool::run(slots.len(), &|i| {
        let w = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            f(i, w);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Copy
// ---------------------------------------------------------------------------------------------

/// Largest rank [`CopyParams`] accepts.
pub const COPY_MAX_RANK: usize = 8;

/// Below this many bytes per thread a copy runs on one thread.
pub const PAR_MIN_BYTES: usize = 256 << 10;

/// A strided N-d copy: for every index `i` of `shape`,
/// `out[out_offset + Σ i_d·out_strides[d]] = in[in_offset + Σ i_d·in_strides[d]]`, offsets and
/// strides in elements of `elem_size` bytes. An input stride of 0 broadcasts; negative strides
/// (with the offset at the last element) reverse. The output positions must be distinct and
/// the two buffers must not overlap.
///
/// Words: `[elem_size, rank, shape[rank], in_offset, in_strides[rank], out_offset,
/// out_strides[rank]]` (`4 + 3·rank` words). `elem_size` is 1, 2, 4 or 8; `rank <= 8`.
///
/// Bufs: `[in, out]`. The input must hold every element the offsets and strides reach (up to
/// `in_offset + Σ max(0, (shape[d]-1)·in_strides[d])`), likewise the output; the lowest index
/// reached must be >= 0 (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyParams {
    /// Bytes per element: 1, 2, 4 or 8.
    pub elem_size: usize,
    /// Extents of the iteration space (at most [`COPY_MAX_RANK`]).
    pub shape: Vec<usize>,
    /// Input element index of the first element.
    pub in_offset: i64,
    /// Input strides in elements (0 broadcasts, negative reverses).
    pub in_strides: Vec<i64>,
    /// Output element index of the first element.
    pub out_offset: i64,
    /// Output strides in elements.
    pub out_strides: Vec<i64>,
}

impl CopyParams {
    /// A dense row-major copy of `shape` (both operands contiguous), to be adjusted.
    pub fn contiguous(elem_size: usize, shape: &[usize]) -> CopyParams {
        let strides = dense_strides(shape);
        CopyParams {
            elem_size,
            shape: shape.to_vec(),
            in_offset: 0,
            in_strides: strides.clone(),
            out_offset: 0,
            out_strides: strides,
        }
    }

    /// Number of parameter words for a copy of rank `rank`.
    pub fn words(rank: usize) -> usize {
        4 + 3 * rank
    }

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        let mut w = vec![self.elem_size as i64, self.shape.len() as i64];
        w.extend(self.shape.iter().map(|&d| d as i64));
        w.push(self.in_offset);
        w.extend_from_slice(&self.in_strides);
        w.push(self.out_offset);
        w.extend_from_slice(&self.out_strides);
        w
    }

    /// Parses words produced by [`CopyParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<CopyParams> {
        let elem_size = word_usize(*w.first()?)?;
        let rank = word_usize(*w.get(1)?)?;
        if !matches!(elem_size, 1 | 2 | 4 | 8) || rank > COPY_MAX_RANK {
            return None;
        }
        if w.len() != Self::words(rank) {
            return None;
        }
        let shape = w[2..2 + rank]
            .iter()
            .map(|&d| word_usize(d))
            .collect::<Option<Vec<_>>>()?;
        let in_offset = w[2 + rank];
        let in_strides = w[3 + rank..3 + 2 * rank].to_vec();
        let out_offset = w[3 + 2 * rank];
        let out_strides = w[4 + 2 * rank..4 + 3 * rank].to_vec();
        Some(CopyParams {
            elem_size,
            shape,
            in_offset,
            in_strides,
            out_offset,
            out_strides,
        })
    }

    /// Elements the input and output must hold, `(input, output)`; `None` if an index reached
    /// is negative or a size overflows. Both are 0 when the shape has a zero extent.
    pub fn extents(&self) -> Option<(usize, usize)> {
        if self.in_strides.len() != self.shape.len() || self.out_strides.len() != self.shape.len() {
            return None;
        }
        if self.shape.contains(&0) {
            return Some((0, 0));
        }
        Some((
            extent(&self.shape, self.in_offset, &self.in_strides)?,
            extent(&self.shape, self.out_offset, &self.out_strides)?,
        ))
    }
}

/// Row-major strides of `shape`, in elements.
pub fn dense_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc = acc.saturating_mul(shape[d] as i64);
    }
    s
}

/// One past the largest index reached, or None if the smallest is negative / overflow.
fn extent(shape: &[usize], offset: i64, strides: &[i64]) -> Option<usize> {
    let mut lo = offset as i128;
    let mut hi = offset as i128;
    for (&n, &s) in shape.iter().zip(strides) {
        let span = (n as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    if lo < 0 {
        return None;
    }
    usize::try_from(hi + 1)
        .ok()
        .filter(|&h| h <= isize::MAX as usize)
}

/// One normalized dimension: extent, input stride, output stride (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dim {
    n: usize,
    si: isize,
    so: isize,
}

/// A normalized copy: dims outermost first, innermost last, never empty.
#[derive(Debug, Clone)]
struct Plan {
    dims: Vec<Dim>,
    in_off: isize,
    out_off: isize,
}

/// Drops unit dims, orders by decreasing |output stride|, merges contiguous neighbours.
/// `None` when there is nothing to copy.
fn normalize(p: &CopyParams) -> Option<Plan> {
    if p.shape.contains(&0) {
        return None;
    }
    let mut dims: Vec<Dim> = p
        .shape
        .iter()
        .zip(p.in_strides.iter().zip(&p.out_strides))
        .filter(|(&n, _)| n != 1)
        .map(|(&n, (&si, &so))| Dim {
            n,
            si: si as isize,
            so: so as isize,
        })
        .collect();
    // Stable, so equal output strides (broadcast outputs never happen) keep their order.
    dims.sort_by_key(|d| std::cmp::Reverse(d.so.unsigned_abs()));
    let mut merged: Vec<Dim> = Vec::with_capacity(dims.len());
    for d in dims {
        if let Some(last) = merged.last_mut() {
            if last.si == d.si * d.n as isize && last.so == d.so * d.n as isize {
                *last = Dim {
                    n: last.n * d.n,
                    si: d.si,
                    so: d.so,
                };
                continue;
            }
        }
        merged.push(d);
    }
    if merged.is_empty() {
        merged.push(Dim { n: 1, si: 1, so: 1 });
    }
    Some(Plan {
        dims: merged,
        in_off: p.in_offset as isize,
        out_off: p.out_offset as isize,
    })
}

/// Calls `f(in_off, out_off)` for every index of `dims` (outermost first), offsets in elements.
#[inline]
fn for_each_index(dims: &[Dim], in0: isize, out0: isize, mut f: impl FnMut(isize, isize)) {
    if dims.iter().any(|d| d.n == 0) {
        return;
    }
    let r = dims.len();
    let mut idx = [0usize; COPY_MAX_RANK];
    let (mut io, mut oo) = (in0, out0);
    loop {
        f(io, oo);
        // Odometer increment from the innermost dim.
        let mut d = r;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            io += dims[d].si;
            oo += dims[d].so;
            if idx[d] < dims[d].n {
                break;
            }
            io -= dims[d].si * dims[d].n as isize;
            oo -= dims[d].so * dims[d].n as isize;
            idx[d] = 0;
        }
    }
}

/// An element type the copy moves (`u8`, `u16`, `u32`, `u64`).
trait Word: Copy + Send + Sync + 'static {
    const ZERO: Self;
}
impl Word for u8 {
    const ZERO: Self = 0;
}
impl Word for u16 {
    const ZERO: Self = 0;
}
impl Word for u32 {
    const ZERO: Self = 0;
}
impl Word for u64 {
    const ZERO: Self = 0;
}

/// Raw base pointers of one copy, shared by its tasks.
#[derive(Clone, Copy)]
struct Ptrs {
    src: *const u8,
    dst: *mut u8,
}

// SAFETY: the tasks of one copy write disjoint output elements (disjoint ranges of the outermost
// dimension, whose output positions are distinct by contract) and only read the input; the
// buffers outlive the `pool::run` call that uses the pointers.
unsafe impl Send for Ptrs {}
// SAFETY: as above; sharing only copies the addresses.
unsafe impl Sync for Ptrs {}

/// Executes a normalized plan on one thread.
///
/// # Safety
/// Every input index the plan reaches is readable in `ptrs.src` and every output index writable
/// in `ptrs.dst` (elements of `T`), and the output positions do not overlap the input.
unsafe fn exec<T: Word>(plan: &Plan, ptrs: Ptrs) {
    let src = ptrs.src as *const T;
    let dst = ptrs.dst as *mut T;
    let last = plan.dims.len() - 1;
    let inner = plan.dims[last];
    // Transpose: output contiguous innermost, input contiguous along another dimension.
    if inner.so == 1 && inner.si != 1 && inner.si != 0 && inner.n >= 4 {
        if let Some(k) = (0..last).rfind(|&k| plan.dims[k].si == 1 && plan.dims[k].n >= 4) {
            let tdim = plan.dims[k];
            let outer: Vec<Dim> = (0..last)
                .filter(|&d| d != k)
                .map(|d| plan.dims[d])
                .collect();
            let tile = if std::mem::size_of::<T>() <= 2 {
                64
            } else {
                32
            };
            let mut tmp = vec![T::ZERO; tile * tile];
            for_each_index(&outer, plan.in_off, plan.out_off, |io, oo| {
                // SAFETY: every (k, last) index of this outer index is in the plan's range.
                unsafe { transpose_tile_all::<T>(src, dst, io, oo, tdim, inner, tile, &mut tmp) };
            });
            return;
        }
    }
    let outer = &plan.dims[..last];
    let n = inner.n;
    if inner.si == 1 && inner.so == 1 {
        for_each_index(outer, plan.in_off, plan.out_off, |io, oo| {
            // SAFETY: the run [io, io+n) / [oo, oo+n) is inside the buffers (plan range) and
            // the buffers do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(src.offset(io), dst.offset(oo), n) };
        });
    } else if inner.si == 0 && inner.so == 1 {
        for_each_index(outer, plan.in_off, plan.out_off, |io, oo| {
            // SAFETY: as above; one input element, n contiguous output elements.
            unsafe {
                let v = src.offset(io).read_unaligned();
                let d = dst.offset(oo);
                for i in 0..n {
                    d.add(i).write_unaligned(v);
                }
            }
        });
    } else {
        let (si, so) = (inner.si, inner.so);
        for_each_index(outer, plan.in_off, plan.out_off, |io, oo| {
            for i in 0..n as isize {
                // SAFETY: index i of the innermost dim is inside the plan's range.
                unsafe {
                    dst.offset(oo + i * so)
                        .write_unaligned(src.offset(io + i * si).read_unaligned())
                };
            }
        });
    }
}

/// Copies the 2-D slab spanned by `a` (input-contiguous, `a.si == 1`) and `b` (output-
/// contiguous, `b.so == 1`) in square tiles through `tmp` (`tile·tile` elements): each tile is read as
/// contiguous input runs along `a` and written as contiguous output runs along `b`, so that
/// neither side walks a large stride element by element (large power-of-two strides would
/// make every access of a column a conflict miss).
///
/// # Safety
/// As [`exec`], for the slab at `io`/`oo`.
#[allow(clippy::too_many_arguments)] // a slab and its tile buffer
unsafe fn transpose_tile_all<T: Word>(
    src: *const T,
    dst: *mut T,
    io: isize,
    oo: isize,
    a: Dim,
    b: Dim,
    tile: usize,
    tmp: &mut [T],
) {
    let mut a0 = 0;
    while a0 < a.n {
        let wa = tile.min(a.n - a0);
        let mut b0 = 0;
        while b0 < b.n {
            let wb = tile.min(b.n - b0);
            for ib in 0..wb {
                let row = &mut tmp[ib * tile..ib * tile + wa];
                // SAFETY: input indices (a0 + ia, b0 + ib), ia < wa, are inside the plan's
                // range; a.si == 1 makes them contiguous.
                unsafe {
                    let s = src.offset(io + (b0 + ib) as isize * b.si + a0 as isize);
                    for (ia, v) in row.iter_mut().enumerate() {
                        *v = s.add(ia).read_unaligned();
                    }
                }
            }
            for ia in 0..wa {
                // SAFETY: output indices (a0 + ia, b0 + ib), ib < wb, are inside the plan's
                // range; b.so == 1 makes them contiguous.
                unsafe {
                    let d = dst.offset(oo + (a0 + ia) as isize * a.so + b0 as isize);
                    for ib in 0..wb {
                        d.add(ib).write_unaligned(tmp[ib * tile + ia]);
                    }
                }
            }
            b0 += wb;
        }
        a0 += wa;
    }
}

/// Runs the plan, split over the outermost dimension when it is big enough.
///
/// # Safety
/// As [`exec`].
unsafe fn run_plan(plan: &Plan, es: usize, ptrs: Ptrs, threads: usize) {
    let total: usize = plan.dims.iter().map(|d| d.n).product();
    let d0 = plan.dims[0];
    let tasks = tasks_for(total.saturating_mul(es), threads, PAR_MIN_BYTES).min(d0.n);
    let go = |plan: &Plan| match es {
        // SAFETY: forwarded from the caller.
        1 => unsafe { exec::<u8>(plan, ptrs) },
        // SAFETY: forwarded from the caller.
        2 => unsafe { exec::<u16>(plan, ptrs) },
        // SAFETY: forwarded from the caller.
        4 => unsafe { exec::<u32>(plan, ptrs) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { exec::<u64>(plan, ptrs) },
    };
    if tasks <= 1 {
        go(plan);
        return;
    }
    let bounds = even_bounds(d0.n, tasks);
    crate::pool::run(tasks, &|t| {
        let (lo, hi) = (bounds[t], bounds[t + 1]);
        if lo == hi {
            return;
        }
        let mut sub = plan.clone();
        sub.dims[0].n = hi - lo;
        sub.in_off += lo as isize * d0.si;
        sub.out_off += lo as isize * d0.so;
        go(&sub);
    });
}

/// Strided copy between byte buffers (see [`CopyParams`]); nothing is written on error.
pub fn copy(p: &CopyParams, input: &[u8], output: &mut [u8], threads: usize) -> Result<(), i32> {
    let (need_in, need_out) = p.extents().ok_or(STATUS_PARAMS)?;
    let es = p.elem_size;
    if !matches!(es, 1 | 2 | 4 | 8) || p.shape.len() > COPY_MAX_RANK {
        return Err(STATUS_PARAMS);
    }
    let bytes_in = need_in.checked_mul(es).ok_or(STATUS_PARAMS)?;
    let bytes_out = need_out.checked_mul(es).ok_or(STATUS_PARAMS)?;
    if input.len() < bytes_in || output.len() < bytes_out {
        return Err(STATUS_PARAMS);
    }
    let Some(plan) = normalize(p) else {
        return Ok(());
    };
    let ptrs = Ptrs {
        src: input.as_ptr(),
        dst: output.as_mut_ptr(),
    };
    // SAFETY: `extents` bounds every index the (normalized, same-range) plan reaches by the
    // lengths checked above; `&[u8]` and `&mut [u8]` cannot overlap; unaligned access is used.
    unsafe { run_plan(&plan, es, ptrs, threads) };
    Ok(())
}

/// C entry point of [`copy`]; see [`CopyParams`] for the parameter words and buffers.
///
/// # Safety
/// `params` holds a [`CopyParams`] encoding; `bufs` holds the two pointers it documents, each
/// valid for the extent [`CopyParams::extents`] gives, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn pare_k_copy(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the header (2 words) is always present.
        let head = unsafe { param_words(params, 2)? };
        let rank = word_usize(head[1])
            .filter(|&r| r <= COPY_MAX_RANK)
            .ok_or(STATUS_PARAMS)?;
        // SAFETY: a copy of this rank has this many words.
        let w = unsafe { param_words(params, CopyParams::words(rank))? };
        let p = CopyParams::decode(w).ok_or(STATUS_PARAMS)?;
        let (need_in, need_out) = p.extents().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller guarantees two buffer pointers.
        let (pi, po) = unsafe { (buf(bufs, 0)?, buf(bufs, 1)?) };
        let es = p.elem_size;
        let bytes_in = need_in.checked_mul(es).ok_or(STATUS_PARAMS)?;
        let bytes_out = need_out.checked_mul(es).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller guarantees the buffers hold the extents and do not overlap.
        let input = unsafe { slice_in::<u8>(pi, bytes_in)? };
        // SAFETY: as above.
        let output = unsafe { slice_out::<u8>(po, bytes_out)? };
        copy(&p, input, output, threads)
    })
}

// ---------------------------------------------------------------------------------------------
// Fill
// ---------------------------------------------------------------------------------------------

/// Fills `count` elements of `elem_size` bytes with one value.
///
/// Words: `[elem_size, count, value]`; `value` holds the element's bits in its low
/// `elem_size` bytes (little-endian: an f32 is `f32::to_bits(x) as i64`).
///
/// Bufs: `[out]` (`count·elem_size` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillParams {
    /// Bytes per element: 1, 2, 4 or 8.
    pub elem_size: usize,
    /// Elements to write.
    pub count: usize,
    /// The element's bits in the low `elem_size` bytes.
    pub value: u64,
}

impl FillParams {
    /// Number of parameter words.
    pub const WORDS: usize = 3;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![self.elem_size as i64, self.count as i64, self.value as i64]
    }

    /// Parses words produced by [`FillParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<FillParams> {
        if w.len() != Self::WORDS {
            return None;
        }
        let elem_size = word_usize(w[0]).filter(|e| matches!(e, 1 | 2 | 4 | 8))?;
        Some(FillParams {
            elem_size,
            count: word_usize(w[1])?,
            value: w[2] as u64,
        })
    }

    /// Bytes written.
    pub fn bytes(&self) -> Option<usize> {
        self.count.checked_mul(self.elem_size)
    }
}

/// Fills `out` (see [`FillParams`]); nothing is written on error.
pub fn fill(p: &FillParams, out: &mut [u8], threads: usize) -> Result<(), i32> {
    if !matches!(p.elem_size, 1 | 2 | 4 | 8) {
        return Err(STATUS_PARAMS);
    }
    let bytes = p.bytes().ok_or(STATUS_PARAMS)?;
    if out.len() < bytes {
        return Err(STATUS_PARAMS);
    }
    let es = p.elem_size;
    let pattern = p.value.to_le_bytes();
    let pattern = &pattern[..es];
    let out = &mut out[..bytes];
    let tasks = tasks_for(bytes, threads, PAR_MIN_BYTES * 4);
    let bounds: Vec<usize> = even_bounds(p.count, tasks)
        .into_iter()
        .map(|e| e * es)
        .collect();
    let parts = split_at_bounds(out, &bounds);
    par_each(parts, &|_, part: &mut [u8]| fill_bytes(part, pattern));
    Ok(())
}

fn fill_bytes(out: &mut [u8], pattern: &[u8]) {
    if pattern.iter().all(|&b| b == pattern[0]) {
        out.fill(pattern[0]);
        return;
    }
    // Seed one 64-byte block, then double with memcpy.
    let es = pattern.len();
    let seed = (64 / es * es).min(out.len());
    for chunk in out[..seed].chunks_exact_mut(es) {
        chunk.copy_from_slice(pattern);
    }
    let mut done = seed;
    while done < out.len() {
        let n = done.min(out.len() - done);
        let (head, tail) = out.split_at_mut(done);
        tail[..n].copy_from_slice(&head[..n]);
        done += n;
    }
}

/// C entry point of [`fill`]; see [`FillParams`].
///
/// # Safety
/// `params` holds a [`FillParams`] encoding and `bufs[0]` points at `count·elem_size` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn pare_k_fill(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: a fill has WORDS parameter words.
        let w = unsafe { param_words(params, FillParams::WORDS)? };
        let p = FillParams::decode(w).ok_or(STATUS_PARAMS)?;
        let bytes = p.bytes().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller guarantees one buffer of `bytes` writable bytes.
        let out = unsafe { slice_out::<u8>(buf(bufs, 0)?, bytes)? };
        fill(&p, out, threads)
    })
}
