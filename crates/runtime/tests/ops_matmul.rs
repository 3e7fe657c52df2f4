//! `ops::matmul` (batched MatMul / Gemm) against the reference interpreter on random inputs:
//! batch folding (broadcast B), batched and broadcast A/B, transposes (via Transpose nodes in
//! the reference graph), alpha, bias per column / per row, residual (also in place), every
//! activation, pre-packed B, 1 and 3 threads, through the C entry point and the safe API.
//! Results must be within `1e-4 · max(1, max|ref|)`.

use pare_interp::Interpreter;
use pare_ir::Tensor;
use pare_runtime::ops::matmul::*;
use pare_runtime::ops::{STATUS_NULL, STATUS_OK, STATUS_PARAMS};
use pare_runtime::Activation;

mod common;
use common::{act_ref, assert_close, dims, fill, Rng, ACTS};

/// The reference: `MatMul` of the (possibly transposed) stored operands in the interpreter,
/// with A/B batch broadcast expressed by their shapes, then alpha, bias, residual, activation.
fn reference(
    p: &MatMulParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    r: Option<&[f32]>,
) -> Vec<f32> {
    let a_batched = p.a_batch_stride != 0 && p.batch > 1;
    let b_batched = p.b_batch_stride != 0 && p.batch > 1;
    let a_stored = if p.trans_a { [p.k, p.m] } else { [p.m, p.k] };
    let b_stored = if p.trans_b { [p.n, p.k] } else { [p.k, p.n] };
    let shape = |batched: bool, s: [usize; 2]| -> Vec<usize> {
        if batched {
            vec![p.batch, s[0], s[1]]
        } else {
            s.to_vec()
        }
    };
    let (sa, sb) = (shape(a_batched, a_stored), shape(b_batched, b_stored));
    // Gather the batches the params address into dense tensors.
    let gather = |data: &[f32], batched: bool, stride: usize, len: usize| -> Vec<f32> {
        if batched {
            (0..p.batch)
                .flat_map(|i| data[i * stride..i * stride + len].to_vec())
                .collect()
        } else {
            data[..len].to_vec()
        }
    };
    let av = gather(a, a_batched, p.a_batch_stride, p.m * p.k);
    let bv = gather(b, b_batched, p.b_batch_stride, p.k * p.n);
    let tr = |name: &str, out: &str, s: &[usize], t: bool| {
        if !t {
            return format!("  %{out} = Identity(%{name})\n");
        }
        let perm = if s.len() == 3 { "[0,2,1]" } else { "[1,0]" };
        format!("  %{out} = Transpose(%{name}) {{perm={perm}}}\n")
    };
    let src = format!(
        "graph @main(%a: f32[{}], %b: f32[{}]) -> (%y) {{\n{}{}  %y = MatMul(%a2, %b2)\n}}",
        dims(&sa),
        dims(&sb),
        tr("a", "a2", &sa, p.trans_a),
        tr("b", "b2", &sb, p.trans_b),
    );
    let g = pare_ir::text::parse_graph(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let out = Interpreter::with_threads(1)
        .run(&g, &[Tensor::from_vec(sa, av), Tensor::from_vec(sb, bv)])
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .remove(0);
    let mut v = out.to_vec::<f32>().unwrap();
    let mn = p.m * p.n;
    if v.len() == mn && p.batch > 1 {
        // Neither operand batched: every batch is the same product.
        v = v.repeat(p.batch);
    }
    assert_eq!(v.len(), p.batch * mn, "{src}");
    for (idx, y) in v.iter_mut().enumerate() {
        let (i, j) = ((idx % mn) / p.n, idx % p.n);
        let mut t = *y * p.alpha;
        match (p.bias, bias) {
            (MatMulBias::PerColumn, Some(bv)) => t += bv[j],
            (MatMulBias::PerRow, Some(bv)) => t += bv[i],
            _ => {}
        }
        if let Some(r) = r {
            t += r[idx];
        }
        *y = act_ref(p.activation, t);
    }
    v
}

fn check(p: &MatMulParams, seed: u64) {
    assert_eq!(MatMulParams::decode(&p.encode()), Some(*p), "{p:?}");
    let a = fill(p.a_len(), seed);
    let b_raw = fill(p.b_unpacked_len(), seed + 1);
    let bias = (p.bias != MatMulBias::None).then(|| fill(p.bias_len(), seed + 2));
    let res = p.has_residual.then(|| fill(p.c_len(), seed + 3));
    let want = reference(p, &a, &b_raw, bias.as_deref(), res.as_deref());
    let b = if p.b_prepacked {
        matmul_prepare_b(p, &b_raw)
    } else {
        b_raw.clone()
    };
    assert_eq!(b.len(), p.b_len());
    let ptr = |v: &[f32]| v.as_ptr() as *mut u8;
    let opt = |v: &Option<Vec<f32>>| v.as_ref().map_or(std::ptr::null_mut(), |v| ptr(v));
    for threads in [1, 3] {
        let c = vec![f32::NAN; p.c_len()];
        let bufs = [ptr(&a), ptr(&b), opt(&bias), opt(&res), ptr(&c)];
        // SAFETY: buffers of the sizes the parameters imply.
        let st = unsafe { pare_k_matmul(p.encode().as_ptr(), bufs.as_ptr(), threads) };
        assert_eq!(st, STATUS_OK, "{p:?}");
        assert_close(&c, &want, &format!("{p:?}, {threads} threads"));
        if let Some(r) = &res {
            // In place: the residual is the output buffer.
            let c = r.clone();
            let bufs = [ptr(&a), ptr(&b), opt(&bias), ptr(&c), ptr(&c)];
            // SAFETY: as above; residual == c is the documented in-place form.
            let st = unsafe { pare_k_matmul(p.encode().as_ptr(), bufs.as_ptr(), threads) };
            assert_eq!(st, STATUS_OK);
            assert_close(&c, &want, &format!("{p:?}, in place, {threads} threads"));
        }
    }
    let mut c = vec![f32::NAN; p.c_len()];
    matmul(p, &a, &b, bias.as_deref(), res.as_deref(), &mut c, 2).unwrap();
    assert_close(&c, &want, &format!("{p:?}, safe API"));
}

#[test]
fn matmul_fixed_shapes() {
    let mut seed = 1;
    let mut go = |p: MatMulParams| {
        seed += 10;
        check(&p, seed);
    };
    // Plain, odd sizes, k = 1, m = 1.
    go(MatMulParams::new(1, 7, 9, 5));
    go(MatMulParams::new(1, 1, 1000, 64));
    go(MatMulParams::new(1, 33, 17, 1));
    go(MatMulParams::new(3, 20, 30, 40));
    // Broadcast B, folded into M, with prepacked B and a full epilogue.
    let mut p = MatMulParams::new(4, 13, 70, 50);
    p.b_batch_stride = 0;
    p.b_prepacked = true;
    p.bias = MatMulBias::PerColumn;
    p.has_residual = true;
    p.activation = Activation::Gelu;
    go(p);
    // Same with per-row bias (not foldable).
    p.bias = MatMulBias::PerRow;
    p.activation = Activation::Relu;
    go(p);
    // Broadcast B with transposed A (not foldable).
    let mut p = MatMulParams::new(3, 16, 24, 32);
    p.b_batch_stride = 0;
    p.trans_a = true;
    p.alpha = 0.5;
    go(p);
    // Broadcast A.
    let mut p = MatMulParams::new(5, 9, 11, 13);
    p.a_batch_stride = 0;
    p.trans_b = true;
    p.has_residual = true;
    go(p);
    // Attention-like: many heads, B transposed.
    let mut p = MatMulParams::new(12, 32, 32, 16);
    p.trans_b = true;
    p.alpha = 0.25;
    go(p);
    // Per-batch prepacked B.
    let mut p = MatMulParams::new(3, 10, 20, 30);
    p.b_prepacked = true;
    p.trans_b = true;
    p.bias = MatMulBias::PerColumn;
    go(p);
    // Large enough for the GEMM's own threading.
    let mut p = MatMulParams::new(2, 150, 200, 120);
    p.bias = MatMulBias::PerColumn;
    p.activation = Activation::Tanh;
    go(p);
    // Padded batch strides.
    let mut p = MatMulParams::new(3, 5, 6, 7);
    p.a_batch_stride = 40;
    p.b_batch_stride = 50;
    go(p);
}

#[test]
fn matmul_every_activation() {
    for (i, &act) in ACTS.iter().enumerate() {
        let mut p = MatMulParams::new(2, 9, 21, 14);
        p.b_batch_stride = 0;
        p.bias = MatMulBias::PerColumn;
        p.has_residual = true;
        p.activation = act;
        check(&p, 200 + i as u64);
    }
}

#[test]
fn matmul_random_shapes() {
    let mut rng = Rng(99);
    for i in 0..150 {
        let batch = 1 + rng.below(4);
        let (m, n, k) = (1 + rng.below(40), 1 + rng.below(40), 1 + rng.below(40));
        let mut p = MatMulParams::new(batch, m, n, k);
        p.trans_a = rng.below(3) == 0;
        p.trans_b = rng.below(3) == 0;
        match rng.below(4) {
            0 => p.b_batch_stride = 0,
            1 => p.a_batch_stride = 0,
            _ => {}
        }
        p.b_prepacked = rng.below(3) == 0;
        p.alpha = [1.0, 0.5, -2.0][rng.below(3)];
        p.bias = [MatMulBias::None, MatMulBias::PerColumn, MatMulBias::PerRow][rng.below(3)];
        p.has_residual = rng.below(3) == 0;
        p.activation = ACTS[rng.below(8)];
        check(&p, 1000 + i);
    }
}

#[test]
fn matmul_rejects_bad_calls() {
    let mut p = MatMulParams::new(2, 4, 5, 6);
    p.bias = MatMulBias::PerColumn;
    let a = fill(p.a_len(), 1);
    let b = fill(p.b_len(), 2);
    let bias = fill(5, 3);
    let c = vec![0.0f32; p.c_len()];
    let ptr = |v: &[f32]| v.as_ptr() as *mut u8;
    let run = |words: &[i64], bufs: [*mut u8; 5]| {
        // SAFETY: buffers of the sizes the parameters imply (or null, which is what is tested).
        unsafe { pare_k_matmul(words.as_ptr(), bufs.as_ptr(), 1) }
    };
    let good = [ptr(&a), ptr(&b), ptr(&bias), std::ptr::null_mut(), ptr(&c)];
    assert_eq!(run(&p.encode(), good), STATUS_OK);
    let mut bad = good;
    bad[2] = std::ptr::null_mut();
    assert_eq!(run(&p.encode(), bad), STATUS_NULL);
    let mut words = p.encode();
    words[11] = 7;
    assert_eq!(run(&words, good), STATUS_PARAMS);
    let mut words = p.encode();
    words[0] = 1;
    assert_eq!(run(&words, good), STATUS_PARAMS);
    let mut cc = c.clone();
    assert!(matmul(&p, &a, &b, None, None, &mut cc, 1).is_err());
    assert!(matmul(&p, &a[1..], &b, Some(&bias), None, &mut cc, 1).is_err());
    assert!(matmul(&p, &a, &b, Some(&bias[1..]), None, &mut cc, 1).is_err());
}
