//! Measured compiled latency for `pare opt --sweep`: each candidate graph is compiled by the
//! LLVM backend into a standalone executable (as `pare compile --emit exe` would, for the host
//! CPU, with the shapes of the first evaluation sample), and the executables are timed with
//! their own `--bench` loop on that sample's inputs.
//!
//! Timings of different builds are only comparable when taken close together, so the
//! executables are run in alternation, `rounds` times, and each build's latency is the median
//! over rounds of its per-round median (`--bench runs`).

use anyhow::{bail, Context, Result};
use pare_backend_llvm::{emit_artifact, Emit, Options, Target};
use pare_pass::Sample;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to time.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Threads the executables run with.
    pub threads: usize,
    /// Timed runs per measurement (after one warm-up).
    pub runs: usize,
    /// Alternating rounds over all builds.
    pub rounds: usize,
}

/// Compiles graphs for timing into one temporary directory.
pub struct Bench {
    dir: tempfile::TempDir,
    names: Vec<String>,
    opts: Options,
    inputs: Vec<String>,
    /// Each build and whether it runs on the sample (otherwise on zeros).
    exes: Vec<(PathBuf, bool)>,
}

impl Bench {
    /// Binds the shapes of `sample` (inputs named `names`) and writes its inputs as .npy files
    /// that every executable of a graph with these inputs is run on.
    pub fn new(names: &[String], sample: &Sample) -> Result<Bench> {
        let dir = tempfile::Builder::new()
            .prefix("pare-latency-")
            .tempdir()
            .context("creating a temporary directory for the latency builds")?;
        let mut input_shapes = HashMap::new();
        let mut inputs = Vec::new();
        for (k, (name, t)) in names.iter().zip(&sample.inputs).enumerate() {
            input_shapes.insert(
                name.clone(),
                t.shape().iter().map(|&d| d as u64).collect::<Vec<u64>>(),
            );
            let path = dir.path().join(format!("input_{k}.npy"));
            let bytes = pare_ir::npy::to_npy(t).with_context(|| format!("input '{name}'"))?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            inputs.push(format!("{name}={}", path.display()));
        }
        let opts = Options {
            symbols: HashMap::new(),
            input_shapes,
            input_values: HashMap::new(),
            pipeline: pare_backend_llvm::COMPILE_PIPELINE.to_string(),
            target: Target::host(),
            prefix: "model".into(),
            opt_level: 3,
        };
        Ok(Bench {
            dir,
            names: names.to_vec(),
            opts,
            inputs,
            exes: Vec::new(),
        })
    }

    /// Compiles `g`; returns its index for [`Bench::time`]. A graph whose inputs are the
    /// sample's (by name, in order) runs on the sample; any other graph must have static
    /// input shapes and runs on zeros.
    pub fn add(&mut self, g: &pare_ir::Graph, what: &str) -> Result<usize> {
        let k = self.exes.len();
        let exe = self.dir.path().join(format!("build_{k}"));
        let on_sample = g.inputs().len() == self.names.len()
            && g.inputs()
                .iter()
                .zip(&self.names)
                .all(|(&v, n)| &g.value(v).name == n);
        let opts = if on_sample {
            self.opts.clone()
        } else {
            Options {
                input_shapes: HashMap::new(),
                ..self.opts.clone()
            }
        };
        emit_artifact(g, &opts, Emit::Exe, &exe)
            .with_context(|| format!("compiling {what} to time it"))?;
        self.exes.push((exe, on_sample));
        Ok(k)
    }

    /// Times every build (see the module docs); milliseconds per build, in `add` order.
    pub fn time(&self, t: Timing, mut progress: impl FnMut()) -> Result<Vec<f64>> {
        let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); self.exes.len()];
        for _ in 0..t.rounds.max(1) {
            for ((exe, on_sample), out) in self.exes.iter().zip(per_round.iter_mut()) {
                let inputs: &[String] = if *on_sample { &self.inputs } else { &[] };
                out.push(run_bench(exe, inputs, t)?);
                progress();
            }
        }
        Ok(per_round.into_iter().map(median).collect())
    }
}

/// The [`LatencyProbe`](pare_pass::LatencyProbe) `pare opt` gives passes (`prune-channels
/// budget=latency`): compiles and times on one calibration sample.
pub struct Probe {
    /// Input names.
    pub names: Vec<String>,
    /// The sample whose shapes are compiled and whose inputs are timed.
    pub sample: Sample,
    /// How to time.
    pub timing: Timing,
}

impl pare_pass::LatencyProbe for Probe {
    fn latencies(&self, graphs: &[&pare_ir::Graph]) -> std::result::Result<Vec<f64>, String> {
        let run = || -> Result<Vec<f64>> {
            let mut b = Bench::new(&self.names, &self.sample)?;
            for (k, g) in graphs.iter().enumerate() {
                b.add(g, &format!("candidate {k}"))?;
            }
            b.time(self.timing, || {})
        };
        run().map_err(|e| format!("{e:#}"))
    }
}

fn run_bench(exe: &Path, inputs: &[String], t: Timing) -> Result<f64> {
    let mut cmd = Command::new(exe);
    if !inputs.is_empty() {
        cmd.arg("--inputs").args(inputs);
    }
    let out = cmd
        .args(["--bench", &t.runs.max(1).to_string()])
        .args(["--threads", &t.threads.to_string()])
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the compiled candidate failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_median(&stdout).with_context(|| {
        format!(
            "no median_ms in the output of {}: {}",
            exe.display(),
            stdout.trim()
        )
    })
}

/// The `median_ms=` value the executables' `--bench` prints.
fn parse_median(s: &str) -> Option<f64> {
    s.split_whitespace()
        .find_map(|w| w.strip_prefix("median_ms="))
        .and_then(|v| v.parse().ok())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bench_line_and_takes_medians() {
        assert_eq!(
            parse_median("median_ms=1.250 p90_ms=1.5 peak_rss_mb=3"),
            Some(1.25)
        );
        assert_eq!(parse_median("p90_ms=1.5"), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
