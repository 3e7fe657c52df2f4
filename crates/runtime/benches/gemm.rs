//! Criterion micro-benchmarks for the SGEMM kernels. Throughput is reported in FLOP
//! (`2*m*n*k` per call), so criterion's "elem/s" reads as FLOP/s.
//!
//! `cargo bench -p pare-runtime --bench gemm` (add a filter such as `square/` to narrow it).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pare_runtime::{pack_b, sgemm, sgemm_fused, sgemm_packed, Activation, Bias, Epilogue};

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i + seed) * 7 % 13) as f32 - 6.0) * 0.1)
        .collect()
}

fn bench_square(c: &mut Criterion) {
    let mut g = c.benchmark_group("square");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for s in [64usize, 128, 256, 512, 1024] {
        let (a, b) = (data(s * s, 1), data(s * s, 2));
        let mut out = vec![0.0f32; s * s];
        g.throughput(Throughput::Elements(2 * (s * s * s) as u64));
        for threads in [1usize, 2] {
            g.bench_with_input(BenchmarkId::new(format!("{threads}T"), s), &s, |bch, &s| {
                bch.iter(|| {
                    sgemm(
                        s, s, s, 1.0, &a, s, false, &b, s, false, 0.0, &mut out, s, threads,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn bench_models(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (m, n, k) in [
        (128usize, 384usize, 384usize),
        (128, 1536, 384),
        (3136, 64, 576),
    ] {
        let (a, b) = (data(m * k, 1), data(k * n, 2));
        let bias = data(n, 3);
        let pb = pack_b(k, n, &b, n, false).unwrap();
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let name = format!("{m}x{n}x{k}");
        for threads in [1usize, 2] {
            g.bench_function(
                BenchmarkId::new(format!("dense/{threads}T"), &name),
                |bch| {
                    bch.iter(|| {
                        sgemm(
                            m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut out, n, threads,
                        )
                        .unwrap()
                    })
                },
            );
            g.bench_function(
                BenchmarkId::new(format!("packed/{threads}T"), &name),
                |bch| {
                    bch.iter(|| {
                        sgemm_packed(
                            m,
                            1.0,
                            &a,
                            k,
                            false,
                            &pb,
                            0.0,
                            &mut out,
                            n,
                            &Epilogue::default(),
                            threads,
                        )
                        .unwrap()
                    })
                },
            );
        }
        // Epilogue cost: bias + gelu fused into the store, 1 thread.
        let epi = Epilogue::bias(Bias::PerColumn(&bias), Activation::Gelu);
        g.bench_function(BenchmarkId::new("dense-bias-gelu/1T", &name), |bch| {
            bch.iter(|| {
                sgemm_fused(
                    m, n, k, 1.0, &a, k, false, &b, n, false, 0.0, &mut out, n, &epi, 1,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_square, bench_models);
criterion_main!(benches);
