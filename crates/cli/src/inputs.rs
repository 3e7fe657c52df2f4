//! Loading model inputs from .npy files, .pb tensors and ONNX test_data_set directories.

use anyhow::{anyhow, bail, Result};
use pare_ir::{Graph, Tensor};
use std::path::{Path, PathBuf};

/// One `--inputs` argument: `name=path` or a bare path.
fn split_arg(arg: &str) -> (Option<&str>, &Path) {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() && !Path::new(arg).exists() => {
            (Some(name), Path::new(path))
        }
        _ => (None, Path::new(arg)),
    }
}

fn read_tensor(path: &Path) -> Result<(Option<String>, Tensor)> {
    Ok(pare_pass::samples::read_tensor(path)?)
}

/// The `input_K.pb` files of a test_data_set directory, in K order.
pub fn data_set_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    Ok(pare_pass::samples::data_set_files(dir, prefix)?)
}

/// Resolves `--inputs` arguments to one tensor per graph input, in graph order.
pub fn load_inputs(g: &Graph, args: &[String]) -> Result<Vec<Tensor>> {
    let names: Vec<String> = g
        .inputs()
        .iter()
        .map(|&v| g.value(v).name.clone())
        .collect();
    let mut slots: Vec<Option<Tensor>> = vec![None; names.len()];
    let mut next_positional = 0usize;
    let mut place = |name: Option<String>, t: Tensor, origin: &str| -> Result<()> {
        let idx = match name {
            Some(n) => names.iter().position(|x| *x == n).ok_or_else(|| {
                anyhow!(
                    "{origin}: the model has no input named '{n}' (inputs: {})",
                    names.join(", ")
                )
            })?,
            None => {
                while next_positional < slots.len() && slots[next_positional].is_some() {
                    next_positional += 1;
                }
                if next_positional >= slots.len() {
                    bail!(
                        "{origin}: more inputs given than the model has ({})",
                        names.len()
                    );
                }
                next_positional
            }
        };
        if slots[idx].is_some() {
            bail!("{origin}: input '{}' given twice", names[idx]);
        }
        slots[idx] = Some(t);
        Ok(())
    };
    for arg in args {
        let (name, path) = split_arg(arg);
        if path.is_dir() {
            let files = data_set_files(path, "input_")?;
            if files.is_empty() {
                bail!("{}: no input_K.pb files in this directory", path.display());
            }
            for f in files {
                let (pb_name, t) = read_tensor(&f)?;
                // Use the tensor's name when it names an input; else its position.
                let n = pb_name.filter(|n| names.contains(n));
                place(n, t, &f.display().to_string())?;
            }
        } else {
            let (pb_name, t) = read_tensor(path)?;
            let n = name
                .map(str::to_string)
                .or(pb_name.filter(|n| names.contains(n)));
            place(n, t, &path.display().to_string())?;
        }
    }
    slots
        .into_iter()
        .zip(&names)
        .map(|(s, n)| s.ok_or_else(|| anyhow!("no value given for model input '{n}'")))
        .collect()
}

pub use pare_pass::samples::sanitize;
