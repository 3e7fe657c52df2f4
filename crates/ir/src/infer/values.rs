//! Propagation of small integer values (shape computations) through the ops that build
//! shapes: `Shape`, `Gather`, `Concat`, `Slice`, `Unsqueeze`, arithmetic, … . Symbolic dims
//! survive, so `Reshape(x, Concat(Shape(x)[0:1], [-1]))` keeps the batch symbol.

use super::ctx::{norm_axes, norm_axis, Ctx, MAX_TRACKED, SV};
use super::shape_ops::shape_range;
use crate::{Op, TensorType};

/// Values of each output that can be tracked.
pub(crate) fn propagate(op: &Op, cx: &Ctx, outs: &[TensorType]) -> Vec<Option<Vec<SV>>> {
    let mut res = vec![None; outs.len()];
    if outs.is_empty() {
        return res;
    }
    let small = outs[0]
        .shape
        .as_ref()
        .and_then(|s| s.numel())
        .is_some_and(|n| n <= MAX_TRACKED);
    let out_int = outs[0]
        .dtype
        .is_some_and(|d| d.is_int() || d == crate::DType::Bool);
    if !small || !out_int {
        return res;
    }
    res[0] = one(op, cx, outs);
    if let Some(v) = &res[0] {
        if Some(v.len()) != outs[0].shape.as_ref().and_then(|s| s.numel()) {
            res[0] = None;
        }
    }
    res
}

fn one(op: &Op, cx: &Ctx, outs: &[TensorType]) -> Option<Vec<SV>> {
    match op {
        Op::Shape(a) => {
            let s = cx.shape(0)?;
            let (b, e) = shape_range(a.start, a.end, s.rank());
            Some(s.0[b..e].iter().map(SV::from_dim).collect())
        }
        Op::Size => {
            let n = cx.shape(0)?.numel()?;
            Some(vec![SV::Int(i64::try_from(n).ok()?)])
        }
        Op::Identity | Op::Squeeze | Op::Unsqueeze | Op::Reshape(_) | Op::Flatten(_) => {
            cx.vals(0).map(<[SV]>::to_vec)
        }
        Op::Cast(_) | Op::CastLike(_) => {
            if !cx
                .dtype(0)
                .is_some_and(|d| d.is_int() || d == crate::DType::Bool)
            {
                return None;
            }
            let vals = cx.vals(0)?;
            let to = outs[0].dtype?;
            if to == crate::DType::Bool {
                // Nonzero is true; a symbolic extent may be zero, so it is unknown here.
                return Some(
                    vals.iter()
                        .map(|v| match v {
                            SV::Int(x) => SV::Int(i64::from(*x != 0)),
                            _ => SV::Unknown,
                        })
                        .collect(),
                );
            }
            // A known value that the target type cannot hold would wrap: not tracked.
            let fits = |x: i64| {
                let bits = to.bits();
                if bits >= 64 {
                    to.is_signed_int() || x >= 0
                } else if to.is_signed_int() {
                    let h = 1i64 << (bits - 1);
                    (-h..h).contains(&x)
                } else {
                    (0..1i64 << bits).contains(&x)
                }
            };
            if vals.iter().any(|v| matches!(v, SV::Int(x) if !fits(*x))) {
                return None;
            }
            Some(vals.to_vec())
        }
        Op::Gather(a) => {
            let (data, shape) = (cx.vals(0)?, fixed(cx, 0)?);
            let ax = norm_axis(a.axis, shape.len()).ok()?;
            let d = shape[ax];
            let inner: usize = shape[ax + 1..].iter().product();
            let outer: usize = shape[..ax].iter().product();
            let idx = cx
                .ints(1)?
                .into_iter()
                .map(|i| {
                    usize::try_from(if i < 0 { i + d as i64 } else { i })
                        .ok()
                        .filter(|&i| i < d)
                })
                .collect::<Option<Vec<usize>>>()?;
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in &idx {
                    let at = (o * d + i) * inner;
                    out.extend_from_slice(data.get(at..at + inner)?);
                }
            }
            Some(out)
        }
        Op::Concat(a) => {
            let shape0 = fixed(cx, 0)?;
            let ax = norm_axis(a.axis, shape0.len()).ok()?;
            let outer: usize = shape0[..ax].iter().product();
            let mut parts = Vec::with_capacity(cx.len());
            for i in 0..cx.len() {
                let s = fixed(cx, i)?;
                let chunk: usize = s.get(ax..)?.iter().product();
                parts.push((cx.vals(i)?, chunk));
            }
            let mut out = Vec::new();
            for o in 0..outer {
                for (v, chunk) in &parts {
                    out.extend_from_slice(v.get(o * chunk..(o + 1) * chunk)?);
                }
            }
            Some(out)
        }
        Op::Slice => {
            let (data, shape) = (cx.vals(0)?, fixed(cx, 0)?);
            let (st, en) = (cx.ints(1)?, cx.ints(2)?);
            let axes = if cx.present(3) {
                norm_axes(&cx.ints(3)?, shape.len()).ok()?
            } else {
                (0..st.len()).collect()
            };
            let steps = if cx.present(4) {
                cx.ints(4)?
            } else {
                vec![1; st.len()]
            };
            if st.len() != axes.len() || en.len() != axes.len() || steps.len() != axes.len() {
                return None;
            }
            let mut idx: Vec<Vec<usize>> = shape.iter().map(|&d| (0..d).collect()).collect();
            for (j, &a) in axes.iter().enumerate() {
                idx[a] = slice_indices(*shape.get(a)? as i64, st[j], en[j], steps[j])?;
            }
            select(data, &shape, &idx)
        }
        Op::Transpose(a) => {
            let (data, shape) = (cx.vals(0)?, fixed(cx, 0)?);
            let r = shape.len();
            let perm: Vec<usize> = match &a.perm {
                Some(p) => p
                    .iter()
                    .map(|&x| usize::try_from(x).ok().filter(|&x| x < r))
                    .collect::<Option<_>>()?,
                None => (0..r).rev().collect(),
            };
            if perm.len() != r {
                return None;
            }
            let strides = strides(&shape);
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let n: usize = out_shape.iter().product();
            let mut out = Vec::with_capacity(n);
            let mut pos = vec![0usize; r];
            for _ in 0..n {
                let flat: usize = pos.iter().zip(&perm).map(|(&i, &p)| i * strides[p]).sum();
                out.push(data.get(flat)?.clone());
                bump(&mut pos, &out_shape);
            }
            Some(out)
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Max
        | Op::Min
        | Op::Equal
        | Op::Less
        | Op::Greater
        | Op::LessOrEqual
        | Op::GreaterOrEqual
        | Op::And
        | Op::Or => {
            if cx.len() != 2 {
                return None;
            }
            let (a, b) = (cx.vals(0)?, cx.vals(1)?);
            let n = a.len().max(b.len());
            if !(a.len() == n || a.len() == 1) || !(b.len() == n || b.len() == 1) {
                return None;
            }
            Some(
                (0..n)
                    .map(|i| arith(op, &a[i.min(a.len() - 1)], &b[i.min(b.len() - 1)]))
                    .collect(),
            )
        }
        Op::Where => {
            let (c, a, b) = (cx.vals(0)?, cx.vals(1)?, cx.vals(2)?);
            let n = c.len().max(a.len()).max(b.len());
            if [c.len(), a.len(), b.len()]
                .iter()
                .any(|&l| l != n && l != 1)
            {
                return None;
            }
            let at = |v: &[SV], i: usize| v[i.min(v.len() - 1)].clone();
            Some(
                (0..n)
                    .map(|i| match at(c, i).int() {
                        Some(0) => at(b, i),
                        Some(_) => at(a, i),
                        None => SV::Unknown,
                    })
                    .collect(),
            )
        }
        Op::Not => Some(
            cx.vals(0)?
                .iter()
                .map(|v| v.int().map_or(SV::Unknown, |x| SV::Int((x == 0) as i64)))
                .collect(),
        ),
        Op::Neg => Some(
            cx.vals(0)?
                .iter()
                .map(|v| {
                    v.int()
                        .and_then(i64::checked_neg)
                        .map_or(SV::Unknown, SV::Int)
                })
                .collect(),
        ),
        Op::ConstantOfShape(a) => {
            let n = outs[0].shape.as_ref()?.numel()?;
            let v = match &a.value {
                Some(t) => t.to_i64_vec()?.first().copied()?,
                None => return None,
            };
            Some(vec![SV::Int(v); n])
        }
        Op::Range => {
            let (s, l, d) = (cx.ints(0)?, cx.ints(1)?, cx.ints(2)?);
            let (s, l, d) = (*s.first()?, *l.first()?, *d.first()?);
            if d == 0 {
                return None;
            }
            let mut out = Vec::new();
            let mut x = s;
            while (d > 0 && x < l) || (d < 0 && x > l) {
                if out.len() >= MAX_TRACKED {
                    return None;
                }
                out.push(SV::Int(x));
                x = x.checked_add(d)?;
            }
            Some(out)
        }
        _ => None,
    }
}

fn arith(op: &Op, a: &SV, b: &SV) -> SV {
    use SV::*;
    match (op, a, b) {
        (_, Int(x), Int(y)) => {
            let r = match op {
                Op::Add => x.checked_add(*y),
                Op::Sub => x.checked_sub(*y),
                Op::Mul => x.checked_mul(*y),
                Op::Div => x.checked_div(*y),
                Op::Max => Some(*x.max(y)),
                Op::Min => Some(*x.min(y)),
                Op::Equal => Some((x == y) as i64),
                Op::Less => Some((x < y) as i64),
                Op::Greater => Some((x > y) as i64),
                Op::LessOrEqual => Some((x <= y) as i64),
                Op::GreaterOrEqual => Some((x >= y) as i64),
                Op::And => Some((*x != 0 && *y != 0) as i64),
                Op::Or => Some((*x != 0 || *y != 0) as i64),
                _ => None,
            };
            r.map_or(Unknown, Int)
        }
        (Op::Add, s @ Sym(_), Int(0)) | (Op::Add, Int(0), s @ Sym(_)) => s.clone(),
        (Op::Sub, s @ Sym(_), Int(0)) => s.clone(),
        (Op::Mul, s @ Sym(_), Int(1)) | (Op::Mul, Int(1), s @ Sym(_)) => s.clone(),
        (Op::Div, s @ Sym(_), Int(1)) => s.clone(),
        (Op::Div, Sym(x), Sym(y)) if x == y => Int(1),
        (Op::Sub, Sym(x), Sym(y)) if x == y => Int(0),
        (Op::Max | Op::Min, Sym(x), Sym(y)) if x == y => Sym(x.clone()),
        (Op::Equal | Op::LessOrEqual | Op::GreaterOrEqual, Sym(x), Sym(y)) if x == y => Int(1),
        (Op::Less | Op::Greater, Sym(x), Sym(y)) if x == y => Int(0),
        // Extents are never negative (the `-1` placeholders of Reshape/Expand targets).
        (Op::Equal, Sym(_), Int(n)) | (Op::Equal, Int(n), Sym(_)) if *n < 0 => Int(0),
        _ => Unknown,
    }
}

fn fixed(cx: &Ctx, i: usize) -> Option<Vec<usize>> {
    let s = cx.shape(i)?.as_fixed()?;
    (cx.vals(i)?.len() == s.iter().product::<usize>()).then_some(s)
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        st[k] = st[k + 1] * shape[k + 1];
    }
    st
}

/// Advances a row-major multi-index.
fn bump(pos: &mut [usize], shape: &[usize]) {
    for k in (0..pos.len()).rev() {
        pos[k] += 1;
        if pos[k] < shape[k] {
            return;
        }
        pos[k] = 0;
    }
}

/// Elements at the cartesian product of per-axis index lists, row-major.
fn select(data: &[SV], shape: &[usize], idx: &[Vec<usize>]) -> Option<Vec<SV>> {
    let st = strides(shape);
    let out_shape: Vec<usize> = idx.iter().map(Vec::len).collect();
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut pos = vec![0usize; shape.len()];
    for _ in 0..n {
        let flat: usize = pos
            .iter()
            .enumerate()
            .map(|(k, &p)| idx[k][p] * st[k])
            .sum();
        out.push(data.get(flat)?.clone());
        bump(&mut pos, &out_shape);
    }
    Some(out)
}

/// The indices `start:end:step` selects on an extent `d` (ONNX Slice clamping rules); `None`
/// for a zero step or an index overflow.
pub fn slice_indices(d: i64, start: i64, end: i64, step: i64) -> Option<Vec<usize>> {
    if step == 0 {
        return None;
    }
    let (mut s, mut e) = (start, end);
    if s < 0 {
        s = s.saturating_add(d);
    }
    if e < 0 {
        e = e.saturating_add(d);
    }
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (s.clamp(0, d), e.clamp(0, d));
        while i < e {
            out.push(i as usize);
            i = i.checked_add(step)?;
        }
    } else if d > 0 {
        let (mut i, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        while i > e {
            out.push(i as usize);
            i = i.checked_add(step)?;
        }
    }
    Some(out)
}
