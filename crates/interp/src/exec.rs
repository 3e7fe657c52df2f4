//! Graph execution: topological order, liveness-based freeing, input checks.

use crate::dispatch::eval_op;
use crate::Value;
use pare_ir::{CycleError, Dim, Graph, Op, Tensor, ValueDef, ValueId};

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

/// Evaluates graphs. Cheap to create; holds only options.
#[derive(Clone, Debug, Default)]
pub struct Interpreter {
    /// Worker threads for GEMM and parallel loops; 0 uses rayon's global pool (all cores).
    pub threads: usize,
    /// Skip the check of inputs against the graph's declared input types.
    pub skip_input_checks: bool,
}

impl Interpreter {
    /// An interpreter using all cores.
    pub fn new() -> Interpreter {
        Interpreter::default()
    }

    /// An interpreter using `threads` worker threads (0: all cores).
    pub fn with_threads(threads: usize) -> Interpreter {
        Interpreter {
            threads,
            ..Interpreter::default()
        }
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
    /// reported). Used for calibration.
    pub fn run_observed(
        &self,
        g: &Graph,
        inputs: Vec<Value>,
        observer: &mut (dyn FnMut(ValueId, &Value) + Send),
    ) -> Result<Vec<Value>, InterpError> {
        self.in_pool(|| self.exec(g, inputs, Some(observer), !self.skip_input_checks))
    }

    fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.threads == 0 || self.threads == rayon::current_num_threads() {
            return f();
        }
        match rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .build()
        {
            Ok(pool) => pool.install(f),
            Err(_) => f(),
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

    fn exec(
        &self,
        g: &Graph,
        inputs: Vec<Value>,
        mut observer: Option<&mut (dyn FnMut(ValueId, &Value) + Send)>,
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
        let mut store: Vec<Option<Value>> = vec![None; cap];
        for (i, (val, &vid)) in inputs.into_iter().zip(g.inputs()).enumerate() {
            if check {
                check_input(g, i, vid, &val)?;
            }
            if let Some(obs) = observer.as_mut() {
                obs(vid, &val);
            }
            store[vid.index()] = Some(val);
        }

        for &nid in &order {
            let node = g.node(nid);
            let node_err = |msg: String| InterpError::Node {
                node: node.name.clone(),
                op: node.op.name().to_string(),
                msg,
            };
            // Materialize constants read by this node.
            for v in node.inputs().iter().flatten() {
                if store[v.index()].is_none() {
                    store[v.index()] = Some(materialize(g, *v).map_err(&node_err)?);
                }
            }
            let nout = node.outputs().len();
            // In-place fast path for pure data-movement ops whose input dies here.
            let data_dies = node
                .input(0)
                .map(|v| remaining[v.index()] == 1 && !pinned[v.index()])
                .unwrap_or(false);
            let outs = if data_dies && is_view_op(&node.op) {
                let v0 = node.input(0).expect("checked above");
                let taken = store[v0.index()].take().expect("materialized above");
                let rest: Vec<Option<&Value>> = node.inputs()[1..]
                    .iter()
                    .map(|v| v.and_then(|v| store[v.index()].as_ref()))
                    .collect();
                crate::shape_ops::eval_view_owned(&node.op, taken, &rest).map_err(&node_err)?
            } else {
                let args: Vec<Option<&Value>> = node
                    .inputs()
                    .iter()
                    .map(|v| v.and_then(|v| store[v.index()].as_ref()))
                    .collect();
                let names: Option<Vec<String>> =
                    matches!(node.op, Op::Loop(_) | Op::Scan(_)).then(|| {
                        node.inputs()
                            .iter()
                            .map(|v| v.map(|v| g.value(v).name.clone()).unwrap_or_default())
                            .collect()
                    });
                eval_op(&node.op, &args, nout, self, names.as_deref()).map_err(&node_err)?
            };
            if outs.len() < nout {
                return Err(node_err(format!(
                    "produced {} outputs, node has {nout}",
                    outs.len()
                )));
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
                    store[vid.index()] = Some(val);
                }
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
                None => materialize(g, v)
                    .map_err(|_| InterpError::Undefined(g.value(v).name.clone()))?,
            };
            result.push(val);
        }
        Ok(result)
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

fn materialize(g: &Graph, v: ValueId) -> Result<Value, String> {
    match g.value(v).def() {
        ValueDef::Const(t) => Value::from_tensor(t),
        _ => Err(format!(
            "value '{}' is read but not defined",
            g.value(v).name
        )),
    }
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
