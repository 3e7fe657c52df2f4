//! `pare inspect`: what a model contains and what it costs.

use anyhow::{bail, Result};
use clap::Args;
use pare_ir::{cost, Dim, Graph, TensorType};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Arguments of `pare inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// ONNX model file.
    model: PathBuf,
    /// Print JSON (keys: inputs, outputs, ops, params, bytes, flops, ...).
    #[arg(long)]
    json: bool,
    /// Bind dimensions for FLOP counting: symbols (`--shape N=1,seq=128`) or whole input
    /// shapes (`--shape x=1x3x224x224`), for models whose inputs have anonymous dimensions.
    #[arg(long, value_delimiter = ',')]
    shape: Vec<String>,
    /// Bind input shapes from data, as `pare run --inputs` takes it (files or a test_data_set
    /// directory).
    #[arg(long, num_args = 1..)]
    inputs: Vec<String>,
}

/// Dimension bindings: symbol values and whole input shapes.
#[derive(Default)]
pub struct Bindings {
    pub(crate) symbols: HashMap<String, u64>,
    pub(crate) inputs: HashMap<String, Vec<u64>>,
}

impl Bindings {
    /// Binds a whole input shape.
    pub fn bind_input(&mut self, name: &str, dims: &[usize]) {
        self.inputs
            .insert(name.to_string(), dims.iter().map(|&d| d as u64).collect());
    }
}

/// Parses `SYMBOL=N` and `INPUT=AxBxC` bindings.
pub fn parse_bindings(items: &[String]) -> Result<Bindings> {
    let mut b = Bindings::default();
    for s in items {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--shape {s}: expected NAME=VALUE")
        };
        let dims: Vec<u64> = match v.split('x').map(str::parse).collect() {
            Ok(d) => d,
            Err(_) => bail!("--shape {s}: '{v}' is not N or AxBxC (non-negative integers)"),
        };
        if v.contains('x') {
            b.inputs.insert(k.to_string(), dims);
        } else {
            b.symbols.insert(k.to_string(), dims[0]);
        }
    }
    Ok(b)
}

/// Fixes input dimensions and re-infers every type.
pub fn bind_symbols(g: &mut Graph, b: &Bindings) -> Result<()> {
    if b.symbols.is_empty() && b.inputs.is_empty() {
        return Ok(());
    }
    pare_ir::infer::bind_dims(g, &b.symbols, &b.inputs).map_err(|e| anyhow::anyhow!("--shape: {e}"))
}

fn histogram(g: &Graph, out: &mut BTreeMap<String, usize>) {
    for n in g.node_ids() {
        let op = &g.node(n).op;
        *out.entry(op.name().to_string()).or_default() += 1;
        for sub in op.subgraphs() {
            histogram(sub, out);
        }
    }
}

fn human(n: u64, unit: &str) -> String {
    let (v, p) = match n {
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "G"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "M"),
        n if n >= 1_000 => (n as f64 / 1e3, "k"),
        n => (n as f64, ""),
    };
    format!("{v:.2} {p}{unit}")
}

/// Runs the command.
pub fn inspect(a: &InspectArgs) -> Result<()> {
    let mut m = crate::load(&a.model)?;
    let mut bindings = parse_bindings(&a.shape)?;
    if !a.inputs.is_empty() {
        let data = crate::inputs::load_inputs(&m.graph, &a.inputs)?;
        for (&v, t) in m.graph.inputs().iter().zip(&data) {
            let dims = t.shape().iter().map(|&d| d as u64).collect();
            bindings.inputs.insert(m.graph.value(v).name.clone(), dims);
        }
    }
    bind_symbols(&mut m.graph, &bindings)?;
    let g = &m.graph;
    let io = |vs: &[pare_ir::ValueId]| -> Vec<(String, TensorType)> {
        vs.iter()
            .map(|&v| (g.value(v).name.clone(), g.value(v).ty.clone()))
            .collect()
    };
    let (inputs, outputs) = (io(g.inputs()), io(g.outputs()));
    let mut ops = BTreeMap::new();
    histogram(g, &mut ops);
    let c = cost::cost(g);
    if a.json {
        let tj = |v: &[(String, TensorType)]| -> serde_json::Value {
            v.iter()
                .map(|(n, t)| {
                    json!({
                        "name": n,
                        "dtype": t.dtype.map(|d| d.name()),
                        "shape": t.shape.as_ref().map(|s| s.0.iter().map(|d| match d {
                            Dim::Fixed(n) => json!(n),
                            Dim::Sym(s) => json!(s),
                            Dim::Unknown => json!(null),
                        }).collect::<Vec<_>>()),
                    })
                })
                .collect()
        };
        let out = json!({
            "model": a.model.display().to_string(),
            "opset": m.opset(),
            "producer": m.producer,
            "inputs": tj(&inputs),
            "outputs": tj(&outputs),
            "ops": ops,
            "nodes": ops.values().sum::<usize>(),
            "params": c.params,
            "bytes": c.bytes(),
            "bytes_by_dtype": c.bytes_by_dtype.iter().map(|(d, b)| (d.name().to_string(), *b)).collect::<BTreeMap<_, _>>(),
            "flops": c.flops,
            "flops_by_op": c.flops_by_op,
            "flops_unknown_nodes": c.unknown_nodes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("model    {}", a.model.display());
    println!(
        "producer {} (opset {}, IR v{})",
        if m.producer.is_empty() {
            "?"
        } else {
            &m.producer
        },
        m.opset(),
        m.ir_version
    );
    println!("inputs");
    for (n, t) in &inputs {
        println!("  {n}: {t}");
    }
    println!("outputs");
    for (n, t) in &outputs {
        println!("  {n}: {t}");
    }
    let bytes: Vec<String> = c
        .bytes_by_dtype
        .iter()
        .map(|(d, b)| format!("{d} {}", human(*b, "B")))
        .collect();
    println!("params   {} ({})", human(c.params, ""), c.params);
    println!("weights  {} [{}]", human(c.bytes(), "B"), bytes.join(", "));
    let unknown = if c.unknown_nodes > 0 {
        format!(" (+{} node(s) of unknown cost: dynamic shapes or control flow; bind dims with --shape)", c.unknown_nodes)
    } else {
        String::new()
    };
    println!("FLOPs    {}{unknown}", human(c.flops, "FLOP"));
    println!("ops      {} nodes", ops.values().sum::<usize>());
    let mut sorted: Vec<_> = ops.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in sorted {
        let f = c.flops_by_op.get(op).copied().unwrap_or(0);
        let pct = if c.flops > 0 {
            100.0 * f as f64 / c.flops as f64
        } else {
            0.0
        };
        println!("  {op:<24} {n:>6}   {:>14}  {pct:5.1}%", human(f, "FLOP"));
    }
    Ok(())
}
