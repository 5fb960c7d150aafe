/*
moescope - util/Args.h
Parsing of command-line values: comma-separated lists ("8,16,32"), index ranges
("0-3,7"), and single numbers, with one clear sentence on failure.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ARGS_H
#define MOESCOPE_ARGS_H

#include <stdbool.h>

#include "util/Status.h"

/* A whole decimal integer in [lo, hi]. */
MsStatus Args_parseLong(const char *opt, const char *s, long lo, long hi, long *out,
                        char **cause);

/* A finite number in [lo, hi]. */
MsStatus Args_parseDouble(const char *opt, const char *s, double lo, double hi, double *out,
                          char **cause);

/* "8,16,32" -> malloc'ed ints, each in [lo, hi]. */
MsStatus Args_parseIntList(const char *opt, const char *s, int lo, int hi, int **out, int *n,
                           char **cause);

/* "0,0.5,1" -> malloc'ed doubles, each in [lo, hi]. */
MsStatus Args_parseDoubleList(const char *opt, const char *s, double lo, double hi,
                              double **out, int *n, char **cause);

/* "0-3,7" -> malloc'ed ascending unique ints >= 0. */
MsStatus Args_parseRanges(const char *opt, const char *s, int **out, int *n, char **cause);

/* "a,b,c" -> malloc'ed array of malloc'ed strings; free with Args_freeWords. */
MsStatus Args_splitWords(const char *opt, const char *s, char ***out, int *n, char **cause);
void Args_freeWords(char **words, int n);

#endif
