/*
moescope - jobs/Analysis.h
The UI's cache of per-layer computations, filled by worker threads on demand.

A view asks for what it shows (the sparsity of layer 3 at the current knobs, the Eval of
layer 3's similarity router, ...). A getter returns the result when it is cached; when it
is not, it records the demand (and, recursively, the demand for its inputs: the layer's
data, the partition, the router ...) and returns NULL with the state of the work. Work
whose inputs are ready is queued at once, in the order it was first asked for in the
frame, so what the screen shows first runs first.

DESIGN
- Frames: the UI thread brackets every render with Analysis_beginFrame / _endFrame.
  Work that no view asked for in a frame is dropped from the queues or canceled when
  it runs (a newer knob setting asks for other keys, so it cancels older work); results
  that did complete stay cached under their key, so going back to a knob setting
  shows it at once.
- Keys hold every knob a result depends on and nothing else (a random partition does
  not depend on tau, so changing tau keeps it), with the same parameters as
  `moescope --batch` (ui/Batch.c): partitions with the seed, param with 30 iterations,
  routers with SPEC's options, seed and 30 mlp epochs, evaluation on the test split, MEO
  blocks of 64 tokens, so the numbers equal the batch CSV's.
- Workers only read their inputs (pinned in the cache while the job runs) and write
  their own entry's result; the UI thread installs results in Analysis_collect. HDF5
  reads run on the one I/O thread.
- Large results (layer data, co-activation counts) are evicted least recently used
  beyond a memory budget; they are recomputed when asked for again.
- Tasks (Analysis_runTask) are the caller's jobs in the same pool, reading cached results
  it pins for their duration; their outcome comes back through a callback on the UI thread.
Every function here is for the UI thread only.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ANALYSIS_H
#define MOESCOPE_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/Coact.h"
#include "core/Eval.h"
#include "core/Meo.h"
#include "core/MoeKernel.h"
#include "core/NeuronBound.h"
#include "core/Sparsity.h"
#include "io/Dump.h"
#include "jobs/KnobTable.h"
#include "jobs/LayerLoad.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef enum AnState {
    AN_IDLE = 0, /* not computed and not under way (e.g. canceled, or paused) */
    AN_QUEUED,
    AN_RUNNING,
    AN_DONE,
    AN_FAILED,
} AnState;

typedef struct AnStatus {
    AnState state;
    double progress;   /* AN_RUNNING: 0..1 */
    const char *error; /* AN_FAILED: one sentence, owned by the Analysis */
} AnStatus;

/* The tau -> sparsity curve of a layer. */
typedef struct AnCurve {
    int n;
    float *taus;        /* [n] ascending, taus[0] = 0 */
    double *sparsity;   /* [n] */
} AnCurve;

typedef struct AnPartition {
    int N, E;
    int32_t *part;      /* [N] */
    int fallback_random;
    int *sizes;         /* [E] */
} AnPartition;

/* The co-activation matrix as a size x size picture with neurons ordered by expert:
   cell (r, c) is the mean phi coefficient (the correlation of the two neurons' 0/1
   activity over the train tokens) over the block of neuron pairs it covers. */
typedef struct AnHeat {
    int size;
    float *cells;       /* [size][size], in [-1, 1] (NaN: no variance) */
    float max;          /* largest off-diagonal cell */
    int E;
    int *bounds;        /* [E + 1] first cell row of each expert (bounds[E] = size) */
} AnHeat;

typedef struct AnActivity {
    int queued, running;
    const char *label;  /* one running job ("coact layer 3"), or NULL */
    double progress;
    long done;          /* jobs finished so far */
    bool paused;
} AnActivity;

typedef struct Analysis Analysis;

/* threads: compute threads (the I/O thread comes on top). dump stays the caller's and
   must outlive the Analysis; from now on only the I/O thread calls HDF5 on it.
   NULL with *cause when the threads cannot start. */
Analysis *Analysis_new(Dump *dump, int threads, char **cause);

/* Cancels everything, joins the threads, frees every result. NULL does nothing. */
void Analysis_delete(Analysis *this);

/* poll() this; when readable call Analysis_collect. */
int Analysis_fd(const Analysis *this);

/* Installs finished results; true when anything changed (redraw). */
bool Analysis_collect(Analysis *this);

void Analysis_beginFrame(Analysis *this);
void Analysis_endFrame(Analysis *this);

/* Stops (true) or resumes starting queued work. */
void Analysis_pause(Analysis *this, bool paused);

/* Cancels all work under way (what is asked for again is redone). */
void Analysis_cancelAll(Analysis *this);

void Analysis_activity(Analysis *this, AnActivity *out);

/* The memory budget of cached results (default a third of physical memory, at least
   256 MiB); layers load ahead of the computation only within half of it. */
void Analysis_setBudget(Analysis *this, size_t bytes);

/* Bytes of cached results now, and the budget. */
void Analysis_memory(const Analysis *this, size_t *used, size_t *budget);

/* Up to max running jobs: their labels (valid until the next Analysis_collect) and
   progress in [0, 1]. Returns how many. */
int Analysis_running(Analysis *this, const char **labels, double *progress, int max);

/* Failure sentences not yet shown, oldest first; NULL when none. The caller frees. */
char *Analysis_takeMessage(Analysis *this);

int Analysis_layerCount(const Analysis *this);
const DumpLayer *Analysis_layer(const Analysis *this, int layer);
Dump *Analysis_dump(const Analysis *this);

/* The getters: the result, or NULL with *st telling why (st may be NULL). layer is the
   position in the Dump. Results stay valid until the next Analysis_endFrame. */
const LayerLoad *Analysis_load(Analysis *this, int layer, AnStatus *st);

/* The tau this knob setting uses on layer (the target's quantile when the target is on). */
bool Analysis_tau(Analysis *this, int layer, const Knobs *k, float *tau, AnStatus *st);

const Sparsity *Analysis_sparsity(Analysis *this, int layer, const Knobs *k, AnStatus *st);
const AnCurve *Analysis_curve(Analysis *this, int layer, AnStatus *st);
const Coact *Analysis_coact(Analysis *this, int layer, const Knobs *k, AnStatus *st);

/* Partition of k->strategy, k->E, k->seed (and tau, test fraction for coact). */
const AnPartition *Analysis_partition(Analysis *this, int layer, const Knobs *k,
                                      AnStatus *st);

/* Router metrics on the test split for the partition above and router `kind`. */
const Eval *Analysis_eval(Analysis *this, int layer, const Knobs *k, RouterKind kind,
                          AnStatus *st);

/* Intra-expert co-activation of the partition above. */
bool Analysis_intra(Analysis *this, int layer, const Knobs *k, double *out, AnStatus *st);

/* The top-K neuron bound on the test split. */
const NeuronBound *Analysis_bound(Analysis *this, int layer, const Knobs *k, AnStatus *st);

/* MEO's sequence-level figures at kk (1 <= kk <= E) for router `kind`. */
const MeoMetrics *Analysis_meo(Analysis *this, int layer, const Knobs *k, RouterKind kind,
                               int kk, AnStatus *st);

/* Measured speedup of the MoE kernel at k->k for router `kind`. */
const MoeSpeedup *Analysis_speed(Analysis *this, int layer, const Knobs *k, RouterKind kind,
                                 AnStatus *st);

/* The co-activation picture (size 4..256) for the partition above. */
const AnHeat *Analysis_heat(Analysis *this, int layer, const Knobs *k, int size,
                            AnStatus *st);

/* Writes the partitions of k (strategy, E) of every layer that has one computed to path
   (HDF5, the layout of `moescope --batch --partitions`), on the I/O thread. The outcome
   comes back as a message. Returns the number of layers queued for writing (0: none
   computed yet, nothing written). */
int Analysis_savePartitions(Analysis *this, const Knobs *k, const char *path);

/* The partitions (k->strategy, k->E) not computed yet, asked for as a side effect. */
int Analysis_missingPartitions(Analysis *this, const Knobs *k);

/* Tasks: the caller's own work on the compute threads (drawing figures from cached
   results), shown on the jobs line and canceled by Analysis_cancelAll like the cache's. */

/* Runs on a compute thread; reads what its ctx holds and the results it pinned, checks
   cancel between steps and may report progress through it. */
typedef MsStatus (*AnTaskRunFn)(void *ctx, const Cancel *cancel, char **cause);

/* Runs on the UI thread once the task is over: from Analysis_collect, or with
   MS_ERR_CANCELED and cause NULL from Analysis_cancelAll (when it had not started) or
   Analysis_delete (whatever it did). The Analysis forgets the task then; ctx stays the
   caller's. */
typedef void (*AnTaskDoneFn)(void *ctx, MsStatus status, const char *cause);

/* Queues run(ctx) ahead of the cache's work, labelled label ("figures layer 3").
   pins[0..n_pins-1] (at most 8) are results the getters returned in this frame (NULL
   ones are ignored) that run reads: they stay cached and unchanged until done is called. */
void Analysis_runTask(Analysis *this, const char *label, AnTaskRunFn run, AnTaskDoneFn done,
                      void *ctx, const void *const *pins, int n_pins);

#endif
