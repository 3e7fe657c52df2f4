//! Channel-coupling rules on hand-written IR graphs: one test per rule, positive and
//! negative.

use pare_analysis::{CouplingGroups, Group, Role, Target};
use pare_ir::{parse_graph, Graph};
use pare_pass::PassContext;

/// `%name = const f32[shape] [...]` with deterministic values.
fn c(name: &str, shape: &[usize]) -> String {
    let n: usize = shape.iter().product();
    let mut s = 0x9e37u32;
    let vals: Vec<String> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            format!("{:.3}", ((s >> 8) % 2000) as f32 / 1000.0 - 1.0)
        })
        .collect();
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!(
        "  %{name} = const f32[{}] [{}]\n",
        dims.join(","),
        vals.join(", ")
    )
}

/// `%name = const i64[k] [v...]`.
fn ints(name: &str, v: &[i64]) -> String {
    let vs: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("  %{name} = const i64[{}] [{}]\n", v.len(), vs.join(", "))
}

fn graph(header: &str, consts: &[String], body: &str) -> Graph {
    let text = format!("{header} {{\n{}{body}}}\n", consts.concat());
    let mut g = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    pare_ir::infer::infer_types(&mut g).unwrap_or_else(|e| panic!("{e}\n{text}"));
    g
}

fn analyze(g: &Graph) -> CouplingGroups {
    let cg = CouplingGroups::analyze(g).expect("analysis");
    if let Err(e) = cg.verify(g) {
        panic!("{e}\n{}", cg.describe(g));
    }
    cg
}

/// The groups holding `axis` of constant `name`.
fn groups_of<'a>(g: &Graph, cg: &'a CouplingGroups, name: &str, axis: usize) -> Vec<&'a Group> {
    let v = g
        .find_value(name)
        .unwrap_or_else(|| panic!("no value {name}"));
    cg.groups_of_const(v, axis).collect()
}

/// The single group holding `axis` of `name`.
fn group_of<'a>(g: &Graph, cg: &'a CouplingGroups, name: &str, axis: usize) -> &'a Group {
    let gs = groups_of(g, cg, name, axis);
    assert_eq!(gs.len(), 1, "{name} axis {axis}\n{}", cg.describe(g));
    gs[0]
}

/// (role, constant name, axis, offset, block) of the constant members.
fn consts(g: &Graph, gr: &Group) -> Vec<(Role, String, usize, usize, usize)> {
    let mut v: Vec<_> = gr
        .members
        .iter()
        .filter_map(|m| match m.target {
            Target::Const(c) => Some((m.role, g.value(c).name.clone(), m.axis, m.offset, m.block)),
            Target::Node(_) => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn node_roles(gr: &Group) -> Vec<Role> {
    let mut v: Vec<Role> = gr
        .members
        .iter()
        .filter(|m| matches!(m.target, Target::Node(_)))
        .map(|m| m.role)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn has_reason(gr: &Group, s: &str) -> bool {
    gr.reasons.iter().any(|r| r.contains(s))
}

#[test]
fn conv_bn_relu_conv() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[4, 3, 3, 3]),
            c("b1", &[4]),
            c("s", &[4]),
            c("bb", &[4]),
            c("mu", &[4]),
            c("var", &[4]).replace('-', ""),
            c("w2", &[5, 4, 1, 1]),
        ],
        "  %a = Conv(%x, %w1, %b1) {pads=[1,1,1,1]}
  %n = BatchNormalization(%a, %s, %bb, %mu, %var)
  %r = Relu(%n)
  %y = Conv(%r, %w2)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!((gr.units, gr.granularity, gr.size), (4, 1, 4));
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "w1".into(), 0, 0, 1),
            (Role::Bias, "b1".into(), 0, 0, 1),
            (Role::Consumer, "w2".into(), 1, 0, 1),
            (Role::ChannelParam, "bb".into(), 0, 0, 1),
            (Role::ChannelParam, "mu".into(), 0, 0, 1),
            (Role::ChannelParam, "s".into(), 0, 0, 1),
            (Role::ChannelParam, "var".into(), 0, 0, 1),
        ]
    );
    // The carriers are the conv output, the BN output and the relu output.
    let mut carried: Vec<String> = gr
        .carriers
        .iter()
        .map(|c| g.value(c.value).name.clone())
        .collect();
    carried.sort();
    assert_eq!(carried, ["a", "n", "r"]);
    // The last conv's output is a graph output: not prunable.
    let last = group_of(&g, &cg, "w2", 0);
    assert!(!last.prunable);
    assert!(has_reason(last, "graph output 'y'"), "{:?}", last.reasons);
    let s = cg.summary();
    assert_eq!(
        (s.groups, s.prunable_groups, s.prunable_channels),
        (2, 1, 4)
    );
}

#[test]
fn residual_add_couples_two_convs() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("wa", &[4, 3, 1, 1]),
            c("wb", &[4, 4, 3, 3]),
            c("wc", &[2, 4, 1, 1]),
            c("wd", &[4, 3, 1, 1]),
        ],
        "  %a = Conv(%x, %wa)
  %r = Relu(%a)
  %b = Conv(%r, %wb) {pads=[1,1,1,1]}
  %s = Add(%a, %b)
  %d = Conv(%x, %wd)
  %y = Conv(%s, %wc)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wa", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!(gr.units, 4);
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "wa".into(), 0, 0, 1),
            (Role::Producer, "wb".into(), 0, 0, 1),
            (Role::Consumer, "wb".into(), 1, 0, 1),
            (Role::Consumer, "wc".into(), 1, 0, 1),
        ]
    );
    // Same group for both producers.
    assert_eq!(group_of(&g, &cg, "wb", 0).id, gr.id);
    // A conv whose output nobody reads is its own (prunable) group, not coupled.
    let d = group_of(&g, &cg, "wd", 0);
    assert_ne!(d.id, gr.id);
    assert!(d.prunable);
}

#[test]
fn residual_with_untracked_tensor_is_blocked() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8], %z: f32[1,4,8,8]) -> (%y)",
        &[c("wa", &[4, 3, 1, 1]), c("wc", &[2, 4, 1, 1])],
        "  %a = Conv(%x, %wa)
  %s = Add(%a, %z)
  %y = Conv(%s, %wc)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wa", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "not tracked"), "{:?}", gr.reasons);
    // Broadcasting a [1,1,8,8] tensor over the channels is fine.
    let g = graph(
        "graph @m(%x: f32[1,3,8,8], %z: f32[1,1,8,8]) -> (%y)",
        &[c("wa", &[4, 3, 1, 1]), c("wc", &[2, 4, 1, 1])],
        "  %a = Conv(%x, %wa)
  %s = Mul(%a, %z)
  %y = Conv(%s, %wc)
",
    );
    let cg = analyze(&g);
    assert!(group_of(&g, &cg, "wa", 0).prunable);
}

#[test]
fn per_channel_constants_and_shared_constants() {
    // A [4,1,1] scale is a per-channel member; a scalar is not a member.
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("wa", &[4, 3, 1, 1]),
            c("k", &[4, 1, 1]),
            c("half", &[]),
            c("wc", &[2, 4, 1, 1]),
        ],
        "  %a = Conv(%x, %wa)
  %m = Mul(%a, %k)
  %h = Mul(%m, %half)
  %y = Conv(%h, %wc)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wa", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert!(consts(&g, gr).contains(&(Role::ChannelParam, "k".into(), 0, 0, 1)));
    assert!(!consts(&g, gr).iter().any(|m| m.1 == "half"));
    // The same per-channel constant also read elsewhere blocks the group.
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y, %k2)",
        &[
            c("wa", &[4, 3, 1, 1]),
            c("k", &[4, 1, 1]),
            c("wc", &[2, 4, 1, 1]),
        ],
        "  %a = Conv(%x, %wa)
  %m = Mul(%a, %k)
  %y = Conv(%m, %wc)
  %k2 = Neg(%k)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wa", 0);
    assert!(!gr.prunable);
    assert!(
        has_reason(gr, "constant 'k' is also read"),
        "{:?}",
        gr.reasons
    );
}

#[test]
fn concat_makes_offset_subspaces() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[4, 3, 1, 1]),
            c("w2", &[6, 3, 1, 1]),
            c("w3", &[2, 10, 1, 1]),
        ],
        "  %a = Conv(%x, %w1)
  %b = Conv(%x, %w2)
  %cat = Concat(%a, %b) {axis=1}
  %r = Relu(%cat)
  %y = Conv(%r, %w3)
",
    );
    let cg = analyze(&g);
    let g1 = group_of(&g, &cg, "w1", 0);
    let g2 = group_of(&g, &cg, "w2", 0);
    assert!(g1.prunable && g2.prunable);
    assert_eq!((g1.units, g2.units), (4, 6));
    assert!(consts(&g, g1).contains(&(Role::Consumer, "w3".into(), 1, 0, 1)));
    assert!(consts(&g, g2).contains(&(Role::Consumer, "w3".into(), 1, 4, 1)));
    // w3's input axis is split over exactly those two groups.
    assert_eq!(groups_of(&g, &cg, "w3", 1).len(), 2);

    // Concat with a graph input: the graph input's part is blocked, the conv's is not.
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1]), c("w3", &[2, 7, 1, 1])],
        "  %a = Conv(%x, %w1)
  %cat = Concat(%x, %a) {axis=1}
  %y = Conv(%cat, %w3)
",
    );
    let cg = analyze(&g);
    let g1 = group_of(&g, &cg, "w1", 0);
    assert!(g1.prunable, "{:?}", g1.reasons);
    assert!(consts(&g, g1).contains(&(Role::Consumer, "w3".into(), 1, 3, 1)));
    let blocked: Vec<_> = groups_of(&g, &cg, "w3", 1)
        .into_iter()
        .filter(|gr| !gr.prunable)
        .collect();
    assert_eq!(blocked.len(), 1);
    assert!(
        has_reason(blocked[0], "untracked input 'x'"),
        "{:?}",
        blocked[0].reasons
    );
    assert_eq!(blocked[0].units, 3);
}

#[test]
fn depthwise_conv_passes_the_space() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[8, 3, 1, 1]),
            c("wd", &[8, 1, 3, 3]),
            c("bd", &[8]),
            c("w3", &[4, 8, 1, 1]),
        ],
        "  %a = Conv(%x, %w1)
  %d = Conv(%a, %wd, %bd) {group=8, pads=[1,1,1,1]}
  %r = Clip(%d)
  %y = Conv(%r, %w3)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!((gr.units, gr.granularity), (8, 1));
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "w1".into(), 0, 0, 1),
            (Role::Producer, "wd".into(), 0, 0, 1),
            (Role::Bias, "bd".into(), 0, 0, 1),
            (Role::Consumer, "w3".into(), 1, 0, 1),
        ]
    );
    assert_eq!(node_roles(gr), vec![Role::ConvGroups]);
    // The depthwise weight's axis 1 (size 1) is not a member.
    assert!(groups_of(&g, &cg, "wd", 1).is_empty());
}

#[test]
fn grouped_conv_prunes_whole_groups() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[8, 3, 1, 1]),
            c("wg", &[6, 4, 3, 3]),
            c("w3", &[4, 6, 1, 1]),
        ],
        "  %a = Conv(%x, %w1)
  %gc = Conv(%a, %wg) {group=2, pads=[1,1,1,1]}
  %y = Conv(%gc, %w3)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    // Unit = conv group: 4 input channels and 3 output channels each.
    assert_eq!((gr.units, gr.granularity), (2, 3));
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "w1".into(), 0, 0, 4),
            (Role::Producer, "wg".into(), 0, 0, 3),
            (Role::Consumer, "w3".into(), 1, 0, 3),
        ]
    );
    assert_eq!(node_roles(gr), vec![Role::ConvGroups]);
    // The grouped weight's input axis does not shrink.
    assert!(groups_of(&g, &cg, "wg", 1).is_empty());

    // A grouped conv on a graph input cannot be pruned.
    let g = graph(
        "graph @m(%x: f32[1,4,8,8]) -> (%y)",
        &[c("wg", &[6, 2, 3, 3]), c("w3", &[4, 6, 1, 1])],
        "  %gc = Conv(%x, %wg) {group=2, pads=[1,1,1,1]}
  %y = Conv(%gc, %w3)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wg", 0);
    assert!(!gr.prunable);
    assert!(
        has_reason(gr, "input channels are not tracked"),
        "{:?}",
        gr.reasons
    );
}

fn attention_graph(heads_reshape: &str) -> Graph {
    // B=1, S=4, hidden 8, H=2 heads of D=4.
    graph(
        "graph @m(%x: f32[1,4,8]) -> (%y)",
        &[
            c("wq", &[8, 8]),
            c("wk", &[8, 8]),
            c("wv", &[8, 8]),
            c("bq", &[8]),
            c("bk", &[8]),
            c("bv", &[8]),
            c("wo", &[8, 8]),
            c("bo", &[8]),
            c("scale", &[]),
            ints("split", &[1, 4, 2, 4]),
            ints("merge", &[1, 4, 8]),
        ],
        &format!(
            "  %q0 = MatMul(%x, %wq)
  %q = Add(%q0, %bq)
  %k0 = MatMul(%x, %wk)
  %k = Add(%bk, %k0)
  %v0 = MatMul(%x, %wv)
  %v = Add(%v0, %bv)
  %qh = Reshape(%q, %split)
  %kh = Reshape(%k, %split)
  %vh = Reshape(%v, %{heads_reshape})
  %qt = Transpose(%qh) {{perm=[0,2,1,3]}}
  %kt = Transpose(%kh) {{perm=[0,2,3,1]}}
  %vt = Transpose(%vh) {{perm=[0,2,1,3]}}
  %s = MatMul(%qt, %kt)
  %s2 = Div(%s, %scale)
  %p = Softmax(%s2) {{axis=-1}}
  %o = MatMul(%p, %vt)
  %ot = Transpose(%o) {{perm=[0,2,1,3]}}
  %om = Reshape(%ot, %merge)
  %y0 = MatMul(%om, %wo)
  %y = Add(%y0, %bo)
"
        ),
    )
}

#[test]
fn attention_heads() {
    let g = attention_graph("split");
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wq", 1);
    assert!(gr.prunable, "{:?}\n{}", gr.reasons, cg.describe(&g));
    assert_eq!((gr.units, gr.granularity, gr.size), (2, 4, 8));
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "wk".into(), 1, 0, 4),
            (Role::Producer, "wq".into(), 1, 0, 4),
            (Role::Producer, "wv".into(), 1, 0, 4),
            (Role::Consumer, "wo".into(), 0, 0, 4),
            (Role::ChannelParam, "bk".into(), 0, 0, 4),
            (Role::ChannelParam, "bq".into(), 0, 0, 4),
            (Role::ChannelParam, "bv".into(), 0, 0, 4),
        ]
    );
    assert_eq!(node_roles(gr), vec![Role::Reshape]);
    // Q, K and V are in one group.
    assert_eq!(group_of(&g, &cg, "wv", 1).id, gr.id);
    // The output projection's columns reach the graph output.
    assert!(!group_of(&g, &cg, "wo", 1).prunable);
}

#[test]
fn attention_with_mixing_reshape_is_blocked() {
    // V reshaped to [1,4,4,2]: heads of V no longer line up with Q/K heads.
    let g = graph(
        "graph @m(%x: f32[1,4,8]) -> (%y)",
        &[
            c("wq", &[8, 8]),
            c("wv", &[8, 8]),
            c("wo", &[8, 8]),
            ints("split", &[1, 4, 2, 4]),
            ints("bad", &[1, 2, 4, 4]),
            ints("merge", &[1, 4, 8]),
        ],
        "  %q = MatMul(%x, %wq)
  %v = MatMul(%x, %wv)
  %qh = Reshape(%q, %split)
  %vh = Reshape(%v, %bad)
  %qt = Transpose(%qh) {perm=[0,2,1,3]}
  %s = MatMul(%qt, %qt)
  %o = MatMul(%s, %vh)
  %om = Reshape(%o, %merge)
  %y = MatMul(%om, %wo)
",
    );
    let cg = analyze(&g);
    let gv = group_of(&g, &cg, "wv", 1);
    assert!(!gv.prunable);
    assert!(has_reason(gv, "reshape mixes"), "{:?}", gv.reasons);
}

#[test]
fn mlp_neurons() {
    let g = graph(
        "graph @m(%x: f32[2,8]) -> (%y)",
        &[
            c("w1", &[8, 16]),
            c("b1", &[16]),
            c("w2", &[16, 8]),
            c("w3", &[5, 8]),
            c("b3", &[5]),
            c("w4", &[3, 5]),
        ],
        "  %h0 = MatMul(%x, %w1)
  %h1 = Add(%h0, %b1)
  %h = Gelu(%h1)
  %z = MatMul(%h, %w2)
  %u = Gemm(%z, %w3, %b3) {transB=1}
  %ur = Relu(%u)
  %y = Gemm(%ur, %w4) {transB=1}
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 1);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!(gr.units, 16);
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "w1".into(), 1, 0, 1),
            (Role::Consumer, "w2".into(), 0, 0, 1),
            (Role::ChannelParam, "b1".into(), 0, 0, 1),
        ]
    );
    // Gemm with transB: the weight's output axis is 0, its input axis 1.
    let gg = group_of(&g, &cg, "w3", 0);
    assert!(gg.prunable, "{:?}", gg.reasons);
    assert_eq!(
        consts(&g, gg),
        vec![
            (Role::Producer, "w3".into(), 0, 0, 1),
            (Role::Bias, "b3".into(), 0, 0, 1),
            (Role::Consumer, "w4".into(), 1, 0, 1),
        ]
    );
    // The MatMul between them couples w2's output axis with w3's input axis.
    let gz = group_of(&g, &cg, "w2", 1);
    assert!(consts(&g, gz).contains(&(Role::Consumer, "w3".into(), 1, 0, 1)));
}

#[test]
fn flatten_into_linear() {
    // [1,4,2,2] flattened: channel c owns 4 consecutive inputs of the Gemm.
    let g = graph(
        "graph @m(%x: f32[1,3,2,2]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1]), c("w2", &[3, 16])],
        "  %a = Conv(%x, %w1)
  %f = Flatten(%a)
  %y = Gemm(%f, %w2) {transB=1}
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!((gr.units, gr.granularity), (4, 1));
    assert!(consts(&g, gr).contains(&(Role::Consumer, "w2".into(), 1, 0, 4)));
    // Global pooling then Reshape to [1, 4]: one input per channel.
    let g = graph(
        "graph @m(%x: f32[1,3,2,2]) -> (%y)",
        &[
            c("w1", &[4, 3, 1, 1]),
            c("w2", &[4, 3]),
            ints("s", &[1, -1]),
        ],
        "  %a = Conv(%x, %w1)
  %p = GlobalAveragePool(%a)
  %f = Reshape(%p, %s)
  %y = MatMul(%f, %w2)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert!(consts(&g, gr).contains(&(Role::Consumer, "w2".into(), 0, 0, 1)));
}

#[test]
fn not_prunable_cases() {
    // Reshape mixing channels with spatial positions.
    let g = graph(
        "graph @m(%x: f32[1,3,2,2]) -> (%y)",
        &[
            c("w1", &[4, 3, 1, 1]),
            c("w2", &[8, 3]),
            ints("s", &[1, 2, 8]),
        ],
        "  %a = Conv(%x, %w1)
  %r = Reshape(%a, %s)
  %y = MatMul(%r, %w2)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "reshape mixes"), "{:?}", gr.reasons);

    // Gather along the channel axis.
    let g = graph(
        "graph @m(%x: f32[1,3,2,2]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1]), ints("idx", &[0, 2])],
        "  %a = Conv(%x, %w1)
  %y = Gather(%a, %idx) {axis=1}
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "Gather"), "{:?}", gr.reasons);

    // A non-constant weight.
    let g = graph(
        "graph @m(%x: f32[2,8], %w: f32[16,3]) -> (%y)",
        &[c("w1", &[8, 16])],
        "  %h = MatMul(%x, %w1)
  %r = Relu(%h)
  %y = MatMul(%r, %w)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 1);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "untracked operand"), "{:?}", gr.reasons);

    // An op the analysis does not know (ArgMax along the channels).
    let g = graph(
        "graph @m(%x: f32[1,3,2,2]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1])],
        "  %a = Conv(%x, %w1)
  %y = ArgMax(%a) {axis=1}
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "ArgMax"), "{:?}", gr.reasons);

    // Control flow is opaque.
    let g = graph(
        "graph @m(%x: f32[1,3,2,2], %cond: bool[]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1])],
        "  %a = Conv(%x, %w1)
  %y = If(%cond, %a) {then_branch=graph @t(capture %a0: f32[1,4,2,2]) -> (%o) {
    %o = Relu(%a0)
  }, else_branch=graph @e(capture %a1: f32[1,4,2,2]) -> (%a1) {
  }}
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "(If)"), "{:?}", gr.reasons);
}

#[test]
fn layernorm_over_channels_and_split() {
    let g = graph(
        "graph @m(%x: f32[2,4,8]) -> (%y, %z)",
        &[
            c("w1", &[8, 6]),
            c("gam", &[6]),
            c("bet", &[6]),
            c("w2", &[4, 5]),
            c("w3", &[2, 5]),
            ints("sz", &[4, 2]),
        ],
        "  %h = MatMul(%x, %w1)
  %n = LayerNormalization(%h, %gam, %bet) {axis=-1}
  %a, %b = Split(%n, %sz) {axis=2}
  %y = MatMul(%a, %w2)
  %z = MatMul(%b, %w3)
",
    );
    let cg = analyze(&g);
    // The split cuts w1's output axis in two groups.
    let gs = groups_of(&g, &cg, "w1", 1);
    assert_eq!(gs.len(), 2, "{}", cg.describe(&g));
    let ga = group_of(&g, &cg, "w2", 0);
    assert!(ga.prunable, "{:?}", ga.reasons);
    assert_eq!(ga.units, 4);
    assert_eq!(
        consts(&g, ga),
        vec![
            (Role::Producer, "w1".into(), 1, 0, 1),
            (Role::Consumer, "w2".into(), 0, 0, 1),
            (Role::NormParam, "bet".into(), 0, 0, 1),
            (Role::NormParam, "gam".into(), 0, 0, 1),
        ]
    );
    assert_eq!(node_roles(ga), vec![Role::Split, Role::Reduction]);
    let gb = group_of(&g, &cg, "w3", 0);
    assert!(consts(&g, gb).contains(&(Role::Producer, "w1".into(), 1, 4, 1)));
}

#[test]
fn analysis_through_the_pass_context() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[c("w1", &[4, 3, 1, 1]), c("w2", &[2, 4, 1, 1])],
        "  %a = Conv(%x, %w1)
  %y = Conv(%a, %w2)
",
    );
    let mut cx = PassContext::new();
    let a = cx.analysis::<CouplingGroups>(&g).expect("analysis");
    let b = cx.analysis::<CouplingGroups>(&g).expect("cached");
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert_eq!(a.summary().prunable_groups, 1);
    let conv1 = g.producer(g.find_value("a").expect("a")).expect("conv");
    assert_eq!(a.producer_groups(conv1).count(), 1);
}

#[test]
fn attention_op_4d_and_3d() {
    // The fused Attention op on [B, H, S, D] inputs.
    let g = graph(
        "graph @m(%x: f32[1,4,8]) -> (%y)",
        &[
            c("wq", &[8, 8]),
            c("wk", &[8, 8]),
            c("wv", &[8, 8]),
            c("wo", &[8, 8]),
            ints("split", &[1, 4, 2, 4]),
            ints("merge", &[1, 4, 8]),
        ],
        "  %q = MatMul(%x, %wq)
  %k = MatMul(%x, %wk)
  %v = MatMul(%x, %wv)
  %qh = Reshape(%q, %split)
  %kh = Reshape(%k, %split)
  %vh = Reshape(%v, %split)
  %qt = Transpose(%qh) {perm=[0,2,1,3]}
  %kt = Transpose(%kh) {perm=[0,2,1,3]}
  %vt = Transpose(%vh) {perm=[0,2,1,3]}
  %o = Attention(%qt, %kt, %vt)
  %ot = Transpose(%o) {perm=[0,2,1,3]}
  %om = Reshape(%ot, %merge)
  %y = MatMul(%om, %wo)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wq", 1);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!((gr.units, gr.granularity), (2, 4));
    assert_eq!(group_of(&g, &cg, "wk", 1).id, gr.id);
    assert_eq!(group_of(&g, &cg, "wv", 1).id, gr.id);
    assert!(consts(&g, gr).contains(&(Role::Consumer, "wo".into(), 0, 0, 4)));
    assert!(node_roles(gr).contains(&Role::Heads));

    // The 3-D form with q_num_heads / kv_num_heads.
    let g = graph(
        "graph @m(%x: f32[1,4,8]) -> (%y)",
        &[
            c("wq", &[8, 8]),
            c("wk", &[8, 8]),
            c("wv", &[8, 6]),
            c("wo", &[6, 8]),
        ],
        "  %q = MatMul(%x, %wq)
  %k = MatMul(%x, %wk)
  %v = MatMul(%x, %wv)
  %o = Attention(%q, %k, %v) {q_num_heads=2, kv_num_heads=2}
  %y = MatMul(%o, %wo)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wq", 1);
    assert!(gr.prunable, "{:?}", gr.reasons);
    assert_eq!(gr.units, 2);
    assert_eq!(
        consts(&g, gr),
        vec![
            (Role::Producer, "wk".into(), 1, 0, 4),
            (Role::Producer, "wq".into(), 1, 0, 4),
            (Role::Producer, "wv".into(), 1, 0, 3),
            (Role::Consumer, "wo".into(), 0, 0, 3),
        ]
    );
    // Grouped-query attention (fewer K/V heads) is not handled.
    let g = graph(
        "graph @m(%x: f32[1,4,8]) -> (%y)",
        &[
            c("wq", &[8, 8]),
            c("wk", &[8, 4]),
            c("wv", &[8, 4]),
            c("wo", &[8, 8]),
        ],
        "  %q = MatMul(%x, %wq)
  %k = MatMul(%x, %wk)
  %v = MatMul(%x, %wv)
  %o = Attention(%q, %k, %v) {q_num_heads=2, kv_num_heads=1}
  %y = MatMul(%o, %wo)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "wq", 1);
    assert!(!gr.prunable);
}

#[test]
fn normalizations_pools_resize_and_conv_transpose() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[4, 3, 1, 1]),
            c("gs", &[4]),
            c("gb", &[4]),
            c("w2", &[6, 4, 1, 1]),
            c("is", &[6]),
            c("ib", &[6]),
            c("wt", &[6, 5, 2, 2]),
            c("bt", &[5]),
            c("w3", &[2, 5, 1, 1]),
            "  %sc = const f32[4] [1, 1, 2, 2]\n".to_string(),
        ],
        "  %a = Conv(%x, %w1)
  %n = GroupNormalization(%a, %gs, %gb) {num_groups=2}
  %b = Conv(%n, %w2)
  %i = InstanceNormalization(%b, %is, %ib)
  %p = MaxPool(%i) {kernel_shape=[2,2], strides=[2,2]}
  %r = Resize(%p, _, %sc) {mode=\"nearest\"}
  %t = ConvTranspose(%r, %wt, %bt) {strides=[2,2]}
  %y = Conv(%t, %w3)
",
    );
    let cg = analyze(&g);
    // GroupNorm ties the channels of each norm group: 2 units of 2 channels.
    let gn = group_of(&g, &cg, "w1", 0);
    assert!(gn.prunable, "{:?}", gn.reasons);
    assert_eq!((gn.units, gn.granularity), (2, 2));
    assert_eq!(
        consts(&g, gn),
        vec![
            (Role::Producer, "w1".into(), 0, 0, 2),
            (Role::Consumer, "w2".into(), 1, 0, 2),
            (Role::ChannelParam, "gb".into(), 0, 0, 2),
            (Role::ChannelParam, "gs".into(), 0, 0, 2),
        ]
    );
    assert_eq!(node_roles(gn), vec![Role::NormGroups]);
    // InstanceNorm, MaxPool and Resize (scale 1 on the channels) pass the space to the
    // ConvTranspose, whose weight axis 0 consumes it.
    let inorm = group_of(&g, &cg, "w2", 0);
    assert!(inorm.prunable, "{:?}", inorm.reasons);
    assert_eq!(
        consts(&g, inorm),
        vec![
            (Role::Producer, "w2".into(), 0, 0, 1),
            (Role::Consumer, "wt".into(), 0, 0, 1),
            (Role::ChannelParam, "ib".into(), 0, 0, 1),
            (Role::ChannelParam, "is".into(), 0, 0, 1),
        ]
    );
    // ConvTranspose produces along weight axis 1.
    let ct = group_of(&g, &cg, "wt", 1);
    assert!(ct.prunable, "{:?}", ct.reasons);
    assert_eq!(
        consts(&g, ct),
        vec![
            (Role::Producer, "wt".into(), 1, 0, 1),
            (Role::Bias, "bt".into(), 0, 0, 1),
            (Role::Consumer, "w3".into(), 1, 0, 1),
        ]
    );
}

#[test]
fn resize_along_channels_is_blocked() {
    let g = graph(
        "graph @m(%x: f32[1,3,8,8]) -> (%y)",
        &[
            c("w1", &[4, 3, 1, 1]),
            c("w2", &[2, 8, 1, 1]),
            "  %sc = const f32[4] [1, 2, 1, 1]\n".to_string(),
        ],
        "  %a = Conv(%x, %w1)
  %r = Resize(%a, _, %sc) {mode=\"nearest\"}
  %y = Conv(%r, %w2)
",
    );
    let cg = analyze(&g);
    let gr = group_of(&g, &cg, "w1", 0);
    assert!(!gr.prunable);
    assert!(has_reason(gr, "changes the extent"), "{:?}", gr.reasons);

    // Padding the spatial axes passes the channels; padding the channel axis does not.
    for (pads, ok) in [
        ([0, 0, 1, 1, 0, 0, 1, 1], true),
        ([0, 1, 0, 0, 0, -1, 0, 0], false),
    ] {
        let g = graph(
            "graph @m(%x: f32[1,3,8,8]) -> (%y)",
            &[
                c("w1", &[4, 3, 1, 1]),
                c("w2", &[2, 4, 1, 1]),
                ints("pads", &pads),
            ],
            "  %a = Conv(%x, %w1)
  %p = Pad(%a, %pads)
  %y = Conv(%p, %w2)
",
        );
        let cg = analyze(&g);
        let gr = group_of(&g, &cg, "w1", 0);
        assert_eq!(gr.prunable, ok, "{pads:?}: {:?}", gr.reasons);
    }
}
