//! Prints SGEMM GFLOP/s for square and model-like shapes at 1 and 2 threads, as medians of
//! several timed samples, next to the machine's measured single-core peak (98 GFLOP/s).
//!
//! `cargo run --release -p pare-runtime --example gemm_gflops [-- --quick] [-- --packed]`

use std::time::{Duration, Instant};

use pare_runtime::{pack_b, sgemm, sgemm_packed, Epilogue};

const PEAK_PER_CORE: f64 = 98.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let packed = args.iter().any(|a| a == "--packed");
    // --best reports the fastest sample instead of the median: for comparing variants on a
    // machine shared with other jobs, not for the record.
    let best = args.iter().any(|a| a == "--best");
    let samples = if quick { 5 } else { 9 };
    if args.iter().any(|a| a == "--peak") {
        let mut r: Vec<f64> = (0..samples).map(|_| fma_peak()).collect();
        r.sort_by(f64::total_cmp);
        println!(
            "measured FMA peak, 1 core: median {:.1} GFLOP/s (max {:.1})",
            r[r.len() / 2],
            r[r.len() - 1]
        );
    }
    let shapes: &[(usize, usize, usize, &str)] = &[
        (64, 64, 64, "square"),
        (128, 128, 128, "square"),
        (256, 256, 256, "square"),
        (512, 512, 512, "square"),
        (1024, 1024, 1024, "square"),
        (128, 384, 384, "bert-ish qkv/out"),
        (128, 1536, 384, "bert-ish ffn up"),
        (128, 384, 1536, "bert-ish ffn down"),
        (3136, 64, 576, "conv3x3 64ch im2col"),
        (1, 1000, 1280, "classifier m=1"),
        (32, 384, 384, "minilm qkv/out m=32"),
        (32, 1536, 384, "minilm ffn up m=32"),
        (32, 384, 1536, "minilm ffn down m=32"),
    ];
    println!(
        "mode: {}, {} of {samples} samples",
        if packed { "pre-packed B" } else { "dense B" },
        if best { "best" } else { "median" }
    );
    println!(
        "{:>5} {:>5} {:>5}  {:<20} {:>9} {:>7} {:>9} {:>7}",
        "m", "n", "k", "shape", "1T GF/s", "% peak", "2T GF/s", "% 2peak"
    );
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    for (idx, &(m, n, k, what)) in shapes.iter().enumerate() {
        if only.is_some_and(|o| o != idx) {
            continue;
        }
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let mut c = vec![0.0f32; m * n];
        let pb = pack_b(k, n, &b, n, false).expect("valid shape");
        let mut row = Vec::new();
        for threads in [1usize, 2] {
            let mut run = || {
                if packed {
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
                } else {
                    sgemm(
                        m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut c, n, threads,
                    )
                }
                .expect("valid shape")
            };
            // Calibrate repetitions to ~50 ms per sample.
            let t0 = Instant::now();
            let mut reps = 0;
            while t0.elapsed() < Duration::from_millis(10) {
                run();
                reps += 1;
            }
            let reps = (reps * 5 / 2).max(1);
            let mut rates: Vec<f64> = (0..samples)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        run();
                    }
                    let secs = t.elapsed().as_secs_f64() / reps as f64;
                    2.0 * (m * n * k) as f64 / secs / 1e9
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            let med = if best {
                rates[rates.len() - 1]
            } else {
                rates[rates.len() / 2]
            };
            row.push((med, 100.0 * med / (PEAK_PER_CORE * threads as f64)));
        }
        println!(
            "{:>5} {:>5} {:>5}  {:<20} {:>9.1} {:>6.1}% {:>9.1} {:>6.1}%",
            m, n, k, what, row[0].0, row[0].1, row[1].0, row[1].1
        );
    }
}

/// Throughput of 12 independent 8-wide FMA chains in registers: the per-core f32 peak.
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            let iters = 20_000_000u64;
            let t = Instant::now();
            // SAFETY: AVX2 and FMA were detected just above.
            let sink = unsafe { fma_loop(iters) };
            let secs = t.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            return (iters * 12 * 16) as f64 / secs / 1e9;
        }
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let y = _mm256_set1_ps(std::hint::black_box(1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}
