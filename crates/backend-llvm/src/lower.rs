//! Lowering of graph nodes to plan steps: which runtime kernel runs a node, with which
//! parameters and operands; elementwise nodes go to fused groups; bias, residual and activation
//! nodes after a convolution or matrix product fold into its epilogue.

use crate::fused::{self, broadcast_strides};
use crate::plan::{self, bytes, dtype, shape, Builder, KernelCall, Operand, Place, Plan, StepKind};
use crate::{BackendError, Result};
use pare_ir::{DType, Graph, NodeId, Op, Use, ValueId};
use pare_runtime::ops;
use std::collections::HashMap;

mod gemm;

pub(crate) use gemm::Epi;

fn unsupported(g: &Graph, n: NodeId, why: impl Into<String>) -> BackendError {
    let node = g.node(n);
    BackendError::UnsupportedNode {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        why: why.into(),
    }
}

fn input(g: &Graph, n: NodeId, i: usize) -> Result<ValueId> {
    g.node(n)
        .inputs()
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| unsupported(g, n, format!("operand {i} is missing")))
}

fn opt_input(g: &Graph, n: NodeId, i: usize) -> Option<ValueId> {
    g.node(n).inputs().get(i).copied().flatten()
}

fn const_ints(g: &Graph, n: NodeId, v: Option<ValueId>, what: &str) -> Result<Option<Vec<i64>>> {
    let Some(v) = v else { return Ok(None) };
    let t = g.constant(v).ok_or_else(|| {
        unsupported(
            g,
            n,
            format!("{what} must be a constant after shape binding"),
        )
    })?;
    t.to_i64_vec()
        .map(Some)
        .ok_or_else(|| unsupported(g, n, format!("{what} is not an integer tensor")))
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64).max(0) as usize
    } else {
        axis as usize
    }
}

fn f32_only(g: &Graph, n: NodeId, vals: &[ValueId]) -> Result<()> {
    for &v in vals {
        if dtype(g, v)? != DType::F32 {
            return Err(unsupported(
                g,
                n,
                format!(
                    "only float32 is compiled for this op; '{}' is {}",
                    g.value(v).name,
                    dtype(g, v)?.name()
                ),
            ));
        }
    }
    Ok(())
}

fn dense_strides(s: &[usize]) -> Vec<i64> {
    let mut st = vec![0i64; s.len()];
    let mut acc = 1i64;
    for k in (0..s.len()).rev() {
        st[k] = acc;
        acc *= s[k] as i64;
    }
    st
}

fn elem_size(g: &Graph, v: ValueId) -> Result<usize> {
    let d = dtype(g, v)?;
    match d.bits() {
        8 => Ok(1),
        16 => Ok(2),
        32 => Ok(4),
        64 => Ok(8),
        b => Err(BackendError::Unsupported(format!(
            "{b}-bit elements of '{}'",
            g.value(v).name
        ))),
    }
}

/// Builds the plan for a statically shaped graph.
pub fn build_plan(g: &Graph) -> Result<Plan> {
    let order = g
        .topo_order()
        .map_err(|e| BackendError::Prepare(e.to_string()))?;
    let mut b = Builder::new(g);
    let mut cx = Lowering {
        epi: HashMap::new(),
        views: 0,
        folds: 0,
    };
    for &n in &order {
        if b.done.contains(&n) {
            continue;
        }
        lower_node(&mut b, &mut cx, n)?;
    }
    let steps = b.finish_steps();
    let mut p = Plan {
        graph: g.clone(),
        steps,
        consts: std::mem::take(&mut b.consts),
        const_of: std::mem::take(&mut b.const_of),
        root: HashMap::new(),
        place: HashMap::new(),
        arena_bytes: 0,
        peak_live_bytes: 0,
        views: cx.views,
        epilogue_folds: cx.folds,
    };
    // Flatten alias roots.
    for v in g.value_ids() {
        let r = b.root_of(v);
        if r != v {
            p.root.insert(v, r);
        }
    }
    // Values read by fused groups that are constants need a consts slot.
    let mut extra = Vec::new();
    for s in &p.steps {
        if let StepKind::Fused(nodes) = &s.kind {
            for v in plan::group_inputs(g, nodes) {
                let r = p.root.get(&v).copied().unwrap_or(v);
                if g.constant(r).is_some() && !p.const_of.contains_key(&r) {
                    extra.push(r);
                }
            }
        }
    }
    for r in extra {
        if p.const_of.contains_key(&r) {
            continue;
        }
        let t = g.constant(r).expect("constant");
        p.consts.push(plan::ConstData {
            name: g.value(r).name.clone(),
            bytes: t.raw().to_vec(),
        });
        p.const_of.insert(r, p.consts.len() - 1);
    }
    plan::place(&mut p)?;
    // Every operand must have a place.
    for s in &p.steps {
        let ops: Vec<Operand> = match &s.kind {
            StepKind::Kernel(k) => k.bufs.clone(),
            StepKind::Fused(nodes) => plan::group_inputs(g, nodes)
                .into_iter()
                .chain(plan::group_outputs(g, nodes, &p.root))
                .map(Operand::Value)
                .collect(),
            StepKind::Copy { from, to, .. } => vec![*from, *to],
        };
        for o in ops {
            if !matches!(o, Operand::Null | Operand::Scratch) && p.place_of(s, o) == Place::Null {
                return Err(BackendError::Internal(format!(
                    "step '{}' ({}): operand {o:?} has no place",
                    s.node, s.op
                )));
            }
        }
    }
    Ok(p)
}

/// State across nodes.
pub(crate) struct Lowering {
    /// Open epilogues: a Conv/MatMul output value that later elementwise nodes may fold into.
    pub epi: HashMap<ValueId, Epi>,
    pub views: usize,
    pub folds: usize,
}

fn lower_node(b: &mut Builder<'_>, cx: &mut Lowering, n: NodeId) -> Result<()> {
    let g = b.g;
    let node = g.node(n);
    if plan::is_view(&node.op) && node.outputs().len() == 1 {
        let x = input(g, n, 0)?;
        if bytes(g, x)? == bytes(g, node.outputs()[0])? {
            b.alias(node.outputs()[0], x);
            cx.views += 1;
            return Ok(());
        }
    }
    // A node with a constant output only (folding left it) needs no code.
    if node
        .outputs()
        .iter()
        .all(|&o| g.uses(o).is_empty() && !g.outputs().contains(&o))
    {
        return Ok(());
    }
    if fused::is_elementwise(g, n) {
        if gemm::try_fold(b, cx, n)? {
            cx.folds += 1;
            return Ok(());
        }
        let out = node.outputs()[0];
        b.add_elementwise(n, shape(g, out)?);
        return Ok(());
    }
    b.before_kernel(n);
    match &node.op {
        Op::Conv(_) | Op::ConvTranspose(_) | Op::MatMul | Op::Gemm(_) => gemm::lower(b, cx, n),
        Op::MaxPool(_) | Op::AveragePool(_) | Op::GlobalAveragePool | Op::GlobalMaxPool => gemm::lower_pool(b, n),
        Op::Softmax(a) | Op::LogSoftmax(a) => {
            let x = input(g, n, 0)?;
            let y = node.outputs()[0];
            f32_only(g, n, &[x])?;
            let s = shape(g, x)?;
            let ax = norm_axis(a.axis, s.len());
            let p = ops::norm::SoftmaxParams {
                outer: s[..ax].iter().product(),
                axis_len: s.get(ax).copied().unwrap_or(1),
                inner: s[(ax + 1).min(s.len())..].iter().product(),
                log: matches!(node.op, Op::LogSoftmax(_)),
            };
            kernel(b, n, "pare_k_softmax", p.encode(), vec![Operand::Value(x), Operand::Value(y)], 0);
            Ok(())
        }
        Op::LayerNormalization(a) => {
            let x = input(g, n, 0)?;
            let scale = input(g, n, 1)?;
            let bias = opt_input(g, n, 2);
            if node.outputs().len() > 1 && node.outputs()[1..].iter().any(|&o| !g.uses(o).is_empty()) {
                return Err(unsupported(g, n, "mean/inv-std-dev outputs are not compiled"));
            }
            f32_only(g, n, &[x, scale])?;
            let s = shape(g, x)?;
            let ax = norm_axis(a.axis, s.len());
            let inner: usize = s[ax..].iter().product();
            let scale_op = broadcast_param(b, n, scale, &s[ax..])?;
            let bias_op = match bias {
                Some(bv) => broadcast_param(b, n, bv, &s[ax..])?,
                None => Operand::Null,
            };
            let p = ops::norm::LayerNormParams {
                outer: s[..ax].iter().product(),
                inner,
                epsilon: a.epsilon as f64,
                has_bias: bias.is_some(),
            };
            let y = node.outputs()[0];
            kernel(b, n, "pare_k_layernorm", p.encode(), vec![Operand::Value(x), scale_op, bias_op, Operand::Value(y)], 0);
            Ok(())
        }
        Op::ReduceSum(a) | Op::ReduceMean(a) | Op::ReduceMax(a) | Op::ReduceMin(a) | Op::ReduceProd(a) | Op::ReduceL1(a)
        | Op::ReduceL2(a) | Op::ReduceLogSum(a) | Op::ReduceLogSumExp(a) | Op::ReduceSumSquare(a) => {
            let x = input(g, n, 0)?;
            f32_only(g, n, &[x])?;
            let s = shape(g, x)?;
            let axes = const_ints(g, n, opt_input(g, n, 1), "axes")?;
            let mut axes: Vec<usize> = match axes {
                Some(a2) if !a2.is_empty() => a2.iter().map(|&a| norm_axis(a, s.len())).collect(),
                _ if a.noop_with_empty_axes => Vec::new(),
                _ => (0..s.len()).collect(),
            };
            axes.sort();
            axes.dedup();
            // Size-1 axes reduce nothing; the rest must be one contiguous run.
            let real: Vec<usize> = axes.iter().copied().filter(|&k| s[k] != 1).collect();
            let (lo, hi) = match (real.first(), real.last()) {
                (Some(&lo), Some(&hi)) => (lo, hi),
                _ => (0, 0),
            };
            if !real.is_empty() && (lo..=hi).any(|k| !real.contains(&k) && s[k] != 1) {
                return Err(unsupported(g, n, "reduction over non-adjacent axes"));
            }
            let op = match node.op {
                Op::ReduceSum(_) => ops::reduce::ReduceOp::Sum,
                Op::ReduceMean(_) => ops::reduce::ReduceOp::Mean,
                Op::ReduceMax(_) => ops::reduce::ReduceOp::Max,
                Op::ReduceMin(_) => ops::reduce::ReduceOp::Min,
                Op::ReduceProd(_) => ops::reduce::ReduceOp::Prod,
                Op::ReduceL1(_) => ops::reduce::ReduceOp::L1,
                Op::ReduceL2(_) => ops::reduce::ReduceOp::L2,
                Op::ReduceLogSum(_) => ops::reduce::ReduceOp::LogSum,
                Op::ReduceLogSumExp(_) => ops::reduce::ReduceOp::LogSumExp,
                _ => ops::reduce::ReduceOp::SumSquare,
            };
            let (outer, red, inner) = if real.is_empty() {
                (s.iter().product(), 1, 1)
            } else {
                (s[..lo].iter().product(), s[lo..=hi].iter().product(), s[hi + 1..].iter().product())
            };
            let p = ops::reduce::ReduceParams { outer, reduce: red, inner, op };
            let y = node.outputs()[0];
            kernel(b, n, "pare_k_reduce", p.encode(), vec![Operand::Value(x), Operand::Value(y)], 0);
            Ok(())
        }
        Op::Transpose(a) => {
            let x = input(g, n, 0)?;
            let s = shape(g, x)?;
            let perm: Vec<usize> = match &a.perm {
                Some(p) => p.iter().map(|&k| norm_axis(k, s.len())).collect(),
                None => (0..s.len()).rev().collect(),
            };
            let st = dense_strides(&s);
            let out_shape: Vec<usize> = perm.iter().map(|&k| s[k]).collect();
            let p = ops::copy::CopyParams {
                elem_size: elem_size(g, x)?,
                shape: out_shape.clone(),
                in_offset: 0,
                in_strides: perm.iter().map(|&k| st[k]).collect(),
                out_offset: 0,
                out_strides: dense_strides(&out_shape),
            };
            copy_kernel(b, n, p, Operand::Value(x), Operand::Value(node.outputs()[0]))
        }
        Op::Expand => {
            let x = input(g, n, 0)?;
            let y = node.outputs()[0];
            let ys = shape(g, y)?;
            let p = ops::copy::CopyParams {
                elem_size: elem_size(g, x)?,
                shape: ys.clone(),
                in_offset: 0,
                in_strides: broadcast_strides(&shape(g, x)?, &ys),
                out_offset: 0,
                out_strides: dense_strides(&ys),
            };
            copy_kernel(b, n, p, Operand::Value(x), Operand::Value(y))
        }
        Op::Slice => {
            let x = input(g, n, 0)?;
            let s = shape(g, x)?;
            let starts = const_ints(g, n, opt_input(g, n, 1), "starts")?.unwrap_or_default();
            let ends = const_ints(g, n, opt_input(g, n, 2), "ends")?.unwrap_or_default();
            let axes = const_ints(g, n, opt_input(g, n, 3), "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = const_ints(g, n, opt_input(g, n, 4), "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
            let st = dense_strides(&s);
            let mut out_shape = s.clone();
            let mut in_strides = st.clone();
            let mut offset = 0i64;
            for i in 0..starts.len() {
                let ax = norm_axis(axes[i], s.len());
                let idx = pare_ir::infer::slice_indices(s[ax] as i64, starts[i], ends[i], steps[i])
                    .ok_or_else(|| unsupported(g, n, "invalid slice"))?;
                out_shape[ax] = idx.len();
                if let Some(&first) = idx.first() {
                    offset += first as i64 * st[ax];
                }
                in_strides[ax] = st[ax] * steps[i];
            }
            let p = ops::copy::CopyParams {
                elem_size: elem_size(g, x)?,
                shape: out_shape.clone(),
                in_offset: offset,
                in_strides,
                out_offset: 0,
                out_strides: dense_strides(&out_shape),
            };
            copy_kernel(b, n, p, Operand::Value(x), Operand::Value(node.outputs()[0]))
        }
        Op::Concat(a) => {
            let y = node.outputs()[0];
            let ys = shape(g, y)?;
            let ax = norm_axis(a.axis, ys.len());
            let yst = dense_strides(&ys);
            let mut at = 0usize;
            for v in node.inputs().iter().flatten() {
                let s = shape(g, *v)?;
                if s[ax] == 0 {
                    continue;
                }
                let p = ops::copy::CopyParams {
                    elem_size: elem_size(g, *v)?,
                    shape: s.clone(),
                    in_offset: 0,
                    in_strides: dense_strides(&s),
                    out_offset: at as i64 * yst[ax],
                    out_strides: yst.clone(),
                };
                copy_kernel(b, n, p, Operand::Value(*v), Operand::Value(y))?;
                at += s[ax];
            }
            Ok(())
        }
        Op::Split(a) => {
            let x = input(g, n, 0)?;
            let s = shape(g, x)?;
            let ax = norm_axis(a.axis, s.len());
            let st = dense_strides(&s);
            let mut at = 0usize;
            for &o in node.outputs() {
                let os = shape(g, o)?;
                let p = ops::copy::CopyParams {
                    elem_size: elem_size(g, x)?,
                    shape: os.clone(),
                    in_offset: at as i64 * st[ax],
                    in_strides: st.clone(),
                    out_offset: 0,
                    out_strides: dense_strides(&os),
                };
                if !g.uses(o).is_empty() || g.outputs().contains(&o) {
                    copy_kernel(b, n, p, Operand::Value(x), Operand::Value(o))?;
                }
                at += os[ax];
            }
            Ok(())
        }
        Op::Pad(a) => lower_pad(b, n, &a.mode),
        Op::Gather(a) => {
            let data = input(g, n, 0)?;
            let idx = input(g, n, 1)?;
            let s = shape(g, data)?;
            let ax = norm_axis(a.axis, s.len());
            let it = dtype(g, idx)?;
            if !matches!(it, DType::I64 | DType::I32) {
                return Err(unsupported(g, n, "indices must be int32 or int64"));
            }
            let p = ops::gather::GatherParams {
                elem_size: elem_size(g, data)?,
                outer: s[..ax].iter().product(),
                axis_len: s[ax],
                inner: s[ax + 1..].iter().product(),
                n_indices: shape(g, idx)?.iter().product(),
                index_i32: it == DType::I32,
            };
            let y = node.outputs()[0];
            let d = value_operand(b, data);
            let i = value_operand(b, idx);
            kernel(b, n, "pare_k_gather", p.encode(), vec![d, i, Operand::Value(y)], 0);
            Ok(())
        }
        Op::Resize(a) => lower_resize(b, n, a),
        Op::Lstm(a) => lower_lstm(b, n, a),
        Op::Attention(a) => lower_attention(b, n, a),
        Op::Custom(_) if crate::qfuse::as_qmatmul(&node.op).is_some() => gemm::lower_qmatmul(b, cx, n),
        Op::Custom(_) if crate::qfuse::as_qconv(&node.op).is_some() => gemm::lower_qconv(b, cx, n),
        Op::Reshape(_) | Op::Squeeze | Op::Unsqueeze | Op::Flatten(_) | Op::Identity | Op::Dropout(_) => {
            // A view whose sizes differ (should not happen after inference): copy.
            Err(unsupported(g, n, "view with mismatched sizes"))
        }
        Op::Shape(_) | Op::Size | Op::ConstantOfShape(_) => Err(unsupported(
            g,
            n,
            "shape computation left after constant folding (is an input shape still symbolic? pass --shape)",
        )),
        Op::If(_) | Op::Loop(_) | Op::Scan(_) => Err(unsupported(
            g,
            n,
            "control flow whose condition depends on input data is not compiled yet",
        )),
        _ => Err(unsupported(g, n, "no CPU lowering for this op yet")),
    }
}

/// The operand of a value: graph constants get a consts slot.
pub(crate) fn value_operand(b: &mut Builder<'_>, v: ValueId) -> Operand {
    if let Some(i) = b.graph_const(v) {
        Operand::Const(i)
    } else {
        Operand::Value(v)
    }
}

/// A per-feature parameter (scale, bias) broadcast to `shape` as dense f32 constant data.
fn broadcast_param(b: &mut Builder<'_>, n: NodeId, v: ValueId, to: &[usize]) -> Result<Operand> {
    let g = b.g;
    let s = shape(g, v)?;
    if s.iter().product::<usize>() == to.iter().product::<usize>() {
        return Ok(value_operand(b, v));
    }
    let t = g
        .constant(v)
        .ok_or_else(|| unsupported(g, n, "a broadcast scale/bias must be constant"))?;
    let vals: Vec<f32> = t
        .to_vec::<f32>()
        .map_err(|e| unsupported(g, n, e.to_string()))?;
    let st = broadcast_strides(&s, to);
    let total: usize = to.iter().product();
    let mut out = Vec::with_capacity(total * 4);
    let dst = dense_strides(to);
    for i in 0..total {
        let mut off = 0i64;
        for k in 0..to.len() {
            let d = (i as i64 / dst[k]) % to[k] as i64;
            off += d * st[k];
        }
        out.extend_from_slice(&vals[off as usize].to_le_bytes());
    }
    Ok(Operand::Const(b.add_const(&g.value(v).name, out)))
}

pub(crate) fn kernel(
    b: &mut Builder<'_>,
    n: NodeId,
    func: &'static str,
    params: Vec<i64>,
    bufs: Vec<Operand>,
    scratch: u64,
) -> usize {
    b.push_step(
        n,
        StepKind::Kernel(KernelCall {
            func,
            params,
            bufs,
            scratch,
        }),
    )
}

fn copy_kernel(
    b: &mut Builder<'_>,
    n: NodeId,
    p: ops::copy::CopyParams,
    from: Operand,
    to: Operand,
) -> Result<()> {
    let from = match from {
        Operand::Value(v) => value_operand(b, v),
        o => o,
    };
    kernel(b, n, "pare_k_copy", p.encode(), vec![from, to], 0);
    Ok(())
}

/// Pad: constant mode as a fill and a copy of the interior; reflect and edge (on one padded
/// axis) as the interior copy plus two copies with negative or zero strides.
fn lower_pad(b: &mut Builder<'_>, n: NodeId, mode: &str) -> Result<()> {
    let g = b.g;
    let x = input(g, n, 0)?;
    let y = g.node(n).outputs()[0];
    let s = shape(g, x)?;
    let ys = shape(g, y)?;
    let pads = const_ints(g, n, opt_input(g, n, 1), "pads")?.unwrap_or_default();
    let axes = const_ints(g, n, opt_input(g, n, 3), "axes")?
        .unwrap_or_else(|| (0..s.len() as i64).collect());
    let esz = elem_size(g, x)?;
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(unsupported(g, n, "pads length does not match the axes"));
    }
    let st = dense_strides(&s);
    let yst = dense_strides(&ys);
    let mut in_off = 0i64;
    let mut out_off = 0i64;
    let mut cshape = s.clone();
    let mut padded = Vec::new();
    for (i, &axv) in axes.iter().enumerate() {
        let ax = norm_axis(axv, s.len());
        let (lo, hi) = (pads[i], pads[i + k]);
        if lo != 0 || hi != 0 {
            padded.push((ax, lo, hi));
        }
        // Negative pads crop.
        let start_in = (-lo).max(0);
        let len = s[ax] as i64 - start_in - (-hi).max(0);
        cshape[ax] = len.max(0) as usize;
        in_off += start_in * st[ax];
        out_off += lo.max(0) * yst[ax];
    }
    let copy = |b: &mut Builder<'_>,
                shape: Vec<usize>,
                in_offset: i64,
                in_strides: Vec<i64>,
                out_offset: i64|
     -> Result<()> {
        if shape.iter().product::<usize>() == 0 {
            return Ok(());
        }
        let p = ops::copy::CopyParams {
            elem_size: esz,
            shape,
            in_offset,
            in_strides,
            out_offset,
            out_strides: yst.clone(),
        };
        copy_kernel(b, n, p, Operand::Value(x), Operand::Value(y))
    };
    match mode {
        "constant" => {
            let value: u64 = match opt_input(g, n, 2).map(|v| g.constant(v)) {
                Some(Some(t)) => {
                    let mut w = [0u8; 8];
                    let raw = t.raw();
                    w[..raw.len().min(8)].copy_from_slice(&raw[..raw.len().min(8)]);
                    u64::from_le_bytes(w)
                }
                Some(None) => return Err(unsupported(g, n, "the pad value must be a constant")),
                None => 0,
            };
            let fill = ops::copy::FillParams {
                elem_size: esz,
                count: ys.iter().product(),
                value,
            };
            kernel(
                b,
                n,
                "pare_k_fill",
                fill.encode(),
                vec![Operand::Value(y)],
                0,
            );
            copy(b, cshape, in_off, st.clone(), out_off)
        }
        "reflect" | "edge" => {
            if padded.len() > 1 || padded.iter().any(|&(_, lo, hi)| lo < 0 || hi < 0) {
                return Err(unsupported(
                    g,
                    n,
                    format!("{mode} padding on more than one axis, or cropping"),
                ));
            }
            copy(b, cshape.clone(), in_off, st.clone(), out_off)?;
            let Some(&(ax, lo, hi)) = padded.first() else {
                return Ok(());
            };
            let len = s[ax] as i64;
            if mode == "reflect" && (lo >= len || hi >= len) {
                return Err(unsupported(g, n, "reflect padding wider than the axis"));
            }
            let mut strides = st.clone();
            let mut sh = s.clone();
            // Left: out[lo - 1 - i] = in[i + 1] (reflect) or in[0] (edge).
            sh[ax] = lo as usize;
            if mode == "reflect" {
                strides[ax] = -st[ax];
                copy(b, sh.clone(), lo * st[ax], strides.clone(), 0)?;
            } else {
                strides[ax] = 0;
                copy(b, sh.clone(), 0, strides.clone(), 0)?;
            }
            // Right: out[lo + len + i] = in[len - 2 - i] (reflect) or in[len - 1] (edge).
            sh[ax] = hi as usize;
            let out_at = (lo + len) * yst[ax];
            if mode == "reflect" {
                strides[ax] = -st[ax];
                copy(b, sh, (len - 2) * st[ax], strides, out_at)
            } else {
                strides[ax] = 0;
                copy(b, sh, (len - 1) * st[ax], strides, out_at)
            }
        }
        m => Err(unsupported(g, n, format!("pad mode '{m}'"))),
    }
}

fn lower_resize(b: &mut Builder<'_>, n: NodeId, a: &pare_ir::op::ResizeAttrs) -> Result<()> {
    use ops::resize::{CoordMode, NearestMode, ResizeMode, ResizeParams};
    let g = b.g;
    let x = input(g, n, 0)?;
    let y = g.node(n).outputs()[0];
    f32_only(g, n, &[x])?;
    let s = shape(g, x)?;
    let ys = shape(g, y)?;
    let r = s.len();
    if r < 2 || s[..r - 2] != ys[..r - 2] {
        return Err(unsupported(g, n, "only the last two axes may be resized"));
    }
    if a.antialias || a.axes.is_some() {
        return Err(unsupported(g, n, "antialias/axes"));
    }
    let scales = match opt_input(g, n, 2).and_then(|v| g.constant(v)) {
        Some(t) if t.numel() > 0 => t.to_f64_vec(),
        _ => None,
    };
    let (sh, sw) = match scales {
        Some(sc) if sc.len() == r => (sc[r - 2], sc[r - 1]),
        _ => (
            ys[r - 2] as f64 / s[r - 2] as f64,
            ys[r - 1] as f64 / s[r - 1] as f64,
        ),
    };
    let mode = match a.mode.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" => ResizeMode::Linear,
        m => return Err(unsupported(g, n, format!("mode '{m}'"))),
    };
    let nearest_mode = match a.nearest_mode.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        m => return Err(unsupported(g, n, format!("nearest_mode '{m}'"))),
    };
    let coord_mode = match a.coordinate_transformation_mode.as_str() {
        "half_pixel" => CoordMode::HalfPixel,
        "asymmetric" => CoordMode::Asymmetric,
        "align_corners" => CoordMode::AlignCorners,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
        m => {
            return Err(unsupported(
                g,
                n,
                format!("coordinate_transformation_mode '{m}'"),
            ))
        }
    };
    let p = ResizeParams {
        outer: s[..r - 2].iter().product(),
        in_h: s[r - 2],
        in_w: s[r - 1],
        out_h: ys[r - 2],
        out_w: ys[r - 1],
        scale_h: sh,
        scale_w: sw,
        mode,
        nearest_mode,
        coord_mode,
    };
    kernel(
        b,
        n,
        "pare_k_resize",
        p.encode(),
        vec![Operand::Value(x), Operand::Value(y)],
        0,
    );
    Ok(())
}

fn lower_lstm(b: &mut Builder<'_>, n: NodeId, a: &pare_ir::op::RnnAttrs) -> Result<()> {
    use ops::lstm::{LstmDirection, LstmParams};
    let g = b.g;
    let node = g.node(n);
    let x = input(g, n, 0)?;
    let w = input(g, n, 1)?;
    let r = input(g, n, 2)?;
    if a.layout != 0 || opt_input(g, n, 4).is_some() {
        return Err(unsupported(g, n, "layout=1 or sequence_lens"));
    }
    if let Some(acts) = &a.activations {
        let std = ["Sigmoid", "Tanh", "Tanh"];
        if acts
            .iter()
            .enumerate()
            .any(|(i, s)| !s.eq_ignore_ascii_case(std[i % 3]))
        {
            return Err(unsupported(g, n, "non-default activations"));
        }
    }
    f32_only(g, n, &[x, w, r])?;
    let xs = shape(g, x)?;
    let ws = shape(g, w)?;
    let direction = match a.direction.as_str() {
        "forward" => LstmDirection::Forward,
        "reverse" => LstmDirection::Reverse,
        "bidirectional" => LstmDirection::Bidirectional,
        d => return Err(unsupported(g, n, format!("direction '{d}'"))),
    };
    let p = LstmParams {
        seq: xs[0],
        batch: xs[1],
        input: xs[2],
        hidden: ws[1] / 4,
        direction,
        clip: a.clip.map(|c| c as f64),
        input_forget: a.input_forget,
        peephole: opt_input(g, n, 7).is_some(),
    };
    let mut bufs = vec![
        value_operand(b, x),
        value_operand(b, w),
        value_operand(b, r),
    ];
    for i in [3, 5, 6] {
        bufs.push(match opt_input(g, n, i) {
            Some(v) => value_operand(b, v),
            None => Operand::Null,
        });
    }
    for i in 0..3 {
        bufs.push(match node.outputs().get(i) {
            Some(&o) if !g.uses(o).is_empty() || g.outputs().contains(&o) => Operand::Value(o),
            _ => Operand::Null,
        });
    }
    bufs.push(Operand::Scratch);
    if let Some(pv) = opt_input(g, n, 7) {
        bufs.push(value_operand(b, pv));
    }
    let scratch = p.scratch_bytes() as u64;
    kernel(b, n, "pare_k_lstm", p.encode(), bufs, scratch);
    Ok(())
}

/// Scratch slots for kernels whose scratch is per thread.
pub const MAX_THREADS: usize = 64;

fn lower_attention(b: &mut Builder<'_>, n: NodeId, a: &pare_ir::op::AttentionAttrs) -> Result<()> {
    use ops::attention::{AttentionParams, MaskKind};
    let g = b.g;
    let node = g.node(n);
    let q = input(g, n, 0)?;
    let k = input(g, n, 1)?;
    let v = input(g, n, 2)?;
    let mask = opt_input(g, n, 3);
    if node.inputs().len() > 4 && node.inputs()[4..].iter().any(|x| x.is_some()) {
        return Err(unsupported(g, n, "KV cache inputs are not compiled yet"));
    }
    if node.outputs().len() > 1 && node.outputs()[1..].iter().any(|&o| !g.uses(o).is_empty()) {
        return Err(unsupported(
            g,
            n,
            "present-key/value outputs are not compiled yet",
        ));
    }
    f32_only(g, n, &[q, k, v])?;
    let qs = shape(g, q)?;
    let ks = shape(g, k)?;
    let vs = shape(g, v)?;
    if qs.len() != 4 {
        return Err(unsupported(g, n, "only the 4-D form is compiled"));
    }
    let (mk, mstrides, mcols, mop) = match mask {
        None => (MaskKind::None, [0usize; 4], ks[2], Operand::Null),
        Some(m) => {
            let ms = shape(g, m)?;
            let kind = match dtype(g, m)? {
                DType::Bool => MaskKind::Bool,
                DType::F32 => MaskKind::Float,
                d => return Err(unsupported(g, n, format!("mask of type {}", d.name()))),
            };
            let target = [qs[0], qs[1], qs[2], ms[ms.len() - 1]];
            let st = broadcast_strides(&ms, &target);
            let st: Vec<usize> = st.iter().map(|&x| x as usize).collect();
            (
                kind,
                [st[0], st[1], st[2], st[3]],
                ms[ms.len() - 1],
                value_operand(b, m),
            )
        }
    };
    let p = AttentionParams {
        batch: qs[0],
        q_heads: qs[1],
        kv_heads: ks[1],
        q_len: qs[2],
        kv_len: ks[2],
        head_dim: qs[3],
        v_dim: vs[3],
        scale: a
            .scale
            .map(|s| s as f64)
            .unwrap_or_else(|| AttentionParams::default_scale(qs[3])),
        is_causal: a.is_causal,
        causal_offset: 0,
        softcap: a.softcap as f64,
        mask: mk,
        mask_strides: mstrides,
        mask_cols: mcols,
        max_threads: MAX_THREADS,
    };
    let y = node.outputs()[0];
    let bufs = vec![
        value_operand(b, q),
        value_operand(b, k),
        value_operand(b, v),
        mop,
        Operand::Value(y),
        Operand::Scratch,
    ];
    let scratch = p.scratch_bytes() as u64;
    kernel(b, n, "pare_k_attention", p.encode(), bufs, scratch);
    Ok(())
}

/// True when `v` has exactly one reader, node `n`, and is not a graph output.
pub(crate) fn only_use(g: &Graph, v: ValueId, n: NodeId) -> bool {
    let uses = g.uses(v);
    uses.len() == 1 && matches!(uses[0], Use::Node { node, .. } if node == n)
}
