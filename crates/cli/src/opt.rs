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
    #[command(flatten)]
    sweep: crate::sweep::SweepArgs,
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

/// The calibration samples of `dirs` (None when there are none).
fn load_samples(g: &pare_ir::Graph, dirs: &[PathBuf]) -> Result<Option<SampleSet>> {
    if dirs.is_empty() {
        return Ok(None);
    }
    let mut set = SampleSet {
        input_names: Vec::new(),
        samples: Vec::new(),
    };
    for d in dirs {
        let s = SampleSet::load(g, d)?;
        set.input_names = s.input_names;
        set.samples.extend(s.samples);
    }
    Ok(Some(set))
}

/// Runs `pipeline` on `g` with the options of `a`.
fn run_pipeline(
    a: &OptArgs,
    registry: &pare_pass::Registry,
    pipeline: &str,
    g: &mut pare_ir::Graph,
    samples: Option<&SampleSet>,
) -> Result<PipelineReport> {
    let progress = std::io::stderr().is_terminal();
    let mut cx = PassContext::new()
        .with_threads(a.threads)
        .with_progress(progress);
    if let Some(s) = samples {
        cx = cx.with_samples(s.clone());
        if let Some(first) = s.samples.first() {
            cx = cx.with_latency_probe(Arc::new(crate::latency::Probe {
                names: s.input_names.clone(),
                sample: first.clone(),
                timing: crate::latency::Timing {
                    threads: a.sweep.latency_threads,
                    runs: a.sweep.latency_runs.max(1),
                    rounds: 3,
                },
            }));
        }
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
    let steps = registry.build(pipeline)?;
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
    let mut pm = PassManager::new(pipeline, steps, instr);
    pm.run(g, &mut cx)
        .with_context(|| format!("running '{pipeline}' on {}", a.model.display()))
}

/// Runs `pare opt`.
pub fn opt(a: &OptArgs) -> Result<()> {
    let registry = pare_passes::registry();
    if a.output.is_dir() {
        bail!(
            "{}: is a directory; give an output .onnx file",
            a.output.display()
        );
    }
    if let Some(rules) = a.sweep.rules(&a.passes)? {
        return sweep(a, &registry, &rules);
    }
    // Check the pipeline before loading a possibly large model.
    registry.check(&a.passes)?;
    let model = crate::load(&a.model)?;
    let mut g = model.graph;
    let samples = load_samples(&g, &a.calib)?;
    if let Some(s) = &samples {
        eprintln!("calibration: {} samples", s.len());
    }
    let report = run_pipeline(a, &registry, &a.passes, &mut g, samples.as_ref())?;
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

#[derive(Serialize)]
struct SweepReport<'a> {
    model: String,
    key: &'a str,
    metric: crate::sweep::Score,
    eval_samples: usize,
    eval_is_calibration: bool,
    input_model: &'a GraphStats,
    /// Measured compiled latency of the input model (ms), with --latency.
    input_latency_ms: Option<f64>,
    /// Threads the latency was measured with.
    latency_threads: Option<usize>,
    max_drop: Option<f64>,
    budget: Option<(crate::sweep::Metric, f64)>,
    chosen: Option<&'a str>,
    results: &'a [crate::sweep::Point],
}

/// `pare opt --sweep`: one pipeline run per value, measured; -o gets the chosen result.
fn sweep(a: &OptArgs, registry: &pare_pass::Registry, rules: &crate::sweep::Rules) -> Result<()> {
    use crate::sweep::{choose, loss_of, svg, table, Judge, Point};
    let holder = format!("{{{}}}", rules.key);
    let pipelines: Vec<String> = rules
        .values
        .iter()
        .map(|v| a.passes.replace(&holder, v))
        .collect();
    for p in &pipelines {
        registry
            .check(p)
            .with_context(|| format!("--sweep: the pipeline '{p}'"))?;
    }
    let model = crate::load(&a.model)?;
    let g0 = model.graph;
    let samples = load_samples(&g0, &a.calib)?;
    let eval = load_samples(&g0, &a.sweep.eval)?;
    let eval_is_calibration = eval.is_none();
    let eval = match eval.or_else(|| samples.clone()) {
        Some(e) => e,
        None => bail!("--sweep measures fidelity on samples: give --eval DIR (or --calib DIR)"),
    };
    if eval_is_calibration {
        eprintln!(
            "note: no --eval given; fidelity is measured on the {} calibration samples, which \
             flatters calibrated passes",
            eval.len()
        );
    }
    let judge = Judge::new(&g0, eval.clone(), a.threads)?;
    let mut dense_stats = None;
    let mut points = Vec::new();
    let mut graphs = Vec::new();
    for (v, p) in rules.values.iter().zip(&pipelines) {
        let mut g = g0.clone();
        let report = run_pipeline(a, registry, p, &mut g, samples.as_ref())?;
        dense_stats.get_or_insert(report.before.clone());
        let f = judge
            .judge(&g)
            .with_context(|| format!("evaluating {}={v}", rules.key))?;
        let top1 = f
            .outputs
            .iter()
            .filter_map(|o| o.top1_agreement)
            .reduce(f64::min);
        let pt = Point {
            value: v.clone(),
            pipeline: p.clone(),
            weight_bytes: report.after.weight_bytes,
            params: report.after.params,
            flops: report.after.flops,
            loss: loss_of(&f, rules.metric),
            cosine_mean: f.outputs.iter().map(|o| o.cosine_mean).fold(1.0, f64::min),
            max_rel_err: f.max_rel_err(),
            top1,
            latency_ms: None,
            feasible: false,
        };
        eprintln!(
            "  {}={v}: weights {:.2} MB, loss {:.4}",
            rules.key,
            pt.weight_bytes as f64 / 1e6,
            pt.loss
        );
        points.push(pt);
        graphs.push(g);
    }
    let dense = dense_stats.unwrap_or_default();
    let dense_ms = if rules.latency {
        Some(measure_latency(a, &eval, &g0, &graphs, &mut points)?)
    } else {
        None
    };
    let chosen = choose(&mut points, rules, &dense, dense_ms);
    eprintln!(
        "pare opt --sweep {}: {} (input model: {:.2} MB, {:.3} GFLOP; fidelity on {} samples{})",
        rules.key,
        a.passes,
        dense.weight_bytes as f64 / 1e6,
        dense.flops as f64 / 1e9,
        eval.len(),
        if eval_is_calibration {
            ", the calibration set"
        } else {
            ""
        }
    );
    eprint!("{}", table(&points, &rules.key, &dense, dense_ms, chosen));
    let title = format!(
        "{}: {}",
        a.model.file_name().map_or_else(
            || a.model.display().to_string(),
            |f| f.to_string_lossy().into()
        ),
        a.passes
    );
    let report = SweepReport {
        model: a.model.display().to_string(),
        key: &rules.key,
        metric: rules.metric,
        eval_samples: eval.len(),
        eval_is_calibration,
        input_model: &dense,
        input_latency_ms: dense_ms,
        latency_threads: rules.latency.then_some(a.sweep.latency_threads),
        max_drop: rules.max_drop,
        budget: rules.budget,
        chosen: chosen.map(|i| points[i].value.as_str()),
        results: &points,
    };
    if let Some(p) = &a.sweep.sweep_json {
        write_atomic(p, &serde_json::to_string_pretty(&report)?)?;
        eprintln!("  table: {}", p.display());
    }
    if let Some(p) = &a.sweep.sweep_svg {
        write_atomic(p, &svg(&points, &rules.key, &dense, &title))?;
        eprintln!("  plot: {}", p.display());
    }
    let Some(i) = chosen else {
        bail!(
            "no {} value meets{}{}; nothing written to {}",
            rules.key,
            rules
                .max_drop
                .map_or(String::new(), |d| format!(" --max-drop {d}")),
            rules
                .budget
                .map_or(String::new(), |(m, f)| format!(" --budget {m:?}={f}")),
            a.output.display()
        );
    };
    pare_onnx::save_model(&graphs[i], &a.output, &pare_onnx::ExportOptions::default())?;
    eprintln!(
        "pare opt: {} → {} ({})",
        a.model.display(),
        a.output.display(),
        points[i].pipeline
    );
    Ok(())
}

/// Compiles the input model and every sweep result for this CPU and times them (see
/// [`crate::latency`]); fills each point's latency and returns the input model's.
fn measure_latency(
    a: &OptArgs,
    eval: &SampleSet,
    g0: &pare_ir::Graph,
    graphs: &[pare_ir::Graph],
    points: &mut [crate::sweep::Point],
) -> Result<f64> {
    use crate::latency::{Bench, Timing};
    let Some(first) = eval.samples.first() else {
        bail!("--latency: no evaluation sample to take the shapes and inputs from");
    };
    let mut bench = Bench::new(&eval.input_names, first)?;
    let n = graphs.len() as u64 + 1;
    let bar = indicatif::ProgressBar::new(n).with_message("compiling for latency");
    bar.set_style(
        indicatif::ProgressStyle::with_template("  {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bench.add(g0, "the input model")?;
    bar.inc(1);
    for (p, g) in points.iter().zip(graphs) {
        bench.add(g, &p.pipeline)?;
        bar.inc(1);
    }
    let timing = Timing {
        threads: a.sweep.latency_threads,
        runs: a.sweep.latency_runs,
        rounds: 3,
    };
    bar.set_length(n * timing.rounds as u64);
    bar.set_position(0);
    bar.set_message(format!(
        "timing ({} thread{})",
        timing.threads,
        if timing.threads == 1 { "" } else { "s" }
    ));
    let ms = bench.time(timing, || bar.inc(1))?;
    bar.finish_and_clear();
    for (p, &t) in points.iter_mut().zip(&ms[1..]) {
        p.latency_ms = Some(t);
    }
    Ok(ms[0])
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
