//! Graph execution: topological order, liveness-based freeing, input checks.

use crate::dispatch::eval_op;
use crate::Value;
use pare_ir::{CycleError, DType, Dim, Graph, Op, Tensor, ValueDef, ValueId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Why a graph could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// A node failed; names the node and its op.
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        /// Node name.
        node: String,
        /// Op type.
        op: String,
        /// What went wrong.
        msg: String,
    },
    /// A graph input does not match the graph's declared input type.
    #[error("input {index} ('{name}'): {msg}")]
    Input {
        /// Position among the graph inputs.
        index: usize,
        /// Input name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// Wrong number of graph inputs.
    #[error("graph '{graph}' takes {expected} inputs, {got} were given")]
    InputCount {
        /// Graph name.
        graph: String,
        /// Declared inputs.
        expected: usize,
        /// Supplied inputs.
        got: usize,
    },
    /// The graph has a cycle.
    #[error(transparent)]
    Cycle(#[from] CycleError),
    /// A value is read but has no definition (a removed node's output, for instance).
    #[error("value '{0}' is read but not defined")]
    Undefined(String),
}

/// A calibration-style callback on computed values.
type Observer<'a> = &'a mut (dyn FnMut(ValueId, &Value) + Send);

/// Constants converted to values, keyed by their buffer (the tensor is kept to keep the
/// buffer, and so the key, alive).
type ConstCache = HashMap<(usize, usize, DType, Vec<usize>), (Tensor, Arc<Value>)>;

/// Evaluates graphs.
///
/// Options are set with builder methods: [`Interpreter::threads`],
/// [`Interpreter::check_inputs`], [`Interpreter::profile`],
/// [`Interpreter::cache_constants`]. Clones share the thread pool and the constant cache.
#[derive(Clone, Default)]
pub struct Interpreter {
    threads: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    skip_input_checks: bool,
    profile: bool,
    cache: Option<Arc<Mutex<ConstCache>>>,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("threads", &self.threads)
            .field("check_inputs", &!self.skip_input_checks)
            .field("profile", &self.profile)
            .field("cache_constants", &self.cache.is_some())
            .finish()
    }
}

impl Interpreter {
    /// An interpreter using rayon's global pool (all cores), checking inputs, without
    /// profiling or constant cache.
    pub fn new() -> Interpreter {
        Interpreter::default()
    }

    /// Shorthand for `Interpreter::new().threads(n)`.
    pub fn with_threads(n: usize) -> Interpreter {
        Interpreter::new().threads(n)
    }

    /// Uses a dedicated pool of `n` worker threads for GEMM and parallel loops (0: rayon's
    /// global pool, all cores).
    pub fn threads(mut self, n: usize) -> Interpreter {
        self.threads = n;
        self.pool = if n == 0 {
            None
        } else {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .ok()
                .map(Arc::new)
        };
        self
    }

    /// Whether top-level inputs are checked against the graph's declared input types
    /// (dtype, rank and fixed dimensions). On by default.
    pub fn check_inputs(mut self, on: bool) -> Interpreter {
        self.skip_input_checks = !on;
        self
    }

    /// Whether to print the time spent per op type to stderr after each top-level run.
    pub fn profile(mut self, on: bool) -> Interpreter {
        self.profile = on;
        self
    }

    /// Whether to keep constants converted across runs (faster repeated runs, e.g. for
    /// calibration, at the cost of holding a second copy of every weight).
    pub fn cache_constants(mut self, on: bool) -> Interpreter {
        self.cache = on.then(|| Arc::new(Mutex::new(HashMap::new())));
        self
    }

    /// Runs `g` on tensors given in `g.inputs()` order; returns the outputs in
    /// `g.outputs()` order.
    pub fn run(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        let vals = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Value::from_tensor(t).map_err(|msg| InterpError::Input {
                    index: i,
                    name: input_name(g, i),
                    msg,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .run_values(g, vals)?
            .iter()
            .map(Value::to_tensor)
            .collect())
    }

    /// Runs `g` on values given in `g.inputs()` order.
    pub fn run_values(&self, g: &Graph, inputs: Vec<Value>) -> Result<Vec<Value>, InterpError> {
        self.in_pool(|| self.exec(g, inputs, None, !self.skip_input_checks))
    }

    /// Like [`Interpreter::run_values`], calling `observer` on every graph input and every
    /// node output of the top-level graph as soon as it is computed (constants are not
    /// reported; values inside If/Loop/Scan bodies neither). Used for calibration.
    pub fn run_observed(
        &self,
        g: &Graph,
        inputs: Vec<Value>,
        observer: &mut (dyn FnMut(ValueId, &Value) + Send),
    ) -> Result<Vec<Value>, InterpError> {
        self.in_pool(|| self.exec(g, inputs, Some(observer), !self.skip_input_checks))
    }

    fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs a subgraph (no input type checks: loop-carried shapes may legitimately vary).
    pub(crate) fn run_subgraph(
        &self,
        g: &Graph,
        inputs: Vec<Value>,
    ) -> Result<Vec<Value>, InterpError> {
        self.exec(g, inputs, None, false)
    }

    fn constant(&self, g: &Graph, v: ValueId) -> Result<Arc<Value>, String> {
        let t = match g.value(v).def() {
            ValueDef::Const(t) => t,
            _ => {
                return Err(format!(
                    "value '{}' is read but not defined",
                    g.value(v).name
                ))
            }
        };
        let Some(cache) = &self.cache else {
            return Ok(Arc::new(Value::from_tensor(t)?));
        };
        let ptr = match t.strings() {
            Some(s) => s.as_ptr() as usize,
            None => t.raw().as_ptr() as usize,
        };
        let key = (ptr, t.byte_len(), t.dtype(), t.shape().to_vec());
        if let Some((_, v)) = cache
            .lock()
            .map_err(|_| "constant cache poisoned")?
            .get(&key)
        {
            return Ok(v.clone());
        }
        let val = Arc::new(Value::from_tensor(t)?);
        cache
            .lock()
            .map_err(|_| "constant cache poisoned")?
            .insert(key, (t.clone(), val.clone()));
        Ok(val)
    }

    fn exec(
        &self,
        g: &Graph,
        inputs: Vec<Value>,
        mut observer: Option<Observer<'_>>,
        check: bool,
    ) -> Result<Vec<Value>, InterpError> {
        if inputs.len() != g.inputs().len() {
            return Err(InterpError::InputCount {
                graph: g.name.clone(),
                expected: g.inputs().len(),
                got: inputs.len(),
            });
        }
        let order = g.topo_order()?;
        let cap = g.value_capacity();
        // Remaining reads of each value by nodes still to run; graph outputs are pinned.
        let mut remaining = vec![0usize; cap];
        let mut pinned = vec![false; cap];
        for &n in &order {
            for v in g.node(n).inputs().iter().flatten() {
                remaining[v.index()] += 1;
            }
        }
        for &v in g.outputs() {
            pinned[v.index()] = true;
        }
        let mut store: Vec<Option<Arc<Value>>> = vec![None; cap];
        let mut prof: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
        let profile = self.profile && check;
        for (i, (val, &vid)) in inputs.into_iter().zip(g.inputs()).enumerate() {
            if check {
                check_input(g, i, vid, &val)?;
            }
            if let Some(obs) = observer.as_mut() {
                obs(vid, &val);
            }
            store[vid.index()] = Some(Arc::new(val));
        }

        for &nid in &order {
            let node = g.node(nid);
            let node_err = |msg: String| InterpError::Node {
                node: node.name.clone(),
                op: node.op.name().to_string(),
                msg,
            };
            // A Gather from a not yet converted constant (an embedding table, typically)
            // copies just the rows it needs from the tensor's bytes.
            let direct_gather = match (&node.op, node.input(0)) {
                (Op::Gather(_), Some(v)) if store[v.index()].is_none() => g
                    .constant(v)
                    .filter(|t| t.dtype().bits() % 8 == 0 && t.dtype() != DType::String),
                _ => None,
            };
            // Materialize constants read by this node.
            let t0 = profile.then(std::time::Instant::now);
            for (k, v) in node.inputs().iter().enumerate() {
                let Some(v) = v else { continue };
                if k == 0 && direct_gather.is_some() {
                    continue;
                }
                if store[v.index()].is_none() {
                    store[v.index()] = Some(self.constant(g, *v).map_err(&node_err)?);
                }
            }
            if let Some(t0) = t0 {
                let e = prof.entry("(constants)".into()).or_default();
                e.0 += t0.elapsed().as_secs_f64();
            }
            let t0 = profile.then(std::time::Instant::now);
            let nout = node.outputs().len();
            // In-place fast path for pure data-movement ops whose input dies here.
            let data_dies = node
                .input(0)
                .map(|v| remaining[v.index()] == 1 && !pinned[v.index()])
                .unwrap_or(false);
            let outs = if let (Some(t), Op::Gather(ga)) = (direct_gather, &node.op) {
                let idx = node
                    .input(1)
                    .and_then(|v| store[v.index()].as_deref())
                    .ok_or_else(|| node_err("missing required input 1".into()))?;
                vec![crate::shape_ops::gather_tensor(t, idx, ga.axis).map_err(&node_err)?]
            } else if data_dies && is_view_op(&node.op) {
                let v0 = node.input(0).expect("checked above");
                let taken = store[v0.index()].take().expect("materialized above");
                let taken = Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone());
                let rest: Vec<Option<&Value>> = node.inputs()[1..]
                    .iter()
                    .map(|v| v.and_then(|v| store[v.index()].as_deref()))
                    .collect();
                crate::shape_ops::eval_view_owned(&node.op, taken, &rest).map_err(&node_err)?
            } else {
                let args: Vec<Option<&Value>> = node
                    .inputs()
                    .iter()
                    .map(|v| v.and_then(|v| store[v.index()].as_deref()))
                    .collect();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    eval_op(&node.op, &args, nout, self)
                }))
                .unwrap_or_else(|p| Err(format!("internal error: {}", panic_message(&p))))
                .map_err(&node_err)?
            };
            if outs.len() < nout {
                return Err(node_err(format!(
                    "produced {} outputs, node has {nout}",
                    outs.len()
                )));
            }
            if let Some(t0) = t0 {
                let e = prof.entry(node.op.name().to_string()).or_default();
                e.0 += t0.elapsed().as_secs_f64();
                e.1 += 1;
            }
            for v in node.inputs().iter().flatten() {
                let r = &mut remaining[v.index()];
                *r = r.saturating_sub(1);
                if *r == 0 && !pinned[v.index()] {
                    store[v.index()] = None;
                }
            }
            for (&vid, val) in node.outputs().iter().zip(outs) {
                if let Some(obs) = observer.as_mut() {
                    obs(vid, &val);
                }
                if remaining[vid.index()] > 0 || pinned[vid.index()] {
                    store[vid.index()] = Some(Arc::new(val));
                }
            }
        }

        if profile {
            let mut rows: Vec<_> = prof.into_iter().collect();
            rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
            let total: f64 = rows.iter().map(|r| r.1 .0).sum();
            eprintln!("pare-interp profile of '{}': {:.3} s", g.name, total);
            for (name, (t, n)) in rows {
                eprintln!(
                    "  {name:<24} {:>9.3} ms  {n:>6} calls  {:>5.1}%",
                    t * 1e3,
                    100.0 * t / total.max(1e-12)
                );
            }
        }
        let outs = g.outputs();
        let mut result = Vec::with_capacity(outs.len());
        for (i, &v) in outs.iter().enumerate() {
            let last = !outs[i + 1..].contains(&v);
            let val = if last {
                store[v.index()].take()
            } else {
                store[v.index()].clone()
            };
            let val = match val {
                Some(x) => x,
                None => self
                    .constant(g, v)
                    .map_err(|_| InterpError::Undefined(g.value(v).name.clone()))?,
            };
            result.push(Arc::try_unwrap(val).unwrap_or_else(|shared| (*shared).clone()));
        }
        Ok(result)
    }
}

pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Data-movement ops that can reuse their first operand's buffer.
fn is_view_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Identity
            | Op::Reshape(_)
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Flatten(_)
            | Op::Dropout(_)
    )
}

fn input_name(g: &Graph, i: usize) -> String {
    g.inputs()
        .get(i)
        .map(|&v| g.value(v).name.clone())
        .unwrap_or_default()
}

fn check_input(g: &Graph, i: usize, vid: ValueId, val: &Value) -> Result<(), InterpError> {
    let ty = &g.value(vid).ty;
    let err = |msg: String| InterpError::Input {
        index: i,
        name: input_name(g, i),
        msg,
    };
    if let Some(d) = ty.dtype {
        if d != val.dtype() {
            return Err(err(format!("expected dtype {d}, got {}", val.dtype())));
        }
    }
    if let Some(shape) = &ty.shape {
        if shape.rank() != val.rank() {
            return Err(err(format!(
                "expected shape {shape}, got {:?} (rank differs)",
                val.shape()
            )));
        }
        for (k, (d, &n)) in shape.0.iter().zip(val.shape()).enumerate() {
            if let Dim::Fixed(f) = d {
                if *f as usize != n {
                    return Err(err(format!(
                        "expected shape {shape}, got {:?} (dim {k})",
                        val.shape()
                    )));
                }
            }
        }
    }
    Ok(())
}
