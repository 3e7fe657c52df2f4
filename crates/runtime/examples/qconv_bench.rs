//! Quantized convolution (`pare_k_qconv`: uint8 input quantization, im2col to u8, int8 GEMM,
//! NCHW epilogue) vs the f32 convolution (`pare_k_conv`) on group-1 convolution shapes of
//! PP-OCRv4 rec (ocr-rec at a 48x320 input), with bias and ReLU fused in both. Milliseconds per
//! call (median of several timed samples) and the speedup of the int8 kernel.
//!
//! `cargo run --release -p pare-runtime --example qconv_bench [-- --threads N] [-- --quick]`

use std::time::{Duration, Instant};

use pare_runtime::ops::conv::{conv, conv_prepare_weights, ConvParams};
use pare_runtime::ops::qconv::{qconv, qconv_prepare_weights, QConvParams};
use pare_runtime::Activation;

fn median_ms(samples: usize, mut run: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut reps = 0usize;
    while t0.elapsed() < Duration::from_millis(10) {
        run();
        reps += 1;
    }
    let reps = (reps * 2).max(1); // ~20 ms per sample
    let mut ms: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                run();
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

#[path = "../tests/common/mod.rs"]
mod common;
use common::fill_range as fill;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map_or(1, |t| t.parse().expect("--threads N"));
    let samples = if args.iter().any(|a| a == "--quick") {
        3
    } else {
        9
    };
    // (what, c_in, h, w, c_out, kh, kw, stride [h, w], pads [t, l, b, r])
    type S = (
        &'static str,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 4],
    );
    let shapes: [S; 11] = [
        ("stem 3x3 s2", 3, 48, 320, 16, 3, 3, [2, 2], [1; 4]),
        ("pw 16->32", 16, 24, 160, 32, 1, 1, [1, 1], [0; 4]),
        ("pw 64->64", 64, 24, 160, 64, 1, 1, [1, 1], [0; 4]),
        ("pw 128->128", 128, 12, 160, 128, 1, 1, [1, 1], [0; 4]),
        ("pw 240->240", 240, 12, 80, 240, 1, 1, [1, 1], [0; 4]),
        ("pw 480->480", 480, 6, 80, 480, 1, 1, [1, 1], [0; 4]),
        ("neck 1x3", 480, 1, 40, 60, 1, 3, [1, 1], [0, 1, 0, 1]),
        // PP-LCNet (the orientation model, 224x224 input)
        ("lcnet pw 64->64 @56", 64, 56, 56, 64, 1, 1, [1, 1], [0; 4]),
        (
            "lcnet pw 128->128 @28",
            128,
            28,
            28,
            128,
            1,
            1,
            [1, 1],
            [0; 4],
        ),
        (
            "lcnet pw 256->256 @14",
            256,
            14,
            14,
            256,
            1,
            1,
            [1, 1],
            [0; 4],
        ),
        ("lcnet pw 512->512 @7", 512, 7, 7, 512, 1, 1, [1, 1], [0; 4]),
    ];
    println!("{threads} thread(s), median of {samples} samples, ms per call");
    println!(
        "| shape | in | out | f32 conv | int8 qconv | speedup |\n|---|---|---|---:|---:|---:|"
    );
    for (what, ci, h, w, co, kh, kw, st, pads) in shapes {
        let mut c = ConvParams::new(1, ci, h, w, co, kh, kw);
        (c.stride_h, c.stride_w) = (st[0], st[1]);
        (c.pad_top, c.pad_left, c.pad_bottom, c.pad_right) = (pads[0], pads[1], pads[2], pads[3]);
        c.has_bias = true;
        c.activation = Activation::Relu;
        let x = fill(c.x_len(), 1, -1.0, 1.0);
        let wf = fill(c.w_len(), 2, -0.2, 0.2);
        let bias = fill(co, 3, -0.1, 0.1);
        let mut y = vec![0f32; c.y_len()];
        // f32
        let wp = conv_prepare_weights(&c, &wf);
        let mut scratch = vec![0u8; c.scratch_bytes()];
        let f32_ms = median_ms(samples, || {
            conv(
                &c,
                &x,
                &wp,
                Some(&bias),
                None,
                &mut y,
                &mut scratch,
                threads,
            )
            .expect("conv");
        });
        // int8, per-output-channel weight scales
        let codes: Vec<i8> = wf.iter().map(|v| (v * 635.0).round() as i8).collect();
        let ws = vec![0.2 / 127.0; co];
        let (blob, format, seven) =
            qconv_prepare_weights(co, ci, kh, kw, &codes, &ws).expect("pack");
        let mut p = QConvParams::new(c, format, 2.0 / 255.0, 128);
        p.seven_bit = seven;
        let mut qscratch = vec![0u8; p.scratch_bytes()];
        let q_ms = median_ms(samples, || {
            qconv(
                &p,
                &x,
                &blob,
                Some(&bias),
                None,
                &mut y,
                &mut qscratch,
                threads,
            )
            .expect("qconv");
        });
        println!(
            "| {what} | {ci}x{h}x{w} | {co}x{}x{} | {f32_ms:.3} | {q_ms:.3} | {:.2}x |",
            c.out_h(),
            c.out_w(),
            f32_ms / q_ms
        );
    }
}
