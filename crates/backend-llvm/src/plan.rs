//! The execution plan: a statically shaped graph becomes a list of steps (runtime kernel calls
//! and fused elementwise loops) over buffers with fixed places (arena offsets, caller inputs and
//! outputs, constant data).
//!
//! **Views**: Reshape, Squeeze, Unsqueeze, Flatten and Identity move no data; their output is the
//! same buffer as their input (an *alias class*, keyed by its root value).
//!
//! **Elementwise fusion**: elementwise nodes whose output has the same shape join a *group* that
//! becomes one loop nest (see `codegen::fused`); intermediate values that no node outside the
//! group reads never reach memory. A group stays open until a node outside it reads one of its
//! values; it then runs at the position of its last member, so every outside reader comes after
//! it. Elementwise nodes right after a Conv/MatMul/Gemm (bias, residual add, activation) are
//! folded into that kernel's epilogue instead (see `lower`).
//!
//! **Memory**: each alias class lives from the step that writes it to the last step that reads
//! it; classes are placed greedy-by-size in one 64-byte-aligned arena (the rule of
//! [`pare_pass::analyses::MemoryPlan`], applied to classes and kernel scratch buffers). Classes
//! holding a graph output are written straight into the caller's output buffer.

use crate::{BackendError, Result};
use pare_ir::{DType, Graph, NodeId, Op, Use, ValueDef, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Alignment of arena buffers and constant data.
pub const ALIGN: u64 = 64;

/// Where an operand lives at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// `arena + offset`.
    Arena(u64),
    /// The caller's `inputs[i]`.
    Input(usize),
    /// The caller's `outputs[i]`.
    Output(usize),
    /// Constant data number `i` of [`Plan::consts`].
    Const(usize),
    /// A null pointer (an omitted optional operand).
    Null,
}

/// An operand of a step before placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A graph value (its alias class's place).
    Value(ValueId),
    /// Constant data prepared for a kernel (packed weights, index tables).
    Const(usize),
    /// The step's scratch buffer.
    Scratch,
    /// The caller's `outputs[i]` (copies into graph outputs).
    GraphOutput(usize),
    /// Omitted.
    Null,
}

/// Constant data emitted into the artifact.
#[derive(Clone, Debug)]
pub struct ConstData {
    /// Symbol-friendly name (for the IR listing).
    pub name: String,
    /// Bytes (little endian).
    pub bytes: Vec<u8>,
}

/// A call of one runtime kernel: `func(params, bufs, threads)`.
#[derive(Clone, Debug)]
pub struct KernelCall {
    /// Exported symbol of the kernel.
    pub func: &'static str,
    /// Parameter words (the kernel's `encode()`).
    pub params: Vec<i64>,
    /// Operands, in the kernel's order.
    pub bufs: Vec<Operand>,
    /// Scratch bytes (0: none).
    pub scratch: u64,
}

/// One step of the plan.
#[derive(Clone, Debug)]
pub enum StepKind {
    /// A runtime kernel.
    Kernel(KernelCall),
    /// A fused elementwise loop nest over the group's nodes (in topological order).
    Fused(Vec<NodeId>),
    /// Copy `bytes` bytes from one value to another (graph outputs that alias inputs etc.).
    Copy {
        /// Source.
        from: Operand,
        /// Destination.
        to: Operand,
        /// Bytes.
        bytes: u64,
    },
}

/// A step with the node it comes from (for error messages and listings).
#[derive(Clone, Debug)]
pub struct Step {
    /// Name of the (last) node.
    pub node: String,
    /// Op name(s).
    pub op: String,
    /// What to do.
    pub kind: StepKind,
    /// Arena offset of the scratch buffer, once placed.
    pub scratch_at: Option<u64>,
}

/// The whole plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The graph the steps refer to (static shapes, canonicalized).
    pub graph: Graph,
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// Constant data (graph constants used by steps, and kernel-prepared data).
    pub consts: Vec<ConstData>,
    /// Graph constant value → index in `consts`.
    pub const_of: HashMap<ValueId, usize>,
    /// Alias class root of every value.
    pub root: HashMap<ValueId, ValueId>,
    /// Place of every alias class root.
    pub place: HashMap<ValueId, Place>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// Peak of simultaneously live arena bytes (lower bound on the arena).
    pub peak_live_bytes: u64,
    /// Nodes compiled as views (no code).
    pub views: usize,
    /// Elementwise nodes folded into a kernel epilogue.
    pub epilogue_folds: usize,
}

impl Plan {
    /// The run-time place of an operand of `step`.
    pub fn place_of(&self, step: &Step, op: Operand) -> Place {
        match op {
            Operand::Value(v) => {
                let r = self.root.get(&v).copied().unwrap_or(v);
                if let Some(&c) = self.const_of.get(&r) {
                    return Place::Const(c);
                }
                self.place.get(&r).copied().unwrap_or(Place::Null)
            }
            Operand::Const(i) => Place::Const(i),
            Operand::Scratch => step.scratch_at.map(Place::Arena).unwrap_or(Place::Null),
            Operand::GraphOutput(i) => Place::Output(i),
            Operand::Null => Place::Null,
        }
    }
}

/// Static shape of a value.
pub fn shape(g: &Graph, v: ValueId) -> Result<Vec<usize>> {
    let val = g.value(v);
    val.ty
        .shape
        .as_ref()
        .and_then(|s| s.as_fixed())
        .ok_or_else(|| BackendError::Dynamic {
            value: val.name.clone(),
            ty: format!("{:?}", val.ty),
        })
}

/// Element type of a value.
pub fn dtype(g: &Graph, v: ValueId) -> Result<DType> {
    let val = g.value(v);
    val.ty.dtype.ok_or_else(|| BackendError::Dynamic {
        value: val.name.clone(),
        ty: "unknown element type".into(),
    })
}

/// Bytes of a value's dense buffer.
pub fn bytes(g: &Graph, v: ValueId) -> Result<u64> {
    let s = shape(g, v)?;
    let n: usize = s.iter().product();
    Ok(dtype(g, v)?.storage_bytes(n) as u64)
}

/// Ops whose output is their first input's buffer.
pub fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape(_)
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Flatten(_)
            | Op::Identity
            | Op::Dropout(_)
    )
}

/// The steps and groups being built, in order.
enum Item {
    Step(Step),
    Group(usize),
    Moved,
}

struct Group {
    shape: Vec<usize>,
    nodes: Vec<NodeId>,
    values: HashSet<ValueId>,
    sealed: bool,
}

/// Builds steps from the graph. `lower` turns one non-elementwise node into steps (or `None`
/// when the node is an elementwise op that should join a group); it may fold a following
/// elementwise node into the kernel by returning it in `absorbed`.
pub struct Builder<'g> {
    /// The graph.
    pub g: &'g Graph,
    /// Constant data so far.
    pub consts: Vec<ConstData>,
    /// Graph constants already given a `consts` slot.
    pub const_of: HashMap<ValueId, usize>,
    /// Alias roots.
    pub root: HashMap<ValueId, ValueId>,
    items: Vec<Item>,
    groups: Vec<Group>,
    group_of_value: HashMap<ValueId, usize>,
    /// Nodes already handled (folded into an epilogue).
    pub done: HashSet<NodeId>,
    ready_at: HashMap<ValueId, usize>,
}

impl<'g> Builder<'g> {
    /// A builder over `g`.
    pub fn new(g: &'g Graph) -> Builder<'g> {
        Builder {
            g,
            consts: Vec::new(),
            const_of: HashMap::new(),
            root: HashMap::new(),
            items: Vec::new(),
            groups: Vec::new(),
            group_of_value: HashMap::new(),
            done: HashSet::new(),
            ready_at: HashMap::new(),
        }
    }

    /// The root of `v`'s alias class.
    pub fn root_of(&self, v: ValueId) -> ValueId {
        let mut r = v;
        while let Some(&p) = self.root.get(&r) {
            if p == r {
                break;
            }
            r = p;
        }
        r
    }

    /// Makes `out` a view of `input`.
    pub fn alias(&mut self, out: ValueId, input: ValueId) {
        let r = self.root_of(input);
        self.root.insert(out, r);
    }

    /// Registers constant data and returns its index.
    pub fn add_const(&mut self, name: &str, bytes: Vec<u8>) -> usize {
        self.consts.push(ConstData {
            name: name.to_string(),
            bytes,
        });
        self.consts.len() - 1
    }

    /// The `consts` slot of a graph constant (added on first use).
    pub fn graph_const(&mut self, v: ValueId) -> Option<usize> {
        let r = self.root_of(v);
        if let Some(&i) = self.const_of.get(&r) {
            return Some(i);
        }
        let t = self.g.constant(r)?;
        let name = self.g.value(r).name.clone();
        let i = self.add_const(&name, t.raw().to_vec());
        self.const_of.insert(r, i);
        Some(i)
    }

    /// Seals every open group that produced one of `node`'s operands (an outside reader).
    fn seal_inputs(&mut self, node: NodeId) {
        for v in self.g.node(node).inputs().iter().flatten() {
            let r = self.root_of(*v);
            for key in [*v, r] {
                if let Some(&gi) = self.group_of_value.get(&key) {
                    self.groups[gi].sealed = true;
                }
            }
        }
    }

    /// Appends a step produced for `node`; returns its item index (for [`Builder::kernel_mut`]).
    pub fn push_step(&mut self, node: NodeId, kind: StepKind) -> usize {
        let n = self.g.node(node);
        let step = Step {
            node: n.name.clone(),
            op: n.op.name().to_string(),
            kind,
            scratch_at: None,
        };
        self.items.push(Item::Step(step));
        let idx = self.items.len() - 1;
        for &o in n.outputs() {
            self.ready_at.insert(o, idx);
        }
        idx
    }

    /// The kernel call at item `idx`.
    pub fn kernel_mut(&mut self, idx: usize) -> Option<&mut KernelCall> {
        match self.items.get_mut(idx) {
            Some(Item::Step(Step {
                kind: StepKind::Kernel(k),
                ..
            })) => Some(k),
            _ => None,
        }
    }

    /// Renames the step at `idx` after a node folded into it.
    pub fn step_note(&mut self, idx: usize, op: &str) {
        if let Some(Item::Step(s)) = self.items.get_mut(idx) {
            s.op.push('+');
            s.op.push_str(op);
        }
    }

    /// True when `v` is computed by a step placed before item `idx` that will not move (or is
    /// an input or constant), so a step at `idx` may read it.
    pub fn ready_before(&self, v: ValueId, idx: usize) -> bool {
        let r = self.root_of(v);
        match self.g.value(r).def() {
            ValueDef::Input(_) | ValueDef::Const(_) => return true,
            _ => {}
        }
        if let Some(&i) = self.ready_at.get(&r) {
            return i < idx;
        }
        if let Some(&gi) = self.group_of_value.get(&r) {
            if !self.groups[gi].sealed {
                return false;
            }
            return self
                .items
                .iter()
                .position(|it| matches!(it, Item::Group(x) if *x == gi))
                .is_some_and(|p| p < idx);
        }
        false
    }

    /// Makes `out` (a folded node's output) the value `v`'s producer writes instead of `v`.
    pub fn retarget(&mut self, v: ValueId, out: ValueId) {
        if let Some(&i) = self.ready_at.get(&v) {
            self.ready_at.insert(out, i);
        }
    }

    /// Called for every node not handled by an elementwise group, before its steps are pushed.
    pub fn before_kernel(&mut self, node: NodeId) {
        self.seal_inputs(node);
    }

    /// Adds an elementwise node to a group (a new one, or the open group of one of its operands
    /// with the same shape).
    pub fn add_elementwise(&mut self, node: NodeId, out_shape: Vec<usize>) {
        let n = self.g.node(node);
        let mut target = None;
        for v in n.inputs().iter().flatten() {
            if let Some(&gi) = self.group_of_value.get(v) {
                let gr = &self.groups[gi];
                if !gr.sealed && gr.shape == out_shape {
                    target = Some(gi);
                    break;
                }
            }
        }
        // Operands from other groups are outside reads of those groups.
        for v in n.inputs().iter().flatten() {
            if let Some(&gi) = self.group_of_value.get(v) {
                if Some(gi) != target {
                    self.groups[gi].sealed = true;
                }
            }
        }
        let gi = match target {
            Some(gi) => {
                // Move the group to the end: nothing after its old position reads it (it is
                // not sealed), and its new member's operands are all computed by now.
                for it in self.items.iter_mut() {
                    if matches!(it, Item::Group(x) if *x == gi) {
                        *it = Item::Moved;
                    }
                }
                gi
            }
            None => {
                self.groups.push(Group {
                    shape: out_shape,
                    nodes: Vec::new(),
                    values: HashSet::new(),
                    sealed: false,
                });
                self.groups.len() - 1
            }
        };
        self.items.push(Item::Group(gi));
        let gr = &mut self.groups[gi];
        gr.nodes.push(node);
        for &o in n.outputs() {
            gr.values.insert(o);
            self.group_of_value.insert(o, gi);
        }
    }

    /// Finishes: the steps in order.
    pub fn finish_steps(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        for it in std::mem::take(&mut self.items) {
            match it {
                Item::Step(s) => steps.push(s),
                Item::Group(gi) => {
                    let gr = &self.groups[gi];
                    let last = *gr.nodes.last().expect("group has a node");
                    let n = self.g.node(last);
                    let ops: Vec<&str> =
                        gr.nodes.iter().map(|&x| self.g.node(x).op.name()).collect();
                    steps.push(Step {
                        node: n.name.clone(),
                        op: ops.join("+"),
                        kind: StepKind::Fused(gr.nodes.clone()),
                        scratch_at: None,
                    });
                }
                Item::Moved => {}
            }
        }
        steps
    }
}

/// The values a fused group must store: those read outside the group or that are graph outputs.
pub fn group_outputs(
    g: &Graph,
    nodes: &[NodeId],
    roots: &HashMap<ValueId, ValueId>,
) -> Vec<ValueId> {
    let members: HashSet<NodeId> = nodes.iter().copied().collect();
    let graph_outs: HashSet<ValueId> = g.outputs().iter().copied().collect();
    let _ = roots;
    let mut outs = Vec::new();
    for &n in nodes {
        for &o in g.node(n).outputs() {
            let outside = g.uses(o).iter().any(|u| match u {
                Use::Node { node, .. } => !members.contains(node),
                _ => true,
            });
            if outside || graph_outs.contains(&o) {
                outs.push(o);
            }
        }
    }
    outs
}

/// The values a fused group reads from memory: operands not produced inside the group.
pub fn group_inputs(g: &Graph, nodes: &[NodeId]) -> Vec<ValueId> {
    let produced: HashSet<ValueId> = nodes
        .iter()
        .flat_map(|&n| g.node(n).outputs().to_vec())
        .collect();
    let mut ins = Vec::new();
    for &n in nodes {
        for v in g.node(n).inputs().iter().flatten() {
            if !produced.contains(v) && !ins.contains(v) {
                ins.push(*v);
            }
        }
    }
    ins
}

/// Values each step reads and writes (alias roots), for liveness.
fn step_values(plan: &Plan, s: &Step) -> (Vec<ValueId>, Vec<ValueId>) {
    let g = &plan.graph;
    let root = |v: ValueId| plan.root.get(&v).copied().unwrap_or(v);
    match &s.kind {
        StepKind::Kernel(k) => {
            // Kernels list inputs before outputs; which are outputs is decided by the producer
            // relation: a value defined by a node whose step this is. Simpler and exact: a value
            // is written here iff this is the first step mentioning it.
            let vals: Vec<ValueId> = k
                .bufs
                .iter()
                .filter_map(|b| match b {
                    Operand::Value(v) => Some(root(*v)),
                    _ => None,
                })
                .collect();
            (vals, Vec::new())
        }
        StepKind::Fused(nodes) => {
            let ins = group_inputs(g, nodes).into_iter().map(root).collect();
            let outs = group_outputs(g, nodes, &plan.root)
                .into_iter()
                .map(root)
                .collect();
            (ins, outs)
        }
        StepKind::Copy { from, to, .. } => {
            let f = match from {
                Operand::Value(v) => vec![root(*v)],
                _ => vec![],
            };
            let t = match to {
                Operand::Value(v) => vec![root(*v)],
                _ => vec![],
            };
            (f, t)
        }
    }
}

/// Assigns places: inputs, outputs (with copies where a class cannot live in the caller's
/// output buffer), constants, and the arena for everything else.
pub fn place(plan: &mut Plan) -> Result<()> {
    let g = plan.graph.clone();
    let root = |v: ValueId, r: &HashMap<ValueId, ValueId>| r.get(&v).copied().unwrap_or(v);
    // Graph inputs.
    for (i, &v) in g.inputs().iter().enumerate() {
        plan.place.insert(root(v, &plan.root), Place::Input(i));
    }
    // Graph outputs: a class may live in outputs[i] if it is written by a step (not an input
    // or constant) and holds no other graph output.
    let mut class_outputs: HashMap<ValueId, usize> = HashMap::new();
    for &v in g.outputs() {
        *class_outputs.entry(root(v, &plan.root)).or_default() += 1;
    }
    let mut copies = Vec::new();
    for (i, &v) in g.outputs().iter().enumerate() {
        let r = root(v, &plan.root);
        let external = plan.place.contains_key(&r)
            || plan.const_of.contains_key(&r)
            || g.constant(r).is_some();
        if !external && class_outputs[&r] == 1 {
            plan.place.insert(r, Place::Output(i));
        } else {
            copies.push((i, v));
        }
    }
    for (i, v) in copies {
        if g.constant(root(v, &plan.root)).is_some()
            && !plan.const_of.contains_key(&root(v, &plan.root))
        {
            let t = g.constant(root(v, &plan.root)).expect("constant");
            plan.consts.push(ConstData {
                name: g.value(v).name.clone(),
                bytes: t.raw().to_vec(),
            });
            plan.const_of
                .insert(root(v, &plan.root), plan.consts.len() - 1);
        }
        let b = bytes(&g, v)?;
        plan.steps.push(Step {
            node: g.value(v).name.clone(),
            op: "copy to output".into(),
            kind: StepKind::Copy {
                from: Operand::Value(v),
                to: Operand::GraphOutput(i),
                bytes: b,
            },
            scratch_at: None,
        });
    }
    // Liveness of arena classes: first and last step mentioning the class.
    let mut first: BTreeMap<ValueId, usize> = BTreeMap::new();
    let mut last: HashMap<ValueId, usize> = HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let (a, b) = step_values(plan, s);
        for v in a.into_iter().chain(b) {
            first.entry(v).or_insert(i);
            last.insert(v, i);
        }
    }
    struct Req {
        key: Result<ValueId, usize>,
        size: u64,
        first: usize,
        last: usize,
    }
    let mut reqs = Vec::new();
    for (&v, &f) in &first {
        if plan.place.contains_key(&v) || plan.const_of.contains_key(&v) {
            continue;
        }
        let size = bytes(&g, v)?;
        reqs.push(Req {
            key: Ok(v),
            size,
            first: f,
            last: last[&v],
        });
    }
    for (i, s) in plan.steps.iter().enumerate() {
        if let StepKind::Kernel(k) = &s.kind {
            if k.scratch > 0 {
                reqs.push(Req {
                    key: Err(i),
                    size: k.scratch,
                    first: i,
                    last: i,
                });
            }
        }
    }
    // Greedy by size.
    reqs.sort_by(|a, b| b.size.cmp(&a.size).then(a.first.cmp(&b.first)));
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::new();
    let mut arena = 0u64;
    for r in &reqs {
        let size = r.size.div_ceil(ALIGN) * ALIGN;
        let mut conflicts: Vec<(u64, u64)> = placed
            .iter()
            .filter(|p| p.2 <= r.last && r.first <= p.3)
            .map(|p| (p.0, p.1))
            .collect();
        conflicts.sort();
        let mut off = 0u64;
        for (o, s) in conflicts {
            if off + size <= o {
                break;
            }
            off = off.max(o + s);
        }
        placed.push((off, size, r.first, r.last));
        arena = arena.max(off + size);
        match r.key {
            Ok(v) => {
                plan.place.insert(v, Place::Arena(off));
            }
            Err(i) => plan.steps[i].scratch_at = Some(off),
        }
    }
    // Peak live bytes.
    let nsteps = plan.steps.len();
    let mut live = vec![0u64; nsteps + 1];
    for r in &reqs {
        for l in live.iter_mut().take(r.last + 1).skip(r.first) {
            *l += r.size;
        }
    }
    plan.arena_bytes = arena;
    plan.peak_live_bytes = live.into_iter().max().unwrap_or(0);
    Ok(())
}

/// True when `v` is produced by a node (not an input or constant).
pub fn is_computed(g: &Graph, v: ValueId) -> bool {
    matches!(g.value(v).def(), ValueDef::Node { .. })
}
