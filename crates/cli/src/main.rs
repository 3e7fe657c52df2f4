//! `pare`: an ahead-of-time compiler that compresses ONNX models and compiles them to native
//! code. This binary is the command-line front end.

mod compile;
mod eval;
mod inputs;
mod inspect;
mod latency;
mod opt;
mod run;
mod sweep;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pare",
    version,
    about = "Compress ONNX models and compile them to native code",
    long_about = "pare imports an ONNX model into its graph IR, runs compression and optimization \
passes on it, and emits a compressed ONNX model or native code.\n\n\
Start with `pare inspect MODEL.onnx` to see what a model contains, and `pare run` to execute \
it with the reference interpreter."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show a model's inputs, outputs, op histogram, parameters, weight bytes and FLOPs.
    Inspect(inspect::InspectArgs),
    /// Run a model with the reference interpreter and write each output as .npy.
    Run(run::RunArgs),
    /// Import a model and write it back as ONNX (a check of the import/export round trip).
    Export {
        /// ONNX model file.
        model: PathBuf,
        /// Output ONNX file (written atomically; large weights go to OUT.data beside it).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run a pass pipeline on a model and write the result as ONNX, with a report.
    Opt(opt::OptArgs),
    /// List the passes and named pipelines with their options.
    Passes {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compile a model to a native executable, shared/static library or object (LLVM, this CPU).
    Compile(compile::CompileArgs),
    /// Compare a candidate model's outputs with a reference's on the same inputs (JSON).
    Eval(eval::EvalArgs),
    /// Print a model in pare's textual IR.
    Ir {
        /// ONNX model file.
        model: PathBuf,
        /// Print every constant in full (default: constants over 16 elements print as `...`).
        #[arg(long)]
        full: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Inspect(a) => inspect::inspect(&a),
        Cmd::Run(a) => run::run(&a),
        Cmd::Ir { model, full } => print_ir(&model, full),
        Cmd::Export { model, output } => export(&model, &output),
        Cmd::Opt(a) => opt::opt(&a),
        Cmd::Passes { json } => opt::list_passes(json),
        Cmd::Eval(a) => eval::eval(&a),
        Cmd::Compile(a) => compile::compile(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a model, with the user ops pare's own passes emit (MatMulNBits) defined.
pub(crate) fn load(path: &std::path::Path) -> anyhow::Result<pare_onnx::Model> {
    Ok(pare_onnx::load_model(
        path,
        &pare_onnx::ImportOptions {
            custom_ops: pare_passes::custom_ops(),
            ..Default::default()
        },
    )?)
}

fn print_ir(model: &std::path::Path, full: bool) -> anyhow::Result<()> {
    let m = load(model)?;
    let opts = pare_ir::PrintOptions {
        elide_constants_above: if full { None } else { Some(16) },
    };
    print!("{}", pare_ir::print_graph(&m.graph, &opts));
    Ok(())
}

fn export(model: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    let m = load(model)?;
    pare_onnx::save_model(&m.graph, output, &pare_onnx::ExportOptions::default())?;
    eprintln!("wrote {} ({} nodes)", output.display(), m.graph.num_nodes());
    Ok(())
}
