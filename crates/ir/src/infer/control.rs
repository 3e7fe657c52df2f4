//! If, Loop and Scan: subgraph types are inferred recursively from the operand types.

use super::ctx::{join_dim, norm_axis, tt, unify, Ctx, R, SV};
use super::{infer_graph, merge_type, Seed};
use crate::op::ScanAttrs;
use crate::{DType, Dim, Graph, Op, Shape, TensorType, ValueId};

/// Least upper bound of two types that a value may have (branches, loop iterations).
pub(crate) fn join_type(a: &TensorType, b: &TensorType, what: &str) -> R<TensorType> {
    let dtype = match (a.dtype, b.dtype) {
        (Some(x), Some(y)) if x != y => return Err(format!("{what}: dtypes differ, {x} vs {y}")),
        (x, y) => x.or(y),
    };
    let shape = match (&a.shape, &b.shape) {
        (Some(x), Some(y)) if x.rank() == y.rank() => Some(Shape(
            x.0.iter().zip(&y.0).map(|(p, q)| join_dim(p, q)).collect(),
        )),
        _ => None,
    };
    Ok(tt(dtype, shape))
}

/// Sets the subgraph's input types to `tys`, merged with what the subgraph declares.
fn set_inputs(g: &mut Graph, tys: &[TensorType], what: &str) -> R<()> {
    let ins = g.inputs().to_vec();
    if ins.len() != tys.len() {
        return Err(format!(
            "{what} has {} inputs, expected {}",
            ins.len(),
            tys.len()
        ));
    }
    for (k, (v, t)) in ins.iter().zip(tys).enumerate() {
        let merged = merge_type(&g.value(*v).ty, t)
            .map_err(|e| format!("{what} input {k} '{}': {e}", g.value(*v).name))?;
        g.set_type(*v, merged);
    }
    Ok(())
}

fn output_types(g: &Graph) -> Vec<TensorType> {
    g.outputs().iter().map(|&v| g.value(v).ty.clone()).collect()
}

/// Infers a subgraph whose inputs from `first_capture` on capture operands `first_operand..`
/// of the node: constant and tracked operand values carry into the subgraph.
fn run(g: &mut Graph, what: &str, cx: &Ctx, first_capture: usize, first_operand: usize) -> R<()> {
    let seeds: Vec<(ValueId, Seed)> = g
        .inputs()
        .iter()
        .enumerate()
        .skip(first_capture)
        .map(|(j, &v)| {
            let i = first_operand + (j - first_capture);
            let seed = Seed {
                konst: cx.konst(i).cloned(),
                vals: cx.vals(i).map(<[SV]>::to_vec),
            };
            (v, seed)
        })
        .collect();
    infer_graph(g, &seeds).map_err(|e| format!("in {what}: {e}"))
}

/// Number of state values (Loop: carried; Scan: state) of a node with `num_operands` operands,
/// `num_outputs` results and `fixed` leading operands (Loop: trip count and condition; Scan: 0)
/// plus `scan_inputs` scan inputs: the operands left after the body's declared captures
/// ([`Graph::num_captures`]).
pub(crate) fn state_count(
    body: &Graph,
    fixed: usize,
    scan_inputs: usize,
    num_operands: usize,
    num_outputs: usize,
) -> R<usize> {
    let c = body.num_captures();
    let n = num_operands
        .checked_sub(fixed + scan_inputs + c)
        .ok_or_else(|| {
            format!("body declares {c} captures but the node has {num_operands} operands")
        })?;
    if n > num_outputs {
        return Err(format!(
            "{n} state values (operands after {c} captures) but the node has only {num_outputs} results"
        ));
    }
    Ok(n)
}

/// Infers a control-flow op, inferring its subgraphs in place.
pub(crate) fn infer_control(op: &mut Op, cx: &Ctx) -> R<Vec<TensorType>> {
    match op {
        Op::If(a) => {
            cx.require(0, "cond")?;
            check_cond(cx.ty(0), "If condition")?;
            let caps: Vec<TensorType> = (1..cx.len()).map(|i| cx.ty(i).clone()).collect();
            set_inputs(&mut a.then_branch, &caps, "then_branch")?;
            set_inputs(&mut a.else_branch, &caps, "else_branch")?;
            let (tb, eb) = (&a.then_branch, &a.else_branch);
            if tb.outputs().len() != eb.outputs().len() {
                return Err(format!(
                    "If branches have {} and {} outputs",
                    tb.outputs().len(),
                    eb.outputs().len()
                ));
            }
            if tb.outputs().len() != cx.num_outputs {
                return Err(format!(
                    "If has {} outputs but its branches have {}",
                    cx.num_outputs,
                    tb.outputs().len()
                ));
            }
            let rt = run(&mut a.then_branch, "then_branch", cx, 0, 1);
            let re = run(&mut a.else_branch, "else_branch", cx, 0, 1);
            let (t, e) = (output_types(&a.then_branch), output_types(&a.else_branch));
            // A branch whose shapes cannot work is never taken when the model runs (function
            // expansions contain such branches): the outputs come from the other one.
            let cond = cx.ints(0).filter(|v| v.len() == 1).map(|v| v[0] != 0);
            match (cond, rt, re) {
                (Some(true), Ok(()), _) => Ok(t),
                (Some(false), _, Ok(())) => Ok(e),
                (_, Ok(()), Ok(())) => t
                    .iter()
                    .zip(&e)
                    .enumerate()
                    .map(|(i, (x, y))| join_type(x, y, &format!("If output {i}")))
                    .collect(),
                (None, Ok(()), Err(_)) => Ok(t),
                (None, Err(_), Ok(())) => Ok(e),
                (_, Err(m), _) | (_, _, Err(m)) => Err(m),
            }
        }
        Op::Loop(a) => {
            let nops = cx.len();
            let nout = cx.num_outputs;
            if nops < 2 {
                return Err(
                    "Loop needs the trip count and condition operands (possibly omitted)".into(),
                );
            }
            if cx.present(0) {
                if let Some(d) = cx.dtype(0) {
                    if d != DType::I64 {
                        return Err(format!("Loop trip count must be i64, got {d}"));
                    }
                }
            }
            if cx.present(1) {
                check_cond(cx.ty(1), "Loop condition")?;
            }
            if a.body.inputs().len() != nops {
                return Err(format!(
                    "Loop body has {} inputs, expected {nops} (iteration, condition, carried, captured)",
                    a.body.inputs().len()
                ));
            }
            if a.body.outputs().len() != nout + 1 {
                return Err(format!(
                    "Loop body has {} outputs, expected {} (condition, carried, scan outputs)",
                    a.body.outputs().len(),
                    nout + 1
                ));
            }
            let op_tys: Vec<TensorType> = (0..nops).map(|i| cx.ty(i).clone()).collect();
            let n = state_count(&a.body, 2, 0, nops, nout)?;
            let scalar = |d| TensorType::new(d, Shape(vec![]));
            let mut tys = vec![scalar(DType::I64), scalar(DType::Bool)];
            tys.extend(op_tys[2..].iter().cloned());
            // Carried values may change shape between iterations: run once on a copy, relax
            // the carried types to what both the initial values and the body produce.
            if n > 0 {
                let mut probe = a.body.clone();
                set_inputs(&mut probe, &tys, "Loop body")?;
                run(&mut probe, "Loop body", cx, 2 + n, 2 + n)?;
                let outs = output_types(&probe);
                for k in 0..n {
                    tys[2 + k] = join_type(
                        &tys[2 + k],
                        &outs[1 + k],
                        &format!("Loop carried value {k}"),
                    )?;
                }
            }
            set_inputs(&mut a.body, &tys, "Loop body")?;
            run(&mut a.body, "Loop body", cx, 2 + n, 2 + n)?;
            let outs = output_types(&a.body);
            check_cond(&outs[0], "Loop body condition output")?;
            let mut res = Vec::with_capacity(nout);
            for k in 0..n {
                res.push(join_type(
                    &tys[2 + k],
                    &outs[1 + k],
                    &format!("Loop carried value {k}"),
                )?);
            }
            // Without a condition operand the body's condition is ignored: a constant trip
            // count is the number of iterations, hence the length of the scan outputs.
            let iters = match cx.ints(0) {
                Some(m) if m.len() == 1 && cx.present(0) && !cx.present(1) => {
                    Dim::Fixed(m[0].max(0) as u64)
                }
                _ => Dim::Unknown,
            };
            for o in &outs[1 + n..] {
                res.push(tt(
                    o.dtype,
                    o.shape.as_ref().map(|s| prepend(iters.clone(), s)),
                ));
            }
            Ok(res)
        }
        Op::Scan(a) => scan(a, cx),
        _ => Err(format!("{} is not a control-flow op", op.name())),
    }
}

fn prepend(d: Dim, s: &Shape) -> Shape {
    let mut v = Vec::with_capacity(s.rank() + 1);
    v.push(d);
    v.extend(s.0.iter().cloned());
    Shape(v)
}

fn check_cond(t: &TensorType, what: &str) -> R<()> {
    if let Some(d) = t.dtype {
        if d != DType::Bool {
            return Err(format!("{what} must be bool, got {d}"));
        }
    }
    if let Some(s) = &t.shape {
        if s.numel().is_some_and(|n| n != 1) {
            return Err(format!("{what} must have one element, got {s}"));
        }
    }
    Ok(())
}

fn scan(a: &mut ScanAttrs, cx: &Ctx) -> R<Vec<TensorType>> {
    let nops = cx.len();
    let nout = cx.num_outputs;
    let m = usize::try_from(a.num_scan_inputs)
        .ok()
        .filter(|&m| m >= 1)
        .ok_or_else(|| format!("num_scan_inputs {} must be >= 1", a.num_scan_inputs))?;
    if m > nops {
        return Err(format!(
            "Scan has {nops} operands but num_scan_inputs is {m}"
        ));
    }
    if a.body.inputs().len() != nops {
        return Err(format!(
            "Scan body has {} inputs, the node has {nops} operands",
            a.body.inputs().len()
        ));
    }
    if a.body.outputs().len() != nout {
        return Err(format!(
            "Scan body has {} outputs, the node has {nout}",
            a.body.outputs().len()
        ));
    }
    let op_tys: Vec<TensorType> = (0..nops).map(|i| cx.ty(i).clone()).collect();
    let n = state_count(&a.body, 0, m, nops, nout)?;
    let in_axes = a.scan_input_axes.clone().unwrap_or_else(|| vec![0; m]);
    if in_axes.len() != m {
        return Err(format!(
            "scan_input_axes has {} entries for {m} scan inputs",
            in_axes.len()
        ));
    }
    let k_out = nout - n;
    let out_axes = a.scan_output_axes.clone().unwrap_or_else(|| vec![0; k_out]);
    if out_axes.len() != k_out {
        return Err(format!(
            "scan_output_axes has {} entries for {k_out} scan outputs",
            out_axes.len()
        ));
    }
    let mut tys = op_tys.clone();
    let mut seq = None::<Dim>;
    for j in 0..m {
        let t = &op_tys[n + j];
        if let Some(s) = &t.shape {
            let ax = norm_axis(in_axes[j], s.rank())?;
            let len = s.0[ax].clone();
            seq = Some(match seq {
                None => len,
                Some(p) => unify(&p, &len).ok_or_else(|| {
                    format!("Scan inputs disagree on sequence length: {p} vs {len}")
                })?,
            });
            let mut v = s.0.clone();
            v.remove(ax);
            tys[n + j] = tt(t.dtype, Some(Shape(v)));
        }
    }
    set_inputs(&mut a.body, &tys, "Scan body")?;
    run(&mut a.body, "Scan body", cx, n + m, n + m)?;
    let outs = output_types(&a.body);
    let seq = seq.unwrap_or(Dim::Unknown);
    let mut res = Vec::with_capacity(nout);
    for k in 0..n {
        res.push(join_type(&op_tys[k], &outs[k], &format!("Scan state {k}"))?);
    }
    for (j, o) in outs[n..].iter().enumerate() {
        let shape = match &o.shape {
            None => None,
            Some(s) => {
                let ax = norm_axis(out_axes[j], s.rank() + 1)?;
                let mut v = s.0.clone();
                v.insert(ax, seq.clone());
                Some(Shape(v))
            }
        };
        res.push(tt(o.dtype, shape));
    }
    Ok(res)
}
