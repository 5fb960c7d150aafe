/*
moescope - views/LayersView.c
The Layers screen (see LayersView.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/LayersView.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/Cost.h"
#include "util/XUtils.h"

typedef struct ColumnDef {
    const char *name;
    int width;      /* 0: the name column takes what is left */
    const char *fmt;
} ColumnDef;

static const ColumnDef columns[LCOL_COUNT] = {
    [LCOL_INDEX] = {"#", 3, "%.0f"},
    [LCOL_NAME] = {"name", 0, NULL},
    [LCOL_DFF] = {"d_ff", 5, "%.0f"},
    [LCOL_TOKENS] = {"tokens", 7, "%.0f"},
    [LCOL_SPARSITY] = {"sparsity", 8, "%.4f"},
    [LCOL_TAU] = {"tau", 8, "%.4g"},
    [LCOL_ORACLE] = {"oracle", 8, "%.4f"},
    [LCOL_ROUTER] = {"router", 8, "%.4f"},
    [LCOL_ERR] = {"err", 7, "%.4f"},
    [LCOL_FLOPS] = {"flops", 6, "%.4f"},
    [LCOL_SPEEDUP] = {"speedup", 7, "%.2fx"},
};

const char *LayersView_columnName(LayersColumn col) {
    return (unsigned)col < LCOL_COUNT ? columns[col].name : "?";
}

void LayersView_init(LayersView *this, int n_layers) {
    memset(this, 0, sizeof *this);
    this->n = n_layers;
    this->order = xMallocArray((size_t)n_layers + 1, sizeof(int));
    for (int i = 0; i < n_layers; i++)
        this->order[i] = i;
    this->last = xCalloc((size_t)n_layers * LCOL_COUNT + 1, sizeof(ViewValue));
    this->sort = LCOL_INDEX;
    this->rows = 10;
}

void LayersView_done(LayersView *this) {
    free(this->order);
    free(this->last);
    memset(this, 0, sizeof *this);
}

static const char *routerShort(RouterKind k) {
    switch (k) {
    case ROUTER_SIMILARITY: return "simil";
    case ROUTER_SIGMOID: return "sigm";
    default: return RouterKind_name(k);
    }
}

/* The number in (layer, col) for the current knobs; *have false when not ready. */
static double cellValue(const ViewContext *ctx, int layer, LayersColumn col, bool *have,
                        AnStatus *st) {
    const DumpLayer *info = Analysis_layer(ctx->an, layer);
    const Knobs *k = ctx->knobs;
    *have = true;
    st->state = AN_DONE;
    st->error = NULL;
    st->progress = 0;
    switch (col) {
    case LCOL_INDEX: return info->index;
    case LCOL_NAME: return NAN;
    case LCOL_DFF: return info->d_ff;
    case LCOL_TOKENS: return (double)info->n_tokens;
    case LCOL_FLOPS:
        return Cost_flopsFraction(k->router, info->d_model, info->d_ff, k->E, k->k, info->gated);
    case LCOL_SPEEDUP:
        return Cost_idealSpeedup(k->router, info->d_model, info->d_ff, k->E, k->k, info->gated);
    default: break;
    }
    *have = false;
    if (col == LCOL_SPARSITY) {
        const Sparsity *s = Analysis_sparsity(ctx->an, layer, k, st);
        *have = s != NULL;
        return s ? s->sparsity : NAN;
    }
    if (col == LCOL_TAU) {
        float tau;
        *have = Analysis_tau(ctx->an, layer, k, &tau, st);
        return *have ? tau : NAN;
    }
    RouterKind kind = col == LCOL_ORACLE ? ROUTER_ORACLE : k->router;
    const Eval *ev = Analysis_eval(ctx->an, layer, k, kind, st);
    if (!ev)
        return NAN;
    EvalMetrics m;
    Eval_metrics(ev, k->k, &m);
    *have = true;
    return col == LCOL_ERR ? m.output_rel_err : m.mass_recall;
}

void LayersView_demand(LayersView *this, const ViewContext *ctx) {
    bool have;
    AnStatus st;
    static const LayersColumn asked[] = {LCOL_SPARSITY, LCOL_ORACLE, LCOL_ROUTER};
    int first = this->cursor;
    for (int i = 0; i < 3; i++)
        cellValue(ctx, first, asked[i], &have, &st);
    for (int pass = 0; pass < 2; pass++) {
        for (int r = 0; r < this->n; r++) {
            bool shown = r >= this->top && r < this->top + this->rows;
            if (shown != (pass == 0))
                continue;
            for (int i = 0; i < 3; i++)
                cellValue(ctx, this->order[r], asked[i], &have, &st);
        }
    }
}

/* The value a row sorts by: fresh, else stale, else NaN (sorted last). */
static double sortKey(LayersView *this, const ViewContext *ctx, int layer) {
    if (this->sort == LCOL_NAME)
        return NAN;
    bool have;
    AnStatus st;
    double v = cellValue(ctx, layer, this->sort, &have, &st);
    if (have)
        return v;
    ViewValue *slot = &this->last[layer * LCOL_COUNT + this->sort];
    return slot->have ? slot->value : NAN;
}

static int compareRows(LayersView *this, const ViewContext *ctx, const double *key, int a,
                       int b) {
    int c = 0;
    if (this->sort == LCOL_NAME) {
        c = strcmp(Analysis_layer(ctx->an, a)->name, Analysis_layer(ctx->an, b)->name);
    } else {
        double x = key[a], y = key[b];
        if (isnan(x) || isnan(y))
            return isnan(x) - isnan(y); /* missing last, whatever the direction */
        c = (x > y) - (x < y);
    }
    if (this->descending)
        c = -c;
    return c ? c : (a > b) - (a < b);
}

static void resort(LayersView *this, const ViewContext *ctx) {
    double *key = xMallocArray((size_t)this->n + 1, sizeof(double));
    for (int i = 0; i < this->n; i++) {
        key[i] = sortKey(this, ctx, i);
        this->order[i] = i;
    }
    /* Insertion sort: stable, and layer counts are small. */
    for (int i = 1; i < this->n; i++) {
        int v = this->order[i], j = i - 1;
        while (j >= 0 && compareRows(this, ctx, key, this->order[j], v) > 0) {
            this->order[j + 1] = this->order[j];
            j--;
        }
        this->order[j + 1] = v;
    }
    free(key);
}

static int cursorRow(const LayersView *this) {
    for (int r = 0; r < this->n; r++)
        if (this->order[r] == this->cursor)
            return r;
    return 0;
}

static void keepVisible(LayersView *this) {
    int row = cursorRow(this);
    int rows = this->rows > 0 ? this->rows : 1;
    if (row < this->top)
        this->top = row;
    if (row >= this->top + rows)
        this->top = row - rows + 1;
    if (this->top > this->n - rows)
        this->top = this->n - rows;
    if (this->top < 0)
        this->top = 0;
}

void LayersView_move(LayersView *this, int delta) {
    if (this->n == 0)
        return;
    int row = cursorRow(this) + delta;
    row = row < 0 ? 0 : row >= this->n ? this->n - 1 : row;
    this->cursor = this->order[row];
    keepVisible(this);
}

void LayersView_home(LayersView *this) {
    LayersView_move(this, -this->n);
}

void LayersView_end(LayersView *this) {
    LayersView_move(this, this->n);
}

void LayersView_sortBy(LayersView *this, LayersColumn col) {
    if ((unsigned)col >= LCOL_COUNT)
        return;
    if (this->sort == col) {
        this->descending = !this->descending;
    } else {
        this->sort = col;
        /* Quality columns read best first. */
        this->descending = col == LCOL_SPARSITY || col == LCOL_ORACLE || col == LCOL_ROUTER ||
                           col == LCOL_SPEEDUP;
    }
}

void LayersView_sortNext(LayersView *this, int dir) {
    int c = ((int)this->sort + (dir > 0 ? 1 : -1) + LCOL_COUNT) % LCOL_COUNT;
    this->sort = (LayersColumn)c;
}

static bool containsCase(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    if (n == 0)
        return true;
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

bool LayersView_find(LayersView *this, const ViewContext *ctx, const char *needle, int dir) {
    int row = cursorRow(this);
    for (int i = 1; i <= this->n; i++) {
        int r = ((row + (dir >= 0 ? i : -i)) % this->n + this->n) % this->n;
        const DumpLayer *info = Analysis_layer(ctx->an, this->order[r]);
        char idx[32];
        snprintf(idx, sizeof idx, "%d", info->index);
        if (containsCase(info->name, needle) || strcmp(idx, needle) == 0) {
            this->cursor = this->order[r];
            keepVisible(this);
            return true;
        }
    }
    return false;
}

const char *LayersView_rowError(LayersView *this, const ViewContext *ctx) {
    static const LayersColumn cols[] = {LCOL_SPARSITY, LCOL_ORACLE, LCOL_ROUTER};
    for (int i = 0; i < 3; i++) {
        bool have;
        AnStatus st;
        cellValue(ctx, this->cursor, cols[i], &have, &st);
        if (st.state == AN_FAILED)
            return st.error;
    }
    return NULL;
}

void LayersView_render(LayersView *this, const ViewContext *ctx, Cells *c, int x, int y, int w,
                       int h) {
    const Knobs *k = ctx->knobs;
    bool tau_col = k->target >= 0;
    int fixed = 0, shown = 0;
    for (int i = 0; i < LCOL_COUNT; i++) {
        if (i == LCOL_TAU && !tau_col)
            continue;
        fixed += columns[i].width;
        shown++;
    }
    int name_w = w - fixed - (shown - 1) - 1;
    if (tau_col && name_w < 10) {
        tau_col = false;
        fixed -= columns[LCOL_TAU].width + 1;
        name_w += columns[LCOL_TAU].width + 1;
    }
    if (name_w < 4)
        name_w = 4;
    int colx[LCOL_COUNT], colw[LCOL_COUNT];
    int cx = x + 1;
    for (int i = 0; i < LCOL_COUNT; i++) {
        colw[i] = i == LCOL_NAME ? name_w : columns[i].width;
        if (i == LCOL_TAU && !tau_col)
            colw[i] = 0;
        colx[i] = cx;
        if (colw[i])
            cx += colw[i] + 1;
    }

    this->rows = h - 1 > 1 ? h - 1 : 1;
    resort(this, ctx);
    keepVisible(this);

    /* Column headers. */
    Cells_box(c, x, y, w, 1, ROLE_HEADER);
    for (int i = 0; i < LCOL_COUNT; i++) {
        if (!colw[i])
            continue;
        char title[32];
        const char *name = columns[i].name;
        if (i == LCOL_ORACLE)
            snprintf(title, sizeof title, "oracle@%d", k->k);
        else if (i == LCOL_ROUTER)
            snprintf(title, sizeof title, "%s@%d", routerShort(k->router), k->k);
        else
            snprintf(title, sizeof title, "%s", name);
        bool sorted = (int)this->sort == i;
        char full[48];
        snprintf(full, sizeof full, "%s%s", title,
                 sorted ? (this->descending ? ctx->g->down : ctx->g->up) : "");
        int role = sorted ? ROLE_SORTED : ROLE_HEADER;
        if (i == LCOL_NAME)
            Cells_textFit(c, colx[i], y, colw[i], role, full, ctx->g->ellipsis);
        else
            Cells_textRight(c, colx[i], y, colw[i], role, full);
    }

    for (int r = 0; r < this->rows; r++) {
        int row = this->top + r;
        int ry = y + 1 + r;
        if (row >= this->n)
            break;
        int layer = this->order[row];
        const DumpLayer *info = Analysis_layer(ctx->an, layer);
        for (int i = 0; i < LCOL_COUNT; i++) {
            if (!colw[i])
                continue;
            if (i == LCOL_NAME) {
                Cells_textFit(c, colx[i], ry, colw[i], ROLE_NORMAL, info->name, ctx->g->ellipsis);
                continue;
            }
            bool have;
            AnStatus st;
            double v = cellValue(ctx, layer, (LayersColumn)i, &have, &st);
            View_number(c, colx[i], ry, colw[i], ctx, &this->last[layer * LCOL_COUNT + i], have,
                        v, &st, columns[i].fmt);
        }
        if (layer == this->cursor)
            Cells_paint(c, x, ry, w, ROLE_CURSOR);
    }
}
