//! The five passes on the real models in `.cache/models` (fetched by
//! `scripts/fetch_models.py`): the node count must not grow and the interpreter's outputs on
//! `tests/models/<name>/test_data_set_0` must match the original graph's within
//! 1e-5 × max(1, max|ref|). Skipped, with a note, when the models are absent.

use pare_interp::Interpreter;
use pare_ir::{Graph, Tensor};
use pare_pass::{PassContext, Registry};
use std::path::{Path, PathBuf};

const PIPELINE: &str = "fold-constants,fold-shapes,fold-constants,dce,cse,simplify-layout,dce";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn inputs(dir: &Path) -> Vec<Tensor> {
    let mut out = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("input_{k}.pb"));
        if !p.is_file() {
            break;
        }
        let (_, t) = pare_onnx::read_tensor_pb(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        out.push(t);
    }
    out
}

/// Largest |a - b| and largest |a| over two outputs (integers and booleans compared as f64).
fn diff(a: &Tensor, b: &Tensor) -> Result<(f64, f64), String> {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return Err(format!(
            "{}{:?} vs {}{:?}",
            a.dtype(),
            a.shape(),
            b.dtype(),
            b.shape()
        ));
    }
    let (Some(x), Some(y)) = (a.to_f64_vec(), b.to_f64_vec()) else {
        return if a == b {
            Ok((0.0, 0.0))
        } else {
            Err("non-numeric outputs differ".into())
        };
    };
    let mut worst = 0f64;
    let mut scale = 0f64;
    for (p, q) in x.iter().zip(&y) {
        scale = scale.max(p.abs());
        let d = if p.is_nan() && q.is_nan() {
            0.0
        } else {
            (p - q).abs()
        };
        worst = worst.max(if d.is_nan() { f64::INFINITY } else { d });
    }
    Ok((worst, scale))
}

fn check_model(reg: &Registry, name: &str, path: &Path, data: &Path) {
    let model = pare_onnx::load_model(path, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: loading: {e}"));
    let original: Graph = model.graph;
    let mut g = original.clone();
    let before = original.num_nodes();
    let report = pare_pass::run_pipeline(reg, PIPELINE, &mut g, &mut PassContext::new())
        .unwrap_or_else(|e| panic!("{name}: pipeline: {e}"));
    let after = g.num_nodes();
    let consts_before = original.constants().count();
    let consts_after = g.constants().count();
    let stats: Vec<String> = report
        .steps
        .iter()
        .flat_map(|s| {
            s.stats
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(move |(k, v)| format!("{}.{k}={v}", s.name))
        })
        .collect();
    eprintln!(
        "{name}: nodes {before} -> {after}, constants {consts_before} -> {consts_after}; {}",
        stats.join(" ")
    );
    if let Ok(dir) = std::env::var("PARE_DUMP_DIR") {
        // Debugging aid: the IR before and after, constants elided.
        let opts = pare_ir::PrintOptions {
            elide_constants_above: Some(16),
        };
        let dir = Path::new(&dir);
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(
            dir.join(format!("{name}.before.ir")),
            pare_ir::print_graph(&original, &opts),
        );
        let _ = std::fs::write(
            dir.join(format!("{name}.after.ir")),
            pare_ir::print_graph(&g, &opts),
        );
    }
    assert!(
        after <= before,
        "{name}: node count grew {before} -> {after}"
    );
    // Same interface.
    assert_eq!(original.inputs().len(), g.inputs().len(), "{name}: inputs");
    let names = |g: &Graph| -> Vec<String> {
        g.outputs()
            .iter()
            .map(|&v| g.value(v).name.clone())
            .collect()
    };
    assert_eq!(names(&original), names(&g), "{name}: output names");
    // A second run finds nothing left to do (the `canonicalize` pipeline runs to a fixpoint).
    let mut again = g.clone();
    let r2 = pare_pass::run_pipeline(reg, PIPELINE, &mut again, &mut PassContext::new())
        .unwrap_or_else(|e| panic!("{name}: second run: {e}"));
    let changed: Vec<&str> = r2
        .steps
        .iter()
        .filter(|s| s.changed)
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        changed.is_empty(),
        "{name}: a second run still changed the graph: {changed:?}"
    );
    // Export and re-import: same output names, no unused initializers.
    let proto = pare_onnx::to_model_proto(&g, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: export: {e}"));
    let bytes = bytes::Bytes::from(prost::Message::encode_to_vec(&proto));
    let reloaded = pare_onnx::load_model_from_bytes(bytes, None, path, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: re-import: {e}"))
        .graph;
    assert_eq!(
        names(&original),
        names(&reloaded),
        "{name}: exported output names"
    );
    assert_eq!(
        reloaded.constants().count(),
        g.constants().count(),
        "{name}: exported initializers"
    );
    let xs = inputs(data);
    assert!(!xs.is_empty(), "{name}: no inputs in {}", data.display());
    let it = Interpreter::new();
    let want = it
        .run(&original, &xs)
        .unwrap_or_else(|e| panic!("{name}: original: {e}"));
    let got = it
        .run(&g, &xs)
        .unwrap_or_else(|e| panic!("{name}: transformed: {e}"));
    let got2 = it
        .run(&reloaded, &xs)
        .unwrap_or_else(|e| panic!("{name}: exported and re-imported: {e}"));
    assert_eq!(want.len(), got.len(), "{name}: output count");
    assert_eq!(want.len(), got2.len(), "{name}: output count after export");
    let pairs = want.iter().zip(&got).chain(want.iter().zip(&got2));
    for (k, (w, o)) in pairs.enumerate() {
        let (i, what) = if k < want.len() {
            (k, "transformed")
        } else {
            (k - want.len(), "exported")
        };
        let (err, scale) = diff(w, o).unwrap_or_else(|e| panic!("{name}: {what} output {i}: {e}"));
        let tol = 1e-5 * scale.max(1.0);
        eprintln!("  {what} output {i}: max abs err {err:.3e} (tolerance {tol:.3e})");
        assert!(
            err <= tol,
            "{name}: {what} output {i} differs by {err:e} > {tol:e}"
        );
    }
}

#[test]
fn real_models_keep_their_outputs() {
    let models = root().join(".cache/models");
    if !models.is_dir() {
        eprintln!(
            "note: {} is absent (run scripts/fetch_models.py); skipping",
            models.display()
        );
        return;
    }
    let mut reg = Registry::new();
    pare_canonicalize::register(&mut reg);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&models)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    let mut ran = 0;
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let data = root()
            .join("tests/models")
            .join(name)
            .join("test_data_set_0");
        if !data.is_dir() {
            eprintln!("note: {name}: no {} ; skipping", data.display());
            continue;
        }
        check_model(&reg, name, &path, &data);
        ran += 1;
    }
    eprintln!("{ran} real models checked");
}
