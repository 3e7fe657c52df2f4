//! The SSA graph: nodes and values in arenas addressed by typed ids, with use-lists kept by
//! the editing methods.
//!
//! Invariants (checked by [`crate::verify`]):
//! - every value has exactly one definition: a graph input, a constant, or a node output;
//! - `value.uses` lists exactly the (node, operand) pairs and graph-output slots that read it;
//! - ids are never reused: removing a node leaves a tombstone until [`Graph::compact`].

use crate::{Op, Tensor, TensorType};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

/// Index of a node in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

/// Index of a value in its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl NodeId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
impl ValueId {
    /// As a vector index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}
impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value#{}", self.0)
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    /// The `n`th graph input.
    Input(usize),
    /// A constant (weight).
    Const(Tensor),
    /// Output `index` of `node`.
    Node {
        /// Producer.
        node: NodeId,
        /// Output position.
        index: usize,
    },
    /// Tombstone of a removed node's output.
    Dead,
}

/// Who reads a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Use {
    /// Operand `operand` of `node`.
    Node {
        /// Consumer.
        node: NodeId,
        /// Operand position.
        operand: usize,
    },
    /// The `n`th graph output.
    Output(usize),
}

/// A value: a tensor flowing along edges.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Name (from ONNX, or generated); unique among live values after import.
    pub name: String,
    /// Known type.
    pub ty: TensorType,
    def: ValueDef,
    uses: Vec<Use>,
}

impl Value {
    /// Definition.
    pub fn def(&self) -> &ValueDef {
        &self.def
    }
    /// Readers.
    pub fn uses(&self) -> &[Use] {
        &self.uses
    }
    /// The constant, if this value is one.
    pub fn constant(&self) -> Option<&Tensor> {
        match &self.def {
            ValueDef::Const(t) => Some(t),
            _ => None,
        }
    }
}

/// A node: an op applied to operands.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name (the ONNX node name, kept for error messages and export).
    pub name: String,
    /// The op with its attributes.
    pub op: Op,
    inputs: Vec<Option<ValueId>>,
    outputs: Vec<ValueId>,
    dead: bool,
}

impl Node {
    /// Operands; `None` is an omitted optional input.
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }
    /// Operand `i` if present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
    /// Results.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }
    /// True once removed.
    pub fn is_dead(&self) -> bool {
        self.dead
    }
}

/// The graph has a cycle through these nodes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("graph has a cycle through {} node(s), e.g. '{first}'", nodes.len())]
pub struct CycleError {
    /// Nodes that could not be ordered.
    pub nodes: Vec<NodeId>,
    /// Name of one of them.
    pub first: String,
}

/// A dataflow graph (also used for subgraphs of If, Loop and Scan).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    nodes: Vec<Node>,
    values: Vec<Value>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    num_captures: usize,
}

impl Graph {
    /// How many trailing inputs are values captured from the enclosing graph (subgraphs only):
    /// the node holding the subgraph passes them as its trailing operands.
    pub fn num_captures(&self) -> usize {
        self.num_captures
    }

    /// Declares the last `n` inputs as captures (see [`Graph::num_captures`]).
    pub fn set_num_captures(&mut self, n: usize) {
        self.num_captures = n.min(self.inputs.len());
    }

    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    fn push_value(&mut self, name: String, ty: TensorType, def: ValueDef) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(Value {
            name,
            ty,
            def,
            uses: Vec::new(),
        });
        id
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let n = self.inputs.len();
        let v = self.push_value(name.into(), ty, ValueDef::Input(n));
        self.inputs.push(v);
        v
    }

    /// Adds a constant value.
    pub fn add_const(&mut self, name: impl Into<String>, t: Tensor) -> ValueId {
        let ty = TensorType::new(t.dtype(), crate::Shape::fixed(t.shape()));
        self.push_value(name.into(), ty, ValueDef::Const(t))
    }

    /// Adds a node with one output value per entry of `outputs` (names), and returns it.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<String>,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        for (i, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.index()].uses.push(Use::Node {
                    node: id,
                    operand: i,
                });
            }
        }
        let outs = outputs
            .into_iter()
            .enumerate()
            .map(|(index, n)| {
                self.push_value(n, TensorType::UNKNOWN, ValueDef::Node { node: id, index })
            })
            .collect();
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: outs,
            dead: false,
        });
        id
    }

    /// Convenience: a node with one output; returns the output value.
    pub fn add_simple(&mut self, name: impl Into<String>, op: Op, inputs: &[ValueId]) -> ValueId {
        let name = name.into();
        let n = self.add_node(
            name.clone(),
            op,
            inputs.iter().map(|&v| Some(v)).collect(),
            vec![name],
        );
        self.nodes[n.index()].outputs[0]
    }

    /// Sets the order of the graph inputs; `inputs` must be a permutation of the current ones.
    /// Returns `false` (and changes nothing) otherwise.
    pub fn reorder_inputs(&mut self, inputs: Vec<ValueId>) -> bool {
        let mut a = inputs.clone();
        let mut b = self.inputs.clone();
        a.sort();
        b.sort();
        if a != b {
            return false;
        }
        for (i, &v) in inputs.iter().enumerate() {
            self.values[v.index()].def = ValueDef::Input(i);
        }
        self.inputs = inputs;
        true
    }

    /// Appends a graph output.
    pub fn add_output(&mut self, v: ValueId) {
        let n = self.outputs.len();
        self.values[v.index()].uses.push(Use::Output(n));
        self.outputs.push(v);
    }

    /// Replaces graph output `n`.
    pub fn set_output(&mut self, n: usize, v: ValueId) {
        let old = self.outputs[n];
        self.remove_use(old, Use::Output(n));
        self.values[v.index()].uses.push(Use::Output(n));
        self.outputs[n] = v;
    }

    /// Graph inputs.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
    /// Graph outputs.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }
    /// A node.
    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n.index()]
    }
    /// The op of a node, for editing attributes in place.
    pub fn op_mut(&mut self, n: NodeId) -> &mut Op {
        &mut self.nodes[n.index()].op
    }
    /// A value.
    pub fn value(&self, v: ValueId) -> &Value {
        &self.values[v.index()]
    }
    /// Sets a value's type.
    pub fn set_type(&mut self, v: ValueId, ty: TensorType) {
        self.values[v.index()].ty = ty;
    }
    /// Renames a value.
    pub fn set_name(&mut self, v: ValueId, name: impl Into<String>) {
        self.values[v.index()].name = name.into();
    }
    /// Number of node slots (live and dead).
    pub fn node_capacity(&self) -> usize {
        self.nodes.len()
    }
    /// Number of value slots (live and dead).
    pub fn value_capacity(&self) -> usize {
        self.values.len()
    }
    /// Live node ids in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.dead)
            .map(|(i, _)| NodeId(i as u32))
    }
    /// All value ids that are not tombstones.
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.def != ValueDef::Dead)
            .map(|(i, _)| ValueId(i as u32))
    }
    /// Number of live nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| !n.dead).count()
    }
    /// The node producing `v`, if any.
    pub fn producer(&self, v: ValueId) -> Option<NodeId> {
        match self.values[v.index()].def {
            ValueDef::Node { node, .. } => Some(node),
            _ => None,
        }
    }
    /// The constant held by `v`, if it is one.
    pub fn constant(&self, v: ValueId) -> Option<&Tensor> {
        self.values[v.index()].constant()
    }
    /// Readers of `v`.
    pub fn uses(&self, v: ValueId) -> &[Use] {
        &self.values[v.index()].uses
    }
    /// Finds a live value by name (linear scan; for tools and tests).
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.value_ids()
            .find(|&v| self.values[v.index()].name == name)
    }

    fn remove_use(&mut self, v: ValueId, u: Use) {
        let uses = &mut self.values[v.index()].uses;
        if let Some(i) = uses.iter().position(|x| *x == u) {
            uses.swap_remove(i);
        }
    }

    /// Points operand `i` of `node` at `v` (or omits it), keeping use-lists right.
    pub fn set_operand(&mut self, node: NodeId, i: usize, v: Option<ValueId>) {
        let u = Use::Node { node, operand: i };
        if self.nodes[node.index()].inputs.len() <= i {
            self.nodes[node.index()].inputs.resize(i + 1, None);
        }
        if let Some(old) = self.nodes[node.index()].inputs[i] {
            self.remove_use(old, u);
        }
        if let Some(v) = v {
            self.values[v.index()].uses.push(u);
        }
        self.nodes[node.index()].inputs[i] = v;
    }

    /// Replaces the full operand list of `node`.
    pub fn set_operands(&mut self, node: NodeId, inputs: Vec<Option<ValueId>>) {
        let old = std::mem::take(&mut self.nodes[node.index()].inputs);
        for (i, v) in old.into_iter().enumerate() {
            if let Some(v) = v {
                self.remove_use(v, Use::Node { node, operand: i });
            }
        }
        for (i, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.values[v.index()]
                    .uses
                    .push(Use::Node { node, operand: i });
            }
        }
        self.nodes[node.index()].inputs = inputs;
    }

    /// Makes every reader of `old` read `new` instead (graph outputs included). O(uses).
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        if old == new {
            return;
        }
        let uses = std::mem::take(&mut self.values[old.index()].uses);
        for u in &uses {
            match *u {
                Use::Node { node, operand } => self.nodes[node.index()].inputs[operand] = Some(new),
                Use::Output(n) => self.outputs[n] = new,
            }
        }
        self.values[new.index()].uses.extend(uses);
    }

    /// Removes a node: detaches its operands and turns its outputs into tombstones.
    /// Its outputs must have no readers left; returns `false` (and does nothing) otherwise.
    pub fn remove_node(&mut self, node: NodeId) -> bool {
        let outs = self.nodes[node.index()].outputs.clone();
        if outs
            .iter()
            .any(|&o| !self.values[o.index()].uses.is_empty())
        {
            return false;
        }
        self.set_operands(node, Vec::new());
        for o in outs {
            self.values[o.index()].def = ValueDef::Dead;
        }
        self.nodes[node.index()].dead = true;
        true
    }

    /// Live nodes in a topological order (stable: among ready nodes, the lowest id first).
    pub fn topo_order(&self) -> Result<Vec<NodeId>, CycleError> {
        let mut indeg = vec![0usize; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if n.dead {
                continue;
            }
            indeg[i] = n
                .inputs
                .iter()
                .flatten()
                .filter(|v| self.producer(**v).is_some())
                .count();
        }
        let mut ready: BinaryHeap<Reverse<u32>> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| !n.dead && indeg[*i] == 0)
            .map(|(i, _)| Reverse(i as u32))
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(NodeId(i));
            for &o in &self.nodes[i as usize].outputs {
                for u in &self.values[o.index()].uses {
                    if let Use::Node { node, .. } = u {
                        indeg[node.index()] -= 1;
                        if indeg[node.index()] == 0 {
                            ready.push(Reverse(node.0));
                        }
                    }
                }
            }
        }
        let live = self.num_nodes();
        if order.len() != live {
            let nodes: Vec<NodeId> = self.node_ids().filter(|n| indeg[n.index()] > 0).collect();
            let first = nodes
                .first()
                .map(|n| self.nodes[n.index()].name.clone())
                .unwrap_or_default();
            return Err(CycleError { nodes, first });
        }
        Ok(order)
    }

    /// Removes nodes whose outputs nobody reads, repeatedly; returns how many were removed.
    /// Nodes of custom ops are kept only if read (core ops have no side effects).
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut removed = 0;
        loop {
            let dead: Vec<NodeId> = self
                .node_ids()
                .filter(|&n| {
                    self.nodes[n.index()]
                        .outputs
                        .iter()
                        .all(|o| self.values[o.index()].uses.is_empty())
                })
                .collect();
            if dead.is_empty() {
                return removed;
            }
            for n in dead {
                removed += self.remove_node(n) as usize;
            }
        }
    }

    /// Drops tombstones, unused constants and unread dead values, renumbering ids.
    /// Returns the old→new value id map (`None` for dropped values).
    pub fn compact(&mut self) -> Vec<Option<ValueId>> {
        let mut vmap: Vec<Option<ValueId>> = vec![None; self.values.len()];
        let mut nmap: Vec<Option<NodeId>> = vec![None; self.nodes.len()];
        let mut next_n = 0u32;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.dead {
                nmap[i] = Some(NodeId(next_n));
                next_n += 1;
            }
        }
        let mut next_v = 0u32;
        for (i, v) in self.values.iter().enumerate() {
            let keep = match v.def {
                ValueDef::Dead => false,
                ValueDef::Const(_) => !v.uses.is_empty(),
                _ => true,
            };
            if keep {
                vmap[i] = Some(ValueId(next_v));
                next_v += 1;
            }
        }
        let values = std::mem::take(&mut self.values);
        self.values = values
            .into_iter()
            .enumerate()
            .filter(|(i, _)| vmap[*i].is_some())
            .map(|(_, mut v)| {
                if let ValueDef::Node { node, index } = v.def {
                    v.def = ValueDef::Node {
                        node: nmap[node.index()].expect("live producer"),
                        index,
                    };
                }
                for u in &mut v.uses {
                    if let Use::Node { node, .. } = u {
                        *node = nmap[node.index()].expect("live consumer");
                    }
                }
                v
            })
            .collect();
        let nodes = std::mem::take(&mut self.nodes);
        self.nodes = nodes
            .into_iter()
            .filter(|n| !n.dead)
            .map(|mut n| {
                for v in n.inputs.iter_mut().flatten() {
                    *v = vmap[v.index()].expect("live operand");
                }
                for v in &mut n.outputs {
                    *v = vmap[v.index()].expect("live output");
                }
                n
            })
            .collect();
        for v in self.inputs.iter_mut().chain(self.outputs.iter_mut()) {
            *v = vmap[v.index()].expect("live graph io");
        }
        vmap
    }

    /// Removes a constant that nobody reads (it becomes a tombstone, so the printer and the
    /// exporter no longer see it); returns whether it did.
    pub fn remove_const(&mut self, v: ValueId) -> bool {
        let val = &mut self.values[v.index()];
        if !matches!(val.def, ValueDef::Const(_)) || !val.uses.is_empty() {
            return false;
        }
        val.def = ValueDef::Dead;
        true
    }

    /// Removes graph input `n` if it has no readers; returns whether it did.
    pub fn remove_unused_input(&mut self, n: usize) -> bool {
        let v = self.inputs[n];
        if !self.values[v.index()].uses.is_empty() {
            return false;
        }
        self.inputs.remove(n);
        self.values[v.index()].def = ValueDef::Dead;
        for (i, &v) in self.inputs.iter().enumerate() {
            self.values[v.index()].def = ValueDef::Input(i);
        }
        true
    }

    /// Live constant values.
    pub fn constants(&self) -> impl Iterator<Item = (ValueId, &Tensor)> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.constant().map(|t| (ValueId(i as u32), t)))
    }
}
