/*
moescope - io/DirectRows.h
Rows of a 2-D float32 dataset read straight from the file with pread, bypassing HDF5's
read path, when its storage allows it: little-endian float32, no filters, no external
storage, either contiguous or chunked in whole rows, every chunk written. HDF5 reads such
a chunk into its chunk cache and copies it out, under its global lock; here each chunk's
rows go from the page cache into the caller's buffer once, and several threads can do it
at the same time. Anything else is read through HDF5 (DirectRows_open says no).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_IO_DIRECTROWS_H
#define MOESCOPE_IO_DIRECTROWS_H

#include <hdf5.h>

typedef struct DirectRows DirectRows;

/* A direct reader for dset ([rows][width] floats) of the file fid opened from path, or
   NULL when its storage does not allow one (no error: read it through HDF5). */
DirectRows *DirectRows_open(hid_t fid, hid_t dset, const char *path);

/* Rows [row0, row0 + n) into out[n][width], on `threads` threads (1 or more); 0, or -1
   when a read fails or comes up short (the caller then reads through HDF5). */
int DirectRows_read(const DirectRows *this, long row0, long n, float *out, int threads);

void DirectRows_close(DirectRows *this);

#endif
