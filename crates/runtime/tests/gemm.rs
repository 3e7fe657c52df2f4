//! SGEMM against a naive f64 reference: edge shapes, transposes, alpha/beta, every epilogue,
//! padded leading dimensions, threads, pre-packed B, both instruction sets, the C ABI, errors,
//! and a proptest over random problems.

use pare_runtime::ffi::*;
use pare_runtime::{
    pack_b, sgemm, sgemm_fused, sgemm_packed, Activation, BOperand, Bias, Epilogue, Gemm,
    GemmError, Isa, PackedB, PackedBRef, Residual,
};
use proptest::prelude::*;

/// Deterministic values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum BiasKind {
    None,
    Col,
    Row,
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    /// Extra elements per row beyond the minimum leading dimension (a, b, c).
    pad: [usize; 3],
    bias: BiasKind,
    residual: bool,
    act: Activation,
    threads: usize,
    isa: Isa,
    packed: bool,
}

impl Case {
    fn new(m: usize, n: usize, k: usize) -> Case {
        Case {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            trans_a: false,
            trans_b: false,
            pad: [0; 3],
            bias: BiasKind::None,
            residual: false,
            act: Activation::Identity,
            threads: 1,
            isa: Isa::Auto,
            packed: false,
        }
    }
}

fn act_ref(act: Activation, x: f64) -> f64 {
    match act {
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
    }
}

/// Runs the case through the Rust API and checks every element of C (and that padding
/// between rows is untouched). Returns the max error / tolerance ratio.
fn check(cs: &Case) -> f64 {
    let Case {
        m,
        n,
        k,
        alpha,
        beta,
        trans_a,
        trans_b,
        pad,
        ..
    } = *cs;
    let (ar, ac) = if trans_a { (k, m) } else { (m, k) };
    let (br, bc) = if trans_b { (n, k) } else { (k, n) };
    let (lda, ldb, ldc) = (ac + pad[0], bc + pad[1], n + pad[2]);
    let a = fill(ar * lda, 1 + (m * 31 + k) as u64);
    let b = fill(br * ldb, 2 + (n * 17 + k) as u64);
    let mut c = fill(m * ldc, 3);
    if beta == 0.0 {
        // beta == 0 must not read C: NaN in it must vanish.
        for (i, x) in c.iter_mut().enumerate() {
            if i % 3 == 0 {
                *x = f32::NAN;
            }
        }
    }
    let c0 = c.clone();
    let bias_v = fill(if cs.bias == BiasKind::Row { m } else { n }, 4);
    let res = fill(m * ldc, 5);
    let bias = match cs.bias {
        BiasKind::None => Bias::None,
        BiasKind::Col => Bias::PerColumn(&bias_v),
        BiasKind::Row => Bias::PerRow(&bias_v),
    };
    let residual = cs.residual.then_some(Residual {
        data: &res,
        ld: ldc,
    });
    let epilogue = Epilogue {
        bias,
        residual,
        activation: cs.act,
    };
    let packed_b;
    let bop = if cs.packed {
        packed_b = pack_b(k, n, &b, ldb, trans_b).unwrap();
        BOperand::Packed(packed_b.as_ref())
    } else {
        BOperand::Dense {
            data: &b,
            ld: ldb,
            trans: trans_b,
        }
    };
    Gemm {
        m,
        n,
        k,
        alpha,
        beta,
        a: &a,
        lda,
        trans_a,
        b: bop,
        epilogue,
        threads: cs.threads,
        isa: cs.isa,
    }
    .run(&mut c, ldc)
    .unwrap();

    let at = |i: usize, p: usize| if trans_a { a[p * lda + i] } else { a[i * lda + p] } as f64;
    let bt = |p: usize, j: usize| if trans_b { b[j * ldb + p] } else { b[p * ldb + j] } as f64;
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0.0f64, 0.0f64);
            if alpha != 0.0 {
                for p in 0..k {
                    s += at(i, p) * bt(p, j);
                    mag += (at(i, p) * bt(p, j)).abs();
                }
            }
            let mut v = alpha as f64 * s;
            mag *= (alpha as f64).abs();
            if beta != 0.0 {
                v += beta as f64 * c0[i * ldc + j] as f64;
                mag += (beta as f64 * c0[i * ldc + j] as f64).abs();
            }
            let bv = match cs.bias {
                BiasKind::None => 0.0,
                BiasKind::Col => bias_v[j] as f64,
                BiasKind::Row => bias_v[i] as f64,
            };
            v += bv;
            mag += bv.abs();
            if cs.residual {
                v += res[i * ldc + j] as f64;
                mag += (res[i * ldc + j] as f64).abs();
            }
            let want = act_ref(cs.act, v);
            let got = c[i * ldc + j] as f64;
            let tol =
                1.2 * (k as f64 + 4.0) * f32::EPSILON as f64 * mag + 2e-6 * (1.0 + want.abs());
            let err = (got - want).abs();
            assert!(
                err <= tol,
                "{cs:?}: C[{i},{j}] = {got}, want {want} (err {err:e} > tol {tol:e})"
            );
            worst = worst.max(err / tol);
        }
        for j in n..ldc {
            let (got, was) = (c[i * ldc + j], c0[i * ldc + j]);
            assert!(
                got == was || (got.is_nan() && was.is_nan()),
                "{cs:?}: padding C[{i},{j}] written"
            );
        }
    }
    worst
}

fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if Isa::detect() == Isa::Avx2Fma {
        v.push(Isa::Avx2Fma);
    }
    v
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 7),
    (7, 1, 1),
    (1, 7, 1),
    (1, 40, 33),
    (2, 3, 4),
    (5, 17, 3),
    (6, 16, 1),
    (6, 16, 8),
    (7, 33, 9),
    (12, 32, 5),
    (13, 15, 257),
    (65, 31, 300),
    (100, 100, 100),
    (150, 40, 520), // crosses MC and two KC boundaries
    (7, 4100, 3),   // crosses NC
    (145, 17, 1),   // k = 1, MC + 1 rows
];

#[test]
fn shapes_both_isas() {
    for isa in isas() {
        for &(m, n, k) in SHAPES {
            check(&Case {
                isa,
                ..Case::new(m, n, k)
            });
        }
    }
}

#[test]
fn transposes_and_padded_leading_dims() {
    for isa in isas() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 33, 9),
            (13, 15, 257),
            (65, 31, 300),
            (1, 40, 33),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for pad in [[0, 0, 0], [3, 1, 5]] {
                        for packed in [false, true] {
                            check(&Case {
                                isa,
                                trans_a: ta,
                                trans_b: tb,
                                pad,
                                packed,
                                ..Case::new(m, n, k)
                            });
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn alpha_beta() {
    for isa in isas() {
        for &(alpha, beta) in &[
            (1.0, 0.0),
            (0.5, 2.0),
            (-1.0, 1.0),
            (0.0, 0.5),
            (0.0, 0.0),
            (2.0, -0.25),
        ] {
            for &(m, n, k) in &[(1, 1, 1), (7, 33, 9), (150, 40, 520)] {
                check(&Case {
                    isa,
                    alpha,
                    beta,
                    pad: [1, 2, 3],
                    ..Case::new(m, n, k)
                });
            }
        }
    }
}

#[test]
fn k_zero_applies_beta_and_epilogue() {
    for isa in isas() {
        for beta in [0.0, 1.5] {
            check(&Case {
                isa,
                beta,
                bias: BiasKind::Col,
                residual: true,
                act: Activation::Relu,
                ..Case::new(5, 9, 0)
            });
        }
    }
    // m == 0 / n == 0: nothing to do, any (empty) buffers are fine.
    sgemm(
        0,
        5,
        3,
        1.0,
        &[],
        3,
        false,
        &[0.0; 15],
        5,
        false,
        0.0,
        &mut [],
        5,
        1,
    )
    .unwrap();
    sgemm(
        4,
        0,
        3,
        1.0,
        &[0.0; 12],
        3,
        false,
        &[],
        0,
        false,
        0.0,
        &mut [],
        0,
        1,
    )
    .unwrap();
}

fn activations() -> Vec<Activation> {
    vec![
        Activation::Identity,
        Activation::Relu,
        Activation::Clamp { min: 0.0, max: 6.0 },
        Activation::Clamp {
            min: -0.3,
            max: 0.2,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::HardSigmoid {
            alpha: 0.3,
            beta: 0.4,
        },
        Activation::HardSwish,
    ]
}

#[test]
fn every_epilogue() {
    for isa in isas() {
        for act in activations() {
            for bias in [BiasKind::None, BiasKind::Col, BiasKind::Row] {
                for residual in [false, true] {
                    for &(m, n, k) in &[(1, 1, 1), (7, 33, 9), (13, 15, 257)] {
                        for beta in [0.0, 0.5] {
                            let case = Case {
                                isa,
                                act,
                                bias,
                                residual,
                                beta,
                                pad: [0, 0, 2],
                                ..Case::new(m, n, k)
                            };
                            check(&case);
                            check(&Case {
                                packed: true,
                                ..case
                            });
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn threads_split_m_and_n() {
    // Big enough (> 4 MFLOP per thread) that the threads are really used.
    for isa in isas() {
        for &(m, n, k) in &[
            (300, 70, 200),
            (64, 500, 130),
            (37, 333, 257),
            (333, 37, 400),
        ] {
            for threads in [2, 3, 0] {
                for packed in [false, true] {
                    check(&Case {
                        isa,
                        threads,
                        packed,
                        beta: 1.0,
                        bias: BiasKind::Row,
                        act: Activation::Gelu,
                        pad: [1, 0, 3],
                        ..Case::new(m, n, k)
                    });
                }
            }
        }
    }
}

#[test]
fn flat_api_matches_gemm() {
    let (m, n, k) = (9, 20, 11);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let bias = fill(n, 3);
    let mut c1 = vec![0.0; m * n];
    let mut c2 = vec![0.0; m * n];
    let mut c3 = vec![0.0; m * n];
    let epi = Epilogue::bias(
        Bias::PerColumn(&bias),
        Activation::Clamp { min: 0.0, max: 6.0 },
    );
    sgemm_fused(
        m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c1, n, &epi, 1,
    )
    .unwrap();
    let pb = pack_b(k, n, &b, n, false).unwrap();
    sgemm_packed(m, 1.0, &a, k, false, &pb, 0.0, &mut c2, n, &epi, 2).unwrap();
    // Packed data wrapped from elsewhere (as an artifact's constant section would be).
    let copy: Vec<f32> = pb.as_slice().to_vec();
    let r = PackedBRef::new(k, n, &copy).unwrap();
    sgemm_packed(m, 1.0, &a, k, false, r, 0.0, &mut c3, n, &epi, 1).unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1, c3);
    let mut c4 = vec![0.0; m * n];
    sgemm(m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c4, n, 1).unwrap();
    // The fused epilogue equals the plain product followed by bias and clamp.
    for i in 0..m {
        for j in 0..n {
            let want = (c4[i * n + j] + bias[j]).clamp(0.0, 6.0);
            assert!(
                (c1[i * n + j] - want).abs() <= 1e-5,
                "({i},{j}): {} vs {want}",
                c1[i * n + j]
            );
        }
    }
}

#[test]
fn errors_leave_c_untouched() {
    let (m, n, k) = (4, 5, 3);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let mut c = vec![7.0; m * n];
    let e = |r: Result<(), GemmError>| r.unwrap_err();
    assert!(matches!(
        e(sgemm(
            m, n, k, 1.0, &a, 2, false, &b, n, false, 0.0, &mut c, n, 1
        )),
        GemmError::LeadingDim {
            operand: "a",
            ld: 2,
            min: 3
        }
    ));
    assert!(matches!(
        e(sgemm(
            m, n, k, 1.0, &a, k, true, &b, n, false, 0.0, &mut c, n, 1
        )),
        GemmError::LeadingDim { operand: "a", .. }
    ));
    assert!(matches!(
        e(sgemm(
            m,
            n,
            k,
            1.0,
            &a[1..],
            k,
            false,
            &b,
            n,
            false,
            0.0,
            &mut c,
            n,
            1
        )),
        GemmError::BufferTooSmall { operand: "a", .. }
    ));
    assert!(matches!(
        e(sgemm(
            m,
            n,
            k,
            1.0,
            &a,
            k,
            false,
            &b,
            n,
            false,
            0.0,
            &mut c[1..],
            n,
            1
        )),
        GemmError::BufferTooSmall { operand: "c", .. }
    ));
    assert!(matches!(
        e(sgemm(
            m,
            n,
            k,
            1.0,
            &a,
            k,
            false,
            &b,
            n,
            false,
            0.0,
            &mut c,
            n - 1,
            1
        )),
        GemmError::LeadingDim { operand: "c", .. }
    ));
    assert!(matches!(
        e(
            sgemm(m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c, n, 1).and(sgemm(
                usize::MAX / 2,
                2,
                k,
                1.0,
                &a,
                k,
                false,
                &b,
                n,
                false,
                0.0,
                &mut c,
                usize::MAX / 2,
                1
            ))
        ),
        GemmError::Overflow | GemmError::LeadingDim { .. }
    ));
    let mut c = vec![7.0; m * n];
    let short = [1.0; 3];
    let epi = Epilogue::bias(Bias::PerColumn(&short), Activation::Identity);
    assert_eq!(
        e(sgemm_fused(
            m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c, n, &epi, 1
        )),
        GemmError::BiasLength {
            expected: n,
            got: 3
        }
    );
    let epi = Epilogue::activation(Activation::Clamp { min: 1.0, max: 0.0 });
    assert!(matches!(
        e(sgemm_fused(
            m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c, n, &epi, 1
        )),
        GemmError::Activation(_)
    ));
    let res = [0.0; 10];
    let epi = Epilogue {
        residual: Some(Residual { data: &res, ld: n }),
        ..Epilogue::default()
    };
    assert!(matches!(
        e(sgemm_fused(
            m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c, n, &epi, 1
        )),
        GemmError::BufferTooSmall {
            operand: "residual",
            ..
        }
    ));
    let pb = pack_b(k + 1, n, &fill((k + 1) * n, 3), n, false).unwrap();
    assert!(matches!(
        e(Gemm {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            a: &a,
            lda: k,
            trans_a: false,
            b: BOperand::Packed(pb.as_ref()),
            epilogue: Epilogue::default(),
            threads: 1,
            isa: Isa::Auto
        }
        .run(&mut c, n)),
        GemmError::PackedB(_)
    ));
    assert!(PackedBRef::new(k, n, &[0.0; 5]).is_err());
    assert!(c.iter().all(|&x| x == 7.0), "an error wrote to C");
}

#[test]
fn c_abi() {
    let (m, n, k) = (9, 20, 11);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let bias = fill(m, 3);
    let epi_rust = Epilogue::bias(Bias::PerRow(&bias), Activation::LeakyRelu { alpha: 0.2 });
    let mut want = vec![0.0; m * n];
    sgemm_fused(
        m, n, k, 1.5, &a, k, false, &b, n, false, 0.0, &mut want, n, &epi_rust, 1,
    )
    .unwrap();

    let epi = PareEpilogue {
        bias_kind: PARE_BIAS_PER_ROW,
        activation: PARE_ACT_LEAKY_RELU,
        bias: bias.as_ptr(),
        residual: std::ptr::null(),
        ldr: 0,
        act_p0: 0.2,
        act_p1: 0.0,
    };
    let mut c = vec![0.0; m * n];
    // SAFETY: all buffers have their implied lengths; C overlaps nothing.
    let st = unsafe {
        pare_sgemm_fused(
            m,
            n,
            k,
            1.5,
            a.as_ptr(),
            k,
            0,
            b.as_ptr(),
            n,
            0,
            0.0,
            c.as_mut_ptr(),
            n,
            &epi,
            1,
        )
    };
    assert_eq!(st, PARE_OK);
    assert_eq!(c, want);

    let len = pare_sgemm_packed_b_len(k, n);
    assert_eq!(len, PackedB::packed_len(k, n).unwrap());
    let mut packed = vec![0.0; len];
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            pare_sgemm_pack_b(k, n, b.as_ptr(), n, 0, packed.as_mut_ptr(), len),
            PARE_OK
        );
        assert_eq!(
            pare_sgemm_pack_b(k, n, b.as_ptr(), n, 0, packed.as_mut_ptr(), len - 1),
            PARE_ERR_PACKED
        );
        let mut c2 = vec![0.0; m * n];
        let st = pare_sgemm_packed(
            m,
            n,
            k,
            1.5,
            a.as_ptr(),
            k,
            0,
            packed.as_ptr(),
            0.0,
            c2.as_mut_ptr(),
            n,
            &epi,
            2,
        );
        assert_eq!(st, PARE_OK);
        assert_eq!(c2, want);

        let mut c3 = vec![1.0; m * n];
        let st = pare_sgemm(
            m,
            n,
            k,
            0.0,
            a.as_ptr(),
            k,
            0,
            b.as_ptr(),
            n,
            0,
            2.0,
            c3.as_mut_ptr(),
            n,
            1,
        );
        assert_eq!(st, PARE_OK);
        assert!(c3.iter().all(|&x| x == 2.0));

        // Status codes.
        let cp = c3.as_mut_ptr();
        assert_eq!(
            pare_sgemm(
                m,
                n,
                k,
                1.0,
                std::ptr::null(),
                k,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                cp,
                n,
                1
            ),
            PARE_ERR_NULL
        );
        assert_eq!(
            pare_sgemm(
                m,
                n,
                k,
                1.0,
                a.as_ptr(),
                k - 1,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                cp,
                n,
                1
            ),
            PARE_ERR_LEADING_DIM
        );
        assert_eq!(
            pare_sgemm(
                m,
                n,
                k,
                1.0,
                a.as_ptr(),
                k,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                std::ptr::null_mut(),
                n,
                1
            ),
            PARE_ERR_NULL
        );
        let bad = PareEpilogue {
            activation: 42,
            ..epi
        };
        assert_eq!(
            pare_sgemm_fused(
                m,
                n,
                k,
                1.0,
                a.as_ptr(),
                k,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                cp,
                n,
                &bad,
                1
            ),
            PARE_ERR_EPILOGUE
        );
        let bad = PareEpilogue {
            activation: PARE_ACT_CLAMP,
            act_p0: 1.0,
            act_p1: -1.0,
            ..epi
        };
        assert_eq!(
            pare_sgemm_fused(
                m,
                n,
                k,
                1.0,
                a.as_ptr(),
                k,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                cp,
                n,
                &bad,
                1
            ),
            PARE_ERR_EPILOGUE
        );
        let bad = PareEpilogue {
            bias: std::ptr::null(),
            ..epi
        };
        assert_eq!(
            pare_sgemm_fused(
                m,
                n,
                k,
                1.0,
                a.as_ptr(),
                k,
                0,
                b.as_ptr(),
                n,
                0,
                0.0,
                cp,
                n,
                &bad,
                1
            ),
            PARE_ERR_NULL
        );
        // Empty problems accept NULL everywhere.
        let null = std::ptr::null();
        assert_eq!(
            pare_sgemm(
                0,
                0,
                0,
                1.0,
                null,
                0,
                0,
                null,
                0,
                0,
                0.0,
                std::ptr::null_mut(),
                0,
                1
            ),
            PARE_OK
        );
    }
    assert!(pare_runtime_isa() == 0 || pare_runtime_isa() == 1);
}

fn activation_strategy() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        (-1.0f32..0.0, 0.0f32..1.0).prop_map(|(min, max)| Activation::Clamp { min, max }),
        (0.0f32..0.5).prop_map(|alpha| Activation::LeakyRelu { alpha }),
        Just(Activation::Sigmoid),
        Just(Activation::Tanh),
        Just(Activation::Gelu),
        Just(Activation::GeluTanh),
        (0.0f32..1.0, 0.0f32..1.0)
            .prop_map(|(alpha, beta)| Activation::HardSigmoid { alpha, beta }),
        Just(Activation::HardSwish),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..70, 1usize..70, 0usize..300),
        (
            prop_oneof![Just(1.0f32), Just(0.0), -2.0f32..2.0],
            prop_oneof![Just(0.0f32), Just(1.0), -2.0f32..2.0],
        ),
        (
            any::<bool>(),
            any::<bool>(),
            [0usize..4, 0usize..4, 0usize..4],
        ),
        (
            prop_oneof![
                Just(BiasKind::None),
                Just(BiasKind::Col),
                Just(BiasKind::Row)
            ],
            any::<bool>(),
        ),
        activation_strategy(),
        (1usize..4, prop::sample::select(isas()), any::<bool>()),
    )
        .prop_map(
            |(
                (m, n, k),
                (alpha, beta),
                (trans_a, trans_b, pad),
                (bias, residual),
                act,
                (threads, isa, packed),
            )| {
                Case {
                    m,
                    n,
                    k,
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                    pad,
                    bias,
                    residual,
                    act,
                    threads,
                    isa,
                    packed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_problems(case in case_strategy()) {
        check(&case);
    }
}
