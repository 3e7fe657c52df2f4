//! pare's reference interpreter: evaluates a [`pare_ir::Graph`] op by op with ONNX (opset 23) semantics.
//!
//! It is the test oracle for passes and backends and the engine behind calibration, so it aims
//! to be exactly right first and fast second: matrix products and convolutions go through the
//! `gemm` crate (multi-threaded with rayon), big elementwise maps run in parallel, and every
//! intermediate value is freed right after its last reader.
//!
//! ```no_run
//! # use pare_interp::Interpreter;
//! # fn demo(g: &pare_ir::Graph, x: pare_ir::Tensor) -> Result<(), pare_interp::InterpError> {
//! let outputs = Interpreter::new().run(g, &[x])?;
//! // Four threads, per-op timings on stderr, weights converted once across runs:
//! let it = Interpreter::with_threads(4).profile(true).cache_constants(true);
//! # Ok(()) }
//! ```
//!
//! Values are [`Value`]s: one `ndarray` array per element type (8-bit floats and 4-bit types
//! hold one code per element and are packed only at the [`pare_ir::Tensor`] boundary).
//! [`eval_node`] evaluates one op on values (for constant folding); [`cast`] converts between
//! any two dtypes; [`Interpreter::run_observed`] reports every intermediate value (for
//! calibration). Errors name the node and op that failed ([`InterpError::Node`]); a panic
//! inside a kernel is caught and reported the same way.
//!
//! Subgraphs: in pare's IR a subgraph's reads of outer values are explicit: they are its last
//! [`pare_ir::Graph::num_captures`] inputs, fed by the node's last operands. `If` passes its
//! operands after the condition to the chosen branch; `Loop` takes
//! `(M?, cond?, carried..., captured...)` and its body `(iter, cond, carried..., captured...)`
//! and returns `(cond, carried..., scan outputs...)`; `Scan` (opset 9+ form) takes
//! `(state..., scan inputs..., captured...)` and its body the same minus the scan axis.
//! Per-iteration scan outputs are stacked along a new axis.
#![deny(missing_docs)]
// The dtype-dispatch macros instantiate one generic body per element type (strings and
// unsigned integers included), so these lints fire on particular instantiations only.
#![allow(
    clippy::clone_on_copy,
    clippy::absurd_extreme_comparisons,
    clippy::bool_comparison
)]

#[macro_use]
mod value;
mod attention;
mod cast;
mod control;
mod conv;
mod dispatch;
mod elementwise;
mod exec;
mod matmul;
mod norm;
mod num;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod shape_ops;

pub use cast::cast;
pub use dispatch::eval_node;
pub use exec::{InterpError, Interpreter};
pub use value::Value;
