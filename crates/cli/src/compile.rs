//! `pare compile`: a model to a native artifact through the LLVM CPU backend.

use anyhow::{bail, Context, Result};
use clap::Args;
use pare_backend_llvm::{emit_artifact, Emit, Options, Target};
use std::path::PathBuf;

/// Arguments of `pare compile`.
#[derive(Args)]
#[command(
    long_about = "Compile a model to native code for this CPU (or --target-cpu).\n\n\
The graph is specialized to static shapes (--shape binds symbolic input dims), canonicalized \
(plus any --passes), planned into runtime kernel calls and fused elementwise loops over one \
statically planned activation arena, lowered to LLVM IR and optimized.\n\n\
--emit kinds:\n  \
exe      standalone executable: `./model --inputs x.npy --out DIR [--bench N] [--threads T]`\n  \
so       shared library exporting the C ABI in the generated header (OUT with .h)\n  \
lib      static archive (model + runtime); link with -lpthread -ldl -lm\n  \
obj      object file; libpare_runtime.a and the header are written beside it\n  \
llvm-ir  optimized LLVM IR text\n\n\
Example: pare compile model.onnx --shape batch=1,seq=128 --emit exe -o model && ./model --bench 20"
)]
pub struct CompileArgs {
    /// ONNX model file.
    model: PathBuf,
    /// What to write: exe, so, lib, obj or llvm-ir.
    #[arg(long, default_value = "exe")]
    emit: String,
    /// Output file (written atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Pass pipeline run before lowering, after shape binding (canonicalize always runs after it).
    #[arg(long)]
    passes: Option<String>,
    /// Bind symbolic input dims: `N=1,seq=128` (a symbol) or `x=1x3x224x224` (a whole input).
    #[arg(long, value_delimiter = ',')]
    shape: Vec<String>,
    /// Fix inputs to values at compile time, e.g. `sr=16000` (a scalar of the input's type):
    /// they are no longer inputs of the artifact, and branches on them are folded.
    #[arg(long, value_delimiter = ',')]
    bind: Vec<String>,
    /// CPU to generate code for: `native` (default: this machine, all its features) or an LLVM
    /// CPU name such as `x86-64-v3` (AVX2+FMA), `haswell`, `znver3`.
    #[arg(long, default_value = "native")]
    target_cpu: String,
    /// LLVM target triple for cross compilation (obj and llvm-ir only), e.g.
    /// `aarch64-unknown-linux-gnu`.
    #[arg(long)]
    target: Option<String>,
    /// Extra LLVM target features, e.g. `+avx2,+fma` or `-avx512f`.
    #[arg(long, default_value = "")]
    target_features: String,
    /// Prefix of the exported C symbols (`PREFIX_create`, `PREFIX_run`, ...).
    #[arg(long, default_value = "pare_model")]
    prefix: String,
    /// LLVM optimization level (0-3).
    #[arg(short = 'O', long = "opt-level", default_value_t = 3)]
    opt_level: u8,
    /// Write the compile statistics as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !p.starts_with(|c: char| c.is_ascii_digit())
}

/// Runs the command.
pub fn compile(a: &CompileArgs) -> Result<()> {
    let emit = Emit::parse(&a.emit)
        .with_context(|| format!("--emit {}: expected exe, so, lib, obj or llvm-ir", a.emit))?;
    if !valid_prefix(&a.prefix) {
        bail!("--prefix {}: must be a C identifier", a.prefix);
    }
    let m = crate::load(&a.model)?;
    let bindings = crate::inspect::parse_bindings(&a.shape)?;
    let pipeline = match &a.passes {
        Some(p) if !p.trim().is_empty() => {
            format!("{p},{}", pare_backend_llvm::COMPILE_PIPELINE)
        }
        _ => pare_backend_llvm::COMPILE_PIPELINE.to_string(),
    };
    // Check the pipeline before the (slow) work.
    pare_passes::registry()
        .build(&pipeline)
        .map_err(|e| anyhow::anyhow!("--passes: {e}"))?;
    let mut input_values = std::collections::HashMap::new();
    for b in &a.bind {
        let Some((name, val)) = b.split_once('=') else {
            bail!("--bind {b}: expected NAME=VALUE")
        };
        let v = m
            .graph
            .inputs()
            .iter()
            .copied()
            .find(|&v| m.graph.value(v).name == name);
        let Some(v) = v else {
            bail!("--bind {b}: the model has no input '{name}'")
        };
        let dt = m.graph.value(v).ty.dtype.unwrap_or(pare_ir::DType::F32);
        let t = scalar_tensor(dt, val).with_context(|| format!("--bind {b}"))?;
        input_values.insert(name.to_string(), t);
    }
    let opts = Options {
        input_values,
        symbols: bindings.symbols.clone(),
        input_shapes: bindings.inputs.clone(),
        pipeline,
        target: Target {
            triple: a.target.clone(),
            cpu: a.target_cpu.clone(),
            features: a.target_features.clone(),
        },
        prefix: a.prefix.clone(),
        opt_level: a.opt_level,
    };
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("{}: the output directory does not exist", dir.display());
        }
    }
    let t = std::time::Instant::now();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("compiling {}", a.model.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let res = emit_artifact(&m.graph, &opts, emit, &a.output);
    spinner.finish_and_clear();
    let s = res.with_context(|| format!("compiling {}", a.model.display()))?;
    let total = t.elapsed().as_secs_f64();
    println!(
        "compiled {} -> {} ({})",
        a.model.display(),
        a.output.display(),
        a.emit
    );
    println!(
        "  plan: {} steps: {} kernel calls, {} fused elementwise loops ({} nodes fused), {} views",
        s.steps, s.kernel_calls, s.fused_loops, s.nodes_fused, s.views
    );
    let kernels: Vec<String> = s
        .kernels
        .iter()
        .map(|(k, c)| format!("{}x{c}", k.trim_start_matches("pare_k_")))
        .collect();
    println!("  kernels: {}", kernels.join(" "));
    println!(
        "  memory: arena {:.1} KiB (peak live {:.1} KiB), constants {:.1} MiB",
        s.arena_bytes as f64 / 1024.0,
        s.peak_live_bytes as f64 / 1024.0,
        s.const_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  time: {total:.2} s (prepare {:.2} s, lower {:.2} s, LLVM {:.2} s)",
        s.prepare_s, s.lower_s, s.llvm_s
    );
    if matches!(emit, Emit::So | Emit::Lib | Emit::Obj) {
        println!("  header: {}", a.output.with_extension("h").display());
    }
    if let Some(r) = &a.report {
        let j = serde_json::json!({
            "model": a.model.display().to_string(),
            "output": a.output.display().to_string(),
            "emit": a.emit,
            "steps": s.steps,
            "kernel_calls": s.kernel_calls,
            "fused_loops": s.fused_loops,
            "nodes_fused": s.nodes_fused,
            "views": s.views,
            "kernels": s.kernels,
            "arena_bytes": s.arena_bytes,
            "peak_live_bytes": s.peak_live_bytes,
            "const_bytes": s.const_bytes,
            "compile_s": total,
            "prepare_s": s.prepare_s,
            "lower_s": s.lower_s,
            "llvm_s": s.llvm_s,
        });
        std::fs::write(r, serde_json::to_string_pretty(&j)?)
            .with_context(|| format!("writing {}", r.display()))?;
    }
    Ok(())
}

/// A scalar (or rank-1 of one element, matching the input's rank later) of `dt` parsed from text.
fn scalar_tensor(dt: pare_ir::DType, s: &str) -> Result<pare_ir::Tensor> {
    use pare_ir::{DType, Tensor};
    Ok(match dt {
        DType::F32 => Tensor::scalar(s.parse::<f32>()?),
        DType::F64 => Tensor::scalar(s.parse::<f64>()?),
        DType::I64 => Tensor::scalar(s.parse::<i64>()?),
        DType::I32 => Tensor::scalar(s.parse::<i32>()?),
        DType::Bool => Tensor::scalar(matches!(s, "1" | "true")),
        d => bail!("values of type {} cannot be bound", d.name()),
    })
}
