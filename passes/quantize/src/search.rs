//! `calibrate=auto`: the activation range of each tensor is chosen, among the ranges the
//! fixed rules give ([`CANDIDATES`]), by the error it causes at the outputs of the layers that
//! read it, measured on the calibration samples.
//!
//! For an activation `X` read by quantized linear layers `L_1 … L_m` (MatMul, Gemm, Conv,
//! without their bias) and a candidate grid `q`, the score is
//! `Σ_i ‖L_i(q(X) - X)‖² / ‖L_i(X)‖²` summed over the calibration samples: the relative
//! output error each reader would see if only `X` were quantized (the layers are linear, so
//! `L(q(X)) - L(X) = L(q(X) - X)`). Unlike the histogram rules, this weighs each channel's
//! error by the weights that read it: clipping a channel the next layer amplifies costs more
//! than clipping one it ignores, and a tensor feeding a squeeze-excitation or an attention
//! projection keeps its rare large values when they matter downstream.
//!
//! Cost: the interpreter runs each calibration sample once more (observing the quantized
//! activations), and each reader runs once on `X` and once per distinct candidate on
//! `q(X) - X`: about `1 + candidates` times the FLOPs of the quantized layers per sample.
//! Only the activations of one sample are held at a time.

use crate::act::{select_range, ActGrid, Calibrate};
use pare_analysis::CalibStats;
use pare_interp::Interpreter;
use pare_ir::{DType, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId};
use pare_pass::{PassError, SampleSet};
use std::collections::{HashMap, HashSet};

/// The fixed rules `calibrate=auto` chooses from.
pub const CANDIDATES: [Calibrate; 6] = [
    Calibrate::MinMax,
    Calibrate::Percentile(99.9),
    Calibrate::Percentile(99.99),
    Calibrate::Percentile(99.999),
    Calibrate::Mse,
    Calibrate::Entropy,
];

/// What the search picked for one activation.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The winning rule.
    pub rule: Calibrate,
    /// Its range.
    pub range: (f32, f32),
    /// Its score (summed relative squared output error of the readers).
    pub score: f64,
    /// Min-max's score, for the report.
    pub minmax_score: f64,
}

/// One reader: the node's op and its constant weight operand.
struct Reader {
    op: Op,
    weight: Tensor,
}

/// Candidate ranges of one activation (distinct), with the rules that give them.
struct Activation {
    candidates: Vec<(Calibrate, (f32, f32))>,
    readers: Vec<Reader>,
    /// Per candidate, per reader: summed squared error; per reader: summed squared output.
    err: Vec<Vec<f64>>,
    base: Vec<f64>,
}

/// Runs the search for every activation in `readers` (activation → quantized nodes reading
/// it as operand 0, whose operand 1 is a constant weight). Activations without statistics or
/// readers are left out of the result.
pub fn search(
    g: &Graph,
    stats: &CalibStats,
    samples: &SampleSet,
    readers: &[(ValueId, Vec<NodeId>)],
    symmetric: bool,
    interp: &Interpreter,
) -> Result<HashMap<ValueId, Choice>, PassError> {
    let mut acts: HashMap<ValueId, Activation> = HashMap::new();
    for (x, nodes) in readers {
        let Some(st) = stats.stats(*x) else { continue };
        let mut candidates: Vec<(Calibrate, (f32, f32))> = Vec::new();
        for rule in CANDIDATES {
            if let Some(r) = select_range(st, rule, symmetric) {
                let grid = ActGrid::fit(r.0, r.1, symmetric);
                // Rules giving the same grid are one candidate (the first rule names it).
                if !candidates
                    .iter()
                    .any(|(_, c)| ActGrid::fit(c.0, c.1, symmetric) == grid)
                {
                    candidates.push((rule, r));
                }
            }
        }
        let rs: Vec<Reader> = nodes
            .iter()
            .filter_map(|&n| {
                let nd = g.node(n);
                let w = g.constant(nd.input(1)?)?.clone();
                Some(Reader {
                    op: nd.op.clone(),
                    weight: w,
                })
            })
            .collect();
        if candidates.is_empty() || rs.is_empty() {
            continue;
        }
        acts.insert(
            *x,
            Activation {
                err: vec![vec![0.0; rs.len()]; candidates.len()],
                base: vec![0.0; rs.len()],
                candidates,
                readers: rs,
            },
        );
    }
    if acts.is_empty() {
        return Ok(HashMap::new());
    }
    let wanted: HashSet<ValueId> = acts.keys().copied().collect();
    for s in &samples.samples {
        let inputs = s.values()?;
        let mut seen: Vec<(ValueId, Tensor)> = Vec::new();
        interp.run_observed(g, inputs, &mut |v, val| {
            if wanted.contains(&v) && val.dtype() == DType::F32 {
                seen.push((v, val.to_tensor()));
            }
        })?;
        for (v, x) in seen {
            let Some(a) = acts.get_mut(&v) else { continue };
            score(a, &x, symmetric, interp)
                .map_err(|m| PassError::failed("quantize", format!("calibrate=auto: {m}")))?;
        }
    }
    let mut out = HashMap::new();
    for (v, a) in acts {
        let rel = |errs: &[f64]| -> f64 {
            errs.iter()
                .zip(&a.base)
                .map(|(e, b)| if *b > 0.0 { e / b } else { 0.0 })
                .sum()
        };
        let scores: Vec<f64> = a.err.iter().map(|e| rel(e)).collect();
        // Ties keep the earlier (simpler) rule.
        let mut best = 0usize;
        for (i, s) in scores.iter().enumerate() {
            if *s < scores[best] {
                best = i;
            }
        }
        let minmax_score = a
            .candidates
            .iter()
            .position(|(r, _)| *r == Calibrate::MinMax)
            .map_or(f64::NAN, |i| scores[i]);
        out.insert(
            v,
            Choice {
                rule: a.candidates[best].0,
                range: a.candidates[best].1,
                score: scores[best],
                minmax_score,
            },
        );
    }
    Ok(out)
}

/// Adds one sample's errors for every candidate and reader of `a`.
fn score(
    a: &mut Activation,
    x: &Tensor,
    symmetric: bool,
    interp: &Interpreter,
) -> Result<(), String> {
    let xs: Vec<f32> = x.to_vec::<f32>().map_err(|e| e.to_string())?;
    let shape = x.shape().to_vec();
    for (ri, r) in a.readers.iter().enumerate() {
        a.base[ri] += sum_sq(&apply(r, &shape, xs.clone(), interp)?);
    }
    for (ci, (_, (lo, hi))) in a.candidates.iter().enumerate() {
        let grid = ActGrid::fit(*lo, *hi, symmetric);
        let dx: Vec<f32> = xs.iter().map(|&v| grid.fake_quant(v) - v).collect();
        for (ri, r) in a.readers.iter().enumerate() {
            a.err[ci][ri] += sum_sq(&apply(r, &shape, dx.clone(), interp)?);
        }
    }
    Ok(())
}

fn sum_sq(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// The reader's op on `x` (bias left out), through a one-node graph in the interpreter.
fn apply(
    r: &Reader,
    shape: &[usize],
    x: Vec<f32>,
    interp: &Interpreter,
) -> Result<Vec<f32>, String> {
    let mut g = Graph::new("reader");
    let xin = g.add_input("x", TensorType::new(DType::F32, Shape::fixed(shape)));
    let w = g.add_const("w", r.weight.clone());
    let n = g.add_node(
        "l",
        r.op.clone(),
        vec![Some(xin), Some(w)],
        vec!["y".into()],
    );
    let y = g.node(n).outputs()[0];
    g.add_output(y);
    let out = interp
        .run(&g, &[Tensor::from_vec(shape.to_vec(), x)])
        .map_err(|e| e.to_string())?;
    out.first()
        .ok_or("no output")?
        .to_vec::<f32>()
        .map_err(|e| e.to_string())
}
