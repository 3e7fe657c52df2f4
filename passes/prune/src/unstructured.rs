//! Unstructured and N:M pruning (`prune-unstructured`): zero individual weights of the
//! linear layers, either a fraction of every output's weights or `N` of every `M`
//! consecutive inputs (the 2:4 pattern sparse tensor cores run).
//!
//! **What it does.** Every MatMul whose `B` is a constant 2-D f32 weight, every Gemm with
//! a constant f32 `B` (`transB` respected) and every Conv with a constant f32 weight (seen
//! as rows `[out, in/group·kh·kw]`, the im2col order) is seen as `Y = X·W` with `W` of
//! `K` inputs × `N` outputs. Within each output (column of `W`, filter of a conv) the pass
//! zeroes:
//!
//! - `sparsity` (default 0.5): `⌊sparsity·K⌋` weights, or
//! - `pattern=N:M` (e.g. `2:4`, `4:8`; overrides `sparsity`): in every group of `M`
//!   consecutive input positions, all but `N` (a last, shorter group keeps up to `N`).
//!
//! Which weights go depends on `method`:
//! - `magnitude` (default): the smallest `|W_ij|` (Han et al. 2015, "Learning both
//!   Weights and Connections for Efficient Neural Networks"); no data needed.
//! - `wanda`: the smallest `|W_ij|·‖X_j‖₂`, compared within each output (Sun et al. 2023,
//!   "A Simple and Effective Pruning Approach for Large Language Models"); `‖X_j‖₂² = H_jj`
//!   of the calibration `H = XᵀX`. The weights that stay are unchanged.
//! - `sparsegpt`: Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
//!   Accurately Pruned in One-Shot": inputs are visited one at a time and every pruned
//!   weight's error is moved onto the inputs not yet visited by the Optimal-Brain-Surgeon
//!   update through the upper Cholesky factor of `(H + damp·mean(diag H)·I)⁻¹` (faer), in
//!   blocks of 128 inputs with lazy batch updates; the mask is chosen per block from the
//!   current weights by `w²/[U_cc]²` (adaptive mask selection; for `N:M` per group, at the
//!   group's first input). Inputs that never fired on the calibration data (`H_jj = 0`) get
//!   `H_jj = 1`, as in `quantize(method=gptq)`. See [`crate::sparsegpt::sparsegpt`].
//!
//! Options: `damp` (0.01) is added to the diagonal of `XᵀX` relative to its mean (raised
//! ×10 up to 1 when the Cholesky factorization fails, with a note); weights with fewer than
//! `min-elements` (1024) elements are left dense (with a note), as are weights that are
//! shared by several nodes, not f32, or not finite.
//!
//! **Needs.** `wanda` and `sparsegpt` need calibration samples (`--calib`), read through
//! the [`CalibStats`] analysis (`XᵀX` per layer; a layer without one, e.g. above the
//! analysis' size limit, falls back to `magnitude`, with a note). With `magnitude`,
//! calibration samples are optional and only used to report the output error.
//!
//! **Guarantees.** The graph keeps its nodes, inputs and outputs; every pruned weight is
//! replaced by a new dense f32 constant of the same shape and name holding exact zeros
//! (the file does not shrink yet: a sparse format and kernel are separate work). Every
//! output of a pruned layer has exactly `⌊sparsity·K⌋` zeros chosen by the method (more if
//! the weight already had zeros), or at most `N` non-zeros in every group of `M`. With
//! `magnitude` and `wanda` the other weights are bit-for-bit unchanged; `sparsegpt` updates
//! them. The change is lossy: the report gives per layer its name, weight shape and
//! achieved sparsity and, with calibration samples, the relative output error
//! `‖XW − XŴ‖/‖XW‖ = √(tr(ΔWᵀHΔW)/tr(WᵀHW))` on the calibration data (each layer on the
//! dense model's inputs), and the totals (`weights-zeroed` / `weights-total` over the
//! pruned layers). Every layer is pruned against the dense model's `XᵀX` (one calibration
//! run), not sequentially on the inputs of the already pruned layers before it as the
//! SparseGPT reference code does, so errors of earlier layers are not compensated by
//! later ones.

use crate::edit::replace_const;
use crate::linalg::{quadratic, ConsumerMat, FactorError, Layout};
use crate::sparsegpt::{sparsegpt, SparseGptError};
use pare_analysis::CalibStats;
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use serde::Deserialize;

/// The pass name.
pub const NAME: &str = "prune-unstructured";

/// Which weights are zeroed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The smallest `|W_ij|` of each output.
    #[default]
    Magnitude,
    /// The smallest `|W_ij|·‖X_j‖₂` of each output (needs calibration samples).
    Wanda,
    /// SparseGPT: OBS mask selection with the weight update (needs calibration samples).
    Sparsegpt,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Sparsegpt => "sparsegpt",
        }
    }
}

/// What is zeroed in each output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// `⌊s·K⌋` of the `K` weights.
    Fraction(f64),
    /// All but `n` of every group of `m` consecutive inputs.
    NOfM {
        /// Kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },
}

impl Pattern {
    /// Parses `none` (→ `Fraction(sparsity)`) or `N:M`.
    pub fn parse(text: &str, sparsity: f64) -> Result<Pattern, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") || t.is_empty() {
            return Ok(Pattern::Fraction(sparsity));
        }
        let bad = || format!("pattern must be 'none' or N:M such as 2:4, got '{t}'");
        let (a, b) = t.split_once(':').ok_or_else(bad)?;
        let n: usize = a.trim().parse().map_err(|_| bad())?;
        let m: usize = b.trim().parse().map_err(|_| bad())?;
        if n == 0 || m == 0 {
            return Err(format!("pattern {n}:{m}: N and M must be at least 1"));
        }
        if n > m {
            return Err(format!(
                "pattern {n}:{m}: N (kept) must be at most M (the group length)"
            ));
        }
        Ok(Pattern::NOfM { n, m })
    }

    /// True when nothing would be zeroed.
    fn is_noop(self) -> bool {
        match self {
            Pattern::Fraction(s) => s <= 0.0,
            Pattern::NOfM { n, m } => n >= m,
        }
    }
}

/// `⌊s·len⌋`, robust to the rounding of `s` (0.29·100 is 29).
pub fn count_at(s: f64, len: usize) -> usize {
    ((s * len as f64 * (1.0 + 1e-12)).floor().max(0.0) as usize).min(len)
}

/// Indices of the `take` lowest `scores` (ties: the lower index goes first), ascending.
pub fn lowest(scores: &[f64], take: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx.truncate(take);
    idx.sort_unstable();
    idx
}

/// Zeroes, in every output of `w` (`K×N`, input-major), the weights with the lowest
/// `score` (same layout) that `pattern` asks for.
pub fn prune_by_scores(w: &[f64], k: usize, n: usize, score: &[f64], pattern: Pattern) -> Vec<f64> {
    let mut out = w.to_vec();
    let mut col = Vec::with_capacity(k);
    for c in 0..n {
        col.clear();
        col.extend((0..k).map(|i| score[i * n + c]));
        match pattern {
            Pattern::Fraction(s) => {
                for i in lowest(&col, count_at(s, k)) {
                    out[i * n + c] = 0.0;
                }
            }
            Pattern::NOfM { n: keep, m } => {
                for start in (0..k).step_by(m.max(1)) {
                    let end = (start + m).min(k);
                    let take = (end - start).saturating_sub(keep);
                    for j in lowest(&col[start..end], take) {
                        out[(start + j) * n + c] = 0.0;
                    }
                }
            }
        }
    }
    out
}

/// Magnitude pruning of `w` (`K×N`, input-major).
pub fn magnitude(w: &[f64], k: usize, n: usize, pattern: Pattern) -> Vec<f64> {
    let score: Vec<f64> = w.iter().map(|x| x.abs()).collect();
    prune_by_scores(w, k, n, &score, pattern)
}

/// Wanda pruning of `w` (`K×N`, input-major): score `|W_ij|·‖X_j‖₂` with
/// `‖X_j‖₂² = diag[j]` (the diagonal of `XᵀX`).
pub fn wanda(w: &[f64], k: usize, n: usize, diag: &[f64], pattern: Pattern) -> Vec<f64> {
    let score: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(i, x)| x.abs() * diag.get(i / n.max(1)).map_or(0.0, |d| d.max(0.0).sqrt()))
        .collect();
    prune_by_scores(w, k, n, &score, pattern)
}

/// Options of `prune-unstructured`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct UnstructuredOptions {
    /// Fraction of every output's weights zeroed (ignored with a pattern).
    pub sparsity: f64,
    /// Which weights go.
    pub method: Method,
    /// `none` or `N:M`.
    pub pattern: String,
    /// Damping of `XᵀX`, relative to its mean diagonal (`sparsegpt`).
    pub damp: f64,
    /// Weights with fewer elements are left dense.
    pub min_elements: usize,
}

impl Default for UnstructuredOptions {
    fn default() -> Self {
        UnstructuredOptions {
            sparsity: 0.5,
            method: Method::Magnitude,
            pattern: "none".into(),
            damp: 0.01,
            min_elements: 1024,
        }
    }
}

impl UnstructuredOptions {
    /// Checks the options; the pattern they describe.
    pub fn check(&self) -> Result<Pattern, PassError> {
        let bad = |m: String| PassError::failed(NAME, m);
        if !(self.sparsity >= 0.0 && self.sparsity < 1.0) {
            return Err(bad(format!(
                "sparsity must be in [0, 1), got {}",
                self.sparsity
            )));
        }
        if !(self.damp >= 0.0 && self.damp.is_finite()) {
            return Err(bad("damp must be a finite number >= 0".into()));
        }
        Pattern::parse(&self.pattern, self.sparsity).map_err(bad)
    }
}

/// The `prune-unstructured` pass (see the module docs).
#[derive(Clone, Debug)]
pub struct PruneUnstructured {
    opts: UnstructuredOptions,
    pattern: Pattern,
}

impl PruneUnstructured {
    /// A pass with these options (checked).
    pub fn new(opts: UnstructuredOptions) -> Result<PruneUnstructured, PassError> {
        let pattern = opts.check()?;
        Ok(PruneUnstructured { opts, pattern })
    }
}

/// Registers `prune-unstructured`.
pub fn register(reg: &mut Registry) {
    let d = UnstructuredOptions::default();
    reg.register(
        PassInfo::new(
            NAME,
            "unstructured / N:M pruning: zero individual weights of MatMul, Gemm and Conv \
             (magnitude, Wanda or SparseGPT); the weights stay dense f32 (lossy)",
        )
        .option(
            "sparsity",
            "float",
            &d.sparsity.to_string(),
            "fraction of each output's weights zeroed (ignored when pattern is given)",
        )
        .option(
            "method",
            "magnitude|wanda|sparsegpt",
            "magnitude",
            "magnitude: smallest |W|; wanda: smallest |W|·‖X‖ per output; sparsegpt: OBS mask \
             and weight update from XᵀX (wanda and sparsegpt need --calib)",
        )
        .option(
            "pattern",
            "string",
            "none",
            "none, or N:M: keep N of every M consecutive inputs of each output (2:4, 4:8)",
        )
        .option(
            "damp",
            "float",
            &d.damp.to_string(),
            "damping of XᵀX relative to its mean diagonal (sparsegpt)",
        )
        .option(
            "min-elements",
            "int",
            &d.min_elements.to_string(),
            "weights with fewer elements are left dense",
        ),
        |o| {
            let opts = o.parse::<UnstructuredOptions>()?;
            Ok(Box::new(PruneUnstructured::new(opts)?))
        },
    );
}

/// A linear layer's weight, read as `K×N`.
struct Layer {
    node: NodeId,
    weight: ValueId,
    shape: Vec<usize>,
    /// Conv group count (1 otherwise): outputs `[g·N/G, (g+1)·N/G)` read block `g` of `XᵀX`.
    groups: usize,
    mat: ConsumerMat,
}

fn label(g: &Graph, n: NodeId) -> String {
    let nd = g.node(n);
    if nd.name.is_empty() {
        format!("{n} ({})", nd.op.name())
    } else {
        format!("'{}' ({})", nd.name, nd.op.name())
    }
}

/// Why a linear layer is left dense.
enum Skip {
    /// Fewer elements than `min-elements` (counted, not listed).
    Small,
    /// Anything else, for a note.
    Other(String),
}

impl From<String> for Skip {
    fn from(s: String) -> Skip {
        Skip::Other(s)
    }
}

impl From<&str> for Skip {
    fn from(s: &str) -> Skip {
        Skip::Other(s.to_string())
    }
}

/// The layer of node `n`: `Ok(None)` when it is no linear layer with a constant weight,
/// `Err(why)` when it is one the pass leaves alone.
fn layer(g: &Graph, n: NodeId, min_elements: usize) -> Result<Option<Layer>, Skip> {
    let nd = g.node(n);
    let (layout, groups) = match &nd.op {
        Op::MatMul => (Layout::KN, 1),
        Op::Gemm(a) => (if a.trans_b { Layout::NK } else { Layout::KN }, 1),
        Op::Conv(a) => {
            let groups = usize::try_from(a.group)
                .ok()
                .filter(|&x| x > 0)
                .ok_or_else(|| Skip::Other(format!("invalid group count {}", a.group)))?;
            (Layout::Conv { taps: 0 }, groups)
        }
        _ => return Ok(None),
    };
    let (Some(x), Some(wv)) = (nd.input(0), nd.input(1)) else {
        return Ok(None);
    };
    let Some(t) = g.constant(wv) else {
        return Ok(None);
    };
    if g.constant(x).is_some() {
        return Err("both operands are constant (fold-constants evaluates it)".into());
    }
    if t.dtype() != DType::F32 {
        return Err(format!("the weight is {}, not f32", t.dtype()).into());
    }
    let shape = t.shape().to_vec();
    match layout {
        Layout::KN | Layout::NK if shape.len() != 2 => {
            return Err(format!("the weight has rank {}, not 2", shape.len()).into())
        }
        Layout::Conv { .. } if shape.len() < 3 => {
            return Err(format!("the conv weight has rank {}", shape.len()).into())
        }
        Layout::Conv { .. } if shape[0] % groups != 0 => {
            return Err(format!("{} filters in {groups} groups", shape[0]).into())
        }
        _ => {}
    }
    let uses = g.uses(wv).len();
    if uses > 1 {
        return Err(format!("the weight is shared by {uses} uses").into());
    }
    let numel = t.numel();
    if numel < min_elements {
        return Err(Skip::Small);
    }
    let mat = ConsumerMat::new(t, layout).ok_or("the weight cannot be read as f32")?;
    if mat.w.iter().any(|x| !x.is_finite()) {
        return Err("the weight has non-finite entries".into());
    }
    Ok(Some(Layer {
        node: n,
        weight: wv,
        shape,
        groups,
        mat,
    }))
}

/// Columns `[c0, c0+len)` of a `K×N` matrix.
fn columns(w: &[f64], k: usize, n: usize, c0: usize, len: usize) -> Vec<f64> {
    (0..k)
        .flat_map(|i| w[i * n + c0..i * n + c0 + len].iter().copied())
        .collect()
}

/// What pruning one layer gave.
struct Pruned {
    w: Vec<f64>,
    /// `(tr(ΔWᵀHΔW), tr(WᵀHW))` when `XᵀX` was used.
    err: Option<(f64, f64)>,
    detail: Vec<String>,
}

fn prune_layer(
    l: &Layer,
    stats: Option<&CalibStats>,
    method: Method,
    pattern: Pattern,
    damp: f64,
) -> Result<Pruned, String> {
    let (k, n) = (l.mat.k, l.mat.n);
    let mut detail = Vec::new();
    let hess = match stats.map(|s| s.hessian(l.node)) {
        Some(Some(h)) if h.k == k && h.groups == l.groups && h.data.len() == h.groups * k * k => {
            Some(h)
        }
        Some(Some(h)) => {
            detail.push(format!(
                "XᵀX shape {}×{}×{} does not match the weight",
                h.groups, h.k, h.k
            ));
            None
        }
        Some(None) => {
            let why = stats
                .and_then(|s| {
                    s.skipped_hessians
                        .iter()
                        .find(|(m, _)| *m == l.node)
                        .map(|(_, w)| w.clone())
                })
                .unwrap_or_else(|| "no XᵀX was recorded for it".into());
            detail.push(why);
            None
        }
        None => None,
    };
    let method = match (method, hess) {
        (Method::Magnitude, _) => Method::Magnitude,
        (m, Some(_)) => m,
        (m, None) => {
            detail.push(format!("{} fell back to magnitude", m.name()));
            Method::Magnitude
        }
    };
    let mg = n / l.groups;
    let mut out = vec![0f64; k * n];
    let (mut num, mut den) = (0f64, 0f64);
    for gi in 0..l.groups {
        let w = columns(&l.mat.w, k, n, gi * mg, mg);
        let h = hess.map(|h| h.block(gi));
        let p = match (method, h) {
            (Method::Wanda, Some(h)) => {
                let diag: Vec<f64> = (0..k).map(|j| h[j * k + j]).collect();
                wanda(&w, k, mg, &diag, pattern)
            }
            (Method::Sparsegpt, Some(h)) => {
                let (p, used) = sparsegpt_damped(&w, k, mg, h, pattern, damp)?;
                let note = format!("damp raised to {used}");
                if used != damp && !detail.contains(&note) {
                    detail.push(note);
                }
                p
            }
            _ => magnitude(&w, k, mg, pattern),
        };
        if let Some(h) = h {
            let dw: Vec<f64> = w.iter().zip(&p).map(|(a, b)| a - b).collect();
            num += quadratic(h, &dw, k, mg);
            den += quadratic(h, &w, k, mg);
        }
        for i in 0..k {
            out[i * n + gi * mg..i * n + (gi + 1) * mg].copy_from_slice(&p[i * mg..(i + 1) * mg]);
        }
    }
    if !out.iter().all(|x| x.is_finite()) {
        return Err("the pruned weight is not finite (try a larger damp)".into());
    }
    Ok(Pruned {
        w: out,
        err: hess.map(|_| (num, den)),
        detail,
    })
}

/// SparseGPT, with `damp` raised ×10 (up to 1) while the factorization fails; the result
/// and the damping used.
fn sparsegpt_damped(
    w: &[f64],
    k: usize,
    n: usize,
    h: &[f64],
    pattern: Pattern,
    damp: f64,
) -> Result<(Vec<f64>, f64), String> {
    let mut d = damp;
    loop {
        match sparsegpt(w, k, n, h, pattern, d) {
            Ok(p) => return Ok((p, d)),
            Err(SparseGptError::Factor(FactorError::NotPositiveDefinite { .. })) if d < 1.0 => {
                d = (d * 10.0).max(0.01)
            }
            Err(e) => return Err(format!("sparsegpt: {e}")),
        }
    }
}

fn fmt_shape(s: &[usize]) -> String {
    let d: Vec<String> = s.iter().map(|x| x.to_string()).collect();
    format!("f32[{}]", d.join(","))
}

impl Pass for PruneUnstructured {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let o = &self.opts;
        let pattern = self.pattern;
        let mut report = PassReport::unchanged();
        if pattern.is_noop() {
            report.note("nothing to prune (sparsity 0 or N = M)");
            return Ok(report);
        }
        let stats = match o.method {
            Method::Magnitude if cx.samples().is_none() => None,
            Method::Magnitude => Some(cx.analysis::<CalibStats>(g)?),
            Method::Wanda | Method::Sparsegpt => {
                cx.require_samples(NAME)?;
                Some(cx.analysis::<CalibStats>(g)?)
            }
        };
        let stats = stats.as_deref();

        let nodes: Vec<NodeId> = g.node_ids().collect();
        let mut layers = Vec::new();
        let mut small = 0usize;
        for n in nodes {
            match layer(g, n, o.min_elements) {
                Ok(Some(l)) => layers.push(l),
                Ok(None) => {}
                Err(Skip::Small) => small += 1,
                Err(Skip::Other(why)) => report.note(format!("left {} dense: {why}", label(g, n))),
            }
        }
        if small > 0 {
            report.note(format!(
                "{small} weight(s) with fewer than min-elements={} elements left dense",
                o.min_elements
            ));
        }
        let pb = cx.progress_bar(layers.len() as u64, "pruning weights");
        let (mut zeroed, mut total, mut pruned_layers) = (0u64, 0u64, 0u64);
        let (mut num_all, mut den_all) = (0f64, 0f64);
        for l in &layers {
            let p = prune_layer(l, stats, o.method, pattern, o.damp)
                .map_err(|e| PassError::at_node(NAME, g, l.node, e))?;
            pb.inc(1);
            let mut mat = l.mat.clone();
            mat.w = p.w;
            let t = mat.to_tensor();
            let zeros = mat.w.iter().filter(|&&x| x == 0.0).count() as u64;
            let numel = mat.w.len() as u64;
            let mut line = format!(
                "{} {}: {:.1}% zeros",
                label(g, l.node),
                fmt_shape(&l.shape),
                100.0 * zeros as f64 / numel.max(1) as f64
            );
            if let Some((num, den)) = p.err {
                num_all += num;
                den_all += den;
                let rel = if den > 0.0 {
                    (num / den).max(0.0).sqrt()
                } else {
                    0.0
                };
                line.push_str(&format!(", output error {rel:.4}"));
            }
            if !p.detail.is_empty() {
                line.push_str(&format!(" ({})", p.detail.join("; ")));
            }
            report.note(line);
            replace_const(g, l.weight, t);
            zeroed += zeros;
            total += numel;
            pruned_layers += 1;
        }
        pb.finish_and_clear();
        if pruned_layers == 0 {
            report.note("no weight to prune");
            return Ok(report);
        }
        let mut line = format!(
            "{} ({}): {zeroed} of {total} weights zero ({:.1}%) in {pruned_layers} layer(s)",
            o.method.name(),
            match pattern {
                Pattern::Fraction(s) => format!("sparsity {s}"),
                Pattern::NOfM { n, m } => format!("{n}:{m}"),
            },
            100.0 * zeroed as f64 / total.max(1) as f64
        );
        if den_all > 0.0 {
            line.push_str(&format!(
                "; output error over the layers on the calibration data {:.4}",
                (num_all / den_all).max(0.0).sqrt()
            ));
        }
        report.note(line);
        report.add_stat("weights-zeroed", zeroed);
        report.add_stat("weights-total", total);
        report.add_stat("layers-pruned", pruned_layers);
        report.changed = true;
        report.preserved = pare_pass::Preserved::none();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn exact_sparsity_counts() {
        let (k, n) = (37, 5);
        let w = random(k * n, 9);
        for (s, want) in [(0.5, 18), (0.3, 11), (0.0, 0), (0.99, 36)] {
            assert_eq!(count_at(s, k), want);
            let p = magnitude(&w, k, n, Pattern::Fraction(s));
            for c in 0..n {
                let zeros: Vec<usize> = (0..k).filter(|&i| p[i * n + c] == 0.0).collect();
                assert_eq!(zeros.len(), want, "sparsity {s}, output {c}");
                // The zeroed are the smallest: every kept |w| ≥ every pruned |w|.
                let max_pruned = zeros
                    .iter()
                    .map(|&i| w[i * n + c].abs())
                    .fold(0.0, f64::max);
                for i in (0..k).filter(|i| !zeros.contains(i)) {
                    assert!(w[i * n + c].abs() >= max_pruned);
                    assert_eq!(p[i * n + c], w[i * n + c]);
                }
            }
        }
        assert_eq!(count_at(0.3, 10), 3);
        assert_eq!(count_at(0.7, 10), 7);
        assert_eq!(count_at(0.29, 100), 29);
        assert_eq!(count_at(0.999_999_999, 10), 9);
    }

    #[test]
    fn exact_n_of_m_patterns() {
        let (k, n) = (26, 4);
        let w = random(k * n, 3);
        for (keep, m) in [(2usize, 4usize), (4, 8), (1, 4)] {
            let p = magnitude(&w, k, n, Pattern::NOfM { n: keep, m });
            for c in 0..n {
                for start in (0..k).step_by(m) {
                    let end = (start + m).min(k);
                    let nz = (start..end).filter(|&i| p[i * n + c] != 0.0).count();
                    assert_eq!(
                        nz,
                        keep.min(end - start),
                        "{keep}:{m} output {c} at {start}"
                    );
                    // The kept ones are the largest of their group.
                    let min_kept = (start..end)
                        .filter(|&i| p[i * n + c] != 0.0)
                        .map(|i| w[i * n + c].abs())
                        .fold(f64::INFINITY, f64::min);
                    for i in (start..end).filter(|&i| p[i * n + c] == 0.0) {
                        assert!(w[i * n + c].abs() <= min_kept);
                    }
                }
            }
        }
        // Hand-checked: one output, K = 8, 2:4.
        let w = [0.1, -0.9, 0.3, 0.2, -0.05, 0.5, -0.6, 0.0];
        assert_eq!(
            magnitude(&w, 8, 1, Pattern::NOfM { n: 2, m: 4 }),
            vec![0.0, -0.9, 0.3, 0.0, 0.0, 0.5, -0.6, 0.0]
        );
    }

    #[test]
    fn wanda_weighs_by_the_input_norm() {
        // One output, K = 4: |w| = [1, 2, 3, 4], ‖X_j‖ = [10, 1, 1, 0.1] → scores
        // [10, 2, 3, 0.4]: inputs 3 and 1 go (magnitude would drop 0 and 1).
        let w = [1.0, 2.0, -3.0, 4.0];
        let diag = [100.0, 1.0, 1.0, 0.01];
        assert_eq!(
            wanda(&w, 4, 1, &diag, Pattern::Fraction(0.5)),
            vec![1.0, 0.0, -3.0, 0.0]
        );
        assert_eq!(
            magnitude(&w, 4, 1, Pattern::Fraction(0.5)),
            vec![0.0, 0.0, -3.0, 4.0]
        );
    }

    /// The pass on a small graph with calibration samples: exact counts per layer, a
    /// report whose output error is the one measured directly, and the error ordering
    /// SparseGPT < Wanda < magnitude on correlated, unevenly scaled inputs.
    #[test]
    fn pass_with_calibration_reports_the_measured_error() {
        use pare_pass::samples::{Sample, SampleSet};
        let (rows, k, n) = (32usize, 24usize, 8usize);
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "graph @main(%x: f32[{rows},{k}]) -> (%z) {{\n  %w = const f32[{k},{n}] [{}]\n  \
             %b = const f32[6,{n}] [{}]\n  %y = MatMul(%x, %w)\n  %z = Gemm(%y, %b) \
             {{transB=1}}\n}}\n",
            list(&random(k * n, 21)),
            list(&random(6 * n, 22))
        );
        let g = pare_ir::parse_graph(&text).expect("parses");
        let scale: Vec<f64> = (0..k).map(|j| [0.2, 1.0, 4.0, 0.5][j % 4]).collect();
        let xs: Vec<Vec<f64>> = (0..8)
            .map(|i| {
                let r = random(rows * k, 100 + i);
                (0..rows * k)
                    .map(|p| scale[p % k] * (r[p] + 0.8 * r[p - p % k + (p + 1) % k]))
                    .collect()
            })
            .collect();
        let samples = SampleSet {
            input_names: vec!["x".into()],
            samples: xs
                .iter()
                .map(|x| Sample {
                    origin: "generated".into(),
                    inputs: vec![pare_ir::Tensor::from_vec(
                        vec![rows, k],
                        x.iter().map(|&v| v as f32).collect(),
                    )],
                })
                .collect(),
        };
        let w0 = g
            .constant(g.find_value("w").expect("w"))
            .expect("const")
            .to_f64_vec()
            .expect("f64");
        let mut errs = Vec::new();
        for method in [Method::Magnitude, Method::Wanda, Method::Sparsegpt] {
            let mut p = g.clone();
            let mut cx = PassContext::new().with_samples(samples.clone());
            let report = PruneUnstructured::new(UnstructuredOptions {
                method,
                min_elements: 0,
                ..Default::default()
            })
            .expect("options")
            .run(&mut p, &mut cx)
            .expect("runs");
            assert_eq!(report.stats.get("weights-total"), Some(&(240u64)));
            assert_eq!(report.stats.get("weights-zeroed"), Some(&(120u64)));
            let w1 = p
                .constant(p.find_value("w").expect("w"))
                .expect("const")
                .to_f64_vec()
                .expect("f64");
            // ‖X·(W − Ŵ)‖ / ‖X·W‖ over the samples, in f64.
            let (mut num, mut den) = (0.0, 0.0);
            for x in &xs {
                for r in 0..rows {
                    for c in 0..n {
                        let (mut y, mut d) = (0.0, 0.0);
                        for i in 0..k {
                            let xv = x[r * k + i] as f32 as f64;
                            y += xv * w0[i * n + c];
                            d += xv * (w0[i * n + c] - w1[i * n + c]);
                        }
                        num += d * d;
                        den += y * y;
                    }
                }
            }
            let err = (num / den).sqrt();
            let note = report
                .notes
                .iter()
                .find(|l| l.contains("(MatMul)"))
                .expect("a note on the MatMul");
            let said: f64 = note
                .rsplit("output error ")
                .next()
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .expect("the note gives the error");
            assert!(note.contains("f32[24,8]: 50.0% zeros"), "{note}");
            assert!((said - err).abs() < 1e-3, "{method:?}: {note} vs {err}");
            errs.push(err);
        }
        assert!(
            errs[2] < errs[1] && errs[1] < errs[0],
            "sparsegpt {}, wanda {}, magnitude {}",
            errs[2],
            errs[1],
            errs[0]
        );
    }

    #[test]
    fn options_are_checked() {
        let bad = |o: UnstructuredOptions| PruneUnstructured::new(o).unwrap_err().to_string();
        let d = UnstructuredOptions::default();
        assert!(bad(UnstructuredOptions {
            sparsity: 1.0,
            ..d.clone()
        })
        .contains("sparsity must be in [0, 1)"));
        assert!(bad(UnstructuredOptions {
            sparsity: f64::NAN,
            ..d.clone()
        })
        .contains("sparsity"));
        for (p, want) in [
            ("4:2", "at most M"),
            ("0:4", "at least 1"),
            ("2-4", "N:M"),
            ("a:4", "N:M"),
        ] {
            let e = bad(UnstructuredOptions {
                pattern: p.into(),
                ..d.clone()
            });
            assert!(e.contains(want), "{p}: {e}");
        }
        assert_eq!(Pattern::parse("2:4", 0.5), Ok(Pattern::NOfM { n: 2, m: 4 }));
        assert_eq!(Pattern::parse("none", 0.3), Ok(Pattern::Fraction(0.3)));
    }
}
