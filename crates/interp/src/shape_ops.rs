//! Shape and data-movement ops: Reshape, Transpose, Slice, Gather*, Scatter*, Pad, Tile,
//! Expand, Concat, Split, TopK, NonZero, Range, OneHot, Trilu, CumSum, Compress,
//! ReverseSequence, EyeLike, DepthToSpace/SpaceToDepth, NonMaxSuppression.

use crate::dispatch::Args;
use crate::num::{broadcast_shapes, bview, contiguous, from_vec, norm_axis, strides_of, Num};
use crate::Value;
use ndarray::{ArrayD, Axis, IxDyn};
use pare_ir::{DType, Op, Tensor};

/// Output shape of Reshape.
pub(crate) fn reshape_target(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.is_some() {
                    return Err("shape has more than one -1".into());
                }
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                format!(
                    "shape {spec:?} copies dimension {i}, but the input {input:?} has rank {}",
                    input.len()
                )
            })?),
            d if d < 0 => return Err(format!("invalid dimension {d} in shape {spec:?}")),
            d => out.push(d as usize),
        }
    }
    if let Some(i) = infer {
        let known: usize = out
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != i)
            .map(|(_, &d)| d)
            .product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        ));
    }
    Ok(out)
}

/// Reshape.
pub(crate) fn reshape(x: &Value, shape: &Value, allowzero: bool) -> Result<Value, String> {
    let s = reshape_target(x.shape(), &shape.to_i64_vec()?, allowzero)?;
    x.reshape(&s)
}

fn flatten_shape(shape: &[usize], axis: i64) -> Result<Vec<usize>, String> {
    let r = shape.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = a as usize;
    Ok(vec![
        shape[..a].iter().product(),
        shape[a..].iter().product(),
    ])
}

/// Flatten.
pub(crate) fn flatten(x: &Value, axis: i64) -> Result<Value, String> {
    x.reshape(&flatten_shape(x.shape(), axis)?)
}

fn squeeze_shape(shape: &[usize], axes: Option<&Value>) -> Result<Vec<usize>, String> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(ax) => {
            let mut drop = vec![false; shape.len()];
            for a in ax.to_i64_vec()? {
                let a = norm_axis(a, shape.len())?;
                if shape[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of extent {}", shape[a]));
                }
                drop[a] = true;
            }
            Ok(shape
                .iter()
                .zip(&drop)
                .filter(|(_, &d)| !d)
                .map(|(&s, _)| s)
                .collect())
        }
    }
}

fn unsqueeze_shape(shape: &[usize], axes: &Value) -> Result<Vec<usize>, String> {
    let axes = axes.to_i64_vec()?;
    let r = shape.len() + axes.len();
    let mut ins = vec![false; r];
    for a in axes {
        let a = norm_axis(a, r)?;
        if ins[a] {
            return Err(format!("axis {a} repeated"));
        }
        ins[a] = true;
    }
    let mut it = shape.iter();
    Ok(ins
        .iter()
        .map(|&i| if i { 1 } else { *it.next().unwrap_or(&1) })
        .collect())
}

/// Squeeze.
pub(crate) fn squeeze(x: &Value, axes: Option<&Value>) -> Result<Value, String> {
    x.reshape(&squeeze_shape(x.shape(), axes)?)
}

/// Unsqueeze.
pub(crate) fn unsqueeze(x: &Value, axes: &Value) -> Result<Value, String> {
    x.reshape(&unsqueeze_shape(x.shape(), axes)?)
}

/// Identity/Reshape/Squeeze/Unsqueeze/Flatten/Dropout taking ownership of the data operand.
pub(crate) fn eval_view_owned(
    op: &Op,
    x: Value,
    rest: &[Option<&Value>],
) -> Result<Vec<Value>, String> {
    let arg = |i: usize| rest.get(i).copied().flatten();
    let shape = match op {
        Op::Identity => return Ok(vec![x]),
        Op::Reshape(r) => {
            let s = arg(0).ok_or("missing required input 1")?;
            reshape_target(x.shape(), &s.to_i64_vec()?, r.allowzero)?
        }
        Op::Squeeze => squeeze_shape(x.shape(), arg(0))?,
        Op::Unsqueeze => unsqueeze_shape(x.shape(), arg(0).ok_or("missing required input 1")?)?,
        Op::Flatten(f) => flatten_shape(x.shape(), f.axis)?,
        Op::Dropout(_) => {
            let training = match arg(1) {
                Some(t) => t.scalar_i64()? != 0,
                None => false,
            };
            if training {
                return crate::elementwise::dropout(&x, arg(0), arg(1), 2);
            }
            let mask = Value::Bool(ArrayD::from_elem(IxDyn(x.shape()), true));
            return Ok(vec![x, mask]);
        }
        o => return Err(format!("{} is not a view op", o.name())),
    };
    Ok(vec![x.into_reshape(&shape)?])
}

/// Transpose.
pub(crate) fn transpose(x: &Value, perm: Option<&[i64]>) -> Result<Value, String> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
        return Err(format!("perm {perm:?} is not a permutation of rank {r}"));
    }
    Ok(map_array!(x, a => transpose_arr(a, &perm)))
}

/// Transposed copy in standard layout.
pub(crate) fn transpose_arr<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    a.view()
        .permuted_axes(IxDyn(perm))
        .as_standard_layout()
        .into_owned()
}

/// Concat.
pub(crate) fn concat(xs: &[&Value], axis: i64) -> Result<Value, String> {
    let first = xs.first().ok_or("Concat needs at least one input")?;
    let ax = norm_axis(axis, first.rank())?;
    Ok(map_many!(xs, arrs => {
        let views: Vec<_> = arrs.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(ax), &views).map_err(|e| format!("cannot concatenate: {e}"))?
    }))
}

/// Split.
pub(crate) fn split(
    x: &Value,
    sizes: Option<&Value>,
    axis: i64,
    num_outputs: Option<i64>,
    nout: usize,
) -> Result<Vec<Value>, String> {
    let ax = norm_axis(axis, x.rank())?;
    let dim = x.shape()[ax];
    let sizes: Vec<usize> = match sizes {
        Some(s) if !s.is_empty() || num_outputs.is_none() && nout == 0 => {
            let v = s.to_i64_vec()?;
            if v.iter().any(|&d| d < 0) || v.iter().sum::<i64>() != dim as i64 {
                return Err(format!("split sizes {v:?} do not sum to {dim}"));
            }
            v.into_iter().map(|d| d as usize).collect()
        }
        _ => {
            let n = num_outputs.map(|n| n as usize).unwrap_or(nout).max(1);
            let chunk = dim.div_ceil(n);
            let mut v = Vec::with_capacity(n);
            let mut left = dim;
            for _ in 0..n {
                let c = chunk.min(left);
                v.push(c);
                left -= c;
            }
            v
        }
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for s in sizes {
        out.push(map_array!(x, a => a.slice_axis(Axis(ax), ndarray::Slice::from(start..start + s)).to_owned()));
        start += s;
    }
    Ok(out)
}

/// Output extents from per-axis index maps (`None` entries read `fill`).
pub(crate) fn remap<T: Clone>(
    src: &[T],
    src_shape: &[usize],
    maps: &[Vec<Option<usize>>],
    fill: &T,
) -> Vec<T> {
    let rank = maps.len();
    let out_shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    if rank == 0 {
        out.push(src[0].clone());
        return out;
    }
    let strides = strides_of(src_shape);
    let offs: Vec<Vec<Option<usize>>> = maps
        .iter()
        .zip(&strides)
        .map(|(m, &s)| m.iter().map(|o| o.map(|o| o * s)).collect())
        .collect();
    let inner = &offs[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    loop {
        let mut base = Some(0usize);
        for (ax, &i) in idx.iter().enumerate() {
            base = match (base, offs[ax][i]) {
                (Some(b), Some(o)) => Some(b + o),
                _ => None,
            };
        }
        match base {
            Some(b) => {
                for o in inner {
                    out.push(match o {
                        Some(o) => src[b + o].clone(),
                        None => fill.clone(),
                    })
                }
            }
            None => out.extend(std::iter::repeat_n(fill.clone(), inner.len())),
        }
        let mut ax = rank - 1;
        loop {
            if ax == 0 {
                return out;
            }
            ax -= 1;
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

fn remap_value(
    x: &Value,
    maps: &[Vec<Option<usize>>],
    fill: Option<&Value>,
) -> Result<Value, String> {
    let shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    let fill = fill
        .cloned()
        .unwrap_or_else(|| Value::zeros(x.dtype(), &[]));
    let pair = [x, &fill];
    Ok(map_many!(&pair, xs => {
        let src = contiguous(xs[0]);
        let f = xs[1].iter().next().cloned().ok_or("empty fill value")?;
        from_vec(&shape, remap(&src, xs[0].shape(), maps, &f))?
    }))
}

/// Slice(data, starts, ends, axes?, steps?).
pub(crate) fn slice(
    x: &Value,
    starts: &Value,
    ends: &Value,
    axes: Option<&Value>,
    steps: Option<&Value>,
) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    let r = shape.len();
    let starts = starts.to_i64_vec()?;
    let ends = ends.to_i64_vec()?;
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .to_i64_vec()?
            .into_iter()
            .map(|a| norm_axis(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = match steps {
        Some(s) => s.to_i64_vec()?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    let mut info: Vec<(usize, usize, isize)> = shape.iter().map(|&d| (0, d, 1)).collect(); // start, count, step
    for k in 0..starts.len() {
        let ax = axes[k];
        let d = shape[ax] as i64;
        let step = steps[k];
        if step == 0 {
            return Err("slice step cannot be 0".into());
        }
        let fix = |v: i64| if v < 0 { v + d } else { v };
        let (s, e) = (fix(starts[k]), fix(ends[k]));
        let (s, e) = if step > 0 {
            (s.clamp(0, d), e.clamp(0, d))
        } else {
            (s.clamp(-1, d - 1), e.clamp(-1, d - 1))
        };
        let count = if step > 0 {
            if e > s {
                (e - s + step - 1) / step
            } else {
                0
            }
        } else if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        };
        info[ax] = (s.max(0) as usize, count as usize, step as isize);
    }
    // Fast path: unit steps as an ndarray slice.
    Ok(map_array!(x, a => {
        let mut v = a.view();
        for (ax, &(s, c, st)) in info.iter().enumerate() {
            let sl = if c == 0 {
                ndarray::Slice::new(0, Some(0), 1)
            } else if st > 0 {
                ndarray::Slice::new(s as isize, Some(s as isize + (c as isize - 1) * st + 1), st)
            } else {
                let lo = s as isize + (c as isize - 1) * st;
                ndarray::Slice::new(lo, Some(s as isize + 1), st)
            };
            v.slice_axis_inplace(Axis(ax), sl);
        }
        v.to_owned()
    }))
}

fn index(i: i64, n: usize) -> Result<usize, String> {
    let j = if i < 0 { i + n as i64 } else { i };
    if j < 0 || j >= n as i64 {
        return Err(format!("index {i} is out of bounds for extent {n}"));
    }
    Ok(j as usize)
}

/// Gather.
pub(crate) fn gather(x: &Value, indices: &Value, axis: i64) -> Result<Value, String> {
    let ax = norm_axis(axis, x.rank())?;
    let shape = x.shape();
    let n = shape[ax];
    let idx: Vec<usize> = indices
        .to_i64_vec()?
        .into_iter()
        .map(|i| index(i, n))
        .collect::<Result<_, _>>()?;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let mut out_shape = shape[..ax].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&shape[ax + 1..]);
    Ok(map_array!(x, a => {
        let src = contiguous(a);
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let b = (o * n + i) * inner;
                out.extend_from_slice(&src[b..b + inner]);
            }
        }
        from_vec(&out_shape, out)?
    }))
}

/// Gather straight from a constant tensor's bytes (byte-sized dtypes), without converting
/// the whole tensor.
pub(crate) fn gather_tensor(t: &Tensor, indices: &Value, axis: i64) -> Result<Value, String> {
    let shape = t.shape();
    let ax = norm_axis(axis, shape.len())?;
    let n = shape[ax];
    let idx: Vec<usize> = indices
        .to_i64_vec()?
        .into_iter()
        .map(|i| index(i, n))
        .collect::<Result<_, _>>()?;
    let esz = t.dtype().bits() / 8;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product::<usize>() * esz;
    let raw = t.raw();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            let b = (o * n + i) * inner;
            out.extend_from_slice(&raw[b..b + inner]);
        }
    }
    let mut out_shape = shape[..ax].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&shape[ax + 1..]);
    let g = Tensor::from_raw(t.dtype(), out_shape, bytes::Bytes::from(out))
        .map_err(|e| e.to_string())?;
    Value::from_tensor(&g)
}

/// GatherElements.
pub(crate) fn gather_elements(x: &Value, indices: &Value, axis: i64) -> Result<Value, String> {
    let r = x.rank();
    let ax = norm_axis(axis, r)?;
    if indices.rank() != r {
        return Err("indices must have the rank of the data".into());
    }
    let shape = x.shape().to_vec();
    let ishape = indices.shape().to_vec();
    let idx = indices.to_i64_vec()?;
    let xs = strides_of(&shape);
    let is = strides_of(&ishape);
    let mut offs = Vec::with_capacity(idx.len());
    for (lin, &i) in idx.iter().enumerate() {
        let mut off = 0;
        for d in 0..r {
            let c = (lin / is[d]) % ishape[d].max(1);
            let c = if d == ax { index(i, shape[d])? } else { c };
            if c >= shape[d] {
                return Err(format!(
                    "indices shape {ishape:?} exceeds data shape {shape:?}"
                ));
            }
            off += c * xs[d];
        }
        offs.push(off);
    }
    Ok(map_array!(x, a => {
        let src = contiguous(a);
        from_vec(&ishape, offs.iter().map(|&o| src[o].clone()).collect())?
    }))
}

/// GatherND.
pub(crate) fn gather_nd(x: &Value, indices: &Value, batch_dims: i64) -> Result<Value, String> {
    let b = batch_dims as usize;
    let shape = x.shape().to_vec();
    let ishape = indices.shape().to_vec();
    let q = ishape.len();
    if q == 0 || b >= q || b > shape.len() {
        return Err("invalid indices rank or batch_dims".into());
    }
    let k = ishape[q - 1];
    if b + k > shape.len() {
        return Err(format!(
            "index tuples of length {k} exceed data rank {}",
            shape.len()
        ));
    }
    let idx = indices.to_i64_vec()?;
    let batch: usize = shape[..b].iter().product();
    let slice_shape = &shape[b + k..];
    let slice: usize = slice_shape.iter().product();
    let mut out_shape = ishape[..q - 1].to_vec();
    out_shape.extend_from_slice(slice_shape);
    let per_batch_tuples: usize = ishape[b..q - 1].iter().product();
    let xs = strides_of(&shape);
    let batch_stride: usize = shape[b..].iter().product();
    let mut starts = Vec::with_capacity(batch * per_batch_tuples);
    for bi in 0..batch {
        for t in 0..per_batch_tuples {
            let tup = &idx[(bi * per_batch_tuples + t) * k..(bi * per_batch_tuples + t + 1) * k];
            let mut off = bi * batch_stride;
            for (j, &i) in tup.iter().enumerate() {
                off += index(i, shape[b + j])? * xs[b + j];
            }
            starts.push(off);
        }
    }
    Ok(map_array!(x, a => {
        let src = contiguous(a);
        let mut out = Vec::with_capacity(starts.len() * slice);
        for &s in &starts {
            out.extend_from_slice(&src[s..s + slice]);
        }
        from_vec(&out_shape, out)?
    }))
}

/// How scattered updates combine with existing elements.
#[derive(Clone, Copy)]
enum Red {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(s: &str) -> Result<Red, String> {
    Ok(match s {
        "none" => Red::None,
        "add" => Red::Add,
        "mul" => Red::Mul,
        "max" => Red::Max,
        "min" => Red::Min,
        o => return Err(format!("unknown reduction '{o}'")),
    })
}

fn combine<T: Num>(r: Red, old: T, new: T) -> T {
    match r {
        Red::None => new,
        Red::Add => old.add(new),
        Red::Mul => old.mul(new),
        Red::Max => {
            if new > old {
                new
            } else {
                old
            }
        }
        Red::Min => {
            if new < old {
                new
            } else {
                old
            }
        }
    }
}

/// Scatter `updates[j]` into element offsets `offs[j]` (blocks of `block` elements).
fn scatter_value(
    data: &Value,
    updates: &Value,
    offs: &[usize],
    block: usize,
    red: Red,
) -> Result<Value, String> {
    if let Red::None = red {
        let pair = [data, updates];
        return Ok(map_many!(&pair, xs => {
            let mut out: Vec<_> = contiguous(xs[0]).into_owned();
            let up = contiguous(xs[1]);
            for (j, &o) in offs.iter().enumerate() {
                out[o..o + block].clone_from_slice(&up[j * block..(j + 1) * block]);
            }
            from_vec(xs[0].shape(), out)?
        }));
    }
    fn red_num<T: Num>(
        d: &ArrayD<T>,
        u: &ArrayD<T>,
        offs: &[usize],
        block: usize,
        red: Red,
    ) -> Result<ArrayD<T>, String> {
        let mut out: Vec<T> = contiguous(d).into_owned();
        let up = contiguous(u);
        for (j, &o) in offs.iter().enumerate() {
            for t in 0..block {
                out[o + t] = combine(red, out[o + t], up[j * block + t]);
            }
        }
        from_vec(d.shape(), out)
    }
    macro_rules! arms {
        ($($v:ident),*) => {
            match (data, updates) {
                $((Value::$v(d), Value::$v(u)) => Ok(Value::$v(red_num(d, u, offs, block, red)?)),)*
                (Value::Bool(d), Value::Bool(u)) => {
                    let mut out: Vec<bool> = contiguous(d).into_owned();
                    let up = contiguous(u);
                    for (j, &o) in offs.iter().enumerate() {
                        for t in 0..block {
                            let (a, b) = (out[o + t], up[j * block + t]);
                            out[o + t] = match red {
                                Red::Add | Red::Max => a || b,
                                _ => a && b,
                            };
                        }
                    }
                    Ok(Value::Bool(from_vec(d.shape(), out)?))
                }
                (d, u) => Err(format!("cannot reduce updates of type {} into {}", u.dtype(), d.dtype())),
            }
        };
    }
    arms!(F32, F64, F16, BF16, I8, U8, I16, U16, I32, U32, I64, U64)
}

/// ScatterND.
pub(crate) fn scatter_nd(
    data: &Value,
    indices: &Value,
    updates: &Value,
    red: &str,
) -> Result<Value, String> {
    let red = reduction(red)?;
    let shape = data.shape().to_vec();
    let ishape = indices.shape();
    let q = ishape.len();
    if q == 0 {
        return Err("indices must have rank >= 1".into());
    }
    let k = ishape[q - 1];
    if k > shape.len() {
        return Err(format!(
            "index tuples of length {k} exceed data rank {}",
            shape.len()
        ));
    }
    let block: usize = shape[k..].iter().product();
    let n: usize = ishape[..q - 1].iter().product();
    if updates.len() != n * block {
        return Err(format!(
            "updates shape {:?} does not match",
            updates.shape()
        ));
    }
    let idx = indices.to_i64_vec()?;
    let xs = strides_of(&shape);
    let mut offs = Vec::with_capacity(n);
    for t in 0..n {
        let mut off = 0;
        for j in 0..k {
            off += index(idx[t * k + j], shape[j])? * xs[j];
        }
        offs.push(off);
    }
    scatter_value(data, updates, &offs, block, red)
}

/// ScatterElements.
pub(crate) fn scatter_elements(
    data: &Value,
    indices: &Value,
    updates: &Value,
    axis: i64,
    red: &str,
) -> Result<Value, String> {
    let red = reduction(red)?;
    let shape = data.shape().to_vec();
    let r = shape.len();
    let ax = norm_axis(axis, r)?;
    let ishape = indices.shape().to_vec();
    if ishape.len() != r || updates.shape() != ishape.as_slice() {
        return Err("indices and updates must have the same shape and the data's rank".into());
    }
    let idx = indices.to_i64_vec()?;
    let xs = strides_of(&shape);
    let is = strides_of(&ishape);
    let mut offs = Vec::with_capacity(idx.len());
    for (lin, &i) in idx.iter().enumerate() {
        let mut off = 0;
        for d in 0..r {
            let c = if d == ax {
                index(i, shape[d])?
            } else {
                (lin / is[d]) % ishape[d]
            };
            if c >= shape[d] {
                return Err("indices exceed the data shape".into());
            }
            off += c * xs[d];
        }
        offs.push(off);
    }
    scatter_value(data, updates, &offs, 1, red)
}

/// Expand (multidirectional broadcast to `shape`).
pub(crate) fn expand(x: &Value, shape: &Value) -> Result<Value, String> {
    let s: Vec<usize> = shape
        .to_i64_vec()?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let out = broadcast_shapes(x.shape(), &s)?;
    Ok(map_array!(x, a => bview(a, &out)?.to_owned()))
}

/// Tile.
pub(crate) fn tile(x: &Value, repeats: &Value) -> Result<Value, String> {
    let reps = repeats.to_i64_vec()?;
    let shape = x.shape().to_vec();
    if reps.len() != shape.len() {
        return Err(format!(
            "repeats {reps:?} must have one entry per dimension of {shape:?}"
        ));
    }
    let maps: Vec<Vec<Option<usize>>> = shape
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| {
            (0..d * r.max(0) as usize)
                .map(|i| Some(i % d.max(1)))
                .collect()
        })
        .collect();
    remap_value(x, &maps, None)
}

/// Shape(start, end).
pub(crate) fn shape(x: &Value, start: i64, end: Option<i64>) -> Result<Value, String> {
    let r = x.rank() as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = fix(start);
    let e = fix(end.unwrap_or(r));
    let dims: Vec<i64> = if e > s {
        x.shape()[s..e].iter().map(|&d| d as i64).collect()
    } else {
        vec![]
    };
    Ok(Value::from_i64s(dims))
}

/// ConstantOfShape.
pub(crate) fn constant_of_shape(shape: &Value, value: Option<&Tensor>) -> Result<Value, String> {
    let s: Vec<usize> = shape
        .to_i64_vec()?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let v = match value {
        Some(t) => Value::from_tensor(t)?,
        None => Value::F32(ndarray::arr1(&[0.0f32]).into_dyn()),
    };
    if v.len() != 1 {
        return Err("value must have exactly one element".into());
    }
    Ok(map_array!(&v, a => {
        let e = a.iter().next().cloned().expect("one element");
        ArrayD::from_elem(IxDyn(&s), e)
    }))
}

/// Range(start, limit, delta).
pub(crate) fn range(start: &Value, limit: &Value, delta: &Value) -> Result<Value, String> {
    let vals = [start, limit, delta];
    Ok(map_many!(&vals, xs => {
        let one = |a: &ArrayD<_>| a.iter().next().cloned().ok_or_else(|| "Range operands must be scalars".to_string());
        let (s, l, d) = (one(xs[0])?, one(xs[1])?, one(xs[2])?);
        range_impl(s, l, d)?
    }))
}

trait RangeElem: Sized {
    fn range(s: Self, l: Self, d: Self) -> Result<Vec<Self>, String>;
}
fn range_impl<T: RangeElem>(s: T, l: T, d: T) -> Result<ArrayD<T>, String> {
    let v = T::range(s, l, d)?;
    from_vec(&[v.len()], v)
}
macro_rules! range_num {
    ($($t:ty),*) => {$(
        impl RangeElem for $t {
            fn range(s: Self, l: Self, d: Self) -> Result<Vec<Self>, String> {
                let (sf, lf, df) = (Num::to_f64(s), Num::to_f64(l), Num::to_f64(d));
                if df == 0.0 {
                    return Err("Range delta cannot be 0".into());
                }
                let n = ((lf - sf) / df).ceil().max(0.0) as usize;
                let mut out = Vec::with_capacity(n);
                let mut acc = s;
                for _ in 0..n {
                    out.push(acc);
                    acc = Num::add(acc, d);
                }
                Ok(out)
            }
        }
    )*};
}
range_num!(
    f32,
    f64,
    half::f16,
    half::bf16,
    i8,
    u8,
    i16,
    u16,
    i32,
    u32,
    i64,
    u64
);
macro_rules! range_unsupported {
    ($($t:ty),*) => {$(
        impl RangeElem for $t {
            fn range(_: Self, _: Self, _: Self) -> Result<Vec<Self>, String> {
                Err("Range expects numeric operands".into())
            }
        }
    )*};
}
range_unsupported!(bool, String);

/// NonZero: indices of non-zero elements, shape [rank, count], row-major order.
pub(crate) fn nonzero(x: &Value) -> Result<Value, String> {
    let flags: Vec<bool> = match x {
        Value::Bool(a) => a.iter().copied().collect(),
        Value::Str(a) => a.iter().map(|s| !s.is_empty()).collect(),
        _ => x.to_f64_vec()?.into_iter().map(|v| v != 0.0).collect(),
    };
    let shape = x.shape();
    let r = shape.len();
    let st = strides_of(shape);
    let hits: Vec<usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, &f)| f)
        .map(|(i, _)| i)
        .collect();
    let mut out = vec![0i64; r * hits.len()];
    for (j, &lin) in hits.iter().enumerate() {
        for d in 0..r {
            out[d * hits.len() + j] = ((lin / st[d]) % shape[d]) as i64;
        }
    }
    Ok(Value::I64(from_vec(&[r, hits.len()], out)?))
}

/// TopK: values and i64 indices, sorted, ties broken by the lower index.
pub(crate) fn topk(
    x: &Value,
    k: &Value,
    axis: i64,
    largest: bool,
    _sorted: bool,
) -> Result<Vec<Value>, String> {
    let k = k.scalar_i64()?;
    let ax = norm_axis(axis, x.rank())?;
    let shape = x.shape().to_vec();
    let n = shape[ax];
    if k < 0 || k as usize > n {
        return Err(format!("k = {k} is out of range for extent {n}"));
    }
    let k = k as usize;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let mut oshape = shape.clone();
    oshape[ax] = k;
    let mut indices = Vec::with_capacity(outer * k * inner);
    let values = map_num!(x, T, a => {
        let src = contiguous(a);
        let mut vals = vec![T::ZERO; outer * k * inner];
        indices.resize(outer * k * inner, 0i64);
        let mut order: Vec<usize> = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                order.clear();
                order.extend(0..n);
                let at = |j: usize| src[(o * n + j) * inner + i];
                // NaN sorts as the largest value.
                let cmp = |p: &usize, q: &usize| {
                    let (vp, vq) = (at(*p), at(*q));
                    let ord = match (vp.is_nan(), vq.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => vp.partial_cmp(&vq).unwrap_or(std::cmp::Ordering::Equal),
                    };
                    let ord = if largest { ord.reverse() } else { ord };
                    ord.then(p.cmp(q))
                };
                if k < n {
                    order.select_nth_unstable_by(k.saturating_sub(1).min(n - 1), cmp);
                    order.truncate(k);
                }
                order.sort_by(cmp);
                for (j, &src_j) in order.iter().take(k).enumerate() {
                    let dst = (o * k + j) * inner + i;
                    vals[dst] = at(src_j);
                    indices[dst] = src_j as i64;
                }
            }
        }
        from_vec(&oshape, vals)?
    });
    Ok(vec![values, Value::I64(from_vec(&oshape, indices)?)])
}

/// CumSum.
pub(crate) fn cumsum(
    x: &Value,
    axis: &Value,
    exclusive: bool,
    reverse: bool,
) -> Result<Value, String> {
    let ax = norm_axis(axis.scalar_i64()?, x.rank())?;
    let shape = x.shape().to_vec();
    let n = shape[ax];
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    Ok(map_num!(x, T, a => {
        let src = contiguous(a);
        let mut out = vec![T::ZERO; src.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = T::ZERO;
                for t in 0..n {
                    let j = if reverse { n - 1 - t } else { t };
                    let p = (o * n + j) * inner + i;
                    if exclusive {
                        out[p] = acc;
                        acc = acc.add(src[p]);
                    } else {
                        acc = acc.add(src[p]);
                        out[p] = acc;
                    }
                }
            }
        }
        from_vec(&shape, out)?
    }))
}

/// Trilu.
pub(crate) fn trilu(x: &Value, k: Option<&Value>, upper: bool) -> Result<Value, String> {
    let k = match k {
        Some(k) => k.scalar_i64()?,
        None => 0,
    };
    let r = x.rank();
    if r < 2 {
        return Err("Trilu expects rank >= 2".into());
    }
    let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
    let shape = x.shape().to_vec();
    let zero = Value::zeros(x.dtype(), &[]);
    let pair = [x, &zero];
    Ok(map_many!(&pair, xs => {
        let z = xs[1].iter().next().cloned().expect("scalar");
        let src = contiguous(xs[0]);
        let out: Vec<_> = src
            .iter()
            .enumerate()
            .map(|(lin, v)| {
                let i = ((lin / cols.max(1)) % rows.max(1)) as i64;
                let j = (lin % cols.max(1)) as i64;
                let keep = if upper { j - i >= k } else { j - i <= k };
                if keep { v.clone() } else { z.clone() }
            })
            .collect();
        from_vec(&shape, out)?
    }))
}

/// OneHot(indices, depth, values).
pub(crate) fn one_hot(
    indices: &Value,
    depth: &Value,
    values: &Value,
    axis: i64,
) -> Result<Value, String> {
    let depth = depth.scalar_f64()? as i64;
    if depth <= 0 {
        return Err(format!("depth must be positive, got {depth}"));
    }
    let d = depth as usize;
    let idx: Vec<i64> = indices
        .to_f64_vec()?
        .into_iter()
        .map(|v| v as i64)
        .collect();
    let r = indices.rank();
    let ax = {
        let rr = (r + 1) as i64;
        let a = if axis < 0 { axis + rr } else { axis };
        if a < 0 || a >= rr {
            return Err(format!("axis {axis} is out of range"));
        }
        a as usize
    };
    if values.len() != 2 {
        return Err("values must have two elements [off, on]".into());
    }
    let ishape = indices.shape();
    let outer: usize = ishape[..ax].iter().product();
    let inner: usize = ishape[ax..].iter().product();
    let mut oshape = ishape[..ax].to_vec();
    oshape.push(d);
    oshape.extend_from_slice(&ishape[ax..]);
    Ok(map_array!(values, v => {
        let flat: Vec<_> = v.iter().cloned().collect();
        let (off, on) = (flat[0].clone(), flat[1].clone());
        let mut out = vec![off; outer * d * inner];
        for o in 0..outer {
            for i in 0..inner {
                let mut t = idx[o * inner + i];
                if t < 0 {
                    t += depth;
                }
                if (0..depth).contains(&t) {
                    out[(o * d + t as usize) * inner + i] = on.clone();
                }
            }
        }
        from_vec(&oshape, out)?
    }))
}

/// Compress.
pub(crate) fn compress(x: &Value, cond: &Value, axis: Option<i64>) -> Result<Value, String> {
    let c: Vec<bool> = match cond {
        Value::Bool(a) => a.iter().copied().collect(),
        o => o.to_f64_vec()?.into_iter().map(|v| v != 0.0).collect(),
    };
    let (src_val, ax) = match axis {
        None => (x.reshape(&[x.len()])?, 0),
        Some(a) => (x.clone(), norm_axis(a, x.rank())?),
    };
    let n = src_val.shape()[ax];
    let keep: Vec<usize> = (0..n.min(c.len())).filter(|&i| c[i]).collect();
    let idx = Value::from_i64s(keep.iter().map(|&i| i as i64).collect());
    gather(&src_val, &idx, ax as i64)
}

/// ReverseSequence.
pub(crate) fn reverse_sequence(
    x: &Value,
    lens: &Value,
    batch_axis: i64,
    time_axis: i64,
) -> Result<Value, String> {
    let r = x.rank();
    let (b, t) = (norm_axis(batch_axis, r)?, norm_axis(time_axis, r)?);
    let lens = lens.to_i64_vec()?;
    let shape = x.shape().to_vec();
    if lens.len() != shape[b] {
        return Err("sequence_lens must have one entry per batch".into());
    }
    let st = strides_of(&shape);
    let n: usize = shape.iter().product();
    let mut src_of = Vec::with_capacity(n);
    for lin in 0..n {
        let bi = (lin / st[b]) % shape[b];
        let ti = (lin / st[t]) % shape[t];
        let l = lens[bi].clamp(0, shape[t] as i64) as usize;
        let si = if ti < l { l - 1 - ti } else { ti };
        src_of.push(lin - ti * st[t] + si * st[t]);
    }
    Ok(map_array!(x, a => {
        let src = contiguous(a);
        from_vec(&shape, src_of.iter().map(|&s| src[s].clone()).collect())?
    }))
}

/// EyeLike.
pub(crate) fn eye_like(x: &Value, dtype: Option<DType>, k: i64) -> Result<Value, String> {
    if x.rank() != 2 {
        return Err("EyeLike expects a rank-2 input".into());
    }
    let (r, c) = (x.shape()[0], x.shape()[1]);
    let mut v = vec![0f64; r * c];
    for i in 0..r {
        let j = i as i64 + k;
        if j >= 0 && (j as usize) < c {
            v[i * c + j as usize] = 1.0;
        }
    }
    let f = Value::F64(from_vec(&[r, c], v)?);
    crate::cast::cast(&f, dtype.unwrap_or(x.dtype()), true)
}

/// DepthToSpace.
pub(crate) fn depth_to_space(b: i64, mode: &str, x: &Value) -> Result<Value, String> {
    if x.rank() != 4 || b <= 0 {
        return Err("DepthToSpace expects a rank-4 input and a positive blocksize".into());
    }
    let b = b as usize;
    let s = x.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    if c % (b * b) != 0 {
        return Err(format!(
            "channels {c} are not divisible by blocksize² {}",
            b * b
        ));
    }
    let co = c / (b * b);
    let (tmp, perm): (Vec<usize>, Vec<usize>) = match mode {
        "DCR" => (vec![n, b, b, co, h, w], vec![0, 3, 4, 1, 5, 2]),
        "CRD" => (vec![n, co, b, b, h, w], vec![0, 1, 4, 2, 5, 3]),
        m => return Err(format!("unknown mode '{m}'")),
    };
    let t = x.reshape(&tmp)?;
    let t = map_array!(&t, a => transpose_arr(a, &perm));
    t.into_reshape(&[n, co, h * b, w * b])
}

/// SpaceToDepth.
pub(crate) fn space_to_depth(b: i64, x: &Value) -> Result<Value, String> {
    if x.rank() != 4 || b <= 0 {
        return Err("SpaceToDepth expects a rank-4 input and a positive blocksize".into());
    }
    let b = b as usize;
    let s = x.shape();
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    if h % b != 0 || w % b != 0 {
        return Err("spatial extents must be divisible by blocksize".into());
    }
    let t = x.reshape(&[n, c, h / b, b, w / b, b])?;
    let t = map_array!(&t, a => transpose_arr(a, &[0, 3, 5, 1, 2, 4]));
    t.into_reshape(&[n, c * b * b, h / b, w / b])
}

/// Pad(data, pads, constant_value?, axes?) with modes constant, reflect, edge, wrap.
/// Negative pads crop.
pub(crate) fn pad(
    mode: &str,
    x: &Value,
    pads: &Value,
    cval: Option<&Value>,
    axes: Option<&Value>,
) -> Result<Value, String> {
    let r = x.rank();
    let pads = pads.to_i64_vec()?;
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .to_i64_vec()?
            .into_iter()
            .map(|a| norm_axis(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "pads has {} entries, expected {}",
            pads.len(),
            2 * axes.len()
        ));
    }
    let mut begin = vec![0i64; r];
    let mut end = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = pads[i];
        end[a] = pads[axes.len() + i];
    }
    let shape = x.shape().to_vec();
    let mut maps = Vec::with_capacity(r);
    for d in 0..r {
        let n = shape[d] as i64;
        let out = n + begin[d] + end[d];
        if out < 0 {
            return Err(format!("pads crop axis {d} below zero"));
        }
        let mut m = Vec::with_capacity(out as usize);
        for o in 0..out {
            let j = o - begin[d];
            let src = if (0..n).contains(&j) {
                Some(j as usize)
            } else {
                match mode {
                    "constant" => None,
                    _ if n == 0 => return Err(format!("cannot {mode}-pad an empty axis")),
                    "edge" => Some(j.clamp(0, n - 1) as usize),
                    "wrap" => Some(j.rem_euclid(n) as usize),
                    "reflect" => {
                        if n == 1 {
                            Some(0)
                        } else {
                            let p = 2 * (n - 1);
                            let k = j.rem_euclid(p);
                            Some(if k < n { k } else { p - k } as usize)
                        }
                    }
                    m => return Err(format!("unknown pad mode '{m}'")),
                }
            };
            m.push(src);
        }
        maps.push(m);
    }
    let fill = match cval {
        Some(v) if !v.is_empty() => v.clone(),
        _ => Value::zeros(x.dtype(), &[]),
    };
    let fill = if fill.dtype() != x.dtype() {
        crate::cast::cast(&fill, x.dtype(), true)?
    } else {
        fill
    };
    remap_value(x, &maps, Some(&fill))
}

/// NonMaxSuppression.
pub(crate) fn nms(center_point_box: i64, a: &Args) -> Result<Value, String> {
    let boxes = a.req(0)?;
    let scores = a.req(1)?;
    let max_out = match a.opt(2) {
        Some(v) if !v.is_empty() => v.scalar_i64()?.max(0) as usize,
        _ => 0,
    };
    let iou_th = match a.opt(3) {
        Some(v) if !v.is_empty() => v.scalar_f64()?,
        _ => 0.0,
    };
    let score_th = match a.opt(4) {
        Some(v) if !v.is_empty() => Some(v.scalar_f64()?),
        _ => None,
    };
    let (bs, ss) = (boxes.shape(), scores.shape());
    if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        return Err(format!(
            "boxes {bs:?} / scores {ss:?} have incompatible shapes"
        ));
    }
    let (nb, nc, nbox) = (ss[0], ss[1], ss[2]);
    let bx = boxes.to_f64_vec()?;
    let sc = scores.to_f64_vec()?;
    let corners = |b: usize, i: usize| -> (f64, f64, f64, f64) {
        let p = &bx[(b * nbox + i) * 4..(b * nbox + i) * 4 + 4];
        if center_point_box == 0 {
            (
                p[0].min(p[2]),
                p[1].min(p[3]),
                p[0].max(p[2]),
                p[1].max(p[3]),
            )
        } else {
            (
                p[1] - p[3] / 2.0,
                p[0] - p[2] / 2.0,
                p[1] + p[3] / 2.0,
                p[0] + p[2] / 2.0,
            )
        }
    };
    let suppress = |b: usize, i: usize, j: usize| -> bool {
        let (ay0, ax0, ay1, ax1) = corners(b, i);
        let (by0, bx0, by1, bx1) = corners(b, j);
        let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
        if ix1 <= ix0 {
            return false;
        }
        let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
        if iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let a1 = (ax1 - ax0) * (ay1 - ay0);
        let a2 = (bx1 - bx0) * (by1 - by0);
        let uni = a1 + a2 - inter;
        if inter <= 0.0 || a1 <= 0.0 || a2 <= 0.0 || uni <= 0.0 {
            return false;
        }
        inter / uni > iou_th
    };
    let mut out: Vec<i64> = Vec::new();
    for b in 0..nb {
        for c in 0..nc {
            let s = &sc[(b * nc + c) * nbox..(b * nc + c + 1) * nbox];
            let mut cand: Vec<usize> = (0..nbox)
                .filter(|&i| score_th.is_none_or(|t| s[i] > t))
                .collect();
            // Highest score first; equal scores: lower index first.
            cand.sort_by(|&p, &q| {
                s[q].partial_cmp(&s[p])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(p.cmp(&q))
            });
            let mut sel: Vec<usize> = Vec::new();
            for i in cand {
                if sel.len() >= max_out {
                    break;
                }
                if sel.iter().all(|&j| !suppress(b, i, j)) {
                    sel.push(i);
                    out.extend_from_slice(&[b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    let n = out.len() / 3;
    Ok(Value::I64(from_vec(&[n, 3], out)?))
}
