//! pare's graph IR.
//!
//! A [`Graph`] is an SSA dataflow graph stored in arenas: nodes and values are addressed by
//! typed `u32` ids ([`NodeId`], [`ValueId`]) that stay stable through a pipeline. Every value
//! has one definition (graph input, constant, or node output) and a use-list that the editing
//! methods keep current, so "who reads this value" is a lookup.
//!
//! Ops are one closed enum, [`Op`], with typed attribute structs; user ops go through
//! [`Op::Custom`]. Constants are [`Tensor`]s over shared byte buffers that may be slices of a
//! memory-mapped file. Subgraphs (If/Loop/Scan) are nested [`Graph`]s whose outer-scope reads
//! are explicit: they are extra inputs of the subgraph and extra operands of the node.
//!
//! The text form ([`print_graph`], [`parse_graph`]) round-trips; [`verify()`] checks
//! the invariants; [`infer::infer_types`] fills in dtypes and shapes.
#![deny(missing_docs)]

pub mod attr;
pub mod cost;
mod dtype;
pub mod graph;
pub mod infer;
pub mod npy;
pub mod op;
mod shape;
mod tensor;
pub mod text;
pub mod verify;

pub use attr::{Attr, AttrError, Attrs};
pub use dtype::DType;
pub use graph::{CycleError, Graph, Node, NodeId, Use, Value, ValueDef, ValueId};
pub use op::{CustomOp, CustomOpDef, Op};
pub use shape::{Dim, Shape, TensorType};
pub use tensor::{Elem, Tensor, TensorData, TensorError};
pub use text::{parse_graph, print_graph, ParseError, PrintOptions};
pub use verify::{verify, VerifyError};

/// The ONNX `TensorProto.DataType` code of a dtype.
pub fn dtype_onnx_code(d: DType) -> i32 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::U16 => 4,
        DType::I16 => 5,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::String => 8,
        DType::Bool => 9,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::U32 => 12,
        DType::U64 => 13,
        DType::BF16 => 16,
        DType::F8E4M3FN => 17,
        DType::F8E4M3FNUZ => 18,
        DType::F8E5M2 => 19,
        DType::F8E5M2FNUZ => 20,
        DType::U4 => 21,
        DType::I4 => 22,
        DType::F4E2M1 => 23,
        DType::F8E8M0 => 24,
        DType::U2 => 25,
        DType::I2 => 26,
    }
}

/// The dtype of an ONNX `TensorProto.DataType` code (complex types are not supported).
pub fn onnx_dtype(code: i32) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| dtype_onnx_code(d) == code)
}
