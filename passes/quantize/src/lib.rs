//! Quantization: `quantize(bits=8|4, group=…, method=rtn|gptq|awq, weights-only=…, …)`.
//!
//! **What it does.** Every MatMul and Gemm whose weight operand `B` is a constant f32 2-D
//! tensor (Gemm: `transB` respected) and every Conv with a constant f32 weight gets its weight
//! replaced by integer codes and per-group scales (and zero points when asymmetric):
//!
//! - `format=qdq` (default): the weight operand becomes `DequantizeLinear(codes, scale,
//!   zero_point)` with ONNX opset-21 semantics: int8/uint8 codes for 8 bits, int4/uint4 for 4
//!   bits; per output channel (`axis` = the N axis of the stored weight) when `group=0`,
//!   otherwise blocked along K (`axis` = the K axis, `block_size` = group). Convolutions are
//!   always per output channel (`axis=0`; `group` is ignored for them and the report says so).
//!   AWQ adds a `Mul` of the dequantized weight by a constant `1/s` per input feature.
//! - `format=matmulnbits`: MatMul (rank of A ≥ 2), and Gemm with `transA=0`, `alpha=1` (and
//!   `beta=1` when C is given), become `com.microsoft::MatMulNBits` (4 or 8 bits,
//!   `block_size` = group, a power of two ≥ 16), which onnxruntime runs natively; a Gemm's C
//!   becomes an `Add` after it; AWQ's `1/s` becomes a `Mul` on the activation. Other targets
//!   get QDQ. See [`nbits`] for the packed layout; [`nbits::MatMulNBitsDef`] gives the op
//!   reference semantics, so pare's interpreter runs the result too
//!   ([`nbits::custom_ops`] is what an importer needs to read such a model back).
//!
//! Methods:
//! - `rtn`: round to nearest on a grid fitted per group (symmetric: `scale = absmax/qmax`,
//!   codes in `[-2^(b-1), 2^(b-1)-1]`; asymmetric: min/max widened to contain 0, zero point
//!   `round(-min/scale)`, codes in `[0, 2^b-1]`), ties to even.
//! - `gptq`: Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//!   Pre-trained Transformers" — column-by-column quantization with error feedback through the
//!   inverse Hessian `(XᵀX + λI)⁻¹` (Cholesky via faer, lazy batch updates in blocks of 128
//!   columns, group grids fitted when a group starts from the error-updated weights); see
//!   [`gptq::gptq`]. Convolutions use their im2col `XᵀX`, per conv group.
//! - `awq`: after Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM
//!   Compression and Acceleration" — input features are scaled by `s = rms(x)^α` before RTN and
//!   unscaled after dequantization; α ∈ {0, 0.1, …, 1} minimizes the output error
//!   `tr(ΔW XᵀX ΔWᵀ)` (α = 0 is RTN, so the search never does worse than RTN on the
//!   calibration data); see [`awq::awq`]. Grouped convolutions fall back to RTN.
//!
//! **Activations** (`weights-only=false`, the default for `bits=8` per-channel QDQ; see
//! [`act`] and [`search`]):
//! - **static int8** when calibration samples are given (`--calib`; `activations=static`
//!   forces it): every quantized MatMul/Gemm/Conv reads its activation (operand 0) through
//!   `QuantizeLinear → DequantizeLinear` with a per-tensor scale and zero point fitted to the
//!   calibration statistics: uint8 asymmetric by default (onnxruntime's convention), int8 with
//!   zero point 0 with `act-symmetric=true`. One Q/DQ pair per activation tensor, shared by all
//!   its quantized readers; other readers keep the f32 value. The range rule is
//!   `calibrate=percentile` (default, `percentile=99.99`), `minmax`, `mse`, `entropy`, or
//!   `auto` (per tensor, the candidate among min-max, percentiles 99.9 / 99.99 / 99.999, MSE
//!   and entropy with the smallest relative error at the outputs of the layers reading it,
//!   measured on the calibration samples; see [`search`]). Per-channel activation scales are not
//!   implemented (onnxruntime does not use them either). Biases stay f32.
//! - **dynamic int8** without calibration samples (`activations=dynamic` forces it): MatMul
//!   and Gemm (without transA) become onnxruntime's `quantize_dynamic` pattern
//!   `DynamicQuantizeLinear(A) → MatMulInteger(A_q, W_q[K,N], A_zp[, W_zp]) → Cast(f32) →
//!   Mul(A_scale · W_scale) [→ Add(beta·C)]`, with the Gemm's alpha folded into `W_scale` and
//!   one `DynamicQuantizeLinear` shared per activation. Convolutions keep weight-only QDQ.
//!
//! **Needs.** Nothing for `rtn` weight-only or dynamic. `gptq`, `awq` and static activations
//! need calibration samples (`--calib DIR`) for the [`pare_analysis::CalibStats`] analysis
//! (`XᵀX` of every linear layer, activation ranges and histograms) and fail without them,
//! naming `--calib`; a layer without `XᵀX` (K > 4096, memory budget, 3-D conv) falls back to
//! RTN with a note. Weights below `min-elements` (default 1024), not f32, not constant, or with
//! NaN/∞ are skipped with a note saying why (and their activations stay f32); so are nodes
//! inside If/Loop/Scan bodies.
//!
//! **Guarantees.** Exact with respect to what was quantized: the graph computes the original
//! ops on the dequantized weights `(q - zero)·scale` (times `1/s` for AWQ) and, with
//! activation quantization, on `DequantizeLinear(QuantizeLinear(x))` (static) or in int32 on
//! the codes (dynamic; exact integer accumulation, one f32 rescale). Approximate with respect
//! to the original model: per layer the report gives weight bytes before/after, the relative
//! weight error `‖ΔW‖/‖W‖`, and, when `XᵀX` is known, the relative output error
//! `sqrt(tr(ΔW H ΔWᵀ)/tr(W H Wᵀ))` on the calibration data next to RTN's; per activation the
//! grid, the rule and the observed range. End-to-end bounds measured on the real models are in
//! `passes/quantize/tests/models.rs` and docs/passes.md. Output names, shapes and the other ops
//! are unchanged; the exporter writes opset ≥ 21 (which blocked DequantizeLinear and int4
//! need) and a `com.microsoft` opset import for MatMulNBits.
//!
//! **Paper / pattern.** Static and dynamic int8 follow onnxruntime's quantizer (QDQ format,
//! `compute_scale_zp`, `quantize_dynamic`'s MatMulInteger pattern); entropy calibration is
//! TensorRT's (Migacz 2017); the output-error range search is in the spirit of layer-wise
//! reconstruction calibration (e.g. Nagel et al. 2021, "A White Paper on Neural Network
//! Quantization", §4.4 on range setting by output MSE).
//!
//! **Not yet.** Per-channel activation scales, dynamic convolutions (ConvInteger), int8
//! biases, mixed precision, outlier retention, integer kernels in the backends (`pare
//! compile` folds weight-only QDQ; it does not lower activation QuantizeLinear,
//! DynamicQuantizeLinear or MatMulInteger).

pub mod act;
pub mod awq;
pub mod error;
pub mod gptq;
pub mod nbits;
mod pass;
pub mod scheme;
pub mod search;

pub use error::QuantError;
pub use pass::{ActConfig, ActMode, Config, Format, Method, Quantize, QuantizeOptions};

use pare_pass::{PassInfo, Registry};

/// Registers `quantize`.
pub fn register(reg: &mut Registry) {
    reg.register(
        PassInfo::new(
            "quantize",
            "int8/int4 quantization of MatMul/Gemm/Conv weights (RTN, GPTQ, AWQ) as QDQ or \
             MatMulNBits, and int8 activations (static QDQ or dynamic MatMulInteger) (lossy)",
        )
        .option("bits", "int", "8", "bits per weight: 8 or 4")
        .option(
            "group",
            "int",
            "0 for bits=8, 128 for bits=4",
            "group length along K (0 = per output channel); convolutions are per channel",
        )
        .option(
            "method",
            "rtn|gptq|awq",
            "rtn",
            "rounding: round-to-nearest, GPTQ or AWQ scaling (gptq/awq need --calib)",
        )
        .option(
            "symmetric",
            "bool",
            "true",
            "signed codes without zero point (false: unsigned codes with zero points)",
        )
        .option(
            "weights-only",
            "bool",
            "false for bits=8 per-channel qdq, else true",
            "quantize weights only; false also quantizes the activations of MatMul/Gemm/Conv \
             (int8: static with --calib, dynamic for MatMul/Gemm without)",
        )
        .option(
            "activations",
            "auto|static|dynamic",
            "auto",
            "activation quantization: static (QuantizeLinear/DequantizeLinear, needs --calib), \
             dynamic (DynamicQuantizeLinear + MatMulInteger), auto = static iff --calib",
        )
        .option(
            "calibrate",
            "auto|minmax|percentile|mse|entropy",
            pass::DEFAULT_CALIBRATE,
            "static activation range rule from the calibration histograms",
        )
        .option(
            "percentile",
            "float",
            "99.99",
            "calibrate=percentile: percentage of activation values kept inside the range",
        )
        .option(
            "act-symmetric",
            "bool",
            "false",
            "static activations as int8 with zero point 0 instead of uint8 asymmetric",
        )
        .option(
            "damp",
            "float",
            "0.01",
            "GPTQ dampening: fraction of mean(diag XᵀX) added to the diagonal",
        )
        .option(
            "format",
            "qdq|matmulnbits",
            "qdq",
            "DequantizeLinear (opset 21), or com.microsoft MatMulNBits for MatMul/Gemm",
        )
        .option(
            "min-elements",
            "int",
            "1024",
            "weights with fewer elements stay f32",
        ),
        |opts| Ok(Box::new(Quantize::new(opts.parse()?)?)),
    );
}
