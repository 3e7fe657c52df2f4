/*
 * Drives a model compiled by pare from C: prints every input and output descriptor, runs the
 * model once on all-zero inputs, and prints the run time and the first values of each output.
 *
 *   cc -std=c11 -O2 -I. -DPARE_PREFIX=pare_model main.c ./libmodel.so -Wl,-rpath,'$ORIGIN' -o demo
 *   ./demo [threads]
 *
 * Only the model's `<prefix>_api` is called by name; everything else goes through the struct.
 */
#define _POSIX_C_SOURCE 199309L
#include "pare_model_abi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PARE_PREFIX
#define PARE_PREFIX pare_model
#endif
PARE_DECLARE_MODEL(PARE_PREFIX)

static const char *dtype_name(int32_t d) {
    switch (d) {
    case PARE_DTYPE_F32: return "float32";
    case PARE_DTYPE_U8: return "uint8";
    case PARE_DTYPE_I8: return "int8";
    case PARE_DTYPE_I32: return "int32";
    case PARE_DTYPE_I64: return "int64";
    case PARE_DTYPE_BOOL: return "bool";
    case PARE_DTYPE_F16: return "float16";
    case PARE_DTYPE_F64: return "float64";
    default: return "?";
    }
}

static void print_desc(const char *kind, uint32_t i, const PareTensorInfo *t) {
    printf("%s %u %s: %s[", kind, i, t->name, dtype_name(t->dtype));
    for (int32_t k = 0; k < t->rank; k++) printf(k ? ", %lld" : "%lld", (long long)t->shape[k]);
    printf("] (%zu bytes)\n", t->bytes);
}

/* Prints up to 8 leading elements of a buffer. */
static void print_head(const PareTensorInfo *t, const void *buf) {
    size_t size = 1;
    switch (t->dtype) {
    case PARE_DTYPE_F32: case PARE_DTYPE_I32: size = 4; break;
    case PARE_DTYPE_I64: case PARE_DTYPE_F64: size = 8; break;
    case PARE_DTYPE_F16: size = 2; break;
    default: size = 1;
    }
    size_t n = t->bytes / size < 8 ? t->bytes / size : 8;
    printf("  %s = [", t->name);
    for (size_t i = 0; i < n; i++) {
        if (i) printf(", ");
        switch (t->dtype) {
        case PARE_DTYPE_F32: printf("%g", ((const float *)buf)[i]); break;
        case PARE_DTYPE_F64: printf("%g", ((const double *)buf)[i]); break;
        case PARE_DTYPE_I32: printf("%d", ((const int32_t *)buf)[i]); break;
        case PARE_DTYPE_I64: printf("%lld", (long long)((const int64_t *)buf)[i]); break;
        case PARE_DTYPE_I8: printf("%d", ((const int8_t *)buf)[i]); break;
        case PARE_DTYPE_F16: printf("0x%04x", ((const uint16_t *)buf)[i]); break;
        default: printf("%u", ((const uint8_t *)buf)[i]);
        }
    }
    printf("%s]\n", t->bytes / size > n ? ", ..." : "");
}

int main(int argc, char **argv) {
    int32_t threads = argc > 1 ? atoi(argv[1]) : 0;
    const PareModelApi *api = PARE_API_FN(PARE_PREFIX)();
    if (!api || api->abi_version != PARE_MODEL_ABI_VERSION) {
        fprintf(stderr, "model ABI version %u, this program was built for %u\n",
                api ? api->abi_version : 0u, PARE_MODEL_ABI_VERSION);
        return 1;
    }
    printf("model %s (%s, cpu features: %s), arena %llu bytes\n", api->name, api->target_triple,
           api->cpu_features, (unsigned long long)api->arena_bytes);
    for (uint32_t i = 0; i < api->num_inputs; i++) print_desc("input", i, &api->inputs[i]);
    for (uint32_t i = 0; i < api->num_outputs; i++) print_desc("output", i, &api->outputs[i]);

    /* Zero inputs and output buffers (malloc's alignment suits every element type). */
    const void **ins = calloc(api->num_inputs + 1, sizeof *ins);
    void **outs = calloc(api->num_outputs + 1, sizeof *outs);
    if (!ins || !outs) return 1;
    for (uint32_t i = 0; i < api->num_inputs; i++) {
        ins[i] = calloc(1, api->inputs[i].bytes + 1);
        if (!ins[i]) return 1;
    }
    for (uint32_t i = 0; i < api->num_outputs; i++) {
        outs[i] = malloc(api->outputs[i].bytes + 1);
        if (!outs[i]) return 1;
    }

    void *ctx = api->create(threads);
    if (!ctx) {
        fprintf(stderr, "create failed (out of memory?)\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int32_t status = api->run(ctx, (const void *const *)ins, (void *const *)outs);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (status != PARE_STATUS_OK) {
        fprintf(stderr, "run failed with status %d\n", status);
        api->destroy(ctx);
        return 1;
    }
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("ran in %.3f ms\n", ms);
    for (uint32_t i = 0; i < api->num_outputs; i++) print_head(&api->outputs[i], outs[i]);

    api->destroy(ctx);
    for (uint32_t i = 0; i < api->num_inputs; i++) free((void *)ins[i]);
    for (uint32_t i = 0; i < api->num_outputs; i++) free(outs[i]);
    free(ins);
    free(outs);
    return 0;
}
