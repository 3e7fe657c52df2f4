//! Reductions and shape / data-movement ops, several of which read input values.

use super::ctx::{
    broadcast, check_dtype, dim_mul, dim_product, dim_sum, norm_axes, norm_axis, same_dtype, tt,
    unify, unknown_dims, Ctx, R, SV,
};
use crate::op::{ReduceAttrs, SplitAttrs};
use crate::{DType, Dim, Shape, TensorType};

/// Reduce*: axes are the optional second input.
pub(crate) fn reduce(a: &ReduceAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let r = x.rank();
    let axes: Vec<usize> = if cx.present(1) && cx.len_1d(1) != Some(0) {
        match cx.ints(1) {
            Some(ax) => norm_axes(&ax, r)?,
            None => {
                // Axes unknown: with keepdims the rank stays, extents of 1 stay 1.
                let shape = if a.keepdims {
                    Some(Shape(
                        x.0.iter()
                            .map(|d| {
                                if *d == Dim::Fixed(1) {
                                    d.clone()
                                } else {
                                    Dim::Unknown
                                }
                            })
                            .collect(),
                    ))
                } else {
                    match cx.len_1d(1) {
                        Some(k) if k <= r => Some(unknown_dims(r - k)),
                        _ => None,
                    }
                };
                return Ok(vec![tt(d, shape)]);
            }
        }
    } else if a.noop_with_empty_axes {
        return Ok(vec![cx.ty(0).clone()]);
    } else {
        (0..r).collect()
    };
    Ok(vec![tt(d, Some(reduce_shape(x, &axes, a.keepdims)))])
}

fn reduce_shape(x: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    let mut out = Vec::with_capacity(x.rank());
    for (i, dim) in x.0.iter().enumerate() {
        if axes.contains(&i) {
            if keepdims {
                out.push(Dim::Fixed(1));
            }
        } else {
            out.push(dim.clone());
        }
    }
    Shape(out)
}

/// ArgMax, ArgMin: int64 indices.
pub(crate) fn arg(axis: i64, keepdims: bool, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let shape = match cx.shape(0) {
        None => None,
        Some(x) => Some(reduce_shape(x, &[norm_axis(axis, x.rank())?], keepdims)),
    };
    Ok(vec![tt(Some(DType::I64), shape)])
}

/// Element count of `dims` as (fixed product, symbols), `None` if any extent is unknown.
fn factor(dims: &[Dim]) -> Option<(u128, Vec<String>)> {
    let mut p: u128 = 1;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(n) => p = p.saturating_mul(*n as u128),
            Dim::Sym(s) => syms.push(s.clone()),
            Dim::Unknown => return None,
        }
    }
    Some((p, syms))
}

/// `numel(input) / numel(known)`, cancelling symbols: the -1 of Reshape.
fn quotient(input: &[Dim], known: &[Dim]) -> R<Dim> {
    let (Some((np, mut ns)), Some((dp, ds))) = (factor(input), factor(known)) else {
        return Ok(Dim::Unknown);
    };
    for s in ds {
        match ns.iter().position(|x| *x == s) {
            Some(i) => {
                ns.remove(i);
            }
            None => return Ok(Dim::Unknown),
        }
    }
    if dp == 0 {
        return Ok(Dim::Unknown);
    }
    match ns.as_slice() {
        [] => {
            if np % dp != 0 {
                return Err(format!(
                    "Reshape cannot infer -1: {np} elements are not divisible by {dp}"
                ));
            }
            Ok(u64::try_from(np / dp)
                .map(Dim::Fixed)
                .unwrap_or(Dim::Unknown))
        }
        [s] if np == dp => Ok(Dim::Sym(s.clone())),
        _ => Ok(Dim::Unknown),
    }
}

/// Reshape: the target shape is the second input's value (0 copies, -1 infers).
pub(crate) fn reshape(allowzero: bool, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "shape")?;
    let d = cx.dtype(0);
    let Some(target) = cx.vals(1) else {
        return Ok(vec![tt(d, cx.len_1d(1).map(unknown_dims))]);
    };
    let x = cx.shape(0);
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    let mut has_zero = false;
    for (i, v) in target.iter().enumerate() {
        out.push(match v {
            SV::Int(0) if !allowzero => match x {
                Some(x) if i < x.rank() => x.0[i].clone(),
                Some(x) => {
                    return Err(format!(
                        "Reshape target {target:?} copies dim {i} of rank-{} input",
                        x.rank()
                    ))
                }
                None => Dim::Unknown,
            },
            SV::Int(0) => {
                has_zero = true;
                Dim::Fixed(0)
            }
            SV::Int(-1) => {
                if infer_at.is_some() {
                    return Err("Reshape target has more than one -1".into());
                }
                infer_at = Some(i);
                Dim::Unknown
            }
            SV::Int(n) if *n < -1 => return Err(format!("Reshape target has invalid extent {n}")),
            other => other.to_dim(),
        });
    }
    if has_zero && infer_at.is_some() {
        return Err("Reshape with allowzero cannot have both 0 and -1 in the target".into());
    }
    if let Some(x) = x {
        match infer_at {
            Some(i) => {
                let known: Vec<Dim> = out
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| d.clone())
                    .collect();
                out[i] = quotient(&x.0, &known)?;
            }
            None => {
                if let (Some(a), Some(b)) = (x.numel(), Shape(out.clone()).numel()) {
                    if a != b {
                        return Err(format!(
                            "Reshape cannot reshape {x} ({a} elements) into {} ({b} elements)",
                            Shape(out.clone())
                        ));
                    }
                }
            }
        }
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Transpose with `perm` (default: reversed).
pub(crate) fn transpose(perm: &Option<Vec<i64>>, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, perm.as_ref().map(|p| unknown_dims(p.len())))]);
    };
    let r = x.rank();
    let perm: Vec<i64> = perm
        .clone()
        .unwrap_or_else(|| (0..r as i64).rev().collect());
    if perm.len() != r {
        return Err(format!(
            "Transpose perm {perm:?} has {} entries for rank {r}",
            perm.len()
        ));
    }
    let mut seen = vec![false; r];
    let mut out = Vec::with_capacity(r);
    for &p in &perm {
        let Some(slot) = usize::try_from(p).ok().filter(|&p| p < r) else {
            return Err(format!(
                "Transpose perm {perm:?} is not a permutation of 0..{r}"
            ));
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(format!(
                "Transpose perm {perm:?} is not a permutation of 0..{r}"
            ));
        }
        out.push(x.0[slot].clone());
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Flatten to 2-D at `axis`.
pub(crate) fn flatten(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    let shape = match cx.shape(0) {
        None => unknown_dims(2),
        Some(x) => {
            let r = x.rank() as i64;
            if axis < -r || axis > r {
                return Err(format!("Flatten axis {axis} out of range for rank {r}"));
            }
            let a = if axis < 0 { axis + r } else { axis } as usize;
            Shape(vec![dim_product(&x.0[..a]), dim_product(&x.0[a..])])
        }
    };
    Ok(vec![tt(cx.dtype(0), Some(shape))])
}

/// Squeeze with optional axes input.
pub(crate) fn squeeze(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let r = x.rank();
    let axes: Vec<usize> = if cx.present(1) && cx.len_1d(1) != Some(0) {
        match cx.ints(1) {
            Some(ax) => norm_axes(&ax, r)?,
            None => {
                return Ok(vec![tt(
                    d,
                    cx.len_1d(1)
                        .filter(|&k| k <= r)
                        .map(|k| unknown_dims(r - k)),
                )])
            }
        }
    } else {
        if x.0.iter().any(|d| d.fixed().is_none()) {
            return Ok(vec![tt(d, None)]);
        }
        (0..r).filter(|&i| x.0[i] == Dim::Fixed(1)).collect()
    };
    for &a in &axes {
        if let Dim::Fixed(n) = x.0[a] {
            if n != 1 {
                return Err(format!("Squeeze axis {a} of {x} has extent {n}, not 1"));
            }
        }
    }
    let out =
        x.0.iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Unsqueeze with the axes input (relative to the output rank).
pub(crate) fn unsqueeze(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "axes")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let Some(ax) = cx.ints(1) else {
        return Ok(vec![tt(
            d,
            cx.len_1d(1).map(|k| unknown_dims(x.rank() + k)),
        )]);
    };
    let r = x.rank() + ax.len();
    let axes = norm_axes(&ax, r)?;
    let mut it = x.0.iter();
    let out = (0..r)
        .map(|i| {
            if axes.contains(&i) {
                Dim::Fixed(1)
            } else {
                it.next().cloned().unwrap_or(Dim::Unknown)
            }
        })
        .collect();
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Concat along `axis`.
pub(crate) fn concat(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    if cx.len() == 0 {
        return Err("Concat needs at least one input".into());
    }
    for i in 0..cx.len() {
        cx.require(i, "operand")?;
    }
    let d = same_dtype(cx, 0..cx.len(), "Concat")?;
    let known: Vec<&Shape> = (0..cx.len()).filter_map(|i| cx.shape(i)).collect();
    let Some(first) = known.first() else {
        return Ok(vec![tt(d, None)]);
    };
    let r = first.rank();
    if let Some(s) = known.iter().find(|s| s.rank() != r) {
        return Err(format!("Concat inputs differ in rank: {first} vs {s}"));
    }
    let a = norm_axis(axis, r)?;
    let mut out = first.0.clone();
    for s in &known[1..] {
        for (j, o) in out.iter_mut().enumerate() {
            if j == a {
                *o = dim_sum(o, &s.0[j]);
            } else {
                *o = unify(o, &s.0[j])
                    .ok_or_else(|| format!("Concat inputs differ in dim {j}: {first} vs {s}"))?;
            }
        }
    }
    if known.len() != cx.len() {
        out[a] = Dim::Unknown;
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Split into `num_outputs` pieces by the optional `split` input or evenly.
pub(crate) fn split(a: &SplitAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    let n = cx.num_outputs;
    if let Some(k) = a.num_outputs {
        if k < 1 {
            return Err(format!("num_outputs {k} must be >= 1"));
        }
        if k as usize != n {
            return Err(format!("num_outputs is {k} but the node has {n} outputs"));
        }
    }
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None); n]);
    };
    let ax = norm_axis(a.axis, x.rank())?;
    let total = &x.0[ax];
    let with = |e: Dim| {
        let mut v = x.0.clone();
        v[ax] = e;
        tt(d, Some(Shape(v)))
    };
    if cx.present(1) && cx.len_1d(1) != Some(0) {
        if a.num_outputs.is_some() {
            return Err("Split takes the split input or num_outputs, not both".into());
        }
        let Some(sizes) = cx.ints(1) else {
            return Ok(vec![with(Dim::Unknown); n]);
        };
        if sizes.len() != n {
            return Err(format!(
                "Split sizes {sizes:?} have {} entries for {n} outputs",
                sizes.len()
            ));
        }
        if let Some(s) = sizes.iter().find(|&&s| s < 0) {
            return Err(format!("Split size {s} is negative"));
        }
        if let Dim::Fixed(t) = total {
            let sum: i64 = sizes.iter().sum();
            if sum as u64 != *t {
                return Err(format!(
                    "Split sizes {sizes:?} sum to {sum}, but axis {ax} of {x} is {t}"
                ));
            }
        }
        return Ok(sizes.iter().map(|&s| with(Dim::Fixed(s as u64))).collect());
    }
    if n == 0 {
        return Err("Split needs at least one output".into());
    }
    match total {
        Dim::Fixed(t) => {
            let t = *t;
            let nn = n as u64;
            if a.num_outputs.is_some() {
                let chunk = t.div_ceil(nn);
                if chunk * (nn - 1) > t {
                    return Err(format!(
                        "cannot split extent {t} into {n} chunks of {chunk}"
                    ));
                }
                Ok((0..nn)
                    .map(|i| {
                        with(Dim::Fixed(if i + 1 < nn {
                            chunk
                        } else {
                            t - chunk * (nn - 1)
                        }))
                    })
                    .collect())
            } else {
                if t % nn != 0 {
                    return Err(format!("cannot split extent {t} evenly into {n} outputs"));
                }
                Ok(vec![with(Dim::Fixed(t / nn)); n])
            }
        }
        other if n == 1 => Ok(vec![with(other.clone())]),
        _ => Ok(vec![with(Dim::Unknown); n]),
    }
}

const HUGE: i64 = i32::MAX as i64;

/// Length of `start:end:step` on an extent `d` (ONNX clamping rules).
fn slice_len(d: i64, start: i64, end: i64, step: i64) -> i64 {
    let (d, mut s, mut e, st) = (d as i128, start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let n = if st > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        (e - s + st - 1).div_euclid(st)
    } else {
        if d == 0 {
            return 0;
        }
        s = s.clamp(0, d - 1);
        e = e.clamp(-1, d - 1);
        (s - e + (-st) - 1).div_euclid(-st)
    };
    n.max(0) as i64
}

/// Slice with starts, ends, optional axes and steps inputs.
pub(crate) fn slice(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "starts")?;
    cx.require(2, "ends")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let r = x.rank();
    let n = cx.len_1d(1).or(cx.len_1d(2));
    let axes: Option<Vec<usize>> = if cx.present(3) {
        cx.ints(3).map(|a| norm_axes(&a, r)).transpose()?
    } else {
        n.map(|n| (0..n.min(r)).collect())
    };
    let steps: Option<Vec<i64>> = if cx.present(4) {
        cx.ints(4)
    } else {
        n.map(|n| vec![1; n])
    };
    let (Some(axes), Some(starts), Some(ends), Some(steps)) = (axes, cx.vals(1), cx.vals(2), steps)
    else {
        let mut out = x.0.clone();
        match (cx.present(3), cx.ints(3)) {
            (true, Some(ax)) => {
                for a in norm_axes(&ax, r)? {
                    out[a] = Dim::Unknown;
                }
            }
            (false, _) if n.is_some() => {
                for o in out.iter_mut().take(n.unwrap_or(0)) {
                    *o = Dim::Unknown;
                }
            }
            _ => out = unknown_dims(r).0,
        }
        return Ok(vec![tt(d, Some(Shape(out)))]);
    };
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return Err(format!(
            "Slice starts/ends/axes/steps lengths differ: {}, {}, {}, {}",
            starts.len(),
            ends.len(),
            axes.len(),
            steps.len()
        ));
    }
    let mut out = x.0.clone();
    for (j, &a) in axes.iter().enumerate() {
        let step = steps[j];
        if step == 0 {
            return Err("Slice step cannot be 0".into());
        }
        let dim = &x.0[a];
        out[a] = match (dim, starts[j].int(), ends[j].int()) {
            (Dim::Fixed(e), Some(s), Some(en)) => {
                Dim::Fixed(slice_len(*e as i64, s, en, step) as u64)
            }
            (_, Some(0), _)
                if step == 1
                    && (ends[j].int().is_some_and(|e| e >= HUGE)
                        || ends[j] == SV::from_dim(dim)) =>
            {
                dim.clone()
            }
            (_, Some(s), Some(e)) if step == -1 && (s == -1 || s >= HUGE) && e <= -HUGE => {
                dim.clone()
            }
            _ => Dim::Unknown,
        };
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Gather along `axis`: `data[..axis] + indices + data[axis+1..]`.
pub(crate) fn gather(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "indices")?;
    check_dtype(
        cx.dtype(1),
        |d| matches!(d, DType::I32 | DType::I64),
        "Gather indices",
    )?;
    let d = cx.dtype(0);
    let (Some(x), Some(ind)) = (cx.shape(0), cx.shape(1)) else {
        return Ok(vec![tt(d, None)]);
    };
    if x.rank() == 0 {
        return Err("Gather data must have rank >= 1".into());
    }
    let a = norm_axis(axis, x.rank())?;
    if let (Dim::Fixed(n), Some(idx)) = (&x.0[a], cx.ints(1)) {
        let n = *n as i64;
        if let Some(bad) = idx.iter().find(|&&i| i < -n || i >= n) {
            return Err(format!(
                "Gather index {bad} out of range for axis {a} of {x}"
            ));
        }
    }
    let mut out = x.0[..a].to_vec();
    out.extend(ind.0.iter().cloned());
    out.extend(x.0[a + 1..].iter().cloned());
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// GatherElements: the output has the indices' shape.
pub(crate) fn gather_elements(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "indices")?;
    if let (Some(x), Some(i)) = (cx.shape(0), cx.shape(1)) {
        if x.rank() != i.rank() {
            return Err(format!(
                "GatherElements data {x} and indices {i} differ in rank"
            ));
        }
        norm_axis(axis, x.rank())?;
    }
    Ok(vec![tt(cx.dtype(0), cx.shape(1).cloned())])
}

/// GatherND: `indices[..-1] + data[batch_dims + m..]`.
pub(crate) fn gather_nd(batch_dims: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "indices")?;
    let d = cx.dtype(0);
    let (Some(x), Some(ind)) = (cx.shape(0), cx.shape(1)) else {
        return Ok(vec![tt(d, None)]);
    };
    let b =
        usize::try_from(batch_dims).map_err(|_| format!("batch_dims {batch_dims} is negative"))?;
    let q = ind.rank();
    if q < 1 || x.rank() < 1 || b >= q.min(x.rank()) {
        return Err(format!(
            "GatherND: batch_dims {b} too large for data {x} and indices {ind}"
        ));
    }
    let Some(m) = ind.0[q - 1].fixed() else {
        return Ok(vec![tt(d, None)]);
    };
    let m = m as usize;
    if b.saturating_add(m) > x.rank() {
        return Err(format!(
            "GatherND: indices {ind} index {m} dims past batch {b} of data {x}"
        ));
    }
    let mut out = ind.0[..q - 1].to_vec();
    out.extend(x.0[b + m..].iter().cloned());
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// ScatterND, ScatterElements: the output is the data.
pub(crate) fn scatter(cx: &Ctx, what: &str) -> R<Vec<TensorType>> {
    for i in 0..3 {
        cx.require(i, "operand")?;
    }
    same_dtype(cx, [0, 2], what)?;
    Ok(vec![cx.ty(0).clone()])
}

fn shape_from_vals(v: &[SV]) -> R<Shape> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        if let Some(n) = x.int() {
            if n < 0 {
                return Err(format!("shape value has negative extent {n}"));
            }
        }
        out.push(x.to_dim());
    }
    Ok(Shape(out))
}

/// Expand: broadcast the input to the shape given by the second input's value.
pub(crate) fn expand(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    cx.require(1, "shape")?;
    let d = cx.dtype(0);
    let target = match cx.vals(1) {
        Some(v) => shape_from_vals(v)?,
        None => match cx.len_1d(1) {
            Some(k) => unknown_dims(k),
            None => return Ok(vec![tt(d, None)]),
        },
    };
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    Ok(vec![tt(
        d,
        Some(broadcast(x, &target).map_err(|e| format!("Expand: {e}"))?),
    )])
}

/// Tile by the repeats input.
pub(crate) fn tile(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    cx.require(1, "repeats")?;
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let Some(reps) = cx.vals(1) else {
        return Ok(vec![tt(d, Some(unknown_dims(x.rank())))]);
    };
    if reps.len() != x.rank() {
        return Err(format!(
            "Tile repeats has {} entries for rank {}",
            reps.len(),
            x.rank()
        ));
    }
    let reps = shape_from_vals(reps).map_err(|e| format!("Tile repeats: {e}"))?;
    Ok(vec![tt(
        d,
        Some(Shape(
            x.0.iter()
                .zip(&reps.0)
                .map(|(a, b)| dim_mul(a, b))
                .collect(),
        )),
    )])
}

/// The `[start, end)` range of dims that Shape returns, for rank `r`.
pub(crate) fn shape_range(start: i64, end: Option<i64>, r: usize) -> (usize, usize) {
    let r = r as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = clamp(start);
    let e = clamp(end.unwrap_or(r));
    (s, e.max(s))
}

/// Shape: a 1-D int64 tensor.
pub(crate) fn shape(start: i64, end: Option<i64>, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let n = match cx.rank(0) {
        Some(r) => {
            let (s, e) = shape_range(start, end, r);
            Dim::Fixed((e - s) as u64)
        }
        None => Dim::Unknown,
    };
    Ok(vec![TensorType::new(DType::I64, Shape(vec![n]))])
}

/// Size: an int64 scalar.
pub(crate) fn size(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    Ok(vec![TensorType::new(DType::I64, Shape(vec![]))])
}

/// ConstantOfShape: shape from the input's value, dtype from the `value` attribute.
pub(crate) fn constant_of_shape(value: &Option<crate::Tensor>, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    let d = match value {
        Some(t) => {
            if t.numel() != 1 {
                return Err(format!(
                    "ConstantOfShape value must have one element, has {}",
                    t.numel()
                ));
            }
            t.dtype()
        }
        None => DType::F32,
    };
    check_dtype(cx.dtype(0), |d| d == DType::I64, "ConstantOfShape input")?;
    let shape = match cx.vals(0) {
        Some(v) => Some(shape_from_vals(v)?),
        None => cx.len_1d(0).map(unknown_dims),
    };
    Ok(vec![tt(Some(d), shape)])
}

/// Range: a 1-D tensor of `max(ceil((limit - start) / delta), 0)` elements.
pub(crate) fn range(cx: &Ctx) -> R<Vec<TensorType>> {
    for i in 0..3 {
        cx.require(i, "operand")?;
        if let Some(s) = cx.shape(i) {
            if s.numel().is_some_and(|n| n != 1) {
                return Err(format!("Range input {i} must be a scalar, got {s}"));
            }
        }
    }
    let d = same_dtype(cx, 0..3, "Range")?;
    let n = match (cx.ints(0), cx.ints(1), cx.ints(2)) {
        (Some(s), Some(l), Some(dl)) if s.len() == 1 && l.len() == 1 && dl.len() == 1 => {
            let (s, l, dl) = (s[0] as i128, l[0] as i128, dl[0] as i128);
            if dl == 0 {
                return Err("Range delta is 0".into());
            }
            let q = (l - s) / dl
                + if (l - s) % dl != 0 && ((l - s) > 0) == (dl > 0) {
                    1
                } else {
                    0
                };
            Dim::Fixed(q.max(0) as u64)
        }
        _ => match (cx.floats(0), cx.floats(1), cx.floats(2)) {
            (Some(s), Some(l), Some(dl)) if s.len() == 1 && l.len() == 1 && dl.len() == 1 => {
                if dl[0] == 0.0 {
                    return Err("Range delta is 0".into());
                }
                Dim::Fixed(((l[0] - s[0]) / dl[0]).ceil().max(0.0) as u64)
            }
            _ => Dim::Unknown,
        },
    };
    Ok(vec![tt(d, Some(Shape(vec![n])))])
}

/// NonZero: `[rank, ?]` int64.
pub(crate) fn nonzero(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    let r = cx
        .rank(0)
        .map(|r| Dim::Fixed(r as u64))
        .unwrap_or(Dim::Unknown);
    Ok(vec![TensorType::new(
        DType::I64,
        Shape(vec![r, Dim::Unknown]),
    )])
}

/// TopK: values and int64 indices with `k` along `axis`.
pub(crate) fn topk(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    cx.require(1, "K")?;
    let d = cx.dtype(0);
    let shape = match cx.shape(0) {
        None => None,
        Some(x) => {
            let a = norm_axis(axis, x.rank())?;
            let mut out = x.0.clone();
            out[a] = match cx.vals(1) {
                Some([k]) => match k.int() {
                    Some(k) if k < 0 => return Err(format!("TopK k {k} is negative")),
                    Some(k) => {
                        if let Dim::Fixed(n) = x.0[a] {
                            if k as u64 > n {
                                return Err(format!("TopK k {k} exceeds axis extent {n} of {x}"));
                            }
                        }
                        Dim::Fixed(k as u64)
                    }
                    None => k.to_dim(),
                },
                Some(v) => return Err(format!("TopK K must have one element, has {}", v.len())),
                None => Dim::Unknown,
            };
            Some(Shape(out))
        }
    };
    Ok(vec![tt(d, shape.clone()), tt(Some(DType::I64), shape)])
}

/// OneHot: `indices` with a new `depth` dim at `axis`, dtype of `values`.
pub(crate) fn one_hot(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    for i in 0..3 {
        cx.require(i, "operand")?;
    }
    if let Some(n) = cx.len_1d(2) {
        if n != 2 {
            return Err(format!("OneHot values must have 2 elements, has {n}"));
        }
    }
    let d = cx.dtype(2);
    let Some(ind) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let a = norm_axis(axis, ind.rank() + 1)?;
    let depth = match (cx.ints(1), cx.floats(1)) {
        (Some(v), _) if v.len() == 1 => Some(v[0]),
        (_, Some(v)) if v.len() == 1 => Some(v[0] as i64),
        _ => None,
    };
    let dd = match depth {
        Some(v) if v < 1 => return Err(format!("OneHot depth {v} must be positive")),
        Some(v) => Dim::Fixed(v as u64),
        None => Dim::Unknown,
    };
    let mut out = ind.0.clone();
    out.insert(a, dd);
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Compress: selected slices along `axis`, or a flat selection.
pub(crate) fn compress(axis: Option<i64>, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    cx.require(1, "condition")?;
    check_dtype(cx.dtype(1), |d| d == DType::Bool, "Compress condition")?;
    let d = cx.dtype(0);
    let count = |limit: Option<u64>| -> Dim {
        match (cx.ints(1), limit) {
            (Some(c), Some(l)) => {
                Dim::Fixed(c.iter().take(l as usize).filter(|&&v| v != 0).count() as u64)
            }
            _ => Dim::Unknown,
        }
    };
    match axis {
        None => Ok(vec![tt(
            d,
            Some(Shape(vec![count(
                cx.shape(0).and_then(|s| s.numel()).map(|n| n as u64),
            )])),
        )]),
        Some(ax) => {
            let Some(x) = cx.shape(0) else {
                return Ok(vec![tt(d, None)]);
            };
            let a = norm_axis(ax, x.rank())?;
            let mut out = x.0.clone();
            out[a] = count(x.0[a].fixed());
            Ok(vec![tt(d, Some(Shape(out)))])
        }
    }
}

/// EyeLike: 2-D, dtype from the attribute or the input.
pub(crate) fn eye_like(dtype: Option<DType>, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    if let Some(s) = cx.shape(0) {
        if s.rank() != 2 {
            return Err(format!("EyeLike input {s} must be 2-D"));
        }
    }
    Ok(vec![tt(
        dtype.or(cx.dtype(0)),
        cx.shape(0).cloned().or(Some(unknown_dims(2))),
    )])
}

/// NonMaxSuppression: `[?, 3]` int64 selected indices.
pub(crate) fn nms(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "boxes")?;
    cx.require(1, "scores")?;
    Ok(vec![TensorType::new(
        DType::I64,
        Shape(vec![Dim::Unknown, Dim::Fixed(3)]),
    )])
}

/// CumSum, Trilu, ReverseSequence: the input's type.
pub(crate) fn same(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    Ok(vec![cx.ty(0).clone()])
}
