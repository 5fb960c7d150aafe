/*
moescope - views/EstimatesView.c
The Estimates screen (see EstimatesView.h): the cost model of SPEC §5 at the current
knobs, the measured speedup of the real MoE kernel, MEO's sequence-level figures, and a
table over k (MEO columns fill in for the rows on screen).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/EstimatesView.h"

#include <math.h>
#include <stdio.h>

#include "core/Cost.h"
#include "core/Eval.h"
#include "views/Plot.h"

static void costLines(Cells *c, int x, int y, int w, const ViewContext *ctx,
                      const DumpLayer *info) {
    const Knobs *k = ctx->knobs;
    int d = info->d_model, N = info->d_ff;
    double dense = Cost_denseFlops(d, N, info->gated);
    double router = Cost_routerFlops(k->router, d, k->E);
    double moe = Cost_moeFlops(k->router, d, N, k->E, k->k, info->gated);
    char a[32], b[32], m[32];
    Plot_si(dense, a, sizeof a);
    Plot_si(router, b, sizeof b);
    Plot_si(moe, m, sizeof m);
    View_section(c, x, y, w, "Cost per token (multiply-add = 2 FLOPs)", ctx->g);
    Cells_printf(c, x + 1, y + 1, w - 1, ROLE_NORMAL,
                 "dense FFN %s FLOPs (d_model %d, d_ff %d, %s)", a, d, N,
                 info->gated ? "gated, 3 matrices" : "2 matrices");
    Cells_printf(c, x + 1, y + 2, w - 1, ROLE_NORMAL,
                 "MoE %s FLOPs = router %s%s + %d of %d experts of G = %.1f neurons", m, b,
                 k->router == ROUTER_ORACLE ? " (oracle: not realizable)" : "", k->k, k->E,
                 Cost_expertSize(N, k->E));
    Cells_printf(c, x + 1, y + 3, w - 1, ROLE_KNOB_VALUE,
                 "FLOPs fraction %.4f   ideal speedup %.2fx",
                 Cost_flopsFraction(k->router, d, N, k->E, k->k, info->gated),
                 Cost_idealSpeedup(k->router, d, N, k->E, k->k, info->gated));
    AnStatus st;
    const MoeSpeedup *sp = k->k <= k->E && k->E <= N
                               ? Analysis_speed(ctx->an, ctx->layer, k, k->router, &st)
                               : NULL;
    if (sp)
        Cells_printf(c, x + 1, y + 4, w - 1, ROLE_NORMAL,
                     "measured speedup: batch %.2fx  one token %.2fx (MoE kernel, wall time)",
                     sp->batch, sp->token);
    else
        View_missing(c, x + 1, y + 4, w - 1, ctx, &st, "measured speedup");
}

static void meoLines(Cells *c, int x, int y, int w, const ViewContext *ctx) {
    const Knobs *k = ctx->knobs;
    View_section(c, x, y, w, "MEO: one merged expert per sequence", ctx->g);
    AnStatus st;
    const MeoMetrics *m = Analysis_meo(ctx->an, ctx->layer, k, k->router, k->k, &st);
    if (!m) {
        View_missing(c, x + 1, y + 1, w - 1, ctx, &st, "MEO");
        return;
    }
    AnStatus est;
    const Eval *ev = Analysis_eval(ctx->an, ctx->layer, k, k->router, &est);
    EvalMetrics em;
    if (ev)
        Eval_metrics(ev, k->k, &em);
    Cells_printf(c, x + 1, y + 1, w - 1, ROLE_NORMAL,
                 "recall: per sequence %.4f, per token %.4f (%ld sequences of %.1f tokens)",
                 m->mass_recall, ev ? em.mass_recall : NAN, m->sequences, m->seq_len_mean);
    Cells_printf(c, x + 1, y + 2, w - 1, ROLE_NORMAL,
                 "error: experts unmerged %.4f; merged (sum) position %.4f aligned %.4f",
                 m->seqsel_output_rel_err, m->output_rel_err[MEO_GATES_SUM][MEO_SLOTS_POSITION],
                 m->output_rel_err[MEO_GATES_SUM][MEO_SLOTS_ALIGNED]);
    Cells_printf(c, x + 1, y + 3, w - 1, ROLE_NORMAL,
                 "merged (softmax) position %.4f aligned %.4f; MEO FLOPs fraction %.4f",
                 m->output_rel_err[MEO_GATES_SOFTMAX][MEO_SLOTS_POSITION],
                 m->output_rel_err[MEO_GATES_SOFTMAX][MEO_SLOTS_ALIGNED], m->flops_fraction);
}

static void kTable(Cells *c, int x, int y, int w, int h, const ViewContext *ctx,
                   const DumpLayer *info, ViewScroll *scroll) {
    const Knobs *k = ctx->knobs;
    View_section(c, x, y, w, "Over k", ctx->g);
    Cells_printf(c, x + 1, y + 1, w - 1, ROLE_HEADER, "%4s %9s %9s %9s %9s %9s %9s %9s", "k",
                 "flops", "ideal", "recall", "err", "MEO rec", "MEO err", "MEO flops");
    if (k->E > info->d_ff)
        return;
    AnStatus st;
    const Eval *ev = Analysis_eval(ctx->an, ctx->layer, k, k->router, &st);
    int rows = h - 2;
    scroll->rows = rows;
    scroll->lines = k->E;
    ViewScroll_by(scroll, 0);
    for (int r = 0; r < rows; r++) {
        int kk = scroll->top + r + 1;
        if (kk > k->E)
            break;
        int ry = y + 2 + r;
        int role = kk == k->k ? ROLE_KNOB_VALUE : ROLE_NORMAL;
        Cells_printf(c, x + 1, ry, 4, role, "%4d", kk);
        double ff = Cost_flopsFraction(k->router, info->d_model, info->d_ff, k->E, kk, info->gated);
        Cells_printf(c, x + 6, ry, 9, role, "%9.4f", ff);
        Cells_printf(c, x + 16, ry, 9, role, "%8.2fx", 1 / ff);
        EvalMetrics m;
        if (ev)
            Eval_metrics(ev, kk, &m);
        View_number(c, x + 26, ry, 9, ctx, NULL, ev != NULL, ev ? m.mass_recall : NAN, &st, "%.4f");
        View_number(c, x + 36, ry, 9, ctx, NULL, ev != NULL, ev ? m.output_rel_err : NAN, &st,
                    "%.4f");
        AnStatus ms;
        const MeoMetrics *meo = Analysis_meo(ctx->an, ctx->layer, k, k->router, kk, &ms);
        View_number(c, x + 46, ry, 9, ctx, NULL, meo != NULL, meo ? meo->mass_recall : NAN, &ms,
                    "%.4f");
        View_number(c, x + 56, ry, 9, ctx, NULL, meo != NULL,
                    meo ? meo->output_rel_err[MEO_GATES_SUM][MEO_SLOTS_POSITION] : NAN, &ms,
                    "%.4f");
        View_number(c, x + 66, ry, 9, ctx, NULL, meo != NULL, meo ? meo->flops_fraction : NAN, &ms,
                    "%.4f");
    }
}

void EstimatesView_render(ViewScroll *scroll, const ViewContext *ctx, Cells *c, int x, int y,
                          int w, int h) {
    const DumpLayer *info = Analysis_layer(ctx->an, ctx->layer);
    const Knobs *k = ctx->knobs;
    if (k->E > info->d_ff) {
        Cells_printf(c, x + 1, y, w - 2, ROLE_ERROR, "E = %d is more than d_ff = %d", k->E,
                     info->d_ff);
        return;
    }
    costLines(c, x + 1, y, w - 2, ctx, info);
    meoLines(c, x + 1, y + 6, w - 2, ctx);
    kTable(c, x + 1, y + 11, w - 2, h - 11, ctx, info, scroll);
}
