//! AVX2 + FMA kernels: a 6x16 micro-kernel (12 ymm accumulators, 2 ymm for the B row, 1 for the
//! A broadcast: 15 of 16 registers), specialized at compile time for 1..=6 rows so edge tiles do
//! no wasted FMAs, with the epilogue applied in registers before the single store of C.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::{macro_kernel, pack_a_panel};

/// Packs one full 6-row panel (`rows[i]` = row i, all of length kc) into `dst` (at least
/// `kc*6 + 2` floats) in the packed-A layout.
///
/// Must only be called when AVX2 is available; on other architectures it is the scalar loop.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn pack_a_panel(dst: &mut [f32], rows: [&[f32]; super::MR]) {
    for (i, row) in rows.iter().enumerate() {
        for (p, &x) in row.iter().enumerate() {
            dst[p * super::MR + i] = x;
        }
    }
}

/// Never called: `Isa::resolve` only yields `Avx2Fma` on x86-64 CPUs that have it.
///
/// # Safety
/// Unreachable by construction; it forwards to the portable kernel anyway.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn macro_kernel(blk: &super::Block<'_>) {
    // SAFETY: same contract as the portable kernel.
    unsafe { super::generic::macro_kernel(blk) }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    use super::super::epilogue::Bias;
    use super::super::{ASrc, Block, MR, NR};

    use crate::gemm::epilogue::avx2::{act, MASKS};

    /// Packs one full 6-row panel of a row-major A (`rows[i]`, each of length kc) into `dst`
    /// (at least `6*kc + 2` floats): 8x8 transposes (rows 6 and 7 zero) of 8 columns at a time,
    /// each output column stored as 8 floats at stride 6, so the 2 junk lanes are overwritten by
    /// the next column (or land in the slack after the panel).
    pub(crate) fn pack_a_panel(dst: &mut [f32], rows: [&[f32]; MR]) {
        let kc = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == kc) && dst.len() >= kc * MR + 2);
        assert!(std::is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 checked just above; the lengths checked above bound every access.
        unsafe { pack_a_panel_avx2(dst, rows) }
    }

    /// # Safety
    /// AVX2 available; `rows` all of one length kc; `dst.len() >= 6*kc + 2`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_a_panel_avx2(dst: &mut [f32], rows: [&[f32]; MR]) {
        let kc = rows[0].len();
        let d = dst.as_mut_ptr();
        let mut p = 0;
        // SAFETY: loads read rows[i][p..p+8] with p+8 <= kc; stores write d[(p+q)*6 .. +8] with
        // (p+q)*6 + 8 <= (kc-1)*6 + 8 = 6*kc + 2 <= dst.len().
        unsafe {
            let z = _mm256_setzero_ps();
            while p + 8 <= kc {
                let r: [__m256; MR] =
                    std::array::from_fn(|i| _mm256_loadu_ps(rows[i].as_ptr().add(p)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, z);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, z);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, z);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, z);
                let o = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (q, v) in o.iter().enumerate() {
                    _mm256_storeu_ps(d.add((p + q) * MR), *v);
                }
                p += 8;
            }
        }
        for pp in p..kc {
            for (i, row) in rows.iter().enumerate() {
                dst[pp * MR + i] = row[pp];
            }
        }
    }

    /// Runs one block with the AVX2 micro-kernel.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA. Same memory contract as `generic::macro_kernel`: the C
    /// rectangle of the block is valid and exclusively this call's; `blk.a` and `blk.b` cover the
    /// block (packed panels hold `kc*MR` / `kc*NR` floats each; a strided A covers
    /// `mc` rows and `kc` columns).
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn macro_kernel(blk: &Block<'_>) {
        let kc = blk.kc;
        for jr in (0..blk.nc).step_by(NR) {
            let n_eff = NR.min(blk.nc - jr);
            let bpanel = &blk.b[(jr / NR) * blk.b_stride..][..kc * NR];
            for ir in (0..blk.mc).step_by(MR) {
                let m_eff = MR.min(blk.mc - ir);
                let (ap, rs, cs, packed) = match blk.a {
                    ASrc::Packed(buf) => {
                        let panel = &buf[(ir / MR) * kc * MR..][..kc * MR];
                        (panel.as_ptr(), 1, MR, true)
                    }
                    ASrc::Strided(v) => {
                        // Bounds of the last element this tile reads: row ir+m_eff-1, column kc-1.
                        let last = (ir + m_eff - 1) * v.rs + (kc - 1) * v.cs;
                        assert!(last < v.data.len());
                        (v.data[ir * v.rs..].as_ptr(), v.rs, v.cs, false)
                    }
                };
                macro_rules! tile {
                    ($m:literal) => {
                        if packed {
                            // SAFETY: packed panel of kc*MR floats (sliced above), B panel of
                            // kc*NR floats (sliced above), C tile inside the block (contract).
                            unsafe {
                                tile::<$m>(blk, kc, ap, 1, MR, bpanel.as_ptr(), ir, jr, n_eff)
                            }
                        } else {
                            // SAFETY: the strided reads stay at or below `last`, checked above.
                            unsafe {
                                tile::<$m>(blk, kc, ap, rs, cs, bpanel.as_ptr(), ir, jr, n_eff)
                            }
                        }
                    };
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

    /// One `M x 16` tile: accumulate over kc, then store with the epilogue.
    ///
    /// # Safety
    /// AVX2+FMA available; `a + i*rs + p*cs` readable for `i < M`, `p < kc`; `b` readable for
    /// `kc*NR` floats; the tile's C rows/columns inside the block's exclusive rectangle.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const M: usize>(
        blk: &Block<'_>,
        kc: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ir: usize,
        jr: usize,
        n_eff: usize,
    ) {
        // SAFETY: forwarded contract. Prefetches never fault, so `wrapping_add` addresses
        // past the tile's last column are harmless.
        unsafe {
            // Start pulling the C tile in (it is read for beta != 0 or later k blocks, and
            // written in any case) while the k loop runs: a 1024^2 C does not fit in L2.
            let c0 = blk.c.0.wrapping_add((blk.i0 + ir) * blk.ldc + blk.j0 + jr);
            for i in 0..M {
                let row = c0.wrapping_add(i * blk.ldc) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(60));
            }
            let acc = microkernel::<M>(kc, a, rs, cs, b);
            store::<M>(blk, acc, ir, jr, n_eff);
        }
    }

    /// Steps (64-byte B rows) between a B load and its prefetch.
    const B_PREFETCH: usize = 24;

    /// The inner loop: `acc[i] += a[i, p] * b[p, 0..16]` for `p < kc`, unrolled by 4.
    ///
    /// # Safety
    /// As for `tile`.
    #[inline(always)]
    unsafe fn microkernel<const M: usize>(
        kc: usize,
        mut a: *const f32,
        rs: usize,
        cs: usize,
        mut b: *const f32,
    ) -> [[__m256; 2]; M] {
        // SAFETY: every pointer read is `a + i*rs + p*cs` (i < M, p < kc) or `b + p*NR + 0..16`
        // (p < kc), readable by the contract; the prefetch address is formed with
        // `wrapping_add` and prefetches never fault; intrinsics need AVX2/FMA, present by
        // contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            macro_rules! step {
                () => {
                    // B streams through once per panel for the first row tile (from L3 when
                    // the weights do not fit in L2, as in a transformer's per-token GEMMs):
                    // ask for the line B_PREFETCH steps ahead, which runs into the next panel.
                    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(B_PREFETCH * NR) as *const i8);
                    let b0 = _mm256_loadu_ps(b);
                    let b1 = _mm256_loadu_ps(b.add(8));
                    for (i, row) in acc.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*a.add(i * rs));
                        row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                        row[1] = _mm256_fmadd_ps(x, b1, row[1]);
                    }
                    a = a.add(cs);
                    b = b.add(NR);
                };
            }
            let mut p = kc;
            while p >= 4 {
                step!();
                step!();
                step!();
                step!();
                p -= 4;
            }
            while p > 0 {
                step!();
                p -= 1;
            }
            acc
        }
    }

    /// `C = epilogue(alpha*acc + beta*C)` for one tile, masked when `n_eff < 16`.
    ///
    /// # Safety
    /// As for `tile`; bias/residual indices are inside the validated m x n extent because the tile
    /// is.
    #[inline(always)]
    unsafe fn store<const M: usize>(
        blk: &Block<'_>,
        acc: [[__m256; 2]; M],
        ir: usize,
        jr: usize,
        n_eff: usize,
    ) {
        // SAFETY: C pointers address row i < m, columns j0..j0+n_eff <= n of the validated C,
        // inside this call's rectangle; masked loads/stores touch only the first n_eff lanes;
        // bias[j0..j0+n_eff] / bias[i] / residual row i columns j0.. are inside the validated
        // epilogue operands (len n, len m, m x n with ld >= n).
        unsafe {
            let full = n_eff == NR;
            let mask0 = _mm256_loadu_si256(MASKS.as_ptr().add(16 - n_eff) as *const __m256i);
            let mask1 = _mm256_loadu_si256(MASKS.as_ptr().add(24 - n_eff) as *const __m256i);
            // Masked accesses may form pointers past the end of a slice (lanes that are never
            // touched), hence `wrapping_add` there.
            let load = |p: *const f32, h: usize| {
                if full {
                    _mm256_loadu_ps(p.add(8 * h))
                } else {
                    _mm256_maskload_ps(p.wrapping_add(8 * h), if h == 0 { mask0 } else { mask1 })
                }
            };
            let alpha = _mm256_set1_ps(blk.alpha);
            let beta = _mm256_set1_ps(blk.beta);
            let j0 = blk.j0 + jr;
            for (ii, row) in acc.iter().enumerate() {
                let i = blk.i0 + ir + ii;
                let cp = blk.c.0.add(i * blk.ldc + j0);
                let mut v = [_mm256_mul_ps(row[0], alpha), _mm256_mul_ps(row[1], alpha)];
                if blk.beta != 0.0 {
                    for (h, x) in v.iter_mut().enumerate() {
                        *x = _mm256_fmadd_ps(load(cp, h), beta, *x);
                    }
                }
                if let Some(epi) = blk.epi {
                    match epi.bias {
                        Bias::None => {}
                        Bias::PerColumn(bias) => {
                            for (h, x) in v.iter_mut().enumerate() {
                                *x = _mm256_add_ps(*x, load(bias.as_ptr().add(j0), h));
                            }
                        }
                        Bias::PerRow(bias) => {
                            let bv = _mm256_set1_ps(*bias.as_ptr().add(i));
                            for x in v.iter_mut() {
                                *x = _mm256_add_ps(*x, bv);
                            }
                        }
                    }
                    if let Some(r) = epi.residual {
                        let rp = r.data.as_ptr().add(i * r.ld + j0);
                        for (h, x) in v.iter_mut().enumerate() {
                            *x = _mm256_add_ps(*x, load(rp, h));
                        }
                    }
                    if epi.activation.is_simple() {
                        for x in v.iter_mut() {
                            *x = act(*x, epi.activation);
                        }
                    }
                }
                if full {
                    _mm256_storeu_ps(cp, v[0]);
                    _mm256_storeu_ps(cp.add(8), v[1]);
                } else {
                    _mm256_maskstore_ps(cp, mask0, v[0]);
                    _mm256_maskstore_ps(cp.wrapping_add(8), mask1, v[1]);
                }
            }
            if let Some(epi) = blk.epi {
                if !epi.activation.is_simple() {
                    for ii in 0..M {
                        let i = blk.i0 + ir + ii;
                        let row =
                            std::slice::from_raw_parts_mut(blk.c.0.add(i * blk.ldc + j0), n_eff);
                        epi.activation.apply_slice(row);
                    }
                }
            }
        }
    }
}
