//! Cost model analysis: parameters, weight bytes by dtype, FLOPs and activation memory per
//! node, and the peak activation memory of a sequential run in topological order.

use crate::{Analysis, PassContext, PassError};
use pare_ir::cost::{cost, node_flops, CostSummary};
use pare_ir::{Graph, NodeId, Use, ValueDef, ValueId};
use std::collections::HashMap;

/// Cost of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCost {
    /// The node.
    pub node: NodeId,
    /// FLOPs (`None`: shapes not static).
    pub flops: Option<u64>,
    /// Bytes of its outputs (`None`: some output shape not static).
    pub activation_bytes: Option<u64>,
}

/// The cost model of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct CostAnalysis {
    /// Params, weight bytes and FLOPs.
    pub summary: CostSummary,
    /// Per node, in topological order.
    pub nodes: Vec<NodeCost>,
    /// Sum of every node's output bytes (those with static shapes).
    pub activation_bytes: u64,
    /// Largest total of simultaneously live activations (graph inputs included) when nodes run
    /// one at a time in topological order and each value is freed after its last reader.
    pub peak_activation_bytes: u64,
    /// Values whose size is unknown (not counted above).
    pub unknown_size_values: usize,
}

/// Bytes of a value with a static shape and known dtype.
pub fn value_bytes(g: &Graph, v: ValueId) -> Option<u64> {
    let ty = &g.value(v).ty;
    let n = ty.shape.as_ref()?.numel()?;
    Some(ty.dtype?.storage_bytes(n) as u64)
}

impl Analysis for CostAnalysis {
    const NAME: &'static str = "cost";

    fn compute(g: &Graph, _cx: &mut PassContext) -> Result<Self, PassError> {
        let order = g
            .topo_order()
            .map_err(|e| PassError::analysis(Self::NAME, e.to_string()))?;
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        // Last reader of each value, as a position in `order` (outputs live to the end).
        let end = order.len();
        let last_use = |v: ValueId| -> usize {
            g.uses(v)
                .iter()
                .map(|u| match u {
                    Use::Node { node, .. } => pos.get(node).copied().unwrap_or(end),
                    Use::Output(_) => end,
                })
                .max()
                .unwrap_or(0)
        };
        let mut frees: Vec<u64> = vec![0; end + 1];
        let mut unknown = 0usize;
        let mut live = 0u64;
        for &v in g.inputs() {
            if let Some(b) = value_bytes(g, v) {
                live += b;
                frees[last_use(v)] += b;
            } else {
                unknown += 1;
            }
        }
        let mut peak = live;
        let mut nodes = Vec::with_capacity(order.len());
        let mut total = 0u64;
        for (i, &n) in order.iter().enumerate() {
            let mut act = Some(0u64);
            for &o in g.node(n).outputs() {
                match value_bytes(g, o) {
                    Some(b) => {
                        act = act.map(|a| a + b);
                        live += b;
                        let lu = last_use(o).max(i);
                        frees[lu] += b;
                    }
                    None => {
                        act = None;
                        unknown += 1;
                    }
                }
            }
            peak = peak.max(live);
            live -= frees[i].min(live);
            total += act.unwrap_or(0);
            nodes.push(NodeCost {
                node: n,
                flops: node_flops(g, n),
                activation_bytes: act,
            });
        }
        debug_assert!(g
            .value_ids()
            .all(|v| !matches!(g.value(v).def(), ValueDef::Dead) || g.uses(v).is_empty()));
        Ok(CostAnalysis {
            summary: cost(g),
            nodes,
            activation_bytes: total,
            peak_activation_bytes: peak,
            unknown_size_values: unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_counts_live_values_only() {
        let g = pare_ir::parse_graph(
            "graph @g(%x: f32[4]) -> (%c) {
               %a = Relu(%x) : f32[4]
               %b = Relu(%a) : f32[4]
               %c = Relu(%b) : f32[4]
             }",
        )
        .unwrap();
        let mut cx = PassContext::new();
        let c = cx.analysis::<CostAnalysis>(&g).unwrap();
        assert_eq!(c.activation_bytes, 48);
        // x and a live together, then a and b, then b and c: 32 bytes at most.
        assert_eq!(c.peak_activation_bytes, 32);
        assert_eq!(c.nodes.len(), 3);
        // Cached: same Arc.
        let c2 = cx.analysis::<CostAnalysis>(&g).unwrap();
        assert!(std::sync::Arc::ptr_eq(&c, &c2));
    }
}
