//! `fuse-attention`: scaled dot-product attention as exporters write it → ONNX `Attention`
//! (opset 23), in its 4-D `[batch, heads, seq, head_size]` form.
//!
//! **What it does.** Recognizes
//!
//! ```text
//! s = MatMul(Q', Kᵀ')                 Q' = Q scaled, Kᵀ' = Kᵀ scaled (optional)
//! s = s · c | s / c  (repeated)       optional scaling of the scores
//! s = Add(s, mask)                    optional additive mask, either operand order
//! p = Softmax(s) {axis = -1}
//! y = MatMul(p, V)
//! ```
//!
//! where "scaled" is any chain of Mul/Div by one-element constants, and `Kᵀ` is either a
//! `Transpose` (its permutation is composed with the last-two-axes swap, so BERT's
//! `Transpose(k, [0,2,3,1])` of the `[B, S, H, D]` head split becomes `Transpose(k, [0,2,1,3])`,
//! and `[0,1,3,2]` disappears) or any other value (then `Transpose(Kᵀ, [0,1,3,2])` is
//! inserted). `y` is replaced (keeping its name) by
//! `Attention(Q, K, V, mask) {scale = product of all absorbed factors}`; the scale is always
//! written, since Attention's default is `1/√head_size`.
//!
//! **Needs** (each checked statically; a pattern that does not provably satisfy them is left
//! alone):
//! - Q, Kᵀ, V and the scores of rank 4, one float dtype (the mask too);
//! - the batch extents of Q, K and V provably equal (same fixed extent or same symbol):
//!   Attention does not broadcast the batch as MatMul would;
//! - K and V with the same head count, equal to Q's or 1 (MatMul's broadcasting of one
//!   key/value head equals Attention's multi-query repeat; other head ratios would mean
//!   numpy broadcasting errors anyway); K's and V's sequence extents need no proof, since
//!   `MatMul(p, V)` contracts over them and fails unless they are equal;
//! - the mask of rank ≤ 4 with each leading extent 1 or provably equal to the scores' (so the
//!   Add does not enlarge the scores). Attention pads a mask narrower than the key length with
//!   −∞ instead of broadcasting it, and onnxruntime requires the mask's last two extents to be
//!   exactly the query and key lengths, so when they are not provably so (a fixed extent above
//!   1, or the scores' own extent) — BERT's `[B,1,1,seq]` mask — the mask is first expanded,
//!   `Expand(mask, [Sq, Skv])` with the lengths taken from `Shape(Q)`/`Shape(K)` (constants
//!   where fixed): the identity where the extents agree, exactly the Add's broadcast where the
//!   mask's are 1;
//! - a positive finite total scale (Attention scales Q and K by its square root);
//! - every intermediate value (scores, scaled values, probabilities) read only inside the
//!   pattern; a scaling Mul of Q or K with other readers is kept and not absorbed.
//!
//! Scalings *after* the mask is added (`(s + mask)·c`) would scale the mask too, so the walk
//! stops there and nothing is fused. Boolean masks written as `Where` are not matched. Causal
//! masks stay explicit additive masks (`is_causal` is never inferred).
//!
//! **Guarantees.** Exact up to float rounding: Attention computes
//! `softmax(scale·Q·Kᵀ + mask)·V` with the same broadcasting as the matched graph under the
//! conditions above.
//!
//! **Reference.** Vaswani et al. 2017, "Attention Is All You Need" (scaled dot-product
//! attention); the graph is what `torch.onnx.export` writes for HuggingFace BERT-style
//! self-attention and for `F.scaled_dot_product_attention`, and what paddle2onnx writes for
//! SVTR (Q pre-scaled). onnxruntime's `AttentionFusion` matches the same family.

use crate::util::*;
use pare_ir::op::{AttentionAttrs, ConcatAttrs, ShapeAttrs, TransposeAttrs};
use pare_ir::{Dim, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// The `fuse-attention` pass.
#[derive(Default)]
pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &str {
        "fuse-attention"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Matching needs shapes: fill in what inference can (a failure leaves types as they are).
        let _ = pare_ir::infer::infer_types(g);
        let mut masked = 0;
        let mut f = |g: &mut Graph| -> u64 {
            let ids: Vec<NodeId> = g.node_ids().collect();
            let mut n = 0;
            for id in ids {
                if !g.node(id).is_dead() && matches!(g.node(id).op, Op::Softmax(_)) {
                    if let Some(has_mask) = fuse_one(g, id) {
                        n += 1;
                        masked += has_mask as u64;
                    }
                }
            }
            n
        };
        let n = on_all_graphs(g, &mut f);
        if n > 0 {
            // The mask guards' shape computations are typed node by node; a whole-graph run
            // tracks their values into the Expand's type.
            let _ = pare_ir::infer::infer_types(g);
        }
        Ok(PassReport::counted("fused", n).with_stat("with-mask", masked))
    }
}

/// Walks a chain of Mul/Div by one-element constants back from `v`, each link read only by the
/// next: `(start of the chain, product of factors, nodes)`.
fn unscale(g: &Graph, mut v: ValueId, rank: usize) -> (ValueId, f64, Vec<NodeId>) {
    let mut factor = 1.0;
    let mut nodes = Vec::new();
    while let Some(n) = producer(g, v) {
        if !single_use(g, v) {
            break;
        }
        let Some((a, b)) = binary(g, n) else { break };
        let step = match g.node(n).op {
            Op::Mul => match (scalar_for(g, a, Some(rank)), scalar_for(g, b, Some(rank))) {
                (None, Some(c)) => Some((a, c)),
                (Some(c), None) => Some((b, c)),
                _ => None,
            },
            Op::Div => scalar_for(g, b, Some(rank))
                .filter(|_| g.constant(a).is_none())
                .map(|c| (a, 1.0 / c)),
            _ => None,
        };
        let Some((src, c)) = step else { break };
        factor *= c;
        nodes.push(n);
        v = src;
    }
    (v, factor, nodes)
}

fn dims4(g: &Graph, v: ValueId) -> Option<Vec<Dim>> {
    let s = shape(g, v)?;
    (s.rank() == 4).then(|| s.0.clone())
}

/// How K is obtained from Kᵀ.
enum KSource {
    /// K is this existing value.
    Value(ValueId),
    /// K = Transpose(src, perm).
    Transpose(ValueId, Vec<i64>),
}

/// Returns whether the fused attention has a mask.
fn fuse_one(g: &mut Graph, sm: NodeId) -> Option<bool> {
    let axis = match &g.node(sm).op {
        Op::Softmax(a) => a.axis,
        _ => return None,
    };
    if axis != -1 && axis != 3 {
        return None;
    }
    let sin = input(g, sm, 0)?;
    dims4(g, sin)?;
    let p = out0(g, sm)?;
    let mm2 = only_user(g, p)?;
    if !matches!(g.node(mm2).op, Op::MatMul) || binary(g, mm2)?.0 != p {
        return None;
    }
    let v = input(g, mm2, 1)?;
    let y = out0(g, mm2)?;
    let mut nodes = vec![sm, mm2];
    // Optional mask: Add(scores, mask) in either order, with the scores side leading to a
    // MatMul through scalings.
    let mut mask = None;
    let mut scores = sin;
    if single_use(g, sin) {
        if let Some(add) = producer(g, sin).filter(|&n| matches!(g.node(n).op, Op::Add)) {
            let (a, b) = binary(g, add)?;
            let leads_to_matmul = |s: ValueId| {
                let (start, _, _) = unscale(g, s, 4);
                single_use(g, start)
                    && producer(g, start).is_some_and(|n| matches!(g.node(n).op, Op::MatMul))
            };
            let (s, m) = if leads_to_matmul(a) {
                (a, b)
            } else if leads_to_matmul(b) {
                (b, a)
            } else {
                return None;
            };
            if s == m {
                return None;
            }
            mask = Some(m);
            scores = s;
            nodes.push(add);
        }
    }
    if mask.is_none() && !single_use(g, sin) {
        return None;
    }
    let (raw, f_scores, scale_nodes) = unscale(g, scores, 4);
    nodes.extend(scale_nodes);
    let mm1 = producer(g, raw)?;
    if !matches!(g.node(mm1).op, Op::MatMul) || !single_use(g, raw) {
        return None;
    }
    nodes.push(mm1);
    let s_dims = dims4(g, raw)?;
    let (qs, kts) = binary(g, mm1)?;
    let (q, f_q, q_nodes) = unscale(g, qs, 4);
    let (kt, f_k, k_nodes) = unscale(g, kts, 4);
    nodes.extend(q_nodes);
    nodes.extend(k_nodes);
    let q_dims = dims4(g, q)?;
    let kt_dims = dims4(g, kt)?;
    let v_dims = dims4(g, v)?;
    // K from Kᵀ.
    let swap = |p: &[i64]| vec![p[0], p[1], p[3], p[2]];
    let mut f_k2 = 1.0;
    let ksrc = match producer(g, kt) {
        Some(t) if single_use(g, kt) && matches!(g.node(t).op, Op::Transpose(_)) => {
            let perm = match &g.node(t).op {
                Op::Transpose(a) => a.perm.clone().unwrap_or_else(|| vec![3, 2, 1, 0]),
                _ => return None,
            };
            if perm.len() != 4 {
                return None;
            }
            let src0 = input(g, t, 0)?;
            let (src, f, src_nodes) = unscale(g, src0, 4);
            f_k2 = f;
            nodes.push(t);
            nodes.extend(src_nodes);
            let q = swap(&perm);
            if q == [0, 1, 2, 3] {
                KSource::Value(src)
            } else {
                KSource::Transpose(src, q)
            }
        }
        _ => KSource::Transpose(kt, vec![0, 1, 3, 2]),
    };
    let k_dims = vec![
        kt_dims[0].clone(),
        kt_dims[1].clone(),
        kt_dims[3].clone(),
        kt_dims[2].clone(),
    ];
    // Static conditions.
    let dt = dtype(g, q)?;
    if !is_float(dt)
        || dtype(g, kt) != Some(dt)
        || dtype(g, v) != Some(dt)
        || mask.is_some_and(|m| dtype(g, m) != Some(dt))
    {
        return None;
    }
    if !same_dim(&q_dims[0], &k_dims[0]) || !same_dim(&q_dims[0], &v_dims[0]) {
        return None;
    }
    let one = Dim::Fixed(1);
    let heads_ok =
        same_dim(&k_dims[1], &v_dims[1]) && (same_dim(&q_dims[1], &k_dims[1]) || k_dims[1] == one);
    // K's and V's sequence extents need no proof: MatMul(P, V) contracts P's last axis (K's
    // length) with V's, which must be equal for the graph to run at all.
    if !heads_ok {
        return None;
    }
    let mut guard = false;
    if let Some(m) = mask {
        let ms = shape(g, m)?;
        if ms.rank() > 4 || ms.rank() == 0 {
            return None;
        }
        let off = 4 - ms.rank();
        for (i, d) in ms.0.iter().enumerate().take(ms.rank() - 1) {
            let sd = &s_dims[off + i];
            if !(*d == one || same_dim(d, sd)) {
                return None;
            }
        }
        // The mask's last two extents must be the query and key lengths, not 1 broadcast over
        // them: Attention pads a narrower mask with -inf, and onnxruntime wants them exact. A
        // fixed key extent above 1 is the key length (the Add would fail otherwise); so are the
        // scores' own extents. Anything else is expanded first (below).
        let last = &ms.0[ms.rank() - 1];
        let keys_ok = match last {
            Dim::Fixed(n) => *n > 1 || s_dims[3] == one,
            _ => same_dim(last, &s_dims[3]),
        };
        let rows_ok = ms.rank() >= 2 && {
            let r = &ms.0[ms.rank() - 2];
            same_dim(r, &s_dims[2]) || matches!(r, Dim::Fixed(n) if *n > 1)
        };
        guard = !(keys_ok && rows_ok);
    }
    let scale = f_scores * f_q * f_k * f_k2;
    if !(scale.is_finite() && scale > 0.0 && (scale as f32).is_normal()) {
        return None;
    }
    let op = Op::Attention(AttentionAttrs {
        scale: Some(scale as f32),
        ..Default::default()
    });
    // Check inference before touching the graph.
    let k_ty = TensorType {
        dtype: Some(dt),
        shape: Some(Shape(k_dims)),
    };
    let tys = [
        Some(ty(g, q).clone()),
        Some(k_ty),
        Some(ty(g, v).clone()),
        mask.map(|m| ty(g, m).clone()),
    ];
    if !precheck(g, &op, &tys, &[], y) {
        return None;
    }
    let mut created = Vec::new();
    let k = match ksrc {
        KSource::Value(k) => k,
        KSource::Transpose(src, perm) => {
            let name = derived_name(g, mm1, "key");
            let t = add_typed(
                g,
                &name,
                Op::Transpose(TransposeAttrs { perm: Some(perm) }),
                vec![Some(src)],
            )?;
            created.extend(producer(g, t));
            t
        }
    };
    // A mask whose last two extents are not provably the query and key lengths is expanded
    // to them first: Expand(mask, [Sq, Skv]) is the mask itself where the extents agree and
    // exactly the Add's broadcast where the mask's are 1.
    if let (Some(m), true) = (mask, guard) {
        match expand_mask(g, mm2, m, q, k, &q_dims[2], &s_dims[3], &mut created) {
            Some(e) => mask = Some(e),
            None => {
                remove_dead(g, &created);
                return None;
            }
        }
    }
    let name = derived_name(g, mm2, "attention");
    let Some(att) = add_replacement(g, &name, op, vec![Some(q), Some(k), Some(v), mask], y) else {
        remove_dead(g, &created);
        return None;
    };
    replace_value(g, y, att);
    remove_dead(g, &nodes);
    Some(mask.is_some())
}

/// `Expand(mask, [Sq, Skv])` with the lengths from Q's and K's shapes (constants where fixed).
#[allow(clippy::too_many_arguments)]
fn expand_mask(
    g: &mut Graph,
    at: NodeId,
    mask: ValueId,
    q: ValueId,
    k: ValueId,
    sq: &Dim,
    skv: &Dim,
    created: &mut Vec<NodeId>,
) -> Option<ValueId> {
    let base = derived_name(g, at, "mask");
    let shape = match (sq, skv) {
        (Dim::Fixed(a), Dim::Fixed(b)) => g.add_const(
            format!("{base}/shape"),
            Tensor::from_vec(vec![2], vec![*a as i64, *b as i64]),
        ),
        _ => {
            let mut piece = |g: &mut Graph, d: &Dim, src: ValueId, what: &str| -> Option<ValueId> {
                let name = format!("{base}/{what}");
                match d {
                    Dim::Fixed(n) => {
                        Some(g.add_const(name, Tensor::from_vec(vec![1], vec![*n as i64])))
                    }
                    _ => {
                        let op = Op::Shape(ShapeAttrs {
                            start: 2,
                            end: Some(3),
                        });
                        let v = add_typed(g, &name, op, vec![Some(src)])?;
                        created.extend(producer(g, v));
                        Some(v)
                    }
                }
            };
            let a = piece(g, sq, q, "queries")?;
            let b = piece(g, skv, k, "keys")?;
            let c = add_typed(
                g,
                &format!("{base}/shape"),
                Op::Concat(ConcatAttrs { axis: 0 }),
                vec![Some(a), Some(b)],
            )?;
            created.extend(producer(g, c));
            c
        }
    };
    let e = add_typed(g, &base, Op::Expand, vec![Some(mask), Some(shape)])?;
    created.extend(producer(g, e));
    Some(e)
}
