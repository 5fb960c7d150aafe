/*
moescope - tests/fuzz/fuzz_dump.c
libFuzzer target for the HDF5 loader: the input bytes are written to a file, which goes
through Dump_open and, when it opens, every read the program can make (weights, x and h
blocks, partitions, tokens, offsets, text), then everything is freed. Besides the
sanitizers it checks that no HDF5 object stays open and that failures carry a message.
Built by `make fuzz` (clang); tests/test_fuzz_dump_replay runs the seed corpus through
FuzzDump_run under gcc's sanitizers in make check.

Corpus (tests/fuzz/corpus-dump): seeds from `tests/fixtures/make_dumps.py --corpus`,
plus every input the fuzzer found, named crash_<what>.h5 (it crashed HDF5 or us) or
hang_<what>.h5 (HDF5 looped); those must be refused by Dump_open (the crash guard runs
with a 3 s limit here).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "fuzz_dump.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/Dump.h"

/* Reading fill values of a file that claims huge sizes is legal but slow; the fuzzer
   wants to explore, so the loader's memory limit and our row blocks stay small. */
enum { FUZZ_MEMORY_LIMIT = 64 << 20, FUZZ_BLOCK_FLOATS = 1 << 18 };

static void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_dump: %s\n", what);
        abort();
    }
}

/* A failed call must say why, in one line; then the message is dropped. */
static MsStatus consume(MsStatus st, char **cause) {
    check(st == MS_OK || (*cause && (*cause)[0] && !strchr(*cause, '\n')),
          "a failure without a one-line message");
    check(st >= MS_OK && st <= MS_ERR_CANCELED, "an unknown status");
    free(*cause);
    *cause = NULL;
    return st;
}

static void readRows(Dump *d, int i, DumpMember m, long width, char **cause) {
    const DumpLayer *L = Dump_layer(d, i);
    if (width <= 0 || width > FUZZ_BLOCK_FLOATS)
        return;
    long rows = FUZZ_BLOCK_FLOATS / width;
    if (rows > L->n_tokens)
        rows = L->n_tokens;
    float *buf = malloc((size_t)rows * (size_t)width * sizeof *buf);
    if (!buf)
        return;
    /* the first block, the last one, and one row in the middle */
    consume(Dump_readRows(d, i, m, 0, rows, buf, cause), cause);
    consume(Dump_readRows(d, i, m, L->n_tokens - rows, rows, buf, cause), cause);
    consume(Dump_readRows(d, i, m, L->n_tokens / 2, 1, buf, cause), cause);
    free(buf);
}

static void readLayer(Dump *d, int i, char **cause) {
    const DumpLayer *L = Dump_layer(d, i);
    check(L && L->name && L->d_ff > 0 && L->d_model > 0 && L->n_tokens > 0,
          "a layer that passed Dump_open without sane sizes");
    FfnWeights w;
    if (consume(Dump_readWeights(d, i, &w, cause), cause) == MS_OK)
        FfnWeights_done(&w);
    readRows(d, i, DUMP_X, L->d_model, cause);
    if (L->has_h)
        readRows(d, i, DUMP_H, L->d_ff, cause);
    int32_t *ints = malloc((size_t)L->d_ff * sizeof *ints);
    if (!ints)
        return;
    consume(Dump_readLayerInts(d, i, "partition", ints, cause), cause);
    consume(Dump_readLayerInts(d, i, "planted_group", ints, cause), cause);
    int n;
    const char *const *names = Dump_partitionNames(d, i, &n);
    for (int k = 0; k < n; k++) {
        char member[300];
        snprintf(member, sizeof member, "partitions/%s", names[k]);
        consume(Dump_readLayerInts(d, i, member, ints, cause), cause);
    }
    free(ints);
}

static void readRoot(Dump *d, char **cause) {
    int64_t *seq;
    long n_seq;
    if (consume(Dump_readSeqOffsets(d, &seq, &n_seq, cause), cause) == MS_OK)
        free(seq);
    int32_t *tokens;
    long n;
    if (consume(Dump_readTokens(d, &tokens, &n, cause), cause) == MS_OK)
        free(tokens);
    char *text;
    if (consume(Dump_readText(d, &text, cause), cause) == MS_OK)
        free(text);
    (void)Dump_modelName(d);
    (void)Dump_formatAssumed(d);
}

int FuzzDump_runFile(const char *path) {
    Dump_setMemoryLimit(FUZZ_MEMORY_LIMIT);
    /* FUZZ_DUMP_NO_GUARD=1 lets HDF5's own crashes through (to find and minimize them) */
    const char *noGuard = getenv("FUZZ_DUMP_NO_GUARD");
    Dump_setCrashGuard(!(noGuard && noGuard[0] == '1'), 3);
    const char *paths[] = {path};
    Dump *d = NULL;
    char *cause = NULL;
    MsStatus st = consume(Dump_open(&d, paths, 1, &cause), &cause);
    check((st == MS_OK) == (d != NULL), "Dump_open's status and result disagree");
    if (d) {
        for (int i = 0; i < Dump_layerCount(d); i++)
            readLayer(d, i, &cause);
        readRoot(d, &cause);
        Dump_delete(d);
    }
    check(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0, "an HDF5 object left open");
    return (int)st;
}

int FuzzDump_run(const uint8_t *data, size_t size) {
    static char path[128];
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/fuzz_dump.%ld.h5", dir, (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    check(f != NULL, "cannot write the input file");
    check(fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write the input file");
    int st = FuzzDump_runFile(path);
    unlink(path);
    return st;
}

/* HDF5 1.10.8 itself leaks small blocks when it meets some corrupt object headers (its
   metadata cache's error paths); LeakSanitizer skips leaks with a libhdf5 frame. Our
   own leaks are still reported: their stacks start in our code and do not pass through
   HDF5, except names collected in H5Literate callbacks, which the unit tests cover. */
const char *__lsan_default_suppressions(void);

const char *__lsan_default_suppressions(void) {
    return "leak:libhdf5_serial.so\nleak:libhdf5.so\n";
}

/* A corrupt size field makes HDF5 itself ask malloc for hundreds of GB while opening a
   file; without sanitizers malloc returns NULL (or the crash guard's address-space
   limit refuses) and HDF5 fails cleanly. Let ASan do the same for anything over 1 GB
   instead of aborting (libFuzzer's own -malloc_limit_mb must be raised as well). */
const char *__asan_default_options(void);

const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=1024";
}

#ifdef FUZZ_DUMP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzDump_run(data, size);
    return 0;
}
#endif
