//! Reading and writing NumPy `.npy` files as [`Tensor`]s.

use crate::{DType, Tensor};
use bytes::Bytes;

/// A malformed or unsupported `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(".npy: {0}")]
pub struct NpyError(pub String);

fn descr_of(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<(DType, bool)> {
    let (order, code) = descr.split_at(1.min(descr.len()));
    let big = order == ">";
    let d = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return None,
    };
    Some((d, big))
}

/// Encodes a tensor as `.npy` bytes (version 1.0). Types NumPy lacks (bf16, 4- and 8-bit
/// floats, packed ints, strings) are refused rather than silently converted.
pub fn to_npy(t: &Tensor) -> Result<Vec<u8>, NpyError> {
    let descr = descr_of(t.dtype()).ok_or_else(|| {
        NpyError(format!(
            "{} has no .npy equivalent; cast it to a standard type first",
            t.dtype()
        ))
    })?;
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.raw().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    let len = u16::try_from(header.len()).map_err(|_| NpyError("header too long".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.raw());
    Ok(out)
}

fn field<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let k = format!("'{key}':");
    let i = header
        .find(&k)
        .ok_or_else(|| NpyError(format!("header lacks '{key}'")))?;
    Ok(header[i + k.len()..].trim_start())
}

/// Decodes `.npy` bytes.
pub fn from_npy(data: &[u8]) -> Result<Tensor, NpyError> {
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(NpyError("not a .npy file (bad magic)".into()));
    }
    let (hlen, start) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 if data.len() >= 12 => (
            u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
            12,
        ),
        v => return Err(NpyError(format!("unsupported .npy version {v}"))),
    };
    let header = data
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| NpyError("truncated or non-text header".into()))?;
    let descr_s = field(header, "descr")?;
    let descr = descr_s
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    let (dtype, big) =
        dtype_of(descr).ok_or_else(|| NpyError(format!("unsupported dtype '{descr}'")))?;
    if field(header, "fortran_order")?.starts_with("True") {
        return Err(NpyError(
            "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)".into(),
        ));
    }
    let shape_s = field(header, "shape")?;
    let close = shape_s
        .find(')')
        .ok_or_else(|| NpyError("bad shape".into()))?;
    let shape: Vec<usize> = shape_s[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| NpyError(format!("bad dimension '{s}'")))
        })
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let nbytes = dtype.storage_bytes(n);
    let body = &data[start + hlen..];
    if body.len() != nbytes {
        return Err(NpyError(format!(
            "{dtype}{shape:?} needs {nbytes} data bytes, file has {}",
            body.len()
        )));
    }
    let mut raw = body.to_vec();
    let w = dtype.bits() / 8;
    if big && w > 1 {
        raw.chunks_exact_mut(w).for_each(|c| c.reverse());
    }
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).map_err(|e| NpyError(e.to_string()))
}
