//! `quantize` on the real models (`.cache/models/<name>.onnx`, fetched by
//! `scripts/fetch_models.py`; skipped with a note when absent), judged against the dense model
//! in pare's interpreter on the fixtures' inputs (`tests/models/<name>/test_data_set_N`):
//!
//! - MiniLM (transformer, 18 MatMul weights): int8 per-channel RTN keeps cosine ≥ 0.99 on
//!   every float output; int4 g128 GPTQ calibrated on test_data_set_0/1 has a strictly smaller
//!   output error on the held-out test_data_set_2 than int4 g128 RTN; AWQ is reported.
//! - ocr-cls (MobileNetV3 classifier, convolutions): int8 per-channel RTN keeps top-1
//!   agreement and cosine ≥ 0.99; GPTQ on convolutions runs (reported).
//! - Static int8 (`quantize(bits=8)` calibrated on test_data_set_0/1: uint8 activations,
//!   int8 per-channel weights) on all five models, judged on held-out inputs (test_data_set_2
//!   and flipped / rotated copies of its images): top-1 agreement 1.0 for the classifiers
//!   (ocr-cls, orientation), cosine bounds for ocr-det, ocr-rec and MiniLM; dynamic int8
//!   (no calibration) on MiniLM.
//! - The QDQ int8 (weight-only and static), dynamic int8, QDQ int4 blocked and MatMulNBits
//!   exports of MiniLM, and the static and dynamic exports of ocr-cls, run in onnxruntime and
//!   agree with pare's interpreter on the quantized graph within 1e-3 of each output's scale
//!   (static activation exports: within 1e-2 / 5e-2, since a last-bit difference upstream of a
//!   QuantizeLinear can flip a code; `scripts/ort_check.py`; skipped with a note when python3
//!   + onnxruntime are absent).
//!
//! `cargo test -p pare-quantize --test models -- --nocapture` prints the numbers.

use pare_ir::{Graph, Tensor};
use pare_pass::{PassContext, PipelineReport, SampleSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn registry() -> pare_pass::Registry {
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_fuse::register(&mut reg);
    pare_quantize::register(&mut reg);
    reg
}

/// The steps of the `canonicalize` pipeline (kept in sync with `pare_passes::CANONICALIZE`).
const CANONICALIZE: &str = "fold-constants,fold-if,fold-shapes,dce,cse,fold-batchnorm,fuse-gemm,\
fuse-layernorm,fuse-gelu,fuse-attention,simplify-layout,dce";

struct Model {
    name: String,
    graph: Graph,
    sets: Vec<PathBuf>,
}

fn load(name: &str) -> Option<Model> {
    let path = root().join(".cache/models").join(format!("{name}.onnx"));
    if !path.is_file() {
        eprintln!(
            "SKIP {name}: {} is missing (run python3 scripts/fetch_models.py)",
            path.display()
        );
        return None;
    }
    let graph = pare_onnx::load_model(&path, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .graph;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(root().join("tests/models").join(name))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    assert!(sets.len() >= 3, "{name}: expected 3 fixture sets");
    Some(Model {
        name: name.into(),
        graph,
        sets,
    })
}

fn inputs(g: &Graph, dir: &Path) -> Vec<Tensor> {
    pare_pass::samples::load_sample(g, dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .inputs
}

fn run(g: &Graph, x: &[Tensor]) -> Vec<Tensor> {
    pare_interp::Interpreter::new()
        .run(g, x)
        .unwrap_or_else(|e| panic!("interpreter: {e}"))
}

/// Runs `pipeline` on a copy of the model, calibrating on `calib` when given.
fn quantize(m: &Model, pipeline: &str, calib: &[&Path]) -> (Graph, PipelineReport) {
    let mut g = m.graph.clone();
    let mut cx = PassContext::new();
    if !calib.is_empty() {
        let mut set = SampleSet::load(&g, calib[0]).unwrap_or_else(|e| panic!("{e}"));
        for d in &calib[1..] {
            set.add_dir(&g, d).unwrap_or_else(|e| panic!("{e}"));
        }
        cx = cx.with_samples(set);
    }
    let t0 = Instant::now();
    let r = pare_pass::run_pipeline(&registry(), pipeline, &mut g, &mut cx)
        .unwrap_or_else(|e| panic!("{} {pipeline}: {e}", m.name));
    eprintln!(
        "  {:<12} {pipeline:<55} {:>6.2} s",
        m.name,
        t0.elapsed().as_secs_f64()
    );
    (g, r)
}

/// Cosine, relative L2 error and top-1 agreement over the float outputs.
#[derive(Clone, Copy, Debug)]
struct Fid {
    cos_min: f64,
    rel_l2: f64,
    top1: Option<f64>,
}

fn fidelity(dense: &[Vec<Tensor>], quant: &[Vec<Tensor>]) -> Fid {
    let (mut cos_min, mut num, mut den) = (1f64, 0f64, 0f64);
    let (mut agree, mut rows) = (0usize, 0usize);
    for (d, q) in dense.iter().zip(quant) {
        assert_eq!(d.len(), q.len());
        for (a, b) in d.iter().zip(q) {
            assert_eq!(a.shape(), b.shape());
            if !a.dtype().is_float() {
                assert_eq!(a.raw(), b.raw(), "integer outputs differ");
                continue;
            }
            let (x, y) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
            let (mut dot, mut nx, mut ny) = (0f64, 0f64, 0f64);
            for (u, v) in x.iter().zip(&y) {
                dot += u * v;
                nx += u * u;
                ny += v * v;
                num += (u - v) * (u - v);
            }
            den += nx;
            cos_min = cos_min.min(dot / (nx.sqrt() * ny.sqrt()).max(f64::MIN_POSITIVE));
            // Classifier-like: rank 2, a handful of classes.
            if let [r, c] = *a.shape() {
                if (2..=32).contains(&c) && r <= 64 {
                    for i in 0..r {
                        let am = |v: &[f64]| {
                            (0..c)
                                .max_by(|&p, &q| v[i * c + p].total_cmp(&v[i * c + q]))
                                .unwrap_or(0)
                        };
                        agree += usize::from(am(&x) == am(&y));
                        rows += 1;
                    }
                }
            }
        }
    }
    Fid {
        cos_min,
        rel_l2: (num / den.max(f64::MIN_POSITIVE)).sqrt(),
        top1: (rows > 0).then(|| agree as f64 / rows as f64),
    }
}

fn stat(r: &PipelineReport, k: &str) -> u64 {
    r.steps
        .iter()
        .map(|s| s.stats.get(k).copied().unwrap_or(0))
        .sum()
}

fn summary(label: &str, r: &PipelineReport, f: Fid) {
    eprintln!(
        "  {label:<34} layers {:>3}  weight bytes {:>9} → {:>8}  cos_min {:.6}  rel L2 {:.3e}{}",
        stat(r, "layers-quantized"),
        stat(r, "weight-bytes-before"),
        stat(r, "weight-bytes-after"),
        f.cos_min,
        f.rel_l2,
        f.top1
            .map(|t| format!("  top-1 {t:.3}"))
            .unwrap_or_default()
    );
}

#[test]
fn minilm_int8_rtn_and_int4_gptq_vs_rtn() {
    let Some(m) = load("minilm") else { return };
    let xs: Vec<Vec<Tensor>> = m.sets.iter().map(|d| inputs(&m.graph, d)).collect();
    let dense: Vec<Vec<Tensor>> = xs.iter().map(|x| run(&m.graph, x)).collect();

    // int8 per-channel RTN on every fixture.
    let (g8, r8) = quantize(&m, "quantize(bits=8,weights-only=true)", &[]);
    assert_eq!(stat(&r8, "layers-quantized"), 18, "{:?}", r8.steps[0].notes);
    let f8 = fidelity(&dense, &xs.iter().map(|x| run(&g8, x)).collect::<Vec<_>>());
    summary("int8 per-channel rtn (all sets)", &r8, f8);
    assert!(f8.cos_min >= 0.99, "int8 RTN cosine {}", f8.cos_min);

    // int4 g128: calibrate on sets 0 and 1, evaluate on the held-out set 2.
    let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
    let held = std::slice::from_ref(&dense[2]);
    let mut results = Vec::new();
    for method in ["rtn", "gptq", "awq"] {
        let p = format!("quantize(bits=4,group=128,method={method})");
        let c: &[&Path] = if method == "rtn" { &[] } else { &calib };
        let (g, r) = quantize(&m, &p, c);
        let f = fidelity(held, &[run(&g, &xs[2])]);
        summary(&format!("int4 g128 {method} (held-out set 2)"), &r, f);
        if method != "rtn" {
            for n in r.steps[0].notes.iter().take(3) {
                eprintln!("    {n}");
            }
        }
        results.push((method, f, stat(&r, "weight-bytes-after")));
    }
    let (rtn, gptq, awq) = (results[0].1, results[1].1, results[2].1);
    assert_eq!(results[0].2, results[1].2, "same size");
    assert!(
        gptq.rel_l2 < rtn.rel_l2,
        "GPTQ output error {} must be below RTN's {}",
        gptq.rel_l2,
        rtn.rel_l2
    );
    assert!(gptq.cos_min > 0.9 && awq.cos_min > 0.9, "{gptq:?} {awq:?}");
}

#[test]
fn ocr_cls_int8_rtn_keeps_top1() {
    let Some(m) = load("ocr-cls") else { return };
    let xs: Vec<Vec<Tensor>> = m.sets.iter().map(|d| inputs(&m.graph, d)).collect();
    let dense: Vec<Vec<Tensor>> = xs.iter().map(|x| run(&m.graph, x)).collect();
    // The model's weights are small; quantize everything above 256 elements.
    let (g8, r8) = quantize(
        &m,
        "quantize(bits=8,weights-only=true,min-elements=256)",
        &[],
    );
    assert!(
        stat(&r8, "layers-quantized") >= 20,
        "{:?}",
        r8.steps[0].notes
    );
    let f8 = fidelity(&dense, &xs.iter().map(|x| run(&g8, x)).collect::<Vec<_>>());
    summary("int8 per-channel rtn (all sets)", &r8, f8);
    assert_eq!(f8.top1, Some(1.0), "int8 RTN changed a prediction");
    assert!(f8.cos_min >= 0.99, "int8 RTN cosine {}", f8.cos_min);

    // Convolution GPTQ (im2col XᵀX), held out: reported, and sane.
    let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
    let held = std::slice::from_ref(&dense[2]);
    for (method, c) in [("rtn", &[][..]), ("gptq", &calib[..])] {
        let p = format!("quantize(bits=8,weights-only=true,min-elements=256,method={method})");
        let (g, r) = quantize(&m, &p, c);
        let f = fidelity(held, &[run(&g, &xs[2])]);
        summary(&format!("int8 {method} (held-out set 2)"), &r, f);
        let fc = fidelity(&dense[..2], &[run(&g, &xs[0]), run(&g, &xs[1])]);
        summary(&format!("int8 {method} (calibration sets)"), &r, fc);
        for n in r.steps[0]
            .notes
            .iter()
            .filter(|n| n.contains("output error"))
            .take(12)
        {
            eprintln!("    {n}");
        }
        assert!(f.cos_min >= 0.99, "{method}: {f:?}");
    }
}

/// python3 with onnxruntime, or `None` (with a note).
fn python_with_ort() -> Option<()> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, onnx"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP onnxruntime check: python3 with onnxruntime and onnx is not available");
    }
    ok.then_some(())
}

#[test]
fn minilm_exports_run_in_onnxruntime() {
    let Some(m) = load("minilm") else { return };
    if python_with_ort().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
    for (tag, pipeline, c) in [
        ("qdq-int8-static", "quantize(bits=8)", &calib[..]),
        ("qdq-int8", "quantize(bits=8,weights-only=true)", &[][..]),
        ("dynamic-int8", "quantize(bits=8)", &[][..]),
        (
            "qdq-int4-g128-asym",
            "quantize(bits=4,group=128,symmetric=false)",
            &[][..],
        ),
        (
            "qdq-int4-g32-awq",
            "quantize(bits=4,group=32,method=awq)",
            &calib[..],
        ),
        (
            "matmulnbits-int4-g128-gptq",
            "quantize(bits=4,group=128,method=gptq,format=matmulnbits)",
            &calib[..],
        ),
        (
            "matmulnbits-int4-g64-asym",
            "quantize(bits=4,group=64,symmetric=false,format=matmulnbits)",
            &[][..],
        ),
        (
            "matmulnbits-int8-g32-awq",
            "quantize(bits=8,group=32,method=awq,format=matmulnbits)",
            &calib[..],
        ),
    ] {
        let (g, _) = quantize(&m, pipeline, c);
        let path = dir.path().join(format!("{tag}.onnx"));
        pare_onnx::save_model(&g, &path, &Default::default()).expect("export");
        // The exported model imports back (with the MatMulNBits definition).
        let opts = pare_onnx::ImportOptions {
            custom_ops: pare_quantize::nbits::custom_ops(),
            ..Default::default()
        };
        let back = pare_onnx::load_model(&path, &opts).unwrap_or_else(|e| panic!("{tag}: {e}"));
        // Fixtures: pare's interpreter outputs on the quantized graph.
        let fx = dir.path().join(tag);
        for (i, d) in m.sets.iter().enumerate() {
            let x = inputs(&g, d);
            let y = run(&back.graph, &x);
            let sd = fx.join(format!("test_data_set_{i}"));
            std::fs::create_dir_all(&sd).expect("mkdir");
            for (k, t) in x.iter().enumerate() {
                pare_onnx::write_tensor_pb(&sd.join(format!("input_{k}.pb")), "", t).expect("pb");
            }
            for (k, t) in y.iter().enumerate() {
                pare_onnx::write_tensor_pb(&sd.join(format!("output_{k}.pb")), "", t).expect("pb");
            }
        }
        args.push(format!("{}={}", path.display(), fx.display()));
    }
    let check = |flags: &[&str], args: &[String]| {
        std::process::Command::new("python3")
            .arg(root().join("scripts/ort_check.py"))
            .args(flags)
            .args(args)
            .status()
            .expect("python3 runs")
            .success()
    };
    // The graph as written: onnxruntime's DequantizeLinear, MatMulInteger and MatMulNBits
    // kernels against pare's interpreter. The static export (first) rounds activations in
    // QuantizeLinear, where last-bit differences of the f32 ops upstream can flip a code
    // (measured 1.1e-3 of scale), hence its own tolerance.
    assert!(
        check(&["--opt", "disable", "--rtol", "1e-2"], &args[..1])
            && check(&["--opt", "disable", "--rtol", "1e-3"], &args[1..]),
        "onnxruntime disagrees with pare's interpreter on the quantized MiniLM exports"
    );
    // As deployed (all optimizations): onnxruntime fuses DequantizeLinear→MatMul into kernels
    // that also quantize the activations to int8 (dynamically), so it is only close.
    assert!(
        check(&["--opt", "all", "--rtol", "5e-2"], &args),
        "onnxruntime with graph optimizations is far from pare's interpreter"
    );
}

/// Held-out variants of an image batch `[N, C, H, W]`: itself and rotated by 180°; with
/// `mirrors`, also mirrored left-right and upside down; with `quarter_turns` (square images),
/// also rotated by 90° both ways.
fn image_variants(x: &Tensor, mirrors: bool, quarter_turns: bool) -> Vec<Tensor> {
    let sh = x.shape().to_vec();
    let [n, c, h, w] = sh[..] else {
        panic!("not an image batch: {sh:?}")
    };
    let v = x.to_vec::<f32>().expect("f32 image");
    let map = |f: &dyn Fn(usize, usize) -> (usize, usize)| -> Tensor {
        let mut out = vec![0f32; v.len()];
        for b in 0..n * c {
            for i in 0..h {
                for j in 0..w {
                    let (si, sj) = f(i, j);
                    out[(b * h + i) * w + j] = v[(b * h + si) * w + sj];
                }
            }
        }
        Tensor::from_vec(sh.clone(), out)
    };
    let mut out = vec![x.clone(), map(&|i, j| (h - 1 - i, w - 1 - j))];
    if mirrors {
        out.push(map(&|i, j| (i, w - 1 - j)));
        out.push(map(&|i, j| (h - 1 - i, j)));
    }
    if quarter_turns && h == w {
        out.push(map(&|i, j| (j, w - 1 - i)));
        out.push(map(&|i, j| (h - 1 - j, i)));
    }
    out
}

/// Static int8 activations + int8 per-channel weights (`quantize(bits=8)` with calibration
/// on test_data_set_0/1: the default `calibrate=percentile`, and `calibrate=auto` on ocr-rec),
/// judged on held-out inputs in pare's interpreter.
/// The bounds are the measured values with a margin (see docs/passes.md for the numbers).
#[test]
fn static_int8_on_real_models() {
    // (model, pipeline, min cosine, mean cosine) bounds over the held-out inputs; classifiers
    // must keep every prediction.
    let cases: [(&str, &str, f64, f64); 6] = [
        ("ocr-cls", "quantize(bits=8)", 0.995, 0.998),
        ("orientation", "quantize(bits=8)", 0.99, 0.995),
        ("ocr-det", "quantize(bits=8)", 0.99, 0.995),
        ("ocr-rec", "quantize(bits=8)", 0.98, 0.99),
        ("ocr-rec", "quantize(bits=8,calibrate=auto)", 0.99, 0.994),
        ("minilm", "quantize(bits=8)", 0.99, 0.99),
    ];
    for (name, pipeline, min_bound, mean_bound) in cases {
        let Some(m) = load(name) else { continue };
        let held: Vec<Vec<Tensor>> = if name == "minilm" {
            vec![inputs(&m.graph, &m.sets[2])]
        } else {
            // Classifiers: only orientations they are trained on (ocr-cls 0/180°,
            // orientation 0/90/180/270°); the others also get mirrored copies.
            let classifier = matches!(name, "ocr-cls" | "orientation");
            image_variants(&inputs(&m.graph, &m.sets[2])[0], !classifier, true)
                .into_iter()
                .map(|t| vec![t])
                .collect()
        };
        let dense: Vec<Vec<Tensor>> = held.iter().map(|x| run(&m.graph, x)).collect();
        let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
        let (g, r) = quantize(&m, pipeline, &calib);
        assert!(
            stat(&r, "activations-quantized") >= 10,
            "{name}: {:?}",
            r.steps[0].notes
        );
        let outs: Vec<Vec<Tensor>> = held.iter().map(|x| run(&g, x)).collect();
        let per: Vec<Fid> = dense
            .iter()
            .zip(&outs)
            .map(|(d, q)| fidelity(std::slice::from_ref(d), std::slice::from_ref(q)))
            .collect();
        let all = fidelity(&dense, &outs);
        let mean = per.iter().map(|f| f.cos_min).sum::<f64>() / per.len() as f64;
        summary(
            &format!("{name} {pipeline} ({} held-out)", held.len()),
            &r,
            all,
        );
        eprintln!(
            "    activations quantized {}, cosine mean {mean:.5}",
            stat(&r, "activations-quantized")
        );
        if let Some(t) = all.top1 {
            assert_eq!(t, 1.0, "{name}: static int8 changed a prediction");
        }
        assert!(
            all.cos_min >= min_bound,
            "{name}: cosine min {}",
            all.cos_min
        );
        assert!(mean >= mean_bound, "{name}: cosine mean {mean}");
    }
}

/// Accuracy control (`max-error`) on ocr-det, whose plain static int8 model is 0.13 off
/// (relative L2) on its two calibration samples: with `max-error=0.05` the costliest layers go
/// back to f32 until the error on those samples is within the bound (9 of 45 restored), and
/// most layers stay int8. What it does to held-out inputs depends on how well two samples
/// represent them, so that is printed, not asserted: measured on the six held-out variants of
/// test_data_set_2 it rises (0.075 → 0.13), while onnxruntime's evaluation on generated
/// held-out images (benches/quant_vs_ort.py) falls from 0.22 to 0.14 (docs/passes.md).
#[test]
fn ocr_det_max_error_restores_the_costliest_layers() {
    let Some(m) = load("ocr-det") else { return };
    let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
    // As `pare opt` runs it: canonicalized first (BatchNormalization folded into the
    // convolutions, so each layer's restoration is the whole layer).
    let (plain, _) = quantize(&m, &format!("{CANONICALIZE},quantize(bits=8)"), &calib);
    let (ctl, r) = quantize(
        &m,
        &format!("{CANONICALIZE},quantize(bits=8,max-error=0.05)"),
        &calib,
    );
    let notes: Vec<&String> = r.steps.iter().flat_map(|s| &s.notes).collect();
    let (kept, quantized) = (stat(&r, "layers-kept-f32"), stat(&r, "layers-quantized"));
    assert!(
        kept >= 1 && quantized > 2 * kept,
        "{kept} layers restored, {quantized} quantized: {notes:?}"
    );
    let error_on = |sets: &[Vec<Tensor>], g: &Graph| {
        let dense: Vec<Vec<Tensor>> = sets.iter().map(|x| run(&m.graph, x)).collect();
        let outs: Vec<Vec<Tensor>> = sets.iter().map(|x| run(g, x)).collect();
        fidelity(&dense, &outs).rel_l2
    };
    let cal: Vec<Vec<Tensor>> = calib.iter().map(|d| inputs(&m.graph, d)).collect();
    let (e_plain, e_ctl) = (error_on(&cal, &plain), error_on(&cal, &ctl));
    eprintln!("  calibration error: plain {e_plain:.4}, max-error=0.05 {e_ctl:.4}");
    for n in notes.iter().filter(|n| n.contains("max-error")) {
        eprintln!("    {n}");
    }
    let held: Vec<Vec<Tensor>> = image_variants(&inputs(&m.graph, &m.sets[2])[0], true, true)
        .into_iter()
        .map(|t| vec![t])
        .collect();
    let (h_plain, h_ctl) = (error_on(&held, &plain), error_on(&held, &ctl));
    assert!(h_plain.is_finite() && h_ctl.is_finite());
    eprintln!("  held-out error: plain {h_plain:.4}, max-error=0.05 {h_ctl:.4}");
    assert!(e_plain > 0.05 && e_ctl <= 0.05 + 1e-6, "{e_plain} {e_ctl}");
}

/// Outlier retention on MiniLM, int4 in groups of 128 by round to nearest: keeping 1 % of each
/// layer's weights (the largest) in f32 out of the grids lowers the output error on the three
/// fixtures (measured 0.21 → 0.17 in onnxruntime over 19 inputs, docs/passes.md) for 0.64 more
/// stored bits per weight; the sizes are what the report counts.
#[test]
fn minilm_int4_outliers_lower_the_error() {
    let Some(m) = load("minilm") else { return };
    let held: Vec<Vec<Tensor>> = m.sets.iter().map(|d| inputs(&m.graph, d)).collect();
    let dense: Vec<Vec<Tensor>> = held.iter().map(|x| run(&m.graph, x)).collect();
    let mut errs = Vec::new();
    for pipeline in [
        "quantize(bits=4,weights-only=true)",
        "quantize(bits=4,weights-only=true,outliers=0.01)",
    ] {
        let (g, r) = quantize(&m, pipeline, &[]);
        let outs: Vec<Vec<Tensor>> = held.iter().map(|x| run(&g, x)).collect();
        let f = fidelity(&dense, &outs);
        summary(pipeline, &r, f);
        errs.push((
            f.rel_l2,
            stat(&r, "weight-bytes-after"),
            stat(&r, "params-quantized"),
        ));
    }
    let (plain, kept) = (errs[0], errs[1]);
    let extra_bits = 8.0 * (kept.1 - plain.1) as f64 / plain.2 as f64;
    eprintln!(
        "  outliers=0.01: error {:.4} → {:.4}, {extra_bits:.3} more bits per weight",
        plain.0, kept.0
    );
    assert!(kept.0 < 0.9 * plain.0, "{plain:?} {kept:?}");
    assert!((0.6..0.7).contains(&extra_bits), "{extra_bits}");
}

/// Dynamic int8 (no calibration): MiniLM's 18 linear layers become MatMulInteger with 12
/// shared DynamicQuantizeLinear; cosine ≥ 0.99 on every fixture.
#[test]
fn minilm_dynamic_int8() {
    let Some(m) = load("minilm") else { return };
    let xs: Vec<Vec<Tensor>> = m.sets.iter().map(|d| inputs(&m.graph, d)).collect();
    let dense: Vec<Vec<Tensor>> = xs.iter().map(|x| run(&m.graph, x)).collect();
    let (g, r) = quantize(&m, "quantize(bits=8)", &[]);
    assert_eq!(stat(&r, "layers-dynamic"), 18, "{:?}", r.steps[0].notes);
    assert_eq!(stat(&r, "activations-quantized"), 12);
    let f = fidelity(&dense, &xs.iter().map(|x| run(&g, x)).collect::<Vec<_>>());
    summary("minilm dynamic int8 (all sets)", &r, f);
    assert!(f.cos_min >= 0.99, "dynamic int8 cosine {}", f.cos_min);
}

/// Static (QDQ on activations and weights) and dynamic (MatMulInteger) exports of ocr-cls, a
/// convolutional classifier, run in onnxruntime and match pare's interpreter.
#[test]
fn ocr_cls_static_and_dynamic_exports_run_in_onnxruntime() {
    let Some(m) = load("ocr-cls") else { return };
    if python_with_ort().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let calib = [m.sets[0].as_path(), m.sets[1].as_path()];
    let mut args = Vec::new();
    for (tag, pipeline, c) in [
        ("static", "quantize(bits=8,min-elements=256)", &calib[..]),
        (
            "static-sym",
            "quantize(bits=8,min-elements=256,act-symmetric=true,calibrate=percentile)",
            &calib[..],
        ),
        ("dynamic", "quantize(bits=8,min-elements=256)", &[][..]),
    ] {
        let (g, _) = quantize(&m, pipeline, c);
        let path = dir.path().join(format!("{tag}.onnx"));
        pare_onnx::save_model(&g, &path, &Default::default()).expect("export");
        let back = pare_onnx::load_model(&path, &Default::default())
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        let fx = dir.path().join(tag);
        for (i, d) in m.sets.iter().enumerate() {
            let x = inputs(&g, d);
            let y = run(&back.graph, &x);
            let sd = fx.join(format!("test_data_set_{i}"));
            std::fs::create_dir_all(&sd).expect("mkdir");
            for (k, t) in x.iter().enumerate() {
                pare_onnx::write_tensor_pb(&sd.join(format!("input_{k}.pb")), "", t).expect("pb");
            }
            for (k, t) in y.iter().enumerate() {
                pare_onnx::write_tensor_pb(&sd.join(format!("output_{k}.pb")), "", t).expect("pb");
            }
        }
        args.push(format!("{}={}", path.display(), fx.display()));
    }
    let check = |rtol: &str, args: &[String]| {
        std::process::Command::new("python3")
            .arg(root().join("scripts/ort_check.py"))
            .args(["--opt", "disable", "--rtol", rtol])
            .args(args)
            .status()
            .expect("python3 runs")
            .success()
    };
    // Dynamic: integer accumulation, exact up to the final f32 rescale.
    assert!(
        check("1e-3", &args[2..]),
        "onnxruntime disagrees with pare's interpreter on ocr-cls dynamic int8"
    );
    // Static: every QuantizeLinear rounds, so a last-bit difference between onnxruntime's and
    // pare's f32 convolutions occasionally lands a value on the other side of a rounding
    // boundary; through 27 quantized activations and the squeeze-excitation products such
    // one-code flips grow to a few percent of the output (measured up to 2.7e-2 for the
    // default percentile ranges; a wrong scale or zero point would be off by O(1)).
    assert!(
        check("5e-2", &args[..2]),
        "onnxruntime disagrees with pare's interpreter on ocr-cls static int8"
    );
}
