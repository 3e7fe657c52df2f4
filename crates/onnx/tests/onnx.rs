//! Import/export tests that need no interpreter: tensor encodings, external data, captures,
//! export round trips.

use bytes::Bytes;
use pare_ir::{DType, Op, Tensor};
use pare_onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};
use prost::Message;
use std::path::Path;

fn tp(name: &str, dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype as i32),
        ..Default::default()
    }
}

fn untyped(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn model(g: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(g),
        ..Default::default()
    }
}

#[test]
fn typed_fields_decode() {
    let mut f16 = tp("h", DataType::Float16, &[2]);
    f16.int32_data = vec![0x3c00, 0xc000]; // 1.0, -2.0
    let t = pare_onnx::tensor_from_proto(&f16).unwrap();
    assert_eq!(
        t.to_vec::<half::f16>().unwrap(),
        vec![half::f16::from_f32(1.0), half::f16::from_f32(-2.0)]
    );

    let mut i4 = tp("q", DataType::Int4, &[3]);
    i4.int32_data = vec![0x21, 0x0f]; // elements 1, 2, -1 (0xf)
    let t = pare_onnx::tensor_from_proto(&i4).unwrap();
    assert_eq!(t.dtype(), DType::I4);
    assert_eq!(t.raw(), &[0x21, 0x0f]);

    let mut b = tp("b", DataType::Bool, &[3]);
    b.int32_data = vec![1, 0, 1];
    assert_eq!(
        pare_onnx::tensor_from_proto(&b)
            .unwrap()
            .to_vec::<bool>()
            .unwrap(),
        vec![true, false, true]
    );

    let mut u64t = tp("u", DataType::Uint32, &[2]);
    u64t.uint64_data = vec![7, u32::MAX as u64];
    assert_eq!(
        pare_onnx::tensor_from_proto(&u64t)
            .unwrap()
            .to_vec::<u32>()
            .unwrap(),
        vec![7, u32::MAX]
    );

    let mut s = tp("s", DataType::String, &[2]);
    s.string_data = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"c")];
    assert_eq!(
        pare_onnx::tensor_from_proto(&s).unwrap().strings().unwrap(),
        &["ab".to_string(), "c".to_string()]
    );

    let mut neg = tp("n", DataType::Float, &[-1]);
    neg.float_data = vec![1.0];
    assert!(pare_onnx::tensor_from_proto(&neg)
        .unwrap_err()
        .contains("negative"));
}

#[test]
fn tensor_pb_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.pb");
    let t = Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.25, 0.0]);
    pare_onnx::write_tensor_pb(&p, "x", &t).unwrap();
    let (name, back) = pare_onnx::read_tensor_pb(&p).unwrap();
    assert_eq!((name.as_str(), back), ("x", t));
}

/// A model whose weight lives in an external data file is mapped, not copied: the tensor's
/// bytes point into the mapping of the data file, at the declared offset.
#[test]
fn external_data_is_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let weights: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    let mut data = vec![0u8; 4096];
    data.extend(weights.iter().flat_map(|w| w.to_le_bytes()));
    std::fs::write(dir.path().join("w.bin"), &data).unwrap();
    let mut w = tp("w", DataType::Float, &[1024]);
    w.data_location = Some(1);
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    w.external_data = vec![
        kv("location", "w.bin"),
        kv("offset", "4096"),
        kv("length", "4096"),
    ];
    let g = GraphProto {
        node: vec![NodeProto {
            op_type: Some("Add".into()),
            input: vec!["x".into(), "w".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        initializer: vec![w],
        input: vec![untyped("x")],
        output: vec![untyped("y")],
        ..Default::default()
    };
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, model(g, 17).encode_to_vec()).unwrap();
    let m = pare_onnx::load_model(&path, &Default::default()).unwrap();
    let (_, t) = m.graph.constants().next().unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), weights);

    // A location escaping the model directory is refused.
    let mut bad = model(GraphProto::default(), 17);
    let mut w = tp("w", DataType::Float, &[1]);
    w.data_location = Some(1);
    w.external_data = vec![kv("location", "../w.bin")];
    bad.graph = Some(GraphProto {
        initializer: vec![w],
        ..Default::default()
    });
    std::fs::write(&path, bad.encode_to_vec()).unwrap();
    let e = pare_onnx::load_model(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("relative path inside"), "{e}");

    // Export with a low threshold writes external data, and it loads back identically.
    let out = dir.path().join("out.onnx");
    let opts = pare_onnx::ExportOptions {
        external_data_above: 0,
        ..Default::default()
    };
    pare_onnx::save_model(&m.graph, &out, &opts).unwrap();
    assert!(dir.path().join("out.onnx.data").is_file());
    let again = pare_onnx::load_model(&out, &Default::default()).unwrap();
    let (_, t2) = again.graph.constants().next().unwrap();
    assert_eq!(t2.to_vec::<f32>().unwrap(), weights);
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// If branches that read outer values get them as explicit captures, and export restores the
/// outer-scope references.
#[test]
fn if_captures_are_explicit_and_round_trip() {
    let branch = |op: &str, name: &str| GraphProto {
        name: Some(name.into()),
        node: vec![NodeProto {
            op_type: Some(op.into()),
            input: vec!["a".into(), "b".into()],
            output: vec![format!("{name}_out")],
            ..Default::default()
        }],
        output: vec![untyped(&format!("{name}_out"))],
        ..Default::default()
    };
    let g = GraphProto {
        node: vec![NodeProto {
            name: Some("cond_if".into()),
            op_type: Some("If".into()),
            input: vec!["c".into()],
            output: vec!["y".into()],
            attribute: vec![
                graph_attr("then_branch", branch("Add", "then")),
                graph_attr("else_branch", branch("Sub", "else")),
            ],
            ..Default::default()
        }],
        input: vec![untyped("c"), untyped("a"), untyped("b")],
        output: vec![untyped("y")],
        ..Default::default()
    };
    let m = pare_onnx::load_model_from_bytes(
        Bytes::from(model(g, 17).encode_to_vec()),
        None,
        Path::new("if.onnx"),
        &pare_onnx::ImportOptions {
            skip_checks: true,
            ..Default::default()
        },
    )
    .unwrap();
    let n = m.graph.node_ids().next().unwrap();
    let node = m.graph.node(n);
    assert_eq!(node.inputs().len(), 3, "condition + two captures");
    let Op::If(a) = &node.op else {
        panic!("not If")
    };
    assert_eq!(a.then_branch.num_captures(), 2);
    assert_eq!(a.else_branch.inputs().len(), 2);
    // Both branches list the captures in the same order as the operands.
    let cap_names: Vec<&str> = a
        .else_branch
        .inputs()
        .iter()
        .map(|&v| a.else_branch.value(v).name.as_str())
        .collect();
    let op_names: Vec<&str> = node.inputs()[1..]
        .iter()
        .map(|v| m.graph.value(v.unwrap()).name.as_str())
        .collect();
    assert_eq!(cap_names, op_names);

    let proto = pare_onnx::to_model_proto(&m.graph, &Default::default()).unwrap();
    let gp = proto.graph.as_ref().unwrap();
    assert_eq!(
        gp.node[0].input,
        vec!["c".to_string()],
        "captures are not formal If inputs in ONNX"
    );
    let then_g = gp.node[0]
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some("then_branch"))
        .unwrap()
        .g
        .as_ref()
        .unwrap();
    assert!(then_g.input.is_empty());
    assert_eq!(then_g.node[0].input, vec!["a".to_string(), "b".to_string()]);
}

/// Legacy attribute forms become inputs: Squeeze-11 axes, ReduceMean-13 axes, Split-11 split.
#[test]
fn legacy_attributes_become_inputs() {
    let ints = |name: &str, v: &[i64]| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    };
    let g = GraphProto {
        node: vec![
            NodeProto {
                op_type: Some("ReduceMean".into()),
                input: vec!["x".into()],
                output: vec!["m".into()],
                attribute: vec![ints("axes", &[1])],
                ..Default::default()
            },
            NodeProto {
                op_type: Some("Squeeze".into()),
                input: vec!["m".into()],
                output: vec!["s".into()],
                attribute: vec![ints("axes", &[1])],
                ..Default::default()
            },
        ],
        input: vec![untyped("x")],
        output: vec![untyped("s")],
        ..Default::default()
    };
    let m = pare_onnx::load_model_from_bytes(
        Bytes::from(model(g, 11).encode_to_vec()),
        None,
        Path::new("l.onnx"),
        &pare_onnx::ImportOptions {
            skip_checks: true,
            ..Default::default()
        },
    )
    .unwrap();
    for n in m.graph.node_ids() {
        let node = m.graph.node(n);
        let axes = m
            .graph
            .constant(node.input(1).expect("axes input"))
            .expect("constant axes");
        assert_eq!(axes.to_vec::<i64>().unwrap(), vec![1]);
        assert!(node.op.attrs().iter().all(|(k, _)| k != "axes"));
    }
}

/// Every real model (when fetched) and every node-test model pare implements imports, and
/// exports to a model that imports again with the same node count.
#[test]
fn smoke_import_and_export_everything_available() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut paths = Vec::new();
    for d in [root.join(".cache/models"), root.join(".cache/onnx-node")] {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "onnx") {
                    paths.push(p);
                } else if p.join("model.onnx").is_file() {
                    paths.push(p.join("model.onnx"));
                }
            }
        }
    }
    let mut imported = 0;
    for p in &paths {
        match pare_onnx::load_model(p, &Default::default()) {
            Ok(m) => {
                imported += 1;
                let proto = pare_onnx::to_model_proto(&m.graph, &Default::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let again = pare_onnx::load_model_from_bytes(
                    Bytes::from(proto.encode_to_vec()),
                    None,
                    p,
                    &Default::default(),
                )
                .unwrap_or_else(|e| panic!("{}: re-import: {e}", p.display()));
                assert!(
                    again.graph.num_nodes() >= m.graph.num_nodes(),
                    "{}",
                    p.display()
                );
            }
            Err(e) => {
                if std::env::var_os("PARE_VERBOSE").is_some() {
                    eprintln!("{e}");
                }
            }
        }
    }
    eprintln!("imported {imported} of {} models", paths.len());
}
