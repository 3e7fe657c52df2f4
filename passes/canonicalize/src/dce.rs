//! `dce`: dead-code elimination.

use pare_ir::Graph;
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// Dead-code elimination.
///
/// **What it does.** Removes every node none of whose outputs is read (graph outputs count
/// as read), in reverse topological order so that whole dead chains go in one run, then
/// every constant nobody reads ([`Graph::remove_const`]), so unused weights are neither
/// printed nor exported. It does the same inside the subgraphs of If/Loop/Scan nodes (a
/// subgraph's outputs count as read; its inputs, captures included, are its interface and
/// stay). Nodes without outputs compute nothing observable and are removed too: every core
/// op is free of side effects, and custom ops are taken to be (ONNX semantics). Graph inputs
/// are never removed.
///
/// **Guarantees.** Exact: only computations that cannot reach a graph output go.
#[derive(Clone, Debug, Default)]
pub struct Dce;

const NAME: &str = "dce";

impl Pass for Dce {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let (nodes, consts) = dce_graph(g).map_err(|e| PassError::failed(NAME, e))?;
        let mut r =
            PassReport::counted("nodes-removed", nodes).with_stat("constants-removed", consts);
        r.changed = nodes + consts > 0;
        Ok(r)
    }
}

/// Removes dead nodes and unread constants of `g` and of its subgraphs; returns the counts.
pub(crate) fn dce_graph(g: &mut Graph) -> Result<(u64, u64), String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let (mut nodes, mut consts) = (0u64, 0u64);
    for &n in order.iter().rev() {
        if g.node(n).outputs().iter().all(|&o| g.uses(o).is_empty()) {
            if g.remove_node(n) {
                nodes += 1;
            }
            continue;
        }
        for sg in g.op_mut(n).subgraphs_mut() {
            let (a, b) = dce_graph(sg)?;
            nodes += a;
            consts += b;
        }
    }
    let unread: Vec<_> = g
        .constants()
        .filter(|(v, _)| g.uses(*v).is_empty())
        .map(|(v, _)| v)
        .collect();
    for v in unread {
        consts += g.remove_const(v) as u64;
    }
    Ok((nodes, consts))
}
