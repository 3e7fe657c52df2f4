/*
 * A hand-written "compiled model" for tests/exe_loader.rs, exporting the model ABI
 * (examples/c-api/pare_model_abi.h) under the prefix `fake`:
 *
 *   inputs:  x f32[2,3], offset f32[3]
 *   outputs: y f32[2,3] = 2*x + 1 + offset (broadcast over rows)
 *            ids/argmax i64[2] = argmax of each row of x
 *
 * run returns PARE_STATUS_INDEX when x[0] == -999 (to test error reporting).
 * Variants: fake_badver_api (ABI version 99), fake_cpu_api (cpu_features from FAKE_CPU_FEATURES,
 * a macro the test defines).
 */
#include "pare_model_abi.h"
#include <stdlib.h>

#ifndef FAKE_CPU_FEATURES
#define FAKE_CPU_FEATURES "avx512f"
#endif

PARE_DECLARE_MODEL(fake)

typedef struct {
    int32_t threads;
    int64_t runs;
} FakeCtx;

static const int64_t x_shape[2] = {2, 3};
static const int64_t off_shape[1] = {3};
static const int64_t ids_shape[1] = {2};

static const PareTensorInfo fake_inputs[2] = {
    {"x", PARE_DTYPE_F32, 2, x_shape, 24},
    {"offset", PARE_DTYPE_F32, 1, off_shape, 12},
};
static const PareTensorInfo fake_outputs[2] = {
    {"y", PARE_DTYPE_F32, 2, x_shape, 24},
    {"ids/argmax", PARE_DTYPE_I64, 1, ids_shape, 16},
};

void *fake_create(int32_t threads) {
    FakeCtx *c = (FakeCtx *)calloc(1, sizeof(FakeCtx));
    if (c) c->threads = threads;
    return c;
}

int32_t fake_run(void *ctx, const void *const *inputs, void *const *outputs) {
    FakeCtx *c = (FakeCtx *)ctx;
    const float *x = (const float *)inputs[0];
    const float *off = (const float *)inputs[1];
    float *y = (float *)outputs[0];
    int64_t *ids = (int64_t *)outputs[1];
    if (!c || !x || !off || !y || !ids) return PARE_STATUS_NULL;
    if (x[0] == -999.0f) return PARE_STATUS_INDEX;
    for (int i = 0; i < 2; i++) {
        int64_t best = 0;
        for (int j = 0; j < 3; j++) {
            y[i * 3 + j] = 2.0f * x[i * 3 + j] + 1.0f + off[j];
            if (x[i * 3 + j] > x[i * 3 + best]) best = j;
        }
        ids[i] = best;
    }
    c->runs++;
    return PARE_STATUS_OK;
}

void fake_destroy(void *ctx) { free(ctx); }

static const PareModelApi fake_api_struct = {
    PARE_MODEL_ABI_VERSION, 2, 2, 0, "fake", fake_inputs, fake_outputs, 4096,
    "x86_64-unknown-linux-gnu", "", fake_create, fake_run, fake_destroy,
};
const PareModelApi *fake_api(void) { return &fake_api_struct; }

static const PareModelApi fake_badver_struct = {
    99, 2, 2, 0, "fake", fake_inputs, fake_outputs, 4096,
    "x86_64-unknown-linux-gnu", "", fake_create, fake_run, fake_destroy,
};
const PareModelApi *fake_badver_api(void) { return &fake_badver_struct; }

static const PareModelApi fake_cpu_struct = {
    PARE_MODEL_ABI_VERSION, 2, 2, 0, "fake", fake_inputs, fake_outputs, 4096,
    "x86_64-unknown-linux-gnu", FAKE_CPU_FEATURES, fake_create, fake_run, fake_destroy,
};
const PareModelApi *fake_cpu_api(void) { return &fake_cpu_struct; }
