//! `cse`: common-subexpression elimination.

use crate::util::{is_graph_output, refine};
use pare_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Common-subexpression elimination.
///
/// **What it does.** On the top-level graph:
///
/// 1. *Constants.* Read constants with the same dtype, shape and bytes (strings: the same
///    strings) and the same value type are merged into the one with the lowest value id;
///    the others lose their readers and are removed.
/// 2. *Nodes.* In topological order, a node with the same op (attributes included, compared
///    with `PartialEq` on [`Op`]), the same operands (omitted ones in the same slots) and the
///    same number of results as an earlier node is replaced by it: its readers read the
///    earlier node's results and it is removed. Because operands are compared after earlier
///    merges, whole duplicated chains collapse in one run.
///
/// Never merged: nodes holding subgraphs (If/Loop/Scan), custom ops (their semantics are
/// opaque), `Dropout` (random in training mode), and nodes without results. A duplicate
/// whose result is a graph output is merged only when the kept result is not a graph output
/// (the kept result then takes the output's name); two graph outputs stay distinct, and a
/// constant graph output is never merged away.
///
/// **Guarantees.** Exact: every core op is a deterministic function of its operands and
/// attributes. The result is deterministic: the survivor is always the first in value-id
/// (constants) or topological (nodes) order.
///
/// Reference: classic value numbering; onnxruntime's `CommonSubexpressionElimination` and
/// `ConstantSharing`.
#[derive(Clone, Debug, Default)]
pub struct Cse;

const NAME: &str = "cse";

impl Pass for Cse {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let consts = merge_constants(g);
        let nodes = merge_nodes(g).map_err(|e| PassError::failed(NAME, e))?;
        let mut r =
            PassReport::counted("nodes-merged", nodes).with_stat("constants-merged", consts);
        r.changed = nodes + consts > 0;
        Ok(r)
    }
}

fn const_key(t: &Tensor) -> (DType, Vec<usize>, u64) {
    let mut h = DefaultHasher::new();
    match t.strings() {
        Some(s) => s.hash(&mut h),
        None => t.raw().hash(&mut h),
    }
    (t.dtype(), t.shape().to_vec(), h.finish())
}

fn merge_constants(g: &mut Graph) -> u64 {
    let mut seen: HashMap<(DType, Vec<usize>, u64), Vec<ValueId>> = HashMap::new();
    let mut merges: Vec<(ValueId, ValueId)> = Vec::new();
    for (v, t) in g.constants() {
        if g.uses(v).is_empty() {
            continue;
        }
        let bucket = seen.entry(const_key(t)).or_default();
        let ty: &TensorType = &g.value(v).ty;
        let same = bucket.iter().copied().find(|&c| {
            g.value(c).ty == *ty && g.constant(c).is_some_and(|ct| ct.data() == t.data())
        });
        match same {
            Some(c) if !is_graph_output(g, v) => merges.push((v, c)),
            _ => bucket.push(v),
        }
    }
    let n = merges.len() as u64;
    for (dup, keep) in merges {
        g.replace_all_uses(dup, keep);
        g.remove_const(dup);
    }
    n
}

fn mergeable(op: &Op) -> bool {
    !matches!(op, Op::Custom(_) | Op::Dropout(_)) && op.subgraphs().is_empty()
}

type NodeKey = (String, Vec<Option<ValueId>>, usize);

fn merge_nodes(g: &mut Graph) -> Result<u64, String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let mut seen: HashMap<NodeKey, Vec<NodeId>> = HashMap::new();
    let mut merged = 0u64;
    for n in order {
        let node = g.node(n);
        if !mergeable(&node.op) || node.outputs().is_empty() {
            continue;
        }
        let key: NodeKey = (
            node.op.name().to_string(),
            node.inputs().to_vec(),
            node.outputs().len(),
        );
        let bucket = seen.entry(key).or_default();
        let found = bucket.iter().copied().find(|&k| {
            g.node(k).op == g.node(n).op
                && g.node(k)
                    .outputs()
                    .iter()
                    .zip(g.node(n).outputs())
                    .all(|(&kv, &dv)| !(is_graph_output(g, kv) && is_graph_output(g, dv)))
        });
        let Some(k) = found else {
            bucket.push(n);
            continue;
        };
        let pairs: Vec<(ValueId, ValueId)> = g
            .node(k)
            .outputs()
            .iter()
            .copied()
            .zip(g.node(n).outputs().iter().copied())
            .collect();
        for (kv, dv) in pairs {
            if is_graph_output(g, dv) {
                let name = g.value(dv).name.clone();
                g.set_name(kv, name);
            }
            let t = refine(&g.value(kv).ty, &g.value(dv).ty);
            g.set_type(kv, t);
            g.replace_all_uses(dv, kv);
        }
        if g.remove_node(n) {
            merged += 1;
        }
    }
    Ok(merged)
}
