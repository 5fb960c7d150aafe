/*
moescope - ui/Ui.c
The UI loop and its actions.

DESIGN
One thread owns the terminal and all view state. It sleeps in poll() on three fds:
stdin, the workers' completion pipe (jobs/Analysis) and the signal pipe (ui/CRT). Key
handlers only change state and return reaction flags (REDRAW, RECOMPUTE, RESIZE, QUIT);
the loop alone renders, and renders after every batch of input, so a key shows on the
screen as soon as it is handled, whatever the workers are doing. A render is one frame
of the Analysis: the screens ask for what they show, the current screen first, then
the Layers screen's numbers for every layer (so they fill in in the background), and
what no screen asked for any more is canceled. Actions come from one table that also
generates the help screen and the function-key bar.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#ifndef _XOPEN_SOURCE_EXTENDED
#define _XOPEN_SOURCE_EXTENDED 1
#endif
#include "ui/Ui.h"

#include <curses.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/NeuronBound.h"
#include "jobs/Analysis.h"
#include "jobs/KnobTable.h"
#include "ui/CRT.h"
#include "ui/FigureRun.h"
#include "ui/KnobPanel.h"
#include "ui/Prompt.h"
#include "util/XUtils.h"
#include "views/Cells.h"
#include "views/Chrome.h"
#include "views/Csv.h"
#include "views/EstimatesView.h"
#include "views/HelpView.h"
#include "views/LayersView.h"
#include "views/PartitionView.h"
#include "views/RouterView.h"
#include "views/SparsityView.h"

enum { R_NONE = 0, R_REDRAW = 1, R_RECOMPUTE = 2, R_RESIZE = 4, R_QUIT = 8 };

enum { MIN_W = 80, MIN_H = 24, MAX_HISTORY = 200, E_CANDIDATES = 64 };

typedef enum Screen {
    SCREEN_LAYERS = 0,
    SCREEN_SPARSITY,
    SCREEN_PARTITION,
    SCREEN_ROUTER,
    SCREEN_ESTIMATES,
    SCREEN_COUNT,
} Screen;

static const char *const screenNames[SCREEN_COUNT] = {"Layers", "Sparsity", "Partition",
                                                      "Router", "Estimates"};

typedef enum Overlay {
    OVERLAY_NONE = 0,
    OVERLAY_HELP,
    OVERLAY_HISTORY,
    OVERLAY_JOBS,
} Overlay;

typedef enum PromptPurpose {
    PROMPT_SEARCH = 1,
    PROMPT_SET,
    PROMPT_KNOB,
    PROMPT_FIGURES,
} PromptPurpose;

typedef struct Ui {
    Analysis *an;
    Dump *dump;
    Knobs knobs;
    Screen screen;
    Screen last_detail;
    LayersView layers;
    ViewScroll scroll[SCREEN_COUNT];
    Overlay overlay;
    HelpView help;
    ViewScroll history_scroll;
    KnobPanel panel;
    Prompt prompt;
    int selected_knob;
    char search[PROMPT_MAX * 4];
    char *message;
    int message_role;
    char **history;
    int n_history;
    int last_error;     /* index into history, or -1 */
    Cells cells;
    const Glyphs *g;
    unsigned tick;
    bool paused;
    bool export_pending;
    bool export_all;
    int export_layer;
    bool save_pending;
    bool figures_pending;  /* waiting for the rows, like an export */
    bool figures_all;
    int figures_layer;
    Knobs figures_knobs;   /* as when f was pressed */
    char *figures_dir;
    FigureRun *figures;    /* drawing */
    char *figures_shown;   /* the last progress put on the message line */
    char *files;
    int e_cand[E_CANDIDATES];
    int n_cand;
    bool too_small;
    FILE *log;          /* MOESCOPE_UI_LOG: keys as handled, for debugging */
} Ui;

/* ---- messages ---------------------------------------------------------------------- */

static void say(Ui *ui, int role, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(Ui *ui, int role, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = xVasprintf(fmt, ap);
    va_end(ap);
    free(ui->message);
    ui->message = xStrdup(text);
    ui->message_role = role;
    if (ui->n_history == MAX_HISTORY) {
        free(ui->history[0]);
        memmove(ui->history, ui->history + 1, (MAX_HISTORY - 1) * sizeof *ui->history);
        ui->n_history--;
        if (ui->last_error >= 0)
            ui->last_error--;
    }
    ui->history = xReallocArray(ui->history, (size_t)ui->n_history + 1, sizeof *ui->history);
    if (role == ROLE_ERROR)
        ui->last_error = ui->n_history;
    ui->history[ui->n_history++] = text;
}

static const char *lastError(const Ui *ui) {
    return ui->last_error >= 0 && ui->last_error < ui->n_history ? ui->history[ui->last_error]
                                                                 : NULL;
}

/* ---- helpers ------------------------------------------------------------------------ */

static int curLayer(const Ui *ui) {
    return ui->layers.cursor;
}

static void updateCandidates(Ui *ui) {
    const DumpLayer *info = Analysis_layer(ui->an, curLayer(ui));
    ui->n_cand = KnobTable_expertCandidates(info->d_ff, ui->e_cand, E_CANDIDATES);
}

static ViewContext context(Ui *ui) {
    return (ViewContext){.an = ui->an, .knobs = &ui->knobs, .g = ui->g,
                         .layer = curLayer(ui), .tick = ui->tick};
}

static int knobsChanged(Ui *ui, const Knobs *before) {
    if (memcmp(before, &ui->knobs, sizeof *before) == 0)
        return R_REDRAW;
    return R_RECOMPUTE | R_REDRAW;
}

/* ---- actions ------------------------------------------------------------------------ */

typedef int (*ActionFn)(Ui *ui);

static int actHelp(Ui *ui) {
    ui->overlay = ui->overlay == OVERLAY_HELP ? OVERLAY_NONE : OVERLAY_HELP;
    ui->help.top = 0;
    return R_REDRAW;
}

static int actKnobs(Ui *ui) {
    ui->panel.open = true;
    ui->panel.sel = ui->selected_knob;
    return R_REDRAW;
}

static int actSearch(Ui *ui) {
    Prompt_open(&ui->prompt, PROMPT_SEARCH, "Find layer: ", "");
    return R_REDRAW;
}

static int findLayer(Ui *ui, int dir) {
    if (!ui->search[0]) {
        say(ui, ROLE_WARN, "no search yet: / finds a layer by name");
        return R_REDRAW;
    }
    ViewContext ctx = context(ui);
    if (!LayersView_find(&ui->layers, &ctx, ui->search, dir))
        say(ui, ROLE_WARN, "no layer matches '%s'", ui->search);
    return R_REDRAW;
}

static int actNext(Ui *ui) { return findLayer(ui, +1); }
static int actPrev(Ui *ui) { return findLayer(ui, -1); }

static int actSet(Ui *ui) {
    Prompt_open(&ui->prompt, PROMPT_SET, "Set (NAME=VALUE): ", "");
    return R_REDRAW;
}

static void goScreen(Ui *ui, Screen s) {
    ui->screen = s;
    if (s != SCREEN_LAYERS)
        ui->last_detail = s;
}

static int actNextScreen(Ui *ui) {
    goScreen(ui, (Screen)((ui->screen + 1) % SCREEN_COUNT));
    return R_REDRAW;
}

static int actPrevScreen(Ui *ui) {
    goScreen(ui, (Screen)((ui->screen + SCREEN_COUNT - 1) % SCREEN_COUNT));
    return R_REDRAW;
}

static int actLayersScreen(Ui *ui) {
    goScreen(ui, SCREEN_LAYERS);
    return R_REDRAW;
}

static int actEnter(Ui *ui) {
    if (ui->screen == SCREEN_LAYERS)
        goScreen(ui, ui->last_detail);
    return R_REDRAW;
}

static int moveBy(Ui *ui, int delta) {
    if (ui->screen == SCREEN_LAYERS) {
        LayersView_move(&ui->layers, delta);
        updateCandidates(ui);
    } else {
        ViewScroll_by(&ui->scroll[ui->screen], delta);
    }
    return R_REDRAW;
}

static int page(const Ui *ui) {
    int rows = ui->screen == SCREEN_LAYERS ? ui->layers.rows : ui->scroll[ui->screen].rows;
    return rows > 1 ? rows - 1 : 1;
}

static int actUp(Ui *ui) { return moveBy(ui, -1); }
static int actDown(Ui *ui) { return moveBy(ui, +1); }
static int actPageUp(Ui *ui) { return moveBy(ui, -page(ui)); }
static int actPageDown(Ui *ui) { return moveBy(ui, page(ui)); }
static int actHome(Ui *ui) { return moveBy(ui, -1000000); }
static int actEnd(Ui *ui) { return moveBy(ui, 1000000); }

static int layerBy(Ui *ui, int delta) {
    if (ui->screen == SCREEN_LAYERS)
        return R_NONE;
    LayersView_move(&ui->layers, delta);
    updateCandidates(ui);
    return R_REDRAW;
}

static int actLeft(Ui *ui) { return layerBy(ui, -1); }
static int actRight(Ui *ui) { return layerBy(ui, +1); }

static int actSortNext(Ui *ui) {
    LayersView_sortNext(&ui->layers, +1);
    say(ui, ROLE_NORMAL, "sorted by %s", LayersView_columnName(ui->layers.sort));
    return R_REDRAW;
}

static int actSortPrev(Ui *ui) {
    LayersView_sortNext(&ui->layers, -1);
    say(ui, ROLE_NORMAL, "sorted by %s", LayersView_columnName(ui->layers.sort));
    return R_REDRAW;
}

static int actSortAsc(Ui *ui) {
    ui->layers.descending = false;
    return R_REDRAW;
}

static int actSortDesc(Ui *ui) {
    ui->layers.descending = true;
    return R_REDRAW;
}

static int actSortInvert(Ui *ui) {
    ui->layers.descending = !ui->layers.descending;
    return R_REDRAW;
}

static int actKnobNext(Ui *ui) {
    ui->selected_knob = (ui->selected_knob + 1) % KNOB_COUNT;
    if (ui->selected_knob == KNOB_TAU && ui->knobs.target >= 0)
        ui->selected_knob++;
    return R_REDRAW;
}

static int actKnobPrev(Ui *ui) {
    ui->selected_knob = (ui->selected_knob + KNOB_COUNT - 1) % KNOB_COUNT;
    if (ui->selected_knob == KNOB_TAU && ui->knobs.target >= 0)
        ui->selected_knob--;
    return R_REDRAW;
}

static int stepKnob(Ui *ui, int dir) {
    Knobs before = ui->knobs;
    Knobs_step(&ui->knobs, (KnobId)ui->selected_knob, dir, ui->e_cand, ui->n_cand);
    return knobsChanged(ui, &before);
}

static int actKnobInc(Ui *ui) { return stepKnob(ui, +1); }
static int actKnobDec(Ui *ui) { return stepKnob(ui, -1); }

static int actKnobReset(Ui *ui) {
    Knobs before = ui->knobs;
    Knobs_set(&ui->knobs, (KnobId)ui->selected_knob,
              KnobTable_def((KnobId)ui->selected_knob)->def);
    return knobsChanged(ui, &before);
}

static int actPause(Ui *ui) {
    ui->paused = !ui->paused;
    Analysis_pause(ui->an, ui->paused);
    say(ui, ROLE_NORMAL, ui->paused ? "computation paused (Z resumes)" : "computation resumed");
    return R_REDRAW;
}

static int actCancel(Ui *ui) {
    AnActivity a;
    Analysis_activity(ui->an, &a);
    if (!a.running && !a.queued)
        return R_QUIT;
    Analysis_cancelAll(ui->an);
    ui->paused = true;
    Analysis_pause(ui->an, true);
    say(ui, ROLE_WARN, "canceled: computation paused (Z resumes, ^C again quits)");
    return R_REDRAW;
}

/* "moescope-<what>-<strategy>-E8-k2.csv" in the current directory. */
static char *exportName(const Ui *ui, bool all, const char *ext) {
    const Knobs *k = &ui->knobs;
    char what[48];
    if (all)
        snprintf(what, sizeof what, "layers");
    else
        snprintf(what, sizeof what, "layer%d", Analysis_layer(ui->an, curLayer(ui))->index);
    char tau[48];
    if (k->target >= 0)
        snprintf(tau, sizeof tau, "-q%g", k->target);
    else if (k->tau > 0)
        snprintf(tau, sizeof tau, "-tau%g", k->tau);
    else
        tau[0] = '\0';
    return xAsprintf("moescope-%s-%s-%s-E%d-k%d%s.%s", what,
                     Partition_strategyName(k->strategy), RouterKind_name(k->router), k->E, k->k,
                     tau, ext);
}

static int actExport(Ui *ui) {
    ui->export_pending = true;
    ui->export_all = ui->screen == SCREEN_LAYERS;
    ui->export_layer = curLayer(ui);
    say(ui, ROLE_NORMAL, "export: waiting for the numbers to be computed...");
    return R_REDRAW;
}

static int actSave(Ui *ui) {
    ui->save_pending = true;
    say(ui, ROLE_NORMAL, "save partitions: waiting for the partitions to be computed...");
    return R_REDRAW;
}

static int actFigures(Ui *ui) {
    if (ui->figures_pending || ui->figures) {
        say(ui, ROLE_WARN, "figures: still writing into %s", ui->figures_dir);
        return R_REDRAW;
    }
    Prompt_open(&ui->prompt, PROMPT_FIGURES, "Figures directory: ", FIGURERUN_DEFAULT_DIR);
    return R_REDRAW;
}

static int actLastError(Ui *ui) {
    const char *e = lastError(ui);
    if (e) {
        free(ui->message);
        ui->message = xStrdup(e);
        ui->message_role = ROLE_ERROR;
    } else {
        say(ui, ROLE_NORMAL, "no errors");
    }
    return R_REDRAW;
}

static int actHistory(Ui *ui) {
    ui->overlay = ui->overlay == OVERLAY_HISTORY ? OVERLAY_NONE : OVERLAY_HISTORY;
    ui->history_scroll.top = ui->n_history;
    return R_REDRAW;
}

static int actJobs(Ui *ui) {
    ui->overlay = ui->overlay == OVERLAY_JOBS ? OVERLAY_NONE : OVERLAY_JOBS;
    return R_REDRAW;
}

static int actRedraw(Ui *ui) {
    (void)ui;
    return R_REDRAW | R_RESIZE;
}

static int actBack(Ui *ui) {
    if (ui->overlay != OVERLAY_NONE) {
        ui->overlay = OVERLAY_NONE;
        return R_REDRAW;
    }
    if (ui->screen != SCREEN_LAYERS) {
        goScreen(ui, SCREEN_LAYERS);
        return R_REDRAW;
    }
    return R_QUIT;
}

/* Esc backs out like q but never quits: a lone Esc may be half of a function key's
   sequence split by a slow terminal. */
static int actEscape(Ui *ui) {
    int r = actBack(ui);
    return r == R_QUIT ? R_NONE : r;
}

static int actQuit(Ui *ui) {
    (void)ui;
    return R_QUIT;
}

static int actScreen1(Ui *ui) { goScreen(ui, SCREEN_LAYERS); return R_REDRAW; }
static int actScreen2(Ui *ui) { goScreen(ui, SCREEN_SPARSITY); return R_REDRAW; }
static int actScreen3(Ui *ui) { goScreen(ui, SCREEN_PARTITION); return R_REDRAW; }
static int actScreen4(Ui *ui) { goScreen(ui, SCREEN_ROUTER); return R_REDRAW; }
static int actScreen5(Ui *ui) { goScreen(ui, SCREEN_ESTIMATES); return R_REDRAW; }

#define FN(k) CRT_FN(k)
#define CTRL(c) ((c) & 0x1F)

typedef struct Action {
    const char *section;
    const char *keys;
    const char *help;
    ActionFn fn;
    int bind[6]; /* 0-terminated */
} Action;

static const Action actions[] = {
    {"Moving", "Up Down j k", "move the cursor (Layers) or scroll (other screens)", actUp,
     {FN(KEY_UP), 'k', 0}},
    {NULL, "", "", actDown, {FN(KEY_DOWN), 'j', 0}},
    {NULL, "PgUp PgDn", "move or scroll a page", actPageUp, {FN(KEY_PPAGE), CTRL('B'), 0}},
    {NULL, "", "", actPageDown, {FN(KEY_NPAGE), CTRL('F'), ' ', 0}},
    {NULL, "Home End g G", "first / last layer, top / bottom", actHome,
     {FN(KEY_HOME), 'g', 0}},
    {NULL, "", "", actEnd, {FN(KEY_END), 'G', 0}},
    {NULL, "Left Right", "previous / next layer (layer screens)", actLeft,
     {FN(KEY_LEFT), 'h', 0}},
    {NULL, "", "", actRight, {FN(KEY_RIGHT), 'l', 0}},
    {NULL, "Enter", "open the layer under the cursor", actEnter, {'\r', '\n', FN(KEY_ENTER), 0}},
    {NULL, "Tab S-Tab F4", "next / previous screen", actNextScreen, {'\t', FN(KEY_F(4)), 0}},
    {NULL, "", "", actPrevScreen, {FN(KEY_BTAB), 0}},
    {NULL, "1 2 3 4 5", "Layers, Sparsity, Partition, Router, Estimates", actScreen1, {'1', 0}},
    {NULL, "", "", actScreen2, {'2', 0}},
    {NULL, "", "", actScreen3, {'3', 0}},
    {NULL, "", "", actScreen4, {'4', 0}},
    {NULL, "", "", actScreen5, {'5', 0}},
    {NULL, "F5", "back to the Layers screen", actLayersScreen, {FN(KEY_F(5)), 0}},
    {NULL, "q", "back one level (closes help, leaves a layer); quit on Layers", actBack,
     {'q', 0}},
    {NULL, "Esc", "back one level (never quits)", actEscape, {27, 0}},
    {NULL, "Q F10", "quit now", actQuit, {'Q', FN(KEY_F(10)), 0}},
    {"Finding and sorting", "/ F3", "find a layer by name (or index)", actSearch,
     {'/', FN(KEY_F(3)), 0}},
    {NULL, "n N", "next / previous match", actNext, {'n', 0}},
    {NULL, "", "", actPrev, {'N', 0}},
    {NULL, "> < F6", "sort the Layers by the next / previous column", actSortNext,
     {'>', '.', FN(KEY_F(6)), 0}},
    {NULL, "", "", actSortPrev, {'<', ',', 0}},
    {NULL, "[ ] I", "sort ascending / descending / invert", actSortAsc, {'[', 0}},
    {NULL, "", "", actSortDesc, {']', 0}},
    {NULL, "", "", actSortInvert, {'I', 0}},
    {"Knobs (every change recomputes in the background)", "F2 O", "knob panel: all knobs, "
     "ranges, defaults", actKnobs, {FN(KEY_F(2)), 'O', 'o', 0}},
    {NULL, "{ }", "select the knob that + and - change (highlighted)", actKnobPrev, {'{', 0}},
    {NULL, "", "", actKnobNext, {'}', 0}},
    {NULL, "+ - F8 F7", "change the selected knob (E steps through divisors of d_ff)",
     actKnobInc, {'+', FN(KEY_F(8)), 0}},
    {NULL, "", "", actKnobDec, {'-', FN(KEY_F(7)), 0}},
    {NULL, "=", "reset the selected knob to its default", actKnobReset, {'=', 0}},
    {NULL, ":", "set a knob by NAME=VALUE, e.g. :E=16 or :target=0.9", actSet, {':', 0}},
    {NULL, "Z", "pause / resume the computation", actPause, {'Z', 'z', 0}},
    {NULL, "^T", "jobs: what is running, its progress, what is queued", actJobs, {CTRL('T'), 0}},
    {NULL, "^C", "cancel running work and pause (quits when idle)", actCancel, {CTRL('C'), 0}},
    {"Output", "e F9", "export CSV (Layers: all layers; a layer screen: that layer)", actExport,
     {'e', FN(KEY_F(9)), 0}},
    {NULL, "s", "save the current partitions of every layer to HDF5", actSave, {'s', 0}},
    {NULL, "f", "write figures (PDF, PNG) of what e exports into a directory", actFigures,
     {'f', 0}},
    {NULL, "^E ^P", "last error / message history", actLastError, {CTRL('E'), 0}},
    {NULL, "", "", actHistory, {CTRL('P'), 0}},
    {NULL, "^L", "redraw the screen", actRedraw, {CTRL('L'), 0}},
    {NULL, "? F1", "this help", actHelp, {'?', FN(KEY_F(1)), 'H', 0}},
};

enum { N_ACTIONS = sizeof actions / sizeof *actions };

static const ChromeKey functionKeys[] = {
    {"F1", "Help"}, {"F2", "Knobs"}, {"F3", "Search"}, {"F4", "View"}, {"F5", "Layers"},
    {"F6", "SortBy"}, {"F7", "Knob-"}, {"F8", "Knob+"}, {"F9", "Export"}, {"F10", "Quit"},
};

static HelpLine *helpLines(int *n) {
    HelpLine *lines = xCalloc(N_ACTIONS, sizeof *lines);
    int k = 0;
    for (int i = 0; i < N_ACTIONS; i++) {
        if (!actions[i].keys[0])
            continue;
        lines[k++] = (HelpLine){actions[i].section, actions[i].keys, actions[i].help};
    }
    *n = k;
    return lines;
}

static const Action *actionFor(int key) {
    for (int i = 0; i < N_ACTIONS; i++)
        for (int j = 0; actions[i].bind[j]; j++)
            if (actions[i].bind[j] == key)
                return &actions[i];
    return NULL;
}

/* ---- prompts, panels and keys ------------------------------------------------------- */

/* f's directory is accepted: wait for the numbers `e` would export, at these knobs. */
static int startFigures(Ui *ui, const char *dir) {
    if (!dir[0]) {
        say(ui, ROLE_WARN, "figures: no directory given, nothing written");
        return R_REDRAW;
    }
    free(ui->figures_dir);
    ui->figures_dir = xStrdup(dir);
    ui->figures_pending = true;
    ui->figures_all = ui->screen == SCREEN_LAYERS;
    ui->figures_layer = curLayer(ui);
    ui->figures_knobs = ui->knobs;
    say(ui, ROLE_NORMAL, "figures: waiting for the numbers to be computed...");
    free(ui->figures_shown);
    ui->figures_shown = xStrdup(ui->message);
    return R_REDRAW;
}

static int promptDone(Ui *ui) {
    char text[PROMPT_MAX * 4];
    Prompt_text(&ui->prompt, text, sizeof text);
    char *cause = NULL;
    switch ((PromptPurpose)ui->prompt.purpose) {
    case PROMPT_SEARCH:
        if (!text[0])
            return R_REDRAW;
        snprintf(ui->search, sizeof ui->search, "%s", text);
        return findLayer(ui, 0);
    case PROMPT_SET: {
        if (!text[0])
            return R_REDRAW;
        Knobs before = ui->knobs;
        if (Knobs_assign(&ui->knobs, text, &cause) != MS_OK) {
            say(ui, ROLE_ERROR, "%s", cause);
            free(cause);
            return R_REDRAW;
        }
        return knobsChanged(ui, &before);
    }
    case PROMPT_KNOB: {
        const KnobDef *d = KnobTable_def((KnobId)ui->panel.sel);
        double v;
        if (KnobTable_parseValue(d, text, &v, &cause) != MS_OK) {
            say(ui, ROLE_ERROR, "%s", cause);
            free(cause);
            return R_REDRAW;
        }
        Knobs before = ui->knobs;
        Knobs_set(&ui->knobs, d->id, v);
        return knobsChanged(ui, &before);
    }
    case PROMPT_FIGURES:
        return startFigures(ui, text);
    }
    return R_REDRAW;
}

static int handleKey(Ui *ui, int key) {
    if (ui->log) {
        char name[32];
        CRT_keyName(key, name, sizeof name);
        fprintf(ui->log, "key %s screen %d overlay %d panel %d prompt %d\n", name, ui->screen,
                ui->overlay, ui->panel.open, ui->prompt.active);
        fflush(ui->log);
    }
    if (key == CRT_KEY_RESIZE)
        return R_RESIZE | R_REDRAW;
    if (ui->prompt.active) {
        PromptResult r = Prompt_key(&ui->prompt, key);
        return r == PROMPT_ACCEPT ? promptDone(ui) : R_REDRAW;
    }
    free(ui->message);
    ui->message = NULL;
    if (ui->panel.open) {
        Knobs before = ui->knobs;
        switch (KnobPanel_key(&ui->panel, &ui->knobs, key, ui->e_cand, ui->n_cand)) {
        case KNOBPANEL_CHANGED:
            ui->selected_knob = ui->panel.sel;
            return knobsChanged(ui, &before);
        case KNOBPANEL_TYPE: {
            const KnobDef *d = KnobTable_def((KnobId)ui->panel.sel);
            char label[64], v[48];
            snprintf(label, sizeof label, "%s = ", d->name);
            Knobs_format(&ui->knobs, d->id, v, sizeof v);
            Prompt_open(&ui->prompt, PROMPT_KNOB, label, v);
            return R_REDRAW;
        }
        case KNOBPANEL_NONE:
            if (key == 'Q' || key == FN(KEY_F(10)))
                return R_QUIT;
            if (key == '?' || key == FN(KEY_F(1))) {
                ui->panel.open = false;
                return actHelp(ui);
            }
            return R_NONE;
        default:
            ui->selected_knob = ui->panel.sel;
            return R_REDRAW;
        }
    }
    if (ui->overlay != OVERLAY_NONE) {
        ViewScroll *s = &ui->history_scroll;
        bool help = ui->overlay == OVERLAY_HELP;
        switch (key) {
        case FN(KEY_UP): case 'k':
            help ? HelpView_scroll(&ui->help, -1) : ViewScroll_by(s, -1);
            return R_REDRAW;
        case FN(KEY_DOWN): case 'j':
            help ? HelpView_scroll(&ui->help, 1) : ViewScroll_by(s, 1);
            return R_REDRAW;
        case FN(KEY_PPAGE):
            help ? HelpView_scroll(&ui->help, -ui->help.rows + 1) : ViewScroll_by(s, -s->rows + 1);
            return R_REDRAW;
        case FN(KEY_NPAGE): case ' ':
            help ? HelpView_scroll(&ui->help, ui->help.rows - 1) : ViewScroll_by(s, s->rows - 1);
            return R_REDRAW;
        case FN(KEY_HOME): case 'g':
            help ? HelpView_scroll(&ui->help, -100000) : ViewScroll_by(s, -100000);
            return R_REDRAW;
        case FN(KEY_END): case 'G':
            help ? HelpView_scroll(&ui->help, 100000) : ViewScroll_by(s, 100000);
            return R_REDRAW;
        case 'q': case 27: case '?': case FN(KEY_F(1)): case CTRL('P'): case CTRL('T'):
            ui->overlay = OVERLAY_NONE;
            return R_REDRAW;
        case 'Q': case FN(KEY_F(10)):
            return R_QUIT;
        default:
            break;
        }
    }
    const Action *a = actionFor(key);
    if (!a) {
        char name[32];
        CRT_keyName(key, name, sizeof name);
        say(ui, ROLE_DIM, "%s: no action (? lists the keys)", name);
        return R_REDRAW;
    }
    return a->fn(ui);
}

/* ---- export ------------------------------------------------------------------------- */

/* Where exported rows go: a CSV file (e) or a figure run (f). */
typedef struct ExportRows {
    Csv *csv;
    FigureRun *figures;
    long rows;
} ExportRows;

static void row(ExportRows *x, const DumpLayer *info, float tau, const char *strategy,
                const char *router, int E, int k, const char *split, const char *metric,
                double value) {
    CsvRow r = {.layer = info->index, .layer_name = info->name, .strategy = strategy,
                .router = router, .E = E, .k = k, .tau = tau, .split = split,
                .metric = metric, .value = value, .file = info->x_file};
    if (x->csv)
        Csv_row(x->csv, &r);
    if (x->figures)
        FigureRun_addRow(x->figures, &r);
    x->rows++;
}

/* True when every number of layer is computed or failed (and asks for them). */
static bool layerReady(Ui *ui, const Knobs *k, int layer) {
    AnStatus st;
    bool ready = true;
    double intra;
#define CHECK(expr) do { if (!(expr) && st.state != AN_FAILED) ready = false; } while (0)
    CHECK(Analysis_sparsity(ui->an, layer, k, &st));
    CHECK(Analysis_intra(ui->an, layer, k, &intra, &st));
    CHECK(Analysis_partition(ui->an, layer, k, &st));
    CHECK(Analysis_eval(ui->an, layer, k, ROUTER_ORACLE, &st));
    CHECK(Analysis_eval(ui->an, layer, k, k->router, &st));
    CHECK(Analysis_bound(ui->an, layer, k, &st));
#undef CHECK
    return ready;
}

static void exportLayer(Ui *ui, ExportRows *x, const Knobs *k, int layer) {
    const DumpLayer *info = Analysis_layer(ui->an, layer);
    float tau;
    if (!Analysis_tau(ui->an, layer, k, &tau, NULL))
        return;
    const Sparsity *s = Analysis_sparsity(ui->an, layer, k, NULL);
    if (s) {
        row(x, info, tau, NULL, NULL, 0, 0, "all", "sparsity", s->sparsity);
        row(x, info, tau, NULL, NULL, 0, 0, "all", "dead_fraction", s->dead_fraction);
        row(x, info, tau, NULL, NULL, 0, 0, "all", "active_per_token_mean",
            s->active_per_token_mean);
    }
    if (k->target >= 0) {
        char metric[64];
        snprintf(metric, sizeof metric, "tau_for_sparsity_%g", k->target);
        row(x, info, tau, NULL, NULL, 0, 0, "all", metric, tau);
    }
    const char *sname = Partition_strategyName(k->strategy);
    double intra;
    if (Analysis_intra(ui->an, layer, k, &intra, NULL))
        row(x, info, tau, sname, NULL, k->E, 0, "train", "intra_coact", intra);
    const AnPartition *p = Analysis_partition(ui->an, layer, k, NULL);
    if (p && k->strategy == PARTITION_COACT)
        row(x, info, tau, sname, NULL, k->E, 0, "train", "coact_fallback_random",
            p->fallback_random);
    RouterKind kinds[2] = {ROUTER_ORACLE, k->router};
    for (int i = 0; i < (k->router == ROUTER_ORACLE ? 1 : 2); i++) {
        const Eval *ev = Analysis_eval(ui->an, layer, k, kinds[i], NULL);
        if (!ev || k->k > k->E)
            continue;
        EvalMetrics m;
        Eval_metrics(ev, k->k, &m);
        const char *rn = RouterKind_name(kinds[i]);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "mass_recall", m.mass_recall);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "overlap", m.overlap);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "output_rel_err", m.output_rel_err);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "load_max_over_mean",
            m.load_max_over_mean);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "load_entropy_norm",
            m.load_entropy_norm);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "flops_fraction", m.flops_fraction);
        row(x, info, tau, sname, rn, k->E, k->k, "test", "ideal_speedup", m.ideal_speedup);
    }
    const NeuronBound *b = Analysis_bound(ui->an, layer, k, NULL);
    if (b && k->E <= info->d_ff) {
        long K = 0;
        double err = NeuronBound_errorAt(b, k->E, k->k, &K);
        row(x, info, tau, NULL, "topk_neurons", k->E, k->k, "test", "output_rel_err", err);
        row(x, info, tau, NULL, "topk_neurons", k->E, k->k, "test", "K", (double)K);
    }
}

/* Called every frame while an export waits: writes it once everything is there. */
static void tryExport(Ui *ui) {
    int n = ui->export_all ? Analysis_layerCount(ui->an) : 1;
    bool ready = true;
    for (int i = 0; i < n; i++)
        ready = layerReady(ui, &ui->knobs, ui->export_all ? i : ui->export_layer) && ready;
    if (!ready)
        return;
    ui->export_pending = false;
    int saved = ui->layers.cursor;
    ui->layers.cursor = ui->export_layer;
    char *path = exportName(ui, ui->export_all, "csv");
    ui->layers.cursor = saved;
    Csv csv;
    ExportRows x = {.csv = &csv};
    char *cause = NULL;
    if (Csv_open(&csv, path, &cause) == MS_OK) {
        for (int i = 0; i < n; i++)
            exportLayer(ui, &x, &ui->knobs, ui->export_all ? i : ui->export_layer);
        if (Csv_close(&csv, &cause) == MS_OK) {
            say(ui, ROLE_OK, "exported %ld rows to %s", x.rows, path);
            free(path);
            return;
        }
    }
    say(ui, ROLE_ERROR, "export failed: %s", cause ? cause : "unknown error");
    free(cause);
    free(path);
}

static void trySave(Ui *ui) {
    if (Analysis_missingPartitions(ui->an, &ui->knobs) > 0)
        return;
    ui->save_pending = false;
    char *name = xAsprintf("moescope-partitions-%s-E%d.h5",
                           Partition_strategyName(ui->knobs.strategy), ui->knobs.E);
    int n = Analysis_savePartitions(ui->an, &ui->knobs, name);
    if (n == 0)
        say(ui, ROLE_ERROR, "save partitions: none could be computed for these knobs");
    else
        say(ui, ROLE_NORMAL, "saving %d partition%s to %s ...", n, n == 1 ? "" : "s", name);
    free(name);
}

/* ---- figures ------------------------------------------------------------------------ */

/* Layers of a figure run: all (from the Layers screen) or the one shown. */
static int figureLayers(const Ui *ui, int *out) {
    if (!ui->figures_all) {
        out[0] = ui->figures_layer;
        return 1;
    }
    int n = Analysis_layerCount(ui->an);
    for (int i = 0; i < n; i++)
        out[i] = i;
    return n;
}

/* With a target sparsity each layer has its own tau: name files by tau then, as the
   batch does for several taus, or the summaries of different taus would collide. */
static bool tausDiffer(Ui *ui, const int *layers, int n) {
    float first = 0;
    bool have = false;
    for (int i = 0; i < n; i++) {
        float tau;
        if (!Analysis_tau(ui->an, layers[i], &ui->figures_knobs, &tau, NULL))
            continue;
        if (have && tau != first)
            return true;
        first = tau;
        have = true;
    }
    return false;
}

/* Called every frame while f waits for its rows: starts the figure run once they are
   all computed (the rows `e` writes for the same knobs and layers). */
static void tryFigures(Ui *ui) {
    int *layers = xMallocArray((size_t)Analysis_layerCount(ui->an), sizeof(int));
    int n = figureLayers(ui, layers);
    bool ready = true;
    for (int i = 0; i < n; i++)
        ready = layerReady(ui, &ui->figures_knobs, layers[i]) && ready;
    if (!ready) {
        free(layers);
        return;
    }
    ui->figures_pending = false;
    char *cause = NULL;
    ui->figures = FigureRun_new(ui->an, &ui->figures_knobs, ui->figures_dir, layers, n,
                                tausDiffer(ui, layers, n), &cause);
    if (!ui->figures) {
        say(ui, ROLE_ERROR, "figures: %s", cause ? cause : "cannot start");
        free(cause);
        free(layers);
        return;
    }
    ExportRows x = {.figures = ui->figures};
    for (int i = 0; i < n; i++)
        exportLayer(ui, &x, &ui->figures_knobs, layers[i]);
    free(layers);
}

/* Called every frame while figures are drawn: the progress, then the outcome. */
static void stepFigures(Ui *ui) {
    FigureRun *r = ui->figures;
    FigureRunState state = FigureRun_step(r);
    if (state == FIGURERUN_WORKING) {
        /* On the message line, without filling the history; other messages stay. */
        const char *p = FigureRun_progress(r);
        if (!ui->message || (ui->figures_shown && strcmp(ui->message, ui->figures_shown) == 0)) {
            free(ui->message);
            ui->message = xStrdup(p);
            ui->message_role = ROLE_NORMAL;
            free(ui->figures_shown);
            ui->figures_shown = xStrdup(p);
        }
        return;
    }
    if (state == FIGURERUN_DONE) {
        const char *const *notes;
        int n_notes = FigureRun_notes(r, &notes);
        for (int i = 0; i < n_notes; i++)
            say(ui, ROLE_WARN, "figures: %s", notes[i]);
        say(ui, ROLE_OK, "wrote %d figure files to %s%s", FigureRun_written(r),
            FigureRun_dir(r), n_notes ? " (some skipped: ^P lists them)" : "");
    } else {
        say(ui, ROLE_ERROR, "figures: %s", FigureRun_error(r));
    }
    FigureRun_delete(r);
    ui->figures = NULL;
    free(ui->figures_shown);
    ui->figures_shown = NULL;
}

/* ---- rendering ---------------------------------------------------------------------- */

static void renderHistory(Ui *ui, int x, int y, int w, int h) {
    Cells *c = &ui->cells;
    Cells_box(c, x, y, w, h, ROLE_NORMAL);
    View_section(c, x + 1, y, w - 2, "Messages (^P or q closes)", ui->g);
    ViewScroll *s = &ui->history_scroll;
    s->rows = h - 1;
    s->lines = ui->n_history;
    ViewScroll_by(s, 0);
    for (int r = 0; r < s->rows; r++) {
        int i = s->top + r;
        if (i >= ui->n_history)
            break;
        Cells_textFit(c, x + 2, y + 1 + r, w - 3, ROLE_NORMAL, ui->history[i], ui->g->ellipsis);
    }
    if (ui->n_history == 0)
        Cells_text(c, x + 2, y + 1, w - 3, ROLE_DIM, "no messages yet");
}

static void renderJobs(Ui *ui, int x, int y, int w, int h) {
    Cells *c = &ui->cells;
    Cells_box(c, x, y, w, h, ROLE_NORMAL);
    View_section(c, x + 1, y, w - 2, "Jobs (^T or q closes, ^C cancels, Z pauses)", ui->g);
    AnActivity a;
    Analysis_activity(ui->an, &a);
    const char *labels[16];
    double progress[16];
    int n = Analysis_running(ui->an, labels, progress, 16);
    int r = 1;
    for (int i = 0; i < n && r < h; i++, r++) {
        Cells_printf(c, x + 2, y + r, 40, ROLE_NORMAL, "%s", labels[i] ? labels[i] : "?");
        Cells_printf(c, x + 43, y + r, 6, ROLE_NORMAL, "%4.0f%%", 100 * progress[i]);
        View_hbar(c, x + 50, y + r, w - 52 > 10 ? w - 52 : 10, progress[i], ROLE_BAR, ui->g);
    }
    if (n == 0 && r < h)
        Cells_text(c, x + 2, y + r++, w - 3, ROLE_DIM, "nothing running");
    size_t used, budget;
    Analysis_memory(ui->an, &used, &budget);
    if (r + 1 < h)
        Cells_printf(c, x + 2, y + r + 1, w - 3, ROLE_NORMAL,
                     "%d queued, %ld finished since start%s", a.queued, a.done,
                     a.paused ? "; paused (Z resumes)" : "");
    if (r + 2 < h)
        Cells_printf(c, x + 2, y + r + 2, w - 3, ROLE_DIM,
                     "cache %.1f MiB of %.0f MiB (MOESCOPE_CACHE_MB sets it)",
                     (double)used / 1048576.0, (double)budget / 1048576.0);
}

static void renderBody(Ui *ui, const ViewContext *ctx, int y, int h) {
    Cells *c = &ui->cells;
    int w = c->w;
    ViewScroll *s = &ui->scroll[ui->screen];
    switch (ui->screen) {
    case SCREEN_LAYERS: LayersView_render(&ui->layers, ctx, c, 0, y, w, h); break;
    case SCREEN_SPARSITY: SparsityView_render(s, ctx, c, 0, y, w, h); break;
    case SCREEN_PARTITION: PartitionView_render(s, ctx, c, 0, y, w, h); break;
    case SCREEN_ROUTER: RouterView_render(s, ctx, c, 0, y, w, h); break;
    case SCREEN_ESTIMATES: EstimatesView_render(s, ctx, c, 0, y, w, h); break;
    case SCREEN_COUNT: break;
    }
}

static void render(Ui *ui, bool resize) {
    int w, h;
    CRT_size(&w, &h);
    if (resize || w != ui->cells.w || h != ui->cells.h)
        Cells_resize(&ui->cells, w, h);
    else
        Cells_clear(&ui->cells);
    Analysis_beginFrame(ui->an);
    ViewContext ctx = context(ui);
    ui->too_small = w < MIN_W || h < MIN_H;
    if (ui->too_small) {
        Chrome_tooSmall(&ui->cells, MIN_W, MIN_H);
    } else {
        int body_y = CHROME_TOP, body_h = h - CHROME_TOP - CHROME_BOTTOM;
        renderBody(ui, &ctx, body_y, body_h);
        /* Before the chrome, so their message shows in this frame. */
        if (ui->export_pending)
            tryExport(ui);
        if (ui->save_pending)
            trySave(ui);
        if (ui->figures_pending)
            tryFigures(ui);
        if (ui->figures)
            stepFigures(ui);
        if (ui->overlay == OVERLAY_HELP) {
            int n;
            HelpLine *lines = helpLines(&n);
            HelpView_render(&ui->help, lines, n, &ui->cells, 0, body_y, w, body_h, ui->g);
            free(lines);
        } else if (ui->overlay == OVERLAY_HISTORY) {
            renderHistory(ui, 0, body_y, w, body_h);
        } else if (ui->overlay == OVERLAY_JOBS) {
            renderJobs(ui, 0, body_y, w, body_h);
        }
        if (ui->panel.open) {
            const DumpLayer *info = Analysis_layer(ui->an, curLayer(ui));
            char hint[256];
            int n = snprintf(hint, sizeof hint, "d_ff %d (layer %d): equal experts at E =",
                             info->d_ff, info->index);
            for (int i = 0; i < ui->n_cand && n < (int)sizeof hint - 8; i++)
                if (info->d_ff % ui->e_cand[i] == 0)
                    n += snprintf(hint + n, sizeof hint - (size_t)n, " %d", ui->e_cand[i]);
            KnobPanel_render(&ui->panel, &ui->knobs, &ui->cells, 0, body_y, w, body_h, ui->g,
                             hint);
        }
        AnActivity act;
        Analysis_activity(ui->an, &act);
        char where[256] = "";
        if (ui->screen != SCREEN_LAYERS) {
            const DumpLayer *info = Analysis_layer(ui->an, curLayer(ui));
            snprintf(where, sizeof where, "layer %d %s (%d/%d, Left/Right)", info->index,
                     info->name, curLayer(ui) + 1, Analysis_layerCount(ui->an));
        }
        const char *msg = ui->message;
        int role = ui->message_role;
        if (!msg && ui->screen == SCREEN_LAYERS) {
            msg = LayersView_rowError(&ui->layers, &ctx);
            role = ROLE_ERROR;
        }
        if (!msg && ui->overlay == OVERLAY_HELP) {
            msg = "Help: Up/Down PgUp/PgDn scroll, q or ? closes";
            role = ROLE_DIM;
        }
        char hint[160];
        if (!msg) {
            const char *kn = KnobTable_def((KnobId)ui->selected_knob)->name;
            if (ui->screen == SCREEN_LAYERS)
                snprintf(hint, sizeof hint,
                         "Enter: open layer  F2: knobs  +/-: change %s  {}: other knob  "
                         "Tab: screens  ?: help", kn);
            else
                snprintf(hint, sizeof hint,
                         "Tab: next screen  Left/Right: layer  +/-: change %s  q: back  ?: help",
                         kn);
            msg = hint;
            role = ROLE_DIM;
        }
        ChromeInfo info = {
            .model = Dump_modelName(ui->dump),
            .files = ui->files,
            .tabs = screenNames,
            .n_tabs = SCREEN_COUNT,
            .tab = ui->screen,
            .where = ui->screen != SCREEN_LAYERS ? where : NULL,
            .knobs = &ui->knobs,
            .selected_knob = ui->selected_knob,
            .activity = act,
            .tick = ui->tick,
            .message = msg,
            .message_role = role,
            .keys = functionKeys,
            .n_keys = sizeof functionKeys / sizeof *functionKeys,
        };
        Chrome_render(&ui->cells, &info, ui->g);
        if (ui->prompt.active)
            Prompt_render(&ui->prompt, &ui->cells, h - 2);
    }
    /* Background: every layer's numbers, after what the screen shows. */
    LayersView_demand(&ui->layers, &ctx);
    Analysis_endFrame(ui->an);
    CRT_blit(&ui->cells, resize);
}

/* ---- the loop ----------------------------------------------------------------------- */

static char *joinFiles(Dump *dump) {
    size_t len = 1;
    for (int i = 0; i < Dump_fileCount(dump); i++)
        len += strlen(Dump_fileName(dump, i)) + 2;
    char *s = xCalloc(len, 1);
    for (int i = 0; i < Dump_fileCount(dump); i++) {
        if (i)
            strcat(s, ", ");
        strcat(s, Dump_fileName(dump, i));
    }
    return s;
}

static void takeMessages(Ui *ui) {
    char *m;
    while ((m = Analysis_takeMessage(ui->an))) {
        say(ui, strncmp(m, "saved", 5) == 0 ? ROLE_OK : ROLE_ERROR, "%s", m);
        free(m);
    }
}

static int loop(Ui *ui) {
    int flags = R_REDRAW | R_RESIZE;
    for (;;) {
        if (flags & R_QUIT)
            return 0;
        if (flags & (R_REDRAW | R_RESIZE | R_RECOMPUTE))
            render(ui, (flags & R_RESIZE) != 0);
        flags = 0;
        AnActivity act;
        Analysis_activity(ui->an, &act);
        bool busy = (act.running || act.queued) && !ui->paused;
        struct pollfd fds[3] = {
            {.fd = STDIN_FILENO, .events = POLLIN},
            {.fd = Analysis_fd(ui->an), .events = POLLIN},
            {.fd = CRT_signalFd(), .events = POLLIN},
        };
        bool waiting = ui->export_pending || ui->save_pending || ui->figures_pending ||
                       ui->figures;
        int r = poll(fds, 3, busy || waiting ? 150 : -1);
        if (r < 0 && errno != EINTR)
            return 1;
        if (r == 0) {
            ui->tick++;
            flags |= R_REDRAW;
        }
        int sig = CRT_takeSignal();
        if (sig)
            return 128 + sig; /* the shell's convention for a death by signal */
        /* After EINTR (SIGWINCH) curses has a KEY_RESIZE waiting: always read. */
        for (int n = 0; n < 256; n++) {
            int key = CRT_readKey();
            if (key == CRT_KEY_NONE)
                break;
            flags |= handleKey(ui, key);
            if (flags & R_QUIT)
                break;
        }
        if ((fds[1].revents & POLLIN) && Analysis_collect(ui->an)) {
            flags |= R_REDRAW;
            takeMessages(ui);
        }
        if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            return 0; /* the terminal went away */
    }
}

int Ui_run(Dump *dump, const UiOptions *opt) {
    Ui ui;
    memset(&ui, 0, sizeof ui);
    ui.dump = dump;
    ui.last_error = -1;
    Knobs_default(&ui.knobs);
    char *cause = NULL;
    for (int i = 0; i < opt->n_sets; i++) {
        if (Knobs_assign(&ui.knobs, opt->sets[i], &cause) != MS_OK) {
            fprintf(stderr, "moescope: --set: %s\n", cause);
            free(cause);
            return 2;
        }
    }
    if (Dump_layerCount(dump) == 0) {
        fprintf(stderr, "moescope: the files hold no FFN layer (no /layers/<i>)\n");
        return 2;
    }
    ui.an = Analysis_new(dump, opt->threads > 0 ? opt->threads : 2, &cause);
    if (!ui.an) {
        fprintf(stderr, "moescope: %s\n", cause);
        free(cause);
        return 1;
    }
    if (getenv("MOESCOPE_CACHE_MB") && atol(getenv("MOESCOPE_CACHE_MB")) > 0)
        Analysis_setBudget(ui.an, (size_t)atol(getenv("MOESCOPE_CACHE_MB")) << 20);
    CrtOptions copt = {.ascii = opt->ascii, .no_color = opt->no_color};
    if (CRT_init(&copt, &cause) != MS_OK) {
        Analysis_delete(ui.an);
        fprintf(stderr, "moescope: %s\n", cause);
        free(cause);
        return 1;
    }
    ui.g = CRT_glyphs();
    if (getenv("MOESCOPE_UI_LOG"))
        ui.log = fopen(getenv("MOESCOPE_UI_LOG"), "a");
    ui.files = joinFiles(dump);
    ui.last_detail = SCREEN_SPARSITY;
    LayersView_init(&ui.layers, Dump_layerCount(dump));
    updateCandidates(&ui);
    Cells_init(&ui.cells, 0, 0);

    int status = loop(&ui);

    CRT_done();
    Analysis_delete(ui.an); /* ends the figure run's task, if any, before it is freed */
    FigureRun_delete(ui.figures);
    free(ui.figures_dir);
    free(ui.figures_shown);
    LayersView_done(&ui.layers);
    Cells_done(&ui.cells);
    free(ui.files);
    if (ui.log)
        fclose(ui.log);
    free(ui.message);
    for (int i = 0; i < ui.n_history; i++)
        free(ui.history[i]);
    free(ui.history);
    return status;
}
