//! Shared helpers for pare's cross-crate tests: locating fixtures, reading ONNX test data
//! sets, and comparing tensors.

use pare_ir::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `<prefix>K.pb` tensors of a test_data_set directory, in K order.
pub fn read_data_set(dir: &Path, prefix: &str) -> Result<Vec<(String, Tensor)>, String> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("")
            .to_string();
        if let Some(k) = name
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(".pb"))
            .and_then(|s| s.parse().ok())
        {
            files.push((k, p));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| pare_onnx::read_tensor_pb(&p).map_err(|e| e.to_string()))
        .collect()
}

/// Test-data-set directories under `dir`, sorted.
pub fn data_set_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|f| f.to_str())
                            .is_some_and(|f| f.starts_with("test_data_set"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Agreement statistics between a reference and a result.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agreement {
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest |reference| (the output's scale).
    pub scale: f64,
    /// Cosine similarity (1 for identical; 1 when both are zero).
    pub cosine: f64,
}

/// Compares element by element: `|a - b| <= atol + rtol * |b|` for floats (NaN matches NaN,
/// infinities must match exactly), exact equality for integers, booleans and strings.
pub fn compare(expected: &Tensor, got: &Tensor, rtol: f64, atol: f64) -> Result<Agreement, String> {
    if expected.dtype() != got.dtype() {
        return Err(format!(
            "dtype {} expected, got {}",
            expected.dtype(),
            got.dtype()
        ));
    }
    if expected.shape() != got.shape() {
        return Err(format!(
            "shape {:?} expected, got {:?}",
            expected.shape(),
            got.shape()
        ));
    }
    if expected.dtype() == DType::String {
        return if expected.strings() == got.strings() {
            Ok(Agreement {
                cosine: 1.0,
                ..Default::default()
            })
        } else {
            Err("strings differ".into())
        };
    }
    let (Some(e), Some(g)) = (expected.to_f64_vec(), got.to_f64_vec()) else {
        // Packed and 8-bit float types: compare bytes.
        return if expected.raw() == got.raw() {
            Ok(Agreement {
                cosine: 1.0,
                ..Default::default()
            })
        } else {
            Err("bytes differ".into())
        };
    };
    let exact = !expected.dtype().is_float();
    let mut a = Agreement::default();
    let (mut dot, mut ne, mut ng) = (0f64, 0f64, 0f64);
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&x, &y)) in e.iter().zip(&g).enumerate() {
        if x.is_nan() || y.is_nan() {
            if x.is_nan() != y.is_nan() {
                worst.get_or_insert((i, x, y));
            }
            continue;
        }
        if x.is_infinite() || y.is_infinite() {
            if x != y {
                worst.get_or_insert((i, x, y));
            }
            continue;
        }
        let d = (x - y).abs();
        a.max_abs = a.max_abs.max(d);
        a.scale = a.scale.max(x.abs());
        dot += x * y;
        ne += x * x;
        ng += y * y;
        let bad = if exact {
            x != y
        } else {
            d > atol + rtol * x.abs()
        };
        if bad && worst.is_none() {
            worst = Some((i, x, y));
        }
    }
    a.cosine = if ne == 0.0 && ng == 0.0 {
        1.0
    } else {
        dot / (ne.sqrt() * ng.sqrt()).max(f64::MIN_POSITIVE)
    };
    match worst {
        Some((i, x, y)) => Err(format!(
            "element {i}: expected {x}, got {y} (max abs diff {:.3e})",
            a.max_abs
        )),
        None => Ok(a),
    }
}

/// A real model and its onnxruntime fixtures.
pub struct Case {
    /// Name in tests/models/models.json.
    pub name: String,
    /// The ONNX file under .cache/models.
    pub model: PathBuf,
    /// tests/models/<name>, holding test_data_set_N directories.
    pub fixtures: PathBuf,
}

/// Every real model of the manifest (panics with a hint when one is not fetched).
pub fn cases() -> Vec<Case> {
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

/// Runs every fixture of a graph in the interpreter and checks it within 1e-4 of each output's
/// scale (integers exactly); returns (worst max-abs / scale, worst cosine, seconds per run).
pub fn check_fixtures(
    name: &str,
    g: &pare_ir::Graph,
    fixtures: &std::path::Path,
) -> (f64, f64, f64) {
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
