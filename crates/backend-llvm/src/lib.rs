//! # pare-backend-llvm: graphs to native code
//!
//! [`compile`] takes a graph, specializes it to static shapes, canonicalizes it, builds an
//! execution [`plan::Plan`] (runtime kernel calls plus fused elementwise loops over a statically
//! planned arena) and lowers the plan to an LLVM module ([`codegen`]). [`artifact`] turns the
//! module into an object, a static archive, a shared library, an executable or LLVM IR text,
//! linking the pare-runtime static library that is embedded in this crate ([`RUNTIME_LIB`]).
//!
//! ## Why kernels in a Rust runtime plus generated glue
//!
//! GEMM, convolution, pooling, normalization, attention and data movement are written once,
//! tuned and tested in `pare-runtime` (with the AVX2/FMA micro-kernels selected at run time);
//! the generated code is specialized to the model: every shape, stride, offset and parameter is
//! a constant, weights are pre-packed into the kernels' layouts at compile time and stored as
//! read-only data, activations live at fixed offsets in one arena, and chains of elementwise ops
//! are generated as fused, vectorized LLVM loops (or folded into the producing GEMM/convolution
//! epilogue). See docs/architecture.md.

#![deny(missing_docs)]

pub mod artifact;
pub mod codegen;
pub mod fused;
pub mod lower;
pub mod plan;
pub mod qfuse;

pub use artifact::{emit_artifact, Emit, Target};

use std::collections::HashMap;

/// The pare-runtime static library, built for the host by build.rs.
pub static RUNTIME_LIB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libpare_runtime.a"));

/// Errors of the backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A value without a static shape after binding.
    #[error("value '{value}' has no static shape ({ty}); give the missing sizes with --shape (e.g. --shape batch=1,seq=128)")]
    Dynamic {
        /// Value name.
        value: String,
        /// What is known.
        ty: String,
    },
    /// Symbolic input dimensions nobody bound.
    #[error("input '{input}' has symbolic dimension(s) {dims}; compile needs static shapes: pass --shape {example}")]
    Unbound {
        /// Input name.
        input: String,
        /// The unbound dims.
        dims: String,
        /// An example flag value.
        example: String,
    },
    /// A node the backend cannot compile.
    #[error("node '{node}' ({op}): {why}")]
    UnsupportedNode {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Why.
        why: String,
    },
    /// Something else unsupported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Shape binding or canonicalization failed.
    #[error("preparing the graph: {0}")]
    Prepare(String),
    /// LLVM reported an error.
    #[error("LLVM: {0}")]
    Llvm(String),
    /// Running the linker or archiver failed.
    #[error("linking: {0}")]
    Link(String),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<inkwell::builder::BuilderError> for BackendError {
    fn from(e: inkwell::builder::BuilderError) -> Self {
        BackendError::Llvm(e.to_string())
    }
}

/// Result of the backend.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Symbolic dim bindings (`N=1`).
    pub symbols: HashMap<String, u64>,
    /// Whole input shapes by input name.
    pub input_shapes: HashMap<String, Vec<u64>>,
    /// Inputs fixed to a value at compile time (`sr=16000`): they become constants and leave the
    /// artifact's inputs, and branches on them fold away.
    pub input_values: HashMap<String, pare_ir::Tensor>,
    /// Pipeline run before lowering (after binding).
    pub pipeline: String,
    /// Target and CPU.
    pub target: Target,
    /// Symbol prefix of the C ABI.
    pub prefix: String,
    /// LLVM optimization level 0..=3.
    pub opt_level: u8,
}

/// The pipeline `pare compile` runs before lowering: constant subgraphs are folded even when
/// that grows the constants (up to 1 GiB more), because the artifact needs their values
/// anyway and computing them at run time would be wasted work, then `canonicalize` runs to its
/// fixpoint. Quantized MatMuls and statically quantized group-1 2-D convolutions were turned
/// into the int8 kernels' nodes before this runs ([`qfuse`]); other weights stored as
/// `DequantizeLinear(int8 codes, scale)` (weight-only or grouped/depthwise convolutions,
/// weight-only int4) compile to their f32 values.
pub const COMPILE_PIPELINE: &str =
    "fold-constants(max-growth-bytes=1073741824,keep-compressed=false),canonicalize";

impl Default for Options {
    fn default() -> Self {
        Options {
            symbols: HashMap::new(),
            input_shapes: HashMap::new(),
            input_values: HashMap::new(),
            pipeline: COMPILE_PIPELINE.into(),
            target: Target::host(),
            prefix: "pare_model".into(),
            opt_level: 3,
        }
    }
}

/// What [`compile`] reports.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    /// Steps in the plan.
    pub steps: usize,
    /// Runtime kernel calls.
    pub kernel_calls: usize,
    /// Fused elementwise loops.
    pub fused_loops: usize,
    /// Graph nodes folded into a kernel epilogue or a fused loop.
    pub nodes_fused: usize,
    /// Nodes that are views (no code).
    pub views: usize,
    /// Activation arena bytes.
    pub arena_bytes: u64,
    /// Peak simultaneously live activation bytes.
    pub peak_live_bytes: u64,
    /// Constant data bytes.
    pub const_bytes: u64,
    /// Seconds preparing the graph (binding, canonicalization).
    pub prepare_s: f64,
    /// Seconds building the plan and LLVM IR.
    pub lower_s: f64,
    /// Seconds in LLVM optimization and object emission.
    pub llvm_s: f64,
    /// Kernel calls per runtime function.
    pub kernels: Vec<(String, usize)>,
}

/// Replaces the inputs named in `values` by constants (checked against the input's type).
pub fn bind_values(
    g: &mut pare_ir::Graph,
    values: &HashMap<String, pare_ir::Tensor>,
) -> Result<()> {
    for (name, t) in values {
        let Some(pos) = g.inputs().iter().position(|&v| g.value(v).name == *name) else {
            let names: Vec<String> = g
                .inputs()
                .iter()
                .map(|&v| g.value(v).name.clone())
                .collect();
            return Err(BackendError::Prepare(format!(
                "--bind {name}: no such input (inputs: {})",
                names.join(", ")
            )));
        };
        let v = g.inputs()[pos];
        let ty = g.value(v).ty.clone();
        if let Some(d) = ty.dtype {
            if d != t.dtype() {
                return Err(BackendError::Prepare(format!(
                    "--bind {name}: the input is {}, the value {}",
                    d.name(),
                    t.dtype().name()
                )));
            }
        }
        if let Some(s) = ty.shape.as_ref() {
            let ok = s.rank() == t.shape().len()
                && s.0
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &n)| d.fixed().is_none_or(|f| f == n as u64));
            if !ok {
                return Err(BackendError::Prepare(format!(
                    "--bind {name}: shape {:?} does not fit the input's {s}",
                    t.shape()
                )));
            }
        }
        let c = g.add_const(format!("{name}.bound"), t.clone());
        g.replace_all_uses(v, c);
        if !g.remove_unused_input(pos) {
            return Err(BackendError::Internal(format!(
                "input {name} still in use after binding"
            )));
        }
    }
    Ok(())
}

/// Binds values and shapes, runs the pipeline and checks every value is static.
pub fn prepare(g: &mut pare_ir::Graph, opts: &Options) -> Result<()> {
    bind_values(g, &opts.input_values)?;
    if !opts.symbols.is_empty() || !opts.input_shapes.is_empty() {
        pare_ir::infer::bind_dims(g, &opts.symbols, &opts.input_shapes)
            .map_err(|e| BackendError::Prepare(e.to_string()))?;
    } else {
        pare_ir::infer::infer_types(g).map_err(|e| BackendError::Prepare(e.to_string()))?;
    }
    for &v in g.inputs() {
        let val = g.value(v);
        let dims: Vec<String> = val
            .ty
            .shape
            .as_ref()
            .map(|s| {
                s.0.iter()
                    .filter(|d| d.fixed().is_none())
                    .map(|d| d.to_string())
                    .collect()
            })
            .unwrap_or_else(|| vec!["(unknown rank)".into()]);
        if !dims.is_empty() {
            let example = dims
                .iter()
                .filter(|d| *d != "?" && *d != "(unknown rank)")
                .map(|d| format!("{d}=1"))
                .collect::<Vec<_>>()
                .join(",");
            let shape_s = val
                .ty
                .shape
                .as_ref()
                .map(|s| {
                    s.0.iter()
                        .map(|d| {
                            if d.fixed().is_some() {
                                d.to_string()
                            } else {
                                "1".into()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("x")
                })
                .unwrap_or_default();
            return Err(BackendError::Unbound {
                input: val.name.clone(),
                dims: dims.join(", "),
                example: if example.is_empty() {
                    format!("{}={shape_s}", val.name)
                } else {
                    example
                },
            });
        }
    }
    // Before constant folding turns the int8 weights of quantized MatMuls and convolutions into
    // f32 values.
    let q = qfuse::fuse_quantized(g);
    if q != qfuse::QFuseStats::default() {
        tracing::info!(
            dynamic = q.dynamic,
            static_ = q.static_,
            conv = q.conv,
            fake_quant = q.fake_quant,
            qoperator = q.qoperator,
            "quantized MatMuls and convolutions compiled to the int8 kernels"
        );
        pare_ir::infer::infer_types(g).map_err(|e| BackendError::Prepare(e.to_string()))?;
    }
    let reg = pare_passes::registry();
    let mut cx = pare_pass::PassContext::new();
    if !opts.pipeline.trim().is_empty() {
        pare_pass::run_pipeline(&reg, &opts.pipeline, g, &mut cx)
            .map_err(|e| BackendError::Prepare(e.to_string()))?;
    }
    pare_ir::infer::infer_types(g).map_err(|e| BackendError::Prepare(e.to_string()))?;
    Ok(())
}

/// A compiled model: the LLVM context owns the module, so compile returns the artifact bytes
/// produced by a callback-free API instead: see [`emit_artifact`].
pub fn compile_plan(g: &pare_ir::Graph) -> Result<plan::Plan> {
    lower::build_plan(g)
}
