//! `ops::pool` (MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool) against the reference
//! interpreter on random inputs: kernels, strides, pads, dilations, `ceil_mode`,
//! `count_include_pad`, 1-D and 2-D, odd sizes, batch > 1, 1 and 3 threads, through the C entry
//! point and the safe API. Results must be within `1e-4 · max(1, max|ref|)`.

use pare_interp::Interpreter;
use pare_ir::Tensor;
use pare_runtime::ops::pool::*;
use pare_runtime::ops::{STATUS_NULL, STATUS_OK, STATUS_PARAMS};

mod common;
use common::{assert_close, dims, fill, Rng};

fn call(params: &[i64], x: &[f32], y: &mut [f32], threads: usize) -> i32 {
    let bufs = [x.as_ptr() as *mut u8, y.as_mut_ptr() as *mut u8];
    // SAFETY: the tests pass buffers of the sizes the parameters imply.
    unsafe { pare_k_pool(params.as_ptr(), bufs.as_ptr(), threads) }
}

/// A windowed pool: runs the interpreter (whose output shape gives out_h/out_w, including
/// ceil_mode), then the kernel.
#[allow(clippy::too_many_arguments)]
fn check_window(
    max: bool,
    n: usize,
    c: usize,
    hw: (usize, usize),
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pads: [usize; 4],
    ceil: bool,
    include_pad: bool,
    one_d: bool,
    seed: u64,
) {
    let xs = if one_d {
        vec![n, c, hw.1]
    } else {
        vec![n, c, hw.0, hw.1]
    };
    let attrs = if one_d {
        format!(
            "kernel_shape=[{}], strides=[{}], dilations=[{}], pads=[{},{}], ceil_mode={}",
            k.1, s.1, d.1, pads[1], pads[3], ceil as i32
        )
    } else {
        format!(
            "kernel_shape=[{},{}], strides=[{},{}], dilations=[{},{}], pads=[{},{},{},{}], ceil_mode={}",
            k.0, k.1, s.0, s.1, d.0, d.1, pads[0], pads[1], pads[2], pads[3], ceil as i32
        )
    };
    let (op, extra) = if max {
        ("MaxPool", String::new())
    } else {
        (
            "AveragePool",
            format!(", count_include_pad={}", include_pad as i32),
        )
    };
    let src = format!(
        "graph @main(%x: f32[{}]) -> (%y) {{ %y = {op}(%x) {{{attrs}{extra}}} }}",
        dims(&xs)
    );
    let x = fill(xs.iter().product(), seed);
    let g = pare_ir::text::parse_graph(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let out = Interpreter::with_threads(1)
        .run(&g, &[Tensor::from_vec(xs.clone(), x.clone())])
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .remove(0);
    let os = out.shape().to_vec();
    let want = out.to_vec::<f32>().unwrap();
    let (out_h, out_w) = if one_d { (1, os[2]) } else { (os[2], os[3]) };
    let p = PoolParams {
        kind: if max {
            PoolKind::Max
        } else {
            PoolKind::Average
        },
        n,
        c,
        h: if one_d { 1 } else { hw.0 },
        w: hw.1,
        out_h,
        out_w,
        kh: if one_d { 1 } else { k.0 },
        kw: k.1,
        stride_h: if one_d { 1 } else { s.0 },
        stride_w: s.1,
        pad_top: if one_d { 0 } else { pads[0] },
        pad_left: pads[1],
        pad_bottom: if one_d { 0 } else { pads[2] },
        pad_right: pads[3],
        dilation_h: if one_d { 1 } else { d.0 },
        dilation_w: d.1,
        count_include_pad: include_pad,
    };
    assert_eq!(PoolParams::decode(&p.encode()), Some(p));
    for threads in [1, 3] {
        let mut y = vec![f32::NAN; p.y_len()];
        assert_eq!(call(&p.encode(), &x, &mut y, threads), STATUS_OK, "{src}");
        assert_close(&y, &want, &format!("{src} ({threads} threads)"));
    }
    let mut y = vec![f32::NAN; p.y_len()];
    pool(&p, &x, &mut y, 2).unwrap();
    assert_close(&y, &want, &format!("{src} (safe API)"));
}

#[test]
fn pool_fixed_shapes() {
    let z = [0, 0, 0, 0];
    let one = [1, 1, 1, 1];
    for max in [true, false] {
        for inc in [false, true] {
            let mut seed = 10;
            let mut go = |n, c, hw, k, s, d, pads, ceil, one_d| {
                seed += 1;
                check_window(max, n, c, hw, k, s, d, pads, ceil, inc, one_d, seed);
            };
            go(1, 3, (8, 8), (2, 2), (2, 2), (1, 1), z, false, false);
            go(2, 4, (112, 112), (3, 3), (2, 2), (1, 1), one, false, false);
            go(1, 5, (13, 11), (3, 3), (2, 2), (1, 1), one, true, false);
            go(
                1,
                2,
                (7, 9),
                (3, 2),
                (1, 2),
                (1, 1),
                [1, 0, 2, 1],
                false,
                false,
            );
            go(
                1,
                3,
                (10, 10),
                (3, 3),
                (1, 1),
                (2, 2),
                [2, 2, 2, 2],
                false,
                false,
            );
            go(
                1,
                2,
                (9, 12),
                (2, 3),
                (3, 2),
                (2, 1),
                [0, 1, 1, 0],
                true,
                false,
            );
            go(
                1,
                6,
                (5, 5),
                (5, 5),
                (1, 1),
                (1, 1),
                [2, 2, 2, 2],
                false,
                false,
            );
            go(1, 1, (1, 1), (1, 1), (1, 1), (1, 1), z, false, false);
            go(
                1,
                3,
                (31, 33),
                (7, 7),
                (4, 4),
                (1, 1),
                [3, 3, 3, 3],
                true,
                false,
            );
            go(1, 16, (4, 30), (3, 3), (1, 1), (1, 1), one, false, false);
            go(
                2,
                3,
                (1, 20),
                (1, 3),
                (1, 2),
                (1, 1),
                [0, 1, 0, 1],
                false,
                true,
            );
            go(
                1,
                4,
                (1, 17),
                (1, 4),
                (1, 3),
                (1, 2),
                [0, 2, 0, 2],
                true,
                true,
            );
        }
    }
}

#[test]
fn pool_random_shapes() {
    let mut rng = Rng(4242);
    for i in 0..200 {
        let max = rng.below(2) == 0;
        let one_d = rng.below(5) == 0;
        let k = (1 + rng.below(4), 1 + rng.below(4));
        let s = (1 + rng.below(3), 1 + rng.below(3));
        let d = (1 + rng.below(2), 1 + rng.below(2));
        // ONNX: pads smaller than the kernel.
        let pads = [
            rng.below(k.0),
            rng.below(k.1),
            rng.below(k.0),
            rng.below(k.1),
        ];
        let ek = ((k.0 - 1) * d.0 + 1, (k.1 - 1) * d.1 + 1);
        let hw = (ek.0 + rng.below(10), ek.1 + rng.below(20));
        let ceil = rng.below(2) == 0;
        let inc = rng.below(2) == 0;
        check_window(
            max,
            1 + rng.below(2),
            1 + rng.below(4),
            hw,
            k,
            s,
            d,
            pads,
            ceil,
            inc,
            one_d,
            100 + i,
        );
    }
}

#[test]
fn global_pools() {
    for (n, c, h, w) in [
        (1, 3, 7, 7),
        (2, 5, 1, 1),
        (1, 64, 14, 14),
        (3, 2, 1, 37),
        (1, 1, 33, 65),
    ] {
        for (kind, op) in [
            (PoolKind::GlobalAverage, "GlobalAveragePool"),
            (PoolKind::GlobalMax, "GlobalMaxPool"),
        ] {
            let xs = vec![n, c, h, w];
            let src = format!(
                "graph @main(%x: f32[{}]) -> (%y) {{ %y = {op}(%x) }}",
                dims(&xs)
            );
            let x = fill(n * c * h * w, (n * c * h * w) as u64);
            let g = pare_ir::text::parse_graph(&src).unwrap();
            let want = Interpreter::with_threads(1)
                .run(&g, &[Tensor::from_vec(xs, x.clone())])
                .unwrap()
                .remove(0)
                .to_vec::<f32>()
                .unwrap();
            let p = PoolParams::global(kind, n, c, h, w);
            assert_eq!(PoolParams::decode(&p.encode()), Some(p));
            for threads in [1, 3] {
                let mut y = vec![f32::NAN; p.y_len()];
                assert_eq!(call(&p.encode(), &x, &mut y, threads), STATUS_OK);
                assert_close(&y, &want, &src);
            }
        }
    }
}

#[test]
fn max_pool_propagates_nan() {
    let mut p = PoolParams::global(PoolKind::Max, 1, 1, 4, 20);
    (p.out_h, p.out_w, p.kh, p.kw) = (3, 19, 2, 2);
    let mut x = fill(80, 3);
    x[25] = f32::NAN; // row 1, col 5: windows (0..2, 4..6)
    let mut y = vec![0.0; p.y_len()];
    pool(&p, &x, &mut y, 1).unwrap();
    for oy in 0..3 {
        for ox in 0..19 {
            let hit = (oy == 0 || oy == 1) && (ox == 4 || ox == 5);
            assert_eq!(y[oy * 19 + ox].is_nan(), hit, "({oy}, {ox})");
        }
    }
    let g = PoolParams::global(PoolKind::GlobalMax, 1, 1, 4, 20);
    let mut y = vec![0.0; 1];
    pool(&g, &x, &mut y, 1).unwrap();
    assert!(y[0].is_nan());
}

#[test]
fn pool_rejects_bad_calls() {
    let p = PoolParams::global(PoolKind::GlobalAverage, 1, 2, 3, 3);
    let x = fill(18, 1);
    let mut y = vec![0.0; 2];
    let mut words = p.encode();
    words[1] = 9;
    assert_eq!(call(&words, &x, &mut y, 1), STATUS_PARAMS);
    let mut words = p.encode();
    words[0] = 0;
    assert_eq!(call(&words, &x, &mut y, 1), STATUS_PARAMS);
    let bufs = [std::ptr::null_mut::<u8>(), y.as_mut_ptr() as *mut u8];
    // SAFETY: valid params; the null x is what is tested.
    let st = unsafe { pare_k_pool(p.encode().as_ptr(), bufs.as_ptr(), 1) };
    assert_eq!(st, STATUS_NULL);
    assert!(pool(&p, &x[..10], &mut y, 1).is_err());
    let mut w = PoolParams::global(PoolKind::Max, 1, 2, 3, 3);
    w.out_h = 0;
    assert!(w.validate().is_err());
}
