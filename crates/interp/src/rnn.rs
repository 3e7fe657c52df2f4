//! RNN, GRU and LSTM: forward/reverse/bidirectional, layout 0/1, sequence_lens, initial
//! states, peepholes, clip, custom activations (with alpha/beta), linear_before_reset,
//! input_forget. Input projections for all time steps are one GEMM per direction; the
//! recurrent projection is one GEMM per step.

use crate::dispatch::Args;
use crate::matmul::gemm_into;
use crate::num::{from_vec, Float};
use crate::Value;
use pare_ir::op::RnnAttrs;

/// Cell type.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Cell {
    Rnn,
    Gru,
    Lstm,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }
    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply<T: Float>(self, x: T) -> T {
        let v = x.to_f64();
        let r = match self {
            Act::Relu => v.max(0.0),
            Act::Tanh => return x.tanh(),
            Act::Sigmoid => {
                if v >= 0.0 {
                    1.0 / (1.0 + (-v).exp())
                } else {
                    let e = v.exp();
                    e / (1.0 + e)
                }
            }
            Act::Affine(a, b) => a * v + b,
            Act::LeakyRelu(a) => {
                if v < 0.0 {
                    a * v
                } else {
                    v
                }
            }
            Act::ThresholdedRelu(a) => {
                if v > a {
                    v
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * v).tanh(),
            Act::HardSigmoid(a, b) => (a * v + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if v < 0.0 {
                    a * (v.exp() - 1.0)
                } else {
                    v
                }
            }
            Act::Softsign => v / (1.0 + v.abs()),
            Act::Softplus => {
                if v > 0.0 {
                    v + (-v).exp().ln_1p()
                } else {
                    v.exp().ln_1p()
                }
            }
        };
        T::c(r)
    }
}

fn parse_acts(cell: Cell, at: &RnnAttrs, dirs: usize) -> Result<Vec<Act>, String> {
    let per = cell.default_acts().len();
    let names: Vec<String> = match &at.activations {
        Some(a) if !a.is_empty() => {
            if a.len() == per * dirs {
                a.clone()
            } else if a.len() == per {
                (0..dirs).flat_map(|_| a.iter().cloned()).collect()
            } else {
                return Err(format!(
                    "expected {} activations, got {}",
                    per * dirs,
                    a.len()
                ));
            }
        }
        _ => (0..dirs)
            .flat_map(|_| cell.default_acts().iter().map(|s| s.to_string()))
            .collect(),
    };
    let alphas = at.activation_alpha.clone().unwrap_or_default();
    let betas = at.activation_beta.clone().unwrap_or_default();
    let (mut ai, mut bi) = (0, 0);
    let mut alpha = |d: f64| {
        let v = alphas.get(ai).map(|&v| v as f64).unwrap_or(d);
        ai += 1;
        v
    };
    let mut beta = |d: f64| {
        let v = betas.get(bi).map(|&v| v as f64).unwrap_or(d);
        bi += 1;
        v
    };
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "relu" => Act::Relu,
                "tanh" => Act::Tanh,
                "sigmoid" => Act::Sigmoid,
                "affine" => Act::Affine(alpha(1.0), beta(0.0)),
                "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
                "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
                "scaledtanh" => Act::ScaledTanh(alpha(1.0), beta(1.0)),
                "hardsigmoid" => Act::HardSigmoid(alpha(0.2), beta(0.5)),
                "elu" => Act::Elu(alpha(1.0)),
                "softsign" => Act::Softsign,
                "softplus" => Act::Softplus,
                o => return Err(format!("unknown activation '{o}'")),
            })
        })
        .collect()
}

fn vals<T: Float>(v: &Value) -> Result<Vec<T>, String> {
    if !v.is_float() {
        return Err(format!("expected a float tensor, got {}", v.dtype()));
    }
    Ok(v.to_f64_vec()?.into_iter().map(T::c).collect())
}

/// Swaps the first two axes of a row-major [a, b, rest] buffer.
fn swap01<T: Copy>(d: &[T], a: usize, b: usize, rest: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(d.len());
    for j in 0..b {
        for i in 0..a {
            out.extend_from_slice(&d[(i * b + j) * rest..(i * b + j + 1) * rest]);
        }
    }
    out
}

/// A shape and its row-major data.
type Shaped<T> = (Vec<usize>, Vec<T>);

struct Outs<T> {
    y: Vec<T>,
    yh: Vec<T>,
    yc: Vec<T>,
    seq: usize,
    batch: usize,
    dirs: usize,
    h: usize,
}

fn run<T: Float>(cell: Cell, at: &RnnAttrs, a: &Args) -> Result<Outs<T>, String> {
    let x = a.req(0)?;
    let w = a.req(1)?;
    let r = a.req(2)?;
    if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
        return Err("X, W and R must have rank 3".into());
    }
    let dirs = match at.direction.as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => return Err(format!("unknown direction '{d}'")),
    };
    let layout1 = at.layout == 1;
    let (seq, batch, inp) = if layout1 {
        (x.shape()[1], x.shape()[0], x.shape()[2])
    } else {
        (x.shape()[0], x.shape()[1], x.shape()[2])
    };
    let h = at.hidden_size.map(|v| v as usize).unwrap_or(r.shape()[2]);
    let g = cell.gates();
    let gh = g * h;
    if w.shape() != [dirs, gh, inp] || r.shape() != [dirs, gh, h] {
        return Err(format!(
            "W {:?} / R {:?} do not match {dirs} direction(s), {g} gates, hidden {h}, input {inp}",
            w.shape(),
            r.shape()
        ));
    }
    let mut xd: Vec<T> = vals(x)?;
    if layout1 {
        xd = swap01(&xd, batch, seq, inp);
    }
    let wd: Vec<T> = vals(w)?;
    let rd: Vec<T> = vals(r)?;
    let bd: Vec<T> = match a.opt(3) {
        Some(b) => {
            let v = vals(b)?;
            if v.len() != dirs * 2 * gh {
                return Err(format!("B must have shape [{dirs}, {}]", 2 * gh));
            }
            v
        }
        None => vec![T::ZERO; dirs * 2 * gh],
    };
    let lens: Vec<usize> = match a.opt(4) {
        Some(s) => s
            .to_i64_vec()?
            .into_iter()
            .map(|v| (v.max(0) as usize).min(seq))
            .collect(),
        None => vec![seq; batch],
    };
    if lens.len() != batch {
        return Err("sequence_lens must have one entry per batch".into());
    }
    let state = |i: usize| -> Result<Vec<T>, String> {
        match a.opt(i) {
            Some(v) => {
                let d = vals(v)?;
                if d.len() != dirs * batch * h {
                    return Err(format!(
                        "initial state must have {} elements",
                        dirs * batch * h
                    ));
                }
                Ok(if layout1 {
                    swap01(&d, batch, dirs, h)
                } else {
                    d
                })
            }
            None => Ok(vec![T::ZERO; dirs * batch * h]),
        }
    };
    let h0 = state(5)?;
    let c0 = if cell == Cell::Lstm {
        state(6)?
    } else {
        Vec::new()
    };
    let peep: Vec<T> = match (cell, a.opt(7)) {
        (Cell::Lstm, Some(p)) => {
            let v = vals(p)?;
            if v.len() != dirs * 3 * h {
                return Err(format!("P must have shape [{dirs}, {}]", 3 * h));
            }
            v
        }
        _ => vec![T::ZERO; dirs * 3 * h],
    };
    let acts = parse_acts(cell, at, dirs)?;
    let per = cell.default_acts().len();
    let clip = at.clip.map(|c| T::c(c as f64));
    let cl = |v: T| match clip {
        Some(c) => {
            if v > c {
                c
            } else if v < -c {
                -c
            } else {
                v
            }
        }
        None => v,
    };

    let mut y = vec![T::ZERO; seq * dirs * batch * h];
    let mut yh = vec![T::ZERO; dirs * batch * h];
    let mut yc = vec![
        T::ZERO;
        if cell == Cell::Lstm {
            dirs * batch * h
        } else {
            0
        }
    ];
    for d in 0..dirs {
        let reverse = at.direction == "reverse" || d == 1;
        let wdir = &wd[d * gh * inp..(d + 1) * gh * inp];
        let rdir = &rd[d * gh * h..(d + 1) * gh * h];
        let wb = &bd[d * 2 * gh..d * 2 * gh + gh];
        let rb = &bd[d * 2 * gh + gh..(d + 1) * 2 * gh];
        let act = &acts[d * per..(d + 1) * per];
        // Input projection for all steps: [seq·batch, gh] = X · Wᵀ.
        let mut xp = vec![T::ZERO; seq * batch * gh];
        gemm_into(
            seq * batch,
            gh,
            inp,
            &xd,
            (inp, 1),
            wdir,
            (1, inp),
            &mut xp,
            T::ONE,
            false,
            true,
        );
        let mut hs: Vec<T> = h0[d * batch * h..(d + 1) * batch * h].to_vec();
        let mut cs: Vec<T> = if cell == Cell::Lstm {
            c0[d * batch * h..(d + 1) * batch * h].to_vec()
        } else {
            Vec::new()
        };
        let pd = &peep[d * 3 * h..(d + 1) * 3 * h];
        let mut hp = vec![T::ZERO; batch * gh];
        for step in 0..seq {
            // Recurrent projection: [batch, gh] = H · Rᵀ.
            gemm_into(
                batch,
                gh,
                h,
                &hs,
                (h, 1),
                rdir,
                (1, h),
                &mut hp,
                T::ONE,
                false,
                false,
            );
            let mut new_h = hs.clone();
            for b in 0..batch {
                let len = lens[b];
                if step >= len {
                    continue;
                }
                let t = if reverse { len - 1 - step } else { step };
                let xr = &xp[(t * batch + b) * gh..(t * batch + b + 1) * gh];
                let hr = &hp[b * gh..(b + 1) * gh];
                let hprev = &hs[b * h..(b + 1) * h];
                match cell {
                    Cell::Rnn => {
                        for j in 0..h {
                            new_h[b * h + j] = act[0].apply(cl(xr[j] + hr[j] + wb[j] + rb[j]));
                        }
                    }
                    Cell::Gru => {
                        // Gate order z, r, h.
                        let mut z = vec![T::ZERO; h];
                        let mut rg = vec![T::ZERO; h];
                        for j in 0..h {
                            z[j] = act[0].apply(cl(xr[j] + hr[j] + wb[j] + rb[j]));
                            rg[j] = act[0].apply(cl(xr[h + j] + hr[h + j] + wb[h + j] + rb[h + j]));
                        }
                        let rh: Vec<T> = if at.linear_before_reset {
                            (0..h)
                                .map(|j| rg[j] * (hr[2 * h + j] + rb[2 * h + j]))
                                .collect()
                        } else {
                            // (r ⊙ H) · Rhᵀ + Rbh
                            let rhp: Vec<T> = (0..h).map(|j| rg[j] * hprev[j]).collect();
                            let rhr = &rdir[2 * h * h..3 * h * h];
                            (0..h)
                                .map(|j| {
                                    let mut s = rb[2 * h + j];
                                    for k in 0..h {
                                        s += rhp[k] * rhr[j * h + k];
                                    }
                                    s
                                })
                                .collect()
                        };
                        for j in 0..h {
                            let hh = act[1].apply(cl(xr[2 * h + j] + wb[2 * h + j] + rh[j]));
                            new_h[b * h + j] = (T::ONE - z[j]) * hh + z[j] * hprev[j];
                        }
                    }
                    Cell::Lstm => {
                        // Gate order i, o, f, c; peepholes i, o, f.
                        let cprev = &mut cs[b * h..(b + 1) * h];
                        for j in 0..h {
                            let pre = |k: usize| {
                                xr[k * h + j] + hr[k * h + j] + wb[k * h + j] + rb[k * h + j]
                            };
                            let i = act[0].apply(cl(pre(0) + pd[j] * cprev[j]));
                            let f = if at.input_forget {
                                T::ONE - i
                            } else {
                                act[0].apply(cl(pre(2) + pd[2 * h + j] * cprev[j]))
                            };
                            let cc = act[1].apply(cl(pre(3)));
                            let c_new = f * cprev[j] + i * cc;
                            let o = act[0].apply(cl(pre(1) + pd[h + j] * c_new));
                            new_h[b * h + j] = o * act[2].apply(c_new);
                            cprev[j] = c_new;
                        }
                    }
                }
                let dst = ((t * dirs + d) * batch + b) * h;
                y[dst..dst + h].copy_from_slice(&new_h[b * h..(b + 1) * h]);
            }
            hs = new_h;
        }
        yh[d * batch * h..(d + 1) * batch * h].copy_from_slice(&hs);
        if cell == Cell::Lstm {
            yc[d * batch * h..(d + 1) * batch * h].copy_from_slice(&cs);
        }
    }
    Ok(Outs {
        y,
        yh,
        yc,
        seq,
        batch,
        dirs,
        h,
    })
}

fn pack<T: Float>(o: Outs<T>, cell: Cell, layout1: bool) -> Result<Vec<Shaped<T>>, String> {
    let Outs {
        y,
        yh,
        yc,
        seq,
        batch,
        dirs,
        h,
    } = o;
    let mut out = Vec::new();
    if layout1 {
        // [seq, dirs, batch, h] -> [batch, seq, dirs, h]
        let mut y1 = Vec::with_capacity(y.len());
        for b in 0..batch {
            for t in 0..seq {
                for d in 0..dirs {
                    let s = ((t * dirs + d) * batch + b) * h;
                    y1.extend_from_slice(&y[s..s + h]);
                }
            }
        }
        out.push((vec![batch, seq, dirs, h], y1));
        out.push((vec![batch, dirs, h], swap01(&yh, dirs, batch, h)));
        if cell == Cell::Lstm {
            out.push((vec![batch, dirs, h], swap01(&yc, dirs, batch, h)));
        }
    } else {
        out.push((vec![seq, dirs, batch, h], y));
        out.push((vec![dirs, batch, h], yh));
        if cell == Cell::Lstm {
            out.push((vec![dirs, batch, h], yc));
        }
    }
    Ok(out)
}

/// RNN / GRU / LSTM → (Y, Y_h[, Y_c]).
pub(crate) fn rnn(cell: Cell, at: &RnnAttrs, a: &Args, _nout: usize) -> Result<Vec<Value>, String> {
    let x = a.req(0)?;
    let layout1 = at.layout == 1;
    match x {
        Value::F64(_) => {
            let o = run::<f64>(cell, at, a)?;
            pack(o, cell, layout1)?
                .into_iter()
                .map(|(s, v)| Ok(Value::F64(from_vec(&s, v)?)))
                .collect()
        }
        Value::F32(_) | Value::F16(_) | Value::BF16(_) => {
            let dt = x.dtype();
            let o = run::<f32>(cell, at, a)?;
            pack(o, cell, layout1)?
                .into_iter()
                .map(|(s, v)| crate::cast::cast(&Value::F32(from_vec(&s, v)?), dt, true))
                .collect()
        }
        o => Err(format!("expected a float input, got {}", o.dtype())),
    }
}
