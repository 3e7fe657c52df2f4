//! Quantized GEMM: exact integer agreement of every kernel path (AVX-512 VNNI, AVX2 with 7-bit
//! and with full-range weights, portable; the ones this CPU lacks are skipped with a message) and
//! both packed-B formats with a scalar i64 reference on shapes that exercise every edge tile;
//! the dequantized f32 result against an f64 reference of the quantized arithmetic and against
//! the f32 SGEMM on the dequantized operands; saturation corner cases; the dynamic activation
//! quantizer; argument validation; and a proptest over random problems.

mod common;

use common::{act_ref, Rng, ACTS};
use pare_runtime::{
    pack_qb, pack_qb_f32, qgemm, qgemm_i32, quantize_rows_u8, quantize_weights_per_column, sgemm,
    Activation, GemmError, Isa, PackedQB, PackedQBRef, QGemm, QbFormat, QGEMM_MAX_K,
};
use proptest::prelude::*;

/// Every instruction set this CPU runs (`Generic` always); says which ones it skips.
fn isas() -> Vec<Isa> {
    let mut v = Vec::new();
    for isa in [Isa::Generic, Isa::Avx2Fma, Isa::Avx512Vnni] {
        if isa.supported() {
            v.push(isa);
        } else {
            println!("skipping {isa:?}: not supported by this CPU");
        }
    }
    v
}

/// Random u8 activations and i8 codes in `[lo, hi]`.
fn rand_u8(len: usize, rng: &mut Rng) -> Vec<u8> {
    (0..len).map(|_| rng.below(256) as u8).collect()
}

fn rand_codes(len: usize, lo: i32, hi: i32, rng: &mut Rng) -> Vec<i8> {
    (0..len)
        .map(|_| (lo + rng.below((hi - lo + 1) as usize) as i32) as i8)
        .collect()
}

/// `Σ_p a[i,p]·b[p,j] − za[i]·Σ_p b[p,j]` in i64 (b row-major `k x n`).
fn ref_i64(m: usize, n: usize, k: usize, a: &[u8], lda: usize, za: &[u8], b: &[i8]) -> Vec<i64> {
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i64;
            for p in 0..k {
                s += (a[i * lda + p] as i64 - za[i] as i64) * b[p * n + j] as i64;
            }
            c[i * n + j] = s;
        }
    }
    c
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    a: Vec<u8>,
    za: Vec<u8>,
    sa: Vec<f32>,
    codes: Vec<i8>,
    sw: Vec<f32>,
}

fn make_case(m: usize, n: usize, k: usize, code_range: (i32, i32), seed: u64) -> Case {
    let mut rng = Rng(seed);
    let lda = k + rng.below(3);
    let a = rand_u8(m.max(1) * lda, &mut rng);
    let za = rand_u8(m, &mut rng);
    let sa = (0..m)
        .map(|_| 0.001 + rng.below(1000) as f32 * 1e-5)
        .collect();
    let mut codes = rand_codes(k * n, code_range.0, code_range.1, &mut rng);
    if code_range.0 == -128 {
        // Full-range weights must not happen to fit in 7 bits (tiny shapes).
        codes[0] = -128;
    }
    let sw = (0..n)
        .map(|_| 0.002 + rng.below(1000) as f32 * 1e-5)
        .collect();
    Case {
        m,
        n,
        k,
        lda,
        a,
        za,
        sa,
        codes,
        sw,
    }
}

/// Runs the i32 path for every ISA, thread count and the given format (`None`: the automatic
/// choice, always `I8Quads`), checking exact equality; `seven` is whether the codes fit in 7
/// bits. Quad packs also run through a borrowed view that has to scan the codes, and 7-bit ones
/// once more through a view that claims full range (which forces the AVX2 even/odd kernel
/// onto them).
fn check_exact(cs: &Case, format: Option<QbFormat>, seven: bool) {
    let (m, n, k) = (cs.m, cs.n, cs.k);
    let pb = PackedQB::new(k, n, &cs.codes, n, false, &cs.sw, format).unwrap();
    assert_eq!(pb.format(), format.unwrap_or(QbFormat::I8Quads));
    assert_eq!(pb.seven_bit(), seven);
    let want = ref_i64(m, n, k, &cs.a, cs.lda, &cs.za, &cs.codes);
    let scanned =
        PackedQBRef::new(k, n, pb.format(), pb.words(), pb.col_sums(), pb.scales()).unwrap();
    assert_eq!(scanned.seven_bit(), seven);
    let mut views = vec![("owned", pb.as_ref()), ("scanned", scanned)];
    if seven {
        views.push(("claimed full", pb.as_ref().with_seven_bit(false)));
    }
    let expect_format = pb.format();
    for isa in isas() {
        for (view, b) in &views {
            for threads in [1, 2, 3] {
                let ldc = n + 1;
                let mut c = vec![i32::MIN; m * ldc];
                QGemm {
                    m,
                    a: &cs.a,
                    lda: cs.lda,
                    a_scale: &cs.sa,
                    a_zero: &cs.za,
                    b: *b,
                    bias: None,
                    activation: Activation::Identity,
                    threads,
                    isa,
                }
                .run_i32(&mut c, ldc)
                .unwrap();
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(
                        c[i * ldc + j] as i64,
                        want[i * n + j],
                        "{isa:?} {expect_format:?} {view} t={threads} m={m} n={n} k={k} at ({i},{j})"
                    );
                    }
                    assert_eq!(c[i * ldc + n], i32::MIN, "padding column written");
                }
            }
        }
    }
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 16, 1),
    (6, 16, 4),
    (7, 17, 5),
    (5, 15, 3),
    (13, 33, 7),
    (6, 32, 64),
    (12, 48, 129),
    (19, 1, 31),
    (1, 70, 257),
    (32, 40, 384),
    (3, 20, 3001),
    (250, 35, 66),
    (37, 300, 9),
];

#[test]
fn i32_exact_full_range_weights_both_formats() {
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let cs = make_case(m, n, k, (-128, 127), 100 + s as u64);
        check_exact(&cs, None, false);
        check_exact(&cs, Some(QbFormat::I16Pairs), false);
    }
}

#[test]
fn i32_exact_seven_bit_weights_both_formats() {
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let cs = make_case(m, n, k, (-64, 64), 200 + s as u64);
        check_exact(&cs, None, true);
        check_exact(&cs, Some(QbFormat::I16Pairs), true);
    }
}

#[test]
fn saturation_corners_are_exact() {
    // All-255 activations against constant extreme weights: every vpmaddubsw pair would be
    // ±64770, so full-range quads must take VNNI or the AVX2 even/odd kernel and stay exact;
    // ±64 is the largest magnitude the vpmaddubsw kernel takes, also exact
    // (2·255·64 = 32640 <= 32767).
    for &(w, seven) in &[(-128i8, false), (127, false), (-64, true), (64, true)] {
        for &(m, n, k) in &[(7, 19, 1031), (6, 16, 8), (1, 3, 1)] {
            for &za in &[0u8, 255, 128] {
                let cs = Case {
                    m,
                    n,
                    k,
                    lda: k,
                    a: vec![255; m * k],
                    za: vec![za; m],
                    sa: vec![1.0; m],
                    codes: vec![w; k * n],
                    sw: vec![1.0; n],
                };
                check_exact(&cs, None, seven);
                check_exact(&cs, Some(QbFormat::I16Pairs), seven);
                let want = (255 - za as i64) * w as i64 * k as i64;
                let pb = pack_qb(k, n, &cs.codes, n, false, &cs.sw).unwrap();
                let mut c = vec![0i32; m * n];
                qgemm_i32(m, &cs.a, k, &cs.za, &pb, &mut c, n, 1).unwrap();
                assert!(c.iter().all(|&x| x as i64 == want), "w={w} za={za}");
            }
        }
    }
    // Alternating extremes so that vpmaddubsw pairs mix signs.
    let (m, n, k) = (9, 21, 77);
    let codes: Vec<i8> = (0..k * n)
        .map(|i| if i % 3 == 0 { -128 } else { 127 })
        .collect();
    let cs = Case {
        m,
        n,
        k,
        lda: k,
        a: vec![255; m * k],
        za: vec![3; m],
        sa: vec![1.0; m],
        codes,
        sw: vec![1.0; n],
    };
    check_exact(&cs, None, false);
    check_exact(&cs, Some(QbFormat::I16Pairs), false);
}

#[test]
fn largest_k_is_exact() {
    // k = QGEMM_MAX_K with the extreme values reaches the i32 bound.
    let k = QGEMM_MAX_K;
    let (m, n) = (2, 17);
    let cs = Case {
        m,
        n,
        k,
        lda: k,
        a: [vec![255u8; k], vec![0u8; k]].concat(),
        za: vec![0, 255],
        sa: vec![1.0; m],
        codes: vec![-128; k * n],
        sw: vec![1.0; n],
    };
    check_exact(&cs, None, false);
    check_exact(&cs, Some(QbFormat::I16Pairs), false);
    assert_eq!(
        PackedQB::new(k + 1, 1, &vec![0; k + 1], 1, false, &[1.0], None).unwrap_err(),
        GemmError::Overflow
    );
}

/// f64 reference of the dequantized epilogue.
fn ref_f32(cs: &Case, bias: Option<&[f32]>, act: Activation) -> Vec<f32> {
    let ints = ref_i64(cs.m, cs.n, cs.k, &cs.a, cs.lda, &cs.za, &cs.codes);
    let mut out = vec![0.0f32; cs.m * cs.n];
    for i in 0..cs.m {
        for j in 0..cs.n {
            let mut v = cs.sa[i] as f64 * cs.sw[j] as f64 * ints[i * cs.n + j] as f64;
            if let Some(b) = bias {
                v += b[j] as f64;
            }
            out[i * cs.n + j] = act_ref(act, v as f32);
        }
    }
    out
}

#[track_caller]
fn assert_rel(got: &[f32], want: &[f32], rel: f32, ctx: &str) {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{ctx}: element {i}: got {g}, want {w} (scale {scale})"
        );
    }
}

#[test]
fn dequantized_matches_f64_reference_with_every_activation() {
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        for (range, seven) in [((-128, 127), false), ((-64, 64), true)] {
            let cs = make_case(m, n, k, range, 300 + s as u64);
            let pb = pack_qb(k, n, &cs.codes, n, false, &cs.sw).unwrap();
            assert_eq!((pb.format(), pb.seven_bit()), (QbFormat::I8Quads, seven));
            let fmt = if seven { "7-bit" } else { "8-bit" };
            let bias: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37).sin() * 0.5).collect();
            for act in ACTS {
                for with_bias in [false, true] {
                    let b = with_bias.then_some(bias.as_slice());
                    let want = ref_f32(&cs, b, act);
                    for isa in isas() {
                        for threads in [1, 2] {
                            let mut c = vec![f32::NAN; m * n];
                            QGemm {
                                m,
                                a: &cs.a,
                                lda: cs.lda,
                                a_scale: &cs.sa,
                                a_zero: &cs.za,
                                b: pb.as_ref(),
                                bias: b,
                                activation: act,
                                threads,
                                isa,
                            }
                            .run(&mut c, n)
                            .unwrap();
                            // Tolerance: f32 rounding of the i32->f32 conversion and two
                            // products (~3 ulp), plus the activations' ~2e-7 absolute error.
                            assert_rel(
                                &c,
                                &want,
                                2e-6,
                                &format!("{isa:?} {fmt} {act:?} bias={with_bias} t={threads} {m}x{n}x{k}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn end_to_end_matches_f32_sgemm_on_dequantized_operands() {
    for (s, &(m, n, k)) in [(32, 384, 384), (32, 100, 1536), (13, 37, 50), (1, 16, 7)]
        .iter()
        .enumerate()
    {
        let a = common::fill(m * k, 500 + s as u64);
        let w = common::fill(k * n, 600 + s as u64);
        let mut qa = vec![0u8; m * k];
        let mut sa = vec![0.0; m];
        let mut za = vec![0u8; m];
        quantize_rows_u8(&a, m, k, k, &mut qa, &mut sa, &mut za).unwrap();
        for reduce in [false, true] {
            let (codes, sw) = quantize_weights_per_column(k, n, &w, n, false, reduce).unwrap();
            let pb = pack_qb(k, n, &codes, n, false, &sw).unwrap();
            assert_eq!((pb.format(), pb.seven_bit()), (QbFormat::I8Quads, reduce));
            // The same packed weight from f32 + scales.
            let pb2 = pack_qb_f32(k, n, &w, n, false, &sw).unwrap();
            assert_eq!(pb2.words(), pb.words());
            assert_eq!(pb2.col_sums(), pb.col_sums());
            let mut c = vec![0.0f32; m * n];
            qgemm(
                m,
                &qa,
                k,
                &sa,
                &za,
                &pb,
                None,
                Activation::Relu,
                &mut c,
                n,
                2,
            )
            .unwrap();
            let a_deq: Vec<f32> = (0..m * k)
                .map(|x| sa[x / k] * (qa[x] as f32 - za[x / k] as f32))
                .collect();
            let w_deq: Vec<f32> = (0..k * n).map(|x| sw[x % n] * codes[x] as f32).collect();
            let mut want = vec![0.0f32; m * n];
            sgemm(
                m, n, k, 1.0, &a_deq, k, false, &w_deq, n, false, 0.0, &mut want, n, 1,
            )
            .unwrap();
            want.iter_mut().for_each(|x| *x = x.max(0.0));
            assert_rel(&c, &want, 1e-5, &format!("{m}x{n}x{k} reduce={reduce}"));
            // And the quantized product approximates the float one: error well below the
            // output scale (a loose fidelity check that catches gross mistakes, e.g. wrong
            // zero points or transposed scales).
            let mut exact = vec![0.0f32; m * n];
            sgemm(
                m, n, k, 1.0, &a, k, false, &w, n, false, 0.0, &mut exact, n, 1,
            )
            .unwrap();
            exact.iter_mut().for_each(|x| *x = x.max(0.0));
            let tol = if reduce { 0.05 } else { 0.02 };
            assert_rel(
                &c,
                &exact,
                tol,
                &format!("fidelity {m}x{n}x{k} reduce={reduce}"),
            );
        }
    }
}

fn quant_ref(x: f32, scale: f32, zero: u8) -> u8 {
    ((x / scale).round_ties_even() + zero as f32).clamp(0.0, 255.0) as u8
}

#[test]
fn quantize_rows_follows_dynamic_quantize_linear() {
    let (m, k, lda) = (5, 13, 16);
    let mut a = common::fill(m * lda, 9);
    // Row 1 all zeros, row 2 all positive, row 3 all negative, row 4 with exact half-way points.
    a[lda..2 * lda].fill(0.0);
    a[2 * lda..3 * lda]
        .iter_mut()
        .for_each(|x| *x = x.abs() + 0.1);
    a[3 * lda..4 * lda]
        .iter_mut()
        .for_each(|x| *x = -x.abs() - 0.1);
    // Range [-127.5, 127.5] gives scale 1, zero round(127.5) = 128 (half to even), and
    // x.5 values that must round to even.
    let r4 = [
        -127.5, 127.5, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49, 10.0, 0.0, -3.5, 4.5,
    ];
    a[4 * lda..4 * lda + k].copy_from_slice(&r4);
    let mut q = vec![7u8; m * k];
    let mut s = vec![0.0; m];
    let mut z = vec![0u8; m];
    quantize_rows_u8(&a, m, k, lda, &mut q, &mut s, &mut z).unwrap();
    assert_eq!((s[1], z[1]), (1.0, 0));
    assert!(q[k..2 * k].iter().all(|&x| x == 0));
    assert_eq!(z[2], 0, "all-positive row: zero point 0");
    assert_eq!(z[3], 255, "all-negative row: zero point 255");
    assert_eq!((s[4], z[4]), (1.0, 128));
    assert_eq!(
        &q[4 * k..5 * k],
        &[0, 255, 128, 130, 130, 128, 126, 126, 131, 138, 128, 124, 132]
    );
    for i in 0..m {
        let row = &a[i * lda..i * lda + k];
        let (lo, hi) = row
            .iter()
            .fold((0.0f32, 0.0f32), |(l, h), &x| (l.min(x), h.max(x)));
        if hi > lo {
            assert_eq!(s[i], (hi - lo) / 255.0, "row {i} scale");
            let zf = (-lo / s[i]).clamp(0.0, 255.0).round_ties_even() as u8;
            assert_eq!(z[i], zf, "row {i} zero");
        }
        for p in 0..k {
            assert_eq!(q[i * k + p], quant_ref(row[p], s[i], z[i]), "({i},{p})");
            // Reconstruction error at most half a step (plus rounding slack).
            let back = s[i] * (q[i * k + p] as f32 - z[i] as f32);
            assert!((back - row[p]).abs() <= 0.5001 * s[i], "({i},{p})");
        }
    }
    // Zero is exactly representable.
    assert_eq!(quant_ref(0.0, s[0], z[0]), z[0]);
    // Validation leaves outputs untouched.
    let mut q2 = vec![7u8; 3];
    assert!(matches!(
        quantize_rows_u8(&a, m, k, lda, &mut q2, &mut s, &mut z),
        Err(GemmError::BufferTooSmall { .. })
    ));
    assert_eq!(q2, [7, 7, 7]);
}

#[test]
fn validation_errors_leave_c_untouched() {
    let (m, n, k) = (4, 20, 9);
    let cs = make_case(m, n, k, (-128, 127), 77);
    let pb = pack_qb(k, n, &cs.codes, n, false, &cs.sw).unwrap();
    let mut c = vec![5.0f32; m * n];
    let base = QGemm {
        m,
        a: &cs.a,
        lda: cs.lda,
        a_scale: &cs.sa,
        a_zero: &cs.za,
        b: pb.as_ref(),
        bias: None,
        activation: Activation::Identity,
        threads: 1,
        isa: Isa::Auto,
    };
    let short_bias = vec![0.0; n - 1];
    for (q, what) in [
        (
            QGemm {
                a: &cs.a[..cs.a.len() - 40],
                ..base
            },
            "short a",
        ),
        (
            QGemm {
                a_scale: &cs.sa[1..],
                ..base
            },
            "short scale",
        ),
        (
            QGemm {
                a_zero: &cs.za[1..],
                ..base
            },
            "short zero",
        ),
        (QGemm { lda: k - 1, ..base }, "lda"),
        (
            QGemm {
                bias: Some(&short_bias),
                ..base
            },
            "bias",
        ),
        (
            QGemm {
                activation: Activation::Clamp { min: 1.0, max: 0.0 },
                ..base
            },
            "clamp",
        ),
    ] {
        assert!(q.run(&mut c, n).is_err(), "{what}");
        assert!(c.iter().all(|&x| x == 5.0), "{what}");
    }
    assert!(base.run(&mut c[..m * n - 1], n).is_err());
    assert!(base.run(&mut c, n - 1).is_err());
    // Either format takes any codes; the quad pack records whether they fit in 7 bits.
    let bad = vec![65i8; k * n];
    let p8 = PackedQB::new(k, n, &bad, n, false, &cs.sw, Some(QbFormat::I8Quads)).unwrap();
    assert!(!p8.seven_bit());
    assert!(pack_qb(k, n, &bad, n, false, &cs.sw[1..]).is_err());
    // Borrowed views find out the range from the codes (or take the caller's word).
    let p16 = PackedQB::new(k, n, &bad, n, false, &cs.sw, Some(QbFormat::I16Pairs)).unwrap();
    assert_eq!(p16.format(), QbFormat::I16Pairs);
    let qlen = PackedQB::packed_len(k, n, QbFormat::I8Quads).unwrap();
    for (word, seven) in [
        (0x4141_4141u32, false),
        (0x4040_4040, true),
        (0xc0c0_c0c0, true),
        (0xbfc0_c0c0, false),
        (0x0080_0000, false),
    ] {
        let words = vec![word; qlen];
        let v = PackedQBRef::new(
            k,
            n,
            QbFormat::I8Quads,
            &words,
            p16.col_sums(),
            p16.scales(),
        )
        .unwrap();
        assert_eq!(v.seven_bit(), seven, "{word:#x}");
        assert!(v.with_seven_bit(!seven).seven_bit() != seven);
    }
    let ok = PackedQBRef::new(
        k,
        n,
        p16.format(),
        p16.words(),
        p16.col_sums(),
        p16.scales(),
    )
    .unwrap();
    assert!(PackedQBRef::new(k, n, p16.format(), &p16.words()[1..], &[], &[]).is_err());
    // A view over the same data gives the same result as the owner.
    let mut c1 = vec![0.0; m * n];
    let mut c2 = vec![0.0; m * n];
    qgemm(
        m,
        &cs.a,
        cs.lda,
        &cs.sa,
        &cs.za,
        &p16,
        None,
        Activation::Identity,
        &mut c1,
        n,
        1,
    )
    .unwrap();
    qgemm(
        m,
        &cs.a,
        cs.lda,
        &cs.sa,
        &cs.za,
        ok,
        None,
        Activation::Identity,
        &mut c2,
        n,
        1,
    )
    .unwrap();
    assert_eq!(c1, c2);
}

#[test]
fn transposed_weights_pack_like_row_major() {
    let (k, n) = (11, 21);
    let mut rng = Rng(5);
    let codes = rand_codes(k * n, -128, 127, &mut rng);
    let t: Vec<i8> = (0..n)
        .flat_map(|j| codes.iter().skip(j).step_by(n).copied().collect::<Vec<_>>())
        .collect();
    let sw = vec![1.0; n];
    let a = pack_qb(k, n, &codes, n, false, &sw).unwrap();
    let b = pack_qb(k, n, &t, k, true, &sw).unwrap();
    assert_eq!(a.words(), b.words());
    assert_eq!(a.col_sums(), b.col_sums());
    // Documented layout: panel q, step s, column jj; quads, byte t = k 4s+t.
    assert_eq!(a.format(), QbFormat::I8Quads);
    let steps = k.div_ceil(4);
    for j in 0..n {
        for p in 0..k {
            let w = a.words()[(j / 16) * 16 * steps + (p / 4) * 16 + j % 16];
            assert_eq!(w.to_le_bytes()[p % 4] as i8, codes[p * n + j]);
        }
    }
    // I16Pairs: i16 halves, low half = k 2s.
    let a = PackedQB::new(k, n, &codes, n, false, &sw, Some(QbFormat::I16Pairs)).unwrap();
    let b = PackedQB::new(k, n, &t, k, true, &sw, Some(QbFormat::I16Pairs)).unwrap();
    assert_eq!(a.words(), b.words());
    let steps = k.div_ceil(2);
    for j in 0..n {
        for p in 0..k {
            let w = a.words()[(j / 16) * 16 * steps + (p / 2) * 16 + j % 16];
            let half = if p % 2 == 0 {
                w as u16
            } else {
                (w >> 16) as u16
            };
            assert_eq!(half as i16, codes[p * n + j] as i16);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_problems_are_exact(
        m in 1usize..40,
        n in 1usize..70,
        k in 1usize..300,
        seven in any::<bool>(),
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let range = if seven { (-64, 64) } else { (-128, 127) };
        let cs = make_case(m, n, k, range, seed);
        let pb = pack_qb(k, n, &cs.codes, n, false, &cs.sw).unwrap();
        let want = ref_i64(m, n, k, &cs.a, cs.lda, &cs.za, &cs.codes);
        let wantf = ref_f32(&cs, None, Activation::Relu);
        for isa in isas() {
            let q = QGemm {
                m,
                a: &cs.a,
                lda: cs.lda,
                a_scale: &cs.sa,
                a_zero: &cs.za,
                b: pb.as_ref(),
                bias: None,
                activation: Activation::Relu,
                threads,
                isa,
            };
            let mut c = vec![0i32; m * n];
            q.run_i32(&mut c, n).unwrap();
            let got: Vec<i64> = c.iter().map(|&x| x as i64).collect();
            prop_assert_eq!(&got, &want);
            let mut cf = vec![0.0f32; m * n];
            q.run(&mut cf, n).unwrap();
            let scale = wantf.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
            for (g, w) in cf.iter().zip(&wantf) {
                prop_assert!((g - w).abs() <= 2e-6 * scale, "got {} want {}", g, w);
            }
        }
    }
}

#[test]
fn empty_k_gives_bias_and_activation() {
    let (m, n) = (3, 18);
    let pb = pack_qb(0, n, &[], n, false, &[0.5; 18]).unwrap();
    let bias: Vec<f32> = (0..n).map(|j| j as f32 - 9.0).collect();
    for isa in isas() {
        let mut c = vec![f32::NAN; m * n];
        QGemm {
            m,
            a: &[],
            lda: 0,
            a_scale: &[1.0; 3],
            a_zero: &[7; 3],
            b: pb.as_ref(),
            bias: Some(&bias),
            activation: Activation::Relu,
            threads: 2,
            isa,
        }
        .run(&mut c, n)
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * n + j], bias[j].max(0.0), "{isa:?} ({i},{j})");
            }
        }
    }
}

/// `Isa::Avx512Vnni` given to the f32 SGEMM runs its AVX2+FMA kernel (bit-identical results), or
/// is refused where the CPU lacks VNNI; `Isa::detect` keeps reporting the f32 kernels.
#[test]
fn sgemm_treats_vnni_as_avx2() {
    use pare_runtime::{BOperand, Epilogue, Gemm};
    assert_ne!(Isa::detect(), Isa::Avx512Vnni);
    let (m, n, k) = (13, 37, 29);
    let a = common::fill(m * k, 1);
    let b = common::fill(k * n, 2);
    let run = |isa: Isa| {
        let mut c = vec![0.0f32; m * n];
        Gemm {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            a: &a,
            lda: k,
            trans_a: false,
            b: BOperand::Dense {
                data: &b,
                ld: n,
                trans: false,
            },
            epilogue: Epilogue::default(),
            threads: 1,
            isa,
        }
        .run(&mut c, n)
        .map(|()| c)
    };
    if Isa::Avx512Vnni.supported() {
        assert_eq!(run(Isa::Avx512Vnni).unwrap(), run(Isa::Avx2Fma).unwrap());
    } else {
        println!("skipping the VNNI comparison: not supported by this CPU");
        assert_eq!(
            run(Isa::Avx512Vnni).unwrap_err(),
            GemmError::UnsupportedIsa(Isa::Avx512Vnni)
        );
    }
}
