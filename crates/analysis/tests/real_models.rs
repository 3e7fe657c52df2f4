//! Both analyses on the real models (`scripts/fetch_models.py` puts them in
//! `.cache/models`; the tests are skipped, with a message, when a model is missing):
//!
//! - coupling groups: counts per model, structural invariants, and a semantic check:
//!   removing one unit of a prunable group from every member (slicing the constants) must
//!   compute the same outputs as the original model with that unit's consumer weights
//!   zeroed;
//! - calibration statistics over `tests/models/<name>/test_data_set_*`, checked against a
//!   direct computation on one sample (ranges, moments, histogram, per-channel ranges, and
//!   `XᵀX` through an independent im2col).

use pare_analysis::{CalibConfig, CalibStats, CouplingGroups, Group, Role, Target};
use pare_interp::{Interpreter, Value};
use pare_ir::{Graph, NodeId, Op, Tensor, ValueId};
use pare_pass::{PassContext, Registry, SampleSet};
use std::collections::HashMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(name: &str) -> Option<Graph> {
    let p = root().join(".cache/models").join(format!("{name}.onnx"));
    if !p.exists() {
        eprintln!(
            "skipping {name}: {} not found (run scripts/fetch_models.py)",
            p.display()
        );
        return None;
    }
    Some(
        pare_onnx::load_model(&p, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .graph,
    )
}

/// The model after constant folding (so that weight-derived constants are constants).
fn folded(g: &Graph) -> Graph {
    let mut reg = Registry::new();
    pare_canonicalize::register(&mut reg);
    let mut g = g.clone();
    pare_pass::run_pipeline(&reg, "fold-constants,dce", &mut g, &mut PassContext::new())
        .expect("fold-constants");
    g
}

fn samples(name: &str, g: &Graph) -> SampleSet {
    SampleSet::load(g, &root().join("tests/models").join(name)).expect("samples")
}

// ---- coupling ------------------------------------------------------------------------

#[test]
fn coupling_on_real_models() {
    // (model, min prunable groups after folding)
    let expect = [
        ("ocr-det", 30),
        ("ocr-rec", 15),
        ("ocr-cls", 8),
        ("orientation", 15),
        ("minilm", 6),
    ];
    for (name, min_prunable) in expect {
        let Some(raw) = load(name) else { continue };
        for (label, g) in [("imported", raw.clone()), ("folded", folded(&raw))] {
            let cg = CouplingGroups::analyze(&g).expect("analysis");
            cg.verify(&g)
                .unwrap_or_else(|e| panic!("{name} ({label}): {e}\n{}", cg.describe(&g)));
            let s = cg.summary();
            println!(
                "{name:>12} ({label:>8}): {:>3} groups, {:>3} prunable, {:>5} prunable units, \
                 {:>5} prunable channels",
                s.groups, s.prunable_groups, s.prunable_units, s.prunable_channels
            );
            // Every Conv weight's output axis lies in groups with it as a producer (tiled
            // exactly once: checked by verify), and every group has members.
            for n in g.node_ids() {
                if let Op::Conv(_) = g.node(n).op {
                    let w = g.node(n).input(1).expect("conv weight");
                    let gs: Vec<&Group> = cg.groups_of_const(w, 0).collect();
                    assert!(!gs.is_empty(), "{name}: conv weight without a group");
                    let units: usize = gs
                        .iter()
                        .flat_map(|gr| {
                            gr.members
                                .iter()
                                .filter(move |m| {
                                    m.target == Target::Const(w)
                                        && m.axis == 0
                                        && m.role == Role::Producer
                                })
                                .map(move |m| gr.units * m.block)
                        })
                        .sum();
                    let m = g.constant(w).map(|t| t.shape()[0]).unwrap_or(0);
                    assert_eq!(units, m, "{name}: producer ranges of a conv weight");
                }
            }
            for gr in &cg.groups {
                assert!(!gr.members.is_empty());
                assert_eq!(gr.prunable, gr.reasons.is_empty());
            }
            if label == "folded" {
                assert!(
                    s.prunable_groups >= min_prunable,
                    "{name}: {} prunable groups\n{}",
                    s.prunable_groups,
                    cg.describe(&g)
                );
            }
            if name == "minilm" {
                // 3 layers: one head group (12 heads of 32) and one MLP group (1536
                // neurons) each; the residual stream reaches the outputs.
                let heads: Vec<&Group> = cg
                    .prunable()
                    .filter(|gr| gr.units == 12 && gr.granularity == 32)
                    .collect();
                let mlp: Vec<&Group> = cg.prunable().filter(|gr| gr.units == 1536).collect();
                assert_eq!((heads.len(), mlp.len()), (3, 3), "{}", cg.describe(&g));
                for h in heads {
                    assert_eq!(h.members_with(Role::Producer).count(), 3);
                    assert_eq!(h.members_with(Role::Consumer).count(), 1);
                }
            }
        }
    }
}

/// Removes `[lo, hi)` along `axis` of an f32 tensor, or zeroes it.
fn edit(t: &Tensor, axis: usize, lo: usize, hi: usize, remove: bool) -> Option<Tensor> {
    let v = t.to_vec::<f32>().ok()?;
    let shape = t.shape().to_vec();
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let d = shape[axis];
    let mut out = Vec::with_capacity(v.len());
    for o in 0..outer {
        for i in 0..d {
            let row = &v[(o * d + i) * inner..(o * d + i + 1) * inner];
            if (lo..hi).contains(&i) {
                if !remove {
                    out.extend(std::iter::repeat_n(0.0f32, inner));
                }
            } else {
                out.extend_from_slice(row);
            }
        }
    }
    let mut ns = shape;
    if remove {
        ns[axis] -= hi - lo;
    }
    Some(Tensor::from_vec(ns, out))
}

/// Applies `f` to the constant `c` of `g` (replacing every use).
fn replace_const(g: &mut Graph, cur: &mut HashMap<ValueId, ValueId>, c: ValueId, t: Tensor) {
    let now = *cur.get(&c).unwrap_or(&c);
    let name = g.value(now).name.clone();
    let nv = g.add_const(name, t);
    g.replace_all_uses(now, nv);
    cur.insert(c, nv);
}

/// The pruned model (unit `u` of `gr` removed) and the reference (its consumer weights
/// zeroed); `None` when the group has members this check does not edit.
fn prune_pair(g: &Graph, gr: &Group, u: usize) -> Option<(Graph, Graph)> {
    let mut pruned = g.clone();
    let mut reference = g.clone();
    let (mut cp, mut cr) = (HashMap::new(), HashMap::new());
    // Highest offsets first, so that earlier removals do not shift later ones.
    let mut ms = gr.members.clone();
    ms.sort_by_key(|m| std::cmp::Reverse(m.offset));
    for m in &ms {
        match (m.target, m.role) {
            (Target::Const(c), _) => {
                let lo = m.offset + u * m.block;
                let hi = lo + m.block;
                let now = *cp.get(&c).unwrap_or(&c);
                let t = edit(pruned.constant(now)?, m.axis, lo, hi, true)?;
                replace_const(&mut pruned, &mut cp, c, t);
                if m.role == Role::Consumer {
                    let now = *cr.get(&c).unwrap_or(&c);
                    let t = edit(reference.constant(now)?, m.axis, lo, hi, false)?;
                    replace_const(&mut reference, &mut cr, c, t);
                }
            }
            (Target::Node(n), Role::ConvGroups) => {
                if let Op::Conv(a) = pruned.op_mut(n) {
                    a.group -= 1;
                }
            }
            _ => return None,
        }
    }
    pruned.remove_dead_nodes();
    pare_ir::infer::reinfer_types(&mut pruned).ok()?;
    Some((pruned, reference))
}

fn max_rel_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let (x, y) = (
                x.to_f64_vec().unwrap_or_default(),
                y.to_f64_vec().unwrap_or_default(),
            );
            assert_eq!(x.len(), y.len());
            let scale = y.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            x.iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

#[test]
fn pruning_a_unit_matches_zeroing_its_consumers() {
    let it = Interpreter::new();
    for name in ["ocr-det", "ocr-cls", "orientation", "ocr-rec", "minilm"] {
        let Some(raw) = load(name) else { continue };
        let g = folded(&raw);
        let inputs = samples(name, &g).samples[0].inputs.clone();
        let cg = CouplingGroups::analyze(&g).expect("analysis");
        let (mut checked, mut skipped) = (0, 0);
        for gr in cg.prunable() {
            // Remove a unit in the middle of the group.
            let u = gr.units / 2;
            let Some((p, r)) = prune_pair(&g, gr, u) else {
                skipped += 1;
                continue;
            };
            let a = it
                .run(&p, &inputs)
                .unwrap_or_else(|e| panic!("{name} group {}: pruned model fails: {e}", gr.id));
            let b = it.run(&r, &inputs).expect("reference");
            let d = max_rel_diff(&a, &b);
            assert!(
                d < 1e-4,
                "{name} group {}: pruned differs by {d}\n{}",
                gr.id,
                cg.describe(&g)
            );
            checked += 1;
        }
        println!(
            "{name}: pruned one unit of {checked} groups exactly ({skipped} skipped: node members)"
        );
        assert!(checked > 0, "{name}: nothing checked");
    }
}

// ---- calibration ---------------------------------------------------------------------

/// Every float value of one run, by id.
fn observe_all(g: &Graph, inputs: &[Tensor]) -> HashMap<ValueId, (Vec<usize>, Vec<f32>)> {
    let vals: Vec<Value> = inputs
        .iter()
        .map(|t| Value::from_tensor(t).expect("input"))
        .collect();
    let mut seen = HashMap::new();
    Interpreter::new()
        .run_observed(g, vals, &mut |v, val| {
            if let Value::F32(a) = val {
                seen.insert(v, (a.shape().to_vec(), a.iter().copied().collect()));
            }
        })
        .expect("run");
    seen
}

/// `XᵀX` of a (non-grouped or grouped) 2-D conv by explicit im2col, f64.
fn naive_conv_xtx(g: &Graph, n: NodeId, shape: &[usize], x: &[f32]) -> (Vec<f64>, u64) {
    let Op::Conv(a) = &g.node(n).op else {
        panic!("not a conv")
    };
    assert_eq!(a.auto_pad, "NOTSET");
    let w = g.constant(g.node(n).input(1).expect("w")).expect("const w");
    let (kh, kw) = (w.shape()[2], w.shape()[3]);
    let (nb, c, h, wd) = (shape[0], shape[1], shape[2], shape[3]);
    let grp = a.group as usize;
    let cg = c / grp;
    let s = a.strides.clone().unwrap_or(vec![1, 1]);
    let d = a.dilations.clone().unwrap_or(vec![1, 1]);
    let p = a.pads.clone().unwrap_or(vec![0, 0, 0, 0]);
    let (sy, sx, dy, dx) = (s[0] as i64, s[1] as i64, d[0] as i64, d[1] as i64);
    let (pt, pl, pb, pr) = (p[0], p[1], p[2], p[3]);
    let oh = (h as i64 + pt + pb - dy * (kh as i64 - 1) - 1) / sy + 1;
    let ow = (wd as i64 + pl + pr - dx * (kw as i64 - 1) - 1) / sx + 1;
    let k = cg * kh * kw;
    let mut hm = vec![0f64; grp * k * k];
    let mut rows = 0u64;
    let mut patch = vec![0f64; k];
    for gi in 0..grp {
        for b in 0..nb {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut idx = 0;
                    for cl in 0..cg {
                        for ky in 0..kh as i64 {
                            for kx in 0..kw as i64 {
                                let iy = oy * sy - pt + ky * dy;
                                let ix = ox * sx - pl + kx * dx;
                                patch[idx] =
                                    if iy >= 0 && iy < h as i64 && ix >= 0 && ix < wd as i64 {
                                        x[((b * c + gi * cg + cl) * h + iy as usize) * wd
                                            + ix as usize]
                                            as f64
                                    } else {
                                        0.0
                                    };
                                idx += 1;
                            }
                        }
                    }
                    for i in 0..k {
                        for j in 0..k {
                            hm[gi * k * k + i * k + j] += patch[i] * patch[j];
                        }
                    }
                    if gi == 0 {
                        rows += 1;
                    }
                }
            }
        }
    }
    (hm, rows)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-9)
}

#[test]
fn calibration_matches_direct_computation() {
    for name in ["ocr-cls", "minilm"] {
        let Some(g) = load(name) else { continue };
        let set = samples(name, &g);
        assert_eq!(set.len(), 3);
        let one = CalibStats::collect(
            &g,
            &set,
            &Interpreter::new(),
            &CalibConfig {
                max_samples: Some(1),
                ..Default::default()
            },
        )
        .expect("calibration");
        assert_eq!(one.num_samples, 1);
        let seen = observe_all(&g, &set.samples[0].inputs);
        let mut checked = 0;
        for (&v, (_, data)) in &seen {
            let st = one.stats(v).expect("stats of every observed f32 value");
            let finite: Vec<f32> = data.iter().copied().filter(|x| x.is_finite()).collect();
            assert_eq!(st.count as usize, finite.len());
            if finite.is_empty() {
                continue;
            }
            let mn = finite.iter().copied().fold(f32::INFINITY, f32::min);
            let mx = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(one.range(v), Some((mn, mx)));
            let mean = finite.iter().map(|&x| x as f64).sum::<f64>() / finite.len() as f64;
            assert!(close(st.mean(), mean, 1e-9) || (st.mean() - mean).abs() < 1e-12);
            let h = one.histogram(v).expect("histogram");
            assert_eq!(h.total(), finite.len() as u64);
            assert!(h.threshold() >= mx.abs().max(mn.abs()) as f64);
            assert!(h.threshold() < 2.0 * (mx.abs().max(mn.abs()) as f64) + 1e-30);
            checked += 1;
        }
        assert!(checked > 10);
        // Per-channel ranges and XᵀX of every linear layer.
        let mut convs = 0;
        let mut dense = 0;
        for n in g.node_ids() {
            let node = g.node(n);
            let Some(x) = node.input(0) else { continue };
            let Some((shape, data)) = seen.get(&x) else {
                continue;
            };
            match &node.op {
                Op::Conv(_) => {
                    let cr = one.input_channel_range(&g, n).expect("channel range");
                    assert_eq!(cr.axis, 1);
                    let (c, inner) = (shape[1], shape[2] * shape[3]);
                    for ch in 0..c {
                        let vals = (0..shape[0]).flat_map(|b| {
                            data[(b * c + ch) * inner..(b * c + ch + 1) * inner].iter()
                        });
                        let mn = vals.clone().copied().fold(f32::INFINITY, f32::min);
                        let mx = vals.copied().fold(f32::NEG_INFINITY, f32::max);
                        assert_eq!((cr.min[ch], cr.max[ch]), (mn, mx));
                    }
                    let h = one.hessian(n).expect("conv hessian");
                    let (want, rows) = naive_conv_xtx(&g, n, shape, data);
                    assert_eq!(h.rows, rows);
                    assert_eq!(h.data.len(), want.len());
                    for (a, b) in h.data.iter().zip(&want) {
                        assert!(close(*a, *b, 1e-9) || (a - b).abs() < 1e-9, "{a} vs {b}");
                    }
                    convs += 1;
                }
                Op::MatMul if node.input(1).and_then(|w| g.constant(w)).is_some() => {
                    let h = one.hessian(n).expect("matmul hessian");
                    let k = *shape.last().expect("rank");
                    assert_eq!(h.k, k);
                    let rows = data.len() / k;
                    assert_eq!(h.rows, rows as u64);
                    for i in (0..k).step_by(7) {
                        for j in (0..k).step_by(5) {
                            let want: f64 = (0..rows)
                                .map(|r| data[r * k + i] as f64 * data[r * k + j] as f64)
                                .sum();
                            let got = h.get(0, i, j).expect("element");
                            assert!(close(got, want, 1e-9) || (got - want).abs() < 1e-9);
                        }
                    }
                    let cr = one.input_channel_range(&g, n).expect("channel range");
                    assert_eq!(cr.channels(), k);
                    dense += 1;
                }
                _ => {}
            }
        }
        println!("{name}: {checked} values, {convs} conv and {dense} dense XᵀX checked");
        assert!(convs + dense > 0);
        // All three samples through the pass context: counts add up, ranges widen.
        let mut cx = PassContext::new().with_samples(set.clone());
        let all = cx.analysis::<CalibStats>(&g).expect("calibration");
        assert_eq!(all.num_samples, 3);
        for (v, st) in one.values() {
            let s3 = all.stats(v).expect("stats");
            if g.value(v)
                .ty
                .shape
                .as_ref()
                .and_then(|s| s.as_fixed())
                .is_some()
            {
                assert_eq!(s3.count, 3 * st.count);
            }
            assert!(s3.min <= st.min && s3.max >= st.max);
        }
        if name == "minilm" {
            // Q, K and V read the same value the same way: one shared matrix.
            let qkv: Vec<NodeId> = g
                .node_ids()
                .filter(|&n| {
                    matches!(g.node(n).op, Op::MatMul)
                        && g.node(n).name.contains("layer.0/attention/self/")
                        && g.node(n).input(1).and_then(|w| g.constant(w)).is_some()
                })
                .collect();
            assert_eq!(qkv.len(), 3);
            let hs: Vec<_> = qkv
                .iter()
                .map(|&n| all.hessian_arc(n).expect("h"))
                .collect();
            assert!(
                std::sync::Arc::ptr_eq(&hs[0], &hs[1]) && std::sync::Arc::ptr_eq(&hs[1], &hs[2])
            );
            assert_eq!(hs[0].k, 384);
        }
    }
}

#[test]
fn calibration_needs_samples() {
    let Some(g) = load("ocr-cls") else { return };
    let err = PassContext::new()
        .analysis::<CalibStats>(&g)
        .expect_err("no samples");
    assert!(err.to_string().contains("--calib"), "{err}");
}
