/*
moescope - core/Meo.c
Sequence-level MEO metrics (SPEC §5).

DESIGN: Meo_new does the k-independent work once: the split's sequences, the token
oracle scores s[t,e] and their totals, each sequence's router scores (its mean x through
Router_score, or the mean of s for the oracle), softmax logits (Router_logits) and expert
order (TopK_order, ties to the lower index), the dense y = w_out h (no b_out) with its row
norms, the experts' neuron lists, their w_out columns as contiguous rows (for the merge
and the unmerged sequence-selection output) and their L2-normalized key rows (for aligned
slots). Slot maps hold rows of that grouped order.
Meo_metrics then walks the sequences: the first k experts of the order are the selection;
tokens are processed in chunks of CHUNK rows so scratch stays small for long sequences.
Merged weights are summed over the selection in rank order, so relabelling experts does
not change a single float operation. The aligned slot map of an expert pair depends only
on the partition, so it is computed on first use and cached.

Cost (SPEC §5): L in the merge and router terms is the mean length of the sequences
actually used (split tokens / sequences), so a short last block raises the cost a little.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Meo.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/Assign.h"
#include "core/Ffn.h"
#include "core/Cost.h"
#include "core/TopK.h"
#include "util/XUtils.h"

#define CHUNK 256 /* token rows per block of work */

struct Meo {
    const LayerData *L;
    const FfnWeights *w;
    const Router *router; /* NULL: the oracle */
    RouterKind kind;
    int E, D, N;
    long row0, rows;
    long n_seq;
    long *seq;            /* [n_seq + 1] sequence starts, relative to row0 */
    float *s;             /* [rows][E] token oracle scores */
    double *s_total;      /* [rows] */
    float *score;         /* [n_seq][E] the sequence's router scores */
    float *logit;         /* [n_seq][E] softmax inputs */
    int *order;           /* [n_seq][E] experts, best first */
    float *y;             /* [rows][D] dense output, no b_out */
    double *y_norm;       /* [rows] */
    int max_g;
    int *offset;          /* [E + 1] */
    int *neuron;          /* [N] neurons grouped by expert, ascending within each */
    float *w_outT;        /* [N][D] w_out columns as rows, grouped order */
    float *khat;          /* [N][D] normalized key rows in grouped order */
    int **align;          /* [E * E] cached aligned maps (grouped row or -1), or NULL */
    /* scratch for Meo_metrics */
    float *m_in, *m_gate, *m_b, *m_outT; /* merged [G][D], [G][D], [G], [G][D] */
    float *hid, *up, *yhat;             /* [CHUNK][max_g], [CHUNK][max_g], [CHUNK][D] */
    int *pos_map;                       /* [E][max_g] position maps (grouped rows or -1) */
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

/* Neuron lists, w_out columns and normalized keys grouped by expert. */
static void gatherExperts(Meo *this, const int32_t *part) {
    int E = this->E, D = this->D, N = this->N;
    const FfnWeights *w = this->w;
    this->offset = xCalloc((size_t)E + 1, sizeof(int));
    for (int j = 0; j < N; j++)
        this->offset[part[j] + 1]++;
    for (int e = 0; e < E; e++) {
        if (this->offset[e + 1] > this->max_g)
            this->max_g = this->offset[e + 1];
        this->offset[e + 1] += this->offset[e];
    }
    int *next = xMallocArray((size_t)E, sizeof(int));
    memcpy(next, this->offset, (size_t)E * sizeof(int));
    this->neuron = xMallocArray((size_t)N, sizeof(int));
    for (int j = 0; j < N; j++)
        this->neuron[next[part[j]]++] = j;
    free(next);
    const float *keys = FfnWeights_keys(w);
    for (int e = 0; e < E; e++) {
        int o = this->offset[e], g = expertSize(this, e);
        for (int i = 0; i < g; i++) {
            int j = this->neuron[o + i];
            float *col = this->w_outT + (size_t)(o + i) * D;
            for (int r = 0; r < D; r++)
                col[r] = w->w_out[(size_t)r * N + j];
            const float *kr = keys + (size_t)j * D;
            float *kh = this->khat + (size_t)(o + i) * D;
            double ss = 0.0;
            for (int r = 0; r < D; r++)
                ss += (double)kr[r] * kr[r];
            float inv = ss > 0.0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
            for (int r = 0; r < D; r++)
                kh[r] = kr[r] * inv;
        }
    }
}

/* Each sequence's scores, logits and expert order. */
static void scoreSequences(Meo *this) {
    int E = this->E, D = this->D;
    double *acc = xMallocArray((size_t)(E > D ? E : D), sizeof(double));
    float *xm = xMallocArray((size_t)D, sizeof(float));
    for (long q = 0; q < this->n_seq; q++) {
        long t0 = this->seq[q], t1 = this->seq[q + 1];
        float *sc = this->score + q * E, *lg = this->logit + q * E;
        if (!this->router) {
            memset(acc, 0, (size_t)E * sizeof(double));
            for (long t = t0; t < t1; t++)
                for (int e = 0; e < E; e++)
                    acc[e] += this->s[t * E + e];
            for (int e = 0; e < E; e++)
                sc[e] = lg[e] = (float)(acc[e] / (double)(t1 - t0));
        } else {
            memset(acc, 0, (size_t)D * sizeof(double));
            for (long t = t0; t < t1; t++) {
                const float *xt = this->L->x + (size_t)(this->row0 + t) * D;
                for (int r = 0; r < D; r++)
                    acc[r] += xt[r];
            }
            for (int r = 0; r < D; r++)
                xm[r] = (float)(acc[r] / (double)(t1 - t0));
            Router_score(this->router, xm, NULL, 1, sc);
            Router_logits(this->router, xm, NULL, 1, lg);
        }
        TopK_order(sc, E, this->order + q * E);
    }
    free(acc);
    free(xm);
}

/* Token oracle scores and the dense output of the split, with their per-row sums;
   false when canceled (checked per chunk: y costs as much as the dense FFN's output). */
static bool scoreTokens(Meo *this, const int32_t *part, const Cancel *cancel) {
    int E = this->E, D = this->D, N = this->N;
    const float *h = this->L->h + (size_t)this->row0 * N;
    Router_oracleScores(h, this->rows, N, part, E, this->s);
    for (long t = 0; t < this->rows; t++) {
        double tot = 0.0;
        for (int e = 0; e < E; e++)
            tot += this->s[t * E + e];
        this->s_total[t] = tot;
    }
    for (long t0 = 0; t0 < this->rows; t0 += CHUNK) {
        if (Cancel_requested(cancel))
            return false;
        int c = (int)(this->rows - t0 < CHUNK ? this->rows - t0 : CHUNK);
        Ffn_linear(h + (size_t)t0 * N, c, this->w->w_out, NULL, N, D,
                   this->y + (size_t)t0 * D);
    }
    for (long t = 0; t < this->rows; t++) {
        double ss = 0.0;
        const float *yt = this->y + (size_t)t * D;
        for (int r = 0; r < D; r++)
            ss += (double)yt[r] * yt[r];
        this->y_norm[t] = sqrt(ss);
    }
    return true;
}

static MsStatus checkArgs(const LayerData *L, const int32_t *part, int E, long block_len,
                          long rows, char **cause) {
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

MsStatus Meo_new(Meo **out, const LayerData *L, const int32_t *part, int E,
                 const Router *router, Split split, long block_len, const Cancel *cancel,
                 char **cause) {
    *out = NULL;
    long row0, row1;
    Split_rows(L, split, &row0, &row1);
    MsStatus st = checkArgs(L, part, E, block_len, row1 - row0, cause);
    if (st != MS_OK)
        return st;
    Meo *this = xCalloc(1, sizeof(*this));
    this->L = L;
    this->w = L->w;
    this->router = router && Router_kind(router) != ROUTER_ORACLE ? router : NULL;
    this->kind = this->router ? Router_kind(router) : ROUTER_ORACLE;
    this->E = E;
    this->D = L->w->d_model;
    this->N = L->w->d_ff;
    this->row0 = row0;
    this->rows = row1 - row0;
    makeSequences(this, block_len);
    size_t R = (size_t)this->rows, D = (size_t)this->D, N = (size_t)this->N;
    this->s = tryMallocArray(R * E, sizeof(float));
    this->s_total = tryMallocArray(R, sizeof(double));
    this->y = tryMallocArray(R * D, sizeof(float));
    this->y_norm = tryMallocArray(R, sizeof(double));
    this->w_outT = tryMallocArray(N * D, sizeof(float));
    this->khat = tryMallocArray(N * D, sizeof(float));
    if (!this->s || !this->s_total || !this->y || !this->y_norm || !this->w_outT ||
        !this->khat) {
        setCause(cause, "out of memory preparing MEO (%zu bytes)",
                 R * (E + D) * sizeof(float) + 2 * N * D * sizeof(float));
        Meo_delete(this);
        return MS_ERR_NOMEM;
    }
    this->score = xMallocArray((size_t)this->n_seq * E, sizeof(float));
    this->logit = xMallocArray((size_t)this->n_seq * E, sizeof(float));
    this->order = xMallocArray((size_t)this->n_seq * E, sizeof(int));
    this->align = xCalloc((size_t)E * E, sizeof(int *));
    gatherExperts(this, part);
    if (Cancel_requested(cancel) || !scoreTokens(this, part, cancel)) {
        setCause(cause, "canceled");
        Meo_delete(this);
        return MS_ERR_CANCELED;
    }
    scoreSequences(this);
    size_t G = (size_t)this->max_g; /* >= 1: N >= E >= 1 */
    this->m_in = xMallocArray(G * D, sizeof(float));
    this->m_gate = xMallocArray(G * D, sizeof(float));
    this->m_b = xMallocArray(G, sizeof(float));
    this->m_outT = xMallocArray(G * D, sizeof(float));
    this->hid = xMallocArray(G * CHUNK, sizeof(float));
    this->up = xMallocArray(G * CHUNK, sizeof(float));
    this->yhat = xMallocArray(D * CHUNK, sizeof(float));
    this->pos_map = xMallocArray(G * E, sizeof(int));
    for (int e = 0; e < E; e++)
        for (size_t i = 0; i < G; i++)
            this->pos_map[e * G + i] = (int)i < expertSize(this, e) ? this->offset[e] + (int)i : -1;
    *out = this;
    return MS_OK;
}

void Meo_delete(Meo *this) {
    if (!this)
        return;
    if (this->align)
        for (int i = 0; i < this->E * this->E; i++)
            free(this->align[i]);
    free(this->align);
    free(this->seq);
    free(this->s);
    free(this->s_total);
    free(this->score);
    free(this->logit);
    free(this->order);
    free(this->y);
    free(this->y_norm);
    free(this->offset);
    free(this->neuron);
    free(this->w_outT);
    free(this->khat);
    free(this->m_in);
    free(this->m_gate);
    free(this->m_b);
    free(this->m_outT);
    free(this->hid);
    free(this->up);
    free(this->yhat);
    free(this->pos_map);
    free(this);
}

/* Max-weight assignment of b's neurons to a's slots on the cosine of their key rows;
   the square matrix is padded with zero weights when the sizes differ. */
static int *computeAlignment(const Meo *this, int a, int b) {
    int ga = expertSize(this, a), gb = expertSize(this, b), D = this->D;
    int n = ga > gb ? ga : gb;
    int *map = xMallocArray((size_t)(ga > 0 ? ga : 1), sizeof(int));
    if (n == 0)
        return map;
    float *cos = xCalloc((size_t)n * n, sizeof(float));
    if (ga > 0 && gb > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ga, gb, D, 1.0f,
                    this->khat + (size_t)this->offset[a] * D, D,
                    this->khat + (size_t)this->offset[b] * D, D, 0.0f, cos, n);
    int *match = xMallocArray((size_t)n, sizeof(int));
    Assign_maxWeight(cos, n, match);
    for (int i = 0; i < ga; i++)
        map[i] = match[i] < gb ? this->offset[b] + match[i] : -1;
    free(match);
    free(cos);
    return map;
}

/* The cached slot map of b into a (grouped rows or -1, G_a entries). */
static const int *alignedMap(Meo *this, int a, int b) {
    if (a == b)
        return this->pos_map + (size_t)a * this->max_g;
    int **slot = &this->align[a * this->E + b];
    if (!*slot)
        *slot = computeAlignment(this, a, b);
    return *slot;
}

bool Meo_alignment(Meo *this, int a, int b, int *map) {
    if (expertSize(this, a) > MEO_ALIGN_MAX_G || expertSize(this, b) > MEO_ALIGN_MAX_G)
        return false;
    const int *m = alignedMap(this, a, b);
    for (int i = 0; i < expertSize(this, a); i++)
        map[i] = m[i] < 0 ? -1 : this->neuron[m[i]];
    return true;
}

/* W' = sum_q g[q] W[maps[q]] into the merged scratch, G0 slots (rank order). */
static void mergeWeights(Meo *this, int k, const float *g, const int *const *maps, int G0) {
    const FfnWeights *w = this->w;
    int D = this->D;
    memset(this->m_in, 0, (size_t)G0 * D * sizeof(float));
    if (w->w_gate)
        memset(this->m_gate, 0, (size_t)G0 * D * sizeof(float));
    memset(this->m_b, 0, (size_t)G0 * sizeof(float));
    memset(this->m_outT, 0, (size_t)G0 * D * sizeof(float));
    for (int q = 0; q < k; q++) {
        for (int i = 0; i < G0; i++) {
            int row = maps[q][i];
            if (row < 0)
                continue;
            size_t j = (size_t)this->neuron[row];
            cblas_saxpy(D, g[q], w->w_in + j * D, 1, this->m_in + (size_t)i * D, 1);
            if (w->w_gate)
                cblas_saxpy(D, g[q], w->w_gate + j * D, 1, this->m_gate + (size_t)i * D, 1);
            if (w->b_in)
                this->m_b[i] += g[q] * w->b_in[j];
            cblas_saxpy(D, g[q], this->w_outT + (size_t)row * D, 1,
                        this->m_outT + (size_t)i * D, 1);
        }
    }
}

/* Sum over the chunk's tokens of ||y - yhat|| / ||y|| (tokens with ||y|| = 0 skipped). */
static double chunkError(const Meo *this, long t0, int c, long *counted) {
    int D = this->D;
    double sum = 0.0;
    for (int r = 0; r < c; r++) {
        double yn = this->y_norm[t0 + r];
        if (yn == 0.0)
            continue;
        const float *yt = this->y + (size_t)(t0 + r) * D, *yh = this->yhat + (size_t)r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            double d = (double)yt[i] - yh[i];
            ss += d * d;
        }
        sum += sqrt(ss) / yn;
        (*counted)++;
    }
    return sum;
}

/* yhat of the merged expert (G0 slots) on tokens [t0, t0 + c) of the split. */
static void runMerged(Meo *this, int G0, long t0, int c) {
    int D = this->D;
    const float *x = this->L->x + (size_t)(this->row0 + t0) * D;
    const FfnWeights *w = this->w;
    size_t n = (size_t)c * G0;
    const float *b = w->b_in ? this->m_b : NULL;
    if (G0 == 0) {
        memset(this->yhat, 0, (size_t)c * D * sizeof(float));
        return;
    }
    if (!w->w_gate) {
        Ffn_linear(x, c, this->m_in, b, D, G0, this->hid);
        Activation_applyArray(w->act, this->hid, (long)n);
    } else {
        Ffn_linear(x, c, this->m_gate, NULL, D, G0, this->hid);
        Activation_applyArray(w->act, this->hid, (long)n);
        Ffn_linear(x, c, this->m_in, b, D, G0, this->up);
        for (size_t i = 0; i < n; i++)
            this->hid[i] *= this->up[i];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, D, G0, 1.0f, this->hid, G0,
                this->m_outT, D, 0.0f, this->yhat, D);
}

/* yhat of the selected experts kept unmerged (h masked, times gates) on a chunk. */
static void runSelected(Meo *this, int k, const int *sel, const float *gate, long t0, int c) {
    int D = this->D, N = this->N;
    const float *h = this->L->h + (size_t)(this->row0 + t0) * N;
    memset(this->yhat, 0, (size_t)c * D * sizeof(float));
    for (int q = 0; q < k; q++) {
        int e = sel[q], o = this->offset[e], g = expertSize(this, e);
        if (g == 0)
            continue;
        for (int r = 0; r < c; r++)
            for (int i = 0; i < g; i++)
                this->hid[(size_t)r * g + i] = gate[q] * h[(size_t)r * N + this->neuron[o + i]];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, D, g, 1.0f, this->hid, g,
                    this->w_outT + (size_t)o * D, D, 1.0f, this->yhat, D);
    }
}

/* The sum-of-errors accumulators of one Meo_metrics call. */
typedef struct Acc {
    double recall, seqsel, merged[MEO_GATES][MEO_SLOTS];
    double merged_k1; /* k = 1: sequence's error of the one merge all variants share */
    long recall_n, err_n;
} Acc;

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
static void addRecall(const Meo *this, long q, int k, Acc *acc) {
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

/* Sum of the merged expert's token errors over sequence q (weights already merged). */
static double mergedError(Meo *this, long q, int G0) {
    long t0 = this->seq[q], t1 = this->seq[q + 1], counted = 0;
    double sum = 0.0;
    for (long c0 = t0; c0 < t1; c0 += CHUNK) {
        int c = (int)(t1 - c0 < CHUNK ? t1 - c0 : CHUNK);
        runMerged(this, G0, c0, c);
        sum += chunkError(this, c0, c, &counted);
    }
    return sum;
}

/* All accumulators for sequence q. */
static void evalSequence(Meo *this, long q, int k, bool aligned, Acc *acc) {
    int E = this->E;
    const int *sel = this->order + q * E;
    long t0 = this->seq[q], t1 = this->seq[q + 1];
    addRecall(this, q, k, acc);
    float gate[k], soft[k], ones[k];
    const int *maps[k];
    for (int j = 0; j < k; j++) {
        ones[j] = 1.0f;
        gate[j] = this->router ? Router_gate(this->router, this->score[q * E + sel[j]]) : 1.0f;
    }
    for (long c0 = t0; c0 < t1; c0 += CHUNK) {
        int c = (int)(t1 - c0 < CHUNK ? t1 - c0 : CHUNK);
        runSelected(this, k, sel, gate, c0, c);
        acc->seqsel += chunkError(this, c0, c, &acc->err_n);
    }
    softmaxGates(this->logit + q * E, sel, k, soft);
    int G0 = expertSize(this, sel[0]);
    for (int s = 0; s < MEO_SLOTS; s++) {
        if (s == MEO_SLOTS_ALIGNED && !aligned)
            continue;
        for (int j = 0; j < k; j++)
            maps[j] = s == MEO_SLOTS_ALIGNED ? alignedMap(this, sel[0], sel[j])
                                             : this->pos_map + (size_t)sel[j] * this->max_g;
        for (int g = 0; g < MEO_GATES; g++) {
            if (k == 1 && (g || s)) {
                /* One expert: its softmax gate is 1 and its aligned map the identity, so
                   all four merges are the same floats. */
                acc->merged[g][s] += acc->merged_k1;
                continue;
            }
            mergeWeights(this, k, g == MEO_GATES_SUM ? ones : soft, maps, G0);
            double err = mergedError(this, q, G0);
            acc->merged[g][s] += err;
            if (k == 1)
                acc->merged_k1 = err;
        }
    }
}

static double meanOrNaN(double sum, long n) {
    return n > 0 ? sum / (double)n : NAN;
}

MsStatus Meo_metrics(Meo *this, int k, const Cancel *cancel, MeoMetrics *out, char **cause) {
    memset(out, 0, sizeof(*out));
    if (k < 1 || k > this->E) {
        setCause(cause, "MEO needs 1 <= k <= E = %d, got k = %d", this->E, k);
        return MS_ERR_RANGE;
    }
    bool aligned = this->max_g <= MEO_ALIGN_MAX_G || k == 1;
    Acc acc = {0};
    for (long q = 0; q < this->n_seq; q++) {
        if (Cancel_requested(cancel)) {
            setCause(cause, "canceled");
            return MS_ERR_CANCELED;
        }
        evalSequence(this, q, k, aligned, &acc);
        Cancel_progress(cancel, (double)(q + 1) / (double)this->n_seq);
    }
    out->mass_recall = meanOrNaN(acc.recall, acc.recall_n);
    out->seqsel_output_rel_err = meanOrNaN(acc.seqsel, acc.err_n);
    for (int g = 0; g < MEO_GATES; g++)
        for (int s = 0; s < MEO_SLOTS; s++)
            out->output_rel_err[g][s] =
                s == MEO_SLOTS_ALIGNED && !aligned ? NAN : meanOrNaN(acc.merged[g][s], acc.err_n);
    out->sequences = this->n_seq;
    out->tokens = this->rows;
    out->seq_len_mean = (double)this->rows / (double)this->n_seq;
    bool gated = FfnWeights_gated(this->w);
    int P = Cost_projections(gated);
    double G = Cost_expertSize(this->N, this->E), L = out->seq_len_mean;
    double meo = (double)k * G * this->D * P * 2.0 / L + 2.0 * this->D * G * P +
                 Cost_routerFlops(this->kind, this->D, this->E) / L;
    out->flops_fraction = meo / Cost_denseFlops(this->D, this->N, gated);
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
