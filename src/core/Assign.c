/*
moescope - core/Assign.c
Exact assignment solvers.

Assign_maxWeight: the Hungarian method in the shortest-augmenting-path form (rows are
added one by one; each addition is a Dijkstra over the columns with the dual potentials
u, v keeping reduced costs non-negative). O(n^3) time, O(n) memory.

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

#include "util/XUtils.h"

double Assign_maxWeight(const float *w, int n, int *match) {
    if (n <= 0)
        return 0.0;
    /* 1-based arrays as in the classic formulation; cost = -weight (minimized). */
    double *u = xCalloc((size_t)n + 1, sizeof(double));
    double *v = xCalloc((size_t)n + 1, sizeof(double));
    double *minv = xMallocArray((size_t)n + 1, sizeof(double));
    int *p = xCalloc((size_t)n + 1, sizeof(int));   /* p[j] = row matched to column j */
    int *way = xCalloc((size_t)n + 1, sizeof(int)); /* previous column on the path */
    bool *used = xMallocArray((size_t)n + 1, sizeof(bool));
    for (int i = 1; i <= n; i++) {
        p[0] = i;
        int j0 = 0;
        for (int j = 0; j <= n; j++) {
            minv[j] = INFINITY;
            used[j] = false;
        }
        do {
            used[j0] = true;
            int i0 = p[j0], j1 = 0;
            double delta = INFINITY;
            const float *row = w + (size_t)(i0 - 1) * n;
            for (int j = 1; j <= n; j++) {
                if (used[j])
                    continue;
                double cur = -(double)row[j - 1] - u[i0] - v[j];
                if (cur < minv[j]) {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for (int j = 0; j <= n; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            int j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    double total = 0.0;
    for (int j = 1; j <= n; j++) {
        match[p[j] - 1] = j - 1;
        total += w[(size_t)(p[j] - 1) * n + (j - 1)];
    }
    free(u);
    free(v);
    free(minv);
    free(p);
    free(way);
    free(used);
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
