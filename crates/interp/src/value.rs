//! Runtime values: one `ndarray` array per element type, and their conversion to and from
//! [`Tensor`].

use bytes::Bytes;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use pare_ir::{DType, Tensor};

/// A tensor value during interpretation.
///
/// Storage types without a native Rust type hold one code per element: 8-bit floats their raw
/// byte, `F4E2M1` its 4-bit code in the low nibble, `I4`/`U4`/`I2`/`U2` the (sign-extended)
/// integer. Packing sub-byte elements (two 4-bit or four 2-bit per byte) happens only at the
/// [`Tensor`] boundary.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// IEEE binary32.
    F32(ArrayD<f32>),
    /// IEEE binary64.
    F64(ArrayD<f64>),
    /// IEEE binary16.
    F16(ArrayD<f16>),
    /// bfloat16.
    BF16(ArrayD<bf16>),
    /// Signed 8-bit integer.
    I8(ArrayD<i8>),
    /// Unsigned 8-bit integer.
    U8(ArrayD<u8>),
    /// Signed 16-bit integer.
    I16(ArrayD<i16>),
    /// Unsigned 16-bit integer.
    U16(ArrayD<u16>),
    /// Signed 32-bit integer.
    I32(ArrayD<i32>),
    /// Unsigned 32-bit integer.
    U32(ArrayD<u32>),
    /// Signed 64-bit integer.
    I64(ArrayD<i64>),
    /// Unsigned 64-bit integer.
    U64(ArrayD<u64>),
    /// Boolean.
    Bool(ArrayD<bool>),
    /// UTF-8 string.
    Str(ArrayD<String>),
    /// Signed 4-bit integer, one per `i8` (range -8..=7).
    I4(ArrayD<i8>),
    /// Unsigned 4-bit integer, one per `u8` (range 0..=15).
    U4(ArrayD<u8>),
    /// 8-bit float E4M3FN, raw code per element.
    F8E4M3FN(ArrayD<u8>),
    /// 8-bit float E4M3FNUZ, raw code per element.
    F8E4M3FNUZ(ArrayD<u8>),
    /// 8-bit float E5M2, raw code per element.
    F8E5M2(ArrayD<u8>),
    /// 8-bit float E5M2FNUZ, raw code per element.
    F8E5M2FNUZ(ArrayD<u8>),
    /// 4-bit float E2M1, code (0..=15) per element.
    F4E2M1(ArrayD<u8>),
    /// 8-bit float E8M0, raw code (biased exponent) per element.
    F8E8M0(ArrayD<u8>),
    /// Signed 2-bit integer, one per `i8` (range -2..=1).
    I2(ArrayD<i8>),
    /// Unsigned 2-bit integer, one per `u8` (range 0..=3).
    U2(ArrayD<u8>),
}

/// Applies an expression to the array inside any variant (generic over the element type).
macro_rules! with_array {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::F32($a) => $body,
            $crate::Value::F64($a) => $body,
            $crate::Value::F16($a) => $body,
            $crate::Value::BF16($a) => $body,
            $crate::Value::I8($a) => $body,
            $crate::Value::U8($a) => $body,
            $crate::Value::I16($a) => $body,
            $crate::Value::U16($a) => $body,
            $crate::Value::I32($a) => $body,
            $crate::Value::U32($a) => $body,
            $crate::Value::I64($a) => $body,
            $crate::Value::U64($a) => $body,
            $crate::Value::Bool($a) => $body,
            $crate::Value::Str($a) => $body,
            $crate::Value::I4($a) => $body,
            $crate::Value::U4($a) => $body,
            $crate::Value::F8E4M3FN($a) => $body,
            $crate::Value::F8E4M3FNUZ($a) => $body,
            $crate::Value::F8E5M2($a) => $body,
            $crate::Value::F8E5M2FNUZ($a) => $body,
            $crate::Value::F4E2M1($a) => $body,
            $crate::Value::F8E8M0($a) => $body,
            $crate::Value::I2($a) => $body,
            $crate::Value::U2($a) => $body,
        }
    };
}

/// Maps the array inside any variant to a new array with the same element type, keeping the
/// variant.
macro_rules! map_array {
    ($v:expr, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::F32($a) => $crate::Value::F32($body),
            $crate::Value::F64($a) => $crate::Value::F64($body),
            $crate::Value::F16($a) => $crate::Value::F16($body),
            $crate::Value::BF16($a) => $crate::Value::BF16($body),
            $crate::Value::I8($a) => $crate::Value::I8($body),
            $crate::Value::U8($a) => $crate::Value::U8($body),
            $crate::Value::I16($a) => $crate::Value::I16($body),
            $crate::Value::U16($a) => $crate::Value::U16($body),
            $crate::Value::I32($a) => $crate::Value::I32($body),
            $crate::Value::U32($a) => $crate::Value::U32($body),
            $crate::Value::I64($a) => $crate::Value::I64($body),
            $crate::Value::U64($a) => $crate::Value::U64($body),
            $crate::Value::Bool($a) => $crate::Value::Bool($body),
            $crate::Value::Str($a) => $crate::Value::Str($body),
            $crate::Value::I4($a) => $crate::Value::I4($body),
            $crate::Value::U4($a) => $crate::Value::U4($body),
            $crate::Value::F8E4M3FN($a) => $crate::Value::F8E4M3FN($body),
            $crate::Value::F8E4M3FNUZ($a) => $crate::Value::F8E4M3FNUZ($body),
            $crate::Value::F8E5M2($a) => $crate::Value::F8E5M2($body),
            $crate::Value::F8E5M2FNUZ($a) => $crate::Value::F8E5M2FNUZ($body),
            $crate::Value::F4E2M1($a) => $crate::Value::F4E2M1($body),
            $crate::Value::F8E8M0($a) => $crate::Value::F8E8M0($body),
            $crate::Value::I2($a) => $crate::Value::I2($body),
            $crate::Value::U2($a) => $crate::Value::U2($body),
        }
    };
}

/// Maps several values of one (any) variant to one value of that variant: `$xs` is bound to
/// a `Vec<&ArrayD<T>>`. Mismatched variants are an error (`return Err(String)`).
macro_rules! map_many {
    ($vals:expr, $xs:ident => $body:expr) => {{
        let vals: &[&$crate::Value] = $vals;
        macro_rules! arm {
            ($var:ident) => {{
                let mut $xs = Vec::with_capacity(vals.len());
                for v in vals {
                    match v {
                        $crate::Value::$var(a) => $xs.push(a),
                        o => {
                            return Err(format!(
                                "inputs have different types: {} and {}",
                                vals[0].dtype(),
                                o.dtype()
                            ))
                        }
                    }
                }
                $crate::Value::$var($body)
            }};
        }
        match vals.first().ok_or_else(|| "no inputs".to_string())? {
            $crate::Value::F32(_) => arm!(F32),
            $crate::Value::F64(_) => arm!(F64),
            $crate::Value::F16(_) => arm!(F16),
            $crate::Value::BF16(_) => arm!(BF16),
            $crate::Value::I8(_) => arm!(I8),
            $crate::Value::U8(_) => arm!(U8),
            $crate::Value::I16(_) => arm!(I16),
            $crate::Value::U16(_) => arm!(U16),
            $crate::Value::I32(_) => arm!(I32),
            $crate::Value::U32(_) => arm!(U32),
            $crate::Value::I64(_) => arm!(I64),
            $crate::Value::U64(_) => arm!(U64),
            $crate::Value::Bool(_) => arm!(Bool),
            $crate::Value::Str(_) => arm!(Str),
            $crate::Value::I4(_) => arm!(I4),
            $crate::Value::U4(_) => arm!(U4),
            $crate::Value::F8E4M3FN(_) => arm!(F8E4M3FN),
            $crate::Value::F8E4M3FNUZ(_) => arm!(F8E4M3FNUZ),
            $crate::Value::F8E5M2(_) => arm!(F8E5M2),
            $crate::Value::F8E5M2FNUZ(_) => arm!(F8E5M2FNUZ),
            $crate::Value::F4E2M1(_) => arm!(F4E2M1),
            $crate::Value::F8E8M0(_) => arm!(F8E8M0),
            $crate::Value::I2(_) => arm!(I2),
            $crate::Value::U2(_) => arm!(U2),
        }
    }};
}

/// Maps a numeric value (the 12 native numeric types) with `$T` bound to its element type;
/// other variants are an error.
macro_rules! map_num {
    ($v:expr, $T:ident, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::F32($a) => {
                #[allow(dead_code)]
                type $T = f32;
                $crate::Value::F32($body)
            }
            $crate::Value::F64($a) => {
                #[allow(dead_code)]
                type $T = f64;
                $crate::Value::F64($body)
            }
            $crate::Value::F16($a) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $crate::Value::F16($body)
            }
            $crate::Value::BF16($a) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $crate::Value::BF16($body)
            }
            $crate::Value::I8($a) => {
                #[allow(dead_code)]
                type $T = i8;
                $crate::Value::I8($body)
            }
            $crate::Value::U8($a) => {
                #[allow(dead_code)]
                type $T = u8;
                $crate::Value::U8($body)
            }
            $crate::Value::I16($a) => {
                #[allow(dead_code)]
                type $T = i16;
                $crate::Value::I16($body)
            }
            $crate::Value::U16($a) => {
                #[allow(dead_code)]
                type $T = u16;
                $crate::Value::U16($body)
            }
            $crate::Value::I32($a) => {
                #[allow(dead_code)]
                type $T = i32;
                $crate::Value::I32($body)
            }
            $crate::Value::U32($a) => {
                #[allow(dead_code)]
                type $T = u32;
                $crate::Value::U32($body)
            }
            $crate::Value::I64($a) => {
                #[allow(dead_code)]
                type $T = i64;
                $crate::Value::I64($body)
            }
            $crate::Value::U64($a) => {
                #[allow(dead_code)]
                type $T = u64;
                $crate::Value::U64($body)
            }
            o => return Err(format!("expected a numeric tensor, got {}", o.dtype())),
        }
    };
}

/// Like [`map_num!`] but the body returns any type (not wrapped back into a `Value`).
macro_rules! with_num {
    ($v:expr, $T:ident, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::F32($a) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::Value::F64($a) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::Value::F16($a) => {
                #[allow(dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::Value::BF16($a) => {
                #[allow(dead_code)]
                type $T = half::bf16;
                $body
            }
            $crate::Value::I8($a) => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            $crate::Value::U8($a) => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::Value::I16($a) => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            $crate::Value::U16($a) => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            $crate::Value::I32($a) => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            $crate::Value::U32($a) => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            $crate::Value::I64($a) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::Value::U64($a) => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            o => return Err(format!("expected a numeric tensor, got {}", o.dtype())),
        }
    };
}

/// Maps an integer value (8..64-bit, signed and unsigned) with `$T` bound.
macro_rules! map_int {
    ($v:expr, $T:ident, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::I8($a) => {
                #[allow(dead_code)]
                type $T = i8;
                $crate::Value::I8($body)
            }
            $crate::Value::U8($a) => {
                #[allow(dead_code)]
                type $T = u8;
                $crate::Value::U8($body)
            }
            $crate::Value::I16($a) => {
                #[allow(dead_code)]
                type $T = i16;
                $crate::Value::I16($body)
            }
            $crate::Value::U16($a) => {
                #[allow(dead_code)]
                type $T = u16;
                $crate::Value::U16($body)
            }
            $crate::Value::I32($a) => {
                #[allow(dead_code)]
                type $T = i32;
                $crate::Value::I32($body)
            }
            $crate::Value::U32($a) => {
                #[allow(dead_code)]
                type $T = u32;
                $crate::Value::U32($body)
            }
            $crate::Value::I64($a) => {
                #[allow(dead_code)]
                type $T = i64;
                $crate::Value::I64($body)
            }
            $crate::Value::U64($a) => {
                #[allow(dead_code)]
                type $T = u64;
                $crate::Value::U64($body)
            }
            o => return Err(format!("expected an integer tensor, got {}", o.dtype())),
        }
    };
}

/// Maps a float value: f32 and f64 natively with `$T` bound; f16 and bf16 are computed in f32
/// (`$T = f32`) and rounded back. The body maps `&ArrayD<$T>` to `ArrayD<$T>`.
macro_rules! map_float {
    ($v:expr, $T:ident, $a:ident => $body:expr) => {
        match $v {
            $crate::Value::F32($a) => {
                #[allow(dead_code)]
                type $T = f32;
                $crate::Value::F32($body)
            }
            $crate::Value::F64($a) => {
                #[allow(dead_code)]
                type $T = f64;
                $crate::Value::F64($body)
            }
            $crate::Value::F16(h) => {
                #[allow(dead_code)]
                type $T = f32;
                let up = h.mapv(|x| x.to_f32());
                let $a = &up;
                let r: ndarray::ArrayD<f32> = $body;
                $crate::Value::F16(r.mapv(half::f16::from_f32))
            }
            $crate::Value::BF16(h) => {
                #[allow(dead_code)]
                type $T = f32;
                let up = h.mapv(|x| x.to_f32());
                let $a = &up;
                let r: ndarray::ArrayD<f32> = $body;
                $crate::Value::BF16(r.mapv(half::bf16::from_f32))
            }
            o => return Err(format!("expected a float tensor, got {}", o.dtype())),
        }
    };
}

impl Value {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            Value::F32(_) => DType::F32,
            Value::F64(_) => DType::F64,
            Value::F16(_) => DType::F16,
            Value::BF16(_) => DType::BF16,
            Value::I8(_) => DType::I8,
            Value::U8(_) => DType::U8,
            Value::I16(_) => DType::I16,
            Value::U16(_) => DType::U16,
            Value::I32(_) => DType::I32,
            Value::U32(_) => DType::U32,
            Value::I64(_) => DType::I64,
            Value::U64(_) => DType::U64,
            Value::Bool(_) => DType::Bool,
            Value::Str(_) => DType::String,
            Value::I4(_) => DType::I4,
            Value::U4(_) => DType::U4,
            Value::F8E4M3FN(_) => DType::F8E4M3FN,
            Value::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            Value::F8E5M2(_) => DType::F8E5M2,
            Value::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            Value::F4E2M1(_) => DType::F4E2M1,
            Value::F8E8M0(_) => DType::F8E8M0,
            Value::I2(_) => DType::I2,
            Value::U2(_) => DType::U2,
        }
    }

    /// Extents.
    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Element count.
    pub fn len(&self) -> usize {
        with_array!(self, a => a.len())
    }

    /// True when the value has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts a constant tensor (copying its elements).
    pub fn from_tensor(t: &Tensor) -> Result<Value, String> {
        let shape = IxDyn(t.shape());
        fn arr<T>(shape: IxDyn, v: Vec<T>) -> Result<ArrayD<T>, String> {
            ArrayD::from_shape_vec(shape, v).map_err(|e| format!("bad tensor data: {e}"))
        }
        // Little-endian host (pare-ir refuses big-endian): a byte copy is the conversion.
        fn le<T: bytemuck::Pod>(raw: &[u8]) -> Vec<T> {
            bytemuck::pod_collect_to_vec(raw)
        }
        let raw = t.raw();
        let n = t.numel();
        let nib = |i: usize| -> u8 { raw.get(i / 2).map_or(0, |b| (b >> (4 * (i % 2))) & 0xF) };
        let crumb = |i: usize| -> u8 { raw.get(i / 4).map_or(0, |b| (b >> (2 * (i % 4))) & 0x3) };
        Ok(match t.dtype() {
            DType::F32 => Value::F32(arr(shape, le::<f32>(raw))?),
            DType::F64 => Value::F64(arr(shape, le::<f64>(raw))?),
            DType::F16 => Value::F16(arr(shape, le::<f16>(raw))?),
            DType::BF16 => Value::BF16(arr(shape, le::<bf16>(raw))?),
            DType::I8 => Value::I8(arr(shape, raw.iter().map(|&b| b as i8).collect())?),
            DType::U8 => Value::U8(arr(shape, raw.to_vec())?),
            DType::I16 => Value::I16(arr(shape, le::<i16>(raw))?),
            DType::U16 => Value::U16(arr(shape, le::<u16>(raw))?),
            DType::I32 => Value::I32(arr(shape, le::<i32>(raw))?),
            DType::U32 => Value::U32(arr(shape, le::<u32>(raw))?),
            DType::I64 => Value::I64(arr(shape, le::<i64>(raw))?),
            DType::U64 => Value::U64(arr(shape, le::<u64>(raw))?),
            DType::Bool => Value::Bool(arr(shape, raw.iter().map(|&b| b != 0).collect())?),
            DType::String => {
                let s = t.strings().ok_or("string tensor without strings")?;
                Value::Str(arr(shape, s.to_vec())?)
            }
            DType::I4 => Value::I4(arr(
                shape,
                (0..n).map(|i| ((nib(i) << 4) as i8) >> 4).collect(),
            )?),
            DType::U4 => Value::U4(arr(shape, (0..n).map(nib).collect())?),
            DType::F4E2M1 => Value::F4E2M1(arr(shape, (0..n).map(nib).collect())?),
            DType::F8E4M3FN => Value::F8E4M3FN(arr(shape, raw.to_vec())?),
            DType::F8E4M3FNUZ => Value::F8E4M3FNUZ(arr(shape, raw.to_vec())?),
            DType::F8E5M2 => Value::F8E5M2(arr(shape, raw.to_vec())?),
            DType::F8E5M2FNUZ => Value::F8E5M2FNUZ(arr(shape, raw.to_vec())?),
            DType::F8E8M0 => Value::F8E8M0(arr(shape, raw.to_vec())?),
            DType::I2 => Value::I2(arr(
                shape,
                (0..n).map(|i| ((crumb(i) << 6) as i8) >> 6).collect(),
            )?),
            DType::U2 => Value::U2(arr(shape, (0..n).map(crumb).collect())?),
        })
    }

    /// Converts to a tensor (logical, row-major element order; sub-byte types packed).
    pub fn to_tensor(&self) -> Tensor {
        let shape = self.shape().to_vec();
        fn bytes<T: Copy, const N: usize>(a: &ArrayD<T>, f: fn(T) -> [u8; N]) -> Bytes {
            let mut out = Vec::with_capacity(a.len() * N);
            for &x in a.iter() {
                out.extend_from_slice(&f(x));
            }
            Bytes::from(out)
        }
        fn pack(it: impl Iterator<Item = u8>, n: usize) -> Bytes {
            let mut out = vec![0u8; n.div_ceil(2)];
            for (i, c) in it.enumerate() {
                out[i / 2] |= (c & 0xF) << (4 * (i % 2));
            }
            Bytes::from(out)
        }
        fn pack2(it: impl Iterator<Item = u8>, n: usize) -> Bytes {
            let mut out = vec![0u8; n.div_ceil(4)];
            for (i, c) in it.enumerate() {
                out[i / 4] |= (c & 0x3) << (2 * (i % 4));
            }
            Bytes::from(out)
        }
        let n = self.len();
        let (dtype, data) = match self {
            Value::F32(a) => (DType::F32, bytes(a, f32::to_le_bytes)),
            Value::F64(a) => (DType::F64, bytes(a, f64::to_le_bytes)),
            Value::F16(a) => (DType::F16, bytes(a, f16::to_le_bytes)),
            Value::BF16(a) => (DType::BF16, bytes(a, bf16::to_le_bytes)),
            Value::I8(a) => (DType::I8, bytes(a, i8::to_le_bytes)),
            Value::U8(a) => (DType::U8, bytes(a, u8::to_le_bytes)),
            Value::I16(a) => (DType::I16, bytes(a, i16::to_le_bytes)),
            Value::U16(a) => (DType::U16, bytes(a, u16::to_le_bytes)),
            Value::I32(a) => (DType::I32, bytes(a, i32::to_le_bytes)),
            Value::U32(a) => (DType::U32, bytes(a, u32::to_le_bytes)),
            Value::I64(a) => (DType::I64, bytes(a, i64::to_le_bytes)),
            Value::U64(a) => (DType::U64, bytes(a, u64::to_le_bytes)),
            Value::Bool(a) => (DType::Bool, bytes(a, |b: bool| [b as u8])),
            Value::Str(a) => {
                return Tensor::from_strings(shape, a.iter().cloned().collect())
                    .expect("element count matches shape");
            }
            Value::I4(a) => (DType::I4, pack(a.iter().map(|&x| x as u8), n)),
            Value::U4(a) => (DType::U4, pack(a.iter().copied(), n)),
            Value::F4E2M1(a) => (DType::F4E2M1, pack(a.iter().copied(), n)),
            Value::F8E4M3FN(a) => (DType::F8E4M3FN, bytes(a, |b: u8| [b])),
            Value::F8E4M3FNUZ(a) => (DType::F8E4M3FNUZ, bytes(a, |b: u8| [b])),
            Value::F8E5M2(a) => (DType::F8E5M2, bytes(a, |b: u8| [b])),
            Value::F8E5M2FNUZ(a) => (DType::F8E5M2FNUZ, bytes(a, |b: u8| [b])),
            Value::F8E8M0(a) => (DType::F8E8M0, bytes(a, |b: u8| [b])),
            Value::I2(a) => (DType::I2, pack2(a.iter().map(|&x| x as u8), n)),
            Value::U2(a) => (DType::U2, pack2(a.iter().copied(), n)),
        };
        Tensor::from_raw(dtype, shape, data).expect("byte length matches dtype and shape")
    }

    /// Integer (or bool) elements widened to i64, in logical order; for shape-like operands.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, String> {
        Ok(match self {
            Value::I64(a) => a.iter().copied().collect(),
            Value::I32(a) => a.iter().map(|&x| x as i64).collect(),
            Value::I16(a) => a.iter().map(|&x| x as i64).collect(),
            Value::I8(a) | Value::I4(a) | Value::I2(a) => a.iter().map(|&x| x as i64).collect(),
            Value::U8(a) | Value::U4(a) | Value::U2(a) => a.iter().map(|&x| x as i64).collect(),
            Value::U16(a) => a.iter().map(|&x| x as i64).collect(),
            Value::U32(a) => a.iter().map(|&x| x as i64).collect(),
            Value::U64(a) => a.iter().map(|&x| x as i64).collect(),
            Value::Bool(a) => a.iter().map(|&x| x as i64).collect(),
            o => return Err(format!("expected an integer tensor, got {}", o.dtype())),
        })
    }

    /// Numeric elements converted to f64, in logical order (8- and 4-bit floats decoded).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, String> {
        Ok(match self {
            Value::F32(a) => a.iter().map(|&x| x as f64).collect(),
            Value::F64(a) => a.iter().copied().collect(),
            Value::F16(a) => a.iter().map(|x| x.to_f64()).collect(),
            Value::BF16(a) => a.iter().map(|x| x.to_f64()).collect(),
            Value::Str(_) => return Err("expected a numeric tensor, got string".into()),
            Value::F8E4M3FN(_)
            | Value::F8E4M3FNUZ(_)
            | Value::F8E5M2(_)
            | Value::F8E5M2FNUZ(_)
            | Value::F4E2M1(_)
            | Value::F8E8M0(_) => match crate::cast::cast(self, DType::F64, true)? {
                Value::F64(a) => a.iter().copied().collect(),
                _ => unreachable!("cast to f64 yields f64"),
            },
            _ => self.to_i64_vec()?.into_iter().map(|v| v as f64).collect(),
        })
    }

    /// The single element of a one-element tensor as f64.
    pub fn scalar_f64(&self) -> Result<f64, String> {
        let v = self.to_f64_vec()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(format!(
                "expected one element, got shape {:?}",
                self.shape()
            )),
        }
    }

    /// The single element of a one-element integer tensor.
    pub fn scalar_i64(&self) -> Result<i64, String> {
        let v = self.to_i64_vec()?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(format!(
                "expected one element, got shape {:?}",
                self.shape()
            )),
        }
    }

    /// Same elements (logical order), new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Value, String> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(format!("cannot reshape {:?} to {:?}", self.shape(), shape));
        }
        Ok(map_array!(self, a => reshape_arr(a.clone(), shape)))
    }

    /// Like [`Value::reshape`], consuming `self` (no copy when the array is contiguous).
    pub fn into_reshape(self, shape: &[usize]) -> Result<Value, String> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(format!("cannot reshape {:?} to {:?}", self.shape(), shape));
        }
        Ok(map_array!(self, a => reshape_arr(a, shape)))
    }

    /// An empty (all-default) value of the given dtype and shape.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Value {
        let s = IxDyn(shape);
        match dtype {
            DType::F32 => Value::F32(ArrayD::zeros(s)),
            DType::F64 => Value::F64(ArrayD::zeros(s)),
            DType::F16 => Value::F16(ArrayD::from_elem(s, f16::ZERO)),
            DType::BF16 => Value::BF16(ArrayD::from_elem(s, bf16::ZERO)),
            DType::I8 => Value::I8(ArrayD::zeros(s)),
            DType::U8 => Value::U8(ArrayD::zeros(s)),
            DType::I16 => Value::I16(ArrayD::zeros(s)),
            DType::U16 => Value::U16(ArrayD::zeros(s)),
            DType::I32 => Value::I32(ArrayD::zeros(s)),
            DType::U32 => Value::U32(ArrayD::zeros(s)),
            DType::I64 => Value::I64(ArrayD::zeros(s)),
            DType::U64 => Value::U64(ArrayD::zeros(s)),
            DType::Bool => Value::Bool(ArrayD::from_elem(s, false)),
            DType::String => Value::Str(ArrayD::from_elem(s, String::new())),
            DType::I4 => Value::I4(ArrayD::zeros(s)),
            DType::U4 => Value::U4(ArrayD::zeros(s)),
            DType::F8E4M3FN => Value::F8E4M3FN(ArrayD::zeros(s)),
            DType::F8E4M3FNUZ => Value::F8E4M3FNUZ(ArrayD::zeros(s)),
            DType::F8E5M2 => Value::F8E5M2(ArrayD::zeros(s)),
            DType::F8E5M2FNUZ => Value::F8E5M2FNUZ(ArrayD::zeros(s)),
            DType::F4E2M1 => Value::F4E2M1(ArrayD::zeros(s)),
            // Code 0 is 2^-127, the smallest E8M0 value (there is no zero).
            DType::F8E8M0 => Value::F8E8M0(ArrayD::zeros(s)),
            DType::I2 => Value::I2(ArrayD::zeros(s)),
            DType::U2 => Value::U2(ArrayD::zeros(s)),
        }
    }

    /// A rank-1 i64 value.
    pub fn from_i64s(v: Vec<i64>) -> Value {
        let n = v.len();
        Value::I64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("rank-1 shape matches"))
    }

    /// True for floating-point variants (including 8- and 4-bit floats).
    pub fn is_float(&self) -> bool {
        self.dtype().is_float()
    }
}

/// Reshapes in logical (row-major) order; copies only when `a` is not standard-layout.
pub(crate) fn reshape_arr<T: Clone>(a: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let a = if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    };
    a.into_shape_with_order(IxDyn(shape))
        .expect("element count checked by caller")
}

macro_rules! from_array {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<ArrayD<$t>> for Value {
            fn from(a: ArrayD<$t>) -> Value {
                Value::$v(a)
            }
        }
    )*};
}
from_array!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i8 => I8, u8 => U8, i16 => I16,
    u16 => U16, i32 => I32, u32 => U32, i64 => I64, u64 => U64, bool => Bool, String => Str);

impl TryFrom<&Tensor> for Value {
    type Error = String;
    fn try_from(t: &Tensor) -> Result<Value, String> {
        Value::from_tensor(t)
    }
}

impl From<&Value> for Tensor {
    fn from(v: &Value) -> Tensor {
        v.to_tensor()
    }
}
