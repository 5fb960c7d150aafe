/*
moescope - views/RouterView.c
The Router screen (see RouterView.h): recall@k and output error against k for the
oracle and the three routers of the current strategy, the error of the top-K neuron
bound at the same number of active neurons, and a table at the current k.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/RouterView.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/Eval.h"
#include "core/NeuronBound.h"
#include "util/XUtils.h"
#include "views/Plot.h"

static const RouterKind kinds[] = {ROUTER_ORACLE, ROUTER_SIMILARITY, ROUTER_MLP,
                                   ROUTER_SIGMOID};
static const char marks[] = {'o', 's', 'm', 'g', 'n'};
enum { KINDS = 4 };

void RouterView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                       int w, int h) {
    scroll->rows = h;
    scroll->lines = h;
    scroll->top = 0;
    const Knobs *k = ctx->knobs;
    const DumpLayer *info = Analysis_layer(ctx->an, ctx->layer);
    int E = k->E;
    if (E > info->d_ff) {
        Cells_printf(c, x + 1, y, w - 2, ROLE_ERROR, "E = %d is more than d_ff = %d", E,
                     info->d_ff);
        return;
    }
    /* Every k up to 512 experts; beyond, 512 evenly spaced k (Eval_metrics is O(E)). */
    int P = E <= 512 ? E : 512;
    double *xs = xMallocArray((size_t)P, sizeof(double));
    double *rec = xMallocArray((size_t)(KINDS + 1) * (size_t)P, sizeof(double));
    double *err = xMallocArray((size_t)(KINDS + 1) * (size_t)P, sizeof(double));
    const Eval *ev[KINDS];
    AnStatus st[KINDS + 1];
    for (int e = 0; e < P; e++)
        xs[e] = P == E ? e + 1 : floor(1 + (double)e * (E - 1) / (P - 1) + 0.5);
    for (int i = 0; i < KINDS; i++) {
        ev[i] = Analysis_eval(ctx->an, ctx->layer, k, kinds[i], &st[i]);
        for (int e = 0; e < P; e++) {
            EvalMetrics m;
            if (ev[i])
                Eval_metrics(ev[i], (int)xs[e], &m);
            rec[i * P + e] = ev[i] ? m.mass_recall : NAN;
            err[i * P + e] = ev[i] ? m.output_rel_err : NAN;
        }
    }
    const NeuronBound *b = Analysis_bound(ctx->an, ctx->layer, k, &st[KINDS]);
    for (int e = 0; e < P; e++) {
        rec[KINDS * P + e] = NAN;
        err[KINDS * P + e] = b ? NeuronBound_errorAt(b, E, (int)xs[e], NULL) : NAN;
    }
    PlotSeries rs[KINDS], es[KINDS + 1];
    int roles[] = {ROLE_SERIES1, ROLE_SERIES2, ROLE_SERIES3, ROLE_SERIES4, ROLE_SERIES5};
    for (int i = 0; i < KINDS + 1; i++) {
        const char *name = i < KINDS ? RouterKind_name(kinds[i]) : "top-K neurons";
        if (i < KINDS)
            rs[i] = (PlotSeries){name, marks[i], roles[i], xs, rec + i * P, P};
        es[i] = (PlotSeries){name, marks[i], roles[i], xs, err + i * P, P};
    }
    double emax = 0;
    for (int i = 0; i < (KINDS + 1) * P; i++)
        if (isfinite(err[i]) && err[i] > emax)
            emax = err[i];
    if (emax <= 0)
        emax = 1;
    int table_h = KINDS + 3;
    int plot_h = h - table_h;
    bool side = w >= 150;
    int pw = side ? (w - 3) / 2 : w - 2;
    int ph = side ? plot_h : plot_h / 2;
    char vl[32];
    snprintf(vl, sizeof vl, "k=%d", k->k);
    Plot recall = {.title = "Mass recall@k", .xlabel = "k", .xmin = 1, .xmax = E > 1 ? E : 2,
                   .ymin = 0, .ymax = 1, .series = rs, .n_series = KINDS, .vline = k->k,
                   .vlabel = vl, .marks = E <= 64};
    Plot error = {.title = "Output rel. error", .xlabel = "k", .xmin = 1, .xmax = E > 1 ? E : 2,
                  .ymin = 0, .ymax = emax, .series = es, .n_series = KINDS + 1,
                  .vline = k->k, .vlabel = vl, .marks = E <= 64};
    if (ph >= 6) {
        Plot_draw(c, x + 1, y, pw, ph, &recall, ctx->g);
        if (side)
            Plot_draw(c, x + 2 + pw, y, pw, ph, &error, ctx->g);
        else
            Plot_draw(c, x + 1, y + ph, pw, plot_h - ph, &error, ctx->g);
    }
    /* The table at the current k. */
    int ty = y + plot_h;
    Cells_printf(c, x + 1, ty, w - 2, ROLE_HEADER, "%-15s %9s %9s %9s %9s %9s  (k=%d of E=%d, %s)",
                 "router", "recall", "overlap", "err", "load max", "flops", k->k, E,
                 Partition_strategyName(k->strategy));
    for (int i = 0; i < KINDS + 1; i++) {
        int ry = ty + 1 + i;
        const char *name = i < KINDS ? RouterKind_name(kinds[i]) : "top-K neurons";
        Cells_printf(c, x + 1, ry, 16, roles[i], "%c %s%s", marks[i], name,
                     i < KINDS && kinds[i] == k->router ? "*" : "");
        if (i == KINDS) {
            long K = 0;
            double e = b ? NeuronBound_errorAt(b, E, k->k, &K) : NAN;
            View_number(c, x + 37, ry, 9, ctx, NULL, b != NULL, e, &st[KINDS], "%.4f");
            if (b)
                Cells_printf(c, x + 48, ry, 30, ROLE_DIM, "K = %ld neurons", K);
            continue;
        }
        EvalMetrics m;
        if (ev[i])
            Eval_metrics(ev[i], k->k, &m);
        bool have = ev[i] != NULL;
        View_number(c, x + 17, ry, 9, ctx, NULL, have, have ? m.mass_recall : NAN, &st[i], "%.4f");
        View_number(c, x + 27, ry, 9, ctx, NULL, have, have ? m.overlap : NAN, &st[i], "%.4f");
        View_number(c, x + 37, ry, 9, ctx, NULL, have, have ? m.output_rel_err : NAN, &st[i],
                    "%.4f");
        View_number(c, x + 47, ry, 9, ctx, NULL, have, have ? m.load_max_over_mean : NAN, &st[i],
                    "%.3f");
        View_number(c, x + 57, ry, 9, ctx, NULL, have, have ? m.flops_fraction : NAN, &st[i],
                    "%.4f");
    }
    free(xs);
    free(rec);
    free(err);
}
