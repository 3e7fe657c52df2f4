//! Real models from PyPI wheels (`scripts/fetch_models.py`; fixtures from onnxruntime in
//! tests/models/<name>/test_data_set_*): each imports, runs in the interpreter and matches
//! onnxruntime within 1e-4 of the output's scale (integers exactly), and again after an
//! export → re-import round trip. The exported models must also run in onnxruntime itself.

use pare_tests::{compare, data_set_dirs, read_data_set, repo_root};
use prost::Message;
use std::path::PathBuf;
use std::time::Instant;

struct Case {
    name: String,
    model: PathBuf,
    fixtures: PathBuf,
}

fn cases() -> Vec<Case> {
    let root = repo_root();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/models/models.json")).expect("models.json"),
    )
    .expect("valid models.json");
    manifest["models"]
        .as_array()
        .expect("models array")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("name").to_string();
            let model = root.join(".cache/models").join(format!("{name}.onnx"));
            assert!(
                model.is_file(),
                "{} is missing: run python3 scripts/fetch_models.py",
                model.display()
            );
            Case {
                fixtures: root.join("tests/models").join(&name),
                model,
                name,
            }
        })
        .collect()
}

/// Runs every fixture of a graph; returns (worst max-abs / scale, worst cosine, seconds per run).
fn check(name: &str, g: &pare_ir::Graph, fixtures: &std::path::Path) -> (f64, f64, f64) {
    let interp = pare_interp::Interpreter::new();
    let (mut worst_rel, mut worst_cos, mut secs) = (0f64, 1f64, 0f64);
    let sets = data_set_dirs(fixtures);
    assert!(
        !sets.is_empty(),
        "{name}: no fixtures in {}",
        fixtures.display()
    );
    for d in &sets {
        let inputs: Vec<_> = read_data_set(d, "input_")
            .expect("inputs")
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        let expected = read_data_set(d, "output_").expect("outputs");
        let t0 = Instant::now();
        let got = interp
            .run(g, &inputs)
            .unwrap_or_else(|e| panic!("{name} {}: {e}", d.display()));
        secs += t0.elapsed().as_secs_f64();
        assert_eq!(got.len(), expected.len(), "{name}: output count");
        for ((oname, e), t) in expected.iter().zip(&got) {
            let tol = if e.dtype().is_float() { 1e-4 } else { 0.0 };
            // Absolute bound scaled by the output's magnitude.
            let scale = e
                .to_f64_vec()
                .map(|v| v.iter().fold(0f64, |m, x| m.max(x.abs())))
                .unwrap_or(1.0)
                .max(1e-6);
            let a = compare(e, t, 0.0, tol * scale)
                .unwrap_or_else(|m| panic!("{name} {} output '{oname}': {m}", d.display()));
            worst_rel = worst_rel.max(a.max_abs / scale);
            worst_cos = worst_cos.min(a.cosine);
        }
    }
    (worst_rel, worst_cos, secs / sets.len() as f64)
}

#[test]
fn real_models_match_onnxruntime() {
    for c in cases() {
        let t0 = Instant::now();
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let import_s = t0.elapsed().as_secs_f64();
        let (rel, cos, run_s) = check(&c.name, &model.graph, &c.fixtures);
        let proto = pare_onnx::to_model_proto(&model.graph, &Default::default()).expect("export");
        let again = pare_onnx::load_model_from_bytes(
            proto.encode_to_vec().into(),
            None,
            &c.model,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{}: re-import after export: {e}", c.name));
        let (rel2, cos2, _) = check(&c.name, &again.graph, &c.fixtures);
        eprintln!(
            "{:<26} import {:>7.1} ms  run {:>8.1} ms  max|err|/scale {rel:.2e} cos {cos:.7}  round trip {rel2:.2e} cos {cos2:.7}",
            c.name,
            import_s * 1e3,
            run_s * 1e3
        );
    }
}

#[test]
fn exported_models_run_in_onnxruntime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = Vec::new();
    for c in cases() {
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join(format!("{}.onnx", c.name));
        pare_onnx::save_model(&model.graph, &out, &Default::default()).expect("save");
        args.push(format!("{}={}", out.display(), c.fixtures.display()));
    }
    let script = repo_root().join("scripts/ort_check.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .args(&args)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "onnxruntime did not reproduce the fixtures from pare's exported models"
    );
}
