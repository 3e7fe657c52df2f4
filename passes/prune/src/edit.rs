//! Graph edits: deleting positions along constant axes, shrinking node attributes and
//! recomputing Reshape targets.

use pare_analysis::Group;
use pare_ir::{Dim, Graph, NodeId, Op, Tensor, ValueId};

/// Removes `positions` (sorted, distinct, in range) along `axis` of an f32 tensor.
pub fn remove_positions(t: &Tensor, axis: usize, positions: &[usize]) -> Option<Tensor> {
    let v = t.to_vec::<f32>().ok()?;
    let shape = t.shape().to_vec();
    let d = *shape.get(axis)?;
    if positions.iter().any(|&p| p >= d) {
        return None;
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut keep = vec![true; d];
    for &p in positions {
        keep[p] = false;
    }
    let kept = keep.iter().filter(|&&k| k).count();
    let mut out = Vec::with_capacity(outer * kept * inner);
    for o in 0..outer {
        for (i, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
            let at = (o * d + i) * inner;
            out.extend_from_slice(&v[at..at + inner]);
        }
    }
    let mut ns = shape;
    ns[axis] = kept;
    Some(Tensor::from_vec(ns, out))
}

/// The flat positions of `units` along a member or carrier range: unit `u` occupies
/// `offset + u·block .. offset + (u+1)·block`.
pub fn positions(units: &[usize], offset: usize, block: usize) -> Vec<usize> {
    units
        .iter()
        .flat_map(|&u| offset + u * block..offset + (u + 1) * block)
        .collect()
}

/// The new target shape of Reshape `n` once `removed[g]` units of each group `g` whose
/// space its output carries are gone. Channel extents become fixed numbers; the other
/// dimensions are kept when fixed, copied from the input (`0`) when the input has the same
/// symbolic extent at that position, and inferred (`-1`) for at most one of them.
pub fn reshape_target(
    g: &Graph,
    n: NodeId,
    groups: &[(&Group, usize)],
) -> Result<Vec<i64>, String> {
    let node = g.node(n);
    let allowzero = matches!(&node.op, Op::Reshape(a) if a.allowzero);
    let out = *node.outputs().first().ok_or("Reshape without output")?;
    let x = node.input(0).ok_or("Reshape without input")?;
    let oshape = g
        .value(out)
        .ty
        .shape
        .clone()
        .ok_or("the output's rank is unknown")?;
    let ishape = g.value(x).ty.shape.clone();
    let mut dims: Vec<Option<i64>> = oshape
        .0
        .iter()
        .map(|d| d.fixed().map(|v| v as i64))
        .collect();
    let mut changed = vec![false; dims.len()];
    for (gr, removed) in groups {
        if *removed == 0 {
            continue;
        }
        for c in gr.carriers.iter().filter(|c| c.value == out) {
            let extents: Vec<usize> = c
                .axes
                .iter()
                .map(|&a| dims.get(a).copied().flatten().map(|v| v as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or("a channel axis of the output is not fixed")?;
            // Minor axes whose extents divide the unit block keep their extent.
            let mut inner = 1usize;
            let mut major = c.axes.len();
            while major > 1 && c.block % (inner * extents[major - 1]) == 0 {
                inner *= extents[major - 1];
                major -= 1;
            }
            if major != 1 {
                return Err(format!(
                    "units of {} positions do not map onto one axis of the output {:?}",
                    c.block, extents
                ));
            }
            let gone = removed * c.block / inner;
            let a = c.axes[0];
            let now = extents[0]
                .checked_sub(gone)
                .ok_or("more units removed than the output holds")?;
            dims[a] = Some(now as i64);
            changed[a] = true;
        }
    }
    let mut inferred = false;
    let mut target = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        match d {
            Some(v) if *v != 0 || !allowzero || changed[i] => target.push(*v),
            _ => {
                let same = !allowzero
                    && matches!(
                        (oshape.0.get(i), ishape.as_ref().and_then(|s| s.0.get(i))),
                        (Some(Dim::Sym(a)), Some(Dim::Sym(b))) if a == b
                    );
                if same {
                    target.push(0);
                } else if !inferred {
                    inferred = true;
                    target.push(-1);
                } else {
                    return Err(format!(
                        "output dimension {i} is neither fixed nor copied from the input, \
                         and another dimension is already inferred"
                    ));
                }
            }
        }
    }
    Ok(target)
}

/// Replaces constant `c` by `t` (same name) everywhere; returns the new value.
pub fn replace_const(g: &mut Graph, c: ValueId, t: Tensor) -> ValueId {
    let name = g.value(c).name.clone();
    let nv = g.add_const(name, t);
    g.replace_all_uses(c, nv);
    g.remove_const(c);
    nv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_positions_along_any_axis() {
        let t = Tensor::from_vec(vec![2, 3, 2], (0..12).map(|i| i as f32).collect());
        let r = remove_positions(&t, 1, &[0, 2]).expect("removes");
        assert_eq!(r.shape(), &[2, 1, 2]);
        assert_eq!(r.to_vec::<f32>().expect("f32"), vec![2.0, 3.0, 8.0, 9.0]);
        let r = remove_positions(&t, 2, &[1]).expect("removes");
        assert_eq!(r.shape(), &[2, 3, 1]);
        assert_eq!(
            r.to_vec::<f32>().expect("f32"),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert!(remove_positions(&t, 1, &[3]).is_none());
        assert_eq!(positions(&[0, 2], 4, 3), vec![4, 5, 6, 10, 11, 12]);
    }
}
