/*
moescope - io/Chart.c
Figures with cairo: layout (title, panel grid, shared legend), axes with nice ticks, the
series kinds of Chart.h, and the writers for SVG, PDF and PNG and the data sidecar.

DESIGN
Everything is stored (copied) first and laid out at write time, when the page size is
known: a panel measures its tick labels with the real font to place its plot area, so
labels never overlap the axes. One render function draws every format; PNG is the same
drawing on an image surface scaled to CHART_PNG_DPI. Colour, dash, marker and hatch all follow
the style index so that a series reads the same in colour, in greyscale and in the legend.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/Chart.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <cairo.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/AtomicFile.h"
#include "util/CsvField.h"
#include "util/XUtils.h"

#define PNG_DPI CHART_PNG_DPI
#define FONT "sans-serif"
#define FS_TITLE 12.0
#define FS_PANEL 10.0
#define FS_NOTE 8.5
#define FS_LABEL 9.5
#define FS_TICK 8.5
#define FS_LEGEND 8.5
#define PAD 6.0
#define TICK_LEN 3.5
#define LINE_W 1.5
#define MARKER_R 3.2
#define SAMPLE_W 24.0
#define MAX_TICKS 32

typedef enum SeriesKind { KIND_LINE, KIND_BARS, KIND_HIST, KIND_VLINE, KIND_DATUM } SeriesKind;

static const char *const kindNames[] = {"line", "bar", "hist", "vline", "datum"};

typedef struct Series {
    SeriesKind kind;
    char *label;  /* NULL: not in the legend */
    char *source; /* sidecar only */
    int style;
    unsigned flags;
    double *x, *y, *z; /* [n]; hist: x low edges, z high edges, y counts */
    int n;
} Series;

typedef struct Panel {
    char *title, *xlabel, *ylabel;
    char **notes;
    int n_notes;
    ChartScale xscale, yscale;
    double lim[4]; /* xmin xmax ymin ymax, NaN: auto */
    double *xticks;
    char **xtick_labels;
    int n_xticks;
    Series *series;
    int n_series;
    float *heat; /* [heat_rows][heat_cols] or NULL */
    int heat_rows, heat_cols;
    double heat_vmax;
    int *bounds; /* [n_bounds + 1] */
    int n_bounds;
    char *zlabel;
} Panel;

struct Chart {
    char *title;
    char *subtitle;
    int rows, cols;
    Panel *panels;
    bool legend_below;
};

/* Okabe & Ito's palette, black first (the reference series), yellow left out (too light
   on white paper). */
static const double palette[][3] = {
    {0.000, 0.000, 0.000}, /* black */
    {0.000, 0.447, 0.698}, /* blue */
    {0.835, 0.369, 0.000}, /* vermillion */
    {0.000, 0.620, 0.451}, /* bluish green */
    {0.800, 0.475, 0.655}, /* reddish purple */
    {0.902, 0.624, 0.000}, /* orange */
    {0.337, 0.706, 0.914}, /* sky blue */
};
#define N_COLORS ((int)(sizeof palette / sizeof palette[0]))

static const double dashes[][6] = {
    {0}, {5.0, 2.5}, {1.2, 2.2}, {6.0, 2.0, 1.2, 2.0}, {10.0, 3.0},
    {6.0, 2.0, 1.2, 2.0, 1.2, 2.0}, {2.5, 2.5},
};
static const int dashCounts[] = {0, 2, 2, 4, 2, 6, 2};
#define N_DASHES ((int)(sizeof dashCounts / sizeof dashCounts[0]))

typedef enum Marker {
    MARK_CIRCLE, MARK_SQUARE, MARK_TRIANGLE, MARK_DIAMOND, MARK_DOWN, MARK_CROSS, MARK_PLUS,
    MARKS
} Marker;

typedef enum Hatch { HATCH_NONE, HATCH_SLASH, HATCH_BACK, HATCH_HORIZ, HATCH_CROSS, HATCH_VERT,
                     HATCH_GRID, HATCHES } Hatch;

/* viridis (matplotlib), 11 stops at t = 0, 0.1, ..., 1. */
static const unsigned viridisStops[] = {0x440154, 0x482475, 0x414487, 0x355f8d, 0x2a788e,
                                        0x21918c, 0x22a884, 0x44bf70, 0x7ad151, 0xbddf26,
                                        0xfde725};

/* ---------------------------------------------------------------- building */

Chart *Chart_new(const char *title, int rows, int cols) {
    Chart *this = xCalloc(1, sizeof *this);
    this->title = title ? xStrdup(title) : NULL;
    this->rows = rows < 1 ? 1 : rows;
    this->cols = cols < 1 ? 1 : cols;
    this->panels = xCalloc((size_t)this->rows * (size_t)this->cols, sizeof *this->panels);
    for (int p = 0; p < this->rows * this->cols; p++)
        for (int i = 0; i < 4; i++)
            this->panels[p].lim[i] = NAN;
    return this;
}

static void freeSeries(Series *s) {
    free(s->label);
    free(s->source);
    free(s->x);
    free(s->y);
    free(s->z);
}

void Chart_delete(Chart *this) {
    if (!this)
        return;
    for (int p = 0; p < this->rows * this->cols; p++) {
        Panel *P = &this->panels[p];
        free(P->title);
        free(P->xlabel);
        free(P->ylabel);
        for (int i = 0; i < P->n_notes; i++)
            free(P->notes[i]);
        free(P->notes);
        free(P->xticks);
        for (int i = 0; i < P->n_xticks; i++)
            free(P->xtick_labels[i]);
        free(P->xtick_labels);
        for (int i = 0; i < P->n_series; i++)
            freeSeries(&P->series[i]);
        free(P->series);
        free(P->heat);
        free(P->bounds);
        free(P->zlabel);
    }
    free(this->panels);
    free(this->title);
    free(this->subtitle);
    free(this);
}

static Panel *panelAt(Chart *this, int panel) {
    int n = this->rows * this->cols;
    return &this->panels[panel < 0 ? 0 : panel >= n ? n - 1 : panel];
}

static char *dupOrNull(const char *s) {
    return s ? xStrdup(s) : NULL;
}

static double *dupDoubles(const double *v, int n) {
    double *d = xMallocArray((size_t)(n > 0 ? n : 1), sizeof *d);
    if (v && n > 0)
        memcpy(d, v, (size_t)n * sizeof *d);
    return d;
}

void Chart_setPanel(Chart *this, int panel, const char *title, const char *xlabel,
                    const char *ylabel) {
    Panel *P = panelAt(this, panel);
    free(P->title);
    free(P->xlabel);
    free(P->ylabel);
    P->title = dupOrNull(title);
    P->xlabel = dupOrNull(xlabel);
    P->ylabel = dupOrNull(ylabel);
}

void Chart_addNote(Chart *this, int panel, const char *text) {
    Panel *P = panelAt(this, panel);
    P->notes = xReallocArray(P->notes, (size_t)P->n_notes + 1, sizeof *P->notes);
    P->notes[P->n_notes++] = xStrdup(text);
}

void Chart_setScale(Chart *this, int panel, ChartScale x, ChartScale y) {
    Panel *P = panelAt(this, panel);
    P->xscale = x;
    P->yscale = y;
}

void Chart_setLimits(Chart *this, int panel, double xmin, double xmax, double ymin,
                     double ymax) {
    Panel *P = panelAt(this, panel);
    P->lim[0] = xmin;
    P->lim[1] = xmax;
    P->lim[2] = ymin;
    P->lim[3] = ymax;
}

void Chart_setXTicks(Chart *this, int panel, const double *at, const char *const *labels,
                     int n) {
    Panel *P = panelAt(this, panel);
    for (int i = 0; i < P->n_xticks; i++)
        free(P->xtick_labels[i]);
    free(P->xtick_labels);
    free(P->xticks);
    P->n_xticks = n > 0 ? n : 0;
    P->xticks = dupDoubles(at, P->n_xticks);
    P->xtick_labels = xCalloc((size_t)P->n_xticks + 1, sizeof *P->xtick_labels);
    for (int i = 0; i < P->n_xticks; i++)
        P->xtick_labels[i] = labels && labels[i] ? xStrdup(labels[i])
                                                 : xAsprintf("%g", at[i]);
}

void Chart_setSubtitle(Chart *this, const char *text) {
    free(this->subtitle);
    this->subtitle = dupOrNull(text);
}

void Chart_setLegendBelow(Chart *this, bool below) {
    this->legend_below = below;
}

static Series *newSeries(Chart *this, int panel, SeriesKind kind, const char *label,
                         const char *source, int style, int n) {
    Panel *P = panelAt(this, panel);
    P->series = xReallocArray(P->series, (size_t)P->n_series + 1, sizeof *P->series);
    Series *s = &P->series[P->n_series++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->label = dupOrNull(label);
    s->source = dupOrNull(source);
    s->style = style < 0 ? 0 : style;
    s->n = n > 0 ? n : 0;
    return s;
}

void Chart_addLine(Chart *this, int panel, const char *label, const double *x,
                   const double *y, int n, int style, unsigned flags, const char *source) {
    Series *s = newSeries(this, panel, KIND_LINE, label, source, style, n);
    s->flags = flags ? flags : CHART_LINE;
    s->x = dupDoubles(x, s->n);
    s->y = dupDoubles(y, s->n);
}

void Chart_addBars(Chart *this, int panel, const char *label, const double *x,
                   const double *y, int n, int style, const char *source) {
    Series *s = newSeries(this, panel, KIND_BARS, label, source, style, n);
    s->x = dupDoubles(x, s->n);
    s->y = dupDoubles(y, s->n);
}

void Chart_addHistogram(Chart *this, int panel, const char *label, double lo, double hi,
                        const double *counts, int bins, int style, const char *source) {
    Series *s = newSeries(this, panel, KIND_HIST, label, source, style, bins);
    s->x = dupDoubles(NULL, s->n);
    s->z = dupDoubles(NULL, s->n);
    s->y = dupDoubles(counts, s->n);
    for (int b = 0; b < s->n; b++) {
        s->x[b] = lo + (hi - lo) * b / bins;
        s->z[b] = lo + (hi - lo) * (b + 1) / bins;
    }
}

void Chart_addVLine(Chart *this, int panel, double x, const char *label, const char *source) {
    Series *s = newSeries(this, panel, KIND_VLINE, label, source, 0, 1);
    s->x = dupDoubles(&x, 1);
}

void Chart_addDatum(Chart *this, int panel, const char *series, const char *source, double x,
                    double y, double z) {
    Series *s = newSeries(this, panel, KIND_DATUM, series, source, 0, 1);
    s->x = dupDoubles(&x, 1);
    s->y = dupDoubles(&y, 1);
    s->z = dupDoubles(&z, 1);
}

void Chart_setHeatmap(Chart *this, int panel, const float *m, int rows, int cols, double vmax,
                      const int *bounds, int n_bounds, const char *zlabel) {
    Panel *P = panelAt(this, panel);
    free(P->heat);
    free(P->bounds);
    free(P->zlabel);
    P->heat_rows = rows > 0 ? rows : 0;
    P->heat_cols = cols > 0 ? cols : 0;
    size_t cells = (size_t)P->heat_rows * (size_t)P->heat_cols;
    P->heat = xMallocArray(cells ? cells : 1, sizeof(float));
    if (cells)
        memcpy(P->heat, m, cells * sizeof(float));
    if (!(vmax > 0)) {
        vmax = 0;
        for (size_t i = 0; i < cells; i++)
            if (isfinite(P->heat[i]) && P->heat[i] > vmax)
                vmax = P->heat[i];
    }
    P->heat_vmax = vmax > 0 ? vmax : 1;
    P->n_bounds = bounds && n_bounds > 0 ? n_bounds : 0;
    P->bounds = xMallocArray((size_t)P->n_bounds + 1, sizeof(int));
    if (P->n_bounds)
        memcpy(P->bounds, bounds, ((size_t)P->n_bounds + 1) * sizeof(int));
    P->zlabel = dupOrNull(zlabel);
}

/* ---------------------------------------------------------------- styles, ticks */

void Chart_styleColor(int style, double rgb[3]) {
    const double *c = palette[(style < 0 ? 0 : style) % N_COLORS];
    rgb[0] = c[0];
    rgb[1] = c[1];
    rgb[2] = c[2];
}

void Chart_viridis(double t, double rgb[3]) {
    if (!(t > 0))
        t = 0;
    if (t > 1)
        t = 1;
    double f = t * 10.0;
    int i = (int)f;
    if (i >= 10)
        i = 9;
    f -= i;
    for (int c = 0; c < 3; c++) {
        int shift = 16 - 8 * c;
        double a = (viridisStops[i] >> shift & 0xff) / 255.0;
        double b = (viridisStops[i + 1] >> shift & 0xff) / 255.0;
        rgb[c] = a + (b - a) * f;
    }
}

static double niceStep(double lo, double hi, int target) {
    double raw = (hi - lo) / (target < 1 ? 1 : target);
    double mag = pow(10.0, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

int Chart_niceTicks(double lo, double hi, int target, double *ticks, int max) {
    if (max < 1 || !isfinite(lo) || !isfinite(hi))
        return 0;
    if (!(hi > lo)) {
        ticks[0] = lo;
        return 1;
    }
    double step = niceStep(lo, hi, target);
    double first = ceil(lo / step - 1e-9);
    int n = 0;
    for (double i = first; n < max; i += 1.0) {
        double v = i * step;
        if (v > hi + step * 1e-9)
            break;
        ticks[n++] = fabs(v) < step * 1e-9 ? 0.0 : v;
    }
    return n;
}

void Chart_formatTick(double v, double step, char *buf, int size) {
    double a = fabs(v);
    if (v != 0 && (a >= 1e6 || a < 1e-4)) {
        snprintf(buf, (size_t)size, "%.3g", v);
        return;
    }
    int dec = step > 0 && step < 1 ? (int)ceil(-log10(step) - 1e-9) : 0;
    if (dec > 9)
        dec = 9;
    snprintf(buf, (size_t)size, "%.*f", dec, v);
}

/* ---------------------------------------------------------------- axes */

typedef struct Axis {
    double lo, hi; /* data units */
    bool log;
    double ticks[MAX_TICKS];
    char labels[MAX_TICKS][32];
    int n_ticks;
    double a, b; /* device = a + b * t(value) */
} Axis;

static double axisT(const Axis *ax, double v) {
    return ax->log ? log10(v) : v;
}

static double axisMap(const Axis *ax, double v) {
    return ax->a + ax->b * axisT(ax, v);
}

static bool axisUsable(const Axis *ax, double v) {
    return isfinite(v) && (!ax->log || v > 0);
}

/* Device range [d0, d1] for the axis range. */
static void axisPlace(Axis *ax, double d0, double d1) {
    double t0 = axisT(ax, ax->lo), t1 = axisT(ax, ax->hi);
    ax->b = (d1 - d0) / (t1 - t0);
    ax->a = d0 - ax->b * t0;
}

typedef struct Range {
    double lo, hi;
    bool any;
} Range;

static void rangeAdd(Range *r, double v, bool log) {
    if (!isfinite(v) || (log && v <= 0))
        return;
    if (!r->any || v < r->lo)
        r->lo = v;
    if (!r->any || v > r->hi)
        r->hi = v;
    r->any = true;
}

/* The axis range from data with a 5% margin (log: in decades), overridden by limits. */
static void axisRange(Axis *ax, Range r, double lim_lo, double lim_hi, bool zero_floor) {
    if (!r.any) {
        r.lo = ax->log ? 0.1 : 0.0;
        r.hi = 1.0;
    }
    double t0 = axisT(ax, r.lo), t1 = axisT(ax, r.hi);
    if (t1 - t0 < 1e-12) {
        double w = ax->log ? 0.5 : (fabs(t0) > 0 ? fabs(t0) * 0.1 : 0.5);
        t0 -= w;
        t1 += w;
    }
    double pad = 0.05 * (t1 - t0);
    bool floor0 = zero_floor && !ax->log && r.lo >= 0;
    t0 = floor0 ? 0.0 : t0 - pad;
    t1 += pad;
    ax->lo = ax->log ? pow(10.0, t0) : t0;
    ax->hi = ax->log ? pow(10.0, t1) : t1;
    if (isfinite(lim_lo) && (!ax->log || lim_lo > 0))
        ax->lo = lim_lo;
    if (isfinite(lim_hi) && (!ax->log || lim_hi > 0))
        ax->hi = lim_hi;
    if (!(ax->hi > ax->lo))
        ax->hi = ax->lo + (ax->log ? ax->lo : 1.0);
}

static void axisTicks(Axis *ax, int target) {
    double step = 0;
    ax->n_ticks = 0;
    if (ax->log) {
        int d0 = (int)ceil(log10(ax->lo) - 1e-9), d1 = (int)floor(log10(ax->hi) + 1e-9);
        static const double mults[] = {1, 2, 5};
        int nm = d1 - d0 + 1 >= 2 ? 1 : 3;
        for (int d = d0 - 1; d <= d1 && ax->n_ticks < MAX_TICKS; d++)
            for (int m = 0; m < nm && ax->n_ticks < MAX_TICKS; m++) {
                double v = mults[m] * pow(10.0, d);
                if (v >= ax->lo * (1 - 1e-9) && v <= ax->hi * (1 + 1e-9))
                    ax->ticks[ax->n_ticks++] = v;
            }
        if (ax->n_ticks >= 2) {
            for (int i = 0; i < ax->n_ticks; i++)
                snprintf(ax->labels[i], sizeof ax->labels[i], "%g", ax->ticks[i]);
            return;
        }
    }
    ax->n_ticks = Chart_niceTicks(ax->lo, ax->hi, target, ax->ticks, MAX_TICKS);
    step = ax->n_ticks > 1 ? ax->ticks[1] - ax->ticks[0] : niceStep(ax->lo, ax->hi, target);
    for (int i = 0; i < ax->n_ticks; i++)
        Chart_formatTick(ax->ticks[i], step, ax->labels[i], sizeof ax->labels[i]);
}

/* ---------------------------------------------------------------- text */

/* Draws (or with draw false only measures) text with its anchor at (x, y): ha 0 left,
   0.5 centre, 1 right; va 0 top, 0.5 middle, 1 bottom of the font box. angle in
   radians (counter-clockwise text reads bottom to top). Returns the advance width. */
static double text(cairo_t *cr, double x, double y, const char *s, double size, bool bold,
                   double ha, double va, double angle, bool draw) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_text_extents_t te;
    cairo_font_extents_t fe;
    cairo_text_extents(cr, s, &te);
    cairo_font_extents(cr, &fe);
    if (!draw)
        return te.x_advance;
    double h = fe.ascent + fe.descent;
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -angle);
    cairo_move_to(cr, -ha * te.x_advance, -va * h + fe.ascent);
    cairo_show_text(cr, s);
    cairo_restore(cr);
    return te.x_advance;
}

static double textWidth(cairo_t *cr, const char *s, double size, bool bold) {
    return text(cr, 0, 0, s, size, bold, 0, 0, 0, false);
}

static double lineHeight(cairo_t *cr, double size) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    return fe.ascent + fe.descent;
}

/* ---------------------------------------------------------------- styled drawing */

static void setColor(cairo_t *cr, int style) {
    double c[3];
    Chart_styleColor(style, c);
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
}

static void setDash(cairo_t *cr, int style) {
    int d = style % N_DASHES;
    cairo_set_dash(cr, dashes[d], dashCounts[d], 0);
}

static void marker(cairo_t *cr, int style, double x, double y, double r) {
    Marker m = (Marker)(style % MARKS);
    cairo_save(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_new_path(cr);
    switch (m) {
    case MARK_CIRCLE: cairo_arc(cr, x, y, r, 0, 2 * M_PI); break;
    case MARK_SQUARE: cairo_rectangle(cr, x - r * 0.85, y - r * 0.85, r * 1.7, r * 1.7); break;
    case MARK_TRIANGLE:
        cairo_move_to(cr, x, y - r * 1.15);
        cairo_line_to(cr, x + r, y + r * 0.7);
        cairo_line_to(cr, x - r, y + r * 0.7);
        cairo_close_path(cr);
        break;
    case MARK_DIAMOND:
        cairo_move_to(cr, x, y - r * 1.2);
        cairo_line_to(cr, x + r, y);
        cairo_line_to(cr, x, y + r * 1.2);
        cairo_line_to(cr, x - r, y);
        cairo_close_path(cr);
        break;
    case MARK_DOWN:
        cairo_move_to(cr, x, y + r * 1.15);
        cairo_line_to(cr, x + r, y - r * 0.7);
        cairo_line_to(cr, x - r, y - r * 0.7);
        cairo_close_path(cr);
        break;
    case MARK_CROSS:
        cairo_move_to(cr, x - r, y - r);
        cairo_line_to(cr, x + r, y + r);
        cairo_move_to(cr, x - r, y + r);
        cairo_line_to(cr, x + r, y - r);
        break;
    case MARK_PLUS:
    case MARKS:
        cairo_move_to(cr, x - r * 1.2, y);
        cairo_line_to(cr, x + r * 1.2, y);
        cairo_move_to(cr, x, y - r * 1.2);
        cairo_line_to(cr, x, y + r * 1.2);
        break;
    }
    if (m == MARK_CROSS || m == MARK_PLUS) {
        cairo_set_line_width(cr, 1.6);
        cairo_stroke(cr);
    } else {
        /* A thin white rim keeps overlapping markers apart. */
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, 0.6);
        cairo_stroke(cr);
    }
    cairo_restore(cr);
}

/* A filled rectangle in the style's colour with (if hatch) its hatch in white over it. */
static void hatchedRect(cairo_t *cr, int style, bool hatched, double x, double y, double w,
                        double h) {
    if (w <= 0 || h <= 0)
        return;
    cairo_save(cr);
    cairo_rectangle(cr, x, y, w, h);
    setColor(cr, style);
    cairo_fill_preserve(cr);
    cairo_clip(cr);
    Hatch hatch = hatched ? (Hatch)(style % HATCHES) : HATCH_NONE;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, 0.8);
    double sp = 3.5, span = w + h;
    for (double o = -span; o <= span && hatch != HATCH_NONE; o += sp) {
        if (hatch == HATCH_SLASH || hatch == HATCH_CROSS) {
            cairo_move_to(cr, x + o, y + h);
            cairo_line_to(cr, x + o + h, y);
        }
        if (hatch == HATCH_BACK || hatch == HATCH_CROSS) {
            cairo_move_to(cr, x + o, y);
            cairo_line_to(cr, x + o + h, y + h);
        }
        if ((hatch == HATCH_HORIZ || hatch == HATCH_GRID) && o >= 0 && o <= h) {
            cairo_move_to(cr, x, y + o);
            cairo_line_to(cr, x + w, y + o);
        }
        if ((hatch == HATCH_VERT || hatch == HATCH_GRID) && o >= 0 && o <= w) {
            cairo_move_to(cr, x + o, y);
            cairo_line_to(cr, x + o, y + h);
        }
    }
    cairo_stroke(cr);
    cairo_restore(cr);
    cairo_save(cr);
    cairo_rectangle(cr, x, y, w, h);
    cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
    cairo_set_line_width(cr, 0.5);
    cairo_stroke(cr);
    cairo_restore(cr);
}

static void vlineStyle(cairo_t *cr) {
    static const double d[] = {4.0, 2.5};
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    cairo_set_line_width(cr, 1.0);
    cairo_set_dash(cr, d, 2, 0);
}

/* The legend sample of a series, in the box [x, x + SAMPLE_W] around the line y. */
static void legendSample(cairo_t *cr, const Series *s, double x, double y) {
    cairo_save(cr);
    if (s->kind == KIND_LINE) {
        if (s->flags & CHART_LINE) {
            setColor(cr, s->style);
            setDash(cr, s->style);
            cairo_set_line_width(cr, LINE_W);
            cairo_move_to(cr, x, y);
            cairo_line_to(cr, x + SAMPLE_W, y);
            cairo_stroke(cr);
        }
        if (s->flags & CHART_MARKERS) {
            setColor(cr, s->style);
            marker(cr, s->style, x + SAMPLE_W / 2, y, MARKER_R);
        }
    } else if (s->kind == KIND_VLINE) {
        vlineStyle(cr);
        cairo_move_to(cr, x, y);
        cairo_line_to(cr, x + SAMPLE_W, y);
        cairo_stroke(cr);
    } else {
        hatchedRect(cr, s->style, s->kind == KIND_BARS, x + 4, y - 4.5, SAMPLE_W - 8, 9);
    }
    cairo_restore(cr);
}

/* ---------------------------------------------------------------- panels */

typedef struct Box {
    double x, y, w, h;
} Box;

static bool inBox(const Box *b, double x, double y) {
    return x >= b->x && x <= b->x + b->w && y >= b->y && y <= b->y + b->h;
}

static bool hasPlottable(const Panel *P) {
    for (int i = 0; i < P->n_series; i++)
        if (P->series[i].kind != KIND_DATUM)
            return true;
    return P->heat != NULL;
}

static int barSeriesCount(const Panel *P, double *spacing) {
    int count = 0;
    double sp = INFINITY;
    for (int i = 0; i < P->n_series; i++) {
        const Series *s = &P->series[i];
        if (s->kind != KIND_BARS)
            continue;
        count++;
        for (int a = 0; a < s->n; a++)
            for (int b = a + 1; b < s->n; b++)
                if (s->x[a] != s->x[b] && fabs(s->x[a] - s->x[b]) < sp)
                    sp = fabs(s->x[a] - s->x[b]);
    }
    *spacing = isfinite(sp) ? sp : 1.0;
    return count;
}

static void dataRanges(const Panel *P, Axis *xa, Axis *ya) {
    Range rx = {0}, ry = {0};
    bool bars = false;
    double spacing;
    int nbar = barSeriesCount(P, &spacing);
    for (int i = 0; i < P->n_series; i++) {
        const Series *s = &P->series[i];
        for (int j = 0; j < s->n; j++) {
            switch (s->kind) {
            case KIND_LINE:
                if (axisUsable(xa, s->x[j]) && axisUsable(ya, s->y[j])) {
                    rangeAdd(&rx, s->x[j], xa->log);
                    rangeAdd(&ry, s->y[j], ya->log);
                }
                break;
            case KIND_BARS:
                rangeAdd(&rx, s->x[j] - 0.5 * spacing, xa->log);
                rangeAdd(&rx, s->x[j] + 0.5 * spacing, xa->log);
                rangeAdd(&ry, s->y[j], ya->log);
                rangeAdd(&ry, 0.0, ya->log);
                bars = true;
                break;
            case KIND_HIST:
                rangeAdd(&rx, s->x[j], xa->log);
                rangeAdd(&rx, s->z[j], xa->log);
                rangeAdd(&ry, s->y[j], ya->log);
                rangeAdd(&ry, 0.0, ya->log);
                bars = true;
                break;
            case KIND_VLINE: rangeAdd(&rx, s->x[j], xa->log); break;
            case KIND_DATUM: break;
            }
        }
    }
    for (int i = 0; i < P->n_xticks; i++)
        rangeAdd(&rx, P->xticks[i], xa->log);
    (void)nbar;
    axisRange(xa, rx, P->lim[0], P->lim[1], false);
    axisRange(ya, ry, P->lim[2], P->lim[3], bars);
    /* Bars and histograms stand on the axis: no margin under 0 or at a histogram's ends. */
    bool hist = false;
    for (int i = 0; i < P->n_series; i++)
        hist = hist || P->series[i].kind == KIND_HIST;
    if (hist && !isfinite(P->lim[0]) && rx.any)
        xa->lo = rx.lo;
    if (hist && !isfinite(P->lim[1]) && rx.any)
        xa->hi = rx.hi;
}

/* Points covered by the data (device units), to keep the legend off them. */
typedef struct Cloud {
    double *xy;
    int n, cap;
} Cloud;

static void cloudAdd(Cloud *c, double x, double y) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->xy = xReallocArray(c->xy, (size_t)c->cap, 2 * sizeof(double));
    }
    c->xy[2 * c->n] = x;
    c->xy[2 * c->n + 1] = y;
    c->n++;
}

static void drawLineSeries(cairo_t *cr, const Series *s, const Axis *xa, const Axis *ya,
                           Cloud *cloud) {
    cairo_save(cr);
    setColor(cr, s->style);
    setDash(cr, s->style);
    cairo_set_line_width(cr, LINE_W);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
    bool pen = false;
    double px = 0, py = 0;
    for (int j = 0; j < s->n; j++) {
        if (!axisUsable(xa, s->x[j]) || !axisUsable(ya, s->y[j])) {
            pen = false;
            continue;
        }
        double x = axisMap(xa, s->x[j]), y = axisMap(ya, s->y[j]);
        if (pen && (s->flags & CHART_LINE)) {
            cairo_line_to(cr, x, y);
            for (int k = 1; k < 4; k++)
                cloudAdd(cloud, px + (x - px) * k / 4, py + (y - py) * k / 4);
        } else {
            cairo_move_to(cr, x, y);
        }
        cloudAdd(cloud, x, y);
        pen = true;
        px = x;
        py = y;
    }
    if (s->flags & CHART_LINE)
        cairo_stroke(cr);
    cairo_new_path(cr);
    if (s->flags & CHART_MARKERS)
        for (int j = 0; j < s->n; j++)
            if (axisUsable(xa, s->x[j]) && axisUsable(ya, s->y[j]))
                marker(cr, s->style, axisMap(xa, s->x[j]), axisMap(ya, s->y[j]), MARKER_R);
    cairo_restore(cr);
}

static void drawBars(cairo_t *cr, const Panel *P, const Axis *xa, const Axis *ya,
                     Cloud *cloud) {
    double spacing;
    int nbar = barSeriesCount(P, &spacing);
    int slot = 0;
    double base = axisMap(ya, ya->log ? ya->lo : (ya->lo > 0 ? ya->lo : 0.0));
    for (int i = 0; i < P->n_series; i++) {
        const Series *s = &P->series[i];
        if (s->kind != KIND_BARS)
            continue;
        for (int j = 0; j < s->n; j++) {
            if (!axisUsable(ya, s->y[j]))
                continue;
            double group = 0.8 * spacing, w = group / nbar;
            double x0 = s->x[j] - group / 2 + slot * w;
            double dx0 = axisMap(xa, x0), dx1 = axisMap(xa, x0 + w);
            double top = axisMap(ya, s->y[j]);
            hatchedRect(cr, s->style, true, dx0, fmin(top, base), dx1 - dx0, fabs(base - top));
            for (int k = 0; k <= 4; k++) {
                cloudAdd(cloud, dx0 + (dx1 - dx0) * k / 4, top);
                cloudAdd(cloud, dx0 + (dx1 - dx0) * k / 4, (top + base) / 2);
            }
        }
        slot++;
    }
}

static void drawHist(cairo_t *cr, const Series *s, const Axis *xa, const Axis *ya,
                     Cloud *cloud) {
    double base = axisMap(ya, ya->log ? ya->lo : 0.0);
    for (int b = 0; b < s->n; b++) {
        if (!(s->y[b] > 0) || !axisUsable(ya, s->y[b]))
            continue;
        double x0 = axisMap(xa, s->x[b]), x1 = axisMap(xa, s->z[b]), top = axisMap(ya, s->y[b]);
        hatchedRect(cr, s->style, false, x0, top, x1 - x0, base - top);
        for (double y = top; y < base; y += 6)
            cloudAdd(cloud, (x0 + x1) / 2, y);
    }
}

static void drawVLine(cairo_t *cr, const Series *s, const Axis *xa, const Box *pb,
                      Cloud *cloud) {
    if (!axisUsable(xa, s->x[0]))
        return;
    double x = axisMap(xa, s->x[0]);
    cairo_save(cr);
    vlineStyle(cr);
    cairo_move_to(cr, x, pb->y);
    cairo_line_to(cr, x, pb->y + pb->h);
    cairo_stroke(cr);
    cairo_restore(cr);
    for (int k = 0; k <= 16; k++)
        cloudAdd(cloud, x, pb->y + pb->h * k / 16);
}

static void drawAxes(cairo_t *cr, const Box *pb, const Axis *xa, const Axis *ya,
                     bool grid) {
    cairo_save(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    if (grid) {
        cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
        cairo_set_line_width(cr, 0.5);
        for (int i = 0; i < ya->n_ticks; i++) {
            double y = axisMap(ya, ya->ticks[i]);
            cairo_move_to(cr, pb->x, y);
            cairo_line_to(cr, pb->x + pb->w, y);
        }
        for (int i = 0; i < xa->n_ticks; i++) {
            double x = axisMap(xa, xa->ticks[i]);
            cairo_move_to(cr, x, pb->y);
            cairo_line_to(cr, x, pb->y + pb->h);
        }
        cairo_stroke(cr);
    }
    cairo_restore(cr);
}

static void drawFrameAndTicks(cairo_t *cr, const Box *pb, const Axis *xa, const Axis *ya,
                              bool xtick_labels) {
    cairo_save(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 0.8);
    cairo_rectangle(cr, pb->x, pb->y, pb->w, pb->h);
    cairo_stroke(cr);
    for (int i = 0; i < ya->n_ticks; i++) {
        double y = axisMap(ya, ya->ticks[i]);
        cairo_move_to(cr, pb->x, y);
        cairo_line_to(cr, pb->x - TICK_LEN, y);
        cairo_stroke(cr);
        text(cr, pb->x - TICK_LEN - 2, y, ya->labels[i], FS_TICK, false, 1, 0.5, 0, true);
    }
    for (int i = 0; i < xa->n_ticks; i++) {
        double x = axisMap(xa, xa->ticks[i]);
        cairo_move_to(cr, x, pb->y + pb->h);
        cairo_line_to(cr, x, pb->y + pb->h + TICK_LEN);
        cairo_stroke(cr);
        if (xtick_labels)
            text(cr, x, pb->y + pb->h + TICK_LEN + 1.5, xa->labels[i], FS_TICK, false, 0.5, 0,
                 0, true);
    }
    cairo_restore(cr);
}

typedef struct LegendItem {
    const Series *s;
} LegendItem;

static int legendItems(const Panel *panels, int n_panels, LegendItem *items, int max) {
    int n = 0;
    for (int p = 0; p < n_panels; p++) {
        for (int i = 0; i < panels[p].n_series && n < max; i++) {
            const Series *s = &panels[p].series[i];
            if (!s->label || s->kind == KIND_DATUM)
                continue;
            bool dup = false;
            for (int k = 0; k < n && !dup; k++)
                dup = items[k].s->kind == s->kind && items[k].s->style == s->style &&
                      items[k].s->flags == s->flags && strcmp(items[k].s->label, s->label) == 0;
            if (!dup)
                items[n++].s = s;
        }
    }
    return n;
}

#define MAX_LEGEND 64

/* A one-column legend inside the plot box, in the corner that covers the fewest data
   points (preferring top right). */
static void panelLegend(cairo_t *cr, const Panel *P, const Box *pb, const Cloud *cloud) {
    LegendItem items[MAX_LEGEND];
    int n = legendItems(P, 1, items, MAX_LEGEND);
    if (n == 0)
        return;
    double lh = lineHeight(cr, FS_LEGEND) * 1.15, tw = 0;
    for (int i = 0; i < n; i++)
        tw = fmax(tw, textWidth(cr, items[i].s->label, FS_LEGEND, false));
    double w = 4 + SAMPLE_W + 4 + tw + 5, h = n * lh + 5, m = 5;
    double xs[3] = {pb->x + pb->w - m - w, pb->x + m, pb->x + (pb->w - w) / 2};
    double ys[3] = {pb->y + m, pb->y + pb->h - m - h, pb->y + (pb->h - h) / 2};
    static const int order[][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {0, 2}, {1, 2}, {2, 0},
                                   {2, 1}};
    Box best = {xs[0], ys[0], w, h};
    int best_hits = -1;
    for (int c = 0; c < 8; c++) {
        Box b = {xs[order[c][0]], ys[order[c][1]], w, h};
        Box grown = {b.x - MARKER_R, b.y - MARKER_R, b.w + 2 * MARKER_R, b.h + 2 * MARKER_R};
        int hits = 0;
        for (int i = 0; i < cloud->n; i++)
            hits += inBox(&grown, cloud->xy[2 * i], cloud->xy[2 * i + 1]);
        if (best_hits < 0 || hits < best_hits) {
            best_hits = hits;
            best = b;
        }
    }
    cairo_save(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_rectangle(cr, best.x, best.y, best.w, best.h);
    cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
    cairo_set_line_width(cr, 0.5);
    cairo_stroke(cr);
    for (int i = 0; i < n; i++) {
        double y = best.y + 2.5 + (i + 0.5) * lh;
        legendSample(cr, items[i].s, best.x + 4, y);
        cairo_set_source_rgb(cr, 0, 0, 0);
        text(cr, best.x + 8 + SAMPLE_W, y, items[i].s->label, FS_LEGEND, false, 0, 0.5, 0, true);
    }
    cairo_restore(cr);
}

/* Block labels for a heatmap axis: every m-th block so that labels do not collide. */
static int blockLabelStep(cairo_t *cr, const Panel *P, double side) {
    static const int steps[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    double min_w = INFINITY;
    for (int b = 0; b < P->n_bounds; b++) {
        double w = (P->bounds[b + 1] - P->bounds[b]) * side / P->heat_rows;
        min_w = fmin(min_w, w);
    }
    char buf[16];
    snprintf(buf, sizeof buf, "%d", P->n_bounds - 1);
    double need = textWidth(cr, buf, FS_TICK, false) + 4;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (min_w * steps[i] >= need)
            return steps[i];
    return P->n_bounds;
}

static void drawHeatmap(cairo_t *cr, const Panel *P, const Box *pb) {
    int rows = P->heat_rows, cols = P->heat_cols;
    /* Each cell becomes f x f pixels: SVG viewers smooth scaled images (cairo's SVG has no
       nearest-neighbour hint), which would blur small matrices. */
    int big = rows > cols ? rows : cols, f = big > 0 && big < 1024 ? 1024 / big : 1;
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, cols * f, rows * f);
    if (cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(img);
        return;
    }
    cairo_surface_flush(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    for (int r = 0; r < rows * f; r++) {
        uint32_t *row = (uint32_t *)(void *)(data + (size_t)r * (size_t)stride);
        for (int c = 0; c < cols; c++) {
            float v = P->heat[(size_t)(r / f) * (size_t)cols + (size_t)c];
            double rgb[3] = {0.82, 0.82, 0.82};
            if (isfinite(v))
                Chart_viridis(v / P->heat_vmax, rgb);
            uint32_t px = (uint32_t)lround(rgb[0] * 255) << 16 |
                          (uint32_t)lround(rgb[1] * 255) << 8 | (uint32_t)lround(rgb[2] * 255);
            for (int k = 0; k < f; k++)
                row[c * f + k] = px;
        }
    }
    cairo_surface_mark_dirty(img);
    cairo_save(cr);
    cairo_rectangle(cr, pb->x, pb->y, pb->w, pb->h);
    cairo_clip(cr);
    cairo_translate(cr, pb->x, pb->y);
    cairo_scale(cr, pb->w / (cols * f), pb->h / (rows * f));
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
    /* Block boundaries and labels at the block centres. */
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, P->n_bounds > 32 ? 0.3 : 0.7);
    for (int b = 1; b < P->n_bounds; b++) {
        double x = pb->x + pb->w * P->bounds[b] / cols, y = pb->y + pb->h * P->bounds[b] / rows;
        cairo_move_to(cr, x, pb->y);
        cairo_line_to(cr, x, pb->y + pb->h);
        cairo_move_to(cr, pb->x, y);
        cairo_line_to(cr, pb->x + pb->w, y);
    }
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 0.8);
    cairo_rectangle(cr, pb->x, pb->y, pb->w, pb->h);
    cairo_stroke(cr);
    int step = P->n_bounds ? blockLabelStep(cr, P, pb->w) : 1;
    for (int b = 0; b < P->n_bounds; b += step) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", b);
        double mid = (P->bounds[b] + P->bounds[b + 1]) / 2.0;
        double x = pb->x + pb->w * mid / cols, y = pb->y + pb->h * mid / rows;
        cairo_move_to(cr, x, pb->y + pb->h);
        cairo_line_to(cr, x, pb->y + pb->h + TICK_LEN);
        cairo_move_to(cr, pb->x, y);
        cairo_line_to(cr, pb->x - TICK_LEN, y);
        cairo_stroke(cr);
        text(cr, x, pb->y + pb->h + TICK_LEN + 1.5, buf, FS_TICK, false, 0.5, 0, 0, true);
        text(cr, pb->x - TICK_LEN - 2, y, buf, FS_TICK, false, 1, 0.5, 0, true);
    }
    cairo_restore(cr);
}

#define CBAR_W 10.0

static double colorbarWidth(cairo_t *cr, const Panel *P, Axis *za) {
    za->log = false;
    za->lo = 0;
    za->hi = P->heat_vmax;
    axisTicks(za, 5);
    double tw = 0;
    for (int i = 0; i < za->n_ticks; i++)
        tw = fmax(tw, textWidth(cr, za->labels[i], FS_TICK, false));
    return 10 + CBAR_W + TICK_LEN + 2 + tw + (P->zlabel ? 4 + lineHeight(cr, FS_LABEL) : 0);
}

static void drawColorbar(cairo_t *cr, const Panel *P, Axis *za, double x, const Box *pb) {
    Box cb = {x + 10, pb->y, CBAR_W, pb->h};
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 256);
    if (cairo_surface_status(img) == CAIRO_STATUS_SUCCESS) {
        cairo_surface_flush(img);
        unsigned char *data = cairo_image_surface_get_data(img);
        int stride = cairo_image_surface_get_stride(img);
        for (int r = 0; r < 256; r++) {
            double rgb[3];
            Chart_viridis(1.0 - r / 255.0, rgb);
            *(uint32_t *)(void *)(data + (size_t)r * (size_t)stride) =
                (uint32_t)lround(rgb[0] * 255) << 16 | (uint32_t)lround(rgb[1] * 255) << 8 |
                (uint32_t)lround(rgb[2] * 255);
        }
        cairo_surface_mark_dirty(img);
        cairo_save(cr);
        cairo_rectangle(cr, cb.x, cb.y, cb.w, cb.h);
        cairo_clip(cr);
        cairo_translate(cr, cb.x, cb.y);
        cairo_scale(cr, cb.w, cb.h / 256);
        cairo_set_source_surface(cr, img, 0, 0);
        cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_BILINEAR);
        cairo_paint(cr);
        cairo_restore(cr);
    }
    cairo_surface_destroy(img);
    axisPlace(za, cb.y + cb.h, cb.y);
    cairo_save(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 0.6);
    cairo_rectangle(cr, cb.x, cb.y, cb.w, cb.h);
    cairo_stroke(cr);
    double tw = 0;
    for (int i = 0; i < za->n_ticks; i++) {
        double y = axisMap(za, za->ticks[i]);
        cairo_move_to(cr, cb.x + cb.w, y);
        cairo_line_to(cr, cb.x + cb.w + TICK_LEN, y);
        cairo_stroke(cr);
        tw = fmax(tw, text(cr, cb.x + cb.w + TICK_LEN + 2, y, za->labels[i], FS_TICK, false, 0,
                           0.5, 0, true));
    }
    if (P->zlabel)
        text(cr, cb.x + cb.w + TICK_LEN + 2 + tw + 4 + lineHeight(cr, FS_LABEL),
             cb.y + cb.h / 2, P->zlabel, FS_LABEL, false, 0.5, 1, M_PI / 2, true);
    cairo_restore(cr);
}

/* Picks x ticks whose labels fit the width: given ticks are thinned to every m-th. */
static void xTicksFitting(cairo_t *cr, const Panel *P, Axis *xa, double width) {
    if (P->n_xticks > 0) {
        static const int steps[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
        double total = 0;
        for (int i = 0; i < P->n_xticks; i++)
            total += textWidth(cr, P->xtick_labels[i], FS_TICK, false) + 8;
        int m = 1;
        for (size_t i = 0; i < sizeof steps / sizeof steps[0] && total / steps[i] > width; i++)
            m = i + 1 < sizeof steps / sizeof steps[0] ? steps[i + 1] : steps[i];
        xa->n_ticks = 0;
        for (int i = 0; i < P->n_xticks && xa->n_ticks < MAX_TICKS; i += m) {
            if (!axisUsable(xa, P->xticks[i]))
                continue;
            xa->ticks[xa->n_ticks] = P->xticks[i];
            snprintf(xa->labels[xa->n_ticks], sizeof xa->labels[0], "%s", P->xtick_labels[i]);
            xa->n_ticks++;
        }
        return;
    }
    for (int target = (int)fmin(8, fmax(2, width / 50)); target >= 1; target--) {
        axisTicks(xa, target);
        double total = 0;
        for (int i = 0; i < xa->n_ticks; i++)
            total += textWidth(cr, xa->labels[i], FS_TICK, false) + 8;
        if (total <= width)
            return;
    }
}

/* Height of a panel's title and notes. */
static double headerHeight(cairo_t *cr, const Panel *P) {
    return (P->title ? lineHeight(cr, FS_PANEL) * 1.1 : 0) +
           P->n_notes * lineHeight(cr, FS_NOTE) * 1.1;
}

/* header: the height reserved for titles and notes, the same across a row of panels so
   that their plot boxes line up. */
static void renderPanel(cairo_t *cr, const Panel *P, const Box *cell, double header,
                        bool legend_inside) {
    double y = cell->y;
    if (P->title) {
        text(cr, cell->x + cell->w / 2, y, P->title, FS_PANEL, true, 0.5, 0, 0, true);
        y += lineHeight(cr, FS_PANEL) * 1.1;
    }
    for (int i = 0; i < P->n_notes; i++) {
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        text(cr, cell->x + cell->w / 2, y, P->notes[i], FS_NOTE, false, 0.5, 0, 0, true);
        cairo_set_source_rgb(cr, 0, 0, 0);
        y += lineHeight(cr, FS_NOTE) * 1.1;
    }
    y = cell->y + header + lineHeight(cr, FS_TICK) * 0.6; /* room for the top tick label */
    double bottom = TICK_LEN + 1.5 + lineHeight(cr, FS_TICK) +
                    (P->xlabel ? 3 + lineHeight(cr, FS_LABEL) : 0) + 2;
    Box pb = {0, y, 0, cell->y + cell->h - bottom - y};
    Axis xa = {.log = P->xscale == CHART_LOG}, ya = {.log = P->yscale == CHART_LOG}, za = {0};
    double right = 0;
    if (P->heat) {
        xa.lo = ya.lo = 0;
        xa.hi = ya.hi = 1;
        right = colorbarWidth(cr, P, &za);
        char buf[16];
        snprintf(buf, sizeof buf, "%d", P->n_bounds > 0 ? P->n_bounds - 1 : 0);
        double lw = textWidth(cr, buf, FS_TICK, false);
        double left = (P->ylabel ? lineHeight(cr, FS_LABEL) + 3 : 0) + lw + 2 + TICK_LEN;
        double side = fmin(cell->w - left - right - 4, pb.h);
        pb.w = pb.h = side;
        pb.x = cell->x + left + (cell->w - left - right - 4 - side) / 2;
    } else {
        dataRanges(P, &xa, &ya);
        axisTicks(&ya, (int)fmin(8, fmax(3, pb.h / 28)));
        double tw = 0;
        for (int i = 0; i < ya.n_ticks; i++)
            tw = fmax(tw, textWidth(cr, ya.labels[i], FS_TICK, false));
        double left = (P->ylabel ? lineHeight(cr, FS_LABEL) + 3 : 0) + tw + 2 + TICK_LEN;
        pb.x = cell->x + left;
        pb.w = cell->w - left - 10;
        xTicksFitting(cr, P, &xa, pb.w);
    }
    if (pb.w < 10 || pb.h < 10)
        return;
    axisPlace(&xa, pb.x, pb.x + pb.w);
    axisPlace(&ya, pb.y + pb.h, pb.y);
    Cloud cloud = {0};
    if (P->heat) {
        drawHeatmap(cr, P, &pb);
        drawColorbar(cr, P, &za, pb.x + pb.w, &pb);
    } else {
        drawAxes(cr, &pb, &xa, &ya, true);
        cairo_save(cr);
        cairo_rectangle(cr, pb.x, pb.y, pb.w, pb.h);
        cairo_clip(cr);
        for (int i = 0; i < P->n_series; i++)
            if (P->series[i].kind == KIND_HIST)
                drawHist(cr, &P->series[i], &xa, &ya, &cloud);
        drawBars(cr, P, &xa, &ya, &cloud);
        for (int i = 0; i < P->n_series; i++)
            if (P->series[i].kind == KIND_VLINE)
                drawVLine(cr, &P->series[i], &xa, &pb, &cloud);
        cairo_restore(cr);
        /* Markers may stick out of the box a little; lines are clipped. */
        cairo_save(cr);
        cairo_rectangle(cr, pb.x - MARKER_R - 1, pb.y - MARKER_R - 1, pb.w + 2 * MARKER_R + 2,
                        pb.h + 2 * MARKER_R + 2);
        cairo_clip(cr);
        for (int i = 0; i < P->n_series; i++)
            if (P->series[i].kind == KIND_LINE)
                drawLineSeries(cr, &P->series[i], &xa, &ya, &cloud);
        cairo_restore(cr);
        drawFrameAndTicks(cr, &pb, &xa, &ya, true);
        if (!hasPlottable(P))
            text(cr, pb.x + pb.w / 2, pb.y + pb.h / 2, "no data", FS_LABEL, false, 0.5, 0.5, 0,
                 true);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    if (P->xlabel)
        text(cr, pb.x + pb.w / 2, cell->y + cell->h - 2, P->xlabel, FS_LABEL, false, 0.5, 1, 0,
             true);
    if (P->ylabel)
        text(cr, cell->x, pb.y + pb.h / 2, P->ylabel, FS_LABEL, false, 0.5, 0, M_PI / 2, true);
    if (legend_inside && !P->heat)
        panelLegend(cr, P, &pb, &cloud);
    free(cloud.xy);
}

/* The shared legend: rows of entries centred under the panels. Returns its height; draws
   only when draw is true. */
static double legendBelow(cairo_t *cr, const Chart *this, double x, double y, double w,
                          bool draw) {
    LegendItem items[MAX_LEGEND];
    int n = legendItems(this->panels, this->rows * this->cols, items, MAX_LEGEND);
    if (n == 0)
        return 0;
    double lh = lineHeight(cr, FS_LEGEND) * 1.3, gap = 14;
    double widths[MAX_LEGEND];
    for (int i = 0; i < n; i++)
        widths[i] = SAMPLE_W + 4 + textWidth(cr, items[i].s->label, FS_LEGEND, false);
    int rows = 0;
    for (int i = 0; i < n;) {
        double used = widths[i];
        int j = i + 1;
        while (j < n && used + gap + widths[j] <= w)
            used += gap + widths[j++];
        if (draw) {
            double cx = x + (w - used) / 2, cy = y + (rows + 0.5) * lh;
            for (int k = i; k < j; k++) {
                legendSample(cr, items[k].s, cx, cy);
                cairo_set_source_rgb(cr, 0, 0, 0);
                text(cr, cx + SAMPLE_W + 4, cy, items[k].s->label, FS_LEGEND, false, 0, 0.5, 0,
                     true);
                cx += widths[k] + gap;
            }
        }
        rows++;
        i = j;
    }
    return rows * lh + 4;
}

/* Draws s centred at y, broken at spaces into lines no wider than w; returns the height. */
static double wrapped(cairo_t *cr, double cx, double y, double w, const char *s, double size,
                      bool bold) {
    char *buf = xStrdup(s);
    double lh = lineHeight(cr, size) * 1.15, h = 0;
    char *line = buf;
    while (*line) {
        /* The longest prefix ending at a space (or the end) that fits; at least one word. */
        char *cut = NULL;
        for (char *p = line;; p++) {
            if (*p != ' ' && *p != '\0')
                continue;
            char c = *p;
            *p = '\0';
            bool fits = textWidth(cr, line, size, bold) <= w;
            *p = c;
            if (!fits && cut)
                break;
            cut = p;
            if (!fits || c == '\0')
                break;
        }
        char c = *cut;
        *cut = '\0';
        text(cr, cx, y + h, line, size, bold, 0.5, 0, 0, true);
        h += lh;
        line = c ? cut + 1 : cut;
    }
    free(buf);
    return h;
}

static void render(cairo_t *cr, const Chart *this, double W, double H) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    double top = PAD;
    if (this->title)
        top += wrapped(cr, W / 2, top, W - 2 * PAD, this->title, FS_TITLE, true) + 2;
    if (this->subtitle) {
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        top += wrapped(cr, W / 2, top, W - 2 * PAD, this->subtitle, FS_NOTE, false) + 2;
        cairo_set_source_rgb(cr, 0, 0, 0);
    }
    top += 2;
    double bottom = H - PAD;
    if (this->legend_below) {
        double lh = legendBelow(cr, this, PAD, 0, W - 2 * PAD, false);
        bottom -= lh;
        legendBelow(cr, this, PAD, bottom + 2, W - 2 * PAD, true);
    }
    double cw = (W - 2 * PAD) / this->cols, chh = (bottom - top) / this->rows;
    for (int r = 0; r < this->rows; r++) {
        double header = 0;
        for (int c = 0; c < this->cols; c++)
            header = fmax(header, headerHeight(cr, &this->panels[r * this->cols + c]));
        for (int c = 0; c < this->cols; c++) {
            Box cell = {PAD + c * cw + (c ? 8 : 0), top + r * chh + (r ? 8 : 0), cw - (c ? 8 : 0),
                        chh - (r ? 8 : 0)};
            renderPanel(cr, &this->panels[r * this->cols + c], &cell, header,
                        !this->legend_below);
        }
    }
}

/* ---------------------------------------------------------------- writers */

#if defined(__SANITIZE_ADDRESS__)
#define CHART_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHART_ASAN 1
#endif
#endif
#ifdef CHART_ASAN
/* Sanitizer builds only: fontconfig, which cairo uses to find fonts, loses a few hundred
   bytes of its configuration at exit (its own leak, not ours); LeakSanitizer reads this. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libfontconfig.so\n";
}
#endif

typedef enum Format { FORMAT_NONE, FORMAT_SVG, FORMAT_PDF, FORMAT_PNG } Format;

static Format formatOf(const char *path) {
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (!dot || strchr(dot, '/'))
        return FORMAT_NONE;
    if (strcasecmp(dot, ".svg") == 0)
        return FORMAT_SVG;
    if (strcasecmp(dot, ".pdf") == 0)
        return FORMAT_PDF;
    if (strcasecmp(dot, ".png") == 0)
        return FORMAT_PNG;
    return FORMAT_NONE;
}

bool Chart_knownFormat(const char *path) {
    return formatOf(path) != FORMAT_NONE;
}

static cairo_status_t writeStream(void *closure, const unsigned char *data, unsigned int length) {
    FILE *fp = closure;
    return fwrite(data, 1, length, fp) == length ? CAIRO_STATUS_SUCCESS
                                                 : CAIRO_STATUS_WRITE_ERROR;
}

MsStatus Chart_write(const Chart *this, const char *path, double width_pt, double height_pt,
                     char **cause) {
    Format fmt = formatOf(path);
    if (fmt == FORMAT_NONE) {
        setCause(cause, "%s: unknown figure format (expected .svg, .pdf or .png)", path);
        return MS_ERR_RANGE;
    }
    if (!(width_pt >= 50 && height_pt >= 50 && width_pt <= 14400 && height_pt <= 14400)) {
        setCause(cause, "%s: figure size %gx%g pt out of range", path, width_pt, height_pt);
        return MS_ERR_RANGE;
    }
    AtomicFile af;
    MsStatus st = AtomicFile_open(&af, path, cause);
    if (st != MS_OK)
        return st;
    cairo_surface_t *surface;
    double scale = 1.0;
    if (fmt == FORMAT_PDF) {
        surface = cairo_pdf_surface_create_for_stream(writeStream, af.fp, width_pt, height_pt);
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 16, 0)
        if (this->title)
            cairo_pdf_surface_set_metadata(surface, CAIRO_PDF_METADATA_TITLE, this->title);
        cairo_pdf_surface_set_metadata(surface, CAIRO_PDF_METADATA_CREATOR, PACKAGE_STRING);
#endif
    } else if (fmt == FORMAT_SVG) {
        surface = cairo_svg_surface_create_for_stream(writeStream, af.fp, width_pt, height_pt);
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 16, 0)
        cairo_svg_surface_set_document_unit(surface, CAIRO_SVG_UNIT_PT);
#endif
    } else {
        scale = PNG_DPI / 72.0;
        surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)ceil(width_pt * scale),
                                             (int)ceil(height_pt * scale));
    }
    cairo_t *cr = cairo_create(surface);
    cairo_scale(cr, scale, scale);
    render(cr, this, width_pt, height_pt);
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    if (cs == CAIRO_STATUS_SUCCESS && fmt == FORMAT_PNG)
        cs = cairo_surface_write_to_png_stream(surface, writeStream, af.fp);
    cairo_surface_finish(surface);
    if (cs == CAIRO_STATUS_SUCCESS)
        cs = cairo_surface_status(surface);
    cairo_surface_destroy(surface);
    if (cs != CAIRO_STATUS_SUCCESS) {
        setCause(cause, "%s: cannot draw the figure: %s", path, cairo_status_to_string(cs));
        AtomicFile_abort(&af);
        return cs == CAIRO_STATUS_WRITE_ERROR ? MS_ERR_IO : MS_ERR_NOMEM;
    }
    return AtomicFile_commit(&af, cause);
}

static void csvNumber(FILE *fp, double v) {
    fputc(',', fp);
    if (isfinite(v))
        fprintf(fp, "%.9g", v);
}

static void dataRow(FILE *fp, int panel, const char *kind, const char *series,
                    const char *source, double x, double y, double z) {
    fprintf(fp, "%d,%s,", panel, kind);
    CsvField_write(fp, series);
    fputc(',', fp);
    CsvField_write(fp, source);
    csvNumber(fp, x);
    csvNumber(fp, y);
    csvNumber(fp, z);
    fputc('\n', fp);
}

MsStatus Chart_writeData(const Chart *this, const char *path, char **cause) {
    AtomicFile af;
    MsStatus st = AtomicFile_open(&af, path, cause);
    if (st != MS_OK)
        return st;
    fputs("panel,kind,series,source,x,y,z\n", af.fp);
    for (int p = 0; p < this->rows * this->cols; p++) {
        const Panel *P = &this->panels[p];
        for (int i = 0; i < P->n_series; i++) {
            const Series *s = &P->series[i];
            const char *kind = kindNames[s->kind];
            for (int j = 0; j < s->n; j++)
                dataRow(af.fp, p, kind, s->label, s->source, s->x[j], s->y ? s->y[j] : NAN,
                        s->z ? s->z[j] : NAN);
        }
        if (P->heat)
            dataRow(af.fp, p, "heatmap", P->zlabel, NULL, P->heat_cols, P->heat_rows,
                    P->heat_vmax);
    }
    return AtomicFile_commit(&af, cause);
}
