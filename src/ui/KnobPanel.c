/*
moescope - ui/KnobPanel.c
The knob panel (see KnobPanel.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#include "ui/KnobPanel.h"

#include <curses.h>
#include <stdio.h>
#include <string.h>

#include "ui/CRT.h"

KnobPanelResult KnobPanel_key(KnobPanel *this, Knobs *k, int key, const int *cand, int n) {
    Knobs before = *k;
    switch (key) {
    case CRT_FN(KEY_UP):
    case 'k':
        this->sel = (this->sel + KNOB_COUNT - 1) % KNOB_COUNT;
        return KNOBPANEL_REDRAW;
    case CRT_FN(KEY_DOWN):
    case 'j':
    case '\t':
        this->sel = (this->sel + 1) % KNOB_COUNT;
        return KNOBPANEL_REDRAW;
    case CRT_FN(KEY_HOME):
        this->sel = 0;
        return KNOBPANEL_REDRAW;
    case CRT_FN(KEY_END):
        this->sel = KNOB_COUNT - 1;
        return KNOBPANEL_REDRAW;
    case CRT_FN(KEY_LEFT):
    case 'h':
    case '-':
    case CRT_FN(KEY_F(7)):
        Knobs_step(k, (KnobId)this->sel, -1, cand, n);
        break;
    case CRT_FN(KEY_RIGHT):
    case 'l':
    case '+':
    case CRT_FN(KEY_F(8)):
        Knobs_step(k, (KnobId)this->sel, +1, cand, n);
        break;
    case '=':
        Knobs_set(k, (KnobId)this->sel, KnobTable_def((KnobId)this->sel)->def);
        break;
    case '\r':
    case '\n':
    case CRT_FN(KEY_ENTER):
        return KNOBPANEL_TYPE;
    case 27:
    case 'q':
    case 'O':
    case CRT_FN(KEY_F(2)):
        this->open = false;
        return KNOBPANEL_CLOSE;
    default:
        return KNOBPANEL_NONE;
    }
    return memcmp(&before, k, sizeof before) ? KNOBPANEL_CHANGED : KNOBPANEL_REDRAW;
}

static void range(const KnobDef *d, char *buf, size_t size) {
    if (d->type == KNOB_CHOICE) {
        buf[0] = '\0';
        for (int i = 0; i < d->n_choices; i++)
            snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? " " : "", d->choices[i]);
    } else if (d->id == KNOB_TARGET) {
        snprintf(buf, size, "off, 0..1");
    } else if (d->id == KNOB_TAU) {
        snprintf(buf, size, ">= 0");
    } else {
        snprintf(buf, size, "%g..%g", d->min, d->max);
    }
}

void KnobPanel_render(const KnobPanel *this, const Knobs *k, Cells *c, int x, int y, int w,
                      int h, const Glyphs *g, const char *e_hint) {
    int pw = w - 4 < 76 ? w - 4 : 76;
    int ph = KNOB_COUNT + 7;
    if (ph > h)
        ph = h;
    int px = x + (w - pw) / 2, py = y + (h - ph) / 2;
    Cells_box(c, px, py, pw, ph, ROLE_PANEL);
    /* frame */
    Cells_fill(c, px, py, pw, g->hline, ROLE_BORDER);
    Cells_fill(c, px, py + ph - 1, pw, g->hline, ROLE_BORDER);
    for (int r = 0; r < ph; r++) {
        Cells_text(c, px, py + r, 1, ROLE_BORDER, g->vline);
        Cells_text(c, px + pw - 1, py + r, 1, ROLE_BORDER, g->vline);
    }
    Cells_text(c, px, py, 1, ROLE_BORDER, g->tl);
    Cells_text(c, px + pw - 1, py, 1, ROLE_BORDER, g->tr);
    Cells_text(c, px, py + ph - 1, 1, ROLE_BORDER, g->bl);
    Cells_text(c, px + pw - 1, py + ph - 1, 1, ROLE_BORDER, g->br);
    Cells_text(c, px + 2, py, pw - 4, ROLE_HEADER, " Knobs ");
    Cells_textFit(c, px + 2, py + 1, pw - 4, ROLE_DIM,
                  "Up/Down select  Left/Right or -/+ change  Enter type  = default  Esc close",
                  g->ellipsis);
    for (int i = 0; i < KNOB_COUNT && 2 + i < ph - 4; i++) {
        const KnobDef *d = KnobTable_def((KnobId)i);
        int ry = py + 2 + i;
        char v[48], r[96], def[48];
        Knobs_format(k, (KnobId)i, v, sizeof v);
        range(d, r, sizeof r);
        Knobs dk;
        Knobs_default(&dk);
        Knobs_format(&dk, (KnobId)i, def, sizeof def);
        Cells_printf(c, px + 2, ry, 20, ROLE_KNOB, "%-19s", d->title);
        Cells_printf(c, px + 22, ry, 12, ROLE_KNOB_VALUE, "%s", v);
        Cells_printf(c, px + 35, ry, pw - 37, ROLE_DIM, "%s (default %s)", r, def);
        if (i == this->sel) {
            Cells_paint(c, px + 1, ry, pw - 2, ROLE_CURSOR);
            Cells_text(c, px + 1, ry, 1, ROLE_CURSOR, ">");
        }
    }
    const KnobDef *d = KnobTable_def((KnobId)this->sel);
    Cells_textFit(c, px + 2, py + ph - 3, pw - 4, ROLE_NORMAL, d->help, g->ellipsis);
    if (this->sel == KNOB_E && e_hint)
        Cells_textFit(c, px + 2, py + ph - 2, pw - 4, ROLE_DIM, e_hint, g->ellipsis);
    else if (this->sel == KNOB_TAU && k->target >= 0)
        Cells_textFit(c, px + 2, py + ph - 2, pw - 4, ROLE_WARN,
                      "The target is on: tau is set per layer (set target off to use tau).",
                      g->ellipsis);
}
