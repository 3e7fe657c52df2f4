//! An out-of-tree pass for pare: unstructured magnitude pruning.
//!
//! **What**: in every MatMul, Gemm and Conv whose weight is a constant f32 tensor, sets the
//! `sparsity` fraction of weights with the smallest magnitude to zero (per tensor).
//! **Needs**: nothing (no calibration data).
//! **Guarantees**: shapes and ops are unchanged; only weight values change, so the model's
//! function changes (this pass is lossy); a weight shared with another node is pruned once.
//! **Paper**: LeCun et al., "Optimal Brain Damage" (magnitude as the simplest saliency);
//! Han et al., "Learning both Weights and Connections for Efficient Neural Networks" (2015).
//!
//! See docs/passes.md in the pare repository for the guide this example goes with.

use pare_ir::{Graph, Op, Tensor};
use pare_pass::analyses::CostAnalysis;
use pare_pass::{Pass, PassContext, PassError, PassInfo, PassReport, Registry};
use std::collections::HashSet;

/// Options, as written in a pipeline: `magnitude-prune(sparsity=0.5)`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MagnitudePruneOptions {
    /// Fraction of each weight tensor set to zero, in [0, 1).
    pub sparsity: f64,
}

impl Default for MagnitudePruneOptions {
    fn default() -> Self {
        MagnitudePruneOptions { sparsity: 0.5 }
    }
}

/// The pass.
pub struct MagnitudePrune {
    opts: MagnitudePruneOptions,
}

impl MagnitudePrune {
    /// A pass with these options; rejects a sparsity outside [0, 1).
    pub fn new(opts: MagnitudePruneOptions) -> Result<MagnitudePrune, PassError> {
        if !(0.0..1.0).contains(&opts.sparsity) {
            return Err(PassError::Options {
                pass: "magnitude-prune".into(),
                message: format!("sparsity must be in [0, 1), got {}", opts.sparsity),
            });
        }
        Ok(MagnitudePrune { opts })
    }
}

impl Pass for MagnitudePrune {
    fn name(&self) -> &str {
        "magnitude-prune"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        // Analyses come from the context, computed once and cached until a pass changes the
        // graph. Here the cost model tells us how many FLOPs the pruned layers carry.
        let cost = cx.analysis::<CostAnalysis>(g)?;
        let mut report = PassReport::unchanged();
        let mut done = HashSet::new();
        for n in g.node_ids().collect::<Vec<_>>() {
            let node = g.node(n);
            if !matches!(node.op, Op::MatMul | Op::Gemm(_) | Op::Conv(_)) {
                continue;
            }
            let Some(w) = node.input(1) else { continue };
            let Some(t) = g.constant(w) else { continue };
            if !done.insert(w) {
                continue;
            }
            // A weight of another dtype is left alone (and said so in the report).
            let Ok(mut vals) = t.to_vec::<f32>() else {
                report.note(format!("{}: weight is not f32, skipped", node.name));
                continue;
            };
            let k = (vals.len() as f64 * self.opts.sparsity).floor() as usize;
            if k == 0 {
                continue;
            }
            let mut mags: Vec<f32> = vals.iter().map(|v| v.abs()).collect();
            let (_, &mut threshold, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
            let mut zeroed = 0u64;
            for v in vals.iter_mut() {
                if v.abs() <= threshold && zeroed < k as u64 {
                    *v = 0.0;
                    zeroed += 1;
                }
            }
            let shape = t.shape().to_vec();
            let name = g.value(w).name.clone();
            // Constants are immutable and shared: make a new one and point the node at it.
            let new_w = g.add_const(name, Tensor::from_vec(shape, vals));
            for u in g.uses(w).to_vec() {
                if let pare_ir::Use::Node { node, operand } = u {
                    g.set_operand(node, operand, Some(new_w));
                }
            }
            report.add_stat("weights-zeroed", zeroed);
            if let Some(c) = cost.nodes.iter().find(|c| c.node == n) {
                report.add_stat("flops-in-pruned-layers", c.flops.unwrap_or(0));
            }
            report.changed = true;
            report.preserved = pare_pass::Preserved::none();
        }
        // Shapes and FLOPs are unchanged, so the cost model stays valid.
        Ok(report.preserve::<CostAnalysis>())
    }
}

/// Registers `magnitude-prune` in `reg`.
pub fn register(reg: &mut Registry) {
    reg.register(
        PassInfo::new(
            "magnitude-prune",
            "zero the smallest-magnitude fraction of each MatMul/Gemm/Conv weight (lossy)",
        )
        .option(
            "sparsity",
            "float",
            "0.5",
            "fraction of each weight set to zero, in [0, 1)",
        ),
        |opts| Ok(Box::new(MagnitudePrune::new(opts.parse()?)?)),
    );
}

/// The built-in registry plus this pass: what a tool built on pare would use.
pub fn registry() -> Registry {
    let mut reg = pare_passes::registry();
    register(&mut reg);
    reg
}
