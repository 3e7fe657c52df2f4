//! AVX2 kernels of the quantized GEMM: a 6x16 tile with 12 ymm i32 accumulators; per k-step
//! two 32-byte loads of packed B, one 4-byte broadcast of packed A per row, and either
//! `vpmaddubsw` + `vpmaddwd(ones)` (`I8Quads`) or one `vpmaddwd` (`I16Pairs`) per 8 columns,
//! then `vpaddd`. Specialized at compile time for 1..=6 rows; N edges compute the zero-padded
//! 16 columns and store only the valid ones.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::macro_kernel;

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

    use super::super::{finish_row_scalar, OutPtr, QBlock, QbFormat, QMR, QNR};
    use crate::Activation;

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
        let quads = blk.job.format == QbFormat::I8Quads;
        for jr in (0..blk.nc).step_by(QNR) {
            let j = blk.j0 + jr;
            let n_eff = QNR.min(blk.nc - jr);
            let bp = blk.b_panel(j).as_ptr();
            for ir in (0..blk.mc).step_by(QMR) {
                let m_eff = QMR.min(blk.mc - ir);
                let ap = blk.a_panel(ir).as_ptr();
                macro_rules! tile {
                    ($m:literal) => {{
                        // SAFETY: `ap` is a panel of 6*steps words and `bp` one of 16*steps
                        // words (sliced above); the kernel reads rows < $m of the former and
                        // all of the latter. The tile's C rows/columns are inside the block.
                        unsafe {
                            let acc = if quads {
                                microkernel::<$m, true>(steps, ap, bp)
                            } else {
                                microkernel::<$m, false>(steps, ap, bp)
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

    /// `acc[i][..] = Σ_s dot(a[s*6 + i], b[s*16 .. s*16+16])` in i32 (wrapping).
    ///
    /// # Safety
    /// AVX2; `a` readable for `steps*6` words, `b` for `steps*16` words.
    #[inline(always)]
    unsafe fn microkernel<const M: usize, const QUADS: bool>(
        steps: usize,
        mut a: *const u32,
        mut b: *const u32,
    ) -> [[__m256i; 2]; M] {
        // SAFETY: reads are `a + s*6 + i` (i < M <= 6) and `b + s*16 + 0..16` for s < steps,
        // inside the contract's extents; the prefetch address uses `wrapping_add` and prefetches
        // never fault.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); 2]; M];
            for _ in 0..steps {
                _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(B_PREFETCH * QNR) as *const i8);
                let b0 = _mm256_loadu_si256(b as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(8) as *const __m256i);
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(*a.add(i) as i32);
                    let (p0, p1) = if QUADS {
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
    unsafe fn store<const M: usize>(
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
                    let zero = _mm256_setzero_ps();
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
                        match job.activation {
                            Activation::Relu => {
                                // max(0, x) returns x when x is NaN, like the scalar path.
                                y0 = _mm256_max_ps(zero, y0);
                                y1 = _mm256_max_ps(zero, y1);
                            }
                            Activation::Clamp { min, max } => {
                                let (lo, hi) = (_mm256_set1_ps(min), _mm256_set1_ps(max));
                                y0 = _mm256_min_ps(hi, _mm256_max_ps(lo, y0));
                                y1 = _mm256_min_ps(hi, _mm256_max_ps(lo, y1));
                            }
                            _ => {}
                        }
                        let cp = c.add(i * job.ldc + j0);
                        _mm256_storeu_ps(cp, y0);
                        _mm256_storeu_ps(cp.add(8), y1);
                        if !matches!(
                            job.activation,
                            Activation::Identity | Activation::Relu | Activation::Clamp { .. }
                        ) {
                            let out = std::slice::from_raw_parts_mut(cp, QNR);
                            job.activation.apply_slice(out);
                        }
                    }
                }
            }
        }
    }
}
