//! ONNX LSTM ([`pare_k_lstm`]), f32, `layout = 0`, default activations (sigmoid, tanh, tanh):
//! forward, reverse or bidirectional, optional bias, initial states, peepholes, `clip` and
//! `input_forget`.
//!
//! Per direction, the input projection of the whole sequence is one GEMM with the two biases
//! fused in its epilogue: `XP = X·Wᵀ + (Wb + Rb)`, `[seq·batch, 4H]`. Each step then adds
//! `H·Rᵀ` into the step's rows of `XP` (a GEMM with `beta = 1`) and runs the cell update, a
//! vectorizable loop (sigmoid and tanh from the branch-free `exp`). Gate order is ONNX's
//! `i, o, f, c`.

use super::copy::{buf, guard, param_words, prod, slice_in, slice_out, word_usize};
use super::norm::{exp_fast, multiversion};
use super::{f64_word, word_f64, STATUS_INTERNAL, STATUS_PARAMS};
use crate::{pack_b, sgemm, sgemm_fused, sgemm_packed, Bias, Epilogue};

/// Direction of the recurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LstmDirection {
    /// `forward`
    Forward = 0,
    /// `reverse`
    Reverse = 1,
    /// `bidirectional`: direction 0 forward, direction 1 reverse
    Bidirectional = 2,
}

/// ONNX LSTM with `layout = 0`, no `sequence_lens`, default activations.
///
/// Words: `[seq, batch, input, hidden, direction, has_clip, clip (f64 bits), input_forget,
/// peephole]` (`direction`: [`LstmDirection`] code; flags 0/1).
///
/// Bufs: `[x, w, r, b|null, h0|null, c0|null, y|null, yh|null, yc|null, scratch, p]`, with
/// `dirs` = 2 for bidirectional, else 1, `H` = `hidden`:
/// - `x` `[seq, batch, input]`, `w` `[dirs, 4H, input]`, `r` `[dirs, 4H, H]`,
///   `b` `[dirs, 8H]` (`Wb` then `Rb`), `h0` / `c0` `[dirs, batch, H]`;
/// - outputs `y` `[seq, dirs, batch, H]`, `yh` / `yc` `[dirs, batch, H]`, each optional;
/// - `scratch`: [`LstmParams::scratch_bytes`] bytes, 4-byte aligned;
/// - `p` `[dirs, 3H]` (peepholes i, o, f): the 11th pointer, read only when `peephole` is set
///   (the array may then have 10 entries).
///
/// Outputs must not overlap inputs or scratch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LstmParams {
    /// Sequence length.
    pub seq: usize,
    /// Batch size.
    pub batch: usize,
    /// Input features.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Direction.
    pub direction: LstmDirection,
    /// `clip`: pre-activations are clamped to `[-clip, clip]`.
    pub clip: Option<f64>,
    /// `input_forget`: `f = 1 - i`.
    pub input_forget: bool,
    /// Whether `bufs[10]` holds the peepholes.
    pub peephole: bool,
}

impl LstmParams {
    /// Number of parameter words.
    pub const WORDS: usize = 9;

    /// Number of directions.
    pub fn dirs(&self) -> usize {
        if self.direction == LstmDirection::Bidirectional {
            2
        } else {
            1
        }
    }

    /// The parameter words.
    pub fn encode(&self) -> Vec<i64> {
        vec![
            self.seq as i64,
            self.batch as i64,
            self.input as i64,
            self.hidden as i64,
            self.direction as i64,
            self.clip.is_some() as i64,
            f64_word(self.clip.unwrap_or(0.0)),
            self.input_forget as i64,
            self.peephole as i64,
        ]
    }

    /// Parses words produced by [`LstmParams::encode`]; `None` if malformed.
    pub fn decode(w: &[i64]) -> Option<LstmParams> {
        if w.len() != Self::WORDS || [w[5], w[7], w[8]].iter().any(|f| !matches!(f, 0 | 1)) {
            return None;
        }
        let direction = match w[4] {
            0 => LstmDirection::Forward,
            1 => LstmDirection::Reverse,
            2 => LstmDirection::Bidirectional,
            _ => return None,
        };
        Some(LstmParams {
            seq: word_usize(w[0])?,
            batch: word_usize(w[1])?,
            input: word_usize(w[2])?,
            hidden: word_usize(w[3])?,
            direction,
            clip: (w[5] == 1).then(|| word_f64(w[6])),
            input_forget: w[7] == 1,
            peephole: w[8] == 1,
        })
    }

    /// f32 elements of scratch: `XP` (`seq·batch·4H`), the summed bias (`4H`), `h` and `c`
    /// (`batch·H` each).
    fn scratch_elems(&self) -> Option<usize> {
        let g = prod(&[self.seq, self.batch, 4, self.hidden]).ok()?;
        let s = prod(&[self.batch, self.hidden, 2]).ok()?;
        g.checked_add(s)?
            .checked_add(4usize.checked_mul(self.hidden)?)
    }

    /// Bytes of the scratch buffer.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_elems()
            .and_then(|e| e.checked_mul(4))
            .unwrap_or(usize::MAX)
    }

    /// Elements of each operand: `x, w, r, b, h0 (= c0 = yh = yc), y, p`.
    fn lens(&self) -> Option<[usize; 6]> {
        let (d, h) = (self.dirs(), self.hidden);
        Some([
            prod(&[self.seq, self.batch, self.input]).ok()?,
            prod(&[d, 4, h, self.input]).ok()?,
            prod(&[d, 4, h, h]).ok()?,
            prod(&[d, 8, h]).ok()?,
            prod(&[d, self.batch, h]).ok()?,
            prod(&[self.seq, d, self.batch, h]).ok()?,
        ])
    }
}

/// The LSTM's inputs.
#[derive(Debug, Clone, Copy)]
pub struct LstmInputs<'a> {
    /// `[seq, batch, input]`
    pub x: &'a [f32],
    /// `[dirs, 4H, input]`
    pub w: &'a [f32],
    /// `[dirs, 4H, H]`
    pub r: &'a [f32],
    /// `[dirs, 8H]`
    pub b: Option<&'a [f32]>,
    /// `[dirs, batch, H]`
    pub h0: Option<&'a [f32]>,
    /// `[dirs, batch, H]`
    pub c0: Option<&'a [f32]>,
    /// `[dirs, 3H]` (used only when `LstmParams::peephole`)
    pub p: Option<&'a [f32]>,
}

/// The LSTM's outputs (each optional).
#[derive(Debug, Default)]
pub struct LstmOutputs<'a> {
    /// `[seq, dirs, batch, H]`
    pub y: Option<&'a mut [f32]>,
    /// `[dirs, batch, H]`
    pub yh: Option<&'a mut [f32]>,
    /// `[dirs, batch, H]`
    pub yc: Option<&'a mut [f32]>,
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp_fast(2.0 * x) + 1.0)
}

multiversion! {
    /// One cell update for one batch row: `g` the 4H pre-activations (i, o, f, c) without
    /// peepholes, `c` / `h` the state (updated), `p` the 3H peepholes (zeros if none).
    fn cell(g: &[f32], c: &mut [f32], h: &mut [f32], p: &[f32], clip: f32, input_forget: bool) -> () {
        let n = h.len();
        let (gi, rest) = g.split_at(n);
        let (go, rest) = rest.split_at(n);
        let (gf, gc) = rest.split_at(n);
        let (pi, rest) = p.split_at(n);
        let (po, pf) = rest.split_at(n);
        for j in 0..n {
            let cp = c[j];
            let i = sigmoid((gi[j] + pi[j] * cp).clamp(-clip, clip));
            let f = if input_forget {
                1.0 - i
            } else {
                sigmoid((gf[j] + pf[j] * cp).clamp(-clip, clip))
            };
            let cc = tanh(gc[j].clamp(-clip, clip));
            let cn = f * cp + i * cc;
            let o = sigmoid((go[j] + po[j] * cn).clamp(-clip, clip));
            c[j] = cn;
            h[j] = o * tanh(cn);
        }
    }
}

/// Batch sizes up to which the recurrent product is computed as dot products over R.
const GEMV_MAX_BATCH: usize = 4;

multiversion! {
    /// `g[j] += R[j, :] · h` for every row `j` of the row-major `R` (`g.len()` rows of
    /// `h.len()` floats): four rows at a time with eight-lane partial sums, so that the loop
    /// vectorizes without reassociating a single sum.
    fn gemv_acc(r: &[f32], h: &[f32], g: &mut [f32]) -> () {
        let k = h.len();
        let kv = k / 8 * 8;
        let rows = g.len();
        let mut j = 0;
        while j + 4 <= rows {
            let rs = &r[j * k..(j + 4) * k];
            let (r0, rest) = rs.split_at(k);
            let (r1, rest) = rest.split_at(k);
            let (r2, r3) = rest.split_at(k);
            let mut acc = [[0f32; 8]; 4];
            for c in (0..kv).step_by(8) {
                let hv: &[f32; 8] = h[c..c + 8].try_into().expect("8 lanes");
                for (a, row) in acc.iter_mut().zip([r0, r1, r2, r3]) {
                    let rv: &[f32; 8] = row[c..c + 8].try_into().expect("8 lanes");
                    for l in 0..8 {
                        a[l] = rv[l].mul_add(hv[l], a[l]);
                    }
                }
            }
            for (q, (a, row)) in acc.iter().zip([r0, r1, r2, r3]).enumerate() {
                let mut s = a.iter().sum::<f32>();
                for c in kv..k {
                    s = row[c].mul_add(h[c], s);
                }
                g[j + q] += s;
            }
            j += 4;
        }
        for (jj, gj) in g.iter_mut().enumerate().skip(j) {
            let row = &r[jj * k..(jj + 1) * k];
            *gj += row.iter().zip(h).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

/// LSTM (see [`LstmParams`]); `scratch` holds at least `scratch_bytes() / 4` f32. Nothing is
/// written on a parameter error.
pub fn lstm(
    p: &LstmParams,
    inp: &LstmInputs<'_>,
    out: LstmOutputs<'_>,
    scratch: &mut [f32],
    threads: usize,
) -> Result<(), i32> {
    let [nx, nw, nr, nb, ns, ny] = p.lens().ok_or(STATUS_PARAMS)?;
    let (dirs, hs, batch, seq, ni) = (p.dirs(), p.hidden, p.batch, p.seq, p.input);
    let g4 = 4 * hs;
    let short = |s: Option<&[f32]>, n: usize| s.is_some_and(|s| s.len() < n);
    let short_mut = |s: &Option<&mut [f32]>, n: usize| s.as_ref().is_some_and(|s| s.len() < n);
    if inp.x.len() < nx
        || inp.w.len() < nw
        || inp.r.len() < nr
        || short(inp.b, nb)
        || short(inp.h0, ns)
        || short(inp.c0, ns)
        || short_mut(&out.y, ny)
        || short_mut(&out.yh, ns)
        || short_mut(&out.yc, ns)
        || scratch.len() < p.scratch_elems().ok_or(STATUS_PARAMS)?
    {
        return Err(STATUS_PARAMS);
    }
    let peep = if p.peephole {
        match inp.p {
            Some(v) if v.len() >= dirs * 3 * hs => Some(v),
            _ => return Err(STATUS_PARAMS),
        }
    } else {
        None
    };
    let clip = p.clip.map_or(f32::INFINITY, |c| c as f32);
    if clip.is_nan() || clip < 0.0 {
        return Err(STATUS_PARAMS);
    }
    let LstmOutputs {
        mut y,
        mut yh,
        mut yc,
    } = out;
    let (xp, rest) = scratch.split_at_mut(seq * batch * g4);
    let (bsum, rest) = rest.split_at_mut(g4);
    let (h, rest) = rest.split_at_mut(batch * hs);
    let c = &mut rest[..batch * hs];
    let zeros = vec![0.0f32; if peep.is_some() { 0 } else { 3 * hs }];
    for d in 0..dirs {
        let reverse = p.direction == LstmDirection::Reverse || d == 1;
        match inp.b {
            Some(b) => {
                let b = &b[d * 8 * hs..(d + 1) * 8 * hs];
                for (j, s) in bsum.iter_mut().enumerate() {
                    *s = b[j] + b[g4 + j];
                }
            }
            None => bsum.fill(0.0),
        }
        let wd = &inp.w[d * g4 * ni..(d + 1) * g4 * ni];
        let rd = &inp.r[d * g4 * hs..(d + 1) * g4 * hs];
        let epi = Epilogue {
            bias: Bias::PerColumn(bsum),
            ..Epilogue::default()
        };
        sgemm_fused(
            seq * batch,
            g4,
            ni,
            1.0,
            inp.x,
            ni,
            false,
            wd,
            ni,
            true,
            0.0,
            xp,
            g4,
            &epi,
            threads,
        )
        .map_err(|_| STATUS_INTERNAL)?;
        let state = |s: Option<&[f32]>, dst: &mut [f32]| match s {
            Some(v) => dst.copy_from_slice(&v[d * batch * hs..(d + 1) * batch * hs]),
            None => dst.fill(0.0),
        };
        state(inp.h0, h);
        state(inp.c0, c);
        let pd: &[f32] = match peep {
            Some(v) => &v[d * 3 * hs..(d + 1) * 3 * hs],
            None => &zeros,
        };
        // The recurrent product: a few batch rows read R directly (dot products, no
        // packing); more rows use R packed once for the whole sequence.
        let packed_r = if batch > GEMV_MAX_BATCH && seq > 1 {
            Some(pack_b(hs, g4, rd, hs, true).map_err(|_| STATUS_INTERNAL)?)
        } else {
            None
        };
        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let g = &mut xp[t * batch * g4..(t + 1) * batch * g4];
            if step > 0 || inp.h0.is_some() {
                if batch <= GEMV_MAX_BATCH {
                    for b in 0..batch {
                        gemv_acc(rd, &h[b * hs..(b + 1) * hs], &mut g[b * g4..(b + 1) * g4]);
                    }
                } else if let Some(pr) = &packed_r {
                    sgemm_packed(
                        batch,
                        1.0,
                        h,
                        hs,
                        false,
                        pr,
                        1.0,
                        g,
                        g4,
                        &Epilogue::default(),
                        threads,
                    )
                    .map_err(|_| STATUS_INTERNAL)?;
                } else {
                    sgemm(
                        batch, g4, hs, 1.0, h, hs, false, rd, hs, true, 1.0, g, g4, threads,
                    )
                    .map_err(|_| STATUS_INTERNAL)?;
                }
            }
            for b in 0..batch {
                cell(
                    &g[b * g4..(b + 1) * g4],
                    &mut c[b * hs..(b + 1) * hs],
                    &mut h[b * hs..(b + 1) * hs],
                    pd,
                    clip,
                    p.input_forget,
                );
            }
            if let Some(y) = y.as_deref_mut() {
                let at = (t * dirs + d) * batch * hs;
                y[at..at + batch * hs].copy_from_slice(h);
            }
        }
        if let Some(yh) = yh.as_deref_mut() {
            yh[d * batch * hs..(d + 1) * batch * hs].copy_from_slice(h);
        }
        if let Some(yc) = yc.as_deref_mut() {
            yc[d * batch * hs..(d + 1) * batch * hs].copy_from_slice(c);
        }
    }
    Ok(())
}

/// An optional input: `None` for a null pointer.
///
/// # Safety
/// As `slice_in`.
unsafe fn opt_in<'a>(p: *mut u8, len: usize) -> Result<Option<&'a [f32]>, i32> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { slice_in::<f32>(p, len) }.map(Some)
    }
}

/// An optional output: `None` for a null pointer.
///
/// # Safety
/// As `slice_out`.
unsafe fn opt_out<'a>(p: *mut u8, len: usize) -> Result<Option<&'a mut [f32]>, i32> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { slice_out::<f32>(p, len) }.map(Some)
    }
}

/// C entry point of [`lstm`]; see [`LstmParams`].
///
/// # Safety
/// `params` holds an [`LstmParams`] encoding; `bufs` holds the pointers it documents (null for
/// absent optional operands), outputs and scratch not overlapping anything else.
#[no_mangle]
pub unsafe extern "C" fn pare_k_lstm(
    params: *const i64,
    bufs: *const *mut u8,
    threads: usize,
) -> i32 {
    guard(|| {
        // SAFETY: the caller passes WORDS words.
        let p = LstmParams::decode(unsafe { param_words(params, LstmParams::WORDS)? })
            .ok_or(STATUS_PARAMS)?;
        let [nx, nw, nr, nb, ns, ny] = p.lens().ok_or(STATUS_PARAMS)?;
        let nscratch = p.scratch_elems().ok_or(STATUS_PARAMS)?;
        let np = prod(&[p.dirs(), 3, p.hidden])?;
        // SAFETY: the caller passes the documented buffers (10 pointers, 11 with peepholes)
        // with these lengths; outputs and scratch overlap nothing else.
        unsafe {
            let inputs = LstmInputs {
                x: slice_in::<f32>(buf(bufs, 0)?, nx)?,
                w: slice_in::<f32>(buf(bufs, 1)?, nw)?,
                r: slice_in::<f32>(buf(bufs, 2)?, nr)?,
                b: opt_in(buf(bufs, 3)?, nb)?,
                h0: opt_in(buf(bufs, 4)?, ns)?,
                c0: opt_in(buf(bufs, 5)?, ns)?,
                p: if p.peephole {
                    opt_in(buf(bufs, 10)?, np)?
                } else {
                    None
                },
            };
            let outputs = LstmOutputs {
                y: opt_out(buf(bufs, 6)?, ny)?,
                yh: opt_out(buf(bufs, 7)?, ns)?,
                yc: opt_out(buf(bufs, 8)?, ns)?,
            };
            let scratch = slice_out::<f32>(buf(bufs, 9)?, nscratch)?;
            lstm(&p, &inputs, outputs, scratch, threads)
        }
    })
}
