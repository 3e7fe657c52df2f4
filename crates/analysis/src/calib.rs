//! Calibration statistics: per-value ranges, moments and histograms, per-channel ranges of
//! the activations that feed Conv/MatMul/Gemm, and the input second moment `H = XᵀX` of
//! every linear layer.
//!
//! See [`CalibStats`].

use crate::histogram::{Histogram, DEFAULT_BINS};
use pare_interp::{Interpreter, Value};
use pare_ir::{DType, Graph, NodeId, Op, ValueDef, ValueId};
use pare_pass::{Analysis, PassContext, PassError, SampleSet};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// What [`CalibStats::collect`] records and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibConfig {
    /// Histogram bins per value (a power of two; 0 = no histograms).
    pub bins: usize,
    /// Record per-channel min/max of the activation inputs of Conv/MatMul/Gemm.
    pub channel_ranges: bool,
    /// Record `XᵀX` of linear layers.
    pub hessians: bool,
    /// Largest row (patch) length `K` for which `XᵀX` is kept: a `K×K` f64 matrix per
    /// group. Layers above it are listed in [`CalibStats::skipped_hessians`].
    pub hessian_max_k: usize,
    /// Budget for all `XᵀX` matrices together, in bytes; layers past it are skipped (in
    /// topological order) and listed in [`CalibStats::skipped_hessians`].
    pub hessian_max_bytes: usize,
    /// Use at most this many samples (all when `None`).
    pub max_samples: Option<usize>,
}

impl Default for CalibConfig {
    fn default() -> Self {
        CalibConfig {
            bins: DEFAULT_BINS,
            channel_ranges: true,
            hessians: true,
            hessian_max_k: 4096,
            hessian_max_bytes: 2 << 30,
            max_samples: None,
        }
    }
}

/// Statistics of one float value over every element of every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueStats {
    /// Smallest finite element (`+inf` when none).
    pub min: f32,
    /// Largest finite element (`-inf` when none).
    pub max: f32,
    /// Number of finite elements.
    pub count: u64,
    /// Number of NaN / infinite elements (excluded from everything else).
    pub nonfinite: u64,
    /// Sum of the finite elements.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_sq: f64,
    /// Histogram of the finite elements (empty, 0 bins used, when disabled).
    pub histogram: Histogram,
}

impl ValueStats {
    fn new(bins: usize) -> ValueStats {
        ValueStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            nonfinite: 0,
            sum: 0.0,
            sum_sq: 0.0,
            histogram: Histogram::new(bins.max(2)),
        }
    }

    /// `max(|min|, |max|)` (0 when empty).
    pub fn absmax(&self) -> f32 {
        if self.count == 0 {
            0.0
        } else {
            self.min.abs().max(self.max.abs())
        }
    }

    /// Mean of the finite elements (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Population variance of the finite elements (0 when empty).
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / self.count as f64 - m * m).max(0.0)
    }

    /// `(min, max)`, or `None` when no finite element was seen.
    pub fn range(&self) -> Option<(f32, f32)> {
        (self.count > 0).then_some((self.min, self.max))
    }
}

/// Per-channel min/max of a value along `axis`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelRange {
    /// The channel axis.
    pub axis: usize,
    /// Per channel smallest finite element (`+inf` when none).
    pub min: Vec<f32>,
    /// Per channel largest finite element (`-inf` when none).
    pub max: Vec<f32>,
}

impl ChannelRange {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.min.len()
    }
}

/// How a linear layer's input is cut into rows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowLayout {
    /// MatMul / Gemm: rows are the vectors along the input's channel (`K`) axis; for Gemm
    /// with `transA` the columns of `A`.
    Dense {
        /// Input is `[K, M]` (Gemm `transA`).
        transposed: bool,
    },
    /// Conv (1-D or 2-D): rows are im2col patches `(c, ky, kx)` of one group, one per
    /// output position; zero padding contributes zeros.
    Conv {
        /// Group count.
        group: usize,
        /// Kernel extents (kh, kw); 1-D convs have kh = 1.
        kernel: [usize; 2],
        /// Strides (h, w).
        strides: [usize; 2],
        /// Dilations (h, w).
        dilations: [usize; 2],
        /// Explicit pads (top, left, bottom, right), used when `auto_pad` is NOTSET.
        pads: [usize; 4],
        /// `auto_pad`: NOTSET, SAME_UPPER, SAME_LOWER or VALID.
        auto_pad: String,
    },
}

/// The input second moment of a linear layer: `H = Σ xᵢ xᵢᵀ` over every row `xᵢ` of the
/// layer's input (im2col patch for convolutions) in every sample, in f64.
///
/// `H / rows` estimates `E[x xᵀ]`; GPTQ / OBS use `2H` as the layer-wise Hessian of the
/// squared output error, SliceGPT and low-rank passes its eigenvectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Hessian {
    /// The value whose rows were accumulated.
    pub input: ValueId,
    /// Row length: `K` of MatMul/Gemm, `C_in/group · kh · kw` of Conv.
    pub k: usize,
    /// Independent blocks: 1, or the conv group count (block `g` is over the input channels
    /// of group `g`).
    pub groups: usize,
    /// Rows accumulated per group (over all samples).
    pub rows: u64,
    /// `groups × K × K`, row-major.
    pub data: Vec<f64>,
    /// How rows were formed.
    pub layout: RowLayout,
}

impl Hessian {
    /// The `K×K` block of group `g` (row-major).
    pub fn block(&self, g: usize) -> &[f64] {
        let kk = self.k * self.k;
        &self.data[(g * kk).min(self.data.len())..((g + 1) * kk).min(self.data.len())]
    }

    /// Element `(i, j)` of group `g`'s block.
    pub fn get(&self, g: usize, i: usize, j: usize) -> Option<f64> {
        (g < self.groups && i < self.k && j < self.k)
            .then(|| self.data[g * self.k * self.k + i * self.k + j])
    }
}

/// Calibration statistics of a graph over a set of samples.
///
/// **What it computes.** The interpreter runs every calibration sample; an observer sees each
/// top-level graph input and node output as it is computed (values inside If/Loop/Scan bodies
/// and constants are not observed) and accumulates, without keeping any activation:
/// - for every float value (f32, f16, bf16, f64): min, max, count, sum, sum of squares, the
///   number of non-finite elements, and a symmetric histogram ([`Histogram`]: 2048 bins,
///   range grown by exact power-of-two bin merging, so one pass suffices; see its docs for
///   the comparison with onnxruntime's collector and a two-pass scheme);
/// - per-channel min/max of the non-constant float inputs of Conv (axis 1), MatMul (the `K`
///   axis: last of `A`, second to last of `B`) and Gemm (the `K` axis of `A`/`B` given
///   `transA`/`transB`);
/// - for every linear layer (MatMul / Gemm whose right operand `B` is a constant 2-D weight,
///   Conv with a constant weight, 1-D or 2-D, any group count) the input second moment
///   [`Hessian`] `H = XᵀX` in f64 with its row count. Layers that read the same value the
///   same way (Q/K/V projections) share one matrix (`Arc`). Layers whose `K` exceeds
///   [`CalibConfig::hessian_max_k`], 3-D convolutions, and layers beyond the memory budget
///   are skipped and listed with the reason.
///
/// **What it needs.** Calibration samples in the [`PassContext`]
/// (`cx.require_samples("calibration")`, i.e. `--calib DIR`); shapes may differ between
/// samples except along channel axes.
///
/// **Guarantees.** Keys are the graph's [`ValueId`]s / [`NodeId`]s at computation time (the
/// pass cache drops the analysis when the graph changes). Statistics are exact sums over all
/// samples (histogram bin boundaries aside); `XᵀX` is accumulated in f64.
#[derive(Clone, Debug, Default)]
pub struct CalibStats {
    /// Number of samples run.
    pub num_samples: usize,
    values: HashMap<ValueId, ValueStats>,
    channels: HashMap<ValueId, Vec<ChannelRange>>,
    hessians: HashMap<NodeId, Arc<Hessian>>,
    /// Linear layers without a Hessian, and why.
    pub skipped_hessians: Vec<(NodeId, String)>,
    /// Channel ranges dropped (channel count changed between samples), and why.
    pub skipped_channels: Vec<(ValueId, String)>,
}

impl Analysis for CalibStats {
    const NAME: &'static str = "calibration";

    fn compute(g: &Graph, cx: &mut PassContext) -> Result<Self, PassError> {
        let samples = cx.require_samples(Self::NAME)?;
        let pb = cx.progress_bar(samples.len() as u64, "calibrating");
        let interp = cx.interpreter().cache_constants(true);
        let r = CalibStats::collect_with_progress(
            g,
            &samples,
            &interp,
            &CalibConfig::default(),
            &mut |_| pb.inc(1),
        );
        pb.finish_and_clear();
        r
    }
}

impl CalibStats {
    /// Runs every sample of `samples` through `interp` and collects the statistics.
    pub fn collect(
        g: &Graph,
        samples: &SampleSet,
        interp: &Interpreter,
        config: &CalibConfig,
    ) -> Result<CalibStats, PassError> {
        Self::collect_with_progress(g, samples, interp, config, &mut |_| {})
    }

    /// [`CalibStats::collect`] calling `progress(i)` after sample `i`.
    pub fn collect_with_progress(
        g: &Graph,
        samples: &SampleSet,
        interp: &Interpreter,
        config: &CalibConfig,
        progress: &mut dyn FnMut(usize),
    ) -> Result<CalibStats, PassError> {
        let mut st = Collector::new(g, config);
        let n = config
            .max_samples
            .unwrap_or(usize::MAX)
            .min(samples.samples.len());
        for (i, s) in samples.samples.iter().take(n).enumerate() {
            let inputs = s.values()?;
            interp.run_observed(g, inputs, &mut |v, val| st.observe(v, val))?;
            progress(i);
        }
        Ok(st.finish(n))
    }

    /// Statistics of value `v` (a float graph input or node output).
    pub fn stats(&self, v: ValueId) -> Option<&ValueStats> {
        self.values.get(&v)
    }

    /// `(min, max)` of value `v`.
    pub fn range(&self, v: ValueId) -> Option<(f32, f32)> {
        self.values.get(&v).and_then(ValueStats::range)
    }

    /// Histogram of value `v`.
    pub fn histogram(&self, v: ValueId) -> Option<&Histogram> {
        self.values.get(&v).map(|s| &s.histogram)
    }

    /// Per-channel range of value `v` along `axis`.
    pub fn channel_range(&self, v: ValueId, axis: usize) -> Option<&ChannelRange> {
        self.channels.get(&v)?.iter().find(|c| c.axis == axis)
    }

    /// Every per-channel range recorded for `v`.
    pub fn channel_ranges(&self, v: ValueId) -> &[ChannelRange] {
        self.channels.get(&v).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The per-channel range of the activation operand of `node` (Conv input, MatMul/Gemm
    /// `A`) along its channel axis.
    pub fn input_channel_range(&self, g: &Graph, node: NodeId) -> Option<&ChannelRange> {
        channel_inputs(g, node)
            .into_iter()
            .find_map(|(v, axis)| self.channel_range(v, axis))
    }

    /// `XᵀX` of linear layer `node`.
    pub fn hessian(&self, node: NodeId) -> Option<&Hessian> {
        self.hessians.get(&node).map(|h| h.as_ref())
    }

    /// `XᵀX` of `node`, shared.
    pub fn hessian_arc(&self, node: NodeId) -> Option<Arc<Hessian>> {
        self.hessians.get(&node).cloned()
    }

    /// Values with statistics.
    pub fn values(&self) -> impl Iterator<Item = (ValueId, &ValueStats)> + '_ {
        self.values.iter().map(|(&v, s)| (v, s))
    }

    /// Linear layers with a Hessian.
    pub fn hessians(&self) -> impl Iterator<Item = (NodeId, &Hessian)> + '_ {
        self.hessians.iter().map(|(&n, h)| (n, h.as_ref()))
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

fn rank_of(g: &Graph, v: ValueId) -> Option<usize> {
    g.value(v).ty.shape.as_ref().map(|s| s.rank())
}

fn is_const(g: &Graph, v: ValueId) -> bool {
    matches!(g.value(v).def(), ValueDef::Const(_))
}

/// The non-constant operands of a Conv/MatMul/Gemm node with their channel (`K`) axis.
pub fn channel_inputs(g: &Graph, n: NodeId) -> Vec<(ValueId, usize)> {
    let node = g.node(n);
    let mut out = Vec::new();
    let mut push = |i: usize, axis: Option<usize>| {
        if let (Some(v), Some(a)) = (node.input(i), axis) {
            if !is_const(g, v) {
                out.push((v, a));
            }
        }
    };
    match &node.op {
        Op::Conv(_) => push(0, Some(1)),
        Op::MatMul => {
            if let Some(v) = node.input(0) {
                push(0, rank_of(g, v).and_then(|r| r.checked_sub(1)));
            }
            if let Some(v) = node.input(1) {
                push(1, rank_of(g, v).and_then(|r| r.checked_sub(2)));
            }
        }
        Op::Gemm(a) => {
            push(0, Some(if a.trans_a { 0 } else { 1 }));
            push(1, Some(if a.trans_b { 1 } else { 0 }));
        }
        _ => {}
    }
    out
}

/// One `XᵀX` accumulator, possibly shared by several nodes.
struct Plan {
    nodes: Vec<NodeId>,
    input: ValueId,
    k: usize,
    groups: usize,
    layout: RowLayout,
    data: Vec<f64>,
    rows: u64,
    failed: Option<String>,
}

struct Collector {
    bins: usize,
    values: HashMap<ValueId, ValueStats>,
    tracked: Vec<bool>,
    channel_axes: HashMap<ValueId, Vec<usize>>,
    channels: HashMap<ValueId, Vec<ChannelRange>>,
    skipped_channels: Vec<(ValueId, String)>,
    plans: Vec<Plan>,
    plans_by_input: HashMap<ValueId, Vec<usize>>,
    skipped: Vec<(NodeId, String)>,
}

fn ints2(v: &Option<Vec<i64>>, default: usize, rank1: bool) -> Option<[usize; 2]> {
    let Some(x) = v else {
        return Some([default, default]);
    };
    let u: Vec<usize> = x
        .iter()
        .map(|&e| usize::try_from(e).ok())
        .collect::<Option<_>>()?;
    match (rank1, u.as_slice()) {
        (true, [a]) => Some([1, *a]),
        (false, [a, b]) => Some([*a, *b]),
        _ => None,
    }
}

impl Collector {
    fn new(g: &Graph, cfg: &CalibConfig) -> Collector {
        let mut tracked = vec![false; g.value_capacity()];
        for &v in g.inputs() {
            tracked[v.index()] = true;
        }
        for n in g.node_ids() {
            for &o in g.node(n).outputs() {
                tracked[o.index()] = true;
            }
        }
        // Only float values (an unknown dtype is decided when the value is seen).
        for (i, t) in tracked.iter_mut().enumerate() {
            if let Some(d) = g.value(ValueId(i as u32)).ty.dtype {
                *t &= is_float(d);
            }
        }
        let mut channel_axes: HashMap<ValueId, Vec<usize>> = HashMap::new();
        if cfg.channel_ranges {
            for n in g.node_ids() {
                for (v, a) in channel_inputs(g, n) {
                    let e = channel_axes.entry(v).or_default();
                    if !e.contains(&a) {
                        e.push(a);
                    }
                }
            }
        }
        let mut c = Collector {
            bins: cfg.bins,
            values: HashMap::new(),
            tracked,
            channel_axes,
            channels: HashMap::new(),
            skipped_channels: Vec::new(),
            plans: Vec::new(),
            plans_by_input: HashMap::new(),
            skipped: Vec::new(),
        };
        if cfg.hessians {
            c.plan_hessians(g, cfg);
        }
        c
    }

    fn plan_hessians(&mut self, g: &Graph, cfg: &CalibConfig) {
        let order = g.topo_order().unwrap_or_default();
        let mut bytes = 0usize;
        for n in order {
            let node = g.node(n);
            let weight = |i: usize| node.input(i).and_then(|v| g.constant(v));
            let plan: Result<Option<(ValueId, usize, usize, RowLayout)>, String> =
                match &node.op {
                    Op::MatMul => match (node.input(0), weight(1)) {
                        (Some(x), Some(w)) if w.shape().len() == 2 && !is_const(g, x) => Ok(Some(
                            (x, w.shape()[0], 1, RowLayout::Dense { transposed: false }),
                        )),
                        _ => Ok(None),
                    },
                    Op::Gemm(a) => match (node.input(0), weight(1)) {
                        (Some(x), Some(w)) if w.shape().len() == 2 && !is_const(g, x) => {
                            let k = if a.trans_b {
                                w.shape()[1]
                            } else {
                                w.shape()[0]
                            };
                            Ok(Some((
                                x,
                                k,
                                1,
                                RowLayout::Dense {
                                    transposed: a.trans_a,
                                },
                            )))
                        }
                        _ => Ok(None),
                    },
                    Op::Conv(a) => match (node.input(0), weight(1)) {
                        (Some(x), Some(w)) if !is_const(g, x) => {
                            let ws = w.shape();
                            let group = usize::try_from(a.group).unwrap_or(0);
                            let rank1 = ws.len() == 3;
                            if ws.len() != 4 && !rank1 {
                                Err(format!(
                                    "{}-D convolution not supported",
                                    ws.len().saturating_sub(2)
                                ))
                            } else if group == 0 {
                                Err("invalid group".into())
                            } else {
                                let kernel = if rank1 { [1, ws[2]] } else { [ws[2], ws[3]] };
                                let pads = match &a.pads {
                                    None => Some([0; 4]),
                                    Some(p) if rank1 && p.len() == 2 => Some([
                                        0,
                                        usize::try_from(p[0]).unwrap_or(0),
                                        0,
                                        usize::try_from(p[1]).unwrap_or(0),
                                    ]),
                                    Some(p) if !rank1 && p.len() == 4 => {
                                        let mut o = [0usize; 4];
                                        for (d, s) in o.iter_mut().zip(p) {
                                            *d = usize::try_from(*s).unwrap_or(0);
                                        }
                                        Some(o)
                                    }
                                    _ => None,
                                };
                                match (
                                    ints2(&a.strides, 1, rank1),
                                    ints2(&a.dilations, 1, rank1),
                                    pads,
                                ) {
                                    (Some(strides), Some(dilations), Some(pads)) => Ok(Some((
                                        x,
                                        ws[1] * kernel[0] * kernel[1],
                                        group,
                                        RowLayout::Conv {
                                            group,
                                            kernel,
                                            strides,
                                            dilations,
                                            pads,
                                            auto_pad: a.auto_pad.clone(),
                                        },
                                    ))),
                                    _ => Err("unsupported strides/dilations/pads".into()),
                                }
                            }
                        }
                        _ => Ok(None),
                    },
                    _ => Ok(None),
                };
            let (x, k, groups, layout) = match plan {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    self.skipped.push((n, e));
                    continue;
                }
            };
            if let Some(&pi) = self.plans_by_input.get(&x).and_then(|ps| {
                ps.iter()
                    .find(|&&pi| self.plans[pi].layout == layout && self.plans[pi].k == k)
            }) {
                self.plans[pi].nodes.push(n);
                continue;
            }
            if k > cfg.hessian_max_k {
                self.skipped.push((
                    n,
                    format!("K = {k} exceeds hessian_max_k = {}", cfg.hessian_max_k),
                ));
                continue;
            }
            let need = groups.saturating_mul(k * k).saturating_mul(8);
            if bytes.saturating_add(need) > cfg.hessian_max_bytes {
                self.skipped.push((
                    n,
                    format!(
                        "XᵀX memory budget of {} bytes exhausted",
                        cfg.hessian_max_bytes
                    ),
                ));
                continue;
            }
            bytes += need;
            self.plans_by_input
                .entry(x)
                .or_default()
                .push(self.plans.len());
            self.plans.push(Plan {
                nodes: vec![n],
                input: x,
                k,
                groups,
                layout,
                data: vec![0.0; groups * k * k],
                rows: 0,
                failed: None,
            });
        }
    }

    fn observe(&mut self, v: ValueId, val: &Value) {
        if !self.tracked.get(v.index()).copied().unwrap_or(false) {
            return;
        }
        let Some(data) = as_f32(val) else {
            return;
        };
        let shape = val.shape().to_vec();
        let bins = self.bins;
        let st = self
            .values
            .entry(v)
            .or_insert_with(|| ValueStats::new(bins));
        update_stats(st, &data, bins > 0);
        if let Some(axes) = self.channel_axes.get(&v).cloned() {
            for axis in axes {
                if axis >= shape.len() {
                    continue;
                }
                let e = self.channels.entry(v).or_default();
                let pos = e.iter().position(|c| c.axis == axis);
                let c = shape[axis];
                match pos {
                    Some(p) if e[p].channels() != c => {
                        e.remove(p);
                        self.skipped_channels.push((
                            v,
                            format!("channel count along axis {axis} changed between samples"),
                        ));
                        // Do not track it again.
                        if let Some(ax) = self.channel_axes.get_mut(&v) {
                            ax.retain(|&a| a != axis);
                        }
                        break;
                    }
                    Some(p) => update_channels(&mut e[p], &data, &shape),
                    None => {
                        let mut cr = ChannelRange {
                            axis,
                            min: vec![f32::INFINITY; c],
                            max: vec![f32::NEG_INFINITY; c],
                        };
                        update_channels(&mut cr, &data, &shape);
                        e.push(cr);
                    }
                }
            }
        }
        if let Some(ps) = self.plans_by_input.get(&v) {
            for &pi in ps {
                let p = &mut self.plans[pi];
                if p.failed.is_some() {
                    continue;
                }
                if let Err(e) = accumulate(p, &data, &shape) {
                    p.failed = Some(e);
                }
            }
        }
    }

    fn finish(self, num_samples: usize) -> CalibStats {
        let mut hessians = HashMap::new();
        let mut skipped = self.skipped;
        for p in self.plans {
            if let Some(e) = p.failed {
                for n in p.nodes {
                    skipped.push((n, e.clone()));
                }
                continue;
            }
            let h = Arc::new(Hessian {
                input: p.input,
                k: p.k,
                groups: p.groups,
                rows: p.rows,
                data: p.data,
                layout: p.layout,
            });
            for n in p.nodes {
                hessians.insert(n, h.clone());
            }
        }
        CalibStats {
            num_samples,
            values: self.values,
            channels: self.channels,
            hessians,
            skipped_hessians: skipped,
            skipped_channels: self.skipped_channels,
        }
    }
}

/// The elements of a float value as a contiguous f32 slice (borrowed when possible).
fn as_f32(val: &Value) -> Option<Cow<'_, [f32]>> {
    Some(match val {
        Value::F32(a) => match a.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        },
        Value::F64(a) => Cow::Owned(a.iter().map(|&x| x as f32).collect()),
        Value::F16(a) => Cow::Owned(a.iter().map(|x| x.to_f32()).collect()),
        Value::BF16(a) => Cow::Owned(a.iter().map(|x| x.to_f32()).collect()),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
struct Partial {
    min: f32,
    max: f32,
    count: u64,
    nonfinite: u64,
    sum: f64,
    sum_sq: f64,
}

impl Partial {
    const EMPTY: Partial = Partial {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        count: 0,
        nonfinite: 0,
        sum: 0.0,
        sum_sq: 0.0,
    };
    fn of(xs: &[f32]) -> Partial {
        let mut p = Partial::EMPTY;
        for &x in xs {
            if x.is_finite() {
                p.min = p.min.min(x);
                p.max = p.max.max(x);
                p.count += 1;
                let d = x as f64;
                p.sum += d;
                p.sum_sq += d * d;
            } else {
                p.nonfinite += 1;
            }
        }
        p
    }
    fn merge(a: Partial, b: Partial) -> Partial {
        Partial {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            count: a.count + b.count,
            nonfinite: a.nonfinite + b.nonfinite,
            sum: a.sum + b.sum,
            sum_sq: a.sum_sq + b.sum_sq,
        }
    }
}

const CHUNK: usize = 1 << 16;

fn update_stats(st: &mut ValueStats, data: &[f32], histogram: bool) {
    let p = if data.len() > CHUNK {
        data.par_chunks(CHUNK)
            .map(Partial::of)
            .reduce(|| Partial::EMPTY, Partial::merge)
    } else {
        Partial::of(data)
    };
    st.min = st.min.min(p.min);
    st.max = st.max.max(p.max);
    st.count += p.count;
    st.nonfinite += p.nonfinite;
    st.sum += p.sum;
    st.sum_sq += p.sum_sq;
    if histogram && p.count > 0 {
        let absmax = p.min.abs().max(p.max.abs());
        st.histogram.grow_to(absmax as f64);
        if data.len() > CHUNK {
            let h = &st.histogram;
            let n = h.bins();
            let counts = data.par_chunks(CHUNK).map(|c| h.bin_counts(c)).reduce(
                || vec![0u64; n],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(&b) {
                        *x += y;
                    }
                    a
                },
            );
            st.histogram.add_counts(&counts);
        } else {
            let counts = st.histogram.bin_counts(data);
            st.histogram.add_counts(&counts);
        }
    }
}

fn update_channels(cr: &mut ChannelRange, data: &[f32], shape: &[usize]) {
    let axis = cr.axis;
    let c = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    if c == 0 || inner == 0 {
        return;
    }
    for o in 0..outer {
        for ch in 0..c {
            let start = (o * c + ch) * inner;
            let Some(slice) = data.get(start..start + inner) else {
                return;
            };
            let (mut lo, mut hi) = (cr.min[ch], cr.max[ch]);
            for &x in slice {
                if x.is_finite() {
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            cr.min[ch] = lo;
            cr.max[ch] = hi;
        }
    }
}

/// Adds `XᵀX` of the rows of `data` to the plan.
fn accumulate(p: &mut Plan, data: &[f32], shape: &[usize]) -> Result<(), String> {
    let k = p.k;
    let rows = p.layout.rows(k, data, shape)?;
    for gi in 0..rows.groups() {
        let block = &mut p.data[gi * k * k..(gi + 1) * k * k];
        syrk_rows(block, k, rows.count(), &|r, out: &mut [f64]| {
            rows.fill(gi, r, out)
        });
    }
    p.rows += rows.count() as u64;
    Ok(())
}

/// The rows of a linear layer's input as [`Hessian`] accumulates them (see
/// [`RowLayout::rows`]).
pub struct Rows<'a> {
    data: &'a [f32],
    k: usize,
    count: usize,
    kind: RowsKind,
}

enum RowsKind {
    /// Row `r` is `data[r·rs + i·cs]`, `i < k`.
    Dense { rs: usize, cs: usize },
    /// im2col of an `[n, c, h, w]` input.
    Conv {
        groups: usize,
        c: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
    },
}

impl RowLayout {
    /// The rows of `data` (shape `shape`), a layer input of this layout whose rows have `k`
    /// elements: the input vectors along `K` of a MatMul/Gemm, or the im2col patches
    /// `(c, ky, kx)` of each output position (batch-major, then output row, then column) of
    /// each conv group.
    pub fn rows<'a>(&self, k: usize, data: &'a [f32], shape: &[usize]) -> Result<Rows<'a>, String> {
        match self {
            RowLayout::Dense { transposed } => {
                let (count, rs, cs) = if *transposed {
                    // [K, M]: row r is column r.
                    if shape.len() != 2 || shape[0] != k {
                        return Err(format!("input shape {shape:?} does not match K = {k}"));
                    }
                    (shape[1], 1usize, shape[1])
                } else {
                    if shape.last() != Some(&k) {
                        return Err(format!("input shape {shape:?} does not match K = {k}"));
                    }
                    (data.len() / k.max(1), k, 1usize)
                };
                Ok(Rows {
                    data,
                    k,
                    count,
                    kind: RowsKind::Dense { rs, cs },
                })
            }
            RowLayout::Conv {
                group,
                kernel,
                strides,
                dilations,
                pads,
                auto_pad,
            } => {
                // [N, C, H, W] or [N, C, L] (as H = 1).
                let (n, c, h, w) = match shape {
                    [n, c, l] => (*n, *c, 1, *l),
                    [n, c, h, w] => (*n, *c, *h, *w),
                    _ => return Err(format!("conv input shape {shape:?} not supported")),
                };
                let g = *group;
                if g == 0 || c % g != 0 || (c / g) * kernel[0] * kernel[1] != k {
                    return Err(format!(
                        "conv input shape {shape:?} does not match the weight"
                    ));
                }
                if data.len() < n * c * h * w {
                    return Err(format!("conv input holds fewer elements than {shape:?}"));
                }
                let mut pd = *pads;
                let mut out = [0usize; 2];
                for (d, &len) in [h, w].iter().enumerate() {
                    let eff = dilations[d] * (kernel[d].max(1) - 1) + 1;
                    let s = strides[d].max(1);
                    match auto_pad.as_str() {
                        "SAME_UPPER" | "SAME_LOWER" => {
                            let o = len.div_ceil(s);
                            let total = ((o.max(1) - 1) * s + eff).saturating_sub(len);
                            let (b, e) = if auto_pad == "SAME_UPPER" {
                                (total / 2, total - total / 2)
                            } else {
                                (total - total / 2, total / 2)
                            };
                            pd[d] = b;
                            pd[d + 2] = e;
                        }
                        "VALID" => {
                            pd[d] = 0;
                            pd[d + 2] = 0;
                        }
                        _ => {}
                    }
                    let padded = len + pd[d] + pd[d + 2];
                    if padded < eff {
                        return Err("kernel larger than the padded input".into());
                    }
                    out[d] = (padded - eff) / s + 1;
                }
                Ok(Rows {
                    data,
                    k,
                    count: n * out[0] * out[1],
                    kind: RowsKind::Conv {
                        groups: g,
                        c,
                        h,
                        w,
                        oh: out[0],
                        ow: out[1],
                        kernel: *kernel,
                        strides: *strides,
                        dilations: *dilations,
                        pads: pd,
                    },
                })
            }
        }
    }
}

impl Rows<'_> {
    /// Rows per group.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Row length.
    pub fn len(&self) -> usize {
        self.k
    }

    /// True when rows are empty.
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }

    /// Independent groups (conv groups; 1 for MatMul/Gemm).
    pub fn groups(&self) -> usize {
        match self.kind {
            RowsKind::Dense { .. } => 1,
            RowsKind::Conv { groups, .. } => groups,
        }
    }

    /// Writes row `r` of group `gi` into `out` (`out.len() >= k`; zero padding gives 0).
    pub fn fill(&self, gi: usize, r: usize, out: &mut [f64]) {
        let data = self.data;
        match self.kind {
            RowsKind::Dense { rs, cs } => {
                for (i, o) in out.iter_mut().take(self.k).enumerate() {
                    *o = data[r * rs + i * cs] as f64;
                }
            }
            RowsKind::Conv {
                groups,
                c,
                h,
                w,
                oh,
                ow,
                kernel: [kh, kw],
                strides,
                dilations,
                pads: pd,
            } => {
                let cg = c / groups.max(1);
                let ni = r / (oh * ow);
                let oy = (r / ow) % oh;
                let ox = r % ow;
                let mut idx = 0;
                for cl in 0..cg {
                    let ch = gi * cg + cl;
                    let base = (ni * c + ch) * h * w;
                    for ky in 0..kh {
                        let iy = (oy * strides[0] + ky * dilations[0]) as isize - pd[0] as isize;
                        for kx in 0..kw {
                            let ix =
                                (ox * strides[1] + kx * dilations[1]) as isize - pd[1] as isize;
                            out[idx] =
                                if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                                    data[base + iy as usize * w + ix as usize] as f64
                                } else {
                                    0.0
                                };
                            idx += 1;
                        }
                    }
                }
            }
        }
    }
}

/// `h += Σ_r x_r x_rᵀ` over `rows` rows of length `k`, each produced by `fill(r, buf)`;
/// rows are gathered into f64 chunks of about 4M elements and multiplied with `gemm`.
fn syrk_rows(h: &mut [f64], k: usize, rows: usize, fill: &(dyn Fn(usize, &mut [f64]) + Sync)) {
    if k == 0 || rows == 0 || h.len() < k * k {
        return;
    }
    let chunk_rows = ((1usize << 22) / k).clamp(1, rows);
    let mut buf = vec![0f64; chunk_rows * k];
    let mut r0 = 0;
    while r0 < rows {
        let nr = chunk_rows.min(rows - r0);
        let x = &mut buf[..nr * k];
        x.par_chunks_mut(k)
            .enumerate()
            .for_each(|(i, row)| fill(r0 + i, row));
        let par = if k * k * nr > 1 << 20 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: `h` holds at least k·k elements (checked above), written as a row-major
        // k×k matrix (row stride k, column stride 1) and exclusively borrowed. `x` holds
        // nr·k initialized elements; lhs = xᵀ reads x[r·k + i] for i < k, r < nr (column
        // stride k, row stride 1) and rhs = x reads x[r·k + j] (row stride k, column stride
        // 1): every offset is below nr·k. `read_dst` is set and `h` is initialized.
        unsafe {
            gemm::gemm(
                k,
                k,
                nr,
                h.as_mut_ptr(),
                1,
                k as isize,
                true,
                x.as_ptr(),
                k as isize,
                1,
                x.as_ptr(),
                1,
                k as isize,
                1.0f64,
                1.0f64,
                false,
                false,
                false,
                par,
            );
        }
        r0 += nr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syrk_matches_naive() {
        let k = 5;
        let rows = 37;
        let x: Vec<f64> = (0..rows * k)
            .map(|i| ((i * 7919) % 13) as f64 - 6.0)
            .collect();
        let mut h = vec![1.0; k * k];
        syrk_rows(&mut h, k, rows, &|r, out: &mut [f64]| {
            out.copy_from_slice(&x[r * k..(r + 1) * k])
        });
        for i in 0..k {
            for j in 0..k {
                let want: f64 = 1.0 + (0..rows).map(|r| x[r * k + i] * x[r * k + j]).sum::<f64>();
                assert_eq!(h[i * k + j], want);
            }
        }
    }
}
