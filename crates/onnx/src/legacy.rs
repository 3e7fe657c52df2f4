//! Rewrites of older ONNX op versions into the IR's latest-opset forms, and Constant nodes.
//!
//! The IR gives each op its opset-23 semantics. Versions that took attributes which later
//! became inputs (Reduce axes, Squeeze/Unsqueeze axes, Split sizes, Pad pads, Clip bounds,
//! Slice bounds, TopK k) get constant inputs instead; ops whose meaning changed (Softmax's
//! 2-D coercion before opset 13, GroupNormalization's per-group scale before opset 21,
//! Upsample and Resize-10) are rewritten to equivalent current forms.

use crate::import::const_of;
use pare_ir::op::{AxisAttrs, FlattenAttrs, ReshapeAttrs, ResizeAttrs, ShapeAttrs};
use pare_ir::{Attr, AttrError, Attrs, DType, Graph, NodeId, Op, Tensor, TensorType, ValueId};

pub(crate) struct Ctx<'g> {
    pub g: &'g mut Graph,
    pub opset: i64,
    pub node: &'g str,
}

pub(crate) enum ConvertError {
    Unsupported,
    Msg(String),
}

impl From<AttrError> for ConvertError {
    fn from(e: AttrError) -> Self {
        ConvertError::Msg(e.to_string())
    }
}
impl From<String> for ConvertError {
    fn from(e: String) -> Self {
        ConvertError::Msg(e)
    }
}

/// The tensor of a Constant node.
pub(crate) fn constant_value(mut attrs: Attrs) -> Result<Tensor, String> {
    if attrs.0.len() != 1 {
        return Err(format!(
            "Constant needs exactly one value attribute, found {}",
            attrs.0.len()
        ));
    }
    let (name, a) = attrs.0.remove(0);
    let t = match (name.as_str(), a) {
        ("value", Attr::Tensor(t)) => t,
        ("value_float", Attr::Float(f)) => Tensor::scalar(f),
        ("value_floats", Attr::Floats(v)) => Tensor::from_vec(vec![v.len()], v),
        ("value_int", Attr::Int(i)) => Tensor::scalar(i),
        ("value_ints", Attr::Ints(v)) => Tensor::from_vec(vec![v.len()], v),
        ("value_string", Attr::String(s)) => {
            Tensor::from_strings(vec![], vec![s]).map_err(|e| e.to_string())?
        }
        ("value_strings", Attr::Strings(v)) => {
            Tensor::from_strings(vec![v.len()], v).map_err(|e| e.to_string())?
        }
        ("sparse_value", _) => return Err("sparse Constant values are not supported".into()),
        (n, a) => {
            return Err(format!(
                "Constant attribute '{n}' of kind {} is not valid",
                a.kind()
            ))
        }
    };
    Ok(t)
}

/// Infers the types of a freshly added node's outputs from what is known of its inputs, so
/// that later rewrites can use ranks. Failures are left for the whole-graph pass to report.
pub(crate) fn infer_now(g: &mut Graph, id: NodeId) {
    let node = g.node(id);
    let types: Vec<Option<TensorType>> = node
        .inputs()
        .iter()
        .map(|v| v.map(|v| g.value(v).ty.clone()))
        .collect();
    let consts: Vec<Option<Tensor>> = node
        .inputs()
        .iter()
        .map(|v| v.and_then(|v| g.constant(v).cloned()))
        .collect();
    let tref: Vec<Option<&TensorType>> = types.iter().map(Option::as_ref).collect();
    let cref: Vec<Option<&Tensor>> = consts.iter().map(Option::as_ref).collect();
    let outs = node.outputs().to_vec();
    if let Ok(tys) = pare_ir::infer::infer_node(&node.op, &tref, &cref, outs.len()) {
        for (v, t) in outs.into_iter().zip(tys) {
            if g.value(v).ty.is_unknown() {
                g.set_type(v, t);
            }
        }
    }
}

fn take_ints(attrs: &mut Attrs, name: &'static str) -> Result<Option<Vec<i64>>, ConvertError> {
    Ok(attrs.take::<Option<Vec<i64>>>(name, None)?)
}

fn ints_const(c: &mut Ctx, fresh: &mut dyn FnMut(&str) -> String, v: Vec<i64>) -> ValueId {
    let name = fresh(c.node);
    c.g.add_const(name, Tensor::from_vec(vec![v.len()], v))
}

fn set_input(inputs: &mut Vec<Option<ValueId>>, i: usize, v: Option<ValueId>) {
    if inputs.len() <= i {
        inputs.resize(i + 1, None);
    }
    inputs[i] = v;
}

fn rank_of(g: &Graph, v: Option<ValueId>) -> Option<usize> {
    v.and_then(|v| g.value(v).ty.shape.as_ref().map(|s| s.rank()))
}

/// Converts one default-domain node to an IR op (plus possibly new inputs or helper nodes).
pub(crate) fn convert(
    mut c: Ctx,
    op_type: &str,
    mut attrs: Attrs,
    mut inputs: Vec<Option<ValueId>>,
    fresh: &mut dyn FnMut(&str) -> String,
) -> Result<(Op, Vec<Option<ValueId>>), ConvertError> {
    let opset = c.opset;
    let is_reduce = op_type.starts_with("Reduce");
    let axes_became_input = match op_type {
        "ReduceSum" => 13,
        "Squeeze" | "Unsqueeze" => 13,
        _ if is_reduce => 18,
        _ => 0,
    };
    if opset < axes_became_input {
        if let Some(axes) = take_ints(&mut attrs, "axes")? {
            let v = ints_const(&mut c, fresh, axes);
            set_input(&mut inputs, 1, Some(v));
        }
    }
    match op_type {
        "Split" if opset < 13 => {
            if let Some(split) = take_ints(&mut attrs, "split")? {
                let v = ints_const(&mut c, fresh, split);
                set_input(&mut inputs, 1, Some(v));
            }
        }
        "Slice" if opset < 10 => {
            let starts = take_ints(&mut attrs, "starts")?
                .ok_or(ConvertError::Msg("missing 'starts'".into()))?;
            let ends =
                take_ints(&mut attrs, "ends")?.ok_or(ConvertError::Msg("missing 'ends'".into()))?;
            let s = ints_const(&mut c, fresh, starts);
            let e = ints_const(&mut c, fresh, ends);
            set_input(&mut inputs, 1, Some(s));
            set_input(&mut inputs, 2, Some(e));
            if let Some(axes) = take_ints(&mut attrs, "axes")? {
                let a = ints_const(&mut c, fresh, axes);
                set_input(&mut inputs, 3, Some(a));
            }
        }
        "TopK" if opset < 10 => {
            let k = attrs.take::<i64>("k", None)?;
            let v = ints_const(&mut c, fresh, vec![k]);
            set_input(&mut inputs, 1, Some(v));
        }
        "Pad" if opset < 11 => {
            let pads =
                take_ints(&mut attrs, "pads")?.ok_or(ConvertError::Msg("missing 'pads'".into()))?;
            let value = attrs.take::<f32>("value", Some(0.0))?;
            let p = ints_const(&mut c, fresh, pads);
            set_input(&mut inputs, 1, Some(p));
            if value != 0.0 {
                let name = fresh(c.node);
                let v = c.g.add_const(name, Tensor::scalar(value));
                set_input(&mut inputs, 2, Some(v));
            }
        }
        "Clip" if opset < 11 => {
            let lo = attrs.take::<Option<f32>>("min", None)?;
            let hi = attrs.take::<Option<f32>>("max", None)?;
            for (i, b) in [(1, lo), (2, hi)] {
                if let Some(b) = b {
                    let name = fresh(c.node);
                    let v = c.g.add_const(name, Tensor::scalar(b));
                    set_input(&mut inputs, i, Some(v));
                }
            }
        }
        "Dropout" if opset < 12 => {
            attrs.remove("ratio");
            attrs.remove("is_test");
        }
        "BatchNormalization" if opset < 9 => {
            if let Some(Attr::Int(0)) = attrs.remove("spatial") {
                return Err(ConvertError::Msg(
                    "BatchNormalization with spatial=0 is not supported".into(),
                ));
            }
            attrs.remove("is_test");
            attrs.remove("consumed_inputs");
        }
        "Scan" if opset < 9 => {
            return Err(ConvertError::Msg(
                "Scan before opset 9 (batched form) is not supported".into(),
            ))
        }
        "Upsample" => {
            let mode = attrs.take::<String>("mode", Some("nearest".into()))?;
            if opset < 9 {
                let scales = attrs.take::<Vec<f32>>("scales", None)?;
                let name = fresh(c.node);
                let v =
                    c.g.add_const(name, Tensor::from_vec(vec![scales.len()], scales));
                set_input(&mut inputs, 1, Some(v));
            }
            attrs.finish(&["mode", "scales"])?;
            let x = inputs.first().copied().flatten();
            let scales = inputs.get(1).copied().flatten();
            let a = ResizeAttrs {
                mode: if mode == "bilinear" {
                    "linear".into()
                } else {
                    mode
                },
                coordinate_transformation_mode: "asymmetric".into(),
                nearest_mode: "floor".into(),
                ..Default::default()
            };
            return Ok((Op::Resize(a), vec![x, None, scales]));
        }
        "Resize" if opset < 11 => {
            let mode = attrs.take::<String>("mode", Some("nearest".into()))?;
            attrs.finish(&["mode"])?;
            let x = inputs.first().copied().flatten();
            let scales = inputs.get(1).copied().flatten();
            let a = ResizeAttrs {
                mode,
                coordinate_transformation_mode: "asymmetric".into(),
                nearest_mode: "floor".into(),
                ..Default::default()
            };
            return Ok((Op::Resize(a), vec![x, None, scales]));
        }
        "Scatter" => {
            return Ok((
                Op::from_attrs("ScatterElements", attrs)?.ok_or(ConvertError::Unsupported)?,
                inputs,
            ));
        }
        "Softmax" | "LogSoftmax" | "Hardmax" if opset < 13 => {
            let axis = attrs.take::<i64>("axis", Some(1))?;
            attrs.finish(&["axis"])?;
            let x = inputs.first().copied().flatten();
            let rank = rank_of(c.g, x);
            let mk = |axis: i64| -> Op {
                let a = AxisAttrs { axis };
                match op_type {
                    "Softmax" => Op::Softmax(a),
                    "LogSoftmax" => Op::LogSoftmax(a),
                    _ => Op::Hardmax(a),
                }
            };
            // Coercing to 2-D at `axis` and normalizing the second dimension is the same as the
            // opset-13 op over the last axis when `axis` is the last dimension.
            if let Some(r) = rank {
                let ax = if axis < 0 { axis + r as i64 } else { axis };
                if ax == r as i64 - 1 {
                    return Ok((mk(-1), inputs));
                }
            }
            let x = x.ok_or(ConvertError::Msg("missing input".into()))?;
            let base = fresh(c.node);
            let shape = c.g.add_simple(
                format!("{base}/shape"),
                Op::Shape(ShapeAttrs {
                    start: 0,
                    end: None,
                }),
                &[x],
            );
            let flat = c.g.add_simple(
                format!("{base}/flatten"),
                Op::Flatten(FlattenAttrs { axis }),
                &[x],
            );
            for v in [shape, flat] {
                if let Some(n) = c.g.producer(v) {
                    infer_now(c.g, n);
                }
            }
            let sm = c.g.add_simple(
                format!("{base}/{}", op_type.to_lowercase()),
                mk(-1),
                &[flat],
            );
            if let Some(n) = c.g.producer(sm) {
                infer_now(c.g, n);
            }
            return Ok((
                Op::Reshape(ReshapeAttrs { allowzero: false }),
                vec![Some(sm), Some(shape)],
            ));
        }
        "GroupNormalization" if opset < 21 => {
            // Before opset 21, scale and bias are per group; expand them to per channel.
            let groups = match attrs.get("num_groups") {
                Some(Attr::Int(g)) if *g > 0 => *g as usize,
                _ => return Err(ConvertError::Msg("missing or invalid 'num_groups'".into())),
            };
            let x = inputs.first().copied().flatten();
            let channels = x
                .and_then(|x| {
                    c.g.value(x)
                        .ty
                        .shape
                        .as_ref()
                        .and_then(|s| s.0.get(1).and_then(|d| d.fixed()))
                })
                .ok_or(ConvertError::Msg(
                    "GroupNormalization before opset 21 needs a known channel count".into(),
                ))? as usize;
            if !channels.is_multiple_of(groups) {
                return Err(ConvertError::Msg(format!(
                    "{channels} channels do not split into {groups} groups"
                )));
            }
            for i in [1usize, 2] {
                let t = const_of(c.g, inputs.get(i).copied().flatten())
                    .cloned()
                    .ok_or(ConvertError::Msg(
                        "GroupNormalization before opset 21 needs constant scale and bias".into(),
                    ))?;
                let vals = t.to_f64_vec().ok_or(ConvertError::Msg(
                    "scale/bias must be floating point".into(),
                ))?;
                if vals.len() != groups {
                    return Err(ConvertError::Msg(format!(
                        "scale/bias has {} elements, expected {groups}",
                        vals.len()
                    )));
                }
                let per = channels / groups;
                let expanded: Vec<f64> = vals
                    .iter()
                    .flat_map(|&v| std::iter::repeat_n(v, per))
                    .collect();
                let t = match t.dtype() {
                    DType::F32 => Tensor::from_vec(
                        vec![channels],
                        expanded.iter().map(|&v| v as f32).collect(),
                    ),
                    DType::F64 => Tensor::from_vec(vec![channels], expanded),
                    DType::F16 => Tensor::from_vec(
                        vec![channels],
                        expanded.iter().map(|&v| half::f16::from_f64(v)).collect(),
                    ),
                    DType::BF16 => Tensor::from_vec(
                        vec![channels],
                        expanded.iter().map(|&v| half::bf16::from_f64(v)).collect(),
                    ),
                    d => {
                        return Err(ConvertError::Msg(format!(
                            "scale/bias of type {d} is not supported"
                        )))
                    }
                };
                let name = fresh(c.node);
                let v = c.g.add_const(name, t);
                set_input(&mut inputs, i, Some(v));
            }
        }
        _ => {}
    }
    match Op::from_attrs(op_type, attrs)? {
        Some(op) => Ok((op, inputs)),
        None => Err(ConvertError::Unsupported),
    }
}
