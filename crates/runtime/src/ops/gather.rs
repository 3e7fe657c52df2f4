//! ONNX Gather ([`pare_k_gather`]) on any element type of 1, 2, 4 or 8 bytes.
//!
//! The data is viewed as `outer x axis_len x inner`; the output is `outer x n_indices x inner`,
//! each `inner` run a copy of the data run the index selects. Indices (i64 or i32) are checked
//! and wrapped (negative counts from the end) before anything is written.

use super::copy::{
    buf, even_bounds, guard, par_each, param_words, prod, slice_in, slice_out, split_at_bounds,
    tasks_for, word_usize, PAR_MIN_BYTES,
};
use super::{STATUS_INDEX, STATUS_PARAMS};

/// Gather along one axis.
///
/// Words: `[elem_size, outer, axis_len, inner, n_indices, index_i32]` (`index_i32` 0: the
/// indices are i64, 1: i32).
///
/// Bufs: `[data, indices, out]`: `data` `outer·axis_len·inner` elements, `indices`
/// `n_indices` integers, `out` `outer·n_indices·inner` elements. An index outside
/// `[-axis_len, axis_len)` makes the kernel return `STATUS_INDEX` with `out` untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherParams {
    /// Bytes per element: 1, 2, 4 or 8.
    pub elem_size: usize,
    /// Product of the data dimensions before the axis.
    pub outer: usize,
    /// Extent of the gathered axis.
    pub axis_len: usize,
    /// Product of the data dimensions after the axis.
    pub inner: usize,
    /// Number of indices (product of the indices' shape).
    pub n_indices: usize,
    /// Whether the indices are i32 (else i64).
    pub index_i32: bool,
}

impl GatherParams {
    /// Number of parameter words.
    pub const WORDS: usize = 6;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.elem_size as i64,
            self.outer as i64,
            self.axis_len as i64,
            self.inner as i64,
            self.n_indices as i64,
            self.index_i32 as i64,
        ]
    }

    /// Parses words produced by [`GatherParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<GatherParams> {
        if w.len() != Self::WORDS || !matches!(w[5], 0 | 1) {
            return None;
        }
        Some(GatherParams {
            elem_size: word_usize(w[0]).filter(|e| matches!(e, 1 | 2 | 4 | 8))?,
            outer: word_usize(w[1])?,
            axis_len: word_usize(w[2])?,
            inner: word_usize(w[3])?,
            n_indices: word_usize(w[4])?,
            index_i32: w[5] == 1,
        })
    }

    /// Bytes of `data` and of `out`.
    pub fn byte_lens(&self) -> Option<(usize, usize)> {
        let es = self.elem_size;
        Some((
            prod(&[self.outer, self.axis_len, self.inner, es]).ok()?,
            prod(&[self.outer, self.n_indices, self.inner, es]).ok()?,
        ))
    }
}

/// The indices operand.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    /// int64 indices.
    I64(&'a [i64]),
    /// int32 indices.
    I32(&'a [i32]),
}

impl Indices<'_> {
    fn len(&self) -> usize {
        match self {
            Indices::I64(v) => v.len(),
            Indices::I32(v) => v.len(),
        }
    }
}

/// Wraps and checks the indices.
fn normalize(indices: Indices<'_>, n: usize, axis_len: usize) -> Result<Vec<usize>, i32> {
    let len = axis_len as i64;
    let fix = |i: i64| -> Result<usize, i32> {
        let j = if i < 0 { i + len } else { i };
        if (0..len).contains(&j) {
            Ok(j as usize)
        } else {
            Err(STATUS_INDEX)
        }
    };
    match indices {
        Indices::I64(v) => v[..n].iter().map(|&i| fix(i)).collect(),
        Indices::I32(v) => v[..n].iter().map(|&i| fix(i as i64)).collect(),
    }
}

#[inline(always)]
fn copy_run(dst: &mut [u8], src: &[u8]) {
    match dst.len() {
        4 => {
            let a: [u8; 4] = src[..4].try_into().unwrap_or_default();
            dst.copy_from_slice(&a);
        }
        8 => {
            let a: [u8; 8] = src[..8].try_into().unwrap_or_default();
            dst.copy_from_slice(&a);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Gather (see [`GatherParams`]) on byte buffers; nothing is written on error.
pub fn gather(
    p: &GatherParams,
    data: &[u8],
    indices: Indices<'_>,
    out: &mut [u8],
    threads: usize,
) -> Result<(), i32> {
    let (nd, no) = p.byte_lens().ok_or(STATUS_PARAMS)?;
    if !matches!(p.elem_size, 1 | 2 | 4 | 8)
        || data.len() < nd
        || out.len() < no
        || indices.len() < p.n_indices
        || matches!(indices, Indices::I32(_)) != p.index_i32
    {
        return Err(STATUS_PARAMS);
    }
    let idx = normalize(indices, p.n_indices, p.axis_len)?;
    if no == 0 {
        return Ok(());
    }
    let chunk = p.inner * p.elem_size;
    let items = p.outer * p.n_indices;
    let tasks = tasks_for(no, threads, PAR_MIN_BYTES).min(items);
    let bounds = even_bounds(items, tasks);
    let eb: Vec<usize> = bounds.iter().map(|&b| b * chunk).collect();
    let parts = split_at_bounds(&mut out[..no], &eb);
    let (n, axis) = (p.n_indices, p.axis_len);
    par_each(parts, &|t, dst: &mut [u8]| {
        for (k, d) in dst.chunks_exact_mut(chunk).enumerate() {
            let item = bounds[t] + k;
            let (o, i) = (item / n, item % n);
            let s = (o * axis + idx[i]) * chunk;
            copy_run(d, &data[s..s + chunk]);
        }
    });
    Ok(())
}

/// C entry point of [`gather`]; see [`GatherParams`].
///
/// # Safety
/// `params` holds a [`GatherParams`] encoding; `bufs` holds the three pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_gather(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = GatherParams::decode(unsafe { param_words(params, GatherParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let (nd, no) = p.byte_lens().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller passes the documented buffers with these lengths; out overlaps
        // neither input.
        let (data, pi, out) = unsafe {
            (
                slice_in::<u8>(buf(bufs, 0)?, nd)?,
                buf(bufs, 1)?,
                slice_out::<u8>(buf(bufs, 2)?, no)?,
            )
        };
        let indices = if p.index_i32 {
            // SAFETY: as above, n_indices i32.
            Indices::I32(unsafe { slice_in::<i32>(pi, p.n_indices)? })
        } else {
            // SAFETY: as above, n_indices i64.
            Indices::I64(unsafe { slice_in::<i64>(pi, p.n_indices)? })
        };
        gather(&p, data, indices, out, threads)
    })
}
