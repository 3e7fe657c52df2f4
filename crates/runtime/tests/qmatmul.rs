//! `pare_k_qmatmul` against a plain reference: ONNX `QuantizeLinear` / `DynamicQuantizeLinear`
//! codes computed with `round_ties_even`, an i64 dot product, then the f32 scaling, bias,
//! residual and activation.

use pare_runtime::ops::qmatmul::{
    dynamic_range, qmatmul, qmatmul_prepare_b, QMatMulParams, QuantA,
};
use pare_runtime::Activation;

mod common;
use common::fill_range as fill;

#[allow(clippy::too_many_arguments)]
fn reference(
    p: &QMatMulParams,
    a: &[f32],
    codes: &[i8],
    ws: &[f32],
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
) -> Vec<f32> {
    let (scale, zero) = match p.quant {
        QuantA::Static { scale, zero } => (scale, zero as f32),
        QuantA::Dynamic => {
            let hi = a.iter().copied().fold(0.0f32, f32::max);
            let lo = a.iter().copied().fold(0.0f32, f32::min);
            let s = (if hi == lo { 1.0 } else { hi - lo }) / 255.0;
            (s, (0.0f32 - lo / s).clamp(0.0, 255.0).round_ties_even())
        }
    };
    let q: Vec<i64> = a
        .iter()
        .map(|&x| ((x / scale).round_ties_even() + zero).clamp(0.0, 255.0) as i64 - zero as i64)
        .collect();
    let (m, n, k) = (p.m, p.n, p.k);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let acc: i64 = (0..k).map(|t| q[i * k + t] * codes[t * n + j] as i64).sum();
            let mut v = scale * ws[j] * acc as f32;
            if let Some(b) = bias {
                v += b[j];
            }
            if let Some(r) = res {
                v += r[i * n + j];
            }
            y[i * n + j] = p.activation.apply(v);
        }
    }
    y
}

fn close(want: &[f32], got: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            (w - g).abs() <= 1e-5 * scale,
            "{what}: element {i}: want {w}, got {g} (scale {scale})"
        );
    }
}

#[test]
fn dynamic_range_follows_dynamic_quantize_linear() {
    // Range widened to contain 0, zero point rounded half to even.
    assert_eq!(dynamic_range(&[1.0, 2.0, 5.1]), (5.1 / 255.0, 0));
    let (s, z) = dynamic_range(&[-1.0, 0.5, 3.0]);
    assert_eq!(s, 4.0 / 255.0);
    assert_eq!(z, (1.0f32 / s).round_ties_even() as u8);
    assert_eq!(dynamic_range(&[0.0; 40]), (1.0 / 255.0, 0));
    // Lanes and remainder: the extreme in the tail and in the body.
    let mut v = fill(37, 3, -1.0, 1.0);
    v[36] = -7.0;
    v[5] = 9.0;
    assert_eq!(
        dynamic_range(&v),
        (
            16.0 / 255.0,
            (7.0f32 / (16.0 / 255.0)).round_ties_even() as u8
        )
    );
}

#[test]
fn qmatmul_matches_the_reference_in_every_form() {
    for &(m, n, k) in &[(1, 1, 1), (3, 17, 5), (7, 33, 64), (13, 20, 131)] {
        let a = fill(m * k, 1 + k as u32, -2.0, 3.0);
        // Full-range codes (including -128) and 7-bit codes take different packed formats.
        for full in [true, false] {
            let lim = if full { 127.0 } else { 64.0 };
            let codes: Vec<i8> = fill(k * n, 7 + n as u32, -lim - 0.99, lim + 0.99)
                .iter()
                .map(|x| x.round() as i8)
                .collect();
            let ws = fill(n, 11, 0.001, 0.02);
            let (blob, format, seven) = qmatmul_prepare_b(k, n, &codes, &ws).expect("pack");
            assert_eq!(
                seven,
                codes.iter().all(|c| (-64..=64).contains(c)),
                "7-bit flag"
            );
            let bias = fill(n, 13, -1.0, 1.0);
            let res = fill(m * n, 17, -1.0, 1.0);
            for quant in [
                QuantA::Dynamic,
                QuantA::Static {
                    scale: 0.02,
                    zero: 100,
                },
                // A scale that makes many values exact halves: ties round to even.
                QuantA::Static {
                    scale: 0.5,
                    zero: 128,
                },
            ] {
                for (use_bias, use_res, act) in [
                    (false, false, Activation::Identity),
                    (true, false, Activation::Relu),
                    (true, true, Activation::Relu),
                    (false, true, Activation::Identity),
                ] {
                    let mut p = QMatMulParams::new(m, n, k, format, quant);
                    p.seven_bit = seven;
                    p.has_bias = use_bias;
                    p.has_residual = use_res;
                    p.activation = act;
                    let want = reference(
                        &p,
                        &a,
                        &codes,
                        &ws,
                        use_bias.then_some(&bias[..]),
                        use_res.then_some(&res[..]),
                    );
                    let mut c = vec![f32::NAN; m * n];
                    let mut scratch = vec![0u8; p.scratch_bytes()];
                    for threads in [1, 2] {
                        qmatmul(
                            &p,
                            &a,
                            &blob,
                            use_bias.then_some(&bias[..]),
                            use_res.then_some(&res[..]),
                            &mut c,
                            &mut scratch,
                            threads,
                        )
                        .expect("qmatmul");
                        close(&want, &c, &format!("{m}x{n}x{k} {quant:?} {p:?}"));
                    }
                }
            }
        }
    }
}

#[test]
fn qmatmul_rejects_bad_operands() {
    let (m, n, k) = (2, 3, 4);
    let codes = vec![1i8; k * n];
    let (blob, format, _) = qmatmul_prepare_b(k, n, &codes, &[1.0; 3]).expect("pack");
    let p = QMatMulParams::new(m, n, k, format, QuantA::Dynamic);
    let a = vec![0.5f32; m * k];
    let mut c = vec![0f32; m * n];
    let mut scratch = vec![0u8; p.scratch_bytes()];
    // Short weight blob, short output, short scratch, a bias the params do not declare.
    assert!(qmatmul(
        &p,
        &a,
        &blob[..blob.len() - 1],
        None,
        None,
        &mut c,
        &mut scratch,
        1
    )
    .is_err());
    assert!(qmatmul(&p, &a, &blob, None, None, &mut c[..5], &mut scratch, 1).is_err());
    let short = p.scratch_bytes() - 1;
    assert!(qmatmul(&p, &a, &blob, None, None, &mut c, &mut scratch[..short], 1).is_err());
    assert!(qmatmul(
        &p,
        &a,
        &blob,
        Some(&[0.0; 3]),
        None,
        &mut c,
        &mut scratch,
        1
    )
    .is_err());
    // Encoded words round-trip; a static scale of 0 does not decode.
    assert_eq!(QMatMulParams::decode(&p.encode()), Some(p));
    let bad = QMatMulParams::new(
        m,
        n,
        k,
        format,
        QuantA::Static {
            scale: 0.0,
            zero: 0,
        },
    );
    assert_eq!(QMatMulParams::decode(&bad.encode()), None);
}
