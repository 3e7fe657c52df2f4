/* pare_runtime.h: C ABI of pare-runtime, the kernel library linked into pare's compiled
 * artifacts. Kept in sync by hand with crates/runtime/src/ffi.rs (the Rust side documents the
 * contract in detail); crates/runtime/tests/c_header.rs compiles and runs a C program against it
 * when a C compiler is available.
 *
 * Conventions: row-major float matrices; leading dimensions in elements; trans_* 0 or non-zero;
 * a stored rows x cols matrix spans (rows-1)*ld + cols elements, which must be readable
 * (writable for C); a pointer may be NULL only when that span is 0; C overlaps no input;
 * threads = 0 means all cores. Every function validates first and writes nothing on error.
 *
 * Link: libpare_runtime.a plus -lpthread -ldl -lm (nothing else is needed at run time). */
#ifndef PARE_RUNTIME_H
#define PARE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    PARE_OK = 0,
    PARE_ERR_NULL = 1,        /* NULL pointer with a non-zero implied length */
    PARE_ERR_LEADING_DIM = 2, /* leading dimension smaller than the row length */
    PARE_ERR_BUFFER = 3,      /* buffer too small (Rust API only) */
    PARE_ERR_OVERFLOW = 4,    /* size computation overflowed */
    PARE_ERR_EPILOGUE = 5,    /* unknown bias kind/activation, clamp min > max, NaN parameter */
    PARE_ERR_PACKED = 6,      /* packed-B length does not match k, n */
    PARE_ERR_ISA = 7,         /* requested instruction set unavailable */
    PARE_ERR_INTERNAL = 99    /* bug in the runtime (caught panic) */
};

enum { PARE_BIAS_NONE = 0, PARE_BIAS_PER_COLUMN = 1, PARE_BIAS_PER_ROW = 2 };

enum {
    PARE_ACT_IDENTITY = 0,
    PARE_ACT_RELU = 1,
    PARE_ACT_CLAMP = 2,      /* min(max(x, act_p0), act_p1): Clip, Relu6 */
    PARE_ACT_LEAKY_RELU = 3, /* x < 0 ? act_p0 * x : x */
    PARE_ACT_SIGMOID = 4,
    PARE_ACT_TANH = 5,
    PARE_ACT_GELU = 6,       /* erf form */
    PARE_ACT_GELU_TANH = 7,
    PARE_ACT_HARD_SIGMOID = 8, /* min(max(act_p0 * x + act_p1, 0), 1) */
    PARE_ACT_HARD_SWISH = 9    /* x * min(max(x / 6 + 0.5, 0), 1) */
};

/* C = act(alpha*op(A)*op(B) + beta*C + bias + residual). */
typedef struct PareEpilogue {
    int32_t bias_kind;     /* PARE_BIAS_* */
    int32_t activation;    /* PARE_ACT_* */
    const float *bias;     /* length n (per column) or m (per row) */
    const float *residual; /* m x n, or NULL */
    size_t ldr;            /* leading dimension of residual */
    float act_p0;
    float act_p1;
} PareEpilogue;

/* 1 if the AVX2+FMA kernels are used on this CPU, 0 for the portable ones. */
int32_t pare_runtime_isa(void);

int32_t pare_sgemm(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                   int32_t trans_a, const float *b, size_t ldb, int32_t trans_b, float beta,
                   float *c, size_t ldc, size_t threads);

/* epilogue may be NULL. */
int32_t pare_sgemm_fused(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                         int32_t trans_a, const float *b, size_t ldb, int32_t trans_b, float beta,
                         float *c, size_t ldc, const PareEpilogue *epilogue, size_t threads);

/* Floats needed for a packed k x n B (0 on overflow). The layout is stable (16-column panels,
 * k-major, zero-padded) so packed weights may be stored in an artifact's constant data. */
size_t pare_sgemm_packed_b_len(size_t k, size_t n);

int32_t pare_sgemm_pack_b(size_t k, size_t n, const float *b, size_t ldb, int32_t trans_b,
                          float *out, size_t out_len);

/* packed: pare_sgemm_packed_b_len(k, n) floats from pare_sgemm_pack_b; 64-byte alignment is
 * fastest, any works. */
int32_t pare_sgemm_packed(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                          int32_t trans_a, const float *packed, float beta, float *c, size_t ldc,
                          const PareEpilogue *epilogue, size_t threads);

#ifdef __cplusplus
}
#endif

#endif /* PARE_RUNTIME_H */
