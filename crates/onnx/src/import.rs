//! ONNX model → IR graph.

use crate::legacy;
use crate::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, GraphProto,
    ModelProto, NodeProto, ValueInfoProto,
};
use crate::tensor::{convert, map_file, ExternalData};
use crate::{OnnxError, MAX_OPSET, MIN_OPSET};
use bytes::Bytes;
use pare_ir::{
    Attr, Attrs, CustomOp, CustomOpDef, Dim, Graph, Op, Shape, Tensor, TensorType, ValueId,
};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Import options.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Definitions of user ops, by (domain, op type). Unlisted non-core ops are rejected.
    pub custom_ops: HashMap<(String, String), Arc<dyn CustomOpDef>>,
    /// Skip type inference and verification (for tools that only inspect the raw graph).
    pub skip_checks: bool,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Model {
    /// The main graph.
    pub graph: Graph,
    /// Opset imports of the source model, (domain, version); the default domain is `""`.
    pub opsets: Vec<(String, i64)>,
    /// ONNX IR version of the source.
    pub ir_version: i64,
    /// Producer name and version of the source.
    pub producer: String,
    /// Where it was loaded from.
    pub path: PathBuf,
}

impl Model {
    /// The default-domain opset version.
    pub fn opset(&self) -> i64 {
        self.opsets
            .iter()
            .find(|(d, _)| d.is_empty())
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }
}

/// Loads an ONNX model file. The file is memory-mapped; tensors stay slices of the map.
pub fn load_model(path: &Path, opts: &ImportOptions) -> Result<Model, OnnxError> {
    let bytes = map_file(path)?;
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }
    });
    load_model_from_bytes(bytes, base, path, opts)
}

/// Loads a model from bytes; `base_dir` resolves external data, `path` names it in errors.
pub fn load_model_from_bytes(
    bytes: Bytes,
    base_dir: Option<PathBuf>,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Model, OnnxError> {
    let proto = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let model_err = |msg: String| OnnxError::Model {
        path: path.into(),
        msg,
    };
    let gp = proto
        .graph
        .as_ref()
        .ok_or_else(|| model_err("model has no graph".into()))?;
    let mut opsets = Vec::new();
    for o in &proto.opset_import {
        let d = o.domain.clone().unwrap_or_default();
        let d = if d == "ai.onnx" { String::new() } else { d };
        opsets.push((d, o.version.unwrap_or(1)));
    }
    let default = opsets.iter().find(|(d, _)| d.is_empty()).map(|(_, v)| *v);
    let opset = match default {
        Some(v) => v,
        None if proto.opset_import.is_empty() => {
            return Err(model_err("model declares no opset_import".into()))
        }
        None => MAX_OPSET,
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(model_err(format!(
            "default-domain opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    let mut imp = Importer {
        path: path.to_path_buf(),
        domains: opsets.iter().cloned().collect(),
        opset,
        ext: ExternalData::new(base_dir),
        opts,
        fresh: 0,
    };
    let (mut graph, captures) = imp.graph(gp, &[])?;
    if let Some(c) = captures.first() {
        return Err(model_err(format!(
            "value '{c}' is used but never defined (no input, initializer or node produces it)"
        )));
    }
    if !opts.skip_checks {
        pare_ir::infer::infer_types(&mut graph).map_err(|e| OnnxError::Node {
            path: path.into(),
            node: e.node.clone(),
            op: e.op.clone(),
            opset,
            msg: e.msg.clone(),
        })?;
        pare_ir::verify(&graph).map_err(|e| model_err(format!("invalid graph: {e}")))?;
    }
    Ok(Model {
        graph,
        opsets,
        ir_version: proto.ir_version.unwrap_or(0),
        producer: format!(
            "{} {}",
            proto.producer_name.unwrap_or_default(),
            proto.producer_version.unwrap_or_default()
        )
        .trim()
        .to_string(),
        path: path.to_path_buf(),
    })
}

/// Names visible in one graph while importing it.
struct Scope<'s> {
    names: HashMap<String, ValueId>,
    captures: Vec<String>,
    outer: &'s [&'s HashMap<String, ValueId>],
}

impl Scope<'_> {
    /// Resolves a name: local, or captured from an enclosing graph (becoming an input here).
    fn resolve(&mut self, g: &mut Graph, name: &str) -> Option<ValueId> {
        if let Some(&v) = self.names.get(name) {
            return Some(v);
        }
        if self.outer.iter().any(|m| m.contains_key(name)) {
            let v = g.add_input(name, TensorType::UNKNOWN);
            self.names.insert(name.to_string(), v);
            self.captures.push(name.to_string());
            return Some(v);
        }
        None
    }
}

struct Importer<'o> {
    path: PathBuf,
    domains: HashMap<String, i64>,
    opset: i64,
    ext: ExternalData,
    opts: &'o ImportOptions,
    fresh: usize,
}

pub(crate) fn value_info_type(vi: &ValueInfoProto) -> Result<Option<TensorType>, String> {
    let Some(tp) = &vi.r#type else {
        return Ok(None);
    };
    match &tp.value {
        Some(type_proto::Value::TensorType(t)) => {
            let dtype = match t.elem_type {
                None | Some(0) => None,
                Some(c) => Some(
                    pare_ir::onnx_dtype(c)
                        .ok_or_else(|| format!("unsupported element type code {c}"))?,
                ),
            };
            let shape = t.shape.as_ref().map(|s| {
                Shape(
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as u64),
                            Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                                Dim::Sym(p.clone())
                            }
                            _ => Dim::Unknown,
                        })
                        .collect(),
                )
            });
            Ok(Some(TensorType { dtype, shape }))
        }
        None => Ok(None),
        Some(_) => Err(
            "only tensor types are supported (sequence, map, optional and sparse types are not)"
                .into(),
        ),
    }
}

/// Names a subgraph reads from enclosing scopes (free variables), recursively.
fn free_names(gp: &GraphProto) -> HashSet<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &gp.input {
        defined.insert(i.name.as_deref().unwrap_or(""));
    }
    for t in &gp.initializer {
        defined.insert(t.name.as_deref().unwrap_or(""));
    }
    for n in &gp.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let mut free = HashSet::new();
    for n in &gp.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                free.insert(i.clone());
            }
        }
        for a in &n.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                free.extend(
                    free_names(sub)
                        .into_iter()
                        .filter(|f| !defined.contains(f.as_str())),
                );
            }
        }
    }
    for o in &gp.output {
        let name = o.name.as_deref().unwrap_or("");
        if !defined.contains(name) {
            free.insert(name.to_string());
        }
    }
    free
}

fn node_label(n: &NodeProto) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!(
            "{}:{}",
            n.op_type.as_deref().unwrap_or("?"),
            n.output.first().map(String::as_str).unwrap_or("")
        ),
    }
}

impl Importer<'_> {
    fn node_err(&self, n: &NodeProto, msg: impl Into<String>) -> OnnxError {
        let domain = n.domain.as_deref().unwrap_or("");
        OnnxError::Node {
            path: self.path.clone(),
            node: node_label(n),
            op: n.op_type.clone().unwrap_or_default(),
            opset: self.domains.get(domain).copied().unwrap_or(self.opset),
            msg: msg.into(),
        }
    }

    fn fresh_name(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("{base}/pare_{}", self.fresh)
    }

    fn graph(
        &mut self,
        gp: &GraphProto,
        outer: &[&HashMap<String, ValueId>],
    ) -> Result<(Graph, Vec<String>), OnnxError> {
        let mut g = Graph::new(gp.name.clone().unwrap_or_default());
        let mut scope = Scope {
            names: HashMap::new(),
            captures: Vec::new(),
            outer,
        };
        if !gp.sparse_initializer.is_empty() {
            return Err(OnnxError::Model {
                path: self.path.clone(),
                msg: "sparse initializers are not supported".into(),
            });
        }
        for tp in &gp.initializer {
            let name = tp.name.clone().unwrap_or_default();
            let t = convert(tp, &mut self.ext).map_err(|msg| OnnxError::Tensor {
                path: self.path.clone(),
                name: name.clone(),
                msg,
            })?;
            let v = g.add_const(name.clone(), t);
            scope.names.insert(name, v);
        }
        for vi in &gp.input {
            let name = vi.name.clone().unwrap_or_default();
            if scope.names.contains_key(&name) {
                continue; // An initializer with a graph input of the same name: its default value.
            }
            let ty = value_info_type(vi)
                .map_err(|msg| OnnxError::Model {
                    path: self.path.clone(),
                    msg: format!("input '{name}': {msg}"),
                })?
                .unwrap_or(TensorType::UNKNOWN);
            let v = g.add_input(name.clone(), ty);
            scope.names.insert(name, v);
        }
        let mut known_types: HashMap<&str, TensorType> = HashMap::new();
        for vi in gp.value_info.iter().chain(gp.output.iter()) {
            if let Ok(Some(t)) = value_info_type(vi) {
                known_types.insert(vi.name.as_deref().unwrap_or(""), t);
            }
        }

        for idx in self.order_nodes(gp, &scope)? {
            let n = &gp.node[idx];
            self.node(&mut g, &mut scope, n, &known_types)?;
        }

        for vi in &gp.output {
            let name = vi.name.clone().unwrap_or_default();
            let v = scope
                .resolve(&mut g, &name)
                .ok_or_else(|| OnnxError::Model {
                    path: self.path.clone(),
                    msg: format!("graph output '{name}' is never defined"),
                })?;
            g.add_output(v);
        }
        Ok((g, scope.captures))
    }

    /// Orders nodes so producers come first (ONNX requires it, but not every exporter obeys);
    /// reports cycles and undefined values by node.
    fn order_nodes(&self, gp: &GraphProto, scope: &Scope) -> Result<Vec<usize>, OnnxError> {
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in gp.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if producer.insert(o.as_str(), i).is_some() || scope.names.contains_key(o) {
                    return Err(self.node_err(n, format!("value '{o}' is defined more than once")));
                }
            }
        }
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); gp.node.len()];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); gp.node.len()];
        for (i, n) in gp.node.iter().enumerate() {
            let mut reads: Vec<String> =
                n.input.iter().filter(|s| !s.is_empty()).cloned().collect();
            for a in &n.attribute {
                for sub in a.g.iter().chain(a.graphs.iter()) {
                    reads.extend(free_names(sub));
                }
            }
            for r in reads {
                if let Some(&p) = producer.get(r.as_str()) {
                    if !deps[i].contains(&p) {
                        deps[i].push(p);
                        users[p].push(i);
                    }
                } else if !scope.names.contains_key(&r)
                    && !scope.outer.iter().any(|m| m.contains_key(&r))
                {
                    return Err(self.node_err(
                        n,
                        format!("input '{r}' is not defined (no graph input, initializer or node output has that name)"),
                    ));
                }
            }
        }
        let mut indeg: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: std::collections::VecDeque<usize> =
            (0..gp.node.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(gp.node.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &u in &users[i] {
                indeg[u] -= 1;
                if indeg[u] == 0 {
                    ready.push_back(u);
                }
            }
        }
        if order.len() != gp.node.len() {
            let stuck = (0..gp.node.len()).find(|&i| indeg[i] > 0).unwrap_or(0);
            return Err(self.node_err(&gp.node[stuck], "the graph has a cycle through this node"));
        }
        Ok(order)
    }

    fn attr(
        &mut self,
        n: &NodeProto,
        a: &crate::proto::AttributeProto,
        scope: &Scope,
    ) -> Result<(Attr, Vec<String>), OnnxError> {
        let name = a.name.clone().unwrap_or_default();
        if a.ref_attr_name.is_some() {
            return Err(self.node_err(n, format!("attribute '{name}' refers to a function attribute; functions are not supported")));
        }
        let ty = match a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
            Some(t) if t != AttributeType::Undefined => t,
            _ => {
                // Pre-IR-v3 models omit the type: infer it from the field that is set.
                if a.f.is_some() {
                    AttributeType::Float
                } else if a.i.is_some() {
                    AttributeType::Int
                } else if a.s.is_some() {
                    AttributeType::String
                } else if a.t.is_some() {
                    AttributeType::Tensor
                } else if a.g.is_some() {
                    AttributeType::Graph
                } else if !a.floats.is_empty() {
                    AttributeType::Floats
                } else if !a.strings.is_empty() {
                    AttributeType::Strings
                } else {
                    AttributeType::Ints
                }
            }
        };
        let utf8 = |b: &Bytes| String::from_utf8(b.to_vec()).map_err(|_| "not UTF-8".to_string());
        let out: Result<Attr, String> = match ty {
            AttributeType::Float => Ok(Attr::Float(a.f.unwrap_or(0.0))),
            AttributeType::Int => Ok(Attr::Int(a.i.unwrap_or(0))),
            AttributeType::String => utf8(a.s.as_ref().unwrap_or(&Bytes::new())).map(Attr::String),
            AttributeType::Floats => Ok(Attr::Floats(a.floats.clone())),
            AttributeType::Ints => Ok(Attr::Ints(a.ints.clone())),
            AttributeType::Strings => a
                .strings
                .iter()
                .map(utf8)
                .collect::<Result<_, _>>()
                .map(Attr::Strings),
            AttributeType::Tensor => match &a.t {
                Some(tp) => convert(tp, &mut self.ext).map(Attr::Tensor),
                None => Err("tensor attribute without a tensor".into()),
            },
            AttributeType::Graph => {
                let gp = a.g.as_ref().ok_or_else(|| {
                    self.node_err(
                        n,
                        format!("attribute '{name}': graph attribute without a graph"),
                    )
                })?;
                let mut outer: Vec<&HashMap<String, ValueId>> = scope.outer.to_vec();
                outer.push(&scope.names);
                let (g, caps) = self.graph(gp, &outer)?;
                return Ok((Attr::Graph(Box::new(g)), caps));
            }
            other => Err(format!("{other:?} attributes are not supported")),
        };
        let out = out.map_err(|m| self.node_err(n, format!("attribute '{name}': {m}")))?;
        Ok((out, Vec::new()))
    }

    fn node(
        &mut self,
        g: &mut Graph,
        scope: &mut Scope,
        n: &NodeProto,
        known_types: &HashMap<&str, TensorType>,
    ) -> Result<(), OnnxError> {
        let op_type = n.op_type.clone().unwrap_or_default();
        let domain = match n.domain.as_deref().unwrap_or("") {
            "ai.onnx" => "",
            d => d,
        }
        .to_string();
        let label = node_label(n);
        let opset = match self.domains.get(&domain) {
            Some(&v) => v,
            None if domain.is_empty() => self.opset,
            None => {
                return Err(self.node_err(
                    n,
                    format!("domain '{domain}' is not in the model's opset_import"),
                ))
            }
        };

        // Attributes; subgraph captures are collected in first-seen order.
        let mut attrs = Attrs::default();
        let mut captures: Vec<String> = Vec::new();
        for a in &n.attribute {
            let (attr, caps) = self.attr(n, a, scope)?;
            for c in caps {
                if !captures.contains(&c) {
                    captures.push(c);
                }
            }
            attrs.0.push((a.name.clone().unwrap_or_default(), attr));
        }

        if domain.is_empty() && op_type == "Constant" {
            let out = n
                .output
                .first()
                .filter(|o| !o.is_empty())
                .ok_or_else(|| self.node_err(n, "Constant has no output"))?;
            let t = legacy::constant_value(attrs).map_err(|m| self.node_err(n, m))?;
            let v = g.add_const(out.clone(), t);
            scope.names.insert(out.clone(), v);
            return Ok(());
        }

        let mut inputs: Vec<Option<ValueId>> = Vec::with_capacity(n.input.len());
        for i in &n.input {
            if i.is_empty() {
                inputs.push(None);
            } else {
                let v = scope
                    .resolve(g, i)
                    .ok_or_else(|| self.node_err(n, format!("input '{i}' is not defined")))?;
                inputs.push(Some(v));
            }
        }
        // Trailing omitted inputs carry no meaning, unless captures follow them: then they keep
        // the formal operand positions (a Loop with an omitted condition and captures).
        if captures.is_empty() {
            while inputs.last() == Some(&None) {
                inputs.pop();
            }
        }

        // Subgraphs take the union of their captures as trailing inputs, in one order.
        if !captures.is_empty() {
            for (_, a) in attrs.0.iter_mut() {
                if let Attr::Graph(sub) = a {
                    let formal: Vec<ValueId> = sub
                        .inputs()
                        .iter()
                        .copied()
                        .filter(|&v| !captures.contains(&sub.value(v).name))
                        .collect();
                    let mut order = formal;
                    for c in &captures {
                        let v = match sub
                            .inputs()
                            .iter()
                            .copied()
                            .find(|&v| &sub.value(v).name == c)
                        {
                            Some(v) => v,
                            None => sub.add_input(c.clone(), TensorType::UNKNOWN),
                        };
                        order.push(v);
                    }
                    sub.reorder_inputs(order);
                    sub.set_num_captures(captures.len());
                }
            }
            for c in &captures {
                let v = scope.resolve(g, c).ok_or_else(|| {
                    self.node_err(n, format!("captured value '{c}' is not defined"))
                })?;
                inputs.push(Some(v));
            }
        }

        let op = if domain.is_empty() {
            let ctx = legacy::Ctx {
                g,
                opset,
                node: &label,
            };
            let (op, new_inputs) = legacy::convert(ctx, &op_type, attrs, inputs, &mut |b: &str| {
                self.fresh_name(b)
            })
            .map_err(|e| match e {
                legacy::ConvertError::Unsupported => OnnxError::UnsupportedOp {
                    path: self.path.clone(),
                    node: label.clone(),
                    op: op_type.clone(),
                    domain: String::new(),
                    opset,
                },
                legacy::ConvertError::Msg(m) => self.node_err(n, m),
            })?;
            inputs = new_inputs;
            op
        } else {
            match self.opts.custom_ops.get(&(domain.clone(), op_type.clone())) {
                Some(def) => Op::Custom(CustomOp {
                    domain: domain.clone(),
                    op_type: op_type.clone(),
                    attrs,
                    def: Some(def.clone()),
                }),
                None => {
                    return Err(OnnxError::UnsupportedOp {
                        path: self.path.clone(),
                        node: label,
                        op: op_type,
                        domain,
                        opset,
                    })
                }
            }
        };

        let mut outputs = n.output.clone();
        while outputs.last().map(|o| o.is_empty()) == Some(true) {
            outputs.pop();
        }
        let out_names: Vec<String> = outputs
            .iter()
            .map(|o| {
                if o.is_empty() {
                    self.fresh_name(&label)
                } else {
                    o.clone()
                }
            })
            .collect();
        let id = g.add_node(label.clone(), op, inputs, out_names.clone());
        let outs: Vec<ValueId> = g.node(id).outputs().to_vec();
        for (name, v) in out_names.iter().zip(&outs) {
            scope.names.insert(name.clone(), *v);
            if let Some(t) = known_types.get(name.as_str()) {
                g.set_type(*v, t.clone());
            }
        }
        legacy::infer_now(g, id);
        Ok(())
    }
}

/// Tensor of a constant operand.
pub(crate) fn const_of(g: &Graph, v: Option<ValueId>) -> Option<&Tensor> {
    v.and_then(|v| g.constant(v))
}
