//! Low-rank factorization of linear layers (`lowrank`).
//!
//! **What it does.** Every MatMul whose right operand is a constant f32 `K×N` weight `W`,
//! every Gemm with `transA = 0` and a constant 2-D `B` (either `transB`), and every
//! single-group 1-D/2-D Conv with a constant weight (seen as `K×N`, `K = C·kh·kw` in im2col
//! order) is replaced by two thinner products: `X·W ≈ (X·A)·B` with `A` `K×r` and `B` `r×N`.
//! A new MatMul (for Conv: a Conv with `r` filters over the same window, strides, pads and
//! dilations) computes `X·A`; the original node keeps its name, attributes and bias and reads
//! `X·A` and `B` (for Gemm with `transB = 1`, `Bᵀ` is stored; a Conv becomes a 1×1 Conv). The rank `r` comes from `rank=`, else from
//! `energy=` (the smallest rank holding that fraction of the squared singular values), else
//! from `ratio=`, the fraction of the layer's parameters to keep:
//! `r = ⌊ratio · K·N / (K + N)⌋`. A layer is factored only when `r·(K + N) < K·N`, i.e. when
//! it really saves parameters and FLOPs, and when it has at least `min-params` parameters.
//!
//! Two methods:
//! - `svd`: truncated SVD, `A = U_r Σ_r^½`, `B = Σ_r^½ V_rᵀ`; optimal in `‖W − A·B‖_F`
//!   (Eckart–Young).
//! - `asvd`: activation-aware, whitened SVD (SVD-LLM, Wang et al. 2024; ASVD, Yuan et al.
//!   2023): with the layer's input second moment `H = XᵀX = L Lᵀ` from calibration, the
//!   truncated SVD of `LᵀW` gives `A = L⁻ᵀ U_r Σ_r^½`, `B = Σ_r^½ V_rᵀ`, which minimizes the
//!   output error `‖X(W − A·B)‖_F` over all rank-`r` factorizations (the discarded squared
//!   singular values of `LᵀW` are exactly that error on the calibration data). `damp` adds
//!   `damp · mean(diag H)` to the diagonal (raised until the Cholesky factorization succeeds).
//!
//! **Needs.** `asvd` needs calibration samples (`--calib`): it reads `XᵀX` from the
//! [`CalibStats`] analysis; layers without one (K above the analysis limit) are skipped with
//! a note. Types are re-inferred before and after. Follow with `dce` to drop the dense
//! weights (the `canonicalize` pipeline does).
//!
//! **Guarantees.** Lossy by design. At full rank the factors reproduce `W` to f64 rounding
//! (then f32 storage). The report gives, per layer, the rank, the parameters before and
//! after, the relative weight error `‖ΔW‖_F / ‖W‖_F` and, when `XᵀX` is known, the relative
//! output error `√(tr(ΔWᵀHΔW) / tr(WᵀHW))` on the calibration data. Grouped and depthwise
//! convolutions, Gemm with `transA = 1`, non-f32 weights and subgraphs are left alone.
//!
//! The crate also holds `eora` ([`Eora`]): a low-rank correction of the error a compression
//! pass left in a layer, fitted by the same whitened SVD (see [`eora_pass`]).
//!
//! **Rank search** (`search=evo`, needs `--calib`): the rank rule (`ratio`, `energy` or `rank`)
//! fixes the total parameters kept; an EvoPress-style evolutionary search
//! ([`pare_pass::search`], shared with `prune-channels`) then moves rank between layers —
//! each layer factored once at the largest rank that still saves parameters and truncated
//! per candidate — keeping at most that total, and keeps the candidate with the smallest
//! end-to-end relative output error on `search-samples` calibration samples. Layers the rule
//! would not factor stay dense. With `budget=latency` (through `pare opt`) the total held is
//! the compiled latency the rule's ranks save, each layer priced per rank by timing its
//! cut-out kernels ([`pare_pass::search::latency_per_unit`]).

pub mod eora_pass;
mod factor;

pub use eora_pass::{Eora, EoraOptions};
pub use factor::{asvd, eora, product, svd, weighted_sq, FactorError, Factors, RankRule};

use pare_analysis::CalibStats;
use pare_ir::op::{ConvAttrs, GemmAttrs};
use pare_ir::{DType, Graph, NodeId, Op, Tensor};
use pare_pass::{Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use serde::Deserialize;

const NAME: &str = "lowrank";

/// Factorization method.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Truncated SVD of the weight.
    #[default]
    Svd,
    /// SVD of the weight whitened by the calibration `XᵀX`.
    Asvd,
}

/// Options of `lowrank`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LowRankOptions {
    /// Fraction of each layer's parameters to keep (used when `rank` and `energy` are 0).
    pub ratio: f64,
    /// Fixed rank for every layer (0: not used).
    pub rank: usize,
    /// Keep this fraction of the squared singular values (0: not used).
    pub energy: f64,
    /// `svd` or `asvd`.
    pub method: Method,
    /// `asvd` damping, relative to the mean diagonal of `XᵀX`.
    pub damp: f64,
    /// Layers with fewer parameters are left alone.
    pub min_params: usize,
    /// Per-layer ranks: as the rule gives them, or searched.
    pub search: Search,
    /// `search=evo`: generations.
    pub generations: usize,
    /// `search=evo`: candidates per generation.
    pub offspring: usize,
    /// `search=evo`: calibration samples that score a candidate (0: all).
    pub search_samples: usize,
    /// `search=evo`: what the search holds fixed.
    pub budget: Budget,
}

/// What the rank search holds fixed.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// The parameters the rank rule keeps.
    #[default]
    Params,
    /// The compiled latency the rank rule saves, measured: each layer's price per rank is
    /// the time its two kernels save between its largest saving rank and the rule's rank,
    /// timed on kernels cut out of the model (needs a compiler in the context: `pare opt`
    /// provides one).
    Latency,
}

/// How the per-layer ranks are chosen.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// Every layer by the rank rule (`rank`, `energy` or `ratio`).
    #[default]
    None,
    /// Keep the parameters the rule's ranks keep, and spread them over the layers by an
    /// evolutionary search scored end to end on the calibration samples.
    Evo,
}

impl Default for LowRankOptions {
    fn default() -> Self {
        LowRankOptions {
            ratio: 0.5,
            rank: 0,
            energy: 0.0,
            method: Method::Svd,
            damp: 1e-4,
            min_params: 4096,
            search: Search::None,
            generations: 20,
            offspring: 4,
            search_samples: 8,
            budget: Budget::Params,
        }
    }
}

impl LowRankOptions {
    fn check(&self) -> Result<(), PassError> {
        let bad = |m: &str| Err(PassError::failed(NAME, m.to_string()));
        if self.rank == 0 && self.energy == 0.0 && !(self.ratio > 0.0 && self.ratio < 1.0) {
            return bad("ratio must be in (0, 1) (or give rank= or energy=)");
        }
        if !(0.0..=1.0).contains(&self.energy) {
            return bad("energy must be in (0, 1]");
        }
        if !(self.damp >= 0.0 && self.damp.is_finite()) {
            return bad("damp must be a finite number >= 0");
        }
        Ok(())
    }
}

/// The `lowrank` pass (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct LowRank {
    opts: LowRankOptions,
}

impl LowRank {
    /// A pass with these options.
    pub fn new(opts: LowRankOptions) -> LowRank {
        LowRank { opts }
    }
}

/// Registers `lowrank` and `eora`.
pub fn register(reg: &mut Registry) {
    eora_pass::register(reg);
    let d = LowRankOptions::default();
    reg.register(
        PassInfo::new(
            NAME,
            "replace MatMul/Gemm/Conv by two thinner products: truncated SVD or activation-aware \
             (whitened) SVD of the weight (lossy)",
        )
        .option(
            "ratio",
            "float",
            &d.ratio.to_string(),
            "fraction of each layer's parameters to keep",
        )
        .option(
            "rank",
            "int",
            "0",
            "fixed rank for every layer (0: use energy or ratio)",
        )
        .option(
            "energy",
            "float",
            "0",
            "keep this fraction of the squared singular values (0: use ratio)",
        )
        .option(
            "method",
            "svd|asvd",
            "svd",
            "svd: weight SVD; asvd: whitened by the calibration XᵀX (needs --calib)",
        )
        .option(
            "damp",
            "float",
            &d.damp.to_string(),
            "asvd: damping of XᵀX relative to its mean diagonal",
        )
        .option(
            "min-params",
            "int",
            &d.min_params.to_string(),
            "leave layers with fewer parameters alone",
        )
        .option(
            "search",
            "none|evo",
            "none",
            "evo: keep the parameters the rank rule keeps, and search how to spread them over \
             the layers (EvoPress-style, scored end to end on --calib samples)",
        )
        .option(
            "budget",
            "params|latency",
            "params",
            "search=evo: hold the parameters the rank rule keeps, or the compiled latency it \
             saves (measured per layer on its cut-out kernels; needs `pare opt`)",
        )
        .evo_search_options(d.generations, d.offspring, d.search_samples),
        |o| {
            let opts = o.parse::<LowRankOptions>()?;
            opts.check()?;
            Ok(Box::new(LowRank::new(opts)))
        },
    );
}

/// What kind of layer a target is.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// MatMul, or Gemm (`trans_b`: store the second factor transposed).
    Linear { trans_b: bool },
    /// Conv with one group; the weight's spatial extents (1 or 2 of them).
    Conv { spatial: Vec<usize> },
}

/// One layer to factor.
struct Target {
    node: NodeId,
    /// The weight as `K×N` row-major f64 (`op(B)` for Gemm; `Wᵀ` of the `[N, K]`-flattened
    /// convolution weight, `K = C·kh·kw` in im2col order).
    w: Vec<f64>,
    k: usize,
    n: usize,
    kind: Kind,
}

fn conv_target(g: &Graph, n: NodeId, group: i64) -> Result<Option<Target>, String> {
    let node = g.node(n);
    let (Some(x), Some(wv)) = (node.input(0), node.input(1)) else {
        return Ok(None);
    };
    if g.constant(x).is_some() {
        return Ok(None);
    }
    let Some(t) = g.constant(wv) else {
        return Err("the weight is not a constant".into());
    };
    if group != 1 {
        return Err(format!("grouped convolution (group {group})"));
    }
    let shape = t.shape().to_vec();
    if !(3..=4).contains(&shape.len()) {
        return Err(format!(
            "the weight has shape {shape:?}, not a 1-D or 2-D convolution"
        ));
    }
    if t.dtype() != DType::F32 {
        return Err(format!("the weight is {}, not f32", t.dtype().name()));
    }
    let v = t.to_vec::<f32>().map_err(|e| e.to_string())?;
    let nn = shape[0];
    let k: usize = shape[1..].iter().product();
    let w = (0..k * nn)
        .map(|i| v[(i % nn) * k + i / nn] as f64)
        .collect();
    Ok(Some(Target {
        node: n,
        w,
        k,
        n: nn,
        kind: Kind::Conv {
            spatial: shape[2..].to_vec(),
        },
    }))
}

fn target(g: &Graph, n: NodeId) -> Result<Option<Target>, String> {
    let node = g.node(n);
    if let Op::Conv(a) = &node.op {
        return conv_target(g, n, a.group);
    }
    let trans_b = match &node.op {
        Op::MatMul => false,
        Op::Gemm(GemmAttrs {
            trans_a, trans_b, ..
        }) => {
            if *trans_a {
                return Err("Gemm with transA = 1".into());
            }
            *trans_b
        }
        _ => return Ok(None),
    };
    let (Some(x), Some(b)) = (node.input(0), node.input(1)) else {
        return Ok(None);
    };
    if g.constant(x).is_some() {
        return Ok(None);
    }
    let Some(t) = g.constant(b) else {
        return Err("the weight is not a constant".into());
    };
    let &[r, c] = t.shape() else {
        return Err(format!("the weight has shape {:?}, not 2-D", t.shape()));
    };
    if t.dtype() != DType::F32 {
        return Err(format!("the weight is {}, not f32", t.dtype().name()));
    }
    let v = t.to_vec::<f32>().map_err(|e| e.to_string())?;
    let (k, nn) = if trans_b { (c, r) } else { (r, c) };
    let w: Vec<f64> = if trans_b {
        (0..k * nn)
            .map(|i| v[(i % nn) * c + i / nn] as f64)
            .collect()
    } else {
        v.iter().map(|&x| x as f64).collect()
    };
    Ok(Some(Target {
        node: n,
        w,
        k,
        n: nn,
        kind: Kind::Linear { trans_b },
    }))
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

fn rel(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        0.0
    }
}

/// One layer to factor, with its factors at the largest rank it may get.
struct Layer {
    t: Target,
    name: String,
    /// `XᵀX` (`asvd`).
    h: Option<Vec<f64>>,
    /// Factors at the rule's rank (search=none) or at the largest saving rank (search=evo),
    /// columns of `a` / rows of `b` in nonincreasing singular-value order.
    f: Factors,
    /// The rank the rule gives.
    r: usize,
}

/// The first `r` components of `f` (`a` is `K×f.r`, `b` is `f.r×N`): the rank-`r` truncation,
/// since the components are in singular-value order (for `asvd` too: un-whitening acts on
/// each column of `a` alone).
pub(crate) fn truncate(f: &Factors, r: usize, k: usize, n: usize) -> Factors {
    let r = r.min(f.r);
    if r == f.r {
        return f.clone();
    }
    let a = (0..k)
        .flat_map(|i| f.a[i * f.r..i * f.r + r].iter().copied())
        .collect();
    Factors {
        a,
        b: f.b[..r * n].to_vec(),
        r,
        spectrum: f.spectrum.clone(),
    }
}

/// `search=evo`: per-layer ranks keeping the total parameters of the rule's ranks, by
/// [`pare_pass::search::evolve`] over "rank removed from the largest saving rank" per layer
/// (a unit costs `K + N` parameters), scored by the end-to-end output error on the
/// calibration samples.
fn search_ranks(
    g: &Graph,
    layers: &[Layer],
    o: &LowRankOptions,
    cx: &mut PassContext,
    report: &mut PassReport,
) -> Result<Vec<usize>, PassError> {
    use pare_pass::search;
    let samples = cx.require_samples(NAME)?;
    let fail = |e: String| PassError::failed(NAME, format!("rank search: {e}"));
    let scorer = search::Scorer::new(g, &samples, o.search_samples).map_err(fail)?;
    let units: Vec<usize> = layers.iter().map(|l| l.f.r).collect();
    // Every layer keeps at least rank 1.
    let caps: Vec<usize> = units.iter().map(|&u| u.saturating_sub(1)).collect();
    let start: Vec<usize> = layers.iter().map(|l| l.f.r - l.r.min(l.f.r)).collect();
    let build = |removed: &[usize]| -> Graph {
        let mut cand = g.clone();
        for (l, &k) in layers.iter().zip(removed) {
            let f = truncate(&l.f, l.f.r - k, l.t.k, l.t.n);
            rewrite(&mut cand, &l.t, &f);
        }
        cand
    };
    let probe = cx.latency_probe().cloned();
    let per_unit: Vec<f64> = match o.budget {
        Budget::Params => layers.iter().map(|l| (l.t.k + l.t.n) as f64).collect(),
        Budget::Latency => {
            let probe = probe.as_deref().ok_or_else(|| {
                fail(
                    "budget=latency measures compiled latency, and nothing here can compile: \
                     run the pipeline through `pare opt`"
                        .into(),
                )
            })?;
            // Kernels are compared against every layer at its largest saving rank (what
            // `removed = 0` means here), not against the dense model.
            let reference = build(&vec![0; layers.len()]);
            let (per_unit, note) = search::latency_per_unit(
                &reference,
                &samples,
                &start,
                &caps,
                probe,
                &mut |r: &[usize]| Ok(build(r)),
            )
            .map_err(fail)?;
            report.note(note);
            per_unit
        }
    };
    let budget: f64 = start
        .iter()
        .zip(&per_unit)
        .map(|(&k, &p)| k as f64 * p)
        .sum();
    let mut fitness = |removed: &[usize]| -> Result<f64, PassError> {
        scorer.error(&build(removed)).map_err(fail)
    };
    let space = search::Space {
        units,
        caps,
        per_unit,
        budget,
    };
    let found = search::evolve_in(
        cx,
        "rank search",
        start.clone(),
        &space,
        o.generations,
        o.offspring,
        &mut fitness,
    )?;
    found.report(
        report,
        "rank search",
        o.generations,
        scorer.samples(),
        "the rule's ranks",
    );
    if let (Budget::Latency, Some(probe)) = (o.budget, probe.as_deref()) {
        let (uniform, searched) = (build(&start), build(&found.removed));
        let note = search::latency_note(probe, g, &uniform, &searched, "the rule's ranks")
            .map_err(|e| fail(format!("timing the result: {e}")))?;
        report.note(note);
    }
    Ok(layers
        .iter()
        .zip(&found.removed)
        .map(|(l, &k)| l.f.r - k)
        .collect())
}

/// Replaces the layer `t` of `g` by `X·A` then `·B` (see the crate docs); false when the
/// node no longer has the expected operands.
fn rewrite(g: &mut Graph, t: &Target, f: &Factors) -> bool {
    let (k, n) = (t.k, t.n);
    let name = g.node(t.node).name.clone();
    // Rewire: X·A in a new MatMul, the original node reads it and B.
    let node = g.node(t.node);
    let (Some(x), Some(wv)) = (node.input(0), node.input(1)) else {
        return false;
    };
    let wname = g.value(wv).name.clone();
    let r = f.r;
    // Transposed copies: `Aᵀ` (`r×K`) and `Bᵀ` (`N×r`).
    let a_t: Vec<f64> = (0..r * k).map(|i| f.a[(i % k) * r + i / k]).collect();
    let b_t: Vec<f64> = (0..n * r).map(|i| f.b[(i % r) * n + i / r]).collect();
    let (first_op, a_tensor, b_tensor, second_op) = match &t.kind {
        Kind::Linear { trans_b } => (
            Op::MatMul,
            f32_tensor(vec![k, r], &f.a),
            if *trans_b {
                f32_tensor(vec![n, r], &b_t)
            } else {
                f32_tensor(vec![r, n], &f.b)
            },
            None,
        ),
        Kind::Conv { spatial } => {
            // First conv: r filters over the original window (same strides, pads,
            // dilations); second: a 1x1 conv mixing the r channels, with the bias.
            let Op::Conv(attrs) = &g.node(t.node).op else {
                return false;
            };
            let mut a_shape = vec![r, k / spatial.iter().product::<usize>()];
            a_shape.extend(spatial);
            let mut b_shape = vec![n, r];
            b_shape.extend(spatial.iter().map(|_| 1));
            let pointwise = ConvAttrs {
                kernel_shape: Some(vec![1; spatial.len()]),
                ..ConvAttrs::default()
            };
            (
                Op::Conv(attrs.clone()),
                f32_tensor(a_shape, &a_t),
                f32_tensor(b_shape, &b_t),
                Some(Op::Conv(pointwise)),
            )
        }
    };
    let a_val = g.add_const(unique(g, &format!("{wname}.lowrank_a")), a_tensor);
    let b_val = g.add_const(unique(g, &format!("{wname}.lowrank_b")), b_tensor);
    let out = unique(g, &format!("{name}/lowrank_out"));
    let first = g.add_node(
        format!("{name}/lowrank"),
        first_op,
        vec![Some(x), Some(a_val)],
        vec![out],
    );
    let xa = g.node(first).outputs()[0];
    if let Some(op) = second_op {
        *g.op_mut(t.node) = op;
    }
    g.set_operand(t.node, 0, Some(xa));
    g.set_operand(t.node, 1, Some(b_val));
    true
}

impl Pass for LowRank {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let o = &self.opts;
        let _ = pare_ir::infer::infer_types(g);
        let stats = match o.method {
            Method::Asvd => Some(cx.analysis::<CalibStats>(g)?),
            Method::Svd => None,
        };
        let mut report = PassReport::unchanged();
        let mut targets = Vec::new();
        for n in g.node_ids().collect::<Vec<_>>() {
            match target(g, n) {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(why) => report.note(format!("skipped '{}': {why}", g.node(n).name)),
            }
        }
        // Factor every layer: at the rule's rank, or (search=evo) at the largest rank that
        // still saves parameters, truncated per candidate.
        let mut layers: Vec<Layer> = Vec::new();
        for t in targets {
            let name = g.node(t.node).name.clone();
            let (k, n) = (t.k, t.n);
            if (k * n) < o.min_params {
                continue;
            }
            let rule = if o.rank > 0 {
                RankRule::Fixed(o.rank)
            } else if o.energy > 0.0 {
                RankRule::Energy(o.energy)
            } else {
                RankRule::Fixed(
                    ((o.ratio * (k * n) as f64 / (k + n) as f64).floor() as usize).max(1),
                )
            };
            let h = match &stats {
                Some(s) => match s.hessian_arc(t.node) {
                    Some(h) if h.groups == 1 && h.k == k => Some(h),
                    _ => {
                        report.note(format!("skipped '{name}': no XᵀX from calibration"));
                        continue;
                    }
                },
                None => None,
            };
            // The largest rank with r·(K + N) < K·N.
            let r_max = (k * n - 1) / (k + n);
            let fac_rule = match o.search {
                Search::None => rule,
                Search::Evo => RankRule::Fixed(r_max.max(1)),
            };
            let f = match &h {
                Some(h) => asvd(&t.w, &h.data, k, n, o.damp, fac_rule),
                None => svd(&t.w, k, n, fac_rule),
            }
            .map_err(|e| PassError::failed(NAME, format!("node '{name}': {e}")))?;
            let r = rule.pick(&f.spectrum);
            if r * (k + n) >= k * n {
                report.note(format!(
                    "kept '{name}' ({k}x{n}): rank {r} would not save parameters"
                ));
                continue;
            }
            layers.push(Layer {
                t,
                name,
                h: h.map(|h| h.data.clone()),
                f,
                r,
            });
        }
        let mut ranks: Vec<usize> = layers.iter().map(|l| l.r).collect();
        if o.search == Search::Evo && layers.len() > 1 {
            ranks = search_ranks(g, &layers, o, cx, &mut report)?;
        }
        let (mut done, mut before, mut after) = (0u64, 0u64, 0u64);
        for (l, &r) in layers.iter().zip(&ranks) {
            let (k, n) = (l.t.k, l.t.n);
            let f = truncate(&l.f, r, k, n);
            let approx = product(&f, k, n);
            let dw: Vec<f64> = approx.iter().zip(&l.t.w).map(|(a, b)| a - b).collect();
            let werr = rel(
                dw.iter().map(|x| x * x).sum(),
                l.t.w.iter().map(|x| x * x).sum(),
            );
            let oerr =
                l.h.as_ref()
                    .map(|h| rel(weighted_sq(&dw, h, k, n), weighted_sq(&l.t.w, h, k, n)));
            if !rewrite(g, &l.t, &f) {
                continue;
            }
            let params = (k * n) as u64;
            let new = (r * (k + n)) as u64;
            done += 1;
            before += params;
            after += new;
            report.note(format!(
                "'{}' {k}x{n} -> rank {r} ({params} -> {new} params, {:.1}%): weight error {:.4}{}",
                l.name,
                100.0 * new as f64 / params as f64,
                werr,
                oerr.map_or(String::new(), |e| format!(
                    ", output error {e:.4} on the calibration data"
                ))
            ));
        }
        let _ = pare_ir::infer::infer_types(g);
        if done > 0 {
            report.changed = true;
            report.preserved = pare_pass::Preserved::none();
            report.add_stat("layers", done);
            report.add_stat("params-before", before);
            report.add_stat("params-after", after);
        }
        Ok(report)
    }
}
