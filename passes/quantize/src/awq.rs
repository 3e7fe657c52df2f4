//! Activation-aware weight scaling (after Lin et al. 2023, "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration").
//!
//! Input channels that see large activations matter more; scaling their weight columns up by
//! `s_j` before quantization (and the activations down by `1/s_j`, which the graph applies to
//! the dequantized weight) gives them relatively finer steps. `s_j = a_j^α`, normalized so
//! that `max(s)·min(s) = 1`, with `α` searched on a grid to minimize the layer's output error.

use crate::gptq::h_error;
use crate::scheme::{rtn, QuantMatrix, Scheme};

/// The default α grid: 0, 0.1, …, 1.
pub const GRID: [f64; 11] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The outcome of the search.
#[derive(Clone, Debug)]
pub struct AwqResult {
    /// The quantized weight; `col_scale` holds `1/s` unless the best α was 0.
    pub q: QuantMatrix,
    /// The chosen exponent.
    pub alpha: f64,
    /// Its H-weighted output error `tr(ΔW H ΔWᵀ)`.
    pub h_err: f64,
}

/// Per-input-channel activation magnitude from `XᵀX`: the root mean square
/// `sqrt(H_jj / rows)`. (AWQ uses the mean absolute value; the calibration analysis keeps
/// `XᵀX` but no per-channel mean |x|, and the RMS ranks channels the same way for the
/// roughly symmetric activations of linear layers.)
pub fn activation_rms(h: &[f64], k: usize, rows: u64) -> Vec<f64> {
    let rows = rows.max(1) as f64;
    (0..k)
        .map(|j| (h.get(j * k + j).copied().unwrap_or(0.0).max(0.0) / rows).sqrt())
        .collect()
}

/// Searches `grid` for the α minimizing `tr(ΔW H ΔWᵀ)`, where `ΔW` is the error of the
/// dequantized, unscaled weight `Q(W·diag(s))·diag(1/s)` against `w` (`n × k`, row-major).
/// Ties keep the smaller α, so with 0 in the grid the result is never worse than RTN in this
/// measure, and α = 0 is exactly RTN.
pub fn awq(
    w: &[f64],
    n: usize,
    k: usize,
    h: &[f64],
    act: &[f64],
    s: &Scheme,
    grid: &[f64],
) -> AwqResult {
    let floor = act
        .iter()
        .copied()
        .filter(|a| *a > 0.0 && a.is_finite())
        .fold(f64::INFINITY, f64::min);
    let base: Vec<f64> = act
        .iter()
        .map(|&a| {
            if a > 0.0 && a.is_finite() {
                a
            } else if floor.is_finite() {
                floor
            } else {
                1.0
            }
        })
        .collect();
    let mut best: Option<AwqResult> = None;
    for &alpha in grid {
        let raw: Vec<f64> = base.iter().map(|a| a.powf(alpha)).collect();
        let (lo, hi) = raw
            .iter()
            .fold((f64::INFINITY, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        let norm = (lo * hi).sqrt();
        let sc: Vec<f64> = raw
            .iter()
            .map(|x| {
                if norm > 0.0 && norm.is_finite() {
                    x / norm
                } else {
                    1.0
                }
            })
            .collect();
        let inv: Vec<f32> = sc.iter().map(|x| (1.0 / x) as f32).collect();
        let scaled: Vec<f64> = (0..n * k).map(|i| w[i] * sc[i % k.max(1)]).collect();
        let mut q = rtn(&scaled, n, k, s);
        if inv.iter().any(|&x| x != 1.0) {
            q.col_scale = Some(inv);
        }
        let dw: Vec<f64> = q.dequantize().iter().zip(w).map(|(a, b)| a - b).collect();
        let e = h_error(&dw, n, k, h);
        if best.as_ref().is_none_or(|b| e < b.h_err) {
            best = Some(AwqResult { q, alpha, h_err: e });
        }
    }
    best.unwrap_or_else(|| {
        let q = rtn(w, n, k, s);
        let dw: Vec<f64> = q.dequantize().iter().zip(w).map(|(a, b)| a - b).collect();
        AwqResult {
            h_err: h_error(&dw, n, k, h),
            q,
            alpha: 0.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        let w: Vec<f64> = (0..n * k)
            .map(|i| ((i * 7919 % 97) as f64 / 48.0) - 1.0)
            .collect();
        // A diagonal XᵀX with a few outlier channels.
        let mut h = vec![0f64; k * k];
        for j in 0..k {
            h[j * k + j] = if j % 7 == 0 {
                400.0
            } else {
                1.0 + j as f64 * 0.01
            };
        }
        (w, h)
    }

    #[test]
    fn alpha_zero_is_rtn() {
        let (n, k) = (4, 32);
        let (w, h) = data(n, k);
        let s = Scheme {
            bits: 4,
            group: 16,
            symmetric: true,
        };
        let act = activation_rms(&h, k, 10);
        let r = awq(&w, n, k, &h, &act, &s, &[0.0]);
        assert_eq!(r.alpha, 0.0);
        assert_eq!(r.q, rtn(&w, n, k, &s));
        assert!(r.q.col_scale.is_none());
    }

    #[test]
    fn search_never_loses_to_rtn_and_helps_outliers() {
        let (n, k) = (8, 64);
        let (w, h) = data(n, k);
        let s = Scheme {
            bits: 4,
            group: 0,
            symmetric: true,
        };
        let act = activation_rms(&h, k, 10);
        let base = awq(&w, n, k, &h, &act, &s, &[0.0]);
        let r = awq(&w, n, k, &h, &act, &s, &GRID);
        assert!(r.h_err <= base.h_err);
        assert!(r.alpha > 0.0, "outlier channels should be scaled up");
        assert!(r.h_err < base.h_err);
        let inv = r.q.col_scale.as_ref().unwrap();
        assert!(inv[0] < inv[1], "outlier channel 0 gets s > 1");
    }
}
