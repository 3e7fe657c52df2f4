//! `fold-batchnorm`: folds an inference-mode BatchNormalization into the convolution or
//! matrix product that feeds it.
//!
//! **What it does.** `BatchNormalization(y, scale, B, mean, var)` computes, per channel `c`
//! (axis 1), `y·k[c] + (B[c] − mean[c]·k[c])` with `k = scale / sqrt(var + epsilon)`. When `y`
//! is the only use of
//!
//! - `Conv(x, W, b?)`: `W'[m, …] = W[m, …]·k[m]`, `b'[m] = (b[m] − mean[m])·k[m] + B[m]` (a bias
//!   is added when the Conv had none);
//! - `ConvTranspose(x, W, b?)` (any `group`): `W[c, j, …]` feeds output channel
//!   `(c / (C/group))·(M/group) + j`, which it is scaled by; the bias as for Conv;
//! - `Gemm(A, B, C?)` with a 2-D output `[M, N]` (channels are its columns): `B` scaled per
//!   column (per row when `transB`), `C' = beta·C·k + (B − mean·k)` with `beta = 1`;
//! - `MatMul(A, W)` with a 2-D output and a 2-D constant `W`: `W` scaled per column, and an
//!   `Add` of the new bias follows (`fuse-gemm` then makes it a Gemm);
//!
//! the BatchNormalization disappears and the producer's output takes its name. A constant Add
//! that is per-channel (shape `[C,1,…]`, `[1,C,1,…]` or one element) between a Conv or
//! ConvTranspose and the BatchNormalization — how paddle2onnx writes convolution biases — is
//! folded into the new bias too.
//!
//! **Needs.** `training_mode = 0`, only the first BatchNormalization output read; scale, B,
//! mean, var and the weight (and bias) constant floats (f32 or f64 weights; parameters of any
//! float type); one channel per output channel; the producer's output read only by the
//! BatchNormalization. Anything else is left alone: a producer whose output has another
//! reader, a non-constant parameter, training mode, rank-3+ MatMul outputs (their channel axis
//! 1 is not the weight's column axis).
//!
//! **Guarantees.** Exact up to float rounding: the folded weights are computed in f64 and
//! rounded once to the weight's type. The original weight constants are not modified (new
//! constants are created), so weights shared with other nodes stay valid.
//!
//! **Reference.** The standard inference-time fold (e.g. Jacob et al. 2018, "Quantization and
//! Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", §3.2;
//! onnxruntime's `ConvBNFusion`, PyTorch's `fuse_conv_bn_eval`).

use crate::util::*;
use pare_ir::op::{BatchNormAttrs, GemmAttrs};
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// The `fold-batchnorm` pass.
#[derive(Default)]
pub struct FoldBatchNorm;

impl Pass for FoldBatchNorm {
    fn name(&self) -> &str {
        "fold-batchnorm"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Matching needs shapes: fill in what inference can (a failure leaves types as they are).
        let _ = pare_ir::infer::infer_types(g);
        let n = on_all_graphs(g, &mut fold_all);
        Ok(PassReport::counted("folded", n))
    }
}

fn fold_all(g: &mut Graph) -> u64 {
    let mut count = 0;
    let ids: Vec<NodeId> = g.node_ids().collect();
    for bn in ids {
        if g.node(bn).is_dead() {
            continue;
        }
        if let Op::BatchNormalization(a) = &g.node(bn).op {
            let a = a.clone();
            if fold_one(g, bn, &a).is_some() {
                count += 1;
            }
        }
    }
    count
}

/// Per-channel `(k, shift)`: `bn(y) = y·k + shift`.
fn affine(g: &Graph, bn: NodeId, a: &BatchNormAttrs) -> Option<(Vec<f64>, Vec<f64>)> {
    let c = |i: usize| -> Option<Vec<f64>> {
        let t = g.constant(input(g, bn, i)?)?;
        if !is_float(t.dtype()) {
            return None;
        }
        t.to_f64_vec()
    };
    let (scale, bias, mean, var) = (c(1)?, c(2)?, c(3)?, c(4)?);
    let n = scale.len();
    if bias.len() != n || mean.len() != n || var.len() != n {
        return None;
    }
    let eps = a.epsilon as f64;
    let k: Vec<f64> = (0..n).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f64> = (0..n).map(|i| bias[i] - mean[i] * k[i]).collect();
    if k.iter().chain(&shift).any(|v| !v.is_finite()) {
        return None;
    }
    Some((k, shift))
}

/// A float weight constant (f32 or f64) as f64 data with its shape and dtype.
fn weight(g: &Graph, v: ValueId) -> Option<(Vec<f64>, Vec<usize>, DType)> {
    let t = g.constant(v)?;
    if !matches!(t.dtype(), DType::F32 | DType::F64) {
        return None;
    }
    Some((t.to_f64_vec()?, t.shape().to_vec(), t.dtype()))
}

fn fold_one(g: &mut Graph, bn: NodeId, a: &BatchNormAttrs) -> Option<()> {
    if a.training_mode {
        return None;
    }
    let node = g.node(bn);
    if node
        .outputs()
        .iter()
        .skip(1)
        .any(|&o| !g.uses(o).is_empty())
    {
        return None;
    }
    let y = input(g, bn, 0)?;
    let bn_out = out0(g, bn)?;
    let mut prod = producer(g, y)?;
    if only_user(g, y) != Some(bn) || g.node(prod).outputs().len() != 1 {
        return None;
    }
    let (k, mut shift) = affine(g, bn, a)?;
    // A per-channel constant Add between a convolution and the BatchNormalization (how
    // paddle2onnx writes a ConvTranspose bias) folds into the shift: bn(y + c) = y·k + c·k + shift.
    let mut y_in = y;
    let mut bias_add = None;
    if matches!(g.node(prod).op, Op::Add) {
        let (c, conv_out) = channel_bias_add(g, prod, y, k.len())?;
        let conv = producer(g, conv_out)?;
        if only_user(g, conv_out) != Some(prod)
            || !matches!(g.node(conv).op, Op::Conv(_) | Op::ConvTranspose(_))
        {
            return None;
        }
        for (s, (ci, ki)) in shift.iter_mut().zip(c.iter().zip(&k)) {
            *s += ci * ki;
        }
        bias_add = Some(prod);
        prod = conv;
        y_in = conv_out;
    }
    match g.node(prod).op.clone() {
        Op::Conv(_) => fold_conv(g, prod, &k, &shift, false)?,
        Op::ConvTranspose(_) => fold_conv(g, prod, &k, &shift, true)?,
        Op::Gemm(ga) => fold_gemm(g, prod, &ga, &k, &shift)?,
        Op::MatMul => {
            let add = fold_matmul(g, prod, y, &k, &shift)?;
            replace_value(g, bn_out, add);
            remove_dead(g, &[bn]);
            return Some(());
        }
        _ => return None,
    }
    replace_value(g, bn_out, y_in);
    let mut dead = vec![bn];
    dead.extend(bias_add);
    remove_dead(g, &dead);
    Some(())
}

/// `Add(conv_out, c)` (either order) with a float constant `c` that varies along the channel
/// axis (1) of the rank-r result only: (c per channel, conv_out).
fn channel_bias_add(
    g: &Graph,
    add: NodeId,
    y: ValueId,
    channels: usize,
) -> Option<(Vec<f64>, ValueId)> {
    let (a, b) = binary(g, add)?;
    let (conv_out, c) = if g.constant(b).is_some() {
        (a, b)
    } else {
        (b, a)
    };
    let t = g.constant(c)?;
    let r = rank(g, y)?;
    if !is_float(t.dtype())
        || t.shape().len() > r
        || r < 2
        || rank(g, conv_out) != Some(r)
        || g.constant(conv_out).is_some()
    {
        return None;
    }
    let lead = r - t.shape().len();
    for (i, &d) in t.shape().iter().enumerate() {
        let axis = lead + i;
        if d != 1 && !(axis == 1 && d == channels) {
            return None;
        }
    }
    let v = t.to_f64_vec()?;
    let per_channel = if v.len() == 1 {
        vec![v[0]; channels]
    } else {
        v
    };
    (per_channel.len() == channels).then_some((per_channel, conv_out))
}

/// Conv / ConvTranspose: scales the weight per output channel and writes the folded bias.
fn fold_conv(g: &mut Graph, conv: NodeId, k: &[f64], shift: &[f64], transpose: bool) -> Option<()> {
    let (w, wshape, dt) = weight(g, input(g, conv, 1)?)?;
    if wshape.len() < 3 {
        return None;
    }
    let inner: usize = wshape[2..].iter().product();
    let m = k.len();
    // Output channel of each (dim0, dim1) weight slice.
    let channel: Box<dyn Fn(usize, usize) -> usize> = if transpose {
        let group = match &g.node(conv).op {
            Op::ConvTranspose(a) if a.group >= 1 => a.group as usize,
            _ => return None,
        };
        let (c_in, per_group) = (wshape[0], wshape[1]);
        if c_in % group != 0 || per_group * group != m {
            return None;
        }
        let in_per_group = c_in / group;
        Box::new(move |c, j| (c / in_per_group) * per_group + j)
    } else {
        if wshape[0] != m {
            return None;
        }
        Box::new(|o, _| o)
    };
    let mut nw = w;
    for d0 in 0..wshape[0] {
        for d1 in 0..wshape[1] {
            let s = k[channel(d0, d1)];
            let base = (d0 * wshape[1] + d1) * inner;
            nw[base..base + inner].iter_mut().for_each(|v| *v *= s);
        }
    }
    let old_bias = match input(g, conv, 2) {
        Some(b) => {
            let (bv, bshape, _) = weight(g, b)?;
            if bshape != [m] {
                return None;
            }
            Some(bv)
        }
        None => None,
    };
    let nb: Vec<f64> = (0..m)
        .map(|i| old_bias.as_ref().map_or(0.0, |b| b[i]) * k[i] + shift[i])
        .collect();
    let wt = float_tensor(dt, wshape, &nw)?;
    let bt = float_tensor(dt, vec![m], &nb)?;
    let wname = format!("{}_bnfold", g.value(input(g, conv, 1)?).name);
    let bname = match input(g, conv, 2) {
        Some(b) => format!("{}_bnfold", g.value(b).name),
        None => derived_name(g, conv, "bias_bnfold"),
    };
    let wv = g.add_const(wname, wt);
    let bv = g.add_const(bname, bt);
    g.set_operand(conv, 1, Some(wv));
    g.set_operand(conv, 2, Some(bv));
    Some(())
}

/// Gemm with a constant B (and constant or absent C), 2-D output `[M, N]`, channels = columns.
fn fold_gemm(g: &mut Graph, gemm: NodeId, at: &GemmAttrs, k: &[f64], shift: &[f64]) -> Option<()> {
    let (b, bshape, dt) = weight(g, input(g, gemm, 1)?)?;
    if bshape.len() != 2 {
        return None;
    }
    let n = if at.trans_b { bshape[0] } else { bshape[1] };
    if n != k.len() {
        return None;
    }
    let mut nb = b;
    for r in 0..bshape[0] {
        for c in 0..bshape[1] {
            nb[r * bshape[1] + c] *= k[if at.trans_b { r } else { c }];
        }
    }
    // C as [cm, cn] with cm ∈ {1, M}, cn ∈ {1, N}; the new C is [cm, N].
    let (cdata, cm, cn) = match input(g, gemm, 2) {
        None => (vec![0.0], 1, 1),
        Some(c) => {
            let t = g.constant(c)?;
            if !is_float(t.dtype()) {
                return None;
            }
            let data = t.to_f64_vec()?;
            match *t.shape() {
                [] => (data, 1, 1),
                [x] if x == 1 || x == n => (data, 1, x),
                [r, x] if x == 1 || x == n => (data, r, x),
                _ => return None,
            }
        }
    };
    let beta = if input(g, gemm, 2).is_some() {
        at.beta as f64
    } else {
        0.0
    };
    let mut nc = vec![0.0; cm * n];
    for r in 0..cm {
        for j in 0..n {
            let c = cdata[r * cn + if cn == 1 { 0 } else { j }];
            nc[r * n + j] = beta * c * k[j] + shift[j];
        }
    }
    let cshape = if cm == 1 { vec![n] } else { vec![cm, n] };
    let bt = float_tensor(dt, bshape, &nb)?;
    let ct = float_tensor(dt, cshape, &nc)?;
    let bname = format!("{}_bnfold", g.value(input(g, gemm, 1)?).name);
    let cname = derived_name(g, gemm, "bias_bnfold");
    let bv = g.add_const(bname, bt);
    let cv = g.add_const(cname, ct);
    g.set_operand(gemm, 1, Some(bv));
    g.set_operand(gemm, 2, Some(cv));
    if let Op::Gemm(a) = g.op_mut(gemm) {
        a.beta = 1.0;
    }
    Some(())
}

/// MatMul with a 2-D output and a constant 2-D weight: scales the weight's columns and adds
/// an Add of the shift; returns the Add's output.
fn fold_matmul(g: &mut Graph, mm: NodeId, y: ValueId, k: &[f64], shift: &[f64]) -> Option<ValueId> {
    if rank(g, y) != Some(2) || rank(g, input(g, mm, 0)?) != Some(2) {
        return None;
    }
    let (w, wshape, dt) = weight(g, input(g, mm, 1)?)?;
    if wshape.len() != 2 || wshape[1] != k.len() {
        return None;
    }
    let n = wshape[1];
    let mut nw = w;
    for r in 0..wshape[0] {
        for c in 0..n {
            nw[r * n + c] *= k[c];
        }
    }
    let wt = float_tensor(dt, wshape, &nw)?;
    let st = float_tensor(dt, vec![n], shift)?;
    let wname = format!("{}_bnfold", g.value(input(g, mm, 1)?).name);
    let wv = g.add_const(wname, wt);
    let sv = g.add_const(derived_name(g, mm, "bias_bnfold"), st);
    g.set_operand(mm, 1, Some(wv));
    // [M, N] + [N] is [M, N]: the Add has the MatMul's type.
    let add_name = derived_name(g, mm, "bn_shift");
    let add = g.add_node(
        add_name.clone(),
        Op::Add,
        vec![Some(y), Some(sv)],
        vec![add_name],
    );
    let out = out0(g, add)?;
    g.set_type(out, ty(g, y).clone());
    Some(out)
}
