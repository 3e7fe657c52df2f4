//! The out-of-tree pass runs through the pipeline syntax, next to built-in passes.

use pare_ir::parse_graph;
use pare_pass::{run_pipeline, PassContext};

const MLP: &str = "graph @mlp(%x: f32[4,8]) -> (%y) {
  %w1 = const f32[8,4] [0.9, -0.01, 0.3, 0.02, -0.5, 0.7, -0.03, 0.04, 0.05, -0.6, 0.8, -0.06, 0.07, 0.08, -0.9, 0.1, 0.6, -0.2, 0.01, 0.5, -0.7, 0.03, 0.4, -0.02, 0.2, 0.06, -0.8, 0.09, -0.04, 0.3, 0.05, -0.4]
  %h = MatMul(%x, %w1) : f32[4,4]
  %r = Relu(%h) : f32[4,4]
  %w2 = const f32[4,2] [0.5, -0.02, 0.01, 0.8, -0.6, 0.03, 0.04, -0.7]
  %y = MatMul(%r, %w2) : f32[4,2]
}";

fn zeros(g: &pare_ir::Graph) -> usize {
    g.constants()
        .filter(|(v, _)| !g.uses(*v).is_empty())
        .map(|(_, t)| {
            t.to_vec::<f32>()
                .unwrap()
                .iter()
                .filter(|x| **x == 0.0)
                .count()
        })
        .sum()
}

#[test]
fn prunes_through_the_pipeline_syntax() {
    let reg = custom_pass::registry();
    let mut g = parse_graph(MLP).unwrap();
    let original = g.clone();
    let report = run_pipeline(
        &reg,
        "magnitude-prune(sparsity=0.5)",
        &mut g,
        &mut PassContext::new(),
    )
    .unwrap();
    assert_eq!(report.steps[0].stats["weights-zeroed"], 16 + 4);
    assert_eq!(zeros(&g), 20);
    // Half of the weights are gone; small ones only, so the outputs move but stay close.
    let x = pare_ir::Tensor::from_vec(
        vec![4, 8],
        (0..32).map(|i| (i as f32 * 0.37).sin()).collect(),
    );
    let interp = pare_interp::Interpreter::new();
    let a = interp.run(&original, std::slice::from_ref(&x)).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let b = interp.run(&g, &[x]).unwrap()[0].to_vec::<f32>().unwrap();
    let err = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    let scale = a.iter().map(|p| p.abs()).fold(0.0f32, f32::max);
    assert!(err > 0.0 && err < 0.5 * scale, "err {err} scale {scale}");
}

#[test]
fn bad_options_are_rejected_with_the_valid_ones() {
    let reg = custom_pass::registry();
    let mut g = parse_graph(MLP).unwrap();
    let e = run_pipeline(
        &reg,
        "magnitude-prune(ratio=0.5)",
        &mut g,
        &mut PassContext::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown option 'ratio'") && e.contains("sparsity (float)"),
        "{e}"
    );
    let e = run_pipeline(
        &reg,
        "magnitude-prune(sparsity=1.5)",
        &mut g,
        &mut PassContext::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sparsity must be in [0, 1)"), "{e}");
}

#[test]
fn filetests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests");
    let (n, failures, _) = pare_pass::filetest::run_dir(&custom_pass::registry(), &dir);
    for (f, e) in &failures {
        eprintln!("FAIL {}: {e}", f.display());
    }
    assert!(n > 0 && failures.is_empty());
}
