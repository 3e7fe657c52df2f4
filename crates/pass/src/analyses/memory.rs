//! Static memory plan: every intermediate value of a graph with static shapes gets an offset
//! in one arena, and values whose lifetimes overlap never share bytes.
//!
//! **What**: nodes run one at a time in topological order; a value lives from the step that
//! produces it to the last step that reads it (graph outputs: to the end). Graph inputs,
//! graph outputs and constants are not in the arena (the caller owns inputs and outputs,
//! constants live in the artifact's read-only data). Placement is greedy by size, largest
//! first, each buffer at the lowest aligned offset that does not overlap a placed buffer whose
//! lifetime intersects its own ("greedy by size" of Pisarchyk & Lee, "Efficient Memory
//! Management for Deep Neural Net Inference", 2020, as in TFLite's arena planner).
//! **Needs**: static shapes and dtypes on every node output (bind symbolic dims first).
//! **Guarantees**: no two simultaneously live buffers overlap; every offset is a multiple of
//! [`ALIGN`]; the arena is at least the peak of simultaneously live bytes (a lower bound that
//! the report compares against).

use crate::{Analysis, PassContext, PassError};
use pare_ir::{Graph, NodeId, Use, ValueDef, ValueId};
use std::collections::HashMap;

/// Alignment of every buffer in the arena, in bytes (a cache line; also enough for AVX-512).
pub const ALIGN: u64 = 64;

/// One planned buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The value stored.
    pub value: ValueId,
    /// Byte offset in the arena.
    pub offset: u64,
    /// Size in bytes (unaligned).
    pub size: u64,
    /// First step (position in [`MemoryPlan::order`]) at which it is live.
    pub first: usize,
    /// Last step at which it is live.
    pub last: usize,
}

/// The plan.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Execution order of the nodes.
    pub order: Vec<NodeId>,
    /// Buffers, in placement order (largest first).
    pub buffers: Vec<Buffer>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// Sum of all buffer sizes (what a plan without reuse would need).
    pub total_bytes: u64,
    /// Largest total of simultaneously live buffers (a lower bound on any plan's arena).
    pub peak_live_bytes: u64,
    index: HashMap<ValueId, usize>,
}

impl MemoryPlan {
    /// The buffer of `v`, if it is in the arena.
    pub fn buffer(&self, v: ValueId) -> Option<&Buffer> {
        self.index.get(&v).map(|&i| &self.buffers[i])
    }

    /// Checks the guarantees (used by tests; cheap enough for debug builds).
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.buffers.iter().enumerate() {
            if a.offset % ALIGN != 0 || a.offset + a.size > self.arena_bytes {
                return Err(format!("buffer of {} misplaced", a.value));
            }
            for b in &self.buffers[i + 1..] {
                let live_together = a.first <= b.last && b.first <= a.last;
                let overlap = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                if live_together && overlap && a.size > 0 && b.size > 0 {
                    return Err(format!(
                        "{} and {} overlap while both live",
                        a.value, b.value
                    ));
                }
            }
        }
        if self.arena_bytes < self.peak_live_bytes {
            return Err("arena smaller than the live peak".into());
        }
        Ok(())
    }

    /// Plans `g`, which must have static shapes and dtypes on every node output.
    pub fn plan(g: &Graph) -> Result<MemoryPlan, String> {
        let order = g.topo_order().map_err(|e| e.to_string())?;
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let end = order.len();
        let mut bufs = Vec::new();
        for (i, &n) in order.iter().enumerate() {
            for &v in g.node(n).outputs() {
                let uses = g.uses(v);
                if uses.iter().any(|u| matches!(u, Use::Output(_))) {
                    continue; // written straight into the caller's output buffer
                }
                debug_assert!(matches!(g.value(v).def(), ValueDef::Node { .. }));
                let ty = &g.value(v).ty;
                let size = match (ty.dtype, ty.shape.as_ref().and_then(|s| s.numel())) {
                    (Some(d), Some(n)) => d.storage_bytes(n) as u64,
                    _ => {
                        return Err(format!(
                            "value '{}' (output of node '{}', {}) has no static shape: bind \
                             the symbolic dims first",
                            g.value(v).name,
                            g.node(n).name,
                            g.node(n).op.name()
                        ))
                    }
                };
                let last = uses
                    .iter()
                    .map(|u| match u {
                        Use::Node { node, .. } => pos.get(node).copied().unwrap_or(end),
                        Use::Output(_) => end,
                    })
                    .max()
                    .unwrap_or(i)
                    .max(i);
                bufs.push(Buffer {
                    value: v,
                    offset: 0,
                    size,
                    first: i,
                    last,
                });
            }
        }
        // Peak of simultaneously live bytes.
        let mut delta = vec![0i64; end + 2];
        for b in &bufs {
            delta[b.first] += b.size as i64;
            delta[b.last + 1] -= b.size as i64;
        }
        let (mut live, mut peak) = (0i64, 0i64);
        for d in delta {
            live += d;
            peak = peak.max(live);
        }
        // Greedy by size: largest first; ties by earlier start for determinism.
        bufs.sort_by(|a, b| b.size.cmp(&a.size).then(a.first.cmp(&b.first)));
        let mut placed: Vec<Buffer> = Vec::with_capacity(bufs.len());
        let mut arena = 0u64;
        for mut b in bufs {
            let mut conflicts: Vec<(u64, u64)> = placed
                .iter()
                .filter(|p| p.first <= b.last && b.first <= p.last && p.size > 0)
                .map(|p| (p.offset, p.offset + p.size))
                .collect();
            conflicts.sort_unstable();
            let mut offset = 0u64;
            for (start, stop) in conflicts {
                if offset + b.size <= start {
                    break;
                }
                offset = offset.max(stop.div_ceil(ALIGN) * ALIGN);
            }
            b.offset = offset;
            arena = arena.max(offset + b.size);
            placed.push(b);
        }
        let total = placed.iter().map(|b| b.size).sum();
        let index = placed
            .iter()
            .enumerate()
            .map(|(i, b)| (b.value, i))
            .collect();
        Ok(MemoryPlan {
            order,
            buffers: placed,
            arena_bytes: arena.div_ceil(ALIGN) * ALIGN,
            total_bytes: total,
            peak_live_bytes: peak as u64,
            index,
        })
    }
}

impl Analysis for MemoryPlan {
    const NAME: &'static str = "memory-plan";

    fn compute(g: &Graph, _cx: &mut PassContext) -> Result<Self, PassError> {
        MemoryPlan::plan(g).map_err(|m| PassError::analysis(Self::NAME, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str) -> MemoryPlan {
        let p = MemoryPlan::plan(&pare_ir::parse_graph(src).unwrap()).unwrap();
        p.check().unwrap();
        p
    }

    #[test]
    fn a_chain_reuses_two_buffers() {
        let p = plan(
            "graph @g(%x: f32[16]) -> (%y) {
               %a = Relu(%x) : f32[16]
               %b = Relu(%a) : f32[16]
               %c = Relu(%b) : f32[16]
               %d = Relu(%c) : f32[16]
               %y = Relu(%d) : f32[16]
             }",
        );
        assert_eq!(p.buffers.len(), 4);
        assert_eq!(p.total_bytes, 256);
        assert_eq!(p.peak_live_bytes, 128);
        assert_eq!(p.arena_bytes, 128, "ping-pong between two 64-byte slots");
    }

    #[test]
    fn long_lived_values_are_not_overwritten() {
        // %a is read at the end, so nothing produced in between may take its place.
        let p = plan(
            "graph @g(%x: f32[16]) -> (%y) {
               %a = Relu(%x) : f32[16]
               %b = Neg(%a) : f32[16]
               %c = Neg(%b) : f32[16]
               %d = Neg(%c) : f32[16]
               %y = Add(%a, %d) : f32[16]
             }",
        );
        let a = p
            .buffer(p.buffers.iter().find(|b| b.first == 0).unwrap().value)
            .unwrap();
        for b in &p.buffers {
            if b.value != a.value {
                assert_ne!(b.offset, a.offset);
            }
        }
        assert_eq!(p.arena_bytes, 192);
    }

    #[test]
    fn dynamic_shapes_are_refused_with_the_node() {
        let g = pare_ir::parse_graph(
            "graph @g(%x: f32[N]) -> (%y) {
               %a = Relu(%x) : f32[N] loc(\"r1\")
               %y = Relu(%a) : f32[N]
             }",
        )
        .unwrap();
        let e = MemoryPlan::plan(&g).unwrap_err();
        assert!(e.contains("'r1'") && e.contains("bind"), "{e}");
    }
}
