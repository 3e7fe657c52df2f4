//! `fuse-gelu`: the decomposed GELU that exporters emit → `Gelu`.
//!
//! **What it does.** Recognizes the exact (erf) form
//!
//! ```text
//! a = Add(Erf(Div(x, √2) | Mul(x, 1/√2)), 1)
//! y = 0.5·x·a   as Mul(Mul(x, a), 0.5) | Div(Mul(x, a), 2) | Mul(Mul(x, 0.5), a)
//!               | Mul(Mul(a, 0.5), x)
//! ```
//!
//! and the tanh approximation
//!
//! ```text
//! c = Pow(x, 3) | Mul(x, Mul(x, x)) | Mul(Mul(x, x), x)
//! a = Add(Tanh(Mul(Add(x, Mul(c, 0.044715)), √(2/π))), 1)
//! y = 0.5·x·a   (the same product orders)
//! ```
//!
//! with every binary op's operands in either order, and replaces `y` (keeping its name) by
//! `Gelu(x)` resp. `Gelu(x) {approximate = "tanh"}`.
//!
//! **Needs.** A float `x`; one-element constants equal to √2, 1/√2, 1, 0.5, 3, 0.044715 and
//! √(2/π) within 1e-6 relative for f32/f64 (so 1.4142135 and 0.70710678 both match; 1e-3 for
//! f16 and 8e-3 for bf16, whose nearest values are that far off), none of them of
//! higher rank than `x` (a `[1,1]` constant would broadcast a vector to a matrix); every
//! intermediate value read only inside the pattern (`x` may have other readers).
//!
//! **Guarantees.** Exact up to float rounding: Gelu (opset 20) is defined as exactly these
//! formulas.
//!
//! **Reference.** Hendrycks & Gimpel 2016, "Gaussian Error Linear Units (GELUs)"; the erf form
//! is `torch.nn.GELU()` as `torch.onnx.export` writes it before opset 20, the tanh form is
//! `GELU(approximate="tanh")` / HuggingFace `NewGELUActivation`.

use crate::util::*;
use pare_ir::op::GeluAttrs;
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// What the constants are compared with: x's rank (a constant may not exceed it) and the
/// relative tolerance of x's dtype (1e-6 for f32/f64; half types store 1.4142135 as 1.4140625).
#[derive(Clone, Copy)]
struct X {
    rank: Option<usize>,
    tol: f64,
}

fn tolerance(d: DType) -> f64 {
    match d {
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        _ => 1e-6,
    }
}

/// The `fuse-gelu` pass.
#[derive(Default)]
pub struct FuseGelu;

impl Pass for FuseGelu {
    fn name(&self) -> &str {
        "fuse-gelu"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Matching needs shapes: fill in what inference can (a failure leaves types as they are).
        let _ = pare_ir::infer::infer_types(g);
        let mut erf = 0;
        let mut tanh = 0;
        let mut f = |g: &mut Graph| -> u64 {
            let ids: Vec<NodeId> = g.node_ids().collect();
            let mut n = 0;
            for id in ids {
                if g.node(id).is_dead() {
                    continue;
                }
                let r = match g.node(id).op {
                    Op::Erf => fuse_erf(g, id).map(|_| &mut erf),
                    Op::Tanh => fuse_tanh(g, id).map(|_| &mut tanh),
                    _ => None,
                };
                if let Some(c) = r {
                    *c += 1;
                    n += 1;
                }
            }
            n
        };
        on_all_graphs(g, &mut f);
        Ok(PassReport::counted("fused-erf", erf).with_stat("fused-tanh", tanh))
    }
}

/// `Mul(v, c)` / `Mul(c, v)` / (when `div`) `Div(v, c)`: the constant's value.
fn scaled_by(g: &Graph, n: NodeId, v: ValueId, rank: Option<usize>, div: bool) -> Option<f64> {
    match g.node(n).op {
        Op::Mul => {
            let c = other_operand(g, n, v)?;
            if c == v {
                return None;
            }
            scalar_for(g, c, rank)
        }
        Op::Div if div => {
            let (a, c) = binary(g, n)?;
            if a != v || c == v {
                return None;
            }
            scalar_for(g, c, rank).map(|c| 1.0 / c)
        }
        _ => None,
    }
}

/// The node reading `v` (its only reader) when it is `Add(v, 1)`.
fn plus_one(g: &Graph, v: ValueId, x: X) -> Option<NodeId> {
    let add = only_user(g, v)?;
    if !matches!(g.node(add).op, Op::Add) {
        return None;
    }
    let c = other_operand(g, add, v)?;
    (c != v && close(scalar_for(g, c, x.rank)?, 1.0, x.tol)).then_some(add)
}

/// `y = 0.5·x·a` in one of its product orders: `(y, tail nodes)`.
fn half_x_times(g: &Graph, x: ValueId, a: ValueId, xk: X) -> Option<(ValueId, Vec<NodeId>)> {
    let rank = xk.rank;
    let half = |c: Option<f64>| c.is_some_and(|c| close(c, 0.5, xk.tol));
    let u = only_user(g, a)?;
    if !matches!(g.node(u).op, Op::Mul) {
        return None;
    }
    let other = other_operand(g, u, a)?;
    let uo = out0(g, u)?;
    if other == a {
        return None;
    }
    if other == x {
        // Mul(Mul(x, a), 0.5) or Div(Mul(x, a), 2)
        let m2 = only_user(g, uo)?;
        if half(scaled_by(g, m2, uo, rank, true)) {
            return Some((out0(g, m2)?, vec![u, m2]));
        }
        return None;
    }
    if half(scalar_for(g, other, rank)) {
        // Mul(Mul(a, 0.5), x)
        let m2 = only_user(g, uo)?;
        if matches!(g.node(m2).op, Op::Mul) && other_operand(g, m2, uo)? == x && x != uo {
            return Some((out0(g, m2)?, vec![u, m2]));
        }
        return None;
    }
    // Mul(Mul(x, 0.5), a)
    let h = producer(g, other)?;
    if single_use(g, other) && half(scaled_by(g, h, x, rank, false)) {
        return Some((uo, vec![h, u]));
    }
    None
}

fn finish(
    g: &mut Graph,
    x: ValueId,
    y: ValueId,
    approximate: &str,
    nodes: &[NodeId],
) -> Option<()> {
    let last = producer(g, y)?;
    let name = derived_name(g, last, "gelu");
    let gelu = add_replacement(
        g,
        &name,
        Op::Gelu(GeluAttrs {
            approximate: approximate.into(),
        }),
        vec![Some(x)],
        y,
    )?;
    replace_value(g, y, gelu);
    remove_dead(g, nodes);
    Some(())
}

fn float_input(g: &Graph, x: ValueId) -> Option<X> {
    let d = dtype(g, x)?;
    is_float(d).then(|| X {
        rank: rank(g, x),
        tol: tolerance(d),
    })
}

fn fuse_erf(g: &mut Graph, erf: NodeId) -> Option<()> {
    let t = input(g, erf, 0)?;
    if !single_use(g, t) {
        return None;
    }
    let scale = producer(g, t)?;
    // x / √2 or x · (1/√2): find x as the non-constant operand.
    let (p, q) = binary(g, scale)?;
    let x = if g.constant(p).is_none() { p } else { q };
    let xk = float_input(g, x)?;
    let s = scaled_by(g, scale, x, xk.rank, true)?;
    if !close(s, std::f64::consts::FRAC_1_SQRT_2, xk.tol) {
        return None;
    }
    let add = plus_one(g, out0(g, erf)?, xk)?;
    let a = out0(g, add)?;
    let (y, tail) = half_x_times(g, x, a, xk)?;
    let mut nodes = vec![scale, erf, add];
    nodes.extend(tail);
    finish(g, x, y, "none", &nodes)
}

/// `x³` as Pow(x, 3), Mul(x, Mul(x, x)) or Mul(Mul(x, x), x): the nodes.
fn cube_of(g: &Graph, c: ValueId, x: ValueId, xk: X) -> Option<Vec<NodeId>> {
    let n = producer(g, c)?;
    match g.node(n).op {
        Op::Pow => {
            let (b, e) = binary(g, n)?;
            (b == x && e != x && close(scalar_for(g, e, xk.rank)?, 3.0, xk.tol)).then(|| vec![n])
        }
        Op::Mul => {
            let sq = other_operand(g, n, x)?;
            if sq == x || !single_use(g, sq) {
                return None;
            }
            let m = producer(g, sq)?;
            (matches!(g.node(m).op, Op::Mul) && binary(g, m)? == (x, x)).then(|| vec![m, n])
        }
        _ => None,
    }
}

fn fuse_tanh(g: &mut Graph, th: NodeId) -> Option<()> {
    let u = input(g, th, 0)?;
    if !single_use(g, u) {
        return None;
    }
    let mu = producer(g, u)?;
    if !matches!(g.node(mu).op, Op::Mul) {
        return None;
    }
    // u = s · √(2/π)
    let (p, q) = binary(g, mu)?;
    let s = if g.constant(p).is_none() { p } else { q };
    if !single_use(g, s) {
        return None;
    }
    let sa = producer(g, s)?;
    if !matches!(g.node(sa).op, Op::Add) {
        return None;
    }
    let (p, q) = binary(g, sa)?;
    // s = x + 0.044715·x³ with the operands in either order.
    for (x, c) in [(p, q), (q, p)] {
        let Some(xk) = float_input(g, x) else {
            continue;
        };
        let rank = xk.rank;
        if x == c || !single_use(g, c) {
            continue;
        }
        let Some(mc) = producer(g, c) else { continue };
        if !matches!(g.node(mc).op, Op::Mul) {
            continue;
        }
        let (m0, m1) = match binary(g, mc) {
            Some(b) => b,
            None => continue,
        };
        let cube = if g.constant(m0).is_none() { m0 } else { m1 };
        let k = scaled_by(g, mc, cube, rank, false);
        if !k.is_some_and(|k| close(k, 0.044715, xk.tol)) || !single_use(g, cube) {
            continue;
        }
        let Some(cube_nodes) = cube_of(g, cube, x, xk) else {
            continue;
        };
        let c1 = scaled_by(g, mu, s, rank, false)?;
        if !close(c1, (2.0 / std::f64::consts::PI).sqrt(), xk.tol) {
            return None;
        }
        let add = plus_one(g, out0(g, th)?, xk)?;
        let a = out0(g, add)?;
        let (y, tail) = half_x_times(g, x, a, xk)?;
        let mut nodes = cube_nodes;
        nodes.extend([mc, sa, mu, th, add]);
        nodes.extend(tail);
        return finish(g, x, y, "tanh", &nodes);
    }
    None
}
