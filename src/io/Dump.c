/*
moescope - io/Dump.c
The HDF5 loader of SPEC §1: a set of files, looked up in command-line order, read as a
list of FFN layers in numeric order.

DESIGN
Dump_open does all the checking that needs no bulk data: it opens every file, collects
the layer groups of all files (a layer may be spread over several files; "1" and "01"
name the same index, so both together are an error), finds for each member the first
file that has it and checks its rank, shape, type class and storage (no external or
virtual storage, no missing filter, chunks within the memory limit). /seq_offsets is
small and read whole at open. Bulk data is read later: weights whole (and checked for
NaN/Inf), x and h as hyperslabs of rows through datasets kept open per layer; rows of
plain float32 storage are read straight from the file (io/DirectRows), on the threads
Dump_setReadThreads allows.

Every message is one sentence "FILE: PATH: expected ..., found ...", where FILE is the
name as given on the command line. The HDF5 error stack is turned off at each public
entry (the setting is per thread) and its innermost message is used in our sentence.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/Dump.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/DirectRows.h"
#include "io/H5Util.h"
#include "util/XUtils.h"

/* A layer's members, in the order they are checked (w_in fixes d_ff and d_model). */
typedef enum Member {
    M_W_IN = 0,
    M_W_GATE,
    M_B_IN,
    M_W_OUT,
    M_B_OUT,
    M_X,
    M_H,
    M_PARTITION,
    M_PLANTED,
    M_COUNT
} Member;

static const char *const memberNames[M_COUNT] = {
    [M_W_IN] = "w_in",   [M_W_GATE] = "w_gate", [M_B_IN] = "b_in",
    [M_W_OUT] = "w_out", [M_B_OUT] = "b_out",   [M_X] = "x",
    [M_H] = "h",         [M_PARTITION] = "partition", [M_PLANTED] = "planted_group",
};

/* An open x or h dataset, kept for block reads. */
typedef struct RowSource {
    hid_t dset;
    hid_t space;
    H5UtilFloat kind;
    DirectRows *direct; /* reads its rows with pread when the storage allows, or NULL */
} RowSource;

typedef struct LayerPriv {
    char *spelling;      /* the group name as in the files ("3" or "03") */
    int *files;          /* files that have /layers/<spelling>, ascending */
    int n_files;
    int file[M_COUNT];   /* the file each member comes from, -1 when absent */
    char **part_names;   /* names under partitions/ */
    int *part_files;
    int n_parts;
    RowSource rows[2];   /* DUMP_X, DUMP_H; dset < 0 until first read */
} LayerPriv;

struct Dump {
    int n_files;
    char **paths;
    hid_t *fids;
    bool format_assumed;
    char *model_name;
    int n_layers;
    DumpLayer *layers;
    LayerPriv *priv;
    int seq_file, tokens_file, text_file; /* -1 when absent */
    int64_t *seq;
    long n_seq;
    int *probe_file; /* in the crash-guard child: where to note the file being read */
    int rows_layer;  /* the one layer whose x/h datasets are open for Dump_readRows; -1 */
    int read_threads; /* threads of a direct row read */
};

static atomic_size_t memoryLimit;
static atomic_bool crashGuard = true;

/* The crash guard's time limit for reading the metadata of a file set. */
enum { PROBE_SECONDS = 30 };
static atomic_int probeSeconds = PROBE_SECONDS;

void Dump_setCrashGuard(bool on, int seconds) {
    atomic_store(&crashGuard, on);
    atomic_store(&probeSeconds, seconds > 0 ? seconds : PROBE_SECONDS);
}

void Dump_setMemoryLimit(size_t bytes) {
    atomic_store(&memoryLimit, bytes);
}

static size_t limitBytes(void) {
    size_t limit = atomic_load(&memoryLimit);
    if (limit)
        return limit;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0)
        return SIZE_MAX;
    return (size_t)pages * (size_t)page;
}

/* Notes that file f is about to be read (for the crash guard) and returns its name. */
static const char *useFile(Dump *this, int f) {
    if (this->probe_file)
        *this->probe_file = f;
    return this->paths[f];
}

/* ---- messages ---------------------------------------------------------------------- */

/* Sets "file: path: <fmt>" and returns st. */
__attribute__((format(printf, 5, 6))) static MsStatus report(char **cause, MsStatus st,
                                                              const char *file,
                                                              const char *path,
                                                              const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *msg = xVasprintf(fmt, ap);
    va_end(ap);
    if (path)
        setCause(cause, "%s: %s: %s", file, path, msg);
    else
        setCause(cause, "%s: %s", file, msg);
    free(msg);
    return st;
}

/* Reports the HDF5 error on the stack as the reason an operation failed. */
static MsStatus reportH5(char **cause, MsStatus st, const char *file, const char *path,
                         const char *what) {
    char *h5 = H5Util_errorText();
    report(cause, st, file, path, "%s (%s)", what, h5);
    free(h5);
    return st;
}

/* "a.h5, b.h5" for the files a layer was looked up in. */
static char *fileList(const Dump *this, const LayerPriv *p) {
    char *s = xStrdup(this->paths[p->files[0]]);
    for (int k = 1; k < p->n_files; k++) {
        char *t = xAsprintf("%s, %s", s, this->paths[p->files[k]]);
        free(s);
        s = t;
    }
    return s;
}

static char *memberPath(const LayerPriv *p, const char *member) {
    return xAsprintf("/layers/%s/%s", p->spelling, member);
}

/* ---- opening files ----------------------------------------------------------------- */

/* POSIX checks first: a missing file gets errno's words, and a FIFO or device never
   reaches H5Fopen (which would block on it). */
static MsStatus checkPlainFile(const char *path, char **cause) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return report(cause, MS_ERR_IO, path, NULL, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st);
    int err = errno;
    close(fd);
    if (rc < 0)
        return report(cause, MS_ERR_IO, path, NULL, "cannot stat: %s", strerror(err));
    if (S_ISDIR(st.st_mode))
        return report(cause, MS_ERR_IO, path, NULL,
                      "expected an HDF5 file, found a directory");
    if (!S_ISREG(st.st_mode))
        return report(cause, MS_ERR_IO, path, NULL,
                      "expected an HDF5 file, found a special file (pipe or device)");
    if (st.st_size == 0)
        return report(cause, MS_ERR_FORMAT, path, NULL,
                      "expected an HDF5 file, found an empty file");
    return MS_OK;
}

static MsStatus explainOpenFailure(const char *path, char **cause) {
    char *h5 = H5Util_errorText();
    unsigned long long eof = 0, stored = 0, base = 0;
    const char *t = strstr(h5, "truncated file");
    MsStatus st;
    if (t && sscanf(t, "truncated file: eof = %llu, sblock->base_addr = %llu, stored_eof = %llu",
                    &eof, &base, &stored) == 3)
        st = report(cause, MS_ERR_FORMAT, path, NULL,
                    "expected an HDF5 file of %llu bytes, found %llu bytes (truncated)",
                    stored, eof);
    else if (H5Fis_hdf5(path) <= 0)
        st = report(cause, MS_ERR_FORMAT, path, NULL,
                    "expected an HDF5 file, found no HDF5 signature (not an HDF5 file)");
    else
        st = report(cause, MS_ERR_FORMAT, path, NULL, "cannot open as HDF5: %s", h5);
    H5Eclear2(H5E_DEFAULT);
    free(h5);
    return st;
}

static MsStatus openFiles(Dump *this, char **cause) {
    for (int f = 0; f < this->n_files; f++) {
        const char *path = useFile(this, f);
        MsStatus st = checkPlainFile(path, cause);
        if (st != MS_OK)
            return st;
        this->fids[f] = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (this->fids[f] < 0)
            return explainOpenFailure(path, cause);
    }
    return MS_OK;
}

/* ---- attributes -------------------------------------------------------------------- */

/* 1 when obj has attribute name, 0 when not, -1 (cause set) on an HDF5 error. */
static int hasAttr(hid_t obj, const char *name, const char *file, const char *path,
                   char **cause) {
    htri_t has = H5Aexists(obj, name);
    if (has < 0) {
        char *what = xAsprintf("cannot read attribute %s", name);
        reportH5(cause, MS_ERR_FORMAT, file, path, what);
        free(what);
        return -1;
    }
    return has > 0;
}

/* Reads string attribute name of obj, which must exist. */
static MsStatus readStringAttr(hid_t obj, const char *name, char **out, const char *file,
                               const char *path, char **cause) {
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot open an attribute");
    char found[256];
    H5UtilRead r = H5Util_readStringAttr(attr, out, found, sizeof found);
    hid_t err = H5Util_saveError(r == H5UTIL_READ_FAIL);
    H5Aclose(attr);
    H5Util_restoreError(err);
    if (r == H5UTIL_READ_FAIL)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read a string attribute");
    if (r == H5UTIL_READ_WRONG)
        return report(cause, MS_ERR_FORMAT, file, path,
                      "attribute %s: expected a string, found %s", name, found);
    return MS_OK;
}

static MsStatus readIntAttr(hid_t obj, const char *name, long long *out, const char *file,
                            const char *path, char **cause) {
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot open an attribute");
    char found[256];
    H5UtilRead r = H5Util_readIntAttr(attr, out, found, sizeof found);
    hid_t err = H5Util_saveError(r == H5UTIL_READ_FAIL);
    H5Aclose(attr);
    H5Util_restoreError(err);
    if (r == H5UTIL_READ_FAIL)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read an integer attribute");
    if (r == H5UTIL_READ_WRONG)
        return report(cause, MS_ERR_FORMAT, file, path,
                      "attribute %s: expected an integer, found %s", name, found);
    return MS_OK;
}

static MsStatus readRootAttrs(Dump *this, char **cause) {
    this->format_assumed = true;
    for (int f = 0; f < this->n_files; f++) {
        const char *file = useFile(this, f);
        hid_t root = H5Gopen2(this->fids[f], "/", H5P_DEFAULT);
        if (root < 0)
            return reportH5(cause, MS_ERR_FORMAT, file, "/", "cannot open the root group");
        MsStatus st = MS_OK;
        int has = hasAttr(root, "moescope_format", file, "/", cause);
        long long format = 1;
        if (has < 0)
            st = MS_ERR_FORMAT;
        else if (has)
            st = readIntAttr(root, "moescope_format", &format, file, "/", cause);
        if (st == MS_OK && has) {
            this->format_assumed = false;
            if (format != 1)
                st = report(cause, MS_ERR_FORMAT, file, "/",
                            "attribute moescope_format: expected 1, found %lld", format);
        }
        if (st == MS_OK && !this->model_name) {
            has = hasAttr(root, "model_name", file, "/", cause);
            if (has < 0)
                st = MS_ERR_FORMAT;
            else if (has)
                st = readStringAttr(root, "model_name", &this->model_name, file, "/", cause);
        }
        H5Gclose(root);
        if (st != MS_OK)
            return st;
    }
    return MS_OK;
}

/* ---- links ------------------------------------------------------------------------- */

/* 1 when loc has a hard or soft link name, 0 when not; external and user-defined links
   are refused (they would open other files on the user's disk). */
static int hasLink(hid_t loc, const char *name, const char *file, const char *path,
                   char **cause) {
    htri_t has = H5Lexists(loc, name, H5P_DEFAULT);
    if (has < 0) {
        reportH5(cause, MS_ERR_FORMAT, file, path, "cannot look up the link");
        return -1;
    }
    if (!has)
        return 0;
    H5L_info_t li;
    if (H5Lget_info(loc, name, &li, H5P_DEFAULT) < 0) {
        reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read the link");
        return -1;
    }
    if (li.type != H5L_TYPE_HARD && li.type != H5L_TYPE_SOFT) {
        report(cause, MS_ERR_FORMAT, file, path,
               "expected a dataset or group, found an external link (not supported)");
        return -1;
    }
    return 1;
}

/* Opens loc/name as a group; "expected a group" when it is something else. */
static hid_t openGroup(hid_t loc, const char *name, const char *file, const char *path,
                       char **cause) {
    hid_t obj = H5Oopen(loc, name, H5P_DEFAULT);
    if (obj < 0) {
        reportH5(cause, MS_ERR_FORMAT, file, path, "cannot open");
        return -1;
    }
    H5I_type_t type = H5Iget_type(obj);
    if (type != H5I_GROUP) {
        H5Oclose(obj);
        report(cause, MS_ERR_FORMAT, file, path, "expected a group, found a %s",
               type == H5I_DATASET ? "dataset" : "named type");
        return -1;
    }
    return obj;
}

typedef struct NameList {
    char **names;
    int n, cap;
} NameList;

static herr_t collectName(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    NameList *list = data;
    if (list->n == list->cap) {
        list->cap = list->cap ? 2 * list->cap : 16;
        list->names = xReallocArray(list->names, (size_t)list->cap, sizeof *list->names);
    }
    list->names[list->n++] = xStrdup(name);
    return 0;
}

static void NameList_done(NameList *list) {
    for (int k = 0; k < list->n; k++)
        free(list->names[k]);
    free(list->names);
    memset(list, 0, sizeof *list);
}

static MsStatus listGroup(hid_t g, NameList *list, const char *file, const char *path,
                          char **cause) {
    hsize_t idx = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collectName, list) < 0)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot list the group");
    return MS_OK;
}

/* ---- layer discovery --------------------------------------------------------------- */

typedef struct LayerName {
    int index;
    char *spelling;
    int file;
} LayerName;

/* Decimal digits only (leading zeros allowed), value within int. */
static bool parseIndex(const char *s, int *out) {
    if (!*s)
        return false;
    long long v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return false;
        v = v * 10 + (*c - '0');
        if (v > INT_MAX)
            return false;
    }
    *out = (int)v;
    return true;
}

static int compareLayerNames(const void *a, const void *b) {
    const LayerName *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return (x->file > y->file) - (x->file < y->file);
}

typedef struct NameSet {
    LayerName *items;
    int n, cap;
} NameSet;

static void NameSet_add(NameSet *set, int index, const char *spelling, int file) {
    if (set->n == set->cap) {
        set->cap = set->cap ? 2 * set->cap : 16;
        set->items = xReallocArray(set->items, (size_t)set->cap, sizeof *set->items);
    }
    set->items[set->n++] = (LayerName){index, xStrdup(spelling), file};
}

static void NameSet_done(NameSet *set) {
    for (int k = 0; k < set->n; k++)
        free(set->items[k].spelling);
    free(set->items);
}

/* Checks one entry of /layers: a decimal name and a group. */
static MsStatus checkLayerEntry(hid_t layers, const char *name, int *index, const char *file,
                                char **cause) {
    char *path = xAsprintf("/layers/%s", name);
    MsStatus st = MS_OK;
    if (!parseIndex(name, index)) {
        st = report(cause, MS_ERR_FORMAT, file, path,
                    "expected a decimal layer index (0, 1, 2, ...) as the group name, "
                    "found \"%s\"", name);
    } else {
        /* listed but not found by name: the group's index is corrupt */
        int has = hasLink(layers, name, file, path, cause);
        if (has == 0)
            report(cause, MS_ERR_FORMAT, file, path,
                   "expected a group, found a link that cannot be looked up (corrupt file)");
        hid_t g = has > 0 ? openGroup(layers, name, file, path, cause) : -1;
        if (g < 0)
            st = MS_ERR_FORMAT;
        else
            H5Oclose(g);
    }
    free(path);
    return st;
}

static MsStatus collectFileLayers(Dump *this, int f, NameSet *set, bool *any, char **cause) {
    const char *file = useFile(this, f);
    int has = hasLink(this->fids[f], "layers", file, "/layers", cause);
    if (has <= 0)
        return has < 0 ? MS_ERR_FORMAT : MS_OK;
    hid_t layers = openGroup(this->fids[f], "layers", file, "/layers", cause);
    if (layers < 0)
        return MS_ERR_FORMAT;
    *any = true;
    NameList list = {0};
    MsStatus st = listGroup(layers, &list, file, "/layers", cause);
    for (int k = 0; st == MS_OK && k < list.n; k++) {
        int index = 0;
        st = checkLayerEntry(layers, list.names[k], &index, file, cause);
        if (st == MS_OK)
            NameSet_add(set, index, list.names[k], f);
    }
    NameList_done(&list);
    H5Oclose(layers);
    return st;
}

static MsStatus noLayers(const Dump *this, bool any, char **cause) {
    char *files = xStrdup(this->paths[0]);
    for (int f = 1; f < this->n_files; f++) {
        char *t = xAsprintf("%s, %s", files, this->paths[f]);
        free(files);
        files = t;
    }
    MsStatus st = report(cause, MS_ERR_FORMAT, files, "/layers",
                         any ? "expected groups /layers/0, /layers/1, ..., found an empty "
                               "/layers group"
                             : "expected a group of FFN layers, found no /layers group");
    free(files);
    return st;
}

/* Turns the sorted names into layers; a second spelling of one index is an error. */
static MsStatus buildLayers(Dump *this, NameSet *set, char **cause) {
    qsort(set->items, (size_t)set->n, sizeof *set->items, compareLayerNames);
    this->layers = xCalloc((size_t)set->n, sizeof *this->layers);
    this->priv = xCalloc((size_t)set->n, sizeof *this->priv);
    for (int k = 0; k < set->n; k++) {
        LayerName *e = &set->items[k];
        LayerPriv *p = this->n_layers ? &this->priv[this->n_layers - 1] : NULL;
        if (p && this->layers[this->n_layers - 1].index == e->index) {
            if (strcmp(p->spelling, e->spelling) != 0)
                return report(cause, MS_ERR_FORMAT, this->paths[e->file], "/layers",
                              "expected one group per layer index, found both "
                              "/layers/%s and /layers/%s", p->spelling, e->spelling);
            p->files[p->n_files++] = e->file;
            continue;
        }
        p = &this->priv[this->n_layers];
        this->layers[this->n_layers++].index = e->index;
        p->spelling = xStrdup(e->spelling);
        p->files = xMallocArray((size_t)this->n_files, sizeof *p->files);
        p->files[p->n_files++] = e->file;
        for (int m = 0; m < M_COUNT; m++)
            p->file[m] = -1;
        p->rows[0].dset = p->rows[1].dset = -1;
        p->rows[0].direct = p->rows[1].direct = NULL;
    }
    return MS_OK;
}

static MsStatus collectLayers(Dump *this, char **cause) {
    NameSet set = {0};
    bool any = false;
    MsStatus st = MS_OK;
    for (int f = 0; st == MS_OK && f < this->n_files; f++)
        st = collectFileLayers(this, f, &set, &any, cause);
    if (st == MS_OK && set.n == 0)
        st = noLayers(this, any, cause);
    if (st == MS_OK)
        st = buildLayers(this, &set, cause);
    NameSet_done(&set);
    return st;
}

/* ---- dataset checks ---------------------------------------------------------------- */

typedef struct DsetInfo {
    H5T_class_t cls;
    int rank;
    hsize_t dims[H5S_MAX_RANK];
    char type[64];
    char shape[160];
} DsetInfo;

/* Storage that would read other files or needs a filter we lack is refused here,
   and so are chunks bigger than the memory limit (HDF5 allocates a whole chunk). */
static MsStatus checkStorage(hid_t dset, hid_t type, const char *file, const char *path,
                             char **cause) {
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read the storage layout");
    MsStatus st = MS_OK;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_VIRTUAL)
        st = report(cause, MS_ERR_FORMAT, file, path,
                    "expected a plain dataset, found a virtual dataset (not supported)");
    else if (H5Pget_external_count(dcpl) > 0)
        st = report(cause, MS_ERR_FORMAT, file, path,
                    "expected data inside the file, found external raw data files "
                    "(not supported)");
    int nf = H5Pget_nfilters(dcpl);
    for (int k = 0; st == MS_OK && k < nf; k++) {
        unsigned flags = 0, config = 0;
        size_t nelmts = 0;
        char name[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &nelmts, NULL,
                                         sizeof name, name, &config);
        if (id < 0)
            st = reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read the filters");
        else if (H5Zfilter_avail(id) <= 0) /* optional ones too: chunks may need them */
            st = report(cause, MS_ERR_FORMAT, file, path,
                        "expected gzip, shuffle or no compression, found filter %d (%s), "
                        "which this HDF5 library lacks", (int)id, name[0] ? name : "unnamed");
    }
    if (st == MS_OK && layout == H5D_CHUNKED) {
        hsize_t cdims[H5S_MAX_RANK];
        int crank = H5Pget_chunk(dcpl, H5S_MAX_RANK, cdims);
        double bytes = (double)H5Tget_size(type);
        for (int k = 0; k < crank; k++)
            bytes *= (double)cdims[k];
        if (crank < 0 || bytes > (double)limitBytes())
            st = report(cause, MS_ERR_NOMEM, file, path,
                        "expected chunks that fit in memory, found chunks of %.0f bytes "
                        "(limit %zu bytes)", bytes, limitBytes());
    }
    H5Pclose(dcpl);
    return st;
}

static MsStatus describeDataset(hid_t dset, DsetInfo *info, const char *file,
                                const char *path, char **cause) {
    hid_t type = H5Dget_type(dset);
    hid_t space = H5Dget_space(dset);
    MsStatus st = MS_OK;
    if (type < 0 || space < 0) {
        st = reportH5(cause, MS_ERR_FORMAT, file, path, "cannot read type and shape");
    } else {
        info->cls = H5Tget_class(type);
        H5Util_typeName(type, info->type, sizeof info->type);
        H5Util_shapeText(space, info->shape, sizeof info->shape);
        H5S_class_t scls = H5Sget_simple_extent_type(space);
        info->rank = scls == H5S_SIMPLE || scls == H5S_SCALAR
                         ? H5Sget_simple_extent_dims(space, info->dims, NULL)
                         : -1;
        st = checkStorage(dset, type, file, path, cause);
    }
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

/* Opens path in file f as a dataset and describes it. */
static MsStatus inspect(Dump *this, int f, const char *path, DsetInfo *info, char **cause) {
    const char *file = useFile(this, f);
    hid_t obj = H5Oopen(this->fids[f], path, H5P_DEFAULT);
    if (obj < 0)
        return reportH5(cause, MS_ERR_FORMAT, file, path, "cannot open");
    MsStatus st;
    if (H5Iget_type(obj) != H5I_DATASET)
        st = report(cause, MS_ERR_FORMAT, file, path, "expected a dataset, found a %s",
                    H5Iget_type(obj) == H5I_GROUP ? "group" : "named type");
    else
        st = describeDataset(obj, info, file, path, cause);
    H5Oclose(obj);
    return st;
}

/* What a member must look like: rank, dimension names and values (-1: any >= 1). */
typedef struct Expect {
    int rank;
    const char *names[2];
    long long dims[2];
    H5T_class_t cls;
} Expect;

/* "[d_model, d_ff] = [64, 172] float", or "[d_ff, d_model] float" when nothing is known. */
static void expectText(const Expect *e, char *buf, size_t size) {
    const char *cls = e->cls == H5T_FLOAT ? "float" : "int";
    bool known = false;
    for (int k = 0; k < e->rank; k++)
        known = known || e->dims[k] >= 0;
    char names[64], values[96];
    if (e->rank == 1)
        snprintf(names, sizeof names, "[%s]", e->names[0]);
    else
        snprintf(names, sizeof names, "[%s, %s]", e->names[0], e->names[1]);
    if (!known) {
        snprintf(buf, size, "%s %s", names, cls);
        return;
    }
    size_t len = (size_t)snprintf(values, sizeof values, "[");
    for (int k = 0; k < e->rank && len < sizeof values; k++) {
        if (e->dims[k] >= 0)
            len += (size_t)snprintf(values + len, sizeof values - len, "%s%lld",
                                    k ? ", " : "", e->dims[k]);
        else
            len += (size_t)snprintf(values + len, sizeof values - len, "%s%s",
                                    k ? ", " : "", e->names[k]);
    }
    snprintf(buf, size, "%s = %s] %s", names, values, cls);
}

static bool matches(const Expect *e, const DsetInfo *info, const char **zeroDim) {
    *zeroDim = NULL;
    if (info->cls != e->cls || info->rank != e->rank)
        return false;
    for (int k = 0; k < e->rank; k++) {
        if (e->dims[k] >= 0 && info->dims[k] != (hsize_t)e->dims[k])
            return false;
        if (e->dims[k] < 0 && info->dims[k] == 0) {
            *zeroDim = e->names[k];
            return false;
        }
    }
    return true;
}

/* The element count must stay far from overflow: a file can claim any dims. */
static MsStatus checkSize(const DsetInfo *info, const char *file, const char *path,
                          char **cause) {
    const unsigned long long limit = (unsigned long long)INT64_MAX / 8;
    unsigned long long n = 1;
    for (int k = 0; k < info->rank && n <= limit; k++) {
        if (info->dims[k] != 0 && n > limit / info->dims[k])
            n = limit + 1;
        else
            n *= info->dims[k];
    }
    if (n > limit)
        return report(cause, MS_ERR_FORMAT, file, path,
                      "expected a size that fits in memory, found %s %s (more than %llu "
                      "elements)", info->shape, info->type, limit);
    return MS_OK;
}

/* Checks the dataset of member m (in file f) against e. */
static MsStatus checkShape(Dump *this, int f, const char *path, const Expect *e,
                           DsetInfo *info, char **cause) {
    MsStatus st = inspect(this, f, path, info, cause);
    if (st != MS_OK)
        return st;
    const char *zero;
    if (!matches(e, info, &zero)) {
        char want[256];
        expectText(e, want, sizeof want);
        if (zero)
            return report(cause, MS_ERR_FORMAT, this->paths[f], path,
                          "expected %s with %s >= 1, found %s %s", want, zero, info->shape,
                          info->type);
        return report(cause, MS_ERR_FORMAT, this->paths[f], path,
                      "expected %s, found %s %s", want, info->shape, info->type);
    }
    return checkSize(info, this->paths[f], path, cause);
}

/* Checks member m of layer li: absent is an error only when required. */
static MsStatus checkMember(Dump *this, int li, Member m, const Expect *e, bool required,
                            DsetInfo *info, char **cause) {
    LayerPriv *p = &this->priv[li];
    char *path = memberPath(p, memberNames[m]);
    MsStatus st = MS_OK;
    if (p->file[m] >= 0) {
        st = checkShape(this, p->file[m], path, e, info, cause);
    } else if (required) {
        char want[256], *files = fileList(this, p);
        expectText(e, want, sizeof want);
        st = report(cause, MS_ERR_FORMAT, files, path, "expected %s, found no such dataset",
                    want);
        free(files);
    }
    free(path);
    return st;
}

/* ---- layer members ----------------------------------------------------------------- */

/* Finds, for every member, the first file of the layer that has it. */
static MsStatus locateMembers(Dump *this, int li, char **cause) {
    LayerPriv *p = &this->priv[li];
    MsStatus st = MS_OK;
    for (int k = 0; st == MS_OK && k < p->n_files; k++) {
        int f = p->files[k];
        useFile(this, f);
        char *gpath = xAsprintf("/layers/%s", p->spelling);
        hid_t g = H5Gopen2(this->fids[f], gpath, H5P_DEFAULT);
        if (g < 0)
            st = reportH5(cause, MS_ERR_FORMAT, this->paths[f], gpath, "cannot open");
        for (int m = 0; st == MS_OK && m < M_COUNT; m++) {
            if (p->file[m] >= 0)
                continue;
            char *path = memberPath(p, memberNames[m]);
            int has = hasLink(g, memberNames[m], this->paths[f], path, cause);
            free(path);
            if (has < 0)
                st = MS_ERR_FORMAT;
            else if (has)
                p->file[m] = f;
        }
        if (g >= 0)
            H5Gclose(g);
        free(gpath);
    }
    return st;
}

static void addPartition(LayerPriv *p, const char *name, int f) {
    for (int k = 0; k < p->n_parts; k++)
        if (strcmp(p->part_names[k], name) == 0)
            return;
    p->part_names = xReallocArray(p->part_names, (size_t)p->n_parts + 1,
                                  sizeof *p->part_names);
    p->part_files = xReallocArray(p->part_files, (size_t)p->n_parts + 1,
                                  sizeof *p->part_files);
    p->part_names[p->n_parts] = xStrdup(name);
    p->part_files[p->n_parts++] = f;
}

/* Adds the names under partitions/ of layer group g (file f), when it has them. */
static MsStatus listPartitions(Dump *this, LayerPriv *p, hid_t g, int f, const char *path,
                               char **cause) {
    const char *file = useFile(this, f);
    int has = hasLink(g, "partitions", file, path, cause);
    if (has <= 0)
        return has < 0 ? MS_ERR_FORMAT : MS_OK;
    hid_t parts = openGroup(g, "partitions", file, path, cause);
    if (parts < 0)
        return MS_ERR_FORMAT;
    NameList list = {0};
    MsStatus st = listGroup(parts, &list, file, path, cause);
    for (int n = 0; st == MS_OK && n < list.n; n++)
        addPartition(p, list.names[n], f);
    NameList_done(&list);
    H5Oclose(parts);
    return st;
}

/* Collects the names under partitions/ in every file of the layer. */
static MsStatus locatePartitions(Dump *this, int li, char **cause) {
    LayerPriv *p = &this->priv[li];
    MsStatus st = MS_OK;
    char *gpath = xAsprintf("/layers/%s", p->spelling);
    char *path = memberPath(p, "partitions");
    for (int k = 0; st == MS_OK && k < p->n_files; k++) {
        int f = p->files[k];
        useFile(this, f);
        hid_t g = H5Gopen2(this->fids[f], gpath, H5P_DEFAULT);
        if (g < 0) {
            st = reportH5(cause, MS_ERR_FORMAT, this->paths[f], gpath, "cannot open");
            break;
        }
        st = listPartitions(this, p, g, f, path, cause);
        H5Gclose(g);
    }
    free(path);
    free(gpath);
    return st;
}

/* Reads string attribute name of group g into *out unless *out is already set. */
static MsStatus layerAttr(hid_t g, const char *name, char **out, const char *file,
                          const char *gpath, char **cause) {
    if (*out)
        return MS_OK;
    int has = hasAttr(g, name, file, gpath, cause);
    if (has <= 0)
        return has < 0 ? MS_ERR_FORMAT : MS_OK;
    return readStringAttr(g, name, out, file, gpath, cause);
}

/* Reads the layer attributes name and activation from the first file having each. */
static MsStatus readLayerAttrs(Dump *this, int li, char **cause) {
    LayerPriv *p = &this->priv[li];
    DumpLayer *L = &this->layers[li];
    char *act = NULL;
    const char *actFile = NULL;
    MsStatus st = MS_OK;
    char *gpath = xAsprintf("/layers/%s", p->spelling);
    for (int k = 0; st == MS_OK && k < p->n_files; k++) {
        const char *file = useFile(this, p->files[k]);
        hid_t g = H5Gopen2(this->fids[p->files[k]], gpath, H5P_DEFAULT);
        if (g < 0) {
            st = reportH5(cause, MS_ERR_FORMAT, file, gpath, "cannot open");
            break;
        }
        st = layerAttr(g, "name", &L->name, file, gpath, cause);
        if (st == MS_OK && !act) {
            st = layerAttr(g, "activation", &act, file, gpath, cause);
            actFile = file;
        }
        H5Gclose(g);
    }
    L->act = ACTIVATION_RELU;
    if (st == MS_OK && act && !Activation_parse(act, &L->act))
        st = report(cause, MS_ERR_FORMAT, actFile, gpath,
                    "attribute activation: expected %s, found \"%s\"", Activation_allNames(),
                    act);
    if (!L->name)
        L->name = xAsprintf("layers.%d", L->index);
    free(act);
    free(gpath);
    return st;
}

/* The float members: w_in fixes d_ff and d_model, x fixes n_tokens. */
static MsStatus checkFloats(Dump *this, int li, char **cause) {
    DumpLayer *L = &this->layers[li];
    LayerPriv *p = &this->priv[li];
    DsetInfo info;
    Expect e = {2, {"d_ff", "d_model"}, {-1, -1}, H5T_FLOAT};
    MsStatus st = checkMember(this, li, M_W_IN, &e, true, &info, cause);
    if (st != MS_OK)
        return st;
    if (info.dims[0] > INT_MAX || info.dims[1] > INT_MAX) {
        char *path = memberPath(p, "w_in");
        st = report(cause, MS_ERR_FORMAT, this->paths[p->file[M_W_IN]], path,
                    "expected [d_ff, d_model] float with d_ff, d_model <= %d, found %s %s",
                    INT_MAX, info.shape, info.type);
        free(path);
        return st;
    }
    long long ff = (long long)info.dims[0], dm = (long long)info.dims[1];
    L->d_ff = (int)ff;
    L->d_model = (int)dm;
    Expect gate = {2, {"d_ff", "d_model"}, {ff, dm}, H5T_FLOAT};
    Expect bin = {1, {"d_ff", NULL}, {ff, -1}, H5T_FLOAT};
    Expect wout = {2, {"d_model", "d_ff"}, {dm, ff}, H5T_FLOAT};
    Expect bout = {1, {"d_model", NULL}, {dm, -1}, H5T_FLOAT};
    Expect x = {2, {"n_tokens", "d_model"}, {-1, dm}, H5T_FLOAT};
    if ((st = checkMember(this, li, M_W_GATE, &gate, false, &info, cause)) != MS_OK ||
        (st = checkMember(this, li, M_B_IN, &bin, false, &info, cause)) != MS_OK ||
        (st = checkMember(this, li, M_W_OUT, &wout, true, &info, cause)) != MS_OK ||
        (st = checkMember(this, li, M_B_OUT, &bout, false, &info, cause)) != MS_OK ||
        (st = checkMember(this, li, M_X, &x, true, &info, cause)) != MS_OK)
        return st;
    L->n_tokens = (long)info.dims[0];
    Expect h = {2, {"n_tokens", "d_ff"}, {L->n_tokens, ff}, H5T_FLOAT};
    return checkMember(this, li, M_H, &h, false, &info, cause);
}

static MsStatus checkInts(Dump *this, int li, char **cause) {
    LayerPriv *p = &this->priv[li];
    DsetInfo info;
    Expect e = {1, {"d_ff", NULL}, {this->layers[li].d_ff, -1}, H5T_INTEGER};
    MsStatus st = checkMember(this, li, M_PARTITION, &e, false, &info, cause);
    if (st == MS_OK)
        st = checkMember(this, li, M_PLANTED, &e, false, &info, cause);
    for (int k = 0; st == MS_OK && k < p->n_parts; k++) {
        char *path = xAsprintf("/layers/%s/partitions/%s", p->spelling, p->part_names[k]);
        st = checkShape(this, p->part_files[k], path, &e, &info, cause);
        free(path);
    }
    return st;
}

static MsStatus checkLayer(Dump *this, int li, char **cause) {
    LayerPriv *p = &this->priv[li];
    DumpLayer *L = &this->layers[li];
    MsStatus st = locateMembers(this, li, cause);
    if (st == MS_OK)
        st = locatePartitions(this, li, cause);
    if (st == MS_OK)
        st = readLayerAttrs(this, li, cause);
    if (st == MS_OK)
        st = checkFloats(this, li, cause);
    if (st == MS_OK)
        st = checkInts(this, li, cause);
    L->gated = p->file[M_W_GATE] >= 0;
    L->has_b_in = p->file[M_B_IN] >= 0;
    L->has_b_out = p->file[M_B_OUT] >= 0;
    L->has_h = p->file[M_H] >= 0;
    L->has_partition = p->file[M_PARTITION] >= 0;
    L->has_planted_group = p->file[M_PLANTED] >= 0;
    L->x_file = p->file[M_X] >= 0 ? this->paths[p->file[M_X]] : NULL;
    return st;
}

/* ---- root datasets ----------------------------------------------------------------- */

/* The first file with root member name, or -1. */
static MsStatus locateRoot(Dump *this, const char *name, int *out, char **cause) {
    *out = -1;
    char *path = xAsprintf("/%s", name);
    MsStatus st = MS_OK;
    for (int f = 0; f < this->n_files; f++) {
        int has = hasLink(this->fids[f], name, useFile(this, f), path, cause);
        if (has < 0)
            st = MS_ERR_FORMAT;
        if (has != 0) {
            *out = has > 0 ? f : -1;
            break;
        }
    }
    free(path);
    return st;
}

/* The layer whose n_tokens differs from n, or -1. */
static int tokenMismatch(const Dump *this, long long n) {
    for (int li = 0; li < this->n_layers; li++)
        if (this->layers[li].n_tokens != n)
            return li;
    return -1;
}

/* Reads an integer dataset whole as int64 (its length already checked). */
static MsStatus readInt64s(Dump *this, int f, const char *path, size_t n, int64_t **out,
                           char **cause) {
    const char *file = useFile(this, f);
    *out = NULL;
    if (n > limitBytes() / sizeof(int64_t))
        return report(cause, MS_ERR_NOMEM, file, path,
                      "reading needs %zu bytes, more than the memory limit of %zu bytes",
                      n * sizeof(int64_t), limitBytes());
    *out = tryMallocArray(n, sizeof(int64_t));
    if (!*out)
        return report(cause, MS_ERR_NOMEM, file, path, "cannot allocate %zu bytes",
                      n * sizeof(int64_t));
    hid_t dset = H5Dopen2(this->fids[f], path, H5P_DEFAULT);
    herr_t rc = dset < 0 ? -1
                         : H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out);
    hid_t err = H5Util_saveError(rc < 0);
    if (dset >= 0)
        H5Dclose(dset);
    H5Util_restoreError(err);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        return reportH5(cause, MS_ERR_IO, file, path, "cannot read");
    }
    return MS_OK;
}

static MsStatus checkSeqValues(Dump *this, const int64_t *v, long n, char **cause) {
    const char *file = this->paths[this->seq_file];
    if (v[0] != 0)
        return report(cause, MS_ERR_FORMAT, file, "/seq_offsets",
                      "expected 0 as the first offset, found %lld", (long long)v[0]);
    for (long k = 1; k < n; k++)
        if (v[k] <= v[k - 1])
            return report(cause, MS_ERR_FORMAT, file, "/seq_offsets",
                          "expected strictly increasing offsets, found %lld after %lld at "
                          "index %ld", (long long)v[k], (long long)v[k - 1], k);
    int li = tokenMismatch(this, v[n - 1]);
    if (li >= 0) {
        LayerPriv *p = &this->priv[li];
        return report(cause, MS_ERR_FORMAT, file, "/seq_offsets",
                      "expected the last offset to be n_tokens = %ld (rows of /layers/%s/x), "
                      "found %lld", this->layers[li].n_tokens, p->spelling,
                      (long long)v[n - 1]);
    }
    return MS_OK;
}

static MsStatus checkSeqOffsets(Dump *this, char **cause) {
    MsStatus st = locateRoot(this, "seq_offsets", &this->seq_file, cause);
    if (st != MS_OK || this->seq_file < 0)
        return st;
    DsetInfo info;
    Expect e = {1, {"n_seq + 1", NULL}, {-1, -1}, H5T_INTEGER};
    st = checkShape(this, this->seq_file, "/seq_offsets", &e, &info, cause);
    if (st == MS_OK && info.dims[0] < 2)
        st = report(cause, MS_ERR_FORMAT, this->paths[this->seq_file], "/seq_offsets",
                    "expected [n_seq + 1] int with n_seq >= 1, found %s %s", info.shape,
                    info.type);
    if (st != MS_OK)
        return st;
    long n = (long)info.dims[0];
    st = readInt64s(this, this->seq_file, "/seq_offsets", (size_t)n, &this->seq, cause);
    if (st == MS_OK)
        st = checkSeqValues(this, this->seq, n, cause);
    if (st == MS_OK)
        this->n_seq = n - 1;
    return st;
}

static MsStatus checkTokens(Dump *this, char **cause) {
    MsStatus st = locateRoot(this, "tokens", &this->tokens_file, cause);
    if (st != MS_OK || this->tokens_file < 0)
        return st;
    DsetInfo info;
    long long want = this->layers[0].n_tokens;
    Expect e = {1, {"n_tokens", NULL}, {want, -1}, H5T_INTEGER};
    st = checkShape(this, this->tokens_file, "/tokens", &e, &info, cause);
    if (st != MS_OK)
        return st;
    int li = tokenMismatch(this, want);
    if (li >= 0)
        st = report(cause, MS_ERR_FORMAT, this->paths[this->tokens_file], "/tokens",
                    "expected one token per row of every layer's x, found %lld tokens and "
                    "%ld rows in /layers/%s/x", want, this->layers[li].n_tokens,
                    this->priv[li].spelling);
    return st;
}

static MsStatus checkText(Dump *this, char **cause) {
    MsStatus st = locateRoot(this, "text", &this->text_file, cause);
    if (st != MS_OK || this->text_file < 0)
        return st;
    DsetInfo info;
    st = inspect(this, this->text_file, "/text", &info, cause);
    if (st == MS_OK && (info.cls != H5T_STRING || info.rank > 1 ||
                        (info.rank == 1 && info.dims[0] != 1)))
        st = report(cause, MS_ERR_FORMAT, this->paths[this->text_file], "/text",
                    "expected a string, found %s %s", info.shape, info.type);
    return st;
}

/* ---- public: lifecycle ------------------------------------------------------------- */

static MsStatus openAll(Dump *this, char **cause) {
    MsStatus st = openFiles(this, cause);
    if (st == MS_OK)
        st = readRootAttrs(this, cause);
    if (st == MS_OK)
        st = collectLayers(this, cause);
    for (int li = 0; st == MS_OK && li < this->n_layers; li++)
        st = checkLayer(this, li, cause);
    if (st == MS_OK)
        st = checkSeqOffsets(this, cause);
    if (st == MS_OK)
        st = checkTokens(this, cause);
    if (st == MS_OK)
        st = checkText(this, cause);
    H5Eclear2(H5E_DEFAULT);
    return st;
}

static Dump *newDump(const char *const *paths, int n_paths) {
    Dump *this = xCalloc(1, sizeof *this);
    this->n_files = n_paths;
    this->paths = xCalloc((size_t)n_paths, sizeof *this->paths);
    this->fids = xCalloc((size_t)n_paths, sizeof *this->fids);
    for (int f = 0; f < n_paths; f++) {
        this->paths[f] = xStrdup(paths[f]);
        this->fids[f] = -1;
    }
    this->seq_file = this->tokens_file = this->text_file = -1;
    this->rows_layer = -1;
    this->read_threads = 1;
    return this;
}

/* What the probe child found, in memory shared with the parent. */
typedef struct ProbeResult {
    int file;         /* the file being read when the child stopped; -1 before any */
    int status;       /* MsStatus of the child's metadata pass */
    char cause[2048]; /* and its message */
} ProbeResult;

/* Sanitizer builds (tests, fuzzing) must not treat the probe child's death as their own. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

#if defined(__SANITIZE_ADDRESS__)
#define MS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MS_ASAN 1
#endif
#endif

/* A crafted string attribute can make HDF5 allocate gigabytes; the child may grow its
   address space by PROBE_EXTRA_BYTES only (not under ASan, whose shadow memory needs
   terabytes of address space), so such a file fails there as out of memory. */
static void limitProbeMemory(void) {
#ifndef MS_ASAN
    enum { PROBE_EXTRA_MB = 1024 };
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    bool ok = f && fscanf(f, "%lu", &pages) == 1;
    if (f)
        fclose(f);
    long page = sysconf(_SC_PAGE_SIZE);
    if (ok && page > 0) {
        rlim_t bytes = (rlim_t)pages * (rlim_t)page + ((rlim_t)PROBE_EXTRA_MB << 20);
        struct rlimit rl = {bytes, bytes};
        setrlimit(RLIMIT_AS, &rl);
    }
#endif
}

/* The probe child: default signal handling (the parent's handlers, e.g. one restoring
   the terminal, must not run here), no output, limits, then the metadata pass. */
_Noreturn static void runProbe(const char *const *paths, int n_paths, ProbeResult *shared) {
    static const int deadly[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM};
    sigset_t unblock;
    sigemptyset(&unblock);
    for (size_t k = 0; k < sizeof deadly / sizeof deadly[0]; k++) {
        signal(deadly[k], SIG_DFL);
        sigaddset(&unblock, deadly[k]);
    }
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(NULL);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0)
        dup2(devnull, STDERR_FILENO);
    alarm((unsigned)atomic_load(&probeSeconds));
    limitProbeMemory();
    H5Util_quiet();
    Dump *probe = newDump(paths, n_paths);
    probe->probe_file = &shared->file;
    char *cause = NULL, *text = NULL;
    MsStatus st = openAll(probe, &cause);
    /* /text is a variable-length string, read through the same global heap code */
    if (st == MS_OK && probe->text_file >= 0) {
        useFile(probe, probe->text_file);
        st = Dump_readText(probe, &text, &cause);
    }
    if (st != MS_OK)
        snprintf(shared->cause, sizeof shared->cause, "%s", cause ? cause : "?");
    shared->status = (int)st;
    _exit(0);
}

/* Why the probe child died, for the message. */
static char *probeOutcome(int status) {
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        return xAsprintf("found metadata that HDF5 did not finish reading in %d s",
                         atomic_load(&probeSeconds));
    if (WIFSIGNALED(status))
        return xAsprintf("found metadata that crashes the HDF5 library (%s)",
                         strsignal(WTERMSIG(status)));
    return xAsprintf("found metadata that crashes the HDF5 library (exit status %d)",
                     WEXITSTATUS(status));
}

/* HDF5 1.10 still has memory-safety bugs on damaged or crafted files (object headers,
   the global heap behind variable-length strings). Dump_open first does its whole
   metadata pass in a child process with a time and memory limit; when the child dies
   the file is reported as damaged, when it finds an error that error is returned, and
   only a clean pass is repeated in this process. Bulk reads are not guarded. When fork
   fails the open goes ahead unguarded. */
static MsStatus probeInChild(const char *const *paths, int n_paths, char **cause) {
    ProbeResult *shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED)
        return MS_OK;
    shared->file = -1;
    shared->status = MS_OK;
    pid_t pid = fork();
    if (pid == 0)
        runProbe(paths, n_paths, shared);
    int status = 0;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        continue;
    MsStatus st = MS_OK;
    if (pid > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        int f = shared->file;
        char *outcome = probeOutcome(status);
        st = report(cause, MS_ERR_FORMAT, f >= 0 && f < n_paths ? paths[f] : paths[0], NULL,
                    "expected an intact HDF5 file, %s: the file is damaged", outcome);
        free(outcome);
    } else if (pid > 0 && shared->status != MS_OK) {
        st = (MsStatus)shared->status;
        setCause(cause, "%s", shared->cause);
    }
    munmap(shared, sizeof *shared);
    return st;
}

MsStatus Dump_open(Dump **out, const char *const *paths, int n_paths, char **cause) {
    H5Util_quiet();
    *out = NULL;
    if (n_paths < 1) {
        setCause(cause, "no input file given");
        return MS_ERR_IO;
    }
    if (atomic_load(&crashGuard)) {
        MsStatus st = probeInChild(paths, n_paths, cause);
        if (st != MS_OK)
            return st;
    }
    Dump *this = newDump(paths, n_paths);
    MsStatus st = openAll(this, cause);
    if (st != MS_OK) {
        Dump_delete(this);
        return st;
    }
    *out = this;
    return MS_OK;
}

static void closeRows(LayerPriv *p) {
    for (int r = 0; r < 2; r++) {
        if (p->rows[r].dset >= 0) {
            DirectRows_close(p->rows[r].direct);
            H5Sclose(p->rows[r].space);
            H5Dclose(p->rows[r].dset);
            p->rows[r].dset = p->rows[r].space = -1;
            p->rows[r].direct = NULL;
        }
    }
}

static void LayerPriv_done(LayerPriv *p) {
    closeRows(p);
    for (int k = 0; k < p->n_parts; k++)
        free(p->part_names[k]);
    free(p->part_names);
    free(p->part_files);
    free(p->files);
    free(p->spelling);
}

void Dump_delete(Dump *this) {
    if (!this)
        return;
    H5Util_quiet();
    for (int li = 0; li < this->n_layers; li++) {
        LayerPriv_done(&this->priv[li]);
        free(this->layers[li].name);
    }
    free(this->priv);
    free(this->layers);
    for (int f = 0; f < this->n_files; f++) {
        if (this->fids[f] >= 0)
            H5Fclose(this->fids[f]);
        free(this->paths[f]);
    }
    H5Eclear2(H5E_DEFAULT);
    free(this->fids);
    free(this->paths);
    free(this->model_name);
    free(this->seq);
    free(this);
}

int Dump_layerCount(const Dump *this) {
    return this->n_layers;
}

const DumpLayer *Dump_layer(const Dump *this, int i) {
    return i >= 0 && i < this->n_layers ? &this->layers[i] : NULL;
}

const char *Dump_modelName(const Dump *this) {
    return this->model_name;
}

int Dump_fileCount(const Dump *this) {
    return this->n_files;
}

const char *Dump_fileName(const Dump *this, int i) {
    return i >= 0 && i < this->n_files ? this->paths[i] : NULL;
}

bool Dump_formatAssumed(const Dump *this) {
    return this->format_assumed;
}

const char *const *Dump_partitionNames(const Dump *this, int i, int *n) {
    if (i < 0 || i >= this->n_layers) {
        *n = 0;
        return NULL;
    }
    *n = this->priv[i].n_parts;
    return (const char *const *)this->priv[i].part_names;
}

/* ---- public: weights --------------------------------------------------------------- */

/* Reports the first NaN or Inf of a [rows, cols] (cols 0: 1-D) buffer. */
static MsStatus checkFinite(const float *v, size_t n, long cols, const char *file,
                            const char *path, char **cause) {
    for (size_t k = 0; k < n; k++) {
        if (isfinite(v[k]))
            continue;
        const char *what = isnan(v[k]) ? "NaN" : v[k] > 0 ? "+Inf" : "-Inf";
        if (cols > 0)
            return report(cause, MS_ERR_FORMAT, file, path,
                          "expected finite weights, found %s at [%zu, %zu]", what,
                          k / (size_t)cols, k % (size_t)cols);
        return report(cause, MS_ERR_FORMAT, file, path,
                      "expected finite weights, found %s at [%zu]", what, k);
    }
    return MS_OK;
}

/* Reads a whole float member into *out (n floats). */
static MsStatus readWhole(Dump *this, int li, Member m, size_t n, long cols, float **out,
                          char **cause) {
    LayerPriv *p = &this->priv[li];
    int f = p->file[m];
    char *path = memberPath(p, memberNames[m]);
    const char *file = this->paths[f];
    MsStatus st = MS_OK;
    *out = tryMallocArray(n, sizeof(float));
    if (!*out) {
        st = report(cause, MS_ERR_NOMEM, file, path, "cannot allocate %zu bytes",
                    n * sizeof(float));
        free(path);
        return st;
    }
    hid_t dset = H5Dopen2(this->fids[f], path, H5P_DEFAULT);
    hid_t type = dset >= 0 ? H5Dget_type(dset) : -1;
    herr_t rc = -1;
    if (type >= 0)
        rc = H5Util_readFloats(dset, H5S_ALL, H5Util_floatKind(type), *out, n);
    hid_t err = H5Util_saveError(rc < 0);
    if (type >= 0)
        H5Tclose(type);
    if (dset >= 0)
        H5Dclose(dset);
    H5Util_restoreError(err);
    if (rc < 0)
        st = reportH5(cause, MS_ERR_IO, file, path, "cannot read");
    else
        st = checkFinite(*out, n, cols, file, path, cause);
    free(path);
    return st;
}

MsStatus Dump_readWeights(Dump *this, int i, FfnWeights *w, char **cause) {
    H5Util_quiet();
    memset(w, 0, sizeof *w);
    if (i < 0 || i >= this->n_layers) {
        setCause(cause, "layer %d out of range 0..%d", i, this->n_layers - 1);
        return MS_ERR_RANGE;
    }
    const DumpLayer *L = &this->layers[i];
    size_t ff = (size_t)L->d_ff, dm = (size_t)L->d_model;
    double bytes = 4.0 * (double)ff * (double)dm * (L->gated ? 3 : 2) +
                   4.0 * (double)(L->has_b_in ? ff : 0) + 4.0 * (double)(L->has_b_out ? dm : 0);
    if (bytes > (double)limitBytes()) {
        char *files = fileList(this, &this->priv[i]);
        char *gpath = xAsprintf("/layers/%s", this->priv[i].spelling);
        report(cause, MS_ERR_NOMEM, files, gpath,
               "the weights need %.0f bytes as float32, more than the memory limit of %zu "
               "bytes", bytes, limitBytes());
        free(gpath);
        free(files);
        return MS_ERR_NOMEM;
    }
    w->d_model = L->d_model;
    w->d_ff = L->d_ff;
    w->act = L->act;
    MsStatus st = readWhole(this, i, M_W_IN, ff * dm, L->d_model, &w->w_in, cause);
    if (st == MS_OK && L->gated)
        st = readWhole(this, i, M_W_GATE, ff * dm, L->d_model, &w->w_gate, cause);
    if (st == MS_OK)
        st = readWhole(this, i, M_W_OUT, dm * ff, L->d_ff, &w->w_out, cause);
    if (st == MS_OK && L->has_b_in)
        st = readWhole(this, i, M_B_IN, ff, 0, &w->b_in, cause);
    if (st == MS_OK && L->has_b_out)
        st = readWhole(this, i, M_B_OUT, dm, 0, &w->b_out, cause);
    H5Eclear2(H5E_DEFAULT);
    if (st != MS_OK)
        FfnWeights_done(w);
    return st;
}

/* ---- public: rows ------------------------------------------------------------------ */

static MsStatus openRows(Dump *this, int i, DumpMember member, RowSource **out,
                         char **cause) {
    LayerPriv *p = &this->priv[i];
    RowSource *rs = &p->rows[member == DUMP_H];
    *out = rs;
    if (rs->dset >= 0)
        return MS_OK;
    /* An open dataset keeps its chunk cache (up to 1 MiB each): keep one layer's open,
       so memory does not grow with the number of layers read. */
    if (this->rows_layer >= 0 && this->rows_layer != i)
        closeRows(&this->priv[this->rows_layer]);
    this->rows_layer = i;
    Member m = member == DUMP_H ? M_H : M_X;
    int f = p->file[m];
    char *path = memberPath(p, memberNames[m]);
    MsStatus st = MS_OK;
    rs->dset = H5Dopen2(this->fids[f], path, H5P_DEFAULT);
    hid_t type = rs->dset >= 0 ? H5Dget_type(rs->dset) : -1;
    rs->space = rs->dset >= 0 ? H5Dget_space(rs->dset) : -1;
    if (type >= 0) {
        rs->kind = H5Util_floatKind(type);
        H5Tclose(type);
    }
    if (type < 0 || rs->space < 0) {
        st = reportH5(cause, MS_ERR_IO, this->paths[f], path, "cannot open");
        if (rs->space >= 0)
            H5Sclose(rs->space);
        if (rs->dset >= 0)
            H5Dclose(rs->dset);
        rs->dset = rs->space = -1;
    } else if (rs->kind == H5UTIL_FLOAT_CONVERT) {
        rs->direct = DirectRows_open(this->fids[f], rs->dset, this->paths[f]);
    }
    free(path);
    return st;
}

/* ---- page cache prefetch ---------------------------------------------------------- */

/* posix_fadvise(WILLNEED) on the bytes of one dataset's storage: its contiguous block, or
   its chunks (adjacent ones merged into one range). */
static void prefetchDataset(hid_t fid, const char *path, int fd) {
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    if (d < 0)
        return;
    haddr_t off = H5Dget_offset(d);
    if (off != HADDR_UNDEF) {
        (void)posix_fadvise(fd, (off_t)off, (off_t)H5Dget_storage_size(d), POSIX_FADV_WILLNEED);
        H5Dclose(d);
        return;
    }
    hid_t space = H5Dget_space(d);
    hsize_t n = 0;
    if (space >= 0 && H5Dget_num_chunks(d, space, &n) >= 0) {
        haddr_t start = HADDR_UNDEF, end = 0;
        for (hsize_t c = 0; c <= n; c++) {
            haddr_t a = HADDR_UNDEF;
            hsize_t size = 0;
            if (c < n && H5Dget_chunk_info(d, space, c, NULL, NULL, &a, &size) < 0)
                break;
            if (start != HADDR_UNDEF && (c == n || a != end)) {
                (void)posix_fadvise(fd, (off_t)start, (off_t)(end - start), POSIX_FADV_WILLNEED);
                start = HADDR_UNDEF;
            }
            if (c < n && a != HADDR_UNDEF) {
                if (start == HADDR_UNDEF)
                    start = a;
                end = a + size;
            }
        }
    }
    if (space >= 0)
        H5Sclose(space);
    H5Dclose(d);
}

void Dump_setReadThreads(Dump *this, int threads) {
    this->read_threads = threads < 1 ? 1 : threads;
}

int Dump_readThreads(const Dump *this) {
    return this->read_threads;
}

void Dump_prefetch(Dump *this, int i) {
    if (i < 0 || i >= this->n_layers)
        return;
    H5Util_quiet();
    LayerPriv *p = &this->priv[i];
    Member members[2] = {M_X, M_H};
    for (int k = 0; k < 2; k++) {
        int f = p->file[members[k]];
        if (f < 0)
            continue;
        int fd = open(this->paths[f], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        char *path = memberPath(p, memberNames[members[k]]);
        prefetchDataset(this->fids[f], path, fd);
        free(path);
        close(fd); /* the readahead it started goes on */
    }
}

MsStatus Dump_readRows(Dump *this, int i, DumpMember member, long row0, long n_rows,
                       float *out, char **cause) {
    H5Util_quiet();
    if (i < 0 || i >= this->n_layers) {
        setCause(cause, "layer %d out of range 0..%d", i, this->n_layers - 1);
        return MS_ERR_RANGE;
    }
    const DumpLayer *L = &this->layers[i];
    if (member != DUMP_X && !(member == DUMP_H && L->has_h)) {
        setCause(cause, "/layers/%s: no recorded h to read", this->priv[i].spelling);
        return MS_ERR_RANGE;
    }
    if (row0 < 0 || n_rows < 0 || row0 > L->n_tokens || n_rows > L->n_tokens - row0) {
        setCause(cause, "/layers/%s: rows %ld..%ld out of range 0..%ld",
                 this->priv[i].spelling, row0, row0 + n_rows - 1, L->n_tokens - 1);
        return MS_ERR_RANGE;
    }
    if (n_rows == 0)
        return MS_OK;
    RowSource *rs;
    MsStatus st = openRows(this, i, member, &rs, cause);
    if (st != MS_OK)
        return st;
    if (rs->direct && DirectRows_read(rs->direct, row0, n_rows, out, this->read_threads) == 0)
        return MS_OK; /* else HDF5 reads them, and says what went wrong if it fails too */
    long width = member == DUMP_H ? L->d_ff : L->d_model;
    herr_t rc = H5Util_readFloatRows(rs->dset, rs->space, rs->kind, (hsize_t)row0,
                                     (hsize_t)n_rows, (hsize_t)width, out);
    if (rc < 0) {
        LayerPriv *p = &this->priv[i];
        Member m = member == DUMP_H ? M_H : M_X;
        char *path = memberPath(p, memberNames[m]);
        char *what = xAsprintf("cannot read rows %ld..%ld", row0, row0 + n_rows - 1);
        st = reportH5(cause, MS_ERR_IO, this->paths[p->file[m]], path, what);
        free(what);
        free(path);
    }
    return st;
}

/* ---- public: root datasets and int members ----------------------------------------- */

MsStatus Dump_readSeqOffsets(Dump *this, int64_t **offsets, long *n_seq, char **cause) {
    *offsets = NULL;
    *n_seq = 0;
    if (!this->seq)
        return MS_OK;
    size_t n = (size_t)this->n_seq + 1;
    *offsets = tryMallocArray(n, sizeof **offsets);
    if (!*offsets) {
        setCause(cause, "cannot allocate %zu bytes for /seq_offsets", n * sizeof **offsets);
        return MS_ERR_NOMEM;
    }
    memcpy(*offsets, this->seq, n * sizeof **offsets);
    *n_seq = this->n_seq;
    return MS_OK;
}

/* Narrows int64 values to int32; the first value outside int32 is an error. */
static MsStatus narrow(const int64_t *in, size_t n, int32_t *out, const char *file,
                       const char *path, char **cause) {
    for (size_t k = 0; k < n; k++) {
        if (in[k] < INT32_MIN || in[k] > INT32_MAX)
            return report(cause, MS_ERR_FORMAT, file, path,
                          "expected int32 values, found %lld at [%zu]", (long long)in[k], k);
        out[k] = (int32_t)in[k];
    }
    return MS_OK;
}

MsStatus Dump_readTokens(Dump *this, int32_t **tokens, long *n, char **cause) {
    H5Util_quiet();
    *tokens = NULL;
    *n = 0;
    if (this->tokens_file < 0)
        return MS_OK;
    size_t count = (size_t)this->layers[0].n_tokens;
    int64_t *wide = NULL;
    MsStatus st = readInt64s(this, this->tokens_file, "/tokens", count, &wide, cause);
    if (st != MS_OK)
        return st;
    *tokens = tryMallocArray(count, sizeof **tokens);
    if (!*tokens)
        st = report(cause, MS_ERR_NOMEM, this->paths[this->tokens_file], "/tokens",
                    "cannot allocate %zu bytes", count * sizeof **tokens);
    else
        st = narrow(wide, count, *tokens, this->paths[this->tokens_file], "/tokens", cause);
    free(wide);
    if (st != MS_OK) {
        free(*tokens);
        *tokens = NULL;
        return st;
    }
    *n = (long)count;
    return MS_OK;
}

MsStatus Dump_readText(Dump *this, char **text, char **cause) {
    H5Util_quiet();
    *text = NULL;
    if (this->text_file < 0)
        return MS_OK;
    const char *file = this->paths[this->text_file];
    hid_t dset = H5Dopen2(this->fids[this->text_file], "/text", H5P_DEFAULT);
    if (dset < 0)
        return reportH5(cause, MS_ERR_IO, file, "/text", "cannot open");
    char found[256];
    H5UtilRead r = H5Util_readStringDataset(dset, limitBytes(), text, found, sizeof found);
    hid_t err = H5Util_saveError(r == H5UTIL_READ_FAIL);
    H5Dclose(dset);
    H5Util_restoreError(err);
    if (r == H5UTIL_READ_FAIL)
        return reportH5(cause, MS_ERR_IO, file, "/text", "cannot read");
    if (r == H5UTIL_READ_WRONG)
        return report(cause, MS_ERR_FORMAT, file, "/text", "expected a string, found %s",
                      found);
    return MS_OK;
}

/* The file holding member ("partition", "planted_group", "partitions/<name>"), or -1. */
static int intMemberFile(const LayerPriv *p, const char *member) {
    if (strcmp(member, "partition") == 0)
        return p->file[M_PARTITION];
    if (strcmp(member, "planted_group") == 0)
        return p->file[M_PLANTED];
    if (strncmp(member, "partitions/", 11) == 0)
        for (int k = 0; k < p->n_parts; k++)
            if (strcmp(p->part_names[k], member + 11) == 0)
                return p->part_files[k];
    return -1;
}

/* Partition values are expert indices: >= 0, and < experts when that attr is set. */
static MsStatus checkPartition(Dump *this, int f, const char *path, const int32_t *v,
                               size_t n, char **cause) {
    const char *file = this->paths[f];
    hid_t dset = H5Dopen2(this->fids[f], path, H5P_DEFAULT);
    if (dset < 0)
        return reportH5(cause, MS_ERR_IO, file, path, "cannot open");
    long long experts = -1;
    int has = hasAttr(dset, "experts", file, path, cause);
    MsStatus st = has < 0 ? MS_ERR_FORMAT : MS_OK;
    if (has > 0)
        st = readIntAttr(dset, "experts", &experts, file, path, cause);
    H5Dclose(dset);
    if (st == MS_OK && has > 0 && (experts < 1 || experts > INT32_MAX))
        st = report(cause, MS_ERR_FORMAT, file, path,
                    "attribute experts: expected a count >= 1, found %lld", experts);
    for (size_t k = 0; st == MS_OK && k < n; k++) {
        if (v[k] >= 0 && (experts < 0 || v[k] < experts))
            continue;
        if (experts > 0)
            st = report(cause, MS_ERR_FORMAT, file, path,
                        "expected expert indices 0..%lld (attribute experts = %lld), found "
                        "%d at [%zu]", experts - 1, experts, v[k], k);
        else
            st = report(cause, MS_ERR_FORMAT, file, path,
                        "expected expert indices >= 0, found %d at [%zu]", v[k], k);
    }
    return st;
}

MsStatus Dump_readLayerInts(Dump *this, int i, const char *member, int32_t *out,
                            char **cause) {
    H5Util_quiet();
    if (i < 0 || i >= this->n_layers) {
        setCause(cause, "layer %d out of range 0..%d", i, this->n_layers - 1);
        return MS_ERR_RANGE;
    }
    LayerPriv *p = &this->priv[i];
    int f = intMemberFile(p, member);
    char *path = memberPath(p, member);
    MsStatus st;
    if (f < 0) {
        char *files = fileList(this, p);
        st = report(cause, MS_ERR_FORMAT, files, path,
                    "expected [d_ff] = [%d] int, found no such dataset", this->layers[i].d_ff);
        free(files);
        free(path);
        return st;
    }
    size_t n = (size_t)this->layers[i].d_ff;
    int64_t *wide = NULL;
    st = readInt64s(this, f, path, n, &wide, cause);
    if (st == MS_OK)
        st = narrow(wide, n, out, this->paths[f], path, cause);
    free(wide);
    if (st == MS_OK && strcmp(member, "planted_group") != 0)
        st = checkPartition(this, f, path, out, n, cause);
    free(path);
    H5Eclear2(H5E_DEFAULT);
    return st;
}
