//! Activation quantization on small graphs with calibration samples (the file tests in
//! `tests/filetests/quantize/` run without samples, so the static form is tested here): the
//! printed IR, and the interpreter's outputs against the int8 arithmetic computed by hand
//! from the ONNX definitions of QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear /
//! MatMulInteger.

use pare_ir::{Graph, PrintOptions, Tensor};
use pare_pass::{PassContext, SampleSet};

fn registry() -> pare_pass::Registry {
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_quantize::register(&mut reg);
    reg
}

/// Runs `pipeline` on the IR `text` with calibration samples (one tensor per graph input per
/// sample) and returns the original graph, the result and its printed form.
fn run(text: &str, pipeline: &str, calib: &[Vec<Tensor>]) -> (Graph, Graph, String) {
    let g0 = pare_ir::parse_graph(text).expect("parse");
    let mut g = g0.clone();
    let mut cx = PassContext::new().with_threads(1);
    if !calib.is_empty() {
        cx = cx.with_samples(SampleSet::from_inputs(&g, calib.to_vec(), "sample"));
    }
    pare_pass::run_pipeline(&registry(), pipeline, &mut g, &mut cx)
        .unwrap_or_else(|e| panic!("{pipeline}: {e}"));
    let text = pare_ir::print_graph(
        &g,
        &PrintOptions {
            elide_constants_above: Some(64),
        },
    );
    (g0, g, text)
}

fn interp(g: &Graph, x: &[Tensor]) -> Vec<Vec<f32>> {
    pare_interp::Interpreter::with_threads(1)
        .run(g, x)
        .expect("interpreter")
        .iter()
        .map(|t| t.to_vec::<f32>().expect("f32 output"))
        .collect()
}

fn has(text: &str, want: &str) {
    assert!(text.contains(want), "missing '{want}' in:\n{text}");
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

/// `y = x · W` for `x` `[m, k]` and `W` `[k, n]`, in f64.
fn matmul(x: &[f64], w: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|p| x[i * k + p] * w[p * n + j]).sum();
        }
    }
    y
}

/// QuantizeLinear then DequantizeLinear (uint8 or int8), as ONNX defines them in f32.
fn fake_quant(x: f32, scale: f32, zero: i32, lo: i32, hi: i32) -> f32 {
    let q = ((x / scale).round_ties_even() + zero as f32).clamp(lo as f32, hi as f32);
    (q - zero as f32) * scale
}

/// Per-column int8 codes and scales of `W` (absmax/127), `[K=4, N=3]`.
const WQ: [i32; 12] = [127, 25, -127, -50, -127, 50, 0, 50, 0, 2, 2, 100];
const WS: [f32; 3] = [0.01, 0.02, 0.001];

fn w_dequantized() -> Vec<f64> {
    (0..12).map(|i| (WQ[i] as f32 * WS[i % 3]) as f64).collect()
}

const MATMUL: &str = "graph @main(%x: f32[2,4]) -> (%y) {
  %w = const f32[4,3] [1.27, 0.5, -0.127, -0.5, -2.54, 0.05, 0.004, 1.0, 0.0, 0.016, 0.03, 0.1]
  %y = MatMul(%x, %w)
}";

#[test]
fn static_minmax_uint8_matches_hand_arithmetic() {
    // Calibration spans exactly [-1, 3]: scale 4/255, zero point round(255/4) = 64.
    let calib = vec![
        vec![Tensor::from_vec(
            vec![2, 4],
            vec![-1.0f32, 0.5, 2.0, 3.0, 0.0, 1.0, -0.5, 0.25],
        )],
        vec![Tensor::from_vec(vec![2, 4], vec![0.1f32; 8])],
    ];
    let (_, g, text) = run(
        MATMUL,
        "quantize(bits=8,min-elements=0,calibrate=minmax)",
        &calib,
    );
    has(&text, "%x_scale = const f32[] [0.015686275]");
    has(&text, "%x_zero_point = const u8[] [64]");
    has(
        &text,
        "%x_quantized = QuantizeLinear(%x, %x_scale, %x_zero_point) : u8[2,4]",
    );
    has(
        &text,
        "%x_dequantized = DequantizeLinear(%x_quantized, %x_scale, %x_zero_point) : f32[2,4]",
    );
    has(&text, "%w_scale = const f32[3] [0.01, 0.02, 0.001]");
    has(
        &text,
        "%y = MatMul(%x_dequantized, %w_dequantized) : f32[2,3]",
    );
    // Held-out input, with values outside the calibrated range (clamped).
    let x: Vec<f32> = vec![-2.0, 0.3, 1.7, 4.0, 0.01, -0.99, 2.5, 0.77];
    let got = interp(&g, &[Tensor::from_vec(vec![2, 4], x.clone())]);
    let s = (4.0f64 / 255.0) as f32;
    let xq: Vec<f64> = x
        .iter()
        .map(|&v| fake_quant(v, s, 64, 0, 255) as f64)
        .collect();
    let want = matmul(&xq, &w_dequantized(), 2, 4, 3);
    for (a, b) in got[0].iter().zip(&want) {
        assert!((*a as f64 - b).abs() < 1e-5, "{:?} vs {want:?}", got[0]);
    }
    // -2 clamps to the smallest code: (0 - 64)·s.
    assert_eq!(fake_quant(-2.0, s, 64, 0, 255), -64.0 * s);
    // The clean-ups of `canonicalize` after the pass keep the activation Q/DQ (the
    // `canonicalize` group itself lives in pare-passes; fold-constants may fold a weight this
    // small back to f32, which does not change the numbers).
    let (_, g2, text2) = run(
        MATMUL,
        "fold-constants,quantize(bits=8,min-elements=0,calibrate=minmax),fold-constants,cse,dce,simplify-layout",
        &calib,
    );
    has(
        &text2,
        "QuantizeLinear(%x, %x_scale, %x_zero_point) : u8[2,4]",
    );
    assert_eq!(
        interp(&g2, &[Tensor::from_vec(vec![2, 4], x)]),
        got,
        "canonicalize changed the numbers"
    );
}

#[test]
fn static_symmetric_int8_and_shared_qdq() {
    // x is read by two quantized MatMuls (one Q/DQ pair) and by an Add (keeps f32 x).
    let text = "graph @main(%x: f32[2,4]) -> (%s, %y) {
  %w = const f32[4,3] [1.27, 0.5, -0.127, -0.5, -2.54, 0.05, 0.004, 1.0, 0.0, 0.016, 0.03, 0.1]
  %w2 = const f32[4,4] [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
  %w3 = const f32[4,4] [1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16]
  %y = MatMul(%x, %w)
  %y2 = MatMul(%x, %w2)
  %z = MatMul(%y2, %w3)
  %s = Add(%x, %z)
}";
    let calib: Vec<Vec<Tensor>> = (0..3)
        .map(|i| {
            vec![Tensor::from_vec(
                vec![2, 4],
                (0..8)
                    .map(|j| ((i * 8 + j) as f32 * 0.37).sin() * 2.54)
                    .collect(),
            )]
        })
        .collect();
    let (g0, g, out) = run(
        text,
        "quantize(bits=8,min-elements=0,calibrate=minmax,act-symmetric=true)",
        &calib,
    );
    assert_eq!(count(&out, "QuantizeLinear(%x,"), 1, "{out}");
    assert_eq!(count(&out, "= QuantizeLinear("), 2, "{out}");
    has(&out, "%x_zero_point = const i8[] [0]");
    has(
        &out,
        "QuantizeLinear(%x, %x_scale, %x_zero_point) : i8[2,4]",
    );
    has(&out, "%y = MatMul(%x_dequantized, %w_dequantized)");
    has(&out, "%y2 = MatMul(%x_dequantized, %w2_dequantized)");
    has(&out, "MatMul(%y2_dequantized, %w3_dequantized)");
    has(&out, "Add(%x, %z)");
    // Symmetric: scale = absmax / 127 over the calibration data.
    let absmax = calib
        .iter()
        .flat_map(|s| s[0].to_vec::<f32>().unwrap())
        .fold(0f32, |a, v| a.max(v.abs()));
    let scale = (absmax as f64 / 127.0) as f32;
    has(&out, &format!("%x_scale = const f32[] [{scale}]"));
    // Close to the dense model on a calibration sample.
    let (a, b) = (interp(&g0, &calib[0]), interp(&g, &calib[0]));
    for (u, v) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((u - v).abs() <= 0.05 * u.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn static_conv_and_percentile_clips_an_outlier() {
    let text = "graph @main(%x: f32[1,2,4,4]) -> (%y) {
  %w = const f32[3,2,1,1] [1.0, -0.5, 0.25, -1.0, 0.75, 0.5]
  %y = Conv(%x, %w)
}";
    // 400 calibration values in [0, 1) and one outlier at 50.
    let mut calib: Vec<Vec<Tensor>> = (0..12)
        .map(|i| {
            vec![Tensor::from_vec(
                vec![1, 2, 4, 4],
                (0..32)
                    .map(|j| ((i * 32 + j) as f32 * 0.618).fract())
                    .collect(),
            )]
        })
        .collect();
    let mut last = calib[11][0].to_vec::<f32>().unwrap();
    last[5] = 50.0;
    calib[11] = vec![Tensor::from_vec(vec![1, 2, 4, 4], last)];
    let (_, gm, minmax) = run(
        text,
        "quantize(bits=8,min-elements=0,calibrate=minmax)",
        &calib,
    );
    // One-sided: zero point 0, scale 50/255.
    has(&minmax, "%x_zero_point = const u8[] [0]");
    has(
        &minmax,
        &format!("%x_scale = const f32[] [{}]", (50.0f64 / 255.0) as f32),
    );
    has(&minmax, "%y = Conv(%x_dequantized, %w_dequantized)");
    let (_, gp, pct) = run(
        text,
        "quantize(bits=8,min-elements=0,calibrate=percentile,percentile=99)",
        &calib,
    );
    has(&pct, "%x_zero_point = const u8[] [0]");
    // The percentile range ends near 1, not at the outlier.
    let scale: f32 = pct
        .lines()
        .find(|l| l.contains("%x_scale = const f32[]"))
        .and_then(|l| l.rsplit('[').next())
        .and_then(|v| v.trim_end_matches(']').parse().ok())
        .expect("scale");
    assert!(scale < 1.2 / 255.0 && scale > 0.9 / 255.0, "{scale}");
    // On typical inputs the percentile grid is far more accurate than min-max.
    let x = Tensor::from_vec(
        vec![1, 2, 4, 4],
        (0..32).map(|j| (j as f32 * 0.377).fract()).collect(),
    );
    let g0 = pare_ir::parse_graph(text).unwrap();
    let dense = interp(&g0, std::slice::from_ref(&x));
    let err = |g: &Graph| -> f32 {
        interp(g, std::slice::from_ref(&x))[0]
            .iter()
            .zip(&dense[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    };
    assert!(err(&gp) < 0.25 * err(&gm), "{} vs {}", err(&gp), err(&gm));
}

#[test]
fn dynamic_matches_hand_arithmetic() {
    // No calibration samples: DynamicQuantizeLinear + MatMulInteger.
    let (_, g, text) = run(
        MATMUL,
        "fold-constants,quantize(bits=8,min-elements=0),fold-constants,cse,dce",
        &[],
    );
    has(&text, "DynamicQuantizeLinear(%x)");
    has(
        &text,
        "MatMulInteger(%x_quantized, %w_quantized, %x_zero_point)",
    );
    let x: Vec<f32> = vec![-2.0, 0.3, 1.7, 4.0, 0.01, -0.99, 2.5, 0.77];
    let got = interp(&g, &[Tensor::from_vec(vec![2, 4], x.clone())]);
    // DynamicQuantizeLinear: range widened to contain 0, scale (max - min)/255, zero point
    // round(-min/scale); then integer products and one f32 rescale.
    let (mn, mx) = (-2.0f32, 4.0f32);
    let s = (mx - mn) / 255.0;
    let z = (-mn / s).round_ties_even();
    let xq: Vec<i64> = x
        .iter()
        .map(|&v| ((v / s).round_ties_even() + z).clamp(0.0, 255.0) as i64 - z as i64)
        .collect();
    for i in 0..2 {
        for j in 0..3 {
            let acc: i64 = (0..4).map(|p| xq[i * 4 + p] * WQ[p * 3 + j] as i64).sum();
            let want = acc as f32 * (s * WS[j]);
            let g = got[0][i * 3 + j];
            assert!(
                (g - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{g} vs {want}"
            );
        }
    }
}

#[test]
fn explicit_modes_and_weights_only() {
    let calib = vec![vec![Tensor::from_vec(vec![2, 4], vec![0.5f32; 8])]];
    // activations=dynamic wins over available samples.
    let (_, _, t) = run(
        MATMUL,
        "quantize(bits=8,min-elements=0,activations=dynamic)",
        &calib,
    );
    has(&t, "DynamicQuantizeLinear");
    assert!(!t.contains("= QuantizeLinear("), "{t}");
    // weights-only=true: no activation quantization even with samples.
    let (_, _, t) = run(
        MATMUL,
        "quantize(bits=8,min-elements=0,weights-only=true)",
        &calib,
    );
    assert!(!t.contains("QuantizeLinear(%x"), "{t}");
    has(&t, "%y = MatMul(%x, %w_dequantized)");
    // Contradictions and unsupported combinations are refused before anything runs.
    for bad in [
        "quantize(weights-only=true,activations=static)",
        "quantize(bits=8,group=32,weights-only=false)",
        "quantize(bits=8,format=matmulnbits,group=32,weights-only=false)",
        "quantize(calibrate=percentile,percentile=0)",
    ] {
        let mut g = pare_ir::parse_graph(MATMUL).unwrap();
        let r = pare_pass::run_pipeline(&registry(), bad, &mut g, &mut PassContext::new());
        assert!(r.is_err(), "{bad} was accepted");
    }
}

/// The scale constant of activation `x` in printed IR.
fn x_scale(text: &str) -> f32 {
    text.lines()
        .find(|l| l.contains("%x_scale = const f32[]"))
        .and_then(|l| l.rsplit('[').next())
        .and_then(|v| v.trim_end_matches(']').parse().ok())
        .unwrap_or_else(|| panic!("no %x_scale in:\n{text}"))
}

#[test]
fn auto_range_weighs_channels_by_the_weights_that_read_them() {
    // 16 samples [64, 4] in [-1, 1), except one value of 20 in channel 3 (0.025% of all).
    let calib: Vec<Vec<Tensor>> = (0..16)
        .map(|s| {
            let v: Vec<f32> = (0..256)
                .map(|i| {
                    if s == 3 && i == 4 * 17 + 3 {
                        20.0
                    } else {
                        (((s * 256 + i) as f32) * 0.754_877_7).fract() * 2.0 - 1.0
                    }
                })
                .collect();
            vec![Tensor::from_vec(vec![64, 4], v)]
        })
        .collect();
    let graph = |w3: f32| {
        format!(
            "graph @main(%x: f32[64,4]) -> (%y) {{
  %w = const f32[4,2] [0.5, -0.25, 0.75, 0.1, -0.5, 0.3, {w3}, {w3}]
  %y = MatMul(%x, %w)
}}"
        )
    };
    let p = "quantize(bits=8,min-elements=0,calibrate=auto)";
    // The layer ignores channel 3: the outlier is clipped (a percentile or MSE range).
    let (_, _, ignored) = run(&graph(0.0), p, &calib);
    assert!(x_scale(&ignored) < 3.0 / 255.0, "{ignored}");
    // The layer reads channel 3 with the largest weights: min-max keeps the outlier.
    let (_, _, read) = run(&graph(2.0), p, &calib);
    assert!(x_scale(&read) > 20.0 / 255.0, "{read}");
}
