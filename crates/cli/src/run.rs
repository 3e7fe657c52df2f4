//! `pare run`: execute a model with the reference interpreter.

use crate::inputs::{load_inputs, sanitize};
use anyhow::{Context, Result};
use clap::Args;
use pare_ir::Tensor;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `pare run`.
#[derive(Args)]
pub struct RunArgs {
    /// ONNX model file.
    model: PathBuf,
    /// Inputs: `name=file.npy`, positional `file.npy` / `file.pb` (in model input order), or an
    /// ONNX `test_data_set_N` directory of `input_K.pb` tensors.
    #[arg(long, num_args = 1.., required = true)]
    inputs: Vec<String>,
    /// Directory for the outputs, written as `<output name>.npy`.
    #[arg(long)]
    out: PathBuf,
    /// Print a summary of each output.
    #[arg(long)]
    print: bool,
    /// Interpreter threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Run N more times after the first and print `median_ms=<float> p90_ms=<float>`.
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
}

fn summary(t: &Tensor) -> String {
    let head = match t.to_f64_vec() {
        Some(v) if !v.is_empty() => {
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let first: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
            format!(
                "min={min:.6} max={max:.6} mean={mean:.6} first=[{}]",
                first.join(", ")
            )
        }
        _ => String::new(),
    };
    format!("{}{:?} {head}", t.dtype(), t.shape())
}

/// Runs the command.
pub fn run(a: &RunArgs) -> Result<()> {
    let model = crate::load(&a.model)?;
    let inputs = load_inputs(&model.graph, &a.inputs)?;
    let interp = pare_interp::Interpreter::with_threads(a.threads);
    let start = Instant::now();
    let outputs = interp.run(&model.graph, &inputs)?;
    let elapsed = start.elapsed();
    if let Some(n) = a.repeat.filter(|&n| n > 0) {
        let mut ms: Vec<f64> = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            interp.run(&model.graph, &inputs)?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        let p90 = ms[((n * 9).div_ceil(10)).saturating_sub(1).min(n - 1)];
        println!("median_ms={:.3} p90_ms={p90:.3}", ms[n / 2]);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (&v, t) in model.graph.outputs().iter().zip(&outputs) {
        let name = &model.graph.value(v).name;
        let path = a.out.join(format!("{}.npy", sanitize(name)));
        let bytes = pare_ir::npy::to_npy(t).with_context(|| format!("output '{name}'"))?;
        let tmp = path.with_extension("npy.tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("writing {}", path.display()))?;
        if a.print {
            println!("{name}: {}", summary(t));
        }
    }
    if a.print {
        println!(
            "ran {} nodes in {:.1} ms",
            model.graph.num_nodes(),
            elapsed.as_secs_f64() * 1e3
        );
    }
    eprintln!("wrote {} output(s) to {}", outputs.len(), a.out.display());
    Ok(())
}
