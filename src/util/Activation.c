/*
moescope - util/Activation.c
Activation functions of SPEC §1.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/Activation.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {
    [ACTIVATION_RELU] = "relu",
    [ACTIVATION_GELU] = "gelu",
    [ACTIVATION_GELU_TANH] = "gelu_tanh",
    [ACTIVATION_SILU] = "silu",
    [ACTIVATION_IDENTITY] = "identity",
};

bool Activation_parse(const char *name, Activation *out) {
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (Activation)i;
            return true;
        }
    }
    return false;
}

const char *Activation_name(Activation act) {
    if ((unsigned)act < sizeof names / sizeof names[0])
        return names[act];
    return "?";
}

const char *Activation_allNames(void) {
    return "relu | gelu | gelu_tanh | silu | identity";
}

float Activation_apply(Activation act, float v) {
    switch (act) {
    case ACTIVATION_RELU: return v > 0.0f ? v : 0.0f;
    case ACTIVATION_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case ACTIVATION_GELU_TANH: {
        const float c = 0.79788456080286536f; /* sqrt(2/pi) */
        return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    case ACTIVATION_SILU: return v / (1.0f + expf(-v));
    case ACTIVATION_IDENTITY: return v;
    }
    return v;
}

void Activation_applyArray(Activation act, float *v, long n) {
    if (act == ACTIVATION_IDENTITY)
        return;
    if (act == ACTIVATION_RELU) {
        for (long i = 0; i < n; i++)
            v[i] = v[i] > 0.0f ? v[i] : 0.0f;
        return;
    }
    for (long i = 0; i < n; i++)
        v[i] = Activation_apply(act, v[i]);
}
