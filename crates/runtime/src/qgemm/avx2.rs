//! AVX2 kernels of the quantized GEMM: a 6x16 tile with 12 ymm i32 accumulators; per k-step
//! two 32-byte loads of packed B, 4-byte broadcasts of packed A per row, and per 8 columns
//! either `vpmaddubsw` + `vpmaddwd(ones)` (`I8Quads` with 7-bit codes), one `vpmaddwd`
//! (`I16Pairs`), or, for full-range `I8Quads`, two `vpmaddwd` on the even and odd k of each
//! quad: the B quads are split in registers into sign-extended i16 halves `(b0, b2)` /
//! `(b1, b3)` per column by three shifts (once per k-step and 8 columns, shared by the rows),
//! A is packed as the matching u16 halves `(a0, a2)` / `(a1, a3)`, and `a0·b0 + a2·b2` is at
//! most `2·255·128` in magnitude, so every step is exact; that kernel uses 4-row tiles
//! ([`EO_MR`]). Then `vpaddd`. Specialized at compile time for 1..=6 rows; N edges compute the
//! zero-padded 16 columns and store only the valid ones.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::{macro_kernel, store};

/// Rows of the tile of the full-range (even/odd) kernel: 8 accumulators, the 4 split B vectors
/// and 2 A broadcasts fit in the 16 ymm registers with each A word loaded once per k-step.
pub(crate) const EO_MR: usize = 4;

/// Never called: `Isa::Avx2Fma` is only chosen on x86-64 CPUs that have AVX2.
///
/// # Safety
/// Same contract as the portable kernel, which it forwards to.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn macro_kernel(blk: &super::QBlock<'_>) {
    // SAFETY: same contract.
    unsafe { super::generic_macro_kernel(blk) }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    use super::super::{finish_row_scalar, ALayout, OutPtr, QBlock, QbFormat, QMR, QNR};
    use super::EO_MR;
    use crate::gemm::epilogue::avx2::act;

    /// k-steps (64-byte B rows) between a B load and its prefetch, as in the f32 kernel.
    const B_PREFETCH: usize = 24;

    /// Runs one block with the AVX2 micro-kernel.
    ///
    /// # Safety
    /// The CPU supports AVX2. The block's rows `i0..i0+mc` and columns `j0..j0+nc` of C are
    /// inside the validated output and exclusively this call's; `blk.a` is the packed A block
    /// (`ceil(mc/6)` panels of `6*steps` words) and the packed B holds every panel the columns
    /// touch (both guaranteed by the driver and re-checked by the slicing in `a_panel`/`b_panel`).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn macro_kernel(blk: &QBlock<'_>) {
        let steps = blk.job.steps;
        // Which multiply: the A layout follows the format (`execute`).
        let mode = match (blk.job.a_layout, blk.job.format) {
            (ALayout::U16EvenOdd, _) => EVEN_ODD,
            (_, QbFormat::I16Pairs) => PAIRS,
            _ => QUADS7,
        };
        for jr in (0..blk.nc).step_by(QNR) {
            let j = blk.j0 + jr;
            let n_eff = QNR.min(blk.nc - jr);
            let bp = blk.b_panel(j).as_ptr();
            // 6 rows, or `EO_MR` for the even/odd kernel (the packed A panels' height).
            let mr = blk.job.mr;
            debug_assert_eq!(mr, if mode == EVEN_ODD { EO_MR } else { QMR });
            for ir in (0..blk.mc).step_by(mr) {
                let m_eff = mr.min(blk.mc - ir);
                let ap = blk.a_panel(ir).as_ptr();
                macro_rules! tile {
                    ($m:literal) => {{
                        // SAFETY: `ap` is a panel of `mr` rows (`mr*wps*steps` words; `mr` is
                        // 6, or `EO_MR` exactly when the mode is EVEN_ODD, as `execute` pairs
                        // them) and `bp` one of 16*steps words (sliced above); the kernel reads
                        // rows < $m = m_eff <= mr of the former and all of the latter. The
                        // tile's C rows/columns are inside the block.
                        unsafe {
                            let acc = match mode {
                                QUADS7 => microkernel::<$m, QUADS7>(steps, ap, bp),
                                PAIRS => microkernel::<$m, PAIRS>(steps, ap, bp),
                                _ => microkernel::<$m, EVEN_ODD>(steps, ap, bp),
                            };
                            store::<$m>(blk, &acc, blk.i0 + ir, j, n_eff)
                        }
                    }};
                }
                match m_eff {
                    6 => tile!(6),
                    5 => tile!(5),
                    4 => tile!(4),
                    3 => tile!(3),
                    2 => tile!(2),
                    _ => tile!(1),
                }
            }
        }
    }

    /// `vpmaddubsw` + `vpmaddwd(ones)` on u8 quads (`I8Quads`, codes in `[-64, 64]`).
    const QUADS7: u8 = 0;
    /// One `vpmaddwd` on u16/i16 pairs (`I16Pairs`).
    const PAIRS: u8 = 1;
    /// Two `vpmaddwd` on even/odd halves of full-range quads (`I8Quads`, A in
    /// `ALayout::U16EvenOdd`).
    const EVEN_ODD: u8 = 2;

    /// `acc[i][..] = Σ_s dot(a[s*R*W + i*W ..], b[s*16 .. s*16+16])` in i32 (wrapping), with
    /// `W` = 2 A words per row and step and `R` = `EO_MR` rows per panel for `EVEN_ODD`, else
    /// `W` = 1 and `R` = 6.
    ///
    /// # Safety
    /// AVX2; `M <= R`; `a` readable for `steps*R*W` words, `b` for `steps*16` words.
    #[inline(always)]
    unsafe fn microkernel<const M: usize, const MODE: u8>(
        steps: usize,
        mut a: *const u32,
        mut b: *const u32,
    ) -> [[__m256i; 2]; M] {
        // SAFETY: reads are `a + s*R*W + i*W + w` (i < M <= R, w < W) and `b + s*16 + 0..16`
        // for s < steps, inside the contract's extents; the prefetch address uses
        // `wrapping_add` and prefetches never fault.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); 2]; M];
            for _ in 0..steps {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(B_PREFETCH * QNR) as *const i8);
                if MODE == EVEN_ODD {
                    let (w0, w1) = (
                        _mm256_loadu_si256(b as *const __m256i),
                        _mm256_loadu_si256(b.add(8) as *const __m256i),
                    );
                    // Per 16-bit half of each word: the low byte (k even) and the high byte
                    // (k odd), sign-extended.
                    let e0 = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w0));
                    let o0 = _mm256_srai_epi16::<8>(w0);
                    let e1 = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(w1));
                    let o1 = _mm256_srai_epi16::<8>(w1);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let xe = _mm256_set1_epi32(*a.add(2 * i) as i32);
                        let xo = _mm256_set1_epi32(*a.add(2 * i + 1) as i32);
                        let p0 =
                            _mm256_add_epi32(_mm256_madd_epi16(xe, e0), _mm256_madd_epi16(xo, o0));
                        let p1 =
                            _mm256_add_epi32(_mm256_madd_epi16(xe, e1), _mm256_madd_epi16(xo, o1));
                        row[0] = _mm256_add_epi32(row[0], p0);
                        row[1] = _mm256_add_epi32(row[1], p1);
                    }
                    a = a.add(2 * EO_MR);
                    b = b.add(QNR);
                    continue;
                }
                let b0 = _mm256_loadu_si256(b as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(8) as *const __m256i);
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(*a.add(i) as i32);
                    let (p0, p1) = if MODE == QUADS7 {
                        (
                            _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones),
                        )
                    } else {
                        (_mm256_madd_epi16(x, b0), _mm256_madd_epi16(x, b1))
                    };
                    row[0] = _mm256_add_epi32(row[0], p0);
                    row[1] = _mm256_add_epi32(row[1], p1);
                }
                a = a.add(QMR);
                b = b.add(QNR);
            }
            acc
        }
    }

    /// Applies the epilogue to an `M x 16` tile of raw sums at rows `i0..i0+M`, columns
    /// `j0..j0+n_eff`, and stores it.
    ///
    /// # Safety
    /// AVX2; the tile's C rows/columns are inside the validated output and this thread's
    /// rectangle (so `i0 + M <= m`, `j0 + n_eff <= n`, and the per-row/per-column epilogue
    /// vectors, validated to lengths m and n, cover them).
    #[inline(always)]
    pub(crate) unsafe fn store<const M: usize>(
        blk: &QBlock<'_>,
        acc: &[[__m256i; 2]; M],
        i0: usize,
        j0: usize,
        n_eff: usize,
    ) {
        let job = blk.job;
        if n_eff < QNR {
            // Edge tile: spill the sums and reuse the scalar epilogue (a few tiles per call).
            for (ii, row) in acc.iter().enumerate() {
                let mut v = [0i32; QNR];
                // SAFETY: `v` holds 16 i32; unaligned stores.
                unsafe {
                    _mm256_storeu_si256(v.as_mut_ptr() as *mut __m256i, row[0]);
                    _mm256_storeu_si256(v.as_mut_ptr().add(8) as *mut __m256i, row[1]);
                    finish_row_scalar(job, &v, i0 + ii, j0, n_eff);
                }
            }
            return;
        }
        let sums = &job.b.col_sums[j0..j0 + QNR];
        // SAFETY: all loads read 16 elements of slices sliced to exactly 16 above/below; C
        // stores write row i < m, columns j0..j0+16 <= n of the validated output, inside this
        // thread's rectangle (contract).
        unsafe {
            let s0 = _mm256_loadu_si256(sums.as_ptr() as *const __m256i);
            let s1 = _mm256_loadu_si256(sums.as_ptr().add(8) as *const __m256i);
            match job.out {
                OutPtr::I32(c) => {
                    for (ii, row) in acc.iter().enumerate() {
                        let i = i0 + ii;
                        let za = _mm256_set1_epi32(job.a_zero[i] as i32);
                        let v0 = _mm256_sub_epi32(row[0], _mm256_mullo_epi32(za, s0));
                        let v1 = _mm256_sub_epi32(row[1], _mm256_mullo_epi32(za, s1));
                        let cp = c.add(i * job.ldc + j0);
                        _mm256_storeu_si256(cp as *mut __m256i, v0);
                        _mm256_storeu_si256(cp.add(8) as *mut __m256i, v1);
                    }
                }
                OutPtr::F32(c) => {
                    let sw = &job.b.scales[j0..j0 + QNR];
                    let w0 = _mm256_loadu_ps(sw.as_ptr());
                    let w1 = _mm256_loadu_ps(sw.as_ptr().add(8));
                    let (bias0, bias1) = match job.bias {
                        Some(b) => {
                            let b = &b[j0..j0 + QNR];
                            (
                                _mm256_loadu_ps(b.as_ptr()),
                                _mm256_loadu_ps(b.as_ptr().add(8)),
                            )
                        }
                        None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                    };
                    for (ii, row) in acc.iter().enumerate() {
                        let i = i0 + ii;
                        let za = _mm256_set1_epi32(job.a_zero[i] as i32);
                        let sa = _mm256_set1_ps(job.a_scale[i]);
                        let v0 = _mm256_sub_epi32(row[0], _mm256_mullo_epi32(za, s0));
                        let v1 = _mm256_sub_epi32(row[1], _mm256_mullo_epi32(za, s1));
                        // Same operation order as the scalar epilogue: v * (sa * sw) + bias.
                        let mut y0 = _mm256_mul_ps(_mm256_cvtepi32_ps(v0), _mm256_mul_ps(sa, w0));
                        let mut y1 = _mm256_mul_ps(_mm256_cvtepi32_ps(v1), _mm256_mul_ps(sa, w1));
                        if job.bias.is_some() {
                            y0 = _mm256_add_ps(y0, bias0);
                            y1 = _mm256_add_ps(y1, bias1);
                        }
                        if job.activation.is_simple() {
                            y0 = act(y0, job.activation);
                            y1 = act(y1, job.activation);
                        }
                        let cp = c.add(i * job.ldc + j0);
                        _mm256_storeu_ps(cp, y0);
                        _mm256_storeu_ps(cp.add(8), y1);
                        if !job.activation.is_simple() {
                            let out = std::slice::from_raw_parts_mut(cp, QNR);
                            job.activation.apply_slice(out);
                        }
                    }
                }
            }
        }
    }
}
