//! AVX-512 VNNI kernel of the quantized GEMM: `vpdpbusd` (u8 x s8, 4 products summed into each
//! i32 lane, added to the accumulator without saturation) on the quad formats, `vpdpwssd`
//! (i16 x i16 pairs, likewise non-saturating) on `I16Pairs`. Both are exact for any codes: a
//! product sum per lane and step is at most `4·255·128` in magnitude and the accumulation wraps
//! like the other kernels (see the module doc of `qgemm` for why the wrapped i32 is the true one).
//!
//! The tile is `MR x 32` with zmm accumulators: two 16-column B panels per tile (one zmm of
//! each per k-step, the same B layout as the other kernels), one 4-byte A broadcast per row, and
//! `2·MR` dot products per k-step (`MR = 8`: 16 accumulators, 10 loads per 16 `vpdpbusd`). A
//! trailing single panel runs an `MR x 16` tile. Rows are specialized at compile time for
//! `1..=MR`; N edges compute the zero-padded columns and store only the valid ones, through the
//! AVX2 kernel's epilogue (the accumulators are split into ymm halves for it).

/// Rows of the tile (and of the packed A panels it reads).
pub(crate) const MR: usize = 8;

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::macro_kernel;

/// Never called: `Isa::Avx512Vnni` is only chosen on x86-64 CPUs that have it.
///
/// # Safety
/// Same contract as the portable kernel.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn macro_kernel(_blk: &super::QBlock<'_>) {
    unreachable!("Isa::Avx512Vnni is never selected off x86-64")
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    use super::super::avx2::store;
    use super::super::{QBlock, QbFormat, QNR};
    use super::MR;

    /// k-steps (64-byte B rows) between a B load and its prefetch.
    const B_PREFETCH: usize = 16;

    /// Runs one block with the VNNI micro-kernel.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/VNNI and AVX2. The block's rows `i0..i0+mc` and columns
    /// `j0..j0+nc` of C are inside the validated output and exclusively this call's; `blk.a`
    /// is the packed A block (`ceil(mc/MR)` panels of `MR*steps` words, `job.mr == MR`, one word
    /// per row and step) and the packed B holds every panel the columns touch (re-checked by
    /// the slicing in `a_panel`/`b_panel`).
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn macro_kernel(blk: &QBlock<'_>) {
        debug_assert!(blk.job.mr == MR && blk.job.a_layout.wps() == 1);
        let steps = blk.job.steps;
        let pairs = blk.job.format == QbFormat::I16Pairs;
        let mut jr = 0;
        while jr < blk.nc {
            let j = blk.j0 + jr;
            // Two panels while at least 17 columns remain, so both panels exist in B.
            let two = blk.nc - jr > QNR;
            let b0 = blk.b_panel(j).as_ptr();
            let b1 = if two {
                blk.b_panel(j + QNR).as_ptr()
            } else {
                b0
            };
            let n0 = QNR.min(blk.nc - jr);
            let n1 = if two { QNR.min(blk.nc - jr - QNR) } else { 0 };
            for ir in (0..blk.mc).step_by(MR) {
                let m_eff = MR.min(blk.mc - ir);
                let ap = blk.a_panel(ir).as_ptr();
                let i0 = blk.i0 + ir;
                macro_rules! tile {
                    ($m:literal) => {{
                        // SAFETY: `ap` is a panel of MR*steps words and `b0`/`b1` panels of
                        // 16*steps words (sliced above); the kernel reads rows < $m of the
                        // former and all of the latter. The tile's C rows/columns
                        // (i0..i0+$m, j..j+n0+n1) are inside the block.
                        unsafe {
                            if two {
                                let acc = if pairs {
                                    microkernel::<$m, 2, true>(steps, ap, b0, b1)
                                } else {
                                    microkernel::<$m, 2, false>(steps, ap, b0, b1)
                                };
                                let (lo, hi) = split::<$m, 2>(&acc);
                                store::<$m>(blk, &lo, i0, j, n0);
                                store::<$m>(blk, &hi, i0, j + QNR, n1);
                            } else {
                                let acc = if pairs {
                                    microkernel::<$m, 1, true>(steps, ap, b0, b0)
                                } else {
                                    microkernel::<$m, 1, false>(steps, ap, b0, b0)
                                };
                                let (lo, _) = split::<$m, 1>(&acc);
                                store::<$m>(blk, &lo, i0, j, n0);
                            }
                        }
                    }};
                }
                match m_eff {
                    8 => tile!(8),
                    7 => tile!(7),
                    6 => tile!(6),
                    5 => tile!(5),
                    4 => tile!(4),
                    3 => tile!(3),
                    2 => tile!(2),
                    _ => tile!(1),
                }
            }
            jr += if two { 2 * QNR } else { QNR };
        }
    }

    /// Splits each row's zmm accumulators into the `[ymm; 2]` pairs (16 columns each) that the
    /// AVX2 epilogue stores: panel 0 and, for `NZ == 2`, panel 1.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline(always)]
    unsafe fn split<const M: usize, const NZ: usize>(
        acc: &[[__m512i; NZ]; M],
    ) -> ([[__m256i; 2]; M], [[__m256i; 2]; M]) {
        // SAFETY: AVX-512F by the contract; these are register moves.
        unsafe {
            let mut lo = [[_mm256_setzero_si256(); 2]; M];
            let mut hi = [[_mm256_setzero_si256(); 2]; M];
            for (i, row) in acc.iter().enumerate() {
                lo[i] = [
                    _mm512_castsi512_si256(row[0]),
                    _mm512_extracti64x4_epi64::<1>(row[0]),
                ];
                if NZ == 2 {
                    hi[i] = [
                        _mm512_castsi512_si256(row[NZ - 1]),
                        _mm512_extracti64x4_epi64::<1>(row[NZ - 1]),
                    ];
                }
            }
            (lo, hi)
        }
    }

    /// `acc[i][z][..] = Σ_s dot(a[s*MR + i], bz[s*16 .. s*16+16])` in i32 (wrapping), with
    /// `b0`, `b1` the two panels (`b1` unused when `NZ == 1`); `vpdpwssd` when `PAIRS`.
    ///
    /// # Safety
    /// AVX-512 F/VNNI; `a` readable for `steps*MR` words, `b0` and `b1` for `steps*16` words.
    #[inline(always)]
    unsafe fn microkernel<const M: usize, const NZ: usize, const PAIRS: bool>(
        steps: usize,
        mut a: *const u32,
        mut b0: *const u32,
        mut b1: *const u32,
    ) -> [[__m512i; NZ]; M] {
        // SAFETY: reads are `a + s*MR + i` (i < M <= MR) and `bz + s*16 + 0..16` for
        // s < steps, inside the contract's extents; prefetch addresses use `wrapping_add` and
        // prefetches never fault.
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); NZ]; M];
            for _ in 0..steps {
                _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(B_PREFETCH * QNR) as *const i8);
                let mut bv = [_mm512_loadu_si512(b0 as *const __m512i); NZ];
                if NZ == 2 {
                    _mm_prefetch::<_MM_HINT_T0>(b1.wrapping_add(B_PREFETCH * QNR) as *const i8);
                    bv[NZ - 1] = _mm512_loadu_si512(b1 as *const __m512i);
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(*a.add(i) as i32);
                    for (r, &y) in row.iter_mut().zip(&bv) {
                        *r = if PAIRS {
                            _mm512_dpwssd_epi32(*r, x, y)
                        } else {
                            _mm512_dpbusd_epi32(*r, x, y)
                        };
                    }
                }
                a = a.add(MR);
                b0 = b0.add(QNR);
                b1 = b1.add(QNR);
            }
            acc
        }
    }
}
