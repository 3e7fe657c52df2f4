//! Errors of the quantization numerics.

/// Why a layer could not be quantized the requested way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// `XᵀX` (after damping) is not positive definite.
    #[error("XᵀX is not positive definite after damping (pivot {index}); raise damp")]
    NotPositiveDefinite {
        /// The failing pivot.
        index: usize,
    },
    /// `XᵀX` has NaN or infinite entries.
    #[error("XᵀX has non-finite entries (the calibration activations overflowed)")]
    NonFiniteHessian,
    /// `XᵀX` does not match the weight.
    #[error("XᵀX is {got}×{got} but the weight has K = {want}")]
    HessianShape {
        /// Side of the Hessian.
        got: usize,
        /// K of the weight.
        want: usize,
    },
    /// The weight has NaN or infinite values.
    #[error("the weight has non-finite values")]
    NonFiniteWeight,
}
