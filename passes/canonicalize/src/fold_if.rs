//! `fold-if`: inlines the taken branch of an `If` whose condition is a constant.

use crate::util::{forward, refine, Names};
use pare_ir::{Graph, NodeId, Op, Use, ValueDef, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
use std::collections::HashMap;

/// Folding of `If` nodes with a constant condition.
///
/// **What it does.** For each `If` node of the top-level graph whose condition (operand 0) is
/// a constant with one element (bool, or numeric: nonzero is true, as in the interpreter),
/// the taken branch is inlined into the graph and the `If` is removed:
///
/// - the branch's inputs are its captured outer values: like the interpreter, the branch
///   takes the *last* `inputs().len()` of the node's trailing operands, in order, and each
///   branch input is replaced by the corresponding outer value;
/// - the branch's constants (those its nodes or outputs read) become constants of the graph,
///   and its nodes are copied in its topological order, ops and attributes unchanged (an
///   If/Loop/Scan inside the branch comes along with its subgraphs; its captured operands are
///   rewired like any operand, so a nested If whose condition is now a constant is folded in
///   the same run, or after `fold-constants` in the fixpoint of `canonicalize`);
/// - every new value gets the branch value's name, made unique among the names of the graph
///   and of all its subgraphs (`name`, `name_1`, ...), and the branch value's type;
/// - each reader of the If's `k`th result reads the branch's `k`th output instead, whether
///   that is a copied node result, a copied constant, or directly a captured outer value.
///   A result that is a graph output keeps its name: the branch value takes it when it is a
///   copied node result that is not already a graph output; otherwise (a constant, a graph
///   input or another graph output) an `Identity` named like the result carries it.
///
/// An If with a non-constant condition, or with a constant of more than one element (an
/// error at run time), is left alone; so is one whose branch does not fit the node (fewer
/// operands than branch inputs, an omitted captured operand, or a different number of
/// outputs), with a note. The other branch is dropped.
///
/// **Needs.** Conditions that are constants: run after `fold-constants` (and `fold-shapes`
/// for conditions computed from shapes), as `canonicalize` does.
///
/// **Guarantees.** Exact: the interpreter runs the taken branch on the captured values, and
/// the inlined nodes compute the same kernels on the same values. Graph inputs and output
/// names are kept. Types of the If's results refine (fill unknown parts of) the branch
/// outputs' types.
///
/// Reference: onnx-simplifier / onnxoptimizer `eliminate_if_with_const_cond`; onnxruntime's
/// `IfConstantFolding`.
#[derive(Clone, Debug, Default)]
pub struct FoldIf;

const NAME: &str = "fold-if";

impl Pass for FoldIf {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let (mut folded, mut inlined) = (0u64, 0u64);
        let mut notes = Vec::new();
        // Nodes added by an inlining get higher ids, so nested Ifs are visited too.
        let mut i = 0;
        while i < g.node_capacity() {
            let n = NodeId(i as u32);
            i += 1;
            if g.node(n).is_dead() || !matches!(g.node(n).op, Op::If(_)) {
                continue;
            }
            let taken = match condition(g, n) {
                Cond::Unknown => continue,
                Cond::Bad(msg) => {
                    notes.push(format!("not folded: {}: {msg}", label(g, n)));
                    continue;
                }
                Cond::Known(c) => c,
            };
            match inline(g, n, taken) {
                Ok(k) => {
                    folded += 1;
                    inlined += k;
                }
                Err(msg) => notes.push(format!("not folded: {}: {msg}", label(g, n))),
            }
        }
        let mut r = PassReport::counted("ifs-folded", folded).with_stat("nodes-inlined", inlined);
        for s in notes {
            r.note(s);
        }
        Ok(r)
    }
}

fn label(g: &Graph, n: NodeId) -> String {
    let name = &g.node(n).name;
    if name.is_empty() {
        format!("If {n}")
    } else {
        format!("If '{name}'")
    }
}

enum Cond {
    Unknown,
    Bad(String),
    Known(bool),
}

/// The If's condition when it is a constant.
fn condition(g: &Graph, n: NodeId) -> Cond {
    let Some(t) = g.node(n).input(0).and_then(|c| g.constant(c)) else {
        return Cond::Unknown;
    };
    if t.numel() != 1 {
        return Cond::Bad(format!(
            "condition has {} elements (shape {:?})",
            t.numel(),
            t.shape()
        ));
    }
    match t.to_f64_vec() {
        Some(v) => Cond::Known(v[0] != 0.0),
        None => Cond::Bad(format!("condition of dtype {} is not numeric", t.dtype())),
    }
}

/// Replaces If node `n` by the `taken` branch; returns the number of nodes copied. Checks
/// everything before the first edit, so an error leaves the graph unchanged.
fn inline(g: &mut Graph, n: NodeId, taken: bool) -> Result<u64, String> {
    let Op::If(at) = &g.node(n).op else {
        return Err("not an If".into());
    };
    let (branch, which) = if taken {
        (at.then_branch.clone(), "then_branch")
    } else {
        (at.else_branch.clone(), "else_branch")
    };
    let operands = &g.node(n).inputs()[1.min(g.node(n).inputs().len())..];
    let n_in = branch.inputs().len();
    if operands.len() < n_in {
        return Err(format!(
            "{which} takes {n_in} inputs, the node passes {}",
            operands.len()
        ));
    }
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (&bi, &outer) in branch
        .inputs()
        .iter()
        .zip(&operands[operands.len() - n_in..])
    {
        let outer = outer.ok_or_else(|| format!("{which}: a captured operand is omitted"))?;
        map.insert(bi, outer);
    }
    let if_outs = g.node(n).outputs().to_vec();
    if branch.outputs().len() != if_outs.len() {
        return Err(format!(
            "{which} has {} outputs, the node {}",
            branch.outputs().len(),
            if_outs.len()
        ));
    }
    let order = branch.topo_order().map_err(|e| format!("{which}: {e}"))?;
    let defined = |v: ValueId| {
        map.contains_key(&v)
            || matches!(
                branch.value(v).def(),
                ValueDef::Const(_) | ValueDef::Node { .. }
            )
    };
    let reads = order
        .iter()
        .flat_map(|&bn| branch.node(bn).inputs().iter().flatten().copied())
        .chain(branch.outputs().iter().copied());
    for v in reads {
        if !defined(v) {
            return Err(format!(
                "{which}: value '{}' has no definition",
                branch.value(v).name
            ));
        }
    }

    // The branches of `n` go away with it; the subgraphs inside the taken one come along.
    let mut names = Names::of_deep_except(g, Some(n));
    for bn in branch.node_ids() {
        for sg in branch.node(bn).op.subgraphs() {
            names.take_deep(sg);
        }
    }
    let names = &mut names;
    for &bn in &order {
        let node = branch.node(bn);
        let inputs: Vec<Option<ValueId>> = node
            .inputs()
            .iter()
            .map(|o| o.map(|v| resolve(g, &branch, &mut map, names, v)))
            .collect();
        let outs: Vec<String> = node
            .outputs()
            .iter()
            .map(|&o| names.fresh(&branch.value(o).name))
            .collect();
        let nn = g.add_node(node.name.clone(), node.op.clone(), inputs, outs);
        let new_outs = g.node(nn).outputs().to_vec();
        for (&bo, no) in node.outputs().iter().zip(new_outs) {
            g.set_type(no, branch.value(bo).ty.clone());
            map.insert(bo, no);
        }
    }
    for (k, &y) in if_outs.iter().enumerate() {
        let x = resolve(g, &branch, &mut map, names, branch.outputs()[k]);
        if g.uses(y).is_empty() || forward(g, y, x) {
            continue;
        }
        // `y` is a graph output whose name `x` cannot take: an Identity carries it, and
        // the other readers read `x` directly.
        let readers: Vec<(NodeId, usize)> = g
            .uses(y)
            .iter()
            .filter_map(|u| match *u {
                Use::Node { node, operand } => Some((node, operand)),
                Use::Output(_) => None,
            })
            .collect();
        for (node, operand) in readers {
            g.set_operand(node, operand, Some(x));
        }
        let name = g.value(y).name.clone();
        let id = g.add_node(
            g.node(n).name.clone(),
            Op::Identity,
            vec![Some(x)],
            vec![name],
        );
        let o = g.node(id).outputs()[0];
        g.set_type(o, refine(&g.value(y).ty, &g.value(x).ty));
        g.replace_all_uses(y, o);
    }
    if !g.remove_node(n) {
        return Err("internal: the If's results are still read".into());
    }
    Ok(order.len() as u64)
}

/// The graph value for branch value `v`: a captured outer value or an already copied node
/// result from `map`, or else (a constant) a new copy of the constant, recorded in `map`.
fn resolve(
    g: &mut Graph,
    branch: &Graph,
    map: &mut HashMap<ValueId, ValueId>,
    names: &mut Names,
    v: ValueId,
) -> ValueId {
    if let Some(&m) = map.get(&v) {
        return m;
    }
    let t = branch
        .constant(v)
        .expect("checked: an input, a constant or a node result")
        .clone();
    let c = g.add_const(names.fresh(&branch.value(v).name), t);
    map.insert(v, c);
    c
}
