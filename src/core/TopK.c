/*
moescope - core/TopK.c
Top-k by partial insertion: k and n are small (experts), so an insertion pass over a
k-long best list beats sorting and keeps the tie rule obvious.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/TopK.h"

/* true when (a at ia) ranks before (b at ib) */
static inline int ranksBefore(float a, int ia, float b, int ib) {
    return a > b || (a == b && ia < ib);
}

void TopK_select(const float *scores, int n, int k, int *out) {
    int len = 0;
    for (int i = 0; i < n; i++) {
        float v = scores[i];
        if (len == k && !ranksBefore(v, i, scores[out[k - 1]], out[k - 1]))
            continue;
        int pos = len < k ? len++ : k - 1;
        while (pos > 0 && ranksBefore(v, i, scores[out[pos - 1]], out[pos - 1])) {
            out[pos] = out[pos - 1];
            pos--;
        }
        out[pos] = i;
    }
}

void TopK_order(const float *scores, int n, int *order) {
    TopK_select(scores, n, n, order);
}
