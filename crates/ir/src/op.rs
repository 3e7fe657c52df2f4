//! The closed set of core ops, declared once in [`define_ops!`], plus [`CustomOp`] for
//! user-defined ops.
//!
//! Each op follows the semantics of its latest ONNX version (opset 23); the importer rewrites
//! older forms (attributes that became inputs, legacy broadcasting) into this one.

use crate::attr::{Attr, AttrError, Attrs, OpAttrs};
use crate::{attrs, DType, Graph, Tensor, TensorType};
use std::fmt;
use std::sync::Arc;

attrs!(/// Elu, Celu, ThresholdedRelu, LeakyRelu: one `alpha`.
    AlphaAttrs { alpha: f32 = 1.0f32 });
attrs!(/// LeakyRelu.
    LeakyReluAttrs { alpha: f32 = 0.01f32 });
attrs!(/// Selu.
    SeluAttrs { alpha: f32 = 1.673_263_2f32, gamma: f32 = 1.050_701f32 });
attrs!(/// HardSigmoid.
    HardSigmoidAttrs { alpha: f32 = 0.2f32, beta: f32 = 0.5f32 });
attrs!(/// Gelu.
    GeluAttrs { approximate: String = "none" });
attrs!(/// IsInf.
    IsInfAttrs { detect_negative: bool = true, detect_positive: bool = true });
attrs!(/// Shrink.
    ShrinkAttrs { bias: f32 = 0.0f32, lambd: f32 = 0.5f32 });
attrs!(/// Cast.
    CastAttrs { to: DType, saturate: bool = true, round_mode: String = "up" });
attrs!(/// CastLike.
    CastLikeAttrs { saturate: bool = true, round_mode: String = "up" });
attrs!(/// LpNormalization.
    LpNormAttrs { axis: i64 = -1i64, p: i64 = 2i64 });
attrs!(/// Mod.
    ModAttrs { fmod: bool = false });
attrs!(/// BitShift.
    BitShiftAttrs { direction: String });
attrs!(/// Gemm: `Y = alpha * A' * B' + beta * C`.
    GemmAttrs { alpha: f32 = 1.0f32, beta: f32 = 1.0f32, trans_a("transA"): bool = false,
        trans_b("transB"): bool = false });
attrs!(/// Einsum.
    EinsumAttrs { equation: String });
attrs!(/// Conv, ConvInteger, QLinearConv.
    ConvAttrs { auto_pad: String = "NOTSET", dilations: Option<Vec<i64>>, group: i64 = 1i64,
        kernel_shape: Option<Vec<i64>>, pads: Option<Vec<i64>>, strides: Option<Vec<i64>> });
attrs!(/// ConvTranspose.
    ConvTransposeAttrs { auto_pad: String = "NOTSET", dilations: Option<Vec<i64>>,
        group: i64 = 1i64, kernel_shape: Option<Vec<i64>>, output_padding: Option<Vec<i64>>,
        output_shape: Option<Vec<i64>>, pads: Option<Vec<i64>>, strides: Option<Vec<i64>> });
attrs!(/// AveragePool, MaxPool, LpPool.
    PoolAttrs { auto_pad: String = "NOTSET", ceil_mode: bool = false,
        count_include_pad: bool = false, dilations: Option<Vec<i64>>, kernel_shape: Vec<i64>,
        p: i64 = 2i64, pads: Option<Vec<i64>>, storage_order: i64 = 0i64,
        strides: Option<Vec<i64>> });
attrs!(/// GlobalLpPool.
    GlobalLpPoolAttrs { p: i64 = 2i64 });
attrs!(/// BatchNormalization.
    BatchNormAttrs { epsilon: f32 = 1e-5f32, momentum: f32 = 0.9f32, training_mode: bool = false });
attrs!(/// InstanceNormalization.
    EpsAttrs { epsilon: f32 = 1e-5f32 });
attrs!(/// LayerNormalization.
    LayerNormAttrs { axis: i64 = -1i64, epsilon: f32 = 1e-5f32, stash_type: i64 = 1i64 });
attrs!(/// GroupNormalization.
    GroupNormAttrs { epsilon: f32 = 1e-5f32, num_groups: i64, stash_type: i64 = 1i64 });
attrs!(/// LRN.
    LrnAttrs { alpha: f32 = 1e-4f32, beta: f32 = 0.75f32, bias: f32 = 1.0f32, size: i64 });
attrs!(/// MeanVarianceNormalization.
    MvnAttrs { axes: Vec<i64> = vec![0i64, 2, 3] });
attrs!(/// Resize.
    ResizeAttrs { antialias: bool = false, axes: Option<Vec<i64>>,
        coordinate_transformation_mode: String = "half_pixel", cubic_coeff_a: f32 = -0.75f32,
        exclude_outside: bool = false, extrapolation_value: f32 = 0.0f32,
        keep_aspect_ratio_policy: String = "stretch", mode: String = "nearest",
        nearest_mode: String = "round_prefer_floor" });
attrs!(/// Pad.
    PadAttrs { mode: String = "constant" });
attrs!(/// DepthToSpace.
    DepthToSpaceAttrs { blocksize: i64, mode: String = "DCR" });
attrs!(/// SpaceToDepth.
    BlockAttrs { blocksize: i64 });
attrs!(/// Reduce* (axes are the optional second input).
    ReduceAttrs { keepdims: bool = true, noop_with_empty_axes: bool = false });
attrs!(/// ArgMax, ArgMin.
    ArgAttrs { axis: i64 = 0i64, keepdims: bool = true, select_last_index: bool = false });
attrs!(/// Softmax, LogSoftmax, Hardmax, Flatten-like ops with one axis defaulting to -1.
    AxisAttrs { axis: i64 = -1i64 });
attrs!(/// Gather, GatherElements, ScatterElements-like ops with an axis defaulting to 0.
    Axis0Attrs { axis: i64 = 0i64 });
attrs!(/// Flatten.
    FlattenAttrs { axis: i64 = 1i64 });
attrs!(/// Concat.
    ConcatAttrs { axis: i64 });
attrs!(/// Reshape.
    ReshapeAttrs { allowzero: bool = false });
attrs!(/// Transpose.
    TransposeAttrs { perm: Option<Vec<i64>> });
attrs!(/// Split.
    SplitAttrs { axis: i64 = 0i64, num_outputs: Option<i64> });
attrs!(/// GatherND.
    GatherNdAttrs { batch_dims: i64 = 0i64 });
attrs!(/// ScatterND.
    ScatterNdAttrs { reduction: String = "none" });
attrs!(/// ScatterElements.
    ScatterElementsAttrs { axis: i64 = 0i64, reduction: String = "none" });
attrs!(/// Shape.
    ShapeAttrs { start: i64 = 0i64, end: Option<i64> });
attrs!(/// ConstantOfShape.
    ConstantOfShapeAttrs { value: Option<Tensor> });
attrs!(/// TopK.
    TopKAttrs { axis: i64 = -1i64, largest: bool = true, sorted: bool = true });
attrs!(/// CumSum.
    CumSumAttrs { exclusive: bool = false, reverse: bool = false });
attrs!(/// Trilu.
    TriluAttrs { upper: bool = true });
attrs!(/// Compress.
    CompressAttrs { axis: Option<i64> });
attrs!(/// ReverseSequence.
    ReverseSequenceAttrs { batch_axis: i64 = 1i64, time_axis: i64 = 0i64 });
attrs!(/// EyeLike.
    EyeLikeAttrs { dtype: Option<DType>, k: i64 = 0i64 });
attrs!(/// Dropout (inference: identity).
    DropoutAttrs { seed: Option<i64> });
attrs!(/// RNN, GRU and LSTM.
    RnnAttrs { activation_alpha: Option<Vec<f32>>, activation_beta: Option<Vec<f32>>,
        activations: Option<Vec<String>>, clip: Option<f32>, direction: String = "forward",
        hidden_size: Option<i64>, layout: i64 = 0i64, input_forget: bool = false,
        linear_before_reset: bool = false });
attrs!(/// If: both branches take the captured outer values as inputs, in operand order.
    IfAttrs { then_branch: Graph, else_branch: Graph });
attrs!(/// Loop: body inputs are (iteration, condition, carried..., captured...).
    LoopAttrs { body: Graph });
attrs!(/// Scan: body inputs are (state..., scan..., captured...).
    ScanAttrs { body: Graph, num_scan_inputs: i64, scan_input_axes: Option<Vec<i64>>,
        scan_input_directions: Option<Vec<i64>>, scan_output_axes: Option<Vec<i64>>,
        scan_output_directions: Option<Vec<i64>> });
attrs!(/// QuantizeLinear.
    QuantizeAttrs { axis: i64 = 1i64, block_size: i64 = 0i64, output_dtype: i64 = 0i64,
        saturate: bool = true });
attrs!(/// DequantizeLinear.
    DequantizeAttrs { axis: i64 = 1i64, block_size: i64 = 0i64 });
attrs!(/// OneHot.
    OneHotAttrs { axis: i64 = -1i64 });
attrs!(/// NonMaxSuppression.
    NmsAttrs { center_point_box: i64 = 0i64 });
attrs!(/// Attention (opset 23): scaled dot-product attention; `scale` absent means
    /// `1/sqrt(head_size)`, `q_num_heads`/`kv_num_heads` are required for 3-D inputs.
    AttentionAttrs { is_causal: bool = false, kv_num_heads: Option<i64>,
        q_num_heads: Option<i64>, qk_matmul_output_mode: i64 = 0i64, scale: Option<f32>,
        softcap: f32 = 0.0f32, softmax_precision: Option<i64> });

/// Reference semantics of a user-defined op, so that inference and the interpreter can run it.
pub trait CustomOpDef: Send + Sync + fmt::Debug {
    /// Output types from input types.
    fn infer(&self, attrs: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String>;
    /// Extra checks beyond inference (attribute ranges, arities).
    fn verify(&self, _attrs: &Attrs, _num_inputs: usize) -> Result<(), String> {
        Ok(())
    }
    /// Reference evaluation.
    fn eval(&self, attrs: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String>;
    /// Floating-point (or integer multiply-add) operations for these types, for the cost
    /// model; `None` (the default) when unknown.
    fn flops(
        &self,
        _attrs: &Attrs,
        _inputs: &[TensorType],
        _outputs: &[TensorType],
    ) -> Option<u64> {
        None
    }
}

/// A user op: domain, name, untyped attributes and (optionally) its reference semantics.
#[derive(Clone, Debug)]
pub struct CustomOp {
    /// Operator set domain (`com.example`).
    pub domain: String,
    /// Op type name.
    pub op_type: String,
    /// Attributes.
    pub attrs: Attrs,
    /// Semantics; `None` means the op can be carried through but not evaluated.
    pub def: Option<Arc<dyn CustomOpDef>>,
}

impl PartialEq for CustomOp {
    fn eq(&self, o: &CustomOp) -> bool {
        self.domain == o.domain && self.op_type == o.op_type && self.attrs == o.attrs
    }
}

macro_rules! define_ops {
    ($( $v:ident $(($a:ident))? = $n:literal ),* $(,)?) => {
        /// A core op (ONNX semantics, latest opset) or a custom op.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs)]
        pub enum Op { $( $v $(($a))?, )* Custom(CustomOp) }

        impl Op {
            /// ONNX op type names of every core op.
            pub const ALL: &'static [&'static str] = &[ $( $n ),* ];

            /// The op type (ONNX name).
            pub fn name(&self) -> &str {
                match self { $( define_ops!(@pat $v $($a)?) => $n, )* Op::Custom(c) => &c.op_type }
            }

            /// Builds a core op from its ONNX name and attributes; `Ok(None)` for unknown names.
            pub fn from_attrs(name: &str, mut attrs: Attrs) -> Result<Option<Op>, AttrError> {
                let op = match name {
                    $( $n => define_ops!(@build $v attrs $($a)?), )*
                    _ => return Ok(None),
                };
                Ok(Some(op))
            }

            /// The op's attributes, defaults omitted.
            pub fn attrs(&self) -> Vec<(String, Attr)> {
                let mut out = Vec::new();
                match self {
                    $( define_ops!(@bind $v x $($a)?) => define_ops!(@write x out $($a)?), )*
                    Op::Custom(c) => out.extend(c.attrs.0.iter().cloned()),
                }
                out
            }
        }
    };
    (@pat $v:ident) => { Op::$v };
    (@pat $v:ident $a:ident) => { Op::$v(_) };
    (@bind $v:ident $x:ident) => { Op::$v };
    (@bind $v:ident $x:ident $a:ident) => { Op::$v($x) };
    (@write $x:ident $out:ident) => { () };
    (@write $x:ident $out:ident $a:ident) => { $x.to_attrs(&mut $out) };
    (@build $v:ident $attrs:ident) => {{ $attrs.finish(&[])?; Op::$v }};
    (@build $v:ident $attrs:ident $a:ident) => {{
        let a = $a::from_attrs(&mut $attrs)?;
        $attrs.finish($a::NAMES)?;
        Op::$v(a)
    }};
}

define_ops! {
    // Unary elementwise.
    Abs = "Abs", Acos = "Acos", Acosh = "Acosh", Asin = "Asin", Asinh = "Asinh", Atan = "Atan",
    Atanh = "Atanh", Ceil = "Ceil", Cos = "Cos", Cosh = "Cosh", Erf = "Erf", Exp = "Exp",
    Floor = "Floor", Identity = "Identity", IsNaN = "IsNaN", Log = "Log", Neg = "Neg",
    Not = "Not", Reciprocal = "Reciprocal", Relu = "Relu", Round = "Round",
    Sigmoid = "Sigmoid", Sign = "Sign", Sin = "Sin", Sinh = "Sinh", Softplus = "Softplus",
    Softsign = "Softsign", Sqrt = "Sqrt", Tan = "Tan", Tanh = "Tanh", BitwiseNot = "BitwiseNot",
    Mish = "Mish", HardSwish = "HardSwish",
    Elu(AlphaAttrs) = "Elu", Celu(AlphaAttrs) = "Celu", ThresholdedRelu(AlphaAttrs) = "ThresholdedRelu",
    LeakyRelu(LeakyReluAttrs) = "LeakyRelu", Selu(SeluAttrs) = "Selu",
    HardSigmoid(HardSigmoidAttrs) = "HardSigmoid", Gelu(GeluAttrs) = "Gelu",
    IsInf(IsInfAttrs) = "IsInf", Shrink(ShrinkAttrs) = "Shrink", Clip = "Clip",
    Cast(CastAttrs) = "Cast", CastLike(CastLikeAttrs) = "CastLike",
    Dropout(DropoutAttrs) = "Dropout",
    // Binary and variadic elementwise.
    Add = "Add", Sub = "Sub", Mul = "Mul", Div = "Div", Pow = "Pow", Mod(ModAttrs) = "Mod",
    Max = "Max", Min = "Min", Mean = "Mean", Sum = "Sum",
    And = "And", Or = "Or", Xor = "Xor", Equal = "Equal", Greater = "Greater",
    GreaterOrEqual = "GreaterOrEqual", Less = "Less", LessOrEqual = "LessOrEqual",
    BitShift(BitShiftAttrs) = "BitShift", BitwiseAnd = "BitwiseAnd", BitwiseOr = "BitwiseOr",
    BitwiseXor = "BitwiseXor", PRelu = "PRelu", Where = "Where",
    // Linear algebra.
    MatMul = "MatMul", Gemm(GemmAttrs) = "Gemm", Einsum(EinsumAttrs) = "Einsum", Det = "Det",
    MatMulInteger = "MatMulInteger", QLinearMatMul = "QLinearMatMul",
    // Convolution, pooling, normalization, resampling.
    Conv(ConvAttrs) = "Conv", ConvTranspose(ConvTransposeAttrs) = "ConvTranspose",
    ConvInteger(ConvAttrs) = "ConvInteger", QLinearConv(ConvAttrs) = "QLinearConv",
    AveragePool(PoolAttrs) = "AveragePool", MaxPool(PoolAttrs) = "MaxPool",
    LpPool(PoolAttrs) = "LpPool", GlobalAveragePool = "GlobalAveragePool",
    GlobalMaxPool = "GlobalMaxPool", GlobalLpPool(GlobalLpPoolAttrs) = "GlobalLpPool",
    BatchNormalization(BatchNormAttrs) = "BatchNormalization",
    InstanceNormalization(EpsAttrs) = "InstanceNormalization",
    LayerNormalization(LayerNormAttrs) = "LayerNormalization",
    GroupNormalization(GroupNormAttrs) = "GroupNormalization",
    LpNormalization(LpNormAttrs) = "LpNormalization", Lrn(LrnAttrs) = "LRN",
    MeanVarianceNormalization(MvnAttrs) = "MeanVarianceNormalization",
    Resize(ResizeAttrs) = "Resize", Pad(PadAttrs) = "Pad",
    DepthToSpace(DepthToSpaceAttrs) = "DepthToSpace", SpaceToDepth(BlockAttrs) = "SpaceToDepth",
    // Reductions and normalizing activations.
    ReduceSum(ReduceAttrs) = "ReduceSum", ReduceMean(ReduceAttrs) = "ReduceMean",
    ReduceMax(ReduceAttrs) = "ReduceMax", ReduceMin(ReduceAttrs) = "ReduceMin",
    ReduceProd(ReduceAttrs) = "ReduceProd", ReduceL1(ReduceAttrs) = "ReduceL1",
    ReduceL2(ReduceAttrs) = "ReduceL2", ReduceLogSum(ReduceAttrs) = "ReduceLogSum",
    ReduceLogSumExp(ReduceAttrs) = "ReduceLogSumExp",
    ReduceSumSquare(ReduceAttrs) = "ReduceSumSquare",
    ArgMax(ArgAttrs) = "ArgMax", ArgMin(ArgAttrs) = "ArgMin",
    Softmax(AxisAttrs) = "Softmax", LogSoftmax(AxisAttrs) = "LogSoftmax",
    Hardmax(AxisAttrs) = "Hardmax",
    // Attention.
    Attention(AttentionAttrs) = "Attention",
    // Shape and data movement.
    Reshape(ReshapeAttrs) = "Reshape", Transpose(TransposeAttrs) = "Transpose",
    Flatten(FlattenAttrs) = "Flatten", Squeeze = "Squeeze", Unsqueeze = "Unsqueeze",
    Concat(ConcatAttrs) = "Concat", Split(SplitAttrs) = "Split", Slice = "Slice",
    Gather(Axis0Attrs) = "Gather", GatherElements(Axis0Attrs) = "GatherElements",
    GatherNd(GatherNdAttrs) = "GatherND", ScatterNd(ScatterNdAttrs) = "ScatterND",
    ScatterElements(ScatterElementsAttrs) = "ScatterElements", Expand = "Expand", Tile = "Tile",
    Shape(ShapeAttrs) = "Shape", Size = "Size",
    ConstantOfShape(ConstantOfShapeAttrs) = "ConstantOfShape", Range = "Range",
    NonZero = "NonZero", TopK(TopKAttrs) = "TopK", CumSum(CumSumAttrs) = "CumSum",
    Trilu(TriluAttrs) = "Trilu", OneHot(OneHotAttrs) = "OneHot",
    Compress(CompressAttrs) = "Compress", ReverseSequence(ReverseSequenceAttrs) = "ReverseSequence",
    EyeLike(EyeLikeAttrs) = "EyeLike", NonMaxSuppression(NmsAttrs) = "NonMaxSuppression",
    // Recurrent.
    Rnn(RnnAttrs) = "RNN", Gru(RnnAttrs) = "GRU", Lstm(RnnAttrs) = "LSTM",
    // Control flow.
    If(IfAttrs) = "If", Loop(LoopAttrs) = "Loop", Scan(ScanAttrs) = "Scan",
    // Quantization.
    QuantizeLinear(QuantizeAttrs) = "QuantizeLinear",
    DequantizeLinear(DequantizeAttrs) = "DequantizeLinear",
    DynamicQuantizeLinear = "DynamicQuantizeLinear",
}

impl Op {
    /// Operator set domain: `""` (the ONNX default domain) for core ops.
    pub fn domain(&self) -> &str {
        match self {
            Op::Custom(c) => &c.domain,
            _ => "",
        }
    }

    /// Subgraphs held by the op (If branches, Loop and Scan bodies).
    pub fn subgraphs(&self) -> Vec<&Graph> {
        match self {
            Op::If(a) => vec![&a.then_branch, &a.else_branch],
            Op::Loop(a) => vec![&a.body],
            Op::Scan(a) => vec![&a.body],
            _ => vec![],
        }
    }

    /// Mutable access to the subgraphs.
    pub fn subgraphs_mut(&mut self) -> Vec<&mut Graph> {
        match self {
            Op::If(a) => vec![&mut a.then_branch, &mut a.else_branch],
            Op::Loop(a) => vec![&mut a.body],
            Op::Scan(a) => vec![&mut a.body],
            _ => vec![],
        }
    }

    /// True for ops applied element by element to one input, output shape equal to input shape.
    pub fn is_unary_elementwise(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Abs | Acos
                | Acosh
                | Asin
                | Asinh
                | Atan
                | Atanh
                | Ceil
                | Cos
                | Cosh
                | Erf
                | Exp
                | Floor
                | Identity
                | IsNaN
                | Log
                | Neg
                | Not
                | Reciprocal
                | Relu
                | Round
                | Sigmoid
                | Sign
                | Sin
                | Sinh
                | Softplus
                | Softsign
                | Sqrt
                | Tan
                | Tanh
                | BitwiseNot
                | Mish
                | HardSwish
                | Elu(_)
                | Celu(_)
                | ThresholdedRelu(_)
                | LeakyRelu(_)
                | Selu(_)
                | HardSigmoid(_)
                | Gelu(_)
                | IsInf(_)
                | Shrink(_)
                | Cast(_)
                | CastLike(_)
        )
    }

    /// True for multidirectionally broadcasting elementwise ops (binary or variadic).
    pub fn is_broadcast_elementwise(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Add | Sub
                | Mul
                | Div
                | Pow
                | Mod(_)
                | Max
                | Min
                | Mean
                | Sum
                | And
                | Or
                | Xor
                | Equal
                | Greater
                | GreaterOrEqual
                | Less
                | LessOrEqual
                | BitShift(_)
                | BitwiseAnd
                | BitwiseOr
                | BitwiseXor
                | PRelu
                | Where
        )
    }

    /// True for comparison and logic ops, whose output is bool.
    pub fn is_predicate(&self) -> bool {
        use Op::*;
        matches!(
            self,
            And | Or
                | Xor
                | Not
                | Equal
                | Greater
                | GreaterOrEqual
                | Less
                | LessOrEqual
                | IsNaN
                | IsInf(_)
        )
    }

    /// The reduction attributes, for the Reduce* family.
    pub fn reduce_attrs(&self) -> Option<&ReduceAttrs> {
        use Op::*;
        match self {
            ReduceSum(a) | ReduceMean(a) | ReduceMax(a) | ReduceMin(a) | ReduceProd(a)
            | ReduceL1(a) | ReduceL2(a) | ReduceLogSum(a) | ReduceLogSumExp(a)
            | ReduceSumSquare(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
