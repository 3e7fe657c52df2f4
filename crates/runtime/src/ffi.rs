//! The C ABI that emitted code calls. Declared for C in `include/pare_runtime.h`.
//!
//! Every function validates its arguments exactly like the Rust API and returns a status code
//! (`PARE_OK` or one of the `PARE_ERR_*` below); nothing is written on error. Matrices are
//! row-major `float`; `trans_*` is 0 or non-zero; leading dimensions are in elements. The lengths
//! of the buffers are implied by the shapes (`(rows-1)*ld + cols` for a stored `rows x cols`
//! matrix), and the caller guarantees that many elements are readable (writable for C). A
//! pointer may be NULL only when its implied length is 0. C must not overlap any input (to add a
//! residual in place, pass it as C with `beta = 1`). `threads` = 0 means all cores.
//!
//! Panics are impossible by construction (all inputs are validated first); if one happened
//! anyway it is caught and reported as `PARE_ERR_INTERNAL` instead of unwinding into C.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::gemm::pack::{self, PackedB, PackedBRef};
use crate::gemm::{stored_need, validate_operand, BOperand, Gemm, Isa};
use crate::{Activation, Bias, Epilogue, GemmError, Residual};

/// Success.
pub const PARE_OK: i32 = 0;
/// A pointer was NULL although its implied length is not 0.
pub const PARE_ERR_NULL: i32 = 1;
/// A leading dimension is smaller than its row length.
pub const PARE_ERR_LEADING_DIM: i32 = 2;
/// A buffer is too small (Rust API; in C the lengths are implied, except `pare_sgemm_pack_b`'s
/// `out_len`).
pub const PARE_ERR_BUFFER: i32 = 3;
/// A size computation overflowed.
pub const PARE_ERR_OVERFLOW: i32 = 4;
/// Invalid epilogue: bias kind or activation unknown, clamp min > max, NaN parameter.
pub const PARE_ERR_EPILOGUE: i32 = 5;
/// Packed B length does not match `k`, `n`.
pub const PARE_ERR_PACKED: i32 = 6;
/// Requested instruction set unavailable.
pub const PARE_ERR_ISA: i32 = 7;
/// A bug in the runtime (a caught panic).
pub const PARE_ERR_INTERNAL: i32 = 99;

/// `PareEpilogue::bias_kind`: no bias.
pub const PARE_BIAS_NONE: i32 = 0;
/// `PareEpilogue::bias_kind`: `bias[j]` added to column `j` (length n).
pub const PARE_BIAS_PER_COLUMN: i32 = 1;
/// `PareEpilogue::bias_kind`: `bias[i]` added to row `i` (length m).
pub const PARE_BIAS_PER_ROW: i32 = 2;

/// `PareEpilogue::activation` values.
pub const PARE_ACT_IDENTITY: i32 = 0;
/// `max(x, 0)`.
pub const PARE_ACT_RELU: i32 = 1;
/// `min(max(x, p0), p1)`.
pub const PARE_ACT_CLAMP: i32 = 2;
/// `x < 0 ? p0 * x : x`.
pub const PARE_ACT_LEAKY_RELU: i32 = 3;
/// Logistic sigmoid.
pub const PARE_ACT_SIGMOID: i32 = 4;
/// Hyperbolic tangent.
pub const PARE_ACT_TANH: i32 = 5;
/// Gelu with erf.
pub const PARE_ACT_GELU: i32 = 6;
/// Gelu, tanh approximation.
pub const PARE_ACT_GELU_TANH: i32 = 7;
/// `clamp(p0 * x + p1, 0, 1)` (ONNX HardSigmoid).
pub const PARE_ACT_HARD_SIGMOID: i32 = 8;
/// `x * clamp(x / 6 + 1/2, 0, 1)` (ONNX HardSwish).
pub const PARE_ACT_HARD_SWISH: i32 = 9;

/// The fused epilogue, C layout. A NULL `*const PareEpilogue` means none.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PareEpilogue {
    /// `PARE_BIAS_*`.
    pub bias_kind: i32,
    /// `PARE_ACT_*`.
    pub activation: i32,
    /// Bias vector (length n per column, m per row); ignored for `PARE_BIAS_NONE`.
    pub bias: *const f32,
    /// Residual `m x n` matrix added before the activation, or NULL.
    pub residual: *const f32,
    /// Leading dimension of `residual`.
    pub ldr: usize,
    /// First activation parameter (clamp min, leaky-relu slope).
    pub act_p0: f32,
    /// Second activation parameter (clamp max).
    pub act_p1: f32,
}

/// Reports which kernels `Isa::Auto` uses on this CPU: 1 = AVX2+FMA, 0 = portable.
#[no_mangle]
pub extern "C" fn pare_runtime_isa() -> i32 {
    match Isa::detect() {
        Isa::Avx2Fma => 1,
        _ => 0,
    }
}

/// Floats needed to hold `k x n` packed by `pare_sgemm_pack_b`; 0 if the size overflows (or is 0).
#[no_mangle]
pub extern "C" fn pare_sgemm_packed_b_len(k: usize, n: usize) -> usize {
    PackedB::packed_len(k, n).unwrap_or(0)
}

fn status(r: Result<(), GemmError>) -> i32 {
    match r {
        Ok(()) => PARE_OK,
        Err(e) => e.code(),
    }
}

fn guard(f: impl FnOnce() -> Result<(), GemmError>) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).map_or(PARE_ERR_INTERNAL, status)
}

/// Error for a NULL pointer with a non-zero implied length (mapped to `PARE_ERR_NULL`).
struct Null;

/// The slice a C pointer and its implied length describe.
///
/// # Safety
/// If `len > 0` and `p` is not NULL, `p` must point to `len` readable floats that are not written
/// during the returned lifetime.
unsafe fn input<'a>(p: *const f32, len: usize) -> Result<&'a [f32], Null> {
    if len == 0 {
        Ok(&[])
    } else if p.is_null() {
        Err(Null)
    } else {
        // SAFETY: caller contract: `len` readable floats, not written meanwhile.
        Ok(unsafe { std::slice::from_raw_parts(p, len) })
    }
}

/// Implied length of a `rows x cols` operand (`trans`: stored transposed).
fn implied(
    operand: &'static str,
    rows: usize,
    cols: usize,
    ld: usize,
    trans: bool,
) -> Result<usize, GemmError> {
    if trans {
        stored_need(operand, cols, rows, ld)
    } else {
        stored_need(operand, rows, cols, ld)
    }
}

/// Converts the C epilogue (NULL = none).
///
/// # Safety
/// `e` is NULL or points to a valid `PareEpilogue` whose pointers satisfy `input`'s contract for
/// the lengths implied by `m`, `n`.
unsafe fn epilogue<'a>(
    e: *const PareEpilogue,
    m: usize,
    n: usize,
) -> Result<Result<Epilogue<'a>, i32>, GemmError> {
    if e.is_null() {
        return Ok(Ok(Epilogue::default()));
    }
    // SAFETY: non-NULL and valid by the caller's contract.
    let e = unsafe { *e };
    // SAFETY (all `input` calls below): the caller guarantees the implied lengths are readable.
    let bias = match e.bias_kind {
        PARE_BIAS_NONE => Bias::None,
        PARE_BIAS_PER_COLUMN => match unsafe { input(e.bias, n) } {
            Ok(v) => Bias::PerColumn(v),
            Err(Null) => return Ok(Err(PARE_ERR_NULL)),
        },
        PARE_BIAS_PER_ROW => match unsafe { input(e.bias, m) } {
            Ok(v) => Bias::PerRow(v),
            Err(Null) => return Ok(Err(PARE_ERR_NULL)),
        },
        _ => return Ok(Err(PARE_ERR_EPILOGUE)),
    };
    let residual = if e.residual.is_null() {
        None
    } else {
        let len = implied("residual", m, n, e.ldr, false)?;
        match unsafe { input(e.residual, len) } {
            Ok(data) => Some(Residual { data, ld: e.ldr }),
            Err(Null) => return Ok(Err(PARE_ERR_NULL)),
        }
    };
    let activation = match e.activation {
        PARE_ACT_IDENTITY => Activation::Identity,
        PARE_ACT_RELU => Activation::Relu,
        PARE_ACT_CLAMP => Activation::Clamp {
            min: e.act_p0,
            max: e.act_p1,
        },
        PARE_ACT_LEAKY_RELU => Activation::LeakyRelu { alpha: e.act_p0 },
        PARE_ACT_SIGMOID => Activation::Sigmoid,
        PARE_ACT_TANH => Activation::Tanh,
        PARE_ACT_GELU => Activation::Gelu,
        PARE_ACT_GELU_TANH => Activation::GeluTanh,
        PARE_ACT_HARD_SIGMOID => Activation::HardSigmoid {
            alpha: e.act_p0,
            beta: e.act_p1,
        },
        PARE_ACT_HARD_SWISH => Activation::HardSwish,
        _ => return Ok(Err(PARE_ERR_EPILOGUE)),
    };
    Ok(Ok(Epilogue {
        bias,
        residual,
        activation,
    }))
}

/// Shared body of the GEMM entry points once B is known.
///
/// # Safety
/// The contract in the module doc for `a`, `c` and `epilogue`.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    trans_a: bool,
    b: BOperand<'_>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    epi: *const PareEpilogue,
    threads: usize,
) -> i32 {
    let mut code = PARE_OK;
    let st = guard(|| {
        // With alpha == 0 or k == 0, A is never read, but it is still validated as given.
        let a_len = implied("a", m, k, lda, trans_a)?;
        let c_len = stored_need("c", m, n, ldc)?;
        // SAFETY: caller contract for A (a_len readable floats).
        let a = match unsafe { input(a, a_len) } {
            Ok(a) => a,
            Err(Null) => {
                code = PARE_ERR_NULL;
                return Ok(());
            }
        };
        // SAFETY: caller contract for the epilogue.
        let epilogue = match unsafe { epilogue(epi, m, n) }? {
            Ok(e) => e,
            Err(e) => {
                code = e;
                return Ok(());
            }
        };
        let c = if c_len == 0 {
            &mut [][..]
        } else if c.is_null() {
            code = PARE_ERR_NULL;
            return Ok(());
        } else {
            // SAFETY: caller contract: c_len writable floats, overlapping no input.
            unsafe { std::slice::from_raw_parts_mut(c, c_len) }
        };
        Gemm {
            m,
            n,
            k,
            alpha,
            beta,
            a,
            lda,
            trans_a,
            b,
            epilogue,
            threads,
            isa: Isa::Auto,
        }
        .run(c, ldc)
    });
    if st != PARE_OK {
        st
    } else {
        code
    }
}

/// `C = alpha*op(A)*op(B) + beta*C`. See the module doc for the conventions.
///
/// # Safety
/// The pointers must satisfy the contract in the module doc.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pare_sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    trans_a: i32,
    b: *const f32,
    ldb: usize,
    trans_b: i32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    threads: usize,
) -> i32 {
    // SAFETY: forwarded contract; a NULL epilogue means none.
    unsafe {
        pare_sgemm_fused(
            m,
            n,
            k,
            alpha,
            a,
            lda,
            trans_a,
            b,
            ldb,
            trans_b,
            beta,
            c,
            ldc,
            std::ptr::null(),
            threads,
        )
    }
}

/// `C = act(alpha*op(A)*op(B) + beta*C + bias + residual)`; `epilogue` may be NULL.
///
/// # Safety
/// The pointers must satisfy the contract in the module doc.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pare_sgemm_fused(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    trans_a: i32,
    b: *const f32,
    ldb: usize,
    trans_b: i32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    epilogue: *const PareEpilogue,
    threads: usize,
) -> i32 {
    let trans_b = trans_b != 0;
    let b_len = match implied("b", k, n, ldb, trans_b) {
        Ok(l) => l,
        Err(e) => return e.code(),
    };
    // SAFETY: caller contract for B.
    let b = match unsafe { input(b, b_len) } {
        Ok(b) => b,
        Err(Null) => return PARE_ERR_NULL,
    };
    let b = BOperand::Dense {
        data: b,
        ld: ldb,
        trans: trans_b,
    };
    // SAFETY: forwarded contract.
    unsafe {
        run(
            m,
            n,
            k,
            alpha,
            a,
            lda,
            trans_a != 0,
            b,
            beta,
            c,
            ldc,
            epilogue,
            threads,
        )
    }
}

/// Packs `op(B)` (`k x n`) into `out`, which must hold exactly `pare_sgemm_packed_b_len(k, n)`
/// floats (`out_len`). The result may be stored and reused across processes: the layout is the
/// documented `PackedB` layout.
///
/// # Safety
/// `b` readable for its implied length, `out` writable for `out_len` floats, no overlap.
#[no_mangle]
pub unsafe extern "C" fn pare_sgemm_pack_b(
    k: usize,
    n: usize,
    b: *const f32,
    ldb: usize,
    trans_b: i32,
    out: *mut f32,
    out_len: usize,
) -> i32 {
    let trans_b = trans_b != 0;
    let (b_len, need) = match (implied("b", k, n, ldb, trans_b), PackedB::packed_len(k, n)) {
        (Ok(b_len), Ok(need)) => (b_len, need),
        (Err(e), _) | (_, Err(e)) => return e.code(),
    };
    if out_len != need {
        return PARE_ERR_PACKED;
    }
    if need > 0 && out.is_null() {
        return PARE_ERR_NULL;
    }
    // SAFETY: caller contract for B.
    let Ok(b) = (unsafe { input(b, b_len) }) else {
        return PARE_ERR_NULL;
    };
    guard(|| {
        let view = validate_operand("b", k, n, b, ldb, trans_b)?;
        if need > 0 {
            // SAFETY: caller contract: `out` writable for out_len == need floats, no overlap.
            let out = unsafe { std::slice::from_raw_parts_mut(out, need) };
            pack::pack_b(out, view, 0, k, 0, n);
        }
        Ok(())
    })
}

/// `C = act(alpha*op(A)*B + beta*C + bias + residual)` with B packed by `pare_sgemm_pack_b` for
/// this `k`, `n` (`packed` holds `pare_sgemm_packed_b_len(k, n)` floats).
///
/// # Safety
/// The pointers must satisfy the contract in the module doc.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn pare_sgemm_packed(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    lda: usize,
    trans_a: i32,
    packed: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    epilogue: *const PareEpilogue,
    threads: usize,
) -> i32 {
    let len = match PackedB::packed_len(k, n) {
        Ok(l) => l,
        Err(e) => return e.code(),
    };
    // SAFETY: caller contract for the packed buffer.
    let data = match unsafe { input(packed, len) } {
        Ok(d) => d,
        Err(Null) => return PARE_ERR_NULL,
    };
    let b = match PackedBRef::new(k, n, data) {
        Ok(b) => BOperand::Packed(b),
        Err(e) => return e.code(),
    };
    // SAFETY: forwarded contract.
    unsafe {
        run(
            m,
            n,
            k,
            alpha,
            a,
            lda,
            trans_a != 0,
            b,
            beta,
            c,
            ldc,
            epilogue,
            threads,
        )
    }
}
