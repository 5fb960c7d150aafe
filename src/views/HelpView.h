/*
moescope - views/HelpView.h
The help screen, generated from the UI's key binding table and the knob table: every key
with what it does, every knob with its range, default and meaning, and how the numbers
relate to `moescope --batch`.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_HELPVIEW_H
#define MOESCOPE_HELPVIEW_H

#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct HelpLine {
    const char *section; /* non-NULL starts a new section */
    const char *keys;    /* "F1 ?" */
    const char *text;
} HelpLine;

typedef struct HelpView {
    int top;   /* first line shown */
    int lines; /* total lines of the last render */
    int rows;  /* rows shown */
} HelpView;

/* Draws the help (keys, then knobs, then notes) into the rectangle, scrolled by top. */
void HelpView_render(HelpView *this, const HelpLine *keys, int n_keys, Cells *c, int x, int y,
                     int w, int h, const Glyphs *g);

void HelpView_scroll(HelpView *this, int delta);

#endif
