/*
moescope - views/PartitionView.c
The Partition screen (see PartitionView.h): the co-activation heatmap on the left, the
experts with their sizes and loads on the right, the three strategies compared below.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/PartitionView.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/Eval.h"

enum { COMPARE_ROWS = 5 };

static void drawHeat(Cells *c, int x, int y, int w, int h, const ViewContext *ctx) {
    int size = h - 2;
    if (size * 2 > w - 4)
        size = (w - 4) / 2;
    if (size < 4) {
        Cells_text(c, x, y, w, ROLE_DIM, "(no room for the heatmap)");
        return;
    }
    AnStatus st;
    const AnHeat *heat = Analysis_heat(ctx->an, ctx->layer, ctx->knobs, size, &st);
    Cells_text(c, x, y, w, ROLE_HEADER, "Co-activation by expert");
    if (!heat) {
        View_missing(c, x, y + 1, w, ctx, &st, "co-activation");
        return;
    }
    const Glyphs *g = ctx->g;
    int S = heat->size;
    float max = heat->max > 0 ? heat->max : 1;
    for (int r = 0; r < S; r++) {
        for (int q = 0; q < S; q++) {
            float v = heat->cells[r * S + q];
            int level = 0;
            /* square root scale: the weaker blocks stay visible next to a strong one */
            if (isfinite(v) && v > 0)
                level = 1 + (int)(sqrtf(v / max) * 3.999f);
            level = level > 4 ? 4 : level;
            int role = level ? ROLE_HEAT1 + level - 1 : ROLE_DIM;
            Cells_text(c, x + 3 + 2 * q, y + 1 + r, 1, role, g->shades[level]);
            Cells_text(c, x + 4 + 2 * q, y + 1 + r, 1, role, g->shades[level]);
        }
    }
    /* Expert ticks on the left: the expert's number where it starts, when there is room. */
    for (int e = 0; e < heat->E; e++) {
        int r = heat->bounds[e];
        if (r >= S)
            continue;
        const Cell *cell = Cells_at(c, x, y + 1 + r);
        if (cell && cell->ch != ' ')
            continue;
        char lab[16];
        snprintf(lab, sizeof lab, "%d", e);
        if ((int)strlen(lab) <= 2)
            Cells_textRight(c, x, y + 1 + r, 2, ROLE_DIM, lab);
        Cells_text(c, x + 2, y + 1 + r, 1, ROLE_MARK, g->vline);
    }
    char legend[96];
    snprintf(legend, sizeof legend, "%s%s%s%s 0..%.2f (sqrt scale)", g->shades[1],
             g->shades[2], g->shades[3], g->shades[4], (double)heat->max);
    Cells_text(c, x + 3, y + 1 + S, w - 3, ROLE_DIM, legend);
}

static void drawExperts(Cells *c, int x, int y, int w, int h, const ViewContext *ctx,
                        ViewScroll *scroll) {
    const Knobs *k = ctx->knobs;
    AnStatus st;
    const AnPartition *p = Analysis_partition(ctx->an, ctx->layer, k, &st);
    Cells_printf(c, x, y, w, ROLE_HEADER, "Experts: size, load at k=%d (%s)", k->k,
                 RouterKind_name(k->router));
    if (!p) {
        View_missing(c, x, y + 1, w, ctx, &st, "partition");
        return;
    }
    AnStatus est;
    const Eval *ev = Analysis_eval(ctx->an, ctx->layer, k, k->router, &est);
    double load[4096];
    bool have_load = ev && p->E <= 4096;
    if (have_load)
        Eval_loads(ev, k->k, load);
    double lmax = 0;
    for (int e = 0; have_load && e < p->E; e++)
        lmax = load[e] > lmax ? load[e] : lmax;
    int rows = h - 1;
    scroll->rows = rows;
    scroll->lines = p->E;
    ViewScroll_by(scroll, 0);
    int bar_w = w - 22;
    for (int r = 0; r < rows; r++) {
        int e = scroll->top + r;
        if (e >= p->E)
            break;
        int ry = y + 1 + r;
        Cells_printf(c, x, ry, 12, ROLE_NORMAL, "%4d %6d", e, p->sizes[e]);
        if (have_load) {
            Cells_printf(c, x + 12, ry, 8, ROLE_NORMAL, "%7.3f", load[e]);
            if (bar_w > 2)
                View_hbar(c, x + 21, ry, bar_w, lmax > 0 ? load[e] / lmax : 0, ROLE_BAR, ctx->g);
        } else if (r == 0) {
            View_missing(c, x + 13, ry, w - 13, ctx, &est, "loads");
        }
    }
    if (p->E > rows)
        Cells_printf(c, x, y + h - 1, w, ROLE_DIM, "experts %d-%d of %d (Up/Down)", scroll->top,
                     scroll->top + rows - 1 < p->E - 1 ? scroll->top + rows - 1 : p->E - 1, p->E);
}

static void drawCompare(Cells *c, int x, int y, int w, const ViewContext *ctx) {
    const Knobs *k = ctx->knobs;
    Cells_printf(c, x, y, w, ROLE_HEADER, "%-9s %10s %10s %10s %10s %10s", "E=", "intra",
                 "oracle@k", "router@k", "err", "load max");
    char e[16];
    snprintf(e, sizeof e, "E=%d k=%d", k->E, k->k);
    Cells_text(c, x, y, 9, ROLE_HEADER, e);
    static const PartitionStrategy strategies[] = {PARTITION_RANDOM, PARTITION_PARAM,
                                                   PARTITION_COACT};
    for (int i = 0; i < 3; i++) {
        Knobs kk = *k;
        kk.strategy = strategies[i];
        int ry = y + 1 + i;
        int role = strategies[i] == k->strategy ? ROLE_KNOB_VALUE : ROLE_NORMAL;
        Cells_printf(c, x, ry, 9, role, "%s%s", Partition_strategyName(strategies[i]),
                     strategies[i] == k->strategy ? "*" : "");
        AnStatus st;
        double intra = NAN;
        bool have = Analysis_intra(ctx->an, ctx->layer, &kk, &intra, &st);
        View_number(c, x + 10, ry, 10, ctx, NULL, have, intra, &st, "%.4f");
        const Eval *o = Analysis_eval(ctx->an, ctx->layer, &kk, ROUTER_ORACLE, &st);
        EvalMetrics m;
        if (o)
            Eval_metrics(o, k->k, &m);
        View_number(c, x + 21, ry, 10, ctx, NULL, o != NULL, o ? m.mass_recall : NAN, &st,
                    "%.4f");
        const Eval *r = Analysis_eval(ctx->an, ctx->layer, &kk, k->router, &st);
        if (r)
            Eval_metrics(r, k->k, &m);
        View_number(c, x + 32, ry, 10, ctx, NULL, r != NULL, r ? m.mass_recall : NAN, &st,
                    "%.4f");
        View_number(c, x + 43, ry, 10, ctx, NULL, r != NULL, r ? m.output_rel_err : NAN, &st,
                    "%.4f");
        View_number(c, x + 54, ry, 10, ctx, NULL, r != NULL, r ? m.load_max_over_mean : NAN,
                    &st, "%.3f");
    }
}

void PartitionView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                          int w, int h) {
    const Knobs *k = ctx->knobs;
    const DumpLayer *info = Analysis_layer(ctx->an, ctx->layer);
    AnStatus st;
    const AnPartition *p = Analysis_partition(ctx->an, ctx->layer, k, &st);
    double intra = NAN;
    AnStatus ist;
    bool have_intra = Analysis_intra(ctx->an, ctx->layer, k, &intra, &ist);
    int N = info->d_ff;
    double base = N > 1 ? (N / (double)k->E - 1) / (N - 1) : NAN;
    char line[256];
    int n = snprintf(line, sizeof line, "%s E=%d (G=%.1f): intra-expert co-activation ",
                     Partition_strategyName(k->strategy), k->E, N / (double)k->E);
    if (have_intra)
        snprintf(line + n, sizeof line - (size_t)n, "%.4f (uniform %.4f)%s", intra, base,
                 p && p->fallback_random ? "  no coact edges: random fallback" : "");
    else
        snprintf(line + n, sizeof line - (size_t)n, "%s",
                 ist.state == AN_FAILED ? "failed" : "...");
    Cells_text(c, x + 1, y, w - 2, ROLE_KNOB_VALUE, line);
    if (st.state == AN_FAILED) {
        View_missing(c, x + 1, y + 1, w - 2, ctx, &st, "partition");
        return;
    }
    int top_h = h - 1 - COMPARE_ROWS;
    int heat_w = 2 * (top_h - 2) + 6;
    if (heat_w > w / 2 + 6)
        heat_w = w / 2 + 6;
    drawHeat(c, x + 1, y + 1, heat_w, top_h, ctx);
    drawExperts(c, x + heat_w + 2, y + 1, w - heat_w - 3, top_h, ctx, scroll);
    drawCompare(c, x + 1, y + 1 + top_h + 1, w - 2, ctx);
}
