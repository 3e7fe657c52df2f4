//! The fusion passes on the real models (`scripts/fetch_models.py` → .cache/models; inputs in
//! tests/models/<name>/test_data_set_0): how many rewrites each pass makes on each model, and
//! the interpreter's outputs after the whole fusion pipeline against the original graph's
//! (within 1e-5 of each output's scale, or within the original graph's own distance from
//! onnxruntime's fixture when that is larger; integers exactly). Models that are not fetched are
//! skipped with a note.

use pare_pass::{run_pipeline, PassContext, Registry};
use pare_tests::{compare, read_data_set, repo_root};
use std::collections::BTreeMap;

const PASSES: [&str; 5] = [
    "fold-batchnorm",
    "fuse-gemm",
    "fuse-layernorm",
    "fuse-gelu",
    "fuse-attention",
];

fn registry() -> Registry {
    let mut reg = Registry::new();
    pare_fuse::register(&mut reg);
    reg
}

fn model_names() -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/models/models.json"))
            .expect("tests/models/models.json"),
    )
    .expect("valid models.json");
    manifest["models"]
        .as_array()
        .expect("models array")
        .iter()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect()
}

/// Rewrites per pass (each pass alone on the imported graph), by the pass's first counter.
fn counts(reg: &Registry, g: &pare_ir::Graph) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for p in PASSES {
        let mut h = g.clone();
        let r = run_pipeline(reg, p, &mut h, &mut PassContext::new())
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        let n: u64 = r
            .steps
            .iter()
            .flat_map(|s| s.stats.iter())
            .filter(|(k, _)| k.as_str() != "with-mask")
            .map(|(_, v)| *v)
            .sum();
        out.insert(p, n);
    }
    out
}

fn count_ops(g: &pare_ir::Graph, name: &str) -> usize {
    g.node_ids()
        .filter(|&n| g.node(n).op.name() == name)
        .count()
}

#[test]
fn fusions_on_real_models() {
    let reg = registry();
    let root = repo_root();
    let mut ran = 0;
    // Fusions each model must get (the rest of the table is printed, not asserted).
    let expected: BTreeMap<&str, Vec<(&str, u64)>> = [
        ("minilm", vec![("fuse-attention", 3), ("fuse-gelu", 3)]),
        (
            "ocr-rec",
            vec![
                ("fuse-attention", 2),
                ("fuse-layernorm", 5),
                ("fold-batchnorm", 6),
            ],
        ),
        ("ocr-cls", vec![("fold-batchnorm", 35), ("fuse-gemm", 1)]),
        ("ocr-det", vec![("fold-batchnorm", 3)]),
        (
            "orientation",
            vec![("fold-batchnorm", 27), ("fuse-gemm", 1)],
        ),
    ]
    .into_iter()
    .collect();
    for name in model_names() {
        let path = root.join(".cache/models").join(format!("{name}.onnx"));
        let ds = root
            .join("tests/models")
            .join(&name)
            .join("test_data_set_0");
        if !path.is_file() || !ds.is_dir() {
            eprintln!("{name}: skipped ({} not fetched)", path.display());
            continue;
        }
        let model = pare_onnx::load_model(&path, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = model.graph;
        let c = counts(&reg, &g);
        let mut fused = g.clone();
        let pipeline = PASSES.join(",");
        run_pipeline(&reg, &pipeline, &mut fused, &mut PassContext::new())
            .unwrap_or_else(|e| panic!("{name}: {pipeline}: {e}"));
        let inputs: Vec<_> = read_data_set(&ds, "input_")
            .expect("inputs")
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let interp = pare_interp::Interpreter::new();
        let before = interp
            .run(&g, &inputs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let after = interp
            .run(&fused, &inputs)
            .unwrap_or_else(|e| panic!("{name} after fusion: {e}"));
        assert_eq!(before.len(), after.len());
        // How far each graph is from onnxruntime's fixture (for scale: the interpreter's own
        // float rounding against another runtime).
        let expected_out = read_data_set(&ds, "output_").expect("outputs");
        let vs_ort = |outs: &[pare_ir::Tensor]| -> f64 {
            let mut w = 0f64;
            for ((_, e), t) in expected_out.iter().zip(outs) {
                if !e.dtype().is_float() {
                    continue;
                }
                let scale = e
                    .to_f64_vec()
                    .map(|v| v.iter().fold(0f64, |m, x| m.max(x.abs())))
                    .unwrap_or(1.0)
                    .max(1e-6);
                if let Ok(a) = compare(e, t, 0.0, f64::INFINITY) {
                    w = w.max(a.max_abs / scale);
                }
            }
            w
        };
        let (ort_before, ort_after) = (vs_ort(&before), vs_ort(&after));
        let mut worst = 0f64;
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            let scale = b
                .to_f64_vec()
                .map(|v| {
                    v.iter()
                        .filter(|x| x.is_finite())
                        .fold(0f64, |m, x| m.max(x.abs()))
                })
                .unwrap_or(1.0)
                .max(1e-6);
            // 1e-5 of the output's scale, or the interpreter's own distance from onnxruntime
            // when that is larger (rounding noise that deep convolutional stacks amplify).
            let tol = if b.dtype().is_float() {
                1e-5f64.max(ort_before) * scale
            } else {
                0.0
            };
            let ag = compare(b, a, 0.0, tol).unwrap_or_else(|m| {
                panic!(
                    "{name} output {i} after fusion: {m} (vs onnxruntime: {ort_before:.2e} before, \
                     {ort_after:.2e} after)"
                )
            });
            worst = worst.max(ag.max_abs / scale);
        }
        eprintln!(
            "{name:<26} {}  nodes {} -> {}  max|err|/scale {worst:.2e} (vs onnxruntime {ort_before:.2e} -> {ort_after:.2e})",
            PASSES
                .iter()
                .map(|p| format!("{p}={}", c[p]))
                .collect::<Vec<_>>()
                .join(" "),
            g.num_nodes(),
            fused.num_nodes()
        );
        if let Some(exp) = expected.get(name.as_str()) {
            for (p, n) in exp {
                assert_eq!(c[p], *n, "{name}: {p} rewrites");
            }
        }
        if name == "minilm" {
            assert_eq!(count_ops(&fused, "Attention"), 3);
            assert_eq!(count_ops(&fused, "Softmax"), 0);
        }
        ran += 1;
    }
    eprintln!("{ran} models checked");
}

/// `PARE_DUMP=<model> cargo test -p pare-fuse --test real_models dump -- --ignored`: prints the
/// imported IR (constants elided), for writing patterns.
#[test]
#[ignore]
fn dump() {
    let Ok(name) = std::env::var("PARE_DUMP") else {
        return;
    };
    let path = repo_root()
        .join(".cache/models")
        .join(format!("{name}.onnx"));
    let model = pare_onnx::load_model(&path, &Default::default()).expect("model");
    let opts = pare_ir::PrintOptions {
        elide_constants_above: Some(16),
    };
    println!("{}", pare_ir::print_graph(&model.graph, &opts));
}
