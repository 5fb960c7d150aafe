/*
moescope - ui/Ui.h
The terminal UI: `moescope [FILE...]` on a terminal. Screens (Layers, Sparsity,
Partition, Router, Estimates), live knobs recomputed by worker threads, help, search,
sorting, CSV export, figures and partition saving.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_UI_H
#define MOESCOPE_UI_H

#include <stdbool.h>

#include "io/Dump.h"

typedef struct UiOptions {
    bool ascii;               /* --ascii */
    bool no_color;            /* --no-color */
    int threads;              /* compute threads (--threads) */
    const char *const *sets;  /* --set NAME=VALUE, applied in order */
    int n_sets;
} UiOptions;

/* Runs the UI on dump until the user quits (or SIGINT / SIGTERM / SIGHUP). The terminal
   is restored on return. Returns the exit status: 0 after a quit, 1 when the UI cannot
   start (the message is printed on stderr), 2 for a bad --set, 128 + the signal number
   after SIGINT / SIGTERM / SIGHUP. */
int Ui_run(Dump *dump, const UiOptions *opt);

#endif
