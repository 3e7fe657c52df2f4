//! Every built-in pass in one [`Registry`], plus the named pipelines.
//!
//! `canonicalize` is the exact clean-up every other pipeline starts from: constant and shape
//! folding, inlining of If nodes with a constant condition, dead-code and common-subexpression elimination, BatchNormalization folding,
//! MatMul+Add → Gemm, LayerNormalization / GELU / attention recognition and transpose/reshape
//! elimination, repeated until nothing changes.

mod report;

use pare_pass::Registry;
pub use report::{Calibrate, Cost, Coupling};

/// The steps of the `canonicalize` pipeline.
pub const CANONICALIZE: &str =
    "fold-constants,fold-if,fold-shapes,dce,cse,fold-batchnorm,fuse-gemm,\
fuse-layernorm,fuse-gelu,fuse-attention,simplify-layout,dce";

/// The user ops that built-in passes emit, with their reference semantics, as an import
/// option: models written by `quantize(format=matmulnbits)` (`com.microsoft` MatMulNBits)
/// load, run and evaluate with these.
pub fn custom_ops(
) -> std::collections::HashMap<(String, String), std::sync::Arc<dyn pare_ir::op::CustomOpDef>> {
    pare_quantize::nbits::custom_ops()
}

/// A registry with every built-in pass and named pipeline.
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    register(&mut reg);
    reg
}

/// Adds every built-in pass and named pipeline to `reg`.
pub fn register(reg: &mut Registry) {
    pare_canonicalize::register(reg);
    pare_fuse::register(reg);
    pare_quantize::register(reg);
    pare_lowrank::register(reg);
    pare_prune::register(reg);
    pare_slice::register(reg);
    reg.register_default::<Calibrate>(
        "calibrate",
        "run the calibration samples (--calib) and keep ranges, histograms and XᵀX for later passes",
    );
    reg.register_default::<Coupling>(
        "coupling",
        "report the channel-coupling groups (what structured pruning can remove)",
    );
    reg.register_default::<Cost>(
        "cost",
        "report params, weight bytes, FLOPs and peak activation memory",
    );
    reg.register_pipeline(
        "canonicalize",
        "exact clean-up: folding, constant-condition If inlining, DCE, CSE, BN folding, \
         Gemm/LayerNorm/GELU/attention fusion, layout simplification (repeated to a fixpoint)",
        CANONICALIZE,
        true,
    );
}
