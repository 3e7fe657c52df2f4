//! pare's analyses for compression passes.
//!
//! Both are [`pare_pass::Analysis`] implementations: a pass asks for them with
//! `cx.analysis::<CalibStats>(&g)?` / `cx.analysis::<CouplingGroups>(&g)?`, and the pass
//! context computes them once and caches them until a pass changes the graph.
//!
//! - [`CalibStats`]: runs the calibration samples through the reference interpreter and
//!   records, per float value, min/max/mean/count and a [`Histogram`]; per-channel ranges of
//!   the activations feeding Conv/MatMul/Gemm; and the input second moment `XᵀX` of every
//!   linear layer (im2col patches for convolutions). [`Histogram`] provides the range rules
//!   quantization uses: percentile, MSE-optimal and entropy (KL) ranges.
//! - [`CouplingGroups`]: which output channels of which nodes must be pruned or sliced
//!   together (residual merges, concatenations, depthwise/grouped convolutions, attention
//!   heads, MLP neurons), with the tensors and nodes to edit, and why a group cannot be
//!   pruned when it cannot.
//!
//! ```no_run
//! # use pare_analysis::{CalibStats, CouplingGroups};
//! # fn demo(g: &pare_ir::Graph, cx: &mut pare_pass::PassContext) -> Result<(), pare_pass::PassError> {
//! let groups = cx.analysis::<CouplingGroups>(g)?;
//! for gr in groups.prunable() {
//!     println!("{} units of {} channels", gr.units, gr.granularity);
//! }
//! let stats = cx.analysis::<CalibStats>(g)?; // needs cx.with_samples(...)
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod calib;
pub mod coupling;
pub mod histogram;

pub use calib::{CalibConfig, CalibStats, ChannelRange, Hessian, RowLayout, Rows, ValueStats};
pub use coupling::{Carrier, CouplingGroups, CouplingSummary, Group, Member, Role, Target};
pub use histogram::Histogram;
