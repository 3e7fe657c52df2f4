//! The union-find walk behind [`super::CouplingGroups`].
//!
//! Every tracked channel dimension is a *slot* with one union-find element per position:
//! activation slots (opened by producers, Concat, Split, Slice, projections of head axes,
//! flattening) and constant slots (one per `(constant, axis)` that is a member). A value
//! carries *views*: a slot laid over some of its axes (major first), flat positions
//! row-major over those axes. Pass-through ops copy views; rules union positions.

use super::shape::{input_dims, reshape_out_dims, sides_match, SDim};
use super::{Carrier, Group, Member, Role, Target};
use pare_ir::{Dim, Graph, NodeId, Op, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};

type SlotId = u32;

#[derive(Clone, Debug)]
struct Slot {
    base: u32,
    size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    slot: SlotId,
    axes: Vec<usize>,
    dims: Vec<usize>,
}

impl View {
    fn size(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Extent of an operand along an output axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    Absent,
    Fixed(usize),
    Unknown,
}

/// An operand of a merge point, in output coordinates.
struct Part {
    operand: usize,
    views: Vec<View>,
    ext: Vec<Ext>,
    /// For a constant operand: output axis -> its own axis.
    const_axes: Option<Vec<Option<usize>>>,
}

struct MemberReg {
    slot: SlotId,
    role: Role,
    target: Target,
    axis: usize,
    node: NodeId,
}

struct Builder<'g> {
    g: &'g Graph,
    slots: Vec<Slot>,
    parent: Vec<u32>,
    views: Vec<Vec<View>>,
    const_slots: HashMap<(ValueId, usize), SlotId>,
    const_uses: HashMap<ValueId, HashSet<(NodeId, usize)>>,
    members: Vec<MemberReg>,
    blocked: Vec<(SlotId, usize, usize, String)>,
}

fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

impl<'g> Builder<'g> {
    fn new(g: &'g Graph) -> Builder<'g> {
        Builder {
            g,
            slots: Vec::new(),
            parent: Vec::new(),
            views: vec![Vec::new(); g.value_capacity()],
            const_slots: HashMap::new(),
            const_uses: HashMap::new(),
            members: Vec::new(),
            blocked: Vec::new(),
        }
    }

    // ---- union-find -------------------------------------------------------------------

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }

    fn new_slot(&mut self, size: usize) -> SlotId {
        let base = self.parent.len() as u32;
        self.parent.extend(base..base + size as u32);
        self.slots.push(Slot {
            base,
            size: size as u32,
        });
        (self.slots.len() - 1) as SlotId
    }

    fn elem(&self, s: SlotId, pos: usize) -> u32 {
        self.slots[s as usize].base + pos as u32
    }

    /// A fresh slot laid over `axes` of `v`.
    fn open(&mut self, v: ValueId, axes: Vec<usize>, dims: Vec<usize>) -> View {
        let slot = self.new_slot(dims.iter().product());
        let view = View { slot, axes, dims };
        self.push_view(v, view.clone());
        view
    }

    fn push_view(&mut self, v: ValueId, view: View) {
        let vs = &mut self.views[v.index()];
        if !vs.contains(&view) {
            vs.push(view);
        }
    }

    /// Unions two views position by position (same dims).
    fn union_views(&mut self, a: &View, b: &View) {
        if a.slot == b.slot {
            return;
        }
        for p in 0..a.size().min(b.size()) {
            let (x, y) = (self.elem(a.slot, p), self.elem(b.slot, p));
            self.union(x, y);
        }
    }

    /// Unions every position of `big` with its projection in `small`: `map[i]` is the
    /// index in `small.dims` of `big`'s axis `i`, or `None` for axes `small` lacks.
    fn union_project(&mut self, big: &View, small: &View, map: &[Option<usize>]) {
        let n = big.size();
        let mut idx = vec![0usize; big.dims.len()];
        for p in 0..n {
            let mut rem = p;
            for i in (0..big.dims.len()).rev() {
                idx[i] = rem % big.dims[i];
                rem /= big.dims[i];
            }
            let mut q = 0usize;
            let mut sidx = vec![0usize; small.dims.len()];
            for (i, m) in map.iter().enumerate() {
                if let Some(j) = m {
                    sidx[*j] = idx[i];
                }
            }
            for (j, &d) in small.dims.iter().enumerate() {
                q = q * d + sidx[j];
            }
            let (x, y) = (self.elem(big.slot, p), self.elem(small.slot, q));
            self.union(x, y);
        }
    }

    // ---- types ------------------------------------------------------------------------

    fn dims(&self, v: ValueId) -> Option<Vec<Dim>> {
        if let Some(t) = self.g.constant(v) {
            return Some(t.shape().iter().map(|&d| Dim::Fixed(d as u64)).collect());
        }
        self.g.value(v).ty.shape.as_ref().map(|s| s.0.clone())
    }

    fn rank(&self, v: ValueId) -> Option<usize> {
        self.dims(v).map(|d| d.len())
    }

    fn fixed_dim(&self, v: ValueId, axis: usize) -> Option<usize> {
        self.dims(v)?.get(axis)?.fixed().map(|n| n as usize)
    }

    fn is_const(&self, v: ValueId) -> bool {
        self.g.constant(v).is_some()
    }

    // ---- reasons and blocking ---------------------------------------------------------

    fn reason(&self, n: NodeId, why: &str) -> String {
        let nd = self.g.node(n);
        let name = if nd.name.is_empty() {
            n.to_string()
        } else {
            nd.name.clone()
        };
        format!("node '{name}' ({}): {why}", nd.op.name())
    }

    fn block(&mut self, view: &View, why: String) {
        let size = view.size();
        self.blocked.push((view.slot, 0, size, why));
    }

    fn block_value(&mut self, v: ValueId, why: &str, n: NodeId) {
        let r = self.reason(n, why);
        for view in self.views[v.index()].clone() {
            self.block(&view, r.clone());
        }
    }

    fn block_inputs(&mut self, n: NodeId, why: &str) {
        for v in self.g.node(n).inputs().to_vec().into_iter().flatten() {
            self.block_value(v, why, n);
        }
    }

    // ---- members ----------------------------------------------------------------------

    /// Registers `axis` of constant operand `operand` of `n` as a member tied to the
    /// single-axis view `view`.
    fn const_member(&mut self, n: NodeId, operand: usize, axis: usize, role: Role, view: &View) {
        let Some(c) = self.g.node(n).input(operand) else {
            return;
        };
        let Some(t) = self.g.constant(c) else {
            let r = self.reason(n, &format!("operand {operand} is not a constant"));
            self.block(view, r);
            return;
        };
        let size = view.size();
        if t.shape().get(axis) != Some(&size) {
            let r = self.reason(
                n,
                &format!(
                    "constant '{}' axis {axis} does not match the channel count {size}",
                    self.g.value(c).name
                ),
            );
            self.block(view, r);
            return;
        }
        let slot = match self.const_slots.get(&(c, axis)) {
            Some(&s) => s,
            None => {
                let s = self.new_slot(size);
                self.const_slots.insert((c, axis), s);
                s
            }
        };
        self.const_uses.entry(c).or_default().insert((n, operand));
        let cv = View {
            slot,
            axes: vec![axis],
            dims: vec![size],
        };
        self.union_views(view, &cv);
        self.members.push(MemberReg {
            slot,
            role,
            target: Target::Const(c),
            axis,
            node: n,
        });
    }

    fn node_member(&mut self, n: NodeId, role: Role, axis: usize, view: &View) {
        self.members.push(MemberReg {
            slot: view.slot,
            role,
            target: Target::Node(n),
            axis,
            node: n,
        });
    }

    fn views_of(&self, v: Option<ValueId>) -> Vec<View> {
        v.map(|v| self.views[v.index()].clone()).unwrap_or_default()
    }

    // ---- the walk ---------------------------------------------------------------------

    fn visit(&mut self, n: NodeId) {
        let node = self.g.node(n);
        // Defensive: a view that does not fit its value's current type is dropped (and
        // blocked) rather than followed.
        for v in node.inputs().iter().flatten() {
            let Some(dims) = self.dims(*v) else { continue };
            let bad: Vec<View> = self.views[v.index()]
                .iter()
                .filter(|w| {
                    w.axes
                        .iter()
                        .zip(&w.dims)
                        .any(|(&a, &d)| match dims.get(a) {
                            None => true,
                            Some(Dim::Fixed(f)) => *f as usize != d,
                            Some(_) => false,
                        })
                        && w.axes.len() == w.dims.len()
                        || w.axes.len() != w.dims.len()
                })
                .cloned()
                .collect();
            for w in bad {
                let r = self.reason(n, "channel layout does not match the operand type");
                self.block(&w, r);
                self.views[v.index()].retain(|x| *x != w);
            }
        }
        let any_views = node
            .inputs()
            .iter()
            .flatten()
            .any(|v| !self.views[v.index()].is_empty());
        match &node.op {
            Op::Conv(a) => self.conv(n, a.group),
            Op::ConvTranspose(a) => self.conv_transpose(n, a.group),
            Op::MatMul => self.matmul(n),
            Op::Gemm(a) => self.gemm(n, a.trans_a, a.trans_b),
            Op::Gather(a) => self.gather(n, a.axis),
            _ if !any_views => {}
            Op::BatchNormalization(_) => self.channel_norm(n, &[1, 2, 3, 4], None, true),
            Op::InstanceNormalization(_) => self.channel_norm(n, &[1, 2], None, false),
            Op::GroupNormalization(a) => self.channel_norm(n, &[1, 2], Some(a.num_groups), false),
            Op::LayerNormalization(a) => self.layer_norm(n, a.axis),
            Op::Clip | Op::Identity | Op::Dropout(_) | Op::CastLike(_) => self.unary(n),
            op if op.is_unary_elementwise() => self.unary(n),
            op if op.is_broadcast_elementwise() => self.broadcast(n),
            Op::Softmax(a) | Op::LogSoftmax(a) => self.softmax(n, a.axis),
            Op::LpNormalization(a) => self.softmax(n, a.axis),
            Op::Hardmax(a) => self.axis_sensitive(n, a.axis, true),
            Op::ArgMax(a) | Op::ArgMin(a) => self.axis_sensitive(n, a.axis, a.keepdims),
            Op::Transpose(a) => self.transpose(n, a.perm.clone()),
            Op::Reshape(a) => self.reshape(n, a.allowzero),
            Op::Flatten(a) => self.flatten(n, a.axis),
            Op::Squeeze => self.squeeze(n, false),
            Op::Unsqueeze => self.squeeze(n, true),
            Op::Concat(a) => self.concat(n, a.axis),
            Op::Split(a) => self.split(n, a.axis),
            Op::Slice => self.slice(n),
            Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::LpPool(_)
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::GlobalLpPool(_)
            | Op::Resize(_)
            | Op::Pad(_)
            | Op::Expand
            | Op::Tile => self.same_extent(n),
            op if op.reduce_attrs().is_some() => {
                let a = op.reduce_attrs().cloned().unwrap_or_default();
                self.reduce(n, a.keepdims, a.noop_with_empty_axes)
            }
            Op::Attention(a) => self.attention(n, a.q_num_heads, a.kv_num_heads),
            Op::Shape(_) | Op::Size => {}
            _ => self.block_inputs(n, "op not understood by the channel analysis"),
        }
    }

    /// Copies the views of operand 0 to every output of the same rank.
    fn unary(&mut self, n: NodeId) {
        let node = self.g.node(n);
        let x = node.input(0);
        let outs = node.outputs().to_vec();
        let r = x.and_then(|x| self.rank(x));
        for (i, v) in node.inputs().iter().enumerate().skip(1) {
            // Clip bounds etc.: scalars; a tracked one is not understood.
            if let Some(v) = v {
                if !self.views[v.index()].is_empty() && !matches!(node.op, Op::CastLike(_)) {
                    self.block_value(*v, &format!("operand {i} carries channels"), n);
                }
            }
        }
        for view in self.views_of(x) {
            let mut passed = false;
            for &o in &outs {
                if self.rank(o) == r {
                    self.push_view(o, view.clone());
                    passed = true;
                }
            }
            if !passed {
                let r = self.reason(n, "output rank unknown");
                self.block(&view, r);
            }
        }
    }

    /// Elementwise op with multidirectional broadcasting.
    fn broadcast(&mut self, n: NodeId) {
        let node = self.g.node(n);
        let Some(&out) = node.outputs().first() else {
            return self.block_inputs(n, "no output");
        };
        let Some(r_out) = self.rank(out) else {
            return self.block_inputs(n, "output rank unknown");
        };
        let mut parts = Vec::new();
        for (k, v) in node.inputs().iter().enumerate() {
            let Some(v) = *v else { continue };
            let Some(dims) = self.dims(v) else {
                return self.block_inputs(n, "operand rank unknown");
            };
            let r = dims.len();
            if r > r_out {
                return self.block_inputs(n, "operand rank exceeds output rank");
            }
            let off = r_out - r;
            let ext = (0..r_out)
                .map(|a| {
                    if a < off {
                        Ext::Absent
                    } else {
                        match dims[a - off] {
                            Dim::Fixed(e) => Ext::Fixed(e as usize),
                            _ => Ext::Unknown,
                        }
                    }
                })
                .collect();
            let views = self.views[v.index()]
                .iter()
                .map(|w| View {
                    slot: w.slot,
                    axes: w.axes.iter().map(|a| a + off).collect(),
                    dims: w.dims.clone(),
                })
                .collect();
            let const_axes = self
                .is_const(v)
                .then(|| (0..r_out).map(|a| a.checked_sub(off)).collect());
            parts.push(Part {
                operand: k,
                views,
                ext,
                const_axes,
            });
        }
        let outs = self.merge(n, &parts, Role::ChannelParam);
        for o in node.outputs().to_vec() {
            for v in &outs {
                self.push_view(o, v.clone());
            }
        }
    }

    /// Unifies the views of several operands laid over the same output axes, registers
    /// per-channel constants and checks that untracked operands only broadcast along
    /// channel axes. Returns the output views.
    fn merge(&mut self, n: NodeId, parts: &[Part], const_role: Role) -> Vec<View> {
        let all: Vec<(usize, View)> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.views.iter().map(move |v| (i, v.clone())))
            .collect();
        // Cluster views whose axes overlap.
        let mut cl: Vec<usize> = (0..all.len()).collect();
        fn root(cl: &mut [usize], mut i: usize) -> usize {
            while cl[i] != i {
                i = cl[i];
            }
            i
        }
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                if all[i].1.axes.iter().any(|a| all[j].1.axes.contains(a)) {
                    let (a, b) = (root(&mut cl, i), root(&mut cl, j));
                    if a != b {
                        cl[b.max(a)] = a.min(b);
                    }
                }
            }
        }
        let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..all.len() {
            let r = root(&mut cl, i);
            clusters.entry(r).or_default().push(i);
        }
        let mut out = Vec::new();
        for members in clusters.values() {
            let main_i = *members
                .iter()
                .max_by_key(|&&i| (all[i].1.axes.len(), usize::MAX - i))
                .unwrap_or(&members[0]);
            let main = all[main_i].1.clone();
            let mut ok = true;
            for &i in members {
                if i == main_i {
                    continue;
                }
                let v = &all[i].1;
                let map: Vec<Option<usize>> = main
                    .axes
                    .iter()
                    .map(|a| v.axes.iter().position(|b| b == a))
                    .collect();
                let subset = v.axes.iter().all(|a| main.axes.contains(a));
                let dims_ok = main.axes.iter().zip(&main.dims).all(|(a, d)| {
                    match v.axes.iter().position(|b| b == a) {
                        Some(j) => v.dims[j] == *d,
                        None => true,
                    }
                });
                // The smaller view's axes must keep the main view's order.
                let order_ok = map
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .all(|w| w[0] < w[1]);
                if !(subset && dims_ok && order_ok) {
                    ok = false;
                    continue;
                }
                if v.axes == main.axes {
                    self.union_views(&main, v);
                } else {
                    self.union_project(&main, v, &map);
                }
            }
            if !ok {
                let r = self.reason(
                    n,
                    "operands carry channels on overlapping but different axes",
                );
                for &i in members {
                    let v = all[i].1.clone();
                    self.block(&v, r.clone());
                }
            }
            // Every operand must either carry the space, broadcast along it, or be a
            // per-channel constant.
            for (pi, p) in parts.iter().enumerate() {
                let covered: Vec<usize> = members
                    .iter()
                    .filter(|&&i| all[i].0 == pi)
                    .flat_map(|&i| all[i].1.axes.clone())
                    .collect();
                let missing: Vec<(usize, usize)> = main
                    .axes
                    .iter()
                    .zip(&main.dims)
                    .filter(|(a, _)| !covered.contains(a))
                    .map(|(a, d)| (*a, *d))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                let exts: Vec<Ext> = missing.iter().map(|(a, _)| p.ext[*a]).collect();
                let broadcasts = exts
                    .iter()
                    .all(|e| matches!(e, Ext::Absent | Ext::Fixed(1)));
                if broadcasts {
                    continue;
                }
                let full = missing
                    .iter()
                    .zip(&exts)
                    .all(|((_, d), e)| *e == Ext::Fixed(*d));
                match (&p.const_axes, full, covered.is_empty(), main.axes.len()) {
                    (Some(ca), true, true, 1) => {
                        if let Some(axis) = ca[main.axes[0]] {
                            self.const_member(n, p.operand, axis, const_role, &main);
                        }
                    }
                    (Some(_), true, true, _) => {
                        let r = self.reason(
                            n,
                            &format!(
                                "constant operand {} varies over a multi-axis channel space",
                                p.operand
                            ),
                        );
                        self.block(&main, r);
                    }
                    _ => {
                        let r = self.reason(
                            n,
                            &format!(
                                "operand {} spans the channel axis but its channels are not tracked",
                                p.operand
                            ),
                        );
                        self.block(&main, r);
                    }
                }
            }
            out.push(main);
        }
        out
    }

    fn conv(&mut self, n: NodeId, group: i64) {
        let node = self.g.node(n);
        let (x, w, b) = (node.input(0), node.input(1), node.input(2));
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let wt = w.and_then(|w| self.g.constant(w));
        let Some(ws) = wt.map(|t| t.shape().to_vec()).filter(|s| s.len() >= 3) else {
            return self.block_inputs(n, "non-constant convolution weight");
        };
        let g = usize::try_from(group).unwrap_or(0);
        let (m, cg) = (ws[0], ws[1]);
        if g == 0 || m % g != 0 {
            return self.block_inputs(n, "invalid group count");
        }
        let ov = self.open(out, vec![1], vec![m]);
        self.const_member(n, 1, 0, Role::Producer, &ov);
        if let Some(b) = b {
            if self.is_const(b) {
                self.const_member(n, 2, 0, Role::Bias, &ov);
            } else {
                self.block_value(b, "non-constant bias", n);
                let r = self.reason(n, "non-constant bias");
                self.block(&ov, r);
            }
        }
        self.block_value_if(w, n, "weight carries channels");
        let mut input_tracked = false;
        for v in self.views_of(x) {
            if v.axes == [1] {
                input_tracked = true;
                if g == 1 {
                    self.const_member(n, 1, 1, Role::Consumer, &v);
                } else if v.size() == cg * g {
                    let mg = m / g;
                    for c in 0..v.size() {
                        let (a, b) = (self.elem(v.slot, c), self.elem(ov.slot, (c / cg) * mg));
                        self.union(a, b);
                    }
                    for j in 0..m {
                        let (a, b) = (self.elem(ov.slot, j), self.elem(ov.slot, (j / mg) * mg));
                        self.union(a, b);
                    }
                    self.node_member(n, Role::ConvGroups, 1, &ov);
                } else {
                    let r = self.reason(n, "input channels do not match the weight");
                    self.block(&v, r);
                }
            } else if v.axes == [0] {
                self.push_view(out, v);
            } else {
                let r = self.reason(n, "channels on a spatial axis");
                self.block(&v, r);
            }
        }
        if g > 1 && !input_tracked {
            let r = self.reason(
                n,
                "grouped convolution whose input channels are not tracked",
            );
            self.block(&ov, r);
        }
    }

    fn block_value_if(&mut self, v: Option<ValueId>, n: NodeId, why: &str) {
        if let Some(v) = v {
            if !self.views[v.index()].is_empty() {
                self.block_value(v, why, n);
            }
        }
    }

    fn conv_transpose(&mut self, n: NodeId, group: i64) {
        let node = self.g.node(n);
        let (x, w, b) = (node.input(0), node.input(1), node.input(2));
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let Some(ws) = w
            .and_then(|w| self.g.constant(w))
            .map(|t| t.shape().to_vec())
            .filter(|s| s.len() >= 3)
        else {
            return self.block_inputs(n, "non-constant convolution weight");
        };
        let g = usize::try_from(group).unwrap_or(0);
        let m = ws[1] * g;
        let ov = self.open(out, vec![1], vec![m]);
        if g != 1 {
            let r = self.reason(n, "grouped ConvTranspose is not supported");
            self.block(&ov, r);
            return self.block_inputs(n, "grouped ConvTranspose is not supported");
        }
        self.const_member(n, 1, 1, Role::Producer, &ov);
        if let Some(b) = b {
            if self.is_const(b) {
                self.const_member(n, 2, 0, Role::Bias, &ov);
            } else {
                let r = self.reason(n, "non-constant bias");
                self.block(&ov, r);
            }
        }
        self.block_value_if(w, n, "weight carries channels");
        for v in self.views_of(x) {
            if v.axes == [1] {
                self.const_member(n, 1, 0, Role::Consumer, &v);
            } else if v.axes == [0] {
                self.push_view(out, v);
            } else {
                let r = self.reason(n, "channels on a spatial axis");
                self.block(&v, r);
            }
        }
    }

    fn matmul(&mut self, n: NodeId) {
        let node = self.g.node(n);
        let (Some(a), Some(b), Some(&out)) = (node.input(0), node.input(1), node.outputs().first())
        else {
            return self.block_inputs(n, "missing operand");
        };
        let (Some(ra), Some(rb), Some(ro)) = (self.rank(a), self.rank(b), self.rank(out)) else {
            return self.block_inputs(n, "operand rank unknown");
        };
        if ro < ra || ro < rb {
            return self.block_inputs(n, "output rank below operand rank");
        }
        let (ca, cb) = (self.is_const(a), self.is_const(b));
        if cb && !ca && rb == 2 {
            // x[..., K] · W[K, N]
            let nn = self.g.constant(b).map(|t| t.shape()[1]).unwrap_or(0);
            let ov = self.open(out, vec![ro.saturating_sub(1)], vec![nn]);
            self.const_member(n, 1, 1, Role::Producer, &ov);
            for v in self.views_of(Some(a)) {
                if v.axes == [ra - 1] {
                    self.const_member(n, 1, 0, Role::Consumer, &v);
                } else if ra >= 2 && ro == ra && v.axes.iter().all(|&x| x < ra - 1) {
                    self.push_view(out, v);
                } else {
                    let r = self.reason(n, "channels split across the contracted axis");
                    self.block(&v, r);
                }
            }
            return;
        }
        if ca && !cb && ra == 2 && rb >= 2 && ro >= 2 {
            // W[M, K] · x[..., K, N]
            let mm = self.g.constant(a).map(|t| t.shape()[0]).unwrap_or(0);
            let ov = self.open(out, vec![ro - 2], vec![mm]);
            self.const_member(n, 0, 0, Role::Producer, &ov);
            for v in self.views_of(Some(b)) {
                if v.axes == [rb - 2] {
                    self.const_member(n, 0, 1, Role::Consumer, &v);
                } else if !v.axes.contains(&(rb - 2)) {
                    let off = ro - rb;
                    let mapped = View {
                        slot: v.slot,
                        axes: v.axes.iter().map(|x| x + off).collect(),
                        dims: v.dims.clone(),
                    };
                    self.push_view(out, mapped);
                } else {
                    let r = self.reason(n, "channels split across the contracted axis");
                    self.block(&v, r);
                }
            }
            return;
        }
        if ra < 2 || rb < 2 || ro < 2 {
            return self.block_inputs(n, "vector MatMul with tracked channels");
        }
        // General batched product: A[..., M, K] · B[..., K, N].
        const K: usize = usize::MAX;
        let map_a = |i: usize| {
            if i + 2 < ra {
                i + ro - ra
            } else if i + 2 == ra {
                ro - 2
            } else {
                K
            }
        };
        let map_b = |i: usize| {
            if i + 2 < rb {
                i + ro - rb
            } else if i + 2 == rb {
                K
            } else {
                ro - 1
            }
        };
        let va = self.views_of(Some(a));
        let vb = self.views_of(Some(b));
        let mapped = |v: &View, f: &dyn Fn(usize) -> usize| View {
            slot: v.slot,
            axes: v.axes.iter().map(|&x| f(x)).collect(),
            dims: v.dims.clone(),
        };
        let mut pa: Vec<View> = Vec::new();
        let mut pb: Vec<View> = Vec::new();
        let mut used_b = vec![false; vb.len()];
        for v in &va {
            let m = mapped(v, &map_a);
            if !m.axes.contains(&K) {
                pa.push(m);
                continue;
            }
            // Find the B view with the same structure over (batch axes, K).
            let partner = vb.iter().enumerate().find(|(j, w)| {
                !used_b[*j] && {
                    let mw = mapped(w, &map_b);
                    mw.axes == m.axes && mw.dims == m.dims
                }
            });
            let Some((j, w)) = partner else {
                let r = self.reason(n, "contracted channel axis meets an untracked operand");
                self.block(v, r);
                continue;
            };
            used_b[j] = true;
            let w = w.clone();
            self.union_views(v, &w);
            // The remaining (batch) axes of the pair carry a projected space.
            let keep: Vec<usize> = (0..m.axes.len()).filter(|&i| m.axes[i] != K).collect();
            if !keep.is_empty() {
                let axes: Vec<usize> = keep.iter().map(|&i| m.axes[i]).collect();
                let dims: Vec<usize> = keep.iter().map(|&i| m.dims[i]).collect();
                let slot = self.new_slot(dims.iter().product());
                let p = View { slot, axes, dims };
                let mut map = vec![None; m.axes.len()];
                for (j, &i) in keep.iter().enumerate() {
                    map[i] = Some(j);
                }
                self.union_project(v, &p, &map);
                pa.push(p.clone());
                pb.push(p);
            }
        }
        for (j, w) in vb.iter().enumerate() {
            if used_b[j] {
                continue;
            }
            let m = mapped(w, &map_b);
            if m.axes.contains(&K) {
                let r = self.reason(n, "contracted channel axis meets an untracked operand");
                self.block(w, r);
            } else {
                pb.push(m);
            }
        }
        let ext_of = |d: &Dim| match d {
            Dim::Fixed(e) => Ext::Fixed(*e as usize),
            _ => Ext::Unknown,
        };
        let da = self.dims(a).unwrap_or_default();
        let db = self.dims(b).unwrap_or_default();
        let mut ea = vec![Ext::Absent; ro];
        let mut eb = vec![Ext::Absent; ro];
        for (i, d) in da.iter().enumerate() {
            let o = map_a(i);
            if o != K {
                ea[o] = ext_of(d);
            }
        }
        for (i, d) in db.iter().enumerate() {
            let o = map_b(i);
            if o != K {
                eb[o] = ext_of(d);
            }
        }
        let parts = [
            Part {
                operand: 0,
                views: pa,
                ext: ea,
                const_axes: None,
            },
            Part {
                operand: 1,
                views: pb,
                ext: eb,
                const_axes: None,
            },
        ];
        for v in self.merge(n, &parts, Role::ChannelParam) {
            self.push_view(out, v);
        }
    }

    /// Attention (opset 23). 4-D: Q `[B,H,S,D]`, K `[B,H,L,D]`, V `[B,H,L,Dv]` carry a
    /// head-major view over axes `[1, 3]`; 3-D: `[B, S, H·D]` a flat view over axis 2.
    /// Q and K columns are contracted (unioned position by position), every head of Q, K
    /// and V is one unit, and Y carries V's space.
    fn attention(&mut self, n: NodeId, qh: Option<i64>, kvh: Option<i64>) {
        let node = self.g.node(n);
        let (Some(q), Some(k), Some(v), Some(&y)) = (
            node.input(0),
            node.input(1),
            node.input(2),
            node.outputs().first(),
        ) else {
            return self.block_inputs(n, "missing operand");
        };
        let fail = |b: &mut Self, why: &str| {
            let r = b.reason(n, why);
            for x in [q, k, v] {
                for view in b.views[x.index()].clone() {
                    b.block(&view, r.clone());
                }
            }
        };
        // KV cache, a mask varying per head or extra used outputs are not supported.
        if (4..node.inputs().len()).any(|i| node.input(i).is_some())
            || node.outputs()[1..]
                .iter()
                .any(|&o| !self.g.uses(o).is_empty())
        {
            return fail(self, "Attention with a KV cache or extra outputs");
        }
        self.block_value_if(node.input(3), n, "mask carries channels");
        let Some(r) = self.rank(q) else {
            return fail(self, "rank unknown");
        };
        let (vq, vk, vv) = (
            self.views_of(Some(q)),
            self.views_of(Some(k)),
            self.views_of(Some(v)),
        );
        let pick = |vs: &[View], axes: &[usize]| -> Option<View> {
            match vs {
                [one] if one.axes == axes => Some(one.clone()),
                _ => None,
            }
        };
        let (heads, qv, kv, vvw) = if r == 4 {
            if let Some(mask) = node.input(3) {
                let per_head = self
                    .dims(mask)
                    .filter(|d| d.len() == 4)
                    .map(|d| d[1] != Dim::Fixed(1))
                    .unwrap_or(false);
                if per_head {
                    return fail(self, "mask varies per head");
                }
            }
            let (Some(a), Some(b), Some(c)) =
                (pick(&vq, &[1, 3]), pick(&vk, &[1, 3]), pick(&vv, &[1, 3]))
            else {
                if vq.is_empty() && vk.is_empty() && vv.is_empty() {
                    return;
                }
                return fail(self, "heads of Q, K and V are not all tracked");
            };
            if a.dims != b.dims || a.dims[0] != c.dims[0] {
                return fail(self, "Q, K and V head counts differ");
            }
            (a.dims[0], a, b, c)
        } else {
            let (Some(a), Some(b), Some(c)) = (pick(&vq, &[2]), pick(&vk, &[2]), pick(&vv, &[2]))
            else {
                if vq.is_empty() && vk.is_empty() && vv.is_empty() {
                    return;
                }
                return fail(self, "heads of Q, K and V are not all tracked");
            };
            let h = match (qh, kvh) {
                (Some(x), Some(y)) if x == y && x > 0 => x as usize,
                _ => return fail(self, "query and key/value head counts differ"),
            };
            if a.dims != b.dims || a.size() % h != 0 || c.size() % h != 0 {
                return fail(self, "head sizes inconsistent");
            }
            let split = |w: &View| View {
                slot: w.slot,
                axes: vec![0, 1],
                dims: vec![h, w.size() / h],
            };
            (h, split(&a), split(&b), split(&c))
        };
        self.union_views(&qv, &kv);
        let hs = self.new_slot(heads);
        let head = View {
            slot: hs,
            axes: vec![0],
            dims: vec![heads],
        };
        self.union_project(&qv, &head, &[Some(0), None]);
        self.union_project(&vvw, &head, &[Some(0), None]);
        self.node_member(n, Role::Heads, if r == 4 { 1 } else { 2 }, &qv);
        let out = if r == 4 {
            vvw
        } else {
            View {
                slot: vvw.slot,
                axes: vec![2],
                dims: vec![vvw.size()],
            }
        };
        self.push_view(y, out);
    }

    fn gemm(&mut self, n: NodeId, ta: bool, tb: bool) {
        let node = self.g.node(n);
        let (Some(a), Some(b), Some(&out)) = (node.input(0), node.input(1), node.outputs().first())
        else {
            return self.block_inputs(n, "missing operand");
        };
        let c = node.input(2);
        let bs = self.g.constant(b).map(|t| t.shape().to_vec());
        match bs {
            Some(bs) if bs.len() == 2 && !self.is_const(a) => {
                let (kb, nb) = if tb { (1, 0) } else { (0, 1) };
                let ov = self.open(out, vec![1], vec![bs[nb]]);
                self.const_member(n, 1, nb, Role::Producer, &ov);
                if let Some(c) = c {
                    match self.g.constant(c).map(|t| t.shape().to_vec()) {
                        Some(cs) if cs.last().copied().unwrap_or(1) == 1 => {}
                        Some(cs) => self.const_member(n, 2, cs.len() - 1, Role::Bias, &ov),
                        None => {
                            let r = self.reason(n, "non-constant bias");
                            self.block(&ov, r);
                        }
                    }
                }
                let (ka, ma) = if ta { (0, 1) } else { (1, 0) };
                for v in self.views_of(Some(a)) {
                    if v.axes == [ka] {
                        self.const_member(n, 1, kb, Role::Consumer, &v);
                    } else if v.axes == [ma] {
                        let mv = View {
                            slot: v.slot,
                            axes: vec![0],
                            dims: v.dims.clone(),
                        };
                        self.push_view(out, mv);
                    } else {
                        let r = self.reason(n, "unexpected channel axes");
                        self.block(&v, r);
                    }
                }
            }
            _ => self.block_inputs(n, "Gemm without a constant 2-D weight B"),
        }
    }

    fn gather(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let (Some(data), Some(idx), Some(&out)) =
            (node.input(0), node.input(1), node.outputs().first())
        else {
            return self.block_inputs(n, "missing operand");
        };
        let (Some(rd), Some(ri)) = (self.rank(data), self.rank(idx)) else {
            return self.block_inputs(n, "operand rank unknown");
        };
        let Some(ax) = normalize_axis(axis, rd) else {
            return self.block_inputs(n, "invalid axis");
        };
        self.block_value_if(Some(idx), n, "indices carry channels");
        if let Some(t) = self.g.constant(data) {
            if rd == 2 && ax == 0 && !self.is_const(idx) {
                // Embedding lookup: the table's axis 1 is the output's last axis.
                let d = t.shape()[1];
                let ov = self.open(out, vec![ri], vec![d]);
                self.const_member(n, 0, 1, Role::Producer, &ov);
            }
            return;
        }
        for v in self.views_of(Some(data)) {
            if v.axes.contains(&ax) {
                let r = self.reason(n, "gathers along the channel axis");
                self.block(&v, r);
            } else {
                let mv = View {
                    slot: v.slot,
                    axes: v
                        .axes
                        .iter()
                        .map(|&a| if a < ax { a } else { a + ri - 1 })
                        .collect(),
                    dims: v.dims.clone(),
                };
                self.push_view(out, mv);
            }
        }
    }

    /// BatchNorm / InstanceNorm / GroupNorm: per-channel parameters along axis 1.
    fn channel_norm(&mut self, n: NodeId, params: &[usize], groups: Option<i64>, any_axis: bool) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        for (i, v) in node.inputs().iter().enumerate().skip(1) {
            if let Some(v) = v {
                if !self.views[v.index()].is_empty() {
                    self.block_value(*v, &format!("parameter {i} carries channels"), n);
                }
            }
        }
        for v in self.views_of(x) {
            if v.axes == [1] {
                for &p in params {
                    if node.input(p).is_some() {
                        self.const_member(n, p, 0, Role::ChannelParam, &v);
                    }
                }
                if let Some(ng) = groups {
                    let c = v.size();
                    let ng = usize::try_from(ng).unwrap_or(0);
                    if ng == 0 || c % ng != 0 {
                        let r = self.reason(n, "channel count not divisible by num_groups");
                        self.block(&v, r);
                    } else {
                        let cg = c / ng;
                        for j in 0..c {
                            let (a, b) = (self.elem(v.slot, j), self.elem(v.slot, (j / cg) * cg));
                            self.union(a, b);
                        }
                        self.node_member(n, Role::NormGroups, 1, &v);
                    }
                }
                self.push_view(out, v);
            } else if any_axis || v.axes == [0] {
                self.push_view(out, v);
            } else {
                let r = self.reason(n, "channels on an axis the statistics run over");
                self.block(&v, r);
            }
        }
    }

    fn layer_norm(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let Some(a) = normalize_axis(axis, r) else {
            return self.block_inputs(n, "invalid axis");
        };
        for i in 1..node.inputs().len() {
            self.block_value_if(node.input(i), n, "parameter carries channels");
        }
        for v in self.views_of(x) {
            if v.axes.iter().all(|&x| x < a) {
                self.push_view(out, v);
                continue;
            }
            if !v.axes.iter().all(|&x| x >= a) {
                let r = self.reason(n, "channel axes straddle the normalized axes");
                self.block(&v, r);
                continue;
            }
            self.node_member(n, Role::Reduction, v.axes[0], &v);
            for p in [1usize, 2] {
                let Some(pv) = node.input(p) else { continue };
                let Some(pd) = self.dims(pv) else { continue };
                let off = r as isize - pd.len() as isize;
                let exts: Vec<Option<u64>> = v
                    .axes
                    .iter()
                    .map(|&ax| {
                        let i = ax as isize - off;
                        if i < 0 {
                            Some(1)
                        } else {
                            pd.get(i as usize).and_then(|d| d.fixed())
                        }
                    })
                    .collect();
                if exts.iter().all(|e| *e == Some(1)) {
                    continue;
                }
                if v.axes.len() == 1 && exts[0] == Some(v.size() as u64) && self.is_const(pv) {
                    let pa = (v.axes[0] as isize - off) as usize;
                    self.const_member(n, p, pa, Role::NormParam, &v);
                } else {
                    let r = self.reason(n, "scale/bias layout not understood");
                    self.block(&v, r);
                }
            }
            self.push_view(out, v);
        }
    }

    fn softmax(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let a = normalize_axis(axis, r);
        for v in self.views_of(x) {
            if let Some(a) = a {
                if v.axes.contains(&a) {
                    self.node_member(n, Role::Reduction, a, &v);
                }
            }
        }
        self.unary(n);
    }

    /// Ops that must not run along a channel axis (ArgMax, Hardmax, ...); other axes pass
    /// (shifted when the axis is dropped).
    fn axis_sensitive(&mut self, n: NodeId, axis: i64, keepdims: bool) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let Some(a) = normalize_axis(axis, r) else {
            return self.block_inputs(n, "invalid axis");
        };
        let outs = node.outputs().to_vec();
        for v in self.views_of(x) {
            if v.axes.contains(&a) {
                let r = self.reason(n, "selects along the channel axis");
                self.block(&v, r);
                continue;
            }
            let mv = View {
                slot: v.slot,
                axes: v
                    .axes
                    .iter()
                    .map(|&x| if keepdims || x < a { x } else { x - 1 })
                    .collect(),
                dims: v.dims.clone(),
            };
            for &o in &outs {
                self.push_view(o, mv.clone());
            }
        }
    }

    fn transpose(&mut self, n: NodeId, perm: Option<Vec<i64>>) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let perm: Vec<usize> = match perm {
            Some(p) => match p
                .iter()
                .map(|&a| normalize_axis(a, r))
                .collect::<Option<Vec<_>>>()
            {
                Some(p) if p.len() == r => p,
                _ => return self.block_inputs(n, "invalid perm"),
            },
            None => (0..r).rev().collect(),
        };
        let mut inv = vec![0usize; r];
        for (j, &p) in perm.iter().enumerate() {
            inv[p] = j;
        }
        for v in self.views_of(x) {
            let mv = View {
                slot: v.slot,
                axes: v.axes.iter().map(|&a| inv[a]).collect(),
                dims: v.dims.clone(),
            };
            self.push_view(out, mv);
        }
    }

    fn reshape(&mut self, n: NodeId, allowzero: bool) {
        let node = self.g.node(n);
        let (Some(x), Some(&out)) = (node.input(0), node.outputs().first()) else {
            return self.block_inputs(n, "missing operand");
        };
        self.block_value_if(node.input(1), n, "shape operand carries channels");
        let views = self.views_of(Some(x));
        if views.is_empty() {
            return;
        }
        let (Some(ind), Some(outd)) = (
            input_dims(self.g, x),
            reshape_out_dims(self.g, x, node.input(1), out, allowzero),
        ) else {
            return self.block_value(x, "shapes unknown", n);
        };
        for v in views {
            match self.reshape_view(&v, &ind, &outd) {
                Some(Mapping::Exact(axes, dims)) => {
                    let mv = View {
                        slot: v.slot,
                        axes,
                        dims,
                    };
                    self.node_member(n, Role::Reshape, v.axes[0], &v);
                    self.push_view(out, mv);
                }
                Some(Mapping::MergeRight(axis, inner)) => {
                    let c = v.size();
                    let ov = self.open(out, vec![axis], vec![c * inner]);
                    for ch in 0..c {
                        for i in 0..inner {
                            let (a, b) =
                                (self.elem(v.slot, ch), self.elem(ov.slot, ch * inner + i));
                            self.union(a, b);
                        }
                    }
                    self.node_member(n, Role::Reshape, v.axes[0], &v);
                }
                None => {
                    let r = self.reason(n, "reshape mixes the channel axis with other axes");
                    self.block(&v, r);
                }
            }
        }
    }

    fn reshape_view(&self, v: &View, ind: &[SDim], outd: &[SDim]) -> Option<Mapping> {
        let s = *v.axes.first()?;
        let e = s + v.axes.len();
        if v.axes.iter().enumerate().any(|(i, &a)| a != s + i) || e > ind.len() {
            return None;
        }
        let c = v.size();
        let (in_pre, in_suf) = (&ind[..s], &ind[e..]);
        for p in 0..outd.len() {
            if outd[p] == SDim::Fixed(1) && c != 1 {
                continue;
            }
            let mut prod = 1usize;
            let mut q = p;
            while q < outd.len() && prod < c {
                match outd[q] {
                    SDim::Fixed(d) if d > 0 => prod *= d,
                    _ => break,
                }
                q += 1;
            }
            if prod == c && q > p && sides_match(in_pre, &outd[..p], in_suf, &outd[q..]) {
                let dims = outd[p..q]
                    .iter()
                    .map(|d| match d {
                        SDim::Fixed(x) => *x,
                        _ => 0,
                    })
                    .collect();
                return Some(Mapping::Exact((p..q).collect(), dims));
            }
        }
        // The channel block merged with everything after it into one axis (any axes after
        // it in the output are 1, so the prefix products are forced equal).
        let inner: Option<usize> = in_suf
            .iter()
            .map(|d| match d {
                SDim::Fixed(x) => Some(*x),
                _ => None,
            })
            .product();
        let inner = inner?;
        if inner <= 1 {
            return None;
        }
        (0..outd.len()).find_map(|p| {
            (outd[p] == SDim::Fixed(c * inner)
                && outd[p + 1..].iter().all(|d| *d == SDim::Fixed(1)))
            .then_some(Mapping::MergeRight(p, inner))
        })
    }

    fn flatten(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let (Some(x), Some(&out)) = (node.input(0), node.outputs().first()) else {
            return;
        };
        let Some(dims) = self.dims(x) else {
            return self.block_inputs(n, "rank unknown");
        };
        let r = dims.len();
        let f = if axis < 0 { axis + r as i64 } else { axis };
        if f < 0 || f > r as i64 {
            return self.block_inputs(n, "invalid axis");
        }
        let f = f as usize;
        let fixed = |range: std::ops::Range<usize>| -> Option<usize> {
            dims[range]
                .iter()
                .map(|d| d.fixed().map(|x| x as usize))
                .product()
        };
        for v in self.views_of(Some(x)) {
            let s = v.axes[0];
            let e = s + v.axes.len();
            let contiguous = v.axes.iter().enumerate().all(|(i, &a)| a == s + i);
            let (part, outer, inner) = if e <= f {
                (0, fixed(0..s), fixed(e..f))
            } else if s >= f {
                (1, fixed(f..s), fixed(e..r))
            } else {
                (0, None, None)
            };
            match (contiguous, outer, inner) {
                (true, Some(1), Some(1)) => {
                    let c = v.size();
                    self.push_view(
                        out,
                        View {
                            slot: v.slot,
                            axes: vec![part],
                            dims: vec![c],
                        },
                    );
                }
                (true, Some(1), Some(inner)) => {
                    let c = v.size();
                    let ov = self.open(out, vec![part], vec![c * inner]);
                    for ch in 0..c {
                        for i in 0..inner {
                            let (a, b) =
                                (self.elem(v.slot, ch), self.elem(ov.slot, ch * inner + i));
                            self.union(a, b);
                        }
                    }
                }
                _ => {
                    let r = self.reason(n, "flattens the channel axis with leading axes");
                    self.block(&v, r);
                }
            }
        }
    }

    fn squeeze(&mut self, n: NodeId, unsqueeze: bool) {
        let node = self.g.node(n);
        let (Some(x), Some(&out)) = (node.input(0), node.outputs().first()) else {
            return;
        };
        let (Some(rin), Some(rout)) = (self.rank(x), self.rank(out)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let axes = node
            .input(1)
            .and_then(|a| self.g.constant(a))
            .and_then(|t| t.to_i64_vec());
        // Map input axis -> output axis.
        let map: Option<Vec<Option<usize>>> = if unsqueeze {
            axes.and_then(|ax| {
                let ax: Option<Vec<usize>> = ax.iter().map(|&a| normalize_axis(a, rout)).collect();
                let ax = ax?;
                let kept: Vec<usize> = (0..rout).filter(|a| !ax.contains(a)).collect();
                (kept.len() == rin).then(|| kept.into_iter().map(Some).collect())
            })
        } else {
            let squeezed: Option<Vec<usize>> = match axes {
                Some(ax) => ax.iter().map(|&a| normalize_axis(a, rin)).collect(),
                None => self.dims(x).and_then(|d| {
                    if d.iter().any(|d| d.fixed().is_none()) {
                        None
                    } else {
                        Some((0..rin).filter(|&i| d[i] == Dim::Fixed(1)).collect())
                    }
                }),
            };
            squeezed.map(|sq| {
                let mut j = 0;
                (0..rin)
                    .map(|i| {
                        if sq.contains(&i) {
                            None
                        } else {
                            j += 1;
                            Some(j - 1)
                        }
                    })
                    .collect()
            })
        };
        let Some(map) = map else {
            return self.block_value(x, "axes not constant", n);
        };
        for v in self.views_of(Some(x)) {
            let axes: Option<Vec<usize>> = v
                .axes
                .iter()
                .map(|&a| map.get(a).copied().flatten())
                .collect();
            match axes {
                Some(axes) => self.push_view(
                    out,
                    View {
                        slot: v.slot,
                        axes,
                        dims: v.dims.clone(),
                    },
                ),
                None => {
                    let r = self.reason(n, "squeezes a channel axis");
                    self.block(&v, r);
                }
            }
        }
    }

    fn concat(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let Some(r) = self.rank(out) else {
            return self.block_inputs(n, "rank unknown");
        };
        let Some(a) = normalize_axis(axis, r) else {
            return self.block_inputs(n, "invalid axis");
        };
        let ins: Vec<Option<ValueId>> = node.inputs().to_vec();
        let mut lens = Vec::new();
        for v in &ins {
            match v.and_then(|v| self.fixed_dim(v, a)) {
                Some(l) => lens.push(l),
                None => return self.block_inputs(n, "concat extents unknown"),
            }
        }
        let total: usize = lens.iter().sum();
        let on_axis = ins
            .iter()
            .flatten()
            .any(|v| self.views[v.index()].iter().any(|w| w.axes.contains(&a)));
        let ov = on_axis.then(|| self.open(out, vec![a], vec![total]));
        let mut parts = Vec::new();
        let mut off = 0;
        for (k, v) in ins.iter().enumerate() {
            let Some(v) = *v else { continue };
            let mut tracked = false;
            let mut others = Vec::new();
            for w in self.views[v.index()].clone() {
                if w.axes == [a] {
                    tracked = true;
                    if let Some(ov) = &ov {
                        for c in 0..lens[k] {
                            let (x, y) = (self.elem(w.slot, c), self.elem(ov.slot, off + c));
                            self.union(x, y);
                        }
                    }
                } else if w.axes.contains(&a) {
                    let r = self.reason(n, "multi-axis channel space along the concat axis");
                    self.block(&w, r);
                } else {
                    others.push(w);
                }
            }
            if let (Some(ov), false) = (&ov, tracked) {
                let name = self.g.value(v).name.clone();
                let r = self.reason(n, &format!("channels from untracked input '{name}'"));
                self.blocked.push((ov.slot, off, off + lens[k], r));
            }
            let ext = match self.dims(v) {
                Some(d) => d
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match (i == a, d) {
                        (true, _) => Ext::Absent,
                        (_, Dim::Fixed(e)) => Ext::Fixed(*e as usize),
                        _ => Ext::Unknown,
                    })
                    .collect(),
                None => vec![Ext::Unknown; r],
            };
            parts.push(Part {
                operand: k,
                views: others,
                ext,
                const_axes: None,
            });
            off += lens[k];
        }
        for v in self.merge(n, &parts, Role::ChannelParam) {
            self.push_view(out, v);
        }
    }

    fn split(&mut self, n: NodeId, axis: i64) {
        let node = self.g.node(n);
        let x = node.input(0);
        let outs = node.outputs().to_vec();
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let Some(a) = normalize_axis(axis, r) else {
            return self.block_inputs(n, "invalid axis");
        };
        let lens: Option<Vec<usize>> = outs.iter().map(|&o| self.fixed_dim(o, a)).collect();
        for v in self.views_of(x) {
            if v.axes == [a] {
                let Some(lens) = &lens else {
                    let r = self.reason(n, "split sizes unknown");
                    self.block(&v, r);
                    continue;
                };
                if lens.iter().sum::<usize>() != v.size() {
                    let r = self.reason(n, "split sizes do not add up");
                    self.block(&v, r);
                    continue;
                }
                self.node_member(n, Role::Split, a, &v);
                let mut off = 0;
                for (&o, &l) in outs.iter().zip(lens) {
                    let ov = self.open(o, vec![a], vec![l]);
                    for c in 0..l {
                        let (p, q) = (self.elem(v.slot, off + c), self.elem(ov.slot, c));
                        self.union(p, q);
                    }
                    off += l;
                }
            } else if !v.axes.contains(&a) {
                for &o in &outs {
                    self.push_view(o, v.clone());
                }
            } else {
                let r = self.reason(n, "splits a multi-axis channel space");
                self.block(&v, r);
            }
        }
    }

    fn slice(&mut self, n: NodeId) {
        let node = self.g.node(n);
        let (Some(x), Some(&out)) = (node.input(0), node.outputs().first()) else {
            return;
        };
        let ints = |i: usize| {
            node.input(i)
                .and_then(|v| self.g.constant(v))
                .and_then(|t| t.to_i64_vec())
        };
        let Some(r) = self.rank(x) else {
            return self.block_inputs(n, "rank unknown");
        };
        let (Some(starts), Some(_ends)) = (ints(1), ints(2)) else {
            return self.block_value(x, "slice bounds not constant", n);
        };
        let axes: Option<Vec<usize>> = match node.input(3) {
            None => Some((0..starts.len()).collect()),
            Some(_) => ints(3).and_then(|a| a.iter().map(|&a| normalize_axis(a, r)).collect()),
        };
        let steps = match node.input(4) {
            None => Some(vec![1; starts.len()]),
            Some(_) => ints(4),
        };
        let (Some(axes), Some(steps)) = (axes, steps) else {
            return self.block_value(x, "slice axes/steps not constant", n);
        };
        for v in self.views_of(Some(x)) {
            let hit: Vec<usize> = (0..axes.len())
                .filter(|&i| v.axes.contains(&axes[i]))
                .collect();
            if hit.is_empty() {
                self.push_view(out, v);
                continue;
            }
            let i = hit[0];
            let a = axes[i];
            let dim = v.size() as i64;
            let len = self.fixed_dim(out, a);
            if v.axes != [a] {
                let r = self.reason(
                    n,
                    "slices one axis of a multi-axis channel space (e.g. a fused QKV projection)",
                );
                self.block(&v, r);
                continue;
            }
            if hit.len() != 1 || steps.get(i) != Some(&1) || len.is_none() {
                let r = self.reason(n, "slice along the channel axis not understood");
                self.block(&v, r);
                continue;
            }
            let mut s = starts[i];
            if s < 0 {
                s += dim;
            }
            let s = s.clamp(0, dim) as usize;
            let len = len.unwrap_or(0);
            if s + len > v.size() {
                let r = self.reason(n, "slice bounds inconsistent with the output type");
                self.block(&v, r);
                continue;
            }
            self.node_member(n, Role::Slice, a, &v);
            let ov = self.open(out, vec![a], vec![len]);
            for c in 0..len {
                let (p, q) = (self.elem(v.slot, s + c), self.elem(ov.slot, c));
                self.union(p, q);
            }
        }
    }

    /// Pools, Resize, Pad, Expand, Tile: a channel axis passes when its extent is
    /// unchanged (those ops then act as the identity along it).
    fn same_extent(&mut self, n: NodeId) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        for i in 1..node.inputs().len() {
            self.block_value_if(node.input(i), n, "operand carries channels");
        }
        // Pad: a channel axis must not be padded (negative pads crop, and a +1/-1 pair
        // would shift the channels without changing the extent). Resize: crop-and-resize
        // reads a region of interest along every axis.
        let r = x.and_then(|x| self.rank(x)).unwrap_or(0);
        let untouched: Option<Vec<bool>> = match &node.op {
            Op::Pad(_) => {
                let pads = node
                    .input(1)
                    .and_then(|p| self.g.constant(p))
                    .and_then(|t| t.to_i64_vec());
                let axes: Option<Vec<usize>> = match node.input(3) {
                    None => Some((0..r).collect()),
                    Some(a) => self
                        .g
                        .constant(a)
                        .and_then(|t| t.to_i64_vec())
                        .and_then(|a| a.iter().map(|&x| normalize_axis(x, r)).collect()),
                };
                match (pads, axes) {
                    (Some(p), Some(ax)) if p.len() == 2 * ax.len() => {
                        let mut ok = vec![true; r];
                        for (i, &a) in ax.iter().enumerate() {
                            ok[a] = p[i] == 0 && p[i + ax.len()] == 0;
                        }
                        Some(ok)
                    }
                    _ => None,
                }
            }
            Op::Resize(a) if a.coordinate_transformation_mode == "tf_crop_and_resize" => None,
            _ => Some(vec![true; r]),
        };
        for v in self.views_of(x) {
            let same = v.axes.iter().zip(&v.dims).all(|(&a, &d)| {
                self.fixed_dim(out, a) == Some(d)
                    && untouched.as_ref().is_some_and(|u| u.get(a) == Some(&true))
            });
            if same {
                self.push_view(out, v);
            } else {
                let r = self.reason(n, "changes the extent of the channel axis");
                self.block(&v, r);
            }
        }
    }

    fn reduce(&mut self, n: NodeId, keepdims: bool, noop_empty: bool) {
        let node = self.g.node(n);
        let x = node.input(0);
        let Some(&out) = node.outputs().first() else {
            return;
        };
        let Some(r) = x.and_then(|x| self.rank(x)) else {
            return self.block_inputs(n, "rank unknown");
        };
        let axes: Option<Vec<usize>> = match node.input(1) {
            None if noop_empty => return self.unary(n),
            None => Some((0..r).collect()),
            Some(a) => self
                .g
                .constant(a)
                .and_then(|t| t.to_i64_vec())
                .and_then(|ax| {
                    if ax.is_empty() {
                        Some(if noop_empty { vec![] } else { (0..r).collect() })
                    } else {
                        ax.iter().map(|&a| normalize_axis(a, r)).collect()
                    }
                }),
        };
        let Some(axes) = axes else {
            return self.block_inputs(n, "reduction axes not constant");
        };
        for v in self.views_of(x) {
            let red = v.axes.iter().filter(|a| axes.contains(a)).count();
            if red == 0 {
                let mv = View {
                    slot: v.slot,
                    axes: v
                        .axes
                        .iter()
                        .map(|&a| {
                            if keepdims {
                                a
                            } else {
                                a - axes.iter().filter(|&&b| b < a).count()
                            }
                        })
                        .collect(),
                    dims: v.dims.clone(),
                };
                self.push_view(out, mv);
            } else if red == v.axes.len() {
                self.node_member(n, Role::Reduction, v.axes[0], &v);
            } else {
                let r = self.reason(n, "reduces part of a multi-axis channel space");
                self.block(&v, r);
            }
        }
    }
}

enum Mapping {
    Exact(Vec<usize>, Vec<usize>),
    MergeRight(usize, usize),
}

/// Runs the walk and builds the groups.
pub(super) fn build(g: &Graph) -> Result<Vec<Group>, String> {
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let mut b = Builder::new(g);
    for &n in &order {
        b.visit(n);
    }
    // Graph outputs cannot change shape.
    for &o in g.outputs() {
        let name = g.value(o).name.clone();
        for v in b.views[o.index()].clone() {
            b.block(&v, format!("reaches graph output '{name}'"));
        }
    }
    // A member constant read by anything not registered would change for that reader.
    let mut const_slot_list: Vec<((ValueId, usize), SlotId)> =
        b.const_slots.iter().map(|(k, v)| (*k, *v)).collect();
    const_slot_list.sort();
    for ((c, _), slot) in const_slot_list {
        let registered = b.const_uses.get(&c).map(|s| s.len()).unwrap_or(0);
        if registered < g.uses(c).len() {
            let size = b.slots[slot as usize].size as usize;
            let why = format!(
                "constant '{}' is also read by nodes outside the channel space",
                g.value(c).name
            );
            b.blocked.push((slot, 0, size, why));
        }
    }
    Ok(b.into_groups())
}

/// A group in the making: signature (slot, positions per unit), class roots, extra reason.
type Run = (Vec<(SlotId, usize)>, Vec<u32>, Option<String>);

struct ClassInfo {
    /// (slot, positions) in slot order.
    slots: Vec<(SlotId, Vec<u32>)>,
    reasons: Vec<usize>,
}

impl<'g> Builder<'g> {
    fn into_groups(mut self) -> Vec<Group> {
        // Classes: root -> positions per slot.
        let mut classes: HashMap<u32, ClassInfo> = HashMap::new();
        let mut class_order: Vec<u32> = Vec::new();
        for s in 0..self.slots.len() {
            let Slot { base, size } = self.slots[s].clone();
            for p in 0..size {
                let r = self.find(base + p);
                let ci = classes.entry(r).or_insert_with(|| {
                    class_order.push(r);
                    ClassInfo {
                        slots: Vec::new(),
                        reasons: Vec::new(),
                    }
                });
                match ci.slots.last_mut() {
                    Some((ls, ps)) if *ls == s as SlotId => ps.push(p),
                    _ => ci.slots.push((s as SlotId, vec![p])),
                }
            }
        }
        let mut reasons: Vec<String> = Vec::new();
        let mut reason_idx: HashMap<String, usize> = HashMap::new();
        for (slot, from, to, why) in std::mem::take(&mut self.blocked) {
            let ri = *reason_idx.entry(why.clone()).or_insert_with(|| {
                reasons.push(why);
                reasons.len() - 1
            });
            let base = self.slots[slot as usize].base;
            for p in from..to {
                let r = self.find(base + p as u32);
                if let Some(ci) = classes.get_mut(&r) {
                    if !ci.reasons.contains(&ri) {
                        ci.reasons.push(ri);
                    }
                }
            }
        }
        // Carriers per slot.
        let mut carriers: HashMap<SlotId, Vec<(ValueId, Vec<usize>)>> = HashMap::new();
        for (vi, vs) in self.views.iter().enumerate() {
            for v in vs {
                carriers
                    .entry(v.slot)
                    .or_default()
                    .push((ValueId(vi as u32), v.axes.clone()));
            }
        }
        let mut members_by_slot: HashMap<SlotId, Vec<usize>> = HashMap::new();
        for (i, m) in self.members.iter().enumerate() {
            members_by_slot.entry(m.slot).or_default().push(i);
        }
        // Signature: slots touched and how many positions in each.
        let mut by_sig: BTreeMap<Vec<(SlotId, usize)>, Vec<u32>> = BTreeMap::new();
        for r in &class_order {
            let ci = &classes[r];
            let sig: Vec<(SlotId, usize)> = ci.slots.iter().map(|(s, p)| (*s, p.len())).collect();
            by_sig.entry(sig).or_default().push(*r);
        }
        let mut runs: Vec<Run> = Vec::new();
        for (sig, mut roots) in by_sig {
            // Only signatures with a member are reported.
            if !sig.iter().any(|(s, _)| members_by_slot.contains_key(s)) {
                continue;
            }
            let start = |ci: &ClassInfo, k: usize| ci.slots[k].1[0] as usize;
            let contiguous = |ci: &ClassInfo| {
                ci.slots
                    .iter()
                    .all(|(_, p)| (p[p.len() - 1] - p[0]) as usize + 1 == p.len())
            };
            roots.sort_by_key(|r| start(&classes[r], 0));
            let mut cur: Vec<u32> = Vec::new();
            for r in roots {
                let ci = &classes[&r];
                if !contiguous(ci) {
                    if !cur.is_empty() {
                        runs.push((sig.clone(), std::mem::take(&mut cur), None));
                    }
                    runs.push((
                        sig.clone(),
                        vec![r],
                        Some("channel positions are not contiguous".to_string()),
                    ));
                    continue;
                }
                let follows = cur.last().is_some_and(|&l| {
                    let lc = &classes[&l];
                    (0..sig.len()).all(|k| start(ci, k) == start(lc, k) + sig[k].1)
                });
                if !follows && !cur.is_empty() {
                    runs.push((sig.clone(), std::mem::take(&mut cur), None));
                }
                cur.push(r);
            }
            if !cur.is_empty() {
                runs.push((sig, cur, None));
            }
        }
        // Graph order: by first slot, then position.
        runs.sort_by_key(|(sig, roots, _)| {
            let ci = &classes[&roots[0]];
            (sig[0].0, ci.slots[0].1[0])
        });
        let mut groups = Vec::new();
        for (sig, roots, extra) in runs {
            let first = &classes[&roots[0]];
            let mut members = Vec::new();
            let mut carr = Vec::new();
            for (k, (slot, block)) in sig.iter().enumerate() {
                let offset = first.slots[k].1[0] as usize;
                for &mi in members_by_slot.get(slot).into_iter().flatten() {
                    let m = &self.members[mi];
                    members.push(Member {
                        target: m.target,
                        axis: m.axis,
                        offset,
                        block: *block,
                        role: m.role,
                        node: m.node,
                    });
                }
                for (v, axes) in carriers.get(slot).into_iter().flatten() {
                    carr.push(Carrier {
                        value: *v,
                        axes: axes.clone(),
                        offset,
                        block: *block,
                    });
                }
            }
            members.sort_by_key(|m| (m.role, m.target, m.axis, m.offset, m.node));
            members.dedup();
            let mut why: Vec<String> = Vec::new();
            for r in &roots {
                for &ri in &classes[r].reasons {
                    if !why.contains(&reasons[ri]) {
                        why.push(reasons[ri].clone());
                    }
                }
            }
            if let Some(e) = extra {
                why.push(e);
            }
            let producer_block = members
                .iter()
                .filter(|m| m.role == Role::Producer)
                .map(|m| m.block)
                .min();
            if producer_block.is_none() {
                why.push(
                    "no producer: the channels come from a graph input or an untracked op"
                        .to_string(),
                );
            }
            let granularity = producer_block
                .or_else(|| members.iter().map(|m| m.block).min())
                .unwrap_or(1);
            let units = roots.len();
            groups.push(Group {
                id: groups.len(),
                units,
                granularity,
                size: units * granularity,
                members,
                carriers: carr,
                prunable: why.is_empty(),
                reasons: why,
            });
        }
        groups
    }
}
