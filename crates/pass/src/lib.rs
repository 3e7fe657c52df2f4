//! pare's pass manager.
//!
//! - [`Pass`]: a named transformation `run(&mut Graph, &mut PassContext) -> PassReport`.
//! - [`Analysis`]: a read-only fact computed on demand and cached in the [`PassContext`] by
//!   type; dropped after a pass that changed the graph unless the pass preserves it.
//! - [`Registry`]: passes by kebab-case name with documented options, and the pipeline
//!   syntax `canonicalize,prune-channels(ratio=0.3),quantize(bits=4,group=128)`.
//! - [`PassManager`]: runs a pipeline with verify-each, IR printing, timing, statistics and a
//!   reproducer on failure, and returns a [`PipelineReport`].
//! - [`SampleSet`]: calibration / evaluation inputs; [`fidelity`]: output comparison metrics;
//!   [`filetest`]: the `*.ir` file test runner.
//!
//! The authoring guide is docs/passes.md.
#![deny(missing_docs)]

pub mod analyses;
mod context;
mod error;
pub mod fidelity;
pub mod filetest;
mod manager;
mod pass;
mod registry;
pub mod samples;
pub mod search;

pub use context::{Analysis, LatencyProbe, PassContext};
pub use error::PassError;
pub use manager::{
    check_graph, timing_table, GraphStats, Instrumentation, Measure, PassManager, PipelineReport,
    StepReport,
};
pub use pass::{Pass, PassReport, Preserved, TypeIdOrd};
pub use registry::{
    parse_pipeline, OptionInfo, PassFactory, PassInfo, PassOptions, RawValue, Registry, Step,
    StepSpec,
};
pub use samples::{Sample, SampleSet};

/// Builds `pipeline` from `registry` and runs it on `g` with default instrumentation (plus
/// verify-each): the one-call form for tests and scripts.
pub fn run_pipeline(
    registry: &Registry,
    pipeline: &str,
    g: &mut pare_ir::Graph,
    cx: &mut PassContext,
) -> Result<PipelineReport, PassError> {
    let steps = registry.build(pipeline)?;
    let instr = Instrumentation {
        verify_each: true,
        ..Instrumentation::default()
    };
    PassManager::new(pipeline, steps, instr).run(g, cx)
}
