//! Rust-level checks of the five passes: registration and options, numerics on random
//! inputs, custom ops, determinism, and edge cases the file tests do not reach.

use pare_interp::Interpreter;
use pare_ir::{
    parse_graph, print_graph, Attrs, CustomOp, CustomOpDef, DType, Graph, Op, PrintOptions, Shape,
    Tensor, TensorType,
};
use pare_pass::{run_pipeline, PassContext, PipelineReport, Registry};
use std::collections::BTreeMap;
use std::sync::Arc;

fn registry() -> Registry {
    let mut reg = Registry::new();
    pare_canonicalize::register(&mut reg);
    reg
}

fn print(g: &Graph) -> String {
    print_graph(
        g,
        &PrintOptions {
            elide_constants_above: Some(16),
        },
    )
}

/// Runs `pipeline` on `g` and checks the outputs against the original on random inputs.
fn run_checked(pipeline: &str, g: &Graph, bind: &[(&str, u64)]) -> (Graph, PipelineReport) {
    let mut out = g.clone();
    let report = run_pipeline(&registry(), pipeline, &mut out, &mut PassContext::new())
        .unwrap_or_else(|e| panic!("{pipeline}: {e}\n{}", print(g)));
    let bind: BTreeMap<String, u64> = bind.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for seed in 1..4u64 {
        let xs = pare_pass::filetest::random_inputs(g, &bind, seed * 7919).expect("inputs");
        let it = Interpreter::with_threads(1);
        let want = it.run(g, &xs).expect("original runs");
        let got = it.run(&out, &xs).expect("transformed runs");
        assert_eq!(want.len(), got.len());
        for (w, o) in want.iter().zip(&got) {
            assert_eq!(w.dtype(), o.dtype());
            assert_eq!(w.shape(), o.shape());
            let (a, b) = (
                w.to_f64_vec().expect("numeric"),
                o.to_f64_vec().expect("numeric"),
            );
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 1e-5 * p.abs().max(1.0),
                    "{pipeline}: {p} vs {q}\n{}",
                    print(&out)
                );
            }
        }
    }
    (out, report)
}

fn parse(text: &str) -> Graph {
    parse_graph(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn registers_five_passes_with_documented_options() {
    let reg = registry();
    for name in [
        "fold-constants",
        "fold-shapes",
        "dce",
        "cse",
        "simplify-layout",
    ] {
        let info = reg
            .info(name)
            .unwrap_or_else(|| panic!("{name} not registered"));
        assert!(!info.summary.is_empty());
    }
    let fc = reg.info("fold-constants").expect("registered");
    assert_eq!(fc.options[0].name, "max-growth-bytes");
    assert!(reg.build("fold-constants(max-growth-bytes=10)").is_ok());
    let e = reg
        .build("fold-constants(max-growth=10)")
        .err()
        .expect("unknown option rejected")
        .to_string();
    assert!(e.contains("max-growth-bytes"), "{e}");
    assert!(reg.build("dce(x=1)").is_err());
}

#[test]
fn growth_limit_is_an_option() {
    let text = r#"graph @main(%x: f32[]) -> (%y) {
      %s = const i64[2] [300, 300]
      %c = ConstantOfShape(%s) {value=tensor<f32[1] [0.5]>} : f32[300,300]
      %r = ReduceSum(%c) {keepdims=0} : f32[]
      %y = Add(%x, %r) : f32[]
    }"#;
    let g = parse(text);
    // 360 KB of output from 16 bytes: over the default 64 KiB.
    let (kept, r) = run_checked("fold-constants", &g, &[]);
    assert!(print(&kept).contains("ConstantOfShape("));
    assert_eq!(r.steps[0].stats.get("skipped-too-large"), Some(&1));
    // With a larger limit the whole chain folds to one scalar.
    let (folded, _) = run_checked("fold-constants(max-growth-bytes=1000000),dce", &g, &[]);
    let p = print(&folded);
    assert!(
        !p.contains("ConstantOfShape(") && !p.contains("ReduceSum("),
        "{p}"
    );
    assert!(p.contains("%r = const f32[] [45000.0]"), "{p}");
}

#[test]
fn folds_many_dtypes_exactly() {
    let text = r#"graph @main(%x: f32[4]) -> (%y) {
      %a = const i32[4] [1, -2, 3, -4]
      %h = const f16[4] [0.5, 1.5, -2.0, 3.25]
      %b = const bool[4] [true, false, true, false]
      %ai = Abs(%a) : i32[4]
      %af = Cast(%ai) {to="f32"} : f32[4]
      %hf = Cast(%h) {to="f32"} : f32[4]
      %bf = Cast(%b) {to="f32"} : f32[4]
      %s = Sum(%af, %hf, %bf) : f32[4]
      %y = Mul(%x, %s) : f32[4]
    }"#;
    let g = parse(text);
    let (out, _) = run_checked("fold-constants(keep-compressed=false),dce", &g, &[]);
    let p = print(&out);
    assert!(p.contains("%s = const f32[4] [2.5, 3.5, 2.0, 7.25]"), "{p}");
    assert_eq!(out.num_nodes(), 1, "{p}");
    // By default the f16 constant stays f16 (its Cast would double it); the rest folds.
    let (kept, _) = run_checked("fold-constants,dce", &g, &[]);
    let p = print(&kept);
    assert!(p.contains("%hf = Cast(%h)"), "{p}");
    assert!(!p.contains("Abs(") && !p.contains("Cast(%b)"), "{p}");
}

#[test]
fn small_quantized_weights_stay_quantized() {
    // A 16-element int8 weight: its f32 form is within the 64 KiB growth limit, but folding
    // it would undo the quantization, so only keep-compressed=false folds it.
    let text = r#"graph @main(%x: f32[2,4]) -> (%y) {
      %q = const i8[4,4] [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
      %s = const f32[] [0.5]
      %w = DequantizeLinear(%q, %s) : f32[4,4]
      %y = MatMul(%x, %w) : f32[2,4]
    }"#;
    let g = parse(text);
    let (kept, _) = run_checked("fold-constants,dce", &g, &[]);
    assert!(
        print(&kept).contains("DequantizeLinear("),
        "{}",
        print(&kept)
    );
    let (folded, _) = run_checked("fold-constants(keep-compressed=false),dce", &g, &[]);
    let p = print(&folded);
    assert!(
        !p.contains("DequantizeLinear(") && p.contains("%w = const f32[4,4]"),
        "{p}"
    );
}

#[derive(Debug)]
struct Double;

impl CustomOpDef for Double {
    fn infer(&self, _: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        Ok(vec![inputs[0].clone()])
    }
    fn eval(&self, _: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let v: Vec<f32> = inputs[0].to_vec::<f32>().map_err(|e| e.to_string())?;
        Ok(vec![Tensor::from_vec(
            inputs[0].shape().to_vec(),
            v.into_iter().map(|x| 2.0 * x).collect(),
        )])
    }
}

fn custom(def: Option<Arc<dyn CustomOpDef>>) -> Op {
    Op::Custom(CustomOp {
        domain: "test".into(),
        op_type: "Double".into(),
        attrs: Attrs::default(),
        def,
    })
}

#[test]
fn custom_ops_fold_only_with_semantics_and_never_merge() {
    let ty = TensorType::new(DType::F32, Shape::fixed(&[2]));
    let build = |def: Option<Arc<dyn CustomOpDef>>| {
        let mut g = Graph::new("main");
        let x = g.add_input("x", ty.clone());
        let c = g.add_const("c", Tensor::from_vec(vec![2], vec![1.0f32, 2.0]));
        let d1 = g.add_simple("d1", custom(def.clone()), &[c]);
        let d2 = g.add_simple("d2", custom(def.clone()), &[x]);
        let d3 = g.add_simple("d3", custom(def), &[x]);
        for v in [d1, d2, d3] {
            g.set_type(v, ty.clone());
        }
        let a = g.add_simple("a", Op::Add, &[d1, d2]);
        let y = g.add_simple("y", Op::Add, &[a, d3]);
        g.set_type(a, ty.clone());
        g.set_type(y, ty.clone());
        g.add_output(y);
        g
    };
    // With semantics: the constant one folds; the two identical ones on %x stay two (cse
    // never merges custom ops).
    let g = build(Some(Arc::new(Double)));
    let (out, _) = run_checked("fold-constants,cse,dce", &g, &[]);
    let p = print(&out);
    assert!(p.contains("%d1 = const f32[2] [2.0, 4.0]"), "{p}");
    assert_eq!(p.matches("\"test::Double\"(%x)").count(), 2, "{p}");
    // Without semantics nothing folds (and the interpreter could not run it either).
    let mut g = build(None);
    run_pipeline(
        &registry(),
        "fold-constants",
        &mut g,
        &mut PassContext::new(),
    )
    .expect("runs");
    assert_eq!(print(&g).matches("\"test::Double\"").count(), 3);
}

#[test]
fn dce_removes_nodes_without_outputs_and_keeps_interface() {
    let mut g = Graph::new("main");
    let ty = TensorType::new(DType::F32, Shape::fixed(&[2]));
    let x = g.add_input("x", ty.clone());
    let _unused = g.add_input("unused", ty.clone());
    g.add_node("sink", custom(None), vec![Some(x)], vec![]);
    let y = g.add_simple("y", Op::Relu, &[x]);
    g.set_type(y, ty);
    g.add_output(y);
    // (No numeric check: the interpreter cannot run a custom op without semantics.)
    let mut out = g.clone();
    let r = run_pipeline(&registry(), "dce", &mut out, &mut PassContext::new()).expect("runs");
    assert_eq!(out.num_nodes(), 1);
    assert_eq!(out.inputs().len(), 2);
    assert_eq!(r.steps[0].stats.get("nodes-removed"), Some(&1));
}

#[test]
fn cse_is_deterministic() {
    let text = r#"graph @main(%x: f32[3], %z: f32[3]) -> (%y) {
      %c1 = const f32[1] [3.0]
      %c2 = const f32[1] [3.0]
      %c3 = const f32[1] [3.0]
      %a = Mul(%x, %c2) : f32[3]
      %b = Mul(%x, %c3) : f32[3]
      %c = Mul(%x, %c1) : f32[3]
      %d = Sum(%a, %b, %c, %z) : f32[3]
      %e = Sum(%c, %b, %a, %z) : f32[3]
      %y = Sub(%d, %e) : f32[3]
    }"#;
    let g = parse(text);
    let (first, _) = run_checked("cse,dce", &g, &[]);
    for _ in 0..5 {
        let (again, _) = run_checked("cse,dce", &g, &[]);
        assert_eq!(print(&first), print(&again));
    }
    let p = print(&first);
    // The survivor is the first constant (by id) and the first Mul (topologically).
    assert!(p.contains("%c1 = const"), "{p}");
    assert!(
        !p.contains("%c2 = const") && !p.contains("%c3 = const"),
        "{p}"
    );
    assert!(p.contains("%a = Mul(%x, %c1)"), "{p}");
    assert_eq!(p.matches("Mul(").count(), 1, "{p}");
    // Once the Muls are one, both Sums read (a, a, a, z) and merge too.
    assert_eq!(p.matches("Sum(").count(), 1, "{p}");
    assert!(p.contains("%y = Sub(%d, %d)"), "{p}");
}

#[test]
fn fold_shapes_keeps_integer_dtypes_and_symbols() {
    // Shape → Cast(i32) → Gather of a fixed extent: an i32 constant; the batch stays symbolic.
    let text = r#"graph @main(%x: f32[N,5]) -> (%y, %z) {
      %i = const i64[] [1]
      %i0 = const i64[] [0]
      %sh = Shape(%x) : i64[2]
      %s32 = Cast(%sh) {to="i32"} : i32[2]
      %d = Gather(%s32, %i) : i32[]
      %df = Cast(%d) {to="f32"} : f32[]
      %y = Mul(%x, %df) : f32[N,5]
      %n = Gather(%sh, %i0) : i64[]
      %z = Cast(%n) {to="f32"} : f32[]
    }"#;
    let g = parse(text);
    let (out, _) = run_checked("fold-shapes,dce", &g, &[("N", 3)]);
    let p = print(&out);
    assert!(p.contains("%d = const i32[] [5]"), "{p}");
    assert!(p.contains("Shape(%x)"), "{p}");
}

#[test]
fn transposes_without_perm_reverse_and_cancel() {
    let text = r#"graph @main(%x: f32[2,3,4]) -> (%y) {
      %a = Transpose(%x) : f32[4,3,2]
      %b = Transpose(%a) : f32[2,3,4]
      %y = Relu(%b) : f32[2,3,4]
    }"#;
    let g = parse(text);
    let (out, _) = run_checked("simplify-layout,dce", &g, &[]);
    let p = print(&out);
    assert!(p.contains("%y = Relu(%x)"), "{p}");
    assert_eq!(out.num_nodes(), 1);
}

#[test]
fn every_pass_is_idempotent_on_a_mixed_graph() {
    let text = r#"graph @main(%x: f32[N,4,6]) -> (%y) {
      %i0 = const i64[] [0]
      %ax = const i64[1] [0]
      %t24 = const i64[1] [24]
      %one = const f32[1] [1.0]
      %two = const f32[1] [2.0]
      %sh = Shape(%x) : i64[3]
      %n = Gather(%sh, %i0) : i64[]
      %nu = Unsqueeze(%n, %ax) : i64[1]
      %tg = Concat(%nu, %t24) {axis=0} : i64[2]
      %r = Reshape(%x, %tg) : f32[N,24]
      %s = Add(%one, %two) : f32[1]
      %m1 = Mul(%r, %s) : f32[N,24]
      %m2 = Mul(%r, %s) : f32[N,24]
      %t1 = Transpose(%m1) {perm=[1,0]} : f32[24,N]
      %t2 = Transpose(%t1) {perm=[1,0]} : f32[N,24]
      %y = Add(%t2, %m2) : f32[N,24]
    }"#;
    let g = parse(text);
    let pipeline = "fold-constants,fold-shapes,dce,cse,simplify-layout,dce";
    let (once, _) = run_checked(pipeline, &g, &[("N", 2)]);
    let p = print(&once);
    assert!(p.contains("const i64[2] [0, 24]"), "{p}");
    assert!(p.contains("%y = Add(%m1, %m1)"), "{p}");
    let mut twice = once.clone();
    let r = run_pipeline(&registry(), pipeline, &mut twice, &mut PassContext::new())
        .expect("second run");
    assert!(r.steps.iter().all(|s| !s.changed), "{:?}", r.steps);
    assert_eq!(print(&once), print(&twice));
}
