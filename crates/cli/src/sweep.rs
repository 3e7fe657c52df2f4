//! `pare opt --sweep`: run a pipeline once per value of a parameter, measure each result
//! (size, parameters, FLOPs, fidelity against the input model on held-out inputs), write the
//! table as JSON and SVG, and keep the strongest compression that meets `--max-drop` and
//! `--budget`.

use anyhow::{bail, Context, Result};
use clap::Args;
use pare_pass::fidelity::Fidelity;
use pare_pass::{GraphStats, SampleSet};
use serde::Serialize;
use std::path::PathBuf;

/// The sweep and selection options of `pare opt`.
#[derive(Args, Clone, Default)]
pub struct SweepArgs {
    /// Run the pipeline once per value: `KEY=V1,V2,...` substitutes each value for `{KEY}` in
    /// --passes, e.g. `--passes 'quantize(bits={bits})' --sweep bits=8,6,4,3` or
    /// `--passes 'prune-channels(ratio={r})' --sweep r=0.1,0.2,0.3`. Each result is measured
    /// (weight bytes, params, FLOPs, fidelity against the input model); -o receives the one
    /// --max-drop/--budget select (without them: the smallest).
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub sweep: Option<String>,
    /// Inputs the fidelity is measured on (same forms as --calib; repeatable). Without it the
    /// calibration samples are used, which flatters the result (a note says so).
    #[arg(long, value_name = "DIR")]
    pub eval: Vec<PathBuf>,
    /// Keep only results whose fidelity loss is at most this (`1%` or `0.01`): 1 − the lowest
    /// per-output score (see --metric). Among those, -o gets the smallest.
    #[arg(long, value_name = "LOSS")]
    pub max_drop: Option<String>,
    /// The per-output fidelity score: `cosine` (mean cosine similarity), `top1` (arg-max
    /// agreement along the last axis; outputs where it does not apply use cosine) or `auto`
    /// (top-1 for classifier-like outputs — float, rank 2 or 3 — cosine otherwise). Use
    /// cosine for embeddings.
    #[arg(long, value_name = "METRIC", default_value = "auto")]
    pub metric: Score,
    /// Keep only results within a budget relative to the input model: `size=0.5` (weight
    /// bytes), `params=0.5`, `flops=0.7` or `latency=0.7` (measured: the input model and every
    /// result are compiled for this CPU and timed, see --latency). Without --max-drop, -o gets
    /// the most faithful of those; with it, the smallest (fastest for latency) that meets both.
    #[arg(long, value_name = "METRIC=FRACTION")]
    pub budget: Option<String>,
    /// Also measure compiled latency (implied by --budget latency=F): the input model and each
    /// result are compiled to an executable for this CPU with the shapes of the first --eval
    /// sample and timed on it, in alternation (3 rounds of --latency-runs runs, medians).
    #[arg(long)]
    pub latency: bool,
    /// Threads the timed executables use (--latency, --budget latency=F, and passes that
    /// measure latency themselves: `prune-channels(search=evo,budget=latency)`).
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub latency_threads: usize,
    /// Timed runs per build and round (after a warm-up), for the same.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub latency_runs: usize,
    /// Write the sweep table as JSON.
    #[arg(long, value_name = "FILE")]
    pub sweep_json: Option<PathBuf>,
    /// Write the fidelity-vs-size plot as SVG.
    #[arg(long, value_name = "FILE")]
    pub sweep_svg: Option<PathBuf>,
}

/// The per-output fidelity score of --metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Top-1 agreement where it applies, cosine elsewhere.
    #[default]
    Auto,
    /// Mean cosine similarity.
    Cosine,
    /// Top-1 agreement (cosine where it does not apply).
    Top1,
}

/// What a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Bytes of constants.
    Size,
    /// Weight elements.
    Params,
    /// FLOPs (static shapes).
    Flops,
    /// Measured compiled latency.
    Latency,
}

impl Metric {
    /// The metric of a graph with these statistics and measured latency (NaN when the latency
    /// was not measured, which meets no budget).
    fn of(self, s: &GraphStats, latency_ms: Option<f64>) -> f64 {
        match self {
            Metric::Size => s.weight_bytes as f64,
            Metric::Params => s.params as f64,
            Metric::Flops => s.flops as f64,
            Metric::Latency => latency_ms.unwrap_or(f64::NAN),
        }
    }
}

/// The parsed selection rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// The fidelity score.
    pub metric: Score,
    /// The substituted key and its values.
    pub key: String,
    /// Values, in the order given.
    pub values: Vec<String>,
    /// Largest allowed fidelity loss.
    pub max_drop: Option<f64>,
    /// Budget metric and fraction of the input model's.
    pub budget: Option<(Metric, f64)>,
    /// Measure compiled latency.
    pub latency: bool,
}

/// Parses `1%`, `0.01`.
fn parse_loss(s: &str) -> Result<f64> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|x| x / 100.0)
    } else {
        t.parse::<f64>()
    }
    .with_context(|| format!("--max-drop {s}: expected a fraction (0.01) or a percentage (1%)"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("--max-drop {s}: must be between 0 and 1 (0% and 100%)");
    }
    Ok(v)
}

impl SweepArgs {
    /// Checks the flags against the pipeline; `None` when no sweep was asked for.
    pub fn rules(&self, pipeline: &str) -> Result<Option<Rules>> {
        let Some(sweep) = &self.sweep else {
            if self.max_drop.is_some() || self.budget.is_some() {
                bail!(
                    "--max-drop and --budget choose among the results of --sweep: add e.g. \
                     --sweep r=0.1,0.2,0.3 and write {{r}} where the value goes in --passes"
                );
            }
            if self.sweep_json.is_some() || self.sweep_svg.is_some() || !self.eval.is_empty() {
                bail!("--sweep-json, --sweep-svg and --eval need --sweep");
            }
            return Ok(None);
        };
        let Some((key, vals)) = sweep.split_once('=') else {
            bail!("--sweep {sweep}: expected KEY=V1,V2,... (e.g. bits=8,6,4)");
        };
        let key = key.trim().to_string();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--sweep {sweep}: the key must be a name like bits or ratio");
        }
        let values: Vec<String> = vals
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            bail!("--sweep {sweep}: no values");
        }
        let holder = format!("{{{key}}}");
        if !pipeline.contains(&holder) {
            bail!(
                "--sweep {key}=...: --passes '{pipeline}' has no {holder} to substitute; write it \
                 where the value goes, e.g. 'quantize(bits={holder})'"
            );
        }
        let max_drop = self.max_drop.as_deref().map(parse_loss).transpose()?;
        let budget = match &self.budget {
            None => None,
            Some(b) => {
                let Some((m, f)) = b.split_once('=') else {
                    bail!("--budget {b}: expected size=F, params=F, flops=F or latency=F");
                };
                let metric = match m.trim() {
                    "size" => Metric::Size,
                    "params" => Metric::Params,
                    "flops" => Metric::Flops,
                    "latency" => Metric::Latency,
                    other => bail!(
                        "--budget {b}: unknown metric '{other}' (size, params, flops, latency)"
                    ),
                };
                let f: f64 = f
                    .trim()
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x > 0.0 && x.is_finite())
                    .with_context(|| format!("--budget {b}: the fraction must be > 0"))?;
                Some((metric, f))
            }
        };
        let latency = self.latency || matches!(budget, Some((Metric::Latency, _)));
        if latency && self.latency_runs == 0 {
            bail!("--latency-runs must be at least 1");
        }
        Ok(Some(Rules {
            metric: self.metric,
            key,
            values,
            max_drop,
            budget,
            latency,
        }))
    }
}

/// One measured result.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// The substituted value.
    pub value: String,
    /// The pipeline run.
    pub pipeline: String,
    /// Bytes of constants.
    pub weight_bytes: u64,
    /// Weight elements.
    pub params: u64,
    /// FLOPs.
    pub flops: u64,
    /// Measured compiled latency in milliseconds (with --latency).
    pub latency_ms: Option<f64>,
    /// 1 − fidelity (see --max-drop).
    pub loss: f64,
    /// Lowest mean cosine over outputs.
    pub cosine_mean: f64,
    /// Worst relative error over outputs.
    pub max_rel_err: f64,
    /// Lowest top-1 agreement over classifier-like outputs.
    pub top1: Option<f64>,
    /// Meets --max-drop and --budget.
    pub feasible: bool,
}

/// Fidelity loss: 1 − the lowest per-output score (see [`Score`]).
pub fn loss_of(f: &Fidelity, metric: Score) -> f64 {
    let score = f
        .outputs
        .iter()
        .map(|o| match metric {
            Score::Cosine => o.cosine_mean,
            Score::Auto | Score::Top1 => o.top1_agreement.unwrap_or(o.cosine_mean),
        })
        .fold(1.0f64, f64::min);
    if score.is_nan() {
        1.0
    } else {
        1.0 - score
    }
}

/// Marks feasibility and returns the index of the chosen point, if any. `dense_ms` is the
/// input model's measured latency (needed by a latency budget).
pub fn choose(
    points: &mut [Point],
    rules: &Rules,
    dense: &GraphStats,
    dense_ms: Option<f64>,
) -> Option<usize> {
    let metric = rules.budget.map_or(Metric::Size, |(m, _)| m);
    let cost = |m: Metric, p: &Point| {
        let s = GraphStats {
            params: p.params,
            weight_bytes: p.weight_bytes,
            flops: p.flops,
            ..GraphStats::default()
        };
        m.of(&s, p.latency_ms)
    };
    for p in points.iter_mut() {
        let drop_ok = rules.max_drop.is_none_or(|d| p.loss <= d);
        // NaN (an unmeasured latency) compares false: out of budget.
        let budget_ok = rules
            .budget
            .is_none_or(|(m, f)| cost(m, p) <= f * m.of(dense, dense_ms));
        p.feasible = drop_ok && budget_ok;
    }
    let feasible = points.iter().enumerate().filter(|(_, p)| p.feasible);
    if rules.max_drop.is_some() || rules.budget.is_none() {
        // The strongest compression: the smallest by the budget metric (ties: lower loss).
        feasible
            .min_by(|(_, a), (_, b)| {
                cost(metric, a)
                    .total_cmp(&cost(metric, b))
                    .then(a.loss.total_cmp(&b.loss))
            })
            .map(|(i, _)| i)
    } else {
        feasible
            .min_by(|(_, a), (_, b)| a.loss.total_cmp(&b.loss))
            .map(|(i, _)| i)
    }
}

/// Reference outputs of the input model, computed once.
pub struct Judge {
    names: Vec<String>,
    samples: SampleSet,
    reference: Vec<Vec<pare_ir::Tensor>>,
    interp: pare_interp::Interpreter,
}

impl Judge {
    /// Runs `g` on the evaluation samples.
    pub fn new(g: &pare_ir::Graph, samples: SampleSet, threads: usize) -> Result<Judge> {
        if samples.samples.is_empty() {
            bail!("no evaluation samples: give --eval DIR (or --calib DIR)");
        }
        let interp = pare_interp::Interpreter::with_threads(threads);
        let mut reference = Vec::new();
        for s in &samples.samples {
            reference.push(
                interp
                    .run(g, &s.inputs)
                    .with_context(|| format!("input model on {}", s.origin.display()))?,
            );
        }
        let names = g
            .outputs()
            .iter()
            .map(|&v| g.value(v).name.clone())
            .collect();
        Ok(Judge {
            names,
            samples,
            reference,
            interp,
        })
    }

    /// Fidelity of `g` against the input model.
    pub fn judge(&self, g: &pare_ir::Graph) -> Result<Fidelity> {
        let mut f = Fidelity::new(&self.names);
        for (s, r) in self.samples.samples.iter().zip(&self.reference) {
            let out = self
                .interp
                .run(g, &s.inputs)
                .with_context(|| format!("result on {}", s.origin.display()))?;
            f.add(r, &out)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("comparing on {}", s.origin.display()))?;
        }
        Ok(f)
    }
}

/// The sweep table as Markdown-like text for the terminal.
pub fn table(
    points: &[Point],
    key: &str,
    dense: &GraphStats,
    dense_ms: Option<f64>,
    chosen: Option<usize>,
) -> String {
    let mut s = format!(
        "  {:<10} {:>12} {:>8} {:>12} {:>8} {:>10} {:>10} {:>8}{}  \n",
        key,
        "weights",
        "size",
        "GFLOP",
        "loss",
        "cosine",
        "max rel",
        "top-1",
        if dense_ms.is_some() {
            format!(" {:>18}", "latency")
        } else {
            String::new()
        }
    );
    if let Some(d) = dense_ms {
        s.push_str(&format!(
            "  {:<10} {:>9.2} MB {:>7.1}% {:>12.3} {:>8} {:>10} {:>10} {:>8} {:>9.3} ms {:>5.2}×\n",
            "(input)",
            dense.weight_bytes as f64 / 1e6,
            100.0,
            dense.flops as f64 / 1e9,
            "",
            "",
            "",
            "",
            d,
            1.0
        ));
    }
    for (i, p) in points.iter().enumerate() {
        let lat = match (p.latency_ms, dense_ms) {
            (Some(ms), Some(d)) => format!(" {ms:>9.3} ms {:>5.2}×", ms / d),
            _ => String::new(),
        };
        s.push_str(&format!(
            "  {:<10} {:>9.2} MB {:>7.1}% {:>12.3} {:>8.4} {:>10.5} {:>10.3e} {:>8}{lat}  {}{}\n",
            p.value,
            p.weight_bytes as f64 / 1e6,
            100.0 * p.weight_bytes as f64 / (dense.weight_bytes.max(1) as f64),
            p.flops as f64 / 1e9,
            p.loss,
            p.cosine_mean,
            p.max_rel_err,
            p.top1.map_or("".into(), |t| format!("{t:.3}")),
            if p.feasible { "" } else { "(out of bounds)" },
            if chosen == Some(i) { " ← chosen" } else { "" },
        ));
    }
    s
}

/// Fidelity (1 − loss) against weight bytes relative to the input model.
pub fn svg(points: &[Point], key: &str, dense: &GraphStats, title: &str) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let xs: Vec<f64> = points
        .iter()
        .map(|p| p.weight_bytes as f64 / dense.weight_bytes.max(1) as f64)
        .collect();
    let ys: Vec<f64> = points.iter().map(|p| 1.0 - p.loss).collect();
    // The x range covers the points (the input model at 1.0 only when they come close).
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.01);
    let (xmin, xmax) = ((lo - pad).max(0.0), hi + pad);
    let ymin = ys.iter().copied().fold(1.0f64, f64::min).clamp(0.0, 1.0);
    let ymin = (ymin - (1.0 - ymin) * 0.1).max(0.0);
    let ymin = if ymin >= 0.999 { 0.99 } else { ymin };
    let px = |x: f64| l + (w - l - r) * (x - xmin) / (xmax - xmin);
    let py = |y: f64| t + (h - t - b) * (1.0 - (y - ymin) / (1.0 - ymin));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n\
         <line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">weight bytes / input model</text>\n\
         <text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">fidelity (1 − loss)</text>\n",
        w / 2.0,
        xml(title),
        h - b,
        w - r,
        h - b,
        h - b,
        (l + w - r) / 2.0,
        h - 12.0,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
    );
    for k in 0..=4 {
        let x = xmin + (xmax - xmin) * k as f64 / 4.0;
        let y = ymin + (1.0 - ymin) * k as f64 / 4.0;
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x:.3}</text>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.3}</text>\n",
            px(x),
            h - b + 16.0,
            l - 6.0,
            py(y) + 4.0
        ));
    }
    let path: Vec<String> = xs
        .iter()
        .zip(&ys)
        .map(|(&x, &y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
        path.join(" ")
    ));
    for ((p, &x), &y) in points.iter().zip(&xs).zip(&ys) {
        let color = if p.feasible { "#1f77b4" } else { "#d62728" };
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}={}</text>\n",
            px(x),
            py(y),
            px(x) + 6.0,
            py(y) - 6.0,
            xml(key),
            xml(&p.value)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sweep: &str, drop: Option<&str>, budget: Option<&str>) -> SweepArgs {
        SweepArgs {
            sweep: Some(sweep.into()),
            max_drop: drop.map(Into::into),
            budget: budget.map(Into::into),
            ..SweepArgs::default()
        }
    }

    fn point(v: &str, bytes: u64, loss: f64) -> Point {
        Point {
            value: v.into(),
            pipeline: String::new(),
            weight_bytes: bytes,
            params: bytes / 4,
            flops: bytes,
            loss,
            cosine_mean: 1.0 - loss,
            max_rel_err: loss,
            top1: None,
            latency_ms: Some(bytes as f64 / 100.0),
            feasible: false,
        }
    }

    #[test]
    fn rules_parse_and_reject() {
        let r = args("bits=8, 4 ,3", Some("1%"), Some("size=0.5"))
            .rules("quantize(bits={bits})")
            .expect("rules")
            .expect("some");
        assert_eq!(r.values, ["8", "4", "3"]);
        assert_eq!(r.max_drop, Some(0.01));
        assert_eq!(r.budget, Some((Metric::Size, 0.5)));
        let e = |a: SweepArgs, p: &str| a.rules(p).expect_err("error").to_string();
        assert!(e(args("bits=8", None, None), "quantize(bits=8)").contains("{bits}"));
        assert!(e(args("bits", None, None), "x").contains("KEY=V1"));
        assert!(e(args("bits=8", Some("150%"), None), "q({bits})").contains("between 0 and 1"));
        assert!(e(args("bits=8", None, Some("speed=2")), "q({bits})").contains("unknown metric"));
        let no_sweep = SweepArgs {
            max_drop: Some("1%".into()),
            ..SweepArgs::default()
        };
        assert!(e(no_sweep, "q").contains("--sweep"));
        assert_eq!(SweepArgs::default().rules("q").expect("ok"), None);
    }

    #[test]
    fn choose_takes_the_strongest_within_bounds() {
        let dense = GraphStats {
            weight_bytes: 1000,
            params: 250,
            flops: 1000,
            ..GraphStats::default()
        };
        let mut pts = vec![
            point("8", 260, 0.001),
            point("6", 200, 0.004),
            point("4", 140, 0.02),
            point("3", 110, 0.2),
        ];
        let rules = |d: Option<f64>, b: Option<f64>| Rules {
            metric: Score::Auto,
            key: "bits".into(),
            values: vec![],
            max_drop: d,
            budget: b.map(|f| (Metric::Size, f)),
            latency: false,
        };
        // Within 1 %: the smallest of 8 and 6 bits.
        assert_eq!(
            choose(&mut pts, &rules(Some(0.01), None), &dense, None),
            Some(1)
        );
        assert!(pts[0].feasible && pts[1].feasible && !pts[2].feasible);
        // Budget only: the most faithful under 15 % of the size.
        assert_eq!(
            choose(&mut pts, &rules(None, Some(0.15)), &dense, None),
            Some(2)
        );
        // Both, unsatisfiable.
        assert_eq!(
            choose(&mut pts, &rules(Some(0.01), Some(0.15)), &dense, None),
            None
        );
        // Neither: the smallest.
        assert_eq!(choose(&mut pts, &rules(None, None), &dense, None), Some(3));
        // A latency budget (the test points take bytes / 100 ms): under 1.5 ms of the input's
        // 10 ms, the most faithful is 4 bits; with --max-drop 5 %, the fastest within it.
        let lat = |d: Option<f64>, f: f64| Rules {
            budget: Some((Metric::Latency, f)),
            latency: true,
            ..rules(d, None)
        };
        assert_eq!(
            choose(&mut pts, &lat(None, 0.15), &dense, Some(10.0)),
            Some(2)
        );
        assert_eq!(
            choose(&mut pts, &lat(Some(0.05), 0.3), &dense, Some(10.0)),
            Some(2)
        );
        assert_eq!(
            choose(&mut pts, &lat(Some(0.005), 0.3), &dense, Some(10.0)),
            Some(1)
        );
        // Unmeasured latencies meet no latency budget.
        for p in &mut pts {
            p.latency_ms = None;
        }
        assert_eq!(choose(&mut pts, &lat(None, 0.9), &dense, Some(10.0)), None);
    }

    #[test]
    fn loss_uses_top1_for_classifiers_and_cosine_otherwise() {
        let t = |v: Vec<f32>| pare_ir::Tensor::from_vec(vec![2, 3], v);
        let mut f = Fidelity::new(&["y".to_string()]);
        // Row 0 keeps its arg-max, row 1 loses it.
        f.add(
            &[t(vec![1.0, 3.0, 2.0, 0.5, -1.0, 0.0])],
            &[t(vec![1.0, 3.0, 2.0, 0.5, -1.0, 0.6])],
        )
        .expect("add");
        assert!((loss_of(&f, Score::Auto) - 0.5).abs() < 1e-12);
        let cos = loss_of(&f, Score::Cosine);
        assert!(cos > 0.0 && cos < 0.1, "{cos}");
        let svg = svg(
            &[point("8", 260, 0.001)],
            "bits",
            &GraphStats::default(),
            "a<b",
        );
        assert!(svg.contains("a&lt;b") && svg.contains("bits=8"));
    }
}
