//! Static cost of a graph: parameters, weight bytes by dtype, and FLOPs per node.
//!
//! FLOPs count a multiply-add as two operations (MACs × 2) for MatMul, Gemm, convolutions,
//! Einsum and recurrent cells; elementwise ops count one per output element; reductions,
//! pooling and normalizations count per input element read (normalizations and softmax a small
//! constant per element, stated below). Shape-only ops cost nothing. A node whose shapes are
//! not static has unknown cost; the summary says how many such nodes there are.

use crate::{DType, Graph, NodeId, Op, TensorType, ValueId};
use std::collections::BTreeMap;

/// Cost summary of a graph (subgraphs of If/Loop/Scan not included in FLOPs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostSummary {
    /// Elements of weight constants (floating point and 8/4-bit integer constants).
    pub params: u64,
    /// Bytes of all constants, by dtype.
    pub bytes_by_dtype: BTreeMap<DType, u64>,
    /// Total FLOPs of the nodes with known cost.
    pub flops: u64,
    /// FLOPs by op type.
    pub flops_by_op: BTreeMap<String, u64>,
    /// Nodes whose cost could not be computed (dynamic shapes, control flow).
    pub unknown_nodes: usize,
}

impl CostSummary {
    /// Total weight bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes_by_dtype.values().sum()
    }
}

fn is_weight(d: DType) -> bool {
    d.is_float()
        || matches!(
            d,
            DType::I8 | DType::U8 | DType::I4 | DType::U4 | DType::I2 | DType::U2
        )
}

/// Computes the summary.
pub fn cost(g: &Graph) -> CostSummary {
    let mut s = CostSummary::default();
    for (v, t) in g.constants() {
        if g.uses(v).is_empty() {
            continue;
        }
        *s.bytes_by_dtype.entry(t.dtype()).or_default() += t.byte_len() as u64;
        if is_weight(t.dtype()) {
            s.params += t.numel() as u64;
        }
    }
    for n in g.node_ids() {
        match node_flops(g, n) {
            Some(f) => {
                s.flops += f;
                *s.flops_by_op
                    .entry(g.node(n).op.name().to_string())
                    .or_default() += f;
            }
            None => s.unknown_nodes += 1,
        }
    }
    s
}

fn dims(g: &Graph, v: Option<crate::ValueId>) -> Option<Vec<u64>> {
    let v = v?;
    g.value(v)
        .ty
        .shape
        .as_ref()?
        .0
        .iter()
        .map(|d| d.fixed())
        .collect()
}

fn numel(d: &[u64]) -> u64 {
    d.iter().product()
}

/// FLOPs of one node; `None` when its shapes are not static or it holds subgraphs.
pub fn node_flops(g: &Graph, n: NodeId) -> Option<u64> {
    let node = g.node(n);
    let out = || dims(g, node.outputs().first().copied());
    let inp = |i: usize| dims(g, node.input(i));
    use Op::*;
    Some(match &node.op {
        MatMul | MatMulInteger | QLinearMatMul => {
            let a = inp(0)?;
            let k = *a.last()?;
            2 * numel(&out()?) * k
        }
        Gemm(at) => {
            let a = inp(0)?;
            let k = if at.trans_a { a[0] } else { *a.get(1)? };
            let o = numel(&out()?);
            2 * o * k + if node.input(2).is_some() { o } else { 0 }
        }
        Conv(_) | ConvInteger(_) | QLinearConv(_) => {
            let w_idx = if matches!(node.op, QLinearConv(_)) {
                3
            } else {
                1
            };
            let w = inp(w_idx)?;
            let per_out: u64 = w[1..].iter().product();
            let o = numel(&out()?);
            2 * o * per_out
                + if node.input(2).is_some() && matches!(node.op, Conv(_)) {
                    o
                } else {
                    0
                }
        }
        ConvTranspose(_) => {
            let x = inp(0)?;
            let w = inp(1)?;
            let per_in: u64 = w[1..].iter().product();
            2 * numel(&x) * per_in
        }
        Einsum(_) => return None,
        Lstm(a) | Gru(a) | Rnn(a) => {
            let x = inp(0)?;
            let (seq, batch, input) = if a.layout == 0 {
                (x[0], x[1], x[2])
            } else {
                (x[1], x[0], x[2])
            };
            let h = a.hidden_size? as u64;
            let dirs = if a.direction == "bidirectional" { 2 } else { 1 };
            let gates = match node.op {
                Lstm(_) => 4,
                Gru(_) => 3,
                _ => 1,
            };
            2 * seq * batch * dirs * gates * h * (input + h)
        }
        AveragePool(p) | MaxPool(p) | LpPool(p) => {
            numel(&out()?) * p.kernel_shape.iter().product::<i64>().max(1) as u64
        }
        Softmax(_) | LogSoftmax(_) | Hardmax(_) => 3 * numel(&inp(0)?),
        Attention(at) => {
            // Q·Kᵀ: numel(Q)·T multiply-adds; P·V: numel(Y)·T; softmax: 3 per score, with
            // B·Hq·Sq·T scores (T = past + kv sequence length).
            let q = inp(0)?;
            let k = inp(1)?;
            let (kv, head) = match (q.as_slice(), k.as_slice()) {
                ([_, _, _, d], [_, _, t, _]) => (*t, *d),
                ([_, _, hidden], [_, t, _]) => (*t, hidden / (at.q_num_heads? as u64).max(1)),
                _ => return None,
            };
            let past = match dims(g, node.input(4)) {
                Some(p) => *p.get(2)?,
                None if node.input(4).is_some() => return None,
                None => 0,
            };
            let total = kv + past;
            let scores = numel(&q) / head.max(1) * total;
            2 * numel(&q) * total + 2 * numel(&out()?) * total + 3 * scores
        }
        LayerNormalization(_)
        | GroupNormalization(_)
        | InstanceNormalization(_)
        | BatchNormalization(_)
        | MeanVarianceNormalization(_)
        | LpNormalization(_)
        | Lrn(_) => 5 * numel(&inp(0)?),
        Custom(c) => {
            let types = |vs: &mut dyn Iterator<Item = Option<ValueId>>| -> Vec<TensorType> {
                vs.map(|v| v.map_or(TensorType::UNKNOWN, |v| g.value(v).ty.clone()))
                    .collect()
            };
            let ins = types(&mut node.inputs().iter().copied());
            let outs = types(&mut node.outputs().iter().map(|&v| Some(v)));
            return c.def.as_ref()?.flops(&c.attrs, &ins, &outs);
        }
        If(_) | Loop(_) | Scan(_) => return None,
        Reshape(_) | Transpose(_) | Flatten(_) | Squeeze | Unsqueeze | Concat(_) | Split(_)
        | Slice | Gather(_) | GatherElements(_) | GatherNd(_) | Expand | Tile | Shape(_) | Size
        | ConstantOfShape(_) | Range | Identity | Dropout(_) | DepthToSpace(_)
        | SpaceToDepth(_) | Pad(_) | Compress(_) | ReverseSequence(_) | EyeLike(_) | NonZero
        | OneHot(_) | Trilu(_) | ScatterNd(_) | ScatterElements(_) | Cast(_) | CastLike(_) => 0,
        op if op.reduce_attrs().is_some() => numel(&inp(0)?),
        GlobalAveragePool | GlobalMaxPool | GlobalLpPool(_) | ArgMax(_) | ArgMin(_) | CumSum(_)
        | TopK(_) => numel(&inp(0)?),
        _ => numel(&out()?),
    })
}
