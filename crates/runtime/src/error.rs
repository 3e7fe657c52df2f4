//! Errors returned by the safe API; the C ABI maps each one to a status code.

/// Why a GEMM call was rejected. Every check happens before any output is written, so a call
/// that returns an error leaves `c` untouched.
#[derive(Debug, Clone, PartialEq)]
pub enum GemmError {
    /// A leading dimension is smaller than the row length of the stored matrix.
    LeadingDim {
        /// `"a"`, `"b"`, `"c"` or `"residual"`.
        operand: &'static str,
        /// The leading dimension given.
        ld: usize,
        /// The smallest valid leading dimension.
        min: usize,
    },
    /// A slice is too short for the dimensions and leading dimension given.
    BufferTooSmall {
        /// Which operand.
        operand: &'static str,
        /// Elements in the slice.
        len: usize,
        /// Elements the shape needs.
        need: usize,
    },
    /// A dimension product does not fit in `usize`.
    Overflow,
    /// The bias vector's length does not match the dimension it is broadcast along.
    BiasLength {
        /// `m` for a per-row bias, `n` for a per-column bias.
        expected: usize,
        /// Elements in the bias slice.
        got: usize,
    },
    /// An activation parameter is invalid (clamp with `min > max` or a NaN bound).
    Activation(&'static str),
    /// Pre-packed B does not match the GEMM's `k`/`n`, or its buffer has the wrong length.
    PackedB(&'static str),
    /// An instruction set was requested explicitly that this CPU does not support.
    UnsupportedIsa(crate::Isa),
}

impl std::fmt::Display for GemmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GemmError::LeadingDim { operand, ld, min } => {
                write!(
                    f,
                    "{operand}: leading dimension {ld} is smaller than the stored row length {min}"
                )
            }
            GemmError::BufferTooSmall { operand, len, need } => {
                write!(
                    f,
                    "{operand}: buffer holds {len} elements but the shape needs {need}"
                )
            }
            GemmError::Overflow => write!(f, "dimensions overflow usize"),
            GemmError::BiasLength { expected, got } => {
                write!(f, "bias has {got} elements, expected {expected}")
            }
            GemmError::Activation(why) => write!(f, "invalid activation parameters: {why}"),
            GemmError::PackedB(why) => write!(f, "packed B: {why}"),
            GemmError::UnsupportedIsa(isa) => {
                write!(f, "instruction set {isa:?} is not supported by this CPU")
            }
        }
    }
}

// Hand-written rather than derived with thiserror so that the crate has no dependencies at all:
// the backend can build it for any target with a bare `rustc --crate-type staticlib`.
impl std::error::Error for GemmError {}

impl GemmError {
    /// The status code the C ABI returns for this error (see [`crate::ffi`]).
    pub fn code(&self) -> i32 {
        match self {
            GemmError::LeadingDim { .. } => crate::ffi::PARE_ERR_LEADING_DIM,
            GemmError::BufferTooSmall { .. } => crate::ffi::PARE_ERR_BUFFER,
            GemmError::Overflow => crate::ffi::PARE_ERR_OVERFLOW,
            GemmError::BiasLength { .. } | GemmError::Activation(_) => {
                crate::ffi::PARE_ERR_EPILOGUE
            }
            GemmError::PackedB(_) => crate::ffi::PARE_ERR_PACKED,
            GemmError::UnsupportedIsa(_) => crate::ffi::PARE_ERR_ISA,
        }
    }
}
