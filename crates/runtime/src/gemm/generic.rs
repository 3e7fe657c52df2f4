//! Portable kernels: the same 6x16 tiling in plain Rust, which LLVM vectorizes for the target's
//! baseline (SSE2 on x86-64). Used when AVX2/FMA are missing, and forced in tests.

use super::{ASrc, Block, MR, NR};

/// Runs one block with the portable micro-kernel.
///
/// # Safety
/// The C rectangle `(blk.i0 .. blk.i0+blk.mc) x (blk.j0 .. blk.j0+blk.nc)` addressed through
/// `blk.c + i*ldc + j` must be valid for reads and writes and not accessed by anyone else during
/// the call. `blk.a`/`blk.b` must cover the block (guaranteed by the driver's validation and
/// packing; slice indexing checks it again here).
pub(crate) unsafe fn macro_kernel(blk: &Block<'_>) {
    let kc = blk.kc;
    for jr in (0..blk.nc).step_by(NR) {
        let n_eff = NR.min(blk.nc - jr);
        let bp = &blk.b[(jr / NR) * blk.b_stride..][..kc * NR];
        for ir in (0..blk.mc).step_by(MR) {
            let m_eff = MR.min(blk.mc - ir);
            let mut acc = [[0.0f32; NR]; MR];
            match blk.a {
                ASrc::Packed(buf) => {
                    let ap = &buf[(ir / MR) * kc * MR..][..kc * MR];
                    for (av, bv) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
                        for (row, &x) in acc.iter_mut().zip(av) {
                            for (r, &y) in row.iter_mut().zip(bv) {
                                *r += x * y;
                            }
                        }
                    }
                }
                ASrc::Strided(v) => {
                    for (p, bv) in bp.chunks_exact(NR).enumerate() {
                        for (i, row) in acc.iter_mut().enumerate().take(m_eff) {
                            let x = v.data[(ir + i) * v.rs + p * v.cs];
                            for (r, &y) in row.iter_mut().zip(bv) {
                                *r += x * y;
                            }
                        }
                    }
                }
            }
            // SAFETY: the tile (ir.., jr..) of m_eff x n_eff lies inside this block's rectangle.
            unsafe { store_tile(blk, &acc, ir, jr, m_eff, n_eff) };
        }
    }
}

/// Writes `alpha*acc (+ beta*C) (+ epilogue)` for the tile at block offset `(ir, jr)`.
///
/// # Safety
/// The `m_eff x n_eff` tile at block offset `(ir, jr)` must satisfy `macro_kernel`'s contract.
#[inline(always)]
pub(crate) unsafe fn store_tile(
    blk: &Block<'_>,
    acc: &[[f32; NR]; MR],
    ir: usize,
    jr: usize,
    m_eff: usize,
    n_eff: usize,
) {
    for (ii, accrow) in acc.iter().enumerate().take(m_eff) {
        let i = blk.i0 + ir + ii;
        let j0 = blk.j0 + jr;
        // SAFETY: row i, columns j0..j0+n_eff are inside the caller's rectangle (contract).
        let row = unsafe { std::slice::from_raw_parts_mut(blk.c.0.add(i * blk.ldc + j0), n_eff) };
        for (jj, (x, &s)) in row.iter_mut().zip(accrow).enumerate() {
            let mut v = blk.alpha * s;
            if blk.beta != 0.0 {
                v += blk.beta * *x;
            }
            if let Some(epi) = blk.epi {
                v += Block::bias_at(epi, i, j0 + jj);
                if let Some(r) = epi.residual {
                    v += r.data[i * r.ld + j0 + jj];
                }
                v = epi.activation.apply(v);
            }
            *x = v;
        }
    }
}
