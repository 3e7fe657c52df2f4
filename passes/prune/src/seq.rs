//! Sequential least-squares reconstruction: after the channels are gone, every consumer, in
//! graph order, refits its remaining input weights so that, fed with the *pruned* model's
//! activations, it reproduces the *dense* model's output:
//! `W' = argmin ‖Y_dense − b − X̃·W'‖² + λ‖W' − W‖² = (X̃ᵀX̃ + λI)⁻¹ (X̃ᵀ(Y_dense − b) + λW)`.
//!
//! Unlike the one-shot update from the dense `XᵀX`, this sees the error the layers before
//! it introduced and compensates for it, layer by layer (the feature-map reconstruction of
//! He et al. 2017 and ThiNet, Luo et al. 2017, in the sequential form of OBC/SparseGPT).

use crate::linalg::{consumer_layout, ConsumerMat};
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, Par, Side};
use pare_analysis::{CalibStats, RowLayout};
use pare_interp::{Interpreter, Value};
use pare_ir::{Graph, NodeId, Op, ValueId};
use pare_pass::{Sample, SampleSet};
use std::collections::{BTreeSet, HashMap};

/// One consumer to refit.
pub struct Job {
    /// The node (same id in the dense and the pruned graph).
    pub node: NodeId,
    /// Its output channels that were removed (its own producer side).
    pub out_removed: BTreeSet<usize>,
}

/// What a refit did, for the report.
#[derive(Default)]
pub struct Outcome {
    /// Consumers refitted.
    pub refitted: usize,
    /// Consumers left as they were, with why.
    pub skipped: Vec<(NodeId, String)>,
    /// `Σ‖Y − Ŷ‖²` before and after the refit, over the refitted consumers.
    pub err_before: f64,
    /// After.
    pub err_after: f64,
    /// `Σ‖Y − b‖²`.
    pub energy: f64,
}

/// Observed f32 values: shape and elements.
type Observed = HashMap<ValueId, (Vec<usize>, Vec<f32>)>;

/// Observes `values` in one run of `g` on `inputs`.
fn observe(
    interp: &Interpreter,
    g: &Graph,
    sample: &Sample,
    values: &[ValueId],
) -> Result<Observed, String> {
    let vals = sample.values().map_err(|e| e.to_string())?;
    let mut seen = HashMap::new();
    interp
        .run_observed(g, vals, &mut |v, val| {
            if values.contains(&v) {
                if let Value::F32(a) = val {
                    seen.insert(v, (a.shape().to_vec(), a.iter().copied().collect()));
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(seen)
}

/// The bias of consumer `n` (Conv `B`, Gemm `C` of `N` elements), or zeros.
fn bias_of(g: &Graph, n: NodeId, len: usize) -> Option<Vec<f64>> {
    let node = g.node(n);
    let b = match &node.op {
        Op::Conv(_) | Op::Gemm(_) => node.input(2),
        _ => None,
    };
    match b {
        None => Some(vec![0.0; len]),
        Some(b) => {
            let t = g.constant(b)?;
            (t.numel() == len).then(|| t.to_f64_vec()).flatten()
        }
    }
}

/// Output rows of `y` (shape `shape`) in the order of the input rows: Conv `[n, c, …]` →
/// one row per (n, spatial position) with the `c` channels; MatMul/Gemm: the last axis.
fn output_row(y: &[f32], shape: &[usize], conv: bool, r: usize, keep: &[usize], out: &mut [f64]) {
    if conv {
        let c = shape[1];
        let spatial: usize = shape[2..].iter().product();
        let (ni, pos) = (r / spatial, r % spatial);
        for (o, &ch) in out.iter_mut().zip(keep) {
            *o = y[(ni * c + ch) * spatial + pos] as f64;
        }
    } else {
        let n = shape.last().copied().unwrap_or(0);
        for (o, &ch) in out.iter_mut().zip(keep) {
            *o = y[r * n + ch] as f64;
        }
    }
}

/// Refits every job's weight in `p` (graph order) against `dense` on `samples`.
#[allow(clippy::too_many_arguments)]
pub fn refit(
    dense: &Graph,
    p: &mut Graph,
    stats: &CalibStats,
    samples: &SampleSet,
    jobs: &[Job],
    damp: f64,
    progress: &mut dyn FnMut(),
) -> Result<Outcome, String> {
    let interp = Interpreter::new().cache_constants(false);
    let order = p.topo_order().map_err(|e| e.to_string())?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut jobs: Vec<&Job> = jobs.iter().filter(|j| pos.contains_key(&j.node)).collect();
    jobs.sort_by_key(|j| pos[&j.node]);

    // Dense outputs of every consumer, per sample.
    let outs: Vec<ValueId> = jobs
        .iter()
        .filter_map(|j| dense.node(j.node).outputs().first().copied())
        .collect();
    let dense_y: Vec<Observed> = samples
        .samples
        .iter()
        .map(|s| observe(&interp, dense, s, &outs))
        .collect::<Result<_, _>>()?;

    let mut outcome = Outcome::default();
    for job in jobs {
        progress();
        let n = job.node;
        let skip = |o: &mut Outcome, why: &str| o.skipped.push((n, why.to_string()));
        let Some(h) = stats.hessian(n) else {
            skip(
                &mut outcome,
                "no XᵀX (not a linear layer the calibration covers)",
            );
            continue;
        };
        let conv = matches!(h.layout, RowLayout::Conv { .. });
        if h.groups != 1 {
            skip(&mut outcome, "grouped convolution");
            continue;
        }
        let (Some(x), Some(w), Some(&y)) = (
            p.node(n).input(0),
            p.node(n).input(1),
            dense.node(n).outputs().first(),
        ) else {
            continue;
        };
        let Some(wt) = p.constant(w) else {
            skip(&mut outcome, "the weight is not a constant");
            continue;
        };
        let Some(layout) = consumer_layout(p, n, wt.shape().len()) else {
            skip(&mut outcome, "weight layout");
            continue;
        };
        let Some(mat) = ConsumerMat::new(wt, layout) else {
            skip(&mut outcome, "weight is not f32");
            continue;
        };
        let (k, nn) = (mat.k, mat.n);
        let Some(full_n) = dense
            .value(y)
            .ty
            .shape
            .as_ref()
            .and_then(|s| s.0.get(if conv { 1 } else { s.0.len().saturating_sub(1) }))
            .and_then(|d| d.fixed())
            .map(|d| d as usize)
        else {
            skip(&mut outcome, "output channels unknown");
            continue;
        };
        let keep: Vec<usize> = (0..full_n)
            .filter(|c| !job.out_removed.contains(c))
            .collect();
        if keep.len() != nn {
            skip(&mut outcome, "output channels do not match the weight");
            continue;
        }
        let Some(bias) = bias_of(p, n, nn) else {
            skip(&mut outcome, "bias shape");
            continue;
        };

        // The prefix of the pruned graph that computes this consumer's input.
        let mut sub = p.clone();
        for i in 0..sub.outputs().len() {
            sub.set_output(i, x);
        }
        sub.remove_dead_nodes();

        let mut a = Mat::<f64>::zeros(k, k);
        let mut b = Mat::<f64>::zeros(k, nn);
        let mut yy = 0.0;
        let mut ok = true;
        for (si, s) in samples.samples.iter().enumerate() {
            let seen = observe(&interp, &sub, s, &[x])?;
            let (Some((xs, xd)), Some((ys, yd))) = (seen.get(&x), dense_y[si].get(&y)) else {
                ok = false;
                break;
            };
            let rows = match h.layout.rows(k, xd, xs) {
                Ok(r) => r,
                Err(_) => {
                    ok = false;
                    break;
                }
            };
            let total: usize = if conv {
                ys[0] * ys[2..].iter().product::<usize>()
            } else {
                yd.len() / full_n.max(1)
            };
            if total != rows.count() {
                ok = false;
                break;
            }
            let chunk = ((1usize << 20) / (k + nn).max(1)).clamp(1, total.max(1));
            let mut r0 = 0;
            let mut xr = vec![0f64; k];
            let mut yr = vec![0f64; nn];
            while r0 < total {
                let nr = chunk.min(total - r0);
                let mut xc = Mat::<f64>::zeros(nr, k);
                let mut yc = Mat::<f64>::zeros(nr, nn);
                for i in 0..nr {
                    rows.fill(0, r0 + i, &mut xr);
                    output_row(yd, ys, conv, r0 + i, &keep, &mut yr);
                    for (j, v) in xr.iter().enumerate() {
                        xc[(i, j)] = *v;
                    }
                    for (j, v) in yr.iter().enumerate() {
                        let t = v - bias[j];
                        yc[(i, j)] = t;
                        yy += t * t;
                    }
                }
                matmul(
                    a.as_mut(),
                    Accum::Add,
                    xc.transpose(),
                    xc.as_ref(),
                    1.0,
                    Par::Seq,
                );
                matmul(
                    b.as_mut(),
                    Accum::Add,
                    xc.transpose(),
                    yc.as_ref(),
                    1.0,
                    Par::Seq,
                );
                r0 += nr;
            }
        }
        if !ok {
            skip(
                &mut outcome,
                "rows of the pruned input do not match the dense output",
            );
            continue;
        }
        // Residual ‖Y − XW‖² = yy − 2 tr(WᵀB) + tr(WᵀAW), for the current and the new W.
        let resid = |wm: &Mat<f64>| {
            let aw = &a * wm;
            let mut r = yy;
            for i in 0..k {
                for j in 0..nn {
                    r += wm[(i, j)] * (aw[(i, j)] - 2.0 * b[(i, j)]);
                }
            }
            r.max(0.0)
        };
        let w0 = Mat::<f64>::from_fn(k, nn, |i, j| mat.w[i * nn + j]);
        let mut ad = a.clone();
        let mean = (0..k).map(|i| a[(i, i)]).sum::<f64>() / k.max(1) as f64;
        for i in 0..k {
            if ad[(i, i)] <= 0.0 {
                ad[(i, i)] = mean.max(1e-12);
            }
            ad[(i, i)] += damp * mean.max(1e-12);
        }
        let Ok(llt) = ad.llt(Side::Lower) else {
            skip(&mut outcome, "X̃ᵀX̃ is not positive definite");
            continue;
        };
        // Proximal least squares: (X̃ᵀX̃ + λI)·W' = X̃ᵀY + λ·W, i.e. the damping pulls towards
        // the current weights rather than towards zero, so that a calibration set with fewer
        // rows than unknowns moves the weights only where it has evidence.
        let mut rhs = b.clone();
        for i in 0..k {
            let lam = ad[(i, i)] - a[(i, i)].max(0.0);
            for j in 0..nn {
                rhs[(i, j)] += lam * w0[(i, j)];
            }
        }
        let w1 = llt.solve(&rhs);
        let (e0, e1) = (resid(&w0), resid(&w1));
        if !(e1.is_finite() && e1 < e0) {
            skip(&mut outcome, "the refit does not reduce the error");
            outcome.err_before += e0;
            outcome.err_after += e0;
            outcome.energy += yy;
            continue;
        }
        let mut m = mat.clone();
        for i in 0..k {
            for j in 0..nn {
                m.w[i * nn + j] = w1[(i, j)];
            }
        }
        crate::edit::replace_const(p, w, m.to_tensor());
        outcome.refitted += 1;
        outcome.err_before += e0;
        outcome.err_after += e1;
        outcome.energy += yy;
    }
    Ok(outcome)
}
