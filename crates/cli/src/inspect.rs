//! `pare inspect`: what a model contains and what it costs.

use anyhow::{bail, Result};
use clap::Args;
use pare_ir::{cost, Dim, Graph, Shape, TensorType};
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
    /// Bind symbolic dimensions for FLOP counting, e.g. `--shape N=1,seq=128`.
    #[arg(long, value_delimiter = ',')]
    shape: Vec<String>,
}

/// Parses `name=value` bindings.
pub fn parse_bindings(items: &[String]) -> Result<HashMap<String, u64>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => match v.parse() {
                Ok(n) => Ok((k.to_string(), n)),
                Err(_) => bail!("--shape {s}: '{v}' is not a non-negative integer"),
            },
            None => bail!("--shape {s}: expected NAME=VALUE"),
        })
        .collect()
}

/// Fixes symbolic input dimensions and re-infers every type.
pub fn bind_symbols(g: &mut Graph, b: &HashMap<String, u64>) -> Result<()> {
    if b.is_empty() {
        return Ok(());
    }
    for v in g.inputs().to_vec() {
        let ty = g.value(v).ty.clone();
        if let Some(s) = ty.shape {
            let dims = s.0.into_iter().map(|d| match d {
                Dim::Sym(name) => b
                    .get(&name)
                    .map(|&n| Dim::Fixed(n))
                    .unwrap_or(Dim::Sym(name)),
                d => d,
            });
            g.set_type(
                v,
                TensorType {
                    dtype: ty.dtype,
                    shape: Some(Shape(dims.collect())),
                },
            );
        }
    }
    for n in g.node_ids().collect::<Vec<_>>() {
        for o in g.node(n).outputs().to_vec() {
            g.set_type(o, TensorType::UNKNOWN);
        }
    }
    pare_ir::infer::infer_types(g)?;
    Ok(())
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
    bind_symbols(&mut m.graph, &parse_bindings(&a.shape)?)?;
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
