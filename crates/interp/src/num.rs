//! Scalar traits over the native numeric element types, and small array helpers.

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};
use std::fmt::Debug;

/// Arrays at least this large are processed with rayon.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// A native numeric element type (the 12 numeric dtypes).
///
/// Integer arithmetic wraps (like numpy); integer division truncates toward zero and a zero
/// divisor yields 0. Half-precision types compute in f32 and round back.
pub(crate) trait Num:
    Copy + Send + Sync + PartialOrd + PartialEq + Default + Debug + 'static
{
    /// Floating point.
    const FLOAT: bool;
    fn to_f64(self) -> f64;
    /// `as`-style conversion (saturating for float → int, NaN → 0).
    fn from_f64(v: f64) -> Self;
    const ZERO: Self;
    const ONE: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C fmod).
    fn fmod(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (Python %).
    fn pymod(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    /// Lowest value (−∞ for floats).
    fn lowest() -> Self;
    /// Highest value (+∞ for floats).
    fn highest() -> Self;
    /// numpy `maximum` (NaN propagates).
    fn max_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() {
                self
            } else {
                o
            }
        } else if o > self {
            o
        } else {
            self
        }
    }
    /// numpy `minimum` (NaN propagates).
    fn min_nan(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() {
                self
            } else {
                o
            }
        } else if o < self {
            o
        } else {
            self
        }
    }
}

macro_rules! int_num {
    ($($t:ty, $signed:expr);* $(;)?) => {$(
        impl Num for $t {
            const FLOAT: bool = false;
            #[inline] fn to_f64(self) -> f64 { self as f64 }
            #[inline] fn from_f64(v: f64) -> Self { v as $t }
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline] fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline] fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline] fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline] fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            #[inline] fn fmod(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            #[inline] fn pymod(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            #[inline] fn neg(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[inline] fn abs(self) -> Self {
                #[allow(unused_comparisons)]
                if self < 0 { (0 as $t).wrapping_sub(self) } else { self }
            }
            #[inline] fn is_nan(self) -> bool { false }
            #[inline] fn lowest() -> Self { <$t>::MIN }
            #[inline] fn highest() -> Self { <$t>::MAX }
        }
    )*};
}
int_num!(i8, true; i16, true; i32, true; i64, true; u8, false; u16, false; u32, false; u64, false);

macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            #[inline] fn to_f64(self) -> f64 { self as f64 }
            #[inline] fn from_f64(v: f64) -> Self { v as $t }
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline] fn add(self, o: Self) -> Self { self + o }
            #[inline] fn sub(self, o: Self) -> Self { self - o }
            #[inline] fn mul(self, o: Self) -> Self { self * o }
            #[inline] fn div(self, o: Self) -> Self { self / o }
            #[inline] fn fmod(self, o: Self) -> Self { self % o }
            #[inline] fn pymod(self, o: Self) -> Self {
                let r = self % o;
                if r != 0.0 && ((r < 0.0) != (o < 0.0)) { r + o } else { r }
            }
            #[inline] fn neg(self) -> Self { -self }
            #[inline] fn abs(self) -> Self { <$t>::abs(self) }
            #[inline] fn is_nan(self) -> bool { <$t>::is_nan(self) }
            #[inline] fn lowest() -> Self { <$t>::NEG_INFINITY }
            #[inline] fn highest() -> Self { <$t>::INFINITY }
        }
    )*};
}
float_num!(f32, f64);

macro_rules! half_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const FLOAT: bool = true;
            #[inline] fn to_f64(self) -> f64 { self.to_f64() }
            #[inline] fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            const ZERO: Self = <$t>::ZERO;
            const ONE: Self = <$t>::ONE;
            #[inline] fn add(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) }
            #[inline] fn sub(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() - o.to_f32()) }
            #[inline] fn mul(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() * o.to_f32()) }
            #[inline] fn div(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() / o.to_f32()) }
            #[inline] fn fmod(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() % o.to_f32()) }
            #[inline] fn pymod(self, o: Self) -> Self { <$t>::from_f32(Num::pymod(self.to_f32(), o.to_f32())) }
            #[inline] fn neg(self) -> Self { -self }
            #[inline] fn abs(self) -> Self { <$t>::from_f32(self.to_f32().abs()) }
            #[inline] fn is_nan(self) -> bool { <$t>::is_nan(self) }
            #[inline] fn lowest() -> Self { <$t>::NEG_INFINITY }
            #[inline] fn highest() -> Self { <$t>::INFINITY }
        }
    )*};
}
half_num!(f16, bf16);

/// f32 or f64: the types heavy float kernels (GEMM, conv, norms, RNNs) are written for.
pub(crate) trait Float:
    Num
    + ndarray::LinalgScalar
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::iter::Sum
{
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    /// Converts an f64 constant.
    fn c(v: f64) -> Self;
}

macro_rules! float_impl {
    ($t:ty, $erf:path) => {
        impl Float for $t {
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn c(v: f64) -> Self {
                v as $t
            }
        }
    };
}
float_impl!(f32, libm::erff);
float_impl!(f64, libm::erf);

/// Maps every element, in parallel for big arrays. The result is in standard layout.
pub(crate) fn par_map<A, B, F>(a: &ArrayD<A>, f: F) -> ArrayD<B>
where
    A: Copy + Sync + Send,
    B: Send + Copy,
    F: Fn(A) -> B + Sync + Send,
{
    if a.len() >= PAR_THRESHOLD {
        Zip::from(a).par_map_collect(|&x| f(x))
    } else {
        a.map(|&x| f(x))
    }
}

/// The numpy-style multidirectional broadcast of two shapes.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} are not broadcastable"));
        };
    }
    Ok(out)
}

/// A broadcast view of `a` with shape `shape`.
pub(crate) fn bview<'a, T>(a: &'a ArrayD<T>, shape: &[usize]) -> Result<ArrayViewD<'a, T>, String> {
    a.broadcast(IxDyn(shape))
        .ok_or_else(|| format!("cannot broadcast {:?} to {:?}", a.shape(), shape))
}

/// Elementwise binary map with multidirectional broadcasting.
pub(crate) fn zip_map<A, B, C, F>(a: &ArrayD<A>, b: &ArrayD<B>, f: F) -> Result<ArrayD<C>, String>
where
    A: Copy + Sync + Send,
    B: Copy + Sync + Send,
    C: Send + Copy,
    F: Fn(A, B) -> C + Sync + Send,
{
    let shape = if a.shape() == b.shape() {
        a.shape().to_vec()
    } else {
        broadcast_shapes(a.shape(), b.shape())?
    };
    let av = bview(a, &shape)?;
    let bv = bview(b, &shape)?;
    let n: usize = shape.iter().product();
    Ok(if n >= PAR_THRESHOLD {
        Zip::from(&av).and(&bv).par_map_collect(|&x, &y| f(x, y))
    } else {
        Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y))
    })
}

/// Normalizes a possibly negative axis against `rank`.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Row-major strides of a shape.
pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// A contiguous row-major copy of the elements (borrowed when already contiguous).
pub(crate) fn contiguous<T: Clone>(a: &ArrayD<T>) -> std::borrow::Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(a.iter().cloned().collect()),
    }
}

/// Builds an array from a shape and row-major data.
pub(crate) fn from_vec<T>(shape: &[usize], v: Vec<T>) -> Result<ArrayD<T>, String> {
    ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| format!("internal shape error: {e}"))
}
