//! Sparse-weight MatMul (`pare_k_spmm`) vs the dense packed SGEMM (`matmul` with a
//! `matmul_prepare_b` weight) on the same shapes, 1 thread by default: median time of many
//! timed samples, speedup `dense / sparse`, and the crossover sparsity per shape (the lowest
//! random sparsity from which the sparse kernel stays faster).
//!
//! `cargo run --release -p pare-runtime --example spmm_bench [-- --quick] [-- --threads N]
//! [-- --k-block N] [-- --samples N] [-- --shape M,K,N]`
//!
//! Dense and sparse samples are interleaved; `dense us`/`spmm us` are median times, `speedup`
//! the median of the per-sample-pair ratios, `best d`/`best s`/`best x` the fastest samples and
//! their ratio (what the crossover uses: on a shared machine the undisturbed samples are the
//! fastest, and they repeat from run to run), `spread` the interquartile range of the pair
//! ratios over their median: how noisy the machine was. `model` is what [`spmm_is_faster`]
//! picks.

use std::time::{Duration, Instant};

use pare_runtime::ops::matmul::{matmul, matmul_prepare_b, MatMulParams};
use pare_runtime::ops::spmm::{
    spmm, spmm_is_faster, spmm_prepare_b_blocked, SpmmParams, SPMM_DEFAULT_K_BLOCK,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `k x n` weight: random values, a fraction `sparsity` of them zero, or the 2:4 pattern along
/// k (every group of 4 consecutive rows of a column keeps 2) when `two_four`.
fn weight(k: usize, n: usize, sparsity: f32, two_four: bool, rng: &mut Rng) -> Vec<f32> {
    let mut w: Vec<f32> = (0..k * n).map(|_| rng.unit() * 2.0 - 1.0).collect();
    if two_four {
        for j in 0..n {
            for g in (0..k).step_by(4) {
                let a = (rng.next() % 4) as usize;
                let b = (a + 1 + (rng.next() % 3) as usize) % 4;
                for q in 0..4 {
                    if g + q < k && q != a && q != b {
                        w[(g + q) * n + j] = 0.0;
                    }
                }
            }
        }
    } else {
        for x in w.iter_mut() {
            if rng.unit() < sparsity {
                *x = 0.0;
            }
        }
    }
    w
}

/// Times `dense` and `sparse` interleaved (one sample of each, `samples` times, each sample
/// ~`ms` milliseconds of back-to-back calls), so that a neighbour's burst of load hits both.
/// Returns (median dense s/call, median sparse s/call, median of the per-pair ratios
/// dense/sparse, best dense, best sparse, spread of the ratios `(q3 - q1) / median`).
fn time_pair(
    samples: usize,
    ms: u64,
    mut dense: impl FnMut(),
    mut sparse: impl FnMut(),
) -> [f64; 6] {
    let reps = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        let mut r = 0usize;
        while t0.elapsed() < Duration::from_millis(ms) {
            f();
            r += 1;
        }
        r.max(1)
    };
    let (rd, rs) = (reps(&mut dense), reps(&mut sparse));
    let run = |f: &mut dyn FnMut(), r: usize| {
        let t = Instant::now();
        for _ in 0..r {
            f();
        }
        t.elapsed().as_secs_f64() / r as f64
    };
    let mut d = Vec::new();
    let mut s = Vec::new();
    let mut q = Vec::new();
    for _ in 0..samples {
        let td = run(&mut dense, rd);
        let ts = run(&mut sparse, rs);
        d.push(td);
        s.push(ts);
        q.push(td / ts);
    }
    for v in [&mut d, &mut s, &mut q] {
        v.sort_by(f64::total_cmp);
    }
    let med = |v: &[f64]| v[v.len() / 2];
    let spread = (q[q.len() * 3 / 4] - q[q.len() / 4]) / med(&q);
    [med(&d), med(&s), med(&q), d[0], s[0], spread]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse::<usize>().ok())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let threads = opt("--threads").unwrap_or(1);
    let k_block = opt("--k-block").unwrap_or(SPMM_DEFAULT_K_BLOCK);
    let samples = opt("--samples").unwrap_or(if quick { 5 } else { 15 });
    let ms = if quick { 2 } else { 4 };
    // --shape m,k,n runs only that shape.
    let shape = args
        .iter()
        .position(|a| a == "--shape")
        .and_then(|i| args.get(i + 1))
        .map(|s| {
            let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("m,k,n")).collect();
            (v[0], v[1], v[2])
        });
    let mut shapes = vec![
        (32, 384, 384),
        (32, 384, 1536),
        (32, 1536, 384),
        (128, 384, 1536),
        (1, 384, 1536),
    ];
    if let Some(s) = shape {
        shapes = vec![s];
    }
    // (label, sparsity, 2:4)
    let cases: [(&str, f32, bool); 7] = [
        ("0%", 0.0, false),
        ("50%", 0.5, false),
        ("70%", 0.7, false),
        ("80%", 0.8, false),
        ("90%", 0.9, false),
        ("95%", 0.95, false),
        ("2:4", 0.5, true),
    ];
    println!(
        "threads {threads}, k_block {k_block}, {samples} samples of ~{ms} ms, median time per call"
    );
    println!(
        "{:>16} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "m,k,n",
        "sparse",
        "dense us",
        "spmm us",
        "speedup",
        "best d",
        "best s",
        "best x",
        "spread",
        "model"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for &(m, k, n) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|_| rng.unit() - 0.5).collect();
        let mut c = vec![0f32; m * n];
        let mut crossover: Option<&str> = None;
        let mut crossover10: Option<&str> = None;
        for &(label, s, two_four) in &cases {
            let w = weight(k, n, s, two_four, &mut rng);
            let mut dp = MatMulParams::new(1, m, n, k);
            dp.b_prepacked = true;
            let packed = matmul_prepare_b(&dp, &w);
            let blob = spmm_prepare_b_blocked(k, n, &w, false, k_block).unwrap();
            let sp = SpmmParams::for_weight(m, &blob).unwrap();
            let mut scratch = vec![0u8; sp.scratch_bytes()];
            let mut c2 = vec![0f32; m * n];
            let [dense, sparse, speedup, best_d, best_s, spread] = time_pair(
                samples,
                ms,
                || matmul(&dp, &a, &packed, None, None, &mut c, threads).unwrap(),
                || spmm(&sp, &a, &blob, None, None, &mut c2, &mut scratch, threads).unwrap(),
            );
            // The crossover uses the best-of ratio: on a shared machine the fastest samples
            // are the ones a neighbour did not disturb, and they repeat from run to run.
            let best_x = best_d / best_s;
            if !two_four {
                if best_x >= 1.0 {
                    crossover.get_or_insert(label);
                } else {
                    crossover = None;
                }
                if best_x >= 1.1 {
                    crossover10.get_or_insert(label);
                } else {
                    crossover10 = None;
                }
            }
            let model = if spmm_is_faster(m, k, n, &w, false) {
                "sparse"
            } else {
                "dense"
            };
            println!(
                "{:>16} {:>6} {:>10.1} {:>10.1} {:>8.2} {:>8.1} {:>8.1} {:>8.2} {:>6.0}% {:>6}",
                format!("{m},{k},{n}"),
                label,
                dense * 1e6,
                sparse * 1e6,
                speedup,
                best_d * 1e6,
                best_s * 1e6,
                best_x,
                spread * 100.0,
                model
            );
        }
        println!(
            "{:>16} crossover (best-of, sparse faster from): {}; by >= 10 %: {}",
            format!("{m},{k},{n}"),
            crossover.unwrap_or("never"),
            crossover10.unwrap_or("never")
        );
    }
}
