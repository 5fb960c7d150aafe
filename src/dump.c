/*
moescope - dump.c
moescope-dump: runs a llama2.c checkpoint on text it samples itself (from BOS, with a
seed and a temperature; there is no tokenizer, so token ids are stored) and writes the
FFN weights and the recorded FFN inputs x (and hidden activations h) of every layer in
the HDF5 layout of SPEC §1, ready for moescope.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Ffn.h"
#include "core/Llama.h"
#include "io/Checkpoint.h"
#include "io/Writer.h"
#include "util/Status.h"
#include "util/XUtils.h"

#define PROGRAM "moescope-dump"
#define EXIT_USAGE 2

typedef struct Options {
    const char *checkpoint;
    const char *output;
    LlamaRun run;
    bool float16;
    int gzip;
} Options;

/* State of the sink that streams sequences into the file. */
typedef struct DumpCtx {
    Writer *writer;
    const LlamaConfig *cfg;
    const Options *opt;
    int32_t *tokens; /* grows per sequence */
    long n_tokens;
    long cap_tokens;
    int64_t *offsets; /* [n_seqs + 1] */
    double entropy_sum;
    double t_start;
    bool progress_shown;
} DumpCtx;

static void usage(FILE *f) {
    fprintf(f,
            "Usage: " PROGRAM " [options] CHECKPOINT.bin -o OUT.h5\n"
            "Runs a llama2.c checkpoint (e.g. data/stories260K.bin) on text it samples from\n"
            "BOS (token 1) and writes, per layer, the SwiGLU FFN weights (w_gate = w1,\n"
            "w_in = w3, w_out = w2, activation silu) and the recorded FFN inputs x (after the\n"
            "FFN RMSNorm) and hidden activations h, plus /tokens, /seq_offsets and /text, in\n"
            "moescope's HDF5 layout. A sequence ends at --len tokens or when the model emits\n"
            "BOS or EOS (token 1 or 2).\n"
            "\n"
            "Options:\n"
            "  -o, --output FILE     the HDF5 file to write (required)\n"
            "  -n, --seqs N          number of sequences (default 64)\n"
            "  -l, --len L           maximum tokens per sequence, BOS included, at most the\n"
            "                        model's seq_len (default 256)\n"
            "  -s, --seed S          sampling seed, a non-negative integer (default 42)\n"
            "  -t, --temperature T   sampling temperature >= 0; 0 takes the most likely token\n"
            "                        (default 1.0)\n"
            "      --float16         store x and h as float16 (weights stay float32)\n"
            "      --no-h            do not store h (moescope recomputes it from x)\n"
            "      --gzip N          compress datasets with gzip level N, 1..9 (default 0:\n"
            "                        contiguous, uncompressed)\n"
            "  -h, --help            show this help\n"
            "  -V, --version         show the version\n"
            "\n"
            "Exit status: 0 on success, 2 for bad options or a bad checkpoint, 1 otherwise.\n");
}

static bool parseLong(const char *s, long min, long max, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int badOption(const char *name, const char *value, const char *expected) {
    fprintf(stderr, PROGRAM ": %s '%s': expected %s (see --help)\n", name, value, expected);
    return EXIT_USAGE;
}

/* Applies one option; returns -1 when fine, else the exit status. */
static int applyOption(int c, const char *arg, Options *o) {
    long v = 0;
    switch (c) {
    case 'o': o->output = arg; return -1;
    case 'n':
        if (!parseLong(arg, 1, 1000000, &v))
            return badOption("--seqs", arg, "an integer from 1 to 1000000");
        o->run.n_seqs = (int)v;
        return -1;
    case 'l':
        if (!parseLong(arg, 1, INT32_MAX, &v))
            return badOption("--len", arg, "a positive integer");
        o->run.max_len = (int)v;
        return -1;
    case 's': {
        char *end = NULL;
        errno = 0;
        unsigned long long s = strtoull(arg, &end, 10);
        if (errno != 0 || end == arg || *end != '\0' || arg[0] == '-')
            return badOption("--seed", arg, "a non-negative integer");
        o->run.seed = (uint64_t)s;
        return -1;
    }
    case 't': {
        char *end = NULL;
        double t = strtod(arg, &end);
        if (end == arg || *end != '\0' || !isfinite(t) || t < 0.0 || t > 1e6)
            return badOption("--temperature", arg, "a number >= 0");
        o->run.temperature = (float)t;
        return -1;
    }
    case 'F': o->float16 = true; return -1;
    case 'H': o->run.record_h = false; return -1;
    case 'z':
        if (!parseLong(arg, 0, 9, &v))
            return badOption("--gzip", arg, "a level from 0 to 9");
        o->gzip = (int)v;
        return -1;
    case 'h': usage(stdout); return 0;
    case 'V': printf(PROGRAM " (moescope) " PACKAGE_VERSION "\n"); return 0;
    default: return EXIT_USAGE;
    }
}

/* Parses argv into o; returns -1 to go on, else the exit status. */
static int parseArgs(int argc, char **argv, Options *o) {
    static const struct option longOpts[] = {
        {"output", required_argument, NULL, 'o'},
        {"seqs", required_argument, NULL, 'n'},
        {"len", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {"temperature", required_argument, NULL, 't'},
        {"float16", no_argument, NULL, 'F'},
        {"no-h", no_argument, NULL, 'H'},
        {"gzip", required_argument, NULL, 'z'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    *o = (Options){
        .run = {.n_seqs = 64, .max_len = 256, .seed = 42, .temperature = 1.0f,
                .record_h = true},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:n:l:s:t:hV", longOpts, NULL)) != -1) {
        if (c == '?' || c == ':') {
            const char *what = argv[optind - 1];
            fprintf(stderr, PROGRAM ": %s '%s' (see --help)\n",
                    c == '?' ? "unknown option" : "missing value for option", what);
            return EXIT_USAGE;
        }
        int rc = applyOption(c, optarg, o);
        if (rc >= 0)
            return rc;
    }
    if (optind + 1 != argc || !o->output) {
        fprintf(stderr, PROGRAM ": expected one CHECKPOINT.bin and -o OUT.h5 (see --help)\n");
        return EXIT_USAGE;
    }
    o->checkpoint = argv[optind];
    return -1;
}

static LlamaConfig configOf(const Checkpoint *c) {
    return (LlamaConfig){
        .dim = c->dim,
        .hidden_dim = c->hidden_dim,
        .n_layers = c->n_layers,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .vocab_size = c->vocab_size,
        .seq_len = c->seq_len,
    };
}

static LlamaWeights weightsOf(const Checkpoint *c) {
    return (LlamaWeights){
        .token_embedding = c->token_embedding,
        .rms_att = c->rms_att,
        .wq = c->wq,
        .wk = c->wk,
        .wv = c->wv,
        .wo = c->wo,
        .rms_ffn = c->rms_ffn,
        .w1 = c->w1,
        .w2 = c->w2,
        .w3 = c->w3,
        .rms_final = c->rms_final,
        .wcls = c->wcls,
    };
}

/* "stories260K" from ".../stories260K.bin". */
static char *modelName(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char *name = xStrdup(base);
    size_t n = strlen(name);
    if (n > 4 && strcmp(name + n - 4, ".bin") == 0)
        name[n - 4] = '\0';
    return name;
}

/* Weights, attributes and the empty extendable x (and h) of every layer. */
static MsStatus writeLayers(Writer *w, const Checkpoint *ck, const Options *o, char **cause) {
    WriterOptions wopt = {.storage = WRITER_F32, .gzip = o->gzip};
    WriterOptions aopt = {.storage = o->float16 ? WRITER_F16 : WRITER_F32, .gzip = o->gzip};
    long dim = ck->dim, hidden = ck->hidden_dim;
    MsStatus st = MS_OK;
    for (int l = 0; st == MS_OK && l < ck->n_layers; l++) {
        size_t ofs = (size_t)l * (size_t)dim * (size_t)hidden;
        char path[64], name[64];
        snprintf(name, sizeof name, "layers.%d.feed_forward", l);
        snprintf(path, sizeof path, "/layers/%d", l);
        char *p_gate = xAsprintf("%s/w_gate", path), *p_in = xAsprintf("%s/w_in", path);
        char *p_out = xAsprintf("%s/w_out", path), *p_x = xAsprintf("%s/x", path);
        char *p_h = xAsprintf("%s/h", path);
        st = Writer_makeGroup(w, path, cause);
        if (st == MS_OK)
            st = Writer_setAttrString(w, path, "name", name, cause);
        if (st == MS_OK)
            st = Writer_setAttrString(w, path, "activation", "silu", cause);
        if (st == MS_OK)
            st = Writer_writeFloats(w, p_gate, ck->w1 + ofs, hidden, dim, wopt, cause);
        if (st == MS_OK)
            st = Writer_writeFloats(w, p_in, ck->w3 + ofs, hidden, dim, wopt, cause);
        if (st == MS_OK)
            st = Writer_writeFloats(w, p_out, ck->w2 + ofs, dim, hidden, wopt, cause);
        if (st == MS_OK)
            st = Writer_beginRows(w, p_x, dim, aopt, cause);
        if (st == MS_OK && o->run.record_h)
            st = Writer_beginRows(w, p_h, hidden, aopt, cause);
        free(p_gate);
        free(p_in);
        free(p_out);
        free(p_x);
        free(p_h);
    }
    return st;
}

static void showProgress(DumpCtx *d, int done) {
    if (!isatty(STDERR_FILENO) || XUtils_now() - d->t_start < 1.0)
        return;
    fprintf(stderr, "\r" PROGRAM ": sequence %d/%d, %ld tokens", done, d->opt->run.n_seqs,
            d->n_tokens);
    d->progress_shown = true;
}

/* LlamaSink: appends one sequence's rows to every layer and keeps its tokens. */
static MsStatus appendSequence(void *ctx, const LlamaSeq *seq, char **cause) {
    DumpCtx *d = ctx;
    MsStatus st = MS_OK;
    for (int l = 0; st == MS_OK && l < d->cfg->n_layers; l++) {
        char path[64];
        snprintf(path, sizeof path, "/layers/%d/x", l);
        st = Writer_appendRows(d->writer, path, seq->x + l * seq->x_stride, seq->n, cause);
        if (st == MS_OK && seq->h) {
            snprintf(path, sizeof path, "/layers/%d/h", l);
            st = Writer_appendRows(d->writer, path, seq->h + l * seq->h_stride, seq->n, cause);
        }
    }
    if (st != MS_OK)
        return st;
    if (d->n_tokens + seq->n > d->cap_tokens) {
        d->cap_tokens = 2 * (d->n_tokens + seq->n);
        d->tokens = xReallocArray(d->tokens, (size_t)d->cap_tokens, sizeof(int32_t));
    }
    memcpy(d->tokens + d->n_tokens, seq->tokens, (size_t)seq->n * sizeof(int32_t));
    d->n_tokens += seq->n;
    d->offsets[seq->index + 1] = d->n_tokens;
    d->entropy_sum += seq->entropy_sum;
    showProgress(d, seq->index + 1);
    return MS_OK;
}

/* "1.0" rather than "1" for a round temperature, as a person would write it. */
static void formatTemperature(char *buf, size_t size, float t) {
    snprintf(buf, size, "%g", (double)t);
    if (!strpbrk(buf, ".e"))
        strncat(buf, ".0", size - strlen(buf) - 1);
}

static MsStatus writeTrailer(DumpCtx *d, const char *model, char **cause) {
    const Options *o = d->opt;
    const char *base = strrchr(o->checkpoint, '/');
    base = base ? base + 1 : o->checkpoint;
    char temp[32];
    formatTemperature(temp, sizeof temp, o->run.temperature);
    char *text = xAsprintf(
        PROGRAM ": sampled from %s (llama2.c), seed %llu, temperature %s, %d sequences of at "
        "most %d tokens from BOS; %ld tokens, mean next-token entropy %.3f nats",
        base, (unsigned long long)o->run.seed, temp, o->run.n_seqs, o->run.max_len,
        d->n_tokens, d->entropy_sum / (double)d->n_tokens);
    MsStatus st = Writer_writeInt32(d->writer, "/tokens", d->tokens, d->n_tokens, cause);
    if (st == MS_OK)
        st = Writer_writeInt64(d->writer, "/seq_offsets", d->offsets, o->run.n_seqs + 1, cause);
    if (st == MS_OK)
        st = Writer_writeString(d->writer, "/text", text, cause);
    if (st == MS_OK)
        st = Writer_setAttrString(d->writer, "/", "model_name", model, cause);
    free(text);
    return st;
}

static MsStatus dump(const Options *o, const Checkpoint *ck, char **cause) {
    if (o->run.max_len > ck->seq_len) {
        setCause(cause, "--len %d is longer than the model's seq_len %d", o->run.max_len,
                 ck->seq_len);
        return MS_ERR_RANGE;
    }
    LlamaConfig cfg = configOf(ck);
    LlamaWeights wts = weightsOf(ck);
    Llama *llama = NULL;
    MsStatus st = Llama_new(&llama, &cfg, &wts, cause);
    if (st != MS_OK)
        return st;
    DumpCtx d = {.cfg = &cfg, .opt = o, .t_start = XUtils_now()};
    d.offsets = xCalloc((size_t)o->run.n_seqs + 1, sizeof(int64_t));
    char *model = modelName(o->checkpoint);
    st = Writer_create(&d.writer, o->output, cause);
    if (st == MS_OK)
        st = writeLayers(d.writer, ck, o, cause);
    if (st == MS_OK)
        st = Llama_generate(llama, &o->run, appendSequence, &d, NULL, cause);
    if (d.progress_shown)
        fputc('\n', stderr);
    if (st == MS_OK)
        st = writeTrailer(&d, model, cause);
    if (st == MS_OK) {
        st = Writer_close(d.writer, cause);
        d.writer = NULL;
    }
    Writer_delete(d.writer);
    free(model);
    free(d.tokens);
    free(d.offsets);
    Llama_delete(llama);
    return st;
}

int main(int argc, char **argv) {
    Options o;
    int rc = parseArgs(argc, argv, &o);
    if (rc >= 0)
        return rc;
    Ffn_useOneBlasThread();
    char *cause = NULL;
    Checkpoint *ck = NULL;
    MsStatus st = Checkpoint_new(&ck, o.checkpoint, &cause);
    if (st == MS_OK)
        st = dump(&o, ck, &cause);
    Checkpoint_delete(ck);
    if (st != MS_OK) {
        fprintf(stderr, PROGRAM ": %s\n", cause ? cause : Status_name(st));
        free(cause);
        return Status_exitCode(st);
    }
    return 0;
}
