//! Reductions (Reduce*), ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax.

use crate::num::{contiguous, from_vec, norm_axis, Float, Num, PAR_THRESHOLD};
use crate::shape_ops::transpose_arr;
use crate::Value;
use ndarray::ArrayD;
use pare_ir::op::{ArgAttrs, ReduceAttrs};
use pare_ir::Op;
use rayon::prelude::*;

#[derive(Clone, Copy, PartialEq)]
enum R {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// Moves the reduced axes last (contiguously); returns (data, outer count, reduced count,
/// output shape with and without kept dims).
struct Plan {
    perm: Vec<usize>,
    outer: usize,
    inner: usize,
    out_keep: Vec<usize>,
    out_drop: Vec<usize>,
}

fn plan(shape: &[usize], axes: &[usize]) -> Plan {
    let r = shape.len();
    let mut red = vec![false; r];
    for &a in axes {
        red[a] = true;
    }
    let kept: Vec<usize> = (0..r).filter(|&d| !red[d]).collect();
    let reduced: Vec<usize> = (0..r).filter(|&d| red[d]).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(&reduced);
    Plan {
        outer: kept.iter().map(|&d| shape[d]).product(),
        inner: reduced.iter().map(|&d| shape[d]).product(),
        out_keep: (0..r).map(|d| if red[d] { 1 } else { shape[d] }).collect(),
        out_drop: kept.iter().map(|&d| shape[d]).collect(),
        perm,
    }
}

/// Rows of `inner` reduced elements, one per output element, in row-major output order.
fn rows<T: Clone>(a: &ArrayD<T>, p: &Plan) -> Vec<T> {
    let identity = p.perm.iter().enumerate().all(|(i, &d)| i == d);
    if identity {
        contiguous(a).into_owned()
    } else {
        transpose_arr(a, &p.perm).into_raw_vec_and_offset().0
    }
}

fn reduce_rows<T: Num>(data: &[T], p: &Plan, r: R) -> Vec<T> {
    let n = p.inner;
    let f = |row: &[T]| -> T {
        if T::FLOAT {
            let it = row.iter().map(|v| v.to_f64());
            let v = match r {
                R::Sum => it.sum::<f64>(),
                R::Mean => it.sum::<f64>() / n as f64,
                R::Max => it.fold(f64::NEG_INFINITY, |m, v| {
                    if v.is_nan() || m.is_nan() {
                        f64::NAN
                    } else {
                        m.max(v)
                    }
                }),
                R::Min => it.fold(f64::INFINITY, |m, v| {
                    if v.is_nan() || m.is_nan() {
                        f64::NAN
                    } else {
                        m.min(v)
                    }
                }),
                R::Prod => it.product::<f64>(),
                R::L1 => it.map(f64::abs).sum::<f64>(),
                R::L2 => it.map(|v| v * v).sum::<f64>().sqrt(),
                R::LogSum => it.sum::<f64>().ln(),
                R::SumSquare => it.map(|v| v * v).sum::<f64>(),
                R::LogSumExp => {
                    let m = row
                        .iter()
                        .map(|v| v.to_f64())
                        .filter(|v| !v.is_infinite())
                        .fold(f64::NEG_INFINITY, f64::max);
                    let m = if m.is_finite() { m } else { 0.0 };
                    it.map(|v| (v - m).exp()).sum::<f64>().ln() + m
                }
            };
            T::from_f64(v)
        } else {
            match r {
                R::Sum => row.iter().fold(T::ZERO, |a, &v| a.add(v)),
                R::Max => row
                    .iter()
                    .fold(T::lowest(), |a, &v| if v > a { v } else { a }),
                R::Min => row
                    .iter()
                    .fold(T::highest(), |a, &v| if v < a { v } else { a }),
                R::Prod => row.iter().fold(T::ONE, |a, &v| a.mul(v)),
                R::L1 => row.iter().fold(T::ZERO, |a, &v| a.add(v.abs())),
                R::SumSquare => row.iter().fold(T::ZERO, |a, &v| a.add(v.mul(v))),
                R::Mean => {
                    let s: f64 = row.iter().map(|v| v.to_f64()).sum();
                    T::from_f64(s / n as f64)
                }
                R::L2 => T::from_f64(
                    row.iter()
                        .map(|v| v.to_f64() * v.to_f64())
                        .sum::<f64>()
                        .sqrt(),
                ),
                R::LogSum => T::from_f64(row.iter().map(|v| v.to_f64()).sum::<f64>().ln()),
                R::LogSumExp => T::from_f64(row.iter().map(|v| v.to_f64().exp()).sum::<f64>().ln()),
            }
        }
    };
    if n == 0 {
        return (0..p.outer).map(|_| f(&[])).collect();
    }
    if data.len() >= PAR_THRESHOLD {
        data.par_chunks(n).map(f).collect()
    } else {
        data.chunks(n).map(f).collect()
    }
}

/// Reduce* with axes as the optional second operand.
pub(crate) fn reduce(
    op: &Op,
    at: &ReduceAttrs,
    x: &Value,
    axes: Option<&Value>,
) -> Result<Value, String> {
    let r = match op {
        Op::ReduceSum(_) => R::Sum,
        Op::ReduceMean(_) => R::Mean,
        Op::ReduceMax(_) => R::Max,
        Op::ReduceMin(_) => R::Min,
        Op::ReduceProd(_) => R::Prod,
        Op::ReduceL1(_) => R::L1,
        Op::ReduceL2(_) => R::L2,
        Op::ReduceLogSum(_) => R::LogSum,
        Op::ReduceLogSumExp(_) => R::LogSumExp,
        Op::ReduceSumSquare(_) => R::SumSquare,
        o => return Err(format!("{} is not a reduction", o.name())),
    };
    let rank = x.rank();
    let axes: Vec<i64> = match axes {
        Some(a) => a.to_i64_vec()?,
        None => vec![],
    };
    let axes: Vec<usize> = if axes.is_empty() {
        if at.noop_with_empty_axes {
            return Ok(x.clone());
        }
        (0..rank).collect()
    } else {
        let mut v: Vec<usize> = axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<_, _>>()?;
        v.sort_unstable();
        v.dedup();
        v
    };
    let p = plan(x.shape(), &axes);
    let oshape = if at.keepdims {
        p.out_keep.clone()
    } else {
        p.out_drop.clone()
    };
    if let Value::Bool(a) = x {
        // Boolean Min/Max (and/or) are the only meaningful bool reductions.
        let data = rows(a, &p);
        let n = p.inner;
        let out: Vec<bool> = (0..p.outer)
            .map(|o| {
                let row = &data[o * n..(o + 1) * n];
                match r {
                    R::Max | R::Sum | R::L1 => row.iter().any(|&b| b),
                    _ => row.iter().all(|&b| b),
                }
            })
            .collect();
        return Ok(Value::Bool(from_vec(&oshape, out)?));
    }
    Ok(map_num!(x, T, a => {
        let data = rows(a, &p);
        from_vec(&oshape, reduce_rows::<T>(&data, &p, r))?
    }))
}

/// ArgMax (`max = true`) / ArgMin.
pub(crate) fn arg(max: bool, at: &ArgAttrs, x: &Value) -> Result<Value, String> {
    let ax = norm_axis(at.axis, x.rank())?;
    let p = plan(x.shape(), &[ax]);
    let oshape = if at.keepdims {
        p.out_keep.clone()
    } else {
        p.out_drop.clone()
    };
    let last = at.select_last_index;
    let n = p.inner;
    if n == 0 {
        return Err("cannot take ArgMax/ArgMin over an empty axis".into());
    }
    let out: Vec<i64> = with_num!(x, T, a => {
        let data = rows(a, &p);
        data.chunks(n)
            .map(|row| {
                let mut best = 0usize;
                for (i, &v) in row.iter().enumerate().skip(1) {
                    let b = row[best];
                    if b.is_nan() {
                        break;
                    }
                    let better = if v.is_nan() {
                        true
                    } else if max {
                        v > b || (last && v == b)
                    } else {
                        v < b || (last && v == b)
                    };
                    if better {
                        best = i;
                    }
                }
                best as i64
            })
            .collect()
    });
    Ok(Value::I64(from_vec(&oshape, out)?))
}

/// Which normalizing activation.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum SoftKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

fn soft_row<T: Float>(row: &mut [T], kind: SoftKind) {
    let m = row
        .iter()
        .fold(T::lowest(), |m, &v| if v > m || v.is_nan() { v } else { m });
    match kind {
        SoftKind::Softmax => {
            let mut s = T::ZERO;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            let inv = T::ONE / s;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
        SoftKind::LogSoftmax => {
            let s: T = row.iter().map(|&v| (v - m).exp()).sum();
            let l = s.ln();
            for v in row.iter_mut() {
                *v = *v - m - l;
            }
        }
        SoftKind::Hardmax => {
            let i = row.iter().position(|&v| v == m).unwrap_or(0);
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j == i { T::ONE } else { T::ZERO };
            }
        }
    }
}

fn soft_arr<T: Float>(a: &ArrayD<T>, ax: usize, kind: SoftKind) -> Result<ArrayD<T>, String> {
    let r = a.ndim();
    let shape = a.shape().to_vec();
    let last = ax + 1 == r;
    let (mut data, tshape, perm) = if last {
        (contiguous(a).into_owned(), shape.clone(), None)
    } else {
        let mut perm: Vec<usize> = (0..r).filter(|&d| d != ax).collect();
        perm.push(ax);
        let t = transpose_arr(a, &perm);
        let ts = t.shape().to_vec();
        (t.into_raw_vec_and_offset().0, ts, Some(perm))
    };
    let n = shape[ax];
    if n > 0 {
        if data.len() >= PAR_THRESHOLD {
            data.par_chunks_mut(n).for_each(|row| soft_row(row, kind));
        } else {
            data.chunks_mut(n).for_each(|row| soft_row(row, kind));
        }
    }
    let out = from_vec(&tshape, data)?;
    Ok(match perm {
        None => out,
        Some(perm) => {
            let mut inv = vec![0; r];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            transpose_arr(&out, &inv)
        }
    })
}

/// Softmax, LogSoftmax, Hardmax along one axis.
pub(crate) fn softmax(kind: SoftKind, axis: i64, x: &Value) -> Result<Value, String> {
    let ax = norm_axis(axis, x.rank())?;
    Ok(map_float!(x, T, a => soft_arr::<T>(a, ax, kind)?))
}
