//! `fold-if` on the Silero VAD models in `.cache/models` (fetched by
//! `scripts/fetch_models.py`): with the `sr` input replaced by the constant 16000 (the value
//! of `tests/models/<name>/test_data_set_0`), a `canonicalize`-like fixpoint of this crate's
//! passes removes the If nodes that select on the sample rate, and the interpreter's outputs
//! match the original model's on the fixture within 1e-5 × max(1, max|ref|). Skipped, with a
//! note, when the models are absent.

use pare_interp::Interpreter;
use pare_ir::{Graph, Op, Tensor};
use pare_pass::{PassContext, Registry};
use std::path::{Path, PathBuf};

/// The exact steps of `canonicalize` that live in this crate, run to a fixpoint.
const PIPELINE: &str = "fold-constants,fold-if,fold-shapes,dce,cse,simplify-layout,dce";

/// (model, whether every If must be gone after `sr` = 16000).
const MODELS: &[(&str, bool)] = &[
    ("silero-vad", false),
    ("silero-vad-16k-op15", false),
    ("silero-vad-half", false),
    ("silero-vad-op18-ifless", true),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    pare_canonicalize::register(&mut reg);
    reg.register_pipeline("canon", "test fixpoint", PIPELINE, true);
    reg
}

/// If nodes in `g` and, recursively, in its subgraphs.
fn count_ifs(g: &Graph) -> usize {
    g.node_ids()
        .map(|n| {
            let op = &g.node(n).op;
            usize::from(matches!(op, Op::If(_)))
                + op.subgraphs().into_iter().map(count_ifs).sum::<usize>()
        })
        .sum()
}

/// The `ifs-folded` counter of a step and of its sub-steps.
fn ifs_folded(s: &pare_pass::StepReport) -> u64 {
    s.stats.get("ifs-folded").copied().unwrap_or(0) + s.steps.iter().map(ifs_folded).sum::<u64>()
}

/// For each If left in `g` (subgraphs included): where it is and what its condition is.
fn describe_ifs(g: &Graph, depth: usize, out: &mut Vec<String>) {
    for n in g.node_ids() {
        let node = g.node(n);
        if matches!(node.op, Op::If(_)) {
            let cond = node
                .input(0)
                .map_or("-".to_string(), |c| match g.producer(c) {
                    Some(p) => format!("{}({})", g.node(p).op.name(), g.value(c).name),
                    None if g.constant(c).is_some() => "constant".to_string(),
                    None => format!("input {}", g.value(c).name),
                });
            out.push(format!("depth {depth} '{}' cond {cond}", node.name));
        }
        for sg in node.op.subgraphs() {
            describe_ifs(sg, depth + 1, out);
        }
    }
}

/// The fixture's inputs, named.
fn inputs(dir: &Path) -> Vec<(String, Tensor)> {
    (0..)
        .map(|k| dir.join(format!("input_{k}.pb")))
        .take_while(|p| p.is_file())
        .map(|p| pare_onnx::read_tensor_pb(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Replaces graph input `name` by a constant holding `t`; returns whether it had one.
fn bind_input(g: &mut Graph, name: &str, t: Tensor) -> bool {
    let Some(k) = g.inputs().iter().position(|&v| g.value(v).name == name) else {
        return false;
    };
    let v = g.inputs()[k];
    let c = g.add_const(format!("{name}_const"), t);
    g.replace_all_uses(v, c);
    assert!(g.remove_unused_input(k), "input {name} still read");
    g.set_name(c, name);
    true
}

fn max_err(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.dtype(), b.dtype());
    assert_eq!(a.shape(), b.shape());
    let (x, y) = (
        a.to_f64_vec().expect("numeric"),
        b.to_f64_vec().expect("numeric"),
    );
    x.iter().zip(&y).fold((0f64, 0f64), |(e, s), (p, q)| {
        let d = (p - q).abs();
        (
            e.max(if d.is_nan() { f64::INFINITY } else { d }),
            s.max(p.abs()),
        )
    })
}

#[test]
fn constant_sample_rate_removes_the_ifs() {
    let models = root().join(".cache/models");
    let reg = registry();
    let mut ran = 0;
    for &(name, all_gone) in MODELS {
        let path = models.join(format!("{name}.onnx"));
        let data = root().join(format!("tests/models/{name}/test_data_set_0"));
        if !path.is_file() || !data.is_dir() {
            eprintln!("note: {name}: model or fixture absent; skipping");
            continue;
        }
        let original = pare_onnx::load_model(&path, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: loading: {e}"))
            .graph;
        let xs = inputs(&data);
        let input_names: Vec<String> = original
            .inputs()
            .iter()
            .map(|&v| original.value(v).name.clone())
            .collect();
        assert_eq!(xs.len(), input_names.len(), "{name}: fixture inputs");
        let mut g = original.clone();
        let mut kept = Vec::new();
        for ((pb_name, t), in_name) in xs.iter().zip(&input_names) {
            assert!(
                pb_name.is_empty() || pb_name == in_name,
                "{name}: {pb_name}"
            );
            if in_name == "sr" {
                assert_eq!(t.to_i64_vec(), Some(vec![16000]), "{name}: fixture sr");
                assert!(bind_input(&mut g, "sr", t.clone()));
            } else {
                kept.push(t.clone());
            }
        }
        let before = count_ifs(&original);
        let report = pare_pass::run_pipeline(&reg, "canon", &mut g, &mut PassContext::new())
            .unwrap_or_else(|e| panic!("{name}: pipeline: {e}"));
        let folded: u64 = report.steps.iter().map(ifs_folded).sum();
        let after = count_ifs(&g);
        eprintln!(
            "{name}: sr input {}, If nodes {before} -> {after} ({folded} folded), nodes {} -> {}",
            if kept.len() < xs.len() {
                "bound to 16000"
            } else {
                "absent"
            },
            original.num_nodes(),
            g.num_nodes()
        );
        let mut left = Vec::new();
        describe_ifs(&g, 0, &mut left);
        for l in &left {
            eprintln!("  left: {l}");
        }
        if all_gone {
            assert_eq!(after, 0, "{name}: If nodes left");
            assert!(folded > 0, "{name}: nothing folded");
        }
        let it = Interpreter::new();
        let all: Vec<Tensor> = xs.iter().map(|(_, t)| t.clone()).collect();
        let want = it
            .run(&original, &all)
            .unwrap_or_else(|e| panic!("{name}: original: {e}"));
        let got = it
            .run(&g, &kept)
            .unwrap_or_else(|e| panic!("{name}: transformed: {e}"));
        assert_eq!(want.len(), got.len(), "{name}: output count");
        for (i, (w, o)) in want.iter().zip(&got).enumerate() {
            let (err, scale) = max_err(w, o);
            let tol = 1e-5 * scale.max(1.0);
            eprintln!("  output {i}: max abs err {err:.3e} (tolerance {tol:.3e})");
            assert!(err <= tol, "{name}: output {i} differs by {err:e}");
        }
        ran += 1;
    }
    eprintln!("{ran} models checked");
}
