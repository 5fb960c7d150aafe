/*
moescope - main.c
Command line entry point: parses options, opens the files and hands over to the batch
run or the per-layer summary. The only place that calls exit().
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Ffn.h"
#include "io/Dump.h"
#include "ui/Batch.h"
#include "jobs/KnobTable.h"
#include "jobs/Summary.h"
#include "ui/Ui.h"
#include "util/Args.h"
#include "util/XUtils.h"

#define DEFAULT_DATA "stories260K.h5"

static const char usageText[] =
    "usage: moescope [OPTION...] [FILE.h5...]\n"
    "       moescope --batch [OPTION...] [FILE.h5...] --out RESULTS.csv\n"
    "\n"
    "Can a dense Transformer's feed-forward layers run as a Mixture of Experts? moescope\n"
    "loads FFN weights and activation dumps (HDF5, see moescope(5)) and reports neuron\n"
    "sparsity, expert partitions, router accuracy and cost estimates per layer.\n"
    "With no FILE it opens the default data, " DEFAULT_DATA " (stories260K activations).\n"
    "A layer's members are looked up in the files in the order given.\n"
    "\n"
    "Terminal UI (the default when standard input and output are terminals):\n"
    "      --set NAME=VALUE     start with a knob set (repeatable): E, k, strategy,\n"
    "                           router, tau, target, seed, test; e.g. --set E=16\n"
    "      --ascii              ASCII characters only (also when the locale is not UTF-8)\n"
    "      --no-color           no colours (also when NO_COLOR is set and not empty)\n"
    "  Press ? or F1 in the UI for every key; q quits.\n"
    "\n"
    "Summary (when standard input or output is not a terminal):\n"
    "      --target-sparsity Q  report the tau that reaches sparsity Q of |h| (0.9)\n"
    "\n"
    "Batch mode, tidy CSV (SPEC section 6):\n"
    "  -b, --batch              compute every metric for the grid below and write CSV\n"
    "  -o, --out FILE           CSV output (default: standard output)\n"
    "  -E, --experts LIST       expert counts, e.g. 8,16,32 (default 8)\n"
    "  -k, --k LIST             experts per token, e.g. 1,2,4 (default 1,2)\n"
    "  -s, --strategy LIST      random,param,coact,file (default random,param,coact)\n"
    "  -r, --router LIST        oracle,similarity,mlp,sigmoid,topk_neurons\n"
    "                           (default oracle,similarity,mlp,sigmoid,topk_neurons)\n"
    "  -t, --tau LIST           activity thresholds (default 0)\n"
    "      --sparsity-q LIST    also report tau_for_sparsity_<q> (default 0.5,0.8,0.9)\n"
    "  -l, --layers RANGES      layer indices, e.g. 0-3,7 (default all)\n"
    "      --seed N             seed of partitions and the mlp router (default 0)\n"
    "      --test-fraction F    held-out fraction of the data (default 0.1)\n"
    "      --train              also report router metrics on the train split\n"
    "      --meo-block L        MEO block length without /seq_offsets (default 64)\n"
    "      --mlp-epochs N       mlp router epochs (default 30)\n"
    "      --no-measure         skip the measured speedup of the MoE kernel\n"
    "      --partitions FILE    save the partitions used to FILE (HDF5)\n"
    "      --figures DIR        also draw the figures into DIR (created if missing)\n"
    "      --figure-format LIST svg,pdf,png (default pdf,png)\n"
    "      --threads N          worker threads (default 2; also the UI's)\n"
    "  -q, --quiet              no progress line on standard error\n"
    "\n"
    "  -h, --help               show this help and exit\n"
    "  -V, --version            show the version and exit\n"
    "\n"
    "Exit status: 0 success, 1 internal failure (e.g. out of memory), 2 bad input or\n"
    "bad option value.\n";

enum {
    OPT_TARGET = 256,
    OPT_SPARSITY_Q,
    OPT_SEED,
    OPT_TEST_FRACTION,
    OPT_TRAIN,
    OPT_MEO_BLOCK,
    OPT_MLP_EPOCHS,
    OPT_NO_MEASURE,
    OPT_PARTITIONS,
    OPT_FIGURES,
    OPT_FIGURE_FORMAT,
    OPT_THREADS,
    OPT_SET,
    OPT_ASCII,
    OPT_NO_COLOR,
};

static const struct option longOptions[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"batch", no_argument, NULL, 'b'},
    {"out", required_argument, NULL, 'o'},
    {"experts", required_argument, NULL, 'E'},
    {"k", required_argument, NULL, 'k'},
    {"strategy", required_argument, NULL, 's'},
    {"router", required_argument, NULL, 'r'},
    {"tau", required_argument, NULL, 't'},
    {"layers", required_argument, NULL, 'l'},
    {"quiet", no_argument, NULL, 'q'},
    {"target-sparsity", required_argument, NULL, OPT_TARGET},
    {"sparsity-q", required_argument, NULL, OPT_SPARSITY_Q},
    {"seed", required_argument, NULL, OPT_SEED},
    {"test-fraction", required_argument, NULL, OPT_TEST_FRACTION},
    {"train", no_argument, NULL, OPT_TRAIN},
    {"meo-block", required_argument, NULL, OPT_MEO_BLOCK},
    {"mlp-epochs", required_argument, NULL, OPT_MLP_EPOCHS},
    {"no-measure", no_argument, NULL, OPT_NO_MEASURE},
    {"partitions", required_argument, NULL, OPT_PARTITIONS},
    {"figures", required_argument, NULL, OPT_FIGURES},
    {"figure-format", required_argument, NULL, OPT_FIGURE_FORMAT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"set", required_argument, NULL, OPT_SET},
    {"ascii", no_argument, NULL, OPT_ASCII},
    {"no-color", no_argument, NULL, OPT_NO_COLOR},
    {NULL, 0, NULL, 0},
};

typedef struct Cli {
    bool batch;
    double target;
    BatchConfig config;
    bool ascii, no_color;   /* UI */
    const char **sets;      /* UI: --set NAME=VALUE */
    int n_sets;
} Cli;

_Noreturn static void die(int status, char *cause) {
    fprintf(stderr, "moescope: %s\n", cause ? cause : "unknown error");
    free(cause);
    exit(status);
}

/* Replaces a config list by a freshly parsed one, keeping the old list on failure. */
static void replaceInts(int **list, int *count, MsStatus st, int *parsed, int n) {
    if (st == MS_OK) {
        free(*list);
        *list = parsed;
        *count = n;
    }
}

static void replaceDoubles(double **list, int *count, MsStatus st, double *parsed, int n) {
    if (st == MS_OK) {
        free(*list);
        *list = parsed;
        *count = n;
    }
}

/* Applies one option to cli; returns a status with *cause on a bad value. */
static MsStatus applyOption(Cli *cli, int opt, const char *arg, char **cause) {
    BatchConfig *c = &cli->config;
    long v = 0;
    int *ints = NULL, n = 0;
    double *doubles = NULL;
    MsStatus st = MS_OK;
    switch (opt) {
    case 'b': cli->batch = true; break;
    case 'o': c->out_path = arg; break;
    case 'E':
        st = Args_parseIntList("--experts", arg, 1, INT_MAX, &ints, &n, cause);
        replaceInts(&c->experts, &c->n_experts, st, ints, n);
        break;
    case 'k':
        st = Args_parseIntList("--k", arg, 1, INT_MAX, &ints, &n, cause);
        replaceInts(&c->ks, &c->n_ks, st, ints, n);
        break;
    case 's': st = BatchConfig_setStrategies(c, arg, cause); break;
    case 'r': st = BatchConfig_setRouters(c, arg, cause); break;
    case 't':
        st = Args_parseDoubleList("--tau", arg, 0.0, 1e30, &doubles, &n, cause);
        replaceDoubles(&c->taus, &c->n_taus, st, doubles, n);
        break;
    case 'l':
        st = Args_parseRanges("--layers", arg, &ints, &n, cause);
        replaceInts(&c->layers, &c->n_layers, st, ints, n);
        break;
    case 'q': c->quiet = true; break;
    case OPT_TARGET:
        st = Args_parseDouble("--target-sparsity", arg, 0.0, 1.0, &cli->target, cause);
        break;
    case OPT_SPARSITY_Q:
        st = Args_parseDoubleList("--sparsity-q", arg, 0.0, 1.0, &doubles, &n, cause);
        replaceDoubles(&c->quantiles, &c->n_quantiles, st, doubles, n);
        break;
    case OPT_SEED:
        st = Args_parseLong("--seed", arg, 0, LONG_MAX, &v, cause);
        c->seed = (unsigned long)v;
        break;
    case OPT_TEST_FRACTION:
        st = Args_parseDouble("--test-fraction", arg, 0.0, 0.9, &c->test_fraction, cause);
        if (st == MS_OK && c->test_fraction <= 0.0) {
            setCause(cause, "--test-fraction: expected a value above 0, found %s", arg);
            st = MS_ERR_RANGE;
        }
        break;
    case OPT_TRAIN: c->train_too = true; break;
    case OPT_MEO_BLOCK:
        st = Args_parseLong("--meo-block", arg, 1, 1L << 30, &c->meo_block, cause);
        break;
    case OPT_MLP_EPOCHS:
        st = Args_parseLong("--mlp-epochs", arg, 0, 100000, &v, cause);
        c->mlp_epochs = (int)v;
        break;
    case OPT_NO_MEASURE: c->measure = false; break;
    case OPT_PARTITIONS: c->partitions_path = arg; break;
    case OPT_FIGURES: c->figures_dir = arg; break;
    case OPT_FIGURE_FORMAT: c->figure_formats = arg; break;
    case OPT_THREADS:
        st = Args_parseLong("--threads", arg, 1, 64, &v, cause);
        c->threads = (int)v;
        break;
    case OPT_SET: {
        Knobs probe;
        Knobs_default(&probe);
        st = Knobs_assign(&probe, arg, cause);
        if (st != MS_OK) {
            prefixCause(cause, "--set");
            break;
        }
        cli->sets = xReallocArray(cli->sets, (size_t)cli->n_sets + 1, sizeof *cli->sets);
        cli->sets[cli->n_sets++] = arg;
        break;
    }
    case OPT_ASCII: cli->ascii = true; break;
    case OPT_NO_COLOR: cli->no_color = true; break;
    default:
        setCause(cause, "unknown option (see --help)");
        st = MS_ERR_RANGE;
    }
    return st;
}

static void parseArgs(Cli *cli, int argc, char **argv) {
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hVbo:E:k:s:r:t:l:q", longOptions, NULL)) != -1) {
        char *cause = NULL;
        if (opt == 'h') {
            fputs(usageText, stdout);
            free(cli->sets);
            BatchConfig_done(&cli->config);
            exit(0);
        }
        if (opt == 'V') {
            puts(PACKAGE_STRING);
            free(cli->sets);
            BatchConfig_done(&cli->config);
            exit(0);
        }
        if (opt == '?' || opt == ':') {
            const char *name = argv[optind - 1];
            setCause(&cause, opt == '?' ? "unknown option '%s' (see --help)"
                                        : "option '%s' needs a value (see --help)", name);
        } else if (applyOption(cli, opt, optarg, &cause) == MS_OK) {
            continue;
        }
        free(cli->sets);
        BatchConfig_done(&cli->config);
        die(2, cause);
    }
}

/* The default data: next to the binary in a build tree (src/../data), else installed. */
static char *defaultDataPath(void) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char *path = xAsprintf("%s/../data/" DEFAULT_DATA, exe);
            char *real = realpath(path, NULL);
            free(path);
            if (real)
                return real;
        }
    }
    if (access("data/" DEFAULT_DATA, R_OK) == 0)
        return xStrdup("data/" DEFAULT_DATA);
    return xStrdup(MOESCOPE_PKGDATADIR "/" DEFAULT_DATA);
}

static void printSummaryHeader(const Dump *dump) {
    printf("# moescope %s: %d layer%s", PACKAGE_VERSION, Dump_layerCount(dump),
           Dump_layerCount(dump) == 1 ? "" : "s");
    if (Dump_modelName(dump))
        printf(", model %s", Dump_modelName(dump));
    printf(", file%s", Dump_fileCount(dump) == 1 ? "" : "s");
    for (int i = 0; i < Dump_fileCount(dump); i++)
        printf(" %s", Dump_fileName(dump, i));
    printf("\n%-5s %-28s %7s %6s %8s %-9s %-5s %11s %10s %13s\n", "layer", "name", "d_model",
           "d_ff", "tokens", "act", "gated", "sparsity@0", "tau@q", "sparsity@tau");
}

static int runSummary(Dump *dump, double target) {
    printSummaryHeader(dump);
    for (int i = 0; i < Dump_layerCount(dump); i++) {
        LayerSummary s;
        char *cause = NULL;
        MsStatus st = Summary_layer(dump, i, target, 2, NULL, &s, &cause);
        if (st != MS_OK) {
            fflush(stdout);
            fprintf(stderr, "moescope: %s\n", cause);
            free(cause);
            return Status_exitCode(st);
        }
        printf("%-5d %-28s %7d %6d %8ld %-9s %-5s %11.6f %10.6g %13.6f\n", s.index, s.name,
               s.d_model, s.d_ff, s.n_tokens, s.activation, s.gated ? "yes" : "no", s.sparsity0,
               (double)s.tau_target, s.sparsity_at);
    }
    printf("# q = %g: tau@q is the smallest |h| value v with P(|h| <= v) >= q over all tokens\n",
           target);
    return 0;
}

/* The engine allocates and frees the same buffers for every partition and layer. By
   default glibc adapts its mmap threshold upwards as large blocks are freed, keeping them
   in the heap, and trims the heap's top often: both make fresh zeroed pages fault in
   again, and kept blocks fragment the heap, whose free space then adds to the peak that
   the batch's memory target bounds. Blocks of 1 MiB and more are always mapped (given
   back whole when freed), and the heap below that is never trimmed. */
static void keepFreedMemory(void) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

int main(int argc, char **argv) {
    keepFreedMemory();
    /* The engine runs its own threads (--threads); each calls BLAS single-threaded. */
    Ffn_useOneBlasThread();
    Cli cli = {.target = 0.9};
    BatchConfig_init(&cli.config);
    parseArgs(&cli, argc, argv);

    char *fallback = NULL;
    const char *const *paths = (const char *const *)argv + optind;
    int n_paths = argc - optind;
    if (n_paths == 0) {
        fallback = defaultDataPath();
        paths = (const char *const *)&fallback;
        n_paths = 1;
    }
    Dump *dump = NULL;
    char *cause = NULL;
    MsStatus st = Dump_open(&dump, paths, n_paths, &cause);
    free(fallback);
    if (st != MS_OK) {
        free(cli.sets);
        BatchConfig_done(&cli.config);
        die(Status_exitCode(st), cause);
    }
    Dump_setReadThreads(dump, cli.config.threads);
    if (Dump_formatAssumed(dump))
        fprintf(stderr, "moescope: warning: no moescope_format attribute; assuming format 1\n");

    int status;
    if (cli.batch) {
        st = Batch_run(&cli.config, dump, &cause);
        status = Status_exitCode(st);
        if (st != MS_OK) {
            fprintf(stderr, "moescope: %s\n", cause ? cause : Status_name(st));
            free(cause);
        }
    } else if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
        UiOptions ui = {.ascii = cli.ascii, .no_color = cli.no_color,
                        .threads = cli.config.threads, .sets = cli.sets, .n_sets = cli.n_sets};
        status = Ui_run(dump, &ui);
    } else {
        status = runSummary(dump, cli.target);
    }
    Dump_delete(dump);
    free(cli.sets);
    BatchConfig_done(&cli.config);
    return status;
}
