//! Allocation search: how many units each group loses, under a global budget, chosen by an
//! evolutionary search scored end to end (EvoPress, Sieberling et al. 2024). Used by
//! `prune-channels` / `prune-heads` (units: channels, neurons, heads) and `lowrank` (units:
//! rank taken from a layer).
//!
//! A candidate is a vector `k` of removed-unit counts, one per group, with
//! `Σ kᵢ·pᵢ ≥ budget` (`pᵢ`: the budget cost — parameters, FLOPs, time — of one unit of
//! group `i`). The search starts from the
//! uniform allocation (the same fraction of every group), and each generation makes
//! `offspring` mutants of the best candidate so far: a mutation moves about a tenth of a
//! group's units from one group to another (taking units from group `j` only as far as the
//! budget allows), one to three times. Every mutant is scored by the fitness function —
//! the relative output error of the pruned model against the dense one on calibration
//! samples, not a sum of per-layer errors — and the best of parent and offspring survives.

use crate::LatencyProbe;
use pare_ir::{DType, Graph, NodeId, Op, ValueId};
use std::collections::HashMap;

/// Search settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Generations.
    pub generations: usize,
    /// Mutants per generation.
    pub offspring: usize,
    /// Random seed.
    pub seed: u64,
}

/// A small deterministic generator (xorshift64*), shared by the searches and the generated
/// calibration inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `(0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// The result of a search.
#[derive(Clone, Debug)]
pub struct Found {
    /// Removed units per group.
    pub removed: Vec<usize>,
    /// Its fitness.
    pub fitness: f64,
    /// The uniform allocation's fitness.
    pub uniform_fitness: f64,
    /// Candidates scored.
    pub evaluations: usize,
}

impl Found {
    /// A report line: `"{what}: N candidates over G generations; output error on S
    /// calibration sample(s) {uniform error} ({uniform}) → {found error}"`, and the
    /// `search-evaluations` stat.
    pub fn report(
        &self,
        report: &mut crate::PassReport,
        what: &str,
        generations: usize,
        samples: usize,
        uniform: &str,
    ) {
        report.note(format!(
            "{what}: {} candidates over {generations} generations; output error on {samples} \
             calibration sample(s) {:.4} ({uniform}) → {:.4}",
            self.evaluations, self.uniform_fitness, self.fitness
        ));
        report.add_stat("search-evaluations", self.evaluations as u64);
    }
}

fn removed_params(k: &[usize], per_unit: &[f64]) -> f64 {
    k.iter().zip(per_unit).map(|(&k, &p)| k as f64 * p).sum()
}

/// One mutation of `k` in place: move units from one group to another.
fn mutate(
    k: &mut [usize],
    caps: &[usize],
    units: &[usize],
    per_unit: &[f64],
    budget: f64,
    rng: &mut Rng,
) {
    let n = k.len();
    if n < 2 {
        return;
    }
    let i = rng.below(n);
    let mut j = rng.below(n - 1);
    if j >= i {
        j += 1;
    }
    let step = (units[i] / 10).max(1);
    let up = step.min(caps[i] - k[i].min(caps[i]));
    if up == 0 {
        return;
    }
    k[i] += up;
    // Give back as much as the budget allows from group j.
    let slack = removed_params(k, per_unit) - budget;
    if per_unit[j] > 0.0 && slack > 0.0 {
        let down = ((slack / per_unit[j]).floor() as usize).min(k[j]);
        k[j] -= down;
    }
}

/// What may be removed: per group its units, the most that may go, and the budget cost of
/// one unit; the total cost removed must stay at least `budget`.
#[derive(Clone, Debug)]
pub struct Space {
    /// Units per group.
    pub units: Vec<usize>,
    /// Most units removable per group.
    pub caps: Vec<usize>,
    /// Budget cost (parameters or FLOPs) of one unit per group.
    pub per_unit: Vec<f64>,
    /// Least total cost to remove.
    pub budget: f64,
}

/// Searches removed-unit counts in `space`, starting from `start`, minimizing `fitness`.
pub fn evolve<E>(
    start: Vec<usize>,
    space: &Space,
    settings: Settings,
    fitness: &mut dyn FnMut(&[usize]) -> Result<f64, E>,
    progress: &mut dyn FnMut(),
) -> Result<Found, E> {
    let (caps, units, per_unit, budget) =
        (&space.caps, &space.units, &space.per_unit, space.budget);
    let mut rng = Rng::new(settings.seed);
    let mut best = start;
    let mut best_fit = fitness(&best)?;
    let uniform_fitness = best_fit;
    let mut evaluations = 1;
    for _ in 0..settings.generations {
        progress();
        let mut gen_best: Option<(Vec<usize>, f64)> = None;
        for _ in 0..settings.offspring {
            let mut k = best.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut k, caps, units, per_unit, budget, &mut rng);
            }
            if k == best || removed_params(&k, per_unit) < budget {
                continue;
            }
            let f = fitness(&k)?;
            evaluations += 1;
            if gen_best.as_ref().is_none_or(|(_, b)| f < *b) {
                gen_best = Some((k, f));
            }
        }
        if let Some((k, f)) = gen_best {
            if f < best_fit {
                best = k;
                best_fit = f;
            }
        }
    }
    Ok(Found {
        removed: best,
        fitness: best_fit,
        uniform_fitness,
        evaluations,
    })
}

/// [`evolve`] with the context's seed and a progress bar labelled `label` (one step per
/// generation).
pub fn evolve_in<E>(
    cx: &crate::PassContext,
    label: &str,
    start: Vec<usize>,
    space: &Space,
    generations: usize,
    offspring: usize,
    fitness: &mut dyn FnMut(&[usize]) -> Result<f64, E>,
) -> Result<Found, E> {
    let pb = cx.progress_bar(generations as u64, label);
    let found = evolve(
        start,
        space,
        Settings {
            generations,
            offspring,
            seed: cx.seed(),
        },
        fitness,
        &mut || pb.inc(1),
    );
    pb.finish_and_clear();
    found
}

/// Times `input`, the `uniform` result and the `searched` one with `probe` (in one call, so
/// the numbers compare) and describes them for a report; `uniform_label` names the uniform
/// result ("uniform allocation", "the rule's ranks").
pub fn latency_note(
    probe: &dyn LatencyProbe,
    input: &Graph,
    uniform: &Graph,
    searched: &Graph,
    uniform_label: &str,
) -> Result<String, String> {
    let ms = probe.latencies(&[input, uniform, searched])?;
    let [a, b, c] = ms[..] else {
        return Err(format!(
            "the latency probe returned {} times for 3 graphs",
            ms.len()
        ));
    };
    Ok(format!(
        "measured compiled latency: input {a:.3} ms, {uniform_label} {b:.3} ms ({:.2}×), \
         searched {c:.3} ms ({:.2}×)",
        b / a,
        c / a
    ))
}

/// The fitness both searches use: the relative L2 error of a candidate's float outputs
/// against the input model's, on the first calibration samples.
pub struct Scorer {
    interp: pare_interp::Interpreter,
    inputs: Vec<Vec<pare_ir::Tensor>>,
    reference: Vec<Vec<Vec<f64>>>,
}

impl Scorer {
    /// Runs `g` on the first `n` samples (all with `n = 0`) for the reference outputs.
    pub fn new(g: &pare_ir::Graph, samples: &crate::SampleSet, n: usize) -> Result<Scorer, String> {
        let n = if n == 0 {
            samples.len()
        } else {
            n.min(samples.len())
        };
        let interp = pare_interp::Interpreter::new();
        let inputs: Vec<Vec<pare_ir::Tensor>> = samples.samples[..n]
            .iter()
            .map(|s| s.inputs.clone())
            .collect();
        let mut reference = Vec::new();
        for x in &inputs {
            reference.push(float_outputs(&interp, g, x)?);
        }
        Ok(Scorer {
            interp,
            inputs,
            reference,
        })
    }

    /// Samples scored on.
    pub fn samples(&self) -> usize {
        self.inputs.len()
    }

    /// `‖y − y_ref‖ / ‖y_ref‖` over all float outputs and samples.
    pub fn error(&self, g: &pare_ir::Graph) -> Result<f64, String> {
        let (mut num, mut den) = (0.0, 0.0);
        for (x, r) in self.inputs.iter().zip(&self.reference) {
            let out = float_outputs(&self.interp, g, x)?;
            for (a, b) in r.iter().zip(&out) {
                if a.len() != b.len() {
                    return Err("an output changed size".into());
                }
                for (p, q) in a.iter().zip(b) {
                    num += (p - q) * (p - q);
                    den += p * p;
                }
            }
        }
        Ok(if den > 0.0 { (num / den).sqrt() } else { 0.0 })
    }
}

fn float_outputs(
    interp: &pare_interp::Interpreter,
    g: &pare_ir::Graph,
    x: &[pare_ir::Tensor],
) -> Result<Vec<Vec<f64>>, String> {
    let out = interp.run(g, x).map_err(|e| e.to_string())?;
    Ok(out
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.to_f64_vec().unwrap_or_default())
        .collect())
}

/// `budget=latency`: each group's measured saving per removed unit. For every group, the model
/// with only that group's uniform removal (`start`; one unit where that is none) is built,
/// and the matrix kernels whose operand shapes it changed (Conv, ConvTranspose, MatMul, Gemm,
/// matched by node name) are cut out twice — as they are in `g` (the model with nothing
/// removed: the input model for pruning, every layer at its largest rank for low-rank
/// factorization) and as in the candidate — into small graphs of their own
/// ([`kernel_graph`]). The probe compiles and times all of
/// them in one call; a group's cost per unit is the time its kernels save divided by the
/// units removed (0 where the difference is negative: within timing noise). Timing only the
/// changed kernels keeps the difference well above the noise of timing the whole model,
/// where one group's share is often about 1 %; elementwise work is not counted.
pub fn latency_per_unit(
    g: &Graph,
    samples: &crate::SampleSet,
    start: &[usize],
    caps: &[usize],
    probe: &dyn LatencyProbe,
    build: &mut dyn FnMut(&[usize]) -> Result<Graph, crate::PassError>,
) -> Result<(Vec<f64>, String), String> {
    let first = samples
        .samples
        .first()
        .ok_or_else(|| "no calibration sample".to_string())?;
    let interp = pare_interp::Interpreter::new();
    let shapes_of = |g: &Graph| -> Result<HashMap<ValueId, Vec<usize>>, String> {
        let mut shapes = HashMap::new();
        let vals = first.values().map_err(|e| e.to_string())?;
        interp
            .run_observed(g, vals, &mut |v, val| {
                shapes.insert(v, val.shape().to_vec());
            })
            .map_err(|e| e.to_string())?;
        Ok(shapes)
    };
    let dense_shapes = shapes_of(g)?;
    let by_name: HashMap<&str, NodeId> = g
        .node_ids()
        .filter(|&n| is_matrix_kernel(&g.node(n).op))
        .map(|n| (g.node(n).name.as_str(), n))
        .collect();
    let mut graphs = Vec::new();
    let mut removed = Vec::new();
    for (i, (&s, &cap)) in start.iter().zip(caps).enumerate() {
        let k = if s > 0 { s } else { cap.min(1) };
        if k == 0 {
            continue;
        }
        let mut v = vec![0; start.len()];
        v[i] = k;
        let cand = build(&v).map_err(|e| e.to_string())?;
        let cand_shapes = shapes_of(&cand)?;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for n in cand.node_ids() {
            let node = cand.node(n);
            let Some(&d) = by_name.get(node.name.as_str()) else {
                continue;
            };
            if node.name.is_empty() || !is_matrix_kernel(&node.op) {
                continue;
            }
            let shape = |g: &Graph, sh: &HashMap<ValueId, Vec<usize>>, v: ValueId| {
                g.constant(v)
                    .map(|t| t.shape().to_vec())
                    .or_else(|| sh.get(&v).cloned())
            };
            let dn = g.node(d);
            let changed = node.inputs().len() != dn.inputs().len()
                || node.inputs().iter().zip(dn.inputs()).any(|(a, b)| {
                    a.map(|a| shape(&cand, &cand_shapes, a))
                        != b.map(|b| shape(g, &dense_shapes, b))
                });
            if changed {
                before.push(d);
                after.push(n);
            }
        }
        if before.is_empty() {
            continue;
        }
        graphs.push(kernel_graph(g, &before, &dense_shapes)?);
        graphs.push(kernel_graph(&cand, &after, &cand_shapes)?);
        removed.push((i, k));
    }
    if graphs.is_empty() {
        return Err("no group's removal changes a Conv, MatMul or Gemm".into());
    }
    let refs: Vec<&Graph> = graphs.iter().collect();
    let ms = probe.latencies(&refs)?;
    if ms.len() != refs.len() {
        return Err(format!(
            "the latency probe returned {} times for {} graphs",
            ms.len(),
            refs.len()
        ));
    }
    let mut per_unit = vec![0.0; start.len()];
    let mut saved: Vec<f64> = Vec::new();
    for (&(i, k), t) in removed.iter().zip(ms.chunks_exact(2)) {
        per_unit[i] = ((t[0] - t[1]) / k as f64).max(0.0);
        saved.push(1.0 - t[1] / t[0]);
    }
    if per_unit.iter().all(|&p| p == 0.0) {
        return Err(
            "no group's removal made its kernels measurably faster; use budget=flops".into(),
        );
    }
    saved.sort_by(f64::total_cmp);
    let note = format!(
        "latency prices: {} group(s) timed on their changed kernels; the uniform removal saves \
         {:.0} % to {:.0} % (median {:.0} %) of those kernels' time; {} group(s) priced 0 (no \
         measurable saving)",
        removed.len(),
        100.0 * saved[0],
        100.0 * saved[saved.len() - 1],
        100.0 * saved[saved.len() / 2],
        per_unit.iter().filter(|&&p| p == 0.0).count()
    );
    Ok((per_unit, note))
}

fn is_matrix_kernel(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_) | Op::ConvTranspose(_) | Op::MatMul | Op::Gemm(_)
    )
}

/// A graph of just `nodes` of `g`: their constant operands copied, every other operand a
/// graph input of its observed shape, every result a graph output. Compiled, it times those
/// kernels alone.
fn kernel_graph(
    g: &Graph,
    nodes: &[NodeId],
    shapes: &HashMap<ValueId, Vec<usize>>,
) -> Result<Graph, String> {
    let mut k = Graph::new(format!("{}_kernels", g.name));
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (j, &n) in nodes.iter().enumerate() {
        let node = g.node(n);
        let mut ins = Vec::new();
        for (o, v) in node.inputs().iter().enumerate() {
            let Some(v) = *v else {
                ins.push(None);
                continue;
            };
            let nv = if let Some(&nv) = map.get(&v) {
                nv
            } else {
                let name = format!("k{j}_{o}");
                let nv = if let Some(t) = g.constant(v) {
                    k.add_const(name, t.clone())
                } else {
                    let dims = shapes.get(&v).ok_or_else(|| {
                        format!("no observed shape for an operand of '{}'", node.name)
                    })?;
                    let dt = g.value(v).ty.dtype.unwrap_or(DType::F32);
                    k.add_input(
                        name,
                        pare_ir::TensorType::new(dt, pare_ir::Shape::fixed(dims)),
                    )
                };
                map.insert(v, nv);
                nv
            };
            ins.push(Some(nv));
        }
        let outs = (0..node.outputs().len())
            .map(|o| format!("k{j}_out{o}"))
            .collect();
        let m = k.add_node(node.name.clone(), node.op.clone(), ins, outs);
        for &o in k.node(m).outputs().to_vec().iter() {
            k.add_output(o);
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a separable objective with different sensitivities, the search moves removals to
    /// the insensitive groups and never breaks the budget.
    #[test]
    fn moves_budget_to_insensitive_groups() {
        let units = vec![20, 20, 20, 20];
        let caps = vec![18, 18, 18, 18];
        let per_unit = vec![1.0, 1.0, 2.0, 1.0];
        let sens = [10.0, 1.0, 1.0, 5.0];
        let start = vec![6, 6, 6, 6];
        let budget = removed_params(&start, &per_unit);
        let mut fit = |k: &[usize]| -> Result<f64, ()> {
            assert!(removed_params(k, &per_unit) >= budget);
            Ok(k.iter().zip(&sens).map(|(&k, s)| s * (k * k) as f64).sum())
        };
        let space = Space {
            units,
            caps,
            per_unit: per_unit.clone(),
            budget,
        };
        let found = evolve(
            start,
            &space,
            Settings {
                generations: 200,
                offspring: 4,
                seed: 7,
            },
            &mut fit,
            &mut || {},
        )
        .expect("search");
        assert!(found.fitness < 0.5 * found.uniform_fitness, "{found:?}");
        assert!(found.removed[0] < 6 && found.removed[3] < 6, "{found:?}");
    }
}
