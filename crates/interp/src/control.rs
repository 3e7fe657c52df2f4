//! Control flow: If, Loop, Scan. Subgraph reads of outer values are explicit: captured values
//! are trailing operands of the node and trailing inputs of the subgraph.

use crate::dispatch::Args;
use crate::num::norm_axis;
use crate::shape_ops::{concat, transpose_arr};
use crate::{Interpreter, Value};
use ndarray::Axis;
use pare_ir::op::{IfAttrs, LoopAttrs, ScanAttrs};
use pare_ir::{DType, Graph};

fn sub_err(what: &str, e: crate::InterpError) -> String {
    format!("in {what}: {e}")
}

/// How many of a subgraph's trailing inputs are captured outer values
/// ([`Graph::num_captures`]), checked against the `max` the operand count allows.
fn capture_count(body: &Graph, max: usize) -> Result<usize, String> {
    let c = body.num_captures();
    if c > max {
        return Err(format!(
            "body declares {c} captured inputs, but only {max} operands can be captures"
        ));
    }
    Ok(c)
}

/// If(cond, captured...).
pub(crate) fn if_op(at: &IfAttrs, a: &Args, it: &Interpreter) -> Result<Vec<Value>, String> {
    let cond = a.req(0)?;
    let c = match cond {
        Value::Bool(b) if b.len() == 1 => *b.iter().next().expect("one element"),
        o => o.scalar_f64().map_err(|e| format!("condition: {e}"))? != 0.0,
    };
    let (g, name) = if c {
        (&at.then_branch, "then_branch")
    } else {
        (&at.else_branch, "else_branch")
    };
    let caps: Vec<Value> = (1..a.len())
        .map(|i| a.req(i).cloned())
        .collect::<Result<_, _>>()?;
    let n_in = g.inputs().len();
    if caps.len() < n_in {
        return Err(format!(
            "{name} takes {n_in} inputs, the node passes {}",
            caps.len()
        ));
    }
    // A branch may take fewer captures than the node passes (the union over both branches is
    // appended to each in the importer, so normally the counts agree).
    let inputs = caps[caps.len() - n_in..].to_vec();
    it.run_subgraph(g, inputs).map_err(|e| sub_err(name, e))
}

fn scalar_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) if b.len() == 1 => Ok(*b.iter().next().expect("one element")),
        o => Ok(o.scalar_f64()? != 0.0),
    }
}

/// Stacks per-iteration values along a new axis 0 (empty list: shape [0]).
fn stack(items: &[Value], dtype_hint: Option<DType>) -> Result<Value, String> {
    if items.is_empty() {
        return Ok(Value::zeros(dtype_hint.unwrap_or(DType::F32), &[0]));
    }
    let expanded: Vec<Value> = items
        .iter()
        .map(|v| {
            let mut s = vec![1];
            s.extend_from_slice(v.shape());
            v.reshape(&s)
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Value> = expanded.iter().collect();
    concat(&refs, 0).map_err(|e| format!("scan outputs of different shapes: {e}"))
}

/// Loop(M?, cond?, carried..., captured...).
pub(crate) fn loop_op(
    at: &LoopAttrs,
    a: &Args,
    nout: usize,
    it: &Interpreter,
) -> Result<Vec<Value>, String> {
    let body = &at.body;
    let nb_in = body.inputs().len();
    if nb_in < 2 {
        return Err("Loop body needs (iteration, condition, ...) inputs".into());
    }
    let extra: Vec<Value> = (2..a.len())
        .map(|i| a.req(i).cloned())
        .collect::<Result<_, _>>()?;
    if extra.len() != nb_in - 2 {
        return Err(format!(
            "Loop body takes {} carried/captured inputs, the node passes {}",
            nb_in - 2,
            extra.len()
        ));
    }
    let nb_out = body.outputs().len();
    let c = capture_count(body, extra.len())?;
    let n = extra.len() - c;
    if nb_out < 1 + n {
        return Err(format!(
            "Loop body has {nb_out} outputs, needs at least {}",
            1 + n
        ));
    }
    let k = nb_out - 1 - n;
    let max_trip = match a.opt(0) {
        Some(m) if !m.is_empty() => Some(m.scalar_i64()?),
        _ => None,
    };
    let has_cond = a.opt(1).is_some();
    let mut cond = match a.opt(1) {
        Some(cv) => scalar_bool(cv)?,
        None => true,
    };
    let mut carried: Vec<Value> = extra[..n].to_vec();
    let caps: Vec<Value> = extra[n..].to_vec();
    let mut scans: Vec<Vec<Value>> = vec![Vec::new(); k];
    let mut i: i64 = 0;
    loop {
        if let Some(m) = max_trip {
            if i >= m {
                break;
            }
        }
        if has_cond && !cond {
            break;
        }
        if max_trip.is_none() && !has_cond && i > 1 << 40 {
            return Err("Loop without trip count or condition does not terminate".into());
        }
        let mut ins = Vec::with_capacity(nb_in);
        ins.push(Value::I64(ndarray::arr0(i).into_dyn()));
        ins.push(Value::Bool(ndarray::arr0(cond).into_dyn()));
        ins.extend(carried.iter().cloned());
        ins.extend(caps.iter().cloned());
        let mut outs = it
            .run_subgraph(body, ins)
            .map_err(|e| sub_err(&format!("Loop body (iteration {i})"), e))?;
        let rest = outs.split_off(1);
        let new_cond = scalar_bool(&outs[0])?;
        let mut rest = rest.into_iter();
        carried = rest.by_ref().take(n).collect();
        for (s, v) in scans.iter_mut().zip(rest) {
            s.push(v);
        }
        if has_cond {
            cond = new_cond;
        } else if max_trip.is_none() && !new_cond {
            // Neither M nor cond given: the body's condition still ends the loop in practice.
            break;
        }
        i += 1;
    }
    let mut out = carried;
    for (j, s) in scans.iter().enumerate() {
        let hint = body.value(body.outputs()[1 + n + j]).ty.dtype;
        out.push(stack(s, hint)?);
    }
    if out.len() < nout {
        return Err(format!(
            "Loop produced {} outputs, node has {nout}",
            out.len()
        ));
    }
    Ok(out)
}

/// Scan(state..., scan..., captured...).
pub(crate) fn scan_op(
    at: &ScanAttrs,
    a: &Args,
    nout: usize,
    it: &Interpreter,
) -> Result<Vec<Value>, String> {
    let body = &at.body;
    let m = at.num_scan_inputs.max(0) as usize;
    let ops: Vec<Value> = (0..a.len())
        .map(|i| a.req(i).cloned())
        .collect::<Result<_, _>>()?;
    let nb_in = body.inputs().len();
    if ops.len() != nb_in {
        return Err(format!(
            "Scan body takes {nb_in} inputs, the node passes {}",
            ops.len()
        ));
    }
    if ops.len() < m {
        return Err(format!(
            "Scan has {} operands but num_scan_inputs = {m}",
            ops.len()
        ));
    }
    let c = capture_count(body, ops.len() - m)?;
    let n = ops.len() - m - c;
    let nb_out = body.outputs().len();
    if nb_out < n {
        return Err(format!(
            "Scan body has {nb_out} outputs, needs at least {n}"
        ));
    }
    let k = nb_out - n;
    let in_axes: Vec<i64> = at.scan_input_axes.clone().unwrap_or_else(|| vec![0; m]);
    let in_dirs: Vec<i64> = at
        .scan_input_directions
        .clone()
        .unwrap_or_else(|| vec![0; m]);
    let out_axes: Vec<i64> = at.scan_output_axes.clone().unwrap_or_else(|| vec![0; k]);
    let out_dirs: Vec<i64> = at
        .scan_output_directions
        .clone()
        .unwrap_or_else(|| vec![0; k]);
    if in_axes.len() != m || in_dirs.len() != m || out_axes.len() != k || out_dirs.len() != k {
        return Err("scan axes/directions lengths do not match the scan inputs/outputs".into());
    }
    let mut states: Vec<Value> = ops[..n].to_vec();
    let scan_in = &ops[n..n + m];
    let caps = &ops[n + m..];
    let mut axes = Vec::with_capacity(m);
    let mut len = None;
    for (j, v) in scan_in.iter().enumerate() {
        let ax = norm_axis(in_axes[j], v.rank())?;
        let l = v.shape()[ax];
        if *len.get_or_insert(l) != l {
            return Err("scan inputs have different sequence lengths".into());
        }
        axes.push(ax);
    }
    let len = len.unwrap_or(0);
    let mut scans: Vec<Vec<Value>> = vec![Vec::new(); k];
    for t in 0..len {
        let mut ins = states.clone();
        for (j, v) in scan_in.iter().enumerate() {
            let idx = if in_dirs[j] == 1 { len - 1 - t } else { t };
            ins.push(map_array!(v, arr => arr.index_axis(Axis(axes[j]), idx).to_owned()));
        }
        ins.extend(caps.iter().cloned());
        let outs = it
            .run_subgraph(body, ins)
            .map_err(|e| sub_err(&format!("Scan body (step {t})"), e))?;
        let mut outs = outs.into_iter();
        states = outs.by_ref().take(n).collect();
        for (s, v) in scans.iter_mut().zip(outs) {
            s.push(v);
        }
    }
    let mut out = states;
    for (j, mut s) in scans.into_iter().enumerate() {
        if out_dirs[j] == 1 {
            s.reverse();
        }
        let hint = body.value(body.outputs()[n + j]).ty.dtype;
        let stacked = stack(&s, hint)?;
        let r = stacked.rank();
        let ax = norm_axis(out_axes[j], r)?;
        let moved = if ax == 0 {
            stacked
        } else {
            // Move the new axis 0 to position `ax`.
            let mut perm: Vec<usize> = (1..r).collect();
            perm.insert(ax, 0);
            map_array!(&stacked, arr => transpose_arr(arr, &perm))
        };
        out.push(moved);
    }
    if out.len() < nout {
        return Err(format!(
            "Scan produced {} outputs, node has {nout}",
            out.len()
        ));
    }
    Ok(out)
}
