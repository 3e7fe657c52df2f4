//! `slice` on a small generated post-LN encoder (embedding table + constant positions, two
//! FFN blocks with residual connections and LayerNormalization, a mean-pooling output),
//! calibrated on generated token ids and checked on held-out ids with the interpreter:
//!
//! - with nothing sliced the PCA rotation is exact (to float rounding);
//! - when every activation of the stream lies in a `r`-dimensional centered subspace, slicing
//!   to `r` is exact too, so the pass keeps the right axes;
//! - on a generic model slicing is lossy but the outputs stay close, and the parameter count
//!   falls;
//! - `refit=true` keeps the rotation exact when nothing is sliced and lowers the held-out
//!   error when something is.

use pare_interp::Interpreter;
use pare_ir::{parse_graph, Graph, Tensor};
use pare_pass::{Pass, PassContext, PassReport, SampleSet};
use pare_slice::{Scope, Slice, SliceOptions};

const D: usize = 8;
const V: usize = 12;
const S: usize = 5;
const F: usize = 16;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly N(0, 1) (sum of uniforms).
    fn gauss(&mut self) -> f64 {
        (0..4)
            .map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64)
            .sum::<f64>()
            * 3f64.sqrt()
            - 2.0 * 3f64.sqrt()
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.gauss() * scale).collect()
    }
}

/// `r` orthonormal vectors of length `D`, each orthogonal to the all-ones vector.
fn centered_basis(rng: &mut Rng, r: usize) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    let ones = vec![1.0 / (D as f64).sqrt(); D];
    while out.len() < r {
        let mut v = rng.vec(D, 1.0);
        for b in out.iter().chain(std::iter::once(&ones)) {
            let dot: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            for (x, y) in v.iter_mut().zip(b) {
                *x -= dot * y;
            }
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-3 {
            out.push(v.iter().map(|x| x / n).collect());
        }
    }
    out
}

/// `rows×D` matrix whose rows lie in the span of `basis` (random coefficients).
fn in_span(rng: &mut Rng, rows: usize, basis: &[Vec<f64>], scale: f64) -> Vec<f64> {
    let mut out = vec![0.0; rows * D];
    for r in 0..rows {
        for b in basis {
            let c = rng.gauss() * scale;
            for j in 0..D {
                out[r * D + j] += c * b[j];
            }
        }
    }
    out
}

fn lit(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
    format!("[{}]", items.join(", "))
}

/// The encoder; with `basis`, every value summed into the stream (table rows, positions,
/// norm biases, FFN output columns and biases) lies in its span and the norm scales are 1.
fn encoder(seed: u64, basis: Option<&[Vec<f64>]>) -> Graph {
    let mut rng = Rng(seed);
    let stream = |rng: &mut Rng, rows: usize, scale: f64| match basis {
        Some(b) => in_span(rng, rows, b, scale),
        None => rng.vec(rows * D, scale),
    };
    let table = stream(&mut rng, V, 1.0);
    let pos = stream(&mut rng, S, 0.3);
    let mut consts = format!(
        "  %table = const f32[{V},{D}] {}\n  %pos = const f32[{S},{D}] {}\n  %axes = const i64[1] [1]\n",
        lit(&table),
        lit(&pos)
    );
    let mut body = String::from("  %e = Gather(%table, %ids)\n  %z0 = Add(%e, %pos)\n");
    for l in 0..3 {
        let gamma: Vec<f64> = match basis {
            Some(_) => vec![1.0; D],
            None => rng.vec(D, 0.2).iter().map(|x| 1.0 + x).collect(),
        };
        let beta = stream(&mut rng, 1, 0.2);
        consts += &format!(
            "  %g{l} = const f32[{D}] {}\n  %b{l} = const f32[{D}] {}\n",
            lit(&gamma),
            lit(&beta)
        );
        body += &format!(
            "  %x{l} = LayerNormalization(%z{l}, %g{l}, %b{l}) {{epsilon=1e-12}} loc(\"ln{l}\")\n"
        );
        if l == 2 {
            break;
        }
        let w1 = rng.vec(D * F, 0.4);
        let c1 = rng.vec(F, 0.1);
        let w2 = stream(&mut rng, F, 0.3);
        let c2 = stream(&mut rng, 1, 0.1);
        consts += &format!(
            "  %w1_{l} = const f32[{D},{F}] {}\n  %c1_{l} = const f32[{F}] {}\n  %w2_{l} = const f32[{F},{D}] {}\n  %c2_{l} = const f32[{D}] {}\n",
            lit(&w1),
            lit(&c1),
            lit(&w2),
            lit(&c2)
        );
        let n = l + 1;
        body += &format!(
            "  %h{l} = MatMul(%x{l}, %w1_{l})\n  %hb{l} = Add(%c1_{l}, %h{l})\n  %a{l} = Gelu(%hb{l})\n  %o{l} = MatMul(%a{l}, %w2_{l})\n  %ob{l} = Add(%o{l}, %c2_{l})\n  %z{n} = Add(%ob{l}, %x{l})\n"
        );
    }
    body += "  %pool = ReduceMean(%x2, %axes) {keepdims=0}\n";
    let text = format!("graph @main(%ids: i64[N,{S}]) -> (%x2, %pool) {{\n{consts}{body}}}\n");
    parse_graph(&text).expect("the generated encoder parses")
}

fn ids(rng: &mut Rng, batch: usize) -> Tensor {
    Tensor::from_vec(
        vec![batch, S],
        (0..batch * S)
            .map(|_| (rng.next() % V as u64) as i64)
            .collect::<Vec<i64>>(),
    )
}

fn samples(g: &Graph, n: usize, seed: u64) -> SampleSet {
    let mut rng = Rng(seed);
    let inputs = (0..n).map(|_| vec![ids(&mut rng, 4)]).collect();
    SampleSet::from_inputs(g, inputs, "generated")
}

fn sliced(g: &Graph, ratio: f64, round_to: usize, calib: Option<SampleSet>) -> (Graph, PassReport) {
    sliced_with(
        g,
        SliceOptions {
            ratio,
            round_to,
            ..SliceOptions::default()
        },
        calib,
    )
}

fn sliced_with(g: &Graph, opts: SliceOptions, calib: Option<SampleSet>) -> (Graph, PassReport) {
    let mut h = g.clone();
    let mut cx = PassContext::new();
    if let Some(c) = calib {
        cx = cx.with_samples(c);
    }
    let r = Slice::new(opts).run(&mut h, &mut cx).expect("slice runs");
    pare_ir::verify(&h).expect("the sliced graph verifies");
    (h, r)
}

/// Largest relative L2 error over the outputs, on held-out ids.
fn rel_err(a: &Graph, b: &Graph) -> f64 {
    let interp = Interpreter::new();
    let mut rng = Rng(0xfeed);
    let mut worst = 0f64;
    for _ in 0..3 {
        let x = ids(&mut rng, 3);
        let ya = interp
            .run(a, std::slice::from_ref(&x))
            .expect("original runs");
        let yb = interp.run(b, &[x]).expect("sliced runs");
        assert_eq!(ya.len(), yb.len());
        for (p, q) in ya.iter().zip(&yb) {
            assert_eq!(p.shape(), q.shape());
            let (p, q) = (p.to_f64_vec().unwrap(), q.to_f64_vec().unwrap());
            let num: f64 = p.iter().zip(&q).map(|(x, y)| (x - y) * (x - y)).sum();
            let den: f64 = p.iter().map(|x| x * x).sum();
            worst = worst.max((num / den).sqrt());
        }
    }
    worst
}

#[test]
fn rotation_without_slicing_is_exact() {
    let g = encoder(11, None);
    let calib = samples(&g, 8, 3);
    let (h, r) = sliced(&g, 0.0, 8, Some(calib));
    assert_eq!(r.stats["norms"], 3);
    assert_eq!(r.stats["hidden-kept"], D as u64);
    assert_eq!(r.stats["tables"], 1);
    assert_eq!(r.stats["residual-matmuls"], 2);
    assert_eq!(r.stats["restore-matmuls"], 1);
    let e = rel_err(&g, &h);
    eprintln!("ratio 0, PCA rotation: relative error {e:.2e}");
    assert!(e < 1e-5, "relative error {e}");
    // Without calibration the rotation is the identity (norm folding only): exact too, and a
    // different graph from the PCA-rotated one (the rewritten tables differ).
    let (hi, ri) = sliced(&g, 0.0, 8, None);
    assert!(ri.notes.iter().any(|n| n.contains("identity rotation")));
    assert!(rel_err(&g, &hi) < 1e-5);
    let table = |g: &Graph| {
        let v = g.find_value("table.sliced").expect("rewritten table");
        g.constant(v).expect("constant").to_f64_vec().expect("f32")
    };
    let (a, b) = (table(&h), table(&hi));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        diff > 1e-2,
        "the PCA basis should not be the identity: {diff}"
    );
}

#[test]
fn slicing_a_low_rank_stream_is_exact() {
    let mut rng = Rng(5);
    let basis = centered_basis(&mut rng, 4);
    let g = encoder(13, Some(&basis));
    let calib = samples(&g, 8, 4);
    let (h, r) = sliced(&g, 0.5, 1, Some(calib.clone()));
    assert_eq!(r.stats["hidden-kept"], 4);
    assert!(r.stats["params-after"] < r.stats["params-before"]);
    let variance: Vec<&String> = r
        .notes
        .iter()
        .filter(|n| n.contains("retained variance"))
        .collect();
    assert_eq!(variance.len(), 3, "{:?}", r.notes);
    assert!(
        variance
            .iter()
            .all(|n| n.contains("retained variance 1.0000")),
        "{variance:?}"
    );
    let e = rel_err(&g, &h);
    assert!(e < 1e-4, "relative error {e}");
    // One axis fewer than the stream's rank loses information.
    let (h3, _) = sliced(&g, 5.0 / 8.0, 1, Some(calib));
    let e3 = rel_err(&g, &h3);
    eprintln!("rank-4 stream: kept 4 -> error {e:.2e}, kept 3 -> error {e3:.2e}");
    assert!(
        e3 > 1e-2,
        "slicing below the rank should lose accuracy: {e3}"
    );
}

#[test]
fn slicing_a_generic_stream_is_close_and_smaller() {
    let g = encoder(17, None);
    let calib = samples(&g, 16, 6);
    let (h, r) = sliced(&g, 0.25, 2, Some(calib));
    assert_eq!(r.stats["hidden-kept"], 6);
    let (before, after) = (r.stats["params-before"], r.stats["params-after"]);
    assert!(after < before, "{before} -> {after}");
    let e = rel_err(&g, &h);
    eprintln!("generic stream, 8 -> 6: params {before} -> {after}, relative error {e:.3}");
    assert!(e.is_finite() && e < 0.5, "relative error {e}");
}

#[test]
fn slicing_without_calibration_fails() {
    let g = encoder(11, None);
    let mut h = g.clone();
    let err = Slice::new(SliceOptions {
        ratio: 0.25,
        round_to: 1,
        ..SliceOptions::default()
    })
    .run(&mut h, &mut PassContext::new())
    .expect_err("needs samples");
    assert!(err.to_string().contains("--calib"), "{err}");
}

#[test]
fn embedding_scope_slices_only_the_embedding_norm() {
    let g = encoder(17, None);
    let calib = samples(&g, 16, 6);
    let opts = |ratio| SliceOptions {
        ratio,
        round_to: 2,
        scope: Scope::Embeddings,
        ..SliceOptions::default()
    };
    let (h0, r0) = sliced_with(&g, opts(0.0), Some(calib.clone()));
    assert_eq!(r0.stats["norms"], 1);
    // The first block's FFN reads the rotated stream; its residual Add and the later norms
    // read the original basis through one restore MatMul.
    assert_eq!(r0.stats["restore-matmuls"], 1);
    assert_eq!(r0.stats["residual-matmuls"], 0);
    let lns = |g: &Graph| {
        g.node_ids()
            .filter(|&n| matches!(g.node(n).op, pare_ir::Op::LayerNormalization(_)))
            .count()
    };
    assert_eq!(lns(&h0), 2);
    assert!(rel_err(&g, &h0) < 1e-5);
    let (h, r) = sliced_with(&g, opts(0.25), Some(calib));
    let e = rel_err(&g, &h);
    eprintln!(
        "embedding scope, 8 -> 6: params {} -> {}, relative error {e:.3}",
        r.stats["params-before"], r.stats["params-after"]
    );
    assert!(r.stats["params-after"] < r.stats["params-before"]);
    assert!(e.is_finite() && e < 0.5, "relative error {e}");
}

#[test]
fn sequential_calibration_is_exact_where_slicing_loses_nothing() {
    let opts = |ratio| SliceOptions {
        ratio,
        round_to: 1,
        sequential: true,
        ..SliceOptions::default()
    };
    let g = encoder(11, None);
    let (h, r) = sliced_with(&g, opts(0.0), Some(samples(&g, 8, 3)));
    assert_eq!(r.stats["norms"], 3);
    assert!(rel_err(&g, &h) < 1e-5);
    let mut rng = Rng(5);
    let basis = centered_basis(&mut rng, 4);
    let g = encoder(13, Some(&basis));
    let (h, r) = sliced_with(&g, opts(0.5), Some(samples(&g, 8, 4)));
    assert_eq!(r.stats["hidden-kept"], 4);
    let e = rel_err(&g, &h);
    assert!(e < 1e-4, "relative error {e}");
    // On a generic stream it differs from the one-pass calibration (later norms see the
    // sliced activations) and stays close to the original.
    let g = encoder(17, None);
    let calib = samples(&g, 16, 6);
    let (hs, _) = sliced_with(&g, opts(0.25), Some(calib.clone()));
    let (hp, _) = sliced_with(
        &g,
        SliceOptions {
            sequential: false,
            ..opts(0.25)
        },
        Some(calib),
    );
    let (es, ep) = (rel_err(&g, &hs), rel_err(&g, &hp));
    eprintln!("generic stream, 8 -> 6: sequential error {es:.3}, one-pass {ep:.3}");
    assert!(es.is_finite() && es < 0.5, "relative error {es}");
    assert!(
        (es - ep).abs() > 1e-6,
        "sequential calibration changed nothing"
    );
}

#[test]
fn refit_lowers_the_error_and_keeps_exactness() {
    let opts = |ratio, refit| SliceOptions {
        ratio,
        round_to: 1,
        refit,
        ..SliceOptions::default()
    };
    // Nothing sliced: the refit finds the rotated weights again (or keeps them).
    let g = encoder(11, None);
    let (h, r) = sliced_with(&g, opts(0.0, true), Some(samples(&g, 8, 3)));
    assert_eq!(r.stats["refit-layers"], 5, "{:?}", r.notes);
    let e0 = rel_err(&g, &h);
    eprintln!("ratio 0 with refit: relative error {e0:.2e}");
    assert!(e0 < 1e-5, "relative error {e0}");
    // Sliced 8 -> 6 (and 8 -> 4): the refit lowers the held-out error, and every refitted
    // map's calibration error.
    let g = encoder(17, None);
    let calib = samples(&g, 16, 6);
    for ratio in [0.25, 0.5] {
        let (hp, _) = sliced_with(&g, opts(ratio, false), Some(calib.clone()));
        let (hr, rr) = sliced_with(&g, opts(ratio, true), Some(calib.clone()));
        let (ep, er) = (rel_err(&g, &hp), rel_err(&g, &hr));
        let fits: Vec<&String> = rr.notes.iter().filter(|n| n.contains("refit")).collect();
        eprintln!("ratio {ratio}: error {ep:.4} without refit, {er:.4} with; {fits:#?}");
        assert_eq!(rr.stats["refit-layers"], 5, "{:?}", rr.notes);
        assert!(rr.stats["refit-changed"] >= 1, "{:?}", rr.notes);
        assert!(er < ep, "refit did not lower the error: {ep} -> {er}");
    }
}

#[test]
fn refit_options_are_checked() {
    let g = encoder(11, None);
    let mut h = g.clone();
    let err = Slice::new(SliceOptions {
        refit: true,
        refit_damp: -1.0,
        ..SliceOptions::default()
    })
    .run(
        &mut h,
        &mut PassContext::new().with_samples(samples(&g, 2, 1)),
    )
    .expect_err("negative damping");
    assert!(err.to_string().contains("refit-damp"), "{err}");
}
