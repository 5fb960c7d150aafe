/*
moescope - io/Writer.h
Writes HDF5 files in the layout of SPEC §1: used by moescope-dump, moescope-synth, the
partition export and the tests. The file is written under a temporary name beside the
target and renamed by Writer_close, so an interrupted run never leaves a half file.
Paths are absolute HDF5 paths ("/layers/3/w_in"); missing parent groups are created.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_WRITER_H
#define MOESCOPE_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/Status.h"

typedef enum WriterFloat {
    WRITER_F32 = 0,
    WRITER_F16, /* IEEE half, as numpy's float16 (h5py reads it as float16) */
    WRITER_F64,
} WriterFloat;

typedef struct WriterOptions {
    WriterFloat storage; /* storage type of float datasets */
    int gzip;            /* 0 = contiguous, no filter; 1..9 = chunked + shuffle + gzip */
} WriterOptions;

typedef struct Writer Writer;

/* Creates path (through a temporary file). Sets root attr moescope_format = 1. */
MsStatus Writer_create(Writer **out, const char *path, char **cause);

/* Finishes the file and renames it into place; frees the writer in any case. */
MsStatus Writer_close(Writer *this, char **cause);

/* Abandons the file (removes the temporary); Writer_delete(NULL) does nothing. */
void Writer_delete(Writer *this);

/* A float matrix [rows, cols] (cols = 0 writes a 1-D [rows] dataset). */
MsStatus Writer_writeFloats(Writer *this, const char *path, const float *data, long rows,
                            long cols, WriterOptions opt, char **cause);

/* An extendable float matrix [0, cols], then appended to in blocks of rows. */
MsStatus Writer_beginRows(Writer *this, const char *path, long cols, WriterOptions opt,
                          char **cause);
MsStatus Writer_appendRows(Writer *this, const char *path, const float *data, long rows,
                           char **cause);

MsStatus Writer_writeInt32(Writer *this, const char *path, const int32_t *data, long n,
                           char **cause);
MsStatus Writer_writeInt64(Writer *this, const char *path, const int64_t *data, long n,
                           char **cause);
/* A scalar variable-length UTF-8 string dataset (as h5py writes a str). */
MsStatus Writer_writeString(Writer *this, const char *path, const char *text, char **cause);

/* Attributes on an existing object (group or dataset); "/" is the root. Strings are
   variable-length UTF-8 (h5py's default), ints int64, doubles float64. */
MsStatus Writer_setAttrString(Writer *this, const char *path, const char *name,
                              const char *value, char **cause);
MsStatus Writer_setAttrInt(Writer *this, const char *path, const char *name, long value,
                           char **cause);
MsStatus Writer_setAttrDouble(Writer *this, const char *path, const char *name,
                              double value, char **cause);

/* Creates a group (and its parents) if missing. */
MsStatus Writer_makeGroup(Writer *this, const char *path, char **cause);

#endif
