//! Quantization: `quantize(bits=8|4, group=…, method=rtn|gptq|awq, weights-only=…, …)`, and
//! mixed int4/int8/f32 per layer under a size budget: `quantize(budget-bits=4.5)`.
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
//! **Outlier retention** (`outliers=F`, after SpQR: Dettmers et al. 2023, "SpQR: A
//! Sparse-Quantized Representation for Near-Lossless LLM Weight Compression"): in every layer
//! the share `F` of the weights with the largest `|w_rj|·sqrt(H_jj)` (the weight times its
//! input's RMS on the calibration data; `|w|` without `--calib`) stays f32: left out of the
//! grid fits (so the other weights of their groups get finer steps), kept exactly (GPTQ keeps
//! the error-updated value and passes no error on from it), and written over the dequantized
//! weight in the graph by `ScatterND` with int32 flat indices (8 bytes per outlier, counted in
//! the size report). With `rtn` and `gptq`, QDQ only.
//!
//! **Mixed precision under a size budget** (`budget-bits=B`; see [`mixed`]): each layer the
//! pass would quantize gets one of three levels: int4 in groups of `group` along K (default
//! 128; a K that is not a multiple gets a shorter last group; convolutions are per output
//! channel), int8 per output channel (`format=matmulnbits`: int8 in the same blocks, since
//! MatMulNBits has no per-channel form), or f32 (left as it is). `method` rounds both
//! quantized levels. The size of a level is what the size report counts: codes, f32 scales
//! and zero points (asymmetric) and AWQ column factors; the guarantee is that the stored bits
//! of all these layers together, divided by their weight count, are ≤ `B`, so `B` must lie in
//! `[4, 32]` and at least at the all-int4 average (e.g. 4.25 for g128 symmetric; the error
//! names the minimum). Allocation:
//! 1. *Sensitivity* (HAWQ-style, measured end to end as `pare eval` would see it): for every
//!    layer and quantized level, the relative L2 error of the model's float outputs against
//!    the dense model when only that layer is quantized, on `search-samples` samples (the
//!    first of the `--calib` samples; without them, generated inputs: BERT-style tokens for a
//!    two-int64-input model, else N(0,1) floats and small integers), run in pare's
//!    interpreter: two runs per layer per sample.
//! 2. *Greedy*: from all int4, repeatedly the upgrade with the largest reduction of the
//!    squared error per extra stored bit that still fits (a multiple-choice knapsack).
//! 3. *Refinement* (`generations` × `offspring`, default 8 × 2, `generations=0` to skip):
//!    EvoPress-style mutants of the best allocation (one layer up a level, random others down
//!    until the budget holds), each scored by the end-to-end error of the whole mixed model,
//!    starting from the better of the greedy allocation and all int4, so the result is never
//!    worse than either on the samples (held out, it can be: see below).
//!
//! Needs: what `method` needs (`gptq`/`awq`: `--calib`; each layer is then quantized twice,
//! at int4 and int8); with `rtn` and no `--calib` the sensitivities are measured on generated
//! inputs, which rank layers less reliably than real data. Cost: `2 × layers + 2 +
//! generations × offspring` interpreter runs per sample (MiniLM, 18 layers, 2 samples: 4 s
//! in a debug build). The levels are written with the usual exports (QDQ int4/int8
//! DequantizeLinear, or MatMulNBits), so the result runs in onnxruntime (checked on MiniLM).
//!
//! The report gives per layer its sensitivities and chosen level (bits per weight), and the
//! achieved average bits, the final end-to-end error on the samples next to the greedy's and
//! all-int4's. `budget-bits` is weight-only: `weights-only=false` or `activations=…` with it
//! is an error, and so is `bits` other than 8 (the levels replace it). Papers: CPTQuant
//! (Nanda et al. 2024: first and last layers are the most sensitive, which the measurement
//! finds rather than assumes), HAWQ (Dong et al. 2019, sensitivity-ordered bit allocation),
//! EvoPress (Sieberling et al. 2024). Measured in `passes/quantize/tests/mixed.rs`
//! (calibrated on two samples, `budget-bits=5`, RTN; held-out relative L2 error, uniform
//! int4 g128 → `budget-bits=5` → uniform int8): MiniLM 0.207 → 0.151 → 0.014 (4.995 bits per
//! weight); orientation 0.745 → 0.057 → 0.038 (its first convolutions kept f32); ocr-rec
//! 0.411 → 0.413 → 0.165: there single-layer sensitivities do not add up (its softmax
//! saturates: all int4 is 0.53 on the calibration samples, single layers reach 0.47) and two
//! single-image calibration samples do not carry the refinement's gain (0.531 → 0.462 on
//! them) to held-out images.
//!
//! **Accuracy control** (`max-error=E`): after the
//! quantization, while the end-to-end relative L2 error of the float outputs on the
//! `search-samples` samples exceeds `E`, QDQ layers are restored to f32 (weight and activation
//! Q/DQ), in the order of the error each leaves when restored alone, each kept only if it lowers
//! the error; the report lists them and says whether the bound was reached. The bound holds for
//! the scoring samples, not necessarily for other inputs (measured on ocr-det in
//! docs/passes.md). Not combinable with `budget-bits`.
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
//!   measured on the calibration samples; see [`search`]). `act-per-channel=true` gives a
//!   convolution's input one grid per input channel instead (`QuantizeLinear` /
//!   `DequantizeLinear` on axis 1 with 1-D parameters): each channel's calibrated min/max,
//!   clipped to the tensor's range under the rule. MatMul/Gemm inputs stay per tensor (with a
//!   note): onnxruntime fuses them into `MatMulIntegerToFloat`, which refuses per-channel
//!   activation parameters. Fitted on few samples, per-channel ranges saturate more held-out
//!   values than the tensor's (measured worse on every CNN, docs/passes.md). Biases stay f32.
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
//! biases, mixed precision below the layer (per group or channel), outlier retention
//! (SpQR-style sparse f32 corrections: onnxruntime has no sparse-weight MatMul kernel and
//! densifies sparse initializers at load, so the correction would be a ScatterND of int64
//! indices and f32 values into a dense tensor, 12 bytes per outlier, added to the weight;
//! smaller on disk, but the Add breaks onnxruntime's DequantizeLinear→MatMul fusion and
//! cannot follow MatMulNBits, so it would run slower than both f32 and int4; not built), integer kernels in the backends (`pare compile` folds weight-only QDQ; it
//! does not lower activation QuantizeLinear, DynamicQuantizeLinear or MatMulInteger).

pub mod act;
pub mod awq;
pub mod error;
pub mod gptq;
pub mod mixed;
pub mod nbits;
mod pass;
pub mod scheme;
pub mod search;

pub use error::QuantError;
pub use pass::{ActConfig, ActMode, Budget, Config, Format, Method, Quantize, QuantizeOptions};

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
            "0 for bits=8, 128 for bits=4 and budget-bits",
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
            "act-per-channel",
            "bool",
            "false",
            "static activations with one grid per channel (the readers' K axis): each \
             channel's calibrated min/max, clipped to the tensor's range under calibrate",
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
        )
        .option(
            "budget-bits",
            "float",
            "none",
            "mixed precision: at most this many stored bits per weight on average (codes, \
             scales, zero points); per layer int4 (group, default 128), int8 per channel or \
             f32 by measured end-to-end sensitivity; weight-only",
        )
        .option(
            "generations",
            "int",
            "8",
            "budget-bits: generations of the end-to-end search refining the greedy allocation \
             (0: greedy only)",
        )
        .option(
            "offspring",
            "int",
            "2",
            "budget-bits: allocations scored per generation",
        )
        .option(
            "search-samples",
            "int",
            "4",
            "budget-bits, max-error: samples scoring sensitivities and allocations (0: all of \
             --calib; without --calib, generated inputs)",
        )
        .option(
            "outliers",
            "float",
            "0",
            "SpQR-style outlier retention (weights only; rtn or gptq; qdq): this share of each \
             layer's weights, the largest |w|·rms(x), stays f32 outside the grids",
        )
        .option(
            "max-error",
            "float",
            "none",
            "accuracy control: restore the layers whose quantization costs the most to f32 until \
             the model's end-to-end relative L2 error on the samples is at most this",
        ),
        |opts| Ok(Box::new(Quantize::new(opts.parse()?)?)),
    );
}
