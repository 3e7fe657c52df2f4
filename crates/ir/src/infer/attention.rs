//! Attention (opset 23): scaled dot-product attention over 4-D `[batch, heads, seq, head]` or
//! 3-D `[batch, seq, heads * head]` inputs, with an optional KV cache.

use super::ctx::{check_dtype, dim_div_exact, dim_mul, dim_sum, same_dtype, tt, unify, Ctx, R};
use crate::op::AttentionAttrs;
use crate::{DType, Dim, Shape, TensorType};

fn float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

fn heads(v: Option<i64>, name: &str) -> R<Option<u64>> {
    match v {
        Some(h) if h < 1 => Err(format!("{name} {h} must be >= 1")),
        Some(h) => Ok(Some(h as u64)),
        None => Ok(None),
    }
}

fn same(a: &Dim, b: &Dim, what: &str) -> R<Dim> {
    unify(a, b).ok_or_else(|| format!("Attention: {what} differ ({a} vs {b})"))
}

/// `[batch, heads, seq, head]` view of one of Q, K, V (3-D inputs are split into heads).
fn as_4d(s: &Shape, h: Option<u64>, which: &str) -> R<[Dim; 4]> {
    match s.0.as_slice() {
        [b, n, q, d] => Ok([b.clone(), n.clone(), q.clone(), d.clone()]),
        [b, q, hidden] => {
            let h = h.ok_or_else(|| {
                format!("Attention: 3-D {which} needs q_num_heads and kv_num_heads")
            })?;
            let d = dim_div_exact(hidden, h, &format!("Attention {which} hidden size"))?;
            Ok([b.clone(), Dim::Fixed(h), q.clone(), d])
        }
        _ => Err(format!("Attention: {which} must be 3-D or 4-D, got {s}")),
    }
}

/// Attention: Y, present_key, present_value, qk_matmul_output.
pub(crate) fn attention(a: &AttentionAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    cx.require(0, "Q")?;
    cx.require(1, "K")?;
    cx.require(2, "V")?;
    let qd = same_dtype(cx, [0, 1, 4], "Attention (Q, K, past_key)")?;
    let vd = same_dtype(cx, [2, 5], "Attention (V, past_value)")?;
    check_dtype(qd, float, "Attention Q/K")?;
    check_dtype(vd, float, "Attention V")?;
    if cx.present(4) != cx.present(5) {
        return Err("Attention: past_key and past_value must be given together".into());
    }
    let hq = heads(a.q_num_heads, "q_num_heads")?;
    let hkv = heads(a.kv_num_heads, "kv_num_heads")?;
    let unknown = |n: usize| vec![TensorType::UNKNOWN; n];
    let ranks: Vec<usize> = [0, 1, 2].iter().filter_map(|&i| cx.rank(i)).collect();
    if let Some(&r) = ranks.first() {
        if ranks.iter().any(|&x| x != r) {
            return Err(format!("Attention: Q, K and V ranks differ ({ranks:?})"));
        }
        if r != 3 && r != 4 {
            return Err(format!(
                "Attention: inputs must be 3-D or 4-D, got rank {r}"
            ));
        }
        if r == 3 && (hq.is_none() || hkv.is_none()) {
            return Err("Attention: 3-D inputs need q_num_heads and kv_num_heads".into());
        }
    }
    let (Some(sq), Some(sk), Some(sv)) = (cx.shape(0), cx.shape(1), cx.shape(2)) else {
        let mut out = unknown(cx.num_outputs.max(1));
        if let Some(t) = out.first_mut() {
            *t = tt(qd, None);
        }
        return Ok(out);
    };
    let three_d = sq.rank() == 3;
    let q = as_4d(sq, hq, "Q")?;
    let k = as_4d(sk, hkv, "K")?;
    let v = as_4d(sv, hkv, "V")?;
    let batch = same(&same(&q[0], &k[0], "batch sizes")?, &v[0], "batch sizes")?;
    let kv_heads = same(&k[1], &v[1], "K and V head counts")?;
    if let (Some(x), Some(y)) = (q[1].fixed(), kv_heads.fixed()) {
        if y == 0 || x % y != 0 {
            return Err(format!(
                "Attention: {x} query heads are not a multiple of {y} key/value heads"
            ));
        }
    }
    let head = same(&q[3], &k[3], "Q and K head sizes")?;
    let kv_seq = same(&k[2], &v[2], "K and V sequence lengths")?;
    // The KV cache: past_key [B, Hkv, P, D], past_value [B, Hkv, P, Dv].
    let mut total = kv_seq.clone();
    let mut head = head;
    let mut vhead = v[3].clone();
    if let (Some(pk), Some(pv)) = (cx.shape(4), cx.shape(5)) {
        match (pk.0.as_slice(), pv.0.as_slice()) {
            ([_, _, p, d], [_, _, p2, dv]) => {
                let p = same(p, p2, "past sequence lengths")?;
                head = same(&head, d, "past_key and K head sizes")?;
                vhead = same(&vhead, dv, "past_value and V head sizes")?;
                total = dim_sum(&p, &kv_seq);
            }
            _ => {
                return Err(format!(
                    "Attention: past_key/value must be 4-D, got {pk} and {pv}"
                ))
            }
        }
    } else if cx.present(4) {
        total = Dim::Unknown;
    }
    let y = if three_d {
        Shape(vec![batch.clone(), q[2].clone(), dim_mul(&q[1], &vhead)])
    } else {
        Shape(vec![
            batch.clone(),
            q[1].clone(),
            q[2].clone(),
            vhead.clone(),
        ])
    };
    let pk = Shape(vec![batch.clone(), kv_heads.clone(), total.clone(), head]);
    let pv = Shape(vec![batch.clone(), kv_heads, total.clone(), vhead]);
    let qk = Shape(vec![batch, q[1].clone(), q[2].clone(), total]);
    let mut out = vec![
        tt(qd, Some(y)),
        tt(qd, Some(pk)),
        tt(vd, Some(pv)),
        tt(qd, Some(qk)),
    ];
    out.truncate(cx.num_outputs.max(1));
    Ok(out)
}
