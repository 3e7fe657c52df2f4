//! Helpers shared by the passes: graph-output-safe value forwarding, constant replacement,
//! and small shape utilities.

use pare_ir::{DType, Dim, Graph, NodeId, Shape, Tensor, TensorType, Use, ValueDef, ValueId};

/// True when `v` is (one of) the graph's outputs.
pub(crate) fn is_graph_output(g: &Graph, v: ValueId) -> bool {
    g.uses(v).iter().any(|u| matches!(u, Use::Output(_)))
}

/// Whether every reader of `y` can be pointed at `x` without losing a graph output's name.
///
/// When `y` is a graph output, `x` takes over its name, so `x` must be a node output that is
/// not itself a graph output: a graph input or another graph output already has a name the
/// interface needs, and a constant cannot be exported as a named graph output (the exporter
/// routes it through a renamed `Identity`).
pub(crate) fn can_forward(g: &Graph, y: ValueId, x: ValueId) -> bool {
    if x == y {
        return false;
    }
    if !is_graph_output(g, y) {
        return true;
    }
    matches!(g.value(x).def(), ValueDef::Node { .. }) && !is_graph_output(g, x)
}

/// Points every reader of `y` at `x` (see [`can_forward`]); a graph output keeps its name
/// by moving it to `x`. Known facts of `y`'s type fill unknown parts of `x`'s type (they are
/// the same runtime value). Returns whether it forwarded.
pub(crate) fn forward(g: &mut Graph, y: ValueId, x: ValueId) -> bool {
    if !can_forward(g, y, x) {
        return false;
    }
    if is_graph_output(g, y) {
        let name = g.value(y).name.clone();
        g.set_name(x, name);
    }
    if matches!(g.value(x).def(), ValueDef::Node { .. }) {
        let t = refine(&g.value(x).ty, &g.value(y).ty);
        g.set_type(x, t);
    }
    g.replace_all_uses(y, x);
    true
}

/// `a` with its unknown dtype, rank or extents filled in from `b` (never overriding what `a`
/// knows).
pub(crate) fn refine(a: &TensorType, b: &TensorType) -> TensorType {
    let dtype = a.dtype.or(b.dtype);
    let shape = match (&a.shape, &b.shape) {
        (None, s) => s.clone(),
        (Some(x), Some(y)) if x.rank() == y.rank() => Some(Shape(
            x.0.iter()
                .zip(&y.0)
                .map(|(p, q)| match p {
                    Dim::Unknown => q.clone(),
                    _ => p.clone(),
                })
                .collect(),
        )),
        (s, _) => s.clone(),
    };
    TensorType { dtype, shape }
}

/// Replaces every reader of `y` by a new constant holding `t`, named like `y`. Refuses (and
/// returns `None`) when `y` is a graph output, since the exporter cannot keep the name of a
/// constant graph output.
pub(crate) fn replace_with_const(g: &mut Graph, y: ValueId, t: Tensor) -> Option<ValueId> {
    if is_graph_output(g, y) {
        return None;
    }
    let c = g.add_const(g.value(y).name.clone(), t);
    g.replace_all_uses(y, c);
    Some(c)
}

/// Removes `n` when none of its outputs is read; returns whether it did.
pub(crate) fn remove_if_dead(g: &mut Graph, n: NodeId) -> bool {
    !g.node(n).is_dead()
        && g.node(n).outputs().iter().all(|&o| g.uses(o).is_empty())
        && g.remove_node(n)
}

/// The shape of `v`, when its rank is known.
pub(crate) fn shape_of(g: &Graph, v: ValueId) -> Option<&Shape> {
    g.value(v).ty.shape.as_ref()
}

/// The integer elements of `v` when it is a constant of an integer type.
pub(crate) fn const_ints(g: &Graph, v: ValueId) -> Option<Vec<i64>> {
    let t = g.constant(v)?;
    if !t.dtype().is_int() {
        return None;
    }
    t.to_i64_vec()
}

/// Two shapes that are certainly equal at run time: same rank, every extent fixed and equal
/// or the same symbol.
pub(crate) fn same_shape(a: &Shape, b: &Shape) -> bool {
    a.rank() == b.rank()
        && a.0.iter().zip(&b.0).all(|(x, y)| match (x, y) {
            (Dim::Fixed(p), Dim::Fixed(q)) => p == q,
            (Dim::Sym(p), Dim::Sym(q)) => p == q,
            _ => false,
        })
}

/// A tensor of integer dtype `dtype` holding `vals` (shape `shape`), or `None` when a value
/// does not fit the dtype (or the dtype is not a byte-aligned integer or bool).
pub(crate) fn int_tensor(dtype: DType, shape: Vec<usize>, vals: &[i64]) -> Option<Tensor> {
    fn conv<T: TryFrom<i64> + pare_ir::Elem>(shape: Vec<usize>, vals: &[i64]) -> Option<Tensor> {
        let v: Option<Vec<T>> = vals.iter().map(|&x| T::try_from(x).ok()).collect();
        Some(Tensor::from_vec(shape, v?))
    }
    if shape.iter().product::<usize>() != vals.len() {
        return None;
    }
    match dtype {
        DType::I64 => conv::<i64>(shape, vals),
        DType::I32 => conv::<i32>(shape, vals),
        DType::I16 => conv::<i16>(shape, vals),
        DType::I8 => conv::<i8>(shape, vals),
        DType::U64 => conv::<u64>(shape, vals),
        DType::U32 => conv::<u32>(shape, vals),
        DType::U16 => conv::<u16>(shape, vals),
        DType::U8 => conv::<u8>(shape, vals),
        DType::Bool => {
            if vals.iter().any(|&x| x != 0 && x != 1) {
                return None;
            }
            Some(Tensor::from_vec(
                shape,
                vals.iter().map(|&x| x == 1).collect::<Vec<bool>>(),
            ))
        }
        _ => None,
    }
}

/// A rank-1 i64 tensor.
pub(crate) fn i64_tensor(vals: &[i64]) -> Tensor {
    Tensor::from_vec(vec![vals.len()], vals.to_vec())
}

/// `axes` normalized against `rank` (negative from the end), sorted; `None` when one is out of
/// range or repeated.
pub(crate) fn norm_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    let r = i64::try_from(rank).ok()?;
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + r } else { a };
            (0..r).contains(&a).then_some(a as usize)
        })
        .collect::<Option<_>>()?;
    out.sort_unstable();
    let n = out.len();
    out.dedup();
    (out.len() == n).then_some(out)
}

/// Whether `Reshape(x, target)` (with `allowzero`) returns `x` unchanged, for every `x` of
/// shape `x` on which the Reshape succeeds.
///
/// Each entry must keep its extent: `0` without allowzero copies it, a positive entry must
/// equal a fixed extent, and one `-1` is then resolved to the remaining extent (when the
/// others multiply to a nonzero number; when they multiply to zero the original fails).
pub(crate) fn reshape_is_identity(x: &Shape, target: &[i64], allowzero: bool) -> bool {
    if target.len() != x.rank() {
        return false;
    }
    let mut minus_one = false;
    for (&t, d) in target.iter().zip(&x.0) {
        match t {
            0 if !allowzero => {}
            -1 => {
                if minus_one {
                    return false;
                }
                minus_one = true;
            }
            t if t >= 0 => {
                if d.fixed() != Some(t as u64) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Whether `Expand(x, shape)` returns `x` unchanged: the target has no more dimensions than
/// `x`, and each of its entries is 1 or equals `x`'s (fixed) extent it is aligned with.
pub(crate) fn expand_is_identity(x: &Shape, shape: &[i64]) -> bool {
    let r = x.rank();
    if shape.len() > r {
        return false;
    }
    shape.iter().enumerate().all(|(k, &s)| {
        let d = &x.0[r - shape.len() + k];
        s == 1 || (s >= 0 && d.fixed() == Some(s as u64))
    })
}

/// The names of a graph's live values, for making new names that clash with none (the
/// exporter would otherwise rename one of two equal names, possibly a graph output).
pub(crate) struct Names(std::collections::HashSet<String>);

impl Names {
    /// The names of `g`'s live values.
    pub(crate) fn of(g: &Graph) -> Names {
        Names(g.value_ids().map(|v| g.value(v).name.clone()).collect())
    }

    /// `base`, or `base_1`, `base_2`, ... : the first not taken; it is taken from now on.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.0.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

impl Names {
    /// The names of `g`'s live values and of every value of the subgraphs of its nodes other
    /// than `skip`, nested ones included (a value of the graph should not shadow a subgraph's
    /// either).
    pub(crate) fn of_deep_except(g: &Graph, skip: Option<NodeId>) -> Names {
        let mut names = Names(g.value_ids().map(|v| g.value(v).name.clone()).collect());
        for n in g.node_ids().filter(|&n| Some(n) != skip) {
            for sg in g.node(n).op.subgraphs() {
                names.take_deep(sg);
            }
        }
        names
    }

    /// Marks the names of every value of `g` and of its subgraphs, nested ones included, as
    /// taken.
    pub(crate) fn take_deep(&mut self, g: &Graph) {
        self.0
            .extend(g.value_ids().map(|v| g.value(v).name.clone()));
        for n in g.node_ids() {
            for sg in g.node(n).op.subgraphs() {
                self.take_deep(sg);
            }
        }
    }
}
