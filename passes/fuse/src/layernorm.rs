//! `fuse-layernorm`: the decomposed layer normalization that exporters emit →
//! `LayerNormalization`.
//!
//! **What it does.** Recognizes
//!
//! ```text
//! m = ReduceMean(x, axes)            keepdims = 1
//! d = Sub(x, m)
//! q = Pow(d, 2) | Mul(d, d)
//! v = ReduceMean(q, axes)            keepdims = 1, same axes
//! s = Sqrt(Add(v, eps))              Add operands in either order
//! n = Div(d, s) | Mul(d, Reciprocal(s))
//! [n = Mul(n, gamma)]                optional, either order
//! [n = Add(n, beta)]                 optional, either order
//! ```
//!
//! and replaces it by `LayerNormalization(x, gamma, beta) {axis, epsilon}`, which carries the
//! last node's output name. `axes` must be the trailing axes `[k, rank)` (given as the
//! ReduceMean's axes input, which is how the importer represents both the opset-18 input form
//! and the older attribute form); `axis = k − rank`. Without gamma the scale is a constant of
//! ones; without beta the bias is omitted.
//!
//! **Needs.** Constant axes, a one-element constant epsilon, an exponent of exactly 2, a float
//! `x`; gamma and beta constants of x's dtype whose shape broadcasts onto the normalized dims
//! only (1 on every leading axis, 1 or the extent on the normalized ones) and does not raise
//! x's rank; the normalized extents fixed (gamma/beta are materialized in the normalized
//! shape); every intermediate value read only inside the pattern (x itself may have other
//! readers). The mean must be subtracted from the same `x` that is averaged, which is what
//! separates LayerNorm from RMSNorm (`x / sqrt(mean(x²) + eps)`, no mean subtraction): RMSNorm
//! is never matched.
//!
//! **Guarantees.** Exact up to float rounding (LayerNormalization computes the same mean,
//! population variance and normalization; its statistics are kept in f32 for f32/f16 inputs,
//! f64 for f64 inputs).
//!
//! **Reference.** Ba et al. 2016, "Layer Normalization"; the pattern is what
//! `torch.onnx.export` (opset < 17), paddle2onnx and tf2onnx emit for `LayerNorm`;
//! onnxruntime's `LayerNormFusion` matches the same graph.

use crate::util::*;
use pare_ir::op::LayerNormAttrs;
use pare_ir::{DType, Dim, Graph, NodeId, Op, Use, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// The `fuse-layernorm` pass.
#[derive(Default)]
pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &str {
        "fuse-layernorm"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Matching needs shapes: fill in what inference can (a failure leaves types as they are).
        let _ = pare_ir::infer::infer_types(g);
        let n = on_all_graphs(g, &mut fuse_all);
        Ok(PassReport::counted("fused", n))
    }
}

fn fuse_all(g: &mut Graph) -> u64 {
    let mut count = 0;
    let ids: Vec<NodeId> = g.node_ids().collect();
    for r in ids {
        if !g.node(r).is_dead()
            && matches!(g.node(r).op, Op::ReduceMean(_))
            && fuse_one(g, r).is_some()
        {
            count += 1;
        }
    }
    count
}

/// The ReduceMean's axes as a trailing range: the LayerNormalization axis (negative).
fn trailing_axes(g: &Graph, r: NodeId, x_rank: Option<usize>) -> Option<i64> {
    let a = match &g.node(r).op {
        Op::ReduceMean(a) => a,
        _ => return None,
    };
    if !a.keepdims || g.node(r).inputs().len() != 2 {
        return None;
    }
    let mut axes = g.constant(input(g, r, 1)?)?.to_i64_vec()?;
    if axes.is_empty() {
        return None;
    }
    match x_rank {
        Some(rank) => {
            let rk = rank as i64;
            for v in &mut axes {
                if *v < -rk || *v >= rk {
                    return None;
                }
                if *v >= 0 {
                    *v -= rk;
                }
            }
        }
        None => {
            if axes.iter().any(|&v| v >= 0) {
                return None;
            }
        }
    }
    axes.sort_unstable();
    let n = axes.len() as i64;
    let want: Vec<i64> = (-n..0).collect();
    (axes == want).then_some(-n)
}

/// The reader nodes of `v` (each once).
fn readers(g: &Graph, v: ValueId) -> Option<Vec<NodeId>> {
    let mut out: Vec<NodeId> = Vec::new();
    for u in g.uses(v) {
        match u {
            Use::Node { node, .. } => {
                if !out.contains(node) {
                    out.push(*node)
                }
            }
            Use::Output(_) => return None,
        }
    }
    Some(out)
}

/// A constant of x's dtype broadcasting onto the normalized dims only, materialized in the
/// normalized shape `norm` (fixed extents).
fn affine_param(
    g: &Graph,
    v: ValueId,
    x_rank: usize,
    axis: usize,
    norm: &[usize],
    dt: DType,
) -> Option<Vec<f64>> {
    let t = g.constant(v)?;
    if t.dtype() != dt || t.shape().len() > x_rank {
        return None;
    }
    let lead = x_rank - t.shape().len();
    // Right-aligned dims of the parameter over x's axes.
    let pdim = |i: usize| if i < lead { 1 } else { t.shape()[i - lead] };
    for i in 0..x_rank {
        let p = pdim(i);
        if i < axis {
            if p != 1 {
                return None;
            }
        } else if p != 1 && p != norm[i - axis] {
            return None;
        }
    }
    let data = t.to_f64_vec()?;
    // Broadcast to `norm`.
    let pshape: Vec<usize> = (axis..x_rank).map(pdim).collect();
    let total: usize = norm.iter().product();
    let mut out = Vec::with_capacity(total);
    for flat in 0..total {
        let mut rem = flat;
        let mut idx = 0usize;
        let mut stride = 1usize;
        let mut coords = vec![0usize; norm.len()];
        for j in (0..norm.len()).rev() {
            coords[j] = rem % norm[j];
            rem /= norm[j];
        }
        for j in (0..norm.len()).rev() {
            let c = if pshape[j] == 1 { 0 } else { coords[j] };
            idx += c * stride;
            stride *= pshape[j];
        }
        out.push(*data.get(idx)?);
    }
    Some(out)
}

fn fuse_one(g: &mut Graph, r1: NodeId) -> Option<()> {
    let x = input(g, r1, 0)?;
    let dt = dtype(g, x)?;
    if !is_float(dt) {
        return None;
    }
    let x_rank = rank(g, x);
    let axis = trailing_axes(g, r1, x_rank)?;
    let m = out0(g, r1)?;
    // d = x - m
    let sub = only_user(g, m)?;
    if !matches!(g.node(sub).op, Op::Sub) || binary(g, sub)? != (x, m) {
        return None;
    }
    let d = out0(g, sub)?;
    let users = readers(g, d)?;
    if users.len() != 2 {
        return None;
    }
    // The square and the normalizing node, in either order.
    let is_square = |g: &Graph, n: NodeId| match g.node(n).op {
        Op::Pow => binary(g, n)
            .is_some_and(|(a, e)| a == d && e != d && scalar_for(g, e, x_rank) == Some(2.0)),
        Op::Mul => binary(g, n) == Some((d, d)),
        _ => false,
    };
    let (sq, norm) = if is_square(g, users[0]) {
        (users[0], users[1])
    } else if is_square(g, users[1]) {
        (users[1], users[0])
    } else {
        return None;
    };
    let q = out0(g, sq)?;
    let r2 = only_user(g, q)?;
    if !matches!(g.node(r2).op, Op::ReduceMean(_))
        || input(g, r2, 0)? != q
        || trailing_axes(g, r2, x_rank)? != axis
    {
        return None;
    }
    let v = out0(g, r2)?;
    let add = only_user(g, v)?;
    if !matches!(g.node(add).op, Op::Add) {
        return None;
    }
    let eps_v = other_operand(g, add, v)?;
    let eps = scalar_for(g, eps_v, x_rank)?;
    if eps_v == v || !(eps >= 0.0 && eps.is_finite()) {
        return None;
    }
    let ve = out0(g, add)?;
    let sqrt = only_user(g, ve)?;
    if !matches!(g.node(sqrt).op, Op::Sqrt) {
        return None;
    }
    let s = out0(g, sqrt)?;
    let mut pattern = vec![r1, sub, sq, r2, add, sqrt, norm];
    match g.node(norm).op {
        Op::Div => {
            if binary(g, norm)? != (d, s) || !single_use(g, s) {
                return None;
            }
        }
        Op::Mul => {
            let rcp = only_user(g, s)?;
            if !matches!(g.node(rcp).op, Op::Reciprocal)
                || other_operand(g, norm, d)? != out0(g, rcp)?
            {
                return None;
            }
            if !single_use(g, out0(g, rcp)?) {
                return None;
            }
            pattern.push(rcp);
        }
        _ => return None,
    }
    let mut last = out0(g, norm)?;
    // Normalized shape (needed to materialize gamma/beta or a ones scale).
    let norm_shape: Option<Vec<usize>> = x_rank.and_then(|r| {
        let xs = shape(g, x)?;
        let k = (r as i64 + axis) as usize;
        xs.0[k..]
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n as usize),
                _ => None,
            })
            .collect()
    });
    let mut gamma: Option<(ValueId, Vec<f64>)> = None;
    let mut beta: Option<(ValueId, Vec<f64>)> = None;
    if let (Some(r), Some(ns)) = (x_rank, &norm_shape) {
        let k = (r as i64 + axis) as usize;
        if let Some(mul) = only_user(g, last).filter(|&n| matches!(g.node(n).op, Op::Mul)) {
            if let Some(p) = other_operand(g, mul, last)
                .filter(|&p| p != last)
                .and_then(|p| affine_param(g, p, r, k, ns, dt))
            {
                gamma = Some((other_operand(g, mul, last)?, p));
                pattern.push(mul);
                last = out0(g, mul)?;
            }
        }
        if let Some(addb) = only_user(g, last).filter(|&n| matches!(g.node(n).op, Op::Add)) {
            if let Some(p) = other_operand(g, addb, last)
                .filter(|&p| p != last)
                .and_then(|p| affine_param(g, p, r, k, ns, dt))
            {
                beta = Some((other_operand(g, addb, last)?, p));
                pattern.push(addb);
                last = out0(g, addb)?;
            }
        }
    }
    // LayerNormalization needs a scale: ones when the pattern had none. A parameter already
    // in the normalized shape is used as it is; others are materialized in that shape.
    let ns = norm_shape?;
    let name = g.node(*pattern.last()?).name.clone();
    let as_is = |g: &Graph, p: &Option<(ValueId, Vec<f64>)>| {
        p.as_ref()
            .map(|(v, _)| *v)
            .filter(|&v| g.constant(v).is_some_and(|t| t.shape() == ns.as_slice()))
    };
    let (gamma_v, beta_v) = (as_is(g, &gamma), as_is(g, &beta));
    let gt = match gamma_v {
        Some(_) => None,
        None => {
            let data = gamma.map_or_else(|| vec![1.0; ns.iter().product()], |(_, d)| d);
            Some(float_tensor(dt, ns.clone(), &data)?)
        }
    };
    let bt = match (&beta, beta_v) {
        (Some((_, d)), None) => Some(float_tensor(dt, ns.clone(), d)?),
        _ => None,
    };
    let op = Op::LayerNormalization(LayerNormAttrs {
        axis,
        epsilon: eps as f32,
        stash_type: if dt == DType::F64 { 11 } else { 1 },
    });
    // Check inference before touching the graph.
    let cty = |v: Option<ValueId>, t: &Option<pare_ir::Tensor>| match (v, t) {
        (Some(v), _) => Some(ty(g, v).clone()),
        (None, Some(t)) => Some(const_type(t)),
        (None, None) => None,
    };
    let tys = [Some(ty(g, x).clone()), cty(gamma_v, &gt), cty(beta_v, &bt)];
    let consts = [
        None,
        gamma_v.and_then(|v| g.constant(v)).or(gt.as_ref()),
        beta_v.and_then(|v| g.constant(v)).or(bt.as_ref()),
    ];
    if !precheck(g, &op, &tys, &consts, last) {
        return None;
    }
    let ln_name = if name.is_empty() {
        "layernorm".to_string()
    } else {
        name
    };
    let gv = match (gamma_v, gt) {
        (Some(v), _) => v,
        (None, Some(t)) => g.add_const(format!("{ln_name}/scale"), t),
        (None, None) => return None,
    };
    let bv = match (beta_v, bt) {
        (Some(v), _) => Some(v),
        (None, Some(t)) => Some(g.add_const(format!("{ln_name}/bias"), t)),
        (None, None) => None,
    };
    let ln = add_replacement(g, &ln_name, op, vec![Some(x), Some(gv), bv], last)?;
    replace_value(g, last, ln);
    remove_dead(g, &pattern);
    Some(())
}
