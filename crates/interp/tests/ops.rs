//! Focused per-family tests with small hand-computed expectations. The broad coverage comes
//! from the ONNX node tests (tests/conformance in the workspace, and node_suite.rs here).

use ndarray::ArrayD;
use pare_interp::{eval_node, InterpError, Interpreter, Value};
use pare_ir::op::*;
use pare_ir::{DType, Graph, Op, Shape, Tensor, TensorType};

fn f32v(shape: &[usize], v: &[f32]) -> Value {
    Value::F32(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn f64v(shape: &[usize], v: &[f64]) -> Value {
    Value::F64(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn i64v(shape: &[usize], v: &[i64]) -> Value {
    Value::I64(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn i32v(shape: &[usize], v: &[i32]) -> Value {
    Value::I32(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn u8v(shape: &[usize], v: &[u8]) -> Value {
    Value::U8(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn boolv(shape: &[usize], v: &[bool]) -> Value {
    Value::Bool(ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap())
}
fn scalar_i64(v: i64) -> Value {
    Value::I64(ndarray::arr0(v).into_dyn())
}

/// Evaluates with every operand present.
fn ev(op: Op, ins: &[&Value]) -> Vec<Value> {
    let args: Vec<Option<&Value>> = ins.iter().map(|v| Some(*v)).collect();
    eval_node(&op, &args, 1).unwrap_or_else(|e| panic!("{}: {e}", op.name()))
}
fn ev1(op: Op, ins: &[&Value]) -> Value {
    ev(op, ins).remove(0)
}
fn evo(op: Op, ins: &[Option<&Value>], nout: usize) -> Vec<Value> {
    eval_node(&op, ins, nout).unwrap_or_else(|e| panic!("{}: {e}", op.name()))
}

fn f32s(v: &Value) -> Vec<f32> {
    match v {
        Value::F32(a) => a.iter().copied().collect(),
        o => panic!("expected f32, got {}", o.dtype()),
    }
}
fn i64s(v: &Value) -> Vec<i64> {
    v.to_i64_vec().unwrap()
}
fn bools(v: &Value) -> Vec<bool> {
    match v {
        Value::Bool(a) => a.iter().copied().collect(),
        o => panic!("expected bool, got {}", o.dtype()),
    }
}
fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length: {got:?} vs {want:?}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "element {i}: {a} vs {b} (got {got:?})"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Values and tensors

#[test]
fn tensor_round_trip_all_dtypes() {
    let ts = vec![
        Tensor::from_vec(vec![2], vec![1.5f32, -2.0]),
        Tensor::from_vec(vec![2], vec![1.5f64, -2.0]),
        Tensor::from_vec(
            vec![2],
            vec![half::f16::from_f32(1.5), half::f16::from_f32(-2.0)],
        ),
        Tensor::from_vec(vec![1], vec![half::bf16::from_f32(3.0)]),
        Tensor::from_vec(vec![3], vec![-1i8, 0, 1]),
        Tensor::from_vec(vec![1], vec![200u8]),
        Tensor::from_vec(vec![1], vec![-300i16]),
        Tensor::from_vec(vec![1], vec![60000u16]),
        Tensor::from_vec(vec![1], vec![-7i32]),
        Tensor::from_vec(vec![1], vec![7u32]),
        Tensor::from_vec(vec![1], vec![i64::MIN]),
        Tensor::from_vec(vec![1], vec![u64::MAX]),
        Tensor::from_vec(vec![2], vec![true, false]),
        Tensor::from_strings(vec![2], vec!["a".into(), "héllo".into()]).unwrap(),
        // Odd-length packed types: 3 nibbles in 2 bytes.
        Tensor::from_raw(DType::I4, vec![3], bytes::Bytes::from(vec![0x8F, 0x07])).unwrap(),
        Tensor::from_raw(DType::U4, vec![3], bytes::Bytes::from(vec![0x21, 0x0F])).unwrap(),
        Tensor::from_raw(DType::F4E2M1, vec![2], bytes::Bytes::from(vec![0x72])).unwrap(),
        Tensor::from_raw(
            DType::F8E4M3FN,
            vec![2],
            bytes::Bytes::from(vec![0x38, 0xFE]),
        )
        .unwrap(),
        Tensor::from_raw(DType::F8E5M2, vec![1], bytes::Bytes::from(vec![0x3C])).unwrap(),
    ];
    for t in ts {
        let v = Value::from_tensor(&t).unwrap();
        assert_eq!(v.dtype(), t.dtype());
        assert_eq!(v.shape(), t.shape());
        assert_eq!(v.to_tensor(), t, "{t:?}");
    }
}

#[test]
fn packed_int4_unpacks_signed() {
    let t = Tensor::from_raw(DType::I4, vec![3], bytes::Bytes::from(vec![0x8F, 0x07])).unwrap();
    match Value::from_tensor(&t).unwrap() {
        Value::I4(a) => assert_eq!(a.iter().copied().collect::<Vec<_>>(), vec![-1, -8, 7]),
        o => panic!("{o:?}"),
    }
    let t = Tensor::from_raw(
        DType::F8E4M3FN,
        vec![2],
        bytes::Bytes::from(vec![0x38, 0xFE]),
    )
    .unwrap();
    assert_eq!(
        Value::from_tensor(&t).unwrap().to_f64_vec().unwrap(),
        vec![1.0, -448.0]
    );
}

// ------------------------------------------------------------------------------------------
// Elementwise

#[test]
fn add_broadcasts_multidirectionally() {
    let a = f32v(&[2, 1], &[1.0, 2.0]);
    let b = f32v(&[3], &[10.0, 20.0, 30.0]);
    let c = ev1(Op::Add, &[&a, &b]);
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(f32s(&c), vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    let bad = f32v(&[2], &[1.0, 2.0]);
    assert!(eval_node(&Op::Add, &[Some(&bad), Some(&b)], 1).is_err());
}

#[test]
fn integer_div_truncates_and_mod_follows_fmod_attr() {
    let a = i32v(&[4], &[7, -7, 7, -7]);
    let b = i32v(&[4], &[2, 2, -2, -2]);
    assert_eq!(i64s(&ev1(Op::Div, &[&a, &b])), vec![3, -3, -3, 3]);
    let m = ev1(Op::Mod(ModAttrs { fmod: false }), &[&a, &b]);
    assert_eq!(i64s(&m), vec![1, 1, -1, -1]);
    let f = ev1(Op::Mod(ModAttrs { fmod: true }), &[&a, &b]);
    assert_eq!(i64s(&f), vec![1, -1, 1, -1]);
    let fa = f32v(&[2], &[5.5, -5.5]);
    let fb = f32v(&[2], &[2.0, 2.0]);
    assert_eq!(
        f32s(&ev1(Op::Mod(ModAttrs { fmod: true }), &[&fa, &fb])),
        vec![1.5, -1.5]
    );
}

#[test]
fn pow_mixed_types_keeps_base_type() {
    let base = i64v(&[3], &[2, 3, 4]);
    let e = f32v(&[3], &[2.0, 0.5, 1.0]);
    let r = ev1(Op::Pow, &[&base, &e]);
    assert_eq!(r.dtype(), DType::I64);
    assert_eq!(i64s(&r), vec![4, 1, 4]);
    let fb = f32v(&[2], &[2.0, 9.0]);
    let ie = i64v(&[], &[2]);
    assert_eq!(f32s(&ev1(Op::Pow, &[&fb, &ie])), vec![4.0, 81.0]);
}

#[test]
fn predicates_produce_bool() {
    let a = f32v(&[3], &[1.0, f32::NAN, 3.0]);
    let b = f32v(&[3], &[1.0, 2.0, 2.0]);
    assert_eq!(bools(&ev1(Op::Equal, &[&a, &b])), vec![true, false, false]);
    assert_eq!(
        bools(&ev1(Op::Greater, &[&a, &b])),
        vec![false, false, true]
    );
    assert_eq!(bools(&ev1(Op::IsNaN, &[&a])), vec![false, true, false]);
    let t = boolv(&[2], &[true, false]);
    assert_eq!(bools(&ev1(Op::Not, &[&t])), vec![false, true]);
    let s1 =
        Value::Str(ArrayD::from_shape_vec(vec![2], vec!["a".to_string(), "b".into()]).unwrap());
    let s2 = Value::Str(ArrayD::from_shape_vec(vec![1], vec!["b".to_string()]).unwrap());
    assert_eq!(bools(&ev1(Op::Equal, &[&s1, &s2])), vec![false, true]);
}

#[test]
fn unary_activations() {
    let x = f32v(&[4], &[-2.0, -0.5, 0.0, 1.5]);
    assert_eq!(f32s(&ev1(Op::Relu, &[&x])), vec![0.0, 0.0, 0.0, 1.5]);
    let lr = ev1(Op::LeakyRelu(LeakyReluAttrs { alpha: 0.1 }), &[&x]);
    assert_close(&f32s(&lr), &[-0.2, -0.05, 0.0, 1.5], 1e-6);
    let sig = ev1(Op::Sigmoid, &[&x]);
    assert_close(
        &f32s(&sig),
        &[0.11920292, 0.37754067, 0.5, 0.817_574_5],
        1e-6,
    );
    let g = ev1(Op::Gelu(GeluAttrs::default()), &[&x]);
    assert_close(
        &f32s(&g),
        &[-0.04550026, -0.15426877, 0.0, 1.399_789_2],
        1e-5,
    );
    let r = ev1(Op::Round, &[&f32v(&[4], &[0.5, 1.5, 2.5, -0.5])]);
    assert_eq!(f32s(&r), vec![0.0, 2.0, 2.0, -0.0]);
    let hs = ev1(Op::HardSwish, &[&x]);
    assert_close(&f32s(&hs), &[-0.33333334, -0.20833333, 0.0, 1.125], 1e-6);
    // Half precision computes in f32 and rounds back.
    let h = Value::F16(ArrayD::from_shape_vec(vec![1], vec![half::f16::from_f32(1.0)]).unwrap());
    match ev1(Op::Exp, &[&h]) {
        Value::F16(a) => assert_eq!(a[[0]], half::f16::from_f32(std::f32::consts::E)),
        o => panic!("{o:?}"),
    }
}

#[test]
fn clip_where_and_variadic_max() {
    let x = f32v(&[4], &[-2.0, 0.5, 3.0, f32::NAN]);
    let lo = f32v(&[], &[0.0]);
    let hi = f32v(&[], &[1.0]);
    let c = evo(Op::Clip, &[Some(&x), Some(&lo), Some(&hi)], 1).remove(0);
    let cv = f32s(&c);
    assert_eq!(&cv[..3], &[0.0, 0.5, 1.0]);
    assert!(cv[3].is_nan());
    let only_hi = evo(Op::Clip, &[Some(&x), None, Some(&hi)], 1).remove(0);
    assert_eq!(f32s(&only_hi)[0], -2.0);

    let cond = boolv(&[2, 1], &[true, false]);
    let a = f32v(&[2], &[1.0, 2.0]);
    let b = f32v(&[1], &[9.0]);
    let w = ev1(Op::Where, &[&cond, &a, &b]);
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(f32s(&w), vec![1.0, 2.0, 9.0, 9.0]);

    let m = ev1(Op::Max, &[&a, &b, &f32v(&[2], &[5.0, f32::NAN])]);
    let mv = f32s(&m);
    assert_eq!(mv[0], 9.0);
    assert!(mv[1].is_nan());
    let mean = ev1(Op::Mean, &[&a, &f32v(&[2], &[3.0, 4.0])]);
    assert_eq!(f32s(&mean), vec![2.0, 3.0]);
}

#[test]
fn bitshift_and_bitwise() {
    let a = Value::U8(ArrayD::from_shape_vec(vec![3], vec![1u8, 16, 255]).unwrap());
    let s = Value::U8(ArrayD::from_shape_vec(vec![3], vec![3u8, 2, 8]).unwrap());
    let l = ev1(
        Op::BitShift(BitShiftAttrs {
            direction: "LEFT".into(),
        }),
        &[&a, &s],
    );
    assert_eq!(i64s(&l), vec![8, 64, 0]);
    let r = ev1(
        Op::BitShift(BitShiftAttrs {
            direction: "RIGHT".into(),
        }),
        &[&a, &s],
    );
    assert_eq!(i64s(&r), vec![0, 4, 0]);
    let x = i32v(&[2], &[0b1100, 0b1010]);
    let y = i32v(&[2], &[0b1010, 0b0110]);
    assert_eq!(i64s(&ev1(Op::BitwiseXor, &[&x, &y])), vec![0b0110, 0b1100]);
    assert_eq!(i64s(&ev1(Op::BitwiseNot, &[&i32v(&[1], &[0])])), vec![-1]);
}

// ------------------------------------------------------------------------------------------
// Cast

#[test]
fn cast_float8_saturation_and_rounding() {
    let x = f32v(&[5], &[1.0, 464.0, 480.0, f32::INFINITY, 0.0009]);
    let sat = ev1(
        Op::Cast(CastAttrs {
            to: DType::F8E4M3FN,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&x],
    );
    assert_eq!(sat.to_f64_vec().unwrap()[..4], [1.0, 448.0, 448.0, 448.0]);
    let raw = ev1(
        Op::Cast(CastAttrs {
            to: DType::F8E4M3FN,
            saturate: false,
            round_mode: "up".into(),
        }),
        &[&x],
    );
    let r = raw.to_f64_vec().unwrap();
    assert_eq!(r[1], 448.0); // 464 rounds to even (448)
    assert!(r[2].is_nan() && r[3].is_nan());
    let e5 = ev1(
        Op::Cast(CastAttrs {
            to: DType::F8E5M2,
            saturate: false,
            round_mode: "up".into(),
        }),
        &[&x],
    );
    assert_eq!(e5.to_f64_vec().unwrap()[3], f64::INFINITY);
    // Back to f32.
    let back = ev1(
        Op::Cast(CastAttrs {
            to: DType::F32,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&sat],
    );
    assert_eq!(f32s(&back)[..2], [1.0, 448.0]);
}

#[test]
fn cast_ints_wrap_and_strings_parse() {
    let x = f32v(&[4], &[-9.0, 7.9, 8.0, -1.5]);
    let i4 = ev1(
        Op::Cast(CastAttrs {
            to: DType::I4,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&x],
    );
    assert_eq!(i64s(&i4), vec![7, 7, -8, -1]);
    let t = i4.to_tensor();
    assert_eq!(t.raw(), &[0x77, 0xF8]);
    let u8c = ev1(
        Op::Cast(CastAttrs {
            to: DType::U8,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&i64v(&[2], &[256, -1])],
    );
    assert_eq!(i64s(&u8c), vec![0, 255]);
    let s = Value::Str(
        ArrayD::from_shape_vec(
            vec![3],
            vec!["1.5".to_string(), "-INF".into(), "NaN".into()],
        )
        .unwrap(),
    );
    let f = f32s(&ev1(
        Op::Cast(CastAttrs {
            to: DType::F32,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&s],
    ));
    assert_eq!(f[0], 1.5);
    assert_eq!(f[1], f32::NEG_INFINITY);
    assert!(f[2].is_nan());
    let b = ev1(
        Op::Cast(CastAttrs {
            to: DType::Bool,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&f32v(&[2], &[0.0, -0.1])],
    );
    assert_eq!(bools(&b), vec![false, true]);
    let like = ev1(
        Op::CastLike(CastLikeAttrs::default()),
        &[&f32v(&[1], &[2.7]), &i32v(&[1], &[0])],
    );
    assert_eq!(like.dtype(), DType::I32);
    assert_eq!(i64s(&like), vec![2]);
}

#[test]
fn cast_to_bf16_rounds_to_nearest_even() {
    // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
    let x = f32v(&[2], &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
    match ev1(
        Op::Cast(CastAttrs {
            to: DType::BF16,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[&x],
    ) {
        Value::BF16(a) => {
            assert_eq!(a[[0]].to_f32(), 1.0);
            assert_eq!(a[[1]].to_f32(), 1.0 + 4.0 / 256.0);
        }
        o => panic!("{o:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Linear algebra

#[test]
fn matmul_shapes_and_values() {
    let a = f32v(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f32v(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_eq!(
        f32s(&ev1(Op::MatMul, &[&a, &b])),
        vec![58.0, 64.0, 139.0, 154.0]
    );
    // 1-D operands.
    let v = f32v(&[3], &[1.0, 0.0, -1.0]);
    let av = ev1(Op::MatMul, &[&a, &v]);
    assert_eq!(av.shape(), &[2]);
    assert_eq!(f32s(&av), vec![-2.0, -2.0]);
    let va = ev1(Op::MatMul, &[&v, &b]);
    assert_eq!(f32s(&va), vec![-4.0, -4.0]);
    // Batch broadcasting: [2,1,2,3] x [3,3,2] -> [2,3,2,2].
    let a4 = f32v(
        &[2, 1, 2, 3],
        &(0..12).map(|i| i as f32).collect::<Vec<_>>(),
    );
    let b3 = f32v(
        &[3, 3, 2],
        &(0..18).map(|i| (i % 5) as f32).collect::<Vec<_>>(),
    );
    let c = ev1(Op::MatMul, &[&a4, &b3]);
    assert_eq!(c.shape(), &[2, 3, 2, 2]);
    // Spot check c[1,2,1,:] = a4[1,0,1,:] @ b3[2]
    let a_row = [9.0f32, 10.0, 11.0];
    let b2: Vec<f32> = (12..18).map(|i| (i % 5) as f32).collect();
    let want = [
        a_row[0] * b2[0] + a_row[1] * b2[2] + a_row[2] * b2[4],
        a_row[0] * b2[1] + a_row[1] * b2[3] + a_row[2] * b2[5],
    ];
    let cv = f32s(&c);
    assert_eq!(&cv[cv.len() - 2..], &want);
    // Integers.
    let ia = i64v(&[1, 2], &[3, 4]);
    let ib = i64v(&[2, 1], &[5, 6]);
    assert_eq!(i64s(&ev1(Op::MatMul, &[&ia, &ib])), vec![39]);
}

#[test]
fn gemm_transposes_and_broadcasts_c() {
    let a = f32v(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]); // A^T of [[1,2,3],[4,5,6]]
    let b = f32v(&[2, 3], &[7.0, 9.0, 11.0, 8.0, 10.0, 12.0]); // B^T
    let c = f32v(&[2], &[1.0, -1.0]);
    let at = GemmAttrs {
        alpha: 2.0,
        beta: 0.5,
        trans_a: true,
        trans_b: true,
    };
    let y = evo(Op::Gemm(at), &[Some(&a), Some(&b), Some(&c)], 1).remove(0);
    assert_eq!(f32s(&y), vec![116.5, 127.5, 278.5, 307.5]);
}

#[test]
fn einsum_forms() {
    let a = f32v(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f32v(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let e = |eq: &str, xs: &[&Value]| {
        ev1(
            Op::Einsum(EinsumAttrs {
                equation: eq.into(),
            }),
            xs,
        )
    };
    assert_eq!(
        f32s(&e("ij,jk->ik", &[&a, &b])),
        vec![58.0, 64.0, 139.0, 154.0]
    );
    assert_eq!(f32s(&e("ij,jk", &[&a, &b])), vec![58.0, 64.0, 139.0, 154.0]);
    let t = e("ij->ji", &[&a]);
    assert_eq!(t.shape(), &[3, 2]);
    assert_eq!(f32s(&t), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(f32s(&e("ij->", &[&a])), vec![21.0]);
    let sq = f32v(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(f32s(&e("ii->i", &[&sq])), vec![1.0, 4.0]);
    assert_eq!(f32s(&e("ii", &[&sq])), vec![5.0]);
    let batch = f32v(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let r = e("...ij,...jk->...ik", &[&batch, &f32v(&[2, 1], &[1.0, 1.0])]);
    assert_eq!(r.shape(), &[2, 1, 1]);
    assert_eq!(f32s(&r), vec![3.0, 7.0]);
    let outer = e(
        "i,j->ij",
        &[&f32v(&[2], &[1.0, 2.0]), &f32v(&[2], &[3.0, 4.0])],
    );
    assert_eq!(f32s(&outer), vec![3.0, 4.0, 6.0, 8.0]);
}

#[test]
fn determinant() {
    let m = f32v(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 2.0, 0.0, 0.0, 3.0]);
    assert_close(&f32s(&ev1(Op::Det, &[&m])), &[-2.0, 6.0], 1e-6);
    let d = ev1(
        Op::Det,
        &[&f64v(
            &[3, 3],
            &[2.0, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 2.0],
        )],
    );
    assert_eq!(d.dtype(), DType::F64);
    assert!((d.scalar_f64().unwrap() - 6.0).abs() < 1e-12);
}

// ------------------------------------------------------------------------------------------
// Shape and data movement

#[test]
fn reshape_transpose_squeeze() {
    let x = f32v(&[2, 3, 4], &(0..24).map(|i| i as f32).collect::<Vec<_>>());
    let r = ev1(
        Op::Reshape(ReshapeAttrs::default()),
        &[&x, &i64v(&[3], &[0, -1, 2])],
    );
    assert_eq!(r.shape(), &[2, 6, 2]);
    let z = ev1(
        Op::Reshape(ReshapeAttrs { allowzero: true }),
        &[&f32v(&[0, 3], &[]), &i64v(&[2], &[3, 0])],
    );
    assert_eq!(z.shape(), &[3, 0]);
    let t = ev1(
        Op::Transpose(TransposeAttrs {
            perm: Some(vec![2, 0, 1]),
        }),
        &[&x],
    );
    assert_eq!(t.shape(), &[4, 2, 3]);
    assert_eq!(f32s(&t)[..4], [0.0, 4.0, 8.0, 12.0]);
    let u = ev1(Op::Unsqueeze, &[&x, &i64v(&[2], &[0, -1])]);
    assert_eq!(u.shape(), &[1, 2, 3, 4, 1]);
    let s = evo(Op::Squeeze, &[Some(&u), None], 1).remove(0);
    assert_eq!(s.shape(), &[2, 3, 4]);
    assert!(eval_node(&Op::Squeeze, &[Some(&x), Some(&i64v(&[1], &[0]))], 1).is_err());
    let f = ev1(Op::Flatten(FlattenAttrs { axis: -1 }), &[&x]);
    assert_eq!(f.shape(), &[6, 4]);
}

#[test]
fn slice_with_negative_steps_and_clamping() {
    let x = i64v(&[2, 5], &(0..10).collect::<Vec<_>>());
    let s = ev1(
        Op::Slice,
        &[
            &x,
            &i64v(&[1], &[-1]),
            &i64v(&[1], &[-100]),
            &i64v(&[1], &[1]),
            &i64v(&[1], &[-2]),
        ],
    );
    assert_eq!(s.shape(), &[2, 3]);
    assert_eq!(i64s(&s), vec![4, 2, 0, 9, 7, 5]);
    let s2 = evo(
        Op::Slice,
        &[
            Some(&x),
            Some(&i64v(&[2], &[1, 1])),
            Some(&i64v(&[2], &[100, 3])),
            None,
            None,
        ],
        1,
    )
    .remove(0);
    assert_eq!(i64s(&s2), vec![6, 7]);
}

#[test]
fn gather_family() {
    let x = f32v(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let g = ev1(
        Op::Gather(Axis0Attrs { axis: 0 }),
        &[&x, &i64v(&[2, 1], &[-1, 0])],
    );
    assert_eq!(g.shape(), &[2, 1, 2]);
    assert_eq!(f32s(&g), vec![5.0, 6.0, 1.0, 2.0]);
    assert!(eval_node(
        &Op::Gather(Axis0Attrs { axis: 0 }),
        &[Some(&x), Some(&i64v(&[1], &[3]))],
        1
    )
    .is_err());
    let ge = ev1(
        Op::GatherElements(Axis0Attrs { axis: 1 }),
        &[&x, &i64v(&[3, 1], &[1, 0, -1])],
    );
    assert_eq!(f32s(&ge), vec![2.0, 3.0, 6.0]);
    let nd = ev1(
        Op::GatherNd(GatherNdAttrs { batch_dims: 0 }),
        &[&x, &i64v(&[2, 2], &[0, 1, 2, 0])],
    );
    assert_eq!(f32s(&nd), vec![2.0, 5.0]);
    let data = i64v(&[2, 2, 2], &(0..8).collect::<Vec<_>>());
    let bd = ev1(
        Op::GatherNd(GatherNdAttrs { batch_dims: 1 }),
        &[&data, &i64v(&[2, 1], &[1, 0])],
    );
    assert_eq!(i64s(&bd), vec![2, 3, 4, 5]);
}

#[test]
fn scatter_family() {
    let data = f32v(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let s = ev1(
        Op::ScatterNd(ScatterNdAttrs {
            reduction: "add".into(),
        }),
        &[&data, &i64v(&[2, 1], &[1, 1]), &f32v(&[2], &[10.0, 20.0])],
    );
    assert_eq!(f32s(&s), vec![1.0, 32.0, 3.0, 4.0]);
    let d2 = f32v(&[2, 2], &[0.0; 4]);
    let se = ev1(
        Op::ScatterElements(ScatterElementsAttrs {
            axis: 1,
            reduction: "none".into(),
        }),
        &[&d2, &i64v(&[2, 1], &[1, -2]), &f32v(&[2, 1], &[5.0, 6.0])],
    );
    assert_eq!(f32s(&se), vec![0.0, 5.0, 6.0, 0.0]);
    let mx = ev1(
        Op::ScatterElements(ScatterElementsAttrs {
            axis: 0,
            reduction: "max".into(),
        }),
        &[&data, &i64v(&[2], &[0, 0]), &f32v(&[2], &[0.5, 7.0])],
    );
    assert_eq!(f32s(&mx), vec![7.0, 2.0, 3.0, 4.0]);
}

#[test]
fn pad_modes() {
    let x = f32v(&[3], &[1.0, 2.0, 3.0]);
    let pads = i64v(&[2], &[2, 3]);
    let p = |mode: &str| {
        f32s(
            &evo(
                Op::Pad(PadAttrs { mode: mode.into() }),
                &[Some(&x), Some(&pads), Some(&f32v(&[], &[9.0]))],
                1,
            )[0],
        )
    };
    assert_eq!(p("constant"), vec![9.0, 9.0, 1.0, 2.0, 3.0, 9.0, 9.0, 9.0]);
    assert_eq!(p("edge"), vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0]);
    assert_eq!(p("reflect"), vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0, 2.0]);
    assert_eq!(p("wrap"), vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    // Negative pads crop; `axes` selects dimensions.
    let m = f32v(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let c = evo(
        Op::Pad(PadAttrs::default()),
        &[
            Some(&m),
            Some(&i64v(&[2], &[-1, 1])),
            None,
            Some(&i64v(&[1], &[1])),
        ],
        1,
    )
    .remove(0);
    assert_eq!(c.shape(), &[2, 3]);
    assert_eq!(f32s(&c), vec![2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
}

#[test]
fn tile_expand_concat_split() {
    let x = f32v(&[1, 2], &[1.0, 2.0]);
    let t = ev1(Op::Tile, &[&x, &i64v(&[2], &[2, 2])]);
    assert_eq!(t.shape(), &[2, 4]);
    assert_eq!(f32s(&t), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    let e = ev1(Op::Expand, &[&x, &i64v(&[3], &[2, 1, 1])]);
    assert_eq!(e.shape(), &[2, 1, 2]);
    let c = ev1(
        Op::Concat(ConcatAttrs { axis: -1 }),
        &[&x, &f32v(&[1, 1], &[3.0])],
    );
    assert_eq!(f32s(&c), vec![1.0, 2.0, 3.0]);
    let v = f32v(&[5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let parts = evo(
        Op::Split(SplitAttrs {
            axis: 0,
            num_outputs: Some(2),
        }),
        &[Some(&v)],
        2,
    );
    assert_eq!(f32s(&parts[0]), vec![1.0, 2.0, 3.0]);
    assert_eq!(f32s(&parts[1]), vec![4.0, 5.0]);
    let parts = evo(
        Op::Split(SplitAttrs::default()),
        &[Some(&v), Some(&i64v(&[2], &[1, 4]))],
        2,
    );
    assert_eq!(parts[1].shape(), &[4]);
}

#[test]
fn topk_is_stable() {
    let x = f32v(&[5], &[3.0, 1.0, 3.0, 5.0, 1.0]);
    let out = ev(Op::TopK(TopKAttrs::default()), &[&x, &i64v(&[1], &[3])]);
    assert_eq!(f32s(&out[0]), vec![5.0, 3.0, 3.0]);
    assert_eq!(i64s(&out[1]), vec![3, 0, 2]);
    let out = ev(
        Op::TopK(TopKAttrs {
            largest: false,
            ..TopKAttrs::default()
        }),
        &[&x, &i64v(&[1], &[2])],
    );
    assert_eq!(i64s(&out[1]), vec![1, 4]);
}

#[test]
fn index_generators() {
    let nz = ev1(Op::NonZero, &[&f32v(&[2, 2], &[0.0, 1.0, 2.0, 0.0])]);
    assert_eq!(nz.shape(), &[2, 2]);
    assert_eq!(i64s(&nz), vec![0, 1, 1, 0]);
    let r = ev1(
        Op::Range,
        &[&scalar_i64(10), &scalar_i64(4), &scalar_i64(-3)],
    );
    assert_eq!(i64s(&r), vec![10, 7]);
    let rf = ev1(
        Op::Range,
        &[&f32v(&[], &[0.0]), &f32v(&[], &[1.0]), &f32v(&[], &[0.3])],
    );
    assert_eq!(rf.shape(), &[4]);
    let oh = ev1(
        Op::OneHot(OneHotAttrs { axis: -1 }),
        &[
            &i64v(&[3], &[0, -1, 5]),
            &scalar_i64(3),
            &f32v(&[2], &[0.0, 1.0]),
        ],
    );
    assert_eq!(f32s(&oh), vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    let eye = ev1(
        Op::EyeLike(EyeLikeAttrs {
            dtype: Some(DType::I32),
            k: 1,
        }),
        &[&f32v(&[2, 3], &[0.0; 6])],
    );
    assert_eq!(eye.dtype(), DType::I32);
    assert_eq!(i64s(&eye), vec![0, 1, 0, 0, 0, 1]);
    let sh = ev1(
        Op::Shape(ShapeAttrs {
            start: 1,
            end: Some(-1),
        }),
        &[&f32v(&[2, 3, 4, 5], &[0.0; 120])],
    );
    assert_eq!(i64s(&sh), vec![3, 4]);
    let cs = ev1(
        Op::ConstantOfShape(ConstantOfShapeAttrs {
            value: Some(Tensor::from_vec(vec![1], vec![7i32])),
        }),
        &[&i64v(&[2], &[2, 1])],
    );
    assert_eq!(cs.dtype(), DType::I32);
    assert_eq!(i64s(&cs), vec![7, 7]);
}

#[test]
fn cumsum_trilu_compress_reverse() {
    let x = f32v(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let c = ev1(
        Op::CumSum(CumSumAttrs {
            exclusive: true,
            reverse: true,
        }),
        &[&x, &scalar_i64(0)],
    );
    assert_eq!(f32s(&c), vec![9.0, 7.0, 4.0, 0.0]);
    let m = f32v(&[3, 3], &(1..=9).map(|i| i as f32).collect::<Vec<_>>());
    let u = evo(
        Op::Trilu(TriluAttrs { upper: true }),
        &[Some(&m), Some(&scalar_i64(1))],
        1,
    )
    .remove(0);
    assert_eq!(f32s(&u), vec![0.0, 2.0, 3.0, 0.0, 0.0, 6.0, 0.0, 0.0, 0.0]);
    let l = evo(Op::Trilu(TriluAttrs { upper: false }), &[Some(&m)], 1).remove(0);
    assert_eq!(f32s(&l), vec![1.0, 0.0, 0.0, 4.0, 5.0, 0.0, 7.0, 8.0, 9.0]);
    let cp = ev1(
        Op::Compress(CompressAttrs { axis: Some(1) }),
        &[&m, &boolv(&[2], &[false, true])],
    );
    assert_eq!(f32s(&cp), vec![2.0, 5.0, 8.0]);
    let cflat = ev1(
        Op::Compress(CompressAttrs { axis: None }),
        &[&m, &boolv(&[3], &[true, false, true])],
    );
    assert_eq!(f32s(&cflat), vec![1.0, 3.0]);
    let rs = ev1(
        Op::ReverseSequence(ReverseSequenceAttrs {
            batch_axis: 0,
            time_axis: 1,
        }),
        &[&m, &i64v(&[3], &[1, 2, 3])],
    );
    assert_eq!(f32s(&rs), vec![1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 9.0, 8.0, 7.0]);
}

#[test]
fn depth_space_round_trip() {
    let x = f32v(&[1, 4, 1, 2], &(0..8).map(|i| i as f32).collect::<Vec<_>>());
    let d = ev1(
        Op::DepthToSpace(DepthToSpaceAttrs {
            blocksize: 2,
            mode: "DCR".into(),
        }),
        &[&x],
    );
    assert_eq!(d.shape(), &[1, 1, 2, 4]);
    assert_eq!(f32s(&d), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    let back = ev1(Op::SpaceToDepth(BlockAttrs { blocksize: 2 }), &[&d]);
    assert_eq!(back, x);
    let crd = ev1(
        Op::DepthToSpace(DepthToSpaceAttrs {
            blocksize: 2,
            mode: "CRD".into(),
        }),
        &[&x],
    );
    assert_eq!(f32s(&crd), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
}

#[test]
fn non_max_suppression() {
    let boxes = f32v(
        &[1, 3, 4],
        &[0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, 2.0, 1.0, 3.0],
    );
    let scores = f32v(&[1, 1, 3], &[0.9, 0.8, 0.7]);
    let sel = evo(
        Op::NonMaxSuppression(NmsAttrs::default()),
        &[
            Some(&boxes),
            Some(&scores),
            Some(&scalar_i64(3)),
            Some(&f32v(&[1], &[0.5])),
            None,
        ],
        1,
    )
    .remove(0);
    assert_eq!(sel.shape(), &[2, 3]);
    assert_eq!(i64s(&sel), vec![0, 0, 0, 0, 0, 2]);
}

// ------------------------------------------------------------------------------------------
// Reductions

#[test]
fn reductions() {
    let x = f32v(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let r = |op: Op, axes: Option<&Value>| evo(op, &[Some(&x), axes], 1).remove(0);
    let keep = ReduceAttrs::default();
    let s = r(Op::ReduceSum(keep.clone()), Some(&i64v(&[1], &[1])));
    assert_eq!(s.shape(), &[2, 1]);
    assert_eq!(f32s(&s), vec![6.0, 15.0]);
    let all = r(
        Op::ReduceMean(ReduceAttrs {
            keepdims: false,
            ..keep.clone()
        }),
        None,
    );
    assert_eq!(all.shape(), &[] as &[usize]);
    assert_eq!(f32s(&all), vec![3.5]);
    let noop = r(
        Op::ReduceSum(ReduceAttrs {
            noop_with_empty_axes: true,
            ..keep.clone()
        }),
        Some(&i64v(&[0], &[])),
    );
    assert_eq!(noop, x);
    assert_close(
        &f32s(&r(Op::ReduceL2(keep.clone()), Some(&i64v(&[1], &[0])))),
        &[4.1231055, 5.3851647, 6.708_204],
        1e-6,
    );
    assert_close(
        &f32s(&r(
            Op::ReduceLogSumExp(keep.clone()),
            Some(&i64v(&[1], &[-1])),
        )),
        &[3.407_606, 6.407_606],
        1e-6,
    );
    assert_eq!(
        f32s(&r(Op::ReduceProd(keep.clone()), Some(&i64v(&[1], &[0])))),
        vec![4.0, 10.0, 18.0]
    );
    let empty = f32v(&[0, 2], &[]);
    let m = evo(
        Op::ReduceMax(keep.clone()),
        &[Some(&empty), Some(&i64v(&[1], &[0]))],
        1,
    )
    .remove(0);
    assert_eq!(f32s(&m), vec![f32::NEG_INFINITY; 2]);
    let ints = i64v(&[3], &[i64::MAX, 1, -5]);
    let mx = evo(
        Op::ReduceMax(ReduceAttrs {
            keepdims: false,
            ..keep
        }),
        &[Some(&ints), None],
        1,
    )
    .remove(0);
    assert_eq!(i64s(&mx), vec![i64::MAX]);
}

#[test]
fn argmax_and_softmax() {
    let x = f32v(&[2, 3], &[1.0, 3.0, 3.0, 0.0, -1.0, 0.0]);
    let a = ev1(
        Op::ArgMax(ArgAttrs {
            axis: 1,
            keepdims: false,
            select_last_index: false,
        }),
        &[&x],
    );
    assert_eq!(i64s(&a), vec![1, 0]);
    let a = ev1(
        Op::ArgMax(ArgAttrs {
            axis: 1,
            keepdims: true,
            select_last_index: true,
        }),
        &[&x],
    );
    assert_eq!(a.shape(), &[2, 1]);
    assert_eq!(i64s(&a), vec![2, 2]);
    let s = ev1(Op::Softmax(AxisAttrs { axis: 0 }), &[&x]);
    assert_close(
        &f32s(&s),
        &[
            0.7310586, 0.98201376, 0.95257413, 0.26894142, 0.01798621, 0.04742587,
        ],
        1e-6,
    );
    let l = ev1(
        Op::LogSoftmax(AxisAttrs { axis: -1 }),
        &[&f32v(&[2], &[0.0, 0.0])],
    );
    assert_close(&f32s(&l), &[-std::f32::consts::LN_2; 2], 1e-6);
    let h = ev1(Op::Hardmax(AxisAttrs { axis: -1 }), &[&x]);
    assert_eq!(f32s(&h), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

// ------------------------------------------------------------------------------------------
// Convolution and pooling

fn naive_conv2d(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    k: &[f32],
    (m, kh, kw): (usize, usize, usize),
    pad: usize,
    stride: usize,
) -> (Vec<f32>, usize, usize) {
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (w + 2 * pad - kw) / stride + 1;
    let mut out = vec![0.0; m * oh * ow];
    for mi in 0..m {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0;
                for ci in 0..c {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += x[(ci * h + iy as usize) * w + ix as usize]
                                    * k[((mi * c + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                out[(mi * oh + oy) * ow + ox] = s;
            }
        }
    }
    (out, oh, ow)
}

#[test]
fn conv2d_matches_naive() {
    let (c, h, w, m) = (3, 7, 6, 4);
    let x: Vec<f32> = (0..c * h * w)
        .map(|i| ((i * 7) % 11) as f32 - 5.0)
        .collect();
    let k: Vec<f32> = (0..m * c * 9).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
    let at = ConvAttrs {
        pads: Some(vec![1, 1, 1, 1]),
        strides: Some(vec![2, 2]),
        ..ConvAttrs::default()
    };
    let y = evo(
        Op::Conv(at),
        &[
            Some(&f32v(&[1, c, h, w], &x)),
            Some(&f32v(&[m, c, 3, 3], &k)),
            Some(&f32v(&[m], &[1.0, 0.0, 0.0, -1.0])),
        ],
        1,
    )
    .remove(0);
    let (mut want, oh, ow) = naive_conv2d(&x, (c, h, w), &k, (m, 3, 3), 1, 2);
    for (i, v) in want.iter_mut().enumerate() {
        *v += [1.0, 0.0, 0.0, -1.0][i / (oh * ow)];
    }
    assert_eq!(y.shape(), &[1, m, oh, ow]);
    assert_close(&f32s(&y), &want, 1e-5);
}

#[test]
fn conv_groups_dilation_same_padding() {
    // Depthwise 1-D conv with dilation 2 and SAME_UPPER padding.
    let x = f32v(
        &[1, 2, 5],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    );
    let w = f32v(&[2, 1, 2], &[1.0, 1.0, 1.0, -1.0]);
    let at = ConvAttrs {
        group: 2,
        dilations: Some(vec![2]),
        auto_pad: "SAME_UPPER".into(),
        ..ConvAttrs::default()
    };
    let y = evo(Op::Conv(at), &[Some(&x), Some(&w)], 1).remove(0);
    assert_eq!(y.shape(), &[1, 2, 5]);
    // Effective kernel 3, total pad 2 -> 1 each side: y[i] = x[i-1] + x[i+1].
    assert_eq!(
        f32s(&y),
        vec![2.0, 4.0, 6.0, 8.0, 4.0, -1.0, 0.0, 0.0, 0.0, 1.0]
    );
}

#[test]
fn conv_transpose_basic() {
    let x = f32v(&[1, 1, 3], &[1.0, 2.0, 3.0]);
    let w = f32v(&[1, 1, 2], &[1.0, 10.0]);
    let at = ConvTransposeAttrs {
        strides: Some(vec![2]),
        ..ConvTransposeAttrs::default()
    };
    let y = evo(Op::ConvTranspose(at), &[Some(&x), Some(&w)], 1).remove(0);
    assert_eq!(f32s(&y), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
    let at = ConvTransposeAttrs {
        pads: Some(vec![1, 0]),
        output_padding: Some(vec![1]),
        strides: Some(vec![2]),
        ..ConvTransposeAttrs::default()
    };
    let y = evo(
        Op::ConvTranspose(at),
        &[Some(&x), Some(&w), Some(&f32v(&[1], &[0.5]))],
        1,
    )
    .remove(0);
    assert_eq!(f32s(&y), vec![10.5, 2.5, 20.5, 3.5, 30.5, 0.5]);
}

#[test]
fn pooling() {
    let x = f32v(
        &[1, 1, 3, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    );
    let p = PoolAttrs {
        kernel_shape: vec![2, 2],
        ..PoolAttrs::default()
    };
    let mp = evo(Op::MaxPool(p.clone()), &[Some(&x)], 2);
    assert_eq!(f32s(&mp[0]), vec![5.0, 6.0, 8.0, 9.0]);
    assert_eq!(i64s(&mp[1]), vec![4, 5, 7, 8]);
    let col = evo(
        Op::MaxPool(PoolAttrs {
            storage_order: 1,
            ..p.clone()
        }),
        &[Some(&x)],
        2,
    );
    assert_eq!(i64s(&col[1]), vec![4, 7, 5, 8]);
    let ceil = PoolAttrs {
        strides: Some(vec![2, 2]),
        ceil_mode: true,
        ..p.clone()
    };
    let mp = ev1(Op::MaxPool(ceil), &[&x]);
    assert_eq!(mp.shape(), &[1, 1, 2, 2]);
    assert_eq!(f32s(&mp), vec![5.0, 6.0, 8.0, 9.0]);
    let padded = PoolAttrs {
        pads: Some(vec![1, 1, 1, 1]),
        strides: Some(vec![2, 2]),
        ..p.clone()
    };
    let avg = ev1(Op::AveragePool(padded.clone()), &[&x]);
    assert_eq!(f32s(&avg), vec![1.0, 2.5, 5.5, 7.0]);
    let inc = ev1(
        Op::AveragePool(PoolAttrs {
            count_include_pad: true,
            ..padded
        }),
        &[&x],
    );
    assert_eq!(f32s(&inc), vec![0.25, 1.25, 2.75, 7.0]);
    let lp = ev1(Op::LpPool(PoolAttrs { p: 1, ..p }), &[&x]);
    assert_eq!(f32s(&lp), vec![12.0, 16.0, 24.0, 28.0]);
    assert_eq!(f32s(&ev1(Op::GlobalAveragePool, &[&x])), vec![5.0]);
    assert_eq!(f32s(&ev1(Op::GlobalMaxPool, &[&x])), vec![9.0]);
    let glp = ev1(
        Op::GlobalLpPool(GlobalLpPoolAttrs { p: 2 }),
        &[&f32v(&[1, 1, 2], &[3.0, 4.0])],
    );
    assert_eq!(glp.shape(), &[1, 1, 1]);
    assert_close(&f32s(&glp), &[5.0], 1e-6);
}

// ------------------------------------------------------------------------------------------
// Normalization

#[test]
fn layer_norm_and_batch_norm() {
    let x = f32v(&[2, 2], &[1.0, 3.0, 0.0, 4.0]);
    let out = evo(
        Op::LayerNormalization(LayerNormAttrs {
            epsilon: 0.0,
            ..LayerNormAttrs::default()
        }),
        &[
            Some(&x),
            Some(&f32v(&[2], &[1.0, 2.0])),
            Some(&f32v(&[2], &[0.0, 1.0])),
        ],
        3,
    );
    assert_close(&f32s(&out[0]), &[-1.0, 3.0, -1.0, 3.0], 1e-6);
    assert_eq!(out[1].shape(), &[2, 1]);
    assert_close(&f32s(&out[1]), &[2.0, 2.0], 1e-6);
    assert_close(&f32s(&out[2]), &[1.0, 0.5], 1e-6);
    let bx = f32v(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let bn = evo(
        Op::BatchNormalization(BatchNormAttrs {
            epsilon: 0.0,
            ..BatchNormAttrs::default()
        }),
        &[
            Some(&bx),
            Some(&f32v(&[2], &[1.0, 2.0])),
            Some(&f32v(&[2], &[0.0, 1.0])),
            Some(&f32v(&[2], &[1.0, 3.0])),
            Some(&f32v(&[2], &[1.0, 4.0])),
        ],
        1,
    );
    assert_close(&f32s(&bn[0]), &[0.0, 1.0, 1.0, 2.0], 1e-6);
}

#[test]
fn instance_group_lp_norms() {
    let x = f32v(&[1, 2, 2], &[1.0, 3.0, 5.0, 9.0]);
    let inorm = ev1(
        Op::InstanceNormalization(EpsAttrs { epsilon: 0.0 }),
        &[&x, &f32v(&[2], &[1.0, 1.0]), &f32v(&[2], &[0.0, 7.0])],
    );
    assert_close(&f32s(&inorm), &[-1.0, 1.0, 6.0, 8.0], 1e-6);
    let g = ev1(
        Op::GroupNormalization(GroupNormAttrs {
            epsilon: 0.0,
            num_groups: 1,
            stash_type: 1,
        }),
        &[&x, &f32v(&[2], &[1.0, 2.0]), &f32v(&[2], &[0.0, 0.0])],
    );
    // Mean 4.5, variance 8.75 over the single group; channel 1 scaled by 2.
    let sd = 8.75f32.sqrt();
    assert_close(
        &f32s(&g),
        &[-3.5 / sd, -1.5 / sd, 2.0 * 0.5 / sd, 2.0 * 4.5 / sd],
        1e-5,
    );
    let lp = ev1(
        Op::LpNormalization(LpNormAttrs { axis: -1, p: 2 }),
        &[&f32v(&[2, 2], &[3.0, 4.0, 0.0, 0.0])],
    );
    assert_eq!(f32s(&lp), vec![0.6, 0.8, 0.0, 0.0]);
    let lrn = ev1(
        Op::Lrn(LrnAttrs {
            alpha: 1.0,
            beta: 1.0,
            bias: 1.0,
            size: 3,
        }),
        &[&f32v(&[1, 2, 1, 1], &[1.0, 2.0])],
    );
    // square sums over neighbouring channels: 5 for both; y = x / (1 + 5/3).
    assert_close(&f32s(&lrn), &[0.375, 0.75], 1e-6);
    let mvn = ev1(
        Op::MeanVarianceNormalization(MvnAttrs { axes: vec![0, 1] }),
        &[&f32v(&[2, 1], &[1.0, 3.0])],
    );
    assert_close(&f32s(&mvn), &[-1.0, 1.0], 1e-6);
}

// ------------------------------------------------------------------------------------------
// Resize

#[test]
fn resize_modes() {
    let x = f32v(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let scales = f32v(&[4], &[1.0, 1.0, 2.0, 2.0]);
    let nearest = evo(
        Op::Resize(ResizeAttrs {
            coordinate_transformation_mode: "asymmetric".into(),
            nearest_mode: "floor".into(),
            ..ResizeAttrs::default()
        }),
        &[Some(&x), None, Some(&scales)],
        1,
    )
    .remove(0);
    assert_eq!(nearest.shape(), &[1, 1, 4, 4]);
    assert_eq!(
        f32s(&nearest)[..8],
        [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]
    );
    let sizes = i64v(&[4], &[1, 1, 3, 3]);
    let lin = evo(
        Op::Resize(ResizeAttrs {
            mode: "linear".into(),
            coordinate_transformation_mode: "align_corners".into(),
            ..ResizeAttrs::default()
        }),
        &[Some(&x), None, None, Some(&sizes)],
        1,
    )
    .remove(0);
    assert_eq!(
        f32s(&lin),
        vec![1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]
    );
    // `axes` with `keep_aspect_ratio_policy`.
    let sz = i64v(&[2], &[4, 8]);
    let keep = ResizeAttrs {
        axes: Some(vec![2, 3]),
        keep_aspect_ratio_policy: "not_larger".into(),
        ..ResizeAttrs::default()
    };
    let k = evo(Op::Resize(keep), &[Some(&x), None, None, Some(&sz)], 1).remove(0);
    assert_eq!(k.shape(), &[1, 1, 4, 4]);
    // Integer inputs round back.
    let xi = u8v(&[1, 2], &[0, 255]);
    let li = evo(
        Op::Resize(ResizeAttrs {
            mode: "linear".into(),
            coordinate_transformation_mode: "align_corners".into(),
            ..ResizeAttrs::default()
        }),
        &[Some(&xi), None, None, Some(&i64v(&[2], &[1, 3]))],
        1,
    )
    .remove(0);
    assert_eq!(i64s(&li), vec![0, 128, 255]);
}

// ------------------------------------------------------------------------------------------
// Recurrent

#[test]
fn rnn_cells_known_values() {
    // One step, hidden 1, input 1: RNN with W=1, R=1, biases 0 -> tanh(x + h0).
    let x = f32v(&[2, 1, 1], &[0.5, -0.25]);
    let w = f32v(&[1, 1, 1], &[1.0]);
    let r = f32v(&[1, 1, 1], &[1.0]);
    let h0 = f32v(&[1, 1, 1], &[0.1]);
    let out = evo(
        Op::Rnn(RnnAttrs {
            hidden_size: Some(1),
            ..RnnAttrs::default()
        }),
        &[Some(&x), Some(&w), Some(&r), None, None, Some(&h0)],
        2,
    );
    let h1 = (0.5f32 + 0.1).tanh();
    let h2 = (-0.25f32 + h1).tanh();
    assert_eq!(out[0].shape(), &[2, 1, 1, 1]);
    assert_close(&f32s(&out[0]), &[h1, h2], 1e-6);
    assert_close(&f32s(&out[1]), &[h2], 1e-6);
    // Reverse direction with sequence_lens 1: only t=0 is processed.
    let out = evo(
        Op::Rnn(RnnAttrs {
            direction: "reverse".into(),
            ..RnnAttrs::default()
        }),
        &[
            Some(&x),
            Some(&w),
            Some(&r),
            None,
            Some(&i32v(&[1], &[1])),
            Some(&h0),
        ],
        2,
    );
    assert_close(&f32s(&out[0]), &[h1, 0.0], 1e-6);

    // LSTM with zero weights and bias b on the cell gate: i = f = o = 0.5, c = tanh(b).
    let xw = f32v(&[1, 1, 1], &[0.0]);
    let w4 = f32v(&[1, 4, 1], &[0.0; 4]);
    let r4 = f32v(&[1, 4, 1], &[0.0; 4]);
    let b = f32v(&[1, 8], &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let c0 = f32v(&[1, 1, 1], &[2.0]);
    let out = evo(
        Op::Lstm(RnnAttrs::default()),
        &[
            Some(&xw),
            Some(&w4),
            Some(&r4),
            Some(&b),
            None,
            None,
            Some(&c0),
        ],
        3,
    );
    let c1 = 0.5 * 2.0 + 0.5 * 1f32.tanh();
    assert_close(&f32s(&out[2]), &[c1], 1e-6);
    assert_close(&f32s(&out[1]), &[0.5 * c1.tanh()], 1e-6);

    // GRU with zero weights: z = r = 0.5, h~ = tanh(0) = 0 -> h = 0.5 * h0.
    let w3 = f32v(&[1, 3, 1], &[0.0; 3]);
    let out = evo(
        Op::Gru(RnnAttrs::default()),
        &[Some(&xw), Some(&w3), Some(&w3), None, None, Some(&c0)],
        2,
    );
    assert_close(&f32s(&out[1]), &[1.0], 1e-6);
}

// ------------------------------------------------------------------------------------------
// Quantization

#[test]
fn quantize_dequantize() {
    let x = f32v(&[2, 2], &[0.0, 1.0, 2.5, -300.0]);
    let q = evo(
        Op::QuantizeLinear(QuantizeAttrs::default()),
        &[Some(&x), Some(&f32v(&[], &[0.5])), Some(&u8v(&[], &[10]))],
        1,
    )
    .remove(0);
    assert_eq!(q.dtype(), DType::U8);
    assert_eq!(i64s(&q), vec![10, 12, 15, 0]); // 2.5/0.5 = 5 -> 15; -600 clamps to 0
                                               // Per-axis (axis 1), int8 output via output_dtype.
    let qa = QuantizeAttrs {
        axis: 1,
        output_dtype: 3,
        ..QuantizeAttrs::default()
    };
    let q = evo(
        Op::QuantizeLinear(qa),
        &[Some(&x), Some(&f32v(&[2], &[1.0, 0.5]))],
        1,
    )
    .remove(0);
    assert_eq!(q.dtype(), DType::I8);
    assert_eq!(i64s(&q), vec![0, 2, 2, -128]); // 2.5 rounds to even: 2
                                               // Blocked along axis 1 with block 2 on a [1, 4] input: scales [1, 2].
    let xb = f32v(&[1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let qb = QuantizeAttrs {
        axis: 1,
        block_size: 2,
        output_dtype: 22,
        ..QuantizeAttrs::default()
    };
    let q = evo(
        Op::QuantizeLinear(qb),
        &[Some(&xb), Some(&f32v(&[1, 2], &[1.0, 2.0]))],
        1,
    )
    .remove(0);
    assert_eq!(q.dtype(), DType::I4);
    assert_eq!(i64s(&q), vec![1, 2, 2, 2]);
    let dq = evo(
        Op::DequantizeLinear(DequantizeAttrs {
            axis: 1,
            block_size: 2,
        }),
        &[Some(&q), Some(&f32v(&[1, 2], &[1.0, 2.0]))],
        1,
    )
    .remove(0);
    assert_eq!(f32s(&dq), vec![1.0, 2.0, 4.0, 4.0]);
    let d = evo(
        Op::DequantizeLinear(DequantizeAttrs::default()),
        &[
            Some(&u8v(&[2], &[10, 12])),
            Some(&f32v(&[], &[0.5])),
            Some(&u8v(&[], &[10])),
        ],
        1,
    )
    .remove(0);
    assert_eq!(f32s(&d), vec![0.0, 1.0]);
    // Float8 output ignores the zero point and saturates.
    let f8 = evo(
        Op::QuantizeLinear(QuantizeAttrs {
            output_dtype: 17,
            ..QuantizeAttrs::default()
        }),
        &[Some(&f32v(&[2], &[1.0, 1e6])), Some(&f32v(&[], &[1.0]))],
        1,
    )
    .remove(0);
    assert_eq!(f8.to_f64_vec().unwrap(), vec![1.0, 448.0]);
}

#[test]
fn dynamic_and_integer_products() {
    let x = f32v(&[3], &[-1.0, 0.0, 1.55]);
    let out = evo(Op::DynamicQuantizeLinear, &[Some(&x)], 3);
    let scale = (1.55f32 + 1.0) / 255.0;
    assert_close(&f32s(&out[1]), &[scale], 1e-7);
    let zp = (1.0f32 / scale).round_ties_even();
    assert_eq!(i64s(&out[2]), vec![zp as i64]);
    assert_eq!(i64s(&out[0])[1], zp as i64);

    let a = u8v(&[2, 2], &[11, 12, 13, 14]);
    let b = u8v(&[2, 1], &[1, 2]);
    let mi = evo(
        Op::MatMulInteger,
        &[Some(&a), Some(&b), Some(&u8v(&[], &[10])), None],
        1,
    )
    .remove(0);
    assert_eq!(mi.dtype(), DType::I32);
    assert_eq!(i64s(&mi), vec![5, 11]);
    let ql = evo(
        Op::QLinearMatMul,
        &[
            Some(&a),
            Some(&f32v(&[], &[0.5])),
            Some(&u8v(&[], &[10])),
            Some(&b),
            Some(&f32v(&[], &[1.0])),
            Some(&u8v(&[], &[0])),
            Some(&f32v(&[], &[0.25])),
            Some(&u8v(&[], &[1])),
        ],
        1,
    )
    .remove(0);
    assert_eq!(i64s(&ql), vec![11, 23]);
    let ci = evo(
        Op::ConvInteger(ConvAttrs::default()),
        &[
            Some(&u8v(&[1, 1, 3], &[1, 2, 3])),
            Some(&u8v(&[1, 1, 2], &[1, 1])),
            Some(&u8v(&[], &[1])),
            None,
        ],
        1,
    )
    .remove(0);
    assert_eq!(i64s(&ci), vec![1, 3]);
}

// ------------------------------------------------------------------------------------------
// Graphs, control flow, executor

fn f32_ty(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, Shape::fixed(shape))
}

#[test]
fn executor_checks_inputs_and_names_failing_node() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32_ty(&[2]));
    let y = g.add_input("y", f32_ty(&[3]));
    let z = g.add_simple("the_add", Op::Add, &[x, y]);
    g.add_output(z);
    let it = Interpreter::new();
    let err = it
        .run_values(&g, vec![f32v(&[3], &[0.0; 3]), f32v(&[3], &[0.0; 3])])
        .unwrap_err();
    assert!(matches!(err, InterpError::Input { index: 0, .. }), "{err}");
    let err = it
        .run_values(&g, vec![i64v(&[2], &[0, 0]), f32v(&[3], &[0.0; 3])])
        .unwrap_err();
    assert!(err.to_string().contains("dtype"), "{err}");
    let err = it.run_values(&g, vec![f32v(&[2], &[0.0; 2])]).unwrap_err();
    assert!(matches!(
        err,
        InterpError::InputCount {
            expected: 2,
            got: 1,
            ..
        }
    ));
    let err = it
        .check_inputs(false)
        .run_values(&g, vec![f32v(&[2], &[0.0; 2]), f32v(&[3], &[0.0; 3])])
        .unwrap_err();
    match err {
        InterpError::Node { node, op, msg } => {
            assert_eq!(node, "the_add");
            assert_eq!(op, "Add");
            assert!(msg.contains("broadcast"), "{msg}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn executor_runs_graph_with_constants_and_observer() {
    let mut g = Graph::new("g");
    let x = g.add_input(
        "x",
        TensorType::new(
            DType::F32,
            Shape(vec![pare_ir::Dim::Sym("N".into()), pare_ir::Dim::Fixed(2)]),
        ),
    );
    let w = g.add_const(
        "w",
        Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]),
    );
    let mm = g.add_simple("mm", Op::MatMul, &[x, w]);
    let r = g.add_simple("relu", Op::Relu, &[mm]);
    let shape = g.add_const("shape", Tensor::from_vec(vec![1], vec![-1i64]));
    let flat = g.add_simple("flat", Op::Reshape(ReshapeAttrs::default()), &[r, shape]);
    g.add_output(flat);
    g.add_output(mm);
    g.add_output(w);
    let xt = Tensor::from_vec(vec![1, 2], vec![1.0f32, -1.0]);
    let it = Interpreter::with_threads(1).cache_constants(true);
    for _ in 0..2 {
        let out = it.run(&g, std::slice::from_ref(&xt)).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
        assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![-2.0, -2.0]);
        assert_eq!(out[2].to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    }
    let mut seen = Vec::new();
    let out = Interpreter::new()
        .run_observed(&g, vec![Value::from_tensor(&xt).unwrap()], &mut |v, val| {
            seen.push((v, val.shape().to_vec()))
        })
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(seen.len(), 4); // x, mm, relu, flat
    assert_eq!(seen[0].0, x);
}

#[test]
fn if_loop_scan() {
    // If: then = x + c, else = x * c, with x and c captured.
    let mk_branch = |op: Op| {
        let mut b = Graph::new("branch");
        let x = b.add_input("x", TensorType::UNKNOWN);
        let c = b.add_input("c", TensorType::UNKNOWN);
        let y = b.add_simple("y", op, &[x, c]);
        b.add_output(y);
        b.set_num_captures(2);
        b
    };
    let at = IfAttrs {
        then_branch: mk_branch(Op::Add),
        else_branch: mk_branch(Op::Mul),
    };
    let x = f32v(&[2], &[1.0, 2.0]);
    let c = f32v(&[], &[3.0]);
    let t = evo(
        Op::If(at.clone()),
        &[Some(&boolv(&[], &[true])), Some(&x), Some(&c)],
        1,
    );
    assert_eq!(f32s(&t[0]), vec![4.0, 5.0]);
    let e = evo(
        Op::If(at),
        &[Some(&boolv(&[1], &[false])), Some(&x), Some(&c)],
        1,
    );
    assert_eq!(f32s(&e[0]), vec![3.0, 6.0]);

    // Loop: carried s += step (captured); scan output collects s; stops after M = 3.
    let mut body = Graph::new("body");
    let _i = body.add_input("i", TensorType::UNKNOWN);
    let cond = body.add_input("cond", TensorType::UNKNOWN);
    let s = body.add_input("s", TensorType::UNKNOWN);
    let step = body.add_input("step", TensorType::UNKNOWN);
    let s2 = body.add_simple("s2", Op::Add, &[s, step]);
    let cond_out = body.add_simple("cond_out", Op::Identity, &[cond]);
    body.add_output(cond_out);
    body.add_output(s2);
    body.add_output(s2);
    body.set_num_captures(1);
    let out = evo(
        Op::Loop(LoopAttrs { body }),
        &[
            Some(&scalar_i64(3)),
            Some(&boolv(&[], &[true])),
            Some(&f32v(&[1], &[0.0])),
            Some(&f32v(&[1], &[2.0])),
        ],
        2,
    );
    assert_eq!(f32s(&out[0]), vec![6.0]);
    assert_eq!(out[1].shape(), &[3, 1]);
    assert_eq!(f32s(&out[1]), vec![2.0, 4.0, 6.0]);

    // Scan: running sum over rows (state), in reverse, scan output = state.
    let mut body = Graph::new("scan_body");
    let st = body.add_input("st", TensorType::UNKNOWN);
    let xi = body.add_input("xi", TensorType::UNKNOWN);
    let ns = body.add_simple("ns", Op::Add, &[st, xi]);
    let so = body.add_simple("so", Op::Identity, &[ns]);
    body.add_output(ns);
    body.add_output(so);
    let at = ScanAttrs {
        body,
        num_scan_inputs: 1,
        scan_input_axes: None,
        scan_input_directions: Some(vec![1]),
        scan_output_axes: None,
        scan_output_directions: None,
    };
    let xs = f32v(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = evo(
        Op::Scan(at),
        &[Some(&f32v(&[2], &[0.0, 0.0])), Some(&xs)],
        2,
    );
    assert_eq!(f32s(&out[0]), vec![9.0, 12.0]);
    assert_eq!(f32s(&out[1]), vec![5.0, 6.0, 8.0, 10.0, 9.0, 12.0]);
}

#[test]
fn custom_op_is_reported_when_it_cannot_run() {
    let op = Op::Custom(pare_ir::CustomOp {
        domain: "x".into(),
        op_type: "Y".into(),
        attrs: Default::default(),
        def: None,
    });
    let err = eval_node(&op, &[Some(&f32v(&[1], &[0.0]))], 1).unwrap_err();
    assert!(err.contains("no reference semantics"), "{err}");
}

#[test]
fn gather_from_constant_table() {
    // The executor gathers rows of a constant without converting the whole table.
    let build = |axis: i64| {
        let mut g = Graph::new("emb");
        let ids = g.add_input("ids", TensorType::new(DType::I64, Shape::fixed(&[2])));
        let table = g.add_const(
            "table",
            Tensor::from_vec(vec![3, 2], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]),
        );
        let e = g.add_simple("e", Op::Gather(Axis0Attrs { axis }), &[table, ids]);
        g.add_output(e);
        g
    };
    let it = Interpreter::new();
    let out = it
        .run_values(&build(0), vec![i64v(&[2], &[2, -3])])
        .unwrap();
    assert_eq!(out[0].shape(), &[2, 2]);
    assert_eq!(f32s(&out[0]), vec![5.0, 6.0, 1.0, 2.0]);
    let err = it
        .run_values(&build(0), vec![i64v(&[2], &[2, 5])])
        .unwrap_err();
    assert!(err.to_string().contains("out of bounds"), "{err}");
    let out = it.run_values(&build(1), vec![i64v(&[2], &[1, 0])]).unwrap();
    assert_eq!(out[0].shape(), &[3, 2]);
    assert_eq!(f32s(&out[0]), vec![2.0, 1.0, 4.0, 3.0, 6.0, 5.0]);
}
