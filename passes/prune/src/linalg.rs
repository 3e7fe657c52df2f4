//! The second-order pieces: a consumer weight seen as the `K×N` matrix its calibration
//! `XᵀX` is indexed by, the damped inverse of `XᵀX`, the Optimal-Brain-Surgeon cost of
//! deleting a block of its rows and the least-squares update of the rows that stay.

use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, Side};
use pare_ir::{Graph, NodeId, Op, Tensor};

/// How a consumer's weight tensor maps to the `K×N` matrix `W` of `Y = X·W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// MatMul / Gemm (`transB = 0`): the tensor is `[K, N]`.
    KN,
    /// Gemm with `transB = 1`: the tensor is `[N, K]`.
    NK,
    /// Single-group Conv: the tensor is `[N, C, k…]`, `K = C·Πk` in im2col order, so input
    /// channel `c` owns rows `c·Πk .. (c+1)·Πk`.
    Conv {
        /// `Πk`: kernel positions per input channel.
        taps: usize,
    },
}

/// A consumer weight as a `K×N` f64 matrix.
#[derive(Clone, Debug)]
pub struct ConsumerMat {
    /// Rows (`K`).
    pub k: usize,
    /// Columns (`N`).
    pub n: usize,
    /// Rows of `W` per position along the consumer axis.
    pub rows_per_channel: usize,
    /// `K×N`, row-major.
    pub w: Vec<f64>,
    layout: Layout,
    shape: Vec<usize>,
}

/// The layout of the consumer weight of node `n`, when its rows are what the calibration
/// `XᵀX` of `n` is indexed by (MatMul, Gemm without `transA`, single-group Conv).
pub fn consumer_layout(g: &Graph, n: NodeId, weight_rank: usize) -> Option<Layout> {
    match &g.node(n).op {
        Op::MatMul if weight_rank == 2 => Some(Layout::KN),
        Op::Gemm(a) if !a.trans_a => Some(if a.trans_b { Layout::NK } else { Layout::KN }),
        Op::Conv(a) if a.group == 1 && weight_rank >= 3 => Some(Layout::Conv { taps: 0 }),
        _ => None,
    }
}

impl ConsumerMat {
    /// Reads `t` (f32) as `W`.
    pub fn new(t: &Tensor, layout: Layout) -> Option<ConsumerMat> {
        let v = t.to_vec::<f32>().ok()?;
        let shape = t.shape().to_vec();
        let (k, n, rpc, w, layout) = match layout {
            Layout::KN => {
                let &[k, n] = shape.as_slice() else {
                    return None;
                };
                (k, n, 1, v.iter().map(|&x| x as f64).collect(), layout)
            }
            Layout::NK => {
                let &[n, k] = shape.as_slice() else {
                    return None;
                };
                let w = (0..k * n).map(|i| v[(i % n) * k + i / n] as f64).collect();
                (k, n, 1, w, layout)
            }
            Layout::Conv { .. } => {
                let n = *shape.first()?;
                let taps: usize = shape.get(2..)?.iter().product();
                let k = shape.get(1)? * taps;
                let w = (0..k * n).map(|i| v[(i % n) * k + i / n] as f64).collect();
                (k, n, taps, w, Layout::Conv { taps })
            }
        };
        Some(ConsumerMat {
            k,
            n,
            rows_per_channel: rpc,
            w,
            layout,
            shape,
        })
    }

    /// The tensor holding `W` (same shape as the one read).
    pub fn to_tensor(&self) -> Tensor {
        let (k, n) = (self.k, self.n);
        let v: Vec<f32> = match self.layout {
            Layout::KN => self.w.iter().map(|&x| x as f32).collect(),
            Layout::NK | Layout::Conv { .. } => (0..k * n)
                .map(|i| self.w[(i % k) * n + i / k] as f32)
                .collect(),
        };
        Tensor::from_vec(self.shape.clone(), v)
    }

    /// `self − other` (same layout).
    pub fn minus(&self, other: &ConsumerMat) -> ConsumerMat {
        ConsumerMat {
            w: self.w.iter().zip(&other.w).map(|(a, b)| a - b).collect(),
            ..self.clone()
        }
    }

    /// Rows of the consumer-axis positions `positions`, in increasing order.
    pub fn rows_of(&self, positions: &[usize]) -> Vec<usize> {
        let r = self.rows_per_channel;
        positions
            .iter()
            .flat_map(|&p| p * r..(p + 1) * r)
            .filter(|&i| i < self.k)
            .collect()
    }
}

/// The damped inverse of `XᵀX` (`K×K`, row-major f64), `damp` relative to its mean
/// diagonal; inputs that never fired (zero diagonal) get a unit diagonal.
pub fn damped_inverse(h: &[f64], k: usize, damp: f64) -> Option<Mat<f64>> {
    if h.len() != k * k || h.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut m = Mat::<f64>::from_fn(k, k, |i, j| h[i * k + j]);
    for i in 0..k {
        if m[(i, i)] <= 0.0 {
            m[(i, i)] = 1.0;
        }
    }
    let mean = (0..k).map(|i| m[(i, i)]).sum::<f64>() / k.max(1) as f64;
    let mut d = damp.max(1e-10) * mean;
    for _ in 0..8 {
        let mut md = m.clone();
        for i in 0..k {
            md[(i, i)] += d;
        }
        if let Ok(llt) = md.llt(Side::Lower) {
            let inv = llt.solve(Mat::<f64>::identity(k, k));
            if (0..k).all(|i| inv[(i, i)] > 0.0 && inv[(i, i)].is_finite()) {
                return Some(inv);
            }
        }
        d *= 10.0;
    }
    None
}

/// `tr(WᵀHW)`: the output energy of the layer on the calibration data.
pub fn energy(h: &[f64], w: &ConsumerMat) -> f64 {
    quadratic(h, &w.w, w.k, w.n)
}

/// `tr(WᵀHW)` of a `K×N` row-major `w` under a `K×K` row-major `h` (`‖X·W‖²` summed over the
/// calibration rows when `h = XᵀX`); NaN when the sizes do not match.
pub fn quadratic(h: &[f64], w: &[f64], k: usize, n: usize) -> f64 {
    if h.len() != k * k || w.len() != k * n {
        return f64::NAN;
    }
    if k == 0 || n == 0 {
        return 0.0;
    }
    let hm = faer::MatRef::from_row_major_slice(h, k, k);
    let wm = faer::MatRef::from_row_major_slice(w, k, n);
    let hw = hm * wm;
    let mut e = 0.0;
    for i in 0..k {
        for c in 0..n {
            e += hw[(i, c)] * w[i * n + c];
        }
    }
    e
}

/// Why the inverse-Hessian factor of [`inverse_upper_cholesky`] could not be formed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FactorError {
    /// `XᵀX` does not have `K×K` entries.
    #[error("XᵀX has {got} entries, not {want}×{want}")]
    Shape {
        /// Entries given.
        got: usize,
        /// `K`.
        want: usize,
    },
    /// `XᵀX` holds a NaN or an infinity.
    #[error("XᵀX has a non-finite entry")]
    NonFinite,
    /// A Cholesky pivot was not positive (raise `damp`).
    #[error("XᵀX + damping is not positive definite (pivot {index}); try a larger damp")]
    NotPositiveDefinite {
        /// The pivot.
        index: usize,
    },
}

fn llt_error(e: faer::linalg::cholesky::llt::factor::LltError) -> FactorError {
    match e {
        faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => {
            FactorError::NotPositiveDefinite { index }
        }
    }
}

/// The upper Cholesky factor `U` of the damped inverse Hessian, `(H + δI)⁻¹ = UᵀU`, that
/// drives the column-by-column updates of GPTQ and SparseGPT (the same machinery as
/// `pare_quantize::gptq`): inputs that never fired (`H_jj = 0`) get `H_jj = 1`, which
/// decouples them; `δ = damp · mean(diag H)`; `H⁻¹` comes from a Cholesky factorization
/// and `U` from a second one of `H⁻¹`. Row `i` of `U` scaled by `1/U_ii` is how eliminating
/// input `i` moves the inputs after it, and `U_ii² = [(H_{i:,i:})⁻¹]_00`, the inverse
/// Hessian diagonal of input `i` once the inputs before it are fixed.
pub fn inverse_upper_cholesky(h: &[f64], k: usize, damp: f64) -> Result<Mat<f64>, FactorError> {
    if h.len() != k * k {
        return Err(FactorError::Shape {
            got: h.len(),
            want: k,
        });
    }
    if h.iter().any(|x| !x.is_finite()) {
        return Err(FactorError::NonFinite);
    }
    let mut hm = Mat::<f64>::from_fn(k, k, |i, j| h[i * k + j]);
    for j in 0..k {
        if hm[(j, j)] == 0.0 {
            hm[(j, j)] = 1.0;
        }
    }
    let mean_diag = (0..k).map(|j| hm[(j, j)]).sum::<f64>() / k.max(1) as f64;
    let d = damp * mean_diag;
    for j in 0..k {
        hm[(j, j)] += d;
    }
    let hinv = hm.llt(Side::Lower).map_err(llt_error)?.inverse();
    let u = hinv
        .llt(Side::Lower)
        .map_err(llt_error)?
        .L()
        .transpose()
        .to_owned();
    if (0..k).any(|i| !(u[(i, i)] > 0.0 && u[(i, i)].is_finite())) {
        return Err(FactorError::NonFinite);
    }
    Ok(u)
}

/// `Σ_{r∈rows} H_rr·‖W_r‖²`: the output energy of those rows alone (the diagonal part).
pub fn diagonal_energy(h: &[f64], w: &ConsumerMat, rows: &[usize]) -> f64 {
    let (k, n) = (w.k, w.n);
    rows.iter()
        .map(|&r| {
            let norm: f64 = w.w[r * n..(r + 1) * n].iter().map(|x| x * x).sum();
            h[r * k + r] * norm
        })
        .sum()
}

/// The Optimal-Brain-Surgeon cost of deleting `rows` (with the best update of the others):
/// `tr(W_Sᵀ (H⁻¹_SS)⁻¹ W_S)`.
pub fn obs_cost(hinv: &Mat<f64>, w: &ConsumerMat, rows: &[usize]) -> Option<f64> {
    let s = rows.len();
    if s == 0 {
        return Some(0.0);
    }
    let a = Mat::<f64>::from_fn(s, s, |i, j| hinv[(rows[i], rows[j])]);
    let ws = Mat::<f64>::from_fn(s, w.n, |i, c| w.w[rows[i] * w.n + c]);
    let x = a.llt(Side::Lower).ok()?.solve(&ws);
    let mut cost = 0.0;
    for i in 0..s {
        for c in 0..w.n {
            cost += ws[(i, c)] * x[(i, c)];
        }
    }
    Some(cost.max(0.0))
}

/// Deletes `rows` from the layer's input and updates the other rows so that the output on
/// the calibration data changes least: `ΔW = −H⁻¹_{:,S} (H⁻¹_SS)⁻¹ W_S` (the least-squares
/// solution `W_R += H_RR⁻¹ H_RS W_S`). The deleted rows are left zero.
pub fn reconstruct(hinv: &Mat<f64>, w: &mut ConsumerMat, rows: &[usize]) -> Option<()> {
    let s = rows.len();
    if s == 0 {
        return Some(());
    }
    let (k, n) = (w.k, w.n);
    let a = Mat::<f64>::from_fn(s, s, |i, j| hinv[(rows[i], rows[j])]);
    let ws = Mat::<f64>::from_fn(s, n, |i, c| w.w[rows[i] * n + c]);
    let x = a.llt(Side::Lower).ok()?.solve(&ws);
    let hs = Mat::<f64>::from_fn(k, s, |i, j| hinv[(i, rows[j])]);
    let delta = &hs * &x;
    for i in 0..k {
        for c in 0..n {
            w.w[i * n + c] -= delta[(i, c)];
        }
    }
    for &r in rows {
        w.w[r * n..(r + 1) * n].fill(0.0);
    }
    w.w.iter().all(|x| x.is_finite()).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(k: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2000) as f64 / 1000.0 - 1.0
        };
        let x: Vec<f64> = (0..3 * k * k).map(|_| next()).collect();
        let rows = 3 * k;
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

    fn mat(k: usize, n: usize, seed: u64) -> ConsumerMat {
        let v: Vec<f32> = (0..k * n)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        ConsumerMat::new(&Tensor::from_vec(vec![k, n], v), Layout::KN).expect("matrix")
    }

    #[test]
    fn layouts_round_trip() {
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        for (shape, layout) in [
            (vec![4, 6], Layout::KN),
            (vec![4, 6], Layout::NK),
            (vec![2, 3, 2, 2], Layout::Conv { taps: 0 }),
        ] {
            let t = Tensor::from_vec(shape.clone(), v.clone());
            let m = ConsumerMat::new(&t, layout).expect("reads");
            assert_eq!(m.k * m.n, 24);
            assert_eq!(m.to_tensor().to_vec::<f32>().expect("f32"), v);
        }
        // Conv [N=2, C=3, 2, 2]: channel 1 owns rows 4..8, and row 4+t, column n is w[n,1,t].
        let t = Tensor::from_vec(vec![2, 3, 2, 2], v);
        let m = ConsumerMat::new(&t, Layout::Conv { taps: 0 }).expect("reads");
        assert_eq!(m.rows_of(&[1]), vec![4, 5, 6, 7]);
        assert_eq!(m.w[5 * 2 + 1], 12.0 + 4.0 + 1.0);
    }

    /// The OBS cost is the output energy left after the least-squares update, and the
    /// update beats simply deleting the rows.
    #[test]
    fn obs_cost_is_the_energy_of_the_reconstruction_error() {
        let k = 6;
        let h = spd(k, 7);
        let w = mat(k, 3, 11);
        let hinv = damped_inverse(&h, k, 1e-12).expect("inverse");
        let rows = [1usize, 4];
        let cost = obs_cost(&hinv, &w, &rows).expect("cost");
        let mut r = w.clone();
        reconstruct(&hinv, &mut r, &rows).expect("reconstructs");
        let diff = w.minus(&r);
        let err = energy(&h, &diff);
        assert!(
            (err - cost).abs() <= 1e-6 * cost.max(1.0),
            "{err} vs {cost}"
        );
        let mut zeroed = w.clone();
        for &i in &rows {
            zeroed.w[i * 3..(i + 1) * 3].fill(0.0);
        }
        let plain = energy(&h, &w.minus(&zeroed));
        assert!(err < plain, "{err} vs {plain}");
        assert!((diagonal_energy(&h, &w, &rows) - plain).abs() > 0.0 || plain == 0.0);
    }
}
