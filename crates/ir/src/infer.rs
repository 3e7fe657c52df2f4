//! Type and shape inference for every core op.
//!
//! [`infer_node`] is the pure per-node rule: output types from input types and whatever input
//! values are known at compile time. [`infer_types`] runs it over a graph in topological order,
//! tracks small integer values through shape computations (`Shape → Gather → Concat →
//! Reshape` keeps symbolic dims), infers subgraphs of If/Loop/Scan in place, and merges each
//! result with the type a value already has (from ONNX `value_info` or an earlier run): known
//! information is kept and a contradiction (`Fixed a` vs `Fixed b`, two dtypes) is an error.
//!
//! Each op follows its ONNX opset-23 definition. Where a shape depends on values that are not
//! known, the rank is still given with unknown extents where possible; where even the rank
//! depends on them, the shape is unknown. Results are sound: a symbol survives broadcasting only
//! against itself or 1, and extents that would need expressions (`N + 2`, `min(S, 512)`) are
//! unknown.
//!
//! Subgraphs see the constant and tracked values of the outer values they capture. A branch of
//! an If whose shapes cannot work (function expansions contain such dead branches) does not fail
//! inference when the other branch works: the outputs come from the branch that can run, or from
//! the taken one when the condition is known.

mod attention;
mod control;
mod conv;
mod ctx;
mod elementwise;
mod linalg;
mod rnn;
mod shape_ops;
mod values;

use crate::{Dim, Graph, Op, Shape, Tensor, TensorType, ValueId};
use ctx::Ctx;
pub use ctx::SV;
use std::collections::HashMap;
pub use values::slice_indices;

/// Why inference failed, naming the node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node '{node}' ({op}): {msg}")]
pub struct InferError {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op: String,
    /// What is wrong.
    pub msg: String,
}

/// Output types of one node from its input types (`None`: omitted optional input) and the
/// values of inputs known at compile time (`None`: not known).
///
/// Returns exactly `num_outputs` types. If/Loop/Scan infer a copy of their subgraphs; use
/// [`infer_types`] to type the subgraphs in place.
pub fn infer_node(
    op: &Op,
    inputs: &[Option<&TensorType>],
    const_inputs: &[Option<&Tensor>],
    num_outputs: usize,
) -> Result<Vec<TensorType>, String> {
    let cx = Ctx::new(inputs, const_inputs, Vec::new(), num_outputs);
    let out = if op.subgraphs().is_empty() {
        infer_op(op, &cx)?
    } else {
        let mut op = op.clone();
        control::infer_control(&mut op, &cx)?
    };
    Ok(fit(out, num_outputs))
}

fn fit(mut out: Vec<TensorType>, n: usize) -> Vec<TensorType> {
    out.truncate(n);
    out.resize(n, TensorType::UNKNOWN);
    out
}

/// Merges the type a value already has with an inferred one: known dtype and extents are kept
/// (fixed over symbolic over unknown), and a contradiction is an error. Of two different
/// symbols the inferred one wins: it comes from the graph inputs, so it relates the value to
/// them, where exporters often declare intermediate values with made-up names.
pub fn merge_type(existing: &TensorType, inferred: &TensorType) -> Result<TensorType, String> {
    let dtype = match (existing.dtype, inferred.dtype) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("declared {existing} but inferred {inferred}"))
        }
        (a, b) => a.or(b),
    };
    let shape = match (&existing.shape, &inferred.shape) {
        (Some(a), Some(b)) => {
            if a.rank() != b.rank() {
                return Err(format!(
                    "declared {existing} but inferred {inferred} (rank differs)"
                ));
            }
            let mut v = Vec::with_capacity(a.rank());
            for (x, y) in a.0.iter().zip(&b.0) {
                v.push(match (x, y) {
                    (Dim::Fixed(p), Dim::Fixed(q)) if p != q => {
                        return Err(format!("declared {existing} but inferred {inferred}"))
                    }
                    (Dim::Fixed(_), _) => x.clone(),
                    (_, Dim::Fixed(_)) => y.clone(),
                    (Dim::Sym(_), Dim::Sym(_)) => y.clone(),
                    (Dim::Sym(_), _) => x.clone(),
                    (_, y) => y.clone(),
                });
            }
            Some(Shape(v))
        }
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    Ok(TensorType { dtype, shape })
}

/// Infers dtypes and shapes of every node output, in topological order, subgraphs included.
/// Types already present are merged with the inferred ones (see [`merge_type`]).
pub fn infer_types(g: &mut Graph) -> Result<(), InferError> {
    infer_graph(g, &[])
}

/// What is known about the value of a subgraph input that captures an outer value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seed {
    /// The outer value, when it is a constant.
    pub konst: Option<Tensor>,
    /// Its tracked integer elements.
    pub vals: Option<Vec<SV>>,
}

/// The integer elements that inference tracks at compile time (through `Shape`, `Gather`,
/// `Concat`, `Slice`, arithmetic, ...) for each top-level node output that has them: integer
/// or boolean values with a static shape of at most 1024 elements, in row-major order.
/// Inference runs on a copy of `g`, which is left unchanged.
pub fn tracked_values(g: &Graph) -> Result<HashMap<ValueId, Vec<SV>>, InferError> {
    infer_graph_tracked(&mut g.clone(), &[])
}

/// [`infer_types`] with known values for some graph inputs (captured outer values).
pub(crate) fn infer_graph(g: &mut Graph, seeds: &[(ValueId, Seed)]) -> Result<(), InferError> {
    infer_graph_tracked(g, seeds).map(|_| ())
}

/// [`infer_graph`], returning the tracked values of the graph's node outputs.
fn infer_graph_tracked(
    g: &mut Graph,
    seeds: &[(ValueId, Seed)],
) -> Result<HashMap<ValueId, Vec<SV>>, InferError> {
    let order = g.topo_order().map_err(|e| InferError {
        node: e.first.clone(),
        op: String::new(),
        msg: e.to_string(),
    })?;
    let mut vals: HashMap<ValueId, Vec<SV>> = HashMap::new();
    let mut seeded: HashMap<ValueId, Tensor> = HashMap::new();
    for (v, seed) in seeds {
        if let Some(t) = &seed.konst {
            seeded.insert(*v, t.clone());
        }
        if let Some(x) = &seed.vals {
            vals.insert(*v, x.clone());
        }
    }
    for n in order {
        let node = g.node(n);
        let name = node.name.clone();
        let op_name = node.op.name().to_string();
        let err = |msg: String| InferError {
            node: name.clone(),
            op: op_name.clone(),
            msg,
        };
        let ins: Vec<Option<ValueId>> = node.inputs().to_vec();
        let outs: Vec<ValueId> = node.outputs().to_vec();
        let types: Vec<Option<TensorType>> = ins
            .iter()
            .map(|v| v.map(|v| g.value(v).ty.clone()))
            .collect();
        let consts: Vec<Option<Tensor>> = ins
            .iter()
            .map(|v| v.and_then(|v| g.constant(v).or_else(|| seeded.get(&v)).cloned()))
            .collect();
        let tvals: Vec<Option<Vec<SV>>> = ins
            .iter()
            .map(|v| v.and_then(|v| vals.get(&v).cloned()))
            .collect();
        let type_refs: Vec<Option<&TensorType>> = types.iter().map(Option::as_ref).collect();
        let const_refs: Vec<Option<&Tensor>> = consts.iter().map(Option::as_ref).collect();
        let cx = Ctx::new(&type_refs, &const_refs, tvals, outs.len());
        let inferred = if node.op.subgraphs().is_empty() {
            infer_op(&node.op, &cx).map_err(err)?
        } else {
            control::infer_control(g.op_mut(n), &cx).map_err(err)?
        };
        let inferred = fit(inferred, outs.len());
        let pv = values::propagate(&g.node(n).op, &cx, &inferred);
        for (i, (&o, t)) in outs.iter().zip(&inferred).enumerate() {
            let merged = merge_type(&g.value(o).ty, t)
                .map_err(|e| err(format!("output {i} '{}': {e}", g.value(o).name)))?;
            g.set_type(o, merged);
            if let Some(Some(v)) = pv.get(i) {
                vals.insert(o, v.clone());
            }
        }
    }
    Ok(vals)
}

/// Forgets the types of node outputs (and of subgraph inputs), then runs [`infer_types`]:
/// for re-typing a graph after an edit changed shapes, where merging with stale types would
/// report conflicts. Graph inputs and constants keep their types.
pub fn reinfer_types(g: &mut Graph) -> Result<(), InferError> {
    clear_types(g, false);
    infer_types(g)
}

fn clear_types(g: &mut Graph, inputs_too: bool) {
    let ids: Vec<_> = g.node_ids().collect();
    for n in ids {
        for o in g.node(n).outputs().to_vec() {
            g.set_type(o, TensorType::UNKNOWN);
        }
        for sg in g.op_mut(n).subgraphs_mut() {
            clear_types(sg, true);
        }
    }
    if inputs_too {
        for v in g.inputs().to_vec() {
            g.set_type(v, TensorType::UNKNOWN);
        }
    }
}

/// The rule of every op without subgraphs.
fn infer_op(op: &Op, cx: &Ctx) -> ctx::R<Vec<TensorType>> {
    use Op::*;
    match op {
        Abs | Acos | Acosh | Asin | Asinh | Atan | Atanh | Ceil | Cos | Cosh | Erf | Exp
        | Floor | Identity | IsNaN | Log | Neg | Not | Reciprocal | Relu | Round | Sigmoid
        | Sign | Sin | Sinh | Softplus | Softsign | Sqrt | Tan | Tanh | BitwiseNot | Mish
        | HardSwish | Elu(_) | Celu(_) | ThresholdedRelu(_) | LeakyRelu(_) | Selu(_)
        | HardSigmoid(_) | Gelu(_) | IsInf(_) | Shrink(_) | Cast(_) | CastLike(_) => {
            elementwise::unary(op, cx)
        }
        Clip => elementwise::clip(cx),
        Dropout(_) => elementwise::dropout(cx),
        Add | Sub | Mul | Div | Pow | Mod(_) | Max | Min | Mean | Sum | And | Or | Xor | Equal
        | Greater | GreaterOrEqual | Less | LessOrEqual | BitShift(_) | BitwiseAnd | BitwiseOr
        | BitwiseXor | PRelu | Where => elementwise::broadcasting(op, cx),
        MatMul => linalg::matmul(cx),
        Gemm(a) => linalg::gemm(a, cx),
        Einsum(a) => linalg::einsum(&a.equation, cx),
        Det => linalg::det(cx),
        MatMulInteger => linalg::matmul_integer(cx),
        QLinearMatMul => linalg::qlinear_matmul(cx),
        Conv(a) => conv::conv(a, cx),
        ConvTranspose(a) => conv::conv_transpose(a, cx),
        ConvInteger(a) => conv::conv_integer(a, cx),
        QLinearConv(a) => conv::qlinear_conv(a, cx),
        AveragePool(a) => conv::pool(a, cx, "AveragePool"),
        MaxPool(a) => conv::pool(a, cx, "MaxPool"),
        LpPool(a) => conv::pool(a, cx, "LpPool"),
        GlobalAveragePool | GlobalMaxPool | GlobalLpPool(_) => conv::global_pool(cx),
        BatchNormalization(_) => conv::batch_norm(cx),
        InstanceNormalization(_) => conv::instance_norm(cx),
        LayerNormalization(a) => conv::layer_norm(a.axis, a.stash_type, cx),
        GroupNormalization(a) => {
            if a.num_groups < 1 {
                return Err(format!("num_groups {} must be >= 1", a.num_groups));
            }
            if let Some(Dim::Fixed(c)) = cx.shape(0).and_then(|s| s.0.get(1)) {
                if c % a.num_groups as u64 != 0 {
                    return Err(format!(
                        "{c} channels are not divisible into {} groups",
                        a.num_groups
                    ));
                }
            }
            conv::same_as_input(cx)
        }
        LpNormalization(a) => conv::with_axis(a.axis, cx),
        Lrn(a) => {
            if a.size < 1 {
                return Err(format!("LRN size {} must be >= 1", a.size));
            }
            conv::same_as_input(cx)
        }
        MeanVarianceNormalization(a) => {
            if let Some(r) = cx.rank(0) {
                ctx::norm_axes(&a.axes, r)?;
            }
            conv::same_as_input(cx)
        }
        Resize(a) => conv::resize(a, cx),
        Pad(a) => conv::pad(&a.mode, cx),
        DepthToSpace(a) => conv::depth_to_space(a.blocksize, &a.mode, cx),
        SpaceToDepth(a) => conv::space_to_depth(a.blocksize, cx),
        ReduceSum(a) | ReduceMean(a) | ReduceMax(a) | ReduceMin(a) | ReduceProd(a)
        | ReduceL1(a) | ReduceL2(a) | ReduceLogSum(a) | ReduceLogSumExp(a) | ReduceSumSquare(a) => {
            shape_ops::reduce(a, cx)
        }
        ArgMax(a) | ArgMin(a) => shape_ops::arg(a.axis, a.keepdims, cx),
        Softmax(a) | LogSoftmax(a) | Hardmax(a) => conv::with_axis(a.axis, cx),
        Attention(a) => attention::attention(a, cx),
        Reshape(a) => shape_ops::reshape(a.allowzero, cx),
        Transpose(a) => shape_ops::transpose(&a.perm, cx),
        Flatten(a) => shape_ops::flatten(a.axis, cx),
        Squeeze => shape_ops::squeeze(cx),
        Unsqueeze => shape_ops::unsqueeze(cx),
        Concat(a) => shape_ops::concat(a.axis, cx),
        Split(a) => shape_ops::split(a, cx),
        Slice => shape_ops::slice(cx),
        Gather(a) => shape_ops::gather(a.axis, cx),
        GatherElements(a) => shape_ops::gather_elements(a.axis, cx),
        GatherNd(a) => shape_ops::gather_nd(a.batch_dims, cx),
        ScatterNd(a) => {
            if !matches!(a.reduction.as_str(), "none" | "add" | "mul" | "max" | "min") {
                return Err(format!("invalid reduction '{}'", a.reduction));
            }
            shape_ops::scatter(cx, "ScatterND")
        }
        ScatterElements(a) => {
            if !matches!(a.reduction.as_str(), "none" | "add" | "mul" | "max" | "min") {
                return Err(format!("invalid reduction '{}'", a.reduction));
            }
            if let Some(r) = cx.rank(0) {
                ctx::norm_axis(a.axis, r)?;
            }
            shape_ops::scatter(cx, "ScatterElements")
        }
        Expand => shape_ops::expand(cx),
        Tile => shape_ops::tile(cx),
        Shape(a) => shape_ops::shape(a.start, a.end, cx),
        Size => shape_ops::size(cx),
        ConstantOfShape(a) => shape_ops::constant_of_shape(&a.value, cx),
        Range => shape_ops::range(cx),
        NonZero => shape_ops::nonzero(cx),
        TopK(a) => shape_ops::topk(a.axis, cx),
        CumSum(_) | Trilu(_) | ReverseSequence(_) => shape_ops::same(cx),
        OneHot(a) => shape_ops::one_hot(a.axis, cx),
        Compress(a) => shape_ops::compress(a.axis, cx),
        EyeLike(a) => shape_ops::eye_like(a.dtype, cx),
        NonMaxSuppression(_) => shape_ops::nms(cx),
        Rnn(a) => rnn::recurrent(a, 1, cx, "RNN"),
        Gru(a) => rnn::recurrent(a, 3, cx, "GRU"),
        Lstm(a) => rnn::recurrent(a, 4, cx, "LSTM"),
        If(_) | Loop(_) | Scan(_) => {
            Err("control-flow ops are inferred with their subgraphs".into())
        }
        QuantizeLinear(a) => elementwise::quantize(a, cx),
        DequantizeLinear(_) => elementwise::dequantize(cx),
        DynamicQuantizeLinear => elementwise::dynamic_quantize(cx),
        Custom(c) => match &c.def {
            None => Ok(vec![TensorType::UNKNOWN; cx.num_outputs]),
            Some(def) => {
                let tys: Vec<TensorType> = (0..cx.len()).map(|i| cx.ty(i).clone()).collect();
                def.infer(&c.attrs, &tys)
            }
        },
    }
}

/// Checks an Einsum equation (for the verifier).
pub(crate) fn check_einsum(eq: &str, num_inputs: usize) -> Result<(), String> {
    linalg::check_equation(eq, num_inputs)
}

/// Number of state values of a Loop (`fixed` = 2) or Scan (`fixed` = 0) node (for the verifier).
pub(crate) fn state_count(
    body: &Graph,
    fixed: usize,
    scan_inputs: usize,
    num_operands: usize,
    num_outputs: usize,
) -> Result<usize, String> {
    control::state_count(body, fixed, scan_inputs, num_operands, num_outputs)
}

/// Checks a recurrent op's direction (for the verifier).
pub(crate) fn rnn_directions(direction: &str) -> Result<u64, String> {
    rnn::num_directions(direction)
}

/// Fixes the graph's input dimensions and re-infers every type: each symbolic dim named in
/// `symbols` becomes that size, and each input named in `input_shapes` gets that whole shape
/// (which must have the input's rank and agree with its fixed dims). This specializes a graph
/// to static shapes, for a backend or for counting FLOPs.
pub fn bind_dims(
    g: &mut Graph,
    symbols: &HashMap<String, u64>,
    input_shapes: &HashMap<String, Vec<u64>>,
) -> Result<(), InferError> {
    let err = |name: &str, msg: String| InferError {
        node: name.to_string(),
        op: "graph input".into(),
        msg,
    };
    let names: Vec<String> = g
        .inputs()
        .iter()
        .map(|&v| g.value(v).name.clone())
        .collect();
    if let Some(k) = input_shapes.keys().find(|k| !names.contains(k)) {
        return Err(err(
            k,
            format!(
                "the graph has no input named '{k}' (inputs: {})",
                names.join(", ")
            ),
        ));
    }
    for v in g.inputs().to_vec() {
        let ty = g.value(v).ty.clone();
        let name = g.value(v).name.clone();
        let shape = match (input_shapes.get(&name), ty.shape) {
            (Some(fixed), s) => {
                if let Some(s) = s {
                    if s.rank() != fixed.len() {
                        return Err(err(
                            &name,
                            format!("has rank {}, {} dims given", s.rank(), fixed.len()),
                        ));
                    }
                    for (i, (d, &n)) in s.0.iter().zip(fixed).enumerate() {
                        if matches!(d, Dim::Fixed(m) if *m != n) {
                            return Err(err(
                                &name,
                                format!("dim {i} is {d}, cannot bind it to {n}"),
                            ));
                        }
                    }
                }
                Shape(fixed.iter().map(|&n| Dim::Fixed(n)).collect())
            }
            (None, Some(s)) => Shape(
                s.0.into_iter()
                    .map(|d| match d {
                        Dim::Sym(sym) => symbols
                            .get(&sym)
                            .map(|&n| Dim::Fixed(n))
                            .unwrap_or(Dim::Sym(sym)),
                        d => d,
                    })
                    .collect(),
            ),
            (None, None) => continue,
        };
        g.set_type(
            v,
            TensorType {
                dtype: ty.dtype,
                shape: Some(shape),
            },
        );
    }
    reinfer_types(g)
}
