//! Times typical CNN convolutions (and a few pools / matmuls) through `ops::conv`, printing
//! GFLOP/s at 1 and 2 threads as medians of several samples, next to the machine's measured
//! single-core SGEMM peak (98 GFLOP/s).
//!
//! `cargo run --release -p pare-runtime --example conv_bench [-- --quick] [-- --best] [-- --only N]
//! [-- --1t]` (`--1t`: 1 thread only; the 2-thread columns then read 0).

use std::time::{Duration, Instant};

use pare_runtime::ops::conv::{conv, conv_prepare_weights, ConvParams};
use pare_runtime::ops::matmul::{matmul, matmul_prepare_b, MatMulParams};
use pare_runtime::ops::pool::{pool, PoolKind, PoolParams};
use pare_runtime::Activation;

const PEAK_PER_CORE: f64 = 98.0;

struct Conv {
    what: &'static str,
    p: ConvParams,
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    what: &'static str,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    s: usize,
    pad: usize,
    group: usize,
) -> Conv {
    let mut p = ConvParams::new(1, c_in, hw, hw, c_out, k, k);
    p.stride_h = s;
    p.stride_w = s;
    p.pad_top = pad;
    p.pad_left = pad;
    p.pad_bottom = pad;
    p.pad_right = pad;
    p.group = group;
    p.has_bias = true;
    p.activation = Activation::Relu;
    Conv { what, p }
}

/// A 3x3 convolution with padding 1 on an `h x w` input (the ocr-det shapes).
fn det(what: &'static str, c_in: usize, (h, w): (usize, usize), c_out: usize, s: usize) -> Conv {
    let mut c = conv_case(what, c_in, h, c_out, 3, s, 1, 1);
    c.p.w = w;
    c
}

/// Median (or best) seconds per call of `f`, calibrated to ~25 ms per sample.
fn time(samples: usize, best: bool, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut reps = 0;
    while t0.elapsed() < Duration::from_millis(10) {
        f();
        reps += 1;
    }
    let reps = (reps * 5 / 2).max(1);
    let mut secs: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    if best {
        secs[0]
    } else {
        secs[secs.len() / 2]
    }
}

fn fill(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let best = args.iter().any(|a| a == "--best");
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let one_thread = args.iter().any(|a| a == "--1t");
    let thread_counts: &[usize] = if one_thread { &[1] } else { &[1, 2] };
    let samples = if quick { 5 } else { 9 };
    let cases = [
        conv_case("stem 3->16 3x3 s2 @224", 3, 224, 16, 3, 2, 1, 1),
        conv_case("stem 3->32 3x3 s2 @224", 3, 224, 32, 3, 2, 1, 1),
        conv_case("1x1 64->128 @56", 64, 56, 128, 1, 1, 0, 1),
        conv_case("1x1 256->64 @56", 256, 56, 64, 1, 1, 0, 1),
        conv_case("im2col 3x3 64->64 @56", 64, 56, 64, 3, 1, 1, 1),
        conv_case("im2col 3x3 128->128 @28", 128, 28, 128, 3, 1, 1, 1),
        conv_case("im2col 3x3 256->256 @14", 256, 14, 256, 3, 1, 1, 1),
        conv_case("im2col 3x3 512->512 @7", 512, 7, 512, 3, 1, 1, 1),
        conv_case("im2col 3x3 64->128 s2 @56", 64, 56, 128, 3, 2, 1, 1),
        conv_case("grouped 3x3 128 g32 @28", 128, 28, 128, 3, 1, 1, 32),
        conv_case("depthwise 3x3 128 @28", 128, 28, 128, 3, 1, 1, 128),
        conv_case("depthwise 3x3 32 @112", 32, 112, 32, 3, 1, 1, 32),
        conv_case("depthwise 3x3 s2 64 @112", 64, 112, 64, 3, 2, 1, 64),
        conv_case("depthwise 5x5 240 @14", 240, 14, 240, 5, 1, 2, 240),
        conv_case("depthwise 5x5 96 @56", 96, 56, 96, 5, 1, 2, 96),
        // PP-LCNet (the orientation model): small-K pointwise and 5x5 depthwise
        conv_case("lcnet 1x1 16->32 @112", 16, 112, 32, 1, 1, 0, 1),
        conv_case("lcnet 1x1 64->64 @56", 64, 56, 64, 1, 1, 0, 1),
        conv_case("lcnet 1x1 128->128 @28", 128, 28, 128, 1, 1, 0, 1),
        conv_case("lcnet 1x1 256->256 @14", 256, 14, 256, 1, 1, 0, 1),
        conv_case("lcnet 1x1 512->512 @7", 512, 7, 512, 1, 1, 0, 1),
        conv_case("lcnet dw 3x3 16 @112", 16, 112, 16, 3, 1, 1, 16),
        conv_case("lcnet dw 3x3 s2 32 @112", 32, 112, 32, 3, 2, 1, 32),
        conv_case("lcnet dw 5x5 256 @14", 256, 14, 256, 5, 1, 2, 256),
        // the rest of PP-LCNet's depthwise layers
        conv_case("lcnet dw 3x3 64 @56", 64, 56, 64, 3, 1, 1, 64),
        conv_case("lcnet dw 3x3 s2 64 @56", 64, 56, 64, 3, 2, 1, 64),
        conv_case("lcnet dw 3x3 s2 128 @28", 128, 28, 128, 3, 2, 1, 128),
        conv_case("lcnet dw 5x5 s2 256 @14", 256, 14, 256, 5, 2, 2, 256),
        conv_case("lcnet dw 5x5 512 @7", 512, 7, 512, 5, 1, 2, 512),
        // ocr-det (1x3x64x96): the stem and the 96->24 3x3 convolutions of its neck
        det("det stem 3->16 s2 @64x96", 3, (64, 96), 16, 2),
        det("det 3x3 96->24 @16x24", 96, (16, 24), 24, 1),
        det("det 3x3 96->24 @8x12", 96, (8, 12), 24, 1),
        det("det 3x3 96->24 @4x6", 96, (4, 6), 24, 1),
    ];
    println!(
        "{} of {samples} samples; GFLOP/s counts 2*MACs (bias/act not counted)",
        if best { "best" } else { "median" }
    );
    println!(
        "{:>2} {:<28} {:>8} {:>9} {:>7} {:>9} {:>7}",
        "#", "conv", "MFLOP", "1T GF/s", "%peak", "2T GF/s", "%2peak"
    );
    for (idx, c) in cases.iter().enumerate() {
        if only.is_some_and(|o| o != idx) {
            continue;
        }
        let p = &c.p;
        let x = fill(p.x_len());
        let w = conv_prepare_weights(p, &fill(p.w_len()));
        let b = fill(p.c_out);
        let mut y = vec![0.0f32; p.y_len()];
        let mut scratch = vec![0u8; p.scratch_bytes()];
        let flops = 2.0
            * (p.c_out * p.out_h() * p.out_w() * (p.c_in / p.group) * p.kh * p.kw) as f64
            * p.n as f64;
        let mut row = [(0.0, 0.0); 2];
        for &threads in thread_counts {
            let s = time(samples, best, || {
                conv(p, &x, &w, Some(&b), None, &mut y, &mut scratch, threads).expect("valid")
            });
            let gf = flops / s / 1e9;
            row[threads - 1] = (gf, 100.0 * gf / (PEAK_PER_CORE * threads as f64));
        }
        println!(
            "{:>2} {:<28} {:>8.1} {:>9.1} {:>6.1}% {:>9.1} {:>6.1}%  ({:?})",
            idx,
            c.what,
            flops / 1e6,
            row[0].0,
            row[0].1,
            row[1].0,
            row[1].1,
            p.algorithm()
        );
    }
    if only.is_some() {
        return;
    }
    // Pools: GB/s of input read.
    println!("\n{:<34} {:>9} {:>9}", "pool", "1T GB/s", "2T GB/s");
    let mut mp = PoolParams::global(PoolKind::Max, 1, 64, 112, 112);
    (mp.out_h, mp.out_w, mp.kh, mp.kw, mp.stride_h, mp.stride_w) = (56, 56, 3, 3, 2, 2);
    (mp.pad_top, mp.pad_left, mp.pad_bottom, mp.pad_right) = (1, 1, 1, 1);
    let mut ap = mp;
    ap.kind = PoolKind::Average;
    let gp = PoolParams::global(PoolKind::GlobalAverage, 1, 2048, 7, 7);
    for (what, p) in [
        ("maxpool 3x3 s2 64 @112", mp),
        ("avgpool 3x3 s2 64 @112", ap),
        ("global avg 2048 @7", gp),
    ] {
        let x = fill(p.x_len());
        let mut y = vec![0.0f32; p.y_len()];
        let mut row = Vec::new();
        for threads in [1usize, 2] {
            let s = time(samples, best, || {
                pool(&p, &x, &mut y, threads).expect("valid")
            });
            row.push(p.x_len() as f64 * 4.0 / s / 1e9);
        }
        println!("{:<34} {:>9.1} {:>9.1}", what, row[0], row[1]);
    }
    // MatMuls.
    println!(
        "\n{:<34} {:>9} {:>7} {:>9} {:>7}",
        "matmul", "1T GF/s", "%peak", "2T GF/s", "%2peak"
    );
    let mut lin = MatMulParams::new(4, 128, 384, 384);
    lin.b_batch_stride = 0;
    lin.b_prepacked = true;
    let mut heads = MatMulParams::new(12, 128, 128, 64);
    heads.trans_b = true;
    let mut fc = MatMulParams::new(1, 1, 1000, 1280);
    fc.b_prepacked = true;
    for (what, p) in [
        ("linear 4x128x384x384 (folded)", lin),
        ("attention QK^T 12x128x128x64", heads),
        ("classifier 1x1000x1280", fc),
    ] {
        let a = fill(p.a_len());
        let b_raw = fill(p.b_unpacked_len());
        let b = if p.b_prepacked {
            matmul_prepare_b(&p, &b_raw)
        } else {
            b_raw
        };
        let mut c = vec![0.0f32; p.c_len()];
        let flops = 2.0 * (p.batch * p.m * p.n * p.k) as f64;
        let mut row = Vec::new();
        for threads in [1usize, 2] {
            let s = time(samples, best, || {
                matmul(&p, &a, &b, None, None, &mut c, threads).expect("valid")
            });
            let gf = flops / s / 1e9;
            row.push((gf, 100.0 * gf / (PEAK_PER_CORE * threads as f64)));
        }
        println!(
            "{:<34} {:>9.1} {:>6.1}% {:>9.1} {:>6.1}%",
            what, row[0].0, row[0].1, row[1].0, row[1].1
        );
    }
}
