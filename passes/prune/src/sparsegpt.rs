//! SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be
//! Accurately Pruned in One-Shot", Algorithm 1): prune the inputs of a layer column by
//! column and push each pruned weight's error onto the inputs not yet visited, through the
//! upper Cholesky factor of the damped inverse Hessian — the GPTQ machinery with "round to
//! zero or keep" in place of "round to the grid".
//!
//! Matrices are `K×N`, row-major (`w[i·N + c]`: input `i`, output `c`), as
//! the prune crate's `ConsumerMat` holds them: one "column" of the paper (an input position
//! across all outputs) is one contiguous row here.

use crate::linalg::{inverse_upper_cholesky, FactorError};
use crate::unstructured::{count_at, lowest, Pattern};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// Input positions per lazy-batch block (the paper's `B = Bs = 128`).
pub const BLOCK: usize = 128;

/// Why SparseGPT could not run on a layer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SparseGptError {
    /// The weight has a NaN or an infinity.
    #[error("the weight has a non-finite entry")]
    NonFiniteWeight,
    /// The weight does not have `K×N` entries.
    #[error("the weight has {got} entries, not {k}×{n}")]
    WeightShape {
        /// Entries given.
        got: usize,
        /// Inputs.
        k: usize,
        /// Outputs.
        n: usize,
    },
    /// The inverse Hessian factor failed.
    #[error(transparent)]
    Factor(#[from] FactorError),
}

/// SparseGPT of `w` (`K×N`, input-major) with `h = XᵀX` (`K×K`, row-major): returns the
/// pruned and updated weight (`K×N`) with exactly the zeros `pattern` asks for in every
/// output.
///
/// The algorithm: `U` = upper Cholesky factor of `(H + δI)⁻¹` (see
/// [`inverse_upper_cholesky`]: `δ = damp · mean(diag H)`, dead inputs with `H_jj = 0` get
/// `H_jj = 1`, which decouples them; unlike the reference code their weights are not
/// zeroed, as in GPTQ here). Inputs are visited in order, in blocks of [`BLOCK`] (a multiple
/// of `M` for `N:M`). **Adaptive mask selection**: at the start of a block, every output
/// chooses which of the block's inputs it prunes by the OBS error `w²/U_cc²` of the current
/// (already updated) weights — `⌊s·i₂⌋ − ⌊s·i₁⌋` of them for block `[i₁, i₂)`, so that every
/// output ends with exactly `⌊s·K⌋` zeros; for `N:M` the choice is made per group of `M`
/// inputs when the group's first input is reached, `M − N` per group and output. Each
/// pruned weight's scaled error `w/U_ii` is subtracted, times row `i` of `U`, from the later
/// inputs of the block at once; the rest of the matrix gets one matrix product per block
/// (lazy batch updates).
///
/// With `H = I` nothing moves (`U` is diagonal) and the result is magnitude pruning with the
/// same per-block (or per-group) choice.
pub fn sparsegpt(
    w: &[f64],
    k: usize,
    n: usize,
    h: &[f64],
    pattern: Pattern,
    damp: f64,
) -> Result<Vec<f64>, SparseGptError> {
    if w.len() != k * n {
        return Err(SparseGptError::WeightShape { got: w.len(), k, n });
    }
    if w.iter().any(|x| !x.is_finite()) {
        return Err(SparseGptError::NonFiniteWeight);
    }
    let u = inverse_upper_cholesky(h, k, damp)?;
    let mut wc = w.to_vec();
    if k == 0 || n == 0 {
        return Ok(wc);
    }
    let bs = match pattern {
        Pattern::NOfM { m, .. } => m * (BLOCK / m).max(1),
        Pattern::Fraction(_) => BLOCK,
    };
    // pruned[i·N + c]: input i of output c is pruned.
    let mut pruned = vec![false; k * n];
    let mut err = vec![0f64; bs.min(k) * n];
    let mut scores = Vec::with_capacity(bs);
    let mut i1 = 0;
    while i1 < k {
        let i2 = (i1 + bs).min(k);
        let cnt = i2 - i1;
        if let Pattern::Fraction(s) = pattern {
            let take = count_at(s, i2) - count_at(s, i1);
            if take > 0 {
                for c in 0..n {
                    scores.clear();
                    scores.extend((i1..i2).map(|i| {
                        let d = u[(i, i)];
                        wc[i * n + c] * wc[i * n + c] / (d * d)
                    }));
                    for j in lowest(&scores, take) {
                        pruned[(i1 + j) * n + c] = true;
                    }
                }
            }
        }
        for i in i1..i2 {
            if let Pattern::NOfM { n: keep, m } = pattern {
                if (i - i1) % m == 0 {
                    let end = (i + m).min(k);
                    let take = (end - i).saturating_sub(keep);
                    if take > 0 {
                        for c in 0..n {
                            scores.clear();
                            scores.extend((i..end).map(|j| {
                                let d = u[(j, j)];
                                wc[j * n + c] * wc[j * n + c] / (d * d)
                            }));
                            for j in lowest(&scores, take) {
                                pruned[(i + j) * n + c] = true;
                            }
                        }
                    }
                }
            }
            let dii = u[(i, i)];
            let (head, tail) = wc.split_at_mut((i + 1) * n);
            let row = &mut head[i * n..];
            let e = &mut err[(i - i1) * n..(i - i1 + 1) * n];
            let mut any = false;
            for c in 0..n {
                if pruned[i * n + c] {
                    e[c] = row[c] / dii;
                    row[c] = 0.0;
                    any |= e[c] != 0.0;
                } else {
                    e[c] = 0.0;
                }
            }
            if !any {
                continue;
            }
            for j in i + 1..i2 {
                let uij = u[(i, j)];
                if uij == 0.0 {
                    continue;
                }
                let rj = &mut tail[(j - i - 1) * n..(j - i) * n];
                for (x, &er) in rj.iter_mut().zip(e.iter()) {
                    *x -= er * uij;
                }
            }
        }
        if i2 < k {
            // W[i₂.., :] −= U[i₁..i₂, i₂..]ᵀ · E   (E: cnt × N, row-major)
            let lhs = MatRef::from_row_major_slice(&err[..cnt * n], cnt, n);
            let ub = u.as_ref().submatrix(i1, i2, cnt, k - i2);
            let dst = MatMut::from_row_major_slice_mut(&mut wc[i2 * n..], k - i2, n);
            matmul(dst, Accum::Add, ub.transpose(), lhs, -1.0, Par::Seq);
        }
        i1 = i2;
    }
    // Updates never touch an input already visited, so the pruned weights are still zero;
    // make it explicit against rounding.
    for (x, &p) in wc.iter_mut().zip(&pruned) {
        if p {
            *x = 0.0;
        }
    }
    Ok(wc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::quadratic;
    use crate::unstructured::{magnitude, wanda};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    fn random(len: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng(seed);
        (0..len).map(|_| r.next()).collect()
    }

    /// `XᵀX` of `rows` random rows whose features are correlated with their neighbours and
    /// have very different scales (as real activations do: a few large channels).
    fn correlated_h(k: usize, rows: usize, seed: u64) -> Vec<f64> {
        let x = random(rows * k, seed);
        let scale: Vec<f64> = (0..k)
            .map(|j| {
                if j % 7 == 3 {
                    6.0
                } else {
                    0.5 + (j % 5) as f64 * 0.3
                }
            })
            .collect();
        let mut h = vec![0f64; k * k];
        for r in 0..rows {
            let row: Vec<f64> = (0..k)
                .map(|j| scale[j] * (x[r * k + j] + 0.9 * x[r * k + (j + 1) % k]))
                .collect();
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += row[i] * row[j];
                }
            }
        }
        h
    }

    fn identity(k: usize) -> Vec<f64> {
        let mut h = vec![0f64; k * k];
        for j in 0..k {
            h[j * k + j] = 1.0;
        }
        h
    }

    fn rel_err(h: &[f64], w: &[f64], p: &[f64], k: usize, n: usize) -> f64 {
        let d: Vec<f64> = w.iter().zip(p).map(|(a, b)| a - b).collect();
        (quadratic(h, &d, k, n) / quadratic(h, w, k, n)).sqrt()
    }

    fn zeros_per_output(p: &[f64], k: usize, n: usize) -> Vec<usize> {
        (0..n)
            .map(|c| (0..k).filter(|&i| p[i * n + c] == 0.0).count())
            .collect()
    }

    /// Straightforward SparseGPT without lazy updates (every pruned weight's error is
    /// applied to all later inputs at once), H⁻¹ rows from re-solving on the remaining
    /// inputs — the OBS update written out, to check the blocked version against.
    fn reference(w: &[f64], k: usize, n: usize, h: &[f64], pattern: Pattern) -> Vec<f64> {
        let u = inverse_upper_cholesky(h, k, 0.01).expect("factor");
        let mut wm = w.to_vec();
        let bs = match pattern {
            Pattern::NOfM { m, .. } => m * (BLOCK / m).max(1),
            Pattern::Fraction(_) => BLOCK,
        };
        let mut pruned = vec![false; k * n];
        for i in 0..k {
            let score = |wm: &[f64], j: usize, c: usize| {
                wm[j * n + c] * wm[j * n + c] / (u[(j, j)] * u[(j, j)])
            };
            match pattern {
                Pattern::Fraction(s) if i % bs == 0 => {
                    let end = (i + bs).min(k);
                    let take = count_at(s, end) - count_at(s, i);
                    for c in 0..n {
                        let sc: Vec<f64> = (i..end).map(|j| score(&wm, j, c)).collect();
                        for j in lowest(&sc, take) {
                            pruned[(i + j) * n + c] = true;
                        }
                    }
                }
                Pattern::NOfM { n: keep, m } if i % m == 0 => {
                    let end = (i + m).min(k);
                    for c in 0..n {
                        let sc: Vec<f64> = (i..end).map(|j| score(&wm, j, c)).collect();
                        for j in lowest(&sc, (end - i).saturating_sub(keep)) {
                            pruned[(i + j) * n + c] = true;
                        }
                    }
                }
                _ => {}
            }
            for c in 0..n {
                if pruned[i * n + c] {
                    let e = wm[i * n + c] / u[(i, i)];
                    for j in i..k {
                        wm[j * n + c] -= e * u[(i, j)];
                    }
                    wm[i * n + c] = 0.0;
                }
            }
        }
        wm
    }

    #[test]
    fn identity_hessian_equals_magnitude() {
        // One block (K ≤ 128): the per-block choice is the per-output choice.
        let (k, n) = (96, 7);
        let w = random(k * n, 3);
        for pattern in [
            Pattern::Fraction(0.5),
            Pattern::Fraction(0.3),
            Pattern::NOfM { n: 2, m: 4 },
        ] {
            let s = sparsegpt(&w, k, n, &identity(k), pattern, 0.01).expect("runs");
            assert_eq!(s, magnitude(&w, k, n, pattern), "{pattern:?}");
        }
        // Several blocks: N:M groups never straddle a block, so still equal.
        let k = 320;
        let w = random(k * n, 5);
        let p = Pattern::NOfM { n: 4, m: 8 };
        let s = sparsegpt(&w, k, n, &identity(k), p, 0.01).expect("runs");
        assert_eq!(s, magnitude(&w, k, n, p));
    }

    #[test]
    fn matches_the_unblocked_reference() {
        // K > BLOCK so that the lazy batch update across blocks is exercised.
        let (k, n) = (200, 6);
        let w = random(k * n, 17);
        let h = correlated_h(k, 600, 23);
        for pattern in [Pattern::Fraction(0.5), Pattern::NOfM { n: 2, m: 4 }] {
            let s = sparsegpt(&w, k, n, &h, pattern, 0.01).expect("runs");
            let r = reference(&w, k, n, &h, pattern);
            let same_mask = s
                .iter()
                .zip(&r)
                .filter(|(a, b)| (**a == 0.0) == (**b == 0.0))
                .count();
            assert!(
                same_mask * 1000 >= 999 * s.len(),
                "{pattern:?}: {same_mask}"
            );
            let (es, er) = (rel_err(&h, &w, &s, k, n), rel_err(&h, &w, &r, k, n));
            assert!((es - er).abs() <= 1e-6 * er, "{pattern:?}: {es} vs {er}");
        }
    }

    #[test]
    fn exact_counts_and_patterns() {
        let (k, n) = (300, 5);
        let w = random(k * n, 41);
        let h = correlated_h(k, 500, 43);
        for s in [0.5, 0.25, 0.7] {
            let want = count_at(s, k);
            let p = sparsegpt(&w, k, n, &h, Pattern::Fraction(s), 0.01).expect("runs");
            assert_eq!(zeros_per_output(&p, k, n), vec![want; n], "sparsity {s}");
        }
        // 2:4 with K = 300: 75 groups, each with exactly two zeros per output.
        let p = sparsegpt(&w, k, n, &h, Pattern::NOfM { n: 2, m: 4 }, 0.01).expect("runs");
        for c in 0..n {
            for g in 0..k / 4 {
                let z = (0..4).filter(|&j| p[(g * 4 + j) * n + c] == 0.0).count();
                assert_eq!(z, 2, "output {c}, group {g}");
            }
        }
    }

    /// On a correlated-X problem the second-order method beats the activation-aware score,
    /// which beats plain magnitude (the ordering the papers report).
    #[test]
    fn sparsegpt_beats_wanda_beats_magnitude() {
        let (k, n) = (256, 24);
        let w = random(k * n, 101);
        let h = correlated_h(k, 2000, 103);
        let diag: Vec<f64> = (0..k).map(|j| h[j * k + j]).collect();
        for pattern in [Pattern::Fraction(0.5), Pattern::NOfM { n: 2, m: 4 }] {
            let e_mag = rel_err(&h, &w, &magnitude(&w, k, n, pattern), k, n);
            let e_wanda = rel_err(&h, &w, &wanda(&w, k, n, &diag, pattern), k, n);
            let e_sgpt = rel_err(
                &h,
                &w,
                &sparsegpt(&w, k, n, &h, pattern, 0.01).expect("runs"),
                k,
                n,
            );
            assert!(
                e_sgpt < e_wanda && e_wanda < e_mag,
                "{pattern:?}: sparsegpt {e_sgpt}, wanda {e_wanda}, magnitude {e_mag}"
            );
        }
    }

    #[test]
    fn dead_inputs_and_bad_input() {
        let (k, n) = (16, 3);
        let w = random(k * n, 5);
        let mut h = correlated_h(k, 80, 9);
        for j in 0..k {
            h[2 * k + j] = 0.0;
            h[j * k + 2] = 0.0;
        }
        let p = sparsegpt(&w, k, n, &h, Pattern::Fraction(0.5), 0.01).expect("runs");
        assert_eq!(zeros_per_output(&p, k, n), vec![8; n]);
        assert!(p.iter().all(|x| x.is_finite()));
        assert!(matches!(
            sparsegpt(&w, k, n, &h[1..], Pattern::Fraction(0.5), 0.01),
            Err(SparseGptError::Factor(FactorError::Shape { .. }))
        ));
        assert_eq!(
            sparsegpt(&w[1..], k, n, &h, Pattern::Fraction(0.5), 0.01),
            Err(SparseGptError::WeightShape {
                got: k * n - 1,
                k,
                n
            })
        );
        let mut bad = w.clone();
        bad[4] = f64::NAN;
        assert_eq!(
            sparsegpt(&bad, k, n, &h, Pattern::Fraction(0.5), 0.01),
            Err(SparseGptError::NonFiniteWeight)
        );
        h[0] = f64::INFINITY;
        assert!(matches!(
            sparsegpt(&w, k, n, &h, Pattern::Fraction(0.5), 0.01),
            Err(SparseGptError::Factor(FactorError::NonFinite))
        ));
        let mut neg = identity(k);
        neg[3 * k + 3] = -5.0;
        assert!(matches!(
            sparsegpt(&w, k, n, &neg, Pattern::Fraction(0.5), 0.0),
            Err(SparseGptError::Factor(
                FactorError::NotPositiveDefinite { .. }
            ))
        ));
    }
}
