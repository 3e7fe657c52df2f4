//! The C ABI of a compiled model, shared by the code generator, the standalone executable's
//! `main` ([`crate::exe`]) and the Rust loader ([`crate::loader`]).
//!
//! An artifact compiled with symbol prefix `P` (default `pare_model`) exports:
//!
//! ```c
//! const PareModelApi *P_api(void);                 /* everything below, in one struct */
//! void *P_create(int32_t threads);                 /* 0 = all cores; NULL if out of memory */
//! int32_t P_run(void *ctx, const void *const *inputs, void *const *outputs);
//! void P_destroy(void *ctx);
//! ```
//!
//! `inputs[i]` points at a dense row-major buffer of `inputs[i].bytes` bytes, laid out as the
//! descriptor says; `outputs[i]` at a writable buffer of `outputs[i].bytes` bytes. Buffers need
//! no particular alignment beyond that of their element type. A context may be run any number
//! of times, from one thread at a time.

use std::ffi::{c_char, c_void};

/// Version of this struct's layout; bumped on any change.
pub const ABI_VERSION: u32 = 1;

/// ONNX `TensorProto.DataType` codes used in descriptors.
pub mod dtype {
    /// float32
    pub const F32: i32 = 1;
    /// uint8
    pub const U8: i32 = 2;
    /// int8
    pub const I8: i32 = 3;
    /// int32
    pub const I32: i32 = 6;
    /// int64
    pub const I64: i32 = 7;
    /// bool (one byte, 0 or 1)
    pub const BOOL: i32 = 9;
    /// float16
    pub const F16: i32 = 10;
    /// float64
    pub const F64: i32 = 11;

    /// Size in bytes of one element, or None for an unknown code.
    pub fn size(code: i32) -> Option<usize> {
        Some(match code {
            F32 | I32 => 4,
            U8 | I8 | BOOL => 1,
            I64 | F64 => 8,
            F16 => 2,
            _ => return None,
        })
    }

    /// The numpy `descr` (`<f4`, `<i8`, `|b1`, ...) of a code.
    pub fn numpy_descr(code: i32) -> Option<&'static str> {
        Some(match code {
            F32 => "<f4",
            U8 => "|u1",
            I8 => "|i1",
            I32 => "<i4",
            I64 => "<i8",
            BOOL => "|b1",
            F16 => "<f2",
            F64 => "<f8",
            _ => return None,
        })
    }
}

/// One input or output of a compiled model.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PareTensorInfo {
    /// NUL-terminated ONNX value name.
    pub name: *const c_char,
    /// ONNX dtype code ([`dtype`]).
    pub dtype: i32,
    /// Number of dimensions.
    pub rank: i32,
    /// `rank` dimensions (static: the model was compiled for them).
    pub shape: *const i64,
    /// Size of the dense buffer in bytes.
    pub bytes: usize,
}

/// `P_create`.
pub type CreateFn = unsafe extern "C" fn(threads: i32) -> *mut c_void;
/// `P_run`: 0 on success, else a status ([`crate::ops::status_message`]).
pub type RunFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    inputs: *const *const c_void,
    outputs: *const *mut c_void,
) -> i32;
/// `P_destroy`.
pub type DestroyFn = unsafe extern "C" fn(ctx: *mut c_void);

/// Everything a host needs to drive a compiled model (`P_api()` returns a pointer to a static
/// instance).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PareModelApi {
    /// [`ABI_VERSION`] of the generator.
    pub abi_version: u32,
    /// Number of inputs.
    pub num_inputs: u32,
    /// Number of outputs.
    pub num_outputs: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// NUL-terminated model name.
    pub name: *const c_char,
    /// `num_inputs` descriptors.
    pub inputs: *const PareTensorInfo,
    /// `num_outputs` descriptors.
    pub outputs: *const PareTensorInfo,
    /// Bytes of the activation arena one context allocates.
    pub arena_bytes: u64,
    /// NUL-terminated LLVM target triple the artifact was compiled for.
    pub target_triple: *const c_char,
    /// NUL-terminated comma-separated CPU features the code assumes (e.g. `avx2,fma`).
    pub cpu_features: *const c_char,
    /// Creates a context.
    pub create: CreateFn,
    /// Runs one inference.
    pub run: RunFn,
    /// Frees a context (null is allowed).
    pub destroy: DestroyFn,
}

/// Allocates `bytes` zeroed bytes aligned to 64 (null on failure or for 0 bytes). Used by the
/// generated `P_create` for the context and the activation arena.
#[no_mangle]
pub extern "C" fn pare_rt_alloc(bytes: u64) -> *mut u8 {
    let Ok(size) = usize::try_from(bytes) else {
        return std::ptr::null_mut();
    };
    match std::alloc::Layout::from_size_align(size, 64) {
        Ok(layout) if size > 0 => {
            // SAFETY: the layout has a non-zero size, as alloc_zeroed requires.
            unsafe { std::alloc::alloc_zeroed(layout) }
        }
        _ => std::ptr::null_mut(),
    }
}

/// Frees memory from [`pare_rt_alloc`] (`bytes` as passed there; null is ignored).
///
/// # Safety
/// `p` must come from `pare_rt_alloc(bytes)` and not have been freed.
#[no_mangle]
pub unsafe extern "C" fn pare_rt_free(p: *mut u8, bytes: u64) {
    if p.is_null() || bytes == 0 {
        return;
    }
    if let Ok(layout) = std::alloc::Layout::from_size_align(bytes as usize, 64) {
        // SAFETY: the caller passes a pointer from pare_rt_alloc with the same size, so it was
        // allocated with exactly this layout.
        unsafe { std::alloc::dealloc(p, layout) }
    }
}

/// The thread count `P_create(0)` uses: the cores this process may run on.
#[no_mangle]
pub extern "C" fn pare_rt_default_threads() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1)
}

/// A generated loop body: processes rows `[lo, hi)` of a fused elementwise loop nest.
pub type RowsFn = unsafe extern "C" fn(args: *const *mut u8, lo: i64, hi: i64);

/// Runs `f(args, lo, hi)` over `[0, rows)` split into one contiguous chunk per thread on the
/// runtime's thread pool (the generated code calls this for large fused elementwise loops).
///
/// # Safety
/// `f` must be safe to call concurrently on disjoint row ranges with `args`.
#[no_mangle]
pub unsafe extern "C" fn pare_rt_parallel_for(
    f: RowsFn,
    args: *const *mut u8,
    rows: i64,
    threads: i64,
) {
    let rows = rows.max(0);
    let t = threads.clamp(1, rows.max(1));
    if t <= 1 {
        // SAFETY: the caller guarantees f may run on [0, rows) with args.
        unsafe { f(args, 0, rows) };
        return;
    }
    struct Args(*const *mut u8);
    // SAFETY: the rows are disjoint, and the generated function only reads the argument array.
    unsafe impl Sync for Args {}
    let a = Args(args);
    let job = |i: usize| {
        let i = i as i64;
        let lo = rows * i / t;
        let hi = rows * (i + 1) / t;
        let a = &a;
        // SAFETY: chunks [lo, hi) of different tasks are disjoint; see the function contract.
        unsafe { f(a.0, lo, hi) };
    };
    crate::pool::run(t as usize, &job);
}
