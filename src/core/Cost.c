/*
moescope - core/Cost.c
SPEC §5 cost model, per token, in FLOPs (a multiply-add counts 2).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Cost.h"

#include <math.h>

int Cost_projections(bool gated) {
    return gated ? 3 : 2;
}

double Cost_expertSize(int N, int E) {
    return E > 0 ? (double)N / (double)E : 0.0;
}

double Cost_denseFlops(int d_model, int N, bool gated) {
    return 2.0 * d_model * (double)N * Cost_projections(gated);
}

double Cost_routerFlops(RouterKind kind, int d_model, int E) {
    switch (kind) {
    case ROUTER_SIMILARITY:
    case ROUTER_SIGMOID: return 2.0 * d_model * E;
    case ROUTER_MLP: return 2.0 * d_model * E + 2.0 * E * (double)E;
    case ROUTER_ORACLE: /* not realizable: it reads h, which costs the dense first layer */
    case ROUTER_TOPK_NEURONS: break;
    }
    return 0.0;
}

double Cost_moeFlops(RouterKind kind, int d_model, int N, int E, int k, bool gated) {
    return Cost_routerFlops(kind, d_model, E) +
           k * (2.0 * d_model * Cost_expertSize(N, E) * Cost_projections(gated));
}

double Cost_flopsFraction(RouterKind kind, int d_model, int N, int E, int k, bool gated) {
    return Cost_moeFlops(kind, d_model, N, E, k, gated) / Cost_denseFlops(d_model, N, gated);
}

double Cost_idealSpeedup(RouterKind kind, int d_model, int N, int E, int k, bool gated) {
    double moe = Cost_moeFlops(kind, d_model, N, E, k, gated);
    return moe > 0.0 ? Cost_denseFlops(d_model, N, gated) / moe : INFINITY;
}
