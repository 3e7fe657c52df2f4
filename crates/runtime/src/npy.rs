//! A small `.npy` reader and writer (std only), for the standalone executable
//! ([`crate::exe`]), the loader's users and the tests.
//!
//! Reads format versions 1.0, 2.0 and 3.0 (the header is a Python dict literal with `descr`,
//! `fortran_order` and `shape`), little- or big-endian, C or Fortran order; the array is returned
//! little-endian in C order. Writes version 1.0 (2.0 when the header does not fit in 64 KiB),
//! little-endian, C order, padded so the data starts at a multiple of 64 bytes, atomically
//! (a temporary file in the same directory, then a rename).
//!
//! Element types are the ones compiled models use, identified by their ONNX code
//! ([`crate::abi::dtype`]): float32, float64, float16, int64, int32, int8, uint8 and bool.

use crate::abi::dtype;
use std::fmt;
use std::path::{Path, PathBuf};

/// A dense array: ONNX dtype code, shape and little-endian C-order bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    /// ONNX dtype code ([`crate::abi::dtype`]).
    pub dtype: i32,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<i64>,
    /// `product(shape) * size(dtype)` bytes, little-endian, C order.
    pub data: Vec<u8>,
}

/// Why a `.npy` file or buffer could not be read or written.
#[derive(Debug)]
pub enum NpyError {
    /// The file could not be read, created, written or renamed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The bytes are not a `.npy` array this module understands, or the array is inconsistent.
    Format {
        /// The file (or `<memory>`).
        source: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpyError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            NpyError::Format { source, message } => write!(f, "{source}: {message}"),
        }
    }
}

impl std::error::Error for NpyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NpyError::Io { error, .. } => Some(error),
            NpyError::Format { .. } => None,
        }
    }
}

fn format_err(message: impl Into<String>) -> NpyError {
    NpyError::Format {
        source: "<memory>".to_string(),
        message: message.into(),
    }
}

/// A readable name of a dtype code (`float32`, `int64`, ..., `dtype(N)` for an unknown code).
pub fn dtype_name(code: i32) -> String {
    match code {
        dtype::F32 => "float32".into(),
        dtype::F64 => "float64".into(),
        dtype::F16 => "float16".into(),
        dtype::I64 => "int64".into(),
        dtype::I32 => "int32".into(),
        dtype::I8 => "int8".into(),
        dtype::U8 => "uint8".into(),
        dtype::BOOL => "bool".into(),
        other => format!("dtype({other})"),
    }
}

/// `dtype[d0, d1, ...]`, e.g. `float32[1, 3, 224, 224]`.
pub fn describe(code: i32, shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("{}[{}]", dtype_name(code), dims.join(", "))
}

/// Number of elements of a shape, or None for a negative dimension or an overflow.
pub fn num_elements(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Converts an IEEE half-precision bit pattern to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24; normalize.
            let shift = m.leading_zeros() - 21; // leading zeros within the 10-bit field, + 1
            let m = (m << shift) & 0x3ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

impl NpyArray {
    /// An array of `shape` from its bytes; checks the dtype code and the byte count.
    pub fn new(dtype: i32, shape: Vec<i64>, data: Vec<u8>) -> Result<NpyArray, NpyError> {
        let expected = byte_len(dtype, &shape)?;
        if data.len() != expected {
            return Err(format_err(format!(
                "{} needs {expected} bytes, got {}",
                describe(dtype, &shape),
                data.len()
            )));
        }
        Ok(NpyArray { dtype, shape, data })
    }

    /// An all-zero array (zero is `0`, `0.0` and `false` for every supported dtype).
    pub fn zeros(dtype: i32, shape: Vec<i64>) -> Result<NpyArray, NpyError> {
        let n = byte_len(dtype, &shape)?;
        Ok(NpyArray {
            dtype,
            shape,
            data: vec![0; n],
        })
    }

    /// A float32 array from values.
    pub fn from_f32(shape: Vec<i64>, values: &[f32]) -> Result<NpyArray, NpyError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        NpyArray::new(dtype::F32, shape, data)
    }

    /// An int64 array from values.
    pub fn from_i64(shape: Vec<i64>, values: &[i64]) -> Result<NpyArray, NpyError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        NpyArray::new(dtype::I64, shape, data)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        num_elements(&self.shape).unwrap_or(0)
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32, if the dtype is float32.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        (self.dtype == dtype::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// The elements as i64, if the dtype is int64.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        (self.dtype == dtype::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
    }

    /// The elements converted to f64 (any supported dtype; None for an unknown one).
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        let d = &self.data;
        let v: Vec<f64> = match self.dtype {
            dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            dtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            dtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64)
                .collect(),
            dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            dtype::I8 => d.iter().map(|&b| b as i8 as f64).collect(),
            dtype::U8 | dtype::BOOL => d.iter().map(|&b| b as f64).collect(),
            _ => return None,
        };
        Some(v)
    }
}

fn byte_len(code: i32, shape: &[i64]) -> Result<usize, NpyError> {
    let size =
        dtype::size(code).ok_or_else(|| format_err(format!("unsupported dtype code {code}")))?;
    num_elements(shape)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| format_err(format!("invalid shape {shape:?}")))
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| NpyError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&bytes).map_err(|e| with_source(e, path))
}

fn with_source(e: NpyError, path: &Path) -> NpyError {
    match e {
        NpyError::Format { message, .. } => NpyError::Format {
            source: path.display().to_string(),
            message,
        },
        other => other,
    }
}

/// True when the bytes start with the `.npy` magic string.
pub fn is_npy(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x93NUMPY")
}

/// Parses the bytes of a `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    if !is_npy(bytes) || bytes.len() < 10 {
        return Err(format_err("not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_err("truncated header"));
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => return Err(format_err(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| format_err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| format_err("header is not text"))?;
    let h = parse_header(header).map_err(|m| format_err(format!("bad header {header:?}: {m}")))?;
    let (code, size, big_endian) = parse_descr(&h.descr)?;
    let n = num_elements(&h.shape).ok_or_else(|| format_err("invalid shape"))?;
    let nbytes = n
        .checked_mul(size)
        .ok_or_else(|| format_err("invalid shape"))?;
    let body = &bytes[start + hlen..];
    if body.len() != nbytes {
        return Err(format_err(format!(
            "{} needs {nbytes} data bytes, the file has {}",
            describe(code, &h.shape),
            body.len()
        )));
    }
    let mut data = body.to_vec();
    if big_endian && size > 1 {
        for e in data.chunks_exact_mut(size) {
            e.reverse();
        }
    }
    if h.fortran_order && h.shape.len() > 1 {
        data = fortran_to_c(&data, &h.shape, size);
    }
    Ok(NpyArray {
        dtype: code,
        shape: h.shape,
        data,
    })
}

/// Reorders a column-major array to row-major.
fn fortran_to_c(data: &[u8], shape: &[i64], size: usize) -> Vec<u8> {
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n: usize = dims.iter().product();
    // Fortran strides (in elements): first dimension fastest.
    let mut fstride = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        fstride[k] = fstride[k - 1] * dims[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        let src: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&data[src * size..(src + 1) * size]);
        // Increment the C-order multi-index (last dimension fastest).
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// `(code, element size, big endian)` of a numpy `descr`.
fn parse_descr(descr: &str) -> Result<(i32, usize, bool), NpyError> {
    let (order, kind) = match descr.as_bytes().first() {
        Some(b'<') | Some(b'=') | Some(b'|') => ('<', &descr[1..]),
        Some(b'>') => ('>', &descr[1..]),
        _ => ('<', descr),
    };
    let code = match kind {
        "f4" => dtype::F32,
        "f8" => dtype::F64,
        "f2" | "e" => dtype::F16,
        "i8" => dtype::I64,
        "i4" => dtype::I32,
        "i1" | "b" => dtype::I8,
        "u1" | "B" => dtype::U8,
        "b1" | "?" => dtype::BOOL,
        _ => {
            return Err(format_err(format!(
                "unsupported dtype '{descr}' (supported: float32, float64, float16, int64, \
                 int32, int8, uint8, bool)"
            )))
        }
    };
    let size = dtype::size(code).expect("known code");
    Ok((code, size, order == '>'))
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<i64>,
}

/// Parses the Python dict literal of a header.
fn parse_header(s: &str) -> Result<Header, String> {
    let mut p = Lexer {
        s: s.as_bytes(),
        i: 0,
    };
    let mut descr = None;
    let mut fortran_order = false;
    let mut shape = None;
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran_order = p.boolean()?,
            "shape" => shape = Some(p.tuple()?),
            _ => p.skip_value()?,
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.skip_ws();
            p.expect(b'}')?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or("no 'descr'")?,
        fortran_order,
        shape: shape.ok_or("no 'shape'")?,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at offset {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a string at offset {}", self.i)),
        };
        let start = self.i + 1;
        let end = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("unterminated string")?;
        self.i = start + end + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + end]).into_owned())
    }
    fn word(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }
    fn boolean(&mut self) -> Result<bool, String> {
        match self.word() {
            "True" => Ok(true),
            "False" => Ok(false),
            w => Err(format!("expected True or False, found '{w}'")),
        }
    }
    fn tuple(&mut self) -> Result<Vec<i64>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                break;
            }
            let w = self.word().trim_end_matches('L').to_string();
            let d: i64 = w.parse().map_err(|_| format!("bad dimension '{w}'"))?;
            if d < 0 {
                return Err(format!("negative dimension {d}"));
            }
            dims.push(d);
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
    fn skip_value(&mut self) -> Result<(), String> {
        match self.s.get(self.i) {
            Some(b'\'' | b'"') => self.string().map(|_| ()),
            Some(b'(') => self.tuple().map(|_| ()),
            _ => {
                if self.word().is_empty() {
                    Err(format!("unexpected value at offset {}", self.i))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The bytes of a `.npy` file holding `a` (version 1.0, or 2.0 for a huge header).
pub fn to_bytes(a: &NpyArray) -> Result<Vec<u8>, NpyError> {
    let descr = dtype::numpy_descr(a.dtype)
        .ok_or_else(|| format_err(format!("unsupported dtype code {}", a.dtype)))?;
    let expected = byte_len(a.dtype, &a.shape)?;
    if a.data.len() != expected {
        return Err(format_err(format!(
            "{} needs {expected} bytes, the array has {}",
            describe(a.dtype, &a.shape),
            a.data.len()
        )));
    }
    let shape = match a.shape.len() {
        1 => format!("({},)", a.shape[0]),
        _ => {
            let dims: Vec<String> = a.shape.iter().map(i64::to_string).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces and a final newline so magic + version + length + header is a multiple
    // of 64 bytes.
    let (version, prefix) = if header.len() + 1 + 10 <= u16::MAX as usize {
        (1u8, 10usize)
    } else {
        (2u8, 12usize)
    };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + a.data.len());
    out.extend_from_slice(b"\x93NUMPY");
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&a.data);
    Ok(out)
}

/// Writes `a` to `path` atomically: to a temporary file next to it, then renamed over it.
pub fn write(path: impl AsRef<Path>, a: &NpyArray) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = to_bytes(a).map_err(|e| with_source(e, path))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let io = |error| NpyError::Io {
        path: path.to_path_buf(),
        error,
    };
    if let Err(e) = std::fs::write(&tmp, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}
