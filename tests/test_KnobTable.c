/*
moescope - tests/test_KnobTable.c
The knob table: defaults equal to --batch's, NAME=VALUE parsing and its errors, the k <= E
rule, stepping (E along the divisors of d_ff and the powers of two, tau along 1-2-5,
the target ladder down to off, choices wrapping) and formatting.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/KnobTable.h"

static void test_defaults(void **state) {
    (void)state;
    Knobs k;
    Knobs_default(&k);
    assert_int_equal(k.E, 8);
    assert_int_equal(k.k, 2);
    assert_int_equal(k.strategy, PARTITION_PARAM);
    assert_int_equal(k.router, ROUTER_SIMILARITY);
    assert_true(k.tau == 0.0);
    assert_true(k.target < 0);
    assert_int_equal(k.seed, 0);
    assert_true(fabs(k.test_fraction - 0.1) < 1e-12);
    for (int i = 0; i < KNOB_COUNT; i++) {
        const KnobDef *d = KnobTable_def((KnobId)i);
        assert_non_null(d);
        assert_int_equal(d->id, i);
        assert_ptr_equal(KnobTable_find(d->name), d);
        /* the default reads back through the table */
        assert_true(fabs(Knobs_get(&k, (KnobId)i) - d->def) < 1e-12);
    }
}

static void test_assign(void **state) {
    (void)state;
    Knobs k;
    Knobs_default(&k);
    char *cause = NULL;
    assert_int_equal(Knobs_assign(&k, "E=16", &cause), MS_OK);
    assert_int_equal(k.E, 16);
    assert_int_equal(Knobs_assign(&k, "k 4", &cause), MS_OK);
    assert_int_equal(k.k, 4);
    assert_int_equal(Knobs_assign(&k, "strategy=coact", &cause), MS_OK);
    assert_int_equal(k.strategy, PARTITION_COACT);
    assert_int_equal(Knobs_assign(&k, "router=MLP", &cause), MS_OK);
    assert_int_equal(k.router, ROUTER_MLP);
    assert_int_equal(Knobs_assign(&k, "router=oracle", &cause), MS_OK);
    assert_int_equal(k.router, ROUTER_ORACLE);
    assert_int_equal(Knobs_assign(&k, "target=0.9", &cause), MS_OK);
    assert_true(fabs(k.target - 0.9) < 1e-12);
    assert_int_equal(Knobs_assign(&k, "target=off", &cause), MS_OK);
    assert_true(k.target < 0);
    assert_int_equal(Knobs_assign(&k, "tau=0.25", &cause), MS_OK);
    assert_true(fabs(k.tau - 0.25) < 1e-12);
    assert_int_equal(Knobs_assign(&k, "seed=7", &cause), MS_OK);
    assert_int_equal(k.seed, 7);
    assert_int_equal(Knobs_assign(&k, "test=0.2", &cause), MS_OK);
    assert_true(fabs(k.test_fraction - 0.2) < 1e-12);
    assert_null(cause);

    Knobs before = k;
    const char *bad[] = {"E=0", "E=1.5", "E=abc", "nope=1", "router=foo", "tau=-1", "target=2",
                         "test=0", "k", "=3", "strategy="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(Knobs_assign(&k, bad[i], &cause), MS_ERR_RANGE);
        assert_non_null(cause);
        free(cause);
        cause = NULL;
        assert_memory_equal(&before, &k, sizeof k); /* a refused value changes nothing */
    }
    assert_int_equal(Knobs_assign(&k, "router=foo", &cause), MS_ERR_RANGE);
    assert_non_null(strstr(cause, "similarity")); /* the message lists the choices */
    free(cause);
}

static void test_k_le_E(void **state) {
    (void)state;
    Knobs k;
    Knobs_default(&k);
    Knobs_set(&k, KNOB_K, 6);
    Knobs_set(&k, KNOB_E, 4);
    assert_int_equal(k.E, 4);
    assert_int_equal(k.k, 4);
    Knobs_set(&k, KNOB_K, 10);
    assert_int_equal(k.k, 10);
    assert_int_equal(k.E, 10);
    Knobs_set(&k, KNOB_E, 0); /* clamped to the minimum */
    assert_int_equal(k.E, 1);
    assert_int_equal(k.k, 1);
}

static void test_candidates_and_steps(void **state) {
    (void)state;
    int c[64];
    int n = KnobTable_expertCandidates(172, c, 64);
    const int want[] = {1, 2, 4, 8, 16, 32, 43, 64, 86, 128, 172};
    assert_int_equal(n, 11);
    assert_memory_equal(c, want, sizeof want);
    n = KnobTable_expertCandidates(3072, c, 64);
    for (int i = 0; i < n; i++) {
        assert_true(i == 0 || c[i] > c[i - 1]);
        bool pow2 = (c[i] & (c[i] - 1)) == 0;
        assert_true(3072 % c[i] == 0 || pow2);
    }
    assert_int_equal(n, 22 + 1); /* 3072 = 3 * 2^10 has 22 divisors; 2048 is the extra */

    Knobs k;
    Knobs_default(&k);
    n = KnobTable_expertCandidates(172, c, 64);
    Knobs_step(&k, KNOB_E, +1, c, n);
    assert_int_equal(k.E, 16);
    Knobs_set(&k, KNOB_E, 32);
    Knobs_step(&k, KNOB_E, +1, c, n);
    assert_int_equal(k.E, 43);
    Knobs_step(&k, KNOB_E, -1, c, n);
    assert_int_equal(k.E, 32);
    Knobs_set(&k, KNOB_E, 172);
    Knobs_step(&k, KNOB_E, +1, c, n); /* past the last candidate: by one */
    assert_int_equal(k.E, 173);
    Knobs_step(&k, KNOB_E, -1, NULL, 0);
    assert_int_equal(k.E, 172);

    const double up[] = {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1};
    for (size_t i = 0; i < sizeof up / sizeof *up; i++) {
        Knobs_step(&k, KNOB_TAU, +1, NULL, 0);
        assert_true(fabs(k.tau - up[i]) < 1e-12);
    }
    Knobs_step(&k, KNOB_TAU, -1, NULL, 0);
    assert_true(fabs(k.tau - 0.05) < 1e-12);
    Knobs_set(&k, KNOB_TAU, 0.001);
    Knobs_step(&k, KNOB_TAU, -1, NULL, 0);
    assert_true(k.tau == 0);

    Knobs_step(&k, KNOB_TARGET, +1, NULL, 0);
    assert_true(fabs(k.target - 0.5) < 1e-12);
    Knobs_step(&k, KNOB_TARGET, -1, NULL, 0);
    assert_true(k.target < 0);
    Knobs_set(&k, KNOB_TARGET, 0.95);
    Knobs_step(&k, KNOB_TARGET, +1, NULL, 0);
    assert_true(fabs(k.target - 0.99) < 1e-12);

    Knobs_step(&k, KNOB_STRATEGY, +1, NULL, 0);
    assert_int_equal(k.strategy, PARTITION_COACT);
    Knobs_step(&k, KNOB_STRATEGY, +1, NULL, 0);
    assert_int_equal(k.strategy, PARTITION_RANDOM);
    Knobs_step(&k, KNOB_STRATEGY, -1, NULL, 0);
    assert_int_equal(k.strategy, PARTITION_COACT);

    Knobs_set(&k, KNOB_TEST, 0.1);
    for (int i = 0; i < 4; i++)
        Knobs_step(&k, KNOB_TEST, +1, NULL, 0);
    assert_true(fabs(k.test_fraction - 0.3) < 1e-12);
}

static void test_format(void **state) {
    (void)state;
    Knobs k;
    Knobs_default(&k);
    char buf[64];
    Knobs_format(&k, KNOB_TARGET, buf, sizeof buf);
    assert_string_equal(buf, "off");
    Knobs_format(&k, KNOB_ROUTER, buf, sizeof buf);
    assert_string_equal(buf, "similarity");
    Knobs_format(&k, KNOB_E, buf, sizeof buf);
    assert_string_equal(buf, "8");
    Knobs_set(&k, KNOB_TAU, 0.05);
    Knobs_format(&k, KNOB_TAU, buf, sizeof buf);
    assert_string_equal(buf, "0.05");
    /* every formatted value parses back to itself */
    Knobs_set(&k, KNOB_TARGET, 0.9);
    for (int i = 0; i < KNOB_COUNT; i++) {
        const KnobDef *d = KnobTable_def((KnobId)i);
        double v;
        char *cause = NULL;
        Knobs_format(&k, (KnobId)i, buf, sizeof buf);
        assert_int_equal(KnobTable_parseValue(d, buf, &v, &cause), MS_OK);
        assert_true(fabs(v - Knobs_get(&k, (KnobId)i)) < 1e-9);
    }
    assert_true(Knobs_tau(&k, 0.3) == 0.3);
    Knobs_set(&k, KNOB_TARGET, -1);
    assert_true(Knobs_tau(&k, 0.3) == 0.05);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_assign),
        cmocka_unit_test(test_k_le_E),
        cmocka_unit_test(test_candidates_and_steps),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
