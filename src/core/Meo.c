/*
moescope - core/Meo.c
Sequence-level MEO metrics (SPEC §5).

DESIGN: the work is staged by what it depends on. Meo_open: the split's sequences, and the
layer's w_out columns as rows and L2-normalized key rows (neuron order). The first
Meo_metrics after Meo_open makes the dense y = w_out h (no b_out) with its row norms and
h's nonzero counts on the Meo's threads, from h's nonzeros in neuron order (or a matrix
product with w_out for dense chunks); it is kept until Meo_delete. The sequences' mean x
is made once too. Meo_setPartition: the token oracle scores s[t,e] and their totals, the
experts' neuron lists, and empty caches of aligned slot maps, of pre-activation blocks,
of per-sequence lists of h's nonzeros and of router-independent sums. Meo_setRouter: each
sequence's router scores (all the mean rows in one Router_score call, or the mean of s
for the oracle), softmax logits (Router_logits) and expert order (TopK_order, ties to the
lower index). The batch so pays for y once per layer and for the alignments, the lists
and the pre-activations once per partition (it releases their memory in between), not
once per router or k.

Sharing between routers and k: a sequence's sum-gate merged errors (position and aligned
slots) depend only on its ordered selection, and so does the unmerged selection's error
when every gate is 1 (all routers but sigmoid). Each sequence keeps them per (k,
selection) seen since Meo_setPartition (SelCache, a few entries: the batch asks 4 routers
x 3 k), so a router that selects what an earlier one did reuses the bits instead of
recomputing them. k = 1 makes one merged error for all four variants (softmax gate 1,
aligned map the identity). The unmerged selection's product is a running sum per token
and column over the selected experts in rank order; its sums are kept per sequence (sacc)
with the experts and gates they hold, so the same router at a larger k only adds the new
experts (k = 1, 2, 4 cost 4 experts' products, not 7).

The merged expert's input side is linear in the merged weights: slot i's pre-activation on
token t is sum_q g_q z[t, map_q(i)] with z = x w_in^T + b_in (and zg = x w_gate^T for
gated layers), so no merged w_in is made. z is made block by block, one contiguous
[tokens][G] block per (sequence, expert) a pass's selections first need (only those are
allocated): before the pass, expert by expert (in parallel), the expert's rows laid out
once in Vec panels and multiplied with each such sequence's rows of x in place
(Vec_gemmGatherPanels, whose elements are the same bits wherever they sit). A (router, k,
gates, slots) variant so costs k G additions per token on the input side (mergedPre: 8
slots at a time, identity maps loaded directly, ReLU fused). The output side merges only
the w_out rows a sequence's nonzero hidden values multiply, a whole row at a time, into a
tiled copy (Mat) that the product then reads from L1. Products with w_out (y, the
unmerged selection, the merged expert) take lists of each token's nonzeros (Lists: per
token one segment, or one per selected expert from the sequence's lists of h grouped by
expert) and multiply them 64 columns at a time in AVX registers (sparseRun: the same
running sums as one axpy per nonzero), starting from zero or kept sums and storing the
sums or, for the errors, subtracting them from y in registers and summing the squares.
Blocks denser than SPARSE_MAX run a matrix product and an error pass instead. An aligned
map comes from one assignment per expert pair (Assign_maxWeight, Jonker-Volgenant), which
serves both directions. Slot maps hold places among an expert's neurons.

Meo_metrics first makes the aligned maps the selections need (in parallel) and their
pre-activation blocks, then evaluates the sequences in parallel, one worker's scratch each:
the first k experts of the order are the selection; tokens are processed in chunks of
CHUNK rows so scratch stays small for long sequences. Each sequence keeps its own sums
(and its own caches), added in sequence order afterwards, and the products run through
Vec or the kernels here (not OpenBLAS), so the numbers do not depend on the thread count.
A cached or kept sum is the bits a recomputation would give (the same float operations on
the same inputs), so sharing does not change them either. Merged values are summed over
the selection in rank order and an assignment's orientation follows neuron indices, so
relabelling experts does not change a single float operation.

Memory: y, w_out's rows and the keys (rows x d_model and 2 d_ff x d_model floats) live
until Meo_delete; the partition's z blocks (tokens x G floats, twice when gated, for each
(sequence, expert) pair a selection used: about a quarter of rows x d_ff at E = 32), the
lists of h's nonzeros (8 bytes each) and sacc (rows x d_model floats) are freed by
Meo_releasePartition; each worker's scratch holds a list of about SPARSE_Y x CHUNK x d_ff
nonzeros (1.6 MB at d_ff 3072, grown for wide selections) and one expert's panels.

Cost (SPEC §5): L in the merge and router terms is the mean length of the sequences
actually used (split tokens / sequences), so a short last block raises the cost a little.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Meo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/Assign.h"
#include "core/Cost.h"
#include "core/Parallel.h"
#include "core/TopK.h"
#include "core/Vec.h"
#include "util/XUtils.h"

#define CHUNK 256 /* token rows per block of work */

/* Below this fraction of nonzero hidden values, a chunk's product with w_out is summed
   over its nonzeros (sparseRun) instead of by a matrix product: the
   register-tiled sums run at about the matrix product's speed per operation and need no
   pass over y afterwards (measured on bench_meo: 0.5 was faster than 0.25, mostly on
   clustered partitions whose selected experts hold most of a sequence's nonzeros). */
#define SPARSE_MAX 0.5

/* y's threshold: y is made once per Meo, and its lists of SPARSE_Y x CHUNK x d_ff
   nonzeros set the scratch's usual size. */
#define SPARSE_Y 0.25

/* Merged experts evaluated together: the sum and softmax gates of one slot kind merge the
   same w_out rows, so one pass over those rows merges both. */
#define MERGED 2

#define TILE 64 /* output columns held in registers by the sparse products (8 AVX registers) */

/* A matrix of D columns stored in panels of TILE columns: element (i, c) is at
   p[(c / TILE) * panel + i * ld + c % TILE]. Row-major rows D apart are panel = TILE,
   ld = D. Tiled storage of R rows (tiledMat: each panel's rows contiguous, TILE floats
   each, the last panel padded) holds the merged w_out rows: the merged product reads a
   tile of all of them for every token, one contiguous block that stays in L1, where rows
   3 KB apart (d_model 768) crowd a few L1 sets and go to L2. */
typedef struct Mat {
    const float *p;
    long panel, ld;
} Mat;

static inline Mat rowMajorMat(const float *p, int D) {
    return (Mat){p, TILE, D};
}

static inline Mat tiledMat(const float *p, long R) {
    return (Mat){p, TILE * R, TILE};
}

/* Columns rounded up to whole panels: a tiled matrix of R rows holds R * paddedCols(D). */
static inline long paddedCols(int D) {
    return (D + TILE - 1) / TILE * TILE;
}

static inline const float *matAt(Mat m, long i, int c) {
    return m.p + (c / TILE) * m.panel + i * m.ld + c % TILE;
}

/* Lists of nonzeros for the sparse products: row r's entries are (idx[n], val[n]) for n in
   its segments [bound[r * stride + 2 s], bound[r * stride + 2 s + 1]), s < segs, in that
   order, each value times gate[s] (gate NULL: as is). A SparseRows' rows are one segment
   each (bound = start, stride 1); the unmerged selection's rows have a segment per
   selected expert from the sequence's lists (SeqNz). */
typedef struct Lists {
    int rows, segs, stride;
    const int *bound, *idx; /* idx: rows of the matrix multiplied */
    const float *val, *gate;
} Lists;

/* What a sparse product does with row r's sums: they start from the sink's row (load) or
   0, are written back to it (store), the row being row out[r] (or r when out is NULL) of
   acc (laid out as a Mat: panel, ld), and, when y is set, their squared differences from
   y's row r (rows D apart) are added up in sq[r][0..LANES) (lane = column mod LANES,
   columns in order). The order the rows and tiles are visited in (by_row) changes no
   element's arithmetic. */
typedef struct Sink {
    float *acc;
    long panel, ld;
    const int *out;
    bool load, store;
    bool by_row; /* whole rows at a time (else tile by tile over all rows) */
    const float *y;
    float *sq;
} Sink;

static inline float *sinkAt(const Sink *k, int r, int c) {
    long i = k->out ? k->out[r] : r;
    return k->acc ? k->acc + (c / TILE) * k->panel + i * k->ld + c % TILE : NULL;
}

/* Rows of a sparse matrix built in scratch: row r's nonzeros are (idx[n], val[n]) for n in
   [start[r], start[r + 1]); out[r] (or r when out is NULL) is where its product goes. */
typedef struct SparseRows {
    int rows;
    int *start, *idx, *out; /* [rows + 1], [cap], [rows] */
    float *val;             /* [cap] */
    long cap;               /* grown by reserve() (mix: fixed) */
} SparseRows;

static inline Lists listsOf(const SparseRows *S) {
    return (Lists){.rows = S->rows, .segs = 1, .stride = 1, .bound = S->start, .idx = S->idx,
                   .val = S->val};
}

/* One worker's scratch for Meo_metrics. */
typedef struct Scratch {
    float *wrows;                  /* [G][D] an expert's rows gathered for a matrix product */
    float *panels;                 /* the same as Vec panels (Vec_panelsSize(D, G)) */
    const float **xrows;           /* [CHUNK] rows of x */
    const float **arows;           /* [G] key rows of an expert */
    float *m_outT;                 /* [MERGED][G][D] merged experts' w_out rows in use, tiled
                                      (Mat of MERGED * G rows, variant v's from v * G) */
    unsigned char *used[MERGED];   /* [G] slots with a nonzero in the chunk */
    float *hid[MERGED], *up;       /* [CHUNK][G] merged hidden values, up-projection */
    float *yhat, *part;            /* [CHUNK][D] x2 (part: at least 8) */
    int *nzj, *cursor;             /* [N + 8] a token's nonzeros, [E] where each expert's go */
    int *bounds;                   /* [bounds_cap] the selection's segments (selectedLists) */
    long bounds_cap;
    SparseRows nz[MERGED];         /* the nonzeros multiplied by w_out (y: nz[0]) */
    SparseRows mix;                /* the merge: slot rows as sums of w_out's rows */
} Scratch;

/* A sequence's router-independent sums for one ordered selection at one k: the sum-gate
   merged errors (position and aligned slots) and the unmerged selection's error with
   gates 1, which are the same bits for every router that selects the same experts in
   the same order. */
typedef struct SelEntry {
    int k;
    int *sel;                  /* [k] the selection, rank order */
    double merged[MEO_SLOTS];  /* sum gates */
    double seqsel;             /* gates 1, when has_seqsel */
    bool has_seqsel;
} SelEntry;

/* A sequence's entries, one per distinct (k, selection) seen since Meo_setPartition. */
typedef struct SelCache {
    int n, cap;
    SelEntry *e;
} SelCache;

/* One sequence's sums (added in sequence order after the parallel pass). */
typedef struct SeqSums {
    double recall, seqsel, merged[MEO_GATES][MEO_SLOTS];
    long recall_n, err_n;
} SeqSums;

struct Meo {
    const LayerData *L;
    const FfnWeights *w;
    int D, N;
    long row0, rows;
    long n_seq;
    long *seq;            /* [n_seq + 1] sequence starts, relative to row0 */
    float *xmean;         /* [n_seq][D] the sequences' mean x (made on first use), or NULL */
    float *y;             /* [rows][D] dense output, no b_out (filled on first use) */
    double *y_norm;       /* [rows] */
    int *h_count;         /* [rows] nonzeros of each row of h (made with y) */
    float *w_outT;        /* [N][D] w_out columns as rows, neuron order */
    float *khat;          /* [N][D] L2-normalized key rows, neuron order */
    bool have_y;
    int threads;
    /* the pre-activations, a block per (sequence, expert) a selection uses, made on first
       use: [L][G] of z = x w_in^T + b_in for the sequence's L tokens and the expert's G
       neurons (in their order), then [L][G] of zg = x w_gate^T for gated layers */
    float **zblk;         /* [n_seq][E], NULL: not made */
    /* h's nonzeros grouped by expert, per sequence (SeqNz: ensureLists) */
    long *nz_base;        /* [n_seq] where sequence q's lists start in nz_idx, -1: none */
    int *nz_start;        /* [rows][E + 1] token t's list of expert e: [st[e], st[e + 1]) */
    int *nz_idx;          /* neurons */
    float *nz_val;
    unsigned char *nz_made; /* [n_seq] */
    /* the unmerged selection's running sums, kept for a larger k (selectedError) */
    float *sacc;          /* [rows][D] */
    int *kept_k;          /* [n_seq] experts the sums hold */
    int *kept_sel;        /* [n_seq][E] those experts, rank order */
    float *kept_gate;     /* [n_seq][E] and their gates */
    SelCache *cache;      /* [n_seq] router-independent sums, shared between routers */
    /* partition (Meo_setPartition) */
    int E;
    float *s;             /* [rows][E] token oracle scores */
    double *s_total;      /* [rows] */
    int max_g;
    int *offset;          /* [E + 1] */
    int *neuron;          /* [N] neurons grouped by expert, ascending within each */
    int *expert_of;       /* [N] expert of each neuron */
    int **align;          /* [E * E] cached aligned maps (slots or -1), or NULL */
    int *pos_map;         /* [E][max_g] position maps (slots or -1) */
    Scratch *scratch;     /* [threads] */
    int n_scratch;
    /* router (Meo_setRouter) */
    const Router *router; /* NULL: the oracle */
    RouterKind kind;
    float *score;         /* [n_seq][E] the sequence's router scores */
    float *logit;         /* [n_seq][E] softmax inputs */
    int *order;           /* [n_seq][E] experts, best first */
};

const char *MeoGates_name(MeoGates gates) {
    return gates == MEO_GATES_SOFTMAX ? "softmax" : "sum";
}

const char *MeoSlots_name(MeoSlots slots) {
    return slots == MEO_SLOTS_ALIGNED ? "aligned" : "position";
}

static inline int expertSize(const Meo *this, int e) {
    return this->offset[e + 1] - this->offset[e];
}

/* The split's sequences: cut at every seq_offsets entry inside it, else every block_len. */
static void makeSequences(Meo *this, long block_len) {
    const LayerData *L = this->L;
    long row1 = this->row0 + this->rows;
    long cap = 2, n = 0;
    if (L->seq_offsets && L->n_seq > 0)
        cap += L->n_seq;
    else
        cap += this->rows / block_len;
    this->seq = xMallocArray((size_t)cap, sizeof(long));
    this->seq[n++] = 0;
    if (L->seq_offsets && L->n_seq > 0) {
        for (long i = 0; i <= L->n_seq; i++) {
            long b = (long)L->seq_offsets[i];
            if (b > this->row0 + this->seq[n - 1] && b < row1)
                this->seq[n++] = b - this->row0;
        }
    } else {
        for (long b = block_len; b < this->rows; b += block_len)
            this->seq[n++] = b;
    }
    this->seq[n] = this->rows;
    this->n_seq = n;
}

/* Neuron lists grouped by expert. */
static void gatherExperts(Meo *this, const int32_t *part) {
    int E = this->E, N = this->N;
    this->offset = xCalloc((size_t)E + 1, sizeof(int));
    for (int j = 0; j < N; j++)
        this->offset[part[j] + 1]++;
    this->max_g = 0;
    for (int e = 0; e < E; e++) {
        if (this->offset[e + 1] > this->max_g)
            this->max_g = this->offset[e + 1];
        this->offset[e + 1] += this->offset[e];
    }
    int *next = xMallocArray((size_t)E, sizeof(int));
    memcpy(next, this->offset, (size_t)E * sizeof(int));
    this->neuron = xMallocArray((size_t)N, sizeof(int));
    this->expert_of = xMallocArray((size_t)N, sizeof(int));
    for (int j = 0; j < N; j++) {
        this->neuron[next[part[j]]++] = j;
        this->expert_of[j] = part[j];
    }
    free(next);
}

/* The layer's w_out columns as rows and its L2-normalized key rows, in neuron order (they
   do not depend on the partition). w_out is read 32 of its rows at a time: each pass
   reads 32 rows in order and writes 128 contiguous bytes per column, where a column at a
   time would touch a cache line per float. */
static void layerRows(Meo *this) {
    int D = this->D, N = this->N;
    const FfnWeights *w = this->w;
    for (int d0 = 0; d0 < D; d0 += 32) {
        int nd = D - d0 < 32 ? D - d0 : 32;
        for (int j = 0; j < N; j++) {
            float *col = this->w_outT + (size_t)j * D + d0;
            const float *src = w->w_out + (size_t)d0 * N + j;
            for (int r = 0; r < nd; r++)
                col[r] = src[(size_t)r * N];
        }
    }
    const float *keys = FfnWeights_keys(w);
    for (int j = 0; j < N; j++) {
        const float *kr = keys + (size_t)j * D;
        float *kh = this->khat + (size_t)j * D;
        double ss = 0.0;
        for (int r = 0; r < D; r++)
            ss += (double)kr[r] * kr[r];
        float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int r = 0; r < D; r++)
            kh[r] = kr[r] * inv;
    }
}

/* The sequences' mean rows of x (what a router scores), made on first use and kept: they
   depend on neither the partition nor the router. */
static const float *meanRows(Meo *this) {
    if (this->xmean)
        return this->xmean;
    int D = this->D;
    double *acc = xMallocArray((size_t)D, sizeof(double));
    this->xmean = xMallocArray((size_t)this->n_seq * D, sizeof(float));
    for (long q = 0; q < this->n_seq; q++) {
        long t0 = this->seq[q], t1 = this->seq[q + 1];
        memset(acc, 0, (size_t)D * sizeof(double));
        for (long t = t0; t < t1; t++) {
            const float *xt = this->L->x + (size_t)(this->row0 + t) * D;
            for (int r = 0; r < D; r++)
                acc[r] += xt[r];
        }
        for (int r = 0; r < D; r++)
            this->xmean[q * D + r] = (float)(acc[r] / (double)(t1 - t0));
    }
    free(acc);
    return this->xmean;
}

/* Each sequence's scores, logits and expert order. A router scores all the mean rows in
   one call each for scores and logits (its products give every row the same bits whatever
   rows come with it, and one call lays its weights out once, not once per sequence); the
   oracle's score is the mean of s over the sequence. */
static void scoreSequences(Meo *this) {
    int E = this->E;
    long n = this->n_seq;
    if (this->router) {
        const float *xm = meanRows(this);
        Router_score(this->router, xm, NULL, n, this->score);
        Router_logits(this->router, xm, NULL, n, this->logit);
    } else {
        double *acc = xMallocArray((size_t)E, sizeof(double));
        for (long q = 0; q < n; q++) {
            long t0 = this->seq[q], t1 = this->seq[q + 1];
            memset(acc, 0, (size_t)E * sizeof(double));
            for (long t = t0; t < t1; t++)
                for (int e = 0; e < E; e++)
                    acc[e] += this->s[t * E + e];
            for (int e = 0; e < E; e++)
                this->score[q * E + e] = this->logit[q * E + e] =
                    (float)(acc[e] / (double)(t1 - t0));
        }
        free(acc);
    }
    for (long q = 0; q < n; q++)
        TopK_order(this->score + q * E, E, this->order + q * E);
}

/* One lane per column mod 8: the error kernels' squared differences, summed in column
   order within each lane. */
#define LANES 8

/* The plain sparse product over one tile of w <= TILE columns from c0: row r's sums start
   from acc (a row of its sink, or zeros) and run over its segments' entries in order. */
static void rowTilePlain(const Lists *S, int r, Mat M, int c0, int w, float *restrict acc) {
    const float *Mc = matAt(M, 0, c0);
    for (int s = 0; s < S->segs; s++) {
        const int *b = S->bound + (size_t)r * S->stride + 2 * s;
        float g = S->gate ? S->gate[s] : 1.0f;
        for (int n = b[0]; n < b[1]; n++) {
            const float *m = Mc + S->idx[n] * M.ld;
            float v = g * S->val[n];
            for (int j = 0; j < w; j++)
                acc[j] += v * m[j];
        }
    }
}

/* The sparse product S M (M has D columns) with what the sink asks for, plain C. Each
   element is one running sum over its row's entries in list order (as successive Vec_axpy
   calls on the starting row would make it), held in registers over a tile of TILE
   columns, so a sink row is read and written once per tile and M's tile rows come from
   cache for all the rows. */
static void sparseRunPlain(const Lists *S, Mat M, int D, const Sink *k) {
    if (k->y)
        memset(k->sq, 0, (size_t)S->rows * LANES * sizeof(float));
    for (int c0 = 0; c0 < D; c0 += TILE) {
        int w = D - c0 < TILE ? D - c0 : TILE;
        for (int r = 0; r < S->rows; r++) {
            float acc[TILE] = {0};
            float *a = sinkAt(k, r, c0);
            if (k->load)
                memcpy(acc, a, (size_t)w * sizeof(float));
            rowTilePlain(S, r, M, c0, w, acc);
            if (k->store)
                memcpy(a, acc, (size_t)w * sizeof(float));
            if (!k->y)
                continue;
            const float *yr = k->y + (size_t)r * D + c0;
            for (int j = 0; j < w; j++) {
                float d = yr[j] - acc[j];
                k->sq[r * LANES + (c0 + j) % LANES] += d * d;
            }
        }
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define AVX2_FMA __attribute__((target("avx2,fma")))
#define INLINE_AVX2 static inline __attribute__((always_inline, target("avx2,fma")))

/* Row r's sums over one tile of columns from c0, as running fused sums in list order: 64
   columns in 8 registers, 8 columns in one, or a single column, each from a starting
   value. The kernel below shares them and differs only in what it does with the sums. */
typedef struct Tile64 {
    __m256 a0, a1, a2, a3, a4, a5, a6, a7;
} Tile64;

#define FMA8(i) t.a##i = _mm256_fmadd_ps(v, _mm256_loadu_ps(m + 8 * (i)), t.a##i)

/* Mc: row 0 at the tile's first column; row i is ld floats further on per row. */
INLINE_AVX2 Tile64 rowTile64(const Lists *S, int r, const float *restrict Mc, long ld, Tile64 t) {
    for (int s = 0; s < S->segs; s++) {
        const int *b = S->bound + (size_t)r * S->stride + 2 * s;
        float g = S->gate ? S->gate[s] : 1.0f;
        for (int n = b[0]; n < b[1]; n++) {
            const float *m = Mc + S->idx[n] * ld;
            __m256 v = _mm256_set1_ps(g * S->val[n]);
            FMA8(0);
            FMA8(1);
            FMA8(2);
            FMA8(3);
            FMA8(4);
            FMA8(5);
            FMA8(6);
            FMA8(7);
        }
    }
    return t;
}

INLINE_AVX2 __m256 rowTile8(const Lists *S, int r, const float *restrict Mc, long ld, __m256 a) {
    for (int s = 0; s < S->segs; s++) {
        const int *b = S->bound + (size_t)r * S->stride + 2 * s;
        float g = S->gate ? S->gate[s] : 1.0f;
        for (int n = b[0]; n < b[1]; n++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(g * S->val[n]),
                                _mm256_loadu_ps(Mc + S->idx[n] * ld), a);
    }
    return a;
}

INLINE_AVX2 float rowColumn(const Lists *S, int r, const float *restrict Mc, long ld, float a) {
    for (int s = 0; s < S->segs; s++) {
        const int *b = S->bound + (size_t)r * S->stride + 2 * s;
        float g = S->gate ? S->gate[s] : 1.0f;
        for (int n = b[0]; n < b[1]; n++)
            a = __builtin_fmaf(g * S->val[n], Mc[S->idx[n] * ld], a);
    }
    return a;
}

/* e + (y - a)^2, lane by lane */
INLINE_AVX2 __m256 addSquaredDiff(__m256 e, const float *y, __m256 a) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y), a);
    return _mm256_fmadd_ps(d, d, e);
}

INLINE_AVX2 Tile64 loadTile64(const float *a) {
    return (Tile64){_mm256_loadu_ps(a),      _mm256_loadu_ps(a + 8),  _mm256_loadu_ps(a + 16),
                    _mm256_loadu_ps(a + 24), _mm256_loadu_ps(a + 32), _mm256_loadu_ps(a + 40),
                    _mm256_loadu_ps(a + 48), _mm256_loadu_ps(a + 56)};
}

INLINE_AVX2 void storeTile64(float *a, Tile64 t) {
    _mm256_storeu_ps(a, t.a0);
    _mm256_storeu_ps(a + 8, t.a1);
    _mm256_storeu_ps(a + 16, t.a2);
    _mm256_storeu_ps(a + 24, t.a3);
    _mm256_storeu_ps(a + 32, t.a4);
    _mm256_storeu_ps(a + 40, t.a5);
    _mm256_storeu_ps(a + 48, t.a6);
    _mm256_storeu_ps(a + 56, t.a7);
}

INLINE_AVX2 void errorTile64(const float *y, float *sq, Tile64 t) {
    __m256 e = _mm256_loadu_ps(sq);
    e = addSquaredDiff(e, y, t.a0);
    e = addSquaredDiff(e, y + 8, t.a1);
    e = addSquaredDiff(e, y + 16, t.a2);
    e = addSquaredDiff(e, y + 24, t.a3);
    e = addSquaredDiff(e, y + 32, t.a4);
    e = addSquaredDiff(e, y + 40, t.a5);
    e = addSquaredDiff(e, y + 48, t.a6);
    e = addSquaredDiff(e, y + 56, t.a7);
    _mm256_storeu_ps(sq, e);
}

/* Row r's sums over the columns [c0, c0 + 64), [c0, c0 + 8) or c0 with what the sink asks
   for. */
INLINE_AVX2 void step64(const Lists *S, int r, Mat M, int D, int c0, const Sink *k) {
    float *a = sinkAt(k, r, c0);
    Tile64 t = k->load ? loadTile64(a) : (Tile64){0};
    t = rowTile64(S, r, matAt(M, 0, c0), M.ld, t);
    if (k->store)
        storeTile64(a, t);
    if (k->y)
        errorTile64(k->y + (size_t)r * D + c0, k->sq + LANES * r, t);
}

INLINE_AVX2 void step8(const Lists *S, int r, Mat M, int D, int c0, const Sink *k) {
    float *a = sinkAt(k, r, c0);
    __m256 t = rowTile8(S, r, matAt(M, 0, c0), M.ld,
                        k->load ? _mm256_loadu_ps(a) : _mm256_setzero_ps());
    if (k->store)
        _mm256_storeu_ps(a, t);
    if (k->y)
        _mm256_storeu_ps(k->sq + LANES * r, addSquaredDiff(_mm256_loadu_ps(k->sq + LANES * r),
                                                           k->y + (size_t)r * D + c0, t));
}

INLINE_AVX2 void step1(const Lists *S, int r, Mat M, int D, int c, const Sink *k) {
    float *a = sinkAt(k, r, c);
    float t = rowColumn(S, r, matAt(M, 0, c), M.ld, k->load ? *a : 0.0f);
    if (k->store)
        *a = t;
    if (k->y) {
        float d = k->y[(size_t)r * D + c] - t;
        float *e = &k->sq[r * LANES + c % LANES];
        *e = __builtin_fmaf(d, d, *e);
    }
}

/* Row r's sums over all D columns: 64-column tiles, then 8-column tiles, then single
   columns (fmaf: the same arithmetic in every column). */
INLINE_AVX2 void stepRow(const Lists *S, int r, Mat M, int D, const Sink *k) {
    int c0 = 0;
    for (; c0 + TILE <= D; c0 += TILE)
        step64(S, r, M, D, c0, k);
    for (; c0 + 8 <= D; c0 += 8)
        step8(S, r, M, D, c0, k);
    for (; c0 < D; c0++)
        step1(S, r, M, D, c0, k);
}

/* sparseRunPlain with fused multiply-adds, tile by tile over all the rows (M's tile rows
   stay in cache for every row), or row by row when the sink says so (a merge: a few
   entries per row, whose source rows then stream through whole). Each element's
   arithmetic is the same either way. */
AVX2_FMA static void sparseRunAvx2(const Lists *S, Mat M, int D, const Sink *k) {
    if (k->y)
        memset(k->sq, 0, (size_t)S->rows * LANES * sizeof(float));
    if (k->by_row) {
        for (int r = 0; r < S->rows; r++)
            stepRow(S, r, M, D, k);
        return;
    }
    int c0 = 0;
    for (; c0 + TILE <= D; c0 += TILE)
        for (int r = 0; r < S->rows; r++)
            step64(S, r, M, D, c0, k);
    for (; c0 + 8 <= D; c0 += 8)
        for (int r = 0; r < S->rows; r++)
            step8(S, r, M, D, c0, k);
    for (; c0 < D; c0++)
        for (int r = 0; r < S->rows; r++)
            step1(S, r, M, D, c0, k);
}
#endif

static void sparseRun(const Lists *S, Mat M, int D, const Sink *k) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        sparseRunAvx2(S, M, D, k);
        return;
    }
#endif
    sparseRunPlain(S, M, D, k);
}

/* The most nonzeros a chunk of c rows of cols columns may have to be multiplied as
   SparseRows (SPARSE_MAX of it); denser chunks run a matrix product. */
static long sparseLimit(int c, long cols, double frac) {
    return (long)(frac * (double)c * (double)cols);
}

/* Room for need entries in S's lists (the gathers write a row past their limit before
   they give up). */
static void reserve(SparseRows *S, long need) {
    if (need <= S->cap)
        return;
    S->idx = xReallocArray(S->idx, (size_t)need, sizeof(int));
    S->val = xReallocArray(S->val, (size_t)need, sizeof(float));
    S->cap = need;
}

/* h's nonzeros of c rows of N columns as SparseRows, in neuron index order; false when the
   chunk is too dense. */
static bool gatherH(SparseRows *S, const float *h, int c, int N) {
    long limit = sparseLimit(c, N, SPARSE_Y);
    reserve(S, limit + N + 1);
    int n = 0;
    S->rows = c;
    S->out = NULL;
    S->start[0] = 0;
    for (int r = 0; r < c; r++, h += N) {
        for (int j = 0; j < N; j++) { /* branch-free: every entry written, nonzeros kept */
            S->idx[n] = j;
            S->val[n] = h[j];
            n += h[j] != 0.0f;
        }
        S->start[r + 1] = n;
        if (n > limit)
            return false;
    }
    return true;
}

/* The dense output of a chunk of the split's rows, their norms and h's nonzero counts: in
   sparse chunks the nonzeros of h, in neuron index order, times w_out's columns (w_outT);
   in dense chunks a matrix product with w_out itself. */
static void denseChunk(void *ctx, long chunk, int worker) {
    Meo *this = ctx;
    int D = this->D, N = this->N;
    long t0 = chunk * CHUNK;
    int c = (int)(this->rows - t0 < CHUNK ? this->rows - t0 : CHUNK);
    const float *h = this->L->h + (size_t)(this->row0 + t0) * N;
    float *y = this->y + (size_t)t0 * D;
    SparseRows *S = &this->scratch[worker].nz[0];
    for (int r = 0; r < c; r++) {
        int n = 0;
        for (int j = 0; j < N; j++)
            n += h[(size_t)r * N + j] != 0.0f;
        this->h_count[t0 + r] = n;
    }
    if (gatherH(S, h, c, N)) {
        Lists l = listsOf(S);
        Sink k = {.acc = y, .panel = TILE, .ld = D, .store = true};
        sparseRun(&l, rowMajorMat(this->w_outT, D), D, &k);
    } else {
        Vec_gemmNT(c, D, N, h, N, this->w->w_out, N, y, D);
    }
    for (int r = 0; r < c; r++)
        this->y_norm[t0 + r] = sqrt(Vec_sumSquares(D, y + (size_t)r * D));
}

/* Fills y, its norms and h's counts on first use (with the Meo's threads; they do not depend
   on the partition, so they are kept, allocated by Meo_open, until Meo_delete). */
static MsStatus ensureDense(Meo *this, const Cancel *cancel) {
    if (this->have_y)
        return MS_OK;
    MsStatus st = Parallel_run(this->threads, Parallel_chunks(this->rows, CHUNK), denseChunk,
                               this, cancel, -1.0, -1.0);
    this->have_y = st == MS_OK;
    return st;
}

/* Token oracle scores of the partition and their per-row sums, CHUNK rows per job (a row's
   scores do not depend on the rows scored with it). */
typedef struct ScoreJob {
    Meo *meo;
    const int32_t *part;
} ScoreJob;

static void scoreChunk(void *ctx, long chunk, int worker) {
    (void)worker;
    const ScoreJob *job = ctx;
    Meo *this = job->meo;
    int E = this->E, N = this->N;
    long t0 = chunk * CHUNK, c = this->rows - t0 < CHUNK ? this->rows - t0 : CHUNK;
    Router_oracleScores(this->L->h + (size_t)(this->row0 + t0) * N, c, N, job->part, E,
                        this->s + t0 * E);
    for (long t = t0; t < t0 + c; t++) {
        double tot = 0.0;
        for (int e = 0; e < E; e++)
            tot += this->s[t * E + e];
        this->s_total[t] = tot;
    }
}

static void scoreTokens(Meo *this, const int32_t *part) {
    ScoreJob job = {.meo = this, .part = part};
    Parallel_run(this->threads, Parallel_chunks(this->rows, CHUNK), scoreChunk, &job, NULL,
                 -1.0, -1.0);
}

static MsStatus checkSplit(const LayerData *L, long block_len, long rows, char **cause) {
    if (rows < 1) {
        setCause(cause, "the split has no tokens to evaluate MEO on");
        return MS_ERR_RANGE;
    }
    if (!(L->seq_offsets && L->n_seq > 0) && block_len < 1) {
        setCause(cause, "the MEO sequence length must be at least 1, got %ld", block_len);
        return MS_ERR_RANGE;
    }
    if (!L->h) {
        setCause(cause, "MEO needs the layer's hidden activations");
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

static MsStatus checkPartition(const LayerData *L, const int32_t *part, int E, char **cause) {
    if (E < 1 || E > L->w->d_ff) {
        setCause(cause, "MEO needs 1 to %d experts, got %d", L->w->d_ff, E);
        return MS_ERR_RANGE;
    }
    for (int j = 0; j < L->w->d_ff; j++) {
        if (part[j] < 0 || part[j] >= E) {
            setCause(cause, "neuron %d is in expert %d, outside 0..%d", j, (int)part[j], E - 1);
            return MS_ERR_RANGE;
        }
    }
    return MS_OK;
}

MsStatus Meo_open(Meo **out, const LayerData *L, Split split, long block_len,
                  const Cancel *cancel, char **cause) {
    *out = NULL;
    long row0, row1;
    Split_rows(L, split, &row0, &row1);
    MsStatus st = checkSplit(L, block_len, row1 - row0, cause);
    if (st != MS_OK)
        return st;
    Meo *this = xCalloc(1, sizeof(*this));
    this->L = L;
    this->w = L->w;
    this->D = L->w->d_model;
    this->N = L->w->d_ff;
    this->row0 = row0;
    this->rows = row1 - row0;
    this->threads = 1;
    makeSequences(this, block_len);
    size_t R = (size_t)this->rows, D = (size_t)this->D, N = (size_t)this->N;
    this->y = tryMallocArray(R * D, sizeof(float));
    this->y_norm = tryMallocArray(R, sizeof(double));
    this->h_count = tryMallocArray(R, sizeof(int));
    this->w_outT = tryMallocArray(N * D, sizeof(float));
    this->khat = tryMallocArray(N * D, sizeof(float));
    if (!this->y || !this->y_norm || !this->h_count || !this->w_outT || !this->khat) {
        setCause(cause, "out of memory preparing MEO (%zu bytes)",
                 (R * (D + 3) + 2 * N * D) * sizeof(float));
        Meo_delete(this);
        return MS_ERR_NOMEM;
    }
    layerRows(this);
    if (Cancel_requested(cancel)) {
        setCause(cause, "canceled");
        Meo_delete(this);
        return MS_ERR_CANCELED;
    }
    *out = this;
    return MS_OK;
}

void Meo_setThreads(Meo *this, int threads) {
    this->threads = threads < 1 ? 1 : threads;
}

static void freeScratch(Meo *this) {
    for (int i = 0; i < this->n_scratch; i++) {
        Scratch *s = &this->scratch[i];
        free(s->wrows);
        free(s->panels);
        free(s->xrows);
        free(s->arows);
        free(s->m_outT);
        for (int v = 0; v < MERGED; v++) {
            free(s->used[v]);
            free(s->hid[v]);
            free(s->nz[v].start);
            free(s->nz[v].idx);
            free(s->nz[v].val);
        }
        free(s->nzj);
        free(s->cursor);
        free(s->bounds);
        free(s->mix.start);
        free(s->mix.idx);
        free(s->mix.val);
        free(s->mix.out);
        free(s->up);
        free(s->yhat);
        free(s->part);
    }
    free(this->scratch);
    this->scratch = NULL;
    this->n_scratch = 0;
}

static void ensureScratch(Meo *this) {
    if (this->n_scratch >= this->threads)
        return;
    freeScratch(this);
    size_t G = (size_t)this->max_g, D = (size_t)this->D; /* max_g >= 1: N >= E >= 1 */
    this->scratch = xCalloc((size_t)this->threads, sizeof(Scratch));
    this->n_scratch = this->threads;
    for (int i = 0; i < this->n_scratch; i++) {
        Scratch *s = &this->scratch[i];
        s->wrows = xMallocArray(G * D, sizeof(float));
        s->panels = xMallocArray((size_t)Vec_panelsSize(this->D, this->max_g), sizeof(float));
        s->xrows = xMallocArray(CHUNK, sizeof(float *));
        s->arows = xMallocArray(G, sizeof(float *));
        s->m_outT = xMallocArray(MERGED * G * paddedCols(this->D), sizeof(float));
        for (int v = 0; v < MERGED; v++) {
            s->used[v] = xMallocArray(G, 1);
            s->hid[v] = xMallocArray(G * CHUNK, sizeof(float));
            s->nz[v].cap = 0; /* grown by the gathers */
            s->nz[v].start = xMallocArray(CHUNK + 1, sizeof(int));
            s->nz[v].idx = NULL;
            s->nz[v].val = NULL;
        }
        s->nzj = xMallocArray((size_t)this->N + 8, sizeof(int)); /* Vec_nonzeros' 8 extra */
        s->cursor = xMallocArray((size_t)this->E, sizeof(int));
        s->bounds = NULL; /* grown by selectedLists */
        s->bounds_cap = 0;
        s->mix.start = xMallocArray(MERGED * G + 1, sizeof(int));
        s->mix.out = xMallocArray(MERGED * G, sizeof(int));
        s->mix.idx = xMallocArray(MERGED * (size_t)this->N, sizeof(int));
        s->mix.val = xMallocArray(MERGED * (size_t)this->N, sizeof(float));
        s->up = xMallocArray(G * CHUNK, sizeof(float));
        s->yhat = xMallocArray(D * CHUNK, sizeof(float));
        s->part = xMallocArray((D > 8 ? D : 8) * CHUNK, sizeof(float)); /* or [CHUNK][8] */
    }
}

/* Frees what ensurePre allocates. */
static void freePre(Meo *this) {
    for (long i = 0; this->zblk && i < this->n_seq * this->E; i++)
        free(this->zblk[i]);
    free(this->zblk);
    free(this->nz_base);
    free(this->nz_start);
    free(this->nz_idx);
    free(this->nz_val);
    free(this->nz_made);
    free(this->sacc);
    free(this->kept_k);
    free(this->kept_sel);
    free(this->kept_gate);
    this->zblk = NULL;
    this->nz_val = this->sacc = this->kept_gate = NULL;
    this->nz_made = NULL;
    this->nz_base = NULL;
    this->nz_start = this->nz_idx = this->kept_k = this->kept_sel = NULL;
}

static void freeCache(Meo *this) {
    if (!this->cache)
        return;
    for (long q = 0; q < this->n_seq; q++) {
        for (int i = 0; i < this->cache[q].n; i++)
            free(this->cache[q].e[i].sel);
        free(this->cache[q].e);
    }
    free(this->cache);
    this->cache = NULL;
}

/* Drops what belongs to the partition (and so to the router): z is in its grouped order. */
static void clearPartition(Meo *this) {
    freePre(this);
    freeCache(this);
    if (this->align)
        for (int i = 0; i < this->E * this->E; i++)
            free(this->align[i]);
    free(this->align);
    free(this->s);
    free(this->s_total);
    free(this->offset);
    free(this->neuron);
    free(this->expert_of);
    free(this->pos_map);
    free(this->score);
    free(this->logit);
    free(this->order);
    freeScratch(this);
    this->align = NULL;
    this->s = this->score = this->logit = NULL;
    this->s_total = NULL;
    this->offset = this->neuron = this->expert_of = NULL;
    this->pos_map = this->order = NULL;
    this->E = 0;
}

void Meo_releasePartition(Meo *this) {
    clearPartition(this);
}

MsStatus Meo_setPartition(Meo *this, const int32_t *part, int E, char **cause) {
    MsStatus st = checkPartition(this->L, part, E, cause);
    if (st != MS_OK)
        return st;
    clearPartition(this);
    this->E = E;
    size_t R = (size_t)this->rows;
    this->s = tryMallocArray(R * E, sizeof(float));
    this->s_total = tryMallocArray(R, sizeof(double));
    if (!this->s || !this->s_total) {
        setCause(cause, "out of memory preparing MEO (%zu bytes)", R * (E + 2) * sizeof(float));
        clearPartition(this);
        return MS_ERR_NOMEM;
    }
    this->score = xMallocArray((size_t)this->n_seq * E, sizeof(float));
    this->logit = xMallocArray((size_t)this->n_seq * E, sizeof(float));
    this->order = xMallocArray((size_t)this->n_seq * E, sizeof(int));
    this->align = xCalloc((size_t)E * E, sizeof(int *));
    this->cache = xCalloc((size_t)this->n_seq, sizeof(SelCache));
    gatherExperts(this, part);
    scoreTokens(this, part);
    size_t G = (size_t)this->max_g;
    this->pos_map = xMallocArray(G * E, sizeof(int));
    for (int e = 0; e < E; e++)
        for (size_t i = 0; i < G; i++)
            this->pos_map[e * G + i] = (int)i < expertSize(this, e) ? (int)i : -1;
    Meo_setRouter(this, NULL);
    return MS_OK;
}

void Meo_setRouter(Meo *this, const Router *router) {
    this->router = router && Router_kind(router) != ROUTER_ORACLE ? router : NULL;
    this->kind = this->router ? Router_kind(router) : ROUTER_ORACLE;
    scoreSequences(this);
}

MsStatus Meo_new(Meo **out, const LayerData *L, const int32_t *part, int E,
                 const Router *router, Split split, long block_len, const Cancel *cancel,
                 char **cause) {
    *out = NULL;
    MsStatus st = checkPartition(L, part, E, cause);
    if (st == MS_OK)
        st = Meo_open(out, L, split, block_len, cancel, cause);
    if (st == MS_OK)
        st = Meo_setPartition(*out, part, E, cause);
    if (st != MS_OK) {
        Meo_delete(*out);
        *out = NULL;
        return st;
    }
    Meo_setRouter(*out, router);
    return MS_OK;
}

void Meo_delete(Meo *this) {
    if (!this)
        return;
    clearPartition(this);
    free(this->seq);
    free(this->xmean);
    free(this->y);
    free(this->y_norm);
    free(this->h_count);
    free(this->w_outT);
    free(this->khat);
    free(this);
}

/* The slot maps of b into a and of a into b (a != b), from one max-weight assignment
   between their neurons on the cosine of their key rows (the square matrix padded with
   zero weights when the sizes differ): a matching serves both directions, so one
   assignment is solved per pair, with the rows of the expert holding the lower neuron
   index (an order that relabelling experts does not change: orientPair). The cosines are
   one product, b's rows laid out in panels (sc->panels, kept by the caller for several a:
   *packed) and a's read in place (Vec_gemmGatherPanels: the same bits wherever an element
   sits, so a map does not depend on who asks for it first). */
static void orientPair(const Meo *this, int *a, int *b) {
    if (expertSize(this, *a) > 0 && expertSize(this, *b) > 0 &&
        this->neuron[this->offset[*b]] < this->neuron[this->offset[*a]]) {
        int t = *a;
        *a = *b;
        *b = t;
    }
}

/* Rows rows[0..R) of M (D columns; rows NULL: 0..R-1) as rows D apart in out, for the
   matrix products. */
static void untile(Mat M, const int *rows, int R, int D, float *out) {
    for (int i = 0; i < R; i++)
        for (int c0 = 0; c0 < D; c0 += TILE)
            memcpy(out + (size_t)i * D + c0, matAt(M, rows ? rows[i] : i, c0),
                   (size_t)(D - c0 < TILE ? D - c0 : TILE) * sizeof(float));
}

/* Expert e's rows of R (N rows of D, neuron order) gathered into sc->wrows. */
static const float *expertRows(const Meo *this, Scratch *sc, const float *R, int e) {
    int D = this->D, o = this->offset[e];
    for (int i = 0; i < expertSize(this, e); i++)
        memcpy(sc->wrows + (size_t)i * D, R + (size_t)this->neuron[o + i] * D,
               (size_t)D * sizeof(float));
    return sc->wrows;
}

static void computeAlignment(Meo *this, Scratch *sc, int a, int b, bool *packed) {
    int E = this->E, D = this->D;
    int ga = expertSize(this, a), gb = expertSize(this, b), n = ga > gb ? ga : gb;
    int *mapA = xMallocArray((size_t)(ga > 0 ? ga : 1), sizeof(int));
    int *mapB = xMallocArray((size_t)(gb > 0 ? gb : 1), sizeof(int));
    for (int i = 0; i < ga; i++)
        mapA[i] = -1;
    for (int j = 0; j < gb; j++)
        mapB[j] = -1;
    if (ga > 0 && gb > 0) {
        if (!*packed) /* b's key rows as the product's right side, once per b */
            Vec_panelsPutRowsT(D, gb, 0, D, expertRows(this, sc, this->khat, b), D, sc->panels);
        *packed = true;
        for (int i = 0; i < ga; i++)
            sc->arows[i] = this->khat + (size_t)this->neuron[this->offset[a] + i] * D;
        float *cos = xCalloc((size_t)n * n, sizeof(float));
        Vec_gemmGatherPanels(ga, gb, D, sc->arows, sc->panels, cos, n, false);
        int *match = xMallocArray((size_t)n, sizeof(int));
        Assign_maxWeight(cos, n, match);
        for (int i = 0; i < ga; i++) {
            if (match[i] < gb) {
                mapA[i] = match[i];
                mapB[match[i]] = i;
            }
        }
        free(match);
        free(cos);
    }
    this->align[a * E + b] = mapA;
    this->align[b * E + a] = mapB;
}

/* The cached slot map of b into a (b's slots or -1, G_a entries); computed here when
   missing, so only single-threaded callers may ask for a map not yet made. */
static const int *alignedMap(Meo *this, int a, int b) {
    if (a == b)
        return this->pos_map + (size_t)a * this->max_g;
    if (!this->align[a * this->E + b]) {
        int lo = a, hi = b;
        bool packed = false;
        orientPair(this, &lo, &hi);
        ensureScratch(this);
        computeAlignment(this, &this->scratch[0], lo, hi, &packed);
    }
    return this->align[a * this->E + b];
}

bool Meo_alignment(Meo *this, int a, int b, int *map) {
    if (expertSize(this, a) > MEO_ALIGN_MAX_G || expertSize(this, b) > MEO_ALIGN_MAX_G)
        return false;
    const int *m = alignedMap(this, a, b);
    for (int i = 0; i < expertSize(this, a); i++)
        map[i] = m[i] < 0 ? -1 : this->neuron[this->offset[b] + m[i]];
    return true;
}

/* Sum over the chunk's tokens [t0, t0 + c) of ||y - yhat|| / ||y|| (tokens with ||y|| = 0
   skipped) from a sparse product's lane sums sq[c][LANES] of the squared differences,
   added in double. */
static double laneError(const Meo *this, const float *sq, long t0, int c) {
    double sum = 0.0;
    for (int r = 0; r < c; r++) {
        double yn = this->y_norm[t0 + r];
        if (yn == 0.0)
            continue;
        double ss = 0.0;
        for (int l = 0; l < LANES; l++)
            ss += sq[r * LANES + l];
        sum += sqrt(ss) / yn;
    }
    return sum;
}

/* The error sum of the chunk's product S M, never stored (the sums go straight into the
   squared differences). */
static double sparseChunkError(const Meo *this, Scratch *sc, const SparseRows *S, Mat M,
                               long t0, int c) {
    Lists l = listsOf(S);
    Sink k = {.y = this->y + (size_t)t0 * this->D, .sq = sc->part};
    sparseRun(&l, M, this->D, &k);
    return laneError(this, sc->part, t0, c);
}

/* Sum over the chunk's tokens of ||y - yhat|| / ||y|| (tokens with ||y|| = 0 skipped).
   The difference is taken in float (exact when y and yhat are close, where it matters)
   so that Vec_sumSquares can vectorize the norm. yhat[c][D]. */
static double chunkError(const Meo *this, Scratch *sc, const float *yhat, long t0, int c) {
    int D = this->D;
    double sum = 0.0;
    float *d = sc->part;
    for (int r = 0; r < c; r++) {
        double yn = this->y_norm[t0 + r];
        if (yn == 0.0)
            continue;
        const float *yt = this->y + (size_t)(t0 + r) * D, *yh = yhat + (size_t)r * D;
        for (int i = 0; i < D; i++)
            d[i] = yt[i] - yh[i];
        sum += sqrt(Vec_sumSquares(D, d)) / yn;
    }
    return sum;
}

/* Where each sequence's lists go (SeqNz: ensureLists), from h's counts: -1 for a sequence
   with SPARSE_MAX or more nonzeros. Returns the entries the lists need. */
static long placeLists(Meo *this) {
    long total = 0;
    for (long q = 0; q < this->n_seq; q++) {
        long n = 0, t0 = this->seq[q], t1 = this->seq[q + 1];
        for (long t = t0; t < t1; t++)
            n += this->h_count[t];
        bool dense = (double)n >= SPARSE_MAX * (double)(t1 - t0) * (double)this->N;
        this->nz_base[q] = dense ? -1 : total;
        total += dense ? 0 : n;
    }
    return total;
}

/* Allocates the partition's pass buffers after Meo_setPartition or Meo_releasePartition:
   the table of z's blocks (none made), the sequences' lists of nonzeros (made on first
   use) and the unmerged selection's running sums (none kept). */
static MsStatus ensurePre(Meo *this, char **cause) {
    if (this->zblk)
        return MS_OK;
    size_t R = (size_t)this->rows, S = (size_t)this->n_seq, E = (size_t)this->E;
    this->zblk = xCalloc(S * E, sizeof(float *));
    this->nz_base = xMallocArray(S, sizeof(long));
    size_t entries = (size_t)placeLists(this);
    this->nz_start = tryMallocArray(R * (E + 1), sizeof(int));
    this->nz_idx = tryMallocArray(entries > 0 ? entries : 1, sizeof(int));
    this->nz_val = tryMallocArray(entries > 0 ? entries : 1, sizeof(float));
    this->nz_made = xCalloc(S, 1);
    this->sacc = tryMallocArray(R * this->D, sizeof(float));
    this->kept_k = xCalloc(S, sizeof(int));
    this->kept_sel = xMallocArray(S * E, sizeof(int));
    this->kept_gate = xMallocArray(S * E, sizeof(float));
    if (!this->nz_start || !this->nz_idx || !this->nz_val || !this->sacc) {
        freePre(this);
        setCause(cause, "out of memory for MEO's sums (%zu bytes)",
                 (R * (this->D + E + 1) + 2 * entries) * sizeof(float));
        return MS_ERR_NOMEM;
    }
    return MS_OK;
}

/* The blocks of z (or zg, W's rows) of expert e for the sequences seqs[0..n) (z: at the
   block's start; zg: after z's rows): e's rows of W laid out in panels once
   (Vec_panelsPutRowsT), then for each sequence its rows of x read in place
   (Vec_gemmGatherPanels: every element one running sum in d_model order, the same bits
   wherever it sits, so a block does not depend on which pass, thread or set of sequences
   makes it), plus the bias. */
static void fillExpert(const Meo *this, Scratch *sc, const float *W, const float *bias,
                       bool gate, int e, const long *seqs, long n) {
    int D = this->D, o = this->offset[e], g = expertSize(this, e);
    Vec_panelsPutRowsT(D, g, 0, D, expertRows(this, sc, W, e), D, sc->panels);
    for (long s = 0; s < n; s++) {
        long q = seqs[s], t1 = this->seq[q + 1];
        float *blk = this->zblk[q * this->E + e];
        if (gate)
            blk += (t1 - this->seq[q]) * g;
        for (long t0 = this->seq[q]; t0 < t1; t0 += CHUNK) {
            int c = (int)(t1 - t0 < CHUNK ? t1 - t0 : CHUNK);
            float *z = blk + (t0 - this->seq[q]) * g;
            for (int r = 0; r < c; r++)
                sc->xrows[r] = this->L->x + (size_t)(this->row0 + t0 + r) * D;
            Vec_gemmGatherPanels(c, g, D, sc->xrows, sc->panels, z, g, false);
            if (bias)
                for (int r = 0; r < c; r++)
                    for (int i = 0; i < g; i++)
                        z[(size_t)r * g + i] += bias[this->neuron[o + i]];
        }
    }
}

/* Allocates the block of sequence q and expert e (z and, gated, zg); false: no memory. */
static bool newBlock(Meo *this, long q, int e) {
    size_t L = (size_t)(this->seq[q + 1] - this->seq[q]), g = (size_t)expertSize(this, e);
    this->zblk[q * this->E + e] = tryMallocArray(L * g * (this->w->w_gate ? 2 : 1), sizeof(float));
    return this->zblk[q * this->E + e] != NULL;
}

/* The merged expert's pre-activations on c tokens: slot i is sum_q g[q] zq[maps[q][i]] in
   rank order, zq being row r of the selected expert q's block (zb[q] + r * ld[q]; maps[0]
   is the first expert's own, never -1), then max(v, 0) when relu (ReLU's v > 0 ? v : 0,
   fused). Plain version. */
static void mergedPrePlain(const float *const *zb, const int *ld, int k, const float *g,
                           const int *const *maps, int G0, int c, bool relu, float *out) {
    for (int r = 0; r < c; r++, out += G0) {
        const int *m0 = maps[0];
        const float *z0 = zb[0] + (size_t)r * ld[0];
        for (int i = 0; i < G0; i++)
            out[i] = g[0] * z0[m0[i]];
        for (int q = 1; q < k; q++) {
            const int *m = maps[q];
            const float *zq = zb[q] + (size_t)r * ld[q];
            float gq = g[q];
            for (int i = 0; i < G0; i++)
                if (m[i] >= 0)
                    out[i] += gq * zq[m[i]];
        }
        if (relu)
            for (int i = 0; i < G0; i++)
                out[i] = out[i] > 0.0f ? out[i] : 0.0f;
    }
}

/* How many leading entries of map (of G0) are 0, 1, 2, ..., when every later one is -1
   (position maps and the first expert's own); 0 otherwise. */
static int identityRun(const int *map, int G0) {
    int len = 0;
    while (len < G0 && map[len] == len)
        len++;
    for (int i = len; i < G0; i++)
        if (map[i] >= 0)
            return 0;
    return len;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* mergedPrePlain with 8 slots at a time: identity maps load z directly, others gather; a
   product then a sum (no fused multiply-add), so the floats are the plain version's. */
__attribute__((target("avx2"))) static void mergedPreAvx2(const float *const *zb,
                                                          const int *ld, int k,
                                                          const float *g,
                                                          const int *const *maps, int G0,
                                                          int c, bool relu, float *out) {
    int run[k];
    for (int q = 0; q < k; q++)
        run[q] = identityRun(maps[q], G0);
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < c; r++, out += G0) {
        int i = 0;
        __m256 g0 = _mm256_set1_ps(g[0]);
        const int *m0 = maps[0];
        const float *z0 = zb[0] + (size_t)r * ld[0];
        if (run[0] == G0) {
            for (; i + 8 <= G0; i += 8)
                _mm256_storeu_ps(out + i, _mm256_mul_ps(g0, _mm256_loadu_ps(z0 + i)));
        } else {
            for (; i + 8 <= G0; i += 8) {
                __m256i idx = _mm256_loadu_si256((const __m256i *)(m0 + i));
                _mm256_storeu_ps(out + i, _mm256_mul_ps(g0, _mm256_i32gather_ps(z0, idx, 4)));
            }
        }
        for (; i < G0; i++)
            out[i] = g[0] * z0[m0[i]];
        for (int q = 1; q < k; q++) {
            const int *m = maps[q];
            const float *zq = zb[q] + (size_t)r * ld[q];
            float gq = g[q];
            __m256 gv = _mm256_set1_ps(gq);
            i = 0;
            if (run[q] > 0) {
                for (; i + 8 <= run[q]; i += 8) {
                    __m256 p = _mm256_mul_ps(gv, _mm256_loadu_ps(zq + i));
                    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), p));
                }
                for (; i < run[q]; i++)
                    out[i] += gq * zq[i];
                continue;
            }
            for (; i + 8 <= G0; i += 8) {
                __m256i idx = _mm256_loadu_si256((const __m256i *)(m + i));
                __m256 keep = _mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(-1)));
                __m256 v = _mm256_mask_i32gather_ps(zero, zq, idx, keep, 4);
                __m256 o = _mm256_loadu_ps(out + i);
                __m256 s = _mm256_add_ps(o, _mm256_mul_ps(gv, v));
                _mm256_storeu_ps(out + i, _mm256_blendv_ps(o, s, keep));
            }
            for (; i < G0; i++)
                if (m[i] >= 0)
                    out[i] += gq * zq[m[i]];
        }
        if (relu) {
            for (i = 0; i + 8 <= G0; i += 8) /* maxps(v, 0) = v > 0 ? v : 0 */
                _mm256_storeu_ps(out + i, _mm256_max_ps(_mm256_loadu_ps(out + i), zero));
            for (; i < G0; i++)
                out[i] = out[i] > 0.0f ? out[i] : 0.0f;
        }
    }
}
#endif

static void mergedPre(const float *const *zb, const int *ld, int k, const float *g,
                      const int *const *maps, int G0, int c, bool relu, float *out) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        mergedPreAvx2(zb, ld, k, g, maps, G0, c, relu, out);
        return;
    }
#endif
    mergedPrePlain(zb, ld, k, g, maps, G0, c, relu, out);
}

/* The merged hidden's nonzeros as SparseRows on slots, marking the slots they use
   (used[i] 0 -> 1; 2 stays: merged already); false when the chunk is too dense. */
static bool gatherHidden(SparseRows *S, const float *hid, int c, int G0, unsigned char *used) {
    long limit = sparseLimit(c, G0, SPARSE_MAX);
    reserve(S, limit + G0 + 9); /* Vec_nonzeros may write 8 past its count */
    int n = 0;
    S->rows = c;
    S->out = NULL;
    S->start[0] = 0;
    for (int r = 0; r < c; r++, hid += G0) {
        int m = Vec_nonzeros(G0, hid, S->idx + n);
        for (int j = n; j < n + m; j++) {
            int i = S->idx[j];
            S->val[j] = hid[i];
            used[i] |= !used[i];
        }
        n += m;
        S->start[r + 1] = n;
        if (n > limit)
            return false;
    }
    return true;
}

/* The merged experts being evaluated together on a sequence: V variants with gates g[v]
   (the same selection and slot maps), variant v's scratch at index v. */
typedef struct Merged {
    int V, k, G0;
    const int *sel;
    const float *const *g;
    const int *const *maps;
} Merged;

/* Variant v's merged w_out rows in sc->m_outT. */
static Mat mergedRows(const Meo *this, const Scratch *sc, int v) {
    return (Mat){sc->m_outT + (size_t)v * this->max_g * TILE, TILE * MERGED * this->max_g, TILE};
}

/* Merges the merged w_out rows the chunk wants and that are not merged yet (variant v: its
   used[i] == 1, or every slot not merged when its chunk is dense): row i of variant v =
   sum_q g[v][q] w_out's column of sel[q]'s neuron in slot maps[q][i], in rank order. A
   slot's variants are merged one after the other, so the second finds the k source rows
   in L1. */
static void mergeOut(const Meo *this, Scratch *sc, const Merged *m, const bool *dense) {
    SparseRows *S = &sc->mix;
    int n = 0, r = 0;
    S->start[0] = 0;
    for (int i = 0; i < m->G0; i++) {
        for (int v = 0; v < m->V; v++) {
            unsigned char *u = &sc->used[v][i];
            if (*u == 2 || (!dense[v] && *u == 0))
                continue;
            *u = 2;
            S->out[r] = v * this->max_g + i;
            for (int q = 0; q < m->k; q++) {
                if (m->maps[q][i] < 0)
                    continue;
                S->idx[n] = this->neuron[this->offset[m->sel[q]] + m->maps[q][i]];
                S->val[n++] = m->g[v][q];
            }
            S->start[++r] = n;
        }
    }
    S->rows = r;
    Lists l = listsOf(S);
    Sink out = {.acc = sc->m_outT, .panel = TILE * MERGED * this->max_g, .ld = TILE,
                .out = S->out, .store = true, .by_row = true};
    if (r > 0)
        sparseRun(&l, rowMajorMat(this->w_outT, this->D), this->D, &out);
}

/* Variant v's merged hidden values hid[c][G0] on the tokens [t0, t0 + c) of sequence q,
   from the selected experts' blocks of z (and zg). */
static void mergedHidden(const Meo *this, Scratch *sc, long q, const Merged *m, int v, long t0,
                         int c) {
    static const float none[1]; /* an empty expert's block: its maps are all -1 */
    const FfnWeights *w = this->w;
    int k = m->k;
    size_t n = (size_t)c * m->G0;
    const float *zb[k], *gb[k];
    int ld[k];
    long rows = this->seq[q + 1] - this->seq[q], r0 = t0 - this->seq[q];
    for (int j = 0; j < k; j++) {
        const float *blk = this->zblk[q * this->E + m->sel[j]];
        ld[j] = expertSize(this, m->sel[j]);
        zb[j] = blk ? blk + r0 * ld[j] : none;
        gb[j] = blk ? blk + (rows + r0) * ld[j] : none; /* zg follows z in a block */
    }
    bool relu = w->act == ACTIVATION_RELU;
    float *hid = sc->hid[v];
    mergedPre(w->w_gate ? gb : zb, ld, k, m->g[v], m->maps, m->G0, c, relu, hid);
    if (!relu)
        Activation_applyArray(w->act, hid, (long)n);
    if (w->w_gate) {
        mergedPre(zb, ld, k, m->g[v], m->maps, m->G0, c, false, sc->up);
        for (size_t i = 0; i < n; i++)
            hid[i] *= sc->up[i];
    }
}

/* The merged experts' error sums on the tokens [t0, t0 + c) of sequence q, added to
   sum[v]. A sparse chunk merges only the slots its nonzeros multiply (a slot no token of
   the sequence uses is never merged) and multiplies its nonzeros inside the error; a
   dense chunk merges every slot and runs a matrix product. */
static void runMerged(const Meo *this, Scratch *sc, long q, const Merged *m, long t0, int c,
                      double *sum) {
    int D = this->D, G0 = m->G0;
    if (G0 == 0) {
        memset(sc->yhat, 0, (size_t)c * D * sizeof(float));
        for (int v = 0; v < m->V; v++)
            sum[v] += chunkError(this, sc, sc->yhat, t0, c);
        return;
    }
    bool dense[MERGED];
    for (int v = 0; v < m->V; v++) {
        mergedHidden(this, sc, q, m, v, t0, c);
        dense[v] = !gatherHidden(&sc->nz[v], sc->hid[v], c, G0, sc->used[v]);
    }
    mergeOut(this, sc, m, dense);
    for (int v = 0; v < m->V; v++) {
        Mat M = mergedRows(this, sc, v);
        if (!dense[v]) {
            sum[v] += sparseChunkError(this, sc, &sc->nz[v], M, t0, c);
            continue;
        }
        untile(M, NULL, G0, D, sc->wrows);
        Vec_gemmNN(c, D, G0, sc->hid[v], G0, sc->wrows, D, sc->yhat, D);
        sum[v] += chunkError(this, sc, sc->yhat, t0, c);
    }
}

/* Sequence q's lists of h's nonzeros grouped by expert (SeqNz), made by the worker that
   first evaluates q: each token's nonzeros in neuron order (Vec_nonzeros), counted per
   expert, then placed expert by expert as (neuron, value), so each expert's list
   keeps neuron order. A sequence with SPARSE_MAX or more nonzeros has none (its blocks
   all run matrix products). */
static void ensureLists(const Meo *this, Scratch *sc, long q) {
    if (this->nz_made[q])
        return;
    this->nz_made[q] = 1;
    long base = this->nz_base[q];
    if (base < 0)
        return;
    int E = this->E, N = this->N, off = 0;
    int *idx = this->nz_idx + base;
    float *val = this->nz_val + base;
    for (long t = this->seq[q]; t < this->seq[q + 1]; t++) {
        const float *h = this->L->h + (size_t)(this->row0 + t) * N;
        int n = Vec_nonzeros(N, h, sc->nzj);
        int *st = this->nz_start + (size_t)t * (E + 1);
        memset(st, 0, (size_t)(E + 1) * sizeof(int));
        for (int i = 0; i < n; i++)
            st[this->expert_of[sc->nzj[i]] + 1]++;
        st[0] = off;
        for (int e = 0; e < E; e++)
            st[e + 1] += st[e];
        memcpy(sc->cursor, st, (size_t)E * sizeof(int));
        for (int i = 0; i < n; i++) {
            int j = sc->nzj[i], at = sc->cursor[this->expert_of[j]]++;
            idx[at] = j;
            val[at] = h[j];
        }
        off += n;
    }
}

/* Whether expert e's block of the chunk [t0, t0 + c) of sequence q goes through the
   sparse product: its sequence has lists and fewer than SPARSE_MAX of the block is
   nonzero (an empty expert has nothing to add either way). */
static bool blockSparse(const Meo *this, long q, long t0, int c, int e) {
    int g = expertSize(this, e);
    if (this->nz_base[q] < 0)
        return false;
    if (g == 0)
        return true;
    long nonzero = 0;
    for (long t = t0; t < t0 + c; t++) {
        const int *st = this->nz_start + (size_t)t * (this->E + 1);
        nonzero += st[e + 1] - st[e];
    }
    return (double)nonzero < SPARSE_MAX * (double)c * (double)g;
}

/* acc[c][D] (+)= gate h_e w_out_e on the chunk by a matrix product (h's block gathered):
   a dense block. first: acc starts from 0. */
static void addDenseExpert(const Meo *this, Scratch *sc, int e, float gate, bool first,
                           long t0, int c) {
    int D = this->D, N = this->N, o = this->offset[e], g = expertSize(this, e);
    float *acc = this->sacc + (size_t)t0 * D;
    if (first)
        memset(acc, 0, (size_t)c * D * sizeof(float));
    if (g == 0)
        return;
    const float *h = this->L->h + (size_t)(this->row0 + t0) * N;
    float *hg = sc->hid[0];
    for (int r = 0; r < c; r++)
        for (int i = 0; i < g; i++)
            hg[(size_t)r * g + i] = gate * h[(size_t)r * N + this->neuron[o + i]];
    untile(rowMajorMat(this->w_outT, D), this->neuron + o, g, D, sc->wrows);
    Vec_gemmNN(c, D, g, hg, g, sc->wrows, D, sc->part, D);
    for (size_t i = 0; i < (size_t)c * D; i++)
        acc[i] += sc->part[i];
}

/* The segments of the selected experts sel[j0..j1) for each token of the chunk, for the
   sparse product (the bounds relative to the sequence's lists). */
static Lists selectedLists(const Meo *this, Scratch *sc, long q, const int *sel,
                           const float *gate, int j0, int j1, long t0, int c) {
    int segs = j1 - j0, E = this->E;
    if ((long)c * 2 * segs > sc->bounds_cap) {
        sc->bounds_cap = (long)CHUNK * 2 * segs;
        sc->bounds = xReallocArray(sc->bounds, (size_t)sc->bounds_cap, sizeof(int));
    }
    for (int r = 0; r < c; r++) {
        const int *st = this->nz_start + (size_t)(t0 + r) * (E + 1);
        for (int s = 0; s < segs; s++) {
            sc->bounds[(r * segs + s) * 2] = st[sel[j0 + s]];
            sc->bounds[(r * segs + s) * 2 + 1] = st[sel[j0 + s] + 1];
        }
    }
    long base = this->nz_base[q];
    return (Lists){.rows = c, .segs = segs, .stride = 2 * segs, .bound = sc->bounds,
                   .idx = this->nz_idx + base, .val = this->nz_val + base, .gate = gate + j0};
}

/* The unmerged selection's error sum on the chunk [t0, t0 + c) of sequence q: experts
   from..k-1 added in rank order to the running sums in sacc (which hold experts
   0..from-1's, or nothing when from = 0) and kept there. Runs of sparse blocks go
   through one sparse product (the sums stay in registers across their experts); a dense
   block is a matrix product added to the sums. */
static double selectedChunk(const Meo *this, Scratch *sc, long q, int from, int k,
                            const int *sel, const float *gate, long t0, int c) {
    int D = this->D;
    float *acc = this->sacc + (size_t)t0 * D;
    double err = 0.0;
    for (int j = from; j < k;) {
        if (!blockSparse(this, q, t0, c, sel[j])) {
            addDenseExpert(this, sc, sel[j], gate[j], j == 0, t0, c);
            if (++j == k)
                err = chunkError(this, sc, acc, t0, c);
            continue;
        }
        int j1 = j + 1;
        while (j1 < k && blockSparse(this, q, t0, c, sel[j1]))
            j1++;
        Lists l = selectedLists(this, sc, q, sel, gate, j, j1, t0, c);
        Sink sink = {.acc = acc, .panel = TILE, .ld = D, .load = j > 0, .store = true,
                     .y = j1 == k ? this->y + (size_t)t0 * D : NULL, .sq = sc->part};
        sparseRun(&l, rowMajorMat(this->w_outT, D), D, &sink);
        if (j1 == k)
            err = laneError(this, sc->part, t0, c);
        j = j1;
    }
    return err;
}

static void softmaxGates(const float *logit, const int *sel, int k, float *g) {
    double e[k];
    double mx = logit[sel[0]], sum = 0.0;
    for (int q = 1; q < k; q++)
        mx = fmax(mx, logit[sel[q]]);
    for (int q = 0; q < k; q++)
        sum += e[q] = exp((double)logit[sel[q]] - mx);
    for (int q = 0; q < k; q++)
        g[q] = (float)(e[q] / sum);
}

/* Sequence q's share of meo_mass_recall: its tokens scored against its selection. */
static void addRecall(const Meo *this, long q, int k, SeqSums *acc) {
    int E = this->E;
    const int *sel = this->order + q * E;
    for (long t = this->seq[q]; t < this->seq[q + 1]; t++) {
        if (this->s_total[t] <= 0.0)
            continue;
        double in = 0.0;
        for (int j = 0; j < k; j++)
            in += this->s[t * E + sel[j]];
        acc->recall += in / this->s_total[t];
        acc->recall_n++;
    }
}

/* The merged experts' error sums over sequence q, into sum[0..V). */
static void mergedErrors(const Meo *this, Scratch *sc, long q, const Merged *m, double *sum) {
    long t0 = this->seq[q], t1 = this->seq[q + 1];
    for (int v = 0; v < m->V; v++) {
        sum[v] = 0.0;
        memset(sc->used[v], 0, (size_t)m->G0);
    }
    for (long c0 = t0; c0 < t1; c0 += CHUNK) {
        int c = (int)(t1 - c0 < CHUNK ? t1 - c0 : CHUNK);
        runMerged(this, sc, q, m, c0, c, sum);
    }
}

/* One Meo_metrics pass: k, the slot variants it reports and one sum per sequence. */
typedef struct Pass {
    const Meo *meo;
    int k;
    bool aligned;
    SeqSums *sums; /* [n_seq] */
} Pass;

/* The map of sel[j]'s neurons into sel[0]'s slots (aligned maps were made beforehand). */
static const int *slotMap(const Meo *this, int s, int a, int b) {
    if (s == MEO_SLOTS_POSITION || a == b)
        return this->pos_map + (size_t)b * this->max_g;
    return this->align[a * this->E + b];
}

/* Sum of the unmerged selection's token errors over sequence q. Its running sums are kept
   (sacc) with the selection and gates they hold: a later call whose selection and gates
   start with those (the same router at a larger k) adds only the experts after them,
   the same float operations as a fresh start. */
static double selectedError(const Meo *this, Scratch *sc, long q, int k, const int *sel,
                            const float *gate) {
    int E = this->E, kept = this->kept_k[q];
    int *ksel = this->kept_sel + (size_t)q * E;
    float *kgate = this->kept_gate + (size_t)q * E;
    bool resume = kept < k && memcmp(ksel, sel, (size_t)kept * sizeof(int)) == 0 &&
                  memcmp(kgate, gate, (size_t)kept * sizeof(float)) == 0;
    int from = resume ? kept : 0;
    ensureLists(this, sc, q);
    long t0 = this->seq[q], t1 = this->seq[q + 1];
    double sum = 0.0;
    for (long c0 = t0; c0 < t1; c0 += CHUNK) {
        int c = (int)(t1 - c0 < CHUNK ? t1 - c0 : CHUNK);
        sum += selectedChunk(this, sc, q, from, k, sel, gate, c0, c);
    }
    this->kept_k[q] = k;
    memcpy(ksel, sel, (size_t)k * sizeof(int));
    memcpy(kgate, gate, (size_t)k * sizeof(float));
    return sum;
}

/* Sequence q's cache entry for the selection sel at k, added (empty) when missing. Only
   the worker evaluating q touches its cache. */
static SelEntry *cacheEntry(const Meo *this, long q, int k, const int *sel, bool *found) {
    SelCache *c = &this->cache[q];
    for (int i = 0; i < c->n; i++) {
        if (c->e[i].k == k && memcmp(c->e[i].sel, sel, (size_t)k * sizeof(int)) == 0) {
            *found = true;
            return &c->e[i];
        }
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 4;
        c->e = xReallocArray(c->e, (size_t)c->cap, sizeof(SelEntry));
    }
    SelEntry *e = &c->e[c->n++];
    *e = (SelEntry){.k = k, .sel = xMallocArray((size_t)k, sizeof(int))};
    memcpy(e->sel, sel, (size_t)k * sizeof(int));
    *found = false;
    return e;
}

/* All sums for sequence q (a Parallel_run chunk). Router-independent sums come from the
   sequence's cache when an earlier router (or k) made them for the same selection. */
static void evalSequence(void *ctx, long q, int worker) {
    const Pass *p = ctx;
    const Meo *this = p->meo;
    Scratch *sc = &this->scratch[worker];
    SeqSums *acc = &p->sums[q];
    int E = this->E, k = p->k;
    const int *sel = this->order + q * E;
    memset(acc, 0, sizeof *acc);
    addRecall(this, q, k, acc);
    for (long t = this->seq[q]; t < this->seq[q + 1]; t++)
        acc->err_n += this->y_norm[t] != 0.0;
    float gate[k], soft[k], ones[k];
    bool unit = true; /* every gate is 1: the selection error is router-independent */
    for (int j = 0; j < k; j++) {
        ones[j] = 1.0f;
        gate[j] = this->router ? Router_gate(this->router, this->score[q * E + sel[j]]) : 1.0f;
        unit = unit && gate[j] == 1.0f;
    }
    bool found;
    SelEntry *ent = cacheEntry(this, q, k, sel, &found);
    if (unit && ent->has_seqsel) {
        acc->seqsel = ent->seqsel;
    } else {
        acc->seqsel = selectedError(this, sc, q, k, sel, gate);
        if (unit) {
            ent->seqsel = acc->seqsel;
            ent->has_seqsel = true;
        }
    }
    softmaxGates(this->logit + q * E, sel, k, soft);
    const int *maps[k];
    for (int s = 0; s < MEO_SLOTS; s++) {
        if (s == MEO_SLOTS_ALIGNED && !p->aligned)
            continue;
        for (int j = 0; j < k; j++)
            maps[j] = slotMap(this, s, sel[0], sel[j]);
        if (k == 1 && s > 0) {
            /* One expert: its softmax gate is 1 and its aligned map the identity, so all
               four merges are the same floats. */
            acc->merged[0][s] = acc->merged[1][s] = acc->merged[0][0];
            continue;
        }
        /* the sum gates unless cached, the softmax gates unless k = 1 (the same floats) */
        const float *g[MERGED];
        double sum[MERGED];
        int V = 0;
        if (!found)
            g[V++] = ones;
        if (k > 1)
            g[V++] = soft;
        Merged m = {.V = V, .k = k, .G0 = expertSize(this, sel[0]), .sel = sel, .g = g,
                    .maps = maps};
        if (V > 0)
            mergedErrors(this, sc, q, &m, sum);
        if (!found)
            ent->merged[s] = sum[0];
        acc->merged[MEO_GATES_SUM][s] = ent->merged[s];
        acc->merged[MEO_GATES_SOFTMAX][s] = k == 1 ? ent->merged[s] : sum[V - 1];
    }
}

/* Work that shares an operand, grouped by it: group i is key[i] (an expert whose rows are
   laid out in panels once) with items item[start[i] .. start[i + 1]) in ascending order,
   at most a piece of them, so that no group holds up the end of a parallel run. */
typedef struct Groups {
    int n;
    int *key;
    long *start, *item;
} Groups;

/* The groups of want[item][key] != 0 (items x keys), keys ascending. */
static Groups groupByKey(const unsigned char *want, long items, int keys, long piece) {
    long *count = xCalloc((size_t)keys, sizeof(long)), total = 0;
    for (long t = 0; t < items; t++)
        for (int e = 0; e < keys; e++)
            count[e] += want[t * keys + e];
    int n = 0;
    for (int e = 0; e < keys; e++) {
        n += (int)((count[e] + piece - 1) / piece);
        total += count[e];
    }
    Groups g = {.n = 0};
    g.key = xMallocArray((size_t)(n > 0 ? n : 1), sizeof(int));
    g.start = xMallocArray((size_t)n + 1, sizeof(long));
    g.item = xMallocArray((size_t)(total > 0 ? total : 1), sizeof(long));
    long at = 0;
    for (int e = 0; e < keys; e++) {
        long in = 0;
        for (long t = 0; t < items; t++) {
            if (!want[t * keys + e])
                continue;
            if (in++ % piece == 0) {
                g.key[g.n] = e;
                g.start[g.n++] = at;
            }
            g.item[at++] = t;
        }
    }
    g.start[g.n] = at;
    free(count);
    return g;
}

static void Groups_done(Groups *g) {
    free(g->key);
    free(g->start);
    free(g->item);
}

#define PAIR_PIECE 4  /* aligned pairs per job (one assignment each) */
#define BLOCK_PIECE 8 /* pre-activation blocks per job */

/* The aligned pairs a pass's selections (the first k experts of every sequence's order)
   need and that are not made: (a, b) oriented (orientPair), grouped by b. */
static Groups wantedPairs(const Meo *this, int k) {
    int E = this->E;
    unsigned char *want = xCalloc((size_t)E * E, 1); /* [a][b] */
    for (long q = 0; q < this->n_seq; q++) {
        const int *sel = this->order + q * E;
        for (int j = 1; j < k; j++) {
            int a = sel[0], b = sel[j];
            if (a == b || this->align[a * E + b])
                continue;
            orientPair(this, &a, &b);
            want[a * E + b] = 1;
        }
    }
    Groups g = groupByKey(want, E, E, PAIR_PIECE);
    free(want);
    return g;
}

/* The pre-activation blocks the selections need and that are not made, allocated here
   (MS_ERR_NOMEM), grouped by expert. */
static MsStatus wantedBlocks(Meo *this, int k, Groups *out, char **cause) {
    int E = this->E;
    unsigned char *want = xCalloc((size_t)this->n_seq * E, 1); /* [q][e] */
    MsStatus st = MS_OK;
    for (long q = 0; q < this->n_seq && st == MS_OK; q++) {
        const int *sel = this->order + q * E;
        for (int j = 0; j < k && st == MS_OK; j++) {
            if (this->zblk[q * E + sel[j]] || expertSize(this, sel[j]) == 0)
                continue;
            want[q * E + sel[j]] = 1;
            if (!newBlock(this, q, sel[j])) {
                setCause(cause, "out of memory for MEO's pre-activations");
                st = MS_ERR_NOMEM;
            }
        }
    }
    *out = groupByKey(want, this->n_seq, E, BLOCK_PIECE);
    free(want);
    return st;
}

/* What a pass prepares before it evaluates the sequences, as one parallel run: job i is
   group order[i] of the aligned pairs (the first pairs.n) or of the blocks, the costliest
   first (an assignment on G x G cosines is about 1.5 G^2 d_model operations, a block L G
   d_model per projection), so the run ends evenly. */
typedef struct PrepJob {
    Meo *meo;
    Groups pairs, blocks;
    int *order;
} PrepJob;

static void prepGroup(void *ctx, long i, int worker) {
    const PrepJob *job = ctx;
    Meo *this = job->meo;
    Scratch *sc = &this->scratch[worker];
    int o = job->order[i];
    bool packed = false;
    if (o < job->pairs.n) {
        const Groups *g = &job->pairs;
        for (long p = g->start[o]; p < g->start[o + 1]; p++)
            computeAlignment(this, sc, (int)g->item[p], g->key[o], &packed);
        return;
    }
    const Groups *g = &job->blocks;
    o -= job->pairs.n;
    const long *seqs = g->item + g->start[o];
    long n = g->start[o + 1] - g->start[o];
    fillExpert(this, sc, this->w->w_in, this->w->b_in, false, g->key[o], seqs, n);
    if (this->w->w_gate)
        fillExpert(this, sc, this->w->w_gate, NULL, true, g->key[o], seqs, n);
}

typedef struct Costed {
    double cost;
    int index;
} Costed;

/* Costlier first, then the lower index (a fixed order). */
static int byCost(const void *x, const void *y) {
    const Costed *a = x, *b = y;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* job->order: the groups by falling cost. */
static void orderJobs(const Meo *this, PrepJob *job) {
    int n = job->pairs.n + job->blocks.n, D = this->D;
    Costed *c = xMallocArray((size_t)(n > 0 ? n : 1), sizeof(Costed));
    for (int i = 0; i < job->pairs.n; i++) {
        const Groups *g = &job->pairs;
        double gb = expertSize(this, g->key[i]), sum = 0.0;
        for (long p = g->start[i]; p < g->start[i + 1]; p++)
            sum += 1.5 * expertSize(this, (int)g->item[p]) * gb * D;
        c[i] = (Costed){sum, i};
    }
    for (int i = 0; i < job->blocks.n; i++) {
        const Groups *g = &job->blocks;
        double sum = 0.0;
        for (long p = g->start[i]; p < g->start[i + 1]; p++)
            sum += (double)(this->seq[g->item[p] + 1] - this->seq[g->item[p]]);
        sum *= (double)expertSize(this, g->key[i]) * D * (this->w->w_gate ? 2 : 1);
        c[job->pairs.n + i] = (Costed){sum, job->pairs.n + i};
    }
    qsort(c, (size_t)n, sizeof(Costed), byCost);
    job->order = xMallocArray((size_t)(n > 0 ? n : 1), sizeof(int));
    for (int i = 0; i < n; i++)
        job->order[i] = c[i].index;
    free(c);
}

/* Makes the aligned maps (when aligned) and the pre-activation blocks the pass's
   selections need, in one parallel run. MS_ERR_NOMEM, MS_ERR_CANCELED (the pass's blocks
   are dropped, to be made again next time). */
static MsStatus preparePass(Meo *this, int k, bool aligned, const Cancel *cancel,
                            char **cause) {
    PrepJob job = {.meo = this};
    job.pairs = aligned ? wantedPairs(this, k) : groupByKey(NULL, 0, 0, 1);
    MsStatus st = wantedBlocks(this, k, &job.blocks, cause);
    orderJobs(this, &job);
    int n = job.pairs.n + job.blocks.n;
    if (st == MS_OK && n > 0)
        st = Parallel_run(this->threads, n, prepGroup, &job, cancel, -1.0, -1.0);
    if (st != MS_OK) { /* blocks may be half made (pairs are whole or not made) */
        const Groups *g = &job.blocks;
        for (int i = 0; i < g->n; i++) {
            for (long p = g->start[i]; p < g->start[i + 1]; p++) {
                float **blk = &this->zblk[g->item[p] * this->E + g->key[i]];
                free(*blk);
                *blk = NULL;
            }
        }
    }
    Groups_done(&job.pairs);
    Groups_done(&job.blocks);
    free(job.order);
    return st;
}
static double meanOrNaN(double sum, long n) {
    return n > 0 ? sum / (double)n : NAN;
}

/* The SPEC §5 cost and the split's shape. */
static void meoCost(const Meo *this, int k, MeoMetrics *out) {
    out->sequences = this->n_seq;
    out->tokens = this->rows;
    out->seq_len_mean = (double)this->rows / (double)this->n_seq;
    bool gated = FfnWeights_gated(this->w);
    int P = Cost_projections(gated);
    double G = Cost_expertSize(this->N, this->E), L = out->seq_len_mean;
    double meo = (double)k * G * this->D * P * 2.0 / L + 2.0 * this->D * G * P +
                 Cost_routerFlops(this->kind, this->D, this->E) / L;
    out->flops_fraction = meo / Cost_denseFlops(this->D, this->N, gated);
}

MsStatus Meo_metrics(Meo *this, int k, const Cancel *cancel, MeoMetrics *out, char **cause) {
    memset(out, 0, sizeof(*out));
    if (k < 1 || k > this->E) {
        setCause(cause, "MEO needs 1 <= k <= E = %d, got k = %d", this->E, k);
        return MS_ERR_RANGE;
    }
    bool aligned = this->max_g <= MEO_ALIGN_MAX_G || k == 1;
    ensureScratch(this);
    MsStatus st = ensureDense(this, cancel);
    if (st == MS_OK && (st = ensurePre(this, cause)) != MS_OK)
        return st;
    if (st == MS_OK)
        st = preparePass(this, k, aligned, cancel, cause);
    Pass pass = {.meo = this, .k = k, .aligned = aligned};
    pass.sums = xCalloc((size_t)this->n_seq, sizeof(SeqSums));
    if (st == MS_OK)
        st = Parallel_run(this->threads, this->n_seq, evalSequence, &pass, cancel, 0.0, 1.0);
    if (st != MS_OK) {
        free(pass.sums);
        if (st == MS_ERR_CANCELED)
            setCause(cause, "canceled");
        return st;
    }
    SeqSums acc = {0};
    for (long q = 0; q < this->n_seq; q++) {
        const SeqSums *s = &pass.sums[q];
        acc.recall += s->recall;
        acc.recall_n += s->recall_n;
        acc.seqsel += s->seqsel;
        acc.err_n += s->err_n;
        for (int g = 0; g < MEO_GATES; g++)
            for (int v = 0; v < MEO_SLOTS; v++)
                acc.merged[g][v] += s->merged[g][v];
    }
    free(pass.sums);
    out->mass_recall = meanOrNaN(acc.recall, acc.recall_n);
    out->seqsel_output_rel_err = meanOrNaN(acc.seqsel, acc.err_n);
    for (int g = 0; g < MEO_GATES; g++)
        for (int v = 0; v < MEO_SLOTS; v++)
            out->output_rel_err[g][v] =
                v == MEO_SLOTS_ALIGNED && !aligned ? NAN : meanOrNaN(acc.merged[g][v], acc.err_n);
    meoCost(this, k, out);
    return MS_OK;
}

MsStatus Meo_evaluate(const LayerData *L, const int32_t *part, int E, int k,
                      const Router *router, Split split, long block_len, const Cancel *cancel,
                      MeoMetrics *out, char **cause) {
    Meo *meo = NULL;
    MsStatus st = Meo_new(&meo, L, part, E, router, split, block_len, cancel, cause);
    if (st == MS_OK)
        st = Meo_metrics(meo, k, cancel, out, cause);
    Meo_delete(meo);
    return st;
}
