//! The `quantize` pass: finds the weights, quantizes them with the chosen method and rewrites
//! the graph in the chosen format. See the crate documentation for what it guarantees.

use crate::awq::{activation_rms, awq, GRID};
use crate::error::QuantError;
use crate::gptq::{gptq, h_error};
use crate::nbits;
use crate::scheme::{rel_error, rtn, QuantMatrix, Scheme};
use pare_analysis::CalibStats;
use pare_ir::op::DequantizeAttrs;
use pare_ir::{DType, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
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
    /// Only weights (the only mode implemented so far).
    pub weights_only: bool,
    /// GPTQ dampening, as a fraction of the mean diagonal of XᵀX.
    pub damp: f64,
    /// `qdq` (DequantizeLinear) or `matmulnbits` (com.microsoft MatMulNBits for MatMul/Gemm).
    pub format: String,
    /// Weights with fewer elements are left in f32.
    pub min_elements: i64,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            bits: 8,
            group: None,
            method: "rtn".into(),
            symmetric: true,
            weights_only: true,
            damp: 0.01,
            format: "qdq".into(),
            min_elements: 1024,
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
}

fn opt_err(message: impl Into<String>) -> PassError {
    PassError::Options {
        pass: NAME.into(),
        message: message.into(),
    }
}

impl QuantizeOptions {
    /// Checks the options.
    pub fn config(&self) -> Result<Config, PassError> {
        if !self.weights_only {
            return Err(opt_err(
                "weights-only=false asks for static/dynamic activation quantization, which is \
                 not implemented yet; use weights-only=true (weight-only quantization)",
            ));
        }
        let bits = match self.bits {
            4 | 8 => self.bits as u32,
            b => return Err(opt_err(format!("bits must be 8 or 4, not {b}"))),
        };
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
        Ok(Config {
            scheme: Scheme {
                bits,
                group,
                symmetric: self.symmetric,
            },
            method,
            format,
            damp: self.damp,
            min_elements: usize::try_from(self.min_elements.max(0)).unwrap_or(0),
        })
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
    /// Quantizes a target's weight with the configured method.
    fn quantize(&self, t: &Target, stats: Option<&CalibStats>) -> Result<Done, String> {
        let mut s = self.cfg.scheme;
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
        let q = match method {
            Method::Rtn => rtn_q,
            Method::Gptq => {
                let h = hess.ok_or("no XᵀX")?;
                let mut rows_q: Vec<QuantMatrix> = Vec::with_capacity(groups);
                for gi in 0..groups {
                    let w = &t.w[gi * mg * k..(gi + 1) * mg * k];
                    let mut damp = self.cfg.damp;
                    let q = loop {
                        match gptq(w, mg, k, h.block(gi), &s, damp) {
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
                    rows_q.push(q.unwrap_or_else(|| rtn(w, mg, k, &s)));
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
        g.replace_all_uses(y, out);
        g.remove_node(t.node);
        g.set_name(y, format!("{yname}_replaced"));
        g.remove_const(t.weight);
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

fn concat_rows(parts: Vec<QuantMatrix>, n: usize, k: usize, s: &Scheme) -> QuantMatrix {
    let mut codes = Vec::with_capacity(n * k);
    let mut params = Vec::new();
    for p in parts {
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
    }
}

fn group_text(s: &Scheme) -> String {
    if s.group == 0 {
        "per-channel".into()
    } else {
        format!("g{}", s.group)
    }
}

impl Pass for Quantize {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let cfg = self.cfg.clone();
        let stats: Option<Arc<CalibStats>> = match cfg.method {
            Method::Rtn => cx.cached::<CalibStats>(),
            m => {
                // XᵀX of every layer comes from running the calibration samples.
                cx.require_samples(&format!("quantize(method={})", m.name()))?;
                Some(cx.analysis::<CalibStats>(g)?)
            }
        };
        // Shapes help the MatMulNBits rank check; failures leave types as they are.
        let _ = pare_ir::infer::infer_types(g);
        let order = g
            .topo_order()
            .map_err(|e| PassError::failed(NAME, e.to_string()))?;
        let mut report = PassReport::unchanged();
        let mut quantized = 0u64;
        let mut in_subgraphs = 0usize;
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
            let done = self
                .quantize(&t, stats.as_deref())
                .map_err(|m| PassError::at_node(NAME, g, node, m))?;
            let mut detail = done.detail;
            let mut format = "qdq";
            if cfg.format == Format::MatMulNBits && matches!(t.layout, Layout::Kn | Layout::Nk) {
                match self.emit_nbits(g, &t, &done.q) {
                    Ok(()) => format = "matmulnbits",
                    Err(why) => {
                        detail.push_str(&format!("qdq instead of MatMulNBits: {why}; "));
                        self.emit_qdq(g, &t, &done.q)
                            .map_err(|m| PassError::at_node(NAME, g, node, m))?;
                    }
                }
            } else {
                self.emit_qdq(g, &t, &done.q)
                    .map_err(|m| PassError::at_node(NAME, g, node, m))?;
            }
            if shared {
                detail.push_str("the f32 weight stays for its other readers; ");
            }
            let before = 4 * t.n * t.k;
            let after = done.q.stored_bytes();
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
            report.add_stat("layers-quantized", 1);
            report.add_stat("weight-bytes-before", before as u64);
            report.add_stat("weight-bytes-after", after as u64);
            report.add_stat("params-quantized", (t.n * t.k) as u64);
            quantized += 1;
        }
        pb.finish_and_clear();
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
