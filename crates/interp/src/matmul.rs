//! Matrix products: the GEMM kernel wrapper, MatMul (numpy semantics), Gemm, Einsum, Det.

use crate::num::{broadcast_shapes, bview, contiguous, from_vec, Float, Num};
use crate::Value;
use ndarray::{ArrayD, Axis, IxDyn};
use pare_ir::op::GemmAttrs;
use rayon::prelude::*;
use std::collections::HashMap;

/// Below this many multiply-adds a product runs single-threaded.
const PAR_FLOPS: usize = 1 << 18;

/// `c[m×n]` (row-major, contiguous) `= alpha·A·B (+ c when accumulate)`, where element
/// `(i, p)` of A is `a[i·a_rs + p·a_cs]` and element `(p, j)` of B is `b[p·b_rs + j·b_cs]`.
/// Strides are non-negative.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    c: &mut [T],
    alpha: T,
    accumulate: bool,
    parallel: bool,
) {
    assert!(c.len() >= m * n, "gemm_into: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|v| *v = T::ZERO);
        }
        return;
    }
    // Bounds: the largest element offsets touched must be inside the slices.
    let a_max = (m - 1) * a_rs + (k - 1) * a_cs;
    let b_max = (k - 1) * b_rs + (n - 1) * b_cs;
    assert!(
        a_max < a.len() && b_max < b.len(),
        "gemm_into: operand slices too small"
    );
    let par = if parallel && m * n * k >= PAR_FLOPS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `T` is f32 or f64 (the only `Float` impls), which `gemm` supports. Every
    // element read from `a`/`b` is at an offset <= a_max / b_max, checked above to be in
    // bounds; the destination is the first m·n elements of `c` (checked), row-major with
    // row stride n, exclusively borrowed. `read_dst` is set only when accumulating, and then
    // the destination holds initialized values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            T::ONE,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// Integer (or any `Num`) product with wrapping arithmetic: `c = A·B`, row-major contiguous.
pub(crate) fn naive_into<T: Num>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T]) {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        row.iter_mut().for_each(|v| *v = T::ZERO);
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (o, &bv) in row.iter_mut().zip(brow) {
                *o = o.add(av.mul(bv));
            }
        }
    }
}

/// numpy-matmul shape logic and batching; `kernel(m, n, k, a, b, c, parallel)` multiplies one
/// contiguous row-major pair.
fn batched<T, K>(a: &ArrayD<T>, b: &ArrayD<T>, kernel: K) -> Result<ArrayD<T>, String>
where
    T: Copy + Send + Sync + Default,
    K: Fn(usize, usize, usize, &[T], &[T], &mut [T], bool) + Sync,
{
    let (ra, rb) = (a.ndim(), b.ndim());
    if ra == 0 || rb == 0 {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a_shape: Vec<usize> = if ra == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let b_shape: Vec<usize> = if rb == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let (k2, n) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
    if k != k2 {
        return Err(format!(
            "MatMul: shapes {:?} and {:?} do not agree on K ({k} vs {k2})",
            a.shape(),
            b.shape()
        ));
    }
    let a_batch = &a_shape[..a_shape.len() - 2];
    let b_batch = &b_shape[..b_shape.len() - 2];
    let out_batch = broadcast_shapes(a_batch, b_batch)?;
    let nb: usize = out_batch.iter().product();
    let ad = contiguous(a);
    let bd = contiguous(b);
    let mut out = vec![T::default(); nb * m * n];
    let b_single = b_batch.iter().product::<usize>() == 1;
    if b_single && a_batch.iter().product::<usize>() == nb {
        // Fold A's batch into M: one big product.
        kernel(nb * m, n, k, &ad, &bd, &mut out, true);
    } else if nb > 0 {
        // Broadcast batch offsets.
        let rank = out_batch.len();
        let bstr = |shape: &[usize], mat: usize| -> Vec<usize> {
            let off = rank - shape.len();
            let mut st = vec![0usize; rank];
            let mut acc = mat;
            for d in (0..shape.len()).rev() {
                st[off + d] = if shape[d] == 1 { 0 } else { acc };
                acc *= shape[d];
            }
            st
        };
        let sa = bstr(a_batch, m * k);
        let sb = bstr(b_batch, k * n);
        let offsets: Vec<(usize, usize)> = (0..nb)
            .map(|lin| {
                let (mut oa, mut ob, mut rem) = (0, 0, lin);
                for d in (0..rank).rev() {
                    let i = rem % out_batch[d];
                    rem /= out_batch[d];
                    oa += i * sa[d];
                    ob += i * sb[d];
                }
                (oa, ob)
            })
            .collect();
        let flops = m * n * k;
        let per_batch_par = nb > 1 && flops < PAR_FLOPS * 4 && m * n > 0;
        if per_batch_par {
            out.par_chunks_mut((m * n).max(1))
                .zip(offsets.par_iter())
                .for_each(|(c, &(oa, ob))| {
                    kernel(m, n, k, &ad[oa..oa + m * k], &bd[ob..ob + k * n], c, false)
                });
        } else if m * n > 0 {
            for (c, &(oa, ob)) in out.chunks_mut(m * n).zip(&offsets) {
                kernel(m, n, k, &ad[oa..oa + m * k], &bd[ob..ob + k * n], c, true);
            }
        }
    }
    let mut oshape = out_batch;
    if ra > 1 {
        oshape.push(m);
    }
    if rb > 1 {
        oshape.push(n);
    }
    from_vec(&oshape, out)
}

fn float_kernel<T: Float>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T], par: bool) {
    gemm_into(m, n, k, a, (k, 1), b, (n, 1), c, T::ONE, false, par)
}

fn int_kernel<T: Num>(m: usize, n: usize, k: usize, a: &[T], b: &[T], c: &mut [T], _par: bool) {
    naive_into(m, n, k, a, b, c)
}

/// Batched float product with numpy semantics (used by MatMul and Einsum).
pub(crate) fn matmul_f<T: Float>(a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>, String> {
    batched(a, b, float_kernel::<T>)
}

/// MatMul.
pub(crate) fn matmul(a: &Value, b: &Value) -> Result<Value, String> {
    Ok(match (a, b) {
        (Value::F32(p), Value::F32(q)) => Value::F32(matmul_f(p, q)?),
        (Value::F64(p), Value::F64(q)) => Value::F64(matmul_f(p, q)?),
        (Value::F16(p), Value::F16(q)) => Value::F16(
            matmul_f(&p.mapv(|x| x.to_f32()), &q.mapv(|x| x.to_f32()))?.mapv(half::f16::from_f32),
        ),
        (Value::BF16(p), Value::BF16(q)) => Value::BF16(
            matmul_f(&p.mapv(|x| x.to_f32()), &q.mapv(|x| x.to_f32()))?.mapv(half::bf16::from_f32),
        ),
        (Value::I8(p), Value::I8(q)) => Value::I8(batched(p, q, int_kernel::<i8>)?),
        (Value::U8(p), Value::U8(q)) => Value::U8(batched(p, q, int_kernel::<u8>)?),
        (Value::I16(p), Value::I16(q)) => Value::I16(batched(p, q, int_kernel::<i16>)?),
        (Value::U16(p), Value::U16(q)) => Value::U16(batched(p, q, int_kernel::<u16>)?),
        (Value::I32(p), Value::I32(q)) => Value::I32(batched(p, q, int_kernel::<i32>)?),
        (Value::U32(p), Value::U32(q)) => Value::U32(batched(p, q, int_kernel::<u32>)?),
        (Value::I64(p), Value::I64(q)) => Value::I64(batched(p, q, int_kernel::<i64>)?),
        (Value::U64(p), Value::U64(q)) => Value::U64(batched(p, q, int_kernel::<u64>)?),
        (p, q) => {
            return Err(format!(
                "MatMul: unsupported operand types {} and {}",
                p.dtype(),
                q.dtype()
            ))
        }
    })
}

fn gemm_float<T: Float>(
    at: &GemmAttrs,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    c: Option<&ArrayD<T>>,
) -> Result<ArrayD<T>, String> {
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err("Gemm expects rank-2 A and B".into());
    }
    let (m, k) = if at.trans_a {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (k2, n) = if at.trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if k != k2 {
        return Err(format!("Gemm: inner dimensions differ ({k} vs {k2})"));
    }
    let ad = contiguous(a);
    let bd = contiguous(b);
    let sa = if at.trans_a { (1, m) } else { (k, 1) };
    let sb = if at.trans_b { (1, k) } else { (n, 1) };
    let beta = T::c(at.beta as f64);
    let (mut out, acc) = match c {
        Some(c) if at.beta != 0.0 => {
            let v = bview(c, &[m, n])?;
            (v.iter().map(|&x| x * beta).collect::<Vec<T>>(), true)
        }
        _ => (vec![T::ZERO; m * n], false),
    };
    gemm_into(
        m,
        n,
        k,
        &ad,
        sa,
        &bd,
        sb,
        &mut out,
        T::c(at.alpha as f64),
        acc,
        true,
    );
    from_vec(&[m, n], out)
}

fn gemm_int<T: Num>(
    at: &GemmAttrs,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    c: Option<&ArrayD<T>>,
) -> Result<ArrayD<T>, String> {
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err("Gemm expects rank-2 A and B".into());
    }
    let a = if at.trans_a {
        a.t().to_owned()
    } else {
        a.clone()
    };
    let b = if at.trans_b {
        b.t().to_owned()
    } else {
        b.clone()
    };
    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
    if b.shape()[0] != k {
        return Err("Gemm: inner dimensions differ".into());
    }
    let mut out = vec![T::ZERO; m * n];
    naive_into(m, n, k, &contiguous(&a), &contiguous(&b), &mut out);
    let alpha = T::from_f64(at.alpha as f64);
    let beta = T::from_f64(at.beta as f64);
    let out: Vec<T> = out.into_iter().map(|v| v.mul(alpha)).collect();
    let mut res = from_vec(&[m, n], out)?;
    if let Some(c) = c {
        let cv = bview(c, &[m, n])?;
        ndarray::Zip::from(&mut res)
            .and(&cv)
            .for_each(|r, &c| *r = r.add(c.mul(beta)));
    }
    Ok(res)
}

/// Gemm.
pub(crate) fn gemm_op(
    at: &GemmAttrs,
    a: &Value,
    b: &Value,
    c: Option<&Value>,
) -> Result<Value, String> {
    macro_rules! cget {
        ($v:ident) => {
            match c {
                None => None,
                Some(Value::$v(x)) => Some(x),
                Some(o) => return Err(format!("C has type {}, unlike A", o.dtype())),
            }
        };
    }
    Ok(match (a, b) {
        (Value::F32(p), Value::F32(q)) => Value::F32(gemm_float(at, p, q, cget!(F32))?),
        (Value::F64(p), Value::F64(q)) => Value::F64(gemm_float(at, p, q, cget!(F64))?),
        (Value::F16(p), Value::F16(q)) => {
            let cc = cget!(F16).map(|x| x.mapv(|v| v.to_f32()));
            let r = gemm_float(
                at,
                &p.mapv(|x| x.to_f32()),
                &q.mapv(|x| x.to_f32()),
                cc.as_ref(),
            )?;
            Value::F16(r.mapv(half::f16::from_f32))
        }
        (Value::BF16(p), Value::BF16(q)) => {
            let cc = cget!(BF16).map(|x| x.mapv(|v| v.to_f32()));
            let r = gemm_float(
                at,
                &p.mapv(|x| x.to_f32()),
                &q.mapv(|x| x.to_f32()),
                cc.as_ref(),
            )?;
            Value::BF16(r.mapv(half::bf16::from_f32))
        }
        (Value::I32(p), Value::I32(q)) => Value::I32(gemm_int(at, p, q, cget!(I32))?),
        (Value::I64(p), Value::I64(q)) => Value::I64(gemm_int(at, p, q, cget!(I64))?),
        (Value::U32(p), Value::U32(q)) => Value::U32(gemm_int(at, p, q, cget!(U32))?),
        (Value::U64(p), Value::U64(q)) => Value::U64(gemm_int(at, p, q, cget!(U64))?),
        (p, q) => {
            return Err(format!(
                "Gemm: unsupported operand types {} and {}",
                p.dtype(),
                q.dtype()
            ))
        }
    })
}

/// Determinant of square matrices in the last two axes (LU with partial pivoting, in f64).
pub(crate) fn det(x: &Value) -> Result<Value, String> {
    let r = x.rank();
    if r < 2 || x.shape()[r - 1] != x.shape()[r - 2] {
        return Err(format!("Det expects [..., M, M], got {:?}", x.shape()));
    }
    let n = x.shape()[r - 1];
    let batch_shape = x.shape()[..r - 2].to_vec();
    let data = x.to_f64_vec()?;
    let mut out = Vec::new();
    for mat in data.chunks(n * n.max(1)).take(batch_shape.iter().product()) {
        let mut a = mat.to_vec();
        let mut d = 1.0f64;
        for col in 0..n {
            let piv = (col..n)
                .max_by(|&i, &j| {
                    a[i * n + col]
                        .abs()
                        .partial_cmp(&a[j * n + col].abs())
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(col);
            if a[piv * n + col] == 0.0 {
                d = 0.0;
                break;
            }
            if piv != col {
                for j in 0..n {
                    a.swap(piv * n + j, col * n + j);
                }
                d = -d;
            }
            let p = a[col * n + col];
            d *= p;
            for i in col + 1..n {
                let f = a[i * n + col] / p;
                for j in col..n {
                    a[i * n + j] -= f * a[col * n + j];
                }
            }
        }
        out.push(d);
    }
    if n == 0 {
        out = vec![1.0; batch_shape.iter().product()];
    }
    let v = Value::F64(from_vec(&batch_shape, out)?);
    crate::cast::cast(&v, x.dtype(), true)
}

// ---------------------------------------------------------------------------------------------
// Einsum

/// A label: a letter, or an ellipsis dimension (numbered from the left of the broadcast
/// ellipsis block).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
enum Label {
    Ell(usize),
    Ch(char),
}

fn parse_term(t: &str, rank: Option<usize>, ell_rank: usize) -> Result<Vec<Label>, String> {
    let t = t.trim();
    let letters = t.chars().filter(|c| c.is_ascii_alphabetic()).count();
    let mut out = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            let here = match rank {
                Some(r) => r
                    .checked_sub(letters)
                    .ok_or_else(|| format!("term '{t}' has more labels than rank {r}"))?,
                None => ell_rank,
            };
            // Right-align this operand's ellipsis dims within the broadcast ellipsis block.
            for i in 0..here {
                out.push(Label::Ell(ell_rank - here + i));
            }
            rest = r;
        } else {
            let c = rest.chars().next().expect("non-empty");
            if !c.is_ascii_alphabetic() {
                return Err(format!("invalid character '{c}' in einsum equation"));
            }
            out.push(Label::Ch(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

/// Takes diagonals over repeated labels; returns the array with unique labels.
fn diagonal<T: Float>(a: ArrayD<T>, labels: Vec<Label>) -> (ArrayD<T>, Vec<Label>) {
    let mut uniq: Vec<Label> = Vec::new();
    for l in &labels {
        if !uniq.contains(l) {
            uniq.push(*l);
        }
    }
    if uniq.len() == labels.len() {
        return (a, labels);
    }
    let shape = a.shape().to_vec();
    let ushape: Vec<usize> = uniq
        .iter()
        .map(|u| shape[labels.iter().position(|l| l == u).expect("present")])
        .collect();
    let src = contiguous(&a);
    let st = crate::num::strides_of(&shape);
    // Stride of each unique label = sum of strides of its axes.
    let ust: Vec<usize> = uniq
        .iter()
        .map(|u| {
            labels
                .iter()
                .enumerate()
                .filter(|(_, l)| *l == u)
                .map(|(i, _)| st[i])
                .sum()
        })
        .collect();
    let n: usize = ushape.iter().product();
    let ost = crate::num::strides_of(&ushape);
    let out: Vec<T> = (0..n)
        .map(|lin| {
            let mut off = 0;
            for d in 0..ushape.len() {
                off += ((lin / ost[d]) % ushape[d]) * ust[d];
            }
            src[off]
        })
        .collect();
    (
        ArrayD::from_shape_vec(IxDyn(&ushape), out).expect("sizes match"),
        uniq,
    )
}

fn sum_labels<T: Float>(
    mut a: ArrayD<T>,
    labels: &mut Vec<Label>,
    keep: impl Fn(&Label) -> bool,
) -> ArrayD<T> {
    let mut i = labels.len();
    while i > 0 {
        i -= 1;
        if !keep(&labels[i]) {
            a = a.sum_axis(Axis(i));
            labels.remove(i);
        }
    }
    a
}

fn permute_to<T: Float>(a: &ArrayD<T>, labels: &[Label], order: &[Label]) -> ArrayD<T> {
    let perm: Vec<usize> = order
        .iter()
        .map(|o| labels.iter().position(|l| l == o).expect("label present"))
        .collect();
    crate::shape_ops::transpose_arr(a, &perm)
}

fn einsum_t<T: Float>(eq: &str, xs: &[&ArrayD<T>]) -> Result<ArrayD<T>, String> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != xs.len() {
        return Err(format!(
            "equation has {} operands, {} were given",
            terms.len(),
            xs.len()
        ));
    }
    // Ellipsis rank = max over operands.
    let mut ell_rank = 0;
    for (t, x) in terms.iter().zip(xs) {
        if t.contains("...") {
            let letters = t.chars().filter(|c| c.is_ascii_alphabetic()).count();
            ell_rank = ell_rank.max(x.ndim().saturating_sub(letters));
        }
    }
    let mut ops: Vec<(ArrayD<T>, Vec<Label>)> = Vec::new();
    let mut dims: HashMap<Label, usize> = HashMap::new();
    for (t, x) in terms.iter().zip(xs) {
        let labels = parse_term(t, Some(x.ndim()), ell_rank)?;
        if labels.len() != x.ndim() {
            return Err(format!(
                "term '{t}' does not match operand rank {}",
                x.ndim()
            ));
        }
        for (l, &d) in labels.iter().zip(x.shape()) {
            let e = dims.entry(*l).or_insert(d);
            if *e != d {
                if *e == 1 {
                    *e = d;
                } else if d != 1 {
                    return Err(format!("label {l:?} has extents {e} and {d}"));
                }
            }
        }
        let (a, l) = diagonal((*x).clone(), labels);
        ops.push((a, l));
    }
    let out_labels: Vec<Label> = match &rhs {
        Some(r) => parse_term(r, None, ell_rank)?,
        None => {
            let mut count: HashMap<char, usize> = HashMap::new();
            for t in &terms {
                for c in t.chars().filter(|c| c.is_ascii_alphabetic()) {
                    *count.entry(c).or_default() += 1;
                }
            }
            let mut v: Vec<Label> = (0..ell_rank).map(Label::Ell).collect();
            let mut once: Vec<char> = count
                .into_iter()
                .filter(|(_, n)| *n == 1)
                .map(|(c, _)| c)
                .collect();
            once.sort_unstable();
            v.extend(once.into_iter().map(Label::Ch));
            v
        }
    };
    // Labels still needed by operands after `i` or by the output.
    let needed_after = |ops: &[(ArrayD<T>, Vec<Label>)], i: usize, l: &Label| -> bool {
        out_labels.contains(l) || ops[i + 1..].iter().any(|(_, ls)| ls.contains(l))
    };
    // Sum out labels private to each operand early.
    for i in 0..ops.len() {
        let (a, mut ls) = (ops[i].0.clone(), ops[i].1.clone());
        let others: Vec<Label> = ops
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, (_, l))| l.clone())
            .collect();
        let a = sum_labels(a, &mut ls, |l| out_labels.contains(l) || others.contains(l));
        ops[i] = (a, ls);
    }
    let (mut acc, mut acc_l) = ops[0].clone();
    for i in 1..ops.len() {
        let (b, b_l) = ops[i].clone();
        let keep = |l: &Label| needed_after(&ops, i, l);
        let batch: Vec<Label> = acc_l
            .iter()
            .filter(|l| b_l.contains(l) && keep(l))
            .copied()
            .collect();
        let contr: Vec<Label> = acc_l
            .iter()
            .filter(|l| b_l.contains(l) && !keep(l))
            .copied()
            .collect();
        let a_only: Vec<Label> = acc_l.iter().filter(|l| !b_l.contains(l)).copied().collect();
        let b_only: Vec<Label> = b_l.iter().filter(|l| !acc_l.contains(l)).copied().collect();
        let ext = |l: &Label| dims[l];
        // Broadcast size-1 shared dims.
        let bcast = |a: ArrayD<T>, ls: &[Label]| -> Result<ArrayD<T>, String> {
            let target: Vec<usize> = ls
                .iter()
                .map(|l| {
                    if batch.contains(l) || contr.contains(l) {
                        ext(l)
                    } else {
                        a.shape()[ls.iter().position(|x| x == l).expect("present")]
                    }
                })
                .collect();
            if target.as_slice() == a.shape() {
                Ok(a)
            } else {
                Ok(bview(&a, &target)?.to_owned())
            }
        };
        let a2 = bcast(acc, &acc_l)?;
        let b2 = bcast(b, &b_l)?;
        let mut a_order = batch.clone();
        a_order.extend(&a_only);
        a_order.extend(&contr);
        let mut b_order = batch.clone();
        b_order.extend(&contr);
        b_order.extend(&b_only);
        let ap = permute_to(&a2, &acc_l, &a_order);
        let bp = permute_to(&b2, &b_l, &b_order);
        let nb: usize = batch.iter().map(ext).product();
        let m: usize = a_only
            .iter()
            .map(|l| ap.shape()[a_order.iter().position(|x| x == l).expect("present")])
            .product();
        let k: usize = contr.iter().map(ext).product();
        let n: usize = b_only
            .iter()
            .map(|l| bp.shape()[b_order.iter().position(|x| x == l).expect("present")])
            .product();
        let a3 = ap
            .into_shape_with_order(IxDyn(&[nb, m, k]))
            .map_err(|e| e.to_string())?;
        let b3 = bp
            .into_shape_with_order(IxDyn(&[nb, k, n]))
            .map_err(|e| e.to_string())?;
        let c3 = matmul_f(&a3, &b3)?;
        let mut cshape: Vec<usize> = batch.iter().map(ext).collect();
        cshape.extend(
            a_only
                .iter()
                .map(|l| a2.shape()[acc_l.iter().position(|x| x == l).expect("present")]),
        );
        cshape.extend(
            b_only
                .iter()
                .map(|l| b2.shape()[b_l.iter().position(|x| x == l).expect("present")]),
        );
        acc = c3
            .into_shape_with_order(IxDyn(&cshape))
            .map_err(|e| e.to_string())?;
        acc_l = batch;
        acc_l.extend(a_only);
        acc_l.extend(b_only);
    }
    let acc = sum_labels(acc, &mut acc_l, |l| out_labels.contains(l));
    for l in &out_labels {
        if !acc_l.contains(l) {
            return Err(format!("output label {l:?} does not appear in the inputs"));
        }
    }
    Ok(permute_to(&acc, &acc_l, &out_labels))
}

/// Einsum (general: diagonals, ellipsis broadcasting, pairwise contraction by batched GEMM).
pub(crate) fn einsum(eq: &str, xs: &[&Value]) -> Result<Value, String> {
    let first = xs.first().ok_or("Einsum needs at least one input")?;
    match first {
        Value::F32(_) => {
            let v: Vec<&ArrayD<f32>> = xs
                .iter()
                .map(|x| match x {
                    Value::F32(a) => Ok(a),
                    o => Err(format!("mixed operand types f32 and {}", o.dtype())),
                })
                .collect::<Result<_, _>>()?;
            Ok(Value::F32(einsum_t(eq, &v)?))
        }
        _ => {
            // Everything else computes in f64 and casts back.
            let dt = first.dtype();
            let conv: Vec<ArrayD<f64>> = xs
                .iter()
                .map(|x| from_vec(x.shape(), x.to_f64_vec()?))
                .collect::<Result<_, String>>()?;
            let refs: Vec<&ArrayD<f64>> = conv.iter().collect();
            crate::cast::cast(&Value::F64(einsum_t(eq, &refs)?), dt, true)
        }
    }
}
