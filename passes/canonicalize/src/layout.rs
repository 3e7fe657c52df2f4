//! `simplify-layout`: transpose and reshape elimination.

use crate::util::{
    const_ints, forward, i64_tensor, norm_axes, remove_if_dead, same_shape, shape_of, Names,
};
use pare_ir::op::{ReshapeAttrs, TransposeAttrs};
use pare_ir::{Dim, Graph, NodeId, Op, Shape, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// Transpose and reshape elimination.
///
/// **What it does.** In topological order over the top-level graph:
///
/// - `Transpose(Transpose(x, p1), p2)` becomes `Transpose(x, p)` with `p[j] = p1[p2[j]]`,
///   or `x` itself when `p` is the identity. A permutation left out (reverse the axes) is
///   resolved with the rank, which must then be known.
/// - A chain of reshape-like ops (`Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`: they keep the
///   row-major element order and change only the shape) becomes one node on the chain's
///   input `x`: `x` itself when the chain's result shape equals `x`'s (every extent fixed and
///   equal, or the same symbol), otherwise one `Reshape(x, c)` with a constant target `c`
///   when that target is exact: fixed extents are written as numbers, a symbolic extent
///   equal to `x`'s extent at the same position as `0` (copy), and at most one other extent
///   as `-1`, only when every other entry is a known positive number (a `-1` next to a
///   zero-sized extent is ambiguous). A target with a fixed `0` extent is written literally
///   with `allowzero=1`, and then every extent must be fixed. Otherwise the chain is left.
/// - `Squeeze(Unsqueeze(x, a), a)` and `Unsqueeze(Squeeze(x, a), a)` with the same constant
///   axes (after normalizing negative axes against the ranks involved) become `x`, also when
///   extents are unknown; the rank of `x` must be known.
/// - A single reshape-like node whose result shape equals its operand's (as above) becomes
///   its operand.
///
/// The inner nodes of a rewritten chain stay for their other readers, if any (`dce` removes
/// them otherwise), so no rewrite adds a node.
///
/// **Needs.** Result types from inference: the extents the rewrites write down are the ones
/// the value types state. **Guarantees.** Exact: data is never moved differently, only the
/// same permutation or the same shape is reached in fewer steps. A graph output keeps its
/// name (forwarding moves the name to the operand; it does not forward onto a graph input,
/// another graph output or a constant). Subgraphs are not entered.
///
/// Reference: onnxruntime's `TransposeOptimizer` (transpose cancellation) and
/// `ReshapeFusion`, onnx-simplifier's `eliminate_nop_transpose` / `fuse_consecutive_*`.
#[derive(Clone, Debug, Default)]
pub struct SimplifyLayout;

const NAME: &str = "simplify-layout";

struct Counts {
    names: Names,
    transposes: u64,
    reshapes: u64,
    removed: u64,
}

impl Pass for SimplifyLayout {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let order = g
            .topo_order()
            .map_err(|e| PassError::failed(NAME, e.to_string()))?;
        let mut c = Counts {
            names: Names::of(g),
            transposes: 0,
            reshapes: 0,
            removed: 0,
        };
        for n in order {
            if g.node(n).is_dead() {
                continue;
            }
            match g.node(n).op {
                Op::Transpose(_) => transpose(g, n, &mut c),
                Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze | Op::Unsqueeze => {
                    reshape_like(g, n, &mut c)
                }
                _ => {}
            }
        }
        let mut r = PassReport::counted("transposes-composed", c.transposes)
            .with_stat("reshapes-composed", c.reshapes)
            .with_stat("nodes-bypassed", c.removed);
        r.changed = c.transposes + c.reshapes + c.removed > 0;
        Ok(r)
    }
}

/// The permutation of a Transpose over rank `rank` (when known).
fn perm_of(op: &Op, rank: Option<usize>) -> Option<Vec<usize>> {
    let Op::Transpose(a) = op else { return None };
    match &a.perm {
        Some(p) => {
            let r = p.len();
            let mut v: Vec<usize> = p
                .iter()
                .map(|&q| usize::try_from(q).ok().filter(|&q| q < r))
                .collect::<Option<_>>()?;
            let out = v.clone();
            v.sort_unstable();
            v.dedup();
            (v.len() == r && rank.is_none_or(|k| k == r)).then_some(out)
        }
        None => rank.map(|r| (0..r).rev().collect()),
    }
}

/// Bypasses `n` (result 0) in favour of `x`; counts it.
fn bypass(g: &mut Graph, n: NodeId, x: ValueId, c: &mut Counts) {
    let y = g.node(n).outputs()[0];
    if forward(g, y, x) {
        remove_if_dead(g, n);
        c.removed += 1;
    }
}

fn transpose(g: &mut Graph, n: NodeId, c: &mut Counts) {
    let Some(y) = g.node(n).input(0) else { return };
    let Some(inner) = g.producer(y) else { return };
    if !matches!(g.node(inner).op, Op::Transpose(_)) {
        return;
    }
    let Some(x) = g.node(inner).input(0) else {
        return;
    };
    let rank = shape_of(g, x).map(Shape::rank);
    let (Some(p1), Some(p2)) = (
        perm_of(&g.node(inner).op, rank),
        perm_of(&g.node(n).op, rank.or(shape_of(g, y).map(Shape::rank))),
    ) else {
        return;
    };
    if p1.len() != p2.len() {
        return;
    }
    let p: Vec<usize> = p2.iter().map(|&j| p1[j]).collect();
    if p.iter().enumerate().all(|(i, &q)| i == q) {
        bypass(g, n, x, c);
        return;
    }
    g.set_operand(n, 0, Some(x));
    *g.op_mut(n) = Op::Transpose(TransposeAttrs {
        perm: Some(p.iter().map(|&q| q as i64).collect()),
    });
    remove_if_dead(g, inner);
    c.transposes += 1;
}

fn is_reshape_like(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape(_) | Op::Flatten(_) | Op::Squeeze | Op::Unsqueeze
    )
}

fn reshape_like(g: &mut Graph, n: NodeId, c: &mut Counts) {
    let Some(y) = g.node(n).input(0) else { return };
    let Some(&out) = g.node(n).outputs().first() else {
        return;
    };
    // Squeeze∘Unsqueeze and Unsqueeze∘Squeeze with the same axes.
    if let Some(x) = squeeze_pair(g, n) {
        bypass(g, n, x, c);
        return;
    }
    let out_shape = shape_of(g, out).cloned();
    // A chain: the operand comes from another reshape-like node.
    if let Some(inner) = g.producer(y).filter(|&p| is_reshape_like(&g.node(p).op)) {
        if let (Some(x), Some(os)) = (g.node(inner).input(0), out_shape.as_ref()) {
            if let Some(xs) = shape_of(g, x).cloned() {
                if same_shape(&xs, os) {
                    bypass(g, n, x, c);
                    if g.node(n).is_dead() {
                        remove_if_dead(g, inner);
                        return;
                    }
                } else if let Some((target, allowzero)) = express(&xs, os) {
                    let name = c.names.fresh(&format!("{}_shape", g.value(out).name));
                    let t = g.add_const(name, i64_tensor(&target));
                    *g.op_mut(n) = Op::Reshape(ReshapeAttrs { allowzero });
                    g.set_operands(n, vec![Some(x), Some(t)]);
                    remove_if_dead(g, inner);
                    c.reshapes += 1;
                    return;
                }
            }
        }
    }
    // A single node that keeps its operand's shape.
    if let (Some(ys), Some(os)) = (shape_of(g, y), out_shape.as_ref()) {
        if same_shape(ys, os) {
            bypass(g, n, y, c);
        }
    }
}

/// `Squeeze(Unsqueeze(x, a), a)` or `Unsqueeze(Squeeze(x, a), a)`: returns `x`.
fn squeeze_pair(g: &Graph, n: NodeId) -> Option<ValueId> {
    let node = g.node(n);
    let y = node.input(0)?;
    let inner = g.producer(y)?;
    let inode = g.node(inner);
    let x = inode.input(0)?;
    let r = shape_of(g, x)?.rank();
    let outer_axes = const_ints(g, node.input(1)?)?;
    let inner_axes = const_ints(g, inode.input(1)?)?;
    let (a, b) = match (&node.op, &inode.op) {
        // Unsqueeze raises the rank to r + k; the Squeeze axes refer to that rank.
        (Op::Squeeze, Op::Unsqueeze) => {
            let ru = r + inner_axes.len();
            (norm_axes(&outer_axes, ru)?, norm_axes(&inner_axes, ru)?)
        }
        // Squeeze lowers the rank to r - k; Unsqueeze axes refer to its output rank, r again.
        (Op::Unsqueeze, Op::Squeeze) => (norm_axes(&outer_axes, r)?, norm_axes(&inner_axes, r)?),
        _ => return None,
    };
    (a == b).then_some(x)
}

/// A constant Reshape target (and allowzero) taking an input of shape `x` to shape `out`
/// exactly, when one exists (see the pass doc).
fn express(x: &Shape, out: &Shape) -> Option<(Vec<i64>, bool)> {
    if out.0.contains(&Dim::Fixed(0)) {
        let dims = out.as_fixed()?;
        return Some((dims.iter().map(|&d| d as i64).collect(), true));
    }
    let mut t = Vec::with_capacity(out.rank());
    let mut unknown = 0;
    let mut others_positive = true;
    for (i, d) in out.0.iter().enumerate() {
        match d {
            Dim::Fixed(k) => t.push(i64::try_from(*k).ok()?),
            Dim::Sym(s) if x.0.get(i) == Some(&Dim::Sym(s.clone())) => {
                others_positive = false;
                t.push(0);
            }
            _ => {
                unknown += 1;
                t.push(-1);
            }
        }
    }
    match unknown {
        0 => Some((t, false)),
        1 if others_positive => Some((t, false)),
        _ => None,
    }
}
