//! Convolution (im2col + GEMM), transposed convolution (GEMM + col2im) and pooling, for any
//! number of spatial dimensions.

use crate::matmul::gemm_into;
use crate::num::{contiguous, from_vec, Float, PAR_THRESHOLD};
use crate::Value;
use ndarray::ArrayD;
use pare_ir::op::{ConvAttrs, ConvTransposeAttrs, PoolAttrs};
use rayon::prelude::*;

/// Spatial geometry of a sliding-window op.
#[derive(Clone, Debug)]
pub(crate) struct Geom {
    pub(crate) inp: Vec<usize>,
    pub(crate) k: Vec<usize>,
    pub(crate) s: Vec<usize>,
    pub(crate) d: Vec<usize>,
    pub(crate) pb: Vec<i64>,
    pub(crate) pe: Vec<i64>,
    pub(crate) out: Vec<usize>,
}

fn attr_vec(v: Option<&Vec<i64>>, n: usize, default: i64, name: &str) -> Result<Vec<i64>, String> {
    match v {
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) if v.is_empty() => Ok(vec![default; n]),
        Some(v) => Err(format!("{name} has {} entries, expected {n}", v.len())),
        None => Ok(vec![default; n]),
    }
}

fn pos(v: Vec<i64>, name: &str) -> Result<Vec<usize>, String> {
    v.into_iter()
        .map(|x| {
            usize::try_from(x)
                .ok()
                .filter(|&x| x > 0)
                .ok_or_else(|| format!("{name} must be positive"))
        })
        .collect()
}

/// Computes padding and output extents (ONNX rules for auto_pad and ceil_mode).
#[allow(clippy::too_many_arguments)]
pub(crate) fn geometry(
    auto_pad: &str,
    inp: &[usize],
    kernel: &[usize],
    strides: Option<&Vec<i64>>,
    dilations: Option<&Vec<i64>>,
    pads: Option<&Vec<i64>>,
    ceil_mode: bool,
) -> Result<Geom, String> {
    let n = inp.len();
    let s = pos(attr_vec(strides, n, 1, "strides")?, "strides")?;
    let d = pos(attr_vec(dilations, n, 1, "dilations")?, "dilations")?;
    let p = attr_vec(pads, 2 * n, 0, "pads")?;
    let mut pb = p[..n].to_vec();
    let mut pe = p[n..].to_vec();
    let mut out = vec![0; n];
    for i in 0..n {
        let ek = ((kernel[i] - 1) * d[i] + 1) as i64;
        let x = inp[i] as i64;
        let st = s[i] as i64;
        match auto_pad {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = (x + st - 1) / st;
                let total = ((o - 1) * st + ek - x).max(0);
                let small = total / 2;
                if auto_pad == "SAME_UPPER" {
                    pb[i] = small;
                    pe[i] = total - small;
                } else {
                    pb[i] = total - small;
                    pe[i] = small;
                }
                out[i] = o.max(0) as usize;
            }
            "VALID" => {
                pb[i] = 0;
                pe[i] = 0;
                out[i] = if x >= ek {
                    ((x - ek) / st + 1) as usize
                } else {
                    0
                };
            }
            "NOTSET" | "" => {
                let span = x + pb[i] + pe[i] - ek;
                if span < 0 {
                    return Err(format!(
                        "kernel extent {ek} exceeds padded input {}",
                        x + pb[i] + pe[i]
                    ));
                }
                let mut o = if ceil_mode {
                    (span + st - 1) / st + 1
                } else {
                    span / st + 1
                };
                if ceil_mode && (o - 1) * st >= x + pb[i] {
                    o -= 1;
                }
                out[i] = o as usize;
            }
            a => return Err(format!("unknown auto_pad '{a}'")),
        }
    }
    Ok(Geom {
        inp: inp.to_vec(),
        k: kernel.to_vec(),
        s,
        d,
        pb,
        pe,
        out,
    })
}

impl Geom {
    /// For dim `i`, kernel offset `k`, output index `o`: the input index, if inside.
    fn tables(&self) -> Vec<Vec<Vec<Option<usize>>>> {
        (0..self.inp.len())
            .map(|i| {
                (0..self.k[i])
                    .map(|k| {
                        (0..self.out[i])
                            .map(|o| {
                                let x = (o * self.s[i] + k * self.d[i]) as i64 - self.pb[i];
                                (x >= 0 && x < self.inp[i] as i64).then_some(x as usize)
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

/// Decomposes a row-major linear index.
fn unravel(mut lin: usize, shape: &[usize], out: &mut [usize]) {
    for d in (0..shape.len()).rev() {
        out[d] = lin % shape[d];
        lin /= shape[d];
    }
}

/// im2col for one image-group: `x` is `[c, in...]`; `cols` receives `[c·K, OUT]`.
fn im2col<T: Float>(x: &[T], c: usize, g: &Geom, tabs: &[Vec<Vec<Option<usize>>>], cols: &mut [T]) {
    let nsp = g.inp.len();
    let in_sz: usize = g.inp.iter().product();
    let out_sz: usize = g.out.iter().product();
    let ksz: usize = g.k.iter().product();
    if out_sz == 0 || nsp == 0 {
        return;
    }
    let in_st = crate::num::strides_of(&g.inp);
    let last = nsp - 1;
    let fill = |r: usize, row: &mut [T]| {
        let ci = r / ksz;
        let mut kk = vec![0usize; nsp];
        unravel(r % ksz, &g.k, &mut kk);
        let xc = &x[ci * in_sz..(ci + 1) * in_sz];
        let tl = &tabs[last][kk[last]];
        let outer: usize = g.out[..last].iter().product();
        let mut oi = vec![0usize; last];
        for ob in 0..outer {
            unravel(ob, &g.out[..last], &mut oi);
            let mut base = Some(0usize);
            for dd in 0..last {
                base = match (base, tabs[dd][kk[dd]][oi[dd]]) {
                    (Some(b), Some(i)) => Some(b + i * in_st[dd]),
                    _ => None,
                };
            }
            let dst = &mut row[ob * g.out[last]..(ob + 1) * g.out[last]];
            match base {
                Some(b) => {
                    for (o, t) in dst.iter_mut().zip(tl) {
                        *o = match t {
                            Some(i) => xc[b + i],
                            None => T::ZERO,
                        };
                    }
                }
                None => dst.iter_mut().for_each(|o| *o = T::ZERO),
            }
        }
    };
    if c * ksz * out_sz >= PAR_THRESHOLD {
        cols.par_chunks_mut(out_sz)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    } else {
        cols.chunks_mut(out_sz)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    }
}

fn kernel_of(w: &[usize], ks: Option<&Vec<i64>>) -> Result<Vec<usize>, String> {
    let from_w = w[2..].to_vec();
    if let Some(k) = ks {
        let k: Vec<usize> = k.iter().map(|&v| v.max(0) as usize).collect();
        if k != from_w {
            return Err(format!(
                "kernel_shape {k:?} disagrees with weight shape {w:?}"
            ));
        }
    }
    if from_w.contains(&0) {
        return Err(format!("kernel has a zero extent: {w:?}"));
    }
    Ok(from_w)
}

/// Generic float convolution (also the core of ConvInteger/QLinearConv, in f64).
pub(crate) fn conv_t<T: Float>(
    at: &ConvAttrs,
    x: &ArrayD<T>,
    w: &ArrayD<T>,
    b: Option<&ArrayD<T>>,
) -> Result<ArrayD<T>, String> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "Conv expects X [N,C,...] and W [M,C/group,...] of equal rank, got {xs:?} and {ws:?}"
        ));
    }
    let (n, c) = (xs[0], xs[1]);
    let (m, cg) = (ws[0], ws[1]);
    let groups = at.group.max(1) as usize;
    if cg * groups != c || m % groups != 0 {
        return Err(format!("channels: X has {c}, W {ws:?}, group {groups}"));
    }
    let mg = m / groups;
    let kernel = kernel_of(ws, at.kernel_shape.as_ref())?;
    let g = geometry(
        &at.auto_pad,
        &xs[2..],
        &kernel,
        at.strides.as_ref(),
        at.dilations.as_ref(),
        at.pads.as_ref(),
        false,
    )?;
    let in_sz: usize = g.inp.iter().product();
    let out_sz: usize = g.out.iter().product();
    let ksz: usize = kernel.iter().product();
    let xd = contiguous(x);
    let wd = contiguous(w);
    let bias: Option<Vec<T>> = match b {
        Some(b) if b.len() == m => Some(contiguous(b).into_owned()),
        Some(b) => return Err(format!("bias has {} elements, expected {m}", b.len())),
        None => None,
    };
    let mut out = vec![T::ZERO; n * m * out_sz];
    let pointwise =
        ksz == 1 && g.s.iter().all(|&s| s == 1) && g.pb.iter().chain(&g.pe).all(|&p| p == 0);
    let tabs = if pointwise { Vec::new() } else { g.tables() };
    let kdim = cg * ksz;
    let item = |idx: usize, y: &mut [T], par: bool| {
        let (ni, gi) = (idx / groups, idx % groups);
        let xg = &xd[(ni * c + gi * cg) * in_sz..(ni * c + (gi + 1) * cg) * in_sz];
        let wg = &wd[gi * mg * kdim..(gi + 1) * mg * kdim];
        if pointwise {
            gemm_into(
                mg,
                out_sz,
                kdim,
                wg,
                (kdim, 1),
                xg,
                (out_sz, 1),
                y,
                T::ONE,
                false,
                par,
            );
        } else {
            let mut cols = vec![T::ZERO; kdim * out_sz];
            im2col(xg, cg, &g, &tabs, &mut cols);
            gemm_into(
                mg,
                out_sz,
                kdim,
                wg,
                (kdim, 1),
                &cols,
                (out_sz, 1),
                y,
                T::ONE,
                false,
                par,
            );
        }
        if let Some(bias) = &bias {
            for (mi, row) in y.chunks_mut(out_sz.max(1)).enumerate() {
                let bv = bias[gi * mg + mi];
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    };
    let items = n * groups;
    let chunk = mg * out_sz;
    if chunk > 0 {
        let work = mg * out_sz * kdim;
        if items > 1 && work < (1 << 22) {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, y)| item(i, y, false));
        } else {
            out.chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, y)| item(i, y, true));
        }
    }
    let mut shape = vec![n, m];
    shape.extend_from_slice(&g.out);
    from_vec(&shape, out)
}

/// A float kernel of the Conv family, generic over the element type.
trait FloatKernel {
    fn run<T: Float>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayD<T>,
        b: Option<&ArrayD<T>>,
    ) -> Result<ArrayD<T>, String>;
}

impl FloatKernel for ConvAttrs {
    fn run<T: Float>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayD<T>,
        b: Option<&ArrayD<T>>,
    ) -> Result<ArrayD<T>, String> {
        conv_t(self, x, w, b)
    }
}

impl FloatKernel for ConvTransposeAttrs {
    fn run<T: Float>(
        &self,
        x: &ArrayD<T>,
        w: &ArrayD<T>,
        b: Option<&ArrayD<T>>,
    ) -> Result<ArrayD<T>, String> {
        conv_transpose_t(self, x, w, b)
    }
}

/// Runs `k` on X, W and the optional bias of one float type; f16 and bf16 compute in f32.
fn dispatch_float(
    op: &str,
    k: &impl FloatKernel,
    x: &Value,
    w: &Value,
    b: Option<&Value>,
) -> Result<Value, String> {
    macro_rules! bget {
        ($v:ident) => {
            match b {
                None => None,
                Some(Value::$v(a)) => Some(a),
                Some(o) => return Err(format!("bias has type {}, unlike X", o.dtype())),
            }
        };
    }
    Ok(match (x, w) {
        (Value::F32(p), Value::F32(q)) => Value::F32(k.run(p, q, bget!(F32))?),
        (Value::F64(p), Value::F64(q)) => Value::F64(k.run(p, q, bget!(F64))?),
        (Value::F16(p), Value::F16(q)) => {
            let bb = bget!(F16).map(|a| a.mapv(|v| v.to_f32()));
            let r = k.run(
                &p.mapv(|v| v.to_f32()),
                &q.mapv(|v| v.to_f32()),
                bb.as_ref(),
            )?;
            Value::F16(r.mapv(half::f16::from_f32))
        }
        (Value::BF16(p), Value::BF16(q)) => {
            let bb = bget!(BF16).map(|a| a.mapv(|v| v.to_f32()));
            let r = k.run(
                &p.mapv(|v| v.to_f32()),
                &q.mapv(|v| v.to_f32()),
                bb.as_ref(),
            )?;
            Value::BF16(r.mapv(half::bf16::from_f32))
        }
        (p, q) => {
            return Err(format!(
                "{op}: unsupported types {} and {}",
                p.dtype(),
                q.dtype()
            ))
        }
    })
}

/// Conv.
pub(crate) fn conv(
    at: &ConvAttrs,
    x: &Value,
    w: &Value,
    b: Option<&Value>,
) -> Result<Value, String> {
    dispatch_float("Conv", at, x, w, b)
}

fn conv_transpose_t<T: Float>(
    at: &ConvTransposeAttrs,
    x: &ArrayD<T>,
    w: &ArrayD<T>,
    b: Option<&ArrayD<T>>,
) -> Result<ArrayD<T>, String> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "ConvTranspose expects X [N,C,...] and W [C,M/group,...], got {xs:?} and {ws:?}"
        ));
    }
    let nsp = xs.len() - 2;
    let (n, c) = (xs[0], xs[1]);
    let groups = at.group.max(1) as usize;
    let mg = ws[1];
    let m = mg * groups;
    if ws[0] != c || c % groups != 0 {
        return Err(format!("channels: X has {c}, W {ws:?}, group {groups}"));
    }
    let cg = c / groups;
    let kernel = kernel_of(ws, at.kernel_shape.as_ref())?;
    let inp = &xs[2..];
    let s = pos(attr_vec(at.strides.as_ref(), nsp, 1, "strides")?, "strides")?;
    let d = pos(
        attr_vec(at.dilations.as_ref(), nsp, 1, "dilations")?,
        "dilations",
    )?;
    let op = attr_vec(at.output_padding.as_ref(), nsp, 0, "output_padding")?;
    let natural = |i: usize| {
        (s[i] * inp[i].saturating_sub(1)) as i64 + op[i] + ((kernel[i] - 1) * d[i] + 1) as i64
    };
    let given_out: Option<Vec<i64>> = at
        .output_shape
        .as_ref()
        .filter(|v| !v.is_empty())
        .map(|v| v[v.len().saturating_sub(nsp)..].to_vec());
    let same = matches!(at.auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER");
    let (pb, pe, out): (Vec<i64>, Vec<i64>, Vec<usize>) = if at.pads.is_none() && same {
        let target: Vec<i64> = given_out
            .clone()
            .unwrap_or_else(|| (0..nsp).map(|i| (inp[i] * s[i]) as i64).collect());
        let mut pb = vec![0; nsp];
        let mut pe = vec![0; nsp];
        for i in 0..nsp {
            let total = natural(i) - target[i];
            let half = total.div_euclid(2);
            if at.auto_pad == "SAME_UPPER" {
                pb[i] = half;
                pe[i] = total - half;
            } else {
                pb[i] = total - half;
                pe[i] = half;
            }
        }
        (pb, pe, target.iter().map(|&t| t.max(0) as usize).collect())
    } else {
        let p = attr_vec(at.pads.as_ref(), 2 * nsp, 0, "pads")?;
        let (pb, pe) = (p[..nsp].to_vec(), p[nsp..].to_vec());
        let out: Vec<usize> = match &given_out {
            Some(o) => o.iter().map(|&t| t.max(0) as usize).collect(),
            None => (0..nsp)
                .map(|i| (natural(i) - pb[i] - pe[i]).max(0) as usize)
                .collect(),
        };
        (pb, pe, out)
    };
    let _ = &pe;
    let in_sz: usize = inp.iter().product();
    let out_sz: usize = out.iter().product();
    let ksz: usize = kernel.iter().product();
    let xd = contiguous(x);
    let wd = contiguous(w);
    let bias: Option<Vec<T>> = match b {
        Some(b) if b.len() == m => Some(contiguous(b).into_owned()),
        Some(b) => return Err(format!("bias has {} elements, expected {m}", b.len())),
        None => None,
    };
    // Per dim: for kernel offset k and input index i, the output index if inside.
    let tabs: Vec<Vec<Vec<Option<usize>>>> = (0..nsp)
        .map(|dd| {
            (0..kernel[dd])
                .map(|k| {
                    (0..inp[dd])
                        .map(|i| {
                            let o = (i * s[dd] + k * d[dd]) as i64 - pb[dd];
                            (o >= 0 && o < out[dd] as i64).then_some(o as usize)
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let out_st = crate::num::strides_of(&out);
    let mut y = vec![T::ZERO; n * m * out_sz];
    let item = |idx: usize, yg: &mut [T], par: bool| {
        let (ni, gi) = (idx / groups, idx % groups);
        let xg = &xd[(ni * c + gi * cg) * in_sz..(ni * c + (gi + 1) * cg) * in_sz];
        let wg = &wd[gi * cg * mg * ksz..(gi + 1) * cg * mg * ksz];
        // cols[mg·K, IN] = Wgᵀ · Xg
        let rows = mg * ksz;
        let mut cols = vec![T::ZERO; rows * in_sz];
        gemm_into(
            rows,
            in_sz,
            cg,
            wg,
            (1, rows),
            xg,
            (in_sz, 1),
            &mut cols,
            T::ONE,
            false,
            par,
        );
        let mut kk = vec![0usize; nsp];
        let mut ii = vec![0usize; nsp];
        for r in 0..rows {
            let mi = r / ksz;
            unravel(r % ksz, &kernel, &mut kk);
            let ym = &mut yg[mi * out_sz..(mi + 1) * out_sz];
            let crow = &cols[r * in_sz..(r + 1) * in_sz];
            for (lin, &v) in crow.iter().enumerate() {
                unravel(lin, inp, &mut ii);
                let mut off = 0;
                let mut ok = true;
                for dd in 0..nsp {
                    match tabs[dd][kk[dd]][ii[dd]] {
                        Some(o) => off += o * out_st[dd],
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    ym[off] += v;
                }
            }
        }
        if let Some(bias) = &bias {
            for (mi, row) in yg.chunks_mut(out_sz.max(1)).enumerate() {
                let bv = bias[gi * mg + mi];
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    };
    let chunk = mg * out_sz;
    if chunk > 0 {
        if n * groups > 1 {
            y.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, yg)| item(i, yg, false));
        } else {
            y.chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, yg)| item(i, yg, true));
        }
    }
    let mut shape = vec![n, m];
    shape.extend_from_slice(&out);
    from_vec(&shape, y)
}

/// ConvTranspose.
pub(crate) fn conv_transpose(
    at: &ConvTransposeAttrs,
    x: &Value,
    w: &Value,
    b: Option<&Value>,
) -> Result<Value, String> {
    dispatch_float("ConvTranspose", at, x, w, b)
}

/// Pooling flavor.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PoolKind {
    Avg,
    Max,
    Lp(i64),
}

/// Generic pooling over `[N, C, spatial...]`; returns values and (for max) flat indices.
fn pool_t<T: Float>(
    kind: PoolKind,
    p: &PoolAttrs,
    x: &ArrayD<T>,
    want_idx: bool,
) -> Result<(ArrayD<T>, Option<ArrayD<i64>>), String> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(format!("pooling expects [N, C, spatial...], got {xs:?}"));
    }
    let nsp = xs.len() - 2;
    let kernel: Vec<usize> = p.kernel_shape.iter().map(|&k| k.max(1) as usize).collect();
    if kernel.len() != nsp {
        return Err(format!(
            "kernel_shape {:?} does not match {nsp} spatial dims",
            p.kernel_shape
        ));
    }
    let dil = if matches!(kind, PoolKind::Avg | PoolKind::Lp(_) | PoolKind::Max) {
        p.dilations.as_ref()
    } else {
        None
    };
    let g = geometry(
        &p.auto_pad,
        &xs[2..],
        &kernel,
        p.strides.as_ref(),
        dil,
        p.pads.as_ref(),
        p.ceil_mode,
    )?;
    let (n, c) = (xs[0], xs[1]);
    let in_sz: usize = g.inp.iter().product();
    let out_sz: usize = g.out.iter().product();
    let ksz: usize = kernel.iter().product();
    let xd = contiguous(x);
    let in_st = crate::num::strides_of(&g.inp);
    // Column-major flat index (storage_order = 1) strides.
    let mut col_st = vec![1usize; nsp];
    for dd in 1..nsp {
        col_st[dd] = col_st[dd - 1] * g.inp[dd - 1];
    }
    let mut y = vec![T::ZERO; n * c * out_sz];
    let mut idx = if want_idx {
        vec![0i64; n * c * out_sz]
    } else {
        Vec::new()
    };
    let lp = match kind {
        PoolKind::Lp(p) => p as f64,
        _ => 0.0,
    };
    // Kernel multi-indices, precomputed.
    let ktab: Vec<Vec<usize>> = (0..ksz)
        .map(|kl| {
            let mut kk = vec![0usize; nsp];
            unravel(kl, &kernel, &mut kk);
            kk
        })
        .collect();
    let plane = |pi: usize, yp: &mut [T], ip: &mut [i64]| {
        let xp = &xd[pi * in_sz..(pi + 1) * in_sz];
        let mut oi = vec![0usize; nsp];
        for o in 0..out_sz {
            unravel(o, &g.out, &mut oi);
            let mut best = T::lowest();
            let mut best_i: Option<usize> = None;
            let mut sum = T::ZERO;
            let mut cnt = 0usize;
            let mut cnt_pad = 0usize;
            for kk in &ktab {
                let mut off = 0usize;
                let mut col_off = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for dd in 0..nsp {
                    let xi = (oi[dd] * g.s[dd] + kk[dd] * g.d[dd]) as i64 - g.pb[dd];
                    if xi < -g.pb[dd] || xi >= g.inp[dd] as i64 + g.pe[dd] {
                        in_padded = false;
                    }
                    if xi < 0 || xi >= g.inp[dd] as i64 {
                        inside = false;
                    } else {
                        off += xi as usize * in_st[dd];
                        col_off += xi as usize * col_st[dd];
                    }
                }
                if in_padded {
                    cnt_pad += 1;
                }
                if !inside {
                    continue;
                }
                let v = xp[off];
                cnt += 1;
                match kind {
                    PoolKind::Max => {
                        if v > best || best_i.is_none() || v.is_nan() {
                            best = v;
                            best_i = Some(if p.storage_order == 1 { col_off } else { off });
                        }
                    }
                    PoolKind::Avg => sum += v,
                    PoolKind::Lp(_) => sum += T::c(v.to_f64().abs().powf(lp)),
                }
            }
            yp[o] = match kind {
                PoolKind::Max => best,
                PoolKind::Avg => {
                    let div = if p.count_include_pad { cnt_pad } else { cnt };
                    if div == 0 {
                        T::c(f64::NAN)
                    } else {
                        sum / T::c(div as f64)
                    }
                }
                PoolKind::Lp(_) => T::c(sum.to_f64().powf(1.0 / lp)),
            };
            if !ip.is_empty() {
                ip[o] = (pi * in_sz + best_i.unwrap_or(0)) as i64;
            }
        }
    };
    if out_sz > 0 {
        if want_idx {
            y.par_chunks_mut(out_sz)
                .zip(idx.par_chunks_mut(out_sz))
                .enumerate()
                .for_each(|(pi, (yp, ip))| plane(pi, yp, ip));
        } else {
            y.par_chunks_mut(out_sz)
                .enumerate()
                .for_each(|(pi, yp)| plane(pi, yp, &mut []));
        }
    }
    let mut shape = vec![n, c];
    shape.extend_from_slice(&g.out);
    let ia = if want_idx {
        Some(from_vec(&shape, idx)?)
    } else {
        None
    };
    Ok((from_vec(&shape, y)?, ia))
}

/// AveragePool and LpPool.
pub(crate) fn pool(kind: PoolKind, p: &PoolAttrs, x: &Value) -> Result<Value, String> {
    Ok(map_float!(x, T, a => pool_t::<T>(kind, p, a, false)?.0))
}

/// MaxPool (values and optional indices). Integer inputs (int8/uint8) are supported.
pub(crate) fn max_pool(p: &PoolAttrs, x: &Value, nout: usize) -> Result<Vec<Value>, String> {
    let want = nout > 1;
    let (y, idx) = match x {
        Value::I8(_) | Value::U8(_) => {
            let Value::F64(a) = crate::cast::cast(x, pare_ir::DType::F64, true)? else {
                return Err("internal: cast to f64 did not produce f64".into());
            };
            let (v, i) = pool_t::<f64>(PoolKind::Max, p, &a, want)?;
            (crate::cast::cast(&Value::F64(v), x.dtype(), true)?, i)
        }
        _ => {
            let idx;
            let y = map_float!(x, T, a => {
                let (v, i) = pool_t::<T>(PoolKind::Max, p, a, want)?;
                idx = i;
                v
            });
            (y, idx)
        }
    };
    let mut out = vec![y];
    if let Some(i) = idx {
        out.push(Value::I64(i));
    }
    Ok(out)
}

/// GlobalAveragePool, GlobalMaxPool, GlobalLpPool.
pub(crate) fn global_pool(kind: PoolKind, x: &Value) -> Result<Value, String> {
    fn go<T: Float>(kind: PoolKind, a: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let s = a.shape();
        if s.len() < 2 {
            return Err(format!("global pooling expects [N, C, ...], got {s:?}"));
        }
        let plane: usize = s[2..].iter().product();
        let d = contiguous(a);
        let out: Vec<T> = (0..s[0] * s[1])
            .map(|i| {
                let row = &d[i * plane..(i + 1) * plane];
                match kind {
                    PoolKind::Avg => {
                        T::c(row.iter().map(|v| v.to_f64()).sum::<f64>() / plane as f64)
                    }
                    PoolKind::Max => {
                        row.iter()
                            .fold(T::lowest(), |m, &v| if v > m || v.is_nan() { v } else { m })
                    }
                    PoolKind::Lp(p) => T::c(
                        row.iter()
                            .map(|v| v.to_f64().abs().powf(p as f64))
                            .sum::<f64>()
                            .powf(1.0 / p as f64),
                    ),
                }
            })
            .collect();
        let mut shape = vec![s[0], s[1]];
        shape.extend(std::iter::repeat_n(1, s.len() - 2));
        from_vec(&shape, out)
    }
    Ok(map_float!(x, T, a => go::<T>(kind, a)?))
}
