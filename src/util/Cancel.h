/*
moescope - util/Cancel.h
Cancellation and progress for work running in worker threads (tmux's generation idea):
the UI bumps a shared generation when a knob changes; a job remembers the generation it
was started for and stops between chunks once they differ. A NULL Cancel never cancels.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CANCEL_H
#define MOESCOPE_CANCEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct Cancel {
    const atomic_uint *generation; /* shared, bumped by the UI thread; NULL: never */
    unsigned mine;                 /* the generation this job belongs to */
    atomic_int *permille;          /* optional progress out, 0..1000 */
} Cancel;

static inline bool Cancel_requested(const Cancel *c) {
    return c && c->generation && atomic_load(c->generation) != c->mine;
}

/* Reports progress in [0, 1]; cheap enough to call per chunk. */
static inline void Cancel_progress(const Cancel *c, double fraction) {
    if (c && c->permille)
        atomic_store(c->permille, (int)(fraction * 1000.0 + 0.5));
}

#endif
