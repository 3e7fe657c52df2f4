//! Matching and rewriting helpers shared by the fusion passes.

use half::{bf16, f16};
use pare_ir::infer::{infer_node, merge_type};
use pare_ir::{DType, Dim, Graph, NodeId, Op, Shape, Tensor, TensorType, Use, ValueId};

/// The node producing `v`, when it is a node output.
pub(crate) fn producer(g: &Graph, v: ValueId) -> Option<NodeId> {
    g.producer(v)
}

/// The single reader of `v`: a node operand, not a graph output.
pub(crate) fn only_user(g: &Graph, v: ValueId) -> Option<NodeId> {
    match g.uses(v) {
        [Use::Node { node, .. }] => Some(*node),
        _ => None,
    }
}

/// True when `v` is read exactly once, by a node (so its producer can go once that node does).
pub(crate) fn single_use(g: &Graph, v: ValueId) -> bool {
    only_user(g, v).is_some()
}

/// The node's first output.
pub(crate) fn out0(g: &Graph, n: NodeId) -> Option<ValueId> {
    g.node(n).outputs().first().copied()
}

/// Operand `i` of node `n` (present).
pub(crate) fn input(g: &Graph, n: NodeId, i: usize) -> Option<ValueId> {
    g.node(n).input(i)
}

/// The two operands of a binary node.
pub(crate) fn binary(g: &Graph, n: NodeId) -> Option<(ValueId, ValueId)> {
    let node = g.node(n);
    if node.inputs().len() != 2 {
        return None;
    }
    Some((node.input(0)?, node.input(1)?))
}

/// For a commutative binary node with operands `{a, other}`, the operand that is not `a`.
pub(crate) fn other_operand(g: &Graph, n: NodeId, a: ValueId) -> Option<ValueId> {
    let (x, y) = binary(g, n)?;
    if x == a {
        Some(y)
    } else if y == a {
        Some(x)
    } else {
        None
    }
}

/// The single element of a float constant with one element, as f64.
pub(crate) fn scalar_const(g: &Graph, v: ValueId) -> Option<f64> {
    let t = g.constant(v)?;
    if t.numel() != 1 || !is_float(t.dtype()) {
        return None;
    }
    t.to_f64_vec()?.first().copied()
}

/// A one-element float constant whose rank does not exceed `rank` (so broadcasting with it
/// cannot add dimensions to a tensor of that rank).
pub(crate) fn scalar_for(g: &Graph, v: ValueId, rank: Option<usize>) -> Option<f64> {
    let t = g.constant(v)?;
    let r = t.shape().len();
    match rank {
        Some(k) if r <= k => scalar_const(g, v),
        None if r == 0 => scalar_const(g, v),
        _ => None,
    }
}

/// `|a - b| <= tol·|b|`.
pub(crate) fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs()
}

/// Float dtypes the fusions handle.
pub(crate) fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// The type of `v`.
pub(crate) fn ty(g: &Graph, v: ValueId) -> &TensorType {
    &g.value(v).ty
}

/// The shape of `v`, when its rank is known.
pub(crate) fn shape(g: &Graph, v: ValueId) -> Option<&Shape> {
    g.value(v).ty.shape.as_ref()
}

/// The rank of `v`, when known.
pub(crate) fn rank(g: &Graph, v: ValueId) -> Option<usize> {
    shape(g, v).map(Shape::rank)
}

/// The dtype of `v`, when known.
pub(crate) fn dtype(g: &Graph, v: ValueId) -> Option<DType> {
    g.value(v).ty.dtype
}

/// Two dims that are provably equal: the same fixed extent or the same symbol.
pub(crate) fn same_dim(a: &Dim, b: &Dim) -> bool {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
        (Dim::Sym(x), Dim::Sym(y)) => x == y,
        _ => false,
    }
}

/// A tensor of `dtype` (a float type) from f64 data.
pub(crate) fn float_tensor(dtype: DType, shape: Vec<usize>, data: &[f64]) -> Option<Tensor> {
    if shape.iter().product::<usize>() != data.len() {
        return None;
    }
    Some(match dtype {
        DType::F32 => Tensor::from_vec(shape, data.iter().map(|&x| x as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, data.to_vec()),
        DType::F16 => Tensor::from_vec(shape, data.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BF16 => Tensor::from_vec(shape, data.iter().map(|&x| bf16::from_f64(x)).collect()),
        _ => return None,
    })
}

/// Output types of `op` applied to `inputs` in `g`, or `None` if inference rejects it.
pub(crate) fn infer(
    g: &Graph,
    op: &Op,
    inputs: &[Option<ValueId>],
    num_outputs: usize,
) -> Option<Vec<TensorType>> {
    let tys: Vec<Option<TensorType>> = inputs.iter().map(|v| v.map(|v| ty(g, v).clone())).collect();
    let consts: Vec<Option<Tensor>> = inputs
        .iter()
        .map(|v| v.and_then(|v| g.constant(v).cloned()))
        .collect();
    let tr: Vec<Option<&TensorType>> = tys.iter().map(Option::as_ref).collect();
    let cr: Vec<Option<&Tensor>> = consts.iter().map(Option::as_ref).collect();
    infer_node(op, &tr, &cr, num_outputs).ok()
}

/// Adds a one-output node computing what `replaces` computes, typed by inference merged with
/// the type `replaces` already has, and named like it. `None` (graph unchanged) when
/// inference rejects the node or contradicts the known type.
pub(crate) fn add_replacement(
    g: &mut Graph,
    node_name: &str,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    replaces: ValueId,
) -> Option<ValueId> {
    let mut inputs = inputs;
    while inputs.last() == Some(&None) {
        inputs.pop();
    }
    let inferred = infer(g, &op, &inputs, 1)?.into_iter().next()?;
    let ty = merge_type(&g.value(replaces).ty, &inferred).ok()?;
    let name = g.value(replaces).name.clone();
    let n = g.add_node(node_name, op, inputs, vec![name]);
    let out = out0(g, n)?;
    g.set_type(out, ty);
    Some(out)
}

/// Adds a one-output helper node (typed by inference), or `None` when inference rejects it.
pub(crate) fn add_typed(
    g: &mut Graph,
    name: &str,
    op: Op,
    inputs: Vec<Option<ValueId>>,
) -> Option<ValueId> {
    let t = infer(g, &op, &inputs, 1)?.into_iter().next()?;
    let n = g.add_node(name, op, inputs, vec![name.to_string()]);
    let out = out0(g, n)?;
    g.set_type(out, t);
    Some(out)
}

/// Makes every reader of `old` read `new`, which takes over `old`'s name (graph output names
/// survive) and the more specific of the two types.
pub(crate) fn replace_value(g: &mut Graph, old: ValueId, new: ValueId) {
    if old == new {
        return;
    }
    let name = g.value(old).name.clone();
    if let Ok(t) = merge_type(&g.value(old).ty, &g.value(new).ty) {
        g.set_type(new, t);
    }
    g.replace_all_uses(old, new);
    g.set_name(new, name);
}

/// Removes those of `nodes` whose outputs nobody reads, repeatedly (in any order).
pub(crate) fn remove_dead(g: &mut Graph, nodes: &[NodeId]) {
    loop {
        let mut progress = false;
        for &n in nodes {
            if !g.node(n).is_dead() && g.remove_node(n) {
                progress = true;
            }
        }
        if !progress {
            return;
        }
    }
}

/// A fresh node name derived from `base`.
pub(crate) fn derived_name(g: &Graph, n: NodeId, suffix: &str) -> String {
    let base = &g.node(n).name;
    if base.is_empty() {
        suffix.to_string()
    } else {
        format!("{base}/{suffix}")
    }
}

/// Runs `f` on `g` and, recursively, on every subgraph of its nodes (If branches, Loop and
/// Scan bodies); returns the summed count.
pub(crate) fn on_all_graphs(g: &mut Graph, f: &mut dyn FnMut(&mut Graph) -> u64) -> u64 {
    let mut n = f(g);
    let ids: Vec<NodeId> = g.node_ids().collect();
    for id in ids {
        for sg in g.op_mut(id).subgraphs_mut() {
            n += on_all_graphs(sg, f);
        }
    }
    n
}

/// Whether `op` applied to operands of types `tys` (constants given where known) infers a
/// type compatible with `replaces`: checked before constants are added, so a rejected rewrite
/// leaves nothing behind.
pub(crate) fn precheck(
    g: &Graph,
    op: &Op,
    tys: &[Option<TensorType>],
    consts: &[Option<&Tensor>],
    replaces: ValueId,
) -> bool {
    let tr: Vec<Option<&TensorType>> = tys.iter().map(Option::as_ref).collect();
    match infer_node(op, &tr, consts, 1) {
        Ok(t) => t
            .first()
            .is_some_and(|t| merge_type(&g.value(replaces).ty, t).is_ok()),
        Err(_) => false,
    }
}

/// The type of a constant tensor.
pub(crate) fn const_type(t: &Tensor) -> TensorType {
    TensorType::new(t.dtype(), Shape::fixed(t.shape()))
}
