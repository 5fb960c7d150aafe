/*
moescope - core/Cost.h
The per-token cost model of SPEC §5 (multiply-add = 2 FLOPs): the dense FFN, a router,
and a token-level MoE with k of E experts of G = N / E (real) neurons each.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_COST_H
#define MOESCOPE_COST_H

#include <stdbool.h>

#include "core/Router.h"

/* P: the number of d_model x N matrices an FFN multiplies by (3 gated, else 2). */
int Cost_projections(bool gated);

/* G = N / E as a real number (experts have floor or ceil of it). */
double Cost_expertSize(int N, int E);

/* 2 * d_model * N * P. */
double Cost_denseFlops(int d_model, int N, bool gated);

/* oracle 0 (not realizable), similarity and sigmoid 2 d_model E, mlp 2 d_model E + 2 E^2;
   0 for topk_neurons (no router). */
double Cost_routerFlops(RouterKind kind, int d_model, int E);

/* router + k * 2 * d_model * G * P. */
double Cost_moeFlops(RouterKind kind, int d_model, int N, int E, int k, bool gated);

/* MoE / dense and dense / MoE (Inf when the MoE cost is 0). */
double Cost_flopsFraction(RouterKind kind, int d_model, int N, int E, int k, bool gated);
double Cost_idealSpeedup(RouterKind kind, int d_model, int N, int E, int k, bool gated);

#endif
