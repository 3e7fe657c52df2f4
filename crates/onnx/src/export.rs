//! IR graph → ONNX model.

use crate::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::tensor_to_proto;
use crate::OnnxError;
use bytes::Bytes;
use pare_ir::{dtype_onnx_code, Attr, DType, Dim, Graph, Op, TensorType, ValueDef, ValueId};
use prost::Message;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Export options.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Default-domain opset to declare; `None` picks the lowest that covers the graph (≥ 21).
    pub opset: Option<i64>,
    /// When the weights total more than this many bytes, tensors larger than 1 KiB are written
    /// to `<model file name>.data` beside the model (protobuf cannot exceed 2 GiB).
    pub external_data_above: usize,
    /// Producer version string.
    pub producer_version: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: None,
            external_data_above: 1 << 30,
            producer_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Writes `chunks` to `path` atomically: a temporary file in the same directory, then rename.
pub(crate) fn write_atomic(path: &Path, chunks: &[&[u8]]) -> Result<(), OnnxError> {
    let io = |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("not a file path")))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        fname.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        for c in chunks {
            f.write_all(c)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

struct Namer {
    used: HashSet<String>,
}

impl Namer {
    fn unique(&mut self, want: &str) -> String {
        let base = if want.is_empty() { "v" } else { want };
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| self.used.insert(n.clone()))
            .expect("an unused name exists")
    }
}

fn type_proto(ty: &TensorType) -> Option<TypeProto> {
    let dtype = ty.dtype?;
    let shape = ty.shape.as_ref().map(|s| TensorShapeProto {
        dim: s
            .0
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                denotation: None,
                value: match d {
                    Dim::Fixed(n) => {
                        Some(tensor_shape_proto::dimension::Value::DimValue(*n as i64))
                    }
                    Dim::Sym(s) => Some(tensor_shape_proto::dimension::Value::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
            })
            .collect(),
    });
    Some(TypeProto {
        denotation: None,
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(dtype_onnx_code(dtype)),
            shape,
        })),
    })
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: type_proto(ty),
        ..Default::default()
    }
}

struct Exporter {
    namer: Namer,
    /// Constants to write externally: (initializer index path, bytes) collected for the main graph.
    external: Option<ExternalWriter>,
    domains: BTreeSet<String>,
    needs_opset: i64,
}

struct ExternalWriter {
    location: String,
    chunks: Vec<Bytes>,
    offset: usize,
}

impl Exporter {
    fn attr(
        &mut self,
        name: &str,
        a: &Attr,
        captures: &[String],
    ) -> Result<AttributeProto, String> {
        let mut p = AttributeProto {
            name: Some(name.into()),
            ..Default::default()
        };
        let ty = match a {
            Attr::Int(i) => {
                p.i = Some(*i);
                AttributeType::Int
            }
            Attr::Float(f) => {
                p.f = Some(*f);
                AttributeType::Float
            }
            Attr::String(s) => {
                p.s = Some(Bytes::from(s.clone().into_bytes()));
                AttributeType::String
            }
            Attr::Ints(v) => {
                p.ints = v.clone();
                AttributeType::Ints
            }
            Attr::Floats(v) => {
                p.floats = v.clone();
                AttributeType::Floats
            }
            Attr::Strings(v) => {
                p.strings = v
                    .iter()
                    .map(|s| Bytes::from(s.clone().into_bytes()))
                    .collect();
                AttributeType::Strings
            }
            Attr::Tensor(t) => {
                self.note_dtype(t.dtype());
                p.t = Some(tensor_to_proto(t, ""));
                AttributeType::Tensor
            }
            Attr::Graph(g) => {
                p.g = Some(self.graph(g, captures, false)?);
                AttributeType::Graph
            }
        };
        p.r#type = Some(ty as i32);
        Ok(p)
    }

    fn note_dtype(&mut self, d: DType) {
        let since = match d {
            DType::F4E2M1 => 23,
            DType::F8E8M0 => 24,
            DType::I2 | DType::U2 => 25,
            _ => return,
        };
        self.needs_opset = self.needs_opset.max(since);
    }

    /// Exports a graph; `captures` are the outer names its trailing capture inputs stand for.
    fn graph(&mut self, g: &Graph, captures: &[String], main: bool) -> Result<GraphProto, String> {
        let mut names: HashMap<ValueId, String> = HashMap::new();
        let mut gp = GraphProto {
            name: Some(if g.name.is_empty() {
                "main".into()
            } else {
                g.name.clone()
            }),
            ..Default::default()
        };
        let formal = g.inputs().len() - g.num_captures();
        if captures.len() != g.num_captures() {
            return Err(format!(
                "subgraph '{}' has {} captures, node passes {}",
                g.name,
                g.num_captures(),
                captures.len()
            ));
        }
        for (i, &v) in g.inputs().iter().enumerate() {
            if i < formal {
                let n = self.namer.unique(&g.value(v).name);
                gp.input.push(value_info(&n, &g.value(v).ty));
                names.insert(v, n);
            } else {
                names.insert(v, captures[i - formal].clone());
            }
        }
        for (v, t) in g.constants() {
            if g.uses(v).is_empty() {
                continue;
            }
            self.note_dtype(t.dtype());
            let n = self.namer.unique(&g.value(v).name);
            let mut tp = tensor_to_proto(t, &n);
            if let (true, Some(ext), Some(bytes)) = (main, self.external.as_mut(), t.bytes()) {
                if bytes.len() > 1024 {
                    // Align each tensor to 4 KiB so that loaders can map it directly.
                    let pad = (4096 - ext.offset % 4096) % 4096;
                    if pad > 0 {
                        ext.chunks.push(Bytes::from(vec![0u8; pad]));
                        ext.offset += pad;
                    }
                    tp.raw_data = None;
                    tp.data_location = Some(DataLocation::External as i32);
                    let kv = |k: &str, v: String| StringStringEntryProto {
                        key: Some(k.into()),
                        value: Some(v),
                    };
                    tp.external_data = vec![
                        kv("location", ext.location.clone()),
                        kv("offset", ext.offset.to_string()),
                        kv("length", bytes.len().to_string()),
                    ];
                    ext.offset += bytes.len();
                    ext.chunks.push(bytes.clone());
                }
            }
            gp.initializer.push(tp);
            names.insert(v, n);
        }
        let order = g.topo_order().map_err(|e| e.to_string())?;
        for id in order {
            let node = g.node(id);
            let mut np = NodeProto {
                name: Some(node.name.clone()),
                op_type: Some(node.op.name().to_string()),
                ..Default::default()
            };
            if let Op::Custom(c) = &node.op {
                np.domain = Some(c.domain.clone());
                self.domains.insert(c.domain.clone());
            }
            if let Op::Attention(_) = &node.op {
                // Attention is new in opset 23; its nonpad_kv_seqlen input in opset 24.
                let since = if node.input(6).is_some() { 24 } else { 23 };
                self.needs_opset = self.needs_opset.max(since);
            }
            let subs = node.op.subgraphs();
            let ncap = subs.first().map(|s| s.num_captures()).unwrap_or(0);
            let nformal = node.inputs().len().saturating_sub(ncap);
            let name_of = |v: &Option<ValueId>| {
                v.map(|v| names.get(&v).cloned().unwrap_or_default())
                    .unwrap_or_default()
            };
            np.input = node.inputs()[..nformal].iter().map(name_of).collect();
            while np.input.last().map(|s| s.is_empty()) == Some(true) {
                np.input.pop();
            }
            let cap_names: Vec<String> = node.inputs()[nformal..].iter().map(name_of).collect();
            for (k, a) in node.op.attrs() {
                np.attribute.push(self.attr(&k, &a, &cap_names)?);
            }
            for &o in node.outputs() {
                let unused = g.uses(o).is_empty() && !g.outputs().contains(&o);
                let n = self.namer.unique(&g.value(o).name);
                np.output.push(if unused && is_optional_output(&node.op) {
                    String::new()
                } else {
                    n.clone()
                });
                names.insert(o, n);
            }
            while np.output.last().map(|s| s.is_empty()) == Some(true) {
                np.output.pop();
            }
            gp.node.push(np);
        }
        // Graph outputs must be produced by nodes, once each: route others through Identity.
        let mut seen = HashSet::new();
        for (i, &v) in g.outputs().iter().enumerate() {
            let produced = matches!(g.value(v).def(), ValueDef::Node { .. });
            let first = seen.insert(v);
            let mut out = names
                .get(&v)
                .cloned()
                .ok_or_else(|| format!("graph output {i} is undefined"))?;
            if !produced || !first {
                let n = self.namer.unique(&format!("{}_out{i}", g.value(v).name));
                gp.node.push(NodeProto {
                    name: Some(format!("{n}_identity")),
                    op_type: Some("Identity".into()),
                    input: vec![out],
                    output: vec![n.clone()],
                    ..Default::default()
                });
                out = n;
            }
            gp.output.push(value_info(&out, &g.value(v).ty));
        }
        Ok(gp)
    }
}

/// Ops whose trailing outputs are optional and may be left unnamed when unused.
fn is_optional_output(op: &Op) -> bool {
    matches!(
        op,
        Op::Lstm(_)
            | Op::Gru(_)
            | Op::Rnn(_)
            | Op::Dropout(_)
            | Op::BatchNormalization(_)
            | Op::LayerNormalization(_)
            | Op::Attention(_)
    )
}

/// Builds the model protobuf; tensors are inline unless `external` names a data file.
fn build(
    g: &Graph,
    opts: &ExportOptions,
    external: Option<String>,
) -> Result<(ModelProto, Vec<Bytes>), String> {
    let mut ex = Exporter {
        namer: Namer {
            used: HashSet::new(),
        },
        external: external.map(|location| ExternalWriter {
            location,
            chunks: Vec::new(),
            offset: 0,
        }),
        domains: BTreeSet::new(),
        needs_opset: 21,
    };
    let gp = ex.graph(g, &[], true)?;
    let opset = opts.opset.unwrap_or(ex.needs_opset);
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(opset),
    }];
    for d in &ex.domains {
        opset_import.push(OperatorSetIdProto {
            domain: Some(d.clone()),
            version: Some(1),
        });
    }
    let ir_version = match opset {
        ..=20 => 9,
        21..=22 => 10,
        _ => 11,
    };
    let model = ModelProto {
        ir_version: Some(ir_version),
        opset_import,
        producer_name: Some("pare".into()),
        producer_version: Some(opts.producer_version.clone()),
        graph: Some(gp),
        ..Default::default()
    };
    Ok((model, ex.external.map(|e| e.chunks).unwrap_or_default()))
}

/// Converts a graph to an ONNX model protobuf with all tensors inline.
pub fn to_model_proto(g: &Graph, opts: &ExportOptions) -> Result<ModelProto, String> {
    build(g, opts, None).map(|(m, _)| m)
}

/// Writes a graph as an ONNX model file (atomically; external data beside it when large).
pub fn save_model(g: &Graph, path: &Path, opts: &ExportOptions) -> Result<(), OnnxError> {
    let weights: usize = g.constants().map(|(_, t)| t.byte_len()).sum();
    let fname = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "model.onnx".into());
    let external = (weights > opts.external_data_above).then(|| format!("{fname}.data"));
    let (model, chunks) = build(g, opts, external.clone()).map_err(|msg| OnnxError::Model {
        path: path.to_path_buf(),
        msg,
    })?;
    if let Some(loc) = external {
        let data_path: PathBuf = path.with_file_name(loc);
        let refs: Vec<&[u8]> = chunks.iter().map(|b| b.as_ref()).collect();
        write_atomic(&data_path, &refs)?;
    }
    let bytes = model.encode_to_vec();
    write_atomic(path, &[&bytes])
}
