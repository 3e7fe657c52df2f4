//! A symmetric, fixed-size activation histogram that grows its range by exact bin merging,
//! and the range-selection rules quantization uses on it: percentile, MSE-optimal and
//! entropy (KL divergence, TensorRT-style).
//!
//! # Binning scheme (and why not onnxruntime's)
//!
//! The histogram has `n` bins (even, a power of two; 2048 by default) over
//! `[-threshold, threshold]`, bin `i` covering `[-T + i·w, -T + (i+1)·w)` with `w = 2T/n`
//! (the last bin also holds `+T`). Bin `n/2` starts exactly at 0.
//!
//! When a batch arrives whose absolute maximum exceeds `T`, the threshold is doubled `k` times
//! (`T' = T·2^k`, the smallest such that `T' >= absmax`) and every group of `2^k` old bins is
//! merged into one new bin. Because both ranges are symmetric around 0 and `n` is a power of
//! two, old bin boundaries fall exactly on new ones: the merge is *exact* (no count is split or
//! interpolated), memory stays fixed, and the calibration needs a single interpreter pass.
//!
//! onnxruntime's `HistogramCollector` instead keeps the bin *width* and adds bins on both sides
//! when the range grows (exact too, but the bin count, and memory, grows with the range ratio).
//! A two-pass scheme (ranges first, histograms second) gives the best resolution but runs the
//! model twice. The cost of the doubling scheme is resolution: the final threshold is below
//! twice the true absolute maximum, so at least half of the bins cover the observed range.
//!
//! Non-finite values (NaN, ±inf) are not binned; callers count them separately.

/// Default number of bins.
pub const DEFAULT_BINS: usize = 2048;

/// A symmetric histogram over `[-threshold, threshold]`; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    threshold: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(DEFAULT_BINS)
    }
}

impl Histogram {
    /// An empty histogram with `bins` bins (rounded up to a power of two, at least 2).
    pub fn new(bins: usize) -> Histogram {
        let n = bins.max(2).next_power_of_two();
        Histogram {
            counts: vec![0; n],
            threshold: 0.0,
        }
    }

    /// Builds a histogram from raw parts (counts over `[-threshold, threshold]`). Returns
    /// `None` unless the bin count is an even power of two and the threshold finite and >= 0.
    pub fn from_parts(counts: Vec<u64>, threshold: f64) -> Option<Histogram> {
        let n = counts.len();
        (n >= 2 && n.is_power_of_two() && threshold.is_finite() && threshold >= 0.0)
            .then_some(Histogram { counts, threshold })
    }

    /// Bin counts, from `-threshold` upwards.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Number of bins.
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Current half-range `T`: bins cover `[-T, T]`. 0 while every value seen was 0.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Width of one bin (`2T / bins`).
    pub fn bin_width(&self) -> f64 {
        2.0 * self.threshold / self.counts.len() as f64
    }

    /// Lower and upper edge of bin `i`.
    pub fn bin_edges(&self, i: usize) -> (f64, f64) {
        let w = self.bin_width();
        let lo = -self.threshold + i as f64 * w;
        (lo, lo + w)
    }

    /// Number of values binned.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Grows the range to cover `absmax` (exact merge; see the module docs).
    pub fn grow_to(&mut self, absmax: f64) {
        if !absmax.is_finite() || absmax <= self.threshold {
            return;
        }
        if self.threshold == 0.0 {
            // Everything so far was 0, which is in bin n/2 for any threshold.
            self.threshold = absmax;
            return;
        }
        let mut k = 0u32;
        let mut t = self.threshold;
        while t < absmax {
            t *= 2.0;
            k += 1;
        }
        let n = self.counts.len();
        let half = n / 2;
        let mut merged = vec![0u64; n];
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let j = if k >= 60 {
                if i < half {
                    half - 1
                } else {
                    half
                }
            } else {
                // (i + (2^k - 1)·n/2) >> k, see the module docs.
                let shifted = i as u128 + (((1u128 << k) - 1) * half as u128);
                (shifted >> k) as usize
            };
            merged[j.min(n - 1)] += c;
        }
        self.counts = merged;
        self.threshold = t;
    }

    /// Bin index of a finite `x` within the current range.
    #[inline]
    fn index(&self, x: f64) -> usize {
        let n = self.counts.len();
        if self.threshold == 0.0 {
            return n / 2;
        }
        let f = (x + self.threshold) / self.bin_width();
        if f <= 0.0 {
            0
        } else {
            (f as usize).min(n - 1)
        }
    }

    /// Adds a batch of values (non-finite ones are skipped), growing the range first.
    pub fn add(&mut self, data: &[f32]) {
        let absmax = data
            .iter()
            .filter(|x| x.is_finite())
            .fold(0.0f32, |m, &x| m.max(x.abs()));
        self.grow_to(absmax as f64);
        for &x in data {
            if x.is_finite() {
                let i = self.index(x as f64);
                self.counts[i] += 1;
            }
        }
    }

    /// Adds pre-binned counts computed by [`Histogram::bin_counts`] against this histogram's
    /// current range (used to bin large tensors in parallel).
    pub fn add_counts(&mut self, counts: &[u64]) {
        for (a, b) in self.counts.iter_mut().zip(counts) {
            *a += b;
        }
    }

    /// Counts of `data` (finite values only) in this histogram's current bins, without
    /// adding them. Values outside the range land in the edge bins, so call
    /// [`Histogram::grow_to`] first.
    pub fn bin_counts(&self, data: &[f32]) -> Vec<u64> {
        let mut c = vec![0u64; self.counts.len()];
        for &x in data {
            if x.is_finite() {
                c[self.index(x as f64)] += 1;
            }
        }
        c
    }

    /// The histogram of `|x|`: `bins/2` bins over `[0, threshold]`, all of width
    /// [`Histogram::bin_width`] (exact: bin `n/2` starts at 0).
    pub fn abs_counts(&self) -> Vec<u64> {
        let half = self.counts.len() / 2;
        (0..half)
            .map(|j| self.counts[half + j] + self.counts[half - 1 - j])
            .collect()
    }

    /// Range keeping `percentile` percent of the values.
    ///
    /// Symmetric: `(-t, t)` with `t` the upper edge of the first bin of the `|x|` histogram
    /// at which the cumulative count reaches `percentile`%. Asymmetric: `(lo, hi)` cutting
    /// `(100 - percentile)/2` percent on each side (lower edge of the bin where the CDF
    /// reaches the lower cut, upper edge of the bin where it reaches the upper one). This is
    /// onnxruntime's `percentile` calibration, rounded outwards to whole bins. An empty
    /// histogram gives `(0, 0)`.
    pub fn percentile_range(&self, percentile: f64, symmetric: bool) -> (f32, f32) {
        let total = self.total();
        if total == 0 || self.threshold == 0.0 {
            return (0.0, 0.0);
        }
        let p = (percentile / 100.0).clamp(0.0, 1.0);
        let w = self.bin_width();
        let first_reaching = |counts: &[u64], frac: f64| -> usize {
            let need = frac * total as f64;
            let mut acc = 0u64;
            for (i, &c) in counts.iter().enumerate() {
                acc += c;
                if acc as f64 >= need && acc > 0 {
                    return i;
                }
            }
            counts.len() - 1
        };
        if symmetric {
            let abs = self.abs_counts();
            let j = first_reaching(&abs, p);
            let t = ((j + 1) as f64 * w) as f32;
            (-t, t)
        } else {
            let cut = (1.0 - p) / 2.0;
            let lo_bin = first_reaching(&self.counts, cut);
            let hi_bin = first_reaching(&self.counts, 1.0 - cut);
            (
                self.bin_edges(lo_bin).0 as f32,
                self.bin_edges(hi_bin).1 as f32,
            )
        }
    }

    /// Symmetric range `(-t, t)` minimizing the expected squared error of symmetric uniform
    /// quantization to `bits` bits (`2^(bits-1) - 1` positive levels, scale `t / qmax`,
    /// round to nearest, clamp), over the histogram of `|x|` with each bin's values at the
    /// bin center. Clipping error is included through the clamp. Every bin edge is a
    /// candidate `t`. An empty histogram gives `(0, 0)`.
    pub fn mse_range(&self, bits: u32) -> (f32, f32) {
        let abs = self.abs_counts();
        let w = self.bin_width();
        if self.total() == 0 || w == 0.0 {
            return (0.0, 0.0);
        }
        let qmax = ((1u64 << bits.clamp(1, 31).saturating_sub(1)).max(2) - 1) as f64;
        let nz: Vec<(f64, f64)> = abs
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(j, &c)| ((j as f64 + 0.5) * w, c as f64))
            .collect();
        let mut best = (f64::INFINITY, abs.len() as f64 * w);
        for j in 0..abs.len() {
            let t = (j + 1) as f64 * w;
            let s = t / qmax;
            let err: f64 = nz
                .iter()
                .map(|&(x, c)| {
                    let q = (x / s).round().min(qmax) * s;
                    c * (x - q) * (x - q)
                })
                .sum();
            if err < best.0 {
                best = (err, t);
            }
        }
        (-best.1 as f32, best.1 as f32)
    }

    /// Symmetric range `(-t, t)` minimizing the KL divergence between the clipped `|x|`
    /// distribution and its quantized version with `2^(bits-1)` levels: the TensorRT entropy
    /// calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017), as implemented in
    /// MXNet and onnxruntime (`get_entropy_threshold`): for each candidate number of bins
    /// `i`, `P` is the first `i` bins of the `|x|` histogram with the outliers added to bin
    /// `i-1`; `Q` merges those `i` bins into `2^(bits-1)` groups and spreads each group's
    /// mass evenly over its nonzero bins; both are smoothed (`eps = 1e-4`) and `KL(P||Q)`
    /// picks `i`; `t` is the upper edge of bin `i-1`. An empty histogram gives `(0, 0)`.
    ///
    /// Resolution: `t` is at least `2^(bits-1)` bins of the `|x|` histogram (`bins/2` bins
    /// over `[0, threshold]`), i.e. `threshold / 8` for 8 bits with 2048 bins, as in
    /// TensorRT and onnxruntime.
    pub fn entropy_range(&self, bits: u32) -> (f32, f32) {
        let abs = self.abs_counts();
        let w = self.bin_width();
        if self.total() == 0 || w == 0.0 {
            return (0.0, 0.0);
        }
        let nq = (1usize << bits.clamp(2, 16).saturating_sub(1)).min(abs.len());
        let nb = abs.len();
        // Past the last nonzero bin, P only gains zeros: stop there.
        let last_nz = abs.iter().rposition(|&c| c > 0).unwrap_or(0) + 1;
        if last_nz <= nq {
            let t = (last_nz as f64 * w) as f32;
            return (-t, t);
        }
        let mut suffix = vec![0u64; nb + 1];
        for i in (0..nb).rev() {
            suffix[i] = suffix[i + 1] + abs[i];
        }
        let mut best = (f64::INFINITY, last_nz);
        let mut p = vec![0f64; nb];
        let mut q = vec![0f64; nb];
        for i in nq..=last_nz {
            let sliced = &abs[..i];
            for (d, &c) in p.iter_mut().zip(sliced) {
                *d = c as f64;
            }
            p[i - 1] += suffix[i] as f64;
            // Quantize into nq groups of `merged` bins (the last group takes the rest).
            let merged = i / nq;
            for qi in q.iter_mut().take(i) {
                *qi = 0.0;
            }
            for g in 0..nq {
                let start = g * merged;
                let end = if g == nq - 1 { i } else { start + merged };
                let total: f64 = sliced[start..end].iter().map(|&c| c as f64).sum();
                let nonzero = p[start..end].iter().filter(|&&x| x != 0.0).count();
                if nonzero > 0 {
                    let v = total / nonzero as f64;
                    for k in start..end {
                        if p[k] != 0.0 {
                            q[k] = v;
                        }
                    }
                }
            }
            let kl = match (smooth(&p[..i]), smooth(&q[..i])) {
                (Some(ps), Some(qs)) => kl_divergence(&ps, &qs),
                _ => f64::INFINITY,
            };
            if kl < best.0 {
                best = (kl, i);
            }
        }
        let t = (best.1 as f64 * w) as f32;
        (-t, t)
    }
}

/// Normalizes `x` to a distribution and replaces zeros by `eps`, taking the mass from the
/// nonzero entries (MXNet's `_smooth_distribution`); `None` when impossible.
fn smooth(x: &[f64]) -> Option<Vec<f64>> {
    const EPS: f64 = 1e-4;
    let sum: f64 = x.iter().sum();
    if sum <= 0.0 {
        return None;
    }
    let zeros = x.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = x.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return None;
    }
    Some(
        x.iter()
            .map(|&v| {
                let p = v / sum;
                if v == 0.0 {
                    EPS
                } else {
                    p - eps1
                }
            })
            .collect(),
    )
}

fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            if a <= 0.0 {
                0.0
            } else if b <= 0.0 {
                f64::INFINITY
            } else {
                a * (a / b).ln()
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64* uniform in [0, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.next().max(1e-300);
            let u2 = self.next();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        }
    }

    fn normal_samples(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    #[test]
    fn growth_merges_exactly() {
        let mut h = Histogram::new(16);
        h.add(&[0.1, -0.1, 0.9, -1.0, 0.0]);
        assert_eq!(h.threshold(), 1.0);
        let before = h.counts().to_vec();
        // Grow by 4x: each 4 old bins become one new bin, centered.
        h.grow_to(3.5);
        assert_eq!(h.threshold(), 4.0);
        assert_eq!(h.total(), 5);
        // Old range [-1,1] is now bins 6..10 (width 0.5); check each value's bin directly.
        let mut direct = Histogram::new(16);
        direct.threshold = 4.0;
        for &x in &[0.1f32, -0.1, 0.9, -1.0, 0.0] {
            let i = direct.index(x as f64);
            direct.counts[i] += 1;
        }
        assert_eq!(h.counts(), direct.counts(), "before: {before:?}");
        // A huge growth keeps the sign split at zero.
        h.grow_to(1e30);
        let half = h.bins() / 2;
        assert_eq!(h.counts()[half - 1], 2);
        assert_eq!(h.counts()[half], 3);
        assert_eq!(h.total(), 5);
    }

    #[test]
    fn growth_matches_single_batch_binning() {
        // Binning in two batches with growth equals binning everything at the final range.
        let a: Vec<f32> = normal_samples(10_000, 7);
        let b: Vec<f32> = normal_samples(10_000, 9).iter().map(|x| x * 5.0).collect();
        let mut h = Histogram::new(2048);
        h.add(&a);
        h.add(&b);
        let mut direct = Histogram::new(2048);
        direct.grow_to(h.threshold());
        direct.threshold = h.threshold();
        direct.add(&a);
        direct.add(&b);
        // Values exactly on an old edge may round differently; allow a handful of moves.
        let diff: u64 = h
            .counts()
            .iter()
            .zip(direct.counts())
            .map(|(x, y)| x.abs_diff(*y))
            .sum();
        assert!(diff <= 4, "diff {diff}");
        assert_eq!(h.total(), 20_000);
    }

    #[test]
    fn zeros_then_values() {
        let mut h = Histogram::new(8);
        h.add(&[0.0, 0.0]);
        assert_eq!(h.threshold(), 0.0);
        h.add(&[2.0]);
        assert_eq!(h.threshold(), 2.0);
        assert_eq!(h.counts()[4], 2);
        assert_eq!(h.counts()[7], 1);
        h.add(&[f32::NAN, f32::INFINITY]);
        assert_eq!(h.total(), 3);
    }

    #[test]
    fn percentile_on_uniform_and_normal() {
        // Uniform on [-1, 1]: the symmetric 99% range is about ±0.99.
        let mut r = Rng(42);
        let u: Vec<f32> = (0..200_000)
            .map(|_| (r.next() * 2.0 - 1.0) as f32)
            .collect();
        let mut h = Histogram::default();
        h.add(&u);
        let (lo, hi) = h.percentile_range(99.0, true);
        assert!((hi - 0.99).abs() < 0.01 && lo == -hi, "{lo} {hi}");
        // Asymmetric 90% on uniform: cuts 5% each side, about (-0.9, 0.9).
        let (lo, hi) = h.percentile_range(90.0, false);
        assert!(
            (lo + 0.9).abs() < 0.01 && (hi - 0.9).abs() < 0.01,
            "{lo} {hi}"
        );
        // Standard normal: 99.73% of |x| is within 3 sigma.
        let n = normal_samples(400_000, 3);
        let mut h = Histogram::default();
        h.add(&n);
        let (_, hi) = h.percentile_range(99.73, true);
        assert!((hi - 3.0).abs() < 0.06, "{hi}");
        let (_, hi) = h.percentile_range(95.0, true);
        assert!((hi - 1.96).abs() < 0.03, "{hi}");
    }

    /// Expected squared quantization error of `x` with range ±t (the quantizer of
    /// `mse_range`), computed on the raw samples.
    fn sample_mse(x: &[f32], t: f64, bits: u32) -> f64 {
        let qmax = ((1u64 << (bits - 1)) - 1) as f64;
        let s = t / qmax;
        x.iter()
            .map(|&v| {
                let v = v as f64;
                let q = (v / s).round().clamp(-qmax, qmax) * s;
                (v - q) * (v - q)
            })
            .sum::<f64>()
            / x.len() as f64
    }

    #[test]
    fn mse_range_on_normal() {
        let n = normal_samples(200_000, 11);
        let mut h = Histogram::default();
        h.add(&n);
        // 4 bits: the optimal clip of a Gaussian is about 2.5 sigma (Banner et al., ACIQ,
        // give 2.55 sigma for 2^4 levels; 15 levels here).
        let (lo, hi) = h.mse_range(4);
        assert_eq!(lo, -hi);
        assert!(hi > 2.2 && hi < 2.9, "{hi}");
        // The chosen range is (near) optimal on the samples themselves: brute-force check.
        let best = (100..450)
            .map(|i| i as f64 * 0.01)
            .map(|t| (sample_mse(&n, t, 4), t))
            .fold((f64::INFINITY, 0.0), |a, b| if b.0 < a.0 { b } else { a });
        let chosen = sample_mse(&n, hi as f64, 4);
        assert!(
            chosen <= best.0 * 1.02,
            "chosen {chosen} at {hi}, best {best:?}"
        );
        // Max-range would be clearly worse.
        assert!(sample_mse(&n, h.threshold(), 4) > chosen * 1.5);
        // 8 bits clips less than 4 bits.
        let (_, hi8) = h.mse_range(8);
        assert!(hi8 > hi + 0.5, "{hi8}");
    }

    #[test]
    fn entropy_range_ignores_rare_outliers() {
        // Uniform [-1,1] plus 0.01% outliers at ±8: the KL threshold stays near 1, far
        // below the absolute maximum. (Thresholds below 2^(bits-1) bins of the |x| histogram
        // cannot be chosen, so the outliers must stay within 1024/128 = 8x the bulk.)
        let mut r = Rng(5);
        let mut x: Vec<f32> = (0..200_000)
            .map(|_| (r.next() * 2.0 - 1.0) as f32)
            .collect();
        for i in 0..20 {
            x.push(if i % 2 == 0 { 8.0 } else { -8.0 });
        }
        let mut h = Histogram::default();
        h.add(&x);
        let (lo, hi) = h.entropy_range(8);
        assert_eq!(lo, -hi);
        assert!(hi > 0.9 && hi < 1.3, "{hi}");
        // On a Gaussian, the 8-bit entropy threshold is a few sigma, below the max.
        let n = normal_samples(400_000, 13);
        let mut h = Histogram::default();
        h.add(&n);
        let absmax = n.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (_, t) = h.entropy_range(8);
        assert!(t > 2.0 && t < absmax, "{t} vs max {absmax}");
        // Fewer bits clip harder.
        let (_, t4) = h.entropy_range(4);
        assert!(t4 < t, "{t4} {t}");
    }

    #[test]
    fn empty_histogram_ranges() {
        let h = Histogram::default();
        assert_eq!(h.percentile_range(99.9, true), (0.0, 0.0));
        assert_eq!(h.mse_range(8), (0.0, 0.0));
        assert_eq!(h.entropy_range(8), (0.0, 0.0));
    }
}
