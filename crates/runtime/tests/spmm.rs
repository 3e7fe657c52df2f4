//! `pare_k_spmm` (sparse-weight MatMul) against a dense reference with f64 accumulation, on
//! both the AVX2 and the portable kernels, plus operand checks and the C entry point.

use pare_runtime::ops::spmm::{
    pare_k_spmm, spmm, spmm_is_faster, spmm_prepare_b, spmm_prepare_b_blocked, spmm_with_isa,
    SpmmParams, SPMM_TAG, SPMM_WORDS,
};
use pare_runtime::ops::{STATUS_NULL, STATUS_OK, STATUS_PARAMS};
use pare_runtime::{Activation, Isa};

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
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit() * 2.0 - 1.0).collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Pattern {
    Random(f32),
    TwoFour,
}

/// `k x n` row-major weight with the pattern.
fn weight(k: usize, n: usize, pat: Pattern, rng: &mut Rng) -> Vec<f32> {
    let mut w = rng.vec(k * n);
    match pat {
        Pattern::Random(s) => {
            for x in w.iter_mut() {
                if rng.unit() < s {
                    *x = 0.0;
                }
            }
        }
        Pattern::TwoFour => {
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
        }
    }
    w
}

#[allow(clippy::too_many_arguments)]
fn reference(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += a[i * k + p] as f64 * w[p * n + j] as f64;
            }
            if let Some(b) = bias {
                acc += b[j] as f64;
            }
            if let Some(r) = res {
                acc += r[i * n + j] as f64;
            }
            y[i * n + j] = act.apply(acc as f32);
        }
    }
    y
}

/// Max |got - want| relative to the sum of |a||w| of the element (f32 rounding of k terms).
fn check(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len());
    let tol = 1e-5 * (k as f32 + 4.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    pat: Pattern,
    bias: bool,
    res: bool,
    act: Activation,
    threads: usize,
    k_block: usize,
}

impl Case {
    fn new(m: usize, k: usize, n: usize, pat: Pattern) -> Self {
        Case {
            m,
            k,
            n,
            pat,
            bias: false,
            res: false,
            act: Activation::Identity,
            threads: 1,
            k_block: 256,
        }
    }

    fn run(&self, seed: u64) {
        for isa in [Isa::Auto, Isa::Generic] {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let (m, k, n) = (self.m, self.k, self.n);
            let a = rng.vec(m * k);
            let w = weight(k, n, self.pat, &mut rng);
            let bias = self.bias.then(|| rng.vec(n));
            let res = self.res.then(|| rng.vec(m * n));
            let blob = spmm_prepare_b_blocked(k, n, &w, false, self.k_block).unwrap();
            let mut p = SpmmParams::for_weight(m, &blob).unwrap();
            p.has_bias = self.bias;
            p.has_residual = self.res;
            p.activation = self.act;
            assert_eq!(p.b_len(), blob.len());
            let want = reference(m, k, n, &a, &w, bias.as_deref(), res.as_deref(), self.act);
            let mut scratch = vec![0x55u8; p.scratch_bytes()];
            let mut c = vec![f32::NAN; m * n];
            spmm_with_isa(
                &p,
                &a,
                &blob,
                bias.as_deref(),
                res.as_deref(),
                &mut c,
                &mut scratch,
                self.threads,
                isa,
            )
            .unwrap();
            let what = format!(
                "m={m} k={k} n={n} {:?} bias={} res={} {:?} t={} kb={} {isa:?}",
                self.pat, self.bias, self.res, self.act, self.threads, self.k_block
            );
            check(&c, &want, k, &what);
            // The C entry point, separate and in-place residual.
            let words = p.encode();
            let mut c2 = vec![f32::NAN; m * n];
            let mut c3 = res.clone().unwrap_or_else(|| vec![0.0; m * n]);
            let null = std::ptr::null_mut::<u8>();
            let bp = bias.as_ref().map_or(null, |v| v.as_ptr() as *mut u8);
            let rp = res.as_ref().map_or(null, |v| v.as_ptr() as *mut u8);
            let mut scratch2 = vec![0u8; p.scratch_bytes() + 64];
            let sp = scratch2.as_mut_ptr();
            let bufs = [
                a.as_ptr() as *mut u8,
                blob.as_ptr() as *mut u8,
                bp,
                rp,
                c2.as_mut_ptr() as *mut u8,
                sp,
            ];
            // SAFETY: the buffers have the lengths the params imply.
            let st = unsafe { pare_k_spmm(words.as_ptr(), bufs.as_ptr(), self.threads) };
            assert_eq!(st, STATUS_OK, "{what}");
            if isa == Isa::Auto {
                assert_eq!(c, c2, "{what}: C entry differs from the safe entry");
            }
            if self.res {
                let cp = c3.as_mut_ptr() as *mut u8;
                let bufs = [
                    a.as_ptr() as *mut u8,
                    blob.as_ptr() as *mut u8,
                    bp,
                    cp,
                    cp,
                    sp,
                ];
                // SAFETY: as above; residual == c is the documented in-place form.
                let st = unsafe { pare_k_spmm(words.as_ptr(), bufs.as_ptr(), self.threads) };
                assert_eq!(st, STATUS_OK, "{what}");
                check(&c3, &want, k, &format!("{what} in place"));
            }
        }
    }
}

#[test]
fn sparsity_levels_and_patterns() {
    let pats = [
        Pattern::Random(0.0),
        Pattern::Random(0.5),
        Pattern::Random(0.9),
        Pattern::Random(1.0),
        Pattern::TwoFour,
    ];
    for (s, &pat) in pats.iter().enumerate() {
        for &(m, k, n) in &[(32, 64, 48), (37, 96, 40), (8, 33, 16), (70, 20, 9)] {
            Case::new(m, k, n, pat).run(s as u64 * 100 + m as u64);
        }
    }
}

#[test]
fn edge_sizes() {
    let shapes = [
        (1, 1, 1),
        (1, 384, 37),
        (1, 7, 8),
        (2, 40, 19),
        (2, 3, 8),
        (3, 1, 5),
        (9, 5, 17),
        (16, 16, 16),
        (17, 13, 23),
        (31, 8, 7),
        (33, 9, 31),
        (64, 3, 65),
        (5, 17, 1),
        (3, 0, 5),
        (40, 0, 9),
        (0, 4, 4),
        (4, 4, 0),
    ];
    for (i, &(m, k, n)) in shapes.iter().enumerate() {
        Case::new(m, k, n, Pattern::Random(0.6)).run(i as u64 + 7);
        let mut c = Case::new(m, k, n, Pattern::Random(0.6));
        c.bias = true;
        c.res = true;
        c.act = Activation::Relu;
        c.run(i as u64 + 70);
    }
}

#[test]
fn k_blocks() {
    for (i, &kb) in [1usize, 3, 8, 50, 100, 1000].iter().enumerate() {
        let mut c = Case::new(40, 100, 24, Pattern::Random(0.7));
        c.k_block = kb;
        c.bias = true;
        c.run(i as u64 + 300);
    }
}

#[test]
fn epilogues_and_threads() {
    let acts = [
        Activation::Identity,
        Activation::Relu,
        Activation::Clamp {
            min: -0.5,
            max: 0.25,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Gelu,
    ];
    let mut seed = 1000;
    for act in acts {
        for (bias, res) in [(false, false), (true, false), (false, true), (true, true)] {
            for threads in [1, 2] {
                for &(m, k, n) in &[(45, 70, 200), (3, 40, 21), (2, 50, 30), (1, 9, 17)] {
                    let mut c = Case::new(m, k, n, Pattern::Random(0.8));
                    c.bias = bias;
                    c.res = res;
                    c.act = act;
                    c.threads = threads;
                    c.k_block = 32;
                    c.run(seed);
                    seed += 1;
                }
            }
        }
    }
}

#[test]
fn large_two_threads_match_one() {
    // Big enough that the work is split over 2 threads (both the Aᵀ and the gather paths).
    for (m, k, n) in [(64, 512, 768), (1, 2048, 2048), (2, 1024, 1030)] {
        large_case(m, k, n);
    }
}

fn large_case(m: usize, k: usize, n: usize) {
    let mut rng = Rng(77);
    let a = rng.vec(m * k);
    let w = weight(k, n, Pattern::Random(0.7), &mut rng);
    let blob = spmm_prepare_b(k, n, &w, false).unwrap();
    let p = SpmmParams::for_weight(m, &blob).unwrap();
    let mut s = vec![0u8; p.scratch_bytes()];
    let mut c1 = vec![0f32; m * n];
    let mut c2 = vec![1f32; m * n];
    spmm(&p, &a, &blob, None, None, &mut c1, &mut s, 1).unwrap();
    spmm(&p, &a, &blob, None, None, &mut c2, &mut s, 2).unwrap();
    assert_eq!(c1, c2);
    check(
        &c1,
        &reference(m, k, n, &a, &w, None, None, Activation::Identity),
        k,
        "large",
    );
}

#[test]
fn transposed_weight() {
    let mut rng = Rng(5);
    let (m, k, n) = (20, 30, 11);
    let a = rng.vec(m * k);
    let w = weight(k, n, Pattern::Random(0.5), &mut rng);
    let mut wt = vec![0f32; k * n];
    for p in 0..k {
        for j in 0..n {
            wt[j * k + p] = w[p * n + j];
        }
    }
    let b1 = spmm_prepare_b(k, n, &w, false).unwrap();
    let b2 = spmm_prepare_b(k, n, &wt, true).unwrap();
    assert_eq!(b1, b2);
    let p = SpmmParams::for_weight(m, &b2).unwrap();
    let mut s = vec![0u8; p.scratch_bytes()];
    let mut c = vec![0f32; m * n];
    spmm(&p, &a, &b2, None, None, &mut c, &mut s, 1).unwrap();
    let want = reference(m, k, n, &a, &w, None, None, Activation::Identity);
    check(&c, &want, k, "transposed");
}

#[test]
fn encode_decode_round_trip() {
    let mut p = SpmmParams::new(7, 9, 11, 13, 5);
    p.has_bias = true;
    p.has_residual = true;
    p.activation = Activation::Clamp { min: 0.0, max: 6.0 };
    let w = p.encode();
    assert_eq!(w.len(), SPMM_WORDS);
    assert_eq!(w[0], SPMM_TAG);
    assert_eq!(SpmmParams::decode(&w), Some(p));
    let mut bad = w.clone();
    bad[0] += 1;
    assert_eq!(SpmmParams::decode(&bad), None);
    let mut bad = w.clone();
    bad[6] = 2; // has_bias not a flag
    assert_eq!(SpmmParams::decode(&bad), None);
    let mut bad = w.clone();
    bad[5] = 0; // k_block 0
    assert_eq!(SpmmParams::decode(&bad), None);
    let mut bad = w.clone();
    bad[4] = 9 * 11 + 1; // nnz > k n
    assert_eq!(SpmmParams::decode(&bad), None);
    let mut bad = w.clone();
    bad[1] = -1;
    assert_eq!(SpmmParams::decode(&bad), None);
    assert_eq!(SpmmParams::decode(&w[..SPMM_WORDS - 1]), None);
}

#[test]
fn bad_operands_rejected() {
    let mut rng = Rng(9);
    let (m, k, n) = (10, 12, 14);
    let a = rng.vec(m * k);
    let w = weight(k, n, Pattern::Random(0.5), &mut rng);
    let blob = spmm_prepare_b(k, n, &w, false).unwrap();
    let p = SpmmParams::for_weight(m, &blob).unwrap();
    let mut s = vec![0u8; p.scratch_bytes()];
    let mut c = vec![0f32; m * n];
    let ok = spmm(&p, &a, &blob, None, None, &mut c, &mut s, 1);
    assert!(ok.is_ok());
    let e = |r: Result<(), _>| r.expect_err("must be rejected");
    // Short buffers.
    e(spmm(&p, &a[1..], &blob, None, None, &mut c, &mut s, 1));
    e(spmm(
        &p,
        &a,
        &blob[..blob.len() - 1],
        None,
        None,
        &mut c,
        &mut s,
        1,
    ));
    let mut short_c = vec![0f32; m * n - 1];
    e(spmm(&p, &a, &blob, None, None, &mut short_c, &mut s, 1));
    let mut short_s = vec![0u8; p.scratch_bytes() - 1];
    e(spmm(&p, &a, &blob, None, None, &mut c, &mut short_s, 1));
    // Presence mismatches.
    let bias = vec![0f32; n];
    e(spmm(&p, &a, &blob, Some(&bias), None, &mut c, &mut s, 1));
    let mut pb = p;
    pb.has_bias = true;
    e(spmm(&pb, &a, &blob, None, None, &mut c, &mut s, 1));
    e(spmm(
        &pb,
        &a,
        &blob,
        Some(&bias[1..]),
        None,
        &mut c,
        &mut s,
        1,
    ));
    let mut pr = p;
    pr.has_residual = true;
    e(spmm(&pr, &a, &blob, None, None, &mut c, &mut s, 1));
    e(spmm(
        &pr,
        &a,
        &blob,
        None,
        Some(&c.clone()[1..]),
        &mut c,
        &mut s,
        1,
    ));
    // Params that do not match the weight.
    let mut pk = p;
    pk.k += 1;
    let mut s2 = vec![0u8; pk.scratch_bytes()];
    let a2 = rng.vec(m * (k + 1));
    e(spmm(&pk, &a2, &blob, None, None, &mut c, &mut s2, 1));
    let mut pn = p;
    pn.nnz -= 1;
    e(spmm(&pn, &a, &blob, None, None, &mut c, &mut s, 1));
    // Corrupt weights: index out of range, decreasing ptr, bad magic.
    let np = p.k_blocks() * n + 1;
    let mut bad = blob.clone();
    bad[8 + np] = k as u32;
    e(spmm(&p, &a, &bad, None, None, &mut c, &mut s, 1));
    let mut bad = blob.clone();
    bad[8 + 3] = bad[8 + 4] + 1;
    e(spmm(&p, &a, &bad, None, None, &mut c, &mut s, 1));
    let mut bad = blob.clone();
    bad[0] ^= 1;
    e(spmm(&p, &a, &bad, None, None, &mut c, &mut s, 1));
    assert!(SpmmParams::for_weight(m, &bad).is_err());
    // Bad params.
    let mut pa = p;
    pa.activation = Activation::Clamp { min: 1.0, max: 0.0 };
    e(spmm(&pa, &a, &blob, None, None, &mut c, &mut s, 1));
    let mut p0 = p;
    p0.k_block = 0;
    e(spmm(&p0, &a, &blob, None, None, &mut c, &mut s, 1));
    // Short weight given to prepare.
    assert!(spmm_prepare_b(k, n, &w[1..], false).is_err());
    // The C entry point: wrong tag, null operand.
    let mut words = p.encode();
    let bufs = [
        a.as_ptr() as *mut u8,
        blob.as_ptr() as *mut u8,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        c.as_mut_ptr() as *mut u8,
        s.as_mut_ptr(),
    ];
    // SAFETY: valid params and buffers.
    assert_eq!(
        unsafe { pare_k_spmm(words.as_ptr(), bufs.as_ptr(), 1) },
        STATUS_OK
    );
    let mut nulls = bufs;
    nulls[0] = std::ptr::null_mut();
    // SAFETY: as above, with a null input (which the kernel must reject).
    assert_eq!(
        unsafe { pare_k_spmm(words.as_ptr(), nulls.as_ptr(), 1) },
        STATUS_NULL
    );
    words[0] += 1;
    // SAFETY: the first word is not the tag, so nothing else is read.
    assert_eq!(
        unsafe { pare_k_spmm(words.as_ptr(), bufs.as_ptr(), 1) },
        STATUS_PARAMS
    );
}

#[test]
fn nothing_written_on_error() {
    let mut rng = Rng(11);
    let (m, k, n) = (4, 8, 8);
    let a = rng.vec(m * k);
    let w = weight(k, n, Pattern::Random(0.5), &mut rng);
    let mut blob = spmm_prepare_b(k, n, &w, false).unwrap();
    let p = SpmmParams::for_weight(m, &blob).unwrap();
    let np = p.k_blocks() * n + 1;
    if p.nnz > 0 {
        blob[8 + np + p.nnz - 1] = 1 << 30;
    }
    let mut s = vec![0u8; p.scratch_bytes()];
    let mut c = vec![3f32; m * n];
    assert!(spmm(&p, &a, &blob, None, None, &mut c, &mut s, 1).is_err());
    assert!(c.iter().all(|&x| x == 3.0));
}

#[test]
fn cost_model_is_conservative() {
    let mut rng = Rng(3);
    // Dense weights never go sparse.
    let w = weight(384, 384, Pattern::Random(0.0), &mut rng);
    assert!(!spmm_is_faster(32, 384, 384, &w, false));
    let w = weight(384, 384, Pattern::Random(0.5), &mut rng);
    assert!(!spmm_is_faster(32, 384, 384, &w, false));
    // Degenerate shapes never go sparse.
    assert!(!spmm_is_faster(0, 384, 384, &w, false));
    assert!(!spmm_is_faster(32, 384, 384, &w[1..], false));
    // Very sparse weights of a transformer-sized layer do.
    let w = weight(384, 1536, Pattern::Random(0.95), &mut rng);
    assert!(spmm_is_faster(32, 384, 1536, &w, false));
}
