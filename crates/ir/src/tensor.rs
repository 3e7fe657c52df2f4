//! Constant tensors backed by shared, reference-counted (possibly memory-mapped) buffers.

use crate::DType;
use bytes::Bytes;
use half::{bf16, f16};
use std::fmt;
use std::sync::Arc;

#[cfg(target_endian = "big")]
compile_error!("pare stores tensors little-endian and supports little-endian hosts only");

/// Errors building or reading a tensor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    /// Byte length does not match dtype × element count.
    #[error("tensor of {dtype}{shape:?} needs {expected} bytes, got {got}")]
    SizeMismatch {
        /// Element type.
        dtype: DType,
        /// Shape.
        shape: Vec<usize>,
        /// Bytes required.
        expected: usize,
        /// Bytes supplied.
        got: usize,
    },
    /// Requested element type differs from the stored one.
    #[error("tensor holds {actual}, {requested} was requested")]
    WrongType {
        /// Stored dtype.
        actual: DType,
        /// Requested dtype.
        requested: DType,
    },
}

/// A Rust type that is the storage of a [`DType`].
pub trait Elem: Copy + Send + Sync + 'static + fmt::Debug + Default + PartialEq {
    /// The matching dtype.
    const DTYPE: DType;
    /// Reads one element from little-endian bytes.
    fn read(b: &[u8]) -> Self;
    /// Appends the little-endian bytes of `self`.
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! pod_elem {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$d;
            fn read(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b[..std::mem::size_of::<$t>()].try_into().expect("length checked"))
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
pod_elem!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i8 => I8, u8 => U8, i16 => I16,
    u16 => U16, i32 => I32, u32 => U32, i64 => I64, u64 => U64);

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn read(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn write(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

/// Storage of a tensor.
#[derive(Clone, PartialEq)]
pub enum TensorData {
    /// Little-endian packed bytes, shared (and possibly a slice of a memory map).
    Raw(Bytes),
    /// Strings, for `DType::String`.
    Strings(Arc<[String]>),
}

/// An immutable n-dimensional constant. Cloning shares the buffer.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Wraps raw little-endian bytes, checking their length.
    pub fn from_raw(dtype: DType, shape: Vec<usize>, data: Bytes) -> Result<Tensor, TensorError> {
        let n: usize = shape.iter().product();
        let expected = dtype.storage_bytes(n);
        if dtype == DType::String || data.len() != expected {
            return Err(TensorError::SizeMismatch {
                dtype,
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor {
            dtype,
            shape,
            data: TensorData::Raw(data),
        })
    }

    /// Builds a tensor from typed elements.
    ///
    /// # Panics
    /// If `values.len()` differs from the shape's element count: that is a programming error,
    /// never a property of user input.
    pub fn from_vec<T: Elem>(shape: Vec<usize>, values: Vec<T>) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            values.len(),
            "Tensor::from_vec: shape {shape:?} vs {} values",
            values.len()
        );
        let mut out = Vec::with_capacity(n * T::DTYPE.bits() / 8);
        for v in values {
            v.write(&mut out);
        }
        Tensor {
            dtype: T::DTYPE,
            shape,
            data: TensorData::Raw(Bytes::from(out)),
        }
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor::from_vec(vec![], vec![v])
    }

    /// A string tensor.
    pub fn from_strings(shape: Vec<usize>, values: Vec<String>) -> Result<Tensor, TensorError> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(TensorError::SizeMismatch {
                dtype: DType::String,
                shape,
                expected: n,
                got: values.len(),
            });
        }
        Ok(Tensor {
            dtype: DType::String,
            shape,
            data: TensorData::Strings(values.into()),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Extents.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// Raw bytes (empty for strings).
    pub fn raw(&self) -> &[u8] {
        match &self.data {
            TensorData::Raw(b) => b,
            TensorData::Strings(_) => &[],
        }
    }
    /// The shared byte buffer, when not a string tensor.
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.data {
            TensorData::Raw(b) => Some(b),
            TensorData::Strings(_) => None,
        }
    }
    /// String elements, when a string tensor.
    pub fn strings(&self) -> Option<&[String]> {
        match &self.data {
            TensorData::Strings(s) => Some(s),
            TensorData::Raw(_) => None,
        }
    }
    /// Storage size in bytes (strings: total UTF-8 length).
    pub fn byte_len(&self) -> usize {
        match &self.data {
            TensorData::Raw(b) => b.len(),
            TensorData::Strings(s) => s.iter().map(|s| s.len()).sum(),
        }
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Option<Tensor> {
        (shape.iter().product::<usize>() == self.numel()).then(|| Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        })
    }

    /// Typed copy of the elements; the dtype must match exactly.
    pub fn to_vec<T: Elem>(&self) -> Result<Vec<T>, TensorError> {
        if self.dtype != T::DTYPE {
            return Err(TensorError::WrongType {
                actual: self.dtype,
                requested: T::DTYPE,
            });
        }
        let sz = (T::DTYPE.bits() / 8).max(1);
        Ok(self.raw().chunks_exact(sz).map(T::read).collect())
    }

    /// Integer elements widened to i64 (for shapes, axes, indices); `None` for non-integers.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let r = self.raw();
        Some(match self.dtype {
            DType::I64 => r.chunks_exact(8).map(i64::read).collect(),
            DType::I32 => r.chunks_exact(4).map(|b| i32::read(b) as i64).collect(),
            DType::I16 => r.chunks_exact(2).map(|b| i16::read(b) as i64).collect(),
            DType::I8 => r.iter().map(|&b| b as i8 as i64).collect(),
            DType::U8 | DType::Bool => r.iter().map(|&b| b as i64).collect(),
            DType::U16 => r.chunks_exact(2).map(|b| u16::read(b) as i64).collect(),
            DType::U32 => r.chunks_exact(4).map(|b| u32::read(b) as i64).collect(),
            DType::U64 => r.chunks_exact(8).map(|b| u64::read(b) as i64).collect(),
            _ => return None,
        })
    }

    /// Numeric elements converted to f64 (lossless for every dtype but u64/i64 beyond 2^53);
    /// `None` for strings and packed types.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        let r = self.raw();
        Some(match self.dtype {
            DType::F32 => r.chunks_exact(4).map(|b| f32::read(b) as f64).collect(),
            DType::F64 => r.chunks_exact(8).map(f64::read).collect(),
            DType::F16 => r.chunks_exact(2).map(|b| f16::read(b).to_f64()).collect(),
            DType::BF16 => r.chunks_exact(2).map(|b| bf16::read(b).to_f64()).collect(),
            _ => self.to_i64_vec()?.into_iter().map(|v| v as f64).collect(),
        })
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({}{:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.byte_len()
        )
    }
}
