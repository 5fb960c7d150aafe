/*
moescope - io/Writer.c
HDF5 writer for the SPEC §1 layout. The file is created under a unique temporary name
beside the target ("<path>.<pid>-<n>.tmp") and renamed by Writer_close, so readers never
see a half-written file. Float datasets are written from float32 buffers and stored as
float32, float64 (HDF5 converts) or IEEE half: half values are rounded here (nearest,
ties to even, as numpy does) and written raw with a 16-bit float file type, so the result
does not depend on HDF5's own float conversion. gzip > 0 means chunked + shuffle +
deflate; extendable datasets are always chunked. Strings are variable-length UTF-8 like
h5py's. Error reporting is switched off in every public function (thread-safe HDF5 keeps
that setting per thread) and each failure becomes one sentence naming the file and the
dataset path.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/Writer.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/XUtils.h"

struct Writer {
    hid_t file;
    char *path; /* the target */
    char *tmp;  /* what we write until Writer_close renames it */
};

/* Chunks of about 1 MiB; writes of half data are converted in blocks of this many values. */
enum { CHUNK_BYTES = 1 << 20, CHUNK_ROWS = 256, HALF_BLOCK = 1 << 20 };

static void quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static herr_t innermost(unsigned n, const H5E_error2_t *err, void *data) {
    if (n == 0 && err->desc && err->desc[0])
        snprintf(data, 160, "%s", err->desc);
    return 0;
}

/* The innermost HDF5 error description, e.g. "name already exists", or "". */
static void hdf5Reason(char *buf) {
    buf[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, buf);
}

static MsStatus fail5(const Writer *this, const char *path, const char *what, char **cause) {
    char reason[160];
    hdf5Reason(reason);
    setCause(cause, "%s: %s: cannot %s%s%s", this->path, path, what, reason[0] ? ": " : "",
             reason);
    return MS_ERR_IO;
}

/* ---- half precision ---- */

/* float32 -> IEEE binary16 bits, round to nearest, ties to even (numpy's float16). */
static uint16_t floatToHalf(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf, or NaN (kept quiet, payload truncated) */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a half subnormal (or zero) in units of 2^-24 */
        if (a < 0x33000000u) /* below 2^-25: rounds to zero */
            return (uint16_t)sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t h = (a - (112u << 23)) >> 13, rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* a carry into the exponent is still the right value */
    return (uint16_t)(sign | h);
}

/* IEEE half, little-endian, as h5py writes numpy's float16. */
static hid_t halfType(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0)
        return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_offset(t, 0) < 0 || H5Tset_precision(t, 16) < 0 || H5Tset_ebias(t, 15) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static hid_t fileFloatType(WriterFloat storage) {
    switch (storage) {
    case WRITER_F16:
        return halfType();
    case WRITER_F64:
        return H5Tcopy(H5T_IEEE_F64LE);
    default:
        return H5Tcopy(H5T_IEEE_F32LE);
    }
}

static bool isHalf(hid_t type) {
    return H5Tget_class(type) == H5T_FLOAT && H5Tget_size(type) == 2;
}

/* ---- file life cycle ---- */

/* Creates a fresh, unique temporary file beside path (mode 0666 & ~umask, like fopen). */
static char *makeTemp(const char *path, char **cause) {
    static unsigned counter;
    for (int attempt = 0; attempt < 100; attempt++) {
        char *tmp = xAsprintf("%s.%ld-%u.tmp", path, (long)getpid(),
                              __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd >= 0) {
            close(fd);
            return tmp;
        }
        int err = errno;
        free(tmp);
        if (err != EEXIST) {
            setCause(cause, "%s: cannot create file: %s", path, strerror(err));
            return NULL;
        }
    }
    setCause(cause, "%s: cannot create a unique temporary file beside it", path);
    return NULL;
}

MsStatus Writer_create(Writer **out, const char *path, char **cause) {
    quiet();
    *out = NULL;
    char *tmp = makeTemp(path, cause);
    if (!tmp)
        return MS_ERR_IO;
    Writer *this = xCalloc(1, sizeof *this);
    this->path = xStrdup(path);
    this->tmp = tmp;
    this->file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (this->file < 0) {
        char reason[160];
        hdf5Reason(reason);
        setCause(cause, "%s: cannot create HDF5 file%s%s", path, reason[0] ? ": " : "",
                 reason);
        Writer_delete(this);
        return MS_ERR_IO;
    }
    MsStatus st = Writer_setAttrInt(this, "/", "moescope_format", 1, cause);
    if (st != MS_OK) {
        Writer_delete(this);
        return st;
    }
    *out = this;
    return MS_OK;
}

static void freeWriter(Writer *this) {
    free(this->path);
    free(this->tmp);
    free(this);
}

MsStatus Writer_close(Writer *this, char **cause) {
    quiet();
    if (H5Fflush(this->file, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(this->file) < 0) {
        char reason[160];
        hdf5Reason(reason);
        setCause(cause, "%s: cannot finish HDF5 file%s%s", this->path, reason[0] ? ": " : "",
                 reason);
        this->file = -1;
        Writer_delete(this);
        return MS_ERR_IO;
    }
    this->file = -1;
    if (rename(this->tmp, this->path) != 0) {
        setCause(cause, "%s: cannot rename %s into place: %s", this->path, this->tmp,
                 strerror(errno));
        unlink(this->tmp);
        freeWriter(this);
        return MS_ERR_IO;
    }
    freeWriter(this);
    return MS_OK;
}

void Writer_delete(Writer *this) {
    if (!this)
        return;
    quiet();
    if (this->file >= 0)
        H5Fclose(this->file);
    unlink(this->tmp);
    freeWriter(this);
}

/* ---- datasets ---- */

/* A link creation property list that creates missing parent groups. */
static hid_t intermediateGroups(void) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        H5Pclose(lcpl);
        return -1;
    }
    if (lcpl >= 0)
        H5Pset_char_encoding(lcpl, H5T_CSET_UTF8);
    return lcpl;
}

static bool validPath(const Writer *this, const char *path, char **cause) {
    if (path && path[0] == '/')
        return true;
    setCause(cause, "%s: %s: not an absolute HDF5 path", this->path, path ? path : "(null)");
    return false;
}

/* Dataset creation properties: chunk shape for rank 1 or 2, then shuffle + deflate. */
static hid_t creationProps(int rank, const hsize_t *dims, size_t elem, bool chunked, int gzip) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0 || !chunked)
        return dcpl;
    hsize_t chunk[2];
    size_t perChunk = CHUNK_BYTES / elem;
    if (rank == 1) {
        chunk[0] = dims[0] > 0 && dims[0] < perChunk ? dims[0] : perChunk;
    } else {
        chunk[1] = dims[1] > 0 ? (dims[1] < perChunk ? dims[1] : perChunk) : 1;
        hsize_t rows = perChunk / chunk[1];
        if (rows > CHUNK_ROWS)
            rows = CHUNK_ROWS;
        if (dims[0] > 0 && dims[0] < rows)
            rows = dims[0];
        chunk[0] = rows > 0 ? rows : 1;
    }
    bool ok = H5Pset_chunk(dcpl, rank, chunk) >= 0;
    if (ok && gzip > 0)
        ok = H5Pset_shuffle(dcpl) >= 0 && H5Pset_deflate(dcpl, (unsigned)gzip) >= 0;
    if (!ok) {
        H5Pclose(dcpl);
        return -1;
    }
    return dcpl;
}

/* Creates a dataset of shape dims (rank 1 or 2; maxdims NULL = fixed). */
static hid_t createDataset(Writer *this, const char *path, hid_t ftype, int rank,
                           const hsize_t *dims, const hsize_t *maxdims, bool chunked, int gzip,
                           char **cause) {
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t lcpl = intermediateGroups();
    hid_t dcpl = creationProps(rank, dims, H5Tget_size(ftype), chunked, gzip);
    hid_t dset = -1;
    if (space >= 0 && lcpl >= 0 && dcpl >= 0)
        dset = H5Dcreate2(this->file, path, ftype, space, lcpl, dcpl, H5P_DEFAULT);
    if (dset < 0)
        fail5(this, path, "create dataset", cause);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (space >= 0)
        H5Sclose(space);
    return dset;
}

/* Writes rows [first, first + rows) of a rank-1 (cols == 0) or rank-2 dataset from float
   data; half datasets are converted here in blocks, others by HDF5. */
static MsStatus writeFloatRows(Writer *this, const char *path, hid_t dset, hid_t ftype,
                               const float *data, long first, long rows, long cols,
                               char **cause) {
    if (rows == 0)
        return MS_OK;
    bool half = isHalf(ftype);
    long width = cols > 0 ? cols : 1;
    long block = rows;
    if (half) {
        block = HALF_BLOCK / width;
        if (block < 1)
            block = 1;
        if (block > rows)
            block = rows;
    }
    uint16_t *buf = NULL;
    if (half && !(buf = tryMallocArray((size_t)(block * width), sizeof *buf))) {
        setCause(cause, "%s: %s: out of memory converting %ld values to float16", this->path,
                 path, block * width);
        return MS_ERR_NOMEM;
    }
    hid_t fspace = H5Dget_space(dset);
    MsStatus st = fspace < 0 ? fail5(this, path, "get the dataspace", cause) : MS_OK;
    int rank = cols > 0 ? 2 : 1;
    for (long r = 0; st == MS_OK && r < rows; r += block) {
        long n = rows - r < block ? rows - r : block;
        hsize_t start[2] = {(hsize_t)(first + r), 0}, count[2] = {(hsize_t)n, (hsize_t)cols};
        hid_t mspace = H5Screate_simple(rank, count, NULL);
        const float *src = data + r * width;
        herr_t e = -1;
        if (mspace >= 0 &&
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0) {
            if (half) {
                for (long i = 0; i < n * width; i++)
                    buf[i] = floatToHalf(src[i]);
                e = H5Dwrite(dset, ftype, mspace, fspace, H5P_DEFAULT, buf);
            } else {
                e = H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, src);
            }
        }
        if (mspace >= 0)
            H5Sclose(mspace);
        if (e < 0)
            st = fail5(this, path, "write data", cause);
    }
    if (fspace >= 0)
        H5Sclose(fspace);
    free(buf);
    return st;
}

static bool checkShape(const Writer *this, const char *path, long rows, long cols,
                       char **cause) {
    if (rows >= 0 && cols >= 0)
        return true;
    setCause(cause, "%s: %s: invalid shape [%ld, %ld]", this->path, path, rows, cols);
    return false;
}

static bool checkGzip(const Writer *this, const char *path, int gzip, char **cause) {
    if (gzip >= 0 && gzip <= 9)
        return true;
    setCause(cause, "%s: %s: gzip level %d is outside 0..9", this->path, path, gzip);
    return false;
}

MsStatus Writer_writeFloats(Writer *this, const char *path, const float *data, long rows,
                            long cols, WriterOptions opt, char **cause) {
    quiet();
    if (!validPath(this, path, cause) || !checkShape(this, path, rows, cols, cause) ||
        !checkGzip(this, path, opt.gzip, cause))
        return MS_ERR_RANGE;
    hid_t ftype = fileFloatType(opt.storage);
    if (ftype < 0)
        return fail5(this, path, "make the float type", cause);
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    int rank = cols > 0 ? 2 : 1;
    /* An empty chunked dataset would be pointless; keep it contiguous. */
    bool chunked = opt.gzip > 0 && rows > 0;
    hid_t dset = createDataset(this, path, ftype, rank, dims, NULL, chunked, opt.gzip, cause);
    MsStatus st = MS_ERR_IO;
    if (dset >= 0) {
        st = writeFloatRows(this, path, dset, ftype, data, 0, rows, cols, cause);
        H5Dclose(dset);
    }
    H5Tclose(ftype);
    return st;
}

MsStatus Writer_beginRows(Writer *this, const char *path, long cols, WriterOptions opt,
                          char **cause) {
    quiet();
    if (!validPath(this, path, cause) || !checkShape(this, path, 0, cols, cause) ||
        !checkGzip(this, path, opt.gzip, cause))
        return MS_ERR_RANGE;
    hid_t ftype = fileFloatType(opt.storage);
    if (ftype < 0)
        return fail5(this, path, "make the float type", cause);
    hsize_t dims[2] = {0, (hsize_t)cols}, maxdims[2] = {H5S_UNLIMITED, (hsize_t)cols};
    int rank = cols > 0 ? 2 : 1;
    hid_t dset = createDataset(this, path, ftype, rank, dims, maxdims, true, opt.gzip, cause);
    H5Tclose(ftype);
    if (dset < 0)
        return MS_ERR_IO;
    H5Dclose(dset);
    return MS_OK;
}

MsStatus Writer_appendRows(Writer *this, const char *path, const float *data, long rows,
                           char **cause) {
    quiet();
    if (!validPath(this, path, cause) || !checkShape(this, path, rows, 0, cause))
        return MS_ERR_RANGE;
    hid_t dset = H5Dopen2(this->file, path, H5P_DEFAULT);
    if (dset < 0)
        return fail5(this, path, "open dataset to append rows", cause);
    hid_t ftype = H5Dget_type(dset);
    hid_t space = H5Dget_space(dset);
    hsize_t dims[2] = {0, 0};
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    MsStatus st = MS_OK;
    if (ftype < 0 || rank < 1 || rank > 2 || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        st = fail5(this, path, "read the dataset's shape", cause);
    if (space >= 0)
        H5Sclose(space);
    long first = (long)dims[0], cols = rank == 2 ? (long)dims[1] : 0;
    dims[0] += (hsize_t)rows;
    if (st == MS_OK && rows > 0 && H5Dset_extent(dset, dims) < 0)
        st = fail5(this, path, "extend the dataset", cause);
    if (st == MS_OK)
        st = writeFloatRows(this, path, dset, ftype, data, first, rows, cols, cause);
    if (ftype >= 0)
        H5Tclose(ftype);
    H5Dclose(dset);
    return st;
}

static MsStatus writeInts(Writer *this, const char *path, const void *data, long n,
                          hid_t ftype, hid_t mtype, char **cause) {
    quiet();
    if (!validPath(this, path, cause) || !checkShape(this, path, n, 0, cause))
        return MS_ERR_RANGE;
    hsize_t dims[1] = {(hsize_t)n};
    hid_t dset = createDataset(this, path, ftype, 1, dims, NULL, false, 0, cause);
    if (dset < 0)
        return MS_ERR_IO;
    MsStatus st = MS_OK;
    if (n > 0 && H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        st = fail5(this, path, "write data", cause);
    H5Dclose(dset);
    return st;
}

MsStatus Writer_writeInt32(Writer *this, const char *path, const int32_t *data, long n,
                           char **cause) {
    return writeInts(this, path, data, n, H5T_STD_I32LE, H5T_NATIVE_INT32, cause);
}

MsStatus Writer_writeInt64(Writer *this, const char *path, const int64_t *data, long n,
                           char **cause) {
    return writeInts(this, path, data, n, H5T_STD_I64LE, H5T_NATIVE_INT64, cause);
}

/* Variable-length UTF-8 string type, as h5py uses for str. */
static hid_t stringType(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

MsStatus Writer_writeString(Writer *this, const char *path, const char *text, char **cause) {
    quiet();
    if (!validPath(this, path, cause))
        return MS_ERR_RANGE;
    hid_t stype = stringType();
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t lcpl = intermediateGroups();
    hid_t dset = -1;
    if (stype >= 0 && space >= 0 && lcpl >= 0)
        dset = H5Dcreate2(this->file, path, stype, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    MsStatus st = MS_OK;
    if (dset < 0)
        st = fail5(this, path, "create dataset", cause);
    else if (H5Dwrite(dset, stype, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) < 0)
        st = fail5(this, path, "write the string", cause);
    if (dset >= 0)
        H5Dclose(dset);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (space >= 0)
        H5Sclose(space);
    if (stype >= 0)
        H5Tclose(stype);
    return st;
}

/* ---- attributes ---- */

/* Creates (replacing any old one) attribute name on object path and writes value. */
static MsStatus setAttr(Writer *this, const char *path, const char *name, hid_t ftype,
                        hid_t mtype, const void *value, char **cause) {
    quiet();
    if (!validPath(this, path, cause))
        return MS_ERR_RANGE;
    hid_t obj = H5Oopen(this->file, path, H5P_DEFAULT);
    if (obj < 0)
        return fail5(this, path, "open the object for an attribute", cause);
    MsStatus st = MS_OK;
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0 || (exists > 0 && H5Adelete(obj, name) < 0))
        st = fail5(this, path, "replace an attribute", cause);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = -1;
    if (st == MS_OK) {
        attr = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr < 0 || H5Awrite(attr, mtype, value) < 0) {
            char what[200];
            snprintf(what, sizeof what, "write attribute %s", name);
            st = fail5(this, path, what, cause);
        }
    }
    if (attr >= 0)
        H5Aclose(attr);
    if (space >= 0)
        H5Sclose(space);
    H5Oclose(obj);
    return st;
}

MsStatus Writer_setAttrString(Writer *this, const char *path, const char *name,
                              const char *value, char **cause) {
    quiet();
    hid_t stype = stringType();
    if (stype < 0)
        return fail5(this, path, "make the string type", cause);
    MsStatus st = setAttr(this, path, name, stype, stype, &value, cause);
    H5Tclose(stype);
    return st;
}

MsStatus Writer_setAttrInt(Writer *this, const char *path, const char *name, long value,
                           char **cause) {
    int64_t v = value;
    return setAttr(this, path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, cause);
}

MsStatus Writer_setAttrDouble(Writer *this, const char *path, const char *name,
                              double value, char **cause) {
    return setAttr(this, path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, cause);
}

/* ---- groups ---- */

/* True when every component of path exists as a link (checked from the root down, since
   H5Lexists fails on a missing intermediate group). */
static bool linkExists(const Writer *this, const char *path) {
    char *p = xStrdup(path);
    bool exists = true;
    for (char *slash = p + 1; exists && slash;) {
        slash = strchr(slash, '/');
        if (slash)
            *slash = '\0';
        if (p[1] != '\0')
            exists = H5Lexists(this->file, p, H5P_DEFAULT) > 0;
        if (slash)
            *slash++ = '/';
    }
    free(p);
    return exists;
}

MsStatus Writer_makeGroup(Writer *this, const char *path, char **cause) {
    quiet();
    if (!validPath(this, path, cause))
        return MS_ERR_RANGE;
    if (linkExists(this, path))
        return MS_OK;
    hid_t lcpl = intermediateGroups();
    hid_t g = lcpl >= 0 ? H5Gcreate2(this->file, path, lcpl, H5P_DEFAULT, H5P_DEFAULT) : -1;
    MsStatus st = g < 0 ? fail5(this, path, "create group", cause) : MS_OK;
    if (g >= 0)
        H5Gclose(g);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    return st;
}
