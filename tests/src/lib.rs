//! Shared helpers for pare's cross-crate tests: locating fixtures, reading ONNX test data
//! sets, and comparing tensors.

use pare_ir::{DType, Tensor};
use std::path::{Path, PathBuf};

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
