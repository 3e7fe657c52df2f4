//! Elementwise ops: unary, broadcasting binary and variadic, Where, casts, quantization.

use super::ctx::{broadcast_all, check_dtype, same_dtype, tt, Ctx, R};
use crate::{DType, Op, Shape, TensorType};

/// Unary elementwise ops (including Cast, CastLike, IsNaN, IsInf, Not).
pub(crate) fn unary(op: &Op, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    let shape = cx.shape(0).cloned();
    let dtype = match op {
        Op::Cast(a) => Some(a.to),
        Op::CastLike(_) => {
            cx.require(1, "target_type")?;
            cx.dtype(1)
        }
        o if o.is_predicate() => {
            if matches!(o, Op::Not) {
                check_dtype(cx.dtype(0), |d| d == DType::Bool, "Not")?;
            }
            if matches!(o, Op::IsNaN | Op::IsInf(_)) {
                check_dtype(cx.dtype(0), DType::is_float, o.name())?;
            }
            Some(DType::Bool)
        }
        _ => cx.dtype(0),
    };
    Ok(vec![tt(dtype, shape)])
}

/// Clip (min and max are optional scalar inputs of the same dtype).
pub(crate) fn clip(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    let d = same_dtype(cx, [0, 1, 2], "Clip")?;
    for i in [1, 2] {
        if let Some(s) = cx.shape(i) {
            if s.numel().is_some_and(|n| n != 1) {
                return Err(format!("Clip input {i} must be a scalar, got {s}"));
            }
        }
    }
    Ok(vec![tt(d, cx.shape(0).cloned())])
}

/// Dropout: the data and a boolean mask of the same shape.
pub(crate) fn dropout(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    let s = cx.shape(0).cloned();
    Ok(vec![tt(cx.dtype(0), s.clone()), tt(Some(DType::Bool), s)])
}

/// Multidirectionally broadcasting binary and variadic ops.
pub(crate) fn broadcasting(op: &Op, cx: &Ctx) -> R<Vec<TensorType>> {
    let n = cx.len();
    if n == 0 {
        return Err("needs at least one input".into());
    }
    for i in 0..n {
        cx.require(i, "operand")?;
    }
    let shape = broadcast_all((0..n).map(|i| cx.shape(i)))?;
    let dtype = match op {
        Op::Where => {
            check_dtype(cx.dtype(0), |d| d == DType::Bool, "Where condition")?;
            same_dtype(cx, [1, 2], "Where")?
        }
        Op::Pow => cx.dtype(0),
        Op::BitShift(_) => {
            let d = same_dtype(cx, 0..n, op.name())?;
            check_dtype(d, |d| d.is_int() && !d.is_signed_int(), "BitShift")?;
            d
        }
        Op::And | Op::Or | Op::Xor => {
            let d = same_dtype(cx, 0..n, op.name())?;
            check_dtype(d, |d| d == DType::Bool, op.name())?;
            Some(DType::Bool)
        }
        o if o.is_predicate() => {
            same_dtype(cx, 0..n, op.name())?;
            Some(DType::Bool)
        }
        Op::PRelu => {
            let d = same_dtype(cx, 0..n, op.name())?;
            // The slope broadcasts to X (unidirectionally): the result has X's rank.
            let shape = match (&shape, cx.shape(0)) {
                (Some(s), Some(x)) if s.rank() != x.rank() => {
                    return Err(format!(
                        "PRelu slope {} does not broadcast to X {x}",
                        cx.shape(1).map(|s| s.to_string()).unwrap_or_default()
                    ))
                }
                _ => shape,
            };
            return Ok(vec![tt(d, shape)]);
        }
        _ => same_dtype(cx, 0..n, op.name())?,
    };
    Ok(vec![tt(dtype, shape)])
}

/// QuantizeLinear: output dtype from the zero point, else `output_dtype`, else u8.
pub(crate) fn quantize(a: &crate::op::QuantizeAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "x")?;
    cx.require(1, "y_scale")?;
    let dtype = if cx.present(2) {
        let zp = cx.dtype(2);
        if a.output_dtype != 0 {
            if let (Some(zp), Some(od)) = (zp, crate::onnx_dtype(a.output_dtype as i32)) {
                if zp != od {
                    return Err(format!("zero point is {zp} but output_dtype is {od}"));
                }
            }
        }
        zp.or_else(|| crate::onnx_dtype(a.output_dtype as i32))
    } else if a.output_dtype != 0 {
        Some(
            crate::onnx_dtype(a.output_dtype as i32)
                .ok_or_else(|| format!("unknown output_dtype {}", a.output_dtype))?,
        )
    } else {
        Some(DType::U8)
    };
    Ok(vec![tt(dtype, cx.shape(0).cloned())])
}

/// DequantizeLinear: output dtype is the scale's.
pub(crate) fn dequantize(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "x")?;
    cx.require(1, "x_scale")?;
    if cx.present(2) {
        same_dtype(cx, [0, 2], "DequantizeLinear x and zero point")?;
    }
    Ok(vec![tt(cx.dtype(1), cx.shape(0).cloned())])
}

/// DynamicQuantizeLinear: (y: u8, scale: f32 scalar, zero point: u8 scalar).
pub(crate) fn dynamic_quantize(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "x")?;
    check_dtype(cx.dtype(0), |d| d == DType::F32, "DynamicQuantizeLinear")?;
    Ok(vec![
        tt(Some(DType::U8), cx.shape(0).cloned()),
        TensorType::new(DType::F32, Shape(vec![])),
        TensorType::new(DType::U8, Shape(vec![])),
    ])
}
