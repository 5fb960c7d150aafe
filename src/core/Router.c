/*
moescope - core/Router.c
Routers of SPEC §4: scoring, and the MoEfication mlp router's training.

DESIGN: mlp training is plain minibatch Adam written out by hand (forward, backward,
update) so that every number is reproducible. One trainer trains a set of P nets (the
same layer under P partitions; Router_new's mlp is the case P = 1): they differ only in
W1's initial centers, the targets and each minibatch's target max, and share the rows,
the seeded minibatch order and everything derived from x. Each minibatch takes two
parallel runs of small tasks (many per thread, so that the two threads finish together):
the forward and backward pass over fixed pieces of rows, then the update over fixed
blocks of the stacked W1's columns and of each net's W2 rows. The two products over x
are done once for all nets, with the nets' W1 stacked ([P E][d]): x W1^T (B x P E) and
dW1 = G1^T x (P E x d); core/Vec computes each output element as one running sum in k
order wherever it sits in the product, so every net's numbers are bitwise those of its
own training. An update task computes its block's gradient once per fixed chunk of rows
and lets Adam add the chunks' shares in chunk order. All boundaries depend only on the
shapes, never on the thread count, and every task writes its own slots, so the weights
are bitwise the same for any opt->threads. Products go through core/Vec's strided
kernels rather than OpenBLAS, whose sgemm results change with its own thread count;
they read the minibatch's token rows of x in place (no normalized copy: xhat W1^T =
(x W1^T) / ||x||). The products' B operands are laid out in Vec panels by whoever has
them in cache, once per minibatch instead of once per product and task: W1^T by the
update tasks that just wrote W1's blocks, and the minibatch's rows of x (dW1 = G1^T x)
by the forward product, a row group at a time as it passes them (the last piece of a
minibatch is cut in two, so that the threads finish closer together). The update also
fetches the next minibatch's rows of x from memory, which the forward pass would
otherwise wait for. The targets (oracle scores) of all nets are made in one pass over h,
and each epoch starts by gathering them into its order, all at once (a minibatch's at a
time, each wait for memory stalled the update).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Router.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/Parallel.h"
#include "core/Vec.h"
#include "util/XUtils.h"

enum {
    SCORE_BLOCK = 256, /* rows per scoring step (bounds the scratch) */
    FWD_ROWS = 128,    /* rows per forward/backward task of a minibatch */
    TAIL_ROWS = 32,    /* a last piece of 2 * TAIL_ROWS rows or more goes in two halves */
    GRAD_ROWS = 256,   /* rows per partial gradient (summed in order by Adam) */
    W1_COLS = 32,      /* columns of W1 per update task */
    W2_ROWS = 24,      /* rows of W2 per update task */
    GATHER_AHEAD = 8,  /* rows of targets fetched ahead of their copy */
    GATHER_ROWS = 1024, /* rows of the epoch's order per task of the targets' gather */
};
_Static_assert(GRAD_ROWS % FWD_ROWS == 0, "a forward piece lies in one gradient chunk");
_Static_assert(W1_COLS % 16 == 0, "W1's update blocks start on x's panels");

struct Router {
    RouterKind kind;
    int E, d_model, N;
    int32_t *part;   /* oracle: copy of the partition */
    float *centers;  /* [E][d_model] */
    double *cnorm2;  /* [E] ||c_e||^2 */
    float *W1, *W2;  /* mlp */
    double *loss;    /* mlp: [epochs] */
    int epochs;
};

static const char *const kindNames[ROUTER_KINDS] = {
    [ROUTER_ORACLE] = "oracle",
    [ROUTER_SIMILARITY] = "similarity",
    [ROUTER_MLP] = "mlp",
    [ROUTER_SIGMOID] = "sigmoid",
    [ROUTER_TOPK_NEURONS] = "topk_neurons",
};

const char *RouterKind_name(RouterKind kind) {
    return (unsigned)kind < ROUTER_KINDS ? kindNames[kind] : "?";
}

bool RouterKind_parse(const char *name, RouterKind *out) {
    for (int i = 0; i < ROUTER_KINDS; i++) {
        if (name && strcmp(name, kindNames[i]) == 0) {
            *out = (RouterKind)i;
            return true;
        }
    }
    return false;
}

const char *RouterKind_allNames(void) {
    return "oracle | similarity | mlp | sigmoid | topk_neurons";
}

void RouterOptions_default(RouterOptions *o) {
    *o = (RouterOptions){
        .epochs = 30,
        .batch = 512,
        .lr = 0.01,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
        .seed = 1,
        .train_split = SPLIT_TRAIN,
        .threads = 2,
    };
}

MsStatus Router_checkPartition(const int32_t *part, int N, int E, char **cause) {
    if (E < 1 || E > N) {
        setCause(cause, "the number of experts must lie in [1, d_ff = %d] (got %d)", N, E);
        return MS_ERR_RANGE;
    }
    int *size = xCalloc((size_t)E, sizeof *size);
    MsStatus st = MS_OK;
    for (int j = 0; j < N; j++) {
        if (part[j] < 0 || part[j] >= E) {
            setCause(cause, "neuron %d is assigned to expert %d, outside 0..%d", j,
                     (int)part[j], E - 1);
            st = MS_ERR_RANGE;
            break;
        }
        size[part[j]]++;
    }
    for (int e = 0; e < E && st == MS_OK; e++) {
        if (size[e] == 0) {
            setCause(cause, "expert %d of %d has no neurons", e, E);
            st = MS_ERR_RANGE;
        }
    }
    free(size);
    return st;
}

void Router_expertCenters(const float *keys, int N, int d_model, const int32_t *part, int E,
                          float *c) {
    double *acc = xCalloc((size_t)E * (size_t)d_model, sizeof *acc);
    int *size = xCalloc((size_t)E, sizeof *size);
    for (int j = 0; j < N; j++) {
        const float *k = keys + (size_t)j * (size_t)d_model;
        double nn = 0.0;
        for (int i = 0; i < d_model; i++)
            nn += (double)k[i] * k[i];
        double inv = nn > 0.0 ? 1.0 / sqrt(nn) : 0.0;
        double *a = acc + (size_t)part[j] * (size_t)d_model;
        for (int i = 0; i < d_model; i++)
            a[i] += k[i] * inv;
        size[part[j]]++;
    }
    for (int e = 0; e < E; e++)
        for (int i = 0; i < d_model; i++) {
            size_t at = (size_t)e * (size_t)d_model + (size_t)i;
            c[at] = size[e] ? (float)(acc[at] / size[e]) : 0.0f;
        }
    free(size);
    free(acc);
}

/* Router_oracleScores for P partitions in one pass over h: s + p * sStride gets the scores
   under parts[p]. Each row's nonzeros are found once (h is mostly zeros after a ReLU); the
   sums run over them in ascending order, as a plain loop skipping the zeros would. */
static void oracleScoresSet(const float *h, long rows, int N, const int32_t *const *parts,
                            int P, int E, float *s, long sStride) {
    double *acc = xMallocArray((size_t)E, sizeof *acc);
    int *nz = xMallocArray((size_t)N, sizeof *nz);
    for (long t = 0; t < rows; t++) {
        const float *row = h + t * (long)N;
        int n = Vec_nonzeros(N, row, nz);
        for (int p = 0; p < P; p++) {
            const int32_t *part = parts[p];
            memset(acc, 0, (size_t)E * sizeof *acc);
            for (int q = 0; q < n; q++)
                acc[part[nz[q]]] += fabsf(row[nz[q]]);
            for (int e = 0; e < E; e++)
                s[p * sStride + t * E + e] = (float)acc[e];
        }
    }
    free(nz);
    free(acc);
}

void Router_oracleScores(const float *h, long rows, int N, const int32_t *part, int E,
                         float *s) {
    oracleScoresSet(h, rows, N, &part, 1, E, s, 0);
}

/* out[rows][n] = a[rows][k] b[n][k]^T, the same numbers whatever the blocking */
static void gemmNT(const float *a, long rows, const float *b, int n, int k, float *out) {
    Vec_gemmNT((int)rows, n, k, a, k, b, k, out, n);
}

static double rowNorm(const float *x, int d) {
    double nn = 0.0;
    for (int i = 0; i < d; i++)
        nn += (double)x[i] * x[i];
    return sqrt(nn);
}

/* The mlp forward pass on xhat rows: A = tanh(xhat W1^T), Z = A W2^T. */
static void mlpForward(const float *W1, const float *W2, int E, int d, const float *xhat,
                       long rows, float *A, float *Z) {
    gemmNT(xhat, rows, W1, E, d, A);
    Vec_tanh(A, rows * E);
    gemmNT(A, rows, W2, E, E, Z);
}

static void scoreBlock(const Router *this, const float *x, long rows, float *out, bool logits,
                       float *scratch) {
    int E = this->E, d = this->d_model;
    if (this->kind == ROUTER_MLP) {
        float *xhat = scratch, *A = scratch + (size_t)rows * (size_t)d;
        for (long t = 0; t < rows; t++) {
            double n = rowNorm(x + t * d, d);
            float inv = n > 0.0 ? (float)(1.0 / n) : 0.0f;
            for (int i = 0; i < d; i++)
                xhat[t * d + i] = x[t * d + i] * inv;
        }
        mlpForward(this->W1, this->W2, E, d, xhat, rows, A, out);
        return;
    }
    gemmNT(x, rows, this->centers, E, d, out); /* x . c_e */
    for (long t = 0; t < rows; t++) {
        float *o = out + t * E;
        if (this->kind == ROUTER_SIGMOID) {
            if (!logits)
                for (int e = 0; e < E; e++)
                    o[e] = (float)(1.0 / (1.0 + exp(-(double)o[e])));
            continue;
        }
        /* ||xhat - c||^2 = ||xhat||^2 + ||c||^2 - 2 xhat . c, with xhat = 0 for x = 0 */
        double n = rowNorm(x + t * d, d);
        double xx = n > 0.0 ? 1.0 : 0.0, inv = n > 0.0 ? 1.0 / n : 0.0;
        for (int e = 0; e < E; e++) {
            double dist2 = xx + this->cnorm2[e] - 2.0 * (double)o[e] * inv;
            o[e] = (float)-sqrt(dist2 > 0.0 ? dist2 : 0.0);
        }
    }
}

static void scoreRows(const Router *this, const float *x, const float *h, long rows,
                      float *out, bool logits) {
    if (this->kind == ROUTER_ORACLE) {
        Router_oracleScores(h, rows, this->N, this->part, this->E, out);
        return;
    }
    long block = rows < SCORE_BLOCK ? rows : SCORE_BLOCK;
    float *scratch = this->kind == ROUTER_MLP
                         ? xMallocArray((size_t)block * (size_t)(this->d_model + this->E),
                                        sizeof(float))
                         : NULL;
    for (long r0 = 0; r0 < rows; r0 += SCORE_BLOCK) {
        long n = rows - r0 < SCORE_BLOCK ? rows - r0 : SCORE_BLOCK;
        scoreBlock(this, x + r0 * this->d_model, n, out + r0 * this->E, logits, scratch);
    }
    free(scratch);
}

void Router_score(const Router *this, const float *x, const float *h, long rows,
                  float *scores) {
    scoreRows(this, x, h, rows, scores, false);
}

void Router_logits(const Router *this, const float *x, const float *h, long rows,
                   float *logits) {
    scoreRows(this, x, h, rows, logits, true);
}

RouterKind Router_kind(const Router *this) {
    return this->kind;
}

int Router_experts(const Router *this) {
    return this->E;
}

bool Router_scalesOutput(const Router *this) {
    return this->kind == ROUTER_SIGMOID;
}

float Router_gate(const Router *this, float score) {
    return this->kind == ROUTER_SIGMOID ? score : 1.0f;
}

const float *Router_centers(const Router *this) {
    return this->centers;
}

const float *Router_mlpW1(const Router *this) {
    return this->W1;
}

const float *Router_mlpW2(const Router *this) {
    return this->W2;
}

int Router_lossHistory(const Router *this, const double **loss) {
    *loss = this->loss;
    return this->loss ? this->epochs : 0;
}

void Router_delete(Router *this) {
    if (!this)
        return;
    free(this->part);
    free(this->centers);
    free(this->cnorm2);
    free(this->W1);
    free(this->W2);
    free(this->loss);
    free(this);
}

/* ---- mlp training ---- */

/* splitmix64: tiny, seedable, and the same on every platform. */
static uint64_t rngNext(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias. */
static uint64_t rngBelow(uint64_t *state, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do
        v = rngNext(state);
    while (v >= limit);
    return v % n;
}

static void shuffle(long *perm, long n, uint64_t *state) {
    for (long i = n - 1; i > 0; i--) {
        long j = (long)rngBelow(state, (uint64_t)i + 1);
        long tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}

typedef struct Adam {
    double lr, b1, b2, eps;
    long step;
    float stepSize, invSqrtBc2; /* this step's bias corrections (PyTorch's formulation) */
} Adam;

static void adamNextStep(Adam *a) {
    a->step++;
    double bc1 = 1.0 - pow(a->b1, (double)a->step);
    double bc2 = 1.0 - pow(a->b2, (double)a->step);
    a->stepSize = (float)(a->lr / bc1);
    a->invSqrtBc2 = (float)(1.0 / sqrt(bc2));
}

/* One Adam update of p[n] with the gradient g[i] + g[stride + i] + ... (parts terms). */
static void adamUpdate(const Adam *a, float *p, const float *g, int parts, long stride, float *m,
                       float *v, long n) {
    Vec_adamSum(n, parts, stride, p, g, m, v, (float)a->b1, (float)a->b2, a->stepSize,
                a->invSqrtBc2, (float)a->eps);
}

/* One net of a (fused) training: its partition's targets and its own weights and buffers.
   The nets of a set share the token rows, the minibatch order and everything derived from x. */
typedef struct Net {
    Router *r;              /* receives W1 (at the end), W2 (in place) and the loss history */
    const float *S;         /* [n][E] oracle scores of the train rows under this partition */
    const float *rowMax;    /* [n] the maxima of S's rows */
    float *Sp, *rowMaxP;    /* [n][E], [n]: S's rows in the epoch's order, and their maxima */
    const float *Sb, *rowMaxB; /* the minibatch's rows of Sp and rowMaxP (whose max is the
                                  minibatch's) */
    float invMax;           /* 1 / max of S over the minibatch (0 when all zero) */
    float *W2t, *m2, *v2;   /* [E][E] (W2 itself is r->W2) */
    float *A, *G2, *G1, *Lb; /* [batch][E]: tanh activations, dL/dZ, dL/d(W1 xhat) / ||x||,
                                per-entry losses */
    double *chunkLoss;      /* [chunks] */
} Net;

typedef struct Trainer {
    int E, d, P, PE;      /* P nets of E experts: PE rows of the stacked W1 */
    const float *x;       /* train rows of x */
    const float *invNorm; /* [n] 1 / ||x|| */
    const long *perm;
    long n;               /* train rows */
    long off, B;          /* current minibatch: perm[off .. off + B) */
    float *W1b, *m1, *v1; /* the nets' W1 stacked ([PE][d]) and its moments, by update block:
                             columns j0 .. j0 + cols at j0 * PE, [PE][cols] */
    float *W1p;           /* the stacked W1^T in Vec panels (d x PE): the forward product's B */
    const float **rows;   /* [batch] the minibatch's rows of x */
    float *inv;           /* [batch] their 1 / ||x|| */
    float *Aw;            /* [batch][PE] x W1^T of every net, before the 1 / ||x|| */
    float *G1t;           /* [PE][ldg] every net's G1 transposed: dW1's A operand */
    long ldg;             /* batch plus a cache line: G1t's rows 2^n bytes apart would
                             share a few L1 sets, and the transposes into them thrash */
    float *xp;            /* per chunk, Vec panels of its rows of x (rows x d): dW1's B */
    long xpLen;
    float *share;         /* per worker: [chunks][shareLen] one block's partial gradients */
    long shareLen;
    int chunks;           /* GRAD_ROWS row chunks of the current minibatch */
    int w2Blocks, w1Blocks; /* per net, and for the stacked W1 */
    Adam adam;
    Net *net;             /* [P] */
    float *work;          /* the buffer all float arrays above are carved from */
} Trainer;

static long minLong(long a, long b) {
    return a < b ? a : b;
}

/* Net p's rows r0 .. r0 + rows after the shared product: loss and backward to G1 and G2
   (and their transposes), exactly as a training of that net alone computes them. */
static void netForward(Trainer *tr, int p, long r0, long rows) {
    Net *net = &tr->net[p];
    int E = tr->E;
    const float *inv = tr->inv + r0;
    float *A = net->A + r0 * E, *G2 = net->G2 + r0 * E, *G1 = net->G1 + r0 * E;
    for (long i = 0; i < rows; i++)
        Vec_scaleTanh(E, inv[i], tr->Aw + (r0 + i) * tr->PE + p * E, A + i * E);
    float *Z = G1; /* the logits live in G1 until dA overwrites them */
    Vec_gemmStrided((int)rows, E, E, A, E, 1, net->W2t, E, Z, E, false);
    float scale = 1.0f / (float)((double)tr->B * E);
    Vec_bceWithLogits(rows * E, Z, net->Sb + r0 * E, net->invMax, scale, net->Lb + r0 * E, G2);
    /* dA = G2 W2, then through tanh and the row's norm: G1 = dA (1 - A^2) / ||x|| */
    Vec_gemmStrided((int)rows, E, E, G2, E, 1, net->r->W2, E, G1, E, false);
    for (long i = 0; i < rows; i++)
        Vec_tanhGrad(E, A + i * E, inv[i], G1 + i * E);
    Vec_transpose((int)rows, E, G1, E, tr->G1t + (long)p * E * tr->ldg + r0, tr->ldg);
}

/* The forward pieces of the current minibatch: FWD_ROWS rows each, but the last one in
   two halves, so that the two threads' last pieces end closer together. */
static long forwardPieces(const Trainer *tr) {
    long n = Parallel_chunks(tr->B, FWD_ROWS);
    return tr->B - (n - 1) * FWD_ROWS >= 2 * TAIL_ROWS ? n + 1 : n;
}

static void pieceRows(const Trainer *tr, long piece, long *r0, long *rows) {
    long n = Parallel_chunks(tr->B, FWD_ROWS), last = (n - 1) * FWD_ROWS;
    *r0 = piece * FWD_ROWS;
    *rows = minLong(tr->B - *r0, FWD_ROWS);
    if (forwardPieces(tr) == n || piece < n - 1)
        return;
    long half = (tr->B - last) / 2;
    *r0 = piece == n - 1 ? last : last + half;
    *rows = piece == n - 1 ? half : tr->B - last - half;
}

/* Rows r0 .. r0 + rows of the minibatch (a piece): one product x W1^T for every net (x
   read in place: xhat W1^T = (x W1^T) / ||x||), then each net's forward and backward
   pass. */
static void forwardPiece(void *ctx, long piece, int worker) {
    Trainer *tr = ctx;
    int d = tr->d;
    long r0, rows;
    pieceRows(tr, piece, &r0, &rows);
    for (long i = r0; i < r0 + rows; i++) {
        long t = tr->perm[tr->off + i];
        tr->rows[i] = tr->x + t * d;
        tr->inv[i] = tr->invNorm[t];
    }
    /* x's rows laid out for the update's dW1 as the product passes them */
    long c = r0 / GRAD_ROWS, cr0 = c * GRAD_ROWS;
    int cRows = (int)minLong(tr->B - cr0, GRAD_ROWS);
    Vec_gemmGatherPanelsPut((int)rows, tr->PE, d, tr->rows + r0, tr->W1p, tr->Aw + r0 * tr->PE,
                            tr->PE, false, cRows, (int)(r0 - cr0), tr->xp + c * tr->xpLen);
    for (int p = 0; p < tr->P; p++)
        netForward(tr, p, r0, rows);
}

/* Rows e0 .. e0 + n of net p's W2: per row chunk dW2 = G2^T A (G2 read transposed in
   place), summed in chunk order by Adam; then the rows' columns of W2^T. */
static void updateW2(Trainer *tr, int p, int e0, int n, float *share) {
    Net *net = &tr->net[p];
    int E = tr->E;
    long len = (long)n * E;
    for (int c = 0; c < tr->chunks; c++) {
        long r0 = (long)c * GRAD_ROWS, rows = minLong(tr->B - r0, GRAD_ROWS);
        Vec_gemmStrided(n, E, (int)rows, net->G2 + r0 * E + e0, 1, E, net->A + r0 * E, E,
                        share + c * len, E, false);
    }
    long at = (long)e0 * E;
    float *W2 = net->r->W2;
    adamUpdate(&tr->adam, W2 + at, share, tr->chunks, len, net->m2 + at, net->v2 + at, len);
    Vec_transpose(n, E, W2 + at, E, net->W2t + e0, E);
}

/* Columns j0 .. j0 + n of the stacked W1 into its forward panels. */
static void panelW1(Trainer *tr, int j0, int n) {
    Vec_panelsPutRowsT(tr->d, tr->PE, j0, n, tr->W1b + (long)j0 * tr->PE, n, tr->W1p);
}

/* Columns j0 .. j0 + n of every net's W1: per row chunk dW1 = G1^T x for all nets in one
   product (x the kernel's copied operand, its rows' cache lines read once), summed in chunk
   order by each net's Adam; then W1^T's rows. */
static void updateW1(Trainer *tr, int j0, int n, float *share) {
    long len = (long)n * tr->PE, at = (long)j0 * tr->PE, netLen = (long)n * tr->E;
    for (int c = 0; c < tr->chunks; c++) {
        long r0 = (long)c * GRAD_ROWS, rows = minLong(tr->B - r0, GRAD_ROWS);
        const float *xp = tr->xp + c * tr->xpLen + j0 * rows; /* columns j0.. of x's rows */
        Vec_gemmPanels(tr->PE, n, (int)rows, tr->G1t + r0, tr->ldg, 1, xp, share + c * len, n,
                       false);
    }
    for (int p = 0; p < tr->P; p++) {
        long q = at + p * netLen;
        adamUpdate(&tr->adam, tr->W1b + q, share + p * netLen, tr->chunks, len, tr->m1 + q,
                   tr->v1 + q, netLen);
    }
    panelW1(tr, j0, n);
}

/* Net p's W1 [E][d] to the stacked update blocks (or back). */
static void blockW1(Trainer *tr, int p, float *W1, bool back) {
    int E = tr->E, d = tr->d;
    for (int j0 = 0; j0 < d; j0 += W1_COLS) {
        int n = (int)minLong(d - j0, W1_COLS);
        float *b = tr->W1b + (long)j0 * tr->PE + (long)p * E * n;
        for (int e = 0; e < E; e++) {
            float *blk = b + (long)e * n, *row = W1 + (long)e * d + j0;
            memcpy(back ? row : blk, back ? blk : row, (size_t)n * sizeof(float));
        }
    }
}

static long updateTasks(const Trainer *tr) {
    return (long)tr->P * tr->w2Blocks + tr->w1Blocks + (long)tr->P * tr->chunks;
}

/* Task `task` of an epoch's start: the nets' targets (and their row maxima) of its rows
   of the epoch's order to consecutive rows. The loss then reads them in sequence, and all
   of them come from memory in one go, many in flight, instead of a minibatch's at a time
   between the products (they are scattered over S, which the rows of x evict from cache
   within an epoch). */
static void gatherTargets(void *ctx, long task, int worker) {
    Trainer *tr = ctx;
    int E = tr->E;
    long i0 = task * GATHER_ROWS, i1 = minLong(tr->n, i0 + GATHER_ROWS);
    for (long i = i0; i < i1; i++) {
        if (i + GATHER_AHEAD < i1) /* every net's row, so that many are in flight */
            for (int p = 0; p < tr->P; p++)
                for (int e = 0; e < E; e += 16)
                    __builtin_prefetch(tr->net[p].S + tr->perm[i + GATHER_AHEAD] * E + e, 0, 3);
        long t = tr->perm[i];
        for (int p = 0; p < tr->P; p++) {
            Net *net = &tr->net[p];
            memcpy(net->Sp + i * E, net->S + t * E, (size_t)E * sizeof(float));
            net->rowMaxP[i] = net->rowMax[t];
        }
    }
}

/* Task `task` of the update fetches its share of the next minibatch's rows of x from
   memory (into L2, whence they go to L3): the forward pass would wait for them. */
static void prepareNext(Trainer *tr, long task) {
    long tasks = updateTasks(tr);
    long next = tr->off + tr->B, nextB = minLong(tr->n - next, tr->B);
    long i0 = task * nextB / tasks, i1 = (task + 1) * nextB / tasks;
    for (long i = next + i0; i < next + i1; i++)
        for (int c = 0; c < tr->d; c += 16)
            __builtin_prefetch(tr->x + tr->perm[i] * tr->d + c, 0, 1);
}

/* Tasks of the update: blocks of the stacked W1's columns, blocks of the nets' W2 rows,
   then the nets' row chunks' loss sums (the largest first, so that the threads run out
   of work together). */
static void updateTask(void *ctx, long task, int worker) {
    Trainer *tr = ctx;
    float *share = tr->share + (long)worker * tr->chunks * tr->shareLen;
    prepareNext(tr, task);
    if (task < tr->w1Blocks) {
        int j0 = (int)task * W1_COLS;
        updateW1(tr, j0, (int)minLong(tr->d - j0, W1_COLS), share);
        return;
    }
    task -= tr->w1Blocks;
    if (task < (long)tr->P * tr->w2Blocks) {
        int p = (int)(task / tr->w2Blocks), e0 = (int)(task % tr->w2Blocks) * W2_ROWS;
        updateW2(tr, p, e0, (int)minLong(tr->E - e0, W2_ROWS), share);
        return;
    }
    task -= (long)tr->P * tr->w2Blocks;
    Net *net = &tr->net[task / tr->chunks];
    long c = task % tr->chunks, r0 = c * GRAD_ROWS, rows = minLong(tr->B - r0, GRAD_ROWS);
    net->chunkLoss[c] = Vec_sum(rows * tr->E, net->Lb + r0 * tr->E);
}

/* ---- training data and buffers ---- */

/* What the nets train on: x's norms, every net's targets, the shuffled order. */
typedef struct TrainData {
    const LayerData *L;
    const int32_t *const *parts;
    int P, E;
    long row0, n;
    float *S;       /* [P][n][E] */
    float *Sp;      /* [P][n][E] S's rows in the epoch's order */
    float *rowMaxP; /* [P][n] their maxima */
    float *rowMax;  /* [P][n] the maxima of S's rows */
    float *invNorm; /* [n] */
    long *perm;     /* [n] */
} TrainData;

static void prepChunk(void *ctx, long chunk, int worker) {
    TrainData *td = ctx;
    int d = td->L->w->d_model, N = td->L->w->d_ff, E = td->E;
    long t0 = chunk * SCORE_BLOCK, rows = minLong(td->n - t0, SCORE_BLOCK);
    for (long t = t0; t < t0 + rows; t++) {
        double nn = rowNorm(td->L->x + (td->row0 + t) * d, d);
        td->invNorm[t] = nn > 0.0 ? (float)(1.0 / nn) : 0.0f;
    }
    oracleScoresSet(td->L->h + (td->row0 + t0) * N, rows, N, td->parts, td->P, E,
                    td->S + t0 * E, td->n * E);
    for (int p = 0; p < td->P; p++)
        for (long t = t0; t < t0 + rows; t++)
            td->rowMax[p * td->n + t] = Vec_max(E, td->S + (p * td->n + t) * E);
}

static void trainDataDone(TrainData *td) {
    free(td->S);
    free(td->Sp);
    free(td->rowMaxP);
    free(td->rowMax);
    free(td->invNorm);
    free(td->perm);
}

static MsStatus trainDataInit(TrainData *td, char **cause) {
    size_t n = (size_t)td->n, P = (size_t)td->P;
    td->S = tryMallocLarge(P * n * (size_t)td->E, sizeof(float)); /* read at random rows */
    td->Sp = tryMallocLarge(P * n * (size_t)td->E, sizeof(float));
    td->rowMaxP = tryMallocArray(P * n, sizeof(float));
    td->rowMax = tryMallocArray(P * n, sizeof(float));
    td->invNorm = tryMallocArray(n, sizeof(float));
    td->perm = tryMallocArray(n, sizeof(long));
    if (!td->S || !td->Sp || !td->rowMaxP || !td->rowMax || !td->invNorm || !td->perm) {
        setCause(cause, "no memory for mlp router training (%zu bytes)",
                 n * (P * ((size_t)2 * td->E + 2) * sizeof(float) + sizeof(float) +
                      sizeof(long)));
        trainDataDone(td);
        return MS_ERR_NOMEM;
    }
    for (long t = 0; t < td->n; t++)
        td->perm[t] = t;
    return MS_OK;
}

/* Consecutive pieces of one zeroed buffer: counted with base NULL, then handed out. */
typedef struct Carve {
    float *base;
    size_t used;
} Carve;

static float *carve(Carve *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) / 16 * 16; /* 64-byte steps */
    return p;
}

/* The trainer's float buffers, for minibatches of up to `batch` rows and `threads` workers. */
static void layoutTrainer(Trainer *tr, Carve *c, long batch, int threads) {
    size_t E = (size_t)tr->E, PE = (size_t)tr->PE, d = (size_t)tr->d, b = (size_t)batch;
    long chunksMax = Parallel_chunks(batch, GRAD_ROWS);
    tr->xpLen = Vec_panelsSize(GRAD_ROWS, tr->d);
    tr->shareLen = (long)(W1_COLS * PE > W2_ROWS * E ? W1_COLS * PE : W2_ROWS * E);
    tr->inv = carve(c, b);
    tr->Aw = carve(c, b * PE);
    tr->ldg = (long)(b + 15) / 16 * 16 + 16;
    tr->G1t = carve(c, PE * (size_t)tr->ldg);
    tr->W1b = carve(c, PE * d);
    tr->m1 = carve(c, PE * d);
    tr->v1 = carve(c, PE * d);
    tr->W1p = carve(c, (size_t)Vec_panelsSize(tr->d, tr->PE));
    tr->xp = carve(c, (size_t)(chunksMax * tr->xpLen));
    tr->share = carve(c, (size_t)threads * (size_t)(chunksMax * tr->shareLen));
    for (int p = 0; p < tr->P; p++) {
        Net *net = &tr->net[p];
        net->W2t = carve(c, E * E);
        net->m2 = carve(c, E * E);
        net->v2 = carve(c, E * E);
        net->A = carve(c, b * E);
        net->G2 = carve(c, b * E);
        net->G1 = carve(c, b * E);
        net->Lb = carve(c, b * E);
    }
}

static void trainerDone(Trainer *tr) {
    for (int p = 0; p < tr->P; p++)
        free(tr->net[p].chunkLoss);
    free(tr->net);
    free(tr->rows);
    free(tr->work);
}

/* The trainer of the nets r[0..P) (W1 = centers, W2 = identity) on td's rows. */
static MsStatus trainerInit(Trainer *tr, const TrainData *td, Router *const *r, long batch,
                            int threads, const RouterOptions *o, char **cause) {
    int E = td->E, d = td->L->w->d_model;
    *tr = (Trainer){
        .E = E, .d = d, .P = td->P, .PE = td->P * E, .x = td->L->x + td->row0 * d,
        .invNorm = td->invNorm, .perm = td->perm, .n = td->n,
        .w2Blocks = (int)Parallel_chunks(E, W2_ROWS), .w1Blocks = (int)Parallel_chunks(d, W1_COLS),
        .adam = {.lr = o->lr, .b1 = o->beta1, .b2 = o->beta2, .eps = o->eps},
        .net = xCalloc((size_t)td->P, sizeof(Net)),
    };
    Carve c = {0};
    layoutTrainer(tr, &c, batch, threads);
    tr->work = tryCallocArray(c.used, sizeof(float));
    if (!tr->work) {
        setCause(cause, "no memory for mlp router training (%zu bytes)", c.used * sizeof(float));
        trainerDone(tr);
        return MS_ERR_NOMEM;
    }
    c = (Carve){.base = tr->work};
    layoutTrainer(tr, &c, batch, threads);
    tr->rows = xMallocArray((size_t)batch, sizeof(float *));
    for (int p = 0; p < tr->P; p++) {
        Net *net = &tr->net[p];
        net->r = r[p];
        net->S = td->S + (long)p * td->n * E;
        net->Sp = td->Sp + (long)p * td->n * E;
        net->rowMaxP = td->rowMaxP + (long)p * td->n;
        net->rowMax = td->rowMax + (long)p * td->n;
        net->chunkLoss = xCalloc((size_t)Parallel_chunks(batch, GRAD_ROWS), sizeof(double));
        blockW1(tr, p, r[p]->W1, false);
        Vec_transpose(E, E, r[p]->W2, E, net->W2t, E);
    }
    for (int j0 = 0; j0 < d; j0 += W1_COLS)
        panelW1(tr, j0, (int)minLong(d - j0, W1_COLS));
    return MS_OK;
}

/* One minibatch, perm[off .. off + B): the forward and backward pieces, then the update. */
static MsStatus trainStep(Trainer *tr, ParallelPool *pool, const Cancel *cancel) {
    for (int p = 0; p < tr->P; p++) {
        Net *net = &tr->net[p];
        net->Sb = net->Sp + tr->off * tr->E;
        net->rowMaxB = net->rowMaxP + tr->off;
        float mx = 0.0f;
        for (long i = 0; i < tr->B; i++)
            mx = net->rowMaxB[i] > mx ? net->rowMaxB[i] : mx;
        net->invMax = mx > 0.0f ? 1.0f / mx : 0.0f;
    }
    tr->chunks = (int)Parallel_chunks(tr->B, GRAD_ROWS);
    adamNextStep(&tr->adam);
    MsStatus st = ParallelPool_run(pool, forwardPieces(tr), forwardPiece, tr, cancel);
    if (st == MS_OK)
        st = ParallelPool_run(pool, updateTasks(tr), updateTask, tr, NULL);
    return st;
}

/* The epochs: each shuffles the order, then runs its minibatches; the nets' losses go to
   their routers. */
static MsStatus trainEpochs(Trainer *tr, long *perm, long batch, int threads,
                            const RouterOptions *o, const Cancel *cancel) {
    uint64_t rng = (uint64_t)o->seed;
    ParallelPool *pool = ParallelPool_new(threads);
    long batches = Parallel_chunks(tr->n, batch);
    double *epochLoss = xCalloc((size_t)tr->P, sizeof(double));
    MsStatus st = MS_OK;
    for (int ep = 0; ep < o->epochs && st == MS_OK; ep++) {
        shuffle(perm, tr->n, &rng);
        st = ParallelPool_run(pool, Parallel_chunks(tr->n, GATHER_ROWS), gatherTargets, tr,
                              cancel);
        memset(epochLoss, 0, (size_t)tr->P * sizeof(double));
        for (long b = 0; b < batches && st == MS_OK; b++) {
            tr->off = b * batch;
            tr->B = minLong(tr->n - tr->off, batch);
            st = trainStep(tr, pool, cancel);
            for (int p = 0; p < tr->P && st == MS_OK; p++)
                for (long c = 0; c < tr->chunks; c++)
                    epochLoss[p] += tr->net[p].chunkLoss[c];
            Cancel_progress(cancel, (double)(ep * batches + b + 1) / (double)(o->epochs * batches));
        }
        for (int p = 0; p < tr->P; p++)
            tr->net[p].r->loss[ep] = epochLoss[p] / ((double)tr->n * tr->E);
    }
    free(epochLoss);
    ParallelPool_delete(pool);
    return st;
}

static MsStatus checkOptions(const RouterOptions *o, char **cause) {
    if (o->epochs < 0 || o->batch < 1 || !(o->lr > 0.0) || !(o->beta1 >= 0.0 && o->beta1 < 1.0) ||
        !(o->beta2 >= 0.0 && o->beta2 < 1.0) || !(o->eps > 0.0)) {
        setCause(cause, "mlp router options out of range (epochs >= 0, batch >= 1, lr > 0, "
                        "betas in [0, 1), eps > 0)");
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

/* The untrained mlp: W1 = the centers, W2 = the identity, room for the loss history. */
static void mlpInit(Router *this, int epochs) {
    int E = this->E;
    size_t w1Len = (size_t)E * (size_t)this->d_model;
    this->W1 = xMallocArray(w1Len, sizeof(float));
    memcpy(this->W1, this->centers, w1Len * sizeof(float));
    this->W2 = xCalloc((size_t)E * E, sizeof(float));
    for (int e = 0; e < E; e++)
        this->W2[e * E + e] = 1.0f;
    this->epochs = epochs;
    this->loss = xCalloc((size_t)(epochs > 0 ? epochs : 1), sizeof(double));
}

/* Trains the mlp routers r[p] (centers set) of partitions parts[p], p < P, in one pass. */
static MsStatus trainMlpSet(Router *const *r, int P, const LayerData *L,
                            const int32_t *const *parts, const RouterOptions *o,
                            const Cancel *cancel, char **cause) {
    TrainData td = {.L = L, .parts = parts, .P = P, .E = r[0]->E};
    long row1;
    Split_rows(L, o->train_split, &td.row0, &row1);
    td.n = row1 - td.row0;
    if (td.n < 1) {
        setCause(cause, "the mlp router has no %s tokens to train on", Split_name(o->train_split));
        return MS_ERR_RANGE;
    }
    for (int p = 0; p < P; p++)
        mlpInit(r[p], o->epochs);
    if (o->epochs == 0)
        return MS_OK;
    int threads = o->threads < 1 ? 1 : o->threads;
    long batch = minLong(o->batch, td.n);
    MsStatus st = trainDataInit(&td, cause);
    if (st != MS_OK)
        return st;
    st = Parallel_run(threads, Parallel_chunks(td.n, SCORE_BLOCK), prepChunk, &td, cancel, -1.0,
                      -1.0);
    Trainer tr;
    if (st == MS_OK && (st = trainerInit(&tr, &td, r, batch, threads, o, cause)) == MS_OK) {
        st = trainEpochs(&tr, td.perm, batch, threads, o, cancel);
        for (int p = 0; p < P; p++)
            blockW1(&tr, p, r[p]->W1, true);
        trainerDone(&tr);
    }
    trainDataDone(&td);
    if (st == MS_ERR_CANCELED)
        setCause(cause, "mlp router training canceled");
    return st;
}

/* ---- construction ---- */

static MsStatus checkLayer(const LayerData *L, RouterKind kind, char **cause) {
    if (!L || !L->w || L->T < 1 || !L->x || !L->h || L->w->d_model < 1 || L->w->d_ff < 1) {
        setCause(cause, "the %s router needs a layer with tokens, x and h", RouterKind_name(kind));
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

/* A router of a checked kind, layer and partition, the mlp not yet trained. */
static Router *routerBase(RouterKind kind, const LayerData *L, const int32_t *part, int E) {
    Router *this = xCalloc(1, sizeof *this);
    this->kind = kind;
    this->E = E;
    this->d_model = L->w->d_model;
    this->N = L->w->d_ff;
    if (kind == ROUTER_ORACLE) {
        this->part = xMallocArray((size_t)this->N, sizeof *this->part);
        memcpy(this->part, part, (size_t)this->N * sizeof *this->part);
        return this;
    }
    int d = this->d_model;
    this->centers = xMallocArray((size_t)E * d, sizeof(float));
    Router_expertCenters(FfnWeights_keys(L->w), this->N, d, part, E, this->centers);
    this->cnorm2 = xMallocArray((size_t)E, sizeof(double));
    for (int e = 0; e < E; e++) {
        double nn = rowNorm(this->centers + (size_t)e * d, d);
        this->cnorm2[e] = nn * nn;
    }
    return this;
}

MsStatus Router_new(Router **out, RouterKind kind, const LayerData *L, const int32_t *part,
                    int E, const RouterOptions *opt, const Cancel *cancel, char **cause) {
    *out = NULL;
    if ((unsigned)kind >= ROUTER_KINDS || kind == ROUTER_TOPK_NEURONS) {
        setCause(cause, "%s is not an expert router (choose oracle, similarity, mlp or sigmoid)",
                 RouterKind_name(kind));
        return MS_ERR_RANGE;
    }
    if (kind == ROUTER_MLP)
        return Router_newMlpSet(out, L, &part, 1, E, opt, cancel, cause);
    MsStatus st = checkLayer(L, kind, cause);
    if (st == MS_OK)
        st = Router_checkPartition(part, L->w->d_ff, E, cause);
    if (st == MS_OK)
        *out = routerBase(kind, L, part, E);
    return st;
}

MsStatus Router_newMlpSet(Router **out, const LayerData *L, const int32_t *const *parts,
                          int n_parts, int E, const RouterOptions *opt, const Cancel *cancel,
                          char **cause) {
    for (int p = 0; p < n_parts; p++)
        out[p] = NULL;
    RouterOptions defaults;
    RouterOptions_default(&defaults);
    const RouterOptions *o = opt ? opt : &defaults;
    if (n_parts < 1) {
        setCause(cause, "the mlp router set needs at least one partition (got %d)", n_parts);
        return MS_ERR_RANGE;
    }
    MsStatus st = checkLayer(L, ROUTER_MLP, cause);
    for (int p = 0; p < n_parts && st == MS_OK; p++) {
        st = Router_checkPartition(parts[p], L->w->d_ff, E, cause);
        if (st != MS_OK && n_parts > 1)
            prefixCause(cause, "partition %d: ", p);
    }
    if (st == MS_OK)
        st = checkOptions(o, cause);
    if (st != MS_OK)
        return st;
    for (int p = 0; p < n_parts; p++)
        out[p] = routerBase(ROUTER_MLP, L, parts[p], E);
    st = trainMlpSet(out, n_parts, L, parts, o, cancel, cause);
    for (int p = 0; p < n_parts && st != MS_OK; p++) {
        Router_delete(out[p]);
        out[p] = NULL;
    }
    return st;
}
