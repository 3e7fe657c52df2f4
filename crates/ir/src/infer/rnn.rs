//! RNN, GRU and LSTM.

use super::ctx::{dim_div_exact, same_dtype, tt, unify, Ctx, R};
use crate::op::RnnAttrs;
use crate::{Dim, Shape, TensorType};

/// Number of directions of a recurrent op.
pub(crate) fn num_directions(direction: &str) -> R<u64> {
    match direction {
        "forward" | "reverse" => Ok(1),
        "bidirectional" => Ok(2),
        d => Err(format!("invalid direction '{d}'")),
    }
}

/// Y, Y_h (and for LSTM Y_c). `gates` is 1 (RNN), 3 (GRU) or 4 (LSTM).
pub(crate) fn recurrent(a: &RnnAttrs, gates: u64, cx: &Ctx, what: &str) -> R<Vec<TensorType>> {
    for (i, n) in [(0, "X"), (1, "W"), (2, "R")] {
        cx.require(i, n)?;
    }
    let d = same_dtype(cx, [0, 1, 2], what)?;
    let nd = num_directions(&a.direction)?;
    if !matches!(a.layout, 0 | 1) {
        return Err(format!("layout {} must be 0 or 1", a.layout));
    }
    for (i, n) in [(0, "X"), (1, "W"), (2, "R")] {
        if let Some(s) = cx.shape(i) {
            if s.rank() != 3 {
                return Err(format!("{what} {n} {s} must be 3-D"));
            }
        }
    }
    let (seq, batch) = match cx.shape(0) {
        None => (Dim::Unknown, Dim::Unknown),
        Some(x) if a.layout == 0 => (x.0[0].clone(), x.0[1].clone()),
        Some(x) => (x.0[1].clone(), x.0[0].clone()),
    };
    let mut hidden = match a.hidden_size {
        Some(h) if h < 1 => return Err(format!("hidden_size {h} must be positive")),
        Some(h) => Dim::Fixed(h as u64),
        None => Dim::Unknown,
    };
    if let Some(r) = cx.shape(2) {
        hidden = unify(&hidden, &r.0[2])
            .ok_or_else(|| format!("{what} hidden_size {hidden} does not match R {r}"))?;
    }
    if let Some(w) = cx.shape(1) {
        let h = dim_div_exact(&w.0[1], gates, &format!("{what} W {w} gate rows"))?;
        hidden = unify(&hidden, &h)
            .ok_or_else(|| format!("{what} hidden_size {hidden} does not match W {w}"))?;
        if let Some(x) = cx.shape(0) {
            if unify(&w.0[2], &x.0[2]).is_none() {
                return Err(format!("{what} W {w} does not match input size of X {x}"));
            }
        }
    }
    for i in [1, 2] {
        if let Some(s) = cx.shape(i) {
            if unify(&s.0[0], &Dim::Fixed(nd)).is_none() {
                return Err(format!(
                    "{what} input {i} {s} has {} directions, direction '{}' needs {nd}",
                    s.0[0], a.direction
                ));
            }
        }
    }
    let ndd = Dim::Fixed(nd);
    let y = if a.layout == 0 {
        vec![seq, ndd.clone(), batch.clone(), hidden.clone()]
    } else {
        vec![batch.clone(), seq, ndd.clone(), hidden.clone()]
    };
    let yh = if a.layout == 0 {
        vec![ndd, batch, hidden]
    } else {
        vec![batch, ndd, hidden]
    };
    let mut out = vec![tt(d, Some(Shape(y))), tt(d, Some(Shape(yh.clone())))];
    if gates == 4 {
        out.push(tt(d, Some(Shape(yh))));
    }
    Ok(out)
}
