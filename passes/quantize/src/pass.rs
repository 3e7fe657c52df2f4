//! The `quantize` pass: finds the weights, quantizes them with the chosen method and rewrites
//! the graph in the chosen format. See the crate documentation for what it guarantees.

use crate::act::{select_range, ActGrid, Calibrate};
use crate::awq::{activation_rms, awq, GRID};
use crate::error::QuantError;
use crate::gptq::{gptq_keeping, h_error};
use crate::mixed;
use crate::nbits;
use crate::scheme::{rel_error, rtn, rtn_keeping, QuantMatrix, Scheme};
use crate::search;
use pare_analysis::CalibStats;
use pare_ir::op::{CastAttrs, DequantizeAttrs, QuantizeAttrs};
use pare_ir::{DType, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
use std::collections::HashMap;
use std::sync::Arc;

const NAME: &str = "quantize";

/// Options, as written in a pipeline: `quantize(bits=4,group=128,method=gptq)`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuantizeOptions {
    /// Bits per weight: 8 or 4.
    pub bits: i64,
    /// Group length along K; 0 = per output channel; absent = 0 for 8 bits, 128 for 4 bits.
    pub group: Option<i64>,
    /// `rtn`, `gptq` or `awq`.
    pub method: String,
    /// Symmetric signed codes (true) or unsigned codes with zero points (false).
    pub symmetric: bool,
    /// Quantize weights only (true) or weights and activations (false); absent = false for
    /// `bits=8` per-channel QDQ, true otherwise.
    pub weights_only: Option<bool>,
    /// Activation quantization: `auto` (static with calibration samples, dynamic without),
    /// `static` or `dynamic`.
    pub activations: String,
    /// Static activation range rule: `auto` (searched per activation), `minmax`,
    /// `percentile`, `mse` or `entropy`.
    pub calibrate: String,
    /// Percentage of values kept by `calibrate=percentile`.
    pub percentile: f64,
    /// Symmetric int8 activations (zero point 0) instead of asymmetric uint8.
    pub act_symmetric: bool,
    /// Static activations with one grid per channel (the K axis of the layers reading them):
    /// each channel's calibrated min/max, clipped to the tensor's range under `calibrate`.
    pub act_per_channel: bool,
    /// GPTQ dampening, as a fraction of the mean diagonal of XᵀX.
    pub damp: f64,
    /// `qdq` (DequantizeLinear) or `matmulnbits` (com.microsoft MatMulNBits for MatMul/Gemm).
    pub format: String,
    /// Weights with fewer elements are left in f32.
    pub min_elements: i64,
    /// Mixed precision: the average stored bits per weight element (codes, scales and zero
    /// points) over the layers quantized, at most; per layer int4 (groups), int8 (per
    /// channel) or f32, chosen by measured end-to-end sensitivity. See [`crate::mixed`].
    pub budget_bits: Option<f64>,
    /// `budget-bits`: generations of the end-to-end refinement of the greedy allocation (0:
    /// greedy only).
    pub generations: i64,
    /// `budget-bits`: mutants scored per generation.
    pub offspring: i64,
    /// `budget-bits` and `max-error`: samples that score sensitivities and allocations (0: all
    /// calibration samples; without `--calib`, this many generated inputs, 4 when 0).
    pub search_samples: i64,
    /// Accuracy control: the largest end-to-end relative L2 error of the float outputs on the
    /// `search-samples` samples; the layers whose quantization costs the most are restored to
    /// f32, most harmful first, until the error is at most this (the crate doc says how).
    pub max_error: Option<f64>,
    /// Outlier retention (SpQR-style, weights only, `rtn` or `gptq`, QDQ): this fraction of
    /// every layer's weights (the largest `|w|·‖x‖`) stays f32, left out of the grids.
    pub outliers: f64,
}

/// The default static range rule: measured best on held-out inputs of the five real models in
/// onnxruntime (docs/benchmarks.md), and cheaper than `auto` (see docs/passes.md).
pub const DEFAULT_CALIBRATE: &str = "percentile";

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            bits: 8,
            group: None,
            method: "rtn".into(),
            symmetric: true,
            weights_only: None,
            activations: "auto".into(),
            calibrate: DEFAULT_CALIBRATE.into(),
            percentile: 99.99,
            act_symmetric: false,
            act_per_channel: false,
            damp: 0.01,
            format: "qdq".into(),
            min_elements: 1024,
            budget_bits: None,
            generations: 8,
            offspring: 2,
            search_samples: 4,
            max_error: None,
            outliers: 0.0,
        }
    }
}

/// How weights are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest.
    Rtn,
    /// GPTQ with XᵀX from calibration.
    Gptq,
    /// Activation-aware per-input-channel scaling, then round to nearest.
    Awq,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
            Method::Awq => "awq",
        }
    }
}

/// How quantized weights appear in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `DequantizeLinear(codes, scale, zero_point)` feeding the original op.
    Qdq,
    /// `com.microsoft::MatMulNBits` replacing MatMul (and plain Gemm); QDQ elsewhere.
    MatMulNBits,
}

/// When activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActMode {
    /// Static when calibration samples are given, dynamic otherwise.
    Auto,
    /// QuantizeLinear → DequantizeLinear with calibrated scale and zero point.
    Static,
    /// DynamicQuantizeLinear → MatMulInteger (MatMul/Gemm), scale computed at run time.
    Dynamic,
}

/// Activation quantization settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActConfig {
    /// Static, dynamic or chosen by the presence of calibration samples.
    pub mode: ActMode,
    /// Static range rule; `None` = `calibrate=auto` (per activation, the rule whose range
    /// gives the smallest error at the outputs of the layers reading it; see [`crate::search`]).
    pub calibrate: Option<Calibrate>,
    /// int8 with zero point 0 (true) or uint8 asymmetric (false).
    pub symmetric: bool,
    /// One grid per channel (static only).
    pub per_channel: bool,
}

/// Validated options.
#[derive(Clone, Debug)]
pub struct Config {
    /// The grid.
    pub scheme: Scheme,
    /// The method.
    pub method: Method,
    /// The output form.
    pub format: Format,
    /// GPTQ dampening.
    pub damp: f64,
    /// Smallest weight quantized.
    pub min_elements: usize,
    /// Activation quantization; `None` = weights only.
    pub activations: Option<ActConfig>,
    /// Mixed precision under a size budget; `None` = every layer at `scheme`. When set,
    /// `scheme` is the cheapest level (4 bits, `group`).
    pub budget: Option<Budget>,
    /// Accuracy control (`max-error`): the error bound and the samples scoring it (0: all).
    pub max_error: Option<(f64, usize)>,
    /// Share of each layer's weights kept f32 as outliers (0: none).
    pub outliers: f64,
}

/// `budget-bits` settings (validated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Largest average stored bits per quantized weight element.
    pub bits: f64,
    /// Refinement generations (0: greedy only).
    pub generations: usize,
    /// Mutants per generation.
    pub offspring: usize,
    /// Samples scoring sensitivities and candidates (0: all calibration samples).
    pub samples: usize,
}

/// Lowest and highest `budget-bits`: every layer int4 (codes alone), every layer f32.
const BUDGET_RANGE: (f64, f64) = (4.0, 32.0);

fn opt_err(message: impl Into<String>) -> PassError {
    PassError::Options {
        pass: NAME.into(),
        message: message.into(),
    }
}

impl QuantizeOptions {
    /// Checks the options.
    pub fn config(&self) -> Result<Config, PassError> {
        let mut bits = match self.bits {
            4 | 8 => self.bits as u32,
            b => return Err(opt_err(format!("bits must be 8 or 4, not {b}"))),
        };
        let budget = self.budget()?;
        if budget.is_some() {
            // The cheapest level; int8 and f32 are the others.
            bits = 4;
        }
        let group = self.group.unwrap_or(if bits == 4 { 128 } else { 0 });
        let group = usize::try_from(group).map_err(|_| {
            opt_err(format!(
                "group must be 0 (per channel) or positive, not {group}"
            ))
        })?;
        let method = match self.method.as_str() {
            "rtn" => Method::Rtn,
            "gptq" => Method::Gptq,
            "awq" => Method::Awq,
            m => {
                return Err(opt_err(format!(
                    "method must be rtn, gptq or awq, not '{m}'"
                )))
            }
        };
        let format = match self.format.as_str() {
            "qdq" => Format::Qdq,
            "matmulnbits" => Format::MatMulNBits,
            f => {
                return Err(opt_err(format!(
                    "format must be qdq or matmulnbits, not '{f}'"
                )))
            }
        };
        if format == Format::MatMulNBits && (group < 16 || !group.is_power_of_two()) {
            return Err(opt_err(format!(
                "format=matmulnbits needs group (its block_size) to be a power of two ≥ 16, \
                 not {group}"
            )));
        }
        if !(self.damp.is_finite() && self.damp >= 0.0) {
            return Err(opt_err(format!("damp must be ≥ 0, not {}", self.damp)));
        }
        let activations = self.act_config(bits, group, format)?;
        let max_error = match self.max_error {
            None => None,
            Some(e) if e.is_finite() && e > 0.0 => {
                Some((e, usize::try_from(self.search_samples.max(0)).unwrap_or(0)))
            }
            Some(e) => {
                return Err(opt_err(format!(
                    "max-error is a relative L2 error of the model's outputs and must be > 0,                      not {e}"
                )))
            }
        };
        if max_error.is_some() && budget.is_some() {
            return Err(opt_err(
                "max-error and budget-bits both choose which layers stay f32; give one",
            ));
        }
        let outliers = self.outliers;
        if !(outliers.is_finite() && (0.0..0.5).contains(&outliers)) {
            return Err(opt_err(format!(
                "outliers is the share of each layer's weights kept in f32, in [0, 0.5), not \
                 {outliers}"
            )));
        }
        if outliers > 0.0 {
            let why = if method == Method::Awq {
                Some("method=awq (its column scaling already protects the salient weights)")
            } else if format == Format::MatMulNBits {
                Some("format=matmulnbits (MatMulNBits has no place for them)")
            } else if budget.is_some() {
                Some("budget-bits")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(opt_err(format!("outliers cannot be combined with {why}")));
            }
        }
        Ok(Config {
            outliers,
            max_error,
            activations,
            scheme: Scheme {
                bits,
                group,
                symmetric: self.symmetric,
            },
            method,
            format,
            damp: self.damp,
            min_elements: usize::try_from(self.min_elements.max(0)).unwrap_or(0),
            budget,
        })
    }

    /// Validates `budget-bits` and the options that go with it.
    fn budget(&self) -> Result<Option<Budget>, PassError> {
        let Some(b) = self.budget_bits else {
            return Ok(None);
        };
        let (lo, hi) = BUDGET_RANGE;
        if !(b.is_finite() && (lo..=hi).contains(&b)) {
            return Err(opt_err(format!(
                "budget-bits must be between {lo} (every layer int4, before its scales) and \
                 {hi} (every layer f32), not {b}"
            )));
        }
        if self.bits != 8 {
            return Err(opt_err(format!(
                "budget-bits chooses the bits of each layer (int4, int8 or f32); leave out \
                 bits={}",
                self.bits
            )));
        }
        if self.weights_only == Some(false) || self.activations != "auto" {
            return Err(opt_err(
                "budget-bits is weight-only mixed precision: it cannot be combined with \
                 weights-only=false or activations=static|dynamic",
            ));
        }
        let count = |name: &str, v: i64| {
            usize::try_from(v).map_err(|_| opt_err(format!("{name} must be ≥ 0, not {v}")))
        };
        Ok(Some(Budget {
            bits: b,
            generations: count("generations", self.generations)?,
            offspring: count("offspring", self.offspring)?,
            samples: count("search-samples", self.search_samples)?,
        }))
    }
}

impl QuantizeOptions {
    /// Resolves `weights-only`, `activations`, `calibrate`, `percentile` and `act-symmetric`.
    fn act_config(
        &self,
        bits: u32,
        group: usize,
        format: Format,
    ) -> Result<Option<ActConfig>, PassError> {
        let mode = match self.activations.as_str() {
            "auto" => ActMode::Auto,
            "static" => ActMode::Static,
            "dynamic" => ActMode::Dynamic,
            m => {
                return Err(opt_err(format!(
                    "activations must be auto, static or dynamic, not '{m}'"
                )))
            }
        };
        let calibrate = match self.calibrate.as_str() {
            "auto" => None,
            "minmax" => Some(Calibrate::MinMax),
            "percentile" => {
                if !(self.percentile > 0.0 && self.percentile <= 100.0) {
                    return Err(opt_err(format!(
                        "percentile must be in (0, 100], not {}",
                        self.percentile
                    )));
                }
                Some(Calibrate::Percentile(self.percentile))
            }
            "mse" => Some(Calibrate::Mse),
            "entropy" => Some(Calibrate::Entropy),
            c => {
                return Err(opt_err(format!(
                    "calibrate must be auto, minmax, percentile, mse or entropy, not '{c}'"
                )))
            }
        };
        let int8_per_channel_qdq = bits == 8 && group == 0 && format == Format::Qdq;
        let weights_only = match (self.weights_only, mode) {
            (Some(true), ActMode::Static | ActMode::Dynamic) => {
                return Err(opt_err(format!(
                    "activations={} contradicts weights-only=true",
                    self.activations
                )))
            }
            (Some(w), _) => w,
            (None, ActMode::Auto) => !int8_per_channel_qdq,
            (None, _) => false,
        };
        if self.act_per_channel && (weights_only || mode == ActMode::Dynamic) {
            return Err(opt_err(
                "act-per-channel=true is for static activations: it needs weights-only=false and \
                 activations=auto or static (with --calib)",
            ));
        }
        if weights_only {
            return Ok(None);
        }
        if !int8_per_channel_qdq {
            return Err(opt_err(format!(
                "activation quantization (weights-only=false) is int8 with per-channel QDQ \
                 weights: it needs bits=8, group=0 and format=qdq (got bits={bits}, \
                 group={group}, format={}); add weights-only=true for weight-only quantization",
                self.format
            )));
        }
        Ok(Some(ActConfig {
            mode,
            calibrate,
            symmetric: self.act_symmetric,
            per_channel: self.act_per_channel,
        }))
    }
}

/// The `quantize` pass.
pub struct Quantize {
    cfg: Config,
}

impl Quantize {
    /// A pass with these options (checked).
    pub fn new(opts: QuantizeOptions) -> Result<Quantize, PassError> {
        Ok(Quantize {
            cfg: opts.config()?,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

/// Where the math layout `W [N, K]` lives in the stored weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `B [K, N]`: MatMul, Gemm without transB.
    Kn,
    /// `B [N, K]`: Gemm with transB.
    Nk,
    /// Conv `W [M, C/groups, k...]`: rows are output channels, K the flattened filter.
    Conv { groups: usize },
}

struct Target {
    node: NodeId,
    weight: ValueId,
    layout: Layout,
    shape: Vec<usize>,
    n: usize,
    k: usize,
    /// Math layout, `n × k` row-major.
    w: Vec<f64>,
}

impl Target {
    /// Points every reader of the layer's output `y` at its replacement `out`, then drops the
    /// layer and its f32 weight; `y` is renamed `<yname>_replaced` so `out` keeps the name.
    fn retire(&self, g: &mut Graph, y: ValueId, out: ValueId, yname: &str) {
        g.replace_all_uses(y, out);
        g.remove_node(self.node);
        g.set_name(y, format!("{yname}_replaced"));
        g.remove_const(self.weight);
    }
}

/// The weight operand of a linear node, or why it is not quantized (`Ok(None)`: not a linear
/// node at all).
fn target(g: &Graph, node: NodeId, min_elements: usize) -> Result<Option<Target>, String> {
    let nd = g.node(node);
    let layout = match &nd.op {
        Op::MatMul => Layout::Kn,
        Op::Gemm(a) if a.trans_b => Layout::Nk,
        Op::Gemm(_) => Layout::Kn,
        Op::Conv(a) => Layout::Conv {
            groups: usize::try_from(a.group)
                .ok()
                .filter(|&x| x > 0)
                .ok_or_else(|| format!("invalid group {}", a.group))?,
        },
        _ => return Ok(None),
    };
    let (Some(x), Some(wv)) = (nd.input(0), nd.input(1)) else {
        return Err("missing operand".into());
    };
    let Some(t) = g.constant(wv) else {
        return Err("the weight operand is not a constant (activation × activation)".into());
    };
    if g.constant(x).is_some() {
        return Err("both operands are constant (fold-constants evaluates it)".into());
    }
    if t.dtype() != DType::F32 {
        return Err(format!("the weight is {}, not f32", t.dtype()));
    }
    let shape = t.shape().to_vec();
    let (n, k) = match layout {
        Layout::Kn | Layout::Nk if shape.len() != 2 => {
            return Err(format!("the weight has rank {}, not 2", shape.len()))
        }
        Layout::Kn => (shape[1], shape[0]),
        Layout::Nk => (shape[0], shape[1]),
        Layout::Conv { groups } => {
            if shape.len() < 3 {
                return Err(format!("conv weight of rank {}", shape.len()));
            }
            if shape[0] % groups != 0 {
                return Err(format!("{} output channels in {groups} groups", shape[0]));
            }
            (shape[0], shape[1..].iter().product())
        }
    };
    let numel = n * k;
    if numel < min_elements {
        return Err(format!(
            "the weight is too small to matter ({numel} elements < min-elements={min_elements})"
        ));
    }
    let v = t.to_vec::<f32>().map_err(|e| e.to_string())?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(QuantError::NonFiniteWeight.to_string());
    }
    let w: Vec<f64> = match layout {
        Layout::Kn => {
            let mut w = vec![0f64; numel];
            for kk in 0..k {
                for nn in 0..n {
                    w[nn * k + kk] = v[kk * n + nn] as f64;
                }
            }
            w
        }
        _ => v.iter().map(|&x| x as f64).collect(),
    };
    Ok(Some(Target {
        node,
        weight: wv,
        layout,
        shape,
        n,
        k,
        w,
    }))
}

fn label(g: &Graph, n: NodeId) -> String {
    let nd = g.node(n);
    if nd.name.is_empty() {
        format!("{} {}", nd.op.name(), n)
    } else {
        nd.name.clone()
    }
}

/// Packs integer codes (in storage order) into a tensor of `dt`.
fn codes_tensor(dt: DType, shape: Vec<usize>, codes: &[i32]) -> Result<Tensor, String> {
    Ok(match dt {
        DType::I8 => Tensor::from_vec(shape, codes.iter().map(|&c| c as i8).collect()),
        DType::U8 => Tensor::from_vec(shape, codes.iter().map(|&c| c as u8).collect()),
        _ => {
            // I4 / U4: two per byte, low nibble first.
            let mut b = vec![0u8; codes.len().div_ceil(2)];
            for (i, &c) in codes.iter().enumerate() {
                b[i / 2] |= ((c as u8) & 0x0f) << (4 * (i % 2));
            }
            Tensor::from_raw(dt, shape, b.into()).map_err(|e| e.to_string())?
        }
    })
}

fn set_f32(g: &mut Graph, v: ValueId, shape: &[usize]) {
    g.set_type(v, TensorType::new(DType::F32, Shape::fixed(shape)));
}

/// Outcome of quantizing one weight.
struct Done {
    q: QuantMatrix,
    /// H-weighted relative output error of the result and of RTN, when XᵀX is known.
    out_err: Option<(f64, f64)>,
    detail: String,
}

impl Quantize {
    /// Quantizes a target's weight with the configured method and grid.
    fn quantize(&self, t: &Target, stats: Option<&CalibStats>) -> Result<Done, String> {
        self.quantize_with(t, stats, self.cfg.scheme)
    }

    /// Quantizes a target's weight with the configured method on grid `s`.
    fn quantize_with(
        &self,
        t: &Target,
        stats: Option<&CalibStats>,
        mut s: Scheme,
    ) -> Result<Done, String> {
        let mut detail = String::new();
        let groups = match t.layout {
            Layout::Conv { groups } => {
                if s.group != 0 {
                    s.group = 0;
                    detail.push_str("conv: per output channel (group ignored); ");
                }
                groups
            }
            _ => 1,
        };
        let hess = stats.and_then(|st| st.hessian(t.node));
        let hess = match hess {
            Some(h) if h.k == t.k && h.groups == groups => Some(h),
            Some(h) => {
                detail.push_str(&format!(
                    "XᵀX shape {}×{}×{} does not match the weight; ",
                    h.groups, h.k, h.k
                ));
                None
            }
            None => None,
        };
        let (n, k) = (t.n, t.k);
        let mg = n / groups;
        // Rows [gi*mg, (gi+1)*mg) use block gi of XᵀX.
        let h_err_of = |q: &QuantMatrix| -> Option<(f64, f64)> {
            let h = hess?;
            let dq = q.dequantize();
            let (mut e, mut base) = (0f64, 0f64);
            for gi in 0..groups {
                let rows = gi * mg * k..(gi + 1) * mg * k;
                let dw: Vec<f64> = dq[rows.clone()]
                    .iter()
                    .zip(&t.w[rows.clone()])
                    .map(|(a, b)| a - b)
                    .collect();
                e += h_error(&dw, mg, k, h.block(gi));
                base += h_error(&t.w[rows], mg, k, h.block(gi));
            }
            Some((e, base))
        };
        let rel = |p: Option<(f64, f64)>| {
            p.map(|(e, b)| {
                if b > 0.0 {
                    (e / b).max(0.0).sqrt()
                } else {
                    0.0
                }
            })
        };
        let method = match (self.cfg.method, hess) {
            (Method::Rtn, _) => Method::Rtn,
            (m, Some(_)) => m,
            (m, None) => {
                let why = stats
                    .and_then(|st| {
                        st.skipped_hessians
                            .iter()
                            .find(|(n, _)| *n == t.node)
                            .map(|(_, w)| w.clone())
                    })
                    .unwrap_or_else(|| "no XᵀX was recorded for it".into());
                detail.push_str(&format!("{} fell back to rtn: {why}; ", m.name()));
                Method::Rtn
            }
        };
        let rtn_q = rtn(&t.w, n, k, &s);
        let rtn_err = rel(h_err_of(&rtn_q));
        let keep = (self.cfg.outliers > 0.0)
            .then(|| outlier_mask(&t.w, n, k, groups, hess, self.cfg.outliers));
        let keep_rows = |gi: usize| keep.as_deref().map(|m| &m[gi * mg * k..(gi + 1) * mg * k]);
        let q = match method {
            Method::Rtn if keep.is_some() => rtn_keeping(&t.w, n, k, &s, keep.as_deref()),
            Method::Rtn => rtn_q,
            Method::Gptq => {
                let h = hess.ok_or("no XᵀX")?;
                let mut rows_q: Vec<QuantMatrix> = Vec::with_capacity(groups);
                for gi in 0..groups {
                    let w = &t.w[gi * mg * k..(gi + 1) * mg * k];
                    let mut damp = self.cfg.damp;
                    let q = loop {
                        match gptq_keeping(w, mg, k, h.block(gi), &s, damp, keep_rows(gi)) {
                            Ok(q) => break Some(q),
                            Err(QuantError::NotPositiveDefinite { .. }) if damp < 1.0 => {
                                damp = (damp * 10.0).max(0.01);
                            }
                            Err(e) => {
                                detail.push_str(&format!("gptq fell back to rtn: {e}; "));
                                break None;
                            }
                        }
                    };
                    if damp != self.cfg.damp {
                        detail.push_str(&format!("damp raised to {damp}; "));
                    }
                    rows_q.push(q.unwrap_or_else(|| rtn_keeping(w, mg, k, &s, keep_rows(gi))));
                }
                concat_rows(rows_q, n, k, &s)
            }
            Method::Awq => {
                let h = hess.ok_or("no XᵀX")?;
                if groups != 1 {
                    detail.push_str("awq: grouped convolution quantized with rtn; ");
                    rtn_q
                } else {
                    let act = activation_rms(h.block(0), k, h.rows);
                    let r = awq(&t.w, n, k, h.block(0), &act, &s, &GRID);
                    detail.push_str(&format!("α = {:.1}; ", r.alpha));
                    r.q
                }
            }
        };
        if !q.outliers.is_empty() {
            detail.push_str(&format!(
                "{} outliers ({:.2} %) kept f32; ",
                q.outliers.len(),
                100.0 * q.outliers.len() as f64 / (n * k).max(1) as f64
            ));
        }
        let out_err = match (rel(h_err_of(&q)), rtn_err) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        Ok(Done { q, out_err, detail })
    }

    /// Replaces the weight operand by `DequantizeLinear(codes, scale, zero_point)` (times the
    /// AWQ column factors).
    fn emit_qdq(&self, g: &mut Graph, t: &Target, q: &QuantMatrix) -> Result<(), String> {
        let s = &q.scheme;
        let base = {
            let n = &g.value(t.weight).name;
            if n.is_empty() {
                format!("w{}", t.weight.index())
            } else {
                n.clone()
            }
        };
        let (n, k) = (q.n, q.k);
        let ng = s.groups(k);
        let storage: Vec<i32> = match t.layout {
            Layout::Kn => {
                let mut c = vec![0i32; n * k];
                for kk in 0..k {
                    for nn in 0..n {
                        c[kk * n + nn] = q.codes[nn * k + kk];
                    }
                }
                c
            }
            _ => q.codes.clone(),
        };
        // Scale / zero-point shape and DequantizeLinear attributes.
        let (pshape, axis, block, order): (Vec<usize>, i64, i64, Vec<usize>) =
            match (t.layout, s.group) {
                (Layout::Kn, 0) => (vec![n], 1, 0, (0..n).collect()),
                (Layout::Kn, gsz) => (
                    vec![ng, n],
                    0,
                    gsz as i64,
                    // Element (b, nn) is params[nn * ng + b].
                    (0..ng * n).map(|i| (i % n) * ng + i / n).collect(),
                ),
                (Layout::Nk, 0) | (Layout::Conv { .. }, _) => (vec![n], 0, 0, (0..n).collect()),
                (Layout::Nk, gsz) => (vec![n, ng], 1, gsz as i64, (0..n * ng).collect()),
            };
        let wq = g.add_const(
            format!("{base}_quantized"),
            codes_tensor(s.dtype(), t.shape.clone(), &storage)?,
        );
        let scale = g.add_const(
            format!("{base}_scale"),
            Tensor::from_vec(
                pshape.clone(),
                order.iter().map(|&i| q.params[i].scale).collect(),
            ),
        );
        let zp = if s.symmetric {
            None
        } else {
            let z: Vec<i32> = order.iter().map(|&i| q.params[i].zero).collect();
            Some(g.add_const(
                format!("{base}_zero_point"),
                codes_tensor(s.dtype(), pshape.clone(), &z)?,
            ))
        };
        let dq_node = g.add_node(
            format!("{base}_DequantizeLinear"),
            Op::DequantizeLinear(DequantizeAttrs {
                axis,
                block_size: block,
            }),
            [Some(wq), Some(scale)]
                .into_iter()
                .chain(zp.map(Some))
                .collect(),
            vec![format!("{base}_dequantized")],
        );
        let mut w_out = g.node(dq_node).outputs()[0];
        set_f32(g, w_out, &t.shape);
        if let Some(cs) = &q.col_scale {
            let cshape: Vec<usize> = match t.layout {
                Layout::Kn => vec![k, 1],
                Layout::Nk => vec![k],
                Layout::Conv { .. } => {
                    let mut v = vec![1];
                    v.extend_from_slice(&t.shape[1..]);
                    v
                }
            };
            let c = g.add_const(
                format!("{base}_awq_inv_scale"),
                Tensor::from_vec(cshape, cs.clone()),
            );
            w_out = g.add_simple(format!("{base}_awq_unscaled"), Op::Mul, &[w_out, c]);
            set_f32(g, w_out, &t.shape);
        }
        if !q.outliers.is_empty() {
            w_out = emit_outliers(g, t, q, w_out, &base)?;
        }
        g.set_operand(t.node, 1, Some(w_out));
        g.remove_const(t.weight);
        Ok(())
    }

    /// Replaces a MatMul (or a Gemm without transA, alpha 1, and beta 1 when C is given) by
    /// `com.microsoft::MatMulNBits` (preceded by the AWQ activation scaling, followed by the
    /// Gemm bias Add). Returns why not when the node does not qualify.
    fn emit_nbits(&self, g: &mut Graph, t: &Target, q: &QuantMatrix) -> Result<(), String> {
        let nd = g.node(t.node).clone();
        let bias = match &nd.op {
            Op::MatMul => None,
            Op::Gemm(a) => {
                if a.trans_a || a.alpha != 1.0 {
                    return Err("Gemm with transA or alpha ≠ 1".into());
                }
                match nd.input(2) {
                    Some(c) if a.beta == 1.0 => Some(c),
                    Some(_) => return Err("Gemm with beta ≠ 1".into()),
                    None => None,
                }
            }
            _ => return Err("not a MatMul or Gemm".into()),
        };
        let (Some(a), Some(&y)) = (nd.input(0), nd.outputs().first()) else {
            return Err("missing operand".into());
        };
        if let Op::MatMul = nd.op {
            // MatMulNBits needs A of rank ≥ 1 ending in K (a 1-D A drops the row axis in
            // MatMul but not in MatMulNBits).
            match &g.value(a).ty.shape {
                Some(sh) if sh.rank() >= 2 => {}
                _ => return Err("A must be known to have rank ≥ 2".into()),
            }
        }
        let base = {
            let n = &g.value(t.weight).name;
            if n.is_empty() {
                format!("w{}", t.weight.index())
            } else {
                n.clone()
            }
        };
        let mut a_in = a;
        if let Some(cs) = &q.col_scale {
            let c = g.add_const(
                format!("{base}_awq_inv_scale"),
                Tensor::from_vec(vec![q.k], cs.clone()),
            );
            a_in = g.add_simple(format!("{base}_awq_input"), Op::Mul, &[a, c]);
            let ty = g.value(a).ty.clone();
            g.set_type(a_in, ty);
        }
        let (b, sc, zp) = nbits::pack(q);
        let b = g.add_const(format!("{base}_nbits"), b);
        let sc = g.add_const(format!("{base}_scales"), sc);
        let zp = zp.map(|z| g.add_const(format!("{base}_zero_points"), z));
        let yname = g.value(y).name.clone();
        let out_name = if bias.is_some() {
            format!("{yname}_matmul")
        } else {
            yname.clone()
        };
        let mm = g.add_node(
            if nd.name.is_empty() {
                format!("{base}_MatMulNBits")
            } else {
                nd.name.clone()
            },
            nbits::op(q.k, q.n, q.scheme.bits, q.scheme.group),
            [Some(a_in), Some(b), Some(sc)]
                .into_iter()
                .chain(zp.map(Some))
                .collect(),
            vec![out_name],
        );
        let mut out = g.node(mm).outputs()[0];
        type_node(g, mm);
        if let Some(c) = bias {
            out = g.add_simple(yname.clone(), Op::Add, &[out, c]);
            let ty = g.value(y).ty.clone();
            g.set_type(out, ty);
        }
        t.retire(g, y, out, &yname);
        Ok(())
    }
}

/// Types a node's outputs by inference from its operands (left unknown on failure).
fn type_node(g: &mut Graph, n: NodeId) {
    let nd = g.node(n);
    let tys: Vec<Option<TensorType>> = nd
        .inputs()
        .iter()
        .map(|v| v.map(|v| g.value(v).ty.clone()))
        .collect();
    let consts: Vec<Option<Tensor>> = nd
        .inputs()
        .iter()
        .map(|v| v.and_then(|v| g.constant(v).cloned()))
        .collect();
    let outs = nd.outputs().to_vec();
    let r = pare_ir::infer::infer_node(
        &nd.op,
        &tys.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
        &consts.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
        outs.len(),
    );
    if let Ok(types) = r {
        for (v, t) in outs.into_iter().zip(types) {
            g.set_type(v, t);
        }
    }
}

/// The outliers of a layer (`frac` of its `n × k` weights, at least one when `frac > 0`): the
/// largest `|w_rj|·sqrt(H_jj)` — the weight times its input's root mean square on the
/// calibration data, the size of its contribution to the output (Wanda's score); `|w_rj|`
/// without `XᵀX`. These are the weights that stretch their groups' grids the most where it
/// matters; SpQR picks them by their rounding error under the inverse Hessian instead, which
/// needs the grid first. Returns the `n × k` mask.
fn outlier_mask(
    w: &[f64],
    n: usize,
    k: usize,
    groups: usize,
    hess: Option<&pare_analysis::Hessian>,
    frac: f64,
) -> Vec<bool> {
    let mg = n / groups.max(1);
    let score: Vec<f64> = (0..n * k)
        .map(|i| {
            let (r, j) = (i / k, i % k);
            let d = hess.map_or(1.0, |h| h.block(r / mg.max(1))[j * k + j].max(0.0));
            w[i].abs() * d.sqrt()
        })
        .collect();
    let count = ((frac * (n * k) as f64).round() as usize).clamp(1, n * k);
    let mut order: Vec<usize> = (0..n * k).collect();
    order.select_nth_unstable_by(count - 1, |&a, &b| score[b].total_cmp(&score[a]));
    let mut mask = vec![false; n * k];
    for &i in &order[..count] {
        mask[i] = true;
    }
    mask
}

/// Writes a layer's outliers over its dequantized weight `w` (stored layout):
/// `Reshape(ScatterND(Reshape(w, [-1]), Cast(indices, int64), values), shape)`, the flat
/// indices stored as int32 `[count, 1]` and the values as f32 (8 bytes per outlier, as
/// [`QuantMatrix::stored_bytes`] counts them). onnxruntime folds the chain into the weight
/// when it loads the model; pare's compiler folds it at compile time.
fn emit_outliers(
    g: &mut Graph,
    t: &Target,
    q: &QuantMatrix,
    w: ValueId,
    base: &str,
) -> Result<ValueId, String> {
    let (n, k) = (t.n, t.k);
    let mut pairs: Vec<(i32, f32)> = q
        .outliers
        .iter()
        .map(|&(i, v)| {
            let (r, j) = (i / k, i % k);
            let stored = match t.layout {
                Layout::Kn => j * n + r,
                Layout::Nk | Layout::Conv { .. } => i,
            };
            i32::try_from(stored)
                .map(|s| (s, v))
                .map_err(|_| format!("outlier index {stored} does not fit in int32"))
        })
        .collect::<Result<_, _>>()?;
    pairs.sort_unstable_by_key(|&(i, _)| i);
    let count = pairs.len();
    let idx = g.add_const(
        format!("{base}_outlier_indices"),
        Tensor::from_vec(vec![count, 1], pairs.iter().map(|&(i, _)| i).collect()),
    );
    let vals = g.add_const(
        format!("{base}_outlier_values"),
        Tensor::from_vec(vec![count], pairs.iter().map(|&(_, v)| v).collect()),
    );
    let idx64 = emit_cast(g, format!("{base}_outlier_indices_i64"), idx, DType::I64);
    let flat_shape = g.add_const(
        format!("{base}_flat_shape"),
        Tensor::from_vec(vec![1], vec![-1i64]),
    );
    let flat = g.add_simple(
        format!("{base}_flat"),
        Op::Reshape(Default::default()),
        &[w, flat_shape],
    );
    type_node_of(g, flat);
    let scattered = g.add_simple(
        format!("{base}_with_outliers_flat"),
        Op::ScatterNd(Default::default()),
        &[flat, idx64, vals],
    );
    type_node_of(g, scattered);
    let shape = g.add_const(
        format!("{base}_shape"),
        Tensor::from_vec(
            vec![t.shape.len()],
            t.shape.iter().map(|&d| d as i64).collect(),
        ),
    );
    let out = g.add_simple(
        format!("{base}_with_outliers"),
        Op::Reshape(Default::default()),
        &[scattered, shape],
    );
    set_f32(g, out, &t.shape);
    Ok(out)
}

fn concat_rows(parts: Vec<QuantMatrix>, n: usize, k: usize, s: &Scheme) -> QuantMatrix {
    let mut codes = Vec::with_capacity(n * k);
    let mut params = Vec::new();
    let mut outliers = Vec::new();
    for p in parts {
        let at = codes.len();
        outliers.extend(p.outliers.iter().map(|&(i, v)| (at + i, v)));
        codes.extend(p.codes);
        params.extend(p.params);
    }
    QuantMatrix {
        n,
        k,
        scheme: *s,
        codes,
        params,
        col_scale: None,
        outliers,
    }
}

fn group_text(s: &Scheme) -> String {
    if s.group == 0 {
        "per-channel".into()
    } else {
        format!("g{}", s.group)
    }
}

/// The activation mode resolved for one run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Resolved {
    WeightsOnly,
    Static(ActConfig),
    Dynamic,
}

/// A value's name, or a stand-in when it has none.
fn value_name(g: &Graph, v: ValueId, prefix: &str) -> String {
    let n = &g.value(v).name;
    if n.is_empty() {
        format!("{prefix}{}", v.index())
    } else {
        n.clone()
    }
}

/// A scalar constant of `dt` (u8 or i8 codes).
fn scalar_code(dt: DType, v: i32) -> Result<Tensor, String> {
    codes_tensor(dt, vec![], &[v])
}

/// The outputs of one shared `DynamicQuantizeLinear`: codes, scale, zero point.
#[derive(Clone, Copy)]
struct DynQuant {
    codes: ValueId,
    scale: ValueId,
    zero: ValueId,
}

/// Inserts `DynamicQuantizeLinear(x)` (typed), named after `x`.
fn dynamic_quantize(g: &mut Graph, x: ValueId, base: &str) -> DynQuant {
    let n = g.add_node(
        format!("{base}_DynamicQuantizeLinear"),
        Op::DynamicQuantizeLinear,
        vec![Some(x)],
        vec![
            format!("{base}_quantized"),
            format!("{base}_scale"),
            format!("{base}_zero_point"),
        ],
    );
    type_node(g, n);
    let o = g.node(n).outputs().to_vec();
    DynQuant {
        codes: o[0],
        scale: o[1],
        zero: o[2],
    }
}

impl Quantize {
    /// Replaces a MatMul (or a Gemm without transA) by onnxruntime's dynamic quantization
    /// pattern: `DynamicQuantizeLinear(A) → MatMulInteger(A_q, W_q, A_zp[, W_zp]) → Cast(f32)
    /// → Mul(A_scale · W_scale)` (then `+ beta·C` for a Gemm bias). `W_q` is stored `[K, N]`;
    /// the Gemm's `alpha` is folded into `W_scale`; AWQ's `1/s` becomes a `Mul` on `A` before
    /// the quantization. One `DynamicQuantizeLinear` per activation is shared through
    /// `shared`. Returns why not when the node does not qualify (nothing changed then).
    fn emit_dynamic(
        &self,
        g: &mut Graph,
        t: &Target,
        q: &QuantMatrix,
        shared: &mut HashMap<ValueId, DynQuant>,
    ) -> Result<(), String> {
        let nd = g.node(t.node).clone();
        let (alpha, bias) = match &nd.op {
            Op::MatMul => (1.0f32, None),
            Op::Gemm(a) => {
                if a.trans_a {
                    return Err("Gemm with transA".into());
                }
                (a.alpha, nd.input(2).map(|c| (c, a.beta)))
            }
            _ => return Err("not a MatMul or Gemm".into()),
        };
        if q.scheme.group != 0 || q.scheme.bits != 8 {
            return Err("the weight is not int8 per channel".into());
        }
        let (Some(a), Some(&y)) = (nd.input(0), nd.outputs().first()) else {
            return Err("missing operand".into());
        };
        if g.value(a).ty.dtype != Some(DType::F32) {
            return Err("the activation is not known to be f32".into());
        }
        let (n, k) = (q.n, q.k);
        let base = value_name(g, t.weight, "w");
        let yname = value_name(g, y, "y");
        let aq = match &q.col_scale {
            None => match shared.get(&a) {
                Some(d) => *d,
                None => {
                    let xname = value_name(g, a, "x");
                    let d = dynamic_quantize(g, a, &xname);
                    shared.insert(a, d);
                    d
                }
            },
            Some(cs) => {
                let c = g.add_const(
                    format!("{base}_awq_inv_scale"),
                    Tensor::from_vec(vec![k], cs.clone()),
                );
                let scaled = g.add_simple(format!("{base}_awq_input"), Op::Mul, &[a, c]);
                let ty = g.value(a).ty.clone();
                g.set_type(scaled, ty);
                dynamic_quantize(g, scaled, &format!("{base}_awq_input"))
            }
        };
        // Codes [K, N] from the math layout [N, K].
        let mut codes = vec![0i32; n * k];
        for nn in 0..n {
            for kk in 0..k {
                codes[kk * n + nn] = q.codes[nn * k + kk];
            }
        }
        let dt = q.scheme.dtype();
        let wq = g.add_const(
            format!("{base}_quantized"),
            codes_tensor(dt, vec![k, n], &codes)?,
        );
        let wz = if q.scheme.symmetric {
            None
        } else {
            let z: Vec<i32> = q.params.iter().map(|p| p.zero).collect();
            Some(g.add_const(format!("{base}_zero_point"), codes_tensor(dt, vec![n], &z)?))
        };
        let wscale = g.add_const(
            format!("{base}_scale"),
            Tensor::from_vec(
                vec![n],
                q.params
                    .iter()
                    .map(|p| p.scale * alpha)
                    .collect::<Vec<f32>>(),
            ),
        );
        let mm = g.add_node(
            format!("{yname}_MatMulInteger"),
            Op::MatMulInteger,
            [Some(aq.codes), Some(wq), Some(aq.zero)]
                .into_iter()
                .chain(wz.map(Some))
                .collect(),
            vec![format!("{yname}_int32")],
        );
        type_node(g, mm);
        let acc = g.node(mm).outputs()[0];
        let cast = emit_cast(g, format!("{yname}_int32_f32"), acc, DType::F32);
        let scale = g.add_simple(
            format!("{yname}_output_scale"),
            Op::Mul,
            &[aq.scale, wscale],
        );
        type_node_of(g, scale);
        let out_name = if bias.is_some() {
            format!("{yname}_matmul")
        } else {
            yname.clone()
        };
        let mut out = g.add_simple(out_name, Op::Mul, &[cast, scale]);
        type_node_of(g, out);
        if let Some((c, beta)) = bias {
            let c = if beta == 1.0 {
                c
            } else {
                let b = g.add_const(format!("{yname}_beta"), Tensor::scalar(beta));
                let cb = g.add_simple(format!("{yname}_bias"), Op::Mul, &[c, b]);
                type_node_of(g, cb);
                cb
            };
            out = g.add_simple(yname.clone(), Op::Add, &[out, c]);
            type_node_of(g, out);
        }
        let ty = g.value(y).ty.clone();
        if ty.dtype.is_some() {
            g.set_type(out, ty);
        }
        t.retire(g, y, out, &yname);
        Ok(())
    }
}

/// Types the node producing `v` by inference.
fn type_node_of(g: &mut Graph, v: ValueId) {
    if let Some(n) = g.producer(v) {
        type_node(g, n);
    }
}

/// A typed `Cast` of `v` to `to`, named `name`.
fn emit_cast(g: &mut Graph, name: String, v: ValueId, to: DType) -> ValueId {
    let c = g.add_simple(
        name,
        Op::Cast(CastAttrs {
            to,
            ..Default::default()
        }),
        &[v],
    );
    type_node_of(g, c);
    c
}

/// Inserts the static `QuantizeLinear → DequantizeLinear` of activation `x` with `grid` and
/// returns the dequantized value.
fn emit_act_qdq(g: &mut Graph, x: ValueId, grid: &ActGrid) -> Result<ValueId, String> {
    let base = value_name(g, x, "x");
    let dt = if grid.symmetric { DType::I8 } else { DType::U8 };
    let scale = g.add_const(format!("{base}_scale"), Tensor::scalar(grid.scale));
    let zero = g.add_const(format!("{base}_zero_point"), scalar_code(dt, grid.zero)?);
    Ok(emit_qdq_pair(g, x, &base, [scale, zero], 1))
}

/// `DequantizeLinear(QuantizeLinear(x, scale, zero), scale, zero)` along `axis` (which only
/// matters for 1-D parameters), named after `base`; returns the dequantized value.
fn emit_qdq_pair(
    g: &mut Graph,
    x: ValueId,
    base: &str,
    [scale, zero]: [ValueId; 2],
    axis: i64,
) -> ValueId {
    let qn = g.add_node(
        format!("{base}_QuantizeLinear"),
        Op::QuantizeLinear(QuantizeAttrs {
            axis,
            ..Default::default()
        }),
        vec![Some(x), Some(scale), Some(zero)],
        vec![format!("{base}_quantized")],
    );
    type_node(g, qn);
    let qv = g.node(qn).outputs()[0];
    let dn = g.add_node(
        format!("{base}_DequantizeLinear"),
        Op::DequantizeLinear(DequantizeAttrs {
            axis,
            ..Default::default()
        }),
        vec![Some(qv), Some(scale), Some(zero)],
        vec![format!("{base}_dequantized")],
    );
    type_node(g, dn);
    g.node(dn).outputs()[0]
}

/// Per-channel grids of activation `x` read by `nodes` (convolutions only): the channel axis
/// is the input-channel axis the readers share (1), each channel's calibrated
/// min/max clipped to the tensor's range `(lo, hi)` (so a percentile rule still trims rare
/// extremes), one [`ActGrid`] per channel. Errs (with why) when the readers disagree on the
/// axis or the calibration recorded no per-channel range.
fn channel_grids(
    g: &Graph,
    stats: &CalibStats,
    x: ValueId,
    nodes: &[NodeId],
    (lo, hi): (f32, f32),
    symmetric: bool,
) -> Result<(usize, Vec<ActGrid>), String> {
    let mut axis = None;
    for &n in nodes {
        if !matches!(g.node(n).op, Op::Conv(_)) {
            // onnxruntime fuses a MatMul's QDQ input into MatMulIntegerToFloat, which refuses
            // per-channel activation parameters: the model would not run there.
            return Err(format!(
                "'{}' is a {}: per-channel activations are for convolutions (onnxruntime's \
                 fused int8 MatMul has no per-channel activation parameters)",
                label(g, n),
                g.node(n).op.name()
            ));
        }
        let a = pare_analysis::calib::channel_inputs(g, n)
            .into_iter()
            .find(|&(v, _)| v == x)
            .map(|(_, a)| a)
            .ok_or_else(|| format!("'{}' has no channel axis for it", label(g, n)))?;
        if axis.is_some_and(|b| b != a) {
            return Err("its readers reduce different axes".into());
        }
        axis = Some(a);
    }
    let axis = axis.ok_or("no reader")?;
    let cr = stats
        .channel_range(x, axis)
        .ok_or_else(|| format!("the calibration recorded no range per channel on axis {axis}"))?;
    let grids = cr
        .min
        .iter()
        .zip(&cr.max)
        .map(|(&cmin, &cmax)| {
            if cmin > cmax {
                // No finite value seen in this channel: the tensor's grid.
                ActGrid::fit(lo, hi, symmetric)
            } else {
                ActGrid::fit(cmin.max(lo), cmax.min(hi), symmetric)
            }
        })
        .collect();
    Ok((axis, grids))
}

/// [`emit_act_qdq`] with one grid per channel along `axis` (`QuantizeLinear` and
/// `DequantizeLinear` with 1-D scale and zero point, opset 13 per-axis form).
fn emit_act_qdq_channels(
    g: &mut Graph,
    x: ValueId,
    axis: usize,
    grids: &[ActGrid],
) -> Result<ValueId, String> {
    let base = value_name(g, x, "x");
    let symmetric = grids.first().is_some_and(|g| g.symmetric);
    let dt = if symmetric { DType::I8 } else { DType::U8 };
    let c = grids.len();
    let scale = g.add_const(
        format!("{base}_scale"),
        Tensor::from_vec(vec![c], grids.iter().map(|g| g.scale).collect()),
    );
    let zeros: Vec<i32> = grids.iter().map(|g| g.zero).collect();
    let zero = g.add_const(
        format!("{base}_zero_point"),
        codes_tensor(dt, vec![c], &zeros)?,
    );
    Ok(emit_qdq_pair(g, x, &base, [scale, zero], axis as i64))
}

impl Pass for Quantize {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let cfg = self.cfg.clone();
        let mode = match cfg.activations {
            None => Resolved::WeightsOnly,
            Some(a) => match (a.mode, cx.samples().is_some()) {
                (ActMode::Dynamic, _) | (ActMode::Auto, false) => Resolved::Dynamic,
                (ActMode::Static | ActMode::Auto, _) => Resolved::Static(a),
            },
        };
        if matches!(cfg.activations, Some(a) if a.per_channel) && mode == Resolved::Dynamic {
            return Err(PassError::Options {
                pass: NAME.into(),
                message: "act-per-channel=true needs static activations: give calibration \
                          samples with --calib"
                    .into(),
            });
        }
        let stats: Option<Arc<CalibStats>> = match (cfg.method, mode) {
            (Method::Rtn, Resolved::WeightsOnly | Resolved::Dynamic) => cx.cached::<CalibStats>(),
            (m, _) => {
                // XᵀX of every layer (GPTQ, AWQ) and activation ranges (static) come from
                // running the calibration samples.
                let who = if matches!(mode, Resolved::Static(_)) {
                    "quantize(activations=static)".to_string()
                } else {
                    format!("quantize(method={})", m.name())
                };
                cx.require_samples(&who)?;
                Some(cx.analysis::<CalibStats>(g)?)
            }
        };
        // Shapes help the MatMulNBits rank check; failures leave types as they are.
        let _ = pare_ir::infer::infer_types(g);
        // max-error: the dense graph is the reference and where restored weights come from.
        let dense = cfg.max_error.map(|_| g.clone());
        let order = g
            .topo_order()
            .map_err(|e| PassError::failed(NAME, e.to_string()))?;
        // calibrate=auto: choose every activation's range before the weights change.
        let choices = match (mode, &stats) {
            (Resolved::Static(a), Some(st)) if a.calibrate.is_none() => {
                let mut by_x: Vec<(ValueId, Vec<NodeId>)> = Vec::new();
                for &n in &order {
                    if !g.node(n).op.subgraphs().is_empty() {
                        continue;
                    }
                    if let (Ok(Some(_)), Some(x)) =
                        (target(g, n, cfg.min_elements), g.node(n).input(0))
                    {
                        match by_x.iter_mut().find(|(v, _)| *v == x) {
                            Some((_, ns)) => ns.push(n),
                            None => by_x.push((x, vec![n])),
                        }
                    }
                }
                let samples = cx.require_samples("quantize(calibrate=auto)")?;
                let interp = cx.interpreter();
                search::search(g, st, &samples, &by_x, a.symmetric, &interp)?
            }
            _ => HashMap::new(),
        };
        let mut report = PassReport::unchanged();
        // budget-bits: every layer's level (and its quantized weight) chosen up front.
        let mut plan = match cfg.budget {
            Some(b) => Some(self.plan_budget(g, cx, stats.as_deref(), &order, &b, &mut report)?),
            None => None,
        };
        let mut quantized = 0u64;
        let mut in_subgraphs = 0usize;
        // Static: the quantized nodes whose activation (operand 0) gets Q/DQ, in order.
        let mut act_readers: Vec<(ValueId, NodeId)> = Vec::new();
        let mut dyn_shared: HashMap<ValueId, DynQuant> = HashMap::new();
        let mut dynamic_layers = 0u64;
        // Per quantized layer: its stats, and what max-error needs to restore it (QDQ only).
        let mut layers: Vec<(Option<Restorable>, [u64; 3])> = Vec::new();
        let pb = cx.progress_bar(order.len() as u64, "quantizing");
        for node in order {
            pb.inc(1);
            if !g.node(node).op.subgraphs().is_empty() {
                in_subgraphs += 1;
                continue;
            }
            let t = match target(g, node, cfg.min_elements) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(why) => {
                    report.add_stat("layers-skipped", 1);
                    report.note(format!("skipped '{}': {why}", label(g, node)));
                    continue;
                }
            };
            let name = label(g, node);
            let op = g.node(node).op.name().to_string();
            let shared = g.uses(t.weight).len() > 1;
            let planned = plan.as_mut().and_then(|p| p.remove(&node));
            let done = match planned {
                Some(Some(d)) => d,
                Some(None) => {
                    report.add_stat("layers-kept-f32", 1);
                    report.note(format!(
                        "'{name}' ({op}, N={} K={}): kept f32 by budget-bits",
                        t.n, t.k
                    ));
                    continue;
                }
                None => self
                    .quantize(&t, stats.as_deref())
                    .map_err(|m| PassError::at_node(NAME, g, node, m))?,
            };
            let mut detail = done.detail;
            let mut format = "qdq";
            let restorable = Restorable {
                node,
                name: name.clone(),
                x: g.node(node).input(0),
                w: t.weight,
            };
            let linear = matches!(t.layout, Layout::Kn | Layout::Nk);
            if cfg.format == Format::MatMulNBits && linear {
                match self.emit_nbits(g, &t, &done.q) {
                    Ok(()) => format = "matmulnbits",
                    Err(why) => {
                        detail.push_str(&format!("qdq instead of MatMulNBits: {why}; "));
                        self.emit_qdq(g, &t, &done.q)
                            .map_err(|m| PassError::at_node(NAME, g, node, m))?;
                    }
                }
            } else if mode == Resolved::Dynamic && linear {
                match self.emit_dynamic(g, &t, &done.q, &mut dyn_shared) {
                    Ok(()) => {
                        format = "dynamic int8 (DynamicQuantizeLinear, MatMulInteger)";
                        dynamic_layers += 1;
                    }
                    Err(why) => {
                        detail.push_str(&format!(
                            "weights only: no dynamic activation quantization ({why}); "
                        ));
                        self.emit_qdq(g, &t, &done.q)
                            .map_err(|m| PassError::at_node(NAME, g, node, m))?;
                    }
                }
            } else {
                self.emit_qdq(g, &t, &done.q)
                    .map_err(|m| PassError::at_node(NAME, g, node, m))?;
                match mode {
                    Resolved::Static(_) => {
                        if let Some(x) = g.node(node).input(0) {
                            act_readers.push((x, node));
                        }
                    }
                    Resolved::Dynamic => detail.push_str(
                        "weights only: dynamic activation quantization covers MatMul/Gemm; ",
                    ),
                    Resolved::WeightsOnly => {}
                }
            }
            if shared {
                detail.push_str("the f32 weight stays for its other readers; ");
            }
            let before = 4 * t.n * t.k;
            let after = done.q.stored_bytes();
            layers.push((
                (format == "qdq").then_some(restorable),
                [before as u64, after as u64, (t.n * t.k) as u64],
            ));
            let wrel = rel_error(&done.q.dequantize(), &t.w);
            let s = done.q.scheme;
            let mut line = format!(
                "'{name}' ({op}, N={} K={}): {} int{} {} {} as {format}; weight bytes {before} → \
                 {after}; ‖ΔW‖/‖W‖ = {wrel:.3e}",
                t.n,
                t.k,
                cfg.method.name(),
                s.bits,
                group_text(&s),
                if s.symmetric { "sym" } else { "asym" },
            );
            if let Some((e, r)) = done.out_err {
                line.push_str(&format!(
                    "; output error ‖XΔWᵀ‖/‖XWᵀ‖ = {e:.3e} (rtn {r:.3e})"
                ));
            }
            if !detail.is_empty() {
                line.push_str(&format!(" [{}]", detail.trim_end_matches("; ")));
            }
            report.note(line);
        }
        pb.finish_and_clear();
        let mut activations = 0u64;
        if let Resolved::Static(a) = mode {
            let stats = stats.as_deref().ok_or_else(|| {
                PassError::failed(NAME, "static quantization without calibration statistics")
            })?;
            activations =
                self.quantize_activations(g, stats, &a, &act_readers, &choices, &mut report)?;
        } else if mode == Resolved::Dynamic {
            activations = dyn_shared.len() as u64;
            if dynamic_layers > 0 {
                report.note(format!(
                    "dynamic int8: {dynamic_layers} MatMul/Gemm layers quantize their activation \
                     at run time ({activations} shared DynamicQuantizeLinear{}); no --calib was \
                     given, so activations are not statically quantized",
                    if dyn_shared.len() < dynamic_layers as usize {
                        ", plus one per AWQ-scaled input"
                    } else {
                        ""
                    }
                ));
                report.add_stat("layers-dynamic", dynamic_layers);
            }
        }
        let mut restored: Vec<NodeId> = Vec::new();
        if let (Some((bound, samples)), Some(dense)) = (cfg.max_error, dense.as_ref()) {
            let cands: Vec<&Restorable> = layers.iter().filter_map(|(r, _)| r.as_ref()).collect();
            let before = count_act_qdq(g);
            restored = self.control(g, dense, cx, &cands, bound, samples, &mut report)?;
            activations = activations.saturating_sub((before - count_act_qdq(g)) as u64);
        }
        for (r, [before, after, params]) in &layers {
            if r.as_ref().is_some_and(|r| restored.contains(&r.node)) {
                report.add_stat("layers-kept-f32", 1);
                continue;
            }
            report.add_stat("layers-quantized", 1);
            report.add_stat("weight-bytes-before", *before);
            report.add_stat("weight-bytes-after", *after);
            report.add_stat("params-quantized", *params);
            quantized += 1;
        }
        if activations > 0 {
            report.add_stat("activations-quantized", activations);
        }
        if in_subgraphs > 0 {
            report.note(format!(
                "{in_subgraphs} If/Loop/Scan nodes: weights inside their bodies are not quantized"
            ));
        }
        if quantized > 0 {
            report.changed = true;
            report.preserved = pare_pass::Preserved::none();
            let (b, a) = (
                report
                    .stats
                    .get("weight-bytes-before")
                    .copied()
                    .unwrap_or(0),
                report.stats.get("weight-bytes-after").copied().unwrap_or(0),
            );
            report.note(format!(
                "{quantized} layers quantized ({}): weight bytes {b} → {a} ({:.2}×)",
                cfg.method.name(),
                b as f64 / a.max(1) as f64
            ));
        }
        Ok(report)
    }
}

impl Quantize {
    /// Static activation quantization: one `QuantizeLinear → DequantizeLinear` per activation
    /// value read by a quantized node (shared by all its quantized readers), with the grid
    /// fitted to the calibration statistics. Returns the number of activations quantized.
    fn quantize_activations(
        &self,
        g: &mut Graph,
        stats: &CalibStats,
        a: &ActConfig,
        readers: &[(ValueId, NodeId)],
        choices: &HashMap<ValueId, search::Choice>,
        report: &mut PassReport,
    ) -> Result<u64, PassError> {
        let mut order: Vec<ValueId> = Vec::new();
        let mut by_value: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
        for &(x, n) in readers {
            by_value
                .entry(x)
                .or_insert_with(|| {
                    order.push(x);
                    Vec::new()
                })
                .push(n);
        }
        let mut count = 0u64;
        for x in order {
            let Some(nodes) = by_value.get(&x) else {
                continue;
            };
            let xname = value_name(g, x, "x");
            if g.value(x).ty.dtype != Some(DType::F32) {
                report.note(format!(
                    "activation '{xname}' stays f32: it is not known to be f32"
                ));
                continue;
            }
            if matches!(
                g.producer(x).map(|p| &g.node(p).op),
                Some(Op::DequantizeLinear(_))
            ) {
                report.note(format!(
                    "activation '{xname}' is already dequantized; left as it is"
                ));
                continue;
            }
            let Some(st) = stats.stats(x) else {
                report.note(format!(
                    "activation '{xname}' stays f32: the calibration saw no value for it"
                ));
                continue;
            };
            if st.nonfinite > 0 {
                report.note(format!(
                    "activation '{xname}': {} non-finite calibration values ignored",
                    st.nonfinite
                ));
            }
            let (rule, range, why) = match (a.calibrate, choices.get(&x)) {
                (Some(rule), _) => (rule, select_range(st, rule, a.symmetric), String::new()),
                (None, Some(c)) => (
                    c.rule,
                    Some(c.range),
                    format!(
                        ", auto: readers' relative output error {:.3e} (minmax {:.3e})",
                        c.score, c.minmax_score
                    ),
                ),
                (None, None) => (
                    Calibrate::MinMax,
                    select_range(st, Calibrate::MinMax, a.symmetric),
                    ", auto: not searched".to_string(),
                ),
            };
            let Some((lo, hi)) = range else {
                report.note(format!(
                    "activation '{xname}' stays f32: no finite calibration value"
                ));
                continue;
            };
            let grid = ActGrid::fit(lo, hi, a.symmetric);
            let channels = if a.per_channel {
                match channel_grids(g, stats, x, nodes, (lo, hi), a.symmetric) {
                    Ok(c) => Some(c),
                    Err(why) => {
                        report.note(format!("activation '{xname}': per tensor, {why}"));
                        None
                    }
                }
            } else {
                None
            };
            let dq = match &channels {
                Some((axis, grids)) => emit_act_qdq_channels(g, x, *axis, grids),
                None => emit_act_qdq(g, x, &grid),
            }
            .map_err(|m| PassError::failed(NAME, m))?;
            for &n in nodes {
                g.set_operand(n, 0, Some(dq));
            }
            if let Some((axis, grids)) = &channels {
                let (smin, smax) = grids.iter().fold((f32::INFINITY, 0f32), |(a, b), g| {
                    (a.min(g.scale), b.max(g.scale))
                });
                report.note(format!(
                    "activation '{xname}' ({} reader{}): {} per channel (axis {axis}, {} \
                     channels), scales {smin:.4e} … {smax:.4e}; channel min/max clipped to \
                     the tensor's {} range [{lo:.4}, {hi:.4}]",
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" },
                    if a.symmetric {
                        "int8 sym"
                    } else {
                        "uint8 asym"
                    },
                    grids.len(),
                    rule.name(),
                ));
                count += 1;
                continue;
            }
            let (rlo, rhi) = grid.representable();
            report.note(format!(
                "activation '{xname}' ({} reader{}): {} {} scale {:.4e} zero point {}, \
                 range [{rlo:.4}, {rhi:.4}] ({}; observed [{:.4}, {:.4}]{why})",
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                if a.symmetric { "int8" } else { "uint8" },
                if a.symmetric { "sym" } else { "asym" },
                grid.scale,
                grid.zero,
                rule.name(),
                st.min,
                st.max,
            ));
            count += 1;
        }
        if count > 0 {
            report.note(format!(
                "static int8: {count} activations quantized ({}, {}) from {} calibration \
                 samples",
                a.calibrate.map_or("auto".into(), |c| c.name()),
                if a.symmetric {
                    "int8 symmetric"
                } else {
                    "uint8 asymmetric"
                },
                stats.num_samples
            ));
        }
        Ok(count)
    }
}

/// The samples that score end-to-end errors (`budget-bits`, `max-error`): the first `n` of the
/// calibration samples (all when `n` is 0), or without `--calib` `n` generated inputs (4 when
/// 0); with a phrase naming them for the report.
fn score_inputs(
    g: &Graph,
    cx: &PassContext,
    n: usize,
) -> Result<(Vec<Vec<Tensor>>, String), String> {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    match cx.samples() {
        Some(set) if !set.is_empty() => {
            let n = if n == 0 { set.len() } else { n.min(set.len()) };
            let xs = set.samples[..n].iter().map(|s| s.inputs.clone()).collect();
            Ok((xs, format!("{n} calibration sample{}", plural(n))))
        }
        _ => {
            let n = if n == 0 { 4 } else { n };
            let xs =
                mixed::generated_inputs(g, n, cx.seed() ^ 0x6d69_7865_6462_6974).map_err(|m| {
                    format!("cannot generate inputs ({m}); give calibration samples with --calib")
                })?;
            Ok((xs, format!("{n} generated input{} (no --calib)", plural(n))))
        }
    }
}

/// A QDQ-quantized layer that `max-error` may restore: the node, its original activation
/// operand and its original f32 weight (a tombstone in the quantized graph unless shared).
struct Restorable {
    node: NodeId,
    name: String,
    x: Option<ValueId>,
    w: ValueId,
}

/// Activation `QuantizeLinear` nodes in `g` (weights are stored as codes, not quantized).
fn count_act_qdq(g: &Graph) -> usize {
    g.node_ids()
        .filter(|&n| matches!(g.node(n).op, Op::QuantizeLinear(_)))
        .count()
}

/// Removes the node producing `v` if nothing reads `v` any more, then likewise its inputs
/// (constants included), so that a restored layer's DequantizeLinear / QuantizeLinear chain
/// (and AWQ's Mul) goes away without touching anything still read.
fn remove_dead_chain(g: &mut Graph, v: ValueId) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        if !g.uses(v).is_empty() {
            continue;
        }
        if g.constant(v).is_some() {
            g.remove_const(v);
            continue;
        }
        let Some(p) = g.producer(v) else {
            continue;
        };
        if g.node(p).outputs().iter().any(|&o| !g.uses(o).is_empty()) {
            continue;
        }
        let inputs: Vec<ValueId> = g.node(p).inputs().iter().flatten().copied().collect();
        g.remove_node(p);
        stack.extend(inputs);
    }
}

/// Puts layer `l` of the quantized `g` back on its f32 weight (from `dense` when the
/// quantization removed it) and its unquantized activation, and removes what fed the
/// quantized operands.
fn restore(g: &mut Graph, dense: &Graph, l: &Restorable) -> Result<(), String> {
    let old = [g.node(l.node).input(1), g.node(l.node).input(0)];
    let w = if g.constant(l.w).is_some() {
        l.w
    } else {
        let t = dense
            .constant(l.w)
            .ok_or_else(|| format!("'{}': its f32 weight is not a constant", l.name))?;
        g.add_const(dense.value(l.w).name.clone(), t.clone())
    };
    g.set_operand(l.node, 1, Some(w));
    if l.x.is_some() {
        g.set_operand(l.node, 0, l.x);
    }
    for v in old.into_iter().flatten() {
        if Some(v) != l.x && v != w {
            remove_dead_chain(g, v);
        }
    }
    Ok(())
}

impl Quantize {
    /// Accuracy control (`max-error=E`, after NNCF's accuracy-aware quantization): measures the
    /// end-to-end relative L2 error `‖y − ŷ‖/‖y‖` of the quantized model's float outputs on the
    /// scoring samples; while it exceeds `E`, restores QDQ layers to f32 (weight and activation)
    /// in the order of the error each alone leaves when restored (smallest first), keeping a
    /// restoration only if it lowers the error. Returns the restored nodes. Costs `1 + layers +
    /// restorations tried` interpreter runs per sample. Without a layer to restore, or when
    /// every restoration is spent, the result is reported with its error, not refused.
    #[allow(clippy::too_many_arguments)]
    fn control(
        &self,
        g: &mut Graph,
        dense: &Graph,
        cx: &PassContext,
        layers: &[&Restorable],
        bound: f64,
        samples: usize,
        report: &mut PassReport,
    ) -> Result<Vec<NodeId>, PassError> {
        let fail = |m: String| PassError::failed(NAME, format!("max-error: {m}"));
        let interp = cx.interpreter();
        let (inputs, source) = score_inputs(dense, cx, samples).map_err(fail)?;
        let reference: Vec<Vec<Vec<f64>>> = inputs
            .iter()
            .map(|x| interp.run(dense, x).map(|o| mixed::float_outputs(&o)))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("the dense model on the samples: {e}")))?;
        let err = |h: &Graph| {
            mixed::output_error(&interp, h, &inputs, &reference)
                .map(|e| e.max(0.0).sqrt())
                .map_err(fail)
        };
        let start = err(g)?;
        if start <= bound {
            report.note(format!(
                "max-error={bound}: the quantized model's relative error on {source} is \
                 {start:.3e}, within the bound; no layer restored"
            ));
            return Ok(Vec::new());
        }
        let pb = cx.progress_bar(layers.len() as u64, "max-error");
        let mut alone: Vec<(usize, f64)> = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            pb.inc(1);
            let mut h = g.clone();
            restore(&mut h, dense, l).map_err(fail)?;
            alone.push((i, err(&h)?));
        }
        pb.finish_and_clear();
        alone.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut current = start;
        let mut restored = Vec::new();
        let mut tried = 0usize;
        for &(i, e_alone) in &alone {
            if current <= bound {
                break;
            }
            tried += 1;
            let mut h = g.clone();
            restore(&mut h, dense, layers[i]).map_err(fail)?;
            let e = err(&h)?;
            if e < current {
                *g = h;
                report.note(format!(
                    "max-error: '{}' restored to f32: error {current:.3e} → {e:.3e} (alone \
                     {e_alone:.3e})",
                    layers[i].name
                ));
                current = e;
                restored.push(layers[i].node);
            }
        }
        let met = if current <= bound {
            "within the bound"
        } else {
            "still above the bound: every layer that lowered it is restored"
        };
        report.note(format!(
            "max-error={bound}: relative error on {source} {start:.3e} → {current:.3e} ({met}); \
             {} of {} quantized layers restored to f32 ({tried} tried, {} scored alone)",
            restored.len(),
            layers.len(),
            alone.len(),
        ));
        Ok(restored)
    }
}

/// One layer of a `budget-bits` plan: the weight at each quantized level.
struct Candidate {
    node: NodeId,
    name: String,
    op: String,
    n: usize,
    k: usize,
    /// int4 (groups) and int8 (per channel): the quantized weight and its dequantized copy
    /// in the stored layout (what the graph computes).
    levels: Vec<(Done, Tensor)>,
}

/// The dequantized weight of `q` in `t`'s stored layout, as f32 (as DequantizeLinear gives it).
fn stored_dequantized(t: &Target, q: &QuantMatrix) -> Tensor {
    let d = q.dequantize();
    let (n, k) = (t.n, t.k);
    let v: Vec<f32> = match t.layout {
        Layout::Kn => {
            let mut v = vec![0f32; n * k];
            for nn in 0..n {
                for kk in 0..k {
                    v[kk * n + nn] = d[nn * k + kk] as f32;
                }
            }
            v
        }
        _ => d.iter().map(|&x| x as f32).collect(),
    };
    Tensor::from_vec(t.shape.clone(), v)
}

/// Names a level of a `budget-bits` plan.
fn level_text(s: Option<&Scheme>) -> String {
    match s {
        Some(s) => format!("int{} {}", s.bits, group_text(s)),
        None => "f32".into(),
    }
}

impl Quantize {
    /// `budget-bits`: measures every layer's end-to-end sensitivity at int4 and int8, allocates
    /// levels under the budget ([`mixed::greedy`], then [`mixed::evolve`]) and returns, per
    /// layer, its quantized weight (`None`: kept f32). Notes go to `report`.
    fn plan_budget(
        &self,
        g: &Graph,
        cx: &PassContext,
        stats: Option<&CalibStats>,
        order: &[NodeId],
        b: &Budget,
        report: &mut PassReport,
    ) -> Result<HashMap<NodeId, Option<Done>>, PassError> {
        let fail = |m: String| PassError::failed(NAME, format!("budget-bits: {m}"));
        let low = self.cfg.scheme;
        let high = Scheme {
            bits: 8,
            // MatMulNBits has no per-channel form: int8 uses the same blocks there.
            group: if self.cfg.format == Format::MatMulNBits {
                low.group
            } else {
                0
            },
            symmetric: low.symmetric,
        };
        let mut cands: Vec<Candidate> = Vec::new();
        for &node in order {
            if !g.node(node).op.subgraphs().is_empty() {
                continue;
            }
            let Ok(Some(t)) = target(g, node, self.cfg.min_elements) else {
                continue;
            };
            let mut levels = Vec::with_capacity(2);
            for s in [low, high] {
                let d = self
                    .quantize_with(&t, stats, s)
                    .map_err(|m| PassError::at_node(NAME, g, node, m))?;
                let w = stored_dequantized(&t, &d.q);
                levels.push((d, w));
            }
            cands.push(Candidate {
                node,
                name: label(g, node),
                op: g.node(node).op.name().to_string(),
                n: t.n,
                k: t.k,
                levels,
            });
        }
        if cands.is_empty() {
            return Ok(HashMap::new());
        }
        // Sizes; the budget.
        let elements: usize = cands.iter().map(|c| c.n * c.k).sum();
        let budget = b.bits * elements as f64;
        let sizes: Vec<[f64; 3]> = cands
            .iter()
            .map(|c| {
                [
                    8.0 * c.levels[0].0.q.stored_bytes() as f64,
                    8.0 * c.levels[1].0.q.stored_bytes() as f64,
                    32.0 * (c.n * c.k) as f64,
                ]
            })
            .collect();
        let least: f64 = sizes.iter().map(|s| s[0]).sum();
        if least > budget {
            return Err(opt_err(format!(
                "budget-bits={} is below {:.4}, the average bits per weight with every layer at \
                 int4 {} (codes{} and f32 scales of {} weights in {} layers); raise budget-bits \
                 or group",
                b.bits,
                least / elements as f64,
                group_text(&low),
                if low.symmetric { "" } else { ", zero points" },
                elements,
                cands.len()
            )));
        }
        // Samples and the dense reference.
        let interp = cx.interpreter();
        let (inputs, source) = score_inputs(g, cx, b.samples).map_err(fail)?;
        let reference: Vec<Vec<Vec<f64>>> = inputs
            .iter()
            .map(|x| interp.run(g, x).map(|o| mixed::float_outputs(&o)))
            .collect::<Result<_, _>>()
            .map_err(|e| fail(format!("the dense model on the samples: {e}")))?;
        let total_runs = 2 * cands.len() + 2 + b.generations * b.offspring;
        let pb = cx.progress_bar(total_runs as u64, "budget-bits");
        // Squared relative end-to-end error with layer i at level choice[i] (2 = f32).
        let mut scored = 0usize;
        let mut eval = |choice: &[usize]| -> Result<f64, PassError> {
            pb.inc(1);
            scored += 1;
            let mut cg = g.clone();
            for (i, c) in cands.iter().enumerate() {
                if let Some((_, w)) = c.levels.get(choice[i]) {
                    let v = cg.add_const(format!("budget_probe_{i}"), w.clone());
                    cg.set_operand(c.node, 1, Some(v));
                }
            }
            mixed::output_error(&interp, &cg, &inputs, &reference).map_err(fail)
        };
        // Sensitivities: one layer at a time.
        let mut levels: Vec<Vec<mixed::Level>> = Vec::with_capacity(cands.len());
        for i in 0..cands.len() {
            let mut ls = Vec::with_capacity(3);
            for (l, &bits) in sizes[i].iter().enumerate() {
                let err = if l < 2 {
                    let mut choice = vec![2usize; cands.len()];
                    choice[i] = l;
                    eval(&choice)?
                } else {
                    0.0
                };
                ls.push(mixed::Level { bits, err });
            }
            levels.push(ls);
        }
        let start = mixed::greedy(&levels, budget).map_err(|least| {
            fail(format!(
                "the cheapest allocation needs {least} bits, over the budget of {budget}"
            ))
        })?;
        // The refinement starts from the better of the greedy allocation and all int4 (the
        // greedy trusts additive errors, which saturating outputs break), so the result is
        // never worse than either on the samples.
        let all_low = eval(&vec![0usize; cands.len()])?;
        let greedy_err = eval(&start)?;
        let (start, start_err) = if all_low < greedy_err {
            (vec![0usize; cands.len()], all_low)
        } else {
            (start, greedy_err)
        };
        let found = mixed::evolve(
            &levels,
            start,
            start_err,
            budget,
            mixed::Settings {
                generations: if b.offspring == 0 { 0 } else { b.generations },
                offspring: b.offspring,
                seed: cx.seed() ^ 0x0b17_b0d6_e7b1_75ee,
            },
            &mut eval,
        )?;
        pb.finish_and_clear();
        let choice = found.choice;
        let achieved = mixed::total_bits(&levels, &choice);
        let rel = |e: f64| e.max(0.0).sqrt();
        let mut counts = [0usize; 3];
        for (i, c) in cands.iter().enumerate() {
            let l = choice[i];
            counts[l.min(2)] += 1;
            report.note(format!(
                "budget-bits: '{}' ({}, N={} K={}): sensitivity (end-to-end relative error, \
                 only this layer quantized) int4 {:.3e}, int8 {:.3e} → {} ({:.3} bits per weight)",
                c.name,
                c.op,
                c.n,
                c.k,
                rel(levels[i][0].err),
                rel(levels[i][1].err),
                level_text(c.levels.get(l).map(|(d, _)| &d.q.scheme)),
                levels[i][l.min(2)].bits / (c.n * c.k) as f64,
            ));
        }
        report.note(format!(
            "budget-bits={}: {} layers → {} int4 {}{}, {} int8 {}, {} f32; average {:.4} bits \
             per weight over {} weights ({} bytes); end-to-end relative error on {source}: \
             {:.3e} (greedy allocation {:.3e}, every layer int4 {:.3e}; {} allocations scored)",
            b.bits,
            cands.len(),
            counts[0],
            group_text(&low),
            if cands.iter().any(|c| c.op == "Conv") {
                " (convolutions per channel)"
            } else {
                ""
            },
            counts[1],
            group_text(&high),
            counts[2],
            achieved / elements as f64,
            elements,
            (achieved / 8.0).ceil() as u64,
            rel(found.fitness),
            rel(greedy_err),
            rel(all_low),
            scored,
        ));
        report.add_stat("layers-int4", counts[0] as u64);
        report.add_stat("layers-int8", counts[1] as u64);
        let mut plan = HashMap::with_capacity(cands.len());
        for (c, l) in cands.into_iter().zip(choice) {
            let mut levels = c.levels;
            let done = if l < levels.len() {
                let (mut d, _) = levels.swap_remove(l);
                d.detail.insert_str(0, "chosen by budget-bits; ");
                Some(d)
            } else {
                None
            };
            plan.insert(c.node, done);
        }
        Ok(plan)
    }
}
