//! What inference knows about one node's inputs, and dimension arithmetic.

use crate::{DType, Dim, Shape, Tensor, TensorType};

/// Result type of the per-op rules: errors are plain messages, the driver names the node.
pub(crate) type R<T> = Result<T, String>;

/// Largest integer tensor whose values are tracked (constants and shape computations).
pub(crate) const MAX_TRACKED: usize = 1024;

/// A known (or partly known) integer element of a small tensor: shape computations such as
/// `Shape → Gather → Concat → Reshape` carry symbolic dims through these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SV {
    /// A known integer.
    Int(i64),
    /// A symbolic extent.
    Sym(String),
    /// Unknown.
    Unknown,
}

impl SV {
    /// The value of a dimension.
    pub fn from_dim(d: &Dim) -> SV {
        match d {
            Dim::Fixed(n) => i64::try_from(*n).map(SV::Int).unwrap_or(SV::Unknown),
            Dim::Sym(s) => SV::Sym(s.clone()),
            Dim::Unknown => SV::Unknown,
        }
    }
    /// As a dimension (negative integers are unknown).
    pub fn to_dim(&self) -> Dim {
        match self {
            SV::Int(n) if *n >= 0 => Dim::Fixed(*n as u64),
            SV::Sym(s) => Dim::Sym(s.clone()),
            _ => Dim::Unknown,
        }
    }
    /// The integer, when known.
    pub fn int(&self) -> Option<i64> {
        match self {
            SV::Int(n) => Some(*n),
            _ => None,
        }
    }
}

static UNKNOWN: TensorType = TensorType::UNKNOWN;

/// The inputs of one node: types, constant values and tracked integer values.
pub(crate) struct Ctx<'a> {
    types: Vec<Option<TensorType>>,
    consts: Vec<Option<&'a Tensor>>,
    vals: Vec<Option<Vec<SV>>>,
    /// Number of outputs the node has.
    pub num_outputs: usize,
}

/// Integer (or boolean) elements of a small constant, if it is one.
pub(crate) fn tensor_vals(t: &Tensor) -> Option<Vec<SV>> {
    let d = t.dtype();
    if t.numel() > MAX_TRACKED
        || !(d.is_int() || d == DType::Bool)
        || matches!(d, DType::I4 | DType::U4)
    {
        return None;
    }
    Some(t.to_i64_vec()?.into_iter().map(SV::Int).collect())
}

impl<'a> Ctx<'a> {
    /// Builds the context; a constant input's type comes from the constant when the given type
    /// is unknown, and small integer constants become tracked values.
    pub fn new(
        types: &[Option<&TensorType>],
        consts: &[Option<&'a Tensor>],
        vals: Vec<Option<Vec<SV>>>,
        num_outputs: usize,
    ) -> Ctx<'a> {
        let n = types.len().max(consts.len());
        let mut tys = Vec::with_capacity(n);
        let mut cs = Vec::with_capacity(n);
        let mut vs = Vec::with_capacity(n);
        for i in 0..n {
            let c = consts.get(i).copied().flatten();
            let mut t = types.get(i).copied().flatten().cloned();
            if let Some(c) = c {
                let ct = TensorType::new(c.dtype(), Shape::fixed(c.shape()));
                t = Some(match t {
                    None => ct,
                    Some(t) => TensorType {
                        dtype: t.dtype.or(ct.dtype),
                        shape: if t.shape.as_ref().is_some_and(|s| s.as_fixed().is_some()) {
                            t.shape
                        } else {
                            ct.shape
                        },
                    },
                });
            }
            let v = c
                .and_then(tensor_vals)
                .or_else(|| vals.get(i).cloned().flatten());
            tys.push(t);
            cs.push(c);
            vs.push(v);
        }
        Ctx {
            types: tys,
            consts: cs,
            vals: vs,
            num_outputs,
        }
    }

    /// Number of operand slots.
    pub fn len(&self) -> usize {
        self.types.len()
    }
    /// Whether operand `i` is given (not omitted).
    pub fn present(&self, i: usize) -> bool {
        self.types.get(i).is_some_and(|t| t.is_some())
    }
    /// Type of operand `i` (unknown when omitted).
    pub fn ty(&self, i: usize) -> &TensorType {
        self.types
            .get(i)
            .and_then(|t| t.as_ref())
            .unwrap_or(&UNKNOWN)
    }
    /// Dtype of operand `i`.
    pub fn dtype(&self, i: usize) -> Option<DType> {
        self.ty(i).dtype
    }
    /// Shape of operand `i`, when its rank is known.
    pub fn shape(&self, i: usize) -> Option<&Shape> {
        self.ty(i).shape.as_ref()
    }
    /// Rank of operand `i`.
    pub fn rank(&self, i: usize) -> Option<usize> {
        self.shape(i).map(Shape::rank)
    }
    /// Constant value of operand `i`.
    pub fn konst(&self, i: usize) -> Option<&'a Tensor> {
        self.consts.get(i).copied().flatten()
    }
    /// Tracked integer elements of operand `i`.
    pub fn vals(&self, i: usize) -> Option<&[SV]> {
        self.vals.get(i).and_then(|v| v.as_deref())
    }
    /// All integer elements of operand `i`, when every one is known.
    pub fn ints(&self, i: usize) -> Option<Vec<i64>> {
        self.vals(i)?.iter().map(SV::int).collect()
    }
    /// Float elements of a constant operand `i`.
    pub fn floats(&self, i: usize) -> Option<Vec<f64>> {
        self.konst(i)?.to_f64_vec()
    }
    /// Fails when a required operand is omitted.
    pub fn require(&self, i: usize, what: &str) -> R<()> {
        if self.present(i) {
            Ok(())
        } else {
            Err(format!("missing required input {i} ({what})"))
        }
    }
    /// Number of elements of a 1-D operand, from its value or its static shape.
    pub fn len_1d(&self, i: usize) -> Option<usize> {
        if let Some(v) = self.vals(i) {
            return Some(v.len());
        }
        let s = self.shape(i)?;
        match s.0.as_slice() {
            [d] => d.fixed().map(|n| n as usize),
            [] => Some(1),
            _ => None,
        }
    }
}

/// A type from parts.
pub(crate) fn tt(dtype: Option<DType>, shape: Option<Shape>) -> TensorType {
    TensorType { dtype, shape }
}

/// A type with known rank and nothing known about its extents.
pub(crate) fn unknown_dims(rank: usize) -> Shape {
    Shape(vec![Dim::Unknown; rank])
}

/// Normalizes an axis in `[-rank, rank)`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Normalizes a list of distinct axes.
pub(crate) fn norm_axes(axes: &[i64], rank: usize) -> R<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axis {a} repeated in {axes:?}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// One broadcast dimension, `None` if incompatible.
pub(crate) fn bdim(a: &Dim, b: &Dim) -> Option<Dim> {
    use Dim::*;
    Some(match (a, b) {
        (Fixed(1), x) | (x, Fixed(1)) => x.clone(),
        (Fixed(x), Fixed(y)) => {
            if x != y {
                return None;
            }
            Fixed(*x)
        }
        (Fixed(x), _) | (_, Fixed(x)) => Fixed(*x),
        (Sym(x), Sym(y)) if x == y => Sym(x.clone()),
        _ => Unknown,
    })
}

/// Multidirectional (numpy) broadcasting of two shapes.
pub(crate) fn broadcast(a: &Shape, b: &Shape) -> R<Shape> {
    let r = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.rank() >= r {
            &a.0[i + a.rank() - r]
        } else {
            &Dim::Fixed(1)
        };
        let db = if i + b.rank() >= r {
            &b.0[i + b.rank() - r]
        } else {
            &Dim::Fixed(1)
        };
        match bdim(da, db) {
            Some(d) => out.push(d),
            None => return Err(format!("cannot broadcast {a} with {b}")),
        }
    }
    Ok(Shape(out))
}

/// Broadcasts many optional shapes; unknown rank anywhere gives unknown rank.
pub(crate) fn broadcast_all<'s>(
    shapes: impl IntoIterator<Item = Option<&'s Shape>>,
) -> R<Option<Shape>> {
    let mut acc: Option<Shape> = None;
    let mut unknown = false;
    for s in shapes {
        match s {
            None => unknown = true,
            Some(s) => {
                acc = Some(match acc {
                    None => s.clone(),
                    Some(a) => broadcast(&a, s)?,
                })
            }
        }
    }
    Ok(if unknown { None } else { acc })
}

/// Two dims that must be equal: the more specific one, `None` if they conflict.
pub(crate) fn unify(a: &Dim, b: &Dim) -> Option<Dim> {
    use Dim::*;
    Some(match (a, b) {
        (Fixed(x), Fixed(y)) => {
            if x != y {
                return None;
            }
            Fixed(*x)
        }
        (Fixed(x), _) | (_, Fixed(x)) => Fixed(*x),
        (Sym(x), _) => Sym(x.clone()),
        (_, Sym(y)) => Sym(y.clone()),
        _ => Unknown,
    })
}

/// Least upper bound of two dims (for values that may be either): equal or unknown.
pub(crate) fn join_dim(a: &Dim, b: &Dim) -> Dim {
    if a == b {
        a.clone()
    } else {
        Dim::Unknown
    }
}

/// Product of two dims.
pub(crate) fn dim_mul(a: &Dim, b: &Dim) -> Dim {
    use Dim::*;
    match (a, b) {
        (Fixed(x), Fixed(y)) => x.checked_mul(*y).map(Fixed).unwrap_or(Unknown),
        (Fixed(1), x) | (x, Fixed(1)) => x.clone(),
        (Fixed(0), _) | (_, Fixed(0)) => Fixed(0),
        _ => Unknown,
    }
}

/// Product of dims (1 for none).
pub(crate) fn dim_product<'d>(dims: impl IntoIterator<Item = &'d Dim>) -> Dim {
    dims.into_iter()
        .fold(Dim::Fixed(1), |acc, d| dim_mul(&acc, d))
}

/// `d + delta`, keeping symbols when `delta` is zero; `None` when the result is negative.
pub(crate) fn dim_add(d: &Dim, delta: i64) -> Option<Dim> {
    match d {
        Dim::Fixed(n) => {
            let v = (*n as i128) + delta as i128;
            if v < 0 {
                None
            } else {
                Some(Dim::Fixed(v as u64))
            }
        }
        other if delta == 0 => Some(other.clone()),
        _ => Some(Dim::Unknown),
    }
}

/// Sum of two dims.
pub(crate) fn dim_sum(a: &Dim, b: &Dim) -> Dim {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => x.checked_add(*y).map(Dim::Fixed).unwrap_or(Dim::Unknown),
        (Dim::Fixed(0), x) | (x, Dim::Fixed(0)) => x.clone(),
        _ => Dim::Unknown,
    }
}

/// `d / k` for an exact divisor; errors when a fixed extent is not divisible.
pub(crate) fn dim_div_exact(d: &Dim, k: u64, what: &str) -> R<Dim> {
    if k == 0 {
        return Err(format!("{what}: division by zero"));
    }
    match d {
        Dim::Fixed(n) => {
            if n % k != 0 {
                Err(format!("{what}: {n} is not divisible by {k}"))
            } else {
                Ok(Dim::Fixed(n / k))
            }
        }
        other if k == 1 => Ok(other.clone()),
        _ => Ok(Dim::Unknown),
    }
}

/// Requires a dtype to be one of a class, when known.
pub(crate) fn check_dtype(d: Option<DType>, ok: impl Fn(DType) -> bool, what: &str) -> R<()> {
    match d {
        Some(d) if !ok(d) => Err(format!("{what} does not accept dtype {d}")),
        _ => Ok(()),
    }
}

/// The common dtype of several inputs that must agree.
pub(crate) fn same_dtype(
    cx: &Ctx,
    idx: impl IntoIterator<Item = usize>,
    what: &str,
) -> R<Option<DType>> {
    let mut acc: Option<(usize, DType)> = None;
    for i in idx {
        if let Some(d) = cx.dtype(i) {
            match acc {
                None => acc = Some((i, d)),
                Some((j, e)) if e != d => {
                    return Err(format!(
                        "{what} input dtypes differ: input {j} is {e}, input {i} is {d}"
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(acc.map(|(_, d)| d))
}
