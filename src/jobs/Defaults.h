/*
moescope - jobs/Defaults.h
Engine settings that both front ends use, defined once so the terminal UI's numbers
equal the batch CSV's for the same knobs.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_DEFAULTS_H
#define MOESCOPE_DEFAULTS_H

enum {
    DEFAULTS_MEO_BLOCK = 64,        /* MEO block length without /seq_offsets */
    DEFAULTS_PARAM_ITERATIONS = 30, /* balanced k-means iterations of the param strategy */
    DEFAULTS_MLP_EPOCHS = 30,       /* mlp router epochs (SPEC §4) */
};

#endif
