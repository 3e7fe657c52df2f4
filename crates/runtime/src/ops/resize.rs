//! ONNX Resize ([`pare_k_resize`]) of the last two axes of an f32 tensor (`[N, C, H, W]`, or
//! any `outer x H x W`; a 1-D resize of the last axis is `H = 1` with scale 1): nearest (all
//! four `nearest_mode`s) and linear (bilinear), with the coordinate transformations
//! `half_pixel`, `asymmetric`, `align_corners`, `pytorch_half_pixel` and
//! `half_pixel_symmetric`.
//!
//! Source positions and weights are computed once per axis in f64, exactly as the ONNX reference
//! does (an axis with scale 1 and unchanged extent is the identity). Each output row is then a
//! vertical blend of at most two input rows followed by a horizontal gather/blend.

use super::copy::{
    buf, even_bounds, guard, par_each, param_words, prod, slice_in, slice_out, split_at_bounds,
    tasks_for, word_usize,
};
use super::norm::PAR_MIN_ELEMS;
use super::{f64_word, word_f64, STATUS_PARAMS};

/// Interpolation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// `nearest`
    Nearest = 0,
    /// `linear` (bilinear on two axes)
    Linear = 1,
}

/// `nearest_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    /// `round_prefer_floor` (the ONNX default)
    RoundPreferFloor = 0,
    /// `round_prefer_ceil`
    RoundPreferCeil = 1,
    /// `floor`
    Floor = 2,
    /// `ceil`
    Ceil = 3,
}

/// `coordinate_transformation_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordMode {
    /// `half_pixel` (the ONNX default): `(y + 0.5) / scale - 0.5`
    HalfPixel = 0,
    /// `asymmetric`: `y / scale`
    Asymmetric = 1,
    /// `align_corners`: `y · (in - 1) / (scale·in - 1)`
    AlignCorners = 2,
    /// `pytorch_half_pixel`: as `half_pixel`, but -0.5 when the output extent is 1
    PytorchHalfPixel = 3,
    /// `half_pixel_symmetric`
    HalfPixelSymmetric = 4,
}

/// Resize of the last two axes of an `outer x in_h x in_w` f32 tensor to
/// `outer x out_h x out_w`.
///
/// Words: `[outer, in_h, in_w, out_h, out_w, scale_h (f64 bits), scale_w (f64 bits), mode,
/// nearest_mode, coord_mode]` (enum codes of [`ResizeMode`], [`NearestMode`], [`CoordMode`]).
/// The scales are ONNX's (`out = floor(in · scale)` when given as scales; `out / in` when
/// given as sizes).
///
/// Bufs: `[x, y]`, not overlapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeParams {
    /// Product of the leading (not resized) dimensions.
    pub outer: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Scale of the height axis.
    pub scale_h: f64,
    /// Scale of the width axis.
    pub scale_w: f64,
    /// Interpolation.
    pub mode: ResizeMode,
    /// Rounding of `nearest`.
    pub nearest_mode: NearestMode,
    /// Coordinate transformation.
    pub coord_mode: CoordMode,
}

impl ResizeParams {
    /// Number of parameter words.
    pub const WORDS: usize = 10;

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.outer as i64,
            self.in_h as i64,
            self.in_w as i64,
            self.out_h as i64,
            self.out_w as i64,
            f64_word(self.scale_h),
            f64_word(self.scale_w),
            self.mode as i64,
            self.nearest_mode as i64,
            self.coord_mode as i64,
        ]
    }

    /// Parses words produced by [`ResizeParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<ResizeParams> {
        if w.len() != Self::WORDS {
            return None;
        }
        let mode = match w[7] {
            0 => ResizeMode::Nearest,
            1 => ResizeMode::Linear,
            _ => return None,
        };
        let nearest_mode = match w[8] {
            0 => NearestMode::RoundPreferFloor,
            1 => NearestMode::RoundPreferCeil,
            2 => NearestMode::Floor,
            3 => NearestMode::Ceil,
            _ => return None,
        };
        let coord_mode = match w[9] {
            0 => CoordMode::HalfPixel,
            1 => CoordMode::Asymmetric,
            2 => CoordMode::AlignCorners,
            3 => CoordMode::PytorchHalfPixel,
            4 => CoordMode::HalfPixelSymmetric,
            _ => return None,
        };
        let (scale_h, scale_w) = (word_f64(w[5]), word_f64(w[6]));
        if !(scale_h > 0.0 && scale_w > 0.0 && scale_h.is_finite() && scale_w.is_finite()) {
            return None;
        }
        Some(ResizeParams {
            outer: word_usize(w[0])?,
            in_h: word_usize(w[1])?,
            in_w: word_usize(w[2])?,
            out_h: word_usize(w[3])?,
            out_w: word_usize(w[4])?,
            scale_h,
            scale_w,
            mode,
            nearest_mode,
            coord_mode,
        })
    }

    /// Elements of `x` and of `y`.
    pub fn lens(&self) -> Option<(usize, usize)> {
        Some((
            prod(&[self.outer, self.in_h, self.in_w]).ok()?,
            prod(&[self.outer, self.out_h, self.out_w]).ok()?,
        ))
    }
}

/// One output position: two (clamped) source indices and their weights.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// Taps of one axis, following the ONNX reference implementation step by step.
fn axis_taps(p: &ResizeParams, in_n: usize, out_n: usize, scale: f64) -> Vec<Tap> {
    if (scale - 1.0).abs() < 1e-9 && in_n == out_n {
        return (0..out_n)
            .map(|i| Tap {
                i0: i,
                i1: i,
                w0: 1.0,
                w1: 0.0,
            })
            .collect();
    }
    let output_width = scale * in_n as f64;
    let iw = in_n as f64;
    let hi = in_n.saturating_sub(1) as i64;
    (0..out_n)
        .map(|y| {
            let yf = y as f64;
            let x = match p.coord_mode {
                CoordMode::AlignCorners => {
                    if output_width == 1.0 {
                        0.0
                    } else {
                        yf * (iw - 1.0) / (output_width - 1.0)
                    }
                }
                CoordMode::Asymmetric => yf / scale,
                CoordMode::PytorchHalfPixel => {
                    if output_width == 1.0 {
                        -0.5
                    } else {
                        (yf + 0.5) / scale - 0.5
                    }
                }
                CoordMode::HalfPixel => (yf + 0.5) / scale - 0.5,
                CoordMode::HalfPixelSymmetric => {
                    let adjustment = out_n as f64 / output_width;
                    let center = iw / 2.0;
                    center * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
                }
            };
            let xi = x.floor();
            let ratio = if x == xi { 1.0 } else { x - xi };
            let (c0, c1) = match p.mode {
                ResizeMode::Linear => (1.0 - ratio, ratio),
                ResizeMode::Nearest => {
                    let pick_hi = if ratio.fract() == 0.0 {
                        true
                    } else {
                        match p.nearest_mode {
                            NearestMode::RoundPreferFloor => ratio > 0.5,
                            NearestMode::RoundPreferCeil => ratio >= 0.5,
                            NearestMode::Floor => false,
                            NearestMode::Ceil => true,
                        }
                    };
                    if pick_hi {
                        (0.0, 1.0)
                    } else {
                        (1.0, 0.0)
                    }
                }
            };
            // Two taps: pad 1, start = floor(x + 1) + off - 1.
            let xp = x + 1.0;
            let pf = xp.floor();
            let off = if xp - pf == 0.0 { -1 } else { 0 };
            let start = pf as i64 + off - 1;
            let i0 = start.clamp(0, hi) as usize;
            let i1 = (start + 1).clamp(0, hi) as usize;
            // A zero weight drops its tap (as the reference filters them).
            if c0 == 0.0 {
                Tap {
                    i0: i1,
                    i1,
                    w0: c1 as f32,
                    w1: 0.0,
                }
            } else if c1 == 0.0 {
                Tap {
                    i0,
                    i1: i0,
                    w0: c0 as f32,
                    w1: 0.0,
                }
            } else {
                Tap {
                    i0,
                    i1,
                    w0: c0 as f32,
                    w1: c1 as f32,
                }
            }
        })
        .collect()
}

/// Resize (see [`ResizeParams`]); nothing is written on error.
pub fn resize(p: &ResizeParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<(), i32> {
    let (nx, ny) = p.lens().ok_or(STATUS_PARAMS)?;
    if x.len() < nx || y.len() < ny {
        return Err(STATUS_PARAMS);
    }
    if ny == 0 {
        return Ok(());
    }
    if p.in_h == 0 || p.in_w == 0 {
        return Err(STATUS_PARAMS);
    }
    let th = axis_taps(p, p.in_h, p.out_h, p.scale_h);
    let tw = axis_taps(p, p.in_w, p.out_w, p.scale_w);
    let (ih, iw, oh, ow) = (p.in_h, p.in_w, p.out_h, p.out_w);
    let rows = p.outer * oh;
    let nearest = p.mode == ResizeMode::Nearest;
    let tasks = tasks_for(ny, threads, PAR_MIN_ELEMS).min(rows);
    let bounds = even_bounds(rows, tasks);
    let eb: Vec<usize> = bounds.iter().map(|&b| b * ow).collect();
    let parts = split_at_bounds(&mut y[..ny], &eb);
    par_each(parts, &|t, ys: &mut [f32]| {
        let mut tmp = vec![0.0f32; iw];
        for (k, out) in ys.chunks_exact_mut(ow).enumerate() {
            let row = bounds[t] + k;
            let (o, oy) = (row / oh, row % oh);
            let plane = &x[o * ih * iw..(o + 1) * ih * iw];
            let v = th[oy];
            let r0 = &plane[v.i0 * iw..(v.i0 + 1) * iw];
            let src: &[f32] = if v.w1 == 0.0 && v.w0 == 1.0 {
                r0
            } else {
                let r1 = &plane[v.i1 * iw..(v.i1 + 1) * iw];
                for ((d, &a), &b) in tmp.iter_mut().zip(r0).zip(r1) {
                    *d = v.w0 * a + v.w1 * b;
                }
                &tmp
            };
            if nearest {
                for (d, h) in out.iter_mut().zip(&tw) {
                    *d = src[h.i0];
                }
            } else {
                for (d, h) in out.iter_mut().zip(&tw) {
                    *d = h.w0 * src[h.i0] + h.w1 * src[h.i1];
                }
            }
        }
    });
    Ok(())
}

/// C entry point of [`resize`]; see [`ResizeParams`].
///
/// # Safety
/// `params` holds a [`ResizeParams`] encoding; `bufs` holds the two pointers it documents.
#[no_mangle]
pub unsafe extern "C" fn pare_k_resize(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = ResizeParams::decode(unsafe { param_words(params, ResizeParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let (nx, ny) = p.lens().ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller passes the documented buffers with these lengths, not overlapping.
        let (x, y) = unsafe {
            (
                slice_in::<f32>(buf(bufs, 0)?, nx)?,
                slice_out::<f32>(buf(bufs, 1)?, ny)?,
            )
        };
        resize(&p, x, y, threads)
    })
}
