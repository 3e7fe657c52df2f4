//! `fold-shapes`: turns shape computations whose values are known at compile time into
//! constants.

use crate::util::{
    const_ints, i64_tensor, int_tensor, remove_if_dead, replace_with_const, shape_of, Names,
};
use pare_ir::infer::{tracked_values, SV};
use pare_ir::{Dim, Graph, NodeId, Op, Use, ValueDef, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
use std::collections::HashMap;

/// Shape folding.
///
/// **What it does.** Runs type inference's value tracking
/// ([`pare_ir::infer::tracked_values`]), which follows small integer tensors through
/// `Shape`, `Size`, `Gather`, `Slice`, `Concat`, `Unsqueeze`/`Squeeze`/`Reshape`, `Cast`,
/// integer arithmetic, comparisons, `Where`, `ConstantOfShape` and `Range`, carrying fixed
/// extents as integers and symbolic extents as symbols. Then, on the top-level graph:
///
/// 1. Every node output whose elements are all known integers (say `Shape(x)` of an `x` with
///    fixed extents, `Gather(Shape(x), 1)` of a fixed extent `x[1]` while `x[0]` is `N`, or a
///    whole `Shape → Gather → Unsqueeze → Concat` chain over fixed extents) becomes a
///    constant of its dtype and static shape, named like the value. Only the *frontier* is
///    replaced, values read by at least one node whose own outputs are not all known; the
///    interior of a known chain becomes dead and is left to `dce`.
/// 2. A `Reshape` whose target is only partly known gets a constant target when that is
///    exact. Each target element is what value tracking knows about it or, failing that,
///    which extent of which value it is (found by following `Shape`, `Gather`, `Concat`,
///    `Unsqueeze`, ... back: `Gather(Shape(x), 1)` is "extent 1 of x" even when that extent
///    is unknown). An element that is the input's own extent at the same position (the same
///    symbol, or literally that extent) becomes `0` (copy; only without `allowzero`), and one
///    remaining unknown element becomes `-1` when every other entry is a known positive
///    number (so that `-1` cannot be ambiguous on zero-sized inputs). `[N, S, 12, 64]` over
///    an input `[N, S, 768]` becomes `[0, 0, 12, 64]`.
/// 3. An `Expand` whose target is only partly known gets a constant target when every unknown
///    element is the input's own extent at the aligned position: it becomes `1` (an extent
///    broadcast with 1 is itself).
///
/// **Needs.** Inference must succeed on the graph (otherwise the pass does nothing and
/// says so in a note). **Guarantees.** Exact, given that the value types hold (the same
/// assumption inference makes): symbolic extents stay symbolic, so no batch size or sequence
/// length is baked in. Values that are graph outputs are not replaced (the exporter cannot
/// name a constant graph output); values that do not fit their integer dtype are left alone.
/// Follow with `fold-constants` (remaining arithmetic on constants) and `dce`.
///
/// Reference: onnx-simplifier's shape folding and onnxruntime's `ConstantSharing` /
/// symbolic shape inference, for the `Shape → Gather → Unsqueeze → Concat → Reshape` chains
/// that `torch.onnx.export` emits for `x.view(x.size(0), -1, ...)`.
#[derive(Clone, Debug, Default)]
pub struct FoldShapes;

const NAME: &str = "fold-shapes";

fn all_known(v: &[SV]) -> Option<Vec<i64>> {
    v.iter().map(SV::int).collect()
}

impl Pass for FoldShapes {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let tracked = match tracked_values(g) {
            Ok(t) => t,
            Err(e) => {
                let mut r = PassReport::unchanged();
                r.note(format!("type inference failed, nothing folded: {e}"));
                return Ok(r);
            }
        };
        let order = g
            .topo_order()
            .map_err(|e| PassError::failed(NAME, e.to_string()))?;
        let known: HashMap<ValueId, Vec<i64>> = tracked
            .iter()
            .filter_map(|(v, s)| all_known(s).map(|k| (*v, k)))
            .collect();
        let fully_known =
            |g: &Graph, m: NodeId| g.node(m).outputs().iter().all(|o| known.contains_key(o));
        let (mut folded, mut targets) = (0u64, 0u64);
        for &n in &order {
            let mut replaced = false;
            for o in g.node(n).outputs().to_vec() {
                let Some(vals) = known.get(&o) else { continue };
                if !matches!(g.value(o).def(), ValueDef::Node { .. }) {
                    continue;
                }
                let frontier = g.uses(o).iter().any(|u| match u {
                    Use::Node { node, .. } => !fully_known(g, *node),
                    Use::Output(_) => false,
                });
                if !frontier {
                    continue;
                }
                let ty = &g.value(o).ty;
                let (Some(d), Some(shape)) =
                    (ty.dtype, ty.shape.as_ref().and_then(|s| s.as_fixed()))
                else {
                    continue;
                };
                let Some(t) = int_tensor(d, shape, vals) else {
                    continue;
                };
                if replace_with_const(g, o, t).is_some() {
                    folded += 1;
                    replaced = true;
                }
            }
            if replaced {
                remove_if_dead(g, n);
            }
        }
        let mut names = Names::of(g);
        for &n in &order {
            if g.node(n).is_dead() || !matches!(g.node(n).op, Op::Reshape(_) | Op::Expand) {
                continue;
            }
            let (Some(x), Some(s)) = (g.node(n).input(0), g.node(n).input(1)) else {
                continue;
            };
            if g.constant(s).is_some() {
                continue;
            }
            let Some(srcs) = sources(g, s, &tracked, 0) else {
                continue;
            };
            let Some(xs) = shape_of(g, x) else { continue };
            let target = match &g.node(n).op {
                Op::Reshape(a) if !a.allowzero => reshape_target(x, xs, &srcs),
                Op::Expand => expand_target(x, xs, &srcs),
                _ => None,
            };
            let Some(target) = target else { continue };
            // The new target keeps the old one's name when the old one goes away.
            let sole_reader = g.uses(s).len() == 1;
            let base = g.value(s).name.clone();
            let name = if sole_reader {
                base
            } else {
                names.fresh(&format!("{base}_static"))
            };
            let c = g.add_const(name, i64_tensor(&target));
            g.set_operand(n, 1, Some(c));
            if let Some(p) = g.producer(s) {
                remove_if_dead(g, p);
            }
            targets += 1;
        }
        let mut r = PassReport::counted("folded", folded).with_stat("shape-targets", targets);
        r.changed = folded + targets > 0;
        Ok(r)
    }
}

/// What is known about one element of a small integer tensor.
#[derive(Clone, Debug, PartialEq)]
enum Src {
    /// A known integer.
    Int(i64),
    /// A symbolic extent.
    Sym(String),
    /// Extent `k` of value `v` (whatever it is at run time).
    DimOf(ValueId, usize),
    /// Nothing known.
    Unknown,
}

/// Limit on how far [`sources`] follows producers.
const MAX_DEPTH: usize = 16;

/// The elements of a small integer tensor `v` (row-major): what value tracking knows, and,
/// for elements it does not know, which extent of which value they are, found by following
/// `Shape`, `Gather`, `Concat`, `Unsqueeze`/`Squeeze`/`Reshape`/`Flatten`/`Identity` and
/// integer `Cast`s back. `None` when even the element count is unknown.
fn sources(
    g: &Graph,
    v: ValueId,
    tracked: &HashMap<ValueId, Vec<SV>>,
    depth: usize,
) -> Option<Vec<Src>> {
    if let Some(t) = g.constant(v) {
        if !t.dtype().is_int() || t.numel() > 1024 {
            return None;
        }
        return Some(t.to_i64_vec()?.into_iter().map(Src::Int).collect());
    }
    let known: Option<Vec<Src>> = tracked.get(&v).map(|vals| {
        vals.iter()
            .map(|x| match x {
                SV::Int(i) => Src::Int(*i),
                SV::Sym(s) => Src::Sym(s.clone()),
                SV::Unknown => Src::Unknown,
            })
            .collect()
    });
    let structural = if depth < MAX_DEPTH {
        g.producer(v)
            .and_then(|p| structural_sources(g, p, tracked, depth + 1))
    } else {
        None
    };
    match (known, structural) {
        (Some(k), Some(s)) if k.len() == s.len() => Some(
            k.into_iter()
                .zip(s)
                .map(|(k, s)| if k == Src::Unknown { s } else { k })
                .collect(),
        ),
        (Some(k), _) => Some(k),
        (None, s) => s,
    }
}

fn structural_sources(
    g: &Graph,
    p: NodeId,
    tracked: &HashMap<ValueId, Vec<SV>>,
    depth: usize,
) -> Option<Vec<Src>> {
    let node = g.node(p);
    if node.outputs().len() != 1 {
        return None;
    }
    let out_int = g
        .value(node.outputs()[0])
        .ty
        .dtype
        .is_some_and(|d| d.is_int());
    match &node.op {
        Op::Shape(a) => {
            let x = node.input(0)?;
            let r = i64::try_from(shape_of(g, x)?.rank()).ok()?;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (b, e) = (clamp(a.start), clamp(a.end.unwrap_or(r)));
            Some((b..e.max(b)).map(|k| Src::DimOf(x, k)).collect())
        }
        Op::Gather(a) => {
            let data = sources(g, node.input(0)?, tracked, depth)?;
            // Gather along axis 0 of a 1-D tensor: element i of the result is data[idx[i]].
            if shape_of(g, node.input(0)?)?.rank() != 1 {
                return None;
            }
            let len = i64::try_from(data.len()).ok()?;
            if a.axis != 0 && a.axis != -1 {
                return None;
            }
            let idx = const_ints(g, node.input(1)?)?;
            idx.into_iter()
                .map(|i| {
                    let i = if i < 0 { i + len } else { i };
                    usize::try_from(i).ok().and_then(|i| data.get(i).cloned())
                })
                .collect()
        }
        Op::Concat(_) => {
            // Only 1-D parts (then the axis can only be 0): the elements in order.
            let mut out = Vec::new();
            for v in node.inputs() {
                let v = (*v)?;
                if shape_of(g, v)?.rank() != 1 {
                    return None;
                }
                out.extend(sources(g, v, tracked, depth)?);
            }
            Some(out)
        }
        Op::Slice => {
            // A 1-D slice with constant starts/ends (and axes/steps, if given).
            let data = sources(g, node.input(0)?, tracked, depth)?;
            if shape_of(g, node.input(0)?)?.rank() != 1 {
                return None;
            }
            let one = |i: usize| -> Option<Option<i64>> {
                match node.input(i) {
                    None => Some(None),
                    Some(v) => match const_ints(g, v)?.as_slice() {
                        [x] => Some(Some(*x)),
                        _ => None,
                    },
                }
            };
            let (start, end) = (one(1)??, one(2)??);
            if !matches!(one(3)?, None | Some(0) | Some(-1)) {
                return None;
            }
            let step = one(4)?.unwrap_or(1);
            slice_1d(data.len(), start, end, step)
                .map(|idx| idx.into_iter().map(|i| data[i].clone()).collect())
        }
        Op::Unsqueeze | Op::Squeeze | Op::Reshape(_) | Op::Flatten(_) | Op::Identity => {
            sources(g, node.input(0)?, tracked, depth)
        }
        Op::Cast(_) if out_int => {
            let x = node.input(0)?;
            if !g.value(x).ty.dtype.is_some_and(|d| d.is_int()) {
                return None;
            }
            // A DimOf element is an extent (non-negative, small): it survives the cast;
            // tracked integers may not, so keep only extents.
            let s = sources(g, x, tracked, depth)?;
            Some(
                s.into_iter()
                    .map(|e| match e {
                        Src::DimOf(..) => e,
                        _ => Src::Unknown,
                    })
                    .collect(),
            )
        }
        _ => None,
    }
}

/// A constant `Reshape` target (no `allowzero`) equivalent to the computed one (elements
/// `srcs`) over input `x` of shape `xs`, when one exists (see the pass doc).
fn reshape_target(x: ValueId, xs: &pare_ir::Shape, srcs: &[Src]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(srcs.len());
    let mut unknown = 0usize;
    // Whether every entry but the unknown one is a known positive extent.
    let mut others_positive = true;
    for (k, v) in srcs.iter().enumerate() {
        let copies = match v {
            Src::Sym(s) => xs.0.get(k) == Some(&Dim::Sym(s.clone())),
            Src::DimOf(y, j) => *y == x && *j == k,
            _ => false,
        };
        match v {
            Src::Int(i) if *i >= -1 => {
                if *i == 0 {
                    // Copies x[k]: positive only when that extent is a fixed positive number.
                    others_positive &= xs.0.get(k).and_then(Dim::fixed).is_some_and(|d| d > 0);
                } else if *i == -1 {
                    others_positive = false;
                }
                out.push(*i);
            }
            Src::Int(_) => return None,
            _ if copies => {
                others_positive = false;
                out.push(0);
            }
            _ => {
                unknown += 1;
                out.push(-1);
            }
        }
    }
    match unknown {
        0 => Some(out),
        1 if others_positive => Some(out),
        _ => None,
    }
}

/// A constant `Expand` target equivalent to the computed one (elements `srcs`) over input
/// `x` of shape `xs`, when every unknown entry is `x`'s own extent at the aligned position
/// (written as 1).
fn expand_target(x: ValueId, xs: &pare_ir::Shape, srcs: &[Src]) -> Option<Vec<i64>> {
    let r = xs.rank();
    let mut out = Vec::with_capacity(srcs.len());
    for (k, v) in srcs.iter().enumerate() {
        match v {
            Src::Int(i) if *i >= 0 => out.push(*i),
            Src::Sym(_) | Src::DimOf(..) => {
                // Position k of the target aligns with x[k - (len - r)].
                let xi = (k + r).checked_sub(srcs.len())?;
                let same = match v {
                    Src::Sym(s) => xs.0.get(xi) == Some(&Dim::Sym(s.clone())),
                    Src::DimOf(y, j) => *y == x && *j == xi,
                    _ => false,
                };
                if !same {
                    return None;
                }
                out.push(1);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The indices `start:end:step` selects from `len` elements (ONNX Slice clamping rules).
fn slice_1d(len: usize, start: i64, end: i64, step: i64) -> Option<Vec<usize>> {
    pare_ir::infer::slice_indices(i64::try_from(len).ok()?, start, end, step)
}
