//! `pare opt`: run a pass pipeline on a model and write the result as ONNX; `pare passes`:
//! list the registry.

use anyhow::{bail, Context, Result};
use clap::Args;
use pare_pass::{
    GraphStats, Instrumentation, Measure, PassContext, PassManager, PipelineReport, SampleSet,
    StepReport,
};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `pare opt`.
#[derive(Args)]
pub struct OptArgs {
    /// ONNX model file.
    model: PathBuf,
    /// Pipeline, e.g. `canonicalize` or `canonicalize,fuse-gelu`. `pare passes` lists the
    /// passes and their options.
    #[arg(long, short = 'p', default_value = "canonicalize")]
    passes: String,
    /// Output ONNX file (written atomically; large weights go to OUT.data beside it).
    #[arg(short, long)]
    output: PathBuf,
    /// Calibration data: a directory of test_data_set_N directories (input_K.pb) or of
    /// directories of <input name>.npy files, or of .npz files (one sample each); or one sample
    /// directory or .npz file. Repeatable.
    #[arg(long, value_name = "DIR")]
    calib: Vec<PathBuf>,
    /// Write the pipeline report as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the pipeline report as Markdown.
    #[arg(long, value_name = "FILE")]
    report_md: Option<PathBuf>,
    /// Verify the graph and re-check types after every pass.
    #[arg(long)]
    verify_each: bool,
    /// Print the IR before this pass (name, or `all`) to stderr. Repeatable.
    #[arg(long, value_name = "PASS")]
    print_ir_before: Vec<String>,
    /// Print the IR after this pass (name, or `all`) to stderr. Repeatable.
    #[arg(long, value_name = "PASS")]
    print_ir_after: Vec<String>,
    /// Print a per-pass timing table to stderr.
    #[arg(long)]
    time_passes: bool,
    /// Directory for the reproducer (input IR + pipeline) written when a pass fails.
    #[arg(long, value_name = "DIR")]
    repro_dir: Option<PathBuf>,
    /// Threads for calibration runs (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Bind dimensions for the FLOPs in the report: symbols (`N=1,seq=128`) or whole input
    /// shapes (`x=1x3x224x224`). The output model keeps its symbolic dims. Without it, the
    /// shapes of the first calibration sample are used when --calib is given.
    #[arg(long, value_delimiter = ',')]
    shape: Vec<String>,
}

#[derive(Serialize)]
struct OptReport<'a> {
    model: String,
    output: String,
    #[serde(flatten)]
    pipeline: &'a PipelineReport,
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn gflops(f: u64) -> String {
    format!("{:.3} GFLOP", f as f64 / 1e9)
}

fn delta(a: &GraphStats, b: &GraphStats) -> String {
    format!(
        "nodes {} → {}, params {} → {}, weights {} → {}, {} → {}",
        a.nodes,
        b.nodes,
        a.params,
        b.params,
        mb(a.weight_bytes),
        mb(b.weight_bytes),
        gflops(a.flops),
        gflops(b.flops)
    )
}

fn stats_text(s: &StepReport) -> String {
    s.stats
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report as Markdown.
pub fn markdown(model: &Path, output: &Path, r: &PipelineReport) -> String {
    let mut s = format!(
        "# pare opt report\n\n- model: `{}`\n- output: `{}`\n- pipeline: `{}`\n- time: {:.1} ms\n\n\
         | | nodes | params | weight bytes | FLOPs |\n|---|---:|---:|---:|---:|\n\
         | before | {} | {} | {} | {} |\n| after | {} | {} | {} | {} |\n\n\
         ## Passes\n\n| pass | runs | ms | nodes before | nodes after | params after | FLOPs after | changes |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
        model.display(),
        output.display(),
        r.pipeline,
        r.time_ms,
        r.before.nodes,
        r.before.params,
        r.before.weight_bytes,
        r.before.flops,
        r.after.nodes,
        r.after.params,
        r.after.weight_bytes,
        r.after.flops,
    );
    fn row(s: &mut String, st: &StepReport, depth: usize) {
        s.push_str(&format!(
            "| {}`{}` | {} | {:.2} | {} | {} | {} | {} | {} |\n",
            "&nbsp;&nbsp;".repeat(depth),
            st.spec,
            st.runs,
            st.time_ms,
            st.before.nodes,
            st.after.nodes,
            st.after.params,
            st.after.flops,
            stats_text(st)
        ));
        for c in &st.steps {
            row(s, c, depth + 1);
        }
    }
    for st in &r.steps {
        row(&mut s, st, 0);
    }
    let notes: Vec<String> = r
        .steps
        .iter()
        .flat_map(|st| std::iter::once(st).chain(st.steps.iter()))
        .flat_map(|st| {
            st.notes
                .iter()
                .map(move |n| format!("- `{}`: {n}", st.name))
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `pare opt`.
pub fn opt(a: &OptArgs) -> Result<()> {
    let registry = pare_passes::registry();
    // Check the pipeline before loading a possibly large model.
    registry.check(&a.passes)?;
    let model = crate::load(&a.model)?;
    let mut g = model.graph;
    let progress = std::io::stderr().is_terminal();
    let mut cx = PassContext::new()
        .with_threads(a.threads)
        .with_progress(progress);
    if !a.calib.is_empty() {
        let mut set = SampleSet {
            input_names: Vec::new(),
            samples: Vec::new(),
        };
        for d in &a.calib {
            let s = SampleSet::load(&g, d)?;
            set.input_names = s.input_names;
            set.samples.extend(s.samples);
        }
        eprintln!("calibration: {} samples", set.len());
        cx = cx.with_samples(set);
    }
    let mut bindings = crate::inspect::parse_bindings(&a.shape)?;
    if a.shape.is_empty() {
        if let Some(first) = cx.samples().and_then(|s| s.samples.first()) {
            for (&v, t) in g.inputs().iter().zip(&first.inputs) {
                bindings.bind_input(&g.value(v).name, t.shape());
            }
        }
    }
    let measure = Measure(Arc::new(move |g: &pare_ir::Graph| {
        let mut c = g.clone();
        match crate::inspect::bind_symbols(&mut c, &bindings) {
            Ok(()) => GraphStats::of(&c),
            Err(_) => GraphStats::of(g),
        }
    }));
    let steps = registry.build(&a.passes)?;
    let instr = Instrumentation {
        verify_each: a.verify_each,
        print_before: a.print_ir_before.clone(),
        print_after: a.print_ir_after.clone(),
        time_passes: a.time_passes,
        repro_dir: Some(
            a.repro_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("pare-repro")),
        ),
        measure: Some(measure),
        ..Instrumentation::default()
    };
    let mut pm = PassManager::new(&a.passes, steps, instr);
    let report = pm
        .run(&mut g, &mut cx)
        .with_context(|| format!("running '{}' on {}", a.passes, a.model.display()))?;
    if a.output.is_dir() {
        bail!(
            "{}: is a directory; give an output .onnx file",
            a.output.display()
        );
    }
    pare_onnx::save_model(&g, &a.output, &pare_onnx::ExportOptions::default())?;
    eprintln!(
        "pare opt: {} → {} ({}) in {:.1} ms",
        a.model.display(),
        a.output.display(),
        a.passes,
        report.time_ms
    );
    for st in &report.steps {
        eprintln!(
            "  {:<24} {:>9.2} ms  nodes {:>5} → {:<5} {}",
            st.spec,
            st.time_ms,
            st.before.nodes,
            st.after.nodes,
            stats_text(st)
        );
    }
    eprintln!("  total: {}", delta(&report.before, &report.after));
    if let Some(p) = &a.report {
        let r = OptReport {
            model: a.model.display().to_string(),
            output: a.output.display().to_string(),
            pipeline: &report,
        };
        write_atomic(p, &serde_json::to_string_pretty(&r)?)?;
        eprintln!("  report: {}", p.display());
    }
    if let Some(p) = &a.report_md {
        write_atomic(p, &markdown(&a.model, &a.output, &report))?;
        eprintln!("  report: {}", p.display());
    }
    Ok(())
}

/// Runs `pare passes`.
pub fn list_passes(json: bool) -> Result<()> {
    let registry = pare_passes::registry();
    let infos: Vec<_> = registry.passes().collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    println!("Passes (use in --passes as name or name(option=value,...)):\n");
    for i in &infos {
        println!("  {:<18} {}", i.name, i.summary);
        if let Some(p) = &i.pipeline {
            println!(
                "  {:<18}   = {}{}",
                "",
                p,
                if i.fixpoint {
                    " (repeated until nothing changes)"
                } else {
                    ""
                }
            );
        }
        for o in &i.options {
            let d = if o.default.is_empty() {
                String::new()
            } else {
                format!(" (default {})", o.default)
            };
            println!("  {:<18}   {}={}{}  {}", "", o.name, o.kind, d, o.help);
        }
    }
    Ok(())
}
