//! Real models from PyPI wheels (`scripts/fetch_models.py`; fixtures from onnxruntime in
//! tests/models/<name>/test_data_set_*): each imports, runs in the interpreter and matches
//! onnxruntime within 1e-4 of the output's scale (integers exactly), and again after an
//! export → re-import round trip. The exported models must also run in onnxruntime itself.

use pare_tests::{cases, check_fixtures, repo_root};
use prost::Message;
use std::time::Instant;

#[test]
fn real_models_match_onnxruntime() {
    for c in cases() {
        let t0 = Instant::now();
        let model =
            pare_onnx::load_model(&c.model, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let import_s = t0.elapsed().as_secs_f64();
        let (rel, cos, run_s) = check_fixtures(&c.name, &model.graph, &c.fixtures);
        let proto = pare_onnx::to_model_proto(&model.graph, &Default::default()).expect("export");
        let again = pare_onnx::load_model_from_bytes(
            proto.encode_to_vec().into(),
            None,
            &c.model,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{}: re-import after export: {e}", c.name));
        let (rel2, cos2, _) = check_fixtures(&c.name, &again.graph, &c.fixtures);
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
