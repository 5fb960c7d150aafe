/*
moescope - io/Dump.h
The loader: opens one or more HDF5 files in the layout of SPEC §1 (format version 1)
and gives each FFN layer's weights whole and its activations (x, and h when recorded)
in blocks of rows, so no layer's activations need fit in memory at once.

A layer's members are looked up in the files in command-line order (the first file
that has /layers/<i>/<member> wins). Layers are ordered by their numeric index.
Dump_open validates everything that can be checked without reading bulk data: every
member's presence, rank, shape and type class, the attributes, /seq_offsets and
/tokens. Weights are checked for NaN/Inf when read. Every failure yields MS_ERR_IO or
MS_ERR_FORMAT and one sentence in *cause naming the file, the dataset path, what was
expected and what was found, e.g.
  "acts.h5: /layers/3/w_in: expected [d_ff, 64] float, found [64, 172] float".
No HDF5 error stack is ever printed. Thread-safety: a Dump is used by one thread at a
time (HDF5 calls are serialized by the caller's I/O thread).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_DUMP_H
#define MOESCOPE_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/Activation.h"
#include "util/FfnWeights.h"
#include "util/Status.h"

typedef struct DumpLayer {
    int index;        /* the <i> of /layers/<i> */
    char *name;       /* attribute `name`, or "layers.<i>" when absent */
    Activation act;   /* attribute `activation`, default relu */
    int d_model;
    int d_ff;
    long n_tokens;    /* rows of x */
    bool gated;       /* w_gate present */
    bool has_b_in;
    bool has_b_out;
    bool has_h;       /* recorded h present */
    bool has_partition;     /* /layers/<i>/partition present */
    bool has_planted_group; /* /layers/<i>/planted_group present */
    const char *x_file;     /* the file x was found in (owned by the Dump) */
} DumpLayer;

typedef enum DumpMember {
    DUMP_X, /* [n_tokens, d_model] */
    DUMP_H, /* [n_tokens, d_ff]; only when has_h */
} DumpMember;

typedef struct Dump Dump;

/* Caps any single read of weights, offsets, tokens or text, and any chunk size, at
   bytes (process-wide, before Dump_open). A file claiming more fails with
   MS_ERR_NOMEM and the byte count instead of allocating it. The default, 0, means the
   machine's physical memory. The fuzz harness sets a small limit. */
void Dump_setMemoryLimit(size_t bytes);

/* Opens and validates n_paths files. On failure *out is NULL and *cause is set. */
MsStatus Dump_open(Dump **out, const char *const *paths, int n_paths, char **cause);

void Dump_delete(Dump *this);

int Dump_layerCount(const Dump *this);

/* The i-th layer in numeric order (0 <= i < Dump_layerCount). */
const DumpLayer *Dump_layer(const Dump *this, int i);

/* Root attribute model_name, or NULL. */
const char *Dump_modelName(const Dump *this);

/* The file names as given. */
int Dump_fileCount(const Dump *this);
const char *Dump_fileName(const Dump *this, int i);

/* True when no file had the moescope_format attribute (the caller warns once). */
bool Dump_formatAssumed(const Dump *this);

/* Reads the i-th layer's weights into *w (float32, caller frees with FfnWeights_done).
   Fails with MS_ERR_FORMAT on a NaN or Inf, naming the dataset and the first bad index. */
MsStatus Dump_readWeights(Dump *this, int i, FfnWeights *w, char **cause);

/* Reads rows [row0, row0 + n_rows) of x or h of the i-th layer as float32 into out
   (n_rows * width floats, row-major). */
MsStatus Dump_readRows(Dump *this, int i, DumpMember member, long row0, long n_rows,
                       float *out, char **cause);

/* Threads that Dump_readRows may use (default 1): rows of uncompressed float32 datasets
   are read straight from the file (io/DirectRows), in one part per thread. A layer
   without h computes it from x on as many (jobs/LayerLoad). */
void Dump_setReadThreads(Dump *this, int threads);
int Dump_readThreads(const Dump *this);

/* Asks the kernel to read layer i's x and h into the page cache in the background
   (posix_fadvise WILLNEED on their storage), so that loading the layer later does not
   wait for the disk; returns once the reads are queued. A hint: errors are ignored, and
   an out-of-range i does nothing. */
void Dump_prefetch(Dump *this, int i);

/* /seq_offsets as n_seq + 1 int64 values (malloc'ed), or *offsets = NULL, *n_seq = 0
   when absent. Validated at open: starts at 0, strictly increasing, ends at every
   layer's n_tokens. */
MsStatus Dump_readSeqOffsets(Dump *this, int64_t **offsets, long *n_seq, char **cause);

/* /tokens (malloc'ed, *n entries), or NULL and 0 when absent. */
MsStatus Dump_readTokens(Dump *this, int32_t **tokens, long *n, char **cause);

/* /text (malloc'ed), or NULL when absent. */
MsStatus Dump_readText(Dump *this, char **text, char **cause);

/* An int32 [d_ff] member of the i-th layer: "partition", "partitions/<name>" or
   "planted_group". out has d_ff entries. MS_ERR_FORMAT when absent or malformed;
   partition values must lie in 0..experts-1 when the `experts` attribute is present. */
MsStatus Dump_readLayerInts(Dump *this, int i, const char *member, int32_t *out,
                            char **cause);

/* Dump_open first reads all metadata in a forked child (default on), so that a damaged
   or crafted file that crashes or hangs the HDF5 library itself (1.10 has such bugs)
   yields MS_ERR_FORMAT naming the file instead of killing the program. The child gets
   `seconds` (<= 0: the default, 30 s) and, outside sanitizer builds, 1 GB more address
   space than the parent. Process-wide; Dump_open must be called from the thread that
   uses HDF5, with no other thread inside HDF5 at the time. */
void Dump_setCrashGuard(bool on, int seconds);

/* The names under /layers/<i>/partitions/ of the i-th layer (across all files, first
   seen first), each readable as "partitions/<name>" with Dump_readLayerInts. The array
   and strings are owned by the Dump; *n is their count. */
const char *const *Dump_partitionNames(const Dump *this, int i, int *n);

#endif
