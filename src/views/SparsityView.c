/*
moescope - views/SparsityView.c
The Sparsity screen (see SparsityView.h): two histograms side by side, the tau curve
below.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/SparsityView.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/XUtils.h"
#include "views/Plot.h"

enum { FREQ_BINS = 20 };

/* Neuron frequency histogram: [0] dead, [1..FREQ_BINS] (0, 1) in equal bins, [last] always
   active. */
static void freqHistogram(const Cells *unused, const Sparsity *s, double *bins) {
    (void)unused;
    memset(bins, 0, (FREQ_BINS + 2) * sizeof *bins);
    for (int j = 0; j < s->N; j++) {
        double f = s->neuron_freq[j];
        int b;
        if (f <= 0)
            b = 0;
        else if (f >= 1)
            b = FREQ_BINS + 1;
        else {
            b = 1 + (int)(f * FREQ_BINS);
            if (b > FREQ_BINS)
                b = FREQ_BINS;
        }
        bins[b]++;
    }
}

static void drawFreq(Cells *c, int x, int y, int w, int h, const Sparsity *s,
                     const Glyphs *g) {
    double bins[FREQ_BINS + 2];
    freqHistogram(c, s, bins);
    double vmax = 0;
    for (int i = 0; i < FREQ_BINS + 2; i++)
        vmax = bins[i] > vmax ? bins[i] : vmax;
    long dead = (long)bins[0], always = (long)bins[FREQ_BINS + 1];
    Cells_printf(c, x, y, w, ROLE_HEADER, "Neuron activity frequency (N=%d)", s->N);
    Cells_printf(c, x, y + 1, w, ROLE_NORMAL, "dead %ld  always-on %ld  peak bin %.0f", dead,
                 always, vmax);
    int bw = (w - 2) / (FREQ_BINS + 2);
    if (bw < 1)
        bw = 1;
    int ch = h - 4;
    if (ch < 1)
        return;
    /* dead and always-on bars stand apart in their own role */
    Plot_bars(c, x, y + 2, bw, ch, bins, 1, vmax, ROLE_BAR_ALT, g);
    Plot_bars(c, x + bw, y + 2, bw, ch, bins + 1, FREQ_BINS, vmax, ROLE_BAR, g);
    Plot_bars(c, x + bw * (FREQ_BINS + 1), y + 2, bw, ch, bins + FREQ_BINS + 1, 1, vmax,
              ROLE_BAR_ALT, g);
    int ly = y + 2 + ch;
    Cells_fill(c, x, ly, bw * (FREQ_BINS + 2), g->hline, ROLE_DIM);
    Cells_text(c, x, ly + 1, 4, ROLE_DIM, "dead");
    Cells_text(c, x + bw * (FREQ_BINS + 2) / 2 - 1, ly + 1, 3, ROLE_DIM, "0.5");
    Cells_textRight(c, x, ly + 1, bw * (FREQ_BINS + 2), ROLE_DIM, "all");
}

static void drawPerToken(Cells *c, int x, int y, int w, int h, const Sparsity *s,
                         const Glyphs *g) {
    int N = s->N;
    int nb = w - 2 < N + 1 ? w - 2 : N + 1;
    if (nb < 1)
        return;
    double *bins = xCalloc((size_t)nb, sizeof(double));
    long lo = N, hi = 0;
    for (long t = 0; t < s->T; t++) {
        long a = s->token_active[t];
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
    }
    if (hi < lo)
        lo = hi = 0;
    double span = (double)(hi - lo + 1);
    for (long t = 0; t < s->T; t++) {
        int b = (int)((s->token_active[t] - lo) / span * nb);
        bins[b < nb ? b : nb - 1]++;
    }
    double vmax = 0;
    for (int i = 0; i < nb; i++)
        vmax = bins[i] > vmax ? bins[i] : vmax;
    Cells_text(c, x, y, w, ROLE_HEADER, "Active neurons per token");
    Cells_printf(c, x, y + 1, w, ROLE_NORMAL, "mean %.1f of %d  min %ld  max %ld",
                 s->active_per_token_mean, N, lo, hi);
    int ch = h - 4;
    if (ch >= 1) {
        Plot_bars(c, x, y + 2, 1, ch, bins, nb, vmax, ROLE_BAR, g);
        int ly = y + 2 + ch;
        Cells_fill(c, x, ly, nb, g->hline, ROLE_DIM);
        char a[32], b[32];
        snprintf(a, sizeof a, "%ld", lo);
        snprintf(b, sizeof b, "%ld", hi);
        Cells_text(c, x, ly + 1, 8, ROLE_DIM, a);
        Cells_textRight(c, x, ly + 1, nb, ROLE_DIM, b);
    }
    free(bins);
}

static void drawCurve(Cells *c, int x, int y, int w, int h, const ViewContext *ctx, float tau) {
    AnStatus st;
    const AnCurve *cv = Analysis_curve(ctx->an, ctx->layer, &st);
    if (!cv) {
        View_missing(c, x, y, w, ctx, &st, "tau curve");
        return;
    }
    double *xs = xMallocArray((size_t)cv->n, sizeof(double));
    for (int i = 0; i < cv->n; i++)
        xs[i] = cv->taus[i];
    PlotSeries series = {"sparsity", '*', ROLE_SERIES2, xs, cv->sparsity, cv->n};
    char vlabel[48];
    snprintf(vlabel, sizeof vlabel, "tau %.4g", (double)tau);
    Plot p = {.title = "Sparsity against tau (fraction of |h| <= tau)",
              .xlabel = "tau",
              .xmin = 0,
              .xmax = cv->taus[cv->n - 1],
              .ymin = 0,
              .ymax = 1,
              .series = &series,
              .n_series = 1,
              .vline = tau,
              .vlabel = vlabel,
              .marks = false};
    Plot_draw(c, x, y, w, h, &p, ctx->g);
    free(xs);
}

void SparsityView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                         int w, int h) {
    scroll->rows = h;
    scroll->lines = h;
    scroll->top = 0;
    AnStatus st;
    float tau = 0;
    bool have_tau = Analysis_tau(ctx->an, ctx->layer, ctx->knobs, &tau, &st);
    const Sparsity *s = have_tau ? Analysis_sparsity(ctx->an, ctx->layer, ctx->knobs, &st) : NULL;
    if (!s) {
        View_missing(c, x + 1, y, w - 2, ctx, &st, "sparsity");
    } else {
        Cells_printf(c, x + 1, y, w - 2, ROLE_KNOB_VALUE,
                     "tau %.4g%s: sparsity %.4f  active/token %.2f  dead %.4f",
                     (double)tau, ctx->knobs->target >= 0 ? " (target)" : "",
                     s->sparsity, s->active_per_token_mean, s->dead_fraction);
    }
    int top_h = (h - 1) / 2;
    if (top_h < 6)
        top_h = 6;
    if (s) {
        int half = (w - 3) / 2;
        drawFreq(c, x + 1, y + 1, half, top_h, s, ctx->g);
        drawPerToken(c, x + 2 + half, y + 1, w - half - 3, top_h, s, ctx->g);
    }
    int cy = y + 1 + top_h;
    if (h - 1 - top_h >= 5)
        drawCurve(c, x + 1, cy, w - 2, h - 1 - top_h, ctx, tau);
}
