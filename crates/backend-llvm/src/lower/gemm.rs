//! Convolution, transposed convolution, MatMul and Gemm lowering (weights pre-packed at compile
//! time), their epilogue folding (bias, residual add, activation), and pooling.

use super::{input, kernel, only_use, opt_input, unsupported, value_operand, Lowering};
use crate::fused::broadcast_strides;
use crate::plan::{dtype, shape, Builder, Operand};
use crate::Result;
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use pare_runtime::ops::conv::{
    conv_prepare_weights, conv_transpose_prepare_weights, ConvParams, ConvTransposeParams,
};
use pare_runtime::ops::matmul::{matmul_prepare_b, MatMulBias, MatMulParams};
use pare_runtime::ops::qconv::{qconv_prepare_weights, QConvParams};
use pare_runtime::ops::qmatmul::{qmatmul_prepare_b, QMatMulParams, QuantA};
use pare_runtime::ops::spmm::{spmm_is_faster, spmm_prepare_b, SpmmParams};
use pare_runtime::Activation;

/// A kernel whose epilogue may still absorb elementwise nodes.
#[derive(Clone, Debug)]
pub(crate) struct Epi {
    item: usize,
    kind: EpiKind,
}

#[derive(Clone, Debug)]
enum EpiKind {
    Conv(ConvParams),
    ConvT(ConvTransposeParams),
    MatMul(MatMulParams),
    QMatMul(QMatMulParams),
    QConv(QConvParams),
    Spmm(SpmmParams),
}

impl EpiKind {
    fn activation(&self) -> Activation {
        match self {
            EpiKind::Conv(p) => p.activation,
            EpiKind::ConvT(p) => p.activation,
            EpiKind::MatMul(p) => p.activation,
            EpiKind::QMatMul(p) => p.activation,
            EpiKind::QConv(p) => p.conv.activation,
            EpiKind::Spmm(p) => p.activation,
        }
    }
    fn encode(&self) -> Vec<i64> {
        match self {
            EpiKind::Conv(p) => p.encode(),
            EpiKind::ConvT(p) => p.encode(),
            EpiKind::MatMul(p) => p.encode(),
            EpiKind::QMatMul(p) => p.encode(),
            EpiKind::QConv(p) => p.encode(),
            EpiKind::Spmm(p) => p.encode(),
        }
    }
    /// Scratch bytes the kernel needs (the f32 MatMul needs none).
    fn scratch_bytes(&self) -> u64 {
        (match self {
            EpiKind::Conv(p) => p.scratch_bytes(),
            EpiKind::ConvT(p) => p.scratch_bytes(),
            EpiKind::MatMul(_) => 0,
            EpiKind::QMatMul(p) => p.scratch_bytes(),
            EpiKind::QConv(p) => p.scratch_bytes(),
            EpiKind::Spmm(p) => p.scratch_bytes(),
        }) as u64
    }
    /// Index of the output in the kernel's bufs.
    fn out_buf(&self) -> usize {
        match self {
            EpiKind::Conv(_) => 4,
            EpiKind::ConvT(_) => 3,
            EpiKind::MatMul(_) | EpiKind::QMatMul(_) | EpiKind::QConv(_) | EpiKind::Spmm(_) => 4,
        }
    }
}

/// Emits the kernel call of a GEMM-class node writing `y` (parameters and scratch from `kind`)
/// and records it, so that [`try_fold`] can fuse a following bias, residual or activation into
/// its epilogue.
fn epi_kernel(
    b: &mut Builder<'_>,
    cx: &mut Lowering,
    n: NodeId,
    func: &'static str,
    kind: EpiKind,
    operands: Vec<Operand>,
    y: ValueId,
) {
    let item = kernel(b, n, func, kind.encode(), operands, kind.scratch_bytes());
    cx.epi.insert(y, Epi { item, kind });
}

fn f32_const(g: &Graph, n: NodeId, v: ValueId, what: &str) -> Result<Vec<f32>> {
    let t = g.constant(v).ok_or_else(|| {
        unsupported(
            g,
            n,
            format!(
                "{what} must be a constant (weights computed at run time are not compiled yet)"
            ),
        )
    })?;
    if t.dtype() != DType::F32 {
        return Err(unsupported(
            g,
            n,
            format!("{what} is {}, only float32 is compiled", t.dtype().name()),
        ));
    }
    t.to_vec::<f32>()
        .map_err(|e| unsupported(g, n, e.to_string()))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Explicit (begin..., end...) pads of a conv-like op.
fn resolve_pads(
    auto_pad: &str,
    pads: Option<&Vec<i64>>,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
) -> Vec<usize> {
    let r = input.len();
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut b = vec![0; r];
            let mut e = vec![0; r];
            for i in 0..r {
                let out = input[i].div_ceil(strides[i]);
                let need = ((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1)
                    .saturating_sub(input[i]);
                let small = need / 2;
                if auto_pad == "SAME_UPPER" {
                    b[i] = small;
                    e[i] = need - small;
                } else {
                    b[i] = need - small;
                    e[i] = small;
                }
            }
            b.into_iter().chain(e).collect()
        }
        "VALID" => vec![0; 2 * r],
        _ => match pads {
            Some(p) => p.iter().map(|&x| x.max(0) as usize).collect(),
            None => vec![0; 2 * r],
        },
    }
}

/// Lowers Conv, ConvTranspose, MatMul and Gemm.
pub(crate) fn lower(b: &mut Builder<'_>, cx: &mut Lowering, n: NodeId) -> Result<()> {
    let g = b.g;
    let node = g.node(n);
    let y = node.outputs()[0];
    if dtype(g, y)? != DType::F32 {
        return Err(unsupported(g, n, "only float32 is compiled for this op"));
    }
    match &node.op {
        Op::Conv(a) => {
            let x = input(g, n, 0)?;
            let wv = input(g, n, 1)?;
            let xs = shape(g, x)?;
            let ws = shape(g, wv)?;
            if xs.len() != 3 && xs.len() != 4 {
                return Err(unsupported(
                    g,
                    n,
                    format!(
                        "{}-D convolution (1-D and 2-D are compiled)",
                        xs.len().saturating_sub(2)
                    ),
                ));
            }
            let one_d = xs.len() == 3;
            let sp_in: Vec<usize> = xs[2..].to_vec();
            let ker: Vec<usize> = ws[2..].to_vec();
            let r = sp_in.len();
            let strides: Vec<usize> = a
                .strides
                .clone()
                .map(|v| v.iter().map(|&x| x as usize).collect())
                .unwrap_or_else(|| vec![1; r]);
            let dil: Vec<usize> = a
                .dilations
                .clone()
                .map(|v| v.iter().map(|&x| x as usize).collect())
                .unwrap_or_else(|| vec![1; r]);
            let pads = resolve_pads(&a.auto_pad, a.pads.as_ref(), &sp_in, &ker, &strides, &dil);
            let (h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) = if one_d {
                (
                    1, sp_in[0], 1, ker[0], 1, strides[0], 1, dil[0], 0, pads[0], 0, pads[1],
                )
            } else {
                (
                    sp_in[0], sp_in[1], ker[0], ker[1], strides[0], strides[1], dil[0], dil[1],
                    pads[0], pads[1], pads[2], pads[3],
                )
            };
            let mut p = ConvParams::new(xs[0], xs[1], h, w, ws[0], kh, kw);
            p.stride_h = sh;
            p.stride_w = sw;
            p.dilation_h = dh;
            p.dilation_w = dw;
            p.pad_top = pt;
            p.pad_left = pl;
            p.pad_bottom = pb;
            p.pad_right = pr;
            p.group = a.group.max(1) as usize;
            let bias = opt_input(g, n, 2);
            p.has_bias = bias.is_some();
            p.validate().map_err(|e| unsupported(g, n, e.message))?;
            let wdata = f32_const(g, n, wv, "the weight")?;
            let prepared = conv_prepare_weights(&p, &wdata);
            let wc = b.add_const(&format!("{}.w", g.value(wv).name), f32_bytes(&prepared));
            let bias_op = bias.map_or(Operand::Null, |bv| value_operand(b, bv));
            let xo = value_operand(b, x);
            epi_kernel(
                b,
                cx,
                n,
                "pare_k_conv",
                EpiKind::Conv(p),
                vec![
                    xo,
                    Operand::Const(wc),
                    bias_op,
                    Operand::Null,
                    Operand::Value(y),
                    Operand::Scratch,
                ],
                y,
            );
            Ok(())
        }
        Op::ConvTranspose(a) => {
            let x = input(g, n, 0)?;
            let wv = input(g, n, 1)?;
            let xs = shape(g, x)?;
            let ws = shape(g, wv)?;
            let ys = shape(g, y)?;
            if xs.len() != 4 {
                return Err(unsupported(
                    g,
                    n,
                    "only 2-D transposed convolution is compiled",
                ));
            }
            let group = a.group.max(1) as usize;
            let strides: Vec<usize> = a
                .strides
                .clone()
                .map(|v| v.iter().map(|&x| x as usize).collect())
                .unwrap_or_else(|| vec![1; 2]);
            let dil: Vec<usize> = a
                .dilations
                .clone()
                .map(|v| v.iter().map(|&x| x as usize).collect())
                .unwrap_or_else(|| vec![1; 2]);
            let (pt, pl) = match (&a.pads, a.auto_pad.as_str()) {
                (Some(p), "NOTSET") => (p[0].max(0) as usize, p[1].max(0) as usize),
                (_, "SAME_UPPER") | (_, "SAME_LOWER") => {
                    let mut beg = [0usize; 2];
                    for i in 0..2 {
                        let total = (strides[i] * (xs[2 + i] - 1) + (ws[2 + i] - 1) * dil[i] + 1)
                            .saturating_sub(ys[2 + i]);
                        beg[i] = if a.auto_pad == "SAME_UPPER" {
                            total / 2
                        } else {
                            total - total / 2
                        };
                    }
                    (beg[0], beg[1])
                }
                _ => (0, 0),
            };
            let bias = opt_input(g, n, 2);
            let p = ConvTransposeParams {
                n: xs[0],
                c_in: xs[1],
                h: xs[2],
                w: xs[3],
                c_out: ws[1] * group,
                kh: ws[2],
                kw: ws[3],
                stride_h: strides[0],
                stride_w: strides[1],
                dilation_h: dil[0],
                dilation_w: dil[1],
                pad_top: pt,
                pad_left: pl,
                out_h: ys[2],
                out_w: ys[3],
                group,
                has_bias: bias.is_some(),
                activation: Activation::Identity,
            };
            p.validate().map_err(|e| unsupported(g, n, e.message))?;
            let wdata = f32_const(g, n, wv, "the weight")?;
            let prepared = conv_transpose_prepare_weights(&p, &wdata);
            let wc = b.add_const(&format!("{}.w", g.value(wv).name), f32_bytes(&prepared));
            let bias_op = bias.map_or(Operand::Null, |bv| value_operand(b, bv));
            let xo = value_operand(b, x);
            epi_kernel(
                b,
                cx,
                n,
                "pare_k_conv_transpose",
                EpiKind::ConvT(p),
                vec![
                    xo,
                    Operand::Const(wc),
                    bias_op,
                    Operand::Value(y),
                    Operand::Scratch,
                ],
                y,
            );
            Ok(())
        }
        Op::MatMul => {
            let av = input(g, n, 0)?;
            let bv = input(g, n, 1)?;
            if dtype(g, av)? != DType::F32 || dtype(g, bv)? != DType::F32 {
                return Err(unsupported(g, n, "only float32 MatMul is compiled"));
            }
            let mut as_ = shape(g, av)?;
            let mut bs = shape(g, bv)?;
            if as_.len() == 1 {
                as_.insert(0, 1);
            }
            if bs.len() == 1 {
                bs.push(1);
            }
            let (m, k) = (as_[as_.len() - 2], as_[as_.len() - 1]);
            let nn = bs[bs.len() - 1];
            let a_batch: Vec<usize> = as_[..as_.len() - 2].to_vec();
            let b_batch: Vec<usize> = bs[..bs.len() - 2].to_vec();
            let a_count: usize = a_batch.iter().product();
            let b_count: usize = b_batch.iter().product();
            let mut p = MatMulParams::new(1, m, nn, k);
            let b_op;
            if b_count == 1 && g.constant(bv).is_some() {
                let bdata = f32_const(g, n, bv, "B")?;
                if spmm_is_faster(m * a_count, k, nn, &bdata, false) {
                    return lower_spmm(b, cx, n, (m * a_count, k, nn), &bdata, false, av, y, None);
                }
                // Shared constant B: fold A's batches into M, B packed at compile time.
                p.batch = 1;
                p.m = m * a_count;
                p.a_batch_stride = p.m * k;
                p.b_batch_stride = 0;
                p.b_prepacked = true;
                let packed = matmul_prepare_b(&p, &bdata);
                b_op = Operand::Const(
                    b.add_const(&format!("{}.packed", g.value(bv).name), f32_bytes(&packed)),
                );
            } else {
                let ys = shape(g, y)?;
                let batch: usize = ys[..ys.len().saturating_sub(2)]
                    .iter()
                    .product::<usize>()
                    .max(1);
                let rank = a_batch.len().max(b_batch.len());
                let out_batch: Vec<usize> = ys[..ys.len().saturating_sub(2)].to_vec();
                let _ = rank;
                let uniform = |s: &[usize]| -> Option<usize> {
                    // Stride per flattened batch: the whole batch (equal shape) or 0 (all ones).
                    let c: usize = s.iter().product();
                    if c == 1 {
                        Some(0)
                    } else if c == batch
                        && broadcast_strides(s, &out_batch)
                            .iter()
                            .all(|&x| x != 0 || out_batch.is_empty())
                    {
                        Some(1)
                    } else {
                        None
                    }
                };
                let (Some(sa), Some(sb)) = (uniform(&a_batch), uniform(&b_batch)) else {
                    return Err(unsupported(
                        g,
                        n,
                        "batched MatMul with mixed broadcasting of batch dims",
                    ));
                };
                p.batch = batch;
                p.a_batch_stride = sa * m * k;
                p.b_batch_stride = sb * k * nn;
                b_op = value_operand(b, bv);
            }
            let ao = value_operand(b, av);
            epi_kernel(
                b,
                cx,
                n,
                "pare_k_matmul",
                EpiKind::MatMul(p),
                vec![ao, b_op, Operand::Null, Operand::Null, Operand::Value(y)],
                y,
            );
            Ok(())
        }
        Op::Gemm(a) => {
            let av = input(g, n, 0)?;
            let bv = input(g, n, 1)?;
            let cv = opt_input(g, n, 2);
            let as_ = shape(g, av)?;
            let bs = shape(g, bv)?;
            let (m, k) = if a.trans_a {
                (as_[1], as_[0])
            } else {
                (as_[0], as_[1])
            };
            let nn = if a.trans_b { bs[0] } else { bs[1] };
            // A per-column constant C (or none) becomes the sparse kernel's bias.
            let c_bias = match cv {
                None => Some(None),
                Some(c) => g
                    .constant(c)
                    .filter(|t| t.numel() == nn || t.numel() == 1)
                    .and_then(|t| t.to_f64_vec())
                    .map(|v| {
                        Some(
                            (0..nn)
                                .map(|j| (v[if v.len() == 1 { 0 } else { j }] as f32) * a.beta)
                                .collect::<Vec<f32>>(),
                        )
                    }),
            };
            if let (false, true, Some(bias), true) =
                (a.trans_a, a.alpha == 1.0, c_bias, g.constant(bv).is_some())
            {
                let bdata = f32_const(g, n, bv, "B")?;
                if spmm_is_faster(m, k, nn, &bdata, a.trans_b) {
                    let bias = bias.map(|v| {
                        let name = format!("{}.bias", g.value(y).name);
                        Operand::Const(b.add_const(&name, f32_bytes(&v)))
                    });
                    return lower_spmm(b, cx, n, (m, k, nn), &bdata, a.trans_b, av, y, bias);
                }
            }
            let mut p = MatMulParams::new(1, m, nn, k);
            p.trans_a = a.trans_a;
            p.trans_b = a.trans_b;
            p.alpha = a.alpha;
            let b_op = if g.constant(bv).is_some() {
                p.b_prepacked = true;
                p.b_batch_stride = 0;
                let bdata = f32_const(g, n, bv, "B")?;
                let packed = matmul_prepare_b(&p, &bdata);
                Operand::Const(
                    b.add_const(&format!("{}.packed", g.value(bv).name), f32_bytes(&packed)),
                )
            } else {
                value_operand(b, bv)
            };
            let mut bias_op = Operand::Null;
            let mut res_op = Operand::Null;
            if let Some(cv) = cv {
                let cs = shape(g, cv)?;
                let cnum: usize = cs.iter().product();
                let beta = a.beta;
                let scaled = |b: &mut Builder<'_>, len: usize| -> Result<Operand> {
                    let mut c = f32_const(g, n, cv, "C (with broadcasting)")?;
                    if c.len() == 1 && len > 1 {
                        c = vec![c[0]; len];
                    }
                    for x in c.iter_mut() {
                        *x *= beta;
                    }
                    Ok(Operand::Const(b.add_const(
                        &format!("{}.c", g.value(cv).name),
                        f32_bytes(&c),
                    )))
                };
                if cnum == m * nn && cs.len() == 2 && cs[0] == m {
                    p.has_residual = true;
                    res_op = if beta == 1.0 {
                        value_operand(b, cv)
                    } else {
                        scaled(b, cnum)?
                    };
                } else if cnum == nn || cnum == 1 {
                    p.bias = MatMulBias::PerColumn;
                    bias_op = if beta == 1.0 && cnum == nn {
                        value_operand(b, cv)
                    } else {
                        scaled(b, nn)?
                    };
                } else if cnum == m {
                    p.bias = MatMulBias::PerRow;
                    bias_op = if beta == 1.0 {
                        value_operand(b, cv)
                    } else {
                        scaled(b, m)?
                    };
                } else {
                    return Err(unsupported(g, n, format!("C of shape {cs:?}")));
                }
            }
            let ao = value_operand(b, av);
            epi_kernel(
                b,
                cx,
                n,
                "pare_k_matmul",
                EpiKind::MatMul(p),
                vec![ao, b_op, bias_op, res_op, Operand::Value(y)],
                y,
            );
            Ok(())
        }
        _ => Err(unsupported(g, n, "not a GEMM-class op")),
    }
}

/// Lowers a MatMul/Gemm whose constant weight is sparse enough that the sparse kernel
/// (`pare_k_spmm`, CSR per output column) is measured to beat the dense SGEMM
/// ([`spmm_is_faster`]); bias, residual and activation fold into its epilogue.
#[allow(clippy::too_many_arguments)] // the node's operands
fn lower_spmm(
    b: &mut Builder<'_>,
    cx: &mut Lowering,
    n: NodeId,
    (m, k, nn): (usize, usize, usize),
    w: &[f32],
    trans_b: bool,
    av: ValueId,
    y: ValueId,
    bias: Option<Operand>,
) -> Result<()> {
    let g = b.g;
    let blob = spmm_prepare_b(k, nn, w, trans_b)
        .map_err(|e| unsupported(g, n, format!("packing the sparse weight: {e}")))?;
    let mut p = SpmmParams::for_weight(m, &blob)
        .map_err(|e| unsupported(g, n, format!("sparse weight: {e}")))?;
    p.has_bias = bias.is_some();
    let mut bytes = Vec::with_capacity(blob.len() * 4);
    for word in &blob {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let wname = g
        .node(n)
        .input(1)
        .map_or_else(|| "w".to_string(), |v| g.value(v).name.clone());
    let b_op = Operand::Const(b.add_const(&format!("{wname}.sparse"), bytes));
    let ao = value_operand(b, av);
    epi_kernel(
        b,
        cx,
        n,
        "pare_k_spmm",
        EpiKind::Spmm(p),
        vec![
            ao,
            b_op,
            bias.unwrap_or(Operand::Null),
            Operand::Null,
            Operand::Value(y),
            Operand::Scratch,
        ],
        y,
    );
    Ok(())
}

/// Lowers a QMatMul node (see [`crate::qfuse`]) to `pare_k_qmatmul` with the weight packed at
/// compile time; bias, residual and activation are folded into its epilogue like a MatMul's.
pub(crate) fn lower_qmatmul(b: &mut Builder<'_>, cx: &mut Lowering, n: NodeId) -> Result<()> {
    let g = b.g;
    let node = g.node(n);
    let a = match crate::qfuse::as_qmatmul(&node.op) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(unsupported(g, n, e)),
        None => return Err(unsupported(g, n, "not a QMatMul")),
    };
    let x = input(g, n, 0)?;
    let wv = input(g, n, 1)?;
    let sv = input(g, n, 2)?;
    let y = node.outputs()[0];
    let xs = shape(g, x)?;
    if dtype(g, x)? != DType::F32 || xs.last() != Some(&a.k) {
        return Err(unsupported(
            g,
            n,
            format!("input of shape {xs:?}, K = {}", a.k),
        ));
    }
    let m: usize = xs[..xs.len() - 1].iter().product();
    let codes: Vec<i8> = g
        .constant(wv)
        .and_then(|t| t.to_vec::<i8>().ok())
        .filter(|c| c.len() == a.k * a.n)
        .ok_or_else(|| unsupported(g, n, "the weight must be a constant int8 [K, N] matrix"))?;
    let scales = f32_const(g, n, sv, "the weight scale")?;
    if scales.len() != a.n {
        return Err(unsupported(g, n, "the weight scale must have N values"));
    }
    let (blob, format, seven_bit) = qmatmul_prepare_b(a.k, a.n, &codes, &scales)
        .map_err(|e| unsupported(g, n, format!("packing the int8 weight: {e}")))?;
    let quant = match a.quant {
        crate::qfuse::ActQuant::Dynamic => QuantA::Dynamic,
        crate::qfuse::ActQuant::Static { scale, zero } => QuantA::Static { scale, zero },
    };
    let mut p = QMatMulParams::new(m, a.n, a.k, format, quant);
    p.seven_bit = seven_bit;
    let mut bytes = Vec::with_capacity(blob.len() * 4);
    for w in &blob {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let b_op = Operand::Const(b.add_const(&format!("{}.packed", g.value(wv).name), bytes));
    let xo = value_operand(b, x);
    epi_kernel(
        b,
        cx,
        n,
        "pare_k_qmatmul",
        EpiKind::QMatMul(p),
        vec![
            xo,
            b_op,
            Operand::Null,
            Operand::Null,
            Operand::Value(y),
            Operand::Scratch,
        ],
        y,
    );
    Ok(())
}

/// Lowers a QConv node (see [`crate::qfuse`]) to `pare_k_qconv` with the weight packed at
/// compile time; bias, residual and activation are folded into its epilogue like a Conv's.
pub(crate) fn lower_qconv(b: &mut Builder<'_>, cx: &mut Lowering, n: NodeId) -> Result<()> {
    let g = b.g;
    let node = g.node(n);
    let a = match crate::qfuse::as_qconv(&node.op) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(unsupported(g, n, e)),
        None => return Err(unsupported(g, n, "not a QConv")),
    };
    let x = input(g, n, 0)?;
    let wv = input(g, n, 1)?;
    let sv = input(g, n, 2)?;
    let bias = opt_input(g, n, 3);
    let y = node.outputs()[0];
    let xs = shape(g, x)?;
    if dtype(g, x)? != DType::F32 || xs.len() != 4 || xs[1] != a.c_in {
        return Err(unsupported(
            g,
            n,
            format!("input of shape {xs:?}, C_in = {}", a.c_in),
        ));
    }
    let mut c = ConvParams::new(
        xs[0],
        a.c_in,
        xs[2],
        xs[3],
        a.c_out,
        a.kernel[0],
        a.kernel[1],
    );
    (c.stride_h, c.stride_w) = (a.strides[0], a.strides[1]);
    (c.dilation_h, c.dilation_w) = (a.dilations[0], a.dilations[1]);
    (c.pad_top, c.pad_left, c.pad_bottom, c.pad_right) =
        (a.pads[0], a.pads[1], a.pads[2], a.pads[3]);
    c.has_bias = bias.is_some();
    let len = a.c_out * a.c_in * a.kernel[0] * a.kernel[1];
    let codes: Vec<i8> = g
        .constant(wv)
        .and_then(|t| t.to_vec::<i8>().ok())
        .filter(|c| c.len() == len)
        .ok_or_else(|| {
            unsupported(
                g,
                n,
                "the weight must be a constant int8 [C_out, C_in, kh, kw] tensor",
            )
        })?;
    let scales = f32_const(g, n, sv, "the weight scale")?;
    if scales.len() != a.c_out {
        return Err(unsupported(g, n, "the weight scale must have C_out values"));
    }
    let (blob, format, seven_bit) =
        qconv_prepare_weights(a.c_out, a.c_in, a.kernel[0], a.kernel[1], &codes, &scales)
            .map_err(|e| unsupported(g, n, format!("packing the int8 weight: {e}")))?;
    let mut p = QConvParams::new(c, format, a.x_scale, a.x_zero);
    p.seven_bit = seven_bit;
    p.validate().map_err(|e| unsupported(g, n, e.message))?;
    let mut bytes = Vec::with_capacity(blob.len() * 4);
    for w in &blob {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let b_op = Operand::Const(b.add_const(&format!("{}.packed", g.value(wv).name), bytes));
    let bias_op = bias.map_or(Operand::Null, |bv| value_operand(b, bv));
    let xo = value_operand(b, x);
    epi_kernel(
        b,
        cx,
        n,
        "pare_k_qconv",
        EpiKind::QConv(p),
        vec![
            xo,
            b_op,
            bias_op,
            Operand::Null,
            Operand::Value(y),
            Operand::Scratch,
        ],
        y,
    );
    Ok(())
}

fn scalar_const(g: &Graph, v: Option<ValueId>) -> Option<Option<f32>> {
    match v {
        None => Some(None),
        Some(v) => {
            let t = g.constant(v)?;
            if t.numel() != 1 {
                return None;
            }
            Some(Some(t.to_f64_vec()?[0] as f32))
        }
    }
}

/// Tries to fold elementwise node `n` into the epilogue of the kernel that produced one of its
/// operands. Returns true when folded.
pub(crate) fn try_fold(b: &mut Builder<'_>, cx: &mut Lowering, n: NodeId) -> Result<bool> {
    let g = b.g;
    let node = g.node(n);
    let out = node.outputs()[0];
    if dtype(g, out)? != DType::F32 {
        return Ok(false);
    }
    let candidates: Vec<(usize, ValueId)> = node
        .inputs()
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .filter(|(_, v)| cx.epi.contains_key(v) && only_use(g, *v, n) && !g.outputs().contains(v))
        .collect();
    for (pos, v) in candidates {
        let mut epi = cx.epi[&v].clone();
        let ident = epi.kind.activation() == Activation::Identity;
        let act = match &node.op {
            Op::Relu if pos == 0 => Some(Activation::Relu),
            Op::Sigmoid if pos == 0 => Some(Activation::Sigmoid),
            Op::Tanh if pos == 0 => Some(Activation::Tanh),
            Op::HardSwish if pos == 0 => Some(Activation::HardSwish),
            Op::HardSigmoid(a) if pos == 0 => Some(Activation::HardSigmoid {
                alpha: a.alpha,
                beta: a.beta,
            }),
            Op::LeakyRelu(a) if pos == 0 => Some(Activation::LeakyRelu { alpha: a.alpha }),
            Op::Gelu(a) if pos == 0 => Some(if a.approximate == "tanh" {
                Activation::GeluTanh
            } else {
                Activation::Gelu
            }),
            Op::Clip if pos == 0 => match (
                scalar_const(g, super::opt_input(g, n, 1)),
                scalar_const(g, super::opt_input(g, n, 2)),
            ) {
                (Some(lo), Some(hi)) => Some(Activation::Clamp {
                    min: lo.unwrap_or(f32::NEG_INFINITY),
                    max: hi.unwrap_or(f32::INFINITY),
                }),
                _ => None,
            },
            _ => None,
        };
        let mut new_bias = None;
        let mut new_res = None;
        if let Some(act) = act {
            if !ident {
                continue;
            }
            match &mut epi.kind {
                EpiKind::Conv(p) => p.activation = act,
                EpiKind::ConvT(p) => p.activation = act,
                EpiKind::MatMul(p) => p.activation = act,
                EpiKind::QMatMul(p) => p.activation = act,
                EpiKind::QConv(p) => p.conv.activation = act,
                EpiKind::Spmm(p) => p.activation = act,
            }
        } else if matches!(node.op, Op::Add) && ident {
            let other = node.inputs()[1 - pos].expect("binary");
            if dtype(g, other)? != DType::F32 {
                continue;
            }
            let ys = shape(g, v)?;
            let os = shape(g, other)?;
            let st = broadcast_strides(&os, &ys);
            let same = os == ys;
            let per_channel = |ch_axis: usize| -> bool {
                ys.len() >= 2
                    && st
                        .iter()
                        .enumerate()
                        .all(|(i, &s)| (i == ch_axis) == (s != 0) || ys[i] == 1)
            };
            match &mut epi.kind {
                EpiKind::Conv(p) | EpiKind::QConv(QConvParams { conv: p, .. })
                    if !p.has_bias
                        && !p.has_residual
                        && g.constant(other).is_some()
                        && per_channel(1) =>
                {
                    p.has_bias = true;
                    new_bias = Some(other);
                }
                EpiKind::ConvT(p)
                    if !p.has_bias && g.constant(other).is_some() && per_channel(1) =>
                {
                    p.has_bias = true;
                    new_bias = Some(other);
                }
                EpiKind::MatMul(p)
                    if p.bias == MatMulBias::None
                        && !p.has_residual
                        && g.constant(other).is_some()
                        && per_channel(ys.len() - 1)
                        && shape(g, other)?.iter().product::<usize>() == p.n =>
                {
                    p.bias = MatMulBias::PerColumn;
                    new_bias = Some(other);
                }
                EpiKind::QMatMul(QMatMulParams {
                    has_bias,
                    has_residual,
                    n,
                    ..
                })
                | EpiKind::Spmm(SpmmParams {
                    has_bias,
                    has_residual,
                    n,
                    ..
                }) if !*has_bias
                    && !*has_residual
                    && g.constant(other).is_some()
                    && per_channel(ys.len() - 1)
                    && shape(g, other)?.iter().product::<usize>() == *n =>
                {
                    *has_bias = true;
                    new_bias = Some(other);
                }
                EpiKind::QMatMul(QMatMulParams { has_residual, .. })
                | EpiKind::Spmm(SpmmParams { has_residual, .. })
                    if !*has_residual && same && b.ready_before(other, epi.item) =>
                {
                    *has_residual = true;
                    new_res = Some(other);
                }
                EpiKind::Conv(p) | EpiKind::QConv(QConvParams { conv: p, .. })
                    if !p.has_residual && same && b.ready_before(other, epi.item) =>
                {
                    p.has_residual = true;
                    new_res = Some(other);
                }
                EpiKind::MatMul(p)
                    if !p.has_residual && same && b.ready_before(other, epi.item) =>
                {
                    p.has_residual = true;
                    new_res = Some(other);
                }
                _ => continue,
            }
        } else {
            continue;
        }
        // Commit: the kernel now writes `out`.
        let bias_op = new_bias.map(|bv| value_operand(b, bv));
        let res_op = new_res.map(|rv| value_operand(b, rv));
        let words = epi.kind.encode();
        let out_buf = epi.kind.out_buf();
        let is_convt = matches!(epi.kind, EpiKind::ConvT(_));
        let Some(k) = b.kernel_mut(epi.item) else {
            return Ok(false);
        };
        k.params = words;
        k.bufs[out_buf] = Operand::Value(out);
        if let Some(op) = bias_op {
            k.bufs[2] = op;
        }
        if let Some(op) = res_op {
            if is_convt {
                return Err(crate::BackendError::Internal(
                    "residual on ConvTranspose".into(),
                ));
            }
            k.bufs[3] = op;
        }
        b.step_note(epi.item, node.op.name());
        b.retarget(v, out);
        cx.epi.remove(&v);
        cx.epi.insert(out, epi);
        return Ok(true);
    }
    Ok(false)
}

/// Pooling (1-D and 2-D windows, global pools of any rank >= 3).
pub(crate) fn lower_pool(b: &mut Builder<'_>, n: NodeId) -> Result<()> {
    use pare_runtime::ops::pool::{PoolKind, PoolParams};
    let g = b.g;
    let node = g.node(n);
    let x = input(g, n, 0)?;
    let y = node.outputs()[0];
    if dtype(g, x)? != DType::F32 {
        return Err(unsupported(g, n, "only float32 pooling is compiled"));
    }
    if node.outputs().len() > 1 && node.outputs()[1..].iter().any(|&o| !g.uses(o).is_empty()) {
        return Err(unsupported(g, n, "MaxPool indices output"));
    }
    let xs = shape(g, x)?;
    let ys = shape(g, y)?;
    let (kind, attrs) = match &node.op {
        Op::MaxPool(a) => (PoolKind::Max, Some(a)),
        Op::AveragePool(a) => (PoolKind::Average, Some(a)),
        Op::GlobalMaxPool => (PoolKind::GlobalMax, None),
        _ => (PoolKind::GlobalAverage, None),
    };
    let spatial: usize = xs[2..].iter().product();
    let mut p = PoolParams {
        kind,
        n: xs[0],
        c: xs[1],
        h: 1,
        w: spatial,
        out_h: 1,
        out_w: 1,
        kh: 1,
        kw: 1,
        stride_h: 1,
        stride_w: 1,
        pad_top: 0,
        pad_left: 0,
        pad_bottom: 0,
        pad_right: 0,
        dilation_h: 1,
        dilation_w: 1,
        count_include_pad: false,
    };
    if let Some(a) = attrs {
        let r = xs.len() - 2;
        if r != 1 && r != 2 {
            return Err(unsupported(
                g,
                n,
                format!("{r}-D pooling (1-D and 2-D are compiled)"),
            ));
        }
        if a.storage_order != 0 {
            return Err(unsupported(g, n, "storage_order=1"));
        }
        let ker: Vec<usize> = a.kernel_shape.iter().map(|&k| k as usize).collect();
        let strides: Vec<usize> = a
            .strides
            .clone()
            .map(|v| v.iter().map(|&x| x as usize).collect())
            .unwrap_or_else(|| vec![1; r]);
        let dil: Vec<usize> = a
            .dilations
            .clone()
            .map(|v| v.iter().map(|&x| x as usize).collect())
            .unwrap_or_else(|| vec![1; r]);
        let pads = resolve_pads(&a.auto_pad, a.pads.as_ref(), &xs[2..], &ker, &strides, &dil);
        if r == 1 {
            (
                p.w,
                p.out_w,
                p.kw,
                p.stride_w,
                p.dilation_w,
                p.pad_left,
                p.pad_right,
            ) = (xs[2], ys[2], ker[0], strides[0], dil[0], pads[0], pads[1]);
        } else {
            (p.h, p.w, p.out_h, p.out_w) = (xs[2], xs[3], ys[2], ys[3]);
            (p.kh, p.kw, p.stride_h, p.stride_w) = (ker[0], ker[1], strides[0], strides[1]);
            (p.dilation_h, p.dilation_w) = (dil[0], dil[1]);
            (p.pad_top, p.pad_left, p.pad_bottom, p.pad_right) =
                (pads[0], pads[1], pads[2], pads[3]);
        }
        p.count_include_pad = a.count_include_pad;
    }
    let xo = value_operand(b, x);
    kernel(
        b,
        n,
        "pare_k_pool",
        p.encode(),
        vec![xo, Operand::Value(y)],
        0,
    );
    Ok(())
}
