//! Import and export errors. Every error names the file and, where there is one, the node.

use std::path::PathBuf;

/// An ONNX import/export failure.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf (truncated or not ONNX).
    #[error("{path}: not a valid ONNX model (protobuf decode failed: {msg})")]
    Decode {
        /// File.
        path: PathBuf,
        /// Decoder message.
        msg: String,
    },
    /// An op this build does not support.
    #[error("{path}: node '{node}': unsupported op {op}{} (opset {opset})",
        if domain.is_empty() { String::new() } else { format!(" in domain '{domain}'") })]
    UnsupportedOp {
        /// File.
        path: PathBuf,
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// Domain.
        domain: String,
        /// Opset version imported for that domain.
        opset: i64,
    },
    /// A node could not be converted (bad attribute, bad arity, value used before definition).
    #[error("{path}: node '{node}' ({op}, opset {opset}): {msg}")]
    Node {
        /// File.
        path: PathBuf,
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// Opset.
        opset: i64,
        /// What is wrong.
        msg: String,
    },
    /// A tensor (initializer, constant, attribute or test data) is malformed.
    #[error("{path}: tensor '{name}': {msg}")]
    Tensor {
        /// File.
        path: PathBuf,
        /// Tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// The model as a whole is malformed.
    #[error("{path}: {msg}")]
    Model {
        /// File.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}
