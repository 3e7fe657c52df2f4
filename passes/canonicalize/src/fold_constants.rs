//! `fold-constants`: evaluates nodes whose operands are all constants, and forwards no-op
//! nodes to their operand.

use crate::util::{
    const_ints, expand_is_identity, forward, is_graph_output, remove_if_dead, reshape_is_identity,
    shape_of,
};
use pare_interp::{eval_node, Value};
use pare_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, Use, ValueId};
use pare_pass::{Pass, PassContext, PassError, PassReport};
use serde::Deserialize;

/// Options of [`FoldConstants`].
#[derive(Clone, Debug, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct FoldConstantsOptions {
    /// A node is not folded when its folded outputs would take more than this many bytes
    /// beyond the constants the fold frees (operands read by this node only).
    pub max_growth_bytes: u64,
    /// Never grow compressed constants: `DequantizeLinear` of constants and `Cast`s of
    /// constants from 16-bit floats or 8/4-bit integers to f32/f64 fold only when the result
    /// takes no more bytes than what it frees.
    pub keep_compressed: bool,
}

impl Default for FoldConstantsOptions {
    fn default() -> Self {
        FoldConstantsOptions {
            max_growth_bytes: DEFAULT_MAX_GROWTH,
            keep_compressed: true,
        }
    }
}

/// Default of [`FoldConstantsOptions::max_growth_bytes`]: 64 KiB.
pub const DEFAULT_MAX_GROWTH: u64 = 64 * 1024;

/// Constant folding and no-op forwarding.
///
/// **What it does.** In topological order, for each node of the top-level graph:
///
/// 1. *Forwarding.* A node that returns its first operand unchanged is bypassed: its readers
///    read the operand instead and the node is removed. These are `Identity`; `Dropout` in
///    inference mode (`training_mode` omitted or a constant false; `ratio` is then
///    irrelevant) whose `mask` output is absent or unread; `Cast` to the operand's own dtype
///    and `CastLike` between equal dtypes; `Reshape` by a constant shape that keeps every
///    extent (`0` copies, positive entries equal fixed extents, at most one `-1`); `Expand`
///    by a constant shape that is 1 or the fixed extent at every aligned position and adds no
///    dimension; `Transpose` by the identity permutation.
/// 2. *Folding.* A node whose present operands are all constants is evaluated with the
///    reference interpreter ([`pare_interp::eval_node`]) and its read outputs become
///    constants carrying the outputs' names. Never folded: nodes holding subgraphs
///    (If/Loop/Scan), custom ops without reference semantics, `Dropout` (random in training
///    mode; handled by forwarding otherwise), nodes without outputs, and nodes the
///    interpreter fails on (left for run time, with a note).
///
/// **Size rule.** A fold is skipped when the folded outputs would take more than
/// `max-growth-bytes` (default 64 KiB) more bytes than the constant operands it frees (those
/// read by this node only). This keeps `Expand`/`Tile`/`ConstantOfShape`/`Range` of small
/// constants from materializing large tensors. Compressed weights stay compressed whatever
/// their size (`keep-compressed`, default true): a `DequantizeLinear` or a `Cast` of
/// constants folds only when its result is no larger than the constants it frees, so a
/// quantized or f16 model keeps its small weights small after `canonicalize` (set
/// `keep-compressed=false` to let them fold within `max-growth-bytes`, as `pare compile`
/// does, which needs their f32 values anyway). When the output size cannot be
/// predicted from types, growth-prone ops (`Expand`, `Tile`, `ConstantOfShape`, `Range`,
/// `OneHot`, `Resize`, `Pad`) are skipped and other ops are evaluated and checked afterwards.
///
/// **Graph outputs.** Their names survive: a forwarded-away graph output moves its name to
/// the operand, and when the operand is a graph input, another graph output or a constant
/// the node is kept. A node whose folded output would be a graph output is kept too (the
/// exporter would have to rename a constant graph output).
///
/// **Guarantees.** Exact: folding runs the same reference kernels the interpreter runs, and
/// forwarding only bypasses nodes that return their operand bit for bit. Types of the new
/// constants are their tensors' static types; a fold whose result contradicts the declared
/// type of the output is skipped. Subgraphs are not entered (their captured operands are
/// rewired like any other use).
///
/// Reference: the constant folding of onnx-simplifier and onnxruntime's graph optimizers
/// (`ConstantFolding`, `EliminateIdentity`, `EliminateDropout`, no-op `Cast`/`Reshape`/
/// `Expand`/`Transpose` elimination).
#[derive(Clone, Debug, Default)]
pub struct FoldConstants {
    opts: FoldConstantsOptions,
}

impl FoldConstants {
    /// The pass with options.
    pub fn new(opts: FoldConstantsOptions) -> FoldConstants {
        FoldConstants { opts }
    }
}

const NAME: &str = "fold-constants";

impl Pass for FoldConstants {
    fn name(&self) -> &str {
        NAME
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let order = g
            .topo_order()
            .map_err(|e| PassError::failed(NAME, e.to_string()))?;
        let (mut forwarded, mut folded, mut skipped_large) = (0u64, 0u64, 0u64);
        let mut notes = Vec::new();
        for n in order {
            if g.node(n).is_dead() {
                continue;
            }
            if let Some((y, x)) = forward_target(g, n) {
                if forward(g, y, x) {
                    remove_if_dead(g, n);
                    forwarded += 1;
                    continue;
                }
            }
            let decompresses = decompresses(g, n);
            let growth = if self.opts.keep_compressed && decompresses {
                0
            } else {
                self.opts.max_growth_bytes
            };
            match try_fold(g, n, growth) {
                Fold::Done => folded += 1,
                Fold::TooLarge => skipped_large += 1,
                Fold::Failed(msg) => notes.push(format!(
                    "not folded: node '{}' ({}): {msg}",
                    node_label(g, n),
                    g.node(n).op.name()
                )),
                Fold::No => {}
            }
        }
        let mut r = PassReport::counted("folded", folded).with_stat("forwarded", forwarded);
        r.changed = folded + forwarded > 0;
        if skipped_large > 0 {
            r.add_stat("skipped-too-large", skipped_large);
        }
        r.notes = notes;
        Ok(r)
    }
}

fn node_label(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    if node.name.is_empty() {
        n.to_string()
    } else {
        node.name.clone()
    }
}

/// The (result, operand) pair of a node that returns its operand unchanged.
fn forward_target(g: &Graph, n: NodeId) -> Option<(ValueId, ValueId)> {
    let node = g.node(n);
    let x = node.input(0)?;
    let y = *node.outputs().first()?;
    let ok = match &node.op {
        Op::Identity => true,
        Op::Dropout(_) => {
            let mask_unread = node.outputs().get(1).is_none_or(|&m| g.uses(m).is_empty());
            let inference = match node.input(2) {
                None => true,
                Some(t) => g
                    .constant(t)
                    .and_then(Tensor::to_i64_vec)
                    .is_some_and(|v| v.len() == 1 && v[0] == 0),
            };
            mask_unread && inference
        }
        Op::Cast(a) => g.value(x).ty.dtype == Some(a.to),
        Op::CastLike(_) => {
            let other = node.input(1)?;
            let d = g.value(x).ty.dtype;
            d.is_some() && d == g.value(other).ty.dtype
        }
        Op::Reshape(a) => {
            let target = const_ints(g, node.input(1)?)?;
            reshape_is_identity(shape_of(g, x)?, &target, a.allowzero)
        }
        Op::Expand => {
            let target = const_ints(g, node.input(1)?)?;
            expand_is_identity(shape_of(g, x)?, &target)
        }
        Op::Transpose(a) => match &a.perm {
            Some(p) => p.iter().enumerate().all(|(i, &q)| q == i as i64),
            None => shape_of(g, x).is_some_and(|s| s.rank() <= 1),
        },
        _ => false,
    };
    ok.then_some((y, x))
}

enum Fold {
    Done,
    No,
    TooLarge,
    Failed(String),
}

/// Ops whose output can be much larger than their constant operands.
fn growth_prone(op: &Op) -> bool {
    matches!(
        op,
        Op::Expand
            | Op::Tile
            | Op::ConstantOfShape(_)
            | Op::Range
            | Op::OneHot(_)
            | Op::Resize(_)
            | Op::Pad(_)
    )
}

fn foldable(op: &Op) -> bool {
    match op {
        Op::Custom(c) => c.def.is_some(),
        Op::Dropout(_) => false,
        op => op.subgraphs().is_empty(),
    }
}

fn type_bytes(t: &TensorType) -> Option<u64> {
    let n = t.shape.as_ref()?.numel()?;
    let d = t.dtype?;
    if d == pare_ir::DType::String {
        return None;
    }
    Some(d.storage_bytes(n) as u64)
}

/// True when tensor `t` fits the declared type `ty` (known dtype and extents agree).
fn fits(t: &Tensor, ty: &TensorType) -> bool {
    if ty.dtype.is_some_and(|d| d != t.dtype()) {
        return false;
    }
    match &ty.shape {
        None => true,
        Some(s) => {
            s.rank() == t.shape().len()
                && s.0
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &e)| d.fixed().is_none_or(|f| f == e as u64))
        }
    }
}

/// True for the ops that expand a compressed weight: `DequantizeLinear`, and a `Cast` from a
/// narrow storage type (16-bit floats, 8- and 4-bit integers) to a wider float.
fn decompresses(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    match &node.op {
        Op::DequantizeLinear(_) => true,
        Op::Cast(a) => {
            let from = node.input(0).and_then(|v| g.value(v).ty.dtype);
            matches!(
                from,
                Some(DType::F16 | DType::BF16 | DType::I8 | DType::U8 | DType::I4 | DType::U4)
            ) && matches!(a.to, DType::F32 | DType::F64)
        }
        _ => false,
    }
}

fn try_fold(g: &mut Graph, n: NodeId, max_growth: u64) -> Fold {
    let node = g.node(n);
    if !foldable(&node.op) || node.outputs().is_empty() {
        return Fold::No;
    }
    let outs = node.outputs().to_vec();
    if outs.iter().all(|&o| g.uses(o).is_empty()) {
        return Fold::No; // dead: dce removes it
    }
    if outs.iter().any(|&o| is_graph_output(g, o)) {
        return Fold::No;
    }
    let mut consts: Vec<Option<Tensor>> = Vec::with_capacity(node.inputs().len());
    for v in node.inputs() {
        match v {
            None => consts.push(None),
            Some(v) => match g.constant(*v) {
                Some(t) => consts.push(Some(t.clone())),
                None => return Fold::No,
            },
        }
    }
    // Bytes freed: distinct constant operands read by this node only.
    let mut freed = 0u64;
    let mut seen: Vec<ValueId> = Vec::new();
    for v in node.inputs().iter().flatten() {
        if seen.contains(v) {
            continue;
        }
        seen.push(*v);
        let only_here = g
            .uses(*v)
            .iter()
            .all(|u| matches!(u, Use::Node { node, .. } if *node == n));
        if only_here {
            if let Some(t) = g.constant(*v) {
                freed += t.byte_len() as u64;
            }
        }
    }
    // Predicted size of the outputs that would become constants.
    let read: Vec<usize> = (0..outs.len())
        .filter(|&i| !g.uses(outs[i]).is_empty())
        .collect();
    let mut predicted: Option<u64> = read.iter().map(|&i| type_bytes(&g.value(outs[i]).ty)).sum();
    if predicted.is_none() {
        let types: Vec<Option<TensorType>> = node
            .inputs()
            .iter()
            .map(|v| v.map(|v| g.value(v).ty.clone()))
            .collect();
        let trefs: Vec<Option<&TensorType>> = types.iter().map(Option::as_ref).collect();
        let crefs: Vec<Option<&Tensor>> = consts.iter().map(Option::as_ref).collect();
        if let Ok(inferred) = pare_ir::infer::infer_node(&node.op, &trefs, &crefs, outs.len()) {
            predicted = read.iter().map(|&i| type_bytes(&inferred[i])).sum();
        }
    }
    match predicted {
        Some(p) if p > freed.saturating_add(max_growth) => return Fold::TooLarge,
        None if growth_prone(&node.op) => return Fold::No,
        _ => {}
    }
    // Evaluate.
    let values: Result<Vec<Option<Value>>, String> = consts
        .iter()
        .map(|c| c.as_ref().map(Value::from_tensor).transpose())
        .collect();
    let values = match values {
        Ok(v) => v,
        Err(e) => return Fold::Failed(e),
    };
    let refs: Vec<Option<&Value>> = values.iter().map(Option::as_ref).collect();
    let results = match eval_node(&node.op, &refs, outs.len()) {
        Ok(r) => r,
        Err(e) => return Fold::Failed(e),
    };
    if results.len() < outs.len() {
        return Fold::Failed(format!(
            "evaluation gave {} outputs, the node has {}",
            results.len(),
            outs.len()
        ));
    }
    let mut tensors = Vec::with_capacity(read.len());
    let mut total = 0u64;
    for &i in &read {
        let t = results[i].to_tensor();
        if !fits(&t, &g.value(outs[i]).ty) {
            return Fold::Failed(format!(
                "result {}{:?} contradicts the declared type {}",
                t.dtype(),
                t.shape(),
                g.value(outs[i]).ty
            ));
        }
        total += t.byte_len() as u64;
        tensors.push((outs[i], t));
    }
    if total > freed.saturating_add(max_growth) {
        return Fold::TooLarge;
    }
    for (o, t) in tensors {
        let c = g.add_const(g.value(o).name.clone(), t);
        g.replace_all_uses(o, c);
    }
    remove_if_dead(g, n);
    Fold::Done
}
