//! `prune-channels` / `prune-heads` on the real models (`.cache/models`, fetched by
//! `scripts/fetch_models.py`; each test is skipped, with a note, when its model is absent).
//!
//! - **Exactness on real graphs**: in the canonicalized model, the units the pass is going
//!   to remove are first made dead — their weights zeroed in every producer, bias and consumer
//!   member of their coupling group — so that removing them cannot change any output. The
//!   pass (L1 score, no update) must then pick exactly those (their group norm is 0), and
//!   the pruned model must compute what the zeroed model computes on the fixtures, while
//!   being smaller. This exercises every member kind the real models have: conv
//!   filters/biases/input channels, depthwise group counts, residual adds, squeeze-excite
//!   channel constants, Gemm after Flatten, MLP neurons, attention heads with computed
//!   Reshape targets and the fused Attention op.
//! - **Second order beats magnitude**: on MiniLM, removing 30 % of the MLP neurons with the
//!   OBS score and the one-shot OBS update, or with the sequential refit to the dense
//!   outputs (calibrated on generated token sequences), leaves a smaller output error on the
//!   held-out fixtures than L1 without an update; the OBS update alone helps L1 too.

use pare_analysis::{CouplingGroups, Role, Target};
use pare_interp::Interpreter;
use pare_ir::{Graph, Tensor};
use pare_pass::{Pass, PassContext, Registry, SampleSet};
use pare_prune::{is_heads, Kind, Prune, PruneOptions, Reconstruct, Score};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(name: &str) -> Option<Graph> {
    let p = root().join(".cache/models").join(format!("{name}.onnx"));
    if !p.exists() {
        eprintln!(
            "note: skipping {name}: {} not found (run scripts/fetch_models.py)",
            p.display()
        );
        return None;
    }
    let mut g = pare_onnx::load_model(&p, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .graph;
    let mut reg = Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_fuse::register(&mut reg);
    // The `canonicalize` pipeline of pare-passes (which depends on this crate), twice.
    let steps = "fold-constants,fold-if,fold-shapes,dce,cse,fold-batchnorm,fuse-gemm,\
                 fuse-layernorm,fuse-gelu,fuse-attention,simplify-layout,dce";
    for _ in 0..2 {
        pare_pass::run_pipeline(&reg, steps, &mut g, &mut PassContext::new())
            .expect("canonicalize");
    }
    Some(g)
}

fn fixtures(name: &str, g: &Graph) -> SampleSet {
    SampleSet::load(g, &root().join("tests/models").join(name)).expect("fixtures")
}

/// The float outputs.
fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Vec<f64>> {
    Interpreter::new()
        .run(g, inputs)
        .expect("runs")
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.to_f64_vec().unwrap_or_default())
        .collect()
}

/// Largest |a − b| over all outputs, relative to the largest |a| of that output.
fn max_rel(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "output sizes differ");
            let scale = x.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// Relative L2 error over the float outputs.
fn rel_l2(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            num += (p - q) * (p - q);
            den += p * p;
        }
    }
    (num / den.max(1e-30)).sqrt()
}

fn params(g: &Graph) -> usize {
    g.constants().map(|(_, t)| t.numel()).sum()
}

/// Zeroes the first `⌊ratio·units⌋` units of every prunable group of `kind` in every
/// producer, bias, per-channel and consumer constant; returns how many units were zeroed.
fn kill_units(g: &mut Graph, ratio: f64, kind: Kind) -> usize {
    let cg = CouplingGroups::analyze(g).expect("coupling");
    let mut killed = 0;
    let mut edits: Vec<(pare_ir::ValueId, usize, Vec<usize>)> = Vec::new();
    for gr in cg.prunable() {
        if (kind == Kind::Heads) != is_heads(gr) {
            continue;
        }
        if gr.members.iter().any(|m| {
            matches!(
                m.role,
                Role::NormParam | Role::Reduction | Role::Slice | Role::Split
            )
        }) {
            continue;
        }
        let k = (ratio * gr.units as f64).floor() as usize;
        if k == 0 || gr.units < 2 {
            continue;
        }
        killed += k;
        for m in &gr.members {
            if !matches!(m.role, Role::Producer | Role::Bias | Role::Consumer) {
                continue;
            }
            if let Target::Const(c) = m.target {
                let pos: Vec<usize> = (m.offset..m.offset + k * m.block).collect();
                edits.push((c, m.axis, pos));
            }
        }
    }
    let mut zeroed: std::collections::BTreeMap<pare_ir::ValueId, Vec<f32>> = Default::default();
    for (c, axis, pos) in edits {
        let t = g.constant(c).expect("constant");
        let shape = t.shape().to_vec();
        let v = zeroed
            .entry(c)
            .or_insert_with(|| t.to_vec::<f32>().expect("f32"));
        let d = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        for (i, x) in v.iter_mut().enumerate() {
            if pos.contains(&((i / inner) % d)) {
                *x = 0.0;
            }
        }
    }
    for (c, v) in zeroed {
        let shape = g.constant(c).expect("constant").shape().to_vec();
        let name = g.value(c).name.clone();
        let nv = g.add_const(name, Tensor::from_vec(shape, v));
        g.replace_all_uses(c, nv);
        g.remove_const(c);
    }
    killed
}

fn check_exact(name: &str, kind: Kind, ratio: f64) {
    let Some(mut g) = load(name) else { return };
    let killed = kill_units(&mut g, ratio, kind);
    assert!(killed > 0, "{name}: no unit to kill");
    let set = fixtures(name, &g);
    let mut p = g.clone();
    let report = Prune::new(
        kind,
        PruneOptions {
            ratio,
            score: Score::L1,
            reconstruct: Reconstruct::Off,
            ..Default::default()
        },
    )
    .run(&mut p, &mut PassContext::new().with_samples(set.clone()))
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let removed = report.stats.get("units-removed").copied().unwrap_or(0) as usize;
    assert_eq!(
        removed, killed,
        "{name}: removed {removed} units, killed {killed}"
    );
    let (before, after) = (params(&g), params(&p));
    assert!(after < before, "{name}: {before} → {after} parameters");
    for s in &set.samples {
        let d = max_rel(&run(&g, &s.inputs), &run(&p, &s.inputs));
        assert!(
            d < 1e-4,
            "{name} ({}): pruned differs by {d}",
            s.origin.display()
        );
    }
    println!(
        "{name} {:?}: removed {removed} dead units, params {before} → {after}, exact",
        kind
    );
}

#[test]
fn removing_dead_channels_is_exact_on_the_cnns() {
    for name in ["ocr-cls", "ocr-det", "orientation", "ocr-rec"] {
        check_exact(name, Kind::Channels, 0.25);
    }
}

#[test]
fn removing_dead_heads_and_neurons_is_exact_on_minilm() {
    check_exact("minilm", Kind::Heads, 0.25);
    check_exact("minilm", Kind::Channels, 0.3);
}

/// `n` samples of `[2, 16]` token ids (`[CLS]`, random word ids, `[SEP]`) and their mask.
fn token_samples(g: &Graph, n: usize) -> SampleSet {
    pare_pass::samples::token_samples(g, n, 2, 16, 0x2545_f491_4f6c_dd1d)
}

#[test]
fn second_order_pruning_beats_magnitude_on_minilm() {
    let Some(g) = load("minilm") else { return };
    let held_out = fixtures("minilm", &g);
    let reference: Vec<Vec<Vec<f64>>> = held_out
        .samples
        .iter()
        .map(|s| run(&g, &s.inputs))
        .collect();
    let err = |score: Score, reconstruct: Reconstruct| {
        let mut p = g.clone();
        let mut cx = PassContext::new().with_samples(token_samples(&g, 4));
        Prune::new(
            Kind::Channels,
            PruneOptions {
                ratio: 0.3,
                score,
                reconstruct,
                ..Default::default()
            },
        )
        .run(&mut p, &mut cx)
        .expect("prunes");
        held_out
            .samples
            .iter()
            .zip(&reference)
            .map(|(s, r)| rel_l2(r, &run(&p, &s.inputs)))
            .fold(0.0, f64::max)
    };
    let l1 = err(Score::L1, Reconstruct::Off);
    let l1_update = err(Score::L1, Reconstruct::Obs);
    let obs = err(Score::Hessian, Reconstruct::Obs);
    let refit = err(Score::Hessian, Reconstruct::Refit);
    println!(
        "minilm 30% MLP neurons, held-out rel. L2: l1 {l1:.4}, l1+obs {l1_update:.4}, \
         hessian+obs {obs:.4}, hessian+refit {refit:.4}"
    );
    assert!(l1_update < l1, "the update must help: {l1_update} vs {l1}");
    assert!(refit < 0.8 * l1, "refit {refit} vs L1 {l1}");
    assert!(obs < 0.8 * l1, "OBS {obs} vs L1 {l1}");
}

/// `search=evo` on MiniLM's MLP neurons: the searched allocation removes at least the FLOPs
/// of the uniform one (equal per neuron here, so at least as many neurons), differs from it,
/// and is no worse on the held-out fixtures.
#[test]
fn allocation_search_keeps_the_budget_and_beats_uniform_on_minilm() {
    let Some(g) = load("minilm") else { return };
    let held_out = fixtures("minilm", &g);
    let reference: Vec<Vec<Vec<f64>>> = held_out
        .samples
        .iter()
        .map(|s| run(&g, &s.inputs))
        .collect();
    let prune = |search: pare_prune::Search| {
        let mut p = g.clone();
        let mut cx = PassContext::new().with_samples(token_samples(&g, 8));
        let report = Prune::new(
            Kind::Channels,
            PruneOptions {
                ratio: 0.5,
                score: Score::Hessian,
                reconstruct: Reconstruct::Obs,
                search,
                generations: 8,
                offspring: 4,
                search_samples: 8,
                ..Default::default()
            },
        )
        .run(&mut p, &mut cx)
        .expect("prunes");
        let removed = report.stats.get("units-removed").copied().unwrap_or(0);
        let err = held_out
            .samples
            .iter()
            .zip(&reference)
            .map(|(s, r)| rel_l2(r, &run(&p, &s.inputs)))
            .fold(0.0, f64::max);
        let widths: Vec<usize> = p
            .constants()
            .filter(|(_, t)| t.shape().len() == 2 && t.shape()[0] != 384 && t.shape()[1] == 384)
            .map(|(_, t)| t.shape()[0])
            .collect();
        (removed, err, widths)
    };
    let (u_removed, u_err, u_widths) = prune(pare_prune::Search::None);
    let (s_removed, s_err, s_widths) = prune(pare_prune::Search::Evo);
    println!(
        "minilm 50% MLP neurons: uniform {u_removed} removed, widths {u_widths:?}, held-out \
         error {u_err:.4}; search {s_removed} removed, widths {s_widths:?}, error {s_err:.4}"
    );
    assert!(s_removed >= u_removed, "budget: {s_removed} < {u_removed}");
    assert_ne!(s_widths, u_widths, "the search changed nothing");
    assert!(s_err <= u_err * 1.02, "search {s_err} vs uniform {u_err}");
}

/// `prune-unstructured` on MiniLM at 50 % and 2:4, calibrated on generated token sequences:
/// the end-to-end output error on the held-out fixtures (relative L2 against the dense
/// model) of Wanda and SparseGPT is below magnitude pruning's, and every pruned layer has
/// the asked-for sparsity.
#[test]
fn unstructured_wanda_and_sparsegpt_beat_magnitude_on_minilm() {
    use pare_prune::{Method, PruneUnstructured, UnstructuredOptions};
    let Some(g) = load("minilm") else { return };
    let held_out = fixtures("minilm", &g);
    let reference: Vec<Vec<Vec<f64>>> = held_out
        .samples
        .iter()
        .map(|s| run(&g, &s.inputs))
        .collect();
    let calib = token_samples(&g, 16);
    let err = |method: Method, pattern: &str| {
        let mut p = g.clone();
        let mut cx = PassContext::new();
        if method != Method::Magnitude {
            cx = cx.with_samples(calib.clone());
        }
        let report = PruneUnstructured::new(UnstructuredOptions {
            sparsity: 0.5,
            method,
            pattern: pattern.into(),
            ..Default::default()
        })
        .expect("options")
        .run(&mut p, &mut cx)
        .expect("prunes");
        let zeroed = report.stats.get("weights-zeroed").copied().unwrap_or(0);
        let total = report.stats.get("weights-total").copied().unwrap_or(0);
        let layers = report.stats.get("layers-pruned").copied().unwrap_or(0);
        // The per-layer lines of SparseGPT, the totals of the others.
        let shown = if method == Method::Sparsegpt {
            &report.notes[..]
        } else {
            &report.notes[report.notes.len().saturating_sub(1)..]
        };
        for n in shown {
            println!("  {method:?} pattern={pattern}: {n}");
        }
        assert_eq!(layers, 18, "{method:?} {pattern}: layers pruned");
        assert!(
            2 * zeroed >= total && total > 1_000_000,
            "{method:?} {pattern}: {zeroed} of {total} zero"
        );
        let (mut num, mut den) = (0.0, 0.0);
        for (s, r) in held_out.samples.iter().zip(&reference) {
            let out = run(&p, &s.inputs);
            for (x, y) in r.iter().zip(&out) {
                assert_eq!(x.len(), y.len(), "output sizes differ");
                for (a, b) in x.iter().zip(y) {
                    num += (a - b) * (a - b);
                    den += a * a;
                }
            }
        }
        (num / den.max(1e-30)).sqrt()
    };
    for pattern in ["none", "2:4"] {
        let mag = err(Method::Magnitude, pattern);
        let wanda = err(Method::Wanda, pattern);
        let sgpt = err(Method::Sparsegpt, pattern);
        println!(
            "minilm prune-unstructured(sparsity=0.5,pattern={pattern}), held-out rel. L2 vs \
             dense: magnitude {mag:.4}, wanda {wanda:.4}, sparsegpt {sgpt:.4}"
        );
        assert!(wanda < mag, "{pattern}: wanda {wanda} vs magnitude {mag}");
        assert!(sgpt < mag, "{pattern}: sparsegpt {sgpt} vs magnitude {mag}");
    }
}

/// Latency stand-in for the tests: the weight elements of a graph's matrix kernels (what the
/// kernels' time grows with), recorded per call.
struct KernelParams(std::sync::Mutex<Vec<Vec<f64>>>);

impl pare_pass::LatencyProbe for KernelParams {
    fn latencies(&self, graphs: &[&Graph]) -> Result<Vec<f64>, String> {
        let t: Vec<f64> = graphs
            .iter()
            .map(|g| {
                g.node_ids()
                    .filter(|&n| {
                        matches!(
                            g.node(n).op,
                            pare_ir::Op::Conv(_) | pare_ir::Op::MatMul | pare_ir::Op::Gemm(_)
                        )
                    })
                    .flat_map(|n| g.node(n).inputs().to_vec())
                    .flatten()
                    .filter_map(|v| g.constant(v))
                    .filter(|t| t.shape().len() >= 2)
                    .map(|t| t.numel() as f64)
                    .sum()
            })
            .collect();
        self.0.lock().map_err(|e| e.to_string())?.push(t.clone());
        Ok(t)
    }
}

/// `search=evo,budget=latency` on ocr-cls: without a compiler in the context the pass says
/// what it needs; with a probe it prices each group by what its kernels save, and the searched
/// allocation saves about as much as the uniform one (the kernel cost is bilinear in the
/// channel counts, so not exactly).
#[test]
fn latency_budget_prices_groups_by_their_kernels() {
    let Some(g) = load("ocr-cls") else { return };
    let samples = fixtures("ocr-cls", &g);
    let opts = PruneOptions {
        ratio: 0.3,
        score: Score::Hessian,
        reconstruct: Reconstruct::Obs,
        search: pare_prune::Search::Evo,
        budget: pare_prune::Budget::Latency,
        generations: 6,
        offspring: 4,
        ..Default::default()
    };
    let mut p = g.clone();
    let e = Prune::new(Kind::Channels, opts.clone())
        .run(
            &mut p,
            &mut PassContext::new().with_samples(samples.clone()),
        )
        .expect_err("no probe");
    assert!(e.to_string().contains("pare opt"), "{e}");
    let probe = std::sync::Arc::new(KernelParams(Default::default()));
    let mut cx = PassContext::new()
        .with_samples(samples)
        .with_latency_probe(probe.clone());
    let mut p = g.clone();
    let report = Prune::new(Kind::Channels, opts)
        .run(&mut p, &mut cx)
        .expect("prunes");
    let calls = probe.0.lock().expect("lock").clone();
    assert_eq!(
        calls.len(),
        2,
        "one call pricing the groups, one timing the result"
    );
    // Pricing: kernel graphs in pairs, each pruned one cheaper than its dense one.
    assert!(calls[0].len() >= 2 && calls[0].len().is_multiple_of(2));
    assert!(
        calls[0].chunks_exact(2).all(|t| t[1] < t[0]),
        "{:?}",
        calls[0]
    );
    let [dense, uniform, searched] = calls[1][..] else {
        panic!("{:?}", calls[1])
    };
    println!("kernel params: dense {dense}, uniform {uniform}, searched {searched}");
    assert!(uniform < dense && searched < dense);
    assert!(
        dense - searched >= 0.85 * (dense - uniform),
        "searched saves {} vs uniform {}",
        dense - searched,
        dense - uniform
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("measured compiled latency")),
        "{:?}",
        report.notes
    );
}
