//! `TensorProto` ↔ [`Tensor`], including external data and test-data `.pb` files.

use crate::proto::{tensor_proto::DataLocation, TensorProto};
use crate::OnnxError;
use bytes::Bytes;
use pare_ir::{dtype_onnx_code, onnx_dtype, DType, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Memory-maps a whole file as shared bytes (empty files need no map).
pub(crate) fn map_file(path: &Path) -> Result<Bytes, OnnxError> {
    let io = |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only and private to this process. Like every mmap-based model
    // loader, we rely on the file not being truncated or rewritten while the model is in use;
    // pare writes its own outputs to a temporary file and renames it, never in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_owner(map))
}

/// Resolves and maps external data files, each once.
#[derive(Default)]
pub(crate) struct ExternalData {
    base: Option<PathBuf>,
    files: HashMap<PathBuf, Bytes>,
}

impl ExternalData {
    pub(crate) fn new(base: Option<PathBuf>) -> ExternalData {
        ExternalData {
            base,
            files: HashMap::new(),
        }
    }

    fn slice(
        &mut self,
        location: &str,
        offset: usize,
        length: Option<usize>,
    ) -> Result<Bytes, String> {
        let rel = Path::new(location);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(format!("external data location '{location}' must be a relative path inside the model's directory"));
        }
        let base = self
            .base
            .as_ref()
            .ok_or("external data needs the model's directory (load from a file)")?;
        let path = base.join(rel);
        if !self.files.contains_key(&path) {
            let bytes = map_file(&path).map_err(|e| e.to_string())?;
            self.files.insert(path.clone(), bytes);
        }
        let all = &self.files[&path];
        let end = match length {
            Some(l) => offset
                .checked_add(l)
                .ok_or("external data offset+length overflows")?,
            None => all.len(),
        };
        if offset > end || end > all.len() {
            return Err(format!(
                "external data {}..{} is outside '{}' ({} bytes)",
                offset,
                end,
                path.display(),
                all.len()
            ));
        }
        Ok(all.slice(offset..end))
    }
}

/// Packs `n` sub-byte elements of `bits` bits each, low bits first.
fn pack_bits(vals: impl Iterator<Item = u8>, n: usize, bits: usize) -> Vec<u8> {
    let per = 8 / bits;
    let mask = ((1u16 << bits) - 1) as u8;
    let mut out = vec![0u8; n.div_ceil(per)];
    for (i, v) in vals.take(n).enumerate() {
        out[i / per] |= (v & mask) << ((i % per) * bits);
    }
    out
}

/// Converts a `TensorProto` into a [`Tensor`]; errors are messages (the caller adds context).
pub(crate) fn convert(tp: &TensorProto, ext: &mut ExternalData) -> Result<Tensor, String> {
    let code = tp.data_type.unwrap_or(0);
    let dtype = onnx_dtype(code).ok_or_else(|| match code {
        0 => "data type is UNDEFINED".to_string(),
        14 | 15 => "complex tensors are not supported".to_string(),
        c => format!("unknown data type code {c}"),
    })?;
    if tp.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let shape: Vec<usize> = tp
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("element count overflows")?;
    let bad_len = |got: usize| format!("{dtype}{shape:?} needs {n} elements, data has {got}");

    if tp.data_location == Some(DataLocation::External as i32) {
        let mut location = None;
        let mut offset = 0usize;
        let mut length = None;
        for kv in &tp.external_data {
            let v = kv.value.as_deref().unwrap_or("");
            match kv.key.as_deref().unwrap_or("") {
                "location" => location = Some(v.to_string()),
                "offset" => {
                    offset = v
                        .parse()
                        .map_err(|_| format!("bad external offset '{v}'"))?
                }
                "length" => {
                    length = Some(
                        v.parse()
                            .map_err(|_| format!("bad external length '{v}'"))?,
                    )
                }
                _ => {}
            }
        }
        let location = location.ok_or("external tensor without a 'location'")?;
        if dtype == DType::String {
            return Err("external string tensors are not supported".into());
        }
        let bytes = ext.slice(&location, offset, length)?;
        return Tensor::from_raw(dtype, shape, bytes).map_err(|e| e.to_string());
    }
    if let Some(raw) = &tp.raw_data {
        if dtype == DType::String {
            return Err("string tensors cannot use raw_data".into());
        }
        return Tensor::from_raw(dtype, shape, raw.clone()).map_err(|e| e.to_string());
    }
    let raw: Vec<u8> = match dtype {
        DType::String => {
            if tp.string_data.len() != n {
                return Err(bad_len(tp.string_data.len()));
            }
            let s = tp
                .string_data
                .iter()
                .map(|b| {
                    String::from_utf8(b.to_vec())
                        .map_err(|_| "string element is not UTF-8".to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Tensor::from_strings(shape, s).map_err(|e| e.to_string());
        }
        DType::F32 => {
            if tp.float_data.len() != n {
                return Err(bad_len(tp.float_data.len()));
            }
            tp.float_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        DType::F64 => {
            if tp.double_data.len() != n {
                return Err(bad_len(tp.double_data.len()));
            }
            tp.double_data
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        }
        DType::I64 => {
            if tp.int64_data.len() != n {
                return Err(bad_len(tp.int64_data.len()));
            }
            tp.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect()
        }
        DType::U32 | DType::U64 => {
            if tp.uint64_data.len() != n {
                return Err(bad_len(tp.uint64_data.len()));
            }
            if dtype == DType::U32 {
                tp.uint64_data
                    .iter()
                    .flat_map(|&v| (v as u32).to_le_bytes())
                    .collect()
            } else {
                tp.uint64_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
        }
        DType::I4 | DType::U4 | DType::F4E2M1 | DType::I2 | DType::U2 => {
            // Each int32 holds one byte of packed elements (two 4-bit or four 2-bit ones).
            let bits = dtype.bits();
            let per = 8 / bits;
            if tp.int32_data.len() != n.div_ceil(per) {
                return Err(bad_len(tp.int32_data.len() * per));
            }
            let mask = (1i32 << bits) - 1;
            let elems = tp
                .int32_data
                .iter()
                .flat_map(|&v| (0..per).map(move |k| ((v >> (k * bits)) & mask) as u8));
            pack_bits(elems, n, bits)
        }
        _ => {
            if tp.int32_data.len() != n {
                return Err(bad_len(tp.int32_data.len()));
            }
            let width = dtype.bits() / 8;
            tp.int32_data
                .iter()
                .flat_map(|&v| v.to_le_bytes().into_iter().take(width))
                .collect()
        }
    };
    Tensor::from_raw(dtype, shape, Bytes::from(raw)).map_err(|e| e.to_string())
}

/// Converts a `TensorProto` (inline data only) into a [`Tensor`].
pub fn tensor_from_proto(tp: &TensorProto) -> Result<Tensor, String> {
    convert(tp, &mut ExternalData::new(None))
}

/// Converts a [`Tensor`] into a `TensorProto` with raw data (strings use `string_data`).
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    let mut tp = TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_onnx_code(t.dtype())),
        ..Default::default()
    };
    match t.strings() {
        Some(s) => {
            tp.string_data = s
                .iter()
                .map(|s| Bytes::from(s.clone().into_bytes()))
                .collect()
        }
        None => tp.raw_data = t.bytes().cloned(),
    }
    tp
}

/// Reads a serialized `TensorProto` (`input_0.pb`); returns its name and value.
pub fn read_tensor_pb(path: &Path) -> Result<(String, Tensor), OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.into(),
        source,
    })?;
    let tp = TensorProto::decode(Bytes::from(bytes)).map_err(|e| OnnxError::Decode {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let name = tp.name.clone().unwrap_or_default();
    let base = path.parent().map(Path::to_path_buf);
    let t = convert(&tp, &mut ExternalData::new(base)).map_err(|msg| OnnxError::Tensor {
        path: path.into(),
        name: name.clone(),
        msg,
    })?;
    Ok((name, t))
}

/// Writes a serialized `TensorProto`.
pub fn write_tensor_pb(path: &Path, name: &str, t: &Tensor) -> Result<(), OnnxError> {
    let bytes = tensor_to_proto(t, name).encode_to_vec();
    crate::export::write_atomic(path, &[&bytes])
}
