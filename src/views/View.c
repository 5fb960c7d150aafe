/*
moescope - views/View.c
Number cells with fresh / stale / pending / failed states, bars and section titles.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/View.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double View_number(Cells *c, int x, int y, int w, const ViewContext *ctx, ViewValue *slot,
                   bool have_now, double now, const AnStatus *st, const char *fmt) {
    char buf[64];
    if (have_now) {
        if (slot) {
            slot->value = now;
            slot->have = true;
        }
        if (isnan(now))
            snprintf(buf, sizeof buf, "n/a");
        else
            snprintf(buf, sizeof buf, fmt, now);
        Cells_textRight(c, x, y, w, ROLE_NORMAL, buf);
        return now;
    }
    if (st && st->state == AN_FAILED) {
        Cells_textRight(c, x, y, w, ROLE_ERROR, "error");
        return NAN;
    }
    if (slot && slot->have) {
        char num[48];
        if (isnan(slot->value))
            snprintf(num, sizeof num, "n/a");
        else
            snprintf(num, sizeof num, fmt, slot->value);
        snprintf(buf, sizeof buf, "%s%s", ctx->g->stale, num);
        Cells_textRight(c, x, y, w, ROLE_STALE, buf);
        return slot->value;
    }
    const char *mark = st && st->state == AN_RUNNING ? ctx->g->spinner[ctx->tick % 4]
                                                      : ctx->g->pending;
    Cells_textRight(c, x, y, w, ROLE_PENDING, mark);
    return NAN;
}

void View_missing(Cells *c, int x, int y, int w, const ViewContext *ctx, const AnStatus *st,
                  const char *what) {
    if (st && st->state == AN_FAILED) {
        Cells_printf(c, x, y, w, ROLE_ERROR, "%s: %s", what, st->error ? st->error : "failed");
    } else if (st && st->state == AN_RUNNING) {
        Cells_printf(c, x, y, w, ROLE_PENDING, "%s computing %s %3.0f%%",
                     ctx->g->spinner[ctx->tick % 4], what, 100 * st->progress);
    } else {
        Cells_printf(c, x, y, w, ROLE_PENDING, "%s %s: waiting", ctx->g->pending, what);
    }
}

void View_hbar(Cells *c, int x, int y, int w, double fraction, int role, const Glyphs *g) {
    if (!(fraction > 0))
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    int eighths = (int)floor(fraction * w * 8 + 0.5);
    for (int i = 0; i < w; i++) {
        int e = eighths - i * 8;
        e = e < 0 ? 0 : e > 8 ? 8 : e;
        Cells_text(c, x + i, y, 1, e ? role : ROLE_DIM, e ? g->hblocks[e] : " ");
    }
}

void View_section(Cells *c, int x, int y, int w, const char *title, const Glyphs *g) {
    int n = Cells_text(c, x, y, w, ROLE_HEADER, title);
    if (n + 1 < w)
        Cells_fill(c, x + n + 1, y, w - n - 1, g->hline, ROLE_DIM);
}

void ViewScroll_by(ViewScroll *this, int delta) {
    this->top += delta;
    if (this->top > this->lines - this->rows)
        this->top = this->lines - this->rows;
    if (this->top < 0)
        this->top = 0;
}
