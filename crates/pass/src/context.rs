//! Analyses, their cache, and the context a pass runs in.

use crate::{PassError, Preserved, SampleSet};
use indicatif::{ProgressBar, ProgressStyle};
use pare_interp::Interpreter;
use pare_ir::Graph;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A read-only fact about a graph, computed on demand and cached by type.
///
/// The cache drops an analysis after any pass that changed the graph unless the pass lists it
/// in [`crate::PassReport::preserve`]. As a safety net the cache also recomputes an analysis
/// whose graph has gained or lost nodes or values since it was computed; a pass that edits a
/// graph and then asks for an analysis again within its own `run` should still call
/// [`PassContext::invalidate`] itself, since in-place op edits are not detected.
pub trait Analysis: Send + Sync + Sized + 'static {
    /// Name used in errors and reports.
    const NAME: &'static str;

    /// Computes the analysis. May ask `cx` for other analyses.
    fn compute(g: &Graph, cx: &mut PassContext) -> Result<Self, PassError>;
}

/// Measures compiled latency: what a pass that trades accuracy for speed asks when its budget
/// is time rather than size. The pass crates cannot compile (the backends sit above them), so
/// the caller that can — `pare opt` — installs one with [`PassContext::with_latency_probe`].
pub trait LatencyProbe: Send + Sync {
    /// Compiles every graph and times it; milliseconds per graph, in order. Implementations
    /// time the graphs in alternation so the numbers of one call compare with each other.
    fn latencies(&self, graphs: &[&Graph]) -> Result<Vec<f64>, String>;
}

type Fingerprint = (usize, usize, usize);

fn fingerprint(g: &Graph) -> Fingerprint {
    (g.node_capacity(), g.value_capacity(), g.num_nodes())
}

/// What a pass sees besides the graph: cached analyses, calibration samples, the graph as it
/// entered the pipeline, thread count and whether to draw progress bars.
pub struct PassContext {
    cache: HashMap<TypeId, (Fingerprint, Arc<dyn Any + Send + Sync>)>,
    samples: Option<Arc<SampleSet>>,
    input_graph: Option<Arc<Graph>>,
    latency: Option<Arc<dyn LatencyProbe>>,
    threads: usize,
    progress: bool,
    seed: u64,
}

impl Default for PassContext {
    fn default() -> Self {
        PassContext::new()
    }
}

impl PassContext {
    /// A context without calibration data, with all cores and no progress bars.
    pub fn new() -> PassContext {
        PassContext {
            cache: HashMap::new(),
            samples: None,
            input_graph: None,
            latency: None,
            threads: 0,
            progress: false,
            seed: 0x5eed,
        }
    }

    /// Sets the calibration samples.
    pub fn with_samples(mut self, s: SampleSet) -> PassContext {
        self.samples = Some(Arc::new(s));
        self
    }

    /// Sets the graph [`PassContext::input_graph`] returns (the pass manager records it itself
    /// when none is set; tests and callers that run passes one by one set it here).
    pub fn with_input_graph(mut self, g: Graph) -> PassContext {
        self.input_graph = Some(Arc::new(g));
        self
    }

    /// Replaces (or, with `None`, forgets) the recorded input graph.
    pub fn set_input_graph(&mut self, g: Option<Arc<Graph>>) {
        self.input_graph = g;
    }

    /// The graph as it entered the first pipeline run with this context (see
    /// [`crate::PassManager::run`]), before any pass changed it: for passes that need the
    /// original weights after a lossy pass replaced them (EoRA compensates a quantized weight
    /// with the dense one). Passes only read it; match its nodes and values to the current
    /// graph by name, since ids differ. Constants are shared with the original (tensor data is
    /// reference-counted), so the record costs no copy of the weights, but it keeps them alive
    /// until the context is dropped.
    pub fn input_graph(&self) -> Option<&Arc<Graph>> {
        self.input_graph.as_ref()
    }

    /// Installs the compiler-backed latency measurement (see [`LatencyProbe`]).
    pub fn with_latency_probe(mut self, p: Arc<dyn LatencyProbe>) -> PassContext {
        self.latency = Some(p);
        self
    }

    /// The latency measurement, when the caller can compile.
    pub fn latency_probe(&self) -> Option<&Arc<dyn LatencyProbe>> {
        self.latency.as_ref()
    }

    /// Sets the thread count for interpreter runs (0 = all cores).
    pub fn with_threads(mut self, n: usize) -> PassContext {
        self.threads = n;
        self
    }

    /// Turns progress bars on (the CLI does, on a terminal).
    pub fn with_progress(mut self, on: bool) -> PassContext {
        self.progress = on;
        self
    }

    /// Sets the seed for passes that sample.
    pub fn with_seed(mut self, seed: u64) -> PassContext {
        self.seed = seed;
        self
    }

    /// The seed for passes that sample.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Thread count (0 = all cores).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The calibration samples, if any were given.
    pub fn samples(&self) -> Option<&Arc<SampleSet>> {
        self.samples.as_ref()
    }

    /// The calibration samples, or an error telling the user to pass `--calib` for `who`.
    pub fn require_samples(&self, who: &str) -> Result<Arc<SampleSet>, PassError> {
        self.samples.clone().ok_or_else(|| {
            PassError::failed(
                who,
                "needs calibration data: give --calib DIR (test_data_set_N directories or \
                 directories of <input name>.npy files)",
            )
        })
    }

    /// An interpreter with the context's thread count.
    pub fn interpreter(&self) -> Interpreter {
        Interpreter::with_threads(self.threads)
    }

    /// A progress bar of `len` steps (hidden unless progress is on).
    pub fn progress_bar(&self, len: u64, message: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise}")
        {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(message.to_string());
        pb
    }

    /// Analysis `A` of `g`: the cached one when still valid, else computed now and cached.
    pub fn analysis<A: Analysis>(&mut self, g: &Graph) -> Result<Arc<A>, PassError> {
        let fp = fingerprint(g);
        if let Some((f, a)) = self.cache.get(&TypeId::of::<A>()) {
            if *f == fp {
                if let Ok(a) = a.clone().downcast::<A>() {
                    return Ok(a);
                }
            }
        }
        let a = Arc::new(A::compute(g, self)?);
        self.cache.insert(TypeId::of::<A>(), (fp, a.clone()));
        Ok(a)
    }

    /// Analysis `A` if it is cached (without computing it).
    pub fn cached<A: Analysis>(&self) -> Option<Arc<A>> {
        self.cache
            .get(&TypeId::of::<A>())
            .and_then(|(_, a)| a.clone().downcast::<A>().ok())
    }

    /// Drops every cached analysis not in `preserved`.
    pub fn invalidate(&mut self, preserved: &Preserved) {
        self.cache.retain(|t, _| preserved.keeps(*t));
    }

    /// Drops every cached analysis.
    pub fn invalidate_all(&mut self) {
        self.cache.clear();
    }

    /// Names of the cached analyses' types (for debugging).
    pub fn num_cached(&self) -> usize {
        self.cache.len()
    }
}
