//! Attention (opset 23; opset 24's optional `nonpad_kv_seqlen` input is accepted too).
//!
//! Per (batch, query head): `scores = scale · Q·Kᵀ`, optional softcap `c·tanh(scores/c)`, plus
//! the bias (float mask added, boolean mask as 0/−∞, causal −∞ above the diagonal shifted by the
//! past length, −∞ beyond `nonpad_kv_seqlen`), softmax over keys, then `·V`. A mask narrower
//! than the total sequence is padded with −∞ (false). Grouped-query attention maps query head
//! `h` to key/value head `h / (q_heads / kv_heads)`. 3-D inputs are split into heads and the
//! output merged back. Computes in f32 (f64 for f64 inputs or `softmax_precision` = double)
//! and rounds to the input types.

use crate::dispatch::Args;
use crate::matmul::gemm_into;
use crate::norm::finish;
use crate::num::Float;
use crate::Value;
use pare_ir::op::AttentionAttrs;
use pare_ir::DType;
use rayon::prelude::*;

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// Attention: Y, present_key, present_value, qk_matmul_output (the first `nout`).
pub(crate) fn attention(at: &AttentionAttrs, a: &Args, nout: usize) -> Result<Vec<Value>, String> {
    let (q, k, v) = (a.req(0)?, a.req(1)?, a.req(2)?);
    for (name, x) in [("Q", q), ("K", k), ("V", v)] {
        if !is_float(x.dtype()) {
            return Err(format!(
                "Attention: {name} must be a float tensor, got {}",
                x.dtype()
            ));
        }
    }
    let wide =
        at.softmax_precision == Some(11) || [q, k, v].iter().any(|x| x.dtype() == DType::F64);
    if wide {
        run::<f64>(at, a, nout)
    } else {
        run::<f32>(at, a, nout)
    }
}

fn vals<T: Float>(v: &Value) -> Result<Vec<T>, String> {
    Ok(v.to_f64_vec()?.into_iter().map(T::c).collect())
}

fn out<T: Float>(dtype: DType, shape: &[usize], data: &[T]) -> Result<Value, String> {
    finish(dtype, shape, data.iter().map(|x| x.to_f64()).collect())
}

/// `[B, S, H·D]` → `[B, H, S, D]`.
fn split_heads<T: Copy>(x: &[T], b: usize, s: usize, h: usize, d: usize) -> Vec<T> {
    let mut o = Vec::with_capacity(x.len());
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let base = (bi * s + si) * h * d + hi * d;
                o.extend_from_slice(&x[base..base + d]);
            }
        }
    }
    o
}

/// `[B, H, S, D]` → `[B, S, H·D]`.
fn merge_heads<T: Copy>(x: &[T], b: usize, h: usize, s: usize, d: usize) -> Vec<T> {
    let mut o = Vec::with_capacity(x.len());
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let base = ((bi * h + hi) * s + si) * d;
                o.extend_from_slice(&x[base..base + d]);
            }
        }
    }
    o
}

/// One of Q, K, V as `[B, H, S, D]` data with its dims.
fn as_4d<T: Float>(
    x: &Value,
    heads: Option<i64>,
    which: &str,
) -> Result<(Vec<T>, [usize; 4]), String> {
    let data = vals::<T>(x)?;
    match *x.shape() {
        [b, h, s, d] => Ok((data, [b, h, s, d])),
        [b, s, hidden] => {
            let h = heads.filter(|&h| h >= 1).ok_or_else(|| {
                format!("Attention: 3-D {which} needs q_num_heads and kv_num_heads")
            })? as usize;
            if hidden % h != 0 {
                return Err(format!(
                    "Attention: {which} hidden size {hidden} is not divisible by {h} heads"
                ));
            }
            let d = hidden / h;
            Ok((split_heads(&data, b, s, h, d), [b, h, s, d]))
        }
        ref s => Err(format!("Attention: {which} must be 3-D or 4-D, got {s:?}")),
    }
}

/// Appends `new` `[B, H, S, D]` after `past` `[B, H, P, D]` along the sequence.
fn concat_seq<T: Copy>(past: &[T], new: &[T], bh: usize, p: usize, s: usize, d: usize) -> Vec<T> {
    let mut o = Vec::with_capacity(past.len() + new.len());
    for i in 0..bh {
        o.extend_from_slice(&past[i * p * d..(i + 1) * p * d]);
        o.extend_from_slice(&new[i * s * d..(i + 1) * s * d]);
    }
    o
}

/// The additive mask, padded to `total` keys, with its strides broadcast to `[B, Hq, Sq, T]`.
struct Mask<T> {
    data: Vec<T>,
    strides: [usize; 4],
}

fn mask<T: Float>(m: &Value, dims: [usize; 4]) -> Result<Mask<T>, String> {
    let shape = m.shape();
    if shape.is_empty() || shape.len() > 4 {
        return Err(format!(
            "Attention: attn_mask must have rank 1 to 4, got {shape:?}"
        ));
    }
    let total = dims[3];
    let last = shape[shape.len() - 1];
    if last > total {
        return Err(format!(
            "Attention: attn_mask has {last} columns, more than the {total} keys"
        ));
    }
    let neg = T::c(f64::NEG_INFINITY);
    let raw: Vec<T> = if m.dtype() == DType::Bool {
        m.to_i64_vec()?
            .into_iter()
            .map(|x| if x != 0 { T::ZERO } else { neg })
            .collect()
    } else {
        vals::<T>(m)?
    };
    let rows = raw.len() / last.max(1);
    let mut data = Vec::with_capacity(rows * total);
    for r in 0..rows {
        data.extend_from_slice(&raw[r * last..(r + 1) * last]);
        data.extend(std::iter::repeat_n(neg, total - last));
    }
    let mut padded: Vec<usize> = shape.to_vec();
    if let Some(l) = padded.last_mut() {
        *l = total;
    }
    let mut full = vec![1usize; 4 - padded.len()];
    full.extend(padded);
    let mut strides = [0usize; 4];
    let mut acc = 1usize;
    for i in (0..4).rev() {
        if full[i] == dims[i] && full[i] != 1 {
            strides[i] = acc;
        } else if full[i] != 1 {
            return Err(format!(
                "Attention: attn_mask shape {shape:?} does not broadcast to {dims:?}"
            ));
        }
        acc *= full[i];
    }
    Ok(Mask { data, strides })
}

fn run<T: Float>(at: &AttentionAttrs, a: &Args, nout: usize) -> Result<Vec<Value>, String> {
    let (q, k, v) = (a.req(0)?, a.req(1)?, a.req(2)?);
    let rank = q.rank();
    if k.rank() != rank || v.rank() != rank {
        return Err(format!(
            "Attention: Q, K and V ranks differ ({:?}, {:?}, {:?})",
            q.shape(),
            k.shape(),
            v.shape()
        ));
    }
    let three_d = rank == 3;
    let (qd, [b, hq, sq, d]) = as_4d::<T>(q, at.q_num_heads, "Q")?;
    let (kd, [bk, hkv, skv, dk]) = as_4d::<T>(k, at.kv_num_heads, "K")?;
    let (vd, [bv, hv, sv, dv]) = as_4d::<T>(v, at.kv_num_heads, "V")?;
    if bk != b || bv != b || hv != hkv || sv != skv || dk != d {
        return Err(format!(
            "Attention: incompatible Q {:?}, K {:?}, V {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!(
            "Attention: {hq} query heads are not a multiple of {hkv} key/value heads"
        ));
    }
    let group = hq / hkv;
    // KV cache.
    let (kd, vd, past) = match (a.opt(4), a.opt(5)) {
        (None, None) => (kd, vd, 0),
        (Some(pk), Some(pv)) => {
            let (p, p2) = match (pk.shape(), pv.shape()) {
                (&[b1, h1, p, d1], &[b2, h2, p2, d2])
                    if b1 == b && b2 == b && h1 == hkv && h2 == hkv && d1 == d && d2 == dv =>
                {
                    (p, p2)
                }
                (x, y) => {
                    return Err(format!(
                        "Attention: past_key {x:?} / past_value {y:?} do not match K and V"
                    ))
                }
            };
            if p != p2 {
                return Err("Attention: past_key and past_value lengths differ".into());
            }
            let kd = concat_seq(&vals::<T>(pk)?, &kd, b * hkv, p, skv, d);
            let vd = concat_seq(&vals::<T>(pv)?, &vd, b * hkv, p, skv, dv);
            (kd, vd, p)
        }
        _ => return Err("Attention: past_key and past_value must be given together".into()),
    };
    let total = past + skv;
    let dims = [b, hq, sq, total];
    let m = a.opt(3).map(|m| mask::<T>(m, dims)).transpose()?;
    let nonpad: Option<Vec<i64>> = match a.opt(6) {
        Some(x) => {
            let l = x.to_i64_vec()?;
            if l.len() != b {
                return Err(format!(
                    "Attention: nonpad_kv_seqlen has {} entries, batch is {b}",
                    l.len()
                ));
            }
            Some(l)
        }
        None => None,
    };
    let scale = match at.scale {
        Some(s) => s as f64,
        None => 1.0 / (d as f64).sqrt(),
    };
    let softcap = at.softcap as f64;
    let mode = at.qk_matmul_output_mode;
    let want_qk = nout > 3;
    let neg = T::c(f64::NEG_INFINITY);
    let per_head = |bh: usize| -> (Vec<T>, Vec<T>) {
        let (bi, h) = (bh / hq, bh % hq);
        let kvh = bi * hkv + h / group;
        let qs = &qd[bh * sq * d..(bh + 1) * sq * d];
        let ks = &kd[kvh * total * d..(kvh + 1) * total * d];
        let vs = &vd[kvh * total * dv..(kvh + 1) * total * dv];
        let mut s = vec![T::ZERO; sq * total];
        gemm_into(
            sq,
            total,
            d,
            qs,
            (d, 1),
            ks,
            (1, d),
            &mut s,
            T::c(scale),
            false,
            false,
        );
        let mut qk = if want_qk && mode == 0 {
            s.clone()
        } else {
            Vec::new()
        };
        if softcap > 0.0 {
            let c = T::c(softcap);
            s.iter_mut().for_each(|x| *x = c * (*x / c).tanh());
        }
        if want_qk && mode == 1 {
            qk = s.clone();
        }
        for i in 0..sq {
            let row = &mut s[i * total..(i + 1) * total];
            if let Some(m) = &m {
                let base = bi * m.strides[0] + h * m.strides[1] + i * m.strides[2];
                for (j, x) in row.iter_mut().enumerate() {
                    *x += m.data[base + j * m.strides[3]];
                }
            }
            if at.is_causal {
                row.iter_mut().skip(past + i + 1).for_each(|x| *x += neg);
            }
            if let Some(l) = &nonpad {
                let keep = usize::try_from(l[bi].max(0)).unwrap_or(0).min(total);
                row[keep..].iter_mut().for_each(|x| *x += neg);
            }
        }
        if want_qk && mode == 2 {
            qk = s.clone();
        }
        for row in s.chunks_mut(total.max(1)) {
            let mx = row.iter().copied().fold(T::lowest(), |a, x| a.max_nan(x));
            let mut sum = T::ZERO;
            for x in row.iter_mut() {
                *x = (*x - mx).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x = *x / sum);
        }
        if want_qk && mode == 3 {
            qk = s.clone();
        }
        let mut y = vec![T::ZERO; sq * dv];
        gemm_into(
            sq,
            dv,
            total,
            &s,
            (total, 1),
            vs,
            (dv, 1),
            &mut y,
            T::ONE,
            false,
            false,
        );
        (y, qk)
    };
    let heads: Vec<(Vec<T>, Vec<T>)> = (0..b * hq).into_par_iter().map(per_head).collect();
    let mut y = Vec::with_capacity(b * hq * sq * dv);
    let mut qk = Vec::with_capacity(if want_qk { b * hq * sq * total } else { 0 });
    for (hy, hqk) in heads {
        y.extend(hy);
        qk.extend(hqk);
    }
    let mut outs = Vec::with_capacity(nout.max(1));
    outs.push(if three_d {
        out(
            q.dtype(),
            &[b, sq, hq * dv],
            &merge_heads(&y, b, hq, sq, dv),
        )?
    } else {
        out(q.dtype(), &[b, hq, sq, dv], &y)?
    });
    if nout > 1 {
        outs.push(out(k.dtype(), &[b, hkv, total, d], &kd)?);
    }
    if nout > 2 {
        outs.push(out(v.dtype(), &[b, hkv, total, dv], &vd)?);
    }
    if nout > 3 {
        outs.push(out(q.dtype(), &[b, hq, sq, total], &qk)?);
    }
    Ok(outs)
}
