//! Applying a [`Plan`] with one rotation per norm: every norm becomes an RMS normalization
//! of the rotated (and sliced) stream, the norms' scales and biases and the rotations move
//! into the neighbouring weights, and readers that need the original basis get it back.
//!
//! With `P_i` the first `k_i` principal axes of norm `i` (`d×k_i`), `C = I − 11ᵀ/d` the
//! centering matrix and `ñ_i` the new normalized stream (`k_i` wide):
//!
//! | what | becomes |
//! |---|---|
//! | residual term `x_j` of norm `i` | `ñ_j · (P_jᵀ diag(γ_j) C P_i) + β_j C P_i` (inserted MatMul, Add) |
//! | linear reading `x_i`: `W`, `b` | `P_iᵀ diag(γ_i) W`, `b + β_i W` |
//! | linear writing into norm `i` | `W C P_i`, `b C P_i` |
//! | embedding table / constant term | `T C P_i` |
//! | other term `u` | `u · C P_i` (inserted MatMul) |
//! | norm `i` | `ñ_i = w / sqrt(Σ w² / d + ε)`, `w` the rotated sum |
//! | other reader of `x_i` | `ñ_i · P_iᵀ diag(γ_i) + β_i` (inserted MatMul, Add) |

use crate::basis::Basis;
use crate::structure::{Bias, Linear, Plan, TermKind};
use crate::NAME;
use faer::Mat;
use pare_ir::op::ReduceAttrs;
use pare_ir::{Graph, NodeId, Op, Tensor, Use, ValueId};
use pare_pass::PassError;
use std::collections::BTreeMap;

/// A constant operand of the rewritten graph holding a weight (`K×N`, stored `N×K` when
/// `trans`) or a bias (`N` values, any shape).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    /// The reading node.
    pub node: NodeId,
    /// Operand position.
    pub operand: usize,
    /// Stored transposed (Gemm with `transB = 1`).
    pub trans: bool,
}

/// A linear map of the rewritten graph (a rewritten linear layer, an inserted residual or
/// restore MatMul): where its weight and bias live and what it computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The MatMul or Gemm.
    pub node: NodeId,
    /// Its weight.
    pub weight: Slot,
    /// Its bias, if it has one.
    pub bias: Option<Slot>,
    /// The result before the bias (the node's output).
    pub pre_bias: ValueId,
    /// The result after the bias.
    pub out: ValueId,
}

fn site_of(g: &Graph, node: NodeId, trans: bool, bias: Option<Slot>, out: ValueId) -> Site {
    let pre_bias = g.node(node).outputs().first().copied().unwrap_or(out);
    Site {
        node,
        weight: Slot {
            node,
            operand: 1,
            trans,
        },
        bias,
        pre_bias,
        out,
    }
}

fn producer_of(g: &Graph, v: ValueId) -> Result<NodeId, PassError> {
    g.producer(v)
        .ok_or_else(|| PassError::failed(NAME, "internal error: an inserted value has no producer"))
}

/// Counts of what the rewrite inserted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inserted {
    /// Residual-path MatMuls.
    pub residual: usize,
    /// MatMuls rotating terms that are not linear layers, tables or constants.
    pub rotated_terms: usize,
    /// MatMuls restoring the original basis for other readers.
    pub restores: usize,
    /// Linear layers rewritten.
    pub linears: usize,
    /// Embedding tables rewritten.
    pub tables: usize,
    /// Per norm: the rotated sum its RMS normalization reads.
    pub stream_inputs: Vec<ValueId>,
    /// Per norm: the RMS-normalized rotated stream `ñ`.
    pub streams: Vec<ValueId>,
    /// The rewritten linear layers, by node.
    pub linear_sites: BTreeMap<NodeId, Site>,
    /// The residual MatMuls: (norm whose input it feeds, norm whose output it reads, site).
    pub residual_sites: Vec<(usize, usize, Site)>,
    /// The restore MatMuls: (norm, site).
    pub restore_sites: Vec<(usize, Site)>,
}

fn unique(g: &Graph, base: &str) -> String {
    if g.find_value(base).is_none() {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|s| g.find_value(s).is_none())
        .unwrap_or_else(|| base.to_string())
}

fn f32_tensor(shape: Vec<usize>, v: &[f64]) -> Tensor {
    Tensor::from_vec(shape, v.iter().map(|&x| x as f32).collect::<Vec<f32>>())
}

fn add_const(g: &mut Graph, base: &str, t: Tensor) -> ValueId {
    let name = unique(g, base);
    g.add_const(name, t)
}

fn node(g: &mut Graph, base: &str, op: Op, inputs: &[ValueId]) -> ValueId {
    let name = unique(g, base);
    g.add_simple(name, op, inputs)
}

/// Row-major `a (m×k) · b (k×n)` (faer's GEMM: the tables are large).
fn mul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let am = Mat::from_fn(m, k, |i, j| a[i * k + j]);
    let bm = Mat::from_fn(k, n, |i, j| b[i * n + j]);
    let c = am * bm;
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(c[(i, j)]);
        }
    }
    out
}

/// `C·P` (`d×k`, row-major) with `P` the first `k` axes of `b`: maps a norm's input `z` into
/// the rotated, sliced stream.
pub(crate) fn centered_axes(b: &Basis, k: usize) -> Vec<f64> {
    let d = b.q.d;
    let mut cp = vec![0.0; d * k];
    for c in 0..k {
        let mean = (0..d).map(|r| b.q.at(r, c)).sum::<f64>() / d as f64;
        for r in 0..d {
            cp[r * k + c] = b.q.at(r, c) - mean;
        }
    }
    cp
}

/// Per norm, with `P` its first `k` axes (`d×k`): the matrices every rewrite rule uses.
struct Frame {
    d: usize,
    k: usize,
    /// `β` (`d`).
    beta: Vec<f64>,
    /// `C·P` (`d×k`, row-major).
    cp: Vec<f64>,
    /// `Pᵀ diag(γ)` (`k×d`, row-major).
    pt_gamma: Vec<f64>,
}

impl Frame {
    fn new(b: &Basis, gamma: &[f64], beta: &[f64], k: usize) -> Frame {
        let d = b.q.d;
        let beta = beta.to_vec();
        let cp = centered_axes(b, k);
        let mut pt_gamma = vec![0.0; k * d];
        for c in 0..k {
            for r in 0..d {
                pt_gamma[c * d + r] = b.q.at(r, c) * gamma[r];
            }
        }
        Frame {
            d,
            k,
            beta,
            cp,
            pt_gamma,
        }
    }
}

/// The weight of a linear layer as `K×N` row-major f64.
fn weight(g: &Graph, l: &Linear) -> Result<Vec<f64>, PassError> {
    let wv = g
        .node(l.node)
        .input(1)
        .ok_or_else(|| PassError::at_node(NAME, g, l.node, "no weight"))?;
    let v = g
        .constant(wv)
        .and_then(|t| t.to_f64_vec())
        .ok_or_else(|| PassError::at_node(NAME, g, l.node, "the weight is not a constant"))?;
    let (k, n) = (l.k, l.n);
    Ok(if l.trans_b {
        (0..k * n).map(|i| v[(i % n) * k + i / n]).collect()
    } else {
        v
    })
}

fn bias_value(g: &Graph, l: &Linear) -> Option<(ValueId, Vec<usize>)> {
    let v = match l.bias.as_ref()? {
        Bias::Add { node, operand } => g.node(*node).input(*operand)?,
        Bias::Gemm => g.node(l.node).input(2)?,
    };
    Some((v, g.constant(v)?.shape().to_vec()))
}

/// Rewrites `g` by `plan` with `bases[i]` and `keep[i]` axes kept at norm `i`.
pub fn apply(
    g: &mut Graph,
    plan: &Plan,
    bases: &[Basis],
    keep: &[usize],
) -> Result<Inserted, PassError> {
    let mut ins = Inserted::default();
    let frames: Vec<Frame> = plan
        .norms
        .iter()
        .enumerate()
        .map(|(i, n)| Frame::new(&bases[i], &n.gamma, &n.beta, keep[i]))
        .collect();
    let mut stream: Vec<ValueId> = Vec::with_capacity(plan.norms.len());
    // Norms in topological order: residual terms read streams built before.
    for (i, norm) in plan.norms.iter().enumerate() {
        let fi = &frames[i];
        let lname = g.node(norm.node).name.clone();
        for t in &norm.terms {
            match &t.kind {
                TermKind::Residual(j) => {
                    let fj = &frames[*j];
                    // R = Pⱼᵀ diag(γⱼ) C Pᵢ  (kⱼ×kᵢ), c = βⱼ C Pᵢ.
                    let r = mul(&fj.pt_gamma, &fi.cp, fj.k, fj.d, fi.k);
                    let c = mul(&fj.beta, &fi.cp, 1, fi.d, fi.k);
                    let rv = add_const(
                        g,
                        &format!("{lname}.slice_residual"),
                        f32_tensor(vec![fj.k, fi.k], &r),
                    );
                    let mut v = node(
                        g,
                        &format!("{lname}/slice_residual"),
                        Op::MatMul,
                        &[stream[*j], rv],
                    );
                    let mm = producer_of(g, v)?;
                    let mut bias_slot = None;
                    if c.iter().any(|&x| x != 0.0) {
                        let cv = add_const(
                            g,
                            &format!("{lname}.slice_residual_bias"),
                            f32_tensor(vec![fi.k], &c),
                        );
                        v = node(
                            g,
                            &format!("{lname}/slice_residual_bias"),
                            Op::Add,
                            &[v, cv],
                        );
                        bias_slot = Some(Slot {
                            node: producer_of(g, v)?,
                            operand: 1,
                            trans: false,
                        });
                    }
                    g.set_operand(t.node, t.operand, Some(v));
                    ins.residual += 1;
                    ins.residual_sites
                        .push((i, *j, site_of(g, mm, false, bias_slot, v)));
                }
                TermKind::Writer(_) => {}
                TermKind::Table { gather, table } => {
                    let tt = g.constant(*table).ok_or_else(|| {
                        PassError::at_node(NAME, g, *gather, "the table is not a constant")
                    })?;
                    let rows = tt.shape()[0];
                    let tv = tt.to_f64_vec().ok_or_else(|| {
                        PassError::at_node(NAME, g, *gather, "the table is not f32")
                    })?;
                    let new = mul(&tv, &fi.cp, rows, fi.d, fi.k);
                    let name = format!("{}.sliced", g.value(*table).name);
                    let nv = add_const(g, &name, f32_tensor(vec![rows, fi.k], &new));
                    g.set_operand(*gather, 0, Some(nv));
                    ins.tables += 1;
                }
                TermKind::Const => {
                    let ct = g.constant(t.value).ok_or_else(|| {
                        PassError::at_node(NAME, g, t.node, "a constant term is not a constant")
                    })?;
                    let mut shape = ct.shape().to_vec();
                    let cv = ct.to_f64_vec().ok_or_else(|| {
                        PassError::at_node(NAME, g, t.node, "a constant term is not f32")
                    })?;
                    let last = shape.pop().unwrap_or(1);
                    let rows: usize = shape.iter().product();
                    let full: Vec<f64> = if last == fi.d {
                        cv
                    } else {
                        cv.iter()
                            .flat_map(|&x| std::iter::repeat_n(x, fi.d))
                            .collect()
                    };
                    let new = mul(&full, &fi.cp, rows, fi.d, fi.k);
                    shape.push(fi.k);
                    let name = format!("{}.sliced", g.value(t.value).name);
                    let nv = add_const(g, &name, f32_tensor(shape, &new));
                    g.set_operand(t.node, t.operand, Some(nv));
                }
                TermKind::Other => {
                    let m = add_const(
                        g,
                        &format!("{lname}.slice_rotate"),
                        f32_tensor(vec![fi.d, fi.k], &fi.cp),
                    );
                    let v = node(
                        g,
                        &format!("{lname}/slice_rotate"),
                        Op::MatMul,
                        &[t.value, m],
                    );
                    g.set_operand(t.node, t.operand, Some(v));
                    ins.rotated_terms += 1;
                }
            }
        }
        // ñ = w / sqrt(Σw²/d + ε), d the original width.
        let w = g
            .node(norm.node)
            .input(0)
            .ok_or_else(|| PassError::at_node(NAME, g, norm.node, "no input"))?;
        ins.stream_inputs.push(w);
        let axes = add_const(
            g,
            &format!("{lname}.rms_axes"),
            Tensor::from_vec(vec![1], vec![-1i64]),
        );
        let dv = add_const(
            g,
            &format!("{lname}.rms_width"),
            Tensor::scalar(norm.d as f32),
        );
        let ev = add_const(g, &format!("{lname}.rms_epsilon"), Tensor::scalar(norm.eps));
        let reduce = Op::ReduceSumSquare(ReduceAttrs {
            keepdims: true,
            noop_with_empty_axes: false,
        });
        let ss = node(g, &format!("{lname}/rms/sum_squares"), reduce, &[w, axes]);
        let ms = node(g, &format!("{lname}/rms/mean_square"), Op::Div, &[ss, dv]);
        let ve = node(g, &format!("{lname}/rms/plus_epsilon"), Op::Add, &[ms, ev]);
        let rms = node(g, &format!("{lname}/rms/rms"), Op::Sqrt, &[ve]);
        let out_name = format!("{}/sliced", g.value(norm.output).name);
        let nt = node(g, &out_name, Op::Div, &[w, rms]);
        stream.push(nt);
        ins.streams.push(nt);
    }

    // Linear layers.
    for l in plan.linears.values() {
        let mut w = weight(g, l)?;
        let (mut rows, mut cols) = (l.k, l.n);
        let mut bias = match bias_value(g, l) {
            Some((bv, _)) => g.constant(bv).and_then(|t| t.to_f64_vec()),
            None => None,
        };
        if let Some(r) = l.reads {
            let f = &frames[r];
            let beta_w = mul(&f.beta, &w, 1, rows, cols);
            if beta_w.iter().any(|&x| x != 0.0) {
                let b = bias.get_or_insert_with(|| vec![0.0; cols]);
                for (o, x) in b.iter_mut().zip(&beta_w) {
                    *o += x;
                }
            }
            w = mul(&f.pt_gamma, &w, f.k, f.d, cols);
            rows = f.k;
        }
        if let Some(wr) = l.writes {
            let f = &frames[wr];
            w = mul(&w, &f.cp, rows, cols, f.k);
            if let Some(b) = bias.as_mut() {
                *b = mul(b, &f.cp, 1, cols, f.k);
            }
            cols = f.k;
        }
        let lname = g.node(l.node).name.clone();
        let old_w = g.node(l.node).input(1);
        let wname = format!(
            "{}.sliced",
            old_w.map_or(lname.clone(), |v| g.value(v).name.clone())
        );
        let stored = if l.trans_b {
            let t: Vec<f64> = (0..rows * cols)
                .map(|i| w[(i % rows) * cols + i / rows])
                .collect();
            f32_tensor(vec![cols, rows], &t)
        } else {
            f32_tensor(vec![rows, cols], &w)
        };
        let wv = add_const(g, &wname, stored);
        g.set_operand(l.node, 1, Some(wv));
        let y = g.node(l.node).outputs()[0];
        let mut site = site_of(g, l.node, l.trans_b, None, y);
        if let Some(b) = bias {
            let (shape, bname) = match bias_value(g, l) {
                Some((bv, mut shape)) => {
                    if let Some(last) = shape.last_mut() {
                        *last = cols;
                    }
                    (shape, format!("{}.sliced", g.value(bv).name))
                }
                None => (vec![cols], format!("{lname}.slice_bias")),
            };
            let bv = add_const(g, &bname, f32_tensor(shape, &b));
            let slot = |node, operand| Slot {
                node,
                operand,
                trans: false,
            };
            match &l.bias {
                Some(Bias::Add { node, operand }) => {
                    g.set_operand(*node, *operand, Some(bv));
                    site.bias = Some(slot(*node, *operand));
                    site.out = l.out;
                }
                Some(Bias::Gemm) => {
                    g.set_operand(l.node, 2, Some(bv));
                    site.bias = Some(slot(l.node, 2));
                }
                None => {
                    if matches!(g.node(l.node).op, Op::Gemm(_)) {
                        let mut ops = g.node(l.node).inputs().to_vec();
                        ops.resize(3, None);
                        ops[2] = Some(bv);
                        g.set_operands(l.node, ops);
                        site.bias = Some(slot(l.node, 2));
                    } else {
                        let users: Vec<Use> = g.uses(y).to_vec();
                        let add = node(g, &format!("{lname}/slice_bias"), Op::Add, &[y, bv]);
                        redirect(g, &users, add);
                        site.bias = Some(slot(producer_of(g, add)?, 1));
                        site.out = add;
                    }
                }
            }
        } else if let Some(Bias::Add { .. }) = &l.bias {
            site.out = l.out;
        }
        ins.linear_sites.insert(l.node, site);
        if let Some(r) = l.reads {
            g.set_operand(l.node, 0, Some(stream[r]));
        }
        ins.linears += 1;
    }

    // Readers that need the original basis: x = ñ Pᵀ diag(γ) + β.
    for (i, norm) in plan.norms.iter().enumerate() {
        let others = &plan.others[i];
        if !others.is_empty() {
            let f = &frames[i];
            let lname = g.node(norm.node).name.clone();
            let orig = g.value(norm.output).name.clone();
            let renamed = unique(g, &format!("{orig}/before_slice"));
            g.set_name(norm.output, renamed);
            let m = add_const(
                g,
                &format!("{lname}.slice_restore"),
                f32_tensor(vec![f.k, f.d], &f.pt_gamma),
            );
            let mut v = node(
                g,
                &format!("{lname}/slice_restore"),
                Op::MatMul,
                &[stream[i], m],
            );
            let mm = producer_of(g, v)?;
            let mut bias_slot = None;
            if f.beta.iter().any(|&x| x != 0.0) {
                let b = add_const(
                    g,
                    &format!("{lname}.slice_restore_bias"),
                    f32_tensor(vec![f.d], &f.beta),
                );
                v = node(g, &format!("{lname}/slice_restore_bias"), Op::Add, &[v, b]);
                bias_slot = Some(Slot {
                    node: producer_of(g, v)?,
                    operand: 1,
                    trans: false,
                });
            }
            ins.restore_sites
                .push((i, site_of(g, mm, false, bias_slot, v)));
            g.set_name(v, orig);
            redirect(g, others, v);
            ins.restores += 1;
        }
        if !g.remove_node(norm.node) {
            return Err(PassError::at_node(
                NAME,
                g,
                norm.node,
                "internal error: the norm is still read after the rewrite",
            ));
        }
    }
    Ok(ins)
}

/// Points each of `users` (node operands and graph outputs) at `v`.
fn redirect(g: &mut Graph, users: &[Use], v: ValueId) {
    for u in users {
        match *u {
            Use::Node { node, operand } => g.set_operand(node, operand, Some(v)),
            Use::Output(k) => g.set_output(k, v),
        }
    }
}
