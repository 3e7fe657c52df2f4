//! Compressed models compiled to pare's kernels for them, against the interpreter: quantized
//! MatMuls on the int8 kernel (`pare_k_qmatmul`), quantized (QDQ, group-1) convolutions on the
//! int8 conv kernel (`pare_k_qconv`) and sparse weights on the sparse kernel (`pare_k_spmm`).
//!
//! * On small graphs whose quantized MatMul or convolution reads a graph input directly, the
//!   kernel sees the interpreter's activation codes, so the only difference left is f32
//!   rounding of the final scaling: agreement within 1e-5 of the output scale, for the dynamic
//!   pattern, the static QDQ pattern (uint8 and int8 activations, Gemm with transB, alpha and a
//!   bias), QDQ convolutions (strides, pads, dilations, per-channel and per-tensor weight
//!   scales, bias, Relu and residual folded into the kernel) and a QDQ pair in front of an f32
//!   convolution (compiled as f32 arithmetic).
//! * On the real models (`quantize(bits=8)` without and with calibration), every quantized
//!   MatMul/Gemm compiles to the int8 kernel, and with calibration the CNNs' (ocr-rec, ocr-cls,
//!   orientation) group-1 convolutions to the int8 conv kernel. Upstream layers are computed by
//!   other kernels than the interpreter's, and an f32 difference in the last bit can move an
//!   activation code by one step, so agreement is checked against the size of one quantization
//!   step: the outputs' cosine with the interpreter's ≥ 0.999 and the largest error below 10 %
//!   of the output scale (measured: dynamic forms agree within 1e-4; static ocr-rec and ocr-cls
//!   within 1e-4, orientation within 1.1e-2 and minilm within 1e-2 with cosine ≥ 0.9999, the
//!   size of one flipped code in an early layer).

use pare_backend_llvm::{emit_artifact, Emit, Options};
use pare_ir::{Graph, Tensor};
use pare_pass::{PassContext, SampleSet};
use pare_runtime::loader::Library;
use pare_runtime::npy::NpyArray;
use pare_tests::{cases, data_set_dirs, read_data_set};

/// Compiles `g` for the shapes of `inputs`, runs it and returns the outputs as f32, with the
/// kernel counts of the compile.
fn compile_run(g: &Graph, inputs: &[Tensor], tag: &str) -> (Vec<Vec<f64>>, Vec<(String, usize)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    for (&v, t) in g.inputs().iter().zip(inputs) {
        opts.input_shapes.insert(
            g.value(v).name.clone(),
            t.shape().iter().map(|&d| d as u64).collect(),
        );
    }
    let so = dir.path().join(format!("lib{tag}.so"));
    let stats = emit_artifact(g, &opts, Emit::So, &so).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let lib = Library::open(&so, "pare_model").unwrap_or_else(|e| panic!("{tag}: {e}"));
    let mut sess = lib.session(2).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let info = lib.info().clone();
    let mut typed = g.clone();
    pare_ir::infer::infer_types(&mut typed).expect("types");
    let arrays: Vec<NpyArray> = inputs
        .iter()
        .zip(&info.inputs)
        .map(|(t, d)| NpyArray::new(d.dtype, d.shape.clone(), t.raw().to_vec()).expect("array"))
        .collect();
    let outs = sess
        .run_arrays(&arrays)
        .unwrap_or_else(|e| panic!("{tag}: {e}"))
        .into_iter()
        .zip(&info.outputs)
        .zip(typed.outputs())
        .map(|((a, d), &v)| {
            let shape = d.shape.iter().map(|&x| x as usize).collect();
            let dtype = typed.value(v).ty.dtype.expect("typed output");
            Tensor::from_raw(dtype, shape, a.data.into())
                .expect("output tensor")
                .to_f64_vec()
                .expect("numeric output")
        })
        .collect();
    (outs, stats.kernels)
}

fn interp(g: &Graph, inputs: &[Tensor]) -> Vec<Vec<f64>> {
    pare_interp::Interpreter::with_threads(2)
        .run(g, inputs)
        .expect("interpreter")
        .iter()
        .map(|t| t.to_f64_vec().expect("numeric output"))
        .collect()
}

fn calls(kernels: &[(String, usize)], name: &str) -> usize {
    kernels
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, c)| c)
        .sum()
}

fn qmatmul_calls(kernels: &[(String, usize)]) -> usize {
    calls(kernels, "pare_k_qmatmul")
}

/// (max |a − b| / max |a|, cosine).
fn agreement(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f64, |m, &x| m.max(x.abs())).max(1e-12);
    let err = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x - y).abs()));
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    (err / scale, d / (na.sqrt() * nb.sqrt()).max(1e-30))
}

fn ramp(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 20_001) as f32 / 10_000.0 - 1.0
        })
        .collect()
}

fn run_pipeline(g: &mut Graph, pipeline: &str, calib: &[Vec<Tensor>]) {
    let reg = pare_passes::registry();
    let mut cx = PassContext::new().with_threads(2);
    if !calib.is_empty() {
        cx = cx.with_samples(SampleSet::from_inputs(g, calib.to_vec(), "sample"));
    }
    pare_pass::run_pipeline(&reg, pipeline, g, &mut cx)
        .unwrap_or_else(|e| panic!("{pipeline}: {e}"));
}

/// A graph: x [m, k] → MatMul W [k, n] → + b → Relu, and a second MatMul sharing x.
fn mlp(m: usize, k: usize, n: usize) -> Graph {
    let w = ramp(k * n, 7);
    let w2 = ramp(k * n, 8);
    let b = ramp(n, 9);
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "graph @mlp(%x: f32[{m},{k}]) -> (%y, %z) {{\n  \
         %w = const f32[{k},{n}] [{}]\n  %w2 = const f32[{k},{n}] [{}]\n  %b = const f32[{n}] [{}]\n  \
         %h = MatMul(%x, %w)\n  %hb = Add(%h, %b)\n  %y = Relu(%hb)\n  %z = MatMul(%x, %w2)\n}}\n",
        fmt(&w),
        fmt(&w2),
        fmt(&b)
    );
    pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn dynamic_int8_matmul_matches_the_interpreter_exactly() {
    let (m, k, n) = (7, 40, 24);
    let mut g = mlp(m, k, n);
    run_pipeline(&mut g, "quantize(bits=8,min-elements=0)", &[]);
    let x = Tensor::from_vec(vec![m, k], ramp(m * k, 3));
    let want = interp(&g, std::slice::from_ref(&x));
    let (got, kernels) = compile_run(&g, std::slice::from_ref(&x), "dyn");
    assert_eq!(qmatmul_calls(&kernels), 2, "{kernels:?}");
    for (a, b) in want.iter().zip(&got) {
        let (err, _) = agreement(a, b);
        assert!(err < 1e-5, "dynamic: max error {err:.2e} of scale");
    }
}

#[test]
fn static_int8_matmul_and_gemm_match_the_interpreter_exactly() {
    let (m, k, n) = (5, 48, 20);
    let calib: Vec<Vec<Tensor>> = (0..4)
        .map(|i| vec![Tensor::from_vec(vec![m, k], ramp(m * k, 10 + i))])
        .collect();
    let x = Tensor::from_vec(vec![m, k], ramp(m * k, 99));
    for sym in [false, true] {
        let mut g = mlp(m, k, n);
        run_pipeline(
            &mut g,
            &format!("quantize(bits=8,min-elements=0,calibrate=minmax,act-symmetric={sym})"),
            &calib,
        );
        let want = interp(&g, std::slice::from_ref(&x));
        let (got, kernels) = compile_run(&g, std::slice::from_ref(&x), "static");
        assert_eq!(qmatmul_calls(&kernels), 2, "{kernels:?}");
        for (a, b) in want.iter().zip(&got) {
            let (err, _) = agreement(a, b);
            assert!(err < 1e-5, "static sym={sym}: max error {err:.2e} of scale");
        }
    }
    // A Gemm with transB, alpha and beta, quantized by hand in QDQ form.
    let (codes, scales) = {
        let w = ramp(n * k, 5);
        let s: Vec<f32> = (0..n)
            .map(|j| {
                w[j * k..(j + 1) * k]
                    .iter()
                    .fold(0f32, |a, x| a.max(x.abs()))
                    / 127.0
            })
            .collect();
        let c: Vec<String> = (0..n * k)
            .map(|i| format!("{}", (w[i] / s[i / k]).round_ties_even() as i32))
            .collect();
        (c.join(", "), s)
    };
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "graph @gemm(%x: f32[{m},{k}]) -> (%y) {{\n  \
         %s = const f32[] [0.0078125]\n  %z = const u8[] [128]\n  \
         %wq = const i8[{n},{k}] [{codes}]\n  %ws = const f32[{n}] [{}]\n  %c = const f32[{n}] [{}]\n  \
         %q = QuantizeLinear(%x, %s, %z)\n  %xd = DequantizeLinear(%q, %s, %z)\n  \
         %wd = DequantizeLinear(%wq, %ws) {{axis=0}}\n  \
         %y = Gemm(%xd, %wd, %c) {{transB=1, alpha=0.5, beta=2.0}}\n}}\n",
        fmt(&scales),
        fmt(&ramp(n, 4)),
    );
    let g = pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let want = interp(&g, std::slice::from_ref(&x));
    let (got, kernels) = compile_run(&g, std::slice::from_ref(&x), "gemm");
    assert_eq!(qmatmul_calls(&kernels), 1, "{kernels:?}");
    let (err, _) = agreement(&want[0], &got[0]);
    assert!(err < 1e-5, "static Gemm: max error {err:.2e} of scale");
}

/// A QDQ pair before a convolution becomes f32 arithmetic exact against the interpreter:
/// per tensor (int8 codes), and with one grid per input channel (uint8, axis 1, as
/// `quantize(act-per-channel=true)` writes it: broadcast parameters, no int8 kernel).
#[test]
fn qdq_pair_before_a_convolution_compiles_bit_exactly() {
    let cases = [
        (
            "%s = const f32[] [0.013]\n  %z = const i8[] [-3]",
            "",
            "conv",
        ),
        (
            "%s = const f32[2] [0.013, 0.021]\n  %z = const u8[2] [120, 131]",
            " {axis=1}",
            "conv_per_channel",
        ),
    ];
    for (params, axis, tag) in cases {
        let text = format!(
            "graph @conv(%x: f32[1,2,6,6]) -> (%y) {{\n  {params}\n  \
             %w = const f32[3,2,3,3] [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 0.1, 0.2, 0.3, -0.4, 0.5, 0.6, 0.7, 0.8, -0.9, \
             0.2, -0.1, 0.3, 0.1, -0.3, 0.5, 0.2, -0.6, 0.4, 0.3, 0.1, 0.2, -0.2, 0.4, 0.1, 0.5, 0.3, -0.7, \
             0.3, -0.3, 0.2, 0.6, -0.1, 0.2, 0.5, -0.4, 0.1, 0.2, 0.6, 0.3, -0.1, 0.3, 0.2, 0.1, 0.4, -0.5]\n  \
             %q = QuantizeLinear(%x, %s, %z){axis}\n  %xd = DequantizeLinear(%q, %s, %z){axis}\n  \
             %y = Conv(%xd, %w)\n}}\n"
        );
        let g = pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{tag}: {e}"));
        let x = Tensor::from_vec(
            vec![1, 2, 6, 6],
            ramp(72, 21).iter().map(|v| v * 2.0).collect(),
        );
        let want = interp(&g, std::slice::from_ref(&x));
        let (got, kernels) = compile_run(&g, std::slice::from_ref(&x), tag);
        let (err, _) = agreement(&want[0], &got[0]);
        assert!(
            err < 1e-6,
            "{tag}: QDQ + Conv: max error {err:.2e} of scale"
        );
        assert_eq!(calls(&kernels, "qconv"), 0, "{tag}: {kernels:?}");
    }
}

/// `n` int8 codes in `[-max, max]`, as graph text.
fn code_text(n: usize, seed: u32, max: f32) -> String {
    ramp(n, seed)
        .iter()
        .map(|v| format!("{}", (v * max).round() as i32))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn static_int8_convolutions_compile_to_the_int8_conv_kernel() {
    // Three QDQ convolutions on one quantized input: 3x3 stride 2 pad 1 with per-channel
    // scales, a bias and a Relu; 1x1 with a per-tensor scale and a residual Add; 3x3 dilation 2
    // on an int8-quantized copy (zero point shifted to uint8 in the kernel). The QConv's
    // reference semantics (the interpreter) and pare_k_qconv see the same activation codes
    // and compute the same exact integer sums, so only f32 rounding of the scaling differs.
    // A depthwise (group = 64) QDQ convolution and one with C_in·kh·kw = 8, below
    // QCONV_MIN_K, stay on the f32 path.
    let f = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ws: Vec<f32> = ramp(8, 52)
        .iter()
        .map(|v| 0.002 + 0.004 * v.abs())
        .collect();
    let text = format!(
        "graph @qconv(%x: f32[1,64,9,11], %r: f32[1,6,9,11], %u: f32[1,8,9,11]) -> (%y, %z, %d, %dw, %s1) {{\n  \
         %s = const f32[] [0.0117]\n  %zp = const u8[] [121]\n  \
         %s8 = const f32[] [0.009]\n  %zp8 = const i8[] [-7]\n  \
         %wq = const i8[8,64,3,3] [{}]\n  %ws = const f32[8] [{}]\n  %b = const f32[8] [{}]\n  \
         %w2q = const i8[6,64,1,1] [{}]\n  %w2s = const f32[] [0.003]\n  \
         %w3q = const i8[4,64,3,3] [{}]\n  %w3s = const f32[4] [0.004, 0.002, 0.003, 0.005]\n  \
         %w4q = const i8[64,1,3,3] [{}]\n  %w4s = const f32[] [0.004]\n  \
         %w5q = const i8[3,8,1,1] [{}]\n  %w5s = const f32[] [0.002]\n  \
         %q = QuantizeLinear(%x, %s, %zp)\n  %xd = DequantizeLinear(%q, %s, %zp)\n  \
         %q8 = QuantizeLinear(%x, %s8, %zp8)\n  %xd8 = DequantizeLinear(%q8, %s8, %zp8)\n  \
         %wd = DequantizeLinear(%wq, %ws) {{axis=0}}\n  \
         %c1 = Conv(%xd, %wd, %b) {{strides=[2,2], pads=[1,1,1,1]}}\n  %y = Relu(%c1)\n  \
         %w2d = DequantizeLinear(%w2q, %w2s)\n  %c2 = Conv(%xd, %w2d)\n  %z = Add(%c2, %r)\n  \
         %w3d = DequantizeLinear(%w3q, %w3s) {{axis=0}}\n  \
         %d = Conv(%xd8, %w3d) {{dilations=[2,2], pads=[2,1,2,3]}}\n  \
         %w4d = DequantizeLinear(%w4q, %w4s)\n  \
         %dw = Conv(%xd, %w4d) {{group=64, pads=[1,1,1,1]}}\n  \
         %uq = QuantizeLinear(%u, %s, %zp)\n  %ud = DequantizeLinear(%uq, %s, %zp)\n  \
         %w5d = DequantizeLinear(%w5q, %w5s)\n  %s1 = Conv(%ud, %w5d)\n}}\n",
        code_text(8 * 576, 51, 127.0),
        f(&ws),
        f(&ramp(8, 53)),
        code_text(6 * 64, 54, 100.0),
        code_text(4 * 576, 55, 127.0),
        code_text(64 * 9, 56, 127.0),
        code_text(24, 59, 127.0),
    );
    let g = pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let x = Tensor::from_vec(
        vec![1, 64, 9, 11],
        ramp(64 * 99, 57).iter().map(|v| v * 1.4).collect(),
    );
    let r = Tensor::from_vec(vec![1, 6, 9, 11], ramp(6 * 99, 58));
    let u = Tensor::from_vec(vec![1, 8, 9, 11], ramp(8 * 99, 60));
    let inputs = [x, r, u];
    // The interpreter on the fused graph runs QConv's reference semantics; on the original
    // graph, the f32 convolution of the dequantized values.
    let mut fused = g.clone();
    pare_ir::infer::infer_types(&mut fused).expect("types");
    let st = pare_backend_llvm::qfuse::fuse_quantized(&mut fused);
    assert_eq!(st.conv, 3, "{st:?}");
    pare_ir::infer::infer_types(&mut fused).expect("types");
    let want = interp(&fused, &inputs);
    let orig = interp(&g, &inputs);
    let (got, kernels) = compile_run(&g, &inputs, "qconv");
    assert_eq!(calls(&kernels, "pare_k_qconv"), 3, "{kernels:?}");
    assert_eq!(calls(&kernels, "pare_k_conv"), 2, "{kernels:?}");
    for (i, ((a, b), o)) in want.iter().zip(&got).zip(&orig).enumerate() {
        let (err, _) = agreement(a, b);
        assert!(
            err < 1e-5,
            "output {i}: compiled vs QConv semantics: {err:.2e} of scale"
        );
        // The pattern's own f32 arithmetic differs only by f32 rounding of its sums.
        let (err, _) = agreement(o, b);
        assert!(
            err < 1e-4,
            "output {i}: compiled vs the QDQ graph: {err:.2e} of scale"
        );
    }
}

#[test]
fn qoperator_matmul_and_conv_compile_through_their_qdq_form() {
    // QLinearMatMul and QLinearConv between QuantizeLinear and DequantizeLinear, as
    // onnxruntime's QOperator format writes them. The backend requantizes from the f32
    // product, the interpreter from the exact integer one: an output code may differ by one
    // step (y_scale) in a rounding tie, never more.
    let (m, k, n) = (4, 32, 8);
    let codes: Vec<String> = ramp(k * n, 31)
        .iter()
        .map(|v| format!("{}", (v * 120.0).round() as i32))
        .collect();
    let wc: Vec<String> = ramp(3 * 2 * 9, 32)
        .iter()
        .map(|v| format!("{}", (v * 100.0).round() as i32))
        .collect();
    let text = format!(
        "graph @qop(%x: f32[{m},{k}], %c: f32[1,2,6,6]) -> (%y, %yc) {{\n  \
         %s = const f32[] [0.01]\n  %z = const u8[] [120]\n  \
         %wq = const i8[{k},{n}] [{}]\n  %ws = const f32[{n}] [0.002, 0.003, 0.001, 0.004, 0.002, 0.0025, 0.0015, 0.003]\n  \
         %wz = const i8[{n}] [0, 0, 0, 0, 0, 0, 0, 0]\n  %ys = const f32[] [0.05]\n  %yz = const u8[] [100]\n  \
         %xq = QuantizeLinear(%x, %s, %z)\n  \
         %yq = QLinearMatMul(%xq, %s, %z, %wq, %ws, %wz, %ys, %yz)\n  \
         %y = DequantizeLinear(%yq, %ys, %yz)\n  \
         %cw = const i8[3,2,3,3] [{}]\n  %cws = const f32[3] [0.004, 0.005, 0.003]\n  \
         %cb = const i32[3] [100, -50, 7]\n  %wz3 = const i8[3] [0, 0, 0]\n  \
         %cq = QuantizeLinear(%c, %s, %z)\n  \
         %ycq = QLinearConv(%cq, %s, %z, %cw, %cws, %wz3, %ys, %yz, %cb)\n  \
         %yc = DequantizeLinear(%ycq, %ys, %yz)\n}}\n",
        codes.join(", "),
        wc.join(", "),
    );
    let g = pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let x = Tensor::from_vec(vec![m, k], ramp(m * k, 33));
    let c = Tensor::from_vec(vec![1, 2, 6, 6], ramp(72, 34));
    let inputs = [x, c];
    let want = interp(&g, &inputs);
    let (got, kernels) = compile_run(&g, &inputs, "qop");
    assert_eq!(qmatmul_calls(&kernels), 1, "{kernels:?}");
    for (a, b) in want.iter().zip(&got) {
        let worst = a.iter().zip(b).fold(0f64, |w, (x, y)| w.max((x - y).abs()));
        assert!(
            worst <= 0.05 * 1.001,
            "QOperator: max difference {worst} > one output step"
        );
        let same = a
            .iter()
            .zip(b)
            .filter(|(x, y)| (*x - *y).abs() < 1e-6)
            .count();
        assert!(
            same * 10 >= a.len() * 9,
            "QOperator: only {same} of {} outputs equal",
            a.len()
        );
    }
}

#[test]
fn quantized_real_models_compile_to_the_int8_kernel() {
    for c in cases() {
        if !["minilm", "ocr-rec", "ocr-cls", "orientation"].contains(&c.name.as_str()) {
            continue;
        }
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let sets = data_set_dirs(&c.fixtures);
        let data: Vec<Vec<Tensor>> = sets
            .iter()
            .map(|d| {
                read_data_set(d, "input_")
                    .expect("inputs")
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect()
            })
            .collect();
        for (form, calib) in [("dynamic", &data[..0]), ("static", &data[..2])] {
            if form == "dynamic" && ["ocr-cls", "orientation"].contains(&c.name.as_str()) {
                // Their dynamic form keeps weight-only (f32) convolutions: nothing int8 to run.
                continue;
            }
            let mut g = model.graph.clone();
            run_pipeline(&mut g, "canonicalize,quantize(bits=8),canonicalize", calib);
            let held = &data[2];
            let want = interp(&g, held);
            let (got, kernels) = compile_run(&g, held, &format!("{}-{form}", c.name));
            let qconvs = calls(&kernels, "pare_k_qconv");
            let int8 = qmatmul_calls(&kernels) + qconvs;
            assert!(
                int8 > 0,
                "{} {form}: no int8 kernel call in {kernels:?}",
                c.name
            );
            if form == "static" && c.name != "minilm" {
                // The CNNs' group-1 convolutions run on the int8 conv kernel.
                assert!(
                    qconvs > 0,
                    "{} static: no int8 conv kernel call in {kernels:?}",
                    c.name
                );
            }
            for (a, b) in want.iter().zip(&got) {
                let (err, cos) = agreement(a, b);
                eprintln!(
                    "{:<12} {form:<8} {int8:>3} int8 calls ({qconvs} conv)  max err {err:.2e} of scale  cosine {cos:.6}",
                    c.name
                );
                assert!(
                    cos >= 0.999 && err < 0.1,
                    "{} {form}: compiled vs interpreter cosine {cos:.6}, max error {err:.2e}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn sparse_weights_compile_to_the_sparse_kernel_where_it_is_faster() {
    // A 90 %-sparse 384x384 weight with 32 rows: the sparse kernel's cost model picks it; the
    // bias add and the Relu fold into its epilogue. A dense weight of the same shape stays on
    // the SGEMM.
    let (m, k, n) = (32, 384, 384);
    let mut w = ramp(k * n, 41);
    for (i, x) in w.iter_mut().enumerate() {
        if (i * 7919) % 10 != 0 {
            *x = 0.0;
        }
    }
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let graph = |w: &[f32]| {
        let text = format!(
            "graph @sp(%x: f32[{m},{k}]) -> (%y) {{\n  \
             %w = const f32[{k},{n}] [{}]\n  %b = const f32[{n}] [{}]\n  \
             %h = MatMul(%x, %w)\n  %hb = Add(%h, %b)\n  %y = Relu(%hb)\n}}\n",
            fmt(w),
            fmt(&ramp(n, 42))
        );
        pare_ir::parse_graph(&text).unwrap_or_else(|e| panic!("{e}"))
    };
    let x = Tensor::from_vec(vec![m, k], ramp(m * k, 43));
    let g = graph(&w);
    let want = interp(&g, std::slice::from_ref(&x));
    let (got, kernels) = compile_run(&g, std::slice::from_ref(&x), "sparse");
    assert_eq!(calls(&kernels, "pare_k_spmm"), 1, "{kernels:?}");
    assert_eq!(calls(&kernels, "pare_k_matmul"), 0, "{kernels:?}");
    let (err, _) = agreement(&want[0], &got[0]);
    assert!(err < 1e-5, "sparse: max error {err:.2e} of scale");
    let (_, dense_kernels) = compile_run(&graph(&ramp(k * n, 41)), &[x], "dense");
    assert_eq!(calls(&dense_kernels, "pare_k_spmm"), 0, "{dense_kernels:?}");
}

#[test]
fn unstructured_pruned_minilm_compiles_to_the_sparse_kernel() {
    for c in cases() {
        if c.name != "minilm" {
            continue;
        }
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let held: Vec<Tensor> = read_data_set(&data_set_dirs(&c.fixtures)[2], "input_")
            .expect("inputs")
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let mut g = model.graph.clone();
        run_pipeline(
            &mut g,
            "canonicalize,prune-unstructured(sparsity=0.9),canonicalize",
            &[],
        );
        let want = interp(&g, &held);
        let (got, kernels) = compile_run(&g, &held, "minilm-sparse");
        let sparse = calls(&kernels, "pare_k_spmm");
        eprintln!("minilm 90 % sparse: {sparse} sparse kernel calls, {kernels:?}");
        assert!(sparse >= 18, "{kernels:?}");
        for (a, b) in want.iter().zip(&got) {
            let (err, cos) = agreement(a, b);
            assert!(
                err < 1e-4,
                "sparse minilm: compiled vs interpreter max error {err:.2e} (cosine {cos})"
            );
        }
    }
}
