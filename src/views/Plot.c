/*
moescope - views/Plot.c
Line plots and bar charts in cells (see Plot.h).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/XUtils.h"

void Plot_si(double v, char *buf, int size) {
    const char *suffix[] = {"", "k", "M", "G", "T", "P"};
    int i = 0;
    double a = fabs(v);
    while (a >= 1000 && i < 5) {
        a /= 1000;
        v /= 1000;
        i++;
    }
    if (i == 0)
        snprintf(buf, (size_t)size, "%.3g", v);
    else
        snprintf(buf, (size_t)size, "%.3g%s", v, suffix[i]);
}

/* Braille dot bit of (dx, dy) in a 2 x 4 cell. */
static unsigned brailleBit(int dx, int dy) {
    static const unsigned bits[2][4] = {{0x01, 0x02, 0x04, 0x40}, {0x08, 0x10, 0x20, 0x80}};
    return bits[dx][dy];
}

typedef struct Canvas {
    int w, h;           /* in cells */
    int sx, sy;         /* dots per cell */
    unsigned *bits;     /* [h][w] */
    int *role;          /* [h][w] */
} Canvas;

static void dot(Canvas *cv, int px, int py, int role) {
    if (px < 0 || py < 0 || px >= cv->w * cv->sx || py >= cv->h * cv->sy)
        return;
    int cx = px / cv->sx, cy = py / cv->sy;
    unsigned b = cv->sx == 2 ? brailleBit(px % 2, py % 4) : 1;
    cv->bits[cy * cv->w + cx] |= b;
    cv->role[cy * cv->w + cx] = role;
}

static void line(Canvas *cv, int x0, int y0, int x1, int y1, int role) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (int guard = 0; guard < 100000; guard++) {
        dot(cv, x0, y0, role);
        if (x0 == x1 && y0 == y1)
            break;
        int e2 = 2 * err;
        if (e2 >= dy) {
            err += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            err += dx;
            y0 += sy;
        }
    }
}

void Plot_draw(Cells *c, int x, int y, int w, int h, const Plot *p, const Glyphs *g) {
    if (w < 12 || h < 4)
        return;
    /* Title and legend. */
    int tx = x + Cells_text(c, x, y, w, ROLE_HEADER, p->title ? p->title : "");
    for (int s = 0; s < p->n_series && tx < x + w; s++) {
        char item[64];
        snprintf(item, sizeof item, "  %c %s", p->series[s].mark, p->series[s].name);
        tx += Cells_text(c, tx, y, x + w - tx, p->series[s].role, item);
    }
    int lw = 7; /* y labels */
    Canvas cv = {.w = w - lw - 1, .h = h - 3};
    cv.sx = g->braille ? 2 : 1;
    cv.sy = g->braille ? 4 : 1;
    if (cv.w < 2 || cv.h < 1)
        return;
    cv.bits = xCalloc((size_t)cv.w * (size_t)cv.h, sizeof(unsigned));
    cv.role = xCalloc((size_t)cv.w * (size_t)cv.h, sizeof(int));
    double xr = p->xmax - p->xmin, yr = p->ymax - p->ymin;
    if (!(xr > 0))
        xr = 1;
    if (!(yr > 0))
        yr = 1;
    int W = cv.w * cv.sx, H = cv.h * cv.sy;
#define PX(v) ((int)floor(((v) - p->xmin) / xr * (W - 1) + 0.5))
#define PY(v) ((int)floor((p->ymax - (v)) / yr * (H - 1) + 0.5))
    for (int s = 0; s < p->n_series; s++) {
        const PlotSeries *ps = &p->series[s];
        int have = 0, lx = 0, ly = 0;
        for (int i = 0; i < ps->n; i++) {
            if (!isfinite(ps->y[i]) || !isfinite(ps->x[i])) {
                have = 0;
                continue;
            }
            double yv = ps->y[i] < p->ymin ? p->ymin : ps->y[i] > p->ymax ? p->ymax : ps->y[i];
            int px = PX(ps->x[i]), py = PY(yv);
            if (have)
                line(&cv, lx, ly, px, py, ps->role);
            else
                dot(&cv, px, py, ps->role);
            lx = px;
            ly = py;
            have = 1;
        }
    }
    int oy = y + 1;
    int ox = x + lw + 1;
    for (int r = 0; r < cv.h; r++) {
        for (int q = 0; q < cv.w; q++) {
            unsigned b = cv.bits[r * cv.w + q];
            if (!b)
                continue;
            uint32_t ch = cv.sx == 2 ? 0x2800 + b : '.';
            Cells_set(c, ox + q, oy + r, ch, cv.role[r * cv.w + q]);
        }
    }
    /* The vertical marker. */
    if (isfinite(p->vline) && p->vline >= p->xmin && p->vline <= p->xmax) {
        int q = PX(p->vline) / cv.sx;
        for (int r = 0; r < cv.h; r++) {
            const Cell *cell = Cells_at(c, ox + q, oy + r);
            if (cell && cell->ch == ' ')
                Cells_text(c, ox + q, oy + r, 1, ROLE_MARK, g->vline);
        }
        if (p->vlabel) {
            int lx = ox + q + 1;
            if (lx + Cells_width(p->vlabel) > x + w)
                lx = ox + q - Cells_width(p->vlabel);
            Cells_text(c, lx, oy, x + w - lx, ROLE_MARK, p->vlabel);
        }
    }
    /* Letters at the data points, drawn last so every series stays readable. */
    if (p->marks) {
        for (int s = 0; s < p->n_series; s++) {
            const PlotSeries *ps = &p->series[s];
            for (int i = 0; i < ps->n; i++) {
                if (!isfinite(ps->y[i]) || !isfinite(ps->x[i]))
                    continue;
                double yv = ps->y[i] < p->ymin ? p->ymin : ps->y[i] > p->ymax ? p->ymax : ps->y[i];
                Cells_set(c, ox + PX(ps->x[i]) / cv.sx, oy + PY(yv) / cv.sy,
                          (uint32_t)ps->mark, ps->role);
            }
        }
    }
#undef PX
#undef PY
    /* Axes and labels. */
    for (int r = 0; r < cv.h; r++)
        Cells_text(c, ox - 1, oy + r, 1, ROLE_DIM, g->vline);
    Cells_text(c, ox - 1, oy + cv.h, 1, ROLE_DIM, g->cross_bottom);
    Cells_fill(c, ox, oy + cv.h, cv.w, g->hline, ROLE_DIM);
    char lab[32];
    snprintf(lab, sizeof lab, "%.3g", p->ymax);
    Cells_textRight(c, x, oy, lw, ROLE_DIM, lab);
    snprintf(lab, sizeof lab, "%.3g", p->ymin);
    Cells_textRight(c, x, oy + cv.h - 1, lw, ROLE_DIM, lab);
    if (cv.h >= 5) {
        snprintf(lab, sizeof lab, "%.3g", (p->ymin + p->ymax) / 2);
        Cells_textRight(c, x, oy + (cv.h - 1) / 2, lw, ROLE_DIM, lab);
    }
    int ly = oy + cv.h + 1;
    snprintf(lab, sizeof lab, "%.4g", p->xmin);
    Cells_text(c, ox, ly, 10, ROLE_DIM, lab);
    snprintf(lab, sizeof lab, "%.4g", p->xmax);
    Cells_textRight(c, ox + cv.w - 10, ly, 10, ROLE_DIM, lab);
    if (p->xlabel) {
        int n = Cells_width(p->xlabel);
        Cells_text(c, ox + (cv.w - n) / 2, ly, cv.w, ROLE_DIM, p->xlabel);
    }
    free(cv.bits);
    free(cv.role);
}

void Plot_bars(Cells *c, int x, int y, int bw, int h, const double *v, int n, double vmax,
               int role, const Glyphs *g) {
    if (h < 1 || bw < 1)
        return;
    if (!(vmax > 0))
        vmax = 1;
    for (int i = 0; i < n; i++) {
        double f = v[i] / vmax;
        if (!(f > 0))
            f = 0;
        if (f > 1)
            f = 1;
        int eighths = (int)floor(f * h * 8 + 0.5);
        if (v[i] > 0 && eighths == 0)
            eighths = 1; /* a nonzero bin stays visible */
        for (int r = 0; r < h; r++) {
            int e = eighths - r * 8;
            e = e < 0 ? 0 : e > 8 ? 8 : e;
            if (!e)
                continue;
            for (int q = 0; q < bw; q++)
                Cells_text(c, x + i * bw + q, y + h - 1 - r, 1, role, g->vblocks[e]);
        }
    }
}
