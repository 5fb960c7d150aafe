/*
moescope - jobs/KnobTable.h
The live knobs of the terminal UI in one table (after redis's static_configs and tmux's
options-table): name, type, range, step, default, unit, help and an apply function per
knob. The knob panel, `--set NAME=VALUE`, the `:` prompt and the help screen are all
generated from it, so a knob added here shows up everywhere.

The defaults equal `moescope --batch`'s (seed 0, test fraction 0.1, tau 0, E 8) with k 2,
strategy param and router similarity, so the UI's Layers screen equals the batch rows
`--experts 8 --k 2 --strategy param --router oracle,similarity`.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_KNOBTABLE_H
#define MOESCOPE_KNOBTABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/Partition.h"
#include "core/Router.h"
#include "util/Status.h"

/* One setting of every knob; copied by value into jobs. */
typedef struct Knobs {
    int E;                      /* experts */
    int k;                      /* experts per token, 1 <= k <= E */
    PartitionStrategy strategy; /* random | param | coact */
    RouterKind router;          /* similarity | mlp | sigmoid | oracle */
    double tau;                 /* activity threshold, used when target < 0 */
    double target;              /* target sparsity q in [0, 1] (tau per layer); < 0: off */
    unsigned long seed;         /* partitions and the mlp router */
    double test_fraction;       /* held-out fraction (SPEC §2 splits) */
} Knobs;

typedef enum KnobId {
    KNOB_E = 0,
    KNOB_K,
    KNOB_STRATEGY,
    KNOB_ROUTER,
    KNOB_TAU,
    KNOB_TARGET,
    KNOB_SEED,
    KNOB_TEST,
    KNOB_COUNT,
} KnobId;

typedef enum KnobType {
    KNOB_INT = 0,
    KNOB_REAL,
    KNOB_CHOICE, /* value is the index into choices */
} KnobType;

typedef struct KnobDef {
    KnobId id;
    const char *name;  /* as typed in --set and the : prompt */
    const char *title; /* as shown in the knob panel */
    KnobType type;
    double min, max;   /* inclusive */
    double step;       /* + / - (see KnobTable_step for the ladders) */
    double def;        /* default */
    const char *unit;  /* "" when none */
    const char *help;  /* one sentence */
    const char *const *choices; /* KNOB_CHOICE: names, value = index */
    int n_choices;
    double (*get)(const Knobs *k);
    void (*apply)(Knobs *k, double value); /* value already in range */
} KnobDef;

/* The table; id order. */
const KnobDef *KnobTable_def(KnobId id);

/* By name (exact, or case-insensitive when unambiguous); NULL when unknown. */
const KnobDef *KnobTable_find(const char *name);

/* "E, k, strategy, ..." for messages. */
const char *KnobTable_names(void);

void Knobs_default(Knobs *k);

double Knobs_get(const Knobs *k, KnobId id);

/* Sets a knob (clamped into its range; k is kept <= E by lowering k, or raising E when
   k is set above it). */
void Knobs_set(Knobs *k, KnobId id, double value);

/* Parses a value for def: numbers, choice names, "off" for the target. MS_ERR_RANGE with
   one sentence when it is not a value of the knob or outside its range. */
MsStatus KnobTable_parseValue(const KnobDef *def, const char *text, double *value,
                              char **cause);

/* "NAME=VALUE" (also "NAME VALUE"): parses and sets. */
MsStatus Knobs_assign(Knobs *k, const char *assignment, char **cause);

/* One step up (dir > 0) or down. E moves along the candidates (the divisors of d_ff and
   the powers of two, see KnobTable_expertCandidates) when given, else by 1; tau along a
   1-2-5 ladder; the target along 0.5 ... 0.95, 0.99, 0.999 and "off" below 0.5; choices
   wrap around. */
void Knobs_step(Knobs *k, KnobId id, int dir, const int *e_candidates, int n_candidates);

/* The value as shown ("8", "param", "0.05", "off"). */
void Knobs_format(const Knobs *k, KnobId id, char *buf, size_t size);

/* The tau this knob setting means for a layer whose target tau is tau_q (ignored when the
   target is off). */
double Knobs_tau(const Knobs *k, double tau_q);

/* E values offered first for a layer of d_ff neurons: the divisors of d_ff, then the
   powers of two below d_ff, ascending without duplicates, at most max. Returns the count. */
int KnobTable_expertCandidates(int d_ff, int *out, int max);

#endif
