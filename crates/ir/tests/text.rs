//! Text form: printer and parser. Hand-written cases for each construct and error, plus a
//! property test that random graphs survive print → parse → print unchanged.

use pare_ir::op::{ConvAttrs, IfAttrs, SplitAttrs};
use pare_ir::text::print_node;
use pare_ir::*;
use proptest::prelude::*;

fn print(g: &Graph) -> String {
    print_graph(g, &PrintOptions::default())
}

fn parse(src: &str) -> Graph {
    match parse_graph(src) {
        Ok(g) => g,
        Err(e) => panic!("parse failed: {e}\n{src}"),
    }
}

/// Parses, prints, and checks that printing the re-parse gives the same text; returns the graph.
fn roundtrip(src: &str) -> Graph {
    let g = parse(src);
    let text = print(&g);
    assert_eq!(
        print(&parse(&text)),
        text,
        "print(parse(print(g))) != print(g)"
    );
    g
}

/// Checks that a programmatically built graph survives print → parse → print.
fn assert_roundtrip(g: &Graph) -> String {
    let text = print(g);
    let g2 = parse(&text);
    assert_eq!(print(&g2), text);
    assert_eq!(g2.num_nodes(), g.num_nodes());
    text
}

fn err(src: &str) -> ParseError {
    match parse_graph(src) {
        Ok(g) => panic!("expected a parse error, got:\n{}", print(&g)),
        Err(e) => e,
    }
}

fn f32_type(dims: &[u64]) -> TensorType {
    TensorType::new(
        DType::F32,
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
    )
}

const EXAMPLE: &str = r#"graph @main(%x: f32[N,3,8,8], %mask: bool[*], %cond: bool[]) -> (%r, %q, %y) {
  %w = const f32[2,3,1,1] [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  %big = const f32[17] 0x0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f0000803f
  %s = const string[2] ["a", "b"]
  %c = Conv(%x, %w, _) {auto_pad="SAME_UPPER", pads=[0,0,0,0], strides=[2,2]} : f32[N,2,4,4] loc("conv1")
  %a, %b = Split(%c) {axis=1, num_outputs=2} : f32[N,1,?,?], ?[*]
  %r = If(%cond, %a) {then_branch=graph @then(%a0: f32[*]) -> (%o) {
    %o = Relu(%a0) : f32[*]
  }, else_branch=graph @else(%a1: f32[*]) -> (%a1) {
  }} : f32[*]
  %q = "com.example::MyOp"(%x, _, %s) {k=1, eps=1e-5} : f32[*]
  %y = Gemm(%big, %big) {alpha=0.5, transB=1} : f32[?,?] loc("fc")
}
"#;

#[test]
fn example_prints_back_identically() {
    let g = parse(EXAMPLE);
    assert_eq!(print(&g), EXAMPLE);
    assert_eq!(g.num_nodes(), 5);
    assert_eq!(g.constants().count(), 3);
    let c = g.find_value("c").unwrap();
    let conv = g.node(g.producer(c).unwrap());
    assert_eq!(conv.name, "conv1");
    assert_eq!(conv.inputs().len(), 3);
    assert_eq!(conv.input(2), None);
    match &conv.op {
        Op::Conv(a) => {
            assert_eq!(a.strides, Some(vec![2, 2]));
            assert_eq!(a.auto_pad, "SAME_UPPER");
            assert_eq!(a.group, 1);
        }
        other => panic!("expected Conv, got {other}"),
    }
    let ty = &g.value(c).ty;
    assert_eq!(ty.to_string(), "f32[N,2,4,4]");
}

#[test]
fn every_attribute_kind() {
    let g = roundtrip(
        r#"graph @g(%x: f32[2]) -> (%y) {
  %y = "test::Attrs"(%x) {i=3, neg=-9223372036854775808, f=1.0, small=1e-5, big=3.4028235e38, pinf=inf, ninf=-inf, n=nan, nz=-0.0, s="q\"uote\\ \n\t\u{1} é", ints=[1,-2,3], floats=[1.0,2.5,-inf], mixed=[1, 2.5], strs=["a","b c"], ei=ints[], ef=floats[], es=strings[], fl=floats[1, 2], t=tensor<f32[2,2] 0x0000803f000000400000404000008040>, td=tensor<i64[2] [7, -1]>, ts=tensor<string[] ["s"]>, sub=graph @sub(%a: f32[*]) -> (%a) {
  }}
}
"#,
    );
    let y = g.find_value("y").unwrap();
    let Op::Custom(c) = &g.node(g.producer(y).unwrap()).op else {
        panic!("custom op expected")
    };
    assert_eq!((c.domain.as_str(), c.op_type.as_str()), ("test", "Attrs"));
    let a = |n: &str| {
        c.attrs
            .get(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .clone()
    };
    assert_eq!(a("i"), Attr::Int(3));
    assert_eq!(a("neg"), Attr::Int(i64::MIN));
    assert_eq!(a("f"), Attr::Float(1.0));
    assert_eq!(a("small"), Attr::Float(1e-5));
    assert_eq!(a("big"), Attr::Float(f32::MAX));
    assert_eq!(a("pinf"), Attr::Float(f32::INFINITY));
    assert_eq!(a("ninf"), Attr::Float(f32::NEG_INFINITY));
    assert!(matches!(a("n"), Attr::Float(v) if v.is_nan()));
    assert!(matches!(a("nz"), Attr::Float(v) if v == 0.0 && v.is_sign_negative()));
    assert_eq!(a("s"), Attr::String("q\"uote\\ \n\t\u{1} é".into()));
    assert_eq!(a("ints"), Attr::Ints(vec![1, -2, 3]));
    assert_eq!(a("floats"), Attr::Floats(vec![1.0, 2.5, f32::NEG_INFINITY]));
    assert_eq!(a("mixed"), Attr::Floats(vec![1.0, 2.5]));
    assert_eq!(a("strs"), Attr::Strings(vec!["a".into(), "b c".into()]));
    assert_eq!(a("ei"), Attr::Ints(vec![]));
    assert_eq!(a("ef"), Attr::Floats(vec![]));
    assert_eq!(a("es"), Attr::Strings(vec![]));
    assert_eq!(a("fl"), Attr::Floats(vec![1.0, 2.0]));
    assert_eq!(
        a("t"),
        Attr::Tensor(Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]))
    );
    assert_eq!(
        a("td"),
        Attr::Tensor(Tensor::from_vec(vec![2], vec![7i64, -1]))
    );
    assert_eq!(
        a("ts"),
        Attr::Tensor(Tensor::from_strings(vec![], vec!["s".into()]).unwrap())
    );
    match a("sub") {
        Attr::Graph(sub) => {
            assert_eq!(sub.name, "sub");
            assert_eq!(sub.inputs().len(), 1);
            assert_eq!(sub.outputs(), sub.inputs());
        }
        other => panic!("expected a graph, got {other:?}"),
    }
    // The printed form of each kind.
    let text = print(&g);
    for part in [
        "i=3",
        "f=1.0",
        "small=1e-5",
        "pinf=inf",
        "ninf=-inf",
        "n=nan",
        "nz=-0.0",
        r#"s="q\"uote\\ \n\t\u{1} é""#,
        "ints=[1,-2,3]",
        "floats=[1.0,2.5,-inf]",
        r#"strs=["a","b c"]"#,
        "ei=ints[]",
        "ef=floats[]",
        "es=strings[]",
        "t=tensor<f32[2,2] [1.0, 2.0, 3.0, 4.0]>",
        "td=tensor<i64[2] [7, -1]>",
        r#"ts=tensor<string[] ["s"]>"#,
        "sub=graph @sub(%a: f32[*]) -> (%a) {\n  }",
    ] {
        assert!(text.contains(part), "{part:?} not in\n{text}");
    }
}

#[test]
fn core_op_attributes_are_typed_and_defaults_omitted() {
    let g = roundtrip(
        r#"graph @g(%a: f32[2,3], %b: f32[3,4]) -> (%y) {
  %y = Gemm(%a, %b, _) {alpha=2, beta=1.0, transA=0}
}
"#,
    );
    let y = g.find_value("y").unwrap();
    match &g.node(g.producer(y).unwrap()).op {
        Op::Gemm(a) => {
            assert_eq!(a.alpha, 2.0);
            assert!(!a.trans_a);
        }
        other => panic!("expected Gemm, got {other}"),
    }
    // Defaults (beta=1, transA=0) are not printed; the int 2 prints as the float it is.
    assert!(
        print(&g).contains("%y = Gemm(%a, %b, _) {alpha=2.0}\n"),
        "{}",
        print(&g)
    );
}

#[test]
fn cast_prints_dtype_names() {
    let g = roundtrip(
        "graph @g(%x: f32[2]) -> (%y, %z) {\n  %y = Cast(%x) {to=10}\n  %z = Cast(%x) {to=\"i4\"}\n}\n",
    );
    let text = print(&g);
    assert!(text.contains("%y = Cast(%x) {to=\"f16\"}"), "{text}");
    assert!(text.contains("%z = Cast(%x) {to=\"i4\"}"), "{text}");
    let z = g.find_value("z").unwrap();
    assert!(matches!(&g.node(g.producer(z).unwrap()).op, Op::Cast(a) if a.to == DType::I4));
}

#[test]
fn quoted_names() {
    let g = roundtrip(
        r#"graph @"my graph"(%"onnx::Conv_12": f32[1], %"gpu_0/softmax:0": f32[1]) -> (%"out put") {
  %"out put" = Add(%"onnx::Conv_12", %"gpu_0/softmax:0") loc("node \"1\"")
  %plain.name-1$ = Relu(%"out put")
}
"#,
    );
    assert_eq!(g.name, "my graph");
    for n in [
        "onnx::Conv_12",
        "gpu_0/softmax:0",
        "out put",
        "plain.name-1$",
    ] {
        assert!(g.find_value(n).is_some(), "{n} missing");
    }
    let out = g.find_value("out put").unwrap();
    assert_eq!(g.node(g.producer(out).unwrap()).name, "node \"1\"");
    let text = print(&g);
    assert!(
        text.starts_with("graph @\"my graph\"(%\"onnx::Conv_12\": f32[1]"),
        "{text}"
    );
}

#[test]
fn odd_names_and_dims_roundtrip() {
    let mut g = Graph::new("");
    let names = [
        "",
        "x y",
        "a\"b",
        "back\\slash",
        "new\nline",
        "tab\t",
        "ctl\u{7}",
        "é",
        "x#1",
        "%",
        "@",
        "0",
        "-",
    ];
    let mut vs = Vec::new();
    for n in names {
        let ty = TensorType::new(
            DType::F32,
            Shape(vec![
                Dim::Sym(n.into()),
                Dim::Sym("N".into()),
                Dim::Sym("?".into()),
                Dim::Sym("3".into()),
                Dim::Unknown,
            ]),
        );
        vs.push(g.add_input(n, ty));
    }
    let y = g.add_simple(names[5], Op::Relu, &[vs[0]]);
    g.add_output(y);
    let text = assert_roundtrip(&g);
    let g2 = parse(&text);
    assert_eq!(g2.name, "");
    for (i, n) in names.iter().enumerate() {
        let v = g2.inputs()[i];
        assert_eq!(g2.value(v).name, *n);
        assert_eq!(g2.value(v).ty, g.value(vs[i]).ty);
    }
}

#[test]
fn duplicate_and_empty_names_are_disambiguated() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32_type(&[2]));
    let x2 = g.add_input("x", f32_type(&[2]));
    let a = g.add_simple("", Op::Add, &[x, x2]);
    g.set_name(a, "");
    let b = g.add_simple("", Op::Relu, &[a]);
    g.set_name(b, "");
    let c = g.add_simple("x", Op::Add, &[a, b]);
    g.add_output(c);
    g.add_output(x);
    let text = assert_roundtrip(&g);
    assert_eq!(
        text,
        "graph @g(%x: f32[2], %x#1: f32[2]) -> (%x#2, %x) {\n  %#0 = Add(%x, %x#1)\n  %#1 = Relu(%#0)\n  %x#2 = Add(%#0, %#1) loc(\"x\")\n}\n"
    );
    let g2 = parse(&text);
    let names: Vec<&str> = g2.value_ids().map(|v| g2.value(v).name.as_str()).collect();
    assert_eq!(names, ["x", "x", "", "", "x"]);
    // A hand-written `%x#5` is the name "x" with a disambiguator.
    let g3 = parse("graph @g(%x#5: f32[1]) -> (%x#5) {\n}\n");
    assert_eq!(g3.value(g3.inputs()[0]).name, "x");
}

#[test]
fn optional_operands_and_multiple_outputs() {
    let g = roundtrip(
        r#"graph @g(%x: f32[4,6]) -> (%p, %q, %r) {
  %p, %q, %r = Split(%x, _) {axis=1, num_outputs=3} : f32[4,2], f32[4,2], ?[*]
}
"#,
    );
    let p = g.find_value("p").unwrap();
    let node = g.node(g.producer(p).unwrap());
    assert_eq!(node.inputs(), &[Some(g.inputs()[0]), None]);
    assert_eq!(node.outputs().len(), 3);
    assert_eq!(g.value(node.outputs()[1]).ty, f32_type(&[4, 2]));
    assert!(g.value(node.outputs()[2]).ty.is_unknown());
    assert!(matches!(
        &node.op,
        Op::Split(SplitAttrs {
            axis: 1,
            num_outputs: Some(3)
        })
    ));
}

#[test]
fn subgraph_with_captured_input() {
    // The outer %bias reaches the branch as an explicit operand and branch input.
    let g = roundtrip(
        r#"graph @main(%c: bool[], %x: f32[N], %bias: f32[N]) -> (%y) {
  %y = If(%c, %x, %bias) {else_branch=graph @else(%x1: f32[N], capture %b1: f32[N]) -> (%x1) {
  }, then_branch=graph @then(capture %x0: f32[N], capture %b0: f32[N]) -> (%s) {
    %k = const f32[] [2.0]
    %t = Mul(%x0, %k) : f32[N]
    %s = Add(%t, %b0) : f32[N]
  }} : f32[N]
}
"#,
    );
    let y = g.find_value("y").unwrap();
    let node = g.node(g.producer(y).unwrap());
    assert_eq!(node.inputs().len(), 3);
    let Op::If(IfAttrs {
        then_branch,
        else_branch,
    }) = &node.op
    else {
        panic!("If expected")
    };
    assert_eq!(then_branch.num_nodes(), 2);
    assert_eq!(then_branch.inputs().len(), 2);
    assert_eq!(
        (then_branch.num_captures(), else_branch.num_captures()),
        (2, 1)
    );
    assert_eq!(else_branch.outputs(), &else_branch.inputs()[..1]);
    // Printed with the attributes in field order (then before else), nested indentation.
    let text = print(&g);
    assert!(
        text.contains("{then_branch=graph @then(capture %x0: f32[N], capture %b0: f32[N]) -> (%s) {\n    %k = const f32[] [2.0]\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  }, else_branch=graph @else(%x1: f32[N], capture %b1: f32[N]) -> (%x1) {\n  }} : f32[N]\n"),
        "{text}"
    );

    // Reading an outer value directly from inside a branch is an error with a hint.
    let e = err(r#"graph @main(%c: bool[], %x: f32[N]) -> (%y) {
  %y = If(%c) {then_branch=graph @t() -> (%o) {
    %o = Relu(%x)
  }, else_branch=graph @e() -> (%o) {
    %o = Relu(%x)
  }}
}
"#);
    assert_eq!((e.line, e.col), (3, 15), "{e}");
    assert!(
        e.msg.contains("undefined value %x") && e.msg.contains("enclosing graph"),
        "{e}"
    );
}

#[test]
fn nested_subgraphs_indent() {
    let g = roundtrip(
        r#"graph @main(%c: bool[], %x: f32[2]) -> (%y) {
  %y = If(%c, %c, %x) {then_branch=graph @t(%c1: bool[], %x1: f32[2]) -> (%z) {
    %z = If(%c1, %x1) {then_branch=graph @tt(%x2: f32[2]) -> (%x2) {
    }, else_branch=graph @te(%x3: f32[2]) -> (%w) {
      %w = Neg(%x3)
    }}
  }, else_branch=graph @e(%c4: bool[], %x4: f32[2]) -> (%x4) {
  }}
}
"#,
    );
    assert!(
        print(&g).contains("\n      %w = Neg(%x3)\n    }}\n  }, else_branch"),
        "{}",
        print(&g)
    );
}

#[test]
fn custom_ops() {
    let g = roundtrip(
        r#"graph @g(%x: f32[2]) -> (%a, %b) {
  %a = "com.example::MyOp"(%x) {k=1, "odd name"="v"} : f32[2]
  %b = "::Conv"(%x)
  "com.example::Sink"(%a, %b) loc("sink")
}
"#,
    );
    assert_eq!(g.num_nodes(), 3);
    let ops: Vec<(String, String)> = g
        .node_ids()
        .map(|n| match &g.node(n).op {
            Op::Custom(c) => (c.domain.clone(), c.op_type.clone()),
            other => panic!("custom expected, got {other}"),
        })
        .collect();
    assert_eq!(ops[1], ("".to_string(), "Conv".to_string()));
    let sink = g.node_ids().nth(2).unwrap();
    assert!(g.node(sink).outputs().is_empty());
    assert_eq!(g.node(sink).name, "sink");
    let a = g.find_value("a").unwrap();
    let Op::Custom(c) = &g.node(g.producer(a).unwrap()).op else {
        panic!()
    };
    assert_eq!(
        c.attrs.0,
        vec![
            ("k".to_string(), Attr::Int(1)),
            ("odd name".to_string(), Attr::String("v".into()))
        ]
    );
    assert!(c.def.is_none());
}

#[test]
fn constants_of_every_dtype() {
    let mut g = Graph::new("c");
    let mut add = |name: &str, t: Tensor| {
        let v = g.add_const(name, t);
        (name.to_string(), v)
    };
    let cs = vec![
        add(
            "f32",
            Tensor::from_vec(vec![3], vec![1.5f32, -0.0, f32::INFINITY]),
        ),
        add(
            "f32nan",
            Tensor::from_vec(vec![1], vec![f32::from_bits(0x7fc0_0001)]),
        ),
        add("f64", Tensor::from_vec(vec![2], vec![0.1f64, 1e300])),
        add(
            "f16",
            Tensor::from_vec(
                vec![3],
                vec![
                    half::f16::from_f32(0.1),
                    half::f16::MAX,
                    half::f16::from_bits(1),
                ],
            ),
        ),
        add(
            "bf16",
            Tensor::from_vec(
                vec![2],
                vec![half::bf16::from_f32(0.1), half::bf16::NEG_INFINITY],
            ),
        ),
        add("i8", Tensor::from_vec(vec![2], vec![-128i8, 127])),
        add("u64", Tensor::from_vec(vec![2], vec![u64::MAX, 0])),
        add("i64", Tensor::from_vec(vec![2, 1], vec![i64::MIN, 5])),
        add("bool", Tensor::from_vec(vec![3], vec![true, false, true])),
        add(
            "badbool",
            Tensor::from_raw(DType::Bool, vec![1], bytes::Bytes::from_static(&[2])).unwrap(),
        ),
        add(
            "i4",
            Tensor::from_raw(DType::I4, vec![3], bytes::Bytes::from_static(&[0x8f, 0x07])).unwrap(),
        ),
        add(
            "i4pad",
            Tensor::from_raw(DType::I4, vec![1], bytes::Bytes::from_static(&[0xf1])).unwrap(),
        ),
        add(
            "u4",
            Tensor::from_raw(DType::U4, vec![2], bytes::Bytes::from_static(&[0xf0])).unwrap(),
        ),
        add(
            "f8",
            Tensor::from_raw(
                DType::F8E4M3FN,
                vec![2],
                bytes::Bytes::from_static(&[0x38, 0xff]),
            )
            .unwrap(),
        ),
        add(
            "str",
            Tensor::from_strings(vec![2], vec!["a\"".into(), "".into()]).unwrap(),
        ),
        add("scalar", Tensor::scalar(7i32)),
        add("empty", Tensor::from_vec::<f32>(vec![0, 3], vec![])),
        add(
            "big",
            Tensor::from_vec(vec![17], (0..17).map(|i| i as u8).collect()),
        ),
    ];
    let text = assert_roundtrip(&g);
    let expected = [
        "%f32 = const f32[3] [1.5, -0.0, inf]",
        "%f32nan = const f32[1] 0x0100c07f",
        "%f64 = const f64[2] [0.1, 1e300]",
        "%f16 = const f16[3] [0.1, 65500.0, 6e-8]",
        "%bf16 = const bf16[2] [0.1, -inf]",
        "%i8 = const i8[2] [-128, 127]",
        "%u64 = const u64[2] [18446744073709551615, 0]",
        "%i64 = const i64[2,1] [-9223372036854775808, 5]",
        "%bool = const bool[3] [true, false, true]",
        "%badbool = const bool[1] 0x02",
        "%i4 = const i4[3] [-1, -8, 7]",
        "%i4pad = const i4[1] 0xf1",
        "%u4 = const u4[2] [0, 15]",
        "%f8 = const f8e4m3fn[2] 0x38ff",
        r#"%str = const string[2] ["a\"", ""]"#,
        "%scalar = const i32[] [7]",
        "%empty = const f32[0,3] []",
        "%big = const u8[17] 0x000102030405060708090a0b0c0d0e0f10",
    ];
    for line in expected {
        assert!(
            text.contains(&format!("  {line}\n")),
            "{line:?} not in\n{text}"
        );
    }
    let g2 = parse(&text);
    for (name, v) in cs {
        let v2 = g2.find_value(&name).unwrap();
        let (t1, t2) = (g.constant(v).unwrap(), g2.constant(v2).unwrap());
        assert_eq!(
            (t1.dtype(), t1.shape(), t1.raw(), t1.strings()),
            (t2.dtype(), t2.shape(), t2.raw(), t2.strings()),
            "{name}"
        );
    }
}

#[test]
fn constant_with_refined_type() {
    let mut g = Graph::new("g");
    let c = g.add_const("w", Tensor::from_vec(vec![2], vec![1i64, 2]));
    g.set_type(
        c,
        TensorType::new(DType::I64, Shape(vec![Dim::Sym("K".into())])),
    );
    g.add_output(c);
    let text = assert_roundtrip(&g);
    assert!(
        text.contains("%w = const i64[2] [1, 2] : i64[K]\n"),
        "{text}"
    );
    let g2 = parse(&text);
    assert_eq!(g2.value(g2.outputs()[0]).ty.to_string(), "i64[K]");
}

#[test]
fn elided_constants() {
    let mut g = Graph::new("g");
    let w = g.add_const("w", Tensor::from_vec(vec![4, 5], vec![0.5f32; 20]));
    let s = g.add_const("s", Tensor::from_vec(vec![2], vec![1i64, 2]));
    let y = g.add_simple("y", Op::Add, &[w, s]);
    g.add_output(y);
    let text = print_graph(
        &g,
        &PrintOptions {
            elide_constants_above: Some(4),
        },
    );
    assert!(text.contains("%w = const f32[4,5] ...\n"), "{text}");
    assert!(text.contains("%s = const i64[2] [1, 2]\n"), "{text}");
    let e = err(&text);
    assert_eq!((e.line, e.col), (2, 23), "{e}");
    assert!(e.msg.contains("elided"), "{e}");
}

#[test]
fn nodes_print_in_topological_order_and_dead_nodes_are_skipped() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32_type(&[2]));
    // Node 0 reads the output of node 1: ids are not a topological order.
    let n0 = g.add_node("second", Op::Relu, vec![None], vec!["b".into()]);
    let a = g.add_simple("first", Op::Neg, &[x]);
    g.set_operand(n0, 0, Some(a));
    g.add_simple("dead", Op::Exp, &[x]);
    let b = g.node(n0).outputs()[0];
    g.add_output(b);
    assert_eq!(g.remove_dead_nodes(), 1);
    let text = assert_roundtrip(&g);
    assert_eq!(
        text,
        "graph @g(%x: f32[2]) -> (%b) {\n  %first = Neg(%x) loc(\"first\")\n  %b = Relu(%first) loc(\"second\")\n}\n"
    );
}

#[test]
fn cyclic_graph_prints_with_a_warning() {
    let mut g = Graph::new("g");
    let n0 = g.add_node("n0", Op::Relu, vec![None], vec!["a".into()]);
    let a = g.node(n0).outputs()[0];
    let b = g.add_simple("n1", Op::Relu, &[a]);
    g.set_operand(n0, 0, Some(b));
    let text = print(&g);
    assert!(text.contains("// the graph has a cycle"), "{text}");
    assert!(text.contains("%a = Relu(%n1)"), "{text}");
}

#[test]
fn print_node_gives_one_statement() {
    let g = parse(EXAMPLE);
    let c = g.find_value("c").unwrap();
    let line = print_node(&g, g.producer(c).unwrap(), &PrintOptions::default());
    assert_eq!(
        line,
        "%c = Conv(%x, %w, _) {auto_pad=\"SAME_UPPER\", pads=[0,0,0,0], strides=[2,2]} : f32[N,2,4,4] loc(\"conv1\")"
    );
}

#[test]
fn built_graph_roundtrips_structurally() {
    let mut g = Graph::new("main");
    let x = g.add_input(
        "x",
        TensorType::new(
            DType::F32,
            Shape(vec![Dim::Sym("N".into()), 3.into(), 8.into(), 8.into()]),
        ),
    );
    let w = g.add_const("w", Tensor::from_vec(vec![4, 3, 3, 3], vec![0.25f32; 108]));
    let conv = Op::Conv(ConvAttrs {
        pads: Some(vec![1, 1, 1, 1]),
        group: 1,
        ..Default::default()
    });
    let n = g.add_node(
        "conv",
        conv.clone(),
        vec![Some(x), Some(w), None],
        vec!["c".into()],
    );
    let c = g.node(n).outputs()[0];
    g.set_type(
        c,
        TensorType::new(
            DType::F32,
            Shape(vec![Dim::Sym("N".into()), 4.into(), 8.into(), 8.into()]),
        ),
    );
    g.add_output(c);
    let text = assert_roundtrip(&g);
    let g2 = parse(&text);
    let n2 = g2.producer(g2.outputs()[0]).unwrap();
    assert_eq!(g2.node(n2).op, conv);
    assert_eq!(g2.node(n2).name, "conv");
    assert_eq!(g2.value(g2.outputs()[0]).ty, g.value(c).ty);
    assert_eq!(
        g2.constant(g2.node(n2).input(1).unwrap()).unwrap(),
        g.constant(w).unwrap()
    );
}

#[test]
fn comments_and_whitespace_are_ignored() {
    let g = parse(
        "// leading comment\ngraph @g(\n  %x : f32 [ 2 ] , // trailing\n  %y\n)->(%z){%z=Add(%x,%y)}",
    );
    assert_eq!(
        print(&g),
        "graph @g(%x: f32[2], %y: ?[*]) -> (%z) {\n  %z = Add(%x, %y)\n}\n"
    );
}

#[test]
fn error_positions_and_messages() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "graph @g() -> (%y) {\n  %y = Relu(%foo)\n}",
            2,
            13,
            "undefined value %foo",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Relu(%x}\n}",
            2,
            15,
            "expected ')' or ','",
        ),
        (
            "graph @g(%x: f33[1]) -> () {\n}",
            1,
            14,
            "unknown dtype 'f33'",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const f32[2,2] 0x000000000000000000000000\n}",
            2,
            23,
            "constant f32[2,2] needs 16 bytes, got 12",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const i64[3] [1, 2]\n}",
            2,
            21,
            "needs 3 elements, got 2",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const u8[2] [1, 256]\n}",
            2,
            24,
            "256 is out of range for u8",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const f32[N] 0x00\n}",
            2,
            14,
            "integer dimensions",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const string[1] 0x00\n}",
            2,
            24,
            "list of strings",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const f8e5m2[1] [1.0]\n}",
            2,
            24,
            "hex bytes",
        ),
        (
            "graph @g() -> (%w) {\n  %w = const f32[1] 0x000\n}",
            2,
            21,
            "odd number of hex digits",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Conv2(%x)\n}",
            2,
            8,
            "unknown op 'Conv2' (did you mean 'Conv'?)",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Frobnicate(%x)\n}",
            2,
            8,
            "custom ops are written quoted",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Relu(%x) {alpha=1.0}\n}",
            2,
            18,
            "Relu: unknown attribute 'alpha' (valid: none)",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Concat(%x)\n}",
            2,
            8,
            "missing required attribute 'axis'",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Concat(%x) {axis=\"a\"}\n}",
            2,
            20,
            "attribute 'axis': expected int",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Concat(%x) {axis=1, axis=2}\n}",
            2,
            28,
            "duplicate attribute 'axis'",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = \"NoDomain\"(%x)\n}",
            2,
            8,
            "domain::Name",
        ),
        (
            "graph @g(%x: f32[1]) -> (%x) {\n  %x = Relu(%x)\n}",
            2,
            3,
            "value %x is already defined at 1:10",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y, %y = Split(%x)\n}",
            2,
            7,
            "defined twice",
        ),
        (
            "graph @g(%x: f32[1]) -> (%nope) {\n}",
            1,
            26,
            "undefined value %nope",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = Relu(%x) : f32[1], f32[1]\n}",
            2,
            17,
            "1 result(s) but 2 type(s)",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = \"a::B\"(%x) {l=[]}\n}",
            2,
            22,
            "ints[], floats[] or strings[]",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = \"a::B\"(%x) {l=[1, \"a\"]}\n}",
            2,
            26,
            "expected an integer",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = \"a::B\"(%x) {s=\"abc}\n}",
            2,
            22,
            "unterminated string",
        ),
        (
            "graph @g(%x: f32[1]) -> (%y) {\n  %y = \"a::B\"(%x) {s=\"\\q\"}\n}",
            2,
            23,
            "unknown escape '\\q'",
        ),
        (
            "graph @g(%x: f32[-1]) -> () {\n}",
            1,
            18,
            "dimension -1 is negative",
        ),
        (
            "graph @g() -> () {\n}\nextra",
            3,
            1,
            "expected end of input",
        ),
        (
            "graph @g() -> () {\n  %y = Relu(%x)",
            2,
            13,
            "undefined value %x",
        ),
        (
            "graph @g() -> () {\n",
            2,
            1,
            "expected '}' to close graph @g",
        ),
        (
            "graph @g() -> () {\n  %a, %b = const f32[] [1.0]\n}",
            2,
            7,
            "exactly one value",
        ),
        (
            "graph @g() -> () {\n  %a = \"a::B\"() {x=~}\n}",
            2,
            20,
            "unexpected character '~'",
        ),
        (
            "graph @g() -> () {\n  %a = \"a::B\"() {x=99999999999999999999}\n}",
            2,
            20,
            "integer 99999999999999999999 is out of range",
        ),
        (
            "graph @g() -> () {\n  %a = \"a::B\"() {x=18446744073709551615}\n}",
            2,
            20,
            "does not fit in i64",
        ),
        ("graph g() -> () {}", 1, 7, "expected a graph name"),
        ("graph @g() (%y) {}", 1, 12, "expected '->'"),
        (
            "graph @g(capture %a, %b) -> () {}",
            1,
            22,
            "captured inputs must come last",
        ),
    ];
    let mut bad = Vec::new();
    for &(src, line, col, msg) in cases {
        let e = err(src);
        if !(e.msg.contains(msg) && e.line == line && e.col == col) {
            bad.push(format!("expected {line}:{col} containing {msg:?}, got {e}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn error_display_has_position() {
    let e = err("graph @g() -> (%y) {\n  %y = Relu(%foo)\n}");
    assert_eq!(e.to_string(), "2:13: undefined value %foo");
}

// ---------------------------------------------------------------------------------------------
// Property test: random graphs print, parse and print back identically.

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z][a-z0-9_]{0,3}",
        1 => Just(String::new()),
        2 => prop::sample::select(vec![
            "onnx::Conv_12", "gpu_0/softmax:0", "with space", "q\"uote", "back\\slash", "new\nline",
            "é", "x#1", "%", "0", "-1", "x", "y", "_", "inf", "graph", "const",
        ])
        .prop_map(String::from),
        1 => any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
    .boxed()
}

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        3 => (0u64..9).prop_map(Dim::Fixed),
        1 => Just(Dim::Fixed(u64::MAX)),
        2 => name().prop_map(Dim::Sym),
        1 => Just(Dim::Unknown),
    ]
}

fn tensor_type() -> impl Strategy<Value = TensorType> {
    (
        prop::option::weighted(0.8, prop::sample::select(DType::ALL.to_vec())),
        prop::option::weighted(0.8, prop::collection::vec(dim(), 0..4)),
    )
        .prop_map(|(dtype, dims)| TensorType {
            dtype,
            shape: dims.map(Shape),
        })
}

const CONST_DTYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I4,
    DType::U4,
    DType::Bool,
    DType::String,
    DType::I64,
    DType::U8,
    DType::I8,
    DType::F8E5M2,
];

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        prop::sample::select(CONST_DTYPES.to_vec()),
        prop::collection::vec(0usize..5, 0..3),
        prop::collection::vec(any::<u8>(), 1..64),
        prop::collection::vec(name(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(d, shape, seed, strs, tidy)| {
            let n: usize = shape.iter().product();
            if d == DType::String {
                let v = (0..n).map(|i| strs[i % strs.len()].clone()).collect();
                return Tensor::from_strings(shape, v).unwrap();
            }
            let len = d.storage_bytes(n);
            let mut bytes: Vec<u8> = (0..len).map(|i| seed[i % seed.len()]).collect();
            if tidy {
                // Values with a decimal form: small integers and booleans, zero padding nibbles.
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = match d {
                        DType::Bool => *b & 1,
                        DType::I4 | DType::U4 if n % 2 == 1 && i == len - 1 => *b & 0x0f,
                        _ => *b,
                    };
                }
            }
            Tensor::from_raw(d, shape, bytes::Bytes::from(bytes)).unwrap()
        })
}

fn attr() -> impl Strategy<Value = Attr> {
    prop_oneof![
        any::<i64>().prop_map(Attr::Int),
        any::<f32>().prop_map(Attr::Float),
        name().prop_map(Attr::String),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(Attr::Ints),
        prop::collection::vec(any::<f32>(), 0..4).prop_map(Attr::Floats),
        prop::collection::vec(name(), 0..3).prop_map(Attr::Strings),
        tensor().prop_map(Attr::Tensor),
    ]
}

/// How to build one node; operand picks index the values defined so far (modulo their count).
#[derive(Clone, Debug)]
enum Kind {
    Add,
    Relu,
    Conv {
        strides: Option<Vec<i64>>,
        pads: Option<Vec<i64>>,
        auto_pad: String,
        group: i64,
        bias: bool,
    },
    Split {
        axis: i64,
        outs: usize,
    },
    Concat {
        axis: i64,
        n: usize,
    },
    Gemm {
        alpha: f32,
        beta: f32,
        ta: bool,
        c: bool,
    },
    Cast {
        to: DType,
    },
    Custom {
        domain: String,
        op_type: String,
        attrs: Vec<(String, Attr)>,
        inputs: Vec<bool>,
        outs: usize,
    },
    If {
        then_g: Box<Recipe>,
        else_g: Box<Recipe>,
        captures: usize,
        outs: usize,
    },
}

#[derive(Clone, Debug)]
enum Item {
    Const {
        name: String,
        t: Tensor,
        retype: Option<TensorType>,
    },
    Node {
        kind: Kind,
        picks: Vec<usize>,
        name: String,
        outs: Vec<(String, TensorType)>,
    },
}

#[derive(Clone, Debug)]
struct Recipe {
    name: String,
    inputs: Vec<(String, TensorType)>,
    items: Vec<Item>,
    outputs: Vec<usize>,
    captures: usize,
    prune: bool,
}

fn kind(depth: u32) -> BoxedStrategy<Kind> {
    let ints = prop::collection::vec(-3i64..4, 0..4);
    let base = prop_oneof![
        Just(Kind::Add),
        Just(Kind::Relu),
        (
            prop::option::of(ints.clone()),
            prop::option::of(ints),
            prop::sample::select(vec!["NOTSET", "SAME_UPPER", "VALID", "odd \"pad\""]),
            1i64..4,
            any::<bool>()
        )
            .prop_map(|(strides, pads, auto_pad, group, bias)| Kind::Conv {
                strides,
                pads,
                auto_pad: auto_pad.into(),
                group,
                bias
            }),
        (-2i64..3, 1usize..4).prop_map(|(axis, outs)| Kind::Split { axis, outs }),
        (-2i64..3, 1usize..4).prop_map(|(axis, n)| Kind::Concat { axis, n }),
        (
            any::<f32>(),
            prop_oneof![Just(1.0f32), any::<f32>()],
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(alpha, beta, ta, c)| Kind::Gemm { alpha, beta, ta, c }),
        prop::sample::select(DType::ALL.to_vec()).prop_map(|to| Kind::Cast { to }),
        (
            prop::sample::select(vec!["", "com.example", "ai.onnx.ml"]),
            name(),
            prop::collection::vec((name(), attr()), 0..5),
            prop::collection::vec(any::<bool>(), 0..4),
            0usize..3
        )
            .prop_map(|(domain, op_type, attrs, inputs, outs)| Kind::Custom {
                domain: domain.into(),
                op_type,
                attrs,
                inputs,
                outs
            }),
    ];
    if depth == 0 {
        return base.boxed();
    }
    prop_oneof![
        8 => base,
        1 => (recipe(depth - 1), recipe(depth - 1), 0usize..3, 1usize..3).prop_map(|(t, e, captures, outs)| Kind::If {
            then_g: Box::new(t),
            else_g: Box::new(e),
            captures,
            outs
        }),
    ]
    .boxed()
}

fn item(depth: u32) -> BoxedStrategy<Item> {
    prop_oneof![
        1 => (name(), tensor(), prop::option::weighted(0.2, tensor_type()))
            .prop_map(|(name, t, retype)| Item::Const { name, t, retype }),
        3 => (kind(depth), prop::collection::vec(any::<usize>(), 4), name(), prop::collection::vec((name(), tensor_type()), 4))
            .prop_map(|(kind, picks, name, outs)| Item::Node { kind, picks, name, outs }),
    ]
    .boxed()
}

fn recipe(depth: u32) -> BoxedStrategy<Recipe> {
    let max_items = if depth == 0 { 4 } else { 8 };
    (
        name(),
        prop::collection::vec((name(), tensor_type()), 0..4),
        prop::collection::vec(item(depth), 0..max_items),
        prop::collection::vec(any::<usize>(), 0..4),
        0usize..3,
        prop::bool::weighted(0.2),
    )
        .prop_map(|(name, inputs, items, outputs, captures, prune)| Recipe {
            name,
            inputs,
            items,
            outputs,
            captures,
            prune,
        })
        .boxed()
}

fn build(r: &Recipe) -> Graph {
    let mut g = Graph::new(r.name.clone());
    let mut vals: Vec<ValueId> = r
        .inputs
        .iter()
        .map(|(n, t)| g.add_input(n.clone(), t.clone()))
        .collect();
    g.set_num_captures(r.captures);
    for it in &r.items {
        match it {
            Item::Const { name, t, retype } => {
                let v = g.add_const(name.clone(), t.clone());
                if let Some(ty) = retype {
                    g.set_type(v, ty.clone());
                }
                vals.push(v);
            }
            Item::Node {
                kind,
                picks,
                name,
                outs,
            } => {
                let pick = |i: usize| {
                    (!vals.is_empty()).then(|| vals[picks[i % picks.len()] % vals.len()])
                };
                let (op, inputs, n_out): (Op, Vec<Option<ValueId>>, usize) = match kind {
                    Kind::Add => (Op::Add, vec![pick(0), pick(1)], 1),
                    Kind::Relu => (Op::Relu, vec![pick(0)], 1),
                    Kind::Conv {
                        strides,
                        pads,
                        auto_pad,
                        group,
                        bias,
                    } => {
                        let a = ConvAttrs {
                            strides: strides.clone(),
                            pads: pads.clone(),
                            auto_pad: auto_pad.clone(),
                            group: *group,
                            ..Default::default()
                        };
                        let b = if *bias { pick(2) } else { None };
                        (Op::Conv(a), vec![pick(0), pick(1), b], 1)
                    }
                    Kind::Split { axis, outs } => {
                        let a = SplitAttrs {
                            axis: *axis,
                            num_outputs: Some(*outs as i64),
                        };
                        (Op::Split(a), vec![pick(0)], *outs)
                    }
                    Kind::Concat { axis, n } => {
                        let mut attrs = Attrs::default();
                        attrs.0.push(("axis".into(), Attr::Int(*axis)));
                        let op = Op::from_attrs("Concat", attrs).unwrap().unwrap();
                        (op, (0..*n).map(pick).collect(), 1)
                    }
                    Kind::Gemm { alpha, beta, ta, c } => {
                        let attrs = Attrs(vec![
                            ("alpha".into(), Attr::Float(*alpha)),
                            ("beta".into(), Attr::Float(*beta)),
                            ("transA".into(), Attr::Int(*ta as i64)),
                        ]);
                        let op = Op::from_attrs("Gemm", attrs).unwrap().unwrap();
                        (
                            op,
                            vec![pick(0), pick(1), if *c { pick(2) } else { None }],
                            1,
                        )
                    }
                    Kind::Cast { to } => {
                        let attrs = Attrs(vec![("to".into(), Attr::String(to.name().into()))]);
                        (
                            Op::from_attrs("Cast", attrs).unwrap().unwrap(),
                            vec![pick(0)],
                            1,
                        )
                    }
                    Kind::Custom {
                        domain,
                        op_type,
                        attrs,
                        inputs,
                        outs,
                    } => {
                        let mut bag: Vec<(String, Attr)> = Vec::new();
                        for (n, a) in attrs {
                            if !bag.iter().any(|(m, _)| m == n) {
                                bag.push((n.clone(), a.clone()));
                            }
                        }
                        let op = Op::Custom(CustomOp {
                            domain: domain.clone(),
                            op_type: op_type.clone(),
                            attrs: Attrs(bag),
                            def: None,
                        });
                        let ins = inputs
                            .iter()
                            .enumerate()
                            .map(|(i, &p)| if p { pick(i) } else { None })
                            .collect();
                        (op, ins, *outs)
                    }
                    Kind::If {
                        then_g,
                        else_g,
                        captures,
                        outs,
                    } => {
                        let a = IfAttrs {
                            then_branch: build(then_g),
                            else_branch: build(else_g),
                        };
                        let ins = (0..=*captures).map(pick).collect();
                        (Op::If(a), ins, *outs)
                    }
                };
                let n_out = n_out.min(outs.len());
                let names = outs[..n_out].iter().map(|(n, _)| n.clone()).collect();
                let node = g.add_node(name.clone(), op, inputs, names);
                let ovs = g.node(node).outputs().to_vec();
                for (v, (_, ty)) in ovs.iter().zip(outs) {
                    g.set_type(*v, ty.clone());
                }
                vals.extend(ovs);
            }
        }
    }
    if !vals.is_empty() {
        for &o in &r.outputs {
            g.add_output(vals[o % vals.len()]);
        }
    }
    if r.prune {
        g.remove_dead_nodes();
    }
    g
}

/// Structural equality up to id numbering, independent of the printer: walks both graphs in
/// the printed order (inputs, constants by id, nodes topologically). NaN attributes compare
/// equal to any NaN of the same sign (the text form keeps the sign, not the payload).
fn same_graph(a: &Graph, b: &Graph) -> Result<(), String> {
    let ctx = |what: &str| format!("graph @{}: {what}", a.name);
    if a.name != b.name || a.num_captures() != b.num_captures() {
        return Err(ctx("name or capture count differs"));
    }
    let value = |ga: &Graph, va: ValueId, gb: &Graph, vb: ValueId| -> Result<(), String> {
        let (x, y) = (ga.value(va), gb.value(vb));
        if x.name != y.name || x.ty != y.ty {
            return Err(format!(
                "value {:?}: {} vs {:?}: {}",
                x.name, x.ty, y.name, y.ty
            ));
        }
        Ok(())
    };
    if a.inputs().len() != b.inputs().len() || a.outputs().len() != b.outputs().len() {
        return Err(ctx("input/output counts differ"));
    }
    for (&x, &y) in a
        .inputs()
        .iter()
        .zip(b.inputs())
        .chain(a.outputs().iter().zip(b.outputs()))
    {
        value(a, x, b, y)?;
    }
    let (ca, cb): (Vec<_>, Vec<_>) = (a.constants().collect(), b.constants().collect());
    if ca.len() != cb.len() {
        return Err(ctx("constant counts differ"));
    }
    for ((va, ta), (vb, tb)) in ca.into_iter().zip(cb) {
        value(a, va, b, vb)?;
        if !same_tensor(ta, tb) {
            return Err(ctx(&format!("constant {:?} differs", a.value(va).name)));
        }
    }
    let (na, nb) = (
        a.topo_order().map_err(|e| e.to_string())?,
        b.topo_order().map_err(|e| e.to_string())?,
    );
    if na.len() != nb.len() {
        return Err(ctx("node counts differ"));
    }
    for (&x, &y) in na.iter().zip(&nb) {
        let (p, q) = (a.node(x), b.node(y));
        let at = ctx(&format!("node {:?}", p.name));
        if p.name != q.name || p.op.name() != q.op.name() || p.op.domain() != q.op.domain() {
            return Err(format!("{at}: name or op differs"));
        }
        if std::mem::discriminant(&p.op) != std::mem::discriminant(&q.op) {
            return Err(format!("{at}: op variant differs"));
        }
        if p.inputs().len() != q.inputs().len() || p.outputs().len() != q.outputs().len() {
            return Err(format!("{at}: arity differs"));
        }
        for (u, v) in p.inputs().iter().zip(q.inputs()) {
            match (u, v) {
                (Some(u), Some(v)) => value(a, *u, b, *v)?,
                (None, None) => {}
                _ => return Err(format!("{at}: omitted operand differs")),
            }
        }
        for (&u, &v) in p.outputs().iter().zip(q.outputs()) {
            value(a, u, b, v)?;
        }
        let (xa, xb) = (p.op.attrs(), q.op.attrs());
        if xa.len() != xb.len() {
            return Err(format!("{at}: attribute counts differ"));
        }
        for ((n1, a1), (n2, a2)) in xa.iter().zip(&xb) {
            if n1 != n2 {
                return Err(format!("{at}: attribute {n1} vs {n2}"));
            }
            same_attr(a1, a2).map_err(|e| format!("{at}: attribute {n1}: {e}"))?;
        }
    }
    Ok(())
}

fn same_f32(x: f32, y: f32) -> bool {
    x.to_bits() == y.to_bits()
        || (x.is_nan() && y.is_nan() && x.is_sign_negative() == y.is_sign_negative())
}

fn same_tensor(x: &Tensor, y: &Tensor) -> bool {
    x.dtype() == y.dtype()
        && x.shape() == y.shape()
        && x.raw() == y.raw()
        && x.strings() == y.strings()
}

fn same_attr(x: &Attr, y: &Attr) -> Result<(), String> {
    let ok = match (x, y) {
        (Attr::Float(p), Attr::Float(q)) => same_f32(*p, *q),
        (Attr::Floats(p), Attr::Floats(q)) => {
            p.len() == q.len() && p.iter().zip(q).all(|(a, b)| same_f32(*a, *b))
        }
        (Attr::Tensor(p), Attr::Tensor(q)) => same_tensor(p, q),
        (Attr::Graph(p), Attr::Graph(q)) => return same_graph(p, q),
        _ => x == y,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{x:?} vs {y:?}"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_graphs_roundtrip(r in recipe(2)) {
        let g = build(&r);
        let text = print(&g);
        let g2 = match parse_graph(&text) {
            Ok(g2) => g2,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        prop_assert_eq!(print(&g2), text.clone());
        if let Err(e) = same_graph(&g, &g2) {
            return Err(TestCaseError::fail(format!("{e}\n{text}")));
        }
        prop_assert_eq!(g2.num_nodes(), g.num_nodes());
        prop_assert_eq!(g2.constants().count(), g.constants().count());
        // Elided printing never panics, and elided text is rejected rather than misread.
        let elided = print_graph(&g, &PrintOptions { elide_constants_above: Some(2) });
        if elided.contains(" ...") {
            prop_assert!(parse_graph(&elided).is_err());
        }
    }
}

#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut s = "graph @leaf() -> () {}".to_string();
        for _ in 0..depth {
            s = format!("graph @g() -> () {{\n\"a::B\"() {{g={s}}}\n}}");
        }
        s
    };
    parse(&nest(40));
    let e = err(&nest(100));
    assert!(e.msg.contains("nested more than 64 deep"), "{e}");
}

#[test]
fn large_constant_roundtrips_exactly() {
    let n = 1 << 18;
    let vals: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    let mut g = Graph::new("g");
    let w = g.add_const("w", Tensor::from_vec(vec![n], vals));
    g.add_output(w);
    let text = print(&g);
    let g2 = parse(&text);
    assert_eq!(
        g2.constant(g2.outputs()[0]).unwrap().raw(),
        g.constant(w).unwrap().raw()
    );
}

/// The example in docs/ir.md is printer output: it parses and prints back unchanged.
#[test]
fn docs_example_is_canonical() {
    let doc = include_str!("../../../docs/ir.md");
    let start = doc.find("```\ngraph @main").expect("example in docs/ir.md") + 4;
    let end = start + doc[start..].find("```").expect("end of example");
    let example = &doc[start..end];
    assert_eq!(print(&parse(example)), example);
}
