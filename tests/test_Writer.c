/*
moescope - tests/test_Writer.c
Writes a file through every io/Writer function and has h5py check it
(tests/fixtures/check_writer.py recomputes the values from the same formula, including
numpy's float16 rounding); then the failure paths: an abandoned writer leaves nothing
behind, an unwritable place and bad arguments give one-sentence errors.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/Writer.h"
#include "util/XUtils.h" /* before cmocka.h, which defines a fail() macro */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

enum { R = 300, C = 7 };

static char tmpdir[] = "/tmp/moescope-test_Writer.XXXXXX";

/* The formula check_writer.py recomputes: n/1000 * 2^((i % 24) - 12). */
static float value(long i, long j) {
    long n = (i * 7919 + j * 104729) % 20001 - 10000;
    return (float)ldexp((double)n / 1000.0, (int)(i % 24) - 12);
}

static float *matrix(long rows, long cols) {
    long w = cols > 0 ? cols : 1;
    float *m = xMallocArray((size_t)(rows * w), sizeof *m);
    for (long i = 0; i < rows; i++)
        for (long j = 0; j < w; j++)
            m[i * w + j] = value(i, j);
    return m;
}

/* Values around float16's rounding edges; the same list is in check_writer.py. */
static long specials(float *s) {
    double p24 = ldexp(1, -24), p25 = ldexp(1, -25), p14 = ldexp(1, -14);
    double v[] = {0.0, -0.0, 1.0, 65504.0, 65520.0 - ldexp(1, -8), 65520.0, -65520.0, 1e10,
                  INFINITY, -INFINITY, NAN, p24, p25, 3 * ldexp(1, -26), p14, p14 - p25,
                  1 + ldexp(1, -11), 1 + 3 * ldexp(1, -11), ldexp(1, -27), 2049.0, 2051.0,
                  -2051.0, p24 * 1.5, p24 * 2.5, 1023.75, 0.5 + ldexp(1, -12)};
    long n = (long)(sizeof v / sizeof v[0]);
    for (long i = 0; i < n; i++)
        s[i] = (float)v[i];
    return n;
}

static int run(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static const char *python(void) {
    const char *py = getenv("H5PY_PYTHON");
    return py && py[0] ? py : "/usr/bin/python3";
}

static char *fixture(const char *name) {
    const char *top = getenv("top_srcdir");
    return xAsprintf("%s/tests/fixtures/%s", top && top[0] ? top : ".", name);
}

/* Number of directory entries other than . and .. */
static int entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* A fresh directory per test, so one failure does not spill into the next test. */
static char *subdir(const char *name) {
    char *d = xAsprintf("%s/%s", tmpdir, name);
    assert_int_equal(mkdir(d, 0700), 0);
    return d;
}

static void ok(MsStatus st, char *cause) {
    if (st != MS_OK)
        fail_msg("%s", cause ? cause : "(no cause)");
}

#define OK(call) ok((call), cause)

static void writeAll(Writer *w) {
    char *cause = NULL;
    float *v = matrix(R, C);
    float *vec = matrix(50, 0);
    float *col = matrix(R, 0);
    float sp[40];
    long nsp = specials(sp);
    WriterOptions f32 = {WRITER_F32, 0}, f16 = {WRITER_F16, 0}, f64 = {WRITER_F64, 0};
    OK(Writer_setAttrString(w, "/", "model_name", "writer test ✓", &cause));
    OK(Writer_writeFloats(w, "/f32", v, R, C, f32, &cause));
    OK(Writer_writeFloats(w, "/f32z", v, R, C, (WriterOptions){WRITER_F32, 4}, &cause));
    OK(Writer_writeFloats(w, "/f16", v, R, C, f16, &cause));
    OK(Writer_writeFloats(w, "/f16z", v, R, C, (WriterOptions){WRITER_F16, 1}, &cause));
    OK(Writer_writeFloats(w, "/f64", v, R, C, f64, &cause));
    OK(Writer_writeFloats(w, "/vec", vec, 50, 0, f32, &cause));
    OK(Writer_writeFloats(w, "/vecz", vec, 50, 0, (WriterOptions){WRITER_F32, 9}, &cause));
    OK(Writer_writeFloats(w, "/empty", NULL, 0, 5, (WriterOptions){WRITER_F32, 3}, &cause));
    OK(Writer_writeFloats(w, "/special", sp, nsp, 0, f16, &cause));

    /* Appends in uneven blocks, including an empty one. */
    OK(Writer_beginRows(w, "/g/a/b/rows16", C, (WriterOptions){WRITER_F16, 2}, &cause));
    OK(Writer_beginRows(w, "/rows32", C, f32, &cause));
    OK(Writer_beginRows(w, "/rows64", 0, f64, &cause));
    OK(Writer_beginRows(w, "/none", 3, f32, &cause));
    long blocks[] = {100, 1, 0, 199};
    for (long b = 0, r = 0; b < 4; r += blocks[b++]) {
        OK(Writer_appendRows(w, "/g/a/b/rows16", v + r * C, blocks[b], &cause));
        OK(Writer_appendRows(w, "/rows32", v + r * C, blocks[b], &cause));
        OK(Writer_appendRows(w, "/rows64", col + r, blocks[b], &cause));
    }

    int32_t groups[100];
    for (int i = 0; i < 100; i++)
        groups[i] = i * 37 % 11 - 3;
    int64_t offs[] = {0, 5, (int64_t)1 << 40, -7, (int64_t)1 << 62};
    OK(Writer_writeInt32(w, "/layers/0/planted_group", groups, 100, &cause));
    OK(Writer_writeInt64(w, "/seq_offsets", offs, 5, &cause));
    OK(Writer_writeString(w, "/text", "héllo → moescope\nline 2", &cause));
    OK(Writer_makeGroup(w, "/layers/0", &cause)); /* exists already: fine */
    OK(Writer_makeGroup(w, "/layers/1/sub", &cause));
    OK(Writer_makeGroup(w, "/layers/2", &cause));
    OK(Writer_setAttrString(w, "/layers/0", "name", "encoder.block.0", &cause));
    OK(Writer_setAttrString(w, "/layers/0", "activation", "relu", &cause));
    OK(Writer_setAttrInt(w, "/layers/0", "experts", 43, &cause));
    OK(Writer_setAttrDouble(w, "/layers/0", "tau", 0.125, &cause));
    OK(Writer_setAttrString(w, "/f32", "note", "first", &cause));
    OK(Writer_setAttrString(w, "/f32", "note", "second", &cause));
    free(v);
    free(vec);
    free(col);
    free(cause);
}

static void test_everyApiCheckedByH5py(void **state) {
    (void)state;
    char *dir = subdir("all");
    char *path = xAsprintf("%s/all.h5", dir);
    char *cause = NULL;
    Writer *w = NULL;
    OK(Writer_create(&w, path, &cause));
    writeAll(w);
    assert_int_equal(entries(dir), 1); /* only the temporary so far */
    assert_int_equal(access(path, F_OK), -1);
    OK(Writer_close(w, &cause));
    assert_int_equal(entries(dir), 1); /* renamed: no temporary left */
    assert_int_equal(access(path, R_OK), 0);
    char *script = fixture("check_writer.py");
    char *argv[] = {(char *)python(), script, path, NULL};
    assert_int_equal(run(argv), 0);
    free(script);
    unlink(path);
    rmdir(dir);
    free(dir);
    free(path);
    free(cause);
}

static void test_abandonedWriterLeavesNothing(void **state) {
    (void)state;
    char *dir = subdir("abandoned");
    char *path = xAsprintf("%s/abandoned.h5", dir);
    char *cause = NULL;
    Writer *w = NULL;
    OK(Writer_create(&w, path, &cause));
    float v[6] = {1, 2, 3, 4, 5, 6};
    OK(Writer_writeFloats(w, "/layers/0/x", v, 2, 3, (WriterOptions){WRITER_F32, 1}, &cause));
    assert_int_equal(entries(dir), 1);
    Writer_delete(w);
    assert_int_equal(entries(dir), 0);
    assert_int_equal(access(path, F_OK), -1);
    Writer_delete(NULL);
    rmdir(dir);
    free(dir);
    free(path);
    free(cause);
}

static void test_unwritablePlaceIsIoError(void **state) {
    (void)state;
    char *cause = NULL;
    Writer *w = (Writer *)&cause; /* must be reset to NULL */
    char *dir = subdir("unwritable");
    char *path = xAsprintf("%s/no/such/dir/out.h5", dir);
    assert_int_equal(Writer_create(&w, path, &cause), MS_ERR_IO);
    assert_null(w);
    assert_non_null(cause);
    assert_non_null(strstr(cause, path));
    free(path);
    if (geteuid() != 0) { /* root writes anywhere; the missing directory covers it */
        char *ro = xAsprintf("%s/ro", dir);
        assert_int_equal(mkdir(ro, 0500), 0);
        path = xAsprintf("%s/out.h5", ro);
        assert_int_equal(Writer_create(&w, path, &cause), MS_ERR_IO);
        assert_non_null(strstr(cause, "out.h5"));
        free(path);
        rmdir(ro);
        free(ro);
    }
    assert_int_equal(entries(dir), 0);
    rmdir(dir);
    free(dir);
    free(cause);
}

static void test_badCallsGiveOneSentence(void **state) {
    (void)state;
    char *dir = subdir("bad");
    char *path = xAsprintf("%s/bad.h5", dir);
    char *cause = NULL;
    Writer *w = NULL;
    OK(Writer_create(&w, path, &cause));
    float v[4] = {1, 2, 3, 4};
    WriterOptions o = {WRITER_F32, 0};
    OK(Writer_writeFloats(w, "/a/b", v, 2, 2, o, &cause));
    assert_int_equal(Writer_writeFloats(w, "/a/b", v, 2, 2, o, &cause), MS_ERR_IO);
    assert_non_null(strstr(cause, "bad.h5: /a/b: cannot create dataset"));
    assert_null(strchr(cause, '\n'));
    assert_int_equal(Writer_writeFloats(w, "/c", v, 2, 2, (WriterOptions){WRITER_F32, 10},
                                        &cause),
                     MS_ERR_RANGE);
    assert_non_null(strstr(cause, "/c: gzip level 10"));
    assert_int_equal(Writer_writeFloats(w, "/d", v, -1, 2, o, &cause), MS_ERR_RANGE);
    assert_int_equal(Writer_writeFloats(w, "relative", v, 1, 1, o, &cause), MS_ERR_RANGE);
    assert_int_equal(Writer_appendRows(w, "/missing", v, 1, &cause), MS_ERR_IO);
    assert_non_null(strstr(cause, "/missing"));
    assert_int_equal(Writer_setAttrInt(w, "/nowhere", "k", 1, &cause), MS_ERR_IO);
    assert_non_null(strstr(cause, "bad.h5: /nowhere"));
    /* A dataset is not a group. */
    assert_int_equal(Writer_makeGroup(w, "/a/b/c", &cause), MS_ERR_IO);
    Writer_delete(w);
    assert_int_equal(entries(dir), 0);
    rmdir(dir);
    free(dir);
    free(path);
    free(cause);
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int removeEntry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes what failed tests left behind, then the directory. */
static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, removeEntry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_everyApiCheckedByH5py),
        cmocka_unit_test(test_abandonedWriterLeavesNothing),
        cmocka_unit_test(test_unwritablePlaceIsIoError),
        cmocka_unit_test(test_badCallsGiveOneSentence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
