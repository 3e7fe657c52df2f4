//! Constant data literals: the decimal list form (`[1, -2, 3]`, `[0.5, inf]`, `[true]`) used
//! for small numeric constants, shared by the printer (which uses it only when it re-encodes to
//! the exact same bytes) and the parser.

use super::{fmt_f32, fmt_f64, parse_f32, parse_f64};
use crate::{DType, Tensor};
use half::{bf16, f16};

/// Constants with at most this many elements print as a decimal list when that is exact;
/// larger ones print as hex bytes.
pub(crate) const DECIMAL_MAX_ELEMS: usize = 16;

/// One element of a decimal list literal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Num {
    /// Integer literal.
    Int(i128),
    /// Float literal text (`1.5`, `1e-5`, `inf`, `-nan`).
    Float(String),
    /// `true` / `false`.
    Bool(bool),
}

impl Num {
    pub(crate) fn text(&self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(s) => s.clone(),
            Num::Bool(b) => b.to_string(),
        }
    }
}

/// True for dtypes that have a decimal list form.
pub(crate) fn has_decimal_form(d: DType) -> bool {
    matches!(
        d,
        DType::F32
            | DType::F64
            | DType::F16
            | DType::BF16
            | DType::I8
            | DType::U8
            | DType::I16
            | DType::U16
            | DType::I32
            | DType::U32
            | DType::I64
            | DType::U64
            | DType::Bool
            | DType::I4
            | DType::U4
    )
}

fn float_of(n: &Num, d: DType) -> Result<f64, String> {
    match n {
        Num::Int(i) => Ok(*i as f64),
        Num::Float(s) => parse_f64(s).ok_or_else(|| format!("invalid float '{s}'")),
        Num::Bool(_) => Err(format!("expected a number for {d}, found a bool")),
    }
}

fn int_of(n: &Num, d: DType, lo: i128, hi: i128) -> Result<i128, String> {
    match n {
        Num::Int(i) if (lo..=hi).contains(i) => Ok(*i),
        Num::Int(i) => Err(format!("{i} is out of range for {d}")),
        Num::Float(s) => Err(format!("expected an integer for {d}, found '{s}'")),
        Num::Bool(_) => Err(format!("expected an integer for {d}, found a bool")),
    }
}

/// Encodes list elements as the little-endian bytes of `d`; on failure, the index of the bad
/// element and why.
pub(crate) fn encode(d: DType, items: &[Num]) -> Result<Vec<u8>, (usize, String)> {
    let mut out = Vec::with_capacity(d.storage_bytes(items.len()));
    for (i, n) in items.iter().enumerate() {
        let e = |m: String| (i, m);
        match d {
            DType::F32 => {
                let v = match n {
                    Num::Float(s) => {
                        parse_f32(s).ok_or_else(|| e(format!("invalid float '{s}'")))?
                    }
                    _ => float_of(n, d).map_err(e)? as f32,
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            DType::F64 => out.extend_from_slice(&float_of(n, d).map_err(e)?.to_le_bytes()),
            DType::F16 => {
                out.extend_from_slice(&f16::from_f64(float_of(n, d).map_err(e)?).to_le_bytes())
            }
            DType::BF16 => {
                out.extend_from_slice(&bf16::from_f64(float_of(n, d).map_err(e)?).to_le_bytes())
            }
            DType::I8 => out.push(int_of(n, d, -128, 127).map_err(e)? as i8 as u8),
            DType::U8 => out.push(int_of(n, d, 0, 255).map_err(e)? as u8),
            DType::I16 => out.extend_from_slice(
                &(int_of(n, d, i16::MIN.into(), i16::MAX.into()).map_err(e)? as i16).to_le_bytes(),
            ),
            DType::U16 => out.extend_from_slice(
                &(int_of(n, d, 0, u16::MAX.into()).map_err(e)? as u16).to_le_bytes(),
            ),
            DType::I32 => out.extend_from_slice(
                &(int_of(n, d, i32::MIN.into(), i32::MAX.into()).map_err(e)? as i32).to_le_bytes(),
            ),
            DType::U32 => out.extend_from_slice(
                &(int_of(n, d, 0, u32::MAX.into()).map_err(e)? as u32).to_le_bytes(),
            ),
            DType::I64 => out.extend_from_slice(
                &(int_of(n, d, i64::MIN.into(), i64::MAX.into()).map_err(e)? as i64).to_le_bytes(),
            ),
            DType::U64 => out.extend_from_slice(
                &(int_of(n, d, 0, u64::MAX.into()).map_err(e)? as u64).to_le_bytes(),
            ),
            DType::Bool => {
                let b = match n {
                    Num::Bool(b) => *b,
                    Num::Int(0) => false,
                    Num::Int(1) => true,
                    _ => return Err(e(format!("expected true or false, found '{}'", n.text()))),
                };
                out.push(b as u8);
            }
            DType::I4 | DType::U4 => {
                let (lo, hi) = if d == DType::I4 { (-8, 7) } else { (0, 15) };
                let nib = (int_of(n, d, lo, hi).map_err(e)? as u8) & 0x0f;
                if i % 2 == 0 {
                    out.push(nib);
                } else if let Some(last) = out.last_mut() {
                    *last |= nib << 4;
                }
            }
            _ => {
                return Err(e(format!(
                    "{d} constants take hex bytes (0x...), not a list"
                )))
            }
        }
    }
    Ok(out)
}

/// Shortest decimal text of a 16-bit float that converts back (through f64) to the same bits.
fn fmt_half(x: f32, back: impl Fn(f64) -> u16, bits: u16) -> String {
    if !x.is_finite() {
        return fmt_f32(x);
    }
    for p in 0..=9 {
        let s = format!("{x:.p$e}");
        if let Ok(v) = s.parse::<f64>() {
            if back(v) == bits {
                return fmt_f64(v);
            }
        }
    }
    fmt_f32(x)
}

/// The decimal list form of a numeric tensor, when it re-encodes to exactly the same bytes.
pub(crate) fn decimal_elems(t: &Tensor) -> Option<Vec<Num>> {
    let d = t.dtype();
    if !has_decimal_form(d) {
        return None;
    }
    let r = t.raw();
    let n = t.numel();
    let nums: Vec<Num> = match d {
        DType::F32 => r
            .chunks_exact(4)
            .map(|b| Num::Float(fmt_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))))
            .collect(),
        DType::F64 => r
            .chunks_exact(8)
            .map(|b| {
                Num::Float(fmt_f64(f64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ])))
            })
            .collect(),
        DType::F16 => r
            .chunks_exact(2)
            .map(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                Num::Float(fmt_half(
                    f16::from_bits(bits).to_f32(),
                    |v| f16::from_f64(v).to_bits(),
                    bits,
                ))
            })
            .collect(),
        DType::BF16 => r
            .chunks_exact(2)
            .map(|b| {
                let bits = u16::from_le_bytes([b[0], b[1]]);
                Num::Float(fmt_half(
                    bf16::from_bits(bits).to_f32(),
                    |v| bf16::from_f64(v).to_bits(),
                    bits,
                ))
            })
            .collect(),
        DType::I8 => r.iter().map(|&b| Num::Int(b as i8 as i128)).collect(),
        DType::U8 => r.iter().map(|&b| Num::Int(b as i128)).collect(),
        DType::I16 => r
            .chunks_exact(2)
            .map(|b| Num::Int(i16::from_le_bytes([b[0], b[1]]) as i128))
            .collect(),
        DType::U16 => r
            .chunks_exact(2)
            .map(|b| Num::Int(u16::from_le_bytes([b[0], b[1]]) as i128))
            .collect(),
        DType::I32 => r
            .chunks_exact(4)
            .map(|b| Num::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128))
            .collect(),
        DType::U32 => r
            .chunks_exact(4)
            .map(|b| Num::Int(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i128))
            .collect(),
        DType::I64 => r
            .chunks_exact(8)
            .map(|b| {
                Num::Int(
                    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i128,
                )
            })
            .collect(),
        DType::U64 => r
            .chunks_exact(8)
            .map(|b| {
                Num::Int(
                    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as i128,
                )
            })
            .collect(),
        DType::Bool => r
            .iter()
            .map(|&b| match b {
                0 => Some(Num::Bool(false)),
                1 => Some(Num::Bool(true)),
                _ => None,
            })
            .collect::<Option<_>>()?,
        DType::I4 | DType::U4 => (0..n)
            .map(|i| {
                let byte = r.get(i / 2).copied().unwrap_or(0);
                let nib = if i % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                let v = if d == DType::I4 && nib >= 8 {
                    nib as i128 - 16
                } else {
                    nib as i128
                };
                Num::Int(v)
            })
            .collect(),
        _ => return None,
    };
    if nums.len() != n {
        return None;
    }
    match encode(d, &nums) {
        Ok(bytes) if bytes == r => Some(nums),
        _ => None,
    }
}
