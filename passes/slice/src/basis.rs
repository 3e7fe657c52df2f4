//! The rotations: second moments of the normalized stream `n = center(z) / rms(center(z))`
//! at every norm, collected by running the interpreter on the calibration samples, and their
//! principal axes (eigenvectors of `E[nᵀn]`, eigenvalues descending).

use crate::structure::Norm;
use crate::SliceError;
use faer::{Mat, Side};
use pare_interp::Interpreter;
use pare_ir::{Graph, ValueId};
use pare_pass::{PassError, SampleSet};
use std::collections::HashMap;

/// Row-major square matrix of size `d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Square {
    /// Size.
    pub d: usize,
    /// `d·d` entries, row-major.
    pub data: Vec<f64>,
}

impl Square {
    /// The identity.
    pub fn identity(d: usize) -> Square {
        let mut data = vec![0.0; d * d];
        for i in 0..d {
            data[i * d + i] = 1.0;
        }
        Square { d, data }
    }

    /// Entry `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.d + j]
    }
}

/// Second-moment accumulator of the normalized rows at one norm.
struct Moments {
    d: usize,
    eps: f64,
    h: Mat<f64>,
    rows: u64,
}

impl Moments {
    fn add(&mut self, z: &[f64]) {
        let d = self.d;
        let m = z.len() / d;
        if m == 0 {
            return;
        }
        let mut nm = Mat::<f64>::zeros(m, d);
        for r in 0..m {
            let row = &z[r * d..(r + 1) * d];
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / d as f64;
            let s = 1.0 / (var + self.eps).sqrt();
            for (c, x) in row.iter().enumerate() {
                nm[(r, c)] = (x - mean) * s;
            }
        }
        self.h += nm.transpose() * &nm;
        self.rows += m as u64;
    }
}

/// A norm's rotation: principal axes as the columns of `q` (eigenvalues descending).
#[derive(Clone, Debug)]
pub struct Basis {
    /// `d×d` orthogonal, columns = axes.
    pub q: Square,
    /// Eigenvalues of `E[nᵀn]`, descending (empty for the identity basis).
    pub eigenvalues: Vec<f64>,
    /// Calibration rows seen.
    pub rows: u64,
}

impl Basis {
    /// Fraction of `E[‖n‖²]` in the first `k` axes (1 for the identity basis).
    pub fn retained(&self, k: usize) -> f64 {
        let total: f64 = self.eigenvalues.iter().map(|e| e.max(0.0)).sum();
        if self.eigenvalues.is_empty() || total <= 0.0 {
            return 1.0;
        }
        self.eigenvalues[..k.min(self.eigenvalues.len())]
            .iter()
            .map(|e| e.max(0.0))
            .sum::<f64>()
            / total
    }
}

/// The principal axes of the symmetric `h` (row-major `d×d`), eigenvalues descending.
pub fn principal_axes(h: &Square) -> Result<(Square, Vec<f64>), SliceError> {
    let d = h.d;
    let m = Mat::from_fn(d, d, |i, j| 0.5 * (h.at(i, j) + h.at(j, i)));
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| SliceError::Eigen)?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    // faer sorts ascending; reverse.
    let mut q = vec![0.0; d * d];
    let mut ev = Vec::with_capacity(d);
    for c in 0..d {
        let src = d - 1 - c;
        ev.push(s[src]);
        for r in 0..d {
            q[r * d + c] = u[(r, src)];
        }
    }
    Ok((Square { d, data: q }, ev))
}

/// A value whose rows are normalized (`n = center(z) / sqrt(var(z) + ε)`) and accumulated.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// The value `z` (last axis of width `d`).
    pub value: ValueId,
    /// Width.
    pub d: usize,
    /// `ε`.
    pub eps: f32,
}

impl From<&Norm> for Point {
    fn from(n: &Norm) -> Point {
        Point {
            value: n.input,
            d: n.d,
            eps: n.eps,
        }
    }
}

/// Runs the calibration samples through `g` and returns the principal axes of `E[nᵀn]` at
/// each point.
pub fn calibrate(
    g: &Graph,
    points: &[Point],
    samples: &SampleSet,
    interp: &Interpreter,
    mut progress: impl FnMut(),
) -> Result<Vec<Basis>, PassError> {
    let mut acc: HashMap<ValueId, Moments> = points
        .iter()
        .map(|p| {
            (
                p.value,
                Moments {
                    d: p.d,
                    eps: p.eps as f64,
                    h: Mat::zeros(p.d, p.d),
                    rows: 0,
                },
            )
        })
        .collect();
    let mut failure: Option<String> = None;
    for s in &samples.samples {
        let inputs = s.values()?;
        interp.run_observed(g, inputs, &mut |v, val| {
            if let Some(m) = acc.get_mut(&v) {
                match val.to_f64_vec() {
                    Ok(z) if val.shape().last() == Some(&m.d) => m.add(&z),
                    Ok(_) => failure = Some(format!("value {v} has shape {:?}", val.shape())),
                    Err(e) => failure = Some(e),
                }
            }
        })?;
        if let Some(f) = failure.take() {
            return Err(PassError::failed(crate::NAME, f));
        }
        progress();
    }
    points
        .iter()
        .map(|p| {
            let m = acc.get(&p.value).ok_or_else(|| {
                PassError::failed(crate::NAME, "internal error: a point was not observed")
            })?;
            if m.rows == 0 {
                return Err(PassError::failed(
                    crate::NAME,
                    "the calibration samples produced no rows",
                ));
            }
            let h = Square {
                d: p.d,
                data: (0..p.d * p.d)
                    .map(|i| m.h[(i / p.d, i % p.d)] / m.rows as f64)
                    .collect(),
            };
            let (q, eigenvalues) =
                principal_axes(&h).map_err(|e| PassError::failed(crate::NAME, e.to_string()))?;
            Ok(Basis {
                q,
                eigenvalues,
                rows: m.rows,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_axes_are_orthonormal_and_sorted() {
        let d = 5;
        // A symmetric matrix with distinct eigenvalues.
        let mut h = Square::identity(d);
        for i in 0..d {
            for j in 0..d {
                h.data[i * d + j] +=
                    ((i + 1) * (j + 2) % 7) as f64 * 0.1 + (i == j) as u8 as f64 * i as f64;
            }
        }
        let sym = Square {
            d,
            data: (0..d * d)
                .map(|k| 0.5 * (h.at(k / d, k % d) + h.at(k % d, k / d)))
                .collect(),
        };
        let (q, ev) = principal_axes(&sym).unwrap();
        for w in ev.windows(2) {
            assert!(w[0] >= w[1], "{ev:?}");
        }
        for (a, &lambda) in ev.iter().enumerate() {
            for b in 0..d {
                let dot: f64 = (0..d).map(|r| q.at(r, a) * q.at(r, b)).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "QᵀQ[{a},{b}] = {dot}");
            }
            // H q = λ q.
            for r in 0..d {
                let hq: f64 = (0..d).map(|c| sym.at(r, c) * q.at(c, a)).sum();
                assert!((hq - lambda * q.at(r, a)).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn retained_fraction() {
        let b = Basis {
            q: Square::identity(3),
            eigenvalues: vec![3.0, 1.0, 0.0],
            rows: 1,
        };
        assert_eq!(b.retained(1), 0.75);
        assert_eq!(b.retained(2), 1.0);
        let id = Basis {
            q: Square::identity(3),
            eigenvalues: vec![],
            rows: 0,
        };
        assert_eq!(id.retained(1), 1.0);
    }
}
