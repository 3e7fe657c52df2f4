//! Normalization ops. They compute in f64 and round to the input's float type.

use crate::dispatch::Args;
use crate::num::{broadcast_shapes, from_vec, norm_axis, PAR_THRESHOLD};
use crate::Value;
use ndarray::IxDyn;
use pare_ir::op::{BatchNormAttrs, GroupNormAttrs, LayerNormAttrs, LpNormAttrs, LrnAttrs};
use pare_ir::DType;
use rayon::prelude::*;

fn f64s(v: &Value) -> Result<Vec<f64>, String> {
    if !v.is_float() {
        return Err(format!("expected a float tensor, got {}", v.dtype()));
    }
    v.to_f64_vec()
}

/// Elements of `v` broadcast (unidirectionally) to `shape`, in row-major order.
fn bcast(v: &Value, shape: &[usize]) -> Result<Vec<f64>, String> {
    let data = f64s(v)?;
    if v.shape() == shape {
        return Ok(data);
    }
    if broadcast_shapes(v.shape(), shape)? != shape {
        return Err(format!("cannot broadcast {:?} to {shape:?}", v.shape()));
    }
    let a = from_vec(v.shape(), data)?;
    let b = a
        .broadcast(IxDyn(shape))
        .ok_or_else(|| format!("cannot broadcast {:?} to {shape:?}", v.shape()))?;
    Ok(b.iter().copied().collect())
}

/// Builds a value of `dtype` from f64 data.
pub(crate) fn finish(dtype: DType, shape: &[usize], data: Vec<f64>) -> Result<Value, String> {
    match dtype {
        DType::F64 => Ok(Value::F64(from_vec(shape, data)?)),
        DType::F32 => Ok(Value::F32(from_vec(
            shape,
            data.into_iter().map(|v| v as f32).collect(),
        )?)),
        d => crate::cast::cast(&Value::F64(from_vec(shape, data)?), d, true),
    }
}

/// (mean, population variance) of a row.
fn moments(row: &[f64]) -> (f64, f64) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var)
}

/// BatchNormalization (inference, or training mode with running statistics outputs).
pub(crate) fn batch_norm(at: &BatchNormAttrs, a: &Args, nout: usize) -> Result<Vec<Value>, String> {
    let x = a.req(0)?;
    let shape = x.shape().to_vec();
    if shape.len() < 2 {
        return Err(format!(
            "BatchNormalization expects [N, C, ...], got {shape:?}"
        ));
    }
    let (n, c) = (shape[0], shape[1]);
    let sp: usize = shape[2..].iter().product();
    let scale = f64s(a.req(1)?)?;
    let bias = f64s(a.req(2)?)?;
    let in_mean = f64s(a.req(3)?)?;
    let in_var = f64s(a.req(4)?)?;
    if [scale.len(), bias.len(), in_mean.len(), in_var.len()]
        .iter()
        .any(|&l| l != c)
    {
        return Err(format!("scale, B, mean and var must have {c} elements"));
    }
    let eps = at.epsilon as f64;
    // Inference on f32: one fused multiply-add per element, in f32.
    if let (Value::F32(xa), false) = (x, at.training_mode) {
        let k: Vec<f32> = (0..c)
            .map(|i| (scale[i] / (in_var[i] + eps).sqrt()) as f32)
            .collect();
        let b: Vec<f32> = (0..c)
            .map(|i| (bias[i] - in_mean[i] * scale[i] / (in_var[i] + eps).sqrt()) as f32)
            .collect();
        let mut y = crate::num::contiguous(xa).into_owned();
        let f = |(i, row): (usize, &mut [f32])| {
            let (k, b) = (k[i % c], b[i % c]);
            row.iter_mut().for_each(|v| *v = *v * k + b);
        };
        if sp > 0 {
            if y.len() >= PAR_THRESHOLD {
                y.par_chunks_mut(sp).enumerate().for_each(f);
            } else {
                y.chunks_mut(sp).enumerate().for_each(f);
            }
        }
        return Ok(vec![Value::F32(from_vec(&shape, y)?)]);
    }
    let xd = f64s(x)?;
    let (mean, var) = if at.training_mode {
        let mut mean = vec![0.0; c];
        let mut var = vec![0.0; c];
        for ci in 0..c {
            let vals: Vec<f64> = (0..n)
                .flat_map(|ni| {
                    xd[(ni * c + ci) * sp..(ni * c + ci + 1) * sp]
                        .iter()
                        .copied()
                })
                .collect();
            let (m, v) = moments(&vals);
            mean[ci] = m;
            var[ci] = v;
        }
        (mean, var)
    } else {
        (in_mean.clone(), in_var.clone())
    };
    let mut y = xd;
    let f = |(i, row): (usize, &mut [f64])| {
        let ci = i % c;
        let k = scale[ci] / (var[ci] + eps).sqrt();
        let (m, b) = (mean[ci], bias[ci]);
        row.iter_mut().for_each(|v| *v = (*v - m) * k + b);
    };
    if sp > 0 {
        if y.len() >= PAR_THRESHOLD {
            y.par_chunks_mut(sp).enumerate().for_each(f);
        } else {
            y.chunks_mut(sp).enumerate().for_each(f);
        }
    }
    let dt = x.dtype();
    let mut out = vec![finish(dt, &shape, y)?];
    if at.training_mode && nout > 1 {
        let mom = at.momentum as f64;
        let rm: Vec<f64> = (0..c)
            .map(|i| in_mean[i] * mom + mean[i] * (1.0 - mom))
            .collect();
        let rv: Vec<f64> = (0..c)
            .map(|i| in_var[i] * mom + var[i] * (1.0 - mom))
            .collect();
        let mdt = a.req(3)?.dtype();
        out.push(finish(mdt, &[c], rm)?);
        out.push(finish(mdt, &[c], rv)?);
    }
    Ok(out)
}

/// Normalizes each row of `rows_len` elements in place; `affine(row, j)` gives (scale, bias)
/// for element j of row `row`. Returns per-row (mean, 1/std).
fn normalize_rows(
    data: &mut [f64],
    rows_len: usize,
    eps: f64,
    affine: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    if rows_len == 0 {
        return Vec::new();
    }
    let f = |(r, row): (usize, &mut [f64])| {
        let (m, v) = moments(row);
        let inv = 1.0 / (v + eps).sqrt();
        for (j, x) in row.iter_mut().enumerate() {
            let (s, b) = affine(r, j);
            *x = (*x - m) * inv * s + b;
        }
        (m, inv)
    };
    if data.len() >= PAR_THRESHOLD {
        data.par_chunks_mut(rows_len).enumerate().map(f).collect()
    } else {
        data.chunks_mut(rows_len).enumerate().map(f).collect()
    }
}

/// InstanceNormalization.
pub(crate) fn instance_norm(
    eps: f32,
    x: &Value,
    scale: &Value,
    bias: &Value,
) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    if shape.len() < 2 {
        return Err(format!(
            "InstanceNormalization expects [N, C, ...], got {shape:?}"
        ));
    }
    let c = shape[1];
    let sp: usize = shape[2..].iter().product();
    let (s, b) = (f64s(scale)?, f64s(bias)?);
    if s.len() != c || b.len() != c {
        return Err(format!("scale and B must have {c} elements"));
    }
    let mut d = f64s(x)?;
    normalize_rows(&mut d, sp, eps as f64, |r, _| (s[r % c], b[r % c]));
    finish(x.dtype(), &shape, d)
}

/// LayerNormalization: outputs Y, Mean, InvStdDev.
pub(crate) fn layer_norm(
    at: &LayerNormAttrs,
    x: &Value,
    scale: &Value,
    bias: Option<&Value>,
    nout: usize,
) -> Result<Vec<Value>, String> {
    let shape = x.shape().to_vec();
    let ax = norm_axis(at.axis, shape.len())?;
    let inner: usize = shape[ax..].iter().product();
    let s = bcast(scale, &shape[ax..])?;
    let b = match bias {
        Some(b) => bcast(b, &shape[ax..])?,
        None => vec![0.0; inner],
    };
    let mut d = f64s(x)?;
    let stats = normalize_rows(&mut d, inner, at.epsilon as f64, |_, j| (s[j], b[j]));
    let mut out = vec![finish(x.dtype(), &shape, d)?];
    if nout > 1 {
        let mut sshape = shape[..ax].to_vec();
        sshape.extend(std::iter::repeat_n(1, shape.len() - ax));
        // Statistics are in the stash type (f32 unless stash_type says double).
        let sdt = if at.stash_type == 11 {
            DType::F64
        } else {
            DType::F32
        };
        out.push(finish(sdt, &sshape, stats.iter().map(|p| p.0).collect())?);
        out.push(finish(sdt, &sshape, stats.iter().map(|p| p.1).collect())?);
    }
    Ok(out)
}

/// GroupNormalization (opset 21: per-channel scale and bias).
pub(crate) fn group_norm(
    at: &GroupNormAttrs,
    x: &Value,
    scale: &Value,
    bias: &Value,
) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    if shape.len() < 2 {
        return Err(format!(
            "GroupNormalization expects [N, C, ...], got {shape:?}"
        ));
    }
    let c = shape[1];
    let g = at.num_groups.max(1) as usize;
    if !c.is_multiple_of(g) {
        return Err(format!("{c} channels are not divisible into {g} groups"));
    }
    let sp: usize = shape[2..].iter().product();
    let cg = c / g;
    let (s, b) = (f64s(scale)?, f64s(bias)?);
    let per_channel = s.len() == c && b.len() == c;
    let per_group = s.len() == g && b.len() == g;
    if !per_channel && !per_group {
        return Err(format!("scale and bias must have {c} (or {g}) elements"));
    }
    let mut d = f64s(x)?;
    normalize_rows(&mut d, cg * sp, at.epsilon as f64, |r, j| {
        let gi = r % g;
        if per_channel {
            let ci = gi * cg + j / sp.max(1);
            (s[ci], b[ci])
        } else {
            (s[gi], b[gi])
        }
    });
    finish(x.dtype(), &shape, d)
}

/// LpNormalization (p = 1 or 2); zero norms give zeros.
pub(crate) fn lp_norm(at: &LpNormAttrs, x: &Value) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    let ax = norm_axis(at.axis, shape.len())?;
    if at.p != 1 && at.p != 2 {
        return Err(format!("p must be 1 or 2, got {}", at.p));
    }
    let n = shape[ax];
    let inner: usize = shape[ax + 1..].iter().product();
    let outer: usize = shape[..ax].iter().product();
    let mut d = f64s(x)?;
    for o in 0..outer {
        for i in 0..inner {
            let idx = |t: usize| (o * n + t) * inner + i;
            let norm = if at.p == 1 {
                (0..n).map(|t| d[idx(t)].abs()).sum::<f64>()
            } else {
                (0..n).map(|t| d[idx(t)] * d[idx(t)]).sum::<f64>().sqrt()
            };
            for t in 0..n {
                let k = idx(t);
                d[k] = if norm == 0.0 { 0.0 } else { d[k] / norm };
            }
        }
    }
    finish(x.dtype(), &shape, d)
}

/// LRN across channels.
pub(crate) fn lrn(at: &LrnAttrs, x: &Value) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    if shape.len() < 3 {
        return Err(format!("LRN expects [N, C, ...], got {shape:?}"));
    }
    let (n, c) = (shape[0], shape[1]);
    let sp: usize = shape[2..].iter().product();
    let size = at.size.max(1) as usize;
    let lo = (size - 1) / 2;
    let hi = (size - 1).div_ceil(2);
    let d = f64s(x)?;
    let mut y = vec![0.0; d.len()];
    let (alpha, beta, bias) = (at.alpha as f64, at.beta as f64, at.bias as f64);
    for ni in 0..n {
        for ci in 0..c {
            let begin = ci.saturating_sub(lo);
            let end = (ci + hi + 1).min(c);
            for p in 0..sp {
                let sq: f64 = (begin..end)
                    .map(|cc| d[(ni * c + cc) * sp + p].powi(2))
                    .sum();
                let k = (ni * c + ci) * sp + p;
                y[k] = d[k] / (bias + alpha / size as f64 * sq).powf(beta);
            }
        }
    }
    finish(x.dtype(), &shape, y)
}

/// MeanVarianceNormalization: `(x - mean) / (std + 1e-9)` over `axes`.
pub(crate) fn mvn(axes: &[i64], x: &Value) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    let r = shape.len();
    let mut red = vec![false; r];
    for &a in axes {
        red[norm_axis(a, r)?] = true;
    }
    let d = f64s(x)?;
    let st = crate::num::strides_of(&shape);
    // Group key: the multi-index with reduced axes zeroed.
    let key = |lin: usize| -> usize {
        (0..r)
            .filter(|&k| !red[k])
            .map(|k| ((lin / st[k]) % shape[k]) * st[k])
            .sum()
    };
    let mut sum: std::collections::HashMap<usize, (f64, f64, usize)> =
        std::collections::HashMap::new();
    for (lin, &v) in d.iter().enumerate() {
        let e = sum.entry(key(lin)).or_insert((0.0, 0.0, 0));
        e.0 += v;
        e.1 += v * v;
        e.2 += 1;
    }
    let y: Vec<f64> = d
        .iter()
        .enumerate()
        .map(|(lin, &v)| {
            let (s, s2, n) = sum[&key(lin)];
            let m = s / n as f64;
            let std = (s2 / n as f64 - m * m).max(0.0).sqrt();
            (v - m) / (std + 1e-9)
        })
        .collect();
    finish(x.dtype(), &shape, y)
}
