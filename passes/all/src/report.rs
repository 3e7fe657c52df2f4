//! Analysis printers: passes that compute an analysis, change nothing, and put a summary in
//! the pipeline report. `pare opt --calib DIR --passes calibrate,...` runs calibration once up
//! front (with a progress bar) and every later pass that asks for it reuses the result.

use pare_analysis::{CalibStats, CouplingGroups};
use pare_ir::Graph;
use pare_pass::analyses::{CostAnalysis, MemoryPlan};
use pare_pass::{Pass, PassContext, PassError, PassReport};

/// `calibrate`: computes [`CalibStats`] (needs `--calib`) and reports its size.
#[derive(Default)]
pub struct Calibrate;

impl Pass for Calibrate {
    fn name(&self) -> &str {
        "calibrate"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let s = cx.analysis::<CalibStats>(g)?;
        let mut r = PassReport::unchanged()
            .with_stat("samples", s.num_samples as u64)
            .with_stat("tensors", s.values().count() as u64)
            .with_stat("hessians", s.hessians().count() as u64);
        r.note(format!(
            "{} samples; ranges and histograms of {} tensors; XᵀX of {} linear layers",
            s.num_samples,
            s.values().count(),
            s.hessians().count()
        ));
        for (n, why) in &s.skipped_hessians {
            r.note(format!("no XᵀX for '{}': {why}", g.node(*n).name));
        }
        Ok(r)
    }
}

/// `coupling`: computes [`CouplingGroups`] and reports how much could be pruned.
#[derive(Default)]
pub struct Coupling;

impl Pass for Coupling {
    fn name(&self) -> &str {
        "coupling"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let c = cx.analysis::<CouplingGroups>(g)?;
        let s = c.summary();
        let mut r = PassReport::unchanged()
            .with_stat("groups", s.groups as u64)
            .with_stat("prunable-groups", s.prunable_groups as u64)
            .with_stat("prunable-channels", s.prunable_channels as u64);
        r.note(format!(
            "{} channel groups, {} prunable ({} units, {} channels)",
            s.groups, s.prunable_groups, s.prunable_units, s.prunable_channels
        ));
        Ok(r)
    }
}

/// `cost`: computes the cost model and reports activation memory and, for static shapes, the
/// static memory plan's arena size.
#[derive(Default)]
pub struct Cost;

impl Pass for Cost {
    fn name(&self) -> &str {
        "cost"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let c = cx.analysis::<CostAnalysis>(g)?;
        let mut r = PassReport::unchanged()
            .with_stat("params", c.summary.params)
            .with_stat("flops", c.summary.flops)
            .with_stat("peak-activation-bytes", c.peak_activation_bytes);
        r.note(format!(
            "params {}, weight bytes {}, FLOPs {}, activations {} bytes in total, peak {} bytes \
             (sequential run), {} values of unknown size",
            c.summary.params,
            c.summary.bytes(),
            c.summary.flops,
            c.activation_bytes,
            c.peak_activation_bytes,
            c.unknown_size_values
        ));
        match cx.analysis::<MemoryPlan>(g) {
            Ok(p) => {
                r.add_stat("arena-bytes", p.arena_bytes);
                r.note(format!(
                    "static memory plan: arena {} bytes for {} intermediates ({} bytes without \
                     reuse, live peak {} bytes)",
                    p.arena_bytes,
                    p.buffers.len(),
                    p.total_bytes,
                    p.peak_live_bytes
                ));
            }
            Err(e) => r.note(format!("no static memory plan: {e}")),
        }
        Ok(r)
    }
}
