/*
moescope - synth.c
moescope-synth: writes a SPEC §1 file for a synthetic FFN model whose neurons fall into
planted groups that fire together (core/Synth), with the ground truth in
/layers/<i>/planted_group, so partitions can be scored against known answers. Layers are
made one at a time and their activations written in blocks of rows, so memory stays
about one layer's weights plus one block.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Synth.h"
#include "io/Writer.h"
#include "util/XUtils.h"

#define PROG "moescope-synth"

typedef struct Args {
    SynthOptions o;
    const char *out;
    int layers;
    long seq_len;
    bool float16;
    int gzip;
    bool write_h;
} Args;

static void usage(FILE *f) {
    fprintf(f,
            "Usage: " PROG " -o OUT.h5 [options]\n"
            "Writes a synthetic FFN model (SPEC layout) whose neurons fall into planted groups\n"
            "that fire together; /layers/<i>/planted_group holds the true group of each neuron.\n"
            "\n"
            "  -o, --output FILE    the HDF5 file to write (required)\n"
            "      --d-model N      model width (default 768)\n"
            "      --d-ff N         hidden neurons per layer (default 3072)\n"
            "      --layers N       number of FFN layers (default 1)\n"
            "      --tokens N       tokens (rows of x and h) per layer (default 32768)\n"
            "      --groups N       planted groups per layer (default 32)\n"
            "      --topics N       topics per token, 0 = from the sparsity (default 0)\n"
            "      --sparsity Q     target fraction of inactive entries in [0, 1) (default 0.9)\n"
            "      --seed N         random seed (default 1)\n"
            "      --seq-len L      tokens per sequence in /seq_offsets (default 128)\n"
            "      --activation A   %s (default relu; the sparsity target\n"
            "                       holds for relu only)\n"
            "      --float16        store floats as float16 (values rounded before h is made)\n"
            "      --gzip N         compress with shuffle + gzip level N, 0..9 (default 0)\n"
            "      --no-h           omit h (readers compute it from x and the weights)\n"
            "  -h, --help           show this help\n"
            "  -V, --version        show the version\n",
            Activation_allNames());
}

static bool parseLong(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static _Noreturn void badOption(const char *opt, const char *value, const char *expect) {
    fprintf(stderr, PROG ": invalid %s '%s': expected %s\n", opt, value, expect);
    fprintf(stderr, "Try '" PROG " --help' for more information.\n");
    exit(2);
}

static int intArg(const char *opt, const char *value, long lo, long hi) {
    long v;
    if (!parseLong(value, lo, hi, &v)) {
        char expect[80];
        snprintf(expect, sizeof expect, "an integer in %ld..%ld", lo, hi);
        badOption(opt, value, expect);
    }
    return (int)v;
}

enum { OPT_D_MODEL = 256, OPT_D_FF, OPT_LAYERS, OPT_TOKENS, OPT_GROUPS, OPT_TOPICS,
       OPT_SPARSITY, OPT_SEED, OPT_SEQ_LEN, OPT_ACTIVATION, OPT_FLOAT16, OPT_GZIP, OPT_NO_H };

static void parseArgs(int argc, char **argv, Args *a) {
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"d-model", required_argument, NULL, OPT_D_MODEL},
        {"d-ff", required_argument, NULL, OPT_D_FF},
        {"layers", required_argument, NULL, OPT_LAYERS},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"groups", required_argument, NULL, OPT_GROUPS},
        {"topics", required_argument, NULL, OPT_TOPICS},
        {"sparsity", required_argument, NULL, OPT_SPARSITY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"seq-len", required_argument, NULL, OPT_SEQ_LEN},
        {"activation", required_argument, NULL, OPT_ACTIVATION},
        {"float16", no_argument, NULL, OPT_FLOAT16},
        {"gzip", required_argument, NULL, OPT_GZIP},
        {"no-h", no_argument, NULL, OPT_NO_H},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *a = (Args){.layers = 1, .seq_len = 128, .write_h = true};
    SynthOptions_default(&a->o);
    long v;
    char *end;
    int c;
    while ((c = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': a->out = optarg; break;
        case OPT_D_MODEL: a->o.d_model = intArg("--d-model", optarg, 1, 1 << 20); break;
        case OPT_D_FF: a->o.d_ff = intArg("--d-ff", optarg, 1, 1 << 20); break;
        case OPT_LAYERS: a->layers = intArg("--layers", optarg, 1, 10000); break;
        case OPT_TOKENS: a->o.n_tokens = intArg("--tokens", optarg, 1, INT_MAX); break;
        case OPT_GROUPS: a->o.n_groups = intArg("--groups", optarg, 1, 1 << 20); break;
        case OPT_TOPICS: a->o.topics_per_token = intArg("--topics", optarg, 0, 1 << 20); break;
        case OPT_SEQ_LEN: a->seq_len = intArg("--seq-len", optarg, 1, INT_MAX); break;
        case OPT_GZIP: a->gzip = intArg("--gzip", optarg, 0, 9); break;
        case OPT_SEED:
            if (!parseLong(optarg, 0, LONG_MAX, &v))
                badOption("--seed", optarg, "a non-negative integer");
            a->o.seed = (unsigned long)v;
            break;
        case OPT_SPARSITY:
            errno = 0;
            a->o.sparsity = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(a->o.sparsity >= 0 && a->o.sparsity < 1))
                badOption("--sparsity", optarg, "a number in [0, 1)");
            break;
        case OPT_ACTIVATION:
            if (!Activation_parse(optarg, &a->o.act))
                badOption("--activation", optarg, Activation_allNames());
            break;
        case OPT_FLOAT16: a->float16 = true; break;
        case OPT_NO_H: a->write_h = false; break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf(PROG " " PACKAGE_VERSION "\n"); exit(0);
        default:
            fprintf(stderr, "Try '" PROG " --help' for more information.\n");
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (!a->out) {
        fprintf(stderr, PROG ": no output file: give -o OUT.h5\n");
        exit(2);
    }
    char *cause = NULL;
    if (SynthOptions_check(&a->o, &cause) != MS_OK) {
        fprintf(stderr, PROG ": %s\n", cause);
        exit(2);
    }
}

/* ---- progress ---- */

typedef struct Progress {
    bool tty;
    double start, last;
    bool shown;
} Progress;

static void progressShow(Progress *p, int layer, int layers, long done, long total) {
    double now = XUtils_now();
    if (!p->tty || now - p->start < 1.0 || (now - p->last < 0.2 && done < total))
        return;
    p->last = now;
    p->shown = true;
    fprintf(stderr, "\r" PROG ": layer %d/%d: %ld/%ld tokens", layer + 1, layers, done, total);
}

static void progressEnd(Progress *p) {
    if (p->shown)
        fputc('\n', stderr);
}

/* ---- writing ---- */

static char *describe(const Args *a) {
    const SynthOptions *o = &a->o;
    return xAsprintf(
        PROG " " PACKAGE_VERSION ": a synthetic FFN model with planted co-firing groups.\n"
        "layers=%d d_model=%d d_ff=%d tokens=%ld groups=%d topics_per_token=%d "
        "sparsity=%g seed=%lu activation=%s seq_len=%ld storage=%s gzip=%d h=%s\n"
        "Each token draws %d distinct topics (the same tokens in every layer); its x is the "
        "sum of their directions with random amplitudes plus noise. Each neuron belongs to "
        "one group (/layers/<i>/planted_group); group g's rows point along topic g, so group "
        "g fires on the tokens that drew topic g. b_in is set per neuron from the sparsity "
        "quantile of its pre-activation. /tokens holds each token's first topic.\n",
        a->layers, o->d_model, o->d_ff, o->n_tokens, o->n_groups, SynthOptions_topics(o),
        o->sparsity, o->seed, Activation_name(o->act), a->seq_len,
        a->float16 ? "float16" : "float32", a->gzip, a->write_h ? "yes" : "no",
        SynthOptions_topics(o));
}

static MsStatus writeRoot(Writer *w, const Args *a, char **cause) {
    MsStatus st = Writer_setAttrString(w, "/", "model_name", PROG, cause);
    char *text = describe(a);
    if (st == MS_OK)
        st = Writer_writeString(w, "/text", text, cause);
    free(text);
    long T = a->o.n_tokens, n_seq = (T + a->seq_len - 1) / a->seq_len;
    int64_t *offs = xMallocArray((size_t)n_seq + 1, sizeof *offs);
    for (long s = 0; s < n_seq; s++)
        offs[s] = (int64_t)(s * a->seq_len);
    offs[n_seq] = T;
    if (st == MS_OK)
        st = Writer_writeInt64(w, "/seq_offsets", offs, n_seq + 1, cause);
    free(offs);
    return st;
}

static MsStatus writeWeights(Writer *w, const char *g, const SynthStream *s, WriterOptions f,
                             int layer, char **cause) {
    const FfnWeights *fw = SynthStream_weights(s);
    const long d = fw->d_model, N = fw->d_ff;
    char *name = xAsprintf("synth.layer.%d", layer);
    char *p[6];
    const char *member[] = {"w_in", "b_in", "w_out", "b_out", "planted_group"};
    for (int i = 0; i < 5; i++)
        p[i] = xAsprintf("%s/%s", g, member[i]);
    MsStatus st = Writer_makeGroup(w, g, cause);
    if (st == MS_OK)
        st = Writer_setAttrString(w, g, "name", name, cause);
    if (st == MS_OK)
        st = Writer_setAttrString(w, g, "activation", Activation_name(fw->act), cause);
    if (st == MS_OK)
        st = Writer_writeFloats(w, p[0], fw->w_in, N, d, f, cause);
    if (st == MS_OK)
        st = Writer_writeFloats(w, p[1], fw->b_in, N, 0, f, cause);
    if (st == MS_OK)
        st = Writer_writeFloats(w, p[2], fw->w_out, d, N, f, cause);
    if (st == MS_OK)
        st = Writer_writeFloats(w, p[3], fw->b_out, d, 0, f, cause);
    if (st == MS_OK)
        st = Writer_writeInt32(w, p[4], SynthStream_planted(s), N, cause);
    for (int i = 0; i < 5; i++)
        free(p[i]);
    free(name);
    return st;
}

/* x and h of one layer in blocks of rows; topic (layer 0 only, else NULL) gets /tokens. */
static MsStatus writeActivations(Writer *w, const char *g, SynthStream *s, const Args *a,
                                 WriterOptions f, int layer, int32_t *topic, char **cause) {
    const long d = a->o.d_model, N = a->o.d_ff, T = a->o.n_tokens;
    long block = (4L << 20) / (d + N);
    block = block < 1 ? 1 : block > T ? T : block;
    float *x = tryMallocArray((size_t)(block * d), sizeof *x);
    float *h = a->write_h ? tryMallocArray((size_t)(block * N), sizeof *h) : NULL;
    char *px = xAsprintf("%s/x", g), *ph = xAsprintf("%s/h", g);
    MsStatus st = MS_OK;
    if (!x || (a->write_h && !h)) {
        setCause(cause, "out of memory for a block of %ld tokens", block);
        st = MS_ERR_NOMEM;
    }
    if (st == MS_OK)
        st = Writer_beginRows(w, px, d, f, cause);
    if (st == MS_OK && a->write_h)
        st = Writer_beginRows(w, ph, N, f, cause);
    Progress prog = {.tty = isatty(STDERR_FILENO), .start = XUtils_now()};
    for (long t = 0; st == MS_OK && t < T; t += block) {
        long rows = T - t < block ? T - t : block;
        st = SynthStream_tokens(s, t, rows, x, h, topic ? topic + t : NULL);
        if (st != MS_OK)
            setCause(cause, "out of memory computing h");
        if (st == MS_OK)
            st = Writer_appendRows(w, px, x, rows, cause);
        if (st == MS_OK && h)
            st = Writer_appendRows(w, ph, h, rows, cause);
        progressShow(&prog, layer, a->layers, t + rows, T);
    }
    progressEnd(&prog);
    free(px);
    free(ph);
    free(x);
    free(h);
    return st;
}

static MsStatus writeLayer(Writer *w, const Args *a, int layer, int32_t *topic,
                           char **cause) {
    SynthStream *s = NULL;
    MsStatus st = SynthStream_new(&s, &a->o, layer, cause);
    if (st != MS_OK)
        return st;
    if (a->float16)
        SynthStream_useHalfPrecision(s);
    WriterOptions f = {a->float16 ? WRITER_F16 : WRITER_F32, a->gzip};
    char *g = xAsprintf("/layers/%d", layer);
    st = writeWeights(w, g, s, f, layer, cause);
    if (st == MS_OK)
        st = writeActivations(w, g, s, a, f, layer, topic, cause);
    free(g);
    SynthStream_delete(s);
    return st;
}

static MsStatus writeModel(const Args *a, char **cause) {
    Writer *w = NULL;
    MsStatus st = Writer_create(&w, a->out, cause);
    if (st != MS_OK)
        return st;
    int32_t *topic = tryMallocArray((size_t)a->o.n_tokens, sizeof *topic);
    if (!topic) {
        setCause(cause, "out of memory for %ld token ids", a->o.n_tokens);
        st = MS_ERR_NOMEM;
    }
    if (st == MS_OK)
        st = writeRoot(w, a, cause);
    for (int i = 0; st == MS_OK && i < a->layers; i++)
        st = writeLayer(w, a, i, i == 0 ? topic : NULL, cause);
    if (st == MS_OK)
        st = Writer_writeInt32(w, "/tokens", topic, a->o.n_tokens, cause);
    free(topic);
    if (st != MS_OK) {
        Writer_delete(w);
        return st;
    }
    return Writer_close(w, cause);
}

int main(int argc, char **argv) {
    Args a;
    parseArgs(argc, argv, &a);
    char *cause = NULL;
    MsStatus st = writeModel(&a, &cause);
    if (st != MS_OK) {
        fprintf(stderr, PROG ": %s\n", cause ? cause : Status_name(st));
        free(cause);
        return Status_exitCode(st);
    }
    return 0;
}
