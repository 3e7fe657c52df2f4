//! Fused epilogues: what happens to each output element after `alpha*A·B + beta*C`.
//!
//! Order, per element `(i, j)`: `v = alpha*(A·B)[i,j] + beta*C[i,j]`, then `+ bias`, then
//! `+ residual[i,j]`, then the activation. The scalar activation functions here are written
//! branch-free from `+ * floor min max` and bit casts so that LLVM vectorizes them when they are
//! inlined into the AVX2 kernel; they are within about 2e-7 absolute of the exact functions
//! (see the tests).

use crate::GemmError;

/// Elementwise activation applied last in the epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    /// `x`.
    #[default]
    Identity,
    /// `max(x, 0)` (NaN stays NaN).
    Relu,
    /// `min(max(x, min), max)`: ONNX Clip, Relu6 is `Clamp { min: 0, max: 6 }`.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x` if `x >= 0` else `alpha * x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// ONNX Gelu, `approximate="none"`: `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// ONNX Gelu, `approximate="tanh"`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// ONNX HardSigmoid: `clamp(alpha x + beta, 0, 1)`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// ONNX HardSwish: `x clamp(x / 6 + 1/2, 0, 1)`.
    HardSwish,
}

impl Activation {
    /// True for activations the kernels apply in vector registers before the store; the others
    /// are applied by a second (vectorized) pass over the just-stored, cache-hot tile.
    pub(crate) fn is_simple(&self) -> bool {
        matches!(
            self,
            Activation::Identity
                | Activation::Relu
                | Activation::Clamp { .. }
                | Activation::LeakyRelu { .. }
                | Activation::HardSigmoid { .. }
                | Activation::HardSwish
        )
    }

    pub(crate) fn validate(&self) -> Result<(), GemmError> {
        match *self {
            Activation::Clamp { min, max } => {
                if min.is_nan() || max.is_nan() {
                    Err(GemmError::Activation("clamp bound is NaN"))
                } else if min > max {
                    Err(GemmError::Activation("clamp min > max"))
                } else {
                    Ok(())
                }
            }
            Activation::LeakyRelu { alpha } if alpha.is_nan() => {
                Err(GemmError::Activation("leaky relu alpha is NaN"))
            }
            Activation::HardSigmoid { alpha, beta } if alpha.is_nan() || beta.is_nan() => {
                Err(GemmError::Activation("hard sigmoid parameter is NaN"))
            }
            _ => Ok(()),
        }
    }

    /// The activation of one value.
    #[inline(always)]
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Activation::Identity => x,
            Activation::Relu => relu(x),
            Activation::Clamp { min, max } => clamp(x, min, max),
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::HardSigmoid { alpha, beta } => hard_sigmoid(x, alpha, beta),
            Activation::HardSwish => x * hard_sigmoid(x, 1.0 / 6.0, 0.5),
        }
    }

    /// Applies the activation to every element of `xs`: the [`avx2`] vector form where the
    /// CPU has it and the activation is [`Activation::is_simple`], else the scalar functions.
    /// Inlined into the caller so that the scalar functions (Sigmoid, Tanh, Gelu) are
    /// vectorized with the caller's target features.
    #[inline(always)]
    pub(crate) fn apply_slice(&self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.is_simple() && avx2::available() {
            // SAFETY: AVX2 and FMA were detected on this CPU.
            unsafe { avx2::act_slice(xs, *self) };
            return;
        }
        self.apply_slice_scalar(xs);
    }

    /// [`Activation::apply_slice`] without the vector path (the reference the vector forms are
    /// tested against, and the path of the activations that have no vector form).
    #[inline(always)]
    pub(crate) fn apply_slice_scalar(&self, xs: &mut [f32]) {
        match *self {
            Activation::Identity => {}
            Activation::Relu => xs.iter_mut().for_each(|x| *x = relu(*x)),
            Activation::Clamp { min, max } => xs.iter_mut().for_each(|x| *x = clamp(*x, min, max)),
            Activation::LeakyRelu { alpha } => xs.iter_mut().for_each(|x| {
                if *x < 0.0 {
                    *x *= alpha
                }
            }),
            Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = sigmoid(*x)),
            Activation::Tanh => xs.iter_mut().for_each(|x| *x = tanh(*x)),
            Activation::Gelu => xs.iter_mut().for_each(|x| *x = gelu(*x)),
            Activation::GeluTanh => xs.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
            Activation::HardSigmoid { alpha, beta } => xs
                .iter_mut()
                .for_each(|x| *x = hard_sigmoid(*x, alpha, beta)),
            Activation::HardSwish => xs
                .iter_mut()
                .for_each(|x| *x *= hard_sigmoid(*x, 1.0 / 6.0, 0.5)),
        }
    }
}

/// AVX2 forms of the activations, shared by the f32 GEMM, the int8 GEMM and the convolution
/// kernels: [`act`](avx2::act) on one register in a kernel's epilogue, and
/// [`act_slice`](avx2::act_slice) over a stored row. They are NaN-preserving like the scalar
/// functions (`min`/`max` return their second operand when either is NaN, so the value goes
/// second) and use one FMA where the scalar HardSigmoid/HardSwish multiply and add (a
/// difference of at most one rounding).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::Activation;
    use core::arch::x86_64::*;

    /// 16 all-ones lanes then 16 zero lanes: `MASKS[16-n..][..8]` and `MASKS[24-n..][..8]`
    /// mask the first `n` of 16 lanes.
    pub(crate) static MASKS: [i32; 32] = [
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0,
    ];

    /// Whether this CPU runs [`act`] and [`act_slice`] (AVX2 and FMA; cached by std).
    #[inline(always)]
    pub(crate) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `act` of the 8 lanes of `a`. The [`Activation::is_simple`] ones are a few vector
    /// operations; the others go through the scalar functions lane by lane.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA (the caller is compiled with them).
    #[inline(always)]
    pub(crate) unsafe fn act(a: __m256, act: Activation) -> __m256 {
        // SAFETY: AVX2/FMA by the contract; `t` holds 8 floats.
        unsafe {
            let zero = _mm256_setzero_ps();
            match act {
                Activation::Identity => a,
                // max(0, a) returns a when a is NaN.
                Activation::Relu => _mm256_max_ps(zero, a),
                Activation::Clamp { min, max } => {
                    _mm256_min_ps(_mm256_set1_ps(max), _mm256_max_ps(_mm256_set1_ps(min), a))
                }
                Activation::LeakyRelu { alpha } => {
                    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(a, zero);
                    _mm256_blendv_ps(a, _mm256_mul_ps(a, _mm256_set1_ps(alpha)), neg)
                }
                Activation::HardSigmoid { alpha, beta } => {
                    let h = _mm256_fmadd_ps(a, _mm256_set1_ps(alpha), _mm256_set1_ps(beta));
                    _mm256_min_ps(_mm256_set1_ps(1.0), _mm256_max_ps(zero, h))
                }
                Activation::HardSwish => {
                    let h = _mm256_fmadd_ps(a, _mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5));
                    let h = _mm256_min_ps(_mm256_set1_ps(1.0), _mm256_max_ps(zero, h));
                    _mm256_mul_ps(a, h)
                }
                other => {
                    let mut t = [0.0f32; 8];
                    _mm256_storeu_ps(t.as_mut_ptr(), a);
                    other.apply_slice_scalar(&mut t);
                    _mm256_loadu_ps(t.as_ptr())
                }
            }
        }
    }

    /// Applies `activation` to `v` in place, as [`act`] does: 8 lanes at a time, the tail
    /// masked, the activation's dispatch outside the loop; the activations without a vector
    /// form run the scalar loop.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn act_slice(v: &mut [f32], activation: Activation) {
        macro_rules! each {
            ($a:expr) => {{
                let a = $a;
                let n = v.len();
                let p = v.as_mut_ptr();
                let mut i = 0;
                while i + 8 <= n {
                    // SAFETY: AVX2 by contract; floats i..i + 8 <= n of `v`.
                    unsafe { _mm256_storeu_ps(p.add(i), act(_mm256_loadu_ps(p.add(i)), a)) };
                    i += 8;
                }
                if i < n {
                    // SAFETY: AVX2 by contract; the mask (from MASKS[16 - k..24 - k], in
                    // bounds) has k = n - i < 8 leading ones: only floats i..n are touched.
                    unsafe {
                        let m =
                            _mm256_loadu_si256(MASKS.as_ptr().add(16 - (n - i)) as *const __m256i);
                        let x = act(_mm256_maskload_ps(p.add(i), m), a);
                        _mm256_maskstore_ps(p.add(i), m, x);
                    }
                }
            }};
        }
        match activation {
            Activation::Identity => {}
            Activation::Relu => each!(Activation::Relu),
            Activation::Clamp { min, max } => each!(Activation::Clamp { min, max }),
            Activation::LeakyRelu { alpha } => each!(Activation::LeakyRelu { alpha }),
            Activation::HardSigmoid { alpha, beta } => {
                each!(Activation::HardSigmoid { alpha, beta })
            }
            Activation::HardSwish => each!(Activation::HardSwish),
            other => other.apply_slice_scalar(v),
        }
    }
}

/// A bias broadcast along rows or columns of the output.
#[derive(Debug, Clone, Copy, Default)]
pub enum Bias<'a> {
    /// No bias.
    #[default]
    None,
    /// `bias[j]` added to column `j` (length `n`): the usual Linear/Conv-as-GEMM bias when the
    /// output is `[tokens, features]`.
    PerColumn(&'a [f32]),
    /// `bias[i]` added to row `i` (length `m`): the bias of a convolution computed as
    /// `W[cout, cin*kh*kw] · im2col`.
    PerRow(&'a [f32]),
}

/// A matrix of the output's shape added before the activation (`ld >= n`).
#[derive(Debug, Clone, Copy)]
pub struct Residual<'a> {
    /// Row-major data; element `(i, j)` at `data[i * ld + j]`.
    pub data: &'a [f32],
    /// Leading dimension (row stride).
    pub ld: usize,
}

/// What the kernel does to each output element after the product; see the module doc for the
/// order. `Epilogue::default()` is the plain GEMM.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Bias added after `alpha*A·B + beta*C`.
    pub bias: Bias<'a>,
    /// Matrix added after the bias (a residual connection).
    pub residual: Option<Residual<'a>>,
    /// Applied last.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// Just an activation.
    pub fn activation(activation: Activation) -> Self {
        Epilogue {
            activation,
            ..Epilogue::default()
        }
    }

    /// A bias then an activation.
    pub fn bias(bias: Bias<'a>, activation: Activation) -> Self {
        Epilogue {
            bias,
            residual: None,
            activation,
        }
    }

    /// True when the epilogue does nothing.
    pub fn is_identity(&self) -> bool {
        matches!(self.bias, Bias::None)
            && self.residual.is_none()
            && self.activation == Activation::Identity
    }
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `clamp(alpha x + beta, 0, 1)`, NaN for NaN (as the interpreter's `f32::clamp`).
#[inline(always)]
fn hard_sigmoid(x: f32, alpha: f32, beta: f32) -> f32 {
    clamp(alpha * x + beta, 0.0, 1.0)
}

#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `exp(x)` by Cody-Waite range reduction and the Cephes `expf` polynomial (about 1 ulp on
/// [-87, 88]); inputs are clamped so the result is finite and normal (or NaN for NaN).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let fx = (x * LOG2E + 0.5).floor();
    let r = x - fx * C1 - fx * C2;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    // fx is in [-126, 127] after the clamp, so the biased exponent is in [1, 254].
    let e = (fx as i32 + 127) as u32;
    y * f32::from_bits(e << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    // tanh|x| = 1 - 2/(exp(2|x|) + 1); absolute error ~1e-7, which is what matters after a GEMM.
    let ax = x.abs();
    let t = 1.0 - 2.0 / (exp(2.0 * ax) + 1.0);
    t.copysign(x)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let ax = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * ax);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + tanh(K * (x + 0.044_715 * x * x * x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_err(f: impl Fn(f32) -> f32, r: impl Fn(f64) -> f64, lo: f32, hi: f32) -> f64 {
        let mut worst = 0.0f64;
        let steps = 200_000;
        for s in 0..=steps {
            let x = lo + (hi - lo) * s as f32 / steps as f32;
            let want = r(x as f64);
            let got = f(x) as f64;
            let err = (got - want).abs() / want.abs().max(1.0);
            worst = worst.max(err);
        }
        worst
    }

    /// The AVX2 forms agree with the scalar functions (to the one rounding the FMA saves),
    /// keep NaN, and touch only the slice (every tail length).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_activations_match_the_scalar_ones() {
        if !avx2::available() {
            return;
        }
        let acts = [
            Activation::Relu,
            Activation::Clamp {
                min: -0.5,
                max: 6.0,
            },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::HardSwish,
            Activation::Sigmoid,
        ];
        for act in acts {
            for n in 0..27 {
                let mut xs: Vec<f32> = (0..n + 3).map(|i| (i as f32 - 9.0) * 0.77).collect();
                if n > 4 {
                    xs[4] = f32::NAN;
                }
                let mut want = xs.clone();
                act.apply_slice_scalar(&mut want[..n]);
                let mut got = xs.clone();
                // SAFETY: AVX2 and FMA were detected above.
                unsafe { avx2::act_slice(&mut got[..n], act) };
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                        "{act:?} n={n} [{i}]: {g} vs {w}"
                    );
                }
                assert_eq!(got[n..], xs[n..], "{act:?} n={n}: past the slice");
            }
        }
    }

    #[test]
    fn exp_is_accurate() {
        assert!(
            max_err(exp, f64::exp, -87.0, 88.0) < 1e-6 * 1.0,
            "{}",
            max_err(exp, f64::exp, -87.0, 88.0)
        );
        let rel = (-70..70)
            .map(|i| i as f32 * 1.1)
            .map(|x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0f64, f64::max);
        assert!(rel < 3e-7, "relative error {rel}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite() && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn transcendental_activations_are_accurate() {
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        assert!(max_err(sigmoid, sig, -30.0, 30.0) < 5e-7);
        assert!(max_err(tanh, f64::tanh, -20.0, 20.0) < 5e-7);
        let g = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        assert!(
            max_err(gelu, g, -12.0, 12.0) < 5e-7,
            "{}",
            max_err(gelu, g, -12.0, 12.0)
        );
        let gt = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        };
        assert!(max_err(gelu_tanh, gt, -12.0, 12.0) < 5e-7);
    }

    #[test]
    fn nan_propagates_through_relu_and_clamp() {
        assert!(Activation::Relu.apply(f32::NAN).is_nan());
        assert!(Activation::Clamp { min: 0.0, max: 6.0 }
            .apply(f32::NAN)
            .is_nan());
        assert_eq!(Activation::Clamp { min: 0.0, max: 6.0 }.apply(7.0), 6.0);
        assert_eq!(Activation::LeakyRelu { alpha: 0.1 }.apply(-2.0), -0.2);
    }

    #[test]
    fn clamp_validation() {
        assert!(Activation::Clamp { min: 1.0, max: 0.0 }.validate().is_err());
        assert!(Activation::Clamp {
            min: f32::NAN,
            max: 0.0
        }
        .validate()
        .is_err());
        assert!(Activation::Clamp {
            min: f32::NEG_INFINITY,
            max: 6.0
        }
        .validate()
        .is_ok());
    }
}
