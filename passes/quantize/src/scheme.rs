//! The quantization grid and round-to-nearest (RTN).
//!
//! Weights are handled in the *math layout* `W [N, K]`: one row per output channel, one column
//! per input feature (the dot product runs along K), row-major. Each row is cut into groups of
//! `group` consecutive columns (the last one may be shorter), or is one group when `group` is 0
//! (per output channel); every group has its own scale and, when asymmetric, zero point.

use pare_ir::DType;

/// Bit width, group size and symmetry of a quantization grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// 4 or 8.
    pub bits: u32,
    /// Group length along K; 0 = one group per output channel.
    pub group: usize,
    /// Symmetric (signed codes, no zero point) or asymmetric (unsigned codes with a zero
    /// point).
    pub symmetric: bool,
}

impl Scheme {
    /// Smallest code.
    pub fn qmin(&self) -> i32 {
        if self.symmetric {
            -(1 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest code.
    pub fn qmax(&self) -> i32 {
        if self.symmetric {
            (1 << (self.bits - 1)) - 1
        } else {
            (1 << self.bits) - 1
        }
    }

    /// Groups per row of length `k`.
    pub fn groups(&self, k: usize) -> usize {
        if self.group == 0 {
            1
        } else {
            k.div_ceil(self.group)
        }
    }

    /// Length of a (full) group for rows of length `k`.
    pub fn group_len(&self, k: usize) -> usize {
        if self.group == 0 {
            k.max(1)
        } else {
            self.group
        }
    }

    /// The ONNX element type of the codes: i8/u8 for 8 bits, i4/u4 for 4 bits.
    pub fn dtype(&self) -> DType {
        match (self.bits, self.symmetric) {
            (8, true) => DType::I8,
            (8, false) => DType::U8,
            (_, true) => DType::I4,
            (_, false) => DType::U4,
        }
    }

    /// Storage bytes of `n` codes.
    pub fn code_bytes(&self, n: usize) -> usize {
        (n * self.bits as usize).div_ceil(8)
    }
}

/// Scale and zero point of one group: `w ≈ (q - zero) · scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Step (f32, as stored in the model).
    pub scale: f32,
    /// Zero point (0 when symmetric).
    pub zero: i32,
}

impl Params {
    /// Fits the grid to `values` (all finite): symmetric `scale = absmax / qmax`; asymmetric
    /// `scale = (max - min) / qmax` over a range widened to contain 0 and
    /// `zero = round(-min / scale)`, so that 0 is exactly representable. An all-zero group
    /// gets scale 1.
    pub fn fit(s: &Scheme, values: impl Iterator<Item = f64>) -> Params {
        let (mut lo, mut hi) = (0f64, 0f64);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let valid = |x: f32| x.is_finite() && x > 0.0;
        if s.symmetric {
            let scale = (lo.abs().max(hi) / s.qmax() as f64) as f32;
            Params {
                scale: if valid(scale) { scale } else { 1.0 },
                zero: 0,
            }
        } else {
            let scale = ((hi - lo) / s.qmax() as f64) as f32;
            if !valid(scale) {
                return Params {
                    scale: 1.0,
                    zero: 0,
                };
            }
            let zero = (-lo / scale as f64).round_ties_even() as i64;
            Params {
                scale,
                zero: zero.clamp(0, s.qmax() as i64) as i32,
            }
        }
    }

    /// The code of `x`: `clamp(round(x / scale) + zero)` (ties to even, as QuantizeLinear).
    pub fn quantize(&self, s: &Scheme, x: f64) -> i32 {
        let q = (x / self.scale as f64).round_ties_even() + self.zero as f64;
        q.clamp(s.qmin() as f64, s.qmax() as f64) as i32
    }

    /// The value of code `q`, computed in f32 as DequantizeLinear does.
    pub fn dequantize(&self, q: i32) -> f64 {
        ((q as f32 - self.zero as f32) * self.scale) as f64
    }
}

/// A quantized weight in the math layout, with its grid.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    /// Output channels (rows).
    pub n: usize,
    /// Input features (columns).
    pub k: usize,
    /// The grid.
    pub scheme: Scheme,
    /// Codes, `n × k` row-major.
    pub codes: Vec<i32>,
    /// Parameters, `n × groups` row-major.
    pub params: Vec<Params>,
    /// AWQ: a per-column factor applied after dequantization (`1/s`), as the graph applies it
    /// (a Mul in f32); `None` = 1.
    pub col_scale: Option<Vec<f32>>,
    /// Outliers kept in f32 (SpQR-style): `(r·k + j, value)` in increasing index order; their
    /// codes are the grid's zero and the graph writes the values over the dequantized weight.
    pub outliers: Vec<(usize, f32)>,
}

impl QuantMatrix {
    /// Group of column `j`.
    pub fn group_of(&self, j: usize) -> usize {
        j.checked_div(self.scheme.group).unwrap_or(0)
    }

    /// Parameters of row `r`, column `j`.
    pub fn param(&self, r: usize, j: usize) -> Params {
        self.params[r * self.scheme.groups(self.k) + self.group_of(j)]
    }

    /// The dequantized weight `n × k` as the graph computes it (f32 arithmetic), the outliers
    /// written over it.
    pub fn dequantize(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            for j in 0..self.k {
                let v = self.param(r, j).dequantize(self.codes[r * self.k + j]);
                out.push(match &self.col_scale {
                    Some(c) => (v as f32 * c[j]) as f64,
                    None => v,
                });
            }
        }
        for &(i, v) in &self.outliers {
            out[i] = v as f64;
        }
        out
    }

    /// Bytes of the stored codes, scales (f32), zero points (when asymmetric), column factors
    /// and outliers (an i32 index and an f32 value each).
    pub fn stored_bytes(&self) -> usize {
        let np = self.params.len();
        let zp = if self.scheme.symmetric {
            0
        } else {
            self.scheme.code_bytes(np)
        };
        self.scheme.code_bytes(self.n * self.k)
            + 4 * np
            + zp
            + self.col_scale.as_ref().map_or(0, |c| 4 * c.len())
            + 8 * self.outliers.len()
    }
}

/// Round-to-nearest: every group's grid is fitted to its values, then each value is rounded to
/// the nearest code.
pub fn rtn(w: &[f64], n: usize, k: usize, s: &Scheme) -> QuantMatrix {
    rtn_keeping(w, n, k, s, None)
}

/// [`rtn`] with outliers: the entries where `keep` (`n × k`) is true stay f32 — left out of
/// their group's grid fit, stored as [`QuantMatrix::outliers`] with the zero code.
pub fn rtn_keeping(
    w: &[f64],
    n: usize,
    k: usize,
    s: &Scheme,
    keep: Option<&[bool]>,
) -> QuantMatrix {
    let ng = s.groups(k);
    let gl = s.group_len(k);
    let mut codes = vec![0i32; n * k];
    let mut params = Vec::with_capacity(n * ng);
    let mut outliers = Vec::new();
    let kept = |i: usize| keep.is_some_and(|m| m[i]);
    for r in 0..n {
        let row = &w[r * k..(r + 1) * k];
        for gi in 0..ng {
            let (a, b) = (gi * gl, ((gi + 1) * gl).min(k));
            let p = Params::fit(s, (a..b).filter(|&j| !kept(r * k + j)).map(|j| row[j]));
            for j in a..b {
                if kept(r * k + j) {
                    codes[r * k + j] = p.quantize(s, 0.0);
                    outliers.push((r * k + j, row[j] as f32));
                } else {
                    codes[r * k + j] = p.quantize(s, row[j]);
                }
            }
            params.push(p);
        }
    }
    QuantMatrix {
        n,
        k,
        scheme: *s,
        codes,
        params,
        col_scale: None,
        outliers,
    }
}

/// `‖a - b‖ / ‖b‖` (0 when both are zero).
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    let (mut d, mut nb) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        d += (x - y) * (x - y);
        nb += y * y;
    }
    if nb == 0.0 {
        if d == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (d / nb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S8: Scheme = Scheme {
        bits: 8,
        group: 0,
        symmetric: true,
    };

    #[test]
    fn ranges() {
        assert_eq!((S8.qmin(), S8.qmax()), (-128, 127));
        let a4 = Scheme {
            bits: 4,
            group: 2,
            symmetric: false,
        };
        assert_eq!((a4.qmin(), a4.qmax()), (0, 15));
        let s4 = Scheme {
            symmetric: true,
            ..a4
        };
        assert_eq!((s4.qmin(), s4.qmax()), (-8, 7));
        assert_eq!(a4.groups(5), 3);
        assert_eq!(a4.dtype(), DType::U4);
        assert_eq!(s4.code_bytes(5), 3);
    }

    #[test]
    fn rtn_symmetric_per_channel_exact() {
        // Row 0: absmax 1.27 → scale 0.01; row 1: absmax 2.54 → scale 0.02.
        let w = [1.27, -0.5, 0.004, 0.016, -2.54, 1.0, 0.03, 0.0];
        let q = rtn(&w, 2, 4, &S8);
        assert_eq!(q.params.len(), 2);
        assert_eq!(q.params[0].scale, (1.27f64 / 127.0) as f32);
        assert_eq!(q.params[1].scale, (2.54f64 / 127.0) as f32);
        // 0.004/0.01 = 0.4 → 0; 0.016/0.01 = 1.6 → 2; 0.03/0.02 = 1.5 → 2 (ties to even).
        assert_eq!(q.codes, vec![127, -50, 0, 2, -127, 50, 2, 0]);
        let d = q.dequantize();
        assert!((d[3] - 0.02).abs() < 1e-7, "{}", d[3]);
        assert!((d[6] - 0.04).abs() < 1e-7, "{}", d[6]);
    }

    #[test]
    fn rtn_asymmetric_groups_exact() {
        let s = Scheme {
            bits: 4,
            group: 2,
            symmetric: false,
        };
        // Groups: [0, 1.5] → scale 0.1, zero 0; [-1.5, 0] → scale 0.1, zero 15;
        // [3.0] (short last group, range widened to contain 0) → scale 0.2, zero 0.
        let w = [0.0, 1.5, -1.5, 0.0, 3.0];
        let q = rtn(&w, 1, 5, &s);
        assert_eq!(q.params.len(), 3);
        assert_eq!(q.params[0].zero, 0);
        assert_eq!(q.params[1].zero, 15);
        assert_eq!(q.params[2].zero, 0);
        assert!((q.params[2].scale - 0.2).abs() < 1e-7);
        assert_eq!(q.codes, vec![0, 15, 0, 15, 15]);
        let d = q.dequantize();
        for (a, b) in d.iter().zip(&w) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
        assert_eq!(q.stored_bytes(), 3 + 3 * 4 + 2);
    }

    /// An outlier is left out of its group's grid and comes back exactly.
    #[test]
    fn rtn_keeping_fits_the_grid_without_the_outlier() {
        let s = Scheme {
            bits: 4,
            group: 0,
            symmetric: true,
        };
        let w = [0.1, -0.2, 5.0, 0.35];
        let keep = [false, false, true, false];
        let q = rtn_keeping(&w, 1, 4, &s, Some(&keep));
        assert_eq!(q.params[0].scale, (0.35f64 / 7.0) as f32);
        assert_eq!(q.outliers, vec![(2, 5.0)]);
        let d = q.dequantize();
        assert_eq!(d[2], 5.0);
        assert!((d[3] - 0.35).abs() < 1e-6 && (d[0] - 0.1).abs() < 0.03);
        assert_eq!(q.stored_bytes(), 2 + 4 + 8);
    }

    #[test]
    fn all_zero_and_clamp() {
        let q = rtn(&[0.0; 4], 1, 4, &S8);
        assert_eq!(q.params[0].scale, 1.0);
        assert_eq!(q.codes, vec![0; 4]);
        let p = Params {
            scale: 0.1,
            zero: 0,
        };
        assert_eq!(p.quantize(&S8, 100.0), 127);
        assert_eq!(p.quantize(&S8, -100.0), -128);
    }
}
