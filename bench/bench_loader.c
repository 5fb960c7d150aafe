/*
moescope - bench/bench_loader.c
Read throughput of the loader (Dump_readRows) from the page cache, in GB/s of float32
delivered, for float32 and float16 activations (x [T, 768], h [T, 3072], T = 32768 by
default), contiguous and gzip-chunked; plus the float16 widening alone and HDF5's own
float16 conversion for comparison. The input is written once by
bench/make_bench_dump.py (h5py); each figure is the median of several passes after one
warm-up pass, printed with the command that reproduces it.

usage: bench_loader [--file PATH] [--tokens T] [--passes N] [--block ROWS] [--only NAME]
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/Dump.h"
#include "io/H5Util.h"
#include "util/XUtils.h"

typedef struct Options {
    const char *file;
    long tokens;
    int passes;
    long block;
    const char *only;
} Options;

typedef struct Case {
    const char *name;
    int layer;
    DumpMember member;
    const char *what;
    int storedBytes; /* per value in the file */
} Case;

static const Case cases[] = {
    {"x_f32", 0, DUMP_X, "x float32 contiguous", 4},
    {"h_f32", 0, DUMP_H, "h float32 contiguous", 4},
    {"x_f16", 1, DUMP_X, "x float16 contiguous", 2},
    {"h_f16", 1, DUMP_H, "h float16 contiguous", 2},
    {"x_f16_gzip", 2, DUMP_X, "x float16 chunked+shuffle+gzip-1", 2},
};

static int compareDoubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compareDoubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void printCommand(const Options *o, const char *name) {
    printf("   [bench/bench_loader --file %s --passes %d --block %ld --only %s]\n", o->file,
           o->passes, o->block, name);
}

static bool wanted(const Options *o, const char *name) {
    return !o->only || strcmp(o->only, name) == 0;
}

/* One pass over all rows in blocks; returns seconds. */
static double readPass(Dump *d, const Case *c, long block, float *buf) {
    const DumpLayer *L = Dump_layer(d, c->layer);
    char *cause = NULL;
    double t0 = XUtils_now();
    for (long r = 0; r < L->n_tokens; r += block) {
        long n = L->n_tokens - r < block ? L->n_tokens - r : block;
        if (Dump_readRows(d, c->layer, c->member, r, n, buf, &cause) != MS_OK) {
            fprintf(stderr, "bench_loader: %s\n", cause);
            exit(1);
        }
    }
    return XUtils_now() - t0;
}

static void benchCase(Dump *d, const Case *c, const Options *o) {
    const DumpLayer *L = Dump_layer(d, c->layer);
    long width = c->member == DUMP_X ? L->d_model : L->d_ff;
    float *buf = xCalloc((size_t)o->block * (size_t)width, sizeof *buf);
    double *secs = xCalloc((size_t)o->passes, sizeof *secs);
    readPass(d, c, o->block, buf); /* warm the page cache and the open dataset */
    for (int p = 0; p < o->passes; p++)
        secs[p] = readPass(d, c, o->block, buf);
    double s = median(secs, o->passes);
    double values = (double)L->n_tokens * (double)width;
    printf("%-36s [%ld x %ld]: %6.2f GB/s float32 out, %6.2f GB/s of stored values\n", c->what,
           L->n_tokens, width, values * 4 / s / 1e9, values * c->storedBytes / s / 1e9);
    printCommand(o, c->name);
    free(secs);
    free(buf);
}

/* The same float16 rows through HDF5's own (soft) conversion to float. */
static void benchHdf5Conversion(const Options *o) {
    hid_t f = H5Fopen(o->file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dset = H5Dopen2(f, "/layers/1/x", H5P_DEFAULT);
    hid_t space = H5Dget_space(dset);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(space, dims, NULL);
    float *buf = xCalloc((size_t)o->block * dims[1], sizeof *buf);
    double *secs = xCalloc((size_t)o->passes + 1, sizeof *secs);
    for (int p = 0; p <= o->passes; p++) {
        double t0 = XUtils_now();
        for (hsize_t r = 0; r < dims[0]; r += (hsize_t)o->block) {
            hsize_t start[2] = {r, 0};
            hsize_t count[2] = {dims[0] - r < (hsize_t)o->block ? dims[0] - r : (hsize_t)o->block,
                                dims[1]};
            H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
            if (H5Util_readFloats(dset, space, H5UTIL_FLOAT_CONVERT, buf, count[0] * dims[1]) < 0) {
                fprintf(stderr, "bench_loader: HDF5 read failed\n");
                exit(1);
            }
        }
        secs[p] = XUtils_now() - t0;
    }
    double s = median(secs + 1, o->passes);
    double values = (double)dims[0] * (double)dims[1];
    printf("%-36s [%llu x %llu]: %6.2f GB/s float32 out (HDF5's float16 conversion)\n",
           "x float16 contiguous, HDF5 convert", (unsigned long long)dims[0],
           (unsigned long long)dims[1], values * 4 / s / 1e9);
    printCommand(o, "x_f16_hdf5");
    free(secs);
    free(buf);
    H5Sclose(space);
    H5Dclose(dset);
    H5Fclose(f);
}

/* The widening alone, in memory (F16C when the CPU has it). */
static void benchWidening(const Options *o) {
    size_t n = (size_t)32 << 20;
    uint16_t *in = xMallocArray(n, sizeof *in);
    float *out = xMallocArray(n, sizeof *out);
    for (size_t k = 0; k < n; k++)
        in[k] = (uint16_t)(k * 2654435761u >> 16) & 0x7bffu;
    double *secs = xCalloc((size_t)o->passes + 1, sizeof *secs);
    for (int p = 0; p <= o->passes; p++) {
        double t0 = XUtils_now();
        H5Util_halfToFloat(in, out, n);
        secs[p] = XUtils_now() - t0;
    }
    double s = median(secs + 1, o->passes);
    printf("%-36s [%zu values]: %6.2f GB/s float32 out\n", "float16 -> float32 in memory", n,
           (double)n * 4 / s / 1e9);
    printCommand(o, "widen");
    free(secs);
    free(out);
    free(in);
}

static void makeInput(const Options *o) {
    if (access(o->file, R_OK) == 0)
        return;
    const char *py = getenv("H5PY_PYTHON");
    char *cmd = xAsprintf("'%s' '%s/bench/make_bench_dump.py' '%s' %ld",
                          py && *py ? py : "/usr/bin/python3", MS_TOP_SRCDIR, o->file, o->tokens);
    fprintf(stderr, "bench_loader: writing %s (once)\n", o->file);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_loader: failed: %s\n", cmd);
        exit(1);
    }
    free(cmd);
}

static void parseArgs(int argc, char **argv, Options *o) {
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--file") == 0 && v)
            o->file = v;
        else if (strcmp(argv[i], "--tokens") == 0 && v)
            o->tokens = atol(v);
        else if (strcmp(argv[i], "--passes") == 0 && v)
            o->passes = atoi(v);
        else if (strcmp(argv[i], "--block") == 0 && v)
            o->block = atol(v);
        else if (strcmp(argv[i], "--only") == 0 && v)
            o->only = v;
        else {
            fprintf(stderr, "usage: bench_loader [--file PATH] [--tokens T] [--passes N] "
                            "[--block ROWS] [--only NAME]\n");
            exit(2);
        }
        i++;
    }
    if (o->passes < 1 || o->block < 1 || o->tokens < 1) {
        fprintf(stderr, "bench_loader: passes, block and tokens must be >= 1\n");
        exit(2);
    }
}

int main(int argc, char **argv) {
    Options o = {"/tmp/moescope-bench-loader.h5", 32768, 5, 4096, NULL};
    parseArgs(argc, argv, &o);
    makeInput(&o);
    H5Util_quiet();
    Dump *d = NULL;
    char *cause = NULL;
    const char *paths[] = {o.file};
    if (Dump_open(&d, paths, 1, &cause) != MS_OK) {
        fprintf(stderr, "bench_loader: %s (delete the file to rewrite it)\n", cause);
        return 1;
    }
    printf("loader read throughput from the page cache, median of %d passes, blocks of %ld "
           "rows\n", o.passes, o.block);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        if (wanted(&o, cases[k].name))
            benchCase(d, &cases[k], &o);
    Dump_delete(d);
    if (wanted(&o, "x_f16_hdf5"))
        benchHdf5Conversion(&o);
    if (wanted(&o, "widen"))
        benchWidening(&o);
    return 0;
}
