//! `fuse-gemm`: `MatMul(A, B) + bias` → `Gemm(A, B, bias)`.
//!
//! **What it does.** A MatMul of a 2-D `A [M, K]` by a constant 2-D `B [K, N]` whose only
//! reader is an Add (operands in either order) of a constant bias of shape `[N]`, `[1, N]`,
//! `[M, N]` (M fixed and equal to A's first extent) or a one-element `[]`, `[1]`, `[1, 1]`
//! becomes one `Gemm(A, B, bias)` (alpha = beta = 1, no transposes) carrying the Add's output
//! name.
//!
//! **Needs.** A's rank known to be 2; A, B and the bias of one float type; the MatMul output
//! read only by the Add. Anything else is left alone — in particular MatMuls of rank-3+
//! activations (`[batch, seq, hidden] × [hidden, out]`, the usual transformer linear layer):
//! Gemm is 2-D only, so fusing would need a Reshape on each side, and a backend fuses the bias
//! into the GEMM epilogue of the MatMul anyway. A bias of any other shape (`[M, 1]`, or one
//! that would broadcast the product to a larger shape such as `[2, M, N]`) is left alone.
//!
//! **Guarantees.** Exact: Gemm computes `A·B + C` with C broadcast unidirectionally to
//! `[M, N]`, the same elements as the MatMul and Add (up to the summation order of the
//! backend's GEMM).
//!
//! **Reference.** onnxruntime's `MatMulAddFusion`; the `torch.nn.Linear` export pattern for 2-D
//! inputs.

use crate::util::*;
use pare_ir::op::GemmAttrs;
use pare_ir::{Dim, Graph, NodeId, Op};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// The `fuse-gemm` pass.
#[derive(Default)]
pub struct FuseGemm;

impl Pass for FuseGemm {
    fn name(&self) -> &str {
        "fuse-gemm"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Matching needs shapes: fill in what inference can (a failure leaves types as they are).
        let _ = pare_ir::infer::infer_types(g);
        let n = on_all_graphs(g, &mut fuse_all);
        Ok(PassReport::counted("fused", n))
    }
}

fn fuse_all(g: &mut Graph) -> u64 {
    let mut count = 0;
    let ids: Vec<NodeId> = g.node_ids().collect();
    for mm in ids {
        if !g.node(mm).is_dead() && matches!(g.node(mm).op, Op::MatMul) && fuse_one(g, mm).is_some()
        {
            count += 1;
        }
    }
    count
}

fn fuse_one(g: &mut Graph, mm: NodeId) -> Option<()> {
    let (a, b) = binary(g, mm)?;
    let y = out0(g, mm)?;
    let add = only_user(g, y)?;
    if !matches!(g.node(add).op, Op::Add) {
        return None;
    }
    let bias = other_operand(g, add, y)?;
    if bias == y {
        return None;
    }
    let ash = shape(g, a)?;
    if ash.rank() != 2 {
        return None;
    }
    let m = ash.0[0].clone();
    let bt = g.constant(b)?;
    let [_, n] = *bt.shape() else {
        return None;
    };
    let dt = bt.dtype();
    if !is_float(dt) || dtype(g, a) != Some(dt) {
        return None;
    }
    let c = g.constant(bias)?;
    if c.dtype() != dt {
        return None;
    }
    let ok = match *c.shape() {
        [] | [1] | [1, 1] => true,
        [x] | [1, x] => x == n,
        [r, x] => x == n && m == Dim::Fixed(r as u64),
        _ => false,
    };
    if !ok {
        return None;
    }
    let add_out = out0(g, add)?;
    let name = if g.node(add).name.is_empty() {
        g.node(mm).name.clone()
    } else {
        g.node(add).name.clone()
    };
    let gemm = add_replacement(
        g,
        &name,
        Op::Gemm(GemmAttrs::default()),
        vec![Some(a), Some(b), Some(bias)],
        add_out,
    )?;
    replace_value(g, add_out, gemm);
    remove_dead(g, &[add, mm]);
    Some(())
}
