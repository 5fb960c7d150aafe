/*
moescope - bench/bench_coact.c
Times co-activation counting at the T5-base shape: Coact_compute (2 threads; the kernel
it picks, or MOESCOPE_COACT_KERNEL's) against the dense formulation A^T A by cblas_sgemm
(Coact_computeDense), on structured h at 90% sparsity (or the given density), checks that
the counts are identical and prints the speedup next to the target.
Usage: bench/bench_coact [T_train [N [density [nodense]]]]   (default 32768 3072 0.1);
nodense skips the reference (for comparing kernels across densities).
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/Coact.h"
#include "util/XUtils.h"

static uint64_t rng = 88172645463325252ULL;
static inline uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static inline double unif(void) {
    return (double)(next() >> 11) * 0x1.0p-53;
}

/* 32 co-firing groups; each token picks two: their neurons fire with p = 0.6, the
   others with 1/15, so about 10% of the entries are active (both scaled by density/0.1,
   at most 1). */
static float *makeH(long T, int N, double density) {
    double pIn = 0.6 * density / 0.1, pOut = density / 0.1 / 15.0;
    pIn = pIn < 1.0 ? pIn : 1.0;
    pOut = pOut < 1.0 ? pOut : 1.0;
    float *h = tryMallocArray((size_t)T * N, sizeof(float));
    if (!h)
        return NULL;
    int *group = xMallocArray((size_t)N, sizeof(int));
    for (int j = 0; j < N; j++)
        group[j] = (int)(next() % 32);
    for (long t = 0; t < T; t++) {
        int g1 = (int)(next() % 32), g2 = (int)(next() % 32);
        float *row = h + t * N;
        for (int j = 0; j < N; j++) {
            double p = group[j] == g1 || group[j] == g2 ? pIn : pOut;
            row[j] = unif() < p ? (float)unif() + 0.01f : 0.0f;
        }
    }
    free(group);
    return h;
}

/* CPU seconds of all threads: on a shared machine wall time depends on the neighbours,
   the work does not. */
static double cpuSeconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + 1e-6 * (double)r.ru_utime.tv_usec +
           (double)r.ru_stime.tv_sec + 1e-6 * (double)r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
    long T = argc > 1 ? atol(argv[1]) : 32768;
    int N = argc > 2 ? atoi(argv[2]) : 3072;
    double density = argc > 3 ? atof(argv[3]) : 0.1;
    bool noDense = argc > 4 && strcmp(argv[4], "nodense") == 0;
    const char *kernel = getenv("MOESCOPE_COACT_KERNEL");
    printf("bench_coact: T_train = %ld tokens x N = %d neurons, kernel %s\n", T, N,
           kernel ? kernel : "auto");
    float *h = makeH(T, N, density);
    if (!h) {
        fprintf(stderr, "bench_coact: out of memory for h\n");
        return 1;
    }
    long active = 0;
    for (size_t c = 0; c < (size_t)T * N; c++)
        active += h[c] > 0.0f;
    printf("sparsity %.4f\n", 1.0 - (double)active / ((double)T * N));
    char *cause = NULL;
    Coact pop, dense;
    double c0 = cpuSeconds(), t0 = XUtils_now();
    MsStatus st = Coact_compute(&pop, h, T, N, 0.0f, 2, NULL, &cause);
    double c1 = cpuSeconds(), t1 = XUtils_now();
    if (st == MS_OK && noDense) {
        printf("Coact_compute (2 threads) %8.3f s wall %8.3f s cpu\n", t1 - t0, c1 - c0);
        Coact_done(&pop);
        free(h);
        return 0;
    }
    if (st == MS_OK)
        st = Coact_computeDense(&dense, h, T, N, 0.0f, &cause);
    double c2 = cpuSeconds(), t2 = XUtils_now();
    if (st != MS_OK) {
        fprintf(stderr, "bench_coact: %s\n", cause ? cause : Status_name(st));
        return 1;
    }
    bool same = memcmp(pop.C, dense.C, (size_t)N * N * sizeof(uint32_t)) == 0;
    printf("                          wall s    cpu s (all threads)\n");
    printf("Coact_compute (2 thr.)  %8.3f %8.3f\n", t1 - t0, c1 - c0);
    printf("dense sgemm A^T A       %8.3f %8.3f\n", t2 - t1, c2 - c1);
    printf("counts: %s\n", same ? "OK (identical)" : "MISMATCH");
    printf("speedup %.1fx wall, %.1fx cpu (target >= 10x)\n", (t2 - t1) / (t1 - t0),
           (c2 - c1) / (c1 - c0));
    printf("reproduce: make bench/bench_coact && bench/bench_coact %ld %d %g\n", T, N, density);
    Coact_done(&pop);
    Coact_done(&dense);
    free(h);
    return same ? 0 : 1;
}
