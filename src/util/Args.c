/*
moescope - util/Args.c
Command-line value parsing.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/Args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/XUtils.h"

MsStatus Args_parseLong(const char *opt, const char *s, long lo, long hi, long *out,
                        char **cause) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno) {
        setCause(cause, "%s: expected a whole number, found '%s'", opt, s);
        return MS_ERR_RANGE;
    }
    if (v < lo || v > hi) {
        setCause(cause, "%s: expected a value from %ld to %ld, found %ld", opt, lo, hi, v);
        return MS_ERR_RANGE;
    }
    *out = v;
    return MS_OK;
}

MsStatus Args_parseDouble(const char *opt, const char *s, double lo, double hi, double *out,
                          char **cause) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) {
        setCause(cause, "%s: expected a number, found '%s'", opt, s);
        return MS_ERR_RANGE;
    }
    if (v < lo || v > hi) {
        setCause(cause, "%s: expected a value from %g to %g, found %g", opt, lo, hi, v);
        return MS_ERR_RANGE;
    }
    *out = v;
    return MS_OK;
}

MsStatus Args_splitWords(const char *opt, const char *s, char ***out, int *n, char **cause) {
    char **words = NULL;
    int count = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            Args_freeWords(words, count);
            setCause(cause, "%s: empty item in '%s'", opt, s);
            return MS_ERR_RANGE;
        }
        words = xReallocArray(words, (size_t)count + 1, sizeof *words);
        words[count++] = strndup(p, len);
        if (!words[count - 1])
            XUtils_fail();
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = words;
    *n = count;
    return MS_OK;
}

void Args_freeWords(char **words, int n) {
    for (int i = 0; i < n; i++)
        free(words[i]);
    free(words);
}

MsStatus Args_parseIntList(const char *opt, const char *s, int lo, int hi, int **out, int *n,
                           char **cause) {
    char **words;
    int count;
    MsStatus st = Args_splitWords(opt, s, &words, &count, cause);
    if (st != MS_OK)
        return st;
    int *vals = xMallocArray((size_t)count, sizeof *vals);
    for (int i = 0; i < count && st == MS_OK; i++) {
        long v = 0;
        st = Args_parseLong(opt, words[i], lo, hi, &v, cause);
        vals[i] = (int)v;
    }
    Args_freeWords(words, count);
    if (st != MS_OK) {
        free(vals);
        return st;
    }
    *out = vals;
    *n = count;
    return MS_OK;
}

MsStatus Args_parseDoubleList(const char *opt, const char *s, double lo, double hi,
                              double **out, int *n, char **cause) {
    char **words;
    int count;
    MsStatus st = Args_splitWords(opt, s, &words, &count, cause);
    if (st != MS_OK)
        return st;
    double *vals = xMallocArray((size_t)count, sizeof *vals);
    for (int i = 0; i < count && st == MS_OK; i++)
        st = Args_parseDouble(opt, words[i], lo, hi, &vals[i], cause);
    Args_freeWords(words, count);
    if (st != MS_OK) {
        free(vals);
        return st;
    }
    *out = vals;
    *n = count;
    return MS_OK;
}

static int compareInts(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

MsStatus Args_parseRanges(const char *opt, const char *s, int **out, int *n, char **cause) {
    char **words;
    int count;
    MsStatus st = Args_splitWords(opt, s, &words, &count, cause);
    if (st != MS_OK)
        return st;
    int *vals = NULL;
    int len = 0;
    for (int i = 0; i < count && st == MS_OK; i++) {
        long a = 0, b = 0;
        char *dash = strchr(words[i], '-');
        if (dash) {
            *dash = '\0';
            st = Args_parseLong(opt, words[i], 0, 1000000, &a, cause);
            if (st == MS_OK)
                st = Args_parseLong(opt, dash + 1, a, 1000000, &b, cause);
        } else {
            st = Args_parseLong(opt, words[i], 0, 1000000, &a, cause);
            b = a;
        }
        for (long v = a; st == MS_OK && v <= b; v++) {
            vals = xReallocArray(vals, (size_t)len + 1, sizeof *vals);
            vals[len++] = (int)v;
        }
    }
    Args_freeWords(words, count);
    if (st != MS_OK) {
        free(vals);
        return st;
    }
    qsort(vals, (size_t)len, sizeof *vals, compareInts);
    int u = 0;
    for (int i = 0; i < len; i++)
        if (u == 0 || vals[u - 1] != vals[i])
            vals[u++] = vals[i];
    *out = vals;
    *n = u;
    return MS_OK;
}
