//! Benchmark-style checks (ignored by default; run with `--ignored --nocapture`, in release
//! mode for meaningful numbers: `cargo test --release -p pare-interp --test bench -- --ignored
//! --nocapture`).

use pare_interp::{Interpreter, Value};
use pare_ir::op::{AxisAttrs, GeluAttrs, LayerNormAttrs, ReshapeAttrs, TransposeAttrs};
use pare_ir::{DType, Graph, Op, Shape, Tensor, TensorType, ValueId};
use std::time::Instant;

/// Deterministic pseudo-random floats in [-scale, scale).
fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn konst(g: &mut Graph, name: &str, shape: &[usize], seed: u64, scale: f32) -> ValueId {
    let n = shape.iter().product();
    g.add_const(
        name,
        Tensor::from_vec(shape.to_vec(), rand_vec(n, seed, scale)),
    )
}

fn i64s(g: &mut Graph, name: &str, v: &[i64]) -> ValueId {
    g.add_const(name, Tensor::from_vec(vec![v.len()], v.to_vec()))
}

#[test]
#[ignore = "benchmark"]
fn big_matmul() {
    let (m, k, n) = (1024, 4096, 4096);
    let a =
        Value::F32(ndarray::ArrayD::from_shape_vec(vec![m, k], rand_vec(m * k, 1, 1.0)).unwrap());
    let b =
        Value::F32(ndarray::ArrayD::from_shape_vec(vec![k, n], rand_vec(k * n, 2, 1.0)).unwrap());
    let mut g = Graph::new("mm");
    let x = g.add_input("a", TensorType::new(DType::F32, Shape::fixed(&[m, k])));
    let y = g.add_input("b", TensorType::new(DType::F32, Shape::fixed(&[k, n])));
    let z = g.add_simple("z", Op::MatMul, &[x, y]);
    g.add_output(z);
    let it = Interpreter::new();
    let _ = it.run_values(&g, vec![a.clone(), b.clone()]).unwrap();
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        let out = it.run_values(&g, vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0].shape(), &[m, n]);
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    let gflops = 2.0 * (m * n * k) as f64 / dt / 1e9;
    println!(
        "matmul {m}x{k}x{n}: {:.1} ms, {gflops:.1} GFLOP/s ({} threads)",
        dt * 1e3,
        rayon::current_num_threads()
    );
}

/// A GPT-style decoder stack: per layer LayerNorm, QKV projection, 12-head attention
/// (MatMul/Softmax), output projection, residual, LayerNorm, MLP with Gelu, residual.
fn transformer(layers: usize, d: usize, heads: usize, seq: usize) -> (Graph, usize) {
    let mut g = Graph::new("gpt");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::fixed(&[1, seq, d])));
    let mut h = x;
    let mut params = 0;
    let hd = d / heads;
    let split_shape = i64s(
        &mut g,
        "split_shape",
        &[1, seq as i64, heads as i64, hd as i64],
    );
    let merge_shape = i64s(&mut g, "merge_shape", &[1, seq as i64, d as i64]);
    let scale = g.add_const("scale", Tensor::scalar(1.0f32 / (hd as f32).sqrt()));
    for l in 0..layers {
        let s = l as u64 * 100;
        let p = |n: &str| format!("l{l}.{n}");
        let ln_w = g.add_const(p("ln1.w"), Tensor::from_vec(vec![d], vec![1.0f32; d]));
        let ln_b = g.add_const(p("ln1.b"), Tensor::from_vec(vec![d], vec![0.0f32; d]));
        let ln1 = g.add_simple(
            p("ln1"),
            Op::LayerNormalization(LayerNormAttrs::default()),
            &[h, ln_w, ln_b],
        );
        let mut heads_v = Vec::new();
        for (i, nm) in ["q", "k", "v"].iter().enumerate() {
            let w = konst(&mut g, &p(&format!("w{nm}")), &[d, d], s + i as u64, 0.05);
            params += d * d;
            let proj = g.add_simple(p(nm), Op::MatMul, &[ln1, w]);
            let r = g.add_simple(
                p(&format!("{nm}.r")),
                Op::Reshape(ReshapeAttrs::default()),
                &[proj, split_shape],
            );
            let perm = if *nm == "k" {
                vec![0, 2, 3, 1]
            } else {
                vec![0, 2, 1, 3]
            };
            let t = g.add_simple(
                p(&format!("{nm}.t")),
                Op::Transpose(TransposeAttrs { perm: Some(perm) }),
                &[r],
            );
            heads_v.push(t);
        }
        let qk = g.add_simple(p("qk"), Op::MatMul, &[heads_v[0], heads_v[1]]);
        let qks = g.add_simple(p("qks"), Op::Mul, &[qk, scale]);
        let sm = g.add_simple(p("sm"), Op::Softmax(AxisAttrs { axis: -1 }), &[qks]);
        let att = g.add_simple(p("att"), Op::MatMul, &[sm, heads_v[2]]);
        let att_t = g.add_simple(
            p("att.t"),
            Op::Transpose(TransposeAttrs {
                perm: Some(vec![0, 2, 1, 3]),
            }),
            &[att],
        );
        let att_m = g.add_simple(
            p("att.m"),
            Op::Reshape(ReshapeAttrs::default()),
            &[att_t, merge_shape],
        );
        let wo = konst(&mut g, &p("wo"), &[d, d], s + 5, 0.05);
        params += d * d;
        let o = g.add_simple(p("o"), Op::MatMul, &[att_m, wo]);
        let h1 = g.add_simple(p("res1"), Op::Add, &[h, o]);
        let ln2_w = g.add_const(p("ln2.w"), Tensor::from_vec(vec![d], vec![1.0f32; d]));
        let ln2 = g.add_simple(
            p("ln2"),
            Op::LayerNormalization(LayerNormAttrs::default()),
            &[h1, ln2_w],
        );
        let w1 = konst(&mut g, &p("w1"), &[d, 4 * d], s + 6, 0.05);
        let b1 = konst(&mut g, &p("b1"), &[4 * d], s + 7, 0.05);
        let w2 = konst(&mut g, &p("w2"), &[4 * d, d], s + 8, 0.05);
        params += 8 * d * d + 4 * d;
        let f1 = g.add_simple(p("f1"), Op::MatMul, &[ln2, w1]);
        let f1b = g.add_simple(p("f1b"), Op::Add, &[f1, b1]);
        let act = g.add_simple(p("gelu"), Op::Gelu(GeluAttrs::default()), &[f1b]);
        let f2 = g.add_simple(p("f2"), Op::MatMul, &[act, w2]);
        h = g.add_simple(p("res2"), Op::Add, &[h1, f2]);
    }
    g.add_output(h);
    (g, params)
}

#[test]
#[ignore = "benchmark"]
fn transformer_forward() {
    let (layers, d, heads, seq) = (16, 768, 12, 128);
    let (g, params) = transformer(layers, d, heads, seq);
    let x = Value::F32(
        ndarray::ArrayD::from_shape_vec(vec![1, seq, d], rand_vec(seq * d, 42, 1.0)).unwrap(),
    );
    let it = Interpreter::new().profile(std::env::var("PARE_PROFILE").is_ok());
    let t = Instant::now();
    let out = it.run_values(&g, vec![x.clone()]).unwrap();
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out2 = it.run_values(&g, vec![x]).unwrap();
    let second = t.elapsed().as_secs_f64();
    assert_eq!(out[0], out2[0]);
    assert!(out[0].to_f64_vec().unwrap().iter().all(|v| v.is_finite()));
    println!(
        "transformer: {layers} layers, d={d}, seq={seq}, {:.1}M params: {:.2} s first run, {:.2} s second ({} threads)",
        params as f64 / 1e6,
        first,
        second,
        rayon::current_num_threads()
    );
}

#[test]
#[ignore = "benchmark"]
fn const_conversion() {
    let (g, _) = transformer(16, 768, 12, 128);
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        let vals: Vec<Value> = g
            .constants()
            .map(|(_, t)| {
                n += t.numel();
                Value::from_tensor(t).unwrap()
            })
            .collect();
        println!("convert {n} elements: {:.3} s", t.elapsed().as_secs_f64());
        drop(vals);
    }
}

#[test]
#[ignore = "benchmark"]
fn conv_layers() {
    use pare_ir::op::{ConvAttrs, PoolAttrs};
    let cases: Vec<(&str, [usize; 4], [usize; 4], ConvAttrs)> = vec![
        (
            "3x3 64->64 @56",
            [1, 64, 56, 56],
            [64, 64, 3, 3],
            ConvAttrs {
                pads: Some(vec![1, 1, 1, 1]),
                ..ConvAttrs::default()
            },
        ),
        (
            "1x1 256->64 @56",
            [1, 256, 56, 56],
            [64, 256, 1, 1],
            ConvAttrs::default(),
        ),
        (
            "7x7/2 3->64 @224",
            [1, 3, 224, 224],
            [64, 3, 7, 7],
            ConvAttrs {
                pads: Some(vec![3, 3, 3, 3]),
                strides: Some(vec![2, 2]),
                ..ConvAttrs::default()
            },
        ),
        (
            "dw 3x3 256 @28 batch 8",
            [8, 256, 28, 28],
            [256, 1, 3, 3],
            ConvAttrs {
                pads: Some(vec![1, 1, 1, 1]),
                group: 256,
                ..ConvAttrs::default()
            },
        ),
    ];
    for (name, xs, ws, at) in cases {
        let x = Value::F32(
            ndarray::ArrayD::from_shape_vec(xs.to_vec(), rand_vec(xs.iter().product(), 1, 1.0))
                .unwrap(),
        );
        let w = Value::F32(
            ndarray::ArrayD::from_shape_vec(ws.to_vec(), rand_vec(ws.iter().product(), 2, 0.1))
                .unwrap(),
        );
        let op = Op::Conv(at);
        let _ = pare_interp::eval_node(&op, &[Some(&x), Some(&w)], 1).unwrap();
        let t = Instant::now();
        let y = pare_interp::eval_node(&op, &[Some(&x), Some(&w)], 1).unwrap();
        let dt = t.elapsed().as_secs_f64();
        let out: usize = y[0].shape().iter().product();
        let flops = 2.0 * out as f64 * (ws[1] * ws[2] * ws[3]) as f64;
        println!(
            "conv {name}: {:.2} ms, {:.1} GFLOP/s",
            dt * 1e3,
            flops / dt / 1e9
        );
    }
    let x = Value::F32(
        ndarray::ArrayD::from_shape_vec(vec![1, 64, 112, 112], rand_vec(64 * 112 * 112, 3, 1.0))
            .unwrap(),
    );
    let op = Op::MaxPool(PoolAttrs {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 1, 1, 1]),
        ..PoolAttrs::default()
    });
    let t = Instant::now();
    let _ = pare_interp::eval_node(&op, &[Some(&x)], 1).unwrap();
    println!(
        "maxpool 3x3/2 64@112: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
