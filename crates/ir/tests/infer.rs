//! Type and shape inference: per-op rules through `infer_node`, and the whole-graph driver.

use pare_ir::infer::{infer_node, infer_types, merge_type, reinfer_types};
use pare_ir::op::*;
use pare_ir::{Attrs, CustomOp, CustomOpDef, DType, Dim, Graph, Op, Shape, Tensor, TensorType};
use std::sync::Arc;

/// Parses `f32[N,3,?]`, `i64[]`, `f32[*]` (unknown rank), `?[2]` (unknown dtype).
fn ty(s: &str) -> TensorType {
    let (d, rest) = s.split_once('[').expect("type has brackets");
    let dtype = if d == "?" {
        None
    } else {
        Some(DType::from_name(d).expect("dtype"))
    };
    let inner = rest.strip_suffix(']').expect("closing bracket");
    let shape = if inner == "*" {
        None
    } else if inner.is_empty() {
        Some(Shape(vec![]))
    } else {
        Some(Shape(
            inner
                .split(',')
                .map(|x| match x {
                    "?" => Dim::Unknown,
                    x => x
                        .parse::<u64>()
                        .map(Dim::Fixed)
                        .unwrap_or_else(|_| Dim::Sym(x.to_string())),
                })
                .collect(),
        ))
    };
    TensorType { dtype, shape }
}

/// An input of a test node: a type, a constant, or omitted.
enum In {
    T(&'static str),
    C(Tensor),
    No,
}
use In::{No, C, T};

fn i64s(v: &[i64]) -> In {
    C(Tensor::from_vec(vec![v.len()], v.to_vec()))
}
fn f32s(v: &[f32]) -> In {
    C(Tensor::from_vec(vec![v.len()], v.to_vec()))
}

fn infer_n(op: Op, ins: Vec<In>, n: usize) -> Result<Vec<TensorType>, String> {
    let tys: Vec<Option<TensorType>> = ins
        .iter()
        .map(|i| match i {
            T(s) => Some(ty(s)),
            C(t) => Some(TensorType::new(t.dtype(), Shape::fixed(t.shape()))),
            No => None,
        })
        .collect();
    let consts: Vec<Option<&Tensor>> = ins
        .iter()
        .map(|i| if let C(t) = i { Some(t) } else { None })
        .collect();
    let refs: Vec<Option<&TensorType>> = tys.iter().map(Option::as_ref).collect();
    infer_node(&op, &refs, &consts, n)
}

fn infer1(op: Op, ins: Vec<In>) -> Result<TensorType, String> {
    infer_n(op, ins, 1).map(|mut v| v.remove(0))
}

#[track_caller]
fn check(op: Op, ins: Vec<In>, want: &str) {
    let got = infer1(op, ins).unwrap_or_else(|e| panic!("inference failed: {e}"));
    assert_eq!(got, ty(want), "got {got}, want {want}");
}

#[track_caller]
fn check_n(op: Op, ins: Vec<In>, want: &[&str]) {
    let got = infer_n(op, ins, want.len()).unwrap_or_else(|e| panic!("inference failed: {e}"));
    let want: Vec<TensorType> = want.iter().map(|s| ty(s)).collect();
    assert_eq!(got, want);
}

#[track_caller]
fn check_err(op: Op, ins: Vec<In>, needle: &str) {
    match infer1(op, ins) {
        Ok(t) => panic!("expected an error containing '{needle}', got {t}"),
        Err(e) => assert!(
            e.contains(needle),
            "error '{e}' does not contain '{needle}'"
        ),
    }
}

// ---------------------------------------------------------------- elementwise

#[test]
fn broadcasting_with_symbols() {
    check(Op::Add, vec![T("f32[N,3]"), T("f32[1,3]")], "f32[N,3]");
    check(Op::Add, vec![T("f32[N,1,5]"), T("f32[4,1]")], "f32[N,4,5]");
    check(Op::Mul, vec![T("f32[N]"), T("f32[3]")], "f32[3]");
    check(Op::Mul, vec![T("f32[N]"), T("f32[M]")], "f32[?]");
    check(Op::Mul, vec![T("f32[N]"), T("f32[N]")], "f32[N]");
    check(Op::Sub, vec![T("f32[N,?]"), T("f32[*]")], "f32[*]");
    check(Op::Div, vec![T("f32[]"), T("f32[2,3]")], "f32[2,3]");
    check(
        Op::Sum,
        vec![T("f32[2,1]"), T("f32[1,3]"), T("f32[1]")],
        "f32[2,3]",
    );
    check_err(
        Op::Add,
        vec![T("f32[2,3]"), T("f32[4]")],
        "cannot broadcast [2,3] with [4]",
    );
    check_err(Op::Add, vec![T("f32[2]"), T("i64[2]")], "dtypes differ");
}

#[test]
fn predicates_and_casts() {
    check(Op::Equal, vec![T("i64[N,1]"), T("i64[5]")], "bool[N,5]");
    check(Op::Less, vec![T("f32[3]"), T("f32[]")], "bool[3]");
    check(Op::Not, vec![T("bool[2,N]")], "bool[2,N]");
    check(Op::IsNaN, vec![T("f16[7]")], "bool[7]");
    check(Op::And, vec![T("bool[2]"), T("bool[1]")], "bool[2]");
    check(
        Op::Cast(CastAttrs {
            to: DType::F16,
            saturate: true,
            round_mode: "up".into(),
        }),
        vec![T("f32[N,3]")],
        "f16[N,3]",
    );
    check(
        Op::CastLike(CastLikeAttrs::default()),
        vec![T("f32[N]"), T("i8[]")],
        "i8[N]",
    );
    check(
        Op::Where,
        vec![T("bool[N,1]"), T("f32[3]"), T("f32[1,3]")],
        "f32[N,3]",
    );
    check(Op::Pow, vec![T("f32[4]"), T("i64[]")], "f32[4]");
    check(Op::Relu, vec![T("f32[*]")], "f32[*]");
    check(Op::Clip, vec![T("f32[2,3]"), No, T("f32[]")], "f32[2,3]");
    check_n(
        Op::Dropout(DropoutAttrs::default()),
        vec![T("f32[N,8]")],
        &["f32[N,8]", "bool[N,8]"],
    );
    check_err(
        Op::Where,
        vec![T("f32[1]"), T("f32[3]"), T("f32[3]")],
        "Where condition",
    );
}

#[test]
fn quantization_dtypes() {
    let q = QuantizeAttrs::default();
    check(
        Op::QuantizeLinear(q.clone()),
        vec![T("f32[N,4]"), T("f32[]"), T("i8[]")],
        "i8[N,4]",
    );
    check(
        Op::QuantizeLinear(q.clone()),
        vec![T("f32[N,4]"), T("f32[]")],
        "u8[N,4]",
    );
    let q4 = QuantizeAttrs {
        output_dtype: 22,
        ..q
    };
    check(
        Op::QuantizeLinear(q4),
        vec![T("f32[8]"), T("f32[]")],
        "i4[8]",
    );
    check(
        Op::DequantizeLinear(DequantizeAttrs::default()),
        vec![T("u8[3,3]"), T("f16[]"), T("u8[]")],
        "f16[3,3]",
    );
    check_n(
        Op::DynamicQuantizeLinear,
        vec![T("f32[N,7]")],
        &["u8[N,7]", "f32[]", "u8[]"],
    );
    check(
        Op::MatMulInteger,
        vec![T("u8[N,4]"), T("i8[4,8]")],
        "i32[N,8]",
    );
    check(
        Op::QLinearMatMul,
        vec![
            T("u8[2,4]"),
            T("f32[]"),
            T("u8[]"),
            T("i8[4,5]"),
            T("f32[]"),
            T("i8[]"),
            T("f32[]"),
            T("i8[]"),
        ],
        "i8[2,5]",
    );
}

// ---------------------------------------------------------------- linear algebra

#[test]
fn matmul_shapes() {
    check(
        Op::MatMul,
        vec![T("f32[N,seq,384]"), T("f32[384,1536]")],
        "f32[N,seq,1536]",
    );
    check(Op::MatMul, vec![T("f32[3]"), T("f32[3,4]")], "f32[4]");
    check(Op::MatMul, vec![T("f32[2,3,4]"), T("f32[4]")], "f32[2,3]");
    check(Op::MatMul, vec![T("f32[3]"), T("f32[3]")], "f32[]");
    check(
        Op::MatMul,
        vec![T("f32[2,1,3,4]"), T("f32[5,4,6]")],
        "f32[2,5,3,6]",
    );
    check(
        Op::MatMul,
        vec![T("f32[B,H,S,64]"), T("f32[B,H,64,S]")],
        "f32[B,H,S,S]",
    );
    check(Op::MatMul, vec![T("f32[*]"), T("f32[3,4]")], "f32[*]");
    check_err(
        Op::MatMul,
        vec![T("f32[N,384]"), T("f32[512,10]")],
        "MatMul inner dims 384 vs 512",
    );
    check_err(Op::MatMul, vec![T("f32[]"), T("f32[3]")], "rank >= 1");
}

#[test]
fn gemm_shapes() {
    let g = GemmAttrs {
        trans_b: true,
        ..Default::default()
    };
    check(
        Op::Gemm(g.clone()),
        vec![T("f32[N,512]"), T("f32[1000,512]"), T("f32[1000]")],
        "f32[N,1000]",
    );
    check(
        Op::Gemm(GemmAttrs {
            trans_a: true,
            ..Default::default()
        }),
        vec![T("f32[4,3]"), T("f32[4,5]")],
        "f32[3,5]",
    );
    check_err(
        Op::Gemm(g.clone()),
        vec![T("f32[N,512]"), T("f32[1000,256]")],
        "Gemm inner dims 512 vs 256",
    );
    check_err(
        Op::Gemm(g),
        vec![T("f32[N,5]"), T("f32[7,5]"), T("f32[3]")],
        "does not broadcast",
    );
}

#[test]
fn einsum_shapes() {
    let e = |s: &str| Op::Einsum(EinsumAttrs { equation: s.into() });
    check(
        e("bij,bjk->bik"),
        vec![T("f32[B,3,4]"), T("f32[B,4,5]")],
        "f32[B,3,5]",
    );
    check(e("ij,jk"), vec![T("f32[2,3]"), T("f32[3,4]")], "f32[2,4]");
    check(e("ji"), vec![T("f32[2,3]")], "f32[3,2]");
    check(e("ii"), vec![T("f32[3,3]")], "f32[]");
    check(
        e("...ij,...jk->...ik"),
        vec![T("f32[N,2,3]"), T("f32[3,4]")],
        "f32[N,2,4]",
    );
    check(
        e("bhqd, bhkd -> bhqk"),
        vec![T("f32[B,8,S,64]"), T("f32[B,8,S,64]")],
        "f32[B,8,S,S]",
    );
    check(e("i,j->ij"), vec![T("f32[3]"), T("f32[5]")], "f32[3,5]");
    check_err(
        e("ij,jk->ik"),
        vec![T("f32[2,3]"), T("f32[4,5]")],
        "label 'j'",
    );
    check_err(e("ij->ik"), vec![T("f32[2,3]")], "does not appear");
    check_err(e("ijk->i"), vec![T("f32[2,3]")], "labels");
}

#[test]
fn det_shape() {
    check(Op::Det, vec![T("f32[N,3,3]")], "f32[N]");
    check_err(Op::Det, vec![T("f32[3,4]")], "square");
}

// ---------------------------------------------------------------- conv and pools

fn conv(f: impl FnOnce(&mut ConvAttrs)) -> Op {
    let mut a = ConvAttrs::default();
    f(&mut a);
    Op::Conv(a)
}

#[test]
fn conv_shapes() {
    let c = conv(|a| {
        a.strides = Some(vec![2, 2]);
        a.pads = Some(vec![3, 3, 3, 3]);
    });
    check(
        c,
        vec![T("f32[N,3,224,224]"), T("f32[64,3,7,7]"), T("f32[64]")],
        "f32[N,64,112,112]",
    );
    // SAME_UPPER: ceil(in / stride), also for odd extents.
    let same = conv(|a| {
        a.auto_pad = "SAME_UPPER".into();
        a.strides = Some(vec![2, 2]);
    });
    check(
        same.clone(),
        vec![T("f32[1,3,224,224]"), T("f32[8,3,3,3]")],
        "f32[1,8,112,112]",
    );
    check(
        same,
        vec![T("f32[1,3,225,17]"), T("f32[8,3,3,3]")],
        "f32[1,8,113,9]",
    );
    let lower = conv(|a| a.auto_pad = "SAME_LOWER".into());
    check(
        lower,
        vec![T("f32[1,3,H,W]"), T("f32[8,3,5,5]")],
        "f32[1,8,H,W]",
    );
    let valid = conv(|a| a.auto_pad = "VALID".into());
    check(
        valid,
        vec![T("f32[1,3,10,12]"), T("f32[8,3,3,5]")],
        "f32[1,8,8,8]",
    );
    // Dilation 2 turns a 3-tap kernel into an effective 5.
    let dil = conv(|a| a.dilations = Some(vec![2, 2]));
    check(
        dil,
        vec![T("f32[1,3,10,10]"), T("f32[8,3,3,3]")],
        "f32[1,8,6,6]",
    );
    // 1x1 stride-1 conv keeps symbolic spatial dims; a strided one does not.
    check(
        conv(|_| {}),
        vec![T("f32[N,16,H,W]"), T("f32[32,16,1,1]")],
        "f32[N,32,H,W]",
    );
    let s2 = conv(|a| a.strides = Some(vec![2, 2]));
    check(
        s2,
        vec![T("f32[N,16,H,W]"), T("f32[32,16,1,1]")],
        "f32[N,32,?,?]",
    );
    // Depthwise: group = channels.
    check(
        conv(|a| a.group = 32),
        vec![T("f32[1,32,8,8]"), T("f32[32,1,3,3]")],
        "f32[1,32,6,6]",
    );
    check(
        conv(|_| {}),
        vec![T("f32[1,4,9]"), T("f32[2,4,3]")],
        "f32[1,2,7]",
    );
    check_err(
        conv(|a| a.group = 2),
        vec![T("f32[1,3,8,8]"), T("f32[4,3,3,3]")],
        "channels",
    );
    check_err(
        conv(|_| {}),
        vec![T("f32[1,3,2,2]"), T("f32[4,3,3,3]")],
        "smaller than",
    );
    check_err(
        conv(|a| a.group = 0),
        vec![T("f32[1,3,8,8]"), T("f32[4,3,3,3]")],
        "group",
    );
    check(
        Op::ConvInteger(ConvAttrs::default()),
        vec![T("u8[1,3,5,5]"), T("u8[2,3,3,3]")],
        "i32[1,2,3,3]",
    );
}

#[test]
fn conv_transpose_shapes() {
    let a = ConvTransposeAttrs {
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 1, 1, 1]),
        output_padding: Some(vec![1, 1]),
        ..Default::default()
    };
    check(
        Op::ConvTranspose(a),
        vec![T("f32[N,16,14,14]"), T("f32[16,8,3,3]")],
        "f32[N,8,28,28]",
    );
    let g = ConvTransposeAttrs {
        group: 2,
        strides: Some(vec![2]),
        ..Default::default()
    };
    check(
        Op::ConvTranspose(g),
        vec![T("f32[1,4,5]"), T("f32[4,3,4]")],
        "f32[1,6,12]",
    );
    let os = ConvTransposeAttrs {
        output_shape: Some(vec![30, 31]),
        strides: Some(vec![2, 2]),
        ..Default::default()
    };
    check(
        Op::ConvTranspose(os),
        vec![T("f32[1,16,14,14]"), T("f32[16,8,3,3]")],
        "f32[1,8,30,31]",
    );
    let same = ConvTransposeAttrs {
        auto_pad: "SAME_UPPER".into(),
        strides: Some(vec![2, 2]),
        ..Default::default()
    };
    check(
        Op::ConvTranspose(same),
        vec![T("f32[1,16,7,9]"), T("f32[16,8,3,3]")],
        "f32[1,8,14,18]",
    );
}

fn pool(k: &[i64], f: impl FnOnce(&mut PoolAttrs)) -> PoolAttrs {
    let mut a = PoolAttrs {
        kernel_shape: k.to_vec(),
        ..Default::default()
    };
    f(&mut a);
    a
}

#[test]
fn pool_shapes() {
    let p = pool(&[3, 3], |a| {
        a.strides = Some(vec![2, 2]);
        a.pads = Some(vec![1, 1, 1, 1]);
    });
    check_n(
        Op::MaxPool(p),
        vec![T("f32[N,64,112,112]")],
        &["f32[N,64,56,56]", "i64[N,64,56,56]"],
    );
    let floor = pool(&[3, 3], |a| a.strides = Some(vec![2, 2]));
    check(
        Op::MaxPool(floor.clone()),
        vec![T("f32[1,1,6,6]")],
        "f32[1,1,2,2]",
    );
    let ceil = PoolAttrs {
        ceil_mode: true,
        ..floor
    };
    check(
        Op::MaxPool(ceil.clone()),
        vec![T("f32[1,1,6,6]")],
        "f32[1,1,3,3]",
    );
    check(
        Op::AveragePool(ceil),
        vec![T("f32[1,1,5,5]")],
        "f32[1,1,2,2]",
    );
    // ceil_mode drops a last window that would start in the trailing padding.
    let c2 = pool(&[2], |a| {
        a.strides = Some(vec![2]);
        a.pads = Some(vec![1, 1]);
        a.ceil_mode = true;
    });
    check(Op::AveragePool(c2), vec![T("f32[1,1,4]")], "f32[1,1,3]");
    let same = pool(&[3, 3], |a| {
        a.auto_pad = "SAME_UPPER".into();
        a.strides = Some(vec![2, 2]);
    });
    check(
        Op::AveragePool(same),
        vec![T("f32[1,8,7,7]")],
        "f32[1,8,4,4]",
    );
    let dil = pool(&[2, 2], |a| a.dilations = Some(vec![2, 2]));
    check(Op::MaxPool(dil), vec![T("f32[1,1,5,5]")], "f32[1,1,3,3]");
    check(
        Op::LpPool(pool(&[2, 2], |_| {})),
        vec![T("f32[N,3,H,W]")],
        "f32[N,3,?,?]",
    );
    check(
        Op::GlobalAveragePool,
        vec![T("f32[N,512,7,7]")],
        "f32[N,512,1,1]",
    );
    check(
        Op::GlobalMaxPool,
        vec![T("f32[N,16,D,H,W]")],
        "f32[N,16,1,1,1]",
    );
    check_err(
        Op::MaxPool(pool(&[3, 3], |_| {})),
        vec![T("f32[1,1,8]")],
        "rank",
    );
}

#[test]
fn normalization_shapes() {
    check_n(
        Op::BatchNormalization(BatchNormAttrs::default()),
        vec![
            T("f32[N,64,H,W]"),
            T("f32[64]"),
            T("f32[64]"),
            T("f32[64]"),
            T("f32[64]"),
        ],
        &["f32[N,64,H,W]", "f32[64]", "f32[64]"],
    );
    check_err(
        Op::BatchNormalization(BatchNormAttrs::default()),
        vec![
            T("f32[N,64,H,W]"),
            T("f32[32]"),
            T("f32[64]"),
            T("f32[64]"),
            T("f32[64]"),
        ],
        "does not match",
    );
    check_n(
        Op::LayerNormalization(LayerNormAttrs::default()),
        vec![T("f16[N,S,768]"), T("f16[768]"), T("f16[768]")],
        &["f16[N,S,768]", "f32[N,S,1]", "f32[N,S,1]"],
    );
    check(
        Op::Softmax(AxisAttrs::default()),
        vec![T("f32[N,10]")],
        "f32[N,10]",
    );
    check_err(
        Op::Softmax(AxisAttrs { axis: 2 }),
        vec![T("f32[N,10]")],
        "axis 2 out of range",
    );
    check(
        Op::GroupNormalization(GroupNormAttrs {
            num_groups: 4,
            ..Default::default()
        }),
        vec![T("f32[N,8,5]"), T("f32[8]"), T("f32[8]")],
        "f32[N,8,5]",
    );
}

// ---------------------------------------------------------------- shape ops

#[test]
fn reshape_shapes() {
    let r = || Op::Reshape(ReshapeAttrs::default());
    check(r(), vec![T("f32[2,3,4]"), i64s(&[0, -1])], "f32[2,12]");
    check(
        r(),
        vec![T("f32[N,seq,384]"), i64s(&[0, 0, 6, 64])],
        "f32[N,seq,6,64]",
    );
    check(
        r(),
        vec![T("f32[N,seq,6,64]"), i64s(&[0, 0, -1])],
        "f32[N,seq,384]",
    );
    check(r(), vec![T("f32[N,3,4]"), i64s(&[-1, 12])], "f32[N,12]");
    check(
        r(),
        vec![T("f32[N,seq,384]"), i64s(&[-1, 384])],
        "f32[?,384]",
    );
    check(r(), vec![T("f32[6]"), i64s(&[2, -1])], "f32[2,3]");
    check(r(), vec![T("f32[6]"), T("i64[3]")], "f32[?,?,?]");
    check(r(), vec![T("f32[6]"), T("i64[?]")], "f32[*]");
    let az = Op::Reshape(ReshapeAttrs { allowzero: true });
    check(az.clone(), vec![T("f32[0,3]"), i64s(&[3, 0])], "f32[3,0]");
    check_err(az, vec![T("f32[0,3]"), i64s(&[0, -1])], "allowzero");
    check_err(r(), vec![T("f32[2,3]"), i64s(&[5, 3])], "cannot reshape");
    check_err(r(), vec![T("f32[2,3]"), i64s(&[4, -1])], "not divisible");
    check_err(
        r(),
        vec![T("f32[2,3]"), i64s(&[-1, -1])],
        "more than one -1",
    );
}

#[test]
fn transpose_flatten_shapes() {
    check(
        Op::Transpose(TransposeAttrs { perm: None }),
        vec![T("f32[N,3,5]")],
        "f32[5,3,N]",
    );
    check(
        Op::Transpose(TransposeAttrs {
            perm: Some(vec![0, 2, 1]),
        }),
        vec![T("f32[N,3,5]")],
        "f32[N,5,3]",
    );
    check_err(
        Op::Transpose(TransposeAttrs {
            perm: Some(vec![0, 0, 1]),
        }),
        vec![T("f32[N,3,5]")],
        "permutation",
    );
    check(
        Op::Flatten(FlattenAttrs::default()),
        vec![T("f32[N,3,4,5]")],
        "f32[N,60]",
    );
    check(
        Op::Flatten(FlattenAttrs { axis: 0 }),
        vec![T("f32[2,3]")],
        "f32[1,6]",
    );
    check(
        Op::Flatten(FlattenAttrs { axis: -1 }),
        vec![T("f32[2,N,3]")],
        "f32[?,3]",
    );
    check(
        Op::Flatten(FlattenAttrs { axis: 2 }),
        vec![T("f32[1,N,3]")],
        "f32[N,3]",
    );
}

#[test]
fn slice_shapes() {
    check(
        Op::Slice,
        vec![T("f32[10,20]"), i64s(&[-3]), i64s(&[100]), i64s(&[0])],
        "f32[3,20]",
    );
    check(
        Op::Slice,
        vec![
            T("f32[10,20]"),
            i64s(&[-1]),
            i64s(&[-100]),
            i64s(&[0]),
            i64s(&[-1]),
        ],
        "f32[10,20]",
    );
    check(
        Op::Slice,
        vec![
            T("f32[10,20]"),
            i64s(&[0, 1]),
            i64s(&[10, 20]),
            i64s(&[0, 1]),
            i64s(&[3, 2]),
        ],
        "f32[4,10]",
    );
    check(
        Op::Slice,
        vec![T("f32[10,20]"), i64s(&[2]), i64s(&[5]), i64s(&[-1])],
        "f32[10,3]",
    );
    check(
        Op::Slice,
        vec![T("f32[10,20]"), i64s(&[5]), i64s(&[2])],
        "f32[0,20]",
    );
    check(
        Op::Slice,
        vec![T("f32[10]"), i64s(&[8]), i64s(&[1]), No, i64s(&[-3])],
        "f32[3]",
    );
    check(
        Op::Slice,
        vec![T("f32[N,20]"), i64s(&[0]), i64s(&[i64::MAX]), i64s(&[0])],
        "f32[N,20]",
    );
    check(
        Op::Slice,
        vec![T("f32[N,20]"), i64s(&[1]), i64s(&[i64::MAX]), i64s(&[0])],
        "f32[?,20]",
    );
    check(
        Op::Slice,
        vec![T("f32[N,20]"), T("i64[1]"), T("i64[1]"), i64s(&[1])],
        "f32[N,?]",
    );
    check_err(
        Op::Slice,
        vec![T("f32[10]"), i64s(&[0]), i64s(&[5]), i64s(&[0]), i64s(&[0])],
        "step cannot be 0",
    );
    check_err(
        Op::Slice,
        vec![T("f32[10]"), i64s(&[0]), i64s(&[5]), i64s(&[1])],
        "out of range",
    );
}

#[test]
fn gather_shapes() {
    let g = |axis| Op::Gather(Axis0Attrs { axis });
    check(g(1), vec![T("f32[5,6]"), T("i64[2,3]")], "f32[5,2,3]");
    check(
        g(0),
        vec![T("f32[Vocab,768]"), T("i64[N,S]")],
        "f32[N,S,768]",
    );
    check(g(0), vec![T("f32[6,7]"), C(Tensor::scalar(2i64))], "f32[7]");
    check(g(-1), vec![T("f32[6,7]"), T("i32[]")], "f32[6]");
    check_err(g(0), vec![T("f32[6,7]"), i64s(&[6])], "out of range");
    check(
        Op::GatherElements(Axis0Attrs { axis: 1 }),
        vec![T("f32[3,4]"), T("i64[3,2]")],
        "f32[3,2]",
    );
    check(
        Op::GatherNd(GatherNdAttrs::default()),
        vec![T("f32[2,3,4]"), T("i64[5,2]")],
        "f32[5,4]",
    );
    check(
        Op::GatherNd(GatherNdAttrs { batch_dims: 1 }),
        vec![T("f32[2,3,4]"), T("i64[2,1]")],
        "f32[2,4]",
    );
    check(
        Op::ScatterNd(ScatterNdAttrs::default()),
        vec![T("f32[4,4]"), T("i64[2,1]"), T("f32[2,4]")],
        "f32[4,4]",
    );
}

#[test]
fn concat_split_shapes() {
    let c = |axis| Op::Concat(ConcatAttrs { axis });
    check(c(1), vec![T("f32[N,3]"), T("f32[N,5]")], "f32[N,8]");
    check(c(-1), vec![T("f32[N,3]"), T("f32[?,S]")], "f32[N,?]");
    check(c(0), vec![T("f32[2,3]"), T("f32[*]")], "f32[?,3]");
    check_err(
        c(0),
        vec![T("f32[2,3]"), T("f32[2]")],
        "Concat inputs differ in rank",
    );
    check_err(
        c(0),
        vec![T("f32[2,3]"), T("f32[2,4]")],
        "Concat inputs differ in dim 1",
    );

    let s = |axis, n| {
        Op::Split(SplitAttrs {
            axis,
            num_outputs: n,
        })
    };
    check_n(
        s(0, None),
        vec![T("f32[10,6]"), i64s(&[3, 7])],
        &["f32[3,6]", "f32[7,6]"],
    );
    check_n(
        s(0, Some(3)),
        vec![T("f32[10,6]")],
        &["f32[4,6]", "f32[4,6]", "f32[2,6]"],
    );
    check_n(
        s(1, None),
        vec![T("f32[N,6]")],
        &["f32[N,2]", "f32[N,2]", "f32[N,2]"],
    );
    check_n(
        s(1, Some(2)),
        vec![T("f32[N,S]")],
        &["f32[N,?]", "f32[N,?]"],
    );
    assert!(infer_n(s(0, None), vec![T("f32[10,6]"), i64s(&[3, 6])], 2)
        .unwrap_err()
        .contains("sum to 9"));
    assert!(infer_n(s(0, Some(3)), vec![T("f32[10,6]")], 2)
        .unwrap_err()
        .contains("num_outputs"));
}

#[test]
fn squeeze_unsqueeze_shapes() {
    check(Op::Squeeze, vec![T("f32[N,1,5]"), i64s(&[1])], "f32[N,5]");
    check(
        Op::Squeeze,
        vec![T("f32[N,1,5,1]"), i64s(&[-1, 1])],
        "f32[N,5]",
    );
    check(Op::Squeeze, vec![T("f32[1,3,1]")], "f32[3]");
    check(Op::Squeeze, vec![T("f32[1,N]")], "f32[*]");
    check_err(Op::Squeeze, vec![T("f32[2,3]"), i64s(&[0])], "not 1");
    check(
        Op::Unsqueeze,
        vec![T("f32[3,4]"), i64s(&[0, -1])],
        "f32[1,3,4,1]",
    );
    check(Op::Unsqueeze, vec![T("f32[N]"), i64s(&[1])], "f32[N,1]");
    check(Op::Unsqueeze, vec![T("f32[]"), i64s(&[0])], "f32[1]");
    check(Op::Unsqueeze, vec![T("f32[N]"), T("i64[2]")], "f32[?,?,?]");
    check_err(Op::Unsqueeze, vec![T("f32[3]"), i64s(&[0, 0])], "repeated");
}

#[test]
fn reduce_shapes() {
    let r = |keepdims, noop| {
        Op::ReduceMean(ReduceAttrs {
            keepdims,
            noop_with_empty_axes: noop,
        })
    };
    check(
        r(true, false),
        vec![T("f32[N,3,4]"), i64s(&[-1])],
        "f32[N,3,1]",
    );
    check(
        r(false, false),
        vec![T("f32[N,3,4]"), i64s(&[-1])],
        "f32[N,3]",
    );
    check(
        r(false, false),
        vec![T("f32[N,3,4]"), i64s(&[0, 2])],
        "f32[3]",
    );
    check(r(true, false), vec![T("f32[N,3,4]")], "f32[1,1,1]");
    check(r(false, false), vec![T("f32[N,3,4]")], "f32[]");
    check(r(true, true), vec![T("f32[N,3,4]")], "f32[N,3,4]");
    check(
        r(true, true),
        vec![T("f32[N,3,4]"), i64s(&[])],
        "f32[N,3,4]",
    );
    check(
        r(true, false),
        vec![T("f32[N,1,4]"), T("i64[1]")],
        "f32[?,1,?]",
    );
    check(
        r(false, false),
        vec![T("f32[N,1,4]"), T("i64[2]")],
        "f32[?]",
    );
    check_err(
        r(true, false),
        vec![T("f32[N,3]"), i64s(&[2])],
        "out of range",
    );
    check(
        Op::ArgMax(ArgAttrs {
            axis: 1,
            ..Default::default()
        }),
        vec![T("f32[N,10]")],
        "i64[N,1]",
    );
    check(
        Op::ArgMin(ArgAttrs {
            axis: -1,
            keepdims: false,
            ..Default::default()
        }),
        vec![T("f32[N,10]")],
        "i64[N]",
    );
}

#[test]
fn resize_shapes() {
    let r = || Op::Resize(ResizeAttrs::default());
    check(
        r(),
        vec![T("f32[1,3,32,32]"), No, No, i64s(&[1, 3, 64, 48])],
        "f32[1,3,64,48]",
    );
    check(
        r(),
        vec![T("f32[N,3,32,32]"), No, f32s(&[1.0, 1.0, 2.0, 2.0])],
        "f32[N,3,64,64]",
    );
    check(
        r(),
        vec![T("f32[N,3,32,32]"), f32s(&[]), f32s(&[1.0, 1.0, 0.5, 1.5])],
        "f32[N,3,16,48]",
    );
    let axes = Op::Resize(ResizeAttrs {
        axes: Some(vec![2, 3]),
        ..Default::default()
    });
    check(
        axes.clone(),
        vec![T("f32[N,3,10,10]"), No, f32s(&[2.0, 3.0])],
        "f32[N,3,20,30]",
    );
    check(
        axes,
        vec![T("f32[N,3,10,10]"), No, No, i64s(&[7, 9])],
        "f32[N,3,7,9]",
    );
    let nl = Op::Resize(ResizeAttrs {
        axes: Some(vec![2, 3]),
        keep_aspect_ratio_policy: "not_larger".into(),
        ..Default::default()
    });
    check(
        nl,
        vec![T("f32[1,3,100,200]"), No, No, i64s(&[50, 50])],
        "f32[1,3,25,50]",
    );
    check(
        r(),
        vec![T("f32[N,3,H,W]"), No, T("f32[4]")],
        "f32[?,?,?,?]",
    );
    check_err(
        r(),
        vec![T("f32[1,3,8,8]"), No, f32s(&[2.0, 2.0])],
        "scales has 2 entries",
    );
    check_err(r(), vec![T("f32[1,3,8,8]")], "needs scales or sizes");
}

#[test]
fn pad_expand_tile_shapes() {
    let p = || Op::Pad(PadAttrs::default());
    check(
        p(),
        vec![T("f32[N,3,8,8]"), i64s(&[0, 0, 1, 2, 0, 0, 3, 4])],
        "f32[N,3,12,14]",
    );
    check(
        p(),
        vec![T("f32[N,3,8,8]"), i64s(&[1, -1]), No, i64s(&[-1])],
        "f32[N,3,8,8]",
    );
    check(
        p(),
        vec![T("f32[N,3,8,8]"), i64s(&[1, 1]), No, i64s(&[2])],
        "f32[N,3,10,8]",
    );
    check(p(), vec![T("f32[N,3,8,8]"), T("i64[8]")], "f32[?,?,?,?]");
    check_err(p(), vec![T("f32[2]"), i64s(&[0, -3])], "negative");
    check(
        Op::Expand,
        vec![T("f32[3,1]"), i64s(&[2, 1, 6])],
        "f32[2,3,6]",
    );
    check(Op::Expand, vec![T("f32[N,1]"), i64s(&[1, 4])], "f32[N,4]");
    check(Op::Expand, vec![T("f32[3,1]"), T("i64[3]")], "f32[?,3,?]");
    check_err(
        Op::Expand,
        vec![T("f32[3]"), i64s(&[4])],
        "cannot broadcast",
    );
    check(Op::Tile, vec![T("f32[N,3]"), i64s(&[1, 4])], "f32[N,12]");
    check(Op::Tile, vec![T("f32[N,3]"), T("i64[2]")], "f32[?,?]");
    check(
        Op::DepthToSpace(DepthToSpaceAttrs {
            blocksize: 2,
            mode: "DCR".into(),
        }),
        vec![T("f32[N,16,5,5]")],
        "f32[N,4,10,10]",
    );
    check(
        Op::SpaceToDepth(BlockAttrs { blocksize: 2 }),
        vec![T("f32[N,4,10,10]")],
        "f32[N,16,5,5]",
    );
    check_err(
        Op::SpaceToDepth(BlockAttrs { blocksize: 3 }),
        vec![T("f32[N,4,10,10]")],
        "not divisible",
    );
}

#[test]
fn value_producing_ops() {
    check(
        Op::Shape(ShapeAttrs::default()),
        vec![T("f32[N,3,4]")],
        "i64[3]",
    );
    check(
        Op::Shape(ShapeAttrs {
            start: 1,
            end: Some(-1),
        }),
        vec![T("f32[N,3,4]")],
        "i64[1]",
    );
    check(
        Op::Shape(ShapeAttrs {
            start: -10,
            end: Some(10),
        }),
        vec![T("f32[N,3,4]")],
        "i64[3]",
    );
    check(
        Op::Shape(ShapeAttrs::default()),
        vec![T("f32[*]")],
        "i64[?]",
    );
    check(Op::Size, vec![T("f32[N,3]")], "i64[]");
    check(
        Op::ConstantOfShape(ConstantOfShapeAttrs { value: None }),
        vec![i64s(&[2, 3])],
        "f32[2,3]",
    );
    let v = Some(Tensor::from_vec(vec![1], vec![7i64]));
    check(
        Op::ConstantOfShape(ConstantOfShapeAttrs { value: v }),
        vec![T("i64[2]")],
        "i64[?,?]",
    );
    let sc = |v: i64| C(Tensor::scalar(v));
    check(Op::Range, vec![sc(0), sc(10), sc(3)], "i64[4]");
    check(Op::Range, vec![sc(10), sc(4), sc(-3)], "i64[2]");
    check(
        Op::Range,
        vec![
            C(Tensor::scalar(0.0f32)),
            C(Tensor::scalar(1.0f32)),
            C(Tensor::scalar(0.25f32)),
        ],
        "f32[4]",
    );
    check(Op::Range, vec![T("i64[]"), sc(4), sc(1)], "i64[?]");
    check(Op::NonZero, vec![T("f32[N,3]")], "i64[2,?]");
    check_n(
        Op::TopK(TopKAttrs::default()),
        vec![T("f32[N,10]"), i64s(&[3])],
        &["f32[N,3]", "i64[N,3]"],
    );
    check_n(
        Op::TopK(TopKAttrs {
            axis: 0,
            ..Default::default()
        }),
        vec![T("f32[N,10]"), T("i64[1]")],
        &["f32[?,10]", "i64[?,10]"],
    );
    assert!(infer_n(
        Op::TopK(TopKAttrs::default()),
        vec![T("f32[2,10]"), i64s(&[11])],
        2
    )
    .unwrap_err()
    .contains("exceeds"));
    check(
        Op::OneHot(OneHotAttrs::default()),
        vec![T("i64[N,S]"), C(Tensor::scalar(10i64)), T("f32[2]")],
        "f32[N,S,10]",
    );
    check(
        Op::OneHot(OneHotAttrs { axis: 0 }),
        vec![T("i64[N]"), T("i64[]"), T("i32[2]")],
        "i32[?,N]",
    );
    let cond = C(Tensor::from_vec(vec![3], vec![true, false, true]));
    check(
        Op::Compress(CompressAttrs { axis: Some(1) }),
        vec![T("f32[2,3]"), cond],
        "f32[2,2]",
    );
    check(
        Op::Compress(CompressAttrs { axis: None }),
        vec![T("f32[2,3]"), T("bool[6]")],
        "f32[?]",
    );
    check(
        Op::EyeLike(EyeLikeAttrs {
            dtype: Some(DType::I32),
            k: 0,
        }),
        vec![T("f32[3,4]")],
        "i32[3,4]",
    );
    check(
        Op::NonMaxSuppression(NmsAttrs::default()),
        vec![T("f32[1,N,4]"), T("f32[1,1,N]")],
        "i64[?,3]",
    );
    check(
        Op::CumSum(CumSumAttrs::default()),
        vec![T("f32[N,3]"), C(Tensor::scalar(1i64))],
        "f32[N,3]",
    );
}

// ---------------------------------------------------------------- recurrent

#[test]
fn lstm_shapes() {
    let a = RnnAttrs {
        direction: "bidirectional".into(),
        hidden_size: Some(20),
        ..Default::default()
    };
    check_n(
        Op::Lstm(a.clone()),
        vec![
            T("f32[T,B,10]"),
            T("f32[2,80,10]"),
            T("f32[2,80,20]"),
            T("f32[2,160]"),
        ],
        &["f32[T,2,B,20]", "f32[2,B,20]", "f32[2,B,20]"],
    );
    let l1 = RnnAttrs {
        layout: 1,
        ..a.clone()
    };
    check_n(
        Op::Lstm(l1),
        vec![T("f32[B,T,10]"), T("f32[2,80,10]"), T("f32[2,80,20]")],
        &["f32[B,T,2,20]", "f32[B,2,20]", "f32[B,2,20]"],
    );
    // hidden_size from R when the attribute is absent.
    let g = RnnAttrs::default();
    check_n(
        Op::Gru(g.clone()),
        vec![T("f32[5,1,8]"), T("f32[1,48,8]"), T("f32[1,48,16]")],
        &["f32[5,1,1,16]", "f32[1,1,16]"],
    );
    check_n(
        Op::Rnn(g),
        vec![T("f32[S,N,4]"), T("f32[1,6,4]"), T("f32[1,6,6]")],
        &["f32[S,1,N,6]", "f32[1,N,6]"],
    );
    let bad = infer_n(
        Op::Lstm(a),
        vec![T("f32[T,B,10]"), T("f32[1,80,10]"), T("f32[1,80,20]")],
        3,
    );
    assert!(bad.unwrap_err().contains("directions"));
}

// ---------------------------------------------------------------- control flow and custom ops

fn branch(out_shape: &str) -> Graph {
    // (captured x) -> Relu(x) reshaped to a fixed shape, or x itself.
    let mut g = Graph::new("b");
    let x = g.add_input("x", TensorType::UNKNOWN);
    let y = if out_shape.is_empty() {
        g.add_simple("r", Op::Relu, &[x])
    } else {
        let dims: Vec<i64> = out_shape
            .split(',')
            .map(|d| d.parse().expect("int"))
            .collect();
        let s = g.add_const("s", Tensor::from_vec(vec![dims.len()], dims));
        g.add_simple("r", Op::Reshape(ReshapeAttrs::default()), &[x, s])
    };
    g.add_output(y);
    g
}

#[test]
fn if_merges_branches() {
    let op = Op::If(IfAttrs {
        then_branch: branch(""),
        else_branch: branch(""),
    });
    check(op, vec![T("bool[]"), T("f32[N,12]")], "f32[N,12]");
    let op = Op::If(IfAttrs {
        then_branch: branch("3,4"),
        else_branch: branch("3,-1"),
    });
    check(op, vec![T("bool[]"), T("f32[3,4]")], "f32[3,4]");
    let op = Op::If(IfAttrs {
        then_branch: branch("3,4"),
        else_branch: branch("2,6"),
    });
    check(op, vec![T("bool[1]"), T("f32[12]")], "f32[?,?]");
    let op = Op::If(IfAttrs {
        then_branch: branch("12"),
        else_branch: branch("2,6"),
    });
    check(op, vec![T("bool[]"), T("f32[12]")], "f32[*]");
    let op = Op::If(IfAttrs {
        then_branch: branch(""),
        else_branch: branch(""),
    });
    check_err(
        op,
        vec![T("f32[]"), T("f32[3]")],
        "If condition must be bool",
    );
}

#[test]
fn if_in_graph_types_branches_in_place() {
    let mut g = Graph::new("main");
    let c = g.add_input("c", ty("bool[]"));
    let x = g.add_input("x", ty("f32[N,3]"));
    let n = g.add_node(
        "if",
        Op::If(IfAttrs {
            then_branch: branch(""),
            else_branch: branch(""),
        }),
        vec![Some(c), Some(x)],
        vec!["y".into()],
    );
    let y = g.node(n).outputs()[0];
    g.add_output(y);
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(y).ty, ty("f32[N,3]"));
    let Op::If(a) = &g.node(n).op else { panic!() };
    let inner = a.then_branch.outputs()[0];
    assert_eq!(a.then_branch.value(inner).ty, ty("f32[N,3]"));
}

#[test]
fn loop_carried_and_scan_outputs() {
    // body(i, cond, acc, w) -> (cond, acc + w, acc): carried acc, captured w, one scan output.
    let mut b = Graph::new("body");
    let _i = b.add_input("i", TensorType::UNKNOWN);
    let cond = b.add_input("cond_in", TensorType::UNKNOWN);
    let acc = b.add_input("acc", TensorType::UNKNOWN);
    let w = b.add_input("w", TensorType::UNKNOWN);
    let s = b.add_simple("add", Op::Add, &[acc, w]);
    let id = b.add_simple("id", Op::Identity, &[cond]);
    b.add_output(id);
    b.add_output(s);
    b.add_output(acc);
    b.set_num_captures(1);
    let mut g = Graph::new("main");
    let m = g.add_input("m", ty("i64[]"));
    let c0 = g.add_input("c0", ty("bool[]"));
    let a0 = g.add_input("a0", ty("f32[N,4]"));
    let w = g.add_input("w", ty("f32[4]"));
    let n = g.add_node(
        "loop",
        Op::Loop(LoopAttrs { body: b }),
        vec![Some(m), Some(c0), Some(a0), Some(w)],
        vec!["acc_out".into(), "scan".into()],
    );
    infer_types(&mut g).expect("infer");
    let outs = g.node(n).outputs().to_vec();
    assert_eq!(g.value(outs[0]).ty, ty("f32[N,4]"));
    assert_eq!(g.value(outs[1]).ty, ty("f32[?,N,4]"));

    // A constant trip count and no condition operand: exactly that many iterations.
    let Op::Loop(a) = g.node(n).op.clone() else {
        panic!()
    };
    let ins = vec![C(Tensor::scalar(5i64)), No, T("f32[N,4]"), T("f32[4]")];
    check_n(Op::Loop(a), ins, &["f32[N,4]", "f32[5,N,4]"]);
}

#[test]
fn loop_carried_shape_that_grows_is_relaxed() {
    // body(i, cond, acc) -> (cond, concat(acc, acc)): the carried extent changes.
    let mut b = Graph::new("body");
    b.add_input("i", TensorType::UNKNOWN);
    let cond = b.add_input("cond", TensorType::UNKNOWN);
    let acc = b.add_input("acc", TensorType::UNKNOWN);
    let cc = b.add_simple("cat", Op::Concat(ConcatAttrs { axis: 0 }), &[acc, acc]);
    let id = b.add_simple("id", Op::Identity, &[cond]);
    b.add_output(id);
    b.add_output(cc);
    let op = Op::Loop(LoopAttrs { body: b });
    check(op, vec![T("i64[]"), No, T("f32[2,3]")], "f32[?,3]");
}

#[test]
fn scan_outputs_get_sequence_dim() {
    // body(state, x_t) -> (state + x_t, x_t * x_t)
    let mut b = Graph::new("body");
    let st = b.add_input("st", TensorType::UNKNOWN);
    let xt = b.add_input("xt", TensorType::UNKNOWN);
    let s2 = b.add_simple("add", Op::Add, &[st, xt]);
    let sq = b.add_simple("mul", Op::Mul, &[xt, xt]);
    b.add_output(s2);
    b.add_output(sq);
    let a = ScanAttrs {
        body: b,
        num_scan_inputs: 1,
        ..Default::default()
    };
    check_n(
        Op::Scan(a.clone()),
        vec![T("f32[4]"), T("f32[T,4]")],
        &["f32[4]", "f32[T,4]"],
    );
    let a1 = ScanAttrs {
        scan_input_axes: Some(vec![1]),
        scan_output_axes: Some(vec![-1]),
        ..a
    };
    check_n(
        Op::Scan(a1),
        vec![T("f32[4]"), T("f32[4,T]")],
        &["f32[4]", "f32[4,T]"],
    );
}

#[derive(Debug)]
struct Double;
impl CustomOpDef for Double {
    fn infer(&self, _: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        let t = inputs.first().ok_or("no input")?;
        let s = t.shape.as_ref().map(|s| {
            let mut v = s.0.clone();
            if let Some(Dim::Fixed(n)) = v.last_mut() {
                *n *= 2;
            }
            Shape(v)
        });
        Ok(vec![TensorType {
            dtype: t.dtype,
            shape: s,
        }])
    }
    fn eval(&self, _: &Attrs, _: &[Tensor]) -> Result<Vec<Tensor>, String> {
        Err("not needed".into())
    }
}

#[test]
fn custom_ops() {
    let mk = |def: Option<Arc<dyn CustomOpDef>>| {
        Op::Custom(CustomOp {
            domain: "com.example".into(),
            op_type: "Double".into(),
            attrs: Attrs::default(),
            def,
        })
    };
    check(mk(Some(Arc::new(Double))), vec![T("f32[N,3]")], "f32[N,6]");
    check(mk(None), vec![T("f32[N,3]")], "?[*]");
}

// ---------------------------------------------------------------- the driver

#[test]
fn driver_tracks_shape_computations() {
    // y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) keeps the batch symbol.
    let mut g = Graph::new("main");
    let x = g.add_input("x", ty("f32[N,3,4]"));
    let s = g.add_simple("shape", Op::Shape(ShapeAttrs::default()), &[x]);
    let zero = g.add_const("zero", Tensor::scalar(0i64));
    let n = g.add_simple("n", Op::Gather(Axis0Attrs { axis: 0 }), &[s, zero]);
    let ax = g.add_const("ax", Tensor::from_vec(vec![1], vec![0i64]));
    let n1 = g.add_simple("n1", Op::Unsqueeze, &[n, ax]);
    let m1 = g.add_const("m1", Tensor::from_vec(vec![1], vec![-1i64]));
    let tgt = g.add_simple("tgt", Op::Concat(ConcatAttrs { axis: 0 }), &[n1, m1]);
    let y = g.add_simple("y", Op::Reshape(ReshapeAttrs::default()), &[x, tgt]);
    // Shape elements flow through Slice, arithmetic and ConstantOfShape too.
    let one = g.add_const("one", Tensor::from_vec(vec![1], vec![1i64]));
    let dims = g.add_simple("dims", Op::Slice, &[s, one, m1]);
    let prod = g.add_simple("prod", Op::Mul, &[dims, one]);
    let big = g.add_simple("big", Op::Concat(ConcatAttrs { axis: 0 }), &[n1, prod, one]);
    let z = g.add_simple("z", Op::Reshape(ReshapeAttrs::default()), &[x, big]);
    let e = g.add_simple(
        "e",
        Op::ConstantOfShape(ConstantOfShapeAttrs { value: None }),
        &[s],
    );
    g.add_output(y);
    g.add_output(z);
    g.add_output(e);
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(n).ty, ty("i64[]"));
    assert_eq!(g.value(tgt).ty, ty("i64[2]"));
    assert_eq!(g.value(y).ty, ty("f32[N,12]"));
    assert_eq!(g.value(dims).ty, ty("i64[1]"));
    assert_eq!(g.value(z).ty, ty("f32[N,3,1]"));
    assert_eq!(g.value(e).ty, ty("f32[N,3,4]"));
}

#[test]
fn driver_tracks_pytorch_pad_pattern() {
    // pads = Cast(Reshape(Transpose(Slice(Reshape(Concat(zeros, [1, 2]), [-1, 2]), ::-1)), [-1]))
    // as PyTorch exports F.pad(x, (1, 2)): [1, 2, 0, 0] -> [[1,2],[0,0]] -> [[0,0],[1,2]] -> [0,1,0,2].
    let mut g = Graph::new("main");
    let x = g.add_input("x", ty("f32[N,576]"));
    let c = |g: &mut Graph, n: &str, v: &[i64]| {
        g.add_const(n, Tensor::from_vec(vec![v.len()], v.to_vec()))
    };
    let two = c(&mut g, "two", &[2]);
    let zeros = g.add_simple(
        "zeros",
        Op::ConstantOfShape(ConstantOfShapeAttrs {
            value: Some(Tensor::from_vec(vec![1], vec![0i64])),
        }),
        &[two],
    );
    let lr = c(&mut g, "lr", &[1, 2]);
    let cat = g.add_simple("cat", Op::Concat(ConcatAttrs { axis: 0 }), &[lr, zeros]);
    let shp = c(&mut g, "shp", &[-1, 2]);
    let m = g.add_simple("m", Op::Reshape(ReshapeAttrs::default()), &[cat, shp]);
    let (st, en, ax, sp) = (
        c(&mut g, "st", &[-1]),
        c(&mut g, "en", &[i64::MIN]),
        c(&mut g, "ax", &[0]),
        c(&mut g, "sp", &[-1]),
    );
    let rev = g.add_simple("rev", Op::Slice, &[m, st, en, ax, sp]);
    let tr = g.add_simple("tr", Op::Transpose(TransposeAttrs { perm: None }), &[rev]);
    let flat_s = c(&mut g, "flat", &[-1]);
    let flat = g.add_simple(
        "flatten",
        Op::Reshape(ReshapeAttrs::default()),
        &[tr, flat_s],
    );
    let pads = g.add_simple(
        "pads",
        Op::Cast(CastAttrs {
            to: DType::I64,
            saturate: true,
            round_mode: "up".into(),
        }),
        &[flat],
    );
    let y = g.add_simple("pad", Op::Pad(PadAttrs::default()), &[x, pads]);
    g.add_output(y);
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(y).ty, ty("f32[N,579]"));
}

#[test]
fn driver_where_and_equal_on_shape_values() {
    // Expand's target is Where(Equal(shape, -1), 1, shape): the ONNX export of `expand(-1, ...)`.
    let mut g = Graph::new("main");
    let x = g.add_input("x", ty("f32[B,S]"));
    let b = g.add_input("b", ty("f32[1,S]"));
    let s = g.add_simple("shape", Op::Shape(ShapeAttrs::default()), &[x]);
    let neg = g.add_const("neg", Tensor::from_vec(vec![2], vec![-1i64, -1]));
    let eq = g.add_simple("eq", Op::Equal, &[s, neg]);
    let ones = g.add_const("ones", Tensor::from_vec(vec![2], vec![1i64, 1]));
    let w = g.add_simple("where", Op::Where, &[eq, ones, s]);
    let y = g.add_simple("expand", Op::Expand, &[b, w]);
    g.add_output(y);
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(y).ty, ty("f32[B,S]"));
}

#[test]
fn captured_constants_reach_subgraphs() {
    // The branch reshapes its captured input by a captured constant.
    let mut br = Graph::new("b");
    let xi = br.add_input("x", TensorType::UNKNOWN);
    let si = br.add_input("s", TensorType::UNKNOWN);
    let r = br.add_simple("r", Op::Reshape(ReshapeAttrs::default()), &[xi, si]);
    br.add_output(r);
    br.set_num_captures(2);
    let mut g = Graph::new("main");
    let c = g.add_input("c", ty("bool[]"));
    let x = g.add_input("x", ty("f32[N,12]"));
    let s = g.add_const("s", Tensor::from_vec(vec![3], vec![0i64, 3, 4]));
    let n = g.add_node(
        "if",
        Op::If(IfAttrs {
            then_branch: br.clone(),
            else_branch: br,
        }),
        vec![Some(c), Some(x), Some(s)],
        vec!["y".into()],
    );
    let y = g.node(n).outputs()[0];
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(y).ty, ty("f32[N,3,4]"));
}

#[test]
fn if_with_a_dead_branch() {
    // else reshapes [12] to [5,-1], which cannot work; a known-true condition selects then.
    let op = |then_b, else_b| {
        Op::If(IfAttrs {
            then_branch: branch(then_b),
            else_branch: branch(else_b),
        })
    };
    let t = C(Tensor::scalar(true));
    check(op("3,4", "5,-1"), vec![t, T("f32[12]")], "f32[3,4]");
    // An unknown condition: the branch that can work decides.
    check(
        op("5,-1", "2,6"),
        vec![T("bool[]"), T("f32[12]")],
        "f32[2,6]",
    );
    // Both broken, or the taken one broken: an error.
    let f = C(Tensor::scalar(false));
    check_err(op("3,4", "5,-1"), vec![f, T("f32[12]")], "in else_branch");
    check_err(
        op("7,-1", "5,-1"),
        vec![T("bool[]"), T("f32[12]")],
        "not divisible",
    );
}

#[test]
fn driver_merges_declared_types() {
    let mut g = Graph::new("main");
    let x = g.add_input("x", ty("f32[?,3]"));
    let y = g.add_simple("relu", Op::Relu, &[x]);
    g.set_type(y, ty("?[batch,?]"));
    g.add_output(y);
    infer_types(&mut g).expect("infer");
    assert_eq!(g.value(y).ty, ty("f32[batch,3]"));

    // A contradiction names the node and both types.
    let mut g = Graph::new("main");
    let x = g.add_input("x", ty("f32[2,3]"));
    let y = g.add_simple("relu", Op::Relu, &[x]);
    g.set_type(y, ty("f32[2,4]"));
    let e = infer_types(&mut g).unwrap_err();
    assert_eq!(e.node, "relu");
    assert_eq!(e.op, "Relu");
    assert!(
        e.msg.contains("declared f32[2,4] but inferred f32[2,3]"),
        "{}",
        e.msg
    );

    // reinfer_types forgets stale node types.
    reinfer_types(&mut g).expect("reinfer");
    assert_eq!(g.value(y).ty, ty("f32[2,3]"));
}

#[test]
fn driver_reports_failing_node() {
    let mut g = Graph::new("main");
    let a = g.add_input("a", ty("f32[N,384]"));
    let b = g.add_input("b", ty("f32[512,10]"));
    let y = g.add_simple("proj", Op::MatMul, &[a, b]);
    g.add_output(y);
    let e = infer_types(&mut g).unwrap_err();
    assert_eq!((e.node.as_str(), e.op.as_str()), ("proj", "MatMul"));
    assert!(
        e.to_string().contains("MatMul inner dims 384 vs 512"),
        "{e}"
    );
}

#[test]
fn merge_type_rules() {
    assert_eq!(
        merge_type(&ty("f32[Concat_dim_0,?]"), &ty("f32[batch,?]")).unwrap(),
        ty("f32[batch,?]")
    );
    assert_eq!(
        merge_type(&ty("f32[N,?]"), &ty("f32[?,3]")).unwrap(),
        ty("f32[N,3]")
    );
    assert_eq!(
        merge_type(&ty("f32[N]"), &ty("f32[5]")).unwrap(),
        ty("f32[5]")
    );
    assert_eq!(merge_type(&ty("?[*]"), &ty("i8[2]")).unwrap(), ty("i8[2]"));
    assert!(merge_type(&ty("f32[2]"), &ty("f32[2,1]")).is_err());
    assert!(merge_type(&ty("f32[2]"), &ty("f16[2]")).is_err());
}

fn required_attrs(name: &str) -> Attrs {
    use pare_ir::Attr::*;
    let v: Vec<(&str, pare_ir::Attr)> = match name {
        "Cast" => vec![("to", Int(7))],
        "BitShift" => vec![("direction", String("LEFT".into()))],
        "Einsum" => vec![("equation", String("ij,jk->ik".into()))],
        "AveragePool" | "MaxPool" | "LpPool" => vec![("kernel_shape", Ints(vec![2, 2]))],
        "GroupNormalization" => vec![("num_groups", Int(2))],
        "LRN" => vec![("size", Int(3))],
        "DepthToSpace" | "SpaceToDepth" => vec![("blocksize", Int(2))],
        "Concat" => vec![("axis", Int(1))],
        "If" => vec![
            ("then_branch", Graph(Box::new(branch("")))),
            ("else_branch", Graph(Box::new(branch("2,-1")))),
        ],
        "Loop" => vec![("body", Graph(Box::new(branch(""))))],
        "Scan" => vec![
            ("body", Graph(Box::new(branch("")))),
            ("num_scan_inputs", Int(1)),
        ],
        _ => vec![],
    };
    Attrs(v.into_iter().map(|(k, a)| (k.to_string(), a)).collect())
}

/// Ops with hostile attribute values.
fn hostile_ops() -> Vec<Op> {
    let big = i64::MAX;
    vec![
        Op::Conv(ConvAttrs {
            strides: Some(vec![big, big]),
            dilations: Some(vec![big, 1]),
            ..Default::default()
        }),
        Op::Conv(ConvAttrs {
            pads: Some(vec![big, big, big, big]),
            group: big,
            ..Default::default()
        }),
        Op::Conv(ConvAttrs {
            kernel_shape: Some(vec![big, -1]),
            ..Default::default()
        }),
        Op::ConvTranspose(ConvTransposeAttrs {
            strides: Some(vec![big, big]),
            output_padding: Some(vec![big, big]),
            pads: Some(vec![0, 0, big, big]),
            ..Default::default()
        }),
        Op::MaxPool(PoolAttrs {
            kernel_shape: vec![big, big],
            ceil_mode: true,
            strides: Some(vec![big, 1]),
            ..Default::default()
        }),
        Op::AveragePool(PoolAttrs {
            kernel_shape: vec![1, 1],
            pads: Some(vec![big, big, big, big]),
            ..Default::default()
        }),
        Op::DepthToSpace(DepthToSpaceAttrs {
            blocksize: big,
            mode: "DCR".into(),
        }),
        Op::SpaceToDepth(BlockAttrs { blocksize: big }),
        Op::Transpose(TransposeAttrs {
            perm: Some(vec![i64::MIN, big]),
        }),
        Op::Gather(Axis0Attrs { axis: i64::MIN }),
        Op::Flatten(FlattenAttrs { axis: i64::MIN }),
        Op::Shape(ShapeAttrs {
            start: i64::MIN,
            end: Some(big),
        }),
        Op::Split(SplitAttrs {
            axis: big,
            num_outputs: Some(big),
        }),
        Op::GatherNd(GatherNdAttrs { batch_dims: big }),
        Op::TopK(TopKAttrs {
            axis: i64::MIN,
            ..Default::default()
        }),
        Op::OneHot(OneHotAttrs { axis: big }),
        Op::LayerNormalization(LayerNormAttrs {
            axis: i64::MIN,
            stash_type: big,
            ..Default::default()
        }),
        Op::Lstm(RnnAttrs {
            hidden_size: Some(big),
            layout: 7,
            ..Default::default()
        }),
        Op::QuantizeLinear(QuantizeAttrs {
            output_dtype: big,
            ..Default::default()
        }),
        Op::Scan(ScanAttrs {
            body: branch(""),
            num_scan_inputs: big,
            ..Default::default()
        }),
        Op::Resize(ResizeAttrs {
            axes: Some(vec![big]),
            ..Default::default()
        }),
    ]
}

#[test]
fn never_panics_on_garbage() {
    let pool: Vec<fn() -> In> = vec![
        || T("f32[]"),
        || T("f32[0]"),
        || T("f32[*]"),
        || T("i64[3]"),
        || T("f32[N,3,?,4]"),
        || T("bool[2,2]"),
        || T("f32[1,2,3,4,5]"),
        || T("?[*]"),
        || T("i64[1]"),
        || No,
        || i64s(&[-1, 0, 3]),
        || i64s(&[i64::MIN, i64::MAX]),
        || i64s(&[]),
        || C(Tensor::scalar(0i64)),
        || i64s(&[1, 1, 1, 1]),
        || f32s(&[0.5, -1.0, f32::NAN, f32::INFINITY]),
        || C(Tensor::from_vec(vec![1], vec![true])),
        || C(Tensor::from_vec(vec![2, 2], vec![0i64, 1, 2, 3])),
    ];
    let mut ops: Vec<Op> = Op::ALL
        .iter()
        .filter_map(|name| Op::from_attrs(name, required_attrs(name)).ok().flatten())
        .collect();
    assert!(
        ops.len() + 5 > Op::ALL.len(),
        "only {} ops built",
        ops.len()
    );
    ops.extend(hostile_ops());
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut failures = Vec::new();
    for op in &ops {
        for _ in 0..1000 {
            let n_in = next(6);
            let n_out = next(4);
            let picks: Vec<usize> = (0..n_in).map(|_| next(pool.len())).collect();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let ins: Vec<In> = picks.iter().map(|&p| pool[p]()).collect();
                let _ = infer_n(op.clone(), ins, n_out);
            }));
            if res.is_err() {
                failures.push(format!(
                    "{} with inputs {picks:?}, {n_out} outputs",
                    op.name()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}

#[test]
fn bind_dims_specializes_symbols_and_whole_inputs() {
    use std::collections::HashMap;
    let src = "graph @g(%x: f32[N,3], %y: f32[?,4]) -> (%z, %w) {
      %z = Relu(%x) : f32[N,3]
      %w = Relu(%y) : f32[?,4]
    }";
    let mut g = pare_ir::parse_graph(src).unwrap();
    let syms = HashMap::from([("N".to_string(), 2u64)]);
    let shapes = HashMap::from([("y".to_string(), vec![5u64, 4])]);
    pare_ir::infer::bind_dims(&mut g, &syms, &shapes).unwrap();
    let out: Vec<String> = g
        .outputs()
        .iter()
        .map(|&v| g.value(v).ty.to_string())
        .collect();
    assert_eq!(out, ["f32[2,3]", "f32[5,4]"]);
    let mut g = pare_ir::parse_graph(src).unwrap();
    let bad = HashMap::from([("y".to_string(), vec![5u64, 3])]);
    let e = pare_ir::infer::bind_dims(&mut g, &syms, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'y'") && e.contains("dim 1 is 4"), "{e}");
    let bad = HashMap::from([("q".to_string(), vec![1u64])]);
    let e = pare_ir::infer::bind_dims(&mut g, &syms, &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no input named 'q'"), "{e}");
}
