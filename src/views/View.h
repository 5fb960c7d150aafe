/*
moescope - views/View.h
What every screen renderer gets (the analysis cache, the knobs, the glyph table, the
layer a detail screen shows) and the shared ways of showing a number that may be fresh,
stale (from older knobs: "~0.3537" in the stale role), being computed or failed.
Views run on the UI thread only; they read the cache and, by reading, ask for what they
show (jobs/Analysis.h).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_VIEW_H
#define MOESCOPE_VIEW_H

#include <stdbool.h>

#include "jobs/Analysis.h"
#include "jobs/KnobTable.h"
#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct ViewContext {
    Analysis *an;
    const Knobs *knobs;
    const Glyphs *g;
    int layer;        /* the layer detail screens show (position in the dump) */
    unsigned tick;    /* advances while work runs, for spinners */
} ViewContext;

/* Scrolling state of a screen taller than the terminal. */
typedef struct ViewScroll {
    int top;   /* first line shown */
    int lines; /* lines of the last render */
    int rows;  /* rows shown */
} ViewScroll;

void ViewScroll_by(ViewScroll *this, int delta);

/* A value slot that remembers the last fresh value, to show it as stale while the
   current knobs' value is computed. */
typedef struct ViewValue {
    double value;
    bool have;        /* value holds something shown before */
} ViewValue;

/* Shows fmt(value) right-aligned in [x, x + w): fresh when have_now (and remembers it in
   slot), else the slot's value with the stale prefix, else a spinner / pending mark /
   "error" from st. slot may be NULL. Returns the value shown (NaN when none). */
double View_number(Cells *c, int x, int y, int w, const ViewContext *ctx, ViewValue *slot,
                   bool have_now, double now, const AnStatus *st, const char *fmt);

/* "computing <what> 42%" / "waiting" / the error, for a panel whose data is missing. */
void View_missing(Cells *c, int x, int y, int w, const ViewContext *ctx, const AnStatus *st,
                  const char *what);

/* A horizontal bar of fraction in [0, 1] over w cells (eighths in UTF-8). */
void View_hbar(Cells *c, int x, int y, int w, double fraction, int role, const Glyphs *g);

/* A title line: "text" in the header role then a rule to the right. */
void View_section(Cells *c, int x, int y, int w, const char *title, const Glyphs *g);

#endif
