//! Channel-coupling groups: which channels of which tensors must be pruned or sliced
//! together.
//!
//! See [`CouplingGroups`].

mod build;
mod shape;

use pare_ir::{Graph, NodeId, ValueId};
use pare_pass::{Analysis, PassContext, PassError};
use std::collections::HashMap;
use std::fmt::Write as _;

/// What a member tensor or node is to its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A constant weight axis indexed by the *output* channel of its node: Conv weight axis
    /// 0, ConvTranspose weight axis 1, MatMul/Gemm weight output axis, embedding table
    /// (Gather of a constant 2-D table) axis 1. Removing a unit removes its output channels.
    Producer,
    /// A producer's bias (Conv/ConvTranspose `B`, Gemm `C`).
    Bias,
    /// A constant weight axis indexed by the *input* channel of its node: Conv weight axis 1
    /// (group 1), ConvTranspose weight axis 0, MatMul/Gemm weight input (`K`) axis.
    Consumer,
    /// A per-channel constant of an op the space passes through elementwise: BatchNorm,
    /// InstanceNorm and GroupNorm parameters, Mul/Add/Sub/Div/PRelu/Where... constants whose
    /// extent along the channel axis is the channel count.
    ChannelParam,
    /// LayerNormalization scale/bias over the channel axis (the normalization statistics
    /// are over the channels, so removing some changes the result of the others).
    NormParam,
    /// (Node) a grouped or depthwise Conv whose `group` attribute counts units of this space.
    ConvGroups,
    /// (Node) a GroupNormalization whose `num_groups` counts units of this space.
    NormGroups,
    /// (Node) an Attention node whose `q_num_heads` / `kv_num_heads` (3-D form) or head
    /// axis (4-D form) counts units of this space.
    Heads,
    /// (Node) a Reshape whose input or output channel block is this space: its target
    /// shape (constant or computed) names the channel count and must be updated.
    Reshape,
    /// (Node) a Slice along the channel axis: its bounds must be recomputed.
    Slice,
    /// (Node) a Split along the channel axis: its sizes must be recomputed.
    Split,
    /// (Node) a reduction, softmax or normalization whose statistics run over the channel
    /// axis (ReduceMean, LayerNormalization, Softmax, ...): removing channels changes them.
    Reduction,
}

impl Role {
    /// True for roles that name a node rather than a constant.
    pub fn is_node_role(self) -> bool {
        matches!(
            self,
            Role::ConvGroups
                | Role::NormGroups
                | Role::Heads
                | Role::Reshape
                | Role::Slice
                | Role::Split
                | Role::Reduction
        )
    }
}

/// The tensor or node a member refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A constant (weight, bias, per-channel parameter) to slice along the member's axis.
    Const(ValueId),
    /// A node whose attributes or shape operands depend on the channel count.
    Node(NodeId),
}

/// One tensor axis (or node) in a group.
///
/// Unit `i` of the group occupies positions `offset + i·block .. offset + (i+1)·block`
/// along `axis` of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// What to edit.
    pub target: Target,
    /// The axis of the constant; for node members the (first) channel axis of the node's
    /// data input (Reduction, Slice, Split, Reshape: the input's; ConvGroups, NormGroups:
    /// axis 1; Heads: the head axis of Q, 1 for 4-D and 2 for 3-D inputs).
    pub axis: usize,
    /// Position of unit 0 along `axis`.
    pub offset: usize,
    /// Positions per unit along `axis`.
    pub block: usize,
    /// What it is.
    pub role: Role,
    /// The node reading the constant (for node members, the node itself).
    pub node: NodeId,
}

/// An activation carrying (part of) the group's space.
///
/// `axes` lists the value's axes that together form the channel space, major first (two
/// axes after a head split, e.g. `[2, 3]` of `[B, S, H, D]`); positions are row-major over
/// them, and unit `i` occupies flat positions `offset + i·block .. offset + (i+1)·block`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carrier {
    /// The activation.
    pub value: ValueId,
    /// Its channel axes, major first.
    pub axes: Vec<usize>,
    /// Position of unit 0.
    pub offset: usize,
    /// Positions per unit.
    pub block: usize,
}

/// A set of channels that must be removed together, as `units` independent units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Index in [`CouplingGroups::groups`].
    pub id: usize,
    /// Number of independently removable units (channels, heads, conv groups, ...).
    pub units: usize,
    /// Channels per unit on the producer side: 1 for plain channels, the head dimension for
    /// attention heads, the per-group channel count for grouped convolutions.
    pub granularity: usize,
    /// `units × granularity`: the channel count of the space on the producer side.
    pub size: usize,
    /// Tensors and nodes to edit when units are removed.
    pub members: Vec<Member>,
    /// Activations carrying the space.
    pub carriers: Vec<Carrier>,
    /// True when the group can be pruned: it has a producer, every op it reaches is
    /// understood, and it reaches no graph output.
    pub prunable: bool,
    /// Why it cannot be pruned (node name and op, then the cause).
    pub reasons: Vec<String>,
}

impl Group {
    /// Members with role `r`.
    pub fn members_with(&self, r: Role) -> impl Iterator<Item = &Member> + '_ {
        self.members.iter().filter(move |m| m.role == r)
    }
}

/// Counts over all groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CouplingSummary {
    /// Groups.
    pub groups: usize,
    /// Prunable groups.
    pub prunable_groups: usize,
    /// Units over prunable groups.
    pub prunable_units: usize,
    /// Channels (`size`) over prunable groups.
    pub prunable_channels: usize,
}

/// Channel-coupling groups of a graph.
///
/// **What it computes.** Every tracked channel dimension ("channel space") of the top-level
/// graph, split into groups of channels that must be pruned or sliced together:
/// - *producers* open a space: Conv (weight axis 0 + bias), ConvTranspose (weight axis 1 +
///   bias), MatMul/Gemm with a constant 2-D weight (output axis), Gather from a constant
///   2-D table (embedding axis 1);
/// - spaces flow through elementwise ops (activations, BatchNorm/InstanceNorm parameters,
///   per-channel Mul/Add/PRelu constants, pools, Resize/Pad/Expand along other axes,
///   Transpose, Squeeze/Unsqueeze, Reshape/Flatten that keep or cleanly split/merge the
///   channel block, Slice/Split along the channel axis, reductions over other axes);
/// - *consumers* close it: Conv weight axis 1 (group 1), ConvTranspose weight axis 0,
///   MatMul/Gemm weight input axis; LayerNormalization over it (scale/bias shrink too);
/// - *merge points* unify spaces: residual Add/Sub/Mul/... of non-constant tensors; Concat
///   along the channel axis makes a space whose parts are the inputs' spaces at offsets (so
///   the consumer's weight appears in each part's group with an offset); depthwise and
///   grouped Conv tie input and output channels group by group (unit = conv group);
///   GroupNormalization ties the channels of each norm group;
/// - attention: batched MatMuls of two activations tie the contracted channel axes of both
///   operands (Q·Kᵀ couples the query and key columns), and a channel axis that is a batch
///   axis of a MatMul (the head axis after `Reshape → [B,S,H,D] → Transpose`) ties the head
///   axis to all `D` columns of its head; so Q/K/V projection columns and the output
///   projection's rows form one group per layer with `units = H`, `granularity = D`;
///   the fused `Attention` op (opset 23, 3-D or 4-D, as many query as key/value heads) is
///   handled the same way;
/// - MLP: Linear → activation → Linear gives a group of neurons (units = hidden size).
///
/// Anything a space reaches that the rules do not cover (a Reshape mixing the channel
/// axis with others, Gather/Einsum/RNN/custom or control-flow ops, a non-constant weight, a
/// constant also used elsewhere, a graph output, a merge with an untracked tensor) makes
/// the group not prunable, with the node and op recorded in [`Group::reasons`].
///
/// **How.** A union-find over individual channel positions: each tracked channel
/// dimension (of an activation or a constant's axis) owns one element per position;
/// rules union positions (identity for pass-through and merges, offsets for
/// Concat/Split/Slice, one-to-many for head axes, flattening and conv groups). A group is a
/// maximal run of classes with the same set of touched tensors laid out contiguously.
///
/// **What it needs.** Value types (rank and the fixed extent of channel axes) as left by
/// type inference; constant weights. No calibration data.
///
/// **Guarantees.** Every position of every member axis belongs to exactly one group;
/// removing any subset of a prunable group's units from every member (and updating its node
/// members) leaves a well-formed graph in which the remaining channels compute what they
/// did, except that [`Role::Reduction`]/[`Role::NormParam`] members renormalize over the
/// remaining channels. Subgraph-holding nodes are opaque: a space reaching one is blocked.
#[derive(Clone, Debug, Default)]
pub struct CouplingGroups {
    /// The groups, in graph order.
    pub groups: Vec<Group>,
    by_const: HashMap<(ValueId, usize), Vec<usize>>,
    by_node: HashMap<NodeId, Vec<usize>>,
}

impl Analysis for CouplingGroups {
    const NAME: &'static str = "coupling";

    fn compute(g: &Graph, _cx: &mut PassContext) -> Result<Self, PassError> {
        CouplingGroups::analyze(g).map_err(|m| PassError::analysis(Self::NAME, m))
    }
}

impl CouplingGroups {
    /// Computes the groups of `g` (the error is a cycle in the graph).
    pub fn analyze(g: &Graph) -> Result<CouplingGroups, String> {
        let groups = build::build(g)?;
        let mut by_const: HashMap<(ValueId, usize), Vec<usize>> = HashMap::new();
        let mut by_node: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for gr in &groups {
            for m in &gr.members {
                if let Target::Const(c) = m.target {
                    let e = by_const.entry((c, m.axis)).or_default();
                    if !e.contains(&gr.id) {
                        e.push(gr.id);
                    }
                }
                let e = by_node.entry(m.node).or_default();
                if !e.contains(&gr.id) {
                    e.push(gr.id);
                }
            }
        }
        Ok(CouplingGroups {
            groups,
            by_const,
            by_node,
        })
    }

    /// Group `id`.
    pub fn group(&self, id: usize) -> Option<&Group> {
        self.groups.get(id)
    }

    /// The prunable groups.
    pub fn prunable(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.iter().filter(|g| g.prunable)
    }

    /// Groups with a member on `axis` of constant `c` (several when a Concat or Split puts
    /// parts of the axis in different groups).
    pub fn groups_of_const(&self, c: ValueId, axis: usize) -> impl Iterator<Item = &Group> + '_ {
        self.by_const
            .get(&(c, axis))
            .into_iter()
            .flatten()
            .filter_map(|&i| self.groups.get(i))
    }

    /// Groups with a member read by (or being) node `n`.
    pub fn groups_of_node(&self, n: NodeId) -> impl Iterator<Item = &Group> + '_ {
        self.by_node
            .get(&n)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.groups.get(i))
    }

    /// The group holding output channels of `node` (its producer member), if any.
    pub fn producer_groups(&self, n: NodeId) -> impl Iterator<Item = &Group> + '_ {
        self.groups_of_node(n).filter(move |gr| {
            gr.members
                .iter()
                .any(|m| m.node == n && m.role == Role::Producer)
        })
    }

    /// Counts.
    pub fn summary(&self) -> CouplingSummary {
        let mut s = CouplingSummary {
            groups: self.groups.len(),
            ..Default::default()
        };
        for gr in self.prunable() {
            s.prunable_groups += 1;
            s.prunable_units += gr.units;
            s.prunable_channels += gr.size;
        }
        s
    }

    /// Checks the structural invariants against `g`: every member range lies inside its
    /// axis; the ranges of each constant axis over all groups are disjoint and, for
    /// producer axes, cover the axis exactly; every carrier range lies inside its value's
    /// channel block. Returns the first violation.
    pub fn verify(&self, g: &Graph) -> Result<(), String> {
        // (constant, axis, role) -> (start, end, group) ranges.
        type Ranges = HashMap<(ValueId, usize, Role), Vec<(usize, usize, usize)>>;
        let mut ranges: Ranges = HashMap::new();
        for gr in &self.groups {
            if gr.size != gr.units * gr.granularity {
                return Err(format!("group {}: size != units × granularity", gr.id));
            }
            for m in &gr.members {
                let end = m.offset + gr.units * m.block;
                if let Target::Const(c) = m.target {
                    let t = g
                        .constant(c)
                        .ok_or_else(|| format!("group {}: member is not a constant", gr.id))?;
                    let dim = *t
                        .shape()
                        .get(m.axis)
                        .ok_or_else(|| format!("group {}: axis {} out of range", gr.id, m.axis))?;
                    if end > dim {
                        return Err(format!(
                            "group {}: member '{}' axis {} range {}..{end} exceeds {dim}",
                            gr.id,
                            g.value(c).name,
                            m.axis,
                            m.offset
                        ));
                    }
                    ranges
                        .entry((c, m.axis, m.role))
                        .or_default()
                        .push((m.offset, end, gr.id));
                }
            }
            for c in &gr.carriers {
                let ty = &g.value(c.value).ty;
                if let Some(shape) = ty.shape.as_ref().and_then(|s| s.as_fixed_at(&c.axes)) {
                    if c.offset + gr.units * c.block > shape {
                        return Err(format!(
                            "group {}: carrier '{}' range exceeds its channel block",
                            gr.id,
                            g.value(c.value).name
                        ));
                    }
                }
            }
        }
        for ((c, axis, role), mut rs) in ranges {
            rs.sort();
            rs.dedup_by_key(|r| (r.0, r.1, r.2));
            // The same group may list a constant twice (two readers): merge identical ones.
            rs.dedup_by_key(|r| (r.0, r.1));
            for w in rs.windows(2) {
                if w[1].0 < w[0].1 {
                    return Err(format!(
                        "constant '{}' axis {axis} ({role:?}): groups {} and {} overlap",
                        g.value(c).name,
                        w[0].2,
                        w[1].2
                    ));
                }
            }
            if role == Role::Producer {
                let dim = g
                    .constant(c)
                    .and_then(|t| t.shape().get(axis).copied())
                    .unwrap_or(0);
                let mut at = 0;
                for r in &rs {
                    if r.0 != at {
                        return Err(format!(
                            "producer '{}' axis {axis}: positions {at}..{} in no group",
                            g.value(c).name,
                            r.0
                        ));
                    }
                    at = r.1;
                }
                if at != dim {
                    return Err(format!(
                        "producer '{}' axis {axis}: positions {at}..{dim} in no group",
                        g.value(c).name
                    ));
                }
            }
        }
        Ok(())
    }

    /// A human-readable listing (one line per group, then its members).
    pub fn describe(&self, g: &Graph) -> String {
        let mut s = String::new();
        let node_name = |n: NodeId| {
            let nd = g.node(n);
            if nd.name.is_empty() {
                format!("{n}:{}", nd.op.name())
            } else {
                format!("{}:{}", nd.name, nd.op.name())
            }
        };
        for gr in &self.groups {
            let _ = writeln!(
                s,
                "group {}: units={} granularity={} size={} {}",
                gr.id,
                gr.units,
                gr.granularity,
                gr.size,
                if gr.prunable { "prunable" } else { "blocked" }
            );
            for m in &gr.members {
                let what = match m.target {
                    Target::Const(c) => format!("%{}", g.value(c).name),
                    Target::Node(n) => node_name(n),
                };
                let _ = writeln!(
                    s,
                    "  {:?} {what} axis={} offset={} block={} (node {})",
                    m.role,
                    m.axis,
                    m.offset,
                    m.block,
                    node_name(m.node)
                );
            }
            for r in &gr.reasons {
                let _ = writeln!(s, "  reason: {r}");
            }
        }
        s
    }
}

trait FixedAt {
    fn as_fixed_at(&self, axes: &[usize]) -> Option<usize>;
}

impl FixedAt for pare_ir::Shape {
    /// Product of the fixed extents at `axes` (None if any is not fixed or out of range).
    fn as_fixed_at(&self, axes: &[usize]) -> Option<usize> {
        axes.iter()
            .map(|&a| self.0.get(a).and_then(|d| d.fixed()).map(|n| n as usize))
            .product()
    }
}
