/*
 * pare_model_abi.h - the C ABI of a model compiled by pare (model ABI version 1).
 *
 * `pare compile` writes `<prefix>.h` next to each artifact with this text followed by
 * PARE_DECLARE_MODEL(<prefix>). The layout mirrors crates/runtime/src/abi.rs exactly; that file
 * is the reference.
 *
 * An artifact compiled with symbol prefix P (default `pare_model`) exports:
 *
 *   const PareModelApi *P_api(void);   everything below in one static struct
 *   void   *P_create(int32_t threads); a context (arena + threads); 0 threads = all cores;
 *                                      NULL if out of memory
 *   int32_t P_run(void *ctx, const void *const *inputs, void *const *outputs);
 *                                      one inference; 0 = ok, else PARE_STATUS_*
 *   void    P_destroy(void *ctx);      frees a context (NULL allowed)
 *
 * inputs[i] points at a dense row-major buffer of api->inputs[i].bytes bytes laid out as the
 * descriptor says; outputs[i] at a writable buffer of api->outputs[i].bytes bytes. Buffers need
 * no alignment beyond that of their element type. A context may be run any number of times,
 * from one thread at a time; use one context per thread for concurrent inference.
 */
#ifndef PARE_MODEL_ABI_H
#define PARE_MODEL_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the structs below; api->abi_version must equal it. */
#define PARE_MODEL_ABI_VERSION 1u

/* Element types: ONNX TensorProto.DataType codes. */
#define PARE_DTYPE_F32 1  /* float */
#define PARE_DTYPE_U8 2   /* uint8_t */
#define PARE_DTYPE_I8 3   /* int8_t */
#define PARE_DTYPE_I32 6  /* int32_t */
#define PARE_DTYPE_I64 7  /* int64_t */
#define PARE_DTYPE_BOOL 9 /* one byte, 0 or 1 */
#define PARE_DTYPE_F16 10 /* IEEE half, as uint16_t */
#define PARE_DTYPE_F64 11 /* double */

/* Return values of P_run. */
#define PARE_STATUS_OK 0
#define PARE_STATUS_PARAMS 1   /* kernel parameters do not decode (artifact/runtime mismatch) */
#define PARE_STATUS_INDEX 2    /* an index operand (Gather, ...) out of range */
#define PARE_STATUS_NULL 3     /* a null pointer for a required operand */
#define PARE_STATUS_CPU 4      /* this CPU lacks an instruction set the code was compiled for */
#define PARE_STATUS_INTERNAL 99 /* a bug in a kernel; outputs unspecified */

/* One input or output. */
typedef struct PareTensorInfo {
    const char *name;     /* ONNX value name, NUL-terminated */
    int32_t dtype;        /* PARE_DTYPE_* */
    int32_t rank;         /* number of dimensions */
    const int64_t *shape; /* rank static dimensions */
    size_t bytes;         /* size of the dense buffer */
} PareTensorInfo;

typedef void *(*PareCreateFn)(int32_t threads);
typedef int32_t (*PareRunFn)(void *ctx, const void *const *inputs, void *const *outputs);
typedef void (*PareDestroyFn)(void *ctx);

/* Everything a host needs; P_api() returns a pointer to a static instance. */
typedef struct PareModelApi {
    uint32_t abi_version;          /* PARE_MODEL_ABI_VERSION of the generator */
    uint32_t num_inputs;
    uint32_t num_outputs;
    uint32_t reserved;             /* zero */
    const char *name;              /* model name */
    const PareTensorInfo *inputs;  /* num_inputs descriptors, in ONNX input order */
    const PareTensorInfo *outputs; /* num_outputs descriptors, in ONNX output order */
    uint64_t arena_bytes;          /* activation memory one context allocates */
    const char *target_triple;     /* LLVM target triple, e.g. "x86_64-unknown-linux-gnu" */
    const char *cpu_features;      /* comma-separated features the code assumes, e.g. "avx2,fma" */
    PareCreateFn create;           /* = P_create */
    PareRunFn run;                 /* = P_run */
    PareDestroyFn destroy;         /* = P_destroy */
} PareModelApi;

/* Declares the four entry points of an artifact with symbol prefix `prefix` (C linkage, also
 * when used from C++). */
#ifdef __cplusplus
#define PARE_EXTERN_C extern "C"
#else
#define PARE_EXTERN_C
#endif
#define PARE_DECLARE_MODEL(prefix) PARE_DECLARE_MODEL_(prefix)
#define PARE_DECLARE_MODEL_(p)                                                                 \
    PARE_EXTERN_C const PareModelApi *p##_api(void);                                           \
    PARE_EXTERN_C void *p##_create(int32_t threads);                                           \
    PARE_EXTERN_C int32_t p##_run(void *ctx, const void *const *inputs, void *const *outputs); \
    PARE_EXTERN_C void p##_destroy(void *ctx);

/* `P_api` for a prefix given as a macro (e.g. -DPARE_PREFIX=my_model). */
#define PARE_API_FN(prefix) PARE_API_FN_(prefix)
#define PARE_API_FN_(p) p##_api

/*
 * The runtime's main for standalone executables (`pare compile --emit exe`, linked from
 * libpare_runtime.a): parses the command line (--inputs, --out, --bench, --threads, --print,
 * --info, --help), runs the model and returns the exit status. The generated main is
 *   int main(int argc, char **argv) { return pare_exe_main(argc, argv, P_api()); }
 */
int32_t pare_exe_main(int32_t argc, char **argv, const PareModelApi *api);

#ifdef __cplusplus
}
#endif

#endif /* PARE_MODEL_ABI_H */
