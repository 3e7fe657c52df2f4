//! The verifier: a valid graph passes, and each corruption gives its own error.

use pare_ir::op::*;
use pare_ir::verify::{arity, verify_all, VARIADIC};
use pare_ir::{
    verify, Attrs, CustomOp, CustomOpDef, DType, Graph, Op, Shape, Tensor, TensorType, VerifyError,
};
use std::sync::Arc;

fn f32s(dims: &[usize]) -> TensorType {
    TensorType::new(DType::F32, Shape::fixed(dims))
}

/// x -> Relu -> Relu -> out.
fn chain() -> (Graph, pare_ir::NodeId, pare_ir::NodeId) {
    let mut g = Graph::new("main");
    let x = g.add_input("x", f32s(&[2, 3]));
    let a = g.add_node("a", Op::Relu, vec![Some(x)], vec!["a".into()]);
    let av = g.node(a).outputs()[0];
    let b = g.add_node("b", Op::Relu, vec![Some(av)], vec!["b".into()]);
    let bv = g.node(b).outputs()[0];
    g.add_output(bv);
    (g, a, b)
}

#[track_caller]
fn expect_err(g: &Graph, at: &str, msg: &str) -> VerifyError {
    let all = verify_all(g);
    let hit = all
        .iter()
        .find(|e| e.at.contains(at) && e.msg.contains(msg));
    match hit {
        Some(e) => {
            assert!(verify(g).is_err());
            e.clone()
        }
        None => panic!("no error at '{at}' with '{msg}'; got {all:#?}"),
    }
}

fn identity_branch(n_in: usize, n_out: usize) -> Graph {
    let mut g = Graph::new("branch");
    let ins: Vec<_> = (0..n_in)
        .map(|i| g.add_input(format!("in{i}"), TensorType::UNKNOWN))
        .collect();
    for k in 0..n_out {
        let src = ins.get(k % n_in.max(1)).copied();
        let v = match src {
            Some(v) => g.add_simple(format!("id{k}"), Op::Identity, &[v]),
            None => g.add_const(format!("c{k}"), Tensor::scalar(1.0f32)),
        };
        g.add_output(v);
    }
    g
}

#[test]
fn valid_graphs_pass() {
    let (g, _, _) = chain();
    assert_eq!(verify(&g), Ok(()));
    assert!(verify_all(&g).is_empty());

    let mut g = Graph::new("main");
    let c = g.add_input("c", TensorType::new(DType::Bool, Shape(vec![])));
    let x = g.add_input("x", f32s(&[3]));
    let w = g.add_const("w", Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]));
    let y = g.add_simple("mul", Op::Mul, &[x, w]);
    let n = g.add_node(
        "if",
        Op::If(IfAttrs {
            then_branch: identity_branch(1, 1),
            else_branch: identity_branch(1, 1),
        }),
        vec![Some(c), Some(y)],
        vec!["r".into()],
    );
    let r = g.node(n).outputs()[0];
    // Loop with omitted trip count and condition, one carried value, one capture.
    let mut body = identity_branch(4, 3);
    body.set_num_captures(1);
    let l = g.add_node(
        "loop",
        Op::Loop(LoopAttrs { body }),
        vec![None, None, Some(r), Some(w)],
        vec!["l0".into(), "l1".into()],
    );
    g.add_output(g.node(l).outputs()[0]);
    g.add_output(r);
    assert_eq!(verify(&g), Ok(()));

    // Removing a node and compacting leaves a valid graph.
    let (mut g, _, b) = chain();
    let out = g.outputs()[0];
    let x = g.inputs()[0];
    let _ = out;
    g.set_output(0, x);
    assert!(g.remove_node(b));
    assert_eq!(verify(&g), Ok(()));
    g.compact();
    assert_eq!(verify(&g), Ok(()));
}

#[test]
fn cycle_is_reported() {
    let (mut g, a, b) = chain();
    let bv = g.node(b).outputs()[0];
    g.set_operand(a, 0, Some(bv));
    let e = expect_err(&g, "graph 'main'", "cycle");
    assert!(e.msg.contains("'a'") || e.msg.contains("'b'"), "{e}");
}

#[test]
fn arity_violations() {
    let mut g = Graph::new("main");
    let x = g.add_input("x", f32s(&[2]));
    let r = g.add_node("r", Op::Relu, vec![Some(x), Some(x)], vec!["r".into()]);
    let _ = r;
    g.add_node("mm", Op::MatMul, vec![Some(x)], vec!["mm".into()]);
    g.add_node(
        "gemm",
        Op::Gemm(GemmAttrs::default()),
        vec![Some(x), None],
        vec!["gemm".into()],
    );
    g.add_node(
        "topk",
        Op::TopK(TopKAttrs::default()),
        vec![Some(x), Some(x)],
        vec!["v".into()],
    );
    g.add_node(
        "lstm",
        Op::Lstm(RnnAttrs::default()),
        vec![Some(x), Some(x), Some(x)],
        vec!["y".into(), "h".into(), "c".into(), "extra".into()],
    );
    // Trailing omitted operands do not count against the maximum.
    g.add_node("relu_ok", Op::Relu, vec![Some(x), None], vec!["ok".into()]);
    expect_err(&g, "node 'r' (Relu)", "has 2 operand(s), accepts at most 1");
    expect_err(
        &g,
        "node 'mm' (MatMul)",
        "has 1 operand(s), needs at least 2",
    );
    expect_err(&g, "node 'gemm' (Gemm)", "required operand 1 is omitted");
    expect_err(&g, "node 'topk' (TopK)", "has 1 result(s), expected 2");
    expect_err(&g, "node 'lstm' (LSTM)", "has 4 result(s), expected 0 to 3");
    assert!(!verify_all(&g).iter().any(|e| e.at.contains("relu_ok")));
}

#[test]
fn reading_a_removed_value() {
    let (mut g, _, b) = chain();
    let x = g.inputs()[0];
    g.set_output(0, x);
    let bv = g.node(b).outputs()[0];
    assert!(g.remove_node(b));
    // A node added afterwards reads the tombstone.
    g.add_node("late", Op::Relu, vec![Some(bv)], vec!["late".into()]);
    expect_err(
        &g,
        "node 'late' (Relu)",
        "operand 0 reads removed value 'b'",
    );
    expect_err(&g, "value 'b'", "removed value still has 1 reader(s)");
}

#[test]
fn use_list_naming_a_removed_node() {
    let (mut g, _, b) = chain();
    let x = g.inputs()[0];
    g.set_output(0, x);
    assert!(g.remove_node(b));
    // Editing a removed node records a use that no live node has.
    g.set_operand(b, 0, Some(x));
    expect_err(
        &g,
        "value 'x'",
        "use-list names operand 0 of node#1, which does not read it",
    );
}

#[test]
fn stale_use_of_a_node_output_does_not_break_ordering() {
    // a -> b; b is removed, then edited: a's output lists a use by the dead node. The ordering
    // walk would count it; the verifier reports the use-list and skips the cycle check.
    let (mut g, _, b) = chain();
    let x = g.inputs()[0];
    let av = g.node(g.node_ids().next().expect("a")).outputs()[0];
    g.set_output(0, x);
    assert!(g.remove_node(b));
    g.set_operand(b, 0, Some(av));
    expect_err(
        &g,
        "value 'a'",
        "use-list names operand 0 of node#1, which does not read it",
    );
}

#[test]
fn constant_with_wrong_type() {
    let mut g = Graph::new("main");
    let w = g.add_const("w", Tensor::from_vec(vec![2], vec![1.0f32, 2.0]));
    let y = g.add_simple("n", Op::Neg, &[w]);
    g.add_output(y);
    g.set_type(w, f32s(&[3]));
    expect_err(&g, "value 'w'", "constant of f32[2] has type f32[3]");
}

#[test]
fn if_branch_structure() {
    let mut g = Graph::new("main");
    let c = g.add_input("c", TensorType::new(DType::Bool, Shape(vec![])));
    let x = g.add_input("x", f32s(&[3]));
    let op = Op::If(IfAttrs {
        then_branch: identity_branch(1, 1),
        else_branch: identity_branch(1, 2),
    });
    g.add_node("if", op, vec![Some(c), Some(x)], vec!["r".into()]);
    expect_err(
        &g,
        "node 'if' (If)",
        "then_branch has 1 outputs but else_branch has 2",
    );
    expect_err(
        &g,
        "node 'if' (If)",
        "else_branch has 2 outputs, the node has 1",
    );

    let mut g = Graph::new("main");
    let c = g.add_input("c", TensorType::new(DType::Bool, Shape(vec![])));
    let op = Op::If(IfAttrs {
        then_branch: identity_branch(1, 1),
        else_branch: identity_branch(0, 1),
    });
    g.add_node("if", op, vec![Some(c)], vec!["r".into()]);
    expect_err(
        &g,
        "node 'if' (If)",
        "then_branch has 1 inputs, but the node captures 0 value(s)",
    );
}

#[test]
fn subgraph_errors_are_nested() {
    let mut bad = identity_branch(1, 1);
    let i = bad.inputs()[0];
    bad.add_node("bad", Op::Relu, vec![Some(i), Some(i)], vec!["z".into()]);
    let mut g = Graph::new("main");
    let c = g.add_input("c", TensorType::new(DType::Bool, Shape(vec![])));
    let x = g.add_input("x", f32s(&[3]));
    let op = Op::If(IfAttrs {
        then_branch: bad,
        else_branch: identity_branch(1, 1),
    });
    g.add_node("if", op, vec![Some(c), Some(x)], vec!["r".into()]);
    let e = expect_err(
        &g,
        "in then_branch of node 'if' (If): node 'bad' (Relu)",
        "accepts at most 1",
    );
    assert!(
        e.to_string()
            .starts_with("in then_branch of node 'if' (If): node 'bad' (Relu): "),
        "{e}"
    );
}

#[test]
fn loop_and_scan_structure() {
    let mut g = Graph::new("main");
    let x = g.add_input("x", f32s(&[3]));
    g.add_node(
        "loop",
        Op::Loop(LoopAttrs {
            body: identity_branch(3, 2),
        }),
        vec![None, None, Some(x), Some(x)],
        vec!["a".into(), "b".into()],
    );
    expect_err(&g, "node 'loop' (Loop)", "body has 3 inputs, expected 4");
    g.add_node(
        "loop2",
        Op::Loop(LoopAttrs {
            body: identity_branch(3, 3),
        }),
        vec![None, None, Some(x)],
        vec!["c".into()],
    );
    expect_err(&g, "node 'loop2' (Loop)", "body has 3 outputs, expected 2");
    // Carried values may not be omitted.
    g.add_node(
        "loop3",
        Op::Loop(LoopAttrs {
            body: identity_branch(3, 2),
        }),
        vec![None, None, None],
        vec!["d".into()],
    );
    expect_err(&g, "node 'loop3' (Loop)", "operand 2 is omitted");
    // Without declared captures, three carried values need at least three results.
    g.add_node(
        "loop4",
        Op::Loop(LoopAttrs {
            body: identity_branch(5, 3),
        }),
        vec![None, None, Some(x), Some(x), Some(x)],
        vec!["e".into(), "f".into()],
    );
    expect_err(
        &g,
        "node 'loop4' (Loop)",
        "3 state values (operands after 0 captures) but the node has only 2 results",
    );
    let scan = ScanAttrs {
        body: identity_branch(2, 2),
        num_scan_inputs: 0,
        ..Default::default()
    };
    g.add_node(
        "scan",
        Op::Scan(scan),
        vec![Some(x), Some(x)],
        vec!["s0".into(), "s1".into()],
    );
    expect_err(
        &g,
        "node 'scan' (Scan)",
        "num_scan_inputs 0 is not in 1..=2",
    );
    let scan = ScanAttrs {
        body: identity_branch(2, 1),
        num_scan_inputs: 1,
        ..Default::default()
    };
    g.add_node(
        "scan2",
        Op::Scan(scan),
        vec![Some(x), Some(x)],
        vec!["s2".into(), "s3".into()],
    );
    expect_err(
        &g,
        "node 'scan2' (Scan)",
        "body has 1 outputs, the node has 2 results",
    );
}

#[test]
fn attribute_sanity() {
    let mut g = Graph::new("main");
    let x = g.add_input("x", f32s(&[1, 3, 8, 8]));
    let w = g.add_input("w", f32s(&[4, 3, 3, 3]));
    let mut add = |name: &str, op: Op, ins: Vec<pare_ir::ValueId>, n_out: usize| {
        let outs = (0..n_out).map(|k| format!("{name}{k}")).collect();
        g.add_node(name, op, ins.into_iter().map(Some).collect(), outs);
    };
    add(
        "conv",
        Op::Conv(ConvAttrs {
            group: 0,
            ..Default::default()
        }),
        vec![x, w],
        1,
    );
    add(
        "conv2",
        Op::Conv(ConvAttrs {
            strides: Some(vec![1, 0]),
            ..Default::default()
        }),
        vec![x, w],
        1,
    );
    add(
        "conv3",
        Op::Conv(ConvAttrs {
            kernel_shape: Some(vec![3, 3]),
            pads: Some(vec![1, 1]),
            ..Default::default()
        }),
        vec![x, w],
        1,
    );
    add(
        "pool",
        Op::MaxPool(PoolAttrs {
            kernel_shape: vec![0, 3],
            ..Default::default()
        }),
        vec![x],
        1,
    );
    add(
        "pool2",
        Op::AveragePool(PoolAttrs {
            kernel_shape: vec![2, 2],
            auto_pad: "SAME".into(),
            ..Default::default()
        }),
        vec![x],
        1,
    );
    add(
        "pad",
        Op::Pad(PadAttrs {
            mode: "mirror".into(),
        }),
        vec![x, x],
        1,
    );
    add(
        "split",
        Op::Split(SplitAttrs {
            axis: 0,
            num_outputs: Some(3),
        }),
        vec![x],
        2,
    );
    add(
        "ein",
        Op::Einsum(EinsumAttrs {
            equation: "ij,jk->ik".into(),
        }),
        vec![x],
        1,
    );
    add(
        "ein2",
        Op::Einsum(EinsumAttrs {
            equation: "i1->i".into(),
        }),
        vec![x],
        1,
    );
    add(
        "tr",
        Op::Transpose(TransposeAttrs {
            perm: Some(vec![0, 0, 1, 2]),
        }),
        vec![x],
        1,
    );
    add(
        "rnn",
        Op::Rnn(RnnAttrs {
            direction: "sideways".into(),
            ..Default::default()
        }),
        vec![x, x, x],
        2,
    );
    add(
        "gelu",
        Op::Gelu(GeluAttrs {
            approximate: "fast".into(),
        }),
        vec![x],
        1,
    );
    add(
        "d2s",
        Op::DepthToSpace(DepthToSpaceAttrs {
            blocksize: 0,
            mode: "DCR".into(),
        }),
        vec![x],
        1,
    );
    add(
        "rs",
        Op::Resize(ResizeAttrs {
            mode: "bicubic".into(),
            ..Default::default()
        }),
        vec![x],
        1,
    );
    expect_err(&g, "node 'conv' (Conv)", "group 0 must be >= 1");
    expect_err(
        &g,
        "node 'conv2' (Conv)",
        "strides [1, 0] has entry 0 below 1",
    );
    expect_err(
        &g,
        "node 'conv3' (Conv)",
        "pads [1, 1] has 2 entries, expected 4",
    );
    expect_err(
        &g,
        "node 'pool' (MaxPool)",
        "kernel_shape [0, 3] has non-positive extent 0",
    );
    expect_err(
        &g,
        "node 'pool2' (AveragePool)",
        "auto_pad 'SAME' is not one of",
    );
    expect_err(
        &g,
        "node 'pad' (Pad)",
        "mode 'mirror' is not one of constant, reflect, edge, wrap",
    );
    expect_err(
        &g,
        "node 'split' (Split)",
        "num_outputs is 3 but the node has 2 results",
    );
    expect_err(
        &g,
        "node 'ein' (Einsum)",
        "has 2 input terms but the node has 1 inputs",
    );
    expect_err(&g, "node 'ein2' (Einsum)", "invalid character '1'");
    expect_err(&g, "node 'tr' (Transpose)", "not a permutation");
    expect_err(&g, "node 'rnn' (RNN)", "invalid direction 'sideways'");
    expect_err(&g, "node 'gelu' (Gelu)", "approximate 'fast'");
    expect_err(&g, "node 'd2s' (DepthToSpace)", "blocksize 0 must be >= 1");
    expect_err(&g, "node 'rs' (Resize)", "mode 'bicubic'");
    assert!(verify_all(&g).len() >= 14);
}

#[derive(Debug)]
struct Picky;
impl CustomOpDef for Picky {
    fn infer(&self, _: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        Ok(inputs.to_vec())
    }
    fn verify(&self, _: &Attrs, num_inputs: usize) -> Result<(), String> {
        if num_inputs == 1 {
            Ok(())
        } else {
            Err(format!("Picky takes one input, got {num_inputs}"))
        }
    }
    fn eval(&self, _: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        Ok(inputs.to_vec())
    }
}

#[test]
fn custom_op_verify_hook() {
    let mut g = Graph::new("main");
    let x = g.add_input("x", f32s(&[2]));
    let op = Op::Custom(CustomOp {
        domain: "com.example".into(),
        op_type: "Picky".into(),
        attrs: Attrs::default(),
        def: Some(Arc::new(Picky)),
    });
    g.add_node("p1", op.clone(), vec![Some(x)], vec!["p1".into()]);
    g.add_node("p2", op, vec![Some(x), Some(x)], vec!["p2".into()]);
    expect_err(&g, "node 'p2' (Picky)", "Picky takes one input, got 2");
    assert!(!verify_all(&g).iter().any(|e| e.at.contains("p1")));
}

#[test]
fn arity_table_is_sane() {
    for name in Op::ALL {
        // Ops that need attributes are built with placeholder ones; the table only looks at the variant.
        let op = match Op::from_attrs(name, Attrs::default()) {
            Ok(Some(op)) => op,
            _ => continue,
        };
        let (a, b, c, d) = arity(&op);
        assert!(a <= b && c <= d, "{name}: {:?}", (a, b, c, d));
        assert!(b > 0 || a == 0, "{name}");
    }
    assert_eq!(
        arity(&Op::Concat(ConcatAttrs { axis: 0 })),
        (1, VARIADIC, 1, 1)
    );
    assert_eq!(arity(&Op::Lstm(RnnAttrs::default())), (3, 8, 0, 3));
    assert_eq!(arity(&Op::Slice), (3, 5, 1, 1));
}
