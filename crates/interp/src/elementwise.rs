//! Elementwise ops: unary maps, broadcasting binary and variadic ops, Where, Clip, PRelu,
//! Dropout.

use crate::num::{broadcast_shapes, bview, par_map, zip_map, Float, Num, PAR_THRESHOLD};
use crate::Value;
use ndarray::{ArrayD, IxDyn, Zip};
use pare_ir::{DType, Op};

fn softplus<T: Float>(x: T) -> T {
    // log(1 + exp(x)), overflow-free.
    if x > T::ZERO {
        x + (T::ONE + (-x).exp()).ln()
    } else {
        (T::ONE + x.exp()).ln()
    }
}

fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// Unary elementwise ops (everything in [`Op::is_unary_elementwise`] but Cast/CastLike/Identity).
pub(crate) fn unary(op: &Op, x: &Value) -> Result<Value, String> {
    use Op::*;
    // 8/4-bit float inputs of predicates are decoded first.
    if matches!(op, IsNaN | IsInf(_))
        && matches!(
            x,
            Value::F8E4M3FN(_)
                | Value::F8E4M3FNUZ(_)
                | Value::F8E5M2(_)
                | Value::F8E5M2FNUZ(_)
                | Value::F4E2M1(_)
                | Value::F8E8M0(_)
        )
    {
        return unary(op, &crate::cast::cast(x, DType::F32, false)?);
    }
    Ok(match op {
        Abs => map_num!(x, T, a => par_map(a, |v: T| Num::abs(v))),
        Neg => map_num!(x, T, a => par_map(a, |v: T| Num::neg(v))),
        Sign => map_num!(x, T, a => par_map(a, |v: T| {
            if v.is_nan() { v } else if v > T::ZERO { T::ONE } else if v < T::ZERO { T::ONE.neg() } else { T::ZERO }
        })),
        Relu => map_num!(x, T, a => par_map(a, |v: T| if v < T::ZERO { T::ZERO } else { v })),
        Not => match x {
            Value::Bool(a) => Value::Bool(par_map(a, |v: bool| !v)),
            o => return Err(format!("Not expects bool, got {}", o.dtype())),
        },
        BitwiseNot => map_int!(x, T, a => par_map(a, |v: T| !v)),
        IsNaN => with_num!(x, T, a => Value::Bool(par_map(a, |v: T| v.is_nan()))),
        IsInf(i) => {
            let (neg, pos) = (i.detect_negative, i.detect_positive);
            with_num!(x, T, a => Value::Bool(par_map(a, |v: T| {
                let f = v.to_f64();
                (pos && f == f64::INFINITY) || (neg && f == f64::NEG_INFINITY)
            })))
        }
        Shrink(s) => {
            let (bias, lambd) = (s.bias as f64, s.lambd as f64);
            map_num!(x, T, a => par_map(a, |v: T| {
                let f = v.to_f64();
                if f < -lambd { T::from_f64(f + bias) } else if f > lambd { T::from_f64(f - bias) } else { T::ZERO }
            }))
        }
        _ => float_unary(op, x)?,
    })
}

fn float_unary(op: &Op, x: &Value) -> Result<Value, String> {
    use Op::*;
    Ok(match op {
        Acos => map_float!(x, T, a => par_map(a, |v: T| v.acos())),
        Acosh => map_float!(x, T, a => par_map(a, |v: T| v.acosh())),
        Asin => map_float!(x, T, a => par_map(a, |v: T| v.asin())),
        Asinh => map_float!(x, T, a => par_map(a, |v: T| v.asinh())),
        Atan => map_float!(x, T, a => par_map(a, |v: T| v.atan())),
        Atanh => map_float!(x, T, a => par_map(a, |v: T| v.atanh())),
        Ceil => map_float!(x, T, a => par_map(a, |v: T| v.ceil())),
        Cos => map_float!(x, T, a => par_map(a, |v: T| v.cos())),
        Cosh => map_float!(x, T, a => par_map(a, |v: T| v.cosh())),
        Erf => map_float!(x, T, a => par_map(a, |v: T| Float::erf(v))),
        Exp => map_float!(x, T, a => par_map(a, |v: T| v.exp())),
        Floor => map_float!(x, T, a => par_map(a, |v: T| v.floor())),
        Log => map_float!(x, T, a => par_map(a, |v: T| v.ln())),
        Reciprocal => map_float!(x, T, a => par_map(a, |v: T| 1.0 / v)),
        Round => map_float!(x, T, a => par_map(a, |v: T| v.round_ties_even())),
        Sigmoid => map_float!(x, T, a => par_map(a, sigmoid::<T>)),
        Sin => map_float!(x, T, a => par_map(a, |v: T| v.sin())),
        Sinh => map_float!(x, T, a => par_map(a, |v: T| v.sinh())),
        Softplus => map_float!(x, T, a => par_map(a, softplus::<T>)),
        Softsign => map_float!(x, T, a => par_map(a, |v: T| v / (1.0 + v.abs()))),
        Sqrt => map_float!(x, T, a => par_map(a, |v: T| v.sqrt())),
        Tan => map_float!(x, T, a => par_map(a, |v: T| v.tan())),
        Tanh => map_float!(x, T, a => par_map(a, |v: T| v.tanh())),
        Mish => map_float!(x, T, a => par_map(a, |v: T| v * softplus(v).tanh())),
        HardSwish => map_float!(x, T, a => par_map(a, |v: T| v * (v / 6.0 + 0.5).clamp(0.0, 1.0))),
        Elu(p) => map_float!(x, T, a => {
            let al = p.alpha as T;
            par_map(a, move |v: T| if v < 0.0 { al * (v.exp() - 1.0) } else { v })
        }),
        Celu(p) => map_float!(x, T, a => {
            let al = p.alpha as T;
            par_map(a, move |v: T| v.max(0.0) + (al * ((v / al).exp() - 1.0)).min(0.0))
        }),
        ThresholdedRelu(p) => map_float!(x, T, a => {
            let al = p.alpha as T;
            par_map(a, move |v: T| if v > al { v } else { 0.0 })
        }),
        LeakyRelu(p) => map_float!(x, T, a => {
            let al = p.alpha as T;
            par_map(a, move |v: T| if v < 0.0 { al * v } else { v })
        }),
        Selu(p) => map_float!(x, T, a => {
            let (al, g) = (p.alpha as T, p.gamma as T);
            par_map(a, move |v: T| if v <= 0.0 { g * (al * v.exp() - al) } else { g * v })
        }),
        HardSigmoid(p) => map_float!(x, T, a => {
            let (al, be) = (p.alpha as T, p.beta as T);
            par_map(a, move |v: T| (al * v + be).clamp(0.0, 1.0))
        }),
        Gelu(g) => match g.approximate.as_str() {
            "none" => map_float!(x, T, a => par_map(a, |v: T| {
                0.5 * v * (1.0 + Float::erf(v * std::f64::consts::FRAC_1_SQRT_2 as T))
            })),
            "tanh" => map_float!(x, T, a => par_map(a, |v: T| {
                let k = (2.0f64 / std::f64::consts::PI).sqrt() as T;
                0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
            })),
            o => return Err(format!("Gelu: unknown approximate '{o}'")),
        },
        o => return Err(format!("{} is not a unary elementwise op", o.name())),
    })
}

fn type_mismatch(a: &Value, b: &Value) -> String {
    format!(
        "operands have different types: {} and {}",
        a.dtype(),
        b.dtype()
    )
}

/// Same-variant numeric binary map; `$T` is bound to the element type.
macro_rules! num_binary {
    ($a:expr, $b:expr, $T:ident, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Value::F32(p), Value::F32(q)) => {
                type $T = f32;
                Value::F32(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::F64(p), Value::F64(q)) => {
                type $T = f64;
                Value::F64(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::F16(p), Value::F16(q)) => {
                type $T = half::f16;
                Value::F16(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::BF16(p), Value::BF16(q)) => {
                type $T = half::bf16;
                Value::BF16(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::I8(p), Value::I8(q)) => {
                type $T = i8;
                Value::I8(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::U8(p), Value::U8(q)) => {
                type $T = u8;
                Value::U8(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::I16(p), Value::I16(q)) => {
                type $T = i16;
                Value::I16(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::U16(p), Value::U16(q)) => {
                type $T = u16;
                Value::U16(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::I32(p), Value::I32(q)) => {
                type $T = i32;
                Value::I32(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::U32(p), Value::U32(q)) => {
                type $T = u32;
                Value::U32(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::I64(p), Value::I64(q)) => {
                type $T = i64;
                Value::I64(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (Value::U64(p), Value::U64(q)) => {
                type $T = u64;
                Value::U64(zip_map(p, q, |$x: $T, $y: $T| $body)?)
            }
            (p, q) => return Err(type_mismatch(p, q)),
        }
    };
}

/// Same-variant comparison producing bool; `$T` is bound to the element type.
macro_rules! cmp_binary {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Value::F32(p), Value::F32(q)) => Value::Bool(zip_map(p, q, |$x: f32, $y: f32| $body)?),
            (Value::F64(p), Value::F64(q)) => Value::Bool(zip_map(p, q, |$x: f64, $y: f64| $body)?),
            (Value::F16(p), Value::F16(q)) => {
                Value::Bool(zip_map(p, q, |$x: half::f16, $y: half::f16| $body)?)
            }
            (Value::BF16(p), Value::BF16(q)) => {
                Value::Bool(zip_map(p, q, |$x: half::bf16, $y: half::bf16| $body)?)
            }
            (Value::I8(p), Value::I8(q)) => Value::Bool(zip_map(p, q, |$x: i8, $y: i8| $body)?),
            (Value::U8(p), Value::U8(q)) => Value::Bool(zip_map(p, q, |$x: u8, $y: u8| $body)?),
            (Value::I16(p), Value::I16(q)) => Value::Bool(zip_map(p, q, |$x: i16, $y: i16| $body)?),
            (Value::U16(p), Value::U16(q)) => Value::Bool(zip_map(p, q, |$x: u16, $y: u16| $body)?),
            (Value::I32(p), Value::I32(q)) => Value::Bool(zip_map(p, q, |$x: i32, $y: i32| $body)?),
            (Value::U32(p), Value::U32(q)) => Value::Bool(zip_map(p, q, |$x: u32, $y: u32| $body)?),
            (Value::I64(p), Value::I64(q)) => Value::Bool(zip_map(p, q, |$x: i64, $y: i64| $body)?),
            (Value::U64(p), Value::U64(q)) => Value::Bool(zip_map(p, q, |$x: u64, $y: u64| $body)?),
            (Value::Bool(p), Value::Bool(q)) => {
                Value::Bool(zip_map(p, q, |$x: bool, $y: bool| $body)?)
            }
            (p, q) => return Err(type_mismatch(p, q)),
        }
    };
}

fn int_pow<T: Num>(x: T, e: i64) -> T {
    if e < 0 {
        // numpy refuses; follow the float result truncated toward zero.
        let f = x.to_f64().powf(e as f64);
        return T::from_f64(f.trunc());
    }
    let mut r = T::ONE;
    let mut b = x;
    let mut e = e as u64;
    while e > 0 {
        if e & 1 == 1 {
            r = r.mul(b);
        }
        b = b.mul(b);
        e >>= 1;
    }
    r
}

fn pow(a: &Value, b: &Value) -> Result<Value, String> {
    // Fast paths: same-type f32/f64.
    match (a, b) {
        (Value::F32(p), Value::F32(q)) => {
            if q.len() == 1 {
                let e = *q.iter().next().expect("one element");
                let shape = broadcast_shapes(p.shape(), q.shape())?;
                let r = if e == 2.0 {
                    par_map(p, |x| x * x)
                } else if e == 0.5 {
                    par_map(p, |x| x.sqrt())
                } else if e == 1.0 {
                    p.clone()
                } else {
                    par_map(p, move |x| x.powf(e))
                };
                return Ok(Value::F32(if r.shape() == shape.as_slice() {
                    r
                } else {
                    bview(&r, &shape)?.to_owned()
                }));
            }
            return Ok(Value::F32(zip_map(p, q, |x: f32, y: f32| x.powf(y))?));
        }
        (Value::F64(p), Value::F64(q)) => {
            return Ok(Value::F64(zip_map(p, q, |x: f64, y: f64| x.powf(y))?))
        }
        _ => {}
    }
    let b_int = b.dtype().is_int();
    let e64: ArrayD<f64> = match b {
        Value::F32(q) => q.mapv(|x| x as f64),
        Value::F64(q) => q.clone(),
        Value::F16(q) => q.mapv(|x| x.to_f64()),
        Value::BF16(q) => q.mapv(|x| x.to_f64()),
        o => {
            let v = o.to_f64_vec()?;
            ArrayD::from_shape_vec(IxDyn(o.shape()), v).map_err(|e| e.to_string())?
        }
    };
    let ei: Option<ArrayD<i64>> = if b_int {
        Some(ArrayD::from_shape_vec(IxDyn(b.shape()), b.to_i64_vec()?).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(map_num!(a, T, p => {
        if !T::FLOAT {
            if let Some(ei) = &ei {
                zip_map(p, ei, |x: T, e: i64| int_pow(x, e))?
            } else {
                zip_map(p, &e64, |x: T, e: f64| T::from_f64(x.to_f64().powf(e)))?
            }
        } else {
            zip_map(p, &e64, |x: T, e: f64| T::from_f64(x.to_f64().powf(e)))?
        }
    }))
}

fn shift<T: Num + std::ops::Shl<u32, Output = T> + std::ops::Shr<u32, Output = T>>(
    x: T,
    s: T,
    left: bool,
    bits: u32,
) -> T {
    let s = s.to_f64();
    if s >= bits as f64 {
        return T::ZERO;
    }
    if left {
        x << (s as u32)
    } else {
        x >> (s as u32)
    }
}

/// Binary broadcasting ops.
pub(crate) fn binary(op: &Op, a: &Value, b: &Value) -> Result<Value, String> {
    use Op::*;
    Ok(match op {
        Add => num_binary!(a, b, T, |x, y| Num::add(x, y)),
        Sub => num_binary!(a, b, T, |x, y| Num::sub(x, y)),
        Mul => num_binary!(a, b, T, |x, y| Num::mul(x, y)),
        Div => num_binary!(a, b, T, |x, y| Num::div(x, y)),
        Pow => pow(a, b)?,
        Mod(m) => {
            if m.fmod || a.is_float() {
                let nan_to_zero = !m.fmod;
                num_binary!(a, b, T, |x, y| {
                    let r = Num::fmod(x, y);
                    if nan_to_zero && r.is_nan() {
                        T::ZERO
                    } else {
                        r
                    }
                })
            } else {
                num_binary!(a, b, T, |x, y| Num::pymod(x, y))
            }
        }
        And | Or | Xor => match (a, b) {
            (Value::Bool(p), Value::Bool(q)) => Value::Bool(match op {
                And => zip_map(p, q, |x, y| x && y)?,
                Or => zip_map(p, q, |x, y| x || y)?,
                _ => zip_map(p, q, |x: bool, y: bool| x ^ y)?,
            }),
            (p, q) => {
                return Err(format!(
                    "{} expects bool operands, got {} and {}",
                    op.name(),
                    p.dtype(),
                    q.dtype()
                ))
            }
        },
        Equal => match (a, b) {
            (Value::Str(p), Value::Str(q)) => {
                let shape = broadcast_shapes(p.shape(), q.shape())?;
                let (pv, qv) = (bview(p, &shape)?, bview(q, &shape)?);
                Value::Bool(Zip::from(&pv).and(&qv).map_collect(|x, y| x == y))
            }
            _ => cmp_binary!(a, b, |x, y| x == y),
        },
        Greater => cmp_binary!(a, b, |x, y| x > y),
        GreaterOrEqual => cmp_binary!(a, b, |x, y| x >= y),
        Less => cmp_binary!(a, b, |x, y| x < y),
        LessOrEqual => cmp_binary!(a, b, |x, y| x <= y),
        BitShift(s) => {
            let left = match s.direction.as_str() {
                "LEFT" => true,
                "RIGHT" => false,
                d => return Err(format!("BitShift: unknown direction '{d}'")),
            };
            match (a, b) {
                (Value::U8(p), Value::U8(q)) => {
                    Value::U8(zip_map(p, q, |x, y| shift(x, y, left, 8))?)
                }
                (Value::U16(p), Value::U16(q)) => {
                    Value::U16(zip_map(p, q, |x, y| shift(x, y, left, 16))?)
                }
                (Value::U32(p), Value::U32(q)) => {
                    Value::U32(zip_map(p, q, |x, y| shift(x, y, left, 32))?)
                }
                (Value::U64(p), Value::U64(q)) => {
                    Value::U64(zip_map(p, q, |x, y| shift(x, y, left, 64))?)
                }
                (p, q) => {
                    return Err(format!(
                        "BitShift expects unsigned integers, got {} and {}",
                        p.dtype(),
                        q.dtype()
                    ))
                }
            }
        }
        BitwiseAnd | BitwiseOr | BitwiseXor => {
            macro_rules! bitwise {
                ($($v:ident),*) => {
                    match (a, b) {
                        $((Value::$v(p), Value::$v(q)) => Value::$v(match op {
                            BitwiseAnd => zip_map(p, q, |x, y| x & y)?,
                            BitwiseOr => zip_map(p, q, |x, y| x | y)?,
                            _ => zip_map(p, q, |x, y| x ^ y)?,
                        }),)*
                        (p, q) => return Err(format!("{} expects integers, got {} and {}", op.name(), p.dtype(), q.dtype())),
                    }
                };
            }
            bitwise!(I8, U8, I16, U16, I32, U32, I64, U64, Bool)
        }
        o => return Err(format!("{} is not a binary op", o.name())),
    })
}

/// Max, Min, Mean, Sum over any number of broadcasting operands.
pub(crate) fn variadic(op: &Op, xs: &[&Value]) -> Result<Value, String> {
    let first = xs.first().ok_or("expects at least one input")?;
    let mut acc: Value = (*first).clone();
    for x in &xs[1..] {
        acc = match op {
            Op::Max => num_binary!(&acc, *x, T, |p, q| Num::max_nan(p, q)),
            Op::Min => num_binary!(&acc, *x, T, |p, q| Num::min_nan(p, q)),
            Op::Sum | Op::Mean => num_binary!(&acc, *x, T, |p, q| Num::add(p, q)),
            o => return Err(format!("{} is not variadic", o.name())),
        };
    }
    if matches!(op, Op::Mean) && xs.len() > 1 {
        let n = xs.len() as f64;
        acc = map_num!(&acc, T, a => par_map(a, move |v: T| T::from_f64(v.to_f64() / n)));
    }
    Ok(acc)
}

/// Where(cond, x, y) with three-way broadcasting.
pub(crate) fn where_(c: &Value, x: &Value, y: &Value) -> Result<Value, String> {
    let c = match c {
        Value::Bool(c) => c,
        o => return Err(format!("condition must be bool, got {}", o.dtype())),
    };
    let shape = broadcast_shapes(&broadcast_shapes(c.shape(), x.shape())?, y.shape())?;
    let cv = bview(c, &shape)?;
    let vals = [x, y];
    Ok(map_many!(&vals, xs => {
        let xv = bview(xs[0], &shape)?;
        let yv = bview(xs[1], &shape)?;
        let n: usize = shape.iter().product();
        if n >= PAR_THRESHOLD {
            Zip::from(&cv).and(&xv).and(&yv).par_map_collect(|&c, x, y| if c { x.clone() } else { y.clone() })
        } else {
            Zip::from(&cv).and(&xv).and(&yv).map_collect(|&c, x, y| if c { x.clone() } else { y.clone() })
        }
    }))
}

/// Clip(x, min?, max?).
pub(crate) fn clip(x: &Value, lo: Option<&Value>, hi: Option<&Value>) -> Result<Value, String> {
    // Bounds as one-element values of x's type (absent or empty: no bound).
    let bound = |v: Option<&Value>| -> Result<Option<Value>, String> {
        match v {
            Some(v) if !v.is_empty() => {
                if v.len() != 1 {
                    return Err(format!("bound must be a scalar, got shape {:?}", v.shape()));
                }
                if v.dtype() != x.dtype() {
                    return Err(format!("bound has type {}, input {}", v.dtype(), x.dtype()));
                }
                Ok(Some(v.clone()))
            }
            _ => Ok(None),
        }
    };
    let (lo, hi) = (bound(lo)?, bound(hi)?);
    Ok(map_num!(x, T, a => {
        let first = |v: &Option<Value>| -> Option<T> {
            v.as_ref().and_then(with_num_opt::<T>)
        };
        let (l, h) = (first(&lo), first(&hi));
        par_map(a, move |v: T| {
            let mut r = v;
            if let Some(l) = l {
                if r < l {
                    r = l;
                }
            }
            if let Some(h) = h {
                if r > h {
                    r = h;
                }
            }
            r
        })
    }))
}

/// The first element of `v` if its element type is `T`.
fn with_num_opt<T: Num>(v: &Value) -> Option<T> {
    fn first<S: Copy + 'static, T: 'static + Copy>(a: &ArrayD<S>) -> Option<T> {
        let x = *a.iter().next()?;
        (&x as &dyn std::any::Any).downcast_ref::<T>().copied()
    }
    match v {
        Value::F32(a) => first(a),
        Value::F64(a) => first(a),
        Value::F16(a) => first(a),
        Value::BF16(a) => first(a),
        Value::I8(a) => first(a),
        Value::U8(a) => first(a),
        Value::I16(a) => first(a),
        Value::U16(a) => first(a),
        Value::I32(a) => first(a),
        Value::U32(a) => first(a),
        Value::I64(a) => first(a),
        Value::U64(a) => first(a),
        _ => None,
    }
}

/// PRelu(x, slope).
pub(crate) fn prelu(x: &Value, slope: &Value) -> Result<Value, String> {
    Ok(num_binary!(x, slope, T, |v, s| if v < T::ZERO {
        v.mul(s)
    } else {
        v
    }))
}

/// Dropout(data, ratio?, training_mode?) -> (output, mask?). Inference mode is the identity;
/// training mode draws a deterministic pseudo-random mask.
pub(crate) fn dropout(
    x: &Value,
    ratio: Option<&Value>,
    training: Option<&Value>,
    nout: usize,
) -> Result<Vec<Value>, String> {
    let training = match training {
        Some(t) => t.scalar_i64()? != 0,
        None => false,
    };
    let ratio = match ratio {
        Some(r) => r.scalar_f64()?,
        None => 0.5,
    };
    let shape = x.shape().to_vec();
    if !training || ratio == 0.0 {
        let mut out = vec![x.clone()];
        if nout > 1 {
            out.push(Value::Bool(ArrayD::from_elem(IxDyn(&shape), true)));
        }
        return Ok(out);
    }
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mask: ArrayD<bool> = ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 / (1u64 << 53) as f64) >= ratio
    });
    let scale = 1.0 / (1.0 - ratio);
    let out = map_float!(x, T, a => {
        ndarray::Zip::from(a).and(&mask).map_collect(|&v, &m| if m { v * scale as T } else { 0.0 })
    });
    let mut res = vec![out];
    if nout > 1 {
        res.push(Value::Bool(mask));
    }
    Ok(res)
}
