//! The operator kernels of `ops::{norm, reduce, copy, gather, resize, lstm, attention}` against
//! the reference interpreter: one-node graphs on random inputs over many shapes and attributes,
//! each kernel called through its C entry point (so the parameter encoding and the pointer
//! plumbing are covered) with 1 and 3 threads. Floating results must be within
//! `1e-4 · max(1, max|ref|)`; copies and gathers must be exact.

use pare_interp::Interpreter;
use pare_ir::Elem;
use pare_ir::Tensor;
use pare_runtime::ops::attention::*;
use pare_runtime::ops::copy::*;
use pare_runtime::ops::gather::*;
use pare_runtime::ops::lstm::*;
use pare_runtime::ops::norm::*;
use pare_runtime::ops::reduce::*;
use pare_runtime::ops::resize::*;
use pare_runtime::ops::{KernelFn, STATUS_INDEX, STATUS_NULL, STATUS_OK, STATUS_PARAMS};

mod common;
use common::{assert_close, dims, fill};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// Runs a one-node graph in the reference interpreter.
fn interp(src: &str, inputs: &[Tensor]) -> Vec<Tensor> {
    let g = pare_ir::text::parse_graph(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    Interpreter::with_threads(1)
        .run(&g, inputs)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().expect("f32 tensor")
}

/// Calls a kernel through its C entry point.
fn call(k: KernelFn, params: &[i64], bufs: &[*mut u8], threads: usize) -> i32 {
    // SAFETY: the tests pass buffers of the sizes the parameters imply.
    unsafe { k(params.as_ptr(), bufs.as_ptr(), threads) }
}

fn ptr<T>(v: &[T]) -> *mut u8 {
    v.as_ptr() as *mut u8
}

fn mptr<T>(v: &mut [T]) -> *mut u8 {
    v.as_mut_ptr() as *mut u8
}

const THREADS: [usize; 2] = [1, 3];

// ---------------------------------------------------------------------------------------------
// Softmax, LayerNormalization, InstanceNormalization
// ---------------------------------------------------------------------------------------------

#[test]
fn softmax_matches_reference() {
    let cases: &[(&[usize], usize)] = &[
        (&[7], 0),
        (&[2, 3, 4], 0),
        (&[2, 3, 4], 1),
        (&[2, 3, 4], 2),
        (&[3, 37], 1),
        (&[3, 100, 7], 1),
        (&[2, 130, 70], 1),
        (&[1, 19, 5, 3], 1),
        (&[64, 1000], 1),
        (&[1, 50, 4000], 1),
        (&[200, 300], 0),
        (&[4, 1], 1),
    ];
    for (ci, &(shape, axis)) in cases.iter().enumerate() {
        let x: Vec<f32> = fill(numel(shape), ci as u64)
            .iter()
            .map(|v| v * 6.0)
            .collect();
        for log in [false, true] {
            let op = if log { "LogSoftmax" } else { "Softmax" };
            let src = format!(
                "graph @main(%x: f32[{}]) -> (%y) {{ %y = {op}(%x) {{axis={axis}}} }}",
                dims(shape)
            );
            let want = f32s(&interp(&src, &[Tensor::from_vec(shape.to_vec(), x.clone())])[0]);
            let p = SoftmaxParams {
                outer: numel(&shape[..axis]),
                axis_len: shape[axis],
                inner: numel(&shape[axis + 1..]),
                log,
            };
            assert_eq!(SoftmaxParams::decode(&p.encode()), Some(p));
            for t in THREADS {
                let mut y = vec![f32::NAN; x.len()];
                let st = call(pare_k_softmax, &p.encode(), &[ptr(&x), mptr(&mut y)], t);
                assert_eq!(st, STATUS_OK);
                assert_close(
                    &y,
                    &want,
                    &format!("{op} {shape:?} axis {axis} threads {t}"),
                );
            }
        }
    }
}

#[test]
fn softmax_handles_masked_entries() {
    // -inf entries (masks) give exact zeros; a row max far from 0 stays stable.
    let x = vec![
        1000.0,
        f32::NEG_INFINITY,
        999.0,
        f32::NEG_INFINITY,
        -50.0,
        -51.0,
    ];
    let p = SoftmaxParams {
        outer: 2,
        axis_len: 3,
        inner: 1,
        log: false,
    };
    let mut y = vec![0.0; 6];
    softmax(&p, &x, &mut y, 1).unwrap();
    assert_eq!(y[1], 0.0);
    assert_eq!(y[3], 0.0);
    let e = (-1.0f32).exp();
    assert_close(
        &y,
        &[
            1.0 / (1.0 + e),
            0.0,
            e / (1.0 + e),
            0.0,
            1.0 / (1.0 + e),
            e / (1.0 + e),
        ],
        "masked",
    );
}

#[test]
fn layernorm_matches_reference() {
    let cases: &[(&[usize], usize, bool)] = &[
        (&[4, 16], 1, true),
        (&[4, 16], 1, false),
        (&[2, 3, 40], 1, true),
        (&[2, 3, 40], 2, false),
        (&[3, 1000], 1, true),
        (&[300, 768], 1, true),
        (&[5, 1], 1, true),
        (&[7, 13], 0, true),
    ];
    for (ci, &(shape, axis, has_bias)) in cases.iter().enumerate() {
        let n = numel(shape);
        let x: Vec<f32> = fill(n, 10 + ci as u64)
            .iter()
            .map(|v| v * 2.0 + 3.0)
            .collect();
        let norm = &shape[axis..];
        let inner = numel(norm);
        let s = fill(inner, 20 + ci as u64);
        let b = fill(inner, 30 + ci as u64);
        let eps = 1e-3;
        let (decl, args) = if has_bias {
            (format!(", %b: f32[{}]", dims(norm)), ", %b")
        } else {
            (String::new(), "")
        };
        let src = format!(
            "graph @main(%x: f32[{}], %s: f32[{}]{decl}) -> (%y) {{ \
             %y = LayerNormalization(%x, %s{args}) {{axis={axis}, epsilon=0.001}} }}",
            dims(shape),
            dims(norm)
        );
        let mut inputs = vec![
            Tensor::from_vec(shape.to_vec(), x.clone()),
            Tensor::from_vec(norm.to_vec(), s.clone()),
        ];
        if has_bias {
            inputs.push(Tensor::from_vec(norm.to_vec(), b.clone()));
        }
        let want = f32s(&interp(&src, &inputs)[0]);
        let p = LayerNormParams {
            outer: numel(&shape[..axis]),
            inner,
            epsilon: eps,
            has_bias,
        };
        assert_eq!(LayerNormParams::decode(&p.encode()), Some(p));
        for t in THREADS {
            let mut y = vec![f32::NAN; n];
            let bp = if has_bias {
                ptr(&b)
            } else {
                std::ptr::null_mut()
            };
            let st = call(
                pare_k_layernorm,
                &p.encode(),
                &[ptr(&x), ptr(&s), bp, mptr(&mut y)],
                t,
            );
            assert_eq!(st, STATUS_OK);
            assert_close(
                &y,
                &want,
                &format!("LayerNorm {shape:?} axis {axis} threads {t}"),
            );
        }
    }
}

#[test]
fn instnorm_matches_reference() {
    let cases: &[&[usize]] = &[
        &[2, 3, 5, 7],
        &[1, 4, 1000],
        &[3, 2, 1, 1],
        &[8, 64, 32, 32],
    ];
    for (ci, &shape) in cases.iter().enumerate() {
        let n = numel(shape);
        let c = shape[1];
        let x: Vec<f32> = fill(n, 40 + ci as u64)
            .iter()
            .map(|v| v * 3.0 - 1.0)
            .collect();
        let s = fill(c, 50 + ci as u64);
        let b = fill(c, 60 + ci as u64);
        let src = format!(
            "graph @main(%x: f32[{}], %s: f32[{c}], %b: f32[{c}]) -> (%y) {{ \
             %y = InstanceNormalization(%x, %s, %b) {{epsilon=0.0001}} }}",
            dims(shape)
        );
        let want = f32s(
            &interp(
                &src,
                &[
                    Tensor::from_vec(shape.to_vec(), x.clone()),
                    Tensor::from_vec(vec![c], s.clone()),
                    Tensor::from_vec(vec![c], b.clone()),
                ],
            )[0],
        );
        let p = InstNormParams {
            n: shape[0],
            c,
            spatial: numel(&shape[2..]),
            epsilon: 0.0001f32 as f64,
        };
        assert_eq!(InstNormParams::decode(&p.encode()), Some(p));
        for t in THREADS {
            let mut y = vec![f32::NAN; n];
            let st = call(
                pare_k_instnorm,
                &p.encode(),
                &[ptr(&x), ptr(&s), ptr(&b), mptr(&mut y)],
                t,
            );
            assert_eq!(st, STATUS_OK);
            assert_close(&y, &want, &format!("InstanceNorm {shape:?} threads {t}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------------

#[test]
fn reduce_matches_reference() {
    let ops = [
        ("ReduceSum", ReduceOp::Sum),
        ("ReduceMean", ReduceOp::Mean),
        ("ReduceMax", ReduceOp::Max),
        ("ReduceMin", ReduceOp::Min),
        ("ReduceProd", ReduceOp::Prod),
        ("ReduceSumSquare", ReduceOp::SumSquare),
        ("ReduceL1", ReduceOp::L1),
        ("ReduceL2", ReduceOp::L2),
        ("ReduceLogSumExp", ReduceOp::LogSumExp),
        ("ReduceLogSum", ReduceOp::LogSum),
    ];
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 5, 7], &[1]),
        (&[3, 5, 7], &[0]),
        (&[3, 5, 7], &[2]),
        (&[4, 6, 8, 10], &[1, 2]),
        (&[2, 3, 200], &[2]),
        (&[2, 150, 70], &[1]),
        (&[9], &[0]),
        (&[1, 200000], &[1]),
        (&[300, 2000], &[0]),
        (&[2000, 300], &[1]),
    ];
    for (ci, &(shape, axes)) in cases.iter().enumerate() {
        let n = numel(shape);
        let base = fill(n, 70 + ci as u64);
        let (a0, a1) = (axes[0], axes[axes.len() - 1]);
        let red = numel(&shape[a0..=a1]);
        for &(name, op) in &ops {
            if op == ReduceOp::Prod && red > 1000 {
                continue; // f32 products of thousands of factors are not comparable to 1e-4
            }
            let x: Vec<f32> = match op {
                ReduceOp::LogSum => base.iter().map(|v| v.abs() + 0.1).collect(),
                ReduceOp::Prod => base.iter().map(|v| 1.0 + 0.05 * v).collect(),
                ReduceOp::LogSumExp => base.iter().map(|v| v * 10.0).collect(),
                _ => base.clone(),
            };
            let src = format!(
                "graph @main(%x: f32[{}]) -> (%y) {{ %a = const i64[{}] [{}] \
                 %y = {name}(%x, %a) {{keepdims=0}} }}",
                dims(shape),
                axes.len(),
                dims(axes)
            );
            let want = f32s(&interp(&src, &[Tensor::from_vec(shape.to_vec(), x.clone())])[0]);
            let p = ReduceParams {
                outer: numel(&shape[..a0]),
                reduce: red,
                inner: numel(&shape[a1 + 1..]),
                op,
            };
            assert_eq!(ReduceParams::decode(&p.encode()), Some(p));
            for t in THREADS {
                let mut y = vec![f32::NAN; want.len()];
                let st = call(pare_k_reduce, &p.encode(), &[ptr(&x), mptr(&mut y)], t);
                assert_eq!(st, STATUS_OK);
                assert_close(
                    &y,
                    &want,
                    &format!("{name} {shape:?} axes {axes:?} threads {t}"),
                );
            }
        }
    }
}

#[test]
fn reduce_empty_axis() {
    let x: [f32; 0] = [];
    let cases = [
        (ReduceOp::Sum, 0.0),
        (ReduceOp::Max, f32::NEG_INFINITY),
        (ReduceOp::Min, f32::INFINITY),
        (ReduceOp::Prod, 1.0),
        (ReduceOp::LogSumExp, f32::NEG_INFINITY),
    ];
    for (op, v) in cases {
        for inner in [1, 3] {
            let p = ReduceParams {
                outer: 2,
                reduce: 0,
                inner,
                op,
            };
            let mut y = vec![f32::NAN; 2 * inner];
            reduce(&p, &x, &mut y, 1).unwrap();
            assert!(y.iter().all(|&o| o == v), "{op:?}: {y:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Copy and fill
// ---------------------------------------------------------------------------------------------

/// A random tensor of `dtype` ("f32", "i64", "u8", "i16").
fn tensor_of(dtype: &str, shape: &[usize], seed: u64) -> Tensor {
    let n = numel(shape);
    let f = fill(n, seed);
    fn mk<T: Elem>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v)
    }
    match dtype {
        "f32" => mk(shape, f),
        "i64" => mk(shape, f.iter().map(|v| (v * 1e12) as i64).collect()),
        "u8" => mk(shape, f.iter().map(|v| ((v + 1.0) * 127.0) as u8).collect()),
        "i16" => mk(shape, f.iter().map(|v| (v * 30000.0) as i16).collect()),
        d => panic!("dtype {d}"),
    }
}

fn elem_size(dtype: &str) -> usize {
    match dtype {
        "f32" => 4,
        "i64" => 8,
        "u8" => 1,
        "i16" => 2,
        d => panic!("dtype {d}"),
    }
}

fn dense(shape: &[usize]) -> Vec<i64> {
    dense_strides(shape)
}

/// Runs one copy through the C entry point on every thread count.
fn run_copy(p: &CopyParams, input: &[u8], out: &mut [u8], threads: usize) {
    assert_eq!(CopyParams::decode(&p.encode()).as_ref(), Some(p));
    let st = call(pare_k_copy, &p.encode(), &[ptr(input), mptr(out)], threads);
    assert_eq!(st, STATUS_OK, "{p:?}");
}

#[test]
fn copy_transpose_matches_reference() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 0, 1]),
        (&[64, 48], &[1, 0]),
        (&[3, 130, 70], &[0, 2, 1]),
        (&[5, 6, 7, 8], &[3, 1, 0, 2]),
        (&[1, 1, 5], &[2, 0, 1]),
        (&[600, 500], &[1, 0]),
        (&[2, 3, 4, 5], &[0, 1, 2, 3]),
        (&[4, 1, 6], &[1, 2, 0]),
        (&[2, 3, 4, 5, 6, 2, 3, 2], &[7, 5, 3, 1, 0, 2, 4, 6]),
        (&[8, 256, 3], &[0, 2, 1]),
    ];
    for (ci, &(shape, perm)) in cases.iter().enumerate() {
        for dt in ["f32", "i64", "u8", "i16"] {
            let x = tensor_of(dt, shape, 100 + ci as u64);
            let src = format!(
                "graph @main(%x: {dt}[{}]) -> (%y) {{ %y = Transpose(%x) {{perm=[{}]}} }}",
                dims(shape),
                dims(perm)
            );
            let want = interp(&src, std::slice::from_ref(&x)).remove(0);
            let is = dense(shape);
            let oshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let p = CopyParams {
                elem_size: elem_size(dt),
                shape: oshape.clone(),
                in_offset: 0,
                in_strides: perm.iter().map(|&p| is[p]).collect(),
                out_offset: 0,
                out_strides: dense(&oshape),
            };
            for t in THREADS {
                let mut out = vec![0xAAu8; want.raw().len()];
                run_copy(&p, x.raw(), &mut out, t);
                assert!(
                    out == want.raw(),
                    "Transpose {dt} {shape:?} {perm:?} threads {t}"
                );
            }
        }
    }
}

#[test]
fn copy_slice_with_steps_matches_reference() {
    // (shape, per axis (start, step, count), ONNX starts/ends/steps)
    struct Case {
        shape: &'static [usize],
        sl: &'static [(i64, i64, usize)],
        starts: &'static [i64],
        ends: &'static [i64],
        steps: &'static [i64],
    }
    let cases = [
        Case {
            shape: &[10, 12],
            sl: &[(8, -2, 4), (1, 3, 4)],
            starts: &[8, 1],
            ends: &[1, 11],
            steps: &[-2, 3],
        },
        Case {
            shape: &[4, 5, 6],
            sl: &[(1, 1, 2), (0, 1, 5), (5, -1, 6)],
            starts: &[1, 0, 5],
            ends: &[3, 5, -100],
            steps: &[1, 1, -1],
        },
        Case {
            shape: &[300, 700],
            sl: &[(10, 1, 250), (3, 1, 600)],
            starts: &[10, 3],
            ends: &[260, 603],
            steps: &[1, 1],
        },
    ];
    for (ci, c) in cases.iter().enumerate() {
        for dt in ["f32", "i64", "u8"] {
            let x = tensor_of(dt, c.shape, 200 + ci as u64);
            let r = c.shape.len();
            let src = format!(
                "graph @main(%x: {dt}[{}]) -> (%y) {{ \
                 %s = const i64[{r}] [{}] %e = const i64[{r}] [{}] \
                 %a = const i64[{r}] [{}] %t = const i64[{r}] [{}] \
                 %y = Slice(%x, %s, %e, %a, %t) }}",
                dims(c.shape),
                c.starts
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                c.ends
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                dims(&(0..r).collect::<Vec<_>>()),
                c.steps
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            let want = interp(&src, std::slice::from_ref(&x)).remove(0);
            let is = dense(c.shape);
            let oshape: Vec<usize> = c.sl.iter().map(|s| s.2).collect();
            assert_eq!(want.shape(), &oshape[..]);
            let p = CopyParams {
                elem_size: elem_size(dt),
                shape: oshape.clone(),
                in_offset: c.sl.iter().zip(&is).map(|(s, st)| s.0 * st).sum(),
                in_strides: c.sl.iter().zip(&is).map(|(s, st)| s.1 * st).collect(),
                out_offset: 0,
                out_strides: dense(&oshape),
            };
            for t in THREADS {
                let mut out = vec![0xAAu8; want.raw().len()];
                run_copy(&p, x.raw(), &mut out, t);
                assert!(out == want.raw(), "Slice {dt} case {ci} threads {t}");
            }
        }
    }
}

#[test]
fn copy_expand_concat_pad_match_reference() {
    for t in THREADS {
        // Expand [3,1,5] -> [2,3,4,5]: broadcast strides.
        let x = tensor_of("f32", &[3, 1, 5], 300);
        let want = interp(
            "graph @main(%x: f32[3,1,5]) -> (%y) { %s = const i64[4] [2,3,4,5] %y = Expand(%x, %s) }",
            std::slice::from_ref(&x),
        )
        .remove(0);
        let p = CopyParams {
            elem_size: 4,
            shape: vec![2, 3, 4, 5],
            in_offset: 0,
            in_strides: vec![0, 5, 0, 1],
            out_offset: 0,
            out_strides: dense(&[2, 3, 4, 5]),
        };
        let mut out = vec![0u8; want.raw().len()];
        run_copy(&p, x.raw(), &mut out, t);
        assert!(out == want.raw(), "Expand");

        // Big broadcast of a row (fill path) and of a column.
        let x = tensor_of("i16", &[1, 777], 301);
        let want = interp(
            "graph @main(%x: i16[1,777]) -> (%y) { %s = const i64[2] [900,777] %y = Expand(%x, %s) }",
            std::slice::from_ref(&x),
        )
        .remove(0);
        let p = CopyParams {
            elem_size: 2,
            shape: vec![900, 777],
            in_offset: 0,
            in_strides: vec![0, 1],
            out_offset: 0,
            out_strides: dense(&[900, 777]),
        };
        let mut out = vec![0u8; want.raw().len()];
        run_copy(&p, x.raw(), &mut out, t);
        assert!(out == want.raw(), "Expand rows");
        let x = tensor_of("f32", &[900, 1], 302);
        let want = interp(
            "graph @main(%x: f32[900,1]) -> (%y) { %s = const i64[2] [900,777] %y = Expand(%x, %s) }",
            std::slice::from_ref(&x),
        )
        .remove(0);
        let p = CopyParams {
            elem_size: 4,
            shape: vec![900, 777],
            in_offset: 0,
            in_strides: vec![1, 0],
            out_offset: 0,
            out_strides: dense(&[900, 777]),
        };
        let mut out = vec![0u8; want.raw().len()];
        run_copy(&p, x.raw(), &mut out, t);
        assert!(out == want.raw(), "Expand columns");

        // Concat along axes 1 and 2 as one copy per input.
        for axis in [1usize, 2] {
            let sa = [2usize, 3, 4];
            let mut sb = sa;
            sb[axis] = 5;
            let a = tensor_of("i64", &sa, 303);
            let b = tensor_of("i64", &sb, 304);
            let src = format!(
                "graph @main(%a: i64[{}], %b: i64[{}]) -> (%y) {{ %y = Concat(%a, %b) {{axis={axis}}} }}",
                dims(&sa),
                dims(&sb)
            );
            let want = interp(&src, &[a.clone(), b.clone()]).remove(0);
            let mut so = sa;
            so[axis] += 5;
            let os = dense(&so);
            let mut out = vec![0u8; want.raw().len()];
            for (tn, s, off) in [(&a, sa, 0i64), (&b, sb, sa[axis] as i64 * os[axis])] {
                let p = CopyParams {
                    elem_size: 8,
                    shape: s.to_vec(),
                    in_offset: 0,
                    in_strides: dense(&s),
                    out_offset: off,
                    out_strides: os.clone(),
                };
                run_copy(&p, tn.raw(), &mut out, t);
            }
            assert!(out == want.raw(), "Concat axis {axis}");
        }

        // Pad [3,4] by [1,2 | 0,1] with 7.5: fill, then copy into the interior.
        let x = tensor_of("f32", &[3, 4], 305);
        let want = interp(
            "graph @main(%x: f32[3,4]) -> (%y) { %p = const i64[4] [1,2,0,1] \
             %c = const f32[] [7.5] %y = Pad(%x, %p, %c) }",
            std::slice::from_ref(&x),
        )
        .remove(0);
        let mut out = vec![0u8; want.raw().len()];
        let fp = FillParams {
            elem_size: 4,
            count: 4 * 7,
            value: 7.5f32.to_bits() as u64,
        };
        assert_eq!(FillParams::decode(&fp.encode()), Some(fp));
        assert_eq!(
            call(pare_k_fill, &fp.encode(), &[mptr(&mut out)], t),
            STATUS_OK
        );
        let p = CopyParams {
            elem_size: 4,
            shape: vec![3, 4],
            in_offset: 0,
            in_strides: dense(&[3, 4]),
            out_offset: 7 + 2,
            out_strides: vec![7, 1],
        };
        run_copy(&p, x.raw(), &mut out, t);
        assert!(out == want.raw(), "Pad");
    }
}

#[test]
fn fill_patterns() {
    for es in [1usize, 2, 4, 8] {
        for count in [0usize, 1, 7, 100, 1 << 20] {
            let value = 0x0102_0304_0506_0708u64 & (u64::MAX >> (64 - 8 * es));
            let p = FillParams {
                elem_size: es,
                count,
                value,
            };
            for t in THREADS {
                let mut out = vec![0u8; count * es + 3];
                pare_runtime::ops::copy::fill(&p, &mut out, t).unwrap();
                let pat = &value.to_le_bytes()[..es];
                assert!(out[..count * es].chunks(es).all(|c| c == pat));
                assert!(out[count * es..].iter().all(|&b| b == 0));
            }
        }
    }
}

#[test]
fn copy_rejects_bad_params() {
    // A reversed stride whose offset does not reach the end would read before the buffer.
    let p = CopyParams {
        elem_size: 4,
        shape: vec![4],
        in_offset: 2,
        in_strides: vec![-1],
        out_offset: 0,
        out_strides: vec![1],
    };
    assert_eq!(p.extents(), None);
    let mut out = [0u8; 16];
    assert_eq!(copy(&p, &[0u8; 16], &mut out, 1), Err(STATUS_PARAMS));
    // Too short a buffer.
    let p = CopyParams::contiguous(4, &[5]);
    assert_eq!(copy(&p, &[0u8; 16], &mut [0u8; 20], 1), Err(STATUS_PARAMS));
    // Malformed words.
    assert_eq!(CopyParams::decode(&[3, 1, 4, 0, 1, 0, 1]), None);
    assert_eq!(CopyParams::decode(&[4, 9]), None);
    assert_eq!(CopyParams::decode(&[4, 1, 4, 0, 1, 0]), None);
    let words = p.encode();
    assert_eq!(
        call(
            pare_k_copy,
            &words,
            &[std::ptr::null_mut(), std::ptr::null_mut()],
            1
        ),
        STATUS_NULL
    );
    // Rank 0: one element.
    let p = CopyParams::contiguous(8, &[]);
    let mut out = [0u8; 8];
    copy(&p, &[1, 2, 3, 4, 5, 6, 7, 8], &mut out, 1).unwrap();
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
}

// ---------------------------------------------------------------------------------------------
// Gather
// ---------------------------------------------------------------------------------------------

#[test]
fn gather_matches_reference() {
    let cases: &[(&[usize], usize, &[usize])] = &[
        (&[5, 4], 0, &[3]),
        (&[3, 7, 2], 1, &[2, 3]),
        (&[6], 0, &[]),
        (&[2, 50, 64], 2, &[10]),
        (&[1000, 256], 0, &[5000]),
        (&[4, 9, 3, 5], 3, &[2, 2]),
    ];
    for (ci, &(shape, axis, ishape)) in cases.iter().enumerate() {
        let len = shape[axis] as i64;
        let ni = numel(ishape);
        let idx: Vec<i64> = fill(ni, 400 + ci as u64)
            .iter()
            .map(|v| ((v + 1.0) * 0.5 * (2 * len) as f32) as i64 - len)
            .map(|v| v.clamp(-len, len - 1))
            .collect();
        for dt in ["f32", "i64", "u8", "i16"] {
            for i32_idx in [false, true] {
                let x = tensor_of(dt, shape, 500 + ci as u64);
                let (it, itn) = if i32_idx {
                    (
                        Tensor::from_vec(ishape.to_vec(), idx.iter().map(|&v| v as i32).collect()),
                        "i32",
                    )
                } else {
                    (Tensor::from_vec(ishape.to_vec(), idx.clone()), "i64")
                };
                let src = format!(
                    "graph @main(%x: {dt}[{}], %i: {itn}[{}]) -> (%y) {{ %y = Gather(%x, %i) {{axis={axis}}} }}",
                    dims(shape),
                    dims(ishape)
                );
                let want = interp(&src, &[x.clone(), it.clone()]).remove(0);
                let p = GatherParams {
                    elem_size: elem_size(dt),
                    outer: numel(&shape[..axis]),
                    axis_len: shape[axis],
                    inner: numel(&shape[axis + 1..]),
                    n_indices: ni,
                    index_i32: i32_idx,
                };
                assert_eq!(GatherParams::decode(&p.encode()), Some(p));
                for t in THREADS {
                    let mut out = vec![0xAAu8; want.raw().len()];
                    let st = call(
                        pare_k_gather,
                        &p.encode(),
                        &[ptr(x.raw()), ptr(it.raw()), mptr(&mut out)],
                        t,
                    );
                    assert_eq!(st, STATUS_OK);
                    assert!(
                        out == want.raw(),
                        "Gather {dt} {shape:?} axis {axis} threads {t}"
                    );
                }
            }
        }
    }
}

#[test]
fn gather_rejects_out_of_range() {
    let data = vec![0u8; 4 * 7];
    let p = GatherParams {
        elem_size: 4,
        outer: 1,
        axis_len: 7,
        inner: 1,
        n_indices: 3,
        index_i32: false,
    };
    for bad in [7i64, -8, i64::MAX, i64::MIN] {
        let idx = [0i64, bad, 1];
        let mut out = vec![0x55u8; 12];
        let st = call(
            pare_k_gather,
            &p.encode(),
            &[ptr(&data), ptr(&idx), mptr(&mut out)],
            1,
        );
        assert_eq!(st, STATUS_INDEX);
        assert!(out.iter().all(|&b| b == 0x55), "output written on error");
    }
}

// ---------------------------------------------------------------------------------------------
// Resize
// ---------------------------------------------------------------------------------------------

#[test]
fn resize_matches_reference() {
    let shapes: &[[usize; 4]] = &[[1, 2, 5, 7], [2, 3, 8, 6], [1, 1, 1, 6], [1, 3, 64, 80]];
    let scales: &[(f32, f32)] = &[
        (2.0, 2.0),
        (0.5, 0.5),
        (1.5, 0.6),
        (3.0, 1.0),
        (1.7, 2.3),
        (1.0, 0.75),
    ];
    let coords = [
        ("half_pixel", CoordMode::HalfPixel),
        ("asymmetric", CoordMode::Asymmetric),
        ("align_corners", CoordMode::AlignCorners),
        ("pytorch_half_pixel", CoordMode::PytorchHalfPixel),
        ("half_pixel_symmetric", CoordMode::HalfPixelSymmetric),
    ];
    let nearest = [
        ("round_prefer_floor", NearestMode::RoundPreferFloor),
        ("round_prefer_ceil", NearestMode::RoundPreferCeil),
        ("floor", NearestMode::Floor),
        ("ceil", NearestMode::Ceil),
    ];
    let mut modes = vec![("linear", ResizeMode::Linear, nearest[0])];
    for nm in nearest {
        modes.push(("nearest", ResizeMode::Nearest, nm));
    }
    for (si, shape) in shapes.iter().enumerate() {
        let x = fill(numel(shape), 600 + si as u64);
        for &(sh, sw) in scales {
            if si == 3 && (sh, sw) != (1.7, 2.3) {
                continue; // the big shape once, for the threads
            }
            let oh = (sh as f64 * shape[2] as f64) as usize;
            let ow = (sw as f64 * shape[3] as f64) as usize;
            if oh == 0 || ow == 0 {
                continue;
            }
            for &(cname, coord) in &coords {
                for &(mname, mode, (nname, nmode)) in &modes {
                    let src = format!(
                        "graph @main(%x: f32[{}]) -> (%y) {{ %s = const f32[4] [1, 1, {sh}, {sw}] \
                         %y = Resize(%x, _, %s) {{mode=\"{mname}\", \
                         coordinate_transformation_mode=\"{cname}\", nearest_mode=\"{nname}\"}} }}",
                        dims(shape)
                    );
                    let want =
                        f32s(&interp(&src, &[Tensor::from_vec(shape.to_vec(), x.clone())])[0]);
                    let p = ResizeParams {
                        outer: shape[0] * shape[1],
                        in_h: shape[2],
                        in_w: shape[3],
                        out_h: oh,
                        out_w: ow,
                        scale_h: sh as f64,
                        scale_w: sw as f64,
                        mode,
                        nearest_mode: nmode,
                        coord_mode: coord,
                    };
                    assert_eq!(ResizeParams::decode(&p.encode()), Some(p));
                    for t in THREADS {
                        let mut y = vec![f32::NAN; want.len()];
                        let st = call(pare_k_resize, &p.encode(), &[ptr(&x), mptr(&mut y)], t);
                        assert_eq!(st, STATUS_OK);
                        let ctx = format!(
                            "Resize {shape:?} x ({sh}, {sw}) {mname}/{nname} {cname} threads {t}"
                        );
                        if mode == ResizeMode::Nearest {
                            assert!(y == want, "{ctx}");
                        } else {
                            assert_close(&y, &want, &ctx);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LSTM
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct LstmCase {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    dir: LstmDirection,
    bias: bool,
    h0: bool,
    c0: bool,
    peep: bool,
    clip: Option<f32>,
    input_forget: bool,
}

fn check_lstm(c: LstmCase, seed: u64) {
    let d = if c.dir == LstmDirection::Bidirectional {
        2
    } else {
        1
    };
    let (s, b, i, h) = (c.seq, c.batch, c.input, c.hidden);
    let x = fill(s * b * i, seed);
    let w: Vec<f32> = fill(d * 4 * h * i, seed + 1)
        .iter()
        .map(|v| v * 0.6)
        .collect();
    let r: Vec<f32> = fill(d * 4 * h * h, seed + 2)
        .iter()
        .map(|v| v * 0.6)
        .collect();
    let bb = fill(d * 8 * h, seed + 3);
    let h0 = fill(d * b * h, seed + 4);
    let c0 = fill(d * b * h, seed + 5);
    let pp = fill(d * 3 * h, seed + 6);
    let mut decl = format!(
        "%x: f32[{s},{b},{i}], %w: f32[{d},{},{i}], %r: f32[{d},{},{h}]",
        4 * h,
        4 * h
    );
    let mut inputs = vec![
        Tensor::from_vec(vec![s, b, i], x.clone()),
        Tensor::from_vec(vec![d, 4 * h, i], w.clone()),
        Tensor::from_vec(vec![d, 4 * h, h], r.clone()),
    ];
    let mut args = String::from("%x, %w, %r");
    let mut opt = |on: bool, name: &str, shape: Vec<usize>, data: &[f32]| {
        if on {
            decl += &format!(", %{name}: f32[{}]", dims(&shape));
            args += &format!(", %{name}");
            inputs.push(Tensor::from_vec(shape, data.to_vec()));
        } else {
            args += ", _";
        }
    };
    opt(c.bias, "b", vec![d, 8 * h], &bb);
    opt(false, "lens", vec![], &[]);
    opt(c.h0, "h0", vec![d, b, h], &h0);
    opt(c.c0, "c0", vec![d, b, h], &c0);
    if c.peep {
        opt(true, "p", vec![d, 3 * h], &pp);
    }
    let dir = match c.dir {
        LstmDirection::Forward => "forward",
        LstmDirection::Reverse => "reverse",
        LstmDirection::Bidirectional => "bidirectional",
    };
    let mut attrs = format!("hidden_size={h}, direction=\"{dir}\"");
    if let Some(cl) = c.clip {
        attrs += &format!(", clip={cl:?}");
    }
    if c.input_forget {
        attrs += ", input_forget=1";
    }
    let src = format!(
        "graph @main({decl}) -> (%y, %yh, %yc) {{ %y, %yh, %yc = LSTM({args}) {{{attrs}}} }}"
    );
    let want = interp(&src, &inputs);
    let p = LstmParams {
        seq: s,
        batch: b,
        input: i,
        hidden: h,
        direction: c.dir,
        clip: c.clip.map(|v| v as f64),
        input_forget: c.input_forget,
        peephole: c.peep,
    };
    assert_eq!(LstmParams::decode(&p.encode()), Some(p));
    let null = std::ptr::null_mut::<u8>();
    for t in THREADS {
        let mut y = vec![f32::NAN; s * d * b * h];
        let mut yh = vec![f32::NAN; d * b * h];
        let mut yc = vec![f32::NAN; d * b * h];
        let mut scratch = vec![0.0f32; p.scratch_bytes() / 4];
        let bufs = [
            ptr(&x),
            ptr(&w),
            ptr(&r),
            if c.bias { ptr(&bb) } else { null },
            if c.h0 { ptr(&h0) } else { null },
            if c.c0 { ptr(&c0) } else { null },
            mptr(&mut y),
            mptr(&mut yh),
            mptr(&mut yc),
            mptr(&mut scratch),
            if c.peep { ptr(&pp) } else { null },
        ];
        let st = call(pare_k_lstm, &p.encode(), &bufs, t);
        assert_eq!(st, STATUS_OK);
        let ctx = format!("{c:?} threads {t}");
        assert_close(&y, &f32s(&want[0]), &format!("Y {ctx}"));
        assert_close(&yh, &f32s(&want[1]), &format!("Y_h {ctx}"));
        assert_close(&yc, &f32s(&want[2]), &format!("Y_c {ctx}"));
    }
    // Outputs are optional: Y_h alone.
    let mut yh = vec![f32::NAN; d * b * h];
    let mut scratch = vec![0.0f32; p.scratch_bytes() / 4];
    let inputs = LstmInputs {
        x: &x,
        w: &w,
        r: &r,
        b: c.bias.then_some(&bb[..]),
        h0: c.h0.then_some(&h0[..]),
        c0: c.c0.then_some(&c0[..]),
        p: c.peep.then_some(&pp[..]),
    };
    let outs = LstmOutputs {
        yh: Some(&mut yh),
        ..LstmOutputs::default()
    };
    lstm(&p, &inputs, outs, &mut scratch, 1).unwrap();
    assert_close(&yh, &f32s(&want[1]), "Y_h only");
}

#[test]
fn lstm_matches_reference() {
    let base = LstmCase {
        seq: 5,
        batch: 3,
        input: 4,
        hidden: 6,
        dir: LstmDirection::Forward,
        bias: true,
        h0: true,
        c0: true,
        peep: false,
        clip: None,
        input_forget: false,
    };
    let mut cases = vec![base];
    for dir in [LstmDirection::Reverse, LstmDirection::Bidirectional] {
        cases.push(LstmCase { dir, ..base });
    }
    cases.push(LstmCase {
        bias: false,
        h0: false,
        c0: false,
        ..base
    });
    cases.push(LstmCase {
        h0: false,
        dir: LstmDirection::Bidirectional,
        ..base
    });
    cases.push(LstmCase {
        peep: true,
        dir: LstmDirection::Bidirectional,
        ..base
    });
    cases.push(LstmCase {
        clip: Some(0.5),
        ..base
    });
    cases.push(LstmCase {
        input_forget: true,
        peep: true,
        ..base
    });
    cases.push(LstmCase {
        seq: 1,
        batch: 1,
        input: 1,
        hidden: 1,
        ..base
    });
    // Dot-product recurrence with a vector body and a scalar tail (hidden 20 = 16 + 4).
    cases.push(LstmCase {
        seq: 7,
        batch: 2,
        input: 5,
        hidden: 20,
        ..base
    });
    cases.push(LstmCase {
        seq: 20,
        batch: 16,
        input: 64,
        hidden: 96,
        dir: LstmDirection::Bidirectional,
        ..base
    });
    for (k, c) in cases.into_iter().enumerate() {
        check_lstm(c, 700 + 10 * k as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct AttnCase {
    b: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    d: usize,
    dv: usize,
    /// Mask shape (right-aligned against [B, Hq, Sq, Skv]; the last dim may be narrower).
    mask: Option<Vec<usize>>,
    bool_mask: bool,
    causal: bool,
    scale: Option<f32>,
    softcap: f32,
}

fn check_attention(c: &AttnCase, seed: u64) {
    let qs = [c.b, c.hq, c.sq, c.d];
    let ks = [c.b, c.hkv, c.skv, c.d];
    let vs = [c.b, c.hkv, c.skv, c.dv];
    let q: Vec<f32> = fill(numel(&qs), seed).iter().map(|v| v * 2.0).collect();
    let k: Vec<f32> = fill(numel(&ks), seed + 1).iter().map(|v| v * 2.0).collect();
    let v = fill(numel(&vs), seed + 2);
    let mut decl = format!(
        "%q: f32[{}], %k: f32[{}], %v: f32[{}]",
        dims(&qs),
        dims(&ks),
        dims(&vs)
    );
    let mut args = String::from("%q, %k, %v");
    let mut inputs = vec![
        Tensor::from_vec(qs.to_vec(), q.clone()),
        Tensor::from_vec(ks.to_vec(), k.clone()),
        Tensor::from_vec(vs.to_vec(), v.clone()),
    ];
    let mut mask_f = Vec::new();
    let mut mask_b: Vec<u8> = Vec::new();
    let mut strides = [0usize; 4];
    let mut mask_cols = c.skv;
    if let Some(ms) = &c.mask {
        let n = numel(ms);
        let last = *ms.last().unwrap();
        mask_cols = last;
        if c.bool_mask {
            // Keep ~70%, and always key 0 so that no row is fully masked.
            mask_b = fill(n, seed + 3)
                .iter()
                .enumerate()
                .map(|(j, x)| (j % last == 0 || *x < 0.4) as u8)
                .collect();
            inputs.push(Tensor::from_vec(
                ms.clone(),
                mask_b.iter().map(|&x| x != 0).collect::<Vec<bool>>(),
            ));
            decl += &format!(", %m: bool[{}]", dims(ms));
        } else {
            mask_f = fill(n, seed + 3).iter().map(|x| x * 3.0).collect();
            inputs.push(Tensor::from_vec(ms.clone(), mask_f.clone()));
            decl += &format!(", %m: f32[{}]", dims(ms));
        }
        args += ", %m";
        let mut full = vec![1usize; 4 - ms.len()];
        full.extend(ms);
        let mut acc = 1;
        for i in (0..4).rev() {
            strides[i] = if full[i] == 1 { 0 } else { acc };
            acc *= full[i];
        }
    }
    let mut attrs = Vec::new();
    if c.causal {
        attrs.push("is_causal=1".to_string());
    }
    if let Some(s) = c.scale {
        attrs.push(format!("scale={s:?}"));
    }
    if c.softcap > 0.0 {
        attrs.push(format!("softcap={:?}", c.softcap));
    }
    let src = format!(
        "graph @main({decl}) -> (%y) {{ %y = Attention({args}) {{{}}} }}",
        attrs.join(", ")
    );
    let src = src.replace(" {}", "");
    let want = f32s(&interp(&src, &inputs)[0]);
    for t in THREADS {
        let p = AttentionParams {
            batch: c.b,
            q_heads: c.hq,
            kv_heads: c.hkv,
            q_len: c.sq,
            kv_len: c.skv,
            head_dim: c.d,
            v_dim: c.dv,
            scale: c
                .scale
                .map_or(AttentionParams::default_scale(c.d), |s| s as f64),
            is_causal: c.causal,
            causal_offset: 0,
            softcap: c.softcap as f64,
            mask: match (&c.mask, c.bool_mask) {
                (None, _) => MaskKind::None,
                (Some(_), false) => MaskKind::Float,
                (Some(_), true) => MaskKind::Bool,
            },
            mask_strides: strides,
            mask_cols,
            max_threads: t,
        };
        assert_eq!(AttentionParams::decode(&p.encode()), Some(p));
        let mut y = vec![f32::NAN; want.len()];
        let mut scratch = vec![f32::NAN; p.scratch_bytes() / 4];
        let mp = match p.mask {
            MaskKind::None => std::ptr::null_mut(),
            MaskKind::Float => ptr(&mask_f),
            MaskKind::Bool => ptr(&mask_b),
        };
        let st = call(
            pare_k_attention,
            &p.encode(),
            &[
                ptr(&q),
                ptr(&k),
                ptr(&v),
                mp,
                mptr(&mut y),
                mptr(&mut scratch),
            ],
            t,
        );
        assert_eq!(st, STATUS_OK);
        assert_close(&y, &want, &format!("{c:?} threads {t}"));
    }
}

#[test]
fn attention_matches_reference() {
    let base = AttnCase {
        b: 2,
        hq: 3,
        hkv: 3,
        sq: 5,
        skv: 7,
        d: 8,
        dv: 6,
        mask: None,
        bool_mask: false,
        causal: false,
        scale: None,
        softcap: 0.0,
    };
    let cases = vec![
        base.clone(),
        AttnCase {
            scale: Some(0.3),
            ..base.clone()
        },
        AttnCase {
            causal: true,
            sq: 7,
            ..base.clone()
        },
        AttnCase {
            hq: 6,
            hkv: 2,
            ..base.clone()
        },
        AttnCase {
            hq: 4,
            hkv: 1,
            causal: true,
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![5, 7]),
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![2, 1, 5, 7]),
            bool_mask: true,
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![3, 5, 7]),
            hq: 3,
            hkv: 1,
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![7]),
            bool_mask: true,
            causal: true,
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![2, 3, 1, 7]),
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![5, 4]),
            bool_mask: true,
            ..base.clone()
        },
        AttnCase {
            mask: Some(vec![5, 4]),
            ..base.clone()
        },
        AttnCase {
            softcap: 2.5,
            scale: Some(0.7),
            ..base.clone()
        },
        AttnCase {
            b: 1,
            hq: 1,
            hkv: 1,
            sq: 1,
            skv: 1,
            d: 1,
            dv: 1,
            ..base.clone()
        },
        AttnCase {
            b: 1,
            hq: 2,
            hkv: 1,
            sq: 300,
            skv: 700,
            d: 32,
            dv: 16,
            causal: true,
            ..base.clone()
        },
        AttnCase {
            b: 2,
            hq: 8,
            hkv: 2,
            sq: 64,
            skv: 64,
            d: 64,
            dv: 64,
            mask: Some(vec![2, 1, 64, 64]),
            ..base.clone()
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        check_attention(c, 900 + 10 * i as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// Parameter blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_params_are_rejected() {
    assert_eq!(SoftmaxParams::decode(&[1, 2, 3]), None);
    assert_eq!(SoftmaxParams::decode(&[1, 2, 3, 2]), None);
    assert_eq!(SoftmaxParams::decode(&[-1, 2, 3, 0]), None);
    assert_eq!(ReduceParams::decode(&[1, 2, 3, 10]), None);
    assert_eq!(GatherParams::decode(&[3, 1, 1, 1, 1, 0]), None);
    let one = 1.0f64.to_bits() as i64;
    assert_eq!(
        ResizeParams::decode(&[1, 1, 1, 1, 1, one, one, 2, 0, 0]),
        None
    );
    assert_eq!(
        ResizeParams::decode(&[1, 1, 1, 1, 1, 0, one, 1, 0, 0]),
        None
    );
    assert!(ResizeParams::decode(&[1, 1, 1, 1, 1, one, one, 1, 0, 0]).is_some());
    assert_eq!(LstmParams::decode(&[1, 1, 1, 1, 3, 0, 0, 0, 0]), None);
    let mut w = AttentionParams {
        batch: 1,
        q_heads: 3,
        kv_heads: 2,
        q_len: 1,
        kv_len: 1,
        head_dim: 1,
        v_dim: 1,
        scale: 1.0,
        is_causal: false,
        causal_offset: 0,
        softcap: 0.0,
        mask: MaskKind::None,
        mask_strides: [0; 4],
        mask_cols: 1,
        max_threads: 1,
    }
    .encode();
    assert_eq!(AttentionParams::decode(&w), None, "3 heads over 2 kv heads");
    w[1] = 4;
    assert!(AttentionParams::decode(&w).is_some());
    // Null params and short buffers.
    let bufs = [std::ptr::null_mut::<u8>(); 2];
    // SAFETY: a null parameter block is rejected before anything is read.
    let st = unsafe { pare_k_softmax(std::ptr::null(), bufs.as_ptr(), 1) };
    assert_eq!(st, STATUS_PARAMS);
    let p = SoftmaxParams {
        outer: 2,
        axis_len: 3,
        inner: 1,
        log: false,
    };
    assert_eq!(call(pare_k_softmax, &p.encode(), &bufs, 1), STATUS_NULL);
    assert_eq!(softmax(&p, &[0.0; 5], &mut [0.0; 6], 1), Err(STATUS_PARAMS));
}
