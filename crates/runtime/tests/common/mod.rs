//! Helpers shared by the kernel tests (`mod common;` in each test file): deterministic inputs,
//! the tolerance check, and the f64 reference of every epilogue activation.
#![allow(dead_code)] // each test binary uses a subset

use pare_runtime::Activation;

/// Deterministic values in [-1, 1).
pub fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `n` deterministic values in `[lo, hi]` (xorshift32 from `seed`): the int8 kernels' tests
/// and `qconv_bench`.
pub fn fill_range(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (hi - lo) * (s % 10_007) as f32 / 10_006.0
        })
        .collect()
}

pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

pub fn dims(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * scale;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{ctx}: element {i}: got {g}, want {w} (tol {tol})");
    }
}

pub fn act_ref(a: Activation, v: f32) -> f32 {
    let x = v as f64;
    let r = match a {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Clamp { min, max } => x.max(min as f64).min(max as f64),
        Activation::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha as f64 * x
            } else {
                x
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
    };
    r as f32
}

pub const ACTS: [Activation; 10] = [
    Activation::Identity,
    Activation::Relu,
    Activation::Clamp {
        min: -0.5,
        max: 0.75,
    },
    Activation::LeakyRelu { alpha: 0.1 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    },
    Activation::HardSwish,
];
