//! Single-precision GEMM: validation, the Goto/BLIS loop nest, threading, ISA dispatch.
//! See the crate doc for the design; `pack` holds the data layouts, `avx2` and `generic` the
//! kernels.

mod avx2;
pub(crate) mod epilogue;
mod generic;
pub(crate) mod pack;

use std::ops::Range;

use self::epilogue::{Bias, Epilogue};
use self::pack::{AlignedBuf, PackedBRef, Strided};
use crate::GemmError;

/// Rows of the micro-tile (register blocking along M).
pub(crate) const MR: usize = 6;
/// Columns of the micro-tile: two 8-wide ymm vectors.
pub(crate) const NR: usize = 16;
/// Depth of a cache block: a packed B micro-panel is `KC*NR*4` = 16 KiB (half of L1d), a packed
/// A micro-panel `KC*MR*4` = 6 KiB.
pub(crate) const KC: usize = 256;
/// Rows of a packed A block: `MC*KC*4` = 144 KiB, well inside the 1 MiB L2 next to the B panel
/// traffic.
pub(crate) const MC: usize = 144;
/// Columns of a packed B block: `KC*NC*4` = 4 MiB, in L3.
pub(crate) const NC: usize = 4080;
/// Below this many flops per thread (~10 us of work) a thread is not worth its hand-off cost.
/// With the pool's spinning workers a hand-off costs a few microseconds; when workers slept
/// between jobs it cost tens, and the bound was 8 MFLOP (which left the 12.8 MFLOP pointwise
/// convolutions of a mobile CNN on one thread).
pub(crate) const MIN_FLOPS_PER_THREAD: usize = 1_000_000;
/// At or below this many output columns (per thread) A is read in place, not packed: each
/// element of A is then used by at most this many columns, so the copy would cost about as much
/// as it saves.
const DIRECT_A_MAX_N: usize = 64;

/// Which kernels to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isa {
    /// The best the running CPU supports (detected at run time).
    #[default]
    Auto,
    /// x86-64 AVX2 + FMA: 6x16 micro-kernel with 12 ymm accumulators.
    Avx2Fma,
    /// Portable Rust, auto-vectorized for the compile target's baseline (SSE2 on x86-64).
    Generic,
    /// x86-64 AVX-512 VNNI (with AVX-512 F/BW/VL, AVX2 and FMA): the int8 GEMM's `vpdpbusd`
    /// kernel ([`crate::qgemm`]). The f32 SGEMM has no AVX-512 kernel and runs its AVX2+FMA
    /// one for this choice. [`Isa::detect`] never returns it (it reports the f32 kernels); the
    /// int8 GEMM's [`Isa::Auto`] picks it when [`Isa::supported`] says so.
    Avx512Vnni,
}

impl Isa {
    /// The instruction set the f32 SGEMM's [`Isa::Auto`] resolves to on this CPU (`Avx2Fma` or
    /// `Generic`; see [`Isa::Avx512Vnni`] for the int8 GEMM).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Generic
    }

    /// Whether the running CPU can execute this choice's kernels (`Auto` and `Generic`: always).
    pub fn supported(self) -> bool {
        match self {
            Isa::Auto | Isa::Generic => true,
            Isa::Avx2Fma => Isa::detect() == Isa::Avx2Fma,
            Isa::Avx512Vnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    Isa::detect() == Isa::Avx2Fma
                        && std::is_x86_feature_detected!("avx512f")
                        && std::is_x86_feature_detected!("avx512bw")
                        && std::is_x86_feature_detected!("avx512vl")
                        && std::is_x86_feature_detected!("avx512vnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                false
            }
        }
    }

    /// The f32 kernels to run: `Avx512Vnni` runs the AVX2+FMA SGEMM (a CPU with AVX-512 VNNI
    /// has both).
    fn resolve(self) -> Result<Isa, GemmError> {
        match self {
            Isa::Auto => Ok(Isa::detect()),
            Isa::Generic => Ok(Isa::Generic),
            Isa::Avx2Fma | Isa::Avx512Vnni => {
                if self.supported() {
                    Ok(Isa::Avx2Fma)
                } else {
                    Err(GemmError::UnsupportedIsa(self))
                }
            }
        }
    }
}

/// The right-hand operand of a GEMM.
#[derive(Debug, Clone, Copy)]
pub enum BOperand<'a> {
    /// `op(B)` is `k x n`: element `(p, j)` at `data[p*ld + j]`, or `data[j*ld + p]` if `trans`.
    Dense {
        /// Storage.
        data: &'a [f32],
        /// Leading dimension of the stored matrix.
        ld: usize,
        /// Whether B is stored transposed (`n x k`).
        trans: bool,
    },
    /// Pre-packed; its `k` and `n` must match the GEMM's.
    Packed(PackedBRef<'a>),
}

/// A fully described GEMM, `C = act(alpha * op(A) * op(B) + beta * C + bias + residual)`, all
/// matrices row-major. The flat functions ([`sgemm`], [`sgemm_fused`], [`sgemm_packed`]) fill
/// this in; use it directly to choose the instruction set.
#[derive(Debug, Clone, Copy)]
pub struct Gemm<'a> {
    /// Rows of `C` and `op(A)`.
    pub m: usize,
    /// Columns of `C` and `op(B)`.
    pub n: usize,
    /// Columns of `op(A)`, rows of `op(B)`.
    pub k: usize,
    /// Scale of the product. `alpha == 0` skips the product (A and B are not read).
    pub alpha: f32,
    /// Scale of the old `C`. `beta == 0` overwrites `C` without reading it (NaNs in it vanish).
    pub beta: f32,
    /// `op(A)` is `m x k`: element `(i, p)` at `a[i*lda + p]`, or `a[p*lda + i]` if `trans_a`.
    pub a: &'a [f32],
    /// Leading dimension of the stored A.
    pub lda: usize,
    /// Whether A is stored transposed (`k x m`).
    pub trans_a: bool,
    /// The right-hand side.
    pub b: BOperand<'a>,
    /// Fused bias/residual/activation.
    pub epilogue: Epilogue<'a>,
    /// Threads to use; 0 means all available cores. Small problems use fewer.
    pub threads: usize,
    /// Kernels to use.
    pub isa: Isa,
}

impl<'a> Gemm<'a> {
    /// Validates everything, then computes into `c` (`m x n`, element `(i, j)` at
    /// `c[i*ldc + j]`). On error `c` is untouched.
    pub fn run(&self, c: &mut [f32], ldc: usize) -> Result<(), GemmError> {
        let problem = self.validate(c.len(), ldc)?;
        execute(&problem, CPtr(c.as_mut_ptr()));
        Ok(())
    }

    fn validate(&self, c_len: usize, ldc: usize) -> Result<Problem<'a>, GemmError> {
        let (m, n, k) = (self.m, self.n, self.k);
        let isa = self.isa.resolve()?;
        // C is checked as an m x n row-major operand.
        let c_need = stored_need("c", m, n, ldc)?;
        if c_len < c_need {
            return Err(GemmError::BufferTooSmall {
                operand: "c",
                len: c_len,
                need: c_need,
            });
        }
        let a = validate_operand("a", m, k, self.a, self.lda, self.trans_a)?;
        let b = match self.b {
            BOperand::Dense { data, ld, trans } => {
                B::Dense(validate_operand("b", k, n, data, ld, trans)?)
            }
            BOperand::Packed(p) => {
                if p.k != k || p.n != n {
                    return Err(GemmError::PackedB(
                        "packed k x n does not match the GEMM's k x n",
                    ));
                }
                B::Packed(p)
            }
        };
        let epi = &self.epilogue;
        match epi.bias {
            Bias::None => {}
            Bias::PerColumn(v) if v.len() != n => {
                return Err(GemmError::BiasLength {
                    expected: n,
                    got: v.len(),
                })
            }
            Bias::PerRow(v) if v.len() != m => {
                return Err(GemmError::BiasLength {
                    expected: m,
                    got: v.len(),
                })
            }
            _ => {}
        }
        if let Some(r) = epi.residual {
            validate_operand("residual", m, n, r.data, r.ld, false)?;
        }
        epi.activation.validate()?;
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |t| t.get())
        } else {
            self.threads
        };
        Ok(Problem {
            m,
            n,
            k,
            alpha: self.alpha,
            beta: self.beta,
            a,
            b,
            ldc,
            epi: *epi,
            threads,
            isa,
        })
    }
}

/// Elements a row-major `rows x cols` matrix with leading dimension `ld` spans.
pub(crate) fn stored_need(
    operand: &'static str,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<usize, GemmError> {
    if ld < cols {
        return Err(GemmError::LeadingDim {
            operand,
            ld,
            min: cols,
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(cols))
        .ok_or(GemmError::Overflow)
}

/// Checks a `rows x cols` operand stored row-major (`trans == false`) or as its transpose, and
/// returns the strided view of the logical matrix.
pub(crate) fn validate_operand<'a>(
    operand: &'static str,
    rows: usize,
    cols: usize,
    data: &'a [f32],
    ld: usize,
    trans: bool,
) -> Result<Strided<'a>, GemmError> {
    let (sr, sc) = if trans { (cols, rows) } else { (rows, cols) };
    let need = stored_need(operand, sr, sc, ld)?;
    if data.len() < need {
        return Err(GemmError::BufferTooSmall {
            operand,
            len: data.len(),
            need,
        });
    }
    Ok(if trans {
        Strided {
            data,
            rs: 1,
            cs: ld,
        }
    } else {
        Strided {
            data,
            rs: ld,
            cs: 1,
        }
    })
}

#[derive(Clone, Copy)]
enum B<'a> {
    Dense(Strided<'a>),
    Packed(PackedBRef<'a>),
}

/// A validated GEMM: every index the kernels form from these fields is in bounds.
struct Problem<'a> {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    a: Strided<'a>,
    b: B<'a>,
    ldc: usize,
    epi: Epilogue<'a>,
    threads: usize,
    isa: Isa,
}

/// The output matrix as a raw pointer, shared by the threads of one call.
///
/// Threads write disjoint rectangles of C (the partition in `execute`), so sharing the pointer
/// is sound even though no `&mut` slice can express the column-block split.
#[derive(Clone, Copy)]
pub(crate) struct CPtr(pub(crate) *mut f32);

// SAFETY: the pointer is only dereferenced inside the rectangle a thread owns (see `execute`),
// and `Gemm::run` holds the `&mut [f32]` it came from until every thread has joined.
unsafe impl Send for CPtr {}
// SAFETY: as above; shared references to a `CPtr` only copy the address.
unsafe impl Sync for CPtr {}

/// Where the A block of one macro-kernel call comes from.
#[derive(Clone, Copy)]
pub(crate) enum ASrc<'a> {
    /// Packed by `pack::pack_a`; micro-panel `q` at `q*kc*MR`.
    Packed(&'a [f32]),
    /// Read in place: element `(i, p)` of the block at `data[i*rs + p*cs]`.
    Strided(Strided<'a>),
}

/// One macro-kernel call: `C[i0.., j0..] (mc x nc) op= A-block (mc x kc) * B-block (kc x nc)`.
pub(crate) struct Block<'a> {
    pub mc: usize,
    pub nc: usize,
    pub kc: usize,
    pub a: ASrc<'a>,
    /// B micro-panel `q` starts at `b[q*b_stride]` (already offset to this block's k range).
    pub b: &'a [f32],
    pub b_stride: usize,
    /// C element `(i, j)` of the whole output at `c + i*ldc + j`.
    pub c: CPtr,
    pub ldc: usize,
    /// Global coordinates of the block's first element.
    pub i0: usize,
    pub j0: usize,
    pub alpha: f32,
    /// Applied to the old C; 0 means C is not read.
    pub beta: f32,
    /// The epilogue, present only on the last k block.
    pub epi: Option<&'a Epilogue<'a>>,
}

impl Block<'_> {
    /// The epilogue bias for tile column `j` (global) and row `i` (global).
    #[inline(always)]
    pub(crate) fn bias_at(epi: &Epilogue<'_>, i: usize, j: usize) -> f32 {
        match epi.bias {
            Bias::None => 0.0,
            Bias::PerColumn(v) => v[j],
            Bias::PerRow(v) => v[i],
        }
    }
}

fn execute(p: &Problem<'_>, c: CPtr) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    let parts = partition(p);
    if parts.len() == 1 {
        run_range(p, c, 0..p.m, 0..p.n);
        return;
    }
    crate::pool::run(parts.len(), &|t| {
        let (rows, cols) = parts[t].clone();
        run_range(p, c, rows, cols);
    });
}

/// Splits C into one rectangle per thread, along M or N in whole micro-tiles.
///
/// Splitting N makes every thread pack the same A rows (m*k extra copies per thread), splitting M
/// makes every thread pack the same B columns (k*n, none when B is pre-packed); choose the cheaper
/// one among the splits that give every thread at least one tile.
fn partition(p: &Problem<'_>) -> Vec<(Range<usize>, Range<usize>)> {
    let flops = 2usize
        .saturating_mul(p.m)
        .saturating_mul(p.n)
        .saturating_mul(p.k);
    let tiles_m = p.m.div_ceil(MR);
    let tiles_n = p.n.div_ceil(NR);
    let t = p
        .threads
        .min((flops / MIN_FLOPS_PER_THREAD).max(1))
        .min(tiles_m.max(tiles_n))
        .max(1);
    if t == 1 {
        return vec![(0..p.m, 0..p.n)];
    }
    let b_dup = match p.b {
        B::Packed(_) => 0,
        B::Dense(_) => p.n,
    };
    let split_m = if tiles_m < t {
        false
    } else if tiles_n < t {
        true
    } else {
        b_dup <= p.m
    };
    let (tiles, tile, len) = if split_m {
        (tiles_m, MR, p.m)
    } else {
        (tiles_n, NR, p.n)
    };
    (0..t)
        .map(|i| {
            let lo = (tiles * i / t * tile).min(len);
            let hi = (tiles * (i + 1) / t * tile).min(len);
            if split_m {
                (lo..hi, 0..p.n)
            } else {
                (0..p.m, lo..hi)
            }
        })
        .filter(|(r, c)| !r.is_empty() && !c.is_empty())
        .collect()
}

/// The Goto/BLIS loop nest over one thread's rectangle of C.
fn run_range(p: &Problem<'_>, c: CPtr, rows: Range<usize>, cols: Range<usize>) {
    if p.k == 0 || p.alpha == 0.0 {
        scale_only(p, c, rows, cols);
        return;
    }
    let kc_max = KC.min(p.k);
    let direct_a = cols.len() <= DIRECT_A_MAX_N;
    let mut abuf = AlignedBuf::default();
    if !direct_a {
        abuf.ensure(pack::packed_a_len(MC.min(rows.len()), kc_max));
    }
    let mut bbuf = AlignedBuf::default();
    if let B::Dense(_) = p.b {
        bbuf.ensure(pack::packed_b_len(kc_max, NC.min(cols.len())));
    }
    let mut jc = cols.start;
    while jc < cols.end {
        let nc = NC.min(cols.end - jc);
        let mut pc = 0;
        while pc < p.k {
            let kc = KC.min(p.k - pc);
            let (b, b_stride): (&[f32], usize) = match p.b {
                B::Packed(pb) => {
                    // jc is a multiple of NR: thread splits and NC are.
                    let start = (jc / NR) * pb.k * NR + pc * NR;
                    (&pb.data[start..], pb.k * NR)
                }
                B::Dense(view) => {
                    pack::pack_b(bbuf.as_mut_slice(), view, pc, kc, jc, nc);
                    (bbuf.as_slice(), kc * NR)
                }
            };
            let last = pc + kc == p.k;
            let mut ic = rows.start;
            while ic < rows.end {
                let mc = MC.min(rows.end - ic);
                let a = if direct_a {
                    let v = p.a;
                    ASrc::Strided(Strided {
                        data: &v.data[ic * v.rs + pc * v.cs..],
                        rs: v.rs,
                        cs: v.cs,
                    })
                } else {
                    pack::pack_a(
                        abuf.as_mut_slice(),
                        p.a,
                        ic,
                        mc,
                        pc,
                        kc,
                        p.isa == Isa::Avx2Fma,
                    );
                    ASrc::Packed(abuf.as_slice())
                };
                let block = Block {
                    mc,
                    nc,
                    kc,
                    a,
                    b,
                    b_stride,
                    c,
                    ldc: p.ldc,
                    i0: ic,
                    j0: jc,
                    alpha: p.alpha,
                    beta: if pc == 0 { p.beta } else { 1.0 },
                    epi: if last { Some(&p.epi) } else { None },
                };
                match p.isa {
                    // SAFETY: `Isa::resolve` only yields Avx2Fma when the CPU has AVX2 and FMA;
                    // the block's slices were validated (or packed) for its mc x kc x nc extent;
                    // its C rectangle lies inside this thread's part of the validated C.
                    Isa::Avx2Fma => unsafe { avx2::macro_kernel(&block) },
                    // SAFETY: as above, minus the CPU feature requirement.
                    _ => unsafe { generic::macro_kernel(&block) },
                }
                ic += mc;
            }
            pc += kc;
        }
        jc += nc;
    }
}

/// `k == 0` or `alpha == 0`: the product is zero, so only `beta*C` and the epilogue remain.
fn scale_only(p: &Problem<'_>, c: CPtr, rows: Range<usize>, cols: Range<usize>) {
    for i in rows {
        // SAFETY: row i, columns `cols` lie inside the validated C (i < m, cols.end <= n,
        // (m-1)*ldc + n <= c.len()) and belong to this thread's rectangle only.
        let row =
            unsafe { std::slice::from_raw_parts_mut(c.0.add(i * p.ldc + cols.start), cols.len()) };
        for (jj, x) in row.iter_mut().enumerate() {
            let j = cols.start + jj;
            let mut v = if p.beta == 0.0 { 0.0 } else { p.beta * *x };
            v += Block::bias_at(&p.epi, i, j);
            if let Some(r) = p.epi.residual {
                v += r.data[i * r.ld + j];
            }
            *x = p.epi.activation.apply(v);
        }
    }
}

/// `C = alpha * op(A) * op(B) + beta * C` (row-major; see [`Gemm`] for the exact contract).
#[allow(clippy::too_many_arguments)] // mirrors BLAS sgemm and the C ABI
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    trans_a: bool,
    b: &[f32],
    ldb: usize,
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) -> Result<(), GemmError> {
    sgemm_fused(
        m,
        n,
        k,
        alpha,
        a,
        lda,
        trans_a,
        b,
        ldb,
        trans_b,
        beta,
        c,
        ldc,
        &Epilogue::default(),
        threads,
    )
}

/// [`sgemm`] with a fused epilogue: `C = act(alpha*op(A)*op(B) + beta*C + bias + residual)`.
#[allow(clippy::too_many_arguments)] // mirrors BLAS sgemm and the C ABI
pub fn sgemm_fused(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    trans_a: bool,
    b: &[f32],
    ldb: usize,
    trans_b: bool,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    threads: usize,
) -> Result<(), GemmError> {
    Gemm {
        m,
        n,
        k,
        alpha,
        beta,
        a,
        lda,
        trans_a,
        b: BOperand::Dense {
            data: b,
            ld: ldb,
            trans: trans_b,
        },
        epilogue: *epilogue,
        threads,
        isa: Isa::Auto,
    }
    .run(c, ldc)
}

/// Packs `op(B)` (`k x n`) once for repeated [`sgemm_packed`] calls; see [`pack::PackedB`].
pub fn pack_b(
    k: usize,
    n: usize,
    b: &[f32],
    ldb: usize,
    trans_b: bool,
) -> Result<pack::PackedB, GemmError> {
    pack::PackedB::new(k, n, b, ldb, trans_b)
}

/// `C = act(alpha*op(A)*B + beta*C + bias + residual)` with B pre-packed (`k`, `n` from it).
#[allow(clippy::too_many_arguments)] // mirrors the C ABI
pub fn sgemm_packed<'a>(
    m: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    trans_a: bool,
    b: impl Into<PackedBRef<'a>>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
    threads: usize,
) -> Result<(), GemmError> {
    let b = b.into();
    Gemm {
        m,
        n: b.n,
        k: b.k,
        alpha,
        beta,
        a,
        lda,
        trans_a,
        b: BOperand::Packed(b),
        epilogue: *epilogue,
        threads,
        isa: Isa::Auto,
    }
    .run(c, ldc)
}
