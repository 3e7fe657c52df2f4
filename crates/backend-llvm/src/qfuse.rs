//! Quantized MatMul recognition: turns the quantized forms of a MatMul in an ONNX graph into one
//! [`QMatMul`](OP_TYPE) node that the backend lowers to the integer kernel
//! (`pare_k_qmatmul`, see `pare_runtime::ops::qmatmul`), and makes the remaining
//! QuantizeLinear → DequantizeLinear pairs compilable.
//!
//! **What it recognizes** (the forms onnxruntime's quantizer and pare's `quantize` emit):
//!
//! * dynamic: `DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q[, x_zp][, 0]) → Cast(float)
//!   → Mul(·, Mul(x_scale, w_scale))`, with `W_q` a constant int8 `[K, N]` matrix and
//!   `w_scale` a constant scalar or `[N]` vector;
//! * static (QDQ): `MatMul(DequantizeLinear(QuantizeLinear(x, s, z), s, z),
//!   DequantizeLinear(W_q, w_scale[, 0]))`, and the same as a Gemm's A and B (`transA = 0`;
//!   `transB` transposes the codes at compile time, `alpha` is folded into `w_scale`, `C` stays
//!   an `Add` that the kernel's epilogue absorbs), with per-tensor constant `s`, `z` (uint8 or
//!   int8 activations) and int8 weights quantized per tensor or per output column;
//! * static (QDQ) convolution: `Conv(DequantizeLinear(QuantizeLinear(x, s, z), s, z),
//!   DequantizeLinear(W_q, w_scale[, 0])[, bias])` with `group = 1`, a 2-D kernel, a constant
//!   int8 `W_q` `[C_out, C_in, kh, kw]` and a scalar or per-output-channel (`axis = 0`)
//!   `w_scale`, becomes one [`QConv`](QCONV_OP_TYPE) node that the backend lowers to
//!   `pare_k_qconv` (see `pare_runtime::ops::qconv`); `auto_pad` is resolved into explicit pads.
//!   Grouped and depthwise convolutions, and those with `C_in·kh·kw <` [`QCONV_MIN_K`] (where
//!   the int8 kernel is not faster), keep the f32 path below.
//!
//! The node computes exactly what the pattern computes, up to f32 rounding of the final
//! scaling: the activation codes are the ones `DynamicQuantizeLinear` / `QuantizeLinear` would
//! produce, and the integer sum is exact (the graph's f32 sum of integer products is exact too
//! as long as it stays below 2^24). Patterns with weight zero points other than 0, uint8
//! weights, per-channel or blocked activation quantization are left as they are.
//!
//! **QOperator form**: `QLinearMatMul` and `QLinearConv` are first rewritten into the QDQ
//! form (`QuantizeLinear(MatMul/Conv(DequantizeLinear(a), DequantizeLinear(w)))`), which the
//! rules above and below then compile.
//!
//! **QDQ pairs left over** (activations of grouped/depthwise convolutions, outputs of MatMuls
//! and convolutions that feed something else): a per-tensor `QuantizeLinear → DequantizeLinear` pair with matching constant
//! parameters becomes the same arithmetic in f32 — `(clip(round(x / s) + z, lo, hi) − z) · s` —
//! which the backend fuses into an elementwise loop. The result is bit-identical to the pair.

use pare_ir::op::{CastAttrs, CustomOp, CustomOpDef};
use pare_ir::{Attr, Attrs, DType, Dim, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId};
use std::sync::Arc;

/// Domain of the backend's internal ops (never exported).
pub const DOMAIN: &str = "ai.pare.backend";
/// Op type of the quantized MatMul.
pub const OP_TYPE: &str = "QMatMul";
/// Op type of the quantized convolution.
pub const QCONV_OP_TYPE: &str = "QConv";
/// Smallest `C_in·kh·kw` for which a convolution becomes a QConv. Below it the integer
/// product is too short to pay for quantizing, re-laying-out and transposing the data
/// (`qconv_bench`, one thread: 0.6x the f32 convolution at 16, 0.9x at 27, break-even at 64,
/// 1.3x at 128, 2-3x from 240), and the f32 path is kept.
pub const QCONV_MIN_K: usize = 64;

/// What [`fuse_quantized`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QFuseStats {
    /// Dynamic patterns turned into QMatMul.
    pub dynamic: usize,
    /// Static (QDQ) MatMul/Gemm turned into QMatMul.
    pub static_: usize,
    /// Static (QDQ) 2-D convolutions (group 1) turned into QConv.
    pub conv: usize,
    /// Remaining QuantizeLinear → DequantizeLinear pairs turned into f32 arithmetic.
    pub fake_quant: usize,
    /// QLinearMatMul / QLinearConv nodes rewritten into their QDQ form first.
    pub qoperator: usize,
}

/// How the QMatMul quantizes its input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActQuant {
    /// `DynamicQuantizeLinear` over the whole input.
    Dynamic,
    /// A constant scale and uint8-domain zero point.
    Static {
        /// Scale.
        scale: f32,
        /// Zero point (uint8 domain: int8 zero points are shifted by 128).
        zero: u8,
    },
}

/// The attributes of a QMatMul node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QAttrs {
    /// Rows of the weight.
    pub k: usize,
    /// Columns of the weight.
    pub n: usize,
    /// Input quantization.
    pub quant: ActQuant,
}

impl QAttrs {
    fn to_attrs(self) -> Attrs {
        let mut v = vec![
            ("K".to_string(), Attr::Int(self.k as i64)),
            ("N".to_string(), Attr::Int(self.n as i64)),
        ];
        match self.quant {
            ActQuant::Dynamic => v.push(("mode".into(), Attr::String("dynamic".into()))),
            ActQuant::Static { scale, zero } => {
                v.push(("mode".into(), Attr::String("static".into())));
                v.push(("x_scale".into(), Attr::Float(scale)));
                v.push(("x_zero".into(), Attr::Int(zero as i64)));
            }
        }
        Attrs(v)
    }

    /// Reads the attributes of a QMatMul node.
    pub fn from_attrs(a: &Attrs) -> Result<QAttrs, String> {
        let int = |name: &str| -> Result<i64, String> {
            match a.get(name) {
                Some(Attr::Int(i)) => Ok(*i),
                _ => Err(format!("QMatMul: int attribute {name} missing")),
            }
        };
        let dim = |name: &str| -> Result<usize, String> {
            usize::try_from(int(name)?).map_err(|_| format!("QMatMul: {name} is negative"))
        };
        let quant = match a.get("mode") {
            Some(Attr::String(s)) if s == "dynamic" => ActQuant::Dynamic,
            Some(Attr::String(s)) if s == "static" => {
                let scale = match a.get("x_scale") {
                    Some(Attr::Float(f)) if f.is_finite() && *f > 0.0 => *f,
                    _ => return Err("QMatMul: x_scale must be a finite float > 0".into()),
                };
                let zero = u8::try_from(int("x_zero")?)
                    .map_err(|_| "QMatMul: x_zero must be in 0..=255".to_string())?;
                ActQuant::Static { scale, zero }
            }
            _ => return Err("QMatMul: mode must be \"dynamic\" or \"static\"".into()),
        };
        Ok(QAttrs {
            k: dim("K")?,
            n: dim("N")?,
            quant,
        })
    }
}

/// Reference semantics of QMatMul: inputs `x` (f32 `[..., K]`), `w` (int8 `[K, N]`),
/// `w_scale` (f32 `[N]`); output f32 `[..., N]`:
/// `y[i, j] = x_scale · w_scale[j] · Σ_p (q(x)[i, p] − x_zero) · w[p, j]`.
#[derive(Debug)]
pub struct QMatMulDef;

/// One of the backend's internal ops (domain [`DOMAIN`]).
fn internal_op(op_type: &str, attrs: Attrs, def: Arc<dyn CustomOpDef>) -> Op {
    Op::Custom(CustomOp {
        domain: DOMAIN.into(),
        op_type: op_type.into(),
        attrs,
        def: Some(def),
    })
}

/// The attributes of `op` when it is the internal op `op_type`.
fn internal_attrs<'a>(op: &'a Op, op_type: &str) -> Option<&'a Attrs> {
    match op {
        Op::Custom(c) if c.domain == DOMAIN && c.op_type == op_type => Some(&c.attrs),
        _ => None,
    }
}

/// The QMatMul op with its attributes.
pub fn op(a: QAttrs) -> Op {
    internal_op(OP_TYPE, a.to_attrs(), Arc::new(QMatMulDef))
}

/// The attributes when `op` is a QMatMul.
pub fn as_qmatmul(op: &Op) -> Option<Result<QAttrs, String>> {
    internal_attrs(op, OP_TYPE).map(QAttrs::from_attrs)
}

impl CustomOpDef for QMatMulDef {
    fn infer(&self, attrs: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        let a = QAttrs::from_attrs(attrs)?;
        let x = inputs.first().ok_or("QMatMul needs an input")?;
        let shape = match &x.shape {
            Some(s) if s.rank() == 0 => return Err("QMatMul: the input must have rank ≥ 1".into()),
            Some(s) => {
                if let Some(Dim::Fixed(k)) = s.0.last() {
                    if *k as usize != a.k {
                        return Err(format!("QMatMul: input's last dim is {k}, K is {}", a.k));
                    }
                }
                let mut d = s.0.clone();
                if let Some(last) = d.last_mut() {
                    *last = Dim::Fixed(a.n as u64);
                }
                Some(Shape(d))
            }
            None => None,
        };
        Ok(vec![TensorType {
            dtype: Some(DType::F32),
            shape,
        }])
    }

    fn flops(&self, attrs: &Attrs, _inputs: &[TensorType], outputs: &[TensorType]) -> Option<u64> {
        let k = QAttrs::from_attrs(attrs).ok()?.k as u64;
        let out: u64 = outputs
            .first()?
            .shape
            .as_ref()?
            .0
            .iter()
            .map(|d| d.fixed())
            .product::<Option<u64>>()?;
        Some(2 * out * k)
    }

    fn verify(&self, attrs: &Attrs, num_inputs: usize) -> Result<(), String> {
        QAttrs::from_attrs(attrs)?;
        if num_inputs != 3 {
            return Err(format!("QMatMul takes 3 inputs, got {num_inputs}"));
        }
        Ok(())
    }

    fn eval(&self, attrs: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let a = QAttrs::from_attrs(attrs)?;
        let [x, w, ws] = inputs else {
            return Err("QMatMul takes 3 inputs".into());
        };
        let xv: Vec<f32> = x.to_vec().map_err(|e| e.to_string())?;
        let wv: Vec<i8> = w.to_vec().map_err(|e| e.to_string())?;
        let sv: Vec<f32> = ws.to_vec().map_err(|e| e.to_string())?;
        let (k, n) = (a.k, a.n);
        if x.shape().last() != Some(&k) || wv.len() != k * n || sv.len() != n {
            return Err(format!(
                "QMatMul: shapes {:?} x {:?} (scales {:?}) do not match K={k}, N={n}",
                x.shape(),
                w.shape(),
                ws.shape()
            ));
        }
        let (scale, zero) = match a.quant {
            ActQuant::Static { scale, zero } => (scale, zero as f32),
            ActQuant::Dynamic => {
                let hi = xv.iter().copied().fold(0.0f32, f32::max);
                let lo = xv.iter().copied().fold(0.0f32, f32::min);
                let s = (if hi == lo { 1.0 } else { hi - lo }) / 255.0;
                (s, (0.0f32 - lo / s).clamp(0.0, 255.0).round_ties_even())
            }
        };
        let q: Vec<i64> = xv
            .iter()
            .map(|&v| ((v / scale).round_ties_even() + zero).clamp(0.0, 255.0) as i64 - zero as i64)
            .collect();
        let m = q.len().checked_div(k).unwrap_or(0);
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let acc: i64 = (0..k).map(|p| q[i * k + p] * wv[p * n + j] as i64).sum();
                y[i * n + j] = acc as f32 * (scale * sv[j]);
            }
        }
        let mut shape = x.shape().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = n;
        }
        Ok(vec![Tensor::from_vec(shape, y)])
    }
}

/// The single node reading `v`, if `v` has exactly one reader and is not a graph output.
fn sole_reader(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.outputs().contains(&v) {
        return None;
    }
    match g.uses(v) {
        [pare_ir::Use::Node { node, .. }] => Some(*node),
        _ => None,
    }
}

fn producer_op(g: &Graph, v: ValueId) -> Option<(NodeId, &Op)> {
    let n = g.producer(v)?;
    Some((n, &g.node(n).op))
}

/// A constant's values as f32 (any numeric dtype).
fn const_f32(g: &Graph, v: ValueId) -> Option<Vec<f32>> {
    Some(
        g.constant(v)?
            .to_f64_vec()?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    )
}

/// True when `v` is absent or a constant whose values are all 0.
fn zero_or_absent(g: &Graph, v: Option<ValueId>) -> bool {
    match v {
        None => true,
        Some(v) => g
            .constant(v)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|z| z.iter().all(|&x| x == 0)),
    }
}

/// A constant int8 `[rows, cols]` matrix.
fn const_i8_matrix(g: &Graph, v: ValueId) -> Option<(Vec<i8>, usize, usize)> {
    let t = g.constant(v)?;
    if t.dtype() != DType::I8 || t.shape().len() != 2 {
        return None;
    }
    let (r, c) = (t.shape()[0], t.shape()[1]);
    Some((t.to_vec::<i8>().ok()?, r, c))
}

/// `n` per-column scales from a scalar or `[n]` constant.
fn column_scales(g: &Graph, v: ValueId, n: usize) -> Option<Vec<f32>> {
    let s = const_f32(g, v)?;
    match s.len() {
        1 => Some(vec![s[0]; n]),
        l if l == n => Some(s),
        _ => None,
    }
}

fn replace_output(g: &mut Graph, old: ValueId, new: ValueId) {
    let name = g.value(old).name.clone();
    let ty = g.value(old).ty.clone();
    g.replace_all_uses(old, new);
    g.set_name(old, format!("{name}.unquantized"));
    g.set_name(new, name);
    g.set_type(new, ty);
}

/// A recognized quantized MatMul.
struct Found {
    /// The f32 input the kernel quantizes.
    x: ValueId,
    /// Weight codes, `[K, N]` row-major.
    codes: Vec<i8>,
    /// Per-column weight scales (Gemm's alpha folded in).
    scales: Vec<f32>,
    attrs: QAttrs,
    /// The value the QMatMul replaces.
    y: ValueId,
    /// A Gemm's `C` and `beta`.
    bias: Option<(ValueId, f32)>,
}

/// Adds a QMatMul reading `x` and replaces `y` by its output (or, with a Gemm bias `c`, by
/// `QMatMul + beta·c`).
fn emit(g: &mut Graph, f: Found) {
    let Found {
        x,
        codes,
        scales,
        attrs: a,
        y,
        bias,
    } = f;
    let base = g.value(y).name.clone();
    let w = g.add_const(
        format!("{base}.qweight"),
        Tensor::from_vec(vec![a.k, a.n], codes),
    );
    let s = g.add_const(
        format!("{base}.qscale"),
        Tensor::from_vec(vec![a.n], scales),
    );
    let q = g.add_simple(format!("{base}.qmatmul"), op(a), &[x, w, s]);
    let out = match bias {
        None => q,
        Some((c, beta)) => {
            let c = if beta == 1.0 {
                c
            } else {
                let b = g.add_const(format!("{base}.beta"), Tensor::scalar(beta));
                g.add_simple(format!("{base}.scaled_bias"), Op::Mul, &[c, b])
            };
            g.add_simple(format!("{base}.qbias"), Op::Add, &[q, c])
        }
    };
    replace_output(g, y, out);
}

/// The dynamic pattern around MatMulInteger node `mm`: `(x, codes, scales, K, N, y)`.
fn match_dynamic(g: &Graph, mm: NodeId) -> Option<Found> {
    let nd = g.node(mm);
    let (aq, w) = (nd.input(0)?, nd.input(1)?);
    if !zero_or_absent(g, nd.input(3)) {
        return None;
    }
    let (dq, dop) = producer_op(g, aq)?;
    if !matches!(dop, Op::DynamicQuantizeLinear) {
        return None;
    }
    let d = g.node(dq);
    if d.outputs().first() != Some(&aq) || nd.input(2) != d.outputs().get(2).copied() {
        return None;
    }
    let x = d.input(0)?;
    if g.value(x).ty.dtype != Some(DType::F32) {
        return None;
    }
    let (codes, k, n) = const_i8_matrix(g, w)?;
    let acc = nd.outputs()[0];
    let cast = sole_reader(g, acc)?;
    match &g.node(cast).op {
        Op::Cast(CastAttrs { to: DType::F32, .. }) => {}
        _ => return None,
    }
    let cv = g.node(cast).outputs()[0];
    let mul = sole_reader(g, cv)?;
    let mn = g.node(mul);
    if !matches!(mn.op, Op::Mul) {
        return None;
    }
    let other = if mn.input(0) == Some(cv) {
        mn.input(1)?
    } else {
        mn.input(0)?
    };
    let (_, sop) = producer_op(g, other)?;
    if !matches!(sop, Op::Mul) {
        return None;
    }
    let sn = g.node(g.producer(other)?);
    let xs = d.outputs().get(1).copied()?;
    let ws = match (sn.input(0)?, sn.input(1)?) {
        (a, b) if a == xs => b,
        (a, b) if b == xs => a,
        _ => return None,
    };
    let scales = column_scales(g, ws, n)?;
    let a = QAttrs {
        k,
        n,
        quant: ActQuant::Dynamic,
    };
    Some(Found {
        x,
        codes,
        scales,
        attrs: a,
        y: mn.outputs()[0],
        bias: None,
    })
}

/// `x` and its constant per-tensor quantization when `v = DequantizeLinear(QuantizeLinear(x,
/// s, z), s, z)`.
fn match_qdq(g: &Graph, v: ValueId) -> Option<(ValueId, ActQuant)> {
    let (dqn, dop) = producer_op(g, v)?;
    let Op::DequantizeLinear(da) = dop else {
        return None;
    };
    if da.block_size != 0 {
        return None;
    }
    let d = g.node(dqn);
    let q = d.input(0)?;
    let (qn, qop) = producer_op(g, q)?;
    let Op::QuantizeLinear(qa) = qop else {
        return None;
    };
    if qa.block_size != 0 {
        return None;
    }
    let qnode = g.node(qn);
    let x = qnode.input(0)?;
    if g.value(x).ty.dtype != Some(DType::F32) {
        return None;
    }
    let s1 = const_f32(g, d.input(1)?)?;
    let s2 = const_f32(g, qnode.input(1)?)?;
    if s1.len() != 1 || s1 != s2 || !(s1[0].is_finite() && s1[0] > 0.0) {
        return None;
    }
    let zero_of = |z: Option<ValueId>| -> Option<(i64, Option<DType>)> {
        match z {
            None => Some((0, None)),
            Some(z) => {
                let t = g.constant(z)?;
                let v = t.to_i64_vec()?;
                (v.len() == 1).then_some((v[0], Some(t.dtype())))
            }
        }
    };
    let (z1, _) = zero_of(d.input(2))?;
    let (z2, _) = zero_of(qnode.input(2))?;
    if z1 != z2 {
        return None;
    }
    let zero = match g.value(q).ty.dtype? {
        DType::U8 => u8::try_from(z1).ok()?,
        DType::I8 => u8::try_from(z1 + 128).ok()?,
        _ => return None,
    };
    Some((x, ActQuant::Static { scale: s1[0], zero }))
}

/// `(codes [K, N], scales [N])` of `w = DequantizeLinear(W_q, scale[, 0])` read as op(B) of a
/// MatMul (`trans = false`, `W_q` is `[K, N]`, per-column axis 1) or of a Gemm with `transB`
/// (`W_q` is `[N, K]`, per-row axis 0).
fn match_dq_weight(
    g: &Graph,
    w: ValueId,
    trans: bool,
) -> Option<(Vec<i8>, Vec<f32>, usize, usize)> {
    let (dn, dop) = producer_op(g, w)?;
    let Op::DequantizeLinear(da) = dop else {
        return None;
    };
    if da.block_size != 0 {
        return None;
    }
    let d = g.node(dn);
    if !zero_or_absent(g, d.input(2)) {
        return None;
    }
    let (codes, r, c) = const_i8_matrix(g, d.input(0)?)?;
    let (k, n) = if trans { (c, r) } else { (r, c) };
    let s = const_f32(g, d.input(1)?)?;
    let axis = if da.axis < 0 { da.axis + 2 } else { da.axis };
    let per_col = if trans { 0 } else { 1 };
    if s.len() != 1 && !(s.len() == n && axis == per_col) {
        return None;
    }
    let scales = if s.len() == 1 { vec![s[0]; n] } else { s };
    let codes = if trans {
        let mut t = vec![0i8; k * n];
        for j in 0..n {
            for p in 0..k {
                t[p * n + j] = codes[j * k + p];
            }
        }
        t
    } else {
        codes
    };
    Some((codes, scales, k, n))
}

/// The static (QDQ) pattern at MatMul/Gemm node `mm`.
fn match_static(g: &Graph, mm: NodeId) -> Option<Found> {
    let nd = g.node(mm);
    let (trans, alpha, bias) = match &nd.op {
        Op::MatMul => (false, 1.0f32, None),
        Op::Gemm(a) if !a.trans_a => (a.trans_b, a.alpha, nd.input(2).map(|c| (c, a.beta))),
        _ => return None,
    };
    let (x, quant) = match_qdq(g, nd.input(0)?)?;
    if let Op::Gemm(_) = nd.op {
        // Gemm's A is 2-D by definition; MatMul's may have batch dims (folded into M).
        if g.value(x).ty.shape.as_ref()?.rank() != 2 {
            return None;
        }
    }
    let (codes, mut scales, k, n) = match_dq_weight(g, nd.input(1)?, trans)?;
    for s in &mut scales {
        *s *= alpha;
    }
    Some(Found {
        x,
        codes,
        scales,
        attrs: QAttrs { k, n, quant },
        y: nd.outputs()[0],
        bias,
    })
}

/// The attributes of a QConv node: a 2-D, `group = 1` convolution with explicit pads over an
/// input quantized with a constant scale and uint8-domain zero point.
#[derive(Clone, Debug, PartialEq)]
pub struct QConvAttrs {
    /// Output channels.
    pub c_out: usize,
    /// Input channels.
    pub c_in: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Strides `[sh, sw]`.
    pub strides: [usize; 2],
    /// Dilations `[dh, dw]`.
    pub dilations: [usize; 2],
    /// Pads `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Input scale (finite, > 0).
    pub x_scale: f32,
    /// Input zero point, uint8 domain (int8 zero points shifted by 128).
    pub x_zero: u8,
}

impl QConvAttrs {
    fn to_attrs(&self) -> Attrs {
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
        Attrs(vec![
            (
                "shape".into(),
                ints(&[self.c_out, self.c_in, self.kernel[0], self.kernel[1]]),
            ),
            ("strides".into(), ints(&self.strides)),
            ("dilations".into(), ints(&self.dilations)),
            ("pads".into(), ints(&self.pads)),
            ("x_scale".into(), Attr::Float(self.x_scale)),
            ("x_zero".into(), Attr::Int(self.x_zero as i64)),
        ])
    }

    /// Reads the attributes of a QConv node.
    pub fn from_attrs(a: &Attrs) -> Result<QConvAttrs, String> {
        fn ints<const N: usize>(a: &Attrs, name: &str, min: usize) -> Result<[usize; N], String> {
            let v = match a.get(name) {
                Some(Attr::Ints(v)) if v.len() == N => v,
                _ => return Err(format!("QConv: attribute {name} must be {N} ints")),
            };
            let mut out = [0usize; N];
            for (o, &x) in out.iter_mut().zip(v) {
                *o = usize::try_from(x)
                    .ok()
                    .filter(|&x| x >= min && x <= i32::MAX as usize)
                    .ok_or_else(|| format!("QConv: {name} value {x} out of range"))?;
            }
            Ok(out)
        }
        let shape: [usize; 4] = ints(a, "shape", 1)?;
        let x_scale = match a.get("x_scale") {
            Some(Attr::Float(f)) if f.is_finite() && *f > 0.0 => *f,
            _ => return Err("QConv: x_scale must be a finite float > 0".into()),
        };
        let x_zero = match a.get("x_zero") {
            Some(Attr::Int(z)) => {
                u8::try_from(*z).map_err(|_| "QConv: x_zero must be in 0..=255".to_string())?
            }
            _ => return Err("QConv: int attribute x_zero missing".into()),
        };
        Ok(QConvAttrs {
            c_out: shape[0],
            c_in: shape[1],
            kernel: [shape[2], shape[3]],
            strides: ints(a, "strides", 1)?,
            dilations: ints(a, "dilations", 1)?,
            pads: ints(a, "pads", 0)?,
            x_scale,
            x_zero,
        })
    }

    /// Output extent along spatial axis `i` (0 = height) for input extent `x`, or `None` when
    /// the kernel does not fit.
    pub fn out_extent(&self, i: usize, x: usize) -> Option<usize> {
        let padded = x.checked_add(self.pads[i])?.checked_add(self.pads[i + 2])?;
        let ext = self.dilations[i]
            .checked_mul(self.kernel[i] - 1)?
            .checked_add(1)?;
        padded.checked_sub(ext).map(|d| d / self.strides[i] + 1)
    }

    /// `c_in · kh · kw`.
    fn k(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }
}

/// Reference semantics of QConv: inputs `x` (f32 `[N, C_in, H, W]`), `w` (int8
/// `[C_out, C_in, kh, kw]`), `w_scale` (f32 `[C_out]`), optional `bias` (f32 `[C_out]`); output
/// f32 `[N, C_out, OH, OW]`:
/// `y[n, o, p] = x_scale · w_scale[o] · Σ_t (q(x)[t(p)] − x_zero) · w[o, t] + bias[o]`, with
/// `q` ONNX `QuantizeLinear` to uint8 and padded positions contributing 0.
#[derive(Debug)]
pub struct QConvDef;

/// The QConv op with its attributes.
pub fn qconv_op(a: &QConvAttrs) -> Op {
    internal_op(QCONV_OP_TYPE, a.to_attrs(), Arc::new(QConvDef))
}

/// The attributes when `op` is a QConv.
pub fn as_qconv(op: &Op) -> Option<Result<QConvAttrs, String>> {
    internal_attrs(op, QCONV_OP_TYPE).map(QConvAttrs::from_attrs)
}

impl CustomOpDef for QConvDef {
    fn infer(&self, attrs: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        let a = QConvAttrs::from_attrs(attrs)?;
        let x = inputs.first().ok_or("QConv needs an input")?;
        let shape = match &x.shape {
            Some(s) if s.rank() != 4 => {
                return Err(format!(
                    "QConv: the input must have rank 4, got {}",
                    s.rank()
                ))
            }
            Some(s) => {
                if let Dim::Fixed(c) = &s.0[1] {
                    if *c as usize != a.c_in {
                        return Err(format!("QConv: input has {c} channels, C_in is {}", a.c_in));
                    }
                }
                let sp = |i: usize| -> Result<Dim, String> {
                    match &s.0[2 + i] {
                        Dim::Fixed(x) => a
                            .out_extent(i, *x as usize)
                            .map(|o| Dim::Fixed(o as u64))
                            .ok_or_else(|| "QConv: kernel larger than the padded input".into()),
                        _ => Ok(Dim::Unknown),
                    }
                };
                Some(Shape(vec![
                    s.0[0].clone(),
                    Dim::Fixed(a.c_out as u64),
                    sp(0)?,
                    sp(1)?,
                ]))
            }
            None => None,
        };
        Ok(vec![TensorType {
            dtype: Some(DType::F32),
            shape,
        }])
    }

    fn flops(&self, attrs: &Attrs, _inputs: &[TensorType], outputs: &[TensorType]) -> Option<u64> {
        let k = QConvAttrs::from_attrs(attrs).ok()?.k() as u64;
        let out: u64 = outputs
            .first()?
            .shape
            .as_ref()?
            .0
            .iter()
            .map(|d| d.fixed())
            .product::<Option<u64>>()?;
        Some(2 * out * k)
    }

    fn verify(&self, attrs: &Attrs, num_inputs: usize) -> Result<(), String> {
        QConvAttrs::from_attrs(attrs)?;
        if !(3..=4).contains(&num_inputs) {
            return Err(format!("QConv takes 3 or 4 inputs, got {num_inputs}"));
        }
        Ok(())
    }

    fn eval(&self, attrs: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let a = QConvAttrs::from_attrs(attrs)?;
        let (x, w, ws, bias) = match inputs {
            [x, w, ws] => (x, w, ws, None),
            [x, w, ws, b] => (x, w, ws, Some(b)),
            _ => return Err("QConv takes 3 or 4 inputs".into()),
        };
        let xv: Vec<f32> = x.to_vec().map_err(|e| e.to_string())?;
        let wv: Vec<i8> = w.to_vec().map_err(|e| e.to_string())?;
        let sv: Vec<f32> = ws.to_vec().map_err(|e| e.to_string())?;
        let bv: Option<Vec<f32>> = bias
            .map(|b| b.to_vec().map_err(|e| e.to_string()))
            .transpose()?;
        let (co, ci, [kh, kw]) = (a.c_out, a.c_in, a.kernel);
        let &[n, xc, h, wd] = x.shape() else {
            return Err(format!("QConv: input shape {:?} is not 4-D", x.shape()));
        };
        if xc != ci
            || wv.len() != co * a.k()
            || sv.len() != co
            || bv.as_ref().is_some_and(|b| b.len() != co)
        {
            return Err(format!(
                "QConv: shapes {:?}, {:?}, {:?} do not match [{co}, {ci}, {kh}, {kw}]",
                x.shape(),
                w.shape(),
                ws.shape()
            ));
        }
        if a.k() > pare_runtime::qgemm::QGEMM_MAX_K {
            return Err("QConv: C_in·kh·kw is too large for an exact i32 sum".into());
        }
        let (Some(oh), Some(ow)) = (a.out_extent(0, h), a.out_extent(1, wd)) else {
            return Err("QConv: kernel larger than the padded input".into());
        };
        let (s, z) = (a.x_scale, a.x_zero as f32);
        let q: Vec<i32> = xv
            .iter()
            .map(|&v| ((v / s).round_ties_even() + z).clamp(0.0, 255.0) as i32 - a.x_zero as i32)
            .collect();
        let [sh, sw] = a.strides;
        let [dh, dw] = a.dilations;
        let (pt, pl) = (a.pads[0], a.pads[1]);
        let mut y = vec![0f32; n * co * oh * ow];
        let mut acc = vec![0i32; oh * ow];
        for img in 0..n {
            for o in 0..co {
                acc.fill(0);
                for c in 0..ci {
                    let plane = &q[(img * ci + c) * h * wd..][..h * wd];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let wt = wv[((o * ci + c) * kh + ky) * kw + kx] as i32;
                            if wt == 0 {
                                continue;
                            }
                            for oy in 0..oh {
                                let Some(iy) = (oy * sh + ky * dh).checked_sub(pt) else {
                                    continue;
                                };
                                if iy >= h {
                                    continue;
                                }
                                let row = &plane[iy * wd..][..wd];
                                let out = &mut acc[oy * ow..][..ow];
                                for (ox, r) in out.iter_mut().enumerate() {
                                    let ix = ox * sw + kx * dw;
                                    if ix >= pl && ix - pl < wd {
                                        // Exact: |Σ| <= k·255·128 < 2^31 (k checked above).
                                        *r += row[ix - pl] * wt;
                                    }
                                }
                            }
                        }
                    }
                }
                let scale = s * sv[o];
                let b = bv.as_ref().map_or(0.0, |b| b[o]);
                let dst = &mut y[(img * co + o) * oh * ow..][..oh * ow];
                for (d, &v) in dst.iter_mut().zip(&acc) {
                    *d = v as f32 * scale;
                    if bv.is_some() {
                        *d += b;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_vec(vec![n, co, oh, ow], y)])
    }
}

/// A recognized quantized convolution.
struct FoundConv {
    x: ValueId,
    /// The int8 weight constant (`[C_out, C_in, kh, kw]`).
    w: ValueId,
    scales: Vec<f32>,
    bias: Option<ValueId>,
    attrs: QConvAttrs,
    y: ValueId,
}

/// The static (QDQ) convolution pattern at Conv node `cn` (see the module doc).
fn match_qconv(g: &Graph, cn: NodeId) -> Option<FoundConv> {
    let nd = g.node(cn);
    let Op::Conv(ca) = &nd.op else {
        return None;
    };
    if ca.group > 1 {
        return None;
    }
    let (x, quant) = match_qdq(g, nd.input(0)?)?;
    let ActQuant::Static { scale, zero } = quant else {
        return None;
    };
    let xs: Vec<usize> = g
        .value(x)
        .ty
        .shape
        .as_ref()?
        .0
        .iter()
        .map(|d| d.fixed().map(|v| v as usize))
        .collect::<Option<_>>()?;
    if xs.len() != 4 {
        return None;
    }
    // The weight: DequantizeLinear(int8 const [C_out, C_in, kh, kw], scale[, 0]).
    let (dn, dop) = producer_op(g, nd.input(1)?)?;
    let Op::DequantizeLinear(da) = dop else {
        return None;
    };
    if da.block_size != 0 {
        return None;
    }
    let d = g.node(dn);
    if !zero_or_absent(g, d.input(2)) {
        return None;
    }
    let w = d.input(0)?;
    let wt = g.constant(w)?;
    if wt.dtype() != DType::I8 || wt.shape().len() != 4 {
        return None;
    }
    let [co, ci, kh, kw] = [wt.shape()[0], wt.shape()[1], wt.shape()[2], wt.shape()[3]];
    if co == 0 || ci == 0 || kh == 0 || kw == 0 || xs[1] != ci {
        return None;
    }
    if ci * kh * kw > pare_runtime::qgemm::QGEMM_MAX_K || ci * kh * kw < QCONV_MIN_K {
        return None;
    }
    let s = const_f32(g, d.input(1)?)?;
    let axis = if da.axis < 0 { da.axis + 4 } else { da.axis };
    if s.len() != 1 && !(s.len() == co && axis == 0) {
        return None;
    }
    if !s.iter().all(|v| v.is_finite()) {
        return None;
    }
    let scales = if s.len() == 1 { vec![s[0]; co] } else { s };
    let bias = match nd.input(2) {
        None => None,
        Some(b) => {
            let ty = &g.value(b).ty;
            let numel: Option<u64> = ty.shape.as_ref()?.0.iter().map(|d| d.fixed()).product();
            if ty.dtype != Some(DType::F32) || numel != Some(co as u64) {
                return None;
            }
            Some(b)
        }
    };
    let two = |v: &Option<Vec<i64>>| -> Option<[usize; 2]> {
        match v {
            None => Some([1, 1]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                Some([v[0] as usize, v[1] as usize])
            }
            _ => None,
        }
    };
    let strides = two(&ca.strides)?;
    let dilations = two(&ca.dilations)?;
    let pads = match ca.auto_pad.as_str() {
        "NOTSET" | "" => match &ca.pads {
            None => [0; 4],
            Some(p) if p.len() == 4 && p.iter().all(|&x| x >= 0) => {
                [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
            }
            _ => return None,
        },
        "VALID" => [0; 4],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut p = [0usize; 4];
            for i in 0..2 {
                let (inp, k) = (xs[2 + i], [kh, kw][i]);
                let out = inp.div_ceil(strides[i]);
                let need =
                    ((out - 1) * strides[i] + (k - 1) * dilations[i] + 1).saturating_sub(inp);
                let (small, big) = (need / 2, need - need / 2);
                (p[i], p[i + 2]) = if mode == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                };
            }
            p
        }
        _ => return None,
    };
    let attrs = QConvAttrs {
        c_out: co,
        c_in: ci,
        kernel: [kh, kw],
        strides,
        dilations,
        pads,
        x_scale: scale,
        x_zero: zero,
    };
    attrs.out_extent(0, xs[2])?;
    attrs.out_extent(1, xs[3])?;
    Some(FoundConv {
        x,
        w,
        scales,
        bias,
        attrs,
        y: nd.outputs()[0],
    })
}

/// Adds a QConv reading `x` and replaces the Conv's output by its output.
fn emit_qconv(g: &mut Graph, f: FoundConv) {
    let base = g.value(f.y).name.clone();
    let s = g.add_const(
        format!("{base}.qscale"),
        Tensor::from_vec(vec![f.attrs.c_out], f.scales),
    );
    let mut ins = vec![f.x, f.w, s];
    ins.extend(f.bias);
    let q = g.add_simple(format!("{base}.qconv"), qconv_op(&f.attrs), &ins);
    replace_output(g, f.y, q);
}

/// Rewrites the pair at DequantizeLinear node `dqn` into f32 arithmetic when it is the second
/// half of a per-tensor QDQ pair. Returns true when it did.
fn fake_quant(g: &mut Graph, dqn: NodeId) -> bool {
    let d = g.node(dqn);
    let Some(&out) = d.outputs().first() else {
        return false;
    };
    let Some((x, ActQuant::Static { .. })) = match_qdq(g, out) else {
        return fake_quant_per_axis(g, dqn);
    };
    let Some(q) = d.input(0) else {
        return false;
    };
    let (s, z, lo, hi) = match (
        d.input(1).and_then(|v| const_f32(g, v)),
        g.value(q).ty.dtype,
    ) {
        (Some(s), Some(DType::U8)) => {
            let z = d
                .input(2)
                .and_then(|v| const_f32(g, v))
                .map_or(0.0, |z| z[0]);
            (s[0], z, 0.0f32, 255.0f32)
        }
        (Some(s), Some(DType::I8)) => {
            let z = d
                .input(2)
                .and_then(|v| const_f32(g, v))
                .map_or(0.0, |z| z[0]);
            (s[0], z, -128.0, 127.0)
        }
        _ => return false,
    };
    let base = g.value(out).name.clone();
    let sc = g.add_const(format!("{base}.fq_scale"), Tensor::scalar(s));
    let zc = g.add_const(format!("{base}.fq_zero"), Tensor::scalar(z));
    emit_fake_quant(g, out, x, [sc, zc], (lo, hi));
    true
}

/// Replaces `out` (the dequantized value of a QDQ pair on `x`) by the pair's arithmetic in
/// f32: `(clip(round(x / s) + z, lo, hi) − z) · s`, `s` and `z` constants that broadcast
/// against `x` (scalars, or `[C, 1, …]` along a per-axis pair's axis).
fn emit_fake_quant(
    g: &mut Graph,
    out: ValueId,
    x: ValueId,
    [sc, zc]: [ValueId; 2],
    (lo, hi): (f32, f32),
) {
    let base = g.value(out).name.clone();
    let loc = g.add_const(format!("{base}.fq_lo"), Tensor::scalar(lo));
    let hic = g.add_const(format!("{base}.fq_hi"), Tensor::scalar(hi));
    let t = g.add_simple(format!("{base}.fq_div"), Op::Div, &[x, sc]);
    let r = g.add_simple(format!("{base}.fq_round"), Op::Round, &[t]);
    let u = g.add_simple(format!("{base}.fq_shift"), Op::Add, &[r, zc]);
    let c = g.add_simple(format!("{base}.fq_clip"), Op::Clip, &[u, loc, hic]);
    let v = g.add_simple(format!("{base}.fq_center"), Op::Sub, &[c, zc]);
    let y = g.add_simple(format!("{base}.fq"), Op::Mul, &[v, sc]);
    replace_output(g, out, y);
}

/// [`fake_quant`] for a per-axis pair (`QuantizeLinear`/`DequantizeLinear` with the same
/// 1-D scale and zero point along the same `axis`, e.g. `quantize(act-per-channel=true)`): the
/// same f32 arithmetic with the parameters shaped `[C, 1, …]` to broadcast along `axis`.
fn fake_quant_per_axis(g: &mut Graph, dqn: NodeId) -> bool {
    let d = g.node(dqn);
    let (Op::DequantizeLinear(da), Some(&out), Some(q)) = (&d.op, d.outputs().first(), d.input(0))
    else {
        return false;
    };
    let Some((qn, Op::QuantizeLinear(qa))) = producer_op(g, q) else {
        return false;
    };
    let qnode = g.node(qn);
    let Some(x) = qnode.input(0) else {
        return false;
    };
    let rank = match &g.value(x).ty.shape {
        Some(sh) if g.value(x).ty.dtype == Some(DType::F32) => sh.rank() as i64,
        _ => return false,
    };
    let axis = if da.axis < 0 { da.axis + rank } else { da.axis };
    let qaxis = if qa.axis < 0 { qa.axis + rank } else { qa.axis };
    if da.block_size != 0 || qa.block_size != 0 || axis != qaxis || !(0..rank).contains(&axis) {
        return false;
    }
    let (Some(s1), Some(s2)) = (
        d.input(1).and_then(|v| const_f32(g, v)),
        qnode.input(1).and_then(|v| const_f32(g, v)),
    ) else {
        return false;
    };
    let zeros = |z: Option<ValueId>| match z {
        None => Some(vec![0.0f32; s1.len()]),
        Some(z) => const_f32(g, z),
    };
    let (Some(z1), Some(z2)) = (zeros(d.input(2)), zeros(qnode.input(2))) else {
        return false;
    };
    if s1 != s2
        || z1 != z2
        || z1.len() != s1.len()
        || s1.iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        return false;
    }
    let (lo, hi) = match g.value(q).ty.dtype {
        Some(DType::U8) => (0.0f32, 255.0f32),
        Some(DType::I8) => (-128.0, 127.0),
        _ => return false,
    };
    let mut shape = vec![s1.len()];
    shape.extend(std::iter::repeat_n(1, (rank - 1 - axis) as usize));
    let base = g.value(out).name.clone();
    let sc = g.add_const(
        format!("{base}.fq_scale"),
        Tensor::from_vec(shape.clone(), s1),
    );
    let zc = g.add_const(format!("{base}.fq_zero"), Tensor::from_vec(shape, z1));
    emit_fake_quant(g, out, x, [sc, zc], (lo, hi));
    true
}

/// Rewrites a QOperator-form `QLinearMatMul` / `QLinearConv` node into its QDQ form,
/// `QuantizeLinear(op(DequantizeLinear(a), DequantizeLinear(w)[, bias]), y_scale, y_zero)`, so
/// that the QDQ rules below apply (the weight and the activation pair become a QMatMul or f32
/// arithmetic; the output pair is matched by the consumers). Only the forms those rules
/// compile are rewritten: per-tensor activation parameters, a constant weight with scalar or
/// per-output-channel scales. The requantization is computed from the f32 product instead of
/// the exact integer one, which can move an output code by one step in a rounding tie.
/// Returns true when it rewrote.
fn decompose_qoperator(g: &mut Graph, n: NodeId) -> bool {
    let nd = g.node(n).clone();
    let conv = match &nd.op {
        Op::QLinearMatMul => None,
        Op::QLinearConv(a) => Some(a.clone()),
        _ => return false,
    };
    let inp = |i: usize| nd.input(i);
    let (Some(a), Some(a_s), Some(w), Some(w_s), Some(y_s)) =
        (inp(0), inp(1), inp(3), inp(4), inp(6))
    else {
        return false;
    };
    let (a_z, w_z, y_z) = (inp(2), inp(5), inp(7));
    let scalar =
        |v: Option<ValueId>| v.is_none_or(|v| const_f32(g, v).is_some_and(|x| x.len() == 1));
    if !scalar(Some(a_s)) || !scalar(a_z) || !scalar(Some(y_s)) || !scalar(y_z) {
        return false;
    }
    let Some(wt) = g.constant(w) else {
        return false;
    };
    let out_ch = match (&conv, wt.shape()) {
        (None, [_, n]) => *n,
        (Some(_), s) if s.len() >= 3 => s[0],
        _ => return false,
    };
    let Some(ws) = const_f32(g, w_s) else {
        return false;
    };
    if ws.len() != 1 && ws.len() != out_ch {
        return false;
    }
    let Some(&y) = nd.outputs().first() else {
        return false;
    };
    let base = g.value(y).name.clone();
    let dq = |g: &mut Graph, x: ValueId, s: ValueId, z: Option<ValueId>, axis: i64, what: &str| {
        g.add_node(
            format!("{base}.{what}_dq"),
            Op::DequantizeLinear(pare_ir::op::DequantizeAttrs {
                axis,
                block_size: 0,
            }),
            vec![Some(x), Some(s), z],
            vec![format!("{base}.{what}_dequantized")],
        )
    };
    let ad = dq(g, a, a_s, a_z, 1, "a");
    let ad = g.node(ad).outputs()[0];
    let wd = dq(g, w, w_s, w_z, if conv.is_some() { 0 } else { 1 }, "w");
    let wd = g.node(wd).outputs()[0];
    let f = match conv {
        None => g.add_simple(format!("{base}.float"), Op::MatMul, &[ad, wd]),
        Some(attrs) => {
            let mut ins = vec![Some(ad), Some(wd)];
            if let Some(b) = inp(8) {
                // The int32 bias has scale a_scale · w_scale[o].
                let (Some(bv), Some(sa)) = (
                    g.constant(b).and_then(|t| t.to_i64_vec()),
                    const_f32(g, a_s),
                ) else {
                    return false;
                };
                if bv.len() != out_ch {
                    return false;
                }
                let bf: Vec<f32> = bv
                    .iter()
                    .enumerate()
                    .map(|(o, &x)| x as f32 * (sa[0] * ws[if ws.len() == 1 { 0 } else { o }]))
                    .collect();
                ins.push(Some(g.add_const(
                    format!("{base}.bias"),
                    Tensor::from_vec(vec![out_ch], bf),
                )));
            }
            let c = g.add_node(
                format!("{base}.float"),
                Op::Conv(attrs),
                ins,
                vec![format!("{base}.float")],
            );
            g.node(c).outputs()[0]
        }
    };
    let q = g.add_node(
        format!("{base}.q"),
        Op::QuantizeLinear(pare_ir::op::QuantizeAttrs::default()),
        vec![Some(f), Some(y_s), y_z],
        vec![format!("{base}.requantized")],
    );
    let qo = g.node(q).outputs()[0];
    replace_output(g, y, qo);
    true
}

/// Rewrites every recognized quantized MatMul into a QMatMul, every recognized quantized
/// convolution into a QConv, and every remaining per-tensor
/// QDQ pair into f32 arithmetic (see the module doc), then removes what became dead. Types
/// must be inferred; the caller re-infers them afterwards.
pub fn fuse_quantized(g: &mut Graph) -> QFuseStats {
    let mut st = QFuseStats::default();
    let nodes: Vec<NodeId> = g.node_ids().collect();
    for &n in &nodes {
        if decompose_qoperator(g, n) {
            st.qoperator += 1;
        }
    }
    if st.qoperator > 0 {
        g.remove_dead_nodes();
        // The new nodes need types for the matching below.
        if pare_ir::infer::infer_types(g).is_err() {
            return st;
        }
    }
    let nodes: Vec<NodeId> = g.node_ids().collect();
    for n in nodes {
        if g.node(n).is_dead() {
            continue;
        }
        match g.node(n).op {
            Op::MatMulInteger => {
                if let Some(f) = match_dynamic(g, n) {
                    emit(g, f);
                    st.dynamic += 1;
                }
            }
            Op::MatMul | Op::Gemm(_) => {
                if let Some(f) = match_static(g, n) {
                    emit(g, f);
                    st.static_ += 1;
                }
            }
            Op::Conv(_) => {
                if let Some(f) = match_qconv(g, n) {
                    emit_qconv(g, f);
                    st.conv += 1;
                }
            }
            _ => {}
        }
    }
    g.remove_dead_nodes();
    let nodes: Vec<NodeId> = g.node_ids().collect();
    for n in nodes {
        if !g.node(n).is_dead()
            && matches!(g.node(n).op, Op::DequantizeLinear(_))
            && fake_quant(g, n)
        {
            st.fake_quant += 1;
        }
    }
    g.remove_dead_nodes();
    st
}
