//! Malformed models give clear errors that name the file, node, op and problem; never a panic.

use bytes::Bytes;
use pare_onnx::proto::{
    tensor_proto::DataType, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use pare_onnx::OnnxError;
use prost::Message;
use std::path::{Path, PathBuf};

fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    use pare_onnx::proto::tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            denotation: None,
                            value: Some(Value::DimValue(d)),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    outputs: &[&str],
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            input: inputs,
            initializer: inits,
            output: outputs
                .iter()
                .map(|o| vi(o, &[]))
                .map(|mut v| {
                    v.r#type = None;
                    v
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn load(m: &ModelProto) -> Result<pare_onnx::Model, OnnxError> {
    pare_onnx::load_model_from_bytes(
        Bytes::from(m.encode_to_vec()),
        None,
        Path::new("bad.onnx"),
        &Default::default(),
    )
}

fn err_text(m: &ModelProto) -> String {
    match load(m) {
        Ok(_) => panic!("malformed model was accepted"),
        Err(e) => e.to_string(),
    }
}

fn good() -> ModelProto {
    model(
        vec![node("relu1", "Relu", &["x"], &["y"])],
        vec![vi("x", &[2, 3])],
        vec![],
        &["y"],
    )
}

#[test]
fn good_model_loads() {
    let m = load(&good()).expect("valid model");
    assert_eq!(m.graph.num_nodes(), 1);
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("trunc.onnx");
    let mut m = good();
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![64],
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(vec![0u8; 256])),
        ..Default::default()
    });
    let bytes = m.encode_to_vec();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = pare_onnx::load_model(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trunc.onnx") && e.contains("not a valid ONNX model"),
        "{e}"
    );
}

#[test]
fn missing_file() {
    let e = pare_onnx::load_model(Path::new("/nonexistent/m.onnx"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/m.onnx"), "{e}");
}

#[test]
fn wrong_dtype_in_tensor() {
    // Declared FLOAT with 4 elements, but the data is int64 values.
    let t = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(DataType::Float as i32),
        int64_data: vec![1, 2, 3, 4],
        ..Default::default()
    };
    let m = model(
        vec![node("add1", "Add", &["x", "w"], &["y"])],
        vec![vi("x", &[4])],
        vec![t],
        &["y"],
    );
    let e = err_text(&m);
    assert!(
        e.contains("tensor 'w'") && e.contains("needs 4 elements"),
        "{e}"
    );

    // Raw data of the wrong length.
    let t = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(vec![0u8; 12])),
        ..Default::default()
    };
    let m = model(
        vec![node("add1", "Add", &["x", "w"], &["y"])],
        vec![vi("x", &[4])],
        vec![t],
        &["y"],
    );
    let e = err_text(&m);
    assert!(
        e.contains("tensor 'w'") && e.contains("needs 16 bytes"),
        "{e}"
    );
}

#[test]
fn missing_initializer() {
    let m = model(
        vec![node("add1", "Add", &["x", "bias"], &["y"])],
        vec![vi("x", &[4])],
        vec![],
        &["y"],
    );
    let e = err_text(&m);
    assert!(
        e.contains("node 'add1'") && e.contains("'bias'") && e.contains("not defined"),
        "{e}"
    );
}

#[test]
fn cyclic_graph() {
    let m = model(
        vec![
            node("a", "Add", &["x", "d"], &["c"]),
            node("b", "Relu", &["c"], &["d"]),
        ],
        vec![vi("x", &[4])],
        vec![],
        &["d"],
    );
    let e = err_text(&m);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn unknown_op() {
    let m = model(
        vec![node("weird", "FrobnicateTensor", &["x"], &["y"])],
        vec![vi("x", &[4])],
        vec![],
        &["y"],
    );
    match load(&m) {
        Err(OnnxError::UnsupportedOp {
            node,
            op,
            opset,
            path,
            ..
        }) => {
            assert_eq!(
                (node.as_str(), op.as_str(), opset),
                ("weird", "FrobnicateTensor", 17)
            );
            assert_eq!(path, PathBuf::from("bad.onnx"));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let mut m = m;
    m.graph.as_mut().unwrap().node[0].domain = Some("com.microsoft".into());
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    let e = err_text(&m);
    assert!(
        e.contains("com.microsoft") && e.contains("FrobnicateTensor"),
        "{e}"
    );
}

#[test]
fn shape_mismatch() {
    let m = model(
        vec![node("add1", "Add", &["x", "z"], &["y"])],
        vec![vi("x", &[2, 3]), vi("z", &[4])],
        vec![],
        &["y"],
    );
    let e = err_text(&m);
    assert!(
        e.contains("add1") && e.contains("Add") && e.contains("broadcast"),
        "{e}"
    );
}

#[test]
fn bad_attribute() {
    let mut n = node("sm", "Softmax", &["x"], &["y"]);
    n.attribute.push(pare_onnx::proto::AttributeProto {
        name: Some("axis".into()),
        r#type: Some(pare_onnx::proto::attribute_proto::AttributeType::String as i32),
        s: Some(Bytes::from_static(b"last")),
        ..Default::default()
    });
    let m = model(vec![n], vec![vi("x", &[2, 3])], vec![], &["y"]);
    let e = err_text(&m);
    assert!(e.contains("'sm'") && e.contains("axis"), "{e}");
}

#[test]
fn unsupported_opset() {
    let mut m = good();
    m.opset_import[0].version = Some(99);
    let e = err_text(&m);
    assert!(e.contains("opset 99") && e.contains("supported"), "{e}");
}
