/*
moescope - ui/CRT.h
The terminal (after htop's CRT.c): ncursesw setup and teardown, colours by role (one
table per scheme: monochrome, 8 and 256 colours), the glyph table (UTF-8 or ASCII, chosen
once), keys, signals and the stderr capture. The only module that includes curses.

The terminal is restored on every exit path: CRT_done on a normal quit or an error,
SIGINT / SIGTERM / SIGHUP turned into a byte on a self-pipe the loop polls (so they quit
through the normal path), and a handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT
that ends curses and then lets the previous handler (or the default action) run.
Call from the UI thread only.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CRT_H
#define MOESCOPE_CRT_H

#include <stdbool.h>

#include "util/Status.h"
#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct CrtOptions {
    bool ascii;    /* --ascii: ASCII glyphs whatever the locale */
    bool no_color; /* --no-color (NO_COLOR non-empty does the same) */
} CrtOptions;

/* Keys: characters are their code point; curses function keys are CRT_FN(KEY_x). */
#define CRT_FN(k) (0x40000000 | (k))
enum {
    CRT_KEY_NONE = -1,
    CRT_KEY_RESIZE = 0x7FFF0001,
};

/* setlocale, the stderr capture, curses, colours, signals. */
MsStatus CRT_init(const CrtOptions *opt, char **cause);

/* Ends curses and restores stderr, printing what was captured. Idempotent. */
void CRT_done(void);

const Glyphs *CRT_glyphs(void);
bool CRT_colors(void);   /* false: monochrome */
int CRT_colorCount(void);

/* Current terminal size. */
void CRT_size(int *w, int *h);

/* The next key, or CRT_KEY_NONE when none is waiting (never blocks). */
int CRT_readKey(void);

/* Draws every cell (roles mapped to the scheme) and updates the terminal. full clears the
   screen first (after a resize or ^L). */
void CRT_blit(const Cells *c, bool full);

/* Read end of the signal self-pipe (SIGINT, SIGTERM, SIGHUP); a byte per signal. */
int CRT_signalFd(void);

/* Returns the pending termination signal number (0 when none), draining the pipe. */
int CRT_takeSignal(void);

/* A short name for a key ("F1", "^C", "a", "Up"), for messages. */
void CRT_keyName(int key, char *buf, int size);

#endif
