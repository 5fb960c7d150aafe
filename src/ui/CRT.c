/*
moescope - ui/CRT.c
Terminal setup and teardown, colour schemes, blitting, keys and signals (see CRT.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#ifndef NCURSES_WIDECHAR
#define NCURSES_WIDECHAR 1
#endif
#include "ui/CRT.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <wchar.h>

#include "util/XUtils.h"

typedef struct RoleStyle {
    short fg, bg;  /* -1: terminal default */
    attr_t attr;
} RoleStyle;

/* Readable on dark and light backgrounds: the default background everywhere, colour as
   background for bars (black on cyan / green), foregrounds only in mid-tone colours. */
static const RoleStyle colors8[ROLE_COUNT] = {
    [ROLE_NORMAL] = {-1, -1, A_NORMAL},
    [ROLE_DIM] = {-1, -1, A_DIM},
    [ROLE_TITLE] = {COLOR_BLACK, COLOR_GREEN, A_NORMAL},
    [ROLE_HEADER] = {COLOR_BLACK, COLOR_GREEN, A_NORMAL},
    [ROLE_SORTED] = {COLOR_BLACK, COLOR_CYAN, A_BOLD},
    [ROLE_CURSOR] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL},
    [ROLE_STALE] = {-1, -1, A_DIM},
    [ROLE_PENDING] = {-1, -1, A_DIM},
    [ROLE_ERROR] = {COLOR_RED, -1, A_BOLD},
    [ROLE_OK] = {COLOR_GREEN, -1, A_NORMAL},
    [ROLE_WARN] = {COLOR_MAGENTA, -1, A_BOLD},
    [ROLE_KNOB] = {-1, -1, A_NORMAL},
    [ROLE_KNOB_VALUE] = {-1, -1, A_BOLD},
    [ROLE_KNOB_SELECTED] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL},
    [ROLE_FKEY] = {-1, -1, A_NORMAL},
    [ROLE_FLABEL] = {COLOR_BLACK, COLOR_CYAN, A_NORMAL},
    [ROLE_STATUS] = {-1, -1, A_NORMAL},
    [ROLE_BAR] = {COLOR_GREEN, -1, A_NORMAL},
    [ROLE_BAR_ALT] = {COLOR_BLUE, -1, A_NORMAL},
    [ROLE_SERIES1] = {COLOR_RED, -1, A_BOLD},
    [ROLE_SERIES2] = {COLOR_BLUE, -1, A_BOLD},
    [ROLE_SERIES3] = {COLOR_GREEN, -1, A_BOLD},
    [ROLE_SERIES4] = {COLOR_MAGENTA, -1, A_BOLD},
    [ROLE_SERIES5] = {COLOR_CYAN, -1, A_BOLD},
    [ROLE_HEAT1] = {COLOR_BLUE, -1, A_NORMAL},
    [ROLE_HEAT2] = {COLOR_CYAN, -1, A_NORMAL},
    [ROLE_HEAT3] = {COLOR_MAGENTA, -1, A_NORMAL},
    [ROLE_HEAT4] = {COLOR_RED, -1, A_BOLD},
    [ROLE_MARK] = {COLOR_RED, -1, A_BOLD},
    [ROLE_BORDER] = {-1, -1, A_NORMAL},
    [ROLE_PANEL] = {-1, -1, A_NORMAL},
};

/* 256 colours: the same roles with a smoother heat ramp and softer bars. */
static const RoleStyle colors256[ROLE_COUNT] = {
    [ROLE_NORMAL] = {-1, -1, A_NORMAL},
    [ROLE_DIM] = {244, -1, A_NORMAL},
    [ROLE_TITLE] = {16, 71, A_NORMAL},
    [ROLE_HEADER] = {16, 108, A_NORMAL},
    [ROLE_SORTED] = {16, 74, A_BOLD},
    [ROLE_CURSOR] = {16, 74, A_NORMAL},
    [ROLE_STALE] = {244, -1, A_NORMAL},
    [ROLE_PENDING] = {67, -1, A_NORMAL},
    [ROLE_ERROR] = {160, -1, A_BOLD},
    [ROLE_OK] = {28, -1, A_NORMAL},
    [ROLE_WARN] = {127, -1, A_BOLD},
    [ROLE_KNOB] = {-1, -1, A_NORMAL},
    [ROLE_KNOB_VALUE] = {-1, -1, A_BOLD},
    [ROLE_KNOB_SELECTED] = {16, 74, A_NORMAL},
    [ROLE_FKEY] = {-1, -1, A_NORMAL},
    [ROLE_FLABEL] = {16, 74, A_NORMAL},
    [ROLE_STATUS] = {-1, -1, A_NORMAL},
    [ROLE_BAR] = {71, -1, A_NORMAL},
    [ROLE_BAR_ALT] = {67, -1, A_NORMAL},
    [ROLE_SERIES1] = {160, -1, A_BOLD},
    [ROLE_SERIES2] = {26, -1, A_BOLD},
    [ROLE_SERIES3] = {28, -1, A_BOLD},
    [ROLE_SERIES4] = {127, -1, A_BOLD},
    [ROLE_SERIES5] = {30, -1, A_BOLD},
    [ROLE_HEAT1] = {67, -1, A_NORMAL},
    [ROLE_HEAT2] = {72, -1, A_NORMAL},
    [ROLE_HEAT3] = {172, -1, A_NORMAL},
    [ROLE_HEAT4] = {160, -1, A_NORMAL},
    [ROLE_MARK] = {160, -1, A_BOLD},
    [ROLE_BORDER] = {244, -1, A_NORMAL},
    [ROLE_PANEL] = {-1, -1, A_NORMAL},
};

/* No colour: attributes only (htop's monochrome scheme). */
static const attr_t mono[ROLE_COUNT] = {
    [ROLE_NORMAL] = A_NORMAL,
    [ROLE_DIM] = A_DIM,
    [ROLE_TITLE] = A_REVERSE,
    [ROLE_HEADER] = A_REVERSE,
    [ROLE_SORTED] = A_BOLD,
    [ROLE_CURSOR] = A_REVERSE,
    [ROLE_STALE] = A_DIM,
    [ROLE_PENDING] = A_DIM,
    [ROLE_ERROR] = A_BOLD,
    [ROLE_OK] = A_NORMAL,
    [ROLE_WARN] = A_BOLD,
    [ROLE_KNOB] = A_NORMAL,
    [ROLE_KNOB_VALUE] = A_BOLD,
    [ROLE_KNOB_SELECTED] = A_REVERSE,
    [ROLE_FKEY] = A_NORMAL,
    [ROLE_FLABEL] = A_REVERSE,
    [ROLE_STATUS] = A_NORMAL,
    [ROLE_BAR] = A_NORMAL,
    [ROLE_BAR_ALT] = A_NORMAL,
    [ROLE_SERIES1] = A_BOLD,
    [ROLE_SERIES2] = A_BOLD,
    [ROLE_SERIES3] = A_BOLD,
    [ROLE_SERIES4] = A_BOLD,
    [ROLE_SERIES5] = A_BOLD,
    [ROLE_HEAT1] = A_NORMAL,
    [ROLE_HEAT2] = A_NORMAL,
    [ROLE_HEAT3] = A_NORMAL,
    [ROLE_HEAT4] = A_BOLD,
    [ROLE_MARK] = A_BOLD,
    [ROLE_BORDER] = A_NORMAL,
    [ROLE_PANEL] = A_NORMAL,
};

static struct {
    bool active;
    bool colors;
    int n_colors;
    const Glyphs *glyphs;
    attr_t attrs[ROLE_COUNT];
    short pairs[ROLE_COUNT];
    int sig_pipe[2];
    int saved_stderr;
    FILE *captured;
    struct sigaction old[32];
    cchar_t *line;
    int line_cap;
    SCREEN *screen;
} crt = {.sig_pipe = {-1, -1}, .saved_stderr = -1};

static const int fatalSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
static const int quitSignals[] = {SIGINT, SIGTERM, SIGHUP};

/* Ends curses from a signal handler: endwin is what htop calls here too; nothing else
   (no stdio, no allocation). */
static void fatalHandler(int sig, siginfo_t *info, void *uctx) {
    (void)uctx;
    if (crt.active) {
        crt.active = false;
        endwin();
    }
    if (crt.saved_stderr >= 0)
        dup2(crt.saved_stderr, STDERR_FILENO);
    /* Hand over to the previous handler (the sanitizer's, or the default action). A
       fault re-executes its instruction when we return; a signal that was sent (kill,
       abort) is raised again. */
    sigaction(sig, &crt.old[sig], NULL);
    if (sig == SIGABRT || !info || info->si_code <= 0)
        raise(sig);
}

static void quitHandler(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (crt.sig_pipe[1] >= 0 && write(crt.sig_pipe[1], &b, 1) < 0) {
        /* full pipe: a quit is already pending */
    }
    errno = saved;
}

static void installSignals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_sigaction = fatalHandler;
    sa.sa_flags = SA_NODEFER | SA_SIGINFO;
    for (size_t i = 0; i < sizeof fatalSignals / sizeof *fatalSignals; i++)
        sigaction(fatalSignals[i], &sa, &crt.old[fatalSignals[i]]);
    sa.sa_handler = quitHandler;
    sa.sa_flags = SA_RESTART; /* SA_SIGINFO off again: sa_handler is used */
    for (size_t i = 0; i < sizeof quitSignals / sizeof *quitSignals; i++)
        sigaction(quitSignals[i], &sa, &crt.old[quitSignals[i]]);
    signal(SIGPIPE, SIG_IGN);
}

static void restoreSignals(void) {
    for (size_t i = 0; i < sizeof fatalSignals / sizeof *fatalSignals; i++)
        sigaction(fatalSignals[i], &crt.old[fatalSignals[i]], NULL);
    for (size_t i = 0; i < sizeof quitSignals / sizeof *quitSignals; i++)
        sigaction(quitSignals[i], &crt.old[quitSignals[i]], NULL);
}

static bool localeIsUtf8(void) {
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

/* stderr goes to a temporary file while curses owns the terminal (htop does this). */
static void captureStderr(void) {
    crt.captured = tmpfile();
    if (!crt.captured)
        return;
    fflush(stderr);
    crt.saved_stderr = dup(STDERR_FILENO);
    if (crt.saved_stderr < 0 || dup2(fileno(crt.captured), STDERR_FILENO) < 0) {
        fclose(crt.captured);
        crt.captured = NULL;
    }
}

static void releaseStderr(void) {
    if (crt.saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(crt.saved_stderr, STDERR_FILENO);
    close(crt.saved_stderr);
    crt.saved_stderr = -1;
    if (!crt.captured)
        return;
    rewind(crt.captured);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, crt.captured)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(crt.captured);
    crt.captured = NULL;
}

static void setupColors(bool no_color) {
    const char *nc = getenv("NO_COLOR");
    crt.colors = !no_color && !(nc && *nc) && has_colors();
    crt.n_colors = 0;
    if (crt.colors && start_color() != OK)
        crt.colors = false;
    if (!crt.colors) {
        for (int r = 0; r < ROLE_COUNT; r++) {
            crt.attrs[r] = mono[r];
            crt.pairs[r] = 0;
        }
        return;
    }
    use_default_colors();
    crt.n_colors = COLORS;
    const RoleStyle *table = COLORS >= 256 && COLOR_PAIRS > ROLE_COUNT ? colors256 : colors8;
    for (int r = 0; r < ROLE_COUNT; r++) {
        crt.attrs[r] = table[r].attr;
        crt.pairs[r] = 0;
        if (table[r].fg == -1 && table[r].bg == -1)
            continue;
        if (r + 1 < COLOR_PAIRS && init_pair((short)(r + 1), table[r].fg, table[r].bg) == OK)
            crt.pairs[r] = (short)(r + 1);
    }
}

static void defineKeys(void);

MsStatus CRT_init(const CrtOptions *opt, char **cause) {
    setlocale(LC_ALL, "");
    bool utf8 = localeIsUtf8() && !opt->ascii;
    crt.glyphs = Glyphs_get(utf8);
    if (pipe(crt.sig_pipe) != 0) {
        setCause(cause, "cannot create the signal pipe: %s", strerror(errno));
        return MS_ERR_IO;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(crt.sig_pipe[i], F_SETFL, fcntl(crt.sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(crt.sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    if (!getenv("ESCDELAY"))
        set_escdelay(25);
    captureStderr();
    crt.screen = newterm(NULL, stdout, stdin);
    if (!crt.screen) {
        releaseStderr();
        setCause(cause, "cannot start the terminal UI (TERM=%s)",
                 getenv("TERM") ? getenv("TERM") : "unset");
        return MS_ERR_IO;
    }
    crt.active = true;
    installSignals();
    XUtils_setFailHook(CRT_done);
    defineKeys();
    raw();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    intrflush(stdscr, FALSE);
    curs_set(0);
    setupColors(opt->no_color);
    return MS_OK;
}

/* Sequences terminals send that their terminfo entry may not list (a TERM=xterm inside
   tmux or screen, rxvt, the Linux console), as htop does: without them a key would reach
   the UI as Esc plus characters. */
static void defineKeys(void) {
    static const struct {
        const char *seq;
        int key;
    } keys[] = {
        {"\033[1~", KEY_HOME}, {"\033[7~", KEY_HOME}, {"\033[H", KEY_HOME},
        {"\033OH", KEY_HOME},  {"\033[4~", KEY_END},  {"\033[8~", KEY_END},
        {"\033[F", KEY_END},   {"\033OF", KEY_END},   {"\033[Z", KEY_BTAB},
        {"\033[11~", KEY_F(1)}, {"\033[12~", KEY_F(2)}, {"\033[13~", KEY_F(3)},
        {"\033[14~", KEY_F(4)}, {"\033OP", KEY_F(1)},  {"\033OQ", KEY_F(2)},
        {"\033OR", KEY_F(3)},  {"\033OS", KEY_F(4)},  {"\033[[A", KEY_F(1)},
        {"\033[[B", KEY_F(2)}, {"\033[[C", KEY_F(3)}, {"\033[[D", KEY_F(4)},
        {"\033[[E", KEY_F(5)}, {"\033[A", KEY_UP},    {"\033[B", KEY_DOWN},
        {"\033[C", KEY_RIGHT}, {"\033[D", KEY_LEFT},  {"\033OA", KEY_UP},
        {"\033OB", KEY_DOWN},  {"\033OC", KEY_RIGHT}, {"\033OD", KEY_LEFT},
        {"\033[5~", KEY_PPAGE}, {"\033[6~", KEY_NPAGE}, {"\033[3~", KEY_DC},
    };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (key_defined(keys[i].seq) == 0)
            define_key(keys[i].seq, keys[i].key);
}

void CRT_done(void) {
    if (crt.active) {
        crt.active = false;
        curs_set(1);
        endwin();
        delscreen(crt.screen);
        crt.screen = NULL;
    }
    restoreSignals();
    releaseStderr();
    for (int i = 0; i < 2; i++) {
        if (crt.sig_pipe[i] >= 0)
            close(crt.sig_pipe[i]);
        crt.sig_pipe[i] = -1;
    }
    free(crt.line);
    crt.line = NULL;
    crt.line_cap = 0;
}

const Glyphs *CRT_glyphs(void) {
    return crt.glyphs ? crt.glyphs : Glyphs_get(false);
}

bool CRT_colors(void) {
    return crt.colors;
}

int CRT_colorCount(void) {
    return crt.n_colors;
}

void CRT_size(int *w, int *h) {
    *w = COLS;
    *h = LINES;
}

int CRT_readKey(void) {
    wint_t ch;
    int r = wget_wch(stdscr, &ch);
    if (r == ERR)
        return CRT_KEY_NONE;
    if (r == KEY_CODE_YES)
        return ch == KEY_RESIZE ? CRT_KEY_RESIZE : CRT_FN((int)ch);
    return (int)ch;
}

void CRT_blit(const Cells *c, bool full) {
    if (!crt.active)
        return;
    if (full)
        clearok(curscr, TRUE);
    if (crt.line_cap < c->w + 1) {
        free(crt.line);
        crt.line_cap = c->w + 1;
        crt.line = xMallocArray((size_t)crt.line_cap, sizeof(cchar_t));
    }
    bool ascii = !crt.glyphs->utf8;
    int w = c->w < COLS ? c->w : COLS, h = c->h < LINES ? c->h : LINES;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            const Cell *cell = &c->cells[y * c->w + x];
            wchar_t wc[2] = {(wchar_t)cell->ch, L'\0'};
            if (ascii && cell->ch > 0x7E)
                wc[0] = L'?';
            if (cell->ch < 0x20)
                wc[0] = L' ';
            int role = cell->role < ROLE_COUNT ? cell->role : ROLE_NORMAL;
            setcchar(&crt.line[x], wc, crt.attrs[role], crt.pairs[role], NULL);
        }
        mvadd_wchnstr(y, 0, crt.line, w);
    }
    wnoutrefresh(stdscr);
    doupdate();
}

int CRT_signalFd(void) {
    return crt.sig_pipe[0];
}

int CRT_takeSignal(void) {
    unsigned char b;
    int sig = 0;
    while (crt.sig_pipe[0] >= 0 && read(crt.sig_pipe[0], &b, 1) == 1)
        sig = b;
    return sig;
}

void CRT_keyName(int key, char *buf, int size) {
    if (key & 0x40000000) {
        int k = key & ~0x40000000;
        if (k >= KEY_F(1) && k <= KEY_F(12))
            snprintf(buf, (size_t)size, "F%d", k - KEY_F(0));
        else
            snprintf(buf, (size_t)size, "%s", keyname(k) ? keyname(k) : "key");
    } else if (key < 0x20) {
        snprintf(buf, (size_t)size, "^%c", key + '@');
    } else if (key < 0x7F) {
        snprintf(buf, (size_t)size, "%c", key);
    } else {
        snprintf(buf, (size_t)size, "U+%04X", key);
    }
}
