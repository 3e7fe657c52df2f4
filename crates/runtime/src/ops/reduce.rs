//! Reductions over the middle axis of an `outer x reduce x inner` f32 tensor
//! ([`pare_k_reduce`]): ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
//! ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSumExp, ReduceLogSum.
//!
//! Several reduced axes that are adjacent in memory collapse into one `reduce` extent; the
//! backend transposes (or reduces twice) for axes that are not. With `inner == 1` each output is
//! a contiguous row, reduced with 8 partial accumulators (vectorized); a few long rows are split
//! over the threads and the partial results combined (log-sum-exp combines `(max, Σexp)` pairs).
//! With `inner > 1` the output is produced 64 columns at a time: every input row of the tile
//! updates 64 contiguous accumulators. Accumulation is in f32.

use super::copy::{
    buf, even_bounds, guard, par_each, param_words, prod, slice_in, slice_out, split_at_bounds,
    tasks_for, word_usize,
};
use super::norm::{exp_fast, max_lanes, max_nan, multiversion, sum_lanes, LANES, PAR_MIN_ELEMS};
use super::STATUS_PARAMS;

/// The reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Σx
    Sum = 0,
    /// Σx / n
    Mean = 1,
    /// max x (NaN if any is NaN; -inf when empty)
    Max = 2,
    /// min x (+inf when empty)
    Min = 3,
    /// Πx
    Prod = 4,
    /// Σx²
    SumSquare = 5,
    /// Σ|x|
    L1 = 6,
    /// sqrt(Σx²)
    L2 = 7,
    /// ln Σ exp(x), computed as m + ln Σ exp(x - m)
    LogSumExp = 8,
    /// ln Σx
    LogSum = 9,
}

impl ReduceOp {
    /// The op with this code.
    pub fn from_code(c: i64) -> Option<ReduceOp> {
        use ReduceOp::*;
        Some(match c {
            0 => Sum,
            1 => Mean,
            2 => Max,
            3 => Min,
            4 => Prod,
            5 => SumSquare,
            6 => L1,
            7 => L2,
            8 => LogSumExp,
            9 => LogSum,
            _ => return None,
        })
    }
}

/// Reduction of an `outer x reduce x inner` f32 tensor over the middle axis to `outer x inner`.
///
/// Words: `[outer, reduce, inner, op]` (`op`: [`ReduceOp`] code).
///
/// Bufs: `[x, y]`: `x` `outer·reduce·inner` f32, `y` `outer·inner` f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReduceParams {
    /// Product of the dimensions before the reduced ones.
    pub outer: usize,
    /// Product of the reduced dimensions.
    pub reduce: usize,
    /// Product of the dimensions after the reduced ones.
    pub inner: usize,
    /// The reduction.
    pub op: ReduceOp,
}

impl ReduceParams {
    /// Number of parameter words.
    pub const WORDS: usize = 4;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.outer as i64,
            self.reduce as i64,
            self.inner as i64,
            self.op as i64,
        ]
    }

    /// Parses words produced by [`ReduceParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<ReduceParams> {
        if w.len() != Self::WORDS {
            return None;
        }
        Some(ReduceParams {
            outer: word_usize(w[0])?,
            reduce: word_usize(w[1])?,
            inner: word_usize(w[2])?,
            op: ReduceOp::from_code(w[3])?,
        })
    }

    /// Elements of `x` and of `y`.
    pub fn lens(&self) -> Option<(usize, usize)> {
        Some((
            prod(&[self.outer, self.reduce, self.inner]).ok()?,
            prod(&[self.outer, self.inner]).ok()?,
        ))
    }
}

#[inline(always)]
fn min_nan(m: f32, v: f32) -> f32 {
    if v < m || v.is_nan() {
        v
    } else {
        m
    }
}

/// The accumulator of an empty reduction: `(a, b)`, `b` used by log-sum-exp only.
fn init(op: ReduceOp) -> (f32, f32) {
    match op {
        ReduceOp::Max | ReduceOp::LogSumExp => (f32::NEG_INFINITY, 0.0),
        ReduceOp::Min => (f32::INFINITY, 0.0),
        ReduceOp::Prod => (1.0, 0.0),
        _ => (0.0, 0.0),
    }
}

/// Merges two partial results of the same output.
fn combine(op: ReduceOp, p: (f32, f32), q: (f32, f32)) -> (f32, f32) {
    match op {
        ReduceOp::Max => (max_nan(p.0, q.0), 0.0),
        ReduceOp::Min => (min_nan(p.0, q.0), 0.0),
        ReduceOp::Prod => (p.0 * q.0, 0.0),
        ReduceOp::LogSumExp => {
            let m = max_nan(p.0, q.0);
            if !m.is_finite() {
                (m, 0.0)
            } else {
                (m, p.1 * (p.0 - m).exp() + q.1 * (q.0 - m).exp())
            }
        }
        _ => (p.0 + q.0, 0.0),
    }
}

/// The output from the accumulated `(a, b)` over `n` elements.
#[inline(always)]
fn finish(op: ReduceOp, (a, b): (f32, f32), n: usize) -> f32 {
    match op {
        ReduceOp::Mean => a / n as f32,
        ReduceOp::L2 => a.sqrt(),
        ReduceOp::LogSum => a.ln(),
        ReduceOp::LogSumExp => {
            if a.is_finite() {
                a + b.ln()
            } else {
                a
            }
        }
        _ => a,
    }
}

multiversion! {
    /// The partial result of a contiguous run.
    fn row_partial(op: ReduceOp, x: &[f32]) -> (f32, f32) {
        match op {
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::LogSum => (sum_lanes(x, |v| v), 0.0),
            ReduceOp::SumSquare | ReduceOp::L2 => (sum_lanes(x, |v| v * v), 0.0),
            ReduceOp::L1 => (sum_lanes(x, f32::abs), 0.0),
            ReduceOp::Max => (max_lanes(x), 0.0),
            ReduceOp::Min => {
                let mut m = [f32::INFINITY; LANES];
                let mut ch = x.chunks_exact(LANES);
                for c in &mut ch {
                    for k in 0..LANES {
                        m[k] = min_nan(m[k], c[k]);
                    }
                }
                let r = ch.remainder().iter().chain(m.iter()).fold(f32::INFINITY, |a, &v| min_nan(a, v));
                (r, 0.0)
            }
            ReduceOp::Prod => {
                let mut m = [1.0f32; LANES];
                let mut ch = x.chunks_exact(LANES);
                for c in &mut ch {
                    for k in 0..LANES {
                        m[k] *= c[k];
                    }
                }
                (ch.remainder().iter().chain(m.iter()).product(), 0.0)
            }
            ReduceOp::LogSumExp => {
                let m = max_lanes(x);
                if m.is_finite() {
                    (m, sum_lanes(x, |v| exp_fast(v - m)))
                } else {
                    (m, 0.0)
                }
            }
        }
    }
}

/// Columns per tile when `inner > 1`.
const COL_TILE: usize = 64;

/// Folds `f(acc, x)` over the `r` rows of columns `c0..c0+w` of block `x` (`r·inner`).
#[inline(always)]
fn fold_cols(
    x: &[f32],
    r: usize,
    inner: usize,
    c0: usize,
    acc: &mut [f32],
    f: impl Fn(f32, f32) -> f32,
) {
    let w = acc.len();
    for t in 0..r {
        let row = &x[t * inner + c0..][..w];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = f(*a, v);
        }
    }
}

multiversion! {
    /// Reduces columns `c0..c0+y.len()` of block `x` (`r x inner`) into `y`.
    fn cols(op: ReduceOp, x: &[f32], r: usize, inner: usize, c0: usize, y: &mut [f32]) -> () {
        let w = y.len();
        let (a0, _) = init(op);
        let mut acc = [a0; COL_TILE];
        let acc = &mut acc[..w];
        match op {
            ReduceOp::Sum | ReduceOp::Mean | ReduceOp::LogSum => fold_cols(x, r, inner, c0, acc, |a, v| a + v),
            ReduceOp::SumSquare | ReduceOp::L2 => fold_cols(x, r, inner, c0, acc, |a, v| a + v * v),
            ReduceOp::L1 => fold_cols(x, r, inner, c0, acc, |a, v| a + v.abs()),
            ReduceOp::Max => fold_cols(x, r, inner, c0, acc, max_nan),
            ReduceOp::Min => fold_cols(x, r, inner, c0, acc, min_nan),
            ReduceOp::Prod => fold_cols(x, r, inner, c0, acc, |a, v| a * v),
            ReduceOp::LogSumExp => {
                fold_cols(x, r, inner, c0, acc, max_nan);
                let mut s = [0.0f32; COL_TILE];
                let s = &mut s[..w];
                for t in 0..r {
                    let row = &x[t * inner + c0..][..w];
                    for j in 0..w {
                        s[j] += exp_fast(row[j] - acc[j]);
                    }
                }
                for (o, (&m, &b)) in y.iter_mut().zip(acc.iter().zip(s.iter())) {
                    *o = finish(op, (m, b), r);
                }
                return;
            }
        }
        for (o, &a) in y.iter_mut().zip(acc.iter()) {
            *o = finish(op, (a, 0.0), r);
        }
    }
}

/// The reduction (see [`ReduceParams`]); nothing is written on error.
pub fn reduce(p: &ReduceParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<(), i32> {
    let (nx, ny) = p.lens().ok_or(STATUS_PARAMS)?;
    if x.len() < nx || y.len() < ny {
        return Err(STATUS_PARAMS);
    }
    if ny == 0 {
        return Ok(());
    }
    let (r, inner, op) = (p.reduce, p.inner, p.op);
    let tasks = tasks_for(nx.max(ny), threads, PAR_MIN_ELEMS);
    if inner == 1 {
        let outer = p.outer;
        if tasks <= outer || r < 2 * PAR_MIN_ELEMS {
            // Whole rows per task.
            let tasks = tasks.min(outer);
            let bounds = even_bounds(outer, tasks);
            let parts = split_at_bounds(&mut y[..outer], &bounds);
            par_each(parts, &|t, ys: &mut [f32]| {
                for (i, o) in ys.iter_mut().enumerate() {
                    let row = bounds[t] + i;
                    *o = finish(op, row_partial(op, &x[row * r..(row + 1) * r]), r);
                }
            });
        } else {
            // Few long rows: every row split into `splits` pieces, partials combined.
            let splits = tasks.div_ceil(outer);
            let items = outer * splits;
            let mut partials = vec![(0.0f32, 0.0f32); items];
            let bounds = even_bounds(items, tasks);
            let parts = split_at_bounds(&mut partials, &bounds);
            par_each(parts, &|t, ps: &mut [(f32, f32)]| {
                for (i, slot) in ps.iter_mut().enumerate() {
                    let item = bounds[t] + i;
                    let (row, s) = (item / splits, item % splits);
                    let (lo, hi) = (r * s / splits, r * (s + 1) / splits);
                    *slot = row_partial(op, &x[row * r + lo..row * r + hi]);
                }
            });
            for (o, ps) in y[..outer].iter_mut().zip(partials.chunks_exact(splits)) {
                let acc = ps.iter().fold(init(op), |a, &q| combine(op, a, q));
                *o = finish(op, acc, r);
            }
        }
        return Ok(());
    }
    let tiles = inner.div_ceil(COL_TILE);
    let items = p.outer * tiles;
    let tasks = tasks.min(items);
    let bounds = even_bounds(items, tasks);
    let off = |item: usize| (item / tiles) * inner + ((item % tiles) * COL_TILE).min(inner);
    let eb: Vec<usize> = bounds.iter().map(|&b| off(b)).collect();
    let parts = split_at_bounds(&mut y[..ny], &eb);
    par_each(parts, &|t, ys: &mut [f32]| {
        for item in bounds[t]..bounds[t + 1] {
            let (o, tile) = (item / tiles, item % tiles);
            let c0 = tile * COL_TILE;
            let w = COL_TILE.min(inner - c0);
            let at = off(item) - eb[t];
            let block = &x[o * r * inner..(o + 1) * r * inner];
            cols(op, block, r, inner, c0, &mut ys[at..at + w]);
        }
    });
    Ok(())
}

/// C entry point of [`reduce`]; see [`ReduceParams`].
///
/// # Safety
/// `params` holds a [`ReduceParams`] encoding; `bufs` holds the two pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_reduce(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = ReduceParams::decode(unsafe { param_words(params, ReduceParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let (nx, ny) = p.lens().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller passes the documented buffers with these lengths, not overlapping.
        let (x, y) = unsafe {
            (
                slice_in::<f32>(buf(bufs, 0)?, nx)?,
                slice_out::<f32>(buf(bufs, 1)?, ny)?,
            )
        };
        reduce(&p, x, y, threads)
    })
}
