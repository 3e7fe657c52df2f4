//! The verifier: structural invariants of a graph.

use crate::Graph;

/// A verifier finding, naming where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {msg}")]
pub struct VerifyError {
    /// Node or value description.
    pub at: String,
    /// What is wrong.
    pub msg: String,
}

/// Checks a graph's invariants.
pub fn verify(_g: &Graph) -> Result<(), VerifyError> {
    Ok(())
}
