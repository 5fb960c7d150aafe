/*
moescope - io/H5Util.h
Small HDF5 helpers shared by the io modules: silencing and reading the error stack,
describing types and shapes for messages, reading string and integer attributes of
any flavour h5py writes, and reading float data as float32 with a fast IEEE half path
(HDF5's own float16 conversion is a slow soft conversion).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_H5UTIL_H
#define MOESCOPE_H5UTIL_H

#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Turns HDF5's automatic error printing off for the calling thread (the setting is
   per thread in a thread-safe HDF5 build). Cheap; call at every public entry point. */
void H5Util_quiet(void);

/* The most specific message on the calling thread's HDF5 error stack (malloc'ed,
   "unknown HDF5 error" when empty); clears the stack. */
char *H5Util_errorText(void);

/* Every HDF5 call clears the error stack, cleanup calls too. After a failed call
   (failed true), saveError moves the stack aside; restoreError puts it back after the
   cleanup. Both are no-ops for a saved value < 0. */
hid_t H5Util_saveError(bool failed);
void H5Util_restoreError(hid_t saved);

/* A type's name for messages: "float32", "float16", "int64", "uint8", "string",
   "compound", ... */
void H5Util_typeName(hid_t type, char *buf, size_t size);

/* "[3, 4]" for a simple dataspace, "[]" for a scalar one, "null" for a null one. */
void H5Util_shapeText(hid_t space, char *buf, size_t size);

/* How float data is turned into float32. */
typedef enum H5UtilFloat {
    H5UTIL_FLOAT_CONVERT = 0, /* HDF5 converts to native float (float32, float64, others) */
    H5UTIL_FLOAT_HALF,        /* IEEE binary16 (numpy float16): raw read, own conversion */
} H5UtilFloat;

/* The conversion for a float file type (H5T_FLOAT class). */
H5UtilFloat H5Util_floatKind(hid_t ftype);

/* Reads the selection fspace of dset (n elements) into out as float32. With
   H5UTIL_FLOAT_HALF the 16-bit values are read into the front of out and widened in
   place. fspace H5S_ALL reads the whole dataset. Returns negative on an HDF5 error
   (the stack holds the reason). */
herr_t H5Util_readFloats(hid_t dset, hid_t fspace, H5UtilFloat kind, float *out, size_t n);

/* Float16 row blocks larger than this many values go through a scratch buffer. */
enum { H5UTIL_HALF_SCRATCH = 1 << 18 };

/* Reads rows [row0, row0 + n_rows) of a 2-D [*, width] dataset (space: its dataspace,
   whose selection this changes) as float32 into out (n_rows * width floats). */
herr_t H5Util_readFloatRows(hid_t dset, hid_t space, H5UtilFloat kind, hsize_t row0,
                            hsize_t n_rows, hsize_t width, float *out);

/* IEEE binary16 to float32, exact (subnormals, Inf, NaN payloads kept). */
void H5Util_halfToFloat(const uint16_t *in, float *out, size_t n);

/* Widens n halves stored at the start of buf into n floats in place. */
void H5Util_halfToFloatInPlace(float *buf, size_t n);

/* Outcome of the typed readers below. */
typedef enum H5UtilRead {
    H5UTIL_READ_OK = 0,
    H5UTIL_READ_WRONG, /* wrong class or not a single value: found describes it */
    H5UTIL_READ_FAIL,  /* an HDF5 error (the stack holds the reason) */
} H5UtilRead;

/* A string attribute (variable- or fixed-length, ASCII or UTF-8, scalar or one
   element) into *out (malloc'ed). */
H5UtilRead H5Util_readStringAttr(hid_t attr, char **out, char *found, size_t found_size);

/* The same for a dataset (e.g. /text); limit bounds a fixed-length string's bytes. */
H5UtilRead H5Util_readStringDataset(hid_t dset, size_t limit, char **out, char *found,
                                    size_t found_size);

/* An integer attribute of any integer type, scalar or one element. */
H5UtilRead H5Util_readIntAttr(hid_t attr, long long *out, char *found, size_t found_size);

#endif
