/*
moescope - core/Partition.c
Partition strategies (SPEC §3) and partition metrics.

DESIGN: every strategy ends with the same sizes, ceil(N/E) for the lower-index experts:
random shuffles a label list built with those sizes, param hands them to the exact
capacitated assignment as capacities, and coact hands them to METIS as target weights
and then enforces them with the rebalance. The rebalance keeps a table W[i][p] (summed
edge weight from neuron i to the members of expert p) and, for each neuron of an
over-full expert, its best under-full target; a move only raises W[.][q] of the target
q, so the cached bests stay valid except when q fills up, when the neurons that wanted
q are recomputed (at most E times).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Partition.h"

#include <cblas.h>
#include <math.h>
#include <metis.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/Assign.h"
#include "util/XUtils.h"

_Static_assert(IDXTYPEWIDTH == 32, "moescope passes int32_t arrays to METIS as idx_t");

#define PARAM_DEFAULT_ITER 30
/* Keeps METIS's idx_t sums of edge weights below 2^31: its cut computation sums the
   weights of every crossing edge in both directions before halving. */
#define METIS_WEIGHT_LIMIT (1L << 30)

static const char *const strategyNames[] = {
    [PARTITION_RANDOM] = "random",
    [PARTITION_PARAM] = "param",
    [PARTITION_COACT] = "coact",
    [PARTITION_FILE] = "file",
};

const char *Partition_strategyName(PartitionStrategy s) {
    if ((unsigned)s >= sizeof(strategyNames) / sizeof(strategyNames[0]))
        return "?";
    return strategyNames[s];
}

bool Partition_parseStrategy(const char *name, PartitionStrategy *out) {
    for (unsigned s = 0; s < sizeof(strategyNames) / sizeof(strategyNames[0]); s++) {
        if (strcmp(name, strategyNames[s]) == 0) {
            *out = (PartitionStrategy)s;
            return true;
        }
    }
    return false;
}

/* ---- sizes, validation, members ----------------------------------------------------- */

int Partition_expertSize(int N, int E, int e) {
    return N / E + (e < N % E ? 1 : 0);
}

void Partition_sizes(const int32_t *part, int N, int E, int *sizes) {
    memset(sizes, 0, (size_t)E * sizeof(int));
    for (int j = 0; j < N; j++)
        if (part[j] >= 0 && part[j] < E)
            sizes[part[j]]++;
}

bool Partition_isBalanced(const int32_t *part, int N, int E) {
    int *sizes = xMallocArray((size_t)E, sizeof(int));
    Partition_sizes(part, N, E, sizes);
    bool ok = true;
    long placed = 0;
    for (int e = 0; e < E; e++) {
        placed += sizes[e];
        ok = ok && sizes[e] == Partition_expertSize(N, E, e);
    }
    free(sizes);
    return ok && placed == N;
}

static MsStatus checkCounts(int N, int E, char **cause) {
    if (N < 1 || E < 1 || E > N) {
        setCause(cause, "a partition needs 1 <= E <= N, got N = %d neurons and E = %d experts",
                 N, E);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

MsStatus Partition_validate(const int32_t *part, int N, int E, char **cause) {
    MsStatus st = checkCounts(N, E, cause);
    if (st != MS_OK)
        return st;
    for (int j = 0; j < N; j++) {
        if (part[j] < 0 || part[j] >= E) {
            setCause(cause, "neuron %d is assigned to expert %d, outside 0..%d", j,
                     (int)part[j], E - 1);
            return MS_ERR_RANGE;
        }
    }
    return MS_OK;
}

void PartitionMembers_init(PartitionMembers *this, const int32_t *part, int N, int E) {
    this->E = E;
    this->N = N;
    this->offsets = xCalloc((size_t)E + 1, sizeof(int));
    this->index = xMallocArray((size_t)N, sizeof(int));
    for (int j = 0; j < N; j++)
        if (part[j] >= 0 && part[j] < E)
            this->offsets[part[j] + 1]++;
    for (int e = 0; e < E; e++)
        this->offsets[e + 1] += this->offsets[e];
    int *fill = xMallocArray((size_t)E, sizeof(int));
    memcpy(fill, this->offsets, (size_t)E * sizeof(int));
    /* counting sort: ascending j keeps each member list ascending */
    for (int j = 0; j < N; j++)
        if (part[j] >= 0 && part[j] < E)
            this->index[fill[part[j]]++] = j;
    free(fill);
}

void PartitionMembers_done(PartitionMembers *this) {
    free(this->offsets);
    free(this->index);
    memset(this, 0, sizeof(*this));
}

/* ---- adjusted Rand index -------------------------------------------------------------- */

static double choose2(double x) {
    return x * (x - 1.0) / 2.0;
}

double Partition_adjustedRand(const int32_t *a, int ka, const int32_t *b, int kb, int N) {
    long *nij = xCalloc((size_t)ka * (size_t)kb, sizeof(long));
    long *ai = xCalloc((size_t)ka, sizeof(long));
    long *bj = xCalloc((size_t)kb, sizeof(long));
    for (int t = 0; t < N; t++) {
        nij[(long)a[t] * kb + b[t]]++;
        ai[a[t]]++;
        bj[b[t]]++;
    }
    double index = 0.0, sumA = 0.0, sumB = 0.0;
    for (long c = 0; c < (long)ka * kb; c++)
        index += choose2((double)nij[c]);
    for (int i = 0; i < ka; i++)
        sumA += choose2((double)ai[i]);
    for (int j = 0; j < kb; j++)
        sumB += choose2((double)bj[j]);
    free(nij);
    free(ai);
    free(bj);
    double pairs = choose2((double)N);
    if (pairs == 0.0)
        return 1.0;
    double expected = sumA * sumB / pairs, best = 0.5 * (sumA + sumB);
    if (best == expected) /* both trivial: all in one group, or all singletons */
        return index == sumA && index == sumB ? 1.0 : 0.0;
    return (index - expected) / (best - expected);
}

/* ---- random --------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n), n >= 1, without modulo bias (rejects the short top range). */
static uint64_t boundedRand(uint64_t *state, uint64_t n) {
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t r = splitmix64(state);
        if (r >= threshold)
            return r % n;
    }
}

static double uniform01(uint64_t *state) {
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

void Partition_random(int32_t *part, int N, int E, uint64_t seed) {
    int j = 0;
    for (int e = 0; e < E; e++)
        for (int s = Partition_expertSize(N, E, e); s > 0; s--)
            part[j++] = e;
    uint64_t state = seed;
    for (int i = N - 1; i > 0; i--) {
        int k = (int)boundedRand(&state, (uint64_t)i + 1);
        int32_t tmp = part[i];
        part[i] = part[k];
        part[k] = tmp;
    }
}

/* ---- param: balanced spherical k-means ------------------------------------------------ */

typedef struct KMeans {
    int N, d, E;
    float *keys;   /* [N][d] normalized rows */
    float *sqnorm; /* [N] 1 or 0 */
    float *cent;   /* [E][d] unit centers */
    double *sum;   /* [E][d] center accumulator */
    float *sim;    /* [N][E] cosine (also k-means++ scratch) */
    float *d2;     /* [N] k-means++ squared distance to the nearest center */
    int *assign, *prev, *cap;
    double *price; /* [E] warm start for the assignment */
} KMeans;

static void kmeansDone(KMeans *k) {
    free(k->keys);
    free(k->sqnorm);
    free(k->cent);
    free(k->sum);
    free(k->sim);
    free(k->d2);
    free(k->assign);
    free(k->prev);
    free(k->cap);
    free(k->price);
}

static void normalizeRows(KMeans *k, const float *keys) {
    for (int i = 0; i < k->N; i++) {
        const float *src = keys + (long)i * k->d;
        float *dst = k->keys + (long)i * k->d;
        double ss = 0.0;
        for (int c = 0; c < k->d; c++)
            ss += (double)src[c] * src[c];
        float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int c = 0; c < k->d; c++)
            dst[c] = src[c] * inv;
        k->sqnorm[i] = ss > 0.0 ? 1.0f : 0.0f;
    }
}

/* Sets center e to point i and lowers every point's squared distance to it. */
static void seedCenter(KMeans *k, int e, int i) {
    float *c = k->cent + (long)e * k->d;
    memcpy(c, k->keys + (long)i * k->d, (size_t)k->d * sizeof(float));
    float *dot = k->sim; /* N floats of scratch */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, k->N, k->d, 1.0f, k->keys, k->d, c, 1, 0.0f, dot,
                1);
    float cn = k->sqnorm[i];
    for (int p = 0; p < k->N; p++) {
        float dist = k->sqnorm[p] + cn - 2.0f * dot[p];
        if (dist < 0.0f)
            dist = 0.0f;
        if (e == 0 || dist < k->d2[p])
            k->d2[p] = dist;
    }
}

/* k-means++: each next center is a point drawn with probability proportional to its
   squared distance to the nearest chosen center (uniform when all are 0). */
static MsStatus kmeansPlusPlus(KMeans *k, uint64_t *rng, const Cancel *cancel) {
    seedCenter(k, 0, (int)boundedRand(rng, (uint64_t)k->N));
    for (int e = 1; e < k->E; e++) {
        if ((e & 7) == 0 && Cancel_requested(cancel))
            return MS_ERR_CANCELED;
        double total = 0.0;
        for (int p = 0; p < k->N; p++)
            total += k->d2[p];
        int pick = k->N - 1;
        if (total > 0.0) {
            double r = uniform01(rng) * total, acc = 0.0;
            for (int p = 0; p < k->N; p++) {
                acc += k->d2[p];
                if (r < acc && k->d2[p] > 0.0f) {
                    pick = p;
                    break;
                }
            }
        } else {
            pick = (int)boundedRand(rng, (uint64_t)k->N);
        }
        seedCenter(k, e, pick);
        Cancel_progress(cancel, 0.2 * (double)(e + 1) / (double)k->E);
    }
    return MS_OK;
}

/* Each center becomes its members' normalized mean (kept when that mean is 0). */
static void updateCenters(KMeans *k) {
    memset(k->sum, 0, (size_t)k->E * (size_t)k->d * sizeof(double));
    for (int i = 0; i < k->N; i++) {
        double *s = k->sum + (long)k->assign[i] * k->d;
        const float *x = k->keys + (long)i * k->d;
        for (int c = 0; c < k->d; c++)
            s[c] += x[c];
    }
    for (int e = 0; e < k->E; e++) {
        const double *s = k->sum + (long)e * k->d;
        double ss = 0.0;
        for (int c = 0; c < k->d; c++)
            ss += s[c] * s[c];
        if (ss <= 0.0)
            continue;
        double inv = 1.0 / sqrt(ss);
        float *c = k->cent + (long)e * k->d;
        for (int j = 0; j < k->d; j++)
            c[j] = (float)(s[j] * inv);
    }
}

static MsStatus kmeansAlloc(KMeans *k, char **cause) {
    size_t N = (size_t)k->N, d = (size_t)k->d, E = (size_t)k->E;
    k->keys = tryMallocArray(N * d, sizeof(float));
    k->cent = tryMallocArray(E * d, sizeof(float));
    k->sum = tryMallocArray(E * d, sizeof(double));
    k->sim = tryMallocArray(N * E, sizeof(float));
    if (!k->keys || !k->cent || !k->sum || !k->sim) {
        setCause(cause, "out of memory for parameter clustering of %d rows x %d (%zu bytes)",
                 k->N, k->d, (N * d + E * d + N * E) * sizeof(float) + E * d * sizeof(double));
        return MS_ERR_NOMEM;
    }
    k->sqnorm = xMallocArray(N, sizeof(float));
    k->d2 = xMallocArray(N, sizeof(float));
    k->assign = xMallocArray(N, sizeof(int));
    k->prev = xMallocArray(N, sizeof(int));
    k->cap = xMallocArray(E, sizeof(int));
    k->price = xCalloc(E, sizeof(double));
    return MS_OK;
}

static MsStatus kmeansRun(KMeans *k, const float *keys, uint64_t seed, int max_iter,
                          int *iterations, const Cancel *cancel, char **cause) {
    normalizeRows(k, keys);
    for (int e = 0; e < k->E; e++)
        k->cap[e] = Partition_expertSize(k->N, k->E, e);
    uint64_t rng = seed;
    MsStatus st = kmeansPlusPlus(k, &rng, cancel);
    int it = 0;
    while (st == MS_OK && it < max_iter) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k->N, k->E, k->d, 1.0f, k->keys,
                    k->d, k->cent, k->d, 0.0f, k->sim, k->E);
        st = Assign_capacitated(k->sim, k->N, k->E, k->cap, k->price, k->assign, cancel, cause);
        if (st != MS_OK)
            break;
        it++;
        if (it > 1 && memcmp(k->assign, k->prev, (size_t)k->N * sizeof(int)) == 0)
            break;
        memcpy(k->prev, k->assign, (size_t)k->N * sizeof(int));
        updateCenters(k);
        Cancel_progress(cancel, 0.2 + 0.8 * (double)it / (double)max_iter);
        if (Cancel_requested(cancel))
            st = MS_ERR_CANCELED;
    }
    if (iterations)
        *iterations = it;
    return st;
}

MsStatus Partition_param(int32_t *part, const float *keys, int N, int d, int E, uint64_t seed,
                         int max_iter, int *iterations, const Cancel *cancel, char **cause) {
    MsStatus st = checkCounts(N, E, cause);
    if (st == MS_OK && d < 1) {
        setCause(cause, "parameter clustering needs key rows of length >= 1, got %d", d);
        st = MS_ERR_RANGE;
    }
    if (st != MS_OK)
        return st;
    KMeans k = {.N = N, .d = d, .E = E};
    st = kmeansAlloc(&k, cause);
    if (st == MS_OK)
        st = kmeansRun(&k, keys, seed, max_iter > 0 ? max_iter : PARAM_DEFAULT_ITER,
                       iterations, cancel, cause);
    if (st == MS_OK) {
        for (int i = 0; i < N; i++)
            part[i] = k.assign[i];
        Cancel_progress(cancel, 1.0);
    }
    kmeansDone(&k);
    return st;
}

/* ---- the co-activation graph ---------------------------------------------------------- */

/* Weight of the edge i -- j, 0 for no edge (SPEC §3). */
static inline int32_t excessWeight(const Coact *c, int i, int j) {
    if (c->T_train <= 0)
        return 0;
    double x = (double)c->C[(long)i * c->N + j] -
               (double)c->n[i] * (double)c->n[j] / (double)c->T_train;
    if (!(x > 0.0))
        return 0;
    double w = floor(x + 0.5);
    return w < 1.0 ? 1 : (int32_t)w;
}

void PartitionGraph_done(PartitionGraph *this) {
    free(this->xadj);
    free(this->adjncy);
    free(this->adjwgt);
    memset(this, 0, sizeof(*this));
}

static MsStatus graphAlloc(PartitionGraph *this, int N, long directed, char **cause) {
    memset(this, 0, sizeof(*this));
    this->N = N;
    this->n_edges = directed / 2;
    this->xadj = xCalloc((size_t)N + 1, sizeof(int32_t));
    this->adjncy = tryMallocArray((size_t)(directed ? directed : 1), sizeof(int32_t));
    this->adjwgt = tryMallocArray((size_t)(directed ? directed : 1), sizeof(int32_t));
    if (!this->adjncy || !this->adjwgt) {
        PartitionGraph_done(this);
        setCause(cause, "out of memory for the co-activation graph (%ld edges, %zu bytes)",
                 directed / 2, (size_t)directed * 2 * sizeof(int32_t));
        return MS_ERR_NOMEM;
    }
    return MS_OK;
}

MsStatus PartitionGraph_fromCoact(PartitionGraph *this, const Coact *c, const Cancel *cancel,
                                  char **cause) {
    int N = c->N;
    long *deg = xCalloc((size_t)N, sizeof(long));
    long directed = 0;
    for (int i = 0; i < N; i++) {
        if ((i & 63) == 0 && Cancel_requested(cancel)) {
            free(deg);
            return MS_ERR_CANCELED;
        }
        for (int j = i + 1; j < N; j++) {
            if (excessWeight(c, i, j) > 0) {
                deg[i]++;
                deg[j]++;
                directed += 2;
            }
        }
        Cancel_progress(cancel, 0.5 * (double)(i + 1) / N);
    }
    if (directed > INT32_MAX) {
        free(deg);
        setCause(cause, "the co-activation graph has %ld edges, more than METIS can take",
                 directed / 2);
        return MS_ERR_RANGE;
    }
    MsStatus st = graphAlloc(this, N, directed, cause);
    if (st != MS_OK) {
        free(deg);
        return st;
    }
    for (int i = 0; i < N; i++)
        this->xadj[i + 1] = this->xadj[i] + (int32_t)deg[i];
    /* Row i receives its lower neighbours while the outer loop is below i, then its upper
       ones in its own pass: ascending either way. deg becomes the fill cursor. */
    for (int i = 0; i < N; i++)
        deg[i] = this->xadj[i];
    for (int i = 0; i < N; i++) {
        for (int j = i + 1; j < N; j++) {
            int32_t w = excessWeight(c, i, j);
            if (w <= 0)
                continue;
            this->adjncy[deg[i]] = j;
            this->adjwgt[deg[i]++] = w;
            this->adjncy[deg[j]] = i;
            this->adjwgt[deg[j]++] = w;
        }
        Cancel_progress(cancel, 0.5 + 0.5 * (double)(i + 1) / N);
    }
    free(deg);
    return MS_OK;
}

void PartitionGraph_fromEdges(PartitionGraph *this, int N, long m, const int *u, const int *v,
                              const int *w) {
    memset(this, 0, sizeof(*this));
    this->N = N;
    this->n_edges = m;
    this->xadj = xCalloc((size_t)N + 1, sizeof(int32_t));
    this->adjncy = xMallocArray((size_t)(2 * m + 1), sizeof(int32_t));
    this->adjwgt = xMallocArray((size_t)(2 * m + 1), sizeof(int32_t));
    for (long e = 0; e < m; e++) {
        this->xadj[u[e] + 1]++;
        this->xadj[v[e] + 1]++;
    }
    for (int i = 0; i < N; i++)
        this->xadj[i + 1] += this->xadj[i];
    int32_t *fill = xMallocArray((size_t)N + 1, sizeof(int32_t));
    memcpy(fill, this->xadj, ((size_t)N + 1) * sizeof(int32_t));
    for (long e = 0; e < m; e++) {
        this->adjncy[fill[u[e]]] = v[e];
        this->adjwgt[fill[u[e]]++] = w[e];
        this->adjncy[fill[v[e]]] = u[e];
        this->adjwgt[fill[v[e]]++] = w[e];
    }
    free(fill);
}

/* ---- rebalance ------------------------------------------------------------------------- */

typedef struct Rebalance {
    int N, E;
    int32_t *part;
    const PartitionGraph *g;
    int64_t *W;      /* [N][E] edge weight from i to the members of p */
    int *size, *target;
    bool *over, *under;
    int *bestQ;      /* best under-full target of each neuron of an over-full expert */
    int64_t *bestW;  /* W[i][bestQ[i]] */
} Rebalance;

/* The under-full expert with the most weight from i (ties: lower index). */
static void findBest(Rebalance *r, int i) {
    const int64_t *Wi = r->W + (long)i * r->E;
    int best = -1;
    for (int q = 0; q < r->E; q++)
        if (r->under[q] && (best < 0 || Wi[q] > Wi[best]))
            best = q;
    r->bestQ[i] = best;
    r->bestW[i] = best >= 0 ? Wi[best] : 0;
}

/* The neuron of an over-full expert with the least net loss (ties: lower index); -1 when
   nothing is over-full. */
static int cheapestMove(const Rebalance *r) {
    int pick = -1;
    int64_t pickLoss = 0;
    for (int i = 0; i < r->N; i++) {
        if (!r->over[r->part[i]])
            continue;
        int64_t loss = r->W[(long)i * r->E + r->part[i]] - r->bestW[i];
        if (pick < 0 || loss < pickLoss) {
            pick = i;
            pickLoss = loss;
        }
    }
    return pick;
}

static void moveNeuron(Rebalance *r, int i) {
    int p = r->part[i], q = r->bestQ[i];
    const PartitionGraph *g = r->g;
    r->part[i] = q;
    for (int32_t a = g->xadj[i]; a < g->xadj[i + 1]; a++) {
        int j = g->adjncy[a];
        int64_t *Wj = r->W + (long)j * r->E;
        Wj[p] -= g->adjwgt[a];
        Wj[q] += g->adjwgt[a];
    }
    r->size[p]--;
    r->size[q]++;
    r->over[p] = r->size[p] > r->target[p];
    r->under[q] = r->size[q] < r->target[q];
    if (!r->under[q]) {
        /* q is full: whoever wanted it looks again (p is never a target: it was over-full) */
        for (int j = 0; j < r->N; j++)
            if (r->over[r->part[j]] && r->bestQ[j] == q)
                findBest(r, j);
        return;
    }
    /* Only W[.][q] rose: neighbours may now prefer q. */
    for (int32_t a = g->xadj[i]; a < g->xadj[i + 1]; a++) {
        int j = g->adjncy[a];
        if (!r->over[r->part[j]])
            continue;
        int64_t wq = r->W[(long)j * r->E + q];
        if (wq > r->bestW[j] || (wq == r->bestW[j] && q < r->bestQ[j])) {
            r->bestQ[j] = q;
            r->bestW[j] = wq;
        }
    }
}

static void rebalanceDone(Rebalance *r) {
    free(r->W);
    free(r->size);
    free(r->target);
    free(r->over);
    free(r->under);
    free(r->bestQ);
    free(r->bestW);
}

MsStatus Partition_rebalance(int32_t *part, const PartitionGraph *g, int E, long *moves,
                             char **cause) {
    int N = g->N;
    MsStatus st = Partition_validate(part, N, E, cause);
    if (st != MS_OK)
        return st;
    Rebalance r = {.N = N, .E = E, .part = part, .g = g};
    r.W = tryCallocArray((size_t)N * (size_t)E, sizeof(int64_t));
    if (!r.W) {
        setCause(cause, "out of memory for the rebalance table of %d neurons x %d experts "
                        "(%zu bytes)", N, E, (size_t)N * (size_t)E * sizeof(int64_t));
        return MS_ERR_NOMEM;
    }
    r.size = xCalloc((size_t)E, sizeof(int));
    r.target = xMallocArray((size_t)E, sizeof(int));
    r.over = xMallocArray((size_t)E, sizeof(bool));
    r.under = xMallocArray((size_t)E, sizeof(bool));
    r.bestQ = xMallocArray((size_t)N, sizeof(int));
    r.bestW = xMallocArray((size_t)N, sizeof(int64_t));
    for (int i = 0; i < N; i++) {
        r.size[part[i]]++;
        for (int32_t a = g->xadj[i]; a < g->xadj[i + 1]; a++)
            r.W[(long)i * E + part[g->adjncy[a]]] += g->adjwgt[a];
    }
    for (int e = 0; e < E; e++) {
        r.target[e] = Partition_expertSize(N, E, e);
        r.over[e] = r.size[e] > r.target[e];
        r.under[e] = r.size[e] < r.target[e];
    }
    for (int i = 0; i < N; i++)
        if (r.over[part[i]])
            findBest(&r, i);
    long count = 0;
    for (int i = cheapestMove(&r); i >= 0; i = cheapestMove(&r)) {
        moveNeuron(&r, i);
        count++;
    }
    rebalanceDone(&r);
    if (moves)
        *moves = count;
    return MS_OK;
}

/* ---- coact ---------------------------------------------------------------------------- */

/* Sets *out to METIS's copy of the weights, scaled down when their sum could overflow
   its idx_t (cuts and coarsened edges are sums), or to NULL when g's own weights fit.
   false when the copy cannot be allocated. */
static bool metisWeights(const PartitionGraph *g, int32_t **out) {
    long directed = 2 * g->n_edges;
    int64_t total = 0;
    for (long a = 0; a < directed; a++)
        total += g->adjwgt[a];
    *out = NULL;
    if (total <= METIS_WEIGHT_LIMIT)
        return true;
    int64_t s = (total + METIS_WEIGHT_LIMIT - 1) / METIS_WEIGHT_LIMIT;
    int32_t *w = tryMallocArray((size_t)directed, sizeof(int32_t));
    if (!w)
        return false;
    for (long a = 0; a < directed; a++) {
        int64_t v = (g->adjwgt[a] + s / 2) / s;
        w[a] = v < 1 ? 1 : (int32_t)v;
    }
    *out = w;
    return true;
}

/* METIS k-way into E parts; false when METIS fails (the caller falls back). */
static bool metisKway(int32_t *part, const PartitionGraph *g, int E, uint64_t seed) {
    idx_t nvtxs = g->N, ncon = 1, nparts = E, objval = 0;
    idx_t options[METIS_NOPTIONS];
    METIS_SetDefaultOptions(options);
    options[METIS_OPTION_SEED] = (idx_t)(seed % 2147483647u);
    options[METIS_OPTION_OBJTYPE] = METIS_OBJTYPE_CUT;
    options[METIS_OPTION_NUMBERING] = 0;
    real_t *tpwgts = xMallocArray((size_t)E, sizeof(real_t));
    double acc = 0.0;
    for (int e = 0; e < E - 1; e++) {
        tpwgts[e] = (real_t)((double)Partition_expertSize(g->N, E, e) / g->N);
        acc += tpwgts[e];
    }
    tpwgts[E - 1] = (real_t)(1.0 - acc);
    int32_t *scaled;
    if (!metisWeights(g, &scaled)) {
        free(tpwgts);
        return false;
    }
    /* METIS keeps its random generator in GKlib's global state: two calls at once would
       interleave their streams and differ from run to run. One call at a time. */
    static pthread_mutex_t metisLock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&metisLock);
    int rc = METIS_PartGraphKway(&nvtxs, &ncon, g->xadj, g->adjncy, NULL, NULL,
                                 scaled ? scaled : g->adjwgt, &nparts, tpwgts, NULL, options,
                                 &objval, part);
    pthread_mutex_unlock(&metisLock);
    free(scaled);
    free(tpwgts);
    if (rc != METIS_OK)
        return false;
    for (int i = 0; i < g->N; i++)
        if (part[i] < 0 || part[i] >= E)
            return false;
    return true;
}

MsStatus Partition_coact(int32_t *part, const PartitionGraph *g, int E, uint64_t seed,
                         int *fallback_random, const Cancel *cancel, char **cause) {
    int N = g->N;
    MsStatus st = checkCounts(N, E, cause);
    if (st != MS_OK)
        return st;
    *fallback_random = 0;
    if (g->n_edges == 0) {
        *fallback_random = 1;
        Partition_random(part, N, E, seed);
        return MS_OK;
    }
    /* METIS mishandles nparts = 1; a single expert is all zeros anyway. */
    if (E == 1 || Cancel_requested(cancel)) {
        memset(part, 0, (size_t)N * sizeof(int32_t));
        return E == 1 ? MS_OK : MS_ERR_CANCELED;
    }
    if (!metisKway(part, g, E, seed))
        memset(part, 0, (size_t)N * sizeof(int32_t));
    Cancel_progress(cancel, 0.8);
    if (Cancel_requested(cancel))
        return MS_ERR_CANCELED;
    st = Partition_rebalance(part, g, E, NULL, cause);
    if (st == MS_OK)
        Cancel_progress(cancel, 1.0);
    return st;
}
