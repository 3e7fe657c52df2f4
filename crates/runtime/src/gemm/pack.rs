//! Packing: copying blocks of A and B into the contiguous, zero-padded layouts the micro-kernel
//! streams through, and the pre-packed B ("packed weights") format.
//!
//! * Packed A block (`mc x kc`): `ceil(mc/MR)` micro-panels of `MR` rows, each stored k-major,
//!   `MR` floats per `p`: element `(i, p)` of panel `q` at `q*kc*MR + p*MR + i`. Rows past `mc`
//!   are zero.
//! * Packed B block (`kc x nc`): `ceil(nc/NR)` micro-panels of `NR` columns, each k-major,
//!   `NR` floats per `p`: element `(p, j)` of panel `q` at `q*stride + p*NR + j` with
//!   `stride = kc*NR`. Columns past `nc` are zero.
//! * [`PackedB`] is the whole `k x n` matrix in the B-block layout with `kc = k`, so any k-range
//!   of a panel is contiguous and the driver can block over k without repacking.

use super::{MR, NR};
use crate::GemmError;

/// A `Vec<f32>` whose visible part starts on a 64-byte (cache-line) boundary.
#[derive(Clone, Default)]
pub(crate) struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn zeros(len: usize) -> Self {
        let mut b = AlignedBuf::default();
        b.ensure(len);
        b
    }

    /// Makes the visible length `len`, reallocating (zeroed) only when it grows.
    pub(crate) fn ensure(&mut self, len: usize) {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
            let addr = self.buf.as_ptr() as usize;
            self.off = (64 - addr % 64) % 64 / std::mem::size_of::<f32>();
        }
        self.len = len;
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// A matrix view with element `(r, c)` at `data[r*rs + c*cs]`; the caller has checked that every
/// element of the logical shape is in bounds.
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// Number of floats in a packed A block of `mc x kc` (plus slack the vector packers may write).
pub(crate) fn packed_a_len(mc: usize, kc: usize) -> usize {
    mc.div_ceil(MR) * MR * kc + 8
}

/// Packs rows `i0..i0+mc`, columns `p0..p0+kc` of `a` into `dst` (packed-A layout).
///
/// With `simd`, full row-major panels use the AVX2 transpose (the caller has checked the CPU);
/// it may write up to 2 floats past a panel, which `packed_a_len` leaves room for and the next
/// panel overwrites.
pub(crate) fn pack_a(
    dst: &mut [f32],
    a: Strided<'_>,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    simd: bool,
) {
    let total = mc.div_ceil(MR) * MR * kc;
    for q in 0..mc.div_ceil(MR) {
        let r0 = i0 + q * MR;
        let mr = MR.min(mc - q * MR);
        if simd && a.cs == 1 && mr == MR {
            let rows: [&[f32]; MR] = std::array::from_fn(|i| {
                let start = (r0 + i) * a.rs + p0;
                &a.data[start..start + kc]
            });
            super::avx2::pack_a_panel(&mut dst[q * MR * kc..total + 8], rows);
            continue;
        }
        let panel = &mut dst[q * MR * kc..(q + 1) * MR * kc];
        if a.cs == 1 {
            // Row-major source: a 6-row transpose, one row at a time.
            for i in 0..MR {
                if i < mr {
                    let start = (r0 + i) * a.rs + p0;
                    let row = &a.data[start..start + kc];
                    for (d, &s) in panel.iter_mut().skip(i).step_by(MR).zip(row) {
                        *d = s;
                    }
                } else {
                    panel.iter_mut().skip(i).step_by(MR).for_each(|d| *d = 0.0);
                }
            }
        } else if a.rs == 1 {
            // Column-major source (A transposed): MR contiguous floats per p.
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                let start = (p0 + p) * a.cs + r0;
                if mr == MR {
                    d.copy_from_slice(&a.data[start..start + MR]);
                } else {
                    d[..mr].copy_from_slice(&a.data[start..start + mr]);
                    d[mr..].fill(0.0);
                }
            }
        } else {
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (i, x) in d.iter_mut().enumerate() {
                    *x = if i < mr {
                        a.data[(r0 + i) * a.rs + (p0 + p) * a.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Number of floats in a packed B block of `kc x nc`.
pub(crate) fn packed_b_len(kc: usize, nc: usize) -> usize {
    nc.div_ceil(NR) * NR * kc
}

/// Packs rows `p0..p0+kc`, columns `j0..j0+nc` of `b` into `dst` (packed-B layout, panel stride
/// `kc*NR`).
pub(crate) fn pack_b(dst: &mut [f32], b: Strided<'_>, p0: usize, kc: usize, j0: usize, nc: usize) {
    for (q, panel) in dst[..packed_b_len(kc, nc)]
        .chunks_exact_mut(NR * kc)
        .enumerate()
    {
        let c0 = j0 + q * NR;
        let nr = NR.min(nc - q * NR);
        if b.cs == 1 {
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                let start = (p0 + p) * b.rs + c0;
                if nr == NR {
                    d.copy_from_slice(&b.data[start..start + NR]);
                } else {
                    d[..nr].copy_from_slice(&b.data[start..start + nr]);
                    d[nr..].fill(0.0);
                }
            }
        } else if b.rs == 1 {
            // B transposed (stored n x k): a 16-column gather, one source row at a time.
            for j in 0..NR {
                if j < nr {
                    let start = (c0 + j) * b.cs + p0;
                    let col = &b.data[start..start + kc];
                    for (d, &s) in panel.iter_mut().skip(j).step_by(NR).zip(col) {
                        *d = s;
                    }
                } else {
                    panel.iter_mut().skip(j).step_by(NR).for_each(|d| *d = 0.0);
                }
            }
        } else {
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, x) in d.iter_mut().enumerate() {
                    *x = if j < nr {
                        b.data[(p0 + p) * b.rs + (c0 + j) * b.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// A `k x n` right-hand side packed once (typically a weight matrix) for [`crate::sgemm_packed`].
///
/// Layout (stable, so a compiler may produce it ahead of time and embed it in an artifact's
/// constant data, see [`PackedBRef::new`]): `ceil(n/16)` panels of 16 columns; panel `q` holds
/// `k` rows of 16 floats, element `(p, j)` of the original matrix at
/// `q*16*k + p*16 + (j - 16*q)`; columns past `n` are zero. Total length
/// [`PackedB::packed_len`]`(k, n)` floats. It does not depend on the instruction set.
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: AlignedBuf,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Floats needed to hold a packed `k x n` matrix.
    pub fn packed_len(k: usize, n: usize) -> Result<usize, GemmError> {
        n.div_ceil(NR)
            .checked_mul(NR)
            .and_then(|x| x.checked_mul(k))
            .ok_or(GemmError::Overflow)
    }

    /// Packs the `k x n` matrix `op(B)`: `b[p*ldb + j]` if `!trans_b`, else `b[j*ldb + p]`.
    pub fn new(
        k: usize,
        n: usize,
        b: &[f32],
        ldb: usize,
        trans_b: bool,
    ) -> Result<PackedB, GemmError> {
        let view = super::validate_operand("b", k, n, b, ldb, trans_b)?;
        let len = Self::packed_len(k, n)?;
        let mut data = AlignedBuf::zeros(len);
        if len > 0 {
            pack_b(data.as_mut_slice(), view, 0, k, 0, n);
        }
        Ok(PackedB { k, n, data })
    }

    /// Rows (the GEMM's `k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (the GEMM's `n`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The packed data (64-byte aligned), e.g. to write into an artifact's constant section.
    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// A borrowed view, the form the GEMM takes.
    pub fn as_ref(&self) -> PackedBRef<'_> {
        PackedBRef {
            k: self.k,
            n: self.n,
            data: self.data.as_slice(),
        }
    }
}

/// A borrowed packed B: either a [`PackedB`] or packed data that lives elsewhere (an artifact's
/// constant section). Any alignment works; 64 bytes is fastest.
#[derive(Debug, Clone, Copy)]
pub struct PackedBRef<'a> {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) data: &'a [f32],
}

impl<'a> PackedBRef<'a> {
    /// Wraps data in the [`PackedB`] layout; fails if `data.len() != PackedB::packed_len(k, n)`.
    pub fn new(k: usize, n: usize, data: &'a [f32]) -> Result<Self, GemmError> {
        if data.len() != PackedB::packed_len(k, n)? {
            return Err(GemmError::PackedB(
                "data length does not match packed_len(k, n)",
            ));
        }
        Ok(PackedBRef { k, n, data })
    }

    /// Rows (the GEMM's `k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (the GEMM's `n`).
    pub fn n(&self) -> usize {
        self.n
    }
}

impl<'a> From<&'a PackedB> for PackedBRef<'a> {
    fn from(p: &'a PackedB) -> Self {
        p.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_b_layout_is_documented_one() {
        let (k, n) = (3, 20);
        let b: Vec<f32> = (0..k * n).map(|x| x as f32).collect();
        let p = PackedB::new(k, n, &b, n, false).unwrap();
        let d = p.as_slice();
        assert_eq!(d.len(), 2 * 16 * 3);
        assert_eq!(d.as_ptr() as usize % 64, 0);
        for q in 0..2 {
            for pp in 0..k {
                for jj in 0..16 {
                    let j = q * 16 + jj;
                    let want = if j < n { b[pp * n + j] } else { 0.0 };
                    assert_eq!(d[q * 16 * k + pp * 16 + jj], want);
                }
            }
        }
        let bt: Vec<f32> = (0..n)
            .flat_map(|j| (0..k).map(move |pp| (pp * n + j) as f32))
            .collect();
        let pt = PackedB::new(k, n, &bt, k, true).unwrap();
        assert_eq!(pt.as_slice(), d);
    }

    #[test]
    fn pack_a_pads_rows() {
        let (m, k) = (13, 21);
        let a: Vec<f32> = (0..m * k).map(|x| x as f32 + 1.0).collect();
        let mut dst = vec![-1.0; packed_a_len(m, k)];
        pack_a(
            &mut dst,
            Strided {
                data: &a,
                rs: k,
                cs: 1,
            },
            0,
            m,
            0,
            k,
            false,
        );
        let mut dst_simd = vec![-1.0; packed_a_len(m, k)];
        if crate::Isa::detect() == crate::Isa::Avx2Fma {
            pack_a(
                &mut dst_simd,
                Strided {
                    data: &a,
                    rs: k,
                    cs: 1,
                },
                0,
                m,
                0,
                k,
                true,
            );
            assert_eq!(dst_simd[..dst.len() - 8], dst[..dst.len() - 8]);
        }
        let mut dst_t = vec![-1.0; packed_a_len(m, k)];
        let at: Vec<f32> = (0..k)
            .flat_map(|p| (0..m).map(move |i| (i * k + p) as f32 + 1.0))
            .collect();
        pack_a(
            &mut dst_t,
            Strided {
                data: &at,
                rs: 1,
                cs: m,
            },
            0,
            m,
            0,
            k,
            false,
        );
        for q in 0..3 {
            for p in 0..k {
                for i in 0..MR {
                    let r = q * MR + i;
                    let want = if r < m { a[r * k + p] } else { 0.0 };
                    assert_eq!(dst[q * MR * k + p * MR + i], want);
                    assert_eq!(dst_t[q * MR * k + p * MR + i], want);
                }
            }
        }
    }
}
