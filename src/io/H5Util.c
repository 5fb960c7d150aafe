/*
moescope - io/H5Util.c
HDF5 helpers: error stack, type and shape descriptions, string and integer attributes,
float32 reads with a fast IEEE half path.

Half conversion: HDF5 1.10 converts float16 through its generic soft float conversion,
at a few hundred MB/s. Reading the raw 16-bit values (no conversion: the memory type is
the file type) and widening them ourselves with F16C (when the CPU has it) or a
branch-free bit trick runs at memory speed.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/H5Util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#define HAVE_F16C_PATH 1
#endif

#include "util/XUtils.h"

/* Attributes live in object headers or heaps; no sane string attribute is this long. */
enum { ATTR_STRING_LIMIT = 1 << 20 };

void H5Util_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

typedef struct ErrorWalk {
    char *text;
} ErrorWalk;

static herr_t takeInnermost(unsigned n, const H5E_error2_t *err, void *data) {
    ErrorWalk *walk = data;
    if (n != 0 || walk->text)
        return 0;
    if (err->desc && err->desc[0]) {
        walk->text = xStrdup(err->desc);
        return 0;
    }
    char msg[256];
    if (H5Eget_msg(err->min_num, NULL, msg, sizeof msg) > 0)
        walk->text = xStrdup(msg);
    return 0;
}

char *H5Util_errorText(void) {
    ErrorWalk walk = {NULL};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, takeInnermost, &walk);
    H5Eclear2(H5E_DEFAULT);
    return walk.text ? walk.text : xStrdup("unknown HDF5 error");
}

hid_t H5Util_saveError(bool failed) {
    return failed ? H5Eget_current_stack() : -1;
}

void H5Util_restoreError(hid_t saved) {
    if (saved >= 0)
        H5Eset_current_stack(saved);
}

static void floatName(hid_t type, char *buf, size_t size) {
    size_t bytes = H5Tget_size(type);
    if (bytes == 2 || bytes == 4 || bytes == 8)
        snprintf(buf, size, "float%zu", bytes * 8);
    else
        snprintf(buf, size, "float of %zu bytes", bytes);
}

static void intName(hid_t type, char *buf, size_t size) {
    size_t bytes = H5Tget_size(type);
    const char *sign = H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "";
    snprintf(buf, size, "%sint%zu", sign, bytes * 8);
}

void H5Util_typeName(hid_t type, char *buf, size_t size) {
    const char *name = "unknown type";
    switch (H5Tget_class(type)) {
    case H5T_FLOAT: floatName(type, buf, size); return;
    case H5T_INTEGER: intName(type, buf, size); return;
    case H5T_STRING: name = "string"; break;
    case H5T_COMPOUND: name = "compound"; break;
    case H5T_ENUM: name = "enum (bool?)"; break;
    case H5T_BITFIELD: name = "bitfield"; break;
    case H5T_OPAQUE: name = "opaque"; break;
    case H5T_REFERENCE: name = "reference"; break;
    case H5T_VLEN: name = "variable-length sequence"; break;
    case H5T_ARRAY: name = "array type"; break;
    case H5T_TIME: name = "time"; break;
    default: break;
    }
    snprintf(buf, size, "%s", name);
}

void H5Util_shapeText(hid_t space, char *buf, size_t size) {
    H5S_class_t cls = H5Sget_simple_extent_type(space);
    if (cls == H5S_NULL) {
        snprintf(buf, size, "null");
        return;
    }
    hsize_t dims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    if (cls != H5S_SIMPLE && cls != H5S_SCALAR)
        rank = -1;
    if (rank < 0) {
        snprintf(buf, size, "an unreadable shape");
        return;
    }
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)dims[i]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

H5UtilFloat H5Util_floatKind(hid_t ftype) {
    if (H5Tget_class(ftype) != H5T_FLOAT || H5Tget_size(ftype) != 2)
        return H5UTIL_FLOAT_CONVERT;
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(ftype, &spos, &epos, &esize, &mpos, &msize) < 0)
        return H5UTIL_FLOAT_CONVERT;
    H5T_order_t order = H5Tget_order(ftype);
    bool ieee = spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 &&
                H5Tget_ebias(ftype) == 15 && H5Tget_norm(ftype) == H5T_NORM_IMPLIED &&
                H5Tget_precision(ftype) == 16 && H5Tget_offset(ftype) == 0 &&
                (order == H5T_ORDER_LE || order == H5T_ORDER_BE);
    return ieee ? H5UTIL_FLOAT_HALF : H5UTIL_FLOAT_CONVERT;
}

/* Branch-free exact conversion (after F. Giesen's half_to_float): the exponent and
   mantissa bits shifted into place are a float 2^-112 times too small (subnormal halves
   become normal floats by the multiply); Inf and NaN get the full exponent. */
static inline float halfBits(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v;
    uint32_t em = h & 0x7fffu;
    v.u = em << 13;
    v.f *= 0x1p112f;
    if (em >= 0x7c00u)
        v.u |= 0x7f800000u;
    v.u |= (uint32_t)(h & 0x8000u) << 16;
    return v.f;
}

static void halfToFloatPortable(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        out[i] = halfBits(in[i]);
}

#ifdef HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) static void halfToFloatF16c(const uint16_t *in, float *out,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h;
        memcpy(&h, in + i, sizeof h);
        __m256 f = _mm256_cvtph_ps(h);
        _mm256_storeu_ps(out + i, f);
    }
    halfToFloatPortable(in + i, out + i, n - i);
}
#endif

#ifdef HAVE_F16C_PATH
/* F16C needs the CPU flag and the OS saving YMM state (clang's __builtin_cpu_supports
   does not know "f16c", so ask cpuid directly). */
static bool detectF16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    const unsigned need = (1u << 29) | (1u << 28) | (1u << 27); /* f16c, avx, osxsave */
    if ((c & need) != need)
        return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6u) == 6u;
}

static bool hasF16c(void) {
    static atomic_int known = -1;
    int v = atomic_load_explicit(&known, memory_order_relaxed);
    if (v < 0) {
        v = detectF16c();
        atomic_store_explicit(&known, v, memory_order_relaxed);
    }
    return v;
}
#endif

void H5Util_halfToFloat(const uint16_t *in, float *out, size_t n) {
#ifdef HAVE_F16C_PATH
    if (hasF16c()) {
        halfToFloatF16c(in, out, n);
        return;
    }
#endif
    halfToFloatPortable(in, out, n);
}

void H5Util_halfToFloatInPlace(float *buf, size_t n) {
    /* Backwards in blocks: floats [b, b+B) overwrite the bytes of halves [2b, 2b+2B),
       all at indices >= b, which were copied out by this or a later block. */
    enum { BLOCK = 2048 };
    uint16_t tmp[BLOCK];
    const uint16_t *halves = (const uint16_t *)(void *)buf;
    size_t end = n;
    while (end > 0) {
        size_t b = end > BLOCK ? end - BLOCK : 0;
        memcpy(tmp, halves + b, (end - b) * sizeof *tmp);
        H5Util_halfToFloat(tmp, buf + b, end - b);
        end = b;
    }
}

/* The memory type for raw half reads: the file's half type in little-endian order, so
   little-endian files need no conversion (HDF5 swaps the bytes of big-endian ones). */
static hid_t halfMemType(hid_t dset) {
    hid_t ftype = H5Dget_type(dset);
    if (ftype < 0)
        return -1;
    hid_t mtype = H5Tcopy(ftype);
    H5Tclose(ftype);
    if (mtype >= 0 && H5Tset_order(mtype, H5T_ORDER_LE) < 0) {
        H5Tclose(mtype);
        return -1;
    }
    return mtype;
}

static herr_t readHalf(hid_t dset, hid_t mspace, hid_t fspace, float *out, size_t n) {
    hid_t mtype = halfMemType(dset);
    if (mtype < 0)
        return -1;
    herr_t rc = H5Dread(dset, mtype, mspace, fspace, H5P_DEFAULT, out);
    hid_t err = H5Util_saveError(rc < 0);
    H5Tclose(mtype);
    H5Util_restoreError(err);
    if (rc >= 0)
        H5Util_halfToFloatInPlace(out, n);
    return rc;
}

herr_t H5Util_readFloats(hid_t dset, hid_t fspace, H5UtilFloat kind, float *out, size_t n) {
    if (n == 0)
        return 0;
    hid_t mspace = H5S_ALL;
    if (fspace != H5S_ALL) {
        hsize_t count = n;
        mspace = H5Screate_simple(1, &count, NULL);
        if (mspace < 0)
            return -1;
    }
    herr_t rc;
    if (kind == H5UTIL_FLOAT_HALF)
        rc = readHalf(dset, mspace, fspace, out, n);
    else
        rc = H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out);
    hid_t err = H5Util_saveError(rc < 0);
    if (mspace != H5S_ALL)
        H5Sclose(mspace);
    H5Util_restoreError(err);
    return rc;
}

/* Reads rows [row0, row0 + n_rows) of a [*, width] half dataset through a scratch
   buffer of 512 KB, so the widening works in cache instead of a second pass over out
   (2-3x faster than widening in place; bigger scratch buffers gain little more). */
static herr_t readHalfRows(hid_t dset, hid_t space, hsize_t row0, hsize_t n_rows,
                           hsize_t width, float *out) {
    enum { SCRATCH_VALUES = H5UTIL_HALF_SCRATCH };
    hsize_t step = SCRATCH_VALUES / width;
    hid_t mtype = halfMemType(dset);
    if (mtype < 0)
        return -1;
    uint16_t *scratch = xMallocArray(step * width, sizeof *scratch);
    herr_t rc = 0;
    for (hsize_t r = 0; rc >= 0 && r < n_rows; r += step) {
        hsize_t start[2] = {row0 + r, 0};
        hsize_t count[2] = {n_rows - r < step ? n_rows - r : step, width};
        hsize_t values = count[0] * width;
        /* A memory space of the file selection's shape lets HDF5 copy whole rows; a 1-D
           one makes it walk the selection element by element (measured 45% of a batch). */
        hid_t mspace = H5Screate_simple(2, count, NULL);
        rc = mspace < 0 ? -1
                        : H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (rc >= 0)
            rc = H5Dread(dset, mtype, mspace, space, H5P_DEFAULT, scratch);
        hid_t err = H5Util_saveError(rc < 0);
        if (mspace >= 0)
            H5Sclose(mspace);
        H5Util_restoreError(err);
        if (rc >= 0)
            H5Util_halfToFloat(scratch, out + r * width, (size_t)values);
    }
    hid_t err = H5Util_saveError(rc < 0);
    H5Tclose(mtype);
    H5Util_restoreError(err);
    free(scratch);
    return rc;
}

herr_t H5Util_readFloatRows(hid_t dset, hid_t space, H5UtilFloat kind, hsize_t row0,
                            hsize_t n_rows, hsize_t width, float *out) {
    if (n_rows == 0 || width == 0)
        return 0;
    if (kind == H5UTIL_FLOAT_HALF && width <= H5UTIL_HALF_SCRATCH &&
        n_rows * width > H5UTIL_HALF_SCRATCH)
        return readHalfRows(dset, space, row0, n_rows, width, out);
    hsize_t start[2] = {row0, 0}, count[2] = {n_rows, width};
    if (H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
        return -1;
    hid_t mspace = H5Screate_simple(2, count, NULL);
    if (mspace < 0)
        return -1;
    herr_t rc = kind == H5UTIL_FLOAT_HALF
                    ? readHalf(dset, mspace, space, out, (size_t)(n_rows * width))
                    : H5Dread(dset, H5T_NATIVE_FLOAT, mspace, space, H5P_DEFAULT, out);
    hid_t err = H5Util_saveError(rc < 0);
    H5Sclose(mspace);
    H5Util_restoreError(err);
    return rc;
}

/* Attributes and datasets read alike; this hides the two APIs. */
typedef struct Source {
    hid_t id;
    bool attr;
} Source;

static hid_t sourceType(Source s) {
    return s.attr ? H5Aget_type(s.id) : H5Dget_type(s.id);
}

static hid_t sourceSpace(Source s) {
    return s.attr ? H5Aget_space(s.id) : H5Dget_space(s.id);
}

static herr_t sourceRead(Source s, hid_t mtype, void *buf) {
    return s.attr ? H5Aread(s.id, mtype, buf)
                  : H5Dread(s.id, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

/* Describes "<shape> <type>" into found, as the loader's messages do for datasets. */
static void describe(hid_t type, hid_t space, char *found, size_t size) {
    char tname[64], shape[128];
    H5Util_typeName(type, tname, sizeof tname);
    H5Util_shapeText(space, shape, sizeof shape);
    snprintf(found, size, "%s %s", shape, tname);
}

/* Opens type and space and checks for one value of class cls. */
static H5UtilRead openSingle(Source s, H5T_class_t cls, hid_t *type, char *found,
                             size_t found_size) {
    *type = sourceType(s);
    hid_t space = sourceSpace(s);
    if (*type < 0 || space < 0) {
        if (*type >= 0)
            H5Tclose(*type);
        if (space >= 0)
            H5Sclose(space);
        return H5UTIL_READ_FAIL;
    }
    H5S_class_t scls = H5Sget_simple_extent_type(space);
    hssize_t npoints = H5Sget_simple_extent_npoints(space);
    bool ok = H5Tget_class(*type) == cls && (scls == H5S_SCALAR || scls == H5S_SIMPLE) &&
              npoints == 1;
    if (!ok)
        describe(*type, space, found, found_size);
    H5Sclose(space);
    if (!ok) {
        H5Tclose(*type);
        return H5UTIL_READ_WRONG;
    }
    return H5UTIL_READ_OK;
}

static H5UtilRead readVlenString(Source s, hid_t ftype, char **out) {
    hid_t mtype = H5Tcopy(H5T_C_S1);
    if (mtype < 0)
        return H5UTIL_READ_FAIL;
    H5Tset_size(mtype, H5T_VARIABLE);
    H5Tset_cset(mtype, H5Tget_cset(ftype));
    char *value = NULL;
    herr_t rc = sourceRead(s, mtype, &value);
    hid_t err = H5Util_saveError(rc < 0);
    H5Tclose(mtype);
    H5Util_restoreError(err);
    if (rc < 0)
        return H5UTIL_READ_FAIL;
    *out = xStrdup(value ? value : "");
    H5free_memory(value);
    return H5UTIL_READ_OK;
}

static H5UtilRead readFixedString(Source s, hid_t ftype, size_t limit, char **out,
                                  char *found, size_t found_size) {
    size_t size = H5Tget_size(ftype);
    if (size == 0 || size > limit) {
        snprintf(found, found_size, "a fixed-length string of %zu bytes", size);
        return H5UTIL_READ_WRONG;
    }
    char *buf = tryMallocArray(size + 1, 1);
    if (!buf) {
        snprintf(found, found_size, "a fixed-length string of %zu bytes (out of memory)",
                 size);
        return H5UTIL_READ_WRONG;
    }
    hid_t mtype = H5Tcopy(ftype);
    herr_t rc = mtype < 0 ? -1 : sourceRead(s, mtype, buf);
    hid_t err = H5Util_saveError(rc < 0);
    if (mtype >= 0)
        H5Tclose(mtype);
    H5Util_restoreError(err);
    if (rc < 0) {
        free(buf);
        return H5UTIL_READ_FAIL;
    }
    buf[size] = '\0';
    size_t len = strlen(buf);
    if (H5Tget_strpad(ftype) == H5T_STR_SPACEPAD)
        while (len > 0 && buf[len - 1] == ' ')
            buf[--len] = '\0';
    *out = buf;
    return H5UTIL_READ_OK;
}

static H5UtilRead readString(Source s, size_t limit, char **out, char *found,
                             size_t found_size) {
    *out = NULL;
    hid_t ftype;
    H5UtilRead r = openSingle(s, H5T_STRING, &ftype, found, found_size);
    if (r != H5UTIL_READ_OK)
        return r;
    htri_t vlen = H5Tis_variable_str(ftype);
    if (vlen < 0)
        r = H5UTIL_READ_FAIL;
    else if (vlen)
        r = readVlenString(s, ftype, out);
    else
        r = readFixedString(s, ftype, limit, out, found, found_size);
    hid_t err = H5Util_saveError(r == H5UTIL_READ_FAIL);
    H5Tclose(ftype);
    H5Util_restoreError(err);
    return r;
}

H5UtilRead H5Util_readStringAttr(hid_t attr, char **out, char *found, size_t found_size) {
    return readString((Source){attr, true}, ATTR_STRING_LIMIT, out, found, found_size);
}

H5UtilRead H5Util_readStringDataset(hid_t dset, size_t limit, char **out, char *found,
                                    size_t found_size) {
    return readString((Source){dset, false}, limit, out, found, found_size);
}

H5UtilRead H5Util_readIntAttr(hid_t attr, long long *out, char *found, size_t found_size) {
    hid_t ftype;
    Source s = {attr, true};
    H5UtilRead r = openSingle(s, H5T_INTEGER, &ftype, found, found_size);
    if (r != H5UTIL_READ_OK)
        return r;
    H5Tclose(ftype);
    return sourceRead(s, H5T_NATIVE_LLONG, out) < 0 ? H5UTIL_READ_FAIL : H5UTIL_READ_OK;
}
