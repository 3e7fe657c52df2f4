//! The ONNX backend node tests run directly against the interpreter, without the importer.
//!
//! Convert the tests first (`python3 crates/interp/tests/node_suite/convert.py
//! .cache/onnx-node /tmp/pconf`), then run
//! `PARE_NODE_JSON=/tmp/pconf cargo test -p pare-interp --test node_suite -- --ignored --nocapture`.
//! `PARE_NODE_FILTER=substring` selects tests. Tests whose ops pare lacks count as unsupported,
//! not failed. Tests written for an older opset than an op's latest form are not rewritten
//! here (the importer's job), so a few of those fail spuriously.

use bytes::Bytes;
use pare_interp::{Interpreter, Value};
use pare_ir::{onnx_dtype, Attr, Attrs, Dim, Graph, Op, Shape, Tensor, TensorType, ValueId};
use serde_json::Value as J;
use std::collections::HashMap;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn tensor(j: &J) -> Result<Tensor, String> {
    let code = j["dtype"].as_i64().ok_or("dtype")? as i32;
    let dt = onnx_dtype(code).ok_or(format!("dtype {code}"))?;
    let shape: Vec<usize> = j["shape"]
        .as_array()
        .ok_or("shape")?
        .iter()
        .map(|d| d.as_u64().unwrap_or(0) as usize)
        .collect();
    if let Some(s) = j.get("strings") {
        let v: Vec<String> = s
            .as_array()
            .ok_or("strings")?
            .iter()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect();
        return Tensor::from_strings(shape, v).map_err(|e| e.to_string());
    }
    Tensor::from_raw(dt, shape, Bytes::from(hex(j["hex"].as_str().ok_or("hex")?)))
        .map_err(|e| e.to_string())
}

fn ttype(j: &J) -> TensorType {
    let dtype = j["dtype"].as_i64().and_then(|c| onnx_dtype(c as i32));
    let shape = j["shape"].as_array().map(|dims| {
        Shape(
            dims.iter()
                .map(|d| match d {
                    J::Number(n) => Dim::Fixed(n.as_u64().unwrap_or(0)),
                    J::String(s) => Dim::Sym(s.clone()),
                    _ => Dim::Unknown,
                })
                .collect(),
        )
    });
    TensorType { dtype, shape }
}

fn graph(j: &J) -> Result<Graph, String> {
    let mut g = Graph::new(j["name"].as_str().unwrap_or(""));
    let mut names: HashMap<String, ValueId> = HashMap::new();
    for i in j["inputs"].as_array().ok_or("inputs")? {
        let name = i["name"].as_str().unwrap_or("").to_string();
        let v = g.add_input(name.clone(), ttype(i));
        names.insert(name, v);
    }
    for c in j["consts"].as_array().ok_or("consts")? {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let v = g.add_const(name.clone(), tensor(&c["tensor"])?);
        names.insert(name, v);
    }
    for (k, n) in j["nodes"].as_array().ok_or("nodes")?.iter().enumerate() {
        let op_type = n["op"].as_str().unwrap_or("");
        let mut attrs = Attrs::default();
        for a in n["attrs"].as_array().ok_or("attrs")? {
            let name = a[0].as_str().unwrap_or("").to_string();
            let v = &a[2];
            let attr = match a[1].as_str().unwrap_or("") {
                "float" => Attr::Float(v.as_f64().unwrap_or(0.0) as f32),
                "int" => Attr::Int(v.as_i64().unwrap_or(0)),
                "string" => Attr::String(v.as_str().unwrap_or("").to_string()),
                "tensor" => Attr::Tensor(tensor(v)?),
                "graph" => Attr::Graph(Box::new(graph(v)?)),
                "floats" => Attr::Floats(
                    v.as_array()
                        .ok_or("floats")?
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                        .collect(),
                ),
                "ints" => Attr::Ints(
                    v.as_array()
                        .ok_or("ints")?
                        .iter()
                        .map(|x| x.as_i64().unwrap_or(0))
                        .collect(),
                ),
                "strings" => Attr::Strings(
                    v.as_array()
                        .ok_or("strings")?
                        .iter()
                        .map(|x| x.as_str().unwrap_or("").to_string())
                        .collect(),
                ),
                k => return Err(format!("attr kind {k}")),
            };
            attrs.0.push((name, attr));
        }
        let op = match Op::from_attrs(op_type, attrs) {
            Ok(Some(op)) => op,
            Ok(None) => return Err(format!("UNSUPPORTED op {op_type}")),
            Err(e) => return Err(format!("UNSUPPORTED attrs of {op_type}: {e}")),
        };
        let inputs: Vec<Option<ValueId>> = n["inputs"]
            .as_array()
            .ok_or("inputs")?
            .iter()
            .map(|i| {
                let s = i.as_str().unwrap_or("");
                if s.is_empty() {
                    Ok(None)
                } else {
                    names
                        .get(s)
                        .copied()
                        .map(Some)
                        .ok_or_else(|| format!("undefined input {s}"))
                }
            })
            .collect::<Result<_, String>>()?;
        let outs: Vec<String> = n["outputs"]
            .as_array()
            .ok_or("outputs")?
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let s = o.as_str().unwrap_or("");
                if s.is_empty() {
                    format!("__unused_{k}_{i}")
                } else {
                    s.to_string()
                }
            })
            .collect();
        let nid = g.add_node(n["name"].as_str().unwrap_or(""), op, inputs, outs.clone());
        for (name, &v) in outs.iter().zip(g.node(nid).outputs()) {
            names.insert(name.clone(), v);
        }
    }
    g.set_num_captures(j["num_captures"].as_u64().unwrap_or(0) as usize);
    for o in j["outputs"].as_array().ok_or("outputs")? {
        let s = o.as_str().unwrap_or("");
        let v = *names
            .get(s)
            .ok_or_else(|| format!("undefined output {s}"))?;
        g.add_output(v);
    }
    Ok(g)
}

fn close(got: &Value, want: &Value) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} != expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (got, want) {
        (Value::Str(a), Value::Str(b)) => {
            if a != b {
                return Err(format!("strings differ: {:?} vs {:?}", a, b));
            }
        }
        _ if got.is_float() => {
            let (a, b) = (got.to_f64_vec()?, want.to_f64_vec()?);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                let ok =
                    (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-7 + 1e-3 * y.abs();
                if !ok {
                    return Err(format!("element {i}: {x} vs expected {y}"));
                }
            }
        }
        _ => {
            let (a, b) = (got.to_i64_vec()?, want.to_i64_vec()?);
            if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                return Err(format!("element {i}: {} vs expected {}", a[i], b[i]));
            }
        }
    }
    Ok(())
}

fn run_one(path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let j: J = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let g = graph(&j["graph"])?;
    let it = Interpreter::new().check_inputs(false);
    for case in j["cases"].as_array().ok_or("cases")? {
        let ins: Vec<Tensor> = case["inputs"]
            .as_array()
            .ok_or("inputs")?
            .iter()
            .map(tensor)
            .collect::<Result<_, _>>()?;
        let outs: Vec<Tensor> = case["outputs"]
            .as_array()
            .ok_or("outputs")?
            .iter()
            .map(tensor)
            .collect::<Result<_, _>>()?;
        let got = it.run(&g, &ins).map_err(|e| e.to_string())?;
        if got.len() < outs.len() {
            return Err(format!("{} outputs, expected {}", got.len(), outs.len()));
        }
        for (k, (a, b)) in got.iter().zip(&outs).enumerate() {
            close(&Value::from_tensor(a)?, &Value::from_tensor(b)?)
                .map_err(|e| format!("output {k}: {e}"))?;
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs PARE_NODE_JSON (see the module docs)"]
fn onnx_node_suite() {
    let Ok(dir) = std::env::var("PARE_NODE_JSON") else {
        eprintln!("PARE_NODE_JSON not set; skipping");
        return;
    };
    let filter = std::env::var("PARE_NODE_FILTER").unwrap_or_default();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("read PARE_NODE_JSON")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.to_string_lossy().contains(&filter))
        .collect();
    paths.sort();
    let (mut pass, mut fail, mut unsup) = (0, 0, 0);
    for p in &paths {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let r = std::panic::catch_unwind(|| run_one(p)).unwrap_or_else(|_| Err("PANIC".into()));
        match r {
            Ok(()) => pass += 1,
            Err(e) if e.starts_with("UNSUPPORTED") => {
                unsup += 1;
                println!("UNSUP {name}: {e}");
            }
            Err(e) => {
                fail += 1;
                println!("FAIL {name}: {}", e.chars().take(300).collect::<String>());
            }
        }
    }
    println!(
        "node suite: {pass} passed, {fail} failed, {unsup} unsupported (of {})",
        paths.len()
    );
}
