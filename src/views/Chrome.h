/*
moescope - views/Chrome.h
What surrounds every screen: the title bar (program, model, files, screen tabs), the knob
line, the activity line (what is computing, how much is queued), the message line and
htop's function-key bar at the bottom; and the message shown instead of a layout when
the terminal is too small.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CHROME_H
#define MOESCOPE_CHROME_H

#include "jobs/Analysis.h"
#include "jobs/KnobTable.h"
#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct ChromeKey {
    const char *key;   /* "F1" */
    const char *label; /* "Help" */
} ChromeKey;

typedef struct ChromeInfo {
    const char *model;       /* may be NULL */
    const char *files;       /* "a.h5, b.h5" */
    const char *const *tabs; /* screen names */
    int n_tabs;
    int tab;                 /* current screen */
    const char *where;       /* "layer 3 layers.3.feed_forward" or NULL */
    const Knobs *knobs;
    int selected_knob;       /* the knob + and - change, or -1 */
    AnActivity activity;
    unsigned tick;
    const char *message;     /* message line, or NULL */
    int message_role;
    const ChromeKey *keys;
    int n_keys;
} ChromeInfo;

/* Rows the chrome takes at the top and at the bottom. */
enum { CHROME_TOP = 3, CHROME_BOTTOM = 2 };

/* Draws the top rows and the bottom rows of c. */
void Chrome_render(Cells *c, const ChromeInfo *info, const Glyphs *g);

/* The knob line alone at row y (also used by the knob panel's preview). */
void Chrome_knobLine(Cells *c, int y, const Knobs *k, int selected, const Glyphs *g);

/* The too-small message filling c. */
void Chrome_tooSmall(Cells *c, int min_w, int min_h);

#endif
