//! Analyses that ship with the pass manager.
//!
//! Calibration statistics and channel-coupling groups live in `pare-analysis`; the cost
//! model is here because every pipeline report uses it.

mod cost;
mod memory;
pub use cost::{value_bytes, CostAnalysis, NodeCost};
pub use memory::{Buffer, MemoryPlan, ALIGN};
