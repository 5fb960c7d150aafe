/*
moescope - tests/fuzz/fuzz_dump.h
The loader's fuzz entry, shared by the libFuzzer target and the corpus replay test.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_FUZZ_DUMP_H
#define MOESCOPE_FUZZ_DUMP_H

#include <stddef.h>
#include <stdint.h>

/* Loads the bytes as an HDF5 dump and reads everything; aborts on a broken invariant.
   Returns Dump_open's status (MsStatus as int). */
int FuzzDump_run(const uint8_t *data, size_t size);

/* The same for a file on disk. */
int FuzzDump_runFile(const char *path);

#endif
