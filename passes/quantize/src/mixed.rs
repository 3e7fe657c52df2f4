//! `budget-bits`: mixed-precision allocation under a size budget.
//!
//! Every layer the pass would quantize has a ladder of *levels*, cheapest first (int4 in
//! groups, int8 per channel, f32), each with a size (bits, counting codes, scales and zero
//! points as the size report does) and an end-to-end error: the squared relative L2 error of
//! the model's float outputs against the dense model's when only that layer is at that level
//! (HAWQ-style sensitivity, measured rather than estimated from the Hessian). Squared errors
//! of different layers roughly add (independent perturbations), so the allocation is a
//! multiple-choice knapsack:
//!
//! - [`greedy`]: start with every layer at its cheapest level; repeatedly take the upgrade
//!   (one layer to any higher level) with the largest error reduction per extra bit that
//!   still fits the budget, until none fits or helps.
//! - [`evolve`]: a short EvoPress-style refinement (Sieberling et al. 2024, "EvoPress: Towards
//!   Optimal Dynamic Model Compression via Evolutionary Search"): mutants of the best
//!   allocation so far (one layer up a level, random others down until the budget holds)
//!   scored by a fitness function — in the pass, the end-to-end error of the whole mixed
//!   model, which also sees the interactions the additive model misses — the best of parent
//!   and offspring surviving.
//!
//! Also: the sample inputs used when no calibration data is given ([`generated_inputs`]), and
//! the end-to-end error ([`output_error`]).

use pare_interp::Interpreter;
use pare_ir::{DType, Dim, Graph, Tensor};
use std::collections::HashMap;

/// One level of one layer: its size and its (squared relative) end-to-end error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// Stored size in bits.
    pub bits: f64,
    /// End-to-end error when only this layer is at this level.
    pub err: f64,
}

/// Total size in bits of an allocation.
pub fn total_bits(levels: &[Vec<Level>], choice: &[usize]) -> f64 {
    levels
        .iter()
        .zip(choice)
        .map(|(l, &c)| l.get(c).map_or(0.0, |x| x.bits))
        .sum()
}

/// The greedy allocation: per layer an index into its levels (ordered cheapest first), with
/// total bits ≤ `budget`. `Err(least)` when even the cheapest levels need `least` bits.
pub fn greedy(levels: &[Vec<Level>], budget: f64) -> Result<Vec<usize>, f64> {
    let mut choice = vec![0usize; levels.len()];
    let mut total = total_bits(levels, &choice);
    if total > budget {
        return Err(total);
    }
    loop {
        // (ratio, layer, level, extra bits)
        let mut best: Option<(f64, usize, usize, f64)> = None;
        for (i, ls) in levels.iter().enumerate() {
            let cur = ls[choice[i]];
            for (j, l) in ls.iter().enumerate().skip(choice[i] + 1) {
                let extra = l.bits - cur.bits;
                let gain = cur.err - l.err;
                if gain <= 0.0 || total + extra > budget {
                    continue;
                }
                let ratio = if extra > 0.0 {
                    gain / extra
                } else {
                    f64::INFINITY
                };
                if best.is_none_or(|(r, ..)| ratio > r) {
                    best = Some((ratio, i, j, extra));
                }
            }
        }
        let Some((_, i, j, extra)) = best else {
            return Ok(choice);
        };
        choice[i] = j;
        total += extra;
    }
}

pub use pare_pass::search::{Rng, Settings};

/// One mutation: a random layer goes up one level, then random other layers go down one
/// level until the budget holds. `false` when no such move exists (`choice` unchanged).
fn mutate(levels: &[Vec<Level>], choice: &mut [usize], budget: f64, rng: &mut Rng) -> bool {
    let up: Vec<usize> = (0..levels.len())
        .filter(|&i| choice[i] + 1 < levels[i].len())
        .collect();
    if up.is_empty() {
        return false;
    }
    let before = choice.to_vec();
    let i = up[rng.below(up.len())];
    choice[i] += 1;
    while total_bits(levels, choice) > budget {
        let down: Vec<usize> = (0..levels.len())
            .filter(|&j| j != i && choice[j] > 0)
            .collect();
        if down.is_empty() {
            choice.copy_from_slice(&before);
            return false;
        }
        let j = down[rng.below(down.len())];
        choice[j] -= 1;
    }
    true
}

/// The result of [`evolve`].
#[derive(Clone, Debug)]
pub struct Found {
    /// The best allocation.
    pub choice: Vec<usize>,
    /// Its fitness.
    pub fitness: f64,
    /// The start's fitness.
    pub start_fitness: f64,
    /// Candidates scored (the start not included).
    pub evaluations: usize,
}

/// Searches allocations within `budget` bits, starting from `start` (which must fit) of
/// fitness `start_fitness`, minimizing `fitness`.
pub fn evolve<E>(
    levels: &[Vec<Level>],
    start: Vec<usize>,
    start_fitness: f64,
    budget: f64,
    settings: Settings,
    fitness: &mut dyn FnMut(&[usize]) -> Result<f64, E>,
) -> Result<Found, E> {
    let mut rng = Rng::new(settings.seed);
    let mut best_fit = start_fitness;
    let mut best = start;
    let mut evaluations = 0;
    let mut seen: Vec<Vec<usize>> = vec![best.clone()];
    for _ in 0..settings.generations {
        let mut gen_best: Option<(Vec<usize>, f64)> = None;
        for _ in 0..settings.offspring {
            let mut c = best.clone();
            let mut moved = false;
            for _ in 0..1 + rng.below(2) {
                moved |= mutate(levels, &mut c, budget, &mut rng);
            }
            if !moved || seen.contains(&c) || total_bits(levels, &c) > budget {
                continue;
            }
            seen.push(c.clone());
            let f = fitness(&c)?;
            evaluations += 1;
            if gen_best.as_ref().is_none_or(|(_, b)| f < *b) {
                gen_best = Some((c, f));
            }
        }
        if let Some((c, f)) = gen_best {
            if f < best_fit {
                best = c;
                best_fit = f;
            }
        }
    }
    Ok(Found {
        choice: best,
        fitness: best_fit,
        start_fitness,
        evaluations,
    })
}

/// Squared relative L2 error of the float outputs of `g` against `reference` on `inputs`:
/// `Σ‖y − ŷ‖² / Σ‖y‖²` over all samples and float outputs.
pub fn output_error(
    interp: &Interpreter,
    g: &Graph,
    inputs: &[Vec<Tensor>],
    reference: &[Vec<Vec<f64>>],
) -> Result<f64, String> {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, r) in inputs.iter().zip(reference) {
        let out = float_outputs(&interp.run(g, x).map_err(|e| e.to_string())?);
        if out.len() != r.len() {
            return Err("the number of float outputs changed".into());
        }
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
    Ok(if den > 0.0 {
        num / den
    } else if num > 0.0 {
        f64::INFINITY
    } else {
        0.0
    })
}

/// The float outputs of one run, as f64.
pub fn float_outputs(out: &[Tensor]) -> Vec<Vec<f64>> {
    out.iter()
        .filter(|t| t.dtype().is_float())
        .filter_map(|t| t.to_f64_vec())
        .collect()
}

/// `n` generated inputs for `g` when no calibration samples are given, deterministic in
/// `seed`: BERT-style token samples ([`pare_pass::samples::token_samples`], batch 1, 16
/// tokens) when the graph's inputs are exactly two 2-D int64 tensors (token ids and attention
/// mask); otherwise f32/f64 ~ N(0,1), integers in [0, 4), random booleans, with symbolic or
/// unknown extents set to 1 on the first axis and 16 elsewhere (one size per symbol name).
pub fn generated_inputs(g: &Graph, n: usize, seed: u64) -> Result<Vec<Vec<Tensor>>, String> {
    let ins = g.inputs();
    let ins = &ins[..ins.len() - g.num_captures()];
    let tokens = ins.len() == 2
        && ins.iter().all(|&v| {
            let ty = &g.value(v).ty;
            ty.dtype == Some(DType::I64) && ty.shape.as_ref().is_some_and(|s| s.rank() == 2)
        });
    if tokens {
        let set = pare_pass::samples::token_samples(g, n, 1, 16, seed);
        return Ok(set.samples.into_iter().map(|s| s.inputs).collect());
    }
    let mut rng = Rng::new(seed);
    let mut syms: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sample = Vec::with_capacity(ins.len());
        for &v in ins {
            let val = g.value(v);
            let shape = val
                .ty
                .shape
                .as_ref()
                .ok_or_else(|| format!("input '{}' has an unknown rank", val.name))?;
            let dims: Vec<usize> = shape
                .0
                .iter()
                .enumerate()
                .map(|(axis, d)| {
                    let default = if axis == 0 { 1 } else { 16 };
                    match d {
                        Dim::Fixed(x) => *x as usize,
                        Dim::Sym(s) => *syms.entry(s.clone()).or_insert(default),
                        Dim::Unknown => default,
                    }
                })
                .collect();
            let len: usize = dims.iter().product();
            let dtype = val
                .ty
                .dtype
                .ok_or_else(|| format!("input '{}' has an unknown element type", val.name))?;
            let t = match dtype {
                DType::F32 => {
                    Tensor::from_vec(dims, (0..len).map(|_| rng.normal() as f32).collect())
                }
                DType::F64 => Tensor::from_vec(dims, (0..len).map(|_| rng.normal()).collect()),
                DType::I64 => Tensor::from_vec(
                    dims,
                    (0..len).map(|_| rng.below(4) as i64).collect::<Vec<_>>(),
                ),
                DType::I32 => Tensor::from_vec(
                    dims,
                    (0..len).map(|_| rng.below(4) as i32).collect::<Vec<_>>(),
                ),
                DType::Bool => Tensor::from_vec(
                    dims,
                    (0..len).map(|_| rng.below(2) == 1).collect::<Vec<_>>(),
                ),
                other => {
                    return Err(format!(
                        "input '{}': no generator for {} inputs",
                        val.name,
                        other.name()
                    ))
                }
            };
            sample.push(t);
        }
        out.push(sample);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three levels per layer like the pass's (int4 g128: 4.25 bits, int8 per channel ≈ 8.1,
    /// f32: 32) with the error shrinking 256× per 4 bits; sizes exact in binary.
    fn ladder(elements: f64, sens: f64) -> Vec<Level> {
        vec![
            Level {
                bits: 4.25 * elements,
                err: sens,
            },
            Level {
                bits: 8.125 * elements,
                err: sens / 256.0,
            },
            Level {
                bits: 32.0 * elements,
                err: 0.0,
            },
        ]
    }

    fn maximal(levels: &[Vec<Level>], choice: &[usize], budget: f64) -> bool {
        let total = total_bits(levels, choice);
        levels.iter().zip(choice).all(|(ls, &c)| {
            ls.iter()
                .skip(c + 1)
                .all(|l| total + l.bits - ls[c].bits > budget || l.err >= ls[c].err)
        })
    }

    #[test]
    fn greedy_meets_the_budget_and_favors_sensitive_layers() {
        // Equal sizes, sensitivities spread over four orders of magnitude.
        let sens = [1e-4, 3e-2, 1e-3, 5e-1, 2e-3, 1e-1, 1e-5, 7e-3];
        let levels: Vec<Vec<Level>> = sens.iter().map(|&s| ladder(1000.0, s)).collect();
        let elements = 1000.0 * sens.len() as f64;
        for avg in [4.25, 4.5, 5.0, 6.0, 8.125, 12.0, 32.0] {
            let budget = avg * elements;
            let c = greedy(&levels, budget).expect("fits");
            let total = total_bits(&levels, &c);
            assert!(total <= budget + 1e-9, "avg {avg}: {total} > {budget}");
            assert!(maximal(&levels, &c, budget), "avg {avg}: {c:?} not maximal");
            // Monotone: a more sensitive layer never gets fewer bits than a less sensitive one.
            for i in 0..sens.len() {
                for j in 0..sens.len() {
                    if sens[i] > sens[j] {
                        assert!(c[i] >= c[j], "avg {avg}: {c:?}");
                    }
                }
            }
        }
        // 5 bits: (5 - 4.25) / (8.125 - 4.25) of 8 layers → the single most sensitive at int8.
        let c = greedy(&levels, 5.0 * elements).expect("fits");
        assert_eq!(c, vec![0, 0, 0, 1, 0, 0, 0, 0]);
        // 32 bits: everything f32 (error 0).
        let c = greedy(&levels, 32.0 * elements).expect("fits");
        assert!(c.iter().all(|&l| l == 2), "{c:?}");
    }

    #[test]
    fn greedy_reports_the_least_size_when_the_budget_is_too_small() {
        let levels = vec![ladder(100.0, 1.0), ladder(300.0, 1.0)];
        assert_eq!(greedy(&levels, 4.0 * 400.0), Err(4.25 * 400.0));
        assert_eq!(greedy(&levels, 4.25 * 400.0), Ok(vec![0, 0]));
    }

    #[test]
    fn greedy_weighs_error_per_bit() {
        // A big layer with more error than a small one: per bit, the small one's upgrade is
        // worth more, and only one upgrade fits.
        let levels = vec![ladder(10_000.0, 4e-2), ladder(500.0, 1e-2)];
        let budget = total_bits(&levels, &[0, 0]) + 3.875 * 600.0;
        assert_eq!(greedy(&levels, budget), Ok(vec![0, 1]));
    }

    #[test]
    fn evolve_finds_interactions_the_greedy_misses() {
        // Layers 0 and 1 only hurt together (non-additive fitness); the greedy, seeing equal
        // single-layer sensitivities, upgrades layer 2 (cheaper per error); the search finds
        // that upgrading 0 or 1 instead is better, and never breaks the budget.
        let levels: Vec<Vec<Level>> = (0..4).map(|_| ladder(100.0, 1.0)).collect();
        let budget = total_bits(&levels, &[0, 0, 0, 0]) + 3.875 * 100.0;
        let start = vec![0, 0, 1, 0];
        let mut fit = |c: &[usize]| -> Result<f64, ()> {
            assert!(total_bits(&levels, c) <= budget);
            let both = if c[0] == 0 && c[1] == 0 { 10.0 } else { 0.0 };
            Ok(both
                + c.iter()
                    .map(|&l| if l == 0 { 1.0 } else { 0.0 })
                    .sum::<f64>())
        };
        let start_fitness = fit(&start).expect("fitness");
        let found = evolve(
            &levels,
            start,
            start_fitness,
            budget,
            Settings {
                generations: 30,
                offspring: 2,
                seed: 3,
            },
            &mut fit,
        )
        .expect("search");
        assert!(
            found.fitness < found.start_fitness,
            "{found:?} (start {})",
            found.start_fitness
        );
        assert!(found.choice[0] > 0 || found.choice[1] > 0, "{found:?}");
    }

    #[test]
    fn generated_inputs_follow_the_declared_types() {
        let g = pare_ir::parse_graph(
            "graph @main(%x: f32[N,3], %m: i64[N,4]) -> (%y) {\n  %y = Identity(%x)\n}\n",
        )
        .expect("parse");
        let xs = generated_inputs(&g, 2, 9).expect("inputs");
        assert_eq!(xs.len(), 2);
        assert_eq!(xs[0][0].shape(), &[1, 3]);
        assert_eq!(xs[0][1].shape(), &[1, 4]);
        assert_ne!(xs[0][0], xs[1][0]);
    }
}
