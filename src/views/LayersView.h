/*
moescope - views/LayersView.h
The home screen: one row per layer with its shape and, for the current knobs, sparsity,
oracle and router mass recall@k, the router's output relative error, the FLOPs fraction
and the ideal speedup (the numbers of `moescope --batch` for the same knobs). Sortable by
any column; the cursor follows its layer through re-sorts; values of older knobs stay
visible, marked stale, until the new ones arrive.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_LAYERSVIEW_H
#define MOESCOPE_LAYERSVIEW_H

#include <stdbool.h>

#include "views/View.h"

typedef enum LayersColumn {
    LCOL_INDEX = 0,
    LCOL_NAME,
    LCOL_DFF,
    LCOL_TOKENS,
    LCOL_SPARSITY,
    LCOL_TAU,
    LCOL_ORACLE,
    LCOL_ROUTER,
    LCOL_ERR,
    LCOL_FLOPS,
    LCOL_SPEEDUP,
    LCOL_COUNT,
} LayersColumn;

typedef struct LayersView {
    int n;              /* layers */
    int cursor;         /* the layer (position in the dump) under the cursor */
    int top;            /* first row shown */
    int rows;           /* rows shown by the last render (for page moves) */
    LayersColumn sort;
    bool descending;
    int *order;         /* [n] layer positions in display order */
    ViewValue *last;    /* [n][LCOL_COUNT] */
} LayersView;

void LayersView_init(LayersView *this, int n_layers);
void LayersView_done(LayersView *this);

/* Asks for every layer's numbers, cursor row first, then the rows on screen, then the
   rest (so work runs in that order). */
void LayersView_demand(LayersView *this, const ViewContext *ctx);

/* Draws into the rectangle. Also re-sorts. */
void LayersView_render(LayersView *this, const ViewContext *ctx, Cells *c, int x, int y, int w,
                       int h);

/* Cursor moves by rows (clamped); page = rows shown. */
void LayersView_move(LayersView *this, int delta);
void LayersView_home(LayersView *this);
void LayersView_end(LayersView *this);

/* Sort by column (the same column again flips the direction). */
void LayersView_sortBy(LayersView *this, LayersColumn col);
void LayersView_sortNext(LayersView *this, int dir);

/* Moves the cursor to the next (dir > 0) or previous layer whose name or index contains
   needle (case-insensitive), starting after the cursor; false when none. */
bool LayersView_find(LayersView *this, const ViewContext *ctx, const char *needle, int dir);

const char *LayersView_columnName(LayersColumn col);

/* The error sentence of the cursor row, if its numbers failed (for the status line). */
const char *LayersView_rowError(LayersView *this, const ViewContext *ctx);

#endif
