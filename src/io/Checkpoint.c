/*
moescope - io/Checkpoint.c
llama2.c checkpoint reader: header validation, exact size check, one fread of the float
payload, then views on the tensors in the order of llama2.c's memory_map_weights().
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/Checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/XUtils.h"

#define HEADER_INTS 7
#define HEADER_BYTES (HEADER_INTS * 4)

/* One tensor of the payload, in file order. */
typedef struct Tensor {
    const char *name;
    int64_t count;
    const float **view; /* NULL: skipped (the legacy RoPE tables) */
} Tensor;

enum { N_TENSORS = 14 };

static const char *const headerNames[HEADER_INTS] = {
    "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len",
};

static int32_t fromLittleEndian(int32_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (int32_t)__builtin_bswap32((uint32_t)v);
#else
    return v;
#endif
}

static void floatsFromLittleEndian(float *data, long n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (long i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &data[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&data[i], &u, 4);
    }
#else
    (void)data;
    (void)n;
#endif
}

/* Checks the header values for what run.c's forward pass needs. */
static MsStatus checkHeader(const char *path, const int32_t h[HEADER_INTS], char **cause) {
    for (int i = 0; i < HEADER_INTS; i++) {
        if (i == 5 ? h[i] == 0 : h[i] <= 0) {
            setCause(cause, "%s: bad llama2.c checkpoint header: %s = %d, expected a %s number",
                     path, headerNames[i], h[i], i == 5 ? "non-zero" : "positive");
            return MS_ERR_FORMAT;
        }
    }
    if (h[5] == INT32_MIN) {
        setCause(cause, "%s: bad llama2.c checkpoint header: vocab_size = %d", path, h[5]);
        return MS_ERR_FORMAT;
    }
    int dim = h[0], n_heads = h[3], n_kv_heads = h[4];
    if (dim % n_heads != 0) {
        setCause(cause,
                 "%s: bad llama2.c checkpoint header: dim = %d is not a multiple of n_heads = %d",
                 path, dim, n_heads);
        return MS_ERR_FORMAT;
    }
    if (n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
        setCause(cause,
                 "%s: bad llama2.c checkpoint header: n_heads = %d is not a multiple of "
                 "n_kv_heads = %d",
                 path, n_heads, n_kv_heads);
        return MS_ERR_FORMAT;
    }
    if ((dim / n_heads) % 2 != 0) {
        setCause(cause,
                 "%s: bad llama2.c checkpoint header: head size dim / n_heads = %d is odd, "
                 "RoPE needs pairs",
                 path, dim / n_heads);
        return MS_ERR_FORMAT;
    }
    return MS_OK;
}

/* Fills the tensor table from a valid header; false when the total overflows int64. */
static bool tensorTable(Checkpoint *c, Tensor t[N_TENSORS], int64_t *total) {
    int64_t dim = c->dim, hidden = c->hidden_dim, L = c->n_layers, vocab = c->vocab_size;
    int64_t head_size = dim / c->n_heads;
    int64_t kv_dim = dim * c->n_kv_heads / c->n_heads;
    int64_t rope = 0, dd = 0, kvd = 0, hd = 0, ld = 0, vd = 0;
    if (__builtin_mul_overflow(dim, dim, &dd) || __builtin_mul_overflow(kv_dim, dim, &kvd) ||
        __builtin_mul_overflow(hidden, dim, &hd) || __builtin_mul_overflow(L, dim, &ld) ||
        __builtin_mul_overflow(vocab, dim, &vd) ||
        __builtin_mul_overflow((int64_t)c->seq_len, head_size / 2, &rope))
        return false;
    int64_t Ldd = 0, Lkvd = 0, Lhd = 0;
    if (__builtin_mul_overflow(L, dd, &Ldd) || __builtin_mul_overflow(L, kvd, &Lkvd) ||
        __builtin_mul_overflow(L, hd, &Lhd))
        return false;
    Tensor table[N_TENSORS] = {
        {"token_embedding", vd, &c->token_embedding},
        {"rms_att", ld, &c->rms_att},
        {"wq", Ldd, &c->wq},
        {"wk", Lkvd, &c->wk},
        {"wv", Lkvd, &c->wv},
        {"wo", Ldd, &c->wo},
        {"rms_ffn", ld, &c->rms_ffn},
        {"w1", Lhd, &c->w1},
        {"w2", Lhd, &c->w2},
        {"w3", Lhd, &c->w3},
        {"rms_final", dim, &c->rms_final},
        {"freq_cis_real", rope, NULL},
        {"freq_cis_imag", rope, NULL},
        {"wcls", c->shared_classifier ? 0 : vd, &c->wcls},
    };
    int64_t sum = 0;
    for (int i = 0; i < N_TENSORS; i++) {
        t[i] = table[i];
        if (__builtin_add_overflow(sum, t[i].count, &sum))
            return false;
    }
    *total = sum;
    return true;
}

/* Points the views into data and checks every used weight is finite. */
static MsStatus mapTensors(Checkpoint *c, const Tensor t[N_TENSORS], const char *path,
                           char **cause) {
    const float *p = c->data;
    for (int i = 0; i < N_TENSORS; i++) {
        if (t[i].view) {
            *t[i].view = p;
            for (int64_t k = 0; k < t[i].count; k++) {
                if (!isfinite(p[k])) {
                    setCause(cause, "%s: weight %s[%lld] is not finite (%g)", path, t[i].name,
                             (long long)k, (double)p[k]);
                    return MS_ERR_FORMAT;
                }
            }
        }
        p += t[i].count;
    }
    if (c->shared_classifier)
        c->wcls = c->token_embedding;
    return MS_OK;
}

static MsStatus readHeader(FILE *f, const char *path, Checkpoint *c, int64_t *file_size,
                           char **cause) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        setCause(cause, "%s: cannot stat: %s", path, strerror(errno));
        return MS_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        setCause(cause, "%s: not a regular file", path);
        return MS_ERR_IO;
    }
    *file_size = (int64_t)st.st_size;
    if (*file_size < HEADER_BYTES) {
        setCause(cause,
                 "%s: file too short for a llama2.c checkpoint (%lld bytes, the header alone "
                 "is %d)",
                 path, (long long)*file_size, HEADER_BYTES);
        return MS_ERR_FORMAT;
    }
    int32_t h[HEADER_INTS];
    if (fread(h, 4, HEADER_INTS, f) != HEADER_INTS) {
        setCause(cause, "%s: cannot read the header: %s", path,
                 ferror(f) ? strerror(errno) : "unexpected end of file");
        return MS_ERR_IO;
    }
    for (int i = 0; i < HEADER_INTS; i++)
        h[i] = fromLittleEndian(h[i]);
    MsStatus st2 = checkHeader(path, h, cause);
    if (st2 != MS_OK)
        return st2;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->shared_classifier = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : -h[5];
    c->seq_len = h[6];
    return MS_OK;
}

static MsStatus readPayload(FILE *f, const char *path, Checkpoint *c, int64_t file_size,
                            char **cause) {
    Tensor t[N_TENSORS];
    int64_t total = 0;
    bool fits = tensorTable(c, t, &total) && total <= (INT64_MAX - HEADER_BYTES) / 4;
    if (!fits || HEADER_BYTES + 4 * total != file_size) {
        char need[32] = "more than 2^63";
        if (fits)
            snprintf(need, sizeof need, "%lld", (long long)(HEADER_BYTES + 4 * total));
        setCause(cause,
                 "%s: file is %lld bytes but a llama2.c checkpoint with dim %d, hidden_dim %d, "
                 "n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d%s, seq_len %d has "
                 "%s bytes: truncated or not such a checkpoint",
                 path, (long long)file_size, c->dim, c->hidden_dim, c->n_layers, c->n_heads,
                 c->n_kv_heads, c->vocab_size, c->shared_classifier ? "" : " (unshared)",
                 c->seq_len, need);
        return MS_ERR_FORMAT;
    }
    c->n_floats = (long)total;
    c->data = tryMallocArray((size_t)total, sizeof(float));
    if (!c->data) {
        setCause(cause, "%s: out of memory for %lld bytes of weights", path,
                 (long long)(4 * total));
        return MS_ERR_NOMEM;
    }
    if (fread(c->data, sizeof(float), (size_t)total, f) != (size_t)total) {
        setCause(cause, "%s: cannot read the weights: %s", path,
                 ferror(f) ? strerror(errno) : "unexpected end of file");
        return MS_ERR_IO;
    }
    floatsFromLittleEndian(c->data, c->n_floats);
    return mapTensors(c, t, path, cause);
}

MsStatus Checkpoint_new(Checkpoint **out, const char *path, char **cause) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        setCause(cause, "%s: cannot open: %s", path, strerror(errno));
        return MS_ERR_IO;
    }
    Checkpoint *c = xCalloc(1, sizeof(*c));
    int64_t file_size = 0;
    MsStatus st = readHeader(f, path, c, &file_size, cause);
    if (st == MS_OK)
        st = readPayload(f, path, c, file_size, cause);
    fclose(f);
    if (st != MS_OK) {
        Checkpoint_delete(c);
        return st;
    }
    *out = c;
    return MS_OK;
}

void Checkpoint_delete(Checkpoint *this) {
    if (!this)
        return;
    free(this->data);
    free(this);
}
