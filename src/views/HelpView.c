/*
moescope - views/HelpView.c
The help screen (see HelpView.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/HelpView.h"

#include <stdio.h>
#include <string.h>

#include "jobs/KnobTable.h"

static const char *const notes[] = {
    "Numbers are those of `moescope --batch` for the same knobs: the Layers screen of",
    "E 8, k 2, param, similarity equals --experts 8 --k 2 --strategy param",
    "--router oracle,similarity (seed 0, test fraction 0.1, evaluation on the test split).",
    "Recall is MoEfication's mass recall@k; err is the output relative error; flops the",
    "MoE/dense FLOPs fraction and speedup its inverse (ideal). A value shown as ~0.1234",
    "is from older knobs and is being recomputed; a spinner means work is under way.",
    "Work runs in background threads; keys never wait for it. Results are cached, so",
    "going back to earlier knobs is instant. Start with knobs set: --set E=16 --set k=4.",
    "NO_COLOR or --no-color: no colour; --ascii or a non-UTF-8 locale: ASCII only.",
};

/* One rendered line at row ry when line index li is in view. */
typedef struct HelpCursor {
    Cells *c;
    int x, y, w, h;
    int top;
    int li;
} HelpCursor;

static int row(HelpCursor *wr) {
    int r = wr->li - wr->top;
    wr->li++;
    return r >= 0 && r < wr->h ? wr->y + r : -1;
}

static void section(HelpCursor *wr, const char *title, const Glyphs *g) {
    if (wr->li > 0)
        row(wr);
    int ry = row(wr);
    if (ry < 0)
        return;
    int n = Cells_text(wr->c, wr->x, ry, wr->w, ROLE_HEADER, title);
    Cells_fill(wr->c, wr->x + n + 1, ry, wr->w - n - 1, g->hline, ROLE_DIM);
}

void HelpView_render(HelpView *this, const HelpLine *keys, int n_keys, Cells *c, int x, int y,
                     int w, int h, const Glyphs *g) {
    Cells_box(c, x, y, w, h, ROLE_NORMAL);
    this->rows = h;
    if (this->top < 0)
        this->top = 0;
    HelpCursor wr = {c, x + 1, y, w - 2, h, this->top, 0};
    int kw = 16;
    for (int i = 0; i < n_keys; i++) {
        if (keys[i].section)
            section(&wr, keys[i].section, g);
        int ry = row(&wr);
        if (ry < 0)
            continue;
        Cells_text(c, wr.x + 1, ry, kw, ROLE_KNOB_VALUE, keys[i].keys);
        Cells_textFit(c, wr.x + kw + 2, ry, wr.w - kw - 2, ROLE_NORMAL, keys[i].text, g->ellipsis);
    }
    section(&wr, "Knobs (F2; or --set NAME=VALUE at start; or :NAME=VALUE)", g);
    for (int i = 0; i < KNOB_COUNT; i++) {
        const KnobDef *d = KnobTable_def((KnobId)i);
        Knobs def;
        Knobs_default(&def);
        char v[48];
        Knobs_format(&def, (KnobId)i, v, sizeof v);
        int ry = row(&wr);
        if (ry < 0)
            continue;
        char head[64];
        snprintf(head, sizeof head, "%s (%s)", d->name, v);
        Cells_text(c, wr.x + 1, ry, kw, ROLE_KNOB_VALUE, head);
        Cells_textFit(c, wr.x + kw + 2, ry, wr.w - kw - 2, ROLE_NORMAL, d->help, g->ellipsis);
    }
    section(&wr, "About the numbers", g);
    for (size_t i = 0; i < sizeof notes / sizeof *notes; i++) {
        int ry = row(&wr);
        if (ry >= 0)
            Cells_textFit(c, wr.x + 1, ry, wr.w - 1, ROLE_NORMAL, notes[i], g->ellipsis);
    }
    this->lines = wr.li;
    if (this->top > this->lines - h && this->lines > h) {
        /* clamp after a resize */
        this->top = this->lines - h;
    }
}

void HelpView_scroll(HelpView *this, int delta) {
    this->top += delta;
    int max = this->lines - this->rows;
    if (this->top > max)
        this->top = max;
    if (this->top < 0)
        this->top = 0;
}
