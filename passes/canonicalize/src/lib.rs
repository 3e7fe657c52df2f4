//! Exact simplification passes (part of the `canonicalize` pipeline).

use pare_pass::Registry;

/// Registers this crate's passes.
pub fn register(_reg: &mut Registry) {}
