//! Finding the residual stream of a post-LN transformer: the LayerNormalization nodes, the
//! terms summed into each one's input (residual connections from earlier norms, outputs of
//! linear layers, embedding lookups, constants), the linear layers reading each norm's
//! output, and every other reader of a norm output.
//!
//! Nothing here edits the graph; [`find`] returns a [`Plan`] that `rewrite` applies.

use pare_ir::op::{GemmAttrs, LayerNormAttrs};
use pare_ir::{DType, Graph, NodeId, Op, Use, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A LayerNormalization over the last axis with constant scale and bias: one point where
/// the stream is rotated.
#[derive(Clone, Debug)]
pub struct Norm {
    /// The LayerNormalization node.
    pub node: NodeId,
    /// Its input `z` (the sum of [`Norm::terms`]).
    pub input: ValueId,
    /// Its output `x`.
    pub output: ValueId,
    /// Hidden size.
    pub d: usize,
    /// `ε`.
    pub eps: f32,
    /// `γ`.
    pub gamma: Vec<f64>,
    /// `β` (zeros when absent).
    pub beta: Vec<f64>,
    /// The terms summed into the input.
    pub terms: Vec<Term>,
}

/// One summand of a norm's input, read at operand `operand` of `node` (an Add of the sum
/// tree, or the norm itself when its input is a single term).
#[derive(Clone, Debug)]
pub struct Term {
    /// The reading node.
    pub node: NodeId,
    /// Operand position.
    pub operand: usize,
    /// The value read.
    pub value: ValueId,
    /// What it is.
    pub kind: TermKind,
}

/// What a term is.
#[derive(Clone, Debug, PartialEq)]
pub enum TermKind {
    /// The output of norm `j` (index into [`Plan::norms`]): a residual connection.
    Residual(usize),
    /// The output of the linear layer at this node (a key of [`Plan::linears`]).
    Writer(NodeId),
    /// A `Gather` (axis 0) of rows of a constant `[V, d]` table.
    Table {
        /// The Gather.
        gather: NodeId,
        /// The table.
        table: ValueId,
    },
    /// A constant (last dimension `d` or 1).
    Const,
    /// Anything else with last dimension `d`: rotated by an inserted MatMul.
    Other,
}

/// A MatMul (constant `K×N` weight) or Gemm (`transA = 0`, `alpha = beta = 1`, constant
/// `B` and `C`), with its bias.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The MatMul or Gemm.
    pub node: NodeId,
    /// `K`.
    pub k: usize,
    /// `N`.
    pub n: usize,
    /// Gemm with `transB = 1`: the stored weight is `N×K`.
    pub trans_b: bool,
    /// The bias, if any.
    pub bias: Option<Bias>,
    /// The layer's result (after the bias).
    pub out: ValueId,
    /// Norm whose output this layer reads (operand 0).
    pub reads: Option<usize>,
    /// Norm whose input this layer's result is summed into.
    pub writes: Option<usize>,
}

/// Where a linear layer's bias lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Bias {
    /// A following `Add` with a constant `[N]` (or `[1, …, 1, N]`) operand.
    Add {
        /// The Add.
        node: NodeId,
        /// The constant's operand position.
        operand: usize,
    },
    /// Gemm's `C`.
    Gemm,
}

/// Everything the rewrite needs.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The norms, in topological order.
    pub norms: Vec<Norm>,
    /// Linear layers reading a norm output or writing into a norm input.
    pub linears: BTreeMap<NodeId, Linear>,
    /// Per norm: the uses of its output that need the original basis.
    pub others: Vec<Vec<Use>>,
    /// Why LayerNormalization nodes were left alone (node name, reason).
    pub skipped: Vec<(String, String)>,
    /// Norms that fit but were left alone because of the scope.
    pub out_of_scope: usize,
}

fn f32_shape(g: &Graph, v: ValueId) -> Option<Vec<Option<u64>>> {
    let ty = &g.value(v).ty;
    if ty.dtype != Some(DType::F32) {
        return None;
    }
    ty.shape
        .as_ref()
        .map(|s| s.0.iter().map(|d| d.fixed()).collect())
}

fn last_dim(g: &Graph, v: ValueId) -> Option<u64> {
    f32_shape(g, v).and_then(|s| s.last().copied().flatten())
}

fn const_f64(g: &Graph, v: ValueId) -> Option<(Vec<usize>, Vec<f64>)> {
    let t = g.constant(v)?;
    if t.dtype() != DType::F32 {
        return None;
    }
    Some((t.shape().to_vec(), t.to_f64_vec()?))
}

fn single_use(g: &Graph, v: ValueId) -> Option<(NodeId, usize)> {
    match g.uses(v) {
        [Use::Node { node, operand }] => Some((*node, *operand)),
        _ => None,
    }
}

/// A candidate norm: LayerNormalization over the last axis of an f32 input with a static
/// last dimension, constant f32 `[d]` scale and bias.
fn norm_at(g: &Graph, n: NodeId) -> Result<Option<Norm>, String> {
    let node = g.node(n);
    let Op::LayerNormalization(LayerNormAttrs { axis, epsilon, .. }) = &node.op else {
        return Ok(None);
    };
    let (Some(x), Some(s)) = (node.input(0), node.input(1)) else {
        return Err("no input or scale".into());
    };
    let Some(shape) = f32_shape(g, x) else {
        return Err("the input is not f32 with a known shape".into());
    };
    let rank = shape.len() as i64;
    if !(*axis == -1 || (rank > 0 && *axis == rank - 1)) {
        return Err(format!(
            "normalizes from axis {axis}, not the last axis only"
        ));
    }
    let Some(Some(d)) = shape.last().copied() else {
        return Err("the last dimension is not static".into());
    };
    let d = d as usize;
    let gamma = match const_f64(g, s) {
        Some((sh, v)) if v.len() == d && sh.iter().product::<usize>() == d => v,
        _ => return Err("the scale is not a constant f32 vector of the hidden size".into()),
    };
    let beta = match node.input(2) {
        None => vec![0.0; d],
        Some(b) => match const_f64(g, b) {
            Some((_, v)) if v.len() == d => v,
            _ => return Err("the bias is not a constant f32 vector of the hidden size".into()),
        },
    };
    let Some(&output) = node.outputs().first() else {
        return Err("it has no output".into());
    };
    if node.outputs().len() > 1 && node.outputs()[1..].iter().any(|&o| !g.uses(o).is_empty()) {
        return Err("its mean / inverse deviation outputs are read".into());
    }
    Ok(Some(Norm {
        node: n,
        input: x,
        output,
        d,
        eps: *epsilon,
        gamma,
        beta,
        terms: Vec::new(),
    }))
}

/// The bias of a MatMul result `y`: its only reader is an Add with a constant `[N]` (or
/// `[1, …, 1, N]`, of rank at most `y`'s) operand.
fn bias_add(g: &Graph, y: ValueId, n: usize) -> Option<(NodeId, usize)> {
    let (add, operand) = single_use(g, y)?;
    if g.node(add).op != Op::Add || g.node(add).inputs().len() != 2 {
        return None;
    }
    let c = g.node(add).input(1 - operand)?;
    let t = g.constant(c)?;
    let yrank = f32_shape(g, y)?.len();
    let sh = t.shape();
    let ok = t.dtype() == DType::F32
        && sh.len() <= yrank
        && sh.last() == Some(&n)
        && sh[..sh.len() - 1].iter().all(|&e| e == 1);
    ok.then_some((add, 1 - operand))
}

/// The linear layer at node `n`, if it is one.
pub fn linear_at(g: &Graph, n: NodeId) -> Option<Linear> {
    let node = g.node(n);
    let x = node.input(0)?;
    let w = node.input(1)?;
    if g.constant(x).is_some() || f32_shape(g, x).is_none() {
        return None;
    }
    let t = g.constant(w)?;
    let &[r, c] = t.shape() else { return None };
    if t.dtype() != DType::F32 {
        return None;
    }
    match &node.op {
        Op::MatMul => {
            let y = *node.outputs().first()?;
            let (bias, out) = match bias_add(g, y, c) {
                Some((add, operand)) => (
                    Some(Bias::Add { node: add, operand }),
                    *g.node(add).outputs().first()?,
                ),
                None => (None, y),
            };
            Some(Linear {
                node: n,
                k: r,
                n: c,
                trans_b: false,
                bias,
                out,
                reads: None,
                writes: None,
            })
        }
        Op::Gemm(GemmAttrs {
            alpha,
            beta,
            trans_a,
            trans_b,
        }) => {
            if *alpha != 1.0 || *beta != 1.0 || *trans_a {
                return None;
            }
            let (k, nn) = if *trans_b { (c, r) } else { (r, c) };
            let bias = match node.input(2) {
                None => None,
                Some(cv) => {
                    let ct = g.constant(cv)?;
                    let sh = ct.shape();
                    let ok = ct.dtype() == DType::F32 && (sh == [nn] || sh == [1, nn]);
                    if !ok {
                        return None;
                    }
                    Some(Bias::Gemm)
                }
            };
            Some(Linear {
                node: n,
                k,
                n: nn,
                trans_b: *trans_b,
                bias,
                out: *node.outputs().first()?,
                reads: None,
                writes: None,
            })
        }
        _ => None,
    }
}

/// The linear layer whose result is `u`.
fn linear_producing(g: &Graph, u: ValueId) -> Option<Linear> {
    let p = g.producer(u)?;
    let mut candidates = vec![p];
    if g.node(p).op == Op::Add {
        candidates.extend(
            g.node(p)
                .inputs()
                .iter()
                .flatten()
                .filter_map(|&v| g.producer(v)),
        );
    }
    candidates
        .into_iter()
        .filter_map(|c| linear_at(g, c))
        .find(|l| l.out == u)
}

/// Collects the terms of the sum read at `(node, operand)` as value `v`.
fn collect_terms(
    g: &Graph,
    d: usize,
    node: NodeId,
    operand: usize,
    v: ValueId,
    norm_of_output: &HashMap<ValueId, usize>,
    out: &mut Vec<(Term, Option<Linear>)>,
) -> Result<(), String> {
    let term = |kind| Term {
        node,
        operand,
        value: v,
        kind,
    };
    if let Some(&j) = norm_of_output.get(&v) {
        out.push((term(TermKind::Residual(j)), None));
        return Ok(());
    }
    if let Some(t) = g.constant(v) {
        let last = t.shape().last().copied().unwrap_or(1);
        if t.dtype() != DType::F32 || (last != d && last != 1) {
            return Err(format!(
                "a term of its input is a constant of shape {:?}",
                t.shape()
            ));
        }
        out.push((term(TermKind::Const), None));
        return Ok(());
    }
    let only_here = single_use(g, v).is_some();
    if only_here {
        if let Some(l) = linear_producing(g, v) {
            if l.n == d {
                out.push((term(TermKind::Writer(l.node)), Some(l)));
                return Ok(());
            }
        }
        if let Some(p) = g.producer(v) {
            let pn = g.node(p);
            match &pn.op {
                Op::Gather(a) if a.axis == 0 => {
                    if let Some(table) = pn.input(0) {
                        if let Some(t) = g.constant(table) {
                            if t.dtype() == DType::F32 && t.shape().len() == 2 && t.shape()[1] == d
                            {
                                out.push((term(TermKind::Table { gather: p, table }), None));
                                return Ok(());
                            }
                        }
                    }
                }
                Op::Add if pn.inputs().len() == 2 => {
                    let operands: Vec<_> = pn.inputs().to_vec();
                    let fits = operands.iter().all(|o| {
                        o.is_some_and(|o| {
                            g.constant(o).is_some() || last_dim(g, o) == Some(d as u64)
                        })
                    });
                    if fits {
                        let mut sub = Vec::new();
                        for (i, o) in operands.into_iter().enumerate() {
                            if let Some(o) = o {
                                collect_terms(g, d, p, i, o, norm_of_output, &mut sub)?;
                            }
                        }
                        // A sum of plain terms is rotated once, as a whole.
                        if sub.iter().any(|(t, _)| t.kind != TermKind::Other) {
                            out.extend(sub);
                            return Ok(());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if last_dim(g, v) != Some(d as u64) {
        return Err(format!(
            "a term of its input, '{}', does not have the hidden size as its last dimension",
            g.value(v).name
        ));
    }
    out.push((term(TermKind::Other), None));
    Ok(())
}

/// Which norms to rotate and slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every norm of the residual stream (SliceGPT).
    #[default]
    All,
    /// Only norms whose input sums embedding-table lookups; the other norms stay
    /// LayerNormalization and read the embedding stream in the original basis.
    Embeddings,
}

/// Collects each candidate's terms; drops candidates whose sum has a term that cannot be
/// rotated, until nothing changes (dropping one turns residual terms into plain ones).
fn settle(
    g: &Graph,
    candidates: &[Norm],
    skipped: &mut Vec<(String, String)>,
) -> (Vec<Norm>, Vec<(usize, Linear)>) {
    let mut dropped: HashSet<NodeId> = HashSet::new();
    loop {
        let live: Vec<&Norm> = candidates
            .iter()
            .filter(|c| !dropped.contains(&c.node))
            .collect();
        let norm_of_output: HashMap<ValueId, usize> = live
            .iter()
            .enumerate()
            .map(|(i, c)| (c.output, i))
            .collect();
        let mut changed = false;
        let mut norms = Vec::new();
        let mut writers = Vec::new();
        for c in &live {
            let mut terms = Vec::new();
            match collect_terms(g, c.d, c.node, 0, c.input, &norm_of_output, &mut terms) {
                Ok(()) => {
                    let mut norm = (*c).clone();
                    for (t, l) in terms {
                        if let Some(l) = l {
                            writers.push((norms.len(), l));
                        }
                        norm.terms.push(t);
                    }
                    norms.push(norm);
                }
                Err(why) => {
                    skipped.push((g.node(c.node).name.clone(), why));
                    dropped.insert(c.node);
                    changed = true;
                }
            }
        }
        if !changed {
            return (norms, writers);
        }
    }
}

/// Finds the norms (those of `scope`), the terms of their inputs and the readers of their
/// outputs.
pub fn find(g: &Graph, scope: Scope) -> Result<Plan, pare_ir::CycleError> {
    let order = g.topo_order()?;
    let mut plan = Plan::default();
    let mut candidates: Vec<Norm> = Vec::new();
    for &n in &order {
        match norm_at(g, n) {
            Ok(Some(norm)) => {
                if single_use(g, norm.input) != Some((n, 0)) {
                    plan.skipped.push((
                        g.node(n).name.clone(),
                        "its input is also read elsewhere (a pre-LN residual stream is not \
                         supported yet)"
                            .into(),
                    ));
                } else {
                    candidates.push(norm);
                }
            }
            Ok(None) => {}
            Err(why) => plan.skipped.push((g.node(n).name.clone(), why)),
        }
    }
    let (mut norms, mut writers) = settle(g, &candidates, &mut plan.skipped);
    if scope == Scope::Embeddings {
        let chosen: HashSet<NodeId> = norms
            .iter()
            .filter(|n| {
                n.terms
                    .iter()
                    .any(|t| matches!(t.kind, TermKind::Table { .. }))
            })
            .map(|n| n.node)
            .collect();
        plan.out_of_scope = norms.len() - chosen.len();
        candidates.retain(|c| chosen.contains(&c.node));
        (norms, writers) = settle(g, &candidates, &mut plan.skipped);
    }
    for (i, mut l) in writers {
        l.writes = Some(i);
        plan.linears.insert(l.node, l);
    }
    // Readers of each norm output.
    let residual_at: HashSet<(NodeId, usize)> = norms
        .iter()
        .flat_map(|n| n.terms.iter())
        .filter(|t| matches!(t.kind, TermKind::Residual(_)))
        .map(|t| (t.node, t.operand))
        .collect();
    for (i, norm) in norms.iter().enumerate() {
        let mut others = Vec::new();
        for &u in g.uses(norm.output) {
            match u {
                Use::Node { node, operand } => {
                    if residual_at.contains(&(node, operand)) {
                        continue;
                    }
                    if operand == 0 {
                        let existing = plan.linears.get(&node).cloned();
                        if let Some(mut l) = existing.or_else(|| linear_at(g, node)) {
                            if l.k == norm.d && l.reads.is_none() {
                                l.reads = Some(i);
                                plan.linears.insert(node, l);
                                continue;
                            }
                        }
                    }
                    others.push(u);
                }
                Use::Output(_) => others.push(u),
            }
        }
        plan.others.push(others);
    }
    plan.norms = norms;
    Ok(plan)
}
