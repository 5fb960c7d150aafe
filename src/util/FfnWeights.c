/*
moescope - util/FfnWeights.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/FfnWeights.h"

#include <stdlib.h>
#include <string.h>

void FfnWeights_done(FfnWeights *this) {
    if (!this)
        return;
    free(this->w_in);
    free(this->b_in);
    free(this->w_gate);
    free(this->w_out);
    free(this->b_out);
    memset(this, 0, sizeof *this);
}
