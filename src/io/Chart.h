/*
moescope - io/Chart.h
Publication figures drawn with cairo and written as SVG, PDF or PNG (chosen by the file
extension), each atomically (a temporary file, then rename). A Chart is a grid of panels;
a panel holds lines (with markers), grouped bars, a histogram, vertical reference lines,
or one heatmap with block boundaries and a colour bar. Axes get 1-2-5 ticks (or decades
on a log scale), labels with units and a legend that avoids the data.

Every series has a style index that fixes its colour (Okabe-Ito, safe for colour-blind
readers), dash pattern, marker shape and bar hatching together, so series stay apart in
greyscale; heatmaps use viridis, whose lightness rises monotonically. Text uses cairo's
"sans-serif" face; cairo embeds the font subsets it uses in PDFs.

Chart_writeData writes the numbers a chart draws as a tidy CSV sidecar
(panel,kind,series,source,x,y,z) so tests can compare a figure with the batch CSV.
This module is the only one that includes cairo. It takes plain data and copies it.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CHART_H
#define MOESCOPE_CHART_H

#include <stdbool.h>

#include "util/Status.h"

typedef enum ChartScale {
    CHART_LINEAR = 0,
    CHART_LOG, /* base 10; non-positive values are left out */
} ChartScale;

/* Chart_addLine flags. */
enum {
    CHART_LINE = 1,    /* connect the points (NaN points break the line) */
    CHART_MARKERS = 2, /* a marker at every point */
};

/* PNG resolution: 200 dpi keeps text and lines sharp on screens and paper while the
   PNG encoder (zlib, the costly part) stays near 0.1 s per figure; PDF and SVG are vector. */
#define CHART_PNG_DPI 200.0

/* Styles that look distinct from one another, in colour and in greyscale. */
#define CHART_STYLES 7

typedef struct Chart Chart;

/* A chart of rows x cols panels (numbered row by row from 0) under title (may be NULL). */
Chart *Chart_new(const char *title, int rows, int cols);

void Chart_delete(Chart *this);

/* Panel title (NULL: none) and axis labels; give units in the labels, e.g. "tau (|h|)". */
void Chart_setPanel(Chart *this, int panel, const char *title, const char *xlabel,
                    const char *ylabel);

/* A line of smaller text under the panel title (e.g. "dead: 3 of 172"), repeatable. */
void Chart_addNote(Chart *this, int panel, const char *text);

void Chart_setScale(Chart *this, int panel, ChartScale x, ChartScale y);

/* Axis limits; NaN leaves that end to the data (padded by 5%). */
void Chart_setLimits(Chart *this, int panel, double xmin, double xmax, double ymin,
                     double ymax);

/* Ticks at exactly these x positions, labelled with labels[i] (labels NULL: "%g"). */
void Chart_setXTicks(Chart *this, int panel, const double *at, const char *const *labels,
                     int n);

/* A line of smaller text under the chart's title. */
void Chart_setSubtitle(Chart *this, const char *text);

/* One legend for the whole chart, under the panels, instead of one per panel; series
   with the same label and style are listed once. */
void Chart_setLegendBelow(Chart *this, bool below);

/* A series of n (x, y) points. style picks colour, dash and marker; flags CHART_LINE
   and/or CHART_MARKERS. label NULL: not in the legend. source (may be NULL) is written to
   the data sidecar verbatim (what the numbers are, e.g. a CSV selection). */
void Chart_addLine(Chart *this, int panel, const char *label, const double *x,
                   const double *y, int n, int style, unsigned flags, const char *source);

/* Bars of height y[i] at x[i]; the bar series of a panel are grouped side by side at
   each x. The y axis always includes 0. */
void Chart_addBars(Chart *this, int panel, const char *label, const double *x,
                   const double *y, int n, int style, const char *source);

/* A histogram: bins equal bins over [lo, hi], counts[b] in bin b. */
void Chart_addHistogram(Chart *this, int panel, const char *label, double lo, double hi,
                        const double *counts, int bins, int style, const char *source);

/* A vertical reference line at x, drawn grey and dashed, listed in the legend. */
void Chart_addVLine(Chart *this, int panel, double x, const char *label, const char *source);

/* A number the chart states (in a note or title) but does not plot: sidecar only. NaN
   fields are left empty. */
void Chart_addDatum(Chart *this, int panel, const char *series, const char *source, double x,
                    double y, double z);

/* Makes the panel a heatmap of m[rows][cols] (row 0 at the top; NaN cells grey), colour
   from 0 (dark) to vmax (light; NaN or <= 0: the largest cell). bounds[0..n_bounds] are
   increasing cell offsets from 0 to rows (and cols) of the blocks, drawn as white lines and
   labelled with the block number at their centres on both axes (bounds NULL: none).
   zlabel names the colour bar. The matrix is square when bounds are given. */
void Chart_setHeatmap(Chart *this, int panel, const float *m, int rows, int cols, double vmax,
                      const int *bounds, int n_bounds, const char *zlabel);

/* Renders to path; the format comes from its extension (.svg, .pdf or .png; PNG at
   CHART_PNG_DPI). Size in points (1/72 in). Written to a temporary file and renamed into place.
   MS_ERR_RANGE for an unknown extension, MS_ERR_IO when writing fails. */
MsStatus Chart_write(const Chart *this, const char *path, double width_pt, double height_pt,
                     char **cause);

/* Writes the sidecar CSV: header panel,kind,series,source,x,y,z, then one row per drawn
   number (kind line, bar, hist (x = bin low edge, z = high edge, y = count), vline,
   heatmap (x = cols, y = rows, z = vmax) or datum). Atomic like Chart_write. */
MsStatus Chart_writeData(const Chart *this, const char *path, char **cause);

/* true for ".svg", ".pdf" or ".png" (case-insensitive) at the end of path. */
bool Chart_knownFormat(const char *path);

/* Nice tick positions for [lo, hi]: steps of 1, 2 or 5 times a power of ten, about target
   ticks, all inside [lo, hi] (within rounding). Returns the count written (at most max). */
int Chart_niceTicks(double lo, double hi, int target, double *ticks, int max);

/* "%.*f" with just the decimals that step needs (0.25 with step 0.05 -> "0.25"). */
void Chart_formatTick(double v, double step, char *buf, int size);

/* The RGB colour (0..1) of a style; also the dash count and marker of styles differ. */
void Chart_styleColor(int style, double rgb[3]);

/* viridis at t in [0, 1]. */
void Chart_viridis(double t, double rgb[3]);

#endif
