/*
moescope - core/Assign.c
Exact assignment solvers.

Assign_maxWeight: Jonker and Volgenant's shortest augmenting path method (LAPJV, 1987):
column reduction and reduction transfer give every column a price and most rows a
column, augmenting row reduction (an auction-like pass) places most of the rest, and each
row still free is added along a shortest augmenting path (Dijkstra over the columns on
reduced costs). O(n^3) worst case like the Hungarian method, but the cheap phases leave
few rows for the Dijkstra (on MEO's 96 x 96 cosine matrices about a third of the rows,
each reaching most columns before a free one, so the Dijkstra's two O(n) loops per step
run over plain arrays, four columns at a time). Costs and prices are doubles (exact up
to double rounding, as the weights are floats); every scan runs in a fixed order, so
ties resolve the same way on every call. O(n^2) scratch (the costs as doubles,
contiguous rows).

Assign_capacitated: min-cost flow source -> point -> group -> sink, solved by successive
shortest paths, one point at a time. With the point nodes collapsed, the residual graph
lives on the k group nodes: an edge c -> b means "move some point i from group c to group
b", costing loss(i, c, b) = score[i][c] - score[i][b]; only the cheapest such point matters,
so every ordered pair (c, b) keeps an indexed min-heap of the points of c keyed by that
loss. Adding point s is a dense Dijkstra over the groups (initial distances from s to
every group, reduced by the potentials) that stops at the first group with spare
capacity; the point chain along the path moves one group forward. The potentials keep
every reduced cost non-negative, so each path is shortest and, by the successive
shortest path theorem, the assignment of the points added so far stays optimal for
them. Warm-started potentials (the previous k-means iteration's prices) are valid
because the empty assignment has no group-to-group edges, and they make most points
land in their final group at once. Cost: O(k) per point that fits directly, O(m k) for
a path visiting m groups, plus O(k log cap) heap updates per moved point.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Assign.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/XUtils.h"

/* Jonker-Volgenant's solver works on costs c = -w (minimized) and column prices v; row i's
   reduced cost of column j is c[i][j] - v[j], and every assigned row holds a column of
   least reduced cost (the invariant that makes the final assignment optimal). */
typedef struct Lap {
    int n;
    double *c;    /* [n][n] costs, row-major */
    double *v;    /* [n] column prices */
    double *d;    /* [n] Dijkstra distances, final ones */
    double *dt;   /* [n] distances of the columns not reached yet, -INFINITY for the others */
    int *row;     /* [n] column of each row, -1 free */
    int *col;     /* [n] row of each column, -1 free */
    int *pred;    /* [n] row preceding each column on the shortest path tree */
    int *list;    /* [n] columns reached: scanned | at the current minimum, to scan */
    int *free;    /* [n] free rows, then [n] scratch (the columns a step reaches) */
    int nfree;
} Lap;

/* Column reduction: each column's price is its least cost and the column goes to that row
   (the first in row order) unless the row already holds a column, which it keeps. Then
   reduction transfer: a row that won exactly one column lowers that column's price by its
   margin over the row's second-best column, so later rows find it less attractive. */
static void columnReduction(Lap *L) {
    int n = L->n;
    int *argmin = L->pred, *wins = L->list; /* scratch until the augmentation */
    for (int j = 0; j < n; j++) {
        L->v[j] = L->c[j];
        argmin[j] = 0;
    }
    for (int i = 1; i < n; i++) {
        const double *ci = L->c + (size_t)i * n;
        for (int j = 0; j < n; j++) {
            if (ci[j] < L->v[j]) {
                L->v[j] = ci[j];
                argmin[j] = i;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        L->row[i] = -1;
        L->col[i] = -1;
        wins[i] = 0;
    }
    for (int j = n - 1; j >= 0; j--) {
        int i = argmin[j];
        if (wins[i]++ == 0) {
            L->row[i] = j;
            L->col[j] = i;
        }
    }
    L->nfree = 0;
    for (int i = 0; i < n; i++) {
        if (wins[i] == 0) {
            L->free[L->nfree++] = i;
        } else if (wins[i] == 1) {
            int j1 = L->row[i];
            const double *ci = L->c + (size_t)i * n;
            double least = INFINITY;
            for (int j = 0; j < n; j++)
                if (j != j1 && ci[j] - L->v[j] < least)
                    least = ci[j] - L->v[j];
            if (least < INFINITY) /* n = 1 has no other column */
                L->v[j1] -= least;
        }
    }
}

/* Augmenting row reduction: a free row takes its best column, lowering the column's price
   to the row's second-best reduced cost, and the row it displaces becomes free (handled
   again at once when the price fell, else on the next pass). Two passes, as JV advise,
   each bounded to n steps: rows bounce between near-equal columns for long on dense
   real-valued matrices (and could cycle on floating-point ties), and the rows still free
   then are left to the augmentation, which is exact on its own (measured at n = 96 on
   cosine matrices: 0.14-0.18 ms per solve, against 0.2-0.3 ms with 8n steps and
   0.4-0.7 ms for the plain Hungarian method). */
static void augmentingRowReduction(Lap *L) {
    int n = L->n;
    for (int pass = 0; pass < 2 && L->nfree > 0; pass++) {
        int k = 0, prev = L->nfree;
        long steps = 0, limit = n;
        L->nfree = 0;
        while (k < prev) {
            int i = L->free[k++];
            if (++steps > limit) {
                L->free[L->nfree++] = i;
                continue;
            }
            const double *ci = L->c + (size_t)i * n;
            double u1 = ci[0] - L->v[0], u2 = INFINITY;
            int j1 = 0, j2 = -1;
            for (int j = 1; j < n; j++) {
                double h = ci[j] - L->v[j];
                if (h < u2) {
                    if (h >= u1) {
                        u2 = h;
                        j2 = j;
                    } else {
                        u2 = u1;
                        u1 = h;
                        j2 = j1;
                        j1 = j;
                    }
                }
            }
            int i0 = L->col[j1];
            bool lowered = u1 < u2;
            if (lowered)
                L->v[j1] -= u2 - u1;
            else if (i0 >= 0 && j2 >= 0) { /* a tie: take the second column instead */
                j1 = j2;
                i0 = L->col[j2];
            }
            L->row[i] = j1;
            L->col[j1] = i;
            if (i0 >= 0) {
                L->row[i0] = -1;
                if (lowered)
                    L->free[--k] = i0;
                else
                    L->free[L->nfree++] = i0;
            }
        }
    }
}

/* The augmentation's Dijkstra keeps the distances of the columns it has not reached yet
   ("todo") in dt, and -INFINITY there for the others, so its two O(n) loops per step run
   over plain arrays and vectorize: the update through a newly scanned row, which also
   finds the least todo distance for the next step (relax), and the collection of the
   columns at that distance (atLeast). */

/* Relax on columns [j0, n): dt[j] = ci[j] - v[j] - h where that is smaller, with pred[j] =
   i; the columns that fell to exactly least go to eq[m..], in index order, and *next gets
   the least todo distance (at most its value on entry). Returns m. */
static int relaxRange(const double *ci, const double *v, double h, double least, int i, int j0,
                      int n, double *dt, int *pred, int *eq, int m, double *next) {
    double mn = *next;
    for (int j = j0; j < n; j++) {
        double dj = ci[j] - v[j] - h;
        if (dj < dt[j]) {
            dt[j] = dj;
            pred[j] = i;
            if (dj == least)
                eq[m++] = j;
        }
        if (dt[j] > -INFINITY && dt[j] < mn)
            mn = dt[j];
    }
    *next = mn;
    return m;
}

/* The todo columns at distance least into eq[m..], in index order, from j0. */
static int atLeastRange(const double *dt, double least, int j0, int n, int *eq, int m) {
    for (int j = j0; j < n; j++)
        if (dt[j] == least)
            eq[m++] = j;
    return m;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* relaxRange four columns at a time: the same double operations, lane by lane. */
__attribute__((target("avx2"))) static int relaxAvx2(const double *ci, const double *v,
                                                     double h, double least, int i, int n,
                                                     double *dt, int *pred, int *eq,
                                                     double *next) {
    int m = 0, j = 0;
    __m256d hv = _mm256_set1_pd(h), lv = _mm256_set1_pd(least), inf = _mm256_set1_pd(INFINITY);
    __m256d ninf = _mm256_set1_pd(-INFINITY), mn = inf;
    __m128i iv = _mm_set1_epi32(i);
    const __m256i low32 = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6); /* a lane's low half */
    for (; j + 4 <= n; j += 4) {
        __m256d dj = _mm256_sub_pd(_mm256_sub_pd(_mm256_loadu_pd(ci + j), _mm256_loadu_pd(v + j)),
                                   hv);
        __m256d old = _mm256_loadu_pd(dt + j);
        __m256d lt = _mm256_cmp_pd(dj, old, _CMP_LT_OQ);
        __m256d now = _mm256_blendv_pd(old, dj, lt);
        mn = _mm256_min_pd(mn, _mm256_blendv_pd(now, inf, _mm256_cmp_pd(now, ninf, _CMP_EQ_OQ)));
        _mm256_storeu_pd(dt + j, now);
        __m128i lt32 = _mm256_castsi256_si128(
            _mm256_permutevar8x32_epi32(_mm256_castpd_si256(lt), low32));
        __m128i *pj = (__m128i *)(pred + j);
        _mm_storeu_si128(pj, _mm_blendv_epi8(_mm_loadu_si128(pj), iv, lt32));
        int at = _mm256_movemask_pd(_mm256_and_pd(lt, _mm256_cmp_pd(dj, lv, _CMP_EQ_OQ)));
        for (int b = 0; at; b++, at >>= 1)
            if (at & 1)
                eq[m++] = j + b;
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, mn);
    *next = fmin(fmin(lanes[0], lanes[1]), fmin(lanes[2], lanes[3]));
    return relaxRange(ci, v, h, least, i, j, n, dt, pred, eq, m, next);
}

__attribute__((target("avx2"))) static int atLeastAvx2(const double *dt, double least, int n,
                                                       int *eq) {
    int m = 0, j = 0;
    __m256d lv = _mm256_set1_pd(least);
    for (; j + 4 <= n; j += 4) {
        int at = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(dt + j), lv, _CMP_EQ_OQ));
        for (int b = 0; at; b++, at >>= 1)
            if (at & 1)
                eq[m++] = j + b;
    }
    return atLeastRange(dt, least, j, n, eq, m);
}
#endif

static bool haveAvx2(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

static int relax(const double *ci, const double *v, double h, double least, int i, int n,
                 double *dt, int *pred, int *eq, double *next) {
    *next = INFINITY;
#if defined(__GNUC__) && defined(__x86_64__)
    if (haveAvx2())
        return relaxAvx2(ci, v, h, least, i, n, dt, pred, eq, next);
#endif
    return relaxRange(ci, v, h, least, i, 0, n, dt, pred, eq, 0, next);
}

static int atLeast(const double *dt, double least, int n, int *eq) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (haveAvx2())
        return atLeastAvx2(dt, least, n, eq);
#endif
    return atLeastRange(dt, least, 0, n, eq, 0);
}

/* Columns eq[0..m) reached at distance least: the first free one ends the search (returned),
   the others join the queue list[.., *up) to be scanned, their distance final. -1: none
   free. */
static int reach(Lap *L, const int *eq, int m, double least, double *dt, int *up) {
    for (int e = 0; e < m; e++) {
        int j = eq[e];
        if (L->col[j] < 0)
            return j;
        L->d[j] = least;
        dt[j] = -INFINITY;
        L->list[(*up)++] = j;
    }
    return -1;
}

/* Adds free row r along a shortest augmenting path (Dijkstra on reduced costs over the
   columns: all columns at the current minimum distance are queued together, lowest index
   first, then scanned in queue order) and updates the prices of the columns whose
   distance became final before the last minimum. */
static void augmentRow(Lap *L, int r) {
    int n = L->n, *list = L->list, *eq = L->free + n;
    double *d = L->d, *v = L->v, *dt = L->dt;
    const double *cr = L->c + (size_t)r * n;
    double nearest = INFINITY; /* the least todo distance */
    for (int j = 0; j < n; j++) {
        dt[j] = cr[j] - v[j];
        L->pred[j] = r;
        nearest = dt[j] < nearest ? dt[j] : nearest;
    }
    /* list[0, low): scanned; [low, up): at distance least, to scan */
    int low = 0, up = 0, last = 0, end = -1;
    double least = 0.0;
    while (end < 0) {
        if (up == low) {
            last = low;
            least = nearest;
            end = reach(L, eq, atLeast(dt, least, n, eq), least, dt, &up);
            if (end >= 0)
                break;
        }
        int j1 = list[low++], i = L->col[j1];
        const double *ci = L->c + (size_t)i * n;
        double h = ci[j1] - v[j1] - least;
        int m = relax(ci, v, h, least, i, n, dt, L->pred, eq, &nearest);
        end = reach(L, eq, m, least, dt, &up);
    }
    for (int k = 0; k < last; k++) {
        int j = list[k];
        v[j] += d[j] - least;
    }
    for (;;) {
        int i = L->pred[end], next = L->row[i];
        L->col[end] = i;
        L->row[i] = end;
        if (i == r)
            break;
        end = next;
    }
}

double Assign_maxWeight(const float *w, int n, int *match) {
    if (n <= 0)
        return 0.0;
    Lap L = {.n = n};
    size_t nn = (size_t)n * (size_t)n;
    L.c = xMallocArray(nn + 3 * (size_t)n, sizeof(double));
    L.v = L.c + nn;
    L.d = L.v + n;
    L.dt = L.d + n;
    L.row = xMallocArray(6 * (size_t)n, sizeof(int));
    L.col = L.row + n;
    L.pred = L.col + n;
    L.list = L.pred + n;
    L.free = L.list + n;
    for (size_t e = 0; e < nn; e++)
        L.c[e] = -(double)w[e];
    columnReduction(&L);
    augmentingRowReduction(&L);
    for (int f = 0; f < L.nfree; f++)
        augmentRow(&L, L.free[f]);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        match[i] = L.row[i];
        total += w[(size_t)i * n + L.row[i]];
    }
    free(L.c);
    free(L.row);
    return total;
}

/* ---- capacitated assignment ------------------------------------------------------- */

typedef struct HeapEntry {
    double key; /* loss of moving the point to the heap's target group */
    int point;
} HeapEntry;

typedef struct Flow {
    const float *score;
    int n, k;
    const int *cap;
    int *count;       /* [k] points currently in each group */
    int *group;       /* [n] group of each added point, -1 before */
    double *pot;      /* [k] potentials (= -price) */
    HeapEntry *heap;  /* heap (c, b) at heap + base[c] + b * cap[c], size count[c] */
    size_t *base;     /* [k] */
    int *pos;         /* [n * k]: pos[i*k + b] = index of i in heap (group[i], b) */
    int *member;      /* group c's points at member + mbase[c], count[c] of them */
    size_t *mbase;    /* [k] */
    int *slot;        /* [n] index of each point in its group's member list */
    bool *heaped;     /* [k] the group's heaps exist (it has been full once) */
    double *dist;     /* [k] Dijkstra scratch */
    int *prev;        /* [k] previous group on the path, -1 = the new point */
    bool *done;       /* [k] */
    int *path;        /* [k] groups of the path, target first */
    int *movers;      /* [k] points moving along the path */
} Flow;

static inline bool entryBefore(const HeapEntry *a, const HeapEntry *b) {
    return a->key < b->key || (a->key == b->key && a->point < b->point);
}

static inline HeapEntry *heapOf(const Flow *f, int c, int b) {
    return f->heap + f->base[c] + (size_t)b * f->cap[c];
}

static void heapPlace(Flow *f, HeapEntry *h, int b, int at, HeapEntry e) {
    h[at] = e;
    f->pos[(size_t)e.point * f->k + b] = at;
}

static void siftUp(Flow *f, HeapEntry *h, int b, int at) {
    HeapEntry e = h[at];
    while (at > 0) {
        int parent = (at - 1) / 2;
        if (!entryBefore(&e, &h[parent]))
            break;
        heapPlace(f, h, b, at, h[parent]);
        at = parent;
    }
    heapPlace(f, h, b, at, e);
}

static void siftDown(Flow *f, HeapEntry *h, int b, int size, int at) {
    HeapEntry e = h[at];
    for (;;) {
        int child = 2 * at + 1;
        if (child >= size)
            break;
        if (child + 1 < size && entryBefore(&h[child + 1], &h[child]))
            child++;
        if (!entryBefore(&h[child], &e))
            break;
        heapPlace(f, h, b, at, h[child]);
        at = child;
    }
    heapPlace(f, h, b, at, e);
}

/* Builds the heaps (c, b) of a group that just became full, by Floyd's heapify: cheaper
   and far more cache-friendly than inserting each point into k - 1 heaps as it arrives.
   Only full groups need heaps: Dijkstra expands a group only when it has no room (a
   group with room ends the search), and a full group stays full. */
static void buildHeaps(Flow *f, int c) {
    const int *mem = f->member + f->mbase[c];
    int size = f->count[c];
    for (int b = 0; b < f->k; b++) {
        if (b == c)
            continue;
        HeapEntry *h = heapOf(f, c, b);
        for (int at = 0; at < size; at++) {
            const float *s = f->score + (size_t)mem[at] * f->k;
            h[at] = (HeapEntry){(double)s[c] - (double)s[b], mem[at]};
            f->pos[(size_t)mem[at] * f->k + b] = at;
        }
        for (int at = size / 2 - 1; at >= 0; at--)
            siftDown(f, h, b, size, at);
    }
    f->heaped[c] = true;
}

/* Puts point i into group c (and into its heaps (c, b), b != c, once they exist). */
static void addPoint(Flow *f, int i, int c) {
    int size = f->count[c];
    f->member[f->mbase[c] + size] = i;
    f->slot[i] = size;
    f->count[c] = size + 1;
    f->group[i] = c;
    if (!f->heaped[c]) {
        if (size + 1 == f->cap[c])
            buildHeaps(f, c);
        return;
    }
    const float *s = f->score + (size_t)i * f->k;
    for (int b = 0; b < f->k; b++) {
        if (b == c)
            continue;
        HeapEntry *h = heapOf(f, c, b);
        h[size] = (HeapEntry){(double)s[c] - (double)s[b], i};
        siftUp(f, h, b, size);
    }
}

/* Takes point i out of its group (only full, heaped groups ever lose points). */
static void removePoint(Flow *f, int i) {
    int c = f->group[i];
    int last = f->count[c] - 1;
    int *mem = f->member + f->mbase[c];
    mem[f->slot[i]] = mem[last];
    f->slot[mem[last]] = f->slot[i];
    for (int b = 0; f->heaped[c] && b < f->k; b++) {
        if (b == c)
            continue;
        HeapEntry *h = heapOf(f, c, b);
        int at = f->pos[(size_t)i * f->k + b];
        if (at == last)
            continue;
        HeapEntry moved = h[last];
        heapPlace(f, h, b, at, moved);
        if (at > 0 && entryBefore(&moved, &h[(at - 1) / 2]))
            siftUp(f, h, b, at);
        else
            siftDown(f, h, b, last, at);
    }
    f->count[c] = last;
    f->group[i] = -1;
}

/* Pops the unvisited group with the smallest distance (ties: lower index); -1 if none. */
static int closestOpen(const Flow *f) {
    int best = -1;
    for (int c = 0; c < f->k; c++)
        if (!f->done[c] && f->dist[c] < INFINITY && (best < 0 || f->dist[c] < f->dist[best]))
            best = c;
    return best;
}

/* Adds point s along a shortest path and updates the potentials. */
static void augment(Flow *f, int s) {
    const float *ss = f->score + (size_t)s * f->k;
    for (int c = 0; c < f->k; c++) {
        f->dist[c] = f->cap[c] > 0 ? -(double)ss[c] - f->pot[c] : INFINITY;
        f->prev[c] = -1;
        f->done[c] = false;
    }
    int target;
    for (;;) {
        int c = closestOpen(f);
        /* sum cap = n guarantees some group with room is reachable */
        if (f->count[c] < f->cap[c]) {
            target = c;
            break;
        }
        f->done[c] = true;
        for (int b = 0; b < f->k; b++) {
            if (f->done[b] || b == c || f->cap[b] == 0)
                continue;
            const HeapEntry *top = heapOf(f, c, b);
            double nd = f->dist[c] + top->key + f->pot[c] - f->pot[b];
            if (nd < f->dist[b]) {
                f->dist[b] = nd;
                f->prev[b] = c;
            }
        }
    }
    /* Potentials: visited groups move by dist - D (<= 0), the rest keep theirs; this is
       the usual p += min(dist, D) shifted by the constant D. */
    double D = f->dist[target];
    for (int c = 0; c < f->k; c++)
        if (f->done[c])
            f->pot[c] += f->dist[c] - D;
    /* Collect the path and its movers before moving anything: a simple path never
       touches the same heap twice, but reading first keeps that argument local. */
    int len = 0;
    for (int b = target; f->prev[b] >= 0; b = f->prev[b]) {
        f->path[len] = b;
        f->movers[len] = heapOf(f, f->prev[b], b)->point;
        len++;
    }
    int first = target;
    while (f->prev[first] >= 0)
        first = f->prev[first];
    for (int m = 0; m < len; m++) {
        removePoint(f, f->movers[m]);
        addPoint(f, f->movers[m], f->path[m]);
    }
    addPoint(f, s, first);
}

static MsStatus checkCapacities(int n, int k, const int *cap, char **cause) {
    if (n < 0 || k < 1) {
        setCause(cause, "capacitated assignment needs n >= 0 points and k >= 1 groups, got "
                        "n = %d, k = %d", n, k);
        return MS_ERR_RANGE;
    }
    long sum = 0;
    for (int g = 0; g < k; g++) {
        if (cap[g] < 0) {
            setCause(cause, "group %d has a negative capacity %d", g, cap[g]);
            return MS_ERR_RANGE;
        }
        sum += cap[g];
    }
    if (sum != n) {
        setCause(cause, "group capacities sum to %ld, not to the %d points", sum, n);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

static void flowDone(Flow *f) {
    free(f->count);
    free(f->group);
    free(f->pot);
    free(f->heap);
    free(f->base);
    free(f->pos);
    free(f->dist);
    free(f->prev);
    free(f->done);
    free(f->path);
    free(f->movers);
    free(f->member);
    free(f->mbase);
    free(f->slot);
    free(f->heaped);
}

MsStatus Assign_capacitated(const float *score, int n, int k, const int *cap, double *price,
                            int *assign, const Cancel *cancel, char **cause) {
    MsStatus st = checkCapacities(n, k, cap, cause);
    if (st != MS_OK || n == 0)
        return st;
    Flow f = {.score = score, .n = n, .k = k, .cap = cap};
    size_t cells = (size_t)n * (size_t)k;
    f.heap = tryMallocArray(cells, sizeof(HeapEntry));
    f.pos = tryMallocArray(cells, sizeof(int));
    if (!f.heap || !f.pos) {
        flowDone(&f);
        setCause(cause, "out of memory for the assignment of %d points to %d groups (%zu bytes)",
                 n, k, cells * (sizeof(HeapEntry) + sizeof(int)));
        return MS_ERR_NOMEM;
    }
    f.count = xCalloc((size_t)k, sizeof(int));
    f.group = xMallocArray((size_t)n, sizeof(int));
    f.pot = xMallocArray((size_t)k, sizeof(double));
    f.base = xMallocArray((size_t)k, sizeof(size_t));
    f.dist = xMallocArray((size_t)k, sizeof(double));
    f.prev = xMallocArray((size_t)k, sizeof(int));
    f.done = xMallocArray((size_t)k, sizeof(bool));
    f.path = xMallocArray((size_t)k, sizeof(int));
    f.movers = xMallocArray((size_t)k, sizeof(int));
    f.member = xMallocArray((size_t)n, sizeof(int));
    f.mbase = xMallocArray((size_t)k, sizeof(size_t));
    f.slot = xMallocArray((size_t)n, sizeof(int));
    f.heaped = xCalloc((size_t)k, sizeof(bool));
    size_t at = 0, mat = 0;
    for (int c = 0; c < k; c++) {
        f.base[c] = at;
        f.mbase[c] = mat;
        at += (size_t)k * (size_t)cap[c];
        mat += (size_t)cap[c];
        f.pot[c] = price ? -price[c] : 0.0;
    }
    for (int i = 0; i < n; i++)
        f.group[i] = -1;
    for (int i = 0; i < n; i++) {
        if ((i & 255) == 255 && Cancel_requested(cancel)) {
            flowDone(&f);
            return MS_ERR_CANCELED;
        }
        augment(&f, i);
    }
    memcpy(assign, f.group, (size_t)n * sizeof(int));
    if (price) {
        /* Shift so the smallest price is 0: prices only matter up to a constant, and
           this keeps them from drifting across warm-started calls. */
        double lo = INFINITY;
        for (int c = 0; c < k; c++)
            if (cap[c] > 0 && -f.pot[c] < lo)
                lo = -f.pot[c];
        for (int c = 0; c < k; c++)
            price[c] = cap[c] > 0 ? -f.pot[c] - lo : 0.0;
    }
    flowDone(&f);
    return MS_OK;
}
