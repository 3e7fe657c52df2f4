//! Structured pruning (`prune-channels`, `prune-heads`): delete whole channels, MLP neurons
//! and attention heads, so that the weights, the ONNX file and the compiled code really
//! shrink.
//!
//! (The crate also holds `prune-unstructured`, which zeroes individual weights or `N` of
//! every `M` with magnitude, Wanda or SparseGPT scores: see [`unstructured`].)
//!
//! **What it does.** The [`CouplingGroups`] analysis splits every channel space of the graph
//! into groups of positions that must disappear together (a conv's filters, its bias, the
//! BatchNorm/per-channel constants after it, the depthwise conv it feeds, the input channels
//! of every consumer, the other branches of a residual add, the Q/K/V columns and the output
//! projection rows of a head). For each prunable group the pass scores every unit, removes
//! the lowest-scoring ones from *every* member (slicing the constants, lowering conv group
//! counts, GroupNormalization group counts and attention head counts, recomputing Reshape
//! targets), and optionally updates the consumers' remaining input weights so that they
//! compensate for what was removed.
//!
//! - `prune-channels` works on groups whose unit is a channel or an MLP neuron (and on
//!   grouped convolutions, whose unit is a conv group); `prune-heads` on attention head
//!   groups (unit = a head of `D` channels in Q, K, V and the output projection).
//! - `ratio`: the fraction of units removed, per group (`scope=layer`) or over all groups
//!   together (`scope=global`: units ranked by normalized score across groups, each group
//!   keeping at least `min-keep` of its units). `round-to=8` keeps a multiple of 8 units per
//!   group (SIMD-friendly widths).
//! - `score`:
//!   - `l1` / `l2`: the L1 norm / L2 norm of the unit's weights over every producer and
//!     consumer member (the "group norm" of DepGraph, Fang et al. 2023; filter norms of Li et
//!     al. 2017);
//!   - `activation`: the output energy the unit contributes to its consumers on the
//!     calibration data, `Σ H_rr·‖W_r‖²` over its input rows `r` (`H = XᵀX`; the structured
//!     form of Wanda's `|W|·‖X‖`, Sun et al. 2023);
//!   - `hessian`: the Optimal-Brain-Surgeon cost of deleting the unit with the best update
//!     of the remaining weights, `tr(W_Sᵀ (H⁻¹_SS)⁻¹ W_S)` (the structured OBS of oBERT,
//!     Kurtic et al. 2022, and ZipLM, Kurtic et al. 2023).
//!
//!   `activation` and `hessian` are normalized by the consumers' output energy
//!   `tr(WᵀHW)`, so `scope=global` compares relative output errors across layers; the
//!   norms are normalized by their group mean.
//! - `reconstruct` (`auto`: on when calibration samples are given): after deleting input
//!   rows `S` of a consumer `Y = X·W`, the other rows get the least-squares update
//!   `W_R += H_RR⁻¹ H_RS W_S` (`= −H⁻¹_{:,S}(H⁻¹_SS)⁻¹W_S`), the OBS weight update, which
//!   minimizes `‖X·W − X_R·W_R‖` on the calibration data. `damp` is added to the diagonal of
//!   `XᵀX` relative to its mean.
//!
//! **Needs.** Types (re-inferred here). `activation`, `hessian` and `reconstruct=on` need
//! calibration samples (`--calib`), read through the [`CalibStats`] analysis (consumers
//! without `XᵀX`, e.g. above its size limit, fall back to the weight norms / no update, with
//! a note). Run after `canonicalize`, so BatchNorm is folded into the convs and biases are
//! constants; follow with `canonicalize` (or `dce`) to drop the replaced constants.
//!
//! **Guarantees.** Every tensor and node of a group shrinks together, so the result is a
//! well-formed, smaller model with the same inputs and outputs (checked by type
//! inference). Removing units whose weights are all zero changes nothing; otherwise the
//! change is lossy, and the pass reports per group the units kept and, with calibration,
//! the relative output error left in the consumers. Groups that reach a graph output, an
//! op the coupling rules do not understand, a LayerNormalization/reduction over the channel
//! axis (the residual stream of a transformer: see `slice`), a Slice or Split along the
//! channels, or a non-f32 constant are left alone and listed in the notes.

mod edit;
mod linalg;
use pare_pass::search;
mod seq;
pub mod sparsegpt;
pub mod unstructured;

pub use linalg::FactorError;
pub use unstructured::{Method, Pattern, PruneUnstructured, UnstructuredOptions};

use edit::{positions, remove_positions, replace_const, reshape_target};
use linalg::{
    consumer_layout, damped_inverse, diagonal_energy, energy, obs_cost, reconstruct, ConsumerMat,
    Layout,
};

use faer::Mat;
use pare_analysis::{CalibStats, CouplingGroups, Group, Role, Target};
use pare_ir::{DType, Graph, NodeId, Op, Tensor, ValueId};
use pare_pass::{LatencyProbe, Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Unit importance.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// L1 norm of the unit's weights (producers and consumers).
    #[default]
    L1,
    /// L2 norm of the unit's weights.
    L2,
    /// Output energy contributed to the consumers on the calibration data.
    Activation,
    /// Optimal-Brain-Surgeon deletion cost from the consumers' `XᵀX`.
    Hessian,
}

/// How `ratio` is applied.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The same fraction of every group.
    #[default]
    Layer,
    /// A fraction of all units, ranked by normalized score across groups.
    Global,
}

/// Whether and how consumers are updated after the deletion.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reconstruct {
    /// `obs` when calibration samples are given, else `off`.
    #[default]
    Auto,
    /// One-shot OBS update from the dense model's `XᵀX` (needs calibration samples).
    Obs,
    /// Sequential least squares against the dense model's outputs (needs calibration
    /// samples).
    Refit,
    /// Never.
    Off,
}

/// How the units to remove are allocated across groups.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// By `scope` (uniform per group, or a global ranking).
    #[default]
    None,
    /// Evolutionary search under the parameter budget `ratio` gives, scored end to end on
    /// the calibration samples.
    Evo,
}

/// What the allocation search holds fixed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// Multiply-accumulates of the convolutions and matrix products (at the first
    /// calibration sample's shapes).
    #[default]
    Flops,
    /// Parameters.
    Params,
    /// Measured compiled latency: each group's cost per unit is the time its uniform removal
    /// saves, measured by compiling and timing the model with only that group pruned (needs
    /// a compiler in the context: `pare opt` provides one).
    Latency,
}

/// Options of `prune-channels` / `prune-heads`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PruneOptions {
    /// Fraction of units removed.
    pub ratio: f64,
    /// Unit importance.
    pub score: Score,
    /// Per group or global.
    pub scope: Scope,
    /// Least-squares update of the consumers.
    pub reconstruct: Reconstruct,
    /// Damping of `XᵀX`, relative to its mean diagonal.
    pub damp: f64,
    /// `scope=global`: fraction of every group's units that always stays.
    pub min_keep: f64,
    /// Units kept per group are rounded up to a multiple of this.
    pub round_to: usize,
    /// Allocation search.
    pub search: Search,
    /// `search=evo`: the budget kept equal to the uniform allocation's.
    pub budget: Budget,
    /// `search=evo`: generations.
    pub generations: usize,
    /// `search=evo`: candidates per generation.
    pub offspring: usize,
    /// `search=evo`: calibration samples that score a candidate (0: all).
    pub search_samples: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            ratio: 0.3,
            score: Score::L1,
            scope: Scope::Layer,
            reconstruct: Reconstruct::Auto,
            damp: 0.01,
            min_keep: 0.1,
            round_to: 1,
            search: Search::None,
            budget: Budget::Flops,
            generations: 40,
            offspring: 6,
            search_samples: 16,
        }
    }
}

/// Which groups a pass works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Channels, MLP neurons, conv groups.
    Channels,
    /// Attention heads.
    Heads,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Channels => "prune-channels",
            Kind::Heads => "prune-heads",
        }
    }
}

impl PruneOptions {
    fn check(&self, pass: &str) -> Result<(), PassError> {
        let bad = |m: &str| Err(PassError::failed(pass, m.to_string()));
        if !(self.ratio >= 0.0 && self.ratio < 1.0) {
            return bad("ratio must be in [0, 1)");
        }
        if !(self.damp >= 0.0 && self.damp.is_finite()) {
            return bad("damp must be a finite number >= 0");
        }
        if !(0.0..=1.0).contains(&self.min_keep) {
            return bad("min-keep must be in [0, 1]");
        }
        if self.round_to == 0 {
            return bad("round-to must be at least 1");
        }
        Ok(())
    }
}

/// The `prune-channels` / `prune-heads` pass (see the crate docs).
#[derive(Clone, Debug)]
pub struct Prune {
    kind: Kind,
    opts: PruneOptions,
}

impl Prune {
    /// A pass of kind `kind` with these options.
    pub fn new(kind: Kind, opts: PruneOptions) -> Prune {
        Prune { kind, opts }
    }
}

/// Registers `prune-channels`, `prune-heads` and `prune-unstructured`.
pub fn register(reg: &mut Registry) {
    for (kind, summary) in [
        (
            Kind::Channels,
            "structured pruning: delete conv channels, MLP neurons and conv groups along the \
             channel-coupling groups, with optional least-squares compensation (lossy)",
        ),
        (
            Kind::Heads,
            "structured pruning: delete attention heads (Q/K/V columns, output-projection \
             rows, head counts, reshapes), with optional least-squares compensation (lossy)",
        ),
    ] {
        let d = PruneOptions::default();
        reg.register(
            PassInfo::new(kind.name(), summary)
                .option(
                    "ratio",
                    "float",
                    &d.ratio.to_string(),
                    "fraction of units to remove",
                )
                .option(
                    "score",
                    "l1|l2|activation|hessian",
                    "l1",
                    "unit importance: weight norms, or (needs --calib) output energy or the \
                     OBS deletion cost from XᵀX",
                )
                .option(
                    "scope",
                    "layer|global",
                    "layer",
                    "layer: ratio of every group; global: ratio of all units, ranked across groups",
                )
                .option(
                    "reconstruct",
                    "auto|obs|refit|off",
                    "auto",
                    "obs: one-shot OBS update of the consumers from XᵀX; refit: refit them, in \
                     graph order, to the dense model's outputs (least squares on the \
                     calibration data); auto: obs when --calib is given",
                )
                .option(
                    "damp",
                    "float",
                    &d.damp.to_string(),
                    "damping of XᵀX relative to its mean diagonal",
                )
                .option(
                    "min-keep",
                    "float",
                    &d.min_keep.to_string(),
                    "scope=global: fraction of every group that always stays",
                )
                .option(
                    "round-to",
                    "int",
                    "1",
                    "round the units kept per group up to a multiple of this",
                )
                .option(
                    "search",
                    "none|evo",
                    "none",
                    "evo: spread the FLOPs (or parameters, see budget) that `ratio` removes \
                     over the groups by an evolutionary search scored end to end on --calib \
                     samples",
                )
                .option(
                    "budget",
                    "flops|params|latency",
                    "flops",
                    "search=evo: what the searched allocation removes as much of as the uniform \
                     one; latency is measured by compiling and timing the model once per group \
                     (pare opt only; threads: --latency-threads)",
                )
                .evo_search_options(d.generations, d.offspring, d.search_samples),
            move |o| {
                let opts = o.parse::<PruneOptions>()?;
                opts.check(kind.name())?;
                Ok(Box::new(Prune::new(kind, opts)))
            },
        );
    }
    unstructured::register(reg);
}

/// A node or producer label for notes.
fn label(g: &Graph, n: NodeId) -> String {
    let nd = g.node(n);
    if nd.name.is_empty() {
        format!("{n} ({})", nd.op.name())
    } else {
        format!("'{}' ({})", nd.name, nd.op.name())
    }
}

fn group_label(g: &Graph, gr: &Group) -> String {
    let mut producers = gr.members_with(Role::Producer).map(|m| m.node);
    match producers.next() {
        Some(n) => {
            let more = producers.count();
            if more > 0 {
                format!("group {} of {} and {more} more", gr.id, label(g, n))
            } else {
                format!("group {} of {}", gr.id, label(g, n))
            }
        }
        None => format!("group {}", gr.id),
    }
}

/// True for attention-head groups: an `Attention` node counts the units, or units of several
/// channels that are not conv or norm groups (the head split of a MatMul-built attention).
pub fn is_heads(gr: &Group) -> bool {
    gr.members.iter().any(|m| m.role == Role::Heads)
        || (gr.granularity > 1
            && !gr
                .members
                .iter()
                .any(|m| matches!(m.role, Role::ConvGroups | Role::NormGroups)))
}

/// Why the pass leaves `gr` alone (`None`: it prunes it).
fn ineligible(g: &Graph, gr: &Group, kind: Kind) -> Option<String> {
    let heads = is_heads(gr);
    match kind {
        Kind::Heads if !heads => return Some(String::new()),
        Kind::Channels if heads => return Some(String::new()),
        _ => {}
    }
    if !gr.prunable {
        return Some(
            gr.reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "not prunable".into()),
        );
    }
    if gr.units < 2 {
        return Some("a single unit".into());
    }
    for m in &gr.members {
        match m.role {
            Role::NormParam | Role::Reduction => {
                return Some(format!(
                    "{} normalizes or reduces over the channels (removing some changes the others)",
                    label(g, m.node)
                ))
            }
            Role::Slice | Role::Split => {
                return Some(format!(
                    "{} slices or splits the channels (not handled yet)",
                    label(g, m.node)
                ))
            }
            _ => {}
        }
        if let Target::Const(c) = m.target {
            match g.constant(c) {
                Some(t) if t.dtype() == DType::F32 => {}
                _ => {
                    return Some(format!(
                        "constant '{}' of {} is not an f32 constant",
                        g.value(c).name,
                        label(g, m.node)
                    ))
                }
            }
        }
    }
    None
}

/// A consumer weight with what the second-order scores need.
struct Consumer {
    node: NodeId,
    mat: ConsumerMat,
    /// `XᵀX` (row-major `K×K`) and its damped inverse.
    h: Option<(Vec<f64>, Mat<f64>)>,
}

/// Per-(node, constant) consumers, loaded once.
struct Consumers {
    by_key: HashMap<(NodeId, ValueId), Option<Consumer>>,
}

impl Consumers {
    fn get(
        &mut self,
        g: &Graph,
        stats: Option<&CalibStats>,
        damp: f64,
        node: NodeId,
        c: ValueId,
        axis: usize,
    ) -> Option<&Consumer> {
        self.by_key
            .entry((node, c))
            .or_insert_with(|| {
                let t = g.constant(c)?;
                let layout = consumer_layout(g, node, t.shape().len())?;
                let want_axis = match layout {
                    Layout::KN => 0,
                    Layout::NK | Layout::Conv { .. } => 1,
                };
                if axis != want_axis {
                    return None;
                }
                let mat = ConsumerMat::new(t, layout)?;
                let h = stats
                    .and_then(|s| s.hessian(node))
                    .filter(|h| h.groups == 1 && h.k == mat.k)
                    .and_then(|h| {
                        let inv = damped_inverse(&h.data, h.k, damp)?;
                        Some((h.data.clone(), inv))
                    });
                Some(Consumer { node, mat, h })
            })
            .as_ref()
    }
}

/// Per-unit sums of `|w|` and `w²` over every producer and consumer member of `gr`.
fn norm_scores(g: &Graph, gr: &Group, l1: bool) -> Vec<f64> {
    let mut s = vec![0.0; gr.units];
    for m in &gr.members {
        if !matches!(m.role, Role::Producer | Role::Consumer) {
            continue;
        }
        let Target::Const(c) = m.target else { continue };
        let Some(t) = g.constant(c) else { continue };
        let Ok(v) = t.to_vec::<f32>() else { continue };
        let shape = t.shape();
        let Some(&d) = shape.get(m.axis) else {
            continue;
        };
        let inner: usize = shape[m.axis + 1..].iter().product();
        let outer: usize = shape[..m.axis].iter().product();
        let mut per_pos = vec![0.0f64; d];
        for o in 0..outer {
            for (i, p) in per_pos.iter_mut().enumerate() {
                let at = (o * d + i) * inner;
                for &x in &v[at..at + inner] {
                    *p += if l1 {
                        x.abs() as f64
                    } else {
                        (x as f64) * (x as f64)
                    };
                }
            }
        }
        for (u, su) in s.iter_mut().enumerate() {
            for p in m.offset + u * m.block..m.offset + (u + 1) * m.block {
                *su += per_pos.get(p).copied().unwrap_or(0.0);
            }
        }
    }
    if !l1 {
        for x in &mut s {
            *x = x.sqrt();
        }
    }
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    if mean > 0.0 {
        for x in &mut s {
            *x /= mean;
        }
    }
    s
}

/// Second-order scores: relative output energy (`activation`) or OBS cost (`hessian`) of
/// each unit over the consumers that have `XᵀX`; `None` when none has.
fn energy_scores(
    g: &Graph,
    gr: &Group,
    consumers: &mut Consumers,
    stats: Option<&CalibStats>,
    o: &PruneOptions,
) -> Option<Vec<f64>> {
    let mut s = vec![0.0; gr.units];
    let mut total = 0.0;
    let mut any = false;
    for m in gr.members_with(Role::Consumer) {
        let Target::Const(c) = m.target else { continue };
        let Some(cons) = consumers.get(g, stats, o.damp, m.node, c, m.axis) else {
            continue;
        };
        let Some((h, hinv)) = &cons.h else { continue };
        any = true;
        total += energy(h, &cons.mat);
        for (u, su) in s.iter_mut().enumerate() {
            let rows = cons.mat.rows_of(&positions(&[u], m.offset, m.block));
            *su += match o.score {
                Score::Hessian => obs_cost(hinv, &cons.mat, &rows)
                    .unwrap_or_else(|| diagonal_energy(h, &cons.mat, &rows)),
                _ => diagonal_energy(h, &cons.mat, &rows),
            };
        }
    }
    if !any {
        return None;
    }
    if total > 0.0 {
        for x in &mut s {
            *x /= total;
        }
    }
    Some(s)
}

/// Units of each group to remove.
fn select(groups: &[(&Group, Vec<f64>)], o: &PruneOptions) -> BTreeMap<usize, Vec<usize>> {
    let keep_rounded = |units: usize, kept: usize| -> usize {
        let k = kept.max(1).div_ceil(o.round_to) * o.round_to;
        k.min(units)
    };
    let lowest = |scores: &[f64], n: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        let mut r: Vec<usize> = idx.into_iter().take(n).collect();
        r.sort_unstable();
        r
    };
    let mut out = BTreeMap::new();
    match o.scope {
        Scope::Layer => {
            for (gr, scores) in groups {
                let remove = (o.ratio * gr.units as f64).floor() as usize;
                let kept = keep_rounded(gr.units, gr.units - remove.min(gr.units));
                out.insert(gr.id, lowest(scores, gr.units - kept));
            }
        }
        Scope::Global => {
            let total: usize = groups.iter().map(|(gr, _)| gr.units).sum();
            let target = (o.ratio * total as f64).round() as usize;
            let mut all: Vec<(f64, usize, usize)> = groups
                .iter()
                .enumerate()
                .flat_map(|(i, (_, s))| s.iter().enumerate().map(move |(u, &v)| (v, i, u)))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            let caps: Vec<usize> = groups
                .iter()
                .map(|(gr, _)| {
                    let floor = ((o.min_keep * gr.units as f64).ceil() as usize).max(1);
                    gr.units.saturating_sub(floor)
                })
                .collect();
            let mut count = vec![0usize; groups.len()];
            let mut taken = 0;
            for &(_, i, _) in &all {
                if taken >= target {
                    break;
                }
                if count[i] < caps[i] {
                    count[i] += 1;
                    taken += 1;
                }
            }
            for (i, (gr, scores)) in groups.iter().enumerate() {
                let kept = keep_rounded(gr.units, gr.units - count[i]);
                out.insert(gr.id, lowest(scores, gr.units - kept));
            }
        }
    }
    out.retain(|_, v| !v.is_empty());
    out
}

/// Removes the `chosen` units of each group from `g` (with the one-shot OBS update of the
/// consumers when `update`), records stats and notes in `report`.
#[allow(clippy::too_many_arguments)]
fn apply(
    g: &mut Graph,
    cg: &CouplingGroups,
    chosen: &BTreeMap<usize, Vec<usize>>,
    consumers: &mut Consumers,
    stats: Option<&CalibStats>,
    o: &PruneOptions,
    want_update: bool,
    measure: bool,
    name: &str,
    report: &mut PassReport,
) -> Result<(), PassError> {
    // Reshape targets need the types before any edit.
    let mut reshapes: BTreeMap<NodeId, Vec<(&Group, usize)>> = BTreeMap::new();
    for (gid, units) in chosen {
        let Some(gr) = cg.group(*gid) else { continue };
        for m in gr.members_with(Role::Reshape) {
            reshapes.entry(m.node).or_default().push((gr, units.len()));
        }
    }
    let mut new_shapes = Vec::new();
    for (n, gs) in &reshapes {
        let t = reshape_target(g, *n, gs).map_err(|e| PassError::at_node(name, g, *n, e))?;
        new_shapes.push((*n, t));
    }

    // Consumers: the one-shot update, before their rows are deleted.
    let mut updated: HashMap<ValueId, Tensor> = HashMap::new();
    let (mut err_num, mut err_den) = (0.0, 0.0);
    if want_update {
        let mut rows: BTreeMap<(NodeId, ValueId, usize), BTreeSet<usize>> = BTreeMap::new();
        for (gid, units) in chosen {
            let Some(gr) = cg.group(*gid) else { continue };
            for m in gr.members_with(Role::Consumer) {
                if let Target::Const(c) = m.target {
                    rows.entry((m.node, c, m.axis))
                        .or_default()
                        .extend(positions(units, m.offset, m.block));
                }
            }
        }
        let mut missing = 0;
        for ((node, c, axis), pos) in rows {
            let Some(cons) = consumers.get(g, stats, o.damp, node, c, axis) else {
                missing += 1;
                continue;
            };
            let Some((h, hinv)) = &cons.h else {
                missing += 1;
                continue;
            };
            let pos: Vec<usize> = pos.into_iter().collect();
            let r = cons.mat.rows_of(&pos);
            let mut m = cons.mat.clone();
            if reconstruct(hinv, &mut m, &r).is_none() {
                return Err(PassError::at_node(
                    name,
                    g,
                    cons.node,
                    "the least-squares update is not finite (try a larger damp)",
                ));
            }
            if measure {
                err_num += energy(h, &cons.mat.minus(&m));
                err_den += energy(h, &cons.mat);
            }
            updated.insert(c, m.to_tensor());
        }
        if missing > 0 {
            report.note(format!(
                "{missing} consumer(s) without XᵀX kept their weights (no update)"
            ));
        }
    }

    // Positions to delete, per constant and axis.
    let mut cuts: BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>> = BTreeMap::new();
    for (gid, units) in chosen {
        let Some(gr) = cg.group(*gid) else { continue };
        for m in &gr.members {
            if let Target::Const(c) = m.target {
                cuts.entry(c)
                    .or_default()
                    .entry(m.axis)
                    .or_default()
                    .extend(positions(units, m.offset, m.block));
            }
        }
    }
    let params_before: usize = cuts
        .keys()
        .filter_map(|&c| g.constant(c))
        .map(|t| t.numel())
        .sum();
    let mut params_after = 0usize;
    for (c, axes) in cuts {
        let mut t = match updated.remove(&c) {
            Some(t) => t,
            None => g
                .constant(c)
                .cloned()
                .ok_or_else(|| PassError::failed(name, "a member is not a constant"))?,
        };
        for (axis, pos) in axes {
            let pos: Vec<usize> = pos.into_iter().collect();
            t = remove_positions(&t, axis, &pos).ok_or_else(|| {
                PassError::failed(
                    name,
                    format!(
                        "cannot delete positions of '{}' along axis {axis}",
                        g.value(c).name
                    ),
                )
            })?;
        }
        params_after += t.numel();
        replace_const(g, c, t);
    }

    // Node members.
    for (gid, units) in chosen {
        let Some(gr) = cg.group(*gid) else { continue };
        let k = units.len() as i64;
        for m in &gr.members {
            match (m.role, g.op_mut(m.node)) {
                (Role::ConvGroups, Op::Conv(a)) => a.group -= k,
                (Role::NormGroups, Op::GroupNormalization(a)) => a.num_groups -= k,
                (Role::Heads, Op::Attention(a)) => {
                    if let Some(q) = &mut a.q_num_heads {
                        *q -= k;
                    }
                    if let Some(kv) = &mut a.kv_num_heads {
                        *kv -= k;
                    }
                }
                _ => {}
            }
        }
        let before = gr.units;
        report.note(format!(
            "{}: {before} → {} units",
            group_label(g, gr),
            before - units.len()
        ));
        report.add_stat("units-removed", units.len() as u64);
        report.add_stat("groups-pruned", 1);
    }
    for (n, target) in new_shapes {
        let len = target.len();
        let out = g.node(n).outputs().first().copied();
        let base = match out {
            Some(v) => format!("{}/pruned_shape", g.value(v).name),
            None => format!("{}/pruned_shape", g.node(n).name),
        };
        let sv = g.add_const(base, Tensor::from_vec(vec![len], target));
        g.set_operand(n, 1, Some(sv));
    }
    g.remove_dead_nodes();
    pare_ir::infer::reinfer_types(g).map_err(|e| {
        PassError::failed(name, format!("the pruned graph does not type-check: {e}"))
    })?;
    report.add_stat(
        "params-removed",
        params_before.saturating_sub(params_after) as u64,
    );
    if err_den > 0.0 {
        report.note(format!(
            "relative output error of the updated consumers on the calibration data: {:.4}",
            (err_num / err_den).sqrt()
        ));
    }
    Ok(())
}

/// Parameters per unit of `gr`: every constant axis it owns, counted once.
fn params_per_unit(g: &Graph, gr: &Group) -> f64 {
    let mut seen = BTreeSet::new();
    let mut p = 0.0;
    for m in &gr.members {
        if let Target::Const(c) = m.target {
            if !seen.insert((c, m.axis)) {
                continue;
            }
            if let Some(t) = g.constant(c) {
                let d = t.shape().get(m.axis).copied().unwrap_or(1).max(1);
                p += (t.numel() / d * m.block) as f64;
            }
        }
    }
    p
}

/// Multiply-accumulates per unit of `gr` in its convolutions and matrix products, given the
/// node output shapes of one run.
fn flops_per_unit(g: &Graph, gr: &Group, shapes: &HashMap<ValueId, Vec<usize>>) -> f64 {
    let mut p = 0.0;
    for m in &gr.members {
        if !matches!(m.role, Role::Producer | Role::Consumer) {
            continue;
        }
        let Target::Const(c) = m.target else { continue };
        let node = g.node(m.node);
        let out_axis = match &node.op {
            Op::Conv(_) | Op::ConvTranspose(_) => Some(1usize),
            Op::MatMul | Op::Gemm(_) => None,
            _ => continue,
        };
        let (Some(t), Some(shape)) = (
            g.constant(c),
            node.outputs().first().and_then(|y| shapes.get(y)),
        ) else {
            continue;
        };
        let oc = match out_axis {
            Some(a) => shape.get(a).copied(),
            None => shape.last().copied(),
        }
        .unwrap_or(1)
        .max(1);
        let rows = shape.iter().product::<usize>() / oc;
        let d = t.shape().get(m.axis).copied().unwrap_or(1).max(1);
        p += (t.numel() / d * m.block * rows) as f64;
    }
    p
}

/// The lowest-scoring `k[i]` units of every group.
fn lowest_units(scored: &[(&Group, Vec<f64>)], k: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut out = BTreeMap::new();
    for ((gr, s), &k) in scored.iter().zip(k) {
        if k == 0 {
            continue;
        }
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
        let mut r: Vec<usize> = idx.into_iter().take(k).collect();
        r.sort_unstable();
        out.insert(gr.id, r);
    }
    out
}

/// `search=evo`: the removed units per group, allocated by [`search::evolve`] under the
/// parameter budget of `uniform` and scored end to end on the calibration samples.
#[allow(clippy::too_many_arguments)]
fn search_allocation(
    g: &Graph,
    cg: &CouplingGroups,
    scored: &[(&Group, Vec<f64>)],
    uniform: &BTreeMap<usize, Vec<usize>>,
    consumers: &mut Consumers,
    stats: Option<&CalibStats>,
    o: &PruneOptions,
    update: bool,
    samples: &pare_pass::SampleSet,
    name: &str,
    report: &mut PassReport,
    probe: Option<&dyn LatencyProbe>,
    progress: &mut dyn FnMut(),
) -> Result<BTreeMap<usize, Vec<usize>>, PassError> {
    let units: Vec<usize> = scored.iter().map(|(gr, _)| gr.units).collect();
    let caps: Vec<usize> = units
        .iter()
        .map(|&u| u.saturating_sub(((o.min_keep * u as f64).ceil() as usize).max(1)))
        .collect();
    let interp = pare_interp::Interpreter::new();
    let fail = |e: String| PassError::failed(name, format!("allocation search: {e}"));
    let start: Vec<usize> = scored
        .iter()
        .zip(&caps)
        .map(|((gr, _), &cap)| uniform.get(&gr.id).map_or(0, |v| v.len()).min(cap))
        .collect();
    // Applies removed-unit counts `k` to a copy of `g`.
    let mut build = |k: &[usize]| -> Result<Graph, PassError> {
        let chosen = lowest_units(scored, k);
        let mut cand = g.clone();
        let mut scratch = PassReport::unchanged();
        apply(
            &mut cand,
            cg,
            &chosen,
            consumers,
            stats,
            o,
            update,
            false,
            name,
            &mut scratch,
        )?;
        Ok(cand)
    };
    let per_unit: Vec<f64> = match o.budget {
        Budget::Params => scored
            .iter()
            .map(|(gr, _)| params_per_unit(g, gr))
            .collect(),
        Budget::Latency => {
            let probe = probe.ok_or_else(|| {
                fail(
                    "budget=latency measures compiled latency, and nothing here can compile: \
                     run the pipeline through `pare opt`"
                        .into(),
                )
            })?;
            let (per_unit, note) =
                search::latency_per_unit(g, samples, &start, &caps, probe, &mut build)
                    .map_err(fail)?;
            report.note(note);
            per_unit
        }
        Budget::Flops => {
            let first = samples
                .samples
                .first()
                .ok_or_else(|| fail("no calibration sample".into()))?;
            let vals = first.values()?;
            let mut shapes = HashMap::new();
            interp
                .run_observed(g, vals, &mut |v, val| {
                    shapes.insert(v, val.shape().to_vec());
                })
                .map_err(|e| fail(e.to_string()))?;
            scored
                .iter()
                .map(|(gr, _)| flops_per_unit(g, gr, &shapes))
                .collect()
        }
    };
    // The search moves blocks of `round-to` units, so that every group keeps a multiple of
    // `round-to` (as the uniform selection does): removing `b > 0` blocks removes the group's
    // `units mod round-to` remainder and `b · round-to` units.
    let r = o.round_to.max(1);
    let rems: Vec<usize> = units.iter().map(|&u| u % r).collect();
    let to_removed = |b: &[usize]| -> Vec<usize> {
        b.iter()
            .zip(&rems)
            .map(|(&b, &rem)| if b == 0 { 0 } else { rem + b * r })
            .collect()
    };
    let blocks = |k: usize, rem: usize| if k < rem + r { 0 } else { (k - rem) / r };
    let start_b: Vec<usize> = start
        .iter()
        .zip(&rems)
        .map(|(&k, &m)| blocks(k, m))
        .collect();
    let caps_b: Vec<usize> = caps
        .iter()
        .zip(&rems)
        .map(|(&k, &m)| blocks(k, m))
        .collect();
    let per_block: Vec<f64> = per_unit.iter().map(|&p| p * r as f64).collect();
    let budget: f64 = start_b
        .iter()
        .zip(&per_block)
        .map(|(&k, &p)| k as f64 * p)
        .sum();
    let scorer = search::Scorer::new(g, samples, o.search_samples).map_err(fail)?;
    let n = scorer.samples();
    let mut fitness = |b: &[usize]| -> Result<f64, PassError> {
        let cand = build(&to_removed(b))?;
        scorer.error(&cand).map_err(fail)
    };
    let space = search::Space {
        units: units.iter().map(|&u| u / r).collect(),
        caps: caps_b,
        per_unit: per_block,
        budget,
    };
    let found = search::evolve(
        start_b,
        &space,
        search::Settings {
            generations: o.generations,
            offspring: o.offspring,
            seed: 0x5eed,
        },
        &mut fitness,
        progress,
    )?;
    found.report(
        report,
        &format!("allocation search ({:?} budget)", o.budget),
        o.generations,
        n,
        "uniform allocation",
    );
    let removed = to_removed(&found.removed);
    if let (Budget::Latency, Some(probe)) = (o.budget, probe) {
        let (uniform, searched) = (build(&start)?, build(&removed)?);
        let note = search::latency_note(probe, g, &uniform, &searched, "uniform allocation")
            .map_err(|e| fail(format!("timing the result: {e}")))?;
        report.note(note);
    }
    Ok(lowest_units(scored, &removed))
}

impl Pass for Prune {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let name = self.kind.name();
        let o = self.opts.clone();
        pare_ir::infer::infer_types(g).map_err(|e| PassError::failed(name, e.to_string()))?;
        let mut report = PassReport::unchanged();
        if o.ratio == 0.0 {
            return Ok(report);
        }
        let second_order = matches!(o.score, Score::Activation | Score::Hessian);
        let mode = match o.reconstruct {
            Reconstruct::Auto if cx.samples().is_some() => Reconstruct::Obs,
            Reconstruct::Auto => Reconstruct::Off,
            m => m,
        };
        let want_update = mode == Reconstruct::Obs;
        let sequential = mode == Reconstruct::Refit;
        let samples = if sequential {
            Some(cx.require_samples(name)?)
        } else {
            None
        };
        let stats = if second_order || want_update || sequential {
            Some(cx.analysis::<CalibStats>(g)?)
        } else {
            None
        };
        let stats = stats.as_deref();
        let cg = CouplingGroups::analyze(g).map_err(|e| PassError::analysis("coupling", e))?;

        let mut consumers = Consumers {
            by_key: HashMap::new(),
        };
        let mut scored: Vec<(&Group, Vec<f64>)> = Vec::new();
        let mut fallback = 0;
        for gr in &cg.groups {
            if let Some(why) = ineligible(g, gr, self.kind) {
                if !why.is_empty() && gr.members.iter().any(|m| m.role == Role::Producer) {
                    report.note(format!("left {}: {why}", group_label(g, gr)));
                }
                continue;
            }
            let s = match o.score {
                Score::L1 => norm_scores(g, gr, true),
                Score::L2 => norm_scores(g, gr, false),
                Score::Activation | Score::Hessian => {
                    match energy_scores(g, gr, &mut consumers, stats, &o) {
                        Some(s) => s,
                        None => {
                            fallback += 1;
                            norm_scores(g, gr, false)
                        }
                    }
                }
            };
            scored.push((gr, s));
        }
        if fallback > 0 {
            report.note(format!(
                "{fallback} group(s) without a consumer XᵀX were scored by their L2 norm"
            ));
        }
        let mut chosen = select(&scored, &o);
        if o.search == Search::Evo && !chosen.is_empty() {
            let samples = cx.require_samples(name)?;
            let probe = cx.latency_probe().cloned();
            let pb = cx.progress_bar(o.generations as u64, "allocation search");
            chosen = search_allocation(
                g,
                &cg,
                &scored,
                &chosen,
                &mut consumers,
                stats,
                &o,
                want_update || sequential,
                &samples,
                name,
                &mut report,
                probe.as_deref(),
                &mut || pb.inc(1),
            )?;
            pb.finish_and_clear();
        }
        if chosen.is_empty() {
            report.note("nothing to remove at this ratio".to_string());
            return Ok(report);
        }

        let dense = sequential.then(|| g.clone());
        // Sequential refit: the dense model and, per consumer, its removed output channels.
        let mut jobs: BTreeMap<NodeId, seq::Job> = BTreeMap::new();
        if sequential {
            for gid in chosen.keys() {
                let Some(gr) = cg.group(*gid) else { continue };
                for m in gr.members_with(Role::Consumer) {
                    jobs.entry(m.node).or_insert_with(|| seq::Job {
                        node: m.node,
                        out_removed: BTreeSet::new(),
                    });
                }
            }
            for (gid, units) in &chosen {
                let Some(gr) = cg.group(*gid) else { continue };
                for m in gr.members_with(Role::Producer) {
                    if let Some(j) = jobs.get_mut(&m.node) {
                        j.out_removed.extend(positions(units, m.offset, m.block));
                    }
                }
            }
        }

        apply(
            g,
            &cg,
            &chosen,
            &mut consumers,
            stats,
            &o,
            want_update,
            true,
            name,
            &mut report,
        )?;
        if let (Some(dense), Some(samples), Some(stats)) = (&dense, &samples, stats) {
            let jobs: Vec<seq::Job> = jobs.into_values().collect();
            let pb = cx.progress_bar(jobs.len() as u64, "refitting consumers");
            let out = seq::refit(dense, g, stats, samples, &jobs, o.damp, &mut || pb.inc(1))
                .map_err(|e| PassError::failed(name, format!("refit: {e}")))?;
            pb.finish_and_clear();
            report.add_stat("consumers-refitted", out.refitted as u64);
            for (n, why) in &out.skipped {
                report.note(format!("not refitted: {}: {why}", label(g, *n)));
            }
            if out.energy > 0.0 {
                report.note(format!(
                    "refitted consumers' output error vs the dense model on the calibration \
                     data: {:.4} before the refit, {:.4} after (relative)",
                    (out.err_before / out.energy).sqrt(),
                    (out.err_after / out.energy).sqrt()
                ));
            }
            pare_ir::infer::reinfer_types(g).map_err(|e| {
                PassError::failed(name, format!("the refitted graph does not type-check: {e}"))
            })?;
        }
        report.changed = true;
        report.preserved = pare_pass::Preserved::none();
        Ok(report)
    }
}
