//! `search=evo`: per-norm widths instead of one ratio for every norm.
//!
//! The uniform widths of `ratio` fix a budget — the parameters they remove, or the per-token
//! multiply-adds of the stream's linear layers (`budget=flops`: the weights of the MatMul /
//! Gemm layers, each used once per token, so their count is the per-token multiply-adds) —
//! and an EvoPress-style evolutionary search ([`pare_pass::search`], shared with
//! `prune-channels` and `lowrank`) moves width between norms without removing less, scoring
//! every candidate by the end-to-end relative output error of the rotated and sliced model
//! on `search-samples` calibration samples. A unit is `round-to` axes of one norm; every norm
//! keeps at least one unit.
//!
//! The rotations are computed once, before the search (with `sequential=true`, at the uniform
//! widths). The cost of a unit of norm `i` is measured on the rewritten model, as the
//! difference between the uniform widths and the uniform widths with one more unit taken from
//! norm `i`. The residual matrices between two norms (`kⱼ × kᵢ`) make the true cost slightly
//! bilinear, so every candidate's exact cost is measured too, and one that costs more than the
//! uniform widths is never chosen; the report gives both exact costs.

use crate::basis::Basis;
use crate::rewrite;
use crate::structure::Plan;
use crate::{Budget, SliceOptions, NAME};
use pare_ir::cost::cost;
use pare_ir::{Graph, Op};
use pare_pass::search;
use pare_pass::{PassContext, PassError, PassReport};

/// Elements of the constant weight operands of the MatMul / Gemm layers (the multiply-adds
/// per row of the activations they multiply).
fn linear_weights(g: &Graph) -> u64 {
    let mut total = 0u64;
    for n in g.node_ids() {
        let node = g.node(n);
        if !matches!(node.op, Op::MatMul | Op::Gemm(_)) {
            continue;
        }
        for v in node.inputs().iter().take(2).flatten() {
            if let Some(t) = g.constant(*v) {
                total += t.numel() as u64;
            }
        }
    }
    total
}

/// The budget measure of `g`.
fn measure(g: &Graph, budget: Budget) -> f64 {
    match budget {
        Budget::Params => cost(g).params as f64,
        Budget::Flops => linear_weights(g) as f64,
    }
}

/// Widths for `removed` units of `m` axes per norm.
fn widths(plan: &Plan, removed: &[usize], m: usize) -> Vec<usize> {
    plan.norms
        .iter()
        .zip(removed)
        .map(|(n, &k)| n.d - (k * m).min(n.d))
        .collect()
}

/// The rewritten graph for the given widths.
fn rewritten(g: &Graph, plan: &Plan, bases: &[Basis], keep: &[usize]) -> Result<Graph, String> {
    let mut h = g.clone();
    rewrite::apply(&mut h, plan, bases, keep).map_err(|e| e.to_string())?;
    pare_ir::infer::reinfer_types(&mut h).map_err(|e| e.to_string())?;
    Ok(h)
}

/// Searches per-norm widths under the budget of `uniform` (see the module doc); returns the
/// widths to use.
pub(crate) fn search_widths(
    g: &Graph,
    plan: &Plan,
    bases: &[Basis],
    uniform: &[usize],
    o: &SliceOptions,
    cx: &mut PassContext,
    report: &mut PassReport,
) -> Result<Vec<usize>, PassError> {
    let fail = |e: String| PassError::failed(NAME, format!("width search: {e}"));
    let samples = cx.require_samples(NAME)?;
    let m = o.round_to.max(1);
    let units: Vec<usize> = plan.norms.iter().map(|n| n.d / m).collect();
    let caps: Vec<usize> = units.iter().map(|&u| u.saturating_sub(1)).collect();
    let start: Vec<usize> = plan
        .norms
        .iter()
        .zip(uniform)
        .zip(&caps)
        .map(|((n, &k), &cap)| ((n.d - k.min(n.d)) / m).min(cap))
        .collect();
    let at_start = rewritten(g, plan, bases, &widths(plan, &start, m)).map_err(fail)?;
    let base = measure(&at_start, o.budget);
    let mut per_unit = Vec::with_capacity(start.len());
    for i in 0..start.len() {
        // One more unit from norm i (one fewer when it is at its cap).
        let mut k = start.clone();
        let more = k[i] < caps[i];
        if more {
            k[i] += 1;
        } else if k[i] > 0 {
            k[i] -= 1;
        } else {
            per_unit.push(0.0);
            continue;
        }
        let c = measure(
            &rewritten(g, plan, bases, &widths(plan, &k, m)).map_err(fail)?,
            o.budget,
        );
        per_unit.push(if more { base - c } else { c - base }.max(0.0));
    }
    let budget: f64 = start
        .iter()
        .zip(&per_unit)
        .map(|(&k, &p)| k as f64 * p)
        .sum();
    let scorer = search::Scorer::new(g, &samples, o.search_samples).map_err(fail)?;
    let mut fitness = |removed: &[usize]| -> Result<f64, PassError> {
        let h = rewritten(g, plan, bases, &widths(plan, removed, m)).map_err(fail)?;
        // The unit costs are linear; the residual matrices are not: a candidate that costs
        // more than the uniform widths in truth is never chosen.
        if measure(&h, o.budget) > base {
            return Ok(f64::INFINITY);
        }
        scorer.error(&h).map_err(fail)
    };
    let space = search::Space {
        units,
        caps,
        per_unit,
        budget,
    };
    let found = search::evolve_in(
        cx,
        "slice: width search",
        start,
        &space,
        o.generations,
        o.offspring,
        &mut fitness,
    )?;
    let keep = widths(plan, &found.removed, m);
    let after = measure(&rewritten(g, plan, bases, &keep).map_err(fail)?, o.budget);
    let what = match o.budget {
        Budget::Params => "parameters",
        Budget::Flops => "linear-layer weights (per-token multiply-adds)",
    };
    report.note(format!(
        "width search ({:?} budget): {} candidates over {} generations; output error on {} \
         calibration sample(s) {:.4} (uniform widths) → {:.4}; {what} {} (uniform) → {}",
        o.budget,
        found.evaluations,
        o.generations,
        scorer.samples(),
        found.uniform_fitness,
        found.fitness,
        base as u64,
        after as u64,
    ));
    report.add_stat("search-evaluations", found.evaluations as u64);
    Ok(keep)
}
