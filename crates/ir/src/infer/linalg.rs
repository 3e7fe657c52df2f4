//! Linear algebra: MatMul (and its integer/quantized forms), Gemm, Einsum, Det.

use super::ctx::{bdim, broadcast, same_dtype, tt, unify, Ctx, R};
use crate::op::GemmAttrs;
use crate::{DType, Dim, Shape, TensorType};
use std::collections::BTreeMap;

/// numpy matmul shape rule (1-D operands are promoted and the extra dim dropped).
pub(crate) fn matmul_shape(a: &Shape, b: &Shape) -> R<Shape> {
    let (ra, rb) = (a.rank(), b.rank());
    if ra == 0 || rb == 0 {
        return Err(format!(
            "MatMul operands must have rank >= 1, got {a} and {b}"
        ));
    }
    let a1: Vec<Dim> = if ra == 1 {
        vec![Dim::Fixed(1), a.0[0].clone()]
    } else {
        a.0.clone()
    };
    let b1: Vec<Dim> = if rb == 1 {
        vec![b.0[0].clone(), Dim::Fixed(1)]
    } else {
        b.0.clone()
    };
    let (la, lb) = (a1.len(), b1.len());
    let k_a = &a1[la - 1];
    let k_b = &b1[lb - 2];
    if unify(k_a, k_b).is_none() {
        return Err(format!("MatMul inner dims {k_a} vs {k_b} ({a} x {b})"));
    }
    let batch = broadcast(&Shape(a1[..la - 2].to_vec()), &Shape(b1[..lb - 2].to_vec()))
        .map_err(|e| format!("MatMul batch dims: {e}"))?;
    let mut out = batch.0;
    if ra > 1 {
        out.push(a1[la - 2].clone());
    }
    if rb > 1 {
        out.push(b1[lb - 1].clone());
    }
    Ok(Shape(out))
}

fn mm(cx: &Ctx, a: usize, b: usize) -> R<Option<Shape>> {
    cx.require(a, "A")?;
    cx.require(b, "B")?;
    match (cx.shape(a), cx.shape(b)) {
        (Some(x), Some(y)) => matmul_shape(x, y).map(Some),
        _ => Ok(None),
    }
}

/// MatMul.
pub(crate) fn matmul(cx: &Ctx) -> R<Vec<TensorType>> {
    let d = same_dtype(cx, [0, 1], "MatMul")?;
    Ok(vec![tt(d, mm(cx, 0, 1)?)])
}

/// MatMulInteger: int32 result.
pub(crate) fn matmul_integer(cx: &Ctx) -> R<Vec<TensorType>> {
    Ok(vec![tt(Some(DType::I32), mm(cx, 0, 1)?)])
}

/// QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp).
pub(crate) fn qlinear_matmul(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(7, "y_zero_point")?;
    Ok(vec![tt(cx.dtype(7), mm(cx, 0, 3)?)])
}

/// Gemm: `[M,K] x [K,N] (+ C) -> [M,N]`.
pub(crate) fn gemm(a: &GemmAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "A")?;
    cx.require(1, "B")?;
    let d = same_dtype(cx, [0, 1, 2], "Gemm")?;
    let (sa, sb) = match (cx.shape(0), cx.shape(1)) {
        (Some(x), Some(y)) => (x, y),
        (x, y) => {
            for s in [x, y].into_iter().flatten() {
                if s.rank() != 2 {
                    return Err(format!("Gemm operands must be 2-D, got {s}"));
                }
            }
            return Ok(vec![tt(d, Some(Shape(vec![Dim::Unknown; 2])))]);
        }
    };
    if sa.rank() != 2 || sb.rank() != 2 {
        return Err(format!("Gemm operands must be 2-D, got {sa} and {sb}"));
    }
    let (m, ka) = if a.trans_a {
        (&sa.0[1], &sa.0[0])
    } else {
        (&sa.0[0], &sa.0[1])
    };
    let (kb, n) = if a.trans_b {
        (&sb.0[1], &sb.0[0])
    } else {
        (&sb.0[0], &sb.0[1])
    };
    if unify(ka, kb).is_none() {
        return Err(format!("Gemm inner dims {ka} vs {kb}"));
    }
    let mut out = Shape(vec![m.clone(), n.clone()]);
    if let Some(c) = cx.shape(2) {
        if c.rank() > 2 {
            return Err(format!("Gemm C {c} does not broadcast to [M,N]"));
        }
        // C broadcasts to the output unidirectionally: a C extent other than 1 pins it.
        let off = 2 - c.rank();
        for (j, x) in c.0.iter().enumerate() {
            let o = &mut out.0[off + j];
            if let Dim::Fixed(k) = x {
                if *k != 1 {
                    match o {
                        Dim::Fixed(oo) if oo != k => {
                            return Err(format!("Gemm C {c} does not broadcast to [{m},{n}]"))
                        }
                        _ => *o = Dim::Fixed(*k),
                    }
                }
            }
        }
    }
    Ok(vec![tt(d, Some(out))])
}

/// Det: `[*, M, M] -> [*]`.
pub(crate) fn det(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    let shape = match cx.shape(0) {
        None => None,
        Some(s) => {
            let r = s.rank();
            if r < 2 {
                return Err(format!("Det needs rank >= 2, got {s}"));
            }
            if unify(&s.0[r - 1], &s.0[r - 2]).is_none() {
                return Err(format!("Det needs square matrices, got {s}"));
            }
            Some(Shape(s.0[..r - 2].to_vec()))
        }
    };
    Ok(vec![tt(cx.dtype(0), shape)])
}

struct Term {
    labels: Vec<char>,
    ellipsis: Option<usize>,
}

fn parse_term(t: &str) -> R<Term> {
    let mut labels = Vec::new();
    let mut ellipsis = None;
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if ellipsis.is_some() {
                return Err(format!("Einsum term '{t}' has two ellipses"));
            }
            ellipsis = Some(labels.len());
            rest = r;
            continue;
        }
        let mut cs = rest.chars();
        let c = cs.next().unwrap_or(' ');
        if !c.is_ascii_alphabetic() {
            return Err(format!("Einsum term '{t}': invalid character '{c}'"));
        }
        labels.push(c);
        rest = cs.as_str();
    }
    Ok(Term { labels, ellipsis })
}

/// Parses an Einsum equation into input terms and the (possibly implicit) output term.
fn parse_equation(eq: &str) -> R<(Vec<Term>, Option<Term>)> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let inputs = lhs.split(',').map(parse_term).collect::<R<Vec<_>>>()?;
    let out = rhs.as_deref().map(parse_term).transpose()?;
    if let Some(o) = &out {
        for (i, c) in o.labels.iter().enumerate() {
            if o.labels[..i].contains(c) {
                return Err(format!("Einsum output repeats label '{c}'"));
            }
            if !inputs.iter().any(|t| t.labels.contains(c)) {
                return Err(format!(
                    "Einsum output label '{c}' does not appear in any input"
                ));
            }
        }
    }
    Ok((inputs, out))
}

/// Checks an Einsum equation's syntax (for the verifier).
pub(crate) fn check_equation(eq: &str, num_inputs: usize) -> R<()> {
    let (ins, _) = parse_equation(eq)?;
    if ins.len() != num_inputs {
        return Err(format!(
            "Einsum equation '{eq}' has {} input terms but the node has {num_inputs} inputs",
            ins.len()
        ));
    }
    Ok(())
}

/// Einsum, with explicit or implicit output and ellipsis broadcasting.
pub(crate) fn einsum(equation: &str, cx: &Ctx) -> R<Vec<TensorType>> {
    let (ins, out) = parse_equation(equation)?;
    if ins.len() != cx.len() {
        return Err(format!(
            "Einsum equation '{equation}' has {} input terms but the node has {} inputs",
            ins.len(),
            cx.len()
        ));
    }
    let dtype = same_dtype(cx, 0..cx.len(), "Einsum")?;
    let mut dims: BTreeMap<char, Dim> = BTreeMap::new();
    let mut ell: Option<Shape> = Some(Shape(vec![]));
    let mut any_ellipsis = false;
    for (i, t) in ins.iter().enumerate() {
        cx.require(i, "operand")?;
        any_ellipsis |= t.ellipsis.is_some();
        let Some(s) = cx.shape(i) else {
            if t.ellipsis.is_some() {
                ell = None;
            }
            continue;
        };
        let n = t.labels.len();
        let er = match t.ellipsis {
            None if s.rank() != n => {
                return Err(format!(
                    "Einsum operand {i} has shape {s} but term has {n} labels"
                ))
            }
            None => 0,
            Some(_) if s.rank() < n => {
                return Err(format!(
                    "Einsum operand {i} has shape {s}, fewer dims than {n} labels"
                ))
            }
            Some(_) => s.rank() - n,
        };
        let pos = t.ellipsis.unwrap_or(n);
        for (j, c) in t.labels.iter().enumerate() {
            let d = if j < pos { &s.0[j] } else { &s.0[j + er] };
            let merged = match dims.get(c) {
                None => d.clone(),
                Some(p) => bdim(p, d)
                    .ok_or_else(|| format!("Einsum label '{c}' has extents {p} and {d}"))?,
            };
            dims.insert(*c, merged);
        }
        if t.ellipsis.is_some() {
            let es = Shape(s.0[pos..pos + er].to_vec());
            ell = match ell {
                Some(e) => Some(broadcast(&e, &es).map_err(|e| format!("Einsum ellipsis: {e}"))?),
                None => None,
            };
        }
    }
    let out = match out {
        Some(o) => o,
        None => {
            let mut count: BTreeMap<char, usize> = BTreeMap::new();
            for t in &ins {
                for c in &t.labels {
                    *count.entry(*c).or_default() += 1;
                }
            }
            Term {
                labels: count
                    .into_iter()
                    .filter(|(_, n)| *n == 1)
                    .map(|(c, _)| c)
                    .collect(),
                ellipsis: any_ellipsis.then_some(0),
            }
        }
    };
    let label_dim = |c: &char| dims.get(c).cloned().unwrap_or(Dim::Unknown);
    let shape = match (out.ellipsis, ell) {
        (Some(_), None) => None,
        (e, ell) => {
            let pos = e.unwrap_or(out.labels.len());
            let mut v: Vec<Dim> = out.labels[..pos].iter().map(label_dim).collect();
            if e.is_some() {
                v.extend(ell.map(|s| s.0).unwrap_or_default());
            }
            v.extend(out.labels[pos..].iter().map(label_dim));
            Some(Shape(v))
        }
    };
    Ok(vec![tt(dtype, shape)])
}
