/*
moescope - views/Chrome.c
Title bar, knob line, activity line, message line and function-key bar.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Chrome.h"

#include <stdio.h>
#include <string.h>

static void titleBar(Cells *c, const ChromeInfo *info, const Glyphs *g) {
    Cells_box(c, 0, 0, c->w, 1, ROLE_TITLE);
    int x = Cells_text(c, 0, 0, -1, ROLE_TITLE, "moescope");
    char what[512];
    snprintf(what, sizeof what, "  %s%s%s", info->model ? info->model : "",
             info->model ? "  " : "", info->files ? info->files : "");
    /* Tabs go right; the files take what is left. */
    int tabs_w = 0;
    for (int i = 0; i < info->n_tabs; i++)
        tabs_w += Cells_width(info->tabs[i]) + 4;
    int room = c->w - x - tabs_w - 1;
    if (room > 3)
        x += Cells_textFit(c, x, 0, room, ROLE_TITLE, what, g->ellipsis);
    int tx = c->w - tabs_w;
    if (tx < x + 1)
        tx = x + 1;
    for (int i = 0; i < info->n_tabs; i++) {
        char t[64];
        snprintf(t, sizeof t, i == info->tab ? "[%d%s]" : " %d%s ", i + 1, info->tabs[i]);
        tx += Cells_text(c, tx, 0, c->w - tx, i == info->tab ? ROLE_SORTED : ROLE_TITLE, t);
        if (tx < c->w)
            Cells_set(c, tx++, 0, ' ', ROLE_TITLE);
    }
}

void Chrome_knobLine(Cells *c, int y, const Knobs *k, int selected, const Glyphs *g) {
    (void)g;
    Cells_box(c, 0, y, c->w, 1, ROLE_NORMAL);
    char text[KNOB_COUNT][96];
    int total = 0, shown = 0;
    for (int i = 0; i < KNOB_COUNT; i++) {
        text[i][0] = '\0';
        if (i == KNOB_TAU && k->target >= 0)
            continue; /* the target sets tau per layer */
        char v[48];
        Knobs_format(k, (KnobId)i, v, sizeof v);
        snprintf(text[i], sizeof text[i], "%s=%s", KnobTable_def((KnobId)i)->name, v);
        total += Cells_width(text[i]);
        shown++;
    }
    /* Two spaces between knobs when they fit, else one. */
    int gap = total + 2 * shown + 1 <= c->w ? 2 : 1;
    int x = 1;
    for (int i = 0; i < KNOB_COUNT && x < c->w; i++) {
        if (!text[i][0])
            continue;
        const char *eq = strchr(text[i], '=');
        int start = x;
        int n = (int)(eq - text[i]);
        x += Cells_text(c, x, y, n < c->w - x ? n : c->w - x, ROLE_KNOB, text[i]);
        x += Cells_text(c, x, y, c->w - x, ROLE_DIM, "=");
        x += Cells_text(c, x, y, c->w - x, ROLE_KNOB_VALUE, eq + 1);
        if (i == selected)
            Cells_paint(c, start, y, x - start, ROLE_KNOB_SELECTED);
        x += gap;
    }
}

static void activityLine(Cells *c, int y, const ChromeInfo *info, const Glyphs *g) {
    const AnActivity *a = &info->activity;
    Cells_box(c, 0, y, c->w, 1, ROLE_NORMAL);
    int x = 1;
    if (info->where)
        x += Cells_printf(c, x, y, c->w - x, ROLE_HEADER, "%s  ", info->where);
    if (a->paused && (a->queued || a->running)) {
        Cells_printf(c, x, y, c->w - x, ROLE_WARN, "paused: %d job%s waiting (Z resumes)",
                     a->queued, a->queued == 1 ? "" : "s");
    } else if (a->running || a->queued) {
        char bar[64] = "";
        x += Cells_printf(c, x, y, c->w - x, ROLE_PENDING, "%s computing %s %3.0f%%",
                          g->spinner[info->tick % 4], a->label ? a->label : "", 100 * a->progress);
        snprintf(bar, sizeof bar, "  %d running, %d queued", a->running, a->queued);
        Cells_text(c, x, y, c->w - x, ROLE_DIM, bar);
    } else if (a->paused) {
        Cells_text(c, x, y, c->w - x, ROLE_WARN, "paused (Z resumes)");
    } else {
        Cells_text(c, x, y, c->w - x, ROLE_OK, "idle: up to date");
    }
}

static void functionBar(Cells *c, int y, const ChromeInfo *info) {
    Cells_box(c, 0, y, c->w, 1, ROLE_FLABEL);
    int x = 0;
    for (int i = 0; i < info->n_keys && x < c->w; i++) {
        x += Cells_text(c, x, y, c->w - x, ROLE_FKEY, info->keys[i].key);
        int n = Cells_text(c, x, y, c->w - x, ROLE_FLABEL, info->keys[i].label);
        x += n;
        /* htop pads labels to 6 columns */
        for (; n < 6 && x < c->w; n++)
            Cells_set(c, x++, y, ' ', ROLE_FLABEL);
    }
}

void Chrome_render(Cells *c, const ChromeInfo *info, const Glyphs *g) {
    titleBar(c, info, g);
    Chrome_knobLine(c, 1, info->knobs, info->selected_knob, g);
    activityLine(c, 2, info, g);
    int ms = c->h - 2;
    Cells_box(c, 0, ms, c->w, 1, ROLE_STATUS);
    if (info->message)
        Cells_textFit(c, 1, ms, c->w - 2, info->message_role, info->message, g->ellipsis);
    functionBar(c, c->h - 1, info);
}

void Chrome_tooSmall(Cells *c, int min_w, int min_h) {
    Cells_clear(c);
    char l1[96], l2[96];
    snprintf(l1, sizeof l1, "moescope needs at least %dx%d;", min_w, min_h);
    snprintf(l2, sizeof l2, "this terminal is %dx%d.", c->w, c->h);
    const char *lines[] = {l1, l2, "Enlarge it, or press q to quit."};
    int y0 = c->h / 2 - 1;
    for (int i = 0; i < 3; i++) {
        int n = Cells_width(lines[i]);
        int x = (c->w - n) / 2;
        Cells_text(c, x < 0 ? 0 : x, y0 + i, c->w, i == 2 ? ROLE_DIM : ROLE_WARN, lines[i]);
    }
}
