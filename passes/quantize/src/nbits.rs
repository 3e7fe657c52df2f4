//! `com.microsoft::MatMulNBits`: onnxruntime's weight-only block-quantized MatMul, its packed
//! layout, and reference semantics so that pare's interpreter runs it too.
//!
//! Layout (onnxruntime contrib op, opset `com.microsoft` 1): `Y = A · dequant(B)ᵀ` with
//! - attributes `K`, `N`, `bits` (2, 4 or 8), `block_size` (a power of two ≥ 16);
//! - `B`: uint8 `[N, k_blocks, blob_size]`, `k_blocks = ceil(K / block_size)`,
//!   `blob_size = block_size · bits / 8`; row `n` of the logical `N × K` weight, block by
//!   block, codes packed little-end first (4 bits: element 2t in the low nibble of byte t);
//! - `scales`: `[N · k_blocks]` (or `[N, k_blocks]`), in A's type;
//! - `zero_points` (optional): uint8, packed like B per row: `[N · ceil(k_blocks · bits / 8)]`;
//!   absent means `2^(bits-1)` (8 for 4 bits);
//! - weight `w[n, k] = (code - zero) · scale[n, k / block_size]`.
//!
//! The reference evaluation handles A of any rank ≥ 1 and packed uint8 zero points; float
//! zero points, `g_idx` and `bias` are not produced by pare and rejected here.

use crate::scheme::QuantMatrix;
use pare_ir::{
    Attr, Attrs, CustomOp, CustomOpDef, DType, Dim, Graph, Op, Shape, Tensor, TensorType,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The domain.
pub const DOMAIN: &str = "com.microsoft";
/// The op type.
pub const OP_TYPE: &str = "MatMulNBits";

/// Reference semantics of `com.microsoft::MatMulNBits`.
#[derive(Debug, Default)]
pub struct MatMulNBitsDef;

/// The (domain, op type) → definition map to pass to `pare_onnx::ImportOptions::custom_ops`
/// so that models with MatMulNBits nodes import.
pub fn custom_ops() -> HashMap<(String, String), Arc<dyn CustomOpDef>> {
    let mut m: HashMap<(String, String), Arc<dyn CustomOpDef>> = HashMap::new();
    m.insert(
        (DOMAIN.to_string(), OP_TYPE.to_string()),
        Arc::new(MatMulNBitsDef),
    );
    m
}

struct Attrs4 {
    k: usize,
    n: usize,
    bits: usize,
    block: usize,
}

fn int_attr(a: &Attrs, name: &str) -> Result<i64, String> {
    match a.get(name) {
        Some(Attr::Int(i)) => Ok(*i),
        Some(other) => Err(format!(
            "attribute {name} must be an int, got {}",
            other.kind()
        )),
        None => Err(format!("attribute {name} is required")),
    }
}

fn read_attrs(a: &Attrs) -> Result<Attrs4, String> {
    let pos = |name: &str| -> Result<usize, String> {
        let v = int_attr(a, name)?;
        usize::try_from(v)
            .ok()
            .filter(|&x| x > 0)
            .ok_or_else(|| format!("attribute {name} must be positive, got {v}"))
    };
    let bits = match a.get("bits") {
        None => 4,
        Some(_) => pos("bits")?,
    };
    if ![2, 4, 8].contains(&bits) {
        return Err(format!("bits must be 2, 4 or 8, got {bits}"));
    }
    let block = pos("block_size")?;
    if block < 16 || !block.is_power_of_two() {
        return Err(format!(
            "block_size must be a power of two ≥ 16, got {block}"
        ));
    }
    Ok(Attrs4 {
        k: pos("K")?,
        n: pos("N")?,
        bits,
        block,
    })
}

/// Builds the op with its attributes.
pub fn op(k: usize, n: usize, bits: u32, block: usize) -> Op {
    Op::Custom(CustomOp {
        domain: DOMAIN.into(),
        op_type: OP_TYPE.into(),
        attrs: Attrs(vec![
            ("K".into(), Attr::Int(k as i64)),
            ("N".into(), Attr::Int(n as i64)),
            ("bits".into(), Attr::Int(bits as i64)),
            ("block_size".into(), Attr::Int(block as i64)),
        ]),
        def: Some(Arc::new(MatMulNBitsDef)),
    })
}

/// The packed operands of a block-quantized weight: `(B, scales, zero_points)`.
/// Symmetric codes are stored offset by `2^(bits-1)` with no zero points (onnxruntime's
/// default); asymmetric codes as they are, with packed zero points. Padding past K holds the
/// zero point, so it dequantizes to 0. `q.scheme.group` must be the block size (> 0).
pub fn pack(q: &QuantMatrix) -> (Tensor, Tensor, Option<Tensor>) {
    let bits = q.scheme.bits as usize;
    let block = q.scheme.group.max(1);
    let kb = q.k.div_ceil(block);
    let blob = block * bits / 8;
    let offset = if q.scheme.symmetric {
        1i32 << (bits - 1)
    } else {
        0
    };
    let mask = (1u32 << bits) - 1;
    let mut b = vec![0u8; q.n * kb * blob];
    let zp_row = (kb * bits).div_ceil(8);
    let mut zp = vec![0u8; q.n * zp_row];
    let mut scales = Vec::with_capacity(q.n * kb);
    let put = |buf: &mut [u8], base: usize, t: usize, v: u32| {
        let bit = t * bits;
        buf[base + bit / 8] |= ((v & mask) << (bit % 8)) as u8;
    };
    for r in 0..q.n {
        for bi in 0..kb {
            let p = q.params[r * kb + bi];
            scales.push(p.scale);
            let zero = (p.zero + offset) as u32;
            put(&mut zp, r * zp_row, bi, zero);
            let base = (r * kb + bi) * blob;
            for t in 0..block {
                let j = bi * block + t;
                let u = if j < q.k {
                    (q.codes[r * q.k + j] + offset) as u32
                } else {
                    zero
                };
                put(&mut b, base, t, u);
            }
        }
    }
    let bt = Tensor::from_vec(vec![q.n, kb, blob], b);
    let st = Tensor::from_vec(vec![q.n * kb], scales);
    let zt = (!q.scheme.symmetric).then(|| Tensor::from_vec(vec![q.n * zp_row], zp));
    (bt, st, zt)
}

/// Unpacks B, scales and zero points to the dequantized `K × N` weight (row-major, f32).
fn dequantize(
    at: &Attrs4,
    b: &Tensor,
    scales: &Tensor,
    zp: Option<&Tensor>,
) -> Result<Vec<f32>, String> {
    let Attrs4 { k, n, bits, block } = *at;
    let kb = k.div_ceil(block);
    let blob = block * bits / 8;
    if b.dtype() != DType::U8 || b.numel() != n * kb * blob {
        return Err(format!(
            "B must be uint8 with {n}·{kb}·{blob} elements, got {}{:?}",
            b.dtype(),
            b.shape()
        ));
    }
    let sc: Vec<f64> = scales
        .to_f64_vec()
        .filter(|_| scales.dtype().is_float())
        .ok_or("scales must be float")?;
    if sc.len() != n * kb {
        return Err(format!(
            "scales must have {} elements, got {}",
            n * kb,
            sc.len()
        ));
    }
    let zp_row = (kb * bits).div_ceil(8);
    let zraw: Option<&[u8]> = match zp {
        None => None,
        Some(z) if z.dtype() == DType::U8 && z.numel() == n * zp_row => Some(z.raw()),
        Some(z) => {
            return Err(format!(
                "zero_points must be packed uint8 with {} elements, got {}{:?}",
                n * zp_row,
                z.dtype(),
                z.shape()
            ))
        }
    };
    let mask = (1u32 << bits) - 1;
    let get = |buf: &[u8], base: usize, t: usize| -> u32 {
        let bit = t * bits;
        (buf[base + bit / 8] as u32 >> (bit % 8)) & mask
    };
    let raw = b.raw();
    let mut w = vec![0f32; k * n];
    for r in 0..n {
        for bi in 0..kb {
            let zero = match zraw {
                Some(z) => get(z, r * zp_row, bi) as f32,
                None => (1u32 << (bits - 1)) as f32,
            };
            let s = sc[r * kb + bi] as f32;
            for t in 0..block {
                let j = bi * block + t;
                if j >= k {
                    break;
                }
                let u = get(raw, (r * kb + bi) * blob, t) as f32;
                w[j * n + r] = (u - zero) * s;
            }
        }
    }
    Ok(w)
}

impl CustomOpDef for MatMulNBitsDef {
    fn infer(&self, attrs: &Attrs, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        let at = read_attrs(attrs)?;
        let a = inputs.first().ok_or("MatMulNBits needs input A")?;
        let shape = match &a.shape {
            Some(s) if s.rank() == 0 => return Err("A must have rank ≥ 1".into()),
            Some(s) => {
                if let Some(Dim::Fixed(kk)) = s.0.last() {
                    if *kk as usize != at.k {
                        return Err(format!("A's last dim is {kk}, K is {}", at.k));
                    }
                }
                let mut d = s.0.clone();
                if let Some(last) = d.last_mut() {
                    *last = Dim::Fixed(at.n as u64);
                }
                Some(Shape(d))
            }
            None => None,
        };
        Ok(vec![TensorType {
            dtype: a.dtype,
            shape,
        }])
    }

    fn flops(&self, attrs: &Attrs, _inputs: &[TensorType], outputs: &[TensorType]) -> Option<u64> {
        // A MatMul's multiply-adds (the dequantization in registers is not counted).
        let k = read_attrs(attrs).ok()?.k as u64;
        let out: u64 = outputs
            .first()?
            .shape
            .as_ref()?
            .0
            .iter()
            .map(|d| d.fixed())
            .product::<Option<u64>>()?;
        Some(2 * out * k)
    }

    fn verify(&self, attrs: &Attrs, num_inputs: usize) -> Result<(), String> {
        read_attrs(attrs)?;
        if !(3..=6).contains(&num_inputs) {
            return Err(format!("MatMulNBits takes 3 to 6 inputs, got {num_inputs}"));
        }
        Ok(())
    }

    fn eval(&self, attrs: &Attrs, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let at = read_attrs(attrs)?;
        let (a, b, s) = match inputs {
            [a, b, s, ..] => (a, b, s),
            _ => return Err("MatMulNBits needs A, B and scales".into()),
        };
        if inputs.len() > 4 {
            return Err("MatMulNBits: g_idx and bias are not supported by the reference".into());
        }
        if a.dtype() != DType::F32 {
            return Err(format!(
                "MatMulNBits reference: A must be f32, got {}",
                a.dtype()
            ));
        }
        if a.shape().last() != Some(&at.k) {
            return Err(format!("A has shape {:?}, K is {}", a.shape(), at.k));
        }
        let w = dequantize(&at, b, s, inputs.get(3))?;
        // Multiply with the interpreter's MatMul (same GEMM as every other MatMul).
        let mut g = Graph::new("matmulnbits");
        let x = g.add_input("a", TensorType::new(DType::F32, Shape::fixed(a.shape())));
        let wv = g.add_const("w", Tensor::from_vec(vec![at.k, at.n], w));
        let y = g.add_simple("y", Op::MatMul, &[x, wv]);
        g.add_output(y);
        pare_interp::Interpreter::with_threads(1)
            .run(&g, std::slice::from_ref(a))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{rtn, Scheme};

    fn attrs(k: usize, n: usize, bits: u32, block: usize) -> Attrs {
        match op(k, n, bits, block) {
            Op::Custom(c) => c.attrs,
            _ => unreachable!(),
        }
    }

    #[test]
    fn pack_roundtrips_through_the_reference() {
        let (n, k) = (3, 40);
        let w: Vec<f64> = (0..n * k)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
            .collect();
        for (bits, sym) in [(4, true), (4, false), (8, true), (8, false)] {
            let s = Scheme {
                bits,
                group: 16,
                symmetric: sym,
            };
            let q = rtn(&w, n, k, &s);
            let (b, sc, zp) = pack(&q);
            assert_eq!(b.shape(), &[n, 3, 16 * bits as usize / 8]);
            assert_eq!(zp.is_some(), !sym);
            let at = read_attrs(&attrs(k, n, bits, 16)).unwrap();
            let got = dequantize(&at, &b, &sc, zp.as_ref()).unwrap();
            let want = q.dequantize();
            for r in 0..n {
                for j in 0..k {
                    assert_eq!(
                        got[j * n + r] as f64,
                        want[r * k + j],
                        "bits {bits} sym {sym}"
                    );
                }
            }
        }
    }

    #[test]
    fn cost_model_counts_the_matmul() {
        // [2, 5, 32] x [32, 8]: 2·(2·5·8)·32 operations, through the graph cost model.
        let mut g = pare_ir::Graph::new("nbits");
        let x = g.add_input("x", TensorType::new(DType::F32, Shape::fixed(&[2, 5, 32])));
        let b = g.add_const("b", Tensor::from_vec(vec![8, 2, 8], vec![0u8; 128]));
        let s = g.add_const("s", Tensor::from_vec(vec![8, 2], vec![1.0f32; 16]));
        let y = g.add_simple("y", op(32, 8, 4, 16), &[x, b, s]);
        g.add_output(y);
        pare_ir::infer::infer_types(&mut g).unwrap();
        let n = g.producer(y).unwrap();
        assert_eq!(pare_ir::cost::node_flops(&g, n), Some(2 * 2 * 5 * 8 * 32));
    }

    #[test]
    fn nibble_order_is_low_first() {
        let s = Scheme {
            bits: 4,
            group: 16,
            symmetric: false,
        };
        // One row, codes 0..15 in order: [0, 1.5] → scale 0.1, zero 0.
        let w: Vec<f64> = (0..16).map(|i| i as f64 * 0.1).collect();
        let q = rtn(&w, 1, 16, &s);
        assert_eq!(q.codes, (0..16).collect::<Vec<i32>>());
        let (b, _, zp) = pack(&q);
        assert_eq!(&b.raw()[..2], &[0x10, 0x32]);
        assert_eq!(zp.unwrap().raw(), &[0x00]);
    }

    #[test]
    fn eval_and_infer() {
        let (n, k) = (2, 16);
        let w: Vec<f64> = (0..n * k).map(|i| i as f64 / 10.0 - 1.0).collect();
        let s = Scheme {
            bits: 8,
            group: 16,
            symmetric: true,
        };
        let q = rtn(&w, n, k, &s);
        let (b, sc, _) = pack(&q);
        let a = Tensor::from_vec(vec![1, k], (0..k).map(|i| i as f32).collect());
        let at = attrs(k, n, 8, 16);
        let y = MatMulNBitsDef.eval(&at, &[a, b, sc]).unwrap();
        let y = y[0].to_vec::<f32>().unwrap();
        let dq = q.dequantize();
        for r in 0..n {
            let want: f64 = (0..k).map(|j| j as f64 * dq[r * k + j]).sum();
            assert!((y[r] as f64 - want).abs() < 1e-3, "{} vs {want}", y[r]);
        }
        let t = MatMulNBitsDef
            .infer(
                &at,
                &[TensorType::new(
                    DType::F32,
                    Shape(vec![Dim::Sym("B".into()), Dim::Fixed(16)]),
                )],
            )
            .unwrap();
        assert_eq!(
            t[0].shape,
            Some(Shape(vec![Dim::Sym("B".into()), Dim::Fixed(2)]))
        );
        assert!(MatMulNBitsDef.verify(&attrs(k, n, 3, 16), 3).is_err());
        assert!(MatMulNBitsDef.verify(&attrs(k, n, 4, 24), 3).is_err());
    }
}
