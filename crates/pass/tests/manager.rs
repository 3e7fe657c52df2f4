//! The pass manager's own behaviour: analysis caching and invalidation, fixpoint groups,
//! verify-each with reproducers, option checking.

use pare_ir::{parse_graph, DType, Graph, Op, Shape, TensorType};
use pare_pass::analyses::CostAnalysis;
use pare_pass::{
    run_pipeline, Analysis, Instrumentation, PassContext, PassError, PassInfo, PassManager,
    PassReport, Registry,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const G: &str = "graph @g(%x: f32[2]) -> (%y) {
  %a = Relu(%x) : f32[2]
  %b = Relu(%a) : f32[2]
  %c = Relu(%b) : f32[2]
  %y = Neg(%c) : f32[2]
}";

/// Removes one Relu whose operand is a Relu output (so it needs several runs to finish).
#[derive(Default)]
struct DropOneRelu;

impl pare_pass::Pass for DropOneRelu {
    fn name(&self) -> &str {
        "drop-one-relu"
    }
    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        for n in g.node_ids().collect::<Vec<_>>() {
            let node = g.node(n);
            let (Some(x), Some(&y)) = (node.input(0), node.outputs().first()) else {
                continue;
            };
            let producer_is_relu = g
                .producer(x)
                .is_some_and(|p| matches!(g.node(p).op, Op::Relu));
            if matches!(node.op, Op::Relu) && producer_is_relu && !g.outputs().contains(&y) {
                g.replace_all_uses(y, x);
                g.remove_node(n);
                return Ok(PassReport::counted("dropped", 1));
            }
        }
        Ok(PassReport::unchanged())
    }
}

/// Breaks the graph: gives a value a wrong shape.
#[derive(Default)]
struct Breaker;

impl pare_pass::Pass for Breaker {
    fn name(&self) -> &str {
        "breaker"
    }
    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
        let y = g.outputs()[0];
        g.set_type(y, TensorType::new(DType::F32, Shape::fixed(&[3])));
        Ok(PassReport::changed())
    }
}

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

struct CountingAnalysis;
impl Analysis for CountingAnalysis {
    const NAME: &'static str = "counting";
    fn compute(_g: &Graph, _cx: &mut PassContext) -> Result<Self, PassError> {
        COMPUTED.fetch_add(1, Ordering::SeqCst);
        Ok(CountingAnalysis)
    }
}

/// Asks for the counting analysis and changes nothing.
#[derive(Default)]
struct UsesAnalysis;
impl pare_pass::Pass for UsesAnalysis {
    fn name(&self) -> &str {
        "uses-analysis"
    }
    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        cx.analysis::<CountingAnalysis>(g)?;
        Ok(PassReport::unchanged())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_default::<DropOneRelu>("drop-one-relu", "test");
    r.register_default::<Breaker>("breaker", "test");
    r.register_default::<UsesAnalysis>("uses-analysis", "test");
    r.register(
        PassInfo::new("opts", "test").option("mode", "a|b", "a", "choice"),
        |o| {
            let _: serde_json::Value = o.parse()?;
            Ok(Box::new(DropOneRelu))
        },
    );
    r.register_pipeline("clean", "test", "drop-one-relu", true);
    r
}

#[test]
fn fixpoint_group_repeats_until_nothing_changes() {
    let mut g = parse_graph(G).unwrap();
    let r = run_pipeline(&registry(), "clean", &mut g, &mut PassContext::new()).unwrap();
    assert_eq!(g.num_nodes(), 2);
    let group = &r.steps[0];
    assert_eq!(group.steps[0].stats["dropped"], 2);
    assert_eq!(
        group.runs, 3,
        "two changing runs and one that finds nothing"
    );
    assert_eq!((r.before.nodes, r.after.nodes), (4, 2));
    // A single run of the pass alone removes one node.
    let mut g = parse_graph(G).unwrap();
    run_pipeline(
        &registry(),
        "drop-one-relu",
        &mut g,
        &mut PassContext::new(),
    )
    .unwrap();
    assert_eq!(g.num_nodes(), 3);
}

#[test]
fn analyses_are_cached_until_a_pass_changes_the_graph() {
    let mut g = parse_graph(G).unwrap();
    let mut cx = PassContext::new();
    let before = COMPUTED.load(Ordering::SeqCst);
    run_pipeline(&registry(), "uses-analysis,uses-analysis", &mut g, &mut cx).unwrap();
    assert_eq!(
        COMPUTED.load(Ordering::SeqCst) - before,
        1,
        "cached between passes"
    );
    run_pipeline(&registry(), "drop-one-relu,uses-analysis", &mut g, &mut cx).unwrap();
    assert_eq!(
        COMPUTED.load(Ordering::SeqCst) - before,
        2,
        "dropped after a change"
    );
    // The cost analysis is recomputed when the graph gained nodes, even without invalidation.
    let c1 = cx.analysis::<CostAnalysis>(&g).unwrap();
    let x = g.inputs()[0];
    g.add_simple("extra", Op::Relu, &[x]);
    let c2 = cx.analysis::<CostAnalysis>(&g).unwrap();
    assert!(!Arc::ptr_eq(&c1, &c2));
}

#[test]
fn verify_each_catches_a_broken_pass_and_writes_a_reproducer() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = parse_graph(G).unwrap();
    let steps = registry().build("drop-one-relu,breaker").unwrap();
    let instr = Instrumentation {
        verify_each: true,
        repro_dir: Some(dir.path().to_path_buf()),
        ..Instrumentation::default()
    };
    let e = PassManager::new("drop-one-relu,breaker", steps, instr)
        .run(&mut g, &mut PassContext::new())
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("after pass 'breaker' the graph is invalid"),
        "{msg}"
    );
    assert!(msg.contains("reproducer"), "{msg}");
    let repro = std::fs::read_to_string(dir.path().join("pare-repro-breaker.ir")).unwrap();
    assert!(repro.contains("// RUN: breaker"), "{repro}");
    // The reproducer is the graph the failing pass got (after drop-one-relu), and parses.
    let rg = parse_graph(&repro).unwrap();
    assert_eq!(rg.num_nodes(), 3);
}

#[test]
fn options_are_checked_against_the_documentation() {
    let reg = registry();
    let e = reg.build("opts(mode=c)").err().unwrap().to_string();
    assert!(e.contains("must be one of a|b"), "{e}");
    let e = reg.build("opts(level=1)").err().unwrap().to_string();
    assert!(
        e.contains("unknown option 'level'; valid options: mode (a|b)"),
        "{e}"
    );
    let e = reg.build("drop-one-relu(x=1)").err().unwrap().to_string();
    assert!(e.contains("it takes no options"), "{e}");
    let e = reg.build("nope").err().unwrap().to_string();
    assert!(
        e.contains("available passes: breaker, clean, drop-one-relu"),
        "{e}"
    );
    assert!(reg.build("opts(mode=b)").is_ok());
}

/// Counts the nodes of the recorded input graph and of the graph it is given.
#[derive(Default)]
struct ReadsInput;
static INPUT_NODES: AtomicUsize = AtomicUsize::new(0);
impl pare_pass::Pass for ReadsInput {
    fn name(&self) -> &str {
        "reads-input"
    }
    fn run(&mut self, _g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let input = cx
            .input_graph()
            .ok_or_else(|| PassError::failed("reads-input", "no input graph"))?;
        INPUT_NODES.store(input.num_nodes(), Ordering::SeqCst);
        Ok(PassReport::unchanged())
    }
}

#[test]
fn passes_see_the_graph_as_it_entered_the_pipeline() {
    let mut reg = registry();
    reg.register_default::<ReadsInput>("reads-input", "test");
    let mut g = parse_graph(G).unwrap();
    let original = g.clone();
    let mut cx = PassContext::new();
    assert!(cx.input_graph().is_none());
    run_pipeline(&reg, "drop-one-relu,reads-input", &mut g, &mut cx).unwrap();
    // The pass after drop-one-relu still sees all four nodes, with the original ids.
    assert_eq!(INPUT_NODES.load(Ordering::SeqCst), 4);
    assert_eq!(g.num_nodes(), 3);
    let recorded = cx.input_graph().unwrap().clone();
    assert_eq!(*recorded, original);
    // A second pipeline on the same context keeps the first pipeline's input.
    run_pipeline(&reg, "drop-one-relu", &mut g, &mut cx).unwrap();
    assert!(Arc::ptr_eq(cx.input_graph().unwrap(), &recorded));
    // Callers may set it (or clear it) themselves.
    cx.set_input_graph(None);
    let mut cx = cx.with_input_graph(g.clone());
    run_pipeline(&reg, "reads-input", &mut g, &mut cx).unwrap();
    assert_eq!(INPUT_NODES.load(Ordering::SeqCst), 2);
}
