//! Analyses that ship with the pass manager.
//!
//! Calibration statistics and channel-coupling groups live in `pare-analysis`; the cost
//! model is here because every pipeline report uses it.

mod cost;
pub use cost::{CostAnalysis, NodeCost};
