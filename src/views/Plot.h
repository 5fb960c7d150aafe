/*
moescope - views/Plot.h
Terminal plots drawn into cells: line plots (braille dots in UTF-8, '.' in ASCII) with a
letter at every data point so series read without colour, and vertical bar charts
(eighth blocks in UTF-8, '#' in ASCII).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_PLOT_H
#define MOESCOPE_PLOT_H

#include <stdbool.h>

#include "views/Cells.h"
#include "views/Glyphs.h"

typedef struct PlotSeries {
    const char *name;
    char mark;        /* drawn at each data point, and in the legend */
    int role;
    const double *x;  /* [n] */
    const double *y;  /* [n]; NaN points are skipped */
    int n;
} PlotSeries;

typedef struct Plot {
    const char *title;
    const char *xlabel;
    double xmin, xmax, ymin, ymax;
    const PlotSeries *series;
    int n_series;
    double vline;      /* x of a vertical marker, NaN for none */
    const char *vlabel;
    bool marks;        /* letters at data points (off for dense curves) */
} Plot;

/* Title and legend on the first row, y labels on the left, x labels on the last row. */
void Plot_draw(Cells *c, int x, int y, int w, int h, const Plot *p, const Glyphs *g);

/* n vertical bars scaled to vmax over h rows, each bar bw columns wide from x. */
void Plot_bars(Cells *c, int x, int y, int bw, int h, const double *v, int n, double vmax,
               int role, const Glyphs *g);

/* "1.2k", "3.4M", "12G" */
void Plot_si(double v, char *buf, int size);

#endif
