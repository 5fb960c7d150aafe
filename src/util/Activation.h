/*
moescope - util/Activation.h
The FFN activation functions of SPEC §1, their names in files and their scalar forms.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ACTIVATION_H
#define MOESCOPE_ACTIVATION_H

#include <stdbool.h>

typedef enum Activation {
    ACTIVATION_RELU = 0,
    ACTIVATION_GELU,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    ACTIVATION_GELU_TANH, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    ACTIVATION_SILU,      /* x / (1 + exp(-x)) */
    ACTIVATION_IDENTITY,
} Activation;

/* Parses a file's `activation` attribute; false for an unknown name. */
bool Activation_parse(const char *name, Activation *out);

/* The name as written in files ("relu", "gelu_tanh", ...). */
const char *Activation_name(Activation act);

/* The list of accepted names, for error messages: "relu | gelu | ...". */
const char *Activation_allNames(void);

float Activation_apply(Activation act, float v);

/* Applies act in place to n values. */
void Activation_applyArray(Activation act, float *v, long n);

#endif
