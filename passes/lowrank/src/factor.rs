//! The factorizations: `W ≈ A·B` with `A` `K×r` and `B` `r×N`, by truncated SVD (optimal in
//! Frobenius norm) or by SVD of the whitened weight `SᵀW` with `S Sᵀ = H = XᵀX` (optimal in
//! the layer's output error `‖X(W − A·B)‖_F`): `asvd` whitens with the Cholesky factor
//! `S = L`, [`eora`] with the eigendecomposition `S = QΛ^½`. Both share one whitened SVD.

use faer::linalg::triangular_solve::solve_upper_triangular_in_place;
use faer::{Mat, Par, Side};

/// Errors of the numerical steps.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FactorError {
    /// The SVD did not converge.
    #[error("the SVD did not converge")]
    Svd,
    /// `H + λI` is not positive definite even after raising the damping.
    #[error("XᵀX is not positive definite even with damping {0:e} x mean(diag)")]
    NotPositiveDefinite(f64),
    /// The eigendecomposition of `XᵀX` did not converge (non-finite entries).
    #[error("the eigendecomposition of XᵀX did not converge")]
    Eigen,
    /// Operand sizes do not fit.
    #[error("size mismatch: {0}")]
    Size(String),
}

/// A rank-`r` factorization `W ≈ a · b`, row-major f64.
#[derive(Clone, Debug)]
pub struct Factors {
    /// `K × r`.
    pub a: Vec<f64>,
    /// `r × N`.
    pub b: Vec<f64>,
    /// The rank.
    pub r: usize,
    /// Squared singular values of the decomposed matrix (`W`, or the whitened `SᵀW`), all
    /// `min(K, N)` of them in nonincreasing order: the spectrum the rank was chosen from.
    pub spectrum: Vec<f64>,
}

/// How the rank is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RankRule {
    /// Exactly this rank (clamped to `min(K, N)`).
    Fixed(usize),
    /// The smallest rank whose squared singular values reach this fraction of the total.
    Energy(f64),
}

impl RankRule {
    pub(crate) fn pick(&self, spectrum: &[f64]) -> usize {
        let full = spectrum.len();
        match *self {
            RankRule::Fixed(r) => r.clamp(1, full.max(1)),
            RankRule::Energy(e) => {
                let total: f64 = spectrum.iter().sum();
                if total <= 0.0 {
                    return 1;
                }
                let mut acc = 0.0;
                for (i, s) in spectrum.iter().enumerate() {
                    acc += s;
                    if acc >= e * total {
                        return i + 1;
                    }
                }
                full
            }
        }
    }
}

fn to_mat(w: &[f64], k: usize, n: usize) -> Mat<f64> {
    Mat::from_fn(k, n, |i, j| w[i * n + j])
}

/// Splits `U_r Σ_r V_rᵀ` into `U_r Σ_r^½` and `Σ_r^½ V_rᵀ` (balanced factors).
fn split(u: &Mat<f64>, s: &[f64], v: &Mat<f64>, r: usize) -> (Mat<f64>, Vec<f64>) {
    let k = u.nrows();
    let n = v.nrows();
    let a = Mat::from_fn(k, r, |i, c| u[(i, c)] * s[c].max(0.0).sqrt());
    let mut b = vec![0.0; r * n];
    for c in 0..r {
        let sq = s[c].max(0.0).sqrt();
        for j in 0..n {
            b[c * n + j] = sq * v[(j, c)];
        }
    }
    (a, b)
}

/// `U`, the singular values, `V` of a thin SVD.
type ThinSvd = (Mat<f64>, Vec<f64>, Mat<f64>);

fn svd_of(m: &Mat<f64>) -> Result<ThinSvd, FactorError> {
    let svd = m.thin_svd().map_err(|_| FactorError::Svd)?;
    let s: Vec<f64> = (0..m.nrows().min(m.ncols()))
        .map(|i| svd.S().column_vector()[i])
        .collect();
    Ok((svd.U().to_owned(), s, svd.V().to_owned()))
}

fn mat_rows(m: &Mat<f64>) -> Vec<f64> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut out = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            out.push(m[(i, j)]);
        }
    }
    out
}

/// Truncated SVD of the row-major `k × n` matrix `w`.
pub fn svd(w: &[f64], k: usize, n: usize, rule: RankRule) -> Result<Factors, FactorError> {
    if w.len() != k * n {
        return Err(FactorError::Size(format!(
            "{} elements for {k}x{n}",
            w.len()
        )));
    }
    let (u, s, v) = svd_of(&to_mat(w, k, n))?;
    let spectrum: Vec<f64> = s.iter().map(|x| x * x).collect();
    let r = rule.pick(&spectrum);
    let (a, b) = split(&u, &s, &v, r);
    Ok(Factors {
        a: mat_rows(&a),
        b,
        r,
        spectrum,
    })
}

/// Activation-aware SVD: with `H = XᵀX` (`k × k`, row-major, symmetric positive
/// semi-definite) the rank-`r` `W'` minimizing `tr((W − W')ᵀ H (W − W'))` =
/// `‖X(W − W')‖²_F` is `L⁻ᵀ · trunc_r(Lᵀ W)` with `H + λI = L Lᵀ`. `damp` sets
/// `λ = damp · mean(diag H)`; it is raised tenfold (up to 1) until the Cholesky factorization
/// succeeds.
pub fn asvd(
    w: &[f64],
    h: &[f64],
    k: usize,
    n: usize,
    damp: f64,
    rule: RankRule,
) -> Result<Factors, FactorError> {
    if w.len() != k * n || h.len() != k * k {
        return Err(FactorError::Size(format!(
            "W has {} elements for {k}x{n}, H {} for {k}x{k}",
            w.len(),
            h.len()
        )));
    }
    let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let scale = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let mut d = damp.max(0.0);
    let l = loop {
        let hm = Mat::from_fn(k, k, |i, j| {
            h[i * k + j]
                + if i == j {
                    d * scale + f64::MIN_POSITIVE
                } else {
                    0.0
                }
        });
        match hm.llt(Side::Lower) {
            Ok(llt) => break llt.L().to_owned(),
            Err(_) if d < 1.0 => d = if d == 0.0 { 1e-8 } else { d * 10.0 },
            Err(_) => return Err(FactorError::NotPositiveDefinite(d)),
        }
    };
    // A = L⁻ᵀ (U_r Σ_r^½): solve Lᵀ A = U_r Σ_r^½ (upper triangular).
    whitened_svd(w, k, n, l.transpose(), rule, |a| {
        solve_upper_triangular_in_place(l.transpose(), a.as_mut(), Par::Seq)
    })
}

/// The truncated SVD of the whitened `M = Sᵀ·W` (`st` = `Sᵀ`, `k × k`), split into balanced
/// factors, with `unwhiten` mapping `U_r Σ_r^½` to `A = S⁻ᵀ U_r Σ_r^½` in place. For any `S`
/// with `S Sᵀ = H`, `A·B` is the rank-`r` minimizer of `tr((W − A·B)ᵀ H (W − A·B))` and the
/// spectrum's tail past `r` is its value.
fn whitened_svd(
    w: &[f64],
    k: usize,
    n: usize,
    st: faer::MatRef<'_, f64>,
    rule: RankRule,
    unwhiten: impl FnOnce(&mut Mat<f64>),
) -> Result<Factors, FactorError> {
    let m = st * to_mat(w, k, n);
    let (u, s, v) = svd_of(&m)?;
    let spectrum: Vec<f64> = s.iter().map(|x| x * x).collect();
    let r = rule.pick(&spectrum);
    let (mut a, b) = split(&u, &s, &v, r);
    unwhiten(&mut a);
    Ok(Factors {
        a: mat_rows(&a),
        b,
        r,
        spectrum,
    })
}

/// EoRA's eigenspace projection (Liu et al. 2024): the rank-`r` `A·B` (`k×r`, `r×n`)
/// minimizing `tr((D − A·B)ᵀ (H + λI) (D − A·B))` for the compression error `D = W − Ŵ`
/// (`k × n`, row-major) and `H = XᵀX` (`k × k`, row-major, symmetric positive semi-definite).
///
/// With `H = QΛQᵀ`, the SVD of `Λ'^½ Qᵀ D` truncated to `U_r Σ_r V_rᵀ` gives
/// `A = Q Λ'^(-½) U_r Σ_r^½` and `B = Σ_r^½ V_rᵀ` (the paper puts all of `Σ_r` into `A`; the
/// balanced split is the same product with better-scaled f32 factors). Damping: eigenvalues
/// are clamped at 0 (negative ones are rounding), then `λ = damp · mean(diag H)` is added to
/// each, `Λ' = max(Λ, 0) + λ`, a ridge that keeps directions the calibration data never
/// excites from getting unbounded weight `Λ^(-½)`; with `damp = 0`, eigenvalues below
/// `1e-12 · max(Λ)` are raised to it (all to 1 when `H = 0`: then this is the plain SVD).
/// `spectrum` holds the squared singular values of `Λ'^½ Qᵀ D`: its tail past `r` is the
/// damped objective left after the correction.
pub fn eora(
    d: &[f64],
    h: &[f64],
    k: usize,
    n: usize,
    damp: f64,
    rule: RankRule,
) -> Result<Factors, FactorError> {
    if d.len() != k * n || h.len() != k * k {
        return Err(FactorError::Size(format!(
            "the error has {} elements for {k}x{n}, H {} for {k}x{k}",
            d.len(),
            h.len()
        )));
    }
    if !d.iter().chain(h).all(|x| x.is_finite()) {
        return Err(FactorError::Eigen);
    }
    let mean_diag = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let scale = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let hm = Mat::from_fn(k, k, |i, j| 0.5 * (h[i * k + j] + h[j * k + i]));
    let evd = hm
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| FactorError::Eigen)?;
    let q = evd.U().to_owned();
    let raw: Vec<f64> = (0..k).map(|i| evd.S().column_vector()[i]).collect();
    let top = raw.iter().copied().fold(0.0, f64::max);
    let floor = if top > 0.0 { top * 1e-12 } else { 1.0 };
    let lam: Vec<f64> = raw
        .iter()
        .map(|&l| (l.max(0.0) + damp.max(0.0) * scale).max(floor))
        .collect();
    // Sᵀ = Λ'^½ Qᵀ; S⁻ᵀ = Q Λ'^(-½).
    let st = Mat::from_fn(k, k, |i, j| lam[i].sqrt() * q[(j, i)]);
    whitened_svd(d, k, n, st.as_ref(), rule, |a| {
        let scaled = Mat::from_fn(a.nrows(), a.ncols(), |i, c| a[(i, c)] / lam[i].sqrt());
        *a = &q * &scaled;
    })
}

/// `a · b` (`k × r` times `r × n`), row-major.
pub fn product(f: &Factors, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; k * n];
    for i in 0..k {
        for c in 0..f.r {
            let x = f.a[i * f.r + c];
            if x == 0.0 {
                continue;
            }
            let brow = &f.b[c * n..(c + 1) * n];
            for (o, y) in out[i * n..(i + 1) * n].iter_mut().zip(brow) {
                *o += x * y;
            }
        }
    }
    out
}

/// `tr(Dᵀ H D)` for the row-major `k × n` matrix `d`: the squared output error
/// `‖X D‖²_F` when `H = XᵀX`.
/// NaN when the sizes do not fit.
pub fn weighted_sq(d: &[f64], h: &[f64], k: usize, n: usize) -> f64 {
    if d.len() != k * n || h.len() != k * k {
        return f64::NAN;
    }
    // Σ_j Σ_i Σ_l d[i,j] H[i,l] d[l,j], with H·D by faer's matrix product.
    let dm = to_mat(d, k, n);
    let hd = Mat::from_fn(k, k, |i, j| h[i * k + j]) * &dm;
    let mut sum = 0.0;
    for j in 0..n {
        for i in 0..k {
            sum += dm[(i, j)] * hd[(i, j)];
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [-1, 1).
    fn rand(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// An anisotropic SPD `H = XᵀX` from random rows with column scales `1..k`.
    fn hessian(k: usize, rows: usize, seed: u64) -> Vec<f64> {
        let mut x = rand(rows * k, seed);
        for r in 0..rows {
            for c in 0..k {
                x[r * k + c] *= 1.0 + 3.0 * c as f64;
            }
        }
        let mut h = vec![0.0; k * k];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[r * k + i] * x[r * k + j];
                }
            }
        }
        h
    }

    fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    fn norm(a: &[f64]) -> f64 {
        a.iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    #[test]
    fn full_rank_reproduces_the_weight() {
        let (k, n) = (7, 5);
        let w = rand(k * n, 1);
        let h = hessian(k, 40, 2);
        for f in [
            svd(&w, k, n, RankRule::Fixed(5)).unwrap(),
            asvd(&w, &h, k, n, 0.0, RankRule::Fixed(5)).unwrap(),
        ] {
            assert_eq!(f.r, 5);
            let e = norm(&diff(&product(&f, k, n), &w)) / norm(&w);
            assert!(e < 1e-10, "relative error {e}");
        }
    }

    #[test]
    fn svd_error_is_the_tail_of_the_spectrum() {
        let (k, n) = (12, 9);
        let w = rand(k * n, 3);
        let f = svd(&w, k, n, RankRule::Fixed(4)).unwrap();
        let err2: f64 = diff(&product(&f, k, n), &w).iter().map(|x| x * x).sum();
        let tail: f64 = f.spectrum[4..].iter().sum();
        assert!(
            (err2 - tail).abs() < 1e-9 * tail.max(1.0),
            "{err2} vs {tail}"
        );
    }

    #[test]
    fn asvd_wins_on_output_error_svd_on_weight_error() {
        let (k, n) = (16, 12);
        let w = rand(k * n, 5);
        let h = hessian(k, 64, 6);
        for r in [2, 5, 8] {
            let s = svd(&w, k, n, RankRule::Fixed(r)).unwrap();
            let a = asvd(&w, &h, k, n, 1e-9, RankRule::Fixed(r)).unwrap();
            let ds = diff(&product(&s, k, n), &w);
            let da = diff(&product(&a, k, n), &w);
            let (os, oa) = (weighted_sq(&ds, &h, k, n), weighted_sq(&da, &h, k, n));
            assert!(oa < os, "rank {r}: output error asvd {oa} >= svd {os}");
            assert!(norm(&ds) <= norm(&da) + 1e-12, "rank {r}: weight error");
            // The whitened spectrum's tail is asvd's output error.
            let tail: f64 = a.spectrum[r..].iter().sum();
            assert!(
                (oa - tail).abs() < 1e-6 * tail.max(1.0),
                "rank {r}: {oa} vs {tail}"
            );
        }
    }

    #[test]
    fn energy_rule_picks_the_smallest_rank_reaching_it() {
        assert_eq!(RankRule::Energy(0.5).pick(&[4.0, 3.0, 2.0, 1.0]), 2);
        assert_eq!(RankRule::Energy(0.4).pick(&[4.0, 3.0, 2.0, 1.0]), 1);
        assert_eq!(RankRule::Energy(1.0).pick(&[4.0, 3.0, 2.0, 1.0]), 4);
        assert_eq!(RankRule::Fixed(9).pick(&[1.0, 1.0]), 2);
        assert_eq!(RankRule::Fixed(0).pick(&[1.0, 1.0]), 1);
    }

    /// `X` (`rows × k`, row-major) with strongly correlated columns: a few shared random
    /// factors plus a little independent noise, column scales growing along `k`.
    fn correlated_x(rows: usize, k: usize, seed: u64) -> Vec<f64> {
        let f = 3;
        let z = rand(rows * f, seed);
        let mix = rand(f * k, seed + 1);
        let noise = rand(rows * k, seed + 2);
        let mut x = vec![0.0; rows * k];
        for r in 0..rows {
            for c in 0..k {
                let mut v = 0.05 * noise[r * k + c];
                for t in 0..f {
                    v += z[r * f + t] * mix[t * k + c];
                }
                x[r * k + c] = v * (1.0 + c as f64 / k as f64);
            }
        }
        x
    }

    fn gram(x: &[f64], rows: usize, k: usize) -> Vec<f64> {
        let mut h = vec![0.0; k * k];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[r * k + i] * x[r * k + j];
                }
            }
        }
        h
    }

    /// `‖X·D‖_F` computed on `X` itself (not through `H`).
    fn output_norm(x: &[f64], rows: usize, d: &[f64], k: usize, n: usize) -> f64 {
        let mut s = 0.0;
        for r in 0..rows {
            for j in 0..n {
                let y: f64 = (0..k).map(|i| x[r * k + i] * d[i * n + j]).sum();
                s += y * y;
            }
        }
        s.sqrt()
    }

    /// `w` rounded to a 0.25 grid: a stand-in for a quantized weight.
    fn rounded(w: &[f64]) -> Vec<f64> {
        w.iter().map(|x| (x * 4.0).round() / 4.0).collect()
    }

    #[test]
    fn eora_with_identity_hessian_is_the_plain_svd_of_the_error() {
        let (k, n) = (10, 7);
        let w = rand(k * n, 11);
        let d = diff(&w, &rounded(&w));
        let mut eye = vec![0.0; k * k];
        for i in 0..k {
            eye[i * k + i] = 1.0;
        }
        for damp in [0.0, 0.01] {
            for r in [1, 3, 5] {
                let e = eora(&d, &eye, k, n, damp, RankRule::Fixed(r)).unwrap();
                let s = svd(&d, k, n, RankRule::Fixed(r)).unwrap();
                let (pe, ps) = (product(&e, k, n), product(&s, k, n));
                let gap = norm(&diff(&pe, &ps)) / norm(&ps);
                assert!(gap < 1e-9, "damp {damp} rank {r}: {gap}");
                // The spectrum is the error's, scaled by the uniform eigenvalue 1 + damp.
                for (a, b) in e.spectrum.iter().zip(&s.spectrum) {
                    assert!((a - (1.0 + damp) * b).abs() < 1e-9 * b.max(1.0));
                }
            }
        }
    }

    #[test]
    fn eora_beats_the_plain_svd_correction_on_correlated_inputs() {
        let (rows, k, n) = (200, 24, 16);
        let x = correlated_x(rows, k, 21);
        let h = gram(&x, rows, k);
        let w = rand(k * n, 22);
        let d = diff(&w, &rounded(&w));
        let before = output_norm(&x, rows, &d, k, n);
        for r in [1, 2, 4, 8] {
            let e = eora(&d, &h, k, n, 1e-6, RankRule::Fixed(r)).unwrap();
            let s = svd(&d, k, n, RankRule::Fixed(r)).unwrap();
            let oe = output_norm(&x, rows, &diff(&d, &product(&e, k, n)), k, n);
            let os = output_norm(&x, rows, &diff(&d, &product(&s, k, n)), k, n);
            assert!(
                oe < 0.9 * os,
                "rank {r}: EoRA output error {oe} not clearly below SVD's {os}"
            );
            assert!(oe < before, "rank {r}: {oe} >= uncorrected {before}");
            // Same optimum as the Cholesky-whitened SVD of the error.
            let a = asvd(&d, &h, k, n, 1e-6, RankRule::Fixed(r)).unwrap();
            let oa = output_norm(&x, rows, &diff(&d, &product(&a, k, n)), k, n);
            assert!(
                (oe - oa).abs() < 1e-6 * oa.max(1.0),
                "rank {r}: {oe} vs {oa}"
            );
        }
        // The three correlated factors carry almost all of X: rank 3 removes most of the
        // output error, which no rank-3 SVD of the error itself does.
        let e3 = eora(&d, &h, k, n, 1e-6, RankRule::Fixed(3)).unwrap();
        let o3 = output_norm(&x, rows, &diff(&d, &product(&e3, k, n)), k, n);
        assert!(o3 < 0.2 * before, "{o3} vs {before}");
    }

    #[test]
    fn eora_of_a_zero_error_is_zero_and_sizes_are_checked() {
        let (k, n) = (6, 5);
        let h = hessian(k, 30, 31);
        let f = eora(&vec![0.0; k * n], &h, k, n, 0.01, RankRule::Fixed(2)).unwrap();
        assert!(f.a.iter().chain(&f.b).all(|&x| x == 0.0));
        assert!(f.spectrum.iter().all(|&x| x == 0.0));
        assert!(matches!(
            eora(&vec![0.0; k * n], &h[1..], k, n, 0.0, RankRule::Fixed(2)),
            Err(FactorError::Size(_))
        ));
        let mut bad = h.clone();
        bad[0] = f64::NAN;
        assert_eq!(
            eora(&vec![1.0; k * n], &bad, k, n, 0.0, RankRule::Fixed(2)).unwrap_err(),
            FactorError::Eigen
        );
        // A singular H (zero) is plain SVD at any damping; full rank reproduces the error.
        let d = rand(k * n, 32);
        let f = eora(&d, &vec![0.0; k * k], k, n, 0.0, RankRule::Fixed(5)).unwrap();
        assert!(norm(&diff(&product(&f, k, n), &d)) < 1e-10 * norm(&d));
    }

    #[test]
    fn weighted_sq_is_the_output_error() {
        let (rows, k, n) = (9, 5, 4);
        let x = rand(rows * k, 41);
        let d = rand(k * n, 42);
        let h = gram(&x, rows, k);
        let o = output_norm(&x, rows, &d, k, n);
        assert!((weighted_sq(&d, &h, k, n) - o * o).abs() < 1e-9 * o * o);
        assert!(weighted_sq(&d[1..], &h, k, n).is_nan());
    }

    #[test]
    fn singular_hessians_are_damped() {
        let (k, n) = (6, 4);
        let w = rand(k * n, 8);
        let h = vec![0.0; k * k];
        let f = asvd(&w, &h, k, n, 0.0, RankRule::Fixed(4)).unwrap();
        let e = norm(&diff(&product(&f, k, n), &w)) / norm(&w);
        assert!(e < 1e-6, "{e}");
        assert!(matches!(
            asvd(&w, &h[1..], k, n, 0.0, RankRule::Fixed(2)),
            Err(FactorError::Size(_))
        ));
    }
}
