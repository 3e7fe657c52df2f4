//! Convolution, pooling, normalization and resampling ops.

use super::ctx::{
    check_dtype, dim_add, dim_div_exact, dim_mul, norm_axes, norm_axis, same_dtype, tt, unify,
    unknown_dims, Ctx, R,
};
use crate::op::{ConvAttrs, ConvTransposeAttrs, PoolAttrs, ResizeAttrs};
use crate::{DType, Dim, Shape, TensorType};

/// The spatial attributes shared by convolutions and pools, with defaults filled in.
pub(crate) struct Window {
    /// Kernel extents.
    pub kernel: Vec<Option<i64>>,
    /// Strides.
    pub strides: Vec<i64>,
    /// Dilations.
    pub dilations: Vec<i64>,
    /// Pads, begins then ends.
    pub pads: Vec<i64>,
    /// auto_pad.
    pub auto_pad: String,
}

fn list(name: &str, v: &Option<Vec<i64>>, n: usize, default: i64, min: i64) -> R<Vec<i64>> {
    match v {
        None => Ok(vec![default; n]),
        Some(v) => {
            if v.len() != n {
                return Err(format!("{name} has {} entries, expected {n}", v.len()));
            }
            if let Some(x) = v.iter().find(|&&x| x < min) {
                return Err(format!("{name} {v:?}: entry {x} is below {min}"));
            }
            Ok(v.clone())
        }
    }
}

/// Checks auto_pad and fills in defaults for `n` spatial dims.
pub(crate) fn window(
    n: usize,
    kernel: Vec<Option<i64>>,
    auto_pad: &str,
    strides: &Option<Vec<i64>>,
    dilations: &Option<Vec<i64>>,
    pads: &Option<Vec<i64>>,
) -> R<Window> {
    if !matches!(auto_pad, "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID") {
        return Err(format!("invalid auto_pad '{auto_pad}'"));
    }
    if let Some(k) = kernel.iter().flatten().find(|&&k| k < 1) {
        return Err(format!("kernel extent {k} must be positive"));
    }
    let pads = if auto_pad == "NOTSET" {
        list("pads", pads, 2 * n, 0, 0)?
    } else {
        vec![0; 2 * n]
    };
    Ok(Window {
        kernel,
        strides: list("strides", strides, n, 1, 1)?,
        dilations: list("dilations", dilations, n, 1, 1)?,
        pads,
        auto_pad: auto_pad.to_string(),
    })
}

fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1).div_euclid(b)
}

/// Output extent of one spatial dim of a convolution or pool.
fn window_out(w: &Window, i: usize, input: &Dim, ceil_mode: bool, what: &str) -> R<Dim> {
    let n = w.strides.len();
    let s = w.strides[i] as i128;
    let Some(k) = w.kernel[i] else {
        return Ok(Dim::Unknown);
    };
    let ek = (k as i128 - 1) * w.dilations[i] as i128 + 1;
    let (pb, pe) = (w.pads[i] as i128, w.pads[i + n] as i128);
    let same = w.auto_pad.starts_with("SAME");
    let valid = w.auto_pad == "VALID";
    let Dim::Fixed(x) = input else {
        let identity = s == 1 && (same || (ek - 1 == pb + pe && !valid) || (valid && ek == 1));
        return Ok(if identity {
            input.clone()
        } else {
            Dim::Unknown
        });
    };
    let x = *x as i128;
    let out = if same {
        ceil_div(x, s)
    } else {
        let total = x + pb + pe - ek;
        if total < 0 {
            return Err(format!(
                "{what}: input extent {x} (pads {pb}+{pe}) is smaller than the dilated kernel {ek}"
            ));
        }
        if ceil_mode && !valid {
            let mut o = ceil_div(total, s) + 1;
            // The last window must start inside the input or the leading padding.
            if (o - 1) * s >= x + pb {
                o -= 1;
            }
            o
        } else {
            total / s + 1
        }
    };
    Ok(u64::try_from(out).map(Dim::Fixed).unwrap_or(Dim::Unknown))
}

/// Conv-family shape: `x` [N,C,D...], `w` [M,C/group,k...] -> [N,M,out...].
fn conv_shape(a: &ConvAttrs, cx: &Ctx, xi: usize, wi: usize, what: &str) -> R<Option<Shape>> {
    cx.require(xi, "X")?;
    cx.require(wi, "W")?;
    if a.group < 1 {
        return Err(format!("group {} must be >= 1", a.group));
    }
    let xs = cx.shape(xi);
    let ws = cx.shape(wi);
    let rank = match (xs, ws, &a.kernel_shape) {
        (Some(x), _, _) => x.rank(),
        (None, Some(w), _) => w.rank(),
        (None, None, Some(k)) => k.len() + 2,
        (None, None, None) => return Ok(None),
    };
    if rank < 3 {
        return Err(format!("{what} input must have rank >= 3, got rank {rank}"));
    }
    if let Some(w) = ws {
        if w.rank() != rank {
            return Err(format!(
                "{what} weight {w} has rank {}, input has rank {rank}",
                w.rank()
            ));
        }
    }
    let n = rank - 2;
    let kernel: Vec<Option<i64>> = match (&a.kernel_shape, ws) {
        (Some(k), _) => {
            if k.len() != n {
                return Err(format!(
                    "kernel_shape {k:?} has {} entries, expected {n}",
                    k.len()
                ));
            }
            if let Some(w) = ws {
                for (i, kk) in k.iter().enumerate() {
                    if let Dim::Fixed(wk) = &w.0[i + 2] {
                        if *wk as i64 != *kk {
                            return Err(format!("kernel_shape {k:?} does not match weight {w}"));
                        }
                    }
                }
            }
            k.iter().map(|&k| Some(k)).collect()
        }
        (None, Some(w)) => w.0[2..]
            .iter()
            .map(|d| d.fixed().map(|v| v as i64))
            .collect(),
        (None, None) => vec![None; n],
    };
    let win = window(n, kernel, &a.auto_pad, &a.strides, &a.dilations, &a.pads)?;
    let g = a.group as u64;
    let mut out = vec![Dim::Unknown; rank];
    if let Some(x) = xs {
        out[0] = x.0[0].clone();
    }
    if let Some(w) = ws {
        out[1] = w.0[0].clone();
        if let Dim::Fixed(m) = &w.0[0] {
            if m % g != 0 {
                return Err(format!(
                    "{what}: {m} output channels not divisible by group {g}"
                ));
            }
        }
        if let (Some(x), Dim::Fixed(wc)) = (xs, &w.0[1]) {
            if let Dim::Fixed(c) = &x.0[1] {
                if Some(*c) != wc.checked_mul(g) {
                    return Err(format!(
                        "{what}: input has {c} channels but weight {w} with group {g} expects {wc}x{g}"
                    ));
                }
            }
        }
    }
    if let Some(x) = xs {
        for i in 0..n {
            out[i + 2] = window_out(&win, i, &x.0[i + 2], false, what)?;
        }
    }
    Ok(Some(Shape(out)))
}

/// Conv.
pub(crate) fn conv(a: &ConvAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    let d = same_dtype(cx, [0, 1, 2], "Conv")?;
    let shape = conv_shape(a, cx, 0, 1, "Conv")?;
    if let (Some(b), Some(w)) = (cx.shape(2), cx.shape(1)) {
        if b.rank() != 1 || w.rank() < 1 || unify(&b.0[0], &w.0[0]).is_none() {
            return Err(format!("Conv bias {b} does not match weight {w}"));
        }
    }
    Ok(vec![tt(d, shape)])
}

/// ConvInteger: int32 result.
pub(crate) fn conv_integer(a: &ConvAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    Ok(vec![tt(
        Some(DType::I32),
        conv_shape(a, cx, 0, 1, "ConvInteger")?,
    )])
}

/// QLinearConv (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?).
pub(crate) fn qlinear_conv(a: &ConvAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(7, "y_zero_point")?;
    Ok(vec![tt(
        cx.dtype(7),
        conv_shape(a, cx, 0, 3, "QLinearConv")?,
    )])
}

/// ConvTranspose: `x` [N,C,D...], `w` [C,M/group,k...] -> [N,M,out...].
pub(crate) fn conv_transpose(a: &ConvTransposeAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    cx.require(1, "W")?;
    let d = same_dtype(cx, [0, 1, 2], "ConvTranspose")?;
    if a.group < 1 {
        return Err(format!("group {} must be >= 1", a.group));
    }
    let xs = cx.shape(0);
    let ws = cx.shape(1);
    let rank = match (xs, ws, &a.kernel_shape) {
        (Some(x), _, _) => x.rank(),
        (None, Some(w), _) => w.rank(),
        (None, None, Some(k)) => k.len() + 2,
        (None, None, None) => return Ok(vec![tt(d, None)]),
    };
    if rank < 3 {
        return Err(format!(
            "ConvTranspose input must have rank >= 3, got rank {rank}"
        ));
    }
    if let Some(w) = ws {
        if w.rank() != rank {
            return Err(format!(
                "ConvTranspose weight {w} has rank {}, input has rank {rank}",
                w.rank()
            ));
        }
    }
    let n = rank - 2;
    let kernel: Vec<Option<i64>> = match (&a.kernel_shape, ws) {
        (Some(k), _) if k.len() == n => k.iter().map(|&k| Some(k)).collect(),
        (Some(k), _) => {
            return Err(format!(
                "kernel_shape {k:?} has {} entries, expected {n}",
                k.len()
            ))
        }
        (None, Some(w)) => w.0[2..]
            .iter()
            .map(|d| d.fixed().map(|v| v as i64))
            .collect(),
        (None, None) => vec![None; n],
    };
    let win = window(n, kernel, &a.auto_pad, &a.strides, &a.dilations, &a.pads)?;
    let out_pad = list("output_padding", &a.output_padding, n, 0, 0)?;
    let g = a.group as u64;
    let mut out = vec![Dim::Unknown; rank];
    if let Some(x) = xs {
        out[0] = x.0[0].clone();
    }
    if let Some(w) = ws {
        out[1] = dim_mul(&w.0[1], &Dim::Fixed(g));
        if let (Some(x), Dim::Fixed(wc)) = (xs, &w.0[0]) {
            if let Dim::Fixed(c) = &x.0[1] {
                if c != wc {
                    return Err(format!(
                        "ConvTranspose: input has {c} channels but weight {w} expects {wc}"
                    ));
                }
            }
        }
    }
    if let Some(os) = &a.output_shape {
        let os = if os.len() == n + 2 { &os[2..] } else { &os[..] };
        if os.len() != n {
            return Err(format!(
                "output_shape {os:?} has {} entries, expected {n}",
                os.len()
            ));
        }
        for (i, &v) in os.iter().enumerate() {
            if v < 0 {
                return Err(format!("output_shape {os:?} has a negative extent"));
            }
            out[i + 2] = Dim::Fixed(v as u64);
        }
    } else if let Some(x) = xs {
        for i in 0..n {
            let s = win.strides[i];
            let input = &x.0[i + 2];
            out[i + 2] = if win.auto_pad.starts_with("SAME") {
                dim_mul(input, &Dim::Fixed(s as u64))
            } else {
                match (input, win.kernel[i]) {
                    (Dim::Fixed(v), Some(k)) => {
                        let ek = (k as i128 - 1) * win.dilations[i] as i128 + 1;
                        let o = s as i128 * (*v as i128 - 1) + out_pad[i] as i128 + ek
                            - win.pads[i] as i128
                            - win.pads[i + n] as i128;
                        if o < 0 {
                            return Err(format!("ConvTranspose output extent {o} is negative"));
                        }
                        u64::try_from(o).map(Dim::Fixed).unwrap_or(Dim::Unknown)
                    }
                    (other, Some(k)) => {
                        let ek = (k as i128 - 1) * win.dilations[i] as i128 + 1;
                        let pads = win.pads[i] as i128 + win.pads[i + n] as i128;
                        if s == 1 && out_pad[i] as i128 + ek - 1 - pads == 0 {
                            other.clone()
                        } else {
                            Dim::Unknown
                        }
                    }
                    _ => Dim::Unknown,
                }
            };
        }
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// AveragePool, MaxPool (with int64 indices) and LpPool.
pub(crate) fn pool(a: &PoolAttrs, cx: &Ctx, what: &str) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    let n = a.kernel_shape.len();
    if n == 0 {
        return Err("kernel_shape is required and must be non-empty".into());
    }
    let win = window(
        n,
        a.kernel_shape.iter().map(|&k| Some(k)).collect(),
        &a.auto_pad,
        &a.strides,
        &a.dilations,
        &a.pads,
    )?;
    let shape = match cx.shape(0) {
        None => None,
        Some(x) => {
            if x.rank() != n + 2 {
                return Err(format!(
                    "{what} input {x} must have rank {} for kernel {:?}",
                    n + 2,
                    a.kernel_shape
                ));
            }
            let mut out = x.0[..2].to_vec();
            for i in 0..n {
                out.push(window_out(&win, i, &x.0[i + 2], a.ceil_mode, what)?);
            }
            Some(Shape(out))
        }
    };
    Ok(vec![
        tt(cx.dtype(0), shape.clone()),
        tt(Some(DType::I64), shape),
    ])
}

/// GlobalAveragePool, GlobalMaxPool, GlobalLpPool: spatial extents become 1.
pub(crate) fn global_pool(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    let shape = match cx.shape(0) {
        None => None,
        Some(x) if x.rank() < 2 => {
            return Err(format!("global pool input {x} must have rank >= 2"))
        }
        Some(x) => {
            let mut v = x.0[..2].to_vec();
            v.extend(std::iter::repeat_n(Dim::Fixed(1), x.rank() - 2));
            Some(Shape(v))
        }
    };
    Ok(vec![tt(cx.dtype(0), shape)])
}

/// Channel extent (dim 1) check of a per-channel parameter.
fn check_channels(cx: &Ctx, i: usize, what: &str) -> R<()> {
    if let (Some(x), Some(p)) = (cx.shape(0), cx.shape(i)) {
        if x.rank() < 2 {
            return Err(format!("{what} input {x} must have rank >= 2"));
        }
        if p.rank() != 1 || unify(&p.0[0], &x.0[1]).is_none() {
            return Err(format!(
                "{what} parameter {i} {p} does not match {} channels of {x}",
                x.0[1]
            ));
        }
    }
    Ok(())
}

/// BatchNormalization: Y, and in training mode running mean and variance.
pub(crate) fn batch_norm(cx: &Ctx) -> R<Vec<TensorType>> {
    for i in 0..5 {
        cx.require(i, "parameter")?;
    }
    for i in 1..5 {
        check_channels(cx, i, "BatchNormalization")?;
    }
    Ok(vec![cx.ty(0).clone(), cx.ty(3).clone(), cx.ty(4).clone()])
}

/// InstanceNormalization.
pub(crate) fn instance_norm(cx: &Ctx) -> R<Vec<TensorType>> {
    for i in 0..3 {
        cx.require(i, "parameter")?;
    }
    for i in 1..3 {
        check_channels(cx, i, "InstanceNormalization")?;
    }
    Ok(vec![cx.ty(0).clone()])
}

/// LayerNormalization: Y, Mean and InvStdDev (reduced dims kept as 1).
pub(crate) fn layer_norm(axis: i64, stash_type: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    cx.require(1, "Scale")?;
    let stats_shape = match cx.shape(0) {
        None => None,
        Some(x) => {
            let a = norm_axis(axis, x.rank())?;
            let mut v = x.0.clone();
            for d in &mut v[a..] {
                *d = Dim::Fixed(1);
            }
            Some(Shape(v))
        }
    };
    let stash = crate::onnx_dtype(stash_type as i32);
    Ok(vec![
        cx.ty(0).clone(),
        tt(stash, stats_shape.clone()),
        tt(stash, stats_shape),
    ])
}

/// Ops whose output has the input's type: normalizations that keep the shape.
pub(crate) fn same_as_input(cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    Ok(vec![cx.ty(0).clone()])
}

/// Softmax-like ops with an axis.
pub(crate) fn with_axis(axis: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    if let Some(s) = cx.shape(0) {
        norm_axis(axis, s.rank())?;
    }
    Ok(vec![cx.ty(0).clone()])
}

/// An input that may be given as an empty tensor meaning "absent".
fn given(cx: &Ctx, i: usize) -> bool {
    cx.present(i) && cx.len_1d(i) != Some(0)
}

/// Resize with sizes or scales (and optional axes and keep_aspect_ratio_policy).
pub(crate) fn resize(a: &ResizeAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "X")?;
    let d = cx.dtype(0);
    let has_sizes = given(cx, 3);
    let has_scales = given(cx, 2);
    if has_sizes && has_scales {
        return Err("Resize takes scales or sizes, not both".into());
    }
    let absent = |i: usize| !cx.present(i) || cx.len_1d(i) == Some(0);
    if absent(2) && absent(3) {
        return Err("Resize needs scales or sizes".into());
    }
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let r = x.rank();
    let axes: Vec<usize> = match &a.axes {
        Some(ax) => norm_axes(ax, r)?,
        None => (0..r).collect(),
    };
    let mut out = x.0.clone();
    if has_sizes {
        let Some(sizes) = cx.vals(3) else {
            for &ax in &axes {
                out[ax] = Dim::Unknown;
            }
            return Ok(vec![tt(d, Some(Shape(out)))]);
        };
        if sizes.len() != axes.len() {
            return Err(format!(
                "Resize sizes has {} entries for {} axes",
                sizes.len(),
                axes.len()
            ));
        }
        let policy = a.keep_aspect_ratio_policy.as_str();
        if policy == "stretch" {
            for (&ax, s) in axes.iter().zip(sizes) {
                if let Some(v) = s.int() {
                    if v < 0 {
                        return Err(format!("Resize size {v} is negative"));
                    }
                }
                out[ax] = s.to_dim();
            }
        } else if matches!(policy, "not_larger" | "not_smaller") {
            let ins: Option<Vec<u64>> = axes.iter().map(|&ax| x.0[ax].fixed()).collect();
            let szs: Option<Vec<i64>> = sizes.iter().map(|s| s.int()).collect();
            match (ins, szs) {
                (Some(ins), Some(szs)) => {
                    let ratios = ins.iter().zip(&szs).map(|(&i, &s)| s as f64 / i as f64);
                    let scale = if policy == "not_larger" {
                        ratios.fold(f64::INFINITY, f64::min)
                    } else {
                        ratios.fold(0.0, f64::max)
                    };
                    for (&ax, &i) in axes.iter().zip(&ins) {
                        out[ax] = Dim::Fixed((scale * i as f64 + 0.5).floor().max(0.0) as u64);
                    }
                }
                _ => {
                    for &ax in &axes {
                        out[ax] = Dim::Unknown;
                    }
                }
            }
        } else {
            return Err(format!("invalid keep_aspect_ratio_policy '{policy}'"));
        }
    } else if has_scales {
        check_dtype(cx.dtype(2), DType::is_float, "Resize scales")?;
        let Some(scales) = cx.floats(2) else {
            for &ax in &axes {
                out[ax] = Dim::Unknown;
            }
            return Ok(vec![tt(d, Some(Shape(out)))]);
        };
        if scales.len() != axes.len() {
            return Err(format!(
                "Resize scales has {} entries for {} axes",
                scales.len(),
                axes.len()
            ));
        }
        let crop = a.coordinate_transformation_mode == "tf_crop_and_resize";
        let roi = if crop { cx.floats(1) } else { None };
        for (j, (&ax, &s)) in axes.iter().zip(&scales).enumerate() {
            if s <= 0.0 {
                return Err(format!("Resize scale {s} must be positive"));
            }
            let extent = match &roi {
                Some(roi) if roi.len() == 2 * axes.len() => roi[j + axes.len()] - roi[j],
                _ if crop => {
                    out[ax] = Dim::Unknown;
                    continue;
                }
                _ => 1.0,
            };
            out[ax] = match &x.0[ax] {
                Dim::Fixed(v) => {
                    let o = ((*v as f32) * (extent as f32) * (s as f32)).floor();
                    Dim::Fixed(o.max(0.0) as u64)
                }
                other if s == 1.0 && !crop => other.clone(),
                _ => Dim::Unknown,
            };
        }
    } else {
        for &ax in &axes {
            out[ax] = Dim::Unknown;
        }
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// Pad (pads, optional constant_value and axes are inputs).
pub(crate) fn pad(mode: &str, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "data")?;
    cx.require(1, "pads")?;
    if !matches!(mode, "constant" | "reflect" | "edge" | "wrap") {
        return Err(format!("invalid Pad mode '{mode}'"));
    }
    if cx.present(2) {
        same_dtype(cx, [0, 2], "Pad constant_value")?;
    }
    let d = cx.dtype(0);
    let Some(x) = cx.shape(0) else {
        return Ok(vec![tt(d, None)]);
    };
    let r = x.rank();
    let axes: Option<Vec<usize>> = if cx.present(3) {
        match cx.ints(3) {
            Some(ax) => Some(norm_axes(&ax, r)?),
            None => None,
        }
    } else {
        Some((0..r).collect())
    };
    let Some(axes) = axes else {
        return Ok(vec![tt(d, Some(unknown_dims(r)))]);
    };
    let mut out = x.0.clone();
    let Some(pads) = cx.vals(1) else {
        for &a in &axes {
            out[a] = Dim::Unknown;
        }
        return Ok(vec![tt(d, Some(Shape(out)))]);
    };
    let n = axes.len();
    if pads.len() != 2 * n {
        return Err(format!(
            "Pad pads has {} entries, expected {} for {n} axes",
            pads.len(),
            2 * n
        ));
    }
    for (j, &a) in axes.iter().enumerate() {
        out[a] = match (pads[j].int(), pads[j + n].int()) {
            (Some(b), Some(e)) => dim_add(&x.0[a], b.saturating_add(e)).ok_or_else(|| {
                format!(
                    "Pad of {} by {b}+{e} on axis {a} gives a negative extent",
                    x.0[a]
                )
            })?,
            _ => Dim::Unknown,
        };
    }
    Ok(vec![tt(d, Some(Shape(out)))])
}

/// DepthToSpace: [N, C, H, W] -> [N, C/b², H·b, W·b].
pub(crate) fn depth_to_space(b: i64, mode: &str, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    if b < 1 {
        return Err(format!("blocksize {b} must be >= 1"));
    }
    if !matches!(mode, "DCR" | "CRD") {
        return Err(format!("invalid DepthToSpace mode '{mode}'"));
    }
    let b = b as u64;
    let bb = b
        .checked_mul(b)
        .ok_or_else(|| format!("blocksize {b} is too large"))?;
    let shape = match cx.shape(0) {
        None => None,
        Some(x) if x.rank() != 4 => return Err(format!("DepthToSpace input {x} must be 4-D")),
        Some(x) => Some(Shape(vec![
            x.0[0].clone(),
            dim_div_exact(&x.0[1], bb, "DepthToSpace channels")?,
            dim_mul(&x.0[2], &Dim::Fixed(b)),
            dim_mul(&x.0[3], &Dim::Fixed(b)),
        ])),
    };
    Ok(vec![tt(cx.dtype(0), shape)])
}

/// SpaceToDepth: [N, C, H, W] -> [N, C·b², H/b, W/b].
pub(crate) fn space_to_depth(b: i64, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "input")?;
    if b < 1 {
        return Err(format!("blocksize {b} must be >= 1"));
    }
    let b = b as u64;
    let bb = b
        .checked_mul(b)
        .ok_or_else(|| format!("blocksize {b} is too large"))?;
    let shape = match cx.shape(0) {
        None => None,
        Some(x) if x.rank() != 4 => return Err(format!("SpaceToDepth input {x} must be 4-D")),
        Some(x) => Some(Shape(vec![
            x.0[0].clone(),
            dim_mul(&x.0[1], &Dim::Fixed(bb)),
            dim_div_exact(&x.0[2], b, "SpaceToDepth height")?,
            dim_div_exact(&x.0[3], b, "SpaceToDepth width")?,
        ])),
    };
    Ok(vec![tt(cx.dtype(0), shape)])
}
