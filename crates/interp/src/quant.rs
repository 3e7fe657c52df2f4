//! Quantization: QuantizeLinear (per-tensor, per-axis, blocked; integer, 4/2-bit and 8/4-bit
//! float outputs), DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul,
//! ConvInteger, QLinearConv.

use crate::cast::{cast, E2M1, E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ};
use crate::dispatch::Args;
use crate::num::{from_vec, norm_axis};
use crate::Value;
use ndarray::ArrayD;
use pare_ir::op::{ConvAttrs, DequantizeAttrs, QuantizeAttrs};
use pare_ir::{dtype_onnx_code, onnx_dtype, DType};

/// Maps each element of `x` (row-major) to the index of its scale / zero point.
fn param_index(
    x_shape: &[usize],
    p_shape: &[usize],
    axis: i64,
    block: i64,
) -> Result<Vec<usize>, String> {
    let n: usize = x_shape.iter().product();
    let pn: usize = p_shape.iter().product();
    if pn == 1 {
        return Ok(vec![0; n]);
    }
    let r = x_shape.len();
    let ax = norm_axis(axis, r)?;
    let st = crate::num::strides_of(x_shape);
    if block <= 0 {
        if p_shape.len() != 1 || p_shape[0] != x_shape[ax] {
            return Err(format!(
                "per-axis parameter of shape {p_shape:?} does not match axis {ax} of {x_shape:?}"
            ));
        }
        return Ok((0..n).map(|lin| (lin / st[ax]) % x_shape[ax]).collect());
    }
    let b = block as usize;
    if p_shape.len() != r
        || (0..r).any(|d| {
            if d == ax {
                p_shape[d] != x_shape[d].div_ceil(b)
            } else {
                p_shape[d] != x_shape[d]
            }
        })
    {
        return Err(format!("blocked parameter of shape {p_shape:?} does not match {x_shape:?} with block {b} on axis {ax}"));
    }
    let pst = crate::num::strides_of(p_shape);
    Ok((0..n)
        .map(|lin| {
            (0..r)
                .map(|d| {
                    let i = (lin / st[d]) % x_shape[d];
                    let i = if d == ax { i / b } else { i };
                    i * pst[d]
                })
                .sum()
        })
        .collect())
}

fn int_range(d: DType) -> Option<(f64, f64)> {
    Some(match d {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U4 => (0.0, 15.0),
        DType::I4 => (-8.0, 7.0),
        DType::U2 => (0.0, 3.0),
        DType::I2 => (-2.0, 1.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        _ => return None,
    })
}

/// Integer codes (as f64 values in range) into a value of dtype `d`.
fn int_value(d: DType, shape: &[usize], v: Vec<f64>) -> Result<Value, String> {
    Ok(match d {
        DType::U8 => Value::U8(from_vec(shape, v.into_iter().map(|x| x as u8).collect())?),
        DType::I8 => Value::I8(from_vec(shape, v.into_iter().map(|x| x as i8).collect())?),
        DType::U16 => Value::U16(from_vec(shape, v.into_iter().map(|x| x as u16).collect())?),
        DType::I16 => Value::I16(from_vec(shape, v.into_iter().map(|x| x as i16).collect())?),
        DType::U4 => Value::U4(from_vec(shape, v.into_iter().map(|x| x as u8).collect())?),
        DType::I4 => Value::I4(from_vec(shape, v.into_iter().map(|x| x as i8).collect())?),
        DType::U2 => Value::U2(from_vec(shape, v.into_iter().map(|x| x as u8).collect())?),
        DType::I2 => Value::I2(from_vec(shape, v.into_iter().map(|x| x as i8).collect())?),
        DType::I32 => Value::I32(from_vec(shape, v.into_iter().map(|x| x as i32).collect())?),
        d => return Err(format!("{d} is not an integer quantization type")),
    })
}

/// `x / scale` rounded as numpy would in x's float type.
fn divide(x: &Value, xs: &[f64], sc: &[f64], idx: &[usize]) -> Vec<f64> {
    match x.dtype() {
        DType::F32 => xs
            .iter()
            .zip(idx)
            .map(|(&v, &i)| ((v as f32) / (sc[i] as f32)) as f64)
            .collect(),
        DType::F16 => xs
            .iter()
            .zip(idx)
            .map(|(&v, &i)| half::f16::from_f32(v as f32 / sc[i] as f32).to_f64())
            .collect(),
        DType::BF16 => xs
            .iter()
            .zip(idx)
            .map(|(&v, &i)| half::bf16::from_f32(v as f32 / sc[i] as f32).to_f64())
            .collect(),
        _ => xs.iter().zip(idx).map(|(&v, &i)| v / sc[i]).collect(),
    }
}

/// QuantizeLinear.
pub(crate) fn quantize_linear(
    at: &QuantizeAttrs,
    x: &Value,
    scale: &Value,
    zp: Option<&Value>,
) -> Result<Value, String> {
    let out_dt = match zp {
        Some(z) => {
            if at.output_dtype != 0 && onnx_dtype(at.output_dtype as i32) != Some(z.dtype()) {
                return Err(format!(
                    "output_dtype {} disagrees with the zero point's type {}",
                    at.output_dtype,
                    z.dtype()
                ));
            }
            z.dtype()
        }
        None if at.output_dtype != 0 => onnx_dtype(at.output_dtype as i32)
            .ok_or_else(|| format!("unknown output_dtype {}", at.output_dtype))?,
        None => DType::U8,
    };
    let shape = x.shape().to_vec();
    let xs = x.to_f64_vec()?;
    let sc = scale.to_f64_vec()?;
    let idx = param_index(&shape, scale.shape(), at.axis, at.block_size)?;
    let q = divide(x, &xs, &sc, &idx);
    let zpv: Option<(Vec<f64>, Vec<usize>)> = match zp {
        Some(z) => Some((
            z.to_f64_vec()?,
            param_index(&shape, z.shape(), at.axis, at.block_size)?,
        )),
        None => None,
    };
    let zp_at = |k: usize| zpv.as_ref().map_or(0.0, |(v, ix)| v[ix[k]]);
    if let Some((lo, hi)) = int_range(out_dt) {
        let v: Vec<f64> = q
            .iter()
            .enumerate()
            .map(|(k, &y)| (y.round_ties_even() + zp_at(k)).clamp(lo, hi))
            .collect();
        return int_value(out_dt, &shape, v);
    }
    let mf = match out_dt {
        DType::F8E4M3FN => E4M3FN,
        DType::F8E4M3FNUZ => E4M3FNUZ,
        DType::F8E5M2 => E5M2,
        DType::F8E5M2FNUZ => E5M2FNUZ,
        DType::F4E2M1 => E2M1,
        d => return Err(format!("{d} is not a quantization type")),
    };
    let is_f4 = out_dt == DType::F4E2M1;
    let codes: Vec<u8> = q
        .iter()
        .enumerate()
        .map(|(k, &y)| {
            let y = if is_f4 {
                (y as f32 + zp_at(k) as f32) as f64
            } else {
                y as f32 as f64
            };
            mf.encode(y, at.saturate)
        })
        .collect();
    let a = from_vec(&shape, codes)?;
    Ok(match out_dt {
        DType::F8E4M3FN => Value::F8E4M3FN(a),
        DType::F8E4M3FNUZ => Value::F8E4M3FNUZ(a),
        DType::F8E5M2 => Value::F8E5M2(a),
        DType::F8E5M2FNUZ => Value::F8E5M2FNUZ(a),
        _ => Value::F4E2M1(a),
    })
}

/// DequantizeLinear: `(x - zero_point) * scale`, in the scale's type.
pub(crate) fn dequantize_linear(
    at: &DequantizeAttrs,
    x: &Value,
    scale: &Value,
    zp: Option<&Value>,
) -> Result<Value, String> {
    let shape = x.shape().to_vec();
    let xs = x.to_f64_vec()?;
    let sc = scale.to_f64_vec()?;
    let idx = param_index(&shape, scale.shape(), at.axis, at.block_size)?;
    let is_float_x = x.is_float();
    let zpv: Option<(Vec<f64>, Vec<usize>)> = match zp {
        Some(z) if !is_float_x => Some((
            z.to_f64_vec()?,
            param_index(&shape, z.shape(), at.axis, at.block_size)?,
        )),
        _ => None,
    };
    let wide = scale.dtype() == DType::F64;
    let y: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let z = zpv.as_ref().map_or(0.0, |(zv, ix)| zv[ix[k]]);
            if wide {
                (v - z) * sc[idx[k]]
            } else {
                ((v as f32 - z as f32) * sc[idx[k]] as f32) as f64
            }
        })
        .collect();
    crate::norm::finish(scale.dtype(), &shape, y)
}

/// DynamicQuantizeLinear: (y: u8, y_scale: f32, y_zero_point: u8).
pub(crate) fn dynamic_quantize_linear(x: &Value) -> Result<Vec<Value>, String> {
    let xs: Vec<f32> = x.to_f64_vec()?.into_iter().map(|v| v as f32).collect();
    let maxx = xs.iter().copied().fold(0.0f32, f32::max);
    let minx = xs.iter().copied().fold(0.0f32, f32::min);
    let scale = (if maxx == minx { 1.0 } else { maxx - minx }) / 255.0f32;
    let zp = (0.0f32 - minx / scale).clamp(0.0, 255.0).round_ties_even();
    let y: Vec<u8> = xs
        .iter()
        .map(|&v| ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
        .collect();
    Ok(vec![
        Value::U8(from_vec(x.shape(), y)?),
        cast(
            &Value::F32(ndarray::arr0(scale).into_dyn()),
            x.dtype(),
            true,
        )?,
        Value::U8(ndarray::arr0(zp as u8).into_dyn()),
    ])
}

/// Integer operand minus its zero point, as i32 (zero point: scalar, or 1-D along `axis` of a
/// rank-2 tail: rows of A, columns of B).
fn centered(v: &Value, zp: Option<&Value>, per_row: bool) -> Result<ArrayD<i32>, String> {
    let data: Vec<i64> = v.to_i64_vec()?;
    let shape = v.shape().to_vec();
    let z: Vec<i64> = match zp {
        Some(z) => z.to_i64_vec()?,
        None => vec![0],
    };
    let r = shape.len();
    let out: Vec<i32> = if z.len() <= 1 {
        let z0 = z.first().copied().unwrap_or(0);
        data.iter().map(|&x| (x - z0) as i32).collect()
    } else {
        let st = crate::num::strides_of(&shape);
        let ax = if per_row { r.saturating_sub(2) } else { r - 1 };
        if shape.get(ax).copied() != Some(z.len()) {
            return Err(format!(
                "zero point of length {} does not match shape {shape:?}",
                z.len()
            ));
        }
        data.iter()
            .enumerate()
            .map(|(lin, &x)| (x - z[(lin / st[ax]) % shape[ax]]) as i32)
            .collect()
    };
    from_vec(&shape, out)
}

/// MatMulInteger → i32.
pub(crate) fn matmul_integer(
    a: &Value,
    b: &Value,
    az: Option<&Value>,
    bz: Option<&Value>,
) -> Result<Value, String> {
    let a32 = centered(a, az, true)?;
    let b32 = centered(b, bz, false)?;
    crate::matmul::matmul(&Value::I32(a32), &Value::I32(b32))
}

/// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp).
pub(crate) fn qlinear_matmul(a: &Args) -> Result<Value, String> {
    let (av, a_s, a_z) = (a.req(0)?, a.req(1)?, a.opt(2));
    let (bv, b_s, b_z) = (a.req(3)?, a.req(4)?, a.opt(5));
    let (y_s, y_z) = (a.req(6)?, a.opt(7));
    let c = crate::matmul::matmul(
        &Value::I32(centered(av, a_z, true)?),
        &Value::I32(centered(bv, b_z, false)?),
    )?;
    let shape = c.shape().to_vec();
    let cv = c.to_i64_vec()?;
    let (asv, bsv, ysv) = (a_s.to_f64_vec()?, b_s.to_f64_vec()?, y_s.to_f64_vec()?);
    let ys = *ysv.first().ok_or("empty y_scale")?;
    let r = shape.len();
    let (m, n) = if r >= 2 {
        (shape[r - 2], shape[r - 1])
    } else {
        (1, shape.last().copied().unwrap_or(1))
    };
    let yzv = match y_z {
        Some(z) => z.to_f64_vec()?,
        None => vec![0.0],
    };
    let out_dt = y_z.map_or(av.dtype(), |z| z.dtype());
    let (lo, hi) = int_range(out_dt).ok_or_else(|| format!("unsupported output type {out_dt}"))?;
    for (what, len, want) in [
        ("a_scale", asv.len(), m),
        ("b_scale", bsv.len(), n),
        ("y_zero_point", yzv.len(), n),
    ] {
        if len == 0 || (len > 1 && len != want) {
            return Err(format!("{what} has {len} elements, expected 1 or {want}"));
        }
    }
    let v: Vec<f64> = cv
        .iter()
        .enumerate()
        .map(|(lin, &x)| {
            let col = lin % n.max(1);
            let row = (lin / n.max(1)) % m.max(1);
            let sa = if asv.len() > 1 { asv[row] } else { asv[0] } as f32;
            let sb = if bsv.len() > 1 { bsv[col] } else { bsv[0] } as f32;
            let mult = (sa * sb / ys as f32) as f64;
            let yz = if yzv.len() > 1 { yzv[col] } else { yzv[0] };
            (x as f64 * mult + yz).round_ties_even().clamp(lo, hi)
        })
        .collect();
    int_value(out_dt, &shape, v)
}

/// Integer convolution in f64 (exact for realistic sizes): (x - x_zp) ⋆ (w - w_zp) + bias.
fn int_conv(
    c: &ConvAttrs,
    x: &Value,
    w: &Value,
    xz: Option<&Value>,
    wz: Option<&Value>,
    bias: Option<&Value>,
) -> Result<ArrayD<f64>, String> {
    let xs = x.to_f64_vec()?;
    let x0 = match xz {
        Some(z) => z.scalar_f64()?,
        None => 0.0,
    };
    let xf = from_vec(x.shape(), xs.into_iter().map(|v| v - x0).collect())?;
    let ws = w.to_f64_vec()?;
    let wshape = w.shape().to_vec();
    let per_out: usize = wshape[1..].iter().product();
    let wzv = match wz {
        Some(z) => z.to_f64_vec()?,
        None => vec![0.0],
    };
    if wzv.is_empty() || (wzv.len() > 1 && wzv.len() != wshape[0]) {
        return Err(format!(
            "w_zero_point has {} elements, expected 1 or {}",
            wzv.len(),
            wshape[0]
        ));
    }
    let wf = from_vec(
        &wshape,
        ws.iter()
            .enumerate()
            .map(|(lin, &v)| {
                v - if wzv.len() > 1 {
                    wzv[lin / per_out.max(1)]
                } else {
                    wzv[0]
                }
            })
            .collect(),
    )?;
    let b = match bias {
        Some(b) => Some(from_vec(b.shape(), b.to_f64_vec()?)?),
        None => None,
    };
    crate::conv::conv_t::<f64>(c, &xf, &wf, b.as_ref())
}

/// ConvInteger → i32.
pub(crate) fn conv_integer(
    c: &ConvAttrs,
    x: &Value,
    w: &Value,
    xz: Option<&Value>,
    wz: Option<&Value>,
) -> Result<Value, String> {
    let y = int_conv(c, x, w, xz, wz, None)?;
    Ok(Value::I32(y.mapv(|v| v as i32)))
}

/// QLinearConv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?).
pub(crate) fn qlinear_conv(c: &ConvAttrs, a: &Args) -> Result<Value, String> {
    let (x, x_s, x_z) = (a.req(0)?, a.req(1)?, a.opt(2));
    let (w, w_s, w_z) = (a.req(3)?, a.req(4)?, a.opt(5));
    let (y_s, y_z) = (a.req(6)?, a.opt(7));
    let y = int_conv(c, x, w, x_z, w_z, a.opt(8))?;
    let shape = y.shape().to_vec();
    let m = shape[1];
    let sp: usize = shape[2..].iter().product();
    let xs = x_s.scalar_f64()? as f32;
    let ys = y_s.scalar_f64()? as f32;
    let wsv = w_s.to_f64_vec()?;
    if wsv.is_empty() || (wsv.len() > 1 && wsv.len() != m) {
        return Err(format!(
            "w_scale has {} elements, expected 1 or {m}",
            wsv.len()
        ));
    }
    let out_dt = y_z.map_or(x.dtype(), |z| z.dtype());
    let yz = match y_z {
        Some(z) => z.scalar_f64()?,
        None => 0.0,
    };
    let (lo, hi) = int_range(out_dt).ok_or_else(|| format!("unsupported output type {out_dt}"))?;
    let v: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(lin, &acc)| {
            let ch = (lin / sp.max(1)) % m.max(1);
            let ws = if wsv.len() > 1 { wsv[ch] } else { wsv[0] } as f32;
            let mult = (xs * ws / ys) as f64;
            ((acc as i32) as f64 * mult + yz)
                .clamp(lo, hi)
                .round_ties_even()
        })
        .collect();
    let _ = dtype_onnx_code;
    int_value(out_dt, &shape, v)
}
