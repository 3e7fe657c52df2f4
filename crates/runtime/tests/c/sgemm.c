/* Links against libpare_runtime.a through include/pare_runtime.h and checks a small fused GEMM
 * and the packed path against a naive loop. Exit status 0 on success. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "pare_runtime.h"

#define M 7
#define N 19
#define K 5

int main(void) {
    float a[M * K], b[K * N], bias[N], c[M * N], c2[M * N], want[M * N];
    for (int i = 0; i < M * K; i++) a[i] = (float)((i * 7) % 13 - 6) * 0.1f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 5) % 11 - 5) * 0.1f;
    for (int j = 0; j < N; j++) bias[j] = 0.05f * (float)j - 0.4f;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int p = 0; p < K; p++) s += a[i * K + p] * b[p * N + j];
            s += bias[j];
            want[i * N + j] = s < 0 ? 0 : (s > 0.3f ? 0.3f : s);
        }
    PareEpilogue epi = {PARE_BIAS_PER_COLUMN, PARE_ACT_CLAMP, bias, NULL, 0, 0.0f, 0.3f};
    int st = pare_sgemm_fused(M, N, K, 1.0f, a, K, 0, b, N, 0, 0.0f, c, N, &epi, 2);
    if (st != PARE_OK) { fprintf(stderr, "pare_sgemm_fused: %d\n", st); return 1; }

    size_t len = pare_sgemm_packed_b_len(K, N);
    float *packed = malloc(len * sizeof(float));
    st = pare_sgemm_pack_b(K, N, b, N, 0, packed, len);
    if (st != PARE_OK) { fprintf(stderr, "pare_sgemm_pack_b: %d\n", st); return 1; }
    st = pare_sgemm_packed(M, N, K, 1.0f, a, K, 0, packed, 0.0f, c2, N, &epi, 1);
    if (st != PARE_OK) { fprintf(stderr, "pare_sgemm_packed: %d\n", st); return 1; }
    free(packed);

    for (int i = 0; i < M * N; i++)
        if (fabsf(c[i] - want[i]) > 1e-5f || fabsf(c2[i] - want[i]) > 1e-5f) {
            fprintf(stderr, "mismatch at %d: %g %g want %g\n", i, c[i], c2[i], want[i]);
            return 1;
        }
    if (pare_sgemm(M, N, K, 1.0f, a, K - 1, 0, b, N, 0, 0.0f, c, N, 1) != PARE_ERR_LEADING_DIM) return 1;
    printf("ok isa=%d\n", pare_runtime_isa());
    return 0;
}
