/*
moescope - views/Figures.c
Builds the figures of Figures.h from a batch run's rows and per-layer data and hands them
to io/Chart for drawing.

DESIGN
The rows are copied as the batch writes them (strings interned), so every plotted number
is a CSV number; each series names its CSV selection in the sidecar's `source` column,
which lets tests/fixtures/check_figures.py match figure and CSV without knowing the
figures. The heatmaps need the N x N counts, which the batch frees after each tau, so they
are drawn at once; the rest is drawn by FigureSet_write at the end, grouped by layer and
tau. Styles are fixed per router and per strategy, so a router looks the same in every
figure.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "views/Figures.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "io/Chart.h"
#include "util/XUtils.h"

#define HIST_BINS 50
#define CURVE_POINTS 64
#define HEAT_CELLS 512
#define MAX_FORMATS 3

static const char *const formatNames[MAX_FORMATS] = {"svg", "pdf", "png"};

/* Style of each router and strategy, the same in every figure. */
static const char *const routerOrder[] = {"oracle", "similarity", "mlp", "sigmoid",
                                          "topk_neurons"};
static const char *const strategyOrder[] = {"random", "param", "coact", "file"};

typedef struct Row {
    int layer;
    double tau;
    const char *strategy, *router, *split, *metric; /* interned; NULL: empty */
    int E, k;
    double value;
} Row;

typedef struct LayerFig {
    int layer;
    double tau;
    char *name;
    int N;
    double hist[HIST_BINS];
    int dead, always;
    double mean_freq;
    double curve_tau[CURVE_POINTS + 1], curve_sparsity[CURVE_POINTS + 1];
    int n_curve;
} LayerFig;

struct FigureSet {
    char *dir;
    bool formats[MAX_FORMATS];
    bool tau_in_names;
    Row *rows;
    long n_rows, cap_rows;
    char **strings;
    int n_strings;
    char **names; /* layer names by first appearance: names[i] for layers[i] */
    int *name_layers;
    int n_names;
    LayerFig *layers;
    int n_layers;
    int written;
};

/* ---------------------------------------------------------------- set up */

static MsStatus parseFormats(const char *formats, bool *on, char **cause) {
    memset(on, 0, MAX_FORMATS * sizeof *on);
    const char *p = formats ? formats : FIGURES_DEFAULT_FORMATS;
    bool any = false;
    while (*p) {
        size_t len = strcspn(p, ",");
        int f = -1;
        for (int i = 0; i < MAX_FORMATS; i++)
            if (len == strlen(formatNames[i]) && strncasecmp(p, formatNames[i], len) == 0)
                f = i;
        if (f < 0) {
            setCause(cause, "--figure-format: unknown format '%.*s' (svg, pdf, png)", (int)len,
                     p);
            return MS_ERR_RANGE;
        }
        on[f] = any = true;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!any) {
        setCause(cause, "--figure-format: expected a list of svg, pdf, png");
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

MsStatus FigureSet_checkFormats(const char *formats, char **cause) {
    bool on[MAX_FORMATS];
    return parseFormats(formats, on, cause);
}

/* mkdir -p */
static MsStatus makeDir(const char *dir, char **cause) {
    char *path = xStrdup(dir);
    MsStatus st = MS_OK;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        struct stat sb;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            setCause(cause, "%s: cannot create the figures directory: %s", path,
                     strerror(errno));
            st = MS_ERR_IO;
        } else if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            setCause(cause, "%s: not a directory", path);
            st = MS_ERR_IO;
        }
        *p = c;
        if (st != MS_OK || c == '\0')
            break;
    }
    free(path);
    return st;
}

MsStatus FigureSet_new(FigureSet **out, const char *dir, const char *formats,
                       bool tau_in_names, char **cause) {
    *out = NULL;
    bool on[MAX_FORMATS];
    MsStatus st = parseFormats(formats, on, cause);
    if (st == MS_OK && (!dir || !*dir)) {
        setCause(cause, "--figures: expected a directory name");
        st = MS_ERR_RANGE;
    }
    if (st == MS_OK)
        st = makeDir(dir, cause);
    if (st != MS_OK)
        return st;
    FigureSet *this = xCalloc(1, sizeof *this);
    this->dir = xStrdup(dir);
    memcpy(this->formats, on, sizeof on);
    this->tau_in_names = tau_in_names;
    *out = this;
    return MS_OK;
}

void FigureSet_delete(FigureSet *this) {
    if (!this)
        return;
    for (int i = 0; i < this->n_strings; i++)
        free(this->strings[i]);
    free(this->strings);
    for (int i = 0; i < this->n_names; i++)
        free(this->names[i]);
    free(this->names);
    free(this->name_layers);
    for (int i = 0; i < this->n_layers; i++)
        free(this->layers[i].name);
    free(this->layers);
    free(this->rows);
    free(this->dir);
    free(this);
}

int FigureSet_written(const FigureSet *this) {
    return this ? this->written : 0;
}

static const char *intern(FigureSet *this, const char *s) {
    if (!s || !*s)
        return NULL;
    for (int i = 0; i < this->n_strings; i++)
        if (strcmp(this->strings[i], s) == 0)
            return this->strings[i];
    this->strings = xReallocArray(this->strings, (size_t)this->n_strings + 1, sizeof(char *));
    return this->strings[this->n_strings++] = xStrdup(s);
}

static void noteName(FigureSet *this, int layer, const char *name) {
    for (int i = 0; i < this->n_names; i++)
        if (this->name_layers[i] == layer)
            return;
    this->names = xReallocArray(this->names, (size_t)this->n_names + 1, sizeof(char *));
    this->name_layers = xReallocArray(this->name_layers, (size_t)this->n_names + 1, sizeof(int));
    this->names[this->n_names] = xStrdup(name ? name : "");
    this->name_layers[this->n_names++] = layer;
}

static const char *layerName(const FigureSet *this, int layer) {
    for (int i = 0; i < this->n_names; i++)
        if (this->name_layers[i] == layer)
            return this->names[i];
    return "";
}

void FigureSet_addRow(FigureSet *this, const CsvRow *row) {
    if (this->n_rows == this->cap_rows) {
        this->cap_rows = this->cap_rows ? 2 * this->cap_rows : 1024;
        this->rows = xReallocArray(this->rows, (size_t)this->cap_rows, sizeof(Row));
    }
    Row *r = &this->rows[this->n_rows++];
    r->layer = row->layer;
    r->tau = row->tau;
    r->strategy = intern(this, row->strategy);
    r->router = intern(this, row->router);
    r->split = intern(this, row->split);
    r->metric = intern(this, row->metric);
    r->E = row->E;
    r->k = row->k;
    r->value = row->value;
    noteName(this, row->layer, row->layer_name);
}

/* ---------------------------------------------------------------- writing */

static char *tauSuffix(const FigureSet *this, double tau) {
    return this->tau_in_names ? xAsprintf("_tau%g", tau) : xStrdup("");
}

/* Writes chart as dir/base.<ext> for each format and dir/base.data.csv. */
static MsStatus writeChart(FigureSet *this, const Chart *chart, const char *base, double w,
                           double h, char **cause) {
    MsStatus st = MS_OK;
    for (int f = 0; f < MAX_FORMATS && st == MS_OK; f++) {
        if (!this->formats[f])
            continue;
        char *path = xAsprintf("%s/%s.%s", this->dir, base, formatNames[f]);
        st = Chart_write(chart, path, w, h, cause);
        free(path);
        if (st == MS_OK)
            this->written++;
    }
    if (st == MS_OK) {
        char *path = xAsprintf("%s/%s.data.csv", this->dir, base);
        st = Chart_writeData(chart, path, cause);
        free(path);
    }
    return st;
}

static int styleOf(const char *name, const char *const *order, int n) {
    for (int i = 0; i < n; i++)
        if (name && strcmp(name, order[i]) == 0)
            return i;
    return n;
}

static int routerStyle(const char *router) {
    return styleOf(router, routerOrder, 5);
}

/* Strategies use the styles after the routers' so the summary's shared legend keeps them
   apart. */
static int strategyStyle(const char *strategy) {
    return 1 + styleOf(strategy, strategyOrder, 4);
}

static char *layerTitle(const FigureSet *this, int layer) {
    const char *name = layerName(this, layer);
    return *name ? xAsprintf("Layer %d (%s)", layer, name) : xAsprintf("Layer %d", layer);
}

/* ---------------------------------------------------------------- sparsity */

static int cmpDouble(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

MsStatus FigureSet_addSparsity(FigureSet *this, int layer, const char *name, float tau,
                               const Sparsity *s, const float *h, long T, int threads,
                               char **cause) {
    noteName(this, layer, name);
    int N = s->N;
    float hi = 0;
    /* The curve spans 0 to the tau of 99% sparsity (or the largest |h|), and the run's tau. */
    MsStatus st = Sparsity_tauForSparsity(h, T, N, 0.99, threads, NULL, &hi, cause);
    if (st == MS_OK && !(hi > 0))
        st = Sparsity_tauForSparsity(h, T, N, 1.0, threads, NULL, &hi, cause);
    if (st != MS_OK)
        return st;
    if (tau * 1.1f > hi)
        hi = tau * 1.1f;
    if (!(hi > 0))
        hi = 1;
    /* Quadratic spacing: the curve is steepest near tau = 0. */
    double taus_d[CURVE_POINTS + 1];
    for (int i = 0; i < CURVE_POINTS; i++) {
        double u = (double)i / (CURVE_POINTS - 1);
        taus_d[i] = (float)(hi * u * u);
    }
    taus_d[CURVE_POINTS] = tau;
    qsort(taus_d, CURVE_POINTS + 1, sizeof(double), cmpDouble);
    float taus[CURVE_POINTS + 1];
    for (int i = 0; i <= CURVE_POINTS; i++)
        taus[i] = (float)taus_d[i];
    double sp[CURVE_POINTS + 1];
    st = Sparsity_curve(h, T, N, taus, CURVE_POINTS + 1, threads, NULL, sp, cause);
    if (st != MS_OK)
        return st;
    this->layers = xReallocArray(this->layers, (size_t)this->n_layers + 1, sizeof(LayerFig));
    LayerFig *L = &this->layers[this->n_layers++];
    memset(L, 0, sizeof *L);
    L->layer = layer;
    L->tau = tau;
    L->name = xStrdup(name ? name : "");
    L->N = N;
    double sum = 0;
    for (int j = 0; j < N; j++) {
        double f = s->neuron_freq[j];
        int b = (int)(f * HIST_BINS);
        L->hist[b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b] += 1;
        L->dead += f == 0.0;
        L->always += f == 1.0;
        sum += f;
    }
    L->mean_freq = N > 0 ? sum / N : NAN;
    L->n_curve = CURVE_POINTS + 1;
    for (int i = 0; i < L->n_curve; i++) {
        L->curve_tau[i] = taus[i];
        L->curve_sparsity[i] = sp[i];
    }
    return MS_OK;
}

/* Rows of one layer and tau, in emission order. */
typedef struct Group {
    int layer;
    double tau;
    const Row **rows;
    long n;
} Group;

static const Row *findRow(const Group *g, const char *strategy, const char *router, int E,
                         int k, const char *split, const char *metric) {
    for (long i = 0; i < g->n; i++) {
        const Row *r = g->rows[i];
        if (r->E == E && r->k == k && !strcmp(r->metric, metric) &&
            (r->strategy ? strategy && !strcmp(r->strategy, strategy) : !strategy) &&
            (r->router ? router && !strcmp(r->router, router) : !router) &&
            (r->split ? split && !strcmp(r->split, split) : !split))
            return r;
    }
    return NULL;
}

static MsStatus sparsityFigure(FigureSet *this, const Group *g, const LayerFig *L,
                               char **cause) {
    char *title = layerTitle(this, L->layer);
    char *full = xAsprintf("%s: activation sparsity", title);
    Chart *c = Chart_new(full, 1, 2);
    char *note = xAsprintf("dead (never active): %d of %d; always active: %d of %d", L->dead,
                           L->N, L->always, L->N);
    char *htitle = xAsprintf("Neuron activation frequency at \xcf\x84 = %g", L->tau);
    Chart_setPanel(c, 0, htitle, "activation frequency (fraction of tokens with |h| > \xcf\x84)",
                   "neurons");
    Chart_addNote(c, 0, note);
    char *src = xAsprintf("layer=%d;tau=%.9g;neuron_freq_hist", L->layer, L->tau);
    Chart_addHistogram(c, 0, NULL, 0.0, 1.0, L->hist, HIST_BINS, 1, src);
    free(src);
    Chart_setLimits(c, 0, 0.0, 1.0, NAN, NAN);
    src = xAsprintf("layer=%d;tau=%.9g;metric=dead_fraction", L->layer, L->tau);
    Chart_addDatum(c, 0, "dead_fraction", src, NAN, (double)L->dead / L->N, NAN);
    free(src);
    src = xAsprintf("layer=%d;tau=%.9g;metric=sparsity;y=1-value", L->layer, L->tau);
    Chart_addDatum(c, 0, "mean_activation_frequency", src, NAN, L->mean_freq, NAN);
    free(src);

    Chart_setPanel(c, 1, "Sparsity against the threshold \xcf\x84",
                   "threshold \xcf\x84 (units of |h|)", "sparsity (fraction of |h| \xe2\x89\xa4 \xcf\x84)");
    src = xAsprintf("layer=%d;tau=%.9g;curve", L->layer, L->tau);
    Chart_addLine(c, 1, "sparsity(\xcf\x84), all tokens", L->curve_tau, L->curve_sparsity,
                  L->n_curve, 0, CHART_LINE, src);
    free(src);
    /* The CSV's own numbers on the curve: the tau_for_sparsity_<q> points. */
    double qx[64], qy[64];
    int nq = 0;
    for (long i = 0; i < g->n && nq < 64; i++) {
        const Row *r = g->rows[i];
        if (!r->strategy && !strncmp(r->metric, "tau_for_sparsity_", 17)) {
            qx[nq] = r->value;
            qy[nq] = atof(r->metric + 17);
            src = xAsprintf("layer=%d;tau=%.9g;metric=%s;x=value;y=%s", L->layer, L->tau,
                            r->metric, r->metric + 17);
            Chart_addLine(c, 1, nq == 0 ? "\xcf\x84 for target sparsity q (CSV)" : NULL, &qx[nq],
                          &qy[nq], 1, 2, CHART_MARKERS, src);
            free(src);
            nq++;
        }
    }
    const Row *sr = findRow(g, NULL, NULL, 0, 0, "all", "sparsity");
    if (sr) {
        double x = L->tau, y = sr->value;
        src = xAsprintf("layer=%d;tau=%.9g;metric=sparsity;x=tau", L->layer, L->tau);
        Chart_addLine(c, 1, "sparsity at the run's \xcf\x84 (CSV)", &x, &y, 1, 3, CHART_MARKERS,
                      src);
        free(src);
    }
    char *vl = xAsprintf("run's \xcf\x84 = %g", L->tau);
    Chart_addVLine(c, 1, L->tau, vl, NULL);
    Chart_setLimits(c, 1, 0.0, NAN, 0.0, 1.02);
    char *suffix = tauSuffix(this, L->tau);
    char *base = xAsprintf("layer%d_sparsity%s", L->layer, suffix);
    MsStatus st = writeChart(this, c, base, 720, 300, cause);
    free(base);
    free(suffix);
    free(vl);
    free(note);
    free(htitle);
    free(full);
    free(title);
    Chart_delete(c);
    return st;
}

/* ---------------------------------------------------------------- co-activation */

/* Expert-aligned cells: each expert's neurons (in index order) split into cells of at
   most ceil(N / HEAT_CELLS) neurons, so block boundaries fall on cell edges. */
typedef struct Cells {
    int *order;     /* [N] neurons in expert order */
    int *cell_of;   /* [N] cell of each position in order */
    int *cell_size; /* [M] */
    int *bounds;    /* [E + 1] first cell of each expert */
    int *expert_of; /* [M] */
    int M;
} Cells;

static void cellsInit(Cells *cl, const int32_t *part, int N, int E) {
    int *size = xCalloc((size_t)E, sizeof(int));
    for (int j = 0; j < N; j++)
        size[part[j]]++;
    int *start = xCalloc((size_t)E + 1, sizeof(int));
    for (int e = 0; e < E; e++)
        start[e + 1] = start[e] + size[e];
    cl->order = xMallocArray((size_t)N, sizeof(int));
    int *fill = xMallocArray((size_t)E, sizeof(int));
    memcpy(fill, start, (size_t)E * sizeof(int));
    for (int j = 0; j < N; j++)
        cl->order[fill[part[j]]++] = j;
    int b = (N + HEAT_CELLS - 1) / HEAT_CELLS;
    cl->bounds = xCalloc((size_t)E + 1, sizeof(int));
    for (int e = 0; e < E; e++)
        cl->bounds[e + 1] = cl->bounds[e] + (size[e] + b - 1) / b;
    cl->M = cl->bounds[E];
    cl->cell_size = xCalloc((size_t)cl->M + 1, sizeof(int));
    cl->expert_of = xCalloc((size_t)cl->M + 1, sizeof(int));
    cl->cell_of = xMallocArray((size_t)N, sizeof(int));
    for (int e = 0; e < E; e++) {
        int cells = cl->bounds[e + 1] - cl->bounds[e];
        for (int q = 0; q < size[e]; q++) {
            /* Nearly equal cells: position q of the expert goes to cell floor(q c / G). */
            int cell = cl->bounds[e] + (int)((long)q * cells / size[e]);
            cl->cell_of[start[e] + q] = cell;
            cl->cell_size[cell]++;
            cl->expert_of[cell] = e;
        }
    }
    free(size);
    free(start);
    free(fill);
}

static void cellsDone(Cells *cl) {
    free(cl->order);
    free(cl->cell_of);
    free(cl->cell_size);
    free(cl->bounds);
    free(cl->expert_of);
}

MsStatus FigureSet_addCoact(FigureSet *this, int layer, const char *name, float tau,
                            const char *strategy, int E, const Coact *coact,
                            const int32_t *part, char **cause) {
    noteName(this, layer, name);
    int N = coact->N;
    for (int j = 0; j < N; j++) {
        if (part[j] < 0 || part[j] >= E) {
            setCause(cause, "figures: neuron %d is in expert %d of %d", j, part[j], E);
            return MS_ERR_RANGE;
        }
    }
    Cells cl;
    cellsInit(&cl, part, N, E);
    int M = cl.M;
    double *sum = xCalloc((size_t)M * (size_t)M, sizeof(double));
    for (int p = 0; p < N; p++) {
        const uint32_t *Crow = coact->C + (size_t)cl.order[p] * (size_t)N;
        double *srow = sum + (size_t)cl.cell_of[p] * (size_t)M;
        for (int q = 0; q < N; q++)
            if (q != p)
                srow[cl.cell_of[q]] += Crow[cl.order[q]];
    }
    double T = (double)coact->T_train;
    float *cells = xMallocArray((size_t)M * (size_t)M, sizeof(float));
    double *block = xCalloc((size_t)E * (size_t)E, sizeof(double));
    double *pairs = xCalloc((size_t)E * (size_t)E, sizeof(double));
    for (int a = 0; a < M; a++) {
        for (int b = 0; b < M; b++) {
            double n = (double)cl.cell_size[a] * cl.cell_size[b] - (a == b ? cl.cell_size[a] : 0);
            double s = sum[(size_t)a * (size_t)M + (size_t)b];
            cells[(size_t)a * (size_t)M + (size_t)b] = n > 0 && T > 0 ? (float)(s / n / T) : NAN;
            size_t eb = (size_t)cl.expert_of[a] * (size_t)E + (size_t)cl.expert_of[b];
            block[eb] += s;
            pairs[eb] += n;
        }
    }
    /* Intra-expert share, and its chance level: the share of same-expert pairs. */
    double intra = 0, total = 0, same = 0;
    for (int e = 0; e < E; e++) {
        for (int f = 0; f < E; f++)
            total += block[(size_t)e * (size_t)E + (size_t)f];
        intra += block[(size_t)e * (size_t)E + (size_t)e];
        same += pairs[(size_t)e * (size_t)E + (size_t)e];
    }
    double chance = N > 1 ? same / ((double)N * (N - 1)) : NAN;
    char *title = layerTitle(this, layer);
    char *full = xAsprintf("Layer %d co-activation, %s partition, E = %d", layer, strategy, E);
    Chart *c = Chart_new(full, 1, 1);
    Chart_setPanel(c, 0, NULL, "expert (neurons in expert order)",
                   "expert (neurons in expert order)");
    char *sub = xAsprintf("%s; \xcf\x84 = %g, %ld train tokens", title, (double)tau,
                          coact->T_train);
    Chart_setSubtitle(c, sub);
    free(sub);
    char *note = xAsprintf("intra-expert co-activation %.4f (balanced random: %.4f)",
                           total > 0 ? intra / total : NAN, chance);
    Chart_addNote(c, 0, note);
    if (M < N) {
        char *n2 = xAsprintf("cells average up to %d neurons", (N + HEAT_CELLS - 1) / HEAT_CELLS);
        Chart_addNote(c, 0, n2);
        free(n2);
    }
    Chart_setHeatmap(c, 0, cells, M, M, NAN, cl.bounds, E,
                     "co-activation rate C[i,j] / T_train (i \xe2\x89\xa0 j)");
    char *src = xAsprintf("layer=%d;tau=%.9g;strategy=%s;E=%d;split=train;metric=intra_coact",
                          layer, (double)tau, strategy, E);
    Chart_addDatum(c, 0, "intra_coact", src, NAN, total > 0 ? intra / total : NAN, NAN);
    free(src);
    src = xAsprintf("layer=%d;tau=%.9g;strategy=%s;E=%d;T_train=%ld;block_mean", layer,
                    (double)tau, strategy, E, coact->T_train);
    for (int e = 0; e < E; e++)
        for (int f = 0; f < E; f++) {
            size_t i = (size_t)e * (size_t)E + (size_t)f;
            Chart_addDatum(c, 0, "expert_block_mean", src, f, e,
                           pairs[i] > 0 && T > 0 ? block[i] / pairs[i] / T : NAN);
        }
    free(src);
    char *suffix = tauSuffix(this, tau);
    char *base = xAsprintf("layer%d_coact_%s_E%d%s", layer, strategy, E, suffix);
    MsStatus st = writeChart(this, c, base, 440, 420, cause);
    free(base);
    free(suffix);
    free(note);
    free(full);
    free(title);
    Chart_delete(c);
    free(cells);
    free(sum);
    free(block);
    free(pairs);
    cellsDone(&cl);
    return st;
}

/* ---------------------------------------------------------------- recall and trade-off */

typedef struct Names {
    const char *v[32];
    int n;
} Names;

static void namesAdd(Names *ns, const char *s) {
    if (!s)
        return;
    for (int i = 0; i < ns->n; i++)
        if (ns->v[i] == s || !strcmp(ns->v[i], s))
            return;
    if (ns->n < 32)
        ns->v[ns->n++] = s;
}

typedef struct Ints {
    int v[256];
    int n;
} Ints;

static void intsAdd(Ints *is, int x) {
    for (int i = 0; i < is->n; i++)
        if (is->v[i] == x)
            return;
    if (is->n < 256)
        is->v[is->n++] = x;
}

static int cmpInt(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

/* Strategies (by first appearance), routers (in routerOrder) and ks of a group's test rows. */
static void groupAxes(const Group *g, Names *strategies, Names *routers, Ints *ks) {
    memset(strategies, 0, sizeof *strategies);
    memset(routers, 0, sizeof *routers);
    memset(ks, 0, sizeof *ks);
    Names seen = {0};
    for (long i = 0; i < g->n; i++) {
        const Row *r = g->rows[i];
        if (!r->router || !r->split || strcmp(r->split, "test"))
            continue;
        if (r->strategy)
            namesAdd(strategies, r->strategy);
        namesAdd(&seen, r->router);
        if (r->k > 0)
            intsAdd(ks, r->k);
    }
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < seen.n; j++)
            if (!strcmp(seen.v[j], routerOrder[i]))
                namesAdd(routers, seen.v[j]);
    for (int j = 0; j < seen.n; j++)
        namesAdd(routers, seen.v[j]);
    qsort(ks->v, (size_t)ks->n, sizeof(int), cmpInt);
}

static void expertsOf(const Group *g, const char *strategy, Ints *Es) {
    memset(Es, 0, sizeof *Es);
    for (long i = 0; i < g->n; i++) {
        const Row *r = g->rows[i];
        if (r->strategy && !strcmp(r->strategy, strategy) && r->E > 0)
            intsAdd(Es, r->E);
    }
}

/* k ticks; a log axis when k spans a factor of 8 or more. */
static void kAxis(Chart *c, int panel, const Ints *ks) {
    double at[256];
    for (int i = 0; i < ks->n; i++)
        at[i] = ks->v[i];
    Chart_setXTicks(c, panel, at, NULL, ks->n);
    if (ks->n > 1 && ks->v[ks->n - 1] >= 8 * ks->v[0])
        Chart_setScale(c, panel, CHART_LOG, CHART_LINEAR);
}

/* One series over k of (strategy, router, E) for metric, from the test rows. */
static void seriesOverK(Chart *c, int panel, const Group *g, const char *strategy,
                        const char *router, int E, const Ints *ks, const char *metric,
                        const char *label) {
    double x[256], y[256];
    int n = 0;
    for (int i = 0; i < ks->n; i++) {
        const Row *r = findRow(g, strategy, router, E, ks->v[i], "test", metric);
        if (r) {
            x[n] = ks->v[i];
            y[n++] = r->value;
        }
    }
    if (n == 0)
        return;
    char *src = xAsprintf("layer=%d;tau=%.9g;strategy=%s;router=%s;E=%d;split=test;metric=%s;"
                          "x=k", g->layer, g->tau, strategy ? strategy : "", router, E, metric);
    Chart_addLine(c, panel, label, x, y, n, routerStyle(router), CHART_LINE | CHART_MARKERS,
                  src);
    free(src);
}

static MsStatus recallFigure(FigureSet *this, const Group *g, const char *strategy, int E,
                             const Names *routers, const Ints *ks, char **cause) {
    char *title = layerTitle(this, g->layer);
    char *full = xAsprintf("%s: %s partition, E = %d experts, test split", title, strategy, E);
    Chart *c = Chart_new(full, 1, 2);
    Chart_setLegendBelow(c, true);
    Chart_setPanel(c, 0, "Mass recall@k", "k (experts selected per token)",
                   "mass recall@k (share of |h| mass kept)");
    Chart_setPanel(c, 1, "Output error", "k (experts selected per token)",
                   "output relative error \xe2\x80\x96y \xe2\x88\x92 \xc5\xb7\xe2\x80\x96 / \xe2\x80\x96y\xe2\x80\x96");
    for (int p = 0; p < 2; p++)
        kAxis(c, p, ks);
    Chart_setLimits(c, 0, NAN, NAN, 0.0, 1.02);
    Chart_setLimits(c, 1, NAN, NAN, 0.0, NAN);
    for (int i = 0; i < routers->n; i++) {
        const char *r = routers->v[i];
        if (!strcmp(r, "topk_neurons")) {
            seriesOverK(c, 1, g, NULL, r, E, ks, "output_rel_err", "top-K neurons (bound)");
            continue;
        }
        const char *label = !strcmp(r, "oracle") ? "oracle (upper bound)" : r;
        seriesOverK(c, 0, g, strategy, r, E, ks, "mass_recall", label);
        seriesOverK(c, 1, g, strategy, r, E, ks, "output_rel_err", label);
    }
    char *suffix = tauSuffix(this, g->tau);
    char *base = xAsprintf("layer%d_recall_%s_E%d%s", g->layer, strategy, E, suffix);
    MsStatus st = writeChart(this, c, base, 720, 320, cause);
    free(base);
    free(suffix);
    free(full);
    free(title);
    Chart_delete(c);
    return st;
}

typedef struct Point {
    double x, y;
} Point;

static int cmpPoint(const void *a, const void *b) {
    const Point *p = a, *q = b;
    return p->x < q->x ? -1 : p->x > q->x ? 1 : p->y < q->y ? -1 : p->y > q->y;
}

/* All points as markers, and a line through the lowest error at or below each x. */
static void tradeoffSeries(Chart *c, int panel, Point *pts, int n, const char *label,
                           int style, const char *src) {
    if (n == 0)
        return;
    qsort(pts, (size_t)n, sizeof *pts, cmpPoint);
    double *x = xMallocArray((size_t)n, sizeof(double)), *y = xMallocArray((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        x[i] = pts[i].x;
        y[i] = pts[i].y;
    }
    Chart_addLine(c, panel, NULL, x, y, n, style, CHART_MARKERS, src);
    int m = 0;
    double best = INFINITY;
    for (int i = 0; i < n; i++) {
        if (pts[i].y < best) {
            best = pts[i].y;
            x[m] = pts[i].x;
            y[m++] = pts[i].y;
        }
    }
    char *esrc = xAsprintf("%s;envelope", src);
    Chart_addLine(c, panel, label, x, y, m, style, CHART_LINE | CHART_MARKERS, esrc);
    free(esrc);
    free(x);
    free(y);
}

static const LayerFig *layerFig(const FigureSet *this, int layer, double tau) {
    for (int i = 0; i < this->n_layers; i++)
        if (this->layers[i].layer == layer && this->layers[i].tau == tau)
            return &this->layers[i];
    return NULL;
}

static MsStatus tradeoffFigure(FigureSet *this, const Group *g, const Names *strategies,
                               const Names *routers, char **cause) {
    if (strategies->n == 0)
        return MS_OK;
    char *title = layerTitle(this, g->layer);
    char *full = xAsprintf("%s: output error against FLOPs (test split, every E and k)", title);
    Chart *c = Chart_new(full, 1, strategies->n);
    Chart_setLegendBelow(c, true);
    Point *pts = xMallocArray((size_t)g->n + 1, sizeof(Point));
    const LayerFig *L = layerFig(this, g->layer, g->tau);
    double xlo = INFINITY, xhi = -INFINITY;
    for (int s = 0; s < strategies->n; s++) {
        const char *strategy = strategies->v[s];
        char *ptitle = xAsprintf("%s partition", strategy);
        Chart_setPanel(c, s, ptitle, "FLOPs fraction (MoE / dense FFN per token)",
                       s == 0 ? "output relative error" : NULL);
        free(ptitle);
        for (int i = 0; i < routers->n; i++) {
            const char *router = routers->v[i];
            bool topk = !strcmp(router, "topk_neurons");
            if (topk && !L)
                continue;
            int n = 0;
            for (long j = 0; j < g->n; j++) {
                const Row *r = g->rows[j];
                if (!r->router || strcmp(r->router, router) || !r->split ||
                    strcmp(r->split, "test") || strcmp(r->metric, "output_rel_err"))
                    continue;
                if (topk) {
                    const Row *K = findRow(g, NULL, router, r->E, r->k, "test", "K");
                    if (!K)
                        continue;
                    pts[n].x = K->value / L->N;
                } else {
                    if (!r->strategy || strcmp(r->strategy, strategy))
                        continue;
                    const Row *f =
                        findRow(g, strategy, router, r->E, r->k, "test", "flops_fraction");
                    if (!f)
                        continue;
                    pts[n].x = f->value;
                }
                pts[n++].y = r->value;
                xlo = fmin(xlo, pts[n - 1].x);
                xhi = fmax(xhi, pts[n - 1].x);
            }
            char *src = topk ? xAsprintf("layer=%d;tau=%.9g;strategy=;router=%s;split=test;"
                                         "metric=output_rel_err;x=@K/%d",
                                         g->layer, g->tau, router, L->N)
                             : xAsprintf("layer=%d;tau=%.9g;strategy=%s;router=%s;split=test;"
                                         "metric=output_rel_err;x=@flops_fraction",
                                         g->layer, g->tau, strategy, router);
            const char *label = topk ? "top-K neurons (bound, x = K / d_ff)"
                                : !strcmp(router, "oracle") ? "oracle (router cost 0)" : router;
            tradeoffSeries(c, s, pts, n, label, routerStyle(router), src);
            free(src);
        }
        Chart_setLimits(c, s, NAN, NAN, 0.0, NAN);
    }
    for (int s = 0; s < strategies->n && xhi >= 8 * xlo && xlo > 0; s++)
        Chart_setScale(c, s, CHART_LOG, CHART_LINEAR);
    Chart_setSubtitle(c, "markers: every (E, k) of the run; lines: the lowest error at or below "
                         "each FLOPs fraction");
    char *suffix = tauSuffix(this, g->tau);
    char *base = xAsprintf("layer%d_tradeoff%s", g->layer, suffix);
    double w = strategies->n == 1 ? 440 : 300.0 * strategies->n;
    MsStatus st = writeChart(this, c, base, w, 340, cause);
    free(base);
    free(suffix);
    free(pts);
    free(full);
    free(title);
    Chart_delete(c);
    return st;
}

/* ---------------------------------------------------------------- summary */

typedef struct Summary {
    const Group *groups; /* of one tau, by layer */
    int n;
    double tau;
} Summary;

static void summaryLayerTicks(Chart *c, int panel, const Summary *sm) {
    double at[256];
    int n = 0;
    for (int i = 0; i < sm->n && n < 256; i++)
        at[n++] = sm->groups[i].layer;
    Chart_setXTicks(c, panel, at, NULL, n);
}

/* A per-layer series of one row kind; bars or lines. */
static void summarySeries(Chart *c, int panel, const Summary *sm, const char *strategy,
                          const char *router, int E, int k, const char *split,
                          const char *metric, const char *label, int style, bool bars) {
    double x[256], y[256];
    int n = 0;
    for (int i = 0; i < sm->n && n < 256; i++) {
        const Row *r = findRow(&sm->groups[i], strategy, router, E, k, split, metric);
        if (r) {
            x[n] = sm->groups[i].layer;
            y[n++] = r->value;
        }
    }
    if (n == 0)
        return;
    char *src = xAsprintf("tau=%.9g;strategy=%s;router=%s;E=%d;k=%d;split=%s;metric=%s;x=layer",
                          sm->tau, strategy ? strategy : "", router ? router : "", E, k, split,
                          metric);
    if (bars)
        Chart_addBars(c, panel, label, x, y, n, style, src);
    else
        Chart_addLine(c, panel, label, x, y, n, style, CHART_LINE | CHART_MARKERS, src);
    free(src);
}

static MsStatus summaryFigure(FigureSet *this, const Summary *sm, char **cause) {
    Names strategies = {0}, routers = {0};
    Ints ks = {0};
    for (int i = 0; i < sm->n; i++) {
        Names s, r;
        Ints k;
        groupAxes(&sm->groups[i], &s, &r, &k);
        for (int j = 0; j < s.n; j++)
            namesAdd(&strategies, s.v[j]);
        for (int j = 0; j < r.n; j++)
            namesAdd(&routers, r.v[j]);
        for (int j = 0; j < k.n; j++)
            intsAdd(&ks, k.v[j]);
    }
    int k = ks.n ? ks.v[0] : 0;
    int cols = 1 + strategies.n;
    char *full = xAsprintf("All layers, \xcf\x84 = %g (router metrics on the test split)",
                           sm->tau);
    Chart *c = Chart_new(full, 2, cols);
    Chart_setLegendBelow(c, true);
    Chart_setPanel(c, 0, "Sparsity by layer", "layer", "fraction");
    summaryLayerTicks(c, 0, sm);
    Chart_setLimits(c, 0, NAN, NAN, 0.0, 1.02);
    summarySeries(c, 0, sm, NULL, NULL, 0, 0, "all", "sparsity", "sparsity", 0, true);
    summarySeries(c, 0, sm, NULL, NULL, 0, 0, "all", "dead_fraction", "dead neurons", 6, true);
    double most = 0;
    for (int i = 0; i < sm->n; i++) {
        const Row *r = findRow(&sm->groups[i], NULL, NULL, 0, 0, "all", "sparsity");
        most = r && r->value > most ? r->value : most;
    }
    if (most < 5e-4) /* empty bars would look like missing data */
        Chart_addNote(c, 0, "every |h| > \xcf\x84: sparsity 0 in every layer");
    Chart_setPanel(c, cols, "Intra-expert co-activation", "layer", "share of co-activations");
    summaryLayerTicks(c, cols, sm);
    Chart_setLimits(c, cols, NAN, NAN, 0.0, NAN);
    for (int s = 0; s < strategies.n; s++) {
        const char *strategy = strategies.v[s];
        Ints Es;
        expertsOf(&sm->groups[0], strategy, &Es);
        int E = Es.n ? Es.v[0] : 0;
        char *label = xAsprintf("%s, E = %d", strategy, E);
        summarySeries(c, cols, sm, strategy, NULL, E, 0, "train", "intra_coact", label,
                      strategyStyle(strategy), true);
        free(label);
        int top = 1 + s, bottom = cols + 1 + s;
        char *t1 = xAsprintf("%s: mass recall@%d, E = %d", strategy, k, E);
        char *t2 = xAsprintf("%s: output error, k = %d, E = %d", strategy, k, E);
        Chart_setPanel(c, top, t1, "layer", "mass recall");
        Chart_setPanel(c, bottom, t2, "layer", "output relative error");
        free(t1);
        free(t2);
        summaryLayerTicks(c, top, sm);
        summaryLayerTicks(c, bottom, sm);
        Chart_setLimits(c, top, NAN, NAN, 0.0, 1.02);
        Chart_setLimits(c, bottom, NAN, NAN, 0.0, NAN);
        for (int i = 0; i < routers.n; i++) {
            const char *r = routers.v[i];
            bool topk = !strcmp(r, "topk_neurons");
            const char *lab = topk ? "top-K neurons (bound)"
                              : !strcmp(r, "oracle") ? "oracle (upper bound)" : r;
            if (!topk)
                summarySeries(c, top, sm, strategy, r, E, k, "test", "mass_recall", lab,
                              routerStyle(r), false);
            summarySeries(c, bottom, sm, topk ? NULL : strategy, r, E, k, "test",
                          "output_rel_err", lab, routerStyle(r), false);
        }
    }
    char *suffix = tauSuffix(this, sm->tau);
    char *base = xAsprintf("summary%s", suffix);
    MsStatus st = writeChart(this, c, base, 60 + 250.0 * cols, 560, cause);
    free(base);
    free(suffix);
    free(full);
    Chart_delete(c);
    return st;
}

/* ---------------------------------------------------------------- driver */

static int cmpRowIndex(const void *a, const void *b) {
    const Row *p = *(const Row *const *)a, *q = *(const Row *const *)b;
    if (p->tau != q->tau)
        return p->tau < q->tau ? -1 : 1;
    if (p->layer != q->layer)
        return p->layer < q->layer ? -1 : 1;
    return p < q ? -1 : p > q; /* emission order */
}

static MsStatus layerFigures(FigureSet *this, const Group *g, char **cause) {
    const LayerFig *L = layerFig(this, g->layer, g->tau);
    MsStatus st = MS_OK;
    if (L)
        st = sparsityFigure(this, g, L, cause);
    Names strategies, routers;
    Ints ks;
    groupAxes(g, &strategies, &routers, &ks);
    for (int s = 0; s < strategies.n && st == MS_OK; s++) {
        Ints Es;
        expertsOf(g, strategies.v[s], &Es);
        for (int e = 0; e < Es.n && st == MS_OK; e++)
            st = recallFigure(this, g, strategies.v[s], Es.v[e], &routers, &ks, cause);
    }
    if (st == MS_OK && routers.n > 0)
        st = tradeoffFigure(this, g, &strategies, &routers, cause);
    return st;
}

MsStatus FigureSet_write(FigureSet *this, char **cause) {
    const Row **idx = xMallocArray((size_t)this->n_rows + 1, sizeof *idx);
    for (long i = 0; i < this->n_rows; i++)
        idx[i] = &this->rows[i];
    qsort(idx, (size_t)this->n_rows, sizeof *idx, cmpRowIndex);
    Group *groups = xMallocArray((size_t)this->n_rows + 1, sizeof *groups);
    int n_groups = 0;
    for (long i = 0; i < this->n_rows;) {
        long j = i;
        while (j < this->n_rows && idx[j]->layer == idx[i]->layer && idx[j]->tau == idx[i]->tau)
            j++;
        groups[n_groups++] = (Group){idx[i]->layer, idx[i]->tau, &idx[i], j - i};
        i = j;
    }
    MsStatus st = MS_OK;
    for (int i = 0; i < n_groups && st == MS_OK; i++)
        st = layerFigures(this, &groups[i], cause);
    for (int i = 0; i < n_groups && st == MS_OK;) {
        int j = i;
        while (j < n_groups && groups[j].tau == groups[i].tau)
            j++;
        Summary sm = {&groups[i], j - i, groups[i].tau};
        st = summaryFigure(this, &sm, cause);
        i = j;
    }
    free(groups);
    free(idx);
    return st;
}
