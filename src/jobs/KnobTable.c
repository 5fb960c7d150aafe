/*
moescope - jobs/KnobTable.c
The knob table and the operations generated from it: defaults, parsing, stepping,
formatting. Pure functions on a Knobs value; the UI thread owns the live copy.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/KnobTable.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/XUtils.h"

static const char *const strategyChoices[] = {"random", "param", "coact"};
static const char *const routerChoices[] = {"similarity", "mlp", "sigmoid", "oracle"};
static const RouterKind routerKinds[] = {ROUTER_SIMILARITY, ROUTER_MLP, ROUTER_SIGMOID,
                                         ROUTER_ORACLE};

static double getE(const Knobs *k) { return k->E; }
static double getK(const Knobs *k) { return k->k; }
static double getStrategy(const Knobs *k) { return (double)k->strategy; }
static double getTau(const Knobs *k) { return k->tau; }
static double getTarget(const Knobs *k) { return k->target; }
static double getSeed(const Knobs *k) { return (double)k->seed; }
static double getTest(const Knobs *k) { return k->test_fraction; }

static double getRouter(const Knobs *k) {
    for (int i = 0; i < 4; i++)
        if (routerKinds[i] == k->router)
            return i;
    return 0;
}

static void applyE(Knobs *k, double v) {
    k->E = (int)v;
    if (k->k > k->E)
        k->k = k->E;
}

static void applyK(Knobs *k, double v) {
    k->k = (int)v;
    if (k->k > k->E)
        k->E = k->k;
}

static void applyStrategy(Knobs *k, double v) { k->strategy = (PartitionStrategy)(int)v; }
static void applyRouter(Knobs *k, double v) { k->router = routerKinds[(int)v]; }
static void applyTau(Knobs *k, double v) { k->tau = v; }
static void applyTarget(Knobs *k, double v) { k->target = v < 0 ? -1.0 : v; }
static void applySeed(Knobs *k, double v) { k->seed = (unsigned long)v; }
static void applyTest(Knobs *k, double v) { k->test_fraction = v; }

static const KnobDef table[KNOB_COUNT] = {
    {KNOB_E, "E", "experts E", KNOB_INT, 1, 65536, 1, 8, "",
     "Experts per layer; the divisors of d_ff give equal sizes, other values floor/ceil.",
     NULL, 0, getE, applyE},
    {KNOB_K, "k", "experts per token k", KNOB_INT, 1, 65536, 1, 2, "",
     "Experts each token selects (1 <= k <= E).", NULL, 0, getK, applyK},
    {KNOB_STRATEGY, "strategy", "partition strategy", KNOB_CHOICE, 0, 2, 1, PARTITION_PARAM, "",
     "random, param (k-means on key rows) or coact (METIS on the co-activation graph).",
     strategyChoices, 3, getStrategy, applyStrategy},
    {KNOB_ROUTER, "router", "router", KNOB_CHOICE, 0, 3, 1, 0, "",
     "similarity, mlp (trained on train), sigmoid gate, or the oracle itself.",
     routerChoices, 4, getRouter, applyRouter},
    {KNOB_TAU, "tau", "threshold tau", KNOB_REAL, 0, 1e30, 0, 0, "",
     "A neuron is active when |h| > tau (used when the target is off).", NULL, 0, getTau,
     applyTau},
    {KNOB_TARGET, "target", "target sparsity", KNOB_REAL, -1, 1, 0.05, -1, "",
     "Sets tau per layer to the quantile reaching this sparsity of |h| (off: use tau).",
     NULL, 0, getTarget, applyTarget},
    {KNOB_SEED, "seed", "seed", KNOB_INT, 0, 2147483647, 1, 0, "",
     "Seed of the random and param partitions and the mlp router.", NULL, 0, getSeed,
     applySeed},
    {KNOB_TEST, "test", "held-out fraction", KNOB_REAL, 0.01, 0.9, 0.05, 0.1, "",
     "Last fraction of the tokens held out; routers and coact fit on the rest.", NULL, 0,
     getTest, applyTest},
};

const KnobDef *KnobTable_def(KnobId id) {
    return (unsigned)id < KNOB_COUNT ? &table[id] : NULL;
}

const KnobDef *KnobTable_find(const char *name) {
    for (int i = 0; i < KNOB_COUNT; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    const KnobDef *found = NULL;
    for (int i = 0; i < KNOB_COUNT; i++) {
        if (strcasecmp(table[i].name, name) == 0) {
            if (found)
                return NULL;
            found = &table[i];
        }
    }
    /* Aliases a user may type. */
    if (!found && (strcasecmp(name, "experts") == 0))
        found = &table[KNOB_E];
    if (!found &&
        (strcasecmp(name, "test_fraction") == 0 || strcasecmp(name, "test-fraction") == 0))
        found = &table[KNOB_TEST];
    if (!found && strcasecmp(name, "sparsity") == 0)
        found = &table[KNOB_TARGET];
    return found;
}

const char *KnobTable_names(void) {
    return "E, k, strategy, router, tau, target, seed, test";
}

void Knobs_default(Knobs *k) {
    memset(k, 0, sizeof *k);
    for (int i = 0; i < KNOB_COUNT; i++)
        table[i].apply(k, table[i].def);
}

double Knobs_get(const Knobs *k, KnobId id) {
    return table[id].get(k);
}

void Knobs_set(Knobs *k, KnobId id, double value) {
    const KnobDef *d = &table[id];
    if (isnan(value))
        return;
    if (value < d->min)
        value = d->min;
    if (value > d->max)
        value = d->max;
    if (d->type != KNOB_REAL)
        value = floor(value + 0.5);
    d->apply(k, value);
}

MsStatus KnobTable_parseValue(const KnobDef *d, const char *text, double *value, char **cause) {
    while (*text == ' ')
        text++;
    if (d->type == KNOB_CHOICE) {
        for (int i = 0; i < d->n_choices; i++) {
            if (strcasecmp(text, d->choices[i]) == 0) {
                *value = i;
                return MS_OK;
            }
        }
        char list[160] = "";
        for (int i = 0; i < d->n_choices; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                     d->choices[i]);
        setCause(cause, "%s: unknown value '%s' (%s)", d->name, text, list);
        return MS_ERR_RANGE;
    }
    if (d->id == KNOB_TARGET && (strcasecmp(text, "off") == 0 || strcmp(text, "-") == 0)) {
        *value = -1;
        return MS_OK;
    }
    char *end = NULL;
    double v = strtod(text, &end);
    while (end && *end == ' ')
        end++;
    if (!end || end == text || *end != '\0' || !isfinite(v)) {
        setCause(cause, "%s: expected a number, found '%s'", d->name, text);
        return MS_ERR_RANGE;
    }
    double lo = d->id == KNOB_TARGET ? 0.0 : d->min;
    if (v < lo || v > d->max || (d->type == KNOB_INT && v != floor(v))) {
        if (d->id == KNOB_TARGET)
            setCause(cause, "target: expected a sparsity from 0 to 1 or off, found '%s'", text);
        else
            setCause(cause, "%s: expected %s from %g to %g, found '%s'", d->name,
                     d->type == KNOB_INT ? "an integer" : "a value", d->min, d->max, text);
        return MS_ERR_RANGE;
    }
    *value = v;
    return MS_OK;
}

MsStatus Knobs_assign(Knobs *k, const char *assignment, char **cause) {
    char name[64];
    const char *sep = strpbrk(assignment, "= ");
    size_t n = sep ? (size_t)(sep - assignment) : strlen(assignment);
    if (!sep || n == 0 || n >= sizeof name) {
        setCause(cause, "expected NAME=VALUE with NAME one of %s, found '%s'",
                 KnobTable_names(), assignment);
        return MS_ERR_RANGE;
    }
    memcpy(name, assignment, n);
    name[n] = '\0';
    const KnobDef *d = KnobTable_find(name);
    if (!d) {
        setCause(cause, "unknown knob '%s' (%s)", name, KnobTable_names());
        return MS_ERR_RANGE;
    }
    while (*sep == '=' || *sep == ' ')
        sep++;
    double v;
    MsStatus st = KnobTable_parseValue(d, sep, &v, cause);
    if (st == MS_OK)
        Knobs_set(k, d->id, v);
    return st;
}

/* The next value of a 1-2-5 ladder above (dir > 0) or below v, with 0 at the bottom. */
static double ladder125(double v, int dir) {
    if (dir > 0) {
        if (v <= 0)
            return 0.001;
        double p = pow(10.0, floor(log10(v) + 1e-9));
        const double m[] = {1, 2, 5, 10};
        for (int i = 0; i < 4; i++)
            if (m[i] * p > v * (1 + 1e-9))
                return m[i] * p;
        return 10 * p;
    }
    if (v <= 0.001 + 1e-12)
        return 0;
    double p = pow(10.0, floor(log10(v) + 1e-9));
    const double m[] = {5, 2, 1, 0.5};
    for (int i = 0; i < 4; i++)
        if (m[i] * p < v * (1 - 1e-9))
            return m[i] * p;
    return 0.5 * p;
}

static const double targetLadder[] = {0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
                                      0.99, 0.999};
enum { TARGET_STEPS = sizeof targetLadder / sizeof targetLadder[0] };

static double stepTarget(double v, int dir) {
    if (dir > 0) {
        for (int i = 0; i < TARGET_STEPS; i++)
            if (targetLadder[i] > v + 1e-12)
                return targetLadder[i];
        return targetLadder[TARGET_STEPS - 1];
    }
    for (int i = TARGET_STEPS - 1; i >= 0; i--)
        if (targetLadder[i] < v - 1e-12)
            return targetLadder[i];
    return -1;
}

static int stepE(int E, int dir, const int *cand, int n) {
    if (!cand || n == 0)
        return E + (dir > 0 ? 1 : -1);
    if (dir > 0) {
        for (int i = 0; i < n; i++)
            if (cand[i] > E)
                return cand[i];
        return E + 1;
    }
    for (int i = n - 1; i >= 0; i--)
        if (cand[i] < E)
            return cand[i];
    return E - 1;
}

void Knobs_step(Knobs *k, KnobId id, int dir, const int *cand, int n) {
    const KnobDef *d = &table[id];
    double v = d->get(k);
    switch (id) {
    case KNOB_E: v = stepE(k->E, dir, cand, n); break;
    case KNOB_TAU: v = ladder125(v, dir); break;
    case KNOB_TARGET: v = stepTarget(v, dir); break;
    default:
        if (d->type == KNOB_CHOICE) {
            int i = ((int)v + (dir > 0 ? 1 : -1) + d->n_choices) % d->n_choices;
            v = i;
        } else {
            v += dir > 0 ? d->step : -d->step;
            if (d->type == KNOB_REAL)
                v = floor(v / d->step + 0.5) * d->step; /* no 0.30000000000000004 */
        }
    }
    Knobs_set(k, id, v);
}

void Knobs_format(const Knobs *k, KnobId id, char *buf, size_t size) {
    const KnobDef *d = &table[id];
    double v = d->get(k);
    if (d->type == KNOB_CHOICE)
        snprintf(buf, size, "%s", d->choices[(int)v]);
    else if (id == KNOB_TARGET && v < 0)
        snprintf(buf, size, "off");
    else if (d->type == KNOB_INT)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%g", v);
}

double Knobs_tau(const Knobs *k, double tau_q) {
    return k->target >= 0 ? tau_q : k->tau;
}

static int cmpInt(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int KnobTable_expertCandidates(int d_ff, int *out, int max) {
    int n = 0;
    for (int e = 1; e <= d_ff && n < max; e++)
        if (d_ff % e == 0)
            out[n++] = e;
    for (int p = 2; p < d_ff && n < max; p *= 2)
        if (d_ff % p != 0)
            out[n++] = p;
    qsort(out, (size_t)n, sizeof *out, cmpInt);
    return n;
}
