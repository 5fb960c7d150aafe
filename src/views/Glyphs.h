/*
moescope - views/Glyphs.h
The two glyph tables (after htop's CRT_treeStrAscii/Utf8): Unicode box drawing, blocks
and braille when the locale is UTF-8, plain ASCII otherwise or with --ascii. Chosen once
at startup; views never test the locale themselves. Meaning never rests on colour alone:
markers are letters, stale values carry a ~, the sorted column an arrow.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_GLYPHS_H
#define MOESCOPE_GLYPHS_H

#include <stdbool.h>

typedef struct Glyphs {
    bool utf8;
    bool braille;             /* plots draw braille lines */
    const char *hline, *vline;
    const char *tl, *tr, *bl, *br; /* box corners */
    const char *cross_bottom; /* axis corner */
    const char *hblocks[9];   /* horizontal bar eighths, [0] empty .. [8] full */
    const char *vblocks[9];   /* vertical bar eighths */
    const char *shades[5];    /* heat levels, [0] none .. [4] strongest */
    const char *up, *down;    /* sort direction */
    const char *ellipsis;
    const char *stale;        /* prefix of a stale value */
    const char *pending;      /* a value being computed */
    const char *spinner[4];
    const char *dot;          /* plot line point (ASCII plots) */
    const char *tau_mark;     /* the current tau on the curve */
    const char *bullet;
    const char *times;        /* "x" in 4.0x */
} Glyphs;

const Glyphs *Glyphs_get(bool utf8);

#endif
