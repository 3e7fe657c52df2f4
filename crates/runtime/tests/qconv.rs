//! `pare_k_qconv` against a straightforward reference: the input quantized as ONNX
//! `QuantizeLinear` does (`round_ties_even`, saturated), a direct 2-D convolution over the
//! centered codes in i64 with zero padding, then the f32 scaling, bias, residual and activation.

use pare_runtime::ops::conv::ConvParams;
use pare_runtime::ops::qconv::{pare_k_qconv, qconv, qconv_prepare_weights, QConvParams};
use pare_runtime::Activation;

mod common;
use common::fill_range as fill;

fn codes(n: usize, seed: u32, max: i32) -> Vec<i8> {
    fill(n, seed, -1.0, 1.0)
        .iter()
        .map(|v| (v * max as f32).round() as i8)
        .collect()
}

/// The exact centered integer sums `Σ (q(x) − zx)·w` of every output, NCHW.
fn reference_acc(p: &QConvParams, x: &[f32], w: &[i8]) -> Vec<i64> {
    let c = &p.conv;
    let (s, z) = (p.x_scale, p.x_zero as f32);
    let q: Vec<i64> = x
        .iter()
        .map(|&v| ((v / s).round_ties_even() + z).clamp(0.0, 255.0) as i64 - p.x_zero as i64)
        .collect();
    let (oh, ow) = (c.out_h(), c.out_w());
    let mut y = vec![0i64; c.n * c.c_out * oh * ow];
    for n in 0..c.n {
        for co in 0..c.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i64;
                    for ci in 0..c.c_in {
                        for ky in 0..c.kh {
                            let iy =
                                (oy * c.stride_h + ky * c.dilation_h) as isize - c.pad_top as isize;
                            if iy < 0 || iy >= c.h as isize {
                                continue;
                            }
                            let xrow = &q[((n * c.c_in + ci) * c.h + iy as usize) * c.w..][..c.w];
                            let wrow = &w[((co * c.c_in + ci) * c.kh + ky) * c.kw..][..c.kw];
                            for (kx, &wv) in wrow.iter().enumerate() {
                                let ix = (ox * c.stride_w + kx * c.dilation_w) as isize
                                    - c.pad_left as isize;
                                if ix >= 0 && ix < c.w as isize {
                                    acc += xrow[ix as usize] * wv as i64;
                                }
                            }
                        }
                    }
                    y[((n * c.c_out + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// The f32 epilogue over [`reference_acc`]'s sums.
fn reference(
    p: &QConvParams,
    acc: &[i64],
    ws: &[f32],
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
) -> Vec<f32> {
    let c = &p.conv;
    let plane = c.out_h() * c.out_w();
    acc.iter()
        .enumerate()
        .map(|(at, &a)| {
            let co = at / plane % c.c_out;
            let mut v = a as f32 * (p.x_scale * ws[co]);
            if let Some(b) = bias {
                v += b[co];
            }
            if let Some(r) = res {
                v += r[at];
            }
            c.activation.apply(v)
        })
        .collect()
}

fn close(want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            (w - g).abs() <= 1e-5 * scale,
            "{what}: element {i}: want {w}, got {g} (scale {scale})"
        );
    }
}

/// `(n, c_in, h, w, c_out, kh, kw, stride, dilation, pads [t, l, b, r])`.
type Shape = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 4],
);

fn params(s: Shape) -> ConvParams {
    let (n, ci, h, w, co, kh, kw, st, d, pads) = s;
    let mut c = ConvParams::new(n, ci, h, w, co, kh, kw);
    (c.stride_h, c.stride_w) = (st, st);
    (c.dilation_h, c.dilation_w) = (d, d);
    (c.pad_top, c.pad_left, c.pad_bottom, c.pad_right) = (pads[0], pads[1], pads[2], pads[3]);
    c
}

#[test]
fn qconv_matches_the_reference_on_every_shape_and_epilogue() {
    let shapes: [Shape; 8] = [
        // 1x1 stride 1, no padding (codes used as A directly).
        (1, 16, 5, 7, 24, 1, 1, 1, 1, [0; 4]),
        // 1x1 with stride 2.
        (2, 7, 6, 9, 5, 1, 1, 2, 1, [0; 4]),
        // 3x3, pad 1, stride 2.
        (1, 8, 9, 11, 12, 3, 3, 2, 1, [1; 4]),
        // 3x3, dilation 2, asymmetric pads.
        (1, 5, 10, 8, 7, 3, 3, 1, 2, [2, 1, 0, 2]),
        // Odd channel counts, 3x3 pad 1 stride 1, two images.
        (2, 3, 7, 7, 17, 3, 3, 1, 1, [1; 4]),
        // Single input channel, 5x5 kernel.
        (1, 1, 12, 10, 9, 5, 5, 1, 1, [2; 4]),
        // Non-square kernel and more output channels than one qgemm panel.
        (1, 13, 6, 20, 40, 1, 3, 1, 1, [0, 1, 0, 1]),
        // Larger: several row chunks (k = 576, 48 output rows per 1 MiB... at least two).
        (1, 64, 40, 48, 64, 3, 3, 1, 1, [1; 4]),
    ];
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::Clamp {
            min: -0.5,
            max: 6.0,
        },
        Activation::HardSwish,
    ];
    for (si, &s) in shapes.iter().enumerate() {
        let conv = params(s);
        let (ci, co, kh, kw) = (conv.c_in, conv.c_out, conv.kh, conv.kw);
        for (variant, (per_channel, zero, wmax)) in [
            (true, 128u8, 127),
            (false, 3, 127),
            (true, 200, 64),
            (true, 0, 100),
        ]
        .into_iter()
        .enumerate()
        {
            let w = codes(co * ci * kh * kw, 7 + si as u32, wmax);
            let ws: Vec<f32> = if per_channel {
                fill(co, 11, 0.001, 0.01)
            } else {
                vec![0.004; co]
            };
            let (blob, format, seven) =
                qconv_prepare_weights(co, ci, kh, kw, &w, &ws).expect("pack");
            let x = fill(conv.x_len(), 3 + si as u32, -1.3, 1.9);
            let scale = 2.0 / 255.0;
            let acc = reference_acc(&QConvParams::new(conv, format, scale, zero), &x, &w);
            for (ei, act) in acts.iter().enumerate() {
                for (has_bias, has_res) in [(false, false), (true, false), (true, true)] {
                    if ei > 0 && variant > 1 && has_res {
                        continue;
                    }
                    let mut c = conv;
                    c.has_bias = has_bias;
                    c.has_residual = has_res;
                    c.activation = *act;
                    let mut p = QConvParams::new(c, format, scale, zero);
                    p.seven_bit = seven;
                    p.validate().expect("valid");
                    let bias = has_bias.then(|| fill(co, 5, -0.3, 0.3));
                    let res = has_res.then(|| fill(p.y_len(), 6, -0.5, 0.5));
                    let want = reference(&p, &acc, &ws, bias.as_deref(), res.as_deref());
                    let what = format!(
                        "shape {s:?} variant {variant} act {act:?} bias {has_bias} res {has_res}"
                    );
                    for threads in [1, 3] {
                        let mut y = vec![f32::NAN; p.y_len()];
                        let mut scratch = vec![0u8; p.scratch_bytes()];
                        qconv(
                            &p,
                            &x,
                            &blob,
                            bias.as_deref(),
                            res.as_deref(),
                            &mut y,
                            &mut scratch,
                            threads,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                        close(&want, &y, &what);
                    }
                    // The C entry point, with the residual in place (y holds it).
                    let words = p.encode();
                    assert_eq!(QConvParams::decode(&words), Some(p));
                    let mut y = res.clone().unwrap_or_else(|| vec![0.0; p.y_len()]);
                    let mut scratch = vec![0u64; p.scratch_bytes().div_ceil(8)];
                    let bias_ptr = bias
                        .as_ref()
                        .map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut u8);
                    let yp = y.as_mut_ptr() as *mut u8;
                    let bufs = [
                        x.as_ptr() as *mut u8,
                        blob.as_ptr() as *mut u8,
                        bias_ptr,
                        if has_res { yp } else { std::ptr::null_mut() },
                        yp,
                        scratch.as_mut_ptr() as *mut u8,
                    ];
                    // SAFETY: the words come from `encode`; every buffer has the length the
                    // params give it and the residual is `y` itself.
                    let st = unsafe { pare_k_qconv(words.as_ptr(), bufs.as_ptr(), 2) };
                    assert_eq!(st, 0, "{what}: status");
                    close(&want, &y, &format!("{what} (C ABI, in place)"));
                }
            }
        }
    }
}

#[test]
fn int8_activations_shifted_to_uint8_give_the_same_result() {
    // An int8 QuantizeLinear with zero point z equals the uint8 one with z + 128: the kernel
    // only sees the latter. Check against a reference written in the int8 domain.
    let conv = params((1, 6, 8, 8, 10, 3, 3, 1, 1, [1; 4]));
    let (ci, co) = (conv.c_in, conv.c_out);
    let w = codes(co * ci * 9, 21, 127);
    let ws = fill(co, 22, 0.002, 0.02);
    let x = fill(conv.x_len(), 23, -1.0, 1.0);
    let (s, z8) = (1.5 / 127.0, -5i32);
    let (blob, format, seven) = qconv_prepare_weights(co, ci, 3, 3, &w, &ws).expect("pack");
    let mut p = QConvParams::new(conv, format, s, (z8 + 128) as u8);
    p.seven_bit = seven;
    let mut y = vec![0f32; p.y_len()];
    let mut scratch = vec![0u8; p.scratch_bytes()];
    qconv(&p, &x, &blob, None, None, &mut y, &mut scratch, 1).expect("qconv");
    // int8 domain reference.
    let q: Vec<i64> = x
        .iter()
        .map(|&v| ((v / s).round_ties_even() + z8 as f32).clamp(-128.0, 127.0) as i64 - z8 as i64)
        .collect();
    let mut want = vec![0f32; p.y_len()];
    for o in 0..co {
        for oy in 0..8isize {
            for ox in 0..8isize {
                let mut acc = 0i64;
                for c in 0..ci {
                    for ky in 0..3isize {
                        for kx in 0..3isize {
                            let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                            if (0..8).contains(&iy) && (0..8).contains(&ix) {
                                acc += q[(c * 8 + iy as usize) * 8 + ix as usize]
                                    * w[((o * ci + c) * 3 + ky as usize) * 3 + kx as usize] as i64;
                            }
                        }
                    }
                }
                want[(o * 8 + oy as usize) * 8 + ox as usize] = acc as f32 * (s * ws[o]);
            }
        }
    }
    close(&want, &y, "int8 activations");
}

#[test]
fn qconv_rejects_bad_operands_without_panicking() {
    let conv = params((1, 4, 5, 5, 6, 3, 3, 1, 1, [1; 4]));
    let w = codes(6 * 4 * 9, 1, 100);
    assert!(qconv_prepare_weights(6, 4, 3, 3, &w[..10], &[1.0; 6]).is_err());
    assert!(qconv_prepare_weights(6, 4, 3, 3, &w, &[1.0; 5]).is_err());
    let (blob, format, _) = qconv_prepare_weights(6, 4, 3, 3, &w, &[0.01; 6]).expect("pack");
    let p = QConvParams::new(conv, format, 0.01, 128);
    let x = vec![0.5f32; p.x_len()];
    let mut y = vec![0f32; p.y_len()];
    let mut scratch = vec![0u8; p.scratch_bytes()];
    let run = |p: &QConvParams,
               x: &[f32],
               b: &[u32],
               bias: Option<&[f32]>,
               y: &mut [f32],
               s: &mut [u8]| qconv(p, x, b, bias, None, y, s, 1);
    assert!(run(&p, &x, &blob, None, &mut y, &mut scratch).is_ok());
    assert!(run(&p, &x[..10], &blob, None, &mut y, &mut scratch).is_err());
    assert!(run(&p, &x, &blob[..5], None, &mut y, &mut scratch).is_err());
    assert!(run(&p, &x, &blob, Some(&[0.0; 6]), &mut y, &mut scratch).is_err());
    assert!(run(&p, &x, &blob, None, &mut y[..3], &mut scratch).is_err());
    let short = p.scratch_bytes() - 1;
    assert!(run(&p, &x, &blob, None, &mut y, &mut scratch[..short]).is_err());
    let mut bad = p;
    bad.conv.group = 2;
    assert!(bad.validate().is_err());
    assert!(run(&bad, &x, &blob, None, &mut y, &mut scratch).is_err());
    let mut bad = p;
    bad.x_scale = 0.0;
    assert!(run(&bad, &x, &blob, None, &mut y, &mut scratch).is_err());
    bad.x_scale = f32::NAN;
    assert!(bad.validate().is_err());
    // Foreign or damaged words do not decode.
    let mut words = p.encode();
    assert!(QConvParams::decode(&words[..words.len() - 1]).is_none());
    words[1] = -1;
    assert!(QConvParams::decode(&words).is_none());
    let mut words = p.encode();
    *words.last_mut().expect("words") = 256;
    assert!(QConvParams::decode(&words).is_none());
    // Null buffers through the C entry point give a status, not a crash.
    let words = p.encode();
    let nulls = [std::ptr::null_mut::<u8>(); 6];
    // SAFETY: the words come from `encode`; null buffers are rejected before any read.
    let st = unsafe { pare_k_qconv(words.as_ptr(), nulls.as_ptr(), 1) };
    assert_ne!(st, 0);
}
