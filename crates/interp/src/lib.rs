//! pare's reference interpreter: evaluates a [`Graph`] op by op with ONNX (opset 23) semantics.
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
//! # Ok(()) }
//! ```
//!
//! Values are [`Value`]s: one `ndarray` array per element type. [`eval_node`] evaluates one op
//! on values (for constant folding); [`Interpreter::run_observed`] reports every intermediate
//! value (for calibration).
//!
//! Subgraphs: in pare's IR a subgraph's reads of outer values are explicit. `If` passes its
//! operands after the condition to the chosen branch as inputs; `Loop` takes
//! `(M?, cond?, carried..., captured...)` and its body `(iter, cond, carried..., captured...)`;
//! `Scan` takes `(state..., scan..., captured...)` and its body the same.
#![deny(missing_docs)]

#[macro_use]
mod value;
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
