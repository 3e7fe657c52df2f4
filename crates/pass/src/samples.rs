//! Sample inputs for calibration and evaluation: ONNX `test_data_set_N` directories
//! (`input_K.pb`) or directories of `<input name>.npy` files, one directory per sample.

use crate::PassError;
use pare_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};

/// One sample: a tensor per graph input, in graph input order.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Where it was loaded from.
    pub origin: PathBuf,
    /// One tensor per graph input.
    pub inputs: Vec<Tensor>,
}

/// A set of samples for one graph.
#[derive(Clone, Debug, Default)]
pub struct SampleSet {
    /// Graph input names, in order.
    pub input_names: Vec<String>,
    /// The samples.
    pub samples: Vec<Sample>,
}

fn data_err(path: &Path, message: impl Into<String>) -> PassError {
    PassError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a `.npy` or ONNX `.pb` tensor; the name is the `.pb` tensor's name, if it has one.
pub fn read_tensor(path: &Path) -> Result<(Option<String>, Tensor), PassError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let data = std::fs::read(path).map_err(|e| data_err(path, e.to_string()))?;
            let t = pare_ir::npy::from_npy(&data).map_err(|e| data_err(path, e.to_string()))?;
            Ok((None, t))
        }
        Some("pb") => {
            let (name, t) =
                pare_onnx::read_tensor_pb(path).map_err(|e| data_err(path, e.to_string()))?;
            Ok(((!name.is_empty()).then_some(name), t))
        }
        _ => Err(data_err(
            path,
            "expected a .npy or .pb file, or a test_data_set directory",
        )),
    }
}

/// The `<prefix>K.pb` files of a test_data_set directory, in K order.
pub fn data_set_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, PassError> {
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| data_err(dir, e.to_string()))?;
    for e in rd {
        let p = e.map_err(|e| data_err(dir, e.to_string()))?.path();
        let Some(stem) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if let Some(k) = stem
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(".pb"))
            .and_then(|s| s.parse().ok())
        {
            files.push((k, p));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn input_names(g: &Graph) -> Vec<String> {
    g.inputs()
        .iter()
        .map(|&v| g.value(v).name.clone())
        .collect()
}

/// Loads one sample directory: `input_K.pb` files (by tensor name when it names an input,
/// else by position) or `<input name>.npy` files.
pub fn load_sample(g: &Graph, dir: &Path) -> Result<Sample, PassError> {
    let names = input_names(g);
    let mut slots: Vec<Option<Tensor>> = vec![None; names.len()];
    let pbs = data_set_files(dir, "input_")?;
    if !pbs.is_empty() {
        let mut next = 0usize;
        for f in pbs {
            let (name, t) = read_tensor(&f)?;
            let idx = match name.and_then(|n| names.iter().position(|x| *x == n)) {
                Some(i) => i,
                None => {
                    while next < slots.len() && slots[next].is_some() {
                        next += 1;
                    }
                    if next >= slots.len() {
                        return Err(data_err(
                            &f,
                            format!("more inputs than the model has ({})", names.len()),
                        ));
                    }
                    next
                }
            };
            slots[idx] = Some(t);
        }
    } else {
        for (i, n) in names.iter().enumerate() {
            let f = dir.join(format!("{}.npy", sanitize(n)));
            if f.exists() {
                slots[i] = Some(read_tensor(&f)?.1);
            }
        }
    }
    let mut inputs = Vec::with_capacity(names.len());
    for (s, n) in slots.into_iter().zip(&names) {
        inputs.push(s.ok_or_else(|| {
            data_err(
                dir,
                format!(
                    "no value for model input '{n}' (expected input_K.pb files or {}.npy)",
                    sanitize(n)
                ),
            )
        })?);
    }
    Ok(Sample {
        origin: dir.to_path_buf(),
        inputs,
    })
}

fn is_sample_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let p = e.path();
                p.is_file() && matches!(p.extension().and_then(|x| x.to_str()), Some("pb" | "npy"))
            })
        })
        .unwrap_or(false)
}

impl SampleSet {
    /// Loads samples for `g` from `dir`: the directory itself when it holds tensors, else each
    /// of its subdirectories that does (sorted by name, so `test_data_set_0`, `_1`, ...).
    pub fn load(g: &Graph, dir: &Path) -> Result<SampleSet, PassError> {
        let mut set = SampleSet {
            input_names: input_names(g),
            samples: Vec::new(),
        };
        set.add_dir(g, dir)?;
        Ok(set)
    }

    /// Adds the samples under `dir` (see [`SampleSet::load`]).
    pub fn add_dir(&mut self, g: &Graph, dir: &Path) -> Result<(), PassError> {
        if !dir.is_dir() {
            return Err(data_err(dir, "not a directory"));
        }
        if is_sample_dir(dir) {
            self.samples.push(load_sample(g, dir)?);
            return Ok(());
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| data_err(dir, e.to_string()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && is_sample_dir(p))
            .collect();
        subs.sort();
        if subs.is_empty() {
            return Err(data_err(
                dir,
                "no samples: expected test_data_set_N directories (input_K.pb) or directories \
                 of <input name>.npy files",
            ));
        }
        for s in subs {
            self.samples.push(load_sample(g, &s)?);
        }
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// File stem for a tensor name: characters other than letters, digits, `.`, `_`, `-` become `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
