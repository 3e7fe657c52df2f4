//! EoRA: a low-rank correction of a compressed linear layer's error (`eora`).
//!
//! **What it does.** After a lossy pass replaced a layer's dense weight `W` (`K×N`) by `Ŵ`
//! (weight-only `quantize`, `prune-unstructured`, `lowrank`, ...), `eora(rank=r)` adds a
//! rank-`r` correction so that `X·Ŵ + (X·L)·R ≈ X·W`:
//!
//! ```text
//! %y = MatMul(%x, %w_dequantized) loc("mm")
//! ==>
//! %mm.eora_l = const f32[K,r]
//! %mm.eora_r = const f32[r,N]
//! %"y/eora_base" = MatMul(%x, %w_dequantized) loc("mm")
//! %"y/eora_xl" = MatMul(%x, %mm.eora_l)
//! %"y/eora_correction" = MatMul(%"y/eora_xl", %mm.eora_r)
//! %y = Add(%"y/eora_base", %"y/eora_correction")
//! ```
//!
//! The compressed layer is left exactly as it was (a Gemm keeps its bias, a MatMulNBits its
//! packing); its output is renamed `<y>/eora_base` and the Add takes over the name `y`, so
//! graph outputs keep their names. `L`, `R` minimize the layer's output error on the
//! calibration data, `‖X(ΔW − L·R)‖_F` with `ΔW = W − Ŵ`, through [`crate::eora()`]: with
//! `H = XᵀX = QΛQᵀ`, the truncated SVD `U_r Σ_r V_rᵀ` of `Λ^½QᵀΔW` gives
//! `L = QΛ^(-½)U_rΣ_r^½`, `R = Σ_r^½V_rᵀ`. Damping (`damp`, default 0.01): eigenvalues are
//! clamped at 0 and `damp · mean(diag H)` is added to each (a ridge, so directions the
//! calibration data never excites do not get unbounded weight `Λ^(-½)`); see [`crate::eora()`].
//!
//! Options: `rank=` (required, or `rank-ratio=`: `r = ⌊ratio · K·N/(K+N)⌋`, i.e. that
//! fraction of the dense layer's parameters), `damp=0.01`, `min-elements=1024` (smaller
//! layers are left alone), `max-overhead=0.25`: a layer is corrected only when the correction's
//! `r·(K+N)` parameters are at most that fraction of the dense layer's `K·N` (for scale: int4
//! codes are 1/8 of the dense f32 bytes, so at the default an f32 correction may cost up to
//! twice the int4 weight); larger ones are skipped with a note. A correction that would not
//! lower the output error on the calibration data is not added (with a note).
//! `allocate=evo` (with `generations`, `offspring`, `search-samples`): instead of one rank
//! for every layer, the parameters the uniform ranks add are spread over the layers by the
//! evolutionary search of [`pare_pass::search`], every layer factored once at the largest
//! rank `max-overhead` allows and truncated per candidate, each candidate scored by the
//! end-to-end output error on the calibration samples (MiniLM int4 at rank 16: held-out
//! error 0.143 → 0.138).
//!
//! **Where `W`, `Ŵ` and `X` come from.** When `eora` runs, the graph holds only `Ŵ`. The dense
//! weights come from [`PassContext::input_graph`], the graph as it entered the pipeline (the
//! pass manager records it; callers running passes by hand set it with
//! `PassContext::with_input_graph`). Layers are matched by *value names*, which every
//! compression pass keeps: in the input graph, each MatMul/Gemm (`transA = 0`) with a
//! constant 2-D f32 `B` and a non-constant `A` names its input `x` and output `y`; in the
//! current graph the values with those names must still exist. When `y` is gone, the names of
//! the values an affine single-reader chain computes from it (its bias Add, up to 4 Add/Sub/Mul
//! by constants) are tried in order: `fuse-gemm` names its Gemm after the bias Add, so
//! `canonicalize,quantize,eora` still matches. `Ŵ` is then read by running
//! the current graph's computation of `y` from `x` with pare's interpreter on the probe
//! `x = [I_K; 0]` (`K+1` rows): rows `0..K` minus row `K` are exactly the effective weight
//! the interpreter applies, whatever the form — DequantizeLinear (per channel or blocked, with
//! zero points), the AWQ `1/s` Mul on the weight or on the activation, MatMulNBits, pruned
//! constants, a factored `lowrank` pair, an earlier EoRA correction. The probed subgraph must
//! be affine in `x` (only MatMul/Gemm/MatMulNBits reading it as `A`, Mul by an
//! `x`-independent operand, Add/Sub; anything `x`-independent is evaluated as it is), have
//! at most 64 nodes and depend on no other activation; the dense `W` is probed the same way
//! on the input graph (so Gemm's `alpha`/`transB` need no special case). Layers that do not
//! match, are not affine, or are unchanged since the pipeline's input (`ΔW = 0`, e.g. below
//! quantize's `min-elements`) are left alone, the first two with a note. `X` is the layer
//! input of the *dense* model: `XᵀX` comes from the [`CalibStats`] analysis run on the input
//! graph (the compressed graph has no constant weights to plan it on). The correction reads
//! the same `x` the probe started from, i.e. the original activation, in front of any AWQ
//! scaling.
//!
//! **Needs.** Calibration samples (`--calib`; the pass fails without them, like
//! `lowrank(method=asvd)`) and the input graph (always there under the pass manager). Layers
//! whose `K` is above the calibration analysis' `XᵀX` limit are skipped with a note. Follow
//! with `dce` only to drop what earlier passes left; `eora` removes nothing.
//!
//! **Guarantees.** Lossy as the compression it corrects, never worse on the calibration data:
//! per layer the report gives the rank, the added parameters and the relative output error
//! `√(tr(ΔWᵀHΔW) / tr(WᵀHW))` before and after the correction (unchanged layers are counted,
//! not listed). With `ΔW = 0` nothing is added. The compressed layer's own nodes and
//! constants are untouched. Conv, Gemm with `transA = 1`, non-f32 weights and subgraphs are
//! left alone.
//!
//! **Paper.** Liu et al. 2024, "EoRA: Training-free Compensation for Compressed LLM with
//! Eigenspace Low-Rank Approximation".

use crate::factor::{eora, product, weighted_sq, RankRule};
use pare_analysis::CalibStats;
use pare_interp::Interpreter;
use pare_ir::op::GemmAttrs;
use pare_ir::{DType, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueDef, ValueId};
use pare_pass::{search, Analysis, Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

const NAME: &str = "eora";

/// The most nodes the probed computation of a layer may have.
const MAX_CONE: usize = 64;

/// Options of `eora`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct EoraOptions {
    /// Rank of every correction (0: use `rank-ratio`).
    pub rank: usize,
    /// The correction's parameters as a fraction of the dense layer's (0: use `rank`).
    pub rank_ratio: f64,
    /// Ridge added to the eigenvalues of `XᵀX`, relative to its mean diagonal.
    pub damp: f64,
    /// Layers with fewer weight elements are left alone.
    pub min_elements: usize,
    /// Largest allowed `r·(K+N) / (K·N)`; larger corrections are skipped with a note.
    pub max_overhead: f64,
    /// How ranks are given to layers: `rank` / `rank-ratio` for each, or that total searched.
    pub allocate: Allocate,
    /// `allocate=evo`: generations.
    pub generations: usize,
    /// `allocate=evo`: candidates per generation.
    pub offspring: usize,
    /// `allocate=evo`: calibration samples that score a candidate (0: all).
    pub search_samples: usize,
}

/// How `eora` gives ranks to layers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Allocate {
    /// Every layer gets the rank `rank` / `rank-ratio` gives it.
    #[default]
    Uniform,
    /// The parameters of those ranks, spread over the layers by an evolutionary search
    /// ([`pare_pass::search`]) scored by the end-to-end output error on calibration samples
    /// (each layer still within `max-overhead`).
    Evo,
}

impl Default for EoraOptions {
    fn default() -> Self {
        EoraOptions {
            rank: 0,
            rank_ratio: 0.0,
            damp: 0.01,
            min_elements: 1024,
            max_overhead: 0.25,
            allocate: Allocate::Uniform,
            generations: 20,
            offspring: 4,
            search_samples: 8,
        }
    }
}

impl EoraOptions {
    fn check(&self) -> Result<(), PassError> {
        let bad = |m: &str| Err(PassError::failed(NAME, m.to_string()));
        if self.rank == 0 && self.rank_ratio == 0.0 {
            return bad("give the correction's rank (e.g. eora(rank=16)) or rank-ratio=");
        }
        if self.rank > 0 && self.rank_ratio != 0.0 {
            return bad("give rank= or rank-ratio=, not both");
        }
        if self.rank == 0 && !(self.rank_ratio > 0.0 && self.rank_ratio < 1.0) {
            return bad("rank-ratio must be in (0, 1)");
        }
        if !(self.damp >= 0.0 && self.damp.is_finite()) {
            return bad("damp must be a finite number >= 0");
        }
        if !(self.max_overhead > 0.0 && self.max_overhead.is_finite()) {
            return bad("max-overhead must be a finite number > 0");
        }
        Ok(())
    }

    fn rank_for(&self, k: usize, n: usize) -> usize {
        let r = if self.rank > 0 {
            self.rank
        } else {
            (self.rank_ratio * (k * n) as f64 / (k + n) as f64).floor() as usize
        };
        r.clamp(1, k.min(n).max(1))
    }

    /// The largest rank `max-overhead` allows for a `k x n` layer.
    fn rank_cap(&self, k: usize, n: usize) -> usize {
        let cap = (self.max_overhead * (k * n) as f64 / (k + n) as f64).floor() as usize;
        cap.min(k.min(n))
    }
}

/// The `eora` pass (see the module docs).
#[derive(Clone, Debug)]
pub struct Eora {
    opts: EoraOptions,
}

impl Eora {
    /// A pass with these options, checked.
    pub fn new(opts: EoraOptions) -> Result<Eora, PassError> {
        opts.check()?;
        Ok(Eora { opts })
    }
}

/// Registers `eora`.
pub fn register(reg: &mut Registry) {
    let d = EoraOptions::default();
    reg.register(
        PassInfo::new(
            NAME,
            "EoRA: add a rank-r correction X·L·R to compressed MatMul/Gemm layers, fitted to the \
             compression error W − Ŵ in the eigenspace of the calibration XᵀX (needs --calib)",
        )
        .option(
            "rank",
            "int",
            "0",
            "rank of every correction (required unless rank-ratio is given)",
        )
        .option(
            "rank-ratio",
            "float",
            "0",
            "instead of rank: the correction's parameters as a fraction of the dense layer's",
        )
        .option(
            "damp",
            "float",
            &d.damp.to_string(),
            "ridge added to the eigenvalues of XᵀX, relative to its mean diagonal",
        )
        .option(
            "min-elements",
            "int",
            &d.min_elements.to_string(),
            "leave layers with fewer weight elements alone",
        )
        .option(
            "max-overhead",
            "float",
            &d.max_overhead.to_string(),
            "skip (with a note) layers where the correction's r·(K+N) parameters exceed this \
             fraction of the dense K·N",
        )
        .option(
            "allocate",
            "uniform|evo",
            "uniform",
            "uniform: every layer gets the rank rank/rank-ratio gives; evo: the same total \
             parameters, spread over the layers by an evolutionary search scored end to end \
             on the calibration samples",
        )
        .evo_search_options(d.generations, d.offspring, d.search_samples),
        |o| {
            let opts = o.parse::<EoraOptions>()?;
            Ok(Box::new(Eora::new(opts)?))
        },
    );
}

/// A layer of the input graph: its input value name, the names of its output and of the
/// values an affine chain computes from it alone (its bias Add, ...), `K`, and its `XᵀX`.
struct Layer {
    name: String,
    x: String,
    ys: Vec<String>,
    k: usize,
    h: std::sync::Arc<pare_analysis::Hessian>,
}

/// The layers of the dense input graph with an `XᵀX`, and notes on the ones without.
fn dense_layers(g: &Graph, stats: &CalibStats, report: &mut PassReport) -> Vec<Layer> {
    let mut out = Vec::new();
    for n in g.node_ids() {
        let node = g.node(n);
        let label = layer_label(g, n);
        match &node.op {
            Op::MatMul => {}
            Op::Gemm(GemmAttrs { trans_a: false, .. }) => {}
            Op::Gemm(_) => {
                report.note(format!("skipped '{label}': Gemm with transA = 1"));
                continue;
            }
            _ => continue,
        }
        let (Some(x), Some(w), Some(&y)) = (node.input(0), node.input(1), node.outputs().first())
        else {
            continue;
        };
        let Some(t) = g.constant(w) else { continue };
        if g.constant(x).is_some() || t.shape().len() != 2 {
            continue;
        }
        if t.dtype() != DType::F32 {
            report.note(format!(
                "skipped '{label}': the weight is {}, not f32",
                t.dtype().name()
            ));
            continue;
        }
        let k = match &node.op {
            Op::Gemm(a) if a.trans_b => t.shape()[1],
            _ => t.shape()[0],
        };
        let (xname, yname) = (g.value(x).name.clone(), g.value(y).name.clone());
        if xname.is_empty() || yname.is_empty() {
            report.note(format!(
                "skipped '{label}': unnamed input or output (layers are matched by name)"
            ));
            continue;
        }
        let Some(h) = stats.hessian_arc(n).filter(|h| h.groups == 1 && h.k == k) else {
            report.note(format!("skipped '{label}': no XᵀX from calibration"));
            continue;
        };
        let mut ys = vec![yname];
        ys.extend(
            affine_chain(g, y)
                .into_iter()
                .map(|v| g.value(v).name.clone()),
        );
        out.push(Layer {
            name: label,
            x: xname,
            ys,
            k,
            h,
        });
    }
    out
}

/// Adds the corrections of `cands` at `ranks` (0: none) to `g`. `names` maps the value names
/// of `g` and follows the corrected sums as they take over names. With `check`, a correction
/// that would not lower its layer's output error on the calibration data is left out and
/// every layer gets a report note. Returns the layers corrected and the parameters added.
fn apply_corrections(
    g: &mut Graph,
    layers: &[Layer],
    cands: &[Cand],
    ranks: &[usize],
    names: &mut HashMap<String, ValueId>,
    check: bool,
    report: &mut PassReport,
) -> (u64, u64) {
    let mut taken: HashSet<String> = HashSet::new();
    let (mut done, mut added) = (0u64, 0u64);
    for (c, &r) in cands.iter().zip(ranks) {
        let layer = &layers[c.layer];
        let label = &layer.name;
        let (k, n, y) = (c.k, c.n, c.y);
        if r == 0 {
            continue;
        }
        // The layer's input may be an earlier layer's corrected output by now.
        let Some(&x) = names.get(&layer.x) else {
            continue;
        };
        let h = &layer.h.data;
        let f = crate::truncate(&c.f, r, k, n);
        let left: Vec<f64> = if check {
            let lr = product(&f, k, n);
            c.dw.iter().zip(&lr).map(|(a, b)| a - b).collect()
        } else {
            Vec::new()
        };
        let (e0, base, werr) = (c.e0, c.base, c.werr);
        // The check costs a K×K by K×N product per layer: done for the result, not for
        // every candidate of the search.
        let e1 = if check {
            weighted_sq(&left, h, k, n)
        } else {
            0.0
        };
        if check && (e1.is_nan() || e1 >= e0) {
            report.note(format!(
                "kept '{label}' uncorrected: a rank-{} correction would not lower its \
                 output error on the calibration data ({:.4})",
                f.r,
                rel(e0, base)
            ));
            continue;
        }
        // Rewrite: y keeps its name on the sum; the compressed layer's output becomes
        // `<y>/eora_base`.
        let yname = g.value(y).name.clone();
        let r = f.r;
        let l_name = unique(g, &taken, &format!("{label}.eora_l"));
        taken.insert(l_name.clone());
        let r_name = unique(g, &taken, &format!("{label}.eora_r"));
        taken.insert(r_name.clone());
        let l_val = g.add_const(
            l_name,
            Tensor::from_vec(vec![k, r], f.a.iter().map(|&v| v as f32).collect()),
        );
        let r_val = g.add_const(
            r_name,
            Tensor::from_vec(vec![r, n], f.b.iter().map(|&v| v as f32).collect()),
        );
        let base_name = unique(g, &taken, &format!("{yname}/eora_base"));
        g.set_name(y, base_name);
        let xl_name = unique(g, &taken, &format!("{yname}/eora_xl"));
        let xl = g.add_node(
            format!("{label}/eora_l"),
            Op::MatMul,
            vec![Some(x), Some(l_val)],
            vec![xl_name],
        );
        let xl = g.node(xl).outputs()[0];
        let c_name = unique(g, &taken, &format!("{yname}/eora_correction"));
        let c = g.add_node(
            format!("{label}/eora_r"),
            Op::MatMul,
            vec![Some(xl), Some(r_val)],
            vec![c_name],
        );
        let c = g.node(c).outputs()[0];
        let add = g.add_node(
            format!("{label}/eora_add"),
            Op::Add,
            vec![None, Some(c)],
            vec![yname],
        );
        let sum = g.node(add).outputs()[0];
        g.replace_all_uses(y, sum);
        g.set_operand(add, 0, Some(y));
        // Later layers reading `yname` (their x) must see the corrected value.
        names.insert(g.value(y).name.clone(), y);
        names.insert(g.value(sum).name.clone(), sum);
        let ty = g.value(y).ty.clone();
        g.set_type(sum, ty);
        let params = (r * (k + n)) as u64;
        done += 1;
        added += params;
        if !check {
            continue;
        }
        report.note(format!(
            "'{label}' {k}x{n}: rank {r} (+{params} params, {:.1}% of the dense layer), \
             weight error {werr:.4}, output error on the calibration data {:.4} -> {:.4}",
            100.0 * params as f64 / (k * n) as f64,
            rel(e0, base),
            rel(e1, base)
        ));
    }
    (done, added)
}

/// A layer `eora` can correct: its compression error, the factors at the largest rank it may
/// get, its errors on the calibration data and the rank the uniform rule gives it (0 when
/// that rank is above `max-overhead`).
struct Cand {
    layer: usize,
    y: ValueId,
    k: usize,
    n: usize,
    dw: Vec<f64>,
    f: crate::factor::Factors,
    e0: f64,
    base: f64,
    werr: f64,
    uniform: usize,
}

/// The values computed from `y` alone by a chain of at most 4 single-reader Add/Sub/Mul with a
/// constant (a bias Add, a scale): where a later pass fused them into the layer (`fuse-gemm`
/// names the Gemm's output after the Add), one of these names still marks the layer's output.
fn affine_chain(g: &Graph, y: ValueId) -> Vec<ValueId> {
    let mut out = Vec::new();
    let mut v = y;
    for _ in 0..4 {
        let (&[pare_ir::Use::Node { node, operand }], false) =
            (g.uses(v), g.outputs().contains(&v))
        else {
            break;
        };
        let nd = g.node(node);
        let other = nd.input(1 - operand.min(1));
        let affine = matches!(nd.op, Op::Add | Op::Sub | Op::Mul)
            && nd.inputs().len() == 2
            && other.is_some_and(|o| g.constant(o).is_some());
        let Some(&next) = nd.outputs().first().filter(|_| affine) else {
            break;
        };
        out.push(next);
        v = next;
    }
    out
}

/// The node's name, or its first output's when it has none.
fn layer_label(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    if !node.name.is_empty() {
        return node.name.clone();
    }
    node.outputs()
        .first()
        .map(|&y| g.value(y).name.clone())
        .unwrap_or_default()
}

fn is_nbits(op: &Op) -> bool {
    matches!(op, Op::Custom(c) if c.op_type == "MatMulNBits")
}

/// The effective `K×N` weight (row-major f64) of the computation of `y` from `x` in `g`:
/// `f([I_K; 0])` rows `0..K` minus row `K`, evaluated by `interp`. Errors say why the
/// computation is not a probe-able affine function of `x`.
fn probe(
    g: &Graph,
    x: ValueId,
    y: ValueId,
    k: usize,
    interp: &Interpreter,
) -> Result<(Vec<f64>, usize), String> {
    if x == y {
        return Err("the layer's input is its output".into());
    }
    // The nodes computing y, back to x and constants.
    let mut cone: HashSet<NodeId> = HashSet::new();
    let mut stack = vec![y];
    while let Some(v) = stack.pop() {
        if v == x {
            continue;
        }
        match g.value(v).def() {
            ValueDef::Const(_) => {}
            ValueDef::Input(_) => {
                return Err(format!(
                    "it also depends on the graph input '{}'",
                    g.value(v).name
                ))
            }
            ValueDef::Dead => return Err("it reads a removed value".into()),
            ValueDef::Node { node, .. } => {
                if cone.insert(*node) {
                    if cone.len() > MAX_CONE {
                        return Err(format!(
                            "its computation from '{}' has more than {MAX_CONE} nodes",
                            g.value(x).name
                        ));
                    }
                    stack.extend(g.node(*node).inputs().iter().flatten());
                }
            }
        }
    }
    let order: Vec<NodeId> = g
        .topo_order()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|n| cone.contains(n))
        .collect();
    // Which values depend on x, and whether each node is affine in them.
    let mut dep: HashSet<ValueId> = HashSet::from([x]);
    for &n in &order {
        let node = g.node(n);
        let d: Vec<bool> = node
            .inputs()
            .iter()
            .map(|v| v.is_some_and(|v| dep.contains(&v)))
            .collect();
        if !d.contains(&true) {
            continue;
        }
        let only_first = d.iter().skip(1).all(|&b| !b);
        let affine = match &node.op {
            Op::MatMul => only_first,
            Op::Gemm(a) => only_first && !a.trans_a,
            Op::Mul => d.iter().filter(|&&b| b).count() == 1,
            Op::Add | Op::Sub => true,
            op => is_nbits(op) && only_first,
        };
        if !affine {
            return Err(format!(
                "'{}' ({}) on the path from '{}' is not affine in it",
                layer_label(g, n),
                node.op.name(),
                g.value(x).name
            ));
        }
        dep.extend(node.outputs().iter().copied());
    }
    if !dep.contains(&y) {
        return Err(format!("it does not depend on '{}'", g.value(x).name));
    }
    // The probe graph: x as a [K+1, K] input, the cone's nodes and constants copied.
    let mut p = Graph::new("eora-probe");
    let px = p.add_input("x", TensorType::new(DType::F32, Shape::fixed(&[k + 1, k])));
    let mut map: HashMap<ValueId, ValueId> = HashMap::from([(x, px)]);
    for &n in &order {
        let node = g.node(n);
        let mut inputs = Vec::with_capacity(node.inputs().len());
        for v in node.inputs() {
            inputs.push(match v {
                None => None,
                Some(v) => Some(match map.get(v) {
                    Some(&m) => m,
                    None => {
                        let t = g
                            .constant(*v)
                            .ok_or_else(|| format!("'{}' is not computed", g.value(*v).name))?;
                        let m = p.add_const(g.value(*v).name.clone(), t.clone());
                        map.insert(*v, m);
                        m
                    }
                }),
            });
        }
        let outs = node
            .outputs()
            .iter()
            .map(|&o| g.value(o).name.clone())
            .collect();
        let pn = p.add_node(node.name.clone(), node.op.clone(), inputs, outs);
        for (&o, &po) in node.outputs().iter().zip(p.node(pn).outputs()) {
            map.insert(o, po);
        }
    }
    let py = *map.get(&y).ok_or("the output was not copied")?;
    p.add_output(py);
    let _ = pare_ir::infer::infer_types(&mut p);
    let mut eye = vec![0f32; (k + 1) * k];
    for i in 0..k {
        eye[i * k + i] = 1.0;
    }
    let out = interp
        .run(&p, &[Tensor::from_vec(vec![k + 1, k], eye)])
        .map_err(|e| format!("evaluating it: {e}"))?;
    let t = out.first().ok_or("evaluating it gave no output")?;
    let &[rows, n] = t.shape() else {
        return Err(format!("evaluating it gave shape {:?}", t.shape()));
    };
    if rows != k + 1 || t.dtype() != DType::F32 {
        return Err(format!(
            "evaluating it gave {} {:?}, not f32 [{}, N]",
            t.dtype().name(),
            t.shape(),
            k + 1
        ));
    }
    let v = t.to_f64_vec().ok_or("evaluating it gave no f32 data")?;
    let (w, bias) = v.split_at(k * n);
    let w = w
        .chunks_exact(n)
        .flat_map(|row| row.iter().zip(bias).map(|(a, b)| a - b))
        .collect();
    Ok((w, n))
}

fn unique(g: &Graph, taken: &HashSet<String>, base: &str) -> String {
    let free = |s: &str| !taken.contains(s) && g.find_value(s).is_none();
    if free(base) {
        return base.to_string();
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|s| free(s))
        .unwrap_or_else(|| base.to_string())
}

fn rel(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        (num.max(0.0) / den).sqrt()
    } else {
        0.0
    }
}

impl Pass for Eora {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let o = self.opts.clone();
        cx.require_samples(NAME)?;
        let Some(input) = cx.input_graph().cloned() else {
            return Err(PassError::failed(
                NAME,
                "needs the graph as it entered the pipeline for the dense weights (the pass \
                 manager records it; set PassContext::with_input_graph when running the pass \
                 by hand)",
            ));
        };
        let mut dense = (*input).clone();
        let _ = pare_ir::infer::infer_types(&mut dense);
        let _ = pare_ir::infer::infer_types(g);
        // XᵀX of the dense model's layers. Computed directly, not through the analysis
        // cache, which is keyed by type and belongs to the current graph.
        let stats = CalibStats::compute(&dense, cx)?;
        let interp = cx.interpreter();
        let mut report = PassReport::unchanged();
        let layers = dense_layers(&dense, &stats, &mut report);
        let mut names: HashMap<String, ValueId> = g
            .value_ids()
            .map(|v| (g.value(v).name.clone(), v))
            .collect();
        let dense_names: HashMap<&str, ValueId> = dense
            .value_ids()
            .map(|v| (dense.value(v).name.as_str(), v))
            .collect();
        let (mut done, mut added, mut unchanged, mut small) = (0u64, 0u64, 0u64, 0u64);
        // Phase 1: every correctable layer's error and its factors at the largest rank it may
        // get (truncating them is exact: the factors split the singular values evenly).
        let mut cands: Vec<Cand> = Vec::new();
        for (li, layer) in layers.iter().enumerate() {
            let label = &layer.name;
            let found = layer
                .ys
                .iter()
                .find_map(|n| names.get(n).map(|&v| (n.as_str(), v)));
            let (Some(&x), Some((yname, y))) = (names.get(&layer.x), found) else {
                report.note(format!(
                    "skipped '{label}': no value named '{}' or '{}' in the current graph",
                    layer.x,
                    layer.ys.join("' / '")
                ));
                continue;
            };
            let (Some(&dx), Some(&dy)) =
                (dense_names.get(layer.x.as_str()), dense_names.get(yname))
            else {
                continue;
            };
            let k = layer.k;
            let (w, n) = match probe(&dense, dx, dy, k, &interp) {
                Ok(r) => r,
                Err(why) => {
                    report.note(format!("skipped '{label}': dense layer: {why}"));
                    continue;
                }
            };
            if k * n < o.min_elements {
                small += 1;
                continue;
            }
            let (wq, nq) = match probe(g, x, y, k, &interp) {
                Ok(r) => r,
                Err(why) => {
                    report.note(format!("skipped '{label}': {why}"));
                    continue;
                }
            };
            if nq != n {
                report.note(format!(
                    "skipped '{label}': the layer now has {nq} outputs, not {n}"
                ));
                continue;
            }
            let dw: Vec<f64> = w.iter().zip(&wq).map(|(a, b)| a - b).collect();
            if dw.iter().all(|&v| v == 0.0) {
                unchanged += 1;
                continue;
            }
            let r = o.rank_for(k, n);
            let uniform_fits = (r * (k + n)) as f64 <= o.max_overhead * (k * n) as f64;
            if !uniform_fits && o.allocate == Allocate::Uniform {
                report.note(format!(
                    "skipped '{label}' ({k}x{n}): a rank-{r} correction adds {} parameters, \
                     {:.0}% of the dense layer's, above max-overhead={}",
                    r * (k + n),
                    100.0 * (r * (k + n)) as f64 / (k * n) as f64,
                    o.max_overhead
                ));
                continue;
            }
            let top = match o.allocate {
                Allocate::Uniform => r,
                Allocate::Evo => o.rank_cap(k, n),
            };
            if top == 0 {
                continue;
            }
            let h = &layer.h.data;
            let f = eora(&dw, h, k, n, o.damp, RankRule::Fixed(top))
                .map_err(|e| PassError::failed(NAME, format!("layer '{label}': {e}")))?;
            let (e0, base) = (weighted_sq(&dw, h, k, n), weighted_sq(&w, h, k, n));
            let werr = rel(
                dw.iter().map(|v| v * v).sum(),
                w.iter().map(|v| v * v).sum(),
            );
            cands.push(Cand {
                layer: li,
                y,
                k,
                n,
                dw,
                f,
                e0,
                base,
                werr,
                uniform: if uniform_fits { r } else { 0 },
            });
        }
        // Phase 2: the ranks.
        let ranks: Vec<usize> = match o.allocate {
            Allocate::Uniform => cands.iter().map(|c| c.uniform).collect(),
            Allocate::Evo => {
                let fail = |e: String| PassError::failed(NAME, format!("rank search: {e}"));
                let samples = cx.require_samples(NAME)?;
                let scorer =
                    search::Scorer::new(&dense, &samples, o.search_samples).map_err(fail)?;
                // Units: ranks taken from each layer's largest allowed rank.
                let units: Vec<usize> = cands.iter().map(|c| c.f.r).collect();
                let start: Vec<usize> =
                    cands.iter().map(|c| c.f.r - c.uniform.min(c.f.r)).collect();
                let per_unit: Vec<f64> = cands.iter().map(|c| (c.k + c.n) as f64).collect();
                let budget: f64 = start
                    .iter()
                    .zip(&per_unit)
                    .map(|(&k, &p)| k as f64 * p)
                    .sum();
                let ranks_of = |removed: &[usize]| -> Vec<usize> {
                    units
                        .iter()
                        .zip(removed)
                        .map(|(&u, &k)| u - k.min(u))
                        .collect()
                };
                let mut fitness = |removed: &[usize]| -> Result<f64, PassError> {
                    let mut h = g.clone();
                    let mut nm = names.clone();
                    let mut scratch = PassReport::unchanged();
                    let ranks = ranks_of(removed);
                    apply_corrections(
                        &mut h,
                        &layers,
                        &cands,
                        &ranks,
                        &mut nm,
                        false,
                        &mut scratch,
                    );
                    scorer.error(&h).map_err(fail)
                };
                let space = search::Space {
                    units: units.clone(),
                    caps: units.clone(),
                    per_unit,
                    budget,
                };
                let found = search::evolve_in(
                    cx,
                    "eora: rank search",
                    start,
                    &space,
                    o.generations,
                    o.offspring,
                    &mut fitness,
                )?;
                found.report(
                    &mut report,
                    "allocate=evo",
                    o.generations,
                    scorer.samples(),
                    "uniform ranks",
                );
                ranks_of(&found.removed)
            }
        };
        // Phase 3: rewrite.
        let (d, a) = apply_corrections(g, &layers, &cands, &ranks, &mut names, true, &mut report);
        done += d;
        added += a;
        if unchanged > 0 {
            report.note(format!(
                "{unchanged} layers unchanged since the pipeline's input: nothing to correct"
            ));
        }
        if small > 0 {
            report.note(format!(
                "{small} layers below min-elements={} left alone",
                o.min_elements
            ));
        }
        let _ = pare_ir::infer::infer_types(g);
        if done > 0 {
            report.changed = true;
            report.preserved = pare_pass::Preserved::none();
            report.add_stat("layers", done);
            report.add_stat("params-added", added);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_pass::{Sample, SampleSet};

    /// Deterministic numbers in [-1, 1).
    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    fn list(v: &[f32]) -> String {
        v.iter()
            .map(|x| format!("{x:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn value(g: &Graph, name: &str) -> ValueId {
        g.find_value(name).expect("value exists")
    }

    #[test]
    fn probe_reads_the_effective_weight_of_a_gemm() {
        // y = 2 · x · Bᵀ + c with B [N=5, K=4]: the effective weight is 2·Bᵀ, bias removed.
        let b = rand(20, 1);
        let c = rand(5, 2);
        let g = pare_ir::parse_graph(&format!(
            "graph @g(%x: f32[3,4]) -> (%y) {{\n  %b = const f32[5,4] [{}]\n  \
             %c = const f32[5] [{}]\n  %y = Gemm(%x, %b, %c) {{alpha=2.0, transB=1}}\n}}",
            list(&b),
            list(&c)
        ))
        .expect("parses");
        let (w, n) = probe(
            &g,
            value(&g, "x"),
            value(&g, "y"),
            4,
            &Interpreter::with_threads(1),
        )
        .expect("probes");
        assert_eq!(n, 5);
        for i in 0..4 {
            for j in 0..5 {
                let want = 2.0 * b[j * 4 + i] as f64;
                assert!((w[i * 5 + j] - want).abs() < 1e-6, "({i}, {j})");
            }
        }
    }

    #[test]
    fn probe_refuses_what_is_not_an_affine_function_of_the_input() {
        let w = rand(12, 3);
        let g = pare_ir::parse_graph(&format!(
            "graph @g(%x: f32[2,4], %z: f32[2,3]) -> (%y, %v) {{\n  \
             %w = const f32[4,3] [{}]\n  %r = Relu(%x)\n  %y = MatMul(%r, %w)\n  \
             %m = MatMul(%x, %w)\n  %v = Add(%m, %z)\n}}",
            list(&w)
        ))
        .expect("parses");
        let interp = Interpreter::with_threads(1);
        let (x, y, v) = (value(&g, "x"), value(&g, "y"), value(&g, "v"));
        let e = probe(&g, x, y, 4, &interp).unwrap_err();
        assert!(e.contains("(Relu)") && e.contains("not affine"), "{e}");
        let e = probe(&g, x, v, 4, &interp).unwrap_err();
        assert!(e.contains("depends on the graph input 'z'"), "{e}");
        let m = value(&g, "m");
        assert!(probe(&g, m, m, 3, &interp).is_err());
    }

    /// A `[rows, 16]` input through a `16×12` MatMul, `samples` calibration samples.
    fn layer(rows: usize, samples: usize) -> (Graph, SampleSet) {
        let w = rand(16 * 12, 5);
        let g = pare_ir::parse_graph(&format!(
            "graph @g(%x: f32[{rows},16]) -> (%y) {{\n  %w = const f32[16,12] [{}]\n  \
             %y = MatMul(%x, %w) : f32[{rows},12] loc(\"mm\")\n}}",
            list(&w)
        ))
        .expect("parses");
        // Correlated inputs: two shared factors plus small noise.
        let set = SampleSet {
            input_names: vec!["x".into()],
            samples: (0..samples as u64)
                .map(|s| {
                    let f = rand(rows * 2, 100 + s);
                    let mix = rand(2 * 16, 7);
                    let noise = rand(rows * 16, 200 + s);
                    let x: Vec<f32> = (0..rows * 16)
                        .map(|i| {
                            let (r, c) = (i / 16, i % 16);
                            f[r * 2] * mix[c] + f[r * 2 + 1] * mix[16 + c] + 0.1 * noise[i]
                        })
                        .collect();
                    Sample {
                        origin: "generated".into(),
                        inputs: vec![Tensor::from_vec(vec![rows, 16], x)],
                    }
                })
                .collect(),
        };
        (g, set)
    }

    fn error(dense: &Graph, g: &Graph, set: &SampleSet) -> f64 {
        let interp = Interpreter::with_threads(1);
        let mut num = 0.0;
        for s in &set.samples {
            let a = interp.run(dense, &s.inputs).expect("runs")[0]
                .to_f64_vec()
                .expect("f32");
            let b = interp.run(g, &s.inputs).expect("runs")[0]
                .to_f64_vec()
                .expect("f32");
            num += a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f64>();
        }
        num.sqrt()
    }

    /// Runs `spec` on a copy of `dense` with `set` as calibration samples, one thread.
    fn run_pipeline_on(
        dense: &Graph,
        set: &SampleSet,
        spec: &str,
    ) -> (Graph, pare_pass::PipelineReport) {
        let reg = registry();
        let mut g = dense.clone();
        let mut cx = PassContext::new().with_threads(1).with_samples(set.clone());
        let r = pare_pass::run_pipeline(&reg, spec, &mut g, &mut cx).expect("runs");
        (g, r)
    }

    fn registry() -> Registry {
        let mut reg = Registry::new();
        pare_quantize::register(&mut reg);
        crate::register(&mut reg);
        reg
    }

    #[test]
    fn needs_samples_and_the_input_graph() {
        let (g, set) = layer(8, 2);
        let opts = EoraOptions {
            rank: 2,
            min_elements: 0,
            ..EoraOptions::default()
        };
        let mut h = g.clone();
        let e = Eora::new(opts.clone())
            .expect("valid")
            .run(&mut h, &mut PassContext::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs calibration data"), "{e}");
        let e = Eora::new(opts)
            .expect("valid")
            .run(&mut h, &mut PassContext::new().with_samples(set))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs the graph as it entered the pipeline"),
            "{e}"
        );
        assert_eq!(h, g);
        assert!(Eora::new(EoraOptions::default()).is_err());
        assert!(Eora::new(EoraOptions {
            rank: 2,
            rank_ratio: 0.1,
            ..EoraOptions::default()
        })
        .is_err());
    }

    #[test]
    fn corrections_lower_the_error_and_a_second_pass_lowers_it_again() {
        let (dense, set) = layer(24, 4);
        let run = |spec: &str| run_pipeline_on(&dense, &set, spec);
        let q = "quantize(bits=4,group=16,min-elements=0)";
        let (g0, _) = run(q);
        let (g1, r1) = run(&format!("{q},eora(rank=1,min-elements=0)"));
        let (g2, r2) = run(&format!(
            "{q},eora(rank=1,min-elements=0),eora(rank=1,min-elements=0)"
        ));
        assert_eq!(r1.steps[1].stats.get("layers"), Some(&1));
        // The second run probes through the first correction (an Add of two products of x)
        // and fits what it left.
        assert_eq!(
            r2.steps[2].stats.get("layers"),
            Some(&1),
            "{:?}",
            r2.steps[2].notes
        );
        let (e0, e1, e2) = (
            error(&dense, &g0, &set),
            error(&dense, &g1, &set),
            error(&dense, &g2, &set),
        );
        assert!(e1 < 0.8 * e0 && e2 < e1, "{e0} {e1} {e2}");
        // The names and the quantized layer stay; y is the corrected sum.
        let y = g2.outputs()[0];
        assert_eq!(g2.value(y).name, "y");
        assert!(g2.find_value("y/eora_base").is_some());
        assert!(g2.find_value("w_dequantized").is_some());
    }

    #[test]
    fn searched_allocation_keeps_the_budget_and_lowers_the_error() {
        let (dense, set) = layer(24, 4);
        let run = |spec: &str| run_pipeline_on(&dense, &set, spec);
        let q = "quantize(bits=4,group=16,min-elements=0)";
        let (g0, _) = run(q);
        let (g1, r1) = run(&format!(
            "{q},eora(rank=1,min-elements=0,allocate=evo,generations=3,search-samples=0)"
        ));
        let added = r1.steps[1].stats.get("params-added").copied().unwrap_or(0);
        assert!(added > 0 && added <= 16 + 12, "{:?}", r1.steps[1]);
        assert!(
            r1.steps[1].notes.iter().any(|n| n.contains("allocate=evo")),
            "{:?}",
            r1.steps[1].notes
        );
        assert!(error(&dense, &g1, &set) < error(&dense, &g0, &set));
    }

    #[test]
    fn a_layer_fused_with_its_bias_after_the_pipeline_began_is_matched_by_the_add() {
        // Dense: MatMul → m, Add bias → y. Current (as after fuse-gemm and a lossy pass):
        // one Gemm named after the Add, with a perturbed weight.
        let w = rand(16 * 12, 9);
        let b = rand(12, 10);
        let wq: Vec<f32> = w.iter().map(|x| (x * 4.0).round() / 4.0).collect();
        let text = |body: &str| {
            format!(
                "graph @g(%x: f32[8,16]) -> (%y) {{\n  %w = const f32[16,12] [{}]\n  \
                 %wq = const f32[16,12] [{}]\n  %b = const f32[12] [{}]\n{body}\n}}",
                list(&w),
                list(&wq),
                list(&b)
            )
        };
        let dense = pare_ir::parse_graph(&text(
            "  %m = MatMul(%x, %w) loc(\"mm\")\n  %y = Add(%m, %b) loc(\"bias\")",
        ))
        .expect("parses");
        let fused =
            pare_ir::parse_graph(&text("  %y = Gemm(%x, %wq, %b) loc(\"mm\")")).expect("parses");
        let (_, set) = layer(8, 4);
        let mut g = fused.clone();
        let mut cx = PassContext::new()
            .with_threads(1)
            .with_samples(set.clone())
            .with_input_graph(dense.clone());
        let r = Eora::new(EoraOptions {
            rank: 1,
            min_elements: 0,
            ..EoraOptions::default()
        })
        .expect("valid")
        .run(&mut g, &mut cx)
        .expect("runs");
        assert_eq!(r.stats.get("layers"), Some(&1), "{:?}", r.notes);
        assert!(g.find_value("y/eora_base").is_some());
        assert!(error(&dense, &g, &set) < 0.8 * error(&dense, &fused, &set));
    }

    #[test]
    fn rank_ratio_is_a_fraction_of_the_dense_parameters() {
        let o = EoraOptions {
            rank_ratio: 0.1,
            ..EoraOptions::default()
        };
        assert_eq!(o.rank_for(384, 1536), 30);
        let o = EoraOptions {
            rank: 500,
            ..EoraOptions::default()
        };
        assert_eq!(o.rank_for(384, 1536), 384);
    }
}
