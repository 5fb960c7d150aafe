/*
moescope - tests/test_Assign.c
Assign_maxWeight (the square max-weight assignment MEO's aligned slots use): against brute
force over every permutation for n <= 7, with and without ties (small integer weights,
all-equal and duplicated rows and columns); against an independent solver (the classic
O(n^3) Hungarian method, kept here as the reference) on random n = 96 matrices, continuous,
coarsely quantized (many ties) and cosine-like; the same call twice gives the same match.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Project headers first: cmocka defines a fail() macro that clashes with XUtils' fail(). */
#include "core/Assign.h"
#include "util/XUtils.h"

#include <cmocka.h>

static unsigned long long rngState = 12345u;

static double urand(void) {
    rngState = rngState * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rngState >> 11) / 9007199254740992.0;
}

/* Best total over every permutation (columns perm[depth..) still free). */
static double bestPerm(const float *w, int n, int depth, bool *used, double sofar) {
    if (depth == n)
        return sofar;
    double best = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (used[j])
            continue;
        used[j] = true;
        double v = bestPerm(w, n, depth + 1, used, sofar + w[depth * n + j]);
        used[j] = false;
        if (v > best)
            best = v;
    }
    return best;
}

/* match is a permutation; returns its total weight. */
static double checkedTotal(const float *w, int n, const int *match) {
    bool *seen = xCalloc((size_t)n, sizeof(bool));
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        assert_true(match[i] >= 0 && match[i] < n && !seen[match[i]]);
        seen[match[i]] = true;
        sum += w[(size_t)i * n + match[i]];
    }
    free(seen);
    return sum;
}

/* Solves twice: the same match (deterministic) and a permutation; returns the total. */
static double solve(const float *w, int n, int *match) {
    int *again = xMallocArray((size_t)n, sizeof(int));
    double got = Assign_maxWeight(w, n, match);
    assert_true(Assign_maxWeight(w, n, again) == got);
    assert_memory_equal(match, again, (size_t)n * sizeof(int));
    double sum = checkedTotal(w, n, match);
    assert_true(sum == got);
    free(again);
    return got;
}

static void fill(float *w, int n, int kind) {
    for (int c = 0; c < n * n; c++) {
        switch (kind) {
        case 0: /* continuous */
            w[c] = (float)(urand() * 4.0 - 2.0);
            break;
        case 1: /* small integers: many ties */
            w[c] = (float)(int)(urand() * 3.0);
            break;
        case 2: /* all equal */
            w[c] = 0.5f;
            break;
        default: /* duplicated rows and columns: w[i][j] depends on i / 2 and j / 2 */
            w[c] = (float)(((c / n) / 2 * 7 + (c % n) / 2 * 3) % 5) - 1.0f;
            break;
        }
    }
}

static void test_brute_force(void **state) {
    (void)state;
    float w[49];
    int match[7];
    for (int n = 1; n <= 7; n++) {
        for (int rep = 0; rep < 40; rep++) {
            fill(w, n, rep % 4);
            bool used[7] = {false};
            double best = bestPerm(w, n, 0, used, 0.0);
            double got = solve(w, n, match);
            /* integer-valued and continuous totals alike: within float rounding */
            assert_true(fabs(got - best) <= 1e-5 * (1.0 + fabs(best)));
            if (rep % 4)
                assert_true(got == best); /* exact in double for small integers */
        }
    }
    assert_true(Assign_maxWeight(w, 0, match) == 0.0);
}

/* ---- the reference: the Hungarian method, shortest augmenting paths (e-maxx form) ---- */

static double hungarian(const float *w, int n, int *match) {
    double *u = xCalloc((size_t)n + 1, sizeof(double));
    double *v = xCalloc((size_t)n + 1, sizeof(double));
    double *minv = xMallocArray((size_t)n + 1, sizeof(double));
    int *p = xCalloc((size_t)n + 1, sizeof(int));
    int *way = xCalloc((size_t)n + 1, sizeof(int));
    bool *used = xMallocArray((size_t)n + 1, sizeof(bool));
    for (int i = 1; i <= n; i++) {
        p[0] = i;
        int j0 = 0;
        for (int j = 0; j <= n; j++) {
            minv[j] = INFINITY;
            used[j] = false;
        }
        do {
            used[j0] = true;
            int i0 = p[j0], j1 = 0;
            double delta = INFINITY;
            for (int j = 1; j <= n; j++) {
                if (used[j])
                    continue;
                double cur = -(double)w[(size_t)(i0 - 1) * n + j - 1] - u[i0] - v[j];
                if (cur < minv[j]) {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for (int j = 0; j <= n; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    double total = 0.0;
    for (int j = 1; j <= n; j++) {
        match[p[j] - 1] = j - 1;
        total += w[(size_t)(p[j] - 1) * n + (j - 1)];
    }
    free(u);
    free(v);
    free(minv);
    free(p);
    free(way);
    free(used);
    return total;
}

/* Cosines of random unit vectors in 16 dimensions, a few of them repeated (like the key
   rows MEO aligns), padded with zero rows as MEO pads unequal experts. */
static void cosines(float *w, int n) {
    enum { DIM = 16 };
    float *a = xMallocArray((size_t)n * DIM, sizeof(float));
    float *b = xMallocArray((size_t)n * DIM, sizeof(float));
    for (int r = 0; r < n * DIM; r++) {
        a[r] = (float)(urand() - 0.5);
        b[r] = (float)(urand() - 0.5);
    }
    for (int r = 0; r < 8; r++) /* duplicated rows: exact ties */
        memcpy(a + (size_t)(n - 1 - r) * DIM, a + (size_t)r * DIM, DIM * sizeof(float));
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            double s = 0.0, na = 0.0, nb = 0.0;
            for (int c = 0; c < DIM; c++) {
                s += (double)a[i * DIM + c] * b[j * DIM + c];
                na += (double)a[i * DIM + c] * a[i * DIM + c];
                nb += (double)b[j * DIM + c] * b[j * DIM + c];
            }
            w[(size_t)i * n + j] = i >= n - 4 ? 0.0f : (float)(s / sqrt(na * nb));
        }
    }
    free(a);
    free(b);
}

static void test_vs_hungarian(void **state) {
    (void)state;
    const int n = 96;
    float *w = xMallocArray((size_t)n * n, sizeof(float));
    int *match = xMallocArray((size_t)n, sizeof(int));
    int *ref = xMallocArray((size_t)n, sizeof(int));
    for (int rep = 0; rep < 24; rep++) {
        int kind = rep % 4;
        if (kind == 3)
            cosines(w, n);
        else
            fill(w, n, kind == 2 ? 3 : kind);
        if (kind == 2) /* quantized to 1/8: ties, and totals exact in double */
            for (int c = 0; c < n * n; c++)
                w[c] = (float)(int)(urand() * 16.0) / 8.0f;
        double got = solve(w, n, match);
        double want = hungarian(w, n, ref);
        if (kind == 1 || kind == 2)
            assert_true(got == want);
        else
            assert_true(fabs(got - want) <= 1e-9 * (1.0 + fabs(want)));
        if (kind == 0) /* continuous weights: the optimum is unique */
            assert_memory_equal(match, ref, (size_t)n * sizeof(int));
    }
    free(w);
    free(match);
    free(ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brute_force),
        cmocka_unit_test(test_vs_hungarian),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
