//! `quantize(budget-bits=…)`: mixed precision under a size budget.
//!
//! - On a small MLP: the report lists every layer's sensitivity and chosen level, the achieved
//!   average bits (≤ the budget), and the final end-to-end error; the level sizes add up.
//! - On the real models (`.cache/models/<name>.onnx`, skipped with a note when absent),
//!   calibrated on test_data_set_0/1 and judged on held-out inputs (test_data_set_2, for the
//!   image models also rotated and mirrored copies) in pare's interpreter: on MiniLM
//!   (transformer) and orientation (CNN classifier) `budget-bits=5` has a smaller end-to-end
//!   error than uniform int4 g128, at a size at most one bit per weight larger and ≤ 5 bits
//!   per weight; uniform int8 per channel is at least as good as `budget-bits=5`; on the
//!   calibration samples the result is never worse than all int4 or the greedy allocation.
//!   ocr-rec (CNN + transformer recognizer) is held to the same except the held-out win,
//!   which it does not reach (see its test).
//!
//! `cargo test -p pare-quantize --test mixed -- --nocapture` prints the numbers.

use pare_ir::{Graph, Tensor};
use pare_pass::{PassContext, PipelineReport, SampleSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn registry() -> pare_pass::Registry {
    let mut reg = pare_pass::Registry::new();
    pare_quantize::register(&mut reg);
    reg
}

fn stat(r: &PipelineReport, k: &str) -> u64 {
    r.steps
        .iter()
        .map(|s| s.stats.get(k).copied().unwrap_or(0))
        .sum()
}

fn notes(r: &PipelineReport) -> Vec<String> {
    r.steps.iter().flat_map(|s| s.notes.clone()).collect()
}

/// The achieved average bits from the `budget-bits=…` summary note.
fn achieved(r: &PipelineReport) -> f64 {
    let n = notes(r)
        .into_iter()
        .find(|n| n.starts_with("budget-bits=") && n.contains("bits per weight"))
        .expect("a budget-bits summary note");
    let at = n.find("average ").expect("average") + "average ".len();
    n[at..]
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .expect("a number after 'average'")
}

fn mlp() -> Graph {
    // 64→64→64→16 with ReLU; weights N(0, 0.15²) from a fixed generator, the first layer with
    // two large input rows (outlier features), which int4 groups handle worst.
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.5
    };
    let mut mat = |k: usize, n: usize, outlier_rows: &[usize]| -> String {
        let v: Vec<String> = (0..k * n)
            .map(|i| {
                let x = next();
                let x = if outlier_rows.contains(&(i / n)) {
                    x * 12.0
                } else {
                    x
                };
                format!("{x:.5}")
            })
            .collect();
        v.join(", ")
    };
    let text = format!(
        "graph @main(%x: f32[8,64]) -> (%y) {{\n  %w1 = const f32[64,64] [{}]\n  \
         %w2 = const f32[64,64] [{}]\n  %w3 = const f32[64,16] [{}]\n  \
         %h1 = MatMul(%x, %w1)\n  %a1 = Relu(%h1)\n  %h2 = MatMul(%a1, %w2)\n  \
         %a2 = Relu(%h2)\n  %y = MatMul(%a2, %w3)\n}}\n",
        mat(64, 64, &[3, 40]),
        mat(64, 64, &[]),
        mat(64, 16, &[])
    );
    pare_ir::parse_graph(&text).expect("parse")
}

#[test]
fn mlp_report_lists_levels_and_meets_the_budget() {
    for budget in [5.0, 6.0, 9.0, 20.0] {
        let mut g = mlp();
        let mut cx = PassContext::new().with_threads(1);
        let p = format!("quantize(budget-bits={budget},group=32,min-elements=0)");
        let r = pare_pass::run_pipeline(&registry(), &p, &mut g, &mut cx)
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let ns = notes(&r);
        for n in &ns {
            eprintln!("  {n}");
        }
        let per_layer: Vec<&String> = ns
            .iter()
            .filter(|n| n.starts_with("budget-bits: '"))
            .collect();
        assert_eq!(per_layer.len(), 3, "{ns:#?}");
        for n in &per_layer {
            assert!(
                n.contains("sensitivity") && n.contains("bits per weight"),
                "{n}"
            );
        }
        let avg = achieved(&r);
        assert!(avg <= budget, "budget {budget}: achieved {avg}");
        // The graph agrees: quantized bytes + f32 bytes of kept layers, in bits, per weight.
        let kept_f32 = stat(&r, "layers-kept-f32");
        let f32_elems: u64 = ns
            .iter()
            .filter(|n| n.contains("kept f32 by budget-bits"))
            .map(|n| {
                let dim = |key: &str| -> u64 {
                    let at = n.find(key).expect("dim") + key.len();
                    n[at..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|x| x.parse().ok())
                        .expect("number")
                };
                dim("N=") * dim("K=")
            })
            .sum();
        assert_eq!(
            ns.iter().filter(|n| n.contains("kept f32")).count() as u64,
            kept_f32
        );
        let total_elems = 64 * 64 * 2 + 64 * 16;
        let bits = 8 * stat(&r, "weight-bytes-after") + 32 * f32_elems;
        let graph_avg = bits as f64 / total_elems as f64;
        assert!(
            (graph_avg - avg).abs() < 1e-3,
            "budget {budget}: report {avg}, graph {graph_avg}"
        );
        // int4 g32 costs 4 + 32/32 = 5 bits per weight: at 5 everything is int4.
        if budget == 5.0 {
            assert_eq!(stat(&r, "layers-int4"), 3, "{ns:#?}");
        }
        assert_eq!(
            stat(&r, "layers-int4") + stat(&r, "layers-int8") + kept_f32,
            3
        );
        if budget >= 6.0 {
            // Some layer got more than int4.
            assert!(stat(&r, "layers-int8") + kept_f32 > 0, "{ns:#?}");
        }
    }
}

#[test]
fn mlp_budget_below_the_scales_fails_clearly() {
    let mut g = mlp();
    let mut cx = PassContext::new().with_threads(1);
    let e = pare_pass::run_pipeline(
        &registry(),
        "quantize(budget-bits=4.5,group=32,min-elements=0)",
        &mut g,
        &mut cx,
    )
    .expect_err("int4 g32 costs 5 bits per weight");
    let m = e.to_string();
    assert!(m.contains("budget-bits=4.5 is below 5.0000"), "{m}");
}

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

/// The held-out inputs: test_data_set_2, and for image models also its copies rotated by
/// 180° and mirrored left-right (one image alone makes a noisy judge).
fn held_out(m: &Model) -> Vec<Vec<Tensor>> {
    let x = inputs(&m.graph, &m.sets[2]);
    let [t] = &x[..] else { return vec![x] };
    let sh = t.shape().to_vec();
    let (Ok(v), &[n, c, h, w]) = (t.to_vec::<f32>(), &sh[..]) else {
        return vec![x];
    };
    let map = |f: &dyn Fn(usize, usize) -> (usize, usize)| -> Vec<Tensor> {
        let mut out = vec![0f32; v.len()];
        for b in 0..n * c {
            for i in 0..h {
                for j in 0..w {
                    let (si, sj) = f(i, j);
                    out[(b * h + i) * w + j] = v[(b * h + si) * w + sj];
                }
            }
        }
        vec![Tensor::from_vec(sh.clone(), out)]
    };
    vec![
        x.clone(),
        map(&|i, j| (h - 1 - i, w - 1 - j)),
        map(&|i, j| (i, w - 1 - j)),
    ]
}

/// Squared error and squared reference norm of the float outputs.
fn sq_err(dense: &[Tensor], quant: &[Tensor]) -> (f64, f64) {
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in dense.iter().zip(quant) {
        if !a.dtype().is_float() {
            continue;
        }
        let (x, y) = (a.to_f64_vec().expect("f64"), b.to_f64_vec().expect("f64"));
        assert_eq!(x.len(), y.len());
        for (u, v) in x.iter().zip(&y) {
            num += (u - v) * (u - v);
            den += u * u;
        }
    }
    (num, den)
}

/// Quantizes with `pipeline` (calibrated on sets 0 and 1), returns the held-out error on set
/// 2, the stored bits of the quantized layers plus the f32 layers the budget kept, and the
/// report.
fn case(m: &Model, pipeline: &str, min_elements: &str) -> (f64, u64, PipelineReport) {
    let mut g = m.graph.clone();
    let mut set = SampleSet::load(&g, &m.sets[0]).unwrap_or_else(|e| panic!("{e}"));
    set.add_dir(&g, &m.sets[1])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cx = PassContext::new().with_samples(set);
    let pipeline = pipeline.replace(')', &format!(",min-elements={min_elements})"));
    let t0 = Instant::now();
    let r = pare_pass::run_pipeline(&registry(), &pipeline, &mut g, &mut cx)
        .unwrap_or_else(|e| panic!("{} {pipeline}: {e}", m.name));
    let secs = t0.elapsed().as_secs_f64();
    let (mut num, mut den) = (0f64, 0f64);
    for x in held_out(m) {
        let (n, d) = sq_err(&run(&m.graph, &x), &run(&g, &x));
        num += n;
        den += d;
    }
    let err = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    let kept: u64 = notes(&r)
        .iter()
        .filter(|n| n.contains("kept f32 by budget-bits"))
        .count() as u64;
    // Kept layers are counted by the summary's average; recompute from it for mixed runs.
    let bits = if pipeline.contains("budget-bits") {
        let params = notes(&r)
            .iter()
            .find_map(|n| {
                let at = n.find(" bits per weight over ")? + " bits per weight over ".len();
                n[at..].split_whitespace().next()?.parse::<f64>().ok()
            })
            .expect("summary");
        (achieved(&r) * params).round() as u64
    } else {
        8 * stat(&r, "weight-bytes-after")
    };
    eprintln!(
        "  {:<8} {pipeline:<48} {:>6.1} s  layers {:>2} (int8 {}, f32 {kept})  stored {:>9} \
         bytes  held-out rel L2 {err:.4e}",
        m.name,
        secs,
        stat(&r, "layers-quantized") + kept,
        stat(&r, "layers-int8"),
        bits / 8,
    );
    (err, bits, r)
}

/// The numbers after "error on <samples>: " in the summary: final, greedy, all int4.
fn sample_errors(r: &PipelineReport) -> (f64, f64, f64) {
    let n = notes(r)
        .into_iter()
        .find(|n| n.starts_with("budget-bits="))
        .expect("summary");
    let on = n.find("error on ").expect("error on");
    let colon = on + n[on..].find(": ").expect("colon");
    let nums: Vec<f64> = n[colon + 2..]
        .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';')
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// `budget-bits=5` against uniform int4 g128 and int8 per channel: stored size within one
/// bit per weight of int4's and ≤ 5 bits per weight; on the calibration samples never worse
/// than all int4 or the greedy allocation; uniform int8 at least as good held out; with
/// `must_win`, strictly better than uniform int4 held out.
fn budget_vs_uniform(name: &str, min_elements: &str, must_win: bool) {
    let Some(m) = load(name) else { return };
    let (e4, b4, r4) = case(&m, "quantize(bits=4,group=128)", min_elements);
    let (e5, b5, r5) = case(&m, "quantize(budget-bits=5)", min_elements);
    let (e8, _, _) = case(&m, "quantize(bits=8,weights-only=true)", min_elements);
    for n in notes(&r5).iter().filter(|n| n.starts_with("budget-bits")) {
        eprintln!("    {n}");
    }
    let params = stat(&r4, "params-quantized");
    assert!(params > 0, "{name}: nothing quantized");
    assert!(
        b5 <= b4 + params,
        "{name}: budget-bits=5 stores {b5} bits, uniform int4 {b4} + 1 bit × {params}"
    );
    assert!(
        b5 as f64 <= 5.0 * params as f64,
        "{name}: budget-bits=5 stores {b5} bits for {params} weights"
    );
    let (fin, greedy, all4) = sample_errors(&r5);
    assert!(
        fin <= greedy && fin <= all4,
        "{name}: on the samples {fin} vs greedy {greedy}, all int4 {all4}"
    );
    assert!(
        e8 <= e5,
        "{name}: uniform int8 held-out error {e8} is above budget-bits=5's {e5}"
    );
    if must_win {
        assert!(
            e5 < e4,
            "{name}: budget-bits=5 held-out error {e5} is not below uniform int4's {e4}"
        );
    }
}

#[test]
fn minilm_budget_bits_beats_uniform_int4() {
    budget_vs_uniform("minilm", "1024", true);
}

/// orientation (a CNN classifier; weights from 256 elements).
#[test]
fn orientation_budget_bits_beats_uniform_int4() {
    budget_vs_uniform("orientation", "256", true);
}

/// ocr-rec (CNN + small transformer, 41 layers): reported, not required to win: calibrated
/// on two single-image samples, the allocation improves the calibration error (0.531 → 0.46)
/// but not the held-out one (0.410 → 0.413 measured; see the crate notes).
#[test]
fn ocr_rec_budget_bits_sanity() {
    budget_vs_uniform("ocr-rec", "1024", false);
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

/// The mixed int4/int8 exports of MiniLM (QDQ, and MatMulNBits with int8 in blocks) run in
/// onnxruntime and agree with pare's interpreter on the quantized graph within 1e-3 of each
/// output's scale (`scripts/ort_check.py`, optimizations off: the graph as written).
#[test]
fn minilm_budget_bits_exports_run_in_onnxruntime() {
    let Some(m) = load("minilm") else { return };
    if python_with_ort().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    for (tag, pipeline) in [
        ("qdq", "quantize(budget-bits=5,generations=0)"),
        (
            "matmulnbits",
            "quantize(budget-bits=5,generations=0,format=matmulnbits)",
        ),
    ] {
        let mut g = m.graph.clone();
        let set = SampleSet::load(&g, &m.sets[0]).unwrap_or_else(|e| panic!("{e}"));
        let mut cx = PassContext::new().with_samples(set);
        let r = pare_pass::run_pipeline(&registry(), pipeline, &mut g, &mut cx)
            .unwrap_or_else(|e| panic!("{pipeline}: {e}"));
        assert!(
            stat(&r, "layers-int8") > 0 && stat(&r, "layers-int4") > 0,
            "{tag}: not mixed"
        );
        let path = dir.path().join(format!("{tag}.onnx"));
        pare_onnx::save_model(&g, &path, &Default::default()).expect("export");
        let opts = pare_onnx::ImportOptions {
            custom_ops: pare_quantize::nbits::custom_ops(),
            ..Default::default()
        };
        let back = pare_onnx::load_model(&path, &opts).unwrap_or_else(|e| panic!("{tag}: {e}"));
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
    let ok = std::process::Command::new("python3")
        .arg(root().join("scripts/ort_check.py"))
        .args(["--opt", "disable", "--rtol", "1e-3"])
        .args(&args)
        .status()
        .expect("python3 runs")
        .success();
    assert!(
        ok,
        "onnxruntime disagrees with pare's interpreter on the mixed MiniLM exports"
    );
}
