//! The least-squares refit (`refit=true`): after the rotation and slicing, the linear maps
//! around the sliced stream are re-solved, one group at a time in graph order, so that the
//! sliced model reproduces the dense model's intermediate values on the calibration samples.
//!
//! Every group is a set of linear maps reading the same inputs `X̃` of the sliced graph (as
//! it is at that point: the earlier groups already refitted); with a ones column for the
//! bias, each map's weight stack `W` (its `K×N` weight, or several stacked, and its bias) is
//!
//! `W = argmin ‖X̃W − Y‖² + λ‖W − W₀‖²`, `λ = damp · mean(diag(X̃ᵀX̃))`,
//!
//! solved by Cholesky of `X̃ᵀX̃ + λI` (`W₀` the rewritten weights; the damping pulls towards
//! them, not towards zero, so a map the data already fits stays as it is). `X̃ᵀX̃` and `X̃ᵀY`
//! are accumulated sample by sample. The groups, per norm `i` in order:
//!
//! - the linear layer writing into norm `i` (attention output, FFN down) together with the
//!   residual MatMuls feeding norm `i`: inputs `[h, ñ_j…, 1]`, target the dense `z_i` mapped
//!   into the sliced stream, `z_i C P_i`, minus the terms of the sliced sum that are not
//!   refitted (residual biases, tables, constants); with several writers each is refitted
//!   alone against the same target minus the other terms;
//! - the linear layers reading norm `i` (attention Q/K/V, FFN up) and its restore MatMul:
//!   inputs `[ñ_i, 1]`, target the dense layer output (the dense norm output for the
//!   restore).
//!
//! A map whose calibration error the solve does not lower keeps its weights.

use crate::basis::Basis;
use crate::rewrite::{centered_axes, Inserted, Site, Slot};
use crate::structure::Plan;
use crate::NAME;
use faer::{Mat, Side};
use pare_interp::Interpreter;
use pare_ir::{Graph, Tensor, ValueId};
use pare_pass::{PassError, SampleSet};
use std::collections::HashMap;

/// What one map's refit did.
#[derive(Clone, Debug)]
pub(crate) struct Refitted {
    /// The map (node name).
    pub name: String,
    /// Relative error `‖X̃W − Y‖ / ‖Y‖` on the calibration data before the refit.
    pub before: f64,
    /// The same after the refit.
    pub after: f64,
    /// The refit lowered the error and was kept.
    pub kept: bool,
}

/// The target of one map: `dense · project + Σ plus − Σ minus` (`plus` and `minus` values of
/// the sliced graph).
struct Target {
    dense: ValueId,
    d: usize,
    project: Option<Vec<f64>>,
    plus: Vec<ValueId>,
    minus: Vec<ValueId>,
}

struct Layer {
    name: String,
    /// One per group input, in order.
    weights: Vec<Slot>,
    bias: Option<Slot>,
    cols: usize,
    target: Target,
}

struct Group {
    /// Values of the sliced graph and their widths; `X̃ = [inputs…, 1]`.
    inputs: Vec<(ValueId, usize)>,
    layers: Vec<Layer>,
}

fn internal(msg: impl Into<String>) -> PassError {
    PassError::failed(NAME, format!("refit: {}", msg.into()))
}

/// The width of a site's weight input (`K`).
fn weight_rows(g: &Graph, s: &Slot) -> Result<(usize, usize), PassError> {
    let v = g
        .node(s.node)
        .input(s.operand)
        .ok_or_else(|| internal("a weight operand is missing"))?;
    let t = g
        .constant(v)
        .ok_or_else(|| internal("a weight is not a constant"))?;
    match *t.shape() {
        [r, c] => Ok(if s.trans { (c, r) } else { (r, c) }),
        _ => Err(internal("a weight is not a matrix")),
    }
}

/// A node's name, or its first output's when it has none.
fn label(g: &Graph, n: pare_ir::NodeId) -> String {
    let node = g.node(n);
    if !node.name.is_empty() {
        return node.name.clone();
    }
    node.outputs()
        .first()
        .map_or_else(String::new, |&v| g.value(v).name.clone())
}

fn input_of(g: &Graph, site: &Site) -> Result<ValueId, PassError> {
    g.node(site.node)
        .input(0)
        .ok_or_else(|| internal("a linear layer has no input"))
}

/// The groups in graph order.
fn groups(
    g: &Graph,
    plan: &Plan,
    bases: &[Basis],
    keep: &[usize],
    ins: &Inserted,
) -> Result<Vec<Group>, PassError> {
    let mut out = Vec::new();
    for (i, norm) in plan.norms.iter().enumerate() {
        // Writers into norm i (and the residual MatMuls feeding it).
        let writers: Vec<(&Site, String)> = plan
            .linears
            .values()
            .filter(|l| l.writes == Some(i) && l.reads.is_none())
            .filter_map(|l| ins.linear_sites.get(&l.node).map(|s| (s, label(g, l.node))))
            .collect();
        let residuals: Vec<&Site> = ins
            .residual_sites
            .iter()
            .filter(|(to, _, _)| *to == i)
            .map(|(_, _, s)| s)
            .collect();
        let w_i = ins
            .stream_inputs
            .get(i)
            .copied()
            .ok_or_else(|| internal("no stream input"))?;
        let cp = centered_axes(&bases[i], keep[i]);
        let target = |plus: Vec<ValueId>| Target {
            dense: norm.input,
            d: norm.d,
            project: Some(cp.clone()),
            plus,
            minus: vec![w_i],
        };
        if writers.len() == 1 {
            let (site, name) = &writers[0];
            let h = input_of(g, site)?;
            let (k, n) = weight_rows(g, &site.weight)?;
            let mut inputs = vec![(h, k)];
            let mut weights = vec![site.weight];
            let mut plus = vec![site.out];
            for r in &residuals {
                let (kr, _) = weight_rows(g, &r.weight)?;
                inputs.push((input_of(g, r)?, kr));
                weights.push(r.weight);
                plus.push(r.pre_bias);
            }
            let name = if residuals.is_empty() {
                name.clone()
            } else {
                format!("{name} + residual")
            };
            out.push(Group {
                inputs,
                layers: vec![Layer {
                    name,
                    weights,
                    bias: site.bias,
                    cols: n,
                    target: target(plus),
                }],
            });
        } else {
            for (site, name) in &writers {
                let (k, n) = weight_rows(g, &site.weight)?;
                out.push(Group {
                    inputs: vec![(input_of(g, site)?, k)],
                    layers: vec![Layer {
                        name: name.clone(),
                        weights: vec![site.weight],
                        bias: site.bias,
                        cols: n,
                        target: target(vec![site.out]),
                    }],
                });
            }
        }
        // Readers of norm i.
        let stream = ins
            .streams
            .get(i)
            .copied()
            .ok_or_else(|| internal("no stream"))?;
        let mut layers = Vec::new();
        for l in plan.linears.values() {
            if l.reads != Some(i) || l.writes.is_some() {
                continue;
            }
            let Some(site) = ins.linear_sites.get(&l.node) else {
                continue;
            };
            let (_, n) = weight_rows(g, &site.weight)?;
            layers.push(Layer {
                name: label(g, l.node),
                weights: vec![site.weight],
                bias: site.bias,
                cols: n,
                target: Target {
                    dense: l.out,
                    d: n,
                    project: None,
                    plus: Vec::new(),
                    minus: Vec::new(),
                },
            });
        }
        for (r, site) in &ins.restore_sites {
            if *r != i {
                continue;
            }
            let (_, n) = weight_rows(g, &site.weight)?;
            layers.push(Layer {
                name: format!("{} restore", label(g, norm.node)),
                weights: vec![site.weight],
                bias: site.bias,
                cols: n,
                target: Target {
                    dense: norm.output,
                    d: n,
                    project: None,
                    plus: Vec::new(),
                    minus: Vec::new(),
                },
            });
        }
        if !layers.is_empty() {
            out.push(Group {
                inputs: vec![(stream, keep[i])],
                layers,
            });
        }
    }
    Ok(out)
}

/// Observed values: shape and data.
type Observed = HashMap<ValueId, (Vec<usize>, Vec<f64>)>;

/// Runs `g` on one sample's inputs and keeps the values of `wanted` (as `f64`).
fn observe(
    g: &Graph,
    interp: &Interpreter,
    inputs: Vec<pare_interp::Value>,
    wanted: &[ValueId],
) -> Result<Observed, PassError> {
    let mut got: Observed = HashMap::new();
    let mut failure: Option<String> = None;
    interp.run_observed(g, inputs, &mut |v, val| {
        if wanted.contains(&v) {
            match val.to_f64_vec() {
                Ok(x) => {
                    got.insert(v, (val.shape().to_vec(), x));
                }
                Err(e) => failure = Some(e),
            }
        }
    })?;
    if let Some(f) = failure {
        return Err(internal(f));
    }
    Ok(got)
}

/// `values[v]` as an `m×w` matrix.
fn matrix(got: &Observed, v: ValueId, w: usize) -> Result<(usize, &[f64]), PassError> {
    let (shape, x) = got
        .get(&v)
        .ok_or_else(|| internal("a value was not computed"))?;
    if shape.last() != Some(&w) || w == 0 {
        return Err(internal(format!(
            "a value has shape {shape:?}, expected last dimension {w}"
        )));
    }
    Ok((x.len() / w, x.as_slice()))
}

/// Accumulated statistics of one group.
struct Stats {
    /// `X̃ᵀX̃` (`p×p`).
    xx: Mat<f64>,
    /// Per layer: `X̃ᵀY` (`p×N`) and `‖Y‖²`.
    xy: Vec<(Mat<f64>, f64)>,
}

fn accumulate(
    dense: &Graph,
    g: &Graph,
    group: &Group,
    samples: &SampleSet,
    dense_interp: &Interpreter,
    interp: &Interpreter,
) -> Result<Stats, PassError> {
    let p: usize = group.inputs.iter().map(|(_, w)| w).sum::<usize>() + 1;
    let mut st = Stats {
        xx: Mat::zeros(p, p),
        xy: group
            .layers
            .iter()
            .map(|l| (Mat::zeros(p, l.cols), 0.0))
            .collect(),
    };
    let dense_wanted: Vec<ValueId> = group.layers.iter().map(|l| l.target.dense).collect();
    let mut wanted: Vec<ValueId> = group.inputs.iter().map(|(v, _)| *v).collect();
    for l in &group.layers {
        wanted.extend(l.target.plus.iter().chain(&l.target.minus));
    }
    for s in &samples.samples {
        let dv = observe(dense, dense_interp, s.values()?, &dense_wanted)?;
        let sv = observe(g, interp, s.values()?, &wanted)?;
        let mut m = None;
        let mut x = Mat::<f64>::zeros(0, 0);
        let mut off = 0;
        for &(v, w) in &group.inputs {
            let (rows, data) = matrix(&sv, v, w)?;
            if m.is_none() {
                m = Some(rows);
                x = Mat::zeros(rows, p);
                for r in 0..rows {
                    x[(r, p - 1)] = 1.0;
                }
            }
            if m != Some(rows) {
                return Err(internal("the inputs of a group have different row counts"));
            }
            for r in 0..rows {
                for c in 0..w {
                    x[(r, off + c)] = data[r * w + c];
                }
            }
            off += w;
        }
        let rows = m.unwrap_or(0);
        if rows == 0 {
            continue;
        }
        st.xx += x.transpose() * &x;
        for (l, (xy, yy)) in group.layers.iter().zip(st.xy.iter_mut()) {
            let t = &l.target;
            let (dr, dd) = matrix(&dv, t.dense, t.d)?;
            if dr != rows {
                return Err(internal(
                    "dense and sliced values have different row counts",
                ));
            }
            let dm = Mat::from_fn(rows, t.d, |r, c| dd[r * t.d + c]);
            let mut y = match &t.project {
                Some(pm) => {
                    let pm = Mat::from_fn(t.d, l.cols, |r, c| pm[r * l.cols + c]);
                    dm * pm
                }
                None => dm,
            };
            if y.ncols() != l.cols {
                return Err(internal("a target has the wrong width"));
            }
            for (sign, vs) in [(1.0, &t.plus), (-1.0, &t.minus)] {
                for &v in vs {
                    let (r2, data) = matrix(&sv, v, l.cols)?;
                    if r2 != rows {
                        return Err(internal("a target term has the wrong row count"));
                    }
                    for r in 0..rows {
                        for c in 0..l.cols {
                            y[(r, c)] += sign * data[r * l.cols + c];
                        }
                    }
                }
            }
            *xy += x.transpose() * &y;
            *yy += y.squared_norm_l2();
        }
    }
    Ok(st)
}

fn constant_at(g: &Graph, s: &Slot) -> Result<(ValueId, Vec<usize>, Vec<f64>), PassError> {
    let v = g
        .node(s.node)
        .input(s.operand)
        .ok_or_else(|| internal("an operand is missing"))?;
    let t = g
        .constant(v)
        .ok_or_else(|| internal("a weight is not a constant"))?;
    let x = t
        .to_f64_vec()
        .ok_or_else(|| internal("a weight is not f32"))?;
    Ok((v, t.shape().to_vec(), x))
}

/// The layer's current weight stack (`p_used×N`: the weights' rows, then the bias row).
fn current(g: &Graph, group: &Group, l: &Layer) -> Result<Mat<f64>, PassError> {
    let p: usize = group.inputs.iter().map(|(_, w)| w).sum::<usize>() + l.bias.is_some() as usize;
    let mut w0 = Mat::<f64>::zeros(p, l.cols);
    let mut off = 0;
    for (s, &(_, k)) in l.weights.iter().zip(&group.inputs) {
        let (_, _, x) = constant_at(g, s)?;
        if x.len() != k * l.cols {
            return Err(internal("a weight has the wrong size"));
        }
        for r in 0..k {
            for c in 0..l.cols {
                w0[(off + r, c)] = if s.trans {
                    x[c * k + r]
                } else {
                    x[r * l.cols + c]
                };
            }
        }
        off += k;
    }
    if let Some(b) = &l.bias {
        let (_, _, x) = constant_at(g, b)?;
        if x.len() != l.cols {
            return Err(internal("a bias has the wrong size"));
        }
        for c in 0..l.cols {
            w0[(off, c)] = x[c];
        }
    }
    Ok(w0)
}

/// `‖X̃W − Y‖² = tr(WᵀGW) − 2 tr(WᵀB) + ‖Y‖²`.
fn residual(gm: &Mat<f64>, b: &Mat<f64>, yy: f64, w: &Mat<f64>) -> f64 {
    let gw = gm * w;
    let mut e = yy;
    for c in 0..w.ncols() {
        for r in 0..w.nrows() {
            e += w[(r, c)] * (gw[(r, c)] - 2.0 * b[(r, c)]);
        }
    }
    e.max(0.0)
}

fn write(g: &mut Graph, s: &Slot, data: Vec<f64>) -> Result<(), PassError> {
    let (v, shape, _) = constant_at(g, s)?;
    let name = format!("{}.refit", g.value(v).name);
    let name = if g.find_value(&name).is_none() {
        name
    } else {
        (1..)
            .map(|i| format!("{name}_{i}"))
            .find(|n| g.find_value(n).is_none())
            .unwrap_or(name)
    };
    let t = Tensor::from_vec(shape, data.iter().map(|&x| x as f32).collect::<Vec<f32>>());
    let nv = g.add_const(name, t);
    g.set_operand(s.node, s.operand, Some(nv));
    Ok(())
}

/// Solves and, where it lowers the calibration error, writes one layer.
fn solve(
    g: &mut Graph,
    group: &Group,
    l: &Layer,
    st: &Stats,
    index: usize,
    damp: f64,
) -> Result<Refitted, PassError> {
    let w0 = current(g, group, l)?;
    let p = w0.nrows();
    let gm = st.xx.as_ref().submatrix(0, 0, p, p).to_owned();
    let (xy, yy) = &st.xy[index];
    let b = xy.as_ref().submatrix(0, 0, p, l.cols).to_owned();
    let rel = |e: f64| (e / yy.max(1e-300)).sqrt();
    let before = rel(residual(&gm, &b, *yy, &w0));
    let mean = (0..p).map(|i| gm[(i, i)]).sum::<f64>() / p.max(1) as f64;
    let mut lambda = damp * if mean > 0.0 { mean } else { 1.0 };
    let mut solved = None;
    for _ in 0..6 {
        let mut a = gm.clone();
        for i in 0..p {
            a[(i, i)] += lambda;
        }
        let rhs = &b + Mat::<f64>::from_fn(p, l.cols, |r, c| lambda * w0[(r, c)]);
        if let Ok(llt) = a.llt(Side::Lower) {
            use faer::linalg::solvers::Solve;
            let w = llt.solve(rhs);
            if w.as_ref().is_all_finite() {
                solved = Some(w);
                break;
            }
        }
        lambda = if lambda > 0.0 { lambda * 10.0 } else { 1e-8 };
    }
    let Some(w) = solved else {
        return Ok(Refitted {
            name: l.name.clone(),
            before,
            after: before,
            kept: false,
        });
    };
    let after = rel(residual(&gm, &b, *yy, &w));
    let lowered = after < before;
    if !lowered {
        return Ok(Refitted {
            name: l.name.clone(),
            before,
            after,
            kept: false,
        });
    }
    let mut off = 0;
    for (s, &(_, k)) in l.weights.iter().zip(&group.inputs) {
        let data: Vec<f64> = if s.trans {
            (0..l.cols)
                .flat_map(|c| (0..k).map(move |r| (r, c)))
                .map(|(r, c)| w[(off + r, c)])
                .collect()
        } else {
            (0..k)
                .flat_map(|r| (0..l.cols).map(move |c| (r, c)))
                .map(|(r, c)| w[(off + r, c)])
                .collect()
        };
        write(g, s, data)?;
        off += k;
    }
    if let Some(bs) = &l.bias {
        write(g, bs, (0..l.cols).map(|c| w[(off, c)]).collect())?;
    }
    Ok(Refitted {
        name: l.name.clone(),
        before,
        after,
        kept: true,
    })
}

/// Refits the rewritten graph `g` against `dense` (the graph before the rewrite), group by
/// group in graph order. `interpreter` makes a fresh interpreter (one per group: the sliced
/// graph's constants change between groups).
#[allow(clippy::too_many_arguments)]
pub(crate) fn refit(
    dense: &Graph,
    g: &mut Graph,
    plan: &Plan,
    bases: &[Basis],
    keep: &[usize],
    ins: &Inserted,
    samples: &SampleSet,
    damp: f64,
    interpreter: impl Fn() -> Interpreter,
    mut progress: impl FnMut(),
) -> Result<Vec<Refitted>, PassError> {
    let groups = groups(g, plan, bases, keep, ins)?;
    let dense_interp = interpreter();
    let mut out = Vec::new();
    for group in &groups {
        let interp = interpreter();
        let st = accumulate(dense, g, group, samples, &dense_interp, &interp)?;
        for (i, l) in group.layers.iter().enumerate() {
            out.push(solve(g, group, l, &st, i, damp)?);
        }
        progress();
    }
    Ok(out)
}
