/*
moescope - tests/test_fuzz_dump_replay.c
Runs every file of the loader's fuzz corpus (tests/fuzz/corpus-dump: the seeds and every
crasher the fuzzer found, minimized) through the fuzz entry under gcc's sanitizers, so a
fixed crash stays fixed without clang. The entry aborts on a broken invariant (a failure
without a message, an HDF5 object left open); here each file must simply come back with
a status.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_dump.h"
#include "util/Status.h"
#include "util/XUtils.h" /* before cmocka.h, which defines a fail() macro */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

static void test_replayCorpus(void **state) {
    const char *src = getenv("top_srcdir");
    char *dir = xAsprintf("%s/tests/fuzz/corpus-dump", src && *src ? src : ".");
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    int files = 0, opened = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char *path = xAsprintf("%s/%s", dir, e->d_name);
        int st = FuzzDump_runFile(path);
        assert_in_range(st, MS_OK, MS_ERR_CANCELED);
        /* inputs that crashed or hung HDF5 itself must be refused by the crash guard */
        if (strncmp(e->d_name, "crash_", 6) == 0 || strncmp(e->d_name, "hang_", 5) == 0)
            assert_int_not_equal(st, MS_OK);
        print_message("%-40s %s\n", e->d_name, Status_name((MsStatus)st));
        files++;
        opened += st == MS_OK;
        free(path);
    }
    closedir(d);
    free(dir);
    /* the seeds hold both loadable and refused files */
    assert_true(files >= 10);
    assert_true(opened >= 5 && opened < files);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replayCorpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
