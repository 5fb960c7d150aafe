/*
moescope - tests/test_Csv.c
The tidy CSV writer (SPEC §6): header, empty cells, 9 significant digits, NaN, quoting
of names with commas and quotes, and the atomic rename.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Csv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/CsvField.h"
#include "util/XUtils.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static char *slurp(const char *path) {
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void test_field_quoting(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    CsvField_write(fp, "plain");
    fputc('|', fp);
    CsvField_write(fp, "a,b");
    fputc('|', fp);
    CsvField_write(fp, "say \"hi\"");
    fputc('|', fp);
    CsvField_write(fp, NULL);
    fputc('|', fp);
    CsvField_write(fp, "two\nlines");
    fclose(fp);
    assert_string_equal(text, "plain|\"a,b\"|\"say \"\"hi\"\"\"||\"two\nlines\"");
    free(text);
}

static void test_rows(void **state) {
    (void)state;
    char dir[] = "/tmp/moescope-csv-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = xAsprintf("%s/out.csv", dir);
    Csv csv;
    assert_int_equal(Csv_open(&csv, path, NULL), MS_OK);
    /* nothing is visible under the final name before the commit */
    assert_int_equal(access(path, F_OK), -1);
    Csv_row(&csv, &(CsvRow){.layer = 3, .layer_name = "block,3", .tau = 0.0, .split = "all",
                            .metric = "sparsity", .value = 1.0 / 3.0, .file = "a.h5"});
    Csv_row(&csv, &(CsvRow){.layer = 3, .layer_name = "x", .strategy = "coact",
                            .router = "mlp", .E = 32, .k = 4, .tau = 0.25, .split = "test",
                            .metric = "output_rel_err", .value = NAN, .file = "a.h5"});
    assert_int_equal(csv.rows, 2);
    assert_int_equal(Csv_close(&csv, NULL), MS_OK);
    assert_string_equal(slurp(path),
                        "layer,layer_name,strategy,router,E,k,tau,split,metric,value,file\n"
                        "3,\"block,3\",,,,,0,all,sparsity,0.333333333,a.h5\n"
                        "3,x,coact,mlp,32,4,0.25,test,output_rel_err,NaN,a.h5\n");
    /* an aborted file leaves nothing behind */
    char *other = xAsprintf("%s/aborted.csv", dir);
    assert_int_equal(Csv_open(&csv, other, NULL), MS_OK);
    Csv_abort(&csv);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* fails if a temporary file was left */
    free(other);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_quoting),
        cmocka_unit_test(test_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
