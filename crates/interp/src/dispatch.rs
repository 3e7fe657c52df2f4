//! The op dispatcher: one arm per [`Op`] variant.

use crate::{
    attention, cast, control, conv, elementwise as ew, matmul, norm, quant, reduce, resize, rnn,
    shape_ops as sh, Interpreter, Value,
};
use pare_ir::Op;

/// Operand access with clear errors.
pub(crate) struct Args<'a, 'b> {
    pub(crate) v: &'b [Option<&'a Value>],
}

impl<'a> Args<'a, '_> {
    /// Required operand `i`.
    pub(crate) fn req(&self, i: usize) -> Result<&'a Value, String> {
        self.v
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing required input {i}"))
    }
    /// Optional operand `i` (absent, omitted, or beyond the operand list).
    pub(crate) fn opt(&self, i: usize) -> Option<&'a Value> {
        self.v.get(i).copied().flatten()
    }
    /// Number of operand slots.
    pub(crate) fn len(&self) -> usize {
        self.v.len()
    }
    /// All operands from `i` on, each required.
    pub(crate) fn all_from(&self, i: usize) -> Result<Vec<&'a Value>, String> {
        (i..self.v.len()).map(|k| self.req(k)).collect()
    }
}

/// Evaluates one op on values: `inputs[i]` is operand `i` (`None` when omitted) and the result
/// has (at least) `num_outputs` values. Subgraphs (If/Loop/Scan) run with a default
/// [`Interpreter`]. Errors say what is wrong but not where: the caller names the node.
pub fn eval_node(
    op: &Op,
    inputs: &[Option<&Value>],
    num_outputs: usize,
) -> Result<Vec<Value>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eval_op(op, inputs, num_outputs, &Interpreter::default())
    }))
    .unwrap_or_else(|p| {
        Err(format!(
            "internal error: {}",
            crate::exec::panic_message(&p)
        ))
    })
}

pub(crate) fn eval_op(
    op: &Op,
    inputs: &[Option<&Value>],
    nout: usize,
    it: &Interpreter,
) -> Result<Vec<Value>, String> {
    let a = Args { v: inputs };
    let one = |v: Value| Ok(vec![v]);
    use Op::*;
    match op {
        // Unary elementwise.
        Abs | Acos | Acosh | Asin | Asinh | Atan | Atanh | Ceil | Cos | Cosh | Erf | Exp
        | Floor | IsNaN | Log | Neg | Not | Reciprocal | Relu | Round | Sigmoid | Sign | Sin
        | Sinh | Softplus | Softsign | Sqrt | Tan | Tanh | BitwiseNot | Mish | HardSwish
        | Elu(_) | Celu(_) | ThresholdedRelu(_) | LeakyRelu(_) | Selu(_) | HardSigmoid(_)
        | Gelu(_) | IsInf(_) | Shrink(_) => one(ew::unary(op, a.req(0)?)?),
        Identity => one(a.req(0)?.clone()),
        Clip => one(ew::clip(a.req(0)?, a.opt(1), a.opt(2))?),
        Cast(c) => one(cast::cast_with(
            a.req(0)?,
            c.to,
            c.saturate,
            cast::RoundMode::parse(&c.round_mode)?,
        )?),
        CastLike(c) => one(cast::cast_with(
            a.req(0)?,
            a.req(1)?.dtype(),
            c.saturate,
            cast::RoundMode::parse(&c.round_mode)?,
        )?),
        Dropout(_) => ew::dropout(a.req(0)?, a.opt(1), a.opt(2), nout),
        // Binary and variadic elementwise.
        Add | Sub | Mul | Div | Pow | Mod(_) | And | Or | Xor | Equal | Greater
        | GreaterOrEqual | Less | LessOrEqual | BitShift(_) | BitwiseAnd | BitwiseOr
        | BitwiseXor => one(ew::binary(op, a.req(0)?, a.req(1)?)?),
        Max | Min | Mean | Sum => one(ew::variadic(op, &a.all_from(0)?)?),
        PRelu => one(ew::prelu(a.req(0)?, a.req(1)?)?),
        Where => one(ew::where_(a.req(0)?, a.req(1)?, a.req(2)?)?),
        // Linear algebra.
        MatMul => one(matmul::matmul(a.req(0)?, a.req(1)?)?),
        Gemm(g) => one(matmul::gemm_op(g, a.req(0)?, a.req(1)?, a.opt(2))?),
        Einsum(e) => one(matmul::einsum(&e.equation, &a.all_from(0)?)?),
        Det => one(matmul::det(a.req(0)?)?),
        MatMulInteger => one(quant::matmul_integer(
            a.req(0)?,
            a.req(1)?,
            a.opt(2),
            a.opt(3),
        )?),
        QLinearMatMul => one(quant::qlinear_matmul(&a)?),
        // Convolution and pooling.
        Conv(c) => one(conv::conv(c, a.req(0)?, a.req(1)?, a.opt(2))?),
        ConvTranspose(c) => one(conv::conv_transpose(c, a.req(0)?, a.req(1)?, a.opt(2))?),
        ConvInteger(c) => one(quant::conv_integer(
            c,
            a.req(0)?,
            a.req(1)?,
            a.opt(2),
            a.opt(3),
        )?),
        QLinearConv(c) => one(quant::qlinear_conv(c, &a)?),
        AveragePool(p) => one(conv::pool(conv::PoolKind::Avg, p, a.req(0)?)?),
        LpPool(p) => one(conv::pool(conv::PoolKind::Lp(p.p), p, a.req(0)?)?),
        MaxPool(p) => conv::max_pool(p, a.req(0)?, nout),
        GlobalAveragePool => one(conv::global_pool(conv::PoolKind::Avg, a.req(0)?)?),
        GlobalMaxPool => one(conv::global_pool(conv::PoolKind::Max, a.req(0)?)?),
        GlobalLpPool(p) => one(conv::global_pool(conv::PoolKind::Lp(p.p), a.req(0)?)?),
        // Normalization.
        BatchNormalization(b) => norm::batch_norm(b, &a, nout),
        InstanceNormalization(e) => one(norm::instance_norm(
            e.epsilon,
            a.req(0)?,
            a.req(1)?,
            a.req(2)?,
        )?),
        LayerNormalization(l) => norm::layer_norm(l, a.req(0)?, a.req(1)?, a.opt(2), nout),
        GroupNormalization(g) => one(norm::group_norm(g, a.req(0)?, a.req(1)?, a.req(2)?)?),
        LpNormalization(l) => one(norm::lp_norm(l, a.req(0)?)?),
        Lrn(l) => one(norm::lrn(l, a.req(0)?)?),
        MeanVarianceNormalization(m) => one(norm::mvn(&m.axes, a.req(0)?)?),
        // Resampling and layout.
        Resize(r) => one(resize::resize(r, &a)?),
        Pad(p) => one(sh::pad(&p.mode, a.req(0)?, a.req(1)?, a.opt(2), a.opt(3))?),
        DepthToSpace(d) => one(sh::depth_to_space(d.blocksize, &d.mode, a.req(0)?)?),
        SpaceToDepth(b) => one(sh::space_to_depth(b.blocksize, a.req(0)?)?),
        // Reductions.
        ReduceSum(r) | ReduceMean(r) | ReduceMax(r) | ReduceMin(r) | ReduceProd(r)
        | ReduceL1(r) | ReduceL2(r) | ReduceLogSum(r) | ReduceLogSumExp(r) | ReduceSumSquare(r) => {
            one(reduce::reduce(op, r, a.req(0)?, a.opt(1))?)
        }
        ArgMax(r) => one(reduce::arg(true, r, a.req(0)?)?),
        ArgMin(r) => one(reduce::arg(false, r, a.req(0)?)?),
        Softmax(x) => one(reduce::softmax(
            reduce::SoftKind::Softmax,
            x.axis,
            a.req(0)?,
        )?),
        LogSoftmax(x) => one(reduce::softmax(
            reduce::SoftKind::LogSoftmax,
            x.axis,
            a.req(0)?,
        )?),
        Hardmax(x) => one(reduce::softmax(
            reduce::SoftKind::Hardmax,
            x.axis,
            a.req(0)?,
        )?),
        Attention(at) => attention::attention(at, &a, nout),
        // Shape and data movement.
        Reshape(r) => one(sh::reshape(a.req(0)?, a.req(1)?, r.allowzero)?),
        Transpose(t) => one(sh::transpose(a.req(0)?, t.perm.as_deref())?),
        Flatten(f) => one(sh::flatten(a.req(0)?, f.axis)?),
        Squeeze => one(sh::squeeze(a.req(0)?, a.opt(1))?),
        Unsqueeze => one(sh::unsqueeze(a.req(0)?, a.req(1)?)?),
        Concat(c) => one(sh::concat(&a.all_from(0)?, c.axis)?),
        Split(s) => sh::split(a.req(0)?, a.opt(1), s.axis, s.num_outputs, nout),
        Slice => one(sh::slice(
            a.req(0)?,
            a.req(1)?,
            a.req(2)?,
            a.opt(3),
            a.opt(4),
        )?),
        Gather(g) => one(sh::gather(a.req(0)?, a.req(1)?, g.axis)?),
        GatherElements(g) => one(sh::gather_elements(a.req(0)?, a.req(1)?, g.axis)?),
        GatherNd(g) => one(sh::gather_nd(a.req(0)?, a.req(1)?, g.batch_dims)?),
        ScatterNd(s) => one(sh::scatter_nd(
            a.req(0)?,
            a.req(1)?,
            a.req(2)?,
            &s.reduction,
        )?),
        ScatterElements(s) => one(sh::scatter_elements(
            a.req(0)?,
            a.req(1)?,
            a.req(2)?,
            s.axis,
            &s.reduction,
        )?),
        Expand => one(sh::expand(a.req(0)?, a.req(1)?)?),
        Tile => one(sh::tile(a.req(0)?, a.req(1)?)?),
        Shape(s) => one(sh::shape(a.req(0)?, s.start, s.end)?),
        Size => one(Value::I64(ndarray::arr0(a.req(0)?.len() as i64).into_dyn())),
        ConstantOfShape(c) => one(sh::constant_of_shape(a.req(0)?, c.value.as_ref())?),
        Range => one(sh::range(a.req(0)?, a.req(1)?, a.req(2)?)?),
        NonZero => one(sh::nonzero(a.req(0)?)?),
        TopK(t) => sh::topk(a.req(0)?, a.req(1)?, t.axis, t.largest, t.sorted),
        CumSum(c) => one(sh::cumsum(a.req(0)?, a.req(1)?, c.exclusive, c.reverse)?),
        Trilu(t) => one(sh::trilu(a.req(0)?, a.opt(1), t.upper)?),
        OneHot(o) => one(sh::one_hot(a.req(0)?, a.req(1)?, a.req(2)?, o.axis)?),
        Compress(c) => one(sh::compress(a.req(0)?, a.req(1)?, c.axis)?),
        ReverseSequence(r) => one(sh::reverse_sequence(
            a.req(0)?,
            a.req(1)?,
            r.batch_axis,
            r.time_axis,
        )?),
        EyeLike(e) => one(sh::eye_like(a.req(0)?, e.dtype, e.k)?),
        NonMaxSuppression(n) => one(sh::nms(n.center_point_box, &a)?),
        // Recurrent.
        Rnn(r) => rnn::rnn(rnn::Cell::Rnn, r, &a, nout),
        Gru(r) => rnn::rnn(rnn::Cell::Gru, r, &a, nout),
        Lstm(r) => rnn::rnn(rnn::Cell::Lstm, r, &a, nout),
        // Control flow.
        If(i) => control::if_op(i, &a, it),
        Loop(l) => control::loop_op(l, &a, nout, it),
        Scan(s) => control::scan_op(s, &a, nout, it),
        // Quantization.
        QuantizeLinear(q) => one(quant::quantize_linear(q, a.req(0)?, a.req(1)?, a.opt(2))?),
        DequantizeLinear(d) => one(quant::dequantize_linear(d, a.req(0)?, a.req(1)?, a.opt(2))?),
        DynamicQuantizeLinear => quant::dynamic_quantize_linear(a.req(0)?),
        Custom(c) => {
            let def = c.def.as_ref().ok_or_else(|| {
                format!(
                    "custom op {}:{} has no reference semantics",
                    c.domain, c.op_type
                )
            })?;
            let ts: Vec<pare_ir::Tensor> = a.v.iter().flatten().map(|v| v.to_tensor()).collect();
            let outs = def.eval(&c.attrs, &ts)?;
            outs.iter().map(Value::from_tensor).collect()
        }
    }
}
