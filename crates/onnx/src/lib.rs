//! ONNX import and export for the pare IR.
//!
//! - [`load_model`] memory-maps the file and decodes it with prost; tensor bytes stay slices of
//!   the map (and of memory-mapped external data files), so a multi-gigabyte model is never
//!   copied whole into memory. Older opsets are rewritten into the IR's latest-opset forms.
//! - [`save_model`] writes a graph as an ONNX model that onnxruntime runs; large weights go to
//!   an external data file. Writes are atomic (temporary file, then rename).
//! - [`read_tensor_pb`] / [`write_tensor_pb`] read and write serialized `TensorProto`s, the
//!   format of ONNX test data sets.
#![deny(missing_docs)]

mod error;
mod export;
mod import;
mod legacy;
#[allow(missing_docs, clippy::all)]
pub mod proto {
    //! Generated protobuf types (scripts/gen_onnx_proto.sh).
    include!("proto/onnx.rs");
}
mod tensor;

pub use error::OnnxError;
pub use export::{save_model, to_model_proto, ExportOptions};
pub use import::{load_model, load_model_from_bytes, ImportOptions, Model};
pub use tensor::{read_tensor_pb, tensor_from_proto, tensor_to_proto, write_tensor_pb};

/// Highest default-domain opset the importer accepts (ops keep their opset-23 meaning; the
/// conformance suite checks the claimed ops at the versions its tests use).
pub const MAX_OPSET: i64 = 27;
/// Lowest default-domain opset the importer accepts.
pub const MIN_OPSET: i64 = 1;
