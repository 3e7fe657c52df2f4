//! Operator kernels called by compiled artifacts.
//!
//! # Calling convention
//!
//! Every kernel has the same C signature, [`KernelFn`]:
//!
//! ```c
//! int32_t pare_k_<name>(const int64_t *params, void *const *bufs, size_t threads);
//! ```
//!
//! - `params`: a flat array of `i64` whose layout is owned by the kernel's parameter struct
//!   (`ConvParams`, `SoftmaxParams`, ...). The backend builds the struct at compile time, calls
//!   its `encode()` and stores the words as constant data in the artifact; the kernel calls
//!   `decode()`. Floats are stored as `f64::to_bits` (see [`f64_word`] / [`word_f64`]). Layouts
//!   are documented on each struct and are only ever produced by `encode`, so the backend and
//!   the kernel cannot disagree.
//! - `bufs`: pointers to the kernel's operands in the order its struct documents (inputs, then
//!   outputs, then a scratch buffer where the struct's `scratch_bytes()` is non-zero). Optional
//!   operands are null. Activation buffers come from the artifact's arena and are 64-byte
//!   aligned; constant operands (weights, possibly pre-packed by a `prepare_*` function at
//!   compile time) are 64-byte aligned constant data.
//! - `threads`: how many threads the kernel may use (>= 1).
//! - Return: [`STATUS_OK`] or a non-zero status (e.g. [`STATUS_INDEX`] for an out-of-range
//!   Gather index, which only the data can reveal). Shapes were checked at compile time; kernels
//!   still check what is cheap to check and never write out of bounds.
//!
//! Every kernel also has a safe Rust entry point taking slices, used by the tests.

pub mod conv;
pub mod matmul;
pub mod pool;

/// The signature every kernel exports with `#[no_mangle] extern "C"`.
pub type KernelFn =
    unsafe extern "C" fn(params: *const i64, bufs: *const *mut u8, threads: usize) -> i32;

/// Success.
pub const STATUS_OK: i32 = 0;
/// A parameter block that does not decode (wrong length or value): an artifact/runtime mismatch.
pub const STATUS_PARAMS: i32 = 1;
/// An index operand (Gather, ...) out of range.
pub const STATUS_INDEX: i32 = 2;
/// A null pointer where the operand is required.
pub const STATUS_NULL: i32 = 3;
/// The CPU lacks an instruction set extension the artifact was compiled for.
pub const STATUS_CPU: i32 = 4;
/// A kernel panicked (a bug); the output is unspecified.
pub const STATUS_INTERNAL: i32 = 99;

/// Encodes a float parameter as a word.
pub fn f64_word(x: f64) -> i64 {
    x.to_bits() as i64
}

/// Decodes a float parameter word.
pub fn word_f64(w: i64) -> f64 {
    f64::from_bits(w as u64)
}

/// Human-readable text of a status code.
pub fn status_message(status: i32) -> &'static str {
    match status {
        STATUS_OK => "ok",
        STATUS_PARAMS => "kernel parameters do not decode (artifact built for another runtime?)",
        STATUS_INDEX => "index out of range in a Gather/ScatterND-like operand",
        STATUS_NULL => "null pointer for a required operand",
        STATUS_CPU => "this CPU lacks an instruction set the artifact was compiled for",
        STATUS_INTERNAL => "internal error in a kernel",
        _ => "unknown status",
    }
}

pub mod attention;
pub mod copy;
pub mod gather;
pub mod lstm;
pub mod norm;
pub mod qconv;
pub mod qmatmul;
pub mod reduce;
pub mod resize;
pub mod spmm;
