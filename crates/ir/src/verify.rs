//! The verifier: structural invariants of a graph.
//!
//! Checked, recursively into subgraphs:
//! - every operand, output, graph input and graph output names a live value of this graph;
//! - use-lists list exactly the (node, operand) pairs and graph-output slots that read each
//!   value, and each value's definition agrees with the node, input slot or constant holding it;
//! - the graph is acyclic;
//! - each node's operand and result counts are within its op's [`arity`], and required operands
//!   are present;
//! - If branches, Loop and Scan bodies have the inputs and outputs their node implies;
//! - cheap attribute sanity (positive kernels and strides, `group >= 1`, valid enum strings, …).

use crate::op::ConvAttrs;
use crate::{Graph, NodeId, Op, Use, ValueDef, ValueId};
use std::collections::HashSet;

/// A verifier finding, naming where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {msg}")]
pub struct VerifyError {
    /// Node or value description.
    pub at: String,
    /// What is wrong.
    pub msg: String,
}

/// Unbounded arity.
pub const VARIADIC: usize = usize::MAX;

/// `(min inputs, max inputs, min outputs, max outputs)` of an op, per its latest ONNX
/// definition (inputs count operand slots, omitted optional ones included; captured outer
/// values of If/Loop/Scan are operands). [`VARIADIC`] means unbounded.
pub fn arity(op: &Op) -> (usize, usize, usize, usize) {
    use Op::*;
    const V: usize = VARIADIC;
    match op {
        Abs | Acos | Acosh | Asin | Asinh | Atan | Atanh | Ceil | Cos | Cosh | Erf | Exp
        | Floor | Identity | IsNaN | Log | Neg | Not | Reciprocal | Relu | Round | Sigmoid
        | Sign | Sin | Sinh | Softplus | Softsign | Sqrt | Tan | Tanh | BitwiseNot | Mish
        | HardSwish | Elu(_) | Celu(_) | ThresholdedRelu(_) | LeakyRelu(_) | Selu(_)
        | HardSigmoid(_) | Gelu(_) | IsInf(_) | Shrink(_) | Cast(_) => (1, 1, 1, 1),
        Clip => (1, 3, 1, 1),
        CastLike(_) => (2, 2, 1, 1),
        Dropout(_) => (1, 3, 1, 2),
        Add | Sub | Mul | Div | Pow | Mod(_) | And | Or | Xor | Equal | Greater
        | GreaterOrEqual | Less | LessOrEqual | BitShift(_) | BitwiseAnd | BitwiseOr
        | BitwiseXor | PRelu => (2, 2, 1, 1),
        Where => (3, 3, 1, 1),
        Max | Min | Mean | Sum => (1, V, 1, 1),
        MatMul => (2, 2, 1, 1),
        Gemm(_) => (2, 3, 1, 1),
        Einsum(_) => (1, V, 1, 1),
        Det => (1, 1, 1, 1),
        MatMulInteger => (2, 4, 1, 1),
        QLinearMatMul => (8, 8, 1, 1),
        Conv(_) | ConvTranspose(_) => (2, 3, 1, 1),
        ConvInteger(_) => (2, 4, 1, 1),
        QLinearConv(_) => (8, 9, 1, 1),
        AveragePool(_) | LpPool(_) => (1, 1, 1, 1),
        MaxPool(_) => (1, 1, 1, 2),
        GlobalAveragePool | GlobalMaxPool | GlobalLpPool(_) => (1, 1, 1, 1),
        BatchNormalization(_) => (5, 5, 1, 3),
        InstanceNormalization(_) | GroupNormalization(_) => (3, 3, 1, 1),
        LayerNormalization(_) => (2, 3, 1, 3),
        LpNormalization(_) | Lrn(_) | MeanVarianceNormalization(_) => (1, 1, 1, 1),
        Resize(_) => (1, 4, 1, 1),
        Pad(_) => (2, 4, 1, 1),
        DepthToSpace(_) | SpaceToDepth(_) => (1, 1, 1, 1),
        ReduceSum(_) | ReduceMean(_) | ReduceMax(_) | ReduceMin(_) | ReduceProd(_)
        | ReduceL1(_) | ReduceL2(_) | ReduceLogSum(_) | ReduceLogSumExp(_) | ReduceSumSquare(_) => {
            (1, 2, 1, 1)
        }
        ArgMax(_) | ArgMin(_) => (1, 1, 1, 1),
        Softmax(_) | LogSoftmax(_) | Hardmax(_) => (1, 1, 1, 1),
        Attention(_) => (3, 7, 1, 4),
        Reshape(_) => (2, 2, 1, 1),
        Transpose(_) | Flatten(_) => (1, 1, 1, 1),
        Squeeze => (1, 2, 1, 1),
        Unsqueeze => (2, 2, 1, 1),
        Concat(_) => (1, V, 1, 1),
        Split(_) => (1, 2, 1, V),
        Slice => (3, 5, 1, 1),
        Gather(_) | GatherElements(_) | GatherNd(_) => (2, 2, 1, 1),
        ScatterNd(_) | ScatterElements(_) => (3, 3, 1, 1),
        Expand | Tile => (2, 2, 1, 1),
        Shape(_) | Size => (1, 1, 1, 1),
        ConstantOfShape(_) => (1, 1, 1, 1),
        Range => (3, 3, 1, 1),
        NonZero => (1, 1, 1, 1),
        TopK(_) => (2, 2, 2, 2),
        CumSum(_) => (2, 2, 1, 1),
        Trilu(_) => (1, 2, 1, 1),
        OneHot(_) => (3, 3, 1, 1),
        Compress(_) => (2, 2, 1, 1),
        ReverseSequence(_) => (2, 2, 1, 1),
        EyeLike(_) => (1, 1, 1, 1),
        NonMaxSuppression(_) => (2, 5, 1, 1),
        Rnn(_) | Gru(_) => (3, 6, 0, 2),
        Lstm(_) => (3, 8, 0, 3),
        If(_) => (1, V, 1, V),
        Loop(_) => (2, V, 1, V),
        Scan(_) => (1, V, 1, V),
        QuantizeLinear(_) | DequantizeLinear(_) => (2, 3, 1, 1),
        DynamicQuantizeLinear => (1, 1, 3, 3),
        Custom(_) => (0, V, 0, V),
    }
}

/// Operand positions below `min inputs` that may nevertheless be omitted.
fn optional_below_min(op: &Op, i: usize) -> bool {
    // Loop's trip count and condition are both optional.
    matches!(op, Op::Loop(_)) && i < 2
}

/// Checks a graph's invariants; returns the first violation.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    match verify_all(g).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Checks a graph's invariants; returns every violation found.
pub fn verify_all(g: &Graph) -> Vec<VerifyError> {
    let mut v = Verifier {
        out: Vec::new(),
        prefix: String::new(),
    };
    v.graph(g);
    v.out
}

struct Verifier {
    out: Vec<VerifyError>,
    prefix: String,
}

fn node_desc(g: &Graph, n: NodeId) -> String {
    let node = g.node(n);
    if node.name.is_empty() {
        format!("{n} ({})", node.op.name())
    } else {
        format!("node '{}' ({})", node.name, node.op.name())
    }
}

fn value_desc(g: &Graph, v: ValueId) -> String {
    if v.index() >= g.value_capacity() {
        return format!("{v} (out of range)");
    }
    format!("value '{}' ({v})", g.value(v).name)
}

fn valid_value(g: &Graph, v: ValueId) -> bool {
    v.index() < g.value_capacity()
}

fn valid_node(g: &Graph, n: NodeId) -> bool {
    n.index() < g.node_capacity()
}

impl Verifier {
    fn err(&mut self, at: String, msg: impl Into<String>) {
        self.out.push(VerifyError {
            at: format!("{}{at}", self.prefix),
            msg: msg.into(),
        });
    }

    fn graph(&mut self, g: &Graph) {
        let before = self.out.len();
        let uses = self.values(g);
        self.io(g, &uses);
        let ids: Vec<NodeId> = g.node_ids().collect();
        for &n in &ids {
            self.node_links(g, n, &uses);
        }
        // Ordering walks the use-lists: only sound when they are.
        let linked = self.out.len() == before;
        for &n in &ids {
            self.node_rest(g, n);
        }
        if linked {
            if let Err(e) = g.topo_order() {
                let at = if g.name.is_empty() {
                    "graph".to_string()
                } else {
                    format!("graph '{}'", g.name)
                };
                self.err(at, e.to_string());
            }
        }
        self.const_types(g);
    }

    /// Checks definitions and use-lists; returns every (value, use) pair listed.
    fn values(&mut self, g: &Graph) -> HashSet<(ValueId, Use)> {
        let mut all = HashSet::new();
        for i in 0..g.value_capacity() {
            let v = ValueId(i as u32);
            let val = g.value(v);
            match val.def() {
                ValueDef::Input(k) => {
                    if g.inputs().get(*k) != Some(&v) {
                        self.err(
                            value_desc(g, v),
                            format!("defined as graph input {k}, but that input is another value"),
                        );
                    }
                }
                ValueDef::Node { node, index } => {
                    if !valid_node(g, *node) {
                        self.err(
                            value_desc(g, v),
                            format!("defined by {node}, which does not exist"),
                        );
                    } else if g.node(*node).is_dead() {
                        self.err(value_desc(g, v), format!("defined by removed node {node}"));
                    } else if g.node(*node).outputs().get(*index) != Some(&v) {
                        self.err(
                            value_desc(g, v),
                            format!(
                                "defined as output {index} of {}, which does not hold it",
                                node_desc(g, *node)
                            ),
                        );
                    }
                }
                ValueDef::Const(_) => {}
                ValueDef::Dead => {
                    if !val.uses().is_empty() {
                        self.err(
                            value_desc(g, v),
                            format!("removed value still has {} reader(s)", val.uses().len()),
                        );
                    }
                    continue;
                }
            }
            for u in val.uses() {
                if !all.insert((v, *u)) {
                    self.err(value_desc(g, v), format!("use {u:?} is listed twice"));
                    continue;
                }
                match *u {
                    Use::Node { node, operand } => {
                        let ok = valid_node(g, node)
                            && !g.node(node).is_dead()
                            && g.node(node).inputs().get(operand) == Some(&Some(v));
                        if !ok {
                            self.err(
                                value_desc(g, v),
                                format!("use-list names operand {operand} of {node}, which does not read it"),
                            );
                        }
                    }
                    Use::Output(k) => {
                        if g.outputs().get(k) != Some(&v) {
                            self.err(
                                value_desc(g, v),
                                format!("use-list names graph output {k}, which is another value"),
                            );
                        }
                    }
                }
            }
        }
        all
    }

    /// Constants' recorded types agree with their tensors.
    fn const_types(&mut self, g: &Graph) {
        for (v, t) in g.constants() {
            let val = g.value(v);
            if val.ty.dtype.is_some_and(|d| d != t.dtype())
                || val
                    .ty
                    .shape
                    .as_ref()
                    .is_some_and(|s| s.as_fixed().as_deref() != Some(t.shape()))
            {
                self.err(
                    value_desc(g, v),
                    format!(
                        "constant of {}{:?} has type {}",
                        t.dtype(),
                        t.shape(),
                        val.ty
                    ),
                );
            }
        }
    }

    fn io(&mut self, g: &Graph, uses: &HashSet<(ValueId, Use)>) {
        for (k, &v) in g.inputs().iter().enumerate() {
            if !valid_value(g, v) {
                self.err(format!("graph input {k}"), format!("{v} does not exist"));
            } else if *g.value(v).def() != ValueDef::Input(k) {
                self.err(
                    value_desc(g, v),
                    format!(
                        "is graph input {k} but its definition is {:?}",
                        def_kind(g.value(v).def())
                    ),
                );
            }
        }
        for (k, &v) in g.outputs().iter().enumerate() {
            if !valid_value(g, v) {
                self.err(format!("graph output {k}"), format!("{v} does not exist"));
            } else if *g.value(v).def() == ValueDef::Dead {
                self.err(
                    format!("graph output {k}"),
                    format!("{} is a removed value", value_desc(g, v)),
                );
            } else if !uses.contains(&(v, Use::Output(k))) {
                self.err(
                    value_desc(g, v),
                    format!("is graph output {k} but missing from its use-list"),
                );
            }
        }
    }

    /// Operand and result links of a node.
    fn node_links(&mut self, g: &Graph, n: NodeId, uses: &HashSet<(ValueId, Use)>) {
        let node = g.node(n);
        let at = node_desc(g, n);
        for (i, v) in node.inputs().iter().enumerate() {
            let Some(v) = *v else { continue };
            if !valid_value(g, v) {
                self.err(
                    at.clone(),
                    format!("operand {i} reads {v}, which does not exist"),
                );
            } else if *g.value(v).def() == ValueDef::Dead {
                self.err(
                    at.clone(),
                    format!("operand {i} reads removed {}", value_desc(g, v)),
                );
            } else if !uses.contains(&(
                v,
                Use::Node {
                    node: n,
                    operand: i,
                },
            )) {
                self.err(
                    at.clone(),
                    format!(
                        "operand {i} reads {} but is missing from its use-list",
                        value_desc(g, v)
                    ),
                );
            }
        }
        for (k, &o) in node.outputs().iter().enumerate() {
            if !valid_value(g, o) {
                self.err(
                    at.clone(),
                    format!("output {k} is {o}, which does not exist"),
                );
            } else if *g.value(o).def() != (ValueDef::Node { node: n, index: k }) {
                self.err(
                    at.clone(),
                    format!(
                        "output {k} is {} whose definition is {}",
                        value_desc(g, o),
                        def_kind(g.value(o).def())
                    ),
                );
            }
        }
    }

    /// Arity, attributes and subgraphs of a node.
    fn node_rest(&mut self, g: &Graph, n: NodeId) {
        let node = g.node(n);
        let at = node_desc(g, n);
        self.arity(g, n, &at);
        if let Err(msg) = attr_check(&node.op, node.inputs().len(), node.outputs().len()) {
            self.err(at.clone(), msg);
        }
        self.subgraphs(g, n, &at);
    }

    fn arity(&mut self, g: &Graph, n: NodeId, at: &str) {
        let node = g.node(n);
        let (min_in, max_in, min_out, max_out) = arity(&node.op);
        let given = node
            .inputs()
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |p| p + 1);
        let slots = node.inputs().len();
        let bound = |m: usize| {
            if m == VARIADIC {
                "any number".to_string()
            } else {
                m.to_string()
            }
        };
        if slots < min_in {
            self.err(
                at.into(),
                format!("has {slots} operand(s), needs at least {min_in}"),
            );
        } else if given > max_in {
            self.err(
                at.into(),
                format!("has {given} operand(s), accepts at most {}", bound(max_in)),
            );
        }
        for i in 0..min_in.min(slots) {
            if node.inputs()[i].is_none() && !optional_below_min(&node.op, i) {
                self.err(at.into(), format!("required operand {i} is omitted"));
            }
        }
        // Captured values and loop state are never omitted.
        if matches!(node.op, Op::If(_) | Op::Scan(_) | Op::Loop(_)) {
            let first = if matches!(node.op, Op::Loop(_)) { 2 } else { 0 };
            if let Some(i) = (first..slots).find(|&i| node.inputs()[i].is_none()) {
                self.err(
                    at.into(),
                    format!(
                        "operand {i} is omitted, but {} operands are required",
                        node.op.name()
                    ),
                );
            }
        }
        let outs = node.outputs().len();
        if outs < min_out || outs > max_out {
            let want = if min_out == max_out {
                format!("{min_out}")
            } else {
                format!("{min_out} to {}", bound(max_out))
            };
            self.err(at.into(), format!("has {outs} result(s), expected {want}"));
        }
    }

    fn subgraphs(&mut self, g: &Graph, n: NodeId, at: &str) {
        let node = g.node(n);
        let nops = node.inputs().len();
        let nout = node.outputs().len();
        let mut sub: Vec<(&str, &Graph)> = Vec::new();
        match &node.op {
            Op::If(a) => {
                let (t, e) = (&a.then_branch, &a.else_branch);
                if t.outputs().len() != e.outputs().len() {
                    self.err(
                        at.into(),
                        format!(
                            "then_branch has {} outputs but else_branch has {}",
                            t.outputs().len(),
                            e.outputs().len()
                        ),
                    );
                }
                for (name, b) in [("then_branch", t), ("else_branch", e)] {
                    if b.outputs().len() != nout {
                        self.err(
                            at.into(),
                            format!(
                                "{name} has {} outputs, the node has {nout}",
                                b.outputs().len()
                            ),
                        );
                    }
                    if b.inputs().len() + 1 != nops {
                        self.err(
                            at.into(),
                            format!(
                                "{name} has {} inputs, but the node captures {} value(s)",
                                b.inputs().len(),
                                nops.saturating_sub(1)
                            ),
                        );
                    }
                }
                sub.push(("then_branch", t));
                sub.push(("else_branch", e));
            }
            Op::Loop(a) => {
                if a.body.inputs().len() != nops {
                    self.err(
                        at.into(),
                        format!(
                            "body has {} inputs, expected {nops} (iteration, condition, {} carried/captured)",
                            a.body.inputs().len(),
                            nops.saturating_sub(2)
                        ),
                    );
                }
                if a.body.outputs().len() != nout + 1 {
                    self.err(
                        at.into(),
                        format!(
                            "body has {} outputs, expected {} (condition, then the node's {nout} results)",
                            a.body.outputs().len(),
                            nout + 1
                        ),
                    );
                }
                if a.body.inputs().len() == nops {
                    if let Err(m) = crate::infer::state_count(&a.body, 2, 0, nops, nout) {
                        self.err(at.into(), format!("body: {m}"));
                    }
                }
                sub.push(("body", &a.body));
            }
            Op::Scan(a) => {
                if a.num_scan_inputs < 1 || a.num_scan_inputs as usize > nops {
                    self.err(
                        at.into(),
                        format!("num_scan_inputs {} is not in 1..={nops}", a.num_scan_inputs),
                    );
                }
                if a.body.inputs().len() != nops {
                    self.err(
                        at.into(),
                        format!(
                            "body has {} inputs, the node has {nops} operands",
                            a.body.inputs().len()
                        ),
                    );
                }
                if a.body.outputs().len() != nout {
                    self.err(
                        at.into(),
                        format!(
                            "body has {} outputs, the node has {nout} results",
                            a.body.outputs().len()
                        ),
                    );
                }
                if let Some(ax) = &a.scan_input_axes {
                    if ax.len() as i64 != a.num_scan_inputs {
                        self.err(
                            at.into(),
                            format!(
                                "scan_input_axes has {} entries for {} scan inputs",
                                ax.len(),
                                a.num_scan_inputs
                            ),
                        );
                    }
                }
                let m = usize::try_from(a.num_scan_inputs).unwrap_or(0);
                if a.body.inputs().len() == nops && (1..=nops).contains(&m) {
                    match crate::infer::state_count(&a.body, 0, m, nops, nout) {
                        Err(msg) => self.err(at.into(), format!("body: {msg}")),
                        Ok(n) => {
                            if let Some(ax) = &a.scan_output_axes {
                                if ax.len() != nout - n {
                                    self.err(
                                        at.into(),
                                        format!(
                                            "scan_output_axes has {} entries for {} scan outputs",
                                            ax.len(),
                                            nout - n
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
                sub.push(("body", &a.body));
            }
            _ => {}
        }
        for (name, sg) in sub {
            let inner = format!("{}in {name} of {at}: ", self.prefix);
            let saved = std::mem::replace(&mut self.prefix, inner);
            self.graph(sg);
            self.prefix = saved;
        }
    }
}

fn def_kind(d: &ValueDef) -> String {
    match d {
        ValueDef::Input(k) => format!("graph input {k}"),
        ValueDef::Const(_) => "a constant".into(),
        ValueDef::Node { node, index } => format!("output {index} of {node}"),
        ValueDef::Dead => "removed".into(),
    }
}

fn positive(name: &str, v: &Option<Vec<i64>>, min: i64) -> Result<(), String> {
    if let Some(v) = v {
        if let Some(x) = v.iter().find(|&&x| x < min) {
            return Err(format!("{name} {v:?} has entry {x} below {min}"));
        }
    }
    Ok(())
}

fn one_of(name: &str, v: &str, ok: &[&str]) -> Result<(), String> {
    if ok.contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} '{v}' is not one of {}", ok.join(", ")))
    }
}

const AUTO_PAD: &[&str] = &["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"];

fn window_check(
    kernel: Option<&[i64]>,
    auto_pad: &str,
    strides: &Option<Vec<i64>>,
    dilations: &Option<Vec<i64>>,
    pads: &Option<Vec<i64>>,
) -> Result<(), String> {
    one_of("auto_pad", auto_pad, AUTO_PAD)?;
    if let Some(k) = kernel {
        if let Some(x) = k.iter().find(|&&x| x < 1) {
            return Err(format!("kernel_shape {k:?} has non-positive extent {x}"));
        }
    }
    positive("strides", strides, 1)?;
    positive("dilations", dilations, 1)?;
    positive("pads", pads, 0)?;
    let n = kernel.map(<[i64]>::len);
    if let Some(n) = n {
        for (name, v, want) in [
            ("strides", strides, n),
            ("dilations", dilations, n),
            ("pads", pads, 2 * n),
        ] {
            if let Some(v) = v {
                if v.len() != want {
                    return Err(format!(
                        "{name} {v:?} has {} entries, expected {want}",
                        v.len()
                    ));
                }
            }
        }
    } else if let Some(p) = pads {
        if p.len() % 2 != 0 {
            return Err(format!("pads {p:?} has an odd number of entries"));
        }
    }
    Ok(())
}

fn conv_check(a: &ConvAttrs) -> Result<(), String> {
    if a.group < 1 {
        return Err(format!("group {} must be >= 1", a.group));
    }
    window_check(
        a.kernel_shape.as_deref(),
        &a.auto_pad,
        &a.strides,
        &a.dilations,
        &a.pads,
    )
}

/// Cheap attribute sanity checks of one op.
fn attr_check(op: &Op, num_inputs: usize, num_outputs: usize) -> Result<(), String> {
    use Op::*;
    match op {
        Conv(a) | ConvInteger(a) | QLinearConv(a) => conv_check(a),
        ConvTranspose(a) => {
            if a.group < 1 {
                return Err(format!("group {} must be >= 1", a.group));
            }
            positive("output_padding", &a.output_padding, 0)?;
            positive("output_shape", &a.output_shape, 0)?;
            window_check(
                a.kernel_shape.as_deref(),
                &a.auto_pad,
                &a.strides,
                &a.dilations,
                &a.pads,
            )
        }
        AveragePool(a) | MaxPool(a) | LpPool(a) => {
            if a.kernel_shape.is_empty() {
                return Err("kernel_shape is required".into());
            }
            if !matches!(a.storage_order, 0 | 1) {
                return Err(format!("storage_order {} must be 0 or 1", a.storage_order));
            }
            if matches!(op, LpPool(_)) && a.p < 1 {
                return Err(format!("p {} must be >= 1", a.p));
            }
            window_check(
                Some(&a.kernel_shape),
                &a.auto_pad,
                &a.strides,
                &a.dilations,
                &a.pads,
            )
        }
        Gelu(a) => one_of("approximate", &a.approximate, &["none", "tanh"]),
        BitShift(a) => one_of("direction", &a.direction, &["LEFT", "RIGHT"]),
        Einsum(a) => crate::infer::check_einsum(&a.equation, num_inputs),
        Resize(a) => {
            one_of("mode", &a.mode, &["nearest", "linear", "cubic"])?;
            one_of(
                "coordinate_transformation_mode",
                &a.coordinate_transformation_mode,
                &[
                    "half_pixel",
                    "half_pixel_symmetric",
                    "pytorch_half_pixel",
                    "align_corners",
                    "asymmetric",
                    "tf_crop_and_resize",
                ],
            )?;
            one_of(
                "nearest_mode",
                &a.nearest_mode,
                &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"],
            )?;
            one_of(
                "keep_aspect_ratio_policy",
                &a.keep_aspect_ratio_policy,
                &["stretch", "not_larger", "not_smaller"],
            )
        }
        Pad(a) => one_of("mode", &a.mode, &["constant", "reflect", "edge", "wrap"]),
        DepthToSpace(a) => {
            if a.blocksize < 1 {
                return Err(format!("blocksize {} must be >= 1", a.blocksize));
            }
            one_of("mode", &a.mode, &["DCR", "CRD"])
        }
        SpaceToDepth(a) if a.blocksize < 1 => {
            Err(format!("blocksize {} must be >= 1", a.blocksize))
        }
        Rnn(a) | Gru(a) | Lstm(a) => {
            crate::infer::rnn_directions(&a.direction)?;
            if !matches!(a.layout, 0 | 1) {
                return Err(format!("layout {} must be 0 or 1", a.layout));
            }
            match a.hidden_size {
                Some(h) if h < 1 => Err(format!("hidden_size {h} must be positive")),
                _ => Ok(()),
            }
        }
        Lrn(a) if a.size < 1 => Err(format!("size {} must be >= 1", a.size)),
        GroupNormalization(a) if a.num_groups < 1 => {
            Err(format!("num_groups {} must be >= 1", a.num_groups))
        }
        Split(a) => match a.num_outputs {
            Some(k) if k < 1 || k as usize != num_outputs => Err(format!(
                "num_outputs is {k} but the node has {num_outputs} results"
            )),
            _ => Ok(()),
        },
        Transpose(a) => match &a.perm {
            Some(p) => {
                let mut seen = vec![false; p.len()];
                for &x in p {
                    match usize::try_from(x).ok().filter(|&x| x < p.len()) {
                        Some(x) if !seen[x] => seen[x] = true,
                        _ => return Err(format!("perm {p:?} is not a permutation")),
                    }
                }
                Ok(())
            }
            None => Ok(()),
        },
        ScatterNd(a) => one_of(
            "reduction",
            &a.reduction,
            &["none", "add", "mul", "max", "min"],
        ),
        ScatterElements(a) => one_of(
            "reduction",
            &a.reduction,
            &["none", "add", "mul", "max", "min"],
        ),
        ConstantOfShape(a) => match &a.value {
            Some(t) if t.numel() != 1 => {
                Err(format!("value must have one element, has {}", t.numel()))
            }
            _ => Ok(()),
        },
        QuantizeLinear(a) => {
            if a.output_dtype != 0 && crate::onnx_dtype(a.output_dtype as i32).is_none() {
                return Err(format!(
                    "output_dtype {} is not a known data type",
                    a.output_dtype
                ));
            }
            if a.block_size < 0 {
                return Err(format!("block_size {} is negative", a.block_size));
            }
            Ok(())
        }
        Attention(a) => {
            if !(0..=3).contains(&a.qk_matmul_output_mode) {
                return Err(format!(
                    "qk_matmul_output_mode {} must be 0, 1, 2 or 3",
                    a.qk_matmul_output_mode
                ));
            }
            for (name, h) in [
                ("q_num_heads", a.q_num_heads),
                ("kv_num_heads", a.kv_num_heads),
            ] {
                if let Some(h) = h.filter(|&h| h < 1) {
                    return Err(format!("{name} {h} must be >= 1"));
                }
            }
            if let (Some(q), Some(kv)) = (a.q_num_heads, a.kv_num_heads) {
                if kv >= 1 && q % kv != 0 {
                    return Err(format!(
                        "q_num_heads {q} is not a multiple of kv_num_heads {kv}"
                    ));
                }
            }
            match a.softmax_precision {
                Some(p) if !matches!(p, 1 | 10 | 11 | 16) => Err(format!(
                    "softmax_precision {p} is not a float data type (1, 10, 11 or 16)"
                )),
                _ => Ok(()),
            }
        }
        DequantizeLinear(a) if a.block_size < 0 => {
            Err(format!("block_size {} is negative", a.block_size))
        }
        Custom(c) => match &c.def {
            Some(def) => def.verify(&c.attrs, num_inputs),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}
