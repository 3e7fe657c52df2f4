//! Symbolic reading of Reshape target shapes: which output dimensions provably equal which
//! input dimensions, so that a Reshape that only splits or merges the channel block (or
//! merges batch axes around it) can be followed.

use pare_ir::{Dim, Graph, Op, ValueDef, ValueId};

/// What is known about one dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SDim {
    /// A known extent.
    Fixed(usize),
    /// Equal to dimension `i` of the reshape's input (whose extent is not fixed).
    In(usize),
    /// A named symbolic extent not tied to an input dimension.
    Sym(String),
    /// `-1` in a target shape: whatever makes the element count match.
    Wild,
    /// Nothing known.
    Unknown,
}

/// An element of a shape tensor computed in the graph.
#[derive(Clone, Debug, PartialEq)]
enum Elem {
    Const(i64),
    DimOf(ValueId, usize),
    Unknown,
}

fn type_dims(g: &Graph, v: ValueId) -> Option<Vec<Dim>> {
    if let Some(t) = g.constant(v) {
        return Some(t.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect());
    }
    g.value(v).ty.shape.as_ref().map(|s| s.0.clone())
}

/// The dims of a value as [`SDim`]s relative to itself (non-fixed dim `i` is `In(i)`).
pub(crate) fn input_dims(g: &Graph, x: ValueId) -> Option<Vec<SDim>> {
    Some(
        type_dims(g, x)?
            .into_iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(n) => SDim::Fixed(n as usize),
                _ => SDim::In(i),
            })
            .collect(),
    )
}

fn const_ints(g: &Graph, v: ValueId) -> Option<Vec<i64>> {
    g.constant(v).and_then(|t| t.to_i64_vec())
}

/// Elements of a 1-D integer tensor `v`, as far as they can be traced (depth-limited).
fn elems(g: &Graph, v: ValueId, depth: usize) -> Option<Vec<Elem>> {
    if depth == 0 {
        return None;
    }
    if let Some(c) = const_ints(g, v) {
        return Some(c.into_iter().map(Elem::Const).collect());
    }
    let ValueDef::Node { node, .. } = g.value(v).def() else {
        return None;
    };
    let nd = g.node(*node);
    match &nd.op {
        Op::Concat(_) => {
            let mut out = Vec::new();
            for x in nd.inputs() {
                out.extend(elems(g, (*x)?, depth - 1)?);
            }
            Some(out)
        }
        Op::Unsqueeze => {
            let x = nd.input(0)?;
            match type_dims(g, x)?.len() {
                0 => Some(vec![scalar(g, x, depth - 1)]),
                _ => elems(g, x, depth - 1),
            }
        }
        Op::Shape(a) => {
            let x = nd.input(0)?;
            let r = type_dims(g, x)?.len() as i64;
            let norm = |i: i64| if i < 0 { (i + r).clamp(0, r) } else { i.min(r) };
            let s = norm(a.start);
            let e = a.end.map(norm).unwrap_or(r);
            Some((s..e.max(s)).map(|i| Elem::DimOf(x, i as usize)).collect())
        }
        Op::Cast(_) | Op::Identity => elems(g, nd.input(0)?, depth - 1),
        Op::Slice => {
            let data = elems(g, nd.input(0)?, depth - 1)?;
            let n = data.len() as i64;
            let one = |i: usize| -> Option<i64> {
                match nd.input(i) {
                    None => None,
                    Some(v) => const_ints(g, v).filter(|c| c.len() == 1).map(|c| c[0]),
                }
            };
            let (start, end) = (one(1)?, one(2)?);
            if nd.input(3).is_some() && one(3)? != 0 && one(3)? != -1 {
                return None;
            }
            if nd.input(4).is_some() && one(4)? != 1 {
                return None;
            }
            let clamp = |i: i64| if i < 0 { (i + n).clamp(0, n) } else { i.min(n) };
            let (s, e) = (clamp(start) as usize, clamp(end) as usize);
            Some(data.get(s..e.max(s))?.to_vec())
        }
        Op::Gather(a) if a.axis == 0 => {
            let data = elems(g, nd.input(0)?, depth - 1)?;
            let idx = const_ints(g, nd.input(1)?)?;
            let n = data.len() as i64;
            idx.into_iter()
                .map(|i| {
                    let i = if i < 0 { i + n } else { i };
                    usize::try_from(i).ok().and_then(|i| data.get(i).cloned())
                })
                .collect()
        }
        _ => None,
    }
}

/// A scalar integer value, traced.
fn scalar(g: &Graph, v: ValueId, depth: usize) -> Elem {
    match elems(g, v, depth) {
        Some(e) if e.len() == 1 => e.into_iter().next().unwrap_or(Elem::Unknown),
        _ => Elem::Unknown,
    }
}

/// The dims of a Reshape's output relative to its input `x`: from the traced target shape
/// `shape_v` where possible, else (or where an element is unknown) from the output type.
pub(crate) fn reshape_out_dims(
    g: &Graph,
    x: ValueId,
    shape_v: Option<ValueId>,
    out: ValueId,
    allowzero: bool,
) -> Option<Vec<SDim>> {
    let in_dims = input_dims(g, x)?;
    let x_ty = type_dims(g, x)?;
    let out_ty = type_dims(g, out);
    let traced = shape_v.and_then(|s| elems(g, s, 12));
    let rank = match (&traced, &out_ty) {
        (Some(t), _) => t.len(),
        (None, Some(o)) => o.len(),
        _ => return None,
    };
    if let Some(o) = &out_ty {
        if o.len() != rank {
            return None;
        }
    }
    // A symbolic name of the input maps back to that input dim.
    let sym = |s: &str| -> SDim {
        match x_ty.iter().position(|d| matches!(d, Dim::Sym(n) if n == s)) {
            Some(k) => in_dims[k].clone(),
            None => SDim::Sym(s.to_string()),
        }
    };
    let from_type = |j: usize| -> SDim {
        match out_ty.as_ref().and_then(|o| o.get(j)) {
            Some(Dim::Fixed(n)) => SDim::Fixed(*n as usize),
            Some(Dim::Sym(s)) => sym(s),
            _ => SDim::Unknown,
        }
    };
    let mut dims = Vec::with_capacity(rank);
    for j in 0..rank {
        let d = match traced.as_ref().map(|t| &t[j]) {
            Some(Elem::Const(c)) if *c > 0 => SDim::Fixed(*c as usize),
            Some(Elem::Const(0)) if !allowzero => in_dims.get(j).cloned().unwrap_or(SDim::Unknown),
            Some(Elem::Const(0)) => SDim::Fixed(0),
            Some(Elem::Const(-1)) => SDim::Wild,
            Some(Elem::DimOf(y, i)) => {
                if *y == x {
                    in_dims.get(*i).cloned().unwrap_or(SDim::Unknown)
                } else {
                    match type_dims(g, *y).and_then(|d| d.get(*i).cloned()) {
                        Some(Dim::Fixed(n)) => SDim::Fixed(n as usize),
                        Some(Dim::Sym(s)) => sym(&s),
                        _ => SDim::Unknown,
                    }
                }
            }
            _ => SDim::Unknown,
        };
        // The inferred type is authoritative where it is fixed.
        let d = match (&d, from_type(j)) {
            (SDim::Fixed(_), _) => d,
            (_, SDim::Fixed(n)) => SDim::Fixed(n),
            (SDim::Unknown, t) => t,
            _ => d,
        };
        dims.push(d);
    }
    Some(dims)
}

/// A product of dims as (fixed product, sorted symbolic factors); `None` if any factor is
/// unknown or wild.
fn prod_key(ds: &[SDim]) -> Option<(u128, Vec<String>)> {
    let mut p: u128 = 1;
    let mut syms = Vec::new();
    for d in ds {
        match d {
            SDim::Fixed(n) => p = p.saturating_mul(*n as u128),
            SDim::In(i) => syms.push(format!("in{i}")),
            SDim::Sym(s) => syms.push(format!("sym:{s}")),
            SDim::Wild | SDim::Unknown => return None,
        }
    }
    syms.sort();
    Some((p, syms))
}

/// True when the products of `a` and `b` are provably equal.
pub(crate) fn prod_eq(a: &[SDim], b: &[SDim]) -> bool {
    matches!((prod_key(a), prod_key(b)), (Some(x), Some(y)) if x == y)
}

/// Checks that the input prefix/suffix around a channel block map onto the output
/// prefix/suffix with equal products. Proving one side is enough: a Reshape keeps the
/// element count, so with equal blocks and one equal side the other side's product is
/// forced (this is what makes `-1` and unknown extents acceptable on the other side).
pub(crate) fn sides_match(
    in_pre: &[SDim],
    out_pre: &[SDim],
    in_suf: &[SDim],
    out_suf: &[SDim],
) -> bool {
    prod_eq(in_pre, out_pre) || prod_eq(in_suf, out_suf)
}
