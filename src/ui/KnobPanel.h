/*
moescope - ui/KnobPanel.h
The knob panel (F2 / O), generated from jobs/KnobTable: one row per knob with its value,
range and default, the selected knob's help below. Up/Down select, Left/Right or - / +
step, Enter types a value, = resets to the default, Esc / q / F2 close. Every change
applies at once (the screens recompute behind the panel).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_KNOBPANEL_H
#define MOESCOPE_KNOBPANEL_H

#include <stdbool.h>

#include "jobs/KnobTable.h"
#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct KnobPanel {
    bool open;
    int sel; /* KnobId */
} KnobPanel;

typedef enum KnobPanelResult {
    KNOBPANEL_NONE = 0,
    KNOBPANEL_REDRAW,
    KNOBPANEL_CHANGED, /* a knob changed */
    KNOBPANEL_TYPE,    /* the caller opens a prompt for the selected knob */
    KNOBPANEL_CLOSE,
} KnobPanelResult;

/* e_candidates: the E values + and - move along (KnobTable_expertCandidates). */
KnobPanelResult KnobPanel_key(KnobPanel *this, Knobs *k, int key, const int *e_candidates,
                              int n_candidates);

/* Draws the panel centered in the rectangle; e_hint describes E's candidates. */
void KnobPanel_render(const KnobPanel *this, const Knobs *k, Cells *c, int x, int y, int w,
                      int h, const Glyphs *g, const char *e_hint);

#endif
