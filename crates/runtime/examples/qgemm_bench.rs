//! Int8 GEMM vs the f32 packed SGEMM on the same shapes, at 1 and 2 threads: GFLOP/s counted
//! as `2·M·N·K` per second for both, medians of several timed samples.
//!
//! Columns: `f32` = `sgemm_packed` (pre-packed B); `q7` = the int8 GEMM with 7-bit weights
//! (`I8Quads`, `seven_bit`: vpdpbusd with VNNI, vpmaddubsw with AVX2) on already-quantized A;
//! `q8` = the same with full-range int8 weights (`I8Quads`: vpdpbusd with VNNI, the even/odd
//! vpmaddwd kernel with AVX2); `q8p` = full-range weights in the legacy `I16Pairs` format;
//! `q8+dq` = `quantize_rows_u8` of the f32 A plus the `q8` GEMM (what a dynamically quantized
//! MatMul costs end to end); `x7`, `x8` = speedups of `q7`, `q8` over `f32`; `xdq` = of `q8+dq`.
//!
//! `cargo run --release -p pare-runtime --example qgemm_bench [-- --quick] [-- --best]
//! [-- --isa vnni|avx2|generic] [-- --threads N]` (`--isa` forces the int8 kernels, default
//! `Isa::Auto`; `--threads` runs only that thread count instead of 1 and 2).

use std::time::{Duration, Instant};

use pare_runtime::{
    pack_b, pack_qb, quantize_rows_u8, quantize_weights_per_column, sgemm_packed, Activation,
    Epilogue, Isa, PackedQB, QGemm, QbFormat,
};

fn median_gflops(flops: f64, samples: usize, best: bool, mut run: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut reps = 0usize;
    while t0.elapsed() < Duration::from_millis(5) {
        run();
        reps += 1;
    }
    let reps = (reps * 4).max(1); // ~20 ms per sample
    let mut rates: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                run();
            }
            flops / (t.elapsed().as_secs_f64() / reps as f64) / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    if best {
        rates[rates.len() - 1]
    } else {
        rates[rates.len() / 2]
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // --best reports the fastest sample instead of the median: for a machine shared with other
    // jobs, where the median mostly measures the neighbours.
    let best = std::env::args().any(|a| a == "--best");
    let samples = if quick { 3 } else { 9 };
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let isa = match opt("--isa").as_deref() {
        None | Some("auto") => Isa::Auto,
        Some("vnni") => Isa::Avx512Vnni,
        Some("avx2") => Isa::Avx2Fma,
        Some("generic") => Isa::Generic,
        Some(other) => panic!("unknown --isa {other}"),
    };
    let thread_counts: Vec<usize> = match opt("--threads") {
        Some(t) => vec![t.parse().expect("--threads N")],
        None => vec![1, 2],
    };
    println!(
        "f32 isa: {:?}, int8 isa: {isa:?} (VNNI {}), {} of {samples} samples, GFLOP/s",
        Isa::detect(),
        if Isa::Avx512Vnni.supported() {
            "available"
        } else {
            "absent"
        },
        if best { "best" } else { "median" }
    );
    let shapes: &[(usize, usize, usize, &str)] = &[
        (32, 384, 384, "minilm qkv/out"),
        (32, 1152, 384, "minilm qkv merged"),
        (32, 1536, 384, "minilm ffn up"),
        (32, 384, 1536, "minilm ffn down"),
        (128, 384, 384, "bert-ish m=128"),
        (256, 256, 256, "square"),
        (512, 512, 512, "square"),
        (1024, 1024, 1024, "square"),
    ];
    println!(
        "{:>5} {:>5} {:>5}  {:<16} {:>3} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}",
        "m", "n", "k", "shape", "thr", "f32", "q7", "q8", "q8p", "q8+dq", "x7", "x8", "xdq"
    );
    for &(m, n, k, what) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let pb = pack_b(k, n, &b, n, false).expect("valid shape");
        let (c7, s7) = quantize_weights_per_column(k, n, &b, n, false, true).expect("valid");
        let (c8, s8) = quantize_weights_per_column(k, n, &b, n, false, false).expect("valid");
        let q7 = pack_qb(k, n, &c7, n, false, &s7).expect("valid");
        let q8 = pack_qb(k, n, &c8, n, false, &s8).expect("valid");
        let q8p = PackedQB::new(k, n, &c8, n, false, &s8, Some(QbFormat::I16Pairs)).expect("valid");
        assert!(q7.format() == QbFormat::I8Quads && q7.seven_bit());
        assert!(q8.format() == QbFormat::I8Quads && !q8.seven_bit());
        let mut qa = vec![0u8; m * k];
        let mut sa = vec![0.0f32; m];
        let mut za = vec![0u8; m];
        quantize_rows_u8(&a, m, k, k, &mut qa, &mut sa, &mut za).expect("valid");
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        for &threads in &thread_counts {
            let f32_rate = median_gflops(flops, samples, best, || {
                sgemm_packed(
                    m,
                    1.0,
                    &a,
                    k,
                    false,
                    &pb,
                    0.0,
                    &mut c,
                    n,
                    &Epilogue::default(),
                    threads,
                )
                .expect("valid shape")
            });
            let q = |pq: &PackedQB, qa: &[u8], sa: &[f32], za: &[u8], c: &mut [f32]| {
                QGemm {
                    m,
                    a: qa,
                    lda: k,
                    a_scale: sa,
                    a_zero: za,
                    b: pq.as_ref(),
                    bias: None,
                    activation: Activation::Identity,
                    threads,
                    isa,
                }
                .run(c, n)
                .expect("valid shape")
            };
            let q7_rate = median_gflops(flops, samples, best, || q(&q7, &qa, &sa, &za, &mut c));
            let q8_rate = median_gflops(flops, samples, best, || q(&q8, &qa, &sa, &za, &mut c));
            let q8p_rate = median_gflops(flops, samples, best, || q(&q8p, &qa, &sa, &za, &mut c));
            let mut qa2 = vec![0u8; m * k];
            let (mut sa2, mut za2) = (vec![0.0f32; m], vec![0u8; m]);
            let e2e_rate = median_gflops(flops, samples, best, || {
                quantize_rows_u8(&a, m, k, k, &mut qa2, &mut sa2, &mut za2).expect("valid");
                q(&q8, &qa2, &sa2, &za2, &mut c)
            });
            println!(
                "{:>5} {:>5} {:>5}  {:<16} {:>3} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>5.2}x {:>5.2}x {:>5.2}x",
                m,
                n,
                k,
                what,
                threads,
                f32_rate,
                q7_rate,
                q8_rate,
                q8p_rate,
                e2e_rate,
                q7_rate / f32_rate,
                q8_rate / f32_rate,
                e2e_rate / f32_rate
            );
        }
    }
}
