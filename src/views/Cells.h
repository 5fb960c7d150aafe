/*
moescope - views/Cells.h
A grid of character cells, each a Unicode code point and a role (what the cell means:
a header, a stale value, a plot series...). Views render into it; the UI maps roles to
colours and blits it to the terminal, tests and text dumps read it back as UTF-8. Every
glyph a view writes is one column wide (box drawing, blocks, braille, ASCII).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CELLS_H
#define MOESCOPE_CELLS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum CellRole {
    ROLE_NORMAL = 0,
    ROLE_DIM,           /* secondary text: units, hints */
    ROLE_TITLE,         /* the top bar */
    ROLE_HEADER,        /* column headers */
    ROLE_SORTED,        /* the sorted column's header */
    ROLE_CURSOR,        /* the cursor row */
    ROLE_STALE,         /* a value from older knobs, shown with a ~ */
    ROLE_PENDING,       /* not computed yet */
    ROLE_ERROR,
    ROLE_OK,
    ROLE_WARN,
    ROLE_KNOB,          /* a knob's name */
    ROLE_KNOB_VALUE,
    ROLE_KNOB_SELECTED, /* the knob + and - change */
    ROLE_FKEY,          /* "F1" in the function bar */
    ROLE_FLABEL,        /* its label */
    ROLE_STATUS,        /* the message line */
    ROLE_BAR,
    ROLE_BAR_ALT,
    ROLE_SERIES1,
    ROLE_SERIES2,
    ROLE_SERIES3,
    ROLE_SERIES4,
    ROLE_SERIES5,
    ROLE_HEAT1,         /* weakest */
    ROLE_HEAT2,
    ROLE_HEAT3,
    ROLE_HEAT4,         /* strongest */
    ROLE_MARK,          /* markers: the current tau, expert boundaries */
    ROLE_BORDER,
    ROLE_PANEL,         /* a modal panel's background */
    ROLE_COUNT,
} CellRole;

typedef struct Cell {
    uint32_t ch;
    uint8_t role;
} Cell;

typedef struct Cells {
    int w, h;
    Cell *cells; /* [h][w] */
} Cells;

void Cells_init(Cells *this, int w, int h);
void Cells_done(Cells *this);

/* New size; contents cleared. */
void Cells_resize(Cells *this, int w, int h);

/* Spaces with ROLE_NORMAL. */
void Cells_clear(Cells *this);

/* Out-of-range positions are ignored. */
void Cells_set(Cells *this, int x, int y, uint32_t ch, int role);
const Cell *Cells_at(const Cells *this, int x, int y);

/* Writes UTF-8 text from (x, y), at most maxw columns (< 0: to the right edge), one
   column per code point; returns the columns written. Control characters become '?'. */
int Cells_text(Cells *this, int x, int y, int maxw, int role, const char *utf8);

int Cells_printf(Cells *this, int x, int y, int maxw, int role, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Right-aligned in the columns [x, x + w): returns the first column used. */
int Cells_textRight(Cells *this, int x, int y, int w, int role, const char *utf8);

/* Text that does not fit in maxw columns ends with the ellipsis glyph instead. */
int Cells_textFit(Cells *this, int x, int y, int maxw, int role, const char *utf8,
                  const char *ellipsis);

/* n cells of ch (a UTF-8 glyph) from (x, y). */
void Cells_fill(Cells *this, int x, int y, int n, const char *glyph, int role);

/* Sets the role of n cells from (x, y), keeping their characters. */
void Cells_paint(Cells *this, int x, int y, int n, int role);

/* A rectangle cleared to spaces of role. */
void Cells_box(Cells *this, int x, int y, int w, int h, int role);

/* The grid as UTF-8 text, one line per row, trailing spaces removed (malloc'ed). */
char *Cells_toText(const Cells *this);

/* Number of code points of a UTF-8 string (its width here). */
int Cells_width(const char *utf8);

/* Decodes one code point from *s, advancing it; invalid bytes give U+FFFD. */
uint32_t Cells_decode(const char **s);

#endif
