//! The pass manager: runs a pipeline with instrumentation (verify-each, IR printing, timing,
//! statistics, reproducers) and produces a report.

use crate::{PassContext, PassError, Step};
use pare_ir::{Graph, PrintOptions};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What the manager does around each pass.
#[derive(Clone, Debug)]
pub struct Instrumentation {
    /// Verify the graph (and re-run type inference on a copy) after every pass.
    pub verify_each: bool,
    /// Print the IR before these passes (`all` for every pass).
    pub print_before: Vec<String>,
    /// Print the IR after these passes (`all` for every pass).
    pub print_after: Vec<String>,
    /// Print a timing table to stderr at the end.
    pub time_passes: bool,
    /// Where to write a reproducer when a pass fails (none: no reproducer).
    pub repro_dir: Option<PathBuf>,
    /// Upper bound on repetitions of a fixpoint group.
    pub max_iterations: usize,
    /// How the report measures a graph (default [`GraphStats::of`]); the CLI binds symbolic
    /// dims here so FLOPs are known without fixing the output model's shapes.
    pub measure: Option<Measure>,
}

/// A graph measurement function for reports.
#[derive(Clone)]
pub struct Measure(pub Arc<dyn Fn(&Graph) -> GraphStats + Send + Sync>);

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Measure(..)")
    }
}

impl Default for Instrumentation {
    fn default() -> Self {
        Instrumentation {
            verify_each: cfg!(debug_assertions),
            print_before: Vec::new(),
            print_after: Vec::new(),
            time_passes: false,
            repro_dir: None,
            max_iterations: 8,
            measure: None,
        }
    }
}

/// Size of a graph: nodes, parameters, weight bytes, FLOPs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GraphStats {
    /// Live nodes in the top-level graph.
    pub nodes: usize,
    /// Weight elements.
    pub params: u64,
    /// Bytes of all constants.
    pub weight_bytes: u64,
    /// Bytes of constants by dtype name.
    pub bytes_by_dtype: BTreeMap<String, u64>,
    /// FLOPs of nodes with static shapes.
    pub flops: u64,
    /// Nodes whose FLOPs are unknown (dynamic shapes, control flow).
    pub unknown_cost_nodes: usize,
}

impl GraphStats {
    /// Measures `g`.
    pub fn of(g: &Graph) -> GraphStats {
        let c = pare_ir::cost::cost(g);
        GraphStats {
            nodes: g.num_nodes(),
            params: c.params,
            weight_bytes: c.bytes(),
            bytes_by_dtype: c
                .bytes_by_dtype
                .iter()
                .map(|(d, b)| (d.name().to_string(), *b))
                .collect(),
            flops: c.flops,
            unknown_cost_nodes: c.unknown_nodes,
        }
    }
}

/// What one step of a pipeline did.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Pass or pipeline name.
    pub name: String,
    /// The step as written (with options).
    pub spec: String,
    /// Time in milliseconds inside the pass (all runs; for a group, the sum of its passes).
    pub time_ms: f64,
    /// How many times it ran (more than one inside a fixpoint group).
    pub runs: usize,
    /// Whether any run changed the graph.
    pub changed: bool,
    /// Counters, summed over runs.
    pub stats: BTreeMap<String, u64>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Graph before the first run.
    pub before: GraphStats,
    /// Graph after the last run.
    pub after: GraphStats,
    /// For a group: its passes.
    pub steps: Vec<StepReport>,
}

/// What a whole pipeline did.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    /// The pipeline text.
    pub pipeline: String,
    /// Total wall time in milliseconds.
    pub time_ms: f64,
    /// Graph before.
    pub before: GraphStats,
    /// Graph after.
    pub after: GraphStats,
    /// One entry per top-level step.
    pub steps: Vec<StepReport>,
}

/// Runs built pipelines.
pub struct PassManager {
    pipeline: String,
    steps: Vec<Step>,
    instr: Instrumentation,
}

fn matches_list(list: &[String], name: &str, spec: &str) -> bool {
    list.iter().any(|x| x == "all" || x == name || x == spec)
}

fn step_name(spec: &str) -> &str {
    spec.split('(').next().unwrap_or(spec)
}

impl PassManager {
    /// A manager for `steps` (built from `pipeline` by [`crate::Registry::build`]).
    pub fn new(pipeline: &str, steps: Vec<Step>, instr: Instrumentation) -> PassManager {
        PassManager {
            pipeline: pipeline.to_string(),
            steps,
            instr,
        }
    }

    /// Runs the pipeline on `g`. On failure the graph may be partly transformed; a
    /// reproducer is written when [`Instrumentation::repro_dir`] is set. When `cx` has no
    /// [`PassContext::input_graph`] yet, `g` as it is now is recorded there first (a shallow
    /// copy: constants share their data), so later passes can read the weights as they were
    /// before the pipeline.
    pub fn run(
        &mut self,
        g: &mut Graph,
        cx: &mut PassContext,
    ) -> Result<PipelineReport, PassError> {
        let t0 = Instant::now();
        if cx.input_graph().is_none() {
            cx.set_input_graph(Some(Arc::new(g.clone())));
        }
        let before = self.measure(g);
        let mut steps = std::mem::take(&mut self.steps);
        let mut reports = Vec::new();
        let mut result = Ok(());
        for s in steps.iter_mut() {
            match self.run_step(s, g, cx) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.steps = steps;
        result?;
        let report = PipelineReport {
            pipeline: self.pipeline.clone(),
            time_ms: t0.elapsed().as_secs_f64() * 1e3,
            before,
            after: self.measure(g),
            steps: reports,
        };
        if self.instr.time_passes {
            eprint!("{}", timing_table(&report));
        }
        Ok(report)
    }

    fn measure(&self, g: &Graph) -> GraphStats {
        match &self.instr.measure {
            Some(m) => (m.0)(g),
            None => GraphStats::of(g),
        }
    }

    fn run_step(
        &self,
        step: &mut Step,
        g: &mut Graph,
        cx: &mut PassContext,
    ) -> Result<StepReport, PassError> {
        match step {
            Step::Pass { spec, pass } => {
                let before = self.measure(g);
                let name = pass.name().to_string();
                let snapshot = self.instr.repro_dir.as_ref().map(|_| g.clone());
                if matches_list(&self.instr.print_before, &name, spec) {
                    eprintln!("// ----- IR before {spec} -----\n{}", print_ir(g));
                }
                let t = Instant::now();
                let r = pass.run(g, cx);
                let time_ms = t.elapsed().as_secs_f64() * 1e3;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        let repro = self.write_repro(snapshot.as_ref(), spec, &e.to_string());
                        return Err(PassError::WithRepro {
                            source: Box::new(e),
                            repro,
                        });
                    }
                };
                if r.changed {
                    cx.invalidate(&r.preserved);
                    if self.instr.verify_each {
                        if let Err(message) = check_graph(g) {
                            let repro = self.write_repro(snapshot.as_ref(), spec, &message);
                            return Err(PassError::Invalid {
                                pass: spec.clone(),
                                message,
                                repro,
                            });
                        }
                    }
                }
                if matches_list(&self.instr.print_after, &name, spec) {
                    eprintln!("// ----- IR after {spec} -----\n{}", print_ir(g));
                }
                Ok(StepReport {
                    name,
                    spec: spec.clone(),
                    time_ms,
                    runs: 1,
                    changed: r.changed,
                    stats: r.stats,
                    notes: r.notes,
                    before,
                    after: self.measure(g),
                    steps: Vec::new(),
                })
            }
            Step::Group {
                name,
                steps,
                fixpoint,
            } => {
                let before = self.measure(g);
                let mut subs: Vec<Option<StepReport>> = (0..steps.len()).map(|_| None).collect();
                let mut changed_any = false;
                let max = if *fixpoint {
                    self.instr.max_iterations.max(1)
                } else {
                    1
                };
                let mut notes = Vec::new();
                for iter in 0..max {
                    let mut changed = false;
                    for (s, slot) in steps.iter_mut().zip(subs.iter_mut()) {
                        let r = self.run_step(s, g, cx)?;
                        changed |= r.changed;
                        *slot = Some(match slot.take() {
                            None => r,
                            Some(prev) => merge_reports(prev, r),
                        });
                    }
                    changed_any |= changed;
                    if !changed {
                        break;
                    }
                    if *fixpoint && iter + 1 == max {
                        notes.push(format!(
                            "stopped after {max} iterations while still changing the graph"
                        ));
                    }
                }
                let sub: Vec<StepReport> = subs.into_iter().flatten().collect();
                let mut stats = BTreeMap::new();
                for s in &sub {
                    for (k, v) in &s.stats {
                        *stats.entry(format!("{}.{k}", s.name)).or_default() += v;
                    }
                }
                // The passes' own time; measuring the graph for the report is not counted.
                Ok(StepReport {
                    name: name.clone(),
                    spec: name.clone(),
                    time_ms: sub.iter().map(|s| s.time_ms).sum(),
                    runs: sub.iter().map(|s| s.runs).max().unwrap_or(0),
                    changed: changed_any,
                    stats,
                    notes,
                    before,
                    after: self.measure(g),
                    steps: sub,
                })
            }
        }
    }

    fn write_repro(&self, snapshot: Option<&Graph>, spec: &str, message: &str) -> Option<PathBuf> {
        let dir = self.instr.repro_dir.as_ref()?;
        let g = snapshot?;
        let text = format!(
            "// Reproducer written by pare: pass '{spec}' failed on this graph.\n\
             // error: {}\n// RUN: {spec}\n{}",
            message.replace('\n', "\n//   "),
            pare_ir::print_graph(
                g,
                &PrintOptions {
                    elide_constants_above: None,
                }
            )
        );
        let name: String = step_name(spec)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("pare-repro-{name}.ir"));
        std::fs::create_dir_all(dir).ok()?;
        std::fs::write(&path, text).ok()?;
        Some(path)
    }
}

fn merge_reports(mut a: StepReport, b: StepReport) -> StepReport {
    a.time_ms += b.time_ms;
    a.runs += b.runs;
    a.changed |= b.changed;
    for (k, v) in b.stats {
        *a.stats.entry(k).or_default() += v;
    }
    a.notes.extend(b.notes);
    a.after = b.after;
    if !b.steps.is_empty() {
        let mut merged = Vec::new();
        let mut bs = b.steps.into_iter();
        for x in std::mem::take(&mut a.steps) {
            match bs.next() {
                Some(y) => merged.push(merge_reports(x, y)),
                None => merged.push(x),
            }
        }
        a.steps = merged;
    }
    a
}

fn print_ir(g: &Graph) -> String {
    pare_ir::print_graph(
        g,
        &PrintOptions {
            elide_constants_above: Some(16),
        },
    )
}

/// Verifies `g` and checks that type inference agrees with the types it carries.
pub fn check_graph(g: &Graph) -> Result<(), String> {
    pare_ir::verify(g).map_err(|e| e.to_string())?;
    let mut copy = g.clone();
    pare_ir::infer::infer_types(&mut copy).map_err(|e| e.to_string())
}

/// A timing table (as `--time-passes` prints it).
pub fn timing_table(r: &PipelineReport) -> String {
    let mut out = format!(
        "===== pass timing ({:.1} ms total) =====\n{:>10}  {:>5}  {:>7}  pass\n",
        r.time_ms, "ms", "runs", "nodes"
    );
    fn row(out: &mut String, s: &StepReport, depth: usize) {
        out.push_str(&format!(
            "{:>10.2}  {:>5}  {:>7}  {}{}\n",
            s.time_ms,
            s.runs,
            s.after.nodes as i64 - s.before.nodes as i64,
            "  ".repeat(depth),
            s.spec
        ));
        for c in &s.steps {
            row(out, c, depth + 1);
        }
    }
    for s in &r.steps {
        row(&mut out, s, 0);
    }
    out
}
