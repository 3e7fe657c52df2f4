//! Resize: nearest / linear / cubic, every coordinate transformation mode, antialiasing,
//! `axes`, `keep_aspect_ratio_policy`, `exclude_outside`, crop-and-resize extrapolation.
//!
//! Interpolation is separable: it runs one axis at a time in f64, like the ONNX reference, and
//! rounds (integers: to nearest even, saturating) back to the input type at the end.

use crate::dispatch::Args;
use crate::num::{from_vec, norm_axis};
use crate::Value;
use pare_ir::op::ResizeAttrs;
use pare_ir::DType;

fn nearest_coeffs(ratio: f64, mode: &str) -> Result<Vec<f64>, String> {
    if ratio.fract() == 0.0 {
        return Ok(vec![0.0, 1.0]);
    }
    let b = |x: bool| if x { 1.0 } else { 0.0 };
    Ok(match mode {
        "round_prefer_floor" => vec![b(ratio <= 0.5), b(ratio > 0.5)],
        "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
        "floor" => vec![1.0, 0.0],
        "ceil" => vec![0.0, 1.0],
        m => return Err(format!("unknown nearest_mode '{m}'")),
    })
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
        ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a) * ((1.0 - r) + 1.0)
            - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let f = |x: f64| {
        let x = x.abs();
        let (x2, x3) = (x * x, x * x * x);
        if x <= 1.0 {
            (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
        } else if x < 2.0 {
            a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let start = (-2.0 / scale).floor() as i64 + 1;
    let end = 2 - start;
    let c: Vec<f64> = (start..end).map(|i| f(scale * (i as f64 - r))).collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let footprint = 2 - 2 * start;
    let c: Vec<f64> = (start..start + footprint)
        .map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0))
        .collect();
    let s: f64 = c.iter().sum();
    c.into_iter().map(|v| v / s).collect()
}

/// One output position: (source index, weight) taps, or the extrapolation value.
enum Tap {
    Mix(Vec<(usize, f64)>),
    Extrapolate,
}

#[allow(clippy::too_many_arguments)]
fn axis_taps(
    at: &ResizeAttrs,
    in_w: usize,
    out_w: usize,
    scale: f64,
    roi: Option<(f64, f64)>,
) -> Result<Vec<Tap>, String> {
    let output_width = scale * in_w as f64;
    let iw = in_w as f64;
    let mut taps = Vec::with_capacity(out_w);
    for y in 0..out_w {
        let yf = y as f64;
        let mut extrapolated = false;
        let x = match at.coordinate_transformation_mode.as_str() {
            "align_corners" => {
                if output_width == 1.0 {
                    0.0
                } else {
                    yf * (iw - 1.0) / (output_width - 1.0)
                }
            }
            "asymmetric" => yf / scale,
            "tf_crop_and_resize" => {
                let (r0, r1) = roi.ok_or("tf_crop_and_resize needs roi")?;
                let x = if output_width == 1.0 {
                    (r1 - r0) * (iw - 1.0) / 2.0
                } else {
                    yf * (r1 - r0) * (iw - 1.0) / (output_width - 1.0)
                } + r0 * (iw - 1.0);
                extrapolated = x < 0.0 || x > iw - 1.0;
                x
            }
            "pytorch_half_pixel" => {
                if output_width == 1.0 {
                    -0.5
                } else {
                    (yf + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (yf + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adjustment = out_w as f64 / output_width;
                let center = iw / 2.0;
                center * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
            }
            m => return Err(format!("unknown coordinate_transformation_mode '{m}'")),
        };
        if extrapolated {
            taps.push(Tap::Extrapolate);
            continue;
        }
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let a = at.cubic_coeff_a as f64;
        let mut c = match (at.mode.as_str(), at.antialias) {
            ("nearest", _) => nearest_coeffs(ratio, &at.nearest_mode)?,
            ("linear", false) => vec![1.0 - ratio, ratio],
            ("linear", true) => linear_coeffs_antialias(ratio, scale),
            ("cubic", false) => cubic_coeffs(ratio, a),
            ("cubic", true) => cubic_coeffs_antialias(ratio, scale, a),
            (m, _) => return Err(format!("unknown mode '{m}'")),
        };
        let n = c.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let off = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = p as i64 + off - pad;
        let idx: Vec<i64> = (0..n).map(|i| start + i).collect();
        if at.exclude_outside {
            for (ci, &ix) in c.iter_mut().zip(&idx) {
                if ix < 0 || ix >= in_w as i64 {
                    *ci = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|v| *v /= s);
        }
        let hi = in_w.saturating_sub(1) as i64;
        taps.push(Tap::Mix(
            idx.iter()
                .zip(&c)
                .filter(|(_, &w)| w != 0.0)
                .map(|(&ix, &w)| (ix.clamp(0, hi) as usize, w))
                .collect(),
        ));
    }
    Ok(taps)
}

/// Resize(X, roi?, scales?, sizes?).
pub(crate) fn resize(at: &ResizeAttrs, a: &Args) -> Result<Value, String> {
    let x = a.req(0)?;
    let shape = x.shape().to_vec();
    let r = shape.len();
    let axes: Vec<usize> = match &at.axes {
        Some(ax) => ax
            .iter()
            .map(|&v| norm_axis(v, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    let roi_v: Option<Vec<f64>> = a
        .opt(1)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_f64_vec())
        .transpose()?;
    let scales_v: Option<Vec<f64>> = a
        .opt(2)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_f64_vec())
        .transpose()?;
    let sizes_v: Option<Vec<i64>> = a
        .opt(3)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_i64_vec())
        .transpose()?;
    let na = axes.len();
    let mut scale = vec![1.0f64; r];
    let mut out: Vec<usize> = shape.clone();
    match (&scales_v, &sizes_v) {
        (Some(s), None) => {
            if s.len() != na {
                return Err(format!("scales has {} entries, expected {na}", s.len()));
            }
            for (i, &d) in axes.iter().enumerate() {
                scale[d] = s[i];
                out[d] = (s[i] * shape[d] as f64) as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != na {
                return Err(format!("sizes has {} entries, expected {na}", sz.len()));
            }
            for (i, &d) in axes.iter().enumerate() {
                out[d] = sz[i].max(0) as usize;
                scale[d] = out[d] as f64 / shape[d] as f64;
            }
            if at.keep_aspect_ratio_policy != "stretch" {
                let vals = axes.iter().map(|&d| scale[d]);
                let s = match at.keep_aspect_ratio_policy.as_str() {
                    "not_larger" => vals.fold(f64::INFINITY, f64::min),
                    "not_smaller" => vals.fold(f64::NEG_INFINITY, f64::max),
                    p => return Err(format!("unknown keep_aspect_ratio_policy '{p}'")),
                };
                for &d in &axes {
                    scale[d] = s;
                    out[d] = (s * shape[d] as f64 + 0.5) as usize;
                }
            }
        }
        (Some(_), Some(_)) => return Err("only one of scales and sizes may be given".into()),
        (None, None) => return Err("one of scales and sizes is required".into()),
    }
    // roi in full-rank form [starts..., ends...].
    let roi: Option<Vec<f64>> = match roi_v {
        None => None,
        Some(v) if v.len() == 2 * na => {
            let mut full = vec![0.0; r];
            full.extend(vec![1.0; r]);
            for (i, &d) in axes.iter().enumerate() {
                full[d] = v[i];
                full[r + d] = v[na + i];
            }
            Some(full)
        }
        Some(v) => return Err(format!("roi has {} entries, expected {}", v.len(), 2 * na)),
    };
    let mut data = x.to_f64_vec()?;
    let mut cur = shape.clone();
    let ext = at.extrapolation_value as f64;
    for &d in &axes {
        let axis_roi = roi.as_ref().map(|v| (v[d], v[r + d]));
        let trivial_roi =
            axis_roi.is_none_or(|(s, e)| (s - 0.0).abs() < 1e-9 && (e - 1.0).abs() < 1e-9);
        if (scale[d] - 1.0).abs() < 1e-9 && out[d] == cur[d] && trivial_roi {
            continue;
        }
        let taps = axis_taps(at, cur[d], out[d], scale[d], axis_roi)?;
        let outer: usize = cur[..d].iter().product();
        let inner: usize = cur[d + 1..].iter().product();
        let (iw, ow) = (cur[d], out[d]);
        let mut next = vec![0.0f64; outer * ow * inner];
        for o in 0..outer {
            for (j, t) in taps.iter().enumerate() {
                let dst = &mut next[(o * ow + j) * inner..(o * ow + j + 1) * inner];
                match t {
                    Tap::Extrapolate => dst.iter_mut().for_each(|v| *v = ext),
                    Tap::Mix(ws) => {
                        for &(src, w) in ws {
                            let s = &data[(o * iw + src) * inner..(o * iw + src + 1) * inner];
                            for (dv, sv) in dst.iter_mut().zip(s) {
                                *dv += w * sv;
                            }
                        }
                    }
                }
            }
        }
        data = next;
        cur[d] = ow;
    }
    let dt = x.dtype();
    if dt.is_int() {
        // saturate_cast: round half to even, clip to the type's range.
        let (lo, hi) = match dt {
            DType::I8 => (i8::MIN as f64, i8::MAX as f64),
            DType::U8 => (0.0, u8::MAX as f64),
            DType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DType::U16 => (0.0, u16::MAX as f64),
            DType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DType::U32 => (0.0, u32::MAX as f64),
            _ => (f64::MIN, f64::MAX),
        };
        data.iter_mut()
            .for_each(|v| *v = v.round_ties_even().clamp(lo, hi));
    }
    let f = Value::F64(from_vec(&cur, data)?);
    crate::cast::cast(&f, dt, true)
}
