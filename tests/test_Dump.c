/*
moescope - tests/test_Dump.c
Tests of the HDF5 loader against files written by h5py (tests/fixtures/make_dumps.py):
every good case is read back and compared bit for bit with the float32 arrays python
wrote beside it, whole and in odd row blocks that cross chunk boundaries; every bad
case must fail at the stage the manifest names, with the status that maps to exit code
2 (1 for out-of-memory cases), one message holding the file, the dataset path and the
expected/found parts, nothing on stderr and no HDF5 object left open.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/DirectRows.h"
#include "io/Dump.h"
#include "io/H5Util.h"
#include "util/XUtils.h" /* before cmocka.h, which defines a fail() macro */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

static char fixtureDir[256];

/* ---- helpers ----------------------------------------------------------------------- */

static char *fixture(const char *name) {
    return xAsprintf("%s/%s", fixtureDir, name);
}

/* Reads a whole file; NULL when it does not exist. */
static void *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = xMalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    assert_int_equal(got, (size_t)n);
    buf[n] = '\0';
    *size = (size_t)n;
    return buf;
}

static void *refFile(const char *refCase, const char *name, size_t *size) {
    char *path = xAsprintf("%s/ref/%s/%s", fixtureDir, refCase, name);
    void *data = slurp(path, size);
    free(path);
    return data;
}

/* stderr goes to a temp file between captureBegin and captureEnd. */
typedef struct Capture {
    int saved;
    char path[64];
} Capture;

static void captureBegin(Capture *c) {
    fflush(stderr);
    snprintf(c->path, sizeof c->path, "/tmp/test_Dump.stderr.XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    c->saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Returns what was printed (malloc'ed). */
static char *captureEnd(Capture *c) {
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    size_t size;
    char *text = slurp(c->path, &size);
    unlink(c->path);
    return text;
}

static void assertNothingPrinted(Capture *c, const char *what) {
    char *text = captureEnd(c);
    if (text[0])
        fail_msg("%s printed on stderr: %s", what, text);
    free(text);
}

static void assertNoOpenHdf5Objects(void) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    assert_int_equal(n, 0);
}

/* "a.h5,b.h5" -> full paths. */
static int splitFiles(const char *list, char ***paths) {
    char *copy = xStrdup(list), *save = NULL;
    int n = 0;
    *paths = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        *paths = xReallocArray(*paths, (size_t)n + 1, sizeof **paths);
        (*paths)[n++] = fixture(t);
    }
    free(copy);
    return n;
}

static void freePaths(char **paths, int n) {
    for (int k = 0; k < n; k++)
        free(paths[k]);
    free(paths);
}

/* Tab-separated lines of a manifest, comments skipped. */
typedef struct Table {
    char *text;
    char **lines;
    int n;
} Table;

static void Table_load(Table *t, const char *name) {
    char *path = fixture(name);
    size_t size;
    t->text = slurp(path, &size);
    free(path);
    assert_non_null(t->text);
    t->lines = NULL;
    t->n = 0;
    char *save = NULL;
    for (char *l = strtok_r(t->text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (l[0] == '#' || !l[0])
            continue;
        t->lines = xReallocArray(t->lines, (size_t)t->n + 1, sizeof *t->lines);
        t->lines[t->n++] = l;
    }
}

static void Table_done(Table *t) {
    free(t->lines);
    free(t->text);
}

/* Splits a line at tabs in place; returns the field count. */
static int fields(char *line, char **out, int max) {
    int n = 0;
    out[n++] = line;
    for (char *c = line; *c && n < max; c++) {
        if (*c == '\t') {
            *c = '\0';
            out[n++] = c + 1;
        }
    }
    return n;
}

/* key=value lines of ref/<case>/meta.txt */
typedef struct Meta {
    char *text;
} Meta;

static const char *Meta_get(const Meta *m, const char *key) {
    size_t klen = strlen(key);
    for (const char *l = m->text; l && *l;) {
        const char *end = strchr(l, '\n');
        if (strncmp(l, key, klen) == 0 && l[klen] == '=') {
            static char value[512];
            size_t len = (size_t)((end ? end : l + strlen(l)) - (l + klen + 1));
            assert_true(len < sizeof value);
            memcpy(value, l + klen + 1, len);
            value[len] = '\0';
            return value;
        }
        l = end ? end + 1 : NULL;
    }
    return NULL;
}

static long Meta_long(const Meta *m, const char *fmt, int i) {
    char key[64];
    snprintf(key, sizeof key, fmt, i);
    const char *v = Meta_get(m, key);
    if (!v)
        fail_msg("meta has no %s", key);
    return atol(v);
}

static const char *Meta_layerStr(const Meta *m, const char *what, int i) {
    char key[64];
    snprintf(key, sizeof key, "layer.%d.%s", i, what);
    const char *v = Meta_get(m, key);
    if (!v)
        fail_msg("meta has no %s", key);
    return v;
}

/* ---- group setup ------------------------------------------------------------------- */

static int setupFixtures(void **state) {
    const char *py = getenv("H5PY_PYTHON");
    const char *src = getenv("top_srcdir");
    snprintf(fixtureDir, sizeof fixtureDir, "/tmp/test_Dump.XXXXXX");
    if (!mkdtemp(fixtureDir))
        return -1;
    char *cmd = xAsprintf("'%s' '%s/tests/fixtures/make_dumps.py' '%s'",
                          py && *py ? py : "/usr/bin/python3", src && *src ? src : ".",
                          fixtureDir);
    int rc = system(cmd);
    free(cmd);
    Dump_setMemoryLimit((size_t)1 << 30);
    return rc == 0 ? 0 : -1;
}

static int teardownFixtures(void **state) {
    char *cmd = xAsprintf("rm -rf '%s'", fixtureDir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

/* ---- good cases -------------------------------------------------------------------- */

/* Compares n floats bit for bit with ref/<case>/<name>; a NaN must be a NaN of the same
   sign (F16C quiets signalling NaNs, numpy keeps them: the payload is no one's data). */
static void assertFloatsEqual(const char *refCase, const char *name, const float *got,
                              size_t n) {
    size_t size;
    float *want = refFile(refCase, name, &size);
    if (!want)
        fail_msg("%s: no reference %s", refCase, name);
    assert_int_equal(size, n * sizeof(float));
    for (size_t k = 0; k < n; k++) {
        if (isnan(got[k]) && isnan(want[k]) && !signbit(got[k]) == !signbit(want[k]))
            continue;
        if (memcmp(&got[k], &want[k], sizeof(float)) != 0)
            fail_msg("%s: %s[%zu]: got %.9g, want %.9g", refCase, name, k, (double)got[k],
                     (double)want[k]);
    }
    free(want);
}

/* A weight member is present exactly when python wrote its reference. */
static void checkWeight(const char *refCase, int index, const char *member, const float *got,
                        size_t n) {
    char name[64];
    snprintf(name, sizeof name, "%d.%s.f32", index, member);
    size_t size;
    void *ref = refFile(refCase, name, &size);
    if (!ref) {
        assert_null(got);
        return;
    }
    free(ref);
    assert_non_null(got);
    assertFloatsEqual(refCase, name, got, n);
}

static void checkWeights(Dump *d, const char *refCase, int i) {
    const DumpLayer *L = Dump_layer(d, i);
    FfnWeights w;
    char *cause = NULL;
    MsStatus st = Dump_readWeights(d, i, &w, &cause);
    if (st != MS_OK)
        fail_msg("%s: readWeights: %s", refCase, cause);
    size_t ff = (size_t)L->d_ff, dm = (size_t)L->d_model;
    assert_int_equal(w.d_ff, L->d_ff);
    assert_int_equal(w.d_model, L->d_model);
    assert_int_equal(w.act, L->act);
    checkWeight(refCase, L->index, "w_in", w.w_in, ff * dm);
    checkWeight(refCase, L->index, "w_gate", w.w_gate, ff * dm);
    checkWeight(refCase, L->index, "b_in", w.b_in, ff);
    checkWeight(refCase, L->index, "w_out", w.w_out, dm * ff);
    checkWeight(refCase, L->index, "b_out", w.b_out, dm);
    assert_int_equal(FfnWeights_gated(&w), L->gated);
    assert_int_equal(w.b_in != NULL, L->has_b_in);
    assert_int_equal(w.b_out != NULL, L->has_b_out);
    FfnWeights_done(&w);
}

/* Reads member whole and in blocks of several odd sizes; all must equal the reference. */
static void checkRows(Dump *d, const char *refCase, int i, DumpMember member) {
    const DumpLayer *L = Dump_layer(d, i);
    const char *mname = member == DUMP_X ? "x" : "h";
    char name[64];
    snprintf(name, sizeof name, "%d.%s.f32", L->index, mname);
    size_t width = (size_t)(member == DUMP_X ? L->d_model : L->d_ff);
    size_t n = (size_t)L->n_tokens * width;
    float *all = xMallocArray(n, sizeof(float));
    char *cause = NULL;
    if (Dump_readRows(d, i, member, 0, L->n_tokens, all, &cause) != MS_OK)
        fail_msg("%s: readRows: %s", refCase, cause);
    assertFloatsEqual(refCase, name, all, n);
    /* 600 rows of f2large exceed the loader's float16 scratch (H5UTIL_HALF_SCRATCH) */
    static const long blocks[] = {1, 3, 7, 10, 13, 64, 600};
    float *pieces = xMallocArray(n, sizeof(float));
    for (int threads = 1; threads <= 3; threads += 2) {
        Dump_setReadThreads(d, threads);
        for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
            memset(pieces, 0xff, n * sizeof(float));
            for (long r = 0; r < L->n_tokens; r += blocks[b]) {
                long k = L->n_tokens - r < blocks[b] ? L->n_tokens - r : blocks[b];
                if (Dump_readRows(d, i, member, r, k, pieces + (size_t)r * width, &cause) !=
                    MS_OK)
                    fail_msg("%s: readRows block: %s", refCase, cause);
            }
            assert_memory_equal(pieces, all, n * sizeof(float));
        }
    }
    Dump_setReadThreads(d, 1);
    free(pieces);
    free(all);
}

static void checkInts(Dump *d, const char *refCase, int i, const char *member) {
    const DumpLayer *L = Dump_layer(d, i);
    char name[128];
    snprintf(name, sizeof name, "%d.%s.i32", L->index, member);
    for (char *c = name; *c; c++)
        if (*c == '/')
            *c = '.';
    size_t size;
    int32_t *want = refFile(refCase, name, &size);
    int32_t *got = xCalloc((size_t)L->d_ff, sizeof *got);
    char *cause = NULL;
    MsStatus st = Dump_readLayerInts(d, i, member, got, &cause);
    if (!want) {
        assert_int_equal(st, MS_ERR_FORMAT);
        assert_non_null(strstr(cause, "found no such dataset"));
        free(cause);
    } else {
        if (st != MS_OK)
            fail_msg("%s: readLayerInts %s: %s", refCase, member, cause);
        assert_int_equal(size, (size_t)L->d_ff * sizeof(int32_t));
        assert_memory_equal(got, want, size);
    }
    free(got);
    free(want);
}

static void checkLayerMeta(Dump *d, const Meta *m, int i) {
    const DumpLayer *L = Dump_layer(d, i);
    assert_int_equal(L->index, Meta_long(m, "layer.%d.index", i));
    assert_string_equal(L->name, Meta_layerStr(m, "name", i));
    assert_string_equal(Activation_name(L->act), Meta_layerStr(m, "activation", i));
    assert_int_equal(L->d_model, Meta_long(m, "layer.%d.d_model", i));
    assert_int_equal(L->d_ff, Meta_long(m, "layer.%d.d_ff", i));
    assert_int_equal(L->n_tokens, Meta_long(m, "layer.%d.n_tokens", i));
    assert_int_equal(L->gated, Meta_long(m, "layer.%d.gated", i));
    assert_int_equal(L->has_h, Meta_long(m, "layer.%d.has_h", i));
    int np;
    const char *const *names = Dump_partitionNames(d, i, &np);
    const char *want = Meta_layerStr(m, "partitions", i);
    if (!want[0]) {
        assert_int_equal(np, 0);
    } else {
        assert_int_equal(np, 1);
        assert_string_equal(names[0], want);
    }
}

static void checkRoot(Dump *d, const char *refCase, const Meta *m) {
    const char *name = Meta_get(m, "model_name");
    if (name)
        assert_string_equal(Dump_modelName(d), name);
    else
        assert_null(Dump_modelName(d));
    assert_int_equal(Dump_formatAssumed(d), Meta_long(m, "format_assumed", 0));
    char *cause = NULL, *text = NULL;
    assert_int_equal(Dump_readText(d, &text, &cause), MS_OK);
    const char *wantText = Meta_get(m, "text");
    if (wantText)
        assert_string_equal(text, wantText);
    else
        assert_null(text);
    free(text);
    size_t size;
    int32_t *tokens;
    long n;
    int32_t *wantTokens = refFile(refCase, "tokens.i32", &size);
    assert_int_equal(Dump_readTokens(d, &tokens, &n, &cause), MS_OK);
    assert_int_equal(n * (long)sizeof(int32_t), wantTokens ? (long)size : 0);
    if (wantTokens)
        assert_memory_equal(tokens, wantTokens, size);
    free(tokens);
    free(wantTokens);
    int64_t *seq;
    long n_seq;
    int64_t *wantSeq = refFile(refCase, "seq_offsets.i64", &size);
    assert_int_equal(Dump_readSeqOffsets(d, &seq, &n_seq, &cause), MS_OK);
    assert_int_equal(wantSeq ? (n_seq + 1) * (long)sizeof(int64_t) : 0, wantSeq ? (long)size : 0);
    if (wantSeq)
        assert_memory_equal(seq, wantSeq, size);
    else
        assert_null(seq);
    free(seq);
    free(wantSeq);
}

static void checkGoodCase(const char *refCase, const char *files) {
    char **paths;
    int nf = splitFiles(files, &paths);
    size_t size;
    Meta m = {refFile(refCase, "meta.txt", &size)};
    assert_non_null(m.text);
    Capture cap;
    captureBegin(&cap);
    Dump *d = NULL;
    char *cause = NULL;
    MsStatus st = Dump_open(&d, (const char *const *)paths, nf, &cause);
    if (st != MS_OK) {
        char *err = captureEnd(&cap);
        fail_msg("%s: %s", refCase, cause);
        free(err);
    }
    assert_int_equal(Dump_fileCount(d), nf);
    assert_string_equal(Dump_fileName(d, nf - 1), paths[nf - 1]);
    assert_int_equal(Dump_layerCount(d), Meta_long(&m, "n_layers", 0));
    /* The page cache hint works on every storage layout here (contiguous, chunked,
       compressed, split across files) without a word on stderr or a change to what is
       read below; out of range it does nothing. */
    for (int i = -1; i <= Dump_layerCount(d); i++)
        Dump_prefetch(d, i);
    for (int i = 0; i < Dump_layerCount(d); i++) {
        checkLayerMeta(d, &m, i);
        checkWeights(d, refCase, i);
        checkRows(d, refCase, i, DUMP_X);
        if (Dump_layer(d, i)->has_h)
            checkRows(d, refCase, i, DUMP_H);
        checkInts(d, refCase, i, "partition");
        checkInts(d, refCase, i, "planted_group");
        int np;
        const char *const *names = Dump_partitionNames(d, i, &np);
        for (int k = 0; k < np; k++) {
            char *member = xAsprintf("partitions/%s", names[k]);
            checkInts(d, refCase, i, member);
            free(member);
        }
    }
    /* Only one layer's row datasets stay open: reading the layers again, last first,
       reopens each of them and must give the same values. */
    for (int i = Dump_layerCount(d) - 1; i >= 0; i--)
        checkRows(d, refCase, i, DUMP_X);
    const char *xfile = Meta_get(&m, "x_file");
    if (xfile) {
        const char *got = Dump_layer(d, 0)->x_file;
        assert_string_equal(got + strlen(got) - strlen(xfile), xfile);
    }
    checkRoot(d, refCase, &m);
    Dump_delete(d);
    assertNothingPrinted(&cap, refCase);
    assertNoOpenHdf5Objects();
    free(m.text);
    freePaths(paths, nf);
}

static void test_goodCases(void **state) {
    Table t;
    Table_load(&t, "good.tsv");
    assert_true(t.n >= 12);
    for (int k = 0; k < t.n; k++) {
        char *f[2];
        assert_int_equal(fields(t.lines[k], f, 2), 2);
        checkGoodCase(f[0], f[1]);
    }
    Table_done(&t);
}

/* ---- bad cases --------------------------------------------------------------------- */

static MsStatus statusNamed(const char *name) {
    if (strcmp(name, "io") == 0)
        return MS_ERR_IO;
    if (strcmp(name, "format") == 0)
        return MS_ERR_FORMAT;
    if (strcmp(name, "nomem") == 0)
        return MS_ERR_NOMEM;
    fail_msg("unknown status %s", name);
    return MS_OK;
}

/* Runs the stage that must fail; earlier stages must succeed. */
static MsStatus runStage(Dump *d, const char *stage, int layer, const char *member,
                         char **cause) {
    if (strcmp(stage, "weights") == 0) {
        FfnWeights w;
        MsStatus st = Dump_readWeights(d, layer, &w, cause);
        if (st != MS_OK)
            assert_null(w.w_in);
        FfnWeights_done(&w);
        return st;
    }
    if (strcmp(stage, "rows") == 0) {
        const DumpLayer *L = Dump_layer(d, layer);
        DumpMember m = strcmp(member, "h") == 0 ? DUMP_H : DUMP_X;
        long width = m == DUMP_H ? L->d_ff : L->d_model;
        float *buf = xMallocArray((size_t)L->n_tokens * (size_t)width, sizeof(float));
        MsStatus st = Dump_readRows(d, layer, m, 0, L->n_tokens, buf, cause);
        free(buf);
        return st;
    }
    if (strcmp(stage, "ints") == 0) {
        int32_t *buf = xCalloc((size_t)Dump_layer(d, layer)->d_ff, sizeof *buf);
        MsStatus st = Dump_readLayerInts(d, layer, member, buf, cause);
        free(buf);
        return st;
    }
    if (strcmp(stage, "tokens") == 0) {
        int32_t *tokens;
        long n;
        MsStatus st = Dump_readTokens(d, &tokens, &n, cause);
        if (st != MS_OK)
            assert_null(tokens);
        free(tokens);
        return st;
    }
    if (strcmp(stage, "text") == 0) {
        char *text;
        MsStatus st = Dump_readText(d, &text, cause);
        free(text);
        return st;
    }
    fail_msg("unknown stage %s", stage);
    return MS_OK;
}

static void checkBadCase(char **f, int nfields) {
    const char *name = f[0], *stage = f[1];
    MsStatus want = statusNamed(f[2]);
    char **paths;
    int nf = splitFiles(f[5], &paths);
    Capture cap;
    captureBegin(&cap);
    Dump *d = (Dump *)&cap; /* must be reset to NULL on failure */
    char *cause = NULL;
    MsStatus st = Dump_open(&d, (const char *const *)paths, nf, &cause);
    if (strcmp(stage, "open") != 0) {
        if (st != MS_OK)
            fail_msg("%s: open failed before stage %s: %s", name, stage, cause);
        st = runStage(d, stage, atoi(f[3]), f[4], &cause);
    } else {
        assert_null(d);
    }
    Dump_delete(d);
    assertNothingPrinted(&cap, name);
    assertNoOpenHdf5Objects();
    if (st != want)
        fail_msg("%s: status %s, want %s (%s)", name, Status_name(st), Status_name(want),
                 cause ? cause : "no message");
    assert_int_equal(Status_exitCode(st), want == MS_ERR_NOMEM ? 1 : 2);
    assert_non_null(cause);
    assert_null(strchr(cause, '\n'));
    for (int k = 6; k < nfields; k++)
        if (!strstr(cause, f[k]))
            fail_msg("%s: message \"%s\" lacks \"%s\"", name, cause, f[k]);
    /* the file is named as given: the first fragment is always a file name */
    assert_non_null(strstr(cause, fixtureDir));
    free(cause);
    freePaths(paths, nf);
}

static void test_badCases(void **state) {
    Table t;
    Table_load(&t, "bad.tsv");
    for (int k = 0; k < t.n; k++) {
        char *f[16];
        int n = fields(t.lines[k], f, 16);
        assert_true(n >= 7);
        checkBadCase(f, n);
    }
    Table_done(&t);
}

/* The manifest must keep covering every class of bad input the issue lists. */
static void test_badCasesCoverEveryClass(void **state) {
    static const char *const required[] = {
        "missing", "not_hdf5", "truncated", "no_layers", "layer_abc", "layer_dup",
        "layer_dup_files", "missing_w_in", "missing_w_out", "missing_x", "w_in_rank1",
        "w_out_transposed", "w_gate_shape", "b_in_shape", "b_out_shape", "x_shape",
        "h_shape", "h_rows", "w_in_int", "x_string", "x_zero_tokens", "nan_w_out",
        "inf_b_in", "seq_not_zero", "seq_repeat", "seq_end", "act_unknown",
        "partition_range", "format_2", "huge_weights", "absurd_dims", "lzf",
        "external_link", "corrupt_x_chunk",
    };
    Table t;
    Table_load(&t, "bad.tsv");
    for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
        bool found = false;
        for (int k = 0; k < t.n && !found; k++)
            found = strncmp(t.lines[k], required[r], strlen(required[r])) == 0 &&
                    t.lines[k][strlen(required[r])] == '\t';
        if (!found)
            fail_msg("bad.tsv lacks case %s", required[r]);
    }
    Table_done(&t);
}

/* ---- other behaviour --------------------------------------------------------------- */

/* Independent decoding of a half: sign, exponent and mantissa by the definition. */
static float halfByDefinition(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(m + 1024), e - 25);
    return sign ? -v : v;
}

static void test_halfConversion(void **state) {
    uint16_t *in = xMallocArray(65536, sizeof *in);
    float *out = xMallocArray(65536, sizeof *out);
    for (int k = 0; k < 65536; k++)
        in[k] = (uint16_t)k;
    H5Util_halfToFloat(in, out, 65536);
    for (int k = 0; k < 65536; k++) {
        float want = halfByDefinition((uint16_t)k);
        if (isnan(want)) {
            uint32_t bits;
            memcpy(&bits, &out[k], sizeof bits);
            assert_true(isnan(out[k]));
            /* the payload moves up 13 bits; F16C may set the quiet bit (bit 22) */
            assert_int_equal(bits & 0x1fffu, 0);
            assert_int_equal((bits >> 13) & 511u, (unsigned)k & 511u);
            assert_int_equal(bits >> 31, (unsigned)k >> 15);
        } else if (memcmp(&out[k], &want, sizeof want) != 0) {
            fail_msg("half 0x%04x: got %a, want %a", k, (double)out[k], (double)want);
        }
    }
    /* in place, for lengths around the block size and the SIMD width */
    static const size_t lengths[] = {0, 1, 7, 8, 9, 2047, 2048, 2049, 4097, 65536};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        size_t n = lengths[l];
        float *buf = xMallocArray(n ? n : 1, sizeof *buf);
        for (size_t k = 0; k < n; k++)
            ((uint16_t *)(void *)buf)[k] = (uint16_t)(k * 7919u);
        H5Util_halfToFloatInPlace(buf, n);
        for (size_t k = 0; k < n; k++) {
            float want = halfByDefinition((uint16_t)(k * 7919u));
            if (isnan(want))
                assert_true(isnan(buf[k]));
            else
                assert_memory_equal(&buf[k], &want, sizeof want);
        }
        free(buf);
    }
    free(out);
    free(in);
}

static Dump *openOne(const char *name) {
    char *path = fixture(name);
    const char *paths[] = {path};
    Dump *d = NULL;
    char *cause = NULL;
    MsStatus st = Dump_open(&d, paths, 1, &cause);
    if (st != MS_OK)
        fail_msg("%s: %s", name, cause);
    free(path);
    return d;
}

static void test_rangeErrors(void **state) {
    Dump *d = openOne("f4.h5");
    float buf[64 * 16];
    char *cause = NULL;
    assert_int_equal(Dump_readRows(d, 0, DUMP_X, 18, 3, buf, &cause), MS_ERR_RANGE);
    assert_non_null(strstr(cause, "out of range"));
    assert_int_equal(Dump_readRows(d, 0, DUMP_X, -1, 1, buf, &cause), MS_ERR_RANGE);
    assert_int_equal(Dump_readRows(d, 2, DUMP_X, 0, 1, buf, &cause), MS_ERR_RANGE);
    assert_int_equal(Dump_readRows(d, 1, DUMP_H, 0, 1, buf, &cause), MS_ERR_RANGE);
    assert_int_equal(Dump_readRows(d, 0, DUMP_X, 20, 0, buf, &cause), MS_OK);
    FfnWeights w;
    assert_int_equal(Dump_readWeights(d, -1, &w, &cause), MS_ERR_RANGE);
    int32_t ints[16];
    assert_int_equal(Dump_readLayerInts(d, 0, "partitions/nope", ints, &cause), MS_ERR_FORMAT);
    assert_non_null(strstr(cause, "/layers/0/partitions/nope"));
    assert_null(Dump_layer(d, 2));
    assert_null(Dump_fileName(d, 1));
    int n;
    assert_null(Dump_partitionNames(d, 5, &n));
    assert_int_equal(n, 0);
    free(cause);
    Dump_delete(d);
    Dump_delete(NULL);
    assertNoOpenHdf5Objects();
}

static void test_memoryLimit(void **state) {
    Dump *d = openOne("f4.h5");
    Dump_setMemoryLimit(100);
    FfnWeights w;
    char *cause = NULL;
    MsStatus st = Dump_readWeights(d, 0, &w, &cause);
    Dump_setMemoryLimit((size_t)1 << 30);
    assert_int_equal(st, MS_ERR_NOMEM);
    /* w_in + w_out + b_in + b_out of d_ff 12, d_model 8 as float32 */
    char want[64];
    snprintf(want, sizeof want, "need %d bytes", 4 * (2 * 12 * 8 + 12 + 8));
    assert_non_null(strstr(cause, want));
    free(cause);
    Dump_delete(d);
}

static void *openInThread(void *arg) {
    char *path = fixture("truncated.h5");
    const char *paths[] = {path};
    Dump *d = NULL;
    char *cause = NULL;
    MsStatus st = Dump_open(&d, paths, 1, &cause);
    free(path);
    free(cause);
    return (void *)(intptr_t)st;
}

/* The HDF5 error-printing switch is per thread: a fresh thread must stay quiet too. */
static void test_quietInAnyThread(void **state) {
    Capture cap;
    captureBegin(&cap);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, openInThread, NULL), 0);
    void *ret;
    pthread_join(t, &ret);
    assertNothingPrinted(&cap, "Dump_open in a new thread");
    assert_int_equal((intptr_t)ret, MS_ERR_FORMAT);
}

/* No file, or the same file twice (HDF5 shares the open file). */
static void test_fileSets(void **state) {
    Dump *d = (Dump *)state;
    char *cause = NULL;
    assert_int_equal(Dump_open(&d, NULL, 0, &cause), MS_ERR_IO);
    assert_null(d);
    free(cause);
    cause = NULL;
    char *path = fixture("f4.h5");
    const char *paths[] = {path, path};
    assert_int_equal(Dump_open(&d, paths, 2, &cause), MS_OK);
    assert_int_equal(Dump_layerCount(d), 2);
    float x[8];
    assert_int_equal(Dump_readRows(d, 1, DUMP_X, 19, 1, x, &cause), MS_OK);
    Dump_delete(d);
    free(path);
    assertNoOpenHdf5Objects();
}

static void assertGuardRefuses(const char *corpusFile, const char *fragment) {
    const char *src = getenv("top_srcdir");
    char *path = xAsprintf("%s/tests/fuzz/corpus-dump/%s", src && *src ? src : ".",
                           corpusFile);
    const char *paths[] = {path};
    Capture cap;
    captureBegin(&cap);
    Dump *d = (Dump *)&cap;
    char *cause = NULL;
    MsStatus st = Dump_open(&d, paths, 1, &cause);
    assertNothingPrinted(&cap, "the crash guard");
    assert_int_equal(st, MS_ERR_FORMAT);
    assert_int_equal(Status_exitCode(st), 2);
    assert_null(d);
    if (!strstr(cause, path) || !strstr(cause, fragment))
        fail_msg("unexpected message: %s", cause);
    free(cause);
    free(path);
    assertNoOpenHdf5Objects();
}

/* Files that crash or hang HDF5 1.10.8 itself (a corrupt global heap behind a string
   attribute, found by the fuzzer) must come back as format errors naming them. */
static void test_crashGuard(void **state) {
    assertGuardRefuses("crash_hdf5_global_heap_segv.h5", "crashes the HDF5 library");
    Dump_setCrashGuard(true, 1);
    assertGuardRefuses("hang_hdf5_global_heap_loop.h5",
                       "found metadata that HDF5 did not finish reading in 1 s");
    Dump_setCrashGuard(true, 0);
}

/* Which datasets io/DirectRows reads itself (the rest go through HDF5), and that what it
   reads is python's floats, whole and from any row on any thread count. */
static void expectDirect(const char *file, const char *dset, bool direct, const char *refCase,
                         const char *ref) {
    char *path = fixture(file);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t ds = H5Dopen2(fid, dset, H5P_DEFAULT);
    assert_true(ds >= 0);
    DirectRows *r = DirectRows_open(fid, ds, path);
    if (!direct)
        assert_null(r);
    if (direct) {
        assert_non_null(r);
        hid_t space = H5Dget_space(ds);
        hsize_t dims[2];
        assert_int_equal(H5Sget_simple_extent_dims(space, dims, NULL), 2);
        H5Sclose(space);
        size_t n = (size_t)(dims[0] * dims[1]);
        size_t bytes = 0;
        float *want = refFile(refCase, ref, &bytes);
        assert_int_equal(bytes, n * sizeof(float));
        float *got = xMallocArray(n, sizeof(float));
        for (int threads = 1; threads <= 4; threads++) {
            for (long row0 = 0; row0 < (long)dims[0]; row0 += 5) {
                long rows = (long)dims[0] - row0;
                memset(got, 0xff, n * sizeof(float));
                assert_int_equal(DirectRows_read(r, row0, rows, got, threads), 0);
                assert_memory_equal(got, want + (size_t)row0 * dims[1],
                                    (size_t)rows * dims[1] * sizeof(float));
            }
        }
        assert_int_equal(DirectRows_read(r, 1, (long)dims[0], got, 2), -1); /* past the end */
        free(got);
        free(want);
    }
    DirectRows_close(r);
    H5Dclose(ds);
    H5Fclose(fid);
    free(path);
}

static void test_directRows(void **state) {
    (void)state;
    expectDirect("f4.h5", "/layers/0/x", true, "f4", "0.x.f32");       /* contiguous */
    expectDirect("f4.h5", "/layers/0/h", true, "f4", "0.h.f32");
    expectDirect("rowchunks.h5", "/layers/0/x", true, "rowchunks", "0.x.f32"); /* 7-row chunks */
    expectDirect("rowchunks.h5", "/layers/0/h", true, "rowchunks", "0.h.f32");
    expectDirect("rowchunks.h5", "/layers/1/h", false, NULL, NULL);    /* unwritten chunks */
    expectDirect("chunked.h5", "/layers/0/x", false, NULL, NULL);      /* gzip, partial rows */
    expectDirect("bigendian.h5", "/layers/0/w_in", false, NULL, NULL); /* >f4 */
    expectDirect("f2.h5", "/layers/0/x", false, NULL, NULL);           /* float16 */
    assertNoOpenHdf5Objects();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_halfConversion),
        cmocka_unit_test(test_goodCases),
        cmocka_unit_test(test_badCases),
        cmocka_unit_test(test_badCasesCoverEveryClass),
        cmocka_unit_test(test_rangeErrors),
        cmocka_unit_test(test_directRows),
        cmocka_unit_test(test_memoryLimit),
        cmocka_unit_test(test_quietInAnyThread),
        cmocka_unit_test(test_fileSets),
        cmocka_unit_test(test_crashGuard),
    };
    return cmocka_run_group_tests(tests, setupFixtures, teardownFixtures);
}
