//! Batched MatMul / Gemm on the packed SGEMM, with a fused epilogue:
//! `C[b] = act(alpha * op(A[b]) · op(B[b]) + bias + residual[b])`.
//!
//! When B is shared by every batch (`b_batch_stride == 0`, e.g. a Linear layer over
//! `[batch, tokens, features]`) and A's batches are contiguous and not transposed, the batches
//! are folded into M: one `batch*m x n x k` GEMM, which packs B once and lets the GEMM split
//! the threads over all rows. Otherwise each batch is one GEMM; many small batches (attention
//! heads) are spread over the threads, a few large ones each use all the threads.

use super::conv::{
    c_bufs, c_guard, c_in, c_out, c_params, decode_activation, encode_activation, need_len,
    run_parts, task_count, word_bool, word_usize, FirstError, KernelError, Res, ACT_WORDS, MAX_DIM,
};
use super::{f64_word, word_f64, STATUS_PARAMS};
use crate::{Activation, BOperand, Bias, Epilogue, Gemm, Isa, PackedB, PackedBRef, Residual};

/// Tag word that starts an encoded [`MatMulParams`] (`"MATM"`, layout version 1).
pub const MATMUL_TAG: i64 = 0x4d41_544d_0001;
/// Number of words of an encoded [`MatMulParams`].
pub const MATMUL_WORDS: usize = 13 + ACT_WORDS;

/// The bias of a [`MatMulParams`], the same for every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatMulBias {
    /// None.
    #[default]
    None,
    /// `bias[j]` added to column `j` (length `n`): ONNX Gemm's `C` of shape `[n]` / `[1, n]`.
    PerColumn,
    /// `bias[i]` added to row `i` (length `m`): `C` of shape `[m, 1]`.
    PerRow,
}

/// Parameters of `pare_k_matmul`:
/// `C[b] = act(alpha * op(A[b]) · op(B[b]) + bias + residual[b])` for `b < batch`, f32,
/// row-major, `op(A)` `m x k`, `op(B)` `k x n`, `C[b]` `m x n` at `c + b*m*n`.
///
/// * A batch `b` starts at element `b * a_batch_stride` of `a`; stored `m x k` (row stride `k`)
///   or, with `trans_a`, `k x m` (row stride `m`).
/// * B batch `b` starts at element `b * b_batch_stride` of `b` (0: every batch uses the same
///   B); stored `k x n` (row stride `n`) or, with `trans_b`, `n x k` (row stride `k`). With
///   `b_prepacked`, `b` is instead the output of [`matmul_prepare_b`]: `op(B)` in the
///   [`PackedB`] layout, `PackedB::packed_len(k, n)` floats per distinct batch (one if
///   `b_batch_stride == 0`, else `batch`).
/// * The residual, if any, is shaped like `C` (`batch*m*n`, batch stride `m*n`).
///
/// **Word layout** (`encode`, [`MATMUL_WORDS`] words): `[MATMUL_TAG, batch, m, n, k,
/// a_batch_stride, b_batch_stride, trans_a, trans_b, b_prepacked, alpha (f64 bits), bias_kind
/// (0 none, 1 per column, 2 per row), has_residual, act_kind, act_p0, act_p1]`.
///
/// **Buffers** (`bufs`, 5 pointers): `[a, b, bias, residual, c]`; `bias` read only if
/// `bias != None` (length `n` or `m`), `residual` only if `has_residual` (it may be the same
/// pointer as `c` for an in-place add, otherwise it must not overlap `c`); `c` must not overlap
/// `a` or `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatMulParams {
    /// Number of independent products.
    pub batch: usize,
    /// Rows of `op(A)` and `C`.
    pub m: usize,
    /// Columns of `op(B)` and `C`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// Elements between consecutive batches of A.
    pub a_batch_stride: usize,
    /// Elements between consecutive batches of (unpacked) B; 0 broadcasts one B.
    pub b_batch_stride: usize,
    /// A is stored transposed (`k x m`).
    pub trans_a: bool,
    /// B is stored transposed (`n x k`).
    pub trans_b: bool,
    /// B is a compile-time constant packed by [`matmul_prepare_b`].
    pub b_prepacked: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Bias broadcast over the batches.
    pub bias: MatMulBias,
    /// Whether a residual shaped like `C` is added (after the bias).
    pub has_residual: bool,
    /// Applied last.
    pub activation: Activation,
}

impl MatMulParams {
    /// A plain `batch` x (`m x k` · `k x n`) product, batches contiguous, nothing fused.
    pub fn new(batch: usize, m: usize, n: usize, k: usize) -> Self {
        MatMulParams {
            batch,
            m,
            n,
            k,
            a_batch_stride: m * k,
            b_batch_stride: k * n,
            trans_a: false,
            trans_b: false,
            b_prepacked: false,
            alpha: 1.0,
            bias: MatMulBias::None,
            has_residual: false,
            activation: Activation::Identity,
        }
    }

    /// The words of this block (see the struct doc).
    pub fn encode(&self) -> Vec<i64> {
        let mut v: Vec<i64> = vec![MATMUL_TAG];
        v.extend(
            [
                self.batch,
                self.m,
                self.n,
                self.k,
                self.a_batch_stride,
                self.b_batch_stride,
                self.trans_a as usize,
                self.trans_b as usize,
                self.b_prepacked as usize,
            ]
            .iter()
            .map(|&x| x as i64),
        );
        v.push(f64_word(self.alpha as f64));
        v.push(match self.bias {
            MatMulBias::None => 0,
            MatMulBias::PerColumn => 1,
            MatMulBias::PerRow => 2,
        });
        v.push(self.has_residual as i64);
        encode_activation(&self.activation, &mut v);
        v
    }

    /// Parses and validates words produced by [`MatMulParams::encode`].
    pub fn decode(words: &[i64]) -> Option<Self> {
        if words.len() != MATMUL_WORDS || words[0] != MATMUL_TAG {
            return None;
        }
        let u = |i: usize| word_usize(words[i]);
        let p = MatMulParams {
            batch: u(1)?,
            m: u(2)?,
            n: u(3)?,
            k: u(4)?,
            a_batch_stride: u(5)?,
            b_batch_stride: u(6)?,
            trans_a: word_bool(words[7])?,
            trans_b: word_bool(words[8])?,
            b_prepacked: word_bool(words[9])?,
            alpha: word_f64(words[10]) as f32,
            bias: match words[11] {
                0 => MatMulBias::None,
                1 => MatMulBias::PerColumn,
                2 => MatMulBias::PerRow,
                _ => return None,
            },
            has_residual: word_bool(words[12])?,
            activation: decode_activation(&words[13..16])?,
        };
        p.validate().ok()?;
        Some(p)
    }

    /// Checks the parameters and that every buffer size fits in `usize`.
    pub fn validate(&self) -> Result<(), KernelError> {
        let dims = [
            self.batch,
            self.m,
            self.n,
            self.k,
            self.a_batch_stride,
            self.b_batch_stride,
        ];
        if dims.iter().any(|&d| d > MAX_DIM) {
            return Err(KernelError::params("a matmul dimension exceeds i32::MAX"));
        }
        if self.alpha.is_nan() {
            return Err(KernelError::params("matmul alpha is NaN"));
        }
        self.activation
            .validate()
            .map_err(|e| KernelError::params(e.to_string()))?;
        let ok = self.checked_lens().is_some();
        if !ok {
            return Err(KernelError::params("matmul buffer sizes overflow usize"));
        }
        Ok(())
    }

    fn checked_lens(&self) -> Option<[usize; 4]> {
        let last = self.batch.saturating_sub(1);
        let mk = self.m.checked_mul(self.k)?;
        let kn = self.k.checked_mul(self.n)?;
        let mn = self.m.checked_mul(self.n)?;
        let a = if self.batch == 0 {
            0
        } else {
            last.checked_mul(self.a_batch_stride)?.checked_add(mk)?
        };
        let b = if self.batch == 0 {
            0
        } else if self.b_prepacked {
            let per = PackedB::packed_len(self.k, self.n).ok()?;
            per.checked_mul(if self.b_batch_stride == 0 {
                1
            } else {
                self.batch
            })?
        } else {
            last.checked_mul(self.b_batch_stride)?.checked_add(kn)?
        };
        let unpacked_b = if self.batch == 0 {
            0
        } else {
            last.checked_mul(self.b_batch_stride)?.checked_add(kn)?
        };
        let c = self.batch.checked_mul(mn)?;
        // Folded M must fit the GEMM's arithmetic too.
        c.checked_mul(4)?;
        Some([a, b, c, unpacked_b])
    }

    /// Elements of `a`.
    pub fn a_len(&self) -> usize {
        self.checked_lens().map_or(0, |l| l[0])
    }

    /// Elements of the `b` buffer the kernel reads (packed or not, per `b_prepacked`).
    pub fn b_len(&self) -> usize {
        self.checked_lens().map_or(0, |l| l[1])
    }

    /// Elements of the unpacked B that [`matmul_prepare_b`] reads.
    pub fn b_unpacked_len(&self) -> usize {
        self.checked_lens().map_or(0, |l| l[3])
    }

    /// Elements of `c` (and of the residual).
    pub fn c_len(&self) -> usize {
        self.checked_lens().map_or(0, |l| l[2])
    }

    /// Elements of the bias.
    pub fn bias_len(&self) -> usize {
        match self.bias {
            MatMulBias::None => 0,
            MatMulBias::PerColumn => self.n,
            MatMulBias::PerRow => self.m,
        }
    }

    /// Scratch bytes (always 0: the GEMM packs into its own buffers).
    pub fn scratch_bytes(&self) -> usize {
        0
    }

    fn lda(&self) -> usize {
        if self.trans_a {
            self.m
        } else {
            self.k
        }
    }

    fn ldb(&self) -> usize {
        if self.trans_b {
            self.k
        } else {
            self.n
        }
    }
}

/// Packs a constant B for `b_prepacked` (see [`MatMulParams`]): reads the unpacked B as the
/// params describe it (`b_batch_stride`, `trans_b`) and returns `op(B)` of each distinct batch
/// in the [`PackedB`] layout, one after another. Panics if `b` is shorter than
/// [`MatMulParams::b_unpacked_len`].
pub fn matmul_prepare_b(p: &MatMulParams, b: &[f32]) -> Vec<f32> {
    let batches = if p.b_batch_stride == 0 {
        p.batch.min(1)
    } else {
        p.batch
    };
    let mut out = Vec::new();
    for bi in 0..batches {
        let packed = PackedB::new(p.k, p.n, &b[bi * p.b_batch_stride..], p.ldb(), p.trans_b)
            .expect("B is as long as the params imply");
        out.extend_from_slice(packed.as_slice());
    }
    out
}

/// Computes the batched product (see [`MatMulParams`]). `bias` must be present exactly when
/// `p.bias != None`, `residual` exactly when `has_residual`; `b` is packed iff `b_prepacked`.
pub fn matmul(
    p: &MatMulParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    c: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let res = match residual {
        Some(r) => Res::Separate(r),
        None => Res::None,
    };
    matmul_impl(p, a, b, bias, res, c, threads)
}

fn matmul_impl(
    p: &MatMulParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    res: Res<'_>,
    c: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    p.validate()?;
    if bias.is_some() != (p.bias != MatMulBias::None) {
        return Err(KernelError::params(
            "bias presence does not match the bias kind",
        ));
    }
    if matches!(res, Res::None) == p.has_residual {
        return Err(KernelError::params(
            "residual presence does not match has_residual",
        ));
    }
    need_len("a", a.len(), p.a_len())?;
    need_len("b", b.len(), p.b_len())?;
    need_len("c", c.len(), p.c_len())?;
    if let Some(v) = bias {
        need_len("bias", v.len(), p.bias_len())?;
    }
    if let Res::Separate(r) = res {
        need_len("residual", r.len(), p.c_len())?;
    }
    let threads = threads.max(1);
    let (m, n, k) = (p.m, p.n, p.k);
    let mn = m * n;
    if p.batch == 0 || mn == 0 {
        return Ok(());
    }
    let c = &mut c[..p.c_len()];
    let packed_len = PackedB::packed_len(k, n).map_err(|e| KernelError::params(e.to_string()))?;
    let b_op = |bi: usize| -> Result<BOperand<'_>, KernelError> {
        Ok(if p.b_prepacked {
            let i = if p.b_batch_stride == 0 { 0 } else { bi };
            let data = &b[i * packed_len..(i + 1) * packed_len];
            BOperand::Packed(
                PackedBRef::new(k, n, data).map_err(|e| KernelError::params(e.to_string()))?,
            )
        } else {
            BOperand::Dense {
                data: &b[bi * p.b_batch_stride..],
                ld: p.ldb(),
                trans: p.trans_b,
            }
        })
    };
    let bias_of = |rows: usize| -> Bias<'_> {
        match (p.bias, bias) {
            (MatMulBias::PerColumn, Some(v)) => Bias::PerColumn(&v[..n]),
            (MatMulBias::PerRow, Some(v)) => Bias::PerRow(&v[..rows]),
            _ => Bias::None,
        }
    };
    let beta = if matches!(res, Res::InPlace) {
        1.0
    } else {
        0.0
    };
    let gemm = |rows: usize, a: &[f32], bo: BOperand<'_>, r: Option<&[f32]>, c: &mut [f32], t| {
        Gemm {
            m: rows,
            n,
            k,
            alpha: p.alpha,
            beta,
            a,
            lda: p.lda(),
            trans_a: p.trans_a,
            b: bo,
            epilogue: Epilogue {
                bias: bias_of(rows),
                residual: r.map(|data| Residual { data, ld: n }),
                activation: p.activation,
            },
            threads: t,
            isa: Isa::Auto,
        }
        .run(c, n)
        .map_err(|e| KernelError::internal(format!("GEMM rejected a call: {e}")))
    };
    let res_all = match res {
        Res::Separate(r) => Some(&r[..p.c_len()]),
        _ => None,
    };
    let fold = p.batch == 1
        || (p.b_batch_stride == 0
            && !p.trans_a
            && p.a_batch_stride == m * k
            && p.bias != MatMulBias::PerRow);
    if fold {
        let rows = p.batch * m;
        return gemm(rows, a, b_op(0)?, res_all, c, threads);
    }
    let flops = 2 * m * n * k;
    let outer = threads > 1
        && (p.batch.is_multiple_of(threads) || p.batch >= 4 * threads || flops < 8_000_000)
        && p.batch >= 2;
    if !outer {
        for (bi, cb) in c.chunks_exact_mut(mn).enumerate() {
            let r = res_all.map(|r| &r[bi * mn..(bi + 1) * mn]);
            gemm(m, &a[bi * p.a_batch_stride..], b_op(bi)?, r, cb, threads)?;
        }
        return Ok(());
    }
    let t = task_count(threads, flops * p.batch, super::conv::MIN_TASK_WORK).min(p.batch);
    let bounds = super::conv::even_bounds(p.batch, t);
    let cb: Vec<usize> = bounds.iter().map(|&x| x * mn).collect();
    let parts: Vec<(usize, &mut [f32])> = super::conv::split_bounds(c, &cb)
        .into_iter()
        .enumerate()
        .map(|(i, s)| (bounds[i], s))
        .collect();
    let errors = FirstError::new();
    run_parts(parts, &|_, (b0, cs): (usize, &mut [f32])| {
        for (i, cbat) in cs.chunks_exact_mut(mn).enumerate() {
            let bi = b0 + i;
            let r = res_all.map(|r| &r[bi * mn..(bi + 1) * mn]);
            let bo = match b_op(bi) {
                Ok(v) => v,
                Err(e) => return errors.set(e),
            };
            if let Err(e) = gemm(m, &a[bi * p.a_batch_stride..], bo, r, cbat, 1) {
                return errors.set(e);
            }
        }
    });
    errors.into_result()
}

/// `MatMul` / `Gemm` kernel (see [`MatMulParams`] for the words and buffers).
///
/// # Safety
/// `params` points to an encoded [`MatMulParams`] (or at least one word that is not its tag);
/// `bufs` to 5 pointers satisfying the buffer contract of [`MatMulParams`].
#[no_mangle]
pub unsafe extern "C" fn pare_k_matmul(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    c_guard(|| {
        // SAFETY: the caller's contract on `params`.
        let words = unsafe { c_params(params, MATMUL_TAG, MATMUL_WORDS) }?;
        let p = MatMulParams::decode(words).ok_or(STATUS_PARAMS)?;
        // SAFETY: the caller's contract on `bufs`.
        let bp = unsafe { c_bufs(bufs, 5) }?;
        // SAFETY (all slices below): the buffer contract gives each pointer the length its
        // shape implies; inputs are not written and `c` is not aliased, except an in-place
        // residual, which is then not made into a separate slice.
        let a = unsafe { c_in(bp[0], p.a_len()) }?;
        let b = unsafe { c_in(bp[1], p.b_len()) }?;
        let bias = if p.bias != MatMulBias::None {
            // SAFETY: the buffer contract (see the SAFETY note above).
            Some(unsafe { c_in(bp[2], p.bias_len()) }?)
        } else {
            None
        };
        let res = if !p.has_residual {
            Res::None
        } else if bp[3] == bp[4] {
            Res::InPlace
        } else {
            // SAFETY: the buffer contract (see the SAFETY note above).
            Res::Separate(unsafe { c_in(bp[3], p.c_len()) }?)
        };
        // SAFETY: the buffer contract (see the SAFETY note above).
        let c = unsafe { c_out(bp[4], p.c_len()) }?;
        matmul_impl(&p, a, b, bias, res, c, threads).map_err(|e| e.status)
    })
}
