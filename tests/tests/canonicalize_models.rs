//! `canonicalize` on every real model: the pipeline runs with verify-each, the node count does
//! not grow, the interpreter still matches the onnxruntime fixtures, and onnxruntime runs the
//! exported canonicalized model with outputs equal to its outputs on the original model within
//! 1e-5 relative (L2 over each output; largest elementwise error within 5e-5 of the output's
//! scale), by `scripts/ort_compare.py` with the same session options for both.

use pare_pass::{run_pipeline, PassContext};
use pare_tests::{cases, check_fixtures, repo_root};
use std::time::Instant;

#[test]
fn canonicalized_real_models_run_in_onnxruntime_unchanged() {
    let registry = pare_passes::registry();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--rtol".to_string(), "1e-5".to_string()];
    let mut table = String::new();
    for c in cases() {
        let mut g = pare_onnx::load_model(&c.model, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .graph;
        let before = g.num_nodes();
        let t = Instant::now();
        let report = run_pipeline(&registry, "canonicalize", &mut g, &mut PassContext::new())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let after = g.num_nodes();
        assert!(
            after <= before,
            "{}: canonicalize grew the graph {before} -> {after}",
            c.name
        );
        assert_eq!(report.after.nodes, after);
        let changes: Vec<String> = report.steps[0]
            .stats
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        table.push_str(&format!(
            "{:<26} nodes {before:>5} -> {after:<5} {ms:>8.1} ms  {}\n",
            c.name,
            changes.join(" ")
        ));
        // The interpreter on the canonicalized graph still matches onnxruntime's fixtures.
        let (rel, _, _) = check_fixtures(&c.name, &g, &c.fixtures);
        table.push_str(&format!(
            "{:<26} interpreter max|err|/scale {rel:.1e}\n",
            ""
        ));
        let out = dir.path().join(format!("{}.onnx", c.name));
        pare_onnx::save_model(&g, &out, &Default::default()).expect("save");
        args.push(format!(
            "{}={}={}",
            c.model.display(),
            out.display(),
            c.fixtures.display()
        ));
    }
    eprint!("{table}");
    let status = std::process::Command::new("python3")
        .arg(repo_root().join("scripts/ort_compare.py"))
        .args(&args)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "onnxruntime's outputs on a canonicalized model differ from the original's by more than 1e-5"
    );
}
