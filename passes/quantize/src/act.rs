//! Activation quantization: the calibration range rules and the activation grid.
//!
//! Static int8 quantizes an activation tensor with one scale (and zero point) fitted to the
//! calibration statistics of that tensor ([`pare_analysis::ValueStats`]: min/max and a
//! 2048-bin histogram over all calibration samples). The range `[lo, hi]` is chosen by one of
//! four rules ([`Calibrate`]), then widened to contain 0 and turned into a grid exactly as
//! onnxruntime's `compute_scale_zp` does ([`ActGrid::fit`]):
//!
//! - asymmetric (default, onnxruntime's activation convention): uint8 codes `[0, 255]`,
//!   `scale = (hi - lo) / 255`, `zero_point = round(-lo / scale)`;
//! - symmetric (`act-symmetric=true`): int8 codes, `scale = max(|lo|, |hi|) / 127`, zero point 0.
//!
//! The histogram rules of `pare-analysis` are symmetric (they work on the histogram of `|x|`).
//! Activations are often one-sided (after ReLU, sigmoid, softmax), and a symmetric range would
//! waste half of the uint8 codes on them, so for asymmetric grids:
//! - a one-sided tensor (`min ≥ 0`, or `max ≤ 0`) uses the rule on `|x|` with one more bit
//!   (255 levels on one side, as the uint8 grid has) and gets `[0, t]` (or `[-t, 0]`);
//! - a two-sided tensor gets `mse` from a search over asymmetric ranges ([`mse_range_asym`]),
//!   `percentile` cuts `(100 - p)/2` percent on each side, and `entropy` keeps the symmetric
//!   KL threshold intersected with the observed `[min, max]`.
//!
//! Every rule's range is clipped to the observed `[min, max]` (a histogram bin edge can lie
//! slightly outside it), so no rule ever widens the min-max range.

use pare_analysis::{Histogram, ValueStats};

/// How the activation range is chosen from the calibration statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibrate {
    /// The observed minimum and maximum (onnxruntime's default `MinMax`).
    MinMax,
    /// Keep this percentage of the values (e.g. 99.99), clipping the tails.
    Percentile(f64),
    /// Minimize the expected squared quantization error (rounding + clipping).
    Mse,
    /// TensorRT's KL-divergence threshold (onnxruntime's `Entropy`).
    Entropy,
}

impl Calibrate {
    /// The option spelling, with the percentile when there is one.
    pub fn name(&self) -> String {
        match self {
            Calibrate::MinMax => "minmax".into(),
            Calibrate::Percentile(p) => format!("percentile {p}"),
            Calibrate::Mse => "mse".into(),
            Calibrate::Entropy => "entropy".into(),
        }
    }
}

/// The grid of one activation tensor: `x ≈ (q - zero) · scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActGrid {
    /// Step (f32, as stored).
    pub scale: f32,
    /// Zero point (0 when symmetric).
    pub zero: i32,
    /// int8 codes with zero point 0 (true) or uint8 codes (false).
    pub symmetric: bool,
}

impl ActGrid {
    /// The grid for the range `[lo, hi]`, as onnxruntime's `compute_scale_zp`: the range is
    /// widened to contain 0; asymmetric: `scale = (hi - lo)/255`, `zero = round(-lo/scale)`
    /// clamped to `[0, 255]`; symmetric: `scale = max(|lo|, |hi|)/127`, zero 0. An empty or
    /// non-finite range gives scale 1 and zero point 0.
    pub fn fit(lo: f32, hi: f32, symmetric: bool) -> ActGrid {
        let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
        let bad = ActGrid {
            scale: 1.0,
            zero: 0,
            symmetric,
        };
        if !(lo.is_finite() && hi.is_finite()) || hi - lo <= 0.0 {
            return bad;
        }
        if symmetric {
            let scale = (lo.abs().max(hi) / 127.0) as f32;
            if !(scale.is_finite() && scale > 0.0) {
                return bad;
            }
            ActGrid {
                scale,
                zero: 0,
                symmetric,
            }
        } else {
            let scale = ((hi - lo) / 255.0) as f32;
            if !(scale.is_finite() && scale > 0.0) {
                return bad;
            }
            let zero = (-lo / scale as f64).round_ties_even().clamp(0.0, 255.0) as i32;
            ActGrid {
                scale,
                zero,
                symmetric,
            }
        }
    }

    /// Smallest and largest code.
    pub fn code_range(&self) -> (i32, i32) {
        if self.symmetric {
            (-128, 127)
        } else {
            (0, 255)
        }
    }

    /// `dequantize(quantize(x))` as QuantizeLinear / DequantizeLinear compute it in f32.
    pub fn fake_quant(&self, x: f32) -> f32 {
        let (qmin, qmax) = self.code_range();
        let q =
            ((x / self.scale).round_ties_even() + self.zero as f32).clamp(qmin as f32, qmax as f32);
        (q - self.zero as f32) * self.scale
    }

    /// The smallest and largest representable values.
    pub fn representable(&self) -> (f32, f32) {
        let (qmin, qmax) = self.code_range();
        (
            (qmin - self.zero) as f32 * self.scale,
            (qmax - self.zero) as f32 * self.scale,
        )
    }
}

/// The range `[lo, hi]` that `method` picks for a tensor with statistics `st` and a grid of
/// the given symmetry; `None` when no finite value was observed.
pub fn select_range(st: &ValueStats, method: Calibrate, symmetric: bool) -> Option<(f32, f32)> {
    let (min, max) = st.range()?;
    let h = &st.histogram;
    if method == Calibrate::MinMax || h.total() == 0 || h.threshold() == 0.0 {
        return Some((min, max));
    }
    let one_sided = !symmetric && (min >= 0.0 || max <= 0.0);
    // Bits of the rule on |x|: a one-sided uint8 grid has 255 levels on its side, like a
    // symmetric 9-bit one.
    let bits = if one_sided { 9 } else { 8 };
    let sym_t = |h: &Histogram| -> f32 {
        let (_, t) = match method {
            Calibrate::Percentile(p) => h.percentile_range(p, true),
            Calibrate::Mse => h.mse_range(bits),
            Calibrate::Entropy => h.entropy_range(bits),
            Calibrate::MinMax => (min, max),
        };
        t
    };
    let (lo, hi) = if symmetric || one_sided {
        let t = sym_t(h);
        if one_sided && min >= 0.0 {
            (0.0, t)
        } else if one_sided {
            (-t, 0.0)
        } else {
            (-t, t)
        }
    } else {
        match method {
            Calibrate::Percentile(p) => h.percentile_range(p, false),
            Calibrate::Mse => mse_range_asym(h, min, max),
            _ => {
                let t = sym_t(h);
                (-t, t)
            }
        }
    };
    let (lo, hi) = (lo.max(min), hi.min(max));
    // A rule that collapses the range (all mass in one bin) falls back to min-max.
    if hi - lo <= 0.0 {
        return Some((min, max));
    }
    Some((lo, hi))
}

/// Asymmetric MSE range: the `[lo, hi]` (bin edges, `lo ≤ 0 ≤ hi`, within the observed
/// `[min, max]`) minimizing the expected squared error of a uint8 grid over the histogram:
/// clipping error of the values outside (at their bin centers) plus `scale²/12` for each value
/// inside (uniform rounding noise). Prefix sums of count, sum and sum of squares make every
/// candidate O(1); the search is over all bin-edge pairs. An empty histogram gives
/// `(min, max)`.
pub fn mse_range_asym(h: &Histogram, min: f32, max: f32) -> (f32, f32) {
    let n = h.bins();
    let w = h.bin_width();
    let counts = h.counts();
    if h.total() == 0 || w <= 0.0 || !(min.is_finite() && max.is_finite()) {
        return (min, max);
    }
    // Prefix sums over bins of count, count·c, count·c² (c = bin center).
    let mut pc = vec![0f64; n + 1];
    let mut px = vec![0f64; n + 1];
    let mut pxx = vec![0f64; n + 1];
    for i in 0..n {
        let (a, b) = h.bin_edges(i);
        let c = 0.5 * (a + b);
        let k = counts[i] as f64;
        pc[i + 1] = pc[i] + k;
        px[i + 1] = px[i] + k * c;
        pxx[i + 1] = pxx[i] + k * c * c;
    }
    let half = n / 2; // bin `half` starts at 0
    let t = h.threshold();
    // Candidate lower edges: edge index e in [lo_first, half] (value -t + e·w ≤ 0); upper
    // edges e in [half, hi_last] (value ≥ 0); limited to the observed range.
    let edge = |e: usize| -t + e as f64 * w;
    let lo_first = (0..=half)
        .find(|&e| edge(e + 1) > min as f64 || e == half)
        .unwrap_or(half);
    let hi_last = (half..=n)
        .rev()
        .find(|&e| e == half || edge(e - 1) < max as f64)
        .unwrap_or(n);
    let total = pc[n];
    let mut best = (f64::INFINITY, min as f64, max as f64);
    for el in lo_first..=half {
        let lo = edge(el).max(min as f64).min(0.0);
        // Values in bins below el are clipped to lo.
        let below = pxx[el] - 2.0 * lo * px[el] + lo * lo * pc[el];
        for eh in half..=hi_last {
            let hi = edge(eh).min(max as f64).max(0.0);
            if hi - lo <= 0.0 {
                continue;
            }
            let s = (hi - lo) / 255.0;
            let above =
                (pxx[n] - pxx[eh]) - 2.0 * hi * (px[n] - px[eh]) + hi * hi * (pc[n] - pc[eh]);
            let inside = total - pc[el] - (pc[n] - pc[eh]);
            let err = below + above + inside * s * s / 12.0;
            if err < best.0 {
                best = (err, lo, hi);
            }
        }
    }
    (best.1 as f32, best.2 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(data: &[f32]) -> ValueStats {
        let mut h = Histogram::new(2048);
        h.add(data);
        ValueStats {
            min: data.iter().copied().fold(f32::INFINITY, f32::min),
            max: data.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            count: data.len() as u64,
            nonfinite: 0,
            sum: data.iter().map(|&x| x as f64).sum(),
            sum_sq: data.iter().map(|&x| (x as f64) * (x as f64)).sum(),
            histogram: h,
        }
    }

    /// Deterministic N(0,1) samples (xorshift + Box-Muller).
    fn normal(n: usize, mut s: u64) -> Vec<f32> {
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (a, b) = (u(), u());
                ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn grid_matches_onnxruntime_convention() {
        // [-1, 3]: scale 4/255, zero round(255/4) = 64.
        let g = ActGrid::fit(-1.0, 3.0, false);
        assert_eq!(g.scale, (4.0f64 / 255.0) as f32);
        assert_eq!(g.zero, 64);
        // Widened to contain 0.
        let g = ActGrid::fit(0.5, 2.55, false);
        assert_eq!((g.scale, g.zero), (0.01, 0));
        let g = ActGrid::fit(-2.54, 1.0, true);
        assert_eq!((g.scale, g.zero), (0.02, 0));
        assert_eq!(g.fake_quant(100.0), 2.54);
        assert_eq!(g.fake_quant(-100.0), -2.56);
        assert_eq!(ActGrid::fit(0.0, 0.0, false).scale, 1.0);
        assert_eq!(ActGrid::fit(f32::NEG_INFINITY, 1.0, false).scale, 1.0);
        // 0 is exact on the asymmetric grid.
        assert_eq!(ActGrid::fit(-0.37, 5.1, false).fake_quant(0.0), 0.0);
    }

    #[test]
    fn rules_clip_outliers_and_respect_the_observed_range() {
        let mut x = normal(20000, 7);
        x.push(40.0); // one outlier
        let st = stats(&x);
        let mm = select_range(&st, Calibrate::MinMax, false).unwrap();
        assert_eq!(mm, (st.min, 40.0));
        // MSE keeps a single far outlier (clipping it costs more than the coarser grid), but
        // never leaves the observed range.
        let (lo, hi) = select_range(&st, Calibrate::Mse, false).unwrap();
        assert!(lo >= st.min && hi <= st.max && lo < -2.0, "mse: {lo} {hi}");
        for m in [Calibrate::Percentile(99.9), Calibrate::Entropy] {
            let (lo, hi) = select_range(&st, m, false).unwrap();
            assert!(lo >= st.min && hi <= st.max, "{m:?}: {lo} {hi}");
            assert!(hi < 10.0, "{m:?} kept the outlier: {hi}");
            assert!(hi > 2.0 && lo < -2.0, "{m:?} clipped too much: {lo} {hi}");
            let (slo, shi) = select_range(&st, m, true).unwrap();
            assert!(
                slo < -2.0 && shi > 2.0 && shi < 10.0,
                "{m:?} sym: {slo} {shi}"
            );
        }
    }

    #[test]
    fn one_sided_tensors_get_one_sided_ranges() {
        // ReLU of a normal: min 0.
        let x: Vec<f32> = normal(20000, 3).into_iter().map(|v| v.max(0.0)).collect();
        let st = stats(&x);
        for m in [
            Calibrate::Percentile(99.99),
            Calibrate::Mse,
            Calibrate::Entropy,
        ] {
            let (lo, hi) = select_range(&st, m, false).unwrap();
            assert_eq!(lo, 0.0, "{m:?}");
            assert!(hi > 1.0 && hi <= st.max, "{m:?}: {hi}");
        }
    }

    #[test]
    fn asymmetric_mse_never_loses_to_minmax_and_clips_rare_far_outliers() {
        // Skewed and heavy-tailed: cubes of a normal, the negative side shrunk. The 8-bit
        // grid is fine enough that the best range stays wide, but never worse than min-max.
        let x: Vec<f32> = normal(30000, 11)
            .into_iter()
            .map(|v| if v > 0.0 { v * v * v } else { 0.2 * v * v * v })
            .collect();
        let st = stats(&x);
        let err = |(lo, hi): (f32, f32)| -> f64 {
            let g = ActGrid::fit(lo, hi, false);
            x.iter()
                .map(|&v| ((g.fake_quant(v) - v) as f64).powi(2))
                .sum::<f64>()
        };
        let mse = mse_range_asym(&st.histogram, st.min, st.max);
        assert!(mse.0 <= 0.0 && mse.1 >= 0.0, "{mse:?}");
        assert!(mse.0 >= st.min && mse.1 <= st.max, "{mse:?}");
        assert!(err(mse) <= err((st.min, st.max)), "{mse:?}");
        // Ten million values spread over [-1, 3) and three at 60: clipping the three costs
        // less than a grid stretched to 60.
        let (bins, t) = (2048usize, 64.0f64);
        let w = 2.0 * t / bins as f64;
        let mut counts = vec![0u64; bins];
        let first = ((t - 1.0) / w) as usize;
        let last = ((t + 3.0) / w) as usize;
        for c in &mut counts[first..last] {
            *c = 10_000_000 / (last - first) as u64;
        }
        counts[((t + 60.0) / w) as usize] = 3;
        let h = Histogram::from_parts(counts, t).expect("histogram");
        let (lo, hi) = mse_range_asym(&h, -1.0, 60.1);
        assert!((-1.0..-0.9).contains(&lo), "{lo}");
        // Optimum of 1e7·(hi + 1)²/(255²·12) + 3·(60 - hi)²: hi ≈ 10.5.
        assert!(hi > 9.5 && hi < 11.5, "{hi}");
    }
}
