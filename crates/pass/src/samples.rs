//! Sample inputs for calibration and evaluation: ONNX `test_data_set_N` directories
//! (`input_K.pb`), directories of `<input name>.npy` files (one directory per sample), or
//! `.npz` files (numpy `savez`/`savez_compressed`, arrays named by input; one file per sample).

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

impl Sample {
    /// The inputs as interpreter values (an error names the sample's file).
    pub fn values(&self) -> Result<Vec<pare_interp::Value>, PassError> {
        self.inputs
            .iter()
            .map(pare_interp::Value::from_tensor)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| data_err(&self.origin, m))
    }
}

/// `n` generated BERT-style token samples for a graph whose inputs are token ids and an
/// attention mask (in that order), `[batch, seq]` each: `[CLS]` (101), random word ids in
/// `[1000, 30522)`, `[SEP]` (102), and an all-ones mask; deterministic in `seed`. For
/// calibrating a transformer encoder when no data ships with the model.
pub fn token_samples(g: &Graph, n: usize, batch: usize, seq: usize, seed: u64) -> SampleSet {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let samples = (0..n)
        .map(|_| {
            let ids: Vec<i64> = (0..batch * seq)
                .map(|i| match i % seq {
                    0 => 101,
                    j if j + 1 == seq => 102,
                    _ => 1000 + (next() % 29522) as i64,
                })
                .collect();
            vec![
                Tensor::from_vec(vec![batch, seq], ids),
                Tensor::from_vec(vec![batch, seq], vec![1i64; batch * seq]),
            ]
        })
        .collect();
    SampleSet::from_inputs(g, samples, "generated")
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

/// Loads one `.npz` sample: an array per graph input, named by the input's name (or its
/// sanitized form).
pub fn load_npz(g: &Graph, path: &Path) -> Result<Sample, PassError> {
    let file = std::fs::File::open(path).map_err(|e| data_err(path, e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| data_err(path, e.to_string()))?;
    let mut inputs = Vec::new();
    for n in input_names(g) {
        let candidates = [format!("{n}.npy"), format!("{}.npy", sanitize(&n))];
        let Some(entry) = candidates
            .iter()
            .find(|c| zip.index_for_name(c).is_some())
            .cloned()
        else {
            let have: Vec<String> = zip.file_names().map(str::to_string).collect();
            return Err(data_err(
                path,
                format!(
                    "no array for model input '{n}' (arrays: {})",
                    have.join(", ")
                ),
            ));
        };
        let mut f = zip
            .by_name(&entry)
            .map_err(|e| data_err(path, e.to_string()))?;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data)
            .map_err(|e| data_err(path, format!("{entry}: {e}")))?;
        let t =
            pare_ir::npy::from_npy(&data).map_err(|e| data_err(path, format!("{entry}: {e}")))?;
        inputs.push(t);
    }
    Ok(Sample {
        origin: path.to_path_buf(),
        inputs,
    })
}

fn is_npz(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|x| x == "npz")
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
    /// A set for `g` from in-memory samples (one tensor per graph input each), named
    /// `sample<i>` (or `origin` when given) in messages.
    pub fn from_inputs(g: &Graph, samples: Vec<Vec<Tensor>>, origin: &str) -> SampleSet {
        SampleSet {
            input_names: g
                .inputs()
                .iter()
                .map(|&v| g.value(v).name.clone())
                .collect(),
            samples: samples
                .into_iter()
                .enumerate()
                .map(|(i, inputs)| Sample {
                    origin: PathBuf::from(format!("{origin}{i}")),
                    inputs,
                })
                .collect(),
        }
    }

    /// Loads samples for `g` from `dir`: a `.npz` file; the directory itself when it holds
    /// tensors; else each of its subdirectories that does (sorted by name, so
    /// `test_data_set_0`, `_1`, ...); else each `.npz` file in it.
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
        if is_npz(dir) {
            self.samples.push(load_npz(g, dir)?);
            return Ok(());
        }
        if !dir.is_dir() {
            return Err(data_err(dir, "not a directory or .npz file"));
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
            let mut npz: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| data_err(dir, e.to_string()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| is_npz(p))
                .collect();
            npz.sort();
            for p in &npz {
                self.samples.push(load_npz(g, p)?);
            }
            if !npz.is_empty() {
                return Ok(());
            }
            return Err(data_err(
                dir,
                "no samples: expected test_data_set_N directories (input_K.pb), directories \
                 of <input name>.npy files, or .npz files",
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_npz(path: &Path, arrays: &[(&str, Tensor)], deflate: bool) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, t) in arrays {
            z.start_file(format!("{name}.npy"), opts).unwrap();
            z.write_all(&pare_ir::npy::to_npy(t).unwrap()).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn npz_files_are_samples() {
        let g = pare_ir::parse_graph(
            "graph @g(%x: f32[2], %\"a:b\": i64[1]) -> (%y) {\n  %y = Relu(%x) : f32[2]\n}",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let x = Tensor::from_vec(vec![2], vec![1.0f32, -2.0]);
        let ab = Tensor::from_vec(vec![1], vec![7i64]);
        write_npz(
            &dir.path().join("s0.npz"),
            &[("x", x.clone()), ("a_b", ab.clone())],
            false,
        );
        write_npz(
            &dir.path().join("s1.npz"),
            &[("a:b", ab.clone()), ("x", x.clone())],
            true,
        );
        let s = SampleSet::load(&g, dir.path()).unwrap();
        assert_eq!(s.len(), 2);
        for smp in &s.samples {
            assert_eq!(smp.inputs, vec![x.clone(), ab.clone()]);
        }
        let one = SampleSet::load(&g, &dir.path().join("s1.npz")).unwrap();
        assert_eq!(one.len(), 1);
        write_npz(&dir.path().join("bad.npz"), &[("x", x)], false);
        let e = SampleSet::load(&g, &dir.path().join("bad.npz"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no array for model input 'a:b'") && e.contains("x.npy"),
            "{e}"
        );
    }
}
